/* kv.c: KvService (and, for now, AdminService Ping and Status):
 * proposals, ReadIndex reads, replies. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node.h"

/* ------------------------------------------------------------- replies */

static void set_hint(struct kv_node *n, uint64_t leader, Raftkv__LeaderHint *h)
{
    h->id = leader;
    h->address = leader ? (char *)node_peer_addr(n, leader) : "";
}

/* Answer a write of any kind. */
static void reply_write(struct kv_node *n,
                        int op,
                        ProtobufCClosure closure,
                        void *data,
                        int err,
                        const struct kv_outcome *o,
                        uint64_t leader,
                        const char *msg)
{
    if (o) {
        n->metrics.proposals_committed++;
    } else {
        n->metrics.proposals_failed++;
    }
    if (op == RAFTKV__COMMAND__OP_AUTH) {
        auth_reply_write(n, closure, data, err, o, leader, msg);
        return;
    }
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, leader, &hint);
    char *text = (char *)(msg ? msg : "");
    if (op == RAFTKV__COMMAND__OP_DEL) {
        Raftkv__DeleteReply r = RAFTKV__DELETE_REPLY__INIT;
        r.err = err;
        r.leader = &hint;
        r.message = text;
        closure(&r.base, data);
    } else if (op == RAFTKV__COMMAND__OP_CAS) {
        Raftkv__CompareAndSwapReply r = RAFTKV__COMPARE_AND_SWAP_REPLY__INIT;
        r.err = err;
        r.leader = &hint;
        r.message = text;
        if (o) {
            r.swapped = o->swapped;
            r.exists = o->exists;
            r.current_value.data = o->current;
            r.current_value.len = o->current_len;
        }
        closure(&r.base, data);
    } else if (op == RAFTKV__COMMAND__OP_OPEN_SESSION) {
        Raftkv__OpenSessionReply r = RAFTKV__OPEN_SESSION_REPLY__INIT;
        r.err = err;
        r.leader = &hint;
        r.message = text;
        closure(&r.base, data);
    } else {
        Raftkv__PutAppendReply r = RAFTKV__PUT_APPEND_REPLY__INIT;
        r.err = err;
        r.leader = &hint;
        r.message = text;
        closure(&r.base, data);
    }
}

static void reply_get(struct kv_node *n,
                      ProtobufCClosure closure,
                      void *data,
                      int err,
                      const void *value,
                      size_t len,
                      uint64_t leader,
                      const char *msg)
{
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, leader, &hint);
    Raftkv__GetReply r = RAFTKV__GET_REPLY__INIT;
    r.err = err;
    r.value.data = (uint8_t *)value;
    r.value.len = len;
    r.leader = &hint;
    r.message = (char *)(msg ? msg : "");
    closure(&r.base, data);
}

/* ------------------------------------------------------------- writes */

static const char *outcome_message(int err)
{
    switch (err) {
        case RAFTKV__KV_ERROR__KV_NOT_FOUND:
            return "no such key";
        case RAFTKV__KV_ERROR__KV_BAD_REQUEST:
            return "bad request (or a retry of a request the client already "
                   "replaced)";
        case RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE:
            return "key or value too large";
        case RAFTKV__KV_ERROR__KV_SESSION_EXPIRED:
            return "not applied: the client's session is not open (forgotten "
                   "to make room for newer clients, or never opened); open a "
                   "new one with a new client id";
        default:
            return "";
    }
}

