/* kv.c: KvService: writes proposed through the log, linearizable reads
 * through ReadIndex (or stale ones from the applied state), replies; the
 * leader's automatic compaction of the history. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "lease.h"
#include "service.h"
#include "txn.h"

/* The KvService of a service table. */
#define services_of_kv(svc) services_of(svc, kv_svc)

/* ------------------------------------------------------------- replies */

static void set_hint(struct kv_node *n, uint64_t leader, Raftkv__LeaderHint *h)
{
    h->id = leader;
    h->address = leader ? (char *)node_peer_addr(n, leader) : "";
}

/* Answer a transaction or a delete range: with its recorded reply (the
 * outcome holds it packed, as the session table does for a retry), or
 * with the error alone when it was not applied. */
static void reply_recorded(int op,
                           ProtobufCClosure closure,
                           void *data,
                           int err,
                           const struct kv_outcome *o,
                           Raftkv__LeaderHint *hint,
                           char *text)
{
    const ProtobufCMessageDescriptor *d =
        op == RAFTKV__COMMAND__OP_TXN ? &raftkv__txn_reply__descriptor
                                      : &raftkv__delete_range_reply__descriptor;
    ProtobufCMessage *m = NULL;
    if (o && o->current_len) {
        m = protobuf_c_message_unpack(d, NULL, o->current_len, o->current);
    }
    if (op == RAFTKV__COMMAND__OP_TXN) {
        Raftkv__TxnReply empty = RAFTKV__TXN_REPLY__INIT;
        Raftkv__TxnReply *r = m ? (Raftkv__TxnReply *)m : &empty;
        char *recorded = r->message;
        r->err = err;
        r->leader = hint;
        if (!m || !recorded[0]) {
            r->message = text;
        }
        closure(&r->base, data);
        r->leader = NULL;
        r->message = recorded;
    } else {
        Raftkv__DeleteRangeReply empty = RAFTKV__DELETE_RANGE_REPLY__INIT;
        Raftkv__DeleteRangeReply *r =
            m ? (Raftkv__DeleteRangeReply *)m : &empty;
        char *recorded = r->message;
        r->err = err;
        r->leader = hint;
        if (!m || !recorded[0]) {
            r->message = text;
        }
        closure(&r->base, data);
        r->leader = NULL;
        r->message = recorded;
    }
    if (m) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
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
    uint64_t rev = o ? o->revision : 0;
    if (op == RAFTKV__COMMAND__OP_DEL) {
        Raftkv__DeleteReply r = RAFTKV__DELETE_REPLY__INIT;
        r.err = err;
        r.leader = &hint;
        r.message = text;
        r.revision = rev;
        closure(&r.base, data);
    } else if (op == RAFTKV__COMMAND__OP_CAS) {
        Raftkv__CompareAndSwapReply r = RAFTKV__COMPARE_AND_SWAP_REPLY__INIT;
        r.err = err;
        r.leader = &hint;
        r.message = text;
        r.revision = rev;
        if (o) {
            r.swapped = o->swapped;
            r.exists = o->exists;
            r.current_value.data = o->current;
            r.current_value.len = o->current_len;
        }
        closure(&r.base, data);
    } else if (op == RAFTKV__COMMAND__OP_TXN ||
               op == RAFTKV__COMMAND__OP_DELETE_RANGE) {
        reply_recorded(op, closure, data, err, o, &hint, text);
    } else if (op == RAFTKV__COMMAND__OP_COMPACT) {
        Raftkv__CompactReply r = RAFTKV__COMPACT_REPLY__INIT;
        r.err = err;
        r.leader = &hint;
        r.message = text;
        r.revision = rev;
        r.compact_revision = o ? o->compact : 0;
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
        r.revision = rev;
        Raftkv__PutResponse *pr = NULL;
        if (o && o->current_len) {
            pr = raftkv__put_response__unpack(NULL, o->current_len, o->current);
            r.prev_kv = pr ? pr->prev_kv : NULL;
        }
        closure(&r.base, data);
        if (pr) {
            raftkv__put_response__free_unpacked(pr, NULL);
        }
    }
}

static void reply_get_at(struct kv_node *n,
                         ProtobufCClosure closure,
                         void *data,
                         int err,
                         const void *value,
                         size_t len,
                         uint64_t revision,
                         uint64_t leader,
                         const char *msg)
{
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, leader, &hint);
    Raftkv__GetReply r = RAFTKV__GET_REPLY__INIT;
    r.err = err;
    r.revision = revision;
    r.value.data = (uint8_t *)value;
    r.value.len = len;
    r.leader = &hint;
    r.message = (char *)(msg ? msg : "");
    closure(&r.base, data);
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
    reply_get_at(n, closure, data, err, value, len, 0, leader, msg);
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
        case RAFTKV__KV_ERROR__KV_COMPACTED:
            return "the history up to that revision is compacted already";
        case RAFTKV__KV_ERROR__KV_FUTURE_REVISION:
            return "that revision is past the store's revision";
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
    if (rpc_call_slow(kw->closure_data)) {
        node_note_write(n, w, o != NULL, kw->closure_data);
    }
    reply_write(n, kw->op, kw->closure, kw->closure_data, err, o, leader,
                o ? outcome_message(o->err) : msg);
    free(kw);
}

static void propose_cmd(struct kv_services *s,
                        int op,
                        const Raftkv__Command *cmd,
                        size_t cost,
                        ProtobufCClosure closure,
                        void *data);

static int lease_keys_allowed(struct kv_node *n,
                              const Raftkv__PutAppendArgs *p,
                              const Raftkv__TxnArgs *t,
                              char *why,
                              size_t why_size);

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
    if (op == RAFTKV__COMMAND__OP_PUT_APPEND &&
        (err = lease_keys_allowed(n, cmd->put_append, NULL, msg, sizeof msg))) {
        reply_write(n, op, closure, data, err, NULL, 0, msg);
        return;
    }
    propose_cmd(s, op, cmd, (key ? key->len : 0) + (value ? value->len : 0),
                closure, data);
}

