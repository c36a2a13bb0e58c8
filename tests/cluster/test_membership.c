/* test_membership.c: a real cluster that changes shape while a client
 * writes: nodes added as learners with --join (from the log, and from a
 * snapshot), promoted once caught up, the leader removed (it hands off and
 * stops), a failed host replaced by a new one under a new id, a member
 * moved to new ports; what kvctl member says, and what it refuses. Every
 * acknowledged write is there at the end. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

static struct h_cluster mc;
static struct clerk *ck;

/* A client writing m/0, m/1, ... until told to stop. */
struct writer
{
    pthread_t thread;
    volatile bool stop;
    uint64_t acked;   /* m/0 .. m/(acked-1) acknowledged */
    uint64_t failed;  /* puts that failed (unavailable for a moment) */
    struct clerk *ck; /* its own handle */
};

static struct writer wr;

static void *write_loop(void *arg)
{
    struct writer *w = arg;
    while (!w->stop) {
        char k[32], v[32];
        snprintf(k, sizeof k, "m/%llu", (unsigned long long)w->acked);
        snprintf(v, sizeof v, "v%llu", (unsigned long long)w->acked);
        if (clerk_put(w->ck, k, strlen(k), v, strlen(v)) == CLERK_OK) {
            w->acked++;
        } else {
            w->failed++;
            h_sleep_ms(20);
        }
    }
    return NULL;
}

static int setup(void)
{
    /* Small snapshots: a node added late gets one, not the log. */
    if (h_cluster_start(&mc, 3,
                        "--snapshot-entries 200 --snapshot-trailing 20") != 0 ||
        h_find_leader(&mc, 10000) < 0) {
        return 1;
    }
    char eps[512];
    h_endpoints(&mc, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 10000};
    if (clerk_open(&ck, eps, &o) != CLERK_OK ||
        clerk_open(&wr.ck, eps, &o) != CLERK_OK) {
        return 1;
    }
    return pthread_create(&wr.thread, NULL, write_loop, &wr) == 0 ? 0 : 1;
}

static int teardown(void)
{
    wr.stop = true;
    pthread_join(wr.thread, NULL);
    clerk_close(wr.ck);
    clerk_close(ck);
    mc.keep = CU_get_number_of_failures() > 0;
    return h_cluster_destroy(&mc) == 0 ? 0 : 1;
}

static bool wait_acked(uint64_t more, unsigned ms)
{
    uint64_t want = wr.acked + more, end = h_now_ms() + ms;
    while (wr.acked < want && h_now_ms() < end) {
        h_sleep_ms(20);
    }
    return wr.acked >= want;
}

static const struct clerk_member *find(const struct clerk_members *m,
                                       uint64_t id)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->members[i].id == id) {
            return &m->members[i];
        }
    }
    return NULL;
}

