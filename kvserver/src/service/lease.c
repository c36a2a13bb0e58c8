/* lease.c: LeaseService: grants and revocations through the log, and the
 * leader's clock of every lease: keep-alives, time to live, expiry.
 *
 * When a lease expires is the leader's decision, kept in memory (keep-
 * alives are not logged): a table id -> expiry on the node's monotonic
 * clock. A node that becomes leader fills it, once it has applied every
 * entry of the terms before (its first read barrier), with every lease of
 * the applied state at now + granted TTL + the longest election timeout:
 * a new leader never expires a lease early (etcd's rule), whatever its
 * predecessor was told. Leases granted later get now + TTL, a keep-alive
 * resets its lease to now + TTL. On the sweep the leader proposes
 * LeaseCommand.expire for the leases past their expiry (one batch in
 * flight, of about --max-lease-keys keys at most), only after a read barrier
 * proved it still leads: a leader that cannot prove it leads expires nothing.
 * Keep-alives and time-to-live queries are answered after such a barrier too,
 * so a deposed leader never tells a client its lease lives.
 *
 * Keep-alives come as unary calls (LeaseKeepAlive) or on a stream
 * (LeaseKeepAliveStream): the client renews by sending a message on it,
 * and each renewal is answered, in order, after a barrier that began once
 * it had arrived (the same rule; one barrier per stream at a time covers
 * every renewal waiting on it, and the core answers the barriers of all
 * streams with one heartbeat round). A stream ends when this node stops
 * leading, so that its client finds the leader. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "lease.h"
#include "service.h"

/* The LeaseService of a service table. */
#define services_of_lease(svc) services_of(svc, lease_svc)

/* One lease the leader keeps time for; id 0 marks a free slot. */
struct lease_entry
{
    uint64_t id;     /* the lease */
    uint64_t expiry; /* ms of the node's clock when it expires */
    int64_t ttl;     /* its granted TTL, seconds */
    bool seen;       /* found again by the last full read of the leases */
};

/* The leader's clock of every lease (see the top of the file). */
struct lease_clock
{
    struct kv_services *s;       /* the services */
    struct lease_entry *slots;   /* open addressing, linear probing */
    size_t cap, n;               /* slots (a power of two), leases */
    uint64_t term;               /* term the table is for (0: not leader) */
    bool loaded;                 /* it holds every lease of the state */
    bool loading;                /* a barrier to fill it is in flight */
    bool expiring;               /* an expire (or its barrier) in flight */
    bool expire_proven;          /* its barrier proved this node leads: the
                                    next sweep proposes it (not from inside
                                    the turn that served the barrier) */
    uint64_t next_due;           /* no lease in the table expires before
                                    this (a lower bound; 0: look) */
    uint64_t election_extension; /* ms a new leader adds to every lease */
    struct ka_stream *streams;   /* keep-alive streams open on this node */
    uint64_t n_streams;          /* their number */
    uint64_t stream_renewals;    /* renewals answered on streams (OK) */
};

/* ------------------------------------------------------------- table */

static size_t slot_of(const struct lease_clock *lc, uint64_t id)
{
    uint64_t h = id * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) & (lc->cap - 1);
}

static struct lease_entry *table_find(struct lease_clock *lc, uint64_t id)
{
    if (!lc->cap) {
        return NULL;
    }
    for (size_t i = slot_of(lc, id);; i = (i + 1) & (lc->cap - 1)) {
        if (lc->slots[i].id == id) {
            return &lc->slots[i];
        }
        if (lc->slots[i].id == 0) {
            return NULL;
        }
    }
}

static bool table_grow(struct lease_clock *lc)
{
    size_t cap = lc->cap ? lc->cap * 2 : 64;
    struct lease_entry *slots = calloc(cap, sizeof *slots);
    if (!slots) {
        return false;
    }
    struct lease_entry *old = lc->slots;
    size_t old_cap = lc->cap;
    lc->slots = slots;
    lc->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].id) {
            size_t j = slot_of(lc, old[i].id);
            while (slots[j].id) {
                j = (j + 1) & (cap - 1);
            }
            slots[j] = old[i];
        }
    }
    free(old);
    return true;
}

/* Set a lease's expiry (adding it when new); false without memory. */
static bool table_put(struct lease_clock *lc,
                      uint64_t id,
                      int64_t ttl,
                      uint64_t expiry)
{
    struct lease_entry *e = table_find(lc, id);
    if (!e) {
        if ((lc->n + 1) * 4 > lc->cap * 3 && !table_grow(lc)) {
            return false;
        }
        size_t i = slot_of(lc, id);
        while (lc->slots[i].id) {
            i = (i + 1) & (lc->cap - 1);
        }
        e = &lc->slots[i];
        e->id = id;
        lc->n++;
    }
    e->ttl = ttl;
    e->expiry = expiry;
    e->seen = true;
    if (expiry < lc->next_due) {
        lc->next_due = expiry;
    }
    return true;
}

static void table_remove(struct lease_clock *lc, uint64_t id)
{
    struct lease_entry *e = table_find(lc, id);
    if (!e) {
        return;
    }
    /* Backward-shift deletion: later entries of the probe run move up. */
    size_t i = (size_t)(e - lc->slots), mask = lc->cap - 1;
    for (size_t j = (i + 1) & mask; lc->slots[j].id; j = (j + 1) & mask) {
        size_t home = slot_of(lc, lc->slots[j].id);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            lc->slots[i] = lc->slots[j];
            i = j;
        }
    }
    lc->slots[i].id = 0;
    lc->n--;
}

static void table_clear(struct lease_clock *lc)
{
    free(lc->slots);
    lc->slots = NULL;
    lc->cap = lc->n = 0;
}

/* ----------------------------------------------------- reading leases */

struct load_ctx
{
    struct lease_clock *lc;
    uint64_t now, extra; /* expiry of a lease not in the table: now + TTL
                            + extra */
    bool keep;           /* keep the expiry of leases in the table */
    bool failed;         /* out of memory */
};

static int load_one(uint64_t id, int64_t ttl, void *arg)
{
    struct load_ctx *x = arg;
    struct lease_entry *e = x->keep ? table_find(x->lc, id) : NULL;
    if (e) {
        e->seen = true;
        e->ttl = ttl;
        return 0;
    }
    if (!table_put(x->lc, id, ttl, x->now + (uint64_t)ttl * 1000 + x->extra)) {
        x->failed = true;
    }
    return 0;
}

/* Read every lease of the applied state into the table. A new leader
 * (keep false) gives each the election extension; a reread (keep true)
 * keeps the expiry of those it knows and drops those that are gone. */
