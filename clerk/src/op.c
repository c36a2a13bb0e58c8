/* op.c: libclerk's one retry state machine (leader discovery, NOT_LEADER
 * hints, retries with backoff, deadlines, sessions and request ids), run
 * by an event loop; the blocking calls (ck_call) and the async API
 * (async.c) both drive it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>

#include <proto/auth.pb-c.h>
#include <proto/kv.pb-c.h>
#include <rpc/rpc.h>

#include "clerk/clerk.h"
#include "internal.h"
#include "op.h"

#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 200

static void op_step(struct ck_op *op);
static void op_answered(struct ck_op *op);
static void op_finish(struct ck_op *op, int rv);
static void write_begin(struct ck_op *op);

/* ------------------------------------------------------------ sessions */

void ck_new_client_id(uint8_t id[16])
{
    if (getrandom(id, 16, 0) != 16) {
        /* No entropy source: fall back on the clock and a counter. */
        static uint64_t counter;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t a = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30,
                 b = (uint64_t)(uintptr_t)id ^ (uint64_t)clock() ^
                     __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
        memcpy(id, &a, 8);
        memcpy(id + 8, &b, 8);
    }
}

/* An idle session of the pool (opened or not), or a new one. */
static struct ck_session *session_take(struct clerk *c)
{
    struct ck_session *s = c->sessions;
    if (s) {
        c->sessions = s->next;
        s->next = NULL;
        return s;
    }
    return calloc(1, sizeof *s);
}

static void session_put(struct clerk *c, struct ck_session *s)
{
    if (!s) {
        return;
    }
    s->next = c->sessions;
    c->sessions = s;
}

void ck_sessions_free(struct clerk *c)
{
    while (c->sessions) {
        struct ck_session *s = c->sessions;
        c->sessions = s->next;
        free(s);
    }
}

/* ------------------------------------------------------------- replies */

int ck_error_of(int kv_err)
{
    switch (kv_err) {
        case RAFTKV__KV_ERROR__KV_OK:
            return CLERK_OK;
        case RAFTKV__KV_ERROR__KV_NOT_FOUND:
            return CLERK_NOT_FOUND;
        case RAFTKV__KV_ERROR__KV_BAD_REQUEST:
            return CLERK_BAD_REQUEST;
        case RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE:
            return CLERK_VALUE_TOO_LARGE;
        case RAFTKV__KV_ERROR__KV_NO_SPACE:
            return CLERK_NO_SPACE;
        case RAFTKV__KV_ERROR__KV_SESSION_EXPIRED:
            return CLERK_SESSION_EXPIRED;
        case RAFTKV__KV_ERROR__KV_UNAUTHENTICATED:
            return CLERK_UNAUTHENTICATED;
        case RAFTKV__KV_ERROR__KV_PERMISSION_DENIED:
            return CLERK_PERMISSION_DENIED;
        case RAFTKV__KV_ERROR__KV_COMPACTED:
            return CLERK_COMPACTED;
        case RAFTKV__KV_ERROR__KV_FUTURE_REVISION:
            return CLERK_FUTURE_REVISION;
        case RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND:
            return CLERK_LEASE_NOT_FOUND;
        case RAFTKV__KV_ERROR__KV_TOO_MANY_KEYS:
            return CLERK_TOO_MANY_KEYS;
        default:
            return CLERK_INTERNAL;
    }
}

static bool take_bytes(const ProtobufCBinaryData *d, struct ck_value *v)
{
    v->data = malloc(d->len + 1);
    if (!v->data) {
        return false;
    }
    if (d->len) {
        memcpy(v->data, d->data, d->len);
    }
    ((char *)v->data)[d->len] = 0;
    v->len = d->len;
    return true;
}

bool ck_take_get(const ProtobufCMessage *m, void **out)
{
    const Raftkv__GetReply *r = (const Raftkv__GetReply *)m;
    struct ck_value *v = calloc(1, sizeof *v);
    if (!v || !take_bytes(&r->value, v)) {
        free(v);
        return false;
    }
    *out = v;
    return true;
}

bool ck_take_cas(const ProtobufCMessage *m, void **out)
{
    const Raftkv__CompareAndSwapReply *r =
        (const Raftkv__CompareAndSwapReply *)m;
    struct ck_value *v = calloc(1, sizeof *v);
    if (!v) {
        return false;
    }
    v->swapped = r->swapped;
    v->exists = r->exists;
    if (!r->swapped && r->exists && !take_bytes(&r->current_value, v)) {
        free(v);
        return false;
    }
    *out = v;
    return true;
}

void ck_drop_value(void *p)
{
    struct ck_value *v = p;
    if (v) {
        free(v->data);
        free(v);
    }
}

/* A reply: the fields every KvService reply has, found by name, and the
 * result of a final one. */
