/* auth_service.c: AuthService (users, roles, tokens), and the checks that
 * KvService and AdminService calls pass once auth is enabled. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "node.h"

#define DEFAULT_TOKEN_TTL_S 300

static uint64_t wall_s(void)
{
    return (uint64_t)time(NULL);
}

/* The applied state to read: the open state transaction (what was applied
 * since the last state commit), or a read transaction of the last commit.
 * @param own set when the caller must abort the returned transaction */
static MDB_txn *state_read(struct kv_node *n, bool *own)
{
    if (n->state_txn) {
        *own = false;
        return n->state_txn;
    }
    MDB_txn *txn;
    if (mdb_txn_begin(n->store.env, NULL, MDB_RDONLY, &txn) != 0) {
        return NULL;
    }
    *own = true;
    return txn;
}

static void state_done(MDB_txn *txn, bool own)
{
    if (own) {
        mdb_txn_abort(txn);
    }
}

/* Check a call's token against the applied state.
 * @param key NULL: the token only
 * @return a Raftkv__AuthError; msg filled unless OK */
static int check_call(struct kv_node *n,
                      void *closure_data,
                      const void *key,
                      size_t key_len,
                      enum kv_auth_need need,
                      char *user,
                      bool *is_root,
                      char *msg,
                      size_t msg_size)
{
    bool own;
    MDB_txn *txn = state_read(n, &own);
    if (!txn) {
        snprintf(msg, msg_size, "cannot read the auth state");
        return RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    }
    int err = kv_auth_check(&n->store, txn, rpc_call_auth_token(closure_data),
                            wall_s(), key, key_len, need, user, is_root, msg,
                            msg_size);
    state_done(txn, own);
    return err;
}

/* Root (or, with @self set, that user) may go on: AUTH_OK; otherwise the
 * refusal, with msg naming what is missing. */
static int require_root(struct kv_node *n,
                        void *closure_data,
                        const char *self,
                        const char *what,
                        char *msg,
                        size_t msg_size)
{
    char user[KV_AUTH_MAX_NAME + 1];
    bool root;
    int err = check_call(n, closure_data, NULL, 0, KV_AUTH_ANY, user, &root,
                         msg, msg_size);
    if (err || root || (self && strcmp(self, user) == 0)) {
        return err;
    }
    snprintf(msg, msg_size, "user '%s' may not %s: that needs the role root",
             user, what);
    return RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED;
}

int auth_check_kv(struct kv_node *n,
                  void *closure_data,
                  const ProtobufCBinaryData *key,
                  enum kv_auth_need need,
                  char *msg,
                  size_t msg_size)
{
    int err = check_call(n, closure_data, key ? key->data : NULL,
                         key ? key->len : 0, need, NULL, NULL, msg, msg_size);
    switch (err) {
        case RAFTKV__AUTH_ERROR__AUTH_OK:
            return RAFTKV__KV_ERROR__KV_OK;
        case RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED:
            return RAFTKV__KV_ERROR__KV_UNAUTHENTICATED;
        case RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED:
            return RAFTKV__KV_ERROR__KV_PERMISSION_DENIED;
        default:
            return RAFTKV__KV_ERROR__KV_INTERNAL;
    }
}

/* ------------------------------------------------------------- replies */

static void set_hint(struct kv_node *n,
                     uint64_t leader,
                     Raftkv__AuthLeaderHint *h)
{
    h->id = leader;
    h->address = leader ? (char *)node_peer_addr(n, leader) : "";
}

static void reply_change(struct kv_node *n,
                         ProtobufCClosure closure,
                         void *data,
                         int err,
                         uint64_t leader,
                         const char *msg)
{
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    set_hint(n, leader, &hint);
    Raftkv__AuthChangeReply r = RAFTKV__AUTH_CHANGE_REPLY__INIT;
    r.err = err;
    r.message = (char *)(msg ? msg : "");
    r.leader = &hint;
    closure(&r.base, data);
}

