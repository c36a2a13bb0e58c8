/* kvbench: closed-loop load on a raftkv cluster, with the same knobs and
 * the same result line as the etcd reference (shared/anchors/etcdload).
 *
 *   kvbench --cluster HOST:PORT,...
 *           [--op put|get|sget|mix|range|txn|rtxn|watch|lease|keepalive]
 *           [--conns M] [--clients N] [--duration 10s | --total N]
 *           [--key-size 16] [--val-size 256] [--key-space 10000]
 *           [--range-keys 100] [--watchers N] [--stale]
 *           [--txn-compare version|mod]
 *           [--target leader|all] [--prefill] [--json]
 *           [--leases N] [--stream] [--async]
 *
 * N clients each send their next call when the reply to the last arrives,
 * spread over M multiplexed connections, all on one event loop. Keys are
 * uniform over the key space; every write carries the client's session.
 * Each op is one row of ops[] below: how it is issued, whether it writes
 * (and so needs sessions) and whether it fills the key space first.
 *
 * With --async (put, get, sget, mix) the same closed loop goes through
 * libclerk's async API instead of raw stubs: one handle, --clients
 * operations in flight over its one connection per server, libclerk's
 * leader discovery, retries and sessions. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include <clerk/clerk.h>
#include <proto/auth.pb-c.h>
#include <proto/kv.pb-c.h>
#include <rpc/rpc.h>

#include "hist.h"
#include "raftkv_version.h"

#define MAX_NODES 9

struct client;

/* One workload: a row of ops[]. */
struct op_row
{
    const char *name;                /* --op NAME */
    const char *stale_name;          /* its name with --stale (NULL: none) */
    void (*issue)(struct client *c); /* send the client's next call */
    bool writes;                     /* needs a session per client */
    bool fills;                      /* writes every key before timing */
    bool stale;                      /* reads serializable, as --stale */
};

struct node
{
    char host[256];          /* address */
    uint16_t port;           /* port */
    struct rpc_channel **ch; /* conns channels, made on first use */
};

struct client
{
    int id;                /* client number */
    uint8_t client_id[16]; /* session id */
    uint64_t request_id;   /* last request id */
    unsigned seed;         /* key choice */
    uint64_t started;      /* ns of the call in flight */
    int k1, k2;            /* key numbers of the call in flight */
    char key[64];          /* key of the call in flight (k1) */
    char key2[64];         /* second key: range end, or a txn's other put */
    struct rpc_stream *ka; /* keepalive --stream: its keep-alive stream */
    bool ka_waiting;       /* and a renewal on it waits for its answer */
    bool async_put;        /* --async: the call in flight is a put */
};

static struct
{
    struct event_base *base;
    struct node nodes[MAX_NODES];
    int n_nodes;
    int leader; /* node that takes writes and reads */
    const struct op_row *op;
    int conns, clients, key_size, val_size, key_space, range_keys;
    int64_t lease_ttl; /* --lease-ttl: seconds of the leases --op lease
                          grants */
    bool target_all, json, prefill, stale;
    bool txn_mod;              /* --txn-compare mod (else version) */
    bool use_async;            /* --async: through libclerk's async API */
    bool stream;               /* keepalive --stream: renew on keep-alive
                                  streams (one per client), not unary calls */
    uint64_t *mod;             /* txn_mod: last mod_revision seen per key */
    struct rpc_tls *tls;       /* --cacert: TLS to every node */
    struct clerk_async *async; /* --async: the libclerk handle */
    char token[800];           /* --user: the auth token ("" without) */
    bool prefill_running;      /* writing every key once, in order */
    double duration;
    uint64_t total;  /* stop after this many ops (0: duration) */
    uint64_t end_ns; /* stop issuing after this */
    uint64_t issued, done, errors, wrong_leader;
    uint64_t short_ranges;  /* range replies without range_keys keys */
    uint64_t txn_succeeded; /* transactions whose compare held */
    char last_error[256];   /* the last failed call's reason */
    int running;
    uint8_t *value;
    struct hist hist;
} B;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static ProtobufCService *kv_for(int node, int conn)
{
    struct node *n = &B.nodes[node];
    if (!n->ch[conn]) {
        struct rpc_channel_options o = {.tls = B.tls};
        n->ch[conn] = rpc_channel_new(B.base, n->host, n->port, &o);
        if (!n->ch[conn] ||
            rpc_channel_set_auth_token(n->ch[conn], B.token) != 0) {
            fprintf(stderr, "kvbench: out of memory\n");
            exit(1);
        }
    }
    return rpc_channel_service(n->ch[conn], &raftkv__kv_service__descriptor);
}

/* LeaseService on the same channel as kv_for's. */
static ProtobufCService *lease_for(int node, int conn)
{
    kv_for(node, conn);
    return rpc_channel_service(B.nodes[node].ch[conn],
                               &raftkv__lease_service__descriptor);
}

static void issue(struct client *c);

/* The leader hint of a reply (0: none), after noting why it failed, if it
 * did: the server's message, or the RPC layer's when there is no reply
 * (err -1). */
static uint64_t hint_of(int err,
                        const char *message,
                        const Raftkv__LeaderHint *l)
{
    if (err < 0) {
        snprintf(B.last_error, sizeof B.last_error, "%s", rpc_last_error());
        return 0;
    }
    if (err != RAFTKV__KV_ERROR__KV_OK) {
        snprintf(B.last_error, sizeof B.last_error, "error %d: %s", err,
                 message ? message : "");
    }
    return err == RAFTKV__KV_ERROR__KV_WRONG_LEADER && l ? l->id : 0;
}

/* hint_of for any reply type with err, message and leader (r may be NULL). */
#define REPLY_HINT(r)                                        \
    ((r) ? hint_of((int)(r)->err, (r)->message, (r)->leader) \
         : hint_of(-1, NULL, NULL))

static void finish(struct client *c, bool ok, uint64_t leader_hint)
{
    uint64_t t = now_ns();
    if (ok) {
        hist_add(&B.hist, t - c->started);
        B.done++;
    } else {
        B.errors++;
        if (leader_hint) {
            B.wrong_leader++;
            for (int i = 0; i < B.n_nodes; i++) {
                /* hints carry node ids; the cluster list is in id order */
                if ((uint64_t)(i + 1) == leader_hint) {
                    B.leader = i;
                }
            }
        }
    }
    bool more = B.total ? B.issued < B.total : t < B.end_ns;
    if (more) {
        issue(c);
    } else if (--B.running == 0) {
        event_base_loopbreak(B.base);
    }
}

static void on_put(const Raftkv__PutAppendReply *r, void *data)
{
    finish(data, r && r->err == RAFTKV__KV_ERROR__KV_OK, REPLY_HINT(r));
}

