/* test_peerauth.c: the peer handshake: who gets in, who is refused, and
 * that nothing reaches a handler before the handshake. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <event2/event.h>

#include "cunit_main.h"
#include "echo_loop.h"
#include "peerauth.h" /* rpc/src: to play a client by hand */
#include "rpc/rpc.h"

#define SOON_MS 10000

static struct echo_local local;
static struct rpc_peer_auth server_auth;

static const ProtobufCServiceDescriptor *echo_desc =
    &raftkv__test__echo_service__descriptor;

static bool allow_not_seven(uint64_t id, void *arg)
{
    (void)arg;
    return id != 7;
}

static void fill_auth(struct rpc_peer_auth *a, uint8_t fill, uint64_t self)
{
    memset(a, 0, sizeof *a);
    memset(a->key, fill, sizeof a->key);
    a->self_id = self;
}

/* A server that is node 2 with key 0x11.. and refuses node 7. */
static void start(uint32_t max_per_peer, uint32_t handshake_ms)
{
    fill_auth(&server_auth, 0x11, 2);
    server_auth.cluster_id = 0xc1;
    server_auth.allow = allow_not_seven;
    struct rpc_server_options o = {
        .peer_auth = &server_auth,
        .max_per_peer = max_per_peer,
        .handshake_ms = handshake_ms,
    };
    CU_ASSERT_FATAL(echo_local_start(&local, &o) == 0);
}

static void stop(void)
{
    echo_local_stop(&local);
}

static struct rpc_channel *channel_as(const struct rpc_peer_auth *a,
                                      uint64_t to)
{
    struct rpc_channel_options o = {
        .peer_auth = a,
        .peer_id = to,
        .connect_timeout_ms = 2000,
        .backoff_max_ms = 50,
    };
    return rpc_channel_new(local.base, "127.0.0.1", local.port, &o);
}

/* One Echo call on ch; returns its result. */
static struct echo_result call(struct rpc_channel *ch, const char *payload)
{
    struct echo_result r = {0};
    echo_call(rpc_channel_service(ch, echo_desc), ECHO_M_ECHO, payload, 0, &r);
    loop_run_until(local.base, &r.done, 1, SOON_MS);
    return r;
}

static struct rpc_server_stats stats(void)
{
    struct rpc_server_stats st;
    rpc_server_get_stats(local.server, &st);
    return st;
}

static void test_peerauth_member_with_the_key_gets_in_as_its_id(void)
{
    start(0, 0);
    struct rpc_peer_auth a;
    fill_auth(&a, 0x11, 3);
    a.cluster_id = 0xc1;
    struct rpc_channel *ch = channel_as(&a, 2);
    struct echo_result r = call(ch, "peerid");
    CU_ASSERT_EQUAL(r.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r.payload, "3");
    r = call(ch, "again");
    CU_ASSERT_STRING_EQUAL(r.payload, "again");
    CU_ASSERT_EQUAL(stats().handshakes_failed, 0);
    /* A node whose cluster id is not known yet (0) is let in too. */
    struct rpc_peer_auth fresh;
    fill_auth(&fresh, 0x11, 4);
    struct rpc_channel *ch2 = channel_as(&fresh, 2);
    r = call(ch2, "peerid");
    CU_ASSERT_STRING_EQUAL(r.payload, "4");
    rpc_channel_free(ch);
    rpc_channel_free(ch2);
    stop();
}

/* A channel that cannot get in: the call fails, no handler ran, and the
 * error says why. */
static void expect_refused(const struct rpc_peer_auth *a,
                           uint64_t to,
                           const char *why)
{
    uint64_t before = local.echo.calls;
    struct rpc_channel *ch = channel_as(a, to);
    struct echo_result r = call(ch, "peerid");
    CU_ASSERT_EQUAL(r.done, 1);
    CU_ASSERT_EQUAL(r.status, RPC_E_UNAVAILABLE);
    if (!strstr(r.error, why)) {
        fprintf(stderr, "\nerror '%s' does not say '%s'\n", r.error, why);
        CU_FAIL("the error does not say why");
    }
    CU_ASSERT_EQUAL(local.echo.calls, before);
    rpc_channel_free(ch);
}

static void test_peerauth_wrong_key_id_or_cluster_is_refused_before_any_call(
    void)
{
    start(0, 0);
    struct rpc_peer_auth a;
    fill_auth(&a, 0x22, 3); /* another secret */
    a.cluster_id = 0xc1;
    expect_refused(&a, 2, "secret");
    fill_auth(&a, 0x11, 7); /* not admitted */
    expect_refused(&a, 2, "not a member");
    fill_auth(&a, 0x11, 3);
    expect_refused(&a, 5, "not this node's id"); /* wants node 5 */
    a.cluster_id = 0xc2;                         /* another cluster */
    expect_refused(&a, 2, "cluster 00000000000000c1");
    fill_auth(&a, 0x11, 2); /* claims the server's own id */
    expect_refused(&a, 2, "not a member");
    CU_ASSERT(stats().handshakes_failed >= 4);
    stop();
}