static void load_all(struct lease_clock *lc, bool keep)
{
    struct kv_node *n = lc->s->node;
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        return; /* tried again on the next sweep */
    }
    if (!keep) {
        table_clear(lc);
    }
    for (size_t i = 0; i < lc->cap; i++) {
        lc->slots[i].seen = false;
    }
    struct load_ctx x = {lc, node_now_ms(), keep ? 0 : lc->election_extension,
                         keep, false};
    int rv = kv_lease_each(&n->store, txn, load_one, &x);
    node_state_done(n, txn);
    if (rv || x.failed) {
        rpc_logf(RPC_LOG_WARN, "node %llu: cannot read the leases: %s",
                 (unsigned long long)n->cfg.id,
                 rv ? n->store.errmsg : "out of memory");
        return;
    }
    for (size_t i = 0; i < lc->cap; i++) {
        while (lc->slots[i].id && !lc->slots[i].seen) {
            table_remove(lc, lc->slots[i].id); /* shifts another here */
        }
    }
    struct kv_lease_news *ln = &n->store.lease_news;
    ln->n = 0;
    ln->all = false;
    if (!keep) {
        lc->loaded = true;
        rpc_logf(RPC_LOG_INFO,
                 "node %llu: keeping time for %zu leases (extended by %llu "
                 "ms: a new leader)",
                 (unsigned long long)n->cfg.id, lc->n,
                 (unsigned long long)lc->election_extension);
    }
}

/* Take the leases applied entries granted or ended since the last look:
 * each is read again (a new grant starts its TTL now). */
static void take_news(struct lease_clock *lc)
{
    struct kv_node *n = lc->s->node;
    struct kv_lease_news *ln = &n->store.lease_news;
    if (!lc->loaded) {
        ln->n = 0; /* the full read when the table is filled sees them */
        ln->all = false;
        return;
    }
    if (ln->all) {
        load_all(lc, true);
        return;
    }
    if (!ln->n) {
        return;
    }
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        return;
    }
    uint64_t now = node_now_ms();
    for (size_t i = 0; i < ln->n; i++) {
        int64_t ttl;
        table_remove(lc, ln->ids[i]);
        int rv = kv_lease_get(&n->store, txn, ln->ids[i], &ttl);
        if (rv == 0) {
            if (!table_put(lc, ln->ids[i], ttl, now + (uint64_t)ttl * 1000)) {
                ln->all = true;
                break;
            }
        } else if (rv != MDB_NOTFOUND) {
            ln->all = true; /* read them all next time */
            break;
        }
    }
    if (!ln->all) {
        ln->n = 0;
    }
    node_state_done(n, txn);
}

/* ------------------------------------------------------------ replies */

/* The calls of LeaseService, for their reply types. */
enum lease_call {
    CALL_GRANT,
    CALL_REVOKE,
    CALL_KEEPALIVE,
    CALL_TTL,
    CALL_LIST,
};

static void set_hint(struct kv_node *n, uint64_t leader, Raftkv__LeaderHint *h)
{
    h->id = leader;
    h->address = leader ? (char *)node_peer_addr(n, leader) : "";
}

/* Answer a call with an error alone. */
static void reply_error(struct kv_node *n,
                        enum lease_call call,
                        ProtobufCClosure closure,
                        void *data,
                        int err,
                        uint64_t leader,
                        const char *msg)
{
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, leader, &hint);
    char *text = (char *)(msg ? msg : "");
    switch (call) {
        case CALL_GRANT: {
            Raftkv__LeaseGrantReply r = RAFTKV__LEASE_GRANT_REPLY__INIT;
            r.err = err;
            r.leader = &hint;
            r.message = text;
            closure(&r.base, data);
            break;
        }
        case CALL_REVOKE: {
            Raftkv__LeaseRevokeReply r = RAFTKV__LEASE_REVOKE_REPLY__INIT;
            r.err = err;
            r.leader = &hint;
            r.message = text;
            closure(&r.base, data);
            break;
        }
        case CALL_KEEPALIVE: {
            Raftkv__LeaseKeepAliveReply r =
                RAFTKV__LEASE_KEEP_ALIVE_REPLY__INIT;
            r.err = err;
            r.leader = &hint;
            r.message = text;
            closure(&r.base, data);
            break;
        }
        case CALL_TTL: {
            Raftkv__LeaseTimeToLiveReply r =
                RAFTKV__LEASE_TIME_TO_LIVE_REPLY__INIT;
            r.err = err;
            r.leader = &hint;
            r.message = text;
            closure(&r.base, data);
            break;
        }
        case CALL_LIST: {
            Raftkv__LeaseListReply r = RAFTKV__LEASE_LIST_REPLY__INIT;
            r.err = err;
            r.leader = &hint;
            r.message = text;
            closure(&r.base, data);
            break;
        }
    }
}

/* ------------------------------------------------------------- writes */

/* A grant or revoke waiting for its entry. */
struct lease_write
{
    struct node_write_waiter w; /* the node's part */
    struct lease_clock *lc;     /* the clock */
    enum lease_call call;       /* CALL_GRANT or CALL_REVOKE */
    ProtobufCClosure closure;   /* completes the client's call */
    void *closure_data;         /* its argument */
};

