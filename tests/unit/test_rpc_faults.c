/* test_rpc_faults.c: injected faults on channels and servers over loopback. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include <CUnit/Basic.h>

#include "cunit_main.h"
#include "echo_loop.h"
#include "rpc/rpc.h"

/* libevent measures timeouts with the coarse monotonic clock, which may
 * run a few ms behind ours: a timer may seem to fire that much early. */
#define CLOCK_SLACK_MS 5

static const ProtobufCServiceDescriptor *echo_desc =
    &raftkv__test__echo_service__descriptor;

static struct echo_local L; /* the in-process server of the current test */

static struct rpc_channel *open_channel(uint32_t deadline_ms)
{
    struct rpc_channel_options o = {.deadline_ms = deadline_ms};
    struct rpc_channel *ch = rpc_channel_new(L.base, "127.0.0.1", L.port, &o);
    CU_ASSERT_FATAL(ch != NULL);
    return ch;
}

static ProtobufCService *echo_of(struct rpc_channel *ch)
{
    ProtobufCService *svc = rpc_channel_service(ch, echo_desc);
    CU_ASSERT_FATAL(svc != NULL);
    return svc;
}

/* One call with no faults, so that the connection is up before a test
 * starts to count. */
static void warm_up(struct rpc_channel *ch)
{
    struct echo_result r = {0};
    echo_call(echo_of(ch), ECHO_M_ECHO, "warm", 0, &r);
    CU_ASSERT_FATAL(loop_run_until(L.base, &r.done, 1, 5000));
    CU_ASSERT_FATAL(r.status == RPC_OK);
}

/* Start n Echo calls with payloads "<tag>-<i>" and wait for all closures. */
static bool call_batch(ProtobufCService *svc,
                       const char *tag,
                       struct echo_result *r,
                       int n,
                       int timeout_ms)
{
    memset(r, 0, (size_t)n * sizeof *r);
    echo_completions = 0;
    for (int i = 0; i < n; i++) {
        char payload[64];
        snprintf(payload, sizeof payload, "%s-%d", tag, i);
        echo_call(svc, ECHO_M_ECHO, payload, 0, &r[i]);
    }
    return loop_run_until(L.base, &echo_completions, n, timeout_ms);
}

static bool payload_is(const struct echo_result *r, const char *tag, int i)
{
    char want[64];
    snprintf(want, sizeof want, "%s-%d", tag, i);
    return strcmp(r->payload, want) == 0;
}

/* Pairs of neighbours in issue order whose closures ran in the other
 * order. */
static int inversions(const struct echo_result *r, int n)
{
    int out_of_order = 0;
    for (int i = 1; i < n; i++) {
        out_of_order += r[i].order < r[i - 1].order;
    }
    return out_of_order;
}

/* Run the loop until the echo handler has run n times in all. */
static bool wait_handler_calls(struct echo_service *e,
                               uint64_t n,
                               int timeout_ms)
{
    uint64_t deadline = test_now_ms() + (uint64_t)timeout_ms;
    while (e->calls < n && test_now_ms() < deadline) {
        loop_run_for(L.base, 5);
    }
    return e->calls >= n;
}

/* Time one Echo call from issue to closure. */
static uint64_t time_one_call(ProtobufCService *svc, struct echo_result *r)
{
    memset(r, 0, sizeof *r);
    uint64_t start = test_now_ms();
    echo_call(svc, ECHO_M_ECHO, "timed", 0, r);
    CU_ASSERT(loop_run_until(L.base, &r->done, 1, 5000));
    return test_now_ms() - start;
}

static void start(void)
{
    CU_ASSERT_FATAL(echo_local_start(&L, NULL) == 0);
}

static void stop(void)
{
    echo_local_stop(&L);
}

/* ------------------------------------------------------------ validation */

