/* echo_service.c: the test EchoService, in-process or in a child process. */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "echo_service.h"
#include "rpc/rpc.h"

/* A deferred reply waiting for its timer. */
struct deferred
{
    struct echo_service *owner;
    struct event *timer;
    Raftkv__Test__EchoReply_Closure closure;
    void *closure_data;
    size_t len;
    uint8_t payload[]; /* copy of the request's payload */
};

static void echo_echo(Raftkv__Test__EchoService_Service *svc,
                      const Raftkv__Test__EchoArgs *in,
                      Raftkv__Test__EchoReply_Closure closure,
                      void *closure_data)
{
    struct echo_service *e = (struct echo_service *)svc;
    Raftkv__Test__EchoReply reply = RAFTKV__TEST__ECHO_REPLY__INIT;
    e->calls++;
    if (in->payload.len == 4 && memcmp(in->payload.data, "mark", 4) == 0) {
        e->mark_at = e->calls; /* and echoed below */
    }
    static char text[32];
    if (in->payload.len == 5 && memcmp(in->payload.data, "trace", 5) == 0) {
        snprintf(text, sizeof text, "%016llx",
                 (unsigned long long)rpc_call_trace_id(closure_data));
        reply.payload.data = (uint8_t *)text;
        reply.payload.len = strlen(text);
    } else if (in->payload.len == 8 &&
               memcmp(in->payload.data, "deadline", 8) == 0) {
        uint64_t d = rpc_call_deadline(closure_data);
        snprintf(text, sizeof text, "%lld",
                 d ? (long long)(d - rpc_now_ms()) : -1LL);
        reply.payload.data = (uint8_t *)text;
        reply.payload.len = strlen(text);
    } else if (in->payload.len == 6 &&
               memcmp(in->payload.data, "whoami", 6) == 0) {
        const char *peer = rpc_call_peer(closure_data);
        reply.payload.data = (uint8_t *)peer;
        reply.payload.len = strlen(peer);
    } else if (in->payload.len == 6 &&
               memcmp(in->payload.data, "peerid", 6) == 0) {
        static char id[24];
        snprintf(id, sizeof id, "%llu",
                 (unsigned long long)rpc_call_peer_id(closure_data));
        reply.payload.data = (uint8_t *)id;
        reply.payload.len = strlen(id);
    } else if (in->payload.len == 7 &&
               memcmp(in->payload.data, "tlsname", 7) == 0) {
        const char *name = rpc_call_tls_name(closure_data);
        reply.payload.data = (uint8_t *)name;
        reply.payload.len = strlen(name);
    } else if (in->payload.len == 5 &&
               memcmp(in->payload.data, "token", 5) == 0) {
        const char *token = rpc_call_auth_token(closure_data);
        reply.payload.data = (uint8_t *)token;
        reply.payload.len = strlen(token);
    } else {
        reply.payload = in->payload;
    }
    closure(&reply, closure_data);
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct deferred *d = arg;
    Raftkv__Test__EchoReply reply = RAFTKV__TEST__ECHO_REPLY__INIT;
    reply.payload.data = d->payload;
    reply.payload.len = d->len;
    d->owner->deferred--;
    d->closure(&reply, d->closure_data);
    event_free(d->timer);
    free(d);
}

static void echo_defer(Raftkv__Test__EchoService_Service *svc,
                       const Raftkv__Test__EchoArgs *in,
                       Raftkv__Test__EchoReply_Closure closure,
                       void *closure_data)
{
    struct echo_service *e = (struct echo_service *)svc;
    e->calls++;
    struct deferred *d = malloc(sizeof *d + in->payload.len);
    if (!d) {
        closure(NULL, closure_data);
        return;
    }
    d->timer = evtimer_new(e->base, on_deferred, d);
    if (!d->timer) {
        free(d);
        closure(NULL, closure_data);
        return;
    }
    d->owner = e;
    d->closure = closure;
    d->closure_data = closure_data;
    d->len = in->payload.len;
    if (d->len) {
        memcpy(d->payload, in->payload.data, d->len);
    }
    uint32_t delay = in->delay_ms;
    if (e->max_delay_ms && delay > e->max_delay_ms) {
        delay = e->max_delay_ms;
    }
    e->deferred++;
    struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
    evtimer_add(d->timer, &tv);
}

static void echo_fail(Raftkv__Test__EchoService_Service *svc,
                      const Raftkv__Test__EchoArgs *in,
                      Raftkv__Test__EchoReply_Closure closure,
                      void *closure_data)
{
    (void)in;
    ((struct echo_service *)svc)->calls++;
    closure(NULL, closure_data);
}

