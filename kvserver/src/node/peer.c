/* peer.c: Raft RPCs between nodes: wire messages to and from the core. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "node.h"

#define node_of(svc, field) \
    ((struct kv_node *)((char *)(svc)-offsetof(struct kv_node, field)))

/* One outgoing Raft request. */
struct out_call
{
    struct kv_node *n; /* the node */
    uint64_t peer;     /* whom it went to */
};

static struct kv_peer *find_peer(struct kv_node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_peers; i++) {
        if (n->peers[i].id == id) {
            return &n->peers[i];
        }
    }
    return NULL;
}

/* ------------------------------------------------------ replies to us */

/* Step a response from a peer into the core. */
static void step_response(struct out_call *c, struct raft_message *m)
{
    struct kv_node *n = c->n;
    if (!n->stopping && !n->frozen) {
        m->from = c->peer;
        m->to = n->cfg.id;
        node_clock(n);
        raft_step(n->raft, m);
        node_schedule_turn(n);
    }
    free(c);
}

static void unreachable(struct out_call *c)
{
    struct kv_node *n = c->n;
    if (!n->stopping && !n->frozen) {
        node_clock(n);
        raft_report_unreachable(n->raft, c->peer);
        node_schedule_turn(n);
    }
    free(c);
}

static void on_vote_reply(const Raftkv__RequestVoteReply *r, void *data)
{
    if (!r) {
        unreachable(data);
        return;
    }
    struct raft_message m = {.type = RAFT_MSG_VOTE_RESP, .term = r->term};
    m.u.vote_resp.pre_vote = r->pre_vote;
    m.u.vote_resp.granted = r->vote_granted;
    step_response(data, &m);
}

static void on_append_reply(const Raftkv__AppendEntriesReply *r, void *data)
{
    if (!r) {
        unreachable(data);
        return;
    }
    struct raft_message m = {.type = RAFT_MSG_APPEND_RESP, .term = r->term};
    m.u.append_resp.success = r->success;
    m.u.append_resp.index = r->index;
    m.u.append_resp.conflict_term = r->conflict_term;
    m.u.append_resp.conflict_index = r->conflict_index;
    m.u.append_resp.last_index = r->last_log_index;
    m.u.append_resp.seq = r->seq;
    step_response(data, &m);
}

static void on_snapshot_reply(const Raftkv__InstallSnapshotReply *r, void *data)
{
    if (!r) {
        unreachable(data);
        return;
    }
    struct out_call *c = data;
    struct kv_peer *p = find_peer(c->n, c->peer);
    if (p) {
        if (p->chunk_answered < p->stream_began) {
            rpc_logf(RPC_LOG_DEBUG,
                     "node %llu: node %llu answers the snapshot stream "
                     "(state at index %llu)",
                     (unsigned long long)c->n->cfg.id,
                     (unsigned long long)p->id,
                     (unsigned long long)p->stream_for);
        }
        p->chunk_answered = node_now_ms();
    }
    struct raft_message m = {.type = RAFT_MSG_SNAPSHOT_RESP, .term = r->term};
    m.u.snapshot_resp.index = r->index;
    m.u.snapshot_resp.next_offset = r->next_offset;
    m.u.snapshot_resp.installed = r->installed;
    m.u.snapshot_resp.last_index = r->last_log_index;
    m.u.snapshot_resp.seq = r->seq;
    step_response(data, &m);
}

static void on_timeout_now_reply(const Raftkv__TimeoutNowReply *r, void *data)
{
    if (!r) {
        unreachable(data);
        return;
    }
    struct raft_message m = {.type = RAFT_MSG_TIMEOUT_NOW_RESP,
                             .term = r->term};
    step_response(data, &m);
}

/* ------------------------------------------------- snapshot streaming */

void peer_close_streams(struct kv_node *n)
{
    for (size_t i = 0; i < n->n_peers; i++) {
        struct kv_peer *p = &n->peers[i];
        if (p->stream_open) {
            snap_stream_close(&p->stream);
            p->stream_open = false;
        }
    }
}

