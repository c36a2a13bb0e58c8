/* test_crashpoints.c: the crash-point sweep. A node of a 3-node cluster
 * runs on a disk that loses power (every write not yet synced is undone,
 * tests/diskfault) or fails, at each write and sync boundary in turn of:
 * an election, appends, a log segment rollover, a compaction, a snapshot
 * sent and one installed, a restore and a shutdown. After each crash the
 * node must start again (or refuse with a clear message where the sweep
 * expects one, and then start), hold every write it acknowledged, and no
 * node's log may show two votes in a term or two leaders in a term.
 *
 * Appends run with the third node down, so that every commit needs the
 * swept node's acknowledgement; then the swept node loses power (if its
 * rule did not already cut it), the leader is killed and the third node
 * started: the swept node's disk is all that holds those writes.
 *
 * RAFTKV_FAULT_TIER=full sweeps every boundary of every phase, in both
 * crash and failure modes, with torn writes and random page loss; the
 * quick tier takes a few boundaries of each. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include <clerk/clerk.h>

#include "cunit_main.h"
#include "diskfault_ctl.h"
#include "harness.h"

#define V 0 /* the node whose disk is swept */

enum fate { F_NONE, F_ACKED, F_UNKNOWN, F_REFUSED };

struct world
{
    struct h_cluster c;
    struct clerk *ck;  /* the writer */
    char key[32];      /* the key appended to */
    unsigned next;     /* next token */
    uint8_t *fate;     /* per token */
    size_t cap;        /* tokens allocated */
    bool full;         /* RAFTKV_FAULT_TIER=full */
    unsigned rounds;   /* rounds run */
    unsigned crashes;  /* rounds in which the node lost power */
    unsigned failures; /* rounds in which an operation failed */
    unsigned refusals; /* starts refused as expected (interrupted restore) */
    char backup[600];  /* a saved snapshot, for the restore phase */
};

static struct world w;

/* ------------------------------------------------------------- writing */

static void set_fate(unsigned t, enum fate f)
{
    if (t >= w.cap) {
        size_t cap = w.cap ? w.cap * 2 : 1024;
        while (cap <= t) {
            cap *= 2;
        }
        uint8_t *p = realloc(w.fate, cap);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        memset(p + w.cap, 0, cap - w.cap);
        w.fate = p;
        w.cap = cap;
    }
    w.fate[t] = (uint8_t)f;
}

static bool v_alive(void)
{
    return w.c.nodes[V].pid && !h_node_exited(&w.c, V, 0);
}

/* Append n tokens; stop early once node V is down (the cluster may then
 * have no majority, and every append would wait for its deadline). */
static void appends(int n, bool stop_when_v_down)
{
    for (int i = 0; i < n; i++) {
        if (stop_when_v_down && !v_alive()) {
            return;
        }
        unsigned t = w.next++;
        char tok[32];
        int len = snprintf(tok, sizeof tok, "[%u]", t);
        int rv = clerk_append(w.ck, w.key, strlen(w.key), tok, (size_t)len);
        set_fate(t, rv == CLERK_OK            ? F_ACKED
                    : rv == CLERK_UNAVAILABLE ? F_REFUSED
                                              : F_UNKNOWN);
    }
}

/* Every acknowledged token once, in order; unknown ones at most once;
 * refused ones never. */
