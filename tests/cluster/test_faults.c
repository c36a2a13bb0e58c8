/* test_faults.c: the fault-injection suite on real clusters.
 *
 * Suite "lab": equivalents of the well-known KV-on-Raft lab tests, with
 * their server and client counts (../shared/TESTING.md). Suite "nemesis":
 * Jepsen's faults. Suite "txn": Jepsen's bank (transfers in transactions,
 * ranges that must see the total) and a transaction workload, under those
 * faults. Every test records each clerk call and return, checks that every
 * acknowledged append is present exactly once and in order, and checks
 * the whole history for linearizability. Suite "watch": watchers record
 * every event across the faults; each must have been given exactly the
 * committed history of its range (faults_watch.c). Suite "lease": holders
 * keep leases with keys alive through the faults, or die; suite "lock":
 * contenders take one lock, are paused and killed, and their guarded
 * writes must never interleave; both checked against the committed
 * history (faults_lease.c, faults_lock.c). Suite "member": the cluster
 * changes shape while the clients run: nodes added, promoted, removed
 * and replaced, with kills and partitions in the middle of the changes
 * (faults_member.c).
 *
 * RAFTKV_FAULT_TIER=full runs 3 rounds of 5 s per test (the lab's); the
 * default quick tier runs one round of 2.5 s. RAFTKV_SEED fixes the seed.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <CUnit/CUnit.h>

#include "cunit_main.h"
#include "faults.h"

/* ------------------------------------------------------ lab equivalents */

#define LAB(fn, ...)                                                           \
    static void fn(void)                                                       \
    {                                                                          \
        static const struct scenario sc = {.name = #fn + 5, /* drop "test_" */ \
                                           __VA_ARGS__};                       \
        faults_run(&sc);                                                       \
    }

LAB(test_basic, .servers = 5, .clients = 1)
LAB(test_concurrent, .servers = 5, .clients = 5)
LAB(test_unreliable, .servers = 5, .clients = 5, .unreliable = true)
LAB(test_unreliable_one_key,
    .servers = 3,
    .clients = 5,
    .unreliable = true,
    .random_keys = true,
    .keys = 1,
    .appends_per_client = 10)
LAB(test_many_partitions_one_client,
    .servers = 5,
    .clients = 1,
    .nemesis = NEM_RANDOM_HALVES)
LAB(test_many_partitions_many_clients,
    .servers = 5,
    .clients = 5,
    .nemesis = NEM_RANDOM_HALVES)
LAB(test_persist_one_client, .servers = 5, .clients = 1, .crash = true)
/* On the disk-fault shim: the crash is a power loss of every node while
 * the clients write, so what was acknowledged must have been synced. */
LAB(test_persist_concurrent,
    .servers = 5,
    .clients = 5,
    .crash = true,
    .diskfault = true)
LAB(test_persist_concurrent_unreliable,
    .servers = 5,
    .clients = 5,
    .unreliable = true,
    .crash = true)
LAB(test_persist_partition,
    .servers = 5,
    .clients = 5,
    .crash = true,
    .nemesis = NEM_RANDOM_HALVES)
LAB(test_persist_partition_unreliable,
    .servers = 5,
    .clients = 5,
    .unreliable = true,
    .crash = true,
    .nemesis = NEM_RANDOM_HALVES)
LAB(test_persist_partition_unreliable_linearizable,
    .servers = 7,
    .clients = 15,
    .unreliable = true,
    .crash = true,
    .random_keys = true,
    .nemesis = NEM_RANDOM_HALVES)
LAB(test_snapshot_recover,
    .servers = 5,
    .clients = 1,
    .crash = true,
    .snapshot = 50)
LAB(test_snapshot_recover_many_clients,
    .servers = 5,
    .clients = 20,
    .crash = true,
    .snapshot = 50)
LAB(test_snapshot_unreliable,
    .servers = 5,
    .clients = 5,
    .unreliable = true,
    .snapshot = 50)
LAB(test_snapshot_unreliable_recover,
    .servers = 5,
    .clients = 5,
    .unreliable = true,
    .crash = true,
    .snapshot = 50)
LAB(test_snapshot_unreliable_recover_concurrent_partition,
    .servers = 5,
    .clients = 5,
    .unreliable = true,
    .crash = true,
    .nemesis = NEM_RANDOM_HALVES,
    .snapshot = 50)
LAB(test_snapshot_unreliable_recover_concurrent_partition_linearizable,
    .servers = 7,
    .clients = 15,
    .unreliable = true,
    .crash = true,
    .random_keys = true,
    .nemesis = NEM_RANDOM_HALVES,
    .snapshot = 50)

/* --------------------------------------------- lab tests with a script */

/* A cluster with an admin handle for the scripted tests. */
struct scripted
{
    struct h_cluster c;
    struct clerk *all; /* every node */
};

