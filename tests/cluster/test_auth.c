/* test_auth.c: users, roles and permissions on a real three-node cluster:
 * auth enable, key-range permissions for writes, reads and stale reads,
 * root-only admin operations, tokens voided by a password change or
 * expiry (also on a lease keep-alive stream), auth state across a full restart
 * and through a snapshot to a follower that was down while the log compacted,
 * and no plaintext password in any file. The tests share one cluster and run in
 * order. */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <CUnit/Basic.h>

#include <proto/auth.pb-c.h>
#include <proto/kv.pb-c.h>
#include <rpc/rpc.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

#define TOKEN_TTL_S 4
#define ROOT_PW     "Root-pw-83517"
#define ALICE_PW    "Alice-pw-27164"
#define ALICE_PW2   "Alice-new-pw-99021"
#define BOB_PW      "Bob-pw-55310"

static struct h_cluster cl; /* shared by the tests, in order */
static bool started;        /* cl is running */

static void need_cluster(void)
{
    if (!started) {
        /* Small snapshots, so a follower that was down gets one; short
         * tokens, so they expire within a test. */
        CU_ASSERT_FATAL(h_cluster_start(&cl, 3,
                                        "--snapshot-entries 40 "
                                        "--snapshot-trailing 5 "
                                        "--auth-token-ttl-s 4") == 0);
        started = true;
        CU_ASSERT_FATAL(h_find_leader(&cl, 10000) >= 0);
    }
}

static int suite_teardown(void)
{
    int rv = 0;
    if (started) {
        cl.keep = CU_get_number_of_failures() > 0;
        rv = h_cluster_destroy(&cl) == 0 ? 0 : 1;
        started = false;
    }
    return rv;
}

/* Index of the node that says it leads (Status stays open with auth on;
 * h_find_leader probes with a Get, which needs a token then), or -1. */
static int find_leader_in(struct h_cluster *c, unsigned timeout_ms)
{
    char eps[512];
    h_endpoints(c, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 1000};
    struct clerk *ck = NULL;
    if (clerk_open(&ck, eps, &o) != CLERK_OK) {
        return -1;
    }
    int found = -1;
    uint64_t until = h_now_ms() + timeout_ms;
    while (found < 0 && h_now_ms() < until) {
        struct clerk_node_status *st = NULL;
        size_t n = 0;
        if (clerk_status(ck, &st, &n) == CLERK_OK) {
            for (size_t i = 0; i < n && found < 0; i++) {
                if (!st[i].reachable || strcmp(st[i].role, "leader") != 0) {
                    continue;
                }
                for (size_t k = 0; k < c->n; k++) {
                    char addr[300];
                    snprintf(addr, sizeof addr, "%s:%u", c->nodes[k].host,
                             c->nodes[k].port);
                    if (!strcmp(addr, st[i].address)) {
                        found = (int)k;
                    }
                }
            }
            clerk_free(st);
        }
        if (found < 0) {
            h_sleep_ms(100);
        }
    }
    clerk_close(ck);
    return found;
}

static int find_leader(unsigned timeout_ms)
{
    return find_leader_in(&cl, timeout_ms);
}

/* A clerk to the nodes of @which (bit i: node i), as @user (NULL: none). */
static struct clerk *open_as(const char *user,
                             const char *password,
                             uint32_t which,
                             bool stale)
{
    char eps[512];
    h_endpoints_of(&cl, which, 0, eps, sizeof eps);
    struct clerk_options o = {
        .deadline_ms = 8000,
        .read_mode = stale ? CLERK_READ_STALE : CLERK_READ_LINEARIZABLE,
        .user = user,
        .password = password};
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    return ck;
}

/* Run kvctl against every node with standard output and error together;
 * return its exit status. */