static void on_get(const Raftkv__GetReply *r, void *data)
{
    finish(data,
           r && (r->err == RAFTKV__KV_ERROR__KV_OK ||
                 r->err == RAFTKV__KV_ERROR__KV_NOT_FOUND),
           REPLY_HINT(r));
}

/* A window that does not hold range_keys keys counts as an error: the key
 * space was filled first, so every window is full. */
static void on_range(const Raftkv__RangeReply *r, void *data)
{
    bool ok = r && r->err == RAFTKV__KV_ERROR__KV_OK;
    if (ok && r->n_kvs != (size_t)B.range_keys) {
        B.short_ranges++;
        snprintf(B.last_error, sizeof B.last_error,
                 "a range of %d keys answered %zu", B.range_keys, r->n_kvs);
        ok = false;
    }
    finish(data, ok, REPLY_HINT(r));
}

/* A transaction whose compare failed is a completed op; succeeded counts
 * those whose compare held. With --txn-compare mod, the reply teaches the
 * keys' mod revisions: the puts' revision, or the first key's as the
 * failure branch read it. */
static void on_txn(const Raftkv__TxnReply *r, void *data)
{
    struct client *c = data;
    bool ok = r && r->err == RAFTKV__KV_ERROR__KV_OK;
    if (ok && r->succeeded) {
        B.txn_succeeded++;
    }
    if (ok && B.mod) {
        if (r->succeeded) {
            B.mod[c->k1] = B.mod[c->k2] = r->revision;
        } else if (r->n_responses == 1 &&
                   r->responses[0]->response_case ==
                       RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_RANGE) {
            const Raftkv__RangeReply *rr = r->responses[0]->response_range;
            B.mod[c->k1] = rr->n_kvs ? rr->kvs[0]->mod_revision : 0;
        }
    }
    finish(c, ok, REPLY_HINT(r));
}

static void key_of(char *out, size_t size, int k)
{
    char tmp[64];
    int len = snprintf(tmp, sizeof tmp, "%0*d", B.key_size, k);
    snprintf(out, size, "%s", tmp + (len - B.key_size));
}

static int random_key(struct client *c, int space)
{
    return (int)((unsigned)rand_r(&c->seed) % (unsigned)space);
}

/* The leader's channel for this client, or with --target all and a stale
 * read, one node per client in turn. */
static ProtobufCService *service_for(struct client *c, bool stale)
{
    int node = B.leader;
    if (B.target_all && stale) {
        node = c->id % B.n_nodes;
    }
    return kv_for(node, c->id % B.conns);
}

static void issue_put(struct client *c)
{
    c->k1 =
        B.prefill_running ? (int)(B.issued - 1) : random_key(c, B.key_space);
    key_of(c->key, sizeof c->key, c->k1);
    Raftkv__PutAppendArgs a = RAFTKV__PUT_APPEND_ARGS__INIT;
    a.key.data = (uint8_t *)c->key;
    a.key.len = (size_t)B.key_size;
    a.value.data = B.value;
    a.value.len = (size_t)B.val_size;
    a.client_id.data = c->client_id;
    a.client_id.len = 16;
    a.request_id = ++c->request_id;
    raftkv__kv_service__put_append(service_for(c, false), &a, on_put, c);
}

static void issue_get(struct client *c)
{
    c->k1 = random_key(c, B.key_space);
    key_of(c->key, sizeof c->key, c->k1);
    Raftkv__GetArgs a = RAFTKV__GET_ARGS__INIT;
    a.key.data = (uint8_t *)c->key;
    a.key.len = (size_t)B.key_size;
    a.stale_ok = B.stale;
    raftkv__kv_service__get(service_for(c, B.stale), &a, on_get, c);
}

static void issue_mix(struct client *c)
{
    if (rand_r(&c->seed) % 2) {
        issue_put(c);
    } else {
        issue_get(c);
    }
}

/* [key(i), key(i + range_keys)): range_keys consecutive keys, as etcdload's
 * -op range (keys are zero-padded numbers, so they sort as numbers). */
static void issue_range(struct client *c)
{
    c->k1 = random_key(c, B.key_space - B.range_keys + 1);
    key_of(c->key, sizeof c->key, c->k1);
    key_of(c->key2, sizeof c->key2, c->k1 + B.range_keys);
    Raftkv__RangeArgs a = RAFTKV__RANGE_ARGS__INIT;
    a.key.data = (uint8_t *)c->key;
    a.key.len = (size_t)B.key_size;
    a.range_end.data = (uint8_t *)c->key2;
    a.range_end.len = (size_t)B.key_size;
    a.stale_ok = B.stale;
    raftkv__kv_service__range(service_for(c, B.stale), &a, on_range, c);
}

/* If(compare on k1) Then(Put(k1), Put(k2)), two distinct random keys.
 * version: Version(k1) < 2^64-1, which always holds, as etcdload's
 * Version(k1) > -1 does. mod: ModRevision(k1) == the last one this run saw
 * (0 at first: absent), else read k1 to learn it. */
/* Version(@key) < 2^64-1: always true (etcdload's compare). */
static void always_true(Raftkv__Compare *cmp, char *key)
{
    raftkv__compare__init(cmp);
    cmp->key.data = (uint8_t *)key;
    cmp->key.len = (size_t)B.key_size;
    cmp->target = RAFTKV__COMPARE__TARGET__VERSION;
    cmp->result = RAFTKV__COMPARE__RESULT__LESS;
    cmp->target_union_case = RAFTKV__COMPARE__TARGET_UNION_VERSION;
    cmp->version = UINT64_MAX;
}

static void issue_txn(struct client *c)
{
    c->k1 = random_key(c, B.key_space);
    c->k2 = random_key(c, B.key_space - 1);
    if (c->k2 >= c->k1) {
        c->k2++;
    }
    key_of(c->key, sizeof c->key, c->k1);
    key_of(c->key2, sizeof c->key2, c->k2);
    Raftkv__Compare cmp;
    always_true(&cmp, c->key);
    if (B.mod) {
        cmp.target = RAFTKV__COMPARE__TARGET__MOD;
        cmp.result = RAFTKV__COMPARE__RESULT__EQUAL;
        cmp.target_union_case = RAFTKV__COMPARE__TARGET_UNION_MOD_REVISION;
        cmp.mod_revision = B.mod[c->k1];
    }
    Raftkv__PutRequest p[2] = {RAFTKV__PUT_REQUEST__INIT,
                               RAFTKV__PUT_REQUEST__INIT};
    Raftkv__RequestOp put[2] = {RAFTKV__REQUEST_OP__INIT,
                                RAFTKV__REQUEST_OP__INIT};
    for (int i = 0; i < 2; i++) {
        p[i].key.data = (uint8_t *)(i ? c->key2 : c->key);
        p[i].key.len = (size_t)B.key_size;
        p[i].value.data = B.value;
        p[i].value.len = (size_t)B.val_size;
        put[i].request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_PUT;
        put[i].request_put = &p[i];
    }
    Raftkv__RangeArgs rd = RAFTKV__RANGE_ARGS__INIT;
    rd.key = cmp.key;
    rd.keys_only = true;
    Raftkv__RequestOp read = RAFTKV__REQUEST_OP__INIT;
    read.request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_RANGE;
    read.request_range = &rd;
    Raftkv__Compare *cmps[1] = {&cmp};
    Raftkv__RequestOp *success[2] = {&put[0], &put[1]};
    Raftkv__RequestOp *failure[1] = {&read};
    Raftkv__TxnArgs a = RAFTKV__TXN_ARGS__INIT;
    a.n_compare = 1;
    a.compare = cmps;
    a.n_success = 2;
    a.success = success;
    if (B.mod) {
        a.n_failure = 1;
        a.failure = failure;
    }
    a.client_id.data = c->client_id;
    a.client_id.len = 16;
    a.request_id = ++c->request_id;
    raftkv__kv_service__txn(service_for(c, false), &a, on_txn, c);
}