/* Propose a checked write; its answer comes from write_done. */
static void propose_cmd(struct kv_services *s,
                        int op,
                        const Raftkv__Command *cmd,
                        size_t cost,
                        ProtobufCClosure closure,
                        void *data)
{
    struct kv_node *n = s->node;
    char msg[400];
    /* A node that cannot write its disk refuses in node_propose, before
     * the quota is looked at. */
    if (!n->frozen) {
        int err = quota_check_write(s, op, cost, msg, sizeof msg);
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
    struct kv_revs revs;
    struct kv_rec r;
    int rv = kv_mvcc_revs(&n->store, txn, &revs);
    if (!rv) {
        rv = kv_mvcc_get(&n->store, txn, key, key_len, &r);
    }
    if (rv == 0) {
        reply_get_at(n, closure, data, RAFTKV__KV_ERROR__KV_OK, r.value,
                     r.value_len, revs.revision, 0, NULL);
    } else if (rv == MDB_NOTFOUND) {
        reply_get_at(n, closure, data, RAFTKV__KV_ERROR__KV_NOT_FOUND, NULL, 0,
                     revs.revision, 0, "no such key");
    } else {
        reply_get(n, closure, data, RAFTKV__KV_ERROR__KV_INTERNAL, NULL, 0, 0,
                  n->store.errmsg);
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
    if (rpc_call_slow(r->closure_data)) {
        node_note_read(w, r->closure_data);
    }
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
    r->w.caller_deadline = rpc_call_deadline(data);
    node_read_begin(n, &r->w); /* answered by read_ready */
}

/* ------------------------------------------------------ range, events */

/* A read of the applied state that a reply is made from: Range or
 * Events. */
typedef void (*serve_fn)(struct kv_services *s,
                         const ProtobufCMessage *args,
                         ProtobufCClosure closure,
                         void *data);

/* Answer a read that could not be served, in its reply type. */
static void reply_read_error(struct kv_node *n,
                             const ProtobufCMessageDescriptor *d,
                             ProtobufCClosure closure,
                             void *data,
                             int err,
                             uint64_t leader,
                             const char *msg)
{
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, leader, &hint);
    if (d == &raftkv__range_args__descriptor) {
        Raftkv__RangeReply r = RAFTKV__RANGE_REPLY__INIT;
        r.err = err;
        r.leader = &hint;
        r.message = (char *)(msg ? msg : "");
        closure(&r.base, data);
    } else if (d == &raftkv__txn_args__descriptor) {
        Raftkv__TxnReply r = RAFTKV__TXN_REPLY__INIT;
        r.err = err;
        r.leader = &hint;
        r.message = (char *)(msg ? msg : "");
        closure(&r.base, data);
    } else {
        Raftkv__EventsReply r = RAFTKV__EVENTS_REPLY__INIT;
        r.err = err;
        r.leader = &hint;
        r.message = (char *)(msg ? msg : "");
        closure(&r.base, data);
    }
}

/* The applied state to serve a read from (node_state_done it), or NULL
 * once the read was answered INTERNAL. */
static MDB_txn *state_for_read(struct kv_node *n,
                               const ProtobufCMessage *args,
                               ProtobufCClosure closure,
                               void *data)
{
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        reply_read_error(n, args->descriptor, closure, data,
                         RAFTKV__KV_ERROR__KV_INTERNAL, 0,
                         "cannot read the applied state");
    }
    return txn;
}

/* ------------------------------------------- counts over many turns */

/* Counts going on at once, each with an LMDB read transaction: the rest
 * of the readers LMDB allows (store.c: 126) stay for snapshot streams to
 * followers and backups. One past it is counted in one go. */
#define KV_MAX_COUNT_JOBS 32

/* A Range, or a transaction that only reads, whose counts walk more than
 * --count-slice-keys keys: the rest is counted a slice per loop turn, on a
 * read transaction of the state the read found (committed for it), and
 * the reply goes out at the end; writes and other requests are served
 * between the slices. */
struct kv_count_job
{
    struct kv_count_job *next;
    struct kv_services *s;
    MDB_txn *txn;        /* the state counted */
    struct event *ev;    /* runs the next slice */
    struct kv_arena mem; /* the reply's memory; the counts' */
    struct kv_counts cs; /* the counts left */
    size_t at;           /* the one going on */
    bool is_txn;         /* the reply: txn, else range */
    Raftkv__RangeReply range;
    Raftkv__TxnReply txn_reply;
    Raftkv__LeaderHint hint;
    ProtobufCClosure closure;
    void *data;
};

/* Unlink and free @j (its call answered). */
static void count_job_free(struct kv_count_job *j)
{
    struct kv_count_job **p = &j->s->counts;
    while (*p && *p != j) {
        p = &(*p)->next;
    }
    if (*p) {
        *p = j->next;
    }
    if (j->txn) {
        mdb_txn_abort(j->txn);
    }
    if (j->ev) {
        event_free(j->ev);
    }
    kv_arena_free(&j->mem);
    free(j);
}

static void count_job_fail(struct kv_count_job *j, int err, const char *msg)
{
    reply_read_error(j->s->node,
                     j->is_txn ? &raftkv__txn_args__descriptor
                               : &raftkv__range_args__descriptor,
                     j->closure, j->data, err, 0, msg);
    count_job_free(j);
}

static void count_job_slice(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kv_count_job *j = arg;
    struct kv_node *n = j->s->node;
    n->metrics.count_slices++;
    struct kv_count_left *l = &j->cs.left[j->at];
    int rv = kv_mvcc_count_on(&n->store, j->txn, &l->rest, &j->mem, l->count);
    if (rv) {
        count_job_fail(j, RAFTKV__KV_ERROR__KV_INTERNAL, n->store.errmsg);
        return;
    }
    if (l->rest.pending || ++j->at < j->cs.n) {
        static const struct timeval now = {0, 0}; /* after the loop's I/O */
        evtimer_add(j->ev, &now);
        return;
    }
    if (j->is_txn) {
        j->txn_reply.leader = &j->hint;
        j->closure(&j->txn_reply.base, j->data);
    } else {
        j->range.leader = &j->hint;
        j->closure(&j->range.base, j->data);
    }
    count_job_free(j);
}

/* Stopping: answer every count. The store is reopened or its map grows:
 * every read of it ends, the state counted with it, and the client asks
 * again. */
