/* lincheck_group.h: checking the operations of a group of keys that ranges
 * and transactions join (inside lincheck). */
#ifndef TESTS_LINCHECK_GROUP_H
#define TESTS_LINCHECK_GROUP_H

#include <stddef.h>
#include <time.h>

#include "lincheck.h"
#include "lincheck_key.h"

/**
 * Search for a linearization of a group's operations over the model of
 * all its keys at once (Wing & Gong's search with Lowe's memo: a state is
 * every key's value, and its version when a compare reads versions).
 * @param ev         the operations of the group, none an unknown get or
 *                   range (borrowed for the call)
 * @param n          how many (at least 1)
 * @param deadline   when to give up (CLOCK_MONOTONIC), or NULL for never
 * @param detail     receives, unless LC_KEY_OK, what went wrong (as in
 *                   struct lc_result)
 * @param detail_len size of detail
 * @return the result (LC_KEY_NOMEM also when the memo reaches
 *         LC_MEMO_CAP_BYTES)
 */
enum lc_key_result lc_check_group(const struct lc_event *const *ev,
                                  size_t n,
                                  const struct timespec *deadline,
                                  char *detail,
                                  size_t detail_len);

#endif /* TESTS_LINCHECK_GROUP_H */