static void take_reply(struct ck_op *op, const ProtobufCMessage *m)
{
    struct answer *a = &op->a;
    const int *err = ck_field(m, "err");
    char *const *msg = ck_field(m, "message");
    Raftkv__LeaderHint *const *hint = ck_field(m, "leader");
    const uint64_t *compacted = ck_field(m, "compact_revision");
    a->replied = true;
    a->err = err ? *err : RAFTKV__KV_ERROR__KV_INTERNAL;
    if (hint && *hint) {
        snprintf(a->leader_addr, sizeof a->leader_addr, "%s",
                 (*hint)->address ? (*hint)->address : "");
    }
    snprintf(a->message, sizeof a->message, "%s", msg && *msg ? *msg : "");
    if (a->err == RAFTKV__KV_ERROR__KV_COMPACTED && compacted) {
        a->compact_revision = *compacted;
    }
    if ((a->err == RAFTKV__KV_ERROR__KV_OK ||
         a->err == RAFTKV__KV_ERROR__KV_COMPACTED) &&
        op->take && !op->take(m, &a->result)) {
        /* Out of memory here: a final answer without its result. */
        a->result = NULL;
        a->rpc_status = RPC_E_NOMEM;
    }
}

static void drop_result(struct ck_op *op)
{
    if (op->a.result && op->drop) {
        op->drop(op->a.result);
    }
    op->a.result = NULL;
}

/* ------------------------------------------------------ the op machine */

/* Free what an op holds and unlink it; the struct itself goes now, or
 * when the closure of its call in flight runs. */
static void op_release(struct ck_op *op)
{
    struct clerk *c = op->c;
    if (op->prev) {
        op->prev->next = op->next;
    } else if (c->ops == op) {
        c->ops = op->next;
    }
    if (op->next) {
        op->next->prev = op->prev;
    }
    op->prev = op->next = NULL;
    c->n_ops--;
    if (c->auth_op == op) {
        c->auth_op = NULL;
    }
    if (op->auth_waiting) {
        for (struct ck_op **p = &c->auth_waiters; *p; p = &(*p)->auth_next) {
            if (*p == op) {
                *p = op->auth_next;
                break;
            }
        }
        op->auth_waiting = false;
    }
    if (op->timer) {
        event_free(op->timer);
        op->timer = NULL;
    }
    if (op->hedge_timer) {
        event_free(op->hedge_timer);
        op->hedge_timer = NULL;
    }
    drop_result(op);
    if (op->sess && !op->open_session) {
        if (c->closing) {
            free(op->sess);
        } else {
            session_put(c, op->sess);
        }
    }
    op->sess = NULL;
    if (op->owned && op->args) {
        ProtobufCBinaryData *cid = ck_field(op->args, "client_id");
        if (cid) {
            *cid = op->cid_orig;
        }
        protobuf_c_message_free_unpacked(op->args, NULL);
    }
    op->args = NULL;
    if (op->in_rpc || op->hedge_in_rpc) {
        op->zombie = true; /* freed by the last closure */
    } else {
        free(op);
    }
}

static struct ck_op *op_new(struct clerk *c)
{
    struct ck_op *op = calloc(1, sizeof *op);
    if (!op) {
        return NULL;
    }
    op->c = c;
    /* One id for every try of the op, on whichever node: splitmix64 of
     * the handle's counter from a random start. */
    if (!c->trace_next) {
        uint8_t seed[16];
        ck_new_client_id(seed); /* (random bytes) */
        memcpy(&c->trace_next, seed, sizeof c->trace_next);
    }
    op->trace_id = rpc_trace_id_next(&c->trace_next);
    op->next = c->ops;
    if (c->ops) {
        c->ops->prev = op;
    }
    c->ops = op;
    c->n_ops++;
    return op;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Where a stale read goes first: a server not measured yet (so that each
 * gets measured), else the one that has answered fastest lately. */
static size_t fastest_server(const struct clerk *c)
{
    size_t best = c->leader < c->n ? c->leader : 0;
    for (size_t i = 0; i < c->n; i++) {
        uint32_t l = c->servers[i].latency_us, b = c->servers[best].latency_us;
        if (b && (!l || l < b)) {
            best = i;
        }
    }
    return best;
}

static bool is_stale_read(const struct ck_op *op)
{
    return !op->write && op->c->read_mode != CLERK_READ_LINEARIZABLE &&
           op->args && ck_field(op->args, "stale_ok");
}

/* A stale read's answer took @us: kept for the hedge's p95. */
static void note_stale_latency(struct clerk *c, uint64_t us)
{
    c->stale_us[c->stale_pos] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    c->stale_pos = (c->stale_pos + 1) % CK_STALE_SAMPLES;
    if (c->stale_n < CK_STALE_SAMPLES) {
        c->stale_n++;
    }
}

/* How long a stale read waits before its backup request: the p95 of the
 * handle's recent stale reads, at least 1 ms; 0 while it has too few. */
static uint64_t hedge_after_us(const struct clerk *c)
{
    if (c->stale_n < CK_STALE_MIN) {
        return 0;
    }
    uint32_t v[CK_STALE_SAMPLES];
    size_t n = c->stale_n;
    for (size_t i = 0; i < n; i++) { /* (insertion sort: 64 at most) */
        uint32_t x = c->stale_us[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] > x; j--) {
            v[j] = v[j - 1];
        }
        v[j] = x;
    }
    uint64_t p95 = v[(n * 95) / 100 < n ? (n * 95) / 100 : n - 1];
    return p95 < 1000 ? 1000 : p95;
}

/* A fresh run to a final answer or the deadline (as each run of the
 * blocking calls had: an OpenSession and the write each get one). */
