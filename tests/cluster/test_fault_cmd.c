/* test_fault_cmd.c: kvctl fault, partition and heal, and clerk_fault. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <CUnit/Basic.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

#define ALL_NODES 0x7u /* bit i: node i (0-based) of a three-node cluster */

/* Run kvctl against every node of c; capture standard output and standard
 * error together; return its exit status. */
static int kvctl(const struct h_cluster *c,
                 const char *args,
                 char *out,
                 size_t cap)
{
    char eps[512], cmd[2048];
    h_endpoints(c, eps, sizeof eps);
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

static struct clerk *open_clerk(const struct h_cluster *c,
                                uint32_t which,
                                unsigned deadline_ms,
                                unsigned attempt_ms)
{
    char eps[512];
    h_endpoints_of(c, which, 0, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = deadline_ms,
                              .attempt_ms = attempt_ms};
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    return ck;
}

/* Does `kvctl fault all show` list no rule on any node? */
static bool no_rules_anywhere(struct h_cluster *c)
{
    char out[4096], want[64];
    int rv = kvctl(c, "fault all show", out, sizeof out);
    bool ok = rv == 0 && strstr(out, "target=") == NULL;
    for (size_t i = 0; i < c->n; i++) {
        snprintf(want, sizeof want, "node=%llu no faults\n",
                 (unsigned long long)c->nodes[i].id);
        ok = ok && strstr(out, want) != NULL;
    }
    if (!ok) {
        fprintf(stderr, "fault all show: exit %d:\n%s", rv, out);
    }
    return ok;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Sum of every "name":N in a JSON text. */
static uint64_t sum_json_counts(const char *json, const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", name);
    uint64_t sum = 0;
    for (const char *p = strstr(json, key); p; p = strstr(p + 1, key)) {
        sum += strtoull(p + strlen(key), NULL, 10);
    }
    return sum;
}

/* ------------------------------------------------- fault injection off */

static struct h_cluster off; /* started without --enable-fault-injection */

static int off_setup(void)
{
    if (h_cluster_start(&off, 3, NULL) != 0 || h_find_leader(&off, 10000) < 0) {
        off.keep = true;
        h_cluster_destroy(&off);
        return 1;
    }
    return 0;
}

static int off_teardown(void)
{
    off.keep = CU_get_number_of_failures() > 0;
    return h_cluster_destroy(&off) == 0 ? 0 : 1;
}

static void test_fault_cmd_refused_without_the_flag(void)
{
    char out[4096];
    CU_ASSERT_EQUAL(kvctl(&off, "fault 1 show", out, sizeof out), 5);
    CU_ASSERT(strstr(out, "DISABLED") != NULL);
    CU_ASSERT(strstr(out, "--enable-fault-injection") != NULL);
    /* In JSON: one error object, not an "ok" answer wrapping it. */
    CU_ASSERT_EQUAL(kvctl(&off, "-w json fault 1 show", out, sizeof out), 5);
    CU_ASSERT(starts_with(out, "{\"ok\":false,\"error\":\"DISABLED\""));
    CU_ASSERT_EQUAL(kvctl(&off, "-w json partition 1 2,3", out, sizeof out), 5);
    CU_ASSERT(starts_with(out, "{\"ok\":false,\"error\":\"DISABLED\""));
    CU_ASSERT_EQUAL(kvctl(&off, "fault all clients cut", out, sizeof out), 5);
    CU_ASSERT_EQUAL(kvctl(&off, "partition 1 2,3", out, sizeof out), 5);
    CU_ASSERT(strstr(out, "DISABLED") != NULL);
    CU_ASSERT_EQUAL(kvctl(&off, "heal", out, sizeof out), 5);

    struct clerk *ck = open_clerk(&off, ALL_NODES, 10000, 0);
    struct clerk_fault *now = NULL;
    size_t n_now = 99;
    for (size_t i = 0; i < off.n; i++) {
        CU_ASSERT_EQUAL(clerk_fault(ck, i, false, NULL, 0, 0, &now, &n_now),
                        CLERK_DISABLED);
        CU_ASSERT(strstr(clerk_errmsg(ck), "--enable-fault-injection") != NULL);
        CU_ASSERT_PTR_NULL(now);
    }
    struct clerk_fault cut = {.target = 2, .cut = true};
    CU_ASSERT_EQUAL(clerk_fault(ck, 0, true, &cut, 1, 0, NULL, NULL),
                    CLERK_DISABLED);
    /* Nothing was injected: the cluster serves as before. */
    CU_ASSERT_EQUAL(clerk_put(ck, "k", 1, "v", 1), CLERK_OK);
    clerk_close(ck);
    CU_ASSERT_FALSE(h_sanitizer_reports(&off));
}

/* -------------------------------------------------- fault injection on */

static struct h_cluster on; /* started with --enable-fault-injection */

static int on_setup(void)
{
    if (h_cluster_start(&on, 3, "--enable-fault-injection") != 0 ||
        h_find_leader(&on, 10000) < 0) {
        on.keep = true;
        h_cluster_destroy(&on);
        return 1;
    }
    return 0;
}

static int on_teardown(void)
{
    on.keep = CU_get_number_of_failures() > 0;
    return h_cluster_destroy(&on) == 0 ? 0 : 1;
}

static void test_fault_cmd_bad_input_changes_nothing(void)
{
    char out[4096];
    CU_ASSERT_FATAL(no_rules_anywhere(&on));
    /* Refused by the node: it has no peer 99. */
    CU_ASSERT_EQUAL(kvctl(&on, "fault 1 99 cut", out, sizeof out), 5);
    CU_ASSERT(strstr(out, "BAD_REQUEST") != NULL);
    CU_ASSERT(strstr(out, "99") != NULL);
    CU_ASSERT_EQUAL(kvctl(&on, "-w json fault 1 99 cut", out, sizeof out), 5);
    CU_ASSERT(starts_with(out, "{\"ok\":false,\"error\":\"BAD_REQUEST\""));
    /* Refused by kvctl before anything is sent. */
    static const char *const usage[] = {
        "fault 1 2 drop-request=2",
        "fault 1 2 drop-reply=-0.5",
        "fault 1 2 duplicate=nan",
        "fault 1 2 delay=5-1",
        "fault 1 2 delay=70000",
        "fault 1 2 reorder=0.5:10-5",
        "fault 1 2 frobnicate",
        "fault 1 2 drop-request=",
        "fault 1 2",
        "fault x show",
        "fault 1 show extra",
        "fault 1 0 cut",
    };
    for (size_t i = 0; i < sizeof usage / sizeof usage[0]; i++) {
        int rv = kvctl(&on, usage[i], out, sizeof out);
        if (rv != 2 || !strstr(out, "USAGE")) {
            fprintf(stderr, "kvctl %s: exit %d: %s", usage[i], rv, out);
        }
        CU_ASSERT_EQUAL(rv, 2);
        CU_ASSERT(strstr(out, "USAGE") != NULL);
    }

    /* The node checks every rule before it changes anything. */
    struct clerk *ck = open_clerk(&on, ALL_NODES, 10000, 0);
    struct clerk_fault mixed[2] = {{.target = 2, .cut = true},
                                   {.target = 99, .cut = true}};
    CU_ASSERT_EQUAL(clerk_fault(ck, 0, false, mixed, 2, 0, NULL, NULL),
                    CLERK_BAD_REQUEST);
    CU_ASSERT(strstr(clerk_errmsg(ck), "99") != NULL);
    struct clerk_fault self = {.target = 1, .cut = true};
    CU_ASSERT_EQUAL(clerk_fault(ck, 0, false, &self, 1, 0, NULL, NULL),
                    CLERK_BAD_REQUEST);
    struct clerk_fault bad_spec[] = {
        {.target = 2, .drop_request = 2},
        {.target = CLERK_FAULT_CLIENTS, .drop_reply = NAN},
        {.target = 3, .delay_min_ms = 5, .delay_max_ms = 1},
        {.target = 3, .reorder = 1, .reorder_max_ms = 60001},
    };
    for (size_t i = 0; i < sizeof bad_spec / sizeof bad_spec[0]; i++) {
        struct clerk_fault rules[2] = {{.target = 3, .cut = true}, bad_spec[i]};
        CU_ASSERT_EQUAL(clerk_fault(ck, 0, false, rules, 2, 0, NULL, NULL),
                        CLERK_BAD_REQUEST);
    }
    CU_ASSERT_EQUAL(clerk_fault(ck, 99, false, NULL, 0, 0, NULL, NULL),
                    CLERK_INVALID);
    for (size_t i = 0; i < on.n; i++) {
        struct clerk_fault *now = NULL;
        size_t n_now = 99;
        CU_ASSERT_EQUAL(clerk_fault(ck, i, false, NULL, 0, 0, &now, &n_now),
                        CLERK_OK);
        CU_ASSERT_EQUAL(n_now, 0);
        clerk_free(now);
    }
    clerk_close(ck);
    CU_ASSERT(no_rules_anywhere(&on));
    CU_ASSERT_FALSE(h_sanitizer_reports(&on));
}

/* The leader every reachable node of st agrees on, with its term, or -1. */
static int agreed_leader(const struct clerk_node_status *st,
                         size_t n,
                         uint32_t which,
                         uint64_t *term)
{
    uint64_t leader = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(which & (1u << i))) {
            continue;
        }
        if (!st[i].reachable || st[i].leader == 0 ||
            (leader && (st[i].leader != leader || st[i].term != *term))) {
            return -1;
        }
        leader = st[i].leader;
        *term = st[i].term;
    }
    for (size_t i = 0; i < n; i++) {
        if ((which & (1u << i)) && st[i].id == leader &&
            !strcmp(st[i].role, "leader")) {
            return (int)i;
        }
    }
    return -1;
}

