/* hist.h: a latency histogram in constant memory (log-linear buckets). */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB 64 /* buckets per power of two: about 1.6% resolution */
#define HIST_EXP 40 /* powers of two covered, in nanoseconds: to ~18 min */

struct hist
{
    uint64_t count[HIST_EXP * HIST_SUB]; /* samples per bucket */
    uint64_t n;                          /* samples */
    uint64_t max;                        /* largest sample (ns) */
    double sum;                          /* for the mean (ns) */
};

/* Record one latency in nanoseconds. */
void hist_add(struct hist *h, uint64_t ns);

/* Add all of b's samples to a. */
void hist_merge(struct hist *a, const struct hist *b);

/* The latency at quantile q (0..1), in nanoseconds (bucket midpoint). */
uint64_t hist_quantile(const struct hist *h, double q);

#endif /* BENCH_HIST_H */
