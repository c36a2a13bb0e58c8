/* test_mvcc.c: the data model's state module: revisions, ranges,
 * transactions, delete ranges, history and compaction, applied through the
 * state machine (kv_sm_apply) as the node applies log entries. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include <proto/kv.pb-c.h>

#include "cunit_main.h"
#include "mvcc.h"
#include "sm.h"
#include "snap.h"
#include "store.h"
#include "txn.h"
#include "wal.h"

static char dir[64];
static struct kv_store st;
static MDB_txn *txn;
static uint64_t next_index, next_request;
static struct kv_arena mem; /* the tests' own messages */
static const uint8_t client[16] = {7};

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

static const ProtobufCBinaryData no_end = {0, NULL};
static const ProtobufCBinaryData open_end = {1, (uint8_t *)""};

/* Apply a command at the next index; the outcome is the caller's. */
static void apply(Raftkv__Command *c, struct kv_outcome *o)
{
    size_t len = raftkv__command__get_packed_size(c);
    uint8_t *buf = malloc(len + 1);
    CU_ASSERT_FATAL(buf != NULL);
    raftkv__command__pack(c, buf);
    CU_ASSERT_EQUAL_FATAL(kv_sm_apply(&st, txn, ++next_index, buf, len, o), 0);
    free(buf);
}

