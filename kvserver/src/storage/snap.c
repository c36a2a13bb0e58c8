/* snap.c: snapshot streams of kv and sessions; staging and installing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snap.h"
#include "wal.h"

#define MAGIC           "RKVSNAP4" /* store format 5 */
#define MAGIC_V3        "RKVSNAP3" /* format 4: read as it is */
#define MAGIC_V2        "RKVSNAP2" /* before revisions: kinds 1-3 only */
#define HEADER_SIZE     32
#define RECORD_HEAD     9
#define KIND_KV         1
#define KIND_SESSION    2
#define KIND_AUTH       3 /* users, roles, auth settings (auth.c) */
#define KIND_HISTORY    4 /* revision|sub -> change (mvcc.c) */
#define KIND_KVMETA     5 /* the state machine's numbers (mvcc.c) */
#define KIND_LEASE      6 /* lease id -> its grant (lease.c) */
#define KIND_END        0xFF
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
            memcpy(s->pend, MAGIC, 8);
            kv_put_u64(s->pend + 8, s->index);
            kv_put_u64(s->pend + 16, s->term);
            kv_put_u64(s->pend + 24, s->cluster_id);
            s->pend_len = HEADER_SIZE;
            s->crc = kv_crc32c(0, s->pend, s->pend_len);
            s->phase = PH_KV;
            return 0;
        }
        if (s->phase == PH_TRAILER) {
            if (!pend_reserve(s, 13)) {
                return KV_STORE_ENOMEM;
            }
            s->pend[0] = KIND_END;
            kv_put_u64(s->pend + 1, s->records);
            kv_put_u32(s->pend + 9, kv_crc32c(s->crc, s->pend, 9));
            s->pend_len = 13;
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
        s->pend[0] = kind;
        kv_put_u32(s->pend + 1, (uint32_t)k.mv_size);
        kv_put_u32(s->pend + 5, (uint32_t)v.mv_size);
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

/* Incremental parser of a staged stream. */
struct parser
{
    uint8_t *buf;        /* bytes of the part being collected */
    size_t have;         /* bytes in buf */
    size_t cap;          /* allocated */
    size_t need;         /* bytes the current part needs */
    int part;            /* 0 header, 1 record head, 2 record body,
                            4 checksum, 3 end */
    uint32_t crc;        /* CRC-32C of the parts so far */
    uint8_t kind;        /* current record's kind */
    uint32_t klen;       /* its key length */
    uint64_t records;    /* records installed */
    uint64_t index;      /* from the header */
    uint64_t term;       /* from the header */
    uint64_t cluster_id; /* from the header (0: not known then) */
    bool v2;             /* an RKVSNAP2 stream (before revisions) */
};

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

/* A part of the stream is complete in p->buf: act on it. */
static int handle_part(struct kv_store *st,
                       MDB_txn *txn,
                       struct parser *p,
                       uint64_t offset)
{
    int rc;
    if (p->part != 4) {
        p->crc = kv_crc32c(p->crc, p->buf, p->need);
    }
    switch (p->part) {
        case 0:
            p->v2 = memcmp(p->buf, MAGIC_V2, 8) == 0;
            if (memcmp(p->buf, MAGIC, 8) != 0 &&
                memcmp(p->buf, MAGIC_V3, 8) != 0 && !p->v2) {
                return corrupt(st, "no RKVSNAP4 (or RKVSNAP3, RKVSNAP2) header",
                               offset);
            }
            p->index = kv_get_u64(p->buf + 8);
            p->term = kv_get_u64(p->buf + 16);
            p->cluster_id = kv_get_u64(p->buf + 24);
            p->part = 1;
            p->need = RECORD_HEAD;
            return 0;
        case 1:
            p->kind = p->buf[0];
            if (p->kind == KIND_END) {
                if (kv_get_u64(p->buf + 1) != p->records) {
                    return corrupt(st, "record count does not match", offset);
                }
                p->part = 4;
                p->need = 4;
                return 0;
            }
            if (p->kind < KIND_KV ||
                p->kind > (p->v2 ? KIND_AUTH : KIND_LEASE)) {
                return corrupt(st, "unknown record kind", offset);
            }
            p->klen = kv_get_u32(p->buf + 1);
            p->need = (size_t)p->klen + kv_get_u32(p->buf + 5);
            p->part = 2;
            if (p->klen == 0) {
                return corrupt(st, "empty key", offset);
            }
            if (p->need > SNAP_MAX_RECORD) {
                return corrupt(st, "record longer than any key and value",
                               offset);
            }
            return 0;
        case 2: {
            MDB_val k = {p->klen, p->buf},
                    v = {p->need - p->klen, p->buf + p->klen};
            rc = mdb_put(txn, kind_dbi(st, p->kind), &k, &v, 0);
            if (rc) {
                return kv_store_fail(st, rc, "install snapshot record");
            }
            if (p->kind == KIND_KV && !p->v2) {
                rc = index_lease_key(st, txn, &k, &v);
                if (rc) {
                    return rc;
                }
            }
            if (p->kind == KIND_SESSION) {
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
            p->records++;
            p->part = 1;
            p->need = RECORD_HEAD;
            return 0;
        }
        case 4:
            if (kv_get_u32(p->buf) != p->crc) {
                return corrupt(st, "checksum mismatch", offset);
            }
            p->part = 3;
            p->need = 0;
            return 0;
        default:
            return corrupt(st, "bytes after the end", offset);
    }
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
    struct parser p = {.need = HEADER_SIZE};
    uint64_t expect = 0;
    int rv = 0;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !rv;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || kv_get_u64(k.mv_data) != expect) {
            rv = corrupt(st, "chunks are not contiguous", expect);
            break;
        }
        const uint8_t *d = v.mv_data;
        size_t pos = 0;
        while (pos < v.mv_size && !rv) {
            if (p.part == 3) {
                rv = corrupt(st, "bytes after the end", expect + pos);
                break;
            }
            if (p.need > p.cap) {
                uint8_t *nb = realloc(p.buf, p.need);
                if (!nb) {
                    rv = KV_STORE_ENOMEM;
                    break;
                }
                p.buf = nb;
                p.cap = p.need;
            }
            size_t take = p.need - p.have;
            if (take > v.mv_size - pos) {
                take = v.mv_size - pos;
            }
            memcpy(p.buf + p.have, d + pos, take);
            p.have += take;
            pos += take;
            if (p.have == p.need) {
                p.have = 0;
                rv = handle_part(st, txn, &p, expect + pos);
            }
        }
        expect += v.mv_size;
    }
    mdb_cursor_close(cur);
    free(p.buf);
    if (rv) {
        return rv;
    }
    if (rc != MDB_NOTFOUND) {
        return kv_store_fail(st, rc, "read staging");
    }
    if (p.part != 3) {
        return corrupt(st, "stream ends early", expect);
    }
    rc = mdb_drop(txn, st->staging, 0);
    if (rc) {
        return kv_store_fail(st, rc, "clear staging");
    }
    if (p.cluster_id) {
        /* The state belongs to the sender's cluster: so does this node. */
        int rv2 = kv_store_put_meta(st, txn, "cluster", p.cluster_id);
        if (rv2) {
            return rv2;
        }
    }
    /* The state is the stream's now, and so is its format: values without
     * revisions from an RKVSNAP2 stream are upgraded by the state machine
     * in this transaction (kv_sm_install); should it not, the store still
     * says what they are. */
    uint64_t format = p.v2 ? KV_STORE_FORMAT_OLD : KV_STORE_FORMAT;
    int rv2 = kv_store_put_meta(st, txn, "format", format);
    if (rv2) {
        return rv2;
    }
    st->format = format;
    *index = p.index;
    *term = p.term;
    return 0;
}
