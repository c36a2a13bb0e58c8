/* node.h: a raftkv node: Raft core + rpc + LMDB on one event loop, and the
 * API the services (service/) are built on (private to kvserver).
 *
 * The node knows no service by name. A service reaches it two ways:
 *
 * - Waiters. A call that waits for the log embeds a waiter in its own
 *   request struct and hands it to the node: a write waiter
 *   (node_propose) is completed once its entry is applied, in index order,
 *   with the state machine's outcome; a read waiter (node_read_begin) once
 *   leadership is confirmed (ReadIndex) and the state has applied up to
 *   the read index, when the service serves the read from
 *   node_state_read. Each waiter's callback runs exactly once, on the loop
 *   thread, and the node no longer touches the waiter when it runs: the
 *   callback may free the struct that holds it.
 *
 * - Subscribers. node_subscribe(n, events, cb, arg) registers for the
 *   loop's broadcasts (enum node_event), run on the loop thread at the
 *   points of the turn that each event documents, in the order of
 *   registration.
 */
#ifndef KVSERVER_NODE_H
#define KVSERVER_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <proto/admin.pb-c.h>
#include <proto/kv.pb-c.h>
#include <proto/raft.pb-c.h>
#include <raft/raft.h>
#include <rpc/rpc.h>

#include "auth.h"
#include "install.h"
#include "sm.h"
#include "snap.h"
#include "stats.h"
#include "store.h"
#include "wal.h"

#define KV_MAX_NODES 9 /* nodes a --cluster list may name */
/* Members (voters and learners) of a configuration, peers of a node. */
#define KV_MAX_PEERS RAFT_MAX_MEMBERS
/* A member's context: its addresses (members.c). */
#define MEMBER_CTX_MAX 620
#define KV_MAX_VALUE   (4u << 20) /* largest value a client may write */
/* Largest Raft message args: one AppendEntries of a few entries (one may
 * hold a whole KV_MAX_VALUE) or one snapshot chunk. */
#define KV_PEER_MAX_ARGS (8u << 20)
/* Connections from one address that may be in the peer handshake at once
 * (members that passed it do not count). */
#define KV_PEER_HANDSHAKES_PER_SOURCE 16u
/* Entries in one AppendEntries: a leader sends at most max_append_bytes
 * (1 MiB, persist.c) / RAFT_ENTRY_OVERHEAD = 32768; more is refused
 * before it is unpacked (peer_precheck). */
#define KV_PEER_MAX_ENTRIES 65536u

struct event;
struct event_base;
struct evhttp;

