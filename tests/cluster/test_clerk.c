/* test_clerk.c: libclerk and kvctl against real clusters on loopback. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

#define FAILED_SINCE(before) (CU_get_number_of_failures() > (before))

static struct clerk *open_clerk(struct h_cluster *c, unsigned deadline_ms)
{
    char eps[512];
    h_endpoints(c, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = deadline_ms};
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    return ck;
}

static bool value_is(struct clerk *ck, const char *key, const char *want)
{
    void *v = NULL;
    size_t len = 0;
    int err = clerk_get(ck, key, strlen(key), &v, &len);
    bool ok =
        err == CLERK_OK && len == strlen(want) && memcmp(v, want, len) == 0;
    if (!ok) {
        fprintf(stderr, "get %s: %s (%s), want '%s'\n", key,
                clerk_error_code(err), clerk_errmsg(ck), want);
    }
    clerk_free(v);
    return ok;
}

static void test_clerk_all_operations_and_binary_values(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    struct clerk *ck = open_clerk(&c, 10000);
    CU_ASSERT_EQUAL(clerk_put(ck, "k", 1, "v1", 2), CLERK_OK);
    CU_ASSERT(value_is(ck, "k", "v1"));
    CU_ASSERT_EQUAL(clerk_append(ck, "k", 1, "+v2", 3), CLERK_OK);
    CU_ASSERT(value_is(ck, "k", "v1+v2"));
    CU_ASSERT_EQUAL(clerk_delete(ck, "k", 1), CLERK_OK);
    void *v = NULL;
    size_t len;
    CU_ASSERT_EQUAL(clerk_get(ck, "k", 1, &v, &len), CLERK_NOT_FOUND);
    CU_ASSERT_EQUAL(clerk_delete(ck, "k", 1), CLERK_NOT_FOUND);

    /* Compare and swap, with "must not exist" and with a value. */
    void *cur = (void *)1;
    size_t cur_len = 99;
    CU_ASSERT_EQUAL(clerk_cas(ck, "c", 1, NULL, 0, "a", 1, &cur, &cur_len),
                    CLERK_OK);
    CU_ASSERT_EQUAL(clerk_cas(ck, "c", 1, NULL, 0, "b", 1, &cur, &cur_len),
                    CLERK_CAS_MISMATCH);
    CU_ASSERT(cur_len == 1 && cur && memcmp(cur, "a", 1) == 0);
    clerk_free(cur);
    CU_ASSERT_EQUAL(clerk_cas(ck, "c", 1, "zz", 2, "b", 1, NULL, NULL),
                    CLERK_CAS_MISMATCH);
    CU_ASSERT_EQUAL(clerk_cas(ck, "c", 1, "a", 1, "b", 1, NULL, NULL),
                    CLERK_OK);
    CU_ASSERT(value_is(ck, "c", "b"));
    CU_ASSERT_EQUAL(clerk_cas(ck, "gone", 4, "x", 1, "y", 1, &cur, &cur_len),
                    CLERK_CAS_MISMATCH);
    CU_ASSERT_PTR_NULL(cur);

    /* Keys and values are bytes, NULs included. */
    unsigned char key[4] = {0, 1, 0xff, 'k'};
    unsigned char val[256];
    for (int i = 0; i < 256; i++) {
        val[i] = (unsigned char)i;
    }
    CU_ASSERT_EQUAL(clerk_put(ck, key, 4, val, 256), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_get(ck, key, 4, &v, &len), CLERK_OK);
    CU_ASSERT(len == 256 && memcmp(v, val, 256) == 0);
    clerk_free(v);
    CU_ASSERT_EQUAL(clerk_put(ck, "empty", 5, "", 0), CLERK_OK);
    CU_ASSERT(value_is(ck, "empty", ""));

    /* Bad input gets a clear error, not a crash. */
    CU_ASSERT_EQUAL(clerk_put(ck, "", 0, "x", 1), CLERK_BAD_REQUEST);
    static char longkey[600];
    memset(longkey, 'k', sizeof longkey);
    CU_ASSERT_EQUAL(clerk_put(ck, longkey, sizeof longkey, "x", 1),
                    CLERK_VALUE_TOO_LARGE);
    CU_ASSERT_EQUAL(clerk_get(ck, NULL, 3, &v, &len), CLERK_INVALID);
    struct clerk *bad;
    CU_ASSERT_EQUAL(clerk_open(&bad, "no-port-here", NULL), CLERK_INVALID);
    CU_ASSERT(strstr(clerk_open_error(), "no-port-here") != NULL);
    CU_ASSERT_EQUAL(clerk_open(&bad, "", NULL), CLERK_INVALID);

    /* Stale reads from any node. */
    clerk_set_read_mode(ck, CLERK_READ_STALE);
    bool seen = false;
    for (int t = 0; t < 50 && !seen; t++) {
        seen = value_is(ck, "c", "b");
    }
    CU_ASSERT(seen);

    /* Status: one leader, everyone agrees on it. */
    struct clerk_node_status *st;
    size_t n;
    CU_ASSERT_EQUAL(clerk_status(ck, &st, &n), CLERK_OK);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    int leaders = 0;
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT(st[i].reachable);
        leaders += !strcmp(st[i].role, "leader");
        CU_ASSERT_EQUAL(st[i].leader, st[0].leader);
    }
    CU_ASSERT_EQUAL(leaders, 1);
    clerk_free(st);
    clerk_close(ck);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* Writers sharing one handle; the leader is killed in the middle. */