static void begin(void)
{
    snprintf(dir, sizeof dir, "/tmp/raftkv-mvcc-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    CU_ASSERT_FATAL(kv_store_open(&st, dir, 0) == 0);
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    next_index = next_request = 0;
    Raftkv__SessionOpen so = RAFTKV__SESSION_OPEN__INIT;
    so.client_id.data = (uint8_t *)client;
    so.client_id.len = 16;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_OPEN_SESSION;
    c.open_session = &so;
    struct kv_outcome o;
    apply(&c, &o);
    CU_ASSERT_EQUAL(o.err, 0);
    kv_outcome_clear(&o);
}

static void end(void)
{
    if (txn) {
        mdb_txn_abort(txn);
        txn = NULL;
    }
    kv_store_close(&st);
    cunit_remove_tree(dir);
    kv_arena_free(&mem);
}

static uint64_t revision(void)
{
    struct kv_revs r;
    CU_ASSERT_FATAL(kv_mvcc_revs(&st, txn, &r) == 0);
    return r.revision;
}

/* Put (or append) as a client write; returns the error. */
static int put_op(const char *k, const char *v, bool append, uint64_t *rev)
{
    Raftkv__PutAppendArgs a = RAFTKV__PUT_APPEND_ARGS__INIT;
    a.key = bin(k);
    a.value = bin(v);
    a.op = append ? RAFTKV__PUT_OP__PUT_OP_APPEND : RAFTKV__PUT_OP__PUT_OP_PUT;
    a.client_id.data = (uint8_t *)client;
    a.client_id.len = 16;
    a.request_id = ++next_request;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_PUT_APPEND;
    c.put_append = &a;
    struct kv_outcome o;
    apply(&c, &o);
    if (rev) {
        *rev = o.revision;
    }
    int err = o.err;
    kv_outcome_clear(&o);
    return err;
}

static int put(const char *k, const char *v)
{
    return put_op(k, v, false, NULL);
}

static int del(const char *k, uint64_t *rev)
{
    Raftkv__DeleteArgs a = RAFTKV__DELETE_ARGS__INIT;
    a.key = bin(k);
    a.client_id.data = (uint8_t *)client;
    a.client_id.len = 16;
    a.request_id = ++next_request;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_DEL;
    c.del = &a;
    struct kv_outcome o;
    apply(&c, &o);
    *rev = o.revision;
    int err = o.err;
    kv_outcome_clear(&o);
    return err;
}

/* A key's record; false when missing. */
static bool rec(const char *k, struct kv_rec *r)
{
    int rv = kv_mvcc_get(&st, txn, k, strlen(k), r);
    CU_ASSERT(rv == 0 || rv == MDB_NOTFOUND);
    return rv == 0;
}

static bool value_is(const struct kv_rec *r, const char *v)
{
    return r->value_len == strlen(v) && memcmp(r->value, v, r->value_len) == 0;
}

/* Read a range into *r (memory in mem). */
static void range(const char *key,
                  ProtobufCBinaryData end_,
                  uint64_t limit,
                  Raftkv__SortOrder order,
                  Raftkv__RangeReply *r)
{
    Raftkv__RangeArgs a = RAFTKV__RANGE_ARGS__INIT;
    a.key = bin(key);
    a.range_end = end_;
    a.limit = limit;
    a.sort_order = order;
    raftkv__range_reply__init(r);
    CU_ASSERT_EQUAL_FATAL(kv_mvcc_range(&st, txn, &a, true, &mem, r, NULL), 0);
}

static bool kv_is(const Raftkv__KeyValue *kv, const char *k, const char *v)
{
    return kv->key.len == strlen(k) &&
           memcmp(kv->key.data, k, kv->key.len) == 0 &&
           (!v || (kv->value.len == strlen(v) &&
                   memcmp(kv->value.data, v, kv->value.len) == 0));
}

/* ------------------------------------------------- transaction builder */

static Raftkv__TxnArgs *txn_new(void)
{
    Raftkv__TxnArgs *t = kv_arena_alloc(&mem, sizeof *t);
    raftkv__txn_args__init(t);
    t->success = kv_arena_alloc(&mem, 200 * sizeof *t->success);
    t->failure = kv_arena_alloc(&mem, 200 * sizeof *t->failure);
    t->compare = kv_arena_alloc(&mem, 8 * sizeof *t->compare);
    return t;
}

static Raftkv__Compare *cmp_add(Raftkv__TxnArgs *t,
                                const char *key,
                                Raftkv__Compare__Target target,
                                Raftkv__Compare__Result result)
{
    Raftkv__Compare *c = kv_arena_alloc(&mem, sizeof *c);
    raftkv__compare__init(c);
    c->key = bin(key);
    c->target = target;
    c->result = result;
    t->compare[t->n_compare++] = c;
    return c;
}

static Raftkv__RequestOp *op_add(Raftkv__TxnArgs *t, bool success)
{
    Raftkv__RequestOp *op = kv_arena_alloc(&mem, sizeof *op);
    raftkv__request_op__init(op);
    if (success) {
        t->success[t->n_success++] = op;
    } else {
        t->failure[t->n_failure++] = op;
    }
    return op;
}

static Raftkv__PutRequest *op_put(Raftkv__TxnArgs *t,
                                  bool success,
                                  const char *k,
                                  const char *v)
{
    Raftkv__RequestOp *op = op_add(t, success);
    Raftkv__PutRequest *p = kv_arena_alloc(&mem, sizeof *p);
    raftkv__put_request__init(p);
    p->key = bin(k);
    p->value = bin(v);
    op->request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = p;
    return p;
}

static void op_range(Raftkv__TxnArgs *t,
                     bool success,
                     const char *k,
                     ProtobufCBinaryData end_)
{
    Raftkv__RequestOp *op = op_add(t, success);
    Raftkv__RangeArgs *a = kv_arena_alloc(&mem, sizeof *a);
    raftkv__range_args__init(a);
    a->key = bin(k);
    a->range_end = end_;
    op->request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op->request_range = a;
}

static void op_del(Raftkv__TxnArgs *t,
                   bool success,
                   const char *k,
                   ProtobufCBinaryData end_)
{
    Raftkv__RequestOp *op = op_add(t, success);
    Raftkv__DeleteRangeArgs *a = kv_arena_alloc(&mem, sizeof *a);
    raftkv__delete_range_args__init(a);
    a->key = bin(k);
    a->range_end = end_;
    op->request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op->request_delete_range = a;
}

static void op_txn(Raftkv__TxnArgs *t, bool success, Raftkv__TxnArgs *inner)
{
    Raftkv__RequestOp *op = op_add(t, success);
    op->request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = inner;
}

/* Apply a transaction as a client write: its reply (free with
 * raftkv__txn_reply__free_unpacked) and outcome. */
static Raftkv__TxnReply *run_txn(Raftkv__TxnArgs *t,
                                 uint64_t request,
                                 struct kv_outcome *o)
{
    t->client_id.data = (uint8_t *)client;
    t->client_id.len = 16;
    t->request_id = request ? request : ++next_request;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_TXN;
    c.txn = t;
    apply(&c, o);
    CU_ASSERT_FATAL(o->current != NULL);
    Raftkv__TxnReply *r =
        raftkv__txn_reply__unpack(NULL, o->current_len, o->current);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_EQUAL(r->err, o->err);
    return r;
}

/* ------------------------------------------------------------- tests */

static void test_mvcc_revisions_follow_etcd(void)
{
    begin();
    struct kv_rec r;
    uint64_t rev;
    CU_ASSERT_EQUAL(revision(), 1); /* a fresh store, as etcd's */
    CU_ASSERT_EQUAL(put_op("a", "1", false, &rev), 0);
    CU_ASSERT_EQUAL(rev, 2);
    CU_ASSERT_FATAL(rec("a", &r));
    CU_ASSERT(r.create == 2 && r.mod == 2 && r.version == 1);
    CU_ASSERT_EQUAL(put_op("a", "2", false, &rev), 0);
    CU_ASSERT_EQUAL(rev, 3);
    CU_ASSERT_FATAL(rec("a", &r));
    CU_ASSERT(r.create == 2 && r.mod == 3 && r.version == 2);
    CU_ASSERT(value_is(&r, "2"));
    CU_ASSERT_EQUAL(put("b", "x"), 0);
    CU_ASSERT_EQUAL(del("a", &rev), 0);
    CU_ASSERT_EQUAL(rev, 5);
    CU_ASSERT_FALSE(rec("a", &r));
    /* Deleting nothing changes nothing. */
    CU_ASSERT_EQUAL(del("a", &rev), RAFTKV__KV_ERROR__KV_NOT_FOUND);
    CU_ASSERT_EQUAL(rev, 5);
    CU_ASSERT_EQUAL(revision(), 5);
    /* A key created again starts over. */
    CU_ASSERT_EQUAL(put("a", "3"), 0);
    CU_ASSERT_FATAL(rec("a", &r));
    CU_ASSERT(r.create == 6 && r.mod == 6 && r.version == 1);
    /* Append is a put of the joined value. */
    CU_ASSERT_EQUAL(put_op("b", "y", true, &rev), 0);
    CU_ASSERT_EQUAL(rev, 7);
    CU_ASSERT_FATAL(rec("b", &r));
    CU_ASSERT(value_is(&r, "xy") && r.create == 4 && r.version == 2);
    /* CAS: a mismatch writes nothing; a match makes one revision. */
    Raftkv__CompareAndSwapArgs cas = RAFTKV__COMPARE_AND_SWAP_ARGS__INIT;
    cas.key = bin("b");
    cas.expected_case = RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECTED_VALUE;
    cas.expected_value = bin("nope");
    cas.new_value = bin("z");
    cas.client_id.data = (uint8_t *)client;
    cas.client_id.len = 16;
    cas.request_id = ++next_request;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_CAS;
    c.cas = &cas;
    struct kv_outcome o;
    apply(&c, &o);
    CU_ASSERT(!o.swapped && o.exists && o.revision == 7);
    CU_ASSERT(o.current_len == 2 && memcmp(o.current, "xy", 2) == 0);
    kv_outcome_clear(&o);
    cas.expected_value = bin("xy");
    cas.request_id = ++next_request;
    apply(&c, &o);
    CU_ASSERT(o.swapped && o.revision == 8);
    kv_outcome_clear(&o);
    CU_ASSERT_FATAL(rec("b", &r));
    CU_ASSERT(value_is(&r, "z") && r.mod == 8 && r.version == 3);
    end();
}

static void test_mvcc_range_limits_sorts_and_counts(void)
{
    begin();
    char k[16], v[16];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "k%03d", i);
        snprintf(v, sizeof v, "v%d", i);
        CU_ASSERT_EQUAL(put(k, v), 0);
    }
    CU_ASSERT_EQUAL(put("other", "o"), 0);
    Raftkv__RangeReply r;
    range("k", bin("l"), 0, 0, &r);
    CU_ASSERT(r.err == 0 && r.n_kvs == 100 && r.count == 100 && !r.more);
    CU_ASSERT(kv_is(r.kvs[0], "k000", "v0") && kv_is(r.kvs[99], "k099", "v99"));
    range("k", bin("l"), 10, RAFTKV__SORT_ORDER__SORT_ASCEND, &r);
    CU_ASSERT(r.n_kvs == 10 && r.count == 100 && r.more);
    CU_ASSERT(kv_is(r.kvs[9], "k009", NULL));
    range("k", bin("l"), 3, RAFTKV__SORT_ORDER__SORT_DESCEND, &r);
    CU_ASSERT(r.n_kvs == 3 && r.count == 100 && r.more);
    CU_ASSERT(kv_is(r.kvs[0], "k099", NULL) && kv_is(r.kvs[2], "k097", NULL));
    range("k010", bin("k020"), 0, 0, &r);
    CU_ASSERT(r.n_kvs == 10 && r.count == 10 && !r.more);
    /* From a key on; everything. */
    range("k050", open_end, 0, RAFTKV__SORT_ORDER__SORT_DESCEND, &r);
    CU_ASSERT(r.n_kvs == 51 && kv_is(r.kvs[0], "other", "o"));
    range("\0", open_end, 1, 0, &r); /* key "" is not a key: see below */
    CU_ASSERT_EQUAL(r.err, RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    Raftkv__RangeArgs all = RAFTKV__RANGE_ARGS__INIT;
    all.key = open_end;
    all.range_end = open_end;
    all.limit = 1;
    raftkv__range_reply__init(&r);
    CU_ASSERT_EQUAL(kv_mvcc_range(&st, txn, &all, false, &mem, &r, NULL), 0);
    CU_ASSERT(r.n_kvs == 1 && r.count == 101 && r.more);
    all.count_only = true;
    raftkv__range_reply__init(&r);
    CU_ASSERT_EQUAL(kv_mvcc_range(&st, txn, &all, false, &mem, &r, NULL), 0);
    CU_ASSERT(r.n_kvs == 0 && r.count == 101);
    /* One key, present and missing; keys only. */
    range("k005", no_end, 0, 0, &r);
    CU_ASSERT(r.n_kvs == 1 && r.count == 1 && kv_is(r.kvs[0], "k005", "v5"));
    CU_ASSERT(r.kvs[0]->create_revision == 7 && r.kvs[0]->version == 1);
    range("k5", no_end, 0, 0, &r);
    CU_ASSERT(r.n_kvs == 0 && r.count == 0);
    /* One key in descending order: that key (it was a store error). */
    range("k005", no_end, 0, RAFTKV__SORT_ORDER__SORT_DESCEND, &r);
    CU_ASSERT(r.err == 0 && r.n_kvs == 1 && r.count == 1);
    Raftkv__RangeArgs ko = RAFTKV__RANGE_ARGS__INIT;
    ko.key = bin("k");
    ko.range_end = bin("l");
    ko.keys_only = true;
    raftkv__range_reply__init(&r);
    CU_ASSERT_EQUAL(kv_mvcc_range(&st, txn, &ko, false, &mem, &r, NULL), 0);
    CU_ASSERT(r.n_kvs == 100 && r.kvs[5]->value.len == 0 &&
              r.kvs[5]->mod_revision == 7);
    /* An end before the key is refused. */
    range("k5", bin("k1"), 0, 0, &r);
    CU_ASSERT_EQUAL(r.err, RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    /* A reply holds at most 4 MiB: the rest is counted, not sent. */
    char *big = malloc((1 << 20) + 1);
    CU_ASSERT_FATAL(big != NULL);
    memset(big, 'b', 1 << 20);
    big[1 << 20] = 0;
    for (int i = 0; i < 6; i++) {
        snprintf(k, sizeof k, "big%d", i);
        CU_ASSERT_EQUAL(put(k, big), 0);
    }
    free(big);
    range("big", bin("bih"), 0, 0, &r);
    CU_ASSERT(r.err == 0 && r.n_kvs == 3 && r.count == 6 && r.more);
    /* no_count: the rest of the range is not walked to count it. */
    Raftkv__RangeArgs nc = RAFTKV__RANGE_ARGS__INIT;
    nc.key = bin("big");
    nc.range_end = bin("bih");
    nc.no_count = true;
    raftkv__range_reply__init(&r);
    CU_ASSERT_EQUAL(kv_mvcc_range(&st, txn, &nc, false, &mem, &r, NULL), 0);
    CU_ASSERT(r.err == 0 && r.n_kvs == 3 && r.count == 3 && r.more);
    nc.key = bin("big3");
    raftkv__range_reply__init(&r);
    CU_ASSERT_EQUAL(kv_mvcc_range(&st, txn, &nc, false, &mem, &r, NULL), 0);
    CU_ASSERT(r.err == 0 && r.n_kvs == 3 && r.count == 3 && !r.more);
    end();
}

/* Count @a with at most @budget keys walked per call, as the node does
 * across loop turns: the total and the number of calls. */
static uint64_t sliced_count(const Raftkv__RangeArgs *a,
                             uint64_t budget,
                             int *calls)
{
    Raftkv__RangeReply r = RAFTKV__RANGE_REPLY__INIT;
    struct kv_count_rest rest = {.budget = budget};
    CU_ASSERT_EQUAL(kv_mvcc_range(&st, txn, a, false, &mem, &r, &rest), 0);
    uint64_t count = r.count;
    *calls = 1;
    while (rest.pending && *calls < 10000) {
        CU_ASSERT_EQUAL(kv_mvcc_count_on(&st, txn, &rest, &mem, &count), 0);
        (*calls)++;
    }
    return count;
}

/* A count cut into slices comes to what one walk counts: ascending and
 * descending, with a limit, count only, a prefix, one key. */
static void test_mvcc_range_count_in_slices(void)
{
    begin();
    char k[16];
    for (int i = 0; i < 250; i++) {
        snprintf(k, sizeof k, "k%03d", i);
        CU_ASSERT_EQUAL(put(k, "v"), 0);
        snprintf(k, sizeof k, "k%03d\x01", i); /* right above k%03d */
        CU_ASSERT_EQUAL(put(k, "w"), 0);
    }
    CU_ASSERT_EQUAL(put("l", "x"), 0);
    Raftkv__RangeArgs a = RAFTKV__RANGE_ARGS__INIT;
    a.key = bin("k");
    a.range_end = bin("l");
    int calls;
    a.count_only = true;
    CU_ASSERT_EQUAL(sliced_count(&a, 0, &calls), 500);
    CU_ASSERT_EQUAL(calls, 1);
    CU_ASSERT_EQUAL(sliced_count(&a, 7, &calls), 500);
    CU_ASSERT_EQUAL(calls, 72); /* ceil(500 / 7), then one that ends */
    CU_ASSERT_EQUAL(sliced_count(&a, 1, &calls), 500);
    a.sort_order = RAFTKV__SORT_ORDER__SORT_DESCEND;
    CU_ASSERT_EQUAL(sliced_count(&a, 7, &calls), 500);
    a.count_only = false;
    a.limit = 10; /* 10 answered, then the rest counted */
    CU_ASSERT_EQUAL(sliced_count(&a, 13, &calls), 500);
    CU_ASSERT(calls > 30);
    a.sort_order = RAFTKV__SORT_ORDER__SORT_ASCEND;
    CU_ASSERT_EQUAL(sliced_count(&a, 13, &calls), 500);
    /* To the end of the store; from the middle; one key. */
    a.limit = 0;
    a.count_only = true;
    a.key = bin("k100");
    a.range_end = open_end;
    CU_ASSERT_EQUAL(sliced_count(&a, 9, &calls), 301);
    a.sort_order = RAFTKV__SORT_ORDER__SORT_DESCEND;
    CU_ASSERT_EQUAL(sliced_count(&a, 9, &calls), 301);
    a.range_end = no_end;
    CU_ASSERT_EQUAL(sliced_count(&a, 1, &calls), 1);
    CU_ASSERT_EQUAL(calls, 1);
    /* A transaction read with counts left (kv_change.counts): the first
     * range walks the budget, the others one key; each count comes to
     * what it is once counted on, the nested one too. */
    Raftkv__TxnArgs *t = txn_new(), *inner = txn_new();
    op_range(t, true, "k", bin("l"));
    op_range(t, true, "k100", open_end);
    op_range(inner, true, "k", bin("k2"));
    op_txn(t, true, inner);
    for (size_t i = 0; i < 2; i++) {
        t->success[i]->request_range->count_only = true;
    }
    inner->success[0]->request_range->sort_order =
        RAFTKV__SORT_ORDER__SORT_DESCEND;
    inner->success[0]->request_range->limit = 1;
    struct kv_change c;
    struct kv_counts cs = {.budget = 7};
    CU_ASSERT_EQUAL_FATAL(kv_change_begin(&c, &st, txn), 0);
    c.counts = &cs;
    Raftkv__TxnReply tr = RAFTKV__TXN_REPLY__INIT;
    CU_ASSERT_EQUAL_FATAL(kv_txn_run(&c, t, &mem, &tr), 0);
    CU_ASSERT_EQUAL_FATAL(cs.n, 3);
    CU_ASSERT_EQUAL(*cs.left[0].count, 7);
    CU_ASSERT_EQUAL(*cs.left[1].count, 1);
    /* The key answered, the one past the limit, then one walked. */
    CU_ASSERT_EQUAL(*cs.left[2].count, 3);
    for (size_t i = 0; i < cs.n; i++) {
        for (int j = 0; cs.left[i].rest.pending && j < 1000; j++) {
            CU_ASSERT_EQUAL(kv_mvcc_count_on(&st, txn, &cs.left[i].rest, &mem,
                                             cs.left[i].count),
                            0);
        }
    }
    CU_ASSERT_EQUAL(tr.responses[0]->response_range->count, 500);
    CU_ASSERT_EQUAL(tr.responses[1]->response_range->count, 301);
    Raftkv__TxnReply *in = tr.responses[2]->response_txn;
    CU_ASSERT_EQUAL(in->responses[0]->response_range->count, 400);
    CU_ASSERT(in->responses[0]->response_range->n_kvs == 1 &&
              in->responses[0]->response_range->more);
    end();
}

static void test_mvcc_txn_is_atomic_at_one_revision(void)
{
    begin();
    CU_ASSERT_EQUAL(put("z", "0"), 0);
    uint64_t before = revision();
    struct kv_outcome o;
    /* version(a) = 0: put a and b, read them back, a nested put of c. */
    Raftkv__TxnArgs *t = txn_new();
    cmp_add(t, "a", RAFTKV__COMPARE__TARGET__VERSION,
            RAFTKV__COMPARE__RESULT__EQUAL)
        ->target_union_case = RAFTKV__COMPARE__TARGET_UNION_VERSION;
    op_put(t, true, "a", "1");
    op_put(t, true, "b", "2")->prev_kv = true;
    op_range(t, true, "a", bin("c"));
    Raftkv__TxnArgs *inner = txn_new();
    op_put(inner, true, "c", "3");
    op_txn(t, true, inner);
    op_put(t, false, "never", "x");
    Raftkv__TxnReply *r = run_txn(t, 0, &o);
    CU_ASSERT(r->err == 0 && r->succeeded && r->n_responses == 4);
    CU_ASSERT_EQUAL(r->revision, before + 1);
    CU_ASSERT_EQUAL(o.revision, before + 1);
    Raftkv__RangeReply *rr = r->responses[2]->response_range;
    CU_ASSERT_FATAL(rr != NULL);
    CU_ASSERT(rr->n_kvs == 2 && kv_is(rr->kvs[0], "a", "1") &&
              kv_is(rr->kvs[1], "b", "2"));
    CU_ASSERT_EQUAL(rr->revision, before + 1);
    CU_ASSERT(r->responses[1]->response_put->prev_kv == NULL);
    CU_ASSERT(r->responses[3]->response_txn->succeeded);
    raftkv__txn_reply__free_unpacked(r, NULL);
    kv_outcome_clear(&o);
    struct kv_rec a, c;
    CU_ASSERT_FATAL(rec("a", &a) && rec("c", &c));
    CU_ASSERT(a.mod == before + 1 && c.mod == before + 1);
    CU_ASSERT_FALSE(rec("never", &a));
    CU_ASSERT_EQUAL(revision(), before + 1);

    /* value(a) = "9" is false: the failure branch runs. */
    t = txn_new();
    Raftkv__Compare *cv = cmp_add(t, "a", RAFTKV__COMPARE__TARGET__VALUE,
                                  RAFTKV__COMPARE__RESULT__EQUAL);
    cv->target_union_case = RAFTKV__COMPARE__TARGET_UNION_VALUE;
    cv->value = bin("9");
    op_put(t, true, "yes", "x");
    op_put(t, false, "no", "x");
    r = run_txn(t, 0, &o);
    CU_ASSERT(r->err == 0 && !r->succeeded && r->n_responses == 1);
    CU_ASSERT(rec("no", &a) && !rec("yes", &a));
    raftkv__txn_reply__free_unpacked(r, NULL);
    kv_outcome_clear(&o);

    /* An op that fails (ignore_value on a missing key) leaves nothing of
     * the transaction: not the put before it, not the revision. */
    before = revision();
    t = txn_new();
    op_put(t, true, "d", "1");
    CU_ASSERT_FALSE(kv_txn_may_fail(t)); /* plain puts cannot fail */
    op_put(t, true, "missing", "")->ignore_value = true;
    CU_ASSERT(kv_txn_may_fail(t)); /* so it runs nested */
    r = run_txn(t, 0, &o);
    CU_ASSERT_EQUAL(r->err, RAFTKV__KV_ERROR__KV_NOT_FOUND);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_NOT_FOUND);
    CU_ASSERT_FALSE(rec("d", &a));
    CU_ASSERT_EQUAL(revision(), before);
    raftkv__txn_reply__free_unpacked(r, NULL);
    kv_outcome_clear(&o);

    /* A compare over a range: every key of it must hold. */
    t = txn_new();
    Raftkv__Compare *cm = cmp_add(t, "a", RAFTKV__COMPARE__TARGET__MOD,
                                  RAFTKV__COMPARE__RESULT__LESS);
    cm->target_union_case = RAFTKV__COMPARE__TARGET_UNION_MOD_REVISION;
    cm->mod_revision = before; /* "no" has mod_revision before */
    cm->range_end = bin("z");
    op_put(t, true, "ok", "1");
    r = run_txn(t, 0, &o);
    CU_ASSERT(r->err == 0 && !r->succeeded);
    raftkv__txn_reply__free_unpacked(r, NULL);
    kv_outcome_clear(&o);

    /* Bounds: 129 ops; 9 levels of nesting. */
    t = txn_new();
    for (int i = 0; i <= KV_MAX_TXN_OPS; i++) {
        op_put(t, true, "x", "1");
    }
    r = run_txn(t, 0, &o);
    CU_ASSERT_EQUAL(r->err, RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    CU_ASSERT(strstr(r->message, "ops") != NULL);
    raftkv__txn_reply__free_unpacked(r, NULL);
    kv_outcome_clear(&o);
    t = txn_new();
    Raftkv__TxnArgs *level = t;
    for (int i = 0; i < KV_MAX_TXN_DEPTH; i++) {
        Raftkv__TxnArgs *n = txn_new();
        op_txn(level, true, n);
        level = n;
    }
    op_put(level, true, "deep", "1");
    r = run_txn(t, 0, &o);
    CU_ASSERT_EQUAL(r->err, RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    CU_ASSERT_FALSE(rec("deep", &a));
    raftkv__txn_reply__free_unpacked(r, NULL);
    kv_outcome_clear(&o);
    /* A compare whose value does not match its target. */
    t = txn_new();
    cmp_add(t, "a", RAFTKV__COMPARE__TARGET__MOD,
            RAFTKV__COMPARE__RESULT__EQUAL)
        ->target_union_case = RAFTKV__COMPARE__TARGET_UNION_VALUE;
    r = run_txn(t, 0, &o);
    CU_ASSERT_EQUAL(r->err, RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    raftkv__txn_reply__free_unpacked(r, NULL);
    kv_outcome_clear(&o);
    end();
}

static void test_mvcc_retried_txn_returns_its_recorded_reply(void)
{
    begin();
    struct kv_outcome o1, o2;
    Raftkv__TxnArgs *t = txn_new();
    op_put(t, true, "n", "1");
    op_range(t, true, "n", no_end);
    Raftkv__TxnReply *r1 = run_txn(t, 0, &o1);
    uint64_t rev = revision();
    /* The same request again (a client's retry): answered, not applied. */
    Raftkv__TxnReply *r2 = run_txn(t, t->request_id, &o2);
    CU_ASSERT(o2.duplicate);
    CU_ASSERT_EQUAL(revision(), rev);
    CU_ASSERT_EQUAL(o2.revision, o1.revision);
    CU_ASSERT(o1.current_len == o2.current_len &&
              memcmp(o1.current, o2.current, o1.current_len) == 0);
    struct kv_rec r;
    CU_ASSERT(rec("n", &r) && r.version == 1);
    raftkv__txn_reply__free_unpacked(r1, NULL);
    raftkv__txn_reply__free_unpacked(r2, NULL);
    kv_outcome_clear(&o1);
    kv_outcome_clear(&o2);
    end();
}

static Raftkv__DeleteRangeReply *delete_range(const char *k,
                                              ProtobufCBinaryData end_,
                                              bool prev,
                                              struct kv_outcome *o)
{
    Raftkv__DeleteRangeArgs a = RAFTKV__DELETE_RANGE_ARGS__INIT;
    a.key = bin(k);
    a.range_end = end_;
    a.prev_kv = prev;
    a.client_id.data = (uint8_t *)client;
    a.client_id.len = 16;
    a.request_id = ++next_request;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_DELETE_RANGE;
    c.delete_range = &a;
    apply(&c, o);
    CU_ASSERT_FATAL(o->current != NULL);
    return raftkv__delete_range_reply__unpack(NULL, o->current_len, o->current);
}

/* Events from @start into *r. */
static void events(uint64_t start, uint64_t limit, Raftkv__EventsReply *r)
{
    Raftkv__EventsArgs a = RAFTKV__EVENTS_ARGS__INIT;
    a.start_revision = start;
    a.limit = limit;
    raftkv__events_reply__init(r);
    CU_ASSERT_EQUAL_FATAL(kv_mvcc_events(&st, txn, &a, false, &mem, r), 0);
}

/* Compact the history up to @rev. */
static void compact_to(uint64_t rev)
{
    Raftkv__CompactArgs ca = RAFTKV__COMPACT_ARGS__INIT;
    ca.revision = rev;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_COMPACT;
    c.compact = &ca;
    struct kv_outcome o;
    apply(&c, &o);
    CU_ASSERT_EQUAL(o.err, 0);
    kv_outcome_clear(&o);
}

/* kv_mvcc_compact_step (the leader's compaction in entries of bounded
 * work): whole revisions, about max_records events or max_bytes at most,
 * the first revision whole whatever it holds. */
static void test_mvcc_compact_steps_are_whole_revisions(void)
{
    begin();
    uint64_t r0 = revision();
    CU_ASSERT_EQUAL(put("a", "1"), 0); /* r0+1: 1 event */
    CU_ASSERT_EQUAL(put("b", "1"), 0); /* r0+2: 1 event */
    Raftkv__TxnArgs *t = txn_new();
    op_put(t, true, "c", "1");
    op_put(t, true, "d", "1");
    op_put(t, true, "e", "1");
    struct kv_outcome o;
    raftkv__txn_reply__free_unpacked(run_txn(t, 0, &o), NULL); /* r0+3: 3 */
    kv_outcome_clear(&o);
    CU_ASSERT_EQUAL(put("a", "2"), 0); /* r0+4: 1 event */
    uint64_t top = revision(), step = 0;
    CU_ASSERT_EQUAL(top, r0 + 4);
    struct
    {
        uint64_t records, bytes, want;
    } cases[] = {
        {0, 0, top},        /* no cap */
        {100, 0, top},      /* all of it fits */
        {1, 0, r0 + 1},     /* one event a step */
        {2, 0, r0 + 2},     /* two, whole revisions */
        {3, 0, r0 + 3},     /* the third revision passes it: whole */
        {0, 1, r0 + 1},     /* one byte: one revision */
        {0, 1u << 20, top}, /* bytes enough */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CU_ASSERT_EQUAL(kv_mvcc_compact_step(&st, txn, top, cases[i].records,
                                             cases[i].bytes, &step),
                        0);
        if (step != cases[i].want) {
            printf("\n  case %zu: step %llu, want %llu\n", i,
                   (unsigned long long)step, (unsigned long long)cases[i].want);
        }
        CU_ASSERT_EQUAL(step, cases[i].want);
    }
    /* Short of the top: never past the revision asked for. */
    CU_ASSERT_EQUAL(kv_mvcc_compact_step(&st, txn, r0 + 2, 100, 0, &step), 0);
    CU_ASSERT_EQUAL(step, r0 + 2);
    /* After a compaction the walk starts at what is left: the 3-event
     * revision goes whole in a step of 1. */
    compact_to(r0 + 2);
    CU_ASSERT_EQUAL(kv_mvcc_compact_step(&st, txn, top, 1, 0, &step), 0);
    CU_ASSERT_EQUAL(step, r0 + 3);
    /* Compacted already, or past the store: the revision itself, for the
     * entry to say so. */
    CU_ASSERT_EQUAL(kv_mvcc_compact_step(&st, txn, r0 + 1, 1, 0, &step), 0);
    CU_ASSERT_EQUAL(step, r0 + 1);
    CU_ASSERT_EQUAL(kv_mvcc_compact_step(&st, txn, top + 9, 1, 0, &step), 0);
    CU_ASSERT_EQUAL(step, top + 9);
    end();
}

static void test_mvcc_events_carry_the_previous_version(void)
{
    begin();
    uint64_t r;
    CU_ASSERT_EQUAL(put("a", "1"), 0);  /* 2 */
    CU_ASSERT_EQUAL(put("a", "22"), 0); /* 3 */
    CU_ASSERT_EQUAL(put("b", "x"), 0);  /* 4 */
    CU_ASSERT_EQUAL(del("a", &r), 0);   /* 5 */
    CU_ASSERT_EQUAL(r, 5);
    Raftkv__EventsArgs a = RAFTKV__EVENTS_ARGS__INIT;
    a.start_revision = 2;
    Raftkv__EventsReply e = RAFTKV__EVENTS_REPLY__INIT;
    CU_ASSERT_EQUAL_FATAL(kv_mvcc_events(&st, txn, &a, true, &mem, &e), 0);
    CU_ASSERT_EQUAL_FATAL(e.n_events, 4);
    /* A new key: nothing before. */
    CU_ASSERT(e.events[0]->prev_kv == NULL && !e.events[0]->prev_kv_missing);
    /* An overwrite: the version before, with its revisions. */
    CU_ASSERT(e.events[1]->prev_kv && kv_is(e.events[1]->prev_kv, "a", "1") &&
              e.events[1]->prev_kv->mod_revision == 2 &&
              e.events[1]->prev_kv->version == 1);
    CU_ASSERT(kv_is(e.events[1]->kv, "a", "22"));
    CU_ASSERT(e.events[2]->prev_kv == NULL);
    /* A delete: what was deleted. */
    CU_ASSERT(e.events[3]->type == RAFTKV__EVENT__EVENT_TYPE__DELETE &&
              e.events[3]->prev_kv && kv_is(e.events[3]->prev_kv, "a", "22") &&
              e.events[3]->prev_kv->mod_revision == 3);
    /* Without prev_kv, none. */
    raftkv__events_reply__init(&e);
    CU_ASSERT_EQUAL(kv_mvcc_events(&st, txn, &a, false, &mem, &e), 0);
    CU_ASSERT(e.n_events == 4 && e.events[1]->prev_kv == NULL &&
              e.events[3]->prev_kv == NULL);

    /* The version before is compacted away: the event says so. */
    compact_to(2);
    a.start_revision = 3;
    raftkv__events_reply__init(&e);
    CU_ASSERT_EQUAL(kv_mvcc_events(&st, txn, &a, true, &mem, &e), 0);
    CU_ASSERT_EQUAL_FATAL(e.n_events, 3);
    CU_ASSERT(e.events[0]->prev_kv == NULL && e.events[0]->prev_kv_missing);
    CU_ASSERT(e.events[2]->prev_kv && kv_is(e.events[2]->prev_kv, "a", "22"));

    /* A value moved into its record by compaction, then overwritten. */
    compact_to(5);                     /* b's value (4) moves into its record */
    CU_ASSERT_EQUAL(put("b", "y"), 0); /* 6 */
    a.start_revision = 6;
    raftkv__events_reply__init(&e);
    CU_ASSERT_EQUAL(kv_mvcc_events(&st, txn, &a, true, &mem, &e), 0);
    CU_ASSERT_EQUAL_FATAL(e.n_events, 1);
    CU_ASSERT(kv_is(e.events[0]->kv, "b", "y"));
    CU_ASSERT(e.events[0]->prev_kv == NULL && e.events[0]->prev_kv_missing);
    /* The values themselves are intact. */
    struct kv_rec rec;
    CU_ASSERT_EQUAL(kv_mvcc_get(&st, txn, "b", 1, &rec), 0);
    CU_ASSERT(rec.value_len == 1 && rec.value[0] == 'y' && rec.version == 2);
    end();
}

static void test_mvcc_delete_range_and_history(void)
{
    begin();
    char k[16];
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "p/%02d", i);
        CU_ASSERT_EQUAL(put(k, "v"), 0);
    }
    CU_ASSERT_EQUAL(put("q", "keep"), 0); /* revision 22 */
    struct kv_outcome o;
    Raftkv__DeleteRangeReply *d = delete_range("p/", bin("p0"), true, &o);
    CU_ASSERT_FATAL(d != NULL);
    CU_ASSERT(d->err == 0 && d->deleted == 20 && d->n_prev_kvs == 20);
    CU_ASSERT(d->revision == 23 && kv_is(d->prev_kvs[19], "p/19", "v"));
    raftkv__delete_range_reply__free_unpacked(d, NULL);
    kv_outcome_clear(&o);
    /* A range with nothing in it deletes nothing at no revision. */
    d = delete_range("p/", bin("p0"), false, &o);
    CU_ASSERT(d->deleted == 0 && d->revision == 23);
    raftkv__delete_range_reply__free_unpacked(d, NULL);
    kv_outcome_clear(&o);

    /* The history: 21 puts, then 20 deletes at one revision. */
    Raftkv__EventsReply e;
    events(0, 0, &e);
    CU_ASSERT(e.err == 0 && e.n_events == 41 && !e.more);
    CU_ASSERT_EQUAL(e.next_revision, 24);
    CU_ASSERT(e.events[0]->type == RAFTKV__EVENT__EVENT_TYPE__PUT &&
              kv_is(e.events[0]->kv, "p/00", "v") &&
              e.events[0]->kv->mod_revision == 2);
    CU_ASSERT(e.events[40]->type == RAFTKV__EVENT__EVENT_TYPE__DELETE &&
              kv_is(e.events[40]->kv, "p/19", NULL) &&
              e.events[40]->kv->mod_revision == 23);
    /* A limit never splits a revision: the 20 deletes come together. */
    events(22, 2, &e);
    CU_ASSERT(e.n_events == 21 && !e.more && e.next_revision == 24);
    events(2, 3, &e);
    CU_ASSERT(e.n_events == 3 && e.more && e.next_revision == 5);
    /* Filtered by key. */
    Raftkv__EventsArgs a = RAFTKV__EVENTS_ARGS__INIT;
    a.key = bin("p/05");
    raftkv__events_reply__init(&e);
    CU_ASSERT_EQUAL(kv_mvcc_events(&st, txn, &a, false, &mem, &e), 0);
    CU_ASSERT(e.n_events == 2 && e.events[1]->kv->mod_revision == 23);
    events(25, 0, &e);
    CU_ASSERT_EQUAL(e.err, RAFTKV__KV_ERROR__KV_FUTURE_REVISION);
    events(24, 0, &e); /* the next one: nothing yet */
    CU_ASSERT(e.err == 0 && e.n_events == 0 && e.next_revision == 24);

    /* Compaction. */
    struct kv_revs before, after;
    CU_ASSERT_EQUAL(kv_mvcc_revs(&st, txn, &before), 0);
    Raftkv__CompactArgs ca = RAFTKV__COMPACT_ARGS__INIT;
    ca.revision = 12;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_COMPACT;
    c.compact = &ca;
    apply(&c, &o);
    CU_ASSERT(o.err == 0 && o.compact == 12 && o.revision == 23);
    kv_outcome_clear(&o);
    CU_ASSERT_EQUAL(kv_mvcc_revs(&st, txn, &after), 0);
    CU_ASSERT(after.compact == 12 && after.hist_bytes < before.hist_bytes);
    events(12, 0, &e);
    CU_ASSERT(e.err == RAFTKV__KV_ERROR__KV_COMPACTED &&
              e.compact_revision == 12);
    events(0, 0, &e);
    CU_ASSERT(e.err == 0 && e.n_events == 30 &&
              e.events[0]->kv->mod_revision == 13);
    apply(&c, &o); /* the same again */
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_COMPACTED);
    kv_outcome_clear(&o);
    ca.revision = 99;
    apply(&c, &o);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_FUTURE_REVISION);
    kv_outcome_clear(&o);
    /* Keys are not touched. */
    struct kv_rec r;
    CU_ASSERT(rec("q", &r) && value_is(&r, "keep"));

    /* Targets of automatic compaction: by revisions, by bytes, by step. */
    uint64_t t;
    CU_ASSERT_EQUAL(kv_mvcc_compact_target(&st, txn, 5, 0, 0, &t), 0);
    CU_ASSERT_EQUAL(t, 18);
    CU_ASSERT_EQUAL(kv_mvcc_compact_target(&st, txn, 5, 0, 2, &t), 0);
    CU_ASSERT_EQUAL(t, 14);
    CU_ASSERT_EQUAL(kv_mvcc_compact_target(&st, txn, 100, 0, 0, &t), 0);
    CU_ASSERT_EQUAL(t, 0);
    CU_ASSERT_EQUAL(kv_mvcc_compact_target(&st, txn, 100, 1, 0, &t), 0);
    CU_ASSERT_EQUAL(t, 23); /* one byte: everything */
    CU_ASSERT_EQUAL(
        kv_mvcc_compact_target(&st, txn, 100, after.hist_bytes - 1, 0, &t), 0);
    CU_ASSERT_EQUAL(t, 13); /* the oldest revision is enough */
    end();
}

