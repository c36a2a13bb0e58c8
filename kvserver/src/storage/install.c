/* install.c: build a whole state beside the live one and switch it in. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "install.h"

#define INCOMING "incoming"

static int sync_path(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return errno;
    }
    int rc = fsync(fd) ? errno : 0;
    close(fd);
    return rc;
}

static uint64_t txn_max_bytes(void)
{
    const char *e = getenv("RAFTKV_INSTALL_TXN_BYTES");
    if (e && *e) {
        char *end;
        unsigned long long v = strtoull(e, &end, 10);
        if (*end == '\0' && v >= 512) {
            return v;
        }
    }
    return KV_INSTALL_TXN_BYTES;
}

int kv_install_cleanup(const char *dir)
{
    char path[1400];
    int err = 0;
    snprintf(path, sizeof path, "%s/" INCOMING, dir);
    DIR *d = opendir(path);
    if (!d) {
        return errno == ENOENT ? 0 : errno;
    }
    /* data.mdb and lock.mdb, and whatever else is there. */
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/" INCOMING "/%s", dir, de->d_name);
        if (unlink(path) != 0 && errno != ENOENT && !err) {
            err = errno;
        }
    }
    closedir(d);
    snprintf(path, sizeof path, "%s/" INCOMING, dir);
    sync_path(path); /* the unlinks, before the directory goes */
    if (!err && rmdir(path) != 0 && errno != ENOENT && errno != ENOTEMPTY) {
        err = errno; /* (a file made meanwhile can stay: harmless) */
    }
    if (!err) {
        sync_path(dir);
    }
    return err;
}

double kv_install_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool kv_install_active(const struct kv_install *in)
{
    return in->st.env != NULL && !in->lost;
}

void kv_install_drop(struct kv_install *in)
{
    if (in->txn) {
        mdb_txn_abort(in->txn);
        in->txn = NULL;
    }
    if (in->st.env) {
        kv_store_close(&in->st);
    }
    in->finished = false;
    in->renamed = false;
    snap_load_free(&in->l);
    if (in->marked) {
        snap_load_free(&in->ck);
        in->marked = false;
    }
    in->txn_bytes = 0;
}

int kv_install_begin(struct kv_install *in,
                     const char *dir,
                     size_t map_size,
                     uint64_t stream)
{
    kv_install_drop(in);
    memset(in, 0, sizeof *in);
    snap_load_init(&in->l);
    snap_load_init(&in->ck);
    snprintf(in->live, sizeof in->live, "%s", dir);
    in->stream = stream;
    in->began = kv_install_now();
    in->txn_max = txn_max_bytes();
    int err = kv_install_cleanup(dir);
    if (err) {
        snprintf(in->st.errmsg, sizeof in->st.errmsg,
                 "%s/" INCOMING ": cannot delete an earlier build: %s", dir,
                 strerror(err));
        return KV_STORE_EIO;
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/" INCOMING, dir);
    int rv = kv_store_open(&in->st, path, map_size);
    if (rv) {
        return rv;
    }
    /* Nothing here is promised to anyone until kv_install_switch, whose
     * commit syncs everything written before it. */
    int rc = mdb_env_set_flags(in->st.env, MDB_NOSYNC, 1);
    if (rc) {
        rv = kv_store_fail(&in->st, rc, "set MDB_NOSYNC");
        kv_store_close(&in->st);
        return rv;
    }
    return 0;
}

/* Grow the map (no transaction open) so that one more fits. */
static int make_room(struct kv_install *in)
{
    MDB_envinfo info;
    MDB_stat stat;
    if (mdb_env_info(in->st.env, &info) != 0 ||
        mdb_env_stat(in->st.env, &stat) != 0) {
        return 0;
    }
    uint64_t used = ((uint64_t)info.me_last_pgno + 1) * stat.ms_psize;
    uint64_t need = used + 4 * in->txn_max + (64ull << 20);
    size_t map = in->st.map_size;
    while (map < need) {
        map *= 2;
    }
    if (map != in->st.map_size) {
        int rc = mdb_env_set_mapsize(in->st.env, map);
        if (rc) {
            return kv_store_fail(&in->st, rc, "grow the map");
        }
        in->st.map_size = map;
    }
    return 0;
}

static int txn_open(struct kv_install *in)
{
    if (in->txn) {
        return 0;
    }
    int rv = make_room(in);
    if (rv) {
        return rv;
    }
    int rc = mdb_txn_begin(in->st.env, NULL, 0, &in->txn);
    if (rc) {
        in->txn = NULL;
        return kv_store_fail(&in->st, rc, "begin");
    }
    in->txn_bytes = 0;
    return 0;
}

static int txn_commit(struct kv_install *in)
{
    if (!in->txn) {
        return 0;
    }
    int rc = mdb_txn_commit(in->txn);
    in->txn = NULL;
    in->txn_bytes = 0;
    if (rc) {
        return kv_store_fail(&in->st, rc, "commit");
    }
    if (in->marked) {
        /* Committed past the mark: there is no going back to it. */
        snap_load_free(&in->ck);
        in->marked = false;
    }
    return 0;
}

int kv_install_feed(struct kv_install *in, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        int rv = txn_open(in);
        if (rv) {
            return rv;
        }
        size_t take = len;
        if (take > in->txn_max - in->txn_bytes) {
            take = (size_t)(in->txn_max - in->txn_bytes);
        }
        rv = snap_load_feed(&in->st, in->txn, &in->l, p, take);
        if (rv) {
            return rv;
        }
        in->txn_bytes += take;
        p += take;
        len -= take;
        if (in->txn_bytes >= in->txn_max) {
            rv = txn_commit(in);
            if (rv) {
                return rv;
            }
        }
    }
    return 0;
}

