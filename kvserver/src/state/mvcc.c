/* mvcc.c: revisions, key records, ranges and the history (see mvcc.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease.h"
#include "mvcc.h"

#define REC_OVERHEAD 16 /* about what a KeyValue costs on the wire */

/* ------------------------------------------------------------- arena */

static void *arena_keep(struct kv_arena *a, void *p)
{
    if (!p) {
        return NULL;
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        void **b = realloc(a->blocks, cap * sizeof *b);
        if (!b) {
            free(p);
            return NULL;
        }
        a->blocks = b;
        a->cap = cap;
    }
    a->blocks[a->n++] = p;
    return p;
}

void *kv_arena_alloc(struct kv_arena *a, size_t n)
{
    return arena_keep(a, calloc(1, n ? n : 1));
}

void *kv_arena_dup(struct kv_arena *a, const void *p, size_t n)
{
    void *q = arena_keep(a, malloc(n ? n : 1));
    if (q && n) {
        memcpy(q, p, n);
    }
    return q;
}

void kv_arena_free(struct kv_arena *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->blocks[i]);
    }
    free(a->blocks);
    memset(a, 0, sizeof *a);
}

/* ----------------------------------------------------------- records */

static void header_decode(const uint8_t *p, struct kv_rec *r)
{
    r->create = kv_get_u64(p);
    r->mod = kv_get_u64(p + 8);
    r->version = kv_get_u64(p + 16);
    r->lease = kv_get_u64(p + 24);
}

int kv_rec_decode(const MDB_val *v, struct kv_rec *r)
{
    if (v->mv_size < KV_REC_HEAD) {
        return -1;
    }
    const uint8_t *p = v->mv_data;
    header_decode(p, r);
    if (p[KV_REC_HEADER] == KV_REC_REF) {
        if (v->mv_size != KV_REC_HEAD + 4) {
            return -1;
        }
        r->ref = true;
        r->ref_sub = kv_get_u32(p + KV_REC_HEAD);
        r->value = NULL;
        r->value_len = 0;
        return 0;
    }
    if (p[KV_REC_HEADER] != KV_REC_INLINE) {
        return -1;
    }
    r->ref = false;
    r->ref_sub = 0;
    r->value = p + KV_REC_HEAD;
    r->value_len = v->mv_size - KV_REC_HEAD;
    return 0;
}

/* One history event, decoded (pointers into its value). */
struct kv_event
{
    bool put;           /* a put (else a delete) */
    const uint8_t *key; /* the key */
    size_t key_len;     /* its length */
    struct kv_rec rec;  /* a put's record, its value in place */
    bool has_prev;      /* it says where the key's version before is */
    uint64_t prev_mod;  /* that version's event: revision */
    uint32_t prev_sub;  /* and sub (KV_PREV_GONE: not kept) */
};

static int event_decode(const MDB_val *v, struct kv_event *e)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < KV_HIST_HEAD || p[0] > KV_EVENT_DEL_PREV) {
        return -1;
    }
    size_t klen = kv_get_u32(p + 1);
    if (KV_HIST_HEAD + klen > v->mv_size) {
        return -1;
    }
    memset(e, 0, sizeof *e);
    e->put = p[0] == KV_EVENT_PUT || p[0] == KV_EVENT_PUT_PREV;
    e->has_prev = p[0] == KV_EVENT_PUT_PREV || p[0] == KV_EVENT_DEL_PREV;
    e->key = p + KV_HIST_HEAD;
    e->key_len = klen;
    size_t off = KV_HIST_HEAD + klen;
    if (e->put) {
        if (off + KV_REC_HEADER > v->mv_size) {
            return -1;
        }
        header_decode(p + off, &e->rec);
        off += KV_REC_HEADER;
    }
    if (e->has_prev) {
        if (off + KV_HIST_PREV > v->mv_size) {
            return -1;
        }
        e->prev_mod = kv_get_u64(p + off);
        e->prev_sub = kv_get_u32(p + off + 8);
        off += KV_HIST_PREV;
    }
    if (e->put) {
        e->rec.value = p + off;
        e->rec.value_len = v->mv_size - off;
    } else if (off != v->mv_size) {
        return -1;
    }
    return 0;
}

static void rec_header(uint8_t *p, const struct kv_rec *r)
{
    kv_put_u64(p, r->create);
    kv_put_u64(p + 8, r->mod);
    kv_put_u64(p + 16, r->version);
    kv_put_u64(p + 24, r->lease);
}

static int damaged(struct kv_store *st, const char *what)
{
    snprintf(st->errmsg, sizeof st->errmsg, "%s: %s is damaged", st->dir, what);
    return KV_STORE_ECORRUPT;
}

/* kvmeta "revs": revision (8) | compact (8) | hist_bytes (8), written
 * once per change. */
#define REVS_KEY "revs"

int kv_mvcc_revs(struct kv_store *st, MDB_txn *txn, struct kv_revs *r)
{
    MDB_val k = {sizeof REVS_KEY - 1, REVS_KEY}, v;
    int rc = mdb_get(txn, st->kvmeta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        r->revision = 1; /* a fresh store, as etcd's */
        r->compact = 0;
        r->hist_bytes = 0;
        return 0;
    }
    if (rc) {
        return kv_store_fail(st, rc, "read kvmeta");
    }
    if (v.mv_size != 24) {
        return damaged(st, "kvmeta");
    }
    const uint8_t *p = v.mv_data;
    r->revision = kv_get_u64(p);
    r->compact = kv_get_u64(p + 8);
    r->hist_bytes = kv_get_u64(p + 16);
    return 0;
}

static int put_revs(struct kv_store *st, MDB_txn *txn, const struct kv_revs *r)
{
    uint8_t buf[24];
    kv_put_u64(buf, r->revision);
    kv_put_u64(buf + 8, r->compact);
    kv_put_u64(buf + 16, r->hist_bytes);
    MDB_val k = {sizeof REVS_KEY - 1, REVS_KEY}, v = {sizeof buf, buf};
    int rc = mdb_put(txn, st->kvmeta, &k, &v, 0);
    return rc ? kv_store_fail(st, rc, "write kvmeta") : 0;
}