/* Settings of a node (from the command line). */
struct kv_node_config
{
    uint64_t id;                        /* this node's id */
    size_t n_nodes;                     /* nodes in the cluster */
    uint64_t ids[KV_MAX_NODES];         /* their ids */
    char hosts[KV_MAX_NODES][256];      /* their client hosts */
    uint16_t ports[KV_MAX_NODES];       /* their client ports */
    char peer_hosts[KV_MAX_NODES][256]; /* their peer (Raft) hosts */
    uint16_t peer_ports[KV_MAX_NODES];  /* their peer ports */
    char peer_listen_host[256];         /* where this node listens for peers */
    uint16_t peer_listen_port;          /* (default: its own peer address) */
    char listen_host[256];              /* where it listens for clients */
    uint16_t listen_port;               /* (0: its own --cluster address) */
    const char *peer_secret_file;       /* the cluster's shared secret, or NULL
                                           (only a one-node cluster) */
    struct rpc_tls_options tls;         /* client listener TLS (cert_file NULL:
                                           plain TCP) */
    struct rpc_tls_options peer_tls;    /* peer TLS, mutual (cert_file NULL:
                                           plain TCP) */
    const char *data_dir;               /* LMDB environment directory */
    unsigned heartbeat_ms;              /* Raft heartbeat interval */
    unsigned election_ms;               /* Raft election timeout base */
    unsigned request_timeout_ms;   /* a write not applied by then: TIMEOUT */
    uint64_t snapshot_entries;     /* compact when the log holds more */
    uint64_t snapshot_trailing;    /* entries kept behind a compaction */
    size_t max_sessions;           /* bound of the session table */
    size_t map_size;               /* initial LMDB map size */
    uint64_t seed;                 /* randomness for the Raft core */
    unsigned state_commit_ms;      /* applied state committed this often */
    uint64_t wal_segment_bytes;    /* log segment rollover size */
    const char *metrics_addr;      /* HOST:PORT for /metrics (NULL: none) */
    bool fault_injection;          /* AdminService.Fault allowed */
    unsigned max_connections;      /* client connections at once (0: any) */
    unsigned max_per_source;       /* of them from one address (0: any) */
    unsigned max_inflight_conn;    /* calls in flight on one client
                                      connection: more are shed */
    unsigned max_inflight;         /* on all client connections together */
    unsigned slow_request_ms;      /* log calls slower than this (0: never) */
    unsigned frame_timeout_ms;     /* a frame (or unread replies) stuck this
                                      long closes the connection (0: never) */
    unsigned idle_timeout_ms;      /* idle client connections closed after
                                      this long (0: never) */
    size_t max_output;             /* unread reply bytes per connection */
    size_t max_buffered;           /* all client connections' buffers */
    uint64_t auth_token_ttl_s;     /* auth tokens valid this long (0: 300) */
    uint64_t quota_bytes;          /* the leader refuses writes that would
                                      grow the state past it (0: none) */
    uint64_t history_revisions;    /* the leader compacts the history down to
                                      this many revisions */
    uint64_t history_bytes;        /* and to this many bytes (0: no cap) */
    uint64_t max_delete_keys;      /* the leader refuses deletes of more
                                      keys in one write (0: no limit) */
    uint64_t compact_step_records; /* the leader compacts the history in
                                      entries of about this many events
                                      (0: any number in one) */
    uint64_t max_lease_keys;       /* the leader refuses a put that gives a
                                      lease more keys (0: no limit), and
                                      expires at most about this many keys
                                      in one write */
    uint64_t count_slice_keys;     /* a Range counts at most this many keys
                                      per loop turn (0: all at once) */
    int64_t lease_min_ttl_s;       /* shortest lease TTL, seconds: a grant
                                      asking less gets this */
    bool force_new_cluster;        /* start a cluster of this node alone
                                      from its data (disaster recovery) */
    bool join;                     /* not in the bootstrap configuration: it
                                      joins a running cluster (--join) and
                                      learns the configuration from its
                                      leader; --cluster gives only addresses */
};

/* Another node, as seen from this one. */
struct kv_peer
{
    uint64_t id;               /* its node id */
    char addr[300];            /* "host:port" */
    struct rpc_channel *ch;    /* our calls to it */
    ProtobufCService *raft;    /* RaftService over ch */
    struct snap_stream stream; /* snapshot being sent to it */
    bool stream_open;          /* stream is live */
    uint64_t stream_for;       /* the core's snapshot index it serves */
    uint64_t stream_id;        /* this production of it (random) */
    uint8_t *chunk;            /* last chunk sent, for a resend */
    size_t chunk_len;          /* its length */
    uint64_t chunk_offset;     /* its offset */
    bool chunk_done;           /* it ended the stream */
    bool chunk_valid;          /* chunk holds a sent chunk */
    uint64_t stream_logged;    /* ms of the last "sending" log line */
    uint64_t stream_used;      /* ms a chunk of a snapshot was last sent */
    uint64_t stream_began;     /* ms the current stream's first chunk went */
    uint64_t final_sent;       /* ms its final chunk was last sent */
    uint64_t chunk_answered;   /* ms it last answered a chunk */
};

/* A Raft request from a peer waiting for the core's response. */
struct kv_incoming
{
    ProtobufCClosure closure;        /* completes the RPC */
    void *closure_data;              /* its argument */
    enum raft_msg_type type;         /* request type */
    struct kv_incoming *prev, *next; /* node's list */
};

struct kv_node;
struct node_write_waiter;
struct node_read_waiter;

