/* test_lincheck.c: the linearizability checker on known-good and known-bad
 * KV histories, random simulated stores, JSON lines and the command.
 *
 * RAFTKV_SEED reruns the random histories; LINCHECK_VERBOSE=1 prints
 * timings and details; LINCHECK_DUMP=file saves a random history that
 * failed or was slow; LINCHECK_BF_ROUNDS and LINCHECK_BF_MAX (up to 24 ops)
 * make the comparison with the exhaustive search longer. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "cunit_main.h"
#include "lincheck.h"
#include "lincheck_group.h" /* its search, compared with brute force */

/* ---- building histories -------------------------------------------------- */

static void add(struct lc_history *h, struct lc_event e)
{
    CU_ASSERT_FATAL(lc_history_add(h, &e) == 0);
}

static void put(struct lc_history *h,
                int c,
                const char *k,
                const char *v,
                int64_t call,
                int64_t ret)
{
    add(h, (struct lc_event){.client = c,
                             .op = LC_PUT,
                             .key = k,
                             .key_len = strlen(k),
                             .value = v,
                             .value_len = strlen(v),
                             .call_ns = call,
                             .return_ns = ret});
}

static void append(struct lc_history *h,
                   int c,
                   const char *k,
                   const char *v,
                   int64_t call,
                   int64_t ret)
{
    add(h, (struct lc_event){.client = c,
                             .op = LC_APPEND,
                             .key = k,
                             .key_len = strlen(k),
                             .value = v,
                             .value_len = strlen(v),
                             .call_ns = call,
                             .return_ns = ret});
}

/* A get that read out, or found nothing when out is NULL. */
static void get(struct lc_history *h,
                int c,
                const char *k,
                const char *out,
                int64_t call,
                int64_t ret)
{
    add(h, (struct lc_event){.client = c,
                             .op = LC_GET,
                             .key = k,
                             .key_len = strlen(k),
                             .found = out != NULL,
                             .out = out,
                             .out_len = out ? strlen(out) : 0,
                             .call_ns = call,
                             .return_ns = ret});
}

static void del(struct lc_history *h,
                int c,
                const char *k,
                bool found,
                int64_t call,
                int64_t ret)
{
    add(h, (struct lc_event){.client = c,
                             .op = LC_DELETE,
                             .key = k,
                             .key_len = strlen(k),
                             .found = found,
                             .call_ns = call,
                             .return_ns = ret});
}

/* A cas from expected (NULL: must be absent) to v; when it did not swap,
 * cur is the current value it reported (NULL: absent). */
static void cas(struct lc_history *h,
                int c,
                const char *k,
                const char *expected,
                const char *v,
                bool swapped,
                const char *cur,
                int64_t call,
                int64_t ret)
{
    add(h, (struct lc_event){.client = c,
                             .op = LC_CAS,
                             .key = k,
                             .key_len = strlen(k),
                             .value = v,
                             .value_len = strlen(v),
                             .expected = expected,
                             .expected_len = expected ? strlen(expected) : 0,
                             .expect_absent = expected == NULL,
                             .swapped = swapped,
                             .found = !swapped && cur != NULL,
                             .out = swapped ? NULL : cur,
                             .out_len = !swapped && cur ? strlen(cur) : 0,
                             .call_ns = call,
                             .return_ns = ret});
}

/* A write whose outcome is unknown (timed out), called at `call`. */
static void unknown(struct lc_history *h,
                    int c,
                    enum lc_op op,
                    const char *k,
                    const char *v,
                    int64_t call)
{
    add(h, (struct lc_event){.client = c,
                             .op = op,
                             .key = k,
                             .key_len = strlen(k),
                             .value = v,
                             .value_len = v ? strlen(v) : 0,
                             .expect_absent = true,
                             .unknown = true,
                             .found = true, /* outputs are ignored */
                             .out = "ignored",
                             .out_len = 7,
                             .call_ns = call});
}

static enum lc_verdict check(const struct lc_history *h, struct lc_result *r)
{
    enum lc_verdict v = lc_check(h, 30, r);
    if (getenv("LINCHECK_VERBOSE") && r->detail[0]) {
        printf("\n      [%s]\n", r->detail);
    }
    return v;
}

/* Check a history, expect verdict v, free it. */
static void expect_verdict(struct lc_history *h, enum lc_verdict v)
{
    struct lc_result r;
    CU_ASSERT_EQUAL(check(h, &r), v);
    CU_ASSERT_EQUAL(r.verdict, v);
    if (v == LC_NOT_LINEARIZABLE) {
        CU_ASSERT(strstr(r.detail, "key \"") != NULL ||
                  strstr(r.detail, "keys \"") != NULL);
    }
    lc_history_free(h);
}

static struct lc_history *new_history(void)
{
    struct lc_history *h = lc_history_new();
    CU_ASSERT_FATAL(h != NULL);
    return h;
}

/* ---- registers ----------------------------------------------------------- */

static void test_lincheck_empty_history_is_linearizable(void)
{
    struct lc_history *h = new_history();
    struct lc_result r;
    CU_ASSERT_EQUAL(lc_check(h, 0, &r), LC_LINEARIZABLE);
    CU_ASSERT_EQUAL(r.ops, 0);
    CU_ASSERT_EQUAL(r.keys, 0);
    lc_history_free(h);
}

static void test_lincheck_sequential_put_get_is_linearizable(void)
{
    struct lc_history *h = new_history();
    get(h, 1, "k", NULL, 0, 10);
    put(h, 1, "k", "a", 20, 30);
    get(h, 2, "k", "a", 40, 50);
    put(h, 2, "k", "b", 60, 70);
    get(h, 1, "k", "b", 80, 90);
    put(h, 1, "k", "", 100, 110);
    get(h, 2, "k", "", 120, 130);
    struct lc_result r;
    CU_ASSERT_EQUAL(check(h, &r), LC_LINEARIZABLE);
    CU_ASSERT_EQUAL(r.ops, 7);
    CU_ASSERT_EQUAL(r.keys, 1);
    CU_ASSERT_EQUAL(r.keys_done, 1);
    lc_history_free(h);
}

static void test_lincheck_stale_read_after_put_is_not_linearizable(void)
{
    struct lc_history *h = new_history();
    put(h, 1, "k", "a", 0, 10);
    put(h, 1, "k", "b", 20, 30);
    get(h, 2, "k", "a", 40, 50); /* b was written before the get began */
    struct lc_result r;
    CU_ASSERT_EQUAL(check(h, &r), LC_NOT_LINEARIZABLE);
    CU_ASSERT(strstr(r.detail, "key \"k\"") != NULL);
    CU_ASSERT(strstr(r.detail, "c2 get()->\"a\" [40,50]") != NULL);
    lc_history_free(h);

    /* A read of nothing after a completed put is just as stale. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    get(h, 2, "k", NULL, 11, 12);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
}

static void test_lincheck_concurrent_get_may_see_old_or_new_value(void)
{
    for (int seen_new = 0; seen_new < 2; seen_new++) {
        struct lc_history *h = new_history();
        put(h, 1, "k", "old", 0, 10);
        put(h, 1, "k", "new", 20, 60);
        get(h, 2, "k", seen_new ? "new" : "old", 30, 40);
        expect_verdict(h, LC_LINEARIZABLE);
    }
    /* Equal times overlap: a get called when the put returns may miss it. */
    struct lc_history *h = new_history();
    put(h, 1, "k", "a", 0, 10);
    get(h, 2, "k", NULL, 10, 20);
    expect_verdict(h, LC_LINEARIZABLE);
    /* But two reads may not see new then old. */
    h = new_history();
    put(h, 1, "k", "old", 0, 10);
    put(h, 1, "k", "new", 20, 100);
    get(h, 2, "k", "new", 30, 40);
    get(h, 3, "k", "old", 50, 60);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
}

static void test_lincheck_get_of_a_value_never_written_is_not_linearizable(void)
{
    struct lc_history *h = new_history();
    put(h, 1, "k", "a", 0, 100);
    put(h, 2, "k", "b", 0, 100);
    get(h, 3, "k", "c", 0, 100);
    struct lc_result r;
    CU_ASSERT_EQUAL(check(h, &r), LC_NOT_LINEARIZABLE);
    CU_ASSERT(strstr(r.detail, "get()->\"c\"") != NULL);
    lc_history_free(h);
}

/* ---- appends ------------------------------------------------------------- */

static void test_lincheck_concurrent_appends_in_either_order(void)
{
    const char *orders[] = {"ab", "ba"};
    for (int i = 0; i < 2; i++) {
        struct lc_history *h = new_history();
        append(h, 1, "k", "a", 0, 50);
        append(h, 2, "k", "b", 10, 60);
        get(h, 3, "k", orders[i], 70, 80);
        get(h, 3, "k", orders[i], 90, 100);
        expect_verdict(h, LC_LINEARIZABLE);
    }
    /* A read in the middle may see one of them only. */
    struct lc_history *h = new_history();
    append(h, 1, "k", "a", 0, 50);
    append(h, 2, "k", "b", 10, 60);
    get(h, 3, "k", "b", 20, 30);
    get(h, 3, "k", "ba", 70, 80);
    expect_verdict(h, LC_LINEARIZABLE);
    /* Appending to an absent key starts from "". */
    h = new_history();
    append(h, 1, "k", "", 0, 1);
    get(h, 1, "k", "", 2, 3);
    expect_verdict(h, LC_LINEARIZABLE);
}

static void test_lincheck_read_going_back_from_ab_to_a_is_not_linearizable(void)
{
    struct lc_history *h = new_history();
    append(h, 1, "k", "a", 0, 50);
    append(h, 2, "k", "b", 10, 60);
    get(h, 3, "k", "ab", 20, 30);
    get(h, 3, "k", "a", 40, 45);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
}

static void test_lincheck_duplicated_append_is_not_linearizable(void)
{
    struct lc_history *h = new_history();
    append(h, 1, "k", "a", 0, 50);
    get(h, 2, "k", "aa", 60, 70);
    expect_verdict(h, LC_NOT_LINEARIZABLE);

    /* Two appends of "a" may give "aa". */
    h = new_history();
    append(h, 1, "k", "a", 0, 50);
    append(h, 2, "k", "a", 0, 50);
    get(h, 2, "k", "aa", 60, 70);
    expect_verdict(h, LC_LINEARIZABLE);
}

/* ---- unknown outcomes ---------------------------------------------------- */

static void test_lincheck_unknown_put_may_or_may_not_take_effect(void)
{
    /* (first read, second read): never seen, seen from the start, seen
     * late (it may take effect long after the client gave up). */
    const char *reads[][2] = {{"1", "1"}, {"2", "2"}, {"1", "2"}};
    for (int i = 0; i < 3; i++) {
        struct lc_history *h = new_history();
        put(h, 1, "k", "1", 0, 10);
        unknown(h, 1, LC_PUT, "k", "2", 20);
        get(h, 2, "k", reads[i][0], 30, 40);
        get(h, 2, "k", reads[i][1], 50, 60);
        expect_verdict(h, LC_LINEARIZABLE);
    }
    /* Not before it was called, though. */
    struct lc_history *h = new_history();
    put(h, 1, "k", "1", 0, 10);
    get(h, 2, "k", "2", 11, 19);
    unknown(h, 1, LC_PUT, "k", "2", 20);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* An unknown get is dropped, whatever it says. */
    h = new_history();
    put(h, 1, "k", "1", 0, 10);
    unknown(h, 2, LC_GET, "k", NULL, 20);
    struct lc_result r;
    CU_ASSERT_EQUAL(check(h, &r), LC_LINEARIZABLE);
    CU_ASSERT_EQUAL(r.ops, 1);
    lc_history_free(h);
}

static void test_lincheck_unknown_put_seen_then_unseen_is_not_linearizable(void)
{
    struct lc_history *h = new_history();
    put(h, 1, "k", "1", 0, 10);
    unknown(h, 1, LC_PUT, "k", "2", 20);
    get(h, 2, "k", "2", 30, 40);
    get(h, 2, "k", "1", 50, 60); /* flip-flop: no write in between */
    expect_verdict(h, LC_NOT_LINEARIZABLE);

    /* With another write in between, fine. */
    h = new_history();
    put(h, 1, "k", "1", 0, 10);
    unknown(h, 1, LC_PUT, "k", "2", 20);
    get(h, 2, "k", "2", 30, 40);
    put(h, 3, "k", "1", 41, 49);
    get(h, 2, "k", "1", 50, 60);
    expect_verdict(h, LC_LINEARIZABLE);
}

static void test_lincheck_many_unknown_writes_that_never_happened(void)
{
    /* 40 timed-out puts and appends that never took effect, among reads
     * that never see them, then a read no order explains: the search must
     * still end with a definite answer, not blow up on the 2^40 subsets. */
    for (int bad = 0; bad < 2; bad++) {
        struct lc_history *h = new_history();
        put(h, 1, "k", "base", 0, 10);
        int64_t t = 20;
        for (int i = 0; i < 40; i++) {
            char v[16];
            snprintf(v, sizeof v, "u%d", i);
            unknown(h, 2 + i % 4, i % 2 ? LC_PUT : LC_APPEND, "k", v, t);
            put(h, 1, "k", "base", t + 1, t + 5);
            get(h, 9, "k", "base", t + 6, t + 9);
            t += 10;
        }
        get(h, 9, "k", bad ? "nope" : "base", t, t + 5);
        struct lc_result r;
        CU_ASSERT_EQUAL(lc_check(h, 20, &r),
                        bad ? LC_NOT_LINEARIZABLE : LC_LINEARIZABLE);
        lc_history_free(h);
    }
}