/* An open Stream call. */
struct echo_stream
{
    struct echo_service *owner;
    struct event *timer;
    Raftkv__Test__EchoReply_Closure closure;
    void *call;
    uint32_t count;            /* frames before the last (0: until cancelled) */
    uint32_t delay_ms;         /* between frames */
    uint32_t sent;             /* frames sent */
    bool shared;               /* sends only what echo_share_send gives it */
    struct echo_stream **link; /* shared: where the list points at it */
    struct echo_stream *next_shared; /* shared: the list */
    size_t len;
    uint8_t payload[]; /* copy of the request's payload */
};

static void stream_end(struct echo_stream *st, bool cancelled)
{
    Raftkv__Test__EchoReply reply = RAFTKV__TEST__ECHO_REPLY__INIT;
    char text[32];
    snprintf(text, sizeof text, "end:%u", st->sent);
    reply.payload.data = (uint8_t *)text;
    reply.payload.len = strlen(text);
    st->owner->streams_open--;
    if (st->shared) {
        *st->link = st->next_shared;
        if (st->next_shared) {
            st->next_shared->link = st->link;
        }
    }
    if (cancelled) {
        st->owner->streams_cancelled++;
    }
    event_free(st->timer);
    Raftkv__Test__EchoReply_Closure closure = st->closure;
    void *call = st->call;
    free(st);
    closure(&reply, call);
}

/* Send frames until the count, a delay, or no room. */
static void stream_pump(struct echo_stream *st)
{
    char text[64];
    Raftkv__Test__EchoReply reply = RAFTKV__TEST__ECHO_REPLY__INIT;
    reply.payload.data = (uint8_t *)text;
    while (!st->count || st->sent < st->count) {
        int n = snprintf(text, sizeof text, "%.*s:%u",
                         (int)(st->len < 32 ? st->len : 32),
                         (const char *)st->payload, st->sent);
        reply.payload.len = (size_t)n;
        int rv = rpc_stream_send(st->call, &reply.base);
        if (rv == RPC_E_OVERLOADED) {
            st->owner->stream_stalls++;
            return; /* RPC_STREAM_WRITABLE resumes it */
        }
        if (rv != 0) {
            return; /* RPC_STREAM_CANCELLED comes */
        }
        st->sent++;
        st->owner->stream_frames++;
        if (st->delay_ms || st->sent % 10000 == 0) {
            /* (every 10,000 frames the loop gets a turn, so that a server
             * that never refuses is seen, not hung) */
            struct timeval tv = {st->delay_ms / 1000,
                                 (st->delay_ms % 1000) * 1000};
            evtimer_add(st->timer, &tv);
            return;
        }
    }
    stream_end(st, false);
}

static void on_stream_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stream_pump(arg);
}

static void on_stream_event(void *call, int event, void *arg)
{
    (void)call;
    struct echo_stream *st = arg;
    if (event == RPC_STREAM_CANCELLED) {
        stream_end(st, true);
    } else {
        stream_pump(st);
    }
}

static void echo_stream(Raftkv__Test__EchoService_Service *svc,
                        const Raftkv__Test__EchoArgs *in,
                        Raftkv__Test__EchoReply_Closure closure,
                        void *closure_data)
{
    struct echo_service *e = (struct echo_service *)svc;
    e->calls++;
    struct echo_stream *st = calloc(1, sizeof *st + in->payload.len);
    if (!st || !(st->timer = evtimer_new(e->base, on_stream_timer, st))) {
        free(st);
        closure(NULL, closure_data);
        return;
    }
    st->owner = e;
    st->closure = closure;
    st->call = closure_data;
    st->count = in->count;
    st->delay_ms = in->delay_ms;
    st->len = in->payload.len;
    if (st->len) {
        memcpy(st->payload, in->payload.data, st->len);
    }
    if (rpc_stream_open(closure_data, on_stream_event, st) != 0) {
        event_free(st->timer);
        free(st);
        closure(NULL, closure_data);
        return;
    }
    e->streams_open++;
    if (st->len >= 5 && !memcmp(st->payload, "share", 5) && !st->count) {
        st->shared = true; /* frames from echo_share_send only */
        st->next_shared = e->shared;
        if (e->shared) {
            e->shared->link = &st->next_shared;
        }
        st->link = &e->shared;
        e->shared = st;
        return;
    }
    stream_pump(st);
}

size_t echo_share_send(struct echo_service *e,
                       const char *payload,
                       int *results,
                       size_t cap)
{
    void *calls[256];
    size_t n = 0;
    for (struct echo_stream *st = e->shared; st && n < cap && n < 256;
         st = st->next_shared) {
        calls[n++] = st->call;
    }
    Raftkv__Test__EchoReply reply = RAFTKV__TEST__ECHO_REPLY__INIT;
    reply.payload.data = (uint8_t *)payload;
    reply.payload.len = strlen(payload);
    uint8_t packed[256];
    size_t len = raftkv__test__echo_reply__get_packed_size(&reply);
    if (len > sizeof packed) {
        return 0;
    }
    raftkv__test__echo_reply__pack(&reply, packed);
    rpc_stream_send_shared(calls, n, packed, len, results);
    return n;
}