/* A KvError of the node's write path as an AuthError. */
static int auth_error_of(int kv_err)
{
    switch (kv_err) {
        case RAFTKV__KV_ERROR__KV_OK:
            return RAFTKV__AUTH_ERROR__AUTH_OK;
        case RAFTKV__KV_ERROR__KV_WRONG_LEADER:
            return RAFTKV__AUTH_ERROR__AUTH_NOT_LEADER;
        case RAFTKV__KV_ERROR__KV_TIMEOUT:
            return RAFTKV__AUTH_ERROR__AUTH_TIMEOUT;
        case RAFTKV__KV_ERROR__KV_BAD_REQUEST:
        case RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE:
            return RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST;
        case RAFTKV__KV_ERROR__KV_SHUTTING_DOWN:
        case RAFTKV__KV_ERROR__KV_NO_SPACE:
        case RAFTKV__KV_ERROR__KV_UNAVAILABLE:
            return RAFTKV__AUTH_ERROR__AUTH_UNAVAILABLE;
        case RAFTKV__KV_ERROR__KV_UNAUTHENTICATED:
            return RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
        case RAFTKV__KV_ERROR__KV_PERMISSION_DENIED:
            return RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED;
        default:
            return RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    }
}

void auth_reply_write(struct kv_node *n,
                      ProtobufCClosure closure,
                      void *data,
                      int err,
                      const struct kv_outcome *o,
                      uint64_t leader,
                      const char *msg)
{
    if (o) {
        /* Applied: the outcome holds an AuthError and its message. */
        reply_change(n, closure, data, o->err, 0,
                     o->current ? (const char *)o->current : "");
        return;
    }
    reply_change(n, closure, data, auth_error_of(err), leader, msg);
}

/* ------------------------------------------------------------- changes */

/* Whether a change may be proposed here: the caller is root (or @self),
 * and this node leads. Otherwise the call is answered. */
static bool may_change(struct kv_node *n,
                       ProtobufCClosure closure,
                       void *data,
                       const char *self,
                       const char *what)
{
    char msg[400];
    int err = require_root(n, data, self, what, msg, sizeof msg);
    if (err) {
        reply_change(n, closure, data, err, 0, msg);
        return false;
    }
    uint64_t leader = raft_leader(n->raft);
    if (leader != n->cfg.id) {
        reply_change(n, closure, data,
                     leader ? RAFTKV__AUTH_ERROR__AUTH_NOT_LEADER
                            : RAFTKV__AUTH_ERROR__AUTH_UNAVAILABLE,
                     leader, leader ? "not the leader" : "no leader known");
        return false;
    }
    return true;
}

static void propose_change(struct kv_node *n,
                           Raftkv__AuthCommand *ac,
                           ProtobufCClosure closure,
                           void *data)
{
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_AUTH;
    cmd.auth = ac;
    client_propose_auth(n, &cmd, closure, data);
}

/* UserAdd and UserChangePassword: the password is hashed here, before the
 * command is proposed, so the log never holds it. */
static void put_user(struct kv_node *n,
                     const char *name,
                     const char *password,
                     bool add,
                     ProtobufCClosure closure,
                     void *data)
{
    if (!may_change(n, closure, data, add ? NULL : name,
                    add ? "add users" : "change another user's password")) {
        return;
    }
    if (!password[0]) {
        reply_change(n, closure, data, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST, 0,
                     "the password is empty");
        return;
    }
    char hash[crypto_pwhash_STRBYTES];
    if (kv_auth_hash_password(password, hash) != 0) {
        reply_change(n, closure, data, RAFTKV__AUTH_ERROR__AUTH_INTERNAL, 0,
                     "cannot hash the password (out of memory)");
        return;
    }
    Raftkv__UserPut put = RAFTKV__USER_PUT__INIT;
    put.name = (char *)name;
    put.password_hash = hash;
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    if (add) {
        ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_ADD;
        ac.user_add = &put;
    } else {
        ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_PASSWORD;
        ac.user_password = &put;
    }
    propose_change(n, &ac, closure, data);
    sodium_memzero(hash, sizeof hash);
}

static void handle_user_add(Raftkv__AuthService_Service *svc,
                            const Raftkv__UserAddArgs *a,
                            Raftkv__AuthChangeReply_Closure closure,
                            void *data)
{
    put_user(node_of(svc, auth_svc), a->name, a->password, true,
             (ProtobufCClosure)closure, data);
}

