/* server.c: accepts connections and dispatches framed calls to services. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "internal.h"

#define DEFAULT_MAX_OUTPUT (8u * 1024 * 1024)

struct rpc_conn
{
    struct rpc_server *server;    /* NULL once the server is freed */
    struct bufferevent *bev;      /* NULL once closed */
    struct rpc_decoder *dec;      /* request decoder */
    char peer[64];                /* "host:port" of the other end */
    int refs;                     /* the open connection + pending calls */
    bool read_paused;             /* reading stopped for output backlog */
    struct evbuffer *pending;     /* replies not yet given to bev: written
                                     straight to the socket at the flush */
    bool dirty;                   /* on the server's list of unflushed */
    struct rpc_conn *dirty_next;  /* that list (holds a reference) */
    struct rpc_conn *prev, *next; /* server's list of open connections */
};

/* One request being served: the closure_data handed to the handler. */
struct rpc_call
{
    struct rpc_conn *conn;                   /* holds a reference */
    uint64_t call_id;                        /* echoed in the reply */
    const ProtobufCMethodDescriptor *method; /* for the reply's type */
    struct rpc_method_stats *mstats;         /* its method's counts */
    bool drop_reply;                         /* fault: lose the reply */
    uint32_t hold_ms;                        /* fault: hold it back */
};

/* A request or a reply held back by injected faults. */
struct held
{
    struct rpc_server *server;  /* owner */
    struct rpc_conn *conn;      /* holds a reference */
    struct event *timer;        /* fires when it may go on */
    struct evbuffer *reply;     /* a packed reply, or NULL for a request */
    ProtobufCService *svc;      /* request: its service */
    unsigned index;             /* and method */
    ProtobufCMessage *input;    /* and unpacked args */
    uint64_t call_id;           /* and call id */
    struct rpc_fault_choice fc; /* and what else to do to it */
    struct held *prev, *next;   /* server's list */
};

struct rpc_server
{
    struct event_base *base;           /* caller's loop */
    struct rpc_server_options opts;    /* with defaults filled in */
    ProtobufCService **services;       /* registered services */
    size_t n_services;                 /* entries in services */
    struct evconnlistener **listeners; /* one per rpc_server_listen */
    size_t n_listeners;                /* entries in listeners */
    struct rpc_conn *conns;            /* open connections */
    struct rpc_conn *closed;           /* closed, still held by calls */
    struct rpc_server_stats stats;     /* counters */
    char errmsg[256];                  /* last failure's context */
    struct rpc_fault_state *faults;    /* per service, injected faults */
    struct rpc_method_stats **mstats;  /* per service, per method counts */
    struct held *held;                 /* requests and replies held back */
    struct rpc_conn *dirty;            /* replies queued since last flush */
    struct event *flush_ev;            /* flushes them after the I/O */
};

static void list_remove(struct rpc_conn **head, struct rpc_conn *c)
{
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        *head = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void list_push(struct rpc_conn **head, struct rpc_conn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head) {
        (*head)->prev = c;
    }
    *head = c;
}

static void conn_unref(struct rpc_conn *c)
{
    if (--c->refs == 0) {
        if (c->server) {
            list_remove(&c->server->closed, c);
        }
        free(c);
    }
}

/* Close a connection now; pending calls keep the struct alive. */
static void conn_close(struct rpc_conn *c)
{
    if (!c->bev) {
        return;
    }
    bufferevent_free(c->bev);
    c->bev = NULL;
    rpc_decoder_free(c->dec);
    c->dec = NULL;
    evbuffer_free(c->pending);
    c->pending = NULL;
    struct rpc_server *s = c->server;
    if (s) {
        list_remove(&s->conns, c);
        list_push(&s->closed, c);
        s->stats.open--;
    }
    conn_unref(c);
}

/* Stop reading while the peer leaves our replies unread; close it when the
 * backlog grows far past the cap anyway (deferred replies). */
