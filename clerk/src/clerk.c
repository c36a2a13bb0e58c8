/* clerk.c: leader discovery, retries and exactly-once writes over the
 * generated KvService stubs. */
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/event.h>

#include <proto/admin.pb-c.h>
#include <proto/auth.pb-c.h>
#include <proto/kv.pb-c.h>
#include <rpc/rpc.h>

#include "clerk/clerk.h"
#include "internal.h"

#define DEFAULT_DEADLINE_MS 5000
#define DEFAULT_ATTEMPT_MS  1000
#define BACKOFF_MIN_MS      10
#define BACKOFF_MAX_MS      200
#define MAX_SERVERS         CK_MAX_SERVERS

/* A blocking face of one service of an async channel, for the calls that
 * wait for one answer (status, admin, auth): invoke runs the handle's
 * private event base until the call's closure has run. */
struct ck_sync_service
{
    ProtobufCService base;        /* what the generated stubs call */
    ProtobufCService *inner;      /* the channel's service */
    struct clerk *c;              /* whose base runs */
    struct ck_sync_service *next; /* the server's list */
};

static _Thread_local char open_error[512];

/* ---------------------------------------------------------------- names */

const char *clerk_error_code(int err)
{
    switch (err) {
        case CLERK_OK:
            return "OK";
        case CLERK_NOT_FOUND:
            return "NOT_FOUND";
        case CLERK_CAS_MISMATCH:
            return "CAS_MISMATCH";
        case CLERK_UNKNOWN_OUTCOME:
            return "TIMEOUT";
        case CLERK_UNAVAILABLE:
            return "UNAVAILABLE";
        case CLERK_TIMEOUT:
            return "TIMEOUT";
        case CLERK_BAD_REQUEST:
            return "BAD_REQUEST";
        case CLERK_VALUE_TOO_LARGE:
            return "VALUE_TOO_LARGE";
        case CLERK_NO_SPACE:
            return "NO_SPACE";
        case CLERK_INVALID:
            return "INVALID";
        case CLERK_NOMEM:
            return "NO_MEMORY";
        case CLERK_DISABLED:
            return "DISABLED";
        case CLERK_SESSION_EXPIRED:
            return "SESSION_EXPIRED";
        case CLERK_UNAUTHENTICATED:
            return "UNAUTHENTICATED";
        case CLERK_PERMISSION_DENIED:
            return "PERMISSION_DENIED";
        case CLERK_COMPACTED:
            return "COMPACTED";
        case CLERK_FUTURE_REVISION:
            return "FUTURE_REVISION";
        case CLERK_LEASE_NOT_FOUND:
            return "LEASE_NOT_FOUND";
        case CLERK_NOT_HELD:
            return "NOT_HELD";
        case CLERK_CLOSED:
            return "CLOSED";
        case CLERK_TOO_MANY_KEYS:
            return "TOO_MANY_KEYS";
        default:
            return "INTERNAL";
    }
}

const char *clerk_strerror(int err)
{
    switch (err) {
        case CLERK_OK:
            return "ok";
        case CLERK_NOT_FOUND:
            return "no such key";
        case CLERK_CAS_MISMATCH:
            return "the key does not hold the expected value";
        case CLERK_UNKNOWN_OUTCOME:
            return "timed out; the write may or may not have been applied";
        case CLERK_UNAVAILABLE:
            return "no leader available; not applied";
        case CLERK_TIMEOUT:
            return "timed out";
        case CLERK_BAD_REQUEST:
            return "bad request";
        case CLERK_VALUE_TOO_LARGE:
            return "key or value too large";
        case CLERK_NO_SPACE:
            return "no room on the leader (disk full or over its quota); "
                   "not applied";
        case CLERK_INVALID:
            return "invalid argument";
        case CLERK_NOMEM:
            return "out of memory";
        case CLERK_DISABLED:
            return "not allowed by the server";
        case CLERK_SESSION_EXPIRED:
            return "the cluster forgot this client's session while the write "
                   "was retried; it may or may not have been applied";
        case CLERK_UNAUTHENTICATED:
            return "not authenticated: no user given, a wrong user name or "
                   "password, or a token the cluster no longer accepts";
        case CLERK_PERMISSION_DENIED:
            return "permission denied: the user's roles do not allow this";
        case CLERK_COMPACTED:
            return "the revision asked for was compacted";
        case CLERK_FUTURE_REVISION:
            return "the revision asked for is newer than the store's";
        case CLERK_LEASE_NOT_FOUND:
            return "no such lease (expired, revoked or never granted)";
        case CLERK_NOT_HELD:
            return "the lock or leadership is not held (its key is gone)";
        case CLERK_CLOSED:
            return "the handle was closed before the operation ended; a "
                   "write may or may not have been applied";
        case CLERK_TOO_MANY_KEYS:
            return "the write would delete more keys than the leader allows "
                   "in one write, or give a lease more keys than it allows; "
                   "nothing was applied";
        default:
            return "internal error";
    }
}

const char *clerk_errmsg(const struct clerk *c)
{
    /* Copied under errmsg_lock into a buffer of the calling thread:
     * another thread's operation may write c->errmsg meanwhile. (Not
     * under c->lock: that one is held for a whole operation.) A few
     * buffers, so that two messages can be printed in one call. */
    static _Thread_local char copies[4][512];
    static _Thread_local unsigned next;
    char *out = copies[next++ % 4];
    struct clerk *w = (struct clerk *)c;
    pthread_mutex_lock(&w->errmsg_lock);
    memcpy(out, c->errmsg, sizeof copies[0]);
    pthread_mutex_unlock(&w->errmsg_lock);
    out[sizeof copies[0] - 1] = 0;
    return out;
}

const char *clerk_open_error(void)
{
    return open_error;
}

void clerk_free(void *p)
{
    free(p);
}

/* ------------------------------------------------------------- handles */

/* Add one server, "HOST:PORT", "[V6]:PORT" or "ID=HOST:PORT" (it is
 * modified). Returns false, with open_error set, when it is malformed or
 * the list is full. */
static bool add_server(struct clerk *c, char *it)
{
    while (*it == ' ') {
        it++;
    }
    char *eq = strchr(it, '=');
    if (eq) {
        it = eq + 1;
    }
    char *colon = strrchr(it, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || colon == it || !end || *end || port < 1 || port > 65535 ||
        c->n == MAX_SERVERS || strlen(it) >= sizeof c->servers[0].addr) {
        snprintf(open_error, sizeof open_error,
                 c->n == MAX_SERVERS ? "more than 16 servers"
                                     : "server '%.200s' is not HOST:PORT",
                 it);
        return false;
    }
    struct ck_server *s = &c->servers[c->n++];
    snprintf(s->addr, sizeof s->addr, "%s", it);
    *colon = 0;
    size_t hl = strlen(it);
    if (hl >= 2 && it[0] == '[' && it[hl - 1] == ']') {
        it[hl - 1] = 0;
        it++;
    }
    snprintf(s->host, sizeof s->host, "%s", it);
    s->port = (uint16_t)port;
    return true;
}

static int parse_servers(struct clerk *c, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy) {
        return CLERK_NOMEM;
    }
    for (char *it = strtok_r(copy, ",", &save); it;
         it = strtok_r(NULL, ",", &save)) {
        if (!add_server(c, it)) {
            free(copy);
            return CLERK_INVALID;
        }
    }
    free(copy);
    if (c->n == 0) {
        snprintf(open_error, sizeof open_error, "the server list is empty");
        return CLERK_INVALID;
    }
    return CLERK_OK;
}

/* A handle without servers yet, on @base (NULL: a private one). */
static struct clerk *handle_new(struct event_base *base)
{
    struct clerk *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->own_base = !base;
    c->base = base ? base : event_base_new();
    if (!c->base) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL); /* clerk_close destroys them */
    pthread_mutex_init(&c->errmsg_lock, NULL);
    return c;
}

int ck_open_on(struct clerk **out,
               const char *servers,
               const struct clerk_options *opts,
               struct event_base *base)
{
    open_error[0] = 0;
    if (!out || !servers) {
        snprintf(open_error, sizeof open_error, "no server list");
        return CLERK_INVALID;
    }
    struct clerk *c = handle_new(base);
    if (!c) {
        return CLERK_NOMEM;
    }
    int rv = parse_servers(c, servers);
    if (rv) {
        clerk_close(c);
        return rv;
    }
    if (opts) {
        c->defaults = *opts;
        c->defaults.user = c->defaults.password = NULL;
        if (opts->user && opts->user[0]) {
            c->user = strdup(opts->user);
            c->password = strdup(opts->password ? opts->password : "");
            if (!c->user || !c->password) {
                clerk_close(c);
                return CLERK_NOMEM;
            }
        }
    }
    c->defaults.cacert = c->defaults.cert = c->defaults.key = NULL;
    if (opts && (opts->cert || opts->key) && !opts->cacert) {
        snprintf(open_error, sizeof open_error,
                 "a client certificate needs the CA file (cacert) too");
        clerk_close(c);
        return CLERK_INVALID;
    }
    if (opts && opts->cacert) {
        struct rpc_tls_options to = {.ca_file = opts->cacert,
                                     .verify_peer = true,
                                     .cert_file = opts->cert,
                                     .key_file = opts->key};
        char err[512];
        int trv = rpc_tls_new(&to, &c->tls, err, sizeof err);
        if (trv != 0) {
            snprintf(open_error, sizeof open_error, "%.500s", err);
            clerk_close(c);
            return trv == RPC_E_NOMEM ? CLERK_NOMEM : CLERK_INVALID;
        }
    }
    if (!c->defaults.deadline_ms) {
        c->defaults.deadline_ms = DEFAULT_DEADLINE_MS;
    }
    if (!c->defaults.attempt_ms) {
        c->defaults.attempt_ms = DEFAULT_ATTEMPT_MS;
    }
    c->deadline_ms = c->defaults.deadline_ms;
    c->attempt_ms = c->defaults.attempt_ms;
    c->read_mode = c->defaults.read_mode;
    *out = c;
    return CLERK_OK;
}

