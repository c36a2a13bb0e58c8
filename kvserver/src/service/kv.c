/* kv.c: KvService: writes proposed through the log, linearizable reads
 * through ReadIndex (or stale ones from the applied state), replies. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"

/* The KvService of a service table. */
#define services_of_kv(svc) services_of(svc, kv_svc)

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

/* A client write waiting for its entry (struct node_write_waiter). */
struct kv_write
{
    struct node_write_waiter w; /* the node's part */
    int op;                     /* RAFTKV__COMMAND__OP_*: the reply type */
    ProtobufCClosure closure;   /* completes the client's call */
    void *closure_data;         /* its argument */
};

/* The node is done with a write: answer it. */
static void write_done(struct kv_node *n,
                       struct node_write_waiter *w,
                       int err,
                       const struct kv_outcome *o,
                       uint64_t leader,
                       const char *msg)
{
    struct kv_write *kw = (struct kv_write *)w;
    reply_write(n, kw->op, kw->closure, kw->closure_data, err, o, leader,
                o ? outcome_message(o->err) : msg);
    free(kw);
}

static void propose(struct kv_services *s,
                    int op,
                    const Raftkv__Command *cmd,
                    const ProtobufCBinaryData *key,
                    const ProtobufCBinaryData *value,
                    const ProtobufCBinaryData *client_id,
                    uint64_t request_id,
                    ProtobufCClosure closure,
                    void *data)
{
    struct kv_node *n = s->node;
    char msg[400];
    int err = auth_check_kv(
        s, data, key,
        op == RAFTKV__COMMAND__OP_CAS ? KV_AUTH_READWRITE : KV_AUTH_WRITE, msg,
        sizeof msg);
    if (err) {
        reply_write(n, op, closure, data, err, NULL, 0, msg);
        return;
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
    if (client_id->len != KV_CLIENT_ID_LEN ||
        (request_id == 0 && op != RAFTKV__COMMAND__OP_OPEN_SESSION)) {
        reply_write(n, op, closure, data, RAFTKV__KV_ERROR__KV_BAD_REQUEST,
                    NULL, 0,
                    "a write needs a 16-byte client_id and a request_id > 0");
        return;
    }
    /* A node that cannot write its disk refuses in node_propose, before
     * the quota is looked at. */
    if (!n->frozen) {
        err = quota_check_write(s, op,
                                (key ? key->len : 0) + (value ? value->len : 0),
                                msg, sizeof msg);
        if (err) {
            reply_write(n, op, closure, data, err, NULL, 0, msg);
            return;
        }
    }
    struct kv_write *kw = calloc(1, sizeof *kw);
    if (!kw) {
        reply_write(n, op, closure, data, RAFTKV__KV_ERROR__KV_INTERNAL, NULL,
                    0, "out of memory");
        return;
    }
    kw->w.done = write_done;
    kw->op = op;
    kw->closure = closure;
    kw->closure_data = data;
    node_propose(n, cmd, &kw->w); /* answered by write_done */
}

static void handle_put_append(Raftkv__KvService_Service *svc,
                              const Raftkv__PutAppendArgs *a,
                              Raftkv__PutAppendReply_Closure closure,
                              void *data)
{
    struct kv_services *s = services_of_kv(svc);
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_PUT_APPEND;
    cmd.put_append = (Raftkv__PutAppendArgs *)a;
    propose(s, RAFTKV__COMMAND__OP_PUT_APPEND, &cmd, &a->key, &a->value,
            &a->client_id, a->request_id, (ProtobufCClosure)closure, data);
}

static void handle_delete(Raftkv__KvService_Service *svc,
                          const Raftkv__DeleteArgs *a,
                          Raftkv__DeleteReply_Closure closure,
                          void *data)
{
    struct kv_services *s = services_of_kv(svc);
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_DEL;
    cmd.del = (Raftkv__DeleteArgs *)a;
    propose(s, RAFTKV__COMMAND__OP_DEL, &cmd, &a->key, NULL, &a->client_id,
            a->request_id, (ProtobufCClosure)closure, data);
}

static void handle_cas(Raftkv__KvService_Service *svc,
                       const Raftkv__CompareAndSwapArgs *a,
                       Raftkv__CompareAndSwapReply_Closure closure,
                       void *data)
{
    struct kv_services *s = services_of_kv(svc);
    if (a->expected_case == RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED__NOT_SET) {
        reply_write(s->node, RAFTKV__COMMAND__OP_CAS, (ProtobufCClosure)closure,
                    data, RAFTKV__KV_ERROR__KV_BAD_REQUEST, NULL, 0,
                    "CompareAndSwap needs expected_value or expect_absent");
        return;
    }
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_CAS;
    cmd.cas = (Raftkv__CompareAndSwapArgs *)a;
    propose(s, RAFTKV__COMMAND__OP_CAS, &cmd, &a->key, &a->new_value,
            &a->client_id, a->request_id, (ProtobufCClosure)closure, data);
}

static void handle_open_session(Raftkv__KvService_Service *svc,
                                const Raftkv__OpenSessionArgs *a,
                                Raftkv__OpenSessionReply_Closure closure,
                                void *data)
{
    struct kv_services *s = services_of_kv(svc);
    /* The bound goes into the log with the session, so that every replica
     * forgets the same sessions. */
    Raftkv__SessionOpen open = RAFTKV__SESSION_OPEN__INIT;
    open.client_id = a->client_id;
    open.max_sessions = s->node->cfg.max_sessions;
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_OPEN_SESSION;
    cmd.open_session = &open;
    propose(s, RAFTKV__COMMAND__OP_OPEN_SESSION, &cmd, NULL, NULL,
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

/* A linearizable Get waiting for ReadIndex (struct node_read_waiter). */
struct kv_read
{
    struct node_read_waiter w; /* the node's part */
    ProtobufCClosure closure;  /* completes the client's call */
    void *closure_data;        /* its argument */
    size_t key_len;            /* length of key */
    uint8_t key[];             /* a copy of the key */
};

/* The node confirmed the read (err 0: serve it now) or gave up on it. */
static void read_ready(struct kv_node *n,
                       struct node_read_waiter *w,
                       int err,
                       uint64_t leader,
                       const char *msg)
{
    struct kv_read *r = (struct kv_read *)w;
    if (err) {
        reply_get(n, r->closure, r->closure_data, err, NULL, 0, leader, msg);
    } else {
        serve_get(n, r->key, r->key_len, r->closure, r->closure_data);
    }
    free(r);
}

static void handle_get(Raftkv__KvService_Service *svc,
                       const Raftkv__GetArgs *a,
                       Raftkv__GetReply_Closure closure,
                       void *data)
{
    struct kv_services *s = services_of_kv(svc);
    struct kv_node *n = s->node;
    ProtobufCClosure cl = (ProtobufCClosure)closure;
    char why[400];
    int err = auth_check_kv(s, data, &a->key, KV_AUTH_READ, why, sizeof why);
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
    struct kv_read *r = calloc(1, sizeof *r + a->key.len);
    if (!r) {
        reply_get(n, cl, data, RAFTKV__KV_ERROR__KV_INTERNAL, NULL, 0, 0,
                  "out of memory");
        return;
    }
    memcpy(r->key, a->key.data, a->key.len);
    r->key_len = a->key.len;
    r->closure = cl;
    r->closure_data = data;
    r->w.ready = read_ready;
    node_read_begin(n, &r->w); /* answered by read_ready */
}

/* ------------------------------------------------------------- service */

int kv_service_init(struct kv_services *s)
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
    s->kv_svc = kv;
    return 0;
}