static void count_jobs_end(struct kv_node *n, enum node_event ev, void *arg)
{
    struct kv_services *s = arg;
    size_t ended = 0;
    for (struct kv_count_job *j = s->counts; j; j = j->next) {
        ended++;
    }
    if (ended && ev != NODE_EV_STOPPING) {
        rpc_logf(RPC_LOG_INFO,
                 "node %llu: %zu count%s in progress ended (UNAVAILABLE, "
                 "for the client to ask again): the store is reopened or "
                 "its map grows",
                 (unsigned long long)n->cfg.id, ended, ended == 1 ? "" : "s");
    }
    while (s->counts) {
        if (ev == NODE_EV_STOPPING) {
            count_job_fail(s->counts, RAFTKV__KV_ERROR__KV_SHUTTING_DOWN,
                           "the node is stopping");
        } else {
            count_job_fail(s->counts, RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                           "the node's store was reopened, or its map "
                           "grown, during the count; try again");
        }
    }
}

/* Go on with the counts of @cs over later turns, then answer @reply (a
 * RangeReply or a TxnReply, in @mem: a range's keys and values, which
 * point into @txn's pages, are copied first; @mem passes to the job; a
 * RangeReply's one count is its own). @txn is the state read, handed
 * back here. 0 once the job owns the call; -1 when it could not start,
 * with @txn, @mem and the reply as they were, for the caller to count on
 * now. */
static int count_job_start(struct kv_services *s,
                           MDB_txn *txn,
                           struct kv_arena *mem,
                           const struct kv_counts *cs,
                           const ProtobufCMessage *reply,
                           ProtobufCClosure closure,
                           void *data)
{
    struct kv_node *n = s->node;
    if (n->frozen) {
        return -1; /* it commits nothing until its disk is back */
    }
    size_t going = 0;
    for (struct kv_count_job *o = s->counts; o; o = o->next) {
        going++;
    }
    if (going >= KV_MAX_COUNT_JOBS) {
        return -1;
    }
    struct kv_count_job *j = calloc(1, sizeof *j);
    if (!j) {
        return -1;
    }
    j->is_txn = reply->descriptor == &raftkv__txn_reply__descriptor;
    j->ev = evtimer_new(n->base, count_job_slice, j);
    if (j->ev) {
        /* Slices run at the priority of the node's turns (node.c): after
         * the loop's I/O, and beside the turns that apply writes. */
        event_priority_set(j->ev, 2);
    }
    const Raftkv__RangeReply *r = (const Raftkv__RangeReply *)reply;
    for (size_t i = 0; !j->is_txn && j->ev && i < r->n_kvs; i++) {
        Raftkv__KeyValue *kv = r->kvs[i];
        uint8_t *k = kv_arena_dup(mem, kv->key.data, kv->key.len);
        uint8_t *v = kv_arena_dup(mem, kv->value.data, kv->value.len);
        if (!k || !v) {
            break;
        }
        kv->key.data = k;
        kv->value.data = v;
    }
    /* The state as it is now, in a transaction of its own (a read of
     * the last commit is one already). */
    if (!j->ev || (txn == n->state_txn && node_state_read_now(n, &j->txn))) {
        if (j->ev) {
            event_free(j->ev);
        }
        free(j);
        return -1;
    }
    if (!j->txn) {
        j->txn = txn;
    }
    j->s = s;
    j->mem = *mem;
    j->cs = *cs;
    if (j->is_txn) {
        j->txn_reply = *(const Raftkv__TxnReply *)reply;
    } else {
        j->range = *r;
        j->cs.left[0].count = &j->range.count;
    }
    raftkv__leader_hint__init(&j->hint);
    set_hint(n, 0, &j->hint);
    j->closure = closure;
    j->data = data;
    j->next = s->counts;
    s->counts = j;
    static const struct timeval now = {0, 0};
    evtimer_add(j->ev, &now);
    return 0;
}

/* Counts left past this turn's share (@cs): go on with them over later
 * turns (-1: the job answers the call), else count them now (0, or a
 * store error with n->store.errmsg set). @txn is updated to the state to
 * hand back with node_state_done. */
static int count_rest(struct kv_services *s,
                      MDB_txn **txn,
                      struct kv_arena *mem,
                      struct kv_counts *cs,
                      const ProtobufCMessage *reply,
                      ProtobufCClosure closure,
                      void *data)
{
    struct kv_node *n = s->node;
    uint64_t at = n->applied;
    bool open = *txn == n->state_txn; /* which the job may commit */
    for (size_t i = 0; i < cs->n; i++) {
        cs->left[i].rest.budget = n->cfg.count_slice_keys; /* per slice */
    }
    if (count_job_start(s, *txn, mem, cs, reply, closure, data) == 0) {
        return -1;
    }
    /* Here and now, if the state is still the one read (a commit that
     * failed meanwhile applies it again). */
    if (open) {
        *txn = node_state_read(n, NULL);
    }
    if (!*txn || n->applied != at) {
        snprintf(n->store.errmsg, sizeof n->store.errmsg,
                 "cannot read the applied state");
        return KV_STORE_EIO;
    }
    int rv = 0;
    for (size_t i = 0; i < cs->n && !rv; i++) {
        cs->left[i].rest.budget = 0;
        rv = kv_mvcc_count_on(&n->store, *txn, &cs->left[i].rest, mem,
                              cs->left[i].count);
    }
    return rv;
}

