/* snap.c: snapshot streams of kv and sessions; staging and installing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snap.h"
#include "wal.h"

#define MAGIC           "RKVSNAP4" /* store format 5 */
#define MAGIC_V3        "RKVSNAP3" /* format 4: read as it is */
#define MAGIC_V2        "RKVSNAP2" /* before revisions: kinds 1-3 only */
#define HEADER_SIZE     SNAP_HEADER_SIZE
#define RECORD_HEAD     SNAP_RECORD_HEAD
#define KIND_KV         SNAP_KIND_KV
#define KIND_SESSION    SNAP_KIND_SESSION
#define KIND_AUTH       SNAP_KIND_AUTH
#define KIND_HISTORY    SNAP_KIND_HISTORY
#define KIND_KVMETA     SNAP_KIND_KVMETA
#define KIND_LEASE      SNAP_KIND_LEASE
#define KIND_END        SNAP_KIND_END
#define SNAP_MAX_RECORD (64u << 20) /* far above key + value limits */

enum {
    PH_HEADER,
    PH_KV,
    PH_SESSIONS,
    PH_AUTH,
    PH_HISTORY,
    PH_KVMETA,
    PH_LEASES,
    PH_TRAILER,
    PH_DONE
};

/* The databases a snapshot holds, in stream order (phase PH_KV + i). */
#define N_KINDS 6
static const uint8_t kinds[N_KINDS] = {KIND_KV,      KIND_SESSION, KIND_AUTH,
                                       KIND_HISTORY, KIND_KVMETA,  KIND_LEASE};

static MDB_dbi kind_dbi(const struct kv_store *st, uint8_t kind)
{
    switch (kind) {
        case KIND_KV:
            return st->kv;
        case KIND_SESSION:
            return st->sessions;
        case KIND_AUTH:
            return st->auth;
        case KIND_HISTORY:
            return st->history;
        case KIND_LEASE:
            return st->leases;
        default:
            return st->kvmeta;
    }
}

void snap_put_header(uint8_t *out,
                     uint64_t index,
                     uint64_t term,
                     uint64_t cluster_id)
{
    memcpy(out, MAGIC, 8);
    kv_put_u64(out + 8, index);
    kv_put_u64(out + 16, term);
    kv_put_u64(out + 24, cluster_id);
}

void snap_put_record_head(uint8_t *out,
                          uint8_t kind,
                          uint32_t key_len,
                          uint32_t value_len)
{
    out[0] = kind;
    kv_put_u32(out + 1, key_len);
    kv_put_u32(out + 5, value_len);
}

void snap_put_trailer(uint8_t *out, uint64_t records, uint32_t crc)
{
    out[0] = KIND_END;
    kv_put_u64(out + 1, records);
    kv_put_u32(out + 9, kv_crc32c(crc, out, 9));
}

static bool pend_reserve(struct snap_stream *s, size_t n)
{
    if (n <= s->pend_cap) {
        return true;
    }
    uint8_t *p = realloc(s->pend, n);
    if (!p) {
        return false;
    }
    s->pend = p;
    s->pend_cap = n;
    return true;
}

int snap_stream_open(struct kv_store *st, struct snap_stream *s)
{
    memset(s, 0, sizeof *s);
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &s->txn);
    if (rc) {
        return kv_store_fail(st, rc, "begin snapshot read");
    }
    struct kv_meta m;
    int rv = kv_store_read_meta(st, s->txn, &m);
    if (rv) {
        snap_stream_close(s);
        return rv;
    }
    s->index = m.applied;
    s->term = m.applied_term;
    s->cluster_id = m.cluster_id;
    s->phase = PH_HEADER;
    return 0;
}

void snap_stream_close(struct snap_stream *s)
{
    if (s->cur) {
        mdb_cursor_close(s->cur);
    }
    if (s->txn) {
        mdb_txn_abort(s->txn);
    }
    free(s->pend);
    memset(s, 0, sizeof *s);
}