/**
 * A write waiter is done (see node_propose).
 * @param n the node
 * @param w the waiter (the node no longer holds it)
 * @param err a KvError: the outcome's (o->err) when applied, otherwise
 *   why not: WRONG_LEADER, UNAVAILABLE, NO_SPACE, TIMEOUT (outcome
 *   unknown), INTERNAL
 * @param o the state machine's outcome, valid during the call; NULL when
 *   the entry was not applied (or not known to be)
 * @param leader the leader to try instead (0: none known)
 * @param msg why it was not applied (NULL when applied)
 */
typedef void (*node_write_done_cb)(struct kv_node *n,
                                   struct node_write_waiter *w,
                                   int err,
                                   const struct kv_outcome *o,
                                   uint64_t leader,
                                   const char *msg);

/* A proposed command waiting to be applied; embedded in a service's
 * request. The caller sets done; the node the rest. */
struct node_write_waiter
{
    uint64_t index;                 /* where the core placed it */
    uint64_t term;                  /* in which term */
    uint64_t deadline;              /* ms: done with TIMEOUT after this */
    uint64_t proposed_ms;           /* when it went to the core */
    node_write_done_cb done;        /* called once, by the node */
    struct node_write_waiter *next; /* node's queue, in index order */
};

/**
 * A read waiter is ready (see node_read_begin).
 * @param n the node
 * @param w the waiter (the node no longer holds it)
 * @param err 0: serve the read now, from node_state_read; otherwise a
 *   KvError saying why it cannot be served here: WRONG_LEADER,
 *   UNAVAILABLE, TIMEOUT, SHUTTING_DOWN
 * @param leader the leader to try instead (0: none known)
 * @param msg why not (NULL when err is 0)
 */
typedef void (*node_read_ready_cb)(struct kv_node *n,
                                   struct node_read_waiter *w,
                                   int err,
                                   uint64_t leader,
                                   const char *msg);

/* A linearizable read waiting for the ReadIndex protocol; embedded in a
 * service's request (with what to read). The caller sets ready; the node
 * the rest. */
struct node_read_waiter
{
    uint64_t index;           /* serve once applied >= index (0: unknown) */
    bool confirmed;           /* the core confirmed leadership */
    uint64_t deadline;        /* ms: ready with TIMEOUT after this */
    uint64_t began_ms;        /* when node_read_begin took it */
    uint64_t caller_deadline; /* set by the caller before node_read_begin:
                                 the client's own deadline (ms, 0: none),
                                 when sooner than --request-timeout-ms */
    node_read_ready_cb ready; /* called once, by the node */
    uint64_t seq;             /* the node's number for it: its ReadIndex
                                 ctx (never reused, unlike an address) */
    struct node_read_waiter *prev, *next; /* node's list */
};

/* Reads in the order they began (so also in the order of their seq). */
struct node_read_list
{
    struct node_read_waiter *head, *tail;
};

/**
 * The loop's broadcasts, for node_subscribe (a mask of them). Each runs at
 * one point of the turn, on the loop thread.
 */
enum node_event {
    /* The applied index moved (to n->applied): once per turn, after the
     * turn's outcomes were handed to the write waiters and the reads
     * that became ready were served. */
    NODE_EV_APPLIED = 1u << 0,
    /* The role or the known leader changed (raft_role, raft_leader):
     * once per update of the core, after its log line. */
    NODE_EV_ROLE = 1u << 1,
    /* The periodic timer (every 50 ms), after the waiters past their
     * deadline were answered: time out what a service waits for. */
    NODE_EV_SWEEP = 1u << 2,
    /* Close every LMDB read transaction and snapshot stream now: the map
     * is about to grow, the environment to be reopened or closed. */
    NODE_EV_RELEASE_READERS = 1u << 3,
    /* Shutdown: answer every waiting call (UNAVAILABLE, SHUTTING_DOWN)
     * and stop threads; the rpc servers still exist. Once, before the
     * node fails its own waiters. */
    NODE_EV_STOPPING = 1u << 4,
};

/**
 * A broadcast to a subscriber.
 * @param n the node
 * @param ev the event (one of the subscriber's mask)
 * @param arg as given to node_subscribe
 */
typedef void (*node_event_cb)(struct kv_node *n, enum node_event ev, void *arg);

