/* store.h: the node's LMDB environment and its sub-databases (private). */
#ifndef KVSERVER_STORE_H
#define KVSERVER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include <raft/raft.h>

/* On-disk layout version, in meta "format": 1 had the log in LMDB, 2 the
 * first write-ahead log, 3 the log in checksummed sectors and sessions
 * that are opened through the log, 4 revisions (every key's value behind
 * its revisions, the history of changes, the store's revision in kvmeta),
 * 5 history events that say where the key's version before them is (for
 * a watch's prev_kv; events of format 4 are still read), and leases (the
 * leases and lease_keys databases: a kvserver that reads format 4 would
 * keep keys attached to leases that nothing ends, so it refuses a store of
 * format 5). A store of format 3 or 4 opens (st->format says which) for
 * the state machine to upgrade it in place (kv_sm_upgrade). */
#define KV_STORE_FORMAT      5
#define KV_STORE_FORMAT_OLD  3 /* still opened, to be converted */
#define KV_STORE_FORMAT_PREV 4 /* still opened, to be stamped 5 */

/* Leases that applied entries granted or ended since the lease service
 * last looked (state/lease.c notes them, service/lease.c takes them): in
 * memory only, a hint to read those leases again. */
struct kv_lease_news
{
    uint64_t *ids;    /* leases granted or ended (malloc'd) */
    size_t n, cap;    /* used, allocated */
    bool all;         /* too many to list, or a snapshot replaced the
                         state: read every lease again */
    uint64_t expired; /* leases ended by expiry since the store opened */
};

/* How many keys some leases have (state/lease.c): each counted from
 * lease_keys the first time it is asked for, then kept in step by every
 * attach and detach the applied state makes. In memory only, and
 * forgotten whenever applied changes may have been undone. */
struct kv_lease_counts
{
    uint64_t *ids;    /* open addressing, linear probing; 0: free */
    uint64_t *counts; /* keys attached to ids[i] */
    size_t cap, n;    /* slots (a power of two or 0), leases held */
};

/* Errors of the store (and of the state machine built on it). */
enum kv_store_error {
    KV_STORE_OK = 0,
    KV_STORE_EIO,       /* LMDB or system error: see errmsg */
    KV_STORE_ENOSPC,    /* the disk is full: nothing was written */
    KV_STORE_EMAPFULL,  /* the map is full: grow it and retry */
    KV_STORE_EIDENTITY, /* data directory of another cluster or node */
    KV_STORE_ECORRUPT,  /* stored data does not decode */
    KV_STORE_ENOMEM,    /* out of memory */
};

/* One LMDB environment: the applied state and the node's identity. The
 * Raft log and hard state are in the write-ahead log (wal.h). */
struct kv_store
{
    MDB_env *env;        /* the environment (data.mdb in dir) */
    MDB_dbi meta;        /* name -> value: identity, applied index */
    MDB_dbi kv;          /* the state machine: key -> value */
    MDB_dbi sessions;    /* client id -> last request and its outcome */
    MDB_dbi session_age; /* last index|client id -> (empty), for eviction */
    MDB_dbi staging;     /* offset -> chunk of an incoming snapshot */
    MDB_dbi auth;        /* users, roles, enabled flag, token key (auth.c) */
    MDB_dbi history;     /* revision|sub -> change (mvcc.c) */
    MDB_dbi kvmeta;      /* the state machine's own numbers: revision,
                            compaction (mvcc.c); in snapshots, unlike meta */
    MDB_dbi leases;      /* lease id -> its grant (lease.c) */
    MDB_dbi lease_keys;  /* lease id|key -> (empty): a lease's keys */
    struct kv_lease_news lease_news;     /* leases changed (in memory) */
    struct kv_lease_counts lease_counts; /* keys per lease (in memory) */
    uint64_t format;   /* KV_STORE_FORMAT, or an older one that opened
                          to be upgraded (KV_STORE_FORMAT_OLD or 4) */
    size_t map_size;   /* current map size in bytes */
    bool fatal;        /* LMDB said MDB_PANIC: reopen the environment */
    char dir[1024];    /* data directory */
    char errmsg[1200]; /* context of the last failure */
};

/* What the meta database holds. */
struct kv_meta
{
    uint64_t cluster_id;   /* 0 on a fresh store */
    uint64_t node_id;      /* 0 on a fresh store */
    uint64_t applied;      /* last index applied to kv and sessions */
    uint64_t applied_term; /* its term */
    uint64_t restoring;    /* 1 while kvserver --restore fills the store */
};

/**
 * Open (creating if needed) the environment in dir.
 * @param st the store to fill
 * @param dir the data directory; created if missing
 * @param map_size initial map size in bytes (0: 64 MiB); grows on demand
 * @return 0, or KV_STORE_EIO with st->errmsg naming the path and the error
 */
int kv_store_open(struct kv_store *st, const char *dir, size_t map_size);

/**
 * Mark the store as being of the current format (after an upgrade).
 * @return 0 or an error code
 */
int kv_store_set_format(struct kv_store *st, MDB_txn *txn);

/**
 * Close the environment.
 */
void kv_store_close(struct kv_store *st);

/**
 * Forget every count of keys per lease (state/lease.c, kv_lease_count):
 * call it whenever applied changes are undone (an aborted state or nested
 * transaction) or the state is replaced.
 */
void kv_lease_counts_forget(struct kv_store *st);

/**
 * Check that the store belongs to this node (and cluster, when both are
 * known); a fresh store is stamped with the node id, and with cluster_id
 * when it is not 0. A node learns its cluster id later, from the log
 * (Command.cluster_init) or a snapshot.
 * @param cluster_id the cluster id to check or stamp, or 0 for none
 * @return 0, KV_STORE_EIDENTITY (errmsg says whose it is), or an error
 */
int kv_store_claim(struct kv_store *st, uint64_t cluster_id, uint64_t node_id);

/**
 * kv_store_claim's checks, without stamping a fresh store (a node checks
 * at start, and stamps once it listens: a first start that fails leaves
 * the directory free for corrected flags).
 * @return 0, KV_STORE_EIDENTITY (errmsg says whose it is), or an error
 */
int kv_store_check_identity(struct kv_store *st,
                            uint64_t cluster_id,
                            uint64_t node_id);

/**
 * Read the meta database.
 * @return 0 or an error code
 */
int kv_store_read_meta(struct kv_store *st, MDB_txn *txn, struct kv_meta *m);

/**
 * Write one meta value (big-endian u64).
 * @return 0 or an error code
 */
int kv_store_put_meta(struct kv_store *st,
                      MDB_txn *txn,
                      const char *name,
                      uint64_t value);

/**
 * Double the map size. No transaction of this process may be open.
 * @return 0 or KV_STORE_EIO
 */
int kv_store_grow(struct kv_store *st);

/**
 * Turn an LMDB return code into a store error, recording context.
 * @param what the failed action, for errmsg
 */
int kv_store_fail(struct kv_store *st, int rc, const char *what);

/* Big-endian helpers for keys and values. */
void kv_put_u64(uint8_t *p, uint64_t v);
uint64_t kv_get_u64(const uint8_t *p);
void kv_put_u32(uint8_t *p, uint32_t v);
uint32_t kv_get_u32(const uint8_t *p);

#endif /* KVSERVER_STORE_H */