static int refused_calls;   /* the refused callback's runs */
static uint64_t refused_by; /* the server it named last */

static void on_refused(uint64_t server_id, void *arg)
{
    (void)arg;
    refused_calls++;
    refused_by = server_id;
}

/* An id the server does not admit (for kvserver: removed from the cluster
 * for good) is refused once both ends proved the key, so that the node
 * refused can believe it and stop: its refused callback runs, naming the
 * server. A refusal that comes before the server proved anything (the
 * server's own id claimed) or from a server that does not prove the key
 * does not run it. */
static void test_peerauth_a_refused_id_learns_it_from_a_proven_server(void)
{
    start(0, 0);
    struct rpc_peer_auth a;
    fill_auth(&a, 0x11, 7);
    a.refused = on_refused;
    refused_calls = 0;
    expect_refused(&a, 2, "not a member");
    CU_ASSERT(refused_calls >= 1);
    CU_ASSERT_EQUAL(refused_by, 2);
    refused_calls = 0;
    fill_auth(&a, 0x22, 7); /* another key: the server's proof fails */
    a.refused = on_refused;
    expect_refused(&a, 2, "secret");
    fill_auth(&a, 0x11, 2); /* the server's own id: refused at once */
    a.refused = on_refused;
    expect_refused(&a, 2, "not a member");
    CU_ASSERT_EQUAL(refused_calls, 0);
    stop();
}

/* A server closes the connections of a peer id on demand (a node removed
 * from the cluster: it must handshake again); the channel connects again
 * at its next call. */
static void test_peerauth_server_drops_the_connections_of_a_peer_id(void)
{
    start(0, 0);
    struct rpc_peer_auth a;
    fill_auth(&a, 0x11, 3);
    struct rpc_channel *ch = channel_as(&a, 2);
    CU_ASSERT_EQUAL(call(ch, "peerid").status, RPC_OK);
    CU_ASSERT_EQUAL(rpc_server_drop_peer(local.server, 9), 0);
    CU_ASSERT_EQUAL(rpc_server_drop_peer(local.server, 3), 1);
    CU_ASSERT_EQUAL(rpc_server_drop_peer(local.server, 3), 0);
    struct echo_result r = call(ch, "peerid");
    for (int i = 0; i < 50 && r.status != RPC_OK; i++) {
        r = call(ch, "peerid"); /* (a call may meet the closed one) */
    }
    CU_ASSERT_EQUAL(r.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r.payload, "3");
    rpc_channel_free(ch);
    stop();
}

static int raw_connect(uint16_t p)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(p)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* Read exactly n bytes from a raw socket, running the loop meanwhile;
 * false on EOF or timeout. */
static bool raw_read(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    uint64_t end = test_now_ms() + SOON_MS;
    while (got < n && test_now_ms() < end) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            return false;
        }
        if (r > 0) {
            got += (size_t)r;
        } else {
            loop_run_for(local.base, 5);
        }
    }
    return got == n;
}

static bool raw_closed(int fd)
{
    uint64_t end = test_now_ms() + SOON_MS;
    while (test_now_ms() < end) {
        char b[256];
        ssize_t r = recv(fd, b, sizeof b, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            return true;
        }
        loop_run_for(local.base, 5);
    }
    return false;
}

static void test_peerauth_frames_before_the_handshake_never_reach_a_handler(
    void)
{
    start(0, 0);
    /* A well-formed Echo request sent as if no handshake existed. */
    Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
    hdr.service_name = (char *)echo_desc->name;
    hdr.method_name = "Echo";
    hdr.call_id = 1;
    Raftkv__Test__EchoArgs args = RAFTKV__TEST__ECHO_ARGS__INIT;
    struct rpc_frame_plan plan;
    CU_ASSERT_FATAL(rpc_frame_plan(&hdr, &args.base, NULL, &plan) == 0);
    uint8_t frame[512];
    rpc_frame_pack(&hdr, &args.base, &plan, frame);
    for (int i = 0; i < 4; i++) { /* well over a hello's 64 bytes */
        memcpy(frame + plan.total * (size_t)i, frame, plan.total);
    }
    int fd = raw_connect(local.port);
    CU_ASSERT(write(fd, frame, plan.total * 4) == (ssize_t)(plan.total * 4));
    CU_ASSERT(raw_closed(fd));
    CU_ASSERT_EQUAL(local.echo.calls, 0);
    CU_ASSERT_EQUAL(stats().handshakes_failed, 1);
    close(fd);
    stop();
}