static void write_done(struct kv_node *n,
                       struct node_write_waiter *w,
                       int err,
                       const struct kv_outcome *o,
                       uint64_t leader,
                       const char *msg)
{
    struct lease_write *lw = (struct lease_write *)w;
    const ProtobufCMessageDescriptor *d =
        lw->call == CALL_GRANT ? &raftkv__lease_grant_reply__descriptor
                               : &raftkv__lease_revoke_reply__descriptor;
    ProtobufCMessage *m = NULL;
    if (o) {
        n->metrics.proposals_committed++;
        m = protobuf_c_message_unpack(d, NULL, o->current_len, o->current);
    } else {
        n->metrics.proposals_failed++;
    }
    if (!m || !o->current_len) {
        if (o) {
            msg = err == RAFTKV__KV_ERROR__KV_SESSION_EXPIRED
                      ? "not applied: the client's session is not open; open "
                        "a new one with a new client id"
                      : "bad request (or a retry of a request the client "
                        "already replaced)";
        }
        if (m) {
            protobuf_c_message_free_unpacked(m, NULL);
        }
        reply_error(n, lw->call, lw->closure, lw->closure_data, err, leader,
                    msg);
        free(lw);
        return;
    }
    /* The recorded reply (also for a retry), with this call's status. */
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    if (lw->call == CALL_GRANT) {
        Raftkv__LeaseGrantReply *r = (Raftkv__LeaseGrantReply *)m;
        r->err = err;
        r->leader = &hint;
        lw->closure(&r->base, lw->closure_data);
        r->leader = NULL;
    } else {
        Raftkv__LeaseRevokeReply *r = (Raftkv__LeaseRevokeReply *)m;
        r->err = err;
        r->leader = &hint;
        lw->closure(&r->base, lw->closure_data);
        r->leader = NULL;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    free(lw);
}

static void propose_lease(struct kv_services *s,
                          enum lease_call call,
                          const Raftkv__LeaseCommand *lc,
                          ProtobufCClosure closure,
                          void *data)
{
    struct kv_node *n = s->node;
    struct lease_write *lw = calloc(1, sizeof *lw);
    if (!lw) {
        reply_error(n, call, closure, data, RAFTKV__KV_ERROR__KV_INTERNAL, 0,
                    "out of memory");
        return;
    }
    lw->lc = s->lease_clock;
    lw->call = call;
    lw->closure = closure;
    lw->closure_data = data;
    lw->w.done = write_done;
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_LEASE;
    cmd.lease = (Raftkv__LeaseCommand *)lc;
    node_propose(n, &cmd, &lw->w); /* answered by write_done */
}

/* A write needs a session and, with auth on, a user. */
static int check_write(struct kv_services *s,
                       void *data,
                       const ProtobufCBinaryData *client_id,
                       uint64_t request_id,
                       char *why,
                       size_t why_size)
{
    int err = auth_check_kv(s, data, NULL, KV_AUTH_ANY, why, why_size);
    if (!err && (client_id->len != KV_CLIENT_ID_LEN || request_id == 0)) {
        err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        snprintf(why, why_size,
                 "a write needs a 16-byte client_id and a request_id > 0");
    }
    return err;
}

/* A random lease id that no lease has: not 0, below 2^63 (an int64 for
 * clients that have no unsigned type). */
static uint64_t new_id(struct kv_node *n)
{
    MDB_txn *txn = node_state_read(n, NULL);
    uint64_t id = 0;
    for (int tries = 0; tries < 16; tries++) {
        if (RAND_bytes((unsigned char *)&id, sizeof id) != 1) {
            id = 0;
            break;
        }
        id &= INT64_MAX;
        if (id && (!txn || kv_lease_get(&n->store, txn, id, NULL) != 0)) {
            break; /* a collision later fails the grant, clearly */
        }
        id = 0;
    }
    if (txn) {
        node_state_done(n, txn);
    }
    return id;
}

static void handle_grant(Raftkv__LeaseService_Service *svc,
                         const Raftkv__LeaseGrantArgs *a,
                         Raftkv__LeaseGrantReply_Closure closure,
                         void *data)
{
    struct kv_services *s = services_of_lease(svc);
    struct kv_node *n = s->node;
    ProtobufCClosure cl = (ProtobufCClosure)closure;
    char why[400];
    int err =
        check_write(s, data, &a->client_id, a->request_id, why, sizeof why);
    if (!err && (a->ttl <= 0 || a->ttl > KV_LEASE_MAX_TTL)) {
        err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        snprintf(why, sizeof why, "a lease's TTL is 1 to %d seconds, not %lld",
                 KV_LEASE_MAX_TTL, (long long)a->ttl);
    }
    if (!err) {
        err = quota_check_write(s, RAFTKV__COMMAND__OP_LEASE, 16, why,
                                sizeof why);
    }
    if (err) {
        reply_error(n, CALL_GRANT, cl, data, err, 0, why);
        return;
    }
    /* The leader picks the id and raises a short TTL: the entry carries
     * both, so applying it is the same on every node. */
    Raftkv__LeaseGrantArgs g = *a;
    if (g.ttl < n->cfg.lease_min_ttl_s) {
        g.ttl = n->cfg.lease_min_ttl_s;
    }
    if (g.id == 0 && (g.id = new_id(n)) == 0) {
        reply_error(n, CALL_GRANT, cl, data, RAFTKV__KV_ERROR__KV_INTERNAL, 0,
                    "no randomness for a lease id");
        return;
    }
    Raftkv__LeaseCommand lc = RAFTKV__LEASE_COMMAND__INIT;
    lc.op_case = RAFTKV__LEASE_COMMAND__OP_GRANT;
    lc.grant = &g;
    propose_lease(s, CALL_GRANT, &lc, cl, data);
}

static void handle_revoke(Raftkv__LeaseService_Service *svc,
                          const Raftkv__LeaseRevokeArgs *a,
                          Raftkv__LeaseRevokeReply_Closure closure,
                          void *data)
{
    struct kv_services *s = services_of_lease(svc);
    ProtobufCClosure cl = (ProtobufCClosure)closure;
    char why[400];
    int err =
        check_write(s, data, &a->client_id, a->request_id, why, sizeof why);
    if (err) {
        reply_error(s->node, CALL_REVOKE, cl, data, err, 0, why);
        return;
    }
    Raftkv__LeaseCommand lc = RAFTKV__LEASE_COMMAND__INIT;
    lc.op_case = RAFTKV__LEASE_COMMAND__OP_REVOKE;
    lc.revoke = (Raftkv__LeaseRevokeArgs *)a;
    propose_lease(s, CALL_REVOKE, &lc, cl, data);
}

/* ------------------------------------------------------- barrier calls */

/* What a read barrier of the lease clock is for. */
enum barrier_for {
    FOR_LOAD,   /* fill the table of a new leader */
    FOR_EXPIRE, /* propose the expiry of leases past their time */
    FOR_CALL,   /* answer a client's call (keep-alive, time to live, list) */
    FOR_STREAM, /* answer the renewals waiting on a keep-alive stream */
};

/* A read barrier (ReadIndex) of the lease clock. */
struct lease_barrier
{
    struct node_read_waiter w; /* the node's part */
    struct lease_clock *lc;    /* the clock */
    enum barrier_for what;     /* why */
    uint64_t term;             /* the leader's term it began in */
    enum lease_call call;      /* FOR_CALL: which */
    ProtobufCClosure closure;  /* FOR_CALL: completes the client's call */
    void *closure_data;        /* its argument */
    uint64_t id;               /* the lease asked about */
    bool keys;                 /* time to live: with its keys */
    struct ka_stream *ks;      /* FOR_STREAM: the stream */
};

static void barrier_ready(struct kv_node *n,
                          struct node_read_waiter *w,
                          int err,
                          uint64_t leader,
                          const char *msg);

static void begin_barrier(struct lease_barrier *b)
{
    b->w.ready = barrier_ready;
    node_read_begin(b->lc->s->node, &b->w); /* answered by barrier_ready */
}

/* Whether this node still leads in the barrier's term, the table being
 * for it. */
static bool still_leads(struct lease_clock *lc, const struct lease_barrier *b)
{
    struct kv_node *n = lc->s->node;
    return lc->term && lc->term == b->term &&
           raft_role(n->raft) == RAFT_LEADER && raft_term(n->raft) == b->term;
}

/* Propose the expiry of the leases past their time (at most a batch). */
static void expire_done(struct kv_node *n,
                        struct node_write_waiter *w,
                        int err,
                        const struct kv_outcome *o,
                        uint64_t leader,
                        const char *msg);

struct lease_expire
{
    struct node_write_waiter w; /* the node's part */
    struct lease_clock *lc;     /* the clock */
    size_t n;                   /* leases in the entry */
};

static void propose_expiry(struct lease_clock *lc)
{
    struct kv_node *n = lc->s->node;
    uint64_t now = node_now_ms();
    uint64_t *ids = malloc(KV_LEASE_MAX_IDS * sizeof *ids);
    struct lease_expire *le = calloc(1, sizeof *le);
    struct kv_lease_due *due = NULL;
    MDB_txn *txn = node_state_read(n, NULL);
    size_t n_due = 0, cap = 0, k = 0;
    uint64_t keys = 0;
    for (size_t i = 0; ids && le && txn && i < lc->cap; i++) {
        const struct lease_entry *e = &lc->slots[i];
        if (!e->id || e->expiry > now) {
            continue;
        }
        if (n_due == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct kv_lease_due *d = realloc(due, ncap * sizeof *d);
            if (!d) {
                break;
            }
            due = d;
            cap = ncap;
        }
        due[n_due++] = (struct kv_lease_due){e->id, e->expiry};
    }
    /* The most overdue first, about --max-lease-keys keys in all: the
     * rest go in the next write. Those the state no longer has ended
     * already: out of the table, not to be proposed again and again. */
    if (n_due) {
        k = kv_lease_expire_pick(&n->store, txn, due, n_due,
                                 n->cfg.max_lease_keys, ids, KV_LEASE_MAX_IDS,
                                 &keys);
    }
    for (size_t i = 0; i < n_due; i++) {
        if (due[i].expiry == 0) {
            table_remove(lc, due[i].id);
        }
    }
    free(due);
    if (txn) {
        node_state_done(n, txn);
    }
    if (!k) {
        free(ids);
        free(le);
        lc->expiring = false;
        return;
    }
    Raftkv__LeaseExpire ex = RAFTKV__LEASE_EXPIRE__INIT;
    ex.ids = ids;
    ex.n_ids = k;
    Raftkv__LeaseCommand lcmd = RAFTKV__LEASE_COMMAND__INIT;
    lcmd.op_case = RAFTKV__LEASE_COMMAND__OP_EXPIRE;
    lcmd.expire = &ex;
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_LEASE;
    cmd.lease = &lcmd;
    le->lc = lc;
    le->n = k;
    le->w.done = expire_done;
    rpc_logf(RPC_LOG_DEBUG, "node %llu: %zu leases expire (%llu keys)",
             (unsigned long long)n->cfg.id, k, (unsigned long long)keys);
    node_propose(n, &cmd, &le->w); /* expire_done, in any case */
    free(ids);
}

static void expire_done(struct kv_node *n,
                        struct node_write_waiter *w,
                        int err,
                        const struct kv_outcome *o,
                        uint64_t leader,
                        const char *msg)
{
    (void)o;
    (void)leader;
    struct lease_expire *le = (struct lease_expire *)w;
    le->lc->expiring = false;
    if (err && err != RAFTKV__KV_ERROR__KV_WRONG_LEADER) {
        rpc_logf(RPC_LOG_WARN, "node %llu: expiring %zu leases failed: %s",
                 (unsigned long long)n->cfg.id, le->n, msg ? msg : "");
    }
    /* What it ended comes back through the lease news. */
    free(le);
}

/* ----------------------------------------------- keep-alive, ttl, list */

#define NO_SUCH_LEASE "no such lease (expired, revoked or never granted)"

/* Renew lease @id to its full TTL from now (after a barrier proved this
 * node leads). Returns a KvError: OK (*ttl set), LEASE_NOT_FOUND or
 * INTERNAL (n->store.errmsg says why). */
static int renew_lease(struct lease_clock *lc,
                       MDB_txn *txn,
                       uint64_t id,
                       int64_t *ttl)
{
    struct kv_node *n = lc->s->node;
    int rv = kv_lease_get(&n->store, txn, id, ttl);
    if (rv == MDB_NOTFOUND) {
        table_remove(lc, id);
        return RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND;
    }
    if (rv) {
        return RAFTKV__KV_ERROR__KV_INTERNAL;
    }
    table_put(lc, id, *ttl, node_now_ms() + (uint64_t)*ttl * 1000);
    return RAFTKV__KV_ERROR__KV_OK;
}

static void serve_keepalive(struct lease_clock *lc,
                            struct lease_barrier *b,
                            MDB_txn *txn)
{
    struct kv_node *n = lc->s->node;
    int64_t ttl;
    int err = renew_lease(lc, txn, b->id, &ttl);
    if (err) {
        reply_error(n, CALL_KEEPALIVE, b->closure, b->closure_data, err, 0,
                    err == RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND
                        ? NO_SUCH_LEASE
                        : n->store.errmsg);
        return;
    }
    struct kv_revs revs = {0};
    kv_mvcc_revs(&n->store, txn, &revs);
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, 0, &hint);
    Raftkv__LeaseKeepAliveReply r = RAFTKV__LEASE_KEEP_ALIVE_REPLY__INIT;
    r.leader = &hint;
    r.message = "";
    r.revision = revs.revision;
    r.id = b->id;
    r.ttl = ttl;
    b->closure(&r.base, b->closure_data);
}