static void test_rpc_faults_invalid_descriptions_are_refused(void)
{
    start();
    struct rpc_channel *ch = open_channel(0);
    const char *svc_name = echo_desc->name;
    struct rpc_faults none = {0};
    struct rpc_faults full = {.drop_request = 1,
                              .drop_reply = 0,
                              .delay_min_ms = 0,
                              .delay_max_ms = RPC_FAULT_MAX_MS,
                              .duplicate = 0.5,
                              .reorder = 1,
                              .reorder_min_ms = RPC_FAULT_MAX_MS,
                              .reorder_max_ms = RPC_FAULT_MAX_MS};
    char why[200] = "";
    CU_ASSERT(rpc_faults_valid(&none, why, sizeof why));
    CU_ASSERT(rpc_faults_valid(&full, why, sizeof why));
    CU_ASSERT_FALSE(rpc_faults_active(&none));
    CU_ASSERT(rpc_faults_active(&full));

    struct rpc_faults bad[] = {
        {.drop_request = -0.01},
        {.drop_request = 1.01},
        {.drop_request = NAN},
        {.drop_reply = -1},
        {.drop_reply = NAN},
        {.duplicate = 2},
        {.duplicate = NAN},
        {.reorder = 1.5},
        {.reorder = NAN},
        {.drop_request = INFINITY},
        {.delay_min_ms = 10, .delay_max_ms = 5},
        {.reorder = 1, .reorder_min_ms = 10, .reorder_max_ms = 5},
        {.reorder = 0, .reorder_min_ms = 1, .reorder_max_ms = 0},
        {.delay_max_ms = RPC_FAULT_MAX_MS + 1},
        {.reorder = 1, .reorder_max_ms = RPC_FAULT_MAX_MS + 1},
        {.delay_min_ms = UINT32_MAX, .delay_max_ms = UINT32_MAX},
    };
    /* A rule in force first: a refused one must leave it alone. */
    struct rpc_faults cut = {.cut = true};
    CU_ASSERT_EQUAL(rpc_channel_set_faults(ch, &cut, 1), 0);
    CU_ASSERT_EQUAL(rpc_server_set_faults(L.server, svc_name, &cut, 1), 0);
    struct echo_result r = {0};
    echo_call(echo_of(ch), ECHO_M_ECHO, "refused", 0, &r);
    CU_ASSERT(loop_run_until(L.base, &r.done, 1, 2000));
    CU_ASSERT_EQUAL(r.status, RPC_E_UNAVAILABLE);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = 0;
        CU_ASSERT_FALSE(rpc_faults_valid(&bad[i], why, sizeof why));
        CU_ASSERT(why[0] != 0);
        CU_ASSERT_FALSE(rpc_faults_valid(&bad[i], NULL, 0));
        CU_ASSERT_EQUAL(rpc_channel_set_faults(ch, &bad[i], 1), RPC_E_INVALID);
        CU_ASSERT_EQUAL(rpc_server_set_faults(L.server, svc_name, &bad[i], 1),
                        RPC_E_INVALID);
    }
    struct rpc_fault_stats st;
    rpc_channel_get_fault_stats(ch, &st);
    CU_ASSERT_EQUAL(st.cut, 1); /* not reset: the cut is still in force */
    memset(&r, 0, sizeof r);
    echo_call(echo_of(ch), ECHO_M_ECHO, "still refused", 0, &r);
    CU_ASSERT(loop_run_until(L.base, &r.done, 1, 2000));
    CU_ASSERT_EQUAL(r.status, RPC_E_UNAVAILABLE);

    /* Only served services take faults. */
    CU_ASSERT_EQUAL(
        rpc_server_set_faults(L.server, "raftkv.test.NoSuchService", &cut, 1),
        RPC_E_INVALID);
    CU_ASSERT_EQUAL(rpc_server_set_faults(L.server, NULL, &cut, 1),
                    RPC_E_INVALID);
    CU_ASSERT_EQUAL(
        rpc_server_set_faults(L.server, "raftkv.test.NoSuchService", NULL, 1),
        RPC_E_INVALID);
    CU_ASSERT_EQUAL(rpc_server_set_faults(L.server, svc_name, NULL, 0), 0);
    CU_ASSERT_EQUAL(rpc_channel_set_faults(ch, NULL, 0), 0);
    CU_ASSERT_EQUAL(L.echo.calls, 0);
    rpc_channel_free(ch);
    stop();
}

/* ---------------------------------------------------------- channel side */

