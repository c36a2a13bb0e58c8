/* test_metrics.c: /metrics and /health answer and follow the cluster. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "cunit_main.h"
#include "harness.h"

#define OK                   RAFTKV__KV_ERROR__KV_OK
#define FAILED_SINCE(before) (CU_get_number_of_failures() > (before))

static char body[1 << 20];

/* A metric of node i, or -1 when the node does not answer. */
static double metric(struct h_cluster *c, size_t i, const char *name)
{
    if (h_http_get(c, i, "GET", "/metrics", body, sizeof body) != 200) {
        return -1;
    }
    return h_metric(body, name);
}

/* Wait until node i's metric reaches at least @want. */
static bool metric_reaches(struct h_cluster *c,
                           size_t i,
                           const char *name,
                           double want,
                           int timeout_ms)
{
    uint64_t end = h_now_ms() + (uint64_t)timeout_ms;
    do {
        if (metric(c, i, name) >= want) {
            return true;
        }
        h_sleep_ms(50);
    } while (h_now_ms() < end);
    fprintf(stderr, "node %zu: %s is %g, wanted >= %g\n", i, name,
            metric(c, i, name), want);
    return false;
}

static void test_metrics_follow_writes_and_a_leader_change(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    size_t f = (size_t)(leader + 1) % 3;
    CU_ASSERT(metric_reaches(&c, (size_t)leader, "raftkv_is_leader", 1, 15000));
    CU_ASSERT_EQUAL(metric(&c, f, "raftkv_is_leader"), 0);
    CU_ASSERT(metric_reaches(&c, f, "raftkv_has_leader", 1, 15000));
    double changes = metric(&c, f, "raftkv_leader_changes_total");
    CU_ASSERT(changes >= 1);

    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed()) == 0);
    for (int k = 0; k < 50; k++) {
        char key[32];
        snprintf(key, sizeof key, "m%d", k);
        CU_ASSERT_EQUAL(h_put(&cl, key, "v", 1).err, OK);
    }
    CU_ASSERT(metric(&c, (size_t)leader, "raftkv_proposals_committed_total") >=
              50);
    CU_ASSERT(metric(&c, (size_t)leader,
                     "raftkv_rpc_requests_total{service=\"raftkv.KvService\","
                     "method=\"PutAppend\",status=\"OK\"}") >= 50);
    CU_ASSERT(metric(&c, (size_t)leader,
                     "raftkv_wal_fsync_duration_seconds_count") >= 1);
    CU_ASSERT(metric(&c, (size_t)leader,
                     "raftkv_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}") >=
              1);
    CU_ASSERT(metric_reaches(&c, f, "raftkv_keys", 50, 15000));
    /* 50 puts on a fresh store: revision 51 on every node, each put's
     * event in the history, none compacted. */
    CU_ASSERT(metric_reaches(&c, f, "raftkv_revision", 51, 15000));
    CU_ASSERT_EQUAL(metric(&c, (size_t)leader, "raftkv_revision"), 51);
    CU_ASSERT_EQUAL(metric(&c, f, "raftkv_compact_revision"), 0);
    CU_ASSERT(metric(&c, f, "raftkv_history_bytes") >= 50 * 3);
    CU_ASSERT(metric(&c, f, "raftkv_applied_index") >= 50);
    CU_ASSERT(metric(&c, (size_t)leader, "raftkv_sessions") >= 1);
    CU_ASSERT(metric(&c, (size_t)leader, "raftkv_log_entries") >= 50);
    CU_ASSERT_EQUAL(metric(&c, f, "raftkv_rpc_frame_timeouts_total"), 0);
    CU_ASSERT(metric(&c, f, "raftkv_rpc_peer_connections") >= 1);

    /* Health: every node is healthy, with a JSON body. */
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(h_http_get(&c, i, "GET", "/health", body, sizeof body),
                        200);
        CU_ASSERT(strstr(body, "\"healthy\":true") != NULL);
    }

    /* Kill the leader: the others see a new one. */
    h_node_kill(&c, (size_t)leader);
    CU_ASSERT(metric_reaches(&c, f, "raftkv_leader_changes_total", changes + 1,
                             10000));
    int leader2 = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader2 >= 0 && leader2 != leader);
    CU_ASSERT(
        metric_reaches(&c, (size_t)leader2, "raftkv_is_leader", 1, 15000));
    CU_ASSERT(metric_reaches(&c, f, "raftkv_has_leader", 1, 15000));
    CU_ASSERT_EQUAL(h_put(&cl, "after", "kill", 4).err, OK);
    CU_ASSERT_EQUAL(
        h_http_get(&c, (size_t)leader2, "GET", "/health", body, sizeof body),
        200);
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

static void test_health_says_why_without_a_majority(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    /* Two of three gone: the last one cannot have or be a leader for
     * long (check-quorum), and says so. */
    size_t last = (size_t)(leader + 1) % 3;
    for (size_t i = 0; i < 3; i++) {
        if (i != last) {
            h_node_kill(&c, i);
        }
    }
    int status = 0;
    uint64_t end = h_now_ms() + 10000;
    while (h_now_ms() < end) {
        status = h_http_get(&c, last, "GET", "/health", body, sizeof body);
        if (status == 503) {
            break;
        }
        h_sleep_ms(100);
    }
    CU_ASSERT_EQUAL(status, 503);
    CU_ASSERT(strstr(body, "\"healthy\":false") != NULL);
    CU_ASSERT(strstr(body, "\"reason\":\"no leader known\"") != NULL);
    CU_ASSERT_EQUAL(metric(&c, last, "raftkv_has_leader"), 0);
    /* Other paths and methods get clear errors; the node goes on. */
    CU_ASSERT_EQUAL(h_http_get(&c, last, "GET", "/nope", body, sizeof body),
                    404);
    CU_ASSERT_EQUAL(h_http_get(&c, last, "POST", "/metrics", body, sizeof body),
                    501);
    CU_ASSERT_EQUAL(h_http_get(&c, last, "GET", "/metrics", body, sizeof body),
                    200);
    /* Back to a majority: healthy again. */
    CU_ASSERT(h_node_start(&c, (size_t)leader) == 0);
    status = 0;
    end = h_now_ms() + 10000;
    while (h_now_ms() < end) {
        status = h_http_get(&c, last, "GET", "/health", body, sizeof body);
        if (status == 200) {
            break;
        }
        h_sleep_ms(100);
    }
    CU_ASSERT_EQUAL(status, 200);
    /* Every log line: a timestamp, the level and the node id. */
    for (size_t i = 0; i < 3; i++) {
        FILE *fp = fopen(c.nodes[i].log, "r");
        CU_ASSERT_FATAL(fp != NULL);
        char line[2048], want[64];
        snprintf(want, sizeof want, " node %zu: ", i + 1);
        int lines = 0, bad = 0;
        while (fgets(line, sizeof line, fp)) {
            lines++;
            bool levelled =
                strstr(line, "Z INFO ") || strstr(line, "Z WARN ") ||
                strstr(line, "Z ERROR ") || strstr(line, "Z DEBUG ");
            if (!levelled || !strstr(line, want) || line[4] != '-') {
                fprintf(stderr, "log line without timestamp, level or node: %s",
                        line);
                bad++;
            }
        }
        fclose(fp);
        CU_ASSERT(lines > 0);
        CU_ASSERT_EQUAL(bad, 0);
    }
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_metrics_follow_writes_and_a_leader_change",
         test_metrics_follow_writes_and_a_leader_change},
        {"test_health_says_why_without_a_majority",
         test_health_says_why_without_a_majority},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"metrics", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
