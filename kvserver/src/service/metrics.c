/* metrics.c: Prometheus text at /metrics and a health check at /health,
 * served by libevent's HTTP server on --metrics-addr. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "metrics.h"
#include "service.h"

/* Names of the RPC statuses, by struct rpc_method_stats slot. */
static const char *const status_names[RPC_STATUS_SLOTS] = {
    "OK",          "UNKNOWN_SERVICE",   "UNKNOWN_METHOD",
    "BAD_REQUEST", "SHUTTING_DOWN",     "INTERNAL",
    "OVERLOADED",  "DEADLINE_EXCEEDED", "WRONG_CLUSTER",
    "OTHER",
};

static void put_meta(struct evbuffer *b,
                     const char *name,
                     const char *type,
                     const char *help)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                        type);
}

static void put_value(struct evbuffer *b,
                      const char *name,
                      const char *type,
                      const char *help,
                      uint64_t v)
{
    put_meta(b, name, type, help);
    evbuffer_add_printf(b, "%s %" PRIu64 "\n", name, v);
}

static void put_hist(struct evbuffer *b,
                     const char *name,
                     const char *help,
                     const struct kv_hist *h)
{
    put_meta(b, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t k = 0; k < KV_HIST_BUCKETS; k++) {
        cum += h->counts[k];
        evbuffer_add_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name,
                            kv_hist_bounds[k], cum);
    }
    cum += h->counts[KV_HIST_BUCKETS];
    evbuffer_add_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
    evbuffer_add_printf(b, "%s_sum %.9f\n%s_count %" PRIu64 "\n", name, h->sum,
                        name, h->n);
}

/* Entries in an LMDB database, seen by the state transaction if open. */
static uint64_t db_entries(struct kv_node *n, MDB_dbi dbi)
{
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        return 0;
    }
    MDB_stat st;
    uint64_t count = mdb_stat(txn, dbi, &st) == 0 ? st.ms_entries : 0;
    node_state_done(n, txn);
    return count;
}