static void test_rpc_faults_channel_cut_fails_fast_without_reaching_server(void)
{
    enum { N = 20 };
    start();
    struct rpc_channel *ch = open_channel(5000);
    warm_up(ch);
    struct rpc_faults cut = {.cut = true};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &cut, cunit_seed()), 0);
    struct echo_result r[N];
    uint64_t start_ms = test_now_ms();
    CU_ASSERT(call_batch(echo_of(ch), "cut", r, N, 3000));
    uint64_t took = test_now_ms() - start_ms;
    /* Each fails within 100 ms; the rest is slack for a busy machine. */
    CU_ASSERT(took < 100 + 400);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_E_UNAVAILABLE);
        CU_ASSERT(strstr(r[i].error, "cut") != NULL);
    }
    loop_run_for(L.base, 50);
    CU_ASSERT_EQUAL(L.echo.calls, 1); /* only the warm-up */
    struct rpc_fault_stats st;
    rpc_channel_get_fault_stats(ch, &st);
    CU_ASSERT_EQUAL(st.cut, N);

    CU_ASSERT_EQUAL(rpc_channel_set_faults(ch, NULL, 0), 0);
    CU_ASSERT(call_batch(echo_of(ch), "healed", r, N, 5000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].status, RPC_OK);
        CU_ASSERT(payload_is(&r[i], "healed", i));
    }
    CU_ASSERT_EQUAL(L.echo.calls, 1 + N);
    rpc_channel_get_fault_stats(ch, &st);
    CU_ASSERT_EQUAL(st.cut, 0);
    rpc_channel_free(ch);
    stop();
}

static void test_rpc_faults_channel_lost_request_never_reaches_handler(void)
{
    enum { N = 10 };
    start();
    struct rpc_channel *ch = open_channel(5000);
    warm_up(ch);
    struct rpc_faults f = {.drop_request = 1};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &f, cunit_seed()), 0);
    struct echo_result r[N];
    CU_ASSERT(call_batch(echo_of(ch), "lost", r, N, 3000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_E_CONNECTION_LOST);
        CU_ASSERT(strstr(r[i].error, "lost") != NULL);
    }
    loop_run_for(L.base, 50);
    CU_ASSERT_EQUAL(L.echo.calls, 1);
    struct rpc_fault_stats st;
    rpc_channel_get_fault_stats(ch, &st);
    CU_ASSERT_EQUAL(st.dropped_requests, N);
    CU_ASSERT_EQUAL(st.dropped_replies, 0);

    /* With a delay the loss is reported only after it. */
    f.delay_min_ms = f.delay_max_ms = 60;
    CU_ASSERT_EQUAL(rpc_channel_set_faults(ch, &f, cunit_seed()), 0);
    uint64_t took = time_one_call(echo_of(ch), &r[0]);
    CU_ASSERT_EQUAL(r[0].status, RPC_E_CONNECTION_LOST);
    CU_ASSERT(took >= 60 - CLOCK_SLACK_MS);
    CU_ASSERT_EQUAL(L.echo.calls, 1);
    rpc_channel_free(ch);
    stop();
}

static void test_rpc_faults_channel_lost_reply_after_handler_ran(void)
{
    enum { N = 10 };
    start();
    struct rpc_channel *ch = open_channel(5000);
    warm_up(ch);
    struct rpc_faults f = {.drop_reply = 1};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &f, cunit_seed()), 0);
    struct echo_result r[N];
    CU_ASSERT(call_batch(echo_of(ch), "unanswered", r, N, 3000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_E_CONNECTION_LOST);
    }
    CU_ASSERT_EQUAL(L.echo.calls, 1 + N); /* every request was handled */
    struct rpc_fault_stats st;
    rpc_channel_get_fault_stats(ch, &st);
    CU_ASSERT_EQUAL(st.dropped_replies, N);
    CU_ASSERT_EQUAL(st.dropped_requests, 0);
    /* The connection itself stayed up. */
    struct rpc_channel_stats cs;
    rpc_channel_get_stats(ch, &cs);
    CU_ASSERT_EQUAL(cs.connects, 1);
    rpc_channel_free(ch);
    stop();
}

