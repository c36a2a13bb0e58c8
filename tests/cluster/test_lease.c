/* test_lease.c: leases on real clusters: keys attached to a lease vanish
 * after it expires (never before its TTL) and not while it is kept alive,
 * also across a leader's death (the new leader extends every lease);
 * revoke deletes all its keys at one revision; a put to a missing lease
 * writes nothing; leases survive a restart of every node and a backup
 * restored into a new cluster; the background keep-alive tells its caller
 * when the lease is revoked under it. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"
#include "rpc/rpc.h"

static struct clerk *open_clerk(struct h_cluster *c)
{
    char eps[512];
    h_endpoints(c, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 10000};
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    return ck;
}

static int put_lease(struct clerk *ck, const char *k, uint64_t lease)
{
    int err = clerk_put_lease(ck, k, strlen(k), "v", 1, lease, 0, NULL);
    if (err && err != CLERK_LEASE_NOT_FOUND) {
        fprintf(stderr, "put %s: %s\n", k, clerk_errmsg(ck));
    }
    return err;
}

static bool exists(struct clerk *ck, const char *k)
{
    struct clerk_kv *kv = NULL;
    int err = clerk_get_ex(ck, k, strlen(k), &kv, NULL);
    CU_ASSERT(err == CLERK_OK || err == CLERK_NOT_FOUND);
    clerk_kv_free(kv);
    return err == CLERK_OK;
}

/* Wait until key k is gone; returns when (ms), or 0 after @timeout_ms. */
static uint64_t wait_gone(struct clerk *ck, const char *k, unsigned timeout_ms)
{
    uint64_t end = h_now_ms() + timeout_ms;
    while (h_now_ms() < end) {
        if (!exists(ck, k)) {
            return h_now_ms();
        }
        h_sleep_ms(50);
    }
    return 0;
}

/* Revision of the last change to the store. */
static uint64_t store_revision(struct clerk *ck)
{
    struct clerk_kv *kv = NULL;
    uint64_t rev = 0;
    clerk_get_ex(ck, "no-such-key", 11, &kv, &rev);
    clerk_kv_free(kv);
    return rev;
}

/* The history from rev on must be @n deletes, all at revision rev. */
static void check_deletes_at(struct clerk *ck, uint64_t rev, size_t n)
{
    struct clerk_events_result *r = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_events(ck, rev, NULL, 0, NULL, 0, 0, &r),
                          CLERK_OK);
    CU_ASSERT_EQUAL(r->n_events, n);
    for (size_t i = 0; i < r->n_events; i++) {
        CU_ASSERT_EQUAL(r->events[i].type, CLERK_EVENT_DELETE);
        CU_ASSERT_EQUAL(r->events[i].kv.mod_revision, rev);
    }
    clerk_events_result_free(r);
}

/* A metric of node i (-1 when missing). */
static double metric(struct h_cluster *c, size_t i, const char *name)
{
    static char body[1 << 17];
    if (h_http_get(c, i, "GET", "/metrics", body, sizeof body) != 200) {
        return -1;
    }
    return h_metric(body, name);
}

/* Keep-alives a node answered OK: unary calls, and renewals on streams. */
#define UNARY_KEEPALIVES                                                \
    "raftkv_rpc_requests_total{service=\"raftkv.LeaseService\",method=" \
    "\"LeaseKeepAlive\",status=\"OK\"}"
#define STREAM_RENEWALS "raftkv_lease_stream_renewals_total"
#define KA_STREAMS      "raftkv_lease_keepalive_streams"

/* Wait until node i's metric @name is @want (5 s at most). */
static bool metric_becomes(struct h_cluster *c,
                           size_t i,
                           const char *name,
                           double want)
{
    uint64_t end = h_now_ms() + 5000;
    while (metric(c, i, name) != want && h_now_ms() < end) {
        h_sleep_ms(50);
    }
    return metric(c, i, name) == want;
}

/* What a background keep-alive told its caller. */
struct lost
{
    atomic_int calls;  /* lost_cb calls */
    atomic_int reason; /* the last reason */
};

static void on_lost(uint64_t id, int reason, void *arg)
{
    (void)id;
    struct lost *l = arg;
    atomic_store(&l->reason, reason);
    atomic_fetch_add(&l->calls, 1);
}

/* Kill -9 the leader; the node that leads next (within 10 s). */
static int kill_leader(struct h_cluster *c, int leader)
{
    h_node_kill(c, (size_t)leader);
    int next = -1;
    uint64_t end = h_now_ms() + 10000;
    while ((next < 0 || next == leader) && h_now_ms() < end) {
        next = h_find_leader(c, 1000);
    }
    CU_ASSERT_FATAL(next >= 0 && next != leader);
    return next;
}

static void test_lease_keys_vanish_after_expiry(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_clerk(&c);
    /* A TTL below the minimum (2 s with the default election timeout) is
     * raised to it. */
    uint64_t id = 0;
    int64_t ttl = 0;
    uint64_t t0 = h_now_ms();
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 1, 0, &id, &ttl), CLERK_OK);
    CU_ASSERT(id != 0 && id < (1ull << 63));
    CU_ASSERT_EQUAL(ttl, 2);
    if (ttl != 2) {
        printf("\n  granted TTL %lld: %s\n", (long long)ttl, clerk_errmsg(ck));
    }
    CU_ASSERT_EQUAL(put_lease(ck, "exp/a", id), CLERK_OK);
    CU_ASSERT_EQUAL(put_lease(ck, "exp/b", id), CLERK_OK);
    CU_ASSERT_EQUAL(put_lease(ck, "exp/kept", 0), CLERK_OK);
    struct clerk_kv *kv = NULL;
    CU_ASSERT_EQUAL(clerk_get_ex(ck, "exp/a", 5, &kv, NULL), CLERK_OK);
    CU_ASSERT(kv && kv->lease == id);
    clerk_kv_free(kv);
    struct clerk_lease_ttl_result *tr = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_timetolive(ck, id, true, &tr), CLERK_OK);
    /* At most the TTL, plus the extension of a leader that took office
     * after the grant was proposed (2 x 500 ms). */
    CU_ASSERT(tr->granted_ttl == 2 && tr->ttl <= 3);
    CU_ASSERT_EQUAL(tr->n_keys, 2);
    CU_ASSERT(tr->n_keys == 2 && strcmp(tr->keys[0].key, "exp/a") == 0 &&
              strcmp(tr->keys[1].key, "exp/b") == 0);
    clerk_lease_ttl_result_free(tr);
    CU_ASSERT_EQUAL(metric(&c, (size_t)leader, "raftkv_leases"), 1);

    /* Gone once the TTL passed, not before, and within a bound. */
    uint64_t gone = wait_gone(ck, "exp/a", 8000);
    CU_ASSERT_FATAL(gone != 0);
    printf("\n  keys gone %llu ms after the grant (TTL 2 s)\n",
           (unsigned long long)(gone - t0));
    CU_ASSERT(gone - t0 >= 2000);
    CU_ASSERT(gone - t0 <= 2000 + 3000);
    CU_ASSERT_FALSE(exists(ck, "exp/b"));
    CU_ASSERT(exists(ck, "exp/kept"));
    /* Both at one revision: the expiry's. */
    uint64_t rev = store_revision(ck);
    check_deletes_at(ck, rev, 2);
    CU_ASSERT_EQUAL(clerk_lease_timetolive(ck, id, false, &tr),
                    CLERK_LEASE_NOT_FOUND);
    CU_ASSERT_EQUAL(clerk_lease_keepalive_once(ck, id, NULL),
                    CLERK_LEASE_NOT_FOUND);
    CU_ASSERT_EQUAL(metric(&c, (size_t)leader, "raftkv_leases"), 0);
    CU_ASSERT(metric(&c, (size_t)leader, "raftkv_lease_expired_total") >= 1);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

