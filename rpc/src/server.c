/* server.c: accepts connections and dispatches framed calls to services. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "peerauth.h"

#define DEFAULT_MAX_OUTPUT (8u * 1024 * 1024)
#define LOG_EVERY_MS       1000u /* a repeating log line: at most this often */
#define ACCEPT_PAUSE_MS    100u  /* no accepting this long after EMFILE */
#define SPARE_FDS          64u   /* files beside connections: logs, data */

/* A log line that repeats under load (a flood of connections, a crowd of
 * slow clients) is written at most once a second, with the number of
 * repeats held back since. */
struct ratelog
{
    const char *what;   /* "connections refused": for the summary line */
    uint64_t last_ms;   /* when a line was last written (0: never) */
    uint64_t held_back; /* occurrences since then, not written */
};

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
    bool is_peer;                 /* called peer_service: not a client */
    bool probation;               /* admitted into peer_reserve */
    bool mid_frame;               /* the decoder holds part of a frame */
    uint64_t frames;              /* frames decoded so far */
    uint64_t opened_ms;           /* when it was accepted */
    uint64_t frame_ms;            /* when the partial frame began */
    uint64_t active_ms;           /* last read or reply */
    uint64_t paused_ms;           /* when reading paused for the backlog */
    bool counted_source;          /* counts toward its source's limit */
    struct evbuffer_cb_entry *budget_cb[3]; /* count input, output, pending
                                     toward the server's max_buffered */
    bool budget_paused;                     /* reading stopped for the budget */
    bool tls;                         /* over TLS: bev is a filter over raw */
    struct bufferevent *raw;          /* TLS: the socket's own bufferevent */
    bool tls_checked;                 /* its certificate was checked */
    char tls_name[128];               /* the CN of its verified certificate */
    struct rpc_peer_hs *hs;           /* peer handshake in progress, or NULL */
    bool hs_answered;                 /* its hello is answered: proof next */
    bool authed;                      /* passed the peer handshake */
    uint64_t peer_id;                 /* the id it proved (authed) */
    struct rpc_call *streams;         /* its calls that are open streams */
    uint32_t n_streams;               /* their number */
    uint32_t n_want_writable;         /* of them, waiting for room */
    struct share_slot *share;         /* rpc_stream_send_shared: the
                                         streams of a frame being gathered */
    size_t n_share, share_cap;        /* entries used, allocated */
    struct rpc_conn *share_next;      /* connections with ids gathered */
    uint32_t inflight;                /* calls started, not answered (open
                                         streams not counted) */
    uint32_t turn_frames;             /* requests handled since the loop
                                         last turned to others */
    uint64_t read_ms;                 /* when its socket was last read: no
                                         request in its input came later */
    struct event *more_ev;            /* handles requests left waiting by
                                         frames_per_turn (or NULL) */
    bool backlog;                     /* more_ev is due: reading from the
                                         socket waits for it */
    struct evbuffer_cb_entry *raw_cb; /* TLS: watches the socket's output,
                                          where the filter's bytes wait */
};

/* One request being served: the closure_data handed to the handler. */
struct rpc_call
{
    struct rpc_conn *conn;                     /* holds a reference */
    uint64_t call_id;                          /* echoed in the reply */
    const ProtobufCServiceDescriptor *service; /* its service */
    const ProtobufCMethodDescriptor *method;   /* for the reply's type */
    struct rpc_method_stats *mstats;           /* its method's counts */
    bool drop_reply;                           /* fault: lose the reply */
    uint32_t hold_ms;                          /* fault: hold it back */
    bool shared_ok;                            /* a stream's frames may be
                                                  shared (RpcHeader) */
    bool counted;                              /* in its connection's and
                                                  the server's inflight */
    uint64_t deadline;                         /* rpc_call_deadline (0) */
    uint64_t trace_id;                         /* rpc_call_trace_id */
    uint64_t read_ms;                          /* its request read by then */
    uint64_t start_ms;                         /* handed to its handler */
    char note[160];                            /* rpc_call_note's, or "" */
    char *auth_token;                          /* the header's, or NULL */
    /* Streams (rpc_stream_open): */
    rpc_stream_cb stream_cb;        /* the handler's, or NULL */
    void *stream_arg;               /* passed to it */
    struct event *stream_ev;        /* delivers its events */
    int stream_events;              /* RPC_STREAM_ events to deliver */
    bool want_writable;             /* a send found no room */
    bool cancelled;                 /* cancelled, or connection gone */
    struct rpc_call *sprev, *snext; /* connection's open streams */
    rpc_stream_message_cb msg_cb;   /* takes the caller's messages, or NULL */
    int fail_status;                /* a refused message: the last frame's
                                       status instead of the reply (0: none) */
    char *fail_msg;                 /* and its error text (owned), or NULL */
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
    char *auth_token;           /* and its header's token (or NULL) */
    bool shared_ok;             /* and its header's shared_ok */
    uint64_t deadline;          /* and its deadline (0: none) */
    uint64_t trace_id;          /* and its trace id */
    uint64_t read_ms;           /* and when it was read */
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
    char *peer_service;                /* copy of opts.peer_service */
    uint64_t trace_next;               /* new_trace_id's counter */
    uint64_t cluster_id;               /* rpc_server_set_cluster_id's */
    size_t clients;                    /* open connections but peers */
    struct event *sweep_ev;            /* closes connections past timeouts */
    struct event *accept_ev;           /* resumes accepting after EMFILE */
    struct ratelog refused_log;        /* "refusing connections" lines */
    struct ratelog timeout_log;        /* "closing a slow connection" */
    struct ratelog idle_log;           /* "closing an idle connection" */
    struct ratelog accept_log;         /* "accept: Too many open files" */
    struct ratelog hs_log;             /* "peer handshake failed" */
    struct ratelog tls_log;            /* "TLS handshake failed" */
    struct ratelog budget_log;         /* "over the buffer budget" */
    struct source **sources;           /* connections per source address */
    size_t buffered;                   /* bytes in every connection's input,
                                          output and pending buffers */
    size_t budget_paused;              /* connections paused for it */
    struct event *budget_ev;           /* resumes them once it drains */
};

/* Connections open from one source address (max_per_source). */
#define SOURCE_BUCKETS 1024u
struct source
{
    struct source *next; /* bucket chain */
    uint32_t n;          /* connections counted */
    char addr[64];       /* the address, without the port */
};

/* The address part of "host:port" or "[v6]:port". */
static void source_of(const char *peer, char *out, size_t len)
{
    snprintf(out, len, "%s", peer);
    char *colon = strrchr(out, ':');
    if (colon && colon != out) {
        *colon = 0;
    }
}

static struct source **source_slot(struct rpc_server *s, const char *addr)
{
    uint32_t h = 2166136261u;
    for (const char *p = addr; *p; p++) {
        h = (h ^ (uint8_t)*p) * 16777619u;
    }
    struct source **slot = &s->sources[h % SOURCE_BUCKETS];
    while (*slot && strcmp((*slot)->addr, addr) != 0) {
        slot = &(*slot)->next;
    }
    return slot;
}

/* Connections counted from addr now. */
static uint32_t source_count(struct rpc_server *s, const char *addr)
{
    struct source **slot = source_slot(s, addr);
    return *slot ? (*slot)->n : 0;
}

/* Count c toward its source; false when out of memory. */
static bool source_add(struct rpc_server *s, struct rpc_conn *c)
{
    char addr[64];
    source_of(c->peer, addr, sizeof addr);
    struct source **slot = source_slot(s, addr);
    if (!*slot) {
        struct source *e = calloc(1, sizeof *e);
        if (!e) {
            return false;
        }
        snprintf(e->addr, sizeof e->addr, "%s", addr);
        *slot = e;
    }
    (*slot)->n++;
    c->counted_source = true;
    return true;
}

static void source_drop(struct rpc_server *s, struct rpc_conn *c)
{
    if (!c->counted_source) {
        return;
    }
    c->counted_source = false;
    char addr[64];
    source_of(c->peer, addr, sizeof addr);
    struct source **slot = source_slot(s, addr);
    if (*slot && --(*slot)->n == 0) {
        struct source *e = *slot;
        *slot = e->next;
        free(e);
    }
}

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
        free(c->hs);
        free(c->share);
        free(c);
    }
}