static void check_value(const char *val, const char *where)
{
    unsigned *seen = calloc(w.next + 1, sizeof *seen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(seen);
    long last = -1;
    bool in_order = true;
    for (const char *p = val; (p = strchr(p, '[')) != NULL; p++) {
        unsigned t = (unsigned)strtoul(p + 1, NULL, 10);
        if (t < w.next) {
            seen[t]++;
            if (w.fate[t] == F_ACKED) {
                in_order &= (long)t > last;
                last = (long)t;
            }
        }
    }
    unsigned lost = 0, twice = 0, refused = 0;
    for (unsigned t = 0; t < w.next; t++) {
        lost += w.fate[t] == F_ACKED && seen[t] == 0;
        twice += seen[t] > 1;
        refused += w.fate[t] == F_REFUSED && seen[t] > 0;
    }
    if (lost || twice || refused || !in_order) {
        fprintf(stderr,
                "crashpoints: %s: %u acknowledged writes lost, %u applied "
                "twice, %u refused ones applied, in order: %d\n",
                where, lost, twice, refused, in_order);
    }
    CU_ASSERT_EQUAL(lost, 0);
    CU_ASSERT_EQUAL(twice, 0);
    CU_ASSERT_EQUAL(refused, 0);
    CU_ASSERT(in_order);
    free(seen);
}

/* A linearizable read of the key, retried until some leader answers. */
static void check_acked(const char *where)
{
    void *v = NULL;
    size_t len = 0;
    int rv = CLERK_UNAVAILABLE;
    uint64_t end = h_now_ms() + 20000;
    while (h_now_ms() < end) {
        rv = clerk_get(w.ck, w.key, strlen(w.key), &v, &len);
        if (rv == CLERK_OK || rv == CLERK_NOT_FOUND) {
            break;
        }
    }
    CU_ASSERT_FATAL(rv == CLERK_OK || rv == CLERK_NOT_FOUND);
    check_value(rv == CLERK_OK ? v : "", where);
    clerk_free(v);
}

/* Node i's own applied value of the key (a stale read there). */
static void check_node_state(size_t i, const char *where)
{
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &w.c, cunit_seed()) == 0);
    struct h_result r = h_get(&cl, w.key, true, i);
    CU_ASSERT(r.err == 0 || r.err == RAFTKV__KV_ERROR__KV_NOT_FOUND);
    check_value(r.err == 0 && r.value ? r.value : "", where);
    h_result_free(&r);
    h_client_close(&cl);
}

/* --------------------------------------------------------------- logs */

/* No node voted for two candidates in one term; no term had two
 * leaders. Logs are kept across restarts, so this covers every crash. */
static void check_logs(void)
{
    enum { MAX_TERMS = 4096 };
    static uint64_t leader_of[MAX_TERMS];
    static uint64_t vote_of[H_MAX_NODES][MAX_TERMS];
    memset(leader_of, 0, sizeof leader_of);
    memset(vote_of, 0, sizeof vote_of);
    for (size_t i = 0; i < w.c.n; i++) {
        FILE *f = fopen(w.c.nodes[i].log, "r");
        if (!f) {
            continue;
        }
        char line[1024];
        while (fgets(line, sizeof line, f)) {
            unsigned long long a, b, term;
            const char *p;
            if ((p = strstr(line, ": voted for node ")) &&
                sscanf(p, ": voted for node %llu in term %llu", &a, &term) ==
                    2 &&
                term < MAX_TERMS) {
                if (vote_of[i][term] && vote_of[i][term] != a) {
                    fprintf(stderr,
                            "crashpoints: node %zu voted for %llu and %llu in "
                            "term %llu\n",
                            i + 1, (unsigned long long)vote_of[i][term], a,
                            term);
                    CU_FAIL("two votes in one term");
                }
                vote_of[i][term] = a;
            }
            if ((p = strstr(line, "node ")) &&
                sscanf(p, "node %llu: leader in term %llu, leader %llu", &a,
                       &term, &b) == 3 &&
                term < MAX_TERMS) {
                if (leader_of[term] && leader_of[term] != a) {
                    fprintf(stderr,
                            "crashpoints: nodes %llu and %llu both led term "
                            "%llu\n",
                            (unsigned long long)leader_of[term], a, term);
                    CU_FAIL("two leaders in one term");
                }
                leader_of[term] = a;
            }
        }
        fclose(f);
    }
}

/* ------------------------------------------------------------ cluster */

static int leader(void)
{
    return h_find_leader(&w.c, 15000);
}

/* Every node up, one leader, every node applied what the leader has
 * committed. */