static void run_begin(struct ck_op *op)
{
    struct clerk *c = op->c;
    op->deadline_ms = c->deadline_ms;
    op->deadline = ck_now_ms() + c->deadline_ms;
    op->backoff = BACKOFF_MIN_MS;
    op->i = c->leader < c->n ? c->leader : 0;
    if (is_stale_read(op)) {
        op->i = fastest_server(c);
    }
    op->failures = op->hops = op->unknown_method = 0;
    op->maybe_applied = op->maybe_started = op->reauthenticated = false;
    op->refused_run = 0;
    memset(op->seen, 0, sizeof op->seen);
    snprintf(op->last, sizeof op->last, "no server tried");
    op_step(op);
}

/* What the servers did during an op, in one clause: which could not be
 * reached, and whether those that answered can make a majority. */
static void seen_summary(const struct ck_op *op, char *out, size_t len)
{
    const struct clerk *c = op->c;
    size_t refused = 0, silent = 0, up = 0, no_leader = 0, other = 0;
    for (size_t i = 0; i < c->n; i++) {
        refused += op->seen[i] == CK_SEEN_REFUSED;
        other += op->seen[i] == CK_SEEN_OTHER_CLUSTER;
        silent += op->seen[i] == CK_SEEN_SILENT;
        up += op->seen[i] >= CK_SEEN_BUSY;
        no_leader += op->seen[i] == CK_SEEN_NO_LEADER;
    }
    size_t unknown = c->n - refused - silent - up - other,
           majority = c->n / 2 + 1;
    if (refused == c->n) {
        ck_refused_text(c, out, len);
    } else if (up + unknown < majority) {
        snprintf(out, len,
                 "quorum lost: %zu of %zu servers answer (%zu refuse "
                 "connections, %zu do not answer, %zu answer for another "
                 "cluster); a leader needs a majority of %zu",
                 up, c->n, refused, silent, other, majority);
    } else if (no_leader) {
        snprintf(out, len,
                 "%zu of %zu servers answer, %zu of them know no leader (an "
                 "election under way, or no majority reachable from them)",
                 up, c->n, no_leader);
    } else {
        snprintf(out, len, "%zu of %zu servers answer", up, c->n);
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ck_op *op = arg;
    struct clerk *c = op->c;
    c->depth++;
    op_step(op);
    c->depth--;
}

/* Wait @backoff ms (no later than the deadline) before going on, then
 * twice as long next time, up to BACKOFF_MAX_MS. */
static void back_off(struct ck_op *op)
{
    uint64_t t = ck_now_ms(), left = t < op->deadline ? op->deadline - t : 0,
             ms = op->backoff < left ? op->backoff : left;
    op->backoff =
        op->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : op->backoff * 2;
    if (!op->timer) {
        op->timer = evtimer_new(op->c->base, on_timer, op);
        if (!op->timer) {
            snprintf(op->errmsg, sizeof op->errmsg, "out of memory");
            op_finish(op, CLERK_NOMEM);
            return;
        }
    }
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(op->timer, &tv);
}

/* An answer from @s to a call sent at @sent_us: a moving average (1/8 of
 * each new answer) of how long the server takes. Returns how long this
 * one took, in us. */
static uint64_t note_latency(struct ck_server *s, uint64_t sent_us)
{
    uint64_t took = now_us() - sent_us;
    if (took > UINT32_MAX / 2) {
        took = UINT32_MAX / 2;
    }
    s->latency_us = s->latency_us
                        ? (uint32_t)((7ull * s->latency_us + took) / 8)
                        : (uint32_t)(took ? took : 1);
    return took;
}

static void on_reply(const ProtobufCMessage *m, void *data)
{
    struct ck_op *op = data;
    op->in_rpc = false;
    if (op->zombie) {
        if (!op->hedge_in_rpc) {
            free(op);
        }
        return;
    }
    struct clerk *c = op->c;
    c->depth++;
    if (op->hedge_timer) {
        evtimer_del(op->hedge_timer); /* answered: no backup needed */
    }
    if (!c->cluster_id && c->servers[op->i].ch) {
        /* The first answer names the cluster; the handle holds to it. */
        c->cluster_id = rpc_channel_cluster_id(c->servers[op->i].ch);
    }
    if (m) {
        uint64_t took = note_latency(&c->servers[op->i], op->sent_us);
        if (is_stale_read(op)) {
            note_stale_latency(c, took);
        }
        take_reply(op, m);
    } else {
        op->a.rpc_status = rpc_last_status();
        snprintf(op->a.rpc_error, sizeof op->a.rpc_error, "%s",
                 rpc_last_error());
    }
    op_answered(op);
    c->depth--;
}

/* The op's service on server @i's channel, with the handle's token and
 * the op's budget, trace id and cluster set; NULL without memory. */
static ProtobufCService *service_of(struct ck_op *op, size_t i, unsigned budget)
{
    struct clerk *c = op->c;
    struct ck_server *s = &c->servers[i];
    ProtobufCService *svc = NULL;
    if (s->ch && (s->token_gen == c->token_gen ||
                  rpc_channel_set_auth_token(s->ch, c->token) == 0)) {
        s->token_gen = c->token_gen;
        svc = rpc_channel_service(s->ch, op->sd);
    }
    if (svc) {
        rpc_channel_set_deadline(s->ch, budget);
        rpc_channel_set_trace_id(s->ch, op->trace_id);
        rpc_channel_set_cluster_id(s->ch, c->cluster_id);
    }
    return svc;
}

static void on_hedge_timer(evutil_socket_t fd, short what, void *arg);

/* Send the op's call to server op->i. */
static void op_send(struct ck_op *op, unsigned budget)
{
    struct clerk *c = op->c;
    memset(&op->a, 0, sizeof op->a);
    ProtobufCService *svc = service_of(op, op->i, budget);
    if (!svc) {
        op->a.rpc_status = RPC_E_NOMEM;
        snprintf(op->a.rpc_error, sizeof op->a.rpc_error, "out of memory");
        op_answered(op);
        return;
    }
    ProtobufCMessage *args = op->args;
    if (op->open_session) {
        /* A new id for each try: a try that arrives late then opens a
         * session nobody writes in, never this one again. */
        ck_new_client_id(op->sess->client_id);
        op->open_args.client_id = (ProtobufCBinaryData){
            sizeof op->sess->client_id, op->sess->client_id};
    } else if (op->session) {
        ProtobufCBinaryData *cid = ck_field(args, "client_id");
        uint64_t *rid = ck_field(args, "request_id");
        if (cid && rid) {
            *cid = (ProtobufCBinaryData){sizeof op->sess->client_id,
                                         op->sess->client_id};
            *rid = op->request_id;
        }
    }
    protobuf_c_boolean *stale = ck_field(args, "stale_ok");
    if (stale) {
        *stale = c->read_mode != CLERK_READ_LINEARIZABLE;
    }
    op->sent_us = now_us();
    op->in_rpc = true;
    uint64_t hedge_us = 0;
    if (c->read_mode == CLERK_READ_STALE_HEDGED && !op->hedged && c->n > 1 &&
        is_stale_read(op)) {
        hedge_us = hedge_after_us(c);
    }
    svc->invoke(svc, op->method, args, on_reply, op);
    if (hedge_us && !op->zombie && op->in_rpc) {
        /* Not answered by the p95 of recent stale reads: ask another
         * server too (on_hedge_timer). */
        if (!op->hedge_timer) {
            op->hedge_timer = evtimer_new(c->base, on_hedge_timer, op);
        }
        struct timeval tv = {(time_t)(hedge_us / 1000000),
                             (suseconds_t)(hedge_us % 1000000)};
        if (op->hedge_timer) {
            evtimer_add(op->hedge_timer, &tv);
        }
    }
}

/* The backup request's answer: a final one ends the op, unless its first
 * request was answered already; anything else is left to that request. */
static void on_hedge_reply(const ProtobufCMessage *m, void *data)
{
    struct ck_op *op = data;
    op->hedge_in_rpc = false;
    if (op->zombie) {
        if (!op->in_rpc) {
            free(op);
        }
        return;
    }
    struct clerk *c = op->c;
    if (!m) {
        return;
    }
    uint64_t took = note_latency(&c->servers[op->hedge_i], op->hedge_sent_us);
    const int *err = ck_field(m, "err");
    if (!err || (*err != RAFTKV__KV_ERROR__KV_OK &&
                 *err != RAFTKV__KV_ERROR__KV_NOT_FOUND)) {
        return;
    }
    c->depth++;
    note_stale_latency(c, took);
    drop_result(op);
    take_reply(op, m);
    snprintf(op->errmsg, sizeof op->errmsg, "%s", op->a.message);
    op_finish(op, op->a.rpc_status == RPC_E_NOMEM ? CLERK_NOMEM
                                                  : ck_error_of(op->a.err));
    c->depth--;
}

/* A stale read's first request was not answered by the p95: the same
 * call to the fastest other server. */
static void on_hedge_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct ck_op *op = arg;
    struct clerk *c = op->c;
    if (op->hedged || !op->in_rpc || c->closing) {
        return;
    }
    size_t j = c->n;
    for (size_t k = 0; k < c->n; k++) {
        if (k == op->i) {
            continue;
        }
        uint32_t l = c->servers[k].latency_us;
        if (j == c->n || (l && (!c->servers[j].latency_us ||
                                l < c->servers[j].latency_us))) {
            j = k;
        }
    }
    if (j == c->n || !ck_channel_of(c, j)) {
        return;
    }
    uint64_t now = ck_now_ms();
    uint64_t left = now < op->deadline ? op->deadline - now : 1;
    ProtobufCService *svc = service_of(
        op, j, (unsigned)(left < c->attempt_ms ? left : c->attempt_ms));
    if (!svc) {
        return;
    }
    op->hedged = true;
    op->hedge_i = j;
    op->hedge_sent_us = now_us();
    op->hedge_in_rpc = true;
    c->hedges++;
    svc->invoke(svc, op->method, op->args, on_hedge_reply, op);
}