static void serve_ttl(struct lease_clock *lc,
                      struct lease_barrier *b,
                      MDB_txn *txn)
{
    struct kv_node *n = lc->s->node;
    int64_t ttl;
    int rv = kv_lease_get(&n->store, txn, b->id, &ttl);
    if (rv) {
        reply_error(n, CALL_TTL, b->closure, b->closure_data,
                    rv == MDB_NOTFOUND ? RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND
                                       : RAFTKV__KV_ERROR__KV_INTERNAL,
                    0, rv == MDB_NOTFOUND ? NO_SUCH_LEASE : n->store.errmsg);
        return;
    }
    struct kv_arena mem = {0};
    Raftkv__LeaseTimeToLiveReply r = RAFTKV__LEASE_TIME_TO_LIVE_REPLY__INIT;
    char why[400] = "";
    if (b->keys) {
        rv = kv_lease_keys(&n->store, txn, b->id, &mem, &r.keys, &r.n_keys);
        if (rv) {
            kv_arena_free(&mem);
            reply_error(n, CALL_TTL, b->closure, b->closure_data,
                        RAFTKV__KV_ERROR__KV_INTERNAL, 0, n->store.errmsg);
            return;
        }
        /* Its keys are shown to root, or to a user who may read them all. */
        int err = auth_check_root(lc->s, b->closure_data, "list a lease's keys",
                                  why, sizeof why);
        if (err == RAFTKV__KV_ERROR__KV_PERMISSION_DENIED) {
            err = 0;
            for (size_t i = 0; i < r.n_keys && !err; i++) {
                err = auth_check_kv(lc->s, b->closure_data, &r.keys[i],
                                    KV_AUTH_READ, why, sizeof why);
            }
        }
        if (err) {
            kv_arena_free(&mem);
            reply_error(n, CALL_TTL, b->closure, b->closure_data, err, 0, why);
            return;
        }
    }
    struct kv_revs revs = {0};
    kv_mvcc_revs(&n->store, txn, &revs);
    struct lease_entry *e = table_find(lc, b->id);
    if (!e) {
        /* Granted since the last sweep: its time starts now. */
        table_put(lc, b->id, ttl, node_now_ms() + (uint64_t)ttl * 1000);
        e = table_find(lc, b->id);
    }
    uint64_t now = node_now_ms();
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, 0, &hint);
    r.leader = &hint;
    r.message = "";
    r.revision = revs.revision;
    r.id = b->id;
    r.granted_ttl = ttl;
    /* Whole seconds left, rounded down (0 once it is due). */
    r.ttl = e && e->expiry > now ? (int64_t)((e->expiry - now) / 1000) : 0;
    b->closure(&r.base, b->closure_data);
    kv_arena_free(&mem);
}

