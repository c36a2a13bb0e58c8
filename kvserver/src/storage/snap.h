/* snap.h: the state machine as a byte stream: read out, staged, installed. */
#ifndef KVSERVER_SNAP_H
#define KVSERVER_SNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Stream format (all integers big-endian):
 *   header  "RKVSNAP4" | applied index (8) | applied term (8)
 *           | cluster id (8; 0 when the state did not know it yet)
 *   record  kind (1: kv, 2: session, 3: auth, 4: history, 5: kvmeta,
 *           6: lease)
 *           | key length (4)
 *           | value length (4)
 *           | key | value
 *   trailer kind 0xFF | number of records (8) | CRC-32C (4) of every byte
 *           before it
 * The same stream is a follower's snapshot and a `kvctl snapshot save`
 * file. An "RKVSNAP2" stream (kinds 1-3, values without revisions, from a
 * kvserver before format 4) is still installed: the store is then marked
 * KV_STORE_FORMAT_OLD for the state machine to upgrade. "RKVSNAP4" came
 * with store format 5 (leases, record kind 6, and history events that
 * say where the key's version before them is): a kvserver before it
 * refuses the stream ("no RKVSNAP3 header"), so a node that would
 * misread the history or drop leases never installs it; "RKVSNAP3"
 * streams (format 4) are still installed, their events read as they
 * are; the index of each lease's keys is not in the stream but made
 * again from the key records when it is installed.
 * The stream is read under one LMDB read transaction, so it is the state at
 * one applied index while writes go on. */

/* A snapshot being read out for one follower. */
struct snap_stream
{
    MDB_txn *txn;        /* read transaction holding the state */
    MDB_cursor *cur;     /* position in the database being read */
    int phase;           /* header, kv, sessions, auth, trailer, done */
    uint64_t offset;     /* bytes produced so far */
    uint64_t index;      /* applied index of the state */
    uint64_t term;       /* its term */
    uint64_t cluster_id; /* the cluster the state belongs to (0: unknown) */
    uint64_t records;    /* records produced so far */
    uint32_t crc;        /* CRC-32C of the records produced so far */
    uint8_t *pend;       /* bytes of the current record not yet produced */
    size_t pend_len;     /* valid bytes in pend */
    size_t pend_off;     /* bytes of pend already produced */
    size_t pend_cap;     /* allocated size of pend */
};

/**
 * Start reading the state as a stream (opens a read transaction).
 * @return 0 or a store error
 */
int snap_stream_open(struct kv_store *st, struct snap_stream *s);

/**
 * Produce the next bytes, at most max.
 * @param len set to the bytes written to buf
 * @param done set when the stream ends with these bytes
 * @return 0 or a store error
 */
int snap_stream_read(struct kv_store *st,
                     struct snap_stream *s,
                     uint8_t *buf,
                     size_t max,
                     size_t *len,
                     bool *done);

/**
 * End a stream and its read transaction (safe on a closed stream).
 */
void snap_stream_close(struct snap_stream *s);

/* The stream checksum of a snapshot being received, kept as its chunks are
 * staged, so that a damaged stream is found before it is installed. */
struct snap_check
{
    uint64_t len;    /* bytes seen */
    uint32_t crc;    /* CRC-32C of all of them but the last 4 */
    uint8_t tail[4]; /* the last (up to) 4 bytes seen */
};

/** Add the next bytes of a stream. */
void snap_check_add(struct snap_check *c, const void *data, size_t len);

/** Whether the bytes seen end with the CRC-32C of everything before it,
 * as a whole stream does (a stream damaged or mixed from two fails). */
bool snap_check_ok(const struct snap_check *c);

/**
 * Stage a received chunk; offset 0 discards what was staged before.
 * @return 0 or a store error
 */
int snap_stage(struct kv_store *st,
               MDB_txn *txn,
               uint64_t offset,
               const void *data,
               size_t len);

/**
 * Replace kv, sessions, auth, history, kvmeta and the leases with the
 * staged stream and
 * empty the staging area, all inside txn; a stream that names its cluster sets
 * the store's cluster id (meta "cluster") to it. The trailer's checksum must
 * match. The stream is checked as it is read; a damaged one fails with
 * KV_STORE_ECORRUPT (then the caller aborts txn, so the old state stays).
 * @param index, term set to the applied index and term of the state
 * @return 0 or a store error
 */
int snap_install(struct kv_store *st,
                 MDB_txn *txn,
                 uint64_t *index,
                 uint64_t *term);

#endif /* KVSERVER_SNAP_H */