static int kvctl(const char *args, char *out, size_t cap)
{
    char eps[512], cmd[2048];
    h_endpoints(&cl, eps, sizeof eps);
    snprintf(cmd, sizeof cmd, "%s --cluster %s %s 2>&1 </dev/null", KVCTL_BIN,
             eps, args);
    out[0] = 0;
    FILE *p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define EXPECT(call, want)                                                     \
    do {                                                                       \
        int got_ = (call);                                                     \
        if (got_ != (want)) {                                                  \
            fprintf(stderr, "%s:%d: %s = %s (%s), want %s\n", __FILE__,        \
                    __LINE__, #call, clerk_error_code(got_), clerk_errmsg(ck), \
                    clerk_error_code(want));                                   \
        }                                                                      \
        CU_ASSERT_EQUAL(got_, (want));                                         \
    } while (0)

/* ---------------------------------------------------- raw token calls */

static void on_authenticate(const Raftkv__AuthenticateReply *r, void *data)
{
    char *token = data;
    if (r && r->err == RAFTKV__AUTH_ERROR__AUTH_OK) {
        snprintf(token, 800, "%s", r->token);
    }
}

struct get_out
{
    int err;           /* KvError, -1: no reply */
    char message[300]; /* the reply's message */
};

static void on_get(const Raftkv__GetReply *r, void *data)
{
    struct get_out *o = data;
    if (r) {
        o->err = r->err;
        snprintf(o->message, sizeof o->message, "%s", r->message);
    }
}

/* A token for user from node i (Authenticate), "" when refused. */
static void raw_token(size_t i, const char *user, const char *pw, char *token)
{
    struct rpc_channel_options o = {.deadline_ms = 5000};
    struct rpc_channel *ch =
        rpc_channel_new_blocking(cl.nodes[i].host, cl.nodes[i].port, &o);
    CU_ASSERT_FATAL(ch != NULL);
    Raftkv__AuthenticateArgs a = RAFTKV__AUTHENTICATE_ARGS__INIT;
    a.user = (char *)user;
    a.password = (char *)pw;
    token[0] = 0;
    raftkv__auth_service__authenticate(
        rpc_channel_service(ch, &raftkv__auth_service__descriptor), &a,
        on_authenticate, token);
    rpc_channel_free(ch);
}

/* A stale Get of key at node i with token ("": none). */
static struct get_out raw_get(size_t i, const char *token, const char *key)
{
    struct rpc_channel_options o = {.deadline_ms = 5000};
    struct rpc_channel *ch =
        rpc_channel_new_blocking(cl.nodes[i].host, cl.nodes[i].port, &o);
    struct get_out out = {.err = -1};
    CU_ASSERT_FATAL(ch != NULL);
    CU_ASSERT(rpc_channel_set_auth_token(ch, token) == 0);
    Raftkv__GetArgs g = RAFTKV__GET_ARGS__INIT;
    g.key.data = (uint8_t *)key;
    g.key.len = strlen(key);
    g.stale_ok = true;
    raftkv__kv_service__get(
        rpc_channel_service(ch, &raftkv__kv_service__descriptor), &g, on_get,
        &out);
    rpc_channel_free(ch);
    return out;
}

/* ---------------------------------------------------------------- tests */

static void test_auth_enable_needs_root_then_calls_need_a_token(void)
{
    need_cluster();
    struct clerk *ck = open_as(NULL, NULL, UINT32_MAX, false);
    char pfx_end[8];
    size_t n = clerk_prefix_end("app/", 4, pfx_end);
    EXPECT(clerk_role_add(ck, "app"), CLERK_OK);
    EXPECT(clerk_role_grant_permission(ck, "app", CLERK_PERM_READWRITE, "app/",
                                       4, pfx_end, n),
           CLERK_OK);
    EXPECT(clerk_role_add(ck, "reader"), CLERK_OK);
    /* every key from "a" on */
    EXPECT(clerk_role_grant_permission(ck, "reader", CLERK_PERM_READ, "a", 1,
                                       "", 1),
           CLERK_OK);
    EXPECT(clerk_user_add(ck, "alice", ALICE_PW), CLERK_OK);
    EXPECT(clerk_user_grant_role(ck, "alice", "app"), CLERK_OK);
    EXPECT(clerk_user_add(ck, "bob", BOB_PW), CLERK_OK);
    EXPECT(clerk_user_grant_role(ck, "bob", "reader"), CLERK_OK);
    EXPECT(clerk_user_add(ck, "root", ROOT_PW), CLERK_OK);
    /* root without the role root: refused */
    EXPECT(clerk_auth_enable(ck), CLERK_BAD_REQUEST);
    CU_ASSERT(strstr(clerk_errmsg(ck), "root") != NULL);
    EXPECT(clerk_user_grant_role(ck, "root", "root"), CLERK_OK);
    EXPECT(clerk_put(ck, "app/x", 5, "before", 6), CLERK_OK);
    EXPECT(clerk_auth_enable(ck), CLERK_OK);

    bool on = false;
    EXPECT(clerk_auth_status(ck, &on, NULL), CLERK_OK);
    CU_ASSERT(on);
    /* Without a user: refused, and told why. */
    void *v = NULL;
    size_t len;
    EXPECT(clerk_put(ck, "app/x", 5, "v", 1), CLERK_UNAUTHENTICATED);
    CU_ASSERT(strstr(clerk_errmsg(ck), "no token") != NULL);
    EXPECT(clerk_get(ck, "app/x", 5, &v, &len), CLERK_UNAUTHENTICATED);
    EXPECT(clerk_user_add(ck, "mallory", "x"), CLERK_UNAUTHENTICATED);
    clerk_close(ck);

    char out[4096];
    CU_ASSERT_EQUAL(kvctl("get app/x", out, sizeof out), 6);
    CU_ASSERT(strstr(out, "UNAUTHENTICATED") != NULL);
    CU_ASSERT_EQUAL(kvctl("--user alice:wrong get app/x", out, sizeof out), 6);
    CU_ASSERT(strstr(out, "wrong user name or password") != NULL);
    /* Health checks stay open. */
    CU_ASSERT_EQUAL(kvctl("status", out, sizeof out), 0);
}

static void test_auth_prefix_user_writes_inside_and_is_denied_outside(void)
{
    need_cluster();
    struct clerk *ck = open_as("alice", ALICE_PW, UINT32_MAX, false);
    EXPECT(clerk_put(ck, "app/x", 5, "1", 1), CLERK_OK);
    EXPECT(clerk_append(ck, "app/x", 5, "2", 1), CLERK_OK);
    void *v = NULL;
    size_t len = 0;
    EXPECT(clerk_get(ck, "app/x", 5, &v, &len), CLERK_OK);
    CU_ASSERT(v && len == 2 && memcmp(v, "12", 2) == 0);
    clerk_free(v);
    EXPECT(clerk_cas(ck, "app/x", 5, "12", 2, "13", 2, NULL, NULL), CLERK_OK);
    EXPECT(clerk_put(ck, "other", 5, "v", 1), CLERK_PERMISSION_DENIED);
    CU_ASSERT_STRING_EQUAL(clerk_errmsg(ck),
                           "user 'alice' (roles: app) may "
                           "not write key 'other'");
    EXPECT(clerk_delete(ck, "other", 5), CLERK_PERMISSION_DENIED);
    EXPECT(clerk_get(ck, "app", 3, &v, &len), CLERK_PERMISSION_DENIED);
    /* Not root: no user administration. */
    EXPECT(clerk_user_add(ck, "mallory", "x"), CLERK_PERMISSION_DENIED);
    EXPECT(clerk_user_grant_role(ck, "alice", "root"), CLERK_PERMISSION_DENIED);
    clerk_close(ck);

    char out[4096];
    CU_ASSERT_EQUAL(
        kvctl("--user alice:" ALICE_PW " put other v", out, sizeof out), 7);
    CU_ASSERT(strstr(out, "PERMISSION_DENIED") != NULL);
    CU_ASSERT_EQUAL(
        kvctl("--user alice:" ALICE_PW " put app/k v", out, sizeof out), 0);
}

static void test_auth_read_only_user_is_denied_writes(void)
{
    need_cluster();
    struct clerk *ck = open_as("bob", BOB_PW, UINT32_MAX, false);
    void *v = NULL;
    size_t len = 0;
    EXPECT(clerk_get(ck, "app/x", 5, &v, &len), CLERK_OK);
    clerk_free(v);
    EXPECT(clerk_put(ck, "app/x", 5, "v", 1), CLERK_PERMISSION_DENIED);
    CU_ASSERT(strstr(clerk_errmsg(ck), "may not write") != NULL);
    EXPECT(clerk_cas(ck, "app/x", 5, "13", 2, "14", 2, NULL, NULL),
           CLERK_PERMISSION_DENIED);
    CU_ASSERT(strstr(clerk_errmsg(ck), "may not read and write") != NULL);
    clerk_close(ck);
}

static void test_auth_kvctl_user_role_and_auth_commands(void)
{
    need_cluster();
    char out[8192];
#define ROOT "--user root:" ROOT_PW " "
    CU_ASSERT_EQUAL(kvctl(ROOT "user add dave:Dave-pw-6630", out, sizeof out),
                    0);
    CU_ASSERT_EQUAL(kvctl(ROOT "role add dreader", out, sizeof out), 0);
    CU_ASSERT_EQUAL(kvctl(ROOT "role grant-permission --prefix dreader read "
                               "d/",
                          out, sizeof out),
                    0);
    CU_ASSERT_EQUAL(kvctl(ROOT "role grant-permission dreader write d/a d/b",
                          out, sizeof out),
                    0);
    CU_ASSERT_EQUAL(kvctl(ROOT "user grant-role dave dreader", out, sizeof out),
                    0);
    CU_ASSERT_EQUAL(kvctl(ROOT "user get dave", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "Roles: dreader") != NULL);
    CU_ASSERT_EQUAL(kvctl(ROOT "-w json role get dreader", out, sizeof out), 0);
    CU_ASSERT(strstr(out,
                     "{\"type\":\"read\",\"key\":\"d/\",\"range_end\":"
                     "\"d0\"}") != NULL);
    CU_ASSERT(strstr(out,
                     "{\"type\":\"write\",\"key\":\"d/a\","
                     "\"range_end\":\"d/b\"}") != NULL);
    CU_ASSERT_EQUAL(kvctl(ROOT "user list", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "dave\n") != NULL && strstr(out, "alice\n") != NULL);
    CU_ASSERT_EQUAL(kvctl(ROOT "-w json role list", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "\"root\"") != NULL &&
              strstr(out, "\"dreader\"") != NULL);
    CU_ASSERT_EQUAL(kvctl("auth status", out, sizeof out), 0);
    CU_ASSERT(strstr(out, "Authentication Status: true") != NULL);
    /* dave: writes d/a (write on [d/a, d/b)) but not d/c; reads d/c. */
    CU_ASSERT_EQUAL(
        kvctl("--user dave:Dave-pw-6630 put d/a 1", out, sizeof out), 0);
    CU_ASSERT_EQUAL(
        kvctl("--user dave:Dave-pw-6630 put d/c 1", out, sizeof out), 7);
    CU_ASSERT_EQUAL(kvctl("--user dave:Dave-pw-6630 get d/a", out, sizeof out),
                    0);
    /* Not root: no administration (exit 7); no such user (exit 1). */
    CU_ASSERT_EQUAL(
        kvctl("--user dave:Dave-pw-6630 user list", out, sizeof out), 7);
    CU_ASSERT_EQUAL(
        kvctl(ROOT "role revoke-permission dreader d/a d/b", out, sizeof out),
        0);
    CU_ASSERT_EQUAL(
        kvctl("--user dave:Dave-pw-6630 put d/a 2", out, sizeof out), 7);
    CU_ASSERT_EQUAL(kvctl(ROOT "user delete dave", out, sizeof out), 0);
    CU_ASSERT_EQUAL(kvctl(ROOT "user get dave", out, sizeof out), 1);
    CU_ASSERT_EQUAL(kvctl(ROOT "role delete dreader", out, sizeof out), 0);
    /* Without a user, auth cannot be turned off (exit 6). */
    CU_ASSERT_EQUAL(kvctl("auth disable", out, sizeof out), 6);
#undef ROOT
}

/* Where clerk_snapshot_save puts the bytes: counted and dropped. */
static int count_bytes(const void *data, size_t len, void *arg)
{
    (void)data;
    *(size_t *)arg += len;
    return 0;
}

static void test_auth_admin_operations_need_root(void)
{
    need_cluster();
    struct clerk *ck = open_as(NULL, NULL, UINT32_MAX, false);
    uint64_t leader = 0;
    size_t bytes = 0;
    EXPECT(clerk_transfer_leader(ck, 0, &leader), CLERK_UNAUTHENTICATED);
    EXPECT(clerk_snapshot_save(ck, count_bytes, &bytes, NULL, NULL, NULL),
           CLERK_UNAUTHENTICATED);
    clerk_close(ck);

    ck = open_as("alice", ALICE_PW, UINT32_MAX, false);
    EXPECT(clerk_transfer_leader(ck, 0, &leader), CLERK_PERMISSION_DENIED);
    CU_ASSERT(strstr(clerk_errmsg(ck), "root") != NULL);
    EXPECT(clerk_snapshot_save(ck, count_bytes, &bytes, NULL, NULL, NULL),
           CLERK_PERMISSION_DENIED);
    CU_ASSERT_EQUAL(bytes, 0);
    clerk_close(ck);

    ck = open_as("root", ROOT_PW, UINT32_MAX, false);
    EXPECT(clerk_transfer_leader(ck, 0, &leader), CLERK_OK);
    CU_ASSERT(leader != 0);
    EXPECT(clerk_snapshot_save(ck, count_bytes, &bytes, NULL, NULL, NULL),
           CLERK_OK);
    CU_ASSERT(bytes > 0);
    clerk_close(ck);

    char out[4096];
    CU_ASSERT_EQUAL(kvctl("--user alice:" ALICE_PW " transfer-leader auto", out,
                          sizeof out),
                    7);
    CU_ASSERT_EQUAL(
        kvctl("--user root:" ROOT_PW " transfer-leader auto", out, sizeof out),
        0);
}

static void test_auth_stale_reads_on_a_follower_check_permissions(void)
{
    need_cluster();
    int leader = find_leader(10000);
    CU_ASSERT_FATAL(leader >= 0);
    uint32_t follower = 1u << ((leader + 1) % 3);
    struct clerk *ck = open_as("bob", BOB_PW, follower, true);
    void *v = NULL;
    size_t len = 0;
    EXPECT(clerk_get(ck, "app/x", 5, &v, &len), CLERK_OK);
    clerk_free(v);
    clerk_close(ck);

    ck = open_as("alice", ALICE_PW, follower, true);
    EXPECT(clerk_get(ck, "zzz", 3, &v, &len), CLERK_PERMISSION_DENIED);
    CU_ASSERT(strstr(clerk_errmsg(ck), "may not read key 'zzz'") != NULL);
    clerk_close(ck);

    ck = open_as(NULL, NULL, follower, true);
    EXPECT(clerk_get(ck, "app/x", 5, &v, &len), CLERK_UNAUTHENTICATED);
    clerk_close(ck);
}

static void test_auth_password_change_voids_the_old_token(void)
{
    need_cluster();
    char token[800];
    raw_token(0, "alice", ALICE_PW, token);
    CU_ASSERT_FATAL(token[0] != 0);
    struct get_out g = raw_get(1, token, "app/x");
    CU_ASSERT_EQUAL(g.err, RAFTKV__KV_ERROR__KV_OK);

    struct clerk *ck = open_as("root", ROOT_PW, UINT32_MAX, false);
    EXPECT(clerk_user_passwd(ck, "alice", ALICE_PW2), CLERK_OK);
    clerk_close(ck);
    /* Every node, once it applied the change, refuses the old token. */
    for (size_t i = 0; i < 3; i++) {
        uint64_t until = h_now_ms() + 5000;
        do {
            g = raw_get(i, token, "app/x");
        } while (g.err == RAFTKV__KV_ERROR__KV_OK && h_now_ms() < until &&
                 (h_sleep_ms(50), true));
        CU_ASSERT_EQUAL(g.err, RAFTKV__KV_ERROR__KV_UNAUTHENTICATED);
        CU_ASSERT(strstr(g.message, "password change") != NULL);
    }
    ck = open_as("alice", ALICE_PW, UINT32_MAX, false);
    EXPECT(clerk_put(ck, "app/y", 5, "v", 1), CLERK_UNAUTHENTICATED);
    clerk_close(ck);
    ck = open_as("alice", ALICE_PW2, UINT32_MAX, false);
    EXPECT(clerk_put(ck, "app/y", 5, "v", 1), CLERK_OK);
    clerk_close(ck);
}

/* A node caches who a token is for a moment (no HMAC, no LMDB read per
 * call); an applied auth change voids that at once: right after the leader
 * acknowledged revoking a user's root role, the same token is no longer
 * root there, and after a password change it no longer works. */
static void test_auth_checks_cached_on_a_node_are_voided_by_a_change(void)
{
    need_cluster();
    struct clerk *ck = open_as("root", ROOT_PW, UINT32_MAX, false);
    EXPECT(clerk_user_add(ck, "ops", "Ops-pw-55120"), CLERK_OK);
    EXPECT(clerk_user_grant_role(ck, "ops", "root"), CLERK_OK);
    clerk_close(ck);
    int leader = find_leader(10000);
    CU_ASSERT_FATAL(leader >= 0);
    char token[800];
    raw_token((size_t)leader, "ops", "Ops-pw-55120", token);
    CU_ASSERT_FATAL(token[0] != 0);
    /* Root may read anything: checked, then cached. */
    for (int k = 0; k < 3; k++) {
        struct get_out g = raw_get((size_t)leader, token, "secret/x");
        CU_ASSERT(g.err == RAFTKV__KV_ERROR__KV_OK ||
                  g.err == RAFTKV__KV_ERROR__KV_NOT_FOUND);
    }
    ck = open_as("root", ROOT_PW, UINT32_MAX, false);
    EXPECT(clerk_user_revoke_role(ck, "ops", "root"), CLERK_OK);
    clerk_close(ck);
    struct get_out g = raw_get((size_t)leader, token, "secret/x");
    CU_ASSERT_EQUAL(g.err, RAFTKV__KV_ERROR__KV_PERMISSION_DENIED);
    ck = open_as("root", ROOT_PW, UINT32_MAX, false);
    EXPECT(clerk_user_passwd(ck, "ops", "Ops-pw-2-71002"), CLERK_OK);
    clerk_close(ck);
    g = raw_get((size_t)leader, token, "secret/x");
    CU_ASSERT_EQUAL(g.err, RAFTKV__KV_ERROR__KV_UNAUTHENTICATED);
}

static void test_auth_expired_token_is_refused_and_clerk_renews_it(void)
{
    need_cluster();
    char token[800];
    raw_token(0, "alice", ALICE_PW2, token);
    CU_ASSERT_FATAL(token[0] != 0);
    struct clerk *ck = open_as("alice", ALICE_PW2, UINT32_MAX, false);
    EXPECT(clerk_put(ck, "app/e", 5, "1", 1), CLERK_OK);
    h_sleep_ms((TOKEN_TTL_S + 1) * 1000);
    struct get_out g = raw_get(0, token, "app/x");
    CU_ASSERT_EQUAL(g.err, RAFTKV__KV_ERROR__KV_UNAUTHENTICATED);
    CU_ASSERT(strstr(g.message, "token expired") != NULL);
    /* The clerk's token expired too: it authenticates again, once, and the
     * write goes through (exactly once). */
    EXPECT(clerk_append(ck, "app/e", 5, "2", 1), CLERK_OK);
    void *v = NULL;
    size_t len = 0;
    EXPECT(clerk_get(ck, "app/e", 5, &v, &len), CLERK_OK);
    CU_ASSERT(v && len == 2 && memcmp(v, "12", 2) == 0);
    clerk_free(v);
    clerk_close(ck);
}

/* What a raw keep-alive stream's callback saw. */
struct ka_out
{
    int frames;            /* answers before the end */
    int err;               /* the last answer's or the end's KvError */
    int ends;              /* end calls */
    struct rpc_stream *st; /* the stream, NULL once it ended */
};

static void on_ka(struct rpc_stream *st,
                  const ProtobufCMessage *m,
                  bool end,
                  void *arg)
{
    (void)st;
    struct ka_out *o = arg;
    const Raftkv__LeaseKeepAliveReply *r =
        (const Raftkv__LeaseKeepAliveReply *)m;
    o->err = r ? (int)r->err : -1;
    if (end) {
        o->ends++;
        o->st = NULL;
    } else {
        o->frames++;
    }
}

/* Run ch's loop until o has @frames answers or ended (5 s at most). */
static void ka_wait(struct rpc_channel *ch, struct ka_out *o, int frames)
{
    uint64_t end = h_now_ms() + 5000;
    while (o->frames < frames && !o->ends && h_now_ms() < end) {
        rpc_channel_wait(ch, 200);
    }
}

/* A keep-alive stream to node i with token ("": none), opened with a
 * renewal of lease id. */
static struct rpc_channel *ka_open(size_t i,
                                   const char *token,
                                   uint64_t id,
                                   struct ka_out *o)
{
    struct rpc_channel *ch =
        rpc_channel_new_blocking(cl.nodes[i].host, cl.nodes[i].port, NULL);
    CU_ASSERT_FATAL(ch != NULL);
    CU_ASSERT(rpc_channel_set_auth_token(ch, token) == 0);
    Raftkv__LeaseKeepAliveArgs a = RAFTKV__LEASE_KEEP_ALIVE_ARGS__INIT;
    a.id = id;
    memset(o, 0, sizeof *o);
    o->st = rpc_channel_stream(ch, &raftkv__lease_service__descriptor,
                               "LeaseKeepAliveStream", &a.base, on_ka, o);
    CU_ASSERT_FATAL(o->st != NULL);
    return ch;
}

static void on_lease_lost(uint64_t id, int reason, void *arg)
{
    (void)id;
    atomic_store((atomic_int *)arg, reason + 1000); /* (told, even 0) */
}

/* A keep-alive stream is checked as the unary keep-alive is, on every
 * renewal, with the token of the request that opened it: none is refused,
 * an expired one ends the stream; libclerk's keep-alive authenticates
 * again and goes on past its token's expiry. */
static void test_auth_keepalive_stream_checks_every_renewal(void)
{
    need_cluster();
    int leader = find_leader(10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_as("alice", ALICE_PW2, UINT32_MAX, false);
    uint64_t id = 0;
    EXPECT(clerk_lease_grant(ck, 3, 0, &id, NULL), CLERK_OK);

    struct ka_out o;
    struct rpc_channel *ch = ka_open((size_t)leader, "", id, &o);
    ka_wait(ch, &o, 1);
    CU_ASSERT(o.frames == 0 && o.ends == 1);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_UNAUTHENTICATED);
    rpc_channel_free(ch);

    char token[800];
    raw_token((size_t)leader, "alice", ALICE_PW2, token);
    CU_ASSERT_FATAL(token[0] != 0);
    ch = ka_open((size_t)leader, token, id, &o);
    ka_wait(ch, &o, 1);
    CU_ASSERT(o.frames == 1 && o.err == 0);
    struct clerk_keepalive *ka = NULL;
    atomic_int lost = 0;
    EXPECT(clerk_lease_keepalive_start(ck, id, on_lease_lost, &lost, &ka),
           CLERK_OK);
    h_sleep_ms((TOKEN_TTL_S + 1) * 1000);
    Raftkv__LeaseKeepAliveArgs a = RAFTKV__LEASE_KEEP_ALIVE_ARGS__INIT;
    a.id = id;
    CU_ASSERT_EQUAL(rpc_stream_send_msg(o.st, &a.base), 0);
    ka_wait(ch, &o, 2);
    CU_ASSERT_EQUAL(o.frames, 1);
    CU_ASSERT_EQUAL(o.ends, 1);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_UNAUTHENTICATED);
    rpc_channel_free(ch);
    /* The background keep-alive's token expired meanwhile too. */
    h_sleep_ms(3000);
    CU_ASSERT_EQUAL(atomic_load(&lost), 0);
    struct clerk_lease_ttl_result *tr = NULL;
    EXPECT(clerk_lease_timetolive(ck, id, false, &tr), CLERK_OK);
    clerk_lease_ttl_result_free(tr);
    clerk_lease_keepalive_stop(ka);
    EXPECT(clerk_lease_revoke(ck, id, NULL, NULL), CLERK_OK);
    clerk_close(ck);
}

