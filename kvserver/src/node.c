/* node.c: the node's event loop turn: step the core, persist, apply, send. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "node.h"

uint64_t node_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *node_peer_addr(struct kv_node *n, uint64_t id)
{
    static char buf[300];
    for (size_t i = 0; i < n->cfg.n_nodes; i++) {
        if (n->cfg.ids[i] == id) {
            snprintf(buf, sizeof buf,
                     strchr(n->cfg.hosts[i], ':') ? "[%s]:%u" : "%s:%u",
                     n->cfg.hosts[i], n->cfg.ports[i]);
            return buf;
        }
    }
    return "";
}

void node_clock(struct kv_node *n)
{
    raft_tick(n->raft, node_now_ms());
}

void node_schedule_turn(struct kv_node *n)
{
    if (!n->stopping) {
        event_active(n->turn_ev, EV_TIMEOUT, 0);
    }
}

/* Remember one applied client entry's outcome for this turn's replies. */
static int note_applied(struct kv_node *n,
                        const struct raft_entry *e,
                        int op,
                        struct kv_outcome *o)
{
    if (n->n_done == n->cap_done) {
        size_t cap = n->cap_done ? n->cap_done * 2 : 64;
        struct kv_applied *d = realloc(n->done, cap * sizeof *d);
        if (!d) {
            return KV_STORE_ENOMEM;
        }
        n->done = d;
        n->cap_done = cap;
    }
    struct kv_applied *a = &n->done[n->n_done++];
    a->index = e->index;
    a->term = e->term;
    a->op = op;
    a->outcome = *o;
    return 0;
}

static void clear_applied(struct kv_node *n)
{
    for (size_t i = 0; i < n->n_done; i++) {
        kv_outcome_clear(&n->done[i].outcome);
    }
    n->n_done = 0;
}

/* Which client op an entry holds (for replies), without keeping it. */
static int entry_op(const struct raft_entry *e)
{
    Raftkv__Command *c = raftkv__command__unpack(NULL, e->len, e->data);
    int op = c ? (int)c->op_case : 0;
    if (c) {
        raftkv__command__free_unpacked(c, NULL);
    }
    return op;
}

/* Must this update be on disk before the node acts on it? Log entries,
 * snapshot chunks, a term or a vote must: peers are told they are stored.
 * Applied state and the commit index need not: both are rebuilt from the
 * log after a crash. */
static bool must_sync(const struct kv_node *n, const struct raft_update *u)
{
    return u->n_entries || u->n_chunks || u->install || u->truncate_from ||
           (u->hs_changed &&
            (u->hs.term != n->synced_term || u->hs.vote != n->synced_vote));
}

