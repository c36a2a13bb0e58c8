/* hist.c: log-linear latency histogram: 64 buckets per power of two. */
#include "hist.h"

static unsigned bucket_of(uint64_t v)
{
    if (v < HIST_SUB) {
        return (unsigned)v;
    }
    unsigned e = 63 - (unsigned)__builtin_clzll(v); /* v >= 2^e */
    unsigned shift = e - 6;                         /* HIST_SUB = 2^6 */
    unsigned b = (e - 5) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
    return b < HIST_EXP * HIST_SUB ? b : HIST_EXP * HIST_SUB - 1;
}

static uint64_t bucket_mid(unsigned b)
{
    if (b < HIST_SUB) {
        return b;
    }
    unsigned e = b / HIST_SUB + 5;
    uint64_t lo = (uint64_t)(HIST_SUB + b % HIST_SUB) << (e - 6);
    return lo + ((1ull << (e - 6)) >> 1);
}

void hist_add(struct hist *h, uint64_t ns)
{
    h->count[bucket_of(ns)]++;
    h->n++;
    h->sum += (double)ns;
    if (ns > h->max) {
        h->max = ns;
    }
}

void hist_merge(struct hist *a, const struct hist *b)
{
    for (unsigned i = 0; i < HIST_EXP * HIST_SUB; i++) {
        a->count[i] += b->count[i];
    }
    a->n += b->n;
    a->sum += b->sum;
    if (b->max > a->max) {
        a->max = b->max;
    }
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->n == 0) {
        return 0;
    }
    uint64_t rank = (uint64_t)(q * (double)(h->n - 1)) + 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_EXP * HIST_SUB; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            uint64_t m = bucket_mid(i);
            return m > h->max ? h->max : m;
        }
    }
    return h->max;
}