static void hist_key(uint8_t *p, uint64_t rev, uint32_t sub)
{
    kv_put_u64(p, rev);
    kv_put_u32(p + 8, sub);
}

/* A record that refers to its put event: find its value there. */
static int rec_resolve(struct kv_store *st, MDB_txn *txn, struct kv_rec *r)
{
    if (!r->ref) {
        return 0;
    }
    uint8_t hk[KV_HIST_KEY];
    hist_key(hk, r->mod, r->ref_sub);
    MDB_val k = {sizeof hk, hk}, v;
    int rc = mdb_get(txn, st->history, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return damaged(st, "the history (a key's value is missing)");
    }
    if (rc) {
        return kv_store_fail(st, rc, "read a value in the history");
    }
    struct kv_event e;
    if (event_decode(&v, &e) || !e.put) {
        return damaged(st, "the history (a key's value)");
    }
    r->value = e.rec.value;
    r->value_len = e.rec.value_len;
    return 0;
}

/* A key's record, its value found only when @want_value. */
static int rec_get(struct kv_store *st,
                   MDB_txn *txn,
                   const void *key,
                   size_t key_len,
                   bool want_value,
                   struct kv_rec *r)
{
    MDB_val k = {key_len, (void *)key}, v;
    int rc = mdb_get(txn, st->kv, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return rc;
    }
    if (rc) {
        return kv_store_fail(st, rc, "read key");
    }
    if (kv_rec_decode(&v, r)) {
        return damaged(st, "a key's record");
    }
    return want_value ? rec_resolve(st, txn, r) : 0;
}

int kv_mvcc_get(struct kv_store *st,
                MDB_txn *txn,
                const void *key,
                size_t key_len,
                struct kv_rec *r)
{
    return rec_get(st, txn, key, key_len, true, r);
}

/* ------------------------------------------------------------ ranges */

static int cmp_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) {
        return c;
    }
    return alen < blen ? -1 : alen > blen;
}

static bool end_is_open(const ProtobufCBinaryData *end)
{
    return end->len == 1 && end->data[0] == 0;
}

bool kv_range_has(const ProtobufCBinaryData *key,
                  const ProtobufCBinaryData *range_end,
                  const void *k,
                  size_t k_len)
{
    if (range_end->len == 0) {
        return cmp_bytes(k, k_len, key->data, key->len) == 0;
    }
    if (cmp_bytes(k, k_len, key->data, key->len) < 0) {
        return false;
    }
    return end_is_open(range_end) ||
           cmp_bytes(k, k_len, range_end->data, range_end->len) < 0;
}

int kv_mvcc_check_range(struct kv_store *st,
                        const ProtobufCBinaryData *key,
                        const ProtobufCBinaryData *range_end,
                        char *why,
                        size_t why_size)
{
    size_t max = (size_t)mdb_env_get_maxkeysize(st->env);
    if (key->len == 0) {
        snprintf(why, why_size, "empty key");
        return RAFTKV__KV_ERROR__KV_BAD_REQUEST;
    }
    if (key->len > max || range_end->len > max) {
        snprintf(why, why_size, "key of %zu bytes is over the limit of %zu",
                 key->len > max ? key->len : range_end->len, max);
        return RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE;
    }
    if (range_end->len && !end_is_open(range_end) &&
        cmp_bytes(range_end->data, range_end->len, key->data, key->len) <= 0) {
        snprintf(why, why_size, "range_end is not after key");
        return RAFTKV__KV_ERROR__KV_BAD_REQUEST;
    }
    return RAFTKV__KV_ERROR__KV_OK;
}

/* Walks the keys of a range in key order, ascending or descending. */
struct walk
{
    MDB_cursor *cur;
    const ProtobufCBinaryData *key, *end;
    bool descend;
    bool started;
};

static int walk_open(struct kv_store *st,
                     MDB_txn *txn,
                     struct walk *w,
                     const ProtobufCBinaryData *key,
                     const ProtobufCBinaryData *end,
                     bool descend)
{
    memset(w, 0, sizeof *w);
    w->key = key;
    w->end = end;
    w->descend = descend && end->len != 0; /* one key: no order */
    int rc = mdb_cursor_open(txn, st->kv, &w->cur);
    return rc ? kv_store_fail(st, rc, "open range cursor") : 0;
}

/* The next key of the range: 0, MDB_NOTFOUND at its end, or an error. */
static int walk_next(struct kv_store *st,
                     struct walk *w,
                     MDB_val *k,
                     MDB_val *v)
{
    int rc;
    if (!w->started) {
        w->started = true;
        if (!w->descend) {
            *k = (MDB_val){w->key->len, w->key->data};
            rc = mdb_cursor_get(w->cur, k, v, MDB_SET_RANGE);
        } else if (end_is_open(w->end)) {
            rc = mdb_cursor_get(w->cur, k, v, MDB_LAST);
        } else {
            *k = (MDB_val){w->end->len, w->end->data};
            rc = mdb_cursor_get(w->cur, k, v, MDB_SET_RANGE);
            if (rc == 0) {
                rc = mdb_cursor_get(w->cur, k, v, MDB_PREV);
            } else if (rc == MDB_NOTFOUND) {
                rc = mdb_cursor_get(w->cur, k, v, MDB_LAST);
            }
        }
    } else {
        rc = mdb_cursor_get(w->cur, k, v, w->descend ? MDB_PREV : MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND) {
        return rc;
    }
    if (rc) {
        return kv_store_fail(st, rc, "read range");
    }
    if (!kv_range_has(w->key, w->end, k->mv_data, k->mv_size)) {
        return MDB_NOTFOUND;
    }
    return 0;
}

static void walk_close(struct walk *w)
{
    if (w->cur) {
        mdb_cursor_close(w->cur);
    }
}

/* A growing list of KeyValues in an arena. */
struct kv_list
{
    Raftkv__KeyValue **items;
    size_t n, cap;
    Raftkv__KeyValue *block; /* where the next ones are made */
    size_t block_left;
};

static Raftkv__KeyValue *list_add(struct kv_arena *mem, struct kv_list *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        Raftkv__KeyValue **items = kv_arena_alloc(mem, cap * sizeof *items);
        if (!items) {
            return NULL;
        }
        if (l->n) {
            memcpy(items, l->items, l->n * sizeof *items);
        }
        l->items = items;
        l->cap = cap;
    }
    if (!l->block_left) {
        size_t n = l->n < 256 ? 16 : 256;
        l->block = kv_arena_alloc(mem, n * sizeof *l->block);
        if (!l->block) {
            return NULL;
        }
        l->block_left = n;
    }
    Raftkv__KeyValue *kv = l->block++;
    l->block_left--;
    raftkv__key_value__init(kv);
    l->items[l->n++] = kv;
    return kv;
}