static void test_lease_keepalive_keeps_it_past_several_ttls(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_clerk(&c);
    uint64_t id = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 2, 0, &id, NULL), CLERK_OK);
    CU_ASSERT_EQUAL(put_lease(ck, "ka/k", id), CLERK_OK);
    /* Renewed by hand (what kvctl lease keep-alive does) ... */
    for (int i = 0; i < 4; i++) {
        int64_t ttl = 0;
        CU_ASSERT_EQUAL(clerk_lease_keepalive_once(ck, id, &ttl), CLERK_OK);
        CU_ASSERT_EQUAL(ttl, 2);
        h_sleep_ms(700);
    }
    CU_ASSERT(exists(ck, "ka/k"));
    /* ... and in the background, for over three TTLs more, over one
     * keep-alive stream: a renewal every third of the TTL, none unary. */
    struct lost l = {0};
    struct clerk_keepalive *ka = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_keepalive_start(ck, id, on_lost, &l, &ka),
                          CLERK_OK);
    h_sleep_ms(7000);
    CU_ASSERT(exists(ck, "ka/k"));
    CU_ASSERT_EQUAL(atomic_load(&l.calls), 0);
    size_t ld = (size_t)leader;
    double renewals = metric(&c, ld, STREAM_RENEWALS);
    printf("\n  %.0f renewals on the stream in 7 s (TTL 2 s)\n", renewals);
    CU_ASSERT(renewals >= 6 && renewals <= 14);
    CU_ASSERT_EQUAL(metric(&c, ld, UNARY_KEEPALIVES), 4);
    CU_ASSERT_EQUAL(metric(&c, ld, KA_STREAMS), 1);
    struct clerk_lease_ttl_result *tr = NULL;
    CU_ASSERT_EQUAL(clerk_lease_timetolive(ck, id, false, &tr), CLERK_OK);
    CU_ASSERT(tr && tr->ttl >= 0 && tr->granted_ttl == 2);
    clerk_lease_ttl_result_free(tr);
    /* Once it stops, its stream is closed and the lease expires. */
    uint64_t t0 = h_now_ms();
    clerk_lease_keepalive_stop(ka);
    CU_ASSERT(metric_becomes(&c, ld, KA_STREAMS, 0));
    uint64_t gone = wait_gone(ck, "ka/k", 8000);
    CU_ASSERT(gone != 0 && gone - t0 <= 2000 + 3000);
    CU_ASSERT_EQUAL(atomic_load(&l.calls), 0);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

static void test_lease_kept_alive_across_a_leader_kill(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_clerk(&c);
    uint64_t id = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 3, 0, &id, NULL), CLERK_OK);
    CU_ASSERT_EQUAL(put_lease(ck, "lk/k", id), CLERK_OK);
    struct lost l = {0};
    struct clerk_keepalive *ka = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_keepalive_start(ck, id, on_lost, &l, &ka),
                          CLERK_OK);
    h_sleep_ms(1500);
    /* The leader dies; the next one takes over the lease's clock. */
    int next = kill_leader(&c, leader);
    h_sleep_ms(9000); /* three TTLs under the new leader */
    CU_ASSERT(exists(ck, "lk/k"));
    CU_ASSERT_EQUAL(atomic_load(&l.calls), 0);
    /* The keep-alive's stream moved to the new leader. */
    CU_ASSERT_EQUAL(metric(&c, (size_t)next, KA_STREAMS), 1);
    CU_ASSERT(metric(&c, (size_t)next, STREAM_RENEWALS) >= 6);
    CU_ASSERT_EQUAL(metric(&c, (size_t)next, UNARY_KEEPALIVES), 0);
    /* The holder stops: the lease ends within TTL + the extension a new
     * leader gives (it just took over) + a sweep. */
    uint64_t t0 = h_now_ms();
    clerk_lease_keepalive_stop(ka);
    uint64_t gone = wait_gone(ck, "lk/k", 10000);
    CU_ASSERT(gone != 0 && gone - t0 <= 3000 + 3000);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

