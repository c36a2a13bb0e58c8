/* auth.c: the replicated auth state (users, roles, permissions, enabled
 * flag, token key) in the LMDB database "auth", permission checks and
 * stateless signed tokens.
 *
 * Database "auth": "enabled" -> 1 byte; "key" -> the 32-byte token key
 * (only while enabled); "rev" -> u64 log index of the last change;
 * "u/NAME" -> AuthUserRecord; "r/NAME" -> AuthRoleRecord (protobuf). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "auth.h"

#define DBKEY_MAX (2 + KV_AUTH_MAX_NAME)

/* ---------------------------------------------------------------- pure */

bool kv_auth_perm_covers(const Raftkv__Permission *p,
                         const void *key,
                         size_t key_len)
{
    const ProtobufCBinaryData *k = &p->key, *e = &p->range_end;
    size_t m = k->len < key_len ? k->len : key_len;
    int c = m ? memcmp(key, k->data, m) : 0;
    int cmp_start = c ? c : (key_len > k->len) - (key_len < k->len);
    if (e->len == 0) {
        return cmp_start == 0;
    }
    if (cmp_start < 0) {
        return false;
    }
    if (e->len == 1 && e->data[0] == 0) {
        return true; /* every key from key on */
    }
    m = e->len < key_len ? e->len : key_len;
    c = m ? memcmp(key, e->data, m) : 0;
    int cmp_end = c ? c : (key_len > e->len) - (key_len < e->len);
    return cmp_end < 0;
}

size_t kv_auth_prefix_end(const void *prefix, size_t len, uint8_t *out)
{
    const uint8_t *p = prefix;
    for (size_t i = len; i > 0; i--) {
        if (p[i - 1] < 0xff) {
            memcpy(out, p, i - 1);
            out[i - 1] = (uint8_t)(p[i - 1] + 1);
            return i;
        }
    }
    out[0] = 0;
    return 1;
}