/* Fill a KeyValue from a stored key and record. */
static int fill_kv(struct kv_arena *mem,
                   Raftkv__KeyValue *kv,
                   const MDB_val *k,
                   const struct kv_rec *r,
                   bool with_value,
                   bool copy)
{
    kv->create_revision = r->create;
    kv->mod_revision = r->mod;
    kv->version = r->version;
    kv->lease = r->lease;
    kv->key.len = k->mv_size;
    kv->key.data = copy ? kv_arena_dup(mem, k->mv_data, k->mv_size)
                        : (uint8_t *)k->mv_data;
    if (with_value && r->value_len) {
        kv->value.len = r->value_len;
        kv->value.data = copy ? kv_arena_dup(mem, r->value, r->value_len)
                              : (uint8_t *)r->value;
        if (!kv->value.data) {
            return KV_STORE_ENOMEM;
        }
    }
    return kv->key.data ? 0 : KV_STORE_ENOMEM;
}

static bool is_everything(const Raftkv__RangeArgs *a)
{
    return a->key.len == 1 && a->key.data[0] == 0 && end_is_open(&a->range_end);
}

/* The rest of a range after key @k (the last one walked) is left to
 * count: the keys above it, or below it when the walk descends. */
static int rest_after(struct kv_count_rest *rest,
                      struct kv_arena *mem,
                      const ProtobufCBinaryData *key,
                      const ProtobufCBinaryData *end,
                      bool descend,
                      const MDB_val *k)
{
    if (end->len == 0) {
        rest->pending = false; /* a range of one key */
        return 0;
    }
    /* In @mem, the request's bytes need not outlive this call. */
    const ProtobufCBinaryData *other = descend ? key : end;
    uint8_t *b = kv_arena_alloc(mem, k->mv_size + 1);
    uint8_t *o = kv_arena_dup(mem, other->data, other->len);
    if (!b || !o) {
        return KV_STORE_ENOMEM;
    }
    memcpy(b, k->mv_data, k->mv_size);
    rest->pending = true;
    if (descend) {
        rest->from = (ProtobufCBinaryData){key->len, o}; /* [key, k) */
        rest->end = (ProtobufCBinaryData){k->mv_size, b};
    } else {
        b[k->mv_size] = 0; /* the least key above k */
        rest->from = (ProtobufCBinaryData){k->mv_size + 1, b};
        rest->end = (ProtobufCBinaryData){end->len, o};
    }
    return 0;
}

/* Count the keys of walk @w, at most @rest->budget of them when @rest
 * is given (then rest says where the count stopped). */
static int count_walk(struct kv_store *st,
                      struct walk *w,
                      struct kv_count_rest *rest,
                      struct kv_arena *mem,
                      uint64_t *count)
{
    MDB_val k, v;
    uint64_t walked = 0;
    int rv;
    if (rest) {
        rest->pending = false;
    }
    while ((rv = walk_next(st, w, &k, &v)) == 0) {
        (*count)++;
        if (rest && rest->budget && ++walked >= rest->budget) {
            return rest_after(rest, mem, w->key, w->end, w->descend, &k);
        }
    }
    return rv == MDB_NOTFOUND ? 0 : rv;
}

int kv_mvcc_count_on(struct kv_store *st,
                     MDB_txn *txn,
                     struct kv_count_rest *rest,
                     struct kv_arena *mem,
                     uint64_t *count)
{
    if (!rest->pending) {
        return 0;
    }
    struct walk w;
    ProtobufCBinaryData from = rest->from, end = rest->end;
    int rv = walk_open(st, txn, &w, &from, &end, false);
    if (!rv) {
        rv = count_walk(st, &w, rest, mem, count);
    }
    walk_close(&w);
    return rv;
}