static void serve_range(struct kv_services *s,
                        const ProtobufCMessage *args,
                        ProtobufCClosure closure,
                        void *data)
{
    struct kv_node *n = s->node;
    const Raftkv__RangeArgs *a = (const Raftkv__RangeArgs *)args;
    MDB_txn *txn = state_for_read(n, &a->base, closure, data);
    if (!txn) {
        return;
    }
    struct kv_arena mem = {0};
    struct kv_revs revs;
    Raftkv__RangeReply r = RAFTKV__RANGE_REPLY__INIT;
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, 0, &hint);
    /* Straight from the pages: the reply is packed before anything is
     * written to this transaction again. */
    struct kv_count_left left = {.rest.budget = n->cfg.count_slice_keys,
                                 .count = &r.count};
    int rv = kv_mvcc_revs(&n->store, txn, &revs);
    if (!rv) {
        rv = kv_mvcc_range(&n->store, txn, a, false, &mem, &r, &left.rest);
    }
    r.revision = revs.revision;
    if (!rv && left.rest.pending) {
        /* Too many keys to count in this turn. */
        struct kv_counts cs = {.left = kv_arena_dup(&mem, &left, sizeof left),
                               .n = 1};
        rv = cs.left ? count_rest(s, &txn, &mem, &cs, &r.base, closure, data)
                     : KV_STORE_ENOMEM;
        if (rv == -1) {
            return;
        }
    }
    if (rv) {
        r.err = RAFTKV__KV_ERROR__KV_INTERNAL;
        r.message = n->store.errmsg;
        r.n_kvs = 0;
    }
    r.leader = &hint;
    closure(&r.base, data);
    kv_arena_free(&mem);
    node_state_done(n, txn);
}

static void serve_events(struct kv_services *s,
                         const ProtobufCMessage *args,
                         ProtobufCClosure closure,
                         void *data)
{
    struct kv_node *n = s->node;
    const Raftkv__EventsArgs *a = (const Raftkv__EventsArgs *)args;
    MDB_txn *txn = state_for_read(n, &a->base, closure, data);
    if (!txn) {
        return;
    }
    struct kv_arena mem = {0};
    Raftkv__EventsReply r = RAFTKV__EVENTS_REPLY__INIT;
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, 0, &hint);
    if (kv_mvcc_events(&n->store, txn, a, false, &mem, &r) != 0) {
        r.err = RAFTKV__KV_ERROR__KV_INTERNAL;
        r.message = n->store.errmsg;
        r.n_events = 0;
    }
    r.leader = &hint;
    closure(&r.base, data);
    kv_arena_free(&mem);
    node_state_done(n, txn);
}

/* A transaction that writes nothing (kv_txn_read_only), run on the
 * applied state like a range: the same code as at apply, on a read
 * transaction, so it makes no revision and answers at the store's. */
static void serve_txn(struct kv_services *s,
                      const ProtobufCMessage *args,
                      ProtobufCClosure closure,
                      void *data)
{
    struct kv_node *n = s->node;
    const Raftkv__TxnArgs *a = (const Raftkv__TxnArgs *)args;
    MDB_txn *txn = state_for_read(n, &a->base, closure, data);
    if (!txn) {
        return;
    }
    struct kv_arena mem = {0};
    struct kv_change c;
    Raftkv__TxnReply r = RAFTKV__TXN_REPLY__INIT;
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, 0, &hint);
    struct kv_counts cs = {.budget = n->cfg.count_slice_keys};
    int rv = kv_change_begin(&c, &n->store, txn);
    if (!rv) {
        c.counts = &cs;
        rv = kv_txn_run(&c, a, &mem, &r);
    }
    if (!rv && cs.n) {
        /* Its ranges have too many keys to count in this turn. */
        rv = count_rest(s, &txn, &mem, &cs, &r.base, closure, data);
        if (rv == -1) {
            return;
        }
    }
    if (rv) {
        raftkv__txn_reply__init(&r);
        r.err = RAFTKV__KV_ERROR__KV_INTERNAL;
        r.message = n->store.errmsg;
    }
    r.leader = &hint;
    closure(&r.base, data);
    kv_arena_free(&mem);
    node_state_done(n, txn);
}

/* A linearizable Range or Events waiting for ReadIndex: its arguments
 * packed, unpacked again to serve it. */
struct kv_packed_read
{
    struct node_read_waiter w;           /* the node's part */
    struct kv_services *s;               /* whose read it is */
    const ProtobufCMessageDescriptor *d; /* of the arguments */
    serve_fn serve;                      /* makes the reply */
    ProtobufCClosure closure;            /* completes the client's call */
    void *closure_data;                  /* its argument */
    size_t len;                          /* bytes of args */
    uint8_t args[];                      /* the packed arguments */
};