int kv_auth_hash_password(const char *password, char *out)
{
    if (crypto_pwhash_str(out, password, strlen(password),
                          crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        return -1;
    }
    return 0;
}

static void hex_encode(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Decode exactly n bytes from 2n hex digits; false on anything else. */
static bool hex_decode(uint8_t *out, const char *s, size_t slen, size_t n)
{
    if (slen != 2 * n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

int kv_auth_token_sign(const uint8_t key[KV_AUTH_KEY_LEN],
                       const char *user,
                       uint64_t expiry_s,
                       uint64_t password_version,
                       char *token)
{
    size_t ul = strlen(user);
    if (ul == 0 || ul > KV_AUTH_MAX_NAME) {
        return -1;
    }
    char hexuser[2 * KV_AUTH_MAX_NAME + 1];
    hex_encode(hexuser, (const uint8_t *)user, ul);
    int n = snprintf(token, KV_AUTH_TOKEN_MAX, "v1.%s.%" PRIu64 ".%" PRIu64 ".",
                     hexuser, expiry_s, password_version);
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256(mac, (const uint8_t *)token, (size_t)n - 1, key);
    hex_encode(token + n, mac, sizeof mac);
    return 0;
}

/* Parse a decimal u64 of exactly len characters. */
static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

int kv_auth_token_verify(const uint8_t key[KV_AUTH_KEY_LEN],
                         const char *token,
                         uint64_t now_s,
                         char *user,
                         uint64_t *password_version)
{
    size_t len = strlen(token);
    if (len < 3 || len >= KV_AUTH_TOKEN_MAX || memcmp(token, "v1.", 3) != 0) {
        return KV_AUTH_TOKEN_MALFORMED;
    }
    const char *dot = strrchr(token, '.');
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    if (!hex_decode(mac, dot + 1, strlen(dot + 1), sizeof mac)) {
        return KV_AUTH_TOKEN_MALFORMED;
    }
    if (crypto_auth_hmacsha256_verify(mac, (const uint8_t *)token,
                                      (size_t)(dot - token), key) != 0) {
        return KV_AUTH_TOKEN_BAD_MAC;
    }
    /* Signed by us: the fields are as kv_auth_token_sign wrote them. */
    const char *f1 = token + 3, *e1 = strchr(f1, '.');
    const char *f2 = e1 + 1, *e2 = strchr(f2, '.');
    const char *f3 = e2 + 1;
    uint64_t expiry;
    size_t ul = (size_t)(e1 - f1) / 2;
    if (ul == 0 || ul > KV_AUTH_MAX_NAME ||
        !hex_decode((uint8_t *)user, f1, (size_t)(e1 - f1), ul) ||
        !parse_u64(f2, (size_t)(e2 - f2), &expiry) ||
        !parse_u64(f3, (size_t)(dot - f3), password_version)) {
        return KV_AUTH_TOKEN_MALFORMED;
    }
    user[ul] = 0;
    if (expiry <= now_s) {
        return KV_AUTH_TOKEN_EXPIRED;
    }
    return KV_AUTH_TOKEN_OK;
}

/* ------------------------------------------------------------- storage */

static size_t dbkey(char *out, char kind, const char *name)
{
    return (size_t)snprintf(out, DBKEY_MAX + 1, "%c/%s", kind, name);
}

static int get_raw(struct kv_store *st,
                   MDB_txn *txn,
                   const void *k,
                   size_t klen,
                   MDB_val *v)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_get(txn, st->auth, &key, v);
    if (rc == MDB_NOTFOUND) {
        return 1;
    }
    return rc ? -kv_store_fail(st, rc, "read auth state") : 0;
}

static int put_raw(struct kv_store *st,
                   MDB_txn *txn,
                   const void *k,
                   size_t klen,
                   const void *v,
                   size_t vlen)
{
    MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};
    int rc = mdb_put(txn, st->auth, &key, &val, 0);
    return rc ? kv_store_fail(st, rc, "write auth state") : 0;
}

static int del_raw(struct kv_store *st, MDB_txn *txn, const char *k)
{
    MDB_val key = {strlen(k), (void *)k};
    int rc = mdb_del(txn, st->auth, &key, NULL);
    return rc && rc != MDB_NOTFOUND ? kv_store_fail(st, rc, "delete auth state")
                                    : 0;
}

int kv_auth_enabled(struct kv_store *st, MDB_txn *txn, bool *enabled)
{
    MDB_val v;
    int rc = get_raw(st, txn, "enabled", 7, &v);
    if (rc < 0) {
        return -rc;
    }
    *enabled = rc == 0 && v.mv_size == 1 && ((uint8_t *)v.mv_data)[0] == 1;
    return 0;
}

int kv_auth_revision(struct kv_store *st, MDB_txn *txn, uint64_t *rev)
{
    MDB_val v;
    int rc = get_raw(st, txn, "rev", 3, &v);
    if (rc < 0) {
        return -rc;
    }
    *rev = rc == 0 && v.mv_size == 8 ? kv_get_u64(v.mv_data) : 0;
    return 0;
}

/* The auth record of @what (user or role) @name, unpacked as @desc, or
 * NULL in *out when there is none. */
static int get_record(struct kv_store *st,
                      MDB_txn *txn,
                      char kind,
                      const char *what,
                      const char *name,
                      const ProtobufCMessageDescriptor *desc,
                      ProtobufCMessage **out)
{
    *out = NULL;
    char k[DBKEY_MAX + 1];
    if (strlen(name) > KV_AUTH_MAX_NAME) {
        return 0;
    }
    MDB_val v;
    int rc = get_raw(st, txn, k, dbkey(k, kind, name), &v);
    if (rc < 0) {
        return -rc;
    }
    if (rc == 0) {
        *out = protobuf_c_message_unpack(desc, NULL, v.mv_size, v.mv_data);
        if (!*out) {
            snprintf(st->errmsg, sizeof st->errmsg,
                     "%s: auth record of %s '%s' does not decode", st->dir,
                     what, name);
            return KV_STORE_ECORRUPT;
        }
    }
    return 0;
}

int kv_auth_get_user(struct kv_store *st,
                     MDB_txn *txn,
                     const char *name,
                     Raftkv__AuthUserRecord **out)
{
    return get_record(st, txn, 'u', "user", name,
                      &raftkv__auth_user_record__descriptor,
                      (ProtobufCMessage **)out);
}

int kv_auth_get_role(struct kv_store *st,
                     MDB_txn *txn,
                     const char *name,
                     Raftkv__AuthRoleRecord **out)
{
    return get_record(st, txn, 'r', "role", name,
                      &raftkv__auth_role_record__descriptor,
                      (ProtobufCMessage **)out);
}

static int put_message(struct kv_store *st,
                       MDB_txn *txn,
                       char kind,
                       const char *name,
                       const ProtobufCMessage *m)
{
    char k[DBKEY_MAX + 1];
    size_t klen = dbkey(k, kind, name);
    size_t len = protobuf_c_message_get_packed_size(m);
    MDB_val key = {klen, k}, val = {len, NULL};
    int rc = mdb_put(txn, st->auth, &key, &val, MDB_RESERVE);
    if (rc) {
        return kv_store_fail(st, rc, "write auth record");
    }
    protobuf_c_message_pack(m, val.mv_data);
    return 0;
}

int kv_auth_list(struct kv_store *st,
                 MDB_txn *txn,
                 char kind,
                 char ***names,
                 size_t *n)
{
    *names = NULL;
    *n = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->auth, &cur);
    if (rc) {
        return kv_store_fail(st, rc, "open auth cursor");
    }
    char prefix[2] = {kind, '/'};
    MDB_val k = {2, prefix}, v;
    size_t cap = 0;
    int rv = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 2 || memcmp(k.mv_data, prefix, 2) != 0) {
            break;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(*names, cap * sizeof *nn);
            if (!nn) {
                rv = KV_STORE_ENOMEM;
                break;
            }
            *names = nn;
        }
        char *s = malloc(k.mv_size - 1);
        if (!s) {
            rv = KV_STORE_ENOMEM;
            break;
        }
        memcpy(s, (char *)k.mv_data + 2, k.mv_size - 2);
        s[k.mv_size - 2] = 0;
        (*names)[(*n)++] = s;
    }
    mdb_cursor_close(cur);
    if (!rv && rc && rc != MDB_NOTFOUND) {
        rv = kv_store_fail(st, rc, "list auth records");
    }
    if (rv) {
        for (size_t i = 0; i < *n; i++) {
            free((*names)[i]);
        }
        free(*names);
        *names = NULL;
        *n = 0;
    }
    return rv;
}

/* --------------------------------------------------------------- apply */

