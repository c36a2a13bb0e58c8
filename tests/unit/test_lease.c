/* test_lease.c: leases in the state machine: grants, keys attached and
 * detached by puts and deletes, revoke and expire deleting every key of a
 * lease at one revision, snapshots and store formats, applied through
 * kv_sm_apply as the node applies log entries. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include <proto/kv.pb-c.h>

#include "cunit_main.h"
#include "lease.h"
#include "mvcc.h"
#include "sm.h"
#include "snap.h"
#include "store.h"

static char dir[64];
static struct kv_store st;
static MDB_txn *txn;
static uint64_t next_index, next_request;
static const uint8_t client[16] = {9};

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

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
    snprintf(dir, sizeof dir, "/tmp/raftkv-lease-XXXXXX");
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
}

static uint64_t revision(void)
{
    struct kv_revs r;
    CU_ASSERT_FATAL(kv_mvcc_revs(&st, txn, &r) == 0);
    return r.revision;
}

/* A lease command; request_id (when a client write) is the next one. */
static int lease_cmd(Raftkv__LeaseCommand *lc, struct kv_outcome *o)
{
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_LEASE;
    c.lease = lc;
    apply(&c, o);
    return o->err;
}

static int grant_as(uint64_t id, int64_t ttl, uint64_t request_id)
{
    Raftkv__LeaseGrantArgs g = RAFTKV__LEASE_GRANT_ARGS__INIT;
    g.id = id;
    g.ttl = ttl;
    g.client_id.data = (uint8_t *)client;
    g.client_id.len = 16;
    g.request_id = request_id;
    Raftkv__LeaseCommand lc = RAFTKV__LEASE_COMMAND__INIT;
    lc.op_case = RAFTKV__LEASE_COMMAND__OP_GRANT;
    lc.grant = &g;
    struct kv_outcome o;
    int err = lease_cmd(&lc, &o);
    kv_outcome_clear(&o);
    return err;
}

static int grant(uint64_t id, int64_t ttl)
{
    return grant_as(id, ttl, ++next_request);
}

/* Revoke: the error; *rev the revision and *deleted the keys deleted. */
static int revoke(uint64_t id, uint64_t *rev, uint64_t *deleted)
{
    Raftkv__LeaseRevokeArgs r = RAFTKV__LEASE_REVOKE_ARGS__INIT;
    r.id = id;
    r.client_id.data = (uint8_t *)client;
    r.client_id.len = 16;
    r.request_id = ++next_request;
    Raftkv__LeaseCommand lc = RAFTKV__LEASE_COMMAND__INIT;
    lc.op_case = RAFTKV__LEASE_COMMAND__OP_REVOKE;
    lc.revoke = &r;
    struct kv_outcome o;
    int err = lease_cmd(&lc, &o);
    *rev = o.revision;
    Raftkv__LeaseRevokeReply *rr =
        raftkv__lease_revoke_reply__unpack(NULL, o.current_len, o.current);
    CU_ASSERT_FATAL(rr != NULL);
    *deleted = rr->deleted;
    CU_ASSERT_EQUAL(rr->revision, o.revision);
    raftkv__lease_revoke_reply__free_unpacked(rr, NULL);
    kv_outcome_clear(&o);
    return err;
}

static int put_lease(const char *k, const char *v, uint64_t lease)
{
    Raftkv__PutAppendArgs a = RAFTKV__PUT_APPEND_ARGS__INIT;
    a.key = bin(k);
    a.value = bin(v);
    a.lease = lease;
    a.client_id.data = (uint8_t *)client;
    a.client_id.len = 16;
    a.request_id = ++next_request;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_PUT_APPEND;
    c.put_append = &a;
    struct kv_outcome o;
    apply(&c, &o);
    int err = o.err;
    kv_outcome_clear(&o);
    return err;
}

static int del(const char *k)
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
    int err = o.err;
    kv_outcome_clear(&o);
    return err;
}