static void scripted_start(struct scripted *s, size_t n, const char *extra)
{
    char flags[256];
    snprintf(flags, sizeof flags, "--enable-fault-injection %s",
             extra ? extra : "");
    CU_ASSERT_FATAL(h_cluster_start(&s->c, n, flags) == 0);
    char eps[1024];
    h_endpoints(&s->c, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 15000, .attempt_ms = 500};
    CU_ASSERT_FATAL(clerk_open(&s->all, eps, &o) == CLERK_OK);
}

static void scripted_stop(struct scripted *s)
{
    CU_ASSERT(!h_sanitizer_reports(&s->c));
    clerk_close(s->all);
    h_cluster_destroy(&s->c);
}

/* A handle on some nodes only (bit i: node i). */
static struct clerk *clerk_on(struct scripted *s,
                              uint32_t nodes,
                              unsigned deadline_ms)
{
    char eps[1024];
    h_endpoints_of(&s->c, nodes, 0, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = deadline_ms, .attempt_ms = 500};
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    return ck;
}

/* Cut every link between different groups (group[i] per node); all in
 * one group heals. */
static void partition(struct scripted *s, const int *group)
{
    for (size_t i = 0; i < s->c.n; i++) {
        struct clerk_fault rules[H_MAX_NODES];
        size_t k = 0;
        for (size_t j = 0; j < s->c.n; j++) {
            if (j != i && group[i] != group[j]) {
                rules[k++] = (struct clerk_fault){.target = j + 1, .cut = true};
            }
        }
        /* A node restarted a moment ago may not answer yet. */
        int err;
        uint64_t end = h_now_ms() + 10000;
        while ((err = clerk_fault(s->all, i, true, rules, k, 0, NULL, NULL)) ==
                   CLERK_UNAVAILABLE &&
               h_now_ms() < end) {
            h_sleep_ms(100);
        }
        CU_ASSERT(err == CLERK_OK);
    }
}

static void check_value(struct clerk *ck, const char *key, const char *want)
{
    void *v = NULL;
    size_t len = 0;
    int rv = clerk_get(ck, key, strlen(key), &v, &len);
    CU_ASSERT_EQUAL(rv, CLERK_OK);
    if (rv == CLERK_OK) {
        CU_ASSERT(len == strlen(want) && memcmp(v, want, len) == 0);
        if (len != strlen(want) || memcmp(v, want, len) != 0) {
            fprintf(stderr, "get %s: '%.*s', want '%s'\n", key, (int)len,
                    (char *)v, want);
        }
    }
    clerk_free(v);
}

static void put(struct clerk *ck, const char *key, const char *val)
{
    int rv = clerk_put(ck, key, strlen(key), val, strlen(val));
    CU_ASSERT_EQUAL(rv, CLERK_OK);
    if (rv != CLERK_OK) {
        fprintf(stderr, "put %s: %s\n", key, clerk_errmsg(ck));
    }
}

/* One op of the minority's clients, timed. */
struct minority_op
{
    struct clerk *ck;
    bool get;
    int rv;
    uint64_t done_at; /* ms, 0 while running */
};

static void *minority_main(void *arg)
{
    struct minority_op *o = arg;
    if (o->get) {
        void *v = NULL;
        size_t len;
        o->rv = clerk_get(o->ck, "1", 1, &v, &len);
        clerk_free(v);
    } else {
        o->rv = clerk_put(o->ck, "1", 1, "15", 2);
    }
    __atomic_store_n(&o->done_at, h_now_ms(), __ATOMIC_RELEASE);
    return NULL;
}

/* The lab's OnePartition: the leader in a 2-node minority; the majority
 * makes progress, the minority none for 1 s; the minority's calls
 * complete within 3 s of healing. */
