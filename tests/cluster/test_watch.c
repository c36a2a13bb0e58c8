/* test_watch.c: WatchService on a real 3-node cluster, through libclerk
 * and kvctl: every change delivered once and in order (from now, from an
 * old revision, across the kill of the node serving it and a leader
 * change), COMPACTED for a revision no longer kept, progress while idle,
 * many watches on one connection, cancel. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <proto/kv.pb-c.h>
#include <rpc/rpc.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

static struct h_cluster wc; /* one cluster for every test */
static char eps[512];
static struct clerk *ck;

static int setup(void)
{
    if (h_cluster_start(&wc, 3, NULL) != 0 || h_find_leader(&wc, 10000) < 0) {
        return 1;
    }
    h_endpoints(&wc, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 10000};
    return clerk_open(&ck, eps, &o) == CLERK_OK ? 0 : 1;
}

static int teardown(void)
{
    clerk_close(ck);
    wc.keep = CU_get_number_of_failures() > 0;
    return h_cluster_destroy(&wc) == 0 ? 0 : 1;
}

/* Put and return the revision it made (0 on failure). */
static uint64_t put_on(struct clerk *c, const char *k, const char *v)
{
    struct clerk_put_result *r;
    int err = clerk_put_ex(c, k, strlen(k), v, strlen(v), 0, &r);
    if (err) {
        fprintf(stderr, "\n  put %s: %s: %s\n", k, clerk_error_code(err),
                clerk_errmsg(c));
        return 0;
    }
    uint64_t rev = r->revision;
    clerk_put_result_free(r);
    return rev;
}

static uint64_t put(const char *k, const char *v)
{
    uint64_t rev = put_on(ck, k, v);
    CU_ASSERT(rev > 0);
    return rev;
}

/* What a watch delivered. */
struct got
{
    size_t n, cap;
    struct clerk_event *ev; /* copies (key and value owned) */
    uint64_t last_rev;      /* the last batch's revision */
    size_t batches, empty;  /* batches, of them without events */
    bool ordered;           /* revisions never went back */
};

static void got_free(struct got *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->ev[i].kv.key);
    }
    free(g->ev);
    memset(g, 0, sizeof *g);
}

/* Take batches until @want events or @ms pass. Returns the last error
 * other than TIMEOUT (CLERK_OK otherwise). */
static int collect(struct clerk_watch *w, struct got *g, size_t want, int ms)
{
    uint64_t end = h_now_ms() + (uint64_t)ms;
    if (!g->cap) {
        g->ordered = true;
    }
    while (g->n < want && h_now_ms() < end) {
        struct clerk_events_result *r;
        int err = clerk_watch_next(w, 100, &r);
        if (err == CLERK_TIMEOUT) {
            continue;
        }
        if (err) {
            return err;
        }
        g->batches++;
        g->empty += r->n_events == 0;
        if (r->revision < g->last_rev) {
            g->ordered = false;
        }
        g->last_rev = r->revision;
        for (size_t i = 0; i < r->n_events; i++) {
            if (g->n == g->cap) {
                g->cap = g->cap ? g->cap * 2 : 64;
                g->ev = realloc(g->ev, g->cap * sizeof *g->ev);
            }
            struct clerk_event *e = &g->ev[g->n];
            *e = r->events[i];
            /* key and value share one block: take it over */
            r->events[i].kv.key = NULL;
            if (g->n && e->kv.mod_revision < g->ev[g->n - 1].kv.mod_revision) {
                g->ordered = false;
            }
            if (e->kv.mod_revision > r->revision) {
                g->ordered = false;
            }
            g->n++;
        }
        for (size_t i = 0; i < r->n_events; i++) {
            r->events[i].kv.key = NULL;
        }
        clerk_events_result_free(r);
    }
    return CLERK_OK;
}

static bool ev_is(const struct clerk_event *e,
                  enum clerk_event_type type,
                  const char *k,
                  const char *v)
{
    return e->type == type && e->kv.key_len == strlen(k) &&
           !memcmp(e->kv.key, k, e->kv.key_len) &&
           (!v || (e->kv.value_len == strlen(v) &&
                   !memcmp(e->kv.value, v, e->kv.value_len)));
}

static struct clerk_watch *watch_prefix(struct clerk *c,
                                        const char *prefix,
                                        const struct clerk_watch_options *o)
{
    uint8_t end[64];
    size_t end_len = clerk_prefix_end(prefix, strlen(prefix), end);
    struct clerk_watch *w = NULL;
    int err = clerk_watch_open(c, prefix, strlen(prefix), end, end_len, o, &w);
    CU_ASSERT_EQUAL(err, CLERK_OK);
    if (err) {
        fprintf(stderr, "\n  watch %s: %s: %s\n", prefix, clerk_error_code(err),
                clerk_errmsg(c));
    }
    return w;
}