static void on_authenticate(const Raftkv__AuthenticateReply *r, void *data)
{
    struct ck_op *op = data;
    op->in_rpc = false;
    if (op->zombie) {
        free(op);
        return;
    }
    struct clerk *c = op->c;
    c->depth++;
    /* A server that does not answer leaves the token empty: the call
     * that follows fails on it the same way and the op moves on. */
    if (r && r->err == RAFTKV__AUTH_ERROR__AUTH_OK) {
        snprintf(c->token, sizeof c->token, "%s", r->token ? r->token : "");
        c->token_gen++;
        c->auth_msg[0] = 0;
    } else if (r && r->err == RAFTKV__AUTH_ERROR__AUTH_NOT_ENABLED) {
        c->auth_off = true; /* until a call says otherwise */
        c->auth_msg[0] = 0;
    } else if (r) {
        snprintf(c->auth_msg, sizeof c->auth_msg,
                 "authenticate as '%.100s' at %.100s: %.150s", c->user,
                 c->servers[op->i].addr, r->message ? r->message : "");
    }
    /* A wrong user or password ends the ops that waited for it: going on
     * without a token would run them as whoever else the connection is
     * (the CN of a client certificate), not as the user asked for. */
    bool refused = r && r->err == RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
    /* The ops that waited for this answer go on with it too. */
    c->auth_op = NULL;
    struct ck_op *waiters = c->auth_waiters;
    c->auth_waiters = NULL;
    for (struct ck_op *w = waiters; w; w = w->auth_next) {
        w->auth_waiting = false;
    }
    op->auth_next = waiters;
    while (op) {
        struct ck_op *next = op->auth_next;
        op->auth_next = NULL;
        if (c->closing) {
            op_finish(op, CLERK_CLOSED);
        } else if (refused) {
            snprintf(op->errmsg, sizeof op->errmsg, "%s", c->auth_msg);
            op_finish(op, CLERK_UNAUTHENTICATED);
        } else {
            uint64_t now = ck_now_ms();
            uint64_t left = now < op->deadline ? op->deadline - now : 1;
            op_send(op,
                    (unsigned)(left < c->attempt_ms ? left : c->attempt_ms));
        }
        op = next;
    }
    c->depth--;
}