static void test_one_partition(void)
{
    struct scripted s;
    scripted_start(&s, 5, NULL);
    put(s.all, "1", "13");
    int leader = h_find_leader(&s.c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    /* p2: the leader and one more, the minority; p1: the majority. */
    int group[5];
    uint32_t p1 = 0, p2 = 1u << leader;
    group[leader] = 2;
    for (int i = 0; i < 5; i++) {
        if (i == leader) {
            continue;
        }
        if (__builtin_popcount(p2) < 2) {
            p2 |= 1u << i;
            group[i] = 2;
        } else {
            p1 |= 1u << i;
            group[i] = 1;
        }
    }
    partition(&s, group);
    struct clerk *ckp1 = clerk_on(&s, p1, 15000);
    put(ckp1, "1", "14");
    check_value(ckp1, "1", "14");

    struct minority_op put_op = {.ck = clerk_on(&s, p2, 20000)};
    struct minority_op get_op = {.ck = clerk_on(&s, p2, 20000), .get = true};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, minority_main, &put_op);
    pthread_create(&t2, NULL, minority_main, &get_op);
    /* The lab's window: no progress in the minority for 1 s (a wait that
     * a slow machine only makes longer, so it cannot pass by luck). */
    h_sleep_ms(1000);
    CU_ASSERT(__atomic_load_n(&put_op.done_at, __ATOMIC_ACQUIRE) == 0);
    CU_ASSERT(__atomic_load_n(&get_op.done_at, __ATOMIC_ACQUIRE) == 0);
    check_value(ckp1, "1", "14");
    put(ckp1, "1", "16");
    check_value(ckp1, "1", "16");

    int all[5] = {0, 0, 0, 0, 0};
    partition(&s, all);
    uint64_t healed = h_now_ms();
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CU_ASSERT_EQUAL(put_op.rv, CLERK_OK);
    CU_ASSERT(get_op.rv == CLERK_OK);
    /* The lab's OnePartition constant (../shared/TESTING.md: "completes
     * <= 3 s after heal"), kept as the point of this test: the one timing
     * bound of the suite besides speed's 33 ms. */
    CU_ASSERT(put_op.done_at - healed <= 3000);
    CU_ASSERT(get_op.done_at - healed <= 3000);
    printf("\n  one_partition: minority put done %" PRIu64
           " ms and get %" PRIu64 " ms after healing\n",
           put_op.done_at - healed, get_op.done_at - healed);
    check_value(s.all, "1", "15");
    clerk_close(put_op.ck);
    clerk_close(get_op.ck);
    clerk_close(ckp1);
    scripted_stop(&s);
}

/* Node i's status, polled until pred holds or ms pass. */
static bool node_status(struct scripted *s,
                        size_t i,
                        struct clerk_node_status *out)
{
    struct clerk_node_status *st;
    size_t n;
    if (clerk_status(s->all, &st, &n) != CLERK_OK) {
        return false;
    }
    bool ok = i < n && st[i].reachable;
    if (ok) {
        *out = st[i];
    }
    clerk_free(st);
    return ok;
}

/* Largest log (entries after the snapshot) of any reachable node. */
static uint64_t max_log(struct scripted *s)
{
    uint64_t m = 0;
    for (size_t i = 0; i < s->c.n; i++) {
        struct clerk_node_status st;
        if (node_status(s, i, &st) &&
            st.last_log_index - st.snapshot_index > m) {
            m = st.last_log_index - st.snapshot_index;
        }
    }
    return m;
}

#define SNAP_ENTRIES  10
#define SNAP_TRAILING 1
#define SNAP_FLAGS    "--snapshot-entries 10 --snapshot-trailing 1"
#define LOG_BOUND     (2 * SNAP_ENTRIES + SNAP_TRAILING)

/* The lab's SnapshotRPC: a node cut off while the others compact must
 * catch up through InstallSnapshot. */
static void test_snapshot_rpc(void)
{
    struct scripted s;
    scripted_start(&s, 3, SNAP_FLAGS);
    put(s.all, "a", "A");
    check_value(s.all, "a", "A");
    int g1[3] = {0, 0, 1};
    partition(&s, g1);
    struct clerk *ck1 = clerk_on(&s, 0x3, 15000); /* nodes 1 and 2 */
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "%d", i);
        put(ck1, k, k);
    }
    put(ck1, "b", "B");
    /* Compaction follows the writes: wait (loosely) for the majority's
     * logs to come within the bound. */
    uint64_t log = max_log(&s);
    for (uint64_t end = h_now_ms() + 15000; log > LOG_BOUND && h_now_ms() < end;
         log = max_log(&s)) {
        h_sleep_ms(100);
    }
    CU_ASSERT(log <= LOG_BOUND);
    struct clerk_node_status st3 = {0};
    CU_ASSERT(node_status(&s, 2, &st3) && st3.snapshot_index == 0);

    int g2[3] = {0, 1, 0};
    partition(&s, g2);
    struct clerk *ck2 = clerk_on(&s, 0x5, 15000); /* nodes 1 and 3 */
    put(ck2, "c", "C");
    put(ck2, "d", "D");
    check_value(ck2, "a", "A");
    check_value(ck2, "b", "B");
    check_value(ck2, "1", "1");
    check_value(ck2, "49", "49");
    /* Node 3 could only take part by installing the majority's snapshot. */
    CU_ASSERT(node_status(&s, 2, &st3) && st3.snapshot_index > 0);

    int all[3] = {0, 0, 0};
    partition(&s, all);
    put(s.all, "e", "E");
    check_value(s.all, "c", "C");
    check_value(s.all, "e", "E");
    check_value(s.all, "1", "1");
    printf("\n  snapshot_rpc: largest log %" PRIu64
           " entries (threshold %d); node 3 installed a snapshot at %" PRIu64
           "\n",
           log, SNAP_ENTRIES, st3.snapshot_index);
    clerk_close(ck1);
    clerk_close(ck2);
    scripted_stop(&s);
}

