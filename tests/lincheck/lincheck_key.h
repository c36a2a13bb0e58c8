/* lincheck_key.h: checking the operations of one key (inside lincheck). */
#ifndef TESTS_LINCHECK_KEY_H
#define TESTS_LINCHECK_KEY_H

#include <stddef.h>
#include <time.h>

#include "lincheck.h"

enum lc_key_result {
    LC_KEY_OK,      /* linearizable */
    LC_KEY_FAIL,    /* not linearizable */
    LC_KEY_TIMEOUT, /* the deadline passed first */
    LC_KEY_NOMEM    /* out of memory, or the memo reached its cap */
};

/**
 * Search for a linearization of one key's operations.
 * @param ev         the operations, all of one key, none an unknown get:
 *                   those of known outcome first, each group by call time
 *                   (borrowed for the call)
 * @param n          how many (at least 1)
 * @param deadline   when to give up (CLOCK_MONOTONIC), or NULL for never
 * @param detail     receives, unless LC_KEY_OK, what went wrong (as in
 *                   struct lc_result)
 * @param detail_len size of detail
 * @return the result
 */
enum lc_key_result lc_check_key(const struct lc_event *const *ev,
                                size_t n,
                                const struct timespec *deadline,
                                char *detail,
                                size_t detail_len);

#endif /* TESTS_LINCHECK_KEY_H */