static void check_output(struct rpc_conn *c)
{
    size_t cap = c->server->opts.max_output;
    size_t len = evbuffer_get_length(bufferevent_get_output(c->bev)) +
                 evbuffer_get_length(c->pending);
    if (len > 4 * cap) {
        rpc_logf(RPC_LOG_WARN,
                 "rpc: closing %s: %zu bytes of replies unread (cap %zu)",
                 c->peer, len, cap);
        c->server->stats.overflow_closes++;
        conn_close(c);
    } else if (len > cap && !c->read_paused) {
        c->read_paused = true;
        bufferevent_disable(c->bev, EV_READ);
    }
}

/* Where a reply goes: replies wait in c->pending and are written to the
 * socket at the next flush, all of a loop turn's in one write, without
 * the bufferevent asking epoll for writability. What the socket does not
 * take goes to the bufferevent, and so does every reply after it while
 * it holds any, which keeps replies in order. */
static struct evbuffer *reply_out(struct rpc_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    return evbuffer_get_length(out) ? out : c->pending;
}

/* Remember that @c has replies queued, and flush after this turn's I/O. */
static void mark_dirty(struct rpc_conn *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->refs++;
        c->dirty_next = c->server->dirty;
        c->server->dirty = c;
        event_active(c->server->flush_ev, EV_TIMEOUT, 0);
    }
}

static void flush_conn(struct rpc_conn *c)
{
    size_t len = evbuffer_get_length(c->pending);
    if (!len) {
        return;
    }
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int n = evbuffer_get_length(out)
                ? -1
                : evbuffer_write(c->pending, bufferevent_getfd(c->bev));
    if (n < 0 || (size_t)n < len) {
        /* The rest (and an error, if any) is the bufferevent's now; its
         * write callback resumes reading once the backlog drains. */
        evbuffer_add_buffer(out, c->pending);
    } else if (c->read_paused) {
        c->read_paused = false;
        bufferevent_enable(c->bev, EV_READ);
    }
}