/* The lease of a key: 0 when it has none, UINT64_MAX when it is missing. */
static uint64_t lease_of(const char *k)
{
    struct kv_rec r;
    int rv = kv_mvcc_get(&st, txn, k, strlen(k), &r);
    CU_ASSERT(rv == 0 || rv == MDB_NOTFOUND);
    return rv ? UINT64_MAX : r.lease;
}

/* The keys the index holds for a lease, joined with ','. */
static void keys_of(struct kv_store *s,
                    MDB_txn *t,
                    uint64_t id,
                    char *out,
                    size_t size)
{
    struct kv_arena mem = {0};
    ProtobufCBinaryData *keys;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(kv_lease_keys(s, t, id, &mem, &keys, &n), 0);
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%.*s", i ? "," : "",
                 (int)keys[i].len, (const char *)keys[i].data);
    }
    kv_arena_free(&mem);
}

static bool lease_exists(uint64_t id)
{
    int rv = kv_lease_get(&st, txn, id, NULL);
    CU_ASSERT(rv == 0 || rv == MDB_NOTFOUND);
    return rv == 0;
}

static void test_lease_revoke_deletes_its_keys_at_one_revision(void)
{
    begin();
    uint64_t before = revision();
    CU_ASSERT_EQUAL(grant(0x10, 60), 0);
    CU_ASSERT_EQUAL(revision(), before); /* a grant makes no revision */
    int64_t ttl = 0;
    CU_ASSERT_EQUAL(kv_lease_get(&st, txn, 0x10, &ttl), 0);
    CU_ASSERT_EQUAL(ttl, 60);
    CU_ASSERT_EQUAL(put_lease("a", "1", 0x10), 0);
    CU_ASSERT_EQUAL(put_lease("b", "2", 0x10), 0);
    CU_ASSERT_EQUAL(put_lease("c", "3", 0x10), 0);
    CU_ASSERT_EQUAL(put_lease("d", "4", 0), 0);
    CU_ASSERT_EQUAL(lease_of("b"), 0x10);
    CU_ASSERT_EQUAL(lease_of("d"), 0);
    char keys[200];
    keys_of(&st, txn, 0x10, keys, sizeof keys);
    CU_ASSERT_STRING_EQUAL(keys, "a,b,c");

    uint64_t r0 = revision(), rev, deleted;
    CU_ASSERT_EQUAL(revoke(0x10, &rev, &deleted), 0);
    CU_ASSERT_EQUAL(rev, r0 + 1); /* all three keys at one revision */
    CU_ASSERT_EQUAL(deleted, 3);
    CU_ASSERT_EQUAL(revision(), r0 + 1);
    CU_ASSERT_EQUAL(lease_of("a"), UINT64_MAX);
    CU_ASSERT_EQUAL(lease_of("c"), UINT64_MAX);
    CU_ASSERT_EQUAL(lease_of("d"), 0);
    CU_ASSERT_FALSE(lease_exists(0x10));
    keys_of(&st, txn, 0x10, keys, sizeof keys);
    CU_ASSERT_STRING_EQUAL(keys, "");

    /* The history has a delete event per key at that revision. */
    struct kv_arena mem = {0};
    Raftkv__EventsArgs ea = RAFTKV__EVENTS_ARGS__INIT;
    ea.start_revision = r0 + 1;
    Raftkv__EventsReply er = RAFTKV__EVENTS_REPLY__INIT;
    CU_ASSERT_EQUAL(kv_mvcc_events(&st, txn, &ea, false, &mem, &er), 0);
    CU_ASSERT_EQUAL_FATAL(er.n_events, 3);
    for (size_t i = 0; i < er.n_events; i++) {
        CU_ASSERT_EQUAL(er.events[i]->type, RAFTKV__EVENT__EVENT_TYPE__DELETE);
        CU_ASSERT_EQUAL(er.events[i]->kv->mod_revision, r0 + 1);
    }
    kv_arena_free(&mem);

    /* Gone: a second revoke is told so and changes nothing. */
    CU_ASSERT_EQUAL(revoke(0x10, &rev, &deleted),
                    RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND);
    CU_ASSERT_EQUAL(revision(), r0 + 1);
    end();
}