struct list_ctx
{
    uint64_t *ids;
    size_t n, cap;
};

static int list_one(uint64_t id, int64_t ttl, void *arg)
{
    (void)ttl;
    struct list_ctx *x = arg;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 64;
        uint64_t *ids = realloc(x->ids, cap * sizeof *ids);
        if (!ids) {
            return KV_STORE_ENOMEM;
        }
        x->ids = ids;
        x->cap = cap;
    }
    x->ids[x->n++] = id;
    return 0;
}

static void serve_list(struct lease_clock *lc,
                       struct lease_barrier *b,
                       MDB_txn *txn)
{
    struct kv_node *n = lc->s->node;
    struct list_ctx x = {0};
    int rv = kv_lease_each(&n->store, txn, list_one, &x);
    if (rv) {
        free(x.ids);
        reply_error(n, CALL_LIST, b->closure, b->closure_data,
                    RAFTKV__KV_ERROR__KV_INTERNAL, 0,
                    rv == KV_STORE_ENOMEM ? "out of memory" : n->store.errmsg);
        return;
    }
    struct kv_revs revs = {0};
    kv_mvcc_revs(&n->store, txn, &revs);
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, 0, &hint);
    Raftkv__LeaseListReply r = RAFTKV__LEASE_LIST_REPLY__INIT;
    r.leader = &hint;
    r.message = "";
    r.revision = revs.revision;
    r.ids = x.ids;
    r.n_ids = x.n;
    b->closure(&r.base, b->closure_data);
    free(x.ids);
}

static void stream_barrier_done(struct lease_clock *lc,
                                struct lease_barrier *b,
                                bool leads,
                                int err,
                                uint64_t leader,
                                const char *msg);

static void barrier_ready(struct kv_node *n,
                          struct node_read_waiter *w,
                          int err,
                          uint64_t leader,
                          const char *msg)
{
    struct lease_barrier *b = (struct lease_barrier *)w;
    struct lease_clock *lc = b->lc;
    bool leads = !err && still_leads(lc, b);
    if (leads && !lc->loaded) {
        /* The barrier proved every entry of the terms before is applied. */
        load_all(lc, false);
    }
    if (b->what == FOR_LOAD) {
        if (lc->term == b->term) {
            lc->loading = false;
        }
    } else if (b->what == FOR_EXPIRE) {
        if (leads && lc->loaded) {
            lc->expire_proven = true; /* proposed by the next sweep */
        } else if (lc->term == b->term) {
            lc->expiring = false;
        }
    } else if (b->what == FOR_STREAM) {
        stream_barrier_done(lc, b, leads, err, leader, msg);
    } else if (!leads) {
        uint64_t hint = leader ? leader : raft_leader(n->raft);
        if (!err) {
            err = hint && hint != n->cfg.id ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                                            : RAFTKV__KV_ERROR__KV_UNAVAILABLE;
            msg = "leadership changed";
        }
        reply_error(n, b->call, b->closure, b->closure_data, err,
                    hint == n->cfg.id ? 0 : hint, msg);
    } else {
        MDB_txn *txn = node_state_read(n, NULL);
        if (!txn) {
            reply_error(n, b->call, b->closure, b->closure_data,
                        RAFTKV__KV_ERROR__KV_INTERNAL, 0,
                        "cannot read the applied state");
        } else {
            take_news(lc);
            if (b->call == CALL_KEEPALIVE) {
                serve_keepalive(lc, b, txn);
            } else if (b->call == CALL_TTL) {
                serve_ttl(lc, b, txn);
            } else {
                serve_list(lc, b, txn);
            }
            node_state_done(n, txn);
        }
    }
    free(b);
}

/* Answer a call once a barrier proves this node leads. */
static void begin_call(struct kv_services *s,
                       enum lease_call call,
                       uint64_t id,
                       bool keys,
                       ProtobufCClosure closure,
                       void *data)
{
    struct kv_node *n = s->node;
    struct lease_clock *lc = s->lease_clock;
    char why[400];
    int err = auth_check_kv(s, data, NULL, KV_AUTH_ANY, why, sizeof why);
    if (err) {
        reply_error(n, call, closure, data, err, 0, why);
        return;
    }
    if (call != CALL_LIST && id == 0) {
        reply_error(n, call, closure, data, RAFTKV__KV_ERROR__KV_BAD_REQUEST, 0,
                    "which lease? (id 0)");
        return;
    }
    if (!lc->term) {
        /* Served by the leader only: it keeps the time of every lease. */
        uint64_t leader = raft_leader(n->raft);
        bool other = leader && leader != n->cfg.id;
        reply_error(n, call, closure, data,
                    other ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                          : RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                    other ? leader : 0, "not the leader");
        return;
    }
    struct lease_barrier *b = calloc(1, sizeof *b);
    if (!b) {
        reply_error(n, call, closure, data, RAFTKV__KV_ERROR__KV_INTERNAL, 0,
                    "out of memory");
        return;
    }
    b->lc = lc;
    b->what = FOR_CALL;
    b->term = lc->term;
    b->call = call;
    b->closure = closure;
    b->closure_data = data;
    b->id = id;
    b->keys = keys;
    begin_barrier(b);
}

