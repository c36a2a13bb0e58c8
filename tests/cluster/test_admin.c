/* test_admin.c: leadership transfer (kvctl transfer-leader,
 * clerk_transfer_leader, AdminService.TransferLeader) and the lag columns
 * of kvctl status, on a real three-node cluster. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <CUnit/Basic.h>

#include <proto/admin.pb-c.h>
#include <rpc/rpc.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

#define ALL_NODES 0x7u /* bit i: node i (0-based) of a three-node cluster */

static struct h_cluster cl; /* shared by the tests, in order */
static bool started;        /* cl is running */

/* Start the cluster in the first test that needs it, not in the suite's
 * setup: a setup that fails makes CUnit skip the suite without counting a
 * failure, so the program would exit 0. */
static void need_cluster(void)
{
    if (!started) {
        CU_ASSERT_FATAL(h_cluster_start(&cl, 3, NULL) == 0);
        started = true;
        CU_ASSERT_FATAL(h_find_leader(&cl, 10000) >= 0);
    }
}

static int suite_teardown(void)
{
    int rv = 0;
    if (started) {
        cl.keep = CU_get_number_of_failures() > 0;
        rv = h_cluster_destroy(&cl) == 0 ? 0 : 1;
        started = false;
    }
    return rv;
}

/* Run kvctl against every node; capture standard output and standard
 * error together; return its exit status. */
static int kvctl(const char *args, char *out, size_t cap)
{
    char eps[512], cmd[2048];
    h_endpoints(&cl, eps, sizeof eps);
    snprintf(cmd, sizeof cmd, "%s --cluster %s %s 2>&1", KVCTL_BIN, eps, args);
    out[0] = 0;
    FILE *p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static struct clerk *open_clerk(uint32_t which,
                                unsigned deadline_ms,
                                unsigned attempt_ms)
{
    char eps[512];
    h_endpoints_of(&cl, which, 0, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = deadline_ms,
                              .attempt_ms = attempt_ms};
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    return ck;
}

/* The node every node of `which` agrees leads (same term, and it says
 * so itself), with that term; or -1. */
static int agreed_leader(const struct clerk_node_status *st,
                         size_t n,
                         uint32_t which,
                         uint64_t *term)
{
    uint64_t leader = 0, t = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(which & (1u << i))) {
            continue;
        }
        if (!st[i].reachable || st[i].leader == 0 ||
            (leader && (st[i].leader != leader || st[i].term != t))) {
            return -1;
        }
        leader = st[i].leader;
        t = st[i].term;
    }
    for (size_t i = 0; i < n; i++) {
        if ((which & (1u << i)) && st[i].id == leader &&
            !strcmp(st[i].role, "leader")) {
            *term = t;
            return (int)i;
        }
    }
    return -1;
}

/* Poll the status of every node until those of `which` agree on a leader
 * (want: that node's index, or -1 for any); returns it, or -1 after
 * timeout_ms. */
static int wait_agreed(uint32_t which,
                       int want,
                       unsigned timeout_ms,
                       uint64_t *term)
{
    struct clerk *ck = open_clerk(ALL_NODES, 2000, 500);
    uint64_t deadline = h_now_ms() + timeout_ms, t = 0;
    int leader = -1;
    while (h_now_ms() < deadline) {
        struct clerk_node_status *st;
        size_t n;
        if (clerk_status(ck, &st, &n) == CLERK_OK) {
            leader = agreed_leader(st, n, which, &t);
            clerk_free(st);
        }
        if (leader >= 0 && (want < 0 || leader == want)) {
            break;
        }
        leader = -1;
        h_sleep_ms(50);
    }
    clerk_close(ck);
    if (term) {
        *term = t;
    }
    return leader;
}

/* --------------------------------------------------- a writer on the side */

enum { MAX_TOKENS = 4000 };

struct writer
{
    atomic_bool stop;        /* set by the test */
    int n;                   /* tokens tried */
    atomic_int acked;        /* tokens acknowledged (read while running) */
    int outcome[MAX_TOKENS]; /* clerk result of each */
    int ok_after_transfer;   /* acknowledged after `transferred` was set */
    atomic_bool transferred; /* set by the test after the transfer */
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct clerk *ck;
    char eps[512];
    h_endpoints(&cl, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 10000};
    if (clerk_open(&ck, eps, &o) != CLERK_OK) {
        return NULL;
    }
    while (!atomic_load(&w->stop) && w->n < MAX_TOKENS) {
        char tok[16];
        int len = snprintf(tok, sizeof tok, "t%04d;", w->n);
        bool after = atomic_load(&w->transferred);
        int err = clerk_append(ck, "xfer-log", 8, tok, (size_t)len);
        w->outcome[w->n++] = err;
        w->ok_after_transfer += after && err == CLERK_OK;
        atomic_fetch_add(&w->acked, err == CLERK_OK);
    }
    clerk_close(ck);
    return NULL;
}