/* Add node i (h_node_add'ed) as a learner, start it, promote it. */
static void grow_by(size_t i)
{
    char peer[64], addr[64];
    h_node_peer_addr(&mc, i, peer, sizeof peer);
    h_node_addr(&mc, i, addr, sizeof addr);
    uint64_t id = mc.nodes[i].id;
    struct clerk_members *m = NULL;
    int rv = clerk_member_change(ck, CLERK_MEMBER_ADD, id, peer, addr, &m);
    CU_ASSERT_EQUAL_FATAL(rv, CLERK_OK);
    const struct clerk_member *e = find(m, id);
    CU_ASSERT(e != NULL && e->learner);
    CU_ASSERT(e != NULL && !strcmp(e->address, addr) &&
              !strcmp(e->peer_address, peer));
    clerk_members_free(m);
    /* Not before it has caught up: it is not even running. */
    rv = clerk_member_change(ck, CLERK_MEMBER_PROMOTE, id, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(rv, CLERK_UNAVAILABLE);
    CU_ASSERT_FATAL(h_node_start(&mc, i) == 0);
    uint64_t end = h_now_ms() + 20000;
    do {
        rv =
            clerk_member_change(ck, CLERK_MEMBER_PROMOTE, id, NULL, NULL, NULL);
        if (rv == CLERK_UNAVAILABLE) {
            h_sleep_ms(100);
        }
    } while (rv == CLERK_UNAVAILABLE && h_now_ms() < end);
    CU_ASSERT_EQUAL_FATAL(rv, CLERK_OK);
    CU_ASSERT(clerk_member_list(ck, &m) == CLERK_OK);
    if (m) {
        e = find(m, id);
        CU_ASSERT(e != NULL && !e->learner);
        CU_ASSERT(m->committed);
        clerk_members_free(m);
    }
}

static void test_member_grow_from_three_to_five(void)
{
    CU_ASSERT_FATAL(wait_acked(50, 10000));
    int a = h_node_add(&mc);
    CU_ASSERT_FATAL(a >= 0);
    grow_by((size_t)a);
    CU_ASSERT(wait_acked(300, 20000)); /* past a snapshot or two */
    int b = h_node_add(&mc);
    CU_ASSERT_FATAL(b >= 0);
    grow_by((size_t)b); /* this one from a snapshot */
    CU_ASSERT(h_log_contains(&mc, (size_t)b, "installed a snapshot"));
    struct clerk_members *m = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_member_list(ck, &m), CLERK_OK);
    CU_ASSERT_EQUAL(m->n, 5);
    clerk_members_free(m);
    /* Five voters: two may go. */
    int l = h_find_leader(&mc, 5000);
    CU_ASSERT_FATAL(l >= 0);
    size_t x = ((size_t)l + 1) % mc.n, y = ((size_t)l + 2) % mc.n;
    h_node_kill(&mc, x);
    h_node_kill(&mc, y);
    CU_ASSERT(wait_acked(20, 15000));
    CU_ASSERT(h_node_start(&mc, x) == 0);
    CU_ASSERT(h_node_start(&mc, y) == 0);
}

static void test_member_add_refuses_bad_requests(void)
{
    /* Already a member; bad addresses; not a member; the last voter is
     * not tested here (three or more voters). */
    int rv = clerk_member_change(ck, CLERK_MEMBER_ADD, mc.nodes[0].id,
                                 "127.0.0.1:1", "127.0.0.1:2", NULL);
    CU_ASSERT_EQUAL(rv, CLERK_BAD_REQUEST);
    rv = clerk_member_change(ck, CLERK_MEMBER_ADD, 99, "no-port", "x", NULL);
    CU_ASSERT_EQUAL(rv, CLERK_BAD_REQUEST);
    CU_ASSERT(strstr(clerk_errmsg(ck), "HOST:PORT") != NULL);
    rv = clerk_member_change(ck, CLERK_MEMBER_REMOVE, 99, NULL, NULL, NULL);
    CU_ASSERT_EQUAL(rv, CLERK_BAD_REQUEST);
    rv = clerk_member_change(ck, CLERK_MEMBER_PROMOTE, mc.nodes[0].id, NULL,
                             NULL, NULL);
    CU_ASSERT_EQUAL(rv, CLERK_BAD_REQUEST); /* a voter already */
}

