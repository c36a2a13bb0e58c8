/* txn.h: transactions: compares, then or else ops, at one revision. */
#ifndef KVSERVER_TXN_H
#define KVSERVER_TXN_H

#include <stdbool.h>
#include <stddef.h>

#include <proto/kv.pb-c.h>

#include "mvcc.h"

/**
 * Check a transaction before it is proposed, and again when it is applied
 * (the same answer on every replica): at most KV_MAX_TXN_OPS ops, nested
 * at most KV_MAX_TXN_DEPTH deep, every op and compare well formed, values
 * at most @max_value bytes.
 * @return 0 (KV_OK) or a Raftkv__KvError, with why filled
 */
int kv_txn_check(struct kv_store *st,
                 const Raftkv__TxnArgs *a,
                 size_t max_value,
                 char *why,
                 size_t why_size);

/**
 * Whether an op of a transaction that passed kv_txn_check can still fail
 * when it runs (a put with ignore_value of a missing key, a put to a lease
 * that is gone, a delete range with prev_kv over the reply bound). One that
 * cannot needs no nested LMDB transaction to be whole or nothing.
 */
bool kv_txn_may_fail(const Raftkv__TxnArgs *a);

/**
 * Whether a transaction that passed kv_txn_check writes nothing in either
 * branch (its ops are ranges and transactions of ranges): it can be served
 * as a linearizable read, outside the log, at the store's revision.
 */
bool kv_txn_read_only(const Raftkv__TxnArgs *a);

/**
 * Run a transaction in a change: its compares, then the ops of the branch
 * they chose, each seeing the ones before it. Fills @r (in @mem): err,
 * message, succeeded, responses, revision. When r->err is not OK an op
 * failed and the caller must drop what the change wrote (it runs in a
 * nested LMDB transaction for that).
 * @return 0 or a store error
 */
int kv_txn_run(struct kv_change *c,
               const Raftkv__TxnArgs *a,
               struct kv_arena *mem,
               Raftkv__TxnReply *r);

#endif /* KVSERVER_TXN_H */