/* Write everything an update asks for in one transaction (one fsync). */
static int persist(struct kv_node *n, const struct raft_update *u)
{
    struct kv_store *st = &n->store;
    MDB_txn *txn;
    uint64_t applied = n->applied, applied_term = n->applied_term;
    uint64_t snap_index = n->snap_index;
    /* LMDB commits with two flushes: the data pages, then the meta page.
     * MDB_NOMETASYNC leaves the meta page to the next commit's flush: the
     * database stays intact, but a machine crash may undo this commit,
     * which for an update that need not sync loses nothing. */
    bool sync = must_sync(n, u);
    if (sync == n->meta_async) {
        mdb_env_set_flags(st->env, MDB_NOMETASYNC, sync ? 0 : 1);
        n->meta_async = !sync;
    }
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc) {
        return kv_store_fail(st, rc, "begin write");
    }
    int rv = 0;
    for (size_t i = 0; i < u->n_chunks && !rv; i++) {
        const struct raft_snapshot_chunk *c = &u->chunks[i];
        rv = snap_stage(st, txn, c->offset, c->data, c->len);
    }
    if (!rv && u->install) {
        rv = snap_install(st, txn, &applied, &applied_term);
        if (!rv && applied < u->install_index) {
            /* The stream is at least as new as the core's snapshot. */
            snprintf(st->errmsg, sizeof st->errmsg,
                     "%s: received snapshot holds index %llu, older than "
                     "the %llu it was sent for",
                     st->dir, (unsigned long long)applied,
                     (unsigned long long)u->install_index);
            rv = KV_STORE_ECORRUPT;
        }
        if (!rv) {
            rv = kv_store_compact_upto(st, txn, u->install_index);
        }
        if (!rv) {
            snap_index = u->install_index;
            rv = kv_store_put_meta(st, txn, "snap_index", u->install_index);
        }
        if (!rv) {
            rv = kv_store_put_meta(st, txn, "snap_term", u->install_term);
        }
    }
    if (!rv && u->truncate_from) {
        rv = kv_store_truncate_from(st, txn, u->truncate_from);
    }
    if (!rv && u->n_entries) {
        rv = kv_store_append(st, txn, u->entries, u->n_entries);
    }
    if (!rv && u->hs_changed) {
        rv = kv_store_put_meta(st, txn, "term", u->hs.term);
        if (!rv) {
            rv = kv_store_put_meta(st, txn, "vote", u->hs.vote);
        }
        if (!rv) {
            rv = kv_store_put_meta(st, txn, "commit", u->hs.commit);
        }
    }
    for (size_t i = 0; i < u->n_committed && !rv; i++) {
        const struct raft_entry *e = &u->committed[i];
        if (e->index <= applied) {
            continue; /* already in the state (restart or snapshot) */
        }
        if (e->type == RAFT_ENTRY_NORMAL) {
            struct kv_outcome o;
            rv = kv_sm_apply(st, txn, e->index, e->data, e->len,
                             n->cfg.max_sessions, &o);
            if (!rv) {
                rv = note_applied(n, e, entry_op(e), &o);
                if (rv) {
                    kv_outcome_clear(&o);
                }
            }
        }
        applied = e->index;
        applied_term = e->term;
    }
    if (!rv && (applied != n->applied || applied_term != n->applied_term)) {
        rv = kv_store_put_meta(st, txn, "applied", applied);
        if (!rv) {
            rv = kv_store_put_meta(st, txn, "applied_term", applied_term);
        }
    }
    if (rv) {
        mdb_txn_abort(txn);
        clear_applied(n);
        return rv;
    }
    /* The entries applied above are committed, so durable on a majority,
     * and applying them is deterministic: their outcomes are final before
     * this transaction is. Their clients hear now instead of after the
     * fsync. If the commit fails, the retry applies them again to the same
     * outcomes; after a crash, the log replays them. Linearizable reads
     * still wait for the commit: they wait for n->applied, set below. */
    client_answer_applied(n);
    clear_applied(n);
    rpc_server_flush(n->server);
    rc = mdb_txn_commit(txn);
    if (rc) {
        return kv_store_fail(st, rc, "commit (fsync)");
    }
    n->applied = applied;
    n->applied_term = applied_term;
    n->snap_index = snap_index;
    if (u->hs_changed) {
        n->synced_term = u->hs.term;
        n->synced_vote = u->hs.vote;
    }
    return 0;
}

/* Persist, growing the map as needed. */
static int persist_growing(struct kv_node *n, const struct raft_update *u)
{
    for (int tries = 0; tries < 16; tries++) {
        int rv = persist(n, u);
        if (rv != KV_STORE_EMAPFULL) {
            return rv;
        }
        /* Resizing needs every read transaction closed. */
        peer_close_streams(n);
        rv = kv_store_grow(&n->store);
        if (rv) {
            return rv;
        }
        rpc_logf(RPC_LOG_INFO, "node %llu: LMDB map grown to %zu MiB",
                 (unsigned long long)n->cfg.id, n->store.map_size >> 20);
    }
    return KV_STORE_EMAPFULL;
}