static void test_member_remove_the_leader_it_hands_off_and_stops(void)
{
    int l = h_find_leader(&mc, 5000);
    CU_ASSERT_FATAL(l >= 0);
    uint64_t id = mc.nodes[l].id;
    int rv = clerk_member_change(ck, CLERK_MEMBER_REMOVE, id, NULL, NULL, NULL);
    CU_ASSERT_EQUAL_FATAL(rv, CLERK_OK);
    /* It stops by itself, with exit status 0. */
    CU_ASSERT(h_node_exited(&mc, (size_t)l, 10000));
    CU_ASSERT(h_log_contains(&mc, (size_t)l, "removed from the cluster"));
    CU_ASSERT(wait_acked(20, 15000));
    int l2 = h_find_leader(&mc, 10000);
    CU_ASSERT(l2 >= 0 && l2 != l);
    /* It cannot come back: not with its data, not under its id. */
    CU_ASSERT(h_node_start(&mc, (size_t)l) != 0);
    CU_ASSERT(
        h_log_contains(&mc, (size_t)l, "removed from its cluster for good"));
    char peer[64], addr[64];
    h_node_peer_addr(&mc, (size_t)l, peer, sizeof peer);
    h_node_addr(&mc, (size_t)l, addr, sizeof addr);
    rv = clerk_member_change(ck, CLERK_MEMBER_ADD, id, peer, addr, NULL);
    CU_ASSERT_EQUAL(rv, CLERK_BAD_REQUEST);
    CU_ASSERT(strstr(clerk_errmsg(ck), "never used again") != NULL);
    struct clerk_members *m = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_member_list(ck, &m), CLERK_OK);
    CU_ASSERT(find(m, id) == NULL);
    bool tomb = false;
    for (size_t i = 0; i < m->n_removed; i++) {
        tomb |= m->removed[i] == id;
    }
    CU_ASSERT(tomb);
    clerk_members_free(m);
}

/* A follower's removal never reaches it through the log (the leader stops
 * sending to it once it proposes the removal): it learns it from the
 * members, which close its Raft connections and refuse its new ones after
 * proving they hold the secret, and stops by itself, exit status 0.
 * Started again with its data, it stops again. The follower removed led
 * until a moment ago: it holds open connections to every member. */
static void test_member_remove_a_follower_it_stops_by_itself(void)
{
    int l = h_find_leader(&mc, 5000);
    CU_ASSERT_FATAL(l >= 0);
    size_t f = (size_t)l, to = mc.n;
    for (size_t i = 0; i < mc.n; i++) {
        if ((int)i != l && mc.nodes[i].pid > 0) {
            to = i;
        }
    }
    CU_ASSERT_FATAL(to < mc.n);
    CU_ASSERT_EQUAL_FATAL(clerk_transfer_leader(ck, mc.nodes[to].id, NULL),
                          CLERK_OK);
    uint64_t id = mc.nodes[f].id;
    int rv = clerk_member_change(ck, CLERK_MEMBER_REMOVE, id, NULL, NULL, NULL);
    CU_ASSERT_EQUAL_FATAL(rv, CLERK_OK);
    CU_ASSERT_EQUAL(h_node_wait_exit(&mc, f, 10000), 0);
    CU_ASSERT(h_log_contains(&mc, f, "removed from the cluster"));
    CU_ASSERT(wait_acked(20, 15000));
    size_t before = h_log_count(&mc, f, "removed from the cluster");
    CU_ASSERT_FATAL(h_node_start(&mc, f) == 0);
    CU_ASSERT_EQUAL(h_node_wait_exit(&mc, f, 10000), 0);
    CU_ASSERT(h_log_count(&mc, f, "removed from the cluster") > before);
    CU_ASSERT(wait_acked(20, 15000));
}

static void test_member_replace_a_failed_host(void)
{
    /* A follower's host dies for good. */
    int l = h_find_leader(&mc, 5000);
    CU_ASSERT_FATAL(l >= 0);
    size_t dead = mc.n;
    for (size_t i = 0; i < mc.n; i++) {
        if ((int)i != l && mc.nodes[i].pid > 0) {
            dead = i;
        }
    }
    CU_ASSERT_FATAL(dead < mc.n);
    h_node_kill(&mc, dead);
    /* A new host under a new id takes its place. */
    int nw = h_node_add(&mc);
    CU_ASSERT_FATAL(nw >= 0);
    grow_by((size_t)nw);
    int rv = clerk_member_change(ck, CLERK_MEMBER_REMOVE, mc.nodes[dead].id,
                                 NULL, NULL, NULL);
    CU_ASSERT_EQUAL(rv, CLERK_OK);
    CU_ASSERT(wait_acked(20, 15000));
}