/* ---- delete and cas ------------------------------------------------------ */

static void test_lincheck_delete_reports_what_it_found(void)
{
    struct lc_history *h = new_history();
    put(h, 1, "k", "a", 0, 10);
    del(h, 1, "k", true, 20, 30);
    get(h, 2, "k", NULL, 40, 50);
    del(h, 2, "k", false, 60, 70);
    put(h, 1, "k", "b", 80, 90);
    get(h, 2, "k", "b", 100, 110);
    expect_verdict(h, LC_LINEARIZABLE);

    /* Deleting an absent key cannot report found... */
    h = new_history();
    del(h, 1, "k", true, 0, 10);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* ...nor a present one not found. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    del(h, 1, "k", false, 20, 30);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* A read after a completed delete must not see the old value. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    del(h, 1, "k", true, 20, 30);
    get(h, 2, "k", "a", 40, 50);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* An unknown delete may have happened. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    unknown(h, 1, LC_DELETE, "k", NULL, 20);
    get(h, 2, "k", "a", 40, 50);
    get(h, 2, "k", NULL, 60, 70);
    expect_verdict(h, LC_LINEARIZABLE);
}

static void test_lincheck_cas_swaps_only_on_a_match(void)
{
    struct lc_history *h = new_history();
    cas(h, 1, "k", NULL, "a", true, NULL, 0, 10);  /* absent -> a */
    cas(h, 1, "k", NULL, "x", false, "a", 20, 30); /* must be absent */
    cas(h, 2, "k", "a", "b", true, NULL, 40, 50);  /* a -> b */
    cas(h, 2, "k", "a", "c", false, "b", 60, 70);  /* mismatch, is b */
    del(h, 1, "k", true, 80, 90);
    cas(h, 1, "k", "b", "d", false, NULL, 100, 110); /* mismatch, absent */
    get(h, 2, "k", NULL, 120, 130);
    expect_verdict(h, LC_LINEARIZABLE);

    /* Swapped when the value did not match. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    cas(h, 2, "k", "z", "b", true, NULL, 20, 30);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* Swapped "if absent" on a present key. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    cas(h, 2, "k", NULL, "b", true, NULL, 20, 30);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* A mismatch that reports the wrong current value. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    cas(h, 2, "k", "z", "b", false, "q", 20, 30);
    struct lc_result r;
    CU_ASSERT_EQUAL(check(h, &r), LC_NOT_LINEARIZABLE);
    CU_ASSERT(strstr(r.detail, "mismatch \"q\"") != NULL);
    lc_history_free(h);
    /* A mismatch when the value did match. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    cas(h, 2, "k", "a", "b", false, "a", 20, 30);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* A mismatch reporting absent on a present key. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    cas(h, 2, "k", "z", "b", false, NULL, 20, 30);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* The effect of a swap is seen. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    cas(h, 2, "k", "a", "b", true, NULL, 20, 30);
    get(h, 1, "k", "a", 40, 50);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
}

static void test_lincheck_unknown_cas_swaps_only_on_a_match(void)
{
    /* An unknown cas(a -> b) on "a" may have swapped... */
    struct lc_history *h = new_history();
    put(h, 1, "k", "a", 0, 10);
    add(h, (struct lc_event){.client = 2,
                             .op = LC_CAS,
                             .key = "k",
                             .key_len = 1,
                             .expected = "a",
                             .expected_len = 1,
                             .value = "b",
                             .value_len = 1,
                             .unknown = true,
                             .call_ns = 20});
    get(h, 1, "k", "b", 40, 50);
    expect_verdict(h, LC_LINEARIZABLE);
    /* ...but an unknown cas(z -> b) on "a" cannot. */
    h = new_history();
    put(h, 1, "k", "a", 0, 10);
    add(h, (struct lc_event){.client = 2,
                             .op = LC_CAS,
                             .key = "k",
                             .key_len = 1,
                             .expected = "z",
                             .expected_len = 1,
                             .value = "b",
                             .value_len = 1,
                             .unknown = true,
                             .call_ns = 20});
    get(h, 1, "k", "b", 40, 50);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
}

/* ---- keys ---------------------------------------------------------------- */

static void test_lincheck_bad_key_among_good_ones_is_named(void)
{
    struct lc_history *h = new_history();
    for (int i = 0; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof k, "key%d", i);
        put(h, i, k, "v1", 0, 10);
        put(h, i, k, "v2", 20, 30);
        get(h, i + 1, k, i == 13 ? "v1" : "v2", 40, 50);
    }
    /* A key with a quote and a byte that is not printable. */
    add(h, (struct lc_event){.op = LC_PUT,
                             .key = "q\"\x01",
                             .key_len = 3,
                             .value = "x",
                             .value_len = 1,
                             .call_ns = 0,
                             .return_ns = 1});
    struct lc_result r;
    CU_ASSERT_EQUAL(check(h, &r), LC_NOT_LINEARIZABLE);
    CU_ASSERT(strstr(r.detail, "key \"key13\"") != NULL);
    CU_ASSERT_EQUAL(r.keys, 21);
    CU_ASSERT_EQUAL(r.ops, 61);
    lc_history_free(h);

    /* Escaped when reported. */
    h = new_history();
    add(h, (struct lc_event){.op = LC_GET,
                             .key = "q\"\x01",
                             .key_len = 3,
                             .found = true,
                             .out = "x",
                             .out_len = 1,
                             .call_ns = 0,
                             .return_ns = 1});
    CU_ASSERT_EQUAL(check(h, &r), LC_NOT_LINEARIZABLE);
    CU_ASSERT(strstr(r.detail, "key \"q\\\"\\x01\"") != NULL);
    lc_history_free(h);

    /* The same bytes at different keys do not interfere. */
    h = new_history();
    put(h, 1, "a", "1", 0, 10);
    put(h, 1, "b", "2", 20, 30);
    get(h, 2, "a", "1", 40, 50);
    get(h, 2, "ab", NULL, 40, 50);
    expect_verdict(h, LC_LINEARIZABLE);
}

/* ---- randomized: a simulated linearizable store -------------------------- */

/* One simulated operation. */
struct sim_op
{
    struct lc_event ev; /* what the client saw (bytes below) */
    int key;            /* key index */
    int64_t at;         /* when it took effect; -1 never */
    char value[32];     /* value argument */
    char expected[32];  /* cas expected */
    char *out;          /* output bytes (malloc'd) */
};

/* The ops a simulated client does. */
enum sim_mix {
    SIM_ALL,      /* get 35%, put 20%, append 20%, delete 10%, cas 15% */
    SIM_APPENDS,  /* append 60%, get 40% */
    SIM_REGISTER, /* get 50%, put 30%, cas 20% */
};

/* A key's value in the simulated store. */
struct sim_key
{
    bool present; /* exists */
    char *v;      /* bytes (malloc'd) */
    size_t len;   /* length */
};

static int cmp_sim_at(const void *pa, const void *pb)
{
    const struct sim_op *a = *(const struct sim_op *const *)pa;
    const struct sim_op *b = *(const struct sim_op *const *)pb;
    if (a->at != b->at) {
        return a->at < b->at ? -1 : 1;
    }
    return a < b ? -1 : a > b;
}

static const char *const sim_keys[] = {"alpha", "beta", "gamma", "delta",
                                       "eps",   "zeta", "eta",   "theta",
                                       "iota",  "kappa"};
#define SIM_MAX_KEYS 10

/* Apply op at its point to the store and fill in what the client saw. */
static void sim_apply(struct sim_op *o, struct sim_key *s)
{
    struct lc_event *e = &o->ev;
    bool match;
    switch (e->op) {
        case LC_GET:
            e->found = s->present;
            if (s->present) {
                o->out = malloc(s->len + 1);
                memcpy(o->out, s->v, s->len);
                e->out_len = s->len;
            }
            break;
        case LC_PUT:
            free(s->v);
            s->v = strdup(o->value);
            s->len = strlen(o->value);
            s->present = true;
            break;
        case LC_APPEND:
            s->v = realloc(s->v, s->len + strlen(o->value) + 1);
            memcpy(s->v + s->len, o->value, strlen(o->value));
            s->len += strlen(o->value);
            s->present = true;
            break;
        case LC_DELETE:
            e->found = s->present;
            s->present = false;
            s->len = 0;
            break;
        case LC_CAS:
            match = e->expect_absent
                        ? !s->present
                        : s->present && s->len == strlen(o->expected) &&
                              memcmp(s->v, o->expected, s->len) == 0;
            e->swapped = match;
            if (match) {
                free(s->v);
                s->v = strdup(o->value);
                s->len = strlen(o->value);
                s->present = true;
            } else {
                e->found = s->present;
                if (s->present) {
                    o->out = malloc(s->len + 1);
                    memcpy(o->out, s->v, s->len);
                    e->out_len = s->len;
                }
            }
            break;
        case LC_RANGE:
        case LC_TXN:
            break; /* not simulated here */
    }
}

/* Simulate clients × per_client ops on nkeys keys of a linearizable store;
 * ops take effect at a random point of their interval; unknown_pct of the
 * writes time out (half of those take effect, maybe after the timeout).
 * mix: which ops. Returns the ops (caller frees). */
static struct sim_op *simulate(unsigned *seed,
                               int clients,
                               int per_client,
                               int nkeys,
                               int unknown_pct,
                               enum sim_mix mix,
                               size_t *count)
{
    size_t n = (size_t)clients * per_client;
    struct sim_op *ops = calloc(n, sizeof *ops);
    CU_ASSERT_FATAL(ops != NULL);
    size_t i = 0;
    for (int c = 0; c < clients; c++) {
        int64_t t = rand_r(seed) % 50;
        for (int j = 0; j < per_client; j++, i++) {
            struct sim_op *o = &ops[i];
            struct lc_event *e = &o->ev;
            int r = rand_r(seed) % 100;
            o->key = rand_r(seed) % nkeys;
            e->client = c;
            if (mix == SIM_APPENDS) {
                e->op = r < 60 ? LC_APPEND : LC_GET;
            } else if (mix == SIM_REGISTER) {
                e->op = r < 50 ? LC_GET : r < 80 ? LC_PUT : LC_CAS;
            } else {
                e->op = r < 35   ? LC_GET
                        : r < 55 ? LC_PUT
                        : r < 75 ? LC_APPEND
                        : r < 85 ? LC_DELETE
                                 : LC_CAS;
            }
            snprintf(o->value, sizeof o->value, "c%dn%d;", c, j);
            if (e->op == LC_CAS) {
                int pick = rand_r(seed) % 4;
                e->expect_absent = pick == 0;
                /* Another client's recent value: sometimes current. */
                snprintf(o->expected, sizeof o->expected, "c%dn%d;",
                         rand_r(seed) % clients, j - rand_r(seed) % 3);
            }
            e->call_ns = t + rand_r(seed) % 20;
            e->return_ns = e->call_ns + 1 + rand_r(seed) % 60;
            o->at = e->call_ns + rand_r(seed) % (e->return_ns - e->call_ns + 1);
            if (e->op != LC_GET && rand_r(seed) % 100 < unknown_pct) {
                e->unknown = true;
                if (rand_r(seed) % 2) {
                    o->at = e->call_ns + rand_r(seed) % 200; /* maybe late */
                } else {
                    o->at = -1; /* never */
                }
            }
            t = e->return_ns;
        }
    }
    /* Apply in effect order. */
    struct sim_op **order = malloc(n * sizeof *order);
    CU_ASSERT_FATAL(order != NULL);
    for (i = 0; i < n; i++) {
        order[i] = &ops[i];
    }
    qsort(order, n, sizeof *order, cmp_sim_at);
    struct sim_key store[SIM_MAX_KEYS] = {{0}};
    for (i = 0; i < n; i++) {
        if (order[i]->at >= 0) {
            sim_apply(order[i], &store[order[i]->key]);
        }
    }
    for (int k = 0; k < SIM_MAX_KEYS; k++) {
        free(store[k].v);
    }
    free(order);
    for (i = 0; i < n; i++) {
        struct sim_op *o = &ops[i];
        struct lc_event *e = &o->ev;
        e->key = sim_keys[o->key];
        e->key_len = strlen(sim_keys[o->key]);
        e->value = o->value;
        e->value_len = strlen(o->value);
        e->expected = o->expected;
        e->expected_len = strlen(o->expected);
        e->out = o->out;
        if (e->unknown) {
            e->swapped = false; /* the client never heard */
            e->found = true;
            e->out = "garbage";
            e->out_len = 7;
        }
    }
    *count = n;
    return ops;
}

static void free_sim(struct sim_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(ops[i].out);
    }
    free(ops);
}

static struct lc_history *history_of(struct sim_op *ops, size_t n)
{
    struct lc_history *h = new_history();
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_FATAL(lc_history_add(h, &ops[i].ev) == 0);
    }
    return h;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Save a history that failed to LINCHECK_DUMP (a file name), if set. */
static void dump_history(const struct lc_history *h)
{
    const char *path = getenv("LINCHECK_DUMP");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f) {
        lc_history_write(h, f);
        fclose(f);
        printf("      (history written to %s)\n", path);
    }
}

