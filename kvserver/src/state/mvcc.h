/* mvcc.h: revisions, key records, ranges and the history of changes (the
 * etcd v3 data model on LMDB).
 *
 * The store has one revision, cluster-wide: a fresh store is at 1 and every
 * change (one write, or one transaction with writes) makes the next one.
 * Every key's record (kv database) is
 *     create_revision (8) | mod_revision (8) | version (8) | lease (8)
 *     | 0 (1) | value                      (the value inline), or
 *     | 1 (1) | sub (4)                    (the value is in the put event
 *                                           mod_revision|sub)
 * and every change is kept as an event in the history database until it is
 * compacted:
 *     key   revision (8) | sub (4)     (events of one revision in order)
 *     value type (1) | key length (4) | key
 *           type 0, a put of a new key: | its revisions (32) | value
 *           type 2, a put of a key that existed:
 *                   | its new revisions (32) | prev (12) | value
 *           type 1, a delete (format 4 only)
 *           type 3, a delete: | prev (12)
 *     prev  the event of the key's version before the change:
 *           mod_revision (8) | sub (4), sub 0xffffffff when that event was
 *           compacted already (the value had moved into the key's record)
 * A put writes its value once, into its event, and the key's record refers
 * to it; compaction moves a value that is still its key's into the record
 * before the event goes (etcd, too, writes a value once).
 * kvmeta "revs" holds the revision, the compaction point (history starts
 * after it) and the history's size in bytes (for its cap), 8 bytes each.
 * All integers big-endian.
 * Everything here is a function of the log, so every replica holds the same.
 */
#ifndef KVSERVER_MVCC_H
#define KVSERVER_MVCC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <proto/kv.pb-c.h>

#include "store.h"

#define KV_REC_HEADER      32         /* revisions in front of a value */
#define KV_REC_HEAD        33         /* and the form of the value: */
#define KV_REC_INLINE      0          /* the value follows */
#define KV_REC_REF         1          /* sub (4) of its put event follows */
#define KV_MAX_RANGE_BYTES (4u << 20) /* keys and values in one reply */
#define KV_MAX_TXN_OPS     128        /* ops of a transaction, nested too */
#define KV_MAX_TXN_DEPTH   8          /* transactions in transactions */
#define KV_EVENT_PUT       0          /* a put of a new key */
#define KV_EVENT_DELETE    1          /* a delete, without prev (format 4) */
#define KV_EVENT_PUT_PREV  2  /* a put of a key that existed: with prev */
#define KV_EVENT_DEL_PREV  3  /* a delete, with prev */
#define KV_HIST_PREV       12 /* prev: mod_revision (8) | sub (4) */
#define KV_PREV_GONE       0xffffffffu /* prev sub: not in the history */
#define KV_HIST_KEY        12          /* revision (8) | sub (4) */
#define KV_HIST_HEAD       5           /* type (1) | key length (4) */

/* A key's record, decoded (value points into the record or the event). */
struct kv_rec
{
    uint64_t create;      /* create_revision */
    uint64_t mod;         /* mod_revision */
    uint64_t version;     /* version */
    uint64_t lease;       /* lease (0: none) */
    const uint8_t *value; /* the value (NULL until found, when ref) */
    size_t value_len;     /* its length */
    bool ref;             /* the value is in the put event mod|ref_sub */
    uint32_t ref_sub;     /* (kv_mvcc_get finds it) */
};

/* The store's numbers (kvmeta). */
struct kv_revs
{
    uint64_t revision;   /* the last change's revision (1 when fresh) */
    uint64_t compact;    /* history holds the changes after this one */
    uint64_t hist_bytes; /* size of the history: keys and values */
};

/* Memory of one reply: every block is freed by kv_arena_free. */
struct kv_arena
{
    void **blocks; /* malloc'd blocks */
    size_t n, cap; /* used, allocated */
};

/** Zeroed memory owned by the arena, or NULL. */
void *kv_arena_alloc(struct kv_arena *a, size_t n);
/** A copy owned by the arena (n may be 0), or NULL. */
void *kv_arena_dup(struct kv_arena *a, const void *p, size_t n);
/** Free every block (the arena can be used again). */
void kv_arena_free(struct kv_arena *a);

/**
 * Decode a key's record (a value in the history is not looked up: see
 * kv_mvcc_get).
 * @return 0, or -1 when it is malformed
 */
int kv_rec_decode(const MDB_val *v, struct kv_rec *r);

/**
 * Read the store's numbers.
 * @return 0 or a store error
 */
int kv_mvcc_revs(struct kv_store *st, MDB_txn *txn, struct kv_revs *r);

/**
 * Read one key.
 * @return 0, MDB_NOTFOUND (LMDB's, negative), or a store error (KV_STORE_*;
 *   a damaged record is KV_STORE_ECORRUPT)
 */
