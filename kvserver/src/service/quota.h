/* quota.h: --quota-bytes: how big the applied state is, and the leader's
 * refusal of writes that would grow it past the quota (private). */
#ifndef KVSERVER_QUOTA_H
#define KVSERVER_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "store.h"

/* Default of --quota-bytes: 8 GiB, as etcd's largest recommended backend. */
#define KV_QUOTA_DEFAULT (8ull << 30)

/* A node's quota bookkeeping (service.h: struct kv_services.quota). */
struct kv_quota
{
    uint64_t refusals;           /* writes refused for the quota, ever */
    uint64_t state_bytes;        /* last measure of the applied state */
    bool measured;               /* state_bytes is set */
    uint64_t measured_applied;   /* applied index it was measured at */
    uint64_t measured_commits;   /* state commits when it was measured */
    bool refusing;               /* the last write checked was refused */
    uint64_t refused_logged_ms;  /* when "writes refused" was last logged */
    uint64_t accepted_logged_ms; /* when "accepted again" was last logged */
    uint64_t refused_streak;     /* refusals since "accepted again" was
                                    last logged */
};

/**
 * Measure the applied state: the bytes of the LMDB pages in use by every
 * database of the store (branch, leaf and overflow pages, the free list's
 * own pages, the two meta pages). Pages freed by deletes no longer count,
 * and LMDB reuses them for later writes; the data file itself
 * (mdb_env_info's me_last_pgno) never shrinks, so it would keep a full
 * store refused for good once it had reached the quota.
 * @param st the store (its database handles are read)
 * @param txn a transaction to measure in (the node's open state
 *   transaction sees what was applied since the last commit), or NULL
 *   for the last commit (a read transaction is opened and closed)
 * @param bytes out: the size in bytes
 * @return 0, or a store error (KV_STORE_EIO...) with st->errmsg set
 */
int kv_quota_state_bytes(struct kv_store *st, MDB_txn *txn, uint64_t *bytes);

/**
 * Parse a --quota-bytes value: a whole number of bytes, optionally with a
 * binary unit: K, KiB, M, MiB, G, GiB, T, TiB (512MiB, 8GiB).
 * @param s the text
 * @param out set to the bytes on success
 * @return 0, or -1 when @s is not of that form or overflows 64 bits
 */
int kv_quota_parse(const char *s, uint64_t *out);

/**
 * Write @bytes for people: "512 B", "1.5 KiB", "8.0 GiB".
 * @param buf out: NUL-terminated (truncated to @size)
 */
void kv_quota_format(uint64_t bytes, char *buf, size_t size);

/**
 * Whether a write adding about @cost bytes to a state of @state bytes is
 * over @quota (0: no quota, never).
 */
bool kv_quota_exceeded(uint64_t quota, uint64_t state, uint64_t cost);

/**
 * The answer to a write refused for the quota: the state's size, the
 * quota, and how to get out of it.
 * @param buf out: NUL-terminated (truncated to @size)
 */
void kv_quota_message(uint64_t quota, uint64_t state, char *buf, size_t size);

#endif /* KVSERVER_QUOTA_H */
