/* test_history.c: the server side of the data model on real clusters: the
 * leader compacts the history by revisions and by bytes through the log,
 * revisions and history survive a kill -9 and travel in snapshots to a
 * follower that fell behind, and ranges, transactions and history reads
 * are checked against the user's permissions over whole ranges. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

static struct clerk *open_on(struct h_cluster *c,
                             uint32_t which,
                             bool stale,
                             const char *user,
                             const char *password)
{
    char eps[512];
    h_endpoints_of(c, which, 0, eps, sizeof eps);
    struct clerk_options o = {
        .deadline_ms = 10000,
        .read_mode = stale ? CLERK_READ_STALE : CLERK_READ_LINEARIZABLE,
        .user = user,
        .password = password,
    };
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    return ck;
}

static void put_n(struct clerk *ck, const char *prefix, int n, size_t vlen)
{
    char k[64];
    char *v = malloc(vlen + 1);
    CU_ASSERT_FATAL(v != NULL);
    memset(v, 'v', vlen);
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "%s%04d", prefix, i);
        int err = clerk_put(ck, k, strlen(k), v, vlen);
        CU_ASSERT_EQUAL(err, CLERK_OK);
        if (err) {
            fprintf(stderr, "put %s: %s\n", k, clerk_errmsg(ck));
            break;
        }
    }
    free(v);
}

/* The history as a node sees it: from the oldest kept revision. */
static struct clerk_events_result *history(struct clerk *ck, int *err)
{
    struct clerk_events_result *r = NULL;
    *err = clerk_events(ck, 0, NULL, 0, NULL, 0, 0, &r);
    return r;
}

/* Wait until the history of every node starts after @at_least. */
static bool wait_compacted(struct h_cluster *c, uint64_t at_least)
{
    uint64_t end = h_now_ms() + 10000;
    for (size_t i = 0; i < c->n; i++) {
        struct clerk *one = open_on(c, 1u << i, true, NULL, NULL);
        bool done = false;
        while (!done && h_now_ms() < end) {
            int err;
            struct clerk_events_result *r = history(one, &err);
            done = err == CLERK_OK && r && r->compact_revision >= at_least;
            clerk_events_result_free(r);
            if (!done) {
                h_sleep_ms(50);
            }
        }
        clerk_close(one);
        if (!done) {
            fprintf(stderr, "node %zu: history not compacted to %llu\n", i,
                    (unsigned long long)at_least);
            return false;
        }
    }
    return true;
}

static void test_history_leader_compacts_past_history_revisions(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, "--history-revisions 20") == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct clerk *ck = open_on(&c, 7, false, NULL, NULL);
    put_n(ck, "k", 100, 10);
    int err;
    struct clerk_events_result *r = history(ck, &err);
    CU_ASSERT_FATAL(err == CLERK_OK && r);
    uint64_t rev = r->revision;
    clerk_events_result_free(r);
    CU_ASSERT(rev >= 101);
    /* The leader proposed it; every node applied it. */
    CU_ASSERT(wait_compacted(&c, rev - 20));
    r = history(ck, &err);
    CU_ASSERT_FATAL(err == CLERK_OK && r);
    CU_ASSERT(r->compact_revision <= rev); /* never past the store */
    CU_ASSERT_EQUAL(r->n_events, r->revision - r->compact_revision);
    CU_ASSERT(r->n_events <= 20);
    clerk_events_result_free(r);
    /* Older revisions are gone, with a clear error and the oldest left. */
    r = NULL;
    err = clerk_events(ck, 2, NULL, 0, NULL, 0, 0, &r);
    CU_ASSERT_EQUAL(err, CLERK_COMPACTED);
    CU_ASSERT(r && r->compact_revision >= rev - 20);
    clerk_events_result_free(r);
    /* The keys themselves are all there. */
    struct clerk_range_result *rr;
    CU_ASSERT_EQUAL(clerk_range(ck, "k", 1, "l", 1, 0, 0, &rr), CLERK_OK);
    CU_ASSERT_EQUAL(rr->count, 100);
    clerk_range_result_free(rr);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