static void test_lease_put_elsewhere_or_delete_detaches(void)
{
    begin();
    CU_ASSERT_EQUAL(grant(1, 60), 0);
    CU_ASSERT_EQUAL(grant(2, 60), 0);
    char keys[200];
    /* Moved to another lease, then to none. */
    CU_ASSERT_EQUAL(put_lease("a", "1", 1), 0);
    CU_ASSERT_EQUAL(put_lease("a", "2", 2), 0);
    keys_of(&st, txn, 1, keys, sizeof keys);
    CU_ASSERT_STRING_EQUAL(keys, "");
    keys_of(&st, txn, 2, keys, sizeof keys);
    CU_ASSERT_STRING_EQUAL(keys, "a");
    CU_ASSERT_EQUAL(put_lease("a", "3", 0), 0);
    CU_ASSERT_EQUAL(lease_of("a"), 0);
    keys_of(&st, txn, 2, keys, sizeof keys);
    CU_ASSERT_STRING_EQUAL(keys, "");
    /* Deleted: it leaves its lease, and a revoke does not bring it
     * back into play. */
    CU_ASSERT_EQUAL(put_lease("b", "1", 1), 0);
    CU_ASSERT_EQUAL(put_lease("c", "1", 1), 0);
    CU_ASSERT_EQUAL(del("b"), 0);
    keys_of(&st, txn, 1, keys, sizeof keys);
    CU_ASSERT_STRING_EQUAL(keys, "c");
    /* Compaction moves values around but keeps the lease. */
    int err;
    struct kv_revs revs;
    CU_ASSERT_EQUAL(kv_mvcc_compact(&st, txn, revision(), &err, &revs), 0);
    CU_ASSERT_EQUAL(err, 0);
    CU_ASSERT_EQUAL(lease_of("c"), 1);
    /* An append keeps no lease (it is a write without one). */
    CU_ASSERT_EQUAL(put_lease("e", "1", 2), 0);
    Raftkv__PutAppendArgs a = RAFTKV__PUT_APPEND_ARGS__INIT;
    a.key = bin("e");
    a.value = bin("x");
    a.op = RAFTKV__PUT_OP__PUT_OP_APPEND;
    a.client_id.data = (uint8_t *)client;
    a.client_id.len = 16;
    a.request_id = ++next_request;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_PUT_APPEND;
    c.put_append = &a;
    struct kv_outcome o;
    apply(&c, &o);
    CU_ASSERT_EQUAL(o.err, 0);
    kv_outcome_clear(&o);
    CU_ASSERT_EQUAL(lease_of("e"), 0);
    keys_of(&st, txn, 2, keys, sizeof keys);
    CU_ASSERT_STRING_EQUAL(keys, "");

    uint64_t rev, deleted;
    CU_ASSERT_EQUAL(revoke(1, &rev, &deleted), 0);
    CU_ASSERT_EQUAL(deleted, 1);
    CU_ASSERT_EQUAL(lease_of("a"), 0);
    CU_ASSERT_EQUAL(lease_of("c"), UINT64_MAX);
    end();
}