static void test_watch_delivers_each_change_in_order_on_a_follower(void)
{
    /* A handle that knows only a follower: the watch is served there. */
    int leader = h_find_leader(&wc, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    size_t f = ((size_t)leader + 1) % wc.n;
    char one[128];
    h_endpoints_of(&wc, 1u << f, f, one, sizeof one);
    struct clerk *fc = NULL;
    struct clerk_options o = {.deadline_ms = 10000};
    CU_ASSERT_FATAL(clerk_open(&fc, one, &o) == CLERK_OK);
    struct clerk_watch *w = watch_prefix(fc, "w1/", NULL);
    CU_ASSERT_FATAL(w != NULL);

    char k[32], v[32];
    uint64_t first = 0;
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "w1/%03d", i);
        snprintf(v, sizeof v, "v%d", i);
        uint64_t rev = put(k, v);
        first = first ? first : rev;
        put("other/x", v); /* outside the prefix: not delivered */
    }
    CU_ASSERT_EQUAL(clerk_delete(ck, "w1/000", 6), CLERK_OK);
    struct clerk_txn *t = clerk_txn_new();
    clerk_txn_put(t, CLERK_TXN_THEN, "w1/t1", 5, "a", 1, 0);
    clerk_txn_put(t, CLERK_TXN_THEN, "w1/t2", 5, "b", 1, 0);
    struct clerk_txn_result *tr = NULL;
    CU_ASSERT_EQUAL(clerk_txn_commit(ck, t, &tr), CLERK_OK);
    clerk_txn_result_free(tr);
    clerk_txn_free(t);

    struct got g = {0};
    CU_ASSERT_EQUAL(collect(w, &g, 103, 20000), CLERK_OK);
    CU_ASSERT_EQUAL(g.n, 103);
    CU_ASSERT(g.ordered);
    for (size_t i = 0; i < 100 && i < g.n; i++) {
        snprintf(k, sizeof k, "w1/%03zu", i);
        snprintf(v, sizeof v, "v%zu", i);
        CU_ASSERT(ev_is(&g.ev[i], CLERK_EVENT_PUT, k, v));
        CU_ASSERT_EQUAL(g.ev[i].kv.mod_revision, first + 2 * i);
        CU_ASSERT_EQUAL(g.ev[i].kv.version, 1);
    }
    if (g.n == 103) {
        CU_ASSERT(ev_is(&g.ev[100], CLERK_EVENT_DELETE, "w1/000", NULL));
        /* One transaction: one revision, its puts in order. */
        CU_ASSERT(ev_is(&g.ev[101], CLERK_EVENT_PUT, "w1/t1", "a"));
        CU_ASSERT(ev_is(&g.ev[102], CLERK_EVENT_PUT, "w1/t2", "b"));
        CU_ASSERT_EQUAL(g.ev[101].kv.mod_revision, g.ev[102].kv.mod_revision);
    }
    /* Nothing more, and nothing twice. */
    struct clerk_events_result *r = NULL;
    int err = clerk_watch_next(w, 300, &r);
    CU_ASSERT(err == CLERK_TIMEOUT || (err == CLERK_OK && r->n_events == 0));
    clerk_events_result_free(r);
    got_free(&g);
    clerk_watch_close(w);
    clerk_close(fc);
}

static void test_watch_from_an_old_revision_replays_then_follows(void)
{
    uint64_t start = put("w2/a", "1");
    put("w2/b", "2");
    put("w2/a", "3");
    struct clerk_watch_options o = {.start_revision = start};
    struct clerk_watch *w = watch_prefix(ck, "w2/", &o);
    CU_ASSERT_FATAL(w != NULL);
    put("w2/c", "4");
    struct got g = {0};
    CU_ASSERT_EQUAL(collect(w, &g, 4, 10000), CLERK_OK);
    CU_ASSERT_EQUAL(g.n, 4);
    if (g.n == 4) {
        CU_ASSERT(ev_is(&g.ev[0], CLERK_EVENT_PUT, "w2/a", "1"));
        CU_ASSERT(ev_is(&g.ev[1], CLERK_EVENT_PUT, "w2/b", "2"));
        CU_ASSERT(ev_is(&g.ev[2], CLERK_EVENT_PUT, "w2/a", "3"));
        CU_ASSERT_EQUAL(g.ev[2].kv.version, 2);
        CU_ASSERT(ev_is(&g.ev[3], CLERK_EVENT_PUT, "w2/c", "4"));
        CU_ASSERT_EQUAL(g.ev[0].kv.mod_revision, start);
    }
    CU_ASSERT(g.ordered);
    got_free(&g);
    clerk_watch_close(w);

    /* Filters: deletes only. */
    struct clerk_watch_options d = {.no_put = true};
    w = watch_prefix(ck, "w2/", &d);
    CU_ASSERT_FATAL(w != NULL);
    put("w2/d", "5");
    CU_ASSERT_EQUAL(clerk_delete(ck, "w2/a", 4), CLERK_OK);
    CU_ASSERT_EQUAL(collect(w, &g, 1, 10000), CLERK_OK);
    CU_ASSERT_EQUAL(g.n, 1);
    if (g.n) {
        CU_ASSERT(ev_is(&g.ev[0], CLERK_EVENT_DELETE, "w2/a", NULL));
    }
    got_free(&g);
    clerk_watch_close(w);
}

/* clerk_watch_revision says what the caller was given: right after
 * the open, the revision the watch starts after, even when the node's
 * catch-up frames came with its first answer and wait in the handle
 * (the revision said they had been delivered; a caller that resumed or
 * checked from it skipped them, as the watch fault suite saw). */
