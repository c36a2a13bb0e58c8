/* cunit_main.h: the common main of raftkv's CUnit test programs. */
#ifndef TESTS_CUNIT_MAIN_H
#define TESTS_CUNIT_MAIN_H

#include <CUnit/CUnit.h>

/**
 * The seed of this run's randomized tests: RAFTKV_SEED from the
 * environment, else one drawn from the clock. Printed at start and again
 * when a test fails, with the command that reruns it.
 * @return the seed (the same for every call in one run)
 */
unsigned cunit_seed(void);

/**
 * Run the suites (all tests, or only the test or the suite named by
 * argv[1]) verbosely.
 * @return 0 when every assert passed, 1 when any failed, 2 on a CUnit error
 */
int cunit_main(int argc, char **argv, CU_SuiteInfo *suites);

/**
 * Delete a directory tree (test scratch space).
 * @return 0, or -1 when something could not be removed
 */
int cunit_remove_tree(const char *path);

#endif /* TESTS_CUNIT_MAIN_H */
