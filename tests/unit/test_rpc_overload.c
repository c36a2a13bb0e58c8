/* test_rpc_overload.c: a server under more calls than it takes: calls past
 * the in-flight limits are shed (answered RPC_E_OVERLOADED at once, never
 * started), one connection's pipeline cannot keep the others waiting
 * (frames_per_turn), open streams do not count as calls in flight, and
 * calls whose caller's timeout (RpcHeader.timeout_ms) passed before they
 * could start are not started. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <CUnit/Basic.h>
#include <event2/event.h>

#include "cunit_main.h"
#include "echo_loop.h"
#include "rpc/rpc.h"

#define SOON_MS 10000

static const ProtobufCServiceDescriptor *echo_desc =
    &raftkv__test__echo_service__descriptor;

static struct rpc_server_stats stats_of(struct echo_local *l)
{
    struct rpc_server_stats ss;
    rpc_server_get_stats(l->server, &ss);
    return ss;
}

/* Past max_inflight on one connection, calls are answered OVERLOADED at
 * once and their handlers never run; once the others are answered, new
 * calls are taken again. */
static void test_calls_past_the_connection_limit_are_shed(void)
{
    struct rpc_server_options o = {.max_inflight = 4};
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, &o) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    ProtobufCService *svc = rpc_channel_service(ch, echo_desc);
    static struct echo_result r[10];
    memset(r, 0, sizeof r);
    echo_completions = 0;
    for (int i = 0; i < 10; i++) {
        echo_call(svc, ECHO_M_DEFER, "slow", 300, &r[i]);
    }
    /* The shed ones come back long before the deferred replies. */
    CU_ASSERT(loop_run_until(l.base, &echo_completions, 6, 250));
    CU_ASSERT_EQUAL(l.echo.calls, 4);
    int shed = 0;
    for (int i = 0; i < 10; i++) {
        if (r[i].done && r[i].status == RPC_E_OVERLOADED) {
            shed++;
            CU_ASSERT(strstr(r[i].error, "in flight on this connection") !=
                      NULL);
        }
    }
    CU_ASSERT_EQUAL(shed, 6);
    CU_ASSERT_EQUAL(stats_of(&l).shed, 6);
    CU_ASSERT_EQUAL(stats_of(&l).inflight, 4);
    CU_ASSERT(loop_run_until(l.base, &echo_completions, 10, SOON_MS));
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(r[i].status, RPC_OK);
    }
    CU_ASSERT_EQUAL(stats_of(&l).inflight, 0);
    /* Room again. */
    struct echo_result again = {0};
    echo_call(svc, ECHO_M_ECHO, "again", 0, &again);
    CU_ASSERT(loop_run_until(l.base, &again.done, 1, SOON_MS));
    CU_ASSERT_EQUAL(again.status, RPC_OK);
    CU_ASSERT_EQUAL(stats_of(&l).shed, 6);
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

/* max_inflight_total counts every client connection together. */
static void test_calls_past_the_server_limit_are_shed(void)
{
    struct rpc_server_options o = {.max_inflight_total = 5};
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, &o) == 0);
    struct rpc_channel *a = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    struct rpc_channel *b = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    static struct echo_result ra[3], rb[3];
    memset(ra, 0, sizeof ra);
    memset(rb, 0, sizeof rb);
    echo_completions = 0;
    for (int i = 0; i < 3; i++) {
        echo_call(rpc_channel_service(a, echo_desc), ECHO_M_DEFER, "a", 300,
                  &ra[i]);
    }
    CU_ASSERT(loop_run_until(l.base, NULL, 0, 100) == false);
    for (int i = 0; i < 3; i++) {
        echo_call(rpc_channel_service(b, echo_desc), ECHO_M_DEFER, "b", 300,
                  &rb[i]);
    }
    CU_ASSERT(loop_run_until(l.base, &echo_completions, 1, 250));
    CU_ASSERT_EQUAL(l.echo.calls, 5);
    CU_ASSERT_EQUAL(rb[2].status, RPC_E_OVERLOADED);
    CU_ASSERT(strstr(rb[2].error, "on this server") != NULL);
    CU_ASSERT(loop_run_until(l.base, &echo_completions, 6, SOON_MS));
    CU_ASSERT_EQUAL(stats_of(&l).shed, 1);
    rpc_channel_free(a);
    rpc_channel_free(b);
    echo_local_stop(&l);
}