static void packed_read_ready(struct kv_node *n,
                              struct node_read_waiter *w,
                              int err,
                              uint64_t leader,
                              const char *msg)
{
    struct kv_packed_read *r = (struct kv_packed_read *)w;
    if (rpc_call_slow(r->closure_data)) {
        node_note_read(w, r->closure_data);
    }
    ProtobufCMessage *m = NULL;
    if (!err) {
        m = protobuf_c_message_unpack(r->d, NULL, r->len, r->args);
        if (!m) {
            err = RAFTKV__KV_ERROR__KV_INTERNAL;
            msg = "out of memory";
        }
    }
    if (err) {
        reply_read_error(n, r->d, r->closure, r->closure_data, err, leader,
                         msg);
    } else {
        r->serve(r->s, m, r->closure, r->closure_data);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    free(r);
}

/* Serve a read now (stale) or once ReadIndex confirms it. */
static void begin_read(struct kv_services *s,
                       const ProtobufCMessage *args,
                       bool stale,
                       serve_fn serve,
                       ProtobufCClosure closure,
                       void *data)
{
    struct kv_node *n = s->node;
    if (stale) {
        serve(s, args, closure, data);
        return;
    }
    size_t len = protobuf_c_message_get_packed_size(args);
    struct kv_packed_read *r = calloc(1, sizeof *r + len);
    if (!r) {
        reply_read_error(n, args->descriptor, closure, data,
                         RAFTKV__KV_ERROR__KV_INTERNAL, 0, "out of memory");
        return;
    }
    r->len = protobuf_c_message_pack(args, r->args);
    r->s = s;
    r->d = args->descriptor;
    r->serve = serve;
    r->closure = closure;
    r->closure_data = data;
    r->w.ready = packed_read_ready;
    r->w.caller_deadline = rpc_call_deadline(data);
    node_read_begin(n, &r->w); /* answered by packed_read_ready */
}

static void handle_range(Raftkv__KvService_Service *svc,
                         const Raftkv__RangeArgs *a,
                         Raftkv__RangeReply_Closure closure,
                         void *data)
{
    struct kv_services *s = services_of_kv(svc);
    struct kv_node *n = s->node;
    ProtobufCClosure cl = (ProtobufCClosure)closure;
    char why[400];
    int err =
        kv_mvcc_check_range(&n->store, &a->key, &a->range_end, why, sizeof why);
    if (!err) {
        err = auth_check_range(s, data, &a->key, &a->range_end, KV_AUTH_READ,
                               why, sizeof why);
    }
    if (err) {
        reply_read_error(n, a->base.descriptor, cl, data, err, 0, why);
        return;
    }
    begin_read(s, &a->base, a->stale_ok, serve_range, cl, data);
}

static void handle_events(Raftkv__KvService_Service *svc,
                          const Raftkv__EventsArgs *a,
                          Raftkv__EventsReply_Closure closure,
                          void *data)
{
    struct kv_services *s = services_of_kv(svc);
    struct kv_node *n = s->node;
    ProtobufCClosure cl = (ProtobufCClosure)closure;
    static const ProtobufCBinaryData all = {1, (uint8_t *)""};
    char why[400];
    int err = a->key.len ? kv_mvcc_check_range(&n->store, &a->key,
                                               &a->range_end, why, sizeof why)
                         : 0;
    if (!err) {
        /* Events without a key are every key's. */
        err = auth_check_range(s, data, a->key.len ? &a->key : &all,
                               a->key.len ? &a->range_end : &all, KV_AUTH_READ,
                               why, sizeof why);
    }
    if (err) {
        reply_read_error(n, a->base.descriptor, cl, data, err, 0, why);
        return;
    }
    begin_read(s, &a->base, a->stale_ok, serve_events, cl, data);
}

/* ------------------------------------------------- multi-key writes */

/* A write needs a session: 16-byte client id, request id > 0. */
static bool has_session(const ProtobufCBinaryData *client_id,
                        uint64_t request_id)
{
    return client_id->len == KV_CLIENT_ID_LEN && request_id > 0;
}

/* What counting a write's deletes reads: the state, taken at the first
 * range that must be walked (single keys and small limits need none). */
struct del_count
{
    struct kv_node *n;
    MDB_txn *txn;
    uint64_t total; /* keys the write would delete, so far */
    char *why;
    size_t why_size;
};

/* Add the keys a delete @d would delete now to x->total, counting no
 * further than past the node's --max-delete-keys: a write is applied on
 * every node's event loop, which a delete of a million keys holds for
 * about a second (docs/performance.md). Returns a KvError. */
static int count_deletes(struct del_count *x, const Raftkv__DeleteRangeArgs *d)
{
    struct kv_node *n = x->n;
    uint64_t limit = n->cfg.max_delete_keys, k = 0;
    uint64_t room = x->total <= limit ? limit - x->total : 0;
    if (d->range_end.len == 0) {
        k = 1; /* one key at most */
    } else if (d->limit && d->limit <= room) {
        k = d->limit; /* at most that many: no need to count */
    } else if (x->total <= limit) {
        int rc = 0;
        if (!x->txn && !(x->txn = node_state_read(n, &rc))) {
            snprintf(x->why, x->why_size, "cannot read the state: %s",
                     mdb_strerror(rc));
            return RAFTKV__KV_ERROR__KV_INTERNAL;
        }
        if (kv_mvcc_count_upto(&n->store, x->txn, &d->key, &d->range_end, room,
                               &k)) {
            snprintf(x->why, x->why_size,
                     "cannot count the keys to delete: %.300s",
                     n->store.errmsg);
            return RAFTKV__KV_ERROR__KV_INTERNAL;
        }
        if (d->limit && d->limit < k) {
            k = d->limit;
        }
    }
    x->total += k;
    if (x->total > limit) {
        snprintf(x->why, x->why_size,
                 "the write would delete more than %llu keys, the most one "
                 "write may delete (the leader's --max-delete-keys); nothing "
                 "was applied: delete the range in pieces (kvctl del does)",
                 (unsigned long long)limit);
        return RAFTKV__KV_ERROR__KV_TOO_MANY_KEYS;
    }
    return 0;
}

/* The most keys a transaction would delete: its larger branch's deletes,
 * nested transactions' included. */
static int count_txn_deletes(struct del_count *x, const Raftkv__TxnArgs *t)
{
    uint64_t base = x->total, most = base;
    for (int b = 0; b < 2; b++) {
        size_t k = b ? t->n_failure : t->n_success;
        Raftkv__RequestOp **ops = b ? t->failure : t->success;
        int err = 0;
        x->total = base;
        for (size_t i = 0; i < k && !err; i++) {
            const Raftkv__RequestOp *op = ops[i];
            if (op->request_case ==
                RAFTKV__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE) {
                err = count_deletes(x, op->request_delete_range);
            } else if (op->request_case ==
                       RAFTKV__REQUEST_OP__REQUEST_REQUEST_TXN) {
                err = count_txn_deletes(x, op->request_txn);
            }
        }
        if (err) {
            return err;
        }
        if (x->total > most) {
            most = x->total;
        }
    }
    x->total = most;
    return 0;
}

/* Refuse a write that would delete more than --max-delete-keys keys
 * (@a a DeleteRange's args, or @t a transaction's). */
static int deletes_allowed(struct kv_node *n,
                           const Raftkv__DeleteRangeArgs *a,
                           const Raftkv__TxnArgs *t,
                           char *why,
                           size_t why_size)
{
    if (n->cfg.max_delete_keys == 0 || raft_role(n->raft) != RAFT_LEADER) {
        return 0; /* a follower sends it to the leader, which decides */
    }
    struct del_count x = {.n = n, .why = why, .why_size = why_size};
    int err = a ? count_deletes(&x, a) : count_txn_deletes(&x, t);
    node_state_done(n, x.txn);
    return err;
}

/* ------------------------------------------------- keys per lease */

/* A put that attaches a key to a lease. */
struct lease_put
{
    uint64_t lease;
    const ProtobufCBinaryData *key;
};

/* Gather a transaction's puts with a lease (both branches, nested). */
static void txn_lease_puts(const Raftkv__TxnArgs *t,
                           struct lease_put *puts,
                           size_t *n)
{
    for (int b = 0; b < 2; b++) {
        size_t k = b ? t->n_failure : t->n_success;
        Raftkv__RequestOp **ops = b ? t->failure : t->success;
        for (size_t i = 0; i < k; i++) {
            const Raftkv__RequestOp *op = ops[i];
            if (op->request_case == RAFTKV__REQUEST_OP__REQUEST_REQUEST_PUT &&
                op->request_put->lease && *n < KV_MAX_TXN_OPS) {
                puts[(*n)++] = (struct lease_put){op->request_put->lease,
                                                  &op->request_put->key};
            } else if (op->request_case ==
                       RAFTKV__REQUEST_OP__REQUEST_REQUEST_TXN) {
                txn_lease_puts(op->request_txn, puts, n);
            }
        }
    }
}

/* Refuse a write that would give a lease more than --max-lease-keys keys
 * (@p a put's args, or @t a transaction's): ending a lease deletes all
 * its keys in one write, which every node applies on its event loop. The
 * count is the applied state's, so writes in flight to the same lease
 * may pass it by a few. Returns a KvError. */
static int lease_keys_allowed(struct kv_node *n,
                              const Raftkv__PutAppendArgs *p,
                              const Raftkv__TxnArgs *t,
                              char *why,
                              size_t why_size)
{
    uint64_t limit = n->cfg.max_lease_keys;
    struct lease_put puts[KV_MAX_TXN_OPS];
    size_t n_puts = 0;
    if (p && p->op == RAFTKV__PUT_OP__PUT_OP_PUT && p->lease) {
        puts[n_puts++] = (struct lease_put){p->lease, &p->key};
    } else if (t) {
        txn_lease_puts(t, puts, &n_puts);
    }
    if (!limit || !n_puts || raft_role(n->raft) != RAFT_LEADER) {
        return 0; /* a follower sends it to the leader, which decides */
    }
    int rc = 0, err = 0;
    MDB_txn *txn = node_state_read(n, &rc);
    if (!txn) {
        snprintf(why, why_size, "cannot read the state: %s", mdb_strerror(rc));
        return RAFTKV__KV_ERROR__KV_INTERNAL;
    }
    for (size_t i = 0; i < n_puts && !err; i++) {
        uint64_t id = puts[i].lease, have = 0, most = 0, adds = 0;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            seen = puts[j].lease == id;
        }
        if (seen) {
            continue; /* counted with the first put to it */
        }
        for (size_t j = i; j < n_puts; j++) {
            most += puts[j].lease == id;
        }
        if (kv_lease_count(&n->store, txn, id, &have)) {
            snprintf(why, why_size, "cannot count a lease's keys: %.300s",
                     n->store.errmsg);
            err = RAFTKV__KV_ERROR__KV_INTERNAL;
            break;
        }
        if (have + most <= limit) {
            continue;
        }
        /* Near the limit: keys attached to it already add nothing. */
        for (size_t j = i; j < n_puts && !err; j++) {
            struct kv_rec rec;
            if (puts[j].lease != id) {
                continue;
            }
            int r = kv_mvcc_get(&n->store, txn, puts[j].key->data,
                                puts[j].key->len, &rec);
            if (r == MDB_NOTFOUND || (r == 0 && rec.lease != id)) {
                adds++;
            } else if (r) {
                snprintf(why, why_size, "cannot read a key: %.300s",
                         n->store.errmsg);
                err = RAFTKV__KV_ERROR__KV_INTERNAL;
            }
        }
        if (!err && adds && have + adds > limit) {
            snprintf(why, why_size,
                     "lease %016llx has %llu keys, and one lease may have at "
                     "most %llu (the leader's --max-lease-keys): ending a "
                     "lease deletes its keys in one write; nothing was "
                     "applied",
                     (unsigned long long)id, (unsigned long long)have,
                     (unsigned long long)limit);
            err = RAFTKV__KV_ERROR__KV_TOO_MANY_KEYS;
        }
    }
    node_state_done(n, txn);
    return err;
}