/* A transaction of puts ("key=lease", in order); the outcome's error. */
static int txn_puts(const char **keys, const uint64_t *leases, size_t n)
{
    Raftkv__PutRequest p[4];
    Raftkv__RequestOp o[4];
    Raftkv__RequestOp *ops[4];
    CU_ASSERT_FATAL(n <= 4);
    for (size_t i = 0; i < n; i++) {
        p[i] = (Raftkv__PutRequest)RAFTKV__PUT_REQUEST__INIT;
        p[i].key = bin(keys[i]);
        p[i].value = bin("t");
        p[i].lease = leases[i];
        o[i] = (Raftkv__RequestOp)RAFTKV__REQUEST_OP__INIT;
        o[i].request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_PUT;
        o[i].request_put = &p[i];
        ops[i] = &o[i];
    }
    Raftkv__TxnArgs t = RAFTKV__TXN_ARGS__INIT;
    t.success = ops;
    t.n_success = n;
    t.client_id.data = (uint8_t *)client;
    t.client_id.len = 16;
    t.request_id = ++next_request;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_TXN;
    c.txn = &t;
    struct kv_outcome out;
    apply(&c, &out);
    int err = out.err;
    kv_outcome_clear(&out);
    return err;
}

/* kv_lease_count, which the leader's --max-lease-keys check reads from
 * memory once a lease was counted, must stay the number of keys its index
 * holds through every change: puts that attach, move or keep a key,
 * deletes, revokes and expiries, and transactions that attach keys and
 * then fail (their nested transaction is undone). Random operations on 4
 * leases and 24 keys, the counts checked against the index after each. */
static void test_lease_key_counts_follow_every_change(void)
{
    begin();
    unsigned seed = cunit_seed();
    enum { LEASES = 4, KEYS = 24, MISSING = 99 };
    for (uint64_t id = 1; id <= LEASES; id++) {
        CU_ASSERT_EQUAL(grant(id, 60), 0);
    }
    char names[KEYS][8];
    for (int i = 0; i < KEYS; i++) {
        snprintf(names[i], sizeof names[i], "k%02d", i);
    }
    int failed_txns = 0, mismatches = 0;
    for (int step = 0; step < 1500 && !mismatches; step++) {
        int what = rand_r(&seed) % 10;
        uint64_t id = 1 + (uint64_t)(rand_r(&seed) % LEASES);
        const char *k = names[rand_r(&seed) % KEYS];
        if (what < 5) {
            uint64_t lease = rand_r(&seed) % 5 ? id : 0;
            CU_ASSERT_EQUAL(put_lease(k, "v", lease), 0);
        } else if (what < 7) {
            int err = del(k);
            CU_ASSERT(err == 0 || err == RAFTKV__KV_ERROR__KV_NOT_FOUND);
        } else if (what < 9) {
            /* Attaches keys, then (often) fails on a missing lease. */
            const char *ks[3] = {k, names[rand_r(&seed) % KEYS],
                                 names[rand_r(&seed) % KEYS]};
            uint64_t ls[3] = {id, 1 + (uint64_t)(rand_r(&seed) % LEASES),
                              rand_r(&seed) % 2 ? MISSING : id};
            int err = txn_puts(ks, ls, 3);
            CU_ASSERT(err == 0 || err == RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND);
            failed_txns += err != 0;
        } else {
            uint64_t rev, deleted;
            CU_ASSERT_EQUAL(revoke(id, &rev, &deleted), 0);
            CU_ASSERT_EQUAL(grant(id, 60), 0);
        }
        for (uint64_t l = 1; l <= LEASES; l++) {
            struct kv_arena mem = {0};
            ProtobufCBinaryData *keys;
            size_t n;
            uint64_t count = UINT64_MAX;
            CU_ASSERT_EQUAL_FATAL(kv_lease_keys(&st, txn, l, &mem, &keys, &n),
                                  0);
            kv_arena_free(&mem);
            CU_ASSERT_EQUAL_FATAL(kv_lease_count(&st, txn, l, &count), 0);
            if (count != n) {
                printf("\n  step %d: lease %llu counted %llu, has %zu keys\n",
                       step, (unsigned long long)l, (unsigned long long)count,
                       n);
                mismatches++;
            }
        }
    }
    CU_ASSERT_EQUAL(mismatches, 0);
    CU_ASSERT(failed_txns > 0);
    /* A lease that does not exist has no keys. */
    uint64_t none = UINT64_MAX;
    CU_ASSERT_EQUAL(kv_lease_count(&st, txn, MISSING, &none), 0);
    CU_ASSERT_EQUAL(none, 0);
    end();
}

