/* admin.c: AdminService Ping, Status (with the leader's replication view),
 * TransferLeader (Raft leadership transfer, answered once leadership has
 * moved), MemberList and MemberChange (membership, answered once the
 * change is applied). Fault is fault.c's, SnapshotRead backup.c's. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"

/* A TransferLeader call waiting for the leadership to move. */
struct admin_transfer
{
    uint64_t target;                             /* node that should lead */
    uint64_t deadline;                           /* ms: TIMEOUT after this */
    Raftkv__TransferLeaderReply_Closure closure; /* completes the call */
    void *closure_data;                          /* its argument */
    struct admin_transfer *next;                 /* node's list */
};

/* How long a call waits: the core abandons a transfer after an election
 * timeout; a TimeoutNow sent just before that still gets two heartbeat
 * intervals to turn into an election the old leader hears of. */
static uint64_t wait_ms(const struct kv_node *n)
{
    return (uint64_t)n->cfg.election_ms + 2 * (uint64_t)n->cfg.heartbeat_ms;
}

static void reply(struct kv_node *n,
                  Raftkv__TransferLeaderReply_Closure closure,
                  void *data,
                  Raftkv__AdminError err,
                  uint64_t target,
                  const char *msg)
{
    Raftkv__TransferLeaderReply r = RAFTKV__TRANSFER_LEADER_REPLY__INIT;
    char addr[300];
    uint64_t leader = raft_leader(n->raft);
    snprintf(addr, sizeof addr, "%s", leader ? node_peer_addr(n, leader) : "");
    r.error = err;
    r.message = (char *)msg;
    r.node_id = n->cfg.id;
    r.target_id = target;
    r.leader_id = leader;
    r.leader_address = addr;
    r.term = raft_term(n->raft);
    closure(&r, data);
}

static bool is_member(const struct kv_node *n, uint64_t id)
{
    const struct raft_member *m;
    size_t k = raft_members(n->raft, &m);
    for (size_t i = 0; i < k; i++) {
        if (m[i].id == id) {
            return true;
        }
    }
    return false;
}

/* "1, 2, 3 (learner)" */
static void list_members(const struct kv_node *n, char *out, size_t len)
{
    const struct raft_member *m;
    size_t k = raft_members(n->raft, &m), o = 0;
    out[0] = 0;
    for (size_t i = 0; i < k && o < len; i++) {
        int w = snprintf(out + o, len - o, "%s%" PRIu64 "%s", i ? ", " : "",
                         m[i].id, m[i].voter ? "" : " (learner)");
        o = w < 0 ? len : o + (size_t)w;
    }
}

/* The follower with the longest log among those that answered within the
 * last two heartbeat rounds, or 0. */
static uint64_t pick_target(struct kv_node *n)
{
    uint64_t best = 0, best_match = 0;
    for (size_t i = 0; i < n->n_peers; i++) {
        struct raft_peer_info pi;
        if (raft_peer_info(n->raft, n->peers[i].id, &pi) == 0 &&
            pi.rounds_unacked <= 2 && (best == 0 || pi.match > best_match)) {
            best = n->peers[i].id;
            best_match = pi.match;
        }
    }
    return best;
}

