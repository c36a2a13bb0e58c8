/* test_auth.c: users, roles and permissions: range matching, tokens, the
 * replicated auth state applied through the state machine, snapshots. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <sodium.h>

#include <proto/kv.pb-c.h>

#include "auth.h"
#include "cunit_main.h"
#include "sm.h"
#include "snap.h"
#include "store.h"

#define NOW 1000000 /* wall-clock seconds used by the tests */

static char dir[64];
static struct kv_store st;
static MDB_txn *txn;
static uint64_t next_index = 1;

static void open_store(void)
{
    snprintf(dir, sizeof dir, "/tmp/raftkv-auth-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    CU_ASSERT_FATAL(kv_store_open(&st, dir, 0) == 0);
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
}

static void close_store(void)
{
    if (txn) {
        mdb_txn_abort(txn);
        txn = NULL;
    }
    kv_store_close(&st);
    cunit_remove_tree(dir);
}

/* Apply an auth command as the log would; return its AuthError. */
static int apply(Raftkv__AuthCommand *ac)
{
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_AUTH;
    c.auth = ac;
    uint8_t buf[1024];
    size_t len = raftkv__command__pack(&c, buf);
    struct kv_outcome o;
    CU_ASSERT_FATAL(kv_sm_apply(&st, txn, next_index++, buf, len, &o) == 0);
    int err = o.err;
    if (err) {
        CU_ASSERT(o.current != NULL && strlen((char *)o.current) > 0);
    }
    kv_outcome_clear(&o);
    return err;
}

static int user_put(const char *name, const char *password, bool add)
{
    char hash[crypto_pwhash_STRBYTES];
    CU_ASSERT_FATAL(kv_auth_hash_password(password, hash) == 0);
    Raftkv__UserPut p = RAFTKV__USER_PUT__INIT;
    p.name = (char *)name;
    p.password_hash = hash;
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    if (add) {
        ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_ADD;
        ac.user_add = &p;
    } else {
        ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_PASSWORD;
        ac.user_password = &p;
    }
    return apply(&ac);
}

static int role_add(const char *name)
{
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_ROLE_ADD;
    ac.role_add = (char *)name;
    return apply(&ac);
}

static int grant_role(const char *user, const char *role)
{
    Raftkv__UserGrantRoleArgs g = RAFTKV__USER_GRANT_ROLE_ARGS__INIT;
    g.user = (char *)user;
    g.role = (char *)role;
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_GRANT_ROLE;
    ac.grant_role = &g;
    return apply(&ac);
}

static int grant_perm(const char *role,
                      Raftkv__PermissionType type,
                      const char *key,
                      const void *end,
                      size_t end_len)
{
    Raftkv__Permission p = RAFTKV__PERMISSION__INIT;
    p.type = type;
    p.key.data = (uint8_t *)key;
    p.key.len = strlen(key);
    p.range_end.data = (uint8_t *)end;
    p.range_end.len = end_len;
    Raftkv__RoleGrantPermissionArgs g =
        RAFTKV__ROLE_GRANT_PERMISSION_ARGS__INIT;
    g.name = (char *)role;
    g.perm = &p;
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_GRANT_PERMISSION;
    ac.grant_permission = &g;
    return apply(&ac);
}

static int enable(uint8_t fill)
{
    uint8_t key[KV_AUTH_KEY_LEN];
    memset(key, fill, sizeof key);
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_ENABLE;
    ac.enable.data = key;
    ac.enable.len = sizeof key;
    return apply(&ac);
}

static int disable(void)
{
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_DISABLE;
    ac.disable = true;
    return apply(&ac);
}

static int authenticate(const char *user, const char *password, char *token)
{
    char msg[300];
    return kv_auth_authenticate(&st, txn, user, password, NOW, 300, token, msg,
                                sizeof msg);
}

static int check(const char *token,
                 const char *key,
                 enum kv_auth_need need,
                 char *msg)
{
    return kv_auth_check(&st, txn, token, NOW, key, key ? strlen(key) : 0, need,
                         NULL, NULL, msg, 400);
}

static bool covers(const char *key,
                   const void *end,
                   size_t end_len,
                   const void *k,
                   size_t klen)
{
    Raftkv__Permission p = RAFTKV__PERMISSION__INIT;
    p.key.data = (uint8_t *)key;
    p.key.len = strlen(key);
    p.range_end.data = (uint8_t *)end;
    p.range_end.len = end_len;
    return kv_auth_perm_covers(&p, k, klen);
}

#define COVERS(key, end, end_len, k) covers(key, end, end_len, k, strlen(k))

/* ----------------------------------------------------------- matching */

static void test_auth_permission_without_end_covers_only_its_key(void)
{
    CU_ASSERT(COVERS("app", NULL, 0, "app"));
    CU_ASSERT(!COVERS("app", NULL, 0, "app/x"));
    CU_ASSERT(!COVERS("app", NULL, 0, "ap"));
    CU_ASSERT(!COVERS("app", NULL, 0, "apq"));
}

static void test_auth_permission_range_is_half_open(void)
{
    CU_ASSERT(COVERS("b", "d", 1, "b"));
    CU_ASSERT(COVERS("b", "d", 1, "c"));
    CU_ASSERT(COVERS("b", "d", 1, "czzzz"));
    CU_ASSERT(!COVERS("b", "d", 1, "d"));
    CU_ASSERT(!COVERS("b", "d", 1, "a"));
    CU_ASSERT(!COVERS("b", "d", 1, "d0"));
}

static void test_auth_permission_zero_end_covers_every_key_from_start(void)
{
    CU_ASSERT(COVERS("m", "\0", 1, "m"));
    CU_ASSERT(COVERS("m", "\0", 1, "zzz"));
    CU_ASSERT(COVERS("m", "\0", 1, "\xff\xff"));
    CU_ASSERT(!COVERS("m", "\0", 1, "l"));
    /* key "\0" with end "\0": every key */
    Raftkv__Permission p = RAFTKV__PERMISSION__INIT;
    p.key.data = (uint8_t *)"\0";
    p.key.len = 1;
    p.range_end.data = (uint8_t *)"\0";
    p.range_end.len = 1;
    CU_ASSERT(kv_auth_perm_covers(&p, "a", 1));
    CU_ASSERT(kv_auth_perm_covers(&p, "\x01", 1));
}

static void test_auth_prefix_end_covers_exactly_the_prefix(void)
{
    uint8_t end[8];
    size_t n = kv_auth_prefix_end("app/", 4, end);
    CU_ASSERT(n == 4 && memcmp(end, "app0", 4) == 0);
    CU_ASSERT(COVERS("app/", end, n, "app/"));
    CU_ASSERT(COVERS("app/", end, n, "app/x"));
    CU_ASSERT(COVERS("app/", end, n, "app/\xff\xff"));
    CU_ASSERT(!COVERS("app/", end, n, "app"));
    CU_ASSERT(!COVERS("app/", end, n, "app0"));
    CU_ASSERT(!COVERS("app/", end, n, "other"));
    /* A trailing 0xff is cut and the byte before it incremented. */
    n = kv_auth_prefix_end("a\xff", 2, end);
    CU_ASSERT(n == 1 && end[0] == 'b');
    /* All 0xff: every key from the prefix on. */
    n = kv_auth_prefix_end("\xff\xff", 2, end);
    CU_ASSERT(n == 1 && end[0] == 0);
}

/* -------------------------------------------------------------- tokens */

static void test_auth_token_verifies_and_names_its_user(void)
{
    uint8_t key[KV_AUTH_KEY_LEN];
    randombytes_buf(key, sizeof key);
    char token[KV_AUTH_TOKEN_MAX], user[KV_AUTH_MAX_NAME + 1];
    uint64_t version = 0;
    CU_ASSERT_FATAL(kv_auth_token_sign(key, "alice", NOW + 10, 42, token) == 0);
    CU_ASSERT(kv_auth_token_verify(key, token, NOW, user, &version) ==
              KV_AUTH_TOKEN_OK);
    CU_ASSERT_STRING_EQUAL(user, "alice");
    CU_ASSERT(version == 42);
}

static void test_auth_token_expired_is_refused(void)
{
    uint8_t key[KV_AUTH_KEY_LEN];
    randombytes_buf(key, sizeof key);
    char token[KV_AUTH_TOKEN_MAX], user[KV_AUTH_MAX_NAME + 1];
    uint64_t version;
    CU_ASSERT_FATAL(kv_auth_token_sign(key, "alice", NOW + 10, 1, token) == 0);
    CU_ASSERT(kv_auth_token_verify(key, token, NOW + 9, user, &version) ==
              KV_AUTH_TOKEN_OK);
    CU_ASSERT(kv_auth_token_verify(key, token, NOW + 10, user, &version) ==
              KV_AUTH_TOKEN_EXPIRED);
    CU_ASSERT(kv_auth_token_verify(key, token, NOW + 1000, user, &version) ==
              KV_AUTH_TOKEN_EXPIRED);
}

static void test_auth_token_altered_anywhere_is_refused(void)
{
    uint8_t key[KV_AUTH_KEY_LEN];
    randombytes_buf(key, sizeof key);
    char token[KV_AUTH_TOKEN_MAX], user[KV_AUTH_MAX_NAME + 1];
    uint64_t version;
    CU_ASSERT_FATAL(kv_auth_token_sign(key, "bob", NOW + 10, 7, token) == 0);
    size_t len = strlen(token);
    for (size_t i = 0; i < len; i++) {
        char copy[KV_AUTH_TOKEN_MAX];
        memcpy(copy, token, len + 1);
        /* Another character of the same class, so the format may hold. */
        char c = copy[i];
        copy[i] = c == '.'                 ? ','
                  : (c >= '0' && c <= '8') ? (char)(c + 1)
                  : c == '9'               ? '0'
                  : c == 'f'               ? 'a'
                                           : (char)(c + 1);
        int rv = kv_auth_token_verify(key, copy, NOW, user, &version);
        CU_ASSERT(rv == KV_AUTH_TOKEN_BAD_MAC || rv == KV_AUTH_TOKEN_MALFORMED);
    }
    /* A later expiry with the old signature: the signature gives it away. */
    char forged[KV_AUTH_TOKEN_MAX], other[KV_AUTH_TOKEN_MAX];
    CU_ASSERT_FATAL(kv_auth_token_sign(key, "bob", NOW + 99999, 7, other) == 0);
    const char *mac = strrchr(token, '.');
    snprintf(forged, sizeof forged, "%.*s%s",
             (int)(strrchr(other, '.') - other), other, mac);
    CU_ASSERT(kv_auth_token_verify(key, forged, NOW, user, &version) ==
              KV_AUTH_TOKEN_BAD_MAC);
    CU_ASSERT(kv_auth_token_verify(key, "", NOW, user, &version) ==
              KV_AUTH_TOKEN_MALFORMED);
    CU_ASSERT(kv_auth_token_verify(key, "v1.", NOW, user, &version) ==
              KV_AUTH_TOKEN_MALFORMED);
}

static void test_auth_token_of_another_key_is_refused(void)
{
    uint8_t key[KV_AUTH_KEY_LEN], key2[KV_AUTH_KEY_LEN];
    randombytes_buf(key, sizeof key);
    memcpy(key2, key, sizeof key);
    key2[31] ^= 1;
    char token[KV_AUTH_TOKEN_MAX], user[KV_AUTH_MAX_NAME + 1];
    uint64_t version;
    CU_ASSERT_FATAL(kv_auth_token_sign(key, "bob", NOW + 10, 7, token) == 0);
    CU_ASSERT(kv_auth_token_verify(key2, token, NOW, user, &version) ==
              KV_AUTH_TOKEN_BAD_MAC);
}

/* --------------------------------------------------------------- state */

/* root, and bob with readwrite on prefix app/ and read on "pub". */
static void set_up_users(void)
{
    CU_ASSERT_FATAL(user_put("root", "rootpw", true) == 0);
    CU_ASSERT_FATAL(grant_role("root", "root") == 0);
    CU_ASSERT_FATAL(user_put("bob", "bobpw", true) == 0);
    CU_ASSERT_FATAL(role_add("app") == 0);
    uint8_t end[8];
    size_t n = kv_auth_prefix_end("app/", 4, end);
    CU_ASSERT_FATAL(grant_perm("app", RAFTKV__PERMISSION_TYPE__PERM_READWRITE,
                               "app/", end, n) == 0);
    CU_ASSERT_FATAL(role_add("reader") == 0);
    CU_ASSERT_FATAL(grant_perm("reader", RAFTKV__PERMISSION_TYPE__PERM_READ,
                               "pub", NULL, 0) == 0);
    CU_ASSERT_FATAL(grant_role("bob", "app") == 0);
    CU_ASSERT_FATAL(grant_role("bob", "reader") == 0);
}

static void test_auth_enable_needs_a_root_user_with_role_root(void)
{
    open_store();
    CU_ASSERT(enable(1) == RAFTKV__AUTH_ERROR__AUTH_ROOT_NEEDED);
    CU_ASSERT(user_put("root", "pw", true) == 0);
    CU_ASSERT(enable(1) == RAFTKV__AUTH_ERROR__AUTH_ROOT_NEEDED);
    CU_ASSERT(grant_role("root", "root") == 0);
    CU_ASSERT(enable(1) == 0);
    bool on = false;
    CU_ASSERT(kv_auth_enabled(&st, txn, &on) == 0 && on);
    /* root stays while auth is on */
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_DELETE;
    ac.user_delete = "root";
    CU_ASSERT(apply(&ac) == RAFTKV__AUTH_ERROR__AUTH_ROOT_NEEDED);
    close_store();
}

static void test_auth_disabled_allows_everything_enabled_checks_roles(void)
{
    open_store();
    set_up_users();
    char msg[400], token[KV_AUTH_TOKEN_MAX];
    /* Disabled: no token needed. */
    CU_ASSERT(check("", "other", KV_AUTH_WRITE, msg) == 0);
    CU_ASSERT(authenticate("bob", "bobpw", token) ==
              RAFTKV__AUTH_ERROR__AUTH_NOT_ENABLED);
    CU_ASSERT_FATAL(enable(7) == 0);
    CU_ASSERT(check("", "app/x", KV_AUTH_READ, msg) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    CU_ASSERT(strstr(msg, "no token") != NULL);
    CU_ASSERT(authenticate("bob", "wrong", token) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    CU_ASSERT(authenticate("nobody", "bobpw", token) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    CU_ASSERT_FATAL(authenticate("bob", "bobpw", token) == 0);
    CU_ASSERT(check(token, "app/x", KV_AUTH_WRITE, msg) == 0);
    CU_ASSERT(check(token, "app/x", KV_AUTH_READWRITE, msg) == 0);
    CU_ASSERT(check(token, "pub", KV_AUTH_READ, msg) == 0);
    CU_ASSERT(check(token, NULL, KV_AUTH_ANY, msg) == 0);
    CU_ASSERT(check(token, "pub", KV_AUTH_WRITE, msg) ==
              RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED);
    CU_ASSERT(check(token, "pub", KV_AUTH_READWRITE, msg) ==
              RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED);
    CU_ASSERT(check(token, "other", KV_AUTH_WRITE, msg) ==
              RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED);
    CU_ASSERT_STRING_EQUAL(msg,
                           "user 'bob' (roles: app, reader) may not "
                           "write key 'other'");
    char root[KV_AUTH_TOKEN_MAX];
    CU_ASSERT_FATAL(authenticate("root", "rootpw", root) == 0);
    bool is_root = false;
    CU_ASSERT(kv_auth_check(&st, txn, root, NOW, "other", 5, KV_AUTH_WRITE,
                            NULL, &is_root, msg, sizeof msg) == 0);
    CU_ASSERT(is_root);
    /* Expired: said so. */
    CU_ASSERT(kv_auth_check(&st, txn, token, NOW + 301, "app/x", 5,
                            KV_AUTH_READ, NULL, NULL, msg, sizeof msg) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    CU_ASSERT(strstr(msg, "expired") != NULL);
    close_store();
}

static void test_auth_client_certificate_names_the_user(void)
{
    open_store();
    set_up_users();
    CU_ASSERT_FATAL(enable(7) == 0);
    char msg[400], user[KV_AUTH_MAX_NAME + 1];
    bool root = true;
    CU_ASSERT(kv_auth_check_as(&st, txn, "", "bob", NOW, "app/x", 5,
                               KV_AUTH_WRITE, user, &root, msg,
                               sizeof msg) == 0);
    CU_ASSERT_STRING_EQUAL(user, "bob");
    CU_ASSERT(!root);
    CU_ASSERT(kv_auth_check_as(&st, txn, "", "bob", NOW, "other", 5,
                               KV_AUTH_WRITE, NULL, NULL, msg, sizeof msg) ==
              RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED);
    CU_ASSERT(kv_auth_check_as(&st, txn, "", "root", NOW, "other", 5,
                               KV_AUTH_WRITE, NULL, &root, msg,
                               sizeof msg) == 0);
    CU_ASSERT(root);
    /* A name that is no user gets nothing. */
    CU_ASSERT(kv_auth_check_as(&st, txn, "", "mallory", NOW, "app/x", 5,
                               KV_AUTH_READ, NULL, NULL, msg, sizeof msg) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    CU_ASSERT(strstr(msg, "not a user") != NULL);
    /* A token, when there is one, wins over the certificate. */
    CU_ASSERT(kv_auth_check_as(&st, txn, "v1.bad", "root", NOW, "other", 5,
                               KV_AUTH_WRITE, NULL, NULL, msg, sizeof msg) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    close_store();
}

static void test_auth_password_change_delete_and_reenable_void_tokens(void)
{
    open_store();
    set_up_users();
    CU_ASSERT_FATAL(enable(7) == 0);
    char msg[400], token[KV_AUTH_TOKEN_MAX];
    CU_ASSERT_FATAL(authenticate("bob", "bobpw", token) == 0);
    CU_ASSERT(user_put("bob", "newpw", false) == 0);
    CU_ASSERT(check(token, "app/x", KV_AUTH_READ, msg) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    CU_ASSERT(strstr(msg, "password") != NULL);
    CU_ASSERT(authenticate("bob", "bobpw", token) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    CU_ASSERT_FATAL(authenticate("bob", "newpw", token) == 0);
    CU_ASSERT(check(token, "app/x", KV_AUTH_READ, msg) == 0);
    /* Disable and enable again: a new key, the token is void. */
    CU_ASSERT(disable() == 0);
    CU_ASSERT(enable(8) == 0);
    CU_ASSERT(check(token, "app/x", KV_AUTH_READ, msg) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    CU_ASSERT_FATAL(authenticate("bob", "newpw", token) == 0);
    /* Deleted, and added again with the same password: still void. */
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_DELETE;
    ac.user_delete = "bob";
    CU_ASSERT(apply(&ac) == 0);
    CU_ASSERT(check(token, "app/x", KV_AUTH_READ, msg) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    CU_ASSERT(user_put("bob", "newpw", true) == 0);
    CU_ASSERT(grant_role("bob", "app") == 0);
    CU_ASSERT(check(token, "app/x", KV_AUTH_READ, msg) ==
              RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED);
    close_store();
}

static void test_auth_role_delete_takes_it_from_users(void)
{
    open_store();
    set_up_users();
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_ROLE_DELETE;
    ac.role_delete = "app";
    CU_ASSERT(apply(&ac) == 0);
    CU_ASSERT(apply(&ac) == RAFTKV__AUTH_ERROR__AUTH_ROLE_NOT_FOUND);
    Raftkv__AuthUserRecord *u;
    CU_ASSERT_FATAL(kv_auth_get_user(&st, txn, "bob", &u) == 0 && u);
    CU_ASSERT(u->n_roles == 1 && strcmp(u->roles[0], "reader") == 0);
    raftkv__auth_user_record__free_unpacked(u, NULL);
    CU_ASSERT(role_add("reader") == RAFTKV__AUTH_ERROR__AUTH_ROLE_EXISTS);
    CU_ASSERT(user_put("bob", "x", true) ==
              RAFTKV__AUTH_ERROR__AUTH_USER_EXISTS);
    CU_ASSERT(grant_role("bob", "nope") ==
              RAFTKV__AUTH_ERROR__AUTH_ROLE_NOT_FOUND);
    CU_ASSERT(grant_role("nobody", "reader") ==
              RAFTKV__AUTH_ERROR__AUTH_USER_NOT_FOUND);
    close_store();
}

/* Whether the bytes occur anywhere in the file. */
static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return false;
    }
    size_t nl = strlen(needle), cap = 1 << 20, have = 0;
    char *buf = malloc(cap);
    bool found = false;
    size_t r;
    while (buf && (r = fread(buf + have, 1, cap - have, f)) > 0) {
        have += r;
        for (size_t i = 0; i + nl <= have; i++) {
            if (memcmp(buf + i, needle, nl) == 0) {
                found = true;
            }
        }
        /* keep the last nl-1 bytes */
        size_t keep = have < nl ? have : nl - 1;
        memmove(buf, buf + have - keep, keep);
        have = keep;
    }
    free(buf);
    fclose(f);
    return found;
}

static void test_auth_password_is_stored_only_as_argon2id_hash(void)
{
    open_store();
    CU_ASSERT_FATAL(user_put("carol", "plain-Secret-4711", true) == 0);
    Raftkv__AuthUserRecord *u;
    CU_ASSERT_FATAL(kv_auth_get_user(&st, txn, "carol", &u) == 0 && u);
    CU_ASSERT(strncmp(u->password_hash, "$argon2id$", 10) == 0);
    CU_ASSERT(strstr(u->password_hash, "plain-Secret") == NULL);
    raftkv__auth_user_record__free_unpacked(u, NULL);
    CU_ASSERT_FATAL(mdb_txn_commit(txn) == 0);
    txn = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    CU_ASSERT(file_contains(path, "$argon2id$")); /* the check can fail */
    CU_ASSERT(!file_contains(path, "plain-Secret-4711"));
    /* A plain password in the command is refused, never stored. */
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    Raftkv__UserPut p = RAFTKV__USER_PUT__INIT;
    p.name = "dave";
    p.password_hash = "plain-Secret-4711";
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_ADD;
    ac.user_add = &p;
    CU_ASSERT(apply(&ac) == RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST);
    close_store();
}

static void test_auth_state_travels_in_snapshot_streams(void)
{
    open_store();
    set_up_users();
    CU_ASSERT_FATAL(enable(9) == 0);
    char token[KV_AUTH_TOKEN_MAX], msg[400];
    CU_ASSERT_FATAL(authenticate("bob", "bobpw", token) == 0);
    CU_ASSERT_FATAL(mdb_txn_commit(txn) == 0);
    txn = NULL;
    struct snap_stream s;
    CU_ASSERT_FATAL(snap_stream_open(&st, &s) == 0);
    size_t cap = 1 << 20, len = 0, got;
    uint8_t *stream = malloc(cap);
    bool done = false;
    while (!done) {
        CU_ASSERT_FATAL(
            snap_stream_read(&st, &s, stream + len, 97, &got, &done) == 0);
        len += got;
    }
    snap_stream_close(&s);

    char dst_dir[64];
    snprintf(dst_dir, sizeof dst_dir, "/tmp/raftkv-auth-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dst_dir) != NULL);
    struct kv_store dst;
    CU_ASSERT_FATAL(kv_store_open(&dst, dst_dir, 0) == 0);
    MDB_txn *t;
    CU_ASSERT_FATAL(mdb_txn_begin(dst.env, NULL, 0, &t) == 0);
    CU_ASSERT_FATAL(snap_stage(&dst, t, 0, stream, len) == 0);
    uint64_t index, term;
    CU_ASSERT_FATAL(snap_install(&dst, t, &index, &term) == 0);
    bool on = false;
    CU_ASSERT(kv_auth_enabled(&dst, t, &on) == 0 && on);
    /* Same key, same users and roles: the token works there. */
    CU_ASSERT(kv_auth_check(&dst, t, token, NOW, "app/x", 5, KV_AUTH_WRITE,
                            NULL, NULL, msg, sizeof msg) == 0);
    CU_ASSERT(kv_auth_check(&dst, t, token, NOW, "other", 5, KV_AUTH_WRITE,
                            NULL, NULL, msg, sizeof msg) ==
              RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED);
    mdb_txn_abort(t);
    kv_store_close(&dst);
    cunit_remove_tree(dst_dir);
    free(stream);
    close_store();
}

/* Range checks: the user's permissions together must cover the range. */
static int check_range(const char *token,
                       const char *key,
                       const void *end,
                       size_t end_len,
                       enum kv_auth_need need,
                       char *msg)
{
    return kv_auth_check_range_as(&st, txn, token, NULL, NOW, key, strlen(key),
                                  end, end_len, need, NULL, NULL, msg, 400);
}

static void test_auth_range_needs_the_union_of_permissions_to_cover_it(void)
{
    open_store();
    set_up_users();
    /* carol reads [a, c) with one role, [c, e) with another, writes [b, d) */
    CU_ASSERT_FATAL(user_put("carol", "pw", true) == 0);
    CU_ASSERT_FATAL(role_add("r1") == 0 && role_add("r2") == 0);
    CU_ASSERT_FATAL(
        grant_perm("r1", RAFTKV__PERMISSION_TYPE__PERM_READ, "a", "c", 1) == 0);
    CU_ASSERT_FATAL(
        grant_perm("r2", RAFTKV__PERMISSION_TYPE__PERM_READ, "c", "e", 1) == 0);
    CU_ASSERT_FATAL(grant_perm("r2", RAFTKV__PERMISSION_TYPE__PERM_WRITE, "b",
                               "d", 1) == 0);
    CU_ASSERT_FATAL(grant_role("carol", "r1") == 0);
    CU_ASSERT_FATAL(grant_role("carol", "r2") == 0);
    CU_ASSERT_FATAL(enable(3) == 0);
    char token[KV_AUTH_TOKEN_MAX], msg[400];
    CU_ASSERT_FATAL(authenticate("carol", "pw", token) == 0);
    int ok = RAFTKV__AUTH_ERROR__AUTH_OK;
    int denied = RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED;
    CU_ASSERT_EQUAL(check_range(token, "a", "e", 1, KV_AUTH_READ, msg), ok);
    CU_ASSERT_EQUAL(check_range(token, "aa", "d", 1, KV_AUTH_READ, msg), ok);
    CU_ASSERT_EQUAL(check_range(token, "a", "e\0", 2, KV_AUTH_READ, msg),
                    denied);
    CU_ASSERT(strstr(msg, "every key of ['a', 'e") != NULL);
    CU_ASSERT_EQUAL(check_range(token, "0", "b", 1, KV_AUTH_READ, msg), denied);
    CU_ASSERT_EQUAL(check_range(token, "d", "", 1, KV_AUTH_READ, msg), denied);
    /* read and write: both must cover it */
    CU_ASSERT_EQUAL(check_range(token, "b", "c", 1, KV_AUTH_READWRITE, msg),
                    ok);
    CU_ASSERT_EQUAL(check_range(token, "a", "c", 1, KV_AUTH_READWRITE, msg),
                    denied);
    CU_ASSERT_EQUAL(check_range(token, "b", "d", 1, KV_AUTH_WRITE, msg), ok);
    CU_ASSERT_EQUAL(check_range(token, "b", "d0", 2, KV_AUTH_WRITE, msg),
                    denied);
    /* bob: prefix app/ covers the prefix range; a single-key permission
     * covers exactly that key, not a range from it */
    CU_ASSERT_FATAL(authenticate("bob", "bobpw", token) == 0);
    uint8_t end[8];
    size_t n = kv_auth_prefix_end("app/", 4, end);
    CU_ASSERT_EQUAL(check_range(token, "app/", end, n, KV_AUTH_WRITE, msg), ok);
    CU_ASSERT_EQUAL(check_range(token, "app/x/", "app/y", 5, KV_AUTH_READ, msg),
                    ok);
    CU_ASSERT_EQUAL(check_range(token, "app", end, n, KV_AUTH_READ, msg),
                    denied);
    CU_ASSERT_EQUAL(check_range(token, "pub", "pub\0", 4, KV_AUTH_READ, msg),
                    ok);
    CU_ASSERT_EQUAL(check_range(token, "pub", "puc", 3, KV_AUTH_READ, msg),
                    denied);
    close_store();
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 1;
    }
    static CU_TestInfo tests[] = {
        {"test_auth_permission_without_end_covers_only_its_key",
         test_auth_permission_without_end_covers_only_its_key},
        {"test_auth_permission_range_is_half_open",
         test_auth_permission_range_is_half_open},
        {"test_auth_permission_zero_end_covers_every_key_from_start",
         test_auth_permission_zero_end_covers_every_key_from_start},
        {"test_auth_prefix_end_covers_exactly_the_prefix",
         test_auth_prefix_end_covers_exactly_the_prefix},
        {"test_auth_token_verifies_and_names_its_user",
         test_auth_token_verifies_and_names_its_user},
        {"test_auth_token_expired_is_refused",
         test_auth_token_expired_is_refused},
        {"test_auth_token_altered_anywhere_is_refused",
         test_auth_token_altered_anywhere_is_refused},
        {"test_auth_token_of_another_key_is_refused",
         test_auth_token_of_another_key_is_refused},
        {"test_auth_enable_needs_a_root_user_with_role_root",
         test_auth_enable_needs_a_root_user_with_role_root},
        {"test_auth_disabled_allows_everything_enabled_checks_roles",
         test_auth_disabled_allows_everything_enabled_checks_roles},
        {"test_auth_client_certificate_names_the_user",
         test_auth_client_certificate_names_the_user},
        {"test_auth_password_change_delete_and_reenable_void_tokens",
         test_auth_password_change_delete_and_reenable_void_tokens},
        {"test_auth_role_delete_takes_it_from_users",
         test_auth_role_delete_takes_it_from_users},
        {"test_auth_password_is_stored_only_as_argon2id_hash",
         test_auth_password_is_stored_only_as_argon2id_hash},
        {"test_auth_state_travels_in_snapshot_streams",
         test_auth_state_travels_in_snapshot_streams},
        {"test_auth_range_needs_the_union_of_permissions_to_cover_it",
         test_auth_range_needs_the_union_of_permissions_to_cover_it},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"auth", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