/* One registration of node_subscribe. */
struct node_subscriber
{
    unsigned events;  /* mask of enum node_event */
    node_event_cb cb; /* called for them */
    void *arg;        /* its argument */
};

#define NODE_MAX_SUBSCRIBERS 32

/* Outcome of one applied client entry in the current turn. */
struct kv_applied
{
    uint64_t index;            /* log index */
    uint64_t term;             /* its term */
    int op;                    /* RAFTKV__COMMAND__OP_* (0 for noop) */
    struct kv_outcome outcome; /* what it did */
};

struct kv_node
{
    struct kv_node_config cfg;          /* settings */
    uint64_t cluster_id;                /* random, made by the first leader
                                           (0 until this node learns it) */
    struct event_base *base;            /* the loop */
    struct rpc_server *server;          /* clients: KvService, AdminService */
    struct rpc_server *peer_server;     /* peers: RaftService only */
    struct rpc_peer_auth peer_auth;     /* our side of the peer handshake */
    struct rpc_tls *tls;                /* client listener's, or NULL */
    struct rpc_tls *peer_tls_in;        /* peer listener's, or NULL */
    struct rpc_tls *peer_tls_out;       /* our calls to peers', or NULL */
    struct event *sig_hup;              /* reloads the certificates */
    struct raft *raft;                  /* the consensus core */
    struct kv_store store;              /* LMDB */
    struct kv_peer peers[KV_MAX_PEERS]; /* every other member */
    size_t n_peers;                     /* entries in peers */
    uint64_t *removed;                  /* ids removed for good (applied) */
    size_t n_removed;                   /* entries in removed */
    struct event *removed_ev;           /* stops a node removed itself */
    uint64_t applied;                   /* state machine's applied index */
    uint64_t applied_term;              /* its term */
    uint64_t snap_index;                /* core snapshot index persisted */
    uint64_t stage_stream;              /* stream of the staged chunks */
    struct snap_check stage_check;      /* their stream checksum so far */
    struct kv_install build;            /* the state they build (install.h) */
    struct kv_wal wal;                  /* the Raft log and hard state */
    MDB_txn *state_txn;                 /* applies since the last commit */
    size_t state_ops, state_bytes;      /* entries applied in it, bytes */
    uint64_t durable_applied;           /* applied index of the last commit */
    uint64_t durable_term;              /* its term */
    uint64_t handed;                    /* last committed index handed out */
    uint64_t synced_applied;            /* applied index of a commit on
                                           disk for good (meta page
                                           flushed too) */
    uint64_t synced_term;               /* its term */
    bool meta_vouchable;                /* no LMDB sync failed since the
                                           last commit wrote its meta page:
                                           the next flush puts it on disk */
    bool state_synced;                  /* last commit fully synced */
    bool meta_async;                    /* LMDB's MDB_NOMETASYNC is on */
    uint64_t state_commits;             /* state commits so far */
    uint64_t state_commit_ms;           /* node_now_ms of the last one */
    struct event *state_ev;             /* commits the state when due */
    struct kv_metrics metrics;          /* counters and histograms */
    struct event *turn_ev;              /* runs a turn after the loop's I/O */
    struct event *tick_ev;              /* Raft timers */
    struct event *sweep_ev;             /* deadlines of client calls */
    struct event *retry_ev;             /* retries a write that failed */
    struct event *sig_term, *sig_int;   /* clean shutdown */
    bool frozen;                        /* an update could not be persisted */
    struct raft_update held;            /* that update */
    bool disk_full;                     /* the failure was a full disk */
    struct kv_incoming *incoming;       /* peers' requests in the core */
    struct node_write_waiter *writes, *writes_tail; /* proposed writes */
    struct node_read_list reads;       /* ReadIndex reads not confirmed */
    struct node_read_list reads_ready; /* confirmed, waiting for the
                                          applied state to reach them */
    uint64_t read_seq;                 /* the last read's seq */
    uint64_t apply_began_ms;           /* the last apply of committed
                                          entries began then */
    uint64_t apply_done_ms;            /* and ended then */
    struct event *serve_ev;            /* serves the reads a turn left */
    struct node_subscriber subs[NODE_MAX_SUBSCRIBERS]; /* node_subscribe */
    size_t n_subs;                                     /* entries in subs */
    uint64_t applied_told;                             /* n->applied of the last
                                                          NODE_EV_APPLIED */
    struct kv_applied *done; /* outcomes of this turn */
    size_t n_done, cap_done; /* entries in done / allocated */
    uint64_t last_compact;   /* applied index of the last compaction */
    bool stopping;           /* shutdown in progress */
    int exit_code;           /* process exit status when stopped */
    Raftkv__RaftService_Service raft_svc; /* RaftService implementation */
    uint64_t auth_gen;                    /* bumped by every applied auth
                                             change and snapshot: voids the
                                             auth checks services cache */
};

