/* test_async.c: libclerk's async API on a real 3-node cluster: thousands
 * of operations in flight on one handle, the leader killed mid-flight,
 * exactly-once writes under lost replies, a callback that closes the
 * handle, the pollable-fd mode under a plain poll() loop, deadlines. */
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <event2/event.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

static struct h_cluster ac; /* one cluster for every test */
static char eps[512];
static struct clerk *shared_ck; /* a blocking handle shared by threads */

static int setup(void)
{
    if (h_cluster_start(&ac, 3, "--enable-fault-injection") != 0 ||
        h_find_leader(&ac, 10000) < 0) {
        ac.keep = true;
        h_cluster_destroy(&ac);
        return 1;
    }
    h_endpoints(&ac, eps, sizeof eps);
    return 0;
}

static int teardown(void)
{
    ac.keep = CU_get_number_of_failures() > 0;
    return h_cluster_destroy(&ac) == 0 ? 0 : 1;
}

/* What one operation of a test saw. */
struct op
{
    int calls;          /* callbacks (must end at 1) */
    int err;            /* the last one's error */
    bool maybe_applied; /* its flag */
    char value[64];     /* a get's value */
    size_t key;         /* the key it wrote */
    int marker;         /* the marker it appended */
};

/* A test's run: its ops and the loop. */
struct run
{
    struct event_base *base; /* libevent mode, or NULL */
    struct clerk_async *a;   /* the handle */
    struct op *ops;          /* one per operation */
    size_t n;                /* ops */
    size_t started;          /* ops started */
    size_t done;             /* callbacks seen */
    size_t window;           /* ops in flight at most (0: all at once) */
    size_t close_at;         /* close the handle at this callback (0: no) */
    int refused_after_close; /* a call made after the close returned */
    int (*start)(struct run *r, size_t i); /* starts op i */
    size_t kill_at; /* kill the leader at this callback (0: no) */
    int killed;     /* node killed, or -1 */
};

static void on_done(struct clerk_async *a,
                    const struct clerk_async_reply *rep,
                    void *arg);

/* Start ops until the window is full. */
static void fill(struct run *r)
{
    while (r->started < r->n &&
           (!r->window || r->started - r->done < r->window)) {
        size_t i = r->started++;
        int rv = r->start(r, i);
        CU_ASSERT_EQUAL(rv, CLERK_OK);
        if (rv != CLERK_OK) {
            r->ops[i].calls++;
            r->ops[i].err = rv;
            r->done++;
        }
    }
}

static struct run *run_of_op; /* the running test's run (one at a time) */

static void on_done(struct clerk_async *a,
                    const struct clerk_async_reply *rep,
                    void *arg)
{
    struct run *r = run_of_op;
    struct op *o = arg;
    o->calls++;
    o->err = rep->err;
    o->maybe_applied = rep->maybe_applied;
    if (rep->value) {
        snprintf(o->value, sizeof o->value, "%.*s", (int)rep->value_len,
                 (const char *)rep->value);
    }
    r->done++;
    if (r->close_at && r->done == r->close_at) {
        clerk_async_close(a);
        /* The handle is closed (freed later): new calls are refused. */
        r->refused_after_close = clerk_async_get(a, "k", 1, on_done, o);
        r->a = NULL;
        return;
    }
    if (r->kill_at && r->done == r->kill_at) {
        r->killed = h_find_leader(&ac, 5000);
        if (r->killed >= 0) {
            h_node_kill(&ac, (size_t)r->killed);
        }
    }
    if (r->a) {
        fill(r);
    }
}

/* Run the libevent loop until every op has its callback. */
static void run_base(struct run *r, unsigned budget_ms)
{
    uint64_t end = h_now_ms() + budget_ms;
    while (r->done < r->n && h_now_ms() < end) {
        event_base_loop(r->base, EVLOOP_ONCE);
    }
}

static int start_put(struct run *r, size_t i)
{
    char k[32], v[32];
    snprintf(k, sizeof k, "many/%zu", i);
    snprintf(v, sizeof v, "v%zu", i);
    return clerk_async_put(r->a, k, strlen(k), v, strlen(v), on_done,
                           &r->ops[i]);
}