bool peer_sending_snapshot(struct kv_node *n, uint64_t keep_from)
{
    uint64_t now = node_now_ms();
    for (size_t i = 0; i < n->n_peers; i++) {
        const struct kv_peer *p = &n->peers[i];
        struct raft_peer_info info;
        if (!p->stream_used || now - p->stream_used >= PEER_SNAPSHOT_HOLD_MS ||
            raft_peer_info(n->raft, p->id, &info) != 0) {
            continue;
        }
        /* It still needs the snapshot (it stores nothing up to its index)
         * or the entries after it that the compaction would drop. */
        if (info.match >= p->stream_for && info.match >= keep_from) {
            continue;
        }
        /* It takes part: it answers; or it answers this stream's chunks
         * (writing a large one may keep it silent a while); or it
         * answered this stream and is installing the final chunk (silent
         * while it syncs). */
        bool answered = p->chunk_answered >= p->stream_began;
        bool final_out = p->final_sent >= p->stream_began;
        bool streaming = answered && !final_out &&
                         now - p->chunk_answered < PEER_SNAPSHOT_HOLD_QUIET_MS;
        bool installing = answered && final_out &&
                          p->final_sent > p->chunk_answered &&
                          info.rounds_unacked <= PEER_SNAPSHOT_HOLD_ROUNDS;
        if (info.rounds_unacked <= PEER_SNAPSHOT_HOLD_QUIET || streaming ||
            installing) {
            return true;
        }
    }
    return false;
}

/* A new name for a production of the snapshot's bytes: chunks of an
 * earlier one, still on the way, are then never staged with this one's. */
static uint64_t new_stream_id(void)
{
    static uint64_t counter;
    uint64_t id = 0;
    if (getrandom(&id, sizeof id, GRND_NONBLOCK) != (ssize_t)sizeof id) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        id = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30;
    }
    id ^= ++counter;
    return id ? id : 1;
}

/* Fill a chunk of the state for a follower: the next one, the last one
 * again (a lost chunk), or the first of a fresh stream. */
static int fill_chunk(struct kv_node *n,
                      struct kv_peer *p,
                      const struct raft_snapshot *s,
                      Raftkv__InstallSnapshotArgs *a)
{
    size_t max = s->max_len ? s->max_len : 1u << 20;
    uint64_t off = s->offset;
    if (p->chunk_valid && p->stream_for == s->index && off == p->chunk_offset) {
        goto fill;
    }
    if (!(p->stream_open && p->stream_for == s->index &&
          off == p->stream.offset)) {
        if (p->stream_open) {
            snap_stream_close(&p->stream);
            p->stream_open = false;
        }
        int rv = snap_stream_open(&n->store, &p->stream);
        if (rv) {
            rpc_logf(RPC_LOG_ERROR, "node %llu: snapshot for %llu: %s",
                     (unsigned long long)n->cfg.id, (unsigned long long)p->id,
                     n->store.errmsg);
            return -1;
        }
        p->stream_open = true;
        p->stream_for = s->index;
        p->stream_id = new_stream_id();
        p->stream_began = node_now_ms();
        off = 0;
        /* A follower that stays unreachable gets a fresh stream after each
         * compaction; say so once every 10 s, not each time. */
        uint64_t now = node_now_ms();
        bool quiet = now - p->stream_logged < 10000;
        if (!quiet) {
            p->stream_logged = now;
        }
        rpc_logf(quiet ? RPC_LOG_DEBUG : RPC_LOG_INFO,
                 "node %llu: sending a snapshot (state at index %llu) to "
                 "node %llu",
                 (unsigned long long)n->cfg.id,
                 (unsigned long long)p->stream.index,
                 (unsigned long long)p->id);
    }
    uint8_t *buf = realloc(p->chunk, max);
    if (!buf) {
        return -1;
    }
    p->chunk = buf;
    size_t len;
    bool done;
    if (snap_stream_read(&n->store, &p->stream, buf, max, &len, &done) != 0) {
        snap_stream_close(&p->stream);
        p->stream_open = false;
        p->chunk_valid = false;
        return -1;
    }
    p->chunk_len = len;
    p->chunk_offset = off;
    p->chunk_done = done;
    p->chunk_valid = true;
    if (done) {
        snap_stream_close(&p->stream);
        p->stream_open = false;
        n->metrics.snapshots_sent++;
    }
fill:
    p->stream_used = node_now_ms();
    if (p->chunk_done) {
        p->final_sent = p->stream_used;
    }
    a->offset = p->chunk_offset;
    a->data.data = p->chunk;
    a->data.len = p->chunk_len;
    a->done = p->chunk_done;
    a->crc32c = kv_crc32c(0, p->chunk, p->chunk_len);
    a->stream_id = p->stream_id;
    return 0;
}

