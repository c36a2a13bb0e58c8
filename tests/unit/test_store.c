/* test_store.c: the node's LMDB store, state machine and snapshot streams. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include <proto/kv.pb-c.h>

#include "cunit_main.h"
#include "install.h"
#include "node.h"
#include "sm.h"
#include "snap.h"
#include "store.h"

static char dir[64];
static struct kv_store st;

static void open_store(void)
{
    snprintf(dir, sizeof dir, "/tmp/raftkv-store-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    CU_ASSERT_FATAL(kv_store_open(&st, dir, 0) == 0);
}

static void close_store(void)
{
    kv_store_close(&st);
    cunit_remove_tree(dir);
}

/* Pack a PutAppend command. */
static size_t put_cmd(uint8_t *buf,
                      const char *key,
                      const char *val,
                      bool append,
                      uint8_t client,
                      uint64_t request)
{
    uint8_t cid[16] = {client};
    Raftkv__PutAppendArgs a = RAFTKV__PUT_APPEND_ARGS__INIT;
    a.key.data = (uint8_t *)key;
    a.key.len = strlen(key);
    a.value.data = (uint8_t *)val;
    a.value.len = strlen(val);
    a.op = append ? RAFTKV__PUT_OP__PUT_OP_APPEND : RAFTKV__PUT_OP__PUT_OP_PUT;
    a.client_id.data = cid;
    a.client_id.len = 16;
    a.request_id = request;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_PUT_APPEND;
    c.put_append = &a;
    return raftkv__command__pack(&c, buf);
}

/* Pack an OpenSession command with the leader's bound. */
static size_t open_cmd(uint8_t *buf, uint8_t client, uint64_t max_sessions)
{
    uint8_t cid[16] = {client};
    Raftkv__SessionOpen a = RAFTKV__SESSION_OPEN__INIT;
    a.client_id.data = cid;
    a.client_id.len = 16;
    a.max_sessions = max_sessions;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_OPEN_SESSION;
    c.open_session = &a;
    return raftkv__command__pack(&c, buf);
}

static int apply(MDB_txn *txn,
                 uint64_t index,
                 const uint8_t *buf,
                 size_t len,
                 struct kv_outcome *o)
{
    return kv_sm_apply(&st, txn, index, buf, len, o);
}

/* Open client's session at @index with the leader's bound @max. */
static void open_session(MDB_txn *txn,
                         uint64_t index,
                         uint8_t client,
                         uint64_t max)
{
    uint8_t buf[64];
    struct kv_outcome o;
    size_t n = open_cmd(buf, client, max);
    CU_ASSERT_EQUAL(apply(txn, index, buf, n, &o), 0);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_OK);
}

static bool has_session(MDB_txn *txn, uint8_t client)
{
    uint8_t cid[16] = {client};
    MDB_val k = {16, cid}, v;
    return mdb_get(txn, st.sessions, &k, &v) == 0;
}

static char *get(MDB_txn *txn, const char *key)
{
    static char out[256];
    struct kv_rec r;
    if (kv_mvcc_get(&st, txn, key, strlen(key), &r) != 0) {
        return NULL;
    }
    snprintf(out, sizeof out, "%.*s", (int)r.value_len, (const char *)r.value);
    return out;
}

