/* test_quota.c: --quota-bytes: the leader refuses writes that would grow
 * the state past the quota with NO_SPACE and a message saying what to do,
 * deletes make room again, and nothing acknowledged is lost. The unit
 * suite checks how the state is measured in LMDB. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <CUnit/Basic.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"
#include "quota.h"
#include "store.h"

#ifndef KVCTL_BIN
#error "KVCTL_BIN must name the kvctl binary"
#endif

#define FAILED_SINCE(before) (CU_get_number_of_failures() > (before))
#define KIB                  1024u
#define MIB                  (1024u * KIB)
#define QUOTA                (2u * MIB)
#define BIG                  (32u * KIB) /* value of the filling writes */
#define SMALL                100u        /* value of the topping-up writes */
#define MAX_KEYS             4000

/* ---------------------------------------------------------- unit suite */

static char dir[64];
static struct kv_store st;

static int open_store(void)
{
    snprintf(dir, sizeof dir, "/tmp/raftkv-quota-XXXXXX");
    if (!mkdtemp(dir) || kv_store_open(&st, dir, 0) != 0) {
        fprintf(stderr, "open store in %s: %s\n", dir, st.errmsg);
        return -1;
    }
    return 0;
}

static void close_store(void)
{
    kv_store_close(&st);
    cunit_remove_tree(dir);
}

/* Put (or with @del delete) keys u<from>..u<to-1>, @len-byte values, in
 * one committed transaction. */
