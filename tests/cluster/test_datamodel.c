/* test_datamodel.c: libclerk's and kvctl's data-model calls (ranges,
 * deletes of ranges, transactions, compaction, history) on a real
 * 3-node cluster. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

#define MAX_DELETE 50 /* the cluster's --max-delete-keys */
#define SLICE      10 /* the cluster's --count-slice-keys */

static struct h_cluster dc; /* one cluster for every test */
static char eps[512];
static struct clerk *ck;

static int setup(void)
{
    char extra[96];
    snprintf(extra, sizeof extra, "--max-delete-keys %d --count-slice-keys %d",
             MAX_DELETE, SLICE);
    if (h_cluster_start(&dc, 3, extra) != 0 || h_find_leader(&dc, 10000) < 0) {
        return 1;
    }
    h_endpoints(&dc, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 10000};
    return clerk_open(&ck, eps, &o) == CLERK_OK ? 0 : 1;
}

static int teardown(void)
{
    clerk_close(ck);
    dc.keep = CU_get_number_of_failures() > 0;
    return h_cluster_destroy(&dc) == 0 ? 0 : 1;
}

/* Put and return the revision it made (0 on failure). */
static uint64_t put(const char *k, const char *v)
{
    struct clerk_put_result *r;
    int err = clerk_put_ex(ck, k, strlen(k), v, strlen(v), 0, &r);
    CU_ASSERT_EQUAL(err, CLERK_OK);
    if (err) {
        fprintf(stderr, "\n  put %s: %s: %s\n", k, clerk_error_code(err),
                clerk_errmsg(ck));
        return 0;
    }
    uint64_t rev = r->revision;
    clerk_put_result_free(r);
    return rev;
}

static bool kv_is(const struct clerk_kv *kv, const char *k, const char *v)
{
    return kv->key_len == strlen(k) && !memcmp(kv->key, k, kv->key_len) &&
           (!v || (kv->value_len == strlen(v) &&
                   !memcmp(kv->value, v, kv->value_len)));
}

static void test_range_revisions_limit_and_order(void)
{
    uint64_t r1 = put("r/a", "1");
    uint64_t r2 = put("r/b", "2");
    uint64_t r3 = put("r/c", "3");
    put("s", "outside");
    CU_ASSERT(r1 > 1 && r2 == r1 + 1 && r3 == r2 + 1);
    uint64_t r4 = put("r/a", "1b");
    uint8_t end[8];
    size_t end_len = clerk_prefix_end("r/", 2, end);
    struct clerk_range_result *r;
    CU_ASSERT_EQUAL_FATAL(clerk_range(ck, "r/", 2, end, end_len, 0, 0, &r),
                          CLERK_OK);
    CU_ASSERT_EQUAL_FATAL(r->n_kvs, 3);
    CU_ASSERT_EQUAL(r->count, 3);
    CU_ASSERT(!r->more);
    CU_ASSERT(r->revision >= r4);
    CU_ASSERT(kv_is(&r->kvs[0], "r/a", "1b"));
    CU_ASSERT_EQUAL(r->kvs[0].create_revision, r1);
    CU_ASSERT_EQUAL(r->kvs[0].mod_revision, r4);
    CU_ASSERT_EQUAL(r->kvs[0].version, 2);
    CU_ASSERT(kv_is(&r->kvs[2], "r/c", "3"));
    CU_ASSERT_EQUAL(r->kvs[2].version, 1);
    clerk_range_result_free(r);
    /* A limit cuts the keys, not the count. */
    CU_ASSERT_EQUAL_FATAL(
        clerk_range(ck, "r/", 2, end, end_len, 2, CLERK_RANGE_SORT_DESCEND, &r),
        CLERK_OK);
    CU_ASSERT_EQUAL_FATAL(r->n_kvs, 2);
    CU_ASSERT(r->more);
    CU_ASSERT_EQUAL(r->count, 3);
    CU_ASSERT(kv_is(&r->kvs[0], "r/c", NULL));
    clerk_range_result_free(r);
    /* Without counting the rest: the keys answered, and more. */
    CU_ASSERT_EQUAL_FATAL(
        clerk_range(ck, "r/", 2, end, end_len, 2, CLERK_RANGE_NO_COUNT, &r),
        CLERK_OK);
    CU_ASSERT_EQUAL_FATAL(r->n_kvs, 2);
    CU_ASSERT(r->more);
    CU_ASSERT_EQUAL(r->count, 2);
    CU_ASSERT(kv_is(&r->kvs[1], "r/b", NULL));
    clerk_range_result_free(r);
    CU_ASSERT_EQUAL_FATAL(
        clerk_range(ck, "r/", 2, end, end_len, 3, CLERK_RANGE_NO_COUNT, &r),
        CLERK_OK);
    CU_ASSERT(r->n_kvs == 3 && !r->more && r->count == 3);
    clerk_range_result_free(r);
    CU_ASSERT_EQUAL_FATAL(
        clerk_range(ck, "r/", 2, end, end_len, 0, CLERK_RANGE_KEYS_ONLY, &r),
        CLERK_OK);
    CU_ASSERT(r->n_kvs == 3 && r->kvs[1].value_len == 0);
    clerk_range_result_free(r);
    CU_ASSERT_EQUAL_FATAL(
        clerk_range(ck, "r/", 2, end, end_len, 0, CLERK_RANGE_COUNT_ONLY, &r),
        CLERK_OK);
    CU_ASSERT(r->n_kvs == 0 && r->count == 3);
    clerk_range_result_free(r);
    /* From a key on ("\0"), and one key with clerk_get_ex. */
    CU_ASSERT_EQUAL_FATAL(clerk_range(ck, "r/b", 3, "", 1, 0, 0, &r), CLERK_OK);
    CU_ASSERT_EQUAL(r->count, 3); /* r/b, r/c, s */
    clerk_range_result_free(r);
    /* One key, in descending order (the server failed it, INTERNAL). */
    CU_ASSERT_EQUAL_FATAL(
        clerk_range(ck, "r/b", 3, NULL, 0, 0, CLERK_RANGE_SORT_DESCEND, &r),
        CLERK_OK);
    CU_ASSERT(r->n_kvs == 1 && r->count == 1 && kv_is(&r->kvs[0], "r/b", "2"));
    clerk_range_result_free(r);
    struct clerk_kv *kv;
    uint64_t rev;
    CU_ASSERT_EQUAL_FATAL(clerk_get_ex(ck, "r/b", 3, &kv, &rev), CLERK_OK);
    CU_ASSERT(kv_is(kv, "r/b", "2") && kv->mod_revision == r2 && rev >= r4);
    clerk_kv_free(kv);
    CU_ASSERT_EQUAL(clerk_get_ex(ck, "r/none", 6, &kv, &rev), CLERK_NOT_FOUND);
    CU_ASSERT(kv == NULL);
    /* put with prev_kv answers the key as it was. */
    struct clerk_put_result *p;
    CU_ASSERT_EQUAL_FATAL(
        clerk_put_ex(ck, "r/b", 3, "2b", 2, CLERK_PUT_PREV_KV, &p), CLERK_OK);
    CU_ASSERT_FATAL(p->prev_kv != NULL);
    CU_ASSERT(kv_is(p->prev_kv, "r/b", "2"));
    clerk_put_result_free(p);
}

