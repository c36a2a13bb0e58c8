/* node.h: a raftkv node: Raft core + rpc + LMDB on one event loop (private). */
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
#include "sm.h"
#include "snap.h"
#include "store.h"
#include "metrics.h"
#include "quota.h"
#include "wal.h"

#define KV_MAX_NODES 9
#define KV_MAX_VALUE (4u << 20) /* largest value a client may write */
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
    const char *peer_secret_file;       /* the cluster's shared secret, or NULL
                                           (only a one-node cluster) */
    struct rpc_tls_options tls;         /* client listener TLS (cert_file NULL:
                                           plain TCP) */
    struct rpc_tls_options peer_tls;    /* peer TLS, mutual (cert_file NULL:
                                           plain TCP) */
    const char *data_dir;               /* LMDB environment directory */
    unsigned heartbeat_ms;              /* Raft heartbeat interval */
    unsigned election_ms;               /* Raft election timeout base */
    unsigned request_timeout_ms; /* a write not applied by then: TIMEOUT */
    uint64_t snapshot_entries;   /* compact when the log holds more */
    uint64_t snapshot_trailing;  /* entries kept behind a compaction */
    size_t max_sessions;         /* bound of the session table */
    size_t map_size;             /* initial LMDB map size */
    uint64_t seed;               /* randomness for the Raft core */
    unsigned state_commit_ms;    /* applied state committed this often */
    uint64_t wal_segment_bytes;  /* log segment rollover size */
    const char *metrics_addr;    /* HOST:PORT for /metrics (NULL: none) */
    bool fault_injection;        /* AdminService.Fault allowed */
    unsigned max_connections;    /* client connections at once (0: any) */
    unsigned max_per_source;     /* of them from one address (0: any) */
    unsigned frame_timeout_ms;   /* a frame (or unread replies) stuck this
                                    long closes the connection (0: never) */
    unsigned idle_timeout_ms;    /* idle client connections closed after
                                    this long (0: never) */
    size_t max_output;           /* unread reply bytes per connection */
    size_t max_buffered;         /* all client connections' buffers */
    uint64_t auth_token_ttl_s;   /* auth tokens valid this long (0: 300) */
    uint64_t quota_bytes;        /* the leader refuses writes that would
                                    grow the state past it (0: none) */
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
};

/* A Raft request from a peer waiting for the core's response. */
struct kv_incoming
{
    ProtobufCClosure closure;        /* completes the RPC */
    void *closure_data;              /* its argument */
    enum raft_msg_type type;         /* request type */
    struct kv_incoming *prev, *next; /* node's list */
};

/* A snapshot being read out by kvctl snapshot save (backup.c). */
#define KV_MAX_BACKUPS 4
struct kv_backup
{
    uint64_t id;          /* stream id given to the client (0: slot free) */
    struct snap_stream s; /* the stream */
    bool open;            /* s is live */
    uint64_t index, term; /* the state's applied index and term */
    uint8_t *last;        /* the last chunk sent, for a resend */
    size_t last_len;      /* its length */
    uint64_t last_off;    /* its offset */
    bool last_done;       /* it ended the stream */
    uint64_t used;        /* ms of the last call */
};

/* A client write waiting to be applied. */
struct kv_pending_write
{
    uint64_t index;                /* where the core placed it */
    uint64_t term;                 /* in which term */
    uint64_t deadline;             /* ms: answer TIMEOUT after this */
    int op;                        /* RAFTKV__COMMAND__OP_* */
    ProtobufCClosure closure;      /* completes the client's call */
    void *closure_data;            /* its argument */
    struct kv_pending_write *next; /* queue in index order */
};

