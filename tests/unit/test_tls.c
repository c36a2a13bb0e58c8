/* test_tls.c: TLS servers and channels over loopback: who is trusted, who
 * is refused and why, client certificates, reload. Certificates come from
 * scripts/certs.sh (the openssl command), made fresh for the run. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <event2/event.h>

#include "cunit_main.h"
#include "echo_loop.h"
#include "rpc/rpc.h"

#define SOON_MS 10000

static char dir[64];   /* CA "a": ca.crt, node (127.0.0.1), alice */
static char other[80]; /* CA "b": ca.crt, node (127.0.0.1) */
static struct echo_local local;

static const ProtobufCServiceDescriptor *echo_desc =
    &raftkv__test__echo_service__descriptor;

static int sh(const char *fmt, const char *a, const char *b)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    return system(cmd);
}

static int make_certs(void)
{
    snprintf(dir, sizeof dir, "/tmp/raftkv-tls-XXXXXX");
    if (!mkdtemp(dir)) {
        return -1;
    }
    snprintf(other, sizeof other, "%s/other", dir);
    if (sh(CERTS_SH " ca %s%s >/dev/null", dir, "") ||
        sh(CERTS_SH " node %s node 127.0.0.1 localhost%s", dir, "") ||
        sh(CERTS_SH " node %s far 127.0.0.2%s", dir, "") ||
        sh(CERTS_SH " client %s alice%s", dir, "") ||
        sh(CERTS_SH " ca %s%s", other, "") ||
        sh(CERTS_SH " node %s node 127.0.0.1%s", other, "")) {
        return -1;
    }
    return 0;
}

static void remove_certs(void)
{
    cunit_remove_tree(dir);
}

/* "DIR/NAME" in a static buffer of its own per call site. */
static const char *in(const char *d, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", d, name);
    return buf;
}

static struct rpc_tls *server_tls(const char *d,
                                  const char *name,
                                  bool verify_clients,
                                  const char *allowed)
{
    char crt[128], key[128], ca[128], n1[64], n2[64], err[512];
    snprintf(n1, sizeof n1, "%s.crt", name);
    snprintf(n2, sizeof n2, "%s.key", name);
    struct rpc_tls_options o = {
        .server = true,
        .cert_file = in(d, n1, crt, sizeof crt),
        .key_file = in(d, n2, key, sizeof key),
        .ca_file = verify_clients ? in(dir, "ca.crt", ca, sizeof ca) : NULL,
        .verify_peer = verify_clients,
        .allowed_names = allowed,
    };
    struct rpc_tls *t = NULL;
    if (rpc_tls_new(&o, &t, err, sizeof err) != 0) {
        fprintf(stderr, "\nrpc_tls_new: %s\n", err);
    }
    return t;
}

static struct rpc_tls *client_tls(const char *trust, const char *cert)
{
    char ca[128], crt[128], key[128], n1[64], n2[64], err[512];
    struct rpc_tls_options o = {
        .ca_file = in(trust, "ca.crt", ca, sizeof ca),
        .verify_peer = true,
    };
    if (cert) {
        snprintf(n1, sizeof n1, "%s.crt", cert);
        snprintf(n2, sizeof n2, "%s.key", cert);
        o.cert_file = in(dir, n1, crt, sizeof crt);
        o.key_file = in(dir, n2, key, sizeof key);
    }
    struct rpc_tls *t = NULL;
    if (rpc_tls_new(&o, &t, err, sizeof err) != 0) {
        fprintf(stderr, "\nrpc_tls_new: %s\n", err);
    }
    return t;
}

static void start(struct rpc_tls *tls)
{
    struct rpc_server_options o = {.tls = tls};
    CU_ASSERT_FATAL(echo_local_start(&local, &o) == 0);
}