int clerk_open(struct clerk **out,
               const char *servers,
               const struct clerk_options *opts)
{
    return ck_open_on(out, servers, opts, NULL);
}

void clerk_close(struct clerk *c)
{
    if (!c) {
        return;
    }
    ck_shutdown(c);
    for (size_t i = 0; i < c->n; i++) {
        /* Closures of calls in flight run here (ended ops). */
        rpc_channel_free(c->servers[i].ch);
        while (c->servers[i].sync) {
            struct ck_sync_service *w = c->servers[i].sync;
            c->servers[i].sync = w->next;
            free(w);
        }
    }
    ck_sessions_free(c);
    if (c->own_base) {
        event_base_free(c->base);
    }
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->errmsg_lock);
    if (!c->tls_borrowed) {
        rpc_tls_free(c->tls);
    }
    if (c->password) {
        memset(c->password, 0, strlen(c->password));
        free(c->password);
    }
    free(c->user);
    memset(c->token, 0, sizeof c->token);
    free(c);
}

int ck_clone(struct clerk *c, struct clerk **out)
{
    struct clerk *d = handle_new(NULL);
    if (!d) {
        return CLERK_NOMEM;
    }
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n; i++) {
        struct ck_server *s = &d->servers[i];
        snprintf(s->host, sizeof s->host, "%s", c->servers[i].host);
        snprintf(s->addr, sizeof s->addr, "%s", c->servers[i].addr);
        s->port = c->servers[i].port;
    }
    d->n = c->n;
    d->leader = c->leader;
    d->defaults = c->defaults;
    d->deadline_ms = c->defaults.deadline_ms;
    d->attempt_ms = c->defaults.attempt_ms;
    d->read_mode = c->defaults.read_mode;
    d->tls = c->tls;
    d->tls_borrowed = true;
    bool nomem = false;
    if (c->user) {
        d->user = strdup(c->user);
        d->password = strdup(c->password ? c->password : "");
        nomem = !d->user || !d->password;
    }
    pthread_mutex_unlock(&c->lock);
    if (nomem) {
        clerk_close(d);
        return CLERK_NOMEM;
    }
    *out = d;
    return CLERK_OK;
}

void clerk_set_deadline(struct clerk *c, unsigned ms)
{
    pthread_mutex_lock(&c->lock);
    c->deadline_ms = ms ? ms : c->defaults.deadline_ms;
    pthread_mutex_unlock(&c->lock);
}

void clerk_set_read_mode(struct clerk *c, enum clerk_read_mode mode)
{
    pthread_mutex_lock(&c->lock);
    c->read_mode = mode;
    pthread_mutex_unlock(&c->lock);
}

void clerk_set_cluster_id(struct clerk *c, uint64_t id)
{
    pthread_mutex_lock(&c->lock);
    c->cluster_id = id;
    pthread_mutex_unlock(&c->lock);
}

uint64_t clerk_cluster_id(struct clerk *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t id = c->cluster_id;
    pthread_mutex_unlock(&c->lock);
    return id;
}

uint64_t ck_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void ck_sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* What Authenticate said. */
struct token_out
{
    bool replied;      /* an answer came */
    int err;           /* AuthError */
    char token[800];   /* the token */
    char message[300]; /* the server's message */
};

static void on_authenticate(const Raftkv__AuthenticateReply *r, void *data)
{
    struct token_out *o = data;
    if (!r) {
        return;
    }
    o->replied = true;
    o->err = r->err;
    snprintf(o->token, sizeof o->token, "%s", r->token ? r->token : "");
    snprintf(o->message, sizeof o->message, "%s", r->message ? r->message : "");
}

/* Drop the token: the next call authenticates again. */
static void forget_token(struct clerk *c)
{
    c->token[0] = 0;
    c->auth_off = false;
    c->token_gen++;
}

void ck_drop_token(struct clerk *c)
{
    forget_token(c);
}

/* Authenticate through server @s when the handle has a user and no token
 * yet. A server that does not answer leaves the token empty (the call that
 * follows fails on it the same way and the clerk moves on). */
static ProtobufCService *sync_service(struct clerk *c,
                                      size_t i,
                                      const ProtobufCServiceDescriptor *d);

static void ensure_token(struct clerk *c,
                         struct ck_server *s,
                         size_t i,
                         unsigned timeout_ms)
{
    if (!c->user || c->token[0] || c->auth_off) {
        return;
    }
    rpc_channel_set_deadline(s->ch, timeout_ms);
    ProtobufCService *svc =
        sync_service(c, i, &raftkv__auth_service__descriptor);
    if (!svc) {
        return;
    }
    Raftkv__AuthenticateArgs a = RAFTKV__AUTHENTICATE_ARGS__INIT;
    a.user = c->user;
    a.password = c->password;
    struct token_out o = {0};
    raftkv__auth_service__authenticate(svc, &a, on_authenticate, &o);
    if (!o.replied) {
        return;
    }
    if (o.err == RAFTKV__AUTH_ERROR__AUTH_OK) {
        snprintf(c->token, sizeof c->token, "%s", o.token);
        c->token_gen++;
        c->auth_msg[0] = 0;
    } else if (o.err == RAFTKV__AUTH_ERROR__AUTH_NOT_ENABLED) {
        c->auth_off = true; /* until a call says otherwise */
        c->auth_msg[0] = 0;
    } else {
        snprintf(c->auth_msg, sizeof c->auth_msg,
                 "authenticate as '%.100s' at %.100s: %.150s", c->user, s->addr,
                 o.message);
    }
    memset(o.token, 0, sizeof o.token);
}

struct rpc_channel *ck_channel_of(struct clerk *c, size_t i)
{
    struct ck_server *s = &c->servers[i];
    if (!s->ch) {
        struct rpc_channel_options o = {.deadline_ms = c->attempt_ms,
                                        .connect_timeout_ms = c->attempt_ms,
                                        .backoff_min_ms = 5,
                                        .backoff_max_ms = 100,
                                        .tls = c->tls};
        s->ch = rpc_channel_new(c->base, s->host, s->port, &o);
    }
    return s->ch;
}

/* One blocking call waiting. */
struct sync_wait
{
    struct clerk *c;          /* the handle */
    ProtobufCClosure closure; /* the caller's */
    void *data;               /* its data */
    bool done;                /* it ran */
};

enum ck_try ck_try_of_status(int status)
{
    return status == RPC_E_UNAVAILABLE ? CK_TRY_REFUSED
           : status == RPC_E_OVERLOADED || status == RPC_E_DEADLINE_EXCEEDED
               ? CK_TRY_ANSWERED
               : CK_TRY_SILENT;
}

static void sync_done(const ProtobufCMessage *m, void *data)
{
    struct sync_wait *w = data;
    w->done = true;
    /* For the retry loops (refused_everywhere). */
    w->c->sync_try = m ? CK_TRY_ANSWERED : ck_try_of_status(rpc_last_status());
    snprintf(w->c->sync_error, sizeof w->c->sync_error, "%s",
             m ? "" : rpc_last_error());
    w->closure(m, w->data);
}

static void sync_invoke(ProtobufCService *svc,
                        unsigned method,
                        const ProtobufCMessage *input,
                        ProtobufCClosure closure,
                        void *data)
{
    struct ck_sync_service *s = (struct ck_sync_service *)svc;
    struct sync_wait w = {s->c, closure, data, false};
    s->inner->invoke(s->inner, method, input, sync_done, &w);
    while (!w.done) {
        event_base_loop(s->c->base, EVLOOP_ONCE);
    }
}

/* The blocking face of service @d of server i's channel. */
static ProtobufCService *sync_service(struct clerk *c,
                                      size_t i,
                                      const ProtobufCServiceDescriptor *d)
{
    struct ck_server *s = &c->servers[i];
    for (struct ck_sync_service *w = s->sync; w; w = w->next) {
        if (w->base.descriptor == d) {
            return &w->base;
        }
    }
    ProtobufCService *inner = rpc_channel_service(s->ch, d);
    struct ck_sync_service *w = inner ? calloc(1, sizeof *w) : NULL;
    if (!w) {
        return NULL;
    }
    w->base.descriptor = d;
    w->base.invoke = sync_invoke;
    w->inner = inner;
    w->c = c;
    w->next = s->sync;
    s->sync = w;
    return &w->base;
}

static ProtobufCService *service(struct clerk *c,
                                 size_t i,
                                 const ProtobufCServiceDescriptor *d,
                                 unsigned timeout_ms)
{
    struct ck_server *s = &c->servers[i];
    if (!ck_channel_of(c, i)) {
        return NULL;
    }
    /* See what the servers did since the loop last ran (a closed
     * connection), as ck_call does. */
    for (int n = 0; n < 4; n++) {
        event_base_loop(c->base, EVLOOP_NONBLOCK);
    }
    ensure_token(c, s, i, timeout_ms);
    if (s->token_gen != c->token_gen) {
        if (rpc_channel_set_auth_token(s->ch, c->token) != 0) {
            return NULL;
        }
        s->token_gen = c->token_gen;
    }
    rpc_channel_set_deadline(s->ch, timeout_ms);
    return sync_service(c, i, d);
}

/* Wait before another round of calls: @backoff ms (no later than the
 * deadline), then twice as long next time, up to BACKOFF_MAX_MS. */
static void back_off(uint64_t deadline, uint64_t *backoff)
{
    uint64_t t = ck_now_ms(), left = t < deadline ? deadline - t : 0;
    ck_sleep_ms(*backoff < left ? *backoff : left);
    *backoff = *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
}