static void test_watch_revision_counts_only_what_the_caller_took(void)
{
    uint64_t start = put("w9/0", "0");
    for (int i = 1; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof k, "w9/%d", i);
        put(k, "v");
    }
    struct clerk_watch_options o = {.start_revision = start};
    struct clerk_watch *w = watch_prefix(ck, "w9/", &o);
    CU_ASSERT_FATAL(w != NULL);
    CU_ASSERT_EQUAL(clerk_watch_revision(w), start - 1);
    size_t n = 0;
    uint64_t end = h_now_ms() + 10000;
    while (n < 20 && h_now_ms() < end) {
        uint64_t before = clerk_watch_revision(w);
        struct clerk_events_result *r;
        int err = clerk_watch_next(w, 100, &r);
        if (err == CLERK_TIMEOUT) {
            continue;
        }
        CU_ASSERT_EQUAL_FATAL(err, CLERK_OK);
        for (size_t i = 0; i < r->n_events; i++) {
            CU_ASSERT(r->events[i].kv.mod_revision > before);
        }
        n += r->n_events;
        CU_ASSERT_EQUAL(clerk_watch_revision(w), r->revision);
        clerk_events_result_free(r);
    }
    CU_ASSERT_EQUAL(n, 20);
    clerk_watch_close(w);
}

static void test_watch_from_a_compacted_revision_fails(void)
{
    uint64_t r1 = put("w3/a", "1");
    uint64_t r2 = put("w3/a", "2");
    uint64_t compacted = 0;
    CU_ASSERT_EQUAL(clerk_compact(ck, r2, &compacted), CLERK_OK);
    struct clerk_watch_options o = {.start_revision = r1};
    struct clerk_watch *w = NULL;
    int err = clerk_watch_open(ck, "w3/a", 4, NULL, 0, &o, &w);
    CU_ASSERT_EQUAL(err, CLERK_COMPACTED);
    CU_ASSERT_PTR_NULL(w);
    CU_ASSERT(strstr(clerk_errmsg(ck), "compact") != NULL);
    /* From the revision after it: fine. */
    o.start_revision = r2 + 1;
    CU_ASSERT_EQUAL(clerk_watch_open(ck, "w3/a", 4, NULL, 0, &o, &w), CLERK_OK);
    clerk_watch_close(w);
    /* A bad range is refused at open. */
    CU_ASSERT_EQUAL(clerk_watch_open(ck, "w3/b", 4, "w3/a", 4, NULL, &w),
                    CLERK_BAD_REQUEST);
}

static void test_watch_prev_kv_gives_the_version_before(void)
{
    struct clerk_watch_options o = {.prev_kv = true};
    struct clerk_watch *w = watch_prefix(ck, "w10/", &o);
    struct clerk_watch *plain = watch_prefix(ck, "w10/", NULL);
    CU_ASSERT_FATAL(w != NULL && plain != NULL);
    uint64_t r1 = put("w10/a", "1");
    put("w10/a", "22");
    CU_ASSERT_EQUAL(clerk_delete(ck, "w10/a", 5), CLERK_OK);
    /* Batches as they come, with their prev_kvs. */
    int seen = 0, checked = 0;
    uint64_t end = h_now_ms() + 10000;
    while (seen < 3 && h_now_ms() < end) {
        struct clerk_events_result *r = NULL;
        if (clerk_watch_next(w, 100, &r) != CLERK_OK) {
            continue;
        }
        CU_ASSERT(r->n_events == 0 || r->prev_kvs != NULL);
        for (size_t i = 0; i < r->n_events && r->prev_kvs; i++, seen++) {
            const struct clerk_prev_kv *pk = &r->prev_kvs[i];
            if (seen == 0) {
                checked += !pk->known && !pk->missing; /* a new key */
            } else if (seen == 1) {
                checked += pk->known && pk->kv.value_len == 1 &&
                           !memcmp(pk->kv.value, "1", 1) &&
                           pk->kv.mod_revision == r1;
            } else {
                checked += pk->known && pk->kv.value_len == 2 &&
                           !memcmp(pk->kv.value, "22", 2) &&
                           r->events[i].type == CLERK_EVENT_DELETE;
            }
        }
        clerk_events_result_free(r);
    }
    CU_ASSERT_EQUAL(seen, 3);
    CU_ASSERT_EQUAL(checked, 3);
    /* The watch beside it, on the same node, did not ask: none. */
    int plain_seen = 0;
    end = h_now_ms() + 10000;
    while (plain_seen < 3 && h_now_ms() < end) {
        struct clerk_events_result *r = NULL;
        if (clerk_watch_next(plain, 100, &r) != CLERK_OK) {
            continue;
        }
        CU_ASSERT_PTR_NULL(r->prev_kvs);
        plain_seen += (int)r->n_events;
        clerk_events_result_free(r);
    }
    CU_ASSERT_EQUAL(plain_seen, 3);
    clerk_watch_close(w);
    clerk_watch_close(plain);
}

/* What a clerk_watch_start callback saw (the thread writes, the test
 * reads after a pause or the close). */
struct cb_seen
{
    pthread_mutex_t lock;
    int events, ends;
    uint64_t last_rev;
    bool ordered;
    bool close_self; /* close the watch from the callback at 2 events */
    bool closed;
};

static void on_batch(struct clerk_watch *w,
                     const struct clerk_events_result *b,
                     int err,
                     void *arg)
{
    struct cb_seen *cs = arg;
    pthread_mutex_lock(&cs->lock);
    if (!b) {
        cs->ends += err != 0;
    }
    for (size_t i = 0; b && i < b->n_events; i++) {
        if (b->events[i].kv.mod_revision <= cs->last_rev) {
            cs->ordered = false;
        }
        cs->last_rev = b->events[i].kv.mod_revision;
        cs->events++;
    }
    bool close_now = cs->close_self && cs->events >= 2 && !cs->closed;
    cs->closed |= close_now;
    pthread_mutex_unlock(&cs->lock);
    if (close_now) {
        clerk_watch_close(w);
    }
}