static void handle_transfer_leader(Raftkv__AdminService_Service *svc,
                                   const Raftkv__TransferLeaderArgs *a,
                                   Raftkv__TransferLeaderReply_Closure closure,
                                   void *data)
{
    struct kv_services *s = services_of(svc, admin_svc);
    struct kv_node *n = s->node;
    uint64_t self = n->cfg.id, target = a->target_id;
    uint64_t leader = raft_leader(n->raft);
    char msg[400], ids[120];
    if (target && !is_member(n, target)) {
        list_members(n, ids, sizeof ids);
        snprintf(msg, sizeof msg,
                 "node %" PRIu64 " is not in the cluster (its nodes: %s)",
                 target, ids);
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_UNKNOWN_NODE, target,
              msg);
        return;
    }
    if (raft_role(n->raft) != RAFT_LEADER) {
        if (leader) {
            snprintf(msg, sizeof msg,
                     "node %" PRIu64 " is not the leader; node %" PRIu64
                     " (%s) is",
                     self, leader, node_peer_addr(n, leader));
        } else {
            snprintf(msg, sizeof msg,
                     "node %" PRIu64 " is not the leader and knows of none",
                     self);
        }
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_NOT_LEADER, target,
              msg);
        return;
    }
    if (n->frozen) {
        snprintf(msg, sizeof msg,
                 "node %" PRIu64
                 " cannot persist (%.200s) and cannot hand over "
                 "leadership",
                 self, n->store.errmsg);
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE, target,
              msg);
        return;
    }
    if (target == 0) {
        if (n->n_peers == 0) {
            reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_BAD_REQUEST, 0,
                  "a single-node cluster has no other node to lead");
            return;
        }
        target = pick_target(n);
        if (target == 0) {
            reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE, 0,
                  "no follower answered in the last two heartbeats; name a "
                  "target to try anyway");
            return;
        }
    }
    if (target == self) {
        snprintf(msg, sizeof msg,
                 "node %" PRIu64 " is already the leader (term %" PRIu64 ")",
                 self, raft_term(n->raft));
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_OK, target, msg);
        return;
    }
    if (s->transfers && s->transfers->target != target) {
        snprintf(msg, sizeof msg,
                 "a leadership transfer to node %" PRIu64 " is in progress",
                 s->transfers->target);
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE, target,
              msg);
        return;
    }
    struct admin_transfer *t = calloc(1, sizeof *t);
    if (!t) {
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE, target,
              "out of memory");
        return;
    }
    if (s->transfers) {
        /* A retry of the same transfer waits for the same outcome. */
        t->deadline = s->transfers->deadline;
    } else {
        node_clock(n);
        int rv = raft_transfer_leader(n->raft, target);
        if (rv) {
            free(t);
            reply(n, closure, data,
                  rv == RAFT_EINVAL ? RAFTKV__ADMIN_ERROR__ADMIN_UNKNOWN_NODE
                                    : RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE,
                  target, raft_strerror(rv));
            return;
        }
        t->deadline = node_now_ms() + wait_ms(n);
        rpc_logf(RPC_LOG_INFO,
                 "node %" PRIu64 ": handing leadership to node %" PRIu64
                 " (asked by %s, trace %016llx)",
                 self, target, rpc_call_peer(data),
                 (unsigned long long)rpc_call_trace_id(data));
        node_schedule_turn(n);
    }
    t->target = target;
    t->closure = closure;
    t->closure_data = data;
    t->next = s->transfers;
    s->transfers = t;
}

/* Answer the TransferLeader calls whose outcome is known (sweep timer). */
static void admin_sweep(struct kv_node *n, enum node_event ev, void *arg)
{
    (void)ev;
    struct kv_services *s = arg;
    if (!s->transfers) {
        return;
    }
    uint64_t now = node_now_ms(), self = n->cfg.id;
    uint64_t leader = raft_leader(n->raft), term = raft_term(n->raft);
    bool leading = raft_role(n->raft) == RAFT_LEADER;
    struct admin_transfer **pp = &s->transfers;
    while (*pp) {
        struct admin_transfer *t = *pp;
        Raftkv__AdminError err;
        char msg[400];
        if (leader == t->target) {
            err = RAFTKV__ADMIN_ERROR__ADMIN_OK;
            snprintf(msg, sizeof msg,
                     "node %" PRIu64 " is the leader now (term %" PRIu64 ")",
                     leader, term);
        } else if (!leading && leader) {
            err = RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE;
            snprintf(msg, sizeof msg,
                     "leadership moved to node %" PRIu64 " (term %" PRIu64
                     "), not to node %" PRIu64,
                     leader, term, t->target);
        } else if (now >= t->deadline) {
            err = RAFTKV__ADMIN_ERROR__ADMIN_TIMEOUT;
            if (leading) {
                snprintf(msg, sizeof msg,
                         "node %" PRIu64 " did not take over within %" PRIu64
                         " ms (down, unreachable or too far behind); node "
                         "%" PRIu64 " stays the leader and takes writes again",
                         t->target, wait_ms(n), self);
            } else {
                snprintf(msg, sizeof msg,
                         "node %" PRIu64 " did not take over within %" PRIu64
                         " ms; node %" PRIu64
                         " stepped down and knows no leader yet (see kvctl "
                         "status)",
                         t->target, wait_ms(n), self);
            }
        } else {
            pp = &t->next;
            continue;
        }
        *pp = t->next;
        rpc_logf(
            err == RAFTKV__ADMIN_ERROR__ADMIN_OK ? RPC_LOG_INFO : RPC_LOG_WARN,
            "node %" PRIu64 ": leadership transfer: %s (trace %016llx)", self,
            msg, (unsigned long long)rpc_call_trace_id(t->closure_data));
        reply(n, t->closure, t->closure_data, err, t->target, msg);
        free(t);
    }
}