static int start_get(struct run *r, size_t i)
{
    char k[32];
    snprintf(k, sizeof k, "many/%zu", i);
    return clerk_async_get(r->a, k, strlen(k), on_done, &r->ops[i]);
}

/* Connections the nodes accepted so far, all of them summed. */
static double connections_accepted(void)
{
    static char body[1 << 16];
    double sum = 0;
    for (size_t i = 0; i < ac.n; i++) {
        if (h_http_get(&ac, i, "GET", "/metrics", body, sizeof body) == 200) {
            sum += h_metric(body, "raftkv_rpc_connections_accepted_total");
        }
    }
    return sum;
}

/* Thousands of puts, then gets, all in flight at once on one handle, over
 * one connection per server at most. */
static void test_async_thousands_in_flight_on_one_handle(void)
{
    enum { N = 4000 };
    struct run r = {.base = event_base_new(), .n = N, .killed = -1};
    r.ops = calloc(N, sizeof *r.ops);
    run_of_op = &r;
    struct clerk_options o = {.deadline_ms = 20000};
    double accepted = connections_accepted();
    CU_ASSERT_EQUAL_FATAL(clerk_async_open(&r.a, eps, &o, r.base), CLERK_OK);
    r.start = start_put;
    fill(&r);
    CU_ASSERT_EQUAL(clerk_async_pending(r.a), N);
    run_base(&r, 60000);
    size_t bad = 0;
    for (size_t i = 0; i < N; i++) {
        bad += r.ops[i].calls != 1 || r.ops[i].err != CLERK_OK;
    }
    CU_ASSERT_EQUAL(r.done, N);
    CU_ASSERT_EQUAL(bad, 0);
    memset(r.ops, 0, N * sizeof *r.ops);
    r.started = r.done = 0;
    r.start = start_get;
    fill(&r);
    run_base(&r, 60000);
    bad = 0;
    for (size_t i = 0; i < N; i++) {
        char v[32];
        snprintf(v, sizeof v, "v%zu", i);
        bad += r.ops[i].calls != 1 || r.ops[i].err != CLERK_OK ||
               strcmp(r.ops[i].value, v) != 0;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(clerk_async_pending(r.a), 0);
    double made = connections_accepted() - accepted;
    printf("\n  %d puts and %d gets over %.0f connections\n", N, N, made);
    CU_ASSERT(made >= 1 && made <= (double)ac.n);
    clerk_async_close(r.a);
    event_base_free(r.base);
    free(r.ops);
}

/* Appends of distinct markers: per key, each marker acknowledged must be
 * there exactly once, and none twice. */
#define KEYS 16
static unsigned append_round; /* each test appends under keys of its own */

static int start_append(struct run *r, size_t i)
{
    char k[32], v[32];
    struct op *o = &r->ops[i];
    o->key = i % KEYS;
    o->marker = (int)i;
    snprintf(k, sizeof k, "ap/%u/%u/%zu", cunit_seed(), append_round, o->key);
    snprintf(v, sizeof v, "<%d>", o->marker);
    return clerk_async_append(r->a, k, strlen(k), v, strlen(v), on_done, o);
}

static void check_appends(struct run *r, const char *what)
{
    struct clerk *ck;
    struct clerk_options o = {.deadline_ms = 20000};
    CU_ASSERT_EQUAL_FATAL(clerk_open(&ck, eps, &o), CLERK_OK);
    size_t missing = 0, twice = 0, unknown = 0;
    for (size_t key = 0; key < KEYS; key++) {
        char k[32];
        snprintf(k, sizeof k, "ap/%u/%u/%zu", cunit_seed(), append_round, key);
        void *val = NULL;
        size_t len = 0;
        int err = clerk_get(ck, k, strlen(k), &val, &len);
        CU_ASSERT(err == CLERK_OK || err == CLERK_NOT_FOUND);
        for (size_t i = key; i < r->n; i += KEYS) {
            char m[32];
            snprintf(m, sizeof m, "<%d>", r->ops[i].marker);
            const char *at = val ? strstr(val, m) : NULL;
            if (at && strstr(at + 1, m)) {
                twice++;
            }
            if (r->ops[i].err == CLERK_OK && !at) {
                missing++;
            }
            unknown += r->ops[i].err != CLERK_OK;
        }
        clerk_free(val);
    }
    clerk_close(ck);
    append_round++;
    printf("\n  %s: %zu appends, %zu not acknowledged, seed %u\n", what, r->n,
           unknown, cunit_seed());
    CU_ASSERT_EQUAL(missing, 0);
    CU_ASSERT_EQUAL(twice, 0);
}

/* The leader dies with hundreds of writes in flight: every op ends (once),
 * acknowledged writes are there, none is applied twice. */
static void test_async_leader_killed_mid_flight(void)
{
    enum { N = 3000 };
    srand(cunit_seed());
    struct run r = {.base = event_base_new(),
                    .n = N,
                    .window = 300,
                    .kill_at = 300 + (size_t)rand() % 600,
                    .killed = -1};
    r.ops = calloc(N, sizeof *r.ops);
    run_of_op = &r;
    struct clerk_options o = {.deadline_ms = 15000, .attempt_ms = 500};
    CU_ASSERT_EQUAL_FATAL(clerk_async_open(&r.a, eps, &o, r.base), CLERK_OK);
    r.start = start_append;
    fill(&r);
    run_base(&r, 120000);
    CU_ASSERT_EQUAL(r.done, N);
    CU_ASSERT(r.killed >= 0);
    size_t once = 0, ok = 0;
    for (size_t i = 0; i < N; i++) {
        once += r.ops[i].calls == 1;
        ok += r.ops[i].err == CLERK_OK;
        /* A write's only other outcomes. */
        CU_ASSERT(r.ops[i].err == CLERK_OK ||
                  r.ops[i].err == CLERK_UNKNOWN_OUTCOME ||
                  r.ops[i].err == CLERK_UNAVAILABLE);
    }
    CU_ASSERT_EQUAL(once, N);
    CU_ASSERT(ok > N / 2);
    clerk_async_close(r.a);
    check_appends(&r, "leader killed");
    if (r.killed >= 0) {
        CU_ASSERT_EQUAL(h_node_start(&ac, (size_t)r.killed), 0);
        CU_ASSERT(h_find_leader(&ac, 10000) >= 0);
    }
    event_base_free(r.base);
    free(r.ops);
}

/* Every server drops a third of its replies to clients: writes are
 * retried with their request ids and still applied exactly once. */
static void test_async_exactly_once_when_replies_are_lost(void)
{
    enum { N = 600 };
    struct clerk *admin;
    CU_ASSERT_EQUAL_FATAL(clerk_open(&admin, eps, NULL), CLERK_OK);
    struct clerk_fault drop = {.target = CLERK_FAULT_CLIENTS,
                               .drop_reply = 0.3};
    for (size_t i = 0; i < ac.n; i++) {
        CU_ASSERT_EQUAL(
            clerk_fault(admin, i, true, &drop, 1, cunit_seed() + i, NULL, NULL),
            CLERK_OK);
    }
    struct run r = {.base = event_base_new(), .n = N, .killed = -1};
    r.ops = calloc(N, sizeof *r.ops);
    run_of_op = &r;
    struct clerk_options o = {.deadline_ms = 30000, .attempt_ms = 300};
    CU_ASSERT_EQUAL_FATAL(clerk_async_open(&r.a, eps, &o, r.base), CLERK_OK);
    r.start = start_append;
    fill(&r);
    run_base(&r, 120000);
    uint64_t dropped = 0;
    for (size_t i = 0; i < ac.n; i++) {
        struct clerk_fault *now = NULL;
        size_t n_now = 0;
        CU_ASSERT_EQUAL(clerk_fault(admin, i, false, NULL, 0, 0, &now, &n_now),
                        CLERK_OK);
        for (size_t k = 0; k < n_now; k++) {
            dropped += now[k].n_dropped_replies;
        }
        clerk_free(now);
        CU_ASSERT_EQUAL(clerk_fault(admin, i, true, NULL, 0, 0, NULL, NULL),
                        CLERK_OK);
    }
    clerk_close(admin);
    size_t ok = 0, retried = 0;
    for (size_t i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r.ops[i].calls, 1);
        ok += r.ops[i].err == CLERK_OK;
        retried += r.ops[i].maybe_applied;
    }
    printf("\n  %" PRIu64 " replies dropped, %zu writes retried, %zu ok\n",
           dropped, retried, ok);
    CU_ASSERT(dropped > 0);
    CU_ASSERT(retried > 0);
    CU_ASSERT_EQUAL(ok, N);
    clerk_async_close(r.a);
    check_appends(&r, "replies lost");
    event_base_free(r.base);
    free(r.ops);
}

