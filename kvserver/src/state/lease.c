/* lease.c: leases in LMDB: grants, the index of their keys, and ending
 * them (revoke, expire) with all their keys at one revision. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease.h"

#define LEASE_REC       8     /* leases value: granted TTL (8) */
#define NEWS_MAX        65536 /* ids noted before "read every lease" */
#define INDEX_KEY_SPACE 8     /* the id in front of a key in lease_keys */

static int damaged(struct kv_store *st, const char *what)
{
    snprintf(st->errmsg, sizeof st->errmsg, "%s: %s is damaged", st->dir, what);
    return KV_STORE_ECORRUPT;
}

/* Tell the lease service that a lease was granted or ended. */
static void note(struct kv_store *st, uint64_t id)
{
    struct kv_lease_news *ln = &st->lease_news;
    if (ln->all) {
        return;
    }
    if (ln->n == ln->cap) {
        size_t cap = ln->cap ? ln->cap * 2 : 64;
        uint64_t *ids =
            cap <= NEWS_MAX ? realloc(ln->ids, cap * sizeof *ids) : NULL;
        if (!ids) {
            ln->all = true; /* a hint only: read them all instead */
            ln->n = 0;
            return;
        }
        ln->ids = ids;
        ln->cap = cap;
    }
    ln->ids[ln->n++] = id;
}

/* ------------------------------------------------ keys per lease */

#define COUNTS_MAX 65536 /* leases counted before the table starts over */

static size_t count_slot(const struct kv_lease_counts *lk, uint64_t id)
{
    uint64_t h = id * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) & (lk->cap - 1);
}

/* The slot holding @id's count, or NULL. */
static uint64_t *count_of(struct kv_lease_counts *lk, uint64_t id)
{
    if (!lk->n) {
        return NULL;
    }
    for (size_t i = count_slot(lk, id); lk->ids[i];
         i = (i + 1) & (lk->cap - 1)) {
        if (lk->ids[i] == id) {
            return &lk->counts[i];
        }
    }
    return NULL;
}

/* Hold @id's count (a hint: on failure it is simply not held). */
static void count_hold(struct kv_store *st, uint64_t id, uint64_t count)
{
    struct kv_lease_counts *lk = &st->lease_counts;
    if (lk->n >= COUNTS_MAX) {
        kv_lease_counts_forget(st);
    }
    if ((lk->n + 1) * 2 > lk->cap) {
        size_t cap = lk->cap ? lk->cap * 2 : 64;
        uint64_t *ids = calloc(cap, sizeof *ids);
        uint64_t *counts = malloc(cap * sizeof *counts);
        if (!ids || !counts) {
            free(ids);
            free(counts);
            return;
        }
        struct kv_lease_counts old = *lk;
        *lk = (struct kv_lease_counts){ids, counts, cap, 0};
        for (size_t i = 0; i < old.cap; i++) {
            if (old.ids[i]) {
                count_hold(st, old.ids[i], old.counts[i]);
            }
        }
        free(old.ids);
        free(old.counts);
    }
    size_t i = count_slot(lk, id);
    while (lk->ids[i] && lk->ids[i] != id) {
        i = (i + 1) & (lk->cap - 1);
    }
    lk->n += !lk->ids[i];
    lk->ids[i] = id;
    lk->counts[i] = count;
}

/* Drop @id's count (its lease ended): backward-shift deletion, so that
 * every other id stays reachable from its home slot. */
static void count_drop(struct kv_store *st, uint64_t id)
{
    struct kv_lease_counts *lk = &st->lease_counts;
    uint64_t *c = count_of(lk, id);
    if (!c) {
        return;
    }
    size_t hole = (size_t)(c - lk->counts), mask = lk->cap - 1;
    lk->ids[hole] = 0;
    lk->n--;
    for (size_t j = (hole + 1) & mask; lk->ids[j]; j = (j + 1) & mask) {
        size_t home = count_slot(lk, lk->ids[j]);
        /* Move j into the hole unless its home lies in (hole, j]. */
        bool stays =
            hole <= j ? home > hole && home <= j : home > hole || home <= j;
        if (!stays) {
            lk->ids[hole] = lk->ids[j];
            lk->counts[hole] = lk->counts[j];
            lk->ids[j] = 0;
            hole = j;
        }
    }
}

bool kv_lease_key_fits(struct kv_store *st, size_t key_len)
{
    return key_len + INDEX_KEY_SPACE <= (size_t)mdb_env_get_maxkeysize(st->env);
}