static void test_auth_state_survives_restart_and_reaches_a_lagging_follower(
    void)
{
    need_cluster();
    int leader = find_leader(10000);
    CU_ASSERT_FATAL(leader >= 0);
    size_t down = (size_t)(leader + 1) % 3;
    h_node_kill(&cl, down);

    /* While it is down: a new role and user, and enough writes that the
     * others compact their logs past everything it has. */
    struct clerk *ck = open_as("root", ROOT_PW, UINT32_MAX, false);
    EXPECT(clerk_role_add(ck, "late"), CLERK_OK);
    EXPECT(clerk_role_grant_permission(ck, "late", CLERK_PERM_READWRITE,
                                       "late/", 5, "late0", 5),
           CLERK_OK);
    EXPECT(clerk_user_add(ck, "carol", "Carol-pw-40211"), CLERK_OK);
    EXPECT(clerk_user_grant_role(ck, "carol", "late"), CLERK_OK);
    EXPECT(clerk_put(ck, "late/k", 6, "v", 1), CLERK_OK);
    for (int i = 0; i < 120; i++) {
        char key[32];
        int kl = snprintf(key, sizeof key, "fill/%d", i);
        EXPECT(clerk_put(ck, key, (size_t)kl, "x", 1), CLERK_OK);
    }
    struct clerk_node_status *st = NULL;
    size_t n = 0;
    EXPECT(clerk_status(ck, &st, &n), CLERK_OK);
    uint64_t snap = 0;
    for (size_t i = 0; i < n; i++) {
        if (st[i].reachable && st[i].snapshot_index > snap) {
            snap = st[i].snapshot_index;
        }
    }
    clerk_free(st);
    CU_ASSERT(snap > 100); /* compacted past what the stopped node has */
    clerk_close(ck);

    /* Full restart: every node from its disk (the stopped one included). */
    for (size_t i = 0; i < 3; i++) {
        if (i != down) {
            h_node_kill(&cl, i);
        }
    }
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_FATAL(h_node_start(&cl, i) == 0);
    }
    CU_ASSERT_FATAL(find_leader(15000) >= 0);

    /* The node that was down learns carol and her role from a snapshot:
     * a stale read there works for her and is refused for bob's write. */
    ck = open_as("carol", "Carol-pw-40211", 1u << down, true);
    void *v = NULL;
    size_t len = 0;
    int err = CLERK_UNAUTHENTICATED;
    uint64_t until = h_now_ms() + 20000;
    while ((err = clerk_get(ck, "late/k", 6, &v, &len)) != CLERK_OK &&
           h_now_ms() < until) {
        h_sleep_ms(200);
    }
    EXPECT(err, CLERK_OK);
    clerk_free(v);
    EXPECT(clerk_get(ck, "app/x", 5, &v, &len), CLERK_PERMISSION_DENIED);
    clerk_close(ck);
    /* ... and it got it as a snapshot (the log had been compacted). */
    char to[64];
    snprintf(to, sizeof to, ") to node %llu",
             (unsigned long long)cl.nodes[down].id);
    size_t sent = 0;
    for (size_t i = 0; i < 3; i++) {
        if (i != down) {
            sent += h_log_count(&cl, i, to);
        }
    }
    CU_ASSERT(sent > 0);

    ck = open_as("alice", ALICE_PW2, UINT32_MAX, false);
    EXPECT(clerk_put(ck, "app/after", 9, "v", 1), CLERK_OK);
    EXPECT(clerk_put(ck, "late/k", 6, "v", 1), CLERK_PERMISSION_DENIED);
    clerk_close(ck);
    ck = open_as(NULL, NULL, UINT32_MAX, false);
    bool on = false;
    EXPECT(clerk_auth_status(ck, &on, NULL), CLERK_OK);
    CU_ASSERT(on);
    clerk_close(ck);
}