/* One try: authenticate first when the handle has a user and no token. */
static void op_step(struct ck_op *op)
{
    struct clerk *c = op->c;
    if (c->closing) {
        snprintf(op->errmsg, sizeof op->errmsg, "the handle was closed");
        op_finish(op, CLERK_CLOSED);
        return;
    }
    uint64_t now = ck_now_ms();
    if (now >= op->deadline) {
        char why[300];
        seen_summary(op, why, sizeof why);
        if (op->failed[0] && !op->write) {
            /* A read changed nothing: the server's failure is the
             * answer. */
            snprintf(op->errmsg, sizeof op->errmsg,
                     "%.240s (a server failed the read; tried again for %u "
                     "ms, last: %.200s)",
                     op->failed, op->deadline_ms, op->last);
            op_finish(op, CLERK_INTERNAL);
            return;
        }
        if (op->failed[0] && strcmp(op->failed, op->last) != 0) {
            snprintf(op->errmsg, sizeof op->errmsg,
                     "no leader answered within %u ms: %.120s (last: %.150s; "
                     "a leader failed it: %.160s)",
                     op->deadline_ms, why, op->last, op->failed);
        } else {
            snprintf(op->errmsg, sizeof op->errmsg,
                     "no leader answered within %u ms: %.250s (last: %.200s)",
                     op->deadline_ms, why, op->last);
        }
        /* Not served by a leader, read or write alike (quorum lost, no
         * leader known): UNAVAILABLE. Else a read timed out; a write's
         * outcome is unknown. */
        op_finish(op, op->maybe_applied   ? CLERK_UNKNOWN_OUTCOME
                      : op->maybe_started ? CLERK_TIMEOUT
                                          : CLERK_UNAVAILABLE);
        return;
    }
    uint64_t left = op->deadline - now;
    unsigned budget = (unsigned)(left < c->attempt_ms ? left : c->attempt_ms);
    struct rpc_channel *ch = ck_channel_of(c, op->i);
    if (ch && c->user && !c->token[0] && !c->auth_off && c->auth_op) {
        /* One Authenticate at a time per handle: wait for its answer. */
        op->auth_waiting = true;
        op->auth_next = c->auth_waiters;
        c->auth_waiters = op;
        return;
    }
    if (ch && c->user && !c->token[0] && !c->auth_off) {
        rpc_channel_set_deadline(ch, budget);
        ProtobufCService *svc =
            rpc_channel_service(ch, &raftkv__auth_service__descriptor);
        if (svc) {
            Raftkv__AuthenticateArgs a = RAFTKV__AUTHENTICATE_ARGS__INIT;
            a.user = c->user;
            a.password = c->password;
            op->in_rpc = true;
            c->auth_op = op;
            raftkv__auth_service__authenticate(svc, &a, on_authenticate, op);
            return;
        }
    }
    op_send(op, budget);
}

/* The server after op->i; once every server failed in a row, back off. */
static void next_server(struct ck_op *op)
{
    op->i = (op->i + 1) % op->c->n;
    if (++op->failures >= op->c->n) {
        op->failures = 0;
        back_off(op);
    } else {
        op_step(op);
    }
}

/* A try reached a server that may have started it: a write may have been
 * applied; a read may have been under way there (at the deadline it timed
 * out, rather than found no leader). */
static void note_maybe_started(struct ck_op *op)
{
    op->maybe_started = true;
    op->maybe_applied |= op->write;
}

