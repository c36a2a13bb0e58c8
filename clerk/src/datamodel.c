/* datamodel.c: ranges, deletes of ranges, transactions, compaction and
 * history (etcd's data model) over ck_call, and their results. */
#include <stdlib.h>
#include <string.h>

#include <proto/kv.pb-c.h>

#include "clerk/clerk.h"
#include "internal.h"

/* --------------------------------------------------------------- results */

/* Copy a KeyValue: key and value in one allocation, each followed by a
 * NUL byte (kv->key owns it). */
static bool copy_kv(struct clerk_kv *kv, const Raftkv__KeyValue *in)
{
    size_t kl = in->key.len, vl = in->value.len;
    char *buf = malloc(kl + vl + 2);
    if (!buf) {
        return false;
    }
    if (kl) {
        memcpy(buf, in->key.data, kl);
    }
    buf[kl] = 0;
    if (vl) {
        memcpy(buf + kl + 1, in->value.data, vl);
    }
    buf[kl + 1 + vl] = 0;
    *kv = (struct clerk_kv){.key = buf,
                            .key_len = kl,
                            .value = buf + kl + 1,
                            .value_len = vl,
                            .create_revision = in->create_revision,
                            .mod_revision = in->mod_revision,
                            .version = in->version,
                            .lease = in->lease};
    return true;
}

/* Copy n KeyValues into a new array. */
static bool copy_kvs(struct clerk_kv **out,
                     size_t *n_out,
                     Raftkv__KeyValue *const *in,
                     size_t n)
{
    *out = NULL;
    *n_out = 0;
    if (!n) {
        return true;
    }
    struct clerk_kv *kvs = calloc(n, sizeof *kvs);
    if (!kvs) {
        return false;
    }
    *out = kvs;
    for (size_t i = 0; i < n; i++) {
        if (!copy_kv(&kvs[i], in[i])) {
            return false;
        }
        (*n_out)++;
    }
    return true;
}

static void free_kvs(struct clerk_kv *kvs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kvs[i].key);
    }
    free(kvs);
}

void clerk_kv_free(struct clerk_kv *kv)
{
    free_kvs(kv, kv ? 1 : 0);
}

void clerk_range_result_free(struct clerk_range_result *r)
{
    if (r) {
        free_kvs(r->kvs, r->n_kvs);
        free(r);
    }
}

void clerk_put_result_free(struct clerk_put_result *r)
{
    if (r) {
        clerk_kv_free(r->prev_kv);
        free(r);
    }
}

void clerk_delete_result_free(struct clerk_delete_result *r)
{
    if (r) {
        free_kvs(r->prev_kvs, r->n_prev_kvs);
        free(r);
    }
}

void clerk_txn_result_free(struct clerk_txn_result *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->n_responses; i++) {
        struct clerk_txn_response *o = &r->responses[i];
        clerk_range_result_free(o->range);
        clerk_put_result_free(o->put);
        clerk_delete_result_free(o->del);
        clerk_txn_result_free(o->txn);
    }
    free(r->responses);
    free(r);
}

void clerk_events_result_free(struct clerk_events_result *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->n_events; i++) {
        free(r->events[i].kv.key);
        if (r->prev_kvs) {
            free(r->prev_kvs[i].kv.key);
        }
    }
    free(r->prev_kvs);
    free(r->events);
    free(r);
}

static struct clerk_range_result *range_of(const Raftkv__RangeReply *m,
                                           uint64_t revision)
{
    struct clerk_range_result *r = calloc(1, sizeof *r);
    if (!r) {
        return NULL;
    }
    r->revision = revision;
    r->more = m->more;
    r->count = m->count;
    if (!copy_kvs(&r->kvs, &r->n_kvs, m->kvs, m->n_kvs)) {
        clerk_range_result_free(r);
        return NULL;
    }
    return r;
}