/* The server after i; once every server failed in a row, back off. */
static size_t next_server(struct clerk *c,
                          size_t i,
                          size_t *failures,
                          uint64_t deadline,
                          uint64_t *backoff)
{
    if (++*failures >= c->n) {
        *failures = 0;
        back_off(deadline, backoff);
    }
    return (i + 1) % c->n;
}

bool ck_tried(struct clerk *c, size_t *run, enum ck_try t)
{
    if (t != CK_TRY_REFUSED) {
        *run = 0;
        c->reached |= t == CK_TRY_ANSWERED;
        return false;
    }
    return ++*run >= c->n && !c->reached && !c->closing;
}

bool ck_tried_locked(struct clerk *c, size_t *run, enum ck_try t)
{
    pthread_mutex_lock(&c->lock);
    bool end = ck_tried(c, run, t);
    pthread_mutex_unlock(&c->lock);
    return end;
}

void ck_refused_text(const struct clerk *c, char *out, size_t len)
{
    snprintf(out, len,
             "no server accepted a connection (all %zu refused: is the "
             "cluster running, at these addresses?)",
             c->n);
}

/* After a blocking call of a retry loop (the handle's lock held): true
 * when the loop ends at once with CLERK_UNAVAILABLE, as the op machine's
 * (ck_tried), the handle's errmsg saying why. */
static bool refused_everywhere(struct clerk *c, size_t *run)
{
    if (!ck_tried(c, run, c->sync_try)) {
        return false;
    }
    char why[300];
    ck_refused_text(c, why, sizeof why);
    ck_errmsgf(c, "%.250s (last: %.200s)", why, c->sync_error);
    return true;
}

/* ---------------------------------------------------------- operations */

void *ck_field(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    return f ? (char *)m + f->offset : NULL;
}

/* Which server does a leader hint's address name? */
static bool server_of_addr(struct clerk *c,
                           const char *leader_addr,
                           size_t *out)
{
    if (!leader_addr[0]) {
        return false;
    }
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->servers[i].addr, leader_addr) == 0) {
            *out = i;
            return true;
        }
    }
    /* A leader outside the list given to clerk_open: remember it, so a
     * handle that knows only some servers still reaches the leader. */
    char addr[300];
    snprintf(addr, sizeof addr, "%s", leader_addr);
    if (!add_server(c, addr)) {
        return false;
    }
    *out = c->n - 1;
    return true;
}

static int check_args(struct clerk *c, const void *key, size_t key_len)
{
    if (!c || (!key && key_len)) {
        return CLERK_INVALID;
    }
    if (key_len == 0) {
        ck_errmsgf(c, "the key is empty");
        return CLERK_BAD_REQUEST;
    }
    return CLERK_OK;
}

bool ck_hint_server(struct clerk *c, const char *addr, size_t *out)
{
    return server_of_addr(c, addr, out);
}

int clerk_get(struct clerk *c,
              const void *key,
              size_t key_len,
              void **value,
              size_t *value_len)
{
    int rv = check_args(c, key, key_len);
    if (rv || !value || !value_len) {
        return rv ? rv : CLERK_INVALID;
    }
    Raftkv__GetArgs g = RAFTKV__GET_ARGS__INIT;
    g.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    struct ck_call k = {.method = "Get",
                        .args = &g.base,
                        .take = ck_take_get,
                        .drop = ck_drop_value};
    struct ck_value *v;
    rv = ck_call(c, &k, (void **)&v);
    if (rv == CLERK_OK) {
        *value = v->data;
        *value_len = v->len;
        v->data = NULL;
    }
    ck_drop_value(v);
    return rv;
}

/* A session write: put, append or delete. */
static int write_op(struct clerk *c, const char *method, ProtobufCMessage *args)
{
    struct ck_call k = {
        .method = method, .args = args, .write = true, .session = true};
    void *none;
    return ck_call(c, &k, &none);
}

static int put_append(struct clerk *c,
                      Raftkv__PutOp op,
                      const void *key,
                      size_t key_len,
                      const void *value,
                      size_t value_len)
{
    int rv = check_args(c, key, key_len);
    if (rv || (!value && value_len)) {
        return rv ? rv : CLERK_INVALID;
    }
    Raftkv__PutAppendArgs p = RAFTKV__PUT_APPEND_ARGS__INIT;
    p.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    p.value = (ProtobufCBinaryData){value_len, (uint8_t *)value};
    p.op = op;
    return write_op(c, "PutAppend", &p.base);
}

int clerk_put(struct clerk *c,
              const void *key,
              size_t key_len,
              const void *value,
              size_t value_len)
{
    return put_append(c, RAFTKV__PUT_OP__PUT_OP_PUT, key, key_len, value,
                      value_len);
}

int clerk_append(struct clerk *c,
                 const void *key,
                 size_t key_len,
                 const void *value,
                 size_t value_len)
{
    return put_append(c, RAFTKV__PUT_OP__PUT_OP_APPEND, key, key_len, value,
                      value_len);
}

int clerk_delete(struct clerk *c, const void *key, size_t key_len)
{
    int rv = check_args(c, key, key_len);
    if (rv) {
        return rv;
    }
    Raftkv__DeleteArgs d = RAFTKV__DELETE_ARGS__INIT;
    d.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    return write_op(c, "Delete", &d.base);
}

int clerk_cas(struct clerk *c,
              const void *key,
              size_t key_len,
              const void *expected,
              size_t expected_len,
              const void *new_value,
              size_t new_len,
              void **current,
              size_t *current_len)
{
    if (current) {
        *current = NULL;
        if (current_len) {
            *current_len = 0;
        }
    }
    if (!expected && expected_len) {
        return CLERK_INVALID;
    }
    int rv = check_args(c, key, key_len);
    if (rv || (!new_value && new_len)) {
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
    struct ck_value *v;
    rv = ck_call(c, &k, (void **)&v);
    if (rv == CLERK_OK && !v->swapped) {
        rv = CLERK_CAS_MISMATCH;
        if (current && v->data) {
            *current = v->data;
            if (current_len) {
                *current_len = v->len;
            }
            v->data = NULL;
        }
    }
    ck_drop_value(v);
    return rv;
}
/* ------------------------------------------------------------- status */

/* The leader's replication view, from its Status answer. */
struct leader_view
{
    bool found;    /* a leader answered */
    uint64_t term; /* its term */
    size_t n;      /* entries */
    struct
    {
        uint64_t id;      /* node id */
        char addr[300];   /* its HOST:PORT in the cluster list */
        uint64_t match;   /* match index */
        uint64_t age_ms;  /* since it last answered */
        bool learner;     /* no vote (yet) */
    } nodes[MAX_SERVERS]; /* one per node */
};

struct status_out
{
    struct clerk_node_status *st;
    struct leader_view *view;
    uint64_t *cluster; /* the handle's cluster id (0: from this answer) */
    bool replied;
};

static void on_status(const Raftkv__StatusReply *r, void *data)
{
    struct status_out *o = data;
    struct clerk_node_status *st = o->st;
    if (!r) {
        /* A channel that carries the handle's cluster id is refused by a
         * node of another. */
        st->other_cluster = rpc_last_status() == RPC_E_WRONG_CLUSTER;
        snprintf(st->error, sizeof st->error, "%s%s",
                 st->other_cluster ? "answers for another cluster: " : "",
                 rpc_last_error());
        return;
    }
    o->replied = true;
    if (r->cluster_id && *o->cluster && r->cluster_id != *o->cluster) {
        /* Not a member: neither its role nor its leader are the
         * cluster's. */
        st->other_cluster = true;
        snprintf(st->error, sizeof st->error,
                 "answers for another cluster: this node is of cluster "
                 "%016llx, not %016llx",
                 (unsigned long long)r->cluster_id,
                 (unsigned long long)*o->cluster);
        return;
    }
    if (!*o->cluster) {
        *o->cluster = r->cluster_id; /* the first answer names it */
    }
    struct leader_view *v = o->view;
    if (!strcmp(r->role, "leader") && (!v->found || r->term > v->term)) {
        v->found = true;
        v->term = r->term;
        v->n = 0;
        for (size_t i = 0; i < r->n_progress && v->n < MAX_SERVERS; i++) {
            const Raftkv__ReplicaProgress *p = r->progress[i];
            v->nodes[v->n].id = p->node_id;
            snprintf(v->nodes[v->n].addr, sizeof v->nodes[v->n].addr, "%s",
                     p->address ? p->address : "");
            v->nodes[v->n].match = p->match_index;
            v->nodes[v->n].age_ms = p->ack_age_ms;
            v->nodes[v->n].learner = p->learner;
            v->n++;
        }
    }
    st->reachable = true;
    st->id = r->node_id;
    snprintf(st->role, sizeof st->role, "%s", r->role);
    st->term = r->term;
    st->leader = r->leader_id;
    st->commit_index = r->commit_index;
    st->applied_index = r->applied_index;
    st->last_log_index = r->last_log_index;
    st->snapshot_index = r->snapshot_index;
    st->disk_full = r->disk_full;
}

/* How far each server trails the leader that answered in the highest
 * term: its applied index against the leader's commit index, and the
 * leader's own view of its log (also for a server that did not answer,
 * found by address). */
static void fill_lag(struct clerk_node_status *st,
                     size_t n,
                     const struct leader_view *v)
{
    const struct clerk_node_status *leader = NULL;
    for (size_t i = 0; i < n && v->found; i++) {
        if (st[i].reachable && !strcmp(st[i].role, "leader") &&
            st[i].term == v->term) {
            leader = &st[i];
            break;
        }
    }
    if (!leader) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct clerk_node_status *s = &st[i];
        if (s->reachable) {
            s->lag_known = true;
            s->applied_lag = leader->commit_index > s->applied_index
                                 ? leader->commit_index - s->applied_index
                                 : 0;
        }
        for (size_t k = 0; k < v->n; k++) {
            if (s->reachable ? v->nodes[k].id != s->id
                             : strcmp(v->nodes[k].addr, s->address) != 0) {
                continue;
            }
            if (!s->reachable) {
                s->id = v->nodes[k].id;
            }
            s->progress_known = true;
            s->match_index = v->nodes[k].match;
            s->replication_lag = leader->last_log_index > s->match_index
                                     ? leader->last_log_index - s->match_index
                                     : 0;
            s->ack_age_ms = v->nodes[k].age_ms;
            break;
        }
    }
}