/* Decide what an answer means: a final outcome, or another try. */
static void op_answered(struct ck_op *op)
{
    struct clerk *c = op->c;
    struct answer *a = &op->a;
    size_t i = op->i;
    if (!a->replied && a->rpc_status == RPC_E_UNKNOWN_METHOD &&
        ++op->unknown_method >= c->n) {
        /* An older kvserver everywhere: refused before anything was
         * proposed. (One older node in a rolling upgrade is passed over
         * like one that does not answer.) */
        snprintf(op->errmsg, sizeof op->errmsg,
                 "the servers do not serve this call (%.300s): an older "
                 "kvserver?",
                 a->rpc_error);
        op_finish(op, CLERK_BAD_REQUEST);
        return;
    }
    if (a->replied && a->err == RAFTKV__KV_ERROR__KV_UNAUTHENTICATED &&
        c->user && !op->reauthenticated) {
        /* Expired, or auth was enabled since: authenticate once more and
         * try again. The call was refused before anything was proposed,
         * so a write keeps its request id. */
        op->reauthenticated = true;
        ck_drop_token(c);
        drop_result(op);
        op_step(op);
        return;
    }
    if (a->replied && a->rpc_status == RPC_E_NOMEM) {
        snprintf(op->errmsg, sizeof op->errmsg, "out of memory");
        op_finish(op, CLERK_NOMEM);
        return;
    }
    bool moved = false;
    if (!a->replied) {
        /* Over the server's frame cap: the server answered without running
         * the handler (so nothing was proposed), and every server has the
         * same cap. */
        bool server_too_big = a->rpc_status == RPC_E_BAD_REQUEST &&
                              strncmp(a->rpc_error, RPC_TOO_BIG_PREFIX,
                                      sizeof RPC_TOO_BIG_PREFIX - 1) == 0;
        /* Refused before it started: the server had too many calls in
         * flight (or this channel could not send it), or the call waited
         * there past its deadline. Nothing was proposed; the same server
         * is tried again after a pause. */
        bool not_started = a->rpc_status == RPC_E_OVERLOADED ||
                           a->rpc_status == RPC_E_DEADLINE_EXCEEDED;
        if (a->rpc_status == RPC_E_WRONG_CLUSTER) {
            /* An address that answers for another cluster: never this
             * handle's server; nothing was started there. */
            op->seen[i] = CK_SEEN_OTHER_CLUSTER;
            size_t other = 0;
            for (size_t k = 0; k < c->n; k++) {
                other += op->seen[k] == CK_SEEN_OTHER_CLUSTER;
            }
            if (other == c->n) {
                /* None of its servers is of its cluster: nothing to wait
                 * for. */
                snprintf(op->errmsg, sizeof op->errmsg,
                         "every server answers for another cluster than "
                         "%016llx (last: %.150s: %.200s)",
                         (unsigned long long)c->cluster_id, c->servers[i].addr,
                         a->rpc_error);
                op_finish(op, op->maybe_applied ? CLERK_UNKNOWN_OUTCOME
                                                : CLERK_UNAVAILABLE);
                return;
            }
            snprintf(op->last, sizeof op->last,
                     "%.150s answers for another cluster: %.200s",
                     c->servers[i].addr, a->rpc_error);
            drop_result(op);
            next_server(op);
            return;
        }
        /* A request that may have reached the server may have been
         * proposed; a refused connection never sent it. */
        if (a->rpc_status != RPC_E_UNAVAILABLE &&
            a->rpc_status != RPC_E_TOO_BIG && a->rpc_status != RPC_E_NOMEM &&
            a->rpc_status != RPC_E_UNKNOWN_METHOD && !server_too_big &&
            !not_started) {
            note_maybe_started(op);
        }
        /* No connection made: refused, or the channel waits before it
         * tries that server again. */
        enum ck_try t = ck_try_of_status(a->rpc_status);
        op->seen[i] = t == CK_TRY_REFUSED    ? CK_SEEN_REFUSED
                      : t == CK_TRY_ANSWERED ? CK_SEEN_BUSY
                                             : CK_SEEN_SILENT;
        if (ck_tried(c, &op->refused_run, t)) {
            /* Every server refused in a row, and none ever answered this
             * handle: nothing to wait for. */
            char why[300];
            seen_summary(op, why, sizeof why);
            snprintf(op->errmsg, sizeof op->errmsg, "%.250s (last: %.200s)",
                     why, a->rpc_error);
            op_finish(op, op->maybe_applied ? CLERK_UNKNOWN_OUTCOME
                                            : CLERK_UNAVAILABLE);
            return;
        }
        if (not_started) {
            snprintf(op->last, sizeof op->last, "%.150s: %.240s",
                     c->servers[i].addr, a->rpc_error);
            op->shed++;
            drop_result(op);
            back_off(op);
            return;
        }
        if (a->rpc_status == RPC_E_TOO_BIG || server_too_big) {
            snprintf(op->errmsg, sizeof op->errmsg, "%s", a->rpc_error);
            op_finish(op, CLERK_VALUE_TOO_LARGE);
            return;
        }
        if (a->rpc_status == RPC_E_CANCELLED && c->closing) {
            snprintf(op->errmsg, sizeof op->errmsg, "the handle was closed");
            op_finish(op, CLERK_CLOSED);
            return;
        }
        snprintf(op->last, sizeof op->last, "%.150s: %.240s",
                 c->servers[i].addr, a->rpc_error);
    } else {
        ck_tried(c, &op->refused_run, CK_TRY_ANSWERED);
        op->seen[i] =
            a->err == RAFTKV__KV_ERROR__KV_WRONG_LEADER  ? CK_SEEN_FOLLOWER
            : a->err == RAFTKV__KV_ERROR__KV_UNAVAILABLE ? CK_SEEN_NO_LEADER
                                                         : CK_SEEN_ANSWERED;
        switch (a->err) {
            case RAFTKV__KV_ERROR__KV_WRONG_LEADER: {
                size_t to;
                snprintf(op->last, sizeof op->last,
                         "%.150s: not the leader (%.220s)", c->servers[i].addr,
                         a->message);
                if (ck_hint_server(c, a->leader_addr, &to) && to != i) {
                    op->i = to;
                    moved = true;
                }
                break;
            }
            case RAFTKV__KV_ERROR__KV_TIMEOUT:
                note_maybe_started(op);
                snprintf(op->last, sizeof op->last, "%.150s: %.240s",
                         c->servers[i].addr, a->message);
                break;
            case RAFTKV__KV_ERROR__KV_INTERNAL:
                /* The server failed it (a store error, a bug). Often one
                 * node's failure, and brief (its LMDB readers all taken):
                 * tried again; kept for the answer at the deadline, so
                 * that it is not hidden behind later redirects. */
                snprintf(op->failed, sizeof op->failed, "%.150s: %.240s",
                         c->servers[i].addr,
                         a->message[0] ? a->message : "internal error");
                /* fall through */
            case RAFTKV__KV_ERROR__KV_UNAVAILABLE:
            case RAFTKV__KV_ERROR__KV_SHUTTING_DOWN:
                /* The leader may have stopped after proposing it. */
                if (a->err != RAFTKV__KV_ERROR__KV_UNAVAILABLE) {
                    note_maybe_started(op);
                }
                snprintf(op->last, sizeof op->last, "%.150s: %.240s",
                         c->servers[i].addr,
                         a->message[0] ? a->message : "unavailable");
                break;
            default: {
                c->leader = i;
                snprintf(op->errmsg, sizeof op->errmsg, "%s", a->message);
                int rv = ck_error_of(a->err);
                if (rv == CLERK_UNAUTHENTICATED && c->auth_msg[0]) {
                    snprintf(op->errmsg, sizeof op->errmsg, "%s", c->auth_msg);
                }
                if (rv == CLERK_NO_SPACE && op->maybe_applied) {
                    /* This try was refused, but an earlier one reached a
                     * leader that may have proposed it before its disk
                     * filled: it can still be applied. */
                    snprintf(op->errmsg, sizeof op->errmsg,
                             "%.400s; an earlier try may have been applied",
                             a->message);
                    rv = CLERK_UNKNOWN_OUTCOME;
                }
                op_finish(op, rv);
                return;
            }
        }
    }
    drop_result(op);
    if (!moved) {
        next_server(op);
    } else if (++op->hops >= c->n) {
        /* Servers sending the clerk to each other (during an election or
         * a leadership transfer): wait before following more. */
        op->hops = 0;
        back_off(op);
    } else {
        op_step(op);
    }
}