static void handle_delete_range(Raftkv__KvService_Service *svc,
                                const Raftkv__DeleteRangeArgs *a,
                                Raftkv__DeleteRangeReply_Closure closure,
                                void *data)
{
    struct kv_services *s = services_of_kv(svc);
    struct kv_node *n = s->node;
    ProtobufCClosure cl = (ProtobufCClosure)closure;
    int op = RAFTKV__COMMAND__OP_DELETE_RANGE;
    char why[400];
    int err =
        kv_mvcc_check_range(&n->store, &a->key, &a->range_end, why, sizeof why);
    if (!err) {
        err = auth_check_range(s, data, &a->key, &a->range_end,
                               a->prev_kv ? KV_AUTH_READWRITE : KV_AUTH_WRITE,
                               why, sizeof why);
    }
    if (!err && !has_session(&a->client_id, a->request_id)) {
        err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        snprintf(why, sizeof why,
                 "a write needs a 16-byte client_id and a request_id > 0");
    }
    if (!err) {
        err = deletes_allowed(n, a, NULL, why, sizeof why);
    }
    if (err) {
        reply_write(n, op, cl, data, err, NULL, 0, why);
        return;
    }
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_DELETE_RANGE;
    cmd.delete_range = (Raftkv__DeleteRangeArgs *)a;
    propose_cmd(s, op, &cmd, 0, cl, data);
}

/* Check the permissions a transaction needs, op by op (both branches:
 * which one runs is known only when it is applied); add what its puts
 * would store to *cost. */