static struct clerk_put_result *put_of(const Raftkv__KeyValue *prev,
                                       uint64_t revision)
{
    struct clerk_put_result *r = calloc(1, sizeof *r);
    if (!r) {
        return NULL;
    }
    r->revision = revision;
    if (prev) {
        r->prev_kv = malloc(sizeof *r->prev_kv);
        if (!r->prev_kv || !copy_kv(r->prev_kv, prev)) {
            free(r->prev_kv);
            free(r);
            return NULL;
        }
    }
    return r;
}

static struct clerk_delete_result *delete_of(const Raftkv__DeleteRangeReply *m,
                                             uint64_t revision)
{
    struct clerk_delete_result *r = calloc(1, sizeof *r);
    if (!r) {
        return NULL;
    }
    r->revision = revision;
    r->deleted = m->deleted;
    r->more = m->more;
    if (!copy_kvs(&r->prev_kvs, &r->n_prev_kvs, m->prev_kvs, m->n_prev_kvs)) {
        clerk_delete_result_free(r);
        return NULL;
    }
    return r;
}

/* A transaction's result; nested ones carry the top one's revision. */
static struct clerk_txn_result *txn_of(const Raftkv__TxnReply *m,
                                       uint64_t revision)
{
    struct clerk_txn_result *r = calloc(1, sizeof *r);
    if (!r) {
        return NULL;
    }
    r->revision = revision;
    r->succeeded = m->succeeded;
    if (m->n_responses) {
        r->responses = calloc(m->n_responses, sizeof *r->responses);
        if (!r->responses) {
            free(r);
            return NULL;
        }
    }
    for (size_t i = 0; i < m->n_responses; i++) {
        const Raftkv__ResponseOp *op = m->responses[i];
        struct clerk_txn_response *o = &r->responses[i];
        bool ok = true;
        switch (op->response_case) {
            case RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
                o->type = CLERK_OP_RANGE;
                ok = (o->range = range_of(op->response_range, revision));
                break;
            case RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
                o->type = CLERK_OP_PUT;
                ok = (o->put = put_of(op->response_put->prev_kv, revision));
                break;
            case RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
                o->type = CLERK_OP_DELETE;
                ok = (o->del = delete_of(op->response_delete_range, revision));
                break;
            case RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
                o->type = CLERK_OP_TXN;
                ok = (o->txn = txn_of(op->response_txn, revision));
                break;
            default:
                /* An answer this clerk does not know: an empty range. */
                o->type = CLERK_OP_RANGE;
                ok = (o->range = calloc(1, sizeof *o->range));
                break;
        }
        r->n_responses++;
        if (!ok) {
            clerk_txn_result_free(r);
            return NULL;
        }
    }
    return r;
}

/* ------------------------------------------------------ ck_take_cb's */

static bool take_range(const ProtobufCMessage *m, void **out)
{
    const Raftkv__RangeReply *r = (const Raftkv__RangeReply *)m;
    return (*out = range_of(r, r->revision)) != NULL;
}

static void drop_range(void *r)
{
    clerk_range_result_free(r);
}

static bool take_put(const ProtobufCMessage *m, void **out)
{
    const Raftkv__PutAppendReply *r = (const Raftkv__PutAppendReply *)m;
    return (*out = put_of(r->prev_kv, r->revision)) != NULL;
}

static void drop_put(void *r)
{
    clerk_put_result_free(r);
}

static bool take_delete(const ProtobufCMessage *m, void **out)
{
    const Raftkv__DeleteRangeReply *r = (const Raftkv__DeleteRangeReply *)m;
    return (*out = delete_of(r, r->revision)) != NULL;
}

static void drop_delete(void *r)
{
    clerk_delete_result_free(r);
}

static bool take_txn(const ProtobufCMessage *m, void **out)
{
    const Raftkv__TxnReply *r = (const Raftkv__TxnReply *)m;
    return (*out = txn_of(r, r->revision)) != NULL;
}

