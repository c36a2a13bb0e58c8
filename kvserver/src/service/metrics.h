/* metrics.h: the node's counters and histograms (node/stats.h), served as
 * Prometheus text at /metrics with a /health check (private to kvserver;
 * the service itself: metrics_service_init in service.h). */
#ifndef KVSERVER_METRICS_H
#define KVSERVER_METRICS_H

#include <stdint.h>

/**
 * Split "HOST:PORT" ("[::1]:9100" for IPv6; port 0 picks a free one).
 * @return 0, or -1 when it is not of that form
 */
int metrics_parse_addr(const char *addr, char host[256], uint16_t *port);

#endif /* KVSERVER_METRICS_H */
