/* raft_soak.c - randomized fault schedules mixing every fault, many seeds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_main.h"

static uint64_t g_first = 1;     /* first schedule seed */
static uint64_t g_count = 10000; /* number of schedules */
static bool g_verbose;           /* print each schedule */
static unsigned g_nomem;         /* per-mille of core allocations that fail */

/* Allocation failure injection: the binary links with --wrap=malloc etc.
 * Only calls into a core are armed (sim_alloc_guard), so only the core's
 * allocations fail, each with probability g_nomem / 1000. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static bool g_armed;             /* inside a call into a core */
static uint64_t g_alloc_rng;     /* failure PRNG (reseeded per schedule) */
static uint64_t g_failed_allocs; /* allocations made to fail */

static void guard(bool armed)
{
    g_armed = armed;
}

static bool alloc_fails(void)
{
    if (!g_armed || g_nomem == 0) {
        return false;
    }
    g_alloc_rng = g_alloc_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    if ((g_alloc_rng >> 33) % 1000 < g_nomem) {
        g_failed_allocs++;
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t n)
{
    return alloc_fails() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return alloc_fails() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return alloc_fails() ? NULL : __real_realloc(p, n);
}

static const char *nomem_arg(void)
{
    static char buf[32];
    snprintf(buf, sizeof buf, " -m %u", g_nomem);
    return buf;
}

/* Aggregate counters, to show that every fault was exercised. */
struct soak_totals
{
    uint64_t schedules;     /* run */
    uint64_t commits;       /* committed indexes */
    uint64_t installs;      /* snapshot installs */
    uint64_t reads_ok;      /* completed reads */
    uint64_t reads_failed;  /* failed reads */
    uint64_t crashes;       /* node crashes */
    uint64_t disk_failures; /* failed writes (each held and retried) */
    uint64_t write_crashes; /* crashes between a write's state and log part */
    uint64_t partitions;    /* partitions set */
    uint64_t transfers;     /* transfers started */
    uint64_t member_runs;   /* schedules that changed membership */
    uint64_t changes;       /* membership changes proposed */
    uint64_t handoffs;      /* leaders that removed themselves */
    uint64_t wiped_readds;  /* removed nodes wiped (retired) */
    uint64_t virtual_ms;    /* simulated time */
};

static struct soak_totals g_tot;

static uint64_t pick(struct sim *s, uint64_t n)
{
    return sim_random(s) % n;
}

/* A random partition of one of the shapes Jepsen uses. */
static void random_partition(struct sim *s, unsigned n)
{
    int group[SIM_MAX_NODES];
    unsigned shape = (unsigned)pick(s, 5);
    unsigned a = (unsigned)pick(s, n);
    switch (shape) {
        case 0: /* isolate one node */
            for (unsigned i = 0; i < n; i++) {
                group[i] = i == a ? 1 : 0;
            }
            sim_partition(s, group);
            break;
        case 1: /* majority / minority, random members */
            for (unsigned i = 0; i < n; i++) {
                group[i] = (int)pick(s, 2);
            }
            sim_partition(s, group);
            break;
        case 2: /* majorities ring: each node sees its neighbours */
            sim_heal(s);
            for (unsigned i = 0; i < n; i++) {
                for (unsigned j = 0; j < n; j++) {
                    unsigned d = (i + n - j) % n;
                    bool up = d <= (n + 1) / 4 || n - d <= (n + 1) / 4;
                    sim_link(s, i, j, i == j || up);
                }
            }
            break;
        case 3: /* bridge: two halves, node a talks to both */
            for (unsigned i = 0; i < n; i++) {
                group[i] = (int)(i % 2);
            }
            sim_partition(s, group);
            for (unsigned j = 0; j < n; j++) {
                sim_link(s, a, j, true);
                sim_link(s, j, a, true);
            }
            break;
        default: /* one-way links cut at random */
            sim_heal(s);
            for (unsigned k = 0; k < n; k++) {
                sim_link(s, (unsigned)pick(s, n), (unsigned)pick(s, n), false);
            }
            break;
    }
    g_tot.partitions++;
}

static void random_net(struct sim *s)
{
    struct sim_net net = {0};
    switch (pick(s, 4)) {
        case 0:
            sim_reliable(s);
            return;
        case 1:
            sim_unreliable(s, false);
            return;
        case 2:
            sim_unreliable(s, true);
            return;
        default:
            net.delay_min = (unsigned)pick(s, 5);
            net.delay_max = net.delay_min + (unsigned)pick(s, 60);
            net.drop_req = (unsigned)pick(s, 300);
            net.drop_resp = (unsigned)pick(s, 300);
            net.dup = (unsigned)pick(s, 200);
            net.long_reorder = (unsigned)pick(s, 100);
            sim_set_net(s, &net);
            return;
    }
}

static bool member_of(struct raft *r, uint64_t id, bool *voter)
{
    const struct raft_member *m;
    size_t n = raft_members(r, &m);
    for (size_t k = 0; k < n; k++) {
        if (m[k].id == id) {
            *voter = m[k].voter;
            return true;
        }
    }
    return false;
}

static bool s_retired[SIM_MAX_NODES]; /* wiped after their removal */

/* A random membership change at the leader: add a node that is not a
 * member as a learner (a removed one sometimes wiped first, as a host
 * replaced), promote a learner that has caught up, or remove a member
 * (the leader itself included). */
static void random_change(struct sim *s, unsigned n)
{
    int l = sim_leader(s);
    if (l < 0) {
        return;
    }
    struct raft *r = sim_raft(s, (unsigned)l);
    unsigned j = (unsigned)pick(s, n);
    bool voter = false;
    bool member = member_of(r, j + 1, &voter);
    int rv;
    if (!member) {
        if (s_retired[j]) {
            return; /* wiped: its id is never used again */
        }
        bool settled = raft_conf_index(r) <= raft_commit_index(r);
        if (settled && pick(s, 4) == 0 && sim_up(s, j) &&
            !member_of(r, j + 1, &voter)) {
            /* Its removal is committed: the host is wiped and replaced
             * by another (a node that joins under a new id; removed ids
             * are never given again, as etcd's), here one of the spare
             * nodes when it is picked. */
            sim_wipe_join(s, j);
            s_retired[j] = true;
            g_tot.wiped_readds++;
            return;
        }
        if (!sim_up(s, j)) {
            sim_restart(s, j);
        }
        rv = sim_change(s, (unsigned)l, RAFT_CHANGE_ADD_LEARNER, j);
    } else if (!voter) {
        struct raft_peer_info pi;
        if (raft_peer_info(r, j + 1, &pi) != 0 ||
            pi.match + 5 < raft_commit_index(r) || pick(s, 2) == 0) {
            rv = sim_change(s, (unsigned)l, RAFT_CHANGE_REMOVE, j);
        } else {
            rv = sim_change(s, (unsigned)l, RAFT_CHANGE_PROMOTE, j);
        }
    } else {
        rv = sim_change(s, (unsigned)l, RAFT_CHANGE_REMOVE, j);
    }
    (void)rv; /* ECHANGE, EINVAL (the last voter): nothing happened */
}

/* One schedule; true if every invariant held and the cluster recovered. */
static bool run_schedule(uint64_t seed)
{
    struct sim_config c = {0};
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 12345;
#define R(n) \
    ((x = x * 6364136223846793005ULL + 1442695040888963407ULL), (x >> 33) % (n))
    c.n = R(4) == 0 ? 3 + 2 * (unsigned)R(3) : (R(2) ? 3 : 5);
    c.seed = seed;
    c.pre_vote = R(4) != 0;
    c.check_quorum = R(4) != 0;
    c.max_inflight = 1 + (unsigned)R(8);
    c.max_append_bytes = R(3) == 0 ? 20 : 64 * 1024;
    c.max_uncommitted = R(4) == 0 ? 200 : 0;
    c.snapshot_every = R(3) == 0 ? 0 : 3 + (unsigned)R(20);
    c.trailing = R(5);
    c.snapshot_pad = R(400);
    c.chunk_bytes = R(2) ? 16 + R(100) : 4096;
    c.disk_max_ms = R(2) ? 0 : (unsigned)R(15);
    c.tolerate_nomem = g_nomem > 0;
    c.disk_fail = R(3) == 0 ? 1 + (unsigned)R(4) : 0;
    c.retry_ms = R(2) ? 1000 : 20 + (unsigned)R(500);
    c.stream_reopen = R(3) == 0 ? 1 + (unsigned)R(50) : 0;
    /* A third of the schedules change membership: 3 to 7 nodes, some
     * outside the bootstrap configuration at first. */
    bool members = R(3) == 0;
    if (members) {
        c.n = 3 + (unsigned)R(5);
        c.voters = 1 + (unsigned)R(c.n);
    }
    unsigned change_every = 20 + (unsigned)R(200);
#undef R
    g_alloc_rng = seed;
    sim_alloc_guard = guard;
    struct sim *s = sim_new(&c);
    unsigned n = c.n;
    memset(s_retired, 0, sizeof s_retired);
    uint64_t duration = 2000 + pick(s, 3000);
    uint64_t next_fault = sim_now(s) + 100 + pick(s, 500);
    uint64_t end = sim_now(s) + duration;
    uint64_t value = seed << 20;
    while (!sim_failed(s) && sim_now(s) < end) {
        /* clients */
        for (unsigned k = 0; k < 2; k++) {
            unsigned i = (unsigned)pick(s, n);
            sim_propose(s, i, ++value, 8 + (size_t)pick(s, 40), NULL, NULL);
        }
        if (pick(s, 4) == 0) {
            int l = sim_leader(s);
            if (l >= 0) {
                sim_read(s, (unsigned)l);
            }
        }
        if (members && pick(s, change_every) == 0) {
            random_change(s, n);
        }
        if (pick(s, 300) == 0) {
            int l = sim_leader(s);
            if (l >= 0 &&
                sim_transfer(s, (unsigned)l, (unsigned)pick(s, n)) == 0) {
                g_tot.transfers++;
            }
        }
        /* faults */
        if (sim_now(s) >= next_fault) {
            next_fault = sim_now(s) + 100 + pick(s, 700);
            unsigned i = (unsigned)pick(s, n);
            switch (pick(s, 10)) {
                case 0:
                    sim_heal(s);
                    break;
                case 1:
                case 2:
                    random_partition(s, n);
                    break;
                case 3:
                    sim_crash(s, i);
                    g_tot.crashes++;
                    break;
                case 4:
                    for (unsigned k = 0; k < n; k++) {
                        if (!sim_up(s, k)) {
                            sim_restart(s, k);
                        }
                    }
                    break;
                case 5:
                    random_net(s);
                    break;
                case 6:
                    sim_set_disk(s, i, 0, (unsigned)pick(s, 30));
                    break;
                case 7: /* writes fail, maybe only their log part */
                    sim_disk_fail(s, i, 1 + (unsigned)pick(s, 3),
                                  pick(s, 2) == 0);
                    break;
                case 8: /* a crash between the state and the log part */
                    sim_crash_mid_write(s, i);
                    break;
                default:
                    if (pick(s, 4) == 0) { /* all nodes crash */
                        for (unsigned k = 0; k < n; k++) {
                            sim_crash(s, k);
                        }
                        g_tot.crashes += n;
                    } else {
                        sim_restart(s, i);
                    }
                    break;
            }
        }
        sim_run(s, 1 + pick(s, 20));
    }
    /* Heal everything: the cluster must elect a leader and commit. */
    unsigned nomem = g_nomem;
    g_nomem = 0;
    if (!sim_failed(s)) {
        sim_set_disk_failures(s, 0);
        sim_heal(s);
        sim_reliable(s);
        for (unsigned k = 0; k < n; k++) {
            if (!sim_up(s, k)) {
                sim_restart(s, k);
            }
            sim_set_disk(s, k, 0, 2);
        }
        sim_run(s, 3000);
        unsigned expected = n;
        if (members) {
            /* Every member of the leader's configuration applies it. */
            int l = sim_check_one_leader(s, 10000);
            expected =
                l >= 0 ? (unsigned)raft_members(sim_raft(s, (unsigned)l), NULL)
                       : n;
        }
        sim_one(s, ++value, 8, expected, true);
    }
    g_nomem = nomem;
    bool ok = !sim_failed(s);
    struct sim_stats st = sim_get_stats(s);
    g_tot.schedules++;
    g_tot.commits += sim_commit_max(s);
    g_tot.installs += st.installs;
    g_tot.reads_ok += st.reads_ok;
    g_tot.reads_failed += st.reads_failed;
    g_tot.crashes += st.write_crashes;
    g_tot.disk_failures += st.disk_failures;
    g_tot.write_crashes += st.write_crashes;
    g_tot.virtual_ms += sim_now(s);
    g_tot.member_runs += members;
    g_tot.changes += sim_changes(s);
    g_tot.handoffs += sim_handoffs(s);
    if (g_verbose || !ok) {
        printf(
            "schedule %llu: n=%u voters=%u changes=%llu pre_vote=%d "
            "check_quorum=%d snap=%u "
            "commit=%llu installs=%llu reads=%llu/%llu disk_failures=%llu "
            "write_crashes=%llu %s\n",
            (unsigned long long)seed, n, c.voters ? c.voters : n,
            (unsigned long long)sim_changes(s), c.pre_vote, c.check_quorum,
            c.snapshot_every, (unsigned long long)sim_commit_max(s),
            (unsigned long long)st.installs, (unsigned long long)st.reads_ok,
            (unsigned long long)st.reads_failed,
            (unsigned long long)st.disk_failures,
            (unsigned long long)st.write_crashes, ok ? "ok" : "FAILED");
    }
    if (!ok && g_verbose) {
        sim_dump(s, stdout);
    }
    if (!ok) {
        fprintf(stderr,
                "\nFAILED schedule seed %llu: %s\n  replay: %s -r %llu%s\n",
                (unsigned long long)seed, sim_why(s), test_prog,
                (unsigned long long)seed, g_nomem ? nomem_arg() : "");
    }
    sim_free(s);
    return ok;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_soak_random_schedules_keep_invariants(void)
{
    double t0 = seconds();
    uint64_t failed = 0;
    for (uint64_t k = 0; k < g_count; k++) {
        if (!run_schedule(g_first + k)) {
            failed++;
            if (failed >= 5) {
                break;
            }
        }
    }
    double dt = seconds() - t0;
    if (g_nomem > 0) {
        printf("\nsoak: %llu core allocations failed on purpose (-m %u)",
               (unsigned long long)g_failed_allocs, g_nomem);
    }
    printf(
        "\nsoak: %llu schedules (seeds %llu..%llu) in %.2f s: %.0f "
        "schedules/s, %.0f virtual s; %llu failed\n"
        "soak: commits %llu, snapshot installs %llu, reads %llu ok / "
        "%llu failed, crashes %llu (%llu between a write's state and log "
        "part), disk write failures %llu, partitions %llu, transfers %llu\n"
        "soak: membership: %llu schedules changed it, %llu changes, %llu "
        "leaders removed themselves and handed off, %llu removed nodes "
        "wiped for good\n",
        (unsigned long long)g_tot.schedules, (unsigned long long)g_first,
        (unsigned long long)(g_first + g_tot.schedules - 1), dt,
        dt > 0 ? (double)g_tot.schedules / dt : 0.0,
        (double)g_tot.virtual_ms / 1000.0, (unsigned long long)failed,
        (unsigned long long)g_tot.commits, (unsigned long long)g_tot.installs,
        (unsigned long long)g_tot.reads_ok,
        (unsigned long long)g_tot.reads_failed,
        (unsigned long long)g_tot.crashes,
        (unsigned long long)g_tot.write_crashes,
        (unsigned long long)g_tot.disk_failures,
        (unsigned long long)g_tot.partitions,
        (unsigned long long)g_tot.transfers,
        (unsigned long long)g_tot.member_runs,
        (unsigned long long)g_tot.changes, (unsigned long long)g_tot.handoffs,
        (unsigned long long)g_tot.wiped_readds);
    CU_ASSERT(failed == 0);
    /* Every fault and feature must actually have been exercised. */
    CU_ASSERT(g_tot.schedules < 100 || g_tot.installs > 0);
    CU_ASSERT(g_tot.schedules < 100 || g_tot.reads_ok > 0);
    CU_ASSERT(g_tot.schedules < 100 || g_tot.crashes > 0);
    CU_ASSERT(g_tot.schedules < 100 || g_tot.disk_failures > 0);
    CU_ASSERT(g_tot.schedules < 100 || g_tot.write_crashes > 0);
    CU_ASSERT(g_tot.schedules < 100 || g_tot.changes > 0);
    CU_ASSERT(g_tot.schedules < 1000 || g_tot.handoffs > 0);
    CU_ASSERT(g_nomem == 0 || g_failed_allocs > 0);
}

static void usage(const char *prog)
{
    fprintf(
        stderr,
        "usage: %s [-n COUNT] [-s FIRST_SEED] [-r SEED] [-m PERMILLE] [-v]\n"
        "  -n COUNT  number of schedules (default 10000; env "
        "RAFT_SOAK_COUNT)\n"
        "  -s SEED   first schedule seed (default 1; env RAFT_SOAK_SEED)\n"
        "  -r SEED   replay the single schedule SEED, verbosely\n"
        "  -m PERMILLE  make that share of the cores' allocations fail\n"
        "  -v        print every schedule\n",
        prog);
}

int main(int argc, char **argv)
{
    static const struct test_case cases[] = {
        {"test_soak_random_schedules_keep_invariants",
         test_soak_random_schedules_keep_invariants},
    };
    if (getenv("RAFT_SOAK_COUNT") != NULL) {
        g_count = strtoull(getenv("RAFT_SOAK_COUNT"), NULL, 0);
    }
    if (getenv("RAFT_SOAK_SEED") != NULL) {
        g_first = strtoull(getenv("RAFT_SOAK_SEED"), NULL, 0);
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            g_count = strtoull(argv[++i], NULL, 0);
        } else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
            g_first = strtoull(argv[++i], NULL, 0);
        } else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc) {
            g_first = strtoull(argv[++i], NULL, 0);
            g_count = 1;
            g_verbose = true;
        } else if (strcmp(argv[i], "-m") == 0 && i + 1 < argc) {
            g_nomem = (unsigned)strtoul(argv[++i], NULL, 0);
        } else if (strcmp(argv[i], "-v") == 0) {
            g_verbose = true;
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    char *args[] = {argv[0], NULL};
    return test_run(1, args, "raft_soak", cases, 1, 0);
}