/* ------------------------------------------------- requests we send */

void peer_send(struct kv_node *n, const struct raft_message *m)
{
    struct kv_peer *p = find_peer(n, m->to);
    if (!p) {
        return;
    }
    struct out_call *c = malloc(sizeof *c);
    if (!c) {
        return;
    }
    c->n = n;
    c->peer = p->id;
    switch (m->type) {
        case RAFT_MSG_VOTE: {
            Raftkv__RequestVoteArgs a = RAFTKV__REQUEST_VOTE_ARGS__INIT;
            a.cluster_id = n->cluster_id;
            a.from = n->cfg.id;
            a.to = p->id;
            a.term = m->term;
            a.last_log_index = m->u.vote.last_index;
            a.last_log_term = m->u.vote.last_term;
            a.pre_vote = m->u.vote.pre_vote;
            a.leader_transfer = m->u.vote.transfer;
            raftkv__raft_service__request_vote(p->raft, &a, on_vote_reply, c);
            return;
        }
        case RAFT_MSG_APPEND: {
            const struct raft_append *ap = &m->u.append;
            Raftkv__AppendEntriesArgs a = RAFTKV__APPEND_ENTRIES_ARGS__INIT;
            Raftkv__Entry *ents = NULL, **ptrs = NULL;
            if (ap->n_entries) {
                ents = malloc(ap->n_entries * sizeof *ents);
                ptrs = malloc(ap->n_entries * sizeof *ptrs);
                if (!ents || !ptrs) {
                    free(ents);
                    free(ptrs);
                    free(c);
                    return;
                }
            }
            for (size_t i = 0; i < ap->n_entries; i++) {
                const struct raft_entry *e = &ap->entries[i];
                Raftkv__Entry init = RAFTKV__ENTRY__INIT;
                ents[i] = init;
                ents[i].term = e->term;
                ents[i].index = e->index;
                ents[i].type = e->type == RAFT_ENTRY_NOOP
                                   ? RAFTKV__ENTRY_TYPE__ENTRY_NOOP
                               : e->type == RAFT_ENTRY_CONFIG
                                   ? RAFTKV__ENTRY_TYPE__ENTRY_CONFIG
                                   : RAFTKV__ENTRY_TYPE__ENTRY_NORMAL;
                ents[i].data.data = (uint8_t *)e->data;
                ents[i].data.len = e->len;
                ptrs[i] = &ents[i];
            }
            a.cluster_id = n->cluster_id;
            a.from = n->cfg.id;
            a.to = p->id;
            a.term = m->term;
            a.prev_log_index = ap->prev_index;
            a.prev_log_term = ap->prev_term;
            a.leader_commit = ap->commit;
            a.seq = ap->seq;
            a.n_entries = ap->n_entries;
            a.entries = ptrs;
            raftkv__raft_service__append_entries(p->raft, &a, on_append_reply,
                                                 c);
            free(ents);
            free(ptrs);
            return;
        }
        case RAFT_MSG_SNAPSHOT: {
            const struct raft_snapshot *s = &m->u.snapshot;
            Raftkv__InstallSnapshotArgs a = RAFTKV__INSTALL_SNAPSHOT_ARGS__INIT;
            if (fill_chunk(n, p, s, &a) != 0) {
                free(c);
                return;
            }
            a.cluster_id = n->cluster_id;
            a.from = n->cfg.id;
            a.to = p->id;
            a.term = m->term;
            a.last_included_index = s->index;
            a.last_included_term = s->term;
            a.seq = s->seq;
            a.conf.data = (uint8_t *)s->conf;
            a.conf.len = s->conf_len;
            raftkv__raft_service__install_snapshot(p->raft, &a,
                                                   on_snapshot_reply, c);
            return;
        }
        case RAFT_MSG_TIMEOUT_NOW: {
            Raftkv__TimeoutNowArgs a = RAFTKV__TIMEOUT_NOW_ARGS__INIT;
            a.cluster_id = n->cluster_id;
            a.from = n->cfg.id;
            a.to = p->id;
            a.term = m->term;
            raftkv__raft_service__timeout_now(p->raft, &a, on_timeout_now_reply,
                                              c);
            return;
        }
        default:
            free(c); /* responses go through peer_respond */
            return;
    }
}