/* Attach n keys "p<id>/<i>" to lease id. */
static void attach_n(uint64_t id, int n)
{
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, "p%llu/%02d", (unsigned long long)id, i);
        CU_ASSERT_EQUAL(put_lease(k, "v", id), 0);
    }
}

/* The leader's choice of the leases one expire entry ends: the most
 * overdue first, about max_keys keys, stopping at the first that does not
 * fit (so a lease with many keys is never passed over for smaller ones
 * that keep coming due), leases gone already passed over and marked. */
static void test_lease_expire_pick_oldest_first_within_the_keys(void)
{
    begin();
    for (uint64_t id = 1; id <= 6; id++) {
        CU_ASSERT_EQUAL(grant(id, 60), 0);
    }
    attach_n(1, 19);
    for (uint64_t id = 2; id <= 5; id++) {
        attach_n(id, 1);
    }
    uint64_t rev, deleted;
    CU_ASSERT_EQUAL(revoke(6, &rev, &deleted), 0); /* gone */
    uint64_t ids[8], keys = 0;
    /* Lease 1 (19 keys) is due after 2 and 3: they go first, and it does
     * not fit with them; 4, due after it, waits although it would fit. */
    struct kv_lease_due due[] = {
        {4, 102}, {1, 101}, {6, 50}, {3, 100}, {2, 100}};
    size_t k = kv_lease_expire_pick(&st, txn, due, 5, 20, ids, 8, &keys);
    CU_ASSERT_EQUAL(k, 2);
    CU_ASSERT(k == 2 && ids[0] == 2 && ids[1] == 3);
    CU_ASSERT_EQUAL(keys, 2);
    /* Sorted, and the gone lease marked for the caller. */
    CU_ASSERT(due[0].id == 6 && due[0].expiry == 0);
    CU_ASSERT(due[1].id == 2 && due[2].id == 3 && due[3].id == 1);
    /* The next entry begins with it, whatever came due meanwhile. */
    struct kv_lease_due next[] = {{5, 103}, {4, 102}, {1, 101}};
    k = kv_lease_expire_pick(&st, txn, next, 3, 20, ids, 8, &keys);
    CU_ASSERT(k == 2 && ids[0] == 1 && ids[1] == 4);
    CU_ASSERT_EQUAL(keys, 20);
    /* One lease over the cap goes alone, whole. */
    struct kv_lease_due big[] = {{2, 9}, {1, 5}};
    k = kv_lease_expire_pick(&st, txn, big, 2, 10, ids, 8, &keys);
    CU_ASSERT(k == 1 && ids[0] == 1 && keys == 19);
    /* No key cap: up to max_ids. */
    struct kv_lease_due all[] = {{3, 3}, {1, 1}, {2, 2}};
    k = kv_lease_expire_pick(&st, txn, all, 3, 0, ids, 2, &keys);
    CU_ASSERT(k == 2 && ids[0] == 1 && ids[1] == 2);
    end();
}

