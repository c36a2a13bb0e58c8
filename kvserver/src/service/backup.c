/* backup.c: AdminService.SnapshotRead (kvctl snapshot save) and restoring
 * a saved snapshot into an empty data directory (kvserver --restore). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "service.h"

#define CHUNK_DEFAULT (1u << 20)
#define CHUNK_MAX     (4u << 20)
#define IDLE_MS       30000
#define RESTORE_READ  (4u << 20) /* bytes of the file read at a time */

static void reply(struct kv_node *n,
                  Raftkv__SnapshotReadReply_Closure closure,
                  void *data,
                  Raftkv__AdminError err,
                  const char *msg,
                  const struct kv_backup *b)
{
    Raftkv__SnapshotReadReply r = RAFTKV__SNAPSHOT_READ_REPLY__INIT;
    char addr[300];
    uint64_t leader = raft_leader(n->raft);
    snprintf(addr, sizeof addr, "%s", leader ? node_peer_addr(n, leader) : "");
    r.error = err;
    r.message = (char *)(msg ? msg : "");
    r.node_id = n->cfg.id;
    r.leader_id = leader;
    r.leader_address = addr;
    if (b && err == RAFTKV__ADMIN_ERROR__ADMIN_OK) {
        r.stream_id = b->id;
        r.offset = b->last_off;
        r.data.data = b->last;
        r.data.len = b->last_len;
        r.done = b->last_done;
        r.index = b->index;
        r.term = b->term;
    }
    closure(&r, data);
}

static void backup_close(struct kv_backup *b)
{
    if (b->open) {
        snap_stream_close(&b->s);
    }
    free(b->last);
    memset(b, 0, sizeof *b);
}

/* Close every stream (the map grows, the store closes). */
static void backup_close_all(struct kv_node *n, enum node_event ev, void *arg)
{
    (void)n;
    (void)ev;
    struct kv_services *s = arg;
    for (size_t i = 0; i < KV_MAX_BACKUPS; i++) {
        if (s->backups[i].id) {
            backup_close(&s->backups[i]);
        }
    }
}

/* Close the streams left idle. */
static void backup_sweep(struct kv_node *n, enum node_event ev, void *arg)
{
    (void)ev;
    struct kv_services *s = arg;
    uint64_t now = node_now_ms();
    for (size_t i = 0; i < KV_MAX_BACKUPS; i++) {
        struct kv_backup *b = &s->backups[i];
        if (b->id && now - b->used > IDLE_MS) {
            rpc_logf(RPC_LOG_INFO,
                     "node %llu: snapshot read %016" PRIx64
                     " left idle: closed",
                     (unsigned long long)n->cfg.id, b->id);
            backup_close(b);
        }
    }
}

/* A new stream over the state as applied now. */
static struct kv_backup *backup_start(struct kv_services *s,
                                      char *msg,
                                      size_t len)
{
    struct kv_node *n = s->node;
    struct kv_backup *b = NULL;
    for (size_t i = 0; i < KV_MAX_BACKUPS && !b; i++) {
        if (!s->backups[i].id) {
            b = &s->backups[i];
        }
    }
    /* None free: take the one that ended longest ago. An ended read keeps
     * its slot only to resend a last chunk whose reply was lost; it is not
     * in progress, and must not refuse a new save for 30 s. */
    for (size_t i = 0; i < KV_MAX_BACKUPS && !b; i++) {
        struct kv_backup *e = &s->backups[i];
        if (e->last_done && !e->open) {
            for (size_t k = i + 1; k < KV_MAX_BACKUPS; k++) {
                struct kv_backup *f = &s->backups[k];
                if (f->last_done && !f->open && f->used < e->used) {
                    e = f;
                }
            }
            backup_close(e);
            b = e;
        }
    }
    if (!b) {
        snprintf(msg, len,
                 "%d snapshot reads are in progress on node %" PRIu64
                 "; try again when one ends",
                 KV_MAX_BACKUPS, n->cfg.id);
        return NULL;
    }
    /* Commit what is applied, so the copy holds every write answered
     * before this call. */
    if (node_state_commit(n, false) != 0 ||
        snap_stream_open(&n->store, &b->s) != 0) {
        snprintf(msg, len, "cannot read the state: %s", n->store.errmsg);
        memset(b, 0, sizeof *b);
        return NULL;
    }
    b->open = true;
    b->index = b->s.index;
    b->term = b->s.term;
    b->id =
        ((uint64_t)n->cfg.id << 48) ^ (node_now_ms() << 8) ^ ++s->backup_seq;
    if (b->id == 0) {
        b->id = 1;
    }
    rpc_logf(
        RPC_LOG_INFO,
        "node %llu: snapshot read %016" PRIx64 " started (state at index %llu)",
        (unsigned long long)n->cfg.id, b->id, (unsigned long long)b->index);
    return b;
}