static void test_store_retry_of_an_applied_write_returns_its_outcome(void)
{
    open_store();
    MDB_txn *txn;
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    uint8_t buf[256];
    struct kv_outcome o;
    open_session(txn, 1, 1, 0);
    open_session(txn, 2, 2, 0);
    size_t n = put_cmd(buf, "k", "a", true, 1, 1);
    CU_ASSERT_EQUAL(apply(txn, 3, buf, n, &o), 0);
    CU_ASSERT(!o.duplicate);
    /* The same request again, at a later index: not applied twice. */
    CU_ASSERT_EQUAL(apply(txn, 4, buf, n, &o), 0);
    CU_ASSERT(o.duplicate);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_OK);
    CU_ASSERT_STRING_EQUAL(get(txn, "k"), "a");
    /* Another client's request with the same id is its own. */
    n = put_cmd(buf, "k", "b", true, 2, 1);
    CU_ASSERT_EQUAL(apply(txn, 5, buf, n, &o), 0);
    CU_ASSERT_STRING_EQUAL(get(txn, "k"), "ab");
    /* An older request id of client 1 is refused. */
    n = put_cmd(buf, "k", "c", true, 1, 2);
    CU_ASSERT_EQUAL(apply(txn, 6, buf, n, &o), 0);
    n = put_cmd(buf, "k", "z", true, 1, 1);
    CU_ASSERT_EQUAL(apply(txn, 7, buf, n, &o), 0);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    CU_ASSERT_STRING_EQUAL(get(txn, "k"), "abc");
    /* Opening a session that is open changes nothing. */
    open_session(txn, 8, 1, 0);
    n = put_cmd(buf, "k", "c", true, 1, 2);
    CU_ASSERT_EQUAL(apply(txn, 9, buf, n, &o), 0);
    CU_ASSERT(o.duplicate);
    CU_ASSERT_STRING_EQUAL(get(txn, "k"), "abc");
    /* Garbage in the log is an outcome, not a failure of the node. */
    uint8_t junk[4] = {0xff, 0xff, 0xff, 0xff};
    CU_ASSERT_EQUAL(apply(txn, 10, junk, sizeof junk, &o), 0);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    mdb_txn_abort(txn);
    close_store();
}

static void test_store_session_table_evicts_least_recent_writer(void)
{
    open_store();
    MDB_txn *txn;
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    uint8_t buf[256];
    struct kv_outcome o;
    /* Clients 1..3 open and write at indexes 1..6; client 1 writes
     * again at 7. */
    for (uint8_t c = 1; c <= 3; c++) {
        open_session(txn, 2u * c - 1, c, 3);
        size_t n = put_cmd(buf, "k", "x", true, c, 1);
        CU_ASSERT_EQUAL(apply(txn, 2u * c, buf, n, &o), 0);
    }
    size_t n = put_cmd(buf, "k", "x", true, 1, 2);
    CU_ASSERT_EQUAL(apply(txn, 7, buf, n, &o), 0);
    /* Client 4 opens: the bound in its entry is 3, so client 2 (last
     * wrote at 4) goes. */
    open_session(txn, 8, 4, 3);
    MDB_stat stat;
    mdb_stat(txn, st.sessions, &stat);
    CU_ASSERT_EQUAL(stat.ms_entries, 3);
    CU_ASSERT_FALSE(has_session(txn, 2));
    CU_ASSERT(has_session(txn, 1));
    CU_ASSERT(has_session(txn, 4));
    mdb_stat(txn, st.session_age, &stat);
    CU_ASSERT_EQUAL(stat.ms_entries, 3);
    /* The bound is the one in the entry: a later open with a bound of 1
     * leaves the opener alone. */
    open_session(txn, 9, 5, 1);
    mdb_stat(txn, st.sessions, &stat);
    CU_ASSERT_EQUAL(stat.ms_entries, 1);
    CU_ASSERT(has_session(txn, 5));
    mdb_txn_abort(txn);
    close_store();
}