int kv_mvcc_range(struct kv_store *st,
                  MDB_txn *txn,
                  const Raftkv__RangeArgs *a,
                  bool copy,
                  struct kv_arena *mem,
                  Raftkv__RangeReply *r,
                  struct kv_count_rest *rest)
{
    if (rest) {
        rest->pending = false;
    }
    char why[200];
    r->err = kv_mvcc_check_range(st, &a->key, &a->range_end, why, sizeof why);
    if (r->err) {
        r->message = kv_arena_dup(mem, why, strlen(why) + 1);
        return r->message ? 0 : KV_STORE_ENOMEM;
    }
    if (a->sort_order != RAFTKV__SORT_ORDER__SORT_NONE &&
        a->sort_order != RAFTKV__SORT_ORDER__SORT_ASCEND &&
        a->sort_order != RAFTKV__SORT_ORDER__SORT_DESCEND) {
        r->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        r->message = "unknown sort order";
        return 0;
    }
    struct walk w;
    int rv = walk_open(st, txn, &w, &a->key, &a->range_end,
                       a->sort_order == RAFTKV__SORT_ORDER__SORT_DESCEND);
    if (rv) {
        return rv;
    }
    struct kv_list list = {0};
    size_t bytes = 0;
    uint64_t count = 0;
    bool adding = !a->count_only;
    MDB_val k, v;
    while (adding && (rv = walk_next(st, &w, &k, &v)) == 0) {
        struct kv_rec rec;
        if (kv_rec_decode(&v, &rec)) {
            rv = damaged(st, "a key's record");
            break;
        }
        if (!a->keys_only && (rv = rec_resolve(st, txn, &rec)) != 0) {
            break;
        }
        size_t cost =
            k.mv_size + (a->keys_only ? 0 : rec.value_len) + REC_OVERHEAD;
        if ((a->limit && count >= a->limit) ||
            (count && bytes + cost > KV_MAX_RANGE_BYTES)) {
            r->more = true;
            adding = false;
            count++; /* this key is in the range: counted, not sent */
            break;
        }
        Raftkv__KeyValue *kv = list_add(mem, &list);
        if (!kv) {
            rv = KV_STORE_ENOMEM;
            break;
        }
        rv = fill_kv(mem, kv, &k, &rec, !a->keys_only, copy);
        if (rv) {
            break;
        }
        bytes += cost;
        count++;
    }
    if (rv == 0 && !adding && a->no_count && !a->count_only) {
        count--; /* the key past the last one answered is not counted */
    } else if (rv == 0 && !adding) {
        /* Count the rest of the range without reading it. */
        if (is_everything(a)) {
            MDB_stat stat;
            int rc = mdb_stat(txn, st->kv, &stat);
            if (rc) {
                rv = kv_store_fail(st, rc, "stat kv");
            } else {
                count = stat.ms_entries;
            }
        } else {
            rv = count_walk(st, &w, rest, mem, &count);
        }
    }
    walk_close(&w);
    if (rv && rv != MDB_NOTFOUND) {
        return rv;
    }
    r->kvs = list.items;
    r->n_kvs = list.n;
    r->count = count;
    return 0;
}

/* ----------------------------------------------------------- history */

/* Append an event; put events carry the key's new record, and an event
 * of a key that existed (@old not NULL) where its version before is. */
static int hist_add(struct kv_change *c,
                    bool put,
                    const void *key,
                    size_t key_len,
                    const struct kv_rec *r,
                    const struct kv_rec *old)
{
    uint8_t hk[KV_HIST_KEY];
    hist_key(hk, c->rev, c->sub);
    int type =
        put ? (old ? KV_EVENT_PUT_PREV : KV_EVENT_PUT) : KV_EVENT_DEL_PREV;
    size_t n = KV_HIST_HEAD + key_len +
               (put ? KV_REC_HEADER + r->value_len : 0) +
               (old ? KV_HIST_PREV : 0);
    MDB_val k = {sizeof hk, hk}, v = {n, NULL};
    int rc = mdb_put(c->txn, c->st->history, &k, &v, MDB_RESERVE | MDB_APPEND);
    if (rc) {
        return kv_store_fail(c->st, rc, "write history");
    }
    uint8_t *p = v.mv_data;
    p[0] = (uint8_t)type;
    kv_put_u32(p + 1, (uint32_t)key_len);
    memcpy(p + KV_HIST_HEAD, key, key_len);
    size_t off = KV_HIST_HEAD + key_len;
    if (put) {
        rec_header(p + off, r);
        off += KV_REC_HEADER;
    }
    if (old) {
        kv_put_u64(p + off, old->mod);
        kv_put_u32(p + off + 8, old->ref ? old->ref_sub : KV_PREV_GONE);
        off += KV_HIST_PREV;
    }
    if (put && r->value_len) {
        memcpy(p + off, r->value, r->value_len);
    }
    c->sub++;
    c->revs.hist_bytes += KV_HIST_KEY + n;
    return 0;
}

/* An event's prev_kv: the put event of the key's version before, when
 * the history still has it. */
static int event_prev(struct kv_store *st,
                      MDB_txn *txn,
                      const struct kv_event *e,
                      struct kv_arena *mem,
                      Raftkv__Event *ev)
{
    if (!e->has_prev) {
        /* A new key (nothing before it); or an event of format 4, which
         * did not record where the version before was: a delete, or a
         * put of a key that existed (version above 1). */
        ev->prev_kv_missing = !e->put || e->rec.version > 1;
        return 0;
    }
    MDB_val pv = {0, NULL};
    int rc = MDB_NOTFOUND;
    if (e->prev_sub != KV_PREV_GONE) {
        uint8_t hk[KV_HIST_KEY];
        hist_key(hk, e->prev_mod, e->prev_sub);
        MDB_val k = {sizeof hk, hk};
        rc = mdb_get(txn, st->history, &k, &pv);
    }
    if (rc == MDB_NOTFOUND) {
        ev->prev_kv_missing = true;
        return 0;
    }
    if (rc) {
        return kv_store_fail(st, rc, "read history");
    }
    struct kv_event pe;
    if (event_decode(&pv, &pe) || !pe.put) {
        return damaged(st, "the history (a previous version)");
    }
    Raftkv__KeyValue *kv = kv_arena_alloc(mem, sizeof *kv);
    if (!kv) {
        return KV_STORE_ENOMEM;
    }
    raftkv__key_value__init(kv);
    MDB_val key = {pe.key_len, (void *)pe.key};
    int rv = fill_kv(mem, kv, &key, &pe.rec, true, false);
    if (!rv) {
        ev->prev_kv = kv;
    }
    return rv;
}