static void test_delete_range_is_one_revision(void)
{
    uint64_t before = put("d/1", "a");
    put("d/2", "b");
    put("d/3", "c");
    uint8_t end[8];
    size_t end_len = clerk_prefix_end("d/", 2, end);
    struct clerk_delete_result *d;
    CU_ASSERT_EQUAL_FATAL(
        clerk_delete_range(ck, "d/", 2, end, end_len, CLERK_DELETE_PREV_KV, &d),
        CLERK_OK);
    CU_ASSERT_EQUAL(d->deleted, 3);
    CU_ASSERT_EQUAL(d->revision, before + 3);
    CU_ASSERT_EQUAL_FATAL(d->n_prev_kvs, 3);
    CU_ASSERT(kv_is(&d->prev_kvs[1], "d/2", "b"));
    clerk_delete_result_free(d);
    CU_ASSERT_EQUAL_FATAL(clerk_delete_range(ck, "d/", 2, end, end_len, 0, &d),
                          CLERK_OK);
    CU_ASSERT_EQUAL(d->deleted, 0);
    clerk_delete_result_free(d);
}

static void test_txn_then_else_and_ops_see_each_other(void)
{
    /* A lock: take it only when absent. */
    struct clerk_txn *t = clerk_txn_new();
    CU_ASSERT_FATAL(t != NULL);
    clerk_txn_compare_version(t, "lock", 4, CLERK_CMP_EQUAL, 0);
    clerk_txn_put(t, CLERK_TXN_THEN, "lock", 4, "me", 2, 0);
    clerk_txn_range(t, CLERK_TXN_THEN, "lock", 4, NULL, 0, 0, 0);
    clerk_txn_range(t, CLERK_TXN_ELSE, "lock", 4, NULL, 0, 0, 0);
    struct clerk_txn_result *r;
    CU_ASSERT_EQUAL_FATAL(clerk_txn_commit(ck, t, &r), CLERK_OK);
    CU_ASSERT(r->succeeded);
    CU_ASSERT_EQUAL_FATAL(r->n_responses, 2);
    CU_ASSERT_EQUAL(r->responses[0].type, CLERK_OP_PUT);
    CU_ASSERT_EQUAL_FATAL(r->responses[1].type, CLERK_OP_RANGE);
    CU_ASSERT_EQUAL_FATAL(r->responses[1].range->n_kvs, 1);
    /* The get saw the put before it, at the transaction's revision. */
    CU_ASSERT(kv_is(&r->responses[1].range->kvs[0], "lock", "me"));
    CU_ASSERT_EQUAL(r->responses[1].range->kvs[0].mod_revision, r->revision);
    uint64_t rev = r->revision;
    clerk_txn_result_free(r);
    /* Committed again: the compare fails now, the else branch runs and
     * nothing is written. */
    CU_ASSERT_EQUAL_FATAL(clerk_txn_commit(ck, t, &r), CLERK_OK);
    CU_ASSERT(!r->succeeded);
    CU_ASSERT_EQUAL(r->revision, rev);
    CU_ASSERT_EQUAL_FATAL(r->n_responses, 1);
    CU_ASSERT(kv_is(&r->responses[0].range->kvs[0], "lock", "me"));
    clerk_txn_result_free(r);
    clerk_txn_free(t);
    /* Two puts and a delete in one transaction: one revision. */
    t = clerk_txn_new();
    clerk_txn_put(t, CLERK_TXN_THEN, "t1", 2, "1", 1, 0);
    clerk_txn_put(t, CLERK_TXN_THEN, "t2", 2, "2", 1, 0);
    clerk_txn_delete(t, CLERK_TXN_THEN, "lock", 4, NULL, 0, 0);
    CU_ASSERT_EQUAL_FATAL(clerk_txn_commit(ck, t, &r), CLERK_OK);
    CU_ASSERT_EQUAL(r->revision, rev + 1);
    CU_ASSERT_EQUAL(r->responses[2].del->deleted, 1);
    clerk_txn_result_free(r);
    clerk_txn_free(t);
}