static void test_lease_revoke_and_missing_leases(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct clerk *ck = open_clerk(&c);
    uint64_t id = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 60, 0, &id, NULL), CLERK_OK);
    /* An id of one's own; an id that exists is refused. */
    uint64_t mine = 0;
    CU_ASSERT_EQUAL(clerk_lease_grant(ck, 60, 0x1234, &mine, NULL), CLERK_OK);
    CU_ASSERT_EQUAL(mine, 0x1234);
    CU_ASSERT_EQUAL(clerk_lease_grant(ck, 60, 0x1234, NULL, NULL),
                    CLERK_BAD_REQUEST);
    uint64_t *ids = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(clerk_lease_list(ck, &ids, &n), CLERK_OK);
    CU_ASSERT_EQUAL(n, 2);
    clerk_free(ids);
    char k[32];
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof k, "rv/%d", i);
        CU_ASSERT_EQUAL(put_lease(ck, k, id), CLERK_OK);
    }
    CU_ASSERT_EQUAL(put_lease(ck, "rv/other", 0), CLERK_OK);
    uint64_t before = store_revision(ck), rev = 0, deleted = 0;
    CU_ASSERT_EQUAL(clerk_lease_revoke(ck, id, &rev, &deleted), CLERK_OK);
    CU_ASSERT_EQUAL(rev, before + 1);
    CU_ASSERT_EQUAL(deleted, 5);
    check_deletes_at(ck, rev, 5);
    struct clerk_range_result *rr = NULL;
    CU_ASSERT_EQUAL(clerk_range(ck, "rv/", 3, "rv0", 3, 0, 0, &rr), CLERK_OK);
    CU_ASSERT(rr && rr->count == 1);
    clerk_range_result_free(rr);
    CU_ASSERT_EQUAL(clerk_lease_revoke(ck, id, NULL, NULL),
                    CLERK_LEASE_NOT_FOUND);

    /* Puts to a lease that does not exist write nothing. */
    CU_ASSERT_EQUAL(put_lease(ck, "rv/x", id), CLERK_LEASE_NOT_FOUND);
    CU_ASSERT_EQUAL(put_lease(ck, "rv/other", 0xdead), CLERK_LEASE_NOT_FOUND);
    struct clerk_txn *t = clerk_txn_new();
    CU_ASSERT_FATAL(t != NULL);
    CU_ASSERT_EQUAL(clerk_txn_put(t, CLERK_TXN_THEN, "rv/y", 4, "1", 1, 0),
                    CLERK_OK);
    CU_ASSERT_EQUAL(
        clerk_txn_put_lease(t, CLERK_TXN_THEN, "rv/z", 4, "1", 1, id, 0),
        CLERK_OK);
    CU_ASSERT_EQUAL(clerk_txn_commit(ck, t, NULL), CLERK_LEASE_NOT_FOUND);
    clerk_txn_free(t);
    CU_ASSERT_EQUAL(store_revision(ck), rev);
    CU_ASSERT_FALSE(exists(ck, "rv/x"));
    CU_ASSERT_FALSE(exists(ck, "rv/y"));
    struct clerk_kv *kv = NULL;
    CU_ASSERT_EQUAL(clerk_get_ex(ck, "rv/other", 8, &kv, NULL), CLERK_OK);
    CU_ASSERT(kv && kv->lease == 0);
    clerk_kv_free(kv);

    /* A transaction can compare a key's lease. */
    CU_ASSERT_EQUAL(put_lease(ck, "rv/m", mine), CLERK_OK);
    t = clerk_txn_new();
    CU_ASSERT_EQUAL(
        clerk_txn_compare_lease(t, "rv/m", 4, CLERK_CMP_EQUAL, mine), CLERK_OK);
    struct clerk_txn_result *res = NULL;
    CU_ASSERT_EQUAL(clerk_txn_commit(ck, t, &res), CLERK_OK);
    CU_ASSERT(res && res->succeeded);
    clerk_txn_result_free(res);
    clerk_txn_free(t);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

static void test_lease_background_keepalive_tells_when_revoked(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_clerk(&c);
    uint64_t id = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 3, 0, &id, NULL), CLERK_OK);
    struct lost l = {0};
    struct clerk_keepalive *ka = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_keepalive_start(ck, id, on_lost, &l, &ka),
                          CLERK_OK);
    /* Someone else revokes it: told at the next renewal (a third of the
     * TTL), once. */
    struct clerk *other = open_clerk(&c);
    CU_ASSERT_EQUAL(clerk_lease_revoke(other, id, NULL, NULL), CLERK_OK);
    uint64_t end = h_now_ms() + 5000;
    while (atomic_load(&l.calls) == 0 && h_now_ms() < end) {
        h_sleep_ms(20);
    }
    CU_ASSERT_EQUAL(atomic_load(&l.calls), 1);
    CU_ASSERT_EQUAL(atomic_load(&l.reason), CLERK_LEASE_NOT_FOUND);
    h_sleep_ms(1500);
    CU_ASSERT_EQUAL(atomic_load(&l.calls), 1);
    /* Told on its stream (the first renewal, in start, too). */
    CU_ASSERT(metric(&c, (size_t)leader, STREAM_RENEWALS) >= 1);
    CU_ASSERT_EQUAL(metric(&c, (size_t)leader, UNARY_KEEPALIVES), 0);
    clerk_lease_keepalive_stop(ka);
    /* Starting one for a lease that is gone fails at once. */
    CU_ASSERT_EQUAL(clerk_lease_keepalive_start(ck, id, on_lost, &l, &ka),
                    CLERK_LEASE_NOT_FOUND);
    clerk_close(other);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

/* No renewal succeeds (every node stopped): the keep-alive tells its
 * caller once, a TTL after the last good renewal was sent, not before. */
static void test_lease_background_keepalive_tells_when_nothing_answers(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct clerk *ck = open_clerk(&c);
    uint64_t id = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 3, 0, &id, NULL), CLERK_OK);
    struct lost l = {0};
    struct clerk_keepalive *ka = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_keepalive_start(ck, id, on_lost, &l, &ka),
                          CLERK_OK);
    h_sleep_ms(1200);
    uint64_t t0 = h_now_ms();
    for (size_t i = 0; i < 3; i++) {
        h_node_pause(&c, i, true);
    }
    uint64_t end = h_now_ms() + 10000;
    while (atomic_load(&l.calls) == 0 && h_now_ms() < end) {
        h_sleep_ms(20);
    }
    uint64_t told = h_now_ms() - t0;
    printf("\n  told %llu ms after the cluster stopped (TTL 3 s)\n",
           (unsigned long long)told);
    CU_ASSERT_EQUAL(atomic_load(&l.calls), 1);
    CU_ASSERT_EQUAL(atomic_load(&l.reason), CLERK_TIMEOUT);
    /* The last good renewal was sent within a third of the TTL before
     * the stop (plus a little): not before 2 s, not long after 3 s. */
    CU_ASSERT(told >= 1900 && told <= 3000 + 1500);
    h_sleep_ms(500);
    CU_ASSERT_EQUAL(atomic_load(&l.calls), 1);
    for (size_t i = 0; i < 3; i++) {
        h_node_pause(&c, i, false);
    }
    clerk_lease_keepalive_stop(ka);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