/* Everything after the write: messages, client answers, advance. */
static void finish_update(struct kv_node *n, struct raft_update *u)
{
    for (size_t i = 0; i < u->n_messages; i++) {
        const struct raft_message *m = &u->messages[i];
        if (m->cookie) {
            peer_respond(n, m);
        } else {
            peer_send(n, m);
        }
    }
    client_answer_applied(n);
    clear_applied(n);
    client_answer_reads(n, u->reads, u->n_reads);
    client_serve_ready_reads(n);
    if (u->role_changed) {
        rpc_logf(RPC_LOG_INFO, "node %llu: %s in term %llu, leader %llu",
                 (unsigned long long)n->cfg.id, raft_role_name(u->role),
                 (unsigned long long)u->term, (unsigned long long)u->leader);
    }
    raft_advance(n->raft, u);
}

/* Compact the log once it holds more than the threshold. */
static void maybe_compact(struct kv_node *n)
{
    uint64_t last = raft_last_index(n->raft);
    uint64_t first = raft_first_index(n->raft);
    if (n->applied < n->last_compact + n->cfg.snapshot_entries ||
        last - first + 1 <= n->cfg.snapshot_entries) {
        return;
    }
    uint64_t index = n->applied, term;
    if (index > raft_commit_index(n->raft)) {
        index = raft_commit_index(n->raft);
    }
    if (raft_entry_term(n->raft, index, &term) != 0 ||
        raft_snapshot_taken(n->raft, index, term) != 0) {
        return;
    }
    uint64_t upto =
        index > n->cfg.snapshot_trailing ? index - n->cfg.snapshot_trailing : 0;
    MDB_txn *txn;
    struct kv_store *st = &n->store;
    if (mdb_txn_begin(st->env, NULL, 0, &txn) != 0) {
        return;
    }
    int rv = kv_store_compact_upto(st, txn, upto);
    if (!rv) {
        rv = kv_store_put_meta(st, txn, "snap_index", index);
    }
    if (!rv) {
        rv = kv_store_put_meta(st, txn, "snap_term", term);
    }
    if (rv || mdb_txn_commit(txn) != 0) {
        if (rv) {
            mdb_txn_abort(txn);
        }
        rpc_logf(RPC_LOG_WARN, "node %llu: log compaction failed: %s",
                 (unsigned long long)n->cfg.id, st->errmsg);
        return;
    }
    n->snap_index = index;
    n->last_compact = index;
    rpc_logf(RPC_LOG_DEBUG, "node %llu: compacted the log up to %llu",
             (unsigned long long)n->cfg.id, (unsigned long long)upto);
}

static void arm_tick(struct kv_node *n)
{
    uint64_t next = raft_next_timeout(n->raft), now = node_now_ms();
    uint64_t wait = next > now ? next - now : 0;
    if (wait > 1000) {
        wait = 1000;
    }
    struct timeval tv = {(time_t)(wait / 1000),
                         (suseconds_t)((wait % 1000) * 1000)};
    evtimer_add(n->tick_ev, &tv);
}

/* The update could not be written: keep it, stop the core, retry later. */
static void freeze(struct kv_node *n, struct raft_update *u, int rv)
{
    if (!n->frozen) {
        rpc_logf(RPC_LOG_ERROR,
                 "node %llu: cannot persist: %s; writes are refused and the "
                 "node retries every second",
                 (unsigned long long)n->cfg.id, n->store.errmsg);
    }
    n->frozen = true;
    n->disk_full = rv == KV_STORE_ENOSPC;
    n->held = *u;
    struct timeval tv = {1, 0};
    evtimer_add(n->retry_ev, &tv);
}

static void stop_for_corruption(struct kv_node *n)
{
    rpc_logf(RPC_LOG_ERROR,
             "node %llu: stopping: %s. Recover by wiping this node's data "
             "directory and restarting it; it catches up from the others.",
             (unsigned long long)n->cfg.id, n->store.errmsg);
    n->stopping = true;
    n->exit_code = 1;
    event_base_loopexit(n->base, NULL);
}