/* Read a whole snapshot stream of st. */
static uint8_t *stream_all(size_t *total)
{
    struct snap_stream s;
    CU_ASSERT_FATAL(snap_stream_open(&st, &s) == 0);
    size_t cap = 1 << 20, len;
    uint8_t *buf = malloc(cap);
    bool done = false;
    *total = 0;
    while (!done) {
        if (cap - *total < 65536) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        CU_ASSERT_FATAL(
            snap_stream_read(&st, &s, buf + *total, 65536, &len, &done) == 0);
        *total += len;
    }
    snap_stream_close(&s);
    return buf;
}

static void test_mvcc_snapshot_carries_revisions_and_history(void)
{
    begin();
    CU_ASSERT_EQUAL(put("a", "1"), 0);
    CU_ASSERT_EQUAL(put("b", "2"), 0);
    uint64_t rev;
    CU_ASSERT_EQUAL(del("a", &rev), 0);
    CU_ASSERT_EQUAL(put("b", "3"), 0);
    struct kv_revs want;
    CU_ASSERT_EQUAL(kv_mvcc_revs(&st, txn, &want), 0);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
    txn = NULL;
    size_t total;
    uint8_t *stream = stream_all(&total);

    struct kv_store dst;
    char dst_dir[64];
    snprintf(dst_dir, sizeof dst_dir, "/tmp/raftkv-mvcc-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dst_dir) != NULL);
    CU_ASSERT_FATAL(kv_store_open(&dst, dst_dir, 0) == 0);
    MDB_txn *t;
    CU_ASSERT_FATAL(mdb_txn_begin(dst.env, NULL, 0, &t) == 0);
    CU_ASSERT_EQUAL(snap_stage(&dst, t, 0, stream, total), 0);
    uint64_t index, term;
    CU_ASSERT_EQUAL(kv_sm_install(&dst, t, &index, &term), 0);
    struct kv_revs got;
    CU_ASSERT_EQUAL(kv_mvcc_revs(&dst, t, &got), 0);
    CU_ASSERT(got.revision == want.revision && got.compact == want.compact &&
              got.hist_bytes == want.hist_bytes);
    struct kv_rec r;
    CU_ASSERT_EQUAL(kv_mvcc_get(&dst, t, "b", 1, &r), 0);
    CU_ASSERT(r.create == 3 && r.mod == 5 && r.version == 2 &&
              value_is(&r, "3"));
    Raftkv__EventsArgs a = RAFTKV__EVENTS_ARGS__INIT;
    Raftkv__EventsReply e = RAFTKV__EVENTS_REPLY__INIT;
    CU_ASSERT_EQUAL(kv_mvcc_events(&dst, t, &a, false, &mem, &e), 0);
    CU_ASSERT(e.n_events == 4 &&
              e.events[2]->type == RAFTKV__EVENT__EVENT_TYPE__DELETE);
    mdb_txn_abort(t);
    kv_store_close(&dst);
    cunit_remove_tree(dst_dir);

    /* Format 5 writes RKVSNAP4, which a kvserver of format 4 refuses (it
     * would misread the history); an RKVSNAP3 stream of a format-4 node
     * still installs. */
    CU_ASSERT_EQUAL(memcmp(stream, "RKVSNAP4", 8), 0);
    memcpy(stream, "RKVSNAP3", 8);
    kv_put_u32(stream + total - 4, kv_crc32c(0, stream, total - 4));
    CU_ASSERT_FATAL(mkdtemp(strcpy(dst_dir, "/tmp/raftkv-mvcc-XXXXXX")) !=
                    NULL);
    CU_ASSERT_FATAL(kv_store_open(&dst, dst_dir, 0) == 0);
    CU_ASSERT_FATAL(mdb_txn_begin(dst.env, NULL, 0, &t) == 0);
    CU_ASSERT_EQUAL(snap_stage(&dst, t, 0, stream, total), 0);
    CU_ASSERT_EQUAL(kv_sm_install(&dst, t, &index, &term), 0);
    CU_ASSERT_EQUAL(kv_mvcc_get(&dst, t, "b", 1, &r), 0);
    CU_ASSERT(value_is(&r, "3"));
    mdb_txn_abort(t);
    kv_store_close(&dst);
    cunit_remove_tree(dst_dir);
    free(stream);
    end();
}

/* Append a record of an RKVSNAP2 stream. */
static size_t v2_record(uint8_t *p, int kind, const char *k, const char *v)
{
    p[0] = (uint8_t)kind;
    kv_put_u32(p + 1, (uint32_t)strlen(k));
    kv_put_u32(p + 5, (uint32_t)strlen(v));
    memcpy(p + 9, k, strlen(k));
    memcpy(p + 9 + strlen(k), v, strlen(v));
    return 9 + strlen(k) + strlen(v);
}

static void test_mvcc_upgrades_old_stores_and_streams(void)
{
    /* A store of format 3: values without revisions. */
    snprintf(dir, sizeof dir, "/tmp/raftkv-mvcc-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    CU_ASSERT_FATAL(kv_store_open(&st, dir, 0) == 0);
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    MDB_val k = {3, "old"}, v = {5, "value"};
    CU_ASSERT_EQUAL(mdb_put(txn, st.kv, &k, &v, 0), 0);
    CU_ASSERT_EQUAL(kv_store_put_meta(&st, txn, "format", 3), 0);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
    kv_store_close(&st);
    CU_ASSERT_FATAL(kv_store_open(&st, dir, 0) == 0);
    CU_ASSERT_EQUAL(st.format, KV_STORE_FORMAT_OLD);
    CU_ASSERT_EQUAL(kv_sm_upgrade(&st), 0);
    kv_store_close(&st);
    CU_ASSERT_FATAL(kv_store_open(&st, dir, 0) == 0);
    CU_ASSERT_EQUAL(st.format, KV_STORE_FORMAT);
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    struct kv_rec r;
    CU_ASSERT_FATAL(rec("old", &r));
    CU_ASSERT(value_is(&r, "value") && r.create == 2 && r.mod == 2 &&
              r.version == 1);
    struct kv_revs revs;
    CU_ASSERT_EQUAL(kv_mvcc_revs(&st, txn, &revs), 0);
    CU_ASSERT(revs.revision == 2 && revs.compact == 2);
    mdb_txn_abort(txn);
    txn = NULL;

    /* An RKVSNAP2 stream (a backup from before revisions) installs, and
     * its values get revisions. */
    uint8_t buf[512];
    size_t n = 0;
    memcpy(buf, "RKVSNAP2", 8);
    kv_put_u64(buf + 8, 40);
    kv_put_u64(buf + 16, 2);
    kv_put_u64(buf + 24, 0xabc);
    n = 32;
    n += v2_record(buf + n, 1, "x", "one");
    n += v2_record(buf + n, 1, "y", "two");
    buf[n] = 0xFF;
    kv_put_u64(buf + n + 1, 2);
    kv_put_u32(buf + n + 9, kv_crc32c(kv_crc32c(0, buf, n), buf + n, 9));
    n += 13;
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    CU_ASSERT_EQUAL(snap_stage(&st, txn, 0, buf, n), 0);
    uint64_t index, term;
    CU_ASSERT_EQUAL(kv_sm_install(&st, txn, &index, &term), 0);
    CU_ASSERT_EQUAL(index, 40);
    CU_ASSERT_FALSE(rec("old", &r));
    CU_ASSERT(rec("y", &r) && value_is(&r, "two") && r.mod == 2);
    CU_ASSERT(rec("x", &r) && value_is(&r, "one") && r.version == 1);
    CU_ASSERT_EQUAL(st.format, KV_STORE_FORMAT);
    CU_ASSERT_EQUAL(kv_mvcc_revs(&st, txn, &revs), 0);
    CU_ASSERT(revs.revision == 2 && revs.compact == 2);
    end();

    /* A store of format 4: its events (a delete without prev) are read as
     * they are, and it is stamped 5. */
    begin();
    CU_ASSERT_EQUAL(put("a", "1"), 0);
    uint8_t ev[6] = {KV_EVENT_DELETE, 0, 0, 0, 1, 'z'};
    uint8_t hk[KV_HIST_KEY] = {0};
    kv_put_u64(hk, 50);
    MDB_val hkv = {sizeof hk, hk}, hvv = {sizeof ev, ev};
    CU_ASSERT_EQUAL(mdb_put(txn, st.history, &hkv, &hvv, 0), 0);
    CU_ASSERT_EQUAL(kv_store_put_meta(&st, txn, "format", 4), 0);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
    txn = NULL;
    kv_store_close(&st);
    CU_ASSERT_FATAL(kv_store_open(&st, dir, 0) == 0);
    CU_ASSERT_EQUAL(st.format, KV_STORE_FORMAT_PREV);
    CU_ASSERT_EQUAL(kv_sm_upgrade(&st), 0);
    CU_ASSERT_EQUAL(st.format, KV_STORE_FORMAT);
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    Raftkv__EventsArgs ea = RAFTKV__EVENTS_ARGS__INIT;
    ea.start_revision = 2;
    Raftkv__EventsReply er = RAFTKV__EVENTS_REPLY__INIT;
    CU_ASSERT_EQUAL(kv_mvcc_events(&st, txn, &ea, true, &mem, &er), 0);
    CU_ASSERT_EQUAL_FATAL(er.n_events, 2);
    CU_ASSERT(kv_is(er.events[0]->kv, "a", "1"));
    CU_ASSERT(er.events[1]->type == RAFTKV__EVENT__EVENT_TYPE__DELETE &&
              kv_is(er.events[1]->kv, "z", NULL) &&
              er.events[1]->prev_kv == NULL && er.events[1]->prev_kv_missing);
    end();
}

/* A random history of writes against a model: every key's revisions and
 * value, and ranges, must match after every step. */
#define MODEL_KEYS 24
struct model_key
{
    bool live;
    uint64_t create, mod, version;
    char value[16];
};

static void model_put(struct model_key *m, uint64_t rev, const char *v)
{
    if (!m->live) {
        m->create = rev;
        m->version = 0;
    }
    m->live = true;
    m->mod = rev;
    m->version++;
    snprintf(m->value, sizeof m->value, "%s", v);
}

static void test_mvcc_random_writes_match_a_model(void)
{
    unsigned seed = cunit_seed();
    begin();
    struct model_key model[MODEL_KEYS] = {0};
    uint64_t rev = 1;
    char key[8], v[16];
    for (int step = 0; step < 1500; step++) {
        int i = rand_r(&seed) % MODEL_KEYS, j = rand_r(&seed) % MODEL_KEYS;
        int lo = i < j ? i : j, hi = i < j ? j : i;
        snprintf(key, sizeof key, "k%02d", i);
        snprintf(v, sizeof v, "v%d", step);
        int what = rand_r(&seed) % 4;
        struct kv_outcome o;
        if (what == 0) {
            CU_ASSERT_EQUAL(put(key, v), 0);
            model_put(&model[i], ++rev, v);
        } else if (what == 1) {
            /* delete [lo, hi) */
            char a[8], b[8];
            snprintf(a, sizeof a, "k%02d", lo);
            snprintf(b, sizeof b, "k%02d", hi);
            Raftkv__DeleteRangeReply *d =
                delete_range(a, hi > lo ? bin(b) : no_end, false, &o);
            uint64_t gone = 0;
            for (int x = lo; x <= (hi > lo ? hi - 1 : lo); x++) {
                gone += model[x].live;
            }
            CU_ASSERT_EQUAL(d->deleted, gone);
            rev += gone > 0;
            for (int x = lo; x <= (hi > lo ? hi - 1 : lo); x++) {
                model[x].live = false;
            }
            raftkv__delete_range_reply__free_unpacked(d, NULL);
            kv_outcome_clear(&o);
        } else {
            /* if version(k_i) = its model version: put k_i, put k_j
             * (maybe the same key twice), else delete k_j */
            Raftkv__TxnArgs *t = txn_new();
            Raftkv__Compare *c =
                cmp_add(t, key, RAFTKV__COMPARE__TARGET__VERSION,
                        RAFTKV__COMPARE__RESULT__EQUAL);
            c->target_union_case = RAFTKV__COMPARE__TARGET_UNION_VERSION;
            c->version = model[i].live ? model[i].version
                                       : (uint64_t)(what == 2 ? 0 : 1);
            char kj[8];
            snprintf(kj, sizeof kj, "k%02d", j);
            op_put(t, true, key, v);
            op_put(t, true, kj, v);
            op_del(t, false, kj, no_end);
            Raftkv__TxnReply *r = run_txn(t, 0, &o);
            bool hold = model[i].live ? true : what == 2;
            CU_ASSERT_EQUAL(r->succeeded, hold);
            if (hold) {
                rev++;
                model_put(&model[i], rev, v);
                model_put(&model[j], rev, v);
            } else if (model[j].live) {
                rev++;
                model[j].live = false;
            }
            CU_ASSERT_EQUAL(r->revision, rev);
            raftkv__txn_reply__free_unpacked(r, NULL);
            kv_outcome_clear(&o);
        }
        CU_ASSERT_EQUAL(revision(), rev);
        if (step % 50 == 49) {
            /* Compact (values still current move into their records). */
            struct kv_revs rv;
            CU_ASSERT_FATAL(kv_mvcc_revs(&st, txn, &rv) == 0);
            uint64_t to = rev - (uint64_t)(rand_r(&seed) % 5);
            if (to > rv.compact) {
                Raftkv__CompactArgs ca = RAFTKV__COMPACT_ARGS__INIT;
                ca.revision = to;
                Raftkv__Command cc = RAFTKV__COMMAND__INIT;
                cc.op_case = RAFTKV__COMMAND__OP_COMPACT;
                cc.compact = &ca;
                struct kv_outcome co;
                apply(&cc, &co);
                CU_ASSERT_EQUAL(co.err, 0);
                kv_outcome_clear(&co);
            }
        }
        /* A random range against the model. */
        char a[8], b[8];
        snprintf(a, sizeof a, "k%02d", lo);
        snprintf(b, sizeof b, "k%02d", hi + 1);
        Raftkv__RangeReply rr;
        range(a, bin(b), 0, 0, &rr);
        size_t n = 0;
        for (int x = lo; x <= hi; x++) {
            if (!model[x].live) {
                continue;
            }
            char kx[8];
            snprintf(kx, sizeof kx, "k%02d", x);
            CU_ASSERT_FATAL(n < rr.n_kvs);
            const Raftkv__KeyValue *kv = rr.kvs[n++];
            bool same = kv_is(kv, kx, model[x].value) &&
                        kv->create_revision == model[x].create &&
                        kv->mod_revision == model[x].mod &&
                        kv->version == model[x].version;
            if (!same) {
                fprintf(stderr, "step %d: %s differs from the model\n", step,
                        kx);
            }
            CU_ASSERT_FATAL(same);
        }
        CU_ASSERT_EQUAL_FATAL(n, rr.n_kvs);
        CU_ASSERT_EQUAL(rr.count, n);
        kv_arena_free(&mem);
    }
    end();
}

/* Digest of every key's record and the store's numbers. */
static uint64_t digest(struct kv_store *s, MDB_txn *t)
{
    uint64_t h = 0xcbf29ce484222325ull;
    MDB_cursor *cur;
    CU_ASSERT_FATAL(mdb_cursor_open(t, s->kv, &cur) == 0);
    MDB_val k, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const uint8_t *parts[2] = {k.mv_data, v.mv_data};
        size_t lens[2] = {k.mv_size, v.mv_size};
        for (int p = 0; p < 2; p++) {
            for (size_t i = 0; i < lens[p]; i++) {
                h = (h ^ parts[p][i]) * 0x100000001b3ull;
            }
        }
    }
    mdb_cursor_close(cur);
    struct kv_revs r;
    CU_ASSERT_FATAL(kv_mvcc_revs(s, t, &r) == 0);
    return h ^ (r.revision * 31) ^ (r.hist_bytes * 17) ^ r.compact;
}

static void test_mvcc_damaged_commands_are_outcomes_on_every_replica(void)
{
    unsigned seed = cunit_seed();
    begin();
    /* A second replica applies the same entries. */
    struct kv_store st2;
    char dir2[64];
    snprintf(dir2, sizeof dir2, "/tmp/raftkv-mvcc-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir2) != NULL);
    CU_ASSERT_FATAL(kv_store_open(&st2, dir2, 0) == 0);
    MDB_txn *t2;
    CU_ASSERT_FATAL(mdb_txn_begin(st2.env, NULL, 0, &t2) == 0);
    uint8_t cid[16] = {7};
    Raftkv__SessionOpen so = RAFTKV__SESSION_OPEN__INIT;
    so.client_id.data = cid;
    so.client_id.len = 16;
    Raftkv__Command oc = RAFTKV__COMMAND__INIT;
    oc.op_case = RAFTKV__COMMAND__OP_OPEN_SESSION;
    oc.open_session = &so;
    uint8_t obuf[64];
    size_t olen = raftkv__command__pack(&oc, obuf);
    struct kv_outcome o;
    CU_ASSERT_FATAL(kv_sm_apply(&st2, t2, 1, obuf, olen, &o) == 0);
    kv_outcome_clear(&o);
    int applied_ok = 0;
    for (int i = 0; i < 2000; i++) {
        /* A valid transaction of random ops, then bytes flipped. */
        Raftkv__TxnArgs *t = txn_new();
        char k[8], k2[8];
        snprintf(k, sizeof k, "k%d", rand_r(&seed) % 8);
        snprintf(k2, sizeof k2, "k%d", rand_r(&seed) % 8);
        cmp_add(t, k, RAFTKV__COMPARE__TARGET__VERSION,
                (Raftkv__Compare__Result)(rand_r(&seed) % 4))
            ->target_union_case = RAFTKV__COMPARE__TARGET_UNION_VERSION;
        op_put(t, rand_r(&seed) % 2, k, "value");
        op_del(t, rand_r(&seed) % 2, k2,
               rand_r(&seed) % 2 ? bin("k9") : no_end);
        op_range(t, true, "k", bin("l"));
        t->client_id.data = cid;
        t->client_id.len = 16;
        t->request_id = (uint64_t)i + 1;
        Raftkv__Command c = RAFTKV__COMMAND__INIT;
        c.op_case = RAFTKV__COMMAND__OP_TXN;
        c.txn = t;
        size_t len = raftkv__command__get_packed_size(&c);
        uint8_t *buf = malloc(len);
        CU_ASSERT_FATAL(buf != NULL);
        raftkv__command__pack(&c, buf);
        int flips = rand_r(&seed) % 4;
        for (int f = 0; f < flips; f++) {
            buf[(size_t)rand_r(&seed) % len] ^=
                (uint8_t)(1u << (rand_r(&seed) % 8));
        }
        uint64_t index = ++next_index;
        struct kv_outcome o1, o2;
        CU_ASSERT_EQUAL_FATAL(kv_sm_apply(&st, txn, index, buf, len, &o1), 0);
        CU_ASSERT_EQUAL_FATAL(kv_sm_apply(&st2, t2, index, buf, len, &o2), 0);
        CU_ASSERT_EQUAL(o1.err, o2.err);
        CU_ASSERT_EQUAL(o1.revision, o2.revision);
        applied_ok += o1.err == 0;
        kv_outcome_clear(&o1);
        kv_outcome_clear(&o2);
        free(buf);
        kv_arena_free(&mem);
    }
    /* Not vacuous: some were applied (a flip that raises a request id
     * turns the later ones into refused old retries). */
    CU_ASSERT(applied_ok > 0);
    CU_ASSERT_EQUAL(digest(&st, txn), digest(&st2, t2));
    mdb_txn_abort(t2);
    kv_store_close(&st2);
    cunit_remove_tree(dir2);
    end();
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_mvcc_revisions_follow_etcd", test_mvcc_revisions_follow_etcd},
        {"test_mvcc_range_limits_sorts_and_counts",
         test_mvcc_range_limits_sorts_and_counts},
        {"test_mvcc_range_count_in_slices", test_mvcc_range_count_in_slices},
        {"test_mvcc_txn_is_atomic_at_one_revision",
         test_mvcc_txn_is_atomic_at_one_revision},
        {"test_mvcc_retried_txn_returns_its_recorded_reply",
         test_mvcc_retried_txn_returns_its_recorded_reply},
        {"test_mvcc_delete_range_and_history",
         test_mvcc_delete_range_and_history},
        {"test_mvcc_compact_steps_are_whole_revisions",
         test_mvcc_compact_steps_are_whole_revisions},
        {"test_mvcc_events_carry_the_previous_version",
         test_mvcc_events_carry_the_previous_version},
        {"test_mvcc_snapshot_carries_revisions_and_history",
         test_mvcc_snapshot_carries_revisions_and_history},
        {"test_mvcc_upgrades_old_stores_and_streams",
         test_mvcc_upgrades_old_stores_and_streams},
        {"test_mvcc_random_writes_match_a_model",
         test_mvcc_random_writes_match_a_model},
        {"test_mvcc_damaged_commands_are_outcomes_on_every_replica",
         test_mvcc_damaged_commands_are_outcomes_on_every_replica},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"mvcc", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
