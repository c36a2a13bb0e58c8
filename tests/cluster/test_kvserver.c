/* test_kvserver.c: real kvserver clusters on loopback: the node's promises. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "cunit_main.h"
#include "harness.h"

#define OK        RAFTKV__KV_ERROR__KV_OK
#define NOT_FOUND RAFTKV__KV_ERROR__KV_NOT_FOUND

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static bool get_equals(struct h_client *cl, const char *key, const char *want)
{
    struct h_result r = h_get(cl, key, false, 0);
    bool ok = r.err == OK && r.value && strcmp(r.value, want) == 0;
    if (!ok) {
        fprintf(stderr, "get %s: err %d value '%s', want '%s'\n", key, r.err,
                r.value ? r.value : "(none)", want);
    }
    h_result_free(&r);
    return ok;
}

static void test_cluster_elects_and_serves_all_operations(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    c.keep = true;
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed()) == 0);

    struct h_result r = h_put(&cl, "k", "v1", 2);
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(get_equals(&cl, "k", "v1"));
    r = h_append(&cl, "k", "+v2");
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(get_equals(&cl, "k", "v1+v2"));
    r = h_append(&cl, "fresh", "a");
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(get_equals(&cl, "fresh", "a"));

    r = h_cas(&cl, "c", NULL, "first"); /* must not exist: it does not */
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(r.swapped);
    r = h_cas(&cl, "c", NULL, "second"); /* now it exists */
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(!r.swapped);
    r = h_cas(&cl, "c", "wrong", "third");
    CU_ASSERT(!r.swapped);
    r = h_cas(&cl, "c", "first", "fourth");
    CU_ASSERT(r.swapped);
    CU_ASSERT(get_equals(&cl, "c", "fourth"));

    r = h_del(&cl, "k");
    CU_ASSERT_EQUAL(r.err, OK);
    r = h_get(&cl, "k", false, 0);
    CU_ASSERT_EQUAL(r.err, NOT_FOUND);
    r = h_del(&cl, "k");
    CU_ASSERT_EQUAL(r.err, NOT_FOUND);

    /* Binary-safe values. */
    char bin[5] = {'a', 0, 'b', 0, 'c'};
    r = h_put(&cl, "bin", bin, 5);
    CU_ASSERT_EQUAL(r.err, OK);
    r = h_get(&cl, "bin", false, 0);
    CU_ASSERT_EQUAL(r.len, 5);
    CU_ASSERT(r.value && memcmp(r.value, bin, 5) == 0);
    h_result_free(&r);

    /* Every node serves a stale read of the replicated value. */
    for (size_t i = 0; i < c.n; i++) {
        bool seen = false;
        for (int t = 0; t < 100 && !seen; t++) {
            r = h_get(&cl, "c", true, i);
            seen = r.err == OK && r.value && strcmp(r.value, "fourth") == 0;
            h_result_free(&r);
            if (!seen) {
                sleep_ms(20);
            }
        }
        CU_ASSERT(seen);
    }
    h_client_close(&cl);
    c.keep = CU_get_number_of_failures() > 0;
    h_cluster_destroy(&c);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_cluster_elects_and_serves_all_operations",
         test_cluster_elects_and_serves_all_operations},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"kvserver", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