/* --op rtxn: If(Version(A) < 2^64-1) Then(Range(A), Range(B)), a
 * transaction that only reads (served as a linearizable read). */
static void issue_rtxn(struct client *c)
{
    c->k1 = random_key(c, B.key_space);
    c->k2 = random_key(c, B.key_space);
    key_of(c->key, sizeof c->key, c->k1);
    key_of(c->key2, sizeof c->key2, c->k2);
    Raftkv__Compare cmp;
    always_true(&cmp, c->key);
    Raftkv__RangeArgs rd[2] = {RAFTKV__RANGE_ARGS__INIT,
                               RAFTKV__RANGE_ARGS__INIT};
    Raftkv__RequestOp read[2] = {RAFTKV__REQUEST_OP__INIT,
                                 RAFTKV__REQUEST_OP__INIT};
    for (int i = 0; i < 2; i++) {
        rd[i].key.data = (uint8_t *)(i ? c->key2 : c->key);
        rd[i].key.len = (size_t)B.key_size;
        read[i].request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_RANGE;
        read[i].request_range = &rd[i];
    }
    Raftkv__Compare *cmps[1] = {&cmp};
    Raftkv__RequestOp *success[2] = {&read[0], &read[1]};
    Raftkv__TxnArgs a = RAFTKV__TXN_ARGS__INIT;
    a.n_compare = 1;
    a.compare = cmps;
    a.n_success = 2;
    a.success = success;
    /* A session all the same: a server older than read-only transactions
     * puts this one in the log, and refuses it without one. */
    a.client_id.data = c->client_id;
    a.client_id.len = 16;
    a.request_id = ++c->request_id;
    raftkv__kv_service__txn(service_for(c, false), &a, on_txn, c);
}

/* --op watch: --watchers watch streams on the prefix "w/" (watcher i on
 * node i % nodes, connection i / nodes % conns), while the clients put
 * random keys under it at the leader, each value starting with the
 * 19-digit CLOCK_REALTIME nanoseconds taken before the put (etcdload's
 * -op watch). ops = events delivered to all watchers, latency = put start
 * to delivery, elapsed = until every watcher has the last put's revision
 * (at most 30 s after the writers stop). */
#define WATCH_TS_LEN 19

struct watcher
{
    struct rpc_stream *st; /* its stream */
    bool created;          /* the node accepted it */
    uint64_t last;         /* highest revision delivered */
    bool ended;            /* the stream ended (an error) */
};

static struct
{
    int n;             /* --watchers */
    struct watcher *w; /* the watchers */
    int created;       /* of them, accepted */
    uint64_t puts;     /* puts acknowledged */
    uint64_t end_rev;  /* the last put's revision (0: writers run) */
    bool writers_done; /* every writer stopped */
    uint64_t max_rev;  /* highest revision a put made */
} W;

static uint64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Done once every watcher has delivered up to the last revision. */
static void watch_check_done(void)
{
    if (!W.writers_done) {
        return;
    }
    for (int i = 0; i < W.n; i++) {
        if (!W.w[i].ended && W.w[i].last < W.end_rev) {
            return;
        }
    }
    event_base_loopbreak(B.base);
}

static void on_watch_frame(struct rpc_stream *st,
                           const ProtobufCMessage *msg,
                           bool end,
                           void *arg)
{
    (void)st;
    struct watcher *w = arg;
    const Raftkv__WatchReply *r = (const Raftkv__WatchReply *)msg;
    if (end) {
        w->ended = true;
        w->st = NULL;
        B.errors++;
        snprintf(B.last_error, sizeof B.last_error, "a watch ended: %s",
                 r ? r->message : rpc_last_error());
        watch_check_done();
        return;
    }
    if (r->created && !w->created) {
        w->created = true;
        W.created++;
    }
    uint64_t now = real_ns();
    for (size_t i = 0; i < r->n_events; i++) {
        const Raftkv__KeyValue *kv = r->events[i]->kv;
        if (kv->value.len >= WATCH_TS_LEN) {
            char ts[WATCH_TS_LEN + 1];
            memcpy(ts, kv->value.data, WATCH_TS_LEN);
            ts[WATCH_TS_LEN] = 0;
            uint64_t sent = strtoull(ts, NULL, 10);
            hist_add(&B.hist, now > sent ? now - sent : 0);
        }
        B.done++;
        if (kv->mod_revision > w->last) {
            w->last = kv->mod_revision;
        }
    }
    watch_check_done();
}

static void on_watch_put(const Raftkv__PutAppendReply *r, void *data)
{
    struct client *c = data;
    bool ok = r && r->err == RAFTKV__KV_ERROR__KV_OK;
    uint64_t leader_hint = REPLY_HINT(r);
    if (ok) {
        W.puts++;
        if (r->revision > W.max_rev) {
            W.max_rev = r->revision;
        }
    } else {
        B.errors++;
        for (int i = 0; leader_hint && i < B.n_nodes; i++) {
            if ((uint64_t)(i + 1) == leader_hint) {
                B.leader = i;
            }
        }
    }
    if (now_ns() < B.end_ns) {
        B.issued++;
        c->started = now_ns();
        B.op->issue(c);
    } else if (--B.running == 0) {
        W.writers_done = true;
        W.end_rev = W.max_rev;
        watch_check_done();
    }
}

static void issue_watch_put(struct client *c)
{
    c->k1 = random_key(c, B.key_space);
    char k[60];
    key_of(k, sizeof k, c->k1);
    snprintf(c->key, sizeof c->key, "w/%.48s", k);
    char ts[32];
    snprintf(ts, sizeof ts, "%0*llu", WATCH_TS_LEN,
             (unsigned long long)real_ns());
    memcpy(B.value, ts, WATCH_TS_LEN);
    Raftkv__PutAppendArgs a = RAFTKV__PUT_APPEND_ARGS__INIT;
    a.key.data = (uint8_t *)c->key;
    a.key.len = strlen(c->key);
    a.value.data = B.value;
    a.value.len = (size_t)B.val_size;
    a.client_id.data = c->client_id;
    a.client_id.len = 16;
    a.request_id = ++c->request_id;
    raftkv__kv_service__put_append(service_for(c, false), &a, on_watch_put, c);
}