/* A callback closes the handle: every other pending op ends with
 * CLERK_CLOSED, each callback once; calls after it are refused. */
static void test_async_callback_closes_the_handle(void)
{
    enum { N = 1000 };
    struct run r = {
        .base = event_base_new(), .n = N, .close_at = 50, .killed = -1};
    r.ops = calloc(N, sizeof *r.ops);
    run_of_op = &r;
    CU_ASSERT_EQUAL_FATAL(clerk_async_open(&r.a, eps, NULL, r.base), CLERK_OK);
    r.start = start_put;
    fill(&r);
    run_base(&r, 30000);
    /* The loop frees the handle on its next turn; nothing runs after. */
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    size_t once = 0, closed = 0;
    for (size_t i = 0; i < N; i++) {
        once += r.ops[i].calls == 1;
        closed += r.ops[i].err == CLERK_CLOSED;
    }
    CU_ASSERT_EQUAL(r.done, N);
    CU_ASSERT_EQUAL(once, N);
    CU_ASSERT(closed >= N - 50 - 200); /* most were still pending */
    CU_ASSERT_EQUAL(r.refused_after_close, CLERK_CLOSED);
    event_base_free(r.base);
    free(r.ops);
}

/* Drive an fd-mode handle with poll() until every op has its callback. */
static void run_poll(struct run *r, unsigned budget_ms)
{
    uint64_t end = h_now_ms() + budget_ms;
    while (r->done < r->n && h_now_ms() < end && r->a) {
        struct pollfd p = {.fd = clerk_async_fd(r->a), .events = POLLIN};
        int t = clerk_async_timeout_ms(r->a);
        poll(&p, 1, t < 0 || t > 1000 ? 1000 : t);
        struct clerk_async *a = r->a;
        int rv = clerk_async_process(a);
        CU_ASSERT(rv == CLERK_OK || (rv == CLERK_CLOSED && !r->a));
    }
}