/* Set the outcome of a command: its error and a message for people. */
static int outcome(struct kv_outcome *out, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int outcome(struct kv_outcome *out, int err, const char *fmt, ...)
{
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    out->err = err;
    out->current_len = strlen(buf);
    out->current = malloc(out->current_len + 1);
    if (!out->current) {
        out->current_len = 0;
        return KV_STORE_ENOMEM;
    }
    memcpy(out->current, buf, out->current_len + 1);
    return 0;
}

/* A user or role name: 1 to KV_AUTH_MAX_NAME printable bytes, no '/'
 * (and for users no ':', which kvctl --user NAME:PASSWORD splits on). */
static bool valid_name(const char *s, bool user)
{
    size_t len = strlen(s);
    if (len == 0 || len > KV_AUTH_MAX_NAME) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c == 0x7f || c == '/' || (user && c == ':')) {
            return false;
        }
    }
    return true;
}

static bool has_role(const Raftkv__AuthUserRecord *u, const char *role)
{
    for (size_t i = 0; i < u->n_roles; i++) {
        if (strcmp(u->roles[i], role) == 0) {
            return true;
        }
    }
    return false;
}

/* Remove a role from a user's list (unpacked with the default allocator:
 * the dropped string is freed here, as free_unpacked frees only the
 * n_roles that remain). */
static void drop_role(Raftkv__AuthUserRecord *u, const char *role)
{
    size_t j = 0;
    for (size_t i = 0; i < u->n_roles; i++) {
        if (strcmp(u->roles[i], role) != 0) {
            u->roles[j++] = u->roles[i];
        } else {
            free(u->roles[i]);
        }
    }
    u->n_roles = j;
}

static int user_put(struct kv_store *st,
                    MDB_txn *txn,
                    uint64_t index,
                    const Raftkv__UserPut *a,
                    bool add,
                    struct kv_outcome *out)
{
    if (!a || !valid_name(a->name, true)) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST,
                       "a user name is 1 to %d printable characters, without "
                       "'/', ':' or spaces",
                       KV_AUTH_MAX_NAME);
    }
    size_t hl = strlen(a->password_hash);
    if (hl == 0 || hl >= crypto_pwhash_STRBYTES ||
        strncmp(a->password_hash, "$argon2", 7) != 0) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST,
                       "user '%s': the password must come as an Argon2 hash",
                       a->name);
    }
    Raftkv__AuthUserRecord *u;
    int rv = kv_auth_get_user(st, txn, a->name, &u);
    if (rv) {
        return rv;
    }
    if (add && u) {
        raftkv__auth_user_record__free_unpacked(u, NULL);
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_USER_EXISTS,
                       "user '%s' exists already", a->name);
    }
    if (!add && !u) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_USER_NOT_FOUND,
                       "no user '%s'", a->name);
    }
    Raftkv__AuthUserRecord rec = RAFTKV__AUTH_USER_RECORD__INIT;
    if (u) {
        rec = *u;
    }
    rec.name = a->name;
    rec.password_hash = a->password_hash;
    /* The log index: unique, so a token of an earlier password (or of an
     * earlier user of the same name) never matches again. */
    rec.password_version = index;
    rv = put_message(st, txn, 'u', a->name, &rec.base);
    if (u) {
        raftkv__auth_user_record__free_unpacked(u, NULL);
    }
    return rv;
}

static int user_delete(struct kv_store *st,
                       MDB_txn *txn,
                       const char *name,
                       bool enabled,
                       struct kv_outcome *out)
{
    Raftkv__AuthUserRecord *u;
    int rv = kv_auth_get_user(st, txn, name, &u);
    if (rv) {
        return rv;
    }
    if (!u) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_USER_NOT_FOUND,
                       "no user '%s'", name);
    }
    raftkv__auth_user_record__free_unpacked(u, NULL);
    if (enabled && strcmp(name, KV_AUTH_ROOT) == 0) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_ROOT_NEEDED,
                       "user root cannot be deleted while auth is enabled "
                       "(disable auth first)");
    }
    char k[DBKEY_MAX + 1];
    dbkey(k, 'u', name);
    return del_raw(st, txn, k);
}

static int user_role(struct kv_store *st,
                     MDB_txn *txn,
                     const char *user,
                     const char *role,
                     bool grant,
                     bool enabled,
                     struct kv_outcome *out)
{
    Raftkv__AuthUserRecord *u;
    int rv = kv_auth_get_user(st, txn, user, &u);
    if (rv) {
        return rv;
    }
    if (!u) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_USER_NOT_FOUND,
                       "no user '%s'", user);
    }
    if (grant) {
        Raftkv__AuthRoleRecord *r = NULL;
        bool builtin = strcmp(role, KV_AUTH_ROOT) == 0;
        if (!builtin) {
            rv = kv_auth_get_role(st, txn, role, &r);
            if (rv) {
                goto out_user;
            }
        }
        if (!builtin && !r) {
            rv = outcome(out, RAFTKV__AUTH_ERROR__AUTH_ROLE_NOT_FOUND,
                         "no role '%s'", role);
            goto out_user;
        }
        if (r) {
            raftkv__auth_role_record__free_unpacked(r, NULL);
        }
        if (has_role(u, role)) {
            goto out_user; /* granted already: nothing to do */
        }
        char **roles = malloc((u->n_roles + 1) * sizeof *roles);
        if (!roles) {
            rv = KV_STORE_ENOMEM;
            goto out_user;
        }
        /* Sorted insertion; the strings stay owned by u (and role). */
        size_t j = 0;
        bool placed = false;
        for (size_t i = 0; i < u->n_roles; i++) {
            if (!placed && strcmp(role, u->roles[i]) < 0) {
                roles[j++] = (char *)role;
                placed = true;
            }
            roles[j++] = u->roles[i];
        }
        if (!placed) {
            roles[j++] = (char *)role;
        }
        Raftkv__AuthUserRecord rec = *u;
        rec.roles = roles;
        rec.n_roles = j;
        rv = put_message(st, txn, 'u', user, &rec.base);
        free(roles);
        goto out_user;
    }
    if (!has_role(u, role)) {
        rv = outcome(out, RAFTKV__AUTH_ERROR__AUTH_ROLE_NOT_GRANTED,
                     "user '%s' does not have role '%s'", user, role);
        goto out_user;
    }
    if (enabled && strcmp(user, KV_AUTH_ROOT) == 0 &&
        strcmp(role, KV_AUTH_ROOT) == 0) {
        rv = outcome(out, RAFTKV__AUTH_ERROR__AUTH_ROOT_NEEDED,
                     "role root cannot be taken from user root while auth is "
                     "enabled (disable auth first)");
        goto out_user;
    }
    drop_role(u, role);
    rv = put_message(st, txn, 'u', user, &u->base);