static void on_watch_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    event_base_loopbreak(B.base);
}

/* Open the watchers and wait until every node has accepted its own. */
static int open_watchers(void)
{
    W.w = calloc((size_t)W.n, sizeof *W.w);
    if (!W.w) {
        return -1;
    }
    Raftkv__WatchArgs a = RAFTKV__WATCH_ARGS__INIT;
    a.key = (ProtobufCBinaryData){2, (uint8_t *)"w/"};
    a.range_end = (ProtobufCBinaryData){2, (uint8_t *)"w0"};
    for (int i = 0; i < W.n; i++) {
        int node = i % B.n_nodes, conn = i / B.n_nodes % B.conns;
        kv_for(node, conn); /* makes the channel */
        W.w[i].st = rpc_channel_stream(
            B.nodes[node].ch[conn], &raftkv__watch_service__descriptor, "Watch",
            &a.base, on_watch_frame, &W.w[i]);
        if (!W.w[i].st) {
            return -1;
        }
    }
    struct event *t = evtimer_new(B.base, on_watch_timeout, NULL);
    uint64_t deadline = now_ns() + 30000000000ull;
    while (W.created < W.n && now_ns() < deadline && B.errors == 0) {
        struct timeval tv = {0, 50000};
        evtimer_add(t, &tv);
        event_base_loop(B.base, EVLOOP_ONCE);
    }
    event_free(t);
    return W.created == W.n ? 0 : -1;
}

/* The writers, then the drain; returns the elapsed seconds. */
static double run_watch(struct client *cl)
{
    uint64_t start = now_ns();
    B.end_ns = start + (uint64_t)(B.duration * 1e9);
    B.running = B.clients;
    for (int i = 0; i < B.clients; i++) {
        issue(&cl[i]);
    }
    /* Until the watchers drained, or 30 s after the writers stopped. */
    struct event *t = evtimer_new(B.base, on_watch_timeout, NULL);
    struct timeval tv = {(long)B.duration + 30, 0};
    evtimer_add(t, &tv);
    event_base_dispatch(B.base);
    event_free(t);
    double el = (double)(now_ns() - start) / 1e9;
    for (int i = 0; i < W.n; i++) {
        if (!W.w[i].ended && W.w[i].last < W.end_rev) {
            B.errors++; /* did not catch up */
        }
        if (W.w[i].st) {
            rpc_stream_cancel(W.w[i].st);
        }
    }
    free(W.w);
    return el;
}

/* lease: grant a lease (--lease-ttl), then put a random key with it; one
 * op is both calls (etcd's lease grant + put). */
static void on_lease_grant(const Raftkv__LeaseGrantReply *r, void *data)
{
    struct client *c = data;
    if (!r || r->err != RAFTKV__KV_ERROR__KV_OK) {
        finish(c, false, REPLY_HINT(r));
        return;
    }
    c->k1 = random_key(c, B.key_space);
    key_of(c->key, sizeof c->key, c->k1);
    Raftkv__PutAppendArgs a = RAFTKV__PUT_APPEND_ARGS__INIT;
    a.key.data = (uint8_t *)c->key;
    a.key.len = (size_t)B.key_size;
    a.value.data = B.value;
    a.value.len = (size_t)B.val_size;
    a.lease = r->id;
    a.client_id.data = c->client_id;
    a.client_id.len = 16;
    a.request_id = ++c->request_id;
    raftkv__kv_service__put_append(service_for(c, false), &a, on_put, c);
}

static void issue_lease(struct client *c)
{
    Raftkv__LeaseGrantArgs a = RAFTKV__LEASE_GRANT_ARGS__INIT;
    a.ttl = B.lease_ttl;
    a.client_id.data = c->client_id;
    a.client_id.len = 16;
    a.request_id = ++c->request_id;
    raftkv__lease_service__lease_grant(lease_for(B.leader, c->id % B.conns), &a,
                                       on_lease_grant, c);
}

/* keepalive: --leases leases are granted first (untimed, TTL at least the
 * run + 60 s so that none expires mid-run); each op renews one of them
 * (etcdload's -op keepalive: KeepAliveOnce), with a unary call, or with
 * --stream a message on the client's keep-alive stream and its answer. */
static struct
{
    int n;         /* --leases */
    uint64_t *ids; /* the leases granted */
    int granted;   /* of them so far */
    int granting;  /* grants in flight */
} K = {1000, NULL, 0, 0};

static void issue_grant(struct client *c);

static void on_ka_grant(const Raftkv__LeaseGrantReply *r, void *data)
{
    struct client *c = data;
    K.granting--;
    if (r && r->err == RAFTKV__KV_ERROR__KV_OK) {
        K.ids[K.granted++] = r->id;
    } else {
        B.errors++;
        uint64_t hint = REPLY_HINT(r);
        for (int i = 0; hint && i < B.n_nodes; i++) {
            if ((uint64_t)(i + 1) == hint) {
                B.leader = i;
            }
        }
    }
    if (K.granted + K.granting < K.n && B.errors < 100) {
        issue_grant(c);
    } else if (K.granting == 0) {
        event_base_loopbreak(B.base);
    }
}

static void issue_grant(struct client *c)
{
    K.granting++;
    Raftkv__LeaseGrantArgs a = RAFTKV__LEASE_GRANT_ARGS__INIT;
    int64_t ttl = (int64_t)B.duration + 60;
    a.ttl = B.lease_ttl > ttl ? B.lease_ttl : ttl;
    a.client_id.data = c->client_id;
    a.client_id.len = 16;
    a.request_id = ++c->request_id;
    raftkv__lease_service__lease_grant(lease_for(B.leader, c->id % B.conns), &a,
                                       on_ka_grant, c);
}

/* Grant the leases before the timed run. */
static int grant_leases(struct client *cl)
{
    K.ids = calloc((size_t)K.n, sizeof *K.ids);
    if (!K.ids) {
        return -1;
    }
    for (int i = 0; i < B.clients && i < K.n; i++) {
        issue_grant(&cl[i]);
    }
    event_base_dispatch(B.base);
    if (K.granted < K.n) {
        fprintf(stderr, "kvbench: granted %d of %d leases: %s\n", K.granted,
                K.n, B.last_error);
        return -1;
    }
    B.errors = 0;
    return 0;
}

static void on_keepalive(const Raftkv__LeaseKeepAliveReply *r, void *data)
{
    finish(data, r && r->err == RAFTKV__KV_ERROR__KV_OK && r->ttl > 0,
           REPLY_HINT(r));
}