/* An open Chat call. */
struct echo_chat
{
    struct echo_service *owner;
    Raftkv__Test__EchoReply_Closure closure;
    void *call;
    uint32_t taken; /* messages taken */
};

static void chat_end(struct echo_chat *ch, bool cancelled)
{
    Raftkv__Test__EchoReply reply = RAFTKV__TEST__ECHO_REPLY__INIT;
    char text[32];
    snprintf(text, sizeof text, "end:%u", ch->taken);
    reply.payload.data = (uint8_t *)text;
    reply.payload.len = strlen(text);
    ch->owner->chats_open--;
    if (cancelled) {
        ch->owner->chats_cancelled++;
    }
    Raftkv__Test__EchoReply_Closure closure = ch->closure;
    void *call = ch->call;
    free(ch);
    closure(&reply, call);
}

static void chat_say(struct echo_chat *ch, const ProtobufCBinaryData *payload)
{
    Raftkv__Test__EchoReply reply = RAFTKV__TEST__ECHO_REPLY__INIT;
    reply.payload = *payload;
    if (rpc_stream_send(ch->call, &reply.base) == RPC_E_OVERLOADED) {
        ch->owner->stream_stalls++;
    }
}

static void on_chat_message(void *call, const ProtobufCMessage *msg, void *arg)
{
    (void)call;
    struct echo_chat *ch = arg;
    const Raftkv__Test__EchoArgs *in = (const Raftkv__Test__EchoArgs *)msg;
    ch->taken++;
    ch->owner->chat_messages++;
    size_t n = in->payload.len < sizeof ch->owner->chat_last - 1
                   ? in->payload.len
                   : sizeof ch->owner->chat_last - 1;
    if (n) {
        memcpy(ch->owner->chat_last, in->payload.data, n);
    }
    ch->owner->chat_last[n] = '\0';
    if (in->payload.len == 3 && memcmp(in->payload.data, "end", 3) == 0) {
        chat_end(ch, false);
        return;
    }
    chat_say(ch, &in->payload);
}

static void on_chat_event(void *call, int event, void *arg)
{
    (void)call;
    if (event == RPC_STREAM_CANCELLED) {
        chat_end(arg, true);
    }
}

static void echo_chat(Raftkv__Test__EchoService_Service *svc,
                      const Raftkv__Test__EchoArgs *in,
                      Raftkv__Test__EchoReply_Closure closure,
                      void *closure_data)
{
    struct echo_service *e = (struct echo_service *)svc;
    e->calls++;
    struct echo_chat *ch = calloc(1, sizeof *ch);
    if (!ch) {
        closure(NULL, closure_data);
        return;
    }
    ch->owner = e;
    ch->closure = closure;
    ch->call = closure_data;
    if (rpc_stream_open(closure_data, on_chat_event, ch) != 0 ||
        rpc_stream_on_message(closure_data, on_chat_message) != 0) {
        free(ch);
        closure(NULL, closure_data);
        return;
    }
    e->chats_open++;
    chat_say(ch, &in->payload);
}

void echo_service_init(struct echo_service *e, struct event_base *base)
{
    Raftkv__Test__EchoService_Service init = {
        RAFTKV__TEST__ECHO_SERVICE__BASE_INIT,
        echo_echo,
        echo_defer,
        NULL, /* Unimplemented: the server must answer "unknown method" */
        echo_fail,
        echo_stream,
        echo_chat,
    };
    memset(e, 0, sizeof *e);
    e->svc = init;
    e->base = base;
}

pid_t echo_server_spawn(const char *host, uint16_t port, uint16_t *port_out)
{
    int fds[2];
    if (pipe(fds) != 0) {
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        struct event_base *base = event_base_new();
        struct rpc_server *s = rpc_server_new(base, NULL);
        struct echo_service e;
        echo_service_init(&e, base);
        uint16_t bound = 0;
        if (!s || rpc_server_add_service(s, &e.svc.base) != 0 ||
            rpc_server_listen(s, host, port, &bound) != 0) {
            bound = 0;
        }
        if (write(fds[1], &bound, sizeof bound) != sizeof bound || !bound) {
            _exit(1);
        }
        close(fds[1]);
        event_base_dispatch(base);
        _exit(0);
    }
    close(fds[1]);
    uint16_t bound = 0;
    ssize_t n = read(fds[0], &bound, sizeof bound);
    close(fds[0]);
    if (n != sizeof bound || bound == 0) {
        echo_server_kill(pid);
        return -1;
    }
    *port_out = bound;
    return pid;
}

void echo_server_kill(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}