out_user:
    raftkv__auth_user_record__free_unpacked(u, NULL);
    return rv;
}

static int role_add(struct kv_store *st,
                    MDB_txn *txn,
                    const char *name,
                    struct kv_outcome *out)
{
    if (!valid_name(name, false)) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST,
                       "a role name is 1 to %d printable characters, without "
                       "'/' or spaces",
                       KV_AUTH_MAX_NAME);
    }
    if (strcmp(name, KV_AUTH_ROOT) == 0) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_ROLE_EXISTS,
                       "role root is built in");
    }
    Raftkv__AuthRoleRecord *r;
    int rv = kv_auth_get_role(st, txn, name, &r);
    if (rv) {
        return rv;
    }
    if (r) {
        raftkv__auth_role_record__free_unpacked(r, NULL);
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_ROLE_EXISTS,
                       "role '%s' exists already", name);
    }
    Raftkv__AuthRoleRecord rec = RAFTKV__AUTH_ROLE_RECORD__INIT;
    rec.name = (char *)name;
    return put_message(st, txn, 'r', name, &rec.base);
}

/* Delete a role and take it from every user that has it. */
static int role_delete(struct kv_store *st,
                       MDB_txn *txn,
                       const char *name,
                       struct kv_outcome *out)
{
    if (strcmp(name, KV_AUTH_ROOT) == 0) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST,
                       "role root is built in and cannot be deleted");
    }
    Raftkv__AuthRoleRecord *r;
    int rv = kv_auth_get_role(st, txn, name, &r);
    if (rv) {
        return rv;
    }
    if (!r) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_ROLE_NOT_FOUND,
                       "no role '%s'", name);
    }
    raftkv__auth_role_record__free_unpacked(r, NULL);
    char k[DBKEY_MAX + 1];
    dbkey(k, 'r', name);
    rv = del_raw(st, txn, k);
    if (rv) {
        return rv;
    }
    char **users;
    size_t n;
    rv = kv_auth_list(st, txn, 'u', &users, &n);
    if (rv) {
        return rv;
    }
    for (size_t i = 0; i < n && !rv; i++) {
        Raftkv__AuthUserRecord *u;
        rv = kv_auth_get_user(st, txn, users[i], &u);
        if (!rv && u && has_role(u, name)) {
            drop_role(u, name);
            rv = put_message(st, txn, 'u', users[i], &u->base);
        }
        if (u) {
            raftkv__auth_user_record__free_unpacked(u, NULL);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(users[i]);
    }
    free(users);
    return rv;
}

static bool same_range(const Raftkv__Permission *p,
                       const ProtobufCBinaryData *key,
                       const ProtobufCBinaryData *end)
{
    return p->key.len == key->len && p->range_end.len == end->len &&
           (key->len == 0 || memcmp(p->key.data, key->data, key->len) == 0) &&
           (end->len == 0 ||
            memcmp(p->range_end.data, end->data, end->len) == 0);
}

static int role_permission(struct kv_store *st,
                           MDB_txn *txn,
                           const char *name,
                           const Raftkv__Permission *perm,
                           const ProtobufCBinaryData *key,
                           const ProtobufCBinaryData *end,
                           struct kv_outcome *out)
{
    if (key->len == 0) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST,
                       "a permission needs a key");
    }
    if (perm && perm->type != RAFTKV__PERMISSION_TYPE__PERM_READ &&
        perm->type != RAFTKV__PERMISSION_TYPE__PERM_WRITE &&
        perm->type != RAFTKV__PERMISSION_TYPE__PERM_READWRITE) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST,
                       "unknown permission type %d", (int)perm->type);
    }
    if (strcmp(name, KV_AUTH_ROOT) == 0) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST,
                       "role root may do everything already");
    }
    Raftkv__AuthRoleRecord *r;
    int rv = kv_auth_get_role(st, txn, name, &r);
    if (rv) {
        return rv;
    }
    if (!r) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_ROLE_NOT_FOUND,
                       "no role '%s'", name);
    }
    size_t found = r->n_perms;
    for (size_t i = 0; i < r->n_perms; i++) {
        if (same_range(r->perms[i], key, end)) {
            found = i;
        }
    }
    Raftkv__AuthRoleRecord rec = *r;
    Raftkv__Permission **perms = NULL;
    if (perm) {
        /* Grant: the same range again replaces its type (etcd merges). */
        perms = malloc((r->n_perms + 1) * sizeof *perms);
        if (!perms) {
            rv = KV_STORE_ENOMEM;
            goto out_role;
        }
        if (r->n_perms) {
            memcpy(perms, r->perms, r->n_perms * sizeof *perms);
        }
        rec.perms = perms;
        if (found < r->n_perms) {
            perms[found] = (Raftkv__Permission *)perm;
        } else {
            perms[rec.n_perms++] = (Raftkv__Permission *)perm;
        }
    } else {
        if (found == r->n_perms) {
            rv = outcome(out, RAFTKV__AUTH_ERROR__AUTH_PERMISSION_NOT_GRANTED,
                         "role '%s' has no permission on that key or range",
                         name);
            goto out_role;
        }
        /* Revoke: the unpacked record keeps ownership of the dropped one. */
        perms = malloc((r->n_perms ? r->n_perms : 1) * sizeof *perms);
        if (!perms) {
            rv = KV_STORE_ENOMEM;
            goto out_role;
        }
        size_t j = 0;
        for (size_t i = 0; i < r->n_perms; i++) {
            if (i != found) {
                perms[j++] = r->perms[i];
            }
        }
        rec.perms = perms;
        rec.n_perms = j;
    }
    rv = put_message(st, txn, 'r', name, &rec.base);