static void test_rpc_faults_channel_duplicate_runs_handler_twice(void)
{
    enum { N = 10 };
    start();
    struct rpc_channel *ch = open_channel(5000);
    warm_up(ch);
    struct rpc_faults f = {.duplicate = 1};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &f, cunit_seed()), 0);
    struct echo_result r[N];
    CU_ASSERT(call_batch(echo_of(ch), "twice", r, N, 3000));
    CU_ASSERT(wait_handler_calls(&L.echo, 1 + 2 * N, 2000));
    loop_run_for(L.base, 50); /* the second replies arrive and are ignored */
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_OK);
        CU_ASSERT(payload_is(&r[i], "twice", i));
    }
    CU_ASSERT_EQUAL(echo_completions, N);
    CU_ASSERT_EQUAL(L.echo.calls, 1 + 2 * N);
    struct rpc_channel_stats cs;
    rpc_channel_get_stats(ch, &cs);
    CU_ASSERT_EQUAL(cs.late_replies, N);
    CU_ASSERT_EQUAL(cs.failed, 0);
    struct rpc_fault_stats st;
    rpc_channel_get_fault_stats(ch, &st);
    CU_ASSERT_EQUAL(st.duplicated, N);
    rpc_channel_free(ch);
    stop();
}

static void test_rpc_faults_channel_delay_and_reorder_add_latency(void)
{
    enum { N = 200 };
    start();
    struct rpc_channel *ch = open_channel(5000);
    warm_up(ch);
    struct echo_result r1;

    struct rpc_faults delay = {.delay_min_ms = 50, .delay_max_ms = 50};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &delay, cunit_seed()), 0);
    uint64_t took = time_one_call(echo_of(ch), &r1);
    CU_ASSERT_EQUAL(r1.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r1.payload, "timed");
    CU_ASSERT(took >= 50 - CLOCK_SLACK_MS);
    struct rpc_fault_stats st;
    rpc_channel_get_fault_stats(ch, &st);
    CU_ASSERT_EQUAL(st.delayed, 1);

    struct rpc_faults hold = {
        .reorder = 1, .reorder_min_ms = 100, .reorder_max_ms = 100};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &hold, cunit_seed()), 0);
    took = time_one_call(echo_of(ch), &r1);
    CU_ASSERT_EQUAL(r1.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r1.payload, "timed");
    CU_ASSERT(took >= 100 - CLOCK_SLACK_MS);

    /* Half the replies held back: closures run out of issue order. */
    struct rpc_faults half = {
        .reorder = 0.5, .reorder_min_ms = 20, .reorder_max_ms = 80};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &half, cunit_seed()), 0);
    static struct echo_result r[N];
    CU_ASSERT(call_batch(echo_of(ch), "mixed", r, N, 5000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_OK);
        CU_ASSERT(payload_is(&r[i], "mixed", i));
    }
    rpc_channel_get_fault_stats(ch, &st);
    CU_ASSERT(st.reordered > 0 && st.reordered < N);
    CU_ASSERT(inversions(r, N) > 0);
    rpc_channel_free(ch);
    stop();
}

static void test_rpc_faults_channel_freed_with_held_calls_runs_each_once(void)
{
    enum { N = 10 };
    start();
    /* Replies held back for a long time when the channel is freed. */
    struct rpc_channel *ch = open_channel(5000);
    warm_up(ch);
    struct rpc_faults hold = {
        .reorder = 1, .reorder_min_ms = 5000, .reorder_max_ms = 5000};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &hold, cunit_seed()), 0);
    struct echo_result r[N];
    memset(r, 0, sizeof r);
    echo_completions = 0;
    for (int i = 0; i < N; i++) {
        echo_call(echo_of(ch), ECHO_M_ECHO, "held", 0, &r[i]);
    }
    CU_ASSERT(wait_handler_calls(&L.echo, 1 + N, 2000));
    loop_run_for(L.base, 50); /* the replies reach the channel */
    CU_ASSERT_EQUAL(echo_completions, 0);
    CU_ASSERT_EQUAL(rpc_channel_pending(ch), 0); /* answered, only held */
    rpc_channel_free(ch);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_E_CANCELLED);
    }

    /* Requests (and their duplicates) still waiting to leave. */
    ch = open_channel(5000);
    warm_up(ch);
    uint64_t handled = L.echo.calls;
    struct rpc_faults delay = {
        .delay_min_ms = 300, .delay_max_ms = 300, .duplicate = 0.5};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &delay, cunit_seed()), 0);
    memset(r, 0, sizeof r);
    echo_completions = 0;
    for (int i = 0; i < N; i++) {
        echo_call(echo_of(ch), ECHO_M_ECHO, "delayed", 0, &r[i]);
    }
    loop_run_for(L.base, 20);
    CU_ASSERT_EQUAL(echo_completions, 0);
    CU_ASSERT_EQUAL(rpc_channel_pending(ch), N);
    rpc_channel_free(ch);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_E_CANCELLED);
    }
    loop_run_for(L.base, 400); /* past the delay: nothing is sent */
    CU_ASSERT_EQUAL(L.echo.calls, handled);
    CU_ASSERT_EQUAL(echo_completions, N);
    stop();
}