/* The lab's SnapshotSize: 200 rounds of put and get on one key keep the
 * log within the threshold. */
static void test_snapshot_size(void)
{
    struct scripted s;
    scripted_start(&s, 3, SNAP_FLAGS);
    uint64_t worst = 0;
    for (int i = 0; i < 200; i++) {
        put(s.all, "x", "0");
        check_value(s.all, "x", "0");
        put(s.all, "x", "1");
        check_value(s.all, "x", "1");
        if (i % 20 == 0) {
            uint64_t l = max_log(&s);
            worst = l > worst ? l : worst;
        }
    }
    uint64_t l = max_log(&s);
    worst = l > worst ? l : worst;
    CU_ASSERT(worst <= LOG_BOUND);
    printf("\n  snapshot_size: largest log seen %" PRIu64
           " entries (bound %d)\n",
           worst, LOG_BOUND);
    scripted_stop(&s);
}

/* The lab's Speed: 1,000 sequential appends, each well under one
 * heartbeat interval (100 ms) on average: 33 ms at most (the lab's
 * documented constant, ../shared/TESTING.md; this build does them in
 * about 0.3 ms, a hundred times under it). */
static void test_speed(void)
{
    struct scripted s;
    scripted_start(&s, 3, NULL);
    put(s.all, "x", "");
    uint64_t t0 = h_now_ms();
    for (int i = 0; i < 1000; i++) {
        char v[16];
        int len = snprintf(v, sizeof v, "x %d y", i);
        CU_ASSERT_EQUAL_FATAL(clerk_append(s.all, "x", 1, v, (size_t)len),
                              CLERK_OK);
    }
    uint64_t took = h_now_ms() - t0;
    CU_ASSERT(took <= 33 * 1000);
    void *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(clerk_get(s.all, "x", 1, &v, &len), CLERK_OK);
    CU_ASSERT(v && strstr(v, "x 999 y") != NULL);
    clerk_free(v);
    printf("\n  speed: 1000 appends in %" PRIu64 " ms, %.2f ms each\n", took,
           (double)took / 1000);
    scripted_stop(&s);
}

/* ----------------------------------------------------- Jepsen's nemeses */

#define NEM(fn, n, cl, kind, ...)                               \
    static void fn(void)                                        \
    {                                                           \
        static const struct scenario sc = {.name = #fn + 5,     \
                                           .servers = n,        \
                                           .clients = cl,       \
                                           .readers = 3,        \
                                           .random_keys = true, \
                                           .nemesis = kind,     \
                                           __VA_ARGS__};        \
        faults_run(&sc);                                        \
    }

NEM(test_kill_one, 3, 5, NEM_KILL_ONE)
NEM(test_kill_minority, 5, 5, NEM_KILL_MINORITY)
NEM(test_kill_leader, 3, 5, NEM_KILL_LEADER)
/* On the disk-fault shim (as the power_loss_* tests): what a node
 * acknowledged must survive its power loss. */
NEM(test_kill_all, 3, 5, NEM_KILL_ALL, .diskfault = true)
NEM(test_pause_leader, 3, 5, NEM_PAUSE_LEADER)
NEM(test_isolate_leader, 5, 5, NEM_ISOLATE_LEADER)
NEM(test_majorities_ring, 5, 5, NEM_RING)
NEM(test_bridge, 5, 5, NEM_BRIDGE)
NEM(test_random_halves, 5, 5, NEM_RANDOM_HALVES)
NEM(test_lossy_jittery_duplicating,
    5,
    5,
    NEM_NONE,
    .unreliable = true,
    .duplicate = true)
NEM(test_long_reordering, 5, 5, NEM_NONE, .reorder = true)
/* Disks: power losses (what was not synced is lost), a disk that fills
 * and empties, a sync that fails once. */
NEM(test_power_loss_one, 3, 5, NEM_KILL_ONE, .diskfault = true)
NEM(test_power_loss_leader, 3, 5, NEM_KILL_LEADER, .diskfault = true)
NEM(test_power_loss_all, 5, 5, NEM_KILL_ALL, .diskfault = true, .snapshot = 50)
NEM(test_disk_full_fills_and_empties, 3, 5, NEM_DISK_FULL, .diskfault = true)
NEM(test_sync_fails_once, 3, 5, NEM_SYNC_FAIL, .diskfault = true)
NEM(test_mixed_faults_on_failing_disks,
    5,
    5,
    NEM_MIXED,
    .diskfault = true,
    .snapshot = 50,
    .iter_ms = 5000)
NEM(test_register_mixed_faults,
    5,
    10,
    NEM_MIXED,
    .workload = WL_REGISTER,
    .unreliable = true)