out_role:
    free(perms);
    raftkv__auth_role_record__free_unpacked(r, NULL);
    return rv;
}

static int auth_enable(struct kv_store *st,
                       MDB_txn *txn,
                       const ProtobufCBinaryData *key,
                       bool enabled,
                       struct kv_outcome *out)
{
    if (key->len != KV_AUTH_KEY_LEN) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST,
                       "the token key has %zu bytes, not %d", key->len,
                       KV_AUTH_KEY_LEN);
    }
    if (enabled) {
        return 0; /* on already: keep the key, and the tokens it signed */
    }
    Raftkv__AuthUserRecord *u;
    int rv = kv_auth_get_user(st, txn, KV_AUTH_ROOT, &u);
    if (rv) {
        return rv;
    }
    bool ok = u && has_role(u, KV_AUTH_ROOT);
    if (u) {
        raftkv__auth_user_record__free_unpacked(u, NULL);
    }
    if (!ok) {
        return outcome(out, RAFTKV__AUTH_ERROR__AUTH_ROOT_NEEDED,
                       "auth enable needs a user root with the role root "
                       "first: kvctl user add root; kvctl user grant-role "
                       "root root");
    }
    rv = put_raw(st, txn, "key", 3, key->data, key->len);
    if (!rv) {
        rv = put_raw(st, txn, "enabled", 7, "\1", 1);
    }
    return rv;
}

static int auth_disable(struct kv_store *st, MDB_txn *txn)
{
    /* The key goes: enabling again makes a new one, so the tokens of
     * before are void. */
    int rv = del_raw(st, txn, "key");
    if (!rv) {
        rv = del_raw(st, txn, "enabled");
    }
    return rv;
}

int kv_auth_apply(struct kv_store *st,
                  MDB_txn *txn,
                  uint64_t index,
                  const Raftkv__AuthCommand *c,
                  struct kv_outcome *out)
{
    bool enabled;
    int rv = kv_auth_enabled(st, txn, &enabled);
    if (rv) {
        return rv;
    }
    out->err = RAFTKV__AUTH_ERROR__AUTH_OK;
    switch (c->op_case) {
        case RAFTKV__AUTH_COMMAND__OP_USER_ADD:
            rv = user_put(st, txn, index, c->user_add, true, out);
            break;
        case RAFTKV__AUTH_COMMAND__OP_USER_DELETE:
            rv = user_delete(st, txn, c->user_delete, enabled, out);
            break;
        case RAFTKV__AUTH_COMMAND__OP_USER_PASSWORD:
            rv = user_put(st, txn, index, c->user_password, false, out);
            break;
        case RAFTKV__AUTH_COMMAND__OP_GRANT_ROLE:
            rv = user_role(st, txn, c->grant_role->user, c->grant_role->role,
                           true, enabled, out);
            break;
        case RAFTKV__AUTH_COMMAND__OP_REVOKE_ROLE:
            rv = user_role(st, txn, c->revoke_role->user, c->revoke_role->role,
                           false, enabled, out);
            break;
        case RAFTKV__AUTH_COMMAND__OP_ROLE_ADD:
            rv = role_add(st, txn, c->role_add, out);
            break;
        case RAFTKV__AUTH_COMMAND__OP_ROLE_DELETE:
            rv = role_delete(st, txn, c->role_delete, out);
            break;
        case RAFTKV__AUTH_COMMAND__OP_GRANT_PERMISSION: {
            const Raftkv__RoleGrantPermissionArgs *g = c->grant_permission;
            if (!g->perm) {
                rv = outcome(out, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST,
                             "grant-permission without a permission");
                break;
            }
            rv = role_permission(st, txn, g->name, g->perm, &g->perm->key,
                                 &g->perm->range_end, out);
            break;
        }
        case RAFTKV__AUTH_COMMAND__OP_REVOKE_PERMISSION: {
            const Raftkv__RoleRevokePermissionArgs *r = c->revoke_permission;
            rv = role_permission(st, txn, r->name, NULL, &r->key, &r->range_end,
                                 out);
            break;
        }
        case RAFTKV__AUTH_COMMAND__OP_ENABLE:
            rv = auth_enable(st, txn, &c->enable, enabled, out);
            break;
        case RAFTKV__AUTH_COMMAND__OP_DISABLE:
            rv = auth_disable(st, txn);
            break;
        default:
            rv = outcome(out, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST,
                         "unknown auth command");
            break;
    }
    if (rv || out->err != RAFTKV__AUTH_ERROR__AUTH_OK) {
        return rv;
    }
    uint8_t buf[8];
    kv_put_u64(buf, index);
    return put_raw(st, txn, "rev", 3, buf, 8);
}