/* Every acknowledged token in the log once and in order, every token that
 * was not applied absent, none twice. */
static bool log_matches(const struct writer *w, const char *v, size_t len)
{
    int last = -1;
    bool seen[MAX_TOKENS] = {false};
    for (size_t i = 0; i + 6 <= len; i += 6) {
        int k = atoi(v + i + 1);
        if (v[i] != 't' || v[i + 5] != ';' || k <= last || k >= w->n) {
            fprintf(stderr, "xfer-log: bad or out-of-order token at %zu\n", i);
            return false;
        }
        last = k;
        seen[k] = true;
    }
    for (int k = 0; k < w->n; k++) {
        if (w->outcome[k] == CLERK_OK && !seen[k]) {
            fprintf(stderr, "xfer-log: acknowledged t%04d is lost\n", k);
            return false;
        }
        if (w->outcome[k] == CLERK_UNAVAILABLE && seen[k]) {
            fprintf(stderr, "xfer-log: t%04d applied though refused\n", k);
            return false;
        }
    }
    return len % 6 == 0;
}

/* ---------------------------------------------------------------- tests */

static void test_transfer_leader_moves_the_leader(void)
{
    need_cluster();
    uint64_t term0;
    int leader = wait_agreed(ALL_NODES, -1, 10000, &term0);
    CU_ASSERT_FATAL(leader >= 0);
    int target = (leader + 1) % 3;

    /* A client keeps writing through the transfer. */
    static struct writer w;
    memset(&w, 0, sizeof w);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, writer_main, &w) == 0);
    uint64_t until = h_now_ms() + 15000;
    while (atomic_load(&w.acked) < 20 && h_now_ms() < until) {
        h_sleep_ms(10);
    }
    CU_ASSERT(atomic_load(&w.acked) >= 20); /* writing when it moves */

    struct clerk *ck = open_clerk(ALL_NODES, 10000, 0);
    uint64_t now_leader = 0;
    int err = clerk_transfer_leader(ck, cl.nodes[target].id, &now_leader);
    if (err != CLERK_OK) {
        fprintf(stderr, "transfer: %s: %s\n", clerk_error_code(err),
                clerk_errmsg(ck));
    }
    CU_ASSERT_EQUAL(err, CLERK_OK);
    CU_ASSERT_EQUAL(now_leader, cl.nodes[target].id);
    atomic_store(&w.transferred, true);

    /* Every node agrees, in a later term. */
    uint64_t term1;
    CU_ASSERT_EQUAL(wait_agreed(ALL_NODES, target, 10000, &term1), target);
    CU_ASSERT(term1 > term0);

    /* Writes go on; then nothing acknowledged is missing. */
    until = h_now_ms() + 15000;
    while (w.ok_after_transfer < 20 && h_now_ms() < until) {
        h_sleep_ms(20);
    }
    atomic_store(&w.stop, true);
    pthread_join(th, NULL);
    CU_ASSERT(w.ok_after_transfer >= 20);
    int acked = 0;
    for (int k = 0; k < w.n; k++) {
        acked += w.outcome[k] == CLERK_OK;
    }
    CU_ASSERT(acked > 20);
    CU_ASSERT_EQUAL(clerk_put(ck, "after", 5, "x", 1), CLERK_OK);
    void *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_get(ck, "xfer-log", 8, &v, &len), CLERK_OK);
    CU_ASSERT(log_matches(&w, v, len));
    clerk_free(v);

    /* To the node that already leads: a no-op, no election. */
    CU_ASSERT_EQUAL(clerk_transfer_leader(ck, cl.nodes[target].id, NULL),
                    CLERK_OK);
    CU_ASSERT(strstr(clerk_errmsg(ck), "already the leader") != NULL);
    uint64_t term2;
    CU_ASSERT_EQUAL(wait_agreed(ALL_NODES, target, 15000, &term2), target);
    CU_ASSERT_EQUAL(term2, term1);
    clerk_close(ck);

    /* kvctl: back to the first leader, then let the leader pick. */
    char out[4096], args[64], want[64];
    snprintf(args, sizeof args, "transfer-leader %llu",
             (unsigned long long)cl.nodes[leader].id);
    snprintf(want, sizeof want, "OK leader=%llu\n",
             (unsigned long long)cl.nodes[leader].id);
    CU_ASSERT_EQUAL(kvctl(args, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, want);
    CU_ASSERT_EQUAL(wait_agreed(ALL_NODES, leader, 10000, NULL), leader);
    CU_ASSERT_EQUAL(kvctl("-w json transfer-leader auto", out, sizeof out), 0);
    const char *p = strstr(out, "{\"ok\":true,\"leader\":");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    unsigned long long picked = strtoull(p + 20, NULL, 10);
    CU_ASSERT(picked != 0 && picked != cl.nodes[leader].id);
    int picked_i = wait_agreed(ALL_NODES, -1, 10000, NULL);
    CU_ASSERT(picked_i >= 0 && cl.nodes[picked_i].id == picked);
    CU_ASSERT_FALSE(h_sanitizer_reports(&cl));
}

