/* node.c: the node's event loop turn: step the core, persist, apply, send. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/rand.h>

#include "node.h"

uint64_t node_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_removed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kv_node *n = arg;
    n->stopping = true;
    n->exit_code = 0;
    event_base_loopexit(n->base, NULL);
}

/* Stop (exit status 0) a second from now: time for the last answers. */
static void stop_removed(struct kv_node *n)
{
    if (!n->removed_ev) {
        n->removed_ev = evtimer_new(n->base, on_removed, n);
    }
    if (n->removed_ev && !evtimer_pending(n->removed_ev, NULL)) {
        struct timeval tv = {1, 0};
        evtimer_add(n->removed_ev, &tv);
    }
}

void node_removed_self(struct kv_node *n, uint64_t index)
{
    rpc_logf(RPC_LOG_WARN,
             "node %llu: removed from the cluster (configuration entry %llu); "
             "stopping. Its data directory cannot serve again: wipe it "
             "before reusing the host, and add it under a new id",
             (unsigned long long)n->cfg.id, (unsigned long long)index);
    stop_removed(n);
}

/* A member refused our Raft connection after proving it holds the
 * cluster's secret: it counts our id among those removed for good. A
 * follower's removal never reaches it through the log (the leader stops
 * sending to a member once it proposes its removal), so this is how a
 * removed follower, or a former member started again, learns it. */
static void refused_by_member(uint64_t member, void *arg)
{
    struct kv_node *n = arg;
    if (n->stopping ||
        (n->removed_ev && evtimer_pending(n->removed_ev, NULL))) {
        return;
    }
    rpc_logf(RPC_LOG_WARN,
             "node %llu: removed from the cluster (node %llu, a member, "
             "refuses it for good); stopping. Its data directory cannot "
             "serve again: wipe it before reusing the host, and add it "
             "under a new id",
             (unsigned long long)n->cfg.id, (unsigned long long)member);
    stop_removed(n);
}

void node_set_cluster_id(struct kv_node *n, uint64_t id)
{
    if (id == n->cluster_id) {
        return;
    }
    if (n->cluster_id) {
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: cluster id changes from %016llx to %016llx",
                 (unsigned long long)n->cfg.id,
                 (unsigned long long)n->cluster_id, (unsigned long long)id);
    } else {
        rpc_logf(RPC_LOG_INFO, "node %llu: this is cluster %016llx",
                 (unsigned long long)n->cfg.id, (unsigned long long)id);
    }
    n->cluster_id = id;
    n->peer_auth.cluster_id = id;
    if (n->server) {
        rpc_server_set_cluster_id(n->server, id);
    }
}

/* A new leader of a cluster that has no id yet names it, once per term:
 * a random id, through the log, so that every member keeps the same one
 * (the first applied wins). */