/* Node whose Authenticate calls flood_main makes. */
static size_t flood_node;

/* Wrong passwords, one after the other. */
static void *flood_main(void *arg)
{
    (void)arg;
    for (int k = 0; k < 3; k++) {
        char token[800];
        raw_token(flood_node, "alice", "wrong-password", token);
    }
    return NULL;
}

static void test_auth_wrong_password_flood_leaves_the_leader_serving(void)
{
    need_cluster();
    int leader = find_leader(10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct clerk *ck = open_as("alice", ALICE_PW2, UINT32_MAX, false);
    EXPECT(clerk_put(ck, "app/flood", 9, "0", 1), CLERK_OK);
    struct clerk_node_status *st = NULL;
    size_t n = 0;
    uint64_t term = 0;
    EXPECT(clerk_status(ck, &st, &n), CLERK_OK);
    for (size_t i = 0; i < n; i++) {
        if (st[i].reachable && !strcmp(st[i].role, "leader")) {
            term = st[i].term;
        }
    }
    clerk_free(st);
    /* 16 callers at once, about 60 ms of Argon2id each: on the event loop
     * that would hold the leader's heartbeats for about a second, and the
     * followers would elect another leader. */
    flood_node = (size_t)leader;
    pthread_t th[16];
    for (size_t i = 0; i < 16; i++) {
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, flood_main, NULL) == 0);
    }
    uint64_t worst = 0;
    for (int k = 0; k < 10; k++) {
        uint64_t t0 = h_now_ms();
        EXPECT(clerk_append(ck, "app/flood", 9, "x", 1), CLERK_OK);
        uint64_t took = h_now_ms() - t0;
        worst = took > worst ? took : worst;
        h_sleep_ms(100);
    }
    for (size_t i = 0; i < 16; i++) {
        pthread_join(th[i], NULL);
    }
    EXPECT(clerk_status(ck, &st, &n), CLERK_OK);
    bool same = false;
    for (size_t i = 0; i < n; i++) {
        if (st[i].reachable && !strcmp(st[i].role, "leader")) {
            same = st[i].term == term;
        }
    }
    clerk_free(st);
    clerk_close(ck);
    if (!same || worst >= 2000) {
        fprintf(stderr,
                "flood: leader term changed=%d, slowest write %llu ms\n", !same,
                (unsigned long long)worst);
    }
    CU_ASSERT(same);
    CU_ASSERT(worst < 2000);
}