static void handle_snapshot_read(Raftkv__AdminService_Service *svc,
                                 const Raftkv__SnapshotReadArgs *a,
                                 Raftkv__SnapshotReadReply_Closure closure,
                                 void *data)
{
    struct kv_services *s = services_of(svc, admin_svc);
    struct kv_node *n = s->node;
    char msg[1400];
    if (raft_role(n->raft) != RAFT_LEADER) {
        snprintf(msg, sizeof msg, "node %" PRIu64 " is not the leader",
                 n->cfg.id);
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_NOT_LEADER, msg,
              NULL);
        return;
    }
    if (n->frozen) {
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE,
              "the node cannot persist; try again later", NULL);
        return;
    }
    size_t max = a->max_bytes ? a->max_bytes : CHUNK_DEFAULT;
    if (max > CHUNK_MAX) {
        max = CHUNK_MAX;
    }
    struct kv_backup *b = NULL;
    if (a->stream_id == 0) {
        if (a->offset != 0) {
            reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_BAD_REQUEST,
                  "a new snapshot read starts at offset 0", NULL);
            return;
        }
        b = backup_start(s, msg, sizeof msg);
        if (!b) {
            reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE, msg,
                  NULL);
            return;
        }
    } else {
        for (size_t i = 0; i < KV_MAX_BACKUPS && !b; i++) {
            if (s->backups[i].id == a->stream_id) {
                b = &s->backups[i];
            }
        }
        if (!b) {
            reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_BAD_REQUEST,
                  "no such snapshot read on this node (it ended, was idle "
                  "for 30 s, or the leader changed): start again",
                  NULL);
            return;
        }
    }
    b->used = node_now_ms();
    if (a->stream_id != 0 && b->last && a->offset == b->last_off) {
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_OK, NULL, b);
        return; /* the last chunk again: its reply was lost */
    }
    uint64_t next = b->last ? b->last_off + b->last_len : 0;
    if (a->offset != next || b->last_done || !b->open) {
        snprintf(msg, sizeof msg,
                 "offset %" PRIu64 " is not where the stream is (%" PRIu64
                 "%s)",
                 a->offset, next, b->last_done ? ", and it has ended" : "");
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_BAD_REQUEST, msg,
              NULL);
        return;
    }
    uint8_t *buf = realloc(b->last, max);
    if (!buf) {
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE,
              "out of memory", NULL);
        return;
    }
    b->last = buf;
    size_t len;
    bool done;
    if (snap_stream_read(&n->store, &b->s, buf, max, &len, &done) != 0) {
        snprintf(msg, sizeof msg, "reading the state: %s", n->store.errmsg);
        backup_close(b);
        reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE, msg,
              NULL);
        return;
    }
    b->last_off = next;
    b->last_len = len;
    b->last_done = done;
    if (done) {
        snap_stream_close(&b->s);
        b->open = false;
        rpc_logf(RPC_LOG_INFO,
                 "node %llu: snapshot read %016" PRIx64
                 " done: %llu bytes, state at index %llu",
                 (unsigned long long)n->cfg.id, b->id,
                 (unsigned long long)(next + len),
                 (unsigned long long)b->index);
    }
    reply(n, closure, data, RAFTKV__ADMIN_ERROR__ADMIN_OK, NULL, b);
}

int backup_service_init(struct kv_services *s)
{
    s->admin_svc.snapshot_read = handle_snapshot_read;
    if (node_subscribe(s->node, NODE_EV_SWEEP, backup_sweep, s) != 0 ||
        node_subscribe(s->node, NODE_EV_RELEASE_READERS, backup_close_all, s) !=
            0) {
        return -1;
    }
    return 0;
}

/* ---- kvserver --restore FILE ---- */

static int restore_fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "kvserver: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    return 1;
}

/* Empty what an interrupted restore left: the log (the state is
 * replaced whole by the build that follows). */