/* -------------------------------------------------------------- checks */

/* Copy a key into text for a message: printable bytes as they are, others
 * as \xNN, at most about 64 characters. */
static void show_key(char *out, size_t size, const uint8_t *k, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 8 < size; i++) {
        if (o >= 64) {
            o += (size_t)snprintf(out + o, size - o, "...");
            break;
        }
        if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '\'' && k[i] != '\\') {
            out[o++] = (char)k[i];
        } else {
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", k[i]);
        }
    }
    out[o] = 0;
}

int kv_auth_login_info(struct kv_store *st,
                       MDB_txn *txn,
                       const char *user,
                       char *hash,
                       uint64_t *password_version,
                       uint8_t *key,
                       char *msg,
                       size_t msg_size)
{
    hash[0] = 0;
    *password_version = 0;
    bool enabled;
    int rv = kv_auth_enabled(st, txn, &enabled);
    if (rv) {
        snprintf(msg, msg_size, "%.300s", st->errmsg);
        return RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    }
    if (!enabled) {
        snprintf(msg, msg_size, "auth is not enabled: no token is needed");
        return RAFTKV__AUTH_ERROR__AUTH_NOT_ENABLED;
    }
    MDB_val k;
    rv = get_raw(st, txn, "key", 3, &k);
    if (rv || k.mv_size != KV_AUTH_KEY_LEN) {
        snprintf(msg, msg_size, "auth state has no token key: %.300s",
                 rv < 0 ? st->errmsg : "missing");
        return RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    }
    memcpy(key, k.mv_data, KV_AUTH_KEY_LEN);
    Raftkv__AuthUserRecord *u;
    rv = kv_auth_get_user(st, txn, user, &u);
    if (rv) {
        snprintf(msg, msg_size, "%.300s", st->errmsg);
        return RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    }
    if (u) {
        if (strlen(u->password_hash) < crypto_pwhash_STRBYTES) {
            strcpy(hash, u->password_hash);
            *password_version = u->password_version;
        }
        raftkv__auth_user_record__free_unpacked(u, NULL);
    }
    return RAFTKV__AUTH_ERROR__AUTH_OK;
}

int kv_auth_authenticate(struct kv_store *st,
                         MDB_txn *txn,
                         const char *user,
                         const char *password,
                         uint64_t now_s,
                         uint64_t ttl_s,
                         char *token,
                         char *msg,
                         size_t msg_size)
{
    char hash[crypto_pwhash_STRBYTES];
    uint8_t key[KV_AUTH_KEY_LEN];
    uint64_t version;
    int err =
        kv_auth_login_info(st, txn, user, hash, &version, key, msg, msg_size);
    if (err) {
        return err;
    }
    /* One answer for an unknown user and a wrong password. */
    err = RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
    if (hash[0] &&
        crypto_pwhash_str_verify(hash, password, strlen(password)) == 0 &&
        kv_auth_token_sign(key, user, now_s + ttl_s, version, token) == 0) {
        err = RAFTKV__AUTH_ERROR__AUTH_OK;
    } else {
        snprintf(msg, msg_size,
                 "authentication failed: wrong user name or "
                 "password");
    }
    sodium_memzero(key, sizeof key);
    return err;
}

static const char *need_text(enum kv_auth_need need)
{
    switch (need) {
        case KV_AUTH_READ:
            return "read";
        case KV_AUTH_WRITE:
            return "write";
        default:
            return "read and write";
    }
}

/* A half-open interval of keys; end NULL with inf: no end. */
struct ival
{
    const uint8_t *start;
    size_t start_len;
    uint8_t *end; /* malloc'd */
    size_t end_len;
    bool inf;
};

static int cmp_keys(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t m = al < bl ? al : bl;
    int c = m ? memcmp(a, b, m) : 0;
    return c ? c : (al > bl) - (al < bl);
}

/* [key, range_end) as an interval: a single key is [key, key "\0"). */
static bool make_ival(struct ival *iv,
                      const uint8_t *key,
                      size_t key_len,
                      const uint8_t *end,
                      size_t end_len)
{
    iv->start = key;
    iv->start_len = key_len;
    iv->inf = end_len == 1 && end[0] == 0;
    iv->end = NULL;
    iv->end_len = 0;
    if (iv->inf) {
        return true;
    }
    if (end_len == 0) {
        iv->end = malloc(key_len + 1);
        if (!iv->end) {
            return false;
        }
        memcpy(iv->end, key, key_len);
        iv->end[key_len] = 0;
        iv->end_len = key_len + 1;
        return true;
    }
    iv->end = malloc(end_len);
    if (!iv->end) {
        return false;
    }
    memcpy(iv->end, end, end_len);
    iv->end_len = end_len;
    return true;
}