static void log_limited(struct ratelog *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void resume_reading(struct rpc_conn *c);
static void uncount(struct rpc_call *call);

/* Over max_buffered, a connection is paused when its unread replies hold
 * at least this share of the budget (1/16). */
#define BUDGET_SHARE 16u

/* Every connection buffer reports its changes here, so that the server
 * knows what all of them hold together (max_buffered). */
static void on_buffer_change(struct evbuffer *b,
                             const struct evbuffer_cb_info *info,
                             void *arg)
{
    (void)b;
    struct rpc_server *s = arg;
    s->buffered += info->n_added;
    s->buffered -=
        info->n_deleted < s->buffered ? info->n_deleted : s->buffered;
    if (s->budget_paused && s->buffered < s->opts.max_buffered / 2 &&
        s->budget_ev) {
        event_active(s->budget_ev, EV_TIMEOUT, 0);
    }
}

static void budget_watch(struct rpc_conn *c)
{
    struct rpc_server *s = c->server;
    if (!s->opts.max_buffered) {
        return;
    }
    struct evbuffer *bufs[3] = {bufferevent_get_input(c->bev),
                                bufferevent_get_output(c->bev), c->pending};
    for (int i = 0; i < 3; i++) {
        c->budget_cb[i] = evbuffer_add_cb(bufs[i], on_buffer_change, s);
    }
}

/* Stop counting a connection's buffers (before they are freed). */
static void budget_unwatch(struct rpc_conn *c, struct rpc_server *s)
{
    struct evbuffer *bufs[3] = {bufferevent_get_input(c->bev),
                                bufferevent_get_output(c->bev), c->pending};
    for (int i = 0; i < 3; i++) {
        if (!c->budget_cb[i]) {
            continue;
        }
        size_t len = evbuffer_get_length(bufs[i]);
        s->buffered -= len < s->buffered ? len : s->buffered;
        evbuffer_remove_cb_entry(bufs[i], c->budget_cb[i]);
        c->budget_cb[i] = NULL;
    }
    if (c->budget_paused) {
        c->budget_paused = false;
        s->budget_paused--;
    }
}

/* Over the budget: this connection reads no more until the server's
 * buffers drain to half of it. Only between frames: a connection in the
 * middle of a request goes on until the request is whole and served (its
 * bytes are then freed; bounded by the args cap and the frame timeout),
 * so that paused connections hold no input and the budget can drain. */
static size_t conn_output(struct rpc_conn *c);

static size_t own_output(struct rpc_conn *c)
{
    return conn_output(c);
}

static void budget_check(struct rpc_conn *c)
{
    struct rpc_server *s = c->server;
    if (!s->opts.max_buffered || c->budget_paused || c->mid_frame ||
        s->buffered <= s->opts.max_buffered ||
        own_output(c) < s->opts.max_buffered / BUDGET_SHARE) {
        /* Over the budget, connections whose replies wait unread are
         * paused; one that holds little goes on. */
        return;
    }
    c->budget_paused = true;
    s->budget_paused++;
    s->stats.budget_pauses++;
    bufferevent_disable(c->bev, EV_READ);
    log_limited(&s->budget_log, RPC_LOG_WARN,
                "rpc: %zu bytes buffered for all connections, over the "
                "budget of %zu: %s reads no more until they drain",
                s->buffered, s->opts.max_buffered, c->peer);
}

/* A connection paused for the budget whose own replies were read goes on,
 * whatever the others hold. */
static void budget_maybe_resume(struct rpc_conn *c)
{
    struct rpc_server *s = c->server;
    if (c->budget_paused && c->bev &&
        own_output(c) < s->opts.max_buffered / BUDGET_SHARE / 2) {
        c->budget_paused = false;
        s->budget_paused--;
        if (!c->read_paused) {
            resume_reading(c);
        }
    }
}

static void on_budget(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rpc_server *s = arg;
    if (s->buffered >= s->opts.max_buffered / 2) {
        return;
    }
    for (struct rpc_conn *c = s->conns; c && s->budget_paused; c = c->next) {
        if (c->budget_paused) {
            c->budget_paused = false;
            s->budget_paused--;
            if (!c->read_paused) {
                resume_reading(c);
            }
        }
    }
}

/* Tell a stream's handler of an event, from the loop (never from inside
 * the rpc_ call that found it). A cancelled stream hears nothing more. */
static void stream_post(struct rpc_call *st, int event)
{
    if (st->cancelled) {
        return;
    }
    if (event == RPC_STREAM_CANCELLED) {
        st->cancelled = true;
        st->stream_events = RPC_STREAM_CANCELLED;
    } else {
        st->stream_events |= event;
    }
    event_active(st->stream_ev, EV_TIMEOUT, 0);
}

static void on_stream_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rpc_call *st = arg;
    int events = st->stream_events;
    st->stream_events = 0;
    if (events & RPC_STREAM_CANCELLED) {
        st->stream_cb(st, RPC_STREAM_CANCELLED, st->stream_arg);
    } else if (events & RPC_STREAM_WRITABLE) {
        st->stream_cb(st, RPC_STREAM_WRITABLE, st->stream_arg);
    }
}

/* Output has drained: streams that found no room may send again. */
static void streams_writable(struct rpc_conn *c)
{
    for (struct rpc_call *st = c->streams; st && c->n_want_writable;
         st = st->snext) {
        if (st->want_writable) {
            st->want_writable = false;
            c->n_want_writable--;
            stream_post(st, RPC_STREAM_WRITABLE);
        }
    }
}

/* Bytes of replies not yet written to the socket: queued, in the
 * bufferevent, and under TLS what the filter has encrypted into the
 * socket's own bufferevent (it takes all it is given). */
static size_t conn_output(struct rpc_conn *c)
{
    size_t n = evbuffer_get_length(bufferevent_get_output(c->bev)) +
               evbuffer_get_length(c->pending);
    if (c->raw) {
        n += evbuffer_get_length(bufferevent_get_output(c->raw));
    }
    return n;
}

/* TLS: the socket's output drained: streams waiting for room may go on
 * (the filter's own write callback comes as soon as it has handed its
 * bytes over, long before they leave). */
static void on_raw_output(struct evbuffer *b,
                          const struct evbuffer_cb_info *info,
                          void *arg)
{
    struct rpc_conn *c = arg;
    if (info->n_deleted && c->n_want_writable && c->server &&
        evbuffer_get_length(b) <
            c->server->opts.max_output / (2 * RPC_STREAM_SHARE)) {
        streams_writable(c);
    }
}

/* Close a connection now; pending calls keep the struct alive. */
static void conn_close(struct rpc_conn *c)
{
    if (!c->bev) {
        return;
    }
    if (c->server) {
        budget_unwatch(c, c->server);
    }
    if (c->raw_cb) {
        evbuffer_remove_cb_entry(bufferevent_get_output(c->raw), c->raw_cb);
        c->raw_cb = NULL;
    }
    if (c->more_ev) {
        event_free(c->more_ev);
        c->more_ev = NULL;
    }
    bufferevent_free(c->bev); /* (a TLS filter frees c->raw with it) */
    c->bev = NULL;
    c->raw = NULL;
    rpc_decoder_free(c->dec);
    c->dec = NULL;
    evbuffer_free(c->pending);
    c->pending = NULL;
    for (struct rpc_call *st = c->streams; st; st = st->snext) {
        stream_post(st, RPC_STREAM_CANCELLED);
    }
    struct rpc_server *s = c->server;
    if (s) {
        source_drop(s, c);
        list_remove(&s->conns, c);
        list_push(&s->closed, c);
        s->stats.open--;
        if (c->is_peer) {
            s->stats.peers--;
        } else {
            s->clients--;
        }
    }
    conn_unref(c);
}