static void test_rpc_faults_blocking_channel_waits_out_held_reply(void)
{
    uint16_t p;
    pid_t pid = echo_server_spawn("127.0.0.1", 0, &p);
    CU_ASSERT_FATAL(pid > 0);
    struct rpc_channel_options o = {.deadline_ms = 2000};
    struct rpc_channel *ch = rpc_channel_new_blocking("127.0.0.1", p, &o);
    CU_ASSERT_FATAL(ch != NULL);
    ProtobufCService *svc = echo_of(ch);
    struct rpc_faults f = {.delay_min_ms = 30,
                           .delay_max_ms = 30,
                           .reorder = 1,
                           .reorder_min_ms = 50,
                           .reorder_max_ms = 50};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &f, cunit_seed()), 0);
    struct echo_result r = {0};
    uint64_t start_ms = test_now_ms();
    echo_call(svc, ECHO_M_ECHO, "blocking", 0, &r); /* returns when done */
    uint64_t took = test_now_ms() - start_ms;
    CU_ASSERT_EQUAL(r.done, 1);
    CU_ASSERT_EQUAL(r.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r.payload, "blocking");
    CU_ASSERT(took >= 80 - CLOCK_SLACK_MS);

    struct rpc_faults lose = {.drop_reply = 1};
    CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &lose, cunit_seed()), 0);
    memset(&r, 0, sizeof r);
    echo_call(svc, ECHO_M_ECHO, "lost", 0, &r);
    CU_ASSERT_EQUAL(r.done, 1);
    CU_ASSERT_EQUAL(r.status, RPC_E_CONNECTION_LOST);
    rpc_channel_free(ch);
    echo_server_kill(pid);
}

/* ----------------------------------------------------------- server side */

static void set_server_faults(const struct rpc_faults *f)
{
    CU_ASSERT_EQUAL_FATAL(
        rpc_server_set_faults(L.server, echo_desc->name, f, cunit_seed()), 0);
}

static void test_rpc_faults_server_lost_request_gets_no_reply(void)
{
    enum { N = 5 };
    start();
    struct rpc_channel *ch = open_channel(150);
    struct rpc_faults f = {.drop_request = 1};
    set_server_faults(&f);
    struct echo_result r[N];
    CU_ASSERT(call_batch(echo_of(ch), "void", r, N, 3000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_E_TIMEOUT);
    }
    CU_ASSERT_EQUAL(L.echo.calls, 0);
    struct rpc_fault_stats st;
    rpc_server_get_fault_stats(L.server, &st);
    CU_ASSERT_EQUAL(st.dropped_requests, N);

    /* A cut link behaves the same on this side. */
    struct rpc_faults cut = {.cut = true};
    set_server_faults(&cut);
    CU_ASSERT(call_batch(echo_of(ch), "cut", r, 1, 3000));
    CU_ASSERT_EQUAL(r[0].status, RPC_E_TIMEOUT);
    CU_ASSERT_EQUAL(L.echo.calls, 0);

    set_server_faults(NULL);
    CU_ASSERT(call_batch(echo_of(ch), "back", r, 1, 3000));
    CU_ASSERT_EQUAL(r[0].status, RPC_OK);
    CU_ASSERT_EQUAL(L.echo.calls, 1);
    struct rpc_channel_stats cs;
    rpc_channel_get_stats(ch, &cs);
    CU_ASSERT_EQUAL(cs.connects, 1); /* losses did not break the stream */
    rpc_channel_free(ch);
    stop();
}