int kv_mvcc_events(struct kv_store *st,
                   MDB_txn *txn,
                   const Raftkv__EventsArgs *a,
                   bool prev_kv,
                   struct kv_arena *mem,
                   Raftkv__EventsReply *r)
{
    struct kv_revs revs;
    int rv = kv_mvcc_revs(st, txn, &revs);
    if (rv) {
        return rv;
    }
    r->revision = revs.revision;
    r->compact_revision = revs.compact;
    uint64_t start = a->start_revision ? a->start_revision : revs.compact + 1;
    if (start <= revs.compact) {
        r->err = RAFTKV__KV_ERROR__KV_COMPACTED;
        r->message = "the history before that revision is compacted";
        return 0;
    }
    if (start > revs.revision + 1) {
        r->err = RAFTKV__KV_ERROR__KV_FUTURE_REVISION;
        r->message = "that revision is past the store's";
        return 0;
    }
    char why[200];
    if (a->key.len && (r->err = kv_mvcc_check_range(st, &a->key, &a->range_end,
                                                    why, sizeof why)) != 0) {
        r->message = kv_arena_dup(mem, why, strlen(why) + 1);
        return r->message ? 0 : KV_STORE_ENOMEM;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->history, &cur);
    if (rc) {
        return kv_store_fail(st, rc, "open history cursor");
    }
    uint8_t hk[KV_HIST_KEY];
    hist_key(hk, start, 0);
    MDB_val k = {sizeof hk, hk}, v;
    size_t bytes = 0, n = 0, cap = 0, scanned = 0;
    Raftkv__Event **events = NULL;
    uint64_t next = start, cur_rev = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != KV_HIST_KEY || v.mv_size < KV_HIST_HEAD) {
            rv = damaged(st, "the history");
            break;
        }
        uint64_t rev = kv_get_u64(k.mv_data);
        if (rev != cur_rev) {
            /* A revision boundary: the only place a reply may end. */
            bool full = (a->limit && n >= a->limit) ||
                        bytes >= KV_MAX_RANGE_BYTES || scanned >= 100000;
            if (full) {
                r->more = true;
                next = rev; /* the first revision not answered */
                break;
            }
            cur_rev = rev;
            next = rev;
        }
        scanned++;
        struct kv_event he;
        if (event_decode(&v, &he)) {
            rv = damaged(st, "the history");
            break;
        }
        MDB_val key = {he.key_len, (void *)he.key};
        if (a->key.len &&
            !kv_range_has(&a->key, &a->range_end, key.mv_data, key.mv_size)) {
            continue;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            Raftkv__Event **e = kv_arena_alloc(mem, ncap * sizeof *e);
            if (!e) {
                rv = KV_STORE_ENOMEM;
                break;
            }
            if (n) {
                memcpy(e, events, n * sizeof *e);
            }
            events = e;
            cap = ncap;
        }
        Raftkv__Event *ev = kv_arena_alloc(mem, sizeof *ev);
        Raftkv__KeyValue *kv = kv_arena_alloc(mem, sizeof *kv);
        if (!ev || !kv) {
            rv = KV_STORE_ENOMEM;
            break;
        }
        raftkv__event__init(ev);
        raftkv__key_value__init(kv);
        ev->kv = kv;
        if (he.put) {
            ev->type = RAFTKV__EVENT__EVENT_TYPE__PUT;
            rv = fill_kv(mem, kv, &key, &he.rec, true, false);
            if (rv) {
                break;
            }
        } else {
            ev->type = RAFTKV__EVENT__EVENT_TYPE__DELETE;
            kv->key.data = (uint8_t *)key.mv_data;
            kv->key.len = key.mv_size;
            kv->mod_revision = rev;
        }
        if (prev_kv && (rv = event_prev(st, txn, &he, mem, ev)) != 0) {
            break;
        }
        events[n++] = ev;
        bytes += v.mv_size + REC_OVERHEAD +
                 (ev->prev_kv ? ev->prev_kv->value.len + REC_OVERHEAD : 0);
    }
    mdb_cursor_close(cur);
    if (rv) {
        return rv;
    }
    if (rc && rc != MDB_NOTFOUND) {
        return kv_store_fail(st, rc, "read history");
    }
    if (!r->more) {
        next = revs.revision + 1; /* everything up to the store's is read */
    }
    r->events = events;
    r->n_events = n;
    r->next_revision = next;
    return 0;
}

/* ----------------------------------------------------------- changes */

int kv_change_begin(struct kv_change *c, struct kv_store *st, MDB_txn *txn)
{
    memset(c, 0, sizeof *c);
    c->st = st;
    c->txn = txn;
    int rv = kv_mvcc_revs(st, txn, &c->revs);
    c->rev = c->revs.revision + 1;
    return rv;
}

uint64_t kv_change_revision(const struct kv_change *c)
{
    return c->sub ? c->rev : c->revs.revision;
}

/* A copy of a stored key for a reply. */
static Raftkv__KeyValue *copy_kv(struct kv_arena *mem,
                                 const MDB_val *k,
                                 const struct kv_rec *r)
{
    Raftkv__KeyValue *kv = kv_arena_alloc(mem, sizeof *kv);
    if (!kv) {
        return NULL;
    }
    raftkv__key_value__init(kv);
    return fill_kv(mem, kv, k, r, true, true) ? NULL : kv;
}