/* The node that holds a service implementation (field: raft_svc). */
#define node_of(svc, field) \
    ((struct kv_node *)((char *)(svc)-offsetof(struct kv_node, field)))

/* ---------------------------------------------------- the node's API */

/**
 * Make a node: open its data directory (restore the log and the state),
 * its rpc servers (not listening yet) and its peer channels.
 * @param cfg settings (copied)
 * @param out the node, on success
 * @return 0, or -1 after printing why to stderr (nothing is left)
 */
int kv_node_open(const struct kv_node_config *cfg, struct kv_node **out);

/**
 * Listen for clients and peers and run the loop until the node stops
 * (SIGTERM, SIGINT, or an error that stops it). Services are registered
 * before (kv_services_open).
 * @return the process exit status: 0 after a clean stop, 1 otherwise
 */
int kv_node_run(struct kv_node *n);

/**
 * Stop and free a node: NODE_EV_STOPPING to the subscribers, the waiters
 * answered, the applied state committed, NODE_EV_RELEASE_READERS, the
 * files closed. The subscribers' arguments must live until it returns.
 */
void kv_node_close(struct kv_node *n);

/**
 * Propose a command and wait for its entry to be applied. On success the
 * node holds @w until it calls w->done: with the outcome once the entry
 * is applied (node_write_done_cb), or TIMEOUT after
 * --request-timeout-ms, or WRONG_LEADER when another leader replaced the
 * entry, or TIMEOUT at shutdown. Waiters complete in index order.
 * @param n the node
 * @param cmd the command (packed here; borrowed for the call)
 * @param w the waiter, w->done set; index, term and deadline are set here
 * @return 0 when proposed; otherwise a KvError (WRONG_LEADER,
 *   UNAVAILABLE, NO_SPACE, INTERNAL), after w->done ran with it
 */
int node_propose(struct kv_node *n,
                 const Raftkv__Command *cmd,
                 struct node_write_waiter *w);

/**
 * Begin a linearizable read (ReadIndex, no log write). On success the
 * node holds @w until it calls w->ready: with 0 once this node's
 * leadership was confirmed and it applied up to the read index (serve
 * the read then, from node_state_read), or with WRONG_LEADER or
 * UNAVAILABLE (leadership lost), TIMEOUT (--request-timeout-ms) or
 * SHUTTING_DOWN.
 * @param n the node
 * @param w the waiter, w->ready set; the rest is set here
 * @return 0 when begun; otherwise a KvError (WRONG_LEADER, UNAVAILABLE),
 *   after w->ready ran with it
 */
int node_read_begin(struct kv_node *n, struct node_read_waiter *w);

/**
 * Register @cb for the broadcasts in @events (a mask of enum node_event).
 * Subscribers are called in the order they registered and stay until the
 * node is freed.
 * @return 0, or -1 (logged) when NODE_MAX_SUBSCRIBERS are registered
 *   already
 */
int node_subscribe(struct kv_node *n,
                   unsigned events,
                   node_event_cb cb,
                   void *arg);

/**
 * Propose a membership change (leader only) and wait, as node_propose,
 * for its configuration entry to be applied (w->done with 0, or TIMEOUT,
 * WRONG_LEADER).
 * @return 0 when proposed (w is held); otherwise a raft error
 *   (RAFT_NOTLEADER, RAFT_ETRANSFER, RAFT_ECHANGE, RAFT_EINVAL, ...) with
 *   @why filled, and w->done not called
 */
