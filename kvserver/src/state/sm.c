/* sm.c: applying Put, Append, Delete and CompareAndSwap exactly once, in
 * sessions that clients open through the log. */
#include <stdlib.h>
#include <string.h>

#include <proto/kv.pb-c.h>

#include "auth.h"
#include "sm.h"

/* Session record: request_id(8) last_index(8) err(1) flags(1) len(4) value */
#define SESSION_HEADER 22
#define FLAG_SWAPPED   1
#define FLAG_EXISTS    2

void kv_outcome_clear(struct kv_outcome *o)
{
    free(o->current);
    memset(o, 0, sizeof *o);
}

int kv_sm_check_key(struct kv_store *st, size_t key_len)
{
    if (key_len == 0) {
        return RAFTKV__KV_ERROR__KV_BAD_REQUEST;
    }
    if (key_len > (size_t)mdb_env_get_maxkeysize(st->env)) {
        return RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE;
    }
    return RAFTKV__KV_ERROR__KV_OK;
}

/* Fields every write shares. */
struct write_common
{
    ProtobufCBinaryData key;
    ProtobufCBinaryData client_id;
    uint64_t request_id;
};

static int store_error(struct kv_store *st, int rc, const char *what)
{
    return kv_store_fail(st, rc, what);
}

/* Look up the client's session; 1 if found. */
static int session_get(struct kv_store *st,
                       MDB_txn *txn,
                       const ProtobufCBinaryData *client,
                       MDB_val *rec)
{
    MDB_val k = {client->len, client->data};
    int rc = mdb_get(txn, st->sessions, &k, rec);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc) {
        return -store_error(st, rc, "read session");
    }
    if (rec->mv_size < SESSION_HEADER ||
        rec->mv_size !=
            SESSION_HEADER + kv_get_u32((uint8_t *)rec->mv_data + 18)) {
        return 0; /* damaged: as if forgotten (the write is refused) */
    }
    return 1;
}

static int outcome_from_session(const MDB_val *rec, struct kv_outcome *out)
{
    const uint8_t *p = rec->mv_data;
    out->err = p[16];
    out->swapped = p[17] & FLAG_SWAPPED;
    out->exists = p[17] & FLAG_EXISTS;
    out->current_len = kv_get_u32(p + 18);
    out->duplicate = true;
    if (out->current_len) {
        out->current = malloc(out->current_len);
        if (!out->current) {
            return KV_STORE_ENOMEM;
        }
        memcpy(out->current, p + SESSION_HEADER, out->current_len);
    }
    return 0;
}

/* Drop the oldest sessions until at most max remain. */
static int evict_sessions(struct kv_store *st, MDB_txn *txn, size_t max)
{
    MDB_stat stat;
    int rc = mdb_stat(txn, st->sessions, &stat);
    if (rc) {
        return store_error(st, rc, "stat sessions");
    }
    size_t count = stat.ms_entries;
    if (count <= max) {
        return 0;
    }
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, st->session_age, &cur);
    if (rc) {
        return store_error(st, rc, "open session cursor");
    }
    MDB_val k, v;
    while (count > max && (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size == 8 + KV_CLIENT_ID_LEN) {
            MDB_val client = {KV_CLIENT_ID_LEN, (uint8_t *)k.mv_data + 8};
            int drc = mdb_del(txn, st->sessions, &client, NULL);
            if (drc && drc != MDB_NOTFOUND) {
                rc = drc;
                break;
            }
        }
        rc = mdb_cursor_del(cur, 0);
        if (rc) {
            break;
        }
        count--;
    }
    mdb_cursor_close(cur);
    if (rc && rc != MDB_NOTFOUND) {
        return store_error(st, rc, "evict sessions");
    }
    return 0;
}

/* Record a client's last request and its outcome, at @index (its age for
 * eviction); @old_index is its previous age, when it had one. */
static int session_put(struct kv_store *st,
                       MDB_txn *txn,
                       const ProtobufCBinaryData *client_id,
                       uint64_t request_id,
                       uint64_t index,
                       uint64_t old_index,
                       bool existed,
                       const struct kv_outcome *o)
{
    uint8_t agekey[8 + KV_CLIENT_ID_LEN];
    MDB_val ak = {sizeof agekey, agekey}, empty = {0, ""};
    int rc;
    memcpy(agekey + 8, client_id->data, KV_CLIENT_ID_LEN);
    if (existed) {
        kv_put_u64(agekey, old_index);
        rc = mdb_del(txn, st->session_age, &ak, NULL);
        if (rc && rc != MDB_NOTFOUND) {
            return store_error(st, rc, "update session age");
        }
    }
    kv_put_u64(agekey, index);
    rc = mdb_put(txn, st->session_age, &ak, &empty, 0);
    if (rc) {
        return store_error(st, rc, "write session age");
    }
    MDB_val k = {KV_CLIENT_ID_LEN, client_id->data};
    MDB_val v = {SESSION_HEADER + o->current_len, NULL};
    rc = mdb_put(txn, st->sessions, &k, &v, MDB_RESERVE);
    if (rc) {
        return store_error(st, rc, "write session");
    }
    uint8_t *p = v.mv_data;
    kv_put_u64(p, request_id);
    kv_put_u64(p + 8, index);
    p[16] = (uint8_t)o->err;
    p[17] = (uint8_t)((o->swapped ? FLAG_SWAPPED : 0) |
                      (o->exists ? FLAG_EXISTS : 0));
    kv_put_u32(p + 18, (uint32_t)o->current_len);
    if (o->current_len) {
        memcpy(p + SESSION_HEADER, o->current, o->current_len);
    }
    return 0;
}