/* Fill pend with the next record; phase moves on as databases end. */
static int next_record(struct kv_store *st, struct snap_stream *s)
{
    s->pend_len = s->pend_off = 0;
    for (;;) {
        if (s->phase == PH_HEADER) {
            if (!pend_reserve(s, HEADER_SIZE)) {
                return KV_STORE_ENOMEM;
            }
            snap_put_header(s->pend, s->index, s->term, s->cluster_id);
            s->pend_len = HEADER_SIZE;
            s->crc = kv_crc32c(0, s->pend, s->pend_len);
            s->phase = PH_KV;
            return 0;
        }
        if (s->phase == PH_TRAILER) {
            if (!pend_reserve(s, SNAP_TRAILER_SIZE)) {
                return KV_STORE_ENOMEM;
            }
            snap_put_trailer(s->pend, s->records, s->crc);
            s->pend_len = SNAP_TRAILER_SIZE;
            s->phase = PH_DONE;
            return 0;
        }
        if (s->phase == PH_DONE) {
            return 0;
        }
        uint8_t kind = kinds[s->phase - PH_KV];
        MDB_dbi dbi = kind_dbi(st, kind);
        MDB_val k, v;
        int rc;
        if (!s->cur) {
            rc = mdb_cursor_open(s->txn, dbi, &s->cur);
            if (rc) {
                return kv_store_fail(st, rc, "open snapshot cursor");
            }
            rc = mdb_cursor_get(s->cur, &k, &v, MDB_FIRST);
        } else {
            rc = mdb_cursor_get(s->cur, &k, &v, MDB_NEXT);
        }
        if (rc == MDB_NOTFOUND) {
            mdb_cursor_close(s->cur);
            s->cur = NULL;
            s->phase++;
            continue;
        }
        if (rc) {
            return kv_store_fail(st, rc, "read snapshot");
        }
        size_t n = RECORD_HEAD + k.mv_size + v.mv_size;
        if (!pend_reserve(s, n)) {
            return KV_STORE_ENOMEM;
        }
        snap_put_record_head(s->pend, kind, (uint32_t)k.mv_size,
                             (uint32_t)v.mv_size);
        memcpy(s->pend + RECORD_HEAD, k.mv_data, k.mv_size);
        if (v.mv_size) {
            memcpy(s->pend + RECORD_HEAD + k.mv_size, v.mv_data, v.mv_size);
        }
        s->pend_len = n;
        s->crc = kv_crc32c(s->crc, s->pend, n);
        s->records++;
        return 0;
    }
}

int snap_stream_read(struct kv_store *st,
                     struct snap_stream *s,
                     uint8_t *buf,
                     size_t max,
                     size_t *len,
                     bool *done)
{
    size_t out = 0;
    *done = false;
    while (out < max) {
        if (s->pend_off == s->pend_len) {
            if (s->phase == PH_DONE) {
                break;
            }
            int rv = next_record(st, s);
            if (rv) {
                return rv;
            }
            continue;
        }
        size_t take = s->pend_len - s->pend_off;
        if (take > max - out) {
            take = max - out;
        }
        memcpy(buf + out, s->pend + s->pend_off, take);
        s->pend_off += take;
        out += take;
    }
    *len = out;
    s->offset += out;
    *done = s->phase == PH_DONE && s->pend_off == s->pend_len;
    return 0;
}

void snap_check_add(struct snap_check *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    size_t held = c->len < 4 ? (size_t)c->len : 4;
    /* The 4 bytes held back are not the last ones any more: take into the
     * checksum what now has at least 4 bytes after it. */
    if (len >= 4) {
        c->crc = kv_crc32c(c->crc, c->tail, held);
        c->crc = kv_crc32c(c->crc, p, len - 4);
        memcpy(c->tail, p + len - 4, 4);
    } else {
        uint8_t all[8];
        memcpy(all, c->tail, held);
        memcpy(all + held, p, len);
        size_t n = held + len, keep = n < 4 ? n : 4;
        c->crc = kv_crc32c(c->crc, all, n - keep);
        memcpy(c->tail, all + n - keep, keep);
    }
    c->len += len;
}

bool snap_check_ok(const struct snap_check *c)
{
    return c->len >= HEADER_SIZE + 13 && kv_get_u32(c->tail) == c->crc;
}

int snap_stage(struct kv_store *st,
               MDB_txn *txn,
               uint64_t offset,
               const void *data,
               size_t len)
{
    int rc;
    if (offset == 0) {
        rc = mdb_drop(txn, st->staging, 0);
        if (rc) {
            return kv_store_fail(st, rc, "clear snapshot staging");
        }
    }
    uint8_t key[8];
    kv_put_u64(key, offset);
    MDB_val k = {8, key}, v = {len, (void *)data};
    rc = mdb_put(txn, st->staging, &k, &v, 0);
    return rc ? kv_store_fail(st, rc, "stage snapshot chunk") : 0;
}