static void propose(struct kv_node *n,
                    int op,
                    const Raftkv__Command *cmd,
                    const ProtobufCBinaryData *key,
                    const ProtobufCBinaryData *value,
                    const ProtobufCBinaryData *client_id,
                    uint64_t request_id,
                    ProtobufCClosure closure,
                    void *data)
{
    char msg[400];
    int err = 0;
    if (op != RAFTKV__COMMAND__OP_AUTH) {
        /* Auth changes are checked by the AuthService (root only). */
        err = auth_check_kv(
            n, data, key,
            op == RAFTKV__COMMAND__OP_CAS ? KV_AUTH_READWRITE : KV_AUTH_WRITE,
            msg, sizeof msg);
        if (err) {
            reply_write(n, op, closure, data, err, NULL, 0, msg);
            return;
        }
    }
    err = key ? kv_sm_check_key(&n->store, key->len) : 0;
    if (err) {
        snprintf(msg, sizeof msg, "key of %zu bytes: %s (1 to %d bytes)",
                 key->len,
                 err == RAFTKV__KV_ERROR__KV_BAD_REQUEST ? "empty" : "too long",
                 mdb_env_get_maxkeysize(n->store.env));
        reply_write(n, op, closure, data, err, NULL, 0, msg);
        return;
    }
    if (value && value->len > KV_MAX_VALUE) {
        snprintf(msg, sizeof msg, "value of %zu bytes is over the limit of %u",
                 value->len, KV_MAX_VALUE);
        reply_write(n, op, closure, data, RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE,
                    NULL, 0, msg);
        return;
    }
    if (op != RAFTKV__COMMAND__OP_AUTH &&
        (client_id->len != KV_CLIENT_ID_LEN ||
         (request_id == 0 && op != RAFTKV__COMMAND__OP_OPEN_SESSION))) {
        reply_write(n, op, closure, data, RAFTKV__KV_ERROR__KV_BAD_REQUEST,
                    NULL, 0,
                    "a write needs a 16-byte client_id and a request_id > 0");
        return;
    }
    if (n->frozen) {
        /* This node cannot write; the leader, when it is another, may. */
        uint64_t leader = raft_leader(n->raft);
        if (leader && leader != n->cfg.id) {
            reply_write(n, op, closure, data, RAFTKV__KV_ERROR__KV_WRONG_LEADER,
                        NULL, leader,
                        "not the leader (and this node cannot write its "
                        "disk)");
            return;
        }
        reply_write(n, op, closure, data,
                    n->disk_full ? RAFTKV__KV_ERROR__KV_NO_SPACE
                                 : RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                    NULL, 0, n->store.errmsg);
        return;
    }
    err = quota_check_write(n, op,
                            (key ? key->len : 0) + (value ? value->len : 0),
                            msg, sizeof msg);
    if (err) {
        reply_write(n, op, closure, data, err, NULL, 0, msg);
        return;
    }
    struct kv_pending_write *w = calloc(1, sizeof *w);
    size_t len = raftkv__command__get_packed_size(cmd);
    uint8_t *buf = malloc(len ? len : 1);
    if (!w || !buf) {
        free(w);
        free(buf);
        reply_write(n, op, closure, data, RAFTKV__KV_ERROR__KV_INTERNAL, NULL,
                    0, "out of memory");
        return;
    }
    raftkv__command__pack(cmd, buf);
    uint64_t index, term, hint = 0;
    node_clock(n);
    int rv = raft_propose(n->raft, buf, len, &index, &term, &hint);
    free(buf);
    if (rv) {
        free(w);
        if (rv == RAFT_NOTLEADER || rv == RAFT_ETRANSFER) {
            reply_write(n, op, closure, data,
                        hint ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                             : RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                        NULL, hint,
                        rv == RAFT_ETRANSFER ? "leadership is being "
                                               "transferred"
                                             : "not the leader");
        } else {
            reply_write(n, op, closure, data,
                        rv == RAFT_EFULL ? RAFTKV__KV_ERROR__KV_UNAVAILABLE
                                         : RAFTKV__KV_ERROR__KV_INTERNAL,
                        NULL, 0, raft_strerror(rv));
        }
        return;
    }
    w->index = index;
    w->term = term;
    w->op = op;
    w->deadline = node_now_ms() + n->cfg.request_timeout_ms;
    w->closure = closure;
    w->closure_data = data;
    if (n->writes_tail) {
        n->writes_tail->next = w;
    } else {
        n->writes = w;
    }
    n->writes_tail = w;
    node_schedule_turn(n);
}

void client_propose_auth(struct kv_node *n,
                         const Raftkv__Command *cmd,
                         ProtobufCClosure closure,
                         void *data)
{
    propose(n, RAFTKV__COMMAND__OP_AUTH, cmd, NULL, NULL, NULL, 0, closure,
            data);
}

static struct kv_pending_write *pop_write(struct kv_node *n)
{
    struct kv_pending_write *w = n->writes;
    n->writes = w->next;
    if (!n->writes) {
        n->writes_tail = NULL;
    }
    return w;
}

/* A write at an applied index for which no outcome was recorded here. */
static void resolve_unmatched(struct kv_node *n, struct kv_pending_write *w)
{
    uint64_t term;
    if (raft_entry_term(n->raft, w->index, &term) == 0 && term != w->term) {
        reply_write(n, w->op, w->closure, w->closure_data,
                    RAFTKV__KV_ERROR__KV_WRONG_LEADER, NULL,
                    raft_leader(n->raft),
                    "not applied: a new leader replaced the entry");
    } else {
        reply_write(n, w->op, w->closure, w->closure_data,
                    RAFTKV__KV_ERROR__KV_TIMEOUT, NULL, raft_leader(n->raft),
                    "outcome unknown; retry with the same request id");
    }
    free(w);
}