static void test_rpc_faults_server_lost_reply_after_handler_ran(void)
{
    enum { N = 5 };
    start();
    struct rpc_channel *ch = open_channel(150);
    struct rpc_faults f = {.drop_reply = 1};
    set_server_faults(&f);
    struct echo_result r[N];
    CU_ASSERT(call_batch(echo_of(ch), "void", r, N, 3000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_E_TIMEOUT);
    }
    CU_ASSERT_EQUAL(L.echo.calls, N);
    struct rpc_fault_stats st;
    rpc_server_get_fault_stats(L.server, &st);
    CU_ASSERT_EQUAL(st.dropped_replies, N);
    CU_ASSERT_EQUAL(st.dropped_requests, 0);
    rpc_channel_free(ch);
    stop();
}

static void test_rpc_faults_server_duplicate_runs_handler_twice(void)
{
    enum { N = 5 };
    start();
    struct rpc_channel *ch = open_channel(5000);
    struct rpc_faults f = {.duplicate = 1};
    set_server_faults(&f);
    struct echo_result r[N];
    CU_ASSERT(call_batch(echo_of(ch), "dup", r, N, 3000));
    loop_run_for(L.base, 50);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_OK);
        CU_ASSERT(payload_is(&r[i], "dup", i));
    }
    CU_ASSERT_EQUAL(L.echo.calls, 2 * N);
    struct rpc_channel_stats cs;
    rpc_channel_get_stats(ch, &cs);
    CU_ASSERT_EQUAL(cs.late_replies, 0); /* one reply per call was sent */
    struct rpc_fault_stats st;
    rpc_server_get_fault_stats(L.server, &st);
    CU_ASSERT_EQUAL(st.duplicated, N);

    /* Deferred handlers too: the second answer, coming later, is lost. */
    memset(r, 0, sizeof r);
    echo_completions = 0;
    echo_call(echo_of(ch), ECHO_M_DEFER, "later", 30, &r[0]);
    CU_ASSERT(loop_run_until(L.base, &r[0].done, 1, 3000));
    loop_run_for(L.base, 80);
    CU_ASSERT_EQUAL(r[0].done, 1);
    CU_ASSERT_STRING_EQUAL(r[0].payload, "later");
    CU_ASSERT_EQUAL(L.echo.calls, 2 * N + 2);
    CU_ASSERT_EQUAL(L.echo.deferred, 0);
    rpc_channel_get_stats(ch, &cs);
    CU_ASSERT_EQUAL(cs.late_replies, 0);
    rpc_channel_free(ch);
    stop();
}

static void test_rpc_faults_server_delay_and_reorder_add_latency(void)
{
    enum { N = 200 };
    start();
    struct rpc_channel *ch = open_channel(5000);
    warm_up(ch);
    struct echo_result r1;

    struct rpc_faults delay = {.delay_min_ms = 50, .delay_max_ms = 50};
    set_server_faults(&delay);
    uint64_t took = time_one_call(echo_of(ch), &r1);
    CU_ASSERT_EQUAL(r1.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r1.payload, "timed");
    CU_ASSERT(took >= 50 - CLOCK_SLACK_MS);

    struct rpc_faults hold = {
        .reorder = 1, .reorder_min_ms = 100, .reorder_max_ms = 100};
    set_server_faults(&hold);
    took = time_one_call(echo_of(ch), &r1);
    CU_ASSERT_EQUAL(r1.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r1.payload, "timed");
    CU_ASSERT(took >= 100 - CLOCK_SLACK_MS);
    struct rpc_fault_stats st;
    rpc_server_get_fault_stats(L.server, &st);
    CU_ASSERT_EQUAL(st.reordered, 1);

    struct rpc_faults half = {
        .reorder = 0.5, .reorder_min_ms = 20, .reorder_max_ms = 80};
    set_server_faults(&half);
    static struct echo_result r[N];
    CU_ASSERT(call_batch(echo_of(ch), "mixed", r, N, 5000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_OK);
        CU_ASSERT(payload_is(&r[i], "mixed", i));
    }
    rpc_server_get_fault_stats(L.server, &st);
    CU_ASSERT(st.reordered > 0 && st.reordered < N);
    CU_ASSERT(inversions(r, N) > 0);
    rpc_channel_free(ch);
    stop();
}

