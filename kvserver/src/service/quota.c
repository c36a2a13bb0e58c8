/* quota.c: --quota-bytes: the leader refuses writes that would grow the
 * applied state past the quota, before proposing them (etcd's quota
 * alarm); deletes still pass, so that a full store can be emptied. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"

/* LMDB's reserved databases: the free list and the main (named-database)
 * tree. Not in lmdb.h, fixed by its format (mdb.c: FREE_DBI, MAIN_DBI). */
#define LMDB_FREE_DBI   0
#define LMDB_MAIN_DBI   1
#define LMDB_META_PAGES 2 /* mdb.c: NUM_METAS */

/* The "writes refused" and "accepted again" lines: at most this often. */
#define QUOTA_LOG_EVERY_MS 60000

int kv_quota_state_bytes(struct kv_store *st, MDB_txn *txn, uint64_t *bytes)
{
    MDB_txn *own = NULL;
    int rc;
    if (!txn) {
        rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &own);
        if (rc) {
            return kv_store_fail(st, rc, "measure the state: begin read");
        }
        txn = own;
    }
    MDB_stat es;
    rc = mdb_env_stat(st->env, &es);
    if (rc) {
        goto err_abort;
    }
    const MDB_dbi dbis[] = {
        LMDB_FREE_DBI,   LMDB_MAIN_DBI, st->meta, st->kv,      st->sessions,
        st->session_age, st->staging,   st->auth, st->history, st->kvmeta,
    };
    uint64_t pages = LMDB_META_PAGES;
    for (size_t i = 0; i < sizeof dbis / sizeof dbis[0]; i++) {
        MDB_stat s;
        rc = mdb_stat(txn, dbis[i], &s);
        if (rc) {
            goto err_abort;
        }
        pages +=
            (uint64_t)s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages;
    }
    if (own) {
        mdb_txn_abort(own);
    }
    *bytes = pages * es.ms_psize;
    return 0;

err_abort:
    if (own) {
        mdb_txn_abort(own);
    }
    return kv_store_fail(st, rc, "measure the state: mdb_stat");
}

int kv_quota_parse(const char *s, uint64_t *out)
{
    static const struct
    {
        const char *name;
        unsigned shift;
    } units[] = {
        {"", 0},     {"B", 0},  {"K", 10},   {"KiB", 10}, {"M", 20},
        {"MiB", 20}, {"G", 30}, {"GiB", 30}, {"T", 40},   {"TiB", 40},
    };
    if (s[0] < '0' || s[0] > '9') {
        return -1; /* strtoull would take a sign or spaces */
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) {
        return -1;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].name) == 0) {
            if (units[i].shift && v > (UINT64_MAX >> units[i].shift)) {
                return -1;
            }
            *out = (uint64_t)v << units[i].shift;
            return 0;
        }
    }
    return -1;
}

void kv_quota_format(uint64_t bytes, char *buf, size_t size)
{
    static const char *const names[] = {"KiB", "MiB", "GiB",
                                        "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(buf, size, "%" PRIu64 " B", bytes);
        return;
    }
    double v = (double)bytes / 1024;
    size_t k = 0;
    while (v >= 1024 && k + 1 < sizeof names / sizeof names[0]) {
        v /= 1024;
        k++;
    }
    snprintf(buf, size, "%.1f %s", v, names[k]);
}

bool kv_quota_exceeded(uint64_t quota, uint64_t state, uint64_t cost)
{
    return quota != 0 && (state >= quota || cost > quota - state);
}

void kv_quota_message(uint64_t quota, uint64_t state, char *buf, size_t size)
{
    char s[32], q[32];
    kv_quota_format(state, s, sizeof s);
    kv_quota_format(quota, q, sizeof q);
    snprintf(buf, size,
             "not applied: the state is %s (%" PRIu64
             " bytes), this write would take it over --quota-bytes %s (%" PRIu64
             " bytes): delete keys and compact the history (kvctl compact), "
             "or raise the quota; deletes and compactions are still accepted",
             s, state, q, quota);
}