static void log_limited(struct ratelog *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Log a line unless one of its kind went out less than a second ago. */
static void log_limited(struct ratelog *r, int level, const char *fmt, ...)
{
    uint64_t now = rpc_now_ms();
    if (r->last_ms && now - r->last_ms < LOG_EVERY_MS) {
        r->held_back++;
        return;
    }
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (r->held_back) {
        rpc_logf(level, "%s (and %llu more %s in the last %llu ms)", line,
                 (unsigned long long)r->held_back, r->what,
                 (unsigned long long)(now - r->last_ms));
    } else {
        rpc_logf(level, "%s", line);
    }
    r->last_ms = now;
    r->held_back = 0;
}

/* Write the count a rate-limited line held back, once it is due. */
static void log_held_back(struct ratelog *r, int level, uint64_t now)
{
    if (r->held_back && now - r->last_ms >= LOG_EVERY_MS) {
        rpc_logf(level, "rpc: %llu more %s in the last %llu ms",
                 (unsigned long long)r->held_back, r->what,
                 (unsigned long long)(now - r->last_ms));
        r->last_ms = now;
        r->held_back = 0;
    }
}

/* A connection called the peer service: it no longer counts as a client. */
static void mark_peer(struct rpc_conn *c)
{
    c->is_peer = true;
    c->probation = false;
    c->server->clients--;
    c->server->stats.peers++;
}

/* Close a connection admitted on probation that did not turn out a peer. */
static void refuse_conn(struct rpc_conn *c, const char *why)
{
    struct rpc_server *s = c->server;
    s->stats.refused_connections++;
    log_limited(&s->refused_log, RPC_LOG_WARN,
                "rpc: refusing connection from %s: over the limit of %u "
                "client connections, and %s",
                c->peer, s->opts.max_connections, why);
    conn_close(c);
}

/* Stop reading while the peer leaves our replies unread; close it when the
 * backlog grows far past the cap anyway (deferred replies). */
static void check_output(struct rpc_conn *c)
{
    size_t cap = c->server->opts.max_output;
    size_t len = conn_output(c);
    if (len > 4 * cap) {
        rpc_logf(RPC_LOG_WARN,
                 "rpc: closing %s: %zu bytes of replies unread (cap %zu)",
                 c->peer, len, cap);
        c->server->stats.overflow_closes++;
        conn_close(c);
    } else if (len > cap && !c->read_paused) {
        c->read_paused = true;
        c->paused_ms = rpc_now_ms();
        bufferevent_disable(c->bev, EV_READ);
    }
}

/* Reading goes on: a frame it had paused in the middle gets its full
 * timeout from now (the wait was ours, not the peer's), and requests that
 * arrived before the pause and wait in the input are served, from the
 * loop (never from inside rpc_server_flush). */
static void resume_reading(struct rpc_conn *c)
{
    c->read_paused = false;
    c->frame_ms = rpc_now_ms();
    if (c->budget_paused) {
        return; /* on_budget resumes it */
    }
    if (c->backlog) {
        return; /* on_more goes on, and reads again once done */
    }
    bufferevent_enable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(c->bev))) {
        bufferevent_trigger(
            c->bev, EV_READ,
            BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
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
    if (c->tls) {
        /* One piece, so that the turn's replies become few TLS records
         * (the filter makes a record of every piece it is handed); it
         * encrypts them into the socket's buffer at once, and they leave
         * now, not when the loop next polls for writability (which may be
         * after an fsync). */
        evbuffer_pullup(c->pending, -1);
        evbuffer_add_buffer(bufferevent_get_output(c->bev), c->pending);
        rpc_bev_flush(c->raw);
        budget_maybe_resume(c);
        return;
    }
    int n = evbuffer_get_length(out) || c->tls
                ? -1 /* TLS: the bufferevent encrypts it */
                : evbuffer_write(c->pending, bufferevent_getfd(c->bev));
    if (n < 0 || (size_t)n < len) {
        /* The rest (and an error, if any) is the bufferevent's now; its
         * write callback resumes reading once the backlog drains. */
        evbuffer_add_buffer(out, c->pending);
    } else {
        if (c->read_paused) {
            resume_reading(c);
        }
        streams_writable(c);
    }
    budget_maybe_resume(c);
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

/* Send a reply frame (args NULL and status non-zero for an error; more
 * for a stream's frames but the last). */
static void send_frame(struct rpc_conn *c,
                       uint64_t call_id,
                       uint64_t trace_id,
                       int status,
                       const char *error,
                       const ProtobufCMessage *args,
                       struct evbuffer *hold,
                       bool more)
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
    hdr.more = more;
    hdr.trace_id = trace_id;
    hdr.cluster_id = s->cluster_id;
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

static void send_reply(struct rpc_conn *c,
                       uint64_t call_id,
                       int status,
                       const char *error,
                       const ProtobufCMessage *args,
                       struct evbuffer *hold)
{
    send_frame(c, call_id, 0, status, error, args, hold, false);
}

/* A reply to a call refused before it started, with its trace id. */
static void send_traced(struct rpc_conn *c,
                        uint64_t call_id,
                        uint64_t trace_id,
                        int status,
                        const char *error)
{
    send_frame(c, call_id, trace_id, status, error, NULL, NULL, false);
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
    free(h->auth_token);
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

static void stream_unlink(struct rpc_call *st)
{
    struct rpc_conn *c = st->conn;
    if (st->sprev) {
        st->sprev->snext = st->snext;
    } else {
        c->streams = st->snext;
    }
    if (st->snext) {
        st->snext->sprev = st->sprev;
    }
    c->n_streams--;
    if (st->want_writable) {
        c->n_want_writable--;
    }
    event_free(st->stream_ev);
    st->stream_ev = NULL;
}

int rpc_stream_open(void *closure_data, rpc_stream_cb cb, void *arg)
{
    struct rpc_call *st = closure_data;
    struct rpc_conn *c = st->conn;
    if (!cb || st->stream_ev) {
        return RPC_E_INVALID;
    }
    if (!c->bev || !c->server) {
        return RPC_E_CONNECTION_LOST;
    }
    if (c->n_streams >= c->server->opts.max_streams) {
        return RPC_E_OVERLOADED;
    }
    st->stream_ev = event_new(c->server->base, -1, 0, on_stream_event, st);
    if (!st->stream_ev) {
        return RPC_E_NOMEM;
    }
    st->stream_cb = cb;
    st->stream_arg = arg;
    uncount(st); /* a stream lives long: max_streams bounds those */
    st->sprev = NULL;
    st->snext = c->streams;
    if (c->streams) {
        c->streams->sprev = st;
    }
    c->streams = st;
    c->n_streams++;
    return 0;
}

/* May a stream send a frame now? 0, RPC_E_CONNECTION_LOST (it is
 * ending), or RPC_E_OVERLOADED (no room: RPC_STREAM_WRITABLE comes). */
static int stream_room(struct rpc_call *st)
{
    struct rpc_conn *c = st->conn;
    if (st->cancelled || !c->bev || !c->server) {
        return RPC_E_CONNECTION_LOST;
    }
    size_t out = conn_output(c);
    if (out && out >= c->server->opts.max_output / RPC_STREAM_SHARE) {
        if (!st->want_writable) {
            st->want_writable = true;
            c->n_want_writable++;
        }
        return RPC_E_OVERLOADED;
    }
    return 0;
}

int rpc_stream_send(void *closure_data, const ProtobufCMessage *msg)
{
    struct rpc_call *st = closure_data;
    struct rpc_conn *c = st->conn;
    if (!st->stream_ev || !msg) {
        return RPC_E_INVALID;
    }
    int room = stream_room(st);
    if (room) {
        return room;
    }
    if (protobuf_c_message_get_packed_size(msg) >
        c->server->opts.limits.max_args) {
        return RPC_E_TOO_BIG; /* nothing sent: the stream goes on */
    }
    if (st->drop_reply) {
        return 0; /* a duplicate's (fault injection): its frames are lost */
    }
    send_frame(c, st->call_id, 0, RPC_OK, NULL, msg, NULL, true);
    return c->bev ? 0 : RPC_E_CONNECTION_LOST;
}

int rpc_stream_send_packed(void *closure_data, const void *args, size_t len)
{
    struct rpc_call *st = closure_data;
    struct rpc_conn *c = st->conn;
    if (!st->stream_ev || (!args && len)) {
        return RPC_E_INVALID;
    }
    int room = stream_room(st);
    if (room) {
        return room;
    }
    if (st->drop_reply) {
        return 0; /* a duplicate's (fault injection): its frames are lost */
    }
    Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
    hdr.call_id = st->call_id;
    hdr.more = true;
    int rv = rpc_write_frame_packed(reply_out(c), &hdr, args, len,
                                    &c->server->opts.limits);
    if (rv != 0) {
        return rv;
    }
    mark_dirty(c);
    check_output(c);
    return c->bev ? 0 : RPC_E_CONNECTION_LOST;
}

/* Most streams one shared frame names (its header stays far under the
 * head cap: at most 10 bytes an id). */
#define SHARE_MAX_IDS 1024u

/* A stream gathered into its connection's shared frame, and where its
 * result goes. */
struct share_slot
{
    struct rpc_call *st;
    size_t index;
};

/* Gather a stream into its connection's shared frame. */
static bool share_add(struct rpc_call *st,
                      size_t index,
                      struct rpc_conn **touched)
{
    struct rpc_conn *c = st->conn;
    if (c->n_share == c->share_cap) {
        size_t cap = c->share_cap ? c->share_cap * 2 : 16;
        struct share_slot *sl = realloc(c->share, cap * sizeof *sl);
        if (!sl) {
            return false;
        }
        c->share = sl;
        c->share_cap = cap;
    }
    if (c->n_share == 0) {
        c->share_next = *touched;
        *touched = c;
        c->refs++;
    }
    c->share[c->n_share++] = (struct share_slot){st, index};
    return true;
}

/* Write a connection's gathered streams as frames of up to SHARE_MAX_IDS
 * streams each; the streams of a frame that could not be written are
 * sent one by one instead (their results set). */
static void share_write(struct rpc_conn *c,
                        const void *args,
                        size_t len,
                        int *results)
{
    uint64_t ids[SHARE_MAX_IDS];
    size_t i = 0;
    bool wrote = false;
    while (i < c->n_share && c->bev) {
        size_t n = c->n_share - i;
        if (n > SHARE_MAX_IDS) {
            n = SHARE_MAX_IDS;
        }
        for (size_t j = 0; j < n; j++) {
            ids[j] = c->share[i + j].st->call_id;
        }
        Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
        hdr.call_id = ids[0];
        hdr.more = true;
        hdr.also_call_ids = ids + 1;
        hdr.n_also_call_ids = n - 1;
        if (rpc_write_frame_packed(reply_out(c), &hdr, args, len,
                                   &c->server->opts.limits) != 0) {
            break;
        }
        c->server->stats.shared_frames++;
        wrote = true;
        i += n;
    }
    for (; i < c->n_share; i++) {
        struct share_slot *sl = &c->share[i];
        results[sl->index] = rpc_stream_send_packed(sl->st, args, len);
    }
    c->n_share = 0;
    if (wrote && c->bev) {
        mark_dirty(c);
        check_output(c);
    }
}

void rpc_stream_send_shared(void *const *calls,
                            size_t n,
                            const void *args,
                            size_t len,
                            int *results)
{
    struct rpc_conn *touched = NULL;
    for (size_t i = 0; i < n; i++) {
        struct rpc_call *st = calls[i];
        if (!st->stream_ev || (!args && len)) {
            results[i] = RPC_E_INVALID;
            continue;
        }
        int room = stream_room(st);
        if (room || st->drop_reply) {
            results[i] = room; /* a duplicate's frames are lost (faults) */
            continue;
        }
        results[i] = 0;
        if (!st->shared_ok || !share_add(st, i, &touched)) {
            results[i] = rpc_stream_send_packed(st, args, len);
        }
    }
    while (touched) {
        struct rpc_conn *c = touched;
        touched = c->share_next;
        share_write(c, args, len, results);
        if (!c->bev) {
            for (size_t i = 0; i < n; i++) {
                struct rpc_call *st = calls[i];
                if (st->conn == c && results[i] == 0) {
                    results[i] = RPC_E_CONNECTION_LOST;
                }
            }
        }
        conn_unref(c);
    }
}

bool rpc_stream_cancelled(void *closure_data)
{
    struct rpc_call *st = closure_data;
    return st->cancelled || !st->conn->bev;
}

/* A cancel frame: the streams call_id of this connection end (one, or
 * two when fault injection delivered the request twice). */
static void cancel_stream(struct rpc_conn *c, uint64_t call_id)
{
    for (struct rpc_call *st = c->streams; st; st = st->snext) {
        if (st->call_id == call_id) {
            stream_post(st, RPC_STREAM_CANCELLED);
        }
    }
}

int rpc_stream_on_message(void *closure_data, rpc_stream_message_cb cb)
{
    struct rpc_call *st = closure_data;
    if (!st->stream_ev || !cb) {
        return RPC_E_INVALID;
    }
    st->msg_cb = cb;
    return 0;
}

/* End a stream for a message the server refused: its handler hears
 * RPC_STREAM_CANCELLED, and its last frame carries status and why. */
static void refuse_message(struct rpc_call *st, int status, const char *why)
{
    st->fail_status = status;
    st->fail_msg = strdup(why); /* (NULL: the status's name is sent) */
    stream_post(st, RPC_STREAM_CANCELLED);
}

/* A message of the caller's on an open stream (stream_msg). Returns
 * non-zero when the connection was closed. */
static int stream_message(struct rpc_conn *c, const struct rpc_frame *f)
{
    struct rpc_server *s = c->server;
    const Raftkv__RpcHeader *h = f->header;
    struct rpc_call *st = c->streams;
    while (st && (st->call_id != h->call_id || st->cancelled)) {
        st = st->snext;
    }
    if (!st) {
        /* Ended, cancelled (frames cross on the wire) or never opened;
         * an oversized one's args are skipped by the decoder. */
        s->stats.dropped_messages++;
        return 0;
    }
    const char *svc = st->service->name, *name = st->method->name;
    char msg[256];
    if (!st->msg_cb) {
        snprintf(msg, sizeof msg, "%s.%s takes no messages on its stream", svc,
                 name);
        log_limited(&s->timeout_log, RPC_LOG_WARN, "rpc: %s: %s", c->peer, msg);
        refuse_message(st, RPC_E_BAD_REQUEST, msg);
        return 0;
    }
    if (f->oversized) {
        snprintf(msg, sizeof msg,
                 RPC_TOO_BIG_PREFIX
                 "%s.%s stream message of %u bytes is over the server's cap "
                 "of %u",
                 svc, name, h->args_size, s->opts.limits.max_args);
        rpc_logf(RPC_LOG_WARN, "rpc: answered %s: %s; skipping its args",
                 c->peer, msg);
        s->stats.oversized_requests++;
        refuse_message(st, RPC_E_BAD_REQUEST, msg);
        return 0;
    }
    char why[200];
    if (s->opts.precheck &&
        !s->opts.precheck(st->service, st->method, f->args, f->args_size, why,
                          sizeof why, s->opts.precheck_arg)) {
        snprintf(msg, sizeof msg, "%s.%s message refused before unpacking: %s",
                 svc, name, why);
        log_limited(&s->timeout_log, RPC_LOG_WARN, "rpc: %s: %s", c->peer, msg);
        refuse_message(st, RPC_E_BAD_REQUEST, msg);
        return 0;
    }
    ProtobufCMessage *input = protobuf_c_message_unpack(st->method->input, NULL,
                                                        f->args_size, f->args);
    if (!input) {
        rpc_logf(RPC_LOG_WARN,
                 "rpc: bad frame from %s: a %s.%s stream message of %zu bytes "
                 "does not unpack; closing",
                 c->peer, svc, name, f->args_size);
        s->stats.bad_frames++;
        conn_close(c);
        return 1;
    }
    s->stats.stream_messages++;
    st->msg_cb(st, input, st->stream_arg); /* (may end the stream) */
    protobuf_c_message_free_unpacked(input, NULL);
    return c->bev ? 0 : 1;
}

/* Send a handler's answer (reply, or an error status), unless injected
 * faults lose it or hold it back. */
/* A call answered, or become a stream: no longer in flight. */
static void uncount(struct rpc_call *call)
{
    if (call->counted) {
        call->counted = false;
        call->conn->inflight--;
        if (call->conn->server) {
            call->conn->server->stats.inflight--;
        }
    }
}

/* A call that took --slow-request-ms or more: one line with where the
 * time went. */
static void log_slow(struct rpc_server *s,
                     const struct rpc_call *call,
                     int status,
                     uint64_t answered_ms)
{
    uint64_t now = rpc_now_ms();
    s->stats.slow++;
    rpc_logf(RPC_LOG_WARN,
             "rpc: slow call %016llx %s.%s from %s: %llu ms (queue %llu ms, "
             "handler %llu ms%s%s%s, reply %llu ms), %s",
             (unsigned long long)call->trace_id, call->service->name,
             call->method->name, call->conn->peer,
             (unsigned long long)(now - call->read_ms),
             (unsigned long long)(call->start_ms - call->read_ms),
             (unsigned long long)(answered_ms - call->start_ms),
             call->note[0] ? ": " : "", call->note, "",
             (unsigned long long)(now - answered_ms),
             status == RPC_OK ? "answered" : rpc_strerror(status));
}

static void answer(struct rpc_call *call,
                   int status,
                   const char *error,
                   const ProtobufCMessage *reply)
{
    struct rpc_conn *c = call->conn;
    struct rpc_server *s = c->server;
    struct held *h = NULL;
    uncount(call);
    if (call->stream_ev) {
        stream_unlink(call);
    }
    if (call->fail_status) {
        /* The server refused one of the stream's messages: that is how
         * it ends, whatever the handler answers. */
        status = call->fail_status;
        error = call->fail_msg ? call->fail_msg : rpc_strerror(status);
        reply = NULL;
    }
    if (s && call->mstats) {
        call->mstats->answered[status >= 0 && status < RPC_STATUS_SLOTS - 1
                                   ? status
                                   : RPC_STATUS_SLOTS - 1]++;
    }
    uint64_t answered_ms = rpc_now_ms();
    if (call->drop_reply) {
        /* lost on purpose: counted by the fault stats, not as a failure */
    } else if (call->hold_ms && c->bev && s &&
               (h = held_new(c, call->hold_ms)) &&
               (h->reply = evbuffer_new())) {
        send_frame(c, call->call_id, call->trace_id, status, error, reply,
                   h->reply, false);
    } else {
        if (h) { /* no memory to hold it: send it now */
            held_unlink(h);
            held_free(h);
        }
        send_frame(c, call->call_id, call->trace_id, status, error, reply, NULL,
                   false);
    }
    if (s && s->opts.slow_ms && !call->stream_cb &&
        answered_ms - call->read_ms >= s->opts.slow_ms) {
        log_slow(s, call, status, answered_ms);
    }
    conn_unref(c);
    free(call->fail_msg);
    free(call->auth_token);
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

const char *rpc_call_auth_token(void *closure_data)
{
    struct rpc_call *call = closure_data;
    return call->auth_token ? call->auth_token : "";
}

const char *rpc_call_tls_name(void *closure_data)
{
    struct rpc_call *call = closure_data;
    return call->conn->tls_name;
}

void rpc_server_set_cluster_id(struct rpc_server *s, uint64_t id)
{
    s->cluster_id = id;
}

uint64_t rpc_call_trace_id(void *closure_data)
{
    struct rpc_call *call = closure_data;
    return call->trace_id;
}

bool rpc_call_slow(void *closure_data)
{
    struct rpc_call *call = closure_data;
    struct rpc_server *s = call->conn->server;
    return s && s->opts.slow_ms &&
           rpc_now_ms() - call->read_ms >= s->opts.slow_ms;
}

void rpc_call_note(void *closure_data, const char *fmt, ...)
{
    struct rpc_call *call = closure_data;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->note, sizeof call->note, fmt, ap);
    va_end(ap);
}

uint64_t rpc_call_deadline(void *closure_data)
{
    struct rpc_call *call = closure_data;
    return call->deadline;
}

uint64_t rpc_call_peer_id(void *closure_data)
{
    struct rpc_call *call = closure_data;
    return call->conn->authed ? call->conn->peer_id : 0;
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
/* What a call takes from its request's header and arrival. */
struct call_head
{
    uint64_t call_id;
    const char *token; /* the header's auth token */
    bool shared_ok;
    uint64_t deadline; /* 0: none */
    uint64_t trace_id; /* the caller's, or one made here */
    uint64_t read_ms;  /* its request read by then */
};

static void start_call(struct rpc_conn *c,
                       ProtobufCService *svc,
                       unsigned index,
                       const ProtobufCMessage *input,
                       const struct call_head *hd,
                       const struct rpc_fault_choice *fc)
{
    uint64_t call_id = hd->call_id;
    const char *token = hd->token;
    for (int copy = 0; copy < (fc->duplicate ? 2 : 1) && c->bev; copy++) {
        struct rpc_call *call = malloc(sizeof *call);
        if (!call) {
            send_reply(c, call_id, RPC_E_OVERLOADED, "out of memory", NULL,
                       NULL);
            return;
        }
        call->auth_token = token && *token ? strdup(token) : NULL;
        if (token && *token && !call->auth_token) {
            free(call);
            send_reply(c, call_id, RPC_E_OVERLOADED, "out of memory", NULL,
                       NULL);
            return;
        }
        call->conn = c;
        call->call_id = call_id;
        call->service = svc->descriptor;
        call->method = &svc->descriptor->methods[index];
        call->mstats = NULL;
        for (size_t k = 0; k < c->server->n_services; k++) {
            if (c->server->services[k] == svc) {
                call->mstats = &c->server->mstats[k][index];
            }
        }
        call->drop_reply = copy > 0 || fc->drop_reply;
        call->hold_ms = fc->hold_ms;
        call->shared_ok = hd->shared_ok;
        call->deadline = hd->deadline;
        call->trace_id = hd->trace_id;
        call->read_ms = hd->read_ms;
        call->start_ms = rpc_now_ms();
        call->note[0] = '\0';
        call->stream_cb = NULL;
        call->stream_arg = NULL;
        call->stream_ev = NULL;
        call->stream_events = 0;
        call->want_writable = false;
        call->cancelled = false;
        call->sprev = call->snext = NULL;
        call->msg_cb = NULL;
        call->fail_status = 0;
        call->fail_msg = NULL;
        call->counted = !c->is_peer;
        if (call->counted) {
            c->inflight++;
            c->server->stats.inflight++;
        }
        c->refs++;
        c->server->stats.calls++;
        svc->invoke(svc, index, input, call_done, call);
    }
}

/* A trace id for a request that came without one: splitmix64 of a
 * counter from a random start, never 0. */
static uint64_t new_trace_id(struct rpc_server *s)
{
    return rpc_trace_id_next(&s->trace_next);
}

/* Returns non-zero when the connection was closed. */
static int dispatch(void *ctx, const struct rpc_frame *f)
{
    struct rpc_conn *c = ctx;
    struct rpc_server *s = c->server;
    const Raftkv__RpcHeader *h = f->header;
    char msg[256];

    c->frames++;
    if (h->cancel && !c->probation) {
        cancel_stream(c, h->call_id);
        return 0;
    }
    if (h->stream_msg && !c->probation) {
        return stream_message(c, f);
    }
    if (!c->is_peer && s->peer_service &&
        strcmp(h->service_name, s->peer_service) == 0) {
        mark_peer(c);
    } else if (c->probation) {
        refuse_conn(c, "its first call is not a peer's");
        return 1;
    }
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
    /* The caller's id for the call, or one made here: every answer and
     * log line about the call from here on carries it. */
    uint64_t trace_id = h->trace_id ? h->trace_id : new_trace_id(s);
    if (h->cluster_id && h->cluster_id != s->cluster_id) {
        /* Meant for another cluster (an address that changed hands): not
         * started, whatever it is. A server that does not know its
         * cluster yet (a new cluster before its first leader named it, a
         * node that has not caught up) cannot tell: it refuses too. */
        if (s->cluster_id) {
            snprintf(msg, sizeof msg,
                     "this node is of cluster %016llx, not %016llx; not "
                     "started",
                     (unsigned long long)s->cluster_id,
                     (unsigned long long)h->cluster_id);
        } else {
            snprintf(msg, sizeof msg,
                     "this node does not know its cluster yet, so cannot "
                     "serve a call for cluster %016llx; not started",
                     (unsigned long long)h->cluster_id);
        }
        s->stats.wrong_cluster++;
        s->mstats[svc_index][index].answered[RPC_E_WRONG_CLUSTER]++;
        send_traced(c, h->call_id, trace_id, RPC_E_WRONG_CLUSTER, msg);
        return c->bev ? 0 : 1;
    }
    if (!c->is_peer && (c->inflight >= s->opts.max_inflight ||
                        s->stats.inflight >= s->opts.max_inflight_total)) {
        /* Shed: answered at once, never started; the caller retries
         * later (libclerk backs off). */
        bool own = c->inflight >= s->opts.max_inflight;
        snprintf(msg, sizeof msg,
                 "server busy: %llu calls in flight %s (limit %u); retry "
                 "later",
                 (unsigned long long)(own ? c->inflight : s->stats.inflight),
                 own ? "on this connection" : "on this server",
                 own ? s->opts.max_inflight : s->opts.max_inflight_total);
        s->stats.shed++;
        s->mstats[svc_index][index].answered[RPC_E_OVERLOADED]++;
        send_traced(c, h->call_id, trace_id, RPC_E_OVERLOADED, msg);
        return c->bev ? 0 : 1;
    }
    /* The caller's deadline, from the latest the request can have come
     * in (the last read of the socket): a call found expired surely is. */
    uint64_t deadline =
        h->timeout_ms && !c->is_peer ? c->read_ms + h->timeout_ms : 0;
    if (deadline && rpc_now_ms() >= deadline) {
        snprintf(msg, sizeof msg,
                 "%s.%s waited past the caller's timeout of %u ms before "
                 "it could start; not started",
                 svc->descriptor->name, m->name, h->timeout_ms);
        s->stats.expired++;
        s->mstats[svc_index][index].answered[RPC_E_DEADLINE_EXCEEDED]++;
        send_traced(c, h->call_id, trace_id, RPC_E_DEADLINE_EXCEEDED, msg);
        return c->bev ? 0 : 1;
    }
    if (f->oversized) {
        /* The decoder skips the args; the stream stays in step. */
        snprintf(msg, sizeof msg,
                 RPC_TOO_BIG_PREFIX
                 "%s.%s args of %u bytes are over the server's cap of %u",
                 svc->descriptor->name, m->name, h->args_size,
                 s->opts.limits.max_args);
        rpc_logf(RPC_LOG_WARN,
                 "rpc: answered %s: %s; skipping its args (trace %016llx)",
                 c->peer, msg, (unsigned long long)trace_id);
        s->stats.oversized_requests++;
        s->mstats[svc_index][index].answered[RPC_E_BAD_REQUEST]++;
        send_traced(c, h->call_id, trace_id, RPC_E_BAD_REQUEST, msg);
        return c->bev ? 0 : 1;
    }
    char why[200];
    if (s->opts.precheck &&
        !s->opts.precheck(svc->descriptor, m, f->args, f->args_size, why,
                          sizeof why, s->opts.precheck_arg)) {
        snprintf(msg, sizeof msg, "%s.%s refused before unpacking: %s",
                 svc->descriptor->name, m->name, why);
        log_limited(&s->timeout_log, RPC_LOG_WARN,
                    "rpc: %s: %s (trace %016llx)", c->peer, msg,
                    (unsigned long long)trace_id);
        s->mstats[svc_index][index].answered[RPC_E_BAD_REQUEST]++;
        send_traced(c, h->call_id, trace_id, RPC_E_BAD_REQUEST, msg);
        return c->bev ? 0 : 1;
    }
    ProtobufCMessage *input =
        protobuf_c_message_unpack(m->input, NULL, f->args_size, f->args);
    if (!input) {
        rpc_logf(RPC_LOG_WARN,
                 "rpc: bad frame from %s: %s.%s args of %zu bytes do not "
                 "unpack; closing (trace %016llx)",
                 c->peer, svc->descriptor->name, m->name, f->args_size,
                 (unsigned long long)trace_id);
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
            d->auth_token =
                h->auth_token && *h->auth_token ? strdup(h->auth_token) : NULL;
            d->shared_ok = h->shared_ok;
            d->deadline = deadline;
            d->trace_id = trace_id;
            d->read_ms = c->read_ms;
            d->fc = fc;
            return 0;
        }
    }
    struct call_head hd = {h->call_id, h->auth_token, h->shared_ok,
                           deadline,   trace_id,      c->read_ms};
    start_call(c, svc, index, input, &hd, &fc);
    protobuf_c_message_free_unpacked(input, NULL);
    return c->bev ? 0 : 1;
}

/* Dispatch a frame; then stop while reading is paused for unread replies,
 * so that requests already read (a pipelining client's) wait in the input
 * instead of adding replies past the cap. */
static int dispatch_unless_paused(void *ctx, const struct rpc_frame *f)
{
    struct rpc_conn *c = ctx;
    int stop = dispatch(c, f);
    if (stop || c->read_paused) {
        return stop ? stop : 2;
    }
    if (!c->is_peer && ++c->turn_frames >= c->server->opts.frames_per_turn) {
        return 3; /* its share of this turn: the others first */
    }
    return 0;
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
            struct call_head hd = {h->call_id,  h->auth_token, h->shared_ok,
                                   h->deadline, h->trace_id,   h->read_ms};
            start_call(c, h->svc, h->index, h->input, &hd, &h->fc);
        }
    }
    held_free(h);
}

/* Send a handshake message; with a refusal, log it and close. */
static void hs_send(struct rpc_conn *c,
                    const uint8_t *msg,
                    size_t len,
                    uint32_t code)
{
    struct rpc_server *s = c->server;
    bufferevent_write(c->bev, msg, len);
    if (code == RPC_PEER_OK) {
        return;
    }
    rpc_bev_flush(c->raw ? c->raw : c->bev); /* the reason leaves first */
    s->stats.handshakes_failed++;
    uint64_t cl = c->hs ? c->hs->peer_cluster : 0;
    uint64_t id = c->hs ? c->hs->peer_id : 0;
    if (code == RPC_PEER_OTHER_CLUSTER) {
        log_limited(&s->hs_log, RPC_LOG_WARN,
                    "rpc: refused peer %s (node %llu): it belongs to cluster "
                    "%016llx, this node to cluster %016llx",
                    c->peer, (unsigned long long)id, (unsigned long long)cl,
                    (unsigned long long)s->opts.peer_auth->cluster_id);
    } else {
        log_limited(&s->hs_log, RPC_LOG_WARN,
                    "rpc: refused peer connection from %s (says node %llu): "
                    "%s",
                    c->peer, (unsigned long long)id, rpc_peer_code_str(code));
    }
    conn_close(c);
}

/* Close the oldest connections of a peer id beyond max_per_peer, keeping
 * c (the newest). A node that reconnects after a network fault leaves
 * half-open connections behind; nothing else makes more than one. */
static void limit_per_peer(struct rpc_server *s, struct rpc_conn *c)
{
    uint32_t seen = 0;
    struct rpc_conn *next;
    for (struct rpc_conn *o = s->conns; o; o = next) {
        next = o->next; /* newest first */
        if (o->authed && o->peer_id == c->peer_id &&
            ++seen > s->opts.max_per_peer) {
            rpc_logf(RPC_LOG_INFO,
                     "rpc: closing %s: node %llu holds more than %u peer "
                     "connections",
                     o->peer, (unsigned long long)o->peer_id,
                     s->opts.max_per_peer);
            conn_close(o);
        }
    }
}

size_t rpc_server_drop_peer(struct rpc_server *s, uint64_t peer_id)
{
    size_t closed = 0;
    struct rpc_conn *next;
    for (struct rpc_conn *o = s->conns; o; o = next) {
        next = o->next;
        if (o->authed && o->peer_id == peer_id) {
            rpc_logf(RPC_LOG_INFO,
                     "rpc: closing %s: node %llu is refused from now on",
                     o->peer, (unsigned long long)o->peer_id);
            conn_close(o);
            closed++;
        }
    }
    return closed;
}

/* Take the handshake's bytes from the input. Returns true when frames may
 * follow (the peer is authenticated), false while more is needed or after
 * the connection was closed. */
static bool read_handshake(struct rpc_conn *c)
{
    struct rpc_server *s = c->server;
    const struct rpc_peer_auth *auth = s->opts.peer_auth;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (!c->hs && !(c->hs = calloc(1, sizeof *c->hs))) {
        conn_close(c);
        return false;
    }
    uint8_t msg[RPC_PEER_ANSWER_SIZE], out[RPC_PEER_ANSWER_SIZE];
    if (!c->hs_answered) {
        if (evbuffer_get_length(in) < RPC_PEER_HELLO_SIZE) {
            return false;
        }
        evbuffer_remove(in, msg, RPC_PEER_HELLO_SIZE);
        uint32_t code = rpc_peer_answer(c->hs, auth, msg, out);
        c->hs_answered = true;
        hs_send(c, out, RPC_PEER_ANSWER_SIZE, code);
        if (code != RPC_PEER_OK) {
            return false;
        }
    }
    if (evbuffer_get_length(in) < RPC_PEER_PROOF_SIZE) {
        return false;
    }
    evbuffer_remove(in, msg, RPC_PEER_PROOF_SIZE);
    uint32_t code = rpc_peer_check_proof(c->hs, auth, msg, out);
    hs_send(c, out, RPC_PEER_RESULT_SIZE, code);
    if (code != RPC_PEER_OK) {
        return false;
    }
    c->authed = true;
    c->peer_id = c->hs->peer_id;
    source_drop(s, c); /* a member is limited by max_per_peer instead */
    free(c->hs);
    c->hs = NULL;
    rpc_logf(RPC_LOG_DEBUG, "rpc: %s is node %llu", c->peer,
             (unsigned long long)c->peer_id);
    limit_per_peer(s, c);
    return true;
}

/* The first bytes after a TLS handshake: check the other end's
 * certificate against the allowed names, and keep its name. */
static bool check_tls_peer(struct rpc_conn *c)
{
    struct rpc_server *s = c->server;
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    char why[400];
    c->tls_checked = true;
    if (!rpc_tls_name_allowed(s->opts.tls, ssl, why, sizeof why)) {
        s->stats.tls_failures++;
        log_limited(&s->tls_log, RPC_LOG_WARN,
                    "rpc: refused TLS connection from %s: %s", c->peer, why);
        conn_close(c);
        return false;
    }
    rpc_tls_peer_cn(ssl, c->tls_name, sizeof c->tls_name);
    return true;
}

static void on_more(evutil_socket_t fd, short what, void *arg);

/* Requests left in the input at the end of a connection's share of a
 * turn: handled from more_ev, at the server's backlog priority, once the
 * loop has served the others. */
static void read_later(struct rpc_conn *c)
{
    struct rpc_server *s = c->server;
    if (!c->more_ev) {
        c->more_ev = event_new(s->base, -1, 0, on_more, c);
        if (!c->more_ev) {
            /* No memory for the event: read on now rather than stall. */
            bufferevent_trigger(
                c->bev, EV_READ,
                BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
            return;
        }
        int pri = s->opts.backlog_priority ? s->opts.backlog_priority - 1
                  : s->opts.io_priority    ? s->opts.io_priority - 1
                                           : -1;
        if (pri >= 0) {
            event_priority_set(c->more_ev, pri);
        }
    }
    s->stats.backlogged++;
    c->backlog = true;
    bufferevent_disable(c->bev, EV_READ); /* no further ahead meanwhile */
    event_active(c->more_ev, EV_TIMEOUT, 0);
}

static void read_frames(struct rpc_conn *c)
{
    c->refs++; /* handlers may close the connection under us */
    uint64_t frames = c->frames;
    c->turn_frames = 0;
    int rv = rpc_read_frames(bufferevent_get_input(c->bev), c->dec,
                             dispatch_unless_paused, c);
    if (rv == 3 && c->bev && !c->read_paused && !c->budget_paused &&
        evbuffer_get_length(bufferevent_get_input(c->bev))) {
        read_later(c);
    }
    if (rv == RPC_DECODE_ERROR && c->bev) {
        rpc_logf(RPC_LOG_WARN, "rpc: bad frame from %s: %s; closing", c->peer,
                 rpc_decoder_errmsg(c->dec));
        c->server->stats.bad_frames++;
        conn_close(c);
    }
    if (c->bev) {
        /* The clock of a frame in progress starts with its first byte. */
        uint64_t now = rpc_now_ms();
        bool mid = rpc_decoder_mid_frame(c->dec);
        if (mid && (!c->mid_frame || c->frames != frames)) {
            c->frame_ms = now;
        }
        c->mid_frame = mid;
        c->active_ms = now;
        budget_check(c);
    }
    conn_unref(c);
}

static void on_more(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rpc_conn *c = arg;
    c->backlog = false;
    if (c->bev && !c->read_paused && !c->budget_paused) {
        c->refs++;
        read_frames(c); /* (may find more than a turn's again) */
        if (c->bev && !c->backlog && !c->read_paused && !c->budget_paused) {
            bufferevent_enable(c->bev, EV_READ);
        }
        conn_unref(c);
    }
    /* (paused: resume_reading goes on from here) */
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct rpc_conn *c = arg;
    if (c->tls && !c->tls_checked && c->server && !check_tls_peer(c)) {
        return;
    }
    if (c->server && c->server->opts.peer_auth && !c->authed &&
        !read_handshake(c)) {
        return;
    }
    c->read_ms = rpc_now_ms();
    if (c->backlog) {
        return; /* its turn comes in on_more: the others first */
    }
    read_frames(c);
}

/* Output drained to the low watermark: read again if we had paused. */
static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct rpc_conn *c = arg;
    if (c->read_paused) {
        resume_reading(c);
    }
    budget_maybe_resume(c);
    streams_writable(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct rpc_conn *c = arg;
    if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) && c->server &&
        c->server->opts.peer_auth && !c->authed) {
        c->server->stats.handshakes_failed++; /* gave up before the end */
    }
    if ((what & BEV_EVENT_ERROR) && c->tls && !c->tls_checked && c->server) {
        char why[400];
        rpc_tls_error(c->bev, why, sizeof why);
        c->server->stats.tls_failures++;
        log_limited(&c->server->tls_log, RPC_LOG_WARN,
                    "rpc: TLS connection from %s failed: %s", c->peer, why);
    } else if (what & BEV_EVENT_ERROR) {
        int err = EVUTIL_SOCKET_ERROR();
        rpc_logf(RPC_LOG_DEBUG, "rpc: connection from %s: %s", c->peer,
                 evutil_socket_error_to_string(err));
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        conn_close(c);
    }
}