static void handle_keepalive(Raftkv__LeaseService_Service *svc,
                             const Raftkv__LeaseKeepAliveArgs *a,
                             Raftkv__LeaseKeepAliveReply_Closure closure,
                             void *data)
{
    begin_call(services_of_lease(svc), CALL_KEEPALIVE, a->id, false,
               (ProtobufCClosure)closure, data);
}

static void handle_ttl(Raftkv__LeaseService_Service *svc,
                       const Raftkv__LeaseTimeToLiveArgs *a,
                       Raftkv__LeaseTimeToLiveReply_Closure closure,
                       void *data)
{
    begin_call(services_of_lease(svc), CALL_TTL, a->id, a->keys,
               (ProtobufCClosure)closure, data);
}

static void handle_list(Raftkv__LeaseService_Service *svc,
                        const Raftkv__LeaseListArgs *a,
                        Raftkv__LeaseListReply_Closure closure,
                        void *data)
{
    (void)a;
    begin_call(services_of_lease(svc), CALL_LIST, 0, false,
               (ProtobufCClosure)closure, data);
}

/* ---------------------------------------------------- keep-alive streams */

/* Renewals one stream may have unanswered (waiting for a barrier, or for
 * room to send their answer): a client renews a few leases every third of
 * their TTL, so more means it sends without reading. */
#define KA_STREAM_MAX_QUEUE 256u

/* Where a renewal on a stream stands. */
enum ka_state {
    KA_QUEUED,  /* waits for the next barrier */
    KA_COVERED, /* the barrier in flight began after it came */
    KA_DONE,    /* answered: err, ttl (sent once the ones before it are) */
};

/* One renewal on a keep-alive stream. */
struct ka_renewal
{
    uint64_t id;         /* the lease */
    enum ka_state state; /* see enum ka_state */
    int err;             /* KA_DONE: a KvError */
    int64_t ttl;         /* KA_DONE, OK: the TTL it has now */
    uint64_t revision;   /* KA_DONE: the store's revision */
    const char *message; /* KA_DONE: why not (static text), or "" */
};

/* A LeaseKeepAliveStream call. */
struct ka_stream
{
    struct lease_clock *lc;        /* the clock */
    void *call;                    /* the rpc call (closure_data) */
    ProtobufCClosure closure;      /* ends it */
    struct ka_stream *prev, *next; /* the clock's open streams */
    struct ka_renewal *q;          /* renewals in the order they came: a
                                      ring of cap entries from head */
    uint32_t cap, head, n;         /* its size, first entry, entries */
    bool barrier;                  /* a barrier of its is in flight (it
                                      holds the stream) */
    bool ended;                    /* its closure ran */
};

static struct ka_renewal *ka_at(struct ka_stream *ks, uint32_t i)
{
    return &ks->q[(ks->head + i) % ks->cap];
}

static void ka_free(struct ka_stream *ks)
{
    free(ks->q);
    free(ks);
}

/* Send the answers at the front of the queue, in order, while there is
 * room (RPC_STREAM_WRITABLE sends the rest). */
static void ka_flush(struct ka_stream *ks)
{
    struct kv_node *n = ks->lc->s->node;
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, 0, &hint);
    while (ks->n && ka_at(ks, 0)->state == KA_DONE) {
        const struct ka_renewal *r = ka_at(ks, 0);
        Raftkv__LeaseKeepAliveReply m = RAFTKV__LEASE_KEEP_ALIVE_REPLY__INIT;
        m.err = r->err;
        m.leader = &hint;
        m.message = (char *)r->message;
        m.revision = r->revision;
        m.id = r->id;
        m.ttl = r->ttl;
        if (rpc_stream_send(ks->call, &m.base) != 0) {
            return; /* no room (WRITABLE comes), or ending (CANCELLED) */
        }
        if (r->err == RAFTKV__KV_ERROR__KV_OK) {
            ks->lc->stream_renewals++;
        }
        ks->head = (ks->head + 1) % ks->cap;
        ks->n--;
    }
}

/* End a stream: the answers it has go first (as room allows), then the
 * last frame with @err (OK: the caller cancelled; the frame goes
 * nowhere). Frees it unless a barrier still holds it. */
static void ka_end(struct ka_stream *ks,
                   int err,
                   uint64_t leader,
                   const char *msg)
{
    struct lease_clock *lc = ks->lc;
    struct kv_node *n = lc->s->node;
    if (ks->ended) {
        return;
    }
    ka_flush(ks);
    ks->ended = true;
    if (ks->prev) {
        ks->prev->next = ks->next;
    } else {
        lc->streams = ks->next;
    }
    if (ks->next) {
        ks->next->prev = ks->prev;
    }
    lc->n_streams--;
    Raftkv__LeaderHint hint = RAFTKV__LEADER_HINT__INIT;
    set_hint(n, leader, &hint);
    Raftkv__LeaseKeepAliveReply m = RAFTKV__LEASE_KEEP_ALIVE_REPLY__INIT;
    m.err = err;
    m.leader = &hint;
    m.message = (char *)(msg ? msg : "");
    m.id = ks->n ? ka_at(ks, 0)->id : 0; /* the first renewal unanswered */
    ks->closure(&m.base, ks->call);
    ks->call = NULL;
    if (!ks->barrier) {
        ka_free(ks);
    }
}

/* End a stream because this node does not lead (any more): the client
 * goes to the leader it hints at, or looks for one. */
static void ka_end_not_leader(struct ka_stream *ks,
                              uint64_t leader,
                              const char *msg)
{
    struct kv_node *n = ks->lc->s->node;
    if (!leader) {
        leader = raft_leader(n->raft);
    }
    bool other = leader && leader != n->cfg.id;
    ka_end(ks,
           other ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                 : RAFTKV__KV_ERROR__KV_UNAVAILABLE,
           other ? leader : 0, msg);
}