/* ------------------------------------------------ requests we receive */

static void list_remove(struct kv_node *n, struct kv_incoming *in)
{
    if (in->prev) {
        in->prev->next = in->next;
    } else {
        n->incoming = in->next;
    }
    if (in->next) {
        in->next->prev = in->prev;
    }
}

/* Check a request's cluster and addressee; answer it if wrong. */
static bool accept_request(struct kv_node *n,
                           uint64_t cluster_id,
                           uint64_t from,
                           uint64_t to,
                           void *closure_data)
{
    char why[200];
    uint64_t proven = rpc_call_peer_id(closure_data);
    if (from != proven) {
        /* A member may speak only for itself. */
        snprintf(why, sizeof why,
                 "the connection proved node %llu but the message says node "
                 "%llu",
                 (unsigned long long)proven, (unsigned long long)from);
    } else if (cluster_id && n->cluster_id && cluster_id != n->cluster_id) {
        snprintf(why, sizeof why,
                 "cluster id mismatch: node %llu of cluster %016llx called "
                 "node %llu of cluster %016llx",
                 (unsigned long long)from, (unsigned long long)cluster_id,
                 (unsigned long long)n->cfg.id,
                 (unsigned long long)n->cluster_id);
    } else if (to != n->cfg.id) {
        snprintf(why, sizeof why, "request for node %llu reached node %llu",
                 (unsigned long long)to, (unsigned long long)n->cfg.id);
    } else if (node_removed(n, from)) {
        snprintf(why, sizeof why,
                 "node %llu was removed from this cluster for good",
                 (unsigned long long)from);
    } else if (n->stopping || n->frozen) {
        rpc_call_fail(closure_data, RPC_E_SHUTTING_DOWN,
                      n->frozen ? "node cannot persist" : "node stopping");
        return false;
    } else {
        return true;
    }
    static uint64_t last_warn;
    uint64_t now = node_now_ms();
    if (now - last_warn > 10000) {
        last_warn = now;
        rpc_logf(RPC_LOG_WARN, "node %llu: refused a Raft call from %s: %s",
                 (unsigned long long)n->cfg.id, rpc_call_peer(closure_data),
                 why);
    }
    rpc_call_fail(closure_data, RPC_E_BAD_REQUEST, why);
    return false;
}

static void step_request(struct kv_node *n,
                         struct raft_message *m,
                         ProtobufCClosure closure,
                         void *closure_data)
{
    struct kv_incoming *in = calloc(1, sizeof *in);
    if (!in) {
        rpc_call_fail(closure_data, RPC_E_OVERLOADED, "out of memory");
        return;
    }
    in->closure = closure;
    in->closure_data = closure_data;
    in->type = m->type;
    in->next = n->incoming;
    if (n->incoming) {
        n->incoming->prev = in;
    }
    n->incoming = in;
    m->to = n->cfg.id;
    m->cookie = (uint64_t)(uintptr_t)in;
    node_clock(n);
    int rv = raft_step(n->raft, m);
    if (rv) {
        list_remove(n, in);
        free(in);
        char why[300];
        snprintf(why, sizeof why, "%s: %s", raft_strerror(rv),
                 raft_errmsg(n->raft));
        if (rv == RAFT_EINVAL) {
            /* A malformed or impossible message (a term that cannot be
             * real): say so, at most once every 10 s. */
            static uint64_t last_warn;
            uint64_t now = node_now_ms();
            if (now - last_warn > 10000) {
                last_warn = now;
                rpc_logf(RPC_LOG_WARN,
                         "node %llu: refused a message from "
                         "node %llu: %s",
                         (unsigned long long)n->cfg.id,
                         (unsigned long long)m->from, why);
            }
        }
        rpc_call_fail(closure_data, RPC_E_BAD_REQUEST, why);
        /* Refusing may still have changed what the core must write (a
         * term raised one bounded step). */
        node_schedule_turn(n);
        return;
    }
    node_schedule_turn(n);
}

