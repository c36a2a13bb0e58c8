/* test_hosts.c: membership on hosts made of network namespaces. The test
 * first moves itself into a private network namespace and a private mount
 * namespace (unshare), so that no packet can leave and nothing it makes
 * is seen outside; both go away with the process. There it builds hosts:
 * named network namespaces (ip netns add, under a /run/netns of its own),
 * each joined to a bridge in the test's namespace by a veth pair and
 * addressed from 192.0.2.0/24 (TEST-NET-1, RFC 5737): host k is
 * 192.0.2.k, the test itself 192.0.2.254. One kvserver runs on each host,
 * started inside it (setns in the child), bound to 0.0.0.0 there
 * (--listen, --peer-listen) on the same ports as every other, and known to
 * the others and to the clients by its 192.0.2.k address alone.
 *
 * While clients (libclerk, in the test's namespace) append to and read
 * shared keys, the cluster grows from 3 nodes to 5 (hosts 4 and 5 join),
 * loses one (removed: it stops by itself), and has a host replaced: its
 * host is lost and wiped, and a new host at a new address joins under a
 * new id, then the old id is removed (faults_member's TOUR_HOSTS). Every
 * acknowledged append must be present exactly once, the history
 * linearizable, every member caught up, and each member known by the
 * addresses of its host.
 *
 * Needs root and ip (iproute2), with veth and bridge support; without them
 * it reports "skipped" (exit 77), or fails with RAFTKV_REQUIRE_ALL=1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "cunit_main.h"
#include "faults.h"

#define BRIDGE    "hostsbr"
#define SELF_ADDR "192.0.2.254"
#define MAX_HOSTS 200 /* host k is 192.0.2.k */

static unsigned n_hosts;              /* hosts made so far */
static unsigned host_of[H_MAX_NODES]; /* node slot -> its host */

/* Run a shell command line; 0 when it succeeded. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int run(const char *fmt, ...)
{
    char cmd[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    if (st != 0) {
        fprintf(stderr, "test_hosts: failed (%d): %s\n", st, cmd);
        return -1;
    }
    return 0;
}

/* Host k: a network namespace hK with 192.0.2.K on eth0, whose other end
 * (vhK) is a port of the bridge. */
static int make_host(unsigned k)
{
    return run(
        "ip netns add h%u && "
        "ip link add vh%u type veth peer name eth0 netns h%u && "
        "ip link set vh%u master " BRIDGE
        " up && "
        "ip -n h%u addr add 192.0.2.%u/24 dev eth0 && "
        "ip -n h%u link set eth0 up && ip -n h%u link set lo up",
        k, k, k, k, k, k, k, k);
}

/* h_start.new_host: node slot i gets a host of its own, a new one (a
 * replaced host comes back at a new address). */
static int new_host(struct h_cluster *c, size_t i)
{
    if (n_hosts == MAX_HOSTS) {
        fprintf(stderr, "test_hosts: no address left\n");
        return -1;
    }
    unsigned k = ++n_hosts;
    if (make_host(k) != 0) {
        return -1;
    }
    host_of[i] = k;
    snprintf(c->nodes[i].host, sizeof c->nodes[i].host, "192.0.2.%u", k);
    snprintf(c->nodes[i].netns, sizeof c->nodes[i].netns, "/run/netns/h%u", k);
    return 0;
}

/* h_start.drop_host: the host is gone (its namespace, and with it the
 * veth pair). */
static int drop_host(struct h_cluster *c, size_t i)
{
    (void)c;
    return run("ip netns del h%u", host_of[i]);
}

/* Does addr:port accept a TCP connection, from inside network namespace
 * @netns ("": the test's own)? */
static bool accepts_in(const char *netns, const char *addr, uint16_t port)
{
    pid_t pid = fork();
    if (pid == 0) {
        int ns = netns[0] ? open(netns, O_RDONLY | O_CLOEXEC) : -1;
        if (netns[0] && (ns < 0 || setns(ns, CLONE_NEWNET) != 0)) {
            _exit(2);
        }
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(port)};
        inet_pton(AF_INET, addr, &sa.sin_addr);
        _exit(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0
                  ? 0
                  : 1);
    }
    int st = 0;
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
           WEXITSTATUS(st) == 0;
}