/* Name the cluster, unless an earlier entry did. */
static int cluster_init(struct kv_store *st,
                        MDB_txn *txn,
                        const Raftkv__ClusterInit *ci,
                        struct kv_outcome *out)
{
    struct kv_meta m;
    int rv = kv_store_read_meta(st, txn, &m);
    if (rv) {
        return rv;
    }
    if (ci->cluster_id == 0) {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        return 0;
    }
    if (m.cluster_id == 0) {
        rv = kv_store_put_meta(st, txn, "cluster", ci->cluster_id);
        m.cluster_id = ci->cluster_id;
    }
    out->cluster_id = m.cluster_id;
    return rv;
}

/* Open a session: a client that is new here gets a record with request id
 * 0, then the least recent writers are forgotten down to the bound the
 * leader put in the entry (so every replica forgets the same ones). */
static int open_session(struct kv_store *st,
                        MDB_txn *txn,
                        uint64_t index,
                        const Raftkv__SessionOpen *a,
                        struct kv_outcome *out)
{
    if (a->client_id.len != KV_CLIENT_ID_LEN) {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        return 0;
    }
    MDB_val rec;
    int found = session_get(st, txn, &a->client_id, &rec);
    if (found < 0) {
        return -found;
    }
    if (found) {
        out->duplicate = true; /* open already: nothing to do */
        return 0;
    }
    int rv = session_put(st, txn, &a->client_id, 0, index, 0, false, out);
    if (rv) {
        return rv;
    }
    size_t max =
        a->max_sessions ? (size_t)a->max_sessions : KV_DEFAULT_MAX_SESSIONS;
    return evict_sessions(st, txn, max);
}

/* mdb_put of a key/value; size errors become an outcome. */
static int put_value(struct kv_store *st,
                     MDB_txn *txn,
                     MDB_val *k,
                     MDB_val *v,
                     struct kv_outcome *out)
{
    int rc = mdb_put(txn, st->kv, k, v, 0);
    if (rc == MDB_BAD_VALSIZE) {
        out->err = RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE;
        return 0;
    }
    return rc ? store_error(st, rc, "write key") : 0;
}

static int do_put_append(struct kv_store *st,
                         MDB_txn *txn,
                         const Raftkv__PutAppendArgs *a,
                         struct kv_outcome *out)
{
    MDB_val k = {a->key.len, a->key.data};
    if (a->op == RAFTKV__PUT_OP__PUT_OP_PUT) {
        MDB_val v = {a->value.len, a->value.data};
        return put_value(st, txn, &k, &v, out);
    }
    if (a->op != RAFTKV__PUT_OP__PUT_OP_APPEND) {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        return 0;
    }
    MDB_val old;
    int rc = mdb_get(txn, st->kv, &k, &old);
    if (rc == MDB_NOTFOUND) {
        old.mv_size = 0;
        old.mv_data = NULL;
    } else if (rc) {
        return store_error(st, rc, "read key");
    }
    size_t n = old.mv_size + a->value.len;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        return KV_STORE_ENOMEM;
    }
    if (old.mv_size) {
        memcpy(buf, old.mv_data, old.mv_size);
    }
    if (a->value.len) {
        memcpy(buf + old.mv_size, a->value.data, a->value.len);
    }
    MDB_val v = {n, buf};
    int rv = put_value(st, txn, &k, &v, out);
    free(buf);
    return rv;
}

static int do_delete(struct kv_store *st,
                     MDB_txn *txn,
                     const Raftkv__DeleteArgs *a,
                     struct kv_outcome *out)
{
    MDB_val k = {a->key.len, a->key.data};
    int rc = mdb_del(txn, st->kv, &k, NULL);
    if (rc == MDB_NOTFOUND) {
        out->err = RAFTKV__KV_ERROR__KV_NOT_FOUND;
        return 0;
    }
    return rc ? store_error(st, rc, "delete key") : 0;
}