void rpc_server_flush(struct rpc_server *s)
{
    struct rpc_conn *c = s->dirty;
    s->dirty = NULL;
    while (c) {
        struct rpc_conn *next = c->dirty_next;
        c->dirty = false;
        if (c->bev) {
            flush_conn(c);
        }
        conn_unref(c);
        c = next;
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rpc_server_flush(arg);
}

/* Send a reply frame (args NULL and status non-zero for an error). */
static void send_reply(struct rpc_conn *c,
                       uint64_t call_id,
                       int status,
                       const char *error,
                       const ProtobufCMessage *args,
                       struct evbuffer *hold)
{
    struct rpc_server *s = c->server;
    if (!c->bev || !s) {
        if (s) {
            s->stats.dropped_replies++;
        }
        return;
    }
    Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
    hdr.call_id = call_id;
    hdr.status = (Raftkv__RpcStatus)status;
    hdr.error = (char *)(error ? error : "");
    struct evbuffer *out = hold ? hold : reply_out(c);
    int rv = rpc_write_frame(out, &hdr, args, &s->opts.limits);
    if (rv == RPC_E_TOO_BIG) {
        rpc_logf(RPC_LOG_WARN, "rpc: reply to %s over the frame cap", c->peer);
        hdr.status = RAFTKV__RPC_STATUS__RPC_INTERNAL;
        hdr.error = "reply over the frame size cap";
        rv = rpc_write_frame(out, &hdr, NULL, &s->opts.limits);
    }
    if (rv != 0) {
        conn_close(c);
        return;
    }
    if (status != RPC_OK) {
        s->stats.error_replies++;
    }
    if (!hold) {
        mark_dirty(c);
        check_output(c);
    }
}

static void held_unlink(struct held *h)
{
    if (h->prev) {
        h->prev->next = h->next;
    } else {
        h->server->held = h->next;
    }
    if (h->next) {
        h->next->prev = h->prev;
    }
}

static void held_free(struct held *h)
{
    event_free(h->timer);
    if (h->reply) {
        evbuffer_free(h->reply);
    }
    if (h->input) {
        protobuf_c_message_free_unpacked(h->input, NULL);
    }
    conn_unref(h->conn);
    free(h);
}

static void on_held(evutil_socket_t fd, short what, void *arg);

/* Hold something back for ms on connection c (in the server's list). */
static struct held *held_new(struct rpc_conn *c, uint32_t ms)
{
    struct rpc_server *s = c->server;
    struct held *h = calloc(1, sizeof *h);
    if (!h || !(h->timer = evtimer_new(s->base, on_held, h))) {
        free(h);
        return NULL;
    }
    h->server = s;
    h->conn = c;
    c->refs++;
    h->next = s->held;
    if (s->held) {
        s->held->prev = h;
    }
    s->held = h;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(h->timer, &tv);
    return h;
}

/* Send a handler's answer (reply, or an error status), unless injected
 * faults lose it or hold it back. */
static void answer(struct rpc_call *call,
                   int status,
                   const char *error,
                   const ProtobufCMessage *reply)
{
    struct rpc_conn *c = call->conn;
    struct rpc_server *s = c->server;
    struct held *h = NULL;
    if (s && call->mstats) {
        call->mstats->answered[status >= 0 && status < RPC_STATUS_SLOTS - 1
                                   ? status
                                   : RPC_STATUS_SLOTS - 1]++;
    }
    if (call->drop_reply) {
        /* lost on purpose: counted by the fault stats, not as a failure */
    } else if (call->hold_ms && c->bev && s &&
               (h = held_new(c, call->hold_ms)) &&
               (h->reply = evbuffer_new())) {
        send_reply(c, call->call_id, status, error, reply, h->reply);
    } else {
        if (h) { /* no memory to hold it: send it now */
            held_unlink(h);
            held_free(h);
        }
        send_reply(c, call->call_id, status, error, reply, NULL);
    }
    conn_unref(c);
    free(call);
}

/* The closure given to handlers. */
static void call_done(const ProtobufCMessage *reply, void *closure_data)
{
    if (reply) {
        answer(closure_data, RPC_OK, NULL, reply);
    } else {
        answer(closure_data, RPC_E_INTERNAL, "handler failed", NULL);
    }
}

void rpc_call_fail(void *closure_data, int status, const char *msg)
{
    if (status <= 0 || status >= 100) {
        status = RPC_E_INTERNAL;
    }
    answer(closure_data, status, msg ? msg : rpc_strerror(status), NULL);
}

const char *rpc_call_peer(void *closure_data)
{
    struct rpc_call *call = closure_data;
    return call->conn->peer;
}

static ProtobufCService *find_service(struct rpc_server *s,
                                      const char *name,
                                      size_t *index)
{
    for (size_t i = 0; i < s->n_services; i++) {
        if (strcmp(s->services[i]->descriptor->name, name) == 0) {
            if (index) {
                *index = i;
            }
            return s->services[i];
        }
    }
    return NULL;
}

/* Generated services keep one handler pointer per method right after the
 * ProtobufCService, and protobuf_c_service_invoke_internal calls it without
 * checking for NULL. */
static bool has_handler(ProtobufCService *svc, unsigned index)
{
    typedef void (*handler_fn)(void);
    if (svc->invoke != protobuf_c_service_invoke_internal) {
        return true;
    }
    handler_fn *handlers = (handler_fn *)(svc + 1);
    return handlers[index] != NULL;
}

/* Run a handler (twice when the faults duplicate the request; the second
 * answer is lost). */
static void start_call(struct rpc_conn *c,
                       ProtobufCService *svc,
                       unsigned index,
                       const ProtobufCMessage *input,
                       uint64_t call_id,
                       const struct rpc_fault_choice *fc)
{
    for (int copy = 0; copy < (fc->duplicate ? 2 : 1) && c->bev; copy++) {
        struct rpc_call *call = malloc(sizeof *call);
        if (!call) {
            send_reply(c, call_id, RPC_E_OVERLOADED, "out of memory", NULL,
                       NULL);
            return;
        }
        call->conn = c;
        call->call_id = call_id;
        call->method = &svc->descriptor->methods[index];
        call->mstats = NULL;
        for (size_t k = 0; k < c->server->n_services; k++) {
            if (c->server->services[k] == svc) {
                call->mstats = &c->server->mstats[k][index];
            }
        }
        call->drop_reply = copy > 0 || fc->drop_reply;
        call->hold_ms = fc->hold_ms;
        c->refs++;
        c->server->stats.calls++;
        svc->invoke(svc, index, input, call_done, call);
    }
}

/* Returns non-zero when the connection was closed. */
static int dispatch(void *ctx, const struct rpc_frame *f)
{
    struct rpc_conn *c = ctx;
    struct rpc_server *s = c->server;
    const Raftkv__RpcHeader *h = f->header;
    char msg[256];

    size_t svc_index = 0;
    ProtobufCService *svc = find_service(s, h->service_name, &svc_index);
    if (!svc) {
        snprintf(msg, sizeof msg, "no service '%.100s'", h->service_name);
        send_reply(c, h->call_id, RPC_E_UNKNOWN_SERVICE, msg, NULL, NULL);
        return c->bev ? 0 : 1;
    }
    const ProtobufCMethodDescriptor *m =
        protobuf_c_service_descriptor_get_method_by_name(svc->descriptor,
                                                         h->method_name);
    unsigned index = m ? (unsigned)(m - svc->descriptor->methods) : 0;
    if (!m || !has_handler(svc, index)) {
        snprintf(msg, sizeof msg, "%s has no method '%.100s'",
                 svc->descriptor->name, h->method_name);
        send_reply(c, h->call_id, RPC_E_UNKNOWN_METHOD, msg, NULL, NULL);
        return c->bev ? 0 : 1;
    }
    ProtobufCMessage *input =
        protobuf_c_message_unpack(m->input, NULL, f->args_size, f->args);
    if (!input) {
        rpc_logf(RPC_LOG_WARN,
                 "rpc: bad frame from %s: %s.%s args of %zu bytes do not "
                 "unpack; closing",
                 c->peer, svc->descriptor->name, m->name, f->args_size);
        s->stats.bad_frames++;
        conn_close(c);
        return 1;
    }
    struct rpc_fault_choice fc = {0};
    if (s->faults[svc_index].active) {
        rpc_fault_plan(&s->faults[svc_index], &fc);
        if (fc.cut || fc.drop_request) {
            protobuf_c_message_free_unpacked(input, NULL);
            return 0; /* lost: no reply at all */
        }
        struct held *d = fc.delay_ms ? held_new(c, fc.delay_ms) : NULL;
        if (d) {
            d->svc = svc;
            d->index = index;
            d->input = input;
            d->call_id = h->call_id;
            d->fc = fc;
            return 0;
        }
    }
    start_call(c, svc, index, input, h->call_id, &fc);
    protobuf_c_message_free_unpacked(input, NULL);
    return c->bev ? 0 : 1;
}

/* A held request or reply goes on, if its connection still stands. */
static void on_held(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct held *h = arg;
    struct rpc_conn *c = h->conn;
    held_unlink(h);
    if (c->bev && c->server) {
        if (h->reply) {
            evbuffer_add_buffer(reply_out(c), h->reply);
            mark_dirty(c);
            check_output(c);
        } else {
            start_call(c, h->svc, h->index, h->input, h->call_id, &h->fc);
        }
    }
    held_free(h);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct rpc_conn *c = arg;
    c->refs++; /* handlers may close the connection under us */
    int rv = rpc_read_frames(bufferevent_get_input(bev), c->dec, dispatch, c);
    if (rv == RPC_DECODE_ERROR && c->bev) {
        rpc_logf(RPC_LOG_WARN, "rpc: bad frame from %s: %s; closing", c->peer,
                 rpc_decoder_errmsg(c->dec));
        c->server->stats.bad_frames++;
        conn_close(c);
    }
    conn_unref(c);
}

/* Output drained to the low watermark: read again if we had paused. */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct rpc_conn *c = arg;
    if (c->read_paused) {
        c->read_paused = false;
        bufferevent_enable(bev, EV_READ);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct rpc_conn *c = arg;
    if (what & BEV_EVENT_ERROR) {
        int err = EVUTIL_SOCKET_ERROR();
        rpc_logf(RPC_LOG_DEBUG, "rpc: connection from %s: %s", c->peer,
                 evutil_socket_error_to_string(err));
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        conn_close(c);
    }
}

int rpc_server_adopt(struct rpc_server *s, int fd, const char *peer)
{
    struct rpc_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return RPC_E_NOMEM;
    }
    c->dec = rpc_decoder_new(&s->opts.limits);
    c->pending = evbuffer_new();
    evutil_make_socket_nonblocking(fd);
    rpc_tune_socket(fd);
    c->bev = c->dec && c->pending
                 ? bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE)
                 : NULL;
    if (!c->bev) {
        rpc_decoder_free(c->dec);
        if (c->pending) {
            evbuffer_free(c->pending);
        }
        free(c);
        close(fd);
        return RPC_E_NOMEM;
    }
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "local");
    c->server = s;
    c->refs = 1;
    list_push(&s->conns, c);
    s->stats.accepted++;
    s->stats.open++;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, s->opts.max_output / 2, 0);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return 0;
}

