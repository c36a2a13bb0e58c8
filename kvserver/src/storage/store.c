/* store.c: opening the LMDB environment; meta and log records. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "store.h"

#define DEFAULT_MAP_SIZE (64ull << 20)
#define LOG_HEADER       9 /* term (8) + type (1) */

void kv_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t kv_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

void kv_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint32_t kv_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/* Make the names in @dir durable (files created in it, or removed). */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    int rc = fsync(fd) ? errno : 0;
    close(fd);
    return rc;
}

/* LMDB reports a short write during commit as EIO, which is how a full
 * disk shows up; tell the two apart by the free space left. */
static bool disk_nearly_full(const char *dir)
{
    struct statvfs vfs;
    return statvfs(dir, &vfs) == 0 &&
           (uint64_t)vfs.f_bavail * vfs.f_frsize < (4u << 20);
}

int kv_store_fail(struct kv_store *st, int rc, const char *what)
{
    if (rc == EIO && disk_nearly_full(st->dir)) {
        rc = ENOSPC;
    }
    snprintf(st->errmsg, sizeof st->errmsg, "%s: %s: %s", st->dir, what,
             mdb_strerror(rc));
    if (rc == MDB_PANIC) {
        /* A meta page write failed earlier: LMDB refuses every transaction
         * of this environment from then on. */
        st->fatal = true;
    }
    if (rc == MDB_MAP_FULL) {
        return KV_STORE_EMAPFULL;
    }
    if (rc == ENOSPC || rc == EDQUOT) {
        return KV_STORE_ENOSPC;
    }
    if (rc == ENOMEM) {
        return KV_STORE_ENOMEM;
    }
    return KV_STORE_EIO;
}

int kv_store_open(struct kv_store *st, const char *dir, size_t map_size)
{
    memset(st, 0, sizeof *st);
    st->lease_news.all = true; /* nobody has read the leases yet */
    snprintf(st->dir, sizeof st->dir, "%s", dir);
    bool created = mkdir(dir, 0700) == 0;
    if (!created && errno != EEXIST) {
        snprintf(st->errmsg, sizeof st->errmsg, "data directory %s: %s", dir,
                 strerror(errno));
        return KV_STORE_EIO;
    }
    st->map_size = map_size ? map_size : DEFAULT_MAP_SIZE;
    int rc = mdb_env_create(&st->env);
    if (rc) {
        return kv_store_fail(st, rc, "mdb_env_create");
    }
    mdb_env_set_maxdbs(st->env, 12);
    mdb_env_set_maxreaders(st->env, 126);
    /* A larger map may already exist on disk; LMDB keeps the larger. */
    mdb_env_set_mapsize(st->env, st->map_size);
    /* MDB_NOTLS: read transactions (snapshot streams) live across loop
     * turns and are not tied to the thread's reader slot. */
    rc = mdb_env_open(st->env, dir, MDB_NOTLS, 0600);
    if (rc) {
        int err = kv_store_fail(st, rc, "mdb_env_open");
        mdb_env_close(st->env);
        st->env = NULL;
        return err;
    }
    MDB_envinfo info;
    mdb_env_info(st->env, &info);
    st->map_size = info.me_mapsize;
    /* LMDB does not sync the directory it creates its files in: without
     * this a crash could lose data.mdb, and the node's identity with it. */
    char parent[1100];
    snprintf(parent, sizeof parent, "%s/..", dir);
    rc = sync_dir(dir);
    if (!rc && created) {
        rc = sync_dir(parent);
    }
    if (rc) {
        int err = kv_store_fail(st, rc, "sync the directory");
        mdb_env_close(st->env);
        st->env = NULL;
        return err;
    }

    MDB_txn *txn;
    rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc) {
        goto err_env;
    }
    struct
    {
        const char *name;
        MDB_dbi *dbi;
    } dbs[] = {
        {"meta", &st->meta},         {"kv", &st->kv},
        {"sessions", &st->sessions}, {"session_age", &st->session_age},
        {"staging", &st->staging},   {"auth", &st->auth},
        {"history", &st->history},   {"kvmeta", &st->kvmeta},
        {"leases", &st->leases},     {"lease_keys", &st->lease_keys},
    };
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
        if (rc) {
            mdb_txn_abort(txn);
            goto err_env;
        }
    }
    MDB_val k = {6, "format"}, v;
    st->format = KV_STORE_FORMAT;
    rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        rc = kv_store_put_meta(st, txn, "format", KV_STORE_FORMAT);
        if (rc) {
            mdb_txn_abort(txn);
            goto err_env_msg;
        }
    } else if (rc == 0) {
        uint64_t format = v.mv_size == 8 ? kv_get_u64(v.mv_data) : 0;
        st->format = format;
        if (format < KV_STORE_FORMAT_OLD || format > KV_STORE_FORMAT) {
            mdb_txn_abort(txn);
            snprintf(st->errmsg, sizeof st->errmsg,
                     "data directory %s: format %llu, this kvserver reads "
                     "format %d%s",
                     dir, (unsigned long long)format, KV_STORE_FORMAT,
                     format < KV_STORE_FORMAT
                         ? " (written by an older kvserver); wipe "
                           "the directory and restart the node: it catches "
                           "up from the others"
                         : " (written by a newer kvserver); run one that "
                           "reads it");
            mdb_env_close(st->env);
            st->env = NULL;
            return KV_STORE_ECORRUPT;
        }
    } else {
        mdb_txn_abort(txn);
        goto err_env;
    }
    rc = mdb_txn_commit(txn);
    if (rc) {
        goto err_env;
    }
    return 0;