NEM(test_mixed_faults_with_snapshots,
    5,
    5,
    NEM_MIXED,
    .snapshot = 50,
    .crash = true)

/* -------------------------------------- ranges and transactions */

/* Jepsen's bank: 5 accounts of 100; 5 clients move money in txns that
 * compare the two accounts' mod revisions, 2 readers range over all of
 * them; every range must sum to 500, and the history (ranges, and
 * transfers as txns comparing the balances read) must be linearizable. */
#define BANK(fn, n, kind, ...)                                  \
    static void fn(void)                                        \
    {                                                           \
        static const struct scenario sc = {.name = #fn + 5,     \
                                           .servers = n,        \
                                           .clients = 5,        \
                                           .readers = 2,        \
                                           .nemesis = kind,     \
                                           .workload = WL_BANK, \
                                           __VA_ARGS__};        \
        faults_run(&sc);                                        \
    }

BANK(test_bank_kill_leader, 3, NEM_KILL_LEADER)
BANK(test_bank_pause_leader, 3, NEM_PAUSE_LEADER)
BANK(test_bank_random_halves, 5, NEM_RANDOM_HALVES)
BANK(test_bank_lossy_duplicating,
     5,
     NEM_NONE,
     .unreliable = true,
     .duplicate = true)
/* Every fault at random on a lossy network, snapshots, and every node
 * killed after each round. */
BANK(test_bank_mixed_faults,
     5,
     NEM_MIXED,
     .unreliable = true,
     .crash = true,
     .snapshot = 50)

/* Ranges, gets, puts, deletes and txns with value and version compares
 * and else branches on 3 keys: 8 clients and 2 readers. */
#define TXN(fn, kind, ...)                                     \
    static void fn(void)                                       \
    {                                                          \
        static const struct scenario sc = {.name = #fn + 5,    \
                                           .servers = 5,       \
                                           .clients = 8,       \
                                           .readers = 2,       \
                                           .nemesis = kind,    \
                                           .workload = WL_TXN, \
                                           __VA_ARGS__};       \
        faults_run(&sc);                                       \
    }

TXN(test_txn_random_halves, NEM_RANDOM_HALVES)
/* Every fault at random on a lossy network. */
TXN(test_txn_mixed_faults, NEM_MIXED, .unreliable = true)

/* ---------------------------------------------------------- watches */

/* 4 writers on three prefixes, 9 watchers (faults_watch.c) first served
 * by every node in turn; rounds of 10 s (the full tier: 3 of them, and
 * again on 7 nodes). The history is kept far longer than the rounds
 * write, so that nothing the check reads back is compacted (the default
 * keeps 100,000 revisions; a round writes about 30,000). */
#define WATCH_FLAGS "--history-revisions 10000000"
#define WATCH(fn, n, kind, ...)                                  \
    static void fn(void)                                         \
    {                                                            \
        static const struct scenario sc = {.name = #fn + 5,      \
                                           .servers = n,         \
                                           .clients = 4,         \
                                           .nemesis = kind,      \
                                           .ext = &faults_watch, \
                                           .iter_ms = 10000,     \
                                           .flags = WATCH_FLAGS, \
                                           __VA_ARGS__};         \
        faults_run(&sc);                                         \
    }

/* The quick tier runs kill_one and mixed_faults_with_snapshots. */
WATCH(test_watch_kill_leader, 3, NEM_KILL_LEADER, .full_only = true)
/* Every node serves some watch: each kill ends some of them. */
WATCH(test_watch_kill_one, 3, NEM_KILL_ONE)
WATCH(test_watch_pause_leader, 3, NEM_PAUSE_LEADER, .full_only = true)
WATCH(test_watch_isolate_leader, 5, NEM_ISOLATE_LEADER, .full_only = true)
/* Kills (the leader, any node, a minority), pauses and partitions at
 * random. */
WATCH(test_watch_mixed_faults, 3, NEM_MIXED, .full_only = true)
/* With snapshots (a node that catches up by one must still serve its
 * watches the history), and every node killed at the end of a round. */
WATCH(test_watch_mixed_faults_with_snapshots,
      5,
      NEM_MIXED,
      .snapshot = 50,
      .crash = true)

/* ------------------------------------------------- leases and locks */

/* 8 holders (faults_lease.c), half of them steady, half dying or revoking
 * and starting again; 5 contenders for one lock (faults_lock.c). Rounds
 * of 10 s (the full tier: 3 of them, and again on 7 nodes); the history
 * is kept for the check as in the watch suite. */
#define RECIPE(fn, n, kind, workload, ...)                       \
    static void fn(void)                                         \
    {                                                            \
        static const struct scenario sc = {.name = #fn + 5,      \
                                           .servers = n,         \
                                           .clients = 2,         \
                                           .nemesis = kind,      \
                                           .ext = &workload,     \
                                           .iter_ms = 10000,     \
                                           .flags = WATCH_FLAGS, \
                                           __VA_ARGS__};         \
        faults_run(&sc);                                         \
    }