/* Write n Echo frames "p" on fd, all at once, each with that timeout_ms
 * (0: none). */
static void raw_pipeline_timeout(int fd, int n, uint32_t timeout_ms)
{
    static uint8_t buf[1 << 20];
    size_t len = 0;
    Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
    a.payload = (ProtobufCBinaryData){1, (uint8_t *)"p"};
    for (int i = 0; i < n; i++) {
        Raftkv__RpcHeader h = RAFTKV__RPC_HEADER__INIT;
        h.service_name = (char *)echo_desc->name;
        h.method_name = "Echo";
        h.call_id = (uint64_t)i + 1;
        h.timeout_ms = timeout_ms;
        struct rpc_frame_plan plan;
        CU_ASSERT_FATAL(rpc_frame_plan(&h, &a.base, NULL, &plan) == 0);
        CU_ASSERT_FATAL(len + plan.total <= sizeof buf);
        rpc_frame_pack(&h, &a.base, &plan, buf + len);
        len += plan.total;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t k = write(fd, buf + off, len - off);
        CU_ASSERT_FATAL(k > 0);
        off += (size_t)k;
    }
}

static void raw_pipeline(int fd, int n)
{
    raw_pipeline_timeout(fd, n, 0);
}

/* One connection has thousands of calls waiting in the server's input;
 * another's single call, sent just after, is handled long before the last
 * of them: a connection hands at most frames_per_turn requests to
 * handlers before the others get a turn. */
static void run_pipeline_against_one_call(uint32_t frames_per_turn,
                                          uint64_t *mark_at,
                                          uint64_t *backlogged)
{
    enum { N = 5000 };
    struct rpc_server_options o = {.frames_per_turn = frames_per_turn};
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, &o) == 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(l.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    struct rpc_channel *other =
        rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    struct echo_result w = {0};
    echo_call(rpc_channel_service(other, echo_desc), ECHO_M_ECHO, "x", 0, &w);
    CU_ASSERT(loop_run_until(l.base, &w.done, 1, SOON_MS));
    /* Both connections accepted and idle: the pipeline lands whole in the
     * socket, the other's call just after it. */
    raw_pipeline(fd, N);
    struct echo_result mine = {0};
    echo_call(rpc_channel_service(other, echo_desc), ECHO_M_ECHO, "mark", 0,
              &mine);
    rpc_channel_flush(other);
    CU_ASSERT(loop_run_until(l.base, &mine.done, 1, SOON_MS));
    CU_ASSERT_EQUAL(mine.status, RPC_OK);
    /* Every one of the pipeline is answered in the end. */
    uint64_t deadline = test_now_ms() + SOON_MS;
    static uint8_t sink[1 << 16];
    while (l.echo.calls < (uint64_t)N + 2 && test_now_ms() < deadline) {
        loop_run_for(l.base, 2);
        while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
        }
    }
    CU_ASSERT_EQUAL(l.echo.calls, (uint64_t)N + 2);
    *mark_at = l.echo.mark_at;
    *backlogged = stats_of(&l).backlogged;
    close(fd);
    rpc_channel_free(other);
    echo_local_stop(&l);
}

static void test_a_pipeline_does_not_keep_others_waiting(void)
{
    uint64_t at = 0, backlogged = 0;
    run_pipeline_against_one_call(4, &at, &backlogged);
    printf(
        "\n  the other connection's call was the %lluth handled (of "
        "5,002), with 4 requests a turn\n",
        (unsigned long long)at);
    /* (libevent reads about 4 KiB a time, some 90 of these frames: with
     * no bound of its own the server would handle those first.) */
    CU_ASSERT(at > 0 && at <= 2 + 4 * 4);
    CU_ASSERT(backlogged > 0);
}