/* Whether the union of @n intervals covers @want. */
static bool covered(const struct ival *want, const struct ival *ivs, size_t n)
{
    const uint8_t *cur = want->start;
    size_t cur_len = want->start_len;
    for (;;) {
        const struct ival *best = NULL;
        for (size_t i = 0; i < n; i++) {
            const struct ival *iv = &ivs[i];
            if (cmp_keys(iv->start, iv->start_len, cur, cur_len) > 0) {
                continue;
            }
            if (!iv->inf && cmp_keys(iv->end, iv->end_len, cur, cur_len) <= 0) {
                continue;
            }
            if (!best || iv->inf ||
                (!best->inf && cmp_keys(iv->end, iv->end_len, best->end,
                                        best->end_len) > 0)) {
                best = iv;
            }
        }
        if (!best) {
            return false;
        }
        if (best->inf) {
            return true;
        }
        if (!want->inf &&
            cmp_keys(best->end, best->end_len, want->end, want->end_len) >= 0) {
            return true;
        }
        cur = best->end;
        cur_len = best->end_len;
    }
}

/* Whether the user's roles allow @need on every key of [key, end); 0 or
 * a store error. */
static int roles_allow_range(struct kv_store *st,
                             MDB_txn *txn,
                             const Raftkv__AuthUserRecord *u,
                             const uint8_t *key,
                             size_t key_len,
                             const uint8_t *end,
                             size_t end_len,
                             enum kv_auth_need need,
                             bool *allowed)
{
    struct ival want = {0}, *rs = NULL, *ws = NULL;
    size_t nr = 0, nw = 0, cap = 0;
    Raftkv__AuthRoleRecord **roles = calloc(u->n_roles + 1, sizeof *roles);
    int rv = roles && make_ival(&want, key, key_len, end, end_len)
                 ? 0
                 : KV_STORE_ENOMEM;
    for (size_t i = 0; i < u->n_roles && !rv; i++) {
        rv = kv_auth_get_role(st, txn, u->roles[i], &roles[i]);
        for (size_t j = 0; !rv && roles[i] && j < roles[i]->n_perms; j++) {
            if (nr == cap || nw == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                struct ival *a = realloc(rs, ncap * sizeof *a);
                struct ival *b = a ? realloc(ws, ncap * sizeof *b) : NULL;
                if (a) {
                    rs = a;
                }
                if (!b) {
                    rv = KV_STORE_ENOMEM;
                    break;
                }
                ws = b;
                cap = ncap;
            }
            const Raftkv__Permission *p = roles[i]->perms[j];
            struct ival iv;
            if (!make_ival(&iv, p->key.data, p->key.len, p->range_end.data,
                           p->range_end.len)) {
                rv = KV_STORE_ENOMEM;
                break;
            }
            bool r = p->type != RAFTKV__PERMISSION_TYPE__PERM_WRITE;
            bool w = p->type != RAFTKV__PERMISSION_TYPE__PERM_READ;
            if (r) {
                rs[nr++] = iv;
            }
            if (w) {
                ws[nw] = iv;
                if (r) {
                    /* both lists hold it: give the write list a copy */
                    ws[nw].end = iv.end ? malloc(iv.end_len) : NULL;
                    if (iv.end && !ws[nw].end) {
                        rv = KV_STORE_ENOMEM;
                        break;
                    }
                    if (iv.end) {
                        memcpy(ws[nw].end, iv.end, iv.end_len);
                    }
                }
                nw++;
            }
            if (!r && !w) {
                free(iv.end);
            }
        }
    }
    if (!rv) {
        *allowed = (!(need & KV_AUTH_READ) || covered(&want, rs, nr)) &&
                   (!(need & KV_AUTH_WRITE) || covered(&want, ws, nw));
    }
    for (size_t i = 0; i < nr; i++) {
        free(rs[i].end);
    }
    for (size_t i = 0; i < nw; i++) {
        free(ws[i].end);
    }
    free(rs);
    free(ws);
    for (size_t i = 0; roles && i < u->n_roles; i++) {
        if (roles[i]) {
            raftkv__auth_role_record__free_unpacked(roles[i], NULL);
        }
    }
    free(roles);
    free(want.end);
    return rv;
}

/* Whether the user's roles allow @need on the key; 0 or a store error. */
static int roles_allow(struct kv_store *st,
                       MDB_txn *txn,
                       const Raftkv__AuthUserRecord *u,
                       const void *key,
                       size_t key_len,
                       enum kv_auth_need need,
                       bool *allowed)
{
    bool r = false, w = false;
    for (size_t i = 0; i < u->n_roles && !(r && w); i++) {
        Raftkv__AuthRoleRecord *role;
        int rv = kv_auth_get_role(st, txn, u->roles[i], &role);
        if (rv) {
            return rv;
        }
        for (size_t j = 0; role && j < role->n_perms; j++) {
            const Raftkv__Permission *p = role->perms[j];
            if (!kv_auth_perm_covers(p, key, key_len)) {
                continue;
            }
            if (p->type != RAFTKV__PERMISSION_TYPE__PERM_WRITE) {
                r = true;
            }
            if (p->type != RAFTKV__PERMISSION_TYPE__PERM_READ) {
                w = true;
            }
        }
        if (role) {
            raftkv__auth_role_record__free_unpacked(role, NULL);
        }
    }
    *allowed = (!(need & KV_AUTH_READ) || r) && (!(need & KV_AUTH_WRITE) || w);
    return 0;
}

int kv_auth_check(struct kv_store *st,
                  MDB_txn *txn,
                  const char *token,
                  uint64_t now_s,
                  const void *key,
                  size_t key_len,
                  enum kv_auth_need need,
                  char *user,
                  bool *is_root,
                  char *msg,
                  size_t msg_size)
{
    return kv_auth_check_as(st, txn, token, NULL, now_s, key, key_len, need,
                            user, is_root, msg, msg_size);
}