static void test_rpc_faults_server_freed_with_held_requests_and_replies(void)
{
    enum { N = 10 };
    start();
    struct rpc_channel *ch = open_channel(5000);
    warm_up(ch);
    struct echo_result r[2 * N];
    memset(r, 0, sizeof r);
    echo_completions = 0;
    /* First replies held back after their handler ran... */
    struct rpc_faults hold = {
        .reorder = 1, .reorder_min_ms = 5000, .reorder_max_ms = 5000};
    set_server_faults(&hold);
    for (int i = 0; i < N; i++) {
        echo_call(echo_of(ch), ECHO_M_ECHO, "held reply", 0, &r[i]);
    }
    CU_ASSERT(wait_handler_calls(&L.echo, 1 + N, 2000));
    /* ...then requests held back before it. */
    struct rpc_faults delay = {
        .delay_min_ms = 5000, .delay_max_ms = 5000, .duplicate = 0.5};
    set_server_faults(&delay);
    for (int i = N; i < 2 * N; i++) {
        echo_call(echo_of(ch), ECHO_M_ECHO, "held request", 0, &r[i]);
    }
    loop_run_for(L.base, 50);
    CU_ASSERT_EQUAL(echo_completions, 0);
    rpc_server_free(L.server);
    L.server = NULL;
    /* The connection closes: every call fails, once. */
    CU_ASSERT(loop_run_until(L.base, &echo_completions, 2 * N, 3000));
    loop_run_for(L.base, 50);
    for (int i = 0; i < 2 * N; i++) {
        CU_ASSERT_EQUAL(r[i].done, 1);
        CU_ASSERT_EQUAL(r[i].status, RPC_E_CONNECTION_LOST);
    }
    CU_ASSERT_EQUAL(L.echo.calls, 1 + N);
    rpc_channel_free(ch);
    stop();
}

static void test_rpc_faults_server_faults_touch_only_their_service(void)
{
    enum { N = 5 };
    start();
    /* A second service on the same server: EchoService under another
     * name. */
    static ProtobufCServiceDescriptor other_desc;
    other_desc = raftkv__test__echo_service__descriptor;
    other_desc.name = "raftkv.test.OtherEchoService";
    struct echo_service other;
    echo_service_init(&other, L.base);
    other.svc.base.descriptor = &other_desc;
    CU_ASSERT_FATAL(rpc_server_add_service(L.server, &other.svc.base) == 0);

    struct rpc_channel *ch = open_channel(150);
    struct rpc_faults f = {.drop_request = 1};
    set_server_faults(&f);
    struct echo_result r[N];
    ProtobufCService *other_svc = rpc_channel_service(ch, &other_desc);
    CU_ASSERT(call_batch(other_svc, "other", r, N, 3000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].status, RPC_OK);
        CU_ASSERT(payload_is(&r[i], "other", i));
    }
    CU_ASSERT(call_batch(echo_of(ch), "echo", r, N, 3000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].status, RPC_E_TIMEOUT);
    }
    CU_ASSERT_EQUAL(other.calls, N);
    CU_ASSERT_EQUAL(L.echo.calls, 0);

    /* And the other way round. */
    CU_ASSERT_EQUAL(rpc_server_set_faults(L.server, other_desc.name, &f, 1), 0);
    set_server_faults(NULL);
    CU_ASSERT(call_batch(echo_of(ch), "echo", r, N, 3000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].status, RPC_OK);
    }
    CU_ASSERT(call_batch(other_svc, "other", r, N, 3000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].status, RPC_E_TIMEOUT);
    }
    CU_ASSERT_EQUAL(other.calls, N);
    CU_ASSERT_EQUAL(L.echo.calls, N);
    /* The server's fault counters add up every service's. */
    struct rpc_fault_stats st;
    rpc_server_get_fault_stats(L.server, &st);
    CU_ASSERT_EQUAL(st.dropped_requests, N);
    rpc_channel_free(ch);
    stop();
}

/* ------------------------------------------------------------ statistics */

