/* test_main.c - shared CUnit runner for the simulator tests: options, seeds,
 * replay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <CUnit/Basic.h>
#include <stdbool.h>

#include "test_main.h"

uint64_t test_seed = 1;
const char *test_prog = "test";
const char *test_current = "";

static const struct test_case *g_cases;
static size_t g_n;
static uint64_t g_base = 1; /* first seed */
static unsigned g_repeat;   /* seeds per test */
static bool g_seeded;       /* tests take their seed from the runner */

void test_report(const struct sim *s, const char *test)
{
    fprintf(stderr, "\nFAILED %s: %s\n  seed %llu; replay: %s -t %s -s %llu\n",
            test, sim_why(s), (unsigned long long)test_seed, test_prog, test,
            (unsigned long long)test_seed);
}

/* CUnit calls tests without arguments: find the running one by name. */
static void run_named(void)
{
    CU_pTest t = CU_get_current_test();
    for (size_t k = 0; k < g_n; k++) {
        if (t != NULL && strcmp(t->pName, g_cases[k].name) == 0) {
            test_current = g_cases[k].name;
            for (unsigned i = 0; i < g_repeat; i++) {
                unsigned before = CU_get_number_of_failures();
                test_seed = g_base + i;
                g_cases[k].fn();
                if (CU_get_number_of_failures() != before && g_seeded) {
                    fprintf(stderr, "\n  seed %llu; replay: %s -t %s -s %llu\n",
                            (unsigned long long)test_seed, test_prog,
                            test_current, (unsigned long long)test_seed);
                    return;
                }
            }
            return;
        }
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: %s [-s SEED] [-k COUNT] [-t TEST] [-l]\n"
            "  -s SEED   first seed (also RAFT_SIM_SEED); alone, runs just it\n"
            "  -k COUNT  seeds per test (default %u; also RAFT_SIM_REPEAT)\n"
            "  -t TEST   run only TEST\n"
            "  -l        list tests\n",
            test_prog, g_repeat);
}

int test_run(int argc,
             char **argv,
             const char *suite,
             const struct test_case *cases,
             size_t n,
             unsigned repeat)
{
    const char *only = NULL;
    bool seed_given = false;
    bool repeat_given = false;
    test_prog = argv[0];
    g_cases = cases;
    g_n = n;
    g_repeat = repeat;
    g_seeded = repeat > 0;
    if (getenv("RAFT_SIM_SEED") != NULL) {
        g_base = strtoull(getenv("RAFT_SIM_SEED"), NULL, 0);
        seed_given = true;
    }
    if (getenv("RAFT_SIM_REPEAT") != NULL) {
        g_repeat = (unsigned)strtoul(getenv("RAFT_SIM_REPEAT"), NULL, 0);
        repeat_given = true;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
            g_base = strtoull(argv[++i], NULL, 0);
            seed_given = true;
        } else if (strcmp(argv[i], "-k") == 0 && i + 1 < argc) {
            g_repeat = (unsigned)strtoul(argv[++i], NULL, 0);
            repeat_given = true;
        } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(argv[i], "-l") == 0) {
            for (size_t k = 0; k < n; k++) {
                printf("%s\n", cases[k].name);
            }
            return 0;
        } else {
            usage();
            return 2;
        }
    }
    if (seed_given && !repeat_given) {
        g_repeat = 1;
    }
    if (g_repeat == 0) {
        g_repeat = 1;
    }
    test_seed = g_base;
    if (CU_initialize_registry() != CUE_SUCCESS) {
        return 1;
    }
    CU_pSuite s = CU_add_suite(suite, NULL, NULL);
    size_t added = 0;
    for (size_t k = 0; s != NULL && k < n; k++) {
        if (only == NULL || strcmp(only, cases[k].name) == 0) {
            CU_add_test(s, cases[k].name, run_named);
            added++;
        }
    }
    if (added == 0) {
        fprintf(stderr, "no test named %s\n", only ? only : "");
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failures != 0;
}