/* Answer every waiting TransferLeader call with UNAVAILABLE (shutdown). */
static void admin_fail_all(struct kv_node *n, enum node_event ev, void *arg)
{
    (void)ev;
    struct kv_services *s = arg;
    const char *why = "the node is shutting down";
    if (!s->transfers) {
        return;
    }
    while (s->transfers) {
        struct admin_transfer *t = s->transfers;
        s->transfers = t->next;
        reply(n, t->closure, t->closure_data,
              RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE, t->target, why);
        free(t);
    }
    /* Let the answers leave before the connections close. */
    rpc_server_flush(n->server);
}

/* Leader only: set r->progress, valid until the next call. */
static void status_progress(struct kv_node *n, Raftkv__StatusReply *r)
{
    /* One loop thread, and the caller packs the reply at once. */
    static Raftkv__ReplicaProgress items[KV_MAX_PEERS];
    static Raftkv__ReplicaProgress *ptrs[KV_MAX_PEERS];
    static char addrs[KV_MAX_PEERS][300];
    const struct raft_member *m;
    size_t nm = raft_members(n->raft, &m);
    size_t k = 0;
    for (size_t i = 0; i < nm && k < KV_MAX_PEERS; i++) {
        struct raft_peer_info pi;
        uint64_t id = m[i].id;
        if (raft_peer_info(n->raft, id, &pi) != 0) {
            continue;
        }
        raftkv__replica_progress__init(&items[k]);
        snprintf(addrs[k], sizeof addrs[k], "%s", node_peer_addr(n, id));
        items[k].node_id = id;
        items[k].address = addrs[k];
        items[k].match_index = pi.match;
        items[k].ack_age_ms = pi.rounds_unacked * n->cfg.heartbeat_ms;
        items[k].learner = !m[i].voter;
        ptrs[k] = &items[k];
        k++;
    }
    r->n_progress = k;
    r->progress = k ? ptrs : NULL;
}

static void handle_ping(Raftkv__AdminService_Service *svc,
                        const Raftkv__PingArgs *a,
                        Raftkv__PingReply_Closure closure,
                        void *data)
{
    struct kv_node *n = services_of(svc, admin_svc)->node;
    Raftkv__PingReply r = RAFTKV__PING_REPLY__INIT;
    r.payload = a->payload;
    r.node_id = n->cfg.id;
    closure(&r, data);
}