/* keepalive --stream: the answer to the client's renewal on its stream,
 * or the stream's end (the node stopped leading, or the connection
 * broke): the next renewal opens a new one at the leader. */
static void on_ka_frame(struct rpc_stream *st,
                        const ProtobufCMessage *msg,
                        bool end,
                        void *arg)
{
    (void)st;
    struct client *c = arg;
    const Raftkv__LeaseKeepAliveReply *r =
        (const Raftkv__LeaseKeepAliveReply *)msg;
    if (end) {
        c->ka = NULL;
    }
    if (!c->ka_waiting) {
        return; /* (ended after the run: nothing in flight) */
    }
    c->ka_waiting = false;
    finish(c, !end && r->err == RAFTKV__KV_ERROR__KV_OK && r->ttl > 0,
           REPLY_HINT(r));
}

static void issue_keepalive(struct client *c)
{
    Raftkv__LeaseKeepAliveArgs a = RAFTKV__LEASE_KEEP_ALIVE_ARGS__INIT;
    a.id = K.ids[random_key(c, K.granted)];
    if (!B.stream) {
        raftkv__lease_service__lease_keep_alive(
            lease_for(B.leader, c->id % B.conns), &a, on_keepalive, c);
        return;
    }
    c->ka_waiting = true;
    if (c->ka && rpc_stream_send_msg(c->ka, &a.base) == 0) {
        return;
    }
    if (c->ka) {
        rpc_stream_cancel(c->ka); /* (could not send on it: a new one) */
    }
    /* A new stream at the leader; its request is this renewal. */
    lease_for(B.leader, c->id % B.conns);
    c->ka = rpc_channel_stream(B.nodes[B.leader].ch[c->id % B.conns],
                               &raftkv__lease_service__descriptor,
                               "LeaseKeepAliveStream", &a.base, on_ka_frame, c);
    if (!c->ka) {
        fprintf(stderr, "kvbench: cannot start a stream: %s\n",
                rpc_last_error());
        exit(1);
    }
}

static const struct op_row ops[] = {
    {"put", NULL, issue_put, true, false, false},
    {"get", "sget", issue_get, false, false, false},
    {"sget", "sget", issue_get, false, false, true}, /* get --stale */
    {"mix", NULL, issue_mix, true, false, false},
    {"range", "srange", issue_range, false, true, false},
    {"txn", NULL, issue_txn, true, false, false},
    {"rtxn", NULL, issue_rtxn, true, true, false},
    {"watch", NULL, issue_watch_put, true, false, false},
    {"lease", NULL, issue_lease, true, false, false},
    {"keepalive", NULL, issue_keepalive, true, false, false},
};
#define N_OPS (sizeof ops / sizeof ops[0])

/* --async: a put or get through libclerk finished. */
static void on_async(struct clerk_async *a,
                     const struct clerk_async_reply *r,
                     void *arg)
{
    (void)a;
    struct client *c = arg;
    bool ok =
        r->err == CLERK_OK || (!c->async_put && r->err == CLERK_NOT_FOUND);
    if (!ok) {
        snprintf(B.last_error, sizeof B.last_error, "%s: %s",
                 clerk_error_code(r->err), r->errmsg);
    }
    finish(c, ok, 0);
}

/* --async: the client's next put or get, as issue_put/issue_get choose. */
static void issue_async(struct client *c)
{
    c->async_put = B.prefill_running || B.op->issue == issue_put ||
                   (B.op->issue == issue_mix && rand_r(&c->seed) % 2);
    c->k1 =
        B.prefill_running ? (int)(B.issued - 1) : random_key(c, B.key_space);
    key_of(c->key, sizeof c->key, c->k1);
    int rv =
        c->async_put
            ? clerk_async_put(B.async, c->key, (size_t)B.key_size, B.value,
                              (size_t)B.val_size, on_async, c)
            : clerk_async_get(B.async, c->key, (size_t)B.key_size, on_async, c);
    if (rv != CLERK_OK) {
        fprintf(stderr, "kvbench: libclerk refused a call: %s\n",
                clerk_strerror(rv));
        exit(1);
    }
}

static void issue(struct client *c)
{
    B.issued++;
    c->started = now_ns();
    if (B.use_async) {
        issue_async(c);
    } else if (B.prefill_running) {
        issue_put(c);
    } else {
        B.op->issue(c);
    }
}

static void on_probe(const Raftkv__GetReply *r, void *data)
{
    *(bool *)data = r && (r->err == RAFTKV__KV_ERROR__KV_OK ||
                          r->err == RAFTKV__KV_ERROR__KV_NOT_FOUND);
}

/* A blocking channel to node i with the run's TLS and token. */
static struct rpc_channel *blocking(int i, uint32_t deadline_ms)
{
    struct rpc_channel_options o = {.deadline_ms = deadline_ms, .tls = B.tls};
    struct rpc_channel *ch =
        rpc_channel_new_blocking(B.nodes[i].host, B.nodes[i].port, &o);
    if (!ch || rpc_channel_set_auth_token(ch, B.token) != 0) {
        fprintf(stderr, "kvbench: out of memory\n");
        exit(1);
    }
    return ch;
}

/* An Authenticate's answer: why[] empty with a token, else why not;
 * *retry whether another node (or a later try) may answer otherwise. */
struct auth_try
{
    char why[300];
    bool retry;
};

static void on_auth(const Raftkv__AuthenticateReply *r, void *data)
{
    struct auth_try *t = data;
    if (!r) {
        snprintf(t->why, sizeof t->why, "%s", rpc_last_error());
        t->retry = true;
    } else if (r->err != RAFTKV__AUTH_ERROR__AUTH_OK) {
        snprintf(t->why, sizeof t->why, "%s", r->message);
        /* A node that has not applied `auth enable` yet says it is off. */
        t->retry = r->err == RAFTKV__AUTH_ERROR__AUTH_NOT_ENABLED;
    } else {
        snprintf(B.token, sizeof B.token, "%s", r->token);
        t->why[0] = 0;
    }
}

/* --user NAME:PASSWORD: a token, before any timing, from the first node
 * that gives one (for 5 s: a node may not have applied `auth enable`
 * yet, or be down). */