static int store_keys(int from, int to, size_t len, bool del)
{
    static char val[8 * KIB];
    memset(val, 'v', sizeof val);
    MDB_txn *txn;
    int rc = mdb_txn_begin(st.env, NULL, 0, &txn);
    for (int i = from; !rc && i < to; i++) {
        char key[16];
        snprintf(key, sizeof key, "u%05d", i);
        MDB_val k = {strlen(key), key}, v = {len, val};
        rc = del ? mdb_del(txn, st.kv, &k, NULL)
                 : mdb_put(txn, st.kv, &k, &v, 0);
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/* The data file's size in pages used: what mdb_env_info reports. */
static uint64_t file_bytes(void)
{
    MDB_envinfo info;
    MDB_stat es;
    mdb_env_info(st.env, &info);
    mdb_env_stat(st.env, &es);
    return ((uint64_t)info.me_last_pgno + 1) * es.ms_psize;
}

static uint64_t state_bytes(MDB_txn *txn)
{
    uint64_t b = 0;
    CU_ASSERT_EQUAL(kv_quota_state_bytes(&st, txn, &b), 0);
    return b;
}

/* The measure falls when keys are deleted, though the file does not
 * shrink; freed pages are reused by later writes. */
static void
test_quota_state_bytes_fall_after_deletes_and_freed_pages_are_reused(void)
{
    CU_ASSERT_FATAL(open_store() == 0);
    uint64_t empty = state_bytes(NULL);
    CU_ASSERT(empty > 0 && empty < 64 * KIB);
    /* 200 values of 8 KiB: each in overflow pages of its own. */
    CU_ASSERT_EQUAL_FATAL(store_keys(0, 200, 8 * KIB, false), 0);
    uint64_t full = state_bytes(NULL), file_full = file_bytes();
    CU_ASSERT(full >= empty + 200 * 8 * KIB);
    CU_ASSERT(full <= file_full);

    CU_ASSERT_EQUAL_FATAL(store_keys(0, 200, 0, true), 0);
    uint64_t emptied = state_bytes(NULL);
    CU_ASSERT(emptied < empty + 64 * KIB);
    /* LMDB's file (me_last_pgno) keeps its high-water mark: a quota on it
     * would refuse writes for good once reached. */
    CU_ASSERT(file_bytes() >= file_full);

    /* Half as much again: the freed pages take it, the file stays. LMDB
     * keeps the last two commits intact, so pages freed by commit N are
     * reused from commit N + 2 on: one commit in between. */
    CU_ASSERT_EQUAL_FATAL(store_keys(900, 901, 10, false), 0);
    CU_ASSERT_EQUAL_FATAL(store_keys(1000, 1100, 8 * KIB, false), 0);
    uint64_t half = state_bytes(NULL);
    CU_ASSERT(half >= empty + 100 * 8 * KIB);
    CU_ASSERT(half < full);
    CU_ASSERT(file_bytes() <= file_full + 64 * KIB);
    printf("\n    state: empty %" PRIu64 ", 200 x 8 KiB %" PRIu64
           ", deleted %" PRIu64 ", 100 again %" PRIu64 "; file %" PRIu64
           " then %" PRIu64 "\n",
           empty, full, emptied, half, file_full, file_bytes());
    close_store();
}

/* The node measures in its open state transaction: what was applied since
 * the last commit counts. */
static void test_quota_state_bytes_count_the_open_write_transaction(void)
{
    CU_ASSERT_FATAL(open_store() == 0);
    uint64_t committed = state_bytes(NULL);
    MDB_txn *txn;
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    static char val[8 * KIB];
    for (int i = 0; i < 50; i++) {
        char key[16];
        snprintf(key, sizeof key, "w%05d", i);
        MDB_val k = {strlen(key), key}, v = {sizeof val, val};
        CU_ASSERT_EQUAL(mdb_put(txn, st.kv, &k, &v, 0), 0);
    }
    CU_ASSERT(state_bytes(txn) >= committed + 50 * sizeof val);
    CU_ASSERT_EQUAL(state_bytes(NULL), committed);
    mdb_txn_abort(txn);
    close_store();
}

static void test_quota_flag_takes_bytes_and_binary_units_only(void)
{
    struct
    {
        const char *text;
        int rv;
        uint64_t bytes;
    } cases[] = {
        {"2097152", 0, 2097152},
        {"0", 0, 0},
        {"512MiB", 0, 512ull << 20},
        {"512M", 0, 512ull << 20},
        {"8GiB", 0, 8ull << 30},
        {"8G", 0, 8ull << 30},
        {"3KiB", 0, 3072},
        {"1TiB", 0, 1ull << 40},
        {"100B", 0, 100},
        {"", -1, 0},
        {"-1", -1, 0},
        {" 5", -1, 0},
        {"+5", -1, 0},
        {"5XB", -1, 0},
        {"8 GiB", -1, 0},
        {"8GB", -1, 0},
        {"GiB", -1, 0},
        {"16777216T", -1, 0},            /* 2^64: overflows */
        {"99999999999999999999", -1, 0}, /* over 2^64 - 1 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t got = 12345;
        int rv = kv_quota_parse(cases[i].text, &got);
        if (rv != cases[i].rv || (rv == 0 && got != cases[i].bytes)) {
            fprintf(stderr, "'%s': %d, %" PRIu64 "\n", cases[i].text, rv, got);
        }
        CU_ASSERT_EQUAL(rv, cases[i].rv);
        if (rv == 0) {
            CU_ASSERT_EQUAL(got, cases[i].bytes);
        }
    }
}

static void test_quota_refuses_what_would_go_over_and_says_how_to_get_out(void)
{
    CU_ASSERT(!kv_quota_exceeded(100, 90, 10)); /* exactly at the quota */
    CU_ASSERT(kv_quota_exceeded(100, 90, 11));
    CU_ASSERT(kv_quota_exceeded(100, 100, 0));
    CU_ASSERT(kv_quota_exceeded(100, 200, 0));
    CU_ASSERT(kv_quota_exceeded(100, 50, UINT64_MAX)); /* no wrap-around */
    CU_ASSERT(!kv_quota_exceeded(0, UINT64_MAX, UINT64_MAX)); /* no quota */

    char m[400];
    kv_quota_message(8ull << 30, (8ull << 30) + (100ull << 20), m, sizeof m);
    CU_ASSERT(strstr(m, "the state is 8.1 GiB") != NULL);
    CU_ASSERT(strstr(m, "--quota-bytes 8.0 GiB (8589934592 bytes)") != NULL);
    CU_ASSERT(strstr(m, "delete keys and compact the history") != NULL);
    CU_ASSERT(strstr(m, "deletes and compactions are still accepted") != NULL);
    CU_ASSERT(strlen(m) < 300); /* fits clerk's and kvctl's messages */

    char b[32];
    kv_quota_format(512, b, sizeof b);
    CU_ASSERT_STRING_EQUAL(b, "512 B");
    kv_quota_format(1536, b, sizeof b);
    CU_ASSERT_STRING_EQUAL(b, "1.5 KiB");
    kv_quota_format(2 * MIB, b, sizeof b);
    CU_ASSERT_STRING_EQUAL(b, "2.0 MiB");
}

/* ------------------------------------------------------- cluster suite */

static char body[1 << 20];

/* A metric of node i, or -1 when the node does not answer. */
static double metric(struct h_cluster *c, size_t i, const char *name)
{
    if (h_http_get(c, i, "GET", "/metrics", body, sizeof body) != 200) {
        return -1;
    }
    return h_metric(body, name);
}

/* The value written to key @name: its name, then a pattern of its own. */
static char *value_of(const char *name, size_t len)
{
    char *v = malloc(len);
    if (!v) {
        abort();
    }
    size_t h = 0;
    for (const char *p = name; *p; p++) {
        h = h * 31 + (unsigned char)*p;
    }
    for (size_t i = 0; i < len; i++) {
        v[i] = (char)('a' + (h + i * 7) % 26);
    }
    memcpy(v, name, strlen(name) < len ? strlen(name) : len);
    return v;
}

/* Keys written, and what became of them. */
struct written
{
    char name[16]; /* the key */
    size_t len;    /* its value's length (value_of) */
    bool deleted;  /* deleted since (acknowledged) */
};

static struct written keys[MAX_KEYS];
static size_t n_keys;

/* Put keys prefix%04d with @len-byte values until one is refused, at
 * most @max. Each acknowledged one is recorded.
 * @return how many were acknowledged; *refused_rv is the refusing result
 *   (CLERK_OK when none was refused)
 */
static size_t fill(struct clerk *ck,
                   const char *prefix,
                   size_t len,
                   size_t max,
                   int *refused_rv)
{
    size_t acked = 0;
    *refused_rv = CLERK_OK;
    for (size_t i = 0; i < max && n_keys < MAX_KEYS; i++) {
        struct written *w = &keys[n_keys];
        snprintf(w->name, sizeof w->name, "%s%04zu", prefix, i);
        char *v = value_of(w->name, len);
        int rv = clerk_put(ck, w->name, strlen(w->name), v, len);
        free(v);
        if (rv != CLERK_OK) {
            *refused_rv = rv;
            break;
        }
        w->len = len;
        w->deleted = false;
        n_keys++;
        acked++;
    }
    return acked;
}

/* Every acknowledged key holds its value, and every deleted one is gone,
 * read through @ck. @return how many keys did not. */
static size_t check_keys(struct clerk *ck)
{
    size_t bad = 0;
    for (size_t i = 0; i < n_keys; i++) {
        void *v = NULL;
        size_t len = 0;
        int rv = clerk_get(ck, keys[i].name, strlen(keys[i].name), &v, &len);
        if (keys[i].deleted) {
            bad += rv != CLERK_NOT_FOUND;
        } else {
            char *want = value_of(keys[i].name, keys[i].len);
            bool ok = rv == CLERK_OK && len == keys[i].len &&
                      memcmp(v, want, len) == 0;
            if (!ok && bad < 5) {
                fprintf(stderr, "%s: %s (%zu bytes)\n", keys[i].name,
                        clerk_strerror(rv), len);
            }
            bad += !ok;
            free(want);
        }
        clerk_free(v);
    }
    return bad;
}

/* Size of node i's LMDB data file. */
static uint64_t data_file_bytes(struct h_cluster *c, size_t i)
{
    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", c->nodes[i].dir);
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* Run kvctl; out gets stdout and stderr. Returns its exit status, or -1. */
static int kvctl(const char *eps, const char *args, char *out, size_t cap)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s --cluster %s %s < /dev/null 2>&1", KVCTL_BIN,
             eps, args);
    FILE *p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    size_t got = fread(out, 1, cap - 1, p);
    out[got] = 0;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_quota_refuses_growing_writes_and_deletes_make_room(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    n_keys = 0;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, "--quota-bytes 2MiB") == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    size_t L = (size_t)leader, F = (L + 1) % 3;
    char eps[512];
    h_endpoints(&c, eps, sizeof eps);
    struct clerk *ck;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, NULL) == CLERK_OK);
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(metric(&c, i, "raftkv_quota_bytes"), QUOTA);
        CU_ASSERT_EQUAL(metric(&c, i, "raftkv_quota_refusals_total"), 0);
    }
    double state_empty = metric(&c, L, "raftkv_state_bytes");
    CU_ASSERT(state_empty > 0 && state_empty < 256 * KIB);
    unsigned refusals = 0;

    /* Fill with 32 KiB values: refused near the quota, not before, and
     * never past it. */
    int rv;
    size_t big = fill(ck, "q", BIG, 200, &rv);
    CU_ASSERT_EQUAL_FATAL(rv, CLERK_NO_SPACE);
    refusals++;
    printf("\n    %zu puts of 32 KiB acknowledged, then: %s\n", big,
           clerk_errmsg(ck));
    /* A put writes its value once (into its event in the history; the
     * key's record refers to it). */
    CU_ASSERT(big * BIG >= QUOTA / 2);
    CU_ASSERT(big * BIG <= QUOTA);
    CU_ASSERT(strstr(clerk_errmsg(ck), "over --quota-bytes 2.0 MiB") != NULL);
    CU_ASSERT(strstr(clerk_errmsg(ck),
                     "delete keys and compact the history (kvctl compact), "
                     "or raise the quota; deletes and compactions are still "
                     "accepted") != NULL);
    CU_ASSERT(h_log_count(&c, L, "writes refused: the state is") == 1);

    /* Top up with small values until even they are refused: the state is
     * at the quota then, and every write that grows it is refused. */
    size_t small = fill(ck, "s", SMALL, 3000, &rv);
    CU_ASSERT_EQUAL_FATAL(rv, CLERK_NO_SPACE);
    refusals++;
    printf("    then %zu puts of 100 bytes\n", small);
    CU_ASSERT(h_log_count(&c, L, "writes accepted again") == (small ? 1 : 0));
    double state_full = metric(&c, L, "raftkv_state_bytes");
    CU_ASSERT(state_full >= QUOTA);
    CU_ASSERT(state_full <= QUOTA + 64 * KIB);

    char *v0 = value_of(keys[0].name, keys[0].len);
    CU_ASSERT_EQUAL(clerk_cas(ck, keys[0].name, strlen(keys[0].name), v0,
                              keys[0].len, "x", 1, NULL, NULL),
                    CLERK_NO_SPACE);
    refusals++;
    free(v0);
    CU_ASSERT(strstr(clerk_errmsg(ck), "--quota-bytes 2.0 MiB") != NULL);
    CU_ASSERT_EQUAL(
        clerk_append(ck, keys[1].name, strlen(keys[1].name), "x", 1),
        CLERK_NO_SPACE);
    refusals++;
    CU_ASSERT_EQUAL(clerk_put(ck, "tiny", 4, "", 0), CLERK_NO_SPACE);
    refusals++;

    /* kvctl shows the server's message. */
    char out[2048];
    int status = kvctl(eps, "put kvctl-key v", out, sizeof out);
    refusals++;
    printf("    kvctl: %s", out);
    CU_ASSERT(status != 0);
    CU_ASSERT(strstr(out, "NO_SPACE") != NULL);
    CU_ASSERT(strstr(out, "over --quota-bytes 2.0 MiB") != NULL);
    CU_ASSERT(strstr(out, "delete keys and compact the history") != NULL);

    /* A follower does not check: it sends the write to the leader. */
    struct h_client hc;
    CU_ASSERT_FATAL(h_client_open(&hc, &c, cunit_seed()) == 0);
    CU_ASSERT_EQUAL(h_put_raw(&hc, F, "via-follower", "v", 1, false),
                    RAFTKV__KV_ERROR__KV_WRONG_LEADER);
    h_client_close(&hc);

    /* A transaction that only reads is a read: answered over the quota.
     * The same with a put in the branch that does not run is a write,
     * refused. */
    struct clerk_txn *t = clerk_txn_new();
    CU_ASSERT_FATAL(t != NULL);
    const char *k0 = keys[0].name;
    clerk_txn_compare_version(t, k0, strlen(k0), CLERK_CMP_GREATER, 0);
    clerk_txn_range(t, CLERK_TXN_THEN, k0, strlen(k0), NULL, 0, 0, 0);
    struct clerk_txn_result *tr = NULL;
    CU_ASSERT_EQUAL(clerk_txn_commit(ck, t, &tr), CLERK_OK);
    CU_ASSERT(tr && tr->succeeded && tr->n_responses == 1 &&
              tr->responses[0].range->n_kvs == 1);
    clerk_txn_result_free(tr);
    /* A new client too (libclerk opens it a session first, for servers
     * older than read-only transactions; sessions open over the quota). */
    struct clerk *fresh;
    CU_ASSERT_FATAL(clerk_open(&fresh, eps, NULL) == CLERK_OK);
    CU_ASSERT_EQUAL(clerk_txn_commit(fresh, t, &tr), CLERK_OK);
    CU_ASSERT(tr && tr->succeeded && tr->n_responses == 1);
    clerk_txn_result_free(tr);
    clerk_close(fresh);
    clerk_txn_put(t, CLERK_TXN_ELSE, "tiny", 4, "", 0, 0);
    CU_ASSERT_EQUAL(clerk_txn_commit(ck, t, &tr), CLERK_NO_SPACE);
    refusals++;
    clerk_txn_free(t);

    /* Reads go on; every node counted only what it refused as leader. */
    CU_ASSERT_EQUAL(check_keys(ck), 0);
    double counted = 0;
    for (size_t i = 0; i < 3; i++) {
        counted += metric(&c, i, "raftkv_quota_refusals_total");
    }
    CU_ASSERT_EQUAL(counted, refusals);
    CU_ASSERT_EQUAL(metric(&c, L, "raftkv_quota_refusals_total"), refusals);
    /* One "refused" line for all of them: at most one a minute. */
    CU_ASSERT_EQUAL(h_log_count(&c, L, "writes refused: the state is"), 1);

    /* A new client (a new session) deletes half of the big keys. */
    h_sleep_ms(500); /* a state commit: the data file as it is now */
    uint64_t file_full = data_file_bytes(&c, L);
    CU_ASSERT(file_full >= QUOTA);
    struct clerk *ck2;
    CU_ASSERT_FATAL(clerk_open(&ck2, eps, NULL) == CLERK_OK);
    size_t freed = big / 2;
    for (size_t i = 0; i < freed; i++) {
        CU_ASSERT_EQUAL(clerk_delete(ck2, keys[i].name, strlen(keys[i].name)),
                        CLERK_OK);
        keys[i].deleted = true;
    }
    /* The deleted values are still in the history (a put writes its value
     * once, into its event): the deletes alone free little. Compact the
     * history (up to the store's revision), as the message says; accepted
     * over the quota. */
    struct clerk_kv *kv = NULL;
    uint64_t rev = 0, compacted = 0;
    CU_ASSERT_EQUAL(clerk_get_ex(ck2, keys[freed].name,
                                 strlen(keys[freed].name), &kv, &rev),
                    CLERK_OK);
    clerk_kv_free(kv);
    CU_ASSERT_EQUAL(clerk_compact(ck2, rev, &compacted), CLERK_OK);
    CU_ASSERT_EQUAL(compacted, rev);
    clerk_close(ck2);
    double state_freed = metric(&c, L, "raftkv_state_bytes");
    CU_ASSERT(state_freed <= state_full - freed * BIG);

    /* LMDB reuses the pages a commit freed from the second commit after it
     * on (it keeps the last two intact): two small writes, each in a state
     * commit of its own (--state-commit-ms 100), before the refill. */
    for (int k = 0; k < 2; k++) {
        h_sleep_ms(300);
        CU_ASSERT_EQUAL(fill(ck, k ? "u" : "t", SMALL, 1, &rv), 1);
    }
    h_sleep_ms(300);

    /* Writes are accepted again, about as many as were deleted, in the
     * pages the deletes and the compaction freed. */
    size_t again = fill(ck, "r", BIG, 200, &rv);
    CU_ASSERT_EQUAL(rv, CLERK_NO_SPACE);
    refusals++;
    printf("    %zu deleted, %zu puts of 32 KiB accepted again\n", freed,
           again);
    CU_ASSERT(again >= freed * 3 / 4);
    CU_ASSERT(again <= freed + 2);
    h_sleep_ms(500);
    uint64_t file_again = data_file_bytes(&c, L);
    printf("    data file %" PRIu64 " bytes when full, %" PRIu64
           " after the deletes and the refill\n",
           file_full, file_again);
    /* The data file grew only by the values that were still current when
     * the compaction dropped their events: it moved them into their keys'
     * records, in new pages (the pages it freed are reused from the
     * second commit after it on). */
    CU_ASSERT(file_again <= file_full + (big - freed) * BIG + 256 * KIB);
    CU_ASSERT_EQUAL(metric(&c, L, "raftkv_quota_refusals_total"), refusals);
    /* Refused, accepted after the deletes, refused again: each change of
     * kind is logged at most once a minute. */
    CU_ASSERT_EQUAL(h_log_count(&c, L, "writes refused: the state is"), 1);
    CU_ASSERT_EQUAL(h_log_count(&c, L, "writes accepted again"), 1);

    /* Nothing acknowledged was lost, on any node. */
    CU_ASSERT_EQUAL(check_keys(ck), 0);
    const char *last = keys[n_keys - 1].name;
    for (size_t i = 0; i < 3; i++) {
        char ep[64];
        snprintf(ep, sizeof ep, "%s:%u", c.nodes[i].host, c.nodes[i].port);
        struct clerk *one;
        CU_ASSERT_FATAL(clerk_open(&one, ep, NULL) == CLERK_OK);
        clerk_set_read_mode(one, CLERK_READ_STALE);
        uint64_t end = h_now_ms() + 10000;
        void *v = NULL;
        size_t len;
        while (clerk_get(one, last, strlen(last), &v, &len) != CLERK_OK &&
               h_now_ms() < end) {
            h_sleep_ms(50);
        }
        clerk_free(v);
        size_t bad = check_keys(one);
        if (bad) {
            fprintf(stderr, "node %zu: %zu keys wrong\n", i, bad);
        }
        CU_ASSERT_EQUAL(bad, 0);
        clerk_close(one);
    }
    clerk_close(ck);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* The default is 8 GiB; 0 turns the quota off. */
