/* internal.h: what libclerk's files share: the handle, and one
 * KvService or LeaseService call made to a final answer by the retry
 * machinery (op.c). Private to clerk/. */
#ifndef CLERK_INTERNAL_H
#define CLERK_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <proto/kv.pb-c.h>
#include <protobuf-c/protobuf-c.h>

#include "clerk/clerk.h"

#include <pthread.h>

struct clerk;
struct clerk_txn;
struct event_base;
struct rpc_tls;
struct ck_op;
struct ck_sync_service;

#define CK_MAX_SERVERS 16

/* What one try of a call at a server came to, for the retry loops' rule
 * that a handle whose servers all refuse the connection fails at once
 * (ck_tried). */
enum ck_try {
    CK_TRY_REFUSED,  /* no connection made: refused, or the channel waits
                        before it tries that server again */
    CK_TRY_SILENT,   /* connected, no answer for this handle */
    CK_TRY_ANSWERED, /* the server answered (any answer) */
};

/* Stale reads whose latency a handle keeps, for CLERK_READ_STALE_HEDGED's
 * p95 (and how many it needs before it hedges at all). */
#define CK_STALE_SAMPLES 64
#define CK_STALE_MIN     16

/* One server of a handle. */
struct ck_server
{
    char host[256];               /* address */
    uint16_t port;                /* port */
    char addr[300];               /* "host:port" as given */
    struct rpc_channel *ch;       /* on the handle's event base, made on
                                     first use; multiplexes every call */
    uint64_t token_gen;           /* the handle's token_gen ch carries */
    struct ck_sync_service *sync; /* blocking wrappers of ch's services */
    uint32_t latency_us;          /* recent answers' latency (a moving
                                     average; 0: none yet): stale reads go
                                     to the fastest server */
};

/* A session of the cluster's exactly-once table: one write in flight at a
 * time (the cluster keeps one request id per client id), so a handle
 * keeps a pool of them, one per write in flight. */
struct ck_session
{
    uint8_t client_id[16];   /* random, per session */
    bool open;               /* client_id has a session */
    uint64_t request_id;     /* last write's request id */
    struct ck_session *next; /* the pool's idle list */
};

/* A handle: the blocking API's (own_base: a private event base run
 * while an operation waits) or an async handle's (the caller's base). */
struct clerk
{
    pthread_mutex_t lock;                     /* blocking: one op at a time */
    struct ck_server servers[CK_MAX_SERVERS]; /* the cluster */
    size_t n;                                 /* servers */
    size_t leader;                            /* server tried first */
    struct ck_session *sessions;              /* idle sessions */
    unsigned deadline_ms;                     /* per operation */
    uint64_t trace_next;                      /* makes the ops' trace ids */
    uint64_t cluster_id;                      /* the cluster the handle
                                                 means: given
                                                 (clerk_set_cluster_id) or
                                                 from its first answer */
    bool reached;                             /* a server has answered this
                                                 handle (any answer) */
    unsigned attempt_ms;                      /* per call */
    enum clerk_read_mode read_mode;           /* for gets */
    uint32_t stale_us[CK_STALE_SAMPLES];      /* latencies of the last
                                                 stale reads answered (a
                                                 ring), for the hedge */
    unsigned stale_n, stale_pos;              /* samples held, next slot */
    uint64_t hedges;                          /* backup requests sent */
    struct clerk_options defaults;            /* as opened */
    char errmsg[512];                         /* last failure (ck_errmsgf) */
    pthread_mutex_t errmsg_lock;              /* guards errmsg alone */
    char *user;                 /* authenticate as (NULL: never) */
    char *password;             /* its password */
    char token[800];            /* from Authenticate ("": none) */
    uint64_t token_gen;         /* changes with token */
    bool auth_off;              /* the cluster said auth is off */
    char auth_msg[400];         /* why the last Authenticate failed */
    struct rpc_tls *tls;        /* opts.cacert's context, or NULL */
    bool tls_borrowed;          /* tls is another handle's */
    struct event_base *base;    /* where the channels run */
    bool own_base;              /* base is the handle's own */
    struct ck_op *ops;          /* operations in progress */
    struct ck_op *auth_op;      /* the op authenticating */
    struct ck_op *auth_waiters; /* ops waiting for its answer */
    size_t n_ops;               /* how many */
    bool closing;               /* closed: ops end CLERK_CLOSED */
    enum ck_try sync_try;       /* what the last blocking call (clerk.c's
                                   retry loops) came to */
    char sync_error[300];       /* its rpc error, when it failed */
    unsigned depth;             /* inside a callback of ours */
};

/* Open a handle on @base (NULL: a private one, as clerk_open). */
int ck_open_on(struct clerk **out,
               const char *servers,
               const struct clerk_options *opts,
               struct event_base *base);

/* The handle's channel to server i (made on first use); NULL when
 * out of memory. */
struct rpc_channel *ck_channel_of(struct clerk *c, size_t i);

/* Which server a leader hint's address names (one outside the list is
 * added); false when none. Without the lock. */