static void handle_request_vote(Raftkv__RaftService_Service *svc,
                                const Raftkv__RequestVoteArgs *a,
                                Raftkv__RequestVoteReply_Closure closure,
                                void *closure_data)
{
    struct kv_node *n = node_of(svc, raft_svc);
    if (!accept_request(n, a->cluster_id, a->from, a->to, closure_data)) {
        return;
    }
    struct raft_message m = {
        .type = RAFT_MSG_VOTE, .from = a->from, .term = a->term};
    m.u.vote.pre_vote = a->pre_vote;
    m.u.vote.transfer = a->leader_transfer;
    m.u.vote.last_index = a->last_log_index;
    m.u.vote.last_term = a->last_log_term;
    step_request(n, &m, (ProtobufCClosure)closure, closure_data);
}

static void handle_append_entries(Raftkv__RaftService_Service *svc,
                                  const Raftkv__AppendEntriesArgs *a,
                                  Raftkv__AppendEntriesReply_Closure closure,
                                  void *closure_data)
{
    struct kv_node *n = node_of(svc, raft_svc);
    if (!accept_request(n, a->cluster_id, a->from, a->to, closure_data)) {
        return;
    }
    struct raft_entry *ents = NULL;
    if (a->n_entries) {
        ents = calloc(a->n_entries, sizeof *ents);
        if (!ents) {
            rpc_call_fail(closure_data, RPC_E_OVERLOADED, "out of memory");
            return;
        }
    }
    for (size_t i = 0; i < a->n_entries; i++) {
        const Raftkv__Entry *e = a->entries[i];
        ents[i].term = e->term;
        ents[i].index = e->index;
        switch (e->type) {
            case RAFTKV__ENTRY_TYPE__ENTRY_NORMAL:
                ents[i].type = RAFT_ENTRY_NORMAL;
                break;
            case RAFTKV__ENTRY_TYPE__ENTRY_NOOP:
                ents[i].type = RAFT_ENTRY_NOOP;
                break;
            case RAFTKV__ENTRY_TYPE__ENTRY_CONFIG:
                ents[i].type = RAFT_ENTRY_CONFIG;
                break;
            default:
                ents[i].type = (enum raft_entry_type)0; /* the core refuses */
                break;
        }
        ents[i].data = e->data.len ? e->data.data : NULL;
        ents[i].len = e->data.len;
    }
    struct raft_message m = {
        .type = RAFT_MSG_APPEND, .from = a->from, .term = a->term};
    m.u.append.prev_index = a->prev_log_index;
    m.u.append.prev_term = a->prev_log_term;
    m.u.append.commit = a->leader_commit;
    m.u.append.seq = a->seq;
    m.u.append.entries = ents;
    m.u.append.n_entries = a->n_entries;
    step_request(n, &m, (ProtobufCClosure)closure, closure_data);
    free(ents);
}

/* Does the final chunk @a end what is staged (or, at offset 0, the whole
 * stream) with the stream's checksum? A chunk that does not continue the
 * staged stream is left to the core, which does not stage it. */
static bool final_chunk_fits(struct kv_node *n,
                             const Raftkv__InstallSnapshotArgs *a)
{
    struct snap_check c = {0};
    if (a->offset != 0 && n->build.lost && a->stream_id == n->build.stream) {
        return false; /* a failed write dropped what was staged */
    }
    if (a->offset != 0) {
        if (a->stream_id != n->stage_stream ||
            a->offset != n->stage_check.len) {
            return true;
        }
        c = n->stage_check;
    }
    snap_check_add(&c, a->data.data, a->data.len);
    return snap_check_ok(&c);
}

