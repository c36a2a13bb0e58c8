/* test_netns.c: real packet-level partitions. The test moves itself into a
 * private network namespace (unshare), where its kvserver nodes listen on
 * 127.0.0.11, .12, ...; nftables rules drop the packets between nodes on
 * different sides. Nothing outside the namespace is touched, and the
 * namespace goes away with the process.
 *
 * Needs root, nft and ip; without them it reports "skipped" (exit 77),
 * or fails with RAFTKV_REQUIRE_ALL=1.
 */
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "cunit_main.h"
#include "faults.h"

static uint64_t dropped; /* packets the rules replaced so far dropped */

/* Add what the rules in force have dropped (their counters) to dropped. */
static void collect_drops(void)
{
    FILE *f = popen("nft list table inet raftkv_test 2>/dev/null", "r");
    if (!f) {
        return;
    }
    char line[512];
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "counter packets ");
        if (p) {
            dropped += strtoull(p + strlen("counter packets "), NULL, 10);
        }
    }
    pclose(f);
}

static uint64_t packet_drops(void)
{
    return dropped;
}

/* Replace the namespace's ruleset: drop (and count) node i's packets to
 * node j wherever link[i][j] is false. */
static int nft_cut(const struct h_cluster *c,
                   const bool link[H_MAX_NODES][H_MAX_NODES])
{
    collect_drops();
    FILE *f = popen("nft -f -", "w");
    if (!f) {
        return -1;
    }
    fprintf(f,
            "flush ruleset\n"
            "table inet raftkv_test {\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n");
    for (size_t i = 0; i < c->n; i++) {
        for (size_t j = 0; j < c->n; j++) {
            if (i != j && !link[i][j]) {
                fprintf(f, "    ip saddr %s ip daddr %s counter drop\n",
                        c->nodes[i].host, c->nodes[j].host);
            }
        }
    }
    fprintf(f, "  }\n}\n");
    int st = pclose(f);
    return st == 0 ? 0 : -1;
}

/* The filter really cuts: isolating the leader by packet rules alone makes
 * the others elect a new one; removing the rules lets it rejoin. */
static void test_isolated_leader_is_replaced(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start_hosts(&c, 3, NULL, true) == 0);
    char eps[512];
    h_endpoints(&c, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 10000, .attempt_ms = 300};
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    CU_ASSERT_EQUAL(clerk_put(ck, "k", 1, "v1", 2), CLERK_OK);
    int old = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(old >= 0);
    bool link[H_MAX_NODES][H_MAX_NODES];
    for (size_t i = 0; i < c.n; i++) {
        for (size_t j = 0; j < c.n; j++) {
            link[i][j] = i == j || ((int)i != old && (int)j != old);
        }
    }
    uint64_t dropped_before = packet_drops();
    CU_ASSERT_FATAL(nft_cut(&c, link) == 0);
    /* The majority elects another leader and takes writes. */
    CU_ASSERT_EQUAL(clerk_put(ck, "k", 1, "v2", 2), CLERK_OK);
    struct clerk_node_status *st;
    size_t n;
    CU_ASSERT_FATAL(clerk_status(ck, &st, &n) == CLERK_OK);
    uint64_t new_leader = 0;
    for (size_t i = 0; i < n && i < c.n; i++) {
        if (st[i].reachable && (int)i != old && st[i].leader) {
            new_leader = st[i].leader;
        }
    }
    CU_ASSERT(new_leader != 0 && new_leader != c.nodes[old].id);
    clerk_free(st);
    for (size_t i = 0; i < c.n; i++) {
        for (size_t j = 0; j < c.n; j++) {
            link[i][j] = true;
        }
    }
    CU_ASSERT_FATAL(nft_cut(&c, link) == 0);
    /* The rules did drop the old leader's packets. */
    CU_ASSERT(packet_drops() > dropped_before);
    /* The old leader catches up: a stale read on it alone sees v2. */
    char one[64];
    snprintf(one, sizeof one, "%s:%u", c.nodes[old].host, c.nodes[old].port);
    struct clerk *ck1 = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck1, one, &o) == CLERK_OK);
    clerk_set_read_mode(ck1, CLERK_READ_STALE);
    bool seen = false;
    for (int t = 0; t < 100 && !seen; t++) {
        void *v = NULL;
        size_t len = 0;
        seen = clerk_get(ck1, "k", 1, &v, &len) == CLERK_OK && len == 2 &&
               memcmp(v, "v2", 2) == 0;
        clerk_free(v);
        if (!seen) {
            usleep(100000);
        }
    }
    CU_ASSERT(seen);
    clerk_close(ck1);
    clerk_close(ck);
    h_cluster_destroy(&c);
}

static void test_packet_partitions(void)
{
    static const struct scenario sc = {
        .name = "packet_partitions",
        .servers = 5,
        .clients = 5,
        .random_keys = true,
        .nemesis = NEM_PACKETS,
        .distinct_hosts = true,
    };
    faults_run(&sc);
}

static void test_packet_partitions_with_snapshots(void)
{
    static const struct scenario sc = {
        .name = "packet_partitions_with_snapshots",
        .servers = 3,
        .clients = 5,
        .random_keys = true,
        .crash = true,
        .nemesis = NEM_PACKETS,
        .distinct_hosts = true,
        .snapshot = 50,
    };
    faults_run(&sc);
}

static CU_TestInfo tests[] = {
    {"isolated_leader_is_replaced", test_isolated_leader_is_replaced},
    {"packet_partitions", test_packet_partitions},
    {"packet_partitions_with_snapshots", test_packet_partitions_with_snapshots},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"netns", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

/* Nothing can run here: exit 77 (skipped), or 1 with RAFTKV_REQUIRE_ALL=1. */
static int cannot_run(const char *why)
{
    if (cunit_require_all()) {
        printf(
            "test_netns: FAILED: RAFTKV_REQUIRE_ALL=1 but the tests "
            "would be skipped: %s\n",
            why);
        return 1;
    }
    printf("test_netns: SKIPPED (exit %d): %s\n", CUNIT_SKIPPED, why);
    return CUNIT_SKIPPED;
}

int main(int argc, char **argv)
{
    char why[200];
    if (geteuid() != 0) {
        snprintf(why, sizeof why, "needs root (euid %u)", (unsigned)geteuid());
        return cannot_run(why);
    }
    if (system("nft --version >/dev/null 2>&1") != 0) {
        return cannot_run("needs nft (Debian package nftables)");
    }
    if (system("ip -V >/dev/null 2>&1") != 0) {
        return cannot_run("needs ip (Debian package iproute2)");
    }
    if (unshare(CLONE_NEWNET) != 0) {
        snprintf(why, sizeof why, "unshare(CLONE_NEWNET): %s", strerror(errno));
        return cannot_run(why);
    }
    if (system("ip link set lo up") != 0) {
        return cannot_run("could not bring up lo in the new namespace");
    }
    faults_packet_cut = nft_cut;
    faults_packet_drops = packet_drops;
    return cunit_main(argc, argv, suites);
}
