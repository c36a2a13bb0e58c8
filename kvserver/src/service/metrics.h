/* metrics.h: the node's counters and histograms, served as Prometheus text
 * at /metrics with a /health check (private to kvserver). */
#ifndef KVSERVER_METRICS_H
#define KVSERVER_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#define KV_HIST_BUCKETS 16

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
    uint64_t http_requests;       /* /metrics and /health requests */
    struct kv_hist wal_sync;      /* log append + fdatasync */
    struct kv_hist state_commit;  /* applied state LMDB commits */
    struct kv_hist apply;         /* applying one turn's committed entries */
};

/* Monotonic time in seconds, for durations. */
double kv_seconds(void);

void kv_hist_observe(struct kv_hist *h, double seconds);

struct kv_node;

/**
 * Split "HOST:PORT" ("[::1]:9100" for IPv6; port 0 picks a free one).
 * @return 0, or -1 when it is not of that form
 */
int metrics_parse_addr(const char *addr, char host[256], uint16_t *port);

/**
 * Serve /metrics and /health on @addr ("HOST:PORT") with libevent's HTTP
 * server.
 * @return 0, or -1 after printing why to stderr
 */
int metrics_start(struct kv_node *n, const char *addr);

void metrics_stop(struct kv_node *n);

#endif /* KVSERVER_METRICS_H */