static void test_peerauth_recorded_handshake_cannot_be_replayed(void)
{
    start(0, 0);
    struct rpc_peer_auth a;
    fill_auth(&a, 0x11, 3);
    /* A genuine handshake, by hand: record what the client sent. */
    struct rpc_peer_hs hs;
    uint8_t hello[RPC_PEER_HELLO_SIZE], answer[RPC_PEER_ANSWER_SIZE];
    uint8_t proof[RPC_PEER_PROOF_SIZE], result[RPC_PEER_RESULT_SIZE];
    char why[300];
    CU_ASSERT_FATAL(rpc_peer_hello(&hs, &a, 2, hello) == 0);
    int fd = raw_connect(local.port);
    CU_ASSERT(write(fd, hello, sizeof hello) == (ssize_t)sizeof hello);
    CU_ASSERT_FATAL(raw_read(fd, answer, sizeof answer));
    CU_ASSERT_EQUAL_FATAL(
        rpc_peer_check_answer(&hs, &a, answer, proof, why, sizeof why),
        RPC_PEER_OK);
    CU_ASSERT(write(fd, proof, sizeof proof) == (ssize_t)sizeof proof);
    CU_ASSERT_FATAL(raw_read(fd, result, sizeof result));
    CU_ASSERT_EQUAL(rpc_peer_check_result(result), RPC_PEER_OK);
    close(fd);
    /* Someone who recorded those bytes sends them again: the server's
     * nonce is new, so the old proof does not check. */
    fd = raw_connect(local.port);
    CU_ASSERT(write(fd, hello, sizeof hello) == (ssize_t)sizeof hello);
    uint8_t answer2[RPC_PEER_ANSWER_SIZE];
    CU_ASSERT_FATAL(raw_read(fd, answer2, sizeof answer2));
    CU_ASSERT(memcmp(answer, answer2, sizeof answer) != 0);
    CU_ASSERT(write(fd, proof, sizeof proof) == (ssize_t)sizeof proof);
    CU_ASSERT_FATAL(raw_read(fd, result, sizeof result));
    CU_ASSERT_EQUAL(rpc_peer_check_result(result), RPC_PEER_BAD_PROOF);
    CU_ASSERT(raw_closed(fd));
    close(fd);
    /* Nor can the server's proof be turned around as a client's. */
    fd = raw_connect(local.port);
    CU_ASSERT(write(fd, hello, sizeof hello) == (ssize_t)sizeof hello);
    CU_ASSERT_FATAL(raw_read(fd, answer2, sizeof answer2));
    uint8_t reflected[RPC_PEER_PROOF_SIZE];
    memcpy(reflected, RPC_PEER_MAGIC, 4);
    memcpy(reflected + 4, answer2 + 56, RPC_PEER_MAC_SIZE);
    CU_ASSERT(write(fd, reflected, sizeof reflected) ==
              (ssize_t)sizeof reflected);
    CU_ASSERT_FATAL(raw_read(fd, result, sizeof result));
    CU_ASSERT_EQUAL(rpc_peer_check_result(result), RPC_PEER_BAD_PROOF);
    close(fd);
    CU_ASSERT_EQUAL(local.echo.calls, 0);
    stop();
}

static void test_peerauth_silent_connection_is_closed_after_the_timeout(void)
{
    start(0, 200);
    int fd = raw_connect(local.port);
    uint64_t t0 = test_now_ms();
    CU_ASSERT(raw_closed(fd));
    CU_ASSERT(test_now_ms() - t0 >= 150);
    CU_ASSERT_EQUAL(stats().handshakes_failed, 1);
    close(fd);
    stop();
}

static void test_peerauth_a_peer_holds_at_most_max_per_peer_connections(void)
{
    start(2, 0);
    struct rpc_peer_auth a;
    fill_auth(&a, 0x11, 3);
    struct rpc_channel *ch[3];
    for (int i = 0; i < 3; i++) {
        ch[i] = channel_as(&a, 2);
        CU_ASSERT_EQUAL(call(ch[i], "x").status, RPC_OK);
    }
    loop_run_for(local.base, 50);
    CU_ASSERT_EQUAL(stats().open, 2);
    /* The oldest went; the newest two still work. */
    CU_ASSERT_EQUAL(call(ch[1], "y").status, RPC_OK);
    CU_ASSERT_EQUAL(call(ch[2], "y").status, RPC_OK);
    for (int i = 0; i < 3; i++) {
        rpc_channel_free(ch[i]);
    }
    stop();
}

/* With a per-source limit, connections stuck in the handshake from one
 * address cannot take every slot; members that got in do not count. */