/* Several kinds of ops through the fd mode. */
static int start_mixed(struct run *r, size_t i)
{
    char k[32], v[32];
    struct op *o = &r->ops[i];
    snprintf(k, sizeof k, "poll/%zu", i / 4);
    snprintf(v, sizeof v, "p%zu", i / 4);
    switch (i % 4) {
        case 0: /* absent: only this cas can set it */
            return clerk_async_cas(r->a, k, strlen(k), NULL, 0, v, strlen(v),
                                   on_done, o);
        case 1: /* must fail: the key holds v or nothing */
            return clerk_async_cas(r->a, k, strlen(k), "nope", 4, "x", 1,
                                   on_done, o);
        case 2:
            return clerk_async_get(r->a, "poll/none", 9, on_done, o);
        default:
            return clerk_async_delete(r->a, "poll/none", 9, on_done, o);
    }
}

static void test_async_pollable_fd_under_poll(void)
{
    enum { N = 2000 };
    struct run r = {.n = N, .window = 256, .killed = -1};
    r.ops = calloc(N, sizeof *r.ops);
    run_of_op = &r;
    CU_ASSERT_EQUAL_FATAL(clerk_async_open_fd(&r.a, eps, NULL), CLERK_OK);
    CU_ASSERT(clerk_async_fd(r.a) >= 0);
    r.start = start_mixed;
    fill(&r);
    run_poll(&r, 60000);
    CU_ASSERT_EQUAL(r.done, N);
    size_t bad = 0;
    for (size_t i = 0; i < N; i++) {
        const struct op *o = &r.ops[i];
        int want[] = {CLERK_OK, CLERK_CAS_MISMATCH, CLERK_NOT_FOUND,
                      CLERK_NOT_FOUND};
        bad += o->calls != 1 || o->err != want[i % 4];
        /* The mismatch shows the current value (or none yet). */
        if (i % 4 == 1 && o->value[0]) {
            char v[32];
            snprintf(v, sizeof v, "p%zu", i / 4);
            bad += strcmp(o->value, v) != 0;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);

    /* A range and a transaction over what the cas ops wrote. */
    struct op rng = {0}, tx = {0};
    r.n = 2;
    r.done = 0;
    r.started = 2;
    CU_ASSERT_EQUAL(clerk_async_range(r.a, "poll/", 5, "poll0", 5, 0,
                                      CLERK_RANGE_COUNT_ONLY, on_done, &rng),
                    CLERK_OK);
    struct clerk_txn *t = clerk_txn_new();
    CU_ASSERT_EQUAL(clerk_txn_put(t, CLERK_TXN_THEN, "poll/tx", 7, "1", 1, 0),
                    CLERK_OK);
    CU_ASSERT_EQUAL(clerk_async_txn(r.a, t, on_done, &tx), CLERK_OK);
    clerk_txn_free(t); /* copied when the call started */
    run_poll(&r, 20000);
    CU_ASSERT_EQUAL(rng.calls, 1);
    CU_ASSERT_EQUAL(rng.err, CLERK_OK);
    CU_ASSERT_EQUAL(tx.calls, 1);
    CU_ASSERT_EQUAL(tx.err, CLERK_OK);
    clerk_async_close(r.a);
    free(r.ops);
}

/* A callback closes an fd-mode handle inside clerk_async_process. */
static void test_async_pollable_fd_close_from_callback(void)
{
    enum { N = 300 };
    struct run r = {.n = N, .close_at = 20, .killed = -1};
    r.ops = calloc(N, sizeof *r.ops);
    run_of_op = &r;
    CU_ASSERT_EQUAL_FATAL(clerk_async_open_fd(&r.a, eps, NULL), CLERK_OK);
    r.start = start_get;
    fill(&r);
    run_poll(&r, 30000);
    size_t once = 0;
    for (size_t i = 0; i < N; i++) {
        once += r.ops[i].calls == 1;
    }
    CU_ASSERT_EQUAL(once, N);
    CU_ASSERT_EQUAL(r.refused_after_close, CLERK_CLOSED);
    CU_ASSERT_PTR_NULL(r.a);
    free(r.ops);
}

/* What the async and the blocking API answer at a server list where
 * nobody listens: the same codes, at the deadline. */
static void test_async_deadline_as_blocking(void)
{
    char dead[64];
    h_node_addr(&ac, 0, dead, sizeof dead);
    /* A port of the cluster's own host that nothing listens on: node 0's
     * metrics port is taken, so use the peer port of a node we stop. */
    int leader = h_find_leader(&ac, 10000);
    size_t victim = leader == 0 ? 1 : 0;
    h_node_kill(&ac, victim);
    h_node_addr(&ac, victim, dead, sizeof dead);
    struct clerk_options o = {.deadline_ms = 600, .attempt_ms = 200};

    struct clerk *ck;
    CU_ASSERT_EQUAL_FATAL(clerk_open(&ck, dead, &o), CLERK_OK);
    void *v;
    size_t len;
    int bget = clerk_get(ck, "k", 1, &v, &len);
    int bput = clerk_put(ck, "k", 1, "v", 1);
    clerk_close(ck);

    struct run r = {.base = event_base_new(), .n = 2, .killed = -1};
    r.ops = calloc(2, sizeof *r.ops);
    run_of_op = &r;
    CU_ASSERT_EQUAL_FATAL(clerk_async_open(&r.a, dead, &o, r.base), CLERK_OK);
    uint64_t t0 = h_now_ms();
    r.started = 2;
    CU_ASSERT_EQUAL(clerk_async_get(r.a, "k", 1, on_done, &r.ops[0]), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_async_put(r.a, "k", 1, "v", 1, on_done, &r.ops[1]),
                    CLERK_OK);
    run_base(&r, 10000);
    uint64_t took = h_now_ms() - t0;
    /* Nothing accepted a connection, and nothing ever answered these
     * handles: a read and a write fail at once, alike (issue 17). */
    CU_ASSERT_EQUAL(bget, CLERK_UNAVAILABLE);
    CU_ASSERT_EQUAL(bput, CLERK_UNAVAILABLE);
    CU_ASSERT_EQUAL(r.ops[0].err, bget);
    CU_ASSERT_EQUAL(r.ops[1].err, bput);
    CU_ASSERT(took < 500);
    clerk_async_close(r.a);
    event_base_free(r.base);
    free(r.ops);
    CU_ASSERT_EQUAL(h_node_start(&ac, victim), 0);
    CU_ASSERT(h_find_leader(&ac, 10000) >= 0);

    /* Every node stopped after a handle opened its session: a write
     * reaches a server and gets no answer, so its outcome is unknown, in
     * both APIs. (Before the session is open the write itself is never
     * sent: CLERK_UNAVAILABLE.) */
    CU_ASSERT_EQUAL_FATAL(clerk_open(&ck, eps, &o), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_put(ck, "k", 1, "v", 1), CLERK_OK);
    r.base = event_base_new();
    r.ops = calloc(2, sizeof *r.ops);
    r.n = r.started = 1;
    r.done = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_async_open(&r.a, eps, &o, r.base), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_async_put(r.a, "k", 1, "v", 1, on_done, &r.ops[0]),
                    CLERK_OK);
    run_base(&r, 10000);
    CU_ASSERT_EQUAL(r.ops[0].err, CLERK_OK);
    for (size_t i = 0; i < ac.n; i++) {
        h_node_pause(&ac, i, true);
    }
    bput = clerk_put(ck, "k", 1, "v", 1);
    r.n = r.started = 2;
    CU_ASSERT_EQUAL(clerk_async_put(r.a, "k", 1, "v", 1, on_done, &r.ops[1]),
                    CLERK_OK);
    run_base(&r, 10000);
    for (size_t i = 0; i < ac.n; i++) {
        h_node_pause(&ac, i, false);
    }
    clerk_close(ck);
    CU_ASSERT_EQUAL(bput, CLERK_UNKNOWN_OUTCOME);
    CU_ASSERT_EQUAL(r.ops[1].err, CLERK_UNKNOWN_OUTCOME);
    CU_ASSERT(r.ops[1].maybe_applied);
    clerk_async_close(r.a);
    event_base_free(r.base);
    free(r.ops);
    CU_ASSERT(h_find_leader(&ac, 10000) >= 0);
}