int kv_lease_get(struct kv_store *st, MDB_txn *txn, uint64_t id, int64_t *ttl)
{
    uint8_t k8[8];
    kv_put_u64(k8, id);
    MDB_val k = {8, k8}, v;
    int rc = mdb_get(txn, st->leases, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return MDB_NOTFOUND;
    }
    if (rc) {
        return kv_store_fail(st, rc, "read a lease");
    }
    if (v.mv_size < LEASE_REC) {
        return damaged(st, "a lease");
    }
    if (ttl) {
        *ttl = (int64_t)kv_get_u64(v.mv_data);
    }
    return 0;
}

/* id | key, the key of a lease's index entry. */
static bool index_key(struct kv_store *st,
                      uint64_t id,
                      const void *key,
                      size_t key_len,
                      uint8_t *buf,
                      MDB_val *out)
{
    if (!kv_lease_key_fits(st, key_len)) {
        return false;
    }
    kv_put_u64(buf, id);
    memcpy(buf + INDEX_KEY_SPACE, key, key_len);
    *out = (MDB_val){INDEX_KEY_SPACE + key_len, buf};
    return true;
}

int kv_lease_attach(struct kv_store *st,
                    MDB_txn *txn,
                    uint64_t id,
                    const void *key,
                    size_t key_len)
{
    uint8_t buf[INDEX_KEY_SPACE + 512];
    MDB_val k, empty = {0, ""};
    if (key_len > 512 || !index_key(st, id, key, key_len, buf, &k)) {
        snprintf(st->errmsg, sizeof st->errmsg,
                 "%s: a key of %zu bytes cannot be attached to a lease",
                 st->dir, key_len);
        return KV_STORE_EIO; /* kv_change_put checked it before */
    }
    int rc = mdb_put(txn, st->lease_keys, &k, &empty, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        return 0; /* attached already (an index out of step) */
    }
    if (rc) {
        return kv_store_fail(st, rc, "attach a key to its lease");
    }
    uint64_t *c = count_of(&st->lease_counts, id);
    if (c) {
        ++*c;
    }
    return 0;
}

int kv_lease_detach(struct kv_store *st,
                    MDB_txn *txn,
                    uint64_t id,
                    const void *key,
                    size_t key_len)
{
    uint8_t buf[INDEX_KEY_SPACE + 512];
    MDB_val k;
    if (key_len > 512 || !index_key(st, id, key, key_len, buf, &k)) {
        return 0; /* never attached */
    }
    int rc = mdb_del(txn, st->lease_keys, &k, NULL);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc) {
        return kv_store_fail(st, rc, "detach a key from its lease");
    }
    uint64_t *c = count_of(&st->lease_counts, id);
    if (c && *c) {
        --*c;
    }
    return 0;
}

int kv_lease_each(struct kv_store *st,
                  MDB_txn *txn,
                  int (*fn)(uint64_t id, int64_t ttl, void *arg),
                  void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->leases, &cur);
    if (rc) {
        return kv_store_fail(st, rc, "open lease cursor");
    }
    MDB_val k, v;
    int rv = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !rv;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || v.mv_size < LEASE_REC) {
            rv = damaged(st, "a lease");
            break;
        }
        rv = fn(kv_get_u64(k.mv_data), (int64_t)kv_get_u64(v.mv_data), arg);
    }
    mdb_cursor_close(cur);
    if (rv) {
        return rv;
    }
    return rc == MDB_NOTFOUND ? 0 : kv_store_fail(st, rc, "read leases");
}

/* Walk a lease's index entries: the first (*started false) or the next. */
static int index_next(MDB_cursor *cur, uint64_t id, bool *started, MDB_val *k)
{
    MDB_val v;
    uint8_t k8[8];
    int rc;
    if (!*started) {
        *started = true;
        kv_put_u64(k8, id);
        *k = (MDB_val){8, k8};
        rc = mdb_cursor_get(cur, k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, k, &v, MDB_NEXT);
    }
    if (rc) {
        return rc;
    }
    if (k->mv_size <= INDEX_KEY_SPACE || kv_get_u64(k->mv_data) != id) {
        return MDB_NOTFOUND;
    }
    return 0;
}

