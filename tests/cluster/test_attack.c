/* test_attack.c: an outsider who can reach a node's ports, and a member
 * that misbehaves: forged Raft messages of every kind, impersonation,
 * TimeoutNow floods, connection floods. After each, the data is unchanged,
 * every replica holds the same, and the cluster still serves. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <proto/admin.pb-c.h>
#include <proto/raft.pb-c.h>
#include <rpc/rpc.h>

#include "cunit_main.h"
#include "harness.h"

#define OK                   RAFTKV__KV_ERROR__KV_OK
#define FAILED_SINCE(before) (CU_get_number_of_failures() > (before))
#define KEYS                 20

/* ------------------------------------------------------------- helpers */

struct view
{
    bool ok;
    uint64_t term, leader, commit, cluster_id;
};

static void on_status(const Raftkv__StatusReply *r, void *data)
{
    struct view *v = data;
    if (r) {
        v->ok = true;
        v->term = r->term;
        v->leader = r->leader_id;
        v->commit = r->commit_index;
        v->cluster_id = r->cluster_id;
    }
}

static struct view status_of(struct h_cluster *c, size_t i)
{
    struct view v = {0};
    struct rpc_channel_options o = {.deadline_ms = 5000, .tls = c->client_tls};
    struct rpc_channel *ch =
        rpc_channel_new_blocking(c->nodes[i].host, c->nodes[i].port, &o);
    if (ch) {
        Raftkv__StatusArgs a = RAFTKV__STATUS_ARGS__INIT;
        raftkv__admin_service__status(
            rpc_channel_service(ch, &raftkv__admin_service__descriptor), &a,
            on_status, &v);
        rpc_channel_free(ch);
    }
    return v;
}

/* A cluster with KEYS keys written: k0..k19 = v0..v19. */
static void start_with_data(struct h_cluster *c,
                            struct h_client *cl,
                            bool distinct_hosts)
{
    struct h_start o = {.distinct_hosts = distinct_hosts};
    CU_ASSERT_FATAL(h_cluster_start_with(c, 3, NULL, &o) == 0);
    CU_ASSERT_FATAL(h_find_leader(c, 10000) >= 0);
    CU_ASSERT_FATAL(h_client_open(cl, c, cunit_seed()) == 0);
    for (int i = 0; i < KEYS; i++) {
        char k[16], v[16];
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "v%d", i);
        CU_ASSERT_EQUAL_FATAL(h_put(cl, k, v, strlen(v)).err, OK);
    }
}

/* Every node holds exactly k_i = v_i (and nothing the attacks wrote), and
 * the cluster still takes a write that every node then holds. */
static void check_intact(struct h_cluster *c, struct h_client *cl)
{
    static int round;
    char probe[32];
    snprintf(probe, sizeof probe, "after-%d", round++);
    CU_ASSERT_EQUAL(h_put(cl, probe, "ok", 2).err, OK);
    for (size_t n = 0; n < c->n; n++) {
        bool caught_up = false;
        for (int t = 0; t < 200 && !caught_up; t++) {
            struct h_result r = h_get(cl, probe, true, n);
            caught_up = r.err == OK && r.value && !strcmp(r.value, "ok");
            h_result_free(&r);
            if (!caught_up) {
                h_sleep_ms(50);
            }
        }
        CU_ASSERT(caught_up);
        for (int i = 0; i < KEYS; i++) {
            char k[16], v[16];
            snprintf(k, sizeof k, "k%d", i);
            snprintf(v, sizeof v, "v%d", i);
            struct h_result r = h_get(cl, k, true, n);
            CU_ASSERT(r.err == OK && r.value && !strcmp(r.value, v));
            h_result_free(&r);
        }
        struct h_result r = h_get(cl, "forged", true, n);
        CU_ASSERT_EQUAL(r.err, RAFTKV__KV_ERROR__KV_NOT_FOUND);
        h_result_free(&r);
    }
}

/* A cluster with data, its leader, and two followers: f, which the
 * attacks aim at, and g, whose name a misbehaving member uses. */
struct scene
{
    struct h_cluster c;
    struct h_client cl;
    size_t leader, f, g;
    struct view v; /* f's status at the start */
    unsigned failures_at_start;
};

