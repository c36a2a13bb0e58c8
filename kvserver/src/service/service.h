/* service.h: what clients call (KvService, LeaseService, AdminService,
 * AuthService, /metrics), built on the node's API (node.h); private to
 * kvserver.
 *
 * Each service is a file with an init function that kv_services_open calls:
 * it fills its rpc service table or the slots of another one, keeps its
 * state in struct kv_services, and registers with the node
 * (node_subscribe) for the broadcasts it needs. Calls that wait embed a
 * node waiter (node_propose, node_read_begin). The node knows none of
 * them by name. */
#ifndef KVSERVER_SERVICE_H
#define KVSERVER_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node.h"
#include "quota.h"

struct evhttp;
struct auth_cache;
struct auth_worker;
struct admin_transfer;
struct lease_clock;
struct kv_count_job;

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

/* The services of one node and their state. */
struct kv_services
{
    struct kv_node *node;                     /* the node they serve */
    Raftkv__KvService_Service kv_svc;         /* KvService (kv.c) */
    Raftkv__AdminService_Service admin_svc;   /* AdminService (admin.c, with
                                                 fault.c and backup.c) */
    Raftkv__AdminService_Service admin_inner; /* admin handlers behind the
                                                 root check of admin_svc */
    Raftkv__AuthService_Service auth_svc;     /* AuthService (auth.c) */
    struct auth_cache *auth_cache;            /* recent checks (auth.c) */
    struct auth_worker *auth_worker;          /* hashes and checks passwords
                                                 off the loop (auth.c) */
    struct admin_transfer *transfers;         /* TransferLeader calls waiting
                                                 for leadership to move */
    struct kv_backup backups[KV_MAX_BACKUPS]; /* snapshot reads (backup.c) */
    uint64_t backup_seq;                      /* for their ids */
    struct kv_quota quota;                    /* --quota-bytes (quota.c) */
    Raftkv__LeaseService_Service lease_svc;   /* LeaseService (lease.c) */
    struct lease_clock *lease_clock;          /* the leader's time of every
                                                 lease (lease.c) */
    struct evhttp *http;    /* serves /metrics (--metrics-addr) */
    uint64_t http_requests; /* /metrics and /health requests */
    Raftkv__WatchService_Service watch_svc; /* WatchService (watch.c) */
    struct watch_hub *watch;                /* its watches */
    struct kv_count_job *counts; /* Range counts over many turns (kv.c) */
    struct compact_steps *compact_chains; /* client compactions waiting
                                             for their next step (kv.c) */
    bool compacting;             /* the leader's compaction is in flight */
    uint64_t compact_checked_ms; /* when the leader last looked (kv.c) */
};

/* The services that hold a service table (field: kv_svc, admin_svc, ...). */
#define services_of(svc, field) \
    ((struct kv_services *)((char *)(svc)-offsetof(struct kv_services, field)))

/**
 * Make every service of node @n, register it with the node and add its
 * rpc services to the node's client server. Call after kv_node_open and
 * before kv_node_run.
 * @param n the node
 * @param out the services, set even on failure (NULL only without
 *   memory): the node may hold subscriptions to them, so free them with
 *   kv_services_free only after kv_node_close
 * @return 0, or -1 after printing (or logging) why
 */
int kv_services_open(struct kv_node *n, struct kv_services **out);

/* Free what kv_services_open made (NULL: nothing). */
void kv_services_free(struct kv_services *s);

/* kv.c: KvService */
int kv_service_init(struct kv_services *s);

/* lease.c: LeaseService, and the leader's expiry of leases */
int lease_service_init(struct kv_services *s);
/* Free what lease_service_init made (after kv_node_close). */
void lease_service_free(struct kv_services *s);
/* Leases in this node's applied state (for /metrics). */
size_t lease_service_count(struct kv_services *s);
/* Keep-alive streams open now, and the renewals answered OK on them so
 * far (for /metrics). */
void lease_stream_stats(const struct kv_services *s,
                        uint64_t *streams,
                        uint64_t *renewals);

/* admin.c: AdminService Ping, Status and TransferLeader */
int admin_service_init(struct kv_services *s);

/* backup.c: AdminService.SnapshotRead, and kvserver --restore */
int backup_service_init(struct kv_services *s);
int kv_restore_file(const struct kv_node_config *cfg, const char *file);

/* fault.c: AdminService.Fault */
int fault_service_init(struct kv_services *s);

/* auth.c: AuthService, and the checks of KvService and AdminService calls
 * once auth is enabled. Call auth_service_init after the other services'
 * init (it puts the root check in front of AdminService's TransferLeader,
 * SnapshotRead and Fault). */
int auth_service_init(struct kv_services *s);
/* Whether the call's token allows @need on @key (NULL: any valid user).
 * Returns a KvError: OK, UNAUTHENTICATED, PERMISSION_DENIED or INTERNAL,
 * with msg saying what is missing. */
int auth_check_kv(struct kv_services *s,
                  void *closure_data,
                  const ProtobufCBinaryData *key,
                  enum kv_auth_need need,
                  char *msg,
                  size_t msg_size);
/* auth_check_kv for every key of a range (range_end empty: the key
 * alone; "\0": every key from key on): the user's permissions together
 * must cover all of it. */
int auth_check_range(struct kv_services *s,
                     void *closure_data,
                     const ProtobufCBinaryData *key,
                     const ProtobufCBinaryData *range_end,
                     enum kv_auth_need need,
                     char *msg,
                     size_t msg_size);
/* Whether the call's user has the role root (or auth is off), for @what
 * (in the message). Returns a KvError as auth_check_kv. */
int auth_check_root(struct kv_services *s,
                    void *closure_data,
                    const char *what,
                    char *msg,
                    size_t msg_size);

/* watch.c: WatchService */
int watch_service_init(struct kv_services *s);
void watch_service_free(struct kv_services *s);
/* Watches open now and events sent so far, for /metrics. */
void watch_stats(const struct kv_services *s,
                 uint64_t *watches,
                 uint64_t *events_sent);

/* quota.c: --quota-bytes, checked by the leader before it proposes a
 * write (kv.c). */
/**
 * May the leader propose this write under --quota-bytes? Deletes, session
 * opens and auth changes always may (they are how a user gets out of a
 * full store); on a follower or without a quota every write may (a
 * follower sends writes to the leader, which checks them). Counts the
 * refusal and logs when writes start being refused or are accepted again.
 * @param s the services
 * @param op RAFTKV__COMMAND__OP_*
 * @param cost about how many bytes the write adds (key and value)
 * @param msg out: why it was refused (the state, the quota, what to do)
 * @param msg_size size of msg
 * @return 0 (propose it), or RAFTKV__KV_ERROR__KV_NO_SPACE with @msg set
 */
int quota_check_write(struct kv_services *s,
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
uint64_t quota_state_bytes(struct kv_services *s);

/* metrics.c: /metrics and /health (--metrics-addr) */
int metrics_service_init(struct kv_services *s);

#endif /* KVSERVER_SERVICE_H */
