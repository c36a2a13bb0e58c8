/* snap.h: the state machine as a byte stream: read out, staged, installed. */
#ifndef KVSERVER_SNAP_H
#define KVSERVER_SNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Stream format (all integers big-endian):
 *   header  "RKVSNAP4" | applied index (8) | applied term (8)
 *           | cluster id (8; 0 when the state did not know it yet)
 *   record  kind (1: kv, 2: session, 3: auth, 4: history, 5: kvmeta,
 *           6: lease)
 *           | key length (4)
 *           | value length (4)
 *           | key | value
 *   trailer kind 0xFF | number of records (8) | CRC-32C (4) of every byte
 *           before it
 * The same stream is a follower's snapshot and a `kvctl snapshot save`
 * file. An "RKVSNAP2" stream (kinds 1-3, values without revisions, from a
 * kvserver before format 4) is still installed: the store is then marked
 * KV_STORE_FORMAT_OLD for the state machine to upgrade. "RKVSNAP4" came
 * with store format 5 (leases, record kind 6, and history events that
 * say where the key's version before them is): a kvserver before it
 * refuses the stream ("no RKVSNAP3 header"), so a node that would
 * misread the history or drop leases never installs it; "RKVSNAP3"
 * streams (format 4) are still installed, their events read as they
 * are; the index of each lease's keys is not in the stream but made
 * again from the key records when it is installed.
 * The stream is read under one LMDB read transaction, so it is the state at
 * one applied index while writes go on. */

#define SNAP_HEADER_SIZE  32 /* magic (8), index, term, cluster id */
#define SNAP_RECORD_HEAD  9  /* kind (1), key length (4), value length (4) */
#define SNAP_TRAILER_SIZE 13 /* 0xFF, number of records (8), CRC-32C (4) */
#define SNAP_KIND_KV      1
#define SNAP_KIND_SESSION 2
#define SNAP_KIND_AUTH    3 /* users, roles, auth settings (auth.c) */
#define SNAP_KIND_HISTORY 4 /* revision|sub -> change (mvcc.c) */
#define SNAP_KIND_KVMETA  5 /* the state machine's numbers (mvcc.c) */
#define SNAP_KIND_LEASE   6 /* lease id -> its grant (lease.c) */
#define SNAP_KIND_END     0xFF

/* The stream's parts, for the stream below and for tools that write a
 * backup without a store (bench/bigstate_gen.c). The CRC-32C of a stream
 * covers every byte before its last 4: kv_crc32c over the header and the
 * records, then snap_put_trailer adds its own first 9 bytes. */

/** Write the 32-byte header (current magic) into @out. */
void snap_put_header(uint8_t *out,
                     uint64_t index,
                     uint64_t term,
                     uint64_t cluster_id);

/** Write a record's 9-byte head into @out; the key and value follow it. */
void snap_put_record_head(uint8_t *out,
                          uint8_t kind,
                          uint32_t key_len,
                          uint32_t value_len);

/** Write the 13-byte trailer into @out: @records records, @crc the
 * CRC-32C of everything before the trailer. */
void snap_put_trailer(uint8_t *out, uint64_t records, uint32_t crc);

/* A snapshot being read out for one follower. */
struct snap_stream
{
    MDB_txn *txn;        /* read transaction holding the state */
    MDB_cursor *cur;     /* position in the database being read */
    int phase;           /* header, kv, sessions, auth, trailer, done */
    uint64_t offset;     /* bytes produced so far */
    uint64_t index;      /* applied index of the state */
    uint64_t term;       /* its term */
    uint64_t cluster_id; /* the cluster the state belongs to (0: unknown) */
    uint64_t records;    /* records produced so far */
    uint32_t crc;        /* CRC-32C of the records produced so far */
    uint8_t *pend;       /* bytes of the current record not yet produced */
    size_t pend_len;     /* valid bytes in pend */
    size_t pend_off;     /* bytes of pend already produced */
    size_t pend_cap;     /* allocated size of pend */
};

/**
 * Start reading the state as a stream (opens a read transaction).
 * @return 0 or a store error
 */
int snap_stream_open(struct kv_store *st, struct snap_stream *s);

/**
 * Produce the next bytes, at most max.
 * @param len set to the bytes written to buf
 * @param done set when the stream ends with these bytes
 * @return 0 or a store error
 */
int snap_stream_read(struct kv_store *st,
                     struct snap_stream *s,
                     uint8_t *buf,
                     size_t max,
                     size_t *len,
                     bool *done);

/**
 * End a stream and its read transaction (safe on a closed stream).
 */
void snap_stream_close(struct snap_stream *s);

/* The stream checksum of a snapshot being received, kept as its chunks are
 * staged, so that a damaged stream is found before it is installed. */
struct snap_check
{
    uint64_t len;    /* bytes seen */
    uint32_t crc;    /* CRC-32C of all of them but the last 4 */
    uint8_t tail[4]; /* the last (up to) 4 bytes seen */
};

/** Add the next bytes of a stream. */
void snap_check_add(struct snap_check *c, const void *data, size_t len);

/** Whether the bytes seen end with the CRC-32C of everything before it,
 * as a whole stream does (a stream damaged or mixed from two fails). */
bool snap_check_ok(const struct snap_check *c);

/* A stream being loaded into a store, a piece at a time: the parser's
 * state between pieces, so that the records can go into the store in as
 * many transactions as the caller likes (install.c). Records of each kind
 * are appended (MDB_APPEND: a stream holds them in key order), so the
 * databases they go into must be empty when loading starts. */
struct snap_load
{
    uint8_t *buf;        /* bytes of the part being collected */
    size_t have;         /* bytes in buf */
    size_t cap;          /* allocated */
    size_t need;         /* bytes the current part needs */
    int part;            /* 0 header, 1 record head, 2 record body,
                            4 checksum, 3 end */
    uint32_t crc;        /* CRC-32C of the parts so far */
    uint8_t kind;        /* current record's kind */
    uint32_t klen;       /* its key length */
    uint64_t records;    /* records loaded */
    uint64_t offset;     /* stream bytes fed so far */
    uint64_t index;      /* from the header */
    uint64_t term;       /* from the header */
    uint64_t cluster_id; /* from the header (0: not known then) */
    bool v2;             /* an RKVSNAP2 stream (before revisions) */
};

/** Start loading a stream (nothing allocated yet). */
void snap_load_init(struct snap_load *l);

/** Free what a load holds; it is then as snap_load_init left it. */
void snap_load_free(struct snap_load *l);

/**
 * Copy a load's state (to go back to it when a transaction fails).
 * @return 0 or KV_STORE_ENOMEM
 */
int snap_load_copy(struct snap_load *dst, const struct snap_load *src);

/**
 * Load the next @len bytes of a stream into @txn's databases.
 * @return 0, KV_STORE_ECORRUPT (errmsg names the byte), or a store error;
 *   after an error @l is left where it stopped (go back to a copy)
 */
int snap_load_feed(struct kv_store *st,
                   MDB_txn *txn,
                   struct snap_load *l,
                   const void *data,
                   size_t len);

/**
 * Check that the stream ended with its trailer and a matching checksum,
 * and write what its header says into meta ("cluster" when the stream
 * names one, and "format"; st->format too).
 * @param index, term set to the applied index and term of the state
 * @return 0, KV_STORE_ECORRUPT, or a store error
 */
int snap_load_end(struct kv_store *st,
                  MDB_txn *txn,
                  struct snap_load *l,
                  uint64_t *index,
                  uint64_t *term);

/* Staging inside the store and installing in the caller's one
 * transaction: for small streams (tests, tools). The node builds a
 * received snapshot beside its state instead (install.h), in bounded
 * transactions. */

/**
 * Stage a received chunk; offset 0 discards what was staged before.
 * @return 0 or a store error
 */
int snap_stage(struct kv_store *st,
               MDB_txn *txn,
               uint64_t offset,
               const void *data,
               size_t len);

/**
 * Replace kv, sessions, auth, history, kvmeta and the leases with the
 * staged stream and
 * empty the staging area, all inside txn; a stream that names its cluster sets
 * the store's cluster id (meta "cluster") to it. The trailer's checksum must
 * match. The stream is checked as it is read; a damaged one fails with
 * KV_STORE_ECORRUPT (then the caller aborts txn, so the old state stays).
 * @param index, term set to the applied index and term of the state
 * @return 0 or a store error
 */
int snap_install(struct kv_store *st,
                 MDB_txn *txn,
                 uint64_t *index,
                 uint64_t *term);

#endif /* KVSERVER_SNAP_H */