/* Begin a barrier for every renewal that waits for one. The last thing
 * its callers do: a barrier that fails at once ends (and may free) the
 * stream. */
static void ka_begin_barrier(struct ka_stream *ks)
{
    bool waiting = false;
    for (uint32_t i = 0; i < ks->n; i++) {
        struct ka_renewal *r = ka_at(ks, i);
        if (r->state == KA_QUEUED) {
            r->state = KA_COVERED;
            waiting = true;
        }
    }
    if (!waiting) {
        return;
    }
    struct lease_barrier *b = calloc(1, sizeof *b);
    if (!b) {
        ka_end(ks, RAFTKV__KV_ERROR__KV_INTERNAL, 0, "out of memory");
        return;
    }
    b->lc = ks->lc;
    b->what = FOR_STREAM;
    b->term = ks->lc->term;
    b->ks = ks;
    ks->barrier = true;
    begin_barrier(b); /* stream_barrier_done, maybe at once */
}

/* The stream's barrier is done: answer the renewals it covered. */
static void stream_barrier_done(struct lease_clock *lc,
                                struct lease_barrier *b,
                                bool leads,
                                int err,
                                uint64_t leader,
                                const char *msg)
{
    struct ka_stream *ks = b->ks;
    struct kv_node *n = lc->s->node;
    ks->barrier = false;
    if (ks->ended) {
        ka_free(ks);
        return;
    }
    if (!leads) {
        if (err && err != RAFTKV__KV_ERROR__KV_WRONG_LEADER &&
            err != RAFTKV__KV_ERROR__KV_UNAVAILABLE) {
            ka_end(ks, err, 0, msg); /* TIMEOUT, SHUTTING_DOWN */
        } else {
            ka_end_not_leader(ks, leader, msg ? msg : "leadership changed");
        }
        return;
    }
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        ka_end(ks, RAFTKV__KV_ERROR__KV_INTERNAL, 0,
               "cannot read the applied state");
        return;
    }
    take_news(lc);
    struct kv_revs revs = {0};
    kv_mvcc_revs(&n->store, txn, &revs);
    for (uint32_t i = 0; i < ks->n; i++) {
        struct ka_renewal *r = ka_at(ks, i);
        if (r->state != KA_COVERED) {
            continue;
        }
        r->state = KA_DONE;
        r->revision = revs.revision;
        r->ttl = 0;
        r->err = renew_lease(lc, txn, r->id, &r->ttl);
        r->message = r->err == RAFTKV__KV_ERROR__KV_OK ? ""
                     : r->err == RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND
                         ? NO_SUCH_LEASE
                         : "cannot read the lease (the node's log says why)";
        if (r->err == RAFTKV__KV_ERROR__KV_INTERNAL) {
            rpc_logf(RPC_LOG_WARN, "node %llu: renewing lease %016llx: %s",
                     (unsigned long long)n->cfg.id, (unsigned long long)r->id,
                     n->store.errmsg);
            r->ttl = 0;
        }
    }
    node_state_done(n, txn);
    ka_flush(ks);
    ka_begin_barrier(ks); /* for the renewals that came meanwhile */
}

/* A renewal on a stream: checked as a unary LeaseKeepAlive is (auth, the
 * lease id, this node leads), queued, answered after a barrier. */
static void ka_take(struct ka_stream *ks, uint64_t id)
{
    struct lease_clock *lc = ks->lc;
    struct kv_services *s = lc->s;
    struct kv_node *n = s->node;
    char why[400];
    if (n->stopping) {
        ka_end(ks, RAFTKV__KV_ERROR__KV_SHUTTING_DOWN, 0,
               "the node is stopping");
        return;
    }
    int err = auth_check_kv(s, ks->call, NULL, KV_AUTH_ANY, why, sizeof why);
    if (err) {
        ka_end(ks, err, 0, why); /* (a new token needs a new stream) */
        return;
    }
    if (!lc->term) {
        ka_end_not_leader(ks, 0, "not the leader");
        return;
    }
    if (ks->n == ks->cap) {
        uint32_t cap = ks->cap ? ks->cap * 2 : 4;
        struct ka_renewal *q =
            ks->cap < KA_STREAM_MAX_QUEUE ? malloc(cap * sizeof *q) : NULL;
        if (!q) {
            ka_end(ks, RAFTKV__KV_ERROR__KV_UNAVAILABLE, 0,
                   ks->cap < KA_STREAM_MAX_QUEUE
                       ? "out of memory"
                       : "too many renewals unanswered on this stream: "
                         "read the answers");
            return;
        }
        for (uint32_t i = 0; i < ks->n; i++) {
            q[i] = *ka_at(ks, i);
        }
        free(ks->q);
        ks->q = q;
        ks->cap = cap;
        ks->head = 0;
    }
    struct ka_renewal *r = &ks->q[(ks->head + ks->n++) % ks->cap];
    memset(r, 0, sizeof *r);
    r->id = id;
    r->state = KA_QUEUED;
    if (id == 0) {
        r->state = KA_DONE;
        r->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        r->message = "which lease? (id 0)";
        ka_flush(ks);
        return;
    }
    if (!ks->barrier) {
        ka_begin_barrier(ks);
    }
}

static void on_ka_message(void *call, const ProtobufCMessage *msg, void *arg)
{
    (void)call;
    ka_take(arg, ((const Raftkv__LeaseKeepAliveArgs *)msg)->id);
}

static void on_ka_event(void *call, int event, void *arg)
{
    (void)call;
    struct ka_stream *ks = arg;
    if (event == RPC_STREAM_CANCELLED) {
        ka_end(ks, RAFTKV__KV_ERROR__KV_OK, 0, "cancelled");
    } else {
        ka_flush(ks);
    }
}

/* End every stream (the node stopped leading, or stops). */
static void ka_end_all(struct lease_clock *lc, int err, const char *msg)
{
    while (lc->streams) {
        if (err) {
            ka_end(lc->streams, err, 0, msg);
        } else {
            ka_end_not_leader(lc->streams, 0, msg);
        }
    }
}