static int to_file(const void *data, size_t len, void *arg)
{
    return fwrite(data, 1, len, arg) == len ? 0 : -1;
}

/* kvserver --restore FILE into node i of c (its directory emptied). */
static int restore(struct h_cluster *c, size_t i, const char *file)
{
    char cmd[4096], out[4096];
    snprintf(cmd, sizeof cmd,
             "timeout 60 %s --id %llu --cluster %s --data-dir %s --restore %s "
             "2>&1",
             KVSERVER_BIN, (unsigned long long)c->nodes[i].id, c->cluster_arg,
             c->nodes[i].dir, file);
    FILE *p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = 0;
    int st = pclose(p);
    int rv = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (rv != 0) {
        fprintf(stderr, "restore: %s\n", out);
    }
    return rv;
}

static void test_auth_restored_cluster_has_the_users_and_roles(void)
{
    need_cluster();
    char file[600];
    snprintf(file, sizeof file, "%s/auth-backup.snap", cl.root);
    FILE *fp = fopen(file, "wb");
    CU_ASSERT_FATAL(fp != NULL);
    struct clerk *ck = open_as("root", ROOT_PW, UINT32_MAX, false);
    EXPECT(clerk_snapshot_save(ck, to_file, fp, NULL, NULL, NULL), CLERK_OK);
    clerk_close(ck);
    fclose(fp);

    /* A new cluster (other ports, empty directories) from the file. */
    struct h_cluster r;
    CU_ASSERT_FATAL(h_cluster_start(&r, 3, NULL) == 0);
    CU_ASSERT_FATAL(find_leader_in(&r, 10000) >= 0);
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(h_node_term(&r, i), 0);
        CU_ASSERT_EQUAL(cunit_remove_tree(r.nodes[i].dir), 0);
        CU_ASSERT_EQUAL(restore(&r, i, file), 0);
    }
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT(h_node_start(&r, i) == 0);
    }
    CU_ASSERT(find_leader_in(&r, 15000) >= 0);
    char eps[512];
    h_endpoints(&r, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 8000};
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    bool on = false;
    EXPECT(clerk_auth_status(ck, &on, NULL), CLERK_OK);
    CU_ASSERT(on);
    EXPECT(clerk_put(ck, "app/r", 5, "v", 1), CLERK_UNAUTHENTICATED);
    clerk_close(ck);
    o.user = "alice";
    o.password = ALICE_PW2;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    EXPECT(clerk_put(ck, "app/r", 5, "v", 1), CLERK_OK);
    EXPECT(clerk_put(ck, "other", 5, "v", 1), CLERK_PERMISSION_DENIED);
    clerk_close(ck);
    o.user = "bob";
    o.password = BOB_PW;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    void *v = NULL;
    size_t len = 0;
    EXPECT(clerk_get(ck, "app/r", 5, &v, &len), CLERK_OK);
    clerk_free(v);
    EXPECT(clerk_put(ck, "app/r", 5, "w", 1), CLERK_PERMISSION_DENIED);
    clerk_close(ck);
    r.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&r) == 0);
}