static void handle_user_password(Raftkv__AuthService_Service *svc,
                                 const Raftkv__UserChangePasswordArgs *a,
                                 Raftkv__AuthChangeReply_Closure closure,
                                 void *data)
{
    put_user(node_of(svc, auth_svc), a->name, a->password, false,
             (ProtobufCClosure)closure, data);
}

static void handle_user_delete(Raftkv__AuthService_Service *svc,
                               const Raftkv__UserDeleteArgs *a,
                               Raftkv__AuthChangeReply_Closure closure,
                               void *data)
{
    struct kv_node *n = node_of(svc, auth_svc);
    if (!may_change(n, (ProtobufCClosure)closure, data, NULL,
                    "delete users")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_DELETE;
    ac.user_delete = a->name;
    propose_change(n, &ac, (ProtobufCClosure)closure, data);
}

static void handle_grant_role(Raftkv__AuthService_Service *svc,
                              const Raftkv__UserGrantRoleArgs *a,
                              Raftkv__AuthChangeReply_Closure closure,
                              void *data)
{
    struct kv_node *n = node_of(svc, auth_svc);
    if (!may_change(n, (ProtobufCClosure)closure, data, NULL,
                    "grant roles")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_GRANT_ROLE;
    ac.grant_role = (Raftkv__UserGrantRoleArgs *)a;
    propose_change(n, &ac, (ProtobufCClosure)closure, data);
}

static void handle_revoke_role(Raftkv__AuthService_Service *svc,
                               const Raftkv__UserRevokeRoleArgs *a,
                               Raftkv__AuthChangeReply_Closure closure,
                               void *data)
{
    struct kv_node *n = node_of(svc, auth_svc);
    if (!may_change(n, (ProtobufCClosure)closure, data, NULL,
                    "revoke roles")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_REVOKE_ROLE;
    ac.revoke_role = (Raftkv__UserRevokeRoleArgs *)a;
    propose_change(n, &ac, (ProtobufCClosure)closure, data);
}

static void handle_role_add(Raftkv__AuthService_Service *svc,
                            const Raftkv__RoleAddArgs *a,
                            Raftkv__AuthChangeReply_Closure closure,
                            void *data)
{
    struct kv_node *n = node_of(svc, auth_svc);
    if (!may_change(n, (ProtobufCClosure)closure, data, NULL, "add roles")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_ROLE_ADD;
    ac.role_add = a->name;
    propose_change(n, &ac, (ProtobufCClosure)closure, data);
}

static void handle_role_delete(Raftkv__AuthService_Service *svc,
                               const Raftkv__RoleDeleteArgs *a,
                               Raftkv__AuthChangeReply_Closure closure,
                               void *data)
{
    struct kv_node *n = node_of(svc, auth_svc);
    if (!may_change(n, (ProtobufCClosure)closure, data, NULL,
                    "delete roles")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_ROLE_DELETE;
    ac.role_delete = a->name;
    propose_change(n, &ac, (ProtobufCClosure)closure, data);
}

static void handle_grant_permission(Raftkv__AuthService_Service *svc,
                                    const Raftkv__RoleGrantPermissionArgs *a,
                                    Raftkv__AuthChangeReply_Closure closure,
                                    void *data)
{
    struct kv_node *n = node_of(svc, auth_svc);
    if (!may_change(n, (ProtobufCClosure)closure, data, NULL,
                    "grant permissions")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_GRANT_PERMISSION;
    ac.grant_permission = (Raftkv__RoleGrantPermissionArgs *)a;
    propose_change(n, &ac, (ProtobufCClosure)closure, data);
}

static void handle_revoke_permission(Raftkv__AuthService_Service *svc,
                                     const Raftkv__RoleRevokePermissionArgs *a,
                                     Raftkv__AuthChangeReply_Closure closure,
                                     void *data)
{
    struct kv_node *n = node_of(svc, auth_svc);
    if (!may_change(n, (ProtobufCClosure)closure, data, NULL,
                    "revoke permissions")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_REVOKE_PERMISSION;
    ac.revoke_permission = (Raftkv__RoleRevokePermissionArgs *)a;
    propose_change(n, &ac, (ProtobufCClosure)closure, data);
}

static void handle_enable(Raftkv__AuthService_Service *svc,
                          const Raftkv__AuthEnableArgs *a,
                          Raftkv__AuthChangeReply_Closure closure,
                          void *data)
{
    (void)a;
    struct kv_node *n = node_of(svc, auth_svc);
    if (!may_change(n, (ProtobufCClosure)closure, data, NULL,
                    "enable auth")) {
        return;
    }
    /* The leader makes the token key; every node gets it through the log
     * (and snapshots). */
    uint8_t key[KV_AUTH_KEY_LEN];
    randombytes_buf(key, sizeof key);
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_ENABLE;
    ac.enable.data = key;
    ac.enable.len = sizeof key;
    propose_change(n, &ac, (ProtobufCClosure)closure, data);
    sodium_memzero(key, sizeof key);
}

static void handle_disable(Raftkv__AuthService_Service *svc,
                           const Raftkv__AuthDisableArgs *a,
                           Raftkv__AuthChangeReply_Closure closure,
                           void *data)
{
    (void)a;
    struct kv_node *n = node_of(svc, auth_svc);
    if (!may_change(n, (ProtobufCClosure)closure, data, NULL,
                    "disable auth")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_DISABLE;
    ac.disable = true;
    propose_change(n, &ac, (ProtobufCClosure)closure, data);
}

/* --------------------------------------------------------------- reads */

static void handle_authenticate(Raftkv__AuthService_Service *svc,
                                const Raftkv__AuthenticateArgs *a,
                                Raftkv__AuthenticateReply_Closure closure,
                                void *data)
{
    struct kv_node *n = node_of(svc, auth_svc);
    Raftkv__AuthenticateReply r = RAFTKV__AUTHENTICATE_REPLY__INIT;
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    char token[KV_AUTH_TOKEN_MAX] = "", msg[300] = "";
    uint64_t ttl = n->cfg.auth_token_ttl_s ? n->cfg.auth_token_ttl_s
                                           : DEFAULT_TOKEN_TTL_S;
    bool own;
    MDB_txn *txn = state_read(n, &own);
    if (!txn) {
        r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
        snprintf(msg, sizeof msg, "cannot read the auth state");
    } else {
        r.err = kv_auth_authenticate(&n->store, txn, a->user, a->password,
                                     wall_s(), ttl, token, msg, sizeof msg);
        state_done(txn, own);
    }
    r.message = msg;
    r.leader = &hint;
    r.token = token;
    r.ttl_s = r.err == RAFTKV__AUTH_ERROR__AUTH_OK ? ttl : 0;
    closure(&r, data);
}

static void handle_user_get(Raftkv__AuthService_Service *svc,
                            const Raftkv__UserGetArgs *a,
                            Raftkv__UserGetReply_Closure closure,
                            void *data)
{
    struct kv_node *n = node_of(svc, auth_svc);
    Raftkv__UserGetReply r = RAFTKV__USER_GET_REPLY__INIT;
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    Raftkv__AuthUserRecord *u = NULL;
    char msg[400] = "";
    r.leader = &hint;
    r.message = msg;
    r.err = require_root(n, data, a->name, "read other users", msg,
                         sizeof msg);
    bool own;
    MDB_txn *txn = r.err ? NULL : state_read(n, &own);
    if (!r.err && !txn) {
        r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    } else if (!r.err) {
        if (kv_auth_get_user(&n->store, txn, a->name, &u) != 0) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
            snprintf(msg, sizeof msg, "%.300s", n->store.errmsg);
        } else if (!u) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_USER_NOT_FOUND;
            snprintf(msg, sizeof msg, "no user '%s'", a->name);
        } else {
            r.roles = u->roles;
            r.n_roles = u->n_roles;
        }
        state_done(txn, own);
    }
    closure(&r, data);
    if (u) {
        raftkv__auth_user_record__free_unpacked(u, NULL);
    }
}

static void handle_role_get(Raftkv__AuthService_Service *svc,
                            const Raftkv__RoleGetArgs *a,
                            Raftkv__RoleGetReply_Closure closure,
                            void *data)
{
    struct kv_node *n = node_of(svc, auth_svc);
    Raftkv__RoleGetReply r = RAFTKV__ROLE_GET_REPLY__INIT;
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    Raftkv__AuthRoleRecord *role = NULL;
    char msg[400] = "";
    r.leader = &hint;
    r.message = msg;
    r.err = require_root(n, data, NULL, "read roles", msg, sizeof msg);
    bool own;
    MDB_txn *txn = r.err ? NULL : state_read(n, &own);
    if (!r.err && !txn) {
        r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    } else if (!r.err) {
        if (strcmp(a->name, KV_AUTH_ROOT) == 0) {
            snprintf(msg, sizeof msg, "built in: may do everything");
        } else if (kv_auth_get_role(&n->store, txn, a->name, &role) != 0) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
            snprintf(msg, sizeof msg, "%.300s", n->store.errmsg);
        } else if (!role) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_ROLE_NOT_FOUND;
            snprintf(msg, sizeof msg, "no role '%s'", a->name);
        } else {
            r.perms = role->perms;
            r.n_perms = role->n_perms;
        }
        state_done(txn, own);
    }
    closure(&r, data);
    if (role) {
        raftkv__auth_role_record__free_unpacked(role, NULL);
    }
}

/* UserList ('u') and RoleList ('r', with the built-in root). */
static void list_names(struct kv_node *n,
                       char kind,
                       Raftkv__NameListReply_Closure closure,
                       void *data)
{
    Raftkv__NameListReply r = RAFTKV__NAME_LIST_REPLY__INIT;
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    char msg[400] = "";
    char **names = NULL, **all = NULL;
    size_t count = 0;
    r.leader = &hint;
    r.message = msg;
    r.err = require_root(n, data, NULL,
                         kind == 'u' ? "list users" : "list roles", msg,
                         sizeof msg);
    bool own;
    MDB_txn *txn = r.err ? NULL : state_read(n, &own);
    if (!r.err && !txn) {
        r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    } else if (!r.err) {
        if (kv_auth_list(&n->store, txn, kind, &names, &count) != 0) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
            snprintf(msg, sizeof msg, "%.300s", n->store.errmsg);
        }
        state_done(txn, own);
    }
    r.names = names;
    r.n_names = count;
    if (!r.err && kind == 'r') {
        all = malloc((count + 1) * sizeof *all);
        if (!all) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
            snprintf(msg, sizeof msg, "out of memory");
        } else {
            size_t j = 0;
            bool placed = false;
            for (size_t i = 0; i < count; i++) {
                if (!placed && strcmp(KV_AUTH_ROOT, names[i]) < 0) {
                    all[j++] = KV_AUTH_ROOT;
                    placed = true;
                }
                all[j++] = names[i];
            }
            if (!placed) {
                all[j++] = KV_AUTH_ROOT;
            }
            r.names = all;
            r.n_names = j;
        }
    }
    closure(&r, data);
    free(all);
    for (size_t i = 0; i < count; i++) {
        free(names[i]);
    }
    free(names);
}

static void handle_user_list(Raftkv__AuthService_Service *svc,
                             const Raftkv__UserListArgs *a,
                             Raftkv__NameListReply_Closure closure,
                             void *data)
{
    (void)a;
    list_names(node_of(svc, auth_svc), 'u', closure, data);
}

static void handle_role_list(Raftkv__AuthService_Service *svc,
                             const Raftkv__RoleListArgs *a,
                             Raftkv__NameListReply_Closure closure,
                             void *data)
{
    (void)a;
    list_names(node_of(svc, auth_svc), 'r', closure, data);
}

static void handle_status(Raftkv__AuthService_Service *svc,
                          const Raftkv__AuthStatusArgs *a,
                          Raftkv__AuthStatusReply_Closure closure,
                          void *data)
{
    (void)a;
    struct kv_node *n = node_of(svc, auth_svc);
    Raftkv__AuthStatusReply r = RAFTKV__AUTH_STATUS_REPLY__INIT;
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    r.leader = &hint;
    bool own, enabled = false;
    MDB_txn *txn = state_read(n, &own);
    if (!txn || kv_auth_enabled(&n->store, txn, &enabled) != 0 ||
        kv_auth_revision(&n->store, txn, &r.auth_revision) != 0) {
        r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
        r.message = "cannot read the auth state";
    }
    if (txn) {
        state_done(txn, own);
    }
    r.enabled = enabled;
    closure(&r, data);
}

/* --------------------------------------------- AdminService: root only */

/* Whether an admin call may go on; otherwise *err (an AdminError) and msg
 * say why. */
static bool admin_allowed(struct kv_node *n,
                          void *data,
                          const char *what,
                          int *err,
                          char *msg,
                          size_t msg_size)
{
    int a = require_root(n, data, NULL, what, msg, msg_size);
    if (a == RAFTKV__AUTH_ERROR__AUTH_OK) {
        return true;
    }
    *err = a == RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED
               ? RAFTKV__ADMIN_ERROR__ADMIN_UNAUTHENTICATED
           : a == RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED
               ? RAFTKV__ADMIN_ERROR__ADMIN_PERMISSION_DENIED
               : RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE;
    return false;
}

static void gate_transfer(Raftkv__AdminService_Service *svc,
                          const Raftkv__TransferLeaderArgs *a,
                          Raftkv__TransferLeaderReply_Closure closure,
                          void *data)
{
    struct kv_node *n = node_of(svc, admin_svc);
    Raftkv__TransferLeaderReply r = RAFTKV__TRANSFER_LEADER_REPLY__INIT;
    char msg[400];
    int err;
    if (admin_allowed(n, data, "transfer leadership", &err, msg, sizeof msg)) {
        n->admin_inner.transfer_leader(svc, a, closure, data);
        return;
    }
    r.error = err;
    r.message = msg;
    r.node_id = n->cfg.id;
    r.target_id = a->target_id;
    r.term = raft_term(n->raft);
    closure(&r, data);
}

static void gate_snapshot_read(Raftkv__AdminService_Service *svc,
                               const Raftkv__SnapshotReadArgs *a,
                               Raftkv__SnapshotReadReply_Closure closure,
                               void *data)
{
    struct kv_node *n = node_of(svc, admin_svc);
    Raftkv__SnapshotReadReply r = RAFTKV__SNAPSHOT_READ_REPLY__INIT;
    char msg[400];
    int err;
    if (admin_allowed(n, data, "read snapshots", &err, msg, sizeof msg)) {
        n->admin_inner.snapshot_read(svc, a, closure, data);
        return;
    }
    r.error = err;
    r.message = msg;
    r.node_id = n->cfg.id;
    closure(&r, data);
}

static void gate_fault(Raftkv__AdminService_Service *svc,
                       const Raftkv__FaultArgs *a,
                       Raftkv__FaultReply_Closure closure,
                       void *data)
{
    struct kv_node *n = node_of(svc, admin_svc);
    Raftkv__FaultReply r = RAFTKV__FAULT_REPLY__INIT;
    char msg[400];
    int err;
    if (admin_allowed(n, data, "inject faults", &err, msg, sizeof msg)) {
        n->admin_inner.fault(svc, a, closure, data);
        return;
    }
    r.error = err;
    r.message = msg;
    r.node_id = n->cfg.id;
    closure(&r, data);
}

void auth_service_init(struct kv_node *n)
{
    /* Once per process is enough; later calls return 1 and do nothing.
     * It fails only without a usable random source (libsodium then aborts
     * on the first random bytes it needs). */
    if (sodium_init() < 0) {
        rpc_logf(RPC_LOG_ERROR, "node %llu: sodium_init failed: users and "
                 "passwords cannot work", (unsigned long long)n->cfg.id);
    }
    Raftkv__AuthService_Service svc = {
        RAFTKV__AUTH_SERVICE__BASE_INIT,
        handle_authenticate,
        handle_user_add,
        handle_user_delete,
        handle_user_password,
        handle_grant_role,
        handle_revoke_role,
        handle_user_get,
        handle_user_list,
        handle_role_add,
        handle_role_delete,
        handle_grant_permission,
        handle_revoke_permission,
        handle_role_get,
        handle_role_list,
        handle_enable,
        handle_disable,
        handle_status,
    };
    n->auth_svc = svc;
    /* The admin operations that change or reveal the cluster need root
     * once auth is enabled; Ping and Status stay open (health checks). */
    n->admin_inner = n->admin_svc;
    if (n->admin_svc.transfer_leader) {
        n->admin_svc.transfer_leader = gate_transfer;
    }
    if (n->admin_svc.snapshot_read) {
        n->admin_svc.snapshot_read = gate_snapshot_read;
    }
    if (n->admin_svc.fault) {
        n->admin_svc.fault = gate_fault;
    }
}
