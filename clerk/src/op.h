/* op.h: one operation of libclerk's retry state machine (op.c), as the
 * blocking calls and the async API (async.c) start it. Private to clerk/. */
#ifndef CLERK_OP_H
#define CLERK_OP_H

#include <stdbool.h>
#include <stdint.h>

#include "clerk/clerk.h"
#include "internal.h"

/* What the async API hands its callback (enum reply_kind says which
 * field of clerk_async_reply a result fills). */
enum reply_kind {
    KIND_NONE,
    KIND_GET,
    KIND_CAS,
    KIND_PUT,
    KIND_DELETE,
    KIND_RANGE,
    KIND_TXN,
};

/* What one call to one server said. */
struct answer
{
    bool replied;              /* a KV reply came (else rpc failure) */
    int rpc_status;            /* rpc_last_status() when not replied */
    char rpc_error[300];       /* rpc_last_error() */
    int err;                   /* KvError */
    char leader_addr[300];     /* hint address */
    char message[300];         /* the server's message */
    void *result;              /* what the op's take made */
    uint64_t compact_revision; /* of a COMPACTED reply */
};

/* What an operation ended with, for its done callback. */
struct outcome
{
    void *result;              /* the take's result (the callback may take
                                  it: set NULL), else NULL */
    uint64_t compact_revision; /* of a COMPACTED reply */
    bool retried;              /* an earlier try of a write may have been
                                  applied */
    const char *errmsg;        /* context ("" or the server's message) */
};

typedef void (*op_done_cb)(struct ck_op *op, int rv, struct outcome *o);

/* One operation, from its start to its one done callback. */
/* What a server did during an op (struct ck_op.seen), worst first. */
enum {
    CK_SEEN_UNKNOWN = 0,   /* not tried */
    CK_SEEN_REFUSED,       /* no connection made */
    CK_SEEN_OTHER_CLUSTER, /* answered for another cluster */
    CK_SEEN_SILENT,        /* connected, no answer in time */
    CK_SEEN_BUSY,          /* answered without starting the call */
    CK_SEEN_NO_LEADER,     /* answered: it knows no leader */
    CK_SEEN_FOLLOWER,      /* answered: not the leader (a hint) */
    CK_SEEN_ANSWERED,      /* answered otherwise */
};

struct ck_op
{
    struct clerk *c;                      /* the handle */
    struct ck_op *prev, *next;            /* c->ops */
    const ProtobufCServiceDescriptor *sd; /* service */
    unsigned method;                      /* method index in sd */
    ProtobufCMessage *args;               /* arguments */
    bool owned;                           /* args: our copy (unpacked) */
    ProtobufCBinaryData cid_orig;         /* owned args: client_id as
                                             unpacked, put back to free */
    Raftkv__OpenSessionArgs open_args;    /* an OpenSession op's args */
    bool write;                           /* may change the state */
    bool session;                         /* a session write */
    bool open_session;                    /* OpenSession for parent */
    ck_take_cb take;                      /* makes the result */
    ck_drop_cb drop;                      /* frees it */
    op_done_cb done;                      /* told the outcome, once */
    void *done_arg;                       /* for done */
    enum reply_kind kind;                 /* async: the result's field */
    clerk_async_cb ucb;                   /* async: the caller's callback */
    void *uarg;                           /* its argument */
    struct clerk_async *ua;               /* async: the handle */
    struct ck_session *sess;              /* a session write's session */
    uint64_t request_id;                  /* its request id */
    struct ck_op *parent;                 /* OpenSession: the waiting write */
    struct ck_op *child;                  /* a write: its OpenSession op */
    bool session_retried;                 /* went again in a new session */
    unsigned deadline_ms;                 /* of a run */
    uint64_t deadline;                    /* ck_now_ms() it ends at */
    uint64_t backoff;                     /* next pause, ms */
    uint64_t sent_us;                     /* when its current try went */
    uint64_t trace_id;                    /* RpcHeader.trace_id of all its
                                                                tries (servers log it) */
    size_t i;                             /* server tried now */
    size_t failures;                      /* servers failed in a row */
    size_t hops;                          /* hints followed in a row */
    size_t unknown_method;                /* servers without the method */
    unsigned shed;                        /* tries the server did not start
                                             (OVERLOADED, DEADLINE_EXCEEDED) */
    bool maybe_applied;                   /* an earlier try may have been
                                             applied */
    bool maybe_started;                   /* a try reached a server that may
                                             have started it (read or
                                             write) */
    bool reauthenticated;                 /* authenticated once again */
    struct ck_op *auth_next;              /* waiting for c->auth_op */
    bool auth_waiting;                    /* in that list */
    bool in_rpc;                          /* a closure of ours is pending */
    bool zombie;                          /* ended: freed by its closure */
    struct event *timer;                  /* backoff */
    struct event *hedge_timer;            /* a stale read's backup request
                                             (CLERK_READ_STALE_HEDGED) */
    bool hedged;                          /* its backup request went */
    bool hedge_in_rpc;                    /* and its closure is pending */
    size_t hedge_i;                       /* to that server */
    uint64_t hedge_sent_us;               /* at that time */
    struct answer a;                      /* the last answer */
    char last[400];                       /* the last failure */
    char failed[400];                     /* a leader's INTERNAL answer */
    uint8_t seen[CK_MAX_SERVERS];         /* what each server last did
                                             (CK_SEEN_*) */
    size_t refused_run;                   /* tries in a row on which no
                                             connection was made */
    char errmsg[512];                     /* context of the outcome */
};

/**
 * Make an operation of @k, not started yet (ck_op_run): its args are
 * copied when @copy, else borrowed until @done runs.
 * @return CLERK_OK, CLERK_CLOSED (the handle is closing), CLERK_INVALID
 *   (no such method) or CLERK_NOMEM; done is never called then
 */
int ck_op_create(struct clerk *c,
                 const struct ck_call *k,
                 bool copy,
                 op_done_cb done,
                 void *done_arg,
                 struct ck_op **out);

/* Start an op: from here its done is called exactly once. */
void ck_op_run(struct ck_op *op);

/* Is an async call capturing ck_call on this thread (async.c)? */
bool ck_capturing(void);

/* Start @k as the captured async call instead of running it.
 * @return what starting it returned */
int ck_capture_start(struct ck_call *k);

#endif /* CLERK_OP_H */