static void settle(void)
{
    for (size_t i = 0; i < w.c.n; i++) {
        if (!w.c.nodes[i].pid) {
            CU_ASSERT_EQUAL_FATAL(h_node_start(&w.c, i), 0);
        }
        if (w.c.nodes[i].stopped) {
            h_node_pause(&w.c, i, false);
        }
    }
    uint64_t end = h_now_ms() + 30000;
    while (h_now_ms() < end) {
        struct clerk_node_status *st = NULL;
        size_t n = 0;
        bool ok = clerk_status(w.ck, &st, &n) == CLERK_OK && n >= w.c.n;
        for (size_t i = 0; ok && i < w.c.n; i++) {
            ok = st[i].reachable && st[i].lag_known && st[i].applied_lag == 0;
        }
        clerk_free(st);
        if (ok) {
            return;
        }
        h_sleep_ms(50);
    }
    CU_FAIL("the cluster did not settle within 30 s");
}

/* Node V follows; returns the leader. */
static int v_follows(void)
{
    int l = leader();
    CU_ASSERT_FATAL(l >= 0);
    if (l == V) {
        uint64_t to = w.c.nodes[(V + 1) % w.c.n].id;
        for (int tries = 0; tries < 5 && l == V; tries++) {
            clerk_transfer_leader(w.ck, to, NULL);
            l = leader();
        }
        CU_ASSERT_FATAL(l >= 0 && l != V);
    }
    return l;
}

/* Node V leads. */
static void v_leads(void)
{
    for (int tries = 0; tries < 10 && leader() != V; tries++) {
        clerk_transfer_leader(w.ck, w.c.nodes[V].id, NULL);
    }
    CU_ASSERT_FATAL(leader() == V);
}

/* Start node V again without faults; it must start. */
static void restart_v(void)
{
    h_node_rules(&w.c, V, "");
    if (h_node_start(&w.c, V) != 0) {
        fprintf(stderr,
                "crashpoints: node %d did not start again after the "
                "crash; see its log\n",
                V + 1);
        CU_FAIL_FATAL("the node did not start after a crash");
    }
}

/* Did the rules of this round fire? A crash rule leaves a line in node
 * V's trace whose result is "crash" or "torn" (a power loss from the test
 * shows as "power-loss"); a failure, an operation answered with an error.
 * A crash may come just after the activity: wait a little for it. */
static bool rule_crashed(unsigned wait_ms)
{
    h_node_exited(&w.c, V, wait_ms);
    FILE *f = fopen(w.c.nodes[V].trace, "r");
    if (!f) {
        return false;
    }
    char line[1200];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        found = !strstr(line, "power-loss") &&
                (strstr(line, " crash\n") || strstr(line, " torn\n"));
    }
    fclose(f);
    return found;
}

static bool failed_now(void)
{
    return h_file_contains(w.c.nodes[V].trace, " -E");
}

static bool is_crash(const char *rules)
{
    return strncmp(rules, "crash", 5) == 0;
}

/* After a round's activity: did its rule fire (waiting up to @wait_ms for
 * it)? Node V, if its power was cut, starts again; its rules are cleared. */
static bool rule_fired(const char *rules, unsigned wait_ms)
{
    bool fired;
    if (is_crash(rules)) {
        fired = rule_crashed(wait_ms);
        if (fired) {
            restart_v();
        }
    } else {
        uint64_t end = h_now_ms() + wait_ms;
        while (!(fired = failed_now()) && h_now_ms() < end) {
            h_sleep_ms(50);
        }
    }
    h_node_rules(&w.c, V, "");
    return fired;
}

/* ------------------------------------------------------------- rounds */

/* What one round does with the rules set; returns whether they fired. */
typedef bool (*round_fn)(const char *rules);

/* Appends that need node V's acknowledgement (node T down), then the
 * leader goes and node V's disk must hold them. */