static void scene_start(struct scene *s, bool distinct_hosts)
{
    s->failures_at_start = CU_get_number_of_failures();
    start_with_data(&s->c, &s->cl, distinct_hosts);
    int leader = h_find_leader(&s->c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    s->leader = (size_t)leader;
    s->f = (s->leader + 1) % s->c.n;
    s->g = (s->leader + 2) % s->c.n;
    s->v = status_of(&s->c, s->f);
}

/* Every replica intact and the cluster writing; then tear down. */
static void scene_end(struct scene *s)
{
    check_intact(&s->c, &s->cl);
    h_client_close(&s->cl);
    s->c.keep = FAILED_SINCE(s->failures_at_start);
    h_cluster_destroy(&s->c);
}

/* A Put of forged=x, packed as a log entry. */
static size_t forged_put(uint8_t *buf, const char *key)
{
    uint8_t cid[16] = {0xee};
    Raftkv__PutAppendArgs p = RAFTKV__PUT_APPEND_ARGS__INIT;
    p.key.data = (uint8_t *)key;
    p.key.len = strlen(key);
    p.value.data = (uint8_t *)"x";
    p.value.len = 1;
    p.client_id.data = cid;
    p.client_id.len = 16;
    p.request_id = 1;
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_PUT_APPEND;
    cmd.put_append = &p;
    return raftkv__command__pack(&cmd, buf);
}

struct outcome
{
    bool replied;
    int status;
    char error[300];
};

static void on_any(const ProtobufCMessage *m, void *data)
{
    struct outcome *o = data;
    o->replied = m != NULL;
    o->status = m ? RPC_OK : rpc_last_status();
    snprintf(o->error, sizeof o->error, "%s", m ? "" : rpc_last_error());
}

/* Send one forged message of each Raft kind on ch, claiming to be
 * member `from` to node `to` at term `term`. */
static void forge_all(struct rpc_channel *ch,
                      uint64_t cluster_id,
                      uint64_t from,
                      uint64_t to,
                      uint64_t term,
                      struct outcome out[4])
{
    ProtobufCService *svc =
        rpc_channel_service(ch, &raftkv__raft_service__descriptor);
    uint8_t buf[128];
    Raftkv__Entry e = RAFTKV__ENTRY__INIT, *ep = &e;
    e.term = term;
    e.index = 1;
    e.data.data = buf;
    e.data.len = forged_put(buf, "forged");
    Raftkv__AppendEntriesArgs ae = RAFTKV__APPEND_ENTRIES_ARGS__INIT;
    ae.cluster_id = cluster_id;
    ae.from = from;
    ae.to = to;
    ae.term = term;
    ae.entries = &ep;
    ae.n_entries = 1;
    ae.leader_commit = 1;
    raftkv__raft_service__append_entries(
        svc, &ae, (Raftkv__AppendEntriesReply_Closure)on_any, &out[0]);
    Raftkv__RequestVoteArgs rv = RAFTKV__REQUEST_VOTE_ARGS__INIT;
    rv.cluster_id = cluster_id;
    rv.from = from;
    rv.to = to;
    rv.term = term;
    rv.last_log_index = 1u << 30;
    rv.last_log_term = term;
    rv.leader_transfer = true;
    raftkv__raft_service__request_vote(
        svc, &rv, (Raftkv__RequestVoteReply_Closure)on_any, &out[1]);
    Raftkv__InstallSnapshotArgs is = RAFTKV__INSTALL_SNAPSHOT_ARGS__INIT;
    is.cluster_id = cluster_id;
    is.from = from;
    is.to = to;
    is.term = term;
    is.last_included_index = 1u << 20;
    is.last_included_term = term;
    is.data.data = (uint8_t *)"RKVSNAP2 garbage";
    is.data.len = 16;
    is.done = true;
    is.crc32c = rpc_crc32c(0, is.data.data, is.data.len);
    raftkv__raft_service__install_snapshot(
        svc, &is, (Raftkv__InstallSnapshotReply_Closure)on_any, &out[2]);
    Raftkv__TimeoutNowArgs tn = RAFTKV__TIMEOUT_NOW_ARGS__INIT;
    tn.cluster_id = cluster_id;
    tn.from = from;
    tn.to = to;
    tn.term = term;
    raftkv__raft_service__timeout_now(
        svc, &tn, (Raftkv__TimeoutNowReply_Closure)on_any, &out[3]);
}

static double metric(struct h_cluster *c, size_t i, const char *name)
{
    static char body[1 << 20];
    if (h_http_get(c, i, "GET", "/metrics", body, sizeof body) != 200) {
        return -1;
    }
    return h_metric(body, name);
}

/* ------------------------------------------------------------------ tests */

/* RaftService is not served on the client port at all. */
static void test_attack_raft_calls_on_the_client_port_are_unknown(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    struct h_client cl;
    start_with_data(&c, &cl, false);
    struct view v = status_of(&c, 0);
    for (size_t i = 0; i < c.n; i++) {
        struct rpc_channel_options o = {.deadline_ms = 5000};
        struct rpc_channel *ch =
            rpc_channel_new_blocking(c.nodes[i].host, c.nodes[i].port, &o);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
        struct outcome out[4] = {{0}};
        forge_all(ch, v.cluster_id, c.nodes[(i + 1) % c.n].id, c.nodes[i].id,
                  v.term + 1, out);
        for (int k = 0; k < 4; k++) {
            CU_ASSERT_FALSE(out[k].replied);
            CU_ASSERT_EQUAL(out[k].status, RPC_E_UNKNOWN_SERVICE);
        }
        rpc_channel_free(ch);
    }
    CU_ASSERT_EQUAL(status_of(&c, 0).term, v.term);
    check_intact(&c, &cl);
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* On the peer port, nothing is read but the handshake until the caller
 * proves it holds the secret: forged messages with another secret, and
 * frames sent without a handshake, do nothing. */
static void test_attack_peer_port_refuses_who_lacks_the_secret(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    struct h_client cl;
    start_with_data(&c, &cl, false);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct view v = status_of(&c, (size_t)leader);
    struct rpc_peer_auth wrong = {.self_id = 0};
    for (size_t k = 0; k < sizeof wrong.key; k++) {
        wrong.key[k] = (uint8_t)(k * 7 + 1);
    }
    for (size_t i = 0; i < c.n; i++) {
        /* Another secret, claiming to be each other member. */
        wrong.self_id = c.nodes[(i + 1) % c.n].id;
        wrong.cluster_id = v.cluster_id;
        struct rpc_channel_options o = {
            .deadline_ms = 3000,
            .connect_timeout_ms = 3000,
            .peer_auth = &wrong,
            .peer_id = c.nodes[i].id,
        };
        struct rpc_channel *ch =
            rpc_channel_new_blocking(c.nodes[i].host, c.nodes[i].peer_port, &o);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
        struct outcome out[4] = {{0}};
        forge_all(ch, v.cluster_id, wrong.self_id, c.nodes[i].id, v.term + 1,
                  out);
        for (int k = 0; k < 4; k++) {
            CU_ASSERT_FALSE(out[k].replied);
        }
        rpc_channel_free(ch);
        /* Frames without any handshake: the bytes are a bad hello. */
        struct rpc_channel_options plain = {.deadline_ms = 3000};
        ch = rpc_channel_new_blocking(c.nodes[i].host, c.nodes[i].peer_port,
                                      &plain);
        forge_all(ch, v.cluster_id, wrong.self_id, c.nodes[i].id, v.term + 1,
                  out);
        for (int k = 0; k < 4; k++) {
            CU_ASSERT_FALSE(out[k].replied);
        }
        rpc_channel_free(ch);
    }
    for (size_t i = 0; i < c.n; i++) {
        CU_ASSERT(metric(&c, i, "raftkv_peer_handshakes_failed_total") >= 2);
        CU_ASSERT(h_log_contains(&c, i, "this cluster's secret"));
    }
    struct view after = status_of(&c, (size_t)leader);
    CU_ASSERT_EQUAL(after.term, v.term);
    CU_ASSERT_EQUAL(after.leader, v.leader);
    check_intact(&c, &cl);
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* A member holds the secret, but may only speak for itself. */
static void test_attack_member_cannot_speak_for_another(void)
{
    struct scene sc;
    scene_start(&sc, false);
    /* Node g's connection, messages in the leader's name. */
    struct rpc_channel *ch = h_peer_channel(&sc.c, sc.f, sc.g, 3000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    struct outcome out[4] = {{0}};
    forge_all(ch, sc.v.cluster_id, sc.c.nodes[sc.leader].id,
              sc.c.nodes[sc.f].id, sc.v.term, out);
    for (int k = 0; k < 4; k++) {
        CU_ASSERT_FALSE(out[k].replied);
        CU_ASSERT_EQUAL(out[k].status, RPC_E_BAD_REQUEST);
    }
    rpc_channel_free(ch);
    CU_ASSERT(h_log_contains(&sc.c, sc.f, "the connection proved node"));
    CU_ASSERT_EQUAL(status_of(&sc.c, sc.f).term, sc.v.term);
    scene_end(&sc);
}

/* A million empty entries in one AppendEntries (2 MB on the wire, far
 * more unpacked) are refused before anything is unpacked. */
static void test_attack_append_with_a_million_entries_is_refused_packed(void)
{
    struct scene sc;
    scene_start(&sc, false);
    struct rpc_channel *ch = h_peer_channel(&sc.c, sc.f, sc.g, 5000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    size_t n = 1000000;
    Raftkv__Entry *entries = calloc(n, sizeof *entries);
    Raftkv__Entry **ptrs = calloc(n, sizeof *ptrs);
    CU_ASSERT_FATAL(entries && ptrs);
    for (size_t k = 0; k < n; k++) {
        raftkv__entry__init(&entries[k]);
        ptrs[k] = &entries[k];
    }
    Raftkv__AppendEntriesArgs ae = RAFTKV__APPEND_ENTRIES_ARGS__INIT;
    ae.cluster_id = sc.v.cluster_id;
    ae.from = sc.c.nodes[sc.g].id;
    ae.to = sc.c.nodes[sc.f].id;
    ae.term = sc.v.term;
    ae.entries = ptrs;
    ae.n_entries = n;
    struct outcome o = {0};
    raftkv__raft_service__append_entries(
        rpc_channel_service(ch, &raftkv__raft_service__descriptor), &ae,
        (Raftkv__AppendEntriesReply_Closure)on_any, &o);
    CU_ASSERT_FALSE(o.replied);
    CU_ASSERT_EQUAL(o.status, RPC_E_BAD_REQUEST);
    CU_ASSERT(strstr(o.error, "1000000 entries") != NULL);
    free(entries);
    free(ptrs);
    rpc_channel_free(ch);
    CU_ASSERT_EQUAL(status_of(&sc.c, sc.f).term, sc.v.term);
    scene_end(&sc);
}

/* TimeoutNow from a member that is not the leader, over and over, does
 * not start elections. */
static void test_attack_timeout_now_flood_does_not_move_leadership(void)
{
    struct scene sc;
    scene_start(&sc, false);
    struct rpc_channel *ch = h_peer_channel(&sc.c, sc.f, sc.g, 3000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    ProtobufCService *svc =
        rpc_channel_service(ch, &raftkv__raft_service__descriptor);
    int answered = 0;
    for (int k = 0; k < 500; k++) {
        Raftkv__TimeoutNowArgs tn = RAFTKV__TIMEOUT_NOW_ARGS__INIT;
        tn.cluster_id = sc.v.cluster_id;
        tn.from = sc.c.nodes[sc.g].id;
        tn.to = sc.c.nodes[sc.f].id;
        tn.term = sc.v.term + (k % 2); /* this term, and the next */
        struct outcome o = {0};
        raftkv__raft_service__timeout_now(
            svc, &tn, (Raftkv__TimeoutNowReply_Closure)on_any, &o);
        answered += o.replied;
    }
    CU_ASSERT(answered > 0);
    rpc_channel_free(ch);
    h_sleep_ms(300);
    CU_ASSERT_EQUAL(h_find_leader(&sc.c, 5000), (int)sc.leader);
    CU_ASSERT_EQUAL(status_of(&sc.c, sc.leader).term, sc.v.term);
    CU_ASSERT_EQUAL(status_of(&sc.c, sc.f).term, sc.v.term);
    scene_end(&sc);
}

/* Holds connections to one port open from 127.0.0.1, reopening those the
 * node closes, until told to stop. */
struct flood
{
    const char *src; /* source address */
    const char *host;
    uint16_t port;
    int want;
    volatile bool stop;
    int opened;
};

static int connect_nb(const char *src_addr, const char *host, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    struct sockaddr_in src = {.sin_family = AF_INET};
    inet_pton(AF_INET, src_addr, &src.sin_addr);
    bind(fd, (struct sockaddr *)&src, sizeof src);
    connect(fd, (struct sockaddr *)&sa, sizeof sa);
    return fd;
}

static void *flood_main(void *arg)
{
    struct flood *fl = arg;
    int fds[512];
    int n = fl->want < 512 ? fl->want : 512;
    for (int i = 0; i < n; i++) {
        fds[i] = connect_nb(fl->src, fl->host, fl->port);
        fl->opened++;
    }
    while (!fl->stop) {
        for (int i = 0; i < n; i++) {
            char b[256];
            ssize_t r = recv(fds[i], b, sizeof b, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                           errno != ENOTCONN)) {
                close(fds[i]);
                fds[i] = connect_nb(fl->src, fl->host, fl->port);
                fl->opened++;
            }
        }
        usleep(20000);
    }
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }
    return NULL;
}

/* An outsider keeps the leader's peer port full of connections that never
 * finish the handshake: a follower restarted meanwhile still gets in,
 * catches up, and writes go on. (The nodes are on addresses of their own,
 * the flood comes from 127.0.0.1.) */
static void test_attack_handshake_flood_does_not_keep_members_out(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    struct h_client cl;
    start_with_data(&c, &cl, true);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    size_t f = (size_t)(leader + 1) % c.n;
    struct flood fl = {.src = "127.0.0.1",
                       .host = c.nodes[leader].host,
                       .port = c.nodes[leader].peer_port,
                       .want = 300};
    struct flood fl2 = {.src = "127.0.0.1",
                        .host = c.nodes[f].host,
                        .port = c.nodes[f].peer_port,
                        .want = 300};
    pthread_t t, t2;
    pthread_create(&t, NULL, flood_main, &fl);
    pthread_create(&t2, NULL, flood_main, &fl2);
    h_sleep_ms(500);
    h_node_kill(&c, f);
    CU_ASSERT(h_put(&cl, "during", "flood", 5).err == OK);
    CU_ASSERT_EQUAL(h_node_start(&c, f), 0);
    bool caught_up = false;
    for (int k = 0; k < 200 && !caught_up; k++) {
        struct h_result r = h_get(&cl, "during", true, f);
        caught_up = r.err == OK && r.value && !strcmp(r.value, "flood");
        h_result_free(&r);
        if (!caught_up) {
            h_sleep_ms(50);
        }
    }
    CU_ASSERT(caught_up);
    fl.stop = fl2.stop = true;
    pthread_join(t, NULL);
    pthread_join(t2, NULL);
    CU_ASSERT(fl.opened > 300); /* the node closed and we reopened */
    CU_ASSERT(metric(&c, (size_t)leader, "raftkv_rpc_peer_connections") <=
              8 * 3 + 16);
    check_intact(&c, &cl);
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* One address cannot take every client slot. */
static void test_attack_client_flood_from_one_address_is_capped(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    struct h_start o = {.distinct_hosts = true};
    CU_ASSERT_FATAL(h_cluster_start_with(
                        &c, 3, "--max-connections-per-source 50", &o) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct flood fl = {.src = "127.0.0.99",
                       .host = c.nodes[leader].host,
                       .port = c.nodes[leader].port,
                       .want = 200};
    pthread_t t;
    pthread_create(&t, NULL, flood_main, &fl);
    h_sleep_ms(1000);
    /* A client from another address (127.0.0.1) is served. */
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed()) == 0);
    CU_ASSERT_EQUAL(h_put(&cl, "k", "v", 1).err, OK);
    double open = metric(&c, (size_t)leader, "raftkv_rpc_connections");
    CU_ASSERT(open > 0 && open <= 60);
    CU_ASSERT(metric(&c, (size_t)leader,
                     "raftkv_rpc_refused_connections_total") >= 100);
    fl.stop = true;
    pthread_join(t, NULL);
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* A TLS cluster (clients and peers): it serves, a follower restarted
 * catches up over mutual TLS, plaintext gets nothing from either port,
 * and SIGHUP reloads the certificates without dropping the cluster. */
static void test_tls_cluster_serves_over_tls_and_refuses_plaintext(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    struct h_start o = {.tls = true};
    CU_ASSERT_FATAL(h_cluster_start_with(&c, 3, NULL, &o) == 0);
    int leader = h_find_leader(&c, 15000);
    CU_ASSERT_FATAL(leader >= 0);
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed()) == 0);
    CU_ASSERT_EQUAL(h_put(&cl, "secret", "value", 5).err, OK);
    size_t f = (size_t)(leader + 1) % c.n;
    h_node_kill(&c, f);
    CU_ASSERT_EQUAL(h_put(&cl, "while", "down", 4).err, OK);
    CU_ASSERT_EQUAL(h_node_start(&c, f), 0);
    bool caught_up = false;
    for (int k = 0; k < 200 && !caught_up; k++) {
        struct h_result r = h_get(&cl, "while", true, f);
        caught_up = r.err == OK && r.value && !strcmp(r.value, "down");
        h_result_free(&r);
        if (!caught_up) {
            h_sleep_ms(50);
        }
    }
    CU_ASSERT(caught_up);
    /* Plaintext on the client port: no answer. */
    struct rpc_channel_options po = {.deadline_ms = 2000,
                                     .connect_timeout_ms = 2000};
    struct rpc_channel *ch = rpc_channel_new_blocking(
        c.nodes[leader].host, c.nodes[leader].port, &po);
    struct outcome out = {0};
    Raftkv__StatusArgs sa = RAFTKV__STATUS_ARGS__INIT;
    raftkv__admin_service__status(
        rpc_channel_service(ch, &raftkv__admin_service__descriptor), &sa,
        (Raftkv__StatusReply_Closure)on_any, &out);
    CU_ASSERT_FALSE(out.replied);
    rpc_channel_free(ch);
    /* The secret without a certificate on the peer port: nothing. */
    c.as_member[0].self_id = c.nodes[0].id;
    struct rpc_tls *keep = c.peer_tls;
    c.peer_tls = NULL;
    ch = h_peer_channel(&c, f, (f + 1) % c.n, 2000);
    struct outcome outs[4] = {{0}};
    struct view v = status_of(&c, f);
    CU_ASSERT(v.ok); /* over TLS, as a client */
    forge_all(ch, v.cluster_id, c.nodes[(f + 1) % c.n].id, c.nodes[f].id,
              v.term + 1, outs);
    for (int k = 0; k < 4; k++) {
        CU_ASSERT_FALSE(outs[k].replied);
    }
    rpc_channel_free(ch);
    c.peer_tls = keep;
    /* SIGHUP: certificates reloaded, the cluster goes on. */
    for (size_t i = 0; i < c.n; i++) {
        kill(c.nodes[i].pid, SIGHUP);
    }
    bool reloaded = false;
    for (int k = 0; k < 100 && !reloaded; k++) {
        h_sleep_ms(50);
        reloaded = true;
        for (size_t i = 0; i < c.n; i++) {
            reloaded &= h_log_contains(&c, i, "reloaded 3 TLS contexts");
        }
    }
    CU_ASSERT(reloaded);
    CU_ASSERT_EQUAL(h_put(&cl, "after", "hup", 3).err, OK);
    struct h_result r = h_get(&cl, "secret", false, 0);
    CU_ASSERT(r.err == OK && r.value && !strcmp(r.value, "value"));
    h_result_free(&r);
    /* The node says how it serves. */
    CU_ASSERT(h_log_contains(&c, (size_t)leader, "(TLS)"));
    CU_ASSERT(h_log_contains(&c, (size_t)leader, "mutual TLS + secret"));
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

int main(int argc, char **argv)
{
    rpc_log_set_level(RPC_LOG_ERROR);
    static CU_TestInfo tests[] = {
        {"test_attack_raft_calls_on_the_client_port_are_unknown",
         test_attack_raft_calls_on_the_client_port_are_unknown},
        {"test_attack_peer_port_refuses_who_lacks_the_secret",
         test_attack_peer_port_refuses_who_lacks_the_secret},
        {"test_attack_member_cannot_speak_for_another",
         test_attack_member_cannot_speak_for_another},
        {"test_attack_append_with_a_million_entries_is_refused_packed",
         test_attack_append_with_a_million_entries_is_refused_packed},
        {"test_attack_timeout_now_flood_does_not_move_leadership",
         test_attack_timeout_now_flood_does_not_move_leadership},
        {"test_attack_handshake_flood_does_not_keep_members_out",
         test_attack_handshake_flood_does_not_keep_members_out},
        {"test_attack_client_flood_from_one_address_is_capped",
         test_attack_client_flood_from_one_address_is_capped},
        {"test_tls_cluster_serves_over_tls_and_refuses_plaintext",
         test_tls_cluster_serves_over_tls_and_refuses_plaintext},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"attack", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