static int cb_events(struct cb_seen *cs)
{
    pthread_mutex_lock(&cs->lock);
    int n = cs->events;
    pthread_mutex_unlock(&cs->lock);
    return n;
}

static void test_watch_with_a_callback_thread(void)
{
    static struct cb_seen a = {
        PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, true, false, false};
    static struct cb_seen b = {
        PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, true, true, false};
    uint8_t end[16];
    size_t end_len = clerk_prefix_end("w11/", 4, end);
    struct clerk_watch *wa = NULL, *wb = NULL;
    CU_ASSERT_EQUAL_FATAL(
        clerk_watch_start(ck, "w11/", 4, end, end_len, NULL, on_batch, &a, &wa),
        CLERK_OK);
    CU_ASSERT_EQUAL_FATAL(
        clerk_watch_start(ck, "w11/", 4, end, end_len, NULL, on_batch, &b, &wb),
        CLERK_OK);
    char k[16];
    for (int i = 0; i < 5; i++) {
        snprintf(k, sizeof k, "w11/%d", i);
        put(k, "v");
    }
    uint64_t stop = h_now_ms() + 10000;
    while (cb_events(&a) < 5 && h_now_ms() < stop) {
        h_sleep_ms(10);
    }
    CU_ASSERT_EQUAL(cb_events(&a), 5);
    CU_ASSERT(a.ordered);
    /* b closed itself from its callback after 2 (its batch may hold
     * more): nothing after that. */
    h_sleep_ms(200);
    pthread_mutex_lock(&b.lock);
    CU_ASSERT(b.closed && b.events >= 2);
    int b_events = b.events;
    pthread_mutex_unlock(&b.lock);
    put("w11/later", "v");
    stop = h_now_ms() + 10000;
    while (cb_events(&a) < 6 && h_now_ms() < stop) {
        h_sleep_ms(10);
    }
    CU_ASSERT_EQUAL(cb_events(&a), 6);
    CU_ASSERT_EQUAL(cb_events(&b), b_events);
    clerk_watch_close(wa); /* from this thread: joins the watch's */
    CU_ASSERT_EQUAL(a.ends, 0);
}

static void test_watch_progress_while_idle(void)
{
    struct clerk_watch_options o = {.progress_ms = 100};
    struct clerk_watch *w = watch_prefix(ck, "w4/", &o);
    CU_ASSERT_FATAL(w != NULL);
    uint64_t rev = put("w5/elsewhere", "x"); /* not watched */
    struct got g = {0};
    collect(w, &g, 1, 1500); /* no event comes: only progress */
    CU_ASSERT_EQUAL(g.n, 0);
    CU_ASSERT(g.empty >= 3);
    CU_ASSERT(g.last_rev >= rev); /* progress says how fresh the view is */
    CU_ASSERT(clerk_watch_revision(w) >= rev);
    got_free(&g);
    clerk_watch_close(w);
}

static int collect(struct clerk_watch *w, struct got *g, size_t want, int ms);

/* The node that serves the one watch open in the cluster (by /metrics),
 * or -1; the watch goes on reading meanwhile (it moves to another node
 * only while it is used). */
static int watch_node(struct clerk_watch *w, struct got *g)
{
    static char body[1 << 20];
    uint64_t end = h_now_ms() + 10000;
    while (h_now_ms() < end) {
        for (size_t i = 0; i < wc.n; i++) {
            if (h_http_get(&wc, i, "GET", "/metrics", body, sizeof body) ==
                    200 &&
                h_metric(body, "raftkv_watches") == 1) {
                return (int)i;
            }
        }
        collect(w, g, g->n + 1, 50);
    }
    return -1;
}

/* A writer that puts w6/NNNN keys from another handle while nodes die. */
static void test_watch_resumes_across_kills_without_gap_or_duplicate(void)
{
    struct clerk_watch *w = watch_prefix(ck, "w6/", NULL);
    CU_ASSERT_FATAL(w != NULL);
    struct clerk *wr = NULL;
    struct clerk_options o = {.deadline_ms = 20000};
    CU_ASSERT_FATAL(clerk_open(&wr, eps, &o) == CLERK_OK);
    enum { N = 300 };
    struct got g = {0};
    char k[32];
    int written = 0;
    for (int round = 0; round < 3; round++) {
        /* Kill a node (rounds 0 and 2: the one serving the watch; round 1:
         * the leader), write, bring it back. */
        int at = round == 1 ? h_find_leader(&wc, 10000) : watch_node(w, &g);
        CU_ASSERT_FATAL(at >= 0);
        size_t victim = (size_t)at;
        h_node_kill(&wc, victim);
        for (int i = 0; i < N / 3; i++, written++) {
            snprintf(k, sizeof k, "w6/%04d", written);
            if (!put_on(wr, k, "v")) {
                CU_FAIL("put failed while a node was down");
                break;
            }
            if (i % 20 == 0) {
                collect(w, &g, g.n + 1, 50); /* the watch goes on reading */
            }
        }
        if (round != 1) {
            /* The watch went on at another node. */
            int now_at = watch_node(w, &g);
            CU_ASSERT(now_at >= 0 && now_at != at);
        }
        CU_ASSERT_FATAL(h_node_start(&wc, victim) == 0);
        CU_ASSERT(h_find_leader(&wc, 10000) >= 0);
    }
    CU_ASSERT_EQUAL(collect(w, &g, (size_t)written, 30000), CLERK_OK);
    CU_ASSERT_EQUAL(g.n, (size_t)written);
    CU_ASSERT(g.ordered);
    for (size_t i = 0; i < g.n; i++) {
        snprintf(k, sizeof k, "w6/%04zu", i);
        if (!ev_is(&g.ev[i], CLERK_EVENT_PUT, k, "v")) {
            CU_FAIL("an event missing, repeated or out of order");
            fprintf(stderr, "\n  event %zu is not %s\n", i, k);
            break;
        }
    }
    struct clerk_events_result *r = NULL;
    int err = clerk_watch_next(w, 300, &r);
    CU_ASSERT(err == CLERK_TIMEOUT || (err == CLERK_OK && r->n_events == 0));
    clerk_events_result_free(r);
    got_free(&g);
    clerk_watch_close(w);
    clerk_close(wr);
}