void client_answer_applied(struct kv_node *n)
{
    for (size_t i = 0; i < n->n_done; i++) {
        const struct kv_applied *d = &n->done[i];
        while (n->writes && n->writes->index < d->index) {
            resolve_unmatched(n, pop_write(n));
        }
        if (!n->writes || n->writes->index != d->index) {
            continue;
        }
        struct kv_pending_write *w = pop_write(n);
        if (w->term == d->term) {
            reply_write(n, w->op, w->closure, w->closure_data, d->outcome.err,
                        &d->outcome, 0, outcome_message(d->outcome.err));
            free(w);
        } else {
            resolve_unmatched(n, w);
        }
    }
    while (n->writes && n->writes->index <= n->applied) {
        resolve_unmatched(n, pop_write(n));
    }
}

static void handle_put_append(Raftkv__KvService_Service *svc,
                              const Raftkv__PutAppendArgs *a,
                              Raftkv__PutAppendReply_Closure closure,
                              void *data)
{
    struct kv_node *n = node_of(svc, kv_svc);
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_PUT_APPEND;
    cmd.put_append = (Raftkv__PutAppendArgs *)a;
    propose(n, RAFTKV__COMMAND__OP_PUT_APPEND, &cmd, &a->key, &a->value,
            &a->client_id, a->request_id, (ProtobufCClosure)closure, data);
}

static void handle_delete(Raftkv__KvService_Service *svc,
                          const Raftkv__DeleteArgs *a,
                          Raftkv__DeleteReply_Closure closure,
                          void *data)
{
    struct kv_node *n = node_of(svc, kv_svc);
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_DEL;
    cmd.del = (Raftkv__DeleteArgs *)a;
    propose(n, RAFTKV__COMMAND__OP_DEL, &cmd, &a->key, NULL, &a->client_id,
            a->request_id, (ProtobufCClosure)closure, data);
}

static void handle_cas(Raftkv__KvService_Service *svc,
                       const Raftkv__CompareAndSwapArgs *a,
                       Raftkv__CompareAndSwapReply_Closure closure,
                       void *data)
{
    struct kv_node *n = node_of(svc, kv_svc);
    if (a->expected_case == RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED__NOT_SET) {
        reply_write(n, RAFTKV__COMMAND__OP_CAS, (ProtobufCClosure)closure, data,
                    RAFTKV__KV_ERROR__KV_BAD_REQUEST, NULL, 0,
                    "CompareAndSwap needs expected_value or expect_absent");
        return;
    }
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_CAS;
    cmd.cas = (Raftkv__CompareAndSwapArgs *)a;
    propose(n, RAFTKV__COMMAND__OP_CAS, &cmd, &a->key, &a->new_value,
            &a->client_id, a->request_id, (ProtobufCClosure)closure, data);
}

static void handle_open_session(Raftkv__KvService_Service *svc,
                                const Raftkv__OpenSessionArgs *a,
                                Raftkv__OpenSessionReply_Closure closure,
                                void *data)
{
    struct kv_node *n = node_of(svc, kv_svc);
    /* The bound goes into the log with the session, so that every replica
     * forgets the same sessions. */
    Raftkv__SessionOpen open = RAFTKV__SESSION_OPEN__INIT;
    open.client_id = a->client_id;
    open.max_sessions = n->cfg.max_sessions;
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_OPEN_SESSION;
    cmd.open_session = &open;
    propose(n, RAFTKV__COMMAND__OP_OPEN_SESSION, &cmd, NULL, NULL,
            &a->client_id, 0, (ProtobufCClosure)closure, data);
}

/* -------------------------------------------------------------- reads */

