/* cunit_main.c: runs CUnit suites and fails the process on failed asserts. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "cunit_main.h"

static unsigned run_seed;
static int seed_set;

unsigned cunit_seed(void)
{
    if (!seed_set) {
        const char *env = getenv("RAFTKV_SEED");
        if (env && *env) {
            run_seed = (unsigned)strtoul(env, NULL, 10);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            run_seed = (unsigned)(ts.tv_nsec ^ ts.tv_sec ^ getpid());
        }
        seed_set = 1;
    }
    return run_seed;
}

int cunit_main(int argc, char **argv, CU_SuiteInfo *suites)
{
    unsigned seed = cunit_seed();
    printf("%s: seed %u (rerun: RAFTKV_SEED=%u %s%s%s)\n", argv[0], seed, seed,
           argv[0], argc > 1 ? " " : "", argc > 1 ? argv[1] : "");
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        return 2;
    }
    if (CU_register_suites(suites) != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (argc > 1) {
        /* Run one test by name, from whichever suite has it. */
        CU_pSuite found_suite = NULL;
        CU_pTest found = NULL;
        for (CU_SuiteInfo *si = suites; si->pName && !found; si++) {
            CU_pSuite suite = CU_get_suite(si->pName);
            CU_pTest t = suite ? CU_get_test(suite, argv[1]) : NULL;
            if (t) {
                found_suite = suite;
                found = t;
            }
        }
        CU_pSuite whole = found ? NULL : CU_get_suite(argv[1]);
        if (found) {
            CU_basic_run_test(found_suite, found);
        } else if (whole) {
            CU_basic_run_suite(whole); /* or a whole suite by its name */
        } else {
            fprintf(stderr, "%s: no test or suite named %s\n", argv[0],
                    argv[1]);
            CU_cleanup_registry();
            return 2;
        }
    } else {
        CU_basic_run_tests();
    }
    unsigned failures = CU_get_number_of_failures();
    unsigned tests_failed = CU_get_number_of_tests_failed();
    /* A suite whose setup or teardown failed ran no tests (or left a mess):
     * CUnit does not count that as a failed assertion, but it is one. */
    unsigned suites_failed = CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    if (failures) {
        printf(
            "%s: %u assertion(s) failed in %u test(s); seed %u "
            "(rerun: RAFTKV_SEED=%u %s)\n",
            argv[0], failures, tests_failed, seed, seed, argv[0]);
    }
    if (suites_failed) {
        printf("%s: %u suite(s) failed to set up or clean up\n", argv[0],
               suites_failed);
    }
    return failures || suites_failed ? 1 : 0;
}

static int remove_entry(const char *path,
                        const struct stat *sb,
                        int flag,
                        struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int cunit_remove_tree(const char *path)
{
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