static void test_quota_defaults_to_8_gib_and_zero_turns_it_off(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 1, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) == 0);
    CU_ASSERT_EQUAL(metric(&c, 0, "raftkv_quota_bytes"), 8.0 * 1024 * MIB);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);

    CU_ASSERT_FATAL(h_cluster_start(&c, 1, "--quota-bytes 0") == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) == 0);
    CU_ASSERT_EQUAL(metric(&c, 0, "raftkv_quota_bytes"), 0);
    char eps[128];
    h_endpoints(&c, eps, sizeof eps);
    struct clerk *ck;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, NULL) == CLERK_OK);
    n_keys = 0;
    int rv;
    /* Past what 2 MiB would hold. */
    CU_ASSERT_EQUAL(fill(ck, "z", BIG, 3 * QUOTA / BIG, &rv), 3 * QUOTA / BIG);
    CU_ASSERT_EQUAL(rv, CLERK_OK);
    CU_ASSERT(metric(&c, 0, "raftkv_state_bytes") >= 3 * QUOTA);
    CU_ASSERT_EQUAL(metric(&c, 0, "raftkv_quota_refusals_total"), 0);
    clerk_close(ck);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

int main(int argc, char **argv)
{
    static CU_TestInfo unit[] = {
        {"test_quota_state_bytes_fall_after_deletes_and_freed_pages_are_reused",
         test_quota_state_bytes_fall_after_deletes_and_freed_pages_are_reused},
        {"test_quota_state_bytes_count_the_open_write_transaction",
         test_quota_state_bytes_count_the_open_write_transaction},
        {"test_quota_flag_takes_bytes_and_binary_units_only",
         test_quota_flag_takes_bytes_and_binary_units_only},
        {"test_quota_refuses_what_would_go_over_and_says_how_to_get_out",
         test_quota_refuses_what_would_go_over_and_says_how_to_get_out},
        CU_TEST_INFO_NULL,
    };
    static CU_TestInfo cluster[] = {
        {"test_quota_refuses_growing_writes_and_deletes_make_room",
         test_quota_refuses_growing_writes_and_deletes_make_room},
        {"test_quota_defaults_to_8_gib_and_zero_turns_it_off",
         test_quota_defaults_to_8_gib_and_zero_turns_it_off},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"quota_unit", NULL, NULL, NULL, NULL, unit},
        {"quota_cluster", NULL, NULL, NULL, NULL, cluster},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