static bool round_acks(const char *rules, int n_appends)
{
    settle();
    int l = v_follows();
    /* The third node is down (killed, not paused: a paused node would
     * still get the leader's messages from its socket when it resumes). */
    size_t t = 3 - (size_t)l - V;
    h_node_kill(&w.c, t);
    h_trace_reset(&w.c, V);
    h_node_rules(&w.c, V, rules);
    appends(n_appends, true);
    /* Node V loses power at once if its rule did not already cut it (after
     * a failed operation too: what the retry acknowledged must be synced).
     * The leader goes before node V is back, so that V cannot catch up
     * from it: what V acknowledged must come from V's disk. */
    if (v_alive()) {
        h_node_power_loss(&w.c, V);
    }
    bool fired = is_crash(rules) ? rule_crashed(300) : failed_now();
    h_node_kill(&w.c, (size_t)l);
    CU_ASSERT_EQUAL_FATAL(h_node_start(&w.c, t), 0);
    restart_v();
    check_acked(rules);
    CU_ASSERT_EQUAL_FATAL(h_node_start(&w.c, (size_t)l), 0);
    check_logs();
    return fired;
}

static bool round_appends(const char *rules)
{
    return round_acks(rules, 12);
}

/* Appends until node V starts a new log segment. */
static bool round_rollover(const char *rules)
{
    return round_acks(rules, 300);
}

/* Appends through log segment rollovers (--wal-segment-mb 1: about 250
 * batches of a follower) and compactions (--snapshot-entries 200), so
 * that old segments are deleted. */
static bool round_compaction(const char *rules)
{
    return round_acks(rules, 600);
}

/* The leader goes: node V votes or campaigns. */
static bool round_election(const char *rules)
{
    settle();
    appends(3, false);
    int l = v_follows();
    h_trace_reset(&w.c, V);
    h_node_rules(&w.c, V, rules);
    h_node_kill(&w.c, (size_t)l);
    /* A new leader, unless node V's disk stops it. */
    uint64_t end = h_now_ms() + 5000;
    while (h_now_ms() < end && v_alive()) {
        int nl = h_find_leader(&w.c, 200);
        if (nl >= 0 && nl != l) {
            break;
        }
    }
    bool fired = rule_fired(rules, 300);
    CU_ASSERT_EQUAL_FATAL(h_node_start(&w.c, (size_t)l), 0);
    appends(3, false);
    check_acked(rules);
    check_logs();
    return fired;
}

/* Node V lags behind a compaction and is sent a snapshot. */
static bool round_install(const char *rules)
{
    settle();
    v_follows();
    h_node_pause(&w.c, V, true);
    appends(230, false);
    h_trace_reset(&w.c, V);
    h_node_rules(&w.c, V, rules); /* read when it runs again */
    h_node_pause(&w.c, V, false);
    bool fired = rule_fired(rules, 5000); /* the transfer takes a while */
    settle();
    check_node_state(V, rules);
    check_acked(rules);
    check_logs();
    return fired;
}

/* Node V leads and sends a snapshot to a node that lagged. */
static bool round_send(const char *rules)
{
    settle();
    v_leads();
    size_t t = (V + 1) % w.c.n;
    h_node_pause(&w.c, t, true);
    appends(230, false);
    h_trace_reset(&w.c, V);
    h_node_rules(&w.c, V, rules);
    h_node_pause(&w.c, t, false);
    appends(20, true);
    bool fired = rule_fired(rules, 300);
    settle();
    check_acked(rules);
    check_node_state(t, rules);
    check_logs();
    return fired;
}

/* Node V is stopped (SIGTERM) with writes just applied. */
static bool round_shutdown(const char *rules)
{
    settle();
    appends(20, false);
    settle(); /* node V applied them: its shutdown commits them */
    h_trace_reset(&w.c, V);
    h_node_rules(&w.c, V, rules);
    int st = h_node_term(&w.c, V);
    bool fired = is_crash(rules) ? st != 0 : failed_now();
    h_node_rules(&w.c, V, "");
    CU_ASSERT_EQUAL_FATAL(h_node_start(&w.c, V), 0);
    settle();
    check_node_state(V, rules);
    check_acked(rules);
    check_logs();
    return fired;
}