/* Serve a connected socket; NULL (fd closed) when out of memory. */
static struct rpc_conn *conn_new(struct rpc_server *s, int fd, const char *peer)
{
    struct rpc_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    c->dec = rpc_decoder_new(&s->opts.limits);
    c->pending = evbuffer_new();
    evutil_make_socket_nonblocking(fd);
    rpc_tune_socket(fd);
    if (c->dec && c->pending && s->opts.tls) {
        /* TLS as a filter over the socket's bufferevent, so that what it
         * encrypts can be written at once (flush_conn). */
        c->raw = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
        SSL *ssl = c->raw ? rpc_tls_ssl(s->opts.tls, NULL) : NULL;
        c->bev = ssl ? bufferevent_openssl_filter_new(s->base, c->raw, ssl,
                                                      BUFFEREVENT_SSL_ACCEPTING,
                                                      BEV_OPT_CLOSE_ON_FREE)
                     : NULL;
        if (c->bev) {
            /* A client that closes without close_notify has ended, not
             * failed. */
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
            c->tls = true;
            c->raw_cb = evbuffer_add_cb(bufferevent_get_output(c->raw),
                                        on_raw_output, c);
        } else {
            if (ssl) {
                SSL_free(ssl);
            }
            if (c->raw) {
                bufferevent_free(c->raw); /* closes fd */
                c->raw = NULL;
                fd = -1;
            }
        }
    } else if (c->dec && c->pending) {
        c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!c->bev) {
        rpc_decoder_free(c->dec);
        if (c->pending) {
            evbuffer_free(c->pending);
        }
        free(c);
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    /* A request over the args cap is answered, not a broken stream. */
    rpc_decoder_skip_oversized(c->dec, true);
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "local");
    c->server = s;
    c->refs = 1;
    c->opened_ms = c->frame_ms = c->active_ms = c->read_ms = rpc_now_ms();
    list_push(&s->conns, c);
    s->stats.accepted++;
    s->stats.open++;
    s->clients++;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, s->opts.max_output / 2, 0);
    if (s->opts.io_priority) {
        bufferevent_priority_set(c->bev, s->opts.io_priority - 1);
        if (c->raw) {
            bufferevent_priority_set(c->raw, s->opts.io_priority - 1);
        }
    }
    budget_watch(c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return c;
}