/* One revision too big for one frame (40 deletes that carry 256 KiB
 * previous values: 10 MiB, over the 8 MiB frame cap) comes in pieces:
 * every event once, in order. */
static void test_watch_revision_bigger_than_a_frame(void)
{
    enum { N = 40, VLEN = 256 * 1024 };
    struct clerk_watch_options o = {.prev_kv = true};
    struct clerk_watch *a = watch_prefix(ck, "w13/", &o);
    struct clerk_watch *b = watch_prefix(ck, "w13/", NULL);
    CU_ASSERT_FATAL(a != NULL && b != NULL);
    char *v = malloc(VLEN + 1);
    memset(v, 'q', VLEN);
    v[VLEN] = 0;
    char k[32];
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "w13/k%02d", i);
        v[0] = (char)('a' + i % 26);
        put(k, v);
    }
    uint8_t end[16];
    size_t end_len = clerk_prefix_end("w13/", 4, end);
    struct clerk_delete_result *d = NULL;
    CU_ASSERT_EQUAL(clerk_delete_range(ck, "w13/", 4, end, end_len, 0, &d),
                    CLERK_OK);
    CU_ASSERT(d && d->deleted == N);
    uint64_t del_rev = d ? d->revision : 0;
    clerk_delete_result_free(d);
    /* a: events with their previous values, the deletes in pieces. */
    int puts = 0, dels = 0, prev_ok = 0;
    uint64_t last = 0;
    bool ordered = true, partial_seen = false;
    uint64_t stop = h_now_ms() + 30000;
    while (puts + dels < 2 * N && h_now_ms() < stop) {
        struct clerk_events_result *r = NULL;
        if (clerk_watch_next(a, 200, &r) != CLERK_OK) {
            continue;
        }
        for (size_t i = 0; i < r->n_events; i++) {
            const struct clerk_event *e = &r->events[i];
            if (e->kv.mod_revision < last) {
                ordered = false;
            }
            last = e->kv.mod_revision;
            partial_seen |= e->kv.mod_revision > r->revision;
            if (e->type == CLERK_EVENT_PUT) {
                puts++;
            } else {
                int j = dels++;
                const struct clerk_prev_kv *pk = &r->prev_kvs[i];
                snprintf(k, sizeof k, "w13/k%02d", j);
                prev_ok += pk->known && pk->kv.value_len == VLEN &&
                           ((char *)pk->kv.value)[0] == 'a' + j % 26 &&
                           e->kv.mod_revision == del_rev &&
                           e->kv.key_len == strlen(k) &&
                           !memcmp(e->kv.key, k, e->kv.key_len);
            }
        }
        clerk_events_result_free(r);
    }
    CU_ASSERT_EQUAL(puts, N);
    CU_ASSERT_EQUAL(dels, N);
    CU_ASSERT_EQUAL(prev_ok, N);
    CU_ASSERT(ordered);
    CU_ASSERT(partial_seen); /* a piece said the revision before its own */
    CU_ASSERT_EQUAL(clerk_watch_revision(a), del_rev);
    struct got g = {0};
    CU_ASSERT_EQUAL(collect(b, &g, 2 * N, 30000), CLERK_OK);
    CU_ASSERT_EQUAL(g.n, 2 * N);
    CU_ASSERT(g.ordered);
    got_free(&g);
    free(v);
    clerk_watch_close(a);
    clerk_watch_close(b);
}

/* An event too big for any frame (a 4 MiB value with its 4 MiB previous
 * value) ends the watches that asked for prev_kv, with a message, and
 * not the one beside them that did not. */