/* Check a simulated history, then with one read corrupted. */
static void check_simulated(unsigned *seed,
                            int clients,
                            int per_client,
                            int nkeys,
                            int unknown_pct,
                            enum sim_mix mix)
{
    size_t n;
    struct sim_op *ops =
        simulate(seed, clients, per_client, nkeys, unknown_pct, mix, &n);
    struct lc_history *h = history_of(ops, n);
    struct lc_result r;
    double t0 = now_seconds();
    enum lc_verdict v = lc_check(h, 60, &r);
    double t1 = now_seconds();
    if (v != LC_LINEARIZABLE) {
        printf(
            "\n      simulated history (%d clients x %d ops, %d keys): "
            "%d: %s\n",
            clients, per_client, nkeys, v, r.detail);
    }
    if (v != LC_LINEARIZABLE || t1 - t0 > 1) {
        dump_history(h);
    }
    CU_ASSERT_EQUAL(v, LC_LINEARIZABLE);
    CU_ASSERT_EQUAL(r.keys_done, r.keys);
    lc_history_free(h);

    /* Corrupt the known read nearest the middle of the history to a value
     * never written. */
    int64_t end = 0;
    for (size_t i = 0; i < n; i++) {
        end = ops[i].ev.call_ns > end ? ops[i].ev.call_ns : end;
    }
    size_t victim = n;
    for (size_t i = 0; i < n; i++) {
        const struct lc_event *e = &ops[i].ev;
        if (e->op == LC_GET && !e->unknown &&
            (victim == n || llabs(e->call_ns - end / 2) <
                                llabs(ops[victim].ev.call_ns - end / 2))) {
            victim = i;
        }
    }
    CU_ASSERT_FATAL(victim < n);
    struct lc_event saved = ops[victim].ev;
    ops[victim].ev.found = true;
    ops[victim].ev.out = "never-written";
    ops[victim].ev.out_len = strlen("never-written");
    h = history_of(ops, n);
    double t2 = now_seconds();
    v = lc_check(h, 60, &r);
    double t3 = now_seconds();
    if (v != LC_NOT_LINEARIZABLE || !strstr(r.detail, "never-written")) {
        printf("\n      corrupted history: %d: %s\n", v, r.detail);
    }
    if (v != LC_NOT_LINEARIZABLE || t3 - t2 > 1) {
        dump_history(h);
    }
    CU_ASSERT_EQUAL(v, LC_NOT_LINEARIZABLE);
    CU_ASSERT(strstr(r.detail, "never-written") != NULL);
    lc_history_free(h);
    ops[victim].ev = saved;
    if (getenv("LINCHECK_VERBOSE") || t1 - t0 > 1 || t3 - t2 > 1) {
        printf(
            "\n      %d clients x %d ops, %d keys, %d%% unknown%s: "
            "good %.3f s, bad %.3f s",
            clients, per_client, nkeys, unknown_pct,
            mix == SIM_APPENDS    ? ", appends"
            : mix == SIM_REGISTER ? ", register"
                                  : "",
            t1 - t0, t3 - t2);
    }
    free_sim(ops, n);
}

static void test_lincheck_random_histories_pass_and_a_garbage_read_fails(void)
{
    unsigned seed = cunit_seed();
    for (int round = 0; round < 30; round++) {
        int clients = 2 + rand_r(&seed) % 6;
        int nkeys = 1 + rand_r(&seed) % 4;
        int unknown_pct = rand_r(&seed) % 3 ? 5 : 0;
        check_simulated(&seed, clients, 100 + rand_r(&seed) % 200, nkeys,
                        unknown_pct, (enum sim_mix)(round % 3));
    }
}

static void test_lincheck_large_histories_check_in_reasonable_time(void)
{
    /* 15 clients x 2000 ops over 10 keys (1% of the writes time out); one
     * key of 5 appenders x 2000 (long values), without and with 2% of the
     * writes timing out; one register of 15 clients x 2000. Loose bounds
     * only (shared machines): these catch blow-ups. */
    unsigned seed = cunit_seed() ^ 0x5eed;
    double t0 = now_seconds();
    check_simulated(&seed, 15, 2000, 10, 1, SIM_ALL);
    double t1 = now_seconds();
    check_simulated(&seed, 5, 2000, 1, 0, SIM_APPENDS);
    double t2 = now_seconds();
    check_simulated(&seed, 5, 2000, 1, 2, SIM_APPENDS);
    double t3 = now_seconds();
    check_simulated(&seed, 15, 2000, 1, 1, SIM_REGISTER);
    double t4 = now_seconds();
    printf(
        "\n      15x2000 ops / 10 keys: %.2f s; 5x2000 appends / 1 key: "
        "%.2f s, with unknowns %.2f s; 15x2000 register: %.2f s (each "
        "checked good and corrupted) ",
        t1 - t0, t2 - t1, t3 - t2, t4 - t3);
    CU_ASSERT(t4 - t0 < 120);
}

/* ---- against brute force ------------------------------------------------ */

#define BF_MAX 24 /* most ops per history (12 unless LINCHECK_BF_MAX) */

/* The brute-force model state: absent, or a short string. */
struct bf_state
{
    bool present; /* exists */
    char v[256];  /* value, NUL-terminated (values here have no NULs) */
};

static bool bf_is(const struct bf_state *s, const void *p, size_t n)
{
    return s->present && strlen(s->v) == n && memcmp(s->v, p, n) == 0;
}

/* Apply e to s as the model says. @return whether it is accepted */
static bool bf_step(const struct lc_event *e, struct bf_state *s)
{
    bool match;
    switch (e->op) {
        case LC_GET:
            return e->found ? bf_is(s, e->out, e->out_len) : !s->present;
        case LC_PUT:
            s->present = true;
            snprintf(s->v, sizeof s->v, "%.*s", (int)e->value_len,
                     (const char *)e->value);
            return true;
        case LC_APPEND:
            if (!s->present) {
                s->v[0] = '\0';
            }
            s->present = true;
            strncat(s->v, e->value, e->value_len);
            return true;
        case LC_DELETE:
            match = s->present;
            s->present = false;
            return e->unknown || e->found == match;
        case LC_CAS:
            match = e->expect_absent ? !s->present
                                     : bf_is(s, e->expected, e->expected_len);
            if (match && (e->unknown || e->swapped)) {
                s->present = true;
                snprintf(s->v, sizeof s->v, "%.*s", (int)e->value_len,
                         (const char *)e->value);
                return true;
            }
            if (e->unknown) {
                return true;
            }
            if (match || e->swapped) {
                return false;
            }
            return e->found ? bf_is(s, e->out, e->out_len) : !s->present;
        case LC_RANGE:
        case LC_TXN:
            break; /* not in these histories */
    }
    return false;
}

/* Configurations (ops used, state) already found to fail, for this round
 * (gen); a plain memo, without lincheck's pruning rules. */
#define BF_MEMO (1 << 15)
struct bf_seen
{
    unsigned gen;      /* round it belongs to */
    unsigned used;     /* ops used */
    struct bf_state s; /* state */
};
static struct bf_seen bf_memo[BF_MEMO];
static unsigned bf_gen;

static struct bf_seen *bf_slot(unsigned used,
                               const struct bf_state *s,
                               bool *hit)
{
    unsigned h = used * 2654435761u ^ s->present;
    for (const char *p = s->v; s->present && *p; p++) {
        h = h * 31 + (unsigned char)*p;
    }
    for (unsigned i = 0; i < 64; i++) {
        struct bf_seen *b = &bf_memo[(h + i) % BF_MEMO];
        if (b->gen != bf_gen) {
            *hit = false;
            return b;
        }
        if (b->used == used && b->s.present == s->present &&
            (!s->present || strcmp(b->s.v, s->v) == 0)) {
            *hit = true;
            return b;
        }
    }
    *hit = false;
    return NULL; /* crowded: do without */
}

/* Is there an order of the unused ops (all known ones; unknown ones or
 * not) that respects real time and the model? */
static bool bf_search(const struct lc_event *ev,
                      int n,
                      unsigned used,
                      struct bf_state s)
{
    bool hit;
    struct bf_seen *slot = bf_slot(used, &s, &hit);
    if (hit) {
        return false;
    }
    bool all_known = true;
    for (int i = 0; i < n; i++) {
        all_known &= (used >> i & 1) || ev[i].unknown;
    }
    if (all_known) {
        return true;
    }
    for (int i = 0; i < n; i++) {
        if (used >> i & 1) {
            continue;
        }
        bool may = true; /* no unused known op returned before i's call */
        for (int j = 0; j < n && may; j++) {
            may = (used >> j & 1) || j == i || ev[j].unknown ||
                  ev[j].return_ns >= ev[i].call_ns;
        }
        struct bf_state t = s;
        if (may && bf_step(&ev[i], &t) && bf_search(ev, n, used | 1u << i, t)) {
            return true;
        }
    }
    if (slot) {
        *slot = (struct bf_seen){.gen = bf_gen, .used = used, .s = s};
    }
    return false;
}

static const char *const bf_values[] = {"", "a", "b", "ab", "ba", "aa", "bb"};

static const char *bf_pick(unsigned *seed)
{
    return bf_values[rand_r(seed) % 7];
}

/* Fill in the outputs of ev[0..n) by running them at random points of
 * their intervals (unknown ones maybe late, maybe never). */