/* The leader's last log index (0 when no leader answered). */
static uint64_t leader_last_index(void)
{
    struct clerk_node_status *st = NULL;
    size_t n = 0;
    uint64_t last = 0;
    if (clerk_status(ck, &st, &n) == CLERK_OK) {
        for (size_t i = 0; i < n; i++) {
            if (st[i].reachable && !strcmp(st[i].role, "leader")) {
                last = st[i].last_log_index;
            }
        }
    }
    clerk_free(st);
    return last;
}

/* A transaction that only compares and reads (nested ones included) is
 * served like a range: the right branch and keys at the store's
 * revision, and no entry in the log; one with a write is an entry. */
static void test_read_only_txn_is_a_read_not_a_log_entry(void)
{
    uint64_t rev = put("ro/a", "1");
    CU_ASSERT_EQUAL(put("ro/b", "2"), rev + 1);
    struct clerk_txn *t = clerk_txn_new(), *inner = clerk_txn_new();
    CU_ASSERT_FATAL(t && inner);
    clerk_txn_compare_value(t, "ro/a", 4, CLERK_CMP_EQUAL, "1", 1);
    clerk_txn_range(t, CLERK_TXN_THEN, "ro/", 3, "ro0", 3, 0, 0);
    clerk_txn_range(inner, CLERK_TXN_THEN, "ro/b", 4, NULL, 0, 0, 0);
    CU_ASSERT_EQUAL(clerk_txn_txn(t, CLERK_TXN_THEN, inner), CLERK_OK);
    clerk_txn_range(t, CLERK_TXN_ELSE, "ro/b", 4, NULL, 0, 0, 0);
    uint64_t before = leader_last_index();
    CU_ASSERT(before > 0);
    struct clerk_txn_result *r = NULL;
    for (int i = 0; i < 50; i++) {
        clerk_txn_result_free(r);
        r = NULL;
        CU_ASSERT_EQUAL_FATAL(clerk_txn_commit(ck, t, &r), CLERK_OK);
    }
    uint64_t after = leader_last_index();
    /* 50 through the log would be 50 entries; a stray lease or
     * compaction entry may come meanwhile. */
    CU_ASSERT(after >= before && after - before < 10);
    CU_ASSERT(r->succeeded);
    CU_ASSERT_EQUAL(r->revision, rev + 1);
    CU_ASSERT_EQUAL_FATAL(r->n_responses, 2);
    CU_ASSERT_EQUAL_FATAL(r->responses[0].type, CLERK_OP_RANGE);
    CU_ASSERT_EQUAL_FATAL(r->responses[0].range->n_kvs, 2);
    CU_ASSERT(kv_is(&r->responses[0].range->kvs[0], "ro/a", "1"));
    CU_ASSERT(kv_is(&r->responses[0].range->kvs[1], "ro/b", "2"));
    CU_ASSERT_EQUAL(r->responses[0].range->revision, rev + 1);
    CU_ASSERT_EQUAL_FATAL(r->responses[1].type, CLERK_OP_TXN);
    CU_ASSERT_EQUAL_FATAL(r->responses[1].txn->n_responses, 1);
    CU_ASSERT(
        kv_is(&r->responses[1].txn->responses[0].range->kvs[0], "ro/b", "2"));
    clerk_txn_result_free(r);
    /* A write since is seen at once (linearizable), and the else branch
     * runs when the compare fails. */
    CU_ASSERT_EQUAL(put("ro/a", "x"), rev + 2);
    CU_ASSERT_EQUAL_FATAL(clerk_txn_commit(ck, t, &r), CLERK_OK);
    CU_ASSERT(!r->succeeded);
    CU_ASSERT_EQUAL(r->revision, rev + 2);
    CU_ASSERT_EQUAL_FATAL(r->n_responses, 1);
    CU_ASSERT(kv_is(&r->responses[0].range->kvs[0], "ro/b", "2"));
    clerk_txn_result_free(r);
    clerk_txn_free(t);
    /* With a put in the branch that does not run, it is a write: an
     * entry, though it changes nothing. */
    t = clerk_txn_new();
    clerk_txn_compare_value(t, "ro/a", 4, CLERK_CMP_EQUAL, "x", 1);
    clerk_txn_range(t, CLERK_TXN_THEN, "ro/a", 4, NULL, 0, 0, 0);
    clerk_txn_put(t, CLERK_TXN_ELSE, "ro/c", 4, "3", 1, 0);
    before = leader_last_index();
    CU_ASSERT_EQUAL_FATAL(clerk_txn_commit(ck, t, &r), CLERK_OK);
    CU_ASSERT(r->succeeded);
    CU_ASSERT_EQUAL(r->revision, rev + 2);
    CU_ASSERT(leader_last_index() > before);
    clerk_txn_result_free(r);
    clerk_txn_free(t);
}