static int txn_allowed(struct kv_services *s,
                       void *data,
                       const Raftkv__TxnArgs *t,
                       size_t *cost,
                       char *why,
                       size_t why_size)
{
    int err = 0;
    for (size_t i = 0; i < t->n_compare && !err; i++) {
        err = auth_check_range(s, data, &t->compare[i]->key,
                               &t->compare[i]->range_end, KV_AUTH_READ, why,
                               why_size);
    }
    for (int b = 0; b < 2 && !err; b++) {
        size_t n = b ? t->n_failure : t->n_success;
        Raftkv__RequestOp **ops = b ? t->failure : t->success;
        for (size_t i = 0; i < n && !err; i++) {
            const Raftkv__RequestOp *op = ops[i];
            static const ProtobufCBinaryData one = {0, NULL};
            switch (op->request_case) {
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_RANGE:
                    err = auth_check_range(s, data, &op->request_range->key,
                                           &op->request_range->range_end,
                                           KV_AUTH_READ, why, why_size);
                    break;
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_PUT:
                    err = auth_check_range(s, data, &op->request_put->key, &one,
                                           op->request_put->prev_kv
                                               ? KV_AUTH_READWRITE
                                               : KV_AUTH_WRITE,
                                           why, why_size);
                    *cost +=
                        op->request_put->key.len + op->request_put->value.len;
                    break;
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                    err = auth_check_range(
                        s, data, &op->request_delete_range->key,
                        &op->request_delete_range->range_end,
                        op->request_delete_range->prev_kv ? KV_AUTH_READWRITE
                                                          : KV_AUTH_WRITE,
                        why, why_size);
                    break;
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_TXN:
                    err = txn_allowed(s, data, op->request_txn, cost, why,
                                      why_size);
                    break;
                default:
                    break; /* kv_txn_check refused it */
            }
        }
    }
    return err;
}

static void handle_txn(Raftkv__KvService_Service *svc,
                       const Raftkv__TxnArgs *a,
                       Raftkv__TxnReply_Closure closure,
                       void *data)
{
    struct kv_services *s = services_of_kv(svc);
    struct kv_node *n = s->node;
    ProtobufCClosure cl = (ProtobufCClosure)closure;
    int op = RAFTKV__COMMAND__OP_TXN;
    char why[400];
    size_t cost = 0;
    int err = kv_txn_check(&n->store, a, KV_MAX_VALUE, why, sizeof why);
    if (!err) {
        err = txn_allowed(s, data, a, &cost, why, sizeof why);
    }
    if (!err && kv_txn_read_only(a)) {
        /* Nothing to write: a linearizable read (ReadIndex), as etcd
         * serves it, not an entry of the log. */
        begin_read(s, &a->base, false, serve_txn, cl, data);
        return;
    }
    if (!err && !has_session(&a->client_id, a->request_id)) {
        err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        snprintf(why, sizeof why,
                 "a write needs a 16-byte client_id and a request_id > 0");
    }
    if (!err) {
        err = deletes_allowed(n, NULL, a, why, sizeof why);
    }
    if (!err) {
        err = lease_keys_allowed(n, NULL, a, why, sizeof why);
    }
    if (err) {
        reply_write(n, op, cl, data, err, NULL, 0, why);
        return;
    }
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_TXN;
    cmd.txn = (Raftkv__TxnArgs *)a;
    propose_cmd(s, op, &cmd, cost, cl, data);
}

/* ------------------------------------------------ compaction in steps */

#define COMPACT_STEP_BYTES (64u << 20) /* history one entry drops at most */

/* How far one entry should compact towards @rev (kv_mvcc_compact_step,
 * within the node's --compact-step-records). */
static int compact_step(struct kv_node *n, uint64_t rev, uint64_t *step)
{
    *step = rev;
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        return -1;
    }
    int rv = kv_mvcc_compact_step(
        &n->store, txn, rev, n->cfg.compact_step_records,
        n->cfg.compact_step_records ? COMPACT_STEP_BYTES : 0, step);
    node_state_done(n, txn);
    return rv;
}

static void propose_compact(struct kv_node *n,
                            uint64_t rev,
                            struct node_write_waiter *w)
{
    Raftkv__CompactArgs ca = RAFTKV__COMPACT_ARGS__INIT;
    ca.revision = rev;
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_COMPACT;
    cmd.compact = &ca;
    node_propose(n, &cmd, w); /* w->done, in any case */
}

/* A client's compaction that goes through the log in steps. A step's
 * answer comes while the node applies entries, when nothing can be
 * proposed: the next step is proposed from an event of its own. */
struct compact_steps
{
    struct node_write_waiter w; /* the node's part */
    struct kv_services *s;
    uint64_t target;            /* the revision the client asked for */
    uint64_t reached;           /* compacted up to, after the last step */
    ProtobufCClosure closure;   /* completes the client's call */
    void *data;                 /* its argument */
    struct event *next_ev;      /* proposes the next step */
    struct compact_steps *next; /* s->compact_chains: waiting for it */
};

/* Answer the client and free the chain (it is on no list). */
static void compact_chain_end(struct compact_steps *cs,
                              int err,
                              const struct kv_outcome *o,
                              uint64_t leader,
                              const char *msg)
{
    reply_write(cs->s->node, RAFTKV__COMMAND__OP_COMPACT, cs->closure, cs->data,
                err, o, leader, msg);
    event_free(cs->next_ev);
    free(cs);
}

/* Short of the target, and this node cannot go on: the client asks again
 * (compaction is idempotent), of the leader if there is one. */
static void compact_chain_stop(struct compact_steps *cs)
{
    struct kv_node *n = cs->s->node;
    char msg[200];
    if (n->stopping) {
        compact_chain_end(cs, RAFTKV__KV_ERROR__KV_SHUTTING_DOWN, NULL, 0,
                          "the node is stopping");
        return;
    }
    snprintf(msg, sizeof msg,
             "compacted to revision %llu of %llu, in steps, when this node "
             "stopped leading; ask the leader again",
             (unsigned long long)cs->reached, (unsigned long long)cs->target);
    compact_chain_end(cs, RAFTKV__KV_ERROR__KV_WRONG_LEADER, NULL,
                      raft_leader(n->raft), msg);
}

static void compact_step_done(struct kv_node *n,
                              struct node_write_waiter *w,
                              int err,
                              const struct kv_outcome *o,
                              uint64_t leader,
                              const char *msg);

/* The next step of a chain, outside the node's turn. */
static void on_compact_next(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct compact_steps *cs = arg;
    struct kv_services *s = cs->s;
    struct kv_node *n = s->node;
    for (struct compact_steps **p = &s->compact_chains; *p; p = &(*p)->next) {
        if (*p == cs) {
            *p = cs->next;
            break;
        }
    }
    uint64_t step = cs->target;
    if (n->stopping || raft_role(n->raft) != RAFT_LEADER) {
        compact_chain_stop(cs);
        return;
    }
    if (compact_step(n, cs->target, &step) != 0) {
        compact_chain_end(cs, RAFTKV__KV_ERROR__KV_INTERNAL, NULL, 0,
                          "cannot read the history to compact it");
        return;
    }
    cs->w = (struct node_write_waiter){.done = compact_step_done};
    propose_compact(n, step, &cs->w); /* compact_step_done, in any case */
}

