/* test_rpc_stream.c: server streams over loopback: many frames per call,
 * cancel, flow control, the ends a stream can meet, and the caller's
 * messages on an open stream. */
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <CUnit/Basic.h>
#include <event2/event.h>

#include "cunit_main.h"
#include "echo_loop.h"
#include "rpc/rpc.h"

#define SOON_MS 10000

static const ProtobufCServiceDescriptor *echo_desc =
    &raftkv__test__echo_service__descriptor;

/* What a stream's callback saw. */
struct seen
{
    int msgs;            /* messages (end false) */
    int ends;            /* end calls: must end at 1 */
    int end_status;      /* RPC_OK, or rpc_last_status() on failure */
    char end_error[256]; /* rpc_last_error() on failure */
    char last[64];       /* the last message's payload */
    char end_payload[64];
    bool in_order;    /* message n said "<payload>:n" */
    int cancel_after; /* cancel from the callback after this many */
    struct rpc_stream *st;
    struct seen *cancel_on_end; /* cancel that one's stream at our end */
    struct seen *cancel_other;  /* cancel that one's stream at our next
                                   message */
};

static void copy_payload(char *out, size_t cap, const ProtobufCMessage *m)
{
    const Raftkv__Test__EchoReply *r = (const Raftkv__Test__EchoReply *)m;
    size_t n = r->payload.len < cap - 1 ? r->payload.len : cap - 1;
    memcpy(out, r->payload.data, n);
    out[n] = '\0';
}

static void on_stream(struct rpc_stream *st,
                      const ProtobufCMessage *msg,
                      bool end,
                      void *arg)
{
    struct seen *s = arg;
    if (!end) {
        char want[64];
        copy_payload(s->last, sizeof s->last, msg);
        const char *colon = strrchr(s->last, ':');
        snprintf(want, sizeof want, "%d", s->msgs);
        if (!colon || strcmp(colon + 1, want) != 0) {
            s->in_order = false;
        }
        s->msgs++;
        if (s->cancel_after && s->msgs == s->cancel_after) {
            rpc_stream_cancel(st);
            s->st = NULL;
        }
        if (s->cancel_other && s->cancel_other->st) {
            rpc_stream_cancel(s->cancel_other->st);
            s->cancel_other->st = NULL;
            s->cancel_other = NULL;
        }
        return;
    }
    s->ends++;
    s->st = NULL;
    if (s->cancel_on_end && s->cancel_on_end->st) {
        rpc_stream_cancel(s->cancel_on_end->st);
        s->cancel_on_end->st = NULL;
    }
    if (msg) {
        s->end_status = RPC_OK;
        copy_payload(s->end_payload, sizeof s->end_payload, msg);
    } else {
        s->end_status = rpc_last_status();
        snprintf(s->end_error, sizeof s->end_error, "%s", rpc_last_error());
    }
}

static struct rpc_stream *start(struct rpc_channel *ch,
                                const char *payload,
                                uint32_t count,
                                uint32_t delay_ms,
                                struct seen *s)
{
    Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
    a.payload.data = (uint8_t *)payload;
    a.payload.len = strlen(payload);
    a.count = count;
    a.delay_ms = delay_ms;
    memset(s, 0, sizeof *s);
    s->in_order = true;
    s->st = rpc_channel_stream(ch, echo_desc, "Stream", &a.base, on_stream, s);
    return s->st;
}

/* Run the loop until *counter >= target or timeout_ms pass. */
static bool run_until_at_least(struct event_base *b,
                               const int *counter,
                               int target,
                               int timeout_ms)
{
    uint64_t deadline = test_now_ms() + (uint64_t)timeout_ms;
    while (*counter < target && test_now_ms() < deadline) {
        loop_run_for(b, 2);
    }
    return *counter >= target;
}

static bool run_until_u64(struct event_base *b,
                          const uint64_t *v,
                          uint64_t want,
                          int timeout_ms)
{
    uint64_t deadline = test_now_ms() + (uint64_t)timeout_ms;
    while (*v != want && test_now_ms() < deadline) {
        loop_run_for(b, 2);
    }
    return *v == want;
}