static void handle_keepalive_stream(Raftkv__LeaseService_Service *svc,
                                    const Raftkv__LeaseKeepAliveArgs *a,
                                    Raftkv__LeaseKeepAliveReply_Closure closure,
                                    void *data)
{
    struct kv_services *s = services_of_lease(svc);
    struct lease_clock *lc = s->lease_clock;
    struct kv_node *n = s->node;
    ProtobufCClosure cl = (ProtobufCClosure)closure;
    char why[400];
    if (n->stopping) {
        reply_error(n, CALL_KEEPALIVE, cl, data,
                    RAFTKV__KV_ERROR__KV_SHUTTING_DOWN, 0,
                    "the node is stopping");
        return;
    }
    int err = auth_check_kv(s, data, NULL, KV_AUTH_ANY, why, sizeof why);
    if (err) {
        reply_error(n, CALL_KEEPALIVE, cl, data, err, 0, why);
        return;
    }
    if (!lc->term) {
        /* Served by the leader only: the client goes there. */
        uint64_t leader = raft_leader(n->raft);
        bool other = leader && leader != n->cfg.id;
        reply_error(n, CALL_KEEPALIVE, cl, data,
                    other ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                          : RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                    other ? leader : 0, "not the leader");
        return;
    }
    struct ka_stream *ks = calloc(1, sizeof *ks);
    int orv = ks ? rpc_stream_open(data, on_ka_event, ks) : RPC_E_NOMEM;
    if (orv != 0) {
        free(ks);
        reply_error(n, CALL_KEEPALIVE, cl, data,
                    orv == RPC_E_OVERLOADED ? RAFTKV__KV_ERROR__KV_UNAVAILABLE
                                            : RAFTKV__KV_ERROR__KV_INTERNAL,
                    0,
                    orv == RPC_E_OVERLOADED
                        ? "too many streams open on this connection: close "
                          "some, or use another connection"
                        : "cannot open the stream");
        return;
    }
    rpc_stream_on_message(data, on_ka_message);
    ks->lc = lc;
    ks->call = data;
    ks->closure = cl;
    ks->next = lc->streams;
    if (lc->streams) {
        lc->streams->prev = ks;
    }
    lc->streams = ks;
    lc->n_streams++;
    if (a->id) {
        ka_take(ks, a->id); /* the request is the first renewal */
    }
}

void lease_stream_stats(const struct kv_services *s,
                        uint64_t *streams,
                        uint64_t *renewals)
{
    *streams = s->lease_clock ? s->lease_clock->n_streams : 0;
    *renewals = s->lease_clock ? s->lease_clock->stream_renewals : 0;
}

/* ------------------------------------------------------- subscriptions */

/* Start a barrier of the clock's own (to fill the table, or to expire). */
static void begin_own_barrier(struct lease_clock *lc, enum barrier_for what)
{
    struct lease_barrier *b = calloc(1, sizeof *b);
    if (!b) {
        return; /* tried again on the next sweep */
    }
    b->lc = lc;
    b->what = what;
    b->term = lc->term;
    if (what == FOR_LOAD) {
        lc->loading = true;
    } else {
        lc->expiring = true;
    }
    begin_barrier(b);
}

static void on_role(struct kv_node *n, enum node_event ev, void *arg)
{
    (void)ev;
    struct lease_clock *lc = arg;
    bool leads = raft_role(n->raft) == RAFT_LEADER;
    uint64_t term = raft_term(n->raft);
    if (leads && lc->term == term) {
        return;
    }
    if (!leads) {
        /* Renewals go to the leader now: its clients look for it. */
        ka_end_all(lc, 0, "this node no longer leads");
    }
    /* A new term, or no longer leading: the old table is void. */
    table_clear(lc);
    lc->loaded = false;
    lc->loading = false;
    lc->expiring = false;
    lc->expire_proven = false;
    lc->term = leads ? term : 0; /* the next sweep begins filling it */
}

static void on_sweep(struct kv_node *n, enum node_event ev, void *arg)
{
    struct lease_clock *lc = arg;
    if (ev == NODE_EV_STOPPING) {
        ka_end_all(lc, RAFTKV__KV_ERROR__KV_SHUTTING_DOWN,
                   "the node is stopping");
        return;
    }
    if (!lc->term || raft_role(n->raft) != RAFT_LEADER) {
        struct kv_lease_news *ln = &n->store.lease_news;
        ln->n = 0; /* a new leader reads every lease */
        ln->all = false;
        return;
    }
    if (n->frozen) {
        return; /* it cannot propose; the news wait for it */
    }
    if (!lc->loaded) {
        if (!lc->loading) {
            begin_own_barrier(lc, FOR_LOAD);
        }
        return;
    }
    take_news(lc);
    if (lc->expire_proven) {
        /* Leadership was proven since the sweep that found them due. */
        lc->expire_proven = false;
        propose_expiry(lc); /* clears expiring when it is done */
        return;
    }
    if (lc->expiring) {
        return;
    }
    /* The whole table only once the earliest expiry is due: a leader
     * holding many leases sweeps 20 times a second. */
    uint64_t now = node_now_ms();
    if (now < lc->next_due) {
        return;
    }
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < lc->cap; i++) {
        if (lc->slots[i].id && lc->slots[i].expiry < next) {
            next = lc->slots[i].expiry;
        }
    }
    lc->next_due = next;
    if (next <= now) {
        begin_own_barrier(lc, FOR_EXPIRE);
    }
}

/* ------------------------------------------------------------- service */

size_t lease_service_count(struct kv_services *s)
{
    struct kv_node *n = s->node;
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        return 0;
    }
    MDB_stat st;
    size_t count = mdb_stat(txn, n->store.leases, &st) == 0 ? st.ms_entries : 0;
    node_state_done(n, txn);
    return count;
}

int lease_service_init(struct kv_services *s)
{
    struct kv_node *n = s->node;
    Raftkv__LeaseService_Service svc = {
        RAFTKV__LEASE_SERVICE__BASE_INIT,
        handle_grant,
        handle_revoke,
        handle_keepalive,
        handle_ttl,
        handle_list,
        handle_keepalive_stream,
    };
    s->lease_svc = svc;
    struct lease_clock *lc = calloc(1, sizeof *lc);
    if (!lc) {
        fprintf(stderr, "kvserver: out of memory\n");
        return -1;
    }
    lc->s = s;
    /* Election timeouts are random in [election, 2 * election). */
    lc->election_extension = 2ull * n->cfg.election_ms;
    s->lease_clock = lc;
    if (node_subscribe(n, NODE_EV_ROLE, on_role, lc) != 0 ||
        node_subscribe(n, NODE_EV_SWEEP | NODE_EV_STOPPING, on_sweep, lc) !=
            0) {
        return -1;
    }
    return 0;
}

void lease_service_free(struct kv_services *s)
{
    if (s && s->lease_clock) {
        /* (Streams ended at NODE_EV_STOPPING; a stream a barrier held was
         * freed when the node failed its waiters.) */
        table_clear(s->lease_clock);
        free(s->lease_clock);
        s->lease_clock = NULL;
    }
}