/* A linearizable read in progress. */
struct kv_pending_read
{
    uint64_t index;           /* serve once applied >= index (0: unknown) */
    uint64_t deadline;        /* ms */
    bool confirmed;           /* the core confirmed leadership */
    ProtobufCClosure closure; /* completes the client's call */
    void *closure_data;       /* its argument */
    uint8_t *key;             /* copy of the key */
    size_t key_len;           /* its length */
    struct kv_pending_read *prev, *next; /* node's list */
};

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
    struct kv_peer peers[KV_MAX_NODES]; /* every other node */
    size_t n_peers;                     /* entries in peers */
    uint64_t applied;                   /* state machine's applied index */
    uint64_t applied_term;              /* its term */
    uint64_t snap_index;                /* core snapshot index persisted */
    uint64_t stage_stream;              /* stream of the staged chunks */
    struct snap_check stage_check;      /* their stream checksum so far */
    struct kv_wal wal;                  /* the Raft log and hard state */
    MDB_txn *state_txn;                 /* applies since the last commit */
    size_t state_ops, state_bytes;      /* entries applied in it, bytes */
    uint64_t durable_applied;           /* applied index of the last commit */
    uint64_t durable_term;              /* its term */
    uint64_t handed;                    /* last committed index handed out */
    bool state_synced;                  /* last commit fully synced */
    bool meta_async;                    /* LMDB's MDB_NOMETASYNC is on */
    uint64_t state_commits;             /* state commits so far */
    struct event *state_ev;             /* commits the state when due */
    struct kv_metrics metrics;          /* counters and histograms */
    struct kv_quota quota;              /* --quota-bytes (quota.c) */
    struct kv_backup backups[KV_MAX_BACKUPS]; /* snapshot reads */
    uint64_t backup_seq;                      /* for their ids */
    struct evhttp *http;                      /* serves them (--metrics-addr) */
    struct event *turn_ev;            /* runs a turn after the loop's I/O */
    struct event *tick_ev;            /* Raft timers */
    struct event *sweep_ev;           /* deadlines of client calls */
    struct event *retry_ev;           /* retries a write that failed */
    struct event *sig_term, *sig_int; /* clean shutdown */
    bool frozen;                      /* an update could not be persisted */
    struct raft_update held;          /* that update */
    bool disk_full;                   /* the failure was a full disk */
    struct kv_incoming *incoming;     /* peers' requests in the core */
    struct kv_pending_write *writes, *writes_tail; /* client writes */
    struct kv_pending_read *reads;                 /* client reads */
    struct kv_applied *done;                       /* outcomes of this turn */
    size_t n_done, cap_done;          /* entries in done / allocated */
    uint64_t last_compact;            /* applied index of the last compaction */
    bool stopping;                    /* shutdown in progress */
    int exit_code;                    /* process exit status when stopped */
    Raftkv__KvService_Service kv_svc; /* KvService implementation */
    Raftkv__RaftService_Service raft_svc;     /* RaftService implementation */
    Raftkv__AdminService_Service admin_svc;   /* AdminService implementation */
    Raftkv__AuthService_Service auth_svc;     /* AuthService (auth_service.c) */
    Raftkv__AdminService_Service admin_inner; /* admin handlers behind the
                                                 root check of admin_svc */
    uint64_t auth_gen;                        /* bumped by every applied auth
                                                 change and snapshot: voids
                                                 the checks cached below */
    struct auth_cache *auth_cache;    /* recent checks (auth_service.c) */
    struct auth_worker *auth_worker;  /* hashes and checks passwords
                                         off the loop (auth_service.c) */
    struct admin_transfer *transfers; /* TransferLeader calls waiting for
                                         leadership to move (admin.c) */
};

/* The node that holds a service implementation (field: kv_svc, ...). */
#define node_of(svc, field) \
    ((struct kv_node *)((char *)(svc)-offsetof(struct kv_node, field)))

/* node.c */
int kv_node_run(const struct kv_node_config *cfg);
void node_schedule_turn(struct kv_node *n);
/* Give the core the current time. Called before every input, so that timers
 * the input resets (a follower's election timer on a heartbeat) count from
 * now, not from the core's last tick. */
void node_clock(struct kv_node *n);
uint64_t node_now_ms(void);
/* "host:port" of a node's client address (for leader hints). */
const char *node_peer_addr(struct kv_node *n, uint64_t id);
/* The cluster id became known (from the log or a snapshot). */
void node_set_cluster_id(struct kv_node *n, uint64_t id);

/* backup.c: snapshot save and restore */
void backup_service_init(struct kv_node *n);
void backup_sweep(struct kv_node *n);
void backup_close_all(struct kv_node *n);
int kv_restore_file(const struct kv_node_config *cfg, const char *file);

