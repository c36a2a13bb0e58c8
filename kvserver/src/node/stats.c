/* stats.c: the node's latency histograms and the clock they are read by. */
#include <stddef.h>
#include <time.h>

#include "stats.h"

const double kv_hist_bounds[KV_HIST_BUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,
};

double kv_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void kv_hist_observe(struct kv_hist *h, double seconds)
{
    size_t k = 0;
    while (k < KV_HIST_BUCKETS && seconds > kv_hist_bounds[k]) {
        k++;
    }
    h->counts[k]++;
    h->sum += seconds;
    h->n++;
}