/* A clerk over TLS to every node of c, identified by the client
 * certificate NAME in the cluster's certificates (NULL: none). */
static struct clerk *open_tls(struct h_cluster *c,
                              const char *name,
                              const char *user,
                              const char *password)
{
    static char ca[400], crt[400], key[400];
    char eps[512];
    h_endpoints(c, eps, sizeof eps);
    snprintf(ca, sizeof ca, "%s/ca.crt", c->certs);
    snprintf(crt, sizeof crt, "%s/%s.crt", c->certs, name ? name : "");
    snprintf(key, sizeof key, "%s/%s.key", c->certs, name ? name : "");
    struct clerk_options o = {.deadline_ms = 8000,
                              .cacert = ca,
                              .cert = name ? crt : NULL,
                              .key = name ? key : NULL,
                              .user = user,
                              .password = password};
    struct clerk *ck = NULL;
    if (clerk_open(&ck, eps, &o) != CLERK_OK) {
        fprintf(stderr, "clerk_open: %s\n", clerk_open_error());
    }
    CU_ASSERT_FATAL(ck != NULL);
    return ck;
}

/* Whether a TLS clerk finds a leader (Status) within timeout_ms. */
static bool tls_has_leader(struct h_cluster *c, const char *name)
{
    struct clerk *ck = open_tls(c, name, NULL, NULL);
    bool found = false;
    uint64_t until = h_now_ms() + 15000;
    while (!found && h_now_ms() < until) {
        struct clerk_node_status *st = NULL;
        size_t n = 0;
        if (clerk_status(ck, &st, &n) == CLERK_OK) {
            for (size_t i = 0; i < n; i++) {
                found |= st[i].reachable && !strcmp(st[i].role, "leader");
            }
            clerk_free(st);
        }
        if (!found) {
            h_sleep_ms(100);
        }
    }
    clerk_close(ck);
    return found;
}

