/* wal.h: the Raft log and hard state, as an append-only write-ahead log
 * (private to kvserver).
 *
 * The log lives in <data dir>/wal/ as numbered segment files. Each append
 * is one batch, written at a 4 KiB boundary and made durable with one
 * fdatasync. A batch is a run of 512-byte sectors, each holding 504 bytes
 * of the batch and a trailer of its own, then zeros up to the next 4 KiB
 * boundary:
 *
 *   sector  := payload (504) | mark (u32: "RKWH" first sector of a batch,
 *              "RKWB" the others) | CRC-32C (u32) of the payload, the
 *              segment number, the sector's file offset and the mark
 *   batch   := header | body, cut into the sectors' payloads
 *   header  := magic "RKVL" (u32) | body length (u32) | body CRC-32C (u32)
 *              | 0 (u32)
 *   body    := record*
 *   record  := ENTRY index term type length data | HARD_STATE term vote
 *             | TRUNCATE from | SNAPSHOT index term
 *
 * All integers are big-endian. Segments are extended with zeros 1 MiB
 * ahead of the appends, so that an fdatasync flushes the data alone.
 *
 * The first batch of every segment starts with the durable hard state and
 * snapshot mark, so a segment describes itself, and older segments can be
 * deleted once the log is compacted past them (only while the segment
 * after them holds a batch). The hard state and snapshot mark count as
 * written only once the batch that holds them is synced.
 *
 * On open, recovery cuts only what it can prove is an append that never
 * finished: damage at the end of the last segment where every sector from
 * the damaged batch on is either intact (its own checksum matches) or
 * still zero, and no intact batch header follows. Because every sector
 * carries a trailer that only the log writes, values written by clients
 * can never look like a batch header, and an intact sector is never all
 * zeros. Anything else (a sector whose checksum fails, damage followed by
 * a batch, a damaged older segment) is reported with the file, the offset
 * and the last good index, and the node refuses to start.
 */
#ifndef KVSERVER_WAL_H
#define KVSERVER_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <raft/raft.h>
#include <rpc/rpc.h>

#define KV_WAL_SEGMENT_BYTES (64u << 20) /* default rollover size */

/* One segment on disk. */
struct kv_wal_segment
{
    uint64_t no;         /* its number (file name) */
    uint64_t last_index; /* largest entry index written to it (0: none) */
    uint64_t bytes;      /* its size */
};

struct kv_wal
{
    char dir[1100];              /* <data dir>/wal */
    int fd;                      /* the current (last) segment */
    uint64_t size;               /* bytes in it, a multiple of 4 KiB */
    uint64_t alloc;              /* its file size: zeros past size, so
                                    that an append does not change the
                                    file's size (a metadata write) */
    uint64_t segment_bytes;      /* roll over past this size */
    struct kv_wal_segment *segs; /* live segments, oldest first */
    size_t n_segs, cap_segs;     /* entries in segs / allocated */
    uint64_t term, vote;         /* hard state as last synced */
    uint64_t snap_index;         /* last snapshot mark synced */
    uint64_t snap_term;          /* its term */
    bool pend_hs;                /* the batch holds a hard state: */
    uint64_t pend_term;          /*   its term */
    uint64_t pend_vote;          /*   its vote */
    bool pend_snap;              /* the batch holds a snapshot mark: */
    uint64_t pend_snap_index;    /*   its index */
    uint64_t pend_snap_term;     /*   its term */
    uint64_t batch_last;         /* largest entry index in the batch */
    uint8_t *buf;                /* the batch being built (header first) */
    size_t len, cap;             /* bytes in buf / allocated */
    uint8_t *out;                /* the batch cut into sectors */
    size_t out_cap;              /* allocated */
    uint64_t syncs;              /* batches made durable */
    char errmsg[1400];           /* context of the last failure */
};

/* What the log held when opened. */
struct kv_wal_contents
{
    struct raft_hard_state hs;  /* term and vote (commit is 0) */
    uint64_t snap_index;        /* last snapshot mark (0: none) */
    uint64_t snap_term;         /* its term */
    struct raft_entry *entries; /* consecutive, ascending */
    size_t n_entries;           /* their number */
    void **blobs;               /* segment images the entries point into */
    size_t n_blobs;             /* their number */
    uint64_t cut_bytes;         /* bytes of an interrupted append cut off */
};

/**
 * Open the log in <data_dir>/wal (created if missing) and read it.
 * @param segment_bytes rollover size (0: KV_WAL_SEGMENT_BYTES)
 * @param out what the log holds; free with kv_wal_contents_free()
 * @return 0, KV_STORE_EIO, KV_STORE_ECORRUPT or KV_STORE_ENOMEM, with
 * w->errmsg naming the file (and offset and index for damage)
 */
int kv_wal_open(struct kv_wal *w,
                const char *data_dir,
                uint64_t segment_bytes,
                struct kv_wal_contents *out);

void kv_wal_contents_free(struct kv_wal_contents *c);

/* Add records to the next batch (nothing is written until kv_wal_sync).
 * A hard state or snapshot mark added here becomes w->term, w->vote,
 * w->snap_index and w->snap_term only once kv_wal_sync succeeds. */
int kv_wal_add_entries(struct kv_wal *w, const struct raft_entry *e, size_t n);
int kv_wal_add_hard_state(struct kv_wal *w, uint64_t term, uint64_t vote);
int kv_wal_add_truncate(struct kv_wal *w, uint64_t from);
int kv_wal_add_snapshot(struct kv_wal *w, uint64_t index, uint64_t term);

/** Whether records wait for kv_wal_sync. */
bool kv_wal_pending(const struct kv_wal *w);

/**
 * Write the batch and make it durable (one fdatasync). On failure the
 * segment is cut back to where it was and the batch is dropped: the caller
 * adds its records again and retries.
 * @return 0, KV_STORE_EIO or KV_STORE_ENOSPC (errmsg says what failed)
 */
int kv_wal_sync(struct kv_wal *w);

/** Drop the batch being built. */
void kv_wal_discard(struct kv_wal *w);

/**
 * Delete the segments, other than the current one, whose entries all lie at
 * or below @upto (the log is compacted up to there). A segment goes only
 * while the one after it holds a synced batch (which starts with the hard
 * state and snapshot mark).
 * @return the number of segments deleted
 */
size_t kv_wal_release(struct kv_wal *w, uint64_t upto);

/**
 * Delete the whole log and start an empty one (an interrupted restore is
 * done again).
 * @return 0, KV_STORE_EIO
 */
int kv_wal_reset(struct kv_wal *w);

/** Bytes in all live segments. */
uint64_t kv_wal_bytes(const struct kv_wal *w);

void kv_wal_close(struct kv_wal *w);

/* CRC-32C (Castagnoli), as used for log batches and snapshot chunks. */
static inline uint32_t kv_crc32c(uint32_t crc, const void *data, size_t len)
{
    return rpc_crc32c(crc, data, len);
}

#endif /* KVSERVER_WAL_H */