static void test_store_write_of_a_forgotten_session_is_never_applied(void)
{
    open_store();
    MDB_txn *txn;
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    uint8_t buf[256];
    struct kv_outcome o;
    open_session(txn, 1, 1, 2);
    size_t n = put_cmd(buf, "k", "a", true, 1, 1);
    CU_ASSERT_EQUAL(apply(txn, 2, buf, n, &o), 0);
    CU_ASSERT_STRING_EQUAL(get(txn, "k"), "a");
    /* Two newer clients open sessions: client 1 is forgotten. */
    open_session(txn, 3, 2, 2);
    open_session(txn, 4, 3, 2);
    CU_ASSERT_FALSE(has_session(txn, 1));
    /* Its retry of the write it made (applied at 2) is refused, not
     * applied a second time; so is a new write. */
    CU_ASSERT_EQUAL(apply(txn, 5, buf, n, &o), 0);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_SESSION_EXPIRED);
    CU_ASSERT_STRING_EQUAL(get(txn, "k"), "a");
    n = put_cmd(buf, "k", "b", true, 1, 2);
    CU_ASSERT_EQUAL(apply(txn, 6, buf, n, &o), 0);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_SESSION_EXPIRED);
    CU_ASSERT_STRING_EQUAL(get(txn, "k"), "a");
    /* A client that never opened a session is refused the same way. */
    n = put_cmd(buf, "k", "c", true, 9, 1);
    CU_ASSERT_EQUAL(apply(txn, 7, buf, n, &o), 0);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_SESSION_EXPIRED);
    CU_ASSERT_STRING_EQUAL(get(txn, "k"), "a");
    CU_ASSERT_FALSE(has_session(txn, 9));
    mdb_txn_abort(txn);
    close_store();
}

static void test_store_claims_a_fresh_dir_and_refuses_another_cluster(void)
{
    open_store();
    CU_ASSERT_EQUAL(kv_store_claim(&st, 0xabc, 1), 0);
    CU_ASSERT_EQUAL(kv_store_claim(&st, 0xabc, 1), 0);
    CU_ASSERT_EQUAL(kv_store_claim(&st, 0xdef, 1), KV_STORE_EIDENTITY);
    CU_ASSERT(strstr(st.errmsg, "belongs to cluster 0000000000000abc") != NULL);
    CU_ASSERT_EQUAL(kv_store_claim(&st, 0, 1), 0); /* a node at start */
    CU_ASSERT_EQUAL(kv_store_claim(&st, 0xabc, 2), KV_STORE_EIDENTITY);
    CU_ASSERT(strstr(st.errmsg, "belongs to node 1") != NULL);
    close_store();
}

static size_t cluster_init_cmd(uint8_t *buf, uint64_t id)
{
    Raftkv__ClusterInit ci = RAFTKV__CLUSTER_INIT__INIT;
    ci.cluster_id = id;
    Raftkv__Command c = RAFTKV__COMMAND__INIT;
    c.op_case = RAFTKV__COMMAND__OP_CLUSTER_INIT;
    c.cluster_init = &ci;
    return raftkv__command__pack(&c, buf);
}

/* Two leaders in a row may each propose a cluster id before seeing the
 * other's applied: the first entry applied names the cluster for good,
 * on every replica alike. */
static void test_store_first_cluster_init_names_the_cluster_for_good(void)
{
    open_store();
    CU_ASSERT_EQUAL(kv_store_claim(&st, 0, 1), 0); /* no id yet */
    MDB_txn *txn;
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    uint8_t buf[64];
    struct kv_outcome o = {0};
    size_t n = cluster_init_cmd(buf, 0x1111);
    CU_ASSERT_EQUAL(apply(txn, 1, buf, n, &o), 0);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_OK);
    CU_ASSERT_EQUAL(o.cluster_id, 0x1111);
    kv_outcome_clear(&o);
    memset(&o, 0, sizeof o);
    n = cluster_init_cmd(buf, 0x2222);
    CU_ASSERT_EQUAL(apply(txn, 2, buf, n, &o), 0);
    CU_ASSERT_EQUAL(o.cluster_id, 0x1111);
    kv_outcome_clear(&o);
    memset(&o, 0, sizeof o);
    n = cluster_init_cmd(buf, 0);
    CU_ASSERT_EQUAL(apply(txn, 3, buf, n, &o), 0);
    CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    kv_outcome_clear(&o);
    struct kv_meta m;
    CU_ASSERT_EQUAL(kv_store_read_meta(&st, txn, &m), 0);
    CU_ASSERT_EQUAL(m.cluster_id, 0x1111);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
    CU_ASSERT_EQUAL(kv_store_claim(&st, 0x2222, 1), KV_STORE_EIDENTITY);
    close_store();
}