static int authenticate(const char *arg)
{
    char user[256];
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg || (size_t)(colon - arg) >= sizeof user) {
        fprintf(stderr, "kvbench: --user wants NAME:PASSWORD\n");
        return -1;
    }
    memcpy(user, arg, (size_t)(colon - arg));
    user[colon - arg] = 0;
    struct auth_try t = {"no answer", true};
    for (int round = 0; round < 50 && t.retry; round++) {
        for (int i = 0; i < B.n_nodes && t.retry; i++) {
            struct rpc_channel *ch = blocking(i, 1000);
            Raftkv__AuthenticateArgs a = RAFTKV__AUTHENTICATE_ARGS__INIT;
            a.user = user;
            a.password = (char *)colon + 1;
            t.retry = false;
            raftkv__auth_service__authenticate(
                rpc_channel_service(ch, &raftkv__auth_service__descriptor), &a,
                on_auth, &t);
            rpc_channel_free(ch);
            if (!t.why[0]) {
                return 0;
            }
        }
        if (t.retry) {
            struct timespec ts = {0, 100000000};
            nanosleep(&ts, NULL);
        }
    }
    fprintf(stderr, "kvbench: authenticate as %s: %s\n", user, t.why);
    return -1;
}

/* Ask every node who leads; blocking, at start. */
static int find_leader(void)
{
    for (int tries = 0; tries < 100; tries++) {
        for (int i = 0; i < B.n_nodes; i++) {
            struct rpc_channel *ch = blocking(i, 1000);
            ProtobufCService *svc =
                rpc_channel_service(ch, &raftkv__kv_service__descriptor);
            Raftkv__GetArgs a = RAFTKV__GET_ARGS__INIT;
            a.key.data = (uint8_t *)"kvbench-probe";
            a.key.len = 13;
            bool leads = false;
            raftkv__kv_service__get(svc, &a, on_probe, &leads);
            rpc_channel_free(ch);
            if (leads) {
                return i;
            }
        }
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static void on_open(const Raftkv__OpenSessionReply *r, void *data)
{
    *(int *)data = r ? (int)r->err : -1;
}

/* Writes need a session: open one per client, at the leader (blocking, at
 * start, before any timing). */
static int open_sessions(struct client *cl, int n)
{
    struct rpc_channel_options o = {.deadline_ms = 2000};
    for (int i = 0; i < n; i++) {
        int err = -1;
        for (int tries = 0; tries < 50 && err != 0; tries++) {
            struct rpc_channel *ch = blocking(B.leader, o.deadline_ms);
            Raftkv__OpenSessionArgs a = RAFTKV__OPEN_SESSION_ARGS__INIT;
            a.client_id.data = cl[i].client_id;
            a.client_id.len = 16;
            raftkv__kv_service__open_session(
                rpc_channel_service(ch, &raftkv__kv_service__descriptor), &a,
                on_open, &err);
            rpc_channel_free(ch);
            if (err != 0) {
                struct timespec ts = {0, 100000000};
                nanosleep(&ts, NULL);
                int l = find_leader();
                if (l >= 0) {
                    B.leader = l;
                }
            }
        }
        if (err != 0) {
            return -1;
        }
    }
    return 0;
}

static double parse_duration(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0) {
        return -1;
    }
    if (!strcmp(end, "") || !strcmp(end, "s")) {
        return v;
    }
    if (!strcmp(end, "ms")) {
        return v / 1000;
    }
    if (!strcmp(end, "m")) {
        return v * 60;
    }
    return -1;
}

/* --async: one libclerk handle on B.base for every client; --conns does
 * not apply (libclerk keeps one connection per server). */
static int open_async(const char *cluster, const char *cacert, const char *user)
{
    char name[256] = "";
    const char *password = NULL;
    if (user) {
        const char *colon = strchr(user, ':');
        if (!colon || (size_t)(colon - user) >= sizeof name) {
            fprintf(stderr, "kvbench: --user wants NAME:PASSWORD\n");
            return -1;
        }
        memcpy(name, user, (size_t)(colon - user));
        password = colon + 1;
    }
    struct clerk_options o = {
        .user = user ? name : NULL,
        .password = password,
        .cacert = cacert && *cacert ? cacert : NULL,
        .read_mode = B.stale ? CLERK_READ_STALE : CLERK_READ_LINEARIZABLE};
    if (clerk_async_open(&B.async, cluster, &o, B.base) != CLERK_OK) {
        fprintf(stderr, "kvbench: libclerk: %s\n", clerk_open_error());
        return -1;
    }
    B.conns = 1;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: kvbench --cluster HOST:PORT,... "
        "[--op put|get|sget|mix|range|txn|rtxn|watch|lease|keepalive]\n"
        "               [--conns M] [--clients N] [--duration 10s | "
        "--total N]\n"
        "               [--key-size 16] [--val-size 256] [--key-space "
        "10000]\n"
        "               [--range-keys 100] [--watchers N] [--stale] "
        "[--txn-compare version|mod]\n"
        "               [--target leader|all] [--prefill] [--json]\n"
        "               [--leases N] [--stream] [--async]\n"
        "               [--cacert CA.crt] [--user NAME:PASSWORD]\n"
        "       kvbench --version | --help\n"
        "The cluster list is in node-id order (node 1 first), as given "
        "to kvserver.\n"
        "range: a random window of --range-keys consecutive keys (the key "
        "space is\n"
        "  filled first), linearizable, or serializable with --stale.\n"
        "txn: If(compare on key A) Then(Put(A), Put(B)); --txn-compare "
        "version:\n"
        "  Version(A) < 2^64-1, always true (etcdload's); mod: "
        "ModRevision(A) equal to\n"
        "  the last one seen, else read A (a failed compare is a "
        "completed op).\n"
        "rtxn: If(Version(A) < 2^64-1) Then(Range(A), Range(B)), two random "
        "keys of\n"
        "  the filled key space: a transaction that only reads.\n"
        "lease: grant a lease of --lease-ttl seconds (default 60), then "
        "put a random\n"
        "  key with it: one op is both calls.\n"
        "keepalive: --leases N (default 1000) leases are granted first; "
        "each op\n"
        "  renews a random one of them (LeaseKeepAlive); with --stream, "
        "on a keep-alive\n"
        "  stream per client (LeaseKeepAliveStream: one renewal message "
        "and its answer).\n"
        "--async (put, get, sget, mix): through libclerk's async API, "
        "one handle with\n"
        "  --clients calls in flight over one connection per server "
        "(--conns does not\n"
        "  apply); the result line ends with client=libclerk-async.\n");
}