int clerk_status(struct clerk *c, struct clerk_node_status **nodes, size_t *n)
{
    if (!c || !nodes || !n) {
        return CLERK_INVALID;
    }
    struct clerk_node_status *st = calloc(c->n, sizeof *st);
    struct leader_view *view = calloc(1, sizeof *view);
    if (!st || !view) {
        free(st);
        free(view);
        return CLERK_NOMEM;
    }
    pthread_mutex_lock(&c->lock);
    size_t asked = 0;
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            /* Members the leader knows and the list did not name (added
             * since): ask them too. */
            size_t had = c->n;
            for (size_t k = 0; k < view->n; k++) {
                size_t to;
                if (view->nodes[k].addr[0]) {
                    server_of_addr(c, view->nodes[k].addr, &to);
                }
            }
            if (c->n == had) {
                break;
            }
            struct clerk_node_status *more = realloc(st, c->n * sizeof *st);
            if (!more) {
                break;
            }
            st = more;
            memset(st + had, 0, (c->n - had) * sizeof *st);
        }
        for (size_t i = asked; i < c->n; i++) {
            snprintf(st[i].address, sizeof st[i].address, "%s",
                     c->servers[i].addr);
            ProtobufCService *svc = service(
                c, i, &raftkv__admin_service__descriptor, c->attempt_ms);
            struct status_out o = {
                .st = &st[i], .view = view, .cluster = &c->cluster_id};
            Raftkv__StatusArgs a = RAFTKV__STATUS_ARGS__INIT;
            if (svc) {
                raftkv__admin_service__status(svc, &a, on_status, &o);
            }
        }
        asked = c->n;
    }
    /* A learner says it follows; the leader knows it has no vote. */
    for (size_t i = 0; i < asked; i++) {
        for (size_t k = 0; k < view->n; k++) {
            if (st[i].reachable && view->nodes[k].learner &&
                view->nodes[k].id == st[i].id &&
                !strcmp(st[i].role, "follower")) {
                snprintf(st[i].role, sizeof st[i].role, "learner");
            }
        }
    }
    pthread_mutex_unlock(&c->lock);
    fill_lag(st, asked, view);
    free(view);
    *nodes = st;
    *n = asked;
    return CLERK_OK;
}

/* ----------------------------------------------------- leader transfer */

/* What one TransferLeader call said. */
struct transfer_out
{
    bool replied;          /* a reply came (else rpc failure) */
    int error;             /* AdminError */
    char message[300];     /* the server's message, or the rpc error */
    uint64_t leader;       /* leader the server knows */
    char leader_addr[300]; /* its address */
};

static void on_transfer(const Raftkv__TransferLeaderReply *r, void *data)
{
    struct transfer_out *o = data;
    if (!r) {
        snprintf(o->message, sizeof o->message, "%s", rpc_last_error());
        return;
    }
    o->replied = true;
    o->error = r->error;
    o->leader = r->leader_id;
    snprintf(o->message, sizeof o->message, "%s", r->message ? r->message : "");
    snprintf(o->leader_addr, sizeof o->leader_addr, "%s",
             r->leader_address ? r->leader_address : "");
}

static void on_ping(const Raftkv__PingReply *r, void *data)
{
    struct transfer_out *o = data;
    o->replied = r != NULL;
    if (!r) {
        snprintf(o->message, sizeof o->message, "%s", rpc_last_error());
    }
}

/* Map an AdminService error that ends the operation to a clerk result; -1
 * for NOT_LEADER, which sends the clerk on to another server. */
static int admin_result(int error)
{
    switch (error) {
        case RAFTKV__ADMIN_ERROR__ADMIN_OK:
            return CLERK_OK;
        case RAFTKV__ADMIN_ERROR__ADMIN_NOT_LEADER:
            return -1;
        case RAFTKV__ADMIN_ERROR__ADMIN_UNKNOWN_NODE:
        case RAFTKV__ADMIN_ERROR__ADMIN_BAD_REQUEST:
            return CLERK_BAD_REQUEST;
        case RAFTKV__ADMIN_ERROR__ADMIN_TIMEOUT:
            return CLERK_TIMEOUT;
        case RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE:
            return CLERK_UNAVAILABLE;
        case RAFTKV__ADMIN_ERROR__ADMIN_UNAUTHENTICATED:
            return CLERK_UNAUTHENTICATED;
        case RAFTKV__ADMIN_ERROR__ADMIN_PERMISSION_DENIED:
            return CLERK_PERMISSION_DENIED;
        default:
            return CLERK_INTERNAL;
    }
}

int clerk_transfer_leader(struct clerk *c,
                          uint64_t target_id,
                          uint64_t *new_leader)
{
    if (!c) {
        return CLERK_INVALID;
    }
    if (new_leader) {
        *new_leader = 0;
    }
    pthread_mutex_lock(&c->lock);
    uint64_t deadline = ck_now_ms() + c->deadline_ms;
    uint64_t backoff = BACKOFF_MIN_MS;
    size_t i = c->leader, failures_in_round = 0, refused = 0;
    char last[400] = "no server tried";
    for (;;) {
        uint64_t now = ck_now_ms();
        if (now >= deadline) {
            break;
        }
        unsigned budget = (unsigned)(deadline - now);
        struct transfer_out o = {0};
        bool moved = false;
        /* The leader answers only once leadership moved, which takes up
         * to an election timeout: the call gets the whole remaining
         * deadline, so first make sure the server answers at all. */
        ProtobufCService *svc =
            service(c, i, &raftkv__admin_service__descriptor,
                    budget < c->attempt_ms ? budget : c->attempt_ms);
        if (svc) {
            Raftkv__PingArgs p = RAFTKV__PING_ARGS__INIT;
            raftkv__admin_service__ping(svc, &p, on_ping, &o);
        }
        now = ck_now_ms();
        if (svc && o.replied && now < deadline) {
            memset(&o, 0, sizeof o);
            svc = service(c, i, &raftkv__admin_service__descriptor,
                          (unsigned)(deadline - now));
            Raftkv__TransferLeaderArgs a = RAFTKV__TRANSFER_LEADER_ARGS__INIT;
            a.target_id = target_id;
            if (svc) {
                raftkv__admin_service__transfer_leader(svc, &a, on_transfer,
                                                       &o);
            }
        }
        if (!svc) {
            ck_errmsgf(c, "out of memory");
            pthread_mutex_unlock(&c->lock);
            return CLERK_NOMEM;
        }
        if (refused_everywhere(c, &refused)) {
            pthread_mutex_unlock(&c->lock);
            return CLERK_UNAVAILABLE;
        }
        snprintf(last, sizeof last, "%.150s: %.240s", c->servers[i].addr,
                 o.message[0] ? o.message : "no answer");
        int rv = o.replied ? admin_result(o.error) : -1;
        if (rv >= 0) {
            size_t to;
            if (o.leader && server_of_addr(c, o.leader_addr, &to)) {
                c->leader = to;
            }
            if (new_leader) {
                *new_leader = o.leader;
            }
            ck_errmsgf(c, "%s", o.message);
            pthread_mutex_unlock(&c->lock);
            return rv;
        }
        size_t to;
        if (o.replied && server_of_addr(c, o.leader_addr, &to) && to != i) {
            i = to;
            moved = true;
        }
        if (!moved) {
            i = next_server(c, i, &failures_in_round, deadline, &backoff);
        }
    }
    ck_errmsgf(c, "no leader answered within %u ms (last: %s)", c->deadline_ms,
               last);
    pthread_mutex_unlock(&c->lock);
    return CLERK_UNAVAILABLE;
}

/* ----------------------------------------------------------- members */

/* What one MemberList or MemberChange call said. */
struct member_out
{
    bool replied;                 /* a reply came (else rpc failure) */
    int error;                    /* AdminError */
    char message[600];            /* the server's message, or rpc error */
    uint64_t leader;              /* leader the server knows */
    char leader_addr[300];        /* its address */
    struct clerk_members *result; /* the members it sent */
};

static struct clerk_members *members_of(Raftkv__Member *const *m,
                                        size_t n,
                                        bool committed,
                                        uint64_t leader,
                                        uint64_t cluster,
                                        const uint64_t *removed,
                                        size_t n_removed)
{
    struct clerk_members *r = calloc(1, sizeof *r);
    if (!r) {
        return NULL;
    }
    r->members = calloc(n ? n : 1, sizeof *r->members);
    r->removed = calloc(n_removed ? n_removed : 1, sizeof *r->removed);
    if (!r->members || !r->removed) {
        clerk_members_free(r);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        r->members[i].id = m[i]->id;
        r->members[i].learner = m[i]->learner;
        snprintf(r->members[i].peer_address, sizeof r->members[i].peer_address,
                 "%s", m[i]->peer_address ? m[i]->peer_address : "");
        snprintf(r->members[i].address, sizeof r->members[i].address, "%s",
                 m[i]->address ? m[i]->address : "");
    }
    r->n = n;
    if (n_removed) {
        memcpy(r->removed, removed, n_removed * sizeof *removed);
    }
    r->n_removed = n_removed;
    r->committed = committed;
    r->leader_id = leader;
    r->cluster_id = cluster;
    return r;
}