/* With auth on: a handle without a user is refused, one with a user
 * authenticates once for its thousand calls in flight. */
static void test_async_auth_token(void)
{
    enum { N = 1000 };
    struct clerk *ck;
    CU_ASSERT_EQUAL_FATAL(clerk_open(&ck, eps, NULL), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_user_add(ck, "root", "async-root-pw"), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_user_grant_role(ck, "root", "root"), CLERK_OK);
    CU_ASSERT_EQUAL_FATAL(clerk_auth_enable(ck), CLERK_OK);
    clerk_close(ck);

    struct run r = {.base = event_base_new(), .n = 1, .killed = -1};
    r.ops = calloc(N, sizeof *r.ops);
    run_of_op = &r;
    CU_ASSERT_EQUAL_FATAL(clerk_async_open(&r.a, eps, NULL, r.base), CLERK_OK);
    r.start = start_put;
    fill(&r);
    run_base(&r, 20000);
    CU_ASSERT_EQUAL(r.ops[0].calls, 1);
    CU_ASSERT_EQUAL(r.ops[0].err, CLERK_UNAUTHENTICATED);
    clerk_async_close(r.a);

    struct clerk_options o = {.user = "root", .password = "async-root-pw"};
    memset(r.ops, 0, N * sizeof *r.ops);
    r.n = N;
    r.started = r.done = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_async_open(&r.a, eps, &o, r.base), CLERK_OK);
    fill(&r);
    run_base(&r, 30000);
    size_t ok = 0;
    for (size_t i = 0; i < N; i++) {
        ok += r.ops[i].calls == 1 && r.ops[i].err == CLERK_OK;
    }
    CU_ASSERT_EQUAL(ok, N);
    clerk_async_close(r.a);

    CU_ASSERT_EQUAL_FATAL(clerk_open(&ck, eps, &o), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_auth_disable(ck), CLERK_OK);
    clerk_close(ck);
    event_base_free(r.base);
    free(r.ops);
}