static int parse_cluster(const char *list)
{
    char *copy = strdup(list), *save = NULL;
    for (char *it = strtok_r(copy, ",", &save); it;
         it = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(it, '=');
        if (eq) {
            it = eq + 1; /* accept kvserver's ID=HOST:PORT form too */
        }
        char *colon = strrchr(it, ':');
        if (!colon || B.n_nodes == MAX_NODES) {
            free(copy);
            return -1;
        }
        *colon = 0;
        struct node *n = &B.nodes[B.n_nodes++];
        snprintf(n->host, sizeof n->host, "%s", it);
        n->port = (uint16_t)atoi(colon + 1);
        if (!n->port) {
            free(copy);
            return -1;
        }
    }
    free(copy);
    return B.n_nodes ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *cluster = getenv("RAFTKV_CLUSTER");
    const char *cacert = getenv("RAFTKV_CACERT"), *user = NULL;
    B.op = &ops[0];
    B.range_keys = 100;
    B.lease_ttl = 60;
    B.conns = B.clients = 1;
    B.key_size = 16;
    B.val_size = 256;
    B.key_space = 10000;
    B.duration = 10;
    static const struct option opts[] = {
        {"cluster", required_argument, NULL, 'c'},
        {"op", required_argument, NULL, 'o'},
        {"conns", required_argument, NULL, 'C'},
        {"clients", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"total", required_argument, NULL, 't'},
        {"key-size", required_argument, NULL, 'k'},
        {"val-size", required_argument, NULL, 'v'},
        {"key-space", required_argument, NULL, 's'},
        {"target", required_argument, NULL, 'T'},
        {"range-keys", required_argument, NULL, 'r'},
        {"watchers", required_argument, NULL, 'W'},
        {"stale", no_argument, NULL, 'S'},
        {"txn-compare", required_argument, NULL, 'X'},
        {"lease-ttl", required_argument, NULL, 'L'},
        {"leases", required_argument, NULL, 'K'},
        {"stream", no_argument, NULL, 'Z'},
        {"prefill", no_argument, NULL, 'p'},
        {"async", no_argument, NULL, 'a'},
        {"json", no_argument, NULL, 'j'},
        {"cacert", required_argument, NULL, 'A'},
        {"user", required_argument, NULL, 'U'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0},
    };
    int o;
    while ((o = getopt_long_only(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
            case 'c':
                cluster = optarg;
                break;
            case 'o': {
                B.op = NULL;
                for (size_t i = 0; i < N_OPS; i++) {
                    if (!strcmp(optarg, ops[i].name)) {
                        B.op = &ops[i];
                    }
                }
                if (!B.op) {
                    fprintf(
                        stderr,
                        "kvbench: --op wants put, get, sget, mix, range, txn, "
                        "rtxn, watch, lease or keepalive\n");
                    return 2;
                }
                break;
            }
            case 'L':
                B.lease_ttl = atoll(optarg);
                if (B.lease_ttl < 1) {
                    fprintf(stderr, "kvbench: --lease-ttl wants seconds\n");
                    return 2;
                }
                break;
            case 'r':
                B.range_keys = atoi(optarg);
                break;
            case 'W':
                W.n = atoi(optarg);
                break;
            case 'K':
                K.n = atoi(optarg);
                if (K.n < 1) {
                    fprintf(stderr, "kvbench: --leases wants a number >= 1\n");
                    return 2;
                }
                break;
            case 'S':
                B.stale = true;
                break;
            case 'Z':
                B.stream = true;
                break;
            case 'X':
                if (strcmp(optarg, "version") && strcmp(optarg, "mod")) {
                    fprintf(stderr,
                            "kvbench: --txn-compare wants version or mod\n");
                    return 2;
                }
                B.txn_mod = !strcmp(optarg, "mod");
                break;
            case 'C':
                B.conns = atoi(optarg);
                break;
            case 'n':
                B.clients = atoi(optarg);
                break;
            case 'd':
                B.duration = parse_duration(optarg);
                break;
            case 't':
                B.total = strtoull(optarg, NULL, 10);
                break;
            case 'k':
                B.key_size = atoi(optarg);
                break;
            case 'v':
                B.val_size = atoi(optarg);
                break;
            case 's':
                B.key_space = atoi(optarg);
                break;
            case 'T':
                if (strcmp(optarg, "leader") && strcmp(optarg, "all")) {
                    fprintf(stderr, "kvbench: --target wants leader or all\n");
                    return 2;
                }
                B.target_all = !strcmp(optarg, "all");
                break;
            case 'p':
                B.prefill = true;
                break;
            case 'a':
                B.use_async = true;
                break;
            case 'j':
                B.json = true;
                break;
            case 'A':
                cacert = optarg;
                break;
            case 'U':
                user = optarg;
                break;
            case 'h':
                usage(stdout);
                return 0;
            case 'V':
                fputs(RAFTKV_VERSION_LINE("kvbench"), stdout);
                return 0;
            default:
                usage(stderr);
                return 2;
        }
    }
    if (!cluster || parse_cluster(cluster) != 0) {
        fprintf(stderr,
                "kvbench: --cluster HOST:PORT,... is required (or "
                "RAFTKV_CLUSTER)\n");
        return 2;
    }
    if (B.conns < 1 || B.clients < 1 || B.duration <= 0 || B.key_size < 1 ||
        B.key_size > 48 || B.val_size < 0 || B.val_size > (4 << 20) ||
        B.key_space < 1) {
        fprintf(stderr,
                "kvbench: need conns, clients >= 1, a positive "
                "duration, key size 1..48, value size 0..4 MiB, key "
                "space >= 1\n");
        return 2;
    }
    if (B.op->issue == issue_range &&
        (B.range_keys < 1 || B.range_keys > B.key_space ||
         snprintf(NULL, 0, "%d", B.key_space) > B.key_size)) {
        fprintf(stderr,
                "kvbench: range wants --range-keys between 1 and the key "
                "space, and keys wide enough to write every number of the "
                "key space (so that they sort as numbers)\n");
        return 2;
    }
    if (B.op->issue == issue_watch_put &&
        (W.n < 1 || B.total || B.val_size < WATCH_TS_LEN)) {
        fprintf(stderr,
                "kvbench: watch wants --watchers N (N >= 1), a "
                "--duration and --val-size >= 19\n");
        return 2;
    }
    if (B.use_async && B.op->issue != issue_put && B.op->issue != issue_get &&
        B.op->issue != issue_mix) {
        fprintf(stderr,
                "kvbench: --async goes with --op put, get, sget or "
                "mix\n");
        return 2;
    }
    if (B.stream && B.op->issue != issue_keepalive) {
        fprintf(stderr, "kvbench: --stream goes with --op keepalive\n");
        return 2;
    }
    if (B.op->issue == issue_txn && B.key_space < 2) {
        fprintf(stderr, "kvbench: txn wants a key space >= 2 (two keys)\n");
        return 2;
    }
    B.stale = B.stale || B.op->stale;
    const char *op_name =
        B.stale && B.op->stale_name ? B.op->stale_name : B.op->name;
    if (B.txn_mod && B.op->issue == issue_txn) {
        B.mod = calloc((size_t)B.key_space, sizeof *B.mod);
        if (!B.mod) {
            fprintf(stderr, "kvbench: out of memory\n");
            return 1;
        }
    }
    if (cacert && *cacert) {
        char err[512];
        struct rpc_tls_options to = {.ca_file = cacert, .verify_peer = true};
        if (rpc_tls_new(&to, &B.tls, err, sizeof err) != 0) {
            fprintf(stderr, "kvbench: --cacert: %s\n", err);
            return 2;
        }
    }
    if (user && !B.use_async && authenticate(user) != 0) {
        return 1;
    }
    B.base = event_base_new();
    if (B.use_async && open_async(cluster, cacert, user) != 0) {
        return 1;
    }
    B.value = malloc((size_t)B.val_size + 1);
    memset(B.value, 'v', (size_t)B.val_size + 1);
    for (int i = 0; i < B.n_nodes; i++) {
        B.nodes[i].ch = calloc((size_t)B.conns, sizeof *B.nodes[i].ch);
    }
    struct client *cl = calloc((size_t)B.clients, sizeof *cl);
    unsigned seed = (unsigned)now_ns();
    for (int i = 0; i < B.clients; i++) {
        cl[i].id = i;
        cl[i].seed = seed + (unsigned)i * 7919u;
        for (int j = 0; j < 16; j++) {
            cl[i].client_id[j] = (uint8_t)rand_r(&seed);
        }
    }
    B.leader = B.use_async ? 0 : find_leader();
    if (B.leader < 0) {
        fprintf(stderr, "kvbench: no leader answered in 10 s\n");
        return 1;
    }
    B.prefill = B.prefill || B.op->fills;
    if (!B.use_async && (B.op->writes || B.prefill) &&
        open_sessions(cl, B.clients) != 0) {
        fprintf(stderr, "kvbench: could not open the clients' sessions\n");
        return 1;
    }
    if (B.prefill) {
        uint64_t saved_total = B.total;
        B.prefill_running = true;
        B.total = (uint64_t)B.key_space;
        B.running = B.clients < B.key_space ? B.clients : B.key_space;
        for (int i = 0; i < B.running; i++) {
            issue(&cl[i]);
        }
        event_base_dispatch(B.base);
        if (B.errors) {
            fprintf(stderr, "kvbench: filling the key space: %llu errors\n",
                    (unsigned long long)B.errors);
            return 1;
        }
        B.prefill_running = false;
        B.total = saved_total;
        B.issued = B.done = B.errors = B.wrong_leader = 0;
        memset(&B.hist, 0, sizeof B.hist);
    }
    if (B.op->issue == issue_keepalive && grant_leases(cl) != 0) {
        return 1;
    }
    bool watching = B.op->issue == issue_watch_put;
    if (watching && open_watchers() != 0) {
        fprintf(stderr, "kvbench: the watchers were not all accepted: %s\n",
                B.last_error[0] ? B.last_error : "no answer in 30 s");
        return 1;
    }
    double el;
    if (watching) {
        el = run_watch(cl);
    } else {
        uint64_t start = now_ns();
        B.end_ns = start + (uint64_t)(B.duration * 1e9);
        B.running = B.clients;
        for (int i = 0; i < B.clients; i++) {
            issue(&cl[i]);
        }
        event_base_dispatch(B.base);
        el = (double)(now_ns() - start) / 1e9;
    }
    double ms = 1e6;
    if (B.done == 0) {
        printf("no successful ops; errors: %llu%s%s\n",
               (unsigned long long)B.errors, B.last_error[0] ? "; last: " : "",
               B.last_error);
        return 1;
    }
    double mean = B.hist.sum / (double)B.hist.n / ms;
    double p50 = (double)hist_quantile(&B.hist, 0.5) / ms;
    double p90 = (double)hist_quantile(&B.hist, 0.9) / ms;
    double p99 = (double)hist_quantile(&B.hist, 0.99) / ms;
    double max = (double)B.hist.max / ms;
    double rate = (double)B.done / el;
    /* What only some ops have goes after etcdload's fields. */
    char extra[160] = "", jextra[160] = "";
    if (B.use_async) {
        snprintf(extra, sizeof extra, " client=libclerk-async");
        snprintf(jextra, sizeof jextra, ",\"client\":\"libclerk-async\"");
    }
    if (B.op->issue == issue_range) {
        snprintf(extra, sizeof extra, " range_keys=%d short=%llu", B.range_keys,
                 (unsigned long long)B.short_ranges);
        snprintf(jextra, sizeof jextra, ",\"range_keys\":%d,\"short\":%llu",
                 B.range_keys, (unsigned long long)B.short_ranges);
    } else if (B.op->issue == issue_keepalive && B.stream) {
        snprintf(extra, sizeof extra, " streams=%d", B.clients);
        snprintf(jextra, sizeof jextra, ",\"streams\":%d", B.clients);
    } else if (B.op->issue == issue_txn) {
        double ratio = (double)B.txn_succeeded / (double)B.done;
        snprintf(extra, sizeof extra, " compare=%s succeeded=%llu success=%.3f",
                 B.mod ? "mod" : "version", (unsigned long long)B.txn_succeeded,
                 ratio);
        snprintf(jextra, sizeof jextra,
                 ",\"compare\":\"%s\",\"succeeded\":%llu,\"success\":%.4f",
                 B.mod ? "mod" : "version", (unsigned long long)B.txn_succeeded,
                 ratio);
    }
    char before[80] = "";
    if (watching) { /* etcdload puts these before ops= */
        snprintf(before, sizeof before, " watchers=%d puts=%llu", W.n,
                 (unsigned long long)W.puts);
        snprintf(jextra, sizeof jextra, ",\"watchers\":%d,\"puts\":%llu", W.n,
                 (unsigned long long)W.puts);
    }
    printf(
        "op=%s conns=%d clients=%d%s ops=%llu errors=%llu elapsed=%.2fs "
        "rate=%.0f ops/s mean=%.2fms p50=%.2fms p90=%.2fms p99=%.2fms "
        "max=%.2fms%s\n",
        op_name, B.conns, B.clients, before, (unsigned long long)B.done,
        (unsigned long long)B.errors, el, rate, mean, p50, p90, p99, max,
        extra);
    if (B.json) {
        printf(
            "{\"op\":\"%s\",\"conns\":%d,\"clients\":%d,\"ops\":%llu,"
            "\"errors\":%llu,\"elapsed_s\":%.3f,\"rate\":%.1f,"
            "\"mean_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
            "\"p99_ms\":%.3f,\"max_ms\":%.3f%s}\n",
            op_name, B.conns, B.clients, (unsigned long long)B.done,
            (unsigned long long)B.errors, el, rate, mean, p50, p90, p99, max,
            jextra);
    }
    clerk_async_close(B.async);
    for (int i = 0; i < B.clients; i++) {
        if (cl[i].ka) {
            rpc_stream_cancel(cl[i].ka);
        }
    }
    for (int i = 0; i < B.n_nodes; i++) {
        for (int j = 0; j < B.conns; j++) {
            rpc_channel_free(B.nodes[i].ch[j]);
        }
        free(B.nodes[i].ch);
    }
    free(cl);
    free(B.mod);
    free(K.ids);
    free(B.value);
    event_base_free(B.base);
    return 0;
}