/* A step was applied (or failed): the next one, or the answer. */
static void compact_step_done(struct kv_node *n,
                              struct node_write_waiter *w,
                              int err,
                              const struct kv_outcome *o,
                              uint64_t leader,
                              const char *msg)
{
    struct compact_steps *cs = (struct compact_steps *)w;
    /* COMPACTED: another compaction passed this step (a retry of the
     * same call, the automatic one): go on from where it stopped. */
    if ((!err || err == RAFTKV__KV_ERROR__KV_COMPACTED) && o &&
        o->compact < cs->target) {
        cs->reached = o->compact;
        if (n->stopping || raft_role(n->raft) != RAFT_LEADER) {
            compact_chain_stop(cs);
            return;
        }
        cs->next = cs->s->compact_chains;
        cs->s->compact_chains = cs;
        event_active(cs->next_ev, EV_TIMEOUT, 1);
        return;
    }
    compact_chain_end(cs, err, o, leader, o ? outcome_message(o->err) : msg);
}

/* The node stops: the chains waiting for their next step end. */
static void compact_chains_end(struct kv_node *n, enum node_event ev, void *arg)
{
    (void)n;
    (void)ev;
    struct kv_services *s = arg;
    while (s->compact_chains) {
        struct compact_steps *cs = s->compact_chains;
        s->compact_chains = cs->next;
        compact_chain_end(cs, RAFTKV__KV_ERROR__KV_SHUTTING_DOWN, NULL, 0,
                          "the node is stopping");
    }
}

static void handle_compact(Raftkv__KvService_Service *svc,
                           const Raftkv__CompactArgs *a,
                           Raftkv__CompactReply_Closure closure,
                           void *data)
{
    struct kv_services *s = services_of_kv(svc);
    int op = RAFTKV__COMMAND__OP_COMPACT;
    char why[400];
    int err = auth_check_root(s, data, "compact the history", why, sizeof why);
    if (err) {
        reply_write(s->node, op, (ProtobufCClosure)closure, data, err, NULL, 0,
                    why);
        return;
    }
    /* Compaction is idempotent: no session; a retry that finds its own
     * compaction done is told COMPACTED. */
    uint64_t step = a->revision;
    if (compact_step(s->node, a->revision, &step) == 0 && step < a->revision) {
        /* More history than one entry should drop: in steps. */
        struct compact_steps *cs = calloc(1, sizeof *cs);
        if (cs) {
            cs->next_ev = event_new(s->node->base, -1, 0, on_compact_next, cs);
        }
        if (cs && cs->next_ev) {
            cs->w.done = compact_step_done;
            cs->s = s;
            cs->target = a->revision;
            cs->closure = (ProtobufCClosure)closure;
            cs->data = data;
            propose_compact(s->node, step, &cs->w);
            return;
        }
        free(cs); /* without memory: in one entry */
    }
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_COMPACT;
    cmd.compact = (Raftkv__CompactArgs *)a;
    propose_cmd(s, op, &cmd, 0, (ProtobufCClosure)closure, data);
}

/* ------------------------------------------------ automatic compaction */

#define AUTO_COMPACT_MS   100   /* the leader looks this often */
#define AUTO_COMPACT_STEP 10000 /* revisions dropped by one entry at most */

/* The leader's compaction in flight. */
struct auto_compact
{
    struct node_write_waiter w;
    struct kv_services *s;
};

static void auto_compact_done(struct kv_node *n,
                              struct node_write_waiter *w,
                              int err,
                              const struct kv_outcome *o,
                              uint64_t leader,
                              const char *msg)
{
    (void)o;
    (void)leader;
    struct auto_compact *ac = (struct auto_compact *)w;
    ac->s->compacting = false;
    if (err && err != RAFTKV__KV_ERROR__KV_COMPACTED &&
        err != RAFTKV__KV_ERROR__KV_WRONG_LEADER) {
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: automatic compaction of the history failed: %s",
                 (unsigned long long)n->cfg.id,
                 msg ? msg : outcome_message(err));
    }
    free(ac);
}

/* Sweep: a leader whose history passed --history-revisions or
 * --history-bytes proposes a compaction through the log, so that every
 * node drops the same history. */
static void kv_sweep(struct kv_node *n, enum node_event ev, void *arg)
{
    (void)ev;
    struct kv_services *s = arg;
    uint64_t now = node_now_ms();
    if (s->compacting || n->frozen || raft_role(n->raft) != RAFT_LEADER ||
        now - s->compact_checked_ms < AUTO_COMPACT_MS) {
        return;
    }
    s->compact_checked_ms = now;
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        return;
    }
    uint64_t target = 0;
    int rv = kv_mvcc_compact_target(&n->store, txn, n->cfg.history_revisions,
                                    n->cfg.history_bytes, AUTO_COMPACT_STEP,
                                    &target);
    node_state_done(n, txn);
    if (rv || !target || compact_step(n, target, &target) != 0) {
        return;
    }
    struct auto_compact *ac = calloc(1, sizeof *ac);
    if (!ac) {
        return;
    }
    ac->s = s;
    ac->w.done = auto_compact_done;
    s->compacting = true;
    propose_compact(n, target, &ac->w); /* auto_compact_done, in any case */
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
        handle_range,
        handle_delete_range,
        handle_txn,
        handle_compact,
        handle_events,
    };
    s->kv_svc = kv;
    if (node_subscribe(s->node, NODE_EV_RELEASE_READERS | NODE_EV_STOPPING,
                       count_jobs_end, s) != 0 ||
        node_subscribe(s->node, NODE_EV_STOPPING, compact_chains_end, s) != 0) {
        return -1;
    }
    return node_subscribe(s->node, NODE_EV_SWEEP, kv_sweep, s);
}