void clerk_members_free(struct clerk_members *m)
{
    if (m) {
        free(m->members);
        free(m->removed);
        free(m);
    }
}

static void on_member_list(const Raftkv__MemberListReply *r, void *data)
{
    struct member_out *o = data;
    if (!r) {
        snprintf(o->message, sizeof o->message, "%s", rpc_last_error());
        return;
    }
    o->replied = true;
    o->error = r->error;
    o->leader = r->leader_id;
    snprintf(o->message, sizeof o->message, "%s", r->message ? r->message : "");
    snprintf(o->leader_addr, sizeof o->leader_addr, "%s",
             r->leader_address ? r->leader_address : "");
    /* Only the leader's list is the cluster's. */
    if (r->leader_id && r->leader_id == r->node_id) {
        o->result =
            members_of(r->members, r->n_members, r->committed, r->leader_id,
                       r->cluster_id, r->removed, r->n_removed);
    } else if (o->error == RAFTKV__ADMIN_ERROR__ADMIN_OK) {
        o->error = RAFTKV__ADMIN_ERROR__ADMIN_NOT_LEADER;
    }
}

static void on_member_change(const Raftkv__MemberChangeReply *r, void *data)
{
    struct member_out *o = data;
    if (!r) {
        snprintf(o->message, sizeof o->message, "%s", rpc_last_error());
        return;
    }
    o->replied = true;
    o->error = r->error;
    o->leader = r->leader_id;
    snprintf(o->message, sizeof o->message, "%s", r->message ? r->message : "");
    snprintf(o->leader_addr, sizeof o->leader_addr, "%s",
             r->leader_address ? r->leader_address : "");
    if (r->error == RAFTKV__ADMIN_ERROR__ADMIN_OK) {
        o->result =
            members_of(r->members, r->n_members, true, r->node_id, 0, NULL, 0);
    }
}

/* Call MemberList (args NULL) or MemberChange on the leader, following
 * its hints, to a final answer or the deadline. */
static int member_call(struct clerk *c,
                       const Raftkv__MemberChangeArgs *args,
                       struct clerk_members **out)
{
    pthread_mutex_lock(&c->lock);
    uint64_t deadline = ck_now_ms() + c->deadline_ms;
    uint64_t backoff = BACKOFF_MIN_MS;
    size_t i = c->leader, failures_in_round = 0, refused = 0;
    char last[700] = "no server tried";
    for (;;) {
        uint64_t now = ck_now_ms();
        if (now >= deadline) {
            break;
        }
        struct member_out o = {0};
        ProtobufCService *svc =
            service(c, i, &raftkv__admin_service__descriptor,
                    (unsigned)(deadline - now));
        if (!svc) {
            ck_errmsgf(c, "out of memory");
            pthread_mutex_unlock(&c->lock);
            return CLERK_NOMEM;
        }
        if (args) {
            raftkv__admin_service__member_change(svc, args, on_member_change,
                                                 &o);
        } else {
            Raftkv__MemberListArgs a = RAFTKV__MEMBER_LIST_ARGS__INIT;
            raftkv__admin_service__member_list(svc, &a, on_member_list, &o);
        }
        if (refused_everywhere(c, &refused)) {
            pthread_mutex_unlock(&c->lock);
            return CLERK_UNAVAILABLE;
        }
        snprintf(last, sizeof last, "%.150s: %.500s", c->servers[i].addr,
                 o.message[0] ? o.message : "no answer");
        int rv = o.replied ? admin_result(o.error) : -1;
        if (rv == CLERK_OK && !o.result) {
            rv = CLERK_NOMEM;
        }
        if (rv >= 0) {
            c->leader = i;
            ck_errmsgf(c, "%.500s", o.message);
            if (out) {
                *out = o.result;
            } else {
                clerk_members_free(o.result);
            }
            pthread_mutex_unlock(&c->lock);
            return rv;
        }
        clerk_members_free(o.result);
        size_t to;
        if (o.replied && o.leader && server_of_addr(c, o.leader_addr, &to) &&
            to != i) {
            i = to;
        } else {
            i = next_server(c, i, &failures_in_round, deadline, &backoff);
        }
    }
    ck_errmsgf(c, "no leader answered within %u ms (last: %s)", c->deadline_ms,
               last);
    pthread_mutex_unlock(&c->lock);
    return CLERK_UNAVAILABLE;
}

int clerk_member_list(struct clerk *c, struct clerk_members **out)
{
    if (!c || !out) {
        return CLERK_INVALID;
    }
    *out = NULL;
    return member_call(c, NULL, out);
}

int clerk_member_change(struct clerk *c,
                        enum clerk_member_change type,
                        uint64_t id,
                        const char *peer_address,
                        const char *address,
                        struct clerk_members **after)
{
    if (after) {
        *after = NULL;
    }
    if (!c || (unsigned)type > CLERK_MEMBER_UPDATE) {
        return CLERK_INVALID;
    }
    Raftkv__MemberChangeArgs a = RAFTKV__MEMBER_CHANGE_ARGS__INIT;
    a.type = (Raftkv__MemberChangeType)type;
    a.id = id;
    a.peer_address = (char *)(peer_address ? peer_address : "");
    a.address = (char *)(address ? address : "");
    return member_call(c, &a, after);
}

/* ------------------------------------------------------ fault injection */

struct fault_out
{
    int rv;                  /* result */
    char msg[300];           /* why not */
    struct clerk_fault *now; /* rules in force */
    size_t n_now;            /* their number */
};

static void on_fault(const Raftkv__FaultReply *r, void *data)
{
    struct fault_out *o = data;
    if (!r) {
        o->rv = CLERK_UNAVAILABLE;
        snprintf(o->msg, sizeof o->msg, "%s", rpc_last_error());
        return;
    }
    snprintf(o->msg, sizeof o->msg, "%s", r->message ? r->message : "");
    if (r->error == RAFTKV__ADMIN_ERROR__ADMIN_DISABLED) {
        o->rv = CLERK_DISABLED;
        return;
    }
    if (r->error == RAFTKV__ADMIN_ERROR__ADMIN_UNAUTHENTICATED ||
        r->error == RAFTKV__ADMIN_ERROR__ADMIN_PERMISSION_DENIED) {
        o->rv = r->error == RAFTKV__ADMIN_ERROR__ADMIN_UNAUTHENTICATED
                    ? CLERK_UNAUTHENTICATED
                    : CLERK_PERMISSION_DENIED;
        return;
    }
    if (r->error != RAFTKV__ADMIN_ERROR__ADMIN_OK) {
        o->rv = CLERK_BAD_REQUEST;
        return;
    }
    o->now = calloc(r->n_rules ? r->n_rules : 1, sizeof *o->now);
    if (!o->now) {
        o->rv = CLERK_NOMEM;
        return;
    }
    for (size_t i = 0; i < r->n_rules; i++) {
        const Raftkv__FaultRule *rule = r->rules[i];
        struct clerk_fault *f = &o->now[i];
        f->target = rule->target;
        if (rule->spec) {
            const Raftkv__FaultSpec *sp = rule->spec;
            f->cut = sp->cut;
            f->drop_request = sp->drop_request;
            f->drop_reply = sp->drop_reply;
            f->delay_min_ms = sp->delay_min_ms;
            f->delay_max_ms = sp->delay_max_ms;
            f->duplicate = sp->duplicate;
            f->reorder = sp->reorder;
            f->reorder_min_ms = sp->reorder_min_ms;
            f->reorder_max_ms = sp->reorder_max_ms;
        }
        if (rule->counts) {
            const Raftkv__FaultCounts *k = rule->counts;
            f->n_cut = k->cut;
            f->n_dropped_requests = k->dropped_requests;
            f->n_dropped_replies = k->dropped_replies;
            f->n_delayed = k->delayed;
            f->n_duplicated = k->duplicated;
            f->n_reordered = k->reordered;
        }
    }
    o->n_now = r->n_rules;
    o->rv = CLERK_OK;
}

/* What one SnapshotRead call said. */
struct snapread_out
{
    bool replied;          /* a reply came (else rpc failure) */
    int error;             /* AdminError */
    char message[300];     /* the server's message, or the rpc error */
    char leader_addr[300]; /* the leader it knows */
    uint64_t id, offset, index, term;
    bool done;
    uint8_t *data; /* copy of the chunk (malloc'd) */
    size_t len;
};

static void on_snapread(const Raftkv__SnapshotReadReply *r, void *data)
{
    struct snapread_out *o = data;
    if (!r) {
        snprintf(o->message, sizeof o->message, "%s", rpc_last_error());
        return;
    }
    o->replied = true;
    o->error = r->error;
    snprintf(o->message, sizeof o->message, "%s", r->message ? r->message : "");
    snprintf(o->leader_addr, sizeof o->leader_addr, "%s",
             r->leader_address ? r->leader_address : "");
    o->id = r->stream_id;
    o->offset = r->offset;
    o->index = r->index;
    o->term = r->term;
    o->done = r->done;
    o->len = r->data.len;
    o->data = r->data.len ? malloc(r->data.len) : NULL;
    if (o->data) {
        memcpy(o->data, r->data.data, r->data.len);
    } else if (r->data.len) {
        o->replied = false;
        snprintf(o->message, sizeof o->message, "out of memory");
    }
}