static void on_accept(struct evconnlistener *l,
                      evutil_socket_t fd,
                      struct sockaddr *sa,
                      int socklen,
                      void *arg)
{
    (void)l;
    (void)socklen;
    struct rpc_server *s = arg;
    char peer[64];
    rpc_format_addr(sa, peer, sizeof peer);
    if (rpc_server_adopt(s, fd, peer) != 0) {
        rpc_logf(RPC_LOG_ERROR, "rpc: out of memory accepting %s", peer);
    }
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    rpc_logf(RPC_LOG_ERROR, "rpc: accept: %s",
             evutil_socket_error_to_string(err));
}

struct rpc_server *rpc_server_new(struct event_base *base,
                                  const struct rpc_server_options *opts)
{
    struct rpc_server *s = calloc(1, sizeof *s);
    if (!s) {
        return NULL;
    }
    s->base = base;
    if (opts) {
        s->opts = *opts;
    }
    if (!s->opts.limits.max_head) {
        s->opts.limits.max_head = RPC_DEFAULT_MAX_HEAD;
    }
    if (!s->opts.limits.max_args) {
        s->opts.limits.max_args = RPC_DEFAULT_MAX_ARGS;
    }
    if (!s->opts.max_output) {
        s->opts.max_output = DEFAULT_MAX_OUTPUT;
    }
    s->flush_ev = event_new(base, -1, 0, on_flush, s);
    if (!s->flush_ev) {
        free(s);
        return NULL;
    }
    return s;
}