static void run_turn(struct kv_node *n)
{
    if (n->frozen || n->stopping) {
        return;
    }
    while (raft_has_update(n->raft)) {
        struct raft_update u;
        if (raft_get_update(n->raft, &u) != 0) {
            break;
        }
        for (size_t i = 0; i < u.n_early; i++) {
            peer_send(n, &u.early[i]);
        }
        for (size_t i = 0; i < n->n_peers; i++) {
            rpc_channel_flush(n->peers[i].ch);
        }
        int rv = persist_growing(n, &u);
        if (rv == KV_STORE_ECORRUPT) {
            stop_for_corruption(n);
            return;
        }
        if (rv) {
            freeze(n, &u, rv);
            return;
        }
        finish_update(n, &u);
    }
    maybe_compact(n);
    arm_tick(n);
}

static void on_turn(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run_turn(arg);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kv_node *n = arg;
    if (!n->frozen) {
        raft_tick(n->raft, node_now_ms());
        run_turn(n);
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kv_node *n = arg;
    if (!n->frozen) {
        return;
    }
    int rv = persist_growing(n, &n->held);
    if (rv == KV_STORE_ECORRUPT) {
        stop_for_corruption(n);
        return;
    }
    if (rv) {
        struct timeval tv = {1, 0};
        evtimer_add(n->retry_ev, &tv);
        return;
    }
    rpc_logf(RPC_LOG_INFO, "node %llu: writes succeed again",
             (unsigned long long)n->cfg.id);
    n->frozen = false;
    n->disk_full = false;
    finish_update(n, &n->held);
    run_turn(n);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    client_sweep(arg);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct kv_node *n = arg;
    rpc_logf(RPC_LOG_INFO, "node %llu: %s: shutting down",
             (unsigned long long)n->cfg.id, strsignal((int)sig));
    n->stopping = true;
    event_base_loopexit(n->base, NULL);
}

/* FNV-1a over the sorted "id=host:port" list: the same on every node. */
static uint64_t cluster_id_of(const struct kv_node_config *c)
{
    uint64_t h = 0xcbf29ce484222325ull;
    size_t order[KV_MAX_NODES];
    for (size_t i = 0; i < c->n_nodes; i++) {
        order[i] = i;
    }
    for (size_t i = 1; i < c->n_nodes; i++) {
        for (size_t j = i; j > 0 && c->ids[order[j]] < c->ids[order[j - 1]];
             j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        char item[320];
        int len = snprintf(item, sizeof item, "%llu=%s:%u;",
                           (unsigned long long)c->ids[order[i]],
                           c->hosts[order[i]], c->ports[order[i]]);
        for (int j = 0; j < len; j++) {
            h ^= (uint8_t)item[j];
            h *= 0x100000001b3ull;
        }
    }
    return h ? h : 1;
}

/* Open the store and restore the core from it. */
static int restore(struct kv_node *n)
{
    struct kv_store *st = &n->store;
    int rv = kv_store_open(st, n->cfg.data_dir, n->cfg.map_size);
    if (rv) {
        fprintf(stderr, "kvserver: %s\n", st->errmsg);
        return -1;
    }
    rv = kv_store_claim(st, n->cluster_id, n->cfg.id);
    if (rv) {
        fprintf(stderr, "kvserver: %s\n", st->errmsg);
        return -1;
    }
    MDB_txn *txn;
    if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) != 0) {
        fprintf(stderr, "kvserver: %s: cannot read\n", n->cfg.data_dir);
        return -1;
    }
    struct kv_meta m;
    struct raft_entry *entries = NULL;
    size_t n_entries = 0;
    void *blob = NULL;
    rv = kv_store_read_meta(st, txn, &m);
    if (!rv) {
        rv = kv_store_load_log(st, txn, &entries, &n_entries, &blob);
    }
    mdb_txn_abort(txn);
    if (rv) {
        fprintf(stderr, "kvserver: %s\n", st->errmsg);
        return -1;
    }
    n->applied = m.applied;
    n->applied_term = m.applied_term;
    n->synced_term = m.hs.term;
    n->synced_vote = m.hs.vote;
    n->snap_index = m.snap_index;
    n->last_compact = m.snap_index;

    uint64_t voters[KV_MAX_NODES];
    memcpy(voters, n->cfg.ids, n->cfg.n_nodes * sizeof voters[0]);
    struct raft_config rc = {
        .id = n->cfg.id,
        .voters = voters,
        .n_voters = n->cfg.n_nodes,
        .heartbeat_ms = n->cfg.heartbeat_ms,
        .election_ms = n->cfg.election_ms,
        .seed = n->cfg.seed,
        .start_ms = node_now_ms(),
        .pre_vote = true,
        .check_quorum = true,
        .max_append_bytes = 1u << 20,
        .max_inflight = 64,
        .max_uncommitted_bytes = 64u << 20,
        .snapshot_chunk_bytes = 1u << 20,
        .snapshot_trailing = n->cfg.snapshot_trailing,
    };
    n->raft = raft_new(&rc);
    if (!n->raft) {
        fprintf(stderr, "kvserver: invalid Raft configuration\n");
        free(entries);
        free(blob);
        return -1;
    }
    /* Entries at or below the snapshot that the log still holds are kept
     * for the core; the state machine may be ahead of the core's commit
     * (after a snapshot install), so the core's applied is clamped. */
    uint64_t applied = m.applied;
    if (applied > m.hs.commit) {
        applied = m.hs.commit;
    }
    if (applied < m.snap_index) {
        applied = m.snap_index;
    }
    struct raft_persisted p = {
        .hs = m.hs,
        .snap_index = m.snap_index,
        .snap_term = m.snap_term,
        .applied = applied,
        .entries = entries,
        .n_entries = n_entries,
    };
    if (p.hs.commit < m.snap_index) {
        p.hs.commit = m.snap_index;
    }
    rv = raft_restore(n->raft, &p);
    free(entries);
    free(blob);
    if (rv) {
        fprintf(stderr, "kvserver: %s: cannot restore Raft state: %s\n",
                n->cfg.data_dir, raft_errmsg(n->raft));
        return -1;
    }
    rpc_logf(RPC_LOG_INFO,
             "node %llu: restored term %llu, commit %llu, applied %llu, "
             "snapshot %llu, %zu log entries",
             (unsigned long long)n->cfg.id, (unsigned long long)m.hs.term,
             (unsigned long long)m.hs.commit, (unsigned long long)m.applied,
             (unsigned long long)m.snap_index, n_entries);
    return 0;
}