static void put_rpc(struct evbuffer *b, struct kv_node *n)
{
    put_meta(b, "raftkv_rpc_requests_total", "counter",
             "Requests this node answered, by service, method and status.");
    const ProtobufCServiceDescriptor *descs[] = {
        &raftkv__kv_service__descriptor,
        &raftkv__lease_service__descriptor,
        &raftkv__raft_service__descriptor,
        &raftkv__admin_service__descriptor,
    };
    for (size_t d = 0; d < sizeof descs / sizeof descs[0]; d++) {
        size_t n_methods;
        const struct rpc_method_stats *ms = rpc_server_method_stats(
            descs[d] == &raftkv__raft_service__descriptor ? n->peer_server
                                                          : n->server,
            descs[d]->name, &n_methods);
        for (size_t m = 0; ms && m < n_methods; m++) {
            for (size_t k = 0; k < RPC_STATUS_SLOTS; k++) {
                if (k != 0 && ms[m].answered[k] == 0) {
                    continue;
                }
                evbuffer_add_printf(
                    b,
                    "raftkv_rpc_requests_total{service=\"%s\",method=\"%s\","
                    "status=\"%s\"} %" PRIu64 "\n",
                    descs[d]->name, descs[d]->methods[m].name, status_names[k],
                    ms[m].answered[k]);
            }
        }
    }
    struct rpc_server_stats ss;
    rpc_server_get_stats(n->server, &ss);
    put_value(b, "raftkv_rpc_bad_frames_total", "counter",
              "Connections closed for a frame that did not decode.",
              ss.bad_frames);
    put_value(b, "raftkv_rpc_connections_accepted_total", "counter",
              "Connections accepted.", ss.accepted);
    put_value(b, "raftkv_rpc_connections", "gauge", "Connections open now.",
              ss.open);
    put_value(b, "raftkv_rpc_overflow_closes_total", "counter",
              "Connections closed because their replies went unread.",
              ss.overflow_closes);
    struct rpc_server_stats ps;
    rpc_server_get_stats(n->peer_server, &ps);
    put_value(b, "raftkv_rpc_peer_connections", "gauge",
              "Open connections on the peer port (from other nodes).", ps.open);
    put_value(b, "raftkv_peer_handshakes_failed_total", "counter",
              "Connections to the peer port that did not prove they are a "
              "member holding the cluster's secret.",
              ps.handshakes_failed);
    put_value(b, "raftkv_peer_bad_frames_total", "counter",
              "Peer connections closed for a frame that did not decode.",
              ps.bad_frames);
    put_value(b, "raftkv_rpc_refused_connections_total", "counter",
              "Connections closed at once: over --max-connections.",
              ss.refused_connections);
    put_value(b, "raftkv_rpc_oversized_requests_total", "counter",
              "Requests answered as too big, their args skipped.",
              ss.oversized_requests);
    put_value(b, "raftkv_rpc_frame_timeouts_total", "counter",
              "Connections closed for a frame not completed in time.",
              ss.frame_timeouts);
    put_value(b, "raftkv_rpc_idle_closes_total", "counter",
              "Connections closed after --idle-timeout-ms without a call.",
              ss.idle_closes);
    put_value(b, "raftkv_rpc_shed_total", "counter",
              "Calls answered OVERLOADED at once, never started: over "
              "--max-inflight-per-conn or --max-inflight.",
              ss.shed);
    put_value(b, "raftkv_rpc_inflight", "gauge",
              "Client calls started and not yet answered (open streams not "
              "counted).",
              ss.inflight);
    put_value(b, "raftkv_rpc_backlogged_total", "counter",
              "Times a client connection's requests waited for the others' "
              "turn (more than 64 in one read).",
              ss.backlogged);
    put_value(b, "raftkv_rpc_expired_total", "counter",
              "Calls answered DEADLINE_EXCEEDED, never started: their "
              "caller's timeout passed while they waited.",
              ss.expired);
    put_value(b, "raftkv_rpc_slow_total", "counter",
              "Calls logged as slow (--slow-request-ms).", ss.slow);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
    struct kv_services *s = arg;
    struct kv_node *n = s->node;
    struct kv_metrics *m = &n->metrics;
    s->http_requests++;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
        return;
    }
    struct raft *r = n->raft;
    uint64_t pending = node_writes_pending(n);
    put_meta(b, "raftkv_node_info", "gauge", "This node's id and cluster.");
    evbuffer_add_printf(b,
                        "raftkv_node_info{id=\"%" PRIu64
                        "\",cluster=\"%016" PRIx64 "\"} 1\n",
                        n->cfg.id, n->cluster_id);
    put_value(b, "raftkv_has_leader", "gauge",
              "1 if this node knows a leader, else 0.", raft_leader(r) != 0);
    put_value(b, "raftkv_is_leader", "gauge", "1 if this node leads, else 0.",
              raft_role(r) == RAFT_LEADER);
    put_value(b, "raftkv_leader_changes_total", "counter",
              "Times this node saw a new leader.", m->leader_changes);
    put_value(b, "raftkv_term", "gauge", "Current Raft term.", raft_term(r));
    put_value(b, "raftkv_commit_index", "gauge", "Raft commit index.",
              raft_commit_index(r));
    put_value(b, "raftkv_applied_index", "gauge",
              "Index applied to the key-value state.", n->applied);
    put_value(b, "raftkv_proposals_committed_total", "counter",
              "Client writes committed and answered with their outcome.",
              m->proposals_committed);
    put_value(b, "raftkv_proposals_failed_total", "counter",
              "Client writes refused or not applied (not leader, timeout, "
              "bad request, ...).",
              m->proposals_failed);
    put_value(b, "raftkv_proposals_pending", "gauge",
              "Client writes waiting to be applied.", pending);
    put_hist(b, "raftkv_wal_fsync_duration_seconds",
             "Log appends: write and fdatasync.", &m->wal_sync);
    put_hist(b, "raftkv_state_commit_duration_seconds",
             "Commits of the applied state to LMDB.", &m->state_commit);
    put_hist(b, "raftkv_apply_duration_seconds",
             "Applying one loop turn's committed entries.", &m->apply);
    put_rpc(b, n);
    put_value(b, "raftkv_snapshots_sent_total", "counter",
              "Snapshots streamed to followers.", m->snapshots_sent);
    put_value(b, "raftkv_snapshots_received_total", "counter",
              "Snapshots received and installed.", m->snapshots_received);
    put_value(b, "raftkv_range_count_slices_total", "counter",
              "Slices of Range counts counted on later loop turns "
              "(--count-slice-keys).",
              m->count_slices);
    put_value(b, "raftkv_log_compactions_total", "counter", "Log compactions.",
              m->compactions);
    put_value(b, "raftkv_log_compactions_synced_total", "counter",
              "Log compactions that synced the applied state themselves "
              "(the others rely on an earlier commit's sync).",
              m->compactions_synced);
    put_value(b, "raftkv_log_entries", "gauge", "Entries in the Raft log.",
              raft_last_index(r) + 1 - raft_first_index(r));
    put_value(b, "raftkv_wal_bytes", "gauge",
              "Bytes in the write-ahead log's segments.",
              kv_wal_bytes(&n->wal));
    put_value(b, "raftkv_wal_segments", "gauge",
              "Segment files of the write-ahead log.", n->wal.n_segs);
    put_value(b, "raftkv_sessions", "gauge",
              "Clients remembered for exactly-once writes.",
              db_entries(n, n->store.sessions));
    put_value(b, "raftkv_keys", "gauge", "Keys in the key-value state.",
              db_entries(n, n->store.kv));
    put_value(b, "raftkv_disk_full", "gauge",
              "1 while writes are refused for a full disk.", n->disk_full);
    put_value(b, "raftkv_quota_bytes", "gauge",
              "--quota-bytes: the leader refuses writes that would grow the "
              "state past it (0: no quota).",
              n->cfg.quota_bytes);
    put_value(b, "raftkv_state_bytes", "gauge",
              "Bytes of LMDB pages in use by the applied state (freed pages "
              "are reused and not counted).",
              quota_state_bytes(s));
    put_value(b, "raftkv_quota_refusals_total", "counter",
              "Writes this node refused as leader for --quota-bytes.",
              s->quota.refusals);
    struct kv_revs revs = {0, 0, 0};
    MDB_txn *txn = node_state_read(n, NULL);
    if (txn) {
        if (kv_mvcc_revs(&n->store, txn, &revs) != 0) {
            memset(&revs, 0, sizeof revs);
        }
        node_state_done(n, txn);
    }
    put_value(b, "raftkv_revision", "gauge",
              "The store's revision in this node's applied state.",
              revs.revision);
    put_value(b, "raftkv_compact_revision", "gauge",
              "The history of changes is kept after this revision.",
              revs.compact);
    put_value(b, "raftkv_history_bytes", "gauge",
              "Bytes of keys and values in the history of changes "
              "(--history-bytes bounds it).",
              revs.hist_bytes);
    uint64_t watches, watch_events;
    watch_stats(s, &watches, &watch_events);
    put_value(b, "raftkv_watches", "gauge",
              "Watches open on this node (WatchService).", watches);
    put_value(b, "raftkv_watch_events_total", "counter",
              "Events this node has sent to watches.", watch_events);
    put_value(b, "raftkv_leases", "gauge",
              "Leases in this node's applied state.", lease_service_count(s));
    put_value(b, "raftkv_lease_expired_total", "counter",
              "Leases that expired (ended by the leader's expire entries) "
              "as applied by this node since it started.",
              n->store.lease_news.expired);
    uint64_t ka_streams, ka_renewals;
    lease_stream_stats(s, &ka_streams, &ka_renewals);
    put_value(b, "raftkv_lease_keepalive_streams", "gauge",
              "Keep-alive streams open on this node (LeaseKeepAliveStream; "
              "the leader's).",
              ka_streams);
    put_value(b, "raftkv_lease_stream_renewals_total", "counter",
              "Lease renewals this node answered on keep-alive streams "
              "(renewed; unary keep-alives are in raftkv_rpc_requests_total).",
              ka_renewals);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", b);
    evbuffer_free(b);
}

