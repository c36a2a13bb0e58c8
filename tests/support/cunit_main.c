/* cunit_main.c: runs CUnit suites and fails the process on failed asserts. */
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "cunit_main.h"

#define MAX_SKIPS 32

static unsigned run_seed;
static int seed_set;

/* Tests skipped in this run, and why. */
static struct
{
    char test[128];   /* the test's name */
    char reason[256]; /* what was missing */
} skips[MAX_SKIPS];
static unsigned n_skips;

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

bool cunit_require_all(void)
{
    const char *env = getenv("RAFTKV_REQUIRE_ALL");
    return env && !strcmp(env, "1");
}

void cunit_skip_at(const char *file, unsigned line, const char *fmt, ...)
{
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    CU_pTest t = CU_get_current_test();
    const char *name = t && t->pName ? t->pName : "(no test)";
    if (cunit_require_all()) {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "RAFTKV_REQUIRE_ALL=1 but the test would be skipped: %s",
                 reason);
        printf("\n    FAILED (RAFTKV_REQUIRE_ALL=1): %s: %s\n", name, reason);
        /* CUnit copies the message. */
        CU_assertImplementation(CU_FALSE, line, msg, file, "", CU_FALSE);
        return;
    }
    printf("\n    SKIPPED: %s: %s\n", name, reason);
    if (n_skips < MAX_SKIPS) {
        snprintf(skips[n_skips].test, sizeof skips[n_skips].test, "%s", name);
        snprintf(skips[n_skips].reason, sizeof skips[n_skips].reason, "%s",
                 reason);
    }
    n_skips++;
}

/* Print the command that reruns each failed test (or a suite that failed
 * to set up or clean up) with this run's seed. */
static void print_reruns(const char *prog, unsigned seed)
{
    const char *done[64];
    size_t n_done = 0;
    for (CU_pFailureRecord f = CU_get_failure_list(); f; f = f->pNext) {
        const char *name = f->pTest && f->pTest->pName     ? f->pTest->pName
                           : f->pSuite && f->pSuite->pName ? f->pSuite->pName
                                                           : NULL;
        bool seen = false;
        for (size_t i = 0; name && i < n_done && !seen; i++) {
            seen = !strcmp(done[i], name);
        }
        if (!name || seen) {
            continue;
        }
        if (n_done < sizeof done / sizeof done[0]) {
            done[n_done++] = name;
        }
        printf("%s: FAILED %s (%s:%u); rerun: RAFTKV_SEED=%u %s %s\n", prog,
               name, f->strFileName ? f->strFileName : "?", f->uiLineNumber,
               seed, prog, name);
    }
}

/* kvserver reads RAFTKV_SERVER_* options from its environment: the nodes a
 * test starts take theirs from the test alone, not from the shell that
 * runs it (an operator's RAFTKV_SERVER_DATA_DIR, say). */
static void forget_server_options(void)
{
    for (;;) {
        char **e = environ;
        while (e && *e && strncmp(*e, "RAFTKV_SERVER_", 14) != 0) {
            e++;
        }
        if (!e || !*e) {
            return;
        }
        char name[128];
        size_t n = strcspn(*e, "=");
        snprintf(name, sizeof name, "%.*s", (int)n, *e);
        if (unsetenv(name) != 0 || n >= sizeof name) {
            **e = 0; /* cannot happen; no endless loop if it does */
        }
    }
}

int cunit_main(int argc, char **argv, CU_SuiteInfo *suites)
{
    forget_server_options();
    unsigned seed = cunit_seed();
    printf(
        "%s: seed %u (rerun: RAFTKV_SEED=%u %s%s%s)%s\n", argv[0], seed, seed,
        argv[0], argc > 1 ? " " : "", argc > 1 ? argv[1] : "",
        cunit_require_all() ? "; RAFTKV_REQUIRE_ALL=1: no test may skip" : "");
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
    if (failures || suites_failed) {
        print_reruns(argv[0], seed);
    }
    CU_cleanup_registry();
    if (failures) {
        printf("%s: %u assertion(s) failed in %u test(s); seed %u\n", argv[0],
               failures, tests_failed, seed);
    }
    if (suites_failed) {
        printf("%s: %u suite(s) failed to set up or clean up\n", argv[0],
               suites_failed);
    }
    if (n_skips) {
        printf(
            "%s: %u test(s) SKIPPED (RAFTKV_REQUIRE_ALL=1 makes a skip a "
            "failure):\n",
            argv[0], n_skips);
        for (unsigned i = 0; i < n_skips && i < MAX_SKIPS; i++) {
            printf("  %s: %s\n", skips[i].test, skips[i].reason);
        }
    }
    if (failures || suites_failed) {
        return 1;
    }
    return n_skips ? CUNIT_SKIPPED : 0;
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