static void test_transfer_leader_to_unknown_node_is_refused(void)
{
    need_cluster();
    uint64_t term0, term1;
    int leader = wait_agreed(ALL_NODES, -1, 10000, &term0);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_clerk(ALL_NODES, 5000, 0);
    CU_ASSERT_EQUAL(clerk_transfer_leader(ck, 99, NULL), CLERK_BAD_REQUEST);
    CU_ASSERT(strstr(clerk_errmsg(ck), "node 99 is not in the cluster") !=
              NULL);
    clerk_close(ck);

    char out[4096];
    CU_ASSERT_EQUAL(kvctl("transfer-leader 99", out, sizeof out), 5);
    CU_ASSERT(strstr(out, "BAD_REQUEST") != NULL);
    CU_ASSERT(strstr(out, "not in the cluster") != NULL);
    CU_ASSERT_EQUAL(kvctl("-w json transfer-leader 99", out, sizeof out), 5);
    CU_ASSERT(strncmp(out, "{\"ok\":false,\"error\":\"BAD_REQUEST\"", 33) == 0);
    /* Refused by kvctl itself. */
    static const char *const usage[] = {
        "transfer-leader",   "transfer-leader x",   "transfer-leader -1",
        "transfer-leader 0", "transfer-leader 1 2",
    };
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        int rv = kvctl(usage[i], out, sizeof out);
        if (rv != 2) {
            fprintf(stderr, "kvctl %s: exit %d: %s", usage[i], rv, out);
        }
        CU_ASSERT_EQUAL(rv, 2);
        CU_ASSERT(strstr(out, "USAGE") != NULL);
    }
    /* Nothing moved. */
    CU_ASSERT_EQUAL(wait_agreed(ALL_NODES, leader, 15000, &term1), leader);
    CU_ASSERT_EQUAL(term1, term0);
    CU_ASSERT_FALSE(h_sanitizer_reports(&cl));
}

/* The raw answer of a follower to AdminService.TransferLeader. */
struct raw_out
{
    bool replied;
    int error;
    uint64_t leader;
    char leader_addr[300];
};

static void on_raw(const Raftkv__TransferLeaderReply *r, void *data)
{
    struct raw_out *o = data;
    if (r) {
        o->replied = true;
        o->error = r->error;
        o->leader = r->leader_id;
        snprintf(o->leader_addr, sizeof o->leader_addr, "%s",
                 r->leader_address);
    }
}

