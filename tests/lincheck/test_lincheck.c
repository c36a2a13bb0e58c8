/* test_lincheck.c: the linearizability checker on known-good and known-bad
 * KV histories, random simulated stores, JSON lines and the command.
 *
 * RAFTKV_SEED reruns the random histories; LINCHECK_VERBOSE=1 prints
 * timings and details; LINCHECK_DUMP=file saves a random history that
 * failed or was slow; LINCHECK_BF_ROUNDS and LINCHECK_BF_MAX (up to 24 ops)
 * make the comparison with the exhaustive search longer. */
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
        CU_ASSERT(strstr(r.detail, "key \"") != NULL);
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
    char value[24];     /* value argument */
    char expected[24];  /* cas expected */
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
         "line 3: bad escape \\q"},
        {"{\"op\":\"get\",\"key\":\"\\u0100\",\"call\":1,\"return\":2}",
         "line 3: \\u0100"},
        {"{\"op\":\"get\",\"key\":\"\\u00zz\",\"call\":1,\"return\":2}",
         "line 3: bad \\u escape"},
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
         "line 3: \"call\" is out of range"},
        {"{\"op\":\"get\",\"key\":\"k\",\"found\":1,\"call\":1,\"return\":2}",
         "line 3: \"found\" must be true or false"},
        {"{\"op\":\"get\",\"key\":7,\"call\":1,\"return\":2}",
         "line 3: \"key\" must be a string"},
        {"{\"op\":\"get\",\"op\":\"get\",\"key\":\"k\",\"call\":1,"
         "\"return\":2}",
         "line 3: field \"op\" given twice"},
        {"{\"op\":\"get\",\"key\":\"k\",\"call\":1,\"return\":2} x",
         "line 3: unexpected text"},
        {"[1,2]", "line 3: expected '{'"},
        {"{\"op\":\"get\",\"key\":\"a\tb\",\"call\":1,\"return\":2}",
         "line 3: raw control byte"},
        {"{\"op\":\"get\",\"key\":\"k\" \"call\":1,\"return\":2}",
         "line 3: expected ',' or '}'"},
        {"{\"op\":\"get\",\"key\":\"k\",\"call\":1,\"return\":2,}",
         "line 3: expected a string"},
        {"{\"op\":\"get\",\"key\":\"k", "line 3: unterminated string"},
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