/* Stream the state out in random pieces, stage, install: same state. */
static void test_store_snapshot_round_trip_in_random_chunks(void)
{
    unsigned seed = cunit_seed();
    open_store();
    MDB_txn *txn;
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    uint8_t buf[256];
    struct kv_outcome o;
    for (uint8_t c = 1; c <= 7; c++) {
        open_session(txn, c, c, 0);
    }
    for (int i = 0; i < 500; i++) {
        char key[32], val[64];
        snprintf(key, sizeof key, "key%d", i);
        snprintf(val, sizeof val, "value-%d-%0*d", i, i % 50, 0);
        size_t n = put_cmd(buf, key, val, false, (uint8_t)(i % 7 + 1),
                           (uint64_t)i + 1);
        CU_ASSERT_EQUAL(apply(txn, (uint64_t)i + 8, buf, n, &o), 0);
        CU_ASSERT_EQUAL(o.err, RAFTKV__KV_ERROR__KV_OK);
    }
    kv_store_put_meta(&st, txn, "applied", 507);
    kv_store_put_meta(&st, txn, "applied_term", 3);
    kv_store_put_meta(&st, txn, "cluster", 0xfeed);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);

    /* Read it out in chunks of random size. */
    struct snap_stream s;
    CU_ASSERT_FATAL(snap_stream_open(&st, &s) == 0);
    uint8_t *stream = malloc(1 << 20);
    size_t total = 0;
    bool done = false;
    size_t pieces[4096];
    int np = 0;
    while (!done) {
        size_t max = 1 + (size_t)rand_r(&seed) % 300, len;
        CU_ASSERT_FATAL(
            snap_stream_read(&st, &s, stream + total, max, &len, &done) == 0);
        pieces[np++] = len;
        total += len;
    }
    snap_stream_close(&s);

    /* A second store receives it; the old state there is replaced. */
    struct kv_store dst;
    char dst_dir[64];
    snprintf(dst_dir, sizeof dst_dir, "/tmp/raftkv-store-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dst_dir) != NULL);
    CU_ASSERT_FATAL(kv_store_open(&dst, dst_dir, 0) == 0);
    CU_ASSERT_FATAL(mdb_txn_begin(dst.env, NULL, 0, &txn) == 0);
    MDB_val k = {3, "old"}, v = {5, "stale"};
    mdb_put(txn, dst.kv, &k, &v, 0);
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        CU_ASSERT_EQUAL(snap_stage(&dst, txn, off, stream + off, pieces[i]), 0);
        off += pieces[i];
    }
    uint64_t index, term;
    CU_ASSERT_EQUAL(snap_install(&dst, txn, &index, &term), 0);
    CU_ASSERT_EQUAL(index, 507);
    CU_ASSERT_EQUAL(term, 3);
    struct kv_meta dm;
    CU_ASSERT_EQUAL(kv_store_read_meta(&dst, txn, &dm), 0);
    CU_ASSERT_EQUAL(dm.cluster_id, 0xfeed); /* the stream names its cluster */
    CU_ASSERT_EQUAL(mdb_get(txn, dst.kv, &k, &v), MDB_NOTFOUND);
    MDB_stat a, b;
    mdb_stat(txn, dst.kv, &a);
    CU_ASSERT_EQUAL(a.ms_entries, 500);
    mdb_stat(txn, dst.sessions, &b);
    CU_ASSERT_EQUAL(b.ms_entries, 7);
    mdb_stat(txn, dst.session_age, &b);
    CU_ASSERT_EQUAL(b.ms_entries, 7);
    struct kv_rec r2;
    CU_ASSERT_EQUAL(kv_mvcc_get(&dst, txn, "key499", 6, &r2), 0);
    CU_ASSERT(r2.value_len > 9 && memcmp(r2.value, "value-499", 9) == 0);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);

    /* Each kind of damage, each from a fresh copy of the intact stream,
     * so that each case tests one thing; the installed state stays. */
    uint8_t *copy = malloc(total + 16);
    CU_ASSERT_FATAL(copy != NULL);
    struct damage
    {
        const char *what;   /* the case */
        size_t at;          /* byte to change (or SIZE_MAX: none) */
        uint8_t flip;       /* XOR-ed into it */
        long len_change;    /* bytes cut (< 0) or added (> 0) at the end */
        const char *reason; /* in the error message */
    };
    uint8_t *value = memmem(stream, total, "value-250", 9);
    CU_ASSERT_FATAL(value != NULL);
    const struct damage cases[] = {
        /* A changed byte inside a value keeps the stream well-formed: only
         * the checksum catches it. */
        {"a value byte changed", (size_t)(value - stream) + 6, 0x01, 0,
         "checksum mismatch"},
        {"the checksum changed", total - 3, 0x5a, 0, "checksum mismatch"},
        {"the magic changed", 2, 0x20, 0,
         "no RKVSNAP4 (or RKVSNAP3, RKVSNAP2) header"},
        {"the record count changed", total - 5, 0x01, 0,
         "record count does not match"},
        /* Cut inside the last record, and cut at a record boundary (the
         * whole trailer gone): only the end-of-stream check sees these. */
        {"cut inside a record", SIZE_MAX, 0, -20, "stream ends early"},
        {"cut before the trailer", SIZE_MAX, 0, -13, "stream ends early"},
        {"bytes after the end", SIZE_MAX, 0, 7, "bytes after the end"},
    };
    /* The intact copy installs: what fails below fails for its damage. */
    CU_ASSERT_FATAL(mdb_txn_begin(dst.env, NULL, 0, &txn) == 0);
    CU_ASSERT_EQUAL(snap_stage(&dst, txn, 0, stream, total), 0);
    CU_ASSERT_EQUAL(snap_install(&dst, txn, &index, &term), 0);
    mdb_txn_abort(txn);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct damage *d = &cases[i];
        memcpy(copy, stream, total);
        size_t len = (size_t)((long)total + d->len_change);
        if (d->len_change > 0) {
            memset(copy + total, 0, (size_t)d->len_change);
        }
        if (d->at != SIZE_MAX) {
            copy[d->at] ^= d->flip;
        }
        CU_ASSERT_FATAL(mdb_txn_begin(dst.env, NULL, 0, &txn) == 0);
        CU_ASSERT_EQUAL(snap_stage(&dst, txn, 0, copy, len), 0);
        dst.errmsg[0] = 0;
        int rv = snap_install(&dst, txn, &index, &term);
        mdb_txn_abort(txn);
        bool said = strstr(dst.errmsg, d->reason) != NULL;
        if (rv != KV_STORE_ECORRUPT || !said) {
            fprintf(stderr, "%s: install returned %d (%s), want '%s'\n",
                    d->what, rv, dst.errmsg, d->reason);
        }
        CU_ASSERT_EQUAL(rv, KV_STORE_ECORRUPT);
        CU_ASSERT(said);
    }
    free(copy);
    CU_ASSERT_FATAL(mdb_txn_begin(dst.env, NULL, MDB_RDONLY, &txn) == 0);
    mdb_stat(txn, dst.kv, &a);
    CU_ASSERT_EQUAL(a.ms_entries, 500);
    mdb_txn_abort(txn);
    free(stream);
    kv_store_close(&dst);
    cunit_remove_tree(dst_dir);
    close_store();
}