/* Read a key from the applied state and answer. */
static void serve_get(struct kv_node *n,
                      const uint8_t *key,
                      size_t key_len,
                      ProtobufCClosure closure,
                      void *data)
{
    /* The state transaction holds what was applied since the last state
     * commit; without one open, the last commit is the applied state. */
    int rc;
    MDB_txn *txn = node_state_read(n, &rc);
    if (!txn) {
        reply_get(n, closure, data, RAFTKV__KV_ERROR__KV_INTERNAL, NULL, 0, 0,
                  mdb_strerror(rc));
        return;
    }
    MDB_val k = {key_len, (void *)key}, v;
    rc = mdb_get(txn, n->store.kv, &k, &v);
    if (rc == 0) {
        reply_get(n, closure, data, RAFTKV__KV_ERROR__KV_OK, v.mv_data,
                  v.mv_size, 0, NULL);
    } else if (rc == MDB_NOTFOUND) {
        reply_get(n, closure, data, RAFTKV__KV_ERROR__KV_NOT_FOUND, NULL, 0, 0,
                  "no such key");
    } else {
        reply_get(n, closure, data, RAFTKV__KV_ERROR__KV_INTERNAL, NULL, 0, 0,
                  mdb_strerror(rc));
    }
    node_state_done(n, txn);
}

static void read_remove(struct kv_node *n, struct kv_pending_read *r)
{
    if (r->prev) {
        r->prev->next = r->next;
    } else {
        n->reads = r->next;
    }
    if (r->next) {
        r->next->prev = r->prev;
    }
    free(r->key);
    free(r);
}

static void handle_get(Raftkv__KvService_Service *svc,
                       const Raftkv__GetArgs *a,
                       Raftkv__GetReply_Closure closure,
                       void *data)
{
    struct kv_node *n = node_of(svc, kv_svc);
    ProtobufCClosure cl = (ProtobufCClosure)closure;
    char why[400];
    int err = auth_check_kv(n, data, &a->key, KV_AUTH_READ, why, sizeof why);
    if (err) {
        /* A stale read is checked against this node's applied auth state,
         * like the data it reads. */
        reply_get(n, cl, data, err, NULL, 0, 0, why);
        return;
    }
    err = kv_sm_check_key(&n->store, a->key.len);
    if (err) {
        reply_get(n, cl, data, err, NULL, 0, 0, "bad key length");
        return;
    }
    if (a->stale_ok) {
        serve_get(n, a->key.data, a->key.len, cl, data);
        return;
    }
    if (n->frozen) {
        uint64_t leader = raft_leader(n->raft);
        bool other = leader && leader != n->cfg.id;
        reply_get(n, cl, data,
                  other ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                        : RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                  NULL, 0, other ? leader : 0,
                  "node cannot persist; use a stale read or another node");
        return;
    }
    struct kv_pending_read *r = calloc(1, sizeof *r);
    uint8_t *key = malloc(a->key.len);
    if (!r || !key) {
        free(r);
        free(key);
        reply_get(n, cl, data, RAFTKV__KV_ERROR__KV_INTERNAL, NULL, 0, 0,
                  "out of memory");
        return;
    }
    memcpy(key, a->key.data, a->key.len);
    uint64_t hint = 0;
    node_clock(n);
    int rv = raft_read_index(n->raft, (uint64_t)(uintptr_t)r, &hint);
    if (rv) {
        free(r);
        free(key);
        reply_get(n, cl, data,
                  rv == RAFT_NOTLEADER && hint
                      ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                      : RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                  NULL, 0, hint,
                  rv == RAFT_NOTLEADER ? "not the leader" : raft_strerror(rv));
        return;
    }
    r->key = key;
    r->key_len = a->key.len;
    r->closure = cl;
    r->closure_data = data;
    r->deadline = node_now_ms() + n->cfg.request_timeout_ms;
    r->next = n->reads;
    if (n->reads) {
        n->reads->prev = r;
    }
    n->reads = r;
    node_schedule_turn(n);
}

void client_answer_reads(struct kv_node *n,
                         const struct raft_read *reads,
                         size_t n_reads)
{
    for (size_t i = 0; i < n_reads; i++) {
        struct kv_pending_read *r = n->reads;
        while (r && (uint64_t)(uintptr_t)r != reads[i].ctx) {
            r = r->next;
        }
        if (!r) {
            continue;
        }
        if (reads[i].ok) {
            r->index = reads[i].index;
            r->confirmed = true;
        } else {
            reply_get(n, r->closure, r->closure_data,
                      raft_leader(n->raft) ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                                           : RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                      NULL, 0, raft_leader(n->raft), "leadership lost");
            read_remove(n, r);
        }
    }
}

void client_serve_ready_reads(struct kv_node *n)
{
    struct kv_pending_read *r = n->reads;
    while (r) {
        struct kv_pending_read *next = r->next;
        if (r->confirmed && r->index <= n->applied) {
            serve_get(n, r->key, r->key_len, r->closure, r->closure_data);
            read_remove(n, r);
        }
        r = next;
    }
}