/* A blocking get that waits for a stopped cluster (another thread's). */
static void *slow_get(void *arg)
{
    void *v;
    size_t len;
    int *err = arg;
    *err = clerk_get(shared_ck, "k", 1, &v, &len);
    return NULL;
}

/* A handle shared by threads: clerk_errmsg answers at once while another
 * thread's operation holds the handle (it reads under a lock of its own,
 * not the one held for a whole operation). */
static void test_blocking_errmsg_while_another_thread_waits(void)
{
    struct clerk_options o = {.deadline_ms = 2000, .attempt_ms = 300};
    CU_ASSERT_EQUAL_FATAL(clerk_open(&shared_ck, eps, &o), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_put(shared_ck, "", 0, "v", 1), CLERK_BAD_REQUEST);
    for (size_t i = 0; i < ac.n; i++) {
        h_node_pause(&ac, i, true);
    }
    int err = -1;
    pthread_t t;
    pthread_create(&t, NULL, slow_get, &err);
    h_sleep_ms(300);
    uint64_t t0 = h_now_ms();
    const char *msg = clerk_errmsg(shared_ck);
    uint64_t took = h_now_ms() - t0;
    CU_ASSERT_STRING_EQUAL(msg, "the key is empty");
    CU_ASSERT(took < 500);
    pthread_join(t, NULL);
    for (size_t i = 0; i < ac.n; i++) {
        h_node_pause(&ac, i, false);
    }
    CU_ASSERT_EQUAL(err, CLERK_TIMEOUT);
    CU_ASSERT(strstr(clerk_errmsg(shared_ck), "no leader answered") != NULL);
    clerk_close(shared_ck);
    CU_ASSERT(h_find_leader(&ac, 10000) >= 0);
}