static void propose_cluster_id(struct kv_node *n)
{
    Raftkv__ClusterInit ci = RAFTKV__CLUSTER_INIT__INIT;
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    while (ci.cluster_id == 0) {
        if (RAND_bytes((unsigned char *)&ci.cluster_id, sizeof ci.cluster_id) !=
            1) {
            rpc_logf(RPC_LOG_ERROR, "node %llu: no randomness for a cluster id",
                     (unsigned long long)n->cfg.id);
            return;
        }
    }
    cmd.op_case = RAFTKV__COMMAND__OP_CLUSTER_INIT;
    cmd.cluster_init = &ci;
    uint8_t buf[64];
    size_t len = raftkv__command__pack(&cmd, buf);
    uint64_t index, term, hint;
    if (raft_propose(n->raft, buf, len, &index, &term, &hint) == 0) {
        rpc_logf(RPC_LOG_INFO,
                 "node %llu: naming the new cluster %016llx (entry %llu)",
                 (unsigned long long)n->cfg.id,
                 (unsigned long long)ci.cluster_id, (unsigned long long)index);
    }
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

/* Everything after the write: messages, client answers, advance. */
static void finish_update(struct kv_node *n, struct raft_update *u)
{
    for (size_t i = 0; i < u->n_messages; i++) {
        const struct raft_message *m = &u->messages[i];
        if (m->type == RAFT_MSG_VOTE_RESP && m->u.vote_resp.granted &&
            !m->u.vote_resp.pre_vote) {
            /* On disk already (the update was persisted): a vote is given
             * once per term, and this line lets anyone check that. */
            rpc_logf(RPC_LOG_INFO,
                     "node %llu: voted for node %llu in term %llu",
                     (unsigned long long)n->cfg.id, (unsigned long long)m->to,
                     (unsigned long long)m->term);
        }
        if (m->cookie) {
            peer_respond(n, m);
        } else {
            peer_send(n, m);
        }
    }
    node_complete_writes(n);
    node_clear_applied(n);
    node_confirm_reads(n, u->reads, u->n_reads);
    node_serve_reads(n);
    if (n->applied != n->applied_told) {
        n->applied_told = n->applied;
        node_publish(n, NODE_EV_APPLIED);
    }
    bool moved = u->role_changed || u->leader != n->metrics.last_leader;
    if (u->leader != n->metrics.last_leader) {
        n->metrics.leader_changes += u->leader != 0;
        n->metrics.last_leader = u->leader;
    }
    if (u->role_changed) {
        rpc_logf(RPC_LOG_INFO, "node %llu: %s in term %llu, leader %llu",
                 (unsigned long long)n->cfg.id, raft_role_name(u->role),
                 (unsigned long long)u->term, (unsigned long long)u->leader);
    }
    if (moved) {
        node_publish(n, NODE_EV_ROLE);
    }
    bool named = u->role_changed && u->role == RAFT_LEADER && !n->cluster_id;
    raft_advance(n->raft, u);
    if (named) {
        propose_cluster_id(n);
        node_schedule_turn(n);
    }
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
        if (u.conf_changed) {
            node_sync_peers(n); /* before anything goes to a new member */
        }
        for (size_t i = 0; i < u.n_early; i++) {
            peer_send(n, &u.early[i]);
        }
        for (size_t i = 0; i < n->n_peers; i++) {
            rpc_channel_flush(n->peers[i].ch);
        }
        int rv = node_persist_growing(n, &u);
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
    node_maybe_compact(n);
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
    int rv = node_persist_growing(n, &n->held);
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

static void on_state_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kv_node *n = arg;
    if (!n->frozen && !n->stopping) {
        node_state_due(n);
    }
}

/* The reads a turn left (node_serve_reads serves a bounded number). */
static void on_serve(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kv_node *n = arg;
    if (!n->stopping) {
        node_serve_reads(n);
    }
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kv_node *n = arg;
    node_sweep_waiters(n);
    node_publish(n, NODE_EV_SWEEP);
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

/* SIGHUP: read every certificate and key again (renewed certificates);
 * new connections use them, open ones go on. */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct kv_node *n = arg;
    struct rpc_tls *all[] = {n->tls, n->peer_tls_in, n->peer_tls_out};
    const char *names[] = {"client", "peer (accepting)", "peer (calling)"};
    int reloaded = 0, failed = 0;
    for (size_t i = 0; i < 3; i++) {
        char err[600];
        if (!all[i]) {
            continue;
        }
        if (rpc_tls_reload(all[i], err, sizeof err) != 0) {
            rpc_logf(RPC_LOG_ERROR,
                     "node %llu: SIGHUP: %s certificates not reloaded, the "
                     "old ones stay: %s",
                     (unsigned long long)n->cfg.id, names[i], err);
            failed++;
        } else {
            reloaded++;
        }
    }
    rpc_logf(RPC_LOG_INFO, "node %llu: SIGHUP: reloaded %d TLS context%s%s",
             (unsigned long long)n->cfg.id, reloaded, reloaded == 1 ? "" : "s",
             failed ? " (some failed)" : "");
}

/* Make the TLS contexts the flags ask for. */
static int make_tls(struct kv_node *n)
{
    const struct kv_node_config *cfg = &n->cfg;
    char err[600];
    if (cfg->tls.cert_file) {
        struct rpc_tls_options o = cfg->tls;
        o.server = true;
        if (rpc_tls_new(&o, &n->tls, err, sizeof err) != 0) {
            fprintf(stderr, "kvserver: client TLS: %s\n", err);
            return -1;
        }
    }
    if (cfg->peer_tls.cert_file) {
        struct rpc_tls_options in = cfg->peer_tls, out = cfg->peer_tls;
        in.server = true;
        in.verify_peer = true;
        out.server = false;
        out.verify_peer = true;
        if (rpc_tls_new(&in, &n->peer_tls_in, err, sizeof err) != 0 ||
            rpc_tls_new(&out, &n->peer_tls_out, err, sizeof err) != 0) {
            fprintf(stderr, "kvserver: peer TLS: %s\n", err);
            return -1;
        }
    }
    return 0;
}

static void node_free(struct kv_node *n)
{
    /* The services answer their calls first (and stop their threads),
     * then the calls waiting here are answered. */
    node_publish(n, NODE_EV_STOPPING);
    node_fail_waiters(n, RAFTKV__KV_ERROR__KV_SHUTTING_DOWN,
                      "the node is shutting down");
    /* Those answers (SHUTTING_DOWN, the last frames of streams) leave
     * now, as far as the sockets take them: closing the connections
     * below drops what is still queued. */
    if (n->server) {
        rpc_server_flush(n->server); /* (none when the start failed) */
    }
    peer_fail_incoming(n, "the node is shutting down");
    peer_close_streams(n);
    for (size_t i = 0; i < n->n_peers; i++) {
        rpc_channel_free(n->peers[i].ch);
        free(n->peers[i].chunk);
    }
    free(n->removed);
    rpc_server_free(n->server);
    rpc_server_free(n->peer_server);
    rpc_tls_free(n->tls);
    rpc_tls_free(n->peer_tls_in);
    rpc_tls_free(n->peer_tls_out);
    OPENSSL_cleanse(n->peer_auth.key, sizeof n->peer_auth.key);
    if (n->frozen) {
        /* The held update's log write failed, but its committed entries
         * are in the state transaction: committing it would put the
         * applied state ahead of the durable log. Drop it; the entries
         * that are durable are applied again at the next start. */
        raft_advance(n->raft, &n->held);
        if (n->state_txn) {
            mdb_txn_abort(n->state_txn);
            n->state_txn = NULL;
        }
    }
    raft_free(n->raft);
    if (n->state_txn && node_state_commit(n, true) != 0) {
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: applied state not saved at shutdown (%s); the "
                 "log replays it at the next start",
                 (unsigned long long)n->cfg.id, n->store.errmsg);
    }
    node_publish(n, NODE_EV_RELEASE_READERS);
    kv_install_drop(&n->build);
    kv_store_close(&n->store);
    if (n->wal.dir[0]) {
        kv_wal_close(&n->wal);
    }
    node_clear_applied(n);
    free(n->done);
    struct event *evs[] = {n->turn_ev,  n->tick_ev,   n->sweep_ev, n->serve_ev,
                           n->retry_ev, n->state_ev,  n->sig_term, n->sig_int,
                           n->sig_hup,  n->removed_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        if (evs[i]) {
            event_free(evs[i]);
        }
    }
    if (n->base) {
        event_base_free(n->base);
    }
}