static void handle_status(Raftkv__AdminService_Service *svc,
                          const Raftkv__StatusArgs *a,
                          Raftkv__StatusReply_Closure closure,
                          void *data)
{
    (void)a;
    struct kv_node *n = services_of(svc, admin_svc)->node;
    Raftkv__StatusReply r = RAFTKV__STATUS_REPLY__INIT;
    char self[300], leader[300];
    uint64_t leader_id = raft_leader(n->raft);
    snprintf(self, sizeof self, "%s", node_peer_addr(n, n->cfg.id));
    snprintf(leader, sizeof leader, "%s",
             leader_id ? node_peer_addr(n, leader_id) : "");
    r.node_id = n->cfg.id;
    r.address = self;
    r.role = (char *)raft_role_name(raft_role(n->raft));
    r.term = raft_term(n->raft);
    r.leader_id = leader_id;
    r.leader_address = leader;
    r.commit_index = raft_commit_index(n->raft);
    r.applied_index = n->applied;
    r.last_log_index = raft_last_index(n->raft);
    r.snapshot_index = raft_snapshot_index(n->raft);
    r.cluster_id = n->cluster_id;
    r.disk_full = n->disk_full;
    status_progress(n, &r);
    closure(&r, data);
}

/* ------------------------------------------------------- membership */

/* The members of the latest configuration, as Member messages (valid
 * until the next call: one loop thread, packed at once). */
static void fill_members(struct kv_node *n,
                         Raftkv__Member ***out,
                         size_t *n_out)
{
    static Raftkv__Member items[KV_MAX_PEERS];
    static Raftkv__Member *ptrs[KV_MAX_PEERS];
    static char peer[KV_MAX_PEERS][300], client[KV_MAX_PEERS][300];
    const struct raft_member *m;
    size_t k = raft_members(n->raft, &m);
    for (size_t i = 0; i < k && i < KV_MAX_PEERS; i++) {
        raftkv__member__init(&items[i]);
        items[i].id = m[i].id;
        items[i].learner = !m[i].voter;
        node_member_addr(n, m[i].id, true, peer[i], sizeof peer[i]);
        node_member_addr(n, m[i].id, false, client[i], sizeof client[i]);
        items[i].peer_address = peer[i];
        items[i].address = client[i];
        ptrs[i] = &items[i];
    }
    *out = k ? ptrs : NULL;
    *n_out = k;
}

static void handle_member_list(Raftkv__AdminService_Service *svc,
                               const Raftkv__MemberListArgs *a,
                               Raftkv__MemberListReply_Closure closure,
                               void *data)
{
    (void)a;
    struct kv_node *n = services_of(svc, admin_svc)->node;
    Raftkv__MemberListReply r = RAFTKV__MEMBER_LIST_REPLY__INIT;
    char leader[300];
    uint64_t leader_id = raft_leader(n->raft);
    snprintf(leader, sizeof leader, "%s",
             leader_id ? node_peer_addr(n, leader_id) : "");
    r.node_id = n->cfg.id;
    r.leader_id = leader_id;
    r.leader_address = leader;
    r.cluster_id = n->cluster_id;
    r.committed = raft_conf_index(n->raft) <= raft_commit_index(n->raft);
    r.removed = n->removed;
    r.n_removed = n->n_removed;
    fill_members(n, &r.members, &r.n_members);
    closure(&r, data);
}

/* A MemberChange call waiting for its configuration entry. */
struct member_call
{
    struct node_write_waiter w; /* first: the node hands it back */
    Raftkv__MemberChangeReply_Closure closure;
    void *closure_data;
    uint64_t id;
    int type;
};

static void member_reply(struct kv_node *n,
                         Raftkv__MemberChangeReply_Closure closure,
                         void *data,
                         Raftkv__AdminError err,
                         const char *msg)
{
    Raftkv__MemberChangeReply r = RAFTKV__MEMBER_CHANGE_REPLY__INIT;
    char addr[300];
    uint64_t leader = raft_leader(n->raft);
    snprintf(addr, sizeof addr, "%s", leader ? node_peer_addr(n, leader) : "");
    r.error = err;
    r.message = (char *)msg;
    r.node_id = n->cfg.id;
    r.leader_id = leader;
    r.leader_address = addr;
    fill_members(n, &r.members, &r.n_members);
    closure(&r, data);
}