static int restart_restore(struct kv_store *st, struct kv_wal *w)
{
    if (kv_wal_reset(w) != 0) {
        snprintf(st->errmsg, sizeof st->errmsg, "%.1150s", w->errmsg);
        return KV_STORE_EIO;
    }
    return 0;
}

/* Mark the store as being restored (1) or done (0), durably. */
static int mark_restoring(struct kv_store *st, uint64_t on)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc) {
        return kv_store_fail(st, rc, "begin");
    }
    int rv = kv_store_put_meta(st, txn, "restoring", on);
    if (rv) {
        mdb_txn_abort(txn);
        return rv;
    }
    rc = mdb_txn_commit(txn);
    return rc ? kv_store_fail(st, rc, "commit") : 0;
}

/* Restoring goes in steps, each durable before the next: the store is
 * marked "restoring"; the state is built from the file beside it in
 * DIR/incoming, in transactions of bounded size, and switched in whole
 * (install.h: its last transaction copies the store's meta, the mark
 * included, and is synced before the rename); the log gets the
 * snapshot's term and mark; the mark is removed. A node refuses to start
 * from a store still marked, and --restore redoes it from the start, so a
 * crash at any point leaves either the empty directory, a restore to run
 * again, or the finished one. */
/* The id of a cluster restored from a backup: new (the old cluster's
 * members, if any are left, must not mix with it), and the same on every
 * member that restores the same file: a hash of the backup's cluster id,
 * its index and term, and the member ids. */
static uint64_t restored_cluster_id(const struct kv_node_config *cfg,
                                    uint64_t old_id,
                                    uint64_t index,
                                    uint64_t term)
{
    uint64_t ids[KV_MAX_NODES];
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        size_t j = i;
        for (; j > 0 && ids[j - 1] > cfg->ids[i]; j--) {
            ids[j] = ids[j - 1];
        }
        ids[j] = cfg->ids[i];
    }
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    uint64_t words[3 + KV_MAX_NODES] = {old_id, index, term};
    memcpy(words + 3, ids, cfg->n_nodes * sizeof ids[0]);
    const uint8_t *b = (const uint8_t *)words;
    for (size_t i = 0; i < (3 + cfg->n_nodes) * sizeof words[0]; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h ? h : 1;
}