static struct echo_result call_with(struct rpc_tls *tls,
                                    const char *host,
                                    const char *payload)
{
    struct rpc_channel_options o = {
        .tls = tls, .connect_timeout_ms = 3000, .deadline_ms = 5000};
    struct rpc_channel *ch = rpc_channel_new(local.base, host, local.port, &o);
    struct echo_result r = {0};
    echo_call(rpc_channel_service(ch, echo_desc), ECHO_M_ECHO, payload, 0, &r);
    loop_run_until(local.base, &r.done, 1, SOON_MS);
    if (r.status == RPC_OK) { /* and the same connection again */
        struct echo_result r2 = {0};
        echo_call(rpc_channel_service(ch, echo_desc), ECHO_M_ECHO, "again", 0,
                  &r2);
        loop_run_until(local.base, &r2.done, 1, SOON_MS);
        CU_ASSERT_STRING_EQUAL(r2.payload, "again");
    }
    rpc_channel_free(ch);
    return r;
}

static void expect_error(struct echo_result r, const char *why)
{
    CU_ASSERT_EQUAL(r.done, 1);
    CU_ASSERT_NOT_EQUAL(r.status, RPC_OK);
    if (!strstr(r.error, why)) {
        fprintf(stderr, "\nerror '%s' does not say '%s'\n", r.error, why);
        CU_FAIL("the error does not say why");
    }
}

static uint64_t tls_failures(void)
{
    struct rpc_server_stats st;
    rpc_server_get_stats(local.server, &st);
    return st.tls_failures;
}

