/* channel.c: client side: generated stubs over one multiplexed connection. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>
#include <event2/event.h>
#include <event2/util.h>

#include "internal.h"
#include "peerauth.h"

#define DEFAULT_DEADLINE_MS        5000
#define DEFAULT_CONNECT_TIMEOUT_MS 1000
#define DEFAULT_BACKOFF_MIN_MS     20
#define DEFAULT_BACKOFF_MAX_MS     1000
#define DEFAULT_MAX_OUTPUT         (64u * 1024 * 1024)

enum conn_state {
    CH_IDLE,       /* no connection; the next call connects */
    CH_CONNECTING, /* connect in progress; calls wait in the buffer */
    CH_HANDSHAKE,  /* connected, proving who we are; calls wait */
    CH_CONNECTED,  /* established */
    CH_BACKOFF,    /* a connect failed; calls fail until retry_at */
};

struct pending
{
    struct rpc_channel *ch;                   /* owner */
    uint64_t id;                              /* call_id */
    const ProtobufCMessageDescriptor *input;  /* request type */
    const ProtobufCMessageDescriptor *output; /* reply type */
    ProtobufCClosure closure;                 /* caller's closure */
    void *closure_data;                       /* its argument */
    struct event *timer;                      /* deadline or early failure */
    uint32_t deadline_ms;                     /* for the timeout message */
    uint64_t trace_id;                        /* RpcHeader.trace_id */
    int early_status;                         /* failed before sending */
    char *early_msg;                          /* why (owned), or NULL */
    bool *done;                               /* blocking caller's flag */
    struct pending *hnext;                    /* hash chain */
    bool drop_reply;                          /* fault: lose the reply */
    uint32_t hold_ms;                         /* fault: hold the reply */
    bool held;                                /* reply arrived, held back */
    ProtobufCMessage *held_reply;             /* it (NULL: failure) */
    int held_status;                          /* failure status */
    char *held_msg;                           /* failure text (owned) */
    struct pending *hprev_held, *hnext_held;  /* channel's held list */
    rpc_stream_msg_cb stream_cb;              /* a stream's (else NULL) */
    bool doomed;                              /* fail_all is failing it */
    void *stream_arg;                         /* passed to it */
};

/* A stream is a pending call that takes many frames; its handle is the
 * pending entry itself. */
static struct rpc_stream *stream_of(struct pending *p)
{
    return (struct rpc_stream *)(void *)p;
}

static struct pending *pending_of(struct rpc_stream *st)
{
    return (struct pending *)(void *)st;
}

/* A request frame held back by an injected delay. */
struct delayed_send
{
    struct rpc_channel *ch;           /* owner */
    uint64_t conn_gen;                /* connection it was meant for */
    struct evbuffer *frames;          /* the frame (and its duplicate) */
    struct event *timer;              /* fires when it may leave */
    struct delayed_send *prev, *next; /* channel's list */
};

struct channel_service
{
    ProtobufCService base;        /* what the stubs are given */
    struct rpc_channel *ch;       /* owner */
    struct channel_service *next; /* channel's list */
};

/* Where stream frames are unpacked (see arena_alloc). */
struct frame_arena
{
    uint8_t *buf;              /* the buffer */
    size_t cap;                /* its size */
    size_t used;               /* taken by the frame being unpacked */
    size_t spilled;            /* bytes malloc'ed beyond it */
    struct arena_spill *spill; /* those allocations */
    bool busy;                 /* a frame's message is in use */
};

struct rpc_channel
{
    struct event_base *base;          /* caller's, or own when blocking */
    bool own_base;                    /* blocking channel: base is ours */
    char *host;                       /* server address */
    uint16_t port;                    /* server port */
    char target[280];                 /* "host:port" for messages */
    struct rpc_channel_options opts;  /* with defaults */
    uint32_t deadline_ms;             /* for calls made from now on */
    uint64_t trace_id;                /* for calls made from now on (0: one
                                         of trace_next's each) */
    uint64_t trace_next;              /* makes trace ids */
    uint64_t cluster_id;              /* sent with each call (0: any) */
    uint64_t seen_cluster_id;         /* the last answer's */
    enum conn_state state;            /* connection state */
    struct bufferevent *bev;          /* connection, when not IDLE/BACKOFF */
    struct rpc_decoder *dec;          /* reply decoder for this connection */
    struct event *connect_timer;      /* connect timeout */
    uint64_t retry_at;                /* BACKOFF: earliest reconnect (ms) */
    uint32_t backoff_ms;              /* current backoff */
    char last_failure[600];           /* why the last connect failed */
    uint64_t next_id;                 /* next call_id */
    struct pending **table;           /* pending calls by id */
    size_t table_size;                /* buckets, a power of two */
    size_t n_pending;                 /* calls in the table */
    struct channel_service *services; /* handed out by rpc_channel_service */
    struct rpc_channel_stats stats;   /* counters */
    struct frame_arena arena;         /* stream frames are unpacked here */
    struct rpc_fault_state faults;    /* injected faults */
    uint64_t conn_gen;                /* bumped per connection */
    struct pending *held;             /* calls whose reply is held back */
    struct delayed_send *delayed;     /* requests held back */
    struct evbuffer *pending;         /* requests not yet given to bev */
    struct event *flush_ev;           /* writes them after this turn's I/O */
    char *auth_token;                 /* sent in every request, or NULL */
    bool tls_up;                      /* bev is a TLS filter over raw */
    struct bufferevent *raw;          /* then: the socket's bufferevent */
    struct rpc_peer_hs hs;            /* CH_HANDSHAKE: the handshake */
    bool hs_proved;                   /* our proof is sent: result next */
    uint64_t hs_logged;               /* ms of the last failure logged */
    char hs_last[300];                /* and what it said */
    uint64_t callbacks;               /* closures and stream callbacks run
                                         (rpc_channel_wait) */
};

/* --------------------------------------------------------- pending table */

static size_t bucket(const struct rpc_channel *ch, uint64_t id)
{
    return (size_t)(id * 0x9E3779B97F4A7C15ull >> 17) & (ch->table_size - 1);
}

static bool table_grow(struct rpc_channel *ch)
{
    size_t size = ch->table_size ? ch->table_size * 2 : 64;
    struct pending **t = calloc(size, sizeof *t);
    if (!t) {
        return false;
    }
    struct pending **old = ch->table;
    size_t old_size = ch->table_size;
    ch->table = t;
    ch->table_size = size;
    for (size_t i = 0; i < old_size; i++) {
        struct pending *p = old[i];
        while (p) {
            struct pending *next = p->hnext;
            size_t b = bucket(ch, p->id);
            p->hnext = t[b];
            t[b] = p;
            p = next;
        }
    }
    free(old);
    return true;
}