static void test_lease_put_to_a_missing_lease_changes_nothing(void)
{
    begin();
    CU_ASSERT_EQUAL(put_lease("x", "old", 0), 0);
    uint64_t r0 = revision();
    CU_ASSERT_EQUAL(put_lease("x", "new", 77),
                    RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND);
    CU_ASSERT_EQUAL(put_lease("y", "new", 77),
                    RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND);
    CU_ASSERT_EQUAL(revision(), r0);
    CU_ASSERT_EQUAL(lease_of("y"), UINT64_MAX);
    struct kv_rec r;
    CU_ASSERT_EQUAL(kv_mvcc_get(&st, txn, "x", 1, &r), 0);
    CU_ASSERT(r.value_len == 3 && memcmp(r.value, "old", 3) == 0);

    /* In a transaction: the whole transaction changes nothing. */
    Raftkv__PutRequest p1 = RAFTKV__PUT_REQUEST__INIT, p2 = p1;
    p1.key = bin("z");
    p1.value = bin("1");
    p2.key = bin("x");
    p2.value = bin("2");
    p2.lease = 77;
    Raftkv__RequestOp o1 = RAFTKV__REQUEST_OP__INIT, o2 = o1;
    o1.request_case = o2.request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_PUT;
    o1.request_put = &p1;
    o2.request_put = &p2;
    Raftkv__RequestOp *ops[] = {&o1, &o2};
    Raftkv__TxnArgs t = RAFTKV__TXN_ARGS__INIT;
    t.success = ops;
    t.n_success = 2;
    t.client_id.data = (uint8_t *)client;
    t.client_id.len = 16;
    t.request_id = ++next_request;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_TXN;
    c.txn = &t;
    struct kv_outcome o;
    apply(&c, &o);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND);
    kv_outcome_clear(&o);
    CU_ASSERT_EQUAL(revision(), r0);
    CU_ASSERT_EQUAL(lease_of("z"), UINT64_MAX);

    /* With the lease granted the same transaction goes through. */
    CU_ASSERT_EQUAL(grant(77, 30), 0);
    t.request_id = ++next_request;
    apply(&c, &o);
    CU_ASSERT_EQUAL(o.err, 0);
    kv_outcome_clear(&o);
    CU_ASSERT_EQUAL(revision(), r0 + 1);
    CU_ASSERT_EQUAL(lease_of("x"), 77);
    CU_ASSERT_EQUAL(lease_of("z"), 0);

    /* A key too long for the lease index is refused, not cut. */
    char longkey[600];
    size_t max = (size_t)mdb_env_get_maxkeysize(st.env);
    memset(longkey, 'k', max);
    longkey[max] = 0;
    CU_ASSERT_EQUAL(put_lease(longkey, "v", 77),
                    RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE);
    CU_ASSERT_EQUAL(put_lease(longkey, "v", 0), 0);
    end();
}