/* Peers are the nodes that prove they hold the cluster's secret, under
 * any id but ours and those removed for good: a node added since (or one
 * whose addition this node has not applied yet) must be heard. */
static bool allow_peer(uint64_t id, void *arg)
{
    struct kv_node *n = arg;
    return id != n->cfg.id && !node_removed(n, id);
}

int kv_node_open(const struct kv_node_config *cfg, struct kv_node **out)
{
    struct kv_node *n = calloc(1, sizeof *n);
    if (!n) {
        fprintf(stderr, "kvserver: out of memory\n");
        return -1;
    }
    n->cfg = *cfg;
    n->base = event_base_new();
    if (!n->base || event_base_priority_init(n->base, 3) != 0) {
        fprintf(stderr, "kvserver: cannot create the event loop\n");
        goto err_free;
    }
    if (node_restore(n) != 0) {
        goto err_free;
    }
    n->applied_told = n->applied;
    /* Clients and peers have listeners of their own: RaftService is
     * served only on the peer address, and only to connections that
     * proved they hold the cluster's secret (rpc's peer handshake) as a
     * member id. The client listener serves KvService and AdminService. */
    n->peer_auth.self_id = cfg->id;
    n->peer_auth.cluster_id = n->cluster_id;
    n->peer_auth.allow = allow_peer;
    n->peer_auth.allow_arg = n;
    n->peer_auth.refused = refused_by_member;
    n->peer_auth.refused_arg = n;
    if (cfg->peer_secret_file) {
        char err[600];
        if (rpc_peer_key_from_file(cfg->peer_secret_file, n->peer_auth.key, err,
                                   sizeof err) != 0) {
            fprintf(stderr, "kvserver: %s\n", err);
            goto err_free;
        }
    }
    if (make_tls(n) != 0) {
        goto err_free;
    }
    struct rpc_server_options so = {
        .tls = n->tls,
        .max_output = cfg->max_output,
        .max_connections = cfg->max_connections,
        .max_per_source = cfg->max_per_source,
        .max_buffered = cfg->max_buffered,
        .frame_timeout_ms = cfg->frame_timeout_ms,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .max_inflight = cfg->max_inflight_conn,
        .max_inflight_total = cfg->max_inflight,
        .slow_ms = cfg->slow_request_ms,
        /* Clients at the default priority (1); what their turn leaves
         * waits with the node's turn, at the lowest (2). */
        .backlog_priority = 2 + 1,
    };
    /* Peers: a few connections per member at most, plus room for
     * handshakes in progress; nobody idles them out. */
    struct rpc_server_options po = {
        .max_output = cfg->max_output,
        .max_connections = (uint32_t)(8 * KV_MAX_PEERS + 16),
        .max_per_source = KV_PEER_HANDSHAKES_PER_SOURCE,
        .frame_timeout_ms = cfg->frame_timeout_ms,
        .peer_auth = &n->peer_auth,
        .limits.max_args = KV_PEER_MAX_ARGS,
        .tls = n->peer_tls_in,
        .precheck = peer_precheck,
        .precheck_arg = n,
        /* The other nodes' messages at the clients' priority (1): with
         * libevent's strict priorities, a leader streaming entries to a
         * lagging follower kept the follower's client port from ever
         * being served (10 s under the sanitizer build). Each client
         * connection takes at most frames_per_turn frames a round, and
         * the ticks (heartbeats, elections) still come first. */
        .io_priority = 1 + 1,
    };
    n->server = rpc_server_new(n->base, &so);
    n->peer_server = rpc_server_new(n->base, &po);
    if (!n->server || !n->peer_server) {
        goto err_free;
    }
    rpc_server_set_cluster_id(n->server, n->cluster_id);
    peer_service_init(n);
    rpc_server_add_service(n->peer_server, &n->raft_svc.base);
    *out = n;
    return 0;

err_free:
    kv_node_close(n);
    return -1;
}