static void handle_install_snapshot(
    Raftkv__RaftService_Service *svc,
    const Raftkv__InstallSnapshotArgs *a,
    Raftkv__InstallSnapshotReply_Closure closure,
    void *closure_data)
{
    struct kv_node *n = node_of(svc, raft_svc);
    if (!accept_request(n, a->cluster_id, a->from, a->to, closure_data)) {
        return;
    }
    if (kv_crc32c(0, a->data.data, a->data.len) != a->crc32c) {
        char why[160];
        snprintf(why, sizeof why,
                 "snapshot chunk at offset %llu: checksum mismatch",
                 (unsigned long long)a->offset);
        rpc_logf(RPC_LOG_WARN, "node %llu: from node %llu: %s",
                 (unsigned long long)n->cfg.id, (unsigned long long)a->from,
                 why);
        rpc_call_fail(closure_data, RPC_E_BAD_REQUEST, why);
        return;
    }
    if (a->done && !final_chunk_fits(n, a)) {
        /* The stream is damaged (or mixed from two): the core would
         * install it. Ask for a fresh one; the staged chunks are
         * dropped when it starts. */
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: snapshot from node %llu (index %llu) fails its "
                 "stream checksum; discarding it and asking for a fresh copy",
                 (unsigned long long)n->cfg.id, (unsigned long long)a->from,
                 (unsigned long long)a->last_included_index);
        Raftkv__InstallSnapshotReply r = RAFTKV__INSTALL_SNAPSHOT_REPLY__INIT;
        /* In the sender's term (not below it), so that the answer is
         * not dropped as stale; it promises nothing. */
        r.term = a->term > raft_term(n->raft) ? a->term : raft_term(n->raft);
        r.index = a->last_included_index;
        r.next_offset = 0;
        r.last_log_index = raft_last_index(n->raft);
        r.seq = a->seq;
        closure(&r, closure_data);
        return;
    }
    struct raft_message m = {
        .type = RAFT_MSG_SNAPSHOT, .from = a->from, .term = a->term};
    m.u.snapshot.stream = a->stream_id;
    m.u.snapshot.index = a->last_included_index;
    m.u.snapshot.term = a->last_included_term;
    m.u.snapshot.offset = a->offset;
    m.u.snapshot.seq = a->seq;
    m.u.snapshot.data = a->data.data;
    m.u.snapshot.len = a->data.len;
    m.u.snapshot.done = a->done;
    m.u.snapshot.conf = a->conf.len ? a->conf.data : NULL;
    m.u.snapshot.conf_len = a->conf.len;
    step_request(n, &m, (ProtobufCClosure)closure, closure_data);
}

static void handle_timeout_now(Raftkv__RaftService_Service *svc,
                               const Raftkv__TimeoutNowArgs *a,
                               Raftkv__TimeoutNowReply_Closure closure,
                               void *closure_data)
{
    struct kv_node *n = node_of(svc, raft_svc);
    if (!accept_request(n, a->cluster_id, a->from, a->to, closure_data)) {
        return;
    }
    struct raft_message m = {
        .type = RAFT_MSG_TIMEOUT_NOW, .from = a->from, .term = a->term};
    step_request(n, &m, (ProtobufCClosure)closure, closure_data);
}