/* The quick tier runs lease_kill_leader, lease_mixed_faults,
 * lock_pause_leader and lock_mixed_faults. */
RECIPE(test_lease_kill_leader, 3, NEM_KILL_LEADER, faults_lease)
RECIPE(test_lease_pause_leader,
       3,
       NEM_PAUSE_LEADER,
       faults_lease,
       .full_only = true)
RECIPE(test_lease_isolate_leader,
       5,
       NEM_ISOLATE_LEADER,
       faults_lease,
       .full_only = true)
/* Slower faults, so that leases of dead holders expire between them (at
 * the lab's pace every new leader extends them before they can), and
 * every node killed at the end of a round: the holders' keep-alives may
 * find no leader for a whole TTL and say so. */
RECIPE(test_lease_mixed_faults,
       5,
       NEM_MIXED,
       faults_lease,
       .nemesis_ms = 2500,
       .crash = true)

/* Faults every 2-3 s: a lease outlives a leader change by 2 election
 * timeouts, so under the lab's pace the lock of a paused or killed holder
 * would move on only after healing. */
RECIPE(test_lock_kill_leader,
       3,
       NEM_KILL_LEADER,
       faults_lock,
       .nemesis_ms = 2500,
       .full_only = true)
RECIPE(test_lock_pause_leader,
       3,
       NEM_PAUSE_LEADER,
       faults_lock,
       .nemesis_ms = 2500)
RECIPE(test_lock_mixed_faults, 5, NEM_MIXED, faults_lock, .nemesis_ms = 2000)

/* ------------------------------------------------------- membership */

/* The membership nemesis (faults_member.c): from 3 voters up to 5 and
 * back, nodes added as learners and promoted, removed (the leader too),
 * hosts replaced, with the leader killed right after it proposed a change
 * and the node being added or removed killed; one round of 12 s (the full
 * tier: 3 rounds, then again from 5 voters up to 7). Clients as in the
 * nemesis suite: 5 writers and 3 readers on shared keys. Appends to
 * shared keys make each key's value longer with every write, and the
 * history keeps every version: a small history keeps the snapshots that
 * new nodes fetch small. */
#define MEMBER_FLAGS "--history-bytes 4M"
#define MEMBER(fn, kind, ...)                                     \
    static void fn(void)                                          \
    {                                                             \
        static const struct scenario sc = {.name = #fn + 5,       \
                                           .servers = 3,          \
                                           .max_servers = 5,      \
                                           .clients = 5,          \
                                           .readers = 3,          \
                                           .random_keys = true,   \
                                           .nemesis = kind,       \
                                           .nem = &faults_member, \
                                           .iter_ms = 12000,      \
                                           __VA_ARGS__};          \
        faults_run(&sc);                                          \
    }

/* Appends (each acknowledged one present exactly once), with snapshots
 * every 50 entries: new nodes catch up from one. */
MEMBER(test_member_changes, NEM_NONE, .snapshot = 50, .flags = MEMBER_FLAGS)
/* The register (put, cas, delete, get on 3 keys), and partitions at the
 * changes: the new node cut off, the leader in a minority, random
 * halves. */
MEMBER(test_member_changes_with_partitions,
       NEM_RANDOM_HALVES,
       .workload = WL_REGISTER)

/* Heal every link, but delay the calls to node @to by @min_ms-@max_ms. */
static void slow_links_to(struct scripted *s,
                          size_t to,
                          unsigned min_ms,
                          unsigned max_ms)
{
    for (size_t i = 0; i < s->c.n; i++) {
        struct clerk_fault rule = {
            .target = to + 1, .delay_min_ms = min_ms, .delay_max_ms = max_ms};
        int err;
        uint64_t end = h_now_ms() + 10000;
        while ((err = clerk_fault(s->all, i, true, &rule, i != to, 0, NULL,
                                  NULL)) == CLERK_UNAVAILABLE &&
               h_now_ms() < end) {
            h_sleep_ms(100);
        }
        CU_ASSERT(err == CLERK_OK);
    }
}

/* Crash during snapshot transfer: a follower cut off while the others
 * compact many megabytes is killed (and then the leader is) in the middle
 * of receiving the snapshot; it must still catch up and serve the data. */