int node_propose_change(struct kv_node *n,
                        const struct raft_change *c,
                        struct node_write_waiter *w,
                        char *why,
                        size_t why_len);

/* Write waiters not done yet. */
size_t node_writes_pending(const struct kv_node *n);

/* Turn the loop once more soon (after the current callbacks). */
void node_schedule_turn(struct kv_node *n);
/* Give the core the current time. Called before every input, so that timers
 * the input resets (a follower's election timer on a heartbeat) count from
 * now, not from the core's last tick. */
void node_clock(struct kv_node *n);
uint64_t node_now_ms(void);
/* "host:port" of a node's client address (for leader hints). */
const char *node_peer_addr(struct kv_node *n, uint64_t id);
/* A member's client (or, with @peer, Raft) address "host:port": from its
 * configuration context, else from the flags; "" when unknown. */
void node_member_addr(const struct kv_node *n,
                      uint64_t id,
                      bool peer,
                      char *out,
                      size_t len);
/* Was @id removed from the cluster for good (never a member again)? */
bool node_removed(const struct kv_node *n, uint64_t id);
/* The applied state to read: the open state transaction (what was applied
 * since the last state commit), or a read transaction of the last commit.
 * NULL (and *rc, if given, the LMDB error) when none can begin. Hand it
 * back with node_state_done, which ends only a transaction it began. */
MDB_txn *node_state_read(struct kv_node *n, int *rc);
void node_state_done(struct kv_node *n, MDB_txn *txn);
/* Commit the applied state now (full: with a full sync).
 * @return 0, or a KV_STORE_* error with n->store.errmsg set */
int node_state_commit(struct kv_node *n, bool full);
/* A read transaction of the applied state as it is now, which the loop
 * may keep across turns (end it with mdb_txn_abort; NODE_EV_RELEASE_READERS
 * says when it must end): the open state transaction is committed first,
 * as its timer would. -1 when it cannot be had at n->applied (a failed
 * commit applies again from the log, state_due). */
int node_state_read_now(struct kv_node *n, MDB_txn **txn);

/* ------------------------------------------------ node/ internals */

/* node.c */
/* An applied configuration entry removed this node: it stops soon (once
 * its last messages, a leader's hand-off, are out). */
void node_removed_self(struct kv_node *n, uint64_t index);
/* The cluster id became known (from the log or a snapshot). */
void node_set_cluster_id(struct kv_node *n, uint64_t id);

/* wait.c: the waiters' and subscribers' side the loop drives */
/* Hand this turn's outcomes (n->done) to the write waiters, in index
 * order; answer those at applied indexes without an outcome here. */
void node_complete_writes(struct kv_node *n);
/* The core answered read requests: note their index, or fail them. */
void node_confirm_reads(struct kv_node *n,
                        const struct raft_read *reads,
                        size_t n_reads);
/* Call ready on the confirmed reads the applied state has reached, at
 * most NODE_READS_PER_TURN of them: the rest are served from serve_ev,
 * after the loop has looked at its sockets and timers again. */
void node_serve_reads(struct kv_node *n);

/* For a slow call's log line (rpc_call_note): where a write's time went
 * (raft commit: proposed to applying; apply), or a read's (its ReadIndex
 * round and the wait for the applied state). */
void node_note_write(struct kv_node *n,
                     const struct node_write_waiter *w,
                     bool applied,
                     void *call);
void node_note_read(const struct node_read_waiter *w, void *call);

/* Reads served in one go before the loop gets a turn. */
#define NODE_READS_PER_TURN 4096u
/* Time out the waiters past their deadline. */
void node_sweep_waiters(struct kv_node *n);
/* Answer every waiter (shutdown): writes TIMEOUT, reads @err. */
void node_fail_waiters(struct kv_node *n, int err, const char *why);
/* Call the subscribers of @ev. */
void node_publish(struct kv_node *n, enum node_event ev);