static void test_async_version(void)
{
    CU_ASSERT_STRING_EQUAL(clerk_version(), CLERK_VERSION);
    CU_ASSERT_STRING_EQUAL(clerk_error_code(CLERK_CLOSED), "CLOSED");
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_async_version", test_async_version},
        {"test_async_thousands_in_flight_on_one_handle",
         test_async_thousands_in_flight_on_one_handle},
        {"test_async_callback_closes_the_handle",
         test_async_callback_closes_the_handle},
        {"test_async_pollable_fd_under_poll",
         test_async_pollable_fd_under_poll},
        {"test_async_pollable_fd_close_from_callback",
         test_async_pollable_fd_close_from_callback},
        {"test_async_deadline_as_blocking", test_async_deadline_as_blocking},
        {"test_async_exactly_once_when_replies_are_lost",
         test_async_exactly_once_when_replies_are_lost},
        {"test_async_leader_killed_mid_flight",
         test_async_leader_killed_mid_flight},
        {"test_async_auth_token", test_async_auth_token},
        {"test_blocking_errmsg_while_another_thread_waits",
         test_blocking_errmsg_while_another_thread_waits},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"async", setup, teardown, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    /* A killed server makes writes to its socket raise SIGPIPE (clerk.h). */
    signal(SIGPIPE, SIG_IGN);
    return cunit_main(argc, argv, suites);
}