#define ACCEPTED "raftkv_rpc_connections_accepted_total"
#define STREAMS_ENDED                                                   \
    "raftkv_rpc_requests_total{service=\"raftkv.LeaseService\",method=" \
    "\"LeaseKeepAliveStream\",status=\"OK\"}"

/* Leadership moves between two renewals: the old leader ends the stream
 * with a hint, and the next renewal goes straight to the new leader (it
 * does not connect to the old one again first). */
static void test_lease_background_keepalive_follows_a_transfer(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    size_t old = (size_t)leader, next = (old + 1) % 3;
    struct clerk *ck = open_clerk(&c);
    uint64_t id = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 3, 0, &id, NULL), CLERK_OK);
    struct lost l = {0};
    struct clerk_keepalive *ka = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_keepalive_start(ck, id, on_lost, &l, &ka),
                          CLERK_OK);
    h_sleep_ms(300); /* between two renewals (a second apart) */
    CU_ASSERT_EQUAL_FATAL(clerk_transfer_leader(ck, c.nodes[next].id, NULL),
                          CLERK_OK);
    CU_ASSERT(metric_becomes(&c, old, KA_STREAMS, 0));
    double accepted = metric(&c, old, ACCEPTED);
    CU_ASSERT(metric_becomes(&c, next, KA_STREAMS, 1));
    h_sleep_ms(2500);
    CU_ASSERT_EQUAL(metric(&c, old, ACCEPTED), accepted);
    CU_ASSERT_EQUAL(atomic_load(&l.calls), 0);
    CU_ASSERT(metric(&c, next, STREAM_RENEWALS) >= 2);
    CU_ASSERT_EQUAL(metric(&c, old, STREAMS_ENDED), 1);
    CU_ASSERT_EQUAL(metric(&c, next, UNARY_KEEPALIVES), 0);
    clerk_lease_keepalive_stop(ka);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

/* A put attaching key @k to lease @id: the clerk error, quietly. */
static int try_put_lease(struct clerk *ck, const char *k, uint64_t id)
{
    return clerk_put_lease(ck, k, strlen(k), "v", 1, id, 0, NULL);
}

/* A lease's number of keys, as its time-to-live answer lists them. */
static size_t keys_of_lease(struct clerk *ck, uint64_t id)
{
    struct clerk_lease_ttl_result *tr = NULL;
    size_t n = SIZE_MAX;
    if (clerk_lease_timetolive(ck, id, true, &tr) == CLERK_OK) {
        n = tr->n_keys;
    }
    clerk_lease_ttl_result_free(tr);
    return n;
}

static void on_raw_reply(const ProtobufCMessage *m, void *data)
{
    int *err = data;
    if (m && m->descriptor == &raftkv__put_append_reply__descriptor) {
        *err = (int)((const Raftkv__PutAppendReply *)m)->err;
    } else if (m) {
        *err = (int)((const Raftkv__DeleteRangeReply *)m)->err;
    }
}

/* Node i's own answer (a KvError; -1: none) to a put of key @k with lease
 * @lease, or (@end set) to a delete of [k, end), sent to it alone. */
static int raw_write(struct h_cluster *c,
                     size_t i,
                     const char *k,
                     const char *end,
                     uint64_t lease)
{
    struct rpc_channel_options o = {.deadline_ms = 5000, .tls = c->client_tls};
    struct rpc_channel *ch =
        rpc_channel_new_blocking(c->nodes[i].host, c->nodes[i].port, &o);
    CU_ASSERT_FATAL(ch != NULL);
    ProtobufCService *svc =
        rpc_channel_service(ch, &raftkv__kv_service__descriptor);
    static uint8_t client[16] = {0x5a, 0x17};
    static uint64_t request;
    int err = -1;
    if (end) {
        Raftkv__DeleteRangeArgs d = RAFTKV__DELETE_RANGE_ARGS__INIT;
        d.key = (ProtobufCBinaryData){strlen(k), (uint8_t *)k};
        d.range_end = (ProtobufCBinaryData){strlen(end), (uint8_t *)end};
        d.client_id = (ProtobufCBinaryData){16, client};
        d.request_id = ++request;
        raftkv__kv_service__delete_range(
            svc, &d, (Raftkv__DeleteRangeReply_Closure)on_raw_reply, &err);
    } else {
        Raftkv__PutAppendArgs p = RAFTKV__PUT_APPEND_ARGS__INIT;
        p.key = (ProtobufCBinaryData){strlen(k), (uint8_t *)k};
        p.value = (ProtobufCBinaryData){1, (uint8_t *)"v"};
        p.lease = lease;
        p.client_id = (ProtobufCBinaryData){16, client};
        p.request_id = ++request;
        raftkv__kv_service__put_append(
            svc, &p, (Raftkv__PutAppendReply_Closure)on_raw_reply, &err);
    }
    rpc_channel_free(ch);
    return err;
}

/* Ending a lease deletes all its keys in one write, which every node
 * applies on its event loop: the leader refuses (TOO_MANY_KEYS) a put or
 * a transaction that would give a lease more than --max-lease-keys keys.
 * Keys attached already, moved away or deleted are counted right, and a
 * new leader counts from its own state. */