static void test_member_update_moves_a_node_to_new_ports(void)
{
    int l = h_find_leader(&mc, 5000);
    CU_ASSERT_FATAL(l >= 0);
    size_t f = mc.n;
    for (size_t i = 0; i < mc.n; i++) {
        if ((int)i != l && mc.nodes[i].pid > 0) {
            f = i;
        }
    }
    CU_ASSERT_FATAL(f < mc.n);
    h_node_kill(&mc, f);
    CU_ASSERT_FATAL(h_node_move(&mc, f) == 0);
    char peer[64], addr[64];
    h_node_peer_addr(&mc, f, peer, sizeof peer);
    h_node_addr(&mc, f, addr, sizeof addr);
    int rv = clerk_member_change(ck, CLERK_MEMBER_UPDATE, mc.nodes[f].id, peer,
                                 addr, NULL);
    CU_ASSERT_EQUAL_FATAL(rv, CLERK_OK);
    CU_ASSERT_FATAL(h_node_start(&mc, f) == 0);
    /* It catches up at its new address: the leader reaches it there. */
    CU_ASSERT(wait_acked(50, 15000));
    struct clerk_node_status *st = NULL;
    size_t n = 0;
    bool caught_up = false;
    uint64_t end = h_now_ms() + 15000;
    while (!caught_up && h_now_ms() < end) {
        CU_ASSERT_FATAL(clerk_status(ck, &st, &n) == CLERK_OK);
        for (size_t i = 0; i < n; i++) {
            if (st[i].id == mc.nodes[f].id && st[i].reachable &&
                st[i].progress_known && st[i].replication_lag < 50 &&
                !strcmp(st[i].address, addr)) {
                caught_up = true;
            }
        }
        clerk_free(st);
        h_sleep_ms(100);
    }
    CU_ASSERT(caught_up);
}

static void test_member_every_acknowledged_write_is_there(void)
{
    wr.stop = true;
    pthread_join(wr.thread, NULL);
    wr.thread = pthread_self(); /* (joined) */
    uint64_t missing = 0;
    for (uint64_t i = 0; i < wr.acked; i++) {
        char k[32], want[32];
        snprintf(k, sizeof k, "m/%llu", (unsigned long long)i);
        snprintf(want, sizeof want, "v%llu", (unsigned long long)i);
        void *v = NULL;
        size_t len = 0;
        int rv = clerk_get(ck, k, strlen(k), &v, &len);
        if (rv != CLERK_OK || len != strlen(want) || memcmp(v, want, len)) {
            missing++;
        }
        free(v);
    }
    printf(
        "\n  %llu writes acknowledged (%llu failed and retried), %llu "
        "missing\n",
        (unsigned long long)wr.acked, (unsigned long long)wr.failed,
        (unsigned long long)missing);
    CU_ASSERT(wr.acked > 400);
    CU_ASSERT_EQUAL(missing, 0);
}

/* A majority lost for good: --force-new-cluster on a survivor makes it
 * the whole cluster, with the data it held; the lost members are removed
 * for good and cannot come back into it. */