static void test_watch_event_over_the_frame_cap_ends_it(void)
{
    enum { VLEN = 4 << 20 };
    struct clerk_watch_options o = {.prev_kv = true};
    struct clerk_watch *a = watch_prefix(ck, "w14/", &o);
    struct clerk_watch *b = watch_prefix(ck, "w14/", &o);
    struct clerk_watch *plain = watch_prefix(ck, "w14/", NULL);
    CU_ASSERT_FATAL(a && b && plain);
    char *v = malloc(VLEN);
    memset(v, 'x', VLEN);
    CU_ASSERT_EQUAL(clerk_put(ck, "w14/big", 7, v, VLEN), CLERK_OK);
    CU_ASSERT_EQUAL(clerk_put(ck, "w14/big", 7, v, VLEN), CLERK_OK);
    free(v);
    struct clerk_watch *ws[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        int err = CLERK_OK, events = 0;
        uint64_t end = h_now_ms() + 20000;
        while (h_now_ms() < end) {
            struct clerk_events_result *r = NULL;
            err = clerk_watch_next(ws[i], 200, &r);
            if (err == CLERK_OK) {
                events += (int)r->n_events;
            }
            clerk_events_result_free(r);
            if (err != CLERK_OK && err != CLERK_TIMEOUT) {
                break;
            }
        }
        CU_ASSERT_EQUAL(events, 1); /* the first put (no previous value) */
        CU_ASSERT_EQUAL(err, CLERK_VALUE_TOO_LARGE);
        CU_ASSERT(strstr(clerk_watch_errmsg(ws[i]), "frame size cap") != NULL);
    }
    struct got g = {0};
    CU_ASSERT_EQUAL(collect(plain, &g, 2, 20000), CLERK_OK);
    CU_ASSERT_EQUAL(g.n, 2);
    got_free(&g);
    clerk_watch_close(a);
    clerk_watch_close(b);
    clerk_watch_close(plain);
}

/* A caller that does not read for a while (longer than the silence a
 * watch takes for a dead node) finds its watch where it was: the frames
 * waited unread, the node was not silent. */
static void test_watch_read_late_is_not_taken_for_a_silent_node(void)
{
    struct clerk_watch *w = watch_prefix(ck, "w15/", NULL);
    CU_ASSERT_FATAL(w != NULL);
    put("w15/a", "1");
    h_sleep_ms(6000);
    struct got g = {0};
    CU_ASSERT_EQUAL(collect(w, &g, 1, 5000), CLERK_OK);
    CU_ASSERT_EQUAL(g.n, 1);
    CU_ASSERT_STRING_EQUAL(clerk_watch_errmsg(w), ""); /* never broken */
    got_free(&g);
    clerk_watch_close(w);
}

/* The node a watch is on dies, and the next one in its list is frozen
 * (SIGSTOP: its kernel still accepts connections, nothing answers): the
 * watch goes on at the third, without waiting for the frozen one. */
static void test_watch_moves_past_a_frozen_node(void)
{
    int leader = h_find_leader(&wc, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    size_t x = ((size_t)leader + 1) % wc.n, y = ((size_t)leader + 2) % wc.n;
    char list[512];
    h_endpoints_of(&wc, 7, x, list, sizeof list); /* x, y, leader */
    struct clerk *c = NULL;
    struct clerk_options o = {.deadline_ms = 10000};
    CU_ASSERT_FATAL(clerk_open(&c, list, &o) == CLERK_OK);
    struct clerk_watch_options wo = {.progress_ms = 100};
    struct clerk_watch *w = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_watch_open(c, "w12/", 4, "w120", 4, &wo, &w),
                          CLERK_OK);
    struct got g = {0};
    collect(w, &g, 1, 500); /* progress from x */
    CU_ASSERT(g.batches > 0);
    h_node_pause(&wc, y, true);
    h_node_kill(&wc, x);
    /* The leader alone has no majority: no writes, but it serves the
     * watch from its state, with progress frames. */
    uint64_t end = h_now_ms() + 8000;
    bool got = false;
    /* Drain what x sent before it died, then wait for a frame of the
     * third node's. */
    struct clerk_events_result *r = NULL;
    while (clerk_watch_next(w, 0, &r) == CLERK_OK) {
        clerk_events_result_free(r);
    }
    h_sleep_ms(300);
    while (!got && h_now_ms() < end) {
        r = NULL;
        got = clerk_watch_next(w, 200, &r) == CLERK_OK;
        clerk_events_result_free(r);
    }
    CU_ASSERT(got);
    if (!got) {
        fprintf(stderr, "\n  no batch in 8 s: %s\n", clerk_watch_errmsg(w));
    }
    got_free(&g);
    clerk_watch_close(w);
    clerk_close(c);
    h_node_pause(&wc, y, false);
    CU_ASSERT_FATAL(h_node_start(&wc, x) == 0);
    CU_ASSERT(h_find_leader(&wc, 10000) >= 0);
}

/* Frames of raw Watch streams on one channel. */
struct raw_watch
{
    int created, events, ends;
    struct rpc_stream *st;
};

static void on_raw(struct rpc_stream *st,
                   const ProtobufCMessage *msg,
                   bool end,
                   void *arg)
{
    (void)st;
    struct raw_watch *rw = arg;
    const Raftkv__WatchReply *r = (const Raftkv__WatchReply *)msg;
    if (end) {
        rw->ends++;
        rw->st = NULL;
        return;
    }
    rw->created += r->created;
    rw->events += (int)r->n_events;
}

