/* test_main.h - shared CUnit runner for the simulator tests: options, seeds,
 * replay. */
#ifndef SIM_TEST_MAIN_H
#define SIM_TEST_MAIN_H

#include <CUnit/CUnit.h>
#include <stdbool.h>
#include <stdint.h>

#include "sim.h"

/* One test of a suite. */
struct test_case
{
    const char *name; /* test function name, used by -t */
    void (*fn)(void); /* the test */
};

extern uint64_t test_seed;       /* seed of the running repetition */
extern const char *test_prog;    /* argv[0] */
extern const char *test_current; /* name of the running test */

/* Register @cases as suite @suite, parse options, run, return exit code.
 * Each test runs @repeat times, with seeds SEED, SEED+1, ... (-k, -s);
 * @repeat 0: the tests handle seeds themselves (run once, no -s/-k). */
int test_run(int argc,
             char **argv,
             const char *suite,
             const struct test_case *cases,
             size_t n,
             unsigned repeat);

/* Print a failed simulation's reason, seed and replay command. */
void test_report(const struct sim *s, const char *test);

/* Assert that simulation @s has not failed (prints seed and replay). */
#define SIM_ASSERT_OK(s)                    \
    do {                                    \
        if (sim_failed(s)) {                \
            test_report((s), test_current); \
        }                                   \
        CU_ASSERT_FATAL(!sim_failed(s));    \
    } while (0)

/* Assert @cond; on failure also print the seed and replay command. */
#define SIM_CHECK(s, cond)                                         \
    do {                                                           \
        bool ok_ = (cond);                                         \
        if (!ok_) {                                                \
            sim_fail((s), "%s:%d: %s", __FILE__, __LINE__, #cond); \
            test_report((s), test_current);                        \
        }                                                          \
        CU_ASSERT_FATAL(ok_);                                      \
    } while (0)

#endif /* SIM_TEST_MAIN_H */