/* kvserver --restore of a saved snapshot into node V's emptied directory,
 * under the disk rules; then the node starts (or, after a crash part way,
 * refuses with advice to run the restore again, which then works). */
static int run_restore(const char *rules)
{
    h_node_rules(&w.c, V, rules);
    pid_t pid = fork();
    if (pid == 0) {
        df_setenv(w.c.nodes[V].dir, w.c.nodes[V].rules, w.c.nodes[V].trace);
        int fd = open(w.c.nodes[V].log, O_WRONLY | O_APPEND);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        char id[24];
        snprintf(id, sizeof id, "%llu", (unsigned long long)w.c.nodes[V].id);
        execl(KVSERVER_BIN, "kvserver", "--id", id, "--cluster",
              w.c.cluster_arg, "--data-dir", w.c.nodes[V].dir, "--restore",
              w.backup, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A restore that went through makes node V a cluster of its own: the
 * backup's data under a new cluster id (docs/kvserver.md, backups), which
 * the others refuse. It starts, is refused with the reason in the logs,
 * and then joins as the wiped node it was before the restore. */
static void rejoin_restored(void)
{
    CU_ASSERT_EQUAL_FATAL(h_node_start(&w.c, V), 0);
    uint64_t end = h_now_ms() + 10000;
    bool refused = false;
    while (!refused && h_now_ms() < end) {
        for (size_t i = 0; i < w.c.n && !refused; i++) {
            refused =
                i != V && h_log_contains(&w.c, i, "it belongs to cluster");
        }
        if (!refused) {
            h_sleep_ms(50);
        }
    }
    CU_ASSERT(refused);
    CU_ASSERT_EQUAL(h_node_term(&w.c, V), 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", w.c.nodes[V].dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    h_trace_reset(&w.c, V);
    CU_ASSERT_EQUAL_FATAL(h_node_start(&w.c, V), 0);
}

static bool round_restore(const char *rules)
{
    settle();
    CU_ASSERT_EQUAL(h_node_term(&w.c, V), 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", w.c.nodes[V].dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    h_trace_reset(&w.c, V);
    int st = run_restore(rules);
    bool fired = st != 0;
    if (fired) {
        /* The crash, or the failed operation answered as an error. */
        CU_ASSERT_EQUAL(st, is_crash(rules) ? 128 + SIGKILL : 1);
        /* Started now, the node either finds nothing restored yet (an
         * empty node, which catches up) or refuses the half-done one. */
        h_node_rules(&w.c, V, "");
        bool keep = w.c.keep;
        if (h_node_start(&w.c, V) != 0) {
            w.c.keep = keep; /* an expected refusal: no reason to keep */
            CU_ASSERT(h_log_contains(&w.c, V,
                                     "run the same kvserver "
                                     "--restore again"));
            w.refusals++;
            CU_ASSERT_EQUAL(run_restore(""), 0);
            rejoin_restored();
        }
    } else {
        rejoin_restored();
    }
    h_node_rules(&w.c, V, "");
    settle();
    check_node_state(V, rules);
    check_acked(rules);
    check_logs();
    return fired;
}

/* ------------------------------------------------------------- sweeps */

/* The @k-th rule of a sweep: @fmt with the boundary number (and the next
 * log segment's file name for "%s"). */
static void make_rules(char *out, size_t len, const char *fmt, unsigned k)
{
    char seg[64] = "";
    DIR *d = NULL;
    char wal[600];
    snprintf(wal, sizeof wal, "%s/wal", w.c.nodes[V].dir);
    unsigned long long last = 0;
    if ((d = opendir(wal)) != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            unsigned long long no;
            if (strlen(de->d_name) == 20 &&
                sscanf(de->d_name, "%16llx.wal", &no) == 1 && no > last) {
                last = no;
            }
        }
        closedir(d);
    }
    snprintf(seg, sizeof seg, "%016llx.wal", last + 1);
    if (strstr(fmt, "%s")) {
        snprintf(out, len, fmt, seg, k);
    } else {
        snprintf(out, len, fmt, k);
    }
}

/* Sweep boundary k = 0, 1, ... of a phase until the rule no longer fires
 * (the phase has fewer boundaries), or past @max_k when the rule also
 * matches the ordinary appends that follow the boundaries of interest
 * (0: no bound); the quick tier takes @quick of them, @quick_step apart. */
static void sweep_upto(const char *phase,
                       const char *fmt,
                       round_fn round,
                       unsigned quick,
                       unsigned quick_step,
                       unsigned max_k)
{
    unsigned step = w.full ? 1 : quick_step, fired_rounds = 0;
    for (unsigned k = 0, n = 0;; k += step, n++) {
        if ((!w.full && n >= quick) || (max_k && k > max_k)) {
            break;
        }
        char rules[300];
        make_rules(rules, sizeof rules, fmt, k);
        unsigned before = CU_get_number_of_failures();
        bool fired = round(rules);
        w.rounds++;
        if (CU_get_number_of_failures() != before) {
            fprintf(stderr, "crashpoints: %s: failed with rule '%s'\n", phase,
                    rules);
            return;
        }
        if (!fired) {
            break;
        }
        fired_rounds++;
        if (is_crash(rules)) {
            w.crashes++;
        } else {
            w.failures++;
        }
    }
    printf("crashpoints: %s: rule '%s' fired in %u rounds\n", phase, fmt,
           fired_rounds);
    /* A sweep whose first rule never fires tests nothing. */
    CU_ASSERT(fired_rounds > 0);
}

static void sweep(const char *phase,
                  const char *fmt,
                  round_fn round,
                  unsigned quick,
                  unsigned quick_step)
{
    sweep_upto(phase, fmt, round, quick, quick_step, 0);
}

/* ---------------------------------------------------------------- tests */

static int setup(void)
{
    memset(&w, 0, sizeof w);
    const char *tier = getenv("RAFTKV_FAULT_TIER");
    w.full = tier && strcmp(tier, "full") == 0;
    struct h_start o = {.diskfault = true};
    if (h_cluster_start_with(&w.c, 3,
                             "--snapshot-entries 200 --snapshot-trailing 20 "
                             "--wal-segment-mb 1 --state-commit-ms 2000 "
                             "--election-ms 300 --heartbeat-ms 50",
                             &o) != 0) {
        return -1;
    }
    char eps[512];
    h_endpoints(&w.c, eps, sizeof eps);
    struct clerk_options co = {.deadline_ms = 2000, .attempt_ms = 500};
    if (clerk_open(&w.ck, eps, &co) != CLERK_OK) {
        return -1;
    }
    snprintf(w.key, sizeof w.key, "sweep");
    return 0;
}

static int teardown(void)
{
    printf(
        "crashpoints: %u rounds, %u power losses, %u failed operations, "
        "%u refused starts (interrupted restores)\n",
        w.rounds, w.crashes, w.failures, w.refusals);
    clerk_close(w.ck);
    free(w.fate);
    if (CU_get_number_of_failures()) {
        w.c.keep = true;
        fprintf(stderr, "crashpoints: logs kept in %s\n", w.c.root);
    }
    return h_cluster_destroy(&w.c);
}

static void test_crash_at_each_boundary_of_an_election(void)
{
    sweep("election", "crash wal any after %u", round_election, 3, 3);
}

static void test_crash_at_each_boundary_of_appends(void)
{
    sweep("appends", "crash wal/ any after %u", round_appends, 4, 2);
    if (w.full) {
        sweep("appends", "crash * any after %u", round_appends, 0, 3);
        sweep("appends", "crash * write after %u torn", round_appends, 0, 3);
        sweep("appends", "crash * any after %u keep=random seed=7",
              round_appends, 0, 3);
    }
}

static void test_crash_at_each_boundary_of_a_segment_rollover(void)
{
    /* The new segment's first operations: its creation, the directory
     * sync, the zeros written ahead, the first batch and its sync. */
    sweep_upto("rollover", "crash %s any after %u", round_rollover, 3, 3, 24);
}

static void test_crash_at_each_boundary_of_a_compaction(void)
{
    sweep("compaction", "crash wal/ unlink after %u", round_compaction, 1, 3);
    sweep("compaction", "crash data.mdb sync after %u", round_compaction, 2, 3);
}

static void test_crash_at_each_boundary_of_a_snapshot_install(void)
{
    sweep("install", "crash data.mdb any after %u", round_install, 3, 3);
}

static void test_crash_at_each_boundary_of_a_snapshot_send(void)
{
    sweep("send", "crash * any after %u", round_send, 2, 3);
}

static void test_crash_at_each_boundary_of_a_restore(void)
{
    /* A snapshot of the cluster as it is: restoring it into one node is
     * like that node lagging behind, so it then catches up. */
    snprintf(w.backup, sizeof w.backup, "%s/backup.snap", w.c.root);
    char cmd[900];
    snprintf(cmd, sizeof cmd, "%s snapshot save %s >/dev/null", KVCTL_BIN,
             w.backup);
    char eps[512];
    h_endpoints(&w.c, eps, sizeof eps);
    setenv("RAFTKV_CLUSTER", eps, 1);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    sweep("restore", "crash * any after %u", round_restore, 6, 5);
    sweep("restore", "fail * any EIO after %u", round_restore, 2, 11);
    /* Some crash or failure fell inside the restore, whose start was
     * then refused until it was run again. */
    CU_ASSERT(w.refusals > 0);
}

static void test_crash_at_each_boundary_of_a_shutdown(void)
{
    sweep("shutdown", "crash * any after %u", round_shutdown, 2, 3);
}

static void test_failed_operation_at_each_boundary(void)
{
    sweep("appends", "fail * any EIO after %u", round_appends, 3, 3);
    sweep("election", "fail wal any EIO after %u", round_election, 2, 3);
    sweep("install", "fail data.mdb any EIO after %u", round_install, 2, 3);
    if (w.full) {
        sweep_upto("rollover", "fail %s any ENOSPC after %u", round_rollover, 0,
                   3, 24);
        sweep("compaction", "fail data.mdb sync EIO after %u", round_compaction,
              0, 3);
        sweep("compaction", "fail wal/ unlink EIO after %u", round_compaction,
              0, 3);
        sweep("shutdown", "fail * any EIO after %u", round_shutdown, 0, 3);
        sweep("send", "fail * any EIO after %u", round_send, 0, 3);
    }
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_crash_at_each_boundary_of_an_election",
         test_crash_at_each_boundary_of_an_election},
        {"test_crash_at_each_boundary_of_appends",
         test_crash_at_each_boundary_of_appends},
        {"test_crash_at_each_boundary_of_a_segment_rollover",
         test_crash_at_each_boundary_of_a_segment_rollover},
        {"test_crash_at_each_boundary_of_a_compaction",
         test_crash_at_each_boundary_of_a_compaction},
        {"test_crash_at_each_boundary_of_a_snapshot_install",
         test_crash_at_each_boundary_of_a_snapshot_install},
        {"test_crash_at_each_boundary_of_a_snapshot_send",
         test_crash_at_each_boundary_of_a_snapshot_send},
        {"test_crash_at_each_boundary_of_a_restore",
         test_crash_at_each_boundary_of_a_restore},
        {"test_crash_at_each_boundary_of_a_shutdown",
         test_crash_at_each_boundary_of_a_shutdown},
        {"test_failed_operation_at_each_boundary",
         test_failed_operation_at_each_boundary},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"crashpoints", setup, teardown, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