/* The leader's commit index (0 when no leader answers). */
static uint64_t leader_commit(struct clerk *ck)
{
    struct clerk_node_status *st = NULL;
    size_t n = 0;
    uint64_t commit = 0;
    if (clerk_status(ck, &st, &n) == CLERK_OK) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(st[i].role, "leader") == 0) {
                commit = st[i].commit_index;
            }
        }
    }
    clerk_free(st);
    return commit;
}

/* Compact calls node i served (its metrics; -1 when unreadable). */
static double compact_calls(struct h_cluster *c, size_t i)
{
    static char body[1 << 17];
    if (h_http_get(c, i, "GET", "/metrics", body, sizeof body) != 200) {
        return -1;
    }
    return h_metric(body,
                    "raftkv_rpc_requests_total{service=\"raftkv."
                    "KvService\",method=\"Compact\",status=\"OK\"}");
}

/* Every node drops compacted history on its event loop: a compaction of
 * more events than --compact-step-records goes through the log in
 * entries of about that many, kvctl compact's (answered once all are
 * applied) and the leader's own alike. */
static void test_history_compaction_goes_in_steps(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, "--compact-step-records 20") == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    /* The leader alone, so that every call it gets is one of ours. */
    struct clerk *ck = open_on(&c, 1u << leader, false, NULL, NULL);
    put_n(ck, "s", 200, 10);
    put_n(ck, "s", 100, 12); /* the first 100 again: older versions */
    int err;
    struct clerk_events_result *r = history(ck, &err);
    CU_ASSERT_FATAL(err == CLERK_OK && r);
    uint64_t rev = r->revision;
    CU_ASSERT(r->n_events >= 300);
    clerk_events_result_free(r);
    /* Past the store's revision: refused whole, nothing dropped. */
    uint64_t compact = 0;
    CU_ASSERT_EQUAL(clerk_compact(ck, rev + 1, &compact),
                    CLERK_FUTURE_REVISION);
    r = history(ck, &err);
    CU_ASSERT(err == CLERK_OK && r && r->n_events >= 300);
    clerk_events_result_free(r);
    uint64_t before = leader_commit(ck);
    CU_ASSERT_EQUAL(clerk_compact(ck, rev, &compact), CLERK_OK);
    CU_ASSERT_EQUAL(compact, rev);
    uint64_t entries = leader_commit(ck) - before;
    double calls = compact_calls(&c, (size_t)leader);
    printf("\n  300 events compacted in %llu log entries, %.0f call(s)\n",
           (unsigned long long)entries, calls);
    CU_ASSERT(entries >= 300 / 20 - 1);
    /* One call of the client, answered after the last step: the leader
     * goes on by itself (no failed step that the client tries again). */
    CU_ASSERT_EQUAL(calls, 2); /* with the FUTURE_REVISION one above */
    CU_ASSERT(wait_compacted(&c, rev));
    /* Every key keeps its last value; the history before is gone. */
    struct clerk_range_result *rr;
    CU_ASSERT_EQUAL_FATAL(clerk_range(ck, "s", 1, "t", 1, 0, 0, &rr), CLERK_OK);
    CU_ASSERT_EQUAL(rr->count, 200);
    CU_ASSERT(rr->n_kvs == 200 && rr->kvs[0].value_len == 12 &&
              rr->kvs[199].value_len == 10);
    clerk_range_result_free(rr);
    r = NULL;
    CU_ASSERT_EQUAL(clerk_events(ck, 2, NULL, 0, NULL, 0, 0, &r),
                    CLERK_COMPACTED);
    clerk_events_result_free(r);
    /* Once more: compacted already. */
    CU_ASSERT_EQUAL(clerk_compact(ck, rev, NULL), CLERK_COMPACTED);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);

    /* The leader's own compaction: revisions of 8 events each, at most 5
     * a step, so one revision per entry. */
    CU_ASSERT_FATAL(h_cluster_start(&c, 3,
                                    "--compact-step-records 5 "
                                    "--history-revisions 10") == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    ck = open_on(&c, 7, false, NULL, NULL);
    before = leader_commit(ck);
    for (int t = 0; t < 40; t++) {
        struct clerk_txn *tx = clerk_txn_new();
        CU_ASSERT_FATAL(tx != NULL);
        for (int i = 0; i < 8; i++) {
            char k[32];
            snprintf(k, sizeof k, "a%02d/%d", t, i);
            clerk_txn_put(tx, CLERK_TXN_THEN, k, strlen(k), "v", 1, 0);
        }
        CU_ASSERT_EQUAL(clerk_txn_commit(ck, tx, NULL), CLERK_OK);
        clerk_txn_free(tx);
    }
    r = history(ck, &err);
    CU_ASSERT_FATAL(err == CLERK_OK && r);
    rev = r->revision;
    clerk_events_result_free(r);
    CU_ASSERT(wait_compacted(&c, rev - 10));
    entries = leader_commit(ck) - before;
    printf("  40 transactions and their compaction: %llu log entries\n",
           (unsigned long long)entries);
    /* The 40 writes (and a session), and about 30 compactions. */
    CU_ASSERT(entries >= 40 + 25);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

/* A compaction on a thread of its own. */
struct compact_call
{
    struct clerk *ck;
    uint64_t rev, compact;
    int rv;
};

static void *compact_main(void *arg)
{
    struct compact_call *cc = arg;
    cc->rv = clerk_compact(cc->ck, cc->rev, &cc->compact);
    return NULL;
}

/* Leadership moves while a compaction goes in steps: the old leader
 * answers WRONG_LEADER (not OK short of the revision asked), libclerk asks
 * the new one, which goes on from where the history is: the answer is OK
 * once all of it is compacted, on every node. */
static void test_history_compaction_in_steps_across_a_new_leader(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, "--compact-step-records 1") == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_on(&c, 7, false, NULL, NULL);
    put_n(ck, "n", 400, 8);
    int err;
    struct clerk_events_result *r = history(ck, &err);
    CU_ASSERT_FATAL(err == CLERK_OK && r);
    struct compact_call cc = {.ck = open_on(&c, 7, false, NULL, NULL),
                              .rev = r->revision};
    clerk_events_result_free(r);
    pthread_t t;
    CU_ASSERT_FATAL(pthread_create(&t, NULL, compact_main, &cc) == 0);
    /* Some steps in (one entry per revision), hand leadership over. */
    uint64_t end = h_now_ms() + 5000;
    do {
        h_sleep_ms(20);
        r = history(ck, &err);
        bool started = err == CLERK_OK && r && r->compact_revision > 50;
        clerk_events_result_free(r);
        if (started) {
            break;
        }
    } while (h_now_ms() < end);
    uint64_t next = 0;
    int trv = clerk_transfer_leader(ck, 0, &next);
    pthread_join(t, NULL);
    printf("\n  transfer to node %llu: %s; compaction: %s, to %llu of %llu\n",
           (unsigned long long)next, clerk_error_code(trv),
           clerk_error_code(cc.rv), (unsigned long long)cc.compact,
           (unsigned long long)cc.rev);
    CU_ASSERT_EQUAL(trv, CLERK_OK);
    CU_ASSERT_EQUAL(cc.rv, CLERK_OK);
    CU_ASSERT_EQUAL(cc.compact, cc.rev);
    /* The transfer came part way: the old leader answered, and the call
     * went again to the new one. */
    double calls = 0;
    for (size_t i = 0; i < c.n; i++) {
        calls += compact_calls(&c, i);
    }
    printf("  %.0f Compact calls in all\n", calls);
    CU_ASSERT(calls >= 2);
    CU_ASSERT(wait_compacted(&c, cc.rev));
    clerk_close(cc.ck);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

static void test_history_leader_compacts_past_history_bytes(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, "--history-bytes 64KiB") == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct clerk *ck = open_on(&c, 7, false, NULL, NULL);
    put_n(ck, "b", 60, 4096); /* 240 KiB of values */
    CU_ASSERT(wait_compacted(&c, 2));
    /* What is left holds at most about the cap. */
    uint64_t end = h_now_ms() + 10000;
    size_t bytes = SIZE_MAX;
    while (bytes > 64 * 1024 + 4200 && h_now_ms() < end) {
        int err;
        struct clerk_events_result *r = history(ck, &err);
        CU_ASSERT_FATAL(err == CLERK_OK && r);
        bytes = 0;
        for (size_t i = 0; i < r->n_events; i++) {
            bytes += r->events[i].kv.key_len + r->events[i].kv.value_len + 49;
        }
        clerk_events_result_free(r);
        if (bytes > 64 * 1024 + 4200) {
            h_sleep_ms(50);
        }
    }
    CU_ASSERT(bytes <= 64 * 1024 + 4200);
    CU_ASSERT(bytes >= 32 * 1024); /* not everything: only what is over */
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

/* Node i's view, read from it alone: its revision and its history. */
static void node_view(struct h_cluster *c,
                      size_t i,
                      const char *wait_key,
                      uint64_t *revision,
                      size_t *events,
                      uint64_t *last_mod)
{
    struct clerk *one = open_on(c, 1u << i, true, NULL, NULL);
    uint64_t end = h_now_ms() + 15000;
    struct clerk_kv *kv = NULL;
    uint64_t rev = 0;
    while (clerk_get_ex(one, wait_key, strlen(wait_key), &kv, &rev) !=
               CLERK_OK &&
           h_now_ms() < end) {
        h_sleep_ms(50);
    }
    CU_ASSERT_FATAL(kv != NULL);
    *last_mod = kv->mod_revision;
    clerk_kv_free(kv);
    int err;
    struct clerk_events_result *r = history(one, &err);
    CU_ASSERT_FATAL(err == CLERK_OK && r);
    *revision = r->revision;
    *events = r->n_events;
    clerk_events_result_free(r);
    clerk_close(one);
}

static void test_history_survives_kill_and_travels_in_snapshots(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3,
                                    "--snapshot-entries 40 "
                                    "--snapshot-trailing 5") == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    size_t F = ((size_t)leader + 1) % 3;
    struct clerk *ck = open_on(&c, 7, false, NULL, NULL);
    put_n(ck, "a", 10, 8);
    /* A follower misses 200 writes: the others compact their logs, so it
     * gets a snapshot when it comes back. */
    h_node_kill(&c, F);
    put_n(ck, "b", 200, 8);
    struct clerk_kv *kv = NULL;
    uint64_t rev = 0;
    CU_ASSERT_EQUAL(clerk_get_ex(ck, "b0199", 5, &kv, &rev), CLERK_OK);
    CU_ASSERT_FATAL(kv != NULL);
    uint64_t want_mod = kv->mod_revision;
    clerk_kv_free(kv);
    CU_ASSERT_FATAL(h_node_start(&c, F) == 0);
    uint64_t lrev, frev, lmod, fmod;
    size_t lev, fev;
    node_view(&c, (size_t)leader, "b0199", &lrev, &lev, &lmod);
    node_view(&c, F, "b0199", &frev, &fev, &fmod);
    CU_ASSERT(h_log_contains(&c, F, "installed a snapshot of the state"));
    CU_ASSERT_EQUAL(fmod, want_mod);
    CU_ASSERT_EQUAL(frev, lrev);
    CU_ASSERT_EQUAL(fev, lev); /* the whole history came along */
    CU_ASSERT_EQUAL(lev, 210);
    clerk_close(ck);

    /* Every node killed at once and started again: nothing is lost. */
    for (size_t i = 0; i < 3; i++) {
        h_node_kill(&c, i);
    }
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_FATAL(h_node_start(&c, i) == 0);
    }
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    for (size_t i = 0; i < 3; i++) {
        node_view(&c, i, "b0199", &frev, &fev, &fmod);
        CU_ASSERT_EQUAL(frev, lrev);
        CU_ASSERT_EQUAL(fev, lev);
        CU_ASSERT_EQUAL(fmod, want_mod);
    }
    /* Writes go on from the same revision. */
    ck = open_on(&c, 7, false, NULL, NULL);
    struct clerk_put_result *pr;
    CU_ASSERT_EQUAL(clerk_put_ex(ck, "after", 5, "x", 1, 0, &pr), CLERK_OK);
    CU_ASSERT(pr && pr->revision == lrev + 1);
    clerk_put_result_free(pr);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