static void test_tls_trusted_server_answers_and_others_are_refused(void)
{
    struct rpc_tls *srv = server_tls(dir, "node", false, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
    start(srv);
    struct rpc_tls *ok = client_tls(dir, NULL), *bad = client_tls(other, NULL);
    struct echo_result r = call_with(ok, "127.0.0.1", "hello");
    CU_ASSERT_EQUAL(r.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r.payload, "hello");
    /* No client certificate: no name. */
    r = call_with(ok, "127.0.0.1", "tlsname");
    CU_ASSERT_STRING_EQUAL(r.payload, "");
    /* A client that trusts another CA refuses the server. */
    expect_error(call_with(bad, "127.0.0.1", "x"), "certificate verify failed");
    /* A plain client gets nothing from a TLS server. */
    expect_error(call_with(NULL, "127.0.0.1", "x"), "");
    CU_ASSERT(tls_failures() >= 1);
    CU_ASSERT_EQUAL(local.echo.calls, 4); /* two calls of two channels */
    rpc_tls_free(ok);
    rpc_tls_free(bad);
    echo_local_stop(&local);
    rpc_tls_free(srv);
}

/* The certificate must name the address dialled. */
static void test_tls_certificate_for_another_address_is_refused(void)
{
    struct rpc_tls *srv = server_tls(dir, "far", false, NULL); /* 127.0.0.2 */
    CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
    start(srv);
    struct rpc_tls *ok = client_tls(dir, NULL);
    expect_error(call_with(ok, "127.0.0.1", "x"), "certificate verify failed");
    CU_ASSERT_EQUAL(local.echo.calls, 0);
    rpc_tls_free(ok);
    echo_local_stop(&local);
    rpc_tls_free(srv);
}

static void test_tls_client_certificate_required_and_named(void)
{
    struct rpc_tls *srv = server_tls(dir, "node", true, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
    start(srv);
    struct rpc_tls *none = client_tls(dir, NULL),
                   *alice = client_tls(dir, "alice");
    expect_error(call_with(none, "127.0.0.1", "x"), "");
    struct echo_result r = call_with(alice, "127.0.0.1", "tlsname");
    CU_ASSERT_EQUAL(r.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r.payload, "alice");
    CU_ASSERT_EQUAL(local.echo.calls, 2); /* alice's two */
    rpc_tls_free(none);
    rpc_tls_free(alice);
    echo_local_stop(&local);
    rpc_tls_free(srv);
    /* With an allowed-names list, a CA-signed certificate of another name
     * is refused too. */
    srv = server_tls(dir, "node", true, "node,node2");
    start(srv);
    alice = client_tls(dir, "alice");
    struct rpc_tls *node = client_tls(dir, "node");
    expect_error(call_with(alice, "127.0.0.1", "x"), "");
    r = call_with(node, "127.0.0.1", "tlsname");
    CU_ASSERT_STRING_EQUAL(r.payload, "node");
    rpc_tls_free(alice);
    rpc_tls_free(node);
    echo_local_stop(&local);
    rpc_tls_free(srv);
}

static void test_tls_reload_takes_new_certificates_for_new_connections(void)
{
    char live[128];
    snprintf(live, sizeof live, "%s/live", dir);
    CU_ASSERT_EQUAL(sh("mkdir -p %s%s", live, ""), 0);
    CU_ASSERT_EQUAL(sh("cp %s/node.crt %s/node.crt", dir, live), 0);
    CU_ASSERT_EQUAL(sh("cp %s/node.key %s/node.key", dir, live), 0);
    struct rpc_tls *srv = server_tls(live, "node", false, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
    start(srv);
    struct rpc_tls *a = client_tls(dir, NULL), *b = client_tls(other, NULL);
    CU_ASSERT_EQUAL(call_with(a, "127.0.0.1", "x").status, RPC_OK);
    /* A broken file: the reload fails and the old certificate stays. */
    char err[512];
    CU_ASSERT_EQUAL(sh("echo broken > %s/node.crt%s", live, ""), 0);
    CU_ASSERT_EQUAL(rpc_tls_reload(srv, err, sizeof err), RPC_E_INVALID);
    CU_ASSERT(strstr(err, "node.crt") != NULL);
    CU_ASSERT_EQUAL(call_with(a, "127.0.0.1", "x").status, RPC_OK);
    /* Certificates of CA "b": after the reload, b's clients get in and
     * a's no longer do. */
    CU_ASSERT_EQUAL(sh("cp %s/node.crt %s/node.crt", other, live), 0);
    CU_ASSERT_EQUAL(sh("cp %s/node.key %s/node.key", other, live), 0);
    CU_ASSERT_EQUAL(rpc_tls_reload(srv, err, sizeof err), 0);
    CU_ASSERT_EQUAL(call_with(b, "127.0.0.1", "x").status, RPC_OK);
    expect_error(call_with(a, "127.0.0.1", "x"), "certificate verify failed");
    rpc_tls_free(a);
    rpc_tls_free(b);
    echo_local_stop(&local);
    rpc_tls_free(srv);
}

static void test_tls_bad_options_say_what_is_missing(void)
{
    struct rpc_tls *t = NULL;
    char err[512];
    struct rpc_tls_options o = {.server = true};
    CU_ASSERT_EQUAL(rpc_tls_new(&o, &t, err, sizeof err), RPC_E_INVALID);
    CU_ASSERT(strstr(err, "certificate and a key") != NULL);
    struct rpc_tls_options o2 = {.verify_peer = true};
    CU_ASSERT_EQUAL(rpc_tls_new(&o2, &t, err, sizeof err), RPC_E_INVALID);
    CU_ASSERT(strstr(err, "CA file") != NULL);
    struct rpc_tls_options o3 = {.server = true,
                                 .cert_file = "/nonexistent.crt",
                                 .key_file = "/nonexistent.key"};
    CU_ASSERT_EQUAL(rpc_tls_new(&o3, &t, err, sizeof err), RPC_E_INVALID);
    CU_ASSERT(strstr(err, "/nonexistent.crt") != NULL);
    CU_ASSERT_PTR_NULL(t);
}

/* The peer handshake runs inside TLS. */
static void test_tls_with_peer_auth_inside(void)
{
    struct rpc_tls *srv = server_tls(dir, "node", true, NULL);
    struct rpc_peer_auth sa = {.self_id = 2}, ca = {.self_id = 3};
    memset(sa.key, 5, sizeof sa.key);
    memset(ca.key, 5, sizeof ca.key);
    struct rpc_server_options so = {.tls = srv, .peer_auth = &sa};
    CU_ASSERT_FATAL(echo_local_start(&local, &so) == 0);
    struct rpc_tls *cl = client_tls(dir, "node");
    struct rpc_channel_options o = {
        .tls = cl, .peer_auth = &ca, .peer_id = 2, .connect_timeout_ms = 3000};
    struct rpc_channel *ch =
        rpc_channel_new(local.base, "127.0.0.1", local.port, &o);
    struct echo_result r = {0};
    echo_call(rpc_channel_service(ch, echo_desc), ECHO_M_ECHO, "peerid", 0, &r);
    loop_run_until(local.base, &r.done, 1, SOON_MS);
    CU_ASSERT_EQUAL(r.status, RPC_OK);
    CU_ASSERT_STRING_EQUAL(r.payload, "3");
    rpc_channel_free(ch);
    rpc_tls_free(cl);
    echo_local_stop(&local);
    rpc_tls_free(srv);
}

static void on_tls_frame(struct rpc_stream *st,
                         const ProtobufCMessage *msg,
                         bool end,
                         void *arg)
{
    (void)st;
    (void)msg;
    (void)end;
    (*(int *)arg)++;
}

/* Over TLS the filter hands every byte to the socket's bufferevent at
 * once: a stream must still stop at its share of the output cap when its
 * reader does not read. */
static void test_tls_stream_to_a_reader_that_does_not_read_stalls(void)
{
    struct rpc_server_options so = {.tls = server_tls(dir, "node", false, NULL),
                                    .max_output = 256 * 1024};
    CU_ASSERT_FATAL(echo_local_start(&local, &so) == 0);
    struct rpc_tls *ct = client_tls(dir, NULL);
    struct rpc_channel_options o = {.tls = ct};
    struct rpc_channel *ch =
        rpc_channel_new_blocking("127.0.0.1", local.port, &o);
    Raftkv__Test__EchoArgs a = RAFTKV__TEST__ECHO_ARGS__INIT;
    a.payload.data = (uint8_t *)"t";
    a.payload.len = 1;
    int frames = 0;
    struct rpc_stream *st = rpc_channel_stream(ch, echo_desc, "Stream", &a.base,
                                               on_tls_frame, &frames);
    CU_ASSERT_FATAL(st != NULL);
    /* Pump both ends until the stream runs; then the client reads no
     * more. */
    uint64_t end = test_now_ms() + SOON_MS;
    while (frames == 0 && test_now_ms() < end) {
        loop_run_for(local.base, 5);
        rpc_channel_wait(ch, 5);
    }
    CU_ASSERT_FATAL(frames > 0);
    end = test_now_ms() + SOON_MS;
    while (local.echo.stream_stalls == 0 && test_now_ms() < end &&
           local.echo.stream_frames < 20000000) {
        loop_run_for(local.base, 10);
    }
    CU_ASSERT(local.echo.stream_stalls > 0);
    loop_run_for(local.base, 300);
    /* Stalled: about half the cap in the server, plus what the sockets
     * hold (a frame is some 20 bytes, a TLS record adds a little). */
    CU_ASSERT(local.echo.stream_frames * 20 < (128u << 10) + (16u << 20));
    rpc_channel_free(ch);
    rpc_server_free(local.server);
    local.server = NULL;
    loop_run_for(local.base, 50);
    echo_local_stop(&local);
    rpc_tls_free(ct);
    rpc_tls_free(so.tls);
}

static int suite_init(void)
{
    return make_certs();
}

static int suite_clean(void)
{
    remove_certs();
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    rpc_log_set_level(RPC_LOG_ERROR);
    static CU_TestInfo tests[] = {
        {"test_tls_trusted_server_answers_and_others_are_refused",
         test_tls_trusted_server_answers_and_others_are_refused},
        {"test_tls_certificate_for_another_address_is_refused",
         test_tls_certificate_for_another_address_is_refused},
        {"test_tls_client_certificate_required_and_named",
         test_tls_client_certificate_required_and_named},
        {"test_tls_reload_takes_new_certificates_for_new_connections",
         test_tls_reload_takes_new_certificates_for_new_connections},
        {"test_tls_bad_options_say_what_is_missing",
         test_tls_bad_options_say_what_is_missing},
        {"test_tls_with_peer_auth_inside", test_tls_with_peer_auth_inside},
        {"test_tls_stream_to_a_reader_that_does_not_read_stalls",
         test_tls_stream_to_a_reader_that_does_not_read_stalls},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"tls", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