/* Writes that can grow the state past the quota. Deletes, session opens
 * (bounded by --max-sessions) and auth changes always pass, so that a user
 * can get out of a full store; an op added later is checked unless it is
 * listed here. */
static bool op_is_exempt(int op)
{
    return op == RAFTKV__COMMAND__OP_DEL ||
           op == RAFTKV__COMMAND__OP_DELETE_RANGE ||
           op == RAFTKV__COMMAND__OP_COMPACT ||
           op == RAFTKV__COMMAND__OP_OPEN_SESSION ||
           op == RAFTKV__COMMAND__OP_AUTH;
}

uint64_t quota_state_bytes(struct kv_services *s)
{
    struct kv_node *n = s->node;
    struct kv_quota *q = &s->quota;
    /* The state changes when entries are applied and, a little (the free
     * list), when it is committed: between the two the measure holds. */
    if (q->measured && q->measured_applied == n->applied &&
        q->measured_commits == n->state_commits) {
        return q->state_bytes;
    }
    uint64_t bytes;
    if (kv_quota_state_bytes(&n->store, n->state_txn, &bytes) != 0) {
        rpc_logf(RPC_LOG_WARN, "node %llu: %s", (unsigned long long)n->cfg.id,
                 n->store.errmsg);
        return q->measured ? q->state_bytes : 0;
    }
    q->state_bytes = bytes;
    q->measured = true;
    q->measured_applied = n->applied;
    q->measured_commits = n->state_commits;
    return bytes;
}

/* Log a change between refusing and accepting writes, each kind at most
 * once a QUOTA_LOG_EVERY_MS (a state that hovers at the quota flips often). */
static void note_change(struct kv_services *svc, bool refused, uint64_t state)
{
    struct kv_node *n = svc->node;
    struct kv_quota *q = &svc->quota;
    if (refused) {
        q->refusals++;
        q->refused_streak++;
    }
    if (refused == q->refusing) {
        return;
    }
    q->refusing = refused;
    uint64_t now = node_now_ms();
    uint64_t *last = refused ? &q->refused_logged_ms : &q->accepted_logged_ms;
    if (*last && now - *last < QUOTA_LOG_EVERY_MS) {
        return;
    }
    *last = now;
    char s[32], quota[32];
    kv_quota_format(state, s, sizeof s);
    kv_quota_format(n->cfg.quota_bytes, quota, sizeof quota);
    if (refused) {
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: writes refused: the state is %s, at "
                 "--quota-bytes %s; deletes and compactions are still "
                 "accepted (delete keys and compact the history, or raise the "
                 "quota)",
                 (unsigned long long)n->cfg.id, s, quota);
    } else {
        rpc_logf(RPC_LOG_INFO,
                 "node %llu: writes accepted again: the state is %s, under "
                 "--quota-bytes %s (%" PRIu64
                 " writes refused since the last "
                 "such line)",
                 (unsigned long long)n->cfg.id, s, quota, q->refused_streak);
        q->refused_streak = 0;
    }
}

int quota_check_write(struct kv_services *s,
                      int op,
                      size_t cost,
                      char *msg,
                      size_t msg_size)
{
    struct kv_node *n = s->node;
    if (n->cfg.quota_bytes == 0 || op_is_exempt(op) ||
        raft_role(n->raft) != RAFT_LEADER) {
        /* A follower sends the write to the leader, which checks it. */
        return 0;
    }
    uint64_t state = quota_state_bytes(s);
    bool refused = kv_quota_exceeded(n->cfg.quota_bytes, state, cost);
    note_change(s, refused, state);
    if (!refused) {
        return 0;
    }
    kv_quota_message(n->cfg.quota_bytes, state, msg, msg_size);
    return RAFTKV__KV_ERROR__KV_NO_SPACE;
}