/* The op ended with @rv: go on with what waits on it (an OpenSession's
 * write; a write whose session the cluster forgot goes again once in a new
 * one, when no earlier try may have been applied), or tell its done. */
static void op_finish(struct ck_op *op, int rv)
{
    struct clerk *c = op->c;
    if (op->timer) {
        event_del(op->timer);
    }
    if (op->open_session) {
        struct ck_op *w = op->parent;
        w->child = NULL;
        if (rv == CLERK_OK) {
            w->sess->open = true;
            w->sess->request_id = 0;
        } else {
            snprintf(w->errmsg, sizeof w->errmsg, "%s", op->errmsg);
        }
        op_release(op);
        if (rv == CLERK_OK) {
            write_begin(w);
        } else {
            /* The write itself was never sent. */
            op_finish(w, rv == CLERK_UNKNOWN_OUTCOME ? CLERK_UNAVAILABLE : rv);
        }
        return;
    }
    if (op->session && rv == CLERK_SESSION_EXPIRED) {
        /* Forgotten by the cluster: the next write needs a new session. */
        op->sess->open = false;
        if (!op->maybe_applied && !op->session_retried && !c->closing) {
            op->session_retried = true;
            drop_result(op);
            write_begin(op);
            return;
        }
    }
    struct outcome o = {.result = NULL,
                        .compact_revision = op->a.compact_revision,
                        .retried = op->maybe_applied,
                        .errmsg = op->errmsg};
    if (rv == CLERK_OK || rv == CLERK_COMPACTED) {
        if (op->take && op->a.replied && !op->a.result) {
            snprintf(op->errmsg, sizeof op->errmsg, "out of memory");
            rv = CLERK_NOMEM;
        }
        o.result = op->a.result;
        op->a.result = NULL;
    }
    /* Unlinked first: a callback that closes the handle does not end it
     * twice. */
    if (op->prev) {
        op->prev->next = op->next;
    } else if (c->ops == op) {
        c->ops = op->next;
    }
    if (op->next) {
        op->next->prev = op->prev;
    }
    op->prev = op->next = NULL;
    c->depth++;
    op->done(op, rv, &o);
    c->depth--;
    if (o.result && op->drop) {
        op->drop(o.result);
    }
    op_release(op);
}