static void test_lease_grant_rules_and_retries(void)
{
    begin();
    CU_ASSERT_EQUAL(grant(0, 10), RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    CU_ASSERT_EQUAL(grant(5, 0), RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    CU_ASSERT_EQUAL(grant(5, KV_LEASE_MAX_TTL + 1),
                    RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    CU_ASSERT_EQUAL(grant(5, 10), 0);
    /* The same id again is refused, with a message that says why. */
    Raftkv__LeaseGrantArgs g = RAFTKV__LEASE_GRANT_ARGS__INIT;
    g.id = 5;
    g.ttl = 20;
    g.client_id.data = (uint8_t *)client;
    g.client_id.len = 16;
    g.request_id = ++next_request;
    Raftkv__LeaseCommand lc = RAFTKV__LEASE_COMMAND__INIT;
    lc.op_case = RAFTKV__LEASE_COMMAND__OP_GRANT;
    lc.grant = &g;
    struct kv_outcome o;
    CU_ASSERT_EQUAL(lease_cmd(&lc, &o), RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    Raftkv__LeaseGrantReply *r =
        raftkv__lease_grant_reply__unpack(NULL, o.current_len, o.current);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(r->message, "exists already"));
    raftkv__lease_grant_reply__free_unpacked(r, NULL);
    kv_outcome_clear(&o);
    int64_t ttl;
    CU_ASSERT_EQUAL(kv_lease_get(&st, txn, 5, &ttl), 0);
    CU_ASSERT_EQUAL(ttl, 10);

    /* A retry of a grant answers what the first try did. */
    uint64_t rid = ++next_request;
    CU_ASSERT_EQUAL(grant_as(6, 10, rid), 0);
    CU_ASSERT_EQUAL(grant_as(6, 10, rid), 0);
    g.id = 6;
    g.request_id = rid;
    CU_ASSERT_EQUAL(lease_cmd(&lc, &o), 0);
    CU_ASSERT(o.duplicate);
    r = raftkv__lease_grant_reply__unpack(NULL, o.current_len, o.current);
    CU_ASSERT_FATAL(r != NULL);
    CU_ASSERT(r->id == 6 && r->ttl == 10);
    raftkv__lease_grant_reply__free_unpacked(r, NULL);
    kv_outcome_clear(&o);
    end();
}

static int count_lease(uint64_t id, int64_t ttl, void *arg)
{
    (void)id;
    (void)ttl;
    (*(int *)arg)++;
    return 0;
}

static void test_lease_expire_ends_the_leases_that_exist(void)
{
    begin();
    CU_ASSERT_EQUAL(grant(1, 10), 0);
    CU_ASSERT_EQUAL(grant(2, 10), 0);
    CU_ASSERT_EQUAL(grant(3, 10), 0);
    CU_ASSERT_EQUAL(put_lease("k1", "v", 1), 0);
    CU_ASSERT_EQUAL(put_lease("k2", "v", 2), 0);
    CU_ASSERT_EQUAL(put_lease("k3", "v", 3), 0);
    st.lease_news.all = false;
    st.lease_news.n = 0;
    uint64_t expired = st.lease_news.expired, r0 = revision();
    uint64_t ids[] = {2, 99, 1};
    Raftkv__LeaseExpire e = RAFTKV__LEASE_EXPIRE__INIT;
    e.ids = ids;
    e.n_ids = 3;
    Raftkv__LeaseCommand lc = RAFTKV__LEASE_COMMAND__INIT;
    lc.op_case = RAFTKV__LEASE_COMMAND__OP_EXPIRE;
    lc.expire = &e;
    struct kv_outcome o;
    CU_ASSERT_EQUAL(lease_cmd(&lc, &o), 0);
    CU_ASSERT_EQUAL(o.revision, r0 + 1);
    kv_outcome_clear(&o);
    CU_ASSERT_EQUAL(revision(), r0 + 1);
    CU_ASSERT_EQUAL(lease_of("k1"), UINT64_MAX);
    CU_ASSERT_EQUAL(lease_of("k2"), UINT64_MAX);
    CU_ASSERT_EQUAL(lease_of("k3"), 3);
    CU_ASSERT_EQUAL(st.lease_news.expired, expired + 2);
    CU_ASSERT_EQUAL(st.lease_news.n, 2); /* the service is told which */
    int n = 0;
    CU_ASSERT_EQUAL(kv_lease_each(&st, txn, count_lease, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    /* Expiring what is gone already changes nothing. */
    CU_ASSERT_EQUAL(lease_cmd(&lc, &o), 0);
    kv_outcome_clear(&o);
    CU_ASSERT_EQUAL(revision(), r0 + 1);
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

static void test_lease_snapshot_carries_leases_and_their_keys(void)
{
    begin();
    CU_ASSERT_EQUAL(grant(0xabc, 42), 0);
    CU_ASSERT_EQUAL(grant(0xdef, 7), 0);
    CU_ASSERT_EQUAL(put_lease("p", "1", 0xabc), 0);
    CU_ASSERT_EQUAL(put_lease("q", "2", 0xabc), 0);
    CU_ASSERT_EQUAL(put_lease("r", "3", 0), 0);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
    txn = NULL;
    size_t total;
    uint8_t *stream = stream_all(&total);

    struct kv_store dst;
    char dst_dir[64];
    snprintf(dst_dir, sizeof dst_dir, "/tmp/raftkv-lease-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dst_dir) != NULL);
    CU_ASSERT_FATAL(kv_store_open(&dst, dst_dir, 0) == 0);
    MDB_txn *t;
    CU_ASSERT_FATAL(mdb_txn_begin(dst.env, NULL, 0, &t) == 0);
    /* Something there before is replaced, leases and index too. */
    uint8_t k8[8] = {0, 0, 0, 0, 0, 0, 0, 1}, v8[8] = {0};
    MDB_val k = {8, k8}, v = {8, v8};
    CU_ASSERT_EQUAL(mdb_put(t, dst.leases, &k, &v, 0), 0);
    dst.lease_news.all = false;
    CU_ASSERT_EQUAL(snap_stage(&dst, t, 0, stream, total), 0);
    uint64_t index, term;
    CU_ASSERT_EQUAL(kv_sm_install(&dst, t, &index, &term), 0);
    CU_ASSERT(dst.lease_news.all); /* the service reads them all again */
    int64_t ttl = 0;
    CU_ASSERT_EQUAL(kv_lease_get(&dst, t, 0xabc, &ttl), 0);
    CU_ASSERT_EQUAL(ttl, 42);
    CU_ASSERT_EQUAL(kv_lease_get(&dst, t, 0xdef, &ttl), 0);
    CU_ASSERT_EQUAL(ttl, 7);
    CU_ASSERT_EQUAL(kv_lease_get(&dst, t, 1, NULL), MDB_NOTFOUND);
    char keys[200];
    keys_of(&dst, t, 0xabc, keys, sizeof keys);
    CU_ASSERT_STRING_EQUAL(keys, "p,q");
    mdb_txn_abort(t);
    kv_store_close(&dst);
    cunit_remove_tree(dst_dir);
    free(stream);
    end();
}

static void test_lease_store_formats(void)
{
    /* A store of format 4 (before leases) opens and is upgraded. */
    snprintf(dir, sizeof dir, "/tmp/raftkv-lease-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    CU_ASSERT_FATAL(kv_store_open(&st, dir, 0) == 0);
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    CU_ASSERT_EQUAL(kv_store_put_meta(&st, txn, "format", 4), 0);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
    txn = NULL;
    kv_store_close(&st);
    CU_ASSERT_FATAL(kv_store_open(&st, dir, 0) == 0);
    CU_ASSERT_EQUAL(st.format, 4);
    CU_ASSERT_EQUAL(kv_sm_upgrade(&st), 0);
    CU_ASSERT_EQUAL(st.format, KV_STORE_FORMAT);
    kv_store_close(&st);
    CU_ASSERT_FATAL(kv_store_open(&st, dir, 0) == 0);
    CU_ASSERT_EQUAL(st.format, KV_STORE_FORMAT);
    /* A store from a newer kvserver is refused, not read wrong. */
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    CU_ASSERT_EQUAL(kv_store_put_meta(&st, txn, "format", KV_STORE_FORMAT + 1),
                    0);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
    txn = NULL;
    kv_store_close(&st);
    CU_ASSERT_EQUAL(kv_store_open(&st, dir, 0), KV_STORE_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(st.errmsg, "newer kvserver"));
    kv_store_close(&st);
    cunit_remove_tree(dir);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_lease_revoke_deletes_its_keys_at_one_revision",
         test_lease_revoke_deletes_its_keys_at_one_revision},
        {"test_lease_put_elsewhere_or_delete_detaches",
         test_lease_put_elsewhere_or_delete_detaches},
        {"test_lease_key_counts_follow_every_change",
         test_lease_key_counts_follow_every_change},
        {"test_lease_expire_pick_oldest_first_within_the_keys",
         test_lease_expire_pick_oldest_first_within_the_keys},
        {"test_lease_put_to_a_missing_lease_changes_nothing",
         test_lease_put_to_a_missing_lease_changes_nothing},
        {"test_lease_grant_rules_and_retries",
         test_lease_grant_rules_and_retries},
        {"test_lease_expire_ends_the_leases_that_exist",
         test_lease_expire_ends_the_leases_that_exist},
        {"test_lease_snapshot_carries_leases_and_their_keys",
         test_lease_snapshot_carries_leases_and_their_keys},
        {"test_lease_store_formats", test_lease_store_formats},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"lease", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