static void test_compact_and_events(void)
{
    uint64_t r1 = put("e", "1");
    uint64_t r2 = put("e", "2");
    CU_ASSERT_EQUAL(clerk_delete_range(ck, "e", 1, NULL, 0, 0, NULL), CLERK_OK);
    struct clerk_events_result *ev;
    CU_ASSERT_EQUAL_FATAL(clerk_events(ck, r1, "e", 1, NULL, 0, 0, &ev),
                          CLERK_OK);
    CU_ASSERT_EQUAL_FATAL(ev->n_events, 3);
    CU_ASSERT(ev->events[0].type == CLERK_EVENT_PUT &&
              kv_is(&ev->events[0].kv, "e", "1"));
    CU_ASSERT_EQUAL(ev->events[1].kv.mod_revision, r2);
    CU_ASSERT_EQUAL(ev->events[2].type, CLERK_EVENT_DELETE);
    CU_ASSERT_EQUAL(ev->next_revision, r2 + 2);
    clerk_events_result_free(ev);
    /* Polled with a limit: one at a time. */
    CU_ASSERT_EQUAL_FATAL(clerk_events(ck, r1, "e", 1, NULL, 0, 1, &ev),
                          CLERK_OK);
    CU_ASSERT(ev->n_events == 1 && ev->more && ev->next_revision == r1 + 1);
    clerk_events_result_free(ev);
    uint64_t compacted = 0;
    CU_ASSERT_EQUAL(clerk_compact(ck, r1, &compacted), CLERK_OK);
    CU_ASSERT_EQUAL(compacted, r1);
    CU_ASSERT_EQUAL(clerk_compact(ck, r1, &compacted), CLERK_COMPACTED);
    CU_ASSERT_EQUAL(compacted, r1);
    CU_ASSERT_EQUAL(clerk_compact(ck, r2 + 1000, NULL), CLERK_FUTURE_REVISION);
    CU_ASSERT_EQUAL(clerk_events(ck, r1, "e", 1, NULL, 0, 0, &ev),
                    CLERK_COMPACTED);
    CU_ASSERT_FATAL(ev != NULL);
    CU_ASSERT_EQUAL(ev->compact_revision, r1);
    clerk_events_result_free(ev);
    CU_ASSERT_EQUAL_FATAL(clerk_events(ck, r1 + 1, "e", 1, NULL, 0, 0, &ev),
                          CLERK_OK);
    CU_ASSERT_EQUAL(ev->n_events, 2);
    clerk_events_result_free(ev);
}