static void drop_txn(void *r)
{
    clerk_txn_result_free(r);
}

struct clerk_events_result *ck_events_of(Raftkv__Event *const *events,
                                         size_t n,
                                         bool prev_kv)
{
    struct clerk_events_result *r = calloc(1, sizeof *r);
    if (!r) {
        return NULL;
    }
    if (n) {
        r->events = calloc(n, sizeof *r->events);
        r->prev_kvs = prev_kv ? calloc(n, sizeof *r->prev_kvs) : NULL;
        if (!r->events || (prev_kv && !r->prev_kvs)) {
            free(r->events);
            free(r->prev_kvs);
            free(r);
            return NULL;
        }
    }
    static const Raftkv__KeyValue none = RAFTKV__KEY_VALUE__INIT;
    for (size_t i = 0; i < n; i++) {
        const Raftkv__Event *ev = events[i];
        struct clerk_event *o = &r->events[i];
        o->type = ev->type == RAFTKV__EVENT__EVENT_TYPE__DELETE
                      ? CLERK_EVENT_DELETE
                      : CLERK_EVENT_PUT;
        struct clerk_prev_kv *pk = r->prev_kvs ? &r->prev_kvs[i] : NULL;
        if (pk) {
            pk->missing = ev->prev_kv_missing;
            pk->known = ev->prev_kv != NULL;
        }
        r->n_events++; /* (freed by clerk_events_result_free from here) */
        if (!copy_kv(&o->kv, ev->kv ? ev->kv : &none) ||
            (pk && pk->known && !copy_kv(&pk->kv, ev->prev_kv))) {
            clerk_events_result_free(r);
            return NULL;
        }
    }
    return r;
}

static bool take_events(const ProtobufCMessage *m, void **out)
{
    const Raftkv__EventsReply *e = (const Raftkv__EventsReply *)m;
    struct clerk_events_result *r = ck_events_of(e->events, e->n_events, false);
    if (!r) {
        return false;
    }
    r->revision = e->revision;
    r->compact_revision = e->compact_revision;
    r->more = e->more;
    r->next_revision = e->next_revision;
    *out = r;
    return true;
}

static void drop_events(void *r)
{
    clerk_events_result_free(r);
}

/* The compact revision after a Compact call. */
static bool take_compact(const ProtobufCMessage *m, void **out)
{
    const Raftkv__CompactReply *r = (const Raftkv__CompactReply *)m;
    uint64_t *v = malloc(sizeof *v);
    if (v) {
        *v = r->compact_revision;
    }
    return (*out = v) != NULL;
}

/* ---------------------------------------------------------- operations */

static int check_key(const void *key,
                     size_t key_len,
                     const void *end,
                     size_t end_len)
{
    if ((!key && key_len) || (!end && end_len)) {
        return CLERK_INVALID;
    }
    return key_len ? CLERK_OK : CLERK_BAD_REQUEST;
}

void ck_range_flags(Raftkv__RangeArgs *r, uint64_t limit, unsigned flags)
{
    r->limit = limit;
    r->keys_only = (flags & CLERK_RANGE_KEYS_ONLY) != 0;
    r->count_only = (flags & CLERK_RANGE_COUNT_ONLY) != 0;
    r->no_count = (flags & CLERK_RANGE_NO_COUNT) != 0;
    r->sort_order =
        (flags & CLERK_RANGE_SORT_DESCEND)  ? RAFTKV__SORT_ORDER__SORT_DESCEND
        : (flags & CLERK_RANGE_SORT_ASCEND) ? RAFTKV__SORT_ORDER__SORT_ASCEND
                                            : RAFTKV__SORT_ORDER__SORT_NONE;
}