/* One SnapshotRead call to server i. */
static void snapread(struct clerk *c,
                     size_t i,
                     uint64_t id,
                     uint64_t offset,
                     struct snapread_out *o)
{
    memset(o, 0, sizeof *o);
    ProtobufCService *svc =
        service(c, i, &raftkv__admin_service__descriptor, c->attempt_ms);
    if (!svc) {
        snprintf(o->message, sizeof o->message, "out of memory");
        return;
    }
    Raftkv__SnapshotReadArgs a = RAFTKV__SNAPSHOT_READ_ARGS__INIT;
    a.stream_id = id;
    a.offset = offset;
    raftkv__admin_service__snapshot_read(svc, &a, on_snapread, o);
}

int clerk_snapshot_save(struct clerk *c,
                        clerk_sink sink,
                        void *arg,
                        uint64_t *index,
                        uint64_t *term,
                        uint64_t *bytes)
{
    if (!c || !sink) {
        return CLERK_INVALID;
    }
    pthread_mutex_lock(&c->lock);
    uint64_t deadline = ck_now_ms() + c->deadline_ms;
    uint64_t backoff = BACKOFF_MIN_MS, id = 0, off = 0;
    size_t i = c->leader, failures = 0, refused = 0;
    uint32_t crc = 0;
    uint8_t hold[4]; /* the last 4 bytes so far: the checksum, at the end */
    size_t n_hold = 0;
    int rv = CLERK_UNAVAILABLE;
    struct snapread_out o;
    ck_errmsgf(c, "no leader answered within %u ms", c->deadline_ms);
    for (;;) {
        if (ck_now_ms() >= deadline) {
            break;
        }
        snapread(c, i, id, off, &o);
        if (id == 0 && refused_everywhere(c, &refused)) {
            free(o.data);
            break;
        }
        if (!o.replied) {
            free(o.data);
            ck_errmsgf(c, "%.200s: %.300s", c->servers[i].addr, o.message);
            if (id == 0) {
                i = next_server(c, i, &failures, deadline, &backoff);
            } else {
                back_off(deadline, &backoff);
            }
            continue; /* the same offset again: the chunk is resent */
        }
        if (o.error == RAFTKV__ADMIN_ERROR__ADMIN_NOT_LEADER && id == 0) {
            size_t to;
            i = server_of_addr(c, o.leader_addr, &to) && to != i
                    ? to
                    : (i + 1) % c->n;
            continue;
        }
        if (o.error != RAFTKV__ADMIN_ERROR__ADMIN_OK ||
            (id != 0 && (o.id != id || o.offset != off))) {
            free(o.data);
            ck_errmsgf(c, "%.150s: %.200s%s", c->servers[i].addr,
                       o.message[0] ? o.message : "unexpected chunk",
                       id ? " (the snapshot read was interrupted: run the "
                            "save again)"
                          : "");
            rv = o.error == RAFTKV__ADMIN_ERROR__ADMIN_BAD_REQUEST && id == 0
                     ? CLERK_BAD_REQUEST
                 : o.error == RAFTKV__ADMIN_ERROR__ADMIN_UNAUTHENTICATED
                     ? CLERK_UNAUTHENTICATED
                 : o.error == RAFTKV__ADMIN_ERROR__ADMIN_PERMISSION_DENIED
                     ? CLERK_PERMISSION_DENIED
                     : CLERK_UNAVAILABLE;
            break;
        }
        if (id == 0) {
            id = o.id;
            c->leader = i;
            if (index) {
                *index = o.index;
            }
            if (term) {
                *term = o.term;
            }
        }
        /* The checksum covers every byte before the last 4. */
        if (o.len >= 4) {
            crc = rpc_crc32c(crc, hold, n_hold);
            crc = rpc_crc32c(crc, o.data, o.len - 4);
            memcpy(hold, o.data + o.len - 4, 4);
            n_hold = 4;
        } else {
            for (size_t k = 0; k < o.len; k++) {
                if (n_hold == 4) {
                    crc = rpc_crc32c(crc, hold, 1);
                    memmove(hold, hold + 1, 3);
                    n_hold = 3;
                }
                hold[n_hold++] = o.data[k];
            }
        }
        if (o.len && sink(o.data, o.len, arg) != 0) {
            free(o.data);
            ck_errmsgf(c, "writing the snapshot: %s", strerror(errno));
            rv = CLERK_INVALID;
            break;
        }
        free(o.data);
        off += o.len;
        deadline = ck_now_ms() + c->deadline_ms; /* per chunk */
        backoff = BACKOFF_MIN_MS;
        if (o.done) {
            uint32_t want = n_hold == 4 ? ((uint32_t)hold[0] << 24 |
                                           (uint32_t)hold[1] << 16 |
                                           (uint32_t)hold[2] << 8 | hold[3])
                                        : ~crc;
            if (want != crc) {
                ck_errmsgf(c,
                           "the snapshot's checksum does not match (%u bytes "
                           "read): it was damaged on the way",
                           (unsigned)off);
                rv = CLERK_INTERNAL;
            } else {
                ck_errmsgf(c, "%s", "");
                rv = CLERK_OK;
            }
            break;
        }
    }
    if (bytes) {
        *bytes = off;
    }
    pthread_mutex_unlock(&c->lock);
    return rv;
}

int clerk_fault(struct clerk *c,
                size_t server,
                bool clear,
                const struct clerk_fault *rules,
                size_t n_rules,
                uint64_t seed,
                struct clerk_fault **now,
                size_t *n_now)
{
    if (!c || server >= c->n || (n_rules && !rules) || (now && !n_now) ||
        n_rules > MAX_SERVERS + 1) {
        return CLERK_INVALID;
    }
    Raftkv__FaultRule r[MAX_SERVERS + 1];
    Raftkv__FaultRule *rp[MAX_SERVERS + 1];
    Raftkv__FaultSpec sp[MAX_SERVERS + 1];
    for (size_t i = 0; i < n_rules; i++) {
        raftkv__fault_rule__init(&r[i]);
        raftkv__fault_spec__init(&sp[i]);
        sp[i].cut = rules[i].cut;
        sp[i].drop_request = rules[i].drop_request;
        sp[i].drop_reply = rules[i].drop_reply;
        sp[i].delay_min_ms = rules[i].delay_min_ms;
        sp[i].delay_max_ms = rules[i].delay_max_ms;
        sp[i].duplicate = rules[i].duplicate;
        sp[i].reorder = rules[i].reorder;
        sp[i].reorder_min_ms = rules[i].reorder_min_ms;
        sp[i].reorder_max_ms = rules[i].reorder_max_ms;
        r[i].target = rules[i].target;
        r[i].spec = &sp[i];
        rp[i] = &r[i];
    }
    Raftkv__FaultArgs a = RAFTKV__FAULT_ARGS__INIT;
    a.clear = clear;
    a.n_rules = n_rules;
    a.rules = rp;
    a.seed = seed;
    struct fault_out o = {.rv = CLERK_UNAVAILABLE};
    pthread_mutex_lock(&c->lock);
    ProtobufCService *svc =
        service(c, server, &raftkv__admin_service__descriptor, c->attempt_ms);
    if (svc) {
        raftkv__admin_service__fault(svc, &a, on_fault, &o);
    } else {
        snprintf(o.msg, sizeof o.msg, "out of memory");
        o.rv = CLERK_NOMEM;
    }
    if (o.rv != CLERK_OK) {
        ck_errmsgf(c, "%.200s: %.300s", c->servers[server].addr, o.msg);
    }
    pthread_mutex_unlock(&c->lock);
    if (o.rv == CLERK_OK && now) {
        *now = o.now;
        *n_now = o.n_now;
    } else {
        free(o.now);
    }
    return o.rv;
}

/* ------------------------------------------------- users, roles, auth */

/* What one AuthService call to one server said. */
struct auth_out
{
    bool replied;            /* an answer came (else rpc failure) */
    char rpc_error[300];     /* rpc_last_error() */
    int err;                 /* AuthError */
    char message[300];       /* the server's message */
    uint64_t leader;         /* hint id */
    char leader_addr[300];   /* hint address */
    ProtobufCMessage *reply; /* a copy of the reply (final answers) */
};

/* The reply's err, message and leader fields, which every AuthService
 * reply has, found through its descriptor. */
static void on_auth_reply(const ProtobufCMessage *m, void *data)
{
    struct auth_out *o = data;
    if (!m) {
        snprintf(o->rpc_error, sizeof o->rpc_error, "%s", rpc_last_error());
        return;
    }
    o->replied = true;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const ProtobufCFieldDescriptor *f;
    f = protobuf_c_message_descriptor_get_field_by_name(d, "err");
    if (f) {
        o->err = *(const int *)((const char *)m + f->offset);
    }
    f = protobuf_c_message_descriptor_get_field_by_name(d, "message");
    if (f) {
        const char *s = *(char *const *)((const char *)m + f->offset);
        snprintf(o->message, sizeof o->message, "%s", s ? s : "");
    }
    f = protobuf_c_message_descriptor_get_field_by_name(d, "leader");
    if (f) {
        const Raftkv__AuthLeaderHint *h =
            *(Raftkv__AuthLeaderHint *const *)((const char *)m + f->offset);
        if (h) {
            o->leader = h->id;
            snprintf(o->leader_addr, sizeof o->leader_addr, "%s",
                     h->address ? h->address : "");
        }
    }
    /* Keep a copy: the reply lives only until this closure returns. */
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) {
        protobuf_c_message_pack(m, buf);
        o->reply = protobuf_c_message_unpack(d, NULL, len, buf);
        free(buf);
    }
}