static struct pending *table_find(struct rpc_channel *ch, uint64_t id)
{
    if (!ch->table_size) {
        return NULL;
    }
    struct pending *p = ch->table[bucket(ch, id)];
    while (p && p->id != id) {
        p = p->hnext;
    }
    return p;
}

static struct pending *table_take(struct rpc_channel *ch, uint64_t id)
{
    if (!ch->table_size) {
        return NULL;
    }
    struct pending **pp = &ch->table[bucket(ch, id)];
    for (; *pp; pp = &(*pp)->hnext) {
        if ((*pp)->id == id) {
            struct pending *p = *pp;
            *pp = p->hnext;
            ch->n_pending--;
            return p;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ completion */

/* Run a call's closure once and free it; p is already out of the table. */
static void complete(struct pending *p,
                     const ProtobufCMessage *reply,
                     int status,
                     const char *msg)
{
    struct rpc_channel *ch = p->ch;
    if (p->timer) {
        event_free(p->timer);
    }
    free(p->early_msg);
    free(p->held_msg);
    if (!reply) {
        ch->stats.failed++;
    }
    rpc_set_last(reply ? RPC_OK : status, msg);
    if (p->done) {
        *p->done = true;
    }
    ch->callbacks++;
    if (p->stream_cb) {
        p->stream_cb(stream_of(p), reply, true, p->stream_arg);
    } else {
        p->closure(reply, p->closure_data);
    }
    free(p);
}

/* Fail every pending call. Closures may start new calls meanwhile (they
 * are not failed) or cancel streams that are still to be failed (those
 * stay in the table until their turn, so that the cancel finds them). */
static void fail_all(struct rpc_channel *ch, int status, const char *msg)
{
    for (size_t i = 0; i < ch->table_size; i++) {
        for (struct pending *p = ch->table[i]; p; p = p->hnext) {
            p->doomed = true;
        }
    }
    for (size_t i = 0; i < ch->table_size; i++) {
        struct pending *p = ch->table[i];
        while (p) {
            if (!p->doomed) {
                p = p->hnext;
                continue;
            }
            struct pending **table = ch->table;
            table_take(ch, p->id);
            complete(p, NULL, status, msg);
            if (ch->table != table) {
                i = (size_t)-1; /* the table grew: from its start again */
                break;
            }
            p = ch->table[i]; /* the closure may have changed the chain */
        }
    }
}

/* ------------------------------------------------------------ connection */

static void drop_connection(struct rpc_channel *ch)
{
    ch->conn_gen++; /* delayed requests for this connection are void */
    evbuffer_drain(ch->pending, evbuffer_get_length(ch->pending));
    if (ch->bev) {
        bufferevent_free(ch->bev);
        ch->bev = NULL;
    }
    ch->tls_up = false;
    ch->raw = NULL; /* freed with the filter */
    if (ch->dec) {
        rpc_decoder_free(ch->dec);
        ch->dec = NULL;
    }
    event_del(ch->connect_timer);
}

/* Requests wait in ch->pending while the loop handles this turn's I/O, and
 * then leave in one write, without the bufferevent asking epoll for
 * writability. What the socket does not take goes to the bufferevent, and
 * so do whole requests queued behind anything it already holds. */
static void channel_flush(struct rpc_channel *ch)
{
    size_t len = evbuffer_get_length(ch->pending);
    if (!len || ch->state != CH_CONNECTED || !ch->bev) {
        return;
    }
    struct evbuffer *out = bufferevent_get_output(ch->bev);
    if (ch->tls_up) {
        /* Few TLS records, encrypted into the socket's buffer now and
         * written now (server.c flush_conn says why). */
        evbuffer_pullup(ch->pending, -1);
        evbuffer_add_buffer(out, ch->pending);
        rpc_bev_flush(ch->raw);
        return;
    }
    if (evbuffer_get_length(out) == 0 && !ch->tls_up) {
        int n = evbuffer_write(ch->pending, bufferevent_getfd(ch->bev));
        if (n >= 0 && (size_t)n == len) {
            return;
        }
    }
    evbuffer_add_buffer(out, ch->pending);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    channel_flush(arg);
}

/* A connect failed: wait before the next one, twice as long each time. */
static void back_off(struct rpc_channel *ch)
{
    uint32_t b = ch->backoff_ms ? ch->backoff_ms * 2 : ch->opts.backoff_min_ms;
    ch->backoff_ms = b > ch->opts.backoff_max_ms ? ch->opts.backoff_max_ms : b;
    ch->retry_at = rpc_now_ms() + ch->backoff_ms;
    ch->state = CH_BACKOFF;
}

/* The connection failed or was lost: fail its calls and back off. */
static void connection_failed(struct rpc_channel *ch,
                              int status,
                              const char *why)
{
    bool was_connected = ch->state == CH_CONNECTED;
    drop_connection(ch);
    snprintf(ch->last_failure, sizeof ch->last_failure, "%s", why);
    if (was_connected) {
        /* A working connection broke: reconnect at the next call. */
        ch->state = CH_IDLE;
        ch->backoff_ms = 0;
    } else {
        back_off(ch);
    }
    fail_all(ch, status, why);
}

/* Keep an arrived reply back for p->hold_ms (fault injection: long
 * reordering); on_timer delivers it. */
static void hold_reply(struct rpc_channel *ch,
                       struct pending *p,
                       ProtobufCMessage *reply,
                       int status,
                       const char *msg)
{
    p->held = true;
    p->held_reply = reply;
    p->held_status = status;
    p->held_msg = status ? strdup(msg ? msg : "") : NULL;
    p->hprev_held = NULL;
    p->hnext_held = ch->held;
    if (ch->held) {
        ch->held->hprev_held = p;
    }
    ch->held = p;
    event_del(p->timer);
    struct timeval tv = {p->hold_ms / 1000, (p->hold_ms % 1000) * 1000};
    event_add(p->timer, &tv);
}

/* Deliver a held reply (status: what to report instead when cancelling). */
static void release_held(struct pending *p, int cancel_status, const char *msg)
{
    struct rpc_channel *ch = p->ch;
    if (p->hprev_held) {
        p->hprev_held->hnext_held = p->hnext_held;
    } else {
        ch->held = p->hnext_held;
    }
    if (p->hnext_held) {
        p->hnext_held->hprev_held = p->hprev_held;
    }
    ProtobufCMessage *reply = p->held_reply;
    if (cancel_status) {
        complete(p, NULL, cancel_status, msg);
    } else if (reply) {
        complete(p, reply, RPC_OK, NULL);
    } else {
        char why[600];
        snprintf(why, sizeof why, "%s",
                 p->held_msg ? p->held_msg : rpc_strerror(p->held_status));
        complete(p, NULL, p->held_status, why);
    }
    if (reply) {
        protobuf_c_message_free_unpacked(reply, NULL);
    }
}

/* Stream frames (a watch's: thousands a second, each a few small pieces)
 * are unpacked into one buffer that is reused frame after frame, instead
 * of a malloc and a free per piece; what does not fit is malloc'ed, and
 * the buffer grows to the frames' usual need (up to ARENA_MAX). */
#define ARENA_MIN (16u << 10)
#define ARENA_MAX (1u << 20)

struct arena_spill
{
    struct arena_spill *next;
    max_align_t data[]; /* the allocation */
};

static void *arena_alloc(void *d, size_t n)
{
    struct frame_arena *a = d;
    size_t need = (n + 15) & ~(size_t)15;
    if (need >= n && a->used + need <= a->cap) {
        void *p = a->buf + a->used;
        a->used += need;
        return p;
    }
    struct arena_spill *sp = malloc(sizeof *sp + n);
    if (!sp) {
        return NULL;
    }
    sp->next = a->spill;
    a->spill = sp;
    a->spilled += n;
    return sp->data;
}

static void arena_free(void *d, void *p)
{
    (void)d;
    (void)p; /* all at once, in arena_reset */
}

/* An allocator for one frame; NULL (malloc) when the arena is in use (a
 * stream callback that waits on its channel, which unpacks the next). */
static ProtobufCAllocator *arena_begin(struct frame_arena *a,
                                       ProtobufCAllocator *al)
{
    if (a->busy) {
        return NULL;
    }
    if (!a->buf) {
        a->buf = malloc(ARENA_MIN);
        a->cap = a->buf ? ARENA_MIN : 0;
    }
    a->busy = true;
    a->used = 0;
    a->spilled = 0;
    al->alloc = arena_alloc;
    al->free = arena_free;
    al->allocator_data = a;
    return al;
}

static void arena_reset(struct frame_arena *a)
{
    while (a->spill) {
        struct arena_spill *sp = a->spill;
        a->spill = sp->next;
        free(sp);
    }
    size_t want = a->used + a->spilled;
    if (want > a->cap && want <= ARENA_MAX) {
        /* The frames need more: grow to it next time. */
        uint8_t *b = malloc(want * 2 > ARENA_MAX ? ARENA_MAX : want * 2);
        if (b) {
            free(a->buf);
            a->buf = b;
            a->cap = want * 2 > ARENA_MAX ? ARENA_MAX : want * 2;
        }
    }
    a->busy = false;
}

static void arena_release(struct frame_arena *a)
{
    arena_reset(a);
    free(a->buf);
    memset(a, 0, sizeof *a);
}

/* A frame of a stream that more frames follow. */
static int on_stream_frame(struct rpc_channel *ch,
                           struct pending *p,
                           const struct rpc_frame *f)
{
    ProtobufCAllocator al;
    ProtobufCAllocator *use = arena_begin(&ch->arena, &al);
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(p->output, use, f->args_size, f->args);
    if (!msg) {
        if (use) {
            arena_reset(&ch->arena);
        }
        char why[700];
        snprintf(why, sizeof why,
                 "stream frame from %s does not unpack as %s; connection "
                 "dropped",
                 ch->target, p->output->name);
        rpc_logf(RPC_LOG_WARN, "rpc: %s", why);
        connection_failed(ch, RPC_E_BAD_REPLY, why);
        return 1;
    }
    rpc_set_last(RPC_OK, NULL);
    ch->callbacks++;
    p->stream_cb(stream_of(p), msg, false, p->stream_arg);
    if (use) {
        arena_reset(&ch->arena); /* frees the whole message */
    } else {
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    return ch->bev ? 0 : 1;
}

/* A frame of several streams (RpcHeader.also_call_ids): unpacked once,
 * given to each stream still open, in the order named. A callback may
 * cancel any of them (a later one is then skipped) or fail the channel. */
static int on_shared_frame(struct rpc_channel *ch, const struct rpc_frame *f)
{
    const Raftkv__RpcHeader *h = f->header;
    size_t n = 1 + h->n_also_call_ids;
    const ProtobufCMessageDescriptor *out = NULL;
    for (size_t i = 0; i < n && !out; i++) {
        struct pending *p =
            table_find(ch, i ? h->also_call_ids[i - 1] : h->call_id);
        if (p && p->stream_cb) {
            out = p->output;
        }
    }
    if (!out) {
        ch->stats.late_replies++; /* every one of them cancelled */
        return 0;
    }
    ProtobufCAllocator al;
    ProtobufCAllocator *use = arena_begin(&ch->arena, &al);
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(out, use, f->args_size, f->args);
    if (!msg) {
        if (use) {
            arena_reset(&ch->arena);
        }
        char why[700];
        snprintf(why, sizeof why,
                 "stream frame from %s does not unpack as %s; connection "
                 "dropped",
                 ch->target, out->name);
        rpc_logf(RPC_LOG_WARN, "rpc: %s", why);
        connection_failed(ch, RPC_E_BAD_REPLY, why);
        return 1;
    }
    for (size_t i = 0; i < n && ch->bev; i++) {
        struct pending *p =
            table_find(ch, i ? h->also_call_ids[i - 1] : h->call_id);
        if (!p || !p->stream_cb) {
            ch->stats.late_replies++; /* cancelled */
            continue;
        }
        if (p->output != out) {
            continue; /* (a server that shares across methods: not ours) */
        }
        rpc_set_last(RPC_OK, NULL);
        ch->callbacks++;
        p->stream_cb(stream_of(p), msg, false, p->stream_arg);
    }
    if (use) {
        arena_reset(&ch->arena); /* frees the whole message */
    } else {
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    return ch->bev ? 0 : 1;
}

static int on_reply(void *ctx, const struct rpc_frame *f)
{
    struct rpc_channel *ch = ctx;
    const Raftkv__RpcHeader *h = f->header;
    if (h->cluster_id) {
        ch->seen_cluster_id = h->cluster_id;
    }
    if (h->more && h->n_also_call_ids &&
        h->status == RAFTKV__RPC_STATUS__RPC_OK) {
        return on_shared_frame(ch, f);
    }
    if (h->more) {
        struct pending *p = table_find(ch, h->call_id);
        if (!p || !p->stream_cb || h->status != RAFTKV__RPC_STATUS__RPC_OK) {
            ch->stats.late_replies++; /* cancelled, or not a stream */
            return 0;
        }
        return on_stream_frame(ch, p, f);
    }
    struct pending *p = table_take(ch, h->call_id);
    if (!p) {
        ch->stats.late_replies++;
        return 0;
    }
    if (p->drop_reply) {
        char why[400];
        snprintf(why, sizeof why, "reply from %s lost (fault injection)",
                 ch->target);
        complete(p, NULL, RPC_E_CONNECTION_LOST, why);
        return ch->bev ? 0 : 1;
    }
    ProtobufCMessage *reply = NULL;
    int status = RPC_OK;
    const char *msg = NULL;
    char why[700];
    if (h->status != RAFTKV__RPC_STATUS__RPC_OK) {
        status = rpc_status_from_wire(h->status);
        msg = h->error;
    } else if (!(reply = protobuf_c_message_unpack(p->output, NULL,
                                                   f->args_size, f->args))) {
        snprintf(why, sizeof why,
                 "reply from %s does not unpack as %s; connection dropped",
                 ch->target, p->output->name);
        rpc_logf(RPC_LOG_WARN, "rpc: %s", why);
        status = RPC_E_BAD_REPLY;
        msg = why;
    }
    if (p->hold_ms) {
        hold_reply(ch, p, reply, status, msg); /* it keeps the reply */
    } else {
        complete(p, reply, status, msg);
        if (reply) {
            protobuf_c_message_free_unpacked(reply, NULL);
        }
    }
    if (status == RPC_E_BAD_REPLY) {
        if (ch->bev) {
            connection_failed(ch, RPC_E_CONNECTION_LOST, why);
        }
        return 1;
    }
    return ch->bev ? 0 : 1;
}

/* The handshake failed: log it (when it says something new, or at most
 * every 10 s) and fail the connection. */
static void handshake_failed(struct rpc_channel *ch, const char *why)
{
    char msg[600];
    snprintf(msg, sizeof msg, "peer handshake with %s (node %llu) failed: %s",
             ch->target, (unsigned long long)ch->opts.peer_id, why);
    uint64_t now = rpc_now_ms();
    if (strcmp(ch->hs_last, why) != 0 || now - ch->hs_logged >= 10000) {
        rpc_logf(RPC_LOG_WARN, "rpc: %s", msg);
        snprintf(ch->hs_last, sizeof ch->hs_last, "%s", why);
        ch->hs_logged = now;
    }
    connection_failed(ch, RPC_E_UNAVAILABLE, msg);
}

/* The connection is usable: calls that waited leave now. */
static void connection_ready(struct rpc_channel *ch)
{
    ch->state = CH_CONNECTED;
    ch->backoff_ms = 0;
    ch->stats.connects++;
    ch->hs_last[0] = 0;
    event_del(ch->connect_timer);
    channel_flush(ch);
}

/* Read the server's side of the handshake. Returns true once frames may
 * flow, false while waiting or after a failure. */
static bool read_handshake(struct rpc_channel *ch, struct evbuffer *in)
{
    char why[300];
    if (!ch->hs_proved) {
        uint8_t answer[RPC_PEER_ANSWER_SIZE], proof[RPC_PEER_PROOF_SIZE];
        if (evbuffer_get_length(in) < RPC_PEER_ANSWER_SIZE) {
            /* A refusal is a short answer followed by a close. */
            return false;
        }
        evbuffer_remove(in, answer, sizeof answer);
        uint32_t code = rpc_peer_check_answer(&ch->hs, ch->opts.peer_auth,
                                              answer, proof, why, sizeof why);
        if (code == RPC_PEER_BAD_PROOF || code == RPC_PEER_OTHER_CLUSTER) {
            bufferevent_write(ch->bev, proof, sizeof proof);
            rpc_bev_flush(ch->tls_up ? ch->raw : ch->bev); /* the server
                                                              logs it too */
        }
        if (code != RPC_PEER_OK) {
            handshake_failed(ch, why);
            return false;
        }
        bufferevent_write(ch->bev, proof, sizeof proof);
        ch->hs_proved = true;
    }
    uint8_t result[RPC_PEER_RESULT_SIZE];
    if (evbuffer_get_length(in) < RPC_PEER_RESULT_SIZE) {
        return false;
    }
    evbuffer_remove(in, result, sizeof result);
    uint32_t code = rpc_peer_check_result(result);
    if (code != RPC_PEER_OK) {
        snprintf(why, sizeof why, "it refused us: %s", rpc_peer_code_str(code));
        handshake_failed(ch, why);
        /* It proved it holds the key (its answer did), so its refusal of
         * our id is a member's word. */
        const struct rpc_peer_auth *a = ch->opts.peer_auth;
        if (code == RPC_PEER_NOT_MEMBER && a->refused) {
            a->refused(ch->opts.peer_id, a->refused_arg);
        }
        return false;
    }
    connection_ready(ch);
    return true;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct rpc_channel *ch = arg;
    if (ch->state == CH_HANDSHAKE &&
        !read_handshake(ch, bufferevent_get_input(bev))) {
        return;
    }
    struct rpc_decoder *dec = ch->dec;
    int rv = rpc_read_frames(bufferevent_get_input(bev), dec, on_reply, ch);
    if (rv == RPC_DECODE_ERROR && ch->dec == dec) {
        char why[600];
        snprintf(why, sizeof why, "bad frame from %s: %s", ch->target,
                 rpc_decoder_errmsg(dec));
        rpc_logf(RPC_LOG_WARN, "rpc: %s", why);
        connection_failed(ch, RPC_E_CONNECTION_LOST, why);
    }
}

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

/* Move the connected socket to a TLS bufferevent and start the client
 * handshake. */
static void start_tls(struct rpc_channel *ch)
{
    SSL *ssl = rpc_tls_ssl(ch->opts.tls, ch->host);
    struct bufferevent *raw = ch->bev;
    struct bufferevent *bev =
        ssl ? bufferevent_openssl_filter_new(ch->base, raw, ssl,
                                             BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE)
            : NULL;
    if (!bev) {
        if (ssl) {
            SSL_free(ssl);
        }
        connection_failed(ch, RPC_E_NOMEM, "out of memory starting TLS");
        return;
    }
    ch->bev = bev; /* frees raw with it */
    ch->raw = raw;
    ch->tls_up = true;
    bufferevent_openssl_set_allow_dirty_shutdown(ch->bev, 1);
    if (ch->opts.priority) {
        bufferevent_priority_set(ch->bev, ch->opts.priority - 1);
    }
    bufferevent_setcb(ch->bev, on_read, NULL, on_event, ch);
    bufferevent_enable(ch->bev, EV_READ | EV_WRITE);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct rpc_channel *ch = arg;
    char why[600];
    if ((what & BEV_EVENT_CONNECTED) && ch->opts.tls && !ch->tls_up) {
        /* TCP is up: TLS takes the socket over for its handshake, and
         * says CONNECTED again when that is done. */
        rpc_tune_socket(bufferevent_getfd(ch->bev));
        start_tls(ch);
        return;
    }
    if ((what & BEV_EVENT_CONNECTED) && ch->tls_up) {
        SSL *ssl = bufferevent_openssl_get_ssl(ch->bev);
        char tls_why[400];
        if (!rpc_tls_name_allowed(ch->opts.tls, ssl, tls_why, sizeof tls_why)) {
            snprintf(why, sizeof why, "TLS with %s: %.300s", ch->target,
                     tls_why);
            rpc_logf(RPC_LOG_WARN, "rpc: %s", why);
            connection_failed(ch, RPC_E_UNAVAILABLE, why);
            return;
        }
    }
    if (what & BEV_EVENT_CONNECTED) {
        if (!ch->tls_up) {
            rpc_tune_socket(bufferevent_getfd(ch->bev));
        }
        if (!ch->opts.peer_auth) {
            connection_ready(ch);
            return;
        }
        uint8_t hello[RPC_PEER_HELLO_SIZE];
        if (rpc_peer_hello(&ch->hs, ch->opts.peer_auth, ch->opts.peer_id,
                           hello) != 0) {
            connection_failed(ch, RPC_E_UNAVAILABLE,
                              "peer handshake: no randomness");
            return;
        }
        ch->hs_proved = false;
        ch->state = CH_HANDSHAKE;
        bufferevent_write(ch->bev, hello, sizeof hello);
        return; /* the connect timer also bounds the handshake */
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        int err = EVUTIL_SOCKET_ERROR();
        if (ch->state == CH_HANDSHAKE) {
            handshake_failed(ch, ch->hs_proved
                                     ? "it closed the connection after our "
                                       "proof"
                                     : "it closed the connection (is that "
                                       "its peer port?)");
        } else if (ch->state == CH_CONNECTING && ch->tls_up) {
            char tls_why[400];
            rpc_tls_error(ch->bev, tls_why, sizeof tls_why);
            snprintf(why, sizeof why, "connect to %s: %.300s", ch->target,
                     tls_why);
            connection_failed(ch, RPC_E_UNAVAILABLE, why);
        } else if (ch->state == CH_CONNECTING) {
            snprintf(
                why, sizeof why, "connect to %s: %s", ch->target,
                err ? evutil_socket_error_to_string(err) : "connection closed");
            connection_failed(ch, RPC_E_UNAVAILABLE, why);
        } else {
            snprintf(why, sizeof why, "connection to %s lost: %s", ch->target,
                     (what & BEV_EVENT_EOF)
                         ? "closed by the server"
                         : evutil_socket_error_to_string(err));
            connection_failed(ch, RPC_E_CONNECTION_LOST, why);
        }
    }
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rpc_channel *ch = arg;
    char why[600];
    snprintf(why, sizeof why,
             ch->state == CH_HANDSHAKE
                 ? "peer handshake with %s: no answer within %u ms"
                 : "connect to %s: no answer within %u ms",
             ch->target, ch->opts.connect_timeout_ms);
    connection_failed(ch, RPC_E_UNAVAILABLE, why);
}

/* Resolve host:port (and bind_host) and start a non-blocking connect. */
static int start_connect(struct rpc_channel *ch)
{
    struct evutil_addrinfo hints = {0}, *ai = NULL, *bai = NULL;
    char port[8];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%u", ch->port);
    int gai = evutil_getaddrinfo(ch->host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(ch->last_failure, sizeof ch->last_failure, "resolve %s: %s",
                 ch->host, evutil_gai_strerror(gai));
        return RPC_E_UNAVAILABLE;
    }
    int fd =
        socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(ch->last_failure, sizeof ch->last_failure, "socket: %s",
                 strerror(errno));
        evutil_freeaddrinfo(ai);
        return RPC_E_UNAVAILABLE;
    }
    if (ch->opts.bind_host) {
        hints.ai_family = ai->ai_family;
        hints.ai_flags = EVUTIL_AI_PASSIVE;
        gai = evutil_getaddrinfo(ch->opts.bind_host, "0", &hints, &bai);
        if (gai != 0 || bind(fd, bai->ai_addr, bai->ai_addrlen) != 0) {
            snprintf(ch->last_failure, sizeof ch->last_failure,
                     "bind source address %s: %s", ch->opts.bind_host,
                     gai ? evutil_gai_strerror(gai) : strerror(errno));
            if (bai) {
                evutil_freeaddrinfo(bai);
            }
            evutil_freeaddrinfo(ai);
            close(fd);
            return RPC_E_UNAVAILABLE;
        }
        evutil_freeaddrinfo(bai);
    }
    ch->dec = rpc_decoder_new(&ch->opts.limits);
    ch->bev = ch->dec
                  ? bufferevent_socket_new(ch->base, fd, BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
    if (!ch->bev) {
        close(fd);
        evutil_freeaddrinfo(ai);
        drop_connection(ch);
        snprintf(ch->last_failure, sizeof ch->last_failure, "out of memory");
        return RPC_E_NOMEM;
    }
    if (ch->opts.priority) {
        bufferevent_priority_set(ch->bev, ch->opts.priority - 1);
    }
    bufferevent_setcb(ch->bev, on_read, NULL, on_event, ch);
    bufferevent_enable(ch->bev, EV_READ | EV_WRITE);
    ch->state = CH_CONNECTING;
    int rv =
        bufferevent_socket_connect(ch->bev, ai->ai_addr, (int)ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (rv != 0) {
        snprintf(ch->last_failure, sizeof ch->last_failure, "connect to %s: %s",
                 ch->target, strerror(errno));
        drop_connection(ch);
        return RPC_E_UNAVAILABLE;
    }
    struct timeval tv = {ch->opts.connect_timeout_ms / 1000,
                         (ch->opts.connect_timeout_ms % 1000) * 1000};
    event_add(ch->connect_timer, &tv);
    return 0;
}

/* ----------------------------------------------------------------- calls */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pending *p = arg;
    struct rpc_channel *ch = p->ch;
    char why[700];
    if (p->held) {
        release_held(p, 0, NULL);
        return;
    }
    if (!table_take(ch, p->id)) {
        return;
    }
    if (p->early_status) {
        snprintf(why, sizeof why, "%s",
                 p->early_msg ? p->early_msg : rpc_strerror(p->early_status));
        complete(p, NULL, p->early_status, why);
        return;
    }
    snprintf(why, sizeof why, "no reply from %s within %u ms", ch->target,
             p->deadline_ms);
    complete(p, NULL, RPC_E_TIMEOUT, why);
}

/* Has the server closed (or reset) the connection? Never blocks. */
static bool peer_closed(struct rpc_channel *ch)
{
    char b;
    ssize_t r = recv(bufferevent_getfd(ch->tls_up ? ch->raw : ch->bev), &b, 1,
                     MSG_PEEK | MSG_DONTWAIT);
    return r == 0 ||
           (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Make the connection usable for a call, or say why not. */
static int ensure_connection(struct rpc_channel *ch)
{
    if (ch->state == CH_BACKOFF) {
        uint64_t now = rpc_now_ms();
        if (now < ch->retry_at) {
            return RPC_E_UNAVAILABLE; /* reason: ch->last_failure */
        }
        ch->state = CH_IDLE;
    }
    /* Late replies may sit in front of an end of stream: drain them. */
    for (int i = 0; i < 4 && ch->state == CH_CONNECTED && ch->own_base; i++) {
        event_base_loop(ch->base, EVLOOP_NONBLOCK);
    }
    if (ch->state == CH_CONNECTED && ch->own_base && peer_closed(ch)) {
        /* A blocking channel runs no loop between calls, so it has not
         * seen its server go away: reconnect rather than send into a dead
         * connection (which would leave the call's fate unknown). */
        connection_failed(ch, RPC_E_CONNECTION_LOST,
                          "connection closed by the server");
    }
    if (ch->state == CH_IDLE) {
        int rv = start_connect(ch);
        if (rv != 0) {
            back_off(ch);
            return rv;
        }
    }
    return 0;
}

static void delayed_free(struct delayed_send *d)
{
    struct rpc_channel *ch = d->ch;
    if (d->prev) {
        d->prev->next = d->next;
    } else {
        ch->delayed = d->next;
    }
    if (d->next) {
        d->next->prev = d->prev;
    }
    event_free(d->timer);
    evbuffer_free(d->frames);
    free(d);
}

/* A delayed request may leave now, if its connection still stands. */
static void on_delayed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct delayed_send *d = arg;
    struct rpc_channel *ch = d->ch;
    if (ch->bev && d->conn_gen == ch->conn_gen) {
        evbuffer_add_buffer(ch->state == CH_CONNECTED
                                ? bufferevent_get_output(ch->bev)
                                : ch->pending,
                            d->frames);
    }
    delayed_free(d);
}

/* Write a request (and, by fault choice, its duplicate) to the
 * connection, now or after the chosen delay. */
static int send_request(struct rpc_channel *ch,
                        Raftkv__RpcHeader *hdr,
                        const ProtobufCMessage *input,
                        const struct rpc_fault_choice *fc)
{
    struct evbuffer *out = bufferevent_get_output(ch->bev);
    if (ch->state != CH_CONNECTED) {
        out = ch->pending; /* leaves once connected (connection_ready) */
    } else if (evbuffer_get_length(out) == 0) {
        out = ch->pending;
        event_active(ch->flush_ev, EV_TIMEOUT, 0);
    }
    struct delayed_send *d = NULL;
    if (fc->delay_ms) {
        d = calloc(1, sizeof *d);
        if (!d || !(d->frames = evbuffer_new()) ||
            !(d->timer = evtimer_new(ch->base, on_delayed, d))) {
            if (d && d->frames) {
                evbuffer_free(d->frames);
            }
            free(d);
            d = NULL; /* no memory to delay: send at once */
        } else {
            out = d->frames;
        }
    }
    int rv = rpc_write_frame(out, hdr, input, &ch->opts.limits);
    if (rv == 0 && fc->duplicate) {
        uint64_t id = hdr->call_id;
        hdr->call_id = ++ch->next_id; /* its reply counts as late */
        rpc_write_frame(out, hdr, input, &ch->opts.limits);
        hdr->call_id = id;
    }
    if (d) {
        if (rv != 0) {
            event_free(d->timer);
            evbuffer_free(d->frames);
            free(d);
            return rv;
        }
        d->ch = ch;
        d->conn_gen = ch->conn_gen;
        d->next = ch->delayed;
        if (ch->delayed) {
            ch->delayed->prev = d;
        }
        ch->delayed = d;
        struct timeval tv = {fc->delay_ms / 1000, (fc->delay_ms % 1000) * 1000};
        event_add(d->timer, &tv);
    }
    return rv;
}

/* A new entry for a call, or NULL when out of memory. */
static struct pending *pending_new(struct rpc_channel *ch,
                                   const ProtobufCMethodDescriptor *m)
{
    struct pending *p = calloc(1, sizeof *p);
    if (p) {
        p->timer = event_new(ch->base, -1, 0, on_timer, p);
    }
    if (!p || !p->timer ||
        (ch->n_pending >= ch->table_size && !table_grow(ch))) {
        if (p && p->timer) {
            event_free(p->timer);
        }
        free(p);
        return NULL;
    }
    p->ch = ch;
    p->id = ++ch->next_id;
    p->input = m->input;
    p->output = m->output;
    p->deadline_ms = ch->deadline_ms;
    if (ch->trace_id) {
        p->trace_id = ch->trace_id;
    } else {
        p->trace_id = rpc_trace_id_next(&ch->trace_next);
    }
    return p;
}

/* Send a call (a single one, or a stream's start) and put it in the
 * table; failures come from the loop, through the entry's timer. */
static void launch(struct rpc_channel *ch,
                   const ProtobufCServiceDescriptor *desc,
                   const ProtobufCMethodDescriptor *m,
                   const ProtobufCMessage *input,
                   struct pending *p)
{
    /* Settle the connection first: a dead one fails the calls pending on
     * it, which must not include this one. */
    int rv = ensure_connection(ch);
    size_t b = bucket(ch, p->id);
    p->hnext = ch->table[b];
    ch->table[b] = p;
    ch->n_pending++;
    ch->stats.calls++;
    size_t unsent =
        rv == 0 ? evbuffer_get_length(ch->pending) +
                      evbuffer_get_length(bufferevent_get_output(ch->bev))
                : 0;
    if (rv == 0 && unsent > ch->opts.max_output) {
        snprintf(ch->last_failure, sizeof ch->last_failure,
                 "%s is not reading: %zu bytes unsent", ch->target, unsent);
        rv = RPC_E_OVERLOADED;
    }
    struct rpc_fault_choice fc = {0};
    if (rv == 0 && ch->faults.active) {
        rpc_fault_plan(&ch->faults, &fc);
        if (fc.cut || fc.drop_request) {
            snprintf(ch->last_failure, sizeof ch->last_failure,
                     fc.cut ? "link to %s cut (fault injection)"
                            : "request to %s lost (fault injection)",
                     ch->target);
            rv = fc.cut ? RPC_E_UNAVAILABLE : RPC_E_CONNECTION_LOST;
        }
        if (p->stream_cb) {
            fc.duplicate = false; /* replies of streams are not faulted */
        } else {
            p->drop_reply = fc.drop_reply;
            p->hold_ms = fc.hold_ms;
        }
    }
    if (rv == 0) {
        Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
        hdr.service_name = (char *)desc->name;
        hdr.method_name = (char *)m->name;
        hdr.call_id = p->id;
        hdr.shared_ok = p->stream_cb != NULL; /* on_shared_frame takes them */
        hdr.trace_id = p->trace_id;
        hdr.cluster_id = ch->cluster_id;
        if (!p->stream_cb) {
            /* The server need not start what nobody will wait for. */
            hdr.timeout_ms = p->deadline_ms;
        }
        if (ch->auth_token) {
            hdr.auth_token = ch->auth_token;
        }
        rv = send_request(ch, &hdr, input, &fc);
        if (rv == RPC_E_TOO_BIG) {
            snprintf(ch->last_failure, sizeof ch->last_failure,
                     "%s.%s request over the frame size cap", desc->name,
                     m->name);
        }
    }
    if (rv != 0) {
        /* Fail from the event loop, never inside the stub call. */
        p->early_status = rv;
        p->early_msg = strdup(ch->last_failure);
        if (fc.fail_after_ms) {
            struct timeval tv = {fc.fail_after_ms / 1000,
                                 (fc.fail_after_ms % 1000) * 1000};
            event_add(p->timer, &tv);
        } else {
            event_active(p->timer, EV_TIMEOUT, 0);
        }
    } else if (!p->stream_cb) {
        struct timeval tv = {p->deadline_ms / 1000,
                             (p->deadline_ms % 1000) * 1000};
        event_add(p->timer, &tv);
    }
}

static void channel_invoke(ProtobufCService *service,
                           unsigned method_index,
                           const ProtobufCMessage *input,
                           ProtobufCClosure closure,
                           void *closure_data)
{
    struct channel_service *cs = (struct channel_service *)service;
    struct rpc_channel *ch = cs->ch;
    const ProtobufCMethodDescriptor *m =
        &service->descriptor->methods[method_index];
    bool done = false;

    struct pending *p = pending_new(ch, m);
    if (!p) {
        /* No memory even to queue a failure: fail inline, the one case. */
        ch->stats.failed++;
        rpc_set_last(RPC_E_NOMEM, "out of memory starting a call");
        closure(NULL, closure_data);
        return;
    }
    p->closure = closure;
    p->closure_data = closure_data;
    p->done = ch->own_base ? &done : NULL;
    launch(ch, service->descriptor, m, input, p);
    if (ch->own_base) {
        while (!done) {
            event_base_loop(ch->base, EVLOOP_ONCE);
        }
    }
}

struct rpc_stream *rpc_channel_stream(struct rpc_channel *ch,
                                      const ProtobufCServiceDescriptor *desc,
                                      const char *method,
                                      const ProtobufCMessage *input,
                                      rpc_stream_msg_cb cb,
                                      void *arg)
{
    const ProtobufCMethodDescriptor *m =
        desc && method
            ? protobuf_c_service_descriptor_get_method_by_name(desc, method)
            : NULL;
    if (!ch || !m || !cb || !input || input->descriptor != m->input) {
        rpc_set_last(RPC_E_INVALID, "rpc_channel_stream: bad arguments");
        return NULL;
    }
    struct pending *p = pending_new(ch, m);
    if (!p) {
        rpc_set_last(RPC_E_NOMEM, "out of memory starting a stream");
        return NULL;
    }
    p->stream_cb = cb;
    p->stream_arg = arg;
    launch(ch, desc, m, input, p);
    return stream_of(p);
}

void rpc_stream_cancel(struct rpc_stream *st)
{
    struct pending *p = pending_of(st);
    struct rpc_channel *ch = p->ch;
    if (!table_take(ch, p->id)) {
        return; /* (cannot happen: a stream is in the table until it ends) */
    }
    if (!p->early_status && ch->bev) {
        Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
        hdr.call_id = p->id;
        hdr.cancel = true;
        struct rpc_fault_choice fc = {0};
        send_request(ch, &hdr, NULL, &fc);
    }
    event_free(p->timer);
    free(p->early_msg);
    free(p);
}

int rpc_stream_send_msg(struct rpc_stream *st, const ProtobufCMessage *msg)
{
    if (!st || !msg) {
        rpc_set_last(RPC_E_INVALID,
                     "rpc_stream_send_msg: no stream or message");
        return RPC_E_INVALID;
    }
    struct pending *p = pending_of(st);
    struct rpc_channel *ch = p->ch;
    if (!p->stream_cb || msg->descriptor != p->input) {
        rpc_set_last(RPC_E_INVALID,
                     "rpc_stream_send_msg: not a message of the stream's "
                     "input type");
        return RPC_E_INVALID;
    }
    if (p->early_status || !ch->bev || p->doomed) {
        /* Its start failed: the end comes from the loop. */
        int status = p->early_status ? p->early_status : RPC_E_CONNECTION_LOST;
        rpc_set_last(status,
                     p->early_msg ? p->early_msg : rpc_strerror(status));
        return status;
    }
    size_t unsent = evbuffer_get_length(ch->pending) +
                    evbuffer_get_length(bufferevent_get_output(ch->bev));
    if (unsent > ch->opts.max_output) {
        char why[400];
        snprintf(why, sizeof why, "%s is not reading: %zu bytes unsent",
                 ch->target, unsent);
        rpc_set_last(RPC_E_OVERLOADED, why);
        return RPC_E_OVERLOADED;
    }
    Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
    hdr.call_id = p->id;
    hdr.stream_msg = true;
    struct rpc_fault_choice fc = {0}; /* (messages are not faulted) */
    int rv = send_request(ch, &hdr, msg, &fc);
    if (rv != 0) {
        rpc_set_last(rv, rv == RPC_E_TOO_BIG
                             ? "stream message over the frame size cap"
                             : rpc_strerror(rv));
    }
    return rv;
}

uint64_t rpc_stream_id(const struct rpc_stream *st)
{
    return ((const struct pending *)(const void *)st)->id;
}

static void on_wait_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

int rpc_channel_wait(struct rpc_channel *ch, uint32_t timeout_ms)
{
    if (!ch->own_base) {
        return RPC_E_INVALID;
    }
    bool expired = false;
    struct event *t = evtimer_new(ch->base, on_wait_timer, &expired);
    if (!t) {
        return RPC_E_NOMEM;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(t, &tv);
    uint64_t seen = ch->callbacks;
    while (ch->callbacks == seen && !expired) {
        event_base_loop(ch->base, EVLOOP_ONCE);
    }
    event_free(t);
    return ch->callbacks != seen ? 0 : RPC_E_TIMEOUT;
}

/* ------------------------------------------------------------ public API */

static struct rpc_channel *channel_new(struct event_base *base,
                                       bool own,
                                       const char *host,
                                       uint16_t port,
                                       const struct rpc_channel_options *opts)
{
    if (!host) {
        return NULL;
    }
    struct rpc_channel *ch = calloc(1, sizeof *ch);
    if (!ch) {
        return NULL;
    }
    if (opts) {
        ch->opts = *opts;
    }
    ch->opts.bind_host = NULL;
    ch->host = strdup(host);
    if (opts && opts->bind_host) {
        ch->opts.bind_host = strdup(opts->bind_host);
        if (!ch->opts.bind_host) {
            goto err_free;
        }
    }
    if (!ch->host) {
        goto err_free;
    }
#define DEFAULT(f, v) \
    if (!ch->opts.f)  \
    ch->opts.f = (v)
    DEFAULT(deadline_ms, DEFAULT_DEADLINE_MS);
    DEFAULT(connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
    DEFAULT(backoff_min_ms, DEFAULT_BACKOFF_MIN_MS);
    DEFAULT(backoff_max_ms, DEFAULT_BACKOFF_MAX_MS);
    DEFAULT(limits.max_head, RPC_DEFAULT_MAX_HEAD);
    DEFAULT(limits.max_args, RPC_DEFAULT_MAX_ARGS);
    DEFAULT(max_output, DEFAULT_MAX_OUTPUT);
#undef DEFAULT
    ch->deadline_ms = ch->opts.deadline_ms;
    evutil_secure_rng_get_bytes(&ch->trace_next, sizeof ch->trace_next);
    ch->port = port;
    snprintf(ch->target, sizeof ch->target,
             strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    ch->base = own ? event_base_new() : base;
    ch->own_base = own;
    if (!ch->base) {
        goto err_free;
    }
    ch->connect_timer = evtimer_new(ch->base, on_connect_timeout, ch);
    ch->flush_ev = event_new(ch->base, -1, 0, on_flush, ch);
    ch->pending = evbuffer_new();
    if (!ch->connect_timer || !ch->flush_ev || !ch->pending ||
        !table_grow(ch)) {
        goto err_free;
    }
    ch->state = CH_IDLE;
    return ch;

err_free:
    if (ch->connect_timer) {
        event_free(ch->connect_timer);
    }
    if (ch->flush_ev) {
        event_free(ch->flush_ev);
    }
    if (ch->pending) {
        evbuffer_free(ch->pending);
    }
    if (own && ch->base) {
        event_base_free(ch->base);
    }
    free(ch->table);
    free((char *)ch->opts.bind_host);
    free(ch->host);
    free(ch);
    return NULL;
}

struct rpc_channel *rpc_channel_new(struct event_base *base,
                                    const char *host,
                                    uint16_t port,
                                    const struct rpc_channel_options *opts)
{
    return base ? channel_new(base, false, host, port, opts) : NULL;
}

struct rpc_channel *rpc_channel_new_blocking(
    const char *host,
    uint16_t port,
    const struct rpc_channel_options *opts)
{
    return channel_new(NULL, true, host, port, opts);
}

void rpc_channel_free(struct rpc_channel *ch)
{
    if (!ch) {
        return;
    }
    drop_connection(ch);
    ch->state = CH_BACKOFF;
    ch->retry_at = UINT64_MAX; /* closures that call again fail at once */
    snprintf(ch->last_failure, sizeof ch->last_failure, "channel to %s closed",
             ch->target);
    while (ch->n_pending || ch->held) {
        fail_all(ch, RPC_E_CANCELLED, ch->last_failure);
        if (ch->held) {
            release_held(ch->held, RPC_E_CANCELLED, ch->last_failure);
        }
    }
    while (ch->delayed) {
        delayed_free(ch->delayed);
    }
    while (ch->services) {
        struct channel_service *cs = ch->services;
        ch->services = cs->next;
        free(cs);
    }
    event_free(ch->connect_timer);
    event_free(ch->flush_ev);
    evbuffer_free(ch->pending);
    arena_release(&ch->arena);
    if (ch->own_base) {
        event_base_free(ch->base);
    }
    free(ch->table);
    free((char *)ch->opts.bind_host);
    free(ch->auth_token);
    free(ch->host);
    free(ch);
}

ProtobufCService *rpc_channel_service(struct rpc_channel *ch,
                                      const ProtobufCServiceDescriptor *desc)
{
    for (struct channel_service *cs = ch->services; cs; cs = cs->next) {
        if (cs->base.descriptor == desc) {
            return &cs->base;
        }
    }
    struct channel_service *cs = calloc(1, sizeof *cs);
    if (!cs) {
        return NULL;
    }
    cs->base.descriptor = desc;
    cs->base.invoke = channel_invoke;
    cs->base.destroy = NULL;
    cs->ch = ch;
    cs->next = ch->services;
    ch->services = cs;
    return &cs->base;
}

int rpc_channel_set_auth_token(struct rpc_channel *ch, const char *token)
{
    char *copy = NULL;
    if (token && *token && !(copy = strdup(token))) {
        return RPC_E_NOMEM;
    }
    free(ch->auth_token);
    ch->auth_token = copy;
    return 0;
}

void rpc_channel_set_trace_id(struct rpc_channel *ch, uint64_t id)
{
    ch->trace_id = id;
}

void rpc_channel_set_cluster_id(struct rpc_channel *ch, uint64_t id)
{
    ch->cluster_id = id;
}

uint64_t rpc_channel_cluster_id(const struct rpc_channel *ch)
{
    return ch->seen_cluster_id;
}

void rpc_channel_set_deadline(struct rpc_channel *ch, uint32_t ms)
{
    ch->deadline_ms = ms ? ms : ch->opts.deadline_ms;
}

void rpc_channel_flush(struct rpc_channel *ch)
{
    if (ch->state != CH_CONNECTED || !ch->bev) {
        return;
    }
    channel_flush(ch);
    rpc_bev_flush(ch->tls_up ? ch->raw : ch->bev);
}

size_t rpc_channel_pending(const struct rpc_channel *ch)
{
    return ch->n_pending;
}

bool rpc_channel_connected(const struct rpc_channel *ch)
{
    return ch->state == CH_CONNECTED;
}

void rpc_channel_get_stats(const struct rpc_channel *ch,
                           struct rpc_channel_stats *out)
{
    *out = ch->stats;
}

const char *rpc_channel_target(const struct rpc_channel *ch)
{
    return ch->target;
}

int rpc_channel_set_faults(struct rpc_channel *ch,
                           const struct rpc_faults *f,
                           uint64_t seed)
{
    return rpc_fault_set(&ch->faults, f, seed);
}

const struct rpc_faults *rpc_channel_faults(const struct rpc_channel *ch)
{
    return ch->faults.active ? &ch->faults.f : NULL;
}

void rpc_channel_get_fault_stats(const struct rpc_channel *ch,
                                 struct rpc_fault_stats *out)
{
    *out = ch->faults.stats;
}