struct shared_writer
{
    struct clerk *ck;
    int thread;
    const atomic_bool *stop; /* set: stop appending */
    int n;                   /* appends tried */
    int acked;               /* of them acknowledged */
    atomic_int done;         /* appends returned (read while running) */
    char *log;               /* appends acknowledged, in order */
    size_t log_len;
    uint64_t *call_ns; /* start and end of each append */
};

enum { MAX_APPENDS = 20000 };

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *shared_writer_main(void *arg)
{
    struct shared_writer *w = arg;
    char key[32], tok[32];
    snprintf(key, sizeof key, "appends-%d", w->thread);
    w->log = calloc(1, (size_t)MAX_APPENDS * 8 + 1);
    w->call_ns = calloc((size_t)MAX_APPENDS * 2, sizeof *w->call_ns);
    if (!w->log || !w->call_ns) {
        return NULL;
    }
    for (int i = 0; i < MAX_APPENDS && !atomic_load(w->stop); i++) {
        int len = snprintf(tok, sizeof tok, "%d,", i);
        w->n = i + 1;
        w->call_ns[2 * i] = now_ns();
        int err = clerk_append(w->ck, key, strlen(key), tok, (size_t)len);
        w->call_ns[2 * i + 1] = now_ns();
        if (err == CLERK_OK) {
            memcpy(w->log + w->log_len, tok, (size_t)len);
            w->log_len += (size_t)len;
            w->acked++;
        } else {
            fprintf(stderr, "append %s %d: %s: %s\n", key, i,
                    clerk_error_code(err), clerk_errmsg(w->ck));
        }
        atomic_store(&w->done, i + 1);
    }
    return NULL;
}

static int appends_done(struct shared_writer *w, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        k += atomic_load(&w[i].done);
    }
    return k;
}

/* Wait until the writers together make `more` appends beyond `from`. */
static bool appends_progress(struct shared_writer *w, int n, int from, int more)
{
    uint64_t end = h_now_ms() + 30000;
    while (appends_done(w, n) < from + more && h_now_ms() < end) {
        h_sleep_ms(5);
    }
    return appends_done(w, n) >= from + more;
}

/* The leader loses power while writers share one handle (the nodes run
 * on the disk-fault shim: what a node did not sync is lost), and so do
 * the followers, each at its next log write; they come back first, so
 * what they acknowledged must come from their own disks. */
static void test_clerk_leader_killed_mid_writes_every_ack_present_once(void)
{
    enum { THREADS = 4 };
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    struct h_start o = {.diskfault = true};
    CU_ASSERT_FATAL(h_cluster_start_with(&c, 3, NULL, &o) == 0);
    struct clerk *ck = open_clerk(&c, 20000);
    CU_ASSERT_FATAL(clerk_put(ck, "warm", 4, "up", 2) == CLERK_OK);
    static struct shared_writer w[THREADS];
    pthread_t th[THREADS];
    atomic_bool stop = false;
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct shared_writer){.ck = ck, .thread = i, .stop = &stop};
        pthread_create(&th[i], NULL, shared_writer_main, &w[i]);
    }
    /* The power cut while the writers are busy. */
    CU_ASSERT(appends_progress(w, THREADS, 0, 200));
    int leader = h_find_leader(&c, 5000);
    CU_ASSERT_FATAL(leader >= 0);
    int at_write = h_power_loss_at_next_log_write(&c, (size_t)leader, 5000);
    CU_ASSERT_EQUAL(at_write, 2);
    uint64_t before_kill = now_ns();
    h_node_power_loss(&c, (size_t)leader);
    uint64_t after_kill = now_ns();
    /* Writes go on through the failover, without the old leader, and
     * after it is back. */
    for (size_t i = 0; i < c.n; i++) {
        if (i != (size_t)leader) {
            CU_ASSERT(h_node_start(&c, i) == 0);
        }
    }
    CU_ASSERT(appends_progress(w, THREADS, appends_done(w, THREADS), 100));
    CU_ASSERT(h_node_start(&c, (size_t)leader) == 0);
    CU_ASSERT(appends_progress(w, THREADS, appends_done(w, THREADS), 100));
    atomic_store(&stop, true);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    int in_flight = 0, total = 0;
    for (int i = 0; i < THREADS; i++) {
        for (int k = 0; k < w[i].n; k++) {
            in_flight += w[i].call_ns[2 * k] < before_kill &&
                         w[i].call_ns[2 * k + 1] > after_kill;
        }
        total += w[i].n;
    }
    printf(
        "\n    %d appends by %d threads on one handle, %d in flight at "
        "the leader's power loss\n",
        total, THREADS, in_flight);
    CU_ASSERT(in_flight > 0); /* the power loss hit calls under way */
    for (int i = 0; i < THREADS; i++) {
        char key[32];
        snprintf(key, sizeof key, "appends-%d", i);
        void *v = NULL;
        size_t len = 0;
        CU_ASSERT_EQUAL(clerk_get(ck, key, strlen(key), &v, &len), CLERK_OK);
        /* Every write was acknowledged (the deadline outlasts the
         * failover) and appears exactly once, in order. */
        CU_ASSERT_EQUAL(w[i].acked, w[i].n);
        CU_ASSERT(v && len == w[i].log_len && memcmp(v, w[i].log, len) == 0);
        if (!(v && len == w[i].log_len && memcmp(v, w[i].log, len) == 0)) {
            fprintf(stderr, "%s holds %zu bytes, %zu acknowledged\n", key, len,
                    w[i].log_len);
        }
        clerk_free(v);
        free(w[i].log);
        free(w[i].call_ns);
    }
    clerk_close(ck);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

