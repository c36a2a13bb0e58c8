/* sm.h: the KV state machine: commands applied inside an LMDB transaction. */
#ifndef KVSERVER_SM_H
#define KVSERVER_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mvcc.h"
#include "store.h"

#define KV_CLIENT_ID_LEN 16 /* bytes of a client id */

/* Default bound of the session table. Clients open a session through the
 * log (Command.open_session); when the table then holds more than the
 * bound that the proposing leader put in that entry, the sessions that
 * wrote least recently (smallest log index) are forgotten. A write for a
 * session that is not open is answered SESSION_EXPIRED and never applied.
 * Every replica forgets the same sessions: the rule depends on the log
 * only. */
#define KV_DEFAULT_MAX_SESSIONS 100000

/* What applying a write did (or did when first applied, for a retry). */
struct kv_outcome
{
    int err;             /* Raftkv__KvError */
    bool swapped;        /* CAS: the new value was written */
    bool exists;         /* CAS: the key existed before */
    uint8_t *current;    /* malloc'd or NULL. CAS: the value before;
                            auth commands: a message, NUL-terminated;
                            put: a packed PutResponse (prev_kv);
                            delete_range: a packed DeleteRangeReply;
                            txn: a packed TxnReply */
    size_t current_len;  /* its length */
    bool duplicate;      /* answered from the session table */
    uint64_t cluster_id; /* cluster_init: the cluster id now in force */
    uint64_t revision;   /* the store's revision after it (the one it made,
                            when it wrote) */
    uint64_t compact;    /* compact: history starts after this one */
};

/**
 * Apply a client command (a packed Raftkv__Command) at a log index. A bad
 * command is an outcome (BAD_REQUEST), the same on every node; only
 * failures of the store itself return an error, after which the caller
 * aborts the transaction.
 * @param out filled; free it with kv_outcome_clear
 * @return 0, KV_STORE_EMAPFULL, KV_STORE_ENOSPC, KV_STORE_EIO or ENOMEM
 */
int kv_sm_apply(struct kv_store *st,
                MDB_txn *txn,
                uint64_t index,
                const void *data,
                size_t len,
                struct kv_outcome *out);

/**
 * Release what an outcome holds.
 */
void kv_outcome_clear(struct kv_outcome *o);

/**
 * Check a key for the store's limits.
 * @return 0 (KV_OK), or the Raftkv__KvError that rejects it
 */
int kv_sm_check_key(struct kv_store *st, size_t key_len);

/**
 * Install the staged snapshot (snap_install) and bring its state to the
 * current format (a stream from before revisions is upgraded in @txn).
 * @return as snap_install
 */
int kv_sm_install(struct kv_store *st,
                  MDB_txn *txn,
                  uint64_t *index,
                  uint64_t *term);

/**
 * Bring a state loaded from a stream (snap_load_end, in a build of
 * install.h) to the current format, in @txn, as kv_sm_install does.
 * @return 0 or a store error
 */
int kv_sm_install_done(struct kv_store *st, MDB_txn *txn);

/**
 * Bring a store opened at an older format to the current one (one write
 * transaction; nothing to do on a current store).
 * @return 0 or a store error
 */
int kv_sm_upgrade(struct kv_store *st);

#endif /* KVSERVER_SM_H */