static void test_transfer_leader_from_follower_is_redirected(void)
{
    need_cluster();
    int leader = wait_agreed(ALL_NODES, -1, 10000, NULL);
    CU_ASSERT_FATAL(leader >= 0);
    int follower = (leader + 1) % 3, other = (leader + 2) % 3;

    /* The follower names the leader... */
    struct rpc_channel_options o = {.deadline_ms = 5000};
    struct rpc_channel *ch = rpc_channel_new_blocking(
        cl.nodes[follower].host, cl.nodes[follower].port, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    ProtobufCService *svc =
        rpc_channel_service(ch, &raftkv__admin_service__descriptor);
    Raftkv__TransferLeaderArgs a = RAFTKV__TRANSFER_LEADER_ARGS__INIT;
    a.target_id = cl.nodes[other].id;
    struct raw_out raw = {0};
    raftkv__admin_service__transfer_leader(svc, &a, on_raw, &raw);
    rpc_channel_free(ch);
    char addr[64];
    snprintf(addr, sizeof addr, "%s:%u", cl.nodes[leader].host,
             cl.nodes[leader].port);
    CU_ASSERT(raw.replied);
    CU_ASSERT_EQUAL(raw.error, RAFTKV__ADMIN_ERROR__ADMIN_NOT_LEADER);
    CU_ASSERT_EQUAL(raw.leader, cl.nodes[leader].id);
    CU_ASSERT_STRING_EQUAL(raw.leader_addr, addr);

    /* ...and a clerk that knows only the follower follows the hint. */
    struct clerk *ck = open_clerk(1u << follower, 10000, 0);
    uint64_t now_leader = 0;
    int err = clerk_transfer_leader(ck, cl.nodes[other].id, &now_leader);
    if (err != CLERK_OK) {
        fprintf(stderr, "transfer: %s: %s\n", clerk_error_code(err),
                clerk_errmsg(ck));
    }
    CU_ASSERT_EQUAL(err, CLERK_OK);
    CU_ASSERT_EQUAL(now_leader, cl.nodes[other].id);
    /* It now sends writes to the new leader. */
    CU_ASSERT_EQUAL(clerk_put(ck, "redirected", 10, "y", 1), CLERK_OK);
    clerk_close(ck);
    CU_ASSERT_EQUAL(wait_agreed(ALL_NODES, other, 10000, NULL), other);
    CU_ASSERT_FALSE(h_sanitizer_reports(&cl));
}

static void test_transfer_leader_to_stopped_node_times_out(void)
{
    need_cluster();
    uint64_t term0, term1;
    int leader = wait_agreed(ALL_NODES, -1, 10000, &term0);
    CU_ASSERT_FATAL(leader >= 0);
    int target = (leader + 1) % 3, third = (leader + 2) % 3;
    uint32_t live = (1u << leader) | (1u << third);
    h_node_pause(&cl, (size_t)target, true);

    /* The leader gives up after about an election timeout (700 ms by
     * default), long before the clerk's deadline: the bound is loose, it
     * only tells the two apart. */
    struct clerk *ck = open_clerk(ALL_NODES, 30000, 500);
    uint64_t start = h_now_ms(), now_leader = 0;
    int err = clerk_transfer_leader(ck, cl.nodes[target].id, &now_leader);
    uint64_t took = h_now_ms() - start;
    CU_ASSERT_EQUAL(err, CLERK_TIMEOUT);
    CU_ASSERT(strstr(clerk_errmsg(ck), "did not take over") != NULL);
    CU_ASSERT(strstr(clerk_errmsg(ck), "stays the leader") != NULL);
    CU_ASSERT_EQUAL(now_leader, cl.nodes[leader].id);
    CU_ASSERT(took < 15000);

    /* The old leader kept its term and takes writes again at once. */
    CU_ASSERT_EQUAL(wait_agreed(live, leader, 15000, &term1), leader);
    CU_ASSERT_EQUAL(term1, term0);
    CU_ASSERT_EQUAL(clerk_put(ck, "kept", 4, "z", 1), CLERK_OK);

    char out[4096], args[64];
    snprintf(args, sizeof args, "--timeout 10 transfer-leader %llu",
             (unsigned long long)cl.nodes[target].id);
    CU_ASSERT_EQUAL(kvctl(args, out, sizeof out), 3);
    CU_ASSERT(strstr(out, "kvctl: TIMEOUT: ") != NULL);
    CU_ASSERT_EQUAL(clerk_put(ck, "kept", 4, "z2", 2), CLERK_OK);

    /* Back: one leader everywhere, the target caught up, writes work. */
    h_node_pause(&cl, (size_t)target, false);
    CU_ASSERT(wait_agreed(ALL_NODES, -1, 15000, NULL) >= 0);
    CU_ASSERT_EQUAL(clerk_put(ck, "kept", 4, "z3", 2), CLERK_OK);
    void *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(clerk_get(ck, "kept", 4, &v, &len), CLERK_OK);
    CU_ASSERT(v && len == 2 && memcmp(v, "z3", 2) == 0);
    clerk_free(v);
    clerk_close(ck);
    CU_ASSERT_FALSE(h_sanitizer_reports(&cl));
}

/* The value of "key=N" in the line of out that contains `line_has`. */
static bool field_in_line(const char *out,
                          const char *line_has,
                          const char *key,
                          unsigned long long *value)
{
    const char *l = strstr(out, line_has);
    if (!l) {
        return false;
    }
    while (l > out && l[-1] != '\n') {
        l--;
    }
    const char *end = strchr(l, '\n');
    const char *k = strstr(l, key);
    if (!k || (end && k > end)) {
        return false;
    }
    *value = strtoull(k + strlen(key), NULL, 10);
    return true;
}

static void test_status_shows_how_far_a_follower_trails(void)
{
    need_cluster();
    enum { N = 40 };
    int leader = wait_agreed(ALL_NODES, -1, 10000, NULL);
    CU_ASSERT_FATAL(leader >= 0);
    int f = (leader + 1) % 3;
    h_node_pause(&cl, (size_t)f, true);

    struct clerk *ck = open_clerk(ALL_NODES, 10000, 500);
    for (int i = 0; i < N; i++) {
        char key[16];
        int len = snprintf(key, sizeof key, "lag%02d", i);
        CU_ASSERT_EQUAL(clerk_put(ck, key, (size_t)len, "v", 1), CLERK_OK);
    }
    struct clerk_node_status *st;
    size_t n;
    /* The leader notices the silence after a heartbeat round or two. */
    uint64_t deadline = h_now_ms() + 10000;
    for (;;) {
        CU_ASSERT_FATAL(clerk_status(ck, &st, &n) == CLERK_OK && n == 3);
        if (st[f].ack_age_ms > 0 || h_now_ms() > deadline) {
            break;
        }
        clerk_free(st);
        h_sleep_ms(100);
    }
    /* The stopped node does not answer: no applied lag, never lag 0, but
     * the leader's view says how far behind its log is. */
    CU_ASSERT_FALSE(st[f].reachable);
    CU_ASSERT_FALSE(st[f].lag_known);
    CU_ASSERT(st[f].progress_known);
    CU_ASSERT_EQUAL(st[f].id, cl.nodes[f].id);
    CU_ASSERT(st[f].replication_lag >= N);
    CU_ASSERT(st[f].ack_age_ms > 0);
    CU_ASSERT(st[leader].lag_known && st[leader].applied_lag == 0);
    CU_ASSERT(st[leader].progress_known && st[leader].replication_lag == 0);
    clerk_free(st);

    char out[8192], addr[64];
    snprintf(addr, sizeof addr, "address=%s:%u ", cl.nodes[f].host,
             cl.nodes[f].port);
    CU_ASSERT_EQUAL(kvctl("status", out, sizeof out), 0);
    unsigned long long repl = 0, lag = 0;
    CU_ASSERT(field_in_line(out, addr, " repl_lag=", &repl) && repl >= N);
    CU_ASSERT(strstr(out, "reachable=false") != NULL);
    CU_ASSERT_FALSE(field_in_line(out, addr, " lag=", &lag));
    CU_ASSERT_EQUAL(kvctl("-w table status", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "REPL_LAG") != NULL);
    CU_ASSERT(strstr(out, "unreachable: ") != NULL);
    CU_ASSERT(strstr(out, "(leader: REPL_LAG ") != NULL);
    CU_ASSERT_EQUAL(kvctl("-w json status", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "\"reachable\":false") != NULL);
    CU_ASSERT(strstr(out, "\"lag\":null") != NULL);

    /* Resumed, it catches up to no lag at all. */
    h_node_pause(&cl, (size_t)f, false);
    bool caught_up = false;
    deadline = h_now_ms() + 20000;
    while (!caught_up && h_now_ms() < deadline) {
        if (clerk_status(ck, &st, &n) == CLERK_OK) {
            caught_up = true;
            for (size_t i = 0; i < n; i++) {
                caught_up = caught_up && st[i].reachable && st[i].lag_known &&
                            st[i].applied_lag == 0 && st[i].progress_known &&
                            st[i].replication_lag == 0;
            }
            clerk_free(st);
        }
        if (!caught_up) {
            h_sleep_ms(100);
        }
    }
    CU_ASSERT(caught_up);
    CU_ASSERT_EQUAL(kvctl("-w json status", out, sizeof out), 0);
    size_t zeros = 0;
    for (const char *p = strstr(out, "\"lag\":0,"); p;
         p = strstr(p + 1, "\"lag\":0,")) {
        zeros++;
    }
    CU_ASSERT_EQUAL(zeros, 3);
    CU_ASSERT_EQUAL(kvctl("status", out, sizeof out), 0);
    CU_ASSERT(field_in_line(out, addr, " lag=", &lag) && lag == 0);
    CU_ASSERT(field_in_line(out, addr, " repl_lag=", &repl) && repl == 0);
    clerk_close(ck);
    CU_ASSERT_FALSE(h_sanitizer_reports(&cl));
}

/* One TransferLeader call to one node, on a thread of its own. */
struct raw_call
{
    size_t node;        /* whom to ask */
    uint64_t target;    /* target id */
    struct raw_out out; /* what came back */
    char message[300];  /* its message, or why nothing came */
};

static void on_raw_message(const Raftkv__TransferLeaderReply *r, void *data)
{
    struct raw_call *c = data;
    on_raw(r, &c->out);
    snprintf(c->message, sizeof c->message, "%s",
             r ? r->message : rpc_last_error());
}

static void *raw_call_main(void *arg)
{
    struct raw_call *c = arg;
    struct rpc_channel_options o = {.deadline_ms = 10000};
    struct rpc_channel *ch = rpc_channel_new_blocking(
        cl.nodes[c->node].host, cl.nodes[c->node].port, &o);
    if (!ch) {
        return NULL;
    }
    Raftkv__TransferLeaderArgs a = RAFTKV__TRANSFER_LEADER_ARGS__INIT;
    a.target_id = c->target;
    raftkv__admin_service__transfer_leader(
        rpc_channel_service(ch, &raftkv__admin_service__descriptor), &a,
        on_raw_message, c);
    rpc_channel_free(ch);
    return NULL;
}

static void test_transfer_leader_waiting_at_shutdown_is_answered(void)
{
    need_cluster();
    int leader = wait_agreed(ALL_NODES, -1, 10000, NULL);
    CU_ASSERT_FATAL(leader >= 0);
    int target = (leader + 1) % 3;
    h_node_pause(&cl, (size_t)target, true);
    /* A transfer that cannot finish is waiting when the leader stops. */
    struct raw_call call = {.node = (size_t)leader,
                            .target = cl.nodes[target].id};
    const char *begun = "handing leadership";
    size_t before = h_log_count(&cl, (size_t)leader, begun);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, raw_call_main, &call) == 0);
    uint64_t until = h_now_ms() + 15000;
    while (h_log_count(&cl, (size_t)leader, begun) == before &&
           h_now_ms() < until) {
        h_sleep_ms(10);
    }
    CU_ASSERT(h_log_count(&cl, (size_t)leader, begun) > before);
    /* Stops cleanly (in sanitizer builds: with nothing leaked). */
    CU_ASSERT_EQUAL(h_node_term(&cl, (size_t)leader), 0);
    pthread_join(th, NULL);
    /* The caller heard why, before the connection closed. */
    CU_ASSERT(call.out.replied);
    CU_ASSERT_EQUAL(call.out.error, RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE);
    CU_ASSERT(strstr(call.message, "shutting down") != NULL);
    h_node_pause(&cl, (size_t)target, false);
    CU_ASSERT_FATAL(h_node_start(&cl, (size_t)leader) == 0);
    CU_ASSERT(wait_agreed(ALL_NODES, -1, 15000, NULL) >= 0);
    CU_ASSERT_FALSE(h_sanitizer_reports(&cl));
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static CU_TestInfo tests[] = {
        {"test_transfer_leader_moves_the_leader",
         test_transfer_leader_moves_the_leader},
        {"test_transfer_leader_to_unknown_node_is_refused",
         test_transfer_leader_to_unknown_node_is_refused},
        {"test_transfer_leader_from_follower_is_redirected",
         test_transfer_leader_from_follower_is_redirected},
        {"test_transfer_leader_to_stopped_node_times_out",
         test_transfer_leader_to_stopped_node_times_out},
        {"test_status_shows_how_far_a_follower_trails",
         test_status_shows_how_far_a_follower_trails},
        {"test_transfer_leader_waiting_at_shutdown_is_answered",
         test_transfer_leader_waiting_at_shutdown_is_answered},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"admin", NULL, suite_teardown, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