int kv_node_run(struct kv_node *n)
{
    const struct kv_node_config *cfg = &n->cfg;
    size_t self = 0;
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        if (cfg->ids[i] == cfg->id) {
            self = i;
        }
    }
    /* Signals are caught before anything listens: a SIGTERM that comes
     * as soon as the port answers stops the node cleanly (exit 0), not by
     * the signal's default action. */
    n->sig_term = evsignal_new(n->base, SIGTERM, on_signal, n);
    n->sig_int = evsignal_new(n->base, SIGINT, on_signal, n);
    n->sig_hup = evsignal_new(n->base, SIGHUP, on_hup, n);
    if (!n->sig_term || !n->sig_int || !n->sig_hup ||
        event_add(n->sig_term, NULL) != 0 || event_add(n->sig_int, NULL) != 0 ||
        event_add(n->sig_hup, NULL) != 0) {
        return 1;
    }
    const char *lhost = cfg->listen_port ? cfg->listen_host : cfg->hosts[self];
    uint16_t lport = cfg->listen_port ? cfg->listen_port : cfg->ports[self];
    if (rpc_server_listen(n->server, lhost, lport, NULL) != 0) {
        fprintf(stderr, "kvserver: %s\n", rpc_server_errmsg(n->server));
        return 1;
    }
    /* Peers: with several nodes, or a secret (a one-node cluster may
     * grow: kvctl member add). */
    if ((cfg->n_nodes > 1 || cfg->join || cfg->peer_secret_file) &&
        rpc_server_listen(n->peer_server, cfg->peer_listen_host,
                          cfg->peer_listen_port, NULL) != 0) {
        fprintf(stderr, "kvserver: peers: %s\n",
                rpc_server_errmsg(n->peer_server));
        return 1;
    }
    /* Listening: the start worked, and the data directory is this
     * node's from now on (a start that failed before leaves it free for
     * corrected flags). */
    if (kv_store_claim(&n->store, 0, cfg->id) != 0) {
        fprintf(stderr, "kvserver: %s\n", n->store.errmsg);
        return 1;
    }
    node_sync_peers(n);
    /* Turns run after the I/O callbacks of a loop iteration, so that every
     * request that arrived together shares one write and one fsync. */
    n->turn_ev = event_new(n->base, -1, 0, on_turn, n);
    n->tick_ev = evtimer_new(n->base, on_tick, n);
    n->sweep_ev = event_new(n->base, -1, EV_PERSIST, on_sweep, n);
    n->retry_ev = evtimer_new(n->base, on_retry, n);
    n->state_ev = evtimer_new(n->base, on_state_due, n);
    n->serve_ev = evtimer_new(n->base, on_serve, n);
    if (!n->turn_ev || !n->tick_ev || !n->sweep_ev || !n->retry_ev ||
        !n->state_ev || !n->serve_ev) {
        return 1;
    }
    event_priority_set(n->turn_ev, 2);
    event_priority_set(n->tick_ev, 0); /* heartbeats and elections first */
    struct timeval sweep = {0, 50000};
    event_add(n->sweep_ev, &sweep);
    rpc_logf(RPC_LOG_INFO,
             "node %llu: serving clients on %s (%s), peers on %s:%u (%s), "
             "cluster %016llx%s, %zu members, data in %s",
             (unsigned long long)cfg->id, node_peer_addr(n, cfg->id),
             !n->tls                ? "plain TCP"
             : cfg->tls.verify_peer ? "TLS, client certificates"
                                    : "TLS",
             cfg->peer_listen_host, cfg->peer_listen_port,
             n->peer_tls_in ? "mutual TLS + secret" : "secret",
             (unsigned long long)n->cluster_id,
             n->cluster_id ? "" : " (named by the first leader)",
             raft_members(n->raft, NULL), cfg->data_dir);
    if (cfg->fault_injection) {
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: fault injection is enabled: anyone who reaches "
                 "this port can make the node drop or delay traffic",
                 (unsigned long long)cfg->id);
    }
    arm_tick(n);
    node_schedule_turn(n);
    event_base_dispatch(n->base);
    return n->exit_code;
}

void kv_node_close(struct kv_node *n)
{
    node_free(n);
    free(n);
}