static void test_watch_many_streams_on_one_connection_and_cancel(void)
{
    enum { W = 100 };
    char host[512];
    uint16_t port = 0;
    snprintf(host, sizeof host, "%s", eps);
    char *colon = strchr(host, ':');
    CU_ASSERT_FATAL(colon != NULL);
    *colon = 0;
    port = (uint16_t)atoi(colon + 1);
    struct rpc_channel *ch = rpc_channel_new_blocking(host, port, NULL);
    static struct raw_watch rw[W];
    memset(rw, 0, sizeof rw);
    Raftkv__WatchArgs a = RAFTKV__WATCH_ARGS__INIT;
    a.key = (ProtobufCBinaryData){4, (uint8_t *)"w7/x"};
    for (int i = 0; i < W; i++) {
        rw[i].st = rpc_channel_stream(ch, &raftkv__watch_service__descriptor,
                                      "Watch", &a.base, on_raw, &rw[i]);
        CU_ASSERT_FATAL(rw[i].st != NULL);
    }
    uint64_t end = h_now_ms() + 10000;
    int created = 0;
    while (created < W && h_now_ms() < end) {
        rpc_channel_wait(ch, 100);
        created = 0;
        for (int i = 0; i < W; i++) {
            created += rw[i].created;
        }
    }
    CU_ASSERT_EQUAL(created, W);
    /* Cancel half; one put reaches the other half only. */
    for (int i = 0; i < W / 2; i++) {
        rpc_stream_cancel(rw[i].st);
        rw[i].st = NULL;
    }
    put("w7/x", "1");
    int events = 0;
    end = h_now_ms() + 10000;
    while (events < W / 2 && h_now_ms() < end) {
        rpc_channel_wait(ch, 100);
        events = 0;
        for (int i = 0; i < W; i++) {
            events += rw[i].events;
        }
    }
    CU_ASSERT_EQUAL(events, W / 2);
    for (int i = 0; i < W / 2; i++) {
        CU_ASSERT_EQUAL(rw[i].events, 0);
        CU_ASSERT_EQUAL(rw[W / 2 + i].events, 1);
    }
    /* The node counts the watches still open: the other half. */
    static char body[1 << 20];
    double open = -1;
    end = h_now_ms() + 5000;
    while (h_now_ms() < end) {
        double sum = 0;
        for (size_t i = 0; i < wc.n; i++) {
            if (h_http_get(&wc, i, "GET", "/metrics", body, sizeof body) ==
                200) {
                sum += h_metric(body, "raftkv_watches");
            }
        }
        open = sum;
        if (open == W / 2) {
            break;
        }
        h_sleep_ms(50);
    }
    CU_ASSERT_EQUAL(open, W / 2);
    rpc_channel_free(ch); /* ends the rest */
}

/* Events of a raw Watch stream, checked as they come. */
struct raw_events
{
    int created, events, ends;
    uint64_t last_rev;
    bool ordered;
};

static void on_raw_events(struct rpc_stream *st,
                          const ProtobufCMessage *msg,
                          bool end,
                          void *arg)
{
    (void)st;
    struct raw_events *re = arg;
    const Raftkv__WatchReply *r = (const Raftkv__WatchReply *)msg;
    if (end) {
        re->ends++;
        return;
    }
    re->created += r->created;
    for (size_t i = 0; i < r->n_events; i++) {
        uint64_t rev = r->events[i]->kv->mod_revision;
        if (rev <= re->last_rev) {
            re->ordered = false;
        }
        re->last_rev = rev;
        re->events++;
    }
}

static void test_watch_reader_that_stops_reading_catches_up_without_gap(void)
{
    enum { N = 1000, VLEN = 16 * 1024 };
    char host[512];
    snprintf(host, sizeof host, "%s", eps);
    char *colon = strchr(host, ':');
    CU_ASSERT_FATAL(colon != NULL);
    *colon = 0;
    struct rpc_channel *ch =
        rpc_channel_new_blocking(host, (uint16_t)atoi(colon + 1), NULL);
    struct raw_events re = {.ordered = true};
    Raftkv__WatchArgs a = RAFTKV__WATCH_ARGS__INIT;
    a.key = (ProtobufCBinaryData){4, (uint8_t *)"w9/a"};
    a.range_end = (ProtobufCBinaryData){4, (uint8_t *)"w9/b"};
    CU_ASSERT_FATAL(rpc_channel_stream(ch, &raftkv__watch_service__descriptor,
                                       "Watch", &a.base, on_raw_events,
                                       &re) != NULL);
    uint64_t end = h_now_ms() + 10000;
    while (!re.created && h_now_ms() < end) {
        rpc_channel_wait(ch, 100);
    }
    CU_ASSERT_FATAL(re.created == 1);
    /* 16 MiB of changes while the watcher reads nothing: more than the
     * node sends ahead (half its output cap) and the sockets hold. */
    char *v = malloc(VLEN + 1);
    memset(v, 'z', VLEN);
    v[VLEN] = 0;
    char k[32];
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "w9/a%04d", i);
        if (!put(k, v)) {
            break;
        }
    }
    free(v);
    end = h_now_ms() + 30000;
    while (re.events < N && !re.ends && h_now_ms() < end) {
        rpc_channel_wait(ch, 100);
    }
    CU_ASSERT_EQUAL(re.events, N);
    CU_ASSERT(re.ordered);
    CU_ASSERT_EQUAL(re.ends, 0);
    rpc_channel_free(ch);
}