static void test_fault_cmd_partition_then_heal(void)
{
    char out[8192], args[64];
    struct clerk *all = open_clerk(&on, ALL_NODES, 10000, 0);
    int a = h_find_leader(&on, 10000);
    CU_ASSERT_FATAL(a >= 0);
    struct clerk_node_status *st = NULL;
    size_t n = 0;
    CU_ASSERT_FATAL(clerk_status(all, &st, &n) == CLERK_OK);
    CU_ASSERT_FATAL(n == 3);
    uint64_t old_term = st[a].term;
    clerk_free(st);
    uint32_t majority = ALL_NODES & ~(1u << a);
    int b = a == 0 ? 1 : 0, c = a == 2 ? 1 : 2;
    snprintf(args, sizeof args, "partition %llu %llu,%llu",
             (unsigned long long)on.nodes[a].id,
             (unsigned long long)on.nodes[b].id,
             (unsigned long long)on.nodes[c].id);
    CU_ASSERT_EQUAL_FATAL(kvctl(&on, args, out, sizeof out), 0);
    /* The old leader's links to both others are cut, both ways. */
    CU_ASSERT_EQUAL(kvctl(&on, "fault all show", out, sizeof out), 0);
    char want[64];
    int cuts[3][2] = {{a, b}, {a, c}, {b, a}};
    for (int i = 0; i < 3; i++) {
        snprintf(want, sizeof want, "node=%llu target=%llu cut",
                 (unsigned long long)on.nodes[cuts[i][0]].id,
                 (unsigned long long)on.nodes[cuts[i][1]].id);
        CU_ASSERT(strstr(out, want) != NULL);
    }
    snprintf(want, sizeof want, "node=%llu target=%llu",
             (unsigned long long)on.nodes[b].id,
             (unsigned long long)on.nodes[c].id);
    CU_ASSERT(strstr(out, want) == NULL); /* the majority stays linked */

    /* The majority elects a new leader within a few seconds. */
    int leader = -1;
    uint64_t term = 0;
    uint64_t deadline = h_now_ms() + 10000;
    while (leader < 0 && h_now_ms() < deadline) {
        if (clerk_status(all, &st, &n) == CLERK_OK) {
            leader = agreed_leader(st, n, majority, &term);
            clerk_free(st);
        }
        if (leader < 0) {
            h_sleep_ms(100);
        }
    }
    CU_ASSERT_FATAL(leader >= 0);
    CU_ASSERT(leader != a);
    CU_ASSERT(term > old_term);
    CU_ASSERT_EQUAL(kvctl(&on, "status", out, sizeof out), 0);

    /* It takes writes through a clerk that knows only the majority. */
    struct clerk *maj = open_clerk(&on, majority, 10000, 0);
    CU_ASSERT_EQUAL(clerk_put(maj, "part", 4, "v1", 2), CLERK_OK);
    /* The old leader cannot commit anything... */
    struct clerk *old = open_clerk(&on, 1u << a, 1000, 0);
    CU_ASSERT_NOT_EQUAL(clerk_put(old, "part", 4, "stale", 5), CLERK_OK);
    clerk_close(old);
    /* ...and knows no leader, or only itself in an older term. */
    CU_ASSERT_FATAL(clerk_status(all, &st, &n) == CLERK_OK);
    CU_ASSERT(st[a].reachable);
    CU_ASSERT(st[a].leader == 0 || st[a].term < term);
    CU_ASSERT(st[a].leader != on.nodes[leader].id);
    uint64_t put_index = st[leader].commit_index;
    clerk_free(st);

    /* Heal: one leader and term everywhere, the old leader caught up. */
    CU_ASSERT_EQUAL(kvctl(&on, "heal", out, sizeof out), 0);
    CU_ASSERT(no_rules_anywhere(&on));
    bool converged = false;
    deadline = h_now_ms() + 15000;
    while (!converged && h_now_ms() < deadline) {
        if (clerk_status(all, &st, &n) == CLERK_OK) {
            uint64_t t = 0;
            converged = agreed_leader(st, n, ALL_NODES, &t) >= 0 &&
                        st[0].applied_index == st[1].applied_index &&
                        st[1].applied_index == st[2].applied_index &&
                        st[0].applied_index >= put_index;
            clerk_free(st);
        }
        if (!converged) {
            h_sleep_ms(100);
        }
    }
    CU_ASSERT(converged);
    void *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(clerk_get(all, "part", 4, &v, &len), CLERK_OK);
    CU_ASSERT(len == 2 && v && memcmp(v, "v1", 2) == 0);
    clerk_free(v);
    /* The old leader serves the value from its own state too. */
    struct clerk *back = open_clerk(&on, 1u << a, 5000, 0);
    clerk_set_read_mode(back, CLERK_READ_STALE);
    v = NULL;
    CU_ASSERT_EQUAL(clerk_get(back, "part", 4, &v, &len), CLERK_OK);
    CU_ASSERT(len == 2 && v && memcmp(v, "v1", 2) == 0);
    clerk_free(v);
    clerk_close(back);
    clerk_close(maj);
    clerk_close(all);
    CU_ASSERT_FALSE(h_sanitizer_reports(&on));
}