static void test_member_force_new_cluster_on_a_survivor(void)
{
    int l = h_find_leader(&mc, 5000);
    CU_ASSERT_FATAL(l >= 0);
    CU_ASSERT_FATAL(clerk_put(ck, "marker", 6, "here", 4) == CLERK_OK);
    /* A survivor that holds the marker. */
    size_t f = mc.n;
    uint64_t end = h_now_ms() + 10000;
    while (f == mc.n && h_now_ms() < end) {
        for (size_t i = 0; i < mc.n && f == mc.n; i++) {
            if ((int)i == l || mc.nodes[i].pid <= 0) {
                continue;
            }
            char ep[64];
            h_node_addr(&mc, i, ep, sizeof ep);
            struct clerk *one;
            struct clerk_options o = {.deadline_ms = 1000};
            if (clerk_open(&one, ep, &o) != CLERK_OK) {
                continue;
            }
            clerk_set_read_mode(one, CLERK_READ_STALE);
            void *v = NULL;
            size_t len = 0;
            if (clerk_get(one, "marker", 6, &v, &len) == CLERK_OK) {
                f = i;
            }
            free(v);
            clerk_close(one);
        }
    }
    CU_ASSERT_FATAL(f < mc.n);
    uint64_t fid = mc.nodes[f].id;
    size_t other = mc.n; /* a member up until now, not the survivor */
    for (size_t i = 0; i < mc.n; i++) {
        if (i != f && mc.nodes[i].pid > 0) {
            other = i;
        }
        h_node_kill(&mc, i);
    }
    CU_ASSERT_FATAL(other < mc.n);
    snprintf(mc.nodes[f].own_extra, sizeof mc.nodes[f].own_extra,
             "--force-new-cluster");
    CU_ASSERT_FATAL(h_node_start(&mc, f) == 0);
    mc.nodes[f].own_extra[0] = 0;
    char ep[64];
    h_node_addr(&mc, f, ep, sizeof ep);
    struct clerk *solo;
    struct clerk_options o = {.deadline_ms = 10000};
    CU_ASSERT_FATAL(clerk_open(&solo, ep, &o) == CLERK_OK);
    void *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(clerk_get(solo, "marker", 6, &v, &len), CLERK_OK);
    CU_ASSERT(len == 4 && v && !memcmp(v, "here", 4));
    free(v);
    CU_ASSERT_EQUAL(clerk_put(solo, "after", 5, "1", 1), CLERK_OK);
    char k[32];
    snprintf(k, sizeof k, "m/%llu", (unsigned long long)(wr.acked - 1));
    v = NULL;
    CU_ASSERT_EQUAL(clerk_get(solo, k, strlen(k), &v, &len), CLERK_OK);
    free(v);
    struct clerk_members *m = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_member_list(solo, &m), CLERK_OK);
    CU_ASSERT_EQUAL(m->n, 1);
    CU_ASSERT(m->n && m->members[0].id == fid && !m->members[0].learner);
    CU_ASSERT(m->n_removed >= 2);
    clerk_members_free(m);
    /* A former member started again is kept out: the survivor goes on
     * alone (it would otherwise follow a higher term). */
    CU_ASSERT(h_node_start(&mc, other) == 0);
    h_sleep_ms(1500);
    CU_ASSERT_EQUAL(clerk_put(solo, "after", 5, "2", 1), CLERK_OK);
    CU_ASSERT_EQUAL_FATAL(clerk_member_list(solo, &m), CLERK_OK);
    CU_ASSERT_EQUAL(m->n, 1);
    CU_ASSERT_EQUAL(m->leader_id, fid);
    clerk_members_free(m);
    clerk_close(solo);
}

/* A one-node cluster (started with a secret) grows: a second voter, and
 * leadership handed to it, needs the first node's peer port (a one-node
 * cluster did not listen on it). */
