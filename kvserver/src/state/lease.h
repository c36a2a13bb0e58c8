/* lease.h: leases: keys attached to one are deleted, at one revision, when
 * it is revoked or expires.
 *
 * The leases database maps a lease id (8) to its grant: the TTL it was
 * granted with, in seconds (8); lease_keys holds id (8) | key -> (empty)
 * for every key attached to it, so that ending a lease finds its keys
 * without a scan. A key's record names its lease (mvcc.h), and puts and
 * deletes keep the index in step (kv_change_put, kv_change_delete). When
 * a lease expires is not in the state: the leader decides it (keep-alives
 * are not logged) and proposes LeaseCommand.expire, which applies as a
 * revocation of the leases that still exist. Everything here is a
 * function of the log. All integers big-endian.
 */
#ifndef KVSERVER_LEASE_H
#define KVSERVER_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <proto/kv.pb-c.h>

#include "mvcc.h"
#include "sm.h"

#define KV_LEASE_MAX_TTL 31536000 /* seconds (one year) a lease may have */
#define KV_LEASE_MAX_IDS 1000     /* leases one expire entry ends at most */

/**
 * Whether a key of @key_len bytes can be attached to a lease (its index
 * entry, id and key, must fit LMDB's key size: 8 bytes less than a key).
 */
bool kv_lease_key_fits(struct kv_store *st, size_t key_len);

/**
 * Read a lease.
 * @param ttl if not NULL, set to the TTL it was granted with (seconds)
 * @return 0, MDB_NOTFOUND (no such lease), or a store error
 */
int kv_lease_get(struct kv_store *st, MDB_txn *txn, uint64_t id, int64_t *ttl);

/**
 * Attach a key to a lease in the index (the key's record names it).
 * @return 0 or a store error
 */
int kv_lease_attach(struct kv_store *st,
                    MDB_txn *txn,
                    uint64_t id,
                    const void *key,
                    size_t key_len);

/**
 * Take a key out of a lease's index (nothing to do when it is not there).
 * @return 0 or a store error
 */
int kv_lease_detach(struct kv_store *st,
                    MDB_txn *txn,
                    uint64_t id,
                    const void *key,
                    size_t key_len);

/**
 * How many keys are attached to lease @id (0 for a lease that does not
 * exist). @txn must show the state as applied (the node's open state
 * transaction, or a read of its last commit when none is open): the first
 * call for a lease counts its index entries, later ones answer from
 * memory, which every attach and detach keeps in step.
 * @return 0 or a store error
 */
int kv_lease_count(struct kv_store *st,
                   MDB_txn *txn,
                   uint64_t id,
                   uint64_t *count);

/**
 * Call @fn for every lease, in id order, until it returns non-zero.
 * @return 0, what @fn returned, or a store error
 */
int kv_lease_each(struct kv_store *st,
                  MDB_txn *txn,
                  int (*fn)(uint64_t id, int64_t ttl, void *arg),
                  void *arg);

/**
 * The keys attached to a lease, in key order.
 * @param keys set to an array (in @mem) of *n_keys copies (in @mem)
 * @return 0 or a store error
 */
int kv_lease_keys(struct kv_store *st,
                  MDB_txn *txn,
                  uint64_t id,
                  struct kv_arena *mem,
                  ProtobufCBinaryData **keys,
                  size_t *n_keys);

/* A lease past its expiry, as the leader's clock has it. */
struct kv_lease_due
{
    uint64_t id;
    uint64_t expiry; /* ms of the leader's clock */
};

/**
 * Pick the leases one expire entry ends: the most overdue first (by
 * expiry, then id), until @max_ids or about @max_keys keys in all (0: no
 * cap; the first one whole, whatever it has). It stops at the first that
 * does not fit, so that a lease with many keys never waits behind smaller
 * ones that keep coming due. Leases the state no longer has (ended
 * already) are passed over, their expiry set to 0.
 * @param due leases found due (sorted here)
 * @param ids set to the ids picked (room for @max_ids)
 * @param keys set to the keys they have in all
 * @return how many were picked (0 only when @n is)
 */
size_t kv_lease_expire_pick(struct kv_store *st,
                            MDB_txn *txn,
                            struct kv_lease_due *due,
                            size_t n,
                            uint64_t max_keys,
                            uint64_t *ids,
                            size_t max_ids,
                            uint64_t *keys);

/**
 * Apply a lease command (Command.lease). grant adds a lease (BAD_REQUEST
 * when the id is 0 or exists, the TTL not positive); revoke ends one
 * (LEASE_NOT_FOUND when it does not exist); expire ends those of its ids
 * that exist. Ending leases deletes all their keys in one change: one
 * revision, a delete event per key. grant answers a packed
 * LeaseGrantReply in out->current, revoke and expire a packed
 * LeaseRevokeReply (err, message, revision, deleted).
 * @return 0 or a store error
 */
int kv_lease_apply(struct kv_store *st,
                   MDB_txn *txn,
                   const Raftkv__LeaseCommand *lc,
                   struct kv_outcome *out);

#endif /* KVSERVER_LEASE_H */