int kv_lease_keys(struct kv_store *st,
                  MDB_txn *txn,
                  uint64_t id,
                  struct kv_arena *mem,
                  ProtobufCBinaryData **keys,
                  size_t *n_keys)
{
    *keys = NULL;
    *n_keys = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->lease_keys, &cur);
    if (rc) {
        return kv_store_fail(st, rc, "open lease index cursor");
    }
    size_t cap = 0;
    bool started = false;
    MDB_val k;
    int rv = 0;
    while ((rc = index_next(cur, id, &started, &k)) == 0) {
        if (*n_keys == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            ProtobufCBinaryData *nk = kv_arena_alloc(mem, ncap * sizeof *nk);
            if (!nk) {
                rv = KV_STORE_ENOMEM;
                break;
            }
            if (*n_keys) {
                memcpy(nk, *keys, *n_keys * sizeof *nk);
            }
            *keys = nk;
            cap = ncap;
        }
        size_t len = k.mv_size - INDEX_KEY_SPACE;
        uint8_t *copy = kv_arena_dup(
            mem, (const uint8_t *)k.mv_data + INDEX_KEY_SPACE, len);
        if (!copy) {
            rv = KV_STORE_ENOMEM;
            break;
        }
        (*keys)[(*n_keys)++] = (ProtobufCBinaryData){len, copy};
    }
    mdb_cursor_close(cur);
    if (rv) {
        return rv;
    }
    return rc == MDB_NOTFOUND ? 0 : kv_store_fail(st, rc, "read lease index");
}

int kv_lease_count(struct kv_store *st,
                   MDB_txn *txn,
                   uint64_t id,
                   uint64_t *count)
{
    uint64_t *c = count_of(&st->lease_counts, id);
    if (c) {
        *count = *c;
        return 0;
    }
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->lease_keys, &cur);
    if (rc) {
        return kv_store_fail(st, rc, "open lease index cursor");
    }
    bool started = false;
    MDB_val k;
    uint64_t n = 0;
    while ((rc = index_next(cur, id, &started, &k)) == 0) {
        n++;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        return kv_store_fail(st, rc, "count a lease's keys");
    }
    count_hold(st, id, n);
    *count = n;
    return 0;
}

static int due_cmp(const void *a, const void *b)
{
    const struct kv_lease_due *x = a, *y = b;
    if (x->expiry != y->expiry) {
        return x->expiry < y->expiry ? -1 : 1;
    }
    return x->id < y->id ? -1 : x->id > y->id;
}

size_t kv_lease_expire_pick(struct kv_store *st,
                            MDB_txn *txn,
                            struct kv_lease_due *due,
                            size_t n,
                            uint64_t max_keys,
                            uint64_t *ids,
                            size_t max_ids,
                            uint64_t *keys)
{
    qsort(due, n, sizeof *due, due_cmp);
    size_t k = 0;
    *keys = 0;
    for (size_t i = 0; i < n && k < max_ids; i++) {
        uint64_t c = 0;
        int rv = kv_lease_get(st, txn, due[i].id, NULL);
        if (rv == MDB_NOTFOUND) {
            due[i].expiry = 0; /* ended already */
            continue;
        }
        if (rv) {
            continue; /* a store error: the next round tries it again */
        }
        if (max_keys && kv_lease_count(st, txn, due[i].id, &c) == 0) {
            if (k && *keys + c > max_keys) {
                break; /* the next entry begins with it */
            }
            *keys += c;
        }
        ids[k++] = due[i].id;
    }
    return k;
}

/* End one lease inside change @c: delete its keys (their delete events
 * are at the change's revision) and the lease. */
static int end_lease(struct kv_change *c, uint64_t id, uint64_t *deleted)
{
    struct kv_store *st = c->st;
    struct kv_arena mem = {0};
    ProtobufCBinaryData *keys;
    size_t n;
    int rv = kv_lease_keys(st, c->txn, id, &mem, &keys, &n);
    for (size_t i = 0; i < n && !rv; i++) {
        static const ProtobufCBinaryData one = {0, NULL};
        uint64_t d = 0;
        int err = 0;
        struct kv_rec rec;
        rv = kv_mvcc_get(st, c->txn, keys[i].data, keys[i].len, &rec);
        if (rv == 0 && rec.lease == id) {
            rv = kv_change_delete(c, &keys[i], &one, 0, NULL, NULL, &d, NULL,
                                  NULL, &err);
        } else if (rv == MDB_NOTFOUND || rv == 0) {
            rv = 0; /* not this lease's (an index out of step) */
        }
        *deleted += d;
        /* A key the delete did not find (or could not take) leaves an
         * index entry behind: drop it, so the lease ends whole. */
        if (!rv && d == 0) {
            rv = kv_lease_detach(st, c->txn, id, keys[i].data, keys[i].len);
        }
    }
    kv_arena_free(&mem);
    if (rv) {
        return rv;
    }
    uint8_t k8[8];
    kv_put_u64(k8, id);
    MDB_val k = {8, k8};
    int rc = mdb_del(c->txn, st->leases, &k, NULL);
    if (rc && rc != MDB_NOTFOUND) {
        return kv_store_fail(st, rc, "delete a lease");
    }
    count_drop(st, id);
    note(st, id);
    return 0;
}