static int stream_frames;

static void on_stream(struct rpc_stream *st,
                      const ProtobufCMessage *msg,
                      bool end,
                      void *arg)
{
    (void)st;
    (void)msg;
    (void)end;
    (void)arg;
    stream_frames++;
}

/* Open streams are not calls in flight: a connection with more streams
 * open than max_inflight still takes calls, up to max_inflight of them. */
static void test_open_streams_do_not_count_as_calls_in_flight(void)
{
    struct rpc_server_options o = {.max_inflight = 2};
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, &o) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
    a.payload.data = (uint8_t *)"share"; /* no frames until told */
    a.payload.len = 5;
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_FATAL(rpc_channel_stream(ch, echo_desc, "Stream", &a.base,
                                           on_stream, NULL) != NULL);
        /* One at a time: each is a call in flight until it opens. */
        uint64_t deadline = test_now_ms() + SOON_MS;
        while (l.echo.streams_open < (uint64_t)i + 1 &&
               test_now_ms() < deadline) {
            loop_run_for(l.base, 2);
        }
    }
    CU_ASSERT_EQUAL(l.echo.streams_open, 4);
    CU_ASSERT_EQUAL(stats_of(&l).inflight, 0);
    static struct echo_result r[3];
    memset(r, 0, sizeof r);
    echo_completions = 0;
    for (int i = 0; i < 3; i++) {
        echo_call(rpc_channel_service(ch, echo_desc), ECHO_M_DEFER, "d", 200,
                  &r[i]);
    }
    CU_ASSERT(loop_run_until(l.base, &echo_completions, 3, SOON_MS));
    CU_ASSERT_EQUAL(r[0].status, RPC_OK);
    CU_ASSERT_EQUAL(r[1].status, RPC_OK);
    CU_ASSERT_EQUAL(r[2].status, RPC_E_OVERLOADED);
    CU_ASSERT_EQUAL(stats_of(&l).shed, 1);
    rpc_channel_free(ch);
    uint64_t deadline = test_now_ms() + SOON_MS;
    while (l.echo.streams_open && test_now_ms() < deadline) {
        loop_run_for(l.base, 2);
    }
    echo_local_stop(&l);
}

/* The caller's timeout travels in the header: the handler sees the time
 * left (rpc_call_deadline), none when the caller gave none. */
static void test_the_callers_deadline_reaches_the_handler(void)
{
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, NULL) == 0);
    struct rpc_channel_options co = {.deadline_ms = 3000};
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, &co);
    struct echo_result r = {0};
    echo_call(rpc_channel_service(ch, echo_desc), ECHO_M_ECHO, "deadline", 0,
              &r);
    CU_ASSERT(loop_run_until(l.base, &r.done, 1, SOON_MS));
    CU_ASSERT_EQUAL(r.status, RPC_OK);
    long left = atol(r.payload);
    CU_ASSERT(left > 1000 && left <= 3000);
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

/* Requests that wait in the server's input past their caller's timeout
 * are answered RPC_E_DEADLINE_EXCEEDED and never started; those without
 * one are all served. */