/* Run kvctl with args and stdin text; capture stdout; return status. */
static int kvctl(const char *args, const char *input, char *out, size_t cap)
{
    char cmd[2048], in_path[600] = "";
    if (input) {
        snprintf(in_path, sizeof in_path, "%s/kvctl-in", dc.root);
        FILE *f = fopen(in_path, "w");
        CU_ASSERT_FATAL(f != NULL);
        fputs(input, f);
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "%s --cluster %s %s < %s 2>/dev/null", KVCTL_BIN,
             eps, args, input ? in_path : "/dev/null");
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_kvctl_prefix_txn_and_json(void)
{
    char out[8192];
    put("kp/x", "1");
    put("kp/y", "2");
    CU_ASSERT_EQUAL(kvctl("get kp/ --prefix", NULL, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "kp/x\n1\nkp/y\n2\n");
    CU_ASSERT_EQUAL(
        kvctl("get kp/ --prefix --keys-only", NULL, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "kp/x\nkp/y\n");
    CU_ASSERT_EQUAL(
        kvctl("get kp/ --prefix --count-only", NULL, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "2\n");
    CU_ASSERT_EQUAL(kvctl("-w json get kp/x --rev-info", NULL, out, sizeof out),
                    0);
    /* "kp/x" and "1" in base64. */
    CU_ASSERT(strstr(out, "{\"ok\":true,\"header\":{\"revision\":") == out);
    CU_ASSERT(strstr(out, "\"key\":\"a3AveA==\"") != NULL);
    CU_ASSERT(strstr(out, "\"value\":\"MQ==\"") != NULL);
    CU_ASSERT(strstr(out, "\"version\":1") != NULL);
    CU_ASSERT(strstr(out, "\"count\":1") != NULL);
    /* A transaction from standard input, etcdctl's text form. */
    CU_ASSERT_EQUAL(kvctl("txn",
                          "value(\"kp/x\") = \"1\"\n\nput kp/z 3\nget kp/y\n\n"
                          "put kp/z wrong\n",
                          out, sizeof out),
                    0);
    CU_ASSERT_STRING_EQUAL(out, "SUCCESS\n\nOK\n\nkp/y\n2\n");
    CU_ASSERT_EQUAL(
        kvctl("txn", "mod(\"kp/x\") = \"0\"\n\n\nget kp/z\n", out, sizeof out),
        0);
    CU_ASSERT_STRING_EQUAL(out, "FAILURE\n\nkp/z\n3\n");
    /* The same as JSON: keys in base64 ("kp/z" = a3Aveg==). */
    CU_ASSERT_EQUAL(kvctl("-w json txn",
                          "{\"compare\":[{\"key\":\"a3Aveg==\",\"target\":"
                          "\"VALUE\",\"value\":\"Mw==\"}],\"success\":[{"
                          "\"request_range\":{\"key\":\"a3Aveg==\"}}]}",
                          out, sizeof out),
                    0);
    CU_ASSERT(strstr(out, "\"succeeded\":true") != NULL);
    CU_ASSERT(
        strstr(out, "\"response_range\":{\"kvs\":[{\"key\":\"a3Aveg==\"") !=
        NULL);
    CU_ASSERT_EQUAL(kvctl("txn", "bogus(\"k\") = 1\n", out, sizeof out), 2);
    CU_ASSERT_EQUAL(kvctl("del kp/ --prefix", NULL, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "3\n");
    CU_ASSERT_EQUAL(kvctl("get kp/ --prefix", NULL, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "");
    /* Plain get keeps its exit code. */
    CU_ASSERT_EQUAL(kvctl("get kp/x", NULL, out, sizeof out), 1);
    CU_ASSERT_EQUAL(kvctl("compact 999999999", NULL, out, sizeof out), 5);
    CU_ASSERT_EQUAL(kvctl("events --rev 1", NULL, out, sizeof out), 8);
}

/* The keys of a prefix now. */
static uint64_t count_prefix(const char *prefix)
{
    uint8_t end[64];
    size_t end_len = clerk_prefix_end(prefix, strlen(prefix), end);
    struct clerk_range_result *r;
    int err = clerk_range(ck, prefix, strlen(prefix), end, end_len, 0,
                          CLERK_RANGE_COUNT_ONLY, &r);
    CU_ASSERT_EQUAL(err, CLERK_OK);
    uint64_t n = err ? UINT64_MAX : r->count;
    clerk_range_result_free(r);
    return n;
}

/* A delete of more keys than --max-delete-keys is refused whole (every
 * node would apply it on its event loop); with a limit it deletes the
 * first keys and says more are left; kvctl del deletes it in pieces. */
static void test_delete_over_the_limit_in_pieces(void)
{
    const char *pre = "big/";
    char k[32], out[256];
    for (int i = 0; i < 2 * MAX_DELETE + 20; i++) {
        snprintf(k, sizeof k, "big/%03d", i);
        put(k, "v");
    }
    uint8_t end[8];
    size_t end_len = clerk_prefix_end(pre, 4, end);
    struct clerk_delete_result *d;
    CU_ASSERT_EQUAL(clerk_delete_range(ck, pre, 4, end, end_len, 0, &d),
                    CLERK_TOO_MANY_KEYS);
    CU_ASSERT(d == NULL);
    CU_ASSERT(strstr(clerk_errmsg(ck), "--max-delete-keys") != NULL);
    CU_ASSERT_EQUAL(count_prefix(pre), 2 * MAX_DELETE + 20);
    /* A transaction's deletes count together: its larger branch. */
    struct clerk_txn *t = clerk_txn_new();
    CU_ASSERT_FATAL(t != NULL);
    clerk_txn_delete(t, CLERK_TXN_THEN, "big/000", 7, "big/040", 7, 0);
    clerk_txn_delete(t, CLERK_TXN_THEN, "big/040", 7, "big/080", 7, 0);
    struct clerk_txn_result *tr;
    CU_ASSERT_EQUAL(clerk_txn_commit(ck, t, &tr), CLERK_TOO_MANY_KEYS);
    clerk_txn_free(t);
    t = clerk_txn_new();
    CU_ASSERT_FATAL(t != NULL);
    clerk_txn_delete(t, CLERK_TXN_THEN, "big/000", 7, "big/040", 7, 0);
    clerk_txn_delete(t, CLERK_TXN_ELSE, "big/040", 7, "big/080", 7, 0);
    CU_ASSERT_EQUAL_FATAL(clerk_txn_commit(ck, t, &tr), CLERK_OK);
    CU_ASSERT(tr->succeeded);
    CU_ASSERT_EQUAL(tr->responses[0].del->deleted, 40);
    clerk_txn_result_free(tr);
    clerk_txn_free(t);
    CU_ASSERT_EQUAL(count_prefix(pre), MAX_DELETE + 30);
    /* A limit deletes the first keys in key order. */
    CU_ASSERT_EQUAL_FATAL(
        clerk_delete_range_limit(ck, pre, 4, end, end_len, 10, 0, &d),
        CLERK_OK);
    CU_ASSERT_EQUAL(d->deleted, 10);
    CU_ASSERT(d->more);
    clerk_delete_result_free(d);
    CU_ASSERT_EQUAL(count_prefix("big/04"), 0);
    CU_ASSERT_EQUAL(count_prefix("big/05"), 10);
    /* A limit over --max-delete-keys: the range's keys are counted. */
    CU_ASSERT_EQUAL(clerk_delete_range_limit(ck, pre, 4, end, end_len,
                                             10 * MAX_DELETE, 0, &d),
                    CLERK_TOO_MANY_KEYS);
    /* Single keys are never refused. */
    CU_ASSERT_EQUAL(clerk_delete(ck, "big/050", 7), CLERK_OK);
    CU_ASSERT_EQUAL(count_prefix(pre), MAX_DELETE + 19);
    CU_ASSERT_EQUAL(kvctl("del big/ --prefix --prev-kv", NULL, out, sizeof out),
                    5);
    CU_ASSERT_EQUAL(kvctl("del big/ --prefix", NULL, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "69\n");
    CU_ASSERT_EQUAL(count_prefix(pre), 0);
    /* Within the limit a delete is one write, as before. */
    for (int i = 0; i < MAX_DELETE; i++) {
        snprintf(k, sizeof k, "big/%03d", i);
        put(k, "v");
    }
    CU_ASSERT_EQUAL_FATAL(clerk_delete_range(ck, pre, 4, end, end_len, 0, &d),
                          CLERK_OK);
    CU_ASSERT_EQUAL(d->deleted, MAX_DELETE);
    CU_ASSERT(!d->more);
    clerk_delete_result_free(d);
}

/* ------------------------------------------------- counts in slices */

/* Put keys prefix + k for k in [0, n), zero-padded to @width digits,
 * value "v", 100 to a transaction. */
static void put_keys(struct clerk *c, const char *prefix, int width, int n)
{
    for (int b = 0; b < n; b += 100) {
        struct clerk_txn *t = clerk_txn_new();
        for (int k = b; k < b + 100 && k < n; k++) {
            char key[32];
            snprintf(key, sizeof key, "%s%0*d", prefix, width, k);
            clerk_txn_put(t, CLERK_TXN_THEN, key, strlen(key), "v", 1, 0);
        }
        CU_ASSERT_EQUAL_FATAL(clerk_txn_commit(c, t, NULL), CLERK_OK);
        clerk_txn_free(t);
    }
}

/* A node of its own that counts one key per loop turn, and a client of
 * it (@own_eps: its endpoints). */
static struct clerk *one_key_slices(struct h_cluster *c,
                                    char *own_eps,
                                    size_t len)
{
    CU_ASSERT_FATAL(h_cluster_start(c, 1, "--count-slice-keys 1") == 0);
    h_endpoints(c, own_eps, len);
    struct clerk *c1 = NULL;
    struct clerk_options o = {.deadline_ms = 20000};
    CU_ASSERT_FATAL(clerk_open(&c1, own_eps, &o) == CLERK_OK);
    return c1;
}

#define MOVED_KEYS 4000

/* Moves keys of cs/ from one end of the range to the other, one per
 * transaction (delete cs/0NNN, put cs/1NNN; then back), so that the range
 * holds MOVED_KEYS keys at every revision. */
#define MOVERS 4

struct mover
{
    volatile int stop;
    int id; /* moves the keys k with k % MOVERS == id */
    int moves, failures;
};

static void *mover_main(void *arg)
{
    struct mover *m = arg;
    struct clerk *mc = NULL;
    struct clerk_options o = {.deadline_ms = 10000};
    if (clerk_open(&mc, eps, &o) != CLERK_OK) {
        m->failures++;
        return NULL;
    }
    for (int i = 0; !m->stop; i++) {
        int per = MOVED_KEYS / MOVERS;
        int k = (i % per) * MOVERS + m->id;
        bool back = (i / per) % 2;
        char from[16], to[16];
        snprintf(from, sizeof from, "cs/%d%04d", back, k);
        snprintf(to, sizeof to, "cs/%d%04d", !back, k);
        struct clerk_txn *t = clerk_txn_new();
        clerk_txn_delete(t, CLERK_TXN_THEN, from, strlen(from), NULL, 0, 0);
        clerk_txn_put(t, CLERK_TXN_THEN, to, strlen(to), "m", 1, 0);
        struct clerk_txn_result *r = NULL;
        int err = clerk_txn_commit(mc, t, &r);
        if (err == CLERK_OK && r->succeeded) {
            m->moves++;
        } else if (m->failures++ == 0) {
            fprintf(stderr, "\n  move %s: %s: %s", from, clerk_error_code(err),
                    clerk_errmsg(mc));
        }
        clerk_txn_result_free(r);
        clerk_txn_free(t);
    }
    clerk_close(mc);
    return NULL;
}

static double slices_on(size_t i)
{
    char body[65536];
    if (h_http_get(&dc, i, "GET", "/metrics", body, sizeof body) != 200) {
        return -1;
    }
    return h_metric(body, "raftkv_range_count_slices_total");
}

/* A count of more keys than --count-slice-keys goes on over later loop
 * turns; it is still the count of one state: with keys moved from one end
 * of the range to the other meanwhile (each move one transaction), every
 * count, in either order, with or without a limit, alone or in a
 * transaction that only reads, is the number of keys the range holds at
 * every revision. Counting the rest of the range on the
 * state as it moves on counts a moved key twice (ascending) or not at all
 * (descending). */
static void test_count_over_many_turns_is_of_one_state(void)
{
    put_keys(ck, "cs/0", 4, MOVED_KEYS);
    int leader = h_find_leader(&dc, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    double slices = slices_on((size_t)leader);
    struct mover m[MOVERS] = {{0}};
    pthread_t th[MOVERS];
    for (int i = 0; i < MOVERS; i++) {
        m[i].id = i;
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, mover_main, &m[i]) == 0);
    }
    static const unsigned flags[] = {
        CLERK_RANGE_COUNT_ONLY,
        CLERK_RANGE_COUNT_ONLY | CLERK_RANGE_SORT_DESCEND,
        0,
        CLERK_RANGE_SORT_DESCEND,
    };
    /* And in a transaction that only reads (served as a read): three
     * counts of the range, the last one nested. */
    struct clerk_txn *t = clerk_txn_new(), *inner = clerk_txn_new();
    clerk_txn_range(t, CLERK_TXN_THEN, "cs/", 3, "cs0", 3, 0,
                    CLERK_RANGE_COUNT_ONLY);
    clerk_txn_range(t, CLERK_TXN_THEN, "cs/", 3, "cs0", 3, 7,
                    CLERK_RANGE_SORT_DESCEND);
    clerk_txn_range(inner, CLERK_TXN_THEN, "cs/", 3, "cs0", 3, 0,
                    CLERK_RANGE_COUNT_ONLY);
    CU_ASSERT_EQUAL(clerk_txn_txn(t, CLERK_TXN_THEN, inner), CLERK_OK);
    int counts = 0, wrong = 0, txns = 0;
    uint64_t end = h_now_ms() + 3000;
    while (h_now_ms() < end || m[0].moves < 50) {
        if (counts % 5 == 4) {
            struct clerk_txn_result *tr = NULL;
            int err = clerk_txn_commit(ck, t, &tr);
            CU_ASSERT_EQUAL(err, CLERK_OK);
            if (err) {
                fprintf(stderr, "\n  txn: %s: %s", clerk_error_code(err),
                        clerk_errmsg(ck));
                break;
            }
            uint64_t c[3] = {0};
            if (tr->n_responses == 3 && tr->responses[2].txn &&
                tr->responses[2].txn->n_responses == 1) {
                c[0] = tr->responses[0].range->count;
                c[1] = tr->responses[1].range->count;
                c[2] = tr->responses[2].txn->responses[0].range->count;
            }
            for (int i = 0; i < 3; i++) {
                if (c[i] != MOVED_KEYS) {
                    wrong++;
                    fprintf(stderr, "\n  txn count %d: %llu, not %d", i,
                            (unsigned long long)c[i], MOVED_KEYS);
                }
            }
            clerk_txn_result_free(tr);
            counts++;
            txns++;
            continue;
        }
        unsigned f = flags[counts % 4];
        struct clerk_range_result *r = NULL;
        int err = clerk_range(ck, "cs/", 3, "cs0", 3, f ? 0 : 5, f, &r);
        CU_ASSERT_EQUAL(err, CLERK_OK);
        if (err) {
            fprintf(stderr, "\n  range (flags %#x): %s: %s", f,
                    clerk_error_code(err), clerk_errmsg(ck));
        } else {
            counts++;
            if (r->count != MOVED_KEYS) {
                wrong++;
                fprintf(stderr, "\n  count (flags %#x) %llu, not %d", f,
                        (unsigned long long)r->count, MOVED_KEYS);
            }
            clerk_range_result_free(r);
        }
        if (err || h_now_ms() > end + 20000) {
            break;
        }
    }
    int moves = 0;
    for (int i = 0; i < MOVERS; i++) {
        m[i].stop = 1;
        pthread_join(th[i], NULL);
        moves += m[i].moves;
        CU_ASSERT_EQUAL(m[i].failures, 0);
    }
    clerk_txn_free(t); /* and inner, handed over */
    printf(
        "(%d counts of %d keys, %d of them transactions of 3, while %d "
        "moves went on) ",
        counts, MOVED_KEYS, txns, moves);
    CU_ASSERT(counts >= 20);
    CU_ASSERT(txns >= 4);
    CU_ASSERT(m[0].moves >= 50);
    CU_ASSERT_EQUAL(wrong, 0);
    /* They were counted in slices (a leader that changed meanwhile would
     * have counted some on another node: none is expected here). */
    CU_ASSERT(slices_on((size_t)leader) >= slices + counts);
}

/* Writes a value of 500,000 bytes at a time to grow the store's map. */
struct grower
{
    const char *eps;
    int puts, failures;
};

static void *grower_main(void *arg)
{
    struct grower *g = arg;
    struct clerk *gc = NULL;
    struct clerk_options o = {.deadline_ms = 10000};
    static char big[500000];
    memset(big, 'g', sizeof big);
    if (clerk_open(&gc, g->eps, &o) != CLERK_OK) {
        g->failures++;
        return NULL;
    }
    for (int i = 0; i < 300; i++) {
        char key[16];
        snprintf(key, sizeof key, "big/%03d", i);
        if (clerk_put_ex(gc, key, strlen(key), big, sizeof big, 0, NULL) ==
            CLERK_OK) {
            g->puts++;
        } else {
            g->failures++;
        }
    }
    clerk_close(gc);
    return NULL;
}

/* The store's map grows (every LMDB transaction must end first) while
 * counts go on in slices of one key, each holding a read transaction: the
 * counts in progress are ended (UNAVAILABLE, which the client retries)
 * and every count still comes out right; the node goes on. */
static void test_count_over_many_turns_when_the_map_grows(void)
{
    struct h_cluster gc;
    char geps[128];
    struct clerk *c1 = one_key_slices(&gc, geps, sizeof geps);
    put_keys(c1, "g/", 4, 1000);
    size_t grown = h_log_count(&gc, 0, "LMDB map grown");
    struct grower g = {.eps = geps};
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, grower_main, &g) == 0);
    int counts = 0, wrong = 0;
    uint64_t end = h_now_ms() + 60000;
    while (h_log_count(&gc, 0, "LMDB map grown") == grown && h_now_ms() < end) {
        struct clerk_range_result *r = NULL;
        int err =
            clerk_range(c1, "g/", 2, "g0", 2, 0, CLERK_RANGE_COUNT_ONLY, &r);
        CU_ASSERT_EQUAL(err, CLERK_OK);
        if (err) {
            fprintf(stderr, "\n  count: %s: %s", clerk_error_code(err),
                    clerk_errmsg(c1));
            break;
        }
        counts++;
        wrong += r->count != 1000;
        clerk_range_result_free(r);
    }
    pthread_join(th, NULL);
    bool ended = h_log_contains(&gc, 0, "in progress ended");
    printf("(%d counts, %d puts of 500,000 bytes; %s) ", counts, g.puts,
           ended ? "a count was ended by the growth" : "no count was ended");
    CU_ASSERT(h_log_count(&gc, 0, "LMDB map grown") > grown);
    CU_ASSERT(ended); /* counts go on nearly all the time: one was */
    CU_ASSERT(counts > 0);
    CU_ASSERT_EQUAL(wrong, 0);
    CU_ASSERT_EQUAL(g.failures, 0);
    /* And the node still answers. */
    struct clerk_range_result *r = NULL;
    CU_ASSERT_EQUAL(
        clerk_range(c1, "g/", 2, "g0", 2, 0, CLERK_RANGE_COUNT_ONLY, &r),
        CLERK_OK);
    CU_ASSERT(r && r->count == 1000);
    clerk_range_result_free(r);
    clerk_close(c1);
    gc.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT_EQUAL(h_cluster_destroy(&gc), 0);
}

/* A count answered by the async handle: the count, or -1 on an error. */
static void count_done(struct clerk_async *a,
                       const struct clerk_async_reply *r,
                       void *arg)
{
    (void)a;
    long long *out = arg;
    *out = r->err == CLERK_OK ? (long long)r->range->count : -1;
}

static int sink_nothing(const void *data, size_t len, void *arg)
{
    (void)data;
    *(uint64_t *)arg += len;
    return 0;
}

struct saver
{
    const char *eps;
    int err;
    char msg[256];
};

static void *saver_main(void *arg)
{
    struct saver *sv = arg;
    struct clerk *sc = NULL;
    struct clerk_options o = {.deadline_ms = 10000};
    sv->err = clerk_open(&sc, sv->eps, &o);
    if (sv->err == CLERK_OK) {
        uint64_t bytes = 0;
        sv->err =
            clerk_snapshot_save(sc, sink_nothing, &bytes, NULL, NULL, NULL);
        snprintf(sv->msg, sizeof sv->msg, "%s", clerk_errmsg(sc));
        clerk_close(sc);
    }
    return NULL;
}

#define AT_ONCE 150 /* counts sent at once: more than LMDB's 126 readers */

/* Many counts at once, each going on over many turns, take a bounded
 * number of the store's LMDB readers (the others are counted in one go):
 * a snapshot read (a backup, or a stream to a follower) still gets one
 * meanwhile, and every count is right. */
static void test_many_counts_at_once_leave_readers(void)
{
    struct h_cluster mc;
    char meps[128];
    struct clerk *c1 = one_key_slices(&mc, meps, sizeof meps);
    put_keys(c1, "m/", 5, 10000);
    struct clerk_options o = {.deadline_ms = 20000};
    struct clerk_async *a = NULL;
    CU_ASSERT_FATAL(clerk_async_open_fd(&a, meps, &o) == CLERK_OK);
    static long long got[AT_ONCE];
    for (int i = 0; i < AT_ONCE; i++) {
        got[i] = -2; /* not answered */
        CU_ASSERT_EQUAL(
            clerk_async_range(a, "m/", 2, "m0", 2, 0, CLERK_RANGE_COUNT_ONLY,
                              count_done, &got[i]),
            CLERK_OK);
    }
    /* Let the counts reach the node and start, then save a snapshot while
     * they go on. */
    uint64_t end = h_now_ms() + 50;
    while (h_now_ms() < end) {
        struct pollfd p = {.fd = clerk_async_fd(a), .events = POLLIN};
        poll(&p, 1, 10);
        clerk_async_process(a);
    }
    size_t pending = clerk_async_pending(a);
    struct saver sv = {.eps = meps};
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, saver_main, &sv) == 0);
    end = h_now_ms() + 60000;
    while (clerk_async_pending(a) && h_now_ms() < end) {
        struct pollfd p = {.fd = clerk_async_fd(a), .events = POLLIN};
        poll(&p, 1, 10);
        clerk_async_process(a);
    }
    pthread_join(th, NULL);
    printf("(%zu of %d counts still going when the save began) ", pending,
           AT_ONCE);
    CU_ASSERT(pending > 0);
    CU_ASSERT_EQUAL(sv.err, CLERK_OK);
    if (sv.err) {
        fprintf(stderr, "\n  snapshot save: %s: %s", clerk_error_code(sv.err),
                sv.msg);
    }
    int wrong = 0;
    for (int i = 0; i < AT_ONCE; i++) {
        wrong += got[i] != 10000;
    }
    CU_ASSERT_EQUAL(wrong, 0);
    clerk_async_close(a);
    clerk_close(c1);
    mc.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT_EQUAL(h_cluster_destroy(&mc), 0);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_range_revisions_limit_and_order",
         test_range_revisions_limit_and_order},
        {"test_count_over_many_turns_is_of_one_state",
         test_count_over_many_turns_is_of_one_state},
        {"test_count_over_many_turns_when_the_map_grows",
         test_count_over_many_turns_when_the_map_grows},
        {"test_many_counts_at_once_leave_readers",
         test_many_counts_at_once_leave_readers},
        {"test_delete_range_is_one_revision",
         test_delete_range_is_one_revision},
        {"test_txn_then_else_and_ops_see_each_other",
         test_txn_then_else_and_ops_see_each_other},
        {"test_read_only_txn_is_a_read_not_a_log_entry",
         test_read_only_txn_is_a_read_not_a_log_entry},
        {"test_compact_and_events", test_compact_and_events},
        {"test_kvctl_prefix_txn_and_json", test_kvctl_prefix_txn_and_json},
        {"test_delete_over_the_limit_in_pieces",
         test_delete_over_the_limit_in_pieces},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"datamodel", setup, teardown, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