int kv_mvcc_get(struct kv_store *st,
                MDB_txn *txn,
                const void *key,
                size_t key_len,
                struct kv_rec *r);

/**
 * Whether a key range is well formed: key not empty and at most the
 * store's key size, range_end empty, "\0", or after key.
 * @return 0 (KV_OK) or a Raftkv__KvError, with why filled
 */
int kv_mvcc_check_range(struct kv_store *st,
                        const ProtobufCBinaryData *key,
                        const ProtobufCBinaryData *range_end,
                        char *why,
                        size_t why_size);

/** Whether a key is in [key, range_end) as the RangeArgs define it. */
bool kv_range_has(const ProtobufCBinaryData *key,
                  const ProtobufCBinaryData *range_end,
                  const void *k,
                  size_t k_len);

/**
 * What is left to count of a range whose count was cut short: the keys in
 * [from, end) (as RangeArgs define a range; their bytes in the reply's
 * arena), for kv_mvcc_count_on. A count walks at most @budget keys per
 * call, so that one over millions of keys does not hold the node's loop.
 */
struct kv_count_rest
{
    uint64_t budget;          /* keys to walk at most per call (in; 0: all) */
    bool pending;             /* keys may be left to count (out) */
    ProtobufCBinaryData from; /* the rest of the range */
    ProtobufCBinaryData end;
};

/* The counts of a read's ranges left for later turns (kv_change.counts):
 * each range's rest and the count it adds to. */
struct kv_count_left
{
    struct kv_count_rest rest;
    uint64_t *count;
};
struct kv_counts
{
    uint64_t budget;            /* keys a range's count walks at first */
    bool spent;                 /* a range used it: the next walk 1 key */
    struct kv_count_left *left; /* in the reply's arena */
    size_t n, cap;
};

/**
 * Answer a Range from the store: r->kvs, r->count, r->more (r->err for a
 * bad request, with r->message). The reply's memory is in @mem; with
 * @copy false it points into LMDB's pages, valid while @txn is and has no
 * writes (a read transaction); with @copy true keys and values are copied.
 * Stops adding keys at the limit or KV_MAX_RANGE_BYTES (at least one key),
 * counting on to the end of the range.
 * @param rest NULL to count to the end of the range; else the count stops
 *   after rest->budget keys past those answered, r->count holds the keys
 *   counted so far and rest->pending says whether kv_mvcc_count_on must
 *   count the rest (on the same state)
 * @return 0 or a store error
 */
int kv_mvcc_range(struct kv_store *st,
                  MDB_txn *txn,
                  const Raftkv__RangeArgs *a,
                  bool copy,
                  struct kv_arena *mem,
                  Raftkv__RangeReply *r,
                  struct kv_count_rest *rest);

/**
 * Count on where kv_mvcc_range (or an earlier call) left @rest: at most
 * rest->budget keys, added to *count; rest->pending false once the range
 * is counted to its end. @mem holds the new rest->from.
 * @return 0 or a store error
 */
int kv_mvcc_count_on(struct kv_store *st,
                     MDB_txn *txn,
                     struct kv_count_rest *rest,
                     struct kv_arena *mem,
                     uint64_t *count);

/**
 * Answer an Events read from the history (r->events, more,
 * next_revision, compact_revision, err COMPACTED or FUTURE_REVISION). A
 * revision's events are never split across replies.
 * @param prev_kv give each event the key as it was before the change
 *   (Event.prev_kv), or say that version is no longer kept
 *   (prev_kv_missing)
 * @return 0 or a store error
 */
int kv_mvcc_events(struct kv_store *st,
                   MDB_txn *txn,
                   const Raftkv__EventsArgs *a,
                   bool prev_kv,
                   struct kv_arena *mem,
                   Raftkv__EventsReply *r);

/* One change to the store: every write between kv_change_begin and
 * kv_change_end is at the same revision, which is counted only when
 * something was written. */
struct kv_change
{
    struct kv_store *st;
    MDB_txn *txn;
    struct kv_revs revs; /* as read at begin (hist_bytes kept current) */
    uint64_t rev;        /* the revision of this change */
    uint32_t sub;        /* events written so far */
    /* A read (a transaction that writes nothing, served as one): its
     * ranges' counts past counts->budget keys are left here, for later
     * turns. NULL (at apply): counted in one go. */
    struct kv_counts *counts;
};

/** Start a change.
 * @return 0 or a store error */
int kv_change_begin(struct kv_change *c, struct kv_store *st, MDB_txn *txn);

/** The revision to report: this change's when it wrote, else the store's. */
uint64_t kv_change_revision(const struct kv_change *c);