err_env:
    kv_store_fail(st, rc, "open databases");
err_env_msg:
    mdb_env_close(st->env);
    st->env = NULL;
    return KV_STORE_EIO;
}

void kv_lease_counts_forget(struct kv_store *st)
{
    struct kv_lease_counts *lk = &st->lease_counts;
    if (lk->n) {
        memset(lk->ids, 0, lk->cap * sizeof *lk->ids);
        lk->n = 0;
    }
}

void kv_store_close(struct kv_store *st)
{
    if (st->env) {
        mdb_env_close(st->env);
        st->env = NULL;
    }
    free(st->lease_news.ids);
    memset(&st->lease_news, 0, sizeof st->lease_news);
    free(st->lease_counts.ids);
    free(st->lease_counts.counts);
    memset(&st->lease_counts, 0, sizeof st->lease_counts);
}

int kv_store_put_meta(struct kv_store *st,
                      MDB_txn *txn,
                      const char *name,
                      uint64_t value)
{
    uint8_t buf[8];
    kv_put_u64(buf, value);
    MDB_val k = {strlen(name), (void *)name}, v = {8, buf};
    int rc = mdb_put(txn, st->meta, &k, &v, 0);
    return rc ? kv_store_fail(st, rc, "write meta") : 0;
}

static int get_meta(struct kv_store *st,
                    MDB_txn *txn,
                    const char *name,
                    uint64_t *out)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rc) {
        return kv_store_fail(st, rc, "read meta");
    }
    if (v.mv_size != 8) {
        snprintf(st->errmsg, sizeof st->errmsg,
                 "%s: meta value %s has %zu bytes, not 8", st->dir, name,
                 v.mv_size);
        return KV_STORE_ECORRUPT;
    }
    *out = kv_get_u64(v.mv_data);
    return 0;
}

int kv_store_read_meta(struct kv_store *st, MDB_txn *txn, struct kv_meta *m)
{
    struct
    {
        const char *name;
        uint64_t *out;
    } fields[] = {
        {"cluster", &m->cluster_id},  {"node", &m->node_id},
        {"applied", &m->applied},     {"applied_term", &m->applied_term},
        {"restoring", &m->restoring},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        int rv = get_meta(st, txn, fields[i].name, fields[i].out);
        if (rv) {
            return rv;
        }
    }
    return 0;
}

int kv_store_check_identity(struct kv_store *st,
                            uint64_t cluster_id,
                            uint64_t node_id)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        return kv_store_fail(st, rc, "begin read");
    }
    struct kv_meta m;
    int rv = kv_store_read_meta(st, txn, &m);
    mdb_txn_abort(txn);
    if (rv) {
        return rv;
    }
    if (m.node_id && m.node_id != node_id) {
        snprintf(st->errmsg, sizeof st->errmsg,
                 "data directory %s belongs to node %llu, not node %llu",
                 st->dir, (unsigned long long)m.node_id,
                 (unsigned long long)node_id);
        return KV_STORE_EIDENTITY;
    }
    if (cluster_id && m.cluster_id && m.cluster_id != cluster_id) {
        snprintf(st->errmsg, sizeof st->errmsg,
                 "data directory %s belongs to cluster %016llx, not "
                 "%016llx",
                 st->dir, (unsigned long long)m.cluster_id,
                 (unsigned long long)cluster_id);
        return KV_STORE_EIDENTITY;
    }
    return 0;
}

int kv_store_claim(struct kv_store *st, uint64_t cluster_id, uint64_t node_id)
{
    int rv = kv_store_check_identity(st, cluster_id, node_id);
    if (rv) {
        return rv;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc) {
        return kv_store_fail(st, rc, "begin");
    }
    struct kv_meta m;
    rv = kv_store_read_meta(st, txn, &m);
    if (rv || m.node_id != 0) {
        mdb_txn_abort(txn); /* (claimed already: checked above) */
        return rv;
    }
    rv = kv_store_put_meta(st, txn, "node", node_id);
    if (!rv && cluster_id) {
        rv = kv_store_put_meta(st, txn, "cluster", cluster_id);
    }
    if (rv) {
        mdb_txn_abort(txn);
        return rv;
    }
    rc = mdb_txn_commit(txn);
    return rc ? kv_store_fail(st, rc, "commit") : 0;
}

int kv_store_grow(struct kv_store *st)
{
    size_t size = st->map_size * 2;
    int rc = mdb_env_set_mapsize(st->env, size);
    if (rc) {
        return kv_store_fail(st, rc, "grow the map");
    }
    st->map_size = size;
    return 0;
}

int kv_store_set_format(struct kv_store *st, MDB_txn *txn)
{
    int rv = kv_store_put_meta(st, txn, "format", KV_STORE_FORMAT);
    if (!rv) {
        st->format = KV_STORE_FORMAT;
    }
    return rv;
}