static void test_calls_past_their_deadline_are_not_started(void)
{
    enum { N = 3000 };
    struct rpc_server_options o = {.frames_per_turn = 1};
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, &o) == 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(l.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    raw_pipeline_timeout(fd, N, 1);
    /* Each read takes a few KiB; one request a turn: the last of each
     * read wait well past 1 ms. */
    struct rpc_decoder *dec = rpc_decoder_new(NULL);
    static uint8_t buf[1 << 16];
    int answered = 0, expired = 0;
    uint64_t deadline = test_now_ms() + SOON_MS;
    while (answered < N && test_now_ms() < deadline) {
        loop_run_for(l.base, 1);
        ssize_t k;
        while ((k = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
            size_t off = 0;
            while (off < (size_t)k) {
                size_t used = 0;
                struct rpc_frame f;
                int rv = rpc_decoder_feed(dec, buf + off, (size_t)k - off,
                                          &used, &f);
                off += used;
                CU_ASSERT_FATAL(rv != RPC_DECODE_ERROR);
                if (rv == RPC_DECODE_FRAME) {
                    answered++;
                    if (f.header->status ==
                        RAFTKV__RPC_STATUS__RPC_DEADLINE_EXCEEDED) {
                        expired++;
                        CU_ASSERT(strstr(f.header->error, "not started") !=
                                  NULL);
                    } else {
                        CU_ASSERT_EQUAL(f.header->status,
                                        RAFTKV__RPC_STATUS__RPC_OK);
                    }
                }
            }
        }
    }
    printf("\n  %d of %d calls with a 1 ms timeout expired waiting\n", expired,
           N);
    CU_ASSERT_EQUAL(answered, N);
    CU_ASSERT(expired > 0);
    CU_ASSERT_EQUAL(l.echo.calls, (uint64_t)(N - expired));
    CU_ASSERT_EQUAL(stats_of(&l).expired, (uint64_t)expired);
    rpc_decoder_free(dec);
    close(fd);
    echo_local_stop(&l);
}

/* A channel's trace id reaches the handler (one set for all calls, or one
 * of the channel's own per call); a call that takes the server's slow_ms
 * is counted (and logged). */
static void test_trace_ids_travel_and_slow_calls_are_counted(void)
{
    struct rpc_server_options o = {.slow_ms = 30};
    struct echo_local l;
    CU_ASSERT_FATAL(echo_local_start(&l, &o) == 0);
    struct rpc_channel *ch = rpc_channel_new(l.base, "127.0.0.1", l.port, NULL);
    ProtobufCService *svc = rpc_channel_service(ch, echo_desc);
    struct echo_result a = {0}, b = {0}, c = {0};
    rpc_channel_set_trace_id(ch, 0x1234abcd5678ef01ull);
    echo_call(svc, ECHO_M_ECHO, "trace", 0, &a);
    CU_ASSERT(loop_run_until(l.base, &a.done, 1, SOON_MS));
    CU_ASSERT_STRING_EQUAL(a.payload, "1234abcd5678ef01");
    rpc_channel_set_trace_id(ch, 0);
    echo_call(svc, ECHO_M_ECHO, "trace", 0, &b);
    echo_call(svc, ECHO_M_ECHO, "trace", 0, &c);
    CU_ASSERT(loop_run_until(l.base, &c.done, 1, SOON_MS));
    CU_ASSERT(loop_run_until(l.base, &b.done, 1, SOON_MS));
    CU_ASSERT(strcmp(b.payload, "0000000000000000") != 0);
    CU_ASSERT(strcmp(b.payload, c.payload) != 0); /* one per call */
    CU_ASSERT_EQUAL(stats_of(&l).slow, 0);
    struct echo_result d = {0};
    echo_call(svc, ECHO_M_DEFER, "slow", 60, &d);
    CU_ASSERT(loop_run_until(l.base, &d.done, 1, SOON_MS));
    CU_ASSERT_EQUAL(stats_of(&l).slow, 1);
    rpc_channel_free(ch);
    echo_local_stop(&l);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static CU_TestInfo tests[] = {
        {"test_calls_past_the_connection_limit_are_shed",
         test_calls_past_the_connection_limit_are_shed},
        {"test_calls_past_the_server_limit_are_shed",
         test_calls_past_the_server_limit_are_shed},
        {"test_a_pipeline_does_not_keep_others_waiting",
         test_a_pipeline_does_not_keep_others_waiting},
        {"test_open_streams_do_not_count_as_calls_in_flight",
         test_open_streams_do_not_count_as_calls_in_flight},
        {"test_the_callers_deadline_reaches_the_handler",
         test_the_callers_deadline_reaches_the_handler},
        {"test_calls_past_their_deadline_are_not_started",
         test_calls_past_their_deadline_are_not_started},
        {"test_trace_ids_travel_and_slow_calls_are_counted",
         test_trace_ids_travel_and_slow_calls_are_counted},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"rpc_overload", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