/**
 * Put a key (etcd's semantics: a new key gets create_revision = this
 * revision and version 1, an existing one keeps its create_revision and
 * counts its version up).
 * @param ignore_value keep the current value; the key must exist
 * @param lease attach the key to this lease (it must exist); 0: none. A
 *   key attached to another lease (or to one, with 0) leaves it.
 * @param prev if not NULL, set to a copy of the key as it was (in @mem), or
 *   NULL when it did not exist
 * @param err set to a Raftkv__KvError: OK, NOT_FOUND (ignore_value on a
 *   missing key), VALUE_TOO_LARGE (LMDB refused the key, or it is too long
 *   to attach to a lease: kv_lease_key_fits), LEASE_NOT_FOUND; nothing is
 *   written unless it is OK
 * @return 0 or a store error
 */
int kv_change_put(struct kv_change *c,
                  const void *key,
                  size_t key_len,
                  const void *value,
                  size_t value_len,
                  bool ignore_value,
                  uint64_t lease,
                  struct kv_arena *mem,
                  Raftkv__KeyValue **prev,
                  int *err);

/**
 * Delete a key or a range (each key leaves its lease).
 * @param limit delete at most this many keys, the first in key order (0:
 *   no limit)
 * @param more if not NULL, set to whether keys of the range are left
 *   (only with a limit: false otherwise)
 * @param deleted set to the number of keys deleted
 * @param prevs if not NULL, set to copies of the deleted keys (in @mem),
 *   *n_prevs of them; more than KV_MAX_RANGE_BYTES of them fail with
 *   *err BAD_REQUEST (and the caller drops what was deleted)
 * @return 0 or a store error
 */
int kv_change_delete(struct kv_change *c,
                     const ProtobufCBinaryData *key,
                     const ProtobufCBinaryData *range_end,
                     uint64_t limit,
                     bool *more,
                     struct kv_arena *mem,
                     uint64_t *deleted,
                     Raftkv__KeyValue ***prevs,
                     size_t *n_prevs,
                     int *err);

/**
 * Count the keys of a range, up to a limit: what a delete of the range
 * would delete now. Walks at most @limit + 1 keys.
 * @param count set to the number of keys, or to @limit + 1 when there
 *   are more than @limit
 * @return 0 or a store error
 */
int kv_mvcc_count_upto(struct kv_store *st,
                       MDB_txn *txn,
                       const ProtobufCBinaryData *key,
                       const ProtobufCBinaryData *range_end,
                       uint64_t limit,
                       uint64_t *count);

/**
 * Finish a change: store the revision when it wrote.
 * @return 0 or a store error
 */
int kv_change_end(struct kv_change *c);

/**
 * Whether a compare holds.
 * @return 0 (with *ok set) or a store error
 */
int kv_mvcc_compare(struct kv_store *st,
                    MDB_txn *txn,
                    const Raftkv__Compare *cmp,
                    bool *ok);

/**
 * Drop the history up to and including @rev.
 * @param err set: OK, COMPACTED (rev is compacted already; nothing done),
 *   FUTURE_REVISION (rev is past the store's)
 * @param revs set to the numbers after it
 * @return 0 or a store error
 */
int kv_mvcc_compact(struct kv_store *st,
                    MDB_txn *txn,
                    uint64_t rev,
                    int *err,
                    struct kv_revs *revs);

/**
 * The revision to compact to so that the history keeps at most
 * @keep_revs revisions and @max_bytes bytes (0: no cap), moving at most
 * @max_step revisions past the current compaction (the work of one log
 * entry).
 * @param target set to it, or 0 when nothing needs to go
 * @return 0 or a store error
 */
int kv_mvcc_compact_target(struct kv_store *st,
                           MDB_txn *txn,
                           uint64_t keep_revs,
                           uint64_t max_bytes,
                           uint64_t max_step,
                           uint64_t *target);

/**
 * How far one log entry should compact towards @rev: the largest revision
 * up to @rev whose history events, from the oldest kept on, number at
 * most about @max_records and weigh at most about @max_bytes (0: no cap),
 * whole revisions only (so the first revision goes whole, whatever it
 * holds). Compaction drops events one by one on every node's event loop.
 * @param step set to it (@rev when everything up to it fits, or when
 *   @rev is compacted already or past the store's revision: the entry
 *   then says so)
 * @return 0 or a store error
 */
int kv_mvcc_compact_step(struct kv_store *st,
                         MDB_txn *txn,
                         uint64_t rev,
                         uint64_t max_records,
                         uint64_t max_bytes,
                         uint64_t *step);

/**
 * Upgrade a store of format 3 (values without revisions) in @txn: every
 * key gets create and mod revision 2 and version 1, the store revision 2,
 * its history starting after it. A store of format 4 is only stamped 5
 * (its events stay as they are). Does nothing on a current store.
 * @return 0 or a store error
 */
int kv_mvcc_upgrade(struct kv_store *st, MDB_txn *txn);

#endif /* KVSERVER_MVCC_H */