/* Feed @stream (@total bytes) into a build in random pieces. */
static int feed_build(struct kv_install *in,
                      const uint8_t *stream,
                      size_t total,
                      unsigned *seed)
{
    size_t off = 0;
    while (off < total) {
        size_t n = 1 + (size_t)rand_r(seed) % 3000;
        if (n > total - off) {
            n = total - off;
        }
        int rv = kv_install_feed(in, stream + off, n);
        if (rv) {
            return rv;
        }
        off += n;
    }
    return 0;
}

static bool dir_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* A state installed by a build (install.h) in many small transactions,
 * switched in for a live store: the same state as the stream's, with the
 * live store's own meta; a build dropped part way (a crash) leaves the
 * live state as it was; a damaged stream is never switched in. */
static void test_store_install_in_many_transactions_switches_in_the_same_state(
    void)
{
    unsigned seed = cunit_seed();
    open_store();
    MDB_txn *txn;
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    uint8_t buf[512];
    struct kv_outcome o;
    for (uint8_t c = 1; c <= 5; c++) {
        open_session(txn, c, c, 0);
    }
    for (int i = 0; i < 2000; i++) {
        char key[32], val[300];
        snprintf(key, sizeof key, "key%05d", i);
        snprintf(val, sizeof val, "value-%d-%0*d", i, i % 250, 0);
        size_t n = put_cmd(buf, key, val, false, (uint8_t)(i % 5 + 1),
                           (uint64_t)i + 1);
        CU_ASSERT_EQUAL(apply(txn, (uint64_t)i + 6, buf, n, &o), 0);
    }
    kv_store_put_meta(&st, txn, "applied", 2005);
    kv_store_put_meta(&st, txn, "applied_term", 4);
    kv_store_put_meta(&st, txn, "cluster", 0xbeef);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
    struct snap_stream s;
    CU_ASSERT_FATAL(snap_stream_open(&st, &s) == 0);
    size_t cap = 4u << 20, total = 0, len;
    uint8_t *stream = malloc(cap);
    CU_ASSERT_FATAL(stream != NULL);
    bool done = false;
    while (!done) {
        CU_ASSERT_FATAL(snap_stream_read(&st, &s, stream + total, cap - total,
                                         &len, &done) == 0);
        total += len;
    }
    snap_stream_close(&s);
    CU_ASSERT_FATAL(total > 100 * 4096); /* many transactions below */

    /* The live store: node 2's, with a key of its own. */
    struct kv_store live;
    char live_dir[64], incoming[100];
    snprintf(live_dir, sizeof live_dir, "/tmp/raftkv-store-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(live_dir) != NULL);
    snprintf(incoming, sizeof incoming, "%s/incoming", live_dir);
    CU_ASSERT_FATAL(kv_store_open(&live, live_dir, 0) == 0);
    CU_ASSERT_FATAL(kv_store_claim(&live, 0, 2) == 0);
    CU_ASSERT_FATAL(mdb_txn_begin(live.env, NULL, 0, &txn) == 0);
    MDB_val k = {3, "old"}, v = {5, "stale"};
    CU_ASSERT_EQUAL(mdb_put(txn, live.kv, &k, &v, 0), 0);
    CU_ASSERT_EQUAL(mdb_txn_commit(txn), 0);
    setenv("RAFTKV_INSTALL_TXN_BYTES", "4096", 1);
    struct kv_install in;
    memset(&in, 0, sizeof in);

    /* Half a stream, then the process "crashes": the build stays on
     * disk, the live state is untouched, and the cleanup at the next
     * start deletes the build. */
    CU_ASSERT_FATAL(kv_install_begin(&in, live_dir, 0, 9) == 0);
    CU_ASSERT_EQUAL(in.txn_max, 4096);
    CU_ASSERT_EQUAL(feed_build(&in, stream, total / 2, &seed), 0);
    kv_install_drop(&in);
    CU_ASSERT(dir_exists(incoming));
    CU_ASSERT_EQUAL(kv_install_cleanup(live_dir), 0);
    CU_ASSERT(!dir_exists(incoming));
    CU_ASSERT_FATAL(mdb_txn_begin(live.env, NULL, MDB_RDONLY, &txn) == 0);
    CU_ASSERT_EQUAL(mdb_get(txn, live.kv, &k, &v), 0);
    mdb_txn_abort(txn);

    /* A damaged stream (a value byte changed: only the checksum sees it)
     * is loaded to its end and refused there, never finished. */
    uint8_t *copy = malloc(total);
    CU_ASSERT_FATAL(copy != NULL);
    memcpy(copy, stream, total);
    uint8_t *value = memmem(copy, total, "value-1500", 10);
    CU_ASSERT_FATAL(value != NULL);
    value[7] ^= 1;
    CU_ASSERT_FATAL(kv_install_begin(&in, live_dir, 0, 10) == 0);
    /* The checksum is checked as the trailer is loaded. */
    CU_ASSERT_EQUAL(feed_build(&in, copy, total, &seed), KV_STORE_ECORRUPT);
    CU_ASSERT(strstr(in.st.errmsg, "checksum mismatch") != NULL);
    uint64_t index, term;
    MDB_txn *bt, *rtxn;
    kv_install_drop(&in);
    free(copy);

    /* Going back to a mark: what was fed since is loaded again. */
    CU_ASSERT_FATAL(kv_install_begin(&in, live_dir, 0, 11) == 0);
    setenv("RAFTKV_INSTALL_TXN_BYTES", "100000000", 1);
    in.txn_max = 100000000; /* no commit between mark and undo */
    CU_ASSERT_EQUAL(feed_build(&in, stream, total / 3, &seed), 0);
    CU_ASSERT_EQUAL(kv_install_mark(&in), 0);
    CU_ASSERT_EQUAL(kv_install_feed(&in, stream + total / 3, 5000), 0);
    kv_install_undo(&in);
    CU_ASSERT(kv_install_active(&in));
    in.txn_max = 4096;
    CU_ASSERT_EQUAL(
        feed_build(&in, stream + total / 3, total - total / 3, &seed), 0);

    /* The whole stream: switched in. */
    CU_ASSERT_FATAL(mdb_txn_begin(live.env, NULL, MDB_RDONLY, &rtxn) == 0);
    CU_ASSERT_EQUAL_FATAL(
        kv_install_finish(&in, &live, rtxn, &index, &term, &bt), 0);
    mdb_txn_abort(rtxn);
    CU_ASSERT_EQUAL(index, 2005);
    CU_ASSERT_EQUAL(term, 4);
    CU_ASSERT_EQUAL(kv_store_put_meta(&in.st, bt, "applied", index), 0);
    kv_store_close(&live);
    CU_ASSERT_EQUAL_FATAL(kv_install_switch(&in, &live), 0);
    CU_ASSERT(!dir_exists(incoming));
    CU_ASSERT_FATAL(mdb_txn_begin(live.env, NULL, MDB_RDONLY, &txn) == 0);
    struct kv_meta m;
    CU_ASSERT_EQUAL(kv_store_read_meta(&live, txn, &m), 0);
    CU_ASSERT_EQUAL(m.node_id, 2);         /* the live store's own */
    CU_ASSERT_EQUAL(m.cluster_id, 0xbeef); /* the stream's */
    CU_ASSERT_EQUAL(m.applied, 2005);
    CU_ASSERT_EQUAL(mdb_get(txn, live.kv, &k, &v), MDB_NOTFOUND);
    /* Every database as in the source, record for record. */
    MDB_txn *stx;
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, MDB_RDONLY, &stx) == 0);
    MDB_dbi a[] = {st.kv, st.sessions, st.session_age, st.history, st.kvmeta};
    MDB_dbi b[] = {live.kv, live.sessions, live.session_age, live.history,
                   live.kvmeta};
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
        MDB_cursor *ca, *cb;
        CU_ASSERT_FATAL(mdb_cursor_open(stx, a[i], &ca) == 0);
        CU_ASSERT_FATAL(mdb_cursor_open(txn, b[i], &cb) == 0);
        MDB_val ka, va, kb, vb;
        int ra = mdb_cursor_get(ca, &ka, &va, MDB_FIRST);
        int rb = mdb_cursor_get(cb, &kb, &vb, MDB_FIRST);
        size_t n = 0;
        while (ra == 0 && rb == 0) {
            CU_ASSERT(ka.mv_size == kb.mv_size &&
                      memcmp(ka.mv_data, kb.mv_data, ka.mv_size) == 0);
            CU_ASSERT(va.mv_size == vb.mv_size &&
                      memcmp(va.mv_data, vb.mv_data, va.mv_size) == 0);
            n++;
            ra = mdb_cursor_get(ca, &ka, &va, MDB_NEXT);
            rb = mdb_cursor_get(cb, &kb, &vb, MDB_NEXT);
        }
        CU_ASSERT_EQUAL(ra, MDB_NOTFOUND);
        CU_ASSERT_EQUAL(rb, MDB_NOTFOUND);
        CU_ASSERT(n > 0);
        mdb_cursor_close(ca);
        mdb_cursor_close(cb);
    }
    mdb_txn_abort(stx);
    mdb_txn_abort(txn);
    unsetenv("RAFTKV_INSTALL_TXN_BYTES");
    free(stream);
    kv_store_close(&live);
    cunit_remove_tree(live_dir);
    close_store();
}