bool ck_hint_server(struct clerk *c, const char *addr, size_t *out);

/* Drop the token: the next call authenticates again. Without the lock. */
void ck_drop_token(struct clerk *c);

/* End every operation in progress with CLERK_CLOSED (each callback once)
 * and refuse new ones. */
void ck_shutdown(struct clerk *c);

/* Free the sessions of the pool. */
void ck_sessions_free(struct clerk *c);

/* A new random client id. */
void ck_new_client_id(uint8_t id[16]);

/* The value of a Get, or of a CompareAndSwap (ck_take_get, ck_take_cas). */
struct ck_value
{
    void *data;   /* value (malloc'd, NUL-terminated); NULL: none */
    size_t len;   /* its length */
    bool swapped; /* CAS: the new value was written */
    bool exists;  /* CAS: the key existed */
};
bool ck_take_get(const ProtobufCMessage *m, void **out);
bool ck_take_cas(const ProtobufCMessage *m, void **out);
void ck_drop_value(void *v);

/* Turn a final reply (err OK, or COMPACTED) into a result; false when out
 * of memory. The reply lives only during the call. */
typedef bool (*ck_take_cb)(const ProtobufCMessage *reply, void **result);

/* Free what a ck_take_cb made. */
typedef void (*ck_drop_cb)(void *result);

/* One call of a KvService (or LeaseService) method on arguments built by
 * the caller. */
struct ck_call
{
    const ProtobufCServiceDescriptor *service; /* NULL: KvService */
    const char *method;                        /* "Range", "Txn", ... */
    ProtobufCMessage *args;    /* its arguments (borrowed; the session and
                                  stale_ok fields are set here) */
    bool write;                /* it may change the state: retries can make
                                  its outcome unknown */
    bool session;              /* a session write: client_id and request_id
                                  are set for each try */
    ck_take_cb take;           /* makes the result from the final reply */
    ck_drop_cb drop;           /* frees it */
    uint64_t compact_revision; /* out: of a COMPACTED reply (or 0) */
    bool retried;              /* out: an earlier try of a write may have
                                  been applied */
};

/**
 * Make one call to a final answer or the deadline, with the handle's lock
 * held: leader hints, retries, re-authentication, and for a session write
 * the session and its request id, as clerk_put.
 * @param result set to what take made of the final reply (CLERK_OK and
 *   CLERK_COMPACTED), else NULL
 * @return a clerk_error
 */
int ck_call(struct clerk *c, struct ck_call *k, void **result);

struct clerk_put_result;

/**
 * clerk_put_ex with a lease (0: none): clerk_put_ex and clerk_put_lease.
 */
int ck_put(struct clerk *c,
           const void *key,
           size_t key_len,
           const void *value,
           size_t value_len,
           uint64_t lease,
           unsigned flags,
           struct clerk_put_result **out);

/**
 * A new handle to the same cluster as @c, with the same options, user and
 * TLS context (borrowed: @c must outlive it), for a thread of its own.
 * @return CLERK_OK or CLERK_NOMEM
 */
int ck_clone(struct clerk *c, struct clerk **out);

/**
 * The fields of a protobuf message by name, for messages that share a
 * shape (err, message, leader; client_id, request_id; stale_ok). NULL
 * when the message has no such field.
 */
void *ck_field(const ProtobufCMessage *m, const char *name);

/**
 * Set a range's limit and its CLERK_RANGE_* flags.
 */
void ck_range_flags(Raftkv__RangeArgs *r, uint64_t limit, unsigned flags);

/**
 * The wire form of a transaction builder (txn.c), owned by it: valid until
 * the builder changes or is freed. Tests read it to check the builder.
 */
const Raftkv__TxnArgs *ck_txn_args(const struct clerk_txn *t);

/** Whether a transaction builder holds a put or a delete (nested ones
 * included): one that does not is served as a read. */
bool ck_txn_writes(const struct clerk_txn *t);

/**
 * Count one try of a retry loop (op.c's, clerk.c's admin, member, auth,
 * transfer and snapshot loops, watch.c's stream) and say whether the loop
 * ends at once: every server refused the connection, @run tries in a row,
 * and none ever answered the handle (wrong addresses, or the cluster is not
 * running). A handle that was served before rides out a restart of every
 * node until its deadline. Without the lock.
 * @param run the loop's refused tries in a row (start it at 0)
 * @param t what the try came to (an answer marks the handle as served)
 * @return true when the loop ends with CLERK_UNAVAILABLE; ck_refused_text
 *   says why
 */
bool ck_tried(struct clerk *c, size_t *run, enum ck_try t);

/* What a call that failed with rpc status @status came to: no connection
 * made (RPC_E_UNAVAILABLE), refused before it started (the server
 * answered: RPC_E_OVERLOADED, RPC_E_DEADLINE_EXCEEDED), or no answer. */
enum ck_try ck_try_of_status(int status);

/* ck_tried, taking the handle's lock (watch.c). */
bool ck_tried_locked(struct clerk *c, size_t *run, enum ck_try t);