int kv_auth_check_as(struct kv_store *st,
                     MDB_txn *txn,
                     const char *token,
                     const char *cert_user,
                     uint64_t now_s,
                     const void *key,
                     size_t key_len,
                     enum kv_auth_need need,
                     char *user,
                     bool *is_root,
                     char *msg,
                     size_t msg_size)
{
    return kv_auth_check_range_as(st, txn, token, cert_user, now_s, key,
                                  key_len, NULL, 0, need, user, is_root, msg,
                                  msg_size);
}

int kv_auth_check_range_as(struct kv_store *st,
                           MDB_txn *txn,
                           const char *token,
                           const char *cert_user,
                           uint64_t now_s,
                           const void *key,
                           size_t key_len,
                           const void *range_end,
                           size_t end_len,
                           enum kv_auth_need need,
                           char *user,
                           bool *is_root,
                           char *msg,
                           size_t msg_size)
{
    char name[KV_AUTH_MAX_NAME + 1] = "";
    bool enabled, root = false;
    int rv = kv_auth_enabled(st, txn, &enabled);
    if (rv) {
        snprintf(msg, msg_size, "%.300s", st->errmsg);
        return RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    }
    if (user) {
        user[0] = 0;
    }
    if (is_root) {
        *is_root = !enabled;
    }
    if (!enabled) {
        return RAFTKV__AUTH_ERROR__AUTH_OK;
    }
    bool by_cert = (!token || !token[0]) && cert_user && cert_user[0];
    uint64_t version = 0;
    if (by_cert) {
        /* The verified client certificate names the user (etcd's
         * --client-cert-auth): no password, so no password version. */
        if (strlen(cert_user) > KV_AUTH_MAX_NAME) {
            snprintf(msg, msg_size,
                     "certificate name longer than a user "
                     "name");
            return RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
        }
        snprintf(name, sizeof name, "%s", cert_user);
        goto have_name;
    }
    if (!token || !token[0]) {
        snprintf(msg, msg_size, "no token: authenticate first (kvctl --user)");
        return RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
    }
    MDB_val k;
    rv = get_raw(st, txn, "key", 3, &k);
    if (rv || k.mv_size != KV_AUTH_KEY_LEN) {
        snprintf(msg, msg_size, "auth state has no token key: %s",
                 rv < 0 ? st->errmsg : "missing");
        return RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    }
    switch (kv_auth_token_verify(k.mv_data, token, now_s, name, &version)) {
        case KV_AUTH_TOKEN_OK:
            break;
        case KV_AUTH_TOKEN_EXPIRED:
            snprintf(msg, msg_size, "token expired: authenticate again");
            return RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
        case KV_AUTH_TOKEN_BAD_MAC:
            snprintf(msg, msg_size,
                     "token invalid: not signed with this cluster's current "
                     "key (auth was disabled and enabled again, or the token "
                     "was altered); authenticate again");
            return RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
        default:
            snprintf(msg, msg_size, "token malformed: authenticate again");
            return RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
    }
have_name:;
    Raftkv__AuthUserRecord *u;
    rv = kv_auth_get_user(st, txn, name, &u);
    if (rv) {
        snprintf(msg, msg_size, "%.300s", st->errmsg);
        return RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    }
    if (!u) {
        snprintf(msg, msg_size,
                 by_cert ? "client certificate of '%s', who is not a user "
                           "of this cluster"
                         : "token of user '%s', who no longer exists",
                 name);
        return RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
    }
    int err = RAFTKV__AUTH_ERROR__AUTH_OK;
    if (!by_cert && u->password_version != version) {
        snprintf(msg, msg_size,
                 "token of user '%s' predates a password change: "
                 "authenticate again",
                 name);
        err = RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
        goto out_user;
    }
    if (user) {
        snprintf(user, KV_AUTH_MAX_NAME + 1, "%s", name);
    }
    root = has_role(u, KV_AUTH_ROOT);
    if (is_root) {
        *is_root = root;
    }
    if (!key || root) {
        goto out_user;
    }
    bool allowed;
    rv = end_len ? roles_allow_range(st, txn, u, key, key_len, range_end,
                                     end_len, need, &allowed)
                 : roles_allow(st, txn, u, key, key_len, need, &allowed);
    if (rv) {
        snprintf(msg, msg_size, "%.300s", st->errmsg);
        err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
        goto out_user;
    }
    if (!allowed) {
        char roles[200] = "", shown[300];
        size_t o = 0;
        for (size_t i = 0; i < u->n_roles && o < sizeof roles; i++) {
            o += (size_t)snprintf(roles + o, sizeof roles - o, "%s%s",
                                  i ? ", " : "", u->roles[i]);
        }
        show_key(shown, sizeof shown, key, key_len);
        if (end_len) {
            char shown_end[300];
            show_key(shown_end, sizeof shown_end, range_end, end_len);
            snprintf(msg, msg_size,
                     "user '%s' (roles: %s) may not %s every key of "
                     "['%s', '%s')",
                     name, u->n_roles ? roles : "none", need_text(need), shown,
                     end_len == 1 && ((const uint8_t *)range_end)[0] == 0
                         ? "\\0 (every key from there on)"
                         : shown_end);
        } else {
            snprintf(msg, msg_size, "user '%s' (roles: %s) may not %s key '%s'",
                     name, u->n_roles ? roles : "none", need_text(need), shown);
        }
        err = RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED;
    }
out_user:
    raftkv__auth_user_record__free_unpacked(u, NULL);
    return err;
}
