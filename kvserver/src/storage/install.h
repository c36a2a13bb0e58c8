/* install.h: a whole state built beside the live one, then switched in.
 *
 * A received snapshot and `kvserver --restore` replace the whole applied
 * state. Doing it in the live LMDB environment would take one write
 * transaction as large as the state (LMDB keeps a transaction's dirty
 * pages in memory until it spills them, and a crash in the middle must
 * leave the old state). Instead the stream is loaded into a second
 * environment, DIR/incoming/, in transactions of bounded size that are not
 * synced (whatever a crash leaves there is thrown away); when the stream
 * has ended and passed its checksum, the caller adds the node's own meta
 * records in a last transaction, which is synced, and the finished file
 * is renamed over DIR/data.mdb (then the directory is synced). rename(2)
 * is atomic: after a crash the data directory holds either the old state
 * or the whole new one, never a mix; a DIR/incoming/ left by a crash is
 * deleted at the next start.
 */
#ifndef KVSERVER_INSTALL_H
#define KVSERVER_INSTALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snap.h"
#include "store.h"

/* Stream bytes loaded per transaction by kv_install_feed (the environment
 * variable RAFTKV_INSTALL_TXN_BYTES overrides it, for tests). */
#define KV_INSTALL_TXN_BYTES (64u << 20)

/* A state being built in DIR/incoming. */
struct kv_install
{
    struct kv_store st;   /* the environment being built (open: st.env) */
    struct snap_load l;   /* where the stream is */
    struct snap_load ck;  /* where it was at kv_install_mark */
    bool marked;          /* ck holds a mark */
    MDB_txn *txn;         /* the open transaction, if any */
    uint64_t txn_bytes;   /* stream bytes loaded in it */
    uint64_t txn_max;     /* commit after this many */
    uint64_t stream;      /* caller's name for the stream (0: none) */
    bool lost;            /* the build was dropped part way (a failed
                             write): chunks of stream are not loaded, and
                             it cannot be installed */
    bool finished;        /* the build is whole and synced, closed; only
                             kv_install_switch's rename is left */
    uint64_t index, term; /* the finished state's applied index, term */
    uint64_t cluster_id;  /* and its cluster (0: none) */
    size_t map_after;     /* map size the live store needs for it */
    bool renamed;         /* the rename is done, the directory sync not */
    uint64_t bytes;       /* stream bytes of the finished state */
    double began;         /* when the build began (monotonic seconds) */
    char live[1024];      /* the live data directory */
};

/** Monotonic seconds, for in->began. */
double kv_install_now(void);

/** Whether @in holds a build (open, not lost). */
bool kv_install_active(const struct kv_install *in);

/**
 * Start building a new state for the data directory @dir: delete what a
 * previous build left in DIR/incoming and open a fresh environment there.
 * @param map_size its first map size (it grows as needed)
 * @param stream the caller's name for the stream (kept in in->stream)
 * @return 0 or a store error (in->st.errmsg says what failed)
 */
int kv_install_begin(struct kv_install *in,
                     const char *dir,
                     size_t map_size,
                     uint64_t stream);

/**
 * Load the next bytes of the stream, committing (without a sync) each
 * time a transaction has loaded txn_max bytes.
 * @return 0, KV_STORE_ECORRUPT, or a store error; on an error, go back
 *   with kv_install_undo or drop the build
 */
int kv_install_feed(struct kv_install *in, const void *data, size_t len);

/**
 * Remember where the build is (before a node's update), to come back to
 * it with kv_install_undo if the update fails. Commits the open
 * transaction.
 * @return 0 or a store error
 */
int kv_install_mark(struct kv_install *in);

/**
 * Commit what was loaded since the mark (not synced) and forget the mark.
 * @return 0 or a store error
 */
int kv_install_keep(struct kv_install *in);

/**
 * Go back to the mark: what was loaded since is dropped.
 */
void kv_install_undo(struct kv_install *in);

/**
 * The stream has been fed whole: check its end, and open the last
 * transaction, in which the caller writes its own records (meta) before
 * kv_install_switch. The live store's meta records are copied in first,
 * then the stream's cluster id and format (snap_load_end).
 * @param live the live store, read under @live_txn
 * @param txn set to the last transaction (in in->st)
 * @return 0, KV_STORE_ECORRUPT (a damaged stream), or a store error
 */
int kv_install_finish(struct kv_install *in,
                      struct kv_store *live,
                      MDB_txn *live_txn,
                      uint64_t *index,
                      uint64_t *term,
                      MDB_txn **txn);

/**
 * Commit the last transaction with a full sync, close the build and
 * rename its file over the live one's (@live must be closed: no
 * transaction, no environment), sync the directory and open @live again
 * on the new state (or on the old one, after a failure).
 * @return 0, or a store error in @live's errmsg. When the last commit
 *   failed, the build is as it was before that transaction (go back to a
 *   mark with kv_install_undo); when the rename or the directory sync
 *   failed, in->finished is set and calling this again retries them.
 *   live->env is NULL when the store could not be opened again.
 */
int kv_install_switch(struct kv_install *in, struct kv_store *live);

/**
 * Drop a build (nothing of it stays on disk but DIR/incoming, which the
 * next kv_install_begin or kv_install_cleanup deletes).
 */
void kv_install_drop(struct kv_install *in);

/**
 * Delete what an interrupted build left in DIR/incoming.
 * @return 0, or an errno value
 */
int kv_install_cleanup(const char *dir);

#endif /* KVSERVER_INSTALL_H */