static int corrupt(struct kv_store *st, const char *why, uint64_t offset)
{
    snprintf(st->errmsg, sizeof st->errmsg,
             "%s: received snapshot is damaged at byte %llu: %s", st->dir,
             (unsigned long long)offset, why);
    return KV_STORE_ECORRUPT;
}

/* A key's record names its lease (mvcc.h: lease at byte 24): the lease's
 * index of its keys is made from the records, not carried in the stream. */
static int index_lease_key(struct kv_store *st,
                           MDB_txn *txn,
                           const MDB_val *k,
                           const MDB_val *v)
{
    if (v->mv_size < 32) {
        return 0; /* not a record: the state machine finds it damaged */
    }
    uint64_t lease = kv_get_u64((const uint8_t *)v->mv_data + 24);
    if (lease == 0 ||
        k->mv_size + 8 > (size_t)mdb_env_get_maxkeysize(st->env)) {
        return 0;
    }
    uint8_t key[8 + 512];
    kv_put_u64(key, lease);
    memcpy(key + 8, k->mv_data, k->mv_size);
    MDB_val lk = {8 + k->mv_size, key}, empty = {0, ""};
    int rc = mdb_put(txn, st->lease_keys, &lk, &empty, 0);
    return rc ? kv_store_fail(st, rc, "install a lease's key") : 0;
}

/* A part of the stream is complete in l->buf: act on it. */
static int handle_part(struct kv_store *st,
                       MDB_txn *txn,
                       struct snap_load *l,
                       uint64_t offset)
{
    int rc;
    if (l->part != 4) {
        l->crc = kv_crc32c(l->crc, l->buf, l->need);
    }
    switch (l->part) {
        case 0:
            l->v2 = memcmp(l->buf, MAGIC_V2, 8) == 0;
            if (memcmp(l->buf, MAGIC, 8) != 0 &&
                memcmp(l->buf, MAGIC_V3, 8) != 0 && !l->v2) {
                return corrupt(st, "no RKVSNAP4 (or RKVSNAP3, RKVSNAP2) header",
                               offset);
            }
            l->index = kv_get_u64(l->buf + 8);
            l->term = kv_get_u64(l->buf + 16);
            l->cluster_id = kv_get_u64(l->buf + 24);
            l->part = 1;
            l->need = RECORD_HEAD;
            return 0;
        case 1:
            l->kind = l->buf[0];
            if (l->kind == KIND_END) {
                if (kv_get_u64(l->buf + 1) != l->records) {
                    return corrupt(st, "record count does not match", offset);
                }
                l->part = 4;
                l->need = 4;
                return 0;
            }
            if (l->kind < KIND_KV ||
                l->kind > (l->v2 ? KIND_AUTH : KIND_LEASE)) {
                return corrupt(st, "unknown record kind", offset);
            }
            l->klen = kv_get_u32(l->buf + 1);
            l->need = (size_t)l->klen + kv_get_u32(l->buf + 5);
            l->part = 2;
            if (l->klen == 0) {
                return corrupt(st, "empty key", offset);
            }
            if (l->need > SNAP_MAX_RECORD) {
                return corrupt(st, "record longer than any key and value",
                               offset);
            }
            return 0;
        case 2: {
            MDB_val k = {l->klen, l->buf},
                    v = {l->need - l->klen, l->buf + l->klen};
            /* A stream is read out with cursors, so each database's
             * records come in key order: appended, they fill whole pages
             * and cost no search. */
            rc = mdb_put(txn, kind_dbi(st, l->kind), &k, &v, MDB_APPEND);
            if (rc == MDB_KEYEXIST) {
                return corrupt(st, "records out of order", offset);
            }
            if (rc) {
                return kv_store_fail(st, rc, "install snapshot record");
            }
            if (l->kind == KIND_KV && !l->v2) {
                rc = index_lease_key(st, txn, &k, &v);
                if (rc) {
                    return rc;
                }
            }
            if (l->kind == KIND_SESSION) {
                if (v.mv_size < 16 || k.mv_size != 16) {
                    return corrupt(st, "bad session record", offset);
                }
                uint8_t agekey[24];
                memcpy(agekey, (uint8_t *)v.mv_data + 8, 8);
                memcpy(agekey + 8, k.mv_data, 16);
                MDB_val ak = {24, agekey}, empty = {0, ""};
                rc = mdb_put(txn, st->session_age, &ak, &empty, 0);
                if (rc) {
                    return kv_store_fail(st, rc, "install session age");
                }
            }
            l->records++;
            l->part = 1;
            l->need = RECORD_HEAD;
            return 0;
        }
        case 4:
            if (kv_get_u32(l->buf) != l->crc) {
                return corrupt(st, "checksum mismatch", offset);
            }
            l->part = 3;
            l->need = 0;
            return 0;
        default:
            return corrupt(st, "bytes after the end", offset);
    }
}

