/* async.c: libclerk's one retry state machine (leader discovery, NOT_LEADER
 * hints, retries with backoff, deadlines, sessions and request ids), run
 * by an event loop; the blocking calls (ck_call) and the clerk_async_* API
 * both drive it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include <proto/auth.pb-c.h>
#include <proto/kv.pb-c.h>
#include <rpc/rpc.h>

#include "clerk/clerk.h"
#include "internal.h"

#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 200

/* What the async API hands its callback (enum reply_kind says which
 * field of clerk_async_reply a result fills). */
enum reply_kind {
    KIND_NONE,
    KIND_GET,
    KIND_CAS,
    KIND_PUT,
    KIND_DELETE,
    KIND_RANGE,
    KIND_TXN,
};

/* What one call to one server said. */
struct answer
{
    bool replied;              /* a KV reply came (else rpc failure) */
    int rpc_status;            /* rpc_last_status() when not replied */
    char rpc_error[300];       /* rpc_last_error() */
    int err;                   /* KvError */
    char leader_addr[300];     /* hint address */
    char message[300];         /* the server's message */
    void *result;              /* what the op's take made */
    uint64_t compact_revision; /* of a COMPACTED reply */
};

/* What an operation ended with, for its done callback. */
struct outcome
{
    void *result;              /* the take's result (the callback may take
                                  it: set NULL), else NULL */
    uint64_t compact_revision; /* of a COMPACTED reply */
    bool retried;              /* an earlier try of a write may have been
                                  applied */
    const char *errmsg;        /* context ("" or the server's message) */
};

typedef void (*op_done_cb)(struct ck_op *op, int rv, struct outcome *o);