static void test_auth_client_certificate_names_the_user(void)
{
    struct h_cluster t;
    struct h_start so = {.tls = true};
    CU_ASSERT_FATAL(h_cluster_start_with(&t, 3, NULL, &so) == 0);
    CU_ASSERT_FATAL(tls_has_leader(&t, NULL));
    /* Users (by password, over server-only TLS), then auth on. */
    struct clerk *ck = open_tls(&t, NULL, NULL, NULL);
    char pfx_end[8];
    size_t n = clerk_prefix_end("app/", 4, pfx_end);
    EXPECT(clerk_role_add(ck, "app"), CLERK_OK);
    EXPECT(clerk_role_grant_permission(ck, "app", CLERK_PERM_READWRITE, "app/",
                                       4, pfx_end, n),
           CLERK_OK);
    EXPECT(clerk_user_add(ck, "alice", ALICE_PW), CLERK_OK);
    EXPECT(clerk_user_grant_role(ck, "alice", "app"), CLERK_OK);
    EXPECT(clerk_user_add(ck, "root", ROOT_PW), CLERK_OK);
    EXPECT(clerk_user_grant_role(ck, "root", "root"), CLERK_OK);
    EXPECT(clerk_auth_enable(ck), CLERK_OK);
    clerk_close(ck);
    /* Client certificates: alice's, root's, and one of nobody's. */
    const char *names[] = {"alice", "root", "mallory"};
    for (size_t i = 0; i < 3; i++) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "%s client %s %s", CERTS_SH, t.certs,
                 names[i]);
        CU_ASSERT_FATAL(system(cmd) == 0);
    }
    /* Restart every node requiring client certificates. */
    snprintf(t.extra, sizeof t.extra, "--tls-client-auth --tls-ca %s/ca.crt",
             t.certs);
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(h_node_term(&t, i), 0);
    }
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_FATAL(h_node_start(&t, i) == 0);
    }
    CU_ASSERT_FATAL(tls_has_leader(&t, "alice"));

    /* No --user: the certificate's name is the user. */
    ck = open_tls(&t, "alice", NULL, NULL);
    EXPECT(clerk_put(ck, "app/x", 5, "v", 1), CLERK_OK);
    EXPECT(clerk_put(ck, "other", 5, "v", 1), CLERK_PERMISSION_DENIED);
    CU_ASSERT(strstr(clerk_errmsg(ck), "user 'alice'") != NULL);
    uint64_t leader;
    EXPECT(clerk_transfer_leader(ck, 0, &leader), CLERK_PERMISSION_DENIED);
    clerk_close(ck);
    ck = open_tls(&t, "mallory", NULL, NULL);
    EXPECT(clerk_put(ck, "app/x", 5, "v", 1), CLERK_UNAUTHENTICATED);
    CU_ASSERT(strstr(clerk_errmsg(ck), "not a user") != NULL);
    clerk_close(ck);
    ck = open_tls(&t, "root", NULL, NULL);
    EXPECT(clerk_put(ck, "other", 5, "v", 1), CLERK_OK);
    EXPECT(clerk_transfer_leader(ck, 0, &leader), CLERK_OK);
    clerk_close(ck);
    /* A password still works, and wins: alice's certificate as root. */
    ck = open_tls(&t, "alice", "root", ROOT_PW);
    EXPECT(clerk_put(ck, "other", 5, "w", 1), CLERK_OK);
    clerk_close(ck);
    /* A wrong password is refused, not passed over for the certificate's
     * user (root's certificate would have written "other"). */
    ck = open_tls(&t, "root", "root", "not root's password");
    EXPECT(clerk_put(ck, "other", 5, "x", 1), CLERK_UNAUTHENTICATED);
    CU_ASSERT(strstr(clerk_errmsg(ck), "authenticate as 'root'") != NULL);
    clerk_close(ck);
    ck = open_tls(&t, "root", NULL, NULL);
    void *was = NULL;
    size_t was_len = 0;
    EXPECT(clerk_get(ck, "other", 5, &was, &was_len), CLERK_OK);
    CU_ASSERT(was_len == 1 && was && ((char *)was)[0] == 'w');
    clerk_free(was);
    clerk_close(ck);
    t.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&t) == 0);
}