void snap_load_init(struct snap_load *l)
{
    memset(l, 0, sizeof *l);
    l->need = HEADER_SIZE;
}

void snap_load_free(struct snap_load *l)
{
    free(l->buf);
    snap_load_init(l);
}

int snap_load_copy(struct snap_load *dst, const struct snap_load *src)
{
    *dst = *src;
    dst->buf = NULL;
    dst->cap = 0;
    if (src->have) {
        dst->buf = malloc(src->need);
        if (!dst->buf) {
            return KV_STORE_ENOMEM;
        }
        dst->cap = src->need;
        memcpy(dst->buf, src->buf, src->have);
    }
    return 0;
}

int snap_load_feed(struct kv_store *st,
                   MDB_txn *txn,
                   struct snap_load *l,
                   const void *data,
                   size_t len)
{
    const uint8_t *d = data;
    size_t pos = 0;
    while (pos < len) {
        if (l->part == 3) {
            return corrupt(st, "bytes after the end", l->offset + pos);
        }
        if (l->need > l->cap) {
            uint8_t *nb = realloc(l->buf, l->need);
            if (!nb) {
                return KV_STORE_ENOMEM;
            }
            l->buf = nb;
            l->cap = l->need;
        }
        size_t take = l->need - l->have;
        if (take > len - pos) {
            take = len - pos;
        }
        memcpy(l->buf + l->have, d + pos, take);
        l->have += take;
        pos += take;
        if (l->have == l->need) {
            l->have = 0;
            int rv = handle_part(st, txn, l, l->offset + pos);
            if (rv) {
                return rv;
            }
        }
    }
    l->offset += len;
    return 0;
}

int snap_load_end(struct kv_store *st,
                  MDB_txn *txn,
                  struct snap_load *l,
                  uint64_t *index,
                  uint64_t *term)
{
    if (l->part != 3) {
        return corrupt(st, "stream ends early", l->offset);
    }
    if (l->cluster_id) {
        /* The state belongs to the sender's cluster: so does this node. */
        int rv = kv_store_put_meta(st, txn, "cluster", l->cluster_id);
        if (rv) {
            return rv;
        }
    }
    /* The state is the stream's now, and so is its format: values without
     * revisions from an RKVSNAP2 stream are upgraded by the state machine
     * (kv_sm_install, kv_sm_install_done); should it not, the store still
     * says what they are. */
    uint64_t format = l->v2 ? KV_STORE_FORMAT_OLD : KV_STORE_FORMAT;
    int rv = kv_store_put_meta(st, txn, "format", format);
    if (rv) {
        return rv;
    }
    st->format = format;
    *index = l->index;
    *term = l->term;
    return 0;
}

int snap_install(struct kv_store *st,
                 MDB_txn *txn,
                 uint64_t *index,
                 uint64_t *term)
{
    int rc;
    MDB_dbi clear[] = {st->kv,     st->sessions,  st->session_age,
                       st->auth,   st->history,   st->kvmeta,
                       st->leases, st->lease_keys};
    st->lease_news.all = true; /* the leases change with the state */
    kv_lease_counts_forget(st);
    for (size_t i = 0; i < sizeof clear / sizeof clear[0]; i++) {
        rc = mdb_drop(txn, clear[i], 0);
        if (rc) {
            return kv_store_fail(st, rc, "clear state for snapshot");
        }
    }
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, st->staging, &cur);
    if (rc) {
        return kv_store_fail(st, rc, "open staging cursor");
    }
    struct snap_load l;
    snap_load_init(&l);
    int rv = 0;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !rv;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || kv_get_u64(k.mv_data) != l.offset) {
            rv = corrupt(st, "chunks are not contiguous", l.offset);
            break;
        }
        rv = snap_load_feed(st, txn, &l, v.mv_data, v.mv_size);
    }
    mdb_cursor_close(cur);
    if (!rv && rc != MDB_NOTFOUND) {
        rv = kv_store_fail(st, rc, "read staging");
    }
    if (!rv) {
        rc = mdb_drop(txn, st->staging, 0);
        rv = rc ? kv_store_fail(st, rc, "clear staging") : 0;
    }
    if (!rv) {
        rv = snap_load_end(st, txn, &l, index, term);
    }
    snap_load_free(&l);
    return rv;
}