static void test_rpc_faults_drop_share_matches_probability_and_seed(void)
{
    enum { N = 1000 };
    start();
    struct rpc_channel *ch = open_channel(5000);
    warm_up(ch);
    struct rpc_faults f = {.drop_request = 0.3};
    uint64_t seed = cunit_seed();
    static struct echo_result r[N];
    static bool failed_first[N];
    int failures = 0;
    for (int round = 0; round < 2; round++) {
        /* Both rounds with the same seed make the same choices. */
        CU_ASSERT_EQUAL_FATAL(rpc_channel_set_faults(ch, &f, seed), 0);
        CU_ASSERT(call_batch(echo_of(ch), "share", r, N, 8000));
        int lost = 0, same = 0;
        for (int i = 0; i < N; i++) {
            CU_ASSERT_EQUAL(r[i].done, 1);
            bool failed = r[i].status != RPC_OK;
            if (failed) {
                CU_ASSERT_EQUAL(r[i].status, RPC_E_CONNECTION_LOST);
            } else {
                CU_ASSERT(payload_is(&r[i], "share", i));
            }
            lost += failed;
            if (round == 0) {
                failed_first[i] = failed;
            } else {
                same += failed == failed_first[i];
            }
        }
        struct rpc_fault_stats st;
        rpc_channel_get_fault_stats(ch, &st);
        CU_ASSERT_EQUAL(st.dropped_requests, (uint64_t)lost);
        if (round == 0) {
            failures = lost;
            CU_ASSERT(lost >= N * 2 / 10 && lost <= N * 4 / 10);
            CU_ASSERT_EQUAL(L.echo.calls, 1 + (uint64_t)(N - lost));
        } else {
            CU_ASSERT_EQUAL(lost, failures);
            CU_ASSERT_EQUAL(same, N);
        }
    }
    /* Setting faults again starts the counters over. */
    CU_ASSERT_EQUAL(rpc_channel_set_faults(ch, &f, seed + 1), 0);
    struct rpc_fault_stats st;
    rpc_channel_get_fault_stats(ch, &st);
    CU_ASSERT_EQUAL(st.dropped_requests, 0);
    CU_ASSERT_EQUAL(rpc_channel_set_faults(ch, NULL, 0), 0);
    rpc_channel_get_fault_stats(ch, &st);
    CU_ASSERT_EQUAL(st.dropped_requests, 0);
    rpc_channel_free(ch);
    stop();
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static CU_TestInfo tests[] = {
        {"test_rpc_faults_invalid_descriptions_are_refused",
         test_rpc_faults_invalid_descriptions_are_refused},
        {"test_rpc_faults_channel_cut_fails_fast_without_reaching_server",
         test_rpc_faults_channel_cut_fails_fast_without_reaching_server},
        {"test_rpc_faults_channel_lost_request_never_reaches_handler",
         test_rpc_faults_channel_lost_request_never_reaches_handler},
        {"test_rpc_faults_channel_lost_reply_after_handler_ran",
         test_rpc_faults_channel_lost_reply_after_handler_ran},
        {"test_rpc_faults_channel_duplicate_runs_handler_twice",
         test_rpc_faults_channel_duplicate_runs_handler_twice},
        {"test_rpc_faults_channel_delay_and_reorder_add_latency",
         test_rpc_faults_channel_delay_and_reorder_add_latency},
        {"test_rpc_faults_channel_freed_with_held_calls_runs_each_once",
         test_rpc_faults_channel_freed_with_held_calls_runs_each_once},
        {"test_rpc_faults_blocking_channel_waits_out_held_reply",
         test_rpc_faults_blocking_channel_waits_out_held_reply},
        {"test_rpc_faults_server_lost_request_gets_no_reply",
         test_rpc_faults_server_lost_request_gets_no_reply},
        {"test_rpc_faults_server_lost_reply_after_handler_ran",
         test_rpc_faults_server_lost_reply_after_handler_ran},
        {"test_rpc_faults_server_duplicate_runs_handler_twice",
         test_rpc_faults_server_duplicate_runs_handler_twice},
        {"test_rpc_faults_server_delay_and_reorder_add_latency",
         test_rpc_faults_server_delay_and_reorder_add_latency},
        {"test_rpc_faults_server_freed_with_held_requests_and_replies",
         test_rpc_faults_server_freed_with_held_requests_and_replies},
        {"test_rpc_faults_server_faults_touch_only_their_service",
         test_rpc_faults_server_faults_touch_only_their_service},
        {"test_rpc_faults_drop_share_matches_probability_and_seed",
         test_rpc_faults_drop_share_matches_probability_and_seed},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"rpc_faults", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