static int auth_result(int err)
{
    switch (err) {
        case RAFTKV__AUTH_ERROR__AUTH_OK:
            return CLERK_OK;
        case RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED:
            return CLERK_UNAUTHENTICATED;
        case RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED:
            return CLERK_PERMISSION_DENIED;
        case RAFTKV__AUTH_ERROR__AUTH_USER_NOT_FOUND:
        case RAFTKV__AUTH_ERROR__AUTH_ROLE_NOT_FOUND:
        case RAFTKV__AUTH_ERROR__AUTH_PERMISSION_NOT_GRANTED:
        case RAFTKV__AUTH_ERROR__AUTH_ROLE_NOT_GRANTED:
            return CLERK_NOT_FOUND;
        case RAFTKV__AUTH_ERROR__AUTH_USER_EXISTS:
        case RAFTKV__AUTH_ERROR__AUTH_ROLE_EXISTS:
        case RAFTKV__AUTH_ERROR__AUTH_ROOT_NEEDED:
        case RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST:
        case RAFTKV__AUTH_ERROR__AUTH_NOT_ENABLED:
            return CLERK_BAD_REQUEST;
        case RAFTKV__AUTH_ERROR__AUTH_TIMEOUT:
            return CLERK_UNKNOWN_OUTCOME;
        default:
            return CLERK_INTERNAL;
    }
}

/* Run one AuthService call (with the lock held): follow leader hints,
 * try other servers until the deadline, authenticate again once when the
 * token was refused.
 * @param change the call changes the auth state (served by the leader)
 * @param reply set to a copy of the final reply (free with
 *   protobuf_c_message_free_unpacked), or NULL
 */
static int auth_run(struct clerk *c,
                    const char *method,
                    const ProtobufCMessage *args,
                    bool change,
                    ProtobufCMessage **reply)
{
    const ProtobufCServiceDescriptor *sd = &raftkv__auth_service__descriptor;
    const ProtobufCMethodDescriptor *md =
        protobuf_c_service_descriptor_get_method_by_name(sd, method);
    if (reply) {
        *reply = NULL;
    }
    if (!md) {
        return CLERK_INVALID;
    }
    unsigned index = (unsigned)(md - sd->methods);
    bool maybe_applied = false, reauthenticated = false;
    uint64_t deadline = ck_now_ms() + c->deadline_ms;
    uint64_t backoff = BACKOFF_MIN_MS;
    size_t i = c->leader, failures = 0, hops = 0, refused = 0;
    char last[400] = "no server tried";
    for (;;) {
        uint64_t now = ck_now_ms();
        if (now >= deadline) {
            break;
        }
        unsigned budget = (unsigned)(deadline - now);
        ProtobufCService *svc =
            service(c, i, sd, budget < c->attempt_ms ? budget : c->attempt_ms);
        if (!svc) {
            ck_errmsgf(c, "out of memory");
            return CLERK_NOMEM;
        }
        struct auth_out o = {0};
        svc->invoke(svc, index, args, (ProtobufCClosure)on_auth_reply, &o);
        if (refused_everywhere(c, &refused)) {
            return CLERK_UNAVAILABLE;
        }
        bool moved = false;
        if (!o.replied) {
            /* A refused connection never sent it. */
            maybe_applied |= change && c->sync_try != CK_TRY_REFUSED;
            snprintf(last, sizeof last, "%.150s: %.200s", c->servers[i].addr,
                     o.rpc_error);
        } else if (o.err == RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED &&
                   c->user && !reauthenticated) {
            reauthenticated = true;
            forget_token(c);
            if (o.reply) {
                protobuf_c_message_free_unpacked(o.reply, NULL);
            }
            continue;
        } else if (o.err == RAFTKV__AUTH_ERROR__AUTH_NOT_LEADER ||
                   o.err == RAFTKV__AUTH_ERROR__AUTH_UNAVAILABLE) {
            size_t to;
            snprintf(last, sizeof last, "%.150s: %.200s", c->servers[i].addr,
                     o.message);
            if (o.err == RAFTKV__AUTH_ERROR__AUTH_NOT_LEADER &&
                server_of_addr(c, o.leader_addr, &to) && to != i) {
                i = to;
                moved = true;
            }
        } else {
            if (change) {
                c->leader = i;
            }
            int rv = auth_result(o.err);
            ck_errmsgf(c, "%s", o.message);
            if (rv == CLERK_UNAUTHENTICATED && c->auth_msg[0]) {
                ck_errmsgf(c, "%s", c->auth_msg);
            }
            if (reply && rv == CLERK_OK) {
                *reply = o.reply;
            } else if (o.reply) {
                protobuf_c_message_free_unpacked(o.reply, NULL);
            }
            return rv;
        }
        if (o.reply) {
            protobuf_c_message_free_unpacked(o.reply, NULL);
        }
        if (!moved) {
            i = next_server(c, i, &failures, deadline, &backoff);
        } else if (++hops >= c->n) {
            hops = 0;
            back_off(deadline, &backoff);
        }
    }
    ck_errmsgf(c, "no leader answered within %u ms (last: %s)", c->deadline_ms,
               last);
    return change && maybe_applied ? CLERK_UNKNOWN_OUTCOME : CLERK_UNAVAILABLE;
}

static int auth_call(struct clerk *c,
                     const char *method,
                     const ProtobufCMessage *args,
                     bool change,
                     ProtobufCMessage **reply)
{
    pthread_mutex_lock(&c->lock);
    int rv = auth_run(c, method, args, change, reply);
    pthread_mutex_unlock(&c->lock);
    return rv;
}

static bool bad_name(struct clerk *c, const char *name)
{
    if (!c) {
        return true;
    }
    if (!name || !name[0]) {
        ck_errmsgf(c, "no name given");
        return true;
    }
    return false;
}

int clerk_user_add(struct clerk *c, const char *name, const char *password)
{
    if (bad_name(c, name) || !password) {
        return CLERK_INVALID;
    }
    Raftkv__UserAddArgs a = RAFTKV__USER_ADD_ARGS__INIT;
    a.name = (char *)name;
    a.password = (char *)password;
    return auth_call(c, "UserAdd", &a.base, true, NULL);
}

int clerk_user_delete(struct clerk *c, const char *name)
{
    if (bad_name(c, name)) {
        return CLERK_INVALID;
    }
    Raftkv__UserDeleteArgs a = RAFTKV__USER_DELETE_ARGS__INIT;
    a.name = (char *)name;
    return auth_call(c, "UserDelete", &a.base, true, NULL);
}

int clerk_user_passwd(struct clerk *c, const char *name, const char *password)
{
    if (bad_name(c, name) || !password) {
        return CLERK_INVALID;
    }
    Raftkv__UserChangePasswordArgs a = RAFTKV__USER_CHANGE_PASSWORD_ARGS__INIT;
    a.name = (char *)name;
    a.password = (char *)password;
    int rv = auth_call(c, "UserChangePassword", &a.base, true, NULL);
    if (rv == CLERK_OK && c->user && strcmp(c->user, name) == 0) {
        /* Our own: the token of the old one is void now. */
        pthread_mutex_lock(&c->lock);
        char *copy = strdup(password);
        if (copy) {
            memset(c->password, 0, strlen(c->password));
            free(c->password);
            c->password = copy;
        }
        forget_token(c);
        pthread_mutex_unlock(&c->lock);
    }
    return rv;
}

static int user_role(struct clerk *c,
                     const char *user,
                     const char *role,
                     bool grant)
{
    if (bad_name(c, user) || bad_name(c, role)) {
        return CLERK_INVALID;
    }
    if (grant) {
        Raftkv__UserGrantRoleArgs a = RAFTKV__USER_GRANT_ROLE_ARGS__INIT;
        a.user = (char *)user;
        a.role = (char *)role;
        return auth_call(c, "UserGrantRole", &a.base, true, NULL);
    }
    Raftkv__UserRevokeRoleArgs a = RAFTKV__USER_REVOKE_ROLE_ARGS__INIT;
    a.user = (char *)user;
    a.role = (char *)role;
    return auth_call(c, "UserRevokeRole", &a.base, true, NULL);
}

int clerk_user_grant_role(struct clerk *c, const char *user, const char *role)
{
    return user_role(c, user, role, true);
}

int clerk_user_revoke_role(struct clerk *c, const char *user, const char *role)
{
    return user_role(c, user, role, false);
}