static void test_lease_keys_per_lease_are_bounded(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3,
                                    "--max-lease-keys 20 "
                                    "--max-delete-keys 5") == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_clerk(&c);
    uint64_t a = 0, b = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 600, 0, &a, NULL), CLERK_OK);
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 600, 0, &b, NULL), CLERK_OK);
    char k[32];
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "mlk/%02d", i);
        CU_ASSERT_EQUAL(put_lease(ck, k, a), CLERK_OK);
    }
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/20", a), CLERK_TOO_MANY_KEYS);
    CU_ASSERT_PTR_NOT_NULL(strstr(clerk_errmsg(ck), "--max-lease-keys"));
    printf("\n  refused: %s\n", clerk_errmsg(ck));
    CU_ASSERT_FALSE(exists(ck, "mlk/20"));
    /* A key attached to it already adds nothing. */
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/05", a), CLERK_OK);
    /* A transaction that would attach two more writes nothing. */
    struct clerk_txn *t = clerk_txn_new();
    CU_ASSERT_FATAL(t != NULL);
    clerk_txn_put_lease(t, CLERK_TXN_THEN, "mlk/20", 6, "v", 1, a, 0);
    clerk_txn_put_lease(t, CLERK_TXN_THEN, "mlk/21", 6, "v", 1, a, 0);
    CU_ASSERT_EQUAL(clerk_txn_commit(ck, t, NULL), CLERK_TOO_MANY_KEYS);
    clerk_txn_free(t);
    CU_ASSERT_FALSE(exists(ck, "mlk/20"));
    CU_ASSERT_FALSE(exists(ck, "mlk/21"));
    /* Moved to another lease, deleted: room for as many new keys. */
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/05", b), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_delete(ck, "mlk/00", 6), CLERK_OK);
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/20", a), CLERK_OK);
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/21", a), CLERK_OK);
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/22", a), CLERK_TOO_MANY_KEYS);
    CU_ASSERT_EQUAL(keys_of_lease(ck, a), 20);
    /* Other leases and keys without one are not held back. */
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/22", b), CLERK_OK);
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/23", 0), CLERK_OK);

    /* A follower leaves the limits to the leader: it redirects, and
     * never refuses TOO_MANY_KEYS from its own state and settings. */
    size_t f = ((size_t)leader + 1) % 3;
    CU_ASSERT_EQUAL(raw_write(&c, f, "mlk/24", NULL, a),
                    RAFTKV__KV_ERROR__KV_WRONG_LEADER);
    CU_ASSERT_EQUAL(raw_write(&c, f, "mlk/", "mlk0", 0),
                    RAFTKV__KV_ERROR__KV_WRONG_LEADER);
    CU_ASSERT_EQUAL(raw_write(&c, (size_t)leader, "mlk/24", NULL, a),
                    RAFTKV__KV_ERROR__KV_TOO_MANY_KEYS);
    CU_ASSERT_EQUAL(raw_write(&c, (size_t)leader, "mlk/", "mlk0", 0),
                    RAFTKV__KV_ERROR__KV_TOO_MANY_KEYS);
    /* A new leader counts the keys of its own state. */
    kill_leader(&c, leader);
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/24", a), CLERK_TOO_MANY_KEYS);
    CU_ASSERT_EQUAL(clerk_delete(ck, "mlk/01", 6), CLERK_OK);
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/24", a), CLERK_OK);
    CU_ASSERT_EQUAL(try_put_lease(ck, "mlk/25", a), CLERK_TOO_MANY_KEYS);
    /* Its revoke deletes what it has. */
    uint64_t deleted = 0;
    CU_ASSERT_EQUAL(clerk_lease_revoke(ck, a, NULL, &deleted), CLERK_OK);
    CU_ASSERT_EQUAL(deleted, 20);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

/* Leases that expire together end in writes of about --max-lease-keys
 * keys each (a lease whole in one), not all in one write. */
static void test_lease_expiry_is_spread_over_bounded_writes(void)
{
    enum { LEASES = 6, KEYS = 12 };
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, "--max-lease-keys 20") == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_clerk(&c);
    uint64_t ids[LEASES];
    for (int l = 0; l < LEASES; l++) {
        CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 2, 0, &ids[l], NULL),
                              CLERK_OK);
        for (int i = 0; i < KEYS; i++) {
            char k[32];
            snprintf(k, sizeof k, "mle/%d/%02d", l, i);
            CU_ASSERT_EQUAL(put_lease(ck, k, ids[l]), CLERK_OK);
        }
    }
    uint64_t from = store_revision(ck) + 1;
    /* A new leader gives every lease the same expiry (now + TTL + its
     * extension): all six come due in one sweep. */
    h_node_kill(&c, (size_t)leader);
    for (int l = 0; l < LEASES; l++) {
        char k[32];
        snprintf(k, sizeof k, "mle/%d/00", l);
        CU_ASSERT(wait_gone(ck, k, 20000) != 0);
    }
    struct clerk_events_result *r = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_events(ck, from, NULL, 0, NULL, 0, 0, &r),
                          CLERK_OK);
    size_t deletes = 0, writes = 0, most = 0, in_write = 0;
    uint64_t rev = 0;
    for (size_t i = 0; i < r->n_events; i++) {
        if (r->events[i].type != CLERK_EVENT_DELETE) {
            continue;
        }
        deletes++;
        if (r->events[i].kv.mod_revision != rev) {
            rev = r->events[i].kv.mod_revision;
            writes++;
            in_write = 0;
        }
        if (++in_write > most) {
            most = in_write;
        }
    }
    clerk_events_result_free(r);
    printf("\n  %zu keys deleted in %zu writes, at most %zu in one\n", deletes,
           writes, most);
    CU_ASSERT_EQUAL(deletes, LEASES * KEYS);
    CU_ASSERT(most <= 20);
    CU_ASSERT(writes >= LEASES);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

static int to_file(const void *data, size_t len, void *arg)
{
    return fwrite(data, 1, len, arg) == len ? 0 : -1;
}

/* kvserver --restore for node i of c. */
static int restore(struct h_cluster *c, size_t i, const char *file)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "timeout 30 %s --id %llu --cluster %s --data-dir %s --restore %s "
             ">/dev/null 2>&1",
             KVSERVER_BIN, (unsigned long long)c->nodes[i].id, c->cluster_arg,
             c->nodes[i].dir, file);
    return system(cmd);
}