void rpc_server_free(struct rpc_server *s)
{
    if (!s) {
        return;
    }
    for (size_t i = 0; i < s->n_listeners; i++) {
        evconnlistener_free(s->listeners[i]);
    }
    free(s->listeners);
    while (s->dirty) {
        struct rpc_conn *c = s->dirty;
        s->dirty = c->dirty_next;
        c->dirty = false;
        conn_unref(c);
    }
    while (s->held) {
        struct held *h = s->held;
        held_unlink(h);
        held_free(h);
    }
    while (s->conns) {
        conn_close(s->conns);
    }
    /* Connections still held by pending calls outlive the server; their
     * late replies are dropped (send_reply sees no server). */
    while (s->closed) {
        struct rpc_conn *c = s->closed;
        list_remove(&s->closed, c);
        c->server = NULL;
    }
    event_free(s->flush_ev);
    for (size_t i = 0; i < s->n_services; i++) {
        free(s->mstats[i]);
    }
    free(s->mstats);
    free(s->services);
    free(s->faults);
    free(s);
}

int rpc_server_add_service(struct rpc_server *s, ProtobufCService *service)
{
    if (!service || find_service(s, service->descriptor->name, NULL)) {
        return RPC_E_INVALID;
    }
    ProtobufCService **n =
        realloc(s->services, (s->n_services + 1) * sizeof *n);
    if (!n) {
        return RPC_E_NOMEM;
    }
    s->services = n;
    struct rpc_fault_state *f =
        realloc(s->faults, (s->n_services + 1) * sizeof *f);
    if (!f) {
        return RPC_E_NOMEM;
    }
    memset(&f[s->n_services], 0, sizeof *f);
    s->faults = f;
    struct rpc_method_stats **ms =
        realloc(s->mstats, (s->n_services + 1) * sizeof *ms);
    if (!ms) {
        return RPC_E_NOMEM;
    }
    s->mstats = ms;
    ms[s->n_services] =
        calloc(service->descriptor->n_methods + 1, sizeof **ms);
    if (!ms[s->n_services]) {
        return RPC_E_NOMEM;
    }
    n[s->n_services++] = service;
    return 0;
}

