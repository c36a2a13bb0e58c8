/* stats.h: the counters and latency histograms the node keeps as it runs
 * (served at /metrics by service/metrics.c; private to kvserver). */
#ifndef KVSERVER_STATS_H
#define KVSERVER_STATS_H

#include <stdint.h>

#define KV_HIST_BUCKETS 16

/* Upper bounds of the histogram buckets, in seconds. */
extern const double kv_hist_bounds[KV_HIST_BUCKETS];

/* A latency histogram in seconds, with Prometheus' cumulative buckets. */
struct kv_hist
{
    uint64_t counts[KV_HIST_BUCKETS + 1]; /* per bucket; the last: +Inf */
    double sum;                           /* of all observations */
    uint64_t n;                           /* observations */
};

struct kv_metrics
{
    uint64_t leader_changes;      /* times this node saw a new leader */
    uint64_t last_leader;         /* the leader it last knew (0: none) */
    uint64_t proposals_committed; /* writes answered with their outcome */
    uint64_t proposals_failed;    /* writes refused or not applied */
    uint64_t snapshots_sent;      /* snapshot streams sent to followers */
    uint64_t snapshots_received;  /* snapshots installed from a leader */
    uint64_t count_slices;        /* Range counts' slices on later turns */
    uint64_t compactions;         /* log compactions */
    uint64_t compactions_synced;  /* of them, with a state sync of their own */
    struct kv_hist wal_sync;      /* log append + fdatasync */
    struct kv_hist state_commit;  /* applied state LMDB commits */
    struct kv_hist apply;         /* applying one turn's committed entries */
};

/* Monotonic time in seconds, for durations. */
double kv_seconds(void);

/* Count one duration of @seconds in @h. */
void kv_hist_observe(struct kv_hist *h, double seconds);

#endif /* KVSERVER_STATS_H */