/* A session write: its session (opened first when needed), then the next
 * request id of that session. */
static void write_begin(struct ck_op *op)
{
    struct clerk *c = op->c;
    if (!op->sess && !(op->sess = session_take(c))) {
        snprintf(op->errmsg, sizeof op->errmsg, "out of memory");
        op_finish(op, CLERK_NOMEM);
        return;
    }
    if (!op->sess->open) {
        struct ck_op *o = op_new(c);
        if (!o) {
            snprintf(op->errmsg, sizeof op->errmsg, "out of memory");
            op_finish(op, CLERK_NOMEM);
            return;
        }
        o->sd = &raftkv__kv_service__descriptor;
        o->method = (unsigned)(protobuf_c_service_descriptor_get_method_by_name(
                                   o->sd, "OpenSession") -
                               o->sd->methods);
        raftkv__open_session_args__init(&o->open_args);
        o->args = &o->open_args.base;
        o->write = true;
        o->open_session = true;
        o->sess = op->sess;
        o->parent = op;
        op->child = o;
        run_begin(o);
        return;
    }
    op->request_id = ++op->sess->request_id;
    run_begin(op);
}

int ck_op_create(struct clerk *c,
                 const struct ck_call *k,
                 bool copy,
                 op_done_cb done,
                 void *done_arg,
                 struct ck_op **out)
{
    if (c->closing) {
        ck_errmsgf(c, "the handle was closed");
        return CLERK_CLOSED;
    }
    const ProtobufCServiceDescriptor *sd =
        k->service ? k->service : &raftkv__kv_service__descriptor;
    const ProtobufCMethodDescriptor *md =
        protobuf_c_service_descriptor_get_method_by_name(sd, k->method);
    if (!md) {
        ck_errmsgf(c, "no method %s", k->method);
        return CLERK_INVALID;
    }
    struct ck_op *op = op_new(c);
    if (!op) {
        return CLERK_NOMEM;
    }
    op->sd = sd;
    op->method = (unsigned)(md - sd->methods);
    op->args = k->args;
    if (copy) {
        size_t n = protobuf_c_message_get_packed_size(k->args);
        uint8_t *buf = malloc(n ? n : 1);
        op->args = buf ? protobuf_c_message_unpack(
                             k->args->descriptor, NULL,
                             protobuf_c_message_pack(k->args, buf), buf)
                       : NULL;
        free(buf);
        if (!op->args) {
            op_release(op);
            return CLERK_NOMEM;
        }
        op->owned = true;
        ProtobufCBinaryData *cid = ck_field(op->args, "client_id");
        if (cid) {
            op->cid_orig = *cid;
        }
    }
    op->write = k->write;
    op->session = k->session;
    op->take = k->take;
    op->drop = k->drop;
    op->done = done;
    op->done_arg = done_arg;
    *out = op;
    return CLERK_OK;
}

void ck_op_run(struct ck_op *op)
{
    struct clerk *c = op->c;
    c->depth++;
    if (op->session) {
        write_begin(op);
    } else {
        run_begin(op);
    }
    c->depth--;
}

void ck_shutdown(struct clerk *c)
{
    c->closing = true;
    c->depth++;
    for (;;) {
        /* A write waiting on its OpenSession ends with it. */
        struct ck_op *op = c->ops;
        while (op && op->child) {
            op = op->next;
        }
        if (!op) {
            break;
        }
        snprintf(op->errmsg, sizeof op->errmsg, "the handle was closed");
        op_finish(op, CLERK_CLOSED);
    }
    c->depth--;
}

/* ------------------------------------------------------ blocking calls */

/* A blocking call waiting for its op. */
struct blocking_wait
{
    bool done;         /* the op ended */
    int rv;            /* with */
    struct ck_call *k; /* the call */
    void **result;     /* where its result goes */
};

static void blocking_done(struct ck_op *op, int rv, struct outcome *o)
{
    struct blocking_wait *w = op->done_arg;
    struct clerk *c = op->c;
    w->done = true;
    w->rv = rv;
    w->k->compact_revision = o->compact_revision;
    w->k->retried = o->retried;
    ck_errmsgf(c, "%s", o->errmsg);
    if (rv == CLERK_OK || rv == CLERK_COMPACTED) {
        *w->result = o->result;
        o->result = NULL;
    }
}

int ck_call(struct clerk *c, struct ck_call *k, void **result)
{
    *result = NULL;
    k->compact_revision = 0;
    k->retried = false;
    if (ck_capturing()) {
        return ck_capture_start(k);
    }
    pthread_mutex_lock(&c->lock);
    /* Nothing runs the loop between operations: see what the servers
     * did meanwhile (a connection closed: reconnect rather than send into
     * it, which would leave a write's fate unknown). */
    for (int n = 0; n < 4; n++) {
        event_base_loop(c->base, EVLOOP_NONBLOCK);
    }
    struct blocking_wait w = {.k = k, .result = result};
    struct ck_op *op;
    int rv = ck_op_create(c, k, false, blocking_done, &w, &op);
    if (rv == CLERK_OK) {
        ck_op_run(op);
        while (!w.done) {
            event_base_loop(c->base, EVLOOP_ONCE);
        }
        rv = w.rv;
    }
    pthread_mutex_unlock(&c->lock);
    return rv;
}