static void test_history_ranges_need_permission_for_every_key(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct clerk *ck = open_on(&c, 7, false, NULL, NULL);
    put_n(ck, "app/", 3, 4);
    put_n(ck, "other/", 3, 4);
    uint8_t end[16];
    size_t end_len = clerk_prefix_end("app/", 4, end);
    CU_ASSERT_EQUAL(clerk_role_add(ck, "app"), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_role_grant_permission(ck, "app", CLERK_PERM_READWRITE,
                                                "app/", 4, end, end_len),
                    CLERK_OK);
    CU_ASSERT_EQUAL(clerk_user_add(ck, "alice", "alice-pw"), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_user_grant_role(ck, "alice", "app"), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_user_add(ck, "root", "root-pw"), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_user_grant_role(ck, "root", "root"), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_auth_enable(ck), CLERK_OK);
    clerk_close(ck);

    struct clerk *a = open_on(&c, 7, false, "alice", "alice-pw");
    struct clerk_range_result *rr = NULL;
    CU_ASSERT_EQUAL(clerk_range(a, "app/", 4, end, end_len, 0, 0, &rr),
                    CLERK_OK);
    CU_ASSERT(rr && rr->count == 3);
    clerk_range_result_free(rr);
    rr = NULL;
    /* A range reaching past her keys is refused whole, not cut. */
    CU_ASSERT_EQUAL(clerk_range(a, "app/", 4, "b", 1, 0, 0, &rr),
                    CLERK_PERMISSION_DENIED);
    CU_ASSERT(strstr(clerk_errmsg(a), "every key of") != NULL);
    clerk_range_result_free(rr);
    struct clerk_delete_result *dr = NULL;
    CU_ASSERT_EQUAL(clerk_delete_range(a, "a", 1, "\0", 1, 0, &dr),
                    CLERK_PERMISSION_DENIED);
    clerk_delete_result_free(dr);
    /* A transaction is checked op by op, both branches. */
    struct clerk_txn *t = clerk_txn_new();
    clerk_txn_compare_version(t, "app/x", 5, CLERK_CMP_EQUAL, 0);
    clerk_txn_put(t, CLERK_TXN_THEN, "app/x", 5, "1", 1, 0);
    clerk_txn_put(t, CLERK_TXN_ELSE, "other/x", 7, "1", 1, 0);
    struct clerk_txn_result *tr = NULL;
    CU_ASSERT_EQUAL(clerk_txn_commit(a, t, &tr), CLERK_PERMISSION_DENIED);
    clerk_txn_result_free(tr);
    clerk_txn_free(t);
    t = clerk_txn_new();
    clerk_txn_compare_version(t, "app/x", 5, CLERK_CMP_EQUAL, 0);
    clerk_txn_put(t, CLERK_TXN_THEN, "app/x", 5, "1", 1, 0);
    tr = NULL;
    CU_ASSERT_EQUAL(clerk_txn_commit(a, t, &tr), CLERK_OK);
    CU_ASSERT(tr && tr->succeeded);
    clerk_txn_result_free(tr);
    clerk_txn_free(t);
    /* History: her range, not everyone's; compaction is root's. */
    struct clerk_events_result *er = NULL;
    CU_ASSERT_EQUAL(clerk_events(a, 0, "app/", 4, end, end_len, 0, &er),
                    CLERK_OK);
    CU_ASSERT(er && er->n_events == 4);
    clerk_events_result_free(er);
    er = NULL;
    CU_ASSERT_EQUAL(clerk_events(a, 0, NULL, 0, NULL, 0, 0, &er),
                    CLERK_PERMISSION_DENIED);
    clerk_events_result_free(er);
    uint64_t compacted;
    CU_ASSERT_EQUAL(clerk_compact(a, 2, &compacted), CLERK_PERMISSION_DENIED);
    clerk_close(a);
    struct clerk *root = open_on(&c, 7, false, "root", "root-pw");
    CU_ASSERT_EQUAL(clerk_compact(root, 2, &compacted), CLERK_OK);
    clerk_close(root);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_history_leader_compacts_past_history_revisions",
         test_history_leader_compacts_past_history_revisions},
        {"test_history_compaction_goes_in_steps",
         test_history_compaction_goes_in_steps},
        {"test_history_compaction_in_steps_across_a_new_leader",
         test_history_compaction_in_steps_across_a_new_leader},
        {"test_history_leader_compacts_past_history_bytes",
         test_history_leader_compacts_past_history_bytes},
        {"test_history_survives_kill_and_travels_in_snapshots",
         test_history_survives_kill_and_travels_in_snapshots},
        {"test_history_ranges_need_permission_for_every_key",
         test_history_ranges_need_permission_for_every_key},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"history", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