static void test_member_single_node_grows(void)
{
    struct h_cluster one;
    CU_ASSERT_FATAL(h_cluster_start(&one, 1, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&one, 10000) == 0);
    char ep[64];
    h_node_addr(&one, 0, ep, sizeof ep);
    struct clerk *c1;
    struct clerk_options o = {.deadline_ms = 10000};
    CU_ASSERT_FATAL(clerk_open(&c1, ep, &o) == CLERK_OK);
    CU_ASSERT_EQUAL(clerk_put(c1, "a", 1, "1", 1), CLERK_OK);
    int i = h_node_add(&one);
    CU_ASSERT_FATAL(i == 1);
    char peer[64], addr[64];
    h_node_peer_addr(&one, 1, peer, sizeof peer);
    h_node_addr(&one, 1, addr, sizeof addr);
    CU_ASSERT_EQUAL_FATAL(
        clerk_member_change(c1, CLERK_MEMBER_ADD, 2, peer, addr, NULL),
        CLERK_OK);
    CU_ASSERT_FATAL(h_node_start(&one, 1) == 0);
    int rv;
    uint64_t end = h_now_ms() + 15000;
    do {
        rv = clerk_member_change(c1, CLERK_MEMBER_PROMOTE, 2, NULL, NULL, NULL);
        if (rv == CLERK_UNAVAILABLE) {
            h_sleep_ms(100);
        }
    } while (rv == CLERK_UNAVAILABLE && h_now_ms() < end);
    CU_ASSERT_EQUAL_FATAL(rv, CLERK_OK);
    uint64_t leader = 0;
    CU_ASSERT_EQUAL(clerk_transfer_leader(c1, 2, &leader), CLERK_OK);
    CU_ASSERT_EQUAL(leader, 2);
    CU_ASSERT_EQUAL(clerk_put(c1, "b", 1, "2", 1), CLERK_OK);
    /* A member of a two-member cluster removed: the other goes on alone. */
    CU_ASSERT_EQUAL(
        clerk_member_change(c1, CLERK_MEMBER_REMOVE, 1, NULL, NULL, NULL),
        CLERK_OK);
    CU_ASSERT(h_node_exited(&one, 0, 10000));
    CU_ASSERT_EQUAL(clerk_put(c1, "c", 1, "3", 1), CLERK_OK);
    struct clerk_members *m = NULL;
    CU_ASSERT_EQUAL(clerk_member_list(c1, &m), CLERK_OK);
    CU_ASSERT(m && m->n == 1 && m->members[0].id == 2);
    clerk_members_free(m);
    /* ... and its last voter cannot be removed. */
    CU_ASSERT_EQUAL(
        clerk_member_change(c1, CLERK_MEMBER_REMOVE, 2, NULL, NULL, NULL),
        CLERK_BAD_REQUEST);
    clerk_close(c1);
    one.keep = CU_get_number_of_failures() > 0;
    h_cluster_destroy(&one);
}

/* A node whose data directory belongs to another cluster cannot join:
 * the members refuse it (another cluster id), it never catches up, and its
 * promotion is refused; the cluster goes on. */
static void test_member_node_of_another_cluster_is_refused(void)
{
    int i = h_node_add(&mc);
    CU_ASSERT_FATAL(i >= 0);
    struct h_node *nd = &mc.nodes[i];
    /* Its directory: a one-node cluster of its own, named by its leader. */
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        char id[24], c[64], log[600];
        snprintf(id, sizeof id, "%llu", (unsigned long long)nd->id);
        snprintf(c, sizeof c, "%s=%s:%u", id, nd->host, nd->port);
        snprintf(log, sizeof log, "%s.other", nd->log);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
        }
        execl(KVSERVER_BIN, "kvserver", "--id", id, "--cluster", c,
              "--data-dir", nd->dir, (char *)NULL);
        _exit(127);
    }
    char other_log[600];
    snprintf(other_log, sizeof other_log, "%s.other", nd->log);
    uint64_t end = h_now_ms() + 10000;
    while (!h_file_contains(other_log, "this is cluster") && h_now_ms() < end) {
        h_sleep_ms(50);
    }
    CU_ASSERT(h_file_contains(other_log, "this is cluster"));
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    char peer[64], addr[64];
    h_node_peer_addr(&mc, (size_t)i, peer, sizeof peer);
    h_node_addr(&mc, (size_t)i, addr, sizeof addr);
    CU_ASSERT_EQUAL_FATAL(
        clerk_member_change(ck, CLERK_MEMBER_ADD, nd->id, peer, addr, NULL),
        CLERK_OK);
    CU_ASSERT_FATAL(h_node_start(&mc, (size_t)i) == 0);
    h_sleep_ms(1500);
    CU_ASSERT_EQUAL(
        clerk_member_change(ck, CLERK_MEMBER_PROMOTE, nd->id, NULL, NULL, NULL),
        CLERK_UNAVAILABLE);
    CU_ASSERT(h_log_contains(&mc, (size_t)i, "belongs to cluster"));
    CU_ASSERT(wait_acked(20, 10000));
    CU_ASSERT_EQUAL(
        clerk_member_change(ck, CLERK_MEMBER_REMOVE, nd->id, NULL, NULL, NULL),
        CLERK_OK);
    h_node_kill(&mc, (size_t)i);
}