int kv_change_put(struct kv_change *c,
                  const void *key,
                  size_t key_len,
                  const void *value,
                  size_t value_len,
                  bool ignore_value,
                  uint64_t lease,
                  struct kv_arena *mem,
                  Raftkv__KeyValue **prev,
                  int *err)
{
    struct kv_store *st = c->st;
    *err = RAFTKV__KV_ERROR__KV_OK;
    if (prev) {
        *prev = NULL;
    }
    if (key_len == 0 || key_len > (size_t)mdb_env_get_maxkeysize(st->env)) {
        *err = key_len ? RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE
                       : RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        return 0;
    }
    struct kv_rec old, rec;
    int rv = rec_get(st, c->txn, key, key_len, prev || ignore_value, &old);
    bool exists = rv == 0;
    if (rv && rv != MDB_NOTFOUND) {
        return rv;
    }
    if (ignore_value && !exists) {
        *err = RAFTKV__KV_ERROR__KV_NOT_FOUND;
        return 0;
    }
    if (lease) {
        /* Checked before anything is written: a put to a lease that is
         * gone changes nothing. */
        if (!kv_lease_key_fits(st, key_len)) {
            *err = RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE;
            return 0;
        }
        rv = kv_lease_get(st, c->txn, lease, NULL);
        if (rv == MDB_NOTFOUND) {
            *err = RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND;
            return 0;
        }
        if (rv) {
            return rv;
        }
    }
    uint64_t old_lease = exists ? old.lease : 0;
    uint8_t *keep = NULL;
    if (exists && prev) {
        MDB_val k = {key_len, (void *)key};
        if (!(*prev = copy_kv(mem, &k, &old))) {
            return KV_STORE_ENOMEM;
        }
    }
    if (ignore_value) {
        /* The old value's page is about to be written over. */
        keep = malloc(old.value_len ? old.value_len : 1);
        if (!keep) {
            return KV_STORE_ENOMEM;
        }
        memcpy(keep, old.value, old.value_len);
        value = keep;
        value_len = old.value_len;
    }
    rec.create = exists ? old.create : c->rev;
    rec.mod = c->rev;
    rec.version = exists ? old.version + 1 : 1;
    rec.lease = lease;
    rec.value = value;
    rec.value_len = value_len;
    /* The value is written once, in the put's event; the key's record
     * refers to it (compaction moves it into the record when the event
     * goes while the value is still the key's). */
    uint32_t sub = c->sub;
    MDB_val k = {key_len, (void *)key}, v = {KV_REC_HEAD + 4, NULL};
    int rc = mdb_put(c->txn, st->kv, &k, &v, MDB_RESERVE);
    if (rc == MDB_BAD_VALSIZE) {
        free(keep);
        *err = RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE;
        return 0;
    }
    if (rc) {
        free(keep);
        return kv_store_fail(st, rc, "write key");
    }
    uint8_t *p = v.mv_data;
    rec_header(p, &rec);
    p[KV_REC_HEADER] = KV_REC_REF;
    kv_put_u32(p + KV_REC_HEAD, sub);
    rv = hist_add(c, true, key, key_len, &rec, exists ? &old : NULL);
    free(keep);
    if (!rv && old_lease != lease && old_lease) {
        rv = kv_lease_detach(st, c->txn, old_lease, key, key_len);
    }
    if (!rv && old_lease != lease && lease) {
        rv = kv_lease_attach(st, c->txn, lease, key, key_len);
    }
    return rv;
}

int kv_change_delete(struct kv_change *c,
                     const ProtobufCBinaryData *key,
                     const ProtobufCBinaryData *range_end,
                     uint64_t limit,
                     bool *more,
                     struct kv_arena *mem,
                     uint64_t *deleted,
                     Raftkv__KeyValue ***prevs,
                     size_t *n_prevs,
                     int *err)
{
    struct kv_store *st = c->st;
    char why[200];
    *deleted = 0;
    if (more) {
        *more = false;
    }
    if (prevs) {
        *prevs = NULL;
        *n_prevs = 0;
    }
    *err = kv_mvcc_check_range(st, key, range_end, why, sizeof why);
    if (*err) {
        return 0;
    }
    struct walk w;
    int rv = walk_open(st, c->txn, &w, key, range_end, false);
    if (rv) {
        return rv;
    }
    struct kv_list list = {0};
    size_t bytes = 0;
    uint8_t *kbuf = NULL;
    size_t kcap = 0;
    MDB_val k, v;
    while ((rv = walk_next(st, &w, &k, &v)) == 0) {
        if (limit && *deleted == limit) {
            if (more) {
                *more = true; /* this key is left */
            }
            rv = MDB_NOTFOUND;
            break;
        }
        struct kv_rec rec;
        if (kv_rec_decode(&v, &rec)) {
            rv = damaged(st, "a key's record");
            break;
        }
        if (prevs && (rv = rec_resolve(st, c->txn, &rec)) != 0) {
            break;
        }
        if (prevs) {
            bytes += k.mv_size + rec.value_len + REC_OVERHEAD;
            if (bytes > KV_MAX_RANGE_BYTES) {
                *err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
                break;
            }
            Raftkv__KeyValue *kv = list_add(mem, &list);
            if (!kv || fill_kv(mem, kv, &k, &rec, true, true)) {
                rv = KV_STORE_ENOMEM;
                break;
            }
        }
        /* The key's page changes with the delete: keep the key. */
        if (k.mv_size > kcap) {
            uint8_t *nb = realloc(kbuf, k.mv_size);
            if (!nb) {
                rv = KV_STORE_ENOMEM;
                break;
            }
            kbuf = nb;
            kcap = k.mv_size;
        }
        memcpy(kbuf, k.mv_data, k.mv_size);
        size_t klen = k.mv_size;
        int rc = mdb_cursor_del(w.cur, 0);
        if (rc) {
            rv = kv_store_fail(st, rc, "delete key");
            break;
        }
        rv = hist_add(c, false, kbuf, klen, NULL, &rec);
        if (!rv && rec.lease) {
            rv = kv_lease_detach(st, c->txn, rec.lease, kbuf, klen);
        }
        if (rv) {
            break;
        }
        (*deleted)++;
        if (range_end->len == 0) {
            rv = MDB_NOTFOUND; /* one key only */
            break;
        }
    }
    free(kbuf);
    walk_close(&w);
    if (rv && rv != MDB_NOTFOUND) {
        return rv;
    }
    if (prevs) {
        *prevs = list.items;
        *n_prevs = list.n;
    }
    return 0;
}

int kv_mvcc_count_upto(struct kv_store *st,
                       MDB_txn *txn,
                       const ProtobufCBinaryData *key,
                       const ProtobufCBinaryData *range_end,
                       uint64_t limit,
                       uint64_t *count)
{
    *count = 0;
    struct walk w;
    int rv = walk_open(st, txn, &w, key, range_end, false);
    if (rv) {
        return rv;
    }
    MDB_val k, v;
    while (*count <= limit && (rv = walk_next(st, &w, &k, &v)) == 0) {
        (*count)++;
        if (range_end->len == 0) {
            break; /* one key only */
        }
    }
    walk_close(&w);
    return rv == MDB_NOTFOUND ? 0 : rv;
}

int kv_change_end(struct kv_change *c)
{
    if (!c->sub) {
        return 0;
    }
    c->revs.revision = c->rev;
    return put_revs(c->st, c->txn, &c->revs);
}

/* ---------------------------------------------------------- compares */

static bool compare_num(Raftkv__Compare__Result res,
                        uint64_t have,
                        uint64_t want)
{
    switch (res) {
        case RAFTKV__COMPARE__RESULT__EQUAL:
            return have == want;
        case RAFTKV__COMPARE__RESULT__GREATER:
            return have > want;
        case RAFTKV__COMPARE__RESULT__LESS:
            return have < want;
        case RAFTKV__COMPARE__RESULT__NOT_EQUAL:
            return have != want;
        default:
            return false;
    }
}