/* Copy names into one allocation: the array, then the strings. */
static int copy_names(char *const *in, size_t n, char ***out, size_t *n_out)
{
    size_t bytes = (n ? n : 1) * sizeof(char *);
    for (size_t i = 0; i < n; i++) {
        bytes += strlen(in[i]) + 1;
    }
    char **names = malloc(bytes);
    if (!names) {
        return CLERK_NOMEM;
    }
    char *p = (char *)(names + (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(in[i]) + 1;
        memcpy(p, in[i], len);
        names[i] = p;
        p += len;
    }
    *out = names;
    *n_out = n;
    return CLERK_OK;
}

int clerk_user_get(struct clerk *c, const char *name, char ***roles, size_t *n)
{
    if (bad_name(c, name) || !roles || !n) {
        return CLERK_INVALID;
    }
    Raftkv__UserGetArgs a = RAFTKV__USER_GET_ARGS__INIT;
    a.name = (char *)name;
    ProtobufCMessage *m;
    int rv = auth_call(c, "UserGet", &a.base, false, &m);
    if (rv == CLERK_OK) {
        Raftkv__UserGetReply *r = (Raftkv__UserGetReply *)m;
        rv = copy_names(r->roles, r->n_roles, roles, n);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rv;
}

static int list_names(struct clerk *c,
                      const char *method,
                      const ProtobufCMessage *args,
                      char ***names,
                      size_t *n)
{
    if (!c || !names || !n) {
        return CLERK_INVALID;
    }
    ProtobufCMessage *m;
    int rv = auth_call(c, method, args, false, &m);
    if (rv == CLERK_OK) {
        Raftkv__NameListReply *r = (Raftkv__NameListReply *)m;
        rv = copy_names(r->names, r->n_names, names, n);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rv;
}

int clerk_user_list(struct clerk *c, char ***names, size_t *n)
{
    Raftkv__UserListArgs a = RAFTKV__USER_LIST_ARGS__INIT;
    return list_names(c, "UserList", &a.base, names, n);
}

int clerk_role_list(struct clerk *c, char ***names, size_t *n)
{
    Raftkv__RoleListArgs a = RAFTKV__ROLE_LIST_ARGS__INIT;
    return list_names(c, "RoleList", &a.base, names, n);
}

int clerk_role_add(struct clerk *c, const char *name)
{
    if (bad_name(c, name)) {
        return CLERK_INVALID;
    }
    Raftkv__RoleAddArgs a = RAFTKV__ROLE_ADD_ARGS__INIT;
    a.name = (char *)name;
    return auth_call(c, "RoleAdd", &a.base, true, NULL);
}

int clerk_role_delete(struct clerk *c, const char *name)
{
    if (bad_name(c, name)) {
        return CLERK_INVALID;
    }
    Raftkv__RoleDeleteArgs a = RAFTKV__ROLE_DELETE_ARGS__INIT;
    a.name = (char *)name;
    return auth_call(c, "RoleDelete", &a.base, true, NULL);
}

int clerk_role_grant_permission(struct clerk *c,
                                const char *role,
                                enum clerk_perm_type type,
                                const void *key,
                                size_t key_len,
                                const void *range_end,
                                size_t range_end_len)
{
    if (bad_name(c, role) || !key || !key_len ||
        (!range_end && range_end_len) || type < CLERK_PERM_READ ||
        type > CLERK_PERM_READWRITE) {
        return CLERK_INVALID;
    }
    Raftkv__Permission p = RAFTKV__PERMISSION__INIT;
    p.type = type == CLERK_PERM_READ ? RAFTKV__PERMISSION_TYPE__PERM_READ
             : type == CLERK_PERM_WRITE
                 ? RAFTKV__PERMISSION_TYPE__PERM_WRITE
                 : RAFTKV__PERMISSION_TYPE__PERM_READWRITE;
    p.key.data = (uint8_t *)key;
    p.key.len = key_len;
    p.range_end.data = (uint8_t *)range_end;
    p.range_end.len = range_end_len;
    Raftkv__RoleGrantPermissionArgs a =
        RAFTKV__ROLE_GRANT_PERMISSION_ARGS__INIT;
    a.name = (char *)role;
    a.perm = &p;
    return auth_call(c, "RoleGrantPermission", &a.base, true, NULL);
}

int clerk_role_revoke_permission(struct clerk *c,
                                 const char *role,
                                 const void *key,
                                 size_t key_len,
                                 const void *range_end,
                                 size_t range_end_len)
{
    if (bad_name(c, role) || !key || !key_len ||
        (!range_end && range_end_len)) {
        return CLERK_INVALID;
    }
    Raftkv__RoleRevokePermissionArgs a =
        RAFTKV__ROLE_REVOKE_PERMISSION_ARGS__INIT;
    a.name = (char *)role;
    a.key.data = (uint8_t *)key;
    a.key.len = key_len;
    a.range_end.data = (uint8_t *)range_end;
    a.range_end.len = range_end_len;
    return auth_call(c, "RoleRevokePermission", &a.base, true, NULL);
}

int clerk_role_get(struct clerk *c,
                   const char *name,
                   struct clerk_permission **perms,
                   size_t *n)
{
    if (bad_name(c, name) || !perms || !n) {
        return CLERK_INVALID;
    }
    Raftkv__RoleGetArgs a = RAFTKV__ROLE_GET_ARGS__INIT;
    a.name = (char *)name;
    ProtobufCMessage *m;
    int rv = auth_call(c, "RoleGet", &a.base, false, &m);
    if (rv != CLERK_OK) {
        return rv;
    }
    Raftkv__RoleGetReply *r = (Raftkv__RoleGetReply *)m;
    size_t count = r->n_perms, bytes = (count ? count : 1) * sizeof **perms;
    for (size_t i = 0; i < count; i++) {
        bytes += r->perms[i]->key.len + r->perms[i]->range_end.len + 2;
    }
    struct clerk_permission *out = malloc(bytes);
    if (!out) {
        protobuf_c_message_free_unpacked(m, NULL);
        return CLERK_NOMEM;
    }
    uint8_t *p = (uint8_t *)(out + (count ? count : 1));
    for (size_t i = 0; i < count; i++) {
        const Raftkv__Permission *src = r->perms[i];
        out[i].type = src->type == RAFTKV__PERMISSION_TYPE__PERM_READ
                          ? CLERK_PERM_READ
                      : src->type == RAFTKV__PERMISSION_TYPE__PERM_WRITE
                          ? CLERK_PERM_WRITE
                          : CLERK_PERM_READWRITE;
        out[i].key = p;
        out[i].key_len = src->key.len;
        if (src->key.len) {
            memcpy(p, src->key.data, src->key.len);
        }
        p[src->key.len] = 0;
        p += src->key.len + 1;
        out[i].range_end = p;
        out[i].range_end_len = src->range_end.len;
        if (src->range_end.len) {
            memcpy(p, src->range_end.data, src->range_end.len);
        }
        p[src->range_end.len] = 0;
        p += src->range_end.len + 1;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    *perms = out;
    *n = count;
    return CLERK_OK;
}

int clerk_auth_enable(struct clerk *c)
{
    if (!c) {
        return CLERK_INVALID;
    }
    Raftkv__AuthEnableArgs a = RAFTKV__AUTH_ENABLE_ARGS__INIT;
    return auth_call(c, "AuthEnable", &a.base, true, NULL);
}

int clerk_auth_disable(struct clerk *c)
{
    if (!c) {
        return CLERK_INVALID;
    }
    Raftkv__AuthDisableArgs a = RAFTKV__AUTH_DISABLE_ARGS__INIT;
    return auth_call(c, "AuthDisable", &a.base, true, NULL);
}

int clerk_auth_status(struct clerk *c, bool *enabled, uint64_t *revision)
{
    if (!c || !enabled) {
        return CLERK_INVALID;
    }
    Raftkv__AuthStatusArgs a = RAFTKV__AUTH_STATUS_ARGS__INIT;
    ProtobufCMessage *m;
    int rv = auth_call(c, "AuthStatus", &a.base, false, &m);
    if (rv == CLERK_OK) {
        Raftkv__AuthStatusReply *r = (Raftkv__AuthStatusReply *)m;
        *enabled = r->enabled;
        if (revision) {
            *revision = r->auth_revision;
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rv;
}

size_t clerk_prefix_end(const void *prefix, size_t len, void *out)
{
    const uint8_t *p = prefix;
    uint8_t *o = out;
    for (size_t i = len; i > 0; i--) {
        if (p[i - 1] < 0xff) {
            memcpy(o, p, i - 1);
            o[i - 1] = (uint8_t)(p[i - 1] + 1);
            return i;
        }
    }
    o[0] = 0;
    return 1;
}

/* ------------------------------------- for streams (watch.c, lease.c) */

size_t ck_n_servers(struct clerk *c)
{
    return c->n;
}

size_t ck_preferred_server(struct clerk *c)
{
    pthread_mutex_lock(&c->lock);
    size_t i = c->leader;
    pthread_mutex_unlock(&c->lock);
    return i;
}

const char *ck_server_addr(struct clerk *c, size_t i)
{
    return c->servers[i].addr;
}

struct rpc_channel *ck_channel_new(struct clerk *c, size_t i)
{
    pthread_mutex_lock(&c->lock);
    struct ck_server *s = &c->servers[i];
    /* Through the handle's own channel: authenticates when it must. */
    service(c, i, &raftkv__kv_service__descriptor, c->attempt_ms);
    struct rpc_channel_options o = {.deadline_ms = c->attempt_ms,
                                    .connect_timeout_ms = c->attempt_ms,
                                    .backoff_min_ms = 5,
                                    .backoff_max_ms = 100,
                                    .tls = c->tls};
    struct rpc_channel *ch = rpc_channel_new_blocking(s->host, s->port, &o);
    if (ch && c->token[0] && rpc_channel_set_auth_token(ch, c->token) != 0) {
        rpc_channel_free(ch);
        ch = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    return ch;
}

bool ck_server_of_addr(struct clerk *c, const char *addr, size_t *out)
{
    pthread_mutex_lock(&c->lock);
    bool found = server_of_addr(c, addr, out);
    pthread_mutex_unlock(&c->lock);
    return found;
}

void ck_found_leader(struct clerk *c, size_t i)
{
    pthread_mutex_lock(&c->lock);
    if (i < c->n) {
        c->leader = i;
    }
    pthread_mutex_unlock(&c->lock);
}

void ck_forget_token(struct clerk *c)
{
    pthread_mutex_lock(&c->lock);
    if (c->user) {
        forget_token(c);
    }
    pthread_mutex_unlock(&c->lock);
}

unsigned ck_deadline_ms(struct clerk *c)
{
    pthread_mutex_lock(&c->lock);
    unsigned ms = c->deadline_ms;
    pthread_mutex_unlock(&c->lock);
    return ms;
}

void ck_set_errmsg(struct clerk *c, const char *msg)
{
    ck_errmsgf(c, "%s", msg);
}

void ck_errmsgf(struct clerk *c, const char *fmt, ...)
{
    char buf[sizeof c->errmsg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->errmsg_lock);
    memcpy(c->errmsg, buf, sizeof buf);
    pthread_mutex_unlock(&c->errmsg_lock);
}

unsigned ck_attempt_ms(struct clerk *c)
{
    pthread_mutex_lock(&c->lock);
    unsigned ms = c->attempt_ms;
    pthread_mutex_unlock(&c->lock);
    return ms;
}