/* persist.c: the log (wal.c) and the applied state (LMDB) on disk */
int node_restore(struct kv_node *n);
int node_persist(struct kv_node *n, const struct raft_update *u);
int node_persist_growing(struct kv_node *n, const struct raft_update *u);
/* The applied state to read: the open state transaction (what was applied
 * since the last state commit), or a read transaction of the last commit.
 * NULL (and *rc, if given, the LMDB error) when none can begin. Hand it
 * back with node_state_done, which ends only a transaction it began. */
MDB_txn *node_state_read(struct kv_node *n, int *rc);
void node_state_done(struct kv_node *n, MDB_txn *txn);
int node_state_commit(struct kv_node *n, bool full);
void node_state_due(struct kv_node *n);
void node_maybe_compact(struct kv_node *n);
void node_clear_applied(struct kv_node *n);

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

/* client.c: KvService and AdminService */
void client_service_init(struct kv_node *n);
void client_answer_applied(struct kv_node *n);
void client_answer_reads(struct kv_node *n,
                         const struct raft_read *reads,
                         size_t n_reads);
void client_serve_ready_reads(struct kv_node *n);
void client_sweep(struct kv_node *n);
void client_fail_all(struct kv_node *n, int err, const char *why);

/* client.c: propose an auth change (Command.auth); its reply is an
 * AuthChangeReply, made by auth_reply_write. */
void client_propose_auth(struct kv_node *n,
                         const Raftkv__Command *cmd,
                         ProtobufCClosure closure,
                         void *data);

/* auth_service.c: AuthService, and the checks of KvService and
 * AdminService calls once auth is enabled. Call auth_service_init after
 * the other services' init (it puts the root check in front of
 * AdminService's TransferLeader, SnapshotRead and Fault). */
void auth_service_init(struct kv_node *n);
/* Stop the password worker and answer the calls waiting for it (UNAVAILABLE);
 * at shutdown, before the rpc server goes. */
void auth_service_stop(struct kv_node *n);
/* Whether the call's token allows @need on @key (NULL: any valid user).
 * Returns a KvError: OK, UNAUTHENTICATED, PERMISSION_DENIED or INTERNAL,
 * with msg saying what is missing. */
int auth_check_kv(struct kv_node *n,
                  void *closure_data,
                  const ProtobufCBinaryData *key,
                  enum kv_auth_need need,
                  char *msg,
                  size_t msg_size);
/* Answer an auth change: with @o (applied) its AuthError and message,
 * without it the node's KvError @err mapped to an AuthError. */
void auth_reply_write(struct kv_node *n,
                      ProtobufCClosure closure,
                      void *data,
                      int err,
                      const struct kv_outcome *o,
                      uint64_t leader,
                      const char *msg);

/* quota.c: --quota-bytes, checked by the leader before it proposes a
 * write (client.c). */
/**
 * May the leader propose this write under --quota-bytes? Deletes, session
 * opens and auth changes always may (they are how a user gets out of a
 * full store); on a follower or without a quota every write may (a
 * follower sends writes to the leader, which checks them). Counts the
 * refusal and logs when writes start being refused or are accepted again.
 * @param n the node
 * @param op RAFTKV__COMMAND__OP_*
 * @param cost about how many bytes the write adds (key and value)
 * @param msg out: why it was refused (the state, the quota, what to do)
 * @param msg_size size of msg
 * @return 0 (propose it), or RAFTKV__KV_ERROR__KV_NO_SPACE with @msg set
 */
int quota_check_write(struct kv_node *n,
                      int op,
                      size_t cost,
                      char *msg,
                      size_t msg_size);
/**
 * The applied state's size in bytes (kv_quota_state_bytes on the state
 * transaction), measured again only after entries were applied or the
 * state committed.
 * @return the size, or the last one measured when LMDB cannot be read
 */
uint64_t quota_state_bytes(struct kv_node *n);

/* fault.c: AdminService.Fault */
void fault_service_init(struct kv_node *n);

/* admin.c: AdminService.TransferLeader, and the leader's view in Status */
void admin_service_init(struct kv_node *n);
/* Answer the TransferLeader calls whose outcome is known (sweep timer). */
void admin_sweep(struct kv_node *n);
/* Answer every waiting TransferLeader call with UNAVAILABLE (shutdown). */
void admin_fail_all(struct kv_node *n, const char *why);
/* Leader only: set r->progress, valid until the next call. */
void admin_status_progress(struct kv_node *n, Raftkv__StatusReply *r);

#endif /* KVSERVER_NODE_H */