int rpc_server_adopt(struct rpc_server *s, int fd, const char *peer)
{
    return conn_new(s, fd, peer) ? 0 : RPC_E_NOMEM;
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
    size_t max = s->opts.max_connections;
    bool probation = false;
    if (max && s->clients >= max) {
        /* Clients hold every slot. A peer that (re)connects now must not
         * be shut out by them: a few more get in on probation, and keep
         * their place only by calling the peer service. */
        if (!s->peer_service || s->clients >= max + s->opts.peer_reserve) {
            s->stats.refused_connections++;
            log_limited(&s->refused_log, RPC_LOG_WARN,
                        "rpc: refusing connection from %s: %zu client "
                        "connections open, the limit is %zu",
                        peer, s->clients, max);
            evutil_closesocket(fd);
            return;
        }
        probation = true;
    }
    char addr[64];
    source_of(peer, addr, sizeof addr);
    if (s->opts.max_per_source &&
        source_count(s, addr) >= s->opts.max_per_source) {
        s->stats.refused_connections++;
        log_limited(&s->refused_log, RPC_LOG_WARN,
                    "rpc: refusing connection from %s: %u connections%s "
                    "from %s are open, the limit per source is %u",
                    peer, source_count(s, addr),
                    s->opts.peer_auth ? " still in the peer handshake" : "",
                    addr, s->opts.max_per_source);
        evutil_closesocket(fd);
        return;
    }
    struct rpc_conn *c = conn_new(s, fd, peer);
    if (!c) {
        rpc_logf(RPC_LOG_ERROR, "rpc: out of memory accepting %s", peer);
        return;
    }
    c->probation = probation;
    if (s->opts.max_per_source && !source_add(s, c)) {
        rpc_logf(RPC_LOG_ERROR, "rpc: out of memory accepting %s", peer);
        conn_close(c);
    }
}