static void bf_run(struct lc_event *ev, int n, char out[][256], unsigned *seed)
{
    int64_t at[BF_MAX];
    int order[BF_MAX];
    for (int i = 0; i < n; i++) {
        int64_t span = ev[i].unknown ? 30 : ev[i].return_ns - ev[i].call_ns;
        at[i] = ev[i].call_ns + rand_r(seed) % (span + 1);
        if (ev[i].unknown && rand_r(seed) % 2) {
            at[i] = -1;
        }
        order[i] = i;
    }
    for (int i = 1; i < n; i++) { /* insertion sort by effect time */
        for (int j = i; j > 0 && at[order[j]] < at[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    }
    struct bf_state s = {0};
    for (int k = 0; k < n; k++) {
        struct lc_event *e = &ev[order[k]];
        if (at[order[k]] < 0) {
            continue;
        }
        bool present = s.present;
        bool match =
            e->op == LC_CAS &&
            (e->expect_absent ? !s.present
                              : bf_is(&s, e->expected, e->expected_len));
        memcpy(out[order[k]], s.v, sizeof s.v);
        e->found = present;
        e->out = out[order[k]];
        e->out_len = present ? strlen(s.v) : 0;
        e->swapped = match;
        bool unknown = e->unknown;
        e->unknown = true; /* apply without checking outputs */
        bf_step(e, &s);
        e->unknown = unknown;
    }
}

static void test_lincheck_agrees_with_brute_force_on_small_histories(void)
{
    unsigned seed = cunit_seed() ^ 0xbf;
    int verdicts[2] = {0, 0};
    const char *env = getenv("LINCHECK_BF_ROUNDS");
    int rounds = env ? atoi(env) : 30000;
    env = getenv("LINCHECK_BF_MAX");
    int max_ops = env ? atoi(env) : 12;
    max_ops = max_ops < 1 ? 1 : max_ops > BF_MAX ? BF_MAX : max_ops;
    static char unique[BF_MAX][8];
    for (int i = 0; i < BF_MAX; i++) {
        snprintf(unique[i], sizeof unique[i], "U%d", i);
    }
    for (int round = 0; round < rounds; round++) {
        int n = 1 + rand_r(&seed) % max_ops;
        struct lc_event ev[BF_MAX];
        char outs[BF_MAX][256];
        bool simulated = round % 2;
        struct lc_history *h = new_history();
        for (int i = 0; i < n; i++) {
            struct lc_event *e = &ev[i];
            memset(e, 0, sizeof *e);
            e->client = i;
            e->op = (enum lc_op)(rand_r(&seed) % 5);
            e->key = "k";
            e->key_len = 1;
            /* Short values that collide, or one only this op writes. */
            const char *v = rand_r(&seed) % 4 == 0 ? unique[i]
                            : e->op == LC_APPEND
                                ? bf_values[1 + rand_r(&seed) % 2]
                                : bf_pick(&seed);
            e->value = v;
            e->value_len = strlen(v);
            const char *x =
                rand_r(&seed) % 3 ? bf_pick(&seed) : unique[rand_r(&seed) % n];
            e->expected = x;
            e->expected_len = strlen(x);
            e->expect_absent = rand_r(&seed) % 4 == 0;
            e->swapped = rand_r(&seed) % 2;
            e->found = rand_r(&seed) % 4 != 0;
            const char *o = bf_pick(&seed);
            e->out = o;
            e->out_len = strlen(o);
            e->unknown = rand_r(&seed) % 5 == 0;
            e->call_ns = rand_r(&seed) % (4 * n);
            e->return_ns = e->call_ns + rand_r(&seed) % 10;
        }
        if (simulated) {
            /* A real execution, then maybe one output changed. */
            bf_run(ev, n, outs, &seed);
            struct lc_event *e = &ev[rand_r(&seed) % n];
            switch (rand_r(&seed) % 6) {
                case 0:
                    e->found = !e->found;
                    break;
                case 1:
                    e->swapped = !e->swapped;
                    break;
                case 2:
                    e->out = bf_pick(&seed);
                    e->out_len = strlen(e->out);
                    break;
                default:
                    break;
            }
        }
        for (int i = 0; i < n; i++) {
            CU_ASSERT_FATAL(lc_history_add(h, &ev[i]) == 0);
        }
        /* Unknown gets are dropped: never linearized. */
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (!(ev[i].unknown && ev[i].op == LC_GET)) {
                ev[m++] = ev[i];
            }
        }
        struct bf_state s0 = {0};
        bf_gen++;
        bool want = bf_search(ev, m, 0, s0);
        struct lc_result r;
        enum lc_verdict got = lc_check(h, 10, &r);
        /* The search of groups of keys models these ops too: it must
         * agree on one key. */
        const struct lc_event *ptrs[BF_MAX];
        for (int i = 0; i < m; i++) {
            ptrs[i] = &ev[i];
        }
        char detail[512];
        enum lc_key_result g =
            m ? lc_check_group(ptrs, (size_t)m, NULL, detail, sizeof detail)
              : LC_KEY_OK;
        if (g != (want ? LC_KEY_OK : LC_KEY_FAIL)) {
            printf(
                "\n      round %d: brute force says %s, lc_check_group "
                "%d: %s\n",
                round, want ? "linearizable" : "not", g, detail);
            dump_history(h);
            CU_FAIL("lc_check_group disagrees with brute force");
        }
        verdicts[want] += simulated;
        if (got != (want ? LC_LINEARIZABLE : LC_NOT_LINEARIZABLE)) {
            printf("\n      round %d: brute force says %s, lc_check %d: %s\n",
                   round, want ? "linearizable" : "not", got, r.detail);
            dump_history(h);
            CU_FAIL("lc_check disagrees with brute force");
            lc_history_free(h);
            break;
        }
        lc_history_free(h);
    }
    /* Both answers must have been exercised. */
    if (getenv("LINCHECK_VERBOSE")) {
        printf("\n      simulated: %d linearizable, %d not ", verdicts[1],
               verdicts[0]);
    }
    CU_ASSERT(verdicts[0] > 1000);
    CU_ASSERT(verdicts[1] > 1000);
}

/* ---- ranges and transactions --------------------------------------------- */

/* A range read of keys "k1,k2,..." that saw "v1,v2,..." ("-": absent). */
static void range(struct lc_history *h,
                  int c,
                  const char *keys,
                  const char *vals,
                  int64_t call,
                  int64_t ret)
{
    struct lc_read r[8];
    char kb[64], vb[64];
    snprintf(kb, sizeof kb, "%s", keys);
    snprintf(vb, sizeof vb, "%s", vals);
    char *ks = NULL, *vs = NULL;
    size_t n = 0;
    for (char *k = strtok_r(kb, ",", &ks), *v = strtok_r(vb, ",", &vs);
         k && v && n < 8;
         k = strtok_r(NULL, ",", &ks), v = strtok_r(NULL, ",", &vs), n++) {
        bool found = strcmp(v, "-") != 0;
        r[n] = (struct lc_read){.key = k,
                                .key_len = strlen(k),
                                .found = found,
                                .out = found ? v : NULL,
                                .out_len = found ? strlen(v) : 0};
    }
    add(h, (struct lc_event){.client = c,
                             .op = LC_RANGE,
                             .reads = r,
                             .n_reads = n,
                             .call_ns = call,
                             .return_ns = ret});
}

/* A transaction under construction. */
struct tx
{
    struct lc_compare cmp[4]; /* compares */
    size_t ncmp;              /* their number */
    struct lc_write w[2][8];  /* then and else ops */
    size_t nw[2];             /* their numbers */
};

static void tx_value(struct tx *t,
                     const char *k,
                     enum lc_cmp_result r,
                     const char *v)
{
    t->cmp[t->ncmp++] = (struct lc_compare){.key = k,
                                            .key_len = strlen(k),
                                            .target = LC_CMP_VALUE,
                                            .result = r,
                                            .value = v,
                                            .value_len = strlen(v)};
}

static void tx_version(struct tx *t,
                       const char *k,
                       enum lc_cmp_result r,
                       uint64_t version)
{
    t->cmp[t->ncmp++] = (struct lc_compare){.key = k,
                                            .key_len = strlen(k),
                                            .target = LC_CMP_VERSION,
                                            .result = r,
                                            .version = version};
}

/* A put (v) or delete (v NULL) in the then (branch 0) or else branch. */
static void tx_write(struct tx *t, int branch, const char *k, const char *v)
{
    t->w[branch][t->nw[branch]++] =
        (struct lc_write){.del = v == NULL,
                          .key = k,
                          .key_len = strlen(k),
                          .value = v,
                          .value_len = v ? strlen(v) : 0};
}

/* Add the transaction: outcome 1 succeeded, 0 failed, -1 unknown. */
static void tx_add(struct lc_history *h,
                   int c,
                   const struct tx *t,
                   int outcome,
                   int64_t call,
                   int64_t ret)
{
    add(h, (struct lc_event){.client = c,
                             .op = LC_TXN,
                             .compares = t->ncmp ? t->cmp : NULL,
                             .n_compares = t->ncmp,
                             .then_ops = t->nw[0] ? t->w[0] : NULL,
                             .n_then = t->nw[0],
                             .else_ops = t->nw[1] ? t->w[1] : NULL,
                             .n_else = t->nw[1],
                             .succeeded = outcome == 1,
                             .unknown = outcome < 0,
                             .call_ns = call,
                             .return_ns = outcome < 0 ? 0 : ret});
}

/* Accounts a and b set to 5 each, then a transfer of 2 from a to b (a txn
 * whose compares hold, at [20,30]). */
static struct lc_history *bank_history(int transfer_outcome)
{
    struct lc_history *h = new_history();
    struct tx init = {0}, move = {0};
    tx_write(&init, 0, "a", "5");
    tx_write(&init, 0, "b", "5");
    tx_add(h, 1, &init, 1, 0, 10);
    tx_value(&move, "a", LC_CMP_EQUAL, "5");
    tx_value(&move, "b", LC_CMP_EQUAL, "5");
    tx_write(&move, 0, "a", "3");
    tx_write(&move, 0, "b", "7");
    tx_add(h, 1, &move, transfer_outcome, 20, 30);
    return h;
}

static void test_lincheck_range_sees_a_txn_whole_or_not_at_all(void)
{
    /* Concurrent with the transfer: before or after it. */
    const char *seen[] = {"5,5", "3,7"};
    for (int i = 0; i < 2; i++) {
        struct lc_history *h = bank_history(1);
        range(h, 2, "a,b", seen[i], 15, 25);
        range(h, 2, "a,b", "3,7", 40, 50);
        expect_verdict(h, LC_LINEARIZABLE);
    }
    /* Half of it, in either order of the keys: never. */
    const char *half[] = {"3,5", "5,7"};
    for (int i = 0; i < 2; i++) {
        struct lc_history *h = bank_history(1);
        range(h, 2, "a,b", half[i], 15, 25);
        struct lc_result r;
        CU_ASSERT_EQUAL(check(h, &r), LC_NOT_LINEARIZABLE);
        CU_ASSERT(strstr(r.detail, "keys \"a\", \"b\"") != NULL);
        CU_ASSERT(strstr(r.detail, "range()") != NULL);
        CU_ASSERT_EQUAL(r.groups, 1);
        lc_history_free(h);
    }
    /* After it returned, the old balances are stale. */
    struct lc_history *h = bank_history(1);
    range(h, 2, "a,b", "5,5", 40, 50);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* Gets of each key alone cannot tell half a txn from a whole one
     * when they overlap it, but a range that overlaps both can. */
    h = bank_history(1);
    get(h, 2, "a", "3", 15, 25);
    get(h, 3, "b", "5", 15, 25);
    expect_verdict(h, LC_LINEARIZABLE);
}

static void test_lincheck_unknown_txn_takes_effect_whole_or_not_at_all(void)
{
    const char *ok[] = {"5,5", "3,7"};
    for (int i = 0; i < 2; i++) {
        struct lc_history *h = bank_history(-1);
        range(h, 2, "a,b", ok[i], 100, 110);
        range(h, 2, "a,b", ok[i], 200, 210);
        expect_verdict(h, LC_LINEARIZABLE);
    }
    /* Late, but once seen it stays. */
    struct lc_history *h = bank_history(-1);
    range(h, 2, "a,b", "5,5", 100, 110);
    range(h, 2, "a,b", "3,7", 200, 210);
    expect_verdict(h, LC_LINEARIZABLE);
    h = bank_history(-1);
    range(h, 2, "a,b", "3,7", 100, 110);
    range(h, 2, "a,b", "5,5", 200, 210);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    h = bank_history(-1);
    range(h, 2, "a,b", "3,5", 100, 110);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* It can only take effect where its compares hold: once a is 4, the
     * transfer (a = 5 ? ...) cannot make it 3. */
    h = bank_history(-1);
    struct tx t = {0};
    tx_write(&t, 0, "a", "4");
    tx_add(h, 3, &t, 1, 50, 60);
    range(h, 2, "a,b", "3,7", 100, 110);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
}

static void test_lincheck_txn_outcome_must_follow_its_compares(void)
{
    /* Reported failed while its compares held: not linearizable. */
    struct lc_history *h = bank_history(0);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* A failed txn runs its else branch. */
    for (int saw_else = 0; saw_else < 2; saw_else++) {
        h = new_history();
        struct tx t = {0};
        put(h, 1, "a", "1", 0, 10);
        tx_value(&t, "a", LC_CMP_EQUAL, "2");
        tx_write(&t, 0, "b", "then");
        tx_write(&t, 1, "b", "else");
        tx_add(h, 1, &t, 0, 20, 30);
        get(h, 2, "b", saw_else ? "else" : "then", 40, 50);
        expect_verdict(h, saw_else ? LC_LINEARIZABLE : LC_NOT_LINEARIZABLE);
    }
    /* A value compare on an absent key is false, even "!=". */
    h = new_history();
    struct tx t = {0};
    tx_value(&t, "a", LC_CMP_NOT_EQUAL, "x");
    tx_write(&t, 0, "b", "1");
    tx_add(h, 1, &t, 1, 0, 10);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* Values compare bytewise, a prefix first. */
    static const struct
    {
        const char *have, *operand;
        enum lc_cmp_result r;
        bool holds;
    } cmps[] = {
        {"b", "a", LC_CMP_GREATER, true},    {"ab", "a", LC_CMP_GREATER, true},
        {"a", "ab", LC_CMP_LESS, true},      {"10", "9", LC_CMP_LESS, true},
        {"a", "a", LC_CMP_NOT_EQUAL, false}, {"a", "b", LC_CMP_GREATER, false},
        {"", "", LC_CMP_EQUAL, true},
    };
    for (size_t i = 0; i < sizeof cmps / sizeof *cmps; i++) {
        for (int said = 0; said < 2; said++) {
            h = new_history();
            struct tx c = {0};
            put(h, 1, "a", cmps[i].have, 0, 10);
            tx_value(&c, "a", cmps[i].r, cmps[i].operand);
            tx_write(&c, 0, "b", "1");
            tx_add(h, 1, &c, said, 20, 30);
            expect_verdict(h, said == cmps[i].holds ? LC_LINEARIZABLE
                                                    : LC_NOT_LINEARIZABLE);
        }
    }
}

static void test_lincheck_txn_version_compares_count_changes(void)
{
    /* put, append, put: version 3; delete: 0; put again: 1. */
    static const struct
    {
        bool deleted;
        enum lc_cmp_result r;
        uint64_t v;
        bool holds;
    } cases[] = {
        {false, LC_CMP_EQUAL, 3, true},     {false, LC_CMP_EQUAL, 2, false},
        {false, LC_CMP_GREATER, 2, true},   {false, LC_CMP_LESS, 3, false},
        {false, LC_CMP_NOT_EQUAL, 0, true}, {true, LC_CMP_EQUAL, 1, true},
        {true, LC_CMP_EQUAL, 4, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int said = 0; said < 2; said++) {
            struct lc_history *h = new_history();
            put(h, 1, "k", "x", 0, 1);
            append(h, 1, "k", "y", 2, 3);
            struct tx p = {0};
            tx_write(&p, 0, "k", "z");
            tx_add(h, 1, &p, 1, 4, 5);
            if (cases[i].deleted) {
                del(h, 1, "k", true, 6, 7);
                put(h, 1, "k", "w", 8, 9);
            }
            struct tx t = {0};
            tx_version(&t, "k", cases[i].r, cases[i].v);
            tx_write(&t, 0, "other", "1");
            tx_add(h, 1, &t, said, 20, 30);
            expect_verdict(h, said == cases[i].holds ? LC_LINEARIZABLE
                                                     : LC_NOT_LINEARIZABLE);
        }
    }
    /* An absent key's version is 0. */
    struct lc_history *h = new_history();
    struct tx t = {0};
    tx_version(&t, "k", LC_CMP_EQUAL, 0);
    tx_write(&t, 0, "k", "mine");
    tx_add(h, 1, &t, 1, 0, 10);
    tx_add(h, 2, &t, 0, 20, 30); /* the second one finds it taken */
    expect_verdict(h, LC_LINEARIZABLE);
}

/* Each key's history alone is linearizable, the whole is not: two ranges
 * that see two concurrent puts in opposite orders. */
static void test_lincheck_ranges_disagreeing_on_an_order_are_caught(void)
{
    struct lc_history *h = new_history();
    put(h, 1, "a", "1", 0, 100);
    put(h, 2, "b", "1", 0, 100);
    range(h, 3, "a,b", "1,-", 10, 90);
    range(h, 4, "a,b", "-,1", 10, 90);
    expect_verdict(h, LC_NOT_LINEARIZABLE);
    /* Split into gets, the same reads pass. */
    h = new_history();
    put(h, 1, "a", "1", 0, 100);
    put(h, 2, "b", "1", 0, 100);
    get(h, 3, "a", "1", 10, 90);
    get(h, 3, "b", NULL, 10, 90);
    get(h, 4, "a", NULL, 10, 90);
    get(h, 4, "b", "1", 10, 90);
    expect_verdict(h, LC_LINEARIZABLE);
}

static void test_lincheck_groups_are_checked_apart(void)
{
    struct lc_history *h = new_history();
    put(h, 1, "a", "1", 0, 10);
    put(h, 1, "b", "2", 0, 10);
    range(h, 2, "a,b", "1,2", 20, 30);
    put(h, 1, "c", "3", 0, 10);
    get(h, 1, "c", "3", 20, 30);
    struct tx t = {0};
    tx_value(&t, "d", LC_CMP_EQUAL, "x");
    tx_write(&t, 1, "e", "y");
    tx_add(h, 3, &t, 0, 0, 10);
    get(h, 3, "e", "y", 20, 30);
    struct lc_result r;
    CU_ASSERT_EQUAL(check(h, &r), LC_LINEARIZABLE);
    CU_ASSERT_EQUAL(r.keys, 5);
    CU_ASSERT_EQUAL(r.groups, 3); /* {a,b}, {c}, {d,e} */
    CU_ASSERT_EQUAL(r.keys_done, 5);
    CU_ASSERT_EQUAL(r.ops, 7);
    lc_history_free(h);
    /* A range of unknown outcome says nothing and is dropped. */
    h = new_history();
    add(h, (struct lc_event){.op = LC_RANGE,
                             .reads = &(struct lc_read){.key = "z",
                                                        .key_len = 1,
                                                        .found = true,
                                                        .out = "?",
                                                        .out_len = 1},
                             .n_reads = 1,
                             .unknown = true,
                             .call_ns = 0});
    CU_ASSERT_EQUAL(check(h, &r), LC_LINEARIZABLE);
    CU_ASSERT_EQUAL(r.ops, 0);
    lc_history_free(h);
}

static void test_lincheck_events_of_the_wrong_shape_are_refused(void)
{
    struct lc_history *h = new_history();
    struct lc_read rd = {.key = "a", .key_len = 1};
    struct lc_compare bad_cmp = {.key = "a", .key_len = 1, .result = 7};
    struct lc_write w = {
        .key = "a", .key_len = 1, .value = NULL, .value_len = 3};
    struct lc_event cases[] = {
        {.op = LC_RANGE, .n_reads = 0}, /* no keys */
        {.op = LC_RANGE,
         .reads = &rd,
         .n_reads = 1,
         .key = "k",
         .key_len = 1}, /* a key too */
        {.op = LC_GET,
         .key = "k",
         .key_len = 1,
         .reads = &rd,
         .n_reads = 1},                                        /* reads */
        {.op = LC_TXN},                                        /* empty */
        {.op = LC_TXN, .compares = &bad_cmp, .n_compares = 1}, /* result */
        {.op = LC_TXN, .then_ops = &w, .n_then = 1},           /* NULL value */
        {.op = LC_TXN, .else_ops = NULL, .n_else = 2},         /* NULL ops */
        {.op = (enum lc_op)9, .key = "k", .key_len = 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        errno = 0;
        CU_ASSERT_EQUAL(lc_history_add(h, &cases[i]), -1);
        CU_ASSERT_EQUAL(errno, EINVAL);
    }
    CU_ASSERT_EQUAL(lc_history_size(h), 0);
    lc_history_free(h);
}

/* ---- ranges and transactions against brute force ------------------------- */

#define MK_MAX  8 /* ops in a history */
#define MK_KEYS 3 /* keys a, b, c */

static const char *const mk_keys[MK_KEYS] = {"a", "b", "c"};
static const char *const mk_values[] = {"0", "1", "2", "10"};

/* The brute-force model of a few keys. */
struct mk_state
{
    bool present[MK_KEYS];     /* exists */
    const char *v[MK_KEYS];    /* value (one of mk_values, or "") */
    uint64_t version[MK_KEYS]; /* changes since created */
};

static int mk_key(const void *p, size_t n)
{
    for (int k = 0; k < MK_KEYS; k++) {
        if (n == 1 && memcmp(p, mk_keys[k], 1) == 0) {
            return k;
        }
    }
    CU_FAIL_FATAL("not a key of these histories");
    return 0;
}

static bool mk_is(const struct mk_state *s, int k, const void *p, size_t n)
{
    return s->present[k] && strlen(s->v[k]) == n && memcmp(s->v[k], p, n) == 0;
}

static void mk_put(struct mk_state *s, int k, const void *v, size_t n)
{
    for (size_t i = 0; i < sizeof mk_values / sizeof *mk_values; i++) {
        if (strlen(mk_values[i]) == n && memcmp(mk_values[i], v, n) == 0) {
            s->v[k] = mk_values[i];
        }
    }
    s->present[k] = true;
    s->version[k]++;
}

static void mk_delete(struct mk_state *s, int k)
{
    s->present[k] = false;
    s->version[k] = 0;
}

static bool mk_holds(const struct mk_state *s, const struct lc_compare *c)
{
    int k = mk_key(c->key, c->key_len);
    int rel;
    if (c->target == LC_CMP_VERSION) {
        rel = s->version[k] < c->version ? -1 : s->version[k] > c->version;
    } else if (!s->present[k]) {
        return false;
    } else {
        size_t a = strlen(s->v[k]), n = a < c->value_len ? a : c->value_len;
        rel = memcmp(s->v[k], c->value, n);
        if (rel == 0) {
            rel = a < c->value_len ? -1 : a > c->value_len;
        }
    }
    switch (c->result) {
        case LC_CMP_EQUAL:
            return rel == 0;
        case LC_CMP_GREATER:
            return rel > 0;
        case LC_CMP_LESS:
            return rel < 0;
        case LC_CMP_NOT_EQUAL:
            return rel != 0;
    }
    return false;
}

/* Apply e as the model says; with e->unknown, without checking outputs.
 * @return whether it is accepted */
static bool mk_step(const struct lc_event *e, struct mk_state *s)
{
    int k = e->op <= LC_CAS ? mk_key(e->key, e->key_len) : 0;
    switch (e->op) {
        case LC_GET:
            return e->found ? mk_is(s, k, e->out, e->out_len) : !s->present[k];
        case LC_PUT:
            mk_put(s, k, e->value, e->value_len);
            return true;
        case LC_DELETE: {
            bool was = s->present[k];
            mk_delete(s, k);
            return e->unknown || e->found == was;
        }
        case LC_RANGE:
            for (size_t i = 0; i < e->n_reads; i++) {
                const struct lc_read *r = &e->reads[i];
                int j = mk_key(r->key, r->key_len);
                if (r->found ? !mk_is(s, j, r->out, r->out_len)
                             : s->present[j]) {
                    return false;
                }
            }
            return true;
        case LC_TXN: {
            bool holds = true;
            for (size_t i = 0; i < e->n_compares; i++) {
                holds = holds && mk_holds(s, &e->compares[i]);
            }
            if (!e->unknown && holds != e->succeeded) {
                return false;
            }
            const struct lc_write *w = holds ? e->then_ops : e->else_ops;
            size_t n = holds ? e->n_then : e->n_else;
            for (size_t i = 0; i < n; i++) {
                int j = mk_key(w[i].key, w[i].key_len);
                if (w[i].del) {
                    if (s->present[j]) {
                        mk_delete(s, j);
                    }
                } else {
                    mk_put(s, j, w[i].value, w[i].value_len);
                }
            }
            return true;
        }
        default:
            CU_FAIL_FATAL("op not in these histories");
            return false;
    }
}

/* Every order consistent with real time, unknown ops optional. */
static bool mk_search(const struct lc_event *ev,
                      int n,
                      unsigned done,
                      struct mk_state s)
{
    bool all = true;
    for (int i = 0; i < n && all; i++) {
        all = (done >> i & 1) || ev[i].unknown;
    }
    if (all) {
        return true;
    }
    for (int i = 0; i < n; i++) {
        if (done >> i & 1) {
            continue;
        }
        bool first = true;
        for (int j = 0; j < n && first; j++) {
            first = j == i || (done >> j & 1) || ev[j].unknown ||
                    ev[j].return_ns >= ev[i].call_ns;
        }
        struct mk_state t = s;
        if (first && mk_step(&ev[i], &t) &&
            mk_search(ev, n, done | 1u << i, t)) {
            return true;
        }
    }
    return false;
}

/* Storage for the arrays of one random history. */
struct mk_ops
{
    struct lc_read reads[MK_MAX][MK_KEYS];
    struct lc_compare cmps[MK_MAX][2];
    struct lc_write w[MK_MAX][2][2];
    char outs[MK_MAX][MK_KEYS + 1][4];
};

static const char *mk_pick(unsigned *seed)
{
    return mk_values[rand_r(seed) % (sizeof mk_values / sizeof *mk_values)];
}

/* A random op over the keys (outputs random too). */
static void mk_random_op(struct lc_event *e,
                         int i,
                         int n,
                         struct mk_ops *m,
                         unsigned *seed)
{
    memset(e, 0, sizeof *e);
    e->client = i;
    int r = rand_r(seed) % 100;
    e->op = r < 15   ? LC_GET
            : r < 30 ? LC_PUT
            : r < 38 ? LC_DELETE
            : r < 65 ? LC_RANGE
                     : LC_TXN;
    const char *k = mk_keys[rand_r(seed) % MK_KEYS];
    const char *v = mk_pick(seed);
    switch (e->op) {
        case LC_GET:
        case LC_PUT:
        case LC_DELETE:
            e->key = k;
            e->key_len = 1;
            e->value = e->op == LC_PUT ? v : NULL;
            e->value_len = e->op == LC_PUT ? strlen(v) : 0;
            e->found = rand_r(seed) % 3 != 0;
            e->out = e->op == LC_GET && e->found ? v : NULL;
            e->out_len = e->out ? strlen(v) : 0;
            break;
        case LC_RANGE: {
            unsigned set = 1 + (unsigned)rand_r(seed) % 7;
            for (int j = 0; j < MK_KEYS; j++) {
                if (set >> j & 1) {
                    const char *o = mk_pick(seed);
                    bool found = rand_r(seed) % 4 != 0;
                    m->reads[i][e->n_reads++] =
                        (struct lc_read){.key = mk_keys[j],
                                         .key_len = 1,
                                         .found = found,
                                         .out = found ? o : NULL,
                                         .out_len = found ? strlen(o) : 0};
                }
            }
            e->reads = m->reads[i];
            break;
        }
        default: {
            e->n_compares = (size_t)rand_r(seed) % 3;
            for (size_t c = 0; c < e->n_compares; c++) {
                const char *x = mk_pick(seed);
                bool version = rand_r(seed) % 3 == 0;
                m->cmps[i][c] = (struct lc_compare){
                    .key = mk_keys[rand_r(seed) % MK_KEYS],
                    .key_len = 1,
                    .target = version ? LC_CMP_VERSION : LC_CMP_VALUE,
                    .result = (enum lc_cmp_result)(rand_r(seed) % 4),
                    .value = version ? NULL : x,
                    .value_len = version ? 0 : strlen(x),
                    .version = (uint64_t)rand_r(seed) % 3};
            }
            e->n_then = 1 + (size_t)rand_r(seed) % 2;
            e->n_else = (size_t)rand_r(seed) % 2;
            for (int b = 0; b < 2; b++) {
                for (size_t j = 0; j < (b ? e->n_else : e->n_then); j++) {
                    const char *x = mk_pick(seed);
                    bool del = rand_r(seed) % 4 == 0;
                    m->w[i][b][j] = (struct lc_write){
                        .del = del,
                        .key = mk_keys[rand_r(seed) % MK_KEYS],
                        .key_len = 1,
                        .value = del ? NULL : x,
                        .value_len = del ? 0 : strlen(x)};
                }
            }
            e->compares = e->n_compares ? m->cmps[i] : NULL;
            e->then_ops = m->w[i][0];
            e->else_ops = e->n_else ? m->w[i][1] : NULL;
            e->succeeded = rand_r(seed) % 2;
            break;
        }
    }
    e->unknown = e->op != LC_GET && e->op != LC_RANGE && rand_r(seed) % 6 == 0;
    e->call_ns = rand_r(seed) % (4 * n);
    e->return_ns = e->call_ns + rand_r(seed) % 10;
}

/* Fill in the outputs by running the ops at random points of their
 * intervals (unknown ones maybe late, maybe never). */
static void mk_run(struct lc_event *ev, int n, struct mk_ops *m, unsigned *seed)
{
    int64_t at[MK_MAX];
    int order[MK_MAX];
    for (int i = 0; i < n; i++) {
        int64_t span = ev[i].unknown ? 30 : ev[i].return_ns - ev[i].call_ns;
        at[i] = ev[i].call_ns + rand_r(seed) % (span + 1);
        if (ev[i].unknown && rand_r(seed) % 2) {
            at[i] = -1;
        }
        order[i] = i;
    }
    for (int i = 1; i < n; i++) {
        for (int j = i; j > 0 && at[order[j]] < at[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    }
    struct mk_state s = {0};
    for (int x = 0; x < n; x++) {
        int i = order[x];
        struct lc_event *e = &ev[i];
        if (at[i] < 0) {
            continue;
        }
        if (e->op == LC_GET || e->op == LC_DELETE) {
            int k = mk_key(e->key, e->key_len);
            e->found = s.present[k];
            snprintf(m->outs[i][0], sizeof m->outs[i][0], "%s",
                     s.present[k] ? s.v[k] : "");
            e->out = e->op == LC_GET && e->found ? m->outs[i][0] : NULL;
            e->out_len = e->out ? strlen(e->out) : 0;
        } else if (e->op == LC_RANGE) {
            for (size_t j = 0; j < e->n_reads; j++) {
                struct lc_read *r = &m->reads[i][j];
                int k = mk_key(r->key, r->key_len);
                snprintf(m->outs[i][j + 1], sizeof m->outs[i][j + 1], "%s",
                         s.present[k] ? s.v[k] : "");
                r->found = s.present[k];
                r->out = r->found ? m->outs[i][j + 1] : NULL;
                r->out_len = r->found ? strlen(r->out) : 0;
            }
        } else if (e->op == LC_TXN) {
            bool holds = true;
            for (size_t c = 0; c < e->n_compares; c++) {
                holds = holds && mk_holds(&s, &e->compares[c]);
            }
            e->succeeded = holds;
        }
        bool unknown = e->unknown;
        e->unknown = true; /* apply without checking outputs */
        mk_step(e, &s);
        e->unknown = unknown;
    }
}

/* Change one output of a history (a range's read, a txn's outcome, ...). */
static void mk_perturb(struct lc_event *ev,
                       int n,
                       struct mk_ops *m,
                       unsigned *seed)
{
    int i = rand_r(seed) % n;
    struct lc_event *e = &ev[i];
    if (e->op == LC_RANGE) {
        struct lc_read *r = &m->reads[i][(size_t)rand_r(seed) % e->n_reads];
        if (rand_r(seed) % 3 == 0) {
            r->found = !r->found;
        }
        r->out = r->found ? mk_pick(seed) : NULL;
        r->out_len = r->out ? strlen(r->out) : 0;
    } else if (e->op == LC_TXN) {
        e->succeeded = !e->succeeded;
    } else if (e->op == LC_GET || e->op == LC_DELETE) {
        e->found = !e->found;
        e->out = e->op == LC_GET && e->found ? mk_pick(seed) : NULL;
        e->out_len = e->out ? strlen(e->out) : 0;
    }
}

static void test_lincheck_ranges_and_txns_agree_with_brute_force(void)
{
    unsigned seed = cunit_seed() ^ 0x3b;
    int verdicts[2] = {0, 0};
    const char *env = getenv("LINCHECK_BF_ROUNDS");
    int rounds = env ? atoi(env) / 3 : 20000;
    static struct mk_ops m;
    for (int round = 0; round < rounds; round++) {
        int n = 1 + rand_r(&seed) % MK_MAX;
        struct lc_event ev[MK_MAX];
        memset(&m, 0, sizeof m);
        for (int i = 0; i < n; i++) {
            mk_random_op(&ev[i], i, n, &m, &seed);
        }
        bool simulated = round % 3 != 0;
        if (simulated) {
            mk_run(ev, n, &m, &seed);
            if (round % 3 == 2) {
                mk_perturb(ev, n, &m, &seed);
            }
        }
        struct lc_history *h = new_history();
        for (int i = 0; i < n; i++) {
            CU_ASSERT_FATAL(lc_history_add(h, &ev[i]) == 0);
        }
        int kept = 0;
        for (int i = 0; i < n; i++) {
            if (!(ev[i].unknown &&
                  (ev[i].op == LC_GET || ev[i].op == LC_RANGE))) {
                ev[kept++] = ev[i];
            }
        }
        struct mk_state s0 = {0};
        bool want = mk_search(ev, kept, 0, s0);
        struct lc_result r;
        enum lc_verdict got = lc_check(h, 10, &r);
        verdicts[want]++;
        if (got != (want ? LC_LINEARIZABLE : LC_NOT_LINEARIZABLE)) {
            printf("\n      round %d: brute force says %s, lc_check %d: %s\n",
                   round, want ? "linearizable" : "not", got, r.detail);
            dump_history(h);
            CU_FAIL("lc_check disagrees with brute force");
            lc_history_free(h);
            break;
        }
        lc_history_free(h);
    }
    if (getenv("LINCHECK_VERBOSE")) {
        printf("\n      %d linearizable, %d not ", verdicts[1], verdicts[0]);
    }
    CU_ASSERT(verdicts[0] > rounds / 10);
    CU_ASSERT(verdicts[1] > rounds / 10);
}

/* ---- a bank: transfers in transactions, ranges over every account -------- */

#define BANK_ACCOUNTS 5

/* A simulated linearizable bank: clients × per_client ops, each a range
 * over every account (40%) or a transfer between two (a txn comparing the
 * two balances it read; 2% of them time out, half of those applied). */
static struct lc_history *bank_simulation(unsigned *seed,
                                          int clients,
                                          int per_client,
                                          bool corrupt)
{
    struct lc_history *h = new_history();
    static const char *const acct[BANK_ACCOUNTS] = {"acct0", "acct1", "acct2",
                                                    "acct3", "acct4"};
    int bal[BANK_ACCOUNTS];
    char init[BANK_ACCOUNTS][8];
    struct tx t = {0};
    for (int k = 0; k < BANK_ACCOUNTS; k++) {
        bal[k] = 10;
        snprintf(init[k], sizeof init[k], "%d", bal[k]);
        tx_write(&t, 0, acct[k], init[k]);
    }
    tx_add(h, 0, &t, 1, 0, 3);
    /* Ops happen one at a time at distinct instants; each client's op
     * interval spans a random stretch around its instant. */
    int64_t now = 10;
    int n = clients * per_client;
    int64_t *last_ret = calloc((size_t)clients, sizeof *last_ret);
    CU_ASSERT_FATAL(last_ret != NULL);
    for (int c = 0; c < clients; c++) {
        last_ret[c] = 3; /* after the accounts were made */
    }
    int bad = corrupt ? rand_r(seed) % n : -1;
    for (int i = 0; i < n; i++, now += 10) {
        /* A client that is not busy then: its interval holds the instant
         * and starts after its last one ended. */
        int c = rand_r(seed) % clients;
        for (int tries = 0; last_ret[c] >= now && tries < clients; tries++) {
            c = (c + 1) % clients;
        }
        if (last_ret[c] >= now) {
            i--;
            continue;
        }
        int64_t call = now - rand_r(seed) % 30, ret = now + rand_r(seed) % 30;
        if (call <= last_ret[c]) {
            call = last_ret[c] + 1;
        }
        last_ret[c] = ret;
        if (rand_r(seed) % 10 < 4 || i == bad) {
            struct lc_read r[BANK_ACCOUNTS];
            char v[BANK_ACCOUNTS][8];
            for (int k = 0; k < BANK_ACCOUNTS; k++) {
                /* The bad one sees a sum no state ever had. */
                snprintf(v[k], sizeof v[k], "%d",
                         bal[k] + (i == bad && k == 0 ? 1 : 0));
                r[k] = (struct lc_read){.key = acct[k],
                                        .key_len = strlen(acct[k]),
                                        .found = true,
                                        .out = v[k],
                                        .out_len = strlen(v[k])};
            }
            add(h, (struct lc_event){.client = c + 1,
                                     .op = LC_RANGE,
                                     .reads = r,
                                     .n_reads = BANK_ACCOUNTS,
                                     .call_ns = call,
                                     .return_ns = ret});
            continue;
        }
        int a = rand_r(seed) % BANK_ACCOUNTS;
        int b = (a + 1 + rand_r(seed) % (BANK_ACCOUNTS - 1)) % BANK_ACCOUNTS;
        int amount = bal[a] ? 1 + rand_r(seed) % bal[a] : 0;
        char ra[8], rb[8], na[8], nb[8];
        snprintf(ra, sizeof ra, "%d", bal[a]);
        snprintf(rb, sizeof rb, "%d", bal[b]);
        snprintf(na, sizeof na, "%d", bal[a] - amount);
        snprintf(nb, sizeof nb, "%d", bal[b] + amount);
        struct tx x = {0};
        tx_value(&x, acct[a], LC_CMP_EQUAL, ra);
        tx_value(&x, acct[b], LC_CMP_EQUAL, rb);
        tx_write(&x, 0, acct[a], na);
        tx_write(&x, 0, acct[b], nb);
        bool unknown = rand_r(seed) % 50 == 0;
        if (!unknown || rand_r(seed) % 2) {
            bal[a] -= amount;
            bal[b] += amount;
        }
        tx_add(h, c + 1, &x, unknown ? -1 : 1, call, ret);
    }
    free(last_ret);
    return h;
}

static void test_lincheck_bank_histories_check_in_reasonable_time(void)
{
    unsigned seed = cunit_seed() ^ 0xba;
    for (int corrupt = 0; corrupt < 2; corrupt++) {
        struct lc_history *h = bank_simulation(&seed, 10, 300, corrupt);
        struct lc_result r;
        double t0 = now_seconds();
        enum lc_verdict v = check(h, &r);
        double took = now_seconds() - t0;
        if (getenv("LINCHECK_VERBOSE")) {
            printf("\n      bank of %zu ops%s: %.3f s ", r.ops,
                   corrupt ? " with a bad range" : "", took);
        }
        CU_ASSERT_EQUAL(v, corrupt ? LC_NOT_LINEARIZABLE : LC_LINEARIZABLE);
        CU_ASSERT_EQUAL(r.groups, 1);
        if (v != (corrupt ? LC_NOT_LINEARIZABLE : LC_LINEARIZABLE)) {
            printf("\n      bank (seed %u): %s\n", cunit_seed(), r.detail);
            dump_history(h);
        }
        lc_history_free(h);
    }
}

/* ---- budget -------------------------------------------------------------- */

/* 40 concurrent appends of "a" and then a read of 41 of them: every read
 * is a prefix of it, so only trying all 2^40 subsets shows it is wrong. */
static struct lc_history *pathological_history(void)
{
    struct lc_history *h = new_history();
    for (int i = 0; i < 40; i++) {
        append(h, i, "k", "a", i, 100 + i);
    }
    char out[42];
    memset(out, 'a', 41);
    out[41] = '\0';
    get(h, 99, "k", out, 200, 210);
    return h;
}

static void test_lincheck_tiny_budget_gives_unknown(void)
{
    struct lc_history *h = pathological_history();
    struct lc_result r;
    double t0 = now_seconds();
    CU_ASSERT_EQUAL(lc_check(h, 0.001, &r), LC_UNKNOWN);
    CU_ASSERT(now_seconds() - t0 < 10);
    CU_ASSERT(r.timed_out);
    CU_ASSERT_EQUAL(r.keys, 1);
    CU_ASSERT_EQUAL(r.keys_done, 0);
    CU_ASSERT(strstr(r.detail, "key \"k\"") != NULL);
    lc_history_free(h);
}

/* ---- JSON lines ---------------------------------------------------------- */

static void test_lincheck_json_round_trip_keeps_bytes_and_verdict(void)
{
    static const char bin[] = {'\0', (char)0xff, '"',  '\\', '\n',
                               'x',  (char)0x80, '\t', '/',  0x1f};
    for (int bad = 0; bad < 2; bad++) {
        struct lc_history *h = new_history();
        add(h, (struct lc_event){.client = 7,
                                 .op = LC_PUT,
                                 .key = bin,
                                 .key_len = sizeof bin,
                                 .value = bin + 1,
                                 .value_len = sizeof bin - 1,
                                 .call_ns = -5,
                                 .return_ns = 10});
        add(h, (struct lc_event){.client = 8,
                                 .op = LC_GET,
                                 .key = bin,
                                 .key_len = sizeof bin,
                                 .found = true,
                                 .out = bin + 1 + bad,
                                 .out_len = sizeof bin - 1 - bad,
                                 .call_ns = 20,
                                 .return_ns = 30});
        add(h, (struct lc_event){.client = 9,
                                 .op = LC_CAS,
                                 .key = "",
                                 .key_len = 0,
                                 .expected = bin,
                                 .expected_len = 2,
                                 .value = "",
                                 .value_len = 0,
                                 .found = false,
                                 .call_ns = INT64_MAX - 9,
                                 .return_ns = INT64_MAX});
        unknown(h, 1, LC_APPEND, "k2", "tail", 40);
        cas(h, 2, "k3", NULL, "v", true, NULL, 1, 2);
        cas(h, 2, "k3", "w", "v", false, "v", 3, 4);
        del(h, 3, "k3", true, 5, 6);
        char *text = NULL;
        size_t text_len = 0;
        FILE *f = open_memstream(&text, &text_len);
        CU_ASSERT_FATAL(f != NULL);
        CU_ASSERT_EQUAL(lc_history_write(h, f), 0);
        fclose(f);
        CU_ASSERT(strchr(text, '\0') == text + text_len); /* no raw NULs */

        f = fmemopen(text, text_len, "r");
        CU_ASSERT_FATAL(f != NULL);
        struct lc_history *h2 = new_history();
        char err[200];
        CU_ASSERT_EQUAL(lc_history_read(h2, f, err, sizeof err), 0);
        CU_ASSERT_STRING_EQUAL(err, "");
        fclose(f);
        CU_ASSERT_EQUAL_FATAL(lc_history_size(h2), lc_history_size(h));
        for (size_t i = 0; i < lc_history_size(h); i++) {
            const struct lc_event *a = lc_history_get(h, i);
            const struct lc_event *b = lc_history_get(h2, i);
            CU_ASSERT_EQUAL(a->client, b->client);
            CU_ASSERT_EQUAL(a->op, b->op);
            CU_ASSERT_EQUAL(a->key_len, b->key_len);
            CU_ASSERT(memcmp(a->key, b->key, a->key_len) == 0);
            CU_ASSERT_EQUAL(a->unknown, b->unknown);
            CU_ASSERT_EQUAL(a->call_ns, b->call_ns);
            if (!a->unknown) {
                CU_ASSERT_EQUAL(a->return_ns, b->return_ns);
            }
            if (a->op != LC_GET && a->op != LC_DELETE) {
                CU_ASSERT_EQUAL(a->value_len, b->value_len);
                CU_ASSERT(memcmp(a->value, b->value, a->value_len) == 0);
            }
            if (a->op == LC_CAS) {
                CU_ASSERT_EQUAL(a->expect_absent, b->expect_absent);
                CU_ASSERT_EQUAL(a->swapped, b->swapped);
                CU_ASSERT_EQUAL(a->expected_len, b->expected_len);
                CU_ASSERT(memcmp(a->expected, b->expected, a->expected_len) ==
                          0);
            }
            if (!a->unknown && (a->op == LC_GET || a->op == LC_DELETE ||
                                (a->op == LC_CAS && !a->swapped))) {
                CU_ASSERT_EQUAL(a->found, b->found);
                CU_ASSERT_EQUAL(a->out_len, b->out_len);
                CU_ASSERT(memcmp(a->out, b->out, a->out_len) == 0);
            }
        }
        struct lc_result r1, r2;
        CU_ASSERT_EQUAL(lc_check(h, 10, &r1), lc_check(h2, 10, &r2));
        CU_ASSERT_EQUAL(r1.verdict,
                        bad ? LC_NOT_LINEARIZABLE : LC_LINEARIZABLE);
        CU_ASSERT_EQUAL(r1.ops, r2.ops);
        CU_ASSERT_EQUAL(r1.keys, r2.keys);
        CU_ASSERT_STRING_EQUAL(r1.detail, r2.detail);
        lc_history_free(h2);
        lc_history_free(h);
        free(text);
    }
}

/* Read text; expect failure with err starting with want. */
static void expect_read_error(const char *text, const char *want)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    CU_ASSERT_FATAL(f != NULL);
    struct lc_history *h = new_history();
    char err[200];
    CU_ASSERT_EQUAL(lc_history_read(h, f, err, sizeof err), -1);
    if (strncmp(err, want, strlen(want)) != 0) {
        printf("\n      input %s: got error \"%s\", want \"%s...\"\n", text,
               err, want);
    }
    CU_ASSERT(strncmp(err, want, strlen(want)) == 0);
    fclose(f);
    lc_history_free(h);
}

static void test_lincheck_json_malformed_lines_give_line_numbers(void)
{
    const char *good =
        "{\"client\":1,\"op\":\"put\",\"key\":\"k\",\"value\":\"v\","
        "\"call\":1,\"return\":2}\n";
    char text[1024];
    static const struct
    {
        const char *line;
        const char *err;
    } cases[] = {
        {"{\"op\":\"get\",\"key\":\"k\",\"call\":1", "line 3: "},
        {"{\"op\":\"get\",\"key\":\"k\\q\",\"call\":1,\"return\":2}",
         "line 3: invalid escape"},
        {"{\"op\":\"get\",\"key\":\"\\u0100\",\"call\":1,\"return\":2}",
         "line 3: \\u0100"},
        {"{\"op\":\"get\",\"key\":\"\\u00zz\",\"call\":1,\"return\":2}",
         "line 3: invalid escape"},
        {"{\"op\":\"get\",\"key\":\"k\",\"foo\":1,\"call\":1,\"return\":2}",
         "line 3: unknown field \"foo\""},
        {"{\"key\":\"k\",\"call\":1,\"return\":2}", "line 3: missing \"op\""},
        {"{\"op\":\"frob\",\"key\":\"k\",\"call\":1,\"return\":2}",
         "line 3: \"op\" must be"},
        {"{\"op\":\"get\",\"call\":1,\"return\":2}", "line 3: missing \"key\""},
        {"{\"op\":\"get\",\"key\":\"k\",\"call\":1}",
         "line 3: missing \"return\""},
        {"{\"op\":\"get\",\"key\":\"k\",\"call\":5,\"return\":2}",
         "line 3: \"return\" is before"},
        {"{\"op\":\"put\",\"key\":\"k\",\"call\":1,\"return\":2}",
         "line 3: missing \"value\""},
        {"{\"op\":\"get\",\"key\":\"k\",\"call\":1.5,\"return\":2}",
         "line 3: \"call\" must be an integer"},
        {"{\"op\":\"get\",\"key\":\"k\",\"call\":99999999999999999999,"
         "\"return\":2}",
         "line 3: too big integer"},
        {"{\"op\":\"get\",\"key\":\"k\",\"found\":1,\"call\":1,\"return\":2}",
         "line 3: \"found\" must be true or false"},
        {"{\"op\":\"get\",\"key\":7,\"call\":1,\"return\":2}",
         "line 3: \"key\" must be a string"},
        {"{\"op\":\"get\",\"op\":\"get\",\"key\":\"k\",\"call\":1,"
         "\"return\":2}",
         "line 3: duplicate object key near '\"op\"'"},
        {"{\"op\":\"get\",\"key\":\"k\",\"call\":1,\"return\":2} x",
         "line 3: end of file expected near 'x'"},
        {"[1,2]", "line 3: expected an object"},
        {"{\"op\":\"get\",\"key\":\"a\tb\",\"call\":1,\"return\":2}",
         "line 3: control character 0x9"},
        {"{\"op\":\"get\",\"key\":\"k\" \"call\":1,\"return\":2}",
         "line 3: '}' expected near '\"call\"'"},
        {"{\"op\":\"get\",\"key\":\"k\",\"call\":1,\"return\":2,}",
         "line 3: string or '}' expected"},
        {"{\"op\":\"get\",\"key\":\"k", "line 3: unexpected newline"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* Line 2 is blank: blank lines still count. */
        snprintf(text, sizeof text, "%s\n%s\n%s", good, cases[i].line, good);
        expect_read_error(text, cases[i].err);
    }
    /* The good lines are fine on their own, with nulls and blank lines. */
    snprintf(text, sizeof text,
             "%s\n  \n{\"op\":\"cas\",\"key\":\"k\",\"expected\":null,"
             "\"value\":\"\\u00ff\\/\\b\\f\\r\",\"swapped\":true,"
             "\"unknown\":false,\"call\":3,\"return\":4}\r\n"
             "{ \"op\" : \"append\" , \"key\" : \"k\" , \"value\" : \"x\" , "
             "\"unknown\" : true , \"call\" : 5 , \"return\" : null }",
             good);
    FILE *f = fmemopen(text, strlen(text), "r");
    struct lc_history *h = new_history();
    char err[200];
    CU_ASSERT_EQUAL(lc_history_read(h, f, err, sizeof err), 0);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(lc_history_size(h), 3);
    const struct lc_event *e = lc_history_get(h, 1);
    CU_ASSERT(e->expect_absent);
    CU_ASSERT(e->swapped);
    CU_ASSERT_EQUAL(e->value_len, 5);
    CU_ASSERT(memcmp(e->value, "\xff/\b\f\r", 5) == 0);
    CU_ASSERT(lc_history_get(h, 2)->unknown);
    lc_history_free(h);
}

static bool same_bytes(const void *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static void test_lincheck_json_round_trip_of_ranges_and_txns(void)
{
    static const char bin[] = {'k', '\0', (char)0xe9, '"'};
    struct lc_history *h = bank_history(1);
    add(h, (struct lc_event){
               .client = 4,
               .op = LC_RANGE,
               .reads = (struct lc_read[]){{.key = bin,
                                            .key_len = sizeof bin,
                                            .found = true,
                                            .out = bin,
                                            .out_len = 3},
                                           {.key = "a", .key_len = 1},
                                           {.key = "e",
                                            .key_len = 1,
                                            .found = true,
                                            .out = "",
                                            .out_len = 0}},
               .n_reads = 3,
               .call_ns = 40,
               .return_ns = 50});
    struct tx t = {0};
    tx_value(&t, bin, LC_CMP_LESS, "\xff");
    tx_version(&t, "a", LC_CMP_NOT_EQUAL, UINT64_C(1) << 62);
    tx_version(&t, "b", LC_CMP_GREATER, 0);
    tx_write(&t, 0, "a", "");
    tx_write(&t, 0, "b", NULL);
    tx_write(&t, 1, bin, "x");
    tx_add(h, 5, &t, 0, 60, 70);
    tx_add(h, 6, &t, -1, 80, 0);
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_EQUAL(lc_history_write(h, f), 0);
    fclose(f);
    CU_ASSERT(strchr(text, '\0') == text + text_len);
    f = fmemopen(text, text_len, "r");
    CU_ASSERT_FATAL(f != NULL);
    struct lc_history *h2 = new_history();
    char err[200];
    CU_ASSERT_EQUAL(lc_history_read(h2, f, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(err, "");
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(lc_history_size(h2), lc_history_size(h));
    for (size_t i = 0; i < lc_history_size(h); i++) {
        const struct lc_event *a = lc_history_get(h, i);
        const struct lc_event *b = lc_history_get(h2, i);
        CU_ASSERT_EQUAL(a->op, b->op);
        CU_ASSERT_EQUAL(a->client, b->client);
        CU_ASSERT_EQUAL(a->unknown, b->unknown);
        CU_ASSERT_EQUAL(a->call_ns, b->call_ns);
        CU_ASSERT(a->unknown || a->return_ns == b->return_ns);
        CU_ASSERT(a->unknown || a->op != LC_TXN ||
                  a->succeeded == b->succeeded);
        CU_ASSERT_EQUAL_FATAL(a->n_reads, b->n_reads);
        for (size_t j = 0; j < a->n_reads; j++) {
            const struct lc_read *x = &a->reads[j], *y = &b->reads[j];
            CU_ASSERT(same_bytes(x->key, x->key_len, y->key, y->key_len));
            CU_ASSERT_EQUAL(x->found, y->found);
            CU_ASSERT(same_bytes(x->out, x->out_len, y->out, y->out_len));
        }
        CU_ASSERT_EQUAL_FATAL(a->n_compares, b->n_compares);
        for (size_t j = 0; j < a->n_compares; j++) {
            const struct lc_compare *x = &a->compares[j], *y = &b->compares[j];
            CU_ASSERT(same_bytes(x->key, x->key_len, y->key, y->key_len));
            CU_ASSERT_EQUAL(x->target, y->target);
            CU_ASSERT_EQUAL(x->result, y->result);
            CU_ASSERT(
                same_bytes(x->value, x->value_len, y->value, y->value_len));
            CU_ASSERT_EQUAL(x->version, y->version);
        }
        CU_ASSERT_EQUAL_FATAL(a->n_then, b->n_then);
        CU_ASSERT_EQUAL_FATAL(a->n_else, b->n_else);
        for (size_t j = 0; j < a->n_then + a->n_else; j++) {
            const struct lc_write *x =
                j < a->n_then ? &a->then_ops[j] : &a->else_ops[j - a->n_then];
            const struct lc_write *y =
                j < b->n_then ? &b->then_ops[j] : &b->else_ops[j - b->n_then];
            CU_ASSERT_EQUAL(x->del, y->del);
            CU_ASSERT(same_bytes(x->key, x->key_len, y->key, y->key_len));
            CU_ASSERT(
                same_bytes(x->value, x->value_len, y->value, y->value_len));
        }
    }
    struct lc_result r1, r2;
    CU_ASSERT_EQUAL(lc_check(h, 10, &r1), lc_check(h2, 10, &r2));
    CU_ASSERT_STRING_EQUAL(r1.detail, r2.detail);
    lc_history_free(h2);
    lc_history_free(h);
    free(text);
}

static void test_lincheck_json_malformed_ranges_and_txns_are_named(void)
{
    const char *good =
        "{\"op\":\"range\",\"reads\":[{\"key\":\"a\"},{\"key\":\"b\","
        "\"out\":\"1\"}],\"call\":1,\"return\":2}\n"
        "{\"op\":\"txn\",\"compares\":[{\"key\":\"a\",\"target\":\"version\","
        "\"result\":\"<\",\"version\":3}],\"then\":[{\"op\":\"delete\","
        "\"key\":\"a\"}],\"succeeded\":true,\"call\":3,\"return\":4}\n";
    char text[1024];
    static const struct
    {
        const char *line;
        const char *err;
    } cases[] = {
        {"{\"op\":\"range\",\"call\":1,\"return\":2}",
         "line 4: missing \"reads\""},
        {"{\"op\":\"range\",\"reads\":[],\"call\":1,\"return\":2}",
         "line 4: \"reads\" is empty"},
        {"{\"op\":\"range\",\"reads\":{},\"call\":1,\"return\":2}",
         "line 4: \"reads\" must be an array"},
        {"{\"op\":\"range\",\"reads\":[\"a\"],\"call\":1,\"return\":2}",
         "line 4: \"reads\" must hold objects"},
        {"{\"op\":\"range\",\"reads\":[{\"out\":\"1\"}],\"call\":1,"
         "\"return\":2}",
         "line 4: missing \"key\" in \"reads\""},
        {"{\"op\":\"range\",\"reads\":[{\"key\":\"a\",\"x\":1}],\"call\":1,"
         "\"return\":2}",
         "line 4: unknown field \"x\" in \"reads\""},
        {"{\"op\":\"range\",\"key\":\"a\",\"reads\":[{\"key\":\"a\"}],"
         "\"call\":1,\"return\":2}",
         "line 4: field \"key\" is not one of range's"},
        {"{\"op\":\"get\",\"key\":\"a\",\"succeeded\":true,\"call\":1,"
         "\"return\":2}",
         "line 4: field \"succeeded\" is not one of get's"},
        {"{\"op\":\"txn\",\"call\":1,\"return\":2}",
         "line 4: a txn needs a compare or an op"},
        {"{\"op\":\"txn\",\"then\":[{\"op\":\"put\",\"key\":\"a\","
         "\"value\":\"1\"}],\"call\":1,\"return\":2}",
         "line 4: missing \"succeeded\""},
        {"{\"op\":\"txn\",\"then\":[{\"op\":\"append\",\"key\":\"a\"}],"
         "\"succeeded\":true,\"call\":1,\"return\":2}",
         "line 4: \"op\" in \"then\" must be put or delete"},
        {"{\"op\":\"txn\",\"else\":[{\"op\":\"put\",\"key\":\"a\"}],"
         "\"succeeded\":true,\"call\":1,\"return\":2}",
         "line 4: missing \"value\" of a put in \"else\""},
        {"{\"op\":\"txn\",\"compares\":[{\"key\":\"a\",\"target\":\"mod\","
         "\"result\":\"=\",\"value\":\"1\"}],\"succeeded\":true,\"call\":1,"
         "\"return\":2}",
         "line 4: \"target\" must be value or version"},
        {"{\"op\":\"txn\",\"compares\":[{\"key\":\"a\",\"target\":\"value\","
         "\"result\":\"==\",\"value\":\"1\"}],\"succeeded\":true,\"call\":1,"
         "\"return\":2}",
         "line 4: \"result\" must be =, !=, > or <"},
        {"{\"op\":\"txn\",\"compares\":[{\"key\":\"a\",\"target\":\"version\","
         "\"result\":\"=\",\"value\":\"1\"}],\"succeeded\":true,\"call\":1,"
         "\"return\":2}",
         "line 4: missing \"version\" in a version compare"},
        {"{\"op\":\"txn\",\"compares\":[{\"key\":\"a\",\"target\":\"version\","
         "\"result\":\"=\",\"version\":-1}],\"succeeded\":true,\"call\":1,"
         "\"return\":2}",
         "line 4: \"version\" is out of range"},
        {"{\"op\":\"txn\",\"compares\":[{\"key\":\"\\u0100\",\"target\":"
         "\"version\",\"result\":\"=\",\"version\":1}],\"succeeded\":true,"
         "\"call\":1,\"return\":2}",
         "line 4: \\u0100 in key is above \\u00ff"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, "%s\n%s\n%s", good, cases[i].line, good);
        expect_read_error(text, cases[i].err);
    }
    FILE *f = fmemopen((void *)good, strlen(good), "r");
    struct lc_history *h = new_history();
    char err[200];
    CU_ASSERT_EQUAL(lc_history_read(h, f, err, sizeof err), 0);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(lc_history_size(h), 2);
    const struct lc_event *e = lc_history_get(h, 0);
    CU_ASSERT(e->n_reads == 2 && !e->reads[0].found && e->reads[1].found);
    e = lc_history_get(h, 1);
    CU_ASSERT(e->n_compares == 1 && e->compares[0].version == 3 &&
              e->compares[0].result == LC_CMP_LESS && e->n_then == 1 &&
              e->then_ops[0].del && e->succeeded);
    lc_history_free(h);
}

/* ---- threads ------------------------------------------------------------- */

static void *add_many(void *arg)
{
    struct lc_history *h = arg;
    for (int i = 0; i < 2000; i++) {
        struct lc_event e = {.op = LC_APPEND,
                             .key = "k",
                             .key_len = 1,
                             .value = "x",
                             .value_len = 1,
                             .call_ns = i,
                             .return_ns = i + 1};
        if (lc_history_add(h, &e) != 0) {
            return arg;
        }
    }
    return NULL;
}

static void test_lincheck_adds_from_many_threads_are_all_kept(void)
{
    struct lc_history *h = new_history();
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_FATAL(pthread_create(&t[i], NULL, add_many, h) == 0);
    }
    for (int i = 0; i < 4; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        CU_ASSERT_PTR_NULL(rv);
    }
    CU_ASSERT_EQUAL(lc_history_size(h), 8000);
    struct lc_event bad = {
        .op = LC_GET, .key = "k", .key_len = 1, .call_ns = 5, .return_ns = 4};
    CU_ASSERT_EQUAL(lc_history_add(h, &bad), -1);
    bad.return_ns = 6;
    bad.out_len = 3; /* NULL bytes with a length */
    CU_ASSERT_EQUAL(lc_history_add(h, &bad), -1);
    bad.out_len = 0;
    bad.op = (enum lc_op)9;
    CU_ASSERT_EQUAL(lc_history_add(h, &bad), -1);
    CU_ASSERT_EQUAL(lc_history_size(h), 8000);
    lc_history_free(h);
}

/* ---- the command --------------------------------------------------------- */

/* Run the lincheck command with args; output to out_path. @return its exit
 * status, or -1 if it did not exit normally. */
static int run_lincheck(const char *out_path,
                        const char *a1,
                        const char *a2,
                        const char *a3)
{
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        FILE *o = freopen(out_path, "w", stdout);
        if (!o || dup2(fileno(stdout), 2) < 0) {
            _exit(127);
        }
        execl(LINCHECK_BIN, LINCHECK_BIN, a1, a2, a3, (char *)NULL);
        _exit(127);
    }
    int status;
    CU_ASSERT_FATAL(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    CU_ASSERT_EQUAL(fclose(f), 0);
}

/* Does the file start with prefix? */
static bool file_starts_with(const char *path, const char *prefix)
{
    char buf[2048] = {0};
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (strncmp(buf, prefix, strlen(prefix)) != 0) {
        printf("\n      %s: \"%s\" does not start with \"%s\"\n", path, buf,
               prefix);
        return false;
    }
    return true;
}

static void test_lincheck_command_exit_codes(void)
{
    char dir[] = "/tmp/lincheck-test-XXXXXX";
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    char good[256], bad[256], broken[256], slow[256], out[256];
    snprintf(good, sizeof good, "%s/good.jsonl", dir);
    snprintf(bad, sizeof bad, "%s/bad.jsonl", dir);
    snprintf(broken, sizeof broken, "%s/broken.jsonl", dir);
    snprintf(slow, sizeof slow, "%s/slow.jsonl", dir);
    snprintf(out, sizeof out, "%s/out.txt", dir);

    struct lc_history *h = new_history();
    put(h, 1, "k1", "a", 0, 10);
    get(h, 2, "k1", "a", 20, 30);
    put(h, 1, "k2", "b", 0, 10);
    FILE *f = fopen(good, "w");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_EQUAL(lc_history_write(h, f), 0);
    fclose(f);
    get(h, 3, "k2", NULL, 40, 50);
    f = fopen(bad, "w");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_EQUAL(lc_history_write(h, f), 0);
    fclose(f);
    lc_history_free(h);
    write_file(broken,
               "{\"op\":\"get\",\"key\":\"k\",\"call\":1,\"return\":2}\n"
               "{\"op\":\"get\",\"key\":\"k\",\"bogus\":1}\n");
    h = pathological_history();
    f = fopen(slow, "w");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_EQUAL(lc_history_write(h, f), 0);
    fclose(f);
    lc_history_free(h);

    CU_ASSERT_EQUAL(run_lincheck(out, good, NULL, NULL), 0);
    CU_ASSERT(file_starts_with(out, "linearizable: 3 operations, 2 keys\n"));
    CU_ASSERT_EQUAL(run_lincheck(out, "--quiet", good, NULL), 0);
    CU_ASSERT(file_starts_with(out, ""));
    CU_ASSERT_EQUAL(run_lincheck(out, bad, NULL, NULL), 1);
    CU_ASSERT(file_starts_with(out, "NOT linearizable: key \"k2\""));
    CU_ASSERT_EQUAL(run_lincheck(out, broken, NULL, NULL), 2);
    CU_ASSERT(file_starts_with(out, "lincheck: "));
    CU_ASSERT_EQUAL(run_lincheck(out, "--budget", "0.001", slow), 3);
    CU_ASSERT(file_starts_with(out,
                               "unknown: time budget of 0.001 s ran out "
                               "after 0 of 1 keys; key \"k\""));
    CU_ASSERT_EQUAL(run_lincheck(out, "--budget", "soon", good), 2);
    CU_ASSERT_EQUAL(run_lincheck(out, "--frob", good, NULL), 2);
    CU_ASSERT_EQUAL(run_lincheck(out, NULL, NULL, NULL), 2);
    CU_ASSERT_EQUAL(run_lincheck(out, "/nonexistent/x.jsonl", NULL, NULL), 2);
    CU_ASSERT_EQUAL(run_lincheck(out, "--help", NULL, NULL), 0);
    CU_ASSERT(file_starts_with(out, "usage: lincheck"));
    CU_ASSERT_EQUAL(cunit_remove_tree(dir), 0);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_lincheck_empty_history_is_linearizable",
         test_lincheck_empty_history_is_linearizable},
        {"test_lincheck_sequential_put_get_is_linearizable",
         test_lincheck_sequential_put_get_is_linearizable},
        {"test_lincheck_stale_read_after_put_is_not_linearizable",
         test_lincheck_stale_read_after_put_is_not_linearizable},
        {"test_lincheck_concurrent_get_may_see_old_or_new_value",
         test_lincheck_concurrent_get_may_see_old_or_new_value},
        {"test_lincheck_get_of_a_value_never_written_is_not_linearizable",
         test_lincheck_get_of_a_value_never_written_is_not_linearizable},
        {"test_lincheck_concurrent_appends_in_either_order",
         test_lincheck_concurrent_appends_in_either_order},
        {"test_lincheck_read_going_back_from_ab_to_a_is_not_linearizable",
         test_lincheck_read_going_back_from_ab_to_a_is_not_linearizable},
        {"test_lincheck_duplicated_append_is_not_linearizable",
         test_lincheck_duplicated_append_is_not_linearizable},
        {"test_lincheck_unknown_put_may_or_may_not_take_effect",
         test_lincheck_unknown_put_may_or_may_not_take_effect},
        {"test_lincheck_unknown_put_seen_then_unseen_is_not_linearizable",
         test_lincheck_unknown_put_seen_then_unseen_is_not_linearizable},
        {"test_lincheck_many_unknown_writes_that_never_happened",
         test_lincheck_many_unknown_writes_that_never_happened},
        {"test_lincheck_delete_reports_what_it_found",
         test_lincheck_delete_reports_what_it_found},
        {"test_lincheck_cas_swaps_only_on_a_match",
         test_lincheck_cas_swaps_only_on_a_match},
        {"test_lincheck_unknown_cas_swaps_only_on_a_match",
         test_lincheck_unknown_cas_swaps_only_on_a_match},
        {"test_lincheck_range_sees_a_txn_whole_or_not_at_all",
         test_lincheck_range_sees_a_txn_whole_or_not_at_all},
        {"test_lincheck_unknown_txn_takes_effect_whole_or_not_at_all",
         test_lincheck_unknown_txn_takes_effect_whole_or_not_at_all},
        {"test_lincheck_txn_outcome_must_follow_its_compares",
         test_lincheck_txn_outcome_must_follow_its_compares},
        {"test_lincheck_txn_version_compares_count_changes",
         test_lincheck_txn_version_compares_count_changes},
        {"test_lincheck_ranges_disagreeing_on_an_order_are_caught",
         test_lincheck_ranges_disagreeing_on_an_order_are_caught},
        {"test_lincheck_groups_are_checked_apart",
         test_lincheck_groups_are_checked_apart},
        {"test_lincheck_events_of_the_wrong_shape_are_refused",
         test_lincheck_events_of_the_wrong_shape_are_refused},
        {"test_lincheck_ranges_and_txns_agree_with_brute_force",
         test_lincheck_ranges_and_txns_agree_with_brute_force},
        {"test_lincheck_bank_histories_check_in_reasonable_time",
         test_lincheck_bank_histories_check_in_reasonable_time},
        {"test_lincheck_bad_key_among_good_ones_is_named",
         test_lincheck_bad_key_among_good_ones_is_named},
        {"test_lincheck_random_histories_pass_and_a_garbage_read_fails",
         test_lincheck_random_histories_pass_and_a_garbage_read_fails},
        {"test_lincheck_agrees_with_brute_force_on_small_histories",
         test_lincheck_agrees_with_brute_force_on_small_histories},
        {"test_lincheck_large_histories_check_in_reasonable_time",
         test_lincheck_large_histories_check_in_reasonable_time},
        {"test_lincheck_tiny_budget_gives_unknown",
         test_lincheck_tiny_budget_gives_unknown},
        {"test_lincheck_json_round_trip_keeps_bytes_and_verdict",
         test_lincheck_json_round_trip_keeps_bytes_and_verdict},
        {"test_lincheck_json_malformed_lines_give_line_numbers",
         test_lincheck_json_malformed_lines_give_line_numbers},
        {"test_lincheck_json_round_trip_of_ranges_and_txns",
         test_lincheck_json_round_trip_of_ranges_and_txns},
        {"test_lincheck_json_malformed_ranges_and_txns_are_named",
         test_lincheck_json_malformed_ranges_and_txns_are_named},
        {"test_lincheck_adds_from_many_threads_are_all_kept",
         test_lincheck_adds_from_many_threads_are_all_kept},
        {"test_lincheck_command_exit_codes", test_lincheck_command_exit_codes},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"lincheck", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