/* kvctl member: the command a user types. */
static void test_kvctl_member_list_and_usage(void)
{
    char eps[512], cmd[1200];
    h_endpoints(&mc, eps, sizeof eps);
    snprintf(cmd, sizeof cmd, "%s --cluster %s -w json member list", KVCTL_BIN,
             eps);
    FILE *p = popen(cmd, "r");
    CU_ASSERT_FATAL(p != NULL);
    char out[8192] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT(strstr(out, "\"members\"") != NULL);
    CU_ASSERT(strstr(out, "\"removed\"") != NULL);
    snprintf(cmd, sizeof cmd, "%s --cluster %s member add x y z 2>/dev/null",
             KVCTL_BIN, eps);
    st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 2); /* usage */
}

/* A TCP socket on 127.0.0.1 with a port the kernel picked (listening when
 * @listening); its port in *port. */
static int grab_port(bool listening, uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        (listening && listen(fd, 4) != 0) ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static bool accepts_on(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* A first start that fails (its port is taken) leaves the data directory
 * unclaimed: started again with corrected flags (another id), the node
 * takes it. And --listen 0.0.0.0:PORT binds every address while
 * --cluster names the one to reach it at. */
static void test_identity_a_failed_first_start_leaves_the_directory_free(void)
{
    char dir[600], cmd[1600];
    snprintf(dir, sizeof dir, "%s/fresh", mc.root);
    uint16_t taken, free_p;
    int hold = grab_port(true, &taken);
    CU_ASSERT_FATAL(hold >= 0);
    snprintf(cmd, sizeof cmd,
             "%s --id 7 --cluster 7=127.0.0.1:%u --data-dir %s "
             ">%s/fresh.log 2>&1",
             KVSERVER_BIN, taken, dir, mc.root);
    int st = system(cmd);
    close(hold);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    int tmp = grab_port(false, &free_p);
    CU_ASSERT_FATAL(tmp >= 0);
    close(tmp);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        char c[64], l[64];
        snprintf(c, sizeof c, "8=127.0.0.1:%u", free_p);
        snprintf(l, sizeof l, "0.0.0.0:%u", free_p);
        execl(KVSERVER_BIN, "kvserver", "--id", "8", "--cluster", c, "--listen",
              l, "--data-dir", dir, (char *)NULL);
        _exit(127);
    }
    bool up = false;
    for (int i = 0; i < 500 && !up; i++) {
        up = accepts_on(free_p);
        if (!up) {
            h_sleep_ms(10);
        }
    }
    CU_ASSERT(up);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_member_grow_from_three_to_five",
         test_member_grow_from_three_to_five},
        {"test_member_add_refuses_bad_requests",
         test_member_add_refuses_bad_requests},
        {"test_member_remove_the_leader_it_hands_off_and_stops",
         test_member_remove_the_leader_it_hands_off_and_stops},
        {"test_member_remove_a_follower_it_stops_by_itself",
         test_member_remove_a_follower_it_stops_by_itself},
        {"test_member_replace_a_failed_host",
         test_member_replace_a_failed_host},
        {"test_member_update_moves_a_node_to_new_ports",
         test_member_update_moves_a_node_to_new_ports},
        {"test_kvctl_member_list_and_usage", test_kvctl_member_list_and_usage},
        {"test_member_single_node_grows", test_member_single_node_grows},
        {"test_member_node_of_another_cluster_is_refused",
         test_member_node_of_another_cluster_is_refused},
        {"test_identity_a_failed_first_start_leaves_the_directory_free",
         test_identity_a_failed_first_start_leaves_the_directory_free},
        {"test_member_every_acknowledged_write_is_there",
         test_member_every_acknowledged_write_is_there},
        {"test_member_force_new_cluster_on_a_survivor",
         test_member_force_new_cluster_on_a_survivor},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"membership", setup, teardown, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