static void test_lease_survives_restart_and_restore(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct clerk *ck = open_clerk(&c);
    uint64_t id = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 60, 0, &id, NULL), CLERK_OK);
    CU_ASSERT_EQUAL(put_lease(ck, "rs/a", id), CLERK_OK);
    CU_ASSERT_EQUAL(put_lease(ck, "rs/b", id), CLERK_OK);
    char file[600];
    snprintf(file, sizeof file, "%s/leases.snap", c.root);
    FILE *fp = fopen(file, "wb");
    CU_ASSERT_FATAL(fp != NULL);
    CU_ASSERT_EQUAL(clerk_snapshot_save(ck, to_file, fp, NULL, NULL, NULL),
                    CLERK_OK);
    fclose(fp);
    clerk_close(ck);

    /* Every node stops and starts again. */
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(h_node_term(&c, i), 0);
    }
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_FATAL(h_node_start(&c, i) == 0);
    }
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    ck = open_clerk(&c);
    struct clerk_lease_ttl_result *tr = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_timetolive(ck, id, true, &tr), CLERK_OK);
    CU_ASSERT_EQUAL(tr->granted_ttl, 60);
    CU_ASSERT_EQUAL(tr->n_keys, 2);
    CU_ASSERT(tr->ttl > 50); /* a new leader extends, never shortens */
    clerk_lease_ttl_result_free(tr);
    uint64_t deleted = 0;
    CU_ASSERT_EQUAL(clerk_lease_revoke(ck, id, NULL, &deleted), CLERK_OK);
    CU_ASSERT_EQUAL(deleted, 2);
    clerk_close(ck);

    /* The backup, restored into a new cluster, holds the lease and the
     * index of its keys. */
    struct h_cluster r;
    CU_ASSERT_FATAL(h_cluster_start(&r, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&r, 10000) >= 0);
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(h_node_term(&r, i), 0);
        CU_ASSERT_EQUAL(cunit_remove_tree(r.nodes[i].dir), 0);
        CU_ASSERT_EQUAL(restore(&r, i, file), 0);
    }
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_FATAL(h_node_start(&r, i) == 0);
    }
    CU_ASSERT_FATAL(h_find_leader(&r, 10000) >= 0);
    ck = open_clerk(&r);
    CU_ASSERT(exists(ck, "rs/a"));
    uint64_t *ids = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(clerk_lease_list(ck, &ids, &n), CLERK_OK);
    CU_ASSERT(n == 1 && ids && ids[0] == id);
    clerk_free(ids);
    CU_ASSERT_EQUAL(clerk_lease_revoke(ck, id, NULL, &deleted), CLERK_OK);
    CU_ASSERT_EQUAL(deleted, 2);
    CU_ASSERT_FALSE(exists(ck, "rs/a"));
    CU_ASSERT_FALSE(exists(ck, "rs/b"));
    clerk_close(ck);
    r.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&r) == 0);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

/* Run kvctl against cluster c; its standard output in out, its exit
 * status returned. */
static int kvctl(struct h_cluster *c, const char *args, char *out, size_t len)
{
    char eps[512], cmd[2048];
    h_endpoints(c, eps, sizeof eps);
    snprintf(cmd, sizeof cmd, "%s --cluster %s %s 2>/dev/null", KVCTL_BIN, eps,
             args);
    FILE *p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    size_t got = fread(out, 1, len - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Run kvctl lease keep-alive ID until its first renewal is printed, then
 * send it SIGINT twice, @gap_us apart (as timeout(1) does: to kvctl, then
 * to its process group); its wait status. */
static int keepalive_interrupted_twice(const char *eps,
                                       uint64_t id,
                                       unsigned gap_us)
{
    char hex[17];
    snprintf(hex, sizeof hex, "%llx", (unsigned long long)id);
    int fds[2];
    if (pipe(fds) != 0) {
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(KVCTL_BIN, "kvctl", "--cluster", eps, "lease", "keep-alive", hex,
              (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    char line[256];
    size_t got = 0;
    uint64_t end = h_now_ms() + 10000;
    while (!memchr(line, '\n', got) && got < sizeof line && h_now_ms() < end) {
        struct pollfd pf = {fds[0], POLLIN, 0};
        if (poll(&pf, 1, 100) > 0) {
            ssize_t k = read(fds[0], line + got, sizeof line - got);
            if (k <= 0) {
                break;
            }
            got += (size_t)k;
        }
    }
    kill(pid, SIGINT);
    if (gap_us) {
        usleep(gap_us);
    }
    kill(pid, SIGINT);
    int st = 0;
    waitpid(pid, &st, 0);
    close(fds[0]);
    return st;
}

static void test_lease_kvctl_commands(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    char out[4096], args[256];
    CU_ASSERT_EQUAL_FATAL(kvctl(&c, "lease grant 30", out, sizeof out), 0);
    char hex[17] = "";
    CU_ASSERT_EQUAL_FATAL(sscanf(out, "lease %16s granted with TTL(30s)", hex),
                          1);
    snprintf(args, sizeof args, "put svc/a 10.0.0.1 --lease %s", hex);
    CU_ASSERT_EQUAL(kvctl(&c, args, out, sizeof out), 0);
    snprintf(args, sizeof args, "lease timetolive %s --keys", hex);
    CU_ASSERT_EQUAL(kvctl(&c, args, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "granted with TTL(30s), remaining("));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "attached keys([svc/a])"));
    snprintf(args, sizeof args, "-w json lease keep-alive %s --once", hex);
    CU_ASSERT_EQUAL(kvctl(&c, args, out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"ok\":true"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"ttl\":30"));
    CU_ASSERT_EQUAL(kvctl(&c, "lease list", out, sizeof out), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "found 1 leases"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, hex));
    /* Until interrupted: a line per renewal (a third of the TTL apart),
     * on a stream. */
    uint64_t id3 = 0;
    struct clerk *ck = open_clerk(&c);
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 3, 0, &id3, NULL), CLERK_OK);
    clerk_close(ck);
    snprintf(args, sizeof args,
             "timeout --preserve-status -s INT 3.5 %s --cluster %%s lease "
             "keep-alive %llx 2>&1",
             KVCTL_BIN, (unsigned long long)id3);
    char eps[512], cmd[2048];
    h_endpoints(&c, eps, sizeof eps);
    snprintf(cmd, sizeof cmd, args, eps);
    FILE *p = popen(cmd, "r");
    CU_ASSERT_FATAL(p != NULL);
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    int st = pclose(p);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr,
                "\n  kvctl lease keep-alive: wait status %#x, said:\n%s\n", st,
                out);
    }
    int lines = 0;
    for (const char *q = out; (q = strstr(q, "keepalived with TTL(3)")); q++) {
        lines++;
    }
    printf("\n  kvctl lease keep-alive: %d renewals in 3.5 s (TTL 3 s)\n",
           lines);
    CU_ASSERT(lines >= 3 && lines <= 5);
    CU_ASSERT(metric(&c, (size_t)leader, STREAM_RENEWALS) >= 4);
    CU_ASSERT_EQUAL(metric(&c, (size_t)leader, UNARY_KEEPALIVES), 0);
    /* A second signal while it stops (timeout(1) sends two; a Ctrl-C
     * pressed twice) does not kill it: it still stops cleanly, exit 0. */
    for (unsigned gap = 0; gap <= 4000; gap += 400) {
        st = keepalive_interrupted_twice(eps, id3, gap);
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr,
                    "\n  kvctl lease keep-alive, 2 SIGINTs %u us apart: wait "
                    "status %#x\n",
                    gap, st);
        }
    }
    snprintf(args, sizeof args, "lease revoke %s", hex);
    CU_ASSERT_EQUAL(kvctl(&c, args, out, sizeof out), 0);
    CU_ASSERT_EQUAL(kvctl(&c, "get svc/a", out, sizeof out), 1);
    /* Gone: exit 9, for the lease commands and a put naming it. */
    CU_ASSERT_EQUAL(kvctl(&c, args, out, sizeof out), 9);
    snprintf(args, sizeof args, "put svc/b x --lease 0x%s", hex);
    CU_ASSERT_EQUAL(kvctl(&c, args, out, sizeof out), 9);
    CU_ASSERT_EQUAL(kvctl(&c, "get svc/b", out, sizeof out), 1);
    snprintf(args, sizeof args, "lease keep-alive %s", hex);
    CU_ASSERT_EQUAL(kvctl(&c, args, out, sizeof out), 9);
    CU_ASSERT_EQUAL(kvctl(&c, "lease revoke xyz", out, sizeof out), 2);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