/* Each node runs on a host of its own, bound to every address there
 * (0.0.0.0: its loopback too), and is reached from elsewhere by its
 * 192.0.2.x address alone: the test's namespace has no node; kvctl, run
 * in the test's namespace, lists the members by their hosts' addresses;
 * a host has no way out of the test's network. */
static void test_hosts_nodes_bind_every_address_and_are_reached_by_theirs(void)
{
    struct h_cluster c;
    struct h_start o = {.new_host = new_host, .drop_host = drop_host};
    unsigned before = n_hosts;
    CU_ASSERT_FATAL(h_cluster_start_with(&c, 3, NULL, &o) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    for (size_t i = 0; i < c.n; i++) {
        const struct h_node *nd = &c.nodes[i];
        CU_ASSERT(accepts_in("", nd->host, nd->port));
        CU_ASSERT(accepts_in("", nd->host, nd->peer_port));
        CU_ASSERT(accepts_in(nd->netns, "127.0.0.1", nd->port));
        CU_ASSERT(accepts_in(nd->netns, "127.0.0.1", nd->peer_port));
        CU_ASSERT(!accepts_in("", "127.0.0.1", nd->port));
        /* Another host is reached over the bridge, the world is not. */
        CU_ASSERT(accepts_in(nd->netns, c.nodes[(i + 1) % c.n].host, nd->port));
        CU_ASSERT(!accepts_in(nd->netns, "198.51.100.1", 80));
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s --cluster %s:%u -w table member list",
             KVCTL_BIN, c.nodes[0].host, c.nodes[0].port);
    FILE *p = popen(cmd, "r");
    CU_ASSERT_FATAL(p != NULL);
    char out[4096] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    CU_ASSERT(pclose(p) == 0);
    printf("\n%s", out);
    for (size_t i = 0; i < c.n; i++) {
        char peer[64], addr[64];
        h_node_peer_addr(&c, i, peer, sizeof peer);
        h_node_addr(&c, i, addr, sizeof addr);
        CU_ASSERT(strstr(out, peer) != NULL && strstr(out, addr) != NULL);
    }
    c.keep = CU_get_number_of_failures() > 0;
    h_cluster_destroy(&c);
    for (unsigned k = before + 1; k <= n_hosts; k++) {
        CU_ASSERT(run("ip netns del h%u", k) == 0);
    }
}

/* Three hosts grow to five; one node removed; one host replaced by a
 * wiped one at a new address, under a new id; clients append and read
 * throughout. */
static void test_hosts_grow_remove_and_replace_under_clients(void)
{
    static const struct scenario sc = {
        .name = "hosts_grow_remove_and_replace",
        .servers = 3,
        .max_servers = 5,
        .clients = 4,
        .readers = 2,
        .random_keys = true,
        .nem = &faults_member,
        .tour = TOUR_HOSTS,
        .tour_only = true,
        .iterations = 1,
        .iter_ms = 8000,
        /* Appends make values longer with every write: a small history
         * keeps the snapshots that new hosts fetch small. */
        .flags =
            "--history-bytes 4M --snapshot-entries 500 "
            "--snapshot-trailing 50",
        .new_host = new_host,
        .drop_host = drop_host,
    };
    unsigned before = n_hosts;
    faults_run(&sc);
    /* 3 first hosts, 2 that joined, 1 that replaced a lost one. */
    CU_ASSERT(n_hosts - before >= 6);
    /* The hosts left (their nodes are dead) go now; they would with the
     * test's namespaces anyway. */
    for (unsigned k = before + 1; k <= n_hosts; k++) {
        char path[64];
        snprintf(path, sizeof path, "/run/netns/h%u", k);
        if (access(path, F_OK) == 0) {
            CU_ASSERT(run("ip netns del h%u", k) == 0);
        }
    }
}

/* ------------------------------------------------- rolling restart */

/* docs/deploy.md's rolling restart (and upgrade, which is the same with a
 * new package installed before each restart): one node after the other,
 * each only once the cluster is healthy (every node answers, one leader,
 * none trailing it by 100 applied entries or more, the leader heard from
 * each in its last two heartbeats), the leader handed
 * over first, each stopped with SIGTERM (it must exit 0) and started
 * again. */
struct rolling
{
    size_t next;      /* the node to restart next */
    unsigned done;    /* restarts so far */
    unsigned handed;  /* of them, of the leader (handed over first) */
    unsigned unclean; /* stops that did not exit 0 */
    unsigned waits;   /* health checks that had to wait */
};

static bool healthy(struct world *w)
{
    struct clerk_node_status *st = NULL;
    size_t n = 0;
    if (clerk_status(faults_admin(w), &st, &n) != CLERK_OK) {
        return false;
    }
    unsigned leaders = 0, up = 0;
    bool close = true;
    for (size_t i = 0; i < n; i++) {
        up += st[i].reachable;
        leaders += st[i].reachable && !strcmp(st[i].role, "leader");
        /* ... and the leader heard from it lately (a node just started
         * is not yet one the leader may hand over to). */
        close &= !st[i].reachable ||
                 (st[i].lag_known && st[i].applied_lag < 100 &&
                  (!st[i].progress_known || st[i].ack_age_ms <= 200));
    }
    clerk_free(st);
    return up == faults_cluster(w)->n && leaders == 1 && close;
}

static void *rolling_start(struct world *w)
{
    (void)w;
    return calloc(1, sizeof(struct rolling));
}

static void rolling_step(void *state, struct world *w)
{
    struct rolling *r = state;
    struct h_cluster *c = faults_cluster(w);
    uint64_t end = h_now_ms() + 15000;
    while (!healthy(w)) {
        r->waits++;
        if (h_now_ms() >= end) {
            faults_fail(w,
                        "rolling restart: the cluster is not healthy "
                        "15 s after the last restart");
            return;
        }
        h_sleep_ms(100);
    }
    size_t i = r->next;
    r->next = (r->next + 1) % c->n;
    if (faults_leader(w) == (int)i) {
        /* As docs/deploy.md says: a hand-over right after a restart may
         * find no follower the leader heard from lately; run it again. */
        uint64_t leader = 0, until = h_now_ms() + 5000;
        int rv;
        while ((rv = clerk_transfer_leader(faults_admin(w), 0, &leader)) ==
                   CLERK_UNAVAILABLE &&
               h_now_ms() < until) {
            h_sleep_ms(200);
        }
        if (rv != CLERK_OK) {
            faults_fail(w, "rolling restart: no hand-over from node %zu: %s", i,
                        clerk_errmsg(faults_admin(w)));
            return;
        }
        r->handed++;
    }
    int st = faults_stop(w, i);
    r->unclean += st != 0;
    if (st != 0) {
        faults_fail(w, "rolling restart: node %zu exited %d on SIGTERM", i, st);
    }
    if (faults_restart(w, i) != 0) {
        faults_fail(w, "rolling restart: node %zu did not start again", i);
        return;
    }
    r->done++;
    faults_nap(w, 500);
}

static void rolling_check(void *state, struct world *w)
{
    (void)state;
    (void)w;
}

static void rolling_finish(void *state, struct world *w, char *line, size_t len)
{
    struct rolling *r = state;
    snprintf(line, len,
             "rolling restart: %u restarts (%u of the leader, handed over "
             "first), %u unclean stops, %u health checks waited",
             r->done, r->handed, r->unclean, r->waits);
    if (r->done < faults_cluster(w)->n) {
        faults_fail(w, "rolling restart: only %u restarts", r->done);
    }
    free(r);
}

static const struct faults_nemesis rolling = {
    rolling_start,
    rolling_step,
    rolling_check,
    rolling_finish,
};

/* Three hosts restarted one after the other, twice round, while clients
 * append and read. */
static void test_hosts_rolling_restart_under_clients(void)
{
    static const struct scenario sc = {
        .name = "hosts_rolling_restart",
        .servers = 3,
        .clients = 4,
        .readers = 2,
        .random_keys = true,
        .nem = &rolling,
        .iterations = 1,
        .iter_ms = 8000,
        .flags =
            "--history-bytes 4M --snapshot-entries 500 "
            "--snapshot-trailing 50",
        .new_host = new_host,
        .drop_host = drop_host,
    };
    unsigned before = n_hosts;
    faults_run(&sc);
    for (unsigned k = before + 1; k <= n_hosts; k++) {
        char path[64];
        snprintf(path, sizeof path, "/run/netns/h%u", k);
        if (access(path, F_OK) == 0) {
            CU_ASSERT(run("ip netns del h%u", k) == 0);
        }
    }
}

static CU_TestInfo tests[] = {
    {"hosts_nodes_bind_every_address_and_are_reached_by_theirs",
     test_hosts_nodes_bind_every_address_and_are_reached_by_theirs},
    {"hosts_grow_remove_and_replace_under_clients",
     test_hosts_grow_remove_and_replace_under_clients},
    {"hosts_rolling_restart_under_clients",
     test_hosts_rolling_restart_under_clients},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"hosts", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

/* Nothing can run here: exit 77 (skipped), or 1 with RAFTKV_REQUIRE_ALL=1. */
static int cannot_run(const char *why)
{
    if (cunit_require_all()) {
        printf(
            "test_hosts: FAILED: RAFTKV_REQUIRE_ALL=1 but the tests "
            "would be skipped: %s\n",
            why);
        return 1;
    }
    printf("test_hosts: SKIPPED (exit %d): %s\n", CUNIT_SKIPPED, why);
    return CUNIT_SKIPPED;
}

/* The test's own namespaces: a network namespace (no packet leaves it)
 * with the bridge that joins the hosts, and a mount namespace whose
 * /run/netns holds the hosts' names (the system's is left alone). */
static int enter_private_namespaces(char *why, size_t len)
{
    if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) {
        snprintf(why, len, "unshare(CLONE_NEWNET | CLONE_NEWNS): %s",
                 strerror(errno));
        return -1;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        snprintf(why, len, "making the mounts private: %s", strerror(errno));
        return -1;
    }
    if (mkdir("/run/netns", 0755) != 0 && errno != EEXIST) {
        snprintf(why, len, "mkdir /run/netns: %s", strerror(errno));
        return -1;
    }
    if (mount("raftkv-hosts", "/run/netns", "tmpfs", MS_NOSUID | MS_NODEV,
              "mode=755") != 0) {
        snprintf(why, len, "a tmpfs on /run/netns: %s", strerror(errno));
        return -1;
    }
    if (system("ip link set lo up && "
               "ip link add " BRIDGE " type bridge && "
               "ip addr add " SELF_ADDR "/24 dev " BRIDGE " && "
               "ip link set " BRIDGE " up") != 0) {
        snprintf(why, len,
                 "could not make a bridge (ip link add type "
                 "bridge)");
        return -1;
    }
    /* A host can be made and undone (veth pairs into a namespace). */
    if (make_host(MAX_HOSTS + 1) != 0 ||
        run("ip netns del h%u", MAX_HOSTS + 1)) {
        snprintf(why, len, "could not make a host (ip netns add, veth)");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    /* A client writing to a node just killed gets EPIPE, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    char why[300];
    if (geteuid() != 0) {
        snprintf(why, sizeof why, "needs root (euid %u)", (unsigned)geteuid());
        return cannot_run(why);
    }
    if (system("ip -V >/dev/null 2>&1") != 0) {
        return cannot_run("needs ip (Debian package iproute2)");
    }
    if (enter_private_namespaces(why, sizeof why) != 0) {
        return cannot_run(why);
    }
    return cunit_main(argc, argv, suites);
}