/* One key's record (NULL: missing) against the compare. */
static bool compare_one(const Raftkv__Compare *cmp, const struct kv_rec *r)
{
    static const struct kv_rec none = {0};
    if (!r) {
        if (cmp->target == RAFTKV__COMPARE__TARGET__VALUE) {
            return false; /* a missing key has no value to compare */
        }
        r = &none;
    }
    switch (cmp->target) {
        case RAFTKV__COMPARE__TARGET__VERSION:
            return compare_num(cmp->result, r->version, cmp->version);
        case RAFTKV__COMPARE__TARGET__CREATE:
            return compare_num(cmp->result, r->create, cmp->create_revision);
        case RAFTKV__COMPARE__TARGET__MOD:
            return compare_num(cmp->result, r->mod, cmp->mod_revision);
        case RAFTKV__COMPARE__TARGET__LEASE:
            return compare_num(cmp->result, r->lease, cmp->lease);
        case RAFTKV__COMPARE__TARGET__VALUE: {
            int c = cmp_bytes(r->value, r->value_len, cmp->value.data,
                              cmp->value.len);
            switch (cmp->result) {
                case RAFTKV__COMPARE__RESULT__EQUAL:
                    return c == 0;
                case RAFTKV__COMPARE__RESULT__GREATER:
                    return c > 0;
                case RAFTKV__COMPARE__RESULT__LESS:
                    return c < 0;
                case RAFTKV__COMPARE__RESULT__NOT_EQUAL:
                    return c != 0;
                default:
                    return false;
            }
        }
        default:
            return false;
    }
}

int kv_mvcc_compare(struct kv_store *st,
                    MDB_txn *txn,
                    const Raftkv__Compare *cmp,
                    bool *ok)
{
    struct kv_rec rec;
    bool want_value = cmp->target == RAFTKV__COMPARE__TARGET__VALUE;
    if (cmp->range_end.len == 0) {
        int rv =
            rec_get(st, txn, cmp->key.data, cmp->key.len, want_value, &rec);
        if (rv && rv != MDB_NOTFOUND) {
            return rv;
        }
        *ok = compare_one(cmp, rv ? NULL : &rec);
        return 0;
    }
    /* Every key of the range must hold it; an empty range is compared
     * as one missing key. */
    struct walk w;
    int rv = walk_open(st, txn, &w, &cmp->key, &cmp->range_end, false);
    if (rv) {
        return rv;
    }
    MDB_val k, v;
    bool any = false;
    *ok = true;
    while (*ok && (rv = walk_next(st, &w, &k, &v)) == 0) {
        if (kv_rec_decode(&v, &rec)) {
            rv = damaged(st, "a key's record");
            break;
        }
        if (want_value && (rv = rec_resolve(st, txn, &rec)) != 0) {
            break;
        }
        any = true;
        *ok = compare_one(cmp, &rec);
    }
    walk_close(&w);
    if (rv && rv != MDB_NOTFOUND) {
        return rv;
    }
    if (!any) {
        *ok = compare_one(cmp, NULL);
    }
    return 0;
}

/* -------------------------------------------------------- compaction */

/* Before a put event goes: if its value is still its key's (the record
 * refers to this event), move the value into the record. */
static int keep_current_value(struct kv_store *st,
                              MDB_txn *txn,
                              const MDB_val *hk,
                              const MDB_val *hv)
{
    struct kv_event e;
    if (event_decode(hv, &e)) {
        return damaged(st, "the history");
    }
    if (!e.put) {
        return 0;
    }
    size_t klen = e.key_len;
    uint64_t rev = kv_get_u64(hk->mv_data);
    uint32_t sub = kv_get_u32((const uint8_t *)hk->mv_data + 8);
    struct kv_rec r;
    int rv = rec_get(st, txn, e.key, klen, false, &r);
    if (rv == MDB_NOTFOUND) {
        return 0; /* deleted since */
    }
    if (rv) {
        return rv;
    }
    if (!r.ref || r.mod != rev || r.ref_sub != sub) {
        return 0; /* written again since */
    }
    /* Copies first: the write below changes pages these point into. */
    size_t vlen = e.rec.value_len;
    uint8_t *buf = malloc(klen + KV_REC_HEAD + vlen);
    if (!buf) {
        return KV_STORE_ENOMEM;
    }
    memcpy(buf, e.key, klen);
    uint8_t *rec = buf + klen;
    rec_header(rec, &r);
    rec[KV_REC_HEADER] = KV_REC_INLINE;
    if (vlen) {
        memcpy(rec + KV_REC_HEAD, e.rec.value, vlen);
    }
    MDB_val k = {klen, buf}, v = {KV_REC_HEAD + vlen, rec};
    int rc = mdb_put(txn, st->kv, &k, &v, 0);
    free(buf);
    return rc ? kv_store_fail(st, rc, "keep a key's value") : 0;
}

int kv_mvcc_compact(struct kv_store *st,
                    MDB_txn *txn,
                    uint64_t rev,
                    int *err,
                    struct kv_revs *revs)
{
    int rv = kv_mvcc_revs(st, txn, revs);
    if (rv) {
        return rv;
    }
    *err = RAFTKV__KV_ERROR__KV_OK;
    if (rev > revs->revision) {
        *err = RAFTKV__KV_ERROR__KV_FUTURE_REVISION;
        return 0;
    }
    if (rev <= revs->compact) {
        *err = RAFTKV__KV_ERROR__KV_COMPACTED;
        return 0;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->history, &cur);
    if (rc) {
        return kv_store_fail(st, rc, "open history cursor");
    }
    MDB_val k, v;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size != KV_HIST_KEY || kv_get_u64(k.mv_data) > rev) {
            break;
        }
        rv = keep_current_value(st, txn, &k, &v);
        if (rv) {
            break;
        }
        size_t n = KV_HIST_KEY + v.mv_size;
        revs->hist_bytes = revs->hist_bytes > n ? revs->hist_bytes - n : 0;
        rc = mdb_cursor_del(cur, 0);
        if (rc) {
            break;
        }
    }
    mdb_cursor_close(cur);
    if (rv) {
        return rv;
    }
    if (rc && rc != MDB_NOTFOUND) {
        return kv_store_fail(st, rc, "compact history");
    }
    revs->compact = rev;
    return put_revs(st, txn, revs);
}