void peer_respond(struct kv_node *n, const struct raft_message *m)
{
    struct kv_incoming *in = n->incoming;
    while (in && (uint64_t)(uintptr_t)in != m->cookie) {
        in = in->next;
    }
    if (!in) {
        return; /* answered already (shutdown) */
    }
    list_remove(n, in);
    switch (m->type) {
        case RAFT_MSG_VOTE_RESP: {
            Raftkv__RequestVoteReply r = RAFTKV__REQUEST_VOTE_REPLY__INIT;
            r.term = m->term;
            r.vote_granted = m->u.vote_resp.granted;
            r.pre_vote = m->u.vote_resp.pre_vote;
            in->closure(&r.base, in->closure_data);
            break;
        }
        case RAFT_MSG_APPEND_RESP: {
            Raftkv__AppendEntriesReply r = RAFTKV__APPEND_ENTRIES_REPLY__INIT;
            r.term = m->term;
            r.success = m->u.append_resp.success;
            r.index = m->u.append_resp.index;
            r.conflict_term = m->u.append_resp.conflict_term;
            r.conflict_index = m->u.append_resp.conflict_index;
            r.last_log_index = m->u.append_resp.last_index;
            r.seq = m->u.append_resp.seq;
            in->closure(&r.base, in->closure_data);
            break;
        }
        case RAFT_MSG_SNAPSHOT_RESP: {
            Raftkv__InstallSnapshotReply r =
                RAFTKV__INSTALL_SNAPSHOT_REPLY__INIT;
            r.term = m->term;
            r.next_offset = m->u.snapshot_resp.next_offset;
            r.installed = m->u.snapshot_resp.installed;
            r.index = m->u.snapshot_resp.index;
            r.last_log_index = m->u.snapshot_resp.last_index;
            r.seq = m->u.snapshot_resp.seq;
            in->closure(&r.base, in->closure_data);
            break;
        }
        case RAFT_MSG_TIMEOUT_NOW_RESP: {
            Raftkv__TimeoutNowReply r = RAFTKV__TIMEOUT_NOW_REPLY__INIT;
            r.term = m->term;
            in->closure(&r.base, in->closure_data);
            break;
        }
        default:
            rpc_call_fail(in->closure_data, RPC_E_INTERNAL,
                          "core answered with a request type");
            break;
    }
    free(in);
}

void peer_fail_incoming(struct kv_node *n, const char *why)
{
    while (n->incoming) {
        struct kv_incoming *in = n->incoming;
        list_remove(n, in);
        rpc_call_fail(in->closure_data, RPC_E_SHUTTING_DOWN, why);
        free(in);
    }
}

/* Read a protobuf varint at *p (below end); false when cut or too long. */
static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            return true;
        }
    }
    return false;
}

/* How many top-level fields numbered @field the packed message holds, by
 * walking its tags (without unpacking anything); SIZE_MAX when the bytes
 * are not a well-formed message (unpacking then refuses them anyway). */
static size_t count_field(const uint8_t *p, size_t len, uint32_t field)
{
    const uint8_t *end = p + len;
    size_t count = 0;
    while (p < end) {
        uint64_t tag, v;
        if (!read_varint(&p, end, &tag)) {
            return SIZE_MAX;
        }
        switch (tag & 7) {
            case 0: /* varint */
                if (!read_varint(&p, end, &v)) {
                    return SIZE_MAX;
                }
                break;
            case 1: /* 64-bit */
                if (end - p < 8) {
                    return SIZE_MAX;
                }
                p += 8;
                break;
            case 2: /* length-delimited */
                if (!read_varint(&p, end, &v) || v > (uint64_t)(end - p)) {
                    return SIZE_MAX;
                }
                p += v;
                break;
            case 5: /* 32-bit */
                if (end - p < 4) {
                    return SIZE_MAX;
                }
                p += 4;
                break;
            default:
                return SIZE_MAX;
        }
        count += (tag >> 3) == field;
    }
    return count;
}

bool peer_precheck(const ProtobufCServiceDescriptor *service,
                   const ProtobufCMethodDescriptor *method,
                   const uint8_t *args,
                   size_t len,
                   char *why,
                   size_t why_len,
                   void *arg)
{
    (void)service;
    (void)arg;
    if (method->input != &raftkv__append_entries_args__descriptor) {
        return true;
    }
    size_t n = count_field(args, len, 7); /* AppendEntriesArgs.entries */
    if (n != SIZE_MAX && n > KV_PEER_MAX_ENTRIES) {
        snprintf(why, why_len,
                 "%zu entries in one AppendEntries; a leader sends at most "
                 "%u",
                 n, KV_PEER_MAX_ENTRIES);
        return false;
    }
    return true;
}

void peer_service_init(struct kv_node *n)
{
    Raftkv__RaftService_Service init = {
        RAFTKV__RAFT_SERVICE__BASE_INIT,
        handle_request_vote,
        handle_append_entries,
        handle_install_snapshot,
        handle_timeout_now,
    };
    n->raft_svc = init;
}