int clerk_range(struct clerk *c,
                const void *key,
                size_t key_len,
                const void *range_end,
                size_t range_end_len,
                uint64_t limit,
                unsigned flags,
                struct clerk_range_result **out)
{
    if (out) {
        *out = NULL;
    }
    int rv = check_key(key, key_len, range_end, range_end_len);
    if (!c || !out) {
        return CLERK_INVALID;
    }
    if (rv) {
        return rv;
    }
    Raftkv__RangeArgs a = RAFTKV__RANGE_ARGS__INIT;
    a.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    a.range_end = (ProtobufCBinaryData){range_end_len, (uint8_t *)range_end};
    ck_range_flags(&a, limit, flags);
    struct ck_call k = {.method = "Range",
                        .args = &a.base,
                        .take = take_range,
                        .drop = drop_range};
    return ck_call(c, &k, (void **)out);
}

int clerk_get_ex(struct clerk *c,
                 const void *key,
                 size_t key_len,
                 struct clerk_kv **kv,
                 uint64_t *revision)
{
    if (kv) {
        *kv = NULL;
    }
    if (revision) {
        *revision = 0;
    }
    if (!kv) {
        return CLERK_INVALID;
    }
    struct clerk_range_result *r;
    int rv = clerk_range(c, key, key_len, NULL, 0, 1, 0, &r);
    if (rv) {
        return rv;
    }
    if (revision) {
        *revision = r->revision;
    }
    if (r->n_kvs == 0) {
        clerk_range_result_free(r);
        return CLERK_NOT_FOUND;
    }
    /* Hand over the first kv: the array starts with it. */
    *kv = r->kvs;
    for (size_t i = 1; i < r->n_kvs; i++) {
        free(r->kvs[i].key);
    }
    free(r);
    return CLERK_OK;
}

int clerk_put_ex(struct clerk *c,
                 const void *key,
                 size_t key_len,
                 const void *value,
                 size_t value_len,
                 unsigned flags,
                 struct clerk_put_result **out)
{
    return ck_put(c, key, key_len, value, value_len, 0, flags, out);
}

int ck_put(struct clerk *c,
           const void *key,
           size_t key_len,
           const void *value,
           size_t value_len,
           uint64_t lease,
           unsigned flags,
           struct clerk_put_result **out)
{
    if (out) {
        *out = NULL;
    }
    int rv = check_key(key, key_len, value, value_len);
    if (!c) {
        return CLERK_INVALID;
    }
    if (rv) {
        return rv;
    }
    Raftkv__PutAppendArgs a = RAFTKV__PUT_APPEND_ARGS__INIT;
    a.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    a.value = (ProtobufCBinaryData){value_len, (uint8_t *)value};
    a.op = RAFTKV__PUT_OP__PUT_OP_PUT;
    a.prev_kv = (flags & CLERK_PUT_PREV_KV) != 0;
    a.ignore_value = (flags & CLERK_PUT_IGNORE_VALUE) != 0;
    a.lease = lease;
    struct ck_call k = {.method = "PutAppend",
                        .args = &a.base,
                        .write = true,
                        .session = true,
                        .take = take_put,
                        .drop = drop_put};
    struct clerk_put_result *r;
    rv = ck_call(c, &k, (void **)&r);
    if (out) {
        *out = r;
    } else {
        clerk_put_result_free(r);
    }
    return rv;
}

int clerk_delete_range(struct clerk *c,
                       const void *key,
                       size_t key_len,
                       const void *range_end,
                       size_t range_end_len,
                       unsigned flags,
                       struct clerk_delete_result **out)
{
    return clerk_delete_range_limit(c, key, key_len, range_end, range_end_len,
                                    0, flags, out);
}