int kv_mvcc_compact_target(struct kv_store *st,
                           MDB_txn *txn,
                           uint64_t keep_revs,
                           uint64_t max_bytes,
                           uint64_t max_step,
                           uint64_t *target)
{
    struct kv_revs revs;
    int rv = kv_mvcc_revs(st, txn, &revs);
    if (rv) {
        return rv;
    }
    uint64_t t = 0;
    if (revs.revision > keep_revs && revs.revision - keep_revs > revs.compact) {
        t = revs.revision - keep_revs;
    }
    if (max_bytes && revs.hist_bytes > max_bytes) {
        /* Walk from the oldest event until enough bytes would go. */
        uint64_t excess = revs.hist_bytes - max_bytes, freed = 0;
        MDB_cursor *cur;
        int rc = mdb_cursor_open(txn, st->history, &cur);
        if (rc) {
            return kv_store_fail(st, rc, "open history cursor");
        }
        MDB_val k, v;
        uint64_t last = 0, steps = 0;
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size != KV_HIST_KEY) {
                break;
            }
            uint64_t rev = kv_get_u64(k.mv_data);
            if (freed >= excess && rev != last) {
                break;
            }
            if (++steps > 1000000) {
                break; /* enough for one entry; the next goes on */
            }
            freed += KV_HIST_KEY + v.mv_size;
            last = rev;
        }
        mdb_cursor_close(cur);
        if (rc && rc != MDB_NOTFOUND) {
            return kv_store_fail(st, rc, "read history");
        }
        if (last > t) {
            t = last;
        }
    }
    if (t > revs.compact && max_step && t - revs.compact > max_step) {
        t = revs.compact + max_step;
    }
    if (t >= revs.revision) {
        t = revs.revision; /* everything but the present can go */
    }
    *target = t > revs.compact ? t : 0;
    return 0;
}

int kv_mvcc_compact_step(struct kv_store *st,
                         MDB_txn *txn,
                         uint64_t rev,
                         uint64_t max_records,
                         uint64_t max_bytes,
                         uint64_t *step)
{
    *step = rev;
    if (!max_records && !max_bytes) {
        return 0;
    }
    struct kv_revs revs;
    int rv = kv_mvcc_revs(st, txn, &revs);
    if (rv) {
        return rv;
    }
    if (rev > revs.revision || rev <= revs.compact) {
        return 0; /* refused whole: FUTURE_REVISION, COMPACTED */
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->history, &cur);
    if (rc) {
        return kv_store_fail(st, rc, "open history cursor");
    }
    MDB_val k, v;
    uint64_t records = 0, bytes = 0, last = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != KV_HIST_KEY) {
            break;
        }
        uint64_t r = kv_get_u64(k.mv_data);
        if (r > rev) {
            break; /* all of it fits */
        }
        if (r != last && last &&
            ((max_records && records >= max_records) ||
             (max_bytes && bytes >= max_bytes))) {
            *step = r - 1; /* whole revisions only */
            break;
        }
        records++;
        bytes += KV_HIST_KEY + v.mv_size;
        last = r;
    }
    mdb_cursor_close(cur);
    if (rc && rc != MDB_NOTFOUND) {
        return kv_store_fail(st, rc, "read history");
    }
    return 0;
}

/* ----------------------------------------------------------- upgrade */

int kv_mvcc_upgrade(struct kv_store *st, MDB_txn *txn)
{
    if (st->format == KV_STORE_FORMAT_PREV) {
        /* Its events are read as they are. */
        return kv_store_set_format(st, txn);
    }
    if (st->format != KV_STORE_FORMAT_OLD) {
        return 0;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->kv, &cur);
    if (rc) {
        return kv_store_fail(st, rc, "open kv cursor");
    }
    uint8_t *buf = NULL, key[512];
    size_t cap = 0;
    uint64_t n = 0;
    MDB_val k, v;
    int rv = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        size_t len = KV_REC_HEAD + v.mv_size;
        if (len > cap) {
            uint8_t *nb = realloc(buf, len);
            if (!nb) {
                rv = KV_STORE_ENOMEM;
                break;
            }
            buf = nb;
            cap = len;
        }
        if (k.mv_size > sizeof key) {
            rv = damaged(st, "a key");
            break;
        }
        struct kv_rec r = {2, 2, 1, 0, NULL, 0, false, 0};
        rec_header(buf, &r);
        buf[KV_REC_HEADER] = KV_REC_INLINE;
        if (v.mv_size) {
            memcpy(buf + KV_REC_HEAD, v.mv_data, v.mv_size);
        }
        /* Written by key, not through the cursor (whose key and value
         * point into the page the write changes); then found again. */
        memcpy(key, k.mv_data, k.mv_size);
        MDB_val kc = {k.mv_size, key}, nv = {len, buf};
        rc = mdb_put(txn, st->kv, &kc, &nv, 0);
        if (!rc) {
            rc = mdb_cursor_get(cur, &kc, &v, MDB_SET_KEY);
        }
        if (rc) {
            break;
        }
        n++;
    }
    mdb_cursor_close(cur);
    free(buf);
    if (rv) {
        return rv;
    }
    if (rc && rc != MDB_NOTFOUND) {
        return kv_store_fail(st, rc, "upgrade keys");
    }
    rc = mdb_drop(txn, st->history, 0);
    if (rc) {
        return kv_store_fail(st, rc, "clear history");
    }
    struct kv_revs revs = {n ? 2 : 1, n ? 2 : 0, 0};
    rv = put_revs(st, txn, &revs);
    return rv ? rv : kv_store_set_format(st, txn);
}