/* persist.c: the log (wal.c) and the applied state (LMDB) on disk */
int node_restore(struct kv_node *n);
int node_persist(struct kv_node *n, const struct raft_update *u);
int node_persist_growing(struct kv_node *n, const struct raft_update *u);
void node_state_due(struct kv_node *n);
void node_maybe_compact(struct kv_node *n);
void node_clear_applied(struct kv_node *n);

/* members.c: membership as the node sees it */
size_t members_ctx_format(char *buf,
                          size_t len,
                          const char *peer,
                          const char *client);
bool members_split_addr(const char *addr,
                        char *host,
                        size_t hlen,
                        uint16_t *port);
/* "host:port" (IPv6 in brackets) that the flags (--cluster, --peers)
 * give node @id, or "" when they name no such node. */
void members_flag_addr(const struct kv_node_config *c,
                       uint64_t id,
                       bool peer,
                       char *out,
                       size_t len);
/* The bootstrap configuration from the flags (none with --join). */
int members_bootstrap(const struct kv_node_config *c,
                      struct raft_member *m,
                      char (*ctx)[MEMBER_CTX_MAX],
                      size_t *n);
/* Make the peers follow the latest configuration. */
void node_sync_peers(struct kv_node *n);
/* The applied configuration (malloc'ed, NULL: the bootstrap's) and the
 * removed ids (into n->removed), from the state. */
int members_load(struct kv_node *n,
                 MDB_txn *txn,
                 void **conf,
                 size_t *conf_len);
/* A snapshot installed: its configuration is @conf. */
int members_install(struct kv_node *n,
                    MDB_txn *txn,
                    const void *conf,
                    size_t len);
/* Apply a configuration entry; *self_removed when it removes this node. */
int members_apply(struct kv_node *n,
                  MDB_txn *txn,
                  const struct raft_entry *e,
                  bool *self_removed);
/* Forget the configuration and removed ids (a backup restored into
 * another cluster). */
int members_forget(struct kv_store *st, MDB_txn *txn);

/* peer.c: Raft RPCs in both directions */
void peer_service_init(struct kv_node *n);
void peer_send(struct kv_node *n, const struct raft_message *m);
/* rpc precheck of the peer server: bounds what is unpacked (see
 * rpc_precheck_cb). */
bool peer_precheck(const ProtobufCServiceDescriptor *service,
                   const ProtobufCMethodDescriptor *method,
                   const uint8_t *args,
                   size_t len,
                   char *why,
                   size_t why_len,
                   void *arg);
void peer_respond(struct kv_node *n, const struct raft_message *m);
void peer_fail_incoming(struct kv_node *n, const char *why);
void peer_close_streams(struct kv_node *n);

/* A compaction waits while a snapshot is being sent: it would change the
 * snapshot the core sends, and the follower would start over (a large
 * state under writes would never get across); and until the follower
 * holds the entries written meanwhile, which the compaction would drop
 * (it would need another snapshot). It waits while a chunk was sent in
 * the last PEER_SNAPSHOT_HOLD_MS to a follower that still needs the
 * snapshot or those entries, and that takes part: it answered in the last
 * PEER_SNAPSHOT_HOLD_QUIET heartbeat rounds; or it answered a chunk of
 * this stream in the last PEER_SNAPSHOT_HOLD_QUIET_MS, the final one not
 * sent yet (writing a large chunk may keep it silent); or it answered
 * this stream and was then sent the final chunk, which it may take
 * PEER_SNAPSHOT_HOLD_ROUNDS rounds to sync and install. A follower cut
 * off (one that never answered, or went silent) holds nothing back. And
 * only while the log holds fewer than PEER_SNAPSHOT_HOLD_LOG times
 * --snapshot-entries entries. */
#define PEER_SNAPSHOT_HOLD_MS       30000
#define PEER_SNAPSHOT_HOLD_QUIET    5
#define PEER_SNAPSHOT_HOLD_QUIET_MS 5000
#define PEER_SNAPSHOT_HOLD_ROUNDS   300
#define PEER_SNAPSHOT_HOLD_LOG      50

/** Whether a snapshot is being sent to a follower that needs it, or the
 * entries from @keep_from on (above). */
bool peer_sending_snapshot(struct kv_node *n, uint64_t keep_from);

#endif /* KVSERVER_NODE_H */