/* Why a loop ended on ck_tried, in one clause: "no server accepted a
 * connection (all 3 refused: is the cluster running, at these
 * addresses?)". */
void ck_refused_text(const struct clerk *c, char *out, size_t len);

/* Milliseconds of CLOCK_MONOTONIC; a sleep of @ms. */
uint64_t ck_now_ms(void);
void ck_sleep_ms(uint64_t ms);

/* Servers of the handle (watch.c makes connections of its own). */
size_t ck_n_servers(struct clerk *c);
/* The server the handle tries first (the last leader it found). */
size_t ck_preferred_server(struct clerk *c);
/* "host:port" of server i. */
const char *ck_server_addr(struct clerk *c, size_t i);
/* A new blocking channel to server i, with the handle's TLS and auth
 * token (authenticating first when the handle has a user and no token);
 * NULL when out of memory. Takes the handle's lock. */
struct rpc_channel *ck_channel_new(struct clerk *c, size_t i);
/* The server a leader hint's address names (one outside the handle's list
 * is added to it), as the handle's calls follow hints; false when none.
 * Takes the handle's lock. */
bool ck_server_of_addr(struct clerk *c, const char *addr, size_t *out);
/* Server i answered as the leader: the handle tries it first from now on.
 * Takes the handle's lock. */
void ck_found_leader(struct clerk *c, size_t i);
/* A server refused the handle's token (expired): the next channel made
 * (ck_channel_new) authenticates again. Takes the handle's lock. */
void ck_forget_token(struct clerk *c);
/* A KvError as a clerk_error. */
int ck_error_of(int kv_err);
/* The handle's deadline per operation, ms. */
unsigned ck_deadline_ms(struct clerk *c);
/* The handle's deadline per call to one server, ms. */
unsigned ck_attempt_ms(struct clerk *c);
/* Set the handle's clerk_errmsg. */
void ck_set_errmsg(struct clerk *c, const char *msg);
/* The same, formatted; every write of c->errmsg goes through here (under
 * errmsg_lock, so that clerk_errmsg reads it race-free). */
void ck_errmsgf(struct clerk *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* clerk_lock / clerk_campaign (value) that also gives up, as on a
 * timeout (CLERK_TIMEOUT, out of the line), once *stop is set (kvctl's
 * SIGINT). */
#include <signal.h>
struct clerk_lock;
int ck_lock_take(struct clerk *c,
                 const void *name,
                 size_t name_len,
                 uint64_t lease,
                 const void *value,
                 size_t value_len,
                 unsigned timeout_ms,
                 const volatile sig_atomic_t *stop,
                 struct clerk_lock **out);

/* A lease's keep-alive stream (LeaseService.LeaseKeepAliveStream), on a
 * connection of its own to the leader, kept open across renewals (lease.c;
 * the background keep-alive and kvctl lease keep-alive use it). */
struct ck_keepalive;

/* Has the caller given up (kvctl's SIGINT, clerk_lease_keepalive_stop)? */
typedef bool (*ck_stop_cb)(void *arg);

/**
 * Make a keep-alive stream for lease @id on handle @c (borrowed; used from
 * one thread at a time). Connects at the first renewal.
 * @param stop checked while a renewal waits (NULL: never stop early)
 * @return CLERK_OK or CLERK_NOMEM
 */
int ck_keepalive_open(struct clerk *c,
                      uint64_t id,
                      ck_stop_cb stop,
                      void *stop_arg,
                      struct ck_keepalive **out);

/**
 * Renew the lease once, to a final answer or @budget_ms: over the open
 * stream, or a new one to the leader (found as the handle's calls find
 * it: the handle's preferred server, NOT_LEADER hints, the next server
 * after a broken stream or a silent node, with a pause after every
 * server failed in a row). Servers that do not know the stream are
 * renewed with the unary LeaseKeepAlive instead.
 * @param ttl_out the TTL it has now (seconds), on CLERK_OK
 * @param sent_out when (ck_now_ms) the renewal that succeeded was sent:
 *   the lease lives at least its TTL from then, on CLERK_OK
 * @return CLERK_OK, CLERK_LEASE_NOT_FOUND (it is gone), CLERK_TIMEOUT (no
 *   leader renewed it within budget_ms, or stop said so), or what the
 *   cluster refused it with (CLERK_UNAUTHENTICATED, ...); clerk_errmsg of
 *   the handle says why
 */
int ck_keepalive_renew(struct ck_keepalive *k,
                       unsigned budget_ms,
                       int64_t *ttl_out,
                       uint64_t *sent_out);

/* Close the stream and free it (NULL: nothing). */
void ck_keepalive_close(struct ck_keepalive *k);

/* Events as a clerk_events_result (revision, compact_revision and
 * next_revision are the caller's to set); NULL when out of memory. */
struct clerk_events_result *ck_events_of(Raftkv__Event *const *events,
                                         size_t n,
                                         bool prev_kv);

#endif /* CLERK_INTERNAL_H */