static const char *change_name(int type)
{
    switch (type) {
        case RAFTKV__MEMBER_CHANGE_TYPE__MEMBER_ADD:
            return "added as a learner";
        case RAFTKV__MEMBER_CHANGE_TYPE__MEMBER_PROMOTE:
            return "promoted to voter";
        case RAFTKV__MEMBER_CHANGE_TYPE__MEMBER_REMOVE:
            return "removed";
        default:
            return "updated";
    }
}

static void member_done(struct kv_node *n,
                        struct node_write_waiter *w,
                        int err,
                        const struct kv_outcome *o,
                        uint64_t leader,
                        const char *msg)
{
    (void)o;
    (void)leader;
    struct member_call *c = (struct member_call *)w;
    char text[400];
    Raftkv__AdminError e = RAFTKV__ADMIN_ERROR__ADMIN_OK;
    if (err == RAFTKV__KV_ERROR__KV_OK) {
        snprintf(text, sizeof text, "node %" PRIu64 " %s", c->id,
                 change_name(c->type));
        rpc_logf(RPC_LOG_INFO, "node %llu: membership: %s (trace %016llx)",
                 (unsigned long long)n->cfg.id, text,
                 (unsigned long long)rpc_call_trace_id(c->closure_data));
    } else {
        e = err == RAFTKV__KV_ERROR__KV_TIMEOUT
                ? RAFTKV__ADMIN_ERROR__ADMIN_TIMEOUT
                : RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE;
        snprintf(text, sizeof text,
                 "the change of node %" PRIu64
                 " is not known to be applied: "
                 "%s (see kvctl member list)",
                 c->id, msg ? msg : "");
    }
    member_reply(n, c->closure, c->closure_data, e, text);
    free(c);
}

/* Is learner @id close enough to the leader to vote (within a second or
 * so of entries)? */
static bool caught_up(struct kv_node *n, uint64_t id, char *why, size_t len)
{
    struct raft_peer_info pi;
    if (raft_peer_info(n->raft, id, &pi) != 0) {
        snprintf(why, len, "node %" PRIu64 " is not a member", id);
        return false;
    }
    uint64_t last = raft_last_index(n->raft);
    if (pi.rounds_unacked > 2 || pi.match + 1000 < last ||
        pi.match < raft_conf_index(n->raft)) {
        snprintf(why, len,
                 "node %" PRIu64
                 " has not caught up yet (it holds up to "
                 "entry %" PRIu64 " of %" PRIu64
                 "%s): start it (kvserver --join) and try again",
                 id, pi.match, last,
                 pi.rounds_unacked > 2 ? ", and does not answer" : "");
        return false;
    }
    return true;
}