/* --------------------------------------------- LeaseKeepAliveStream */

/* What a raw LeaseKeepAliveStream's callback saw. */
struct ka_seen
{
    int frames;            /* answers before the end */
    int err;               /* the last answer's (or the end's) err */
    uint64_t id;           /* and its lease id */
    int64_t ttl;           /* and its TTL */
    uint64_t hint;         /* and its leader hint */
    int ends;              /* end calls */
    int end_status;        /* RPC_OK, or rpc_last_status() */
    char message[200];     /* the last frame's message */
    struct rpc_stream *st; /* the stream, NULL once it ended */
};

static void on_ka(struct rpc_stream *st,
                  const ProtobufCMessage *m,
                  bool end,
                  void *arg)
{
    (void)st;
    struct ka_seen *k = arg;
    const Raftkv__LeaseKeepAliveReply *r =
        (const Raftkv__LeaseKeepAliveReply *)m;
    if (r) {
        k->err = r->err;
        k->id = r->id;
        k->ttl = r->ttl;
        k->hint = r->leader ? r->leader->id : 0;
        snprintf(k->message, sizeof k->message, "%s",
                 r->message ? r->message : "");
    }
    if (end) {
        k->ends++;
        k->st = NULL;
        k->end_status = r ? RPC_OK : rpc_last_status();
    } else {
        k->frames++;
    }
}

/* A keep-alive stream to node i of c, opened with a renewal of id. */
static struct rpc_channel *ka_open(struct h_cluster *c,
                                   size_t i,
                                   uint64_t id,
                                   struct ka_seen *k)
{
    struct rpc_channel *ch =
        rpc_channel_new_blocking(c->nodes[i].host, c->nodes[i].port, NULL);
    CU_ASSERT_FATAL(ch != NULL);
    Raftkv__LeaseKeepAliveArgs a = RAFTKV__LEASE_KEEP_ALIVE_ARGS__INIT;
    a.id = id;
    memset(k, 0, sizeof *k);
    k->st = rpc_channel_stream(ch, &raftkv__lease_service__descriptor,
                               "LeaseKeepAliveStream", &a.base, on_ka, k);
    CU_ASSERT_FATAL(k->st != NULL);
    return ch;
}

/* Run ch's loop until k has @frames answers or has ended (5 s at most). */
static void ka_wait(struct rpc_channel *ch, struct ka_seen *k, int frames)
{
    uint64_t end = h_now_ms() + 5000;
    while (k->frames < frames && !k->ends && h_now_ms() < end) {
        rpc_channel_wait(ch, 200);
    }
}

static int ka_renew(struct ka_seen *k, uint64_t id)
{
    Raftkv__LeaseKeepAliveArgs a = RAFTKV__LEASE_KEEP_ALIVE_ARGS__INIT;
    a.id = id;
    return rpc_stream_send_msg(k->st, &a.base);
}