static int do_cas(struct kv_store *st,
                  MDB_txn *txn,
                  const Raftkv__CompareAndSwapArgs *a,
                  struct kv_outcome *out)
{
    MDB_val k = {a->key.len, a->key.data}, cur;
    int rc = mdb_get(txn, st->kv, &k, &cur);
    if (rc && rc != MDB_NOTFOUND) {
        return store_error(st, rc, "read key");
    }
    out->exists = rc == 0;
    bool match;
    if (a->expected_case ==
        RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECT_ABSENT) {
        match = !out->exists;
    } else if (a->expected_case ==
               RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECTED_VALUE) {
        match = out->exists && cur.mv_size == a->expected_value.len &&
                (cur.mv_size == 0 ||
                 memcmp(cur.mv_data, a->expected_value.data, cur.mv_size) == 0);
    } else {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        return 0;
    }
    if (!match) {
        if (out->exists && cur.mv_size) {
            out->current = malloc(cur.mv_size);
            if (!out->current) {
                return KV_STORE_ENOMEM;
            }
            memcpy(out->current, cur.mv_data, cur.mv_size);
            out->current_len = cur.mv_size;
        }
        return 0;
    }
    MDB_val v = {a->new_value.len, a->new_value.data};
    int rv = put_value(st, txn, &k, &v, out);
    out->swapped = rv == 0 && out->err == RAFTKV__KV_ERROR__KV_OK;
    return rv;
}

int kv_sm_apply(struct kv_store *st,
                MDB_txn *txn,
                uint64_t index,
                const void *data,
                size_t len,
                struct kv_outcome *out)
{
    memset(out, 0, sizeof *out);
    Raftkv__Command *cmd = raftkv__command__unpack(NULL, len, data);
    if (!cmd) {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        return 0;
    }
    struct write_common w;
    int rv = 0;
    switch (cmd->op_case) {
        case RAFTKV__COMMAND__OP_PUT_APPEND:
            w.key = cmd->put_append->key;
            w.client_id = cmd->put_append->client_id;
            w.request_id = cmd->put_append->request_id;
            break;
        case RAFTKV__COMMAND__OP_DEL:
            w.key = cmd->del->key;
            w.client_id = cmd->del->client_id;
            w.request_id = cmd->del->request_id;
            break;
        case RAFTKV__COMMAND__OP_CAS:
            w.key = cmd->cas->key;
            w.client_id = cmd->cas->client_id;
            w.request_id = cmd->cas->request_id;
            break;
        case RAFTKV__COMMAND__OP_OPEN_SESSION:
            rv = open_session(st, txn, index, cmd->open_session, out);
            goto out_free;
        case RAFTKV__COMMAND__OP_CLUSTER_INIT:
            rv = cluster_init(st, txn, cmd->cluster_init, out);
            goto out_free;
        case RAFTKV__COMMAND__OP_AUTH:
            rv = kv_auth_apply(st, txn, index, cmd->auth, out);
            goto out_free;
        default:
            out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
            goto out_free;
    }
    if (w.client_id.len != KV_CLIENT_ID_LEN || w.request_id == 0) {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        goto out_free;
    }
    out->err = kv_sm_check_key(st, w.key.len);
    if (out->err) {
        goto out_free;
    }
    MDB_val rec;
    int found = session_get(st, txn, &w.client_id, &rec);
    if (found < 0) {
        rv = -found;
        goto out_free;
    }
    if (!found) {
        /* Never opened, or forgotten to make room: this may be the retry
         * of a write that was applied before. Never apply it. */
        out->err = RAFTKV__KV_ERROR__KV_SESSION_EXPIRED;
        goto out_free;
    }
    uint64_t last_request = kv_get_u64(rec.mv_data);
    uint64_t last_index = kv_get_u64((uint8_t *)rec.mv_data + 8);
    if (w.request_id == last_request) {
        rv = outcome_from_session(&rec, out);
        goto out_free;
    }
    if (w.request_id < last_request) {
        /* An old retry overtaken by newer writes of the same client: it
         * was applied or abandoned; never apply it now. */
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        out->duplicate = true;
        goto out_free;
    }
    switch (cmd->op_case) {
        case RAFTKV__COMMAND__OP_PUT_APPEND:
            rv = do_put_append(st, txn, cmd->put_append, out);
            break;
        case RAFTKV__COMMAND__OP_DEL:
            rv = do_delete(st, txn, cmd->del, out);
            break;
        default:
            rv = do_cas(st, txn, cmd->cas, out);
            break;
    }
    if (rv == 0) {
        rv = session_put(st, txn, &w.client_id, w.request_id, index, last_index,
                         true, out);
    }
out_free:
    raftkv__command__free_unpacked(cmd, NULL);
    if (rv) {
        kv_outcome_clear(out);
    }
    return rv;
}