/* Pack a reply into the outcome (its session record and answer). */
static int outcome_pack(struct kv_outcome *out, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    out->current = malloc(len ? len : 1);
    if (!out->current) {
        return KV_STORE_ENOMEM;
    }
    out->current_len = protobuf_c_message_pack(m, out->current);
    return 0;
}

static int apply_grant(struct kv_store *st,
                       MDB_txn *txn,
                       const Raftkv__LeaseGrantArgs *a,
                       struct kv_outcome *out)
{
    Raftkv__LeaseGrantReply r = RAFTKV__LEASE_GRANT_REPLY__INIT;
    char msg[120] = "";
    struct kv_revs revs;
    int rv = kv_mvcc_revs(st, txn, &revs);
    if (rv) {
        return rv;
    }
    out->revision = revs.revision;
    if (a->id == 0 || a->ttl <= 0 || a->ttl > KV_LEASE_MAX_TTL) {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        snprintf(msg, sizeof msg, "a lease needs an id and a TTL of 1 to %d s",
                 KV_LEASE_MAX_TTL);
    } else {
        rv = kv_lease_get(st, txn, a->id, NULL);
        if (rv == 0) {
            out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
            snprintf(msg, sizeof msg, "lease %016llx exists already",
                     (unsigned long long)a->id);
        } else if (rv != MDB_NOTFOUND) {
            return rv;
        } else {
            uint8_t k8[8], v8[LEASE_REC];
            kv_put_u64(k8, a->id);
            kv_put_u64(v8, (uint64_t)a->ttl);
            MDB_val k = {8, k8}, v = {sizeof v8, v8};
            int rc = mdb_put(txn, st->leases, &k, &v, 0);
            if (rc) {
                return kv_store_fail(st, rc, "write a lease");
            }
            note(st, a->id);
            r.id = a->id;
            r.ttl = a->ttl;
        }
    }
    r.err = out->err;
    r.message = msg;
    r.revision = out->revision;
    return outcome_pack(out, &r.base);
}

/* Revoke one lease, or expire many: all their keys at one revision. */
static int end_leases(struct kv_store *st,
                      MDB_txn *txn,
                      const uint64_t *ids,
                      size_t n,
                      bool must_exist,
                      struct kv_outcome *out)
{
    Raftkv__LeaseRevokeReply r = RAFTKV__LEASE_REVOKE_REPLY__INIT;
    char msg[80] = "";
    struct kv_change c;
    int rv = kv_change_begin(&c, st, txn);
    if (rv) {
        return rv;
    }
    uint64_t ended = 0;
    for (size_t i = 0; i < n && !rv; i++) {
        rv = kv_lease_get(st, txn, ids[i], NULL);
        if (rv == MDB_NOTFOUND) {
            rv = 0;
            if (must_exist) {
                out->err = RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND;
                snprintf(msg, sizeof msg, "no lease %016llx",
                         (unsigned long long)ids[i]);
            }
            continue;
        }
        if (!rv) {
            rv = end_lease(&c, ids[i], &r.deleted);
            ended++;
        }
    }
    if (!rv) {
        rv = kv_change_end(&c);
    }
    if (rv) {
        return rv;
    }
    if (!must_exist) {
        st->lease_news.expired += ended;
    }
    out->revision = kv_change_revision(&c);
    r.err = out->err;
    r.message = msg;
    r.revision = out->revision;
    return outcome_pack(out, &r.base);
}

int kv_lease_apply(struct kv_store *st,
                   MDB_txn *txn,
                   const Raftkv__LeaseCommand *lc,
                   struct kv_outcome *out)
{
    switch (lc->op_case) {
        case RAFTKV__LEASE_COMMAND__OP_GRANT:
            return apply_grant(st, txn, lc->grant, out);
        case RAFTKV__LEASE_COMMAND__OP_REVOKE:
            return end_leases(st, txn, &lc->revoke->id, 1, true, out);
        case RAFTKV__LEASE_COMMAND__OP_EXPIRE:
            if (lc->expire->n_ids > KV_LEASE_MAX_IDS) {
                out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
                return 0;
            }
            return end_leases(st, txn, lc->expire->ids, lc->expire->n_ids,
                              false, out);
        default:
            out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
            return 0;
    }
}