static void test_fault_cmd_unreliable_clients_get_exactly_once(void)
{
    enum { N = 50 };
    char out[8192];
    CU_ASSERT_EQUAL_FATAL(
        kvctl(&on, "fault all clients unreliable", out, sizeof out), 0);
    CU_ASSERT(strstr(out,
                     "target=clients drop-request=0.1 drop-reply=0.1 "
                     "delay=0-27") != NULL);
    /* The seed of the random choices is printed first, and each node logs
     * its own; seed=N picks it. */
    unsigned long long seed = 0;
    CU_ASSERT(sscanf(out, "seed=%llu\n", &seed) == 1 && seed != 0);
    CU_ASSERT(h_log_contains(&on, 0, "fault injection: calls from clients:"));
    CU_ASSERT(h_log_contains(&on, 0, "(seed "));
    CU_ASSERT_EQUAL(
        kvctl(&on, "fault all clients unreliable seed=4242", out, sizeof out),
        0);
    CU_ASSERT(starts_with(out, "seed=4242\n"));
    CU_ASSERT_EQUAL(kvctl(&on, "-w json fault all clients seed=77 unreliable",
                          out, sizeof out),
                    0);
    CU_ASSERT(starts_with(out, "{\"ok\":true,\"seed\":77,\"nodes\":["));
    CU_ASSERT_EQUAL(kvctl(&on, "fault all clients cut seed=0", out, sizeof out),
                    2);
    CU_ASSERT_EQUAL(kvctl(&on, "fault all clients cut seed=x", out, sizeof out),
                    2);
    CU_ASSERT_EQUAL(kvctl(&on, "fault all show", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "seed=") == NULL); /* nothing random was set */

    /* A short attempt time: a lost request or reply costs one attempt. */
    struct clerk *ck = open_clerk(&on, ALL_NODES, 10000, 300);
    char expect[N * 8 + 1] = "";
    size_t expect_len = 0;
    for (int i = 0; i < N; i++) {
        char tok[16];
        int len = snprintf(tok, sizeof tok, "t%02d;", i);
        int err = clerk_append(ck, "once", 4, tok, (size_t)len);
        if (err != CLERK_OK) {
            fprintf(stderr, "append %d: %s (%s)\n", i, clerk_error_code(err),
                    clerk_errmsg(ck));
        }
        CU_ASSERT_EQUAL(err, CLERK_OK);
        memcpy(expect + expect_len, tok, (size_t)len);
        expect_len += (size_t)len;
    }
    void *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(clerk_get(ck, "once", 4, &v, &len), CLERK_OK);
    /* Every token once, in order: retried writes were not applied twice. */
    CU_ASSERT(v && len == expect_len && memcmp(v, expect, len) == 0);
    if (v && (len != expect_len || memcmp(v, expect, len) != 0)) {
        fprintf(stderr, "once = '%.*s'\n", (int)len, (char *)v);
    }
    clerk_free(v);
    clerk_close(ck);

    /* The nodes counted what they lost. */
    CU_ASSERT_EQUAL(kvctl(&on, "-w json fault all show", out, sizeof out), 0);
    uint64_t lost = sum_json_counts(out, "dropped_requests") +
                    sum_json_counts(out, "dropped_replies");
    CU_ASSERT(lost > 0);
    CU_ASSERT_EQUAL(kvctl(&on, "-w json fault 1 show", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "{\"target\":0,") != NULL);
    CU_ASSERT(strstr(out, "\"drop_request\":0.1,") != NULL);
    CU_ASSERT(strstr(out, "\"dropped_requests\":") != NULL);

    CU_ASSERT_EQUAL(kvctl(&on, "heal", out, sizeof out), 0);
    CU_ASSERT(no_rules_anywhere(&on));
    CU_ASSERT_EQUAL(kvctl(&on, "-w json fault all show", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "\"rules\":[]") != NULL);
    CU_ASSERT(strstr(out, "dropped_requests") == NULL);
    CU_ASSERT_FALSE(h_sanitizer_reports(&on));
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static CU_TestInfo off_tests[] = {
        {"test_fault_cmd_refused_without_the_flag",
         test_fault_cmd_refused_without_the_flag},
        CU_TEST_INFO_NULL,
    };
    static CU_TestInfo on_tests[] = {
        {"test_fault_cmd_bad_input_changes_nothing",
         test_fault_cmd_bad_input_changes_nothing},
        {"test_fault_cmd_partition_then_heal",
         test_fault_cmd_partition_then_heal},
        {"test_fault_cmd_unreliable_clients_get_exactly_once",
         test_fault_cmd_unreliable_clients_get_exactly_once},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"fault_off", off_setup, off_teardown, NULL, NULL, off_tests},
        {"fault_on", on_setup, on_teardown, NULL, NULL, on_tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
