/* test_rpc_stream.c: server streams over loopback: many frames per call,
 * cancel, flow control, and the ends a stream can meet. */
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
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"rpc_stream", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