/* Healthy: the node knows a leader and a linearizable read can be served:
 * the leader has committed an entry of its term and, with check-quorum,
 * heard from a majority within an election timeout; a follower has
 * applied what it knows to be committed, give or take a moment's writes. */
static const char *unhealthy_reason(struct kv_node *n, char *buf, size_t len)
{
    struct raft *r = n->raft;
    if (n->stopping) {
        return "shutting down";
    }
    if (n->frozen) {
        snprintf(buf, len, "cannot persist: %s", n->store.errmsg);
        return buf;
    }
    if (raft_leader(r) == 0) {
        return "no leader known";
    }
    uint64_t commit = raft_commit_index(r), term;
    if (raft_role(r) == RAFT_LEADER) {
        if (raft_entry_term(r, commit, &term) == 0 && term != raft_term(r)) {
            return "new leader: no entry of its term committed yet";
        }
        return NULL;
    }
    if (commit > n->applied + 1000) {
        snprintf(buf, len,
                 "applied index %" PRIu64
                 " trails the commit "
                 "index %" PRIu64,
                 n->applied, commit);
        return buf;
    }
    return NULL;
}

static void json_string(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            evbuffer_add_printf(b, "\\%c", c);
        } else if (c < 0x20) {
            evbuffer_add_printf(b, "\\u%04x", c);
        } else {
            evbuffer_add(b, s, 1);
        }
    }
    evbuffer_add(b, "\"", 1);
}