int kv_install_mark(struct kv_install *in)
{
    int rv = txn_commit(in);
    if (rv) {
        return rv;
    }
    if (in->marked) {
        snap_load_free(&in->ck);
    }
    rv = snap_load_copy(&in->ck, &in->l);
    in->marked = rv == 0;
    return rv;
}

int kv_install_keep(struct kv_install *in)
{
    int rv = txn_commit(in);
    if (in->marked) {
        snap_load_free(&in->ck);
        in->marked = false;
    }
    return rv;
}

void kv_install_undo(struct kv_install *in)
{
    if (in->txn) {
        mdb_txn_abort(in->txn);
        in->txn = NULL;
        in->txn_bytes = 0;
    }
    if (!in->marked) {
        /* A commit went past the mark: what it holds cannot be taken
         * back, so the build cannot go on. */
        in->lost = true;
        return;
    }
    snap_load_free(&in->l);
    in->l = in->ck;
    snap_load_init(&in->ck);
    in->marked = false;
}

int kv_install_finish(struct kv_install *in,
                      struct kv_store *live,
                      MDB_txn *live_txn,
                      uint64_t *index,
                      uint64_t *term,
                      MDB_txn **txn)
{
    *txn = NULL;
    int rv = txn_open(in);
    if (rv) {
        return rv;
    }
    /* The node's own records (its id, its cluster, a restore's mark)
     * first; what the stream says overrides them. */
    MDB_cursor *cur;
    int rc = mdb_cursor_open(live_txn, live->meta, &cur);
    if (rc) {
        return kv_store_fail(live, rc, "open meta cursor");
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        int prc = mdb_put(in->txn, in->st.meta, &k, &v, 0);
        if (prc) {
            mdb_cursor_close(cur);
            return kv_store_fail(&in->st, prc, "copy meta");
        }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        return kv_store_fail(live, rc, "read meta");
    }
    rv = snap_load_end(&in->st, in->txn, &in->l, index, term);
    if (rv) {
        return rv;
    }
    in->bytes = in->l.offset;
    *txn = in->txn;
    return 0;
}

int kv_install_switch(struct kv_install *in, struct kv_store *live)
{
    char from[1100], to[1100];
    int rv = 0;
    if (!in->finished) {
        /* The last commit syncs every page the build wrote, then its meta
         * page: the file is whole on disk before its name moves. */
        int rc = mdb_env_set_flags(in->st.env, MDB_NOSYNC, 0);
        if (!rc) {
            rc = mdb_txn_commit(in->txn);
            in->txn = NULL;
        }
        if (!rc) {
            rc = mdb_env_sync(in->st.env, 1);
        }
        if (rc) {
            rv = kv_store_fail(&in->st, rc, "commit the new state");
            mdb_env_set_flags(in->st.env, MDB_NOSYNC, 1);
            snprintf(live->errmsg, sizeof live->errmsg, "%s", in->st.errmsg);
            goto reopen;
        }
        if (in->st.map_size > in->map_after) {
            in->map_after = in->st.map_size;
        }
        kv_store_close(&in->st);
        snap_load_free(&in->l);
        in->finished = true;
    }
    snprintf(from, sizeof from, "%s/" INCOMING "/data.mdb", in->live);
    snprintf(to, sizeof to, "%s/data.mdb", in->live);
    if (!in->renamed && rename(from, to) != 0) {
        snprintf(live->errmsg, sizeof live->errmsg,
                 "%.1000s: rename " INCOMING "/data.mdb to data.mdb: %s",
                 in->live, strerror(errno));
        rv = errno == ENOSPC ? KV_STORE_ENOSPC : KV_STORE_EIO;
        goto reopen;
    }
    in->renamed = true;
    int err = sync_path(in->live);
    if (err) {
        /* Renamed, not for good yet: a retry syncs again. */
        snprintf(live->errmsg, sizeof live->errmsg,
                 "%s: sync the directory: %s", in->live, strerror(err));
        rv = KV_STORE_EIO;
        goto reopen;
    }
    kv_install_cleanup(in->live); /* the build's lock file */
    in->finished = false;
    in->renamed = false;
reopen:;
    /* Open the store again, on the new state or (after a failure) the
     * old one. */
    size_t map_size =
        in->map_after > live->map_size ? in->map_after : live->map_size;
    char msg[sizeof live->errmsg];
    snprintf(msg, sizeof msg, "%s", live->errmsg);
    int orv = kv_store_open(live, in->live, map_size);
    if (rv) {
        snprintf(live->errmsg, sizeof live->errmsg, "%s", msg);
        return rv;
    }
    return orv;
}
