/* sm.c: applying commands: one table of ops; client writes exactly once,
 * in sessions that clients open through the log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proto/kv.pb-c.h>

#include "auth.h"
#include "lease.h"
#include "sm.h"
#include "snap.h"
#include "txn.h"

/* Session record: request_id(8) last_index(8) err(1) flags(1) len(4) value,
 * where value, with FLAG_REV, starts with the revision (8) the write left
 * the store at (records written before revisions lack it). */
#define SESSION_HEADER 22
#define FLAG_SWAPPED   1
#define FLAG_EXISTS    2
#define FLAG_REV       4

/* The largest value a write may carry (the node refuses larger ones before
 * they reach the log; a transaction is checked again when applied). */
#define SM_MAX_VALUE (4u << 20)

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
    const uint8_t *value = p + SESSION_HEADER;
    size_t len = kv_get_u32(p + 18);
    out->err = p[16];
    out->swapped = p[17] & FLAG_SWAPPED;
    out->exists = p[17] & FLAG_EXISTS;
    out->duplicate = true;
    if ((p[17] & FLAG_REV) && len >= 8) {
        out->revision = kv_get_u64(value);
        value += 8;
        len -= 8;
    }
    out->current_len = len;
    if (len) {
        out->current = malloc(len);
        if (!out->current) {
            return KV_STORE_ENOMEM;
        }
        memcpy(out->current, value, len);
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
    size_t len = 8 + o->current_len;
    MDB_val v = {SESSION_HEADER + len, NULL};
    rc = mdb_put(txn, st->sessions, &k, &v, MDB_RESERVE);
    if (rc) {
        return store_error(st, rc, "write session");
    }
    uint8_t *p = v.mv_data;
    kv_put_u64(p, request_id);
    kv_put_u64(p + 8, index);
    p[16] = (uint8_t)o->err;
    p[17] = (uint8_t)((o->swapped ? FLAG_SWAPPED : 0) |
                      (o->exists ? FLAG_EXISTS : 0) | FLAG_REV);
    kv_put_u32(p + 18, (uint32_t)len);
    kv_put_u64(p + SESSION_HEADER, o->revision);
    if (o->current_len) {
        memcpy(p + SESSION_HEADER + 8, o->current, o->current_len);
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

/* ------------------------------------------------------------- the ops */

/* What an op is applied with. */
struct sm_ctx
{
    struct kv_store *st;
    MDB_txn *txn;
    uint64_t index;
};

/* Pack a reply message into the outcome (its session record and answer). */
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

static int apply_put_append(struct sm_ctx *x,
                            const Raftkv__Command *cmd,
                            struct kv_outcome *out)
{
    const Raftkv__PutAppendArgs *a = cmd->put_append;
    struct kv_change c;
    struct kv_arena mem = {0};
    int rv = kv_change_begin(&c, x->st, x->txn);
    if (rv) {
        return rv;
    }
    const void *value = a->value.data;
    size_t len = a->value.len;
    uint8_t *joined = NULL;
    Raftkv__PutResponse resp = RAFTKV__PUT_RESPONSE__INIT;
    if (a->op == RAFTKV__PUT_OP__PUT_OP_APPEND) {
        if (a->ignore_value || a->lease) {
            out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
            out->revision = c.revs.revision;
            return 0;
        }
        struct kv_rec old;
        rv = kv_mvcc_get(x->st, x->txn, a->key.data, a->key.len, &old);
        if (rv && rv != MDB_NOTFOUND) {
            return rv;
        }
        size_t had = rv ? 0 : old.value_len;
        len = had + a->value.len;
        joined = malloc(len ? len : 1);
        if (!joined) {
            return KV_STORE_ENOMEM;
        }
        if (had) {
            memcpy(joined, old.value, had);
        }
        if (a->value.len) {
            memcpy(joined + had, a->value.data, a->value.len);
        }
        value = joined;
    } else if (a->op != RAFTKV__PUT_OP__PUT_OP_PUT) {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        out->revision = c.revs.revision;
        return 0;
    }
    rv = kv_change_put(&c, a->key.data, a->key.len, value, len, a->ignore_value,
                       a->lease, &mem, a->prev_kv ? &resp.prev_kv : NULL,
                       &out->err);
    free(joined);
    if (!rv) {
        rv = kv_change_end(&c);
    }
    if (!rv && resp.prev_kv) {
        rv = outcome_pack(out, &resp.base);
    }
    kv_arena_free(&mem);
    out->revision = kv_change_revision(&c);
    return rv;
}

static int apply_delete(struct sm_ctx *x,
                        const Raftkv__Command *cmd,
                        struct kv_outcome *out)
{
    static const ProtobufCBinaryData one = {0, NULL};
    struct kv_change c;
    uint64_t deleted;
    int rv = kv_change_begin(&c, x->st, x->txn);
    if (!rv) {
        rv = kv_change_delete(&c, &cmd->del->key, &one, 0, NULL, NULL, &deleted,
                              NULL, NULL, &out->err);
    }
    if (!rv) {
        rv = kv_change_end(&c);
    }
    if (!rv && !out->err && !deleted) {
        out->err = RAFTKV__KV_ERROR__KV_NOT_FOUND;
    }
    out->revision = kv_change_revision(&c);
    return rv;
}

/* CompareAndSwap: a transaction of one compare (the value, or version 0
 * for "absent") and one put. */
static int apply_cas(struct sm_ctx *x,
                     const Raftkv__Command *cmd,
                     struct kv_outcome *out)
{
    const Raftkv__CompareAndSwapArgs *a = cmd->cas;
    struct kv_change c;
    int rv = kv_change_begin(&c, x->st, x->txn);
    if (rv) {
        return rv;
    }
    out->revision = c.revs.revision;
    struct kv_rec cur;
    rv = kv_mvcc_get(x->st, x->txn, a->key.data, a->key.len, &cur);
    if (rv && rv != MDB_NOTFOUND) {
        return rv;
    }
    out->exists = rv == 0;
    bool match;
    if (a->expected_case ==
        RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECT_ABSENT) {
        match = !out->exists;
    } else if (a->expected_case ==
               RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECTED_VALUE) {
        match = out->exists && cur.value_len == a->expected_value.len &&
                (cur.value_len == 0 ||
                 memcmp(cur.value, a->expected_value.data, cur.value_len) == 0);
    } else {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        return 0;
    }
    if (!match) {
        if (out->exists && cur.value_len) {
            out->current = malloc(cur.value_len);
            if (!out->current) {
                return KV_STORE_ENOMEM;
            }
            memcpy(out->current, cur.value, cur.value_len);
            out->current_len = cur.value_len;
        }
        return 0;
    }
    rv = kv_change_put(&c, a->key.data, a->key.len, a->new_value.data,
                       a->new_value.len, false, 0, NULL, NULL, &out->err);
    if (!rv) {
        rv = kv_change_end(&c);
    }
    out->swapped = rv == 0 && out->err == RAFTKV__KV_ERROR__KV_OK;
    out->revision = kv_change_revision(&c);
    return rv;
}

/* Run @fn as one change, kept only when it leaves no error in *err: a
 * multi-key change happens whole or not at all. When @may_fail it runs in
 * a nested transaction that an error drops; otherwise (it cannot leave an
 * error once it started writing) in the state transaction itself. */
static int nested(struct sm_ctx *x,
                  bool may_fail,
                  int (*fn)(struct kv_change *,
                            const void *,
                            struct kv_arena *,
                            void *,
                            int *),
                  const void *args,
                  struct kv_arena *mem,
                  void *reply,
                  int *err,
                  uint64_t *revision)
{
    if (!may_fail) {
        struct kv_change c;
        int rv = kv_change_begin(&c, x->st, x->txn);
        if (!rv) {
            rv = fn(&c, args, mem, reply, err);
        }
        if (!rv && *err && c.sub) {
            /* It wrote and then failed: it was said it could not. */
            snprintf(x->st->errmsg, sizeof x->st->errmsg,
                     "%s: a change that cannot fail failed after writing",
                     x->st->dir);
            rv = KV_STORE_EIO;
        }
        if (!rv && !*err) {
            rv = kv_change_end(&c);
        }
        *revision = kv_change_revision(&c);
        return rv;
    }
    MDB_txn *child;
    int rc = mdb_txn_begin(x->st->env, x->txn, 0, &child);
    if (rc) {
        return kv_store_fail(x->st, rc, "begin nested");
    }
    struct kv_change c;
    int rv = kv_change_begin(&c, x->st, child);
    if (!rv) {
        rv = fn(&c, args, mem, reply, err);
    }
    if (!rv && !*err) {
        rv = kv_change_end(&c);
    }
    if (rv || *err) {
        mdb_txn_abort(child);
        kv_lease_counts_forget(x->st); /* it may have attached keys */
        *revision = c.revs.revision;
        return rv;
    }
    rc = mdb_txn_commit(child);
    *revision = kv_change_revision(&c);
    return rc ? kv_store_fail(x->st, rc, "commit nested") : 0;
}

static int run_delete_range(struct kv_change *c,
                            const void *args,
                            struct kv_arena *mem,
                            void *reply,
                            int *err)
{
    const Raftkv__DeleteRangeArgs *a = args;
    Raftkv__DeleteRangeReply *r = reply;
    bool more = false;
    int rv = kv_change_delete(c, &a->key, &a->range_end, a->limit, &more, mem,
                              &r->deleted, a->prev_kv ? &r->prev_kvs : NULL,
                              &r->n_prev_kvs, err);
    r->more = more;
    if (*err == RAFTKV__KV_ERROR__KV_BAD_REQUEST) {
        r->message = a->prev_kv ? "more than 4 MiB of keys to answer with "
                                  "prev_kv; delete fewer at a time"
                                : "bad key range";
    } else if (*err) {
        r->message = "bad key range";
    }
    return rv;
}

static int apply_delete_range(struct sm_ctx *x,
                              const Raftkv__Command *cmd,
                              struct kv_outcome *out)
{
    struct kv_arena mem = {0};
    Raftkv__DeleteRangeReply r = RAFTKV__DELETE_RANGE_REPLY__INIT;
    int rv = nested(x, cmd->delete_range->prev_kv, run_delete_range,
                    cmd->delete_range, &mem, &r, &out->err, &out->revision);
    if (!rv) {
        r.err = out->err;
        r.revision = out->revision;
        if (out->err) {
            r.deleted = 0;
            r.n_prev_kvs = 0;
            r.more = false;
        }
        rv = outcome_pack(out, &r.base);
    }
    kv_arena_free(&mem);
    return rv;
}

static int run_txn(struct kv_change *c,
                   const void *args,
                   struct kv_arena *mem,
                   void *reply,
                   int *err)
{
    Raftkv__TxnReply *r = reply;
    int rv = kv_txn_run(c, args, mem, r);
    *err = r->err;
    return rv;
}

static int apply_txn(struct sm_ctx *x,
                     const Raftkv__Command *cmd,
                     struct kv_outcome *out)
{
    struct kv_arena mem = {0};
    Raftkv__TxnReply r = RAFTKV__TXN_REPLY__INIT;
    char why[300];
    int rv = 0;
    /* Checked again here (the leader checked before proposing): the
     * bounds hold on every replica whatever the leader did. */
    out->err = kv_txn_check(x->st, cmd->txn, SM_MAX_VALUE, why, sizeof why);
    if (out->err) {
        struct kv_revs revs;
        rv = kv_mvcc_revs(x->st, x->txn, &revs);
        out->revision = revs.revision;
        r.message = why;
    } else {
        rv = nested(x, kv_txn_may_fail(cmd->txn), run_txn, cmd->txn, &mem, &r,
                    &out->err, &out->revision);
    }
    if (!rv) {
        if (out->err) {
            /* Nothing of it stays: answer the error alone. */
            Raftkv__TxnReply e = RAFTKV__TXN_REPLY__INIT;
            e.err = out->err;
            e.message = r.message;
            e.revision = out->revision;
            rv = outcome_pack(out, &e.base);
        } else {
            rv = outcome_pack(out, &r.base);
        }
    }
    kv_arena_free(&mem);
    return rv;
}

static int apply_compact(struct sm_ctx *x,
                         const Raftkv__Command *cmd,
                         struct kv_outcome *out)
{
    struct kv_revs revs;
    int rv = kv_mvcc_compact(x->st, x->txn, cmd->compact->revision, &out->err,
                             &revs);
    out->revision = revs.revision;
    out->compact = revs.compact;
    return rv;
}

static int apply_open_session(struct sm_ctx *x,
                              const Raftkv__Command *cmd,
                              struct kv_outcome *out)
{
    return open_session(x->st, x->txn, x->index, cmd->open_session, out);
}

static int apply_cluster_init(struct sm_ctx *x,
                              const Raftkv__Command *cmd,
                              struct kv_outcome *out)
{
    return cluster_init(x->st, x->txn, cmd->cluster_init, out);
}

static int apply_auth(struct sm_ctx *x,
                      const Raftkv__Command *cmd,
                      struct kv_outcome *out)
{
    return kv_auth_apply(x->st, x->txn, x->index, cmd->auth, out);
}

static int apply_lease(struct sm_ctx *x,
                       const Raftkv__Command *cmd,
                       struct kv_outcome *out)
{
    return kv_lease_apply(x->st, x->txn, cmd->lease, out);
}

/* The session fields of a client write. */
static bool session_put_append(const Raftkv__Command *c, struct write_common *w)
{
    w->key = c->put_append->key;
    w->client_id = c->put_append->client_id;
    w->request_id = c->put_append->request_id;
    return true;
}

static bool session_del(const Raftkv__Command *c, struct write_common *w)
{
    w->key = c->del->key;
    w->client_id = c->del->client_id;
    w->request_id = c->del->request_id;
    return true;
}

static bool session_cas(const Raftkv__Command *c, struct write_common *w)
{
    w->key = c->cas->key;
    w->client_id = c->cas->client_id;
    w->request_id = c->cas->request_id;
    return true;
}

static bool session_delete_range(const Raftkv__Command *c,
                                 struct write_common *w)
{
    w->key = c->delete_range->key;
    w->client_id = c->delete_range->client_id;
    w->request_id = c->delete_range->request_id;
    return true;
}

static bool session_txn(const Raftkv__Command *c, struct write_common *w)
{
    w->key.len = 0; /* keys are checked by kv_txn_check */
    w->key.data = NULL;
    w->client_id = c->txn->client_id;
    w->request_id = c->txn->request_id;
    return true;
}

/* A lease grant or revoke is a client write; an expire is the leader's. */
static bool session_lease(const Raftkv__Command *c, struct write_common *w)
{
    const Raftkv__LeaseCommand *lc = c->lease;
    w->key.len = 0;
    w->key.data = NULL;
    if (lc->op_case == RAFTKV__LEASE_COMMAND__OP_GRANT) {
        w->client_id = lc->grant->client_id;
        w->request_id = lc->grant->request_id;
        return true;
    }
    if (lc->op_case == RAFTKV__LEASE_COMMAND__OP_REVOKE) {
        w->client_id = lc->revoke->client_id;
        w->request_id = lc->revoke->request_id;
        return true;
    }
    return false;
}

/* One op of the state machine. */
struct sm_op
{
    /* Apply the command; a bad one is an outcome, not an error. */
    int (*apply)(struct sm_ctx *x,
                 const Raftkv__Command *cmd,
                 struct kv_outcome *out);
    /* For a client write, applied exactly once: where its session is;
     * false when this command is not a session write (NULL: the op never
     * is). */
    bool (*session)(const Raftkv__Command *cmd, struct write_common *w);
    /* Its single key is checked for the store's limits first. */
    bool one_key;
};

static const struct sm_op sm_ops[] = {
    [RAFTKV__COMMAND__OP_PUT_APPEND] = {apply_put_append, session_put_append,
                                        true},
    [RAFTKV__COMMAND__OP_DEL] = {apply_delete, session_del, true},
    [RAFTKV__COMMAND__OP_CAS] = {apply_cas, session_cas, true},
    [RAFTKV__COMMAND__OP_OPEN_SESSION] = {apply_open_session, NULL, false},
    [RAFTKV__COMMAND__OP_CLUSTER_INIT] = {apply_cluster_init, NULL, false},
    [RAFTKV__COMMAND__OP_AUTH] = {apply_auth, NULL, false},
    [RAFTKV__COMMAND__OP_TXN] = {apply_txn, session_txn, false},
    [RAFTKV__COMMAND__OP_DELETE_RANGE] = {apply_delete_range,
                                          session_delete_range, false},
    [RAFTKV__COMMAND__OP_COMPACT] = {apply_compact, NULL, false},
    [RAFTKV__COMMAND__OP_LEASE] = {apply_lease, session_lease, false},
};

/* A client write: once per (client, request), in an open session. */
static int apply_session_write(struct sm_ctx *x,
                               const struct sm_op *op,
                               const Raftkv__Command *cmd,
                               struct kv_outcome *out)
{
    struct write_common w;
    if (!op->session(cmd, &w)) {
        return op->apply(x, cmd, out);
    }
    if (w.client_id.len != KV_CLIENT_ID_LEN || w.request_id == 0) {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        return 0;
    }
    if (op->one_key && (out->err = kv_sm_check_key(x->st, w.key.len)) != 0) {
        return 0;
    }
    MDB_val rec;
    int found = session_get(x->st, x->txn, &w.client_id, &rec);
    if (found < 0) {
        return -found;
    }
    if (!found) {
        /* Never opened, or forgotten to make room: this may be the retry
         * of a write that was applied before. Never apply it. */
        out->err = RAFTKV__KV_ERROR__KV_SESSION_EXPIRED;
        return 0;
    }
    uint64_t last_request = kv_get_u64(rec.mv_data);
    uint64_t last_index = kv_get_u64((uint8_t *)rec.mv_data + 8);
    if (w.request_id == last_request) {
        return outcome_from_session(&rec, out);
    }
    if (w.request_id < last_request) {
        /* An old retry overtaken by newer writes of the same client: it
         * was applied or abandoned; never apply it now. */
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        out->duplicate = true;
        return 0;
    }
    int rv = op->apply(x, cmd, out);
    if (rv == 0) {
        rv = session_put(x->st, x->txn, &w.client_id, w.request_id, x->index,
                         last_index, true, out);
    }
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
    struct sm_ctx x = {st, txn, index};
    const struct sm_op *op = NULL;
    if ((size_t)cmd->op_case < sizeof sm_ops / sizeof sm_ops[0]) {
        op = &sm_ops[cmd->op_case];
    }
    int rv = 0;
    if (!op || !op->apply) {
        out->err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
    } else if (op->session) {
        rv = apply_session_write(&x, op, cmd, out);
    } else {
        rv = op->apply(&x, cmd, out);
    }
    raftkv__command__free_unpacked(cmd, NULL);
    if (rv) {
        kv_outcome_clear(out);
    }
    return rv;
}

int kv_sm_install(struct kv_store *st,
                  MDB_txn *txn,
                  uint64_t *index,
                  uint64_t *term)
{
    int rv = snap_install(st, txn, index, term);
    return rv ? rv : kv_mvcc_upgrade(st, txn);
}

int kv_sm_install_done(struct kv_store *st, MDB_txn *txn)
{
    return kv_mvcc_upgrade(st, txn);
}

int kv_sm_upgrade(struct kv_store *st)
{
    if (st->format == KV_STORE_FORMAT) {
        return 0;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc) {
        return kv_store_fail(st, rc, "begin upgrade");
    }
    /* Format 3 gets revisions; 4 has everything but leases (a store
     * without the leases databases has none: they are made empty on open)
     * and its history events are read as they are. */
    uint64_t was = st->format;
    int rv = kv_mvcc_upgrade(st, txn);
    if (!rv && st->format != KV_STORE_FORMAT) {
        rv = kv_store_set_format(st, txn);
    }
    if (rv) {
        mdb_txn_abort(txn);
        st->format = was;
        return rv;
    }
    rc = mdb_txn_commit(txn);
    if (rc) {
        st->format = was;
        return kv_store_fail(st, rc, "commit upgrade");
    }
    return 0;
}