static void test_kvctl_watch_prints_a_line_per_event(void)
{
    char cmd[2048], path[512];
    snprintf(path, sizeof path, "%s/kvctl-watch.out", wc.root);
    snprintf(cmd, sizeof cmd,
             "exec %s --cluster %s watch w8/ --prefix --count 3 > %s 2>&1",
             KVCTL_BIN, eps, path);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    h_sleep_ms(500); /* (a watch from now: started before the puts) */
    uint64_t r1 = put("w8/a", "1");
    put("w8/b", "two words");
    CU_ASSERT_EQUAL(clerk_delete(ck, "w8/a", 4), CLERK_OK);
    int st = 0;
    uint64_t end = h_now_ms() + 15000;
    pid_t done = 0;
    while ((done = waitpid(pid, &st, WNOHANG)) == 0 && h_now_ms() < end) {
        h_sleep_ms(20);
    }
    if (done == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        CU_FAIL("kvctl watch --count 3 did not exit");
    }
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char out[1024] = "", want[512];
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(out, 1, sizeof out - 1, f);
        out[n] = 0;
        fclose(f);
    }
    snprintf(want, sizeof want,
             "PUT %llu \"w8/a\" \"1\"\nPUT %llu \"w8/b\" \"two words\"\n"
             "DELETE %llu \"w8/a\"\n",
             (unsigned long long)r1, (unsigned long long)r1 + 1,
             (unsigned long long)r1 + 2);
    CU_ASSERT_STRING_EQUAL(out, want);
    unlink(path);
}

/* Run a shell command line; its standard output into out. */
static int sh_out(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* kvctl watch --rev N replays the history, --prev-kv adds the values
 * before, and -w json gives keys and values in base64. */
static void test_kvctl_watch_from_a_revision_with_prev_kv_and_json(void)
{
    uint64_t r1 = put("kw/a", "1");
    put("kw/a", "2");
    CU_ASSERT_EQUAL(clerk_delete(ck, "kw/a", 4), CLERK_OK);
    char cmd[2048], out[4096], want[512];
    snprintf(cmd, sizeof cmd,
             "timeout 15 %s --cluster %s watch kw/ --prefix --rev %llu "
             "--count 3 --prev-kv",
             KVCTL_BIN, eps, (unsigned long long)r1);
    CU_ASSERT_EQUAL(sh_out(cmd, out, sizeof out), 0);
    snprintf(want, sizeof want,
             "PUT %llu \"kw/a\" \"1\"\nPUT %llu \"kw/a\" \"2\" prev \"1\"\n"
             "DELETE %llu \"kw/a\" prev \"2\"\n",
             (unsigned long long)r1, (unsigned long long)r1 + 1,
             (unsigned long long)r1 + 2);
    CU_ASSERT_STRING_EQUAL(out, want);
    /* JSON: one object per event; "kw/a" is a3cvYQ==, "1" MQ==, "2" Mg==. */
    snprintf(cmd, sizeof cmd,
             "timeout 15 %s --cluster %s -w json watch kw/a --rev %llu "
             "--count 2 --prev-kv",
             KVCTL_BIN, eps, (unsigned long long)r1);
    CU_ASSERT_EQUAL(sh_out(cmd, out, sizeof out), 0);
    char *second = strchr(out, '\n');
    CU_ASSERT_FATAL(second != NULL);
    *second++ = 0;
    CU_ASSERT(strstr(out, "\"type\":\"PUT\"") != NULL);
    CU_ASSERT(strstr(out, "\"key\":\"a3cvYQ==\"") != NULL);
    CU_ASSERT(strstr(out, "\"value\":\"MQ==\"") != NULL);
    CU_ASSERT(strstr(out, "prev_kv") == NULL);
    CU_ASSERT(strstr(second, "\"value\":\"Mg==\"") != NULL);
    CU_ASSERT(strstr(second, "\"prev_kv\":{") != NULL);
    CU_ASSERT(strstr(second, "kw/a") == NULL); /* never in plain text */
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_watch_delivers_each_change_in_order_on_a_follower",
         test_watch_delivers_each_change_in_order_on_a_follower},
        {"test_watch_from_an_old_revision_replays_then_follows",
         test_watch_from_an_old_revision_replays_then_follows},
        {"test_watch_revision_counts_only_what_the_caller_took",
         test_watch_revision_counts_only_what_the_caller_took},
        {"test_watch_from_a_compacted_revision_fails",
         test_watch_from_a_compacted_revision_fails},
        {"test_watch_prev_kv_gives_the_version_before",
         test_watch_prev_kv_gives_the_version_before},
        {"test_watch_with_a_callback_thread",
         test_watch_with_a_callback_thread},
        {"test_watch_progress_while_idle", test_watch_progress_while_idle},
        {"test_watch_many_streams_on_one_connection_and_cancel",
         test_watch_many_streams_on_one_connection_and_cancel},
        {"test_kvctl_watch_prints_a_line_per_event",
         test_kvctl_watch_prints_a_line_per_event},
        {"test_kvctl_watch_from_a_revision_with_prev_kv_and_json",
         test_kvctl_watch_from_a_revision_with_prev_kv_and_json},
        {"test_watch_reader_that_stops_reading_catches_up_without_gap",
         test_watch_reader_that_stops_reading_catches_up_without_gap},
        {"test_watch_resumes_across_kills_without_gap_or_duplicate",
         test_watch_resumes_across_kills_without_gap_or_duplicate},
        {"test_watch_revision_bigger_than_a_frame",
         test_watch_revision_bigger_than_a_frame},
        {"test_watch_event_over_the_frame_cap_ends_it",
         test_watch_event_over_the_frame_cap_ends_it},
        {"test_watch_read_late_is_not_taken_for_a_silent_node",
         test_watch_read_late_is_not_taken_for_a_silent_node},
        {"test_watch_moves_past_a_frozen_node",
         test_watch_moves_past_a_frozen_node},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"watch", setup, teardown, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