/* Does any file under dir hold the bytes of needle? Counts files seen. */
static bool tree_contains(const char *dir, const char *needle, size_t *files)
{
    DIR *d = opendir(dir);
    if (!d) {
        return false;
    }
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) {
            continue;
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(path, &sb) != 0) {
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            found = tree_contains(path, needle, files);
            continue;
        }
        if (!S_ISREG(sb.st_mode)) {
            continue;
        }
        (*files)++;
        FILE *f = fopen(path, "rb");
        if (!f) {
            continue;
        }
        char *buf = malloc((size_t)sb.st_size + 1);
        size_t got = buf ? fread(buf, 1, (size_t)sb.st_size, f) : 0;
        fclose(f);
        found = buf && memmem(buf, got, needle, strlen(needle)) != NULL;
        free(buf);
    }
    closedir(d);
    return found;
}

static void test_auth_plaintext_passwords_are_in_no_file(void)
{
    need_cluster();
    const char *pws[] = {ROOT_PW, ALICE_PW, ALICE_PW2, BOB_PW,
                         "Carol-pw-40211"};
    for (size_t i = 0; i < 3; i++) {
        size_t files = 0;
        for (size_t k = 0; k < sizeof pws / sizeof pws[0]; k++) {
            CU_ASSERT(!tree_contains(cl.nodes[i].dir, pws[k], &files));
        }
        CU_ASSERT(files > 0);
        /* The check can fail: the hashes are there. */
        files = 0;
        CU_ASSERT(tree_contains(cl.nodes[i].dir, "$argon2id$", &files));
        CU_ASSERT(!h_log_contains(&cl, i, ALICE_PW));
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static CU_TestInfo tests[] = {
        {"test_auth_enable_needs_root_then_calls_need_a_token",
         test_auth_enable_needs_root_then_calls_need_a_token},
        {"test_auth_prefix_user_writes_inside_and_is_denied_outside",
         test_auth_prefix_user_writes_inside_and_is_denied_outside},
        {"test_auth_read_only_user_is_denied_writes",
         test_auth_read_only_user_is_denied_writes},
        {"test_auth_kvctl_user_role_and_auth_commands",
         test_auth_kvctl_user_role_and_auth_commands},
        {"test_auth_admin_operations_need_root",
         test_auth_admin_operations_need_root},
        {"test_auth_stale_reads_on_a_follower_check_permissions",
         test_auth_stale_reads_on_a_follower_check_permissions},
        {"test_auth_password_change_voids_the_old_token",
         test_auth_password_change_voids_the_old_token},
        {"test_auth_checks_cached_on_a_node_are_voided_by_a_change",
         test_auth_checks_cached_on_a_node_are_voided_by_a_change},
        {"test_auth_expired_token_is_refused_and_clerk_renews_it",
         test_auth_expired_token_is_refused_and_clerk_renews_it},
        {"test_auth_keepalive_stream_checks_every_renewal",
         test_auth_keepalive_stream_checks_every_renewal},
        {"test_auth_wrong_password_flood_leaves_the_leader_serving",
         test_auth_wrong_password_flood_leaves_the_leader_serving},
        {"test_auth_state_survives_restart_and_reaches_a_lagging_follower",
         test_auth_state_survives_restart_and_reaches_a_lagging_follower},
        {"test_auth_restored_cluster_has_the_users_and_roles",
         test_auth_restored_cluster_has_the_users_and_roles},
        {"test_auth_client_certificate_names_the_user",
         test_auth_client_certificate_names_the_user},
        {"test_auth_plaintext_passwords_are_in_no_file",
         test_auth_plaintext_passwords_are_in_no_file},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"auth", NULL, suite_teardown, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