static void handle_member_change(Raftkv__AdminService_Service *svc,
                                 const Raftkv__MemberChangeArgs *a,
                                 Raftkv__MemberChangeReply_Closure closure,
                                 void *data)
{
    struct kv_node *n = services_of(svc, admin_svc)->node;
    char why[600];
    char ctx[MEMBER_CTX_MAX];
    size_t ctx_len = 0;
    Raftkv__AdminError bad = RAFTKV__ADMIN_ERROR__ADMIN_BAD_REQUEST;
    if (a->id == 0 || a->id > INT64_MAX) {
        member_reply(n, closure, data, bad, "a node id is 1 to 2^63-1");
        return;
    }
    if (raft_role(n->raft) != RAFT_LEADER) {
        uint64_t leader = raft_leader(n->raft);
        snprintf(why, sizeof why, "node %llu is not the leader%s",
                 (unsigned long long)n->cfg.id,
                 leader ? "; ask the leader" : " and knows of none");
        member_reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_NOT_LEADER,
                     why);
        return;
    }
    if (!n->cfg.peer_secret_file &&
        a->type == RAFTKV__MEMBER_CHANGE_TYPE__MEMBER_ADD) {
        member_reply(n, closure, data, bad,
                     "this cluster runs without --peer-secret-file, so no "
                     "other node can prove it belongs: restart its nodes "
                     "with a secret first");
        return;
    }
    struct raft_change c = {.id = a->id};
    switch (a->type) {
        case RAFTKV__MEMBER_CHANGE_TYPE__MEMBER_ADD:
        case RAFTKV__MEMBER_CHANGE_TYPE__MEMBER_UPDATE: {
            char host[256];
            uint16_t port;
            const char *peer = a->peer_address ? a->peer_address : "";
            const char *client = a->address ? a->address : "";
            if (!members_split_addr(peer, host, sizeof host, &port) ||
                !members_split_addr(client, host, sizeof host, &port)) {
                member_reply(n, closure, data, bad,
                             "give the node's peer address and client "
                             "address, each HOST:PORT");
                return;
            }
            ctx_len = members_ctx_format(ctx, sizeof ctx, peer, client);
            if (!ctx_len) {
                member_reply(n, closure, data, bad, "addresses too long");
                return;
            }
            c.type = a->type == RAFTKV__MEMBER_CHANGE_TYPE__MEMBER_ADD
                         ? RAFT_CHANGE_ADD_LEARNER
                         : RAFT_CHANGE_UPDATE;
            c.ctx = ctx;
            c.ctx_len = ctx_len;
            if (c.type == RAFT_CHANGE_ADD_LEARNER && node_removed(n, a->id)) {
                snprintf(why, sizeof why,
                         "node %" PRIu64
                         " was removed from this cluster; "
                         "ids are never used again: add the host under a "
                         "new id",
                         a->id);
                member_reply(n, closure, data, bad, why);
                return;
            }
            break;
        }
        case RAFTKV__MEMBER_CHANGE_TYPE__MEMBER_PROMOTE:
            c.type = RAFT_CHANGE_PROMOTE;
            if (is_member(n, a->id) && !raft_is_voter(n->raft, a->id) &&
                !caught_up(n, a->id, why, sizeof why)) {
                member_reply(n, closure, data,
                             RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE, why);
                return;
            }
            break;
        case RAFTKV__MEMBER_CHANGE_TYPE__MEMBER_REMOVE:
            c.type = RAFT_CHANGE_REMOVE;
            break;
        default:
            member_reply(n, closure, data, bad, "unknown change");
            return;
    }
    struct member_call *mc = calloc(1, sizeof *mc);
    if (!mc) {
        member_reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE,
                     "out of memory");
        return;
    }
    mc->w.done = member_done;
    mc->closure = closure;
    mc->closure_data = data;
    mc->id = a->id;
    mc->type = a->type;
    char raft_why[300];
    int rv = node_propose_change(n, &c, &mc->w, raft_why, sizeof raft_why);
    if (rv) {
        free(mc);
        char ids[280];
        list_members(n, ids, sizeof ids);
        snprintf(why, sizeof why, "%.290s (members: %s)", raft_why, ids);
        member_reply(n, closure, data,
                     rv == RAFT_EINVAL ? bad
                     : rv == RAFT_NOTLEADER
                         ? RAFTKV__ADMIN_ERROR__ADMIN_NOT_LEADER
                         : RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE,
                     why);
        return;
    }
    rpc_logf(RPC_LOG_INFO,
             "node %llu: membership: proposing node %" PRIu64
             " %s (asked by %s, trace %016llx)",
             (unsigned long long)n->cfg.id, a->id, change_name(a->type),
             rpc_call_peer(data), (unsigned long long)rpc_call_trace_id(data));
}

int admin_service_init(struct kv_services *s)
{
    Raftkv__AdminService_Service admin = {
        RAFTKV__ADMIN_SERVICE__BASE_INIT,
        handle_ping,
        handle_status,
        NULL, /* Fault: fault.c */
        handle_transfer_leader,
        NULL, /* SnapshotRead: backup.c */
        handle_member_list,
        handle_member_change,
    };
    s->admin_svc = admin;
    if (node_subscribe(s->node, NODE_EV_SWEEP, admin_sweep, s) != 0 ||
        node_subscribe(s->node, NODE_EV_STOPPING, admin_fail_all, s) != 0) {
        return -1;
    }
    return 0;
}