int kv_restore_file(const struct kv_node_config *cfg, const char *file)
{
    FILE *fp = fopen(file, "rb");
    if (!fp) {
        return restore_fail("--restore %s: %s", file, strerror(errno));
    }
    struct kv_store st;
    if (kv_store_open(&st, cfg->data_dir, cfg->map_size) != 0 ||
        kv_store_claim(&st, 0, cfg->id) != 0) {
        fclose(fp);
        kv_store_close(&st);
        return restore_fail("%s%s", st.errmsg, "");
    }
    struct kv_wal w;
    struct kv_wal_contents c;
    if (kv_wal_open(&w, cfg->data_dir, cfg->wal_segment_bytes, &c) != 0) {
        fclose(fp);
        kv_store_close(&st);
        return restore_fail("%s%s", w.errmsg, "");
    }
    MDB_txn *txn = NULL;
    struct kv_meta m = {0};
    MDB_stat ks;
    struct kv_install in;
    memset(&in, 0, sizeof in);
    int rv = 1;
    bool marked = false, state_written = false;
    if (mdb_txn_begin(st.env, NULL, MDB_RDONLY, &txn) != 0 ||
        kv_store_read_meta(&st, txn, &m) != 0 ||
        mdb_stat(txn, st.kv, &ks) != 0) {
        restore_fail("%s: cannot read the data directory%s", cfg->data_dir, "");
        goto out;
    }
    mdb_txn_abort(txn);
    txn = NULL;
    if (!m.restoring && (m.applied != 0 || ks.ms_entries != 0 ||
                         c.n_entries != 0 || c.hs.term != 0)) {
        restore_fail(
            "--restore: %s already holds data; restore into an "
            "empty directory (wipe it first)%s",
            cfg->data_dir, "");
        goto out;
    }
    if (mark_restoring(&st, 1) != 0) {
        restore_fail("%s%s", st.errmsg, "");
        goto out;
    }
    marked = true;
    if (m.restoring) {
        fprintf(stderr,
                "kvserver: %s holds an interrupted restore; doing it again\n",
                cfg->data_dir);
        if (restart_restore(&st, &w) != 0) {
            restore_fail("%s%s", st.errmsg, "");
            goto out;
        }
    }
    struct stat fst;
    size_t map = st.map_size;
    if (fstat(fileno(fp), &fst) == 0) {
        /* The state takes about as much as its stream. */
        while (map < (uint64_t)fst.st_size + fst.st_size / 2) {
            map *= 2;
        }
    }
    if (kv_install_begin(&in, cfg->data_dir, map, 1) != 0) {
        restore_fail("%s%s", in.st.errmsg, "");
        goto out;
    }
    uint8_t *chunk = malloc(RESTORE_READ);
    if (!chunk) {
        restore_fail("--restore %s: %s", file, strerror(ENOMEM));
        goto out;
    }
    uint64_t off = 0;
    size_t len;
    int frv = 0;
    while ((len = fread(chunk, 1, RESTORE_READ, fp)) > 0) {
        if ((frv = kv_install_feed(&in, chunk, len)) != 0) {
            break;
        }
        off += len;
    }
    free(chunk);
    if (frv) {
        fprintf(stderr, "kvserver: --restore %s: %s\n", file, in.st.errmsg);
        goto out;
    }
    if (ferror(fp)) {
        restore_fail("--restore %s: read error%s", file, "");
        goto out;
    }
    uint64_t index, term;
    if (mdb_txn_begin(st.env, NULL, MDB_RDONLY, &txn) != 0) {
        restore_fail("%s: cannot read the data directory%s", cfg->data_dir, "");
        goto out;
    }
    /* The new id comes from the file alone (not from an earlier try of
     * this restore), so that every member computes the same: the live
     * store's "cluster" (copied into the build first) is cleared. */
    MDB_txn *bt = NULL;
    int irv = kv_install_finish(&in, &st, txn, &index, &term, &bt);
    mdb_txn_abort(txn);
    txn = NULL;
    if (irv) {
        /* The message names the data directory; say which file it was. */
        fprintf(stderr, "kvserver: --restore %s: %s\n", file, in.st.errmsg);
        goto out;
    }
    struct kv_meta rm;
    MDB_val cluster_key = {7, "cluster"};
    uint64_t stream_cluster = in.l.cluster_id;
    int drc = stream_cluster ? 0 : mdb_del(bt, in.st.meta, &cluster_key, NULL);
    /* The restored cluster is the one the flags describe: the backed-up
     * cluster's members and removed ids do not come along. */
    if ((drc && drc != MDB_NOTFOUND) || kv_sm_install_done(&in.st, bt) != 0 ||
        members_forget(&in.st, bt) != 0 ||
        kv_store_read_meta(&in.st, bt, &rm) != 0 ||
        kv_store_put_meta(
            &in.st, bt, "cluster",
            restored_cluster_id(cfg, rm.cluster_id, index, term)) != 0 ||
        kv_store_put_meta(&in.st, bt, "applied", index) != 0 ||
        kv_store_put_meta(&in.st, bt, "applied_term", term) != 0 ||
        mdb_stat(bt, in.st.kv, &ks) != 0) {
        restore_fail("%s: cannot write the restored state%s", cfg->data_dir,
                     "");
        goto out;
    }
    kv_store_close(&st);
    if (kv_install_switch(&in, &st) != 0) {
        state_written = in.renamed; /* the mark came along */
        restore_fail("%s%s", st.errmsg, "");
        goto out;
    }
    state_written = true;
    /* The log starts after the snapshot, in the snapshot's term. */
    if (kv_wal_add_hard_state(&w, term, 0) != 0 ||
        kv_wal_add_snapshot(&w, index, term) != 0 || kv_wal_sync(&w) != 0) {
        restore_fail("%s%s", w.errmsg, "");
        goto out;
    }
    if (mark_restoring(&st, 0) != 0) {
        restore_fail("%s%s", st.errmsg, "");
        goto out;
    }
    printf("restored %s into %s: state at index %" PRIu64 ", term %" PRIu64
           ", %zu keys, %" PRIu64 " bytes. Start the node without --restore.\n",
           file, cfg->data_dir, index, term, (size_t)ks.ms_entries, off);
    rv = 0;
out:
    if (txn) {
        mdb_txn_abort(txn);
    }
    kv_install_drop(&in);
    if (rv && marked && !m.restoring && !state_written && st.env) {
        /* Refused before anything was written (a damaged file): the
         * directory is as empty as it was. */
        mark_restoring(&st, 0);
    }
    fclose(fp);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    kv_store_close(&st);
    return rv;
}