static void node_free(struct kv_node *n)
{
    client_fail_all(n, RAFTKV__KV_ERROR__KV_SHUTTING_DOWN,
                    "the node is shutting down");
    peer_fail_incoming(n, "the node is shutting down");
    peer_close_streams(n);
    for (size_t i = 0; i < n->n_peers; i++) {
        rpc_channel_free(n->peers[i].ch);
        free(n->peers[i].chunk);
    }
    rpc_server_free(n->server);
    if (n->frozen) {
        raft_advance(n->raft, &n->held);
    }
    raft_free(n->raft);
    kv_store_close(&n->store);
    clear_applied(n);
    free(n->done);
    struct event *evs[] = {n->turn_ev,  n->tick_ev,  n->sweep_ev,
                           n->retry_ev, n->sig_term, n->sig_int};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        if (evs[i]) {
            event_free(evs[i]);
        }
    }
    if (n->base) {
        event_base_free(n->base);
    }
}

int kv_node_run(const struct kv_node_config *cfg)
{
    struct kv_node *n = calloc(1, sizeof *n);
    if (!n) {
        fprintf(stderr, "kvserver: out of memory\n");
        return 1;
    }
    n->cfg = *cfg;
    n->cluster_id = cluster_id_of(cfg);
    int rv = 1;
    size_t self = 0;
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        if (cfg->ids[i] == cfg->id) {
            self = i;
        }
    }
    n->base = event_base_new();
    if (!n->base || event_base_priority_init(n->base, 3) != 0) {
        fprintf(stderr, "kvserver: cannot create the event loop\n");
        goto out;
    }
    if (restore(n) != 0) {
        goto out;
    }
    n->server = rpc_server_new(n->base, NULL);
    if (!n->server) {
        goto out;
    }
    client_service_init(n);
    fault_service_init(n);
    peer_service_init(n);
    rpc_server_add_service(n->server, &n->kv_svc.base);
    rpc_server_add_service(n->server, &n->raft_svc.base);
    rpc_server_add_service(n->server, &n->admin_svc.base);
    if (rpc_server_listen(n->server, cfg->hosts[self], cfg->ports[self],
                          NULL) != 0) {
        fprintf(stderr, "kvserver: %s\n", rpc_server_errmsg(n->server));
        goto out;
    }
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        if (i == self) {
            continue;
        }
        struct kv_peer *p = &n->peers[n->n_peers++];
        p->id = cfg->ids[i];
        snprintf(p->addr, sizeof p->addr, "%s", node_peer_addr(n, p->id));
        struct rpc_channel_options o = {
            .deadline_ms = cfg->election_ms,
            .connect_timeout_ms = cfg->election_ms,
            .backoff_max_ms = cfg->heartbeat_ms * 2,
            .bind_host = cfg->hosts[self],
        };
        p->ch = rpc_channel_new(n->base, cfg->hosts[i], cfg->ports[i], &o);
        p->raft = p->ch ? rpc_channel_service(p->ch,
                                              &raftkv__raft_service__descriptor)
                        : NULL;
        if (!p->raft) {
            fprintf(stderr, "kvserver: out of memory\n");
            goto out;
        }
    }
    /* Turns run after the I/O callbacks of a loop iteration, so that every
     * request that arrived together shares one write and one fsync. */
    n->turn_ev = event_new(n->base, -1, 0, on_turn, n);
    n->tick_ev = evtimer_new(n->base, on_tick, n);
    n->sweep_ev = event_new(n->base, -1, EV_PERSIST, on_sweep, n);
    n->retry_ev = evtimer_new(n->base, on_retry, n);
    n->sig_term = evsignal_new(n->base, SIGTERM, on_signal, n);
    n->sig_int = evsignal_new(n->base, SIGINT, on_signal, n);
    if (!n->turn_ev || !n->tick_ev || !n->sweep_ev || !n->retry_ev ||
        !n->sig_term || !n->sig_int) {
        goto out;
    }
    event_priority_set(n->turn_ev, 2);
    struct timeval sweep = {0, 50000};
    event_add(n->sweep_ev, &sweep);
    event_add(n->sig_term, NULL);
    event_add(n->sig_int, NULL);
    rpc_logf(RPC_LOG_INFO,
             "node %llu: serving on %s, cluster %016llx, %zu "
             "nodes, data in %s",
             (unsigned long long)cfg->id, node_peer_addr(n, cfg->id),
             (unsigned long long)n->cluster_id, cfg->n_nodes, cfg->data_dir);
    if (cfg->fault_injection) {
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: fault injection is enabled: anyone who reaches "
                 "this port can make the node drop or delay traffic",
                 (unsigned long long)cfg->id);
    }
    arm_tick(n);
    node_schedule_turn(n);
    event_base_dispatch(n->base);
    rv = n->exit_code;
out:
    node_free(n);
    free(n);
    return rv;
}