static void test_stream_frames_arrive_in_order_then_its_end(void)
{
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    struct seen s;
    CU_ASSERT_FATAL(start(ch, "s", 200, 0, &s) != NULL);
    CU_ASSERT_EQUAL(s.msgs, 0); /* never inside the call that starts it */
    CU_ASSERT(loop_run_until(l.base, &s.ends, 1, SOON_MS));
    CU_ASSERT_EQUAL(s.msgs, 200);
    CU_ASSERT(s.in_order);
    CU_ASSERT_STRING_EQUAL(s.last, "s:199");
    CU_ASSERT_EQUAL(s.end_status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(s.end_payload, "end:200");
    CU_ASSERT_EQUAL(rpc_channel_pending(ch), 0);
    loop_run_for(l.base, 50); /* nothing more comes after the end */
    CU_ASSERT_EQUAL(s.ends, 1);
    CU_ASSERT_EQUAL(s.msgs, 200);
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

static void test_stream_cancel_stops_the_server_and_keeps_the_connection(void)
{
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    struct seen s;
    start(ch, "c", 0, 5, &s);
    s.cancel_after = 3; /* from inside the callback */
    CU_ASSERT(run_until_at_least(l.base, &s.msgs, 3, SOON_MS));
    CU_ASSERT(run_until_u64(l.base, &l.echo.streams_cancelled, 1, SOON_MS));
    CU_ASSERT_EQUAL(l.echo.streams_open, 0);
    loop_run_for(l.base, 100);
    CU_ASSERT_EQUAL(s.msgs, 3); /* frames on their way were dropped */
    CU_ASSERT_EQUAL(s.ends, 0); /* a cancelled stream hears no end */
    CU_ASSERT_EQUAL(rpc_channel_pending(ch), 0);

    /* Cancel from outside a callback, the same. */
    struct seen t;
    struct rpc_stream *st = start(ch, "d", 0, 5, &t);
    CU_ASSERT(run_until_at_least(l.base, &t.msgs, 2, SOON_MS));
    rpc_stream_cancel(st);
    CU_ASSERT(run_until_u64(l.base, &l.echo.streams_cancelled, 2, SOON_MS));
    int got = t.msgs;
    loop_run_for(l.base, 100);
    CU_ASSERT_EQUAL(t.msgs, got);
    CU_ASSERT_EQUAL(t.ends, 0);

    /* The connection goes on serving calls and streams. */
    struct echo_result r = {0};
    echo_call(rpc_channel_service(ch, echo_desc), ECHO_M_ECHO, "still", 0, &r);
    CU_ASSERT(loop_run_until(l.base, &r.done, 1, SOON_MS));
    CU_ASSERT_STRING_EQUAL(r.payload, "still");
    struct rpc_channel_stats cs;
    rpc_channel_get_stats(ch, &cs);
    CU_ASSERT_EQUAL(cs.connects, 1);
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

static void test_stream_and_calls_share_one_connection(void)
{
    enum { CALLS = 300, STREAMS = 5 };
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    ProtobufCService *svc = rpc_channel_service(ch, echo_desc);
    static struct seen s[STREAMS];
    for (int i = 0; i < STREAMS; i++) {
        char p[8];
        snprintf(p, sizeof p, "m%d", i);
        start(ch, p, 40, 1, &s[i]);
    }
    static struct echo_result r[CALLS];
    memset(r, 0, sizeof r);
    echo_completions = 0;
    for (int i = 0; i < CALLS; i++) {
        echo_call(svc, ECHO_M_ECHO, "x", 0, &r[i]);
    }
    CU_ASSERT(loop_run_until(l.base, &echo_completions, CALLS, SOON_MS));
    for (int i = 0; i < STREAMS; i++) {
        CU_ASSERT(loop_run_until(l.base, &s[i].ends, 1, SOON_MS));
        CU_ASSERT_EQUAL(s[i].msgs, 40);
        CU_ASSERT(s[i].in_order);
        CU_ASSERT_EQUAL(s[i].end_status, RPC_OK);
    }
    for (int i = 0; i < CALLS; i++) {
        CU_ASSERT_EQUAL(r[i].status, RPC_OK);
    }
    struct rpc_channel_stats cs;
    rpc_channel_get_stats(ch, &cs);
    CU_ASSERT_EQUAL(cs.connects, 1);
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

/* One frame: a Stream request (or, with cancel, the cancel of call_id). */
static size_t raw_frame(uint8_t *out, size_t cap, uint64_t call_id, bool cancel)
{
    Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
    Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
    a.payload.data = (uint8_t *)"slow";
    a.payload.len = 4;
    hdr.call_id = call_id;
    if (cancel) {
        hdr.cancel = true;
    } else {
        hdr.service_name = (char *)echo_desc->name;
        hdr.method_name = "Stream";
    }
    struct rpc_frame_plan plan;
    CU_ASSERT_FATAL(
        rpc_frame_plan(&hdr, cancel ? NULL : &a.base, NULL, &plan) == 0);
    CU_ASSERT_FATAL(plan.total <= cap);
    rpc_frame_pack(&hdr, cancel ? NULL : &a.base, &plan, out);
    return plan.total;
}

static void test_stream_slow_reader_stalls_only_its_own_stream(void)
{
    struct rpc_server_options o = {.max_output = 256 * 1024};
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, &o) == 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 16 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(l.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    uint8_t f[256];
    /* A cancel for a call that does not exist is ignored. */
    size_t n = raw_frame(f, sizeof f, 7, true);
    CU_ASSERT_FATAL(write(fd, f, n) == (ssize_t)n);
    n = raw_frame(f, sizeof f, 8, false); /* until cancelled, no delay */
    CU_ASSERT_FATAL(write(fd, f, n) == (ssize_t)n);

    /* The client never reads: the stream stops at its share of the
     * output cap and waits there. */
    CU_ASSERT(run_until_u64(l.base, &l.echo.streams_open, 1, SOON_MS));
    uint64_t deadline = test_now_ms() + SOON_MS;
    while (l.echo.stream_stalls == 0 && test_now_ms() < deadline) {
        loop_run_for(l.base, 5);
    }
    CU_ASSERT(l.echo.stream_stalls > 0);
    /* Once the sockets' buffers are full too, it sends nothing more. */
    uint64_t frames = l.echo.stream_frames;
    bool still = false;
    deadline = test_now_ms() + SOON_MS;
    while (!still && test_now_ms() < deadline) {
        frames = l.echo.stream_frames;
        loop_run_for(l.base, 300);
        still = l.echo.stream_frames == frames;
    }
    CU_ASSERT(still); /* stalled, not spinning */
    /* About max_output / 2 in the server plus what the sockets hold: a
     * frame is some 20 bytes. */
    CU_ASSERT(frames * 20 < (256u * 1024 / 2) + (8u << 20));

    /* Other clients are served meanwhile. */
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    struct echo_result r = {0};
    echo_call(rpc_channel_service(ch, echo_desc), ECHO_M_ECHO, "other", 0, &r);
    CU_ASSERT(loop_run_until(l.base, &r.done, 1, SOON_MS));
    CU_ASSERT_EQUAL(r.status, RPC_OK);

    /* Reading resumes the stream where it stood; then a cancel ends it and
     * the connection stays. */
    fcntl(fd, F_SETFL, O_NONBLOCK);
    static uint8_t buf[1 << 16];
    size_t got = 0;
    deadline = test_now_ms() + SOON_MS;
    while (l.echo.stream_frames < frames + 1000 && test_now_ms() < deadline) {
        ssize_t k = read(fd, buf, sizeof buf);
        if (k > 0) {
            got += (size_t)k;
        }
        loop_run_for(l.base, 1);
    }
    CU_ASSERT(l.echo.stream_frames >= frames + 1000);
    n = raw_frame(f, sizeof f, 8, true);
    CU_ASSERT(write(fd, f, n) == (ssize_t)n);
    deadline = test_now_ms() + SOON_MS;
    while (l.echo.streams_cancelled == 0 && test_now_ms() < deadline) {
        ssize_t k = read(fd, buf, sizeof buf);
        (void)k;
        loop_run_for(l.base, 1);
    }
    CU_ASSERT_EQUAL(l.echo.streams_cancelled, 1);
    CU_ASSERT_EQUAL(l.echo.streams_open, 0);
    struct rpc_server_stats ss;
    rpc_server_get_stats(l.server, &ss);
    CU_ASSERT_EQUAL(ss.open, 2); /* the raw one and ch */
    close(fd);
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

static void test_stream_ends_once_when_its_server_dies(void)
{
    uint16_t p;
    pid_t pid = echo_server_spawn("127.0.0.1", 0, &p);
    CU_ASSERT_FATAL(pid > 0);
    struct event_base *b = event_base_new();
    struct rpc_channel *ch = rpc_channel_new(b, "127.0.0.1", p, NULL);
    struct seen s;
    start(ch, "k", 0, 2, &s);
    CU_ASSERT(run_until_at_least(b, &s.msgs, 5, SOON_MS));
    kill(pid, SIGKILL);
    CU_ASSERT(loop_run_until(b, &s.ends, 1, SOON_MS));
    loop_run_for(b, 100);
    CU_ASSERT_EQUAL(s.ends, 1);
    CU_ASSERT_EQUAL(s.end_status, RPC_E_CONNECTION_LOST);
    CU_ASSERT(s.in_order);
    echo_server_kill(pid);
    rpc_channel_free(ch);
    event_base_free(b);
}

/* Two streams fail with their connection, and the end callback of the
 * first cancels the other: the other hears nothing more. */
static void test_stream_cancelled_from_another_streams_end(void)
{
    uint16_t p;
    pid_t pid = echo_server_spawn("127.0.0.1", 0, &p);
    CU_ASSERT_FATAL(pid > 0);
    struct event_base *b = event_base_new();
    struct rpc_channel *ch = rpc_channel_new(b, "127.0.0.1", p, NULL);
    struct seen x, y;
    start(ch, "x", 0, 2, &x);
    start(ch, "y", 0, 2, &y);
    x.cancel_on_end = &y;
    y.cancel_on_end = &x;
    CU_ASSERT(run_until_at_least(b, &x.msgs, 2, SOON_MS));
    CU_ASSERT(run_until_at_least(b, &y.msgs, 2, SOON_MS));
    kill(pid, SIGKILL);
    uint64_t end = test_now_ms() + SOON_MS;
    while (x.ends + y.ends == 0 && test_now_ms() < end) {
        loop_run_for(b, 5);
    }
    loop_run_for(b, 100);
    CU_ASSERT_EQUAL(x.ends + y.ends, 1);
    CU_ASSERT_EQUAL(rpc_channel_pending(ch), 0);
    echo_server_kill(pid);
    rpc_channel_free(ch);
    event_base_free(b);
}

static void test_stream_ends_when_the_server_is_freed(void)
{
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    struct seen s;
    start(ch, "f", 0, 3, &s);
    CU_ASSERT(run_until_at_least(l.base, &s.msgs, 2, SOON_MS));
    rpc_server_free(l.server);
    l.server = NULL;
    /* The handler hears the cancel and ends its call; the client sees
     * the connection go. */
    CU_ASSERT(run_until_u64(l.base, &l.echo.streams_cancelled, 1, SOON_MS));
    CU_ASSERT(loop_run_until(l.base, &s.ends, 1, SOON_MS));
    CU_ASSERT_EQUAL(s.end_status, RPC_E_CONNECTION_LOST);
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

static void test_stream_on_a_blocking_channel_runs_in_wait(void)
{
    uint16_t p;
    pid_t pid = echo_server_spawn("127.0.0.1", 0, &p);
    CU_ASSERT_FATAL(pid > 0);
    struct rpc_channel *ch = rpc_channel_new_blocking("127.0.0.1", p, NULL);
    struct seen s;
    CU_ASSERT_FATAL(start(ch, "b", 5, 1, &s) != NULL);
    uint64_t deadline = test_now_ms() + SOON_MS;
    while (!s.ends && test_now_ms() < deadline) {
        rpc_channel_wait(ch, 1000);
    }
    CU_ASSERT_EQUAL(s.msgs, 5);
    CU_ASSERT_EQUAL(s.ends, 1);
    CU_ASSERT_STRING_EQUAL(s.end_payload, "end:5");
    /* Nothing left to come: wait says so after its timeout. */
    uint64_t t0 = test_now_ms();
    CU_ASSERT_EQUAL(rpc_channel_wait(ch, 50), RPC_E_TIMEOUT);
    CU_ASSERT(test_now_ms() - t0 >= 40);
    /* Freeing a channel with an open stream ends it, cancelled. */
    start(ch, "open", 0, 1000, &s);
    rpc_channel_wait(ch, 100);
    rpc_channel_free(ch);
    CU_ASSERT_EQUAL(s.ends, 1);
    CU_ASSERT_EQUAL(s.end_status, RPC_E_CANCELLED);
    echo_server_kill(pid);
}

static void test_stream_cap_per_connection(void)
{
    struct rpc_server_options o = {.max_streams = 3};
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, &o) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    static struct seen s[4];
    for (int i = 0; i < 4; i++) {
        start(ch, "cap", 0, 5, &s[i]);
    }
    /* The fourth is refused (its handler could not open it); the three
     * go on, and once one ends another may open. */
    CU_ASSERT(loop_run_until(l.base, &s[3].ends, 1, SOON_MS));
    CU_ASSERT_NOT_EQUAL(s[3].end_status, RPC_OK);
    CU_ASSERT_EQUAL(l.echo.streams_open, 3);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT(run_until_at_least(l.base, &s[i].msgs, 3, SOON_MS));
    }
    rpc_stream_cancel(s[0].st);
    CU_ASSERT(run_until_u64(l.base, &l.echo.streams_open, 2, SOON_MS));
    struct seen again;
    start(ch, "again", 2, 1, &again);
    CU_ASSERT(loop_run_until(l.base, &again.ends, 1, SOON_MS));
    CU_ASSERT_EQUAL(again.end_status, RPC_OK);
    CU_ASSERT_EQUAL(again.msgs, 2);
    rpc_stream_cancel(s[1].st);
    rpc_stream_cancel(s[2].st);
    CU_ASSERT(run_until_u64(l.base, &l.echo.streams_open, 0, SOON_MS));
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

static void test_stream_bad_arguments_start_nothing(void)
{
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
    struct seen s = {0};
    CU_ASSERT_PTR_NULL(rpc_channel_stream(ch, echo_desc, "NoSuchMethod",
                                          &a.base, on_stream, &s));
    CU_ASSERT_EQUAL(rpc_last_status(), RPC_E_INVALID);
    Raftkv__Test__EchoReply wrong = RAFTKV__TEST__ECHO_REPLY__INIT;
    CU_ASSERT_PTR_NULL(rpc_channel_stream(ch, echo_desc, "Stream", &wrong.base,
                                          on_stream, &s));
    loop_run_for(l.base, 50);
    CU_ASSERT_EQUAL(s.ends, 0);
    CU_ASSERT_EQUAL(rpc_channel_pending(ch), 0);
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

/* ------------------------------------------------- messages on streams */

/* What a Chat stream's callback saw: every payload, in order. */
struct chat
{
    struct rpc_stream *st; /* the stream, NULL once it ended */
    int msgs;              /* frames before the end */
    char got[300][16];     /* their payloads (the first 300) */
    int ends;              /* end calls: must end at 1 */
    int end_status;        /* RPC_OK or rpc_last_status() */
    char end_text[256];    /* the last frame's payload, or the error */
    int reply_each;        /* from the callback: answer each frame "re:..."
                              until this many were sent (0: never) */
    int replied;           /* messages sent from the callback */
};

static void on_chat(struct rpc_stream *st,
                    const ProtobufCMessage *msg,
                    bool end,
                    void *arg)
{
    struct chat *c = arg;
    if (end) {
        c->ends++;
        c->st = NULL;
        if (msg) {
            c->end_status = RPC_OK;
            copy_payload(c->end_text, sizeof c->end_text, msg);
        } else {
            c->end_status = rpc_last_status();
            snprintf(c->end_text, sizeof c->end_text, "%s", rpc_last_error());
        }
        return;
    }
    if (c->msgs < 300) {
        copy_payload(c->got[c->msgs], sizeof c->got[0], msg);
    }
    c->msgs++;
    if (c->replied < c->reply_each) {
        /* Answer from inside the callback: allowed for a message. */
        char text[16];
        snprintf(text, sizeof text, "re:%d", c->replied++);
        Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
        a.payload.data = (uint8_t *)text;
        a.payload.len = strlen(text);
        CU_ASSERT_EQUAL(rpc_stream_send_msg(st, &a.base), 0);
    }
}

static struct rpc_stream *chat_open(struct rpc_channel *ch,
                                    const char *payload,
                                    struct chat *c)
{
    Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
    a.payload.data = (uint8_t *)payload;
    a.payload.len = strlen(payload);
    memset(c, 0, sizeof *c);
    c->st = rpc_channel_stream(ch, echo_desc, "Chat", &a.base, on_chat, c);
    return c->st;
}

static int chat_say(struct rpc_stream *st, const char *payload)
{
    Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
    a.payload.data = (uint8_t *)payload;
    a.payload.len = strlen(payload);
    return rpc_stream_send_msg(st, &a.base);
}

static void test_stream_messages_arrive_in_order_and_are_answered(void)
{
    enum { N = 200, CALLS = 50 };
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    static struct chat c;
    CU_ASSERT_FATAL(chat_open(ch, "open", &c) != NULL);
    /* Sent at once, before the stream is even connected: they follow its
     * request. Unary calls share the connection meanwhile. */
    static struct echo_result r[CALLS];
    memset(r, 0, sizeof r);
    echo_completions = 0;
    ProtobufCService *svc = rpc_channel_service(ch, echo_desc);
    for (int i = 0; i < N; i++) {
        char p[16];
        snprintf(p, sizeof p, "m%d", i);
        CU_ASSERT_EQUAL(chat_say(c.st, p), 0);
        if (i < CALLS) {
            echo_call(svc, ECHO_M_ECHO, "unary", 0, &r[i]);
        }
    }
    CU_ASSERT(run_until_at_least(l.base, &c.msgs, N + 1, SOON_MS));
    CU_ASSERT(loop_run_until(l.base, &echo_completions, CALLS, SOON_MS));
    CU_ASSERT_STRING_EQUAL(c.got[0], "open");
    int in_order = 1;
    for (int i = 0; i < N; i++) {
        char p[16];
        snprintf(p, sizeof p, "m%d", i);
        in_order &= strcmp(c.got[i + 1], p) == 0;
    }
    CU_ASSERT(in_order);
    for (int i = 0; i < CALLS; i++) {
        CU_ASSERT_EQUAL(r[i].status, RPC_OK);
        CU_ASSERT_STRING_EQUAL(r[i].payload, "unary");
    }
    CU_ASSERT_EQUAL(l.echo.chat_messages, N);
    CU_ASSERT_EQUAL(c.ends, 0);

    /* Answers to answers, sent from the stream's callback. */
    c.reply_each = 3;
    CU_ASSERT_EQUAL(chat_say(c.st, "ping"), 0);
    CU_ASSERT(run_until_at_least(l.base, &c.msgs, N + 5, SOON_MS));
    CU_ASSERT_STRING_EQUAL(c.got[N + 1], "ping");
    CU_ASSERT_STRING_EQUAL(c.got[N + 4], "re:2");
    loop_run_for(l.base, 50);
    CU_ASSERT_EQUAL(c.msgs, N + 5);

    /* "end" ends it; a message right behind it finds the stream gone on
     * the server and is dropped there. */
    CU_ASSERT_EQUAL(chat_say(c.st, "end"), 0);
    CU_ASSERT_EQUAL(chat_say(c.st, "late"), 0);
    CU_ASSERT(loop_run_until(l.base, &c.ends, 1, SOON_MS));
    CU_ASSERT_EQUAL(c.end_status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(c.end_text, "end:205");
    struct rpc_server_stats ss;
    uint64_t deadline = test_now_ms() + SOON_MS;
    do {
        loop_run_for(l.base, 5);
        rpc_server_get_stats(l.server, &ss);
    } while (ss.dropped_messages == 0 && test_now_ms() < deadline);
    CU_ASSERT_EQUAL(ss.stream_messages, N + 5);
    CU_ASSERT_EQUAL(ss.dropped_messages, 1);
    CU_ASSERT_STRING_EQUAL(l.echo.chat_last, "end");
    CU_ASSERT_EQUAL(l.echo.chats_open, 0);
    CU_ASSERT_EQUAL(c.ends, 1);
    struct rpc_channel_stats cs;
    rpc_channel_get_stats(ch, &cs);
    CU_ASSERT_EQUAL(cs.connects, 1);
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

/* Frames raw_write holds back (raw_hold) to write them in one piece. */
static uint8_t raw_held[1 << 16];
static size_t raw_n_held;
static bool raw_holding;

static void raw_hold(bool on, int fd)
{
    raw_holding = on;
    if (!on && raw_n_held) {
        CU_ASSERT_FATAL(write(fd, raw_held, raw_n_held) == (ssize_t)raw_n_held);
        raw_n_held = 0;
    }
}

/* Write one frame with a raw header and args to fd. */
static void raw_write(int fd,
                      uint64_t call_id,
                      const char *method, /* NULL: no service or method */
                      bool cancel,
                      bool stream_msg,
                      const void *args,
                      size_t len)
{
    Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
    hdr.call_id = call_id;
    if (method) {
        hdr.service_name = (char *)echo_desc->name;
        hdr.method_name = (char *)method;
    }
    hdr.cancel = cancel;
    hdr.stream_msg = stream_msg;
    hdr.args_size = (uint32_t)len;
    static uint8_t buf[1 << 16];
    size_t head = raftkv__rpc_header__get_packed_size(&hdr);
    CU_ASSERT_FATAL(4 + head + len <= sizeof buf);
    buf[0] = (uint8_t)(head >> 24);
    buf[1] = (uint8_t)(head >> 16);
    buf[2] = (uint8_t)(head >> 8);
    buf[3] = (uint8_t)head;
    raftkv__rpc_header__pack(&hdr, buf + 4);
    if (len) {
        memcpy(buf + 4 + head, args, len);
    }
    if (raw_holding) {
        CU_ASSERT_FATAL(raw_n_held + 4 + head + len <= sizeof raw_held);
        memcpy(raw_held + raw_n_held, buf, 4 + head + len);
        raw_n_held += 4 + head + len;
        return;
    }
    CU_ASSERT_FATAL(write(fd, buf, 4 + head + len) ==
                    (ssize_t)(4 + head + len));
}

/* EchoArgs{payload} packed into out; its size. */
static size_t echo_args(uint8_t *out, size_t cap, const char *payload)
{
    Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
    a.payload.data = (uint8_t *)payload;
    a.payload.len = strlen(payload);
    CU_ASSERT_FATAL(raftkv__test__echo_args__get_packed_size(&a) <= cap);
    return raftkv__test__echo_args__pack(&a, out);
}

static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* A reply frame read off a raw connection. */
struct raw_reply
{
    bool closed;       /* the server closed the connection instead */
    bool more;         /* RpcHeader more */
    size_t n_also;     /* RpcHeader also_call_ids */
    int status;        /* RpcHeader status */
    char payload[128]; /* EchoReply payload (status OK) */
    char error[256];   /* RpcHeader error */
};

/* Run the server's loop and read until a frame of call_id comes (or the
 * connection closes, or SOON_MS pass: then closed and status -1). */
static struct raw_reply raw_wait(struct echo_local *l,
                                 int fd,
                                 struct rpc_decoder *dec,
                                 uint64_t call_id)
{
    struct raw_reply out = {.status = -1};
    static uint8_t buf[1 << 16];
    static size_t have, off;
    uint64_t deadline = test_now_ms() + SOON_MS;
    while (test_now_ms() < deadline) {
        while (off < have) {
            size_t used = 0;
            struct rpc_frame f;
            int rv = rpc_decoder_feed(dec, buf + off, have - off, &used, &f);
            off += used;
            if (rv == RPC_DECODE_FRAME && f.header->call_id == call_id) {
                out.more = f.header->more;
                out.n_also = f.header->n_also_call_ids;
                out.status = f.header->status;
                snprintf(out.error, sizeof out.error, "%s", f.header->error);
                Raftkv__Test__EchoReply *r =
                    f.args_size || !out.status
                        ? raftkv__test__echo_reply__unpack(NULL, f.args_size,
                                                           f.args)
                        : NULL;
                if (r) {
                    size_t n = r->payload.len < sizeof out.payload - 1
                                   ? r->payload.len
                                   : sizeof out.payload - 1;
                    memcpy(out.payload, r->payload.data, n);
                    out.payload[n] = 0;
                    raftkv__test__echo_reply__free_unpacked(r, NULL);
                }
                return out;
            }
            CU_ASSERT_FATAL(rv != RPC_DECODE_ERROR);
        }
        have = off = 0;
        ssize_t k = read(fd, buf, sizeof buf);
        if (k > 0) {
            have = (size_t)k;
            continue;
        }
        if (k == 0) {
            out.closed = true;
            return out;
        }
        loop_run_for(l->base, 2);
    }
    out.closed = true;
    return out;
}

static void test_stream_message_after_cancel_is_dropped(void)
{
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    int fd = raw_connect(l.port);
    struct rpc_decoder *dec = rpc_decoder_new(NULL);
    uint8_t a[64];
    size_t n = echo_args(a, sizeof a, "hi");
    raw_write(fd, 8, "Chat", false, false, a, n);
    struct raw_reply r = raw_wait(&l, fd, dec, 8);
    CU_ASSERT(r.more && strcmp(r.payload, "hi") == 0);
    n = echo_args(a, sizeof a, "one");
    raw_write(fd, 8, NULL, false, true, a, n);
    r = raw_wait(&l, fd, dec, 8);
    CU_ASSERT(r.more && strcmp(r.payload, "one") == 0);

    /* Cancelled, then a message right behind the cancel (read with it,
     * before the handler heard of the cancel), a message after the
     * stream is gone, and one for a call that never was: all dropped,
     * nothing answered, nothing broken. */
    raw_hold(true, fd);
    raw_write(fd, 8, NULL, true, false, NULL, 0);
    n = echo_args(a, sizeof a, "after");
    raw_write(fd, 8, NULL, false, true, a, n);
    raw_hold(false, fd);
    CU_ASSERT(run_until_u64(l.base, &l.echo.chats_cancelled, 1, SOON_MS));
    raw_write(fd, 8, NULL, false, true, a, n);
    raw_write(fd, 99, NULL, false, true, a, n);
    n = echo_args(a, sizeof a, "still");
    raw_write(fd, 9, "Echo", false, false, a, n);
    r = raw_wait(&l, fd, dec, 9);
    CU_ASSERT_FALSE(r.closed);
    CU_ASSERT_EQUAL(r.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r.payload, "still");
    CU_ASSERT(run_until_u64(l.base, &l.echo.chats_cancelled, 1, SOON_MS));
    CU_ASSERT_EQUAL(l.echo.chat_messages, 1);
    CU_ASSERT_STRING_EQUAL(l.echo.chat_last, "one");
    struct rpc_server_stats ss;
    rpc_server_get_stats(l.server, &ss);
    CU_ASSERT_EQUAL(ss.stream_messages, 1);
    CU_ASSERT_EQUAL(ss.dropped_messages, 3);
    CU_ASSERT_EQUAL(ss.bad_frames, 0);
    CU_ASSERT_EQUAL(ss.open, 1);
    rpc_decoder_free(dec);
    close(fd);
    echo_local_stop(&l);
}

static void test_stream_garbage_message_closes_only_its_connection(void)
{
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    struct rpc_channel *other =
        rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    static struct chat oc;
    chat_open(other, "other", &oc);
    CU_ASSERT(run_until_at_least(l.base, &oc.msgs, 1, SOON_MS));

    int fd = raw_connect(l.port);
    struct rpc_decoder *dec = rpc_decoder_new(NULL);
    uint8_t a[64];
    size_t n = echo_args(a, sizeof a, "hi");
    raw_write(fd, 8, "Chat", false, false, a, n);
    struct raw_reply r = raw_wait(&l, fd, dec, 8);
    CU_ASSERT(r.more && strcmp(r.payload, "hi") == 0);
    /* Field 1, 16 bytes long, and none of them: does not unpack. */
    raw_write(fd, 8, NULL, false, true, "\x0a\x10", 2);
    r = raw_wait(&l, fd, dec, 8);
    CU_ASSERT(r.closed);
    CU_ASSERT(run_until_u64(l.base, &l.echo.chats_cancelled, 1, SOON_MS));
    struct rpc_server_stats ss;
    rpc_server_get_stats(l.server, &ss);
    CU_ASSERT_EQUAL(ss.bad_frames, 1);
    CU_ASSERT_EQUAL(ss.stream_messages, 0);
    CU_ASSERT_EQUAL(l.echo.chat_messages, 0);

    /* The other connection and its stream go on. */
    CU_ASSERT_EQUAL(chat_say(oc.st, "on"), 0);
    CU_ASSERT(run_until_at_least(l.base, &oc.msgs, 2, SOON_MS));
    CU_ASSERT_STRING_EQUAL(oc.got[1], "on");
    CU_ASSERT_EQUAL(oc.ends, 0);
    CU_ASSERT_EQUAL(l.echo.chats_open, 1);
    /* (Ended before the server goes, so that its handler frees it.) */
    rpc_stream_cancel(oc.st);
    CU_ASSERT(run_until_u64(l.base, &l.echo.chats_open, 0, SOON_MS));
    rpc_decoder_free(dec);
    close(fd);
    rpc_channel_free(other);
    echo_local_stop(&l);
}

static void test_stream_message_refused_ends_only_that_stream(void)
{
    struct rpc_server_options o = {.limits = {.max_args = 1024}};
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, &o) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);

    /* A stream whose handler takes no messages: refused, it ends. */
    struct seen s;
    start(ch, "w", 0, 5, &s);
    CU_ASSERT(run_until_at_least(l.base, &s.msgs, 1, SOON_MS));
    Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
    CU_ASSERT_EQUAL(rpc_stream_send_msg(s.st, &a.base), 0);
    CU_ASSERT(loop_run_until(l.base, &s.ends, 1, SOON_MS));
    CU_ASSERT_EQUAL(s.end_status, RPC_E_BAD_REQUEST);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.end_error, "takes no messages"));
    CU_ASSERT(run_until_u64(l.base, &l.echo.streams_cancelled, 1, SOON_MS));
    CU_ASSERT_EQUAL(l.echo.streams_open, 0);

    /* A message over the server's args cap: refused as too big, its
     * bytes skipped; the connection and its other streams stay. */
    static struct chat c, d;
    chat_open(ch, "c", &c);
    chat_open(ch, "d", &d);
    CU_ASSERT(run_until_at_least(l.base, &c.msgs, 1, SOON_MS));
    CU_ASSERT(run_until_at_least(l.base, &d.msgs, 1, SOON_MS));
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CU_ASSERT_EQUAL(chat_say(c.st, big), 0);
    CU_ASSERT_EQUAL(chat_say(d.st, "small"), 0);
    CU_ASSERT(loop_run_until(l.base, &c.ends, 1, SOON_MS));
    CU_ASSERT_EQUAL(c.end_status, RPC_E_BAD_REQUEST);
    CU_ASSERT(strncmp(c.end_text, RPC_TOO_BIG_PREFIX,
                      sizeof RPC_TOO_BIG_PREFIX - 1) == 0);
    CU_ASSERT(run_until_at_least(l.base, &d.msgs, 2, SOON_MS));
    CU_ASSERT_STRING_EQUAL(d.got[1], "small");
    CU_ASSERT_EQUAL(d.ends, 0);
    struct rpc_server_stats ss;
    rpc_server_get_stats(l.server, &ss);
    CU_ASSERT_EQUAL(ss.oversized_requests, 1);
    CU_ASSERT_EQUAL(ss.bad_frames, 0);
    CU_ASSERT_EQUAL(ss.open, 1);
    CU_ASSERT_EQUAL(l.echo.chats_open, 1);
    CU_ASSERT_EQUAL(l.echo.chats_cancelled, 1);
    rpc_stream_cancel(d.st);
    CU_ASSERT(run_until_u64(l.base, &l.echo.chats_open, 0, SOON_MS));
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

static void test_stream_messages_on_a_blocking_channel(void)
{
    uint16_t p;
    pid_t pid = echo_server_spawn("127.0.0.1", 0, &p);
    CU_ASSERT_FATAL(pid > 0);
    struct rpc_channel_options o = {.limits = {.max_args = 100}};
    struct rpc_channel *ch = rpc_channel_new_blocking("127.0.0.1", p, &o);
    struct chat c;
    CU_ASSERT_FATAL(chat_open(ch, "b", &c) != NULL);
    uint64_t deadline = test_now_ms() + SOON_MS;
    while (c.msgs < 1 && test_now_ms() < deadline) {
        rpc_channel_wait(ch, 1000);
    }
    CU_ASSERT_STRING_EQUAL(c.got[0], "b");
    for (int round = 0; round < 5; round++) {
        char text[16];
        snprintf(text, sizeof text, "r%d", round);
        CU_ASSERT_EQUAL(chat_say(c.st, text), 0);
        deadline = test_now_ms() + SOON_MS;
        while (c.msgs < round + 2 && test_now_ms() < deadline) {
            rpc_channel_wait(ch, 1000);
        }
        CU_ASSERT_STRING_EQUAL(c.got[round + 1], text);
    }
    /* Refused on this side: the wrong type, none, over the frame cap;
     * the stream goes on. */
    Raftkv__Test__EchoReply wrong = RAFTKV__TEST__ECHO_REPLY__INIT;
    CU_ASSERT_EQUAL(rpc_stream_send_msg(c.st, &wrong.base), RPC_E_INVALID);
    CU_ASSERT_EQUAL(rpc_stream_send_msg(c.st, NULL), RPC_E_INVALID);
    char big[200];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CU_ASSERT_EQUAL(chat_say(c.st, big), RPC_E_TOO_BIG);
    CU_ASSERT_EQUAL(chat_say(c.st, "end"), 0);
    deadline = test_now_ms() + SOON_MS;
    while (!c.ends && test_now_ms() < deadline) {
        rpc_channel_wait(ch, 1000);
    }
    CU_ASSERT_EQUAL(c.end_status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(c.end_text, "end:6");
    rpc_channel_free(ch);
    echo_server_kill(pid);
}

static void test_stream_message_on_a_stream_that_could_not_start(void)
{
    /* A port nobody listens on: the first stream fails to connect, the
     * next starts while the channel backs off and fails at once. */
    uint16_t p;
    pid_t pid = echo_server_spawn("127.0.0.1", 0, &p);
    CU_ASSERT_FATAL(pid > 0);
    echo_server_kill(pid);
    struct event_base *b = event_base_new();
    struct rpc_channel_options o = {.backoff_min_ms = 5000,
                                    .backoff_max_ms = 5000};
    struct rpc_channel *ch = rpc_channel_new(b, "127.0.0.1", p, &o);
    struct chat c1, c2;
    chat_open(ch, "x", &c1);
    CU_ASSERT(loop_run_until(b, &c1.ends, 1, SOON_MS));
    CU_ASSERT_EQUAL(c1.end_status, RPC_E_UNAVAILABLE);
    CU_ASSERT_FATAL(chat_open(ch, "y", &c2) != NULL);
    CU_ASSERT_EQUAL(chat_say(c2.st, "z"), RPC_E_UNAVAILABLE);
    CU_ASSERT(loop_run_until(b, &c2.ends, 1, SOON_MS));
    CU_ASSERT_EQUAL(c2.end_status, RPC_E_UNAVAILABLE);
    rpc_channel_free(ch);
    event_base_free(b);
}

/* Run until every one of n seen has msgs >= want. */
static bool run_until_all(struct event_base *b,
                          struct seen *s,
                          int n,
                          int want,
                          int timeout_ms)
{
    uint64_t deadline = test_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int at = 0;
        for (int i = 0; i < n; i++) {
            at += s[i].msgs >= want;
        }
        if (at == n) {
            return true;
        }
        if (test_now_ms() >= deadline) {
            return false;
        }
        loop_run_for(b, 2);
    }
}

static uint64_t shared_frames(struct echo_local *l)
{
    struct rpc_server_stats ss;
    rpc_server_get_stats(l->server, &ss);
    return ss.shared_frames;
}

/* Many streams of a connection that get the same message get one frame
 * naming them all (RpcHeader.also_call_ids); each stream's callback has
 * it once, in order with its other frames; a stream cancelled from an
 * earlier one's callback in the same frame does not. */
static void test_shared_frame_reaches_each_stream_once(void)
{
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    struct rpc_channel *c1 = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    struct rpc_channel *c2 = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    static struct seen s[8]; /* 5 on c1, 3 on c2 */
    for (int i = 0; i < 8; i++) {
        CU_ASSERT_FATAL(start(i < 5 ? c1 : c2, "share", 0, 0, &s[i]) != NULL);
    }
    CU_ASSERT_FATAL(run_until_u64(l.base, &l.echo.streams_open, 8, SOON_MS));
    int res[16];
    CU_ASSERT_EQUAL(echo_share_send(&l.echo, "x:0", res, 16), 8);
    for (int i = 0; i < 8; i++) {
        CU_ASSERT_EQUAL(res[i], 0);
    }
    CU_ASSERT(run_until_all(l.base, s, 8, 1, SOON_MS));
    CU_ASSERT_EQUAL(shared_frames(&l), 2); /* one a connection */
    /* The newest stream of c1 is named first: its callback cancels the
     * oldest, which then never sees this frame. */
    s[4].cancel_other = &s[0];
    CU_ASSERT_EQUAL(echo_share_send(&l.echo, "x:1", res, 16), 8);
    CU_ASSERT(run_until_all(l.base, s + 1, 7, 2, SOON_MS));
    loop_run_for(l.base, 50);
    CU_ASSERT_EQUAL(s[0].msgs, 1);
    CU_ASSERT_EQUAL(s[0].ends, 0); /* cancelled: its callback is done */
    for (int i = 1; i < 8; i++) {
        CU_ASSERT_EQUAL(s[i].msgs, 2);
        CU_ASSERT(s[i].in_order);
        CU_ASSERT_STRING_EQUAL(s[i].last, "x:1");
        CU_ASSERT_EQUAL(s[i].ends, 0);
    }
    CU_ASSERT_EQUAL(shared_frames(&l), 4);
    /* The cancel reaches the server; the rest go on sharing. */
    CU_ASSERT(run_until_u64(l.base, &l.echo.streams_open, 7, SOON_MS));
    CU_ASSERT_EQUAL(echo_share_send(&l.echo, "x:2", res, 16), 7);
    CU_ASSERT(run_until_all(l.base, s + 1, 7, 3, SOON_MS));
    CU_ASSERT_EQUAL(shared_frames(&l), 6);
    struct rpc_channel_stats cs;
    rpc_channel_get_stats(c1, &cs);
    CU_ASSERT_EQUAL(cs.connects, 1);
    rpc_channel_free(c1);
    rpc_channel_free(c2);
    for (int i = 1; i < 8; i++) {
        CU_ASSERT_EQUAL(s[i].ends, 1);
    }
    CU_ASSERT_EQUAL(s[0].ends, 0);
    CU_ASSERT(run_until_u64(l.base, &l.echo.streams_open, 0, SOON_MS));
    echo_local_stop(&l);
}

/* A caller that did not say shared_ok when it opened its streams (an
 * older client) gets a frame of its own for each stream. */
static void test_shared_frames_only_for_callers_that_take_them(void)
{
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    int fd = raw_connect(l.port);
    struct rpc_decoder *dec = rpc_decoder_new(NULL);
    uint8_t a[64];
    size_t n = echo_args(a, sizeof a, "share");
    raw_write(fd, 1, "Stream", false, false, a, n);
    raw_write(fd, 2, "Stream", false, false, a, n);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    static struct seen s[2];
    CU_ASSERT_FATAL(start(ch, "share", 0, 0, &s[0]) != NULL);
    CU_ASSERT_FATAL(start(ch, "share", 0, 0, &s[1]) != NULL);
    CU_ASSERT_FATAL(run_until_u64(l.base, &l.echo.streams_open, 4, SOON_MS));
    int res[4];
    CU_ASSERT_EQUAL(echo_share_send(&l.echo, "y:0", res, 4), 4);
    /* (newest first: 2, then 1; raw_wait drops frames of other calls) */
    struct raw_reply r2 = raw_wait(&l, fd, dec, 2);
    CU_ASSERT(r2.more);
    CU_ASSERT_EQUAL(r2.n_also, 0);
    CU_ASSERT_STRING_EQUAL(r2.payload, "y:0");
    struct raw_reply r1 = raw_wait(&l, fd, dec, 1);
    CU_ASSERT(r1.more);
    CU_ASSERT_EQUAL(r1.n_also, 0);
    CU_ASSERT_STRING_EQUAL(r1.payload, "y:0");
    CU_ASSERT(run_until_all(l.base, s, 2, 1, SOON_MS));
    CU_ASSERT_EQUAL(shared_frames(&l), 1); /* the channel's two */
    rpc_decoder_free(dec);
    close(fd);
    rpc_channel_free(ch);
    CU_ASSERT(run_until_u64(l.base, &l.echo.streams_open, 0, SOON_MS));
    echo_local_stop(&l);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static CU_TestInfo tests[] = {
        {"test_stream_frames_arrive_in_order_then_its_end",
         test_stream_frames_arrive_in_order_then_its_end},
        {"test_stream_cancel_stops_the_server_and_keeps_the_connection",
         test_stream_cancel_stops_the_server_and_keeps_the_connection},
        {"test_stream_and_calls_share_one_connection",
         test_stream_and_calls_share_one_connection},
        {"test_stream_slow_reader_stalls_only_its_own_stream",
         test_stream_slow_reader_stalls_only_its_own_stream},
        {"test_stream_ends_once_when_its_server_dies",
         test_stream_ends_once_when_its_server_dies},
        {"test_stream_cancelled_from_another_streams_end",
         test_stream_cancelled_from_another_streams_end},
        {"test_stream_ends_when_the_server_is_freed",
         test_stream_ends_when_the_server_is_freed},
        {"test_stream_on_a_blocking_channel_runs_in_wait",
         test_stream_on_a_blocking_channel_runs_in_wait},
        {"test_stream_cap_per_connection", test_stream_cap_per_connection},
        {"test_stream_bad_arguments_start_nothing",
         test_stream_bad_arguments_start_nothing},
        {"test_stream_messages_arrive_in_order_and_are_answered",
         test_stream_messages_arrive_in_order_and_are_answered},
        {"test_stream_message_after_cancel_is_dropped",
         test_stream_message_after_cancel_is_dropped},
        {"test_stream_garbage_message_closes_only_its_connection",
         test_stream_garbage_message_closes_only_its_connection},
        {"test_stream_message_refused_ends_only_that_stream",
         test_stream_message_refused_ends_only_that_stream},
        {"test_stream_messages_on_a_blocking_channel",
         test_stream_messages_on_a_blocking_channel},
        {"test_stream_message_on_a_stream_that_could_not_start",
         test_stream_message_on_a_stream_that_could_not_start},
        {"test_shared_frame_reaches_each_stream_once",
         test_shared_frame_reaches_each_stream_once},
        {"test_shared_frames_only_for_callers_that_take_them",
         test_shared_frames_only_for_callers_that_take_them},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"rpc_stream", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