static void test_crash_during_snapshot_transfer(void)
{
    struct scripted s;
    scripted_start(&s, 3, "--snapshot-entries 20 --snapshot-trailing 2");
    int leader = h_find_leader(&s.c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    int lag = (leader + 1) % 3;
    int group[3] = {0, 0, 0};
    group[lag] = 1;
    /* 48 keys of 512 KiB: a 24 MiB snapshot, 24 chunks. */
    size_t vlen = 512 * 1024;
    char *val = malloc(vlen);
    CU_ASSERT_FATAL(val != NULL);
    int all[3] = {0, 0, 0};
    unsigned kills = 0, mid = 0;
    for (int round = 0; round < 4; round++) {
        /* Cut it off while the others write past a compaction or two, so
         * it needs a snapshot; rejoin; kill it while that streams in. */
        partition(&s, group);
        for (int i = 0; i < (round ? 30 : 48); i++) {
            int key = (round * 7 + i) % 48;
            memset(val, 'a' + (key + round) % 26, vlen);
            char k[16];
            snprintf(k, sizeof k, "big%d", key);
            CU_ASSERT_EQUAL(clerk_put(s.all, k, strlen(k), val, vlen),
                            CLERK_OK);
        }
        /* The others compact past it (a follower cut off holds no
         * compaction back). */
        int l = h_find_leader(&s.c, 2000);
        struct clerk_node_status ls, fs;
        for (uint64_t end = h_now_ms() + 10000; h_now_ms() < end;
             h_sleep_ms(50)) {
            l = h_find_leader(&s.c, 2000);
            if (l >= 0 && l != lag && node_status(&s, (size_t)l, &ls) &&
                node_status(&s, (size_t)lag, &fs) &&
                fs.applied_index < ls.snapshot_index) {
                break;
            }
        }
        /* Heal, with the links to it slowed so that the 24 chunks take
         * over a second: the kill comes in the middle of the transfer. */
        slow_links_to(&s, (size_t)lag, 40, 60);
        h_sleep_ms(30 + 30 * (unsigned)round);
        /* Rounds 0-2 kill the receiver, round 3 the sender. */
        l = h_find_leader(&s.c, 2000);
        bool needs = l >= 0 && node_status(&s, (size_t)l, &ls) &&
                     node_status(&s, (size_t)lag, &fs) &&
                     fs.applied_index < ls.snapshot_index;
        size_t victim = round < 3 || l < 0 ? (size_t)lag : (size_t)l;
        h_node_kill(&s.c, victim);
        kills++;
        mid += needs; /* it still lacked the snapshot it was being sent */
        h_sleep_ms(300);
        CU_ASSERT_FATAL(h_node_start(&s.c, victim) == 0);
        h_sleep_ms(300);
    }
    CU_ASSERT(mid >= 2);
    partition(&s, all);
    /* It catches up: same applied index as the others, and its own state
     * (a stale read on it alone) holds every value. */
    struct clerk_node_status st = {0};
    bool caught_up = false;
    for (int t = 0; t < 200 && !caught_up; t++) {
        struct clerk_node_status ls;
        int l = h_find_leader(&s.c, 1000);
        caught_up = l >= 0 && node_status(&s, (size_t)lag, &st) &&
                    node_status(&s, (size_t)l, &ls) &&
                    st.applied_index >= ls.commit_index && st.applied_index;
        if (!caught_up) {
            h_sleep_ms(100);
        }
    }
    CU_ASSERT(caught_up);
    CU_ASSERT(st.snapshot_index > 0);
    struct clerk *ck = clerk_on(&s, 1u << lag, 10000);
    clerk_set_read_mode(ck, CLERK_READ_STALE);
    for (int i = 0; i < 48; i++) {
        /* What the leader holds is the truth; the follower must agree. */
        char k[16];
        snprintf(k, sizeof k, "big%d", i);
        void *v = NULL, *want = NULL;
        size_t len = 0, wlen = 0;
        CU_ASSERT_EQUAL(clerk_get(ck, k, strlen(k), &v, &len), CLERK_OK);
        CU_ASSERT_EQUAL(clerk_get(s.all, k, strlen(k), &want, &wlen), CLERK_OK);
        CU_ASSERT(len == vlen && wlen == vlen && v && want &&
                  memcmp(v, want, vlen) == 0);
        clerk_free(v);
        clerk_free(want);
    }
    printf(
        "\n  crash_during_snapshot_transfer: %u kills, %u of them while "
        "node %d lacked the snapshot it was being sent; it caught up at "
        "applied %" PRIu64 ", snapshot %" PRIu64 "\n",
        kills, mid, lag + 1, st.applied_index, st.snapshot_index);
    clerk_close(ck);
    free(val);
    scripted_stop(&s);
}

static CU_TestInfo lab_tests[] = {
    {"basic", test_basic},
    {"concurrent", test_concurrent},
    {"unreliable", test_unreliable},
    {"unreliable_one_key", test_unreliable_one_key},
    {"one_partition", test_one_partition},
    {"many_partitions_one_client", test_many_partitions_one_client},
    {"many_partitions_many_clients", test_many_partitions_many_clients},
    {"persist_one_client", test_persist_one_client},
    {"persist_concurrent", test_persist_concurrent},
    {"persist_concurrent_unreliable", test_persist_concurrent_unreliable},
    {"persist_partition", test_persist_partition},
    {"persist_partition_unreliable", test_persist_partition_unreliable},
    {"persist_partition_unreliable_linearizable",
     test_persist_partition_unreliable_linearizable},
    {"snapshot_rpc", test_snapshot_rpc},
    {"snapshot_size", test_snapshot_size},
    {"snapshot_recover", test_snapshot_recover},
    {"snapshot_recover_many_clients", test_snapshot_recover_many_clients},
    {"snapshot_unreliable", test_snapshot_unreliable},
    {"snapshot_unreliable_recover", test_snapshot_unreliable_recover},
    {"snapshot_unreliable_recover_concurrent_partition",
     test_snapshot_unreliable_recover_concurrent_partition},
    {"snapshot_unreliable_recover_concurrent_partition_linearizable",
     test_snapshot_unreliable_recover_concurrent_partition_linearizable},
    {"speed", test_speed},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo nemesis_tests[] = {
    {"kill_one", test_kill_one},
    {"kill_minority", test_kill_minority},
    {"kill_leader", test_kill_leader},
    {"kill_all", test_kill_all},
    {"pause_leader", test_pause_leader},
    {"isolate_leader", test_isolate_leader},
    {"majorities_ring", test_majorities_ring},
    {"bridge", test_bridge},
    {"random_halves", test_random_halves},
    {"lossy_jittery_duplicating", test_lossy_jittery_duplicating},
    {"long_reordering", test_long_reordering},
    {"power_loss_one", test_power_loss_one},
    {"power_loss_leader", test_power_loss_leader},
    {"power_loss_all", test_power_loss_all},
    {"disk_full_fills_and_empties", test_disk_full_fills_and_empties},
    {"sync_fails_once", test_sync_fails_once},
    {"mixed_faults_on_failing_disks", test_mixed_faults_on_failing_disks},
    {"register_mixed_faults", test_register_mixed_faults},
    {"mixed_faults_with_snapshots", test_mixed_faults_with_snapshots},
    {"crash_during_snapshot_transfer", test_crash_during_snapshot_transfer},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo txn_tests[] = {
    {"bank_kill_leader", test_bank_kill_leader},
    {"bank_pause_leader", test_bank_pause_leader},
    {"bank_random_halves", test_bank_random_halves},
    {"bank_lossy_duplicating", test_bank_lossy_duplicating},
    {"bank_mixed_faults", test_bank_mixed_faults},
    {"txn_random_halves", test_txn_random_halves},
    {"txn_mixed_faults", test_txn_mixed_faults},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo watch_tests[] = {
    {"watch_kill_leader", test_watch_kill_leader},
    {"watch_kill_one", test_watch_kill_one},
    {"watch_pause_leader", test_watch_pause_leader},
    {"watch_isolate_leader", test_watch_isolate_leader},
    {"watch_mixed_faults", test_watch_mixed_faults},
    {"watch_mixed_faults_with_snapshots",
     test_watch_mixed_faults_with_snapshots},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo lease_tests[] = {
    {"lease_kill_leader", test_lease_kill_leader},
    {"lease_pause_leader", test_lease_pause_leader},
    {"lease_isolate_leader", test_lease_isolate_leader},
    {"lease_mixed_faults", test_lease_mixed_faults},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo lock_tests[] = {
    {"lock_kill_leader", test_lock_kill_leader},
    {"lock_pause_leader", test_lock_pause_leader},
    {"lock_mixed_faults", test_lock_mixed_faults},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo member_tests[] = {
    {"member_changes", test_member_changes},
    {"member_changes_with_partitions", test_member_changes_with_partitions},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"lab", NULL, NULL, NULL, NULL, lab_tests},
    {"nemesis", NULL, NULL, NULL, NULL, nemesis_tests},
    {"txn", NULL, NULL, NULL, NULL, txn_tests},
    {"watch", NULL, NULL, NULL, NULL, watch_tests},
    {"lease", NULL, NULL, NULL, NULL, lease_tests},
    {"lock", NULL, NULL, NULL, NULL, lock_tests},
    {"member", NULL, NULL, NULL, NULL, member_tests},
    CU_SUITE_INFO_NULL,
};

int main(int argc, char **argv)
{
    /* A client writing to a node the nemesis just killed gets EPIPE, not
     * a signal that ends the whole suite (the other cluster tests do the
     * same). */
    signal(SIGPIPE, SIG_IGN);
    printf("fault tier: %s (RAFTKV_FAULT_TIER=quick|full)\n",
           faults_full_tier() ? "full" : "quick");
    return cunit_main(argc, argv, suites);
}