/* Listen again after a pause for lack of file descriptors. */
static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rpc_server *s = arg;
    for (size_t i = 0; i < s->n_listeners; i++) {
        evconnlistener_enable(s->listeners[i]);
    }
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)l;
    struct rpc_server *s = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_limited(&s->accept_log, RPC_LOG_ERROR, "rpc: accept: %s",
                evutil_socket_error_to_string(err));
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* The connection stays in the backlog, so the listener would fire
         * again at once and spin: stop accepting for a moment. */
        for (size_t i = 0; i < s->n_listeners; i++) {
            evconnlistener_disable(s->listeners[i]);
        }
        struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
        evtimer_add(s->accept_ev, &tv);
    }
}

/* Close a connection found past one of its timeouts by the sweep. */
static void sweep_conn(struct rpc_server *s, struct rpc_conn *c, uint64_t now)
{
    const struct rpc_server_options *o = &s->opts;
    if (c->probation && now - c->opened_ms >= RPC_PROBATION_MS) {
        refuse_conn(c, "it made no call");
        return;
    }
    if (o->peer_auth && !c->authed && now - c->opened_ms >= o->handshake_ms) {
        s->stats.handshakes_failed++;
        log_limited(&s->hs_log, RPC_LOG_WARN,
                    "rpc: closing %s: no peer handshake within %u ms", c->peer,
                    o->handshake_ms);
        conn_close(c);
        return;
    }
    if (o->frame_timeout_ms && c->read_paused &&
        now - c->paused_ms >= o->frame_timeout_ms) {
        size_t len = evbuffer_get_length(bufferevent_get_output(c->bev)) +
                     evbuffer_get_length(c->pending);
        s->stats.overflow_closes++;
        log_limited(&s->timeout_log, RPC_LOG_WARN,
                    "rpc: closing %s: %zu bytes of replies over the cap of "
                    "%zu unread for %llu ms",
                    c->peer, len, o->max_output,
                    (unsigned long long)(now - c->paused_ms));
        conn_close(c);
        return;
    }
    if (o->frame_timeout_ms && c->mid_frame && !c->read_paused &&
        now - c->frame_ms >= o->frame_timeout_ms) {
        s->stats.frame_timeouts++;
        log_limited(&s->timeout_log, RPC_LOG_WARN,
                    "rpc: closing %s: a request frame begun %llu ms ago is "
                    "still incomplete (frame timeout %u ms)",
                    c->peer, (unsigned long long)(now - c->frame_ms),
                    o->frame_timeout_ms);
        conn_close(c);
        return;
    }
    if (c->refs > 1 || evbuffer_get_length(bufferevent_get_output(c->bev)) ||
        evbuffer_get_length(c->pending)) {
        c->active_ms = now; /* calls pending or bytes moving: not idle */
        return;
    }
    if (o->idle_timeout_ms && !c->is_peer && !c->authed &&
        now - c->active_ms >= o->idle_timeout_ms) {
        s->stats.idle_closes++;
        log_limited(&s->idle_log, RPC_LOG_INFO,
                    "rpc: closing %s: idle for %llu ms (idle timeout %u ms)",
                    c->peer, (unsigned long long)(now - c->active_ms),
                    o->idle_timeout_ms);
        conn_close(c);
    }
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rpc_server *s = arg;
    uint64_t now = rpc_now_ms();
    struct rpc_conn *next;
    for (struct rpc_conn *c = s->conns; c; c = next) {
        next = c->next;
        sweep_conn(s, c, now);
    }
    log_held_back(&s->refused_log, RPC_LOG_WARN, now);
    log_held_back(&s->timeout_log, RPC_LOG_WARN, now);
    log_held_back(&s->idle_log, RPC_LOG_INFO, now);
    log_held_back(&s->hs_log, RPC_LOG_WARN, now);
    log_held_back(&s->tls_log, RPC_LOG_WARN, now);
    log_held_back(&s->budget_log, RPC_LOG_WARN, now);
}