/* One operation, from its start to its one done callback. */
struct ck_op
{
    struct clerk *c;                      /* the handle */
    struct ck_op *prev, *next;            /* c->ops */
    const ProtobufCServiceDescriptor *sd; /* service */
    unsigned method;                      /* method index in sd */
    ProtobufCMessage *args;               /* arguments */
    bool owned;                           /* args: our copy (unpacked) */
    ProtobufCBinaryData cid_orig;         /* owned args: client_id as
                                             unpacked, put back to free */
    Raftkv__OpenSessionArgs open_args;    /* an OpenSession op's args */
    bool write;                           /* may change the state */
    bool session;                         /* a session write */
    bool open_session;                    /* OpenSession for parent */
    ck_take_cb take;                      /* makes the result */
    ck_drop_cb drop;                      /* frees it */
    op_done_cb done;                      /* told the outcome, once */
    void *done_arg;                       /* for done */
    enum reply_kind kind;                 /* async: the result's field */
    clerk_async_cb ucb;                   /* async: the caller's callback */
    void *uarg;                           /* its argument */
    struct clerk_async *ua;               /* async: the handle */
    struct ck_session *sess;              /* a session write's session */
    uint64_t request_id;                  /* its request id */
    struct ck_op *parent;                 /* OpenSession: the waiting write */
    struct ck_op *child;                  /* a write: its OpenSession op */
    bool session_retried;                 /* went again in a new session */
    unsigned deadline_ms;                 /* of a run */
    uint64_t deadline;                    /* ck_now_ms() it ends at */
    uint64_t backoff;                     /* next pause, ms */
    size_t i;                             /* server tried now */
    size_t failures;                      /* servers failed in a row */
    size_t hops;                          /* hints followed in a row */
    size_t unknown_method;                /* servers without the method */
    bool maybe_applied;                   /* an earlier try may have been
                                             applied */
    bool reauthenticated;                 /* authenticated once again */
    struct ck_op *auth_next;              /* waiting for c->auth_op */
    bool auth_waiting;                    /* in that list */
    bool in_rpc;                          /* a closure of ours is pending */
    bool zombie;                          /* ended: freed by its closure */
    struct event *timer;                  /* backoff */
    struct answer a;                      /* the last answer */
    char last[400];                       /* the last failure */
    char errmsg[512];                     /* context of the outcome */
};

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
    if (op->in_rpc) {
        op->zombie = true;
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
    op->next = c->ops;
    if (c->ops) {
        c->ops->prev = op;
    }
    c->ops = op;
    c->n_ops++;
    return op;
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
    op->failures = op->hops = op->unknown_method = 0;
    op->maybe_applied = op->reauthenticated = false;
    snprintf(op->last, sizeof op->last, "no server tried");
    op_step(op);
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

static void on_reply(const ProtobufCMessage *m, void *data)
{
    struct ck_op *op = data;
    op->in_rpc = false;
    if (op->zombie) {
        free(op);
        return;
    }
    struct clerk *c = op->c;
    c->depth++;
    if (m) {
        take_reply(op, m);
    } else {
        op->a.rpc_status = rpc_last_status();
        snprintf(op->a.rpc_error, sizeof op->a.rpc_error, "%s",
                 rpc_last_error());
    }
    op_answered(op);
    c->depth--;
}

/* Send the op's call to server op->i. */
static void op_send(struct ck_op *op, unsigned budget)
{
    struct clerk *c = op->c;
    struct ck_server *s = &c->servers[op->i];
    memset(&op->a, 0, sizeof op->a);
    ProtobufCService *svc = NULL;
    if (s->ch && (s->token_gen == c->token_gen ||
                  rpc_channel_set_auth_token(s->ch, c->token) == 0)) {
        s->token_gen = c->token_gen;
        svc = rpc_channel_service(s->ch, op->sd);
    }
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
        *stale = c->read_mode == CLERK_READ_STALE;
    }
    rpc_channel_set_deadline(s->ch, budget);
    op->in_rpc = true;
    svc->invoke(svc, op->method, args, on_reply, op);
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
        snprintf(op->errmsg, sizeof op->errmsg,
                 "no leader answered within %u ms (last: %s)", op->deadline_ms,
                 op->last);
        op_finish(op, !op->write          ? CLERK_TIMEOUT
                      : op->maybe_applied ? CLERK_UNKNOWN_OUTCOME
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
        /* A request that may have reached the server may have been
         * proposed; a refused connection never sent it. */
        if (op->write && a->rpc_status != RPC_E_UNAVAILABLE &&
            a->rpc_status != RPC_E_TOO_BIG && a->rpc_status != RPC_E_NOMEM &&
            a->rpc_status != RPC_E_UNKNOWN_METHOD && !server_too_big) {
            op->maybe_applied = true;
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
                op->maybe_applied |= op->write;
                snprintf(op->last, sizeof op->last, "%.150s: %.240s",
                         c->servers[i].addr, a->message);
                break;
            case RAFTKV__KV_ERROR__KV_UNAVAILABLE:
            case RAFTKV__KV_ERROR__KV_SHUTTING_DOWN:
            case RAFTKV__KV_ERROR__KV_INTERNAL:
                /* The leader may have stopped after proposing it. */
                op->maybe_applied |=
                    op->write && a->err != RAFTKV__KV_ERROR__KV_UNAVAILABLE;
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

/* Make an operation of @k (its args copied when @copy, else borrowed
 * until done runs), not started yet (op_run).
 * @return CLERK_OK, CLERK_CLOSED, CLERK_INVALID or CLERK_NOMEM */
static int op_create(struct clerk *c,
                     const struct ck_call *k,
                     bool copy,
                     op_done_cb done,
                     void *done_arg,
                     struct ck_op **out)
{
    if (c->closing) {
        snprintf(c->errmsg, sizeof c->errmsg, "the handle was closed");
        return CLERK_CLOSED;
    }
    const ProtobufCServiceDescriptor *sd =
        k->service ? k->service : &raftkv__kv_service__descriptor;
    const ProtobufCMethodDescriptor *md =
        protobuf_c_service_descriptor_get_method_by_name(sd, k->method);
    if (!md) {
        snprintf(c->errmsg, sizeof c->errmsg, "no method %s", k->method);
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

/* Start an op: from here its done is called exactly once. */
static void op_run(struct ck_op *op)
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
    snprintf(c->errmsg, sizeof c->errmsg, "%s", o->errmsg);
    if (rv == CLERK_OK || rv == CLERK_COMPACTED) {
        *w->result = o->result;
        o->result = NULL;
    }
}

/* The async call the datamodel builders start instead of running it (see
 * ck_call): set by the clerk_async_* calls around a blocking builder. */
struct capture
{
    struct clerk_async *a; /* the async handle */
    enum reply_kind kind;  /* what its result is */
    clerk_async_cb cb;     /* the caller's callback */
    void *arg;             /* its argument */
    bool started;          /* ck_call started it */
    int rv;                /* what starting it returned */
};

static _Thread_local struct capture *capture;

static int capture_start(struct ck_call *k);

int ck_call(struct clerk *c, struct ck_call *k, void **result)
{
    *result = NULL;
    k->compact_revision = 0;
    k->retried = false;
    if (capture) {
        return capture_start(k);
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
    int rv = op_create(c, k, false, blocking_done, &w, &op);
    if (rv == CLERK_OK) {
        op_run(op);
        while (!w.done) {
            event_base_loop(c->base, EVLOOP_ONCE);
        }
        rv = w.rv;
    }
    pthread_mutex_unlock(&c->lock);
    return rv;
}

/* --------------------------------------------------------- async API */

/* An async handle: a struct clerk on the caller's event base, or on one
 * of its own that clerk_async_process runs (the pollable-fd mode). */
struct clerk_async
{
    struct clerk *c;    /* the handle */
    bool fd_mode;       /* base is ours; epfd is the caller's to poll */
    int epfd;           /* fd mode: the sockets and tfd */
    int tfd;            /* fd mode: a timerfd for the next timeout */
    struct ck_fd *fds;  /* fd mode: what epfd watches */
    size_t n_fds;       /* entries */
    size_t cap_fds;     /* room */
    bool dirty;         /* fd mode: epfd is behind the base's events */
    uint64_t next_ms;   /* fd mode: the next timeout (ck_now_ms), or 0 */
    bool in_process;    /* inside clerk_async_process */
    bool close_pending; /* closed from a callback: free when it returns */
    char errmsg[512];   /* why the last call was refused */
};

/* An fd in epfd and the events asked for. */
struct ck_fd
{
    int fd;          /* the socket */
    uint32_t events; /* EPOLLIN | EPOLLOUT */
};

static void mark_dirty(struct clerk_async *a);

static void async_done(struct ck_op *op, int rv, struct outcome *o)
{
    struct clerk_async_reply r = {.err = rv,
                                  .errmsg = o->errmsg,
                                  .maybe_applied = o->retried,
                                  .compact_revision = o->compact_revision};
    bool ok = rv == CLERK_OK || rv == CLERK_CAS_MISMATCH;
    struct ck_value *v = o->result;
    switch (op->kind) {
        case KIND_GET:
            if (ok && v) {
                r.value = v->data;
                r.value_len = v->len;
            }
            break;
        case KIND_CAS:
            if (rv == CLERK_OK && v && !v->swapped) {
                r.err = CLERK_CAS_MISMATCH;
                r.value = v->data;
                r.value_len = v->len;
            }
            break;
        case KIND_PUT:
            r.put = o->result;
            break;
        case KIND_DELETE:
            r.deleted = o->result;
            break;
        case KIND_RANGE:
            r.range = o->result;
            break;
        case KIND_TXN:
            r.txn = o->result;
            break;
        case KIND_NONE:
            break;
    }
    if (op->ucb) {
        op->ucb(op->ua, &r, op->uarg);
    }
}

/* Start @k as the async call the capture describes. */
static int capture_start(struct ck_call *k)
{
    struct capture *cp = capture;
    struct ck_op *op;
    cp->started = true;
    cp->rv = op_create(cp->a->c, k, true, async_done, NULL, &op);
    if (cp->rv == CLERK_OK) {
        op->kind = cp->kind;
        op->ucb = cp->cb;
        op->uarg = cp->arg;
        op->ua = cp->a;
        op_run(op);
        mark_dirty(cp->a);
    }
    return cp->rv;
}

/* Start @k on @a; its reply goes to @cb as @kind. */
static int async_start(struct clerk_async *a,
                       struct ck_call *k,
                       enum reply_kind kind,
                       clerk_async_cb cb,
                       void *arg)
{
    struct capture cp = {.a = a, .kind = kind, .cb = cb, .arg = arg};
    capture = &cp;
    int rv = capture_start(k);
    capture = NULL;
    return rv;
}

const char *clerk_version(void)
{
    return CLERK_VERSION;
}

static int async_new(struct clerk_async **out,
                     const char *servers,
                     const struct clerk_options *opts,
                     struct event_base *base)
{
    struct clerk_async *a = calloc(1, sizeof *a);
    if (!a) {
        return CLERK_NOMEM;
    }
    a->epfd = a->tfd = -1;
    int rv = ck_open_on(&a->c, servers, opts, base);
    if (rv) {
        free(a);
        return rv;
    }
    *out = a;
    return CLERK_OK;
}

int clerk_async_open(struct clerk_async **out,
                     const char *servers,
                     const struct clerk_options *opts,
                     struct event_base *base)
{
    if (!out || !base) {
        return CLERK_INVALID;
    }
    return async_new(out, servers, opts, base);
}

int clerk_async_open_fd(struct clerk_async **out,
                        const char *servers,
                        const struct clerk_options *opts)
{
    if (!out) {
        return CLERK_INVALID;
    }
    struct clerk_async *a;
    int rv = async_new(&a, servers, opts, NULL);
    if (rv) {
        return rv;
    }
    a->fd_mode = true;
    a->epfd = epoll_create1(EPOLL_CLOEXEC);
    a->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = a->tfd};
    if (a->epfd < 0 || a->tfd < 0 ||
        epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->tfd, &ev) != 0) {
        clerk_async_close(a);
        return CLERK_NOMEM;
    }
    *out = a;
    return CLERK_OK;
}

/* Free the handle (its ops have ended). */
static void async_free(struct clerk_async *a)
{
    clerk_close(a->c);
    if (a->epfd >= 0) {
        close(a->epfd);
    }
    if (a->tfd >= 0) {
        close(a->tfd);
    }
    free(a->fds);
    free(a);
}

static void on_deferred_free(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    async_free(arg);
}

void clerk_async_close(struct clerk_async *a)
{
    if (!a || a->c->closing) {
        return;
    }
    ck_shutdown(a->c);
    if (a->fd_mode && (a->in_process || a->c->depth > 0)) {
        /* clerk_async_process frees it when its loop is done. */
        a->close_pending = true;
        mark_dirty(a);
    } else if (a->c->depth > 0) {
        /* Inside a callback that a channel's reply ran: the channel is
         * still reading. Free the handle on the loop's next turn. */
        struct timeval now = {0, 0};
        if (event_base_once(a->c->base, -1, EV_TIMEOUT, on_deferred_free, a,
                            &now) != 0) {
            /* No memory for it: the handle stays allocated. */
        }
    } else {
        async_free(a);
    }
}

const char *clerk_async_errmsg(const struct clerk_async *a)
{
    return a->c->errmsg;
}

size_t clerk_async_pending(const struct clerk_async *a)
{
    size_t n = 0;
    for (const struct ck_op *op = a->c->ops; op; op = op->next) {
        n += !op->open_session;
    }
    return n;
}

void clerk_async_set_deadline(struct clerk_async *a, unsigned ms)
{
    clerk_set_deadline(a->c, ms);
}

void clerk_async_set_read_mode(struct clerk_async *a, enum clerk_read_mode mode)
{
    clerk_set_read_mode(a->c, mode);
}

static int check_key(struct clerk_async *a,
                     const void *key,
                     size_t key_len,
                     const void *value,
                     size_t value_len,
                     clerk_async_cb cb)
{
    if (!a || !cb || (!key && key_len) || (!value && value_len)) {
        return CLERK_INVALID;
    }
    if (key_len == 0) {
        snprintf(a->c->errmsg, sizeof a->c->errmsg, "the key is empty");
        return CLERK_BAD_REQUEST;
    }
    if (a->c->closing) {
        return CLERK_CLOSED;
    }
    return CLERK_OK;
}

int clerk_async_get(struct clerk_async *a,
                    const void *key,
                    size_t key_len,
                    clerk_async_cb cb,
                    void *arg)
{
    int rv = check_key(a, key, key_len, NULL, 0, cb);
    if (rv) {
        return rv;
    }
    Raftkv__GetArgs g = RAFTKV__GET_ARGS__INIT;
    g.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    struct ck_call k = {.method = "Get",
                        .args = &g.base,
                        .take = ck_take_get,
                        .drop = ck_drop_value};
    return async_start(a, &k, KIND_GET, cb, arg);
}

static int put_append(struct clerk_async *a,
                      Raftkv__PutOp op,
                      const void *key,
                      size_t key_len,
                      const void *value,
                      size_t value_len,
                      clerk_async_cb cb,
                      void *arg)
{
    int rv = check_key(a, key, key_len, value, value_len, cb);
    if (rv) {
        return rv;
    }
    Raftkv__PutAppendArgs p = RAFTKV__PUT_APPEND_ARGS__INIT;
    p.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    p.value = (ProtobufCBinaryData){value_len, (uint8_t *)value};
    p.op = op;
    struct ck_call k = {
        .method = "PutAppend", .args = &p.base, .write = true, .session = true};
    return async_start(a, &k, KIND_NONE, cb, arg);
}

int clerk_async_put(struct clerk_async *a,
                    const void *key,
                    size_t key_len,
                    const void *value,
                    size_t value_len,
                    clerk_async_cb cb,
                    void *arg)
{
    return put_append(a, RAFTKV__PUT_OP__PUT_OP_PUT, key, key_len, value,
                      value_len, cb, arg);
}

int clerk_async_append(struct clerk_async *a,
                       const void *key,
                       size_t key_len,
                       const void *value,
                       size_t value_len,
                       clerk_async_cb cb,
                       void *arg)
{
    return put_append(a, RAFTKV__PUT_OP__PUT_OP_APPEND, key, key_len, value,
                      value_len, cb, arg);
}

int clerk_async_delete(struct clerk_async *a,
                       const void *key,
                       size_t key_len,
                       clerk_async_cb cb,
                       void *arg)
{
    int rv = check_key(a, key, key_len, NULL, 0, cb);
    if (rv) {
        return rv;
    }
    Raftkv__DeleteArgs d = RAFTKV__DELETE_ARGS__INIT;
    d.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    struct ck_call k = {
        .method = "Delete", .args = &d.base, .write = true, .session = true};
    return async_start(a, &k, KIND_NONE, cb, arg);
}

int clerk_async_cas(struct clerk_async *a,
                    const void *key,
                    size_t key_len,
                    const void *expected,
                    size_t expected_len,
                    const void *new_value,
                    size_t new_len,
                    clerk_async_cb cb,
                    void *arg)
{
    int rv = check_key(a, key, key_len, new_value, new_len, cb);
    if (rv || (!expected && expected_len)) {
        return rv ? rv : CLERK_INVALID;
    }
    Raftkv__CompareAndSwapArgs s = RAFTKV__COMPARE_AND_SWAP_ARGS__INIT;
    s.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    if (expected) {
        s.expected_case =
            RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECTED_VALUE;
        s.expected_value =
            (ProtobufCBinaryData){expected_len, (uint8_t *)expected};
    } else {
        s.expected_case = RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECT_ABSENT;
        s.expect_absent = 1;
    }
    s.new_value = (ProtobufCBinaryData){new_len, (uint8_t *)new_value};
    struct ck_call k = {.method = "CompareAndSwap",
                        .args = &s.base,
                        .write = true,
                        .session = true,
                        .take = ck_take_cas,
                        .drop = ck_drop_value};
    return async_start(a, &k, KIND_CAS, cb, arg);
}

/* Run a blocking builder of datamodel.c with a capture set: its ck_call
 * starts the call on @a instead of running it. */
#define CAPTURED(a, kind_, cb_, arg_, call)                         \
    do {                                                            \
        if (!(a) || !(cb_)) {                                       \
            return CLERK_INVALID;                                   \
        }                                                           \
        if ((a)->c->closing) {                                      \
            return CLERK_CLOSED;                                    \
        }                                                           \
        struct capture cp_ = {                                      \
            .a = (a), .kind = (kind_), .cb = (cb_), .arg = (arg_)}; \
        capture = &cp_;                                             \
        int rv_ = (call);                                           \
        capture = NULL;                                             \
        return cp_.started ? cp_.rv : (rv_ ? rv_ : CLERK_INTERNAL); \
    } while (0)

int clerk_async_put_ex(struct clerk_async *a,
                       const void *key,
                       size_t key_len,
                       const void *value,
                       size_t value_len,
                       uint64_t lease,
                       unsigned flags,
                       clerk_async_cb cb,
                       void *arg)
{
    struct clerk_put_result *r;
    CAPTURED(a, KIND_PUT, cb, arg,
             ck_put(a->c, key, key_len, value, value_len, lease, flags, &r));
}

int clerk_async_range(struct clerk_async *a,
                      const void *key,
                      size_t key_len,
                      const void *range_end,
                      size_t range_end_len,
                      uint64_t limit,
                      unsigned flags,
                      clerk_async_cb cb,
                      void *arg)
{
    struct clerk_range_result *r;
    CAPTURED(a, KIND_RANGE, cb, arg,
             clerk_range(a->c, key, key_len, range_end, range_end_len, limit,
                         flags, &r));
}

int clerk_async_delete_range(struct clerk_async *a,
                             const void *key,
                             size_t key_len,
                             const void *range_end,
                             size_t range_end_len,
                             unsigned flags,
                             clerk_async_cb cb,
                             void *arg)
{
    struct clerk_delete_result *r;
    CAPTURED(a, KIND_DELETE, cb, arg,
             clerk_delete_range(a->c, key, key_len, range_end, range_end_len,
                                flags, &r));
}

int clerk_async_txn(struct clerk_async *a,
                    const struct clerk_txn *t,
                    clerk_async_cb cb,
                    void *arg)
{
    struct clerk_txn_result *r;
    CAPTURED(a, KIND_TXN, cb, arg, clerk_txn_commit(a->c, t, &r));
}

/* ------------------------------------------------------ pollable fd */

/* The events of the base, gathered for epfd. */
struct gather
{
    struct ck_fd *fds;   /* fds and what they wait for */
    size_t n, cap;       /* entries, room */
    struct timeval next; /* the earliest timeout (wall clock) */
    bool has_next;       /* one was seen */
    bool nomem;          /* out of memory */
};

static int gather_event(const struct event_base *b,
                        const struct event *cev,
                        void *arg)
{
    (void)b;
    struct gather *g = arg;
    struct event *ev = (struct event *)cev;
    struct timeval tv;
    if (event_pending(ev, EV_TIMEOUT, &tv)) {
        if (!g->has_next || evutil_timercmp(&tv, &g->next, <)) {
            g->next = tv;
            g->has_next = true;
        }
    }
    int fd = event_get_fd(ev);
    short what = (short)event_pending(ev, EV_READ | EV_WRITE, NULL);
    if (fd < 0 || !what) {
        return 0;
    }
    uint32_t e =
        (what & EV_READ ? EPOLLIN : 0) | (what & EV_WRITE ? EPOLLOUT : 0);
    for (size_t k = 0; k < g->n; k++) {
        if (g->fds[k].fd == fd) {
            g->fds[k].events |= e;
            return 0;
        }
    }
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        struct ck_fd *p = realloc(g->fds, cap * sizeof *p);
        if (!p) {
            g->nomem = true;
            return 0;
        }
        g->fds = p;
        g->cap = cap;
    }
    g->fds[g->n++] = (struct ck_fd){fd, e};
    return 0;
}

/* Make epfd watch what the base waits for, and the timerfd fire at its
 * next timeout. */
static int sync_fds(struct clerk_async *a)
{
    struct gather g = {0};
    event_base_foreach_event(a->c->base, gather_event, &g);
    if (g.nomem) {
        free(g.fds);
        return CLERK_NOMEM;
    }
    for (size_t k = 0; k < a->n_fds; k++) {
        bool kept = false;
        for (size_t j = 0; j < g.n && !kept; j++) {
            kept = g.fds[j].fd == a->fds[k].fd;
        }
        if (!kept) {
            epoll_ctl(a->epfd, EPOLL_CTL_DEL, a->fds[k].fd, NULL);
        }
    }
    for (size_t j = 0; j < g.n; j++) {
        const struct ck_fd *was = NULL;
        for (size_t k = 0; k < a->n_fds && !was; k++) {
            was = a->fds[k].fd == g.fds[j].fd ? &a->fds[k] : NULL;
        }
        if (was && was->events == g.fds[j].events) {
            continue;
        }
        struct epoll_event ev = {.events = g.fds[j].events,
                                 .data.fd = g.fds[j].fd};
        /* An fd closed and opened again under the same number left epfd
         * when it closed: add it again. */
        if (epoll_ctl(a->epfd, was ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, g.fds[j].fd,
                      &ev) != 0) {
            epoll_ctl(a->epfd, was ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, g.fds[j].fd,
                      &ev);
        }
    }
    free(a->fds);
    a->fds = g.fds;
    a->n_fds = g.n;
    a->cap_fds = g.cap;
    struct itimerspec its = {{0, 0}, {0, 0}};
    a->next_ms = 0;
    if (event_base_get_num_events(a->c->base, EVENT_BASE_COUNT_ACTIVE) > 0) {
        its.it_value.tv_nsec = 1; /* at once */
        a->next_ms = ck_now_ms();
    } else if (g.has_next) {
        struct timeval now, d;
        gettimeofday(&now, NULL);
        if (evutil_timercmp(&g.next, &now, >)) {
            evutil_timersub(&g.next, &now, &d);
        } else {
            d = (struct timeval){0, 0};
        }
        its.it_value.tv_sec = d.tv_sec;
        its.it_value.tv_nsec = d.tv_usec * 1000 + 1;
        a->next_ms = ck_now_ms() + (uint64_t)d.tv_sec * 1000 +
                     (uint64_t)(d.tv_usec + 999) / 1000;
    }
    timerfd_settime(a->tfd, 0, &its, NULL);
    a->dirty = false;
    return CLERK_OK;
}

/* fd mode: a call started outside clerk_async_process needs its fds in
 * epfd: make epfd readable at once so that the caller comes to
 * clerk_async_process. */
static void mark_dirty(struct clerk_async *a)
{
    if (!a->fd_mode || a->in_process || a->dirty) {
        return;
    }
    a->dirty = true;
    struct itimerspec its = {{0, 0}, {0, 1}};
    timerfd_settime(a->tfd, 0, &its, NULL);
}

int clerk_async_fd(const struct clerk_async *a)
{
    return a && a->fd_mode ? a->epfd : -1;
}

int clerk_async_timeout_ms(const struct clerk_async *a)
{
    if (!a || !a->fd_mode) {
        return -1;
    }
    if (a->dirty) {
        return 0;
    }
    if (!a->next_ms) {
        return -1;
    }
    uint64_t now = ck_now_ms();
    return a->next_ms > now ? (int)(a->next_ms - now) : 0;
}

int clerk_async_process(struct clerk_async *a)
{
    if (!a || !a->fd_mode || a->in_process) {
        return CLERK_INVALID;
    }
    uint64_t expirations;
    while (read(a->tfd, &expirations, sizeof expirations) > 0) {
    }
    a->in_process = true;
    for (int n = 0; n < 8; n++) {
        event_base_loop(a->c->base, EVLOOP_NONBLOCK);
        if (a->close_pending || event_base_get_num_events(
                                    a->c->base, EVENT_BASE_COUNT_ACTIVE) == 0) {
            break;
        }
    }
    a->in_process = false;
    if (a->close_pending) {
        async_free(a);
        return CLERK_CLOSED;
    }
    return sync_fds(a);
}