int clerk_delete_range_limit(struct clerk *c,
                             const void *key,
                             size_t key_len,
                             const void *range_end,
                             size_t range_end_len,
                             uint64_t limit,
                             unsigned flags,
                             struct clerk_delete_result **out)
{
    if (out) {
        *out = NULL;
    }
    int rv = check_key(key, key_len, range_end, range_end_len);
    if (!c) {
        return CLERK_INVALID;
    }
    if (rv) {
        return rv;
    }
    Raftkv__DeleteRangeArgs a = RAFTKV__DELETE_RANGE_ARGS__INIT;
    a.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    a.range_end = (ProtobufCBinaryData){range_end_len, (uint8_t *)range_end};
    a.prev_kv = (flags & CLERK_DELETE_PREV_KV) != 0;
    a.limit = limit;
    struct ck_call k = {.method = "DeleteRange",
                        .args = &a.base,
                        .write = true,
                        .session = true,
                        .take = take_delete,
                        .drop = drop_delete};
    struct clerk_delete_result *r;
    rv = ck_call(c, &k, (void **)&r);
    if (out) {
        *out = r;
    } else {
        clerk_delete_result_free(r);
    }
    return rv;
}

int clerk_txn_commit(struct clerk *c,
                     const struct clerk_txn *t,
                     struct clerk_txn_result **out)
{
    if (out) {
        *out = NULL;
    }
    if (!c || !t) {
        return CLERK_INVALID;
    }
    /* The builder's arguments, with this call's session fields: a
     * shallow copy, so that the builder itself stays untouched. */
    Raftkv__TxnArgs a = *ck_txn_args(t);
    /* One without a put or delete is a read on the server: a deadline
     * that passes leaves nothing unknown (TIMEOUT, not UNKNOWN_OUTCOME).
     * It carries a session all the same, which servers older than
     * read-only transactions ask of every Txn. */
    struct ck_call k = {.method = "Txn",
                        .args = &a.base,
                        .write = ck_txn_writes(t),
                        .session = true,
                        .take = take_txn,
                        .drop = drop_txn};
    struct clerk_txn_result *r;
    int rv = ck_call(c, &k, (void **)&r);
    if (out) {
        *out = r;
    } else {
        clerk_txn_result_free(r);
    }
    return rv;
}

int clerk_compact(struct clerk *c,
                  uint64_t revision,
                  uint64_t *compact_revision)
{
    if (compact_revision) {
        *compact_revision = 0;
    }
    if (!c) {
        return CLERK_INVALID;
    }
    Raftkv__CompactArgs a = RAFTKV__COMPACT_ARGS__INIT;
    a.revision = revision;
    struct ck_call k = {.method = "Compact",
                        .args = &a.base,
                        .write = true,
                        .take = take_compact,
                        .drop = free};
    uint64_t *now = NULL;
    int rv = ck_call(c, &k, (void **)&now);
    uint64_t compacted = now ? *now : k.compact_revision;
    free(now);
    if (rv == CLERK_COMPACTED && k.retried && compacted == revision) {
        /* An earlier try of this call did it. */
        rv = CLERK_OK;
    }
    if (compact_revision) {
        *compact_revision = compacted;
    }
    return rv;
}

int clerk_events(struct clerk *c,
                 uint64_t start_revision,
                 const void *key,
                 size_t key_len,
                 const void *range_end,
                 size_t range_end_len,
                 uint64_t limit,
                 struct clerk_events_result **out)
{
    if (out) {
        *out = NULL;
    }
    /* No key at all: every key's changes. */
    bool all = key_len == 0 && range_end_len == 0;
    int rv = all ? CLERK_OK : check_key(key, key_len, range_end, range_end_len);
    if (!c || !out) {
        return CLERK_INVALID;
    }
    if (rv) {
        return rv;
    }
    Raftkv__EventsArgs a = RAFTKV__EVENTS_ARGS__INIT;
    a.start_revision = start_revision;
    a.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    a.range_end = (ProtobufCBinaryData){range_end_len, (uint8_t *)range_end};
    a.limit = limit;
    struct ck_call k = {.method = "Events",
                        .args = &a.base,
                        .take = take_events,
                        .drop = drop_events};
    return ck_call(c, &k, (void **)out);
}