/* A configuration of @n voters with ids @ids, encoded. */
static void *conf_of(const uint64_t *ids, size_t n, size_t *len)
{
    struct raft_member m[8];
    for (size_t i = 0; i < n; i++) {
        m[i] = (struct raft_member){.id = ids[i], .voter = true};
    }
    void *out = NULL;
    CU_ASSERT_FATAL(raft_conf_encode(m, n, &out, len) == 0);
    return out;
}

/* A configuration that leaves out two members at once (a node of
 * another configuration, one forced anew) on a node that counts some
 * removed already: both are added to the removed ids. The lookup of the
 * second once read the block the first one's realloc had freed (the
 * sanitizer build reports it). */
static void test_store_members_two_leave_at_once(void)
{
    open_store();
    struct kv_node *n = calloc(1, sizeof *n);
    CU_ASSERT_FATAL(n != NULL);
    n->store = st;
    n->cfg.id = 1;
    MDB_txn *txn;
    CU_ASSERT_FATAL(mdb_txn_begin(st.env, NULL, 0, &txn) == 0);
    size_t len;
    void *before = conf_of((uint64_t[]){1, 2, 3}, 3, &len);
    CU_ASSERT_EQUAL_FATAL(members_install(n, txn, before, len), 0);
    free(before);
    free(n->removed);
    n->removed = malloc(sizeof *n->removed);
    CU_ASSERT_FATAL(n->removed != NULL);
    n->removed[0] = 9; /* removed long ago */
    n->n_removed = 1;
    struct raft_entry e = {.index = 5, .term = 1, .type = RAFT_ENTRY_CONFIG};
    e.data = conf_of((uint64_t[]){1}, 1, &e.len);
    bool self = true;
    CU_ASSERT_EQUAL(members_apply(n, txn, &e, &self), 0);
    CU_ASSERT(!self);
    CU_ASSERT_EQUAL_FATAL(n->n_removed, 3);
    CU_ASSERT(node_removed(n, 9) && node_removed(n, 2) && node_removed(n, 3));
    CU_ASSERT(!node_removed(n, 1));
    free((void *)e.data);
    mdb_txn_abort(txn);
    free(n->removed);
    free(n);
    close_store();
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_store_retry_of_an_applied_write_returns_its_outcome",
         test_store_retry_of_an_applied_write_returns_its_outcome},
        {"test_store_session_table_evicts_least_recent_writer",
         test_store_session_table_evicts_least_recent_writer},
        {"test_store_write_of_a_forgotten_session_is_never_applied",
         test_store_write_of_a_forgotten_session_is_never_applied},
        {"test_store_first_cluster_init_names_the_cluster_for_good",
         test_store_first_cluster_init_names_the_cluster_for_good},
        {"test_store_claims_a_fresh_dir_and_refuses_another_cluster",
         test_store_claims_a_fresh_dir_and_refuses_another_cluster},
        {"test_store_snapshot_round_trip_in_random_chunks",
         test_store_snapshot_round_trip_in_random_chunks},
        {"test_store_install_in_many_transactions_switches_in_the_same_state",
         test_store_install_in_many_transactions_switches_in_the_same_state},
        {"test_store_members_two_leave_at_once",
         test_store_members_two_leave_at_once},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"store", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
