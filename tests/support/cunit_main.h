/* cunit_main.h: the common main of raftkv's CUnit test programs. */
#ifndef TESTS_CUNIT_MAIN_H
#define TESTS_CUNIT_MAIN_H

#include <stdbool.h>

#include <CUnit/CUnit.h>

/** Exit status of a program whose tests were skipped (ctest's
 * SKIP_RETURN_CODE, the automake convention). */
#define CUNIT_SKIPPED 77

/**
 * The seed of this run's randomized tests: RAFTKV_SEED from the
 * environment, else one drawn from the clock. Printed at start and again
 * when a test fails, with the command that reruns it.
 * @return the seed (the same for every call in one run)
 */
unsigned cunit_seed(void);

/**
 * Is RAFTKV_REQUIRE_ALL=1 set? Then nothing may be skipped: a test that
 * cannot run here (not root, a tool missing) fails instead.
 */
bool cunit_require_all(void);

/**
 * Skip the running test because something it needs is missing here (say
 * what, as a printf format). The test should return right after. Under
 * RAFTKV_REQUIRE_ALL=1 the test fails with that message instead. A
 * program in which a test was skipped and none failed exits with
 * CUNIT_SKIPPED, so that ctest reports it as skipped, not passed.
 */
#define CUNIT_SKIP(...) cunit_skip_at(__FILE__, __LINE__, __VA_ARGS__)
void cunit_skip_at(const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Run the suites (all tests, or only the test or the suite named by
 * argv[1]) verbosely. On a failure it prints, per failed test, the command
 * that reruns exactly that test with this run's seed.
 * @return 0 when every assert passed, 1 when any failed, 2 on a CUnit
 *         error, CUNIT_SKIPPED when none failed but a test was skipped
 */
int cunit_main(int argc, char **argv, CU_SuiteInfo *suites);

/**
 * Delete a directory tree (test scratch space).
 * @return 0, or -1 when something could not be removed
 */
int cunit_remove_tree(const char *path);

#endif /* TESTS_CUNIT_MAIN_H */