/* ------------------------------------------------------------- timers */

void client_sweep(struct kv_node *n)
{
    uint64_t now = node_now_ms();
    /* Writes time out in order; a later one cannot expire first. */
    while (n->writes && n->writes->deadline <= now) {
        struct kv_pending_write *w = pop_write(n);
        reply_write(n, w->op, w->closure, w->closure_data,
                    RAFTKV__KV_ERROR__KV_TIMEOUT, NULL, raft_leader(n->raft),
                    "not applied in time; outcome unknown, retry with the "
                    "same request id");
        free(w);
    }
    struct kv_pending_read *r = n->reads;
    while (r) {
        struct kv_pending_read *next = r->next;
        if (r->deadline <= now) {
            reply_get(n, r->closure, r->closure_data,
                      RAFTKV__KV_ERROR__KV_TIMEOUT, NULL, 0,
                      raft_leader(n->raft), "read not confirmed in time");
            read_remove(n, r);
        }
        r = next;
    }
    admin_sweep(n);
    backup_sweep(n);
}

void client_fail_all(struct kv_node *n, int err, const char *why)
{
    auth_service_stop(n); /* (only at shutdown: node_free) */
    admin_fail_all(n, why);
    while (n->writes) {
        struct kv_pending_write *w = pop_write(n);
        /* The write may still commit through another leader. */
        reply_write(n, w->op, w->closure, w->closure_data,
                    RAFTKV__KV_ERROR__KV_TIMEOUT, NULL, 0, why);
        free(w);
    }
    while (n->reads) {
        struct kv_pending_read *r = n->reads;
        reply_get(n, r->closure, r->closure_data, err, NULL, 0, 0, why);
        read_remove(n, r);
    }
}

/* -------------------------------------------------------------- admin */

static void handle_ping(Raftkv__AdminService_Service *svc,
                        const Raftkv__PingArgs *a,
                        Raftkv__PingReply_Closure closure,
                        void *data)
{
    struct kv_node *n = node_of(svc, admin_svc);
    Raftkv__PingReply r = RAFTKV__PING_REPLY__INIT;
    r.payload = a->payload;
    r.node_id = n->cfg.id;
    closure(&r, data);
}

static void handle_status(Raftkv__AdminService_Service *svc,
                          const Raftkv__StatusArgs *a,
                          Raftkv__StatusReply_Closure closure,
                          void *data)
{
    (void)a;
    struct kv_node *n = node_of(svc, admin_svc);
    Raftkv__StatusReply r = RAFTKV__STATUS_REPLY__INIT;
    char self[300], leader[300];
    uint64_t leader_id = raft_leader(n->raft);
    snprintf(self, sizeof self, "%s", node_peer_addr(n, n->cfg.id));
    snprintf(leader, sizeof leader, "%s",
             leader_id ? node_peer_addr(n, leader_id) : "");
    r.node_id = n->cfg.id;
    r.address = self;
    r.role = (char *)raft_role_name(raft_role(n->raft));
    r.term = raft_term(n->raft);
    r.leader_id = leader_id;
    r.leader_address = leader;
    r.commit_index = raft_commit_index(n->raft);
    r.applied_index = n->applied;
    r.last_log_index = raft_last_index(n->raft);
    r.snapshot_index = raft_snapshot_index(n->raft);
    r.cluster_id = n->cluster_id;
    r.disk_full = n->disk_full;
    admin_status_progress(n, &r);
    closure(&r, data);
}

void client_service_init(struct kv_node *n)
{
    Raftkv__KvService_Service kv = {
        RAFTKV__KV_SERVICE__BASE_INIT,
        handle_get,
        handle_put_append,
        handle_delete,
        handle_cas,
        handle_open_session,
        NULL, /* Range: not served yet */
        NULL, /* DeleteRange */
        NULL, /* Txn */
        NULL, /* Compact */
        NULL, /* Events */
    };
    Raftkv__AdminService_Service admin = {
        RAFTKV__ADMIN_SERVICE__BASE_INIT,
        handle_ping,
        handle_status,
        NULL, /* Fault: fault.c */
        NULL, /* TransferLeader: admin.c */
        NULL, /* SnapshotRead: backup.c */
    };
    n->kv_svc = kv;
    n->admin_svc = admin;
    admin_service_init(n);
    backup_service_init(n);
}