/* With max_connections set, make room for that many descriptors (as Redis
 * does for maxclients): raise the soft limit, or lower max_connections to
 * what the hard limit allows. */
static void fit_fd_limit(struct rpc_server *s)
{
    struct rpc_server_options *o = &s->opts;
    struct rlimit rl;
    if (!o->max_connections || getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }
    rlim_t need = (rlim_t)o->max_connections + o->peer_reserve + SPARE_FDS;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need
                            ? rl.rlim_max
                            : need;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) {
            rl = want;
        }
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t room = rl.rlim_cur > o->peer_reserve + 2 * SPARE_FDS
                          ? rl.rlim_cur - o->peer_reserve - SPARE_FDS
                          : SPARE_FDS;
        rpc_logf(RPC_LOG_WARN,
                 "rpc: the open-file limit is %llu: %u client connections "
                 "need %llu; serving at most %llu (raise ulimit -n)",
                 (unsigned long long)rl.rlim_cur, o->max_connections,
                 (unsigned long long)need, (unsigned long long)room);
        o->max_connections = (uint32_t)room;
    }
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
    s->refused_log.what = "connections refused";
    s->timeout_log.what = "slow connections closed";
    s->idle_log.what = "idle connections closed";
    s->accept_log.what = "accept failures";
    s->hs_log.what = "peer handshakes refused";
    s->tls_log.what = "TLS connections failed";
    s->budget_log.what = "connections paused for the buffer budget";
    if (s->opts.peer_auth) {
        if (!s->opts.max_per_peer) {
            s->opts.max_per_peer = 4;
        }
        if (!s->opts.handshake_ms) {
            s->opts.handshake_ms = 2000;
        }
    }
    if (!s->opts.max_streams) {
        s->opts.max_streams = 4096;
    }
    if (!s->opts.max_inflight) {
        s->opts.max_inflight = 10000;
    }
    if (!s->opts.max_inflight_total) {
        s->opts.max_inflight_total = 100000;
    }
    if (!s->opts.frames_per_turn) {
        s->opts.frames_per_turn = 64;
    }
    evutil_secure_rng_get_bytes(&s->trace_next, sizeof s->trace_next);
    s->opts.peer_service = NULL; /* the copy below */
    if (opts && opts->peer_service &&
        !(s->peer_service = strdup(opts->peer_service))) {
        goto err_free_server;
    }
    s->opts.peer_service = s->peer_service;
    fit_fd_limit(s);
    s->sources = calloc(SOURCE_BUCKETS, sizeof *s->sources);
    if (!s->sources) {
        goto err_free_events;
    }
    s->flush_ev = event_new(base, -1, 0, on_flush, s);
    s->accept_ev = evtimer_new(base, on_accept_resume, s);
    s->budget_ev = event_new(base, -1, 0, on_budget, s);
    if (!s->budget_ev) {
        goto err_free_events;
    }
    if (!s->flush_ev || !s->accept_ev) {
        goto err_free_events;
    }
    /* One sweep walks every connection, a few times per shortest
     * timeout: cheaper than a timer per connection re-armed per frame. */
    const struct rpc_server_options *o = &s->opts;
    uint32_t period = 1000;
    if (o->max_connections && s->peer_service) {
        period = RPC_PROBATION_MS / 4;
    }
    if (o->frame_timeout_ms && o->frame_timeout_ms / 4 < period) {
        period = o->frame_timeout_ms / 4;
    }
    if (o->idle_timeout_ms && o->idle_timeout_ms / 4 < period) {
        period = o->idle_timeout_ms / 4;
    }
    if (o->peer_auth && o->handshake_ms / 4 < period) {
        period = o->handshake_ms / 4;
    }
    if (period < 10) {
        period = 10;
    }
    if (o->max_connections || o->frame_timeout_ms || o->idle_timeout_ms ||
        o->peer_auth) {
        s->sweep_ev = event_new(base, -1, EV_PERSIST, on_sweep, s);
        struct timeval tv = {period / 1000, (period % 1000) * 1000};
        if (!s->sweep_ev || event_add(s->sweep_ev, &tv) != 0) {
            goto err_free_events;
        }
    }
    return s;

err_free_events:
    if (s->budget_ev) {
        event_free(s->budget_ev);
    }
    if (s->sweep_ev) {
        event_free(s->sweep_ev);
    }
    if (s->accept_ev) {
        event_free(s->accept_ev);
    }
    if (s->flush_ev) {
        event_free(s->flush_ev);
    }
    free(s->sources);
    free(s->peer_service);
err_free_server:
    free(s);
    return NULL;
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
    event_free(s->accept_ev);
    event_free(s->budget_ev);
    if (s->sweep_ev) {
        event_free(s->sweep_ev);
    }
    free(s->peer_service);
    for (size_t i = 0; i < s->n_services; i++) {
        free(s->mstats[i]);
    }
    free(s->mstats);
    free(s->services);
    free(s->faults);
    free(s->sources); /* empty: every connection was closed above */
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
    ms[s->n_services] = calloc(service->descriptor->n_methods + 1, sizeof **ms);
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
    out->buffered = s->buffered;
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