static void on_health(struct evhttp_request *req, void *arg)
{
    struct kv_services *s = arg;
    struct kv_node *n = s->node;
    s->http_requests++;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
        return;
    }
    char buf[1400];
    const char *why = unhealthy_reason(n, buf, sizeof buf);
    struct raft *r = n->raft;
    evbuffer_add_printf(
        b,
        "{\"healthy\":%s,\"id\":%" PRIu64 ",\"role\":\"%s\",\"leader\":%" PRIu64
        ",\"term\":%" PRIu64 ",\"commit\":%" PRIu64 ",\"applied\":%" PRIu64
        ",\"reason\":",
        why ? "false" : "true", n->cfg.id, raft_role_name(raft_role(r)),
        raft_leader(r), raft_term(r), raft_commit_index(r), n->applied);
    json_string(b, why ? why
                       : "has a leader and can serve linearizable "
                         "reads");
    evbuffer_add(b, "}\n", 2);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, why ? 503 : HTTP_OK,
                      why ? "Service Unavailable" : "OK", b);
    evbuffer_free(b);
}

static void on_other(struct evhttp_request *req, void *arg)
{
    (void)arg;
    evhttp_send_error(req, HTTP_NOTFOUND, "raftkv serves /metrics and /health");
}

int metrics_parse_addr(const char *addr, char host[256], uint16_t *port)
{
    const char *colon = strrchr(addr, ':');
    size_t hlen = colon ? (size_t)(colon - addr) : 0;
    char *end = NULL;
    unsigned long p = colon ? strtoul(colon + 1, &end, 10) : 0;
    if (!colon || hlen == 0 || hlen >= 256 || !end || end == colon + 1 ||
        *end || p > 65535) {
        return -1;
    }
    memcpy(host, addr, hlen);
    host[hlen] = 0;
    if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = 0;
    }
    *port = (uint16_t)p;
    return 0;
}

/* Serve /metrics and /health on @addr ("HOST:PORT") with libevent's HTTP
 * server. Returns 0, or -1 after printing why to stderr. */
static int metrics_start(struct kv_services *s, const char *addr)
{
    struct kv_node *n = s->node;
    char host[256];
    uint16_t port;
    if (metrics_parse_addr(addr, host, &port) != 0) {
        fprintf(stderr, "kvserver: --metrics-addr wants HOST:PORT, not '%s'\n",
                addr);
        return -1;
    }
    s->http = evhttp_new(n->base);
    if (!s->http) {
        fprintf(stderr, "kvserver: cannot create the HTTP server\n");
        return -1;
    }
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_max_headers_size(s->http, 8192);
    evhttp_set_max_body_size(s->http, 0);
    evhttp_set_timeout(s->http, 10);
    evhttp_set_cb(s->http, "/metrics", on_metrics, s);
    evhttp_set_cb(s->http, "/health", on_health, s);
    evhttp_set_gencb(s->http, on_other, s);
    struct evhttp_bound_socket *bs =
        evhttp_bind_socket_with_handle(s->http, host, port);
    if (!bs) {
        fprintf(stderr,
                "kvserver: --metrics-addr %s: cannot listen there: %s\n", addr,
                strerror(errno));
        evhttp_free(s->http);
        s->http = NULL;
        return -1;
    }
    /* Port 0 picks a free port: say which. */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char where[320];
    snprintf(where, sizeof where, "%s", addr);
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss,
                    &sl) == 0) {
        char ip[INET6_ADDRSTRLEN] = "?";
        unsigned p = 0;
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
            p = ntohs(a->sin_port);
            snprintf(where, sizeof where, "%s:%u", ip, p);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
            p = ntohs(a->sin6_port);
            snprintf(where, sizeof where, "[%s]:%u", ip, p);
        }
    }
    rpc_logf(RPC_LOG_INFO, "node %llu: metrics at http://%s/metrics",
             (unsigned long long)n->cfg.id, where);
    return 0;
}

/* Stop serving (shutdown). */
static void metrics_stop(struct kv_node *n, enum node_event ev, void *arg)
{
    (void)n;
    (void)ev;
    struct kv_services *s = arg;
    if (s->http) {
        evhttp_free(s->http);
        s->http = NULL;
    }
}

int metrics_service_init(struct kv_services *s)
{
    const char *addr = s->node->cfg.metrics_addr;
    if (node_subscribe(s->node, NODE_EV_STOPPING, metrics_stop, s) != 0) {
        return -1;
    }
    return addr ? metrics_start(s, addr) : 0;
}