static void test_peerauth_per_source_limit_counts_only_handshakes(void)
{
    fill_auth(&server_auth, 0x11, 2);
    struct rpc_server_options o = {
        .peer_auth = &server_auth,
        .max_per_source = 2,
        .handshake_ms = 300,
    };
    CU_ASSERT_FATAL(echo_local_start(&local, &o) == 0);
    struct rpc_peer_auth a;
    fill_auth(&a, 0x11, 3);
    struct rpc_channel *ch = channel_as(&a, 2); /* a member, first */
    CU_ASSERT_EQUAL(call(ch, "x").status, RPC_OK);
    int s1 = raw_connect(local.port), s2 = raw_connect(local.port);
    loop_run_for(local.base, 50);
    int s3 = raw_connect(local.port); /* the third silent one */
    CU_ASSERT(raw_closed(s3));
    CU_ASSERT(stats().refused_connections >= 1);
    CU_ASSERT_EQUAL(call(ch, "still").status, RPC_OK); /* unaffected */
    /* The silent ones time out and free their slots. */
    CU_ASSERT(raw_closed(s1));
    CU_ASSERT(raw_closed(s2));
    struct rpc_peer_auth b;
    fill_auth(&b, 0x11, 4);
    struct rpc_channel *ch2 = channel_as(&b, 2);
    CU_ASSERT_EQUAL(call(ch2, "peerid").status, RPC_OK);
    close(s1);
    close(s2);
    close(s3);
    rpc_channel_free(ch);
    rpc_channel_free(ch2);
    stop();
}

static void test_peerauth_key_file_must_be_long_enough(void)
{
    char path[] = "/tmp/raftkv-peerkey-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t k1[RPC_PEER_KEY_SIZE], k2[RPC_PEER_KEY_SIZE];
    char err[512];
    CU_ASSERT(write(fd, "short\n", 6) == 6);
    CU_ASSERT_EQUAL(rpc_peer_key_from_file(path, k1, err, sizeof err),
                    RPC_E_INVALID);
    CU_ASSERT(strstr(err, "openssl rand") != NULL);
    CU_ASSERT(ftruncate(fd, 0) == 0);
    CU_ASSERT(pwrite(fd, "0123456789abcdef0123\n", 21, 0) == 21);
    CU_ASSERT_EQUAL(rpc_peer_key_from_file(path, k1, err, sizeof err), 0);
    CU_ASSERT(ftruncate(fd, 0) == 0);
    CU_ASSERT(pwrite(fd, "0123456789abcdef0123", 20, 0) == 20);
    CU_ASSERT_EQUAL(rpc_peer_key_from_file(path, k2, err, sizeof err), 0);
    CU_ASSERT(memcmp(k1, k2, sizeof k1) == 0); /* the newline is not key */
    CU_ASSERT(pwrite(fd, "4", 1, 20) == 1);
    CU_ASSERT_EQUAL(rpc_peer_key_from_file(path, k2, err, sizeof err), 0);
    CU_ASSERT(memcmp(k1, k2, sizeof k1) != 0);
    close(fd);
    unlink(path);
    CU_ASSERT_EQUAL(rpc_peer_key_from_file(path, k1, err, sizeof err),
                    RPC_E_IO);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    rpc_log_set_level(RPC_LOG_ERROR);
    static CU_TestInfo tests[] = {
        {"test_peerauth_member_with_the_key_gets_in_as_its_id",
         test_peerauth_member_with_the_key_gets_in_as_its_id},
        {"test_peerauth_wrong_key_id_or_cluster_is_refused_before_any_call",
         test_peerauth_wrong_key_id_or_cluster_is_refused_before_any_call},
        {"test_peerauth_frames_before_the_handshake_never_reach_a_handler",
         test_peerauth_frames_before_the_handshake_never_reach_a_handler},
        {"test_peerauth_recorded_handshake_cannot_be_replayed",
         test_peerauth_recorded_handshake_cannot_be_replayed},
        {"test_peerauth_silent_connection_is_closed_after_the_timeout",
         test_peerauth_silent_connection_is_closed_after_the_timeout},
        {"test_peerauth_a_peer_holds_at_most_max_per_peer_connections",
         test_peerauth_a_peer_holds_at_most_max_per_peer_connections},
        {"test_peerauth_per_source_limit_counts_only_handshakes",
         test_peerauth_per_source_limit_counts_only_handshakes},
        {"test_peerauth_a_refused_id_learns_it_from_a_proven_server",
         test_peerauth_a_refused_id_learns_it_from_a_proven_server},
        {"test_peerauth_server_drops_the_connections_of_a_peer_id",
         test_peerauth_server_drops_the_connections_of_a_peer_id},
        {"test_peerauth_key_file_must_be_long_enough",
         test_peerauth_key_file_must_be_long_enough},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"peerauth", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