static void test_clerk_deadline_tells_unknown_from_not_applied(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    struct clerk *ck = open_clerk(&c, 10000);
    CU_ASSERT_FATAL(clerk_put(ck, "k", 1, "before", 6) == CLERK_OK);

    /* Every node paused: the write is sent and never answered. */
    for (size_t i = 0; i < c.n; i++) {
        h_node_pause(&c, i, true);
    }
    clerk_set_deadline(ck, 1500);
    uint64_t t0 = h_now_ms();
    int err = clerk_put(ck, "k", 1, "during", 6);
    uint64_t took = h_now_ms() - t0;
    CU_ASSERT_EQUAL(err, CLERK_UNKNOWN_OUTCOME);
    /* The deadline ends it: not before, and loosely bounded after. */
    CU_ASSERT(took >= 1400 && took < 7500);
    CU_ASSERT(strstr(clerk_errmsg(ck), "1500 ms") != NULL);
    void *v;
    size_t len;
    CU_ASSERT_EQUAL(clerk_get(ck, "k", 1, &v, &len), CLERK_TIMEOUT);
    /* A transaction that only reads is a read: nothing is unknown. */
    struct clerk_txn *t = clerk_txn_new();
    CU_ASSERT_FATAL(t != NULL);
    clerk_txn_compare_version(t, "k", 1, CLERK_CMP_GREATER, 0);
    clerk_txn_range(t, CLERK_TXN_THEN, "k", 1, NULL, 0, 0, 0);
    CU_ASSERT_EQUAL(clerk_txn_commit(ck, t, NULL), CLERK_TIMEOUT);
    clerk_txn_free(t);
    for (size_t i = 0; i < c.n; i++) {
        h_node_pause(&c, i, false);
    }
    clerk_set_deadline(ck, 0);
    /* After the unknown outcome the key holds one of the two values. */
    CU_ASSERT_EQUAL(clerk_get(ck, "k", 1, &v, &len), CLERK_OK);
    CU_ASSERT(len == 6 &&
              (memcmp(v, "before", 6) == 0 || memcmp(v, "during", 6) == 0));
    clerk_free(v);

    /* Every node down: connections are refused, nothing was sent. */
    for (size_t i = 0; i < c.n; i++) {
        h_node_kill(&c, i);
    }
    clerk_set_deadline(ck, 800);
    err = clerk_put(ck, "k", 1, "never", 5);
    CU_ASSERT_EQUAL(err, CLERK_UNAVAILABLE);
    CU_ASSERT(strstr(clerk_errmsg(ck), "refused") != NULL);
    for (size_t i = 0; i < c.n; i++) {
        CU_ASSERT(h_node_start(&c, i) == 0);
    }
    clerk_set_deadline(ck, 10000);
    v = NULL;
    len = 0;
    CU_ASSERT_EQUAL(clerk_get(ck, "k", 1, &v, &len), CLERK_OK);
    CU_ASSERT(v && !(len == 5 && memcmp(v, "never", 5) == 0));
    clerk_free(v);
    clerk_close(ck);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* A handle that was served keeps trying until its deadline when every
 * node is down (a restart of every node is ridden out), also in the calls
 * outside the op machine: membership, auth and watch; they fail at once
 * only for a handle that no server ever answered (test_kvctl). */
static void test_clerk_served_handle_admin_calls_wait_out_the_deadline(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    struct clerk *ck = open_clerk(&c, 10000);
    struct clerk_members *m = NULL;
    CU_ASSERT_FATAL(clerk_member_list(ck, &m) == CLERK_OK);
    clerk_members_free(m);
    for (size_t i = 0; i < c.n; i++) {
        h_node_kill(&c, i);
    }
    clerk_set_deadline(ck, 800);
    uint64_t t0 = h_now_ms();
    m = NULL;
    CU_ASSERT_EQUAL(clerk_member_list(ck, &m), CLERK_UNAVAILABLE);
    CU_ASSERT(h_now_ms() - t0 >= 700);
    CU_ASSERT(strstr(clerk_errmsg(ck), "no leader answered within 800 ms") !=
              NULL);
    bool on;
    uint64_t rev;
    t0 = h_now_ms();
    CU_ASSERT_EQUAL(clerk_auth_status(ck, &on, &rev), CLERK_UNAVAILABLE);
    CU_ASSERT(h_now_ms() - t0 >= 700);
    struct clerk_watch *w = NULL;
    t0 = h_now_ms();
    CU_ASSERT_EQUAL(clerk_watch_open(ck, "k", 1, NULL, 0, NULL, &w),
                    CLERK_UNAVAILABLE);
    CU_ASSERT(h_now_ms() - t0 >= 700);
    for (size_t i = 0; i < c.n; i++) {
        CU_ASSERT(h_node_start(&c, i) == 0);
    }
    clerk_set_deadline(ck, 10000);
    m = NULL;
    CU_ASSERT_EQUAL(clerk_member_list(ck, &m), CLERK_OK);
    clerk_members_free(m);
    clerk_close(ck);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* ------------------------------------------------------------ full disks */

/* A handle that lists node @first first (then the others). */
static struct clerk *open_clerk_from(struct h_cluster *c,
                                     size_t first,
                                     unsigned deadline_ms,
                                     unsigned attempt_ms)
{
    char eps[512];
    h_endpoints_of(c, UINT32_MAX, first, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = deadline_ms,
                              .attempt_ms = attempt_ms};
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    return ck;
}

/* Poll until a linearizable read of @key answers (20 s); its value, or ""
 * when absent, into @out. */
static bool read_key(struct clerk *ck, const char *key, char *out, size_t cap)
{
    uint64_t end = h_now_ms() + 20000;
    while (h_now_ms() < end) {
        void *v = NULL;
        size_t len = 0;
        int err = clerk_get(ck, key, strlen(key), &v, &len);
        if (err == CLERK_OK || err == CLERK_NOT_FOUND) {
            snprintf(out, cap, "%.*s", err == CLERK_OK ? (int)len : 0,
                     err == CLERK_OK ? (char *)v : "");
            clerk_free(v);
            return true;
        }
        clerk_free(v);
        h_sleep_ms(100);
    }
    return false;
}

/* CLERK_NO_SPACE promises "not applied". The leader's log write fails for
 * lack of space after it proposed the append and sent it to the
 * followers: the clerk's first attempt times out, and its retry is
 * answered NO_SPACE by the frozen leader. The append is applied all the
 * same: by a follower that got it and is elected, or by the leader once
 * it can write again. An earlier try that may have been applied makes the
 * outcome unknown, not "not applied". */
static void test_clerk_no_space_is_never_answered_for_an_applied_write(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    struct h_start o = {.diskfault = true};
    CU_ASSERT_FATAL(h_cluster_start_with(&c, 3, NULL, &o) == 0);
    int l = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(l >= 0);
    struct clerk *ck = open_clerk_from(&c, (size_t)l, 5000, 300);
    CU_ASSERT_FATAL(clerk_put(ck, "k", 1, "", 0) == CLERK_OK);
    CU_ASSERT_EQUAL(
        h_node_rules(&c, (size_t)l, "fail wal/ write ENOSPC always"), 0);
    uint64_t t0 = h_now_ms();
    int rv = clerk_append(ck, "k", 1, "x", 1);
    uint64_t took = h_now_ms() - t0;
    char msg[400];
    snprintf(msg, sizeof msg, "%s", clerk_errmsg(ck));
    CU_ASSERT(h_log_contains(&c, (size_t)l, "cannot persist"));
    CU_ASSERT_EQUAL(h_node_rules(&c, (size_t)l, ""), 0); /* space is back */
    char v[64] = "";
    CU_ASSERT_FATAL(read_key(ck, "k", v, sizeof v));
    bool applied = strcmp(v, "x") == 0;
    printf("\n    append answered %s after %llu ms (%s); applied: %s\n",
           clerk_error_code(rv), (unsigned long long)took, msg,
           applied ? "yes" : "no");
    CU_ASSERT(rv == CLERK_OK || rv == CLERK_UNKNOWN_OUTCOME ||
              rv == CLERK_NO_SPACE);
    if (applied && rv == CLERK_NO_SPACE) {
        fprintf(stderr,
                "append answered NO_SPACE (not applied) after %llu ms, and "
                "\"k\" holds it\n",
                (unsigned long long)took);
    }
    CU_ASSERT(!(applied && rv == CLERK_NO_SPACE));
    clerk_close(ck);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* A follower that cannot write its log (no space) must not stop a client
 * from writing to a leader that can: the clerk is sent on to the leader. */
static void test_clerk_full_follower_does_not_refuse_writes_for_the_leader(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    struct h_start o = {.diskfault = true};
    CU_ASSERT_FATAL(h_cluster_start_with(&c, 3, NULL, &o) == 0);
    int l = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(l >= 0);
    size_t f = (size_t)(l + 1) % 3;
    struct clerk *ck = open_clerk_from(&c, (size_t)l, 5000, 500);
    CU_ASSERT_EQUAL(h_node_rules(&c, f, "fail wal/ write ENOSPC always"), 0);
    CU_ASSERT_EQUAL(clerk_put(ck, "a", 1, "1", 1), CLERK_OK);
    bool frozen = false;
    for (int t = 0; t < 100 && !frozen; t++) {
        frozen = h_log_contains(&c, f, "cannot persist");
        h_sleep_ms(50);
    }
    CU_ASSERT_FATAL(frozen);
    /* A client that asks the full follower first. */
    struct clerk *via_f = open_clerk_from(&c, f, 5000, 500);
    int rv = clerk_put(via_f, "b", 1, "2", 1);
    printf("\n    put through the full follower first: %s (%s)\n",
           clerk_error_code(rv), clerk_errmsg(via_f));
    CU_ASSERT_EQUAL(rv, CLERK_OK);
    h_node_rules(&c, f, "");
    clerk_close(via_f);
    clerk_close(ck);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* ----------------------------------------------------------------- kvctl */

static struct h_cluster kc; /* one cluster for the kvctl tests */
static char kc_eps[512];

/* Run kvctl with args (and stdin text); capture stdout; return status. */
static int kvctl(const char *args, const char *input, char *out, size_t cap)
{
    char cmd[2048], in_path[64] = "";
    if (input) {
        snprintf(in_path, sizeof in_path, "/tmp/kvctl-in-XXXXXX");
        int fd = mkstemp(in_path);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT(write(fd, input, strlen(input)) == (ssize_t)strlen(input));
        close(fd);
    }
    snprintf(cmd, sizeof cmd, "%s --cluster %s %s %s%s 2>/dev/null", KVCTL_BIN,
             kc_eps, args, input ? "< " : "", in_path);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    if (input) {
        unlink(in_path);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int kvctl_setup(void)
{
    if (h_cluster_start(&kc, 3, NULL) != 0 || h_find_leader(&kc, 10000) < 0) {
        return 1;
    }
    h_endpoints(&kc, kc_eps, sizeof kc_eps);
    return 0;
}

static int kvctl_teardown(void)
{
    kc.keep = CU_get_number_of_failures() > 0;
    return h_cluster_destroy(&kc) == 0 ? 0 : 1;
}

static void test_kvctl_one_shot_output_and_exit_codes(void)
{
    char out[4096];
    CU_ASSERT_EQUAL(kvctl("put greeting hello", NULL, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "OK\n");
    CU_ASSERT_EQUAL(kvctl("get greeting", NULL, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello\n");
    CU_ASSERT_EQUAL(kvctl("append greeting ' world'", NULL, out, sizeof out),
                    0);
    CU_ASSERT_EQUAL(kvctl("get greeting", NULL, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello world\n");
    CU_ASSERT_EQUAL(kvctl("get missing", NULL, out, sizeof out), 1);
    CU_ASSERT_EQUAL(kvctl("del missing", NULL, out, sizeof out), 1);
    CU_ASSERT_EQUAL(kvctl("cas greeting nope x", NULL, out, sizeof out), 4);
    CU_ASSERT_EQUAL(kvctl("cas --absent greeting x", NULL, out, sizeof out), 4);
    CU_ASSERT_EQUAL(kvctl("cas --absent fresh x", NULL, out, sizeof out), 0);
    CU_ASSERT_EQUAL(kvctl("cas fresh x y", NULL, out, sizeof out), 0);
    /* A stale read may lag the last write for a moment. */
    bool seen = false;
    for (int t = 0; t < 50 && !seen; t++) {
        seen = kvctl("--stale get fresh", NULL, out, sizeof out) == 0 &&
               !strcmp(out, "y\n");
    }
    CU_ASSERT(seen);
    CU_ASSERT_EQUAL(kvctl("del fresh", NULL, out, sizeof out), 0);
    /* Usage errors. */
    CU_ASSERT_EQUAL(kvctl("put onlykey", NULL, out, sizeof out), 2);
    CU_ASSERT_EQUAL(kvctl("frobnicate", NULL, out, sizeof out), 2);
    CU_ASSERT_EQUAL(kvctl("-w yaml get x", NULL, out, sizeof out), 2);
    CU_ASSERT_EQUAL(kvctl("--bogus get x", NULL, out, sizeof out), 2);
    CU_ASSERT_EQUAL(kvctl("help put", NULL, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "kvctl put KEY VALUE") != NULL);
    CU_ASSERT_EQUAL(kvctl("get --help", NULL, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "kvctl get KEY") != NULL);
    /* JSON answers. */
    CU_ASSERT_EQUAL(kvctl("-w json get greeting", NULL, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out,
                           "{\"ok\":true,\"value\":\"aGVsbG8gd29ybGQ=\"}\n");
    CU_ASSERT_EQUAL(kvctl("-w json get missing", NULL, out, sizeof out), 1);
    CU_ASSERT(strncmp(out, "{\"ok\":false,\"error\":\"NOT_FOUND\"", 31) == 0);
    CU_ASSERT_EQUAL(kvctl("-w json cas greeting nope x", NULL, out, sizeof out),
                    4);
    CU_ASSERT(strstr(out, "\"error\":\"CAS_MISMATCH\"") != NULL);
    CU_ASSERT(strstr(out, "\"current\":\"aGVsbG8gd29ybGQ=\"") != NULL);
    /* Status. */
    CU_ASSERT_EQUAL(kvctl("-w table status", NULL, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "ROLE") != NULL && strstr(out, "leader") != NULL);
    CU_ASSERT_EQUAL(kvctl("-w json status", NULL, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "\"role\":\"leader\"") != NULL);
}

/* A handle holds to its cluster: the id of its first answer, or one it
 * was given. A server of another cluster refuses its calls before
 * starting them (nothing written there), and the error says so. */
static void test_clerk_holds_to_its_cluster(void)
{
    struct h_cluster a, b;
    CU_ASSERT_FATAL(h_cluster_start(&a, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_cluster_start(&b, 1, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&a, 10000) >= 0);
    CU_ASSERT_FATAL(h_find_leader(&b, 10000) >= 0);
    struct clerk *ca = open_clerk(&a, 5000);
    CU_ASSERT_EQUAL(clerk_cluster_id(ca), 0);
    CU_ASSERT_EQUAL(clerk_put(ca, "k", 1, "a", 1), CLERK_OK);
    uint64_t id_a = clerk_cluster_id(ca);
    CU_ASSERT(id_a != 0);
    /* Its later calls carry the id and are served. */
    CU_ASSERT_EQUAL(clerk_put(ca, "k", 1, "a2", 2), CLERK_OK);
    CU_ASSERT(value_is(ca, "k", "a2"));
    /* A handle meant for A given B's address. */
    struct clerk *wrong = open_clerk(&b, 2000);
    clerk_set_cluster_id(wrong, id_a);
    CU_ASSERT_EQUAL(clerk_put(wrong, "k", 1, "x", 1), CLERK_UNAVAILABLE);
    char want[64];
    snprintf(want, sizeof want, "not %016llx", (unsigned long long)id_a);
    printf("\n  %s\n", clerk_errmsg(wrong));
    CU_ASSERT(strstr(clerk_errmsg(wrong),
                     "every server answers for another cluster") != NULL);
    CU_ASSERT(strstr(clerk_errmsg(wrong), want) != NULL);
    void *v = NULL;
    size_t len = 0;
    /* At once: no server of the list is of its cluster. */
    uint64_t t0 = h_now_ms();
    CU_ASSERT_EQUAL(clerk_get(wrong, "k", 1, &v, &len), CLERK_UNAVAILABLE);
    CU_ASSERT(h_now_ms() - t0 < 1000);
    clerk_close(wrong);
    /* Nothing reached B. */
    struct clerk *cb = open_clerk(&b, 5000);
    CU_ASSERT_EQUAL(clerk_get(cb, "k", 1, &v, &len), CLERK_NOT_FOUND);
    CU_ASSERT(clerk_cluster_id(cb) != 0 && clerk_cluster_id(cb) != id_a);
    clerk_close(cb);
    clerk_close(ca);
    CU_ASSERT(h_cluster_destroy(&b) == 0);
    CU_ASSERT(h_cluster_destroy(&a) == 0);
}

/* Stale reads go to the server that has answered fastest lately: two of
 * three nodes delay every client call by 40 ms, and the third serves
 * nearly all of a stale reader's gets. */
static double gets_served(struct h_cluster *c, size_t i)
{
    static char body[1 << 17];
    if (h_http_get(c, i, "GET", "/metrics", body, sizeof body) != 200) {
        return -1;
    }
    return h_metric(body,
                    "raftkv_rpc_requests_total{service=\"raftkv."
                    "KvService\",method=\"Get\",status=\"OK\"}");
}

static void test_clerk_stale_reads_go_to_the_fastest_server(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, "--enable-fault-injection") == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    /* The leader (where reads go by default) and one follower slow. */
    size_t s1 = (size_t)leader, s2 = (size_t)(leader + 1) % 3,
           fast = (size_t)(leader + 2) % 3;
    struct clerk *ck = open_clerk(&c, 10000);
    CU_ASSERT_EQUAL(clerk_put(ck, "k", 1, "v", 1), CLERK_OK);
    struct clerk_fault slow = {
        .target = CLERK_FAULT_CLIENTS, .delay_min_ms = 40, .delay_max_ms = 40};
    CU_ASSERT_EQUAL(clerk_fault(ck, s1, true, &slow, 1, 0, NULL, NULL),
                    CLERK_OK);
    CU_ASSERT_EQUAL(clerk_fault(ck, s2, true, &slow, 1, 0, NULL, NULL),
                    CLERK_OK);
    double before[3];
    for (size_t i = 0; i < 3; i++) {
        before[i] = gets_served(&c, i);
    }
    /* (Stale reads of a follower that has not applied the put yet would
     * not find it: give the commit a few heartbeats to reach them.) */
    h_sleep_ms(500);
    struct clerk *rd = open_clerk(&c, 10000);
    clerk_set_read_mode(rd, CLERK_READ_STALE);
    enum { N = 60 };
    for (int k = 0; k < N; k++) {
        void *v = NULL;
        size_t len = 0;
        int err = clerk_get(rd, "k", 1, &v, &len);
        CU_ASSERT_EQUAL(err, CLERK_OK);
        if (err) {
            printf("\n  get %d: %s: %s", k, clerk_error_code(err),
                   clerk_errmsg(rd));
        }
        clerk_free(v);
    }
    double served[3];
    for (size_t i = 0; i < 3; i++) {
        served[i] = gets_served(&c, i) - before[i];
    }
    printf(
        "\n  stale gets served: %.0f by the leader, %.0f by the slow "
        "follower, %.0f by the fast one\n",
        served[s1], served[s2], served[fast]);
    CU_ASSERT(served[fast] >= N - 5);
    clerk_close(rd);
    clerk_close(ck);
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

/* CLERK_READ_STALE_HEDGED: once the server a reader prefers stops
 * answering quickly, a read it sent there is also sent to another server
 * after the p95 of the handle's recent stale reads, and the first answer
 * ends it: it does not wait for the slow server (nor for its attempt
 * timeout, 1 s, as a plain stale read does). */
static void test_clerk_hedged_stale_read_does_not_wait_for_a_slow_server(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, "--enable-fault-injection") == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct clerk *ck = open_clerk(&c, 10000);
    CU_ASSERT_EQUAL(clerk_put(ck, "k", 1, "v", 1), CLERK_OK);
    h_sleep_ms(500); /* (every follower applies it) */
    struct clerk *rd = open_clerk(&c, 10000);
    clerk_set_read_mode(rd, CLERK_READ_STALE_HEDGED);
    double before[3], after[3];
    for (size_t i = 0; i < 3; i++) {
        before[i] = gets_served(&c, i);
    }
    for (int k = 0; k < 40; k++) { /* what the p95 is made of */
        void *v = NULL;
        size_t len = 0;
        CU_ASSERT_EQUAL(clerk_get(rd, "k", 1, &v, &len), CLERK_OK);
        clerk_free(v);
    }
    /* The server it reads from now becomes slow. */
    size_t fav = 0;
    for (size_t i = 0; i < 3; i++) {
        after[i] = gets_served(&c, i) - before[i];
        if (after[i] > after[fav]) {
            fav = i;
        }
    }
    struct clerk_fault slow = {.target = CLERK_FAULT_CLIENTS,
                               .delay_min_ms = 3000,
                               .delay_max_ms = 3000};
    CU_ASSERT_EQUAL(clerk_fault(ck, fav, true, &slow, 1, 0, NULL, NULL),
                    CLERK_OK);
    for (size_t i = 0; i < 3; i++) {
        before[i] = gets_served(&c, i);
    }
    void *v = NULL;
    size_t len = 0;
    uint64_t t0 = h_now_ms();
    int err = clerk_get(rd, "k", 1, &v, &len);
    uint64_t took = h_now_ms() - t0;
    printf("\n  node %zu slow: a hedged stale read took %llu ms\n", fav + 1,
           (unsigned long long)took);
    CU_ASSERT_EQUAL(err, CLERK_OK);
    CU_ASSERT(v && len == 1 && memcmp(v, "v", 1) == 0);
    clerk_free(v);
    CU_ASSERT(took < 500);
    /* Another server answered it. */
    double others = 0;
    for (size_t i = 0; i < 3; i++) {
        if (i != fav) {
            others += gets_served(&c, i) - before[i];
        }
    }
    CU_ASSERT(others >= 1);
    clerk_close(rd);
    clerk_close(ck);
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

static void test_kvctl_unreachable_cluster_exits_3(void)
{
    char out[1024], cmd[512];
    snprintf(cmd, sizeof cmd,
             "%s --cluster 127.0.0.1:1 --timeout 0.5 put k v >/dev/null "
             "2>&1",
             KVCTL_BIN);
    int st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 3);
    snprintf(cmd, sizeof cmd,
             "%s --cluster 127.0.0.1:1 --timeout 0.5 -w json get k", KVCTL_BIN);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    pclose(p);
    /* The same error as the put's: nothing accepted a connection. */
    CU_ASSERT(strstr(out, "\"error\":\"UNAVAILABLE\"") != NULL);
}

static void test_kvctl_pipe_mode_simple_and_json(void)
{
    char out[4096];
    const char *script =
        "# a comment, then an empty line\n"
        "\n"
        "put \"two words\" \"line\\none\\ttab \\\"q\\\" \\x00end\"\n"
        "get \"two words\"\n"
        "append 'two words' ' more'\n"
        "get 'two words'\n"
        "get absent\n"
        "del 'two words'\n"
        "put \"unterminated\n"
        "nonsense\n";
    CU_ASSERT_EQUAL(kvctl("", script, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(
        out,
        "OK\n"
        "\"line\\none\\ttab \\\"q\\\" \\x00end\"\n"
        "OK\n"
        "\"line\\none\\ttab \\\"q\\\" \\x00end more\"\n"
        "ERROR NOT_FOUND no such key\n"
        "OK\n"
        "ERROR USAGE unterminated \"\n"
        "ERROR USAGE unknown command 'nonsense' (see kvctl help)\n");
    CU_ASSERT_EQUAL(
        kvctl("-w json", "put j 1\nget j\nget nothing\n", out, sizeof out), 0);
    char *second = strchr(out, '\n');
    CU_ASSERT_FATAL(second != NULL);
    CU_ASSERT(strncmp(out, "{\"ok\":true}\n", 12) == 0);
    CU_ASSERT(strncmp(second + 1, "{\"ok\":true,\"value\":\"MQ==\"}\n", 27) ==
              0);
    CU_ASSERT(strstr(out, "{\"ok\":false,\"error\":\"NOT_FOUND\"") != NULL);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static CU_TestInfo clerk_tests[] = {
        {"test_clerk_all_operations_and_binary_values",
         test_clerk_all_operations_and_binary_values},
        {"test_clerk_holds_to_its_cluster", test_clerk_holds_to_its_cluster},
        {"test_clerk_stale_reads_go_to_the_fastest_server",
         test_clerk_stale_reads_go_to_the_fastest_server},
        {"test_clerk_hedged_stale_read_does_not_wait_for_a_slow_server",
         test_clerk_hedged_stale_read_does_not_wait_for_a_slow_server},
        {"test_clerk_leader_killed_mid_writes_every_ack_present_once",
         test_clerk_leader_killed_mid_writes_every_ack_present_once},
        {"test_clerk_deadline_tells_unknown_from_not_applied",
         test_clerk_deadline_tells_unknown_from_not_applied},
        {"test_clerk_served_handle_admin_calls_wait_out_the_deadline",
         test_clerk_served_handle_admin_calls_wait_out_the_deadline},
        CU_TEST_INFO_NULL,
    };
    /* On the disk-fault shim: what a full disk answers. */
    static CU_TestInfo disk_tests[] = {
        {"test_clerk_no_space_is_never_answered_for_an_applied_write",
         test_clerk_no_space_is_never_answered_for_an_applied_write},
        {"test_clerk_full_follower_does_not_refuse_writes_for_the_leader",
         test_clerk_full_follower_does_not_refuse_writes_for_the_leader},
        CU_TEST_INFO_NULL,
    };
    static CU_TestInfo kvctl_tests[] = {
        {"test_kvctl_one_shot_output_and_exit_codes",
         test_kvctl_one_shot_output_and_exit_codes},
        {"test_kvctl_unreachable_cluster_exits_3",
         test_kvctl_unreachable_cluster_exits_3},
        {"test_kvctl_pipe_mode_simple_and_json",
         test_kvctl_pipe_mode_simple_and_json},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"clerk", NULL, NULL, NULL, NULL, clerk_tests},
        {"clerk_full_disk", NULL, NULL, NULL, NULL, disk_tests},
        {"kvctl", kvctl_setup, kvctl_teardown, NULL, NULL, kvctl_tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