static void test_lease_stream_renews_on_the_leader_only(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    size_t follower = ((size_t)leader + 1) % 3;
    struct clerk *ck = open_clerk(&c);
    uint64_t id = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 5, 0, &id, NULL), CLERK_OK);

    /* A follower answers the stream's first renewal NOT_LEADER with the
     * leader's id, and ends the stream: the client goes there. */
    struct ka_seen f;
    struct rpc_channel *fch = ka_open(&c, follower, id, &f);
    ka_wait(fch, &f, 1);
    CU_ASSERT_EQUAL(f.ends, 1);
    CU_ASSERT_EQUAL(f.frames, 0);
    CU_ASSERT_EQUAL(f.end_status, RPC_OK);
    CU_ASSERT_EQUAL(f.err, RAFTKV__KV_ERROR__KV_WRONG_LEADER);
    CU_ASSERT_EQUAL(f.hint, c.nodes[leader].id);
    rpc_channel_free(fch);

    /* The leader answers the request and each message on the stream, in
     * order, one frame each: a lease that is gone with ttl 0, id 0 as a
     * bad request; the stream goes on after both. */
    struct ka_seen k;
    struct rpc_channel *ch = ka_open(&c, (size_t)leader, id, &k);
    ka_wait(ch, &k, 1);
    CU_ASSERT_EQUAL(k.frames, 1);
    CU_ASSERT_EQUAL(k.err, RAFTKV__KV_ERROR__KV_OK);
    CU_ASSERT_EQUAL(k.id, id);
    CU_ASSERT_EQUAL(k.ttl, 5);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(ka_renew(&k, id), 0);
        ka_wait(ch, &k, 2 + i);
        CU_ASSERT(k.frames == 2 + i && k.err == 0 && k.ttl == 5 && k.id == id);
    }
    CU_ASSERT_EQUAL(ka_renew(&k, 0xdead), 0);
    ka_wait(ch, &k, 5);
    CU_ASSERT_EQUAL(k.err, RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND);
    CU_ASSERT_EQUAL(k.id, 0xdead);
    CU_ASSERT_EQUAL(k.ttl, 0);
    CU_ASSERT_EQUAL(ka_renew(&k, 0), 0);
    ka_wait(ch, &k, 6);
    CU_ASSERT_EQUAL(k.err, RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    CU_ASSERT_EQUAL(ka_renew(&k, id), 0);
    ka_wait(ch, &k, 7);
    CU_ASSERT(k.frames == 7 && k.err == 0 && k.id == id);
    CU_ASSERT_EQUAL(k.ends, 0);
    CU_ASSERT_EQUAL(
        metric(&c, (size_t)leader, "raftkv_lease_keepalive_streams"), 1);
    CU_ASSERT_EQUAL(
        metric(&c, (size_t)leader, "raftkv_lease_stream_renewals_total"), 5);

    /* Leadership moves away: the stream ends with NOT_LEADER (or
     * UNAVAILABLE while no leader is known), not a broken connection,
     * and the new leader takes the renewals. */
    uint64_t now_leader = 0;
    CU_ASSERT_EQUAL_FATAL(
        clerk_transfer_leader(ck, c.nodes[follower].id, &now_leader), CLERK_OK);
    ka_wait(ch, &k, 100);
    CU_ASSERT_EQUAL(k.ends, 1);
    CU_ASSERT_EQUAL(k.end_status, RPC_OK);
    CU_ASSERT(k.err == RAFTKV__KV_ERROR__KV_WRONG_LEADER ||
              k.err == RAFTKV__KV_ERROR__KV_UNAVAILABLE);
    CU_ASSERT(k.err != RAFTKV__KV_ERROR__KV_WRONG_LEADER ||
              k.hint == c.nodes[follower].id);
    rpc_channel_free(ch);
    ch = ka_open(&c, follower, id, &k);
    ka_wait(ch, &k, 1);
    CU_ASSERT(k.frames == 1 && k.err == 0 && k.ttl == 5);
    CU_ASSERT_EQUAL(metric(&c, follower, KA_STREAMS), 1);
    CU_ASSERT_EQUAL(metric(&c, (size_t)leader, KA_STREAMS), 0);
    /* A leader that stops (SIGTERM) ends its streams with SHUTTING_DOWN,
     * a last frame that reaches the client before the connection goes. */
    CU_ASSERT_EQUAL(h_node_term(&c, follower), 0);
    ka_wait(ch, &k, 100);
    CU_ASSERT_EQUAL(k.ends, 1);
    CU_ASSERT_EQUAL(k.end_status, RPC_OK);
    CU_ASSERT_EQUAL(k.err, RAFTKV__KV_ERROR__KV_SHUTTING_DOWN);
    rpc_channel_free(ch);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

/* A leader cut off from the others never renews on the stream: each
 * renewal waits for a barrier that needs a quorum; and renewals that wait
 * are bounded per stream. */
static void test_lease_stream_renewal_waits_for_a_quorum(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_clerk(&c);
    uint64_t id = 0;
    CU_ASSERT_EQUAL_FATAL(clerk_lease_grant(ck, 30, 0, &id, NULL), CLERK_OK);
    struct ka_seen k;
    struct rpc_channel *ch = ka_open(&c, (size_t)leader, id, &k);
    ka_wait(ch, &k, 1);
    CU_ASSERT_FATAL(k.frames == 1 && k.err == 0);
    for (size_t i = 0; i < 3; i++) {
        if (i != (size_t)leader) {
            h_node_pause(&c, i, true);
        }
    }
    CU_ASSERT_EQUAL(ka_renew(&k, id), 0);
    ka_wait(ch, &k, 2);
    /* Not renewed; the stream ends once the node gives up leading (check
     * quorum) or the barrier times out. */
    CU_ASSERT_EQUAL(k.frames, 1);
    CU_ASSERT_EQUAL(k.ends, 1);
    CU_ASSERT_EQUAL(k.end_status, RPC_OK);
    CU_ASSERT(k.err != RAFTKV__KV_ERROR__KV_OK);
    CU_ASSERT_EQUAL(
        metric(&c, (size_t)leader, "raftkv_lease_stream_renewals_total"), 1);
    for (size_t i = 0; i < 3; i++) {
        h_node_pause(&c, i, false);
    }
    rpc_channel_free(ch);

    /* A client that sends renewals faster than they can be answered:
     * past 256 waiting on one stream, the stream ends. (The followers are
     * paused again, so that no renewal is answered meanwhile.) */
    leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    ch = ka_open(&c, (size_t)leader, id, &k);
    ka_wait(ch, &k, 1);
    CU_ASSERT_FATAL(k.frames == 1 && k.err == 0);
    for (size_t i = 0; i < 3; i++) {
        if (i != (size_t)leader) {
            h_node_pause(&c, i, true);
        }
    }
    for (int i = 0; i < 300; i++) {
        CU_ASSERT_EQUAL(ka_renew(&k, id), 0);
    }
    ka_wait(ch, &k, 2);
    CU_ASSERT_EQUAL(k.frames, 1);
    CU_ASSERT_EQUAL(k.ends, 1);
    CU_ASSERT_EQUAL(k.err, RAFTKV__KV_ERROR__KV_UNAVAILABLE);
    CU_ASSERT_PTR_NOT_NULL(strstr(k.message, "too many renewals"));
    for (size_t i = 0; i < 3; i++) {
        h_node_pause(&c, i, false);
    }
    rpc_channel_free(ch);
    clerk_close(ck);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_lease_keys_vanish_after_expiry",
         test_lease_keys_vanish_after_expiry},
        {"test_lease_keepalive_keeps_it_past_several_ttls",
         test_lease_keepalive_keeps_it_past_several_ttls},
        {"test_lease_kept_alive_across_a_leader_kill",
         test_lease_kept_alive_across_a_leader_kill},
        {"test_lease_revoke_and_missing_leases",
         test_lease_revoke_and_missing_leases},
        {"test_lease_background_keepalive_tells_when_revoked",
         test_lease_background_keepalive_tells_when_revoked},
        {"test_lease_background_keepalive_tells_when_nothing_answers",
         test_lease_background_keepalive_tells_when_nothing_answers},
        {"test_lease_background_keepalive_follows_a_transfer",
         test_lease_background_keepalive_follows_a_transfer},
        {"test_lease_keys_per_lease_are_bounded",
         test_lease_keys_per_lease_are_bounded},
        {"test_lease_expiry_is_spread_over_bounded_writes",
         test_lease_expiry_is_spread_over_bounded_writes},
        {"test_lease_survives_restart_and_restore",
         test_lease_survives_restart_and_restore},
        {"test_lease_kvctl_commands", test_lease_kvctl_commands},
        {"test_lease_stream_renews_on_the_leader_only",
         test_lease_stream_renews_on_the_leader_only},
        {"test_lease_stream_renewal_waits_for_a_quorum",
         test_lease_stream_renewal_waits_for_a_quorum},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"lease", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