const struct rpc_method_stats *rpc_server_method_stats(
    const struct rpc_server *s,
    const char *service_name,
    size_t *n_methods)
{
    for (size_t i = 0; i < s->n_services; i++) {
        if (strcmp(s->services[i]->descriptor->name, service_name) == 0) {
            *n_methods = s->services[i]->descriptor->n_methods;
            return s->mstats[i];
        }
    }
    *n_methods = 0;
    return NULL;
}

int rpc_server_listen(struct rpc_server *s,
                      const char *host,
                      uint16_t port,
                      uint16_t *bound_port)
{
    struct evutil_addrinfo hints = {0}, *ai = NULL;
    char portstr[8];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_ADDRCONFIG;
    snprintf(portstr, sizeof portstr, "%u", port);
    int gai = evutil_getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "listen on %s:%u: %s", host, port,
                 evutil_gai_strerror(gai));
        return RPC_E_IO;
    }
    struct evconnlistener **nl =
        realloc(s->listeners, (s->n_listeners + 1) * sizeof *nl);
    if (!nl) {
        evutil_freeaddrinfo(ai);
        return RPC_E_NOMEM;
    }
    s->listeners = nl;
    struct evconnlistener *l = evconnlistener_new_bind(
        s->base, on_accept, s,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
        ai->ai_addr, (int)ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (!l) {
        snprintf(s->errmsg, sizeof s->errmsg, "listen on %s:%u: %s", host, port,
                 strerror(errno));
        return RPC_E_IO;
    }
    evconnlistener_set_error_cb(l, on_accept_error);
    s->listeners[s->n_listeners++] = l;
    if (bound_port) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &len);
        *bound_port = ss.ss_family == AF_INET6
                          ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                          : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return 0;
}

const char *rpc_server_errmsg(const struct rpc_server *s)
{
    return s->errmsg;
}

void rpc_server_get_stats(const struct rpc_server *s,
                          struct rpc_server_stats *out)
{
    *out = s->stats;
}

int rpc_server_set_faults(struct rpc_server *s,
                          const char *service,
                          const struct rpc_faults *f,
                          uint64_t seed)
{
    size_t i;
    if (!service || !find_service(s, service, &i)) {
        return RPC_E_INVALID;
    }
    return rpc_fault_set(&s->faults[i], f, seed);
}

const struct rpc_faults *rpc_server_faults(const struct rpc_server *s,
                                           const char *service)
{
    size_t i;
    if (!service || !find_service((struct rpc_server *)s, service, &i)) {
        return NULL;
    }
    return s->faults[i].active ? &s->faults[i].f : NULL;
}

void rpc_server_get_fault_stats(const struct rpc_server *s,
                                struct rpc_fault_stats *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < s->n_services; i++) {
        rpc_fault_stats_add(out, &s->faults[i].stats);
    }
}
