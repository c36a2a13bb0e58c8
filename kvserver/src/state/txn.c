/* txn.c: transactions: compares, then or else ops, at one revision. */
#include <stdio.h>
#include <string.h>

#include "txn.h"

static bool compare_well_formed(const Raftkv__Compare *c)
{
    switch (c->target) {
        case RAFTKV__COMPARE__TARGET__VERSION:
            return c->target_union_case ==
                       RAFTKV__COMPARE__TARGET_UNION_VERSION ||
                   c->target_union_case ==
                       RAFTKV__COMPARE__TARGET_UNION__NOT_SET;
        case RAFTKV__COMPARE__TARGET__CREATE:
            return c->target_union_case ==
                       RAFTKV__COMPARE__TARGET_UNION_CREATE_REVISION ||
                   c->target_union_case ==
                       RAFTKV__COMPARE__TARGET_UNION__NOT_SET;
        case RAFTKV__COMPARE__TARGET__MOD:
            return c->target_union_case ==
                       RAFTKV__COMPARE__TARGET_UNION_MOD_REVISION ||
                   c->target_union_case ==
                       RAFTKV__COMPARE__TARGET_UNION__NOT_SET;
        case RAFTKV__COMPARE__TARGET__VALUE:
            return c->target_union_case ==
                       RAFTKV__COMPARE__TARGET_UNION_VALUE ||
                   c->target_union_case ==
                       RAFTKV__COMPARE__TARGET_UNION__NOT_SET;
        case RAFTKV__COMPARE__TARGET__LEASE:
            return c->target_union_case ==
                       RAFTKV__COMPARE__TARGET_UNION_LEASE ||
                   c->target_union_case ==
                       RAFTKV__COMPARE__TARGET_UNION__NOT_SET;
        default:
            return false;
    }
}

static int check(struct kv_store *st,
                 const Raftkv__TxnArgs *a,
                 size_t max_value,
                 unsigned depth,
                 size_t *ops,
                 char *why,
                 size_t why_size)
{
    if (depth > KV_MAX_TXN_DEPTH) {
        snprintf(why, why_size, "transactions nested more than %d deep",
                 KV_MAX_TXN_DEPTH);
        return RAFTKV__KV_ERROR__KV_BAD_REQUEST;
    }
    for (size_t i = 0; i < a->n_compare; i++) {
        const Raftkv__Compare *c = a->compare[i];
        int err =
            kv_mvcc_check_range(st, &c->key, &c->range_end, why, why_size);
        if (err) {
            return err;
        }
        if (c->result > RAFTKV__COMPARE__RESULT__NOT_EQUAL ||
            !compare_well_formed(c)) {
            snprintf(why, why_size,
                     "compare %zu: its value does not match its target", i);
            return RAFTKV__KV_ERROR__KV_BAD_REQUEST;
        }
    }
    for (int branch = 0; branch < 2; branch++) {
        size_t n = branch ? a->n_failure : a->n_success;
        Raftkv__RequestOp **list = branch ? a->failure : a->success;
        for (size_t i = 0; i < n; i++) {
            const Raftkv__RequestOp *op = list[i];
            int err = 0;
            if (++*ops > KV_MAX_TXN_OPS) {
                snprintf(why, why_size, "more than %d ops in one transaction",
                         KV_MAX_TXN_OPS);
                return RAFTKV__KV_ERROR__KV_BAD_REQUEST;
            }
            switch (op->request_case) {
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_RANGE:
                    err = kv_mvcc_check_range(st, &op->request_range->key,
                                              &op->request_range->range_end,
                                              why, why_size);
                    if (!err && op->request_range->sort_order >
                                    RAFTKV__SORT_ORDER__SORT_DESCEND) {
                        snprintf(why, why_size, "unknown sort order");
                        err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
                    }
                    break;
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_PUT: {
                    static const ProtobufCBinaryData none = {0, NULL};
                    const Raftkv__PutRequest *p = op->request_put;
                    err =
                        kv_mvcc_check_range(st, &p->key, &none, why, why_size);
                    if (!err && p->value.len > max_value) {
                        snprintf(why, why_size,
                                 "value of %zu bytes is over the limit of %zu",
                                 p->value.len, max_value);
                        err = RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE;
                    }
                    break;
                }
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                    err = kv_mvcc_check_range(
                        st, &op->request_delete_range->key,
                        &op->request_delete_range->range_end, why, why_size);
                    break;
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_TXN:
                    err = check(st, op->request_txn, max_value, depth + 1, ops,
                                why, why_size);
                    break;
                default:
                    snprintf(why, why_size,
                             "an op of the transaction is empty");
                    err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
                    break;
            }
            if (err) {
                return err;
            }
        }
    }
    return RAFTKV__KV_ERROR__KV_OK;
}

int kv_txn_check(struct kv_store *st,
                 const Raftkv__TxnArgs *a,
                 size_t max_value,
                 char *why,
                 size_t why_size)
{
    size_t ops = 0;
    return check(st, a, max_value, 1, &ops, why, why_size);
}

bool kv_txn_may_fail(const Raftkv__TxnArgs *a)
{
    for (int b = 0; b < 2; b++) {
        size_t n = b ? a->n_failure : a->n_success;
        Raftkv__RequestOp **ops = b ? a->failure : a->success;
        for (size_t i = 0; i < n; i++) {
            const Raftkv__RequestOp *op = ops[i];
            switch (op->request_case) {
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_PUT:
                    if (op->request_put->ignore_value ||
                        op->request_put->lease) {
                        return true; /* NOT_FOUND, LEASE_NOT_FOUND */
                    }
                    break;
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                    if (op->request_delete_range->prev_kv) {
                        return true; /* over 4 MiB of them */
                    }
                    break;
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_TXN:
                    if (kv_txn_may_fail(op->request_txn)) {
                        return true;
                    }
                    break;
                case RAFTKV__REQUEST_OP__REQUEST_REQUEST_RANGE:
                    break; /* checked by kv_txn_check */
                default:
                    return true;
            }
        }
    }
    return false;
}

bool kv_txn_read_only(const Raftkv__TxnArgs *a)
{
    for (int b = 0; b < 2; b++) {
        size_t n = b ? a->n_failure : a->n_success;
        Raftkv__RequestOp **ops = b ? a->failure : a->success;
        for (size_t i = 0; i < n; i++) {
            const Raftkv__RequestOp *op = ops[i];
            if (op->request_case == RAFTKV__REQUEST_OP__REQUEST_REQUEST_TXN) {
                if (!kv_txn_read_only(op->request_txn)) {
                    return false;
                }
            } else if (op->request_case !=
                       RAFTKV__REQUEST_OP__REQUEST_REQUEST_RANGE) {
                return false;
            }
        }
    }
    return true;
}

/* Give every reply in the tree the revision of the whole transaction. */
static void set_revision(Raftkv__TxnReply *r, uint64_t rev)
{
    r->revision = rev;
    for (size_t i = 0; i < r->n_responses; i++) {
        Raftkv__ResponseOp *op = r->responses[i];
        switch (op->response_case) {
            case RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
                op->response_range->revision = rev;
                break;
            case RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
                op->response_delete_range->revision = rev;
                break;
            case RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
                set_revision(op->response_txn, rev);
                break;
            default:
                break;
        }
    }
}

/* A range's count goes on later (struct kv_counts). */
static int count_later(struct kv_counts *cs,
                       struct kv_arena *mem,
                       const struct kv_count_rest *rest,
                       uint64_t *count)
{
    if (cs->n == cs->cap) {
        size_t cap = cs->cap ? cs->cap * 2 : 4;
        struct kv_count_left *l = kv_arena_alloc(mem, cap * sizeof *l);
        if (!l) {
            return KV_STORE_ENOMEM;
        }
        if (cs->n) {
            memcpy(l, cs->left, cs->n * sizeof *l);
        }
        cs->left = l;
        cs->cap = cap;
    }
    cs->left[cs->n].rest = *rest;
    cs->left[cs->n].count = count;
    cs->n++;
    cs->spent = true;
    return 0;
}

static int run(struct kv_change *c,
               const Raftkv__TxnArgs *a,
               struct kv_arena *mem,
               Raftkv__TxnReply *r)
{
    struct kv_store *st = c->st;
    bool ok = true;
    for (size_t i = 0; i < a->n_compare && ok; i++) {
        int rv = kv_mvcc_compare(st, c->txn, a->compare[i], &ok);
        if (rv) {
            return rv;
        }
    }
    r->succeeded = ok;
    size_t n = ok ? a->n_success : a->n_failure;
    Raftkv__RequestOp **list = ok ? a->success : a->failure;
    r->responses = kv_arena_alloc(mem, n * sizeof *r->responses);
    if (!r->responses) {
        return KV_STORE_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const Raftkv__RequestOp *op = list[i];
        Raftkv__ResponseOp *resp = kv_arena_alloc(mem, sizeof *resp);
        if (!resp) {
            return KV_STORE_ENOMEM;
        }
        raftkv__response_op__init(resp);
        r->responses[r->n_responses++] = resp;
        int rv = 0, err = 0;
        switch (op->request_case) {
            case RAFTKV__REQUEST_OP__REQUEST_REQUEST_RANGE: {
                Raftkv__RangeReply *rr = kv_arena_alloc(mem, sizeof *rr);
                if (!rr) {
                    return KV_STORE_ENOMEM;
                }
                raftkv__range_reply__init(rr);
                resp->response_case =
                    RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
                resp->response_range = rr;
                struct kv_counts *cs = c->counts;
                struct kv_count_rest rest = {.budget = cs && cs->spent ? 1
                                                       : cs ? cs->budget
                                                            : 0};
                rv = kv_mvcc_range(st, c->txn, op->request_range, true, mem, rr,
                                   cs ? &rest : NULL);
                if (!rv && rest.pending) {
                    rv = count_later(cs, mem, &rest, &rr->count);
                }
                err = rr->err;
                if (err) {
                    r->message = rr->message;
                }
                break;
            }
            case RAFTKV__REQUEST_OP__REQUEST_REQUEST_PUT: {
                const Raftkv__PutRequest *p = op->request_put;
                Raftkv__PutResponse *pr = kv_arena_alloc(mem, sizeof *pr);
                if (!pr) {
                    return KV_STORE_ENOMEM;
                }
                raftkv__put_response__init(pr);
                resp->response_case =
                    RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
                resp->response_put = pr;
                rv = kv_change_put(c, p->key.data, p->key.len, p->value.data,
                                   p->value.len, p->ignore_value, p->lease, mem,
                                   p->prev_kv ? &pr->prev_kv : NULL, &err);
                if (err == RAFTKV__KV_ERROR__KV_NOT_FOUND) {
                    r->message = "ignore_value on a key that does not exist";
                } else if (err == RAFTKV__KV_ERROR__KV_LEASE_NOT_FOUND) {
                    r->message =
                        "a put of the transaction names a lease "
                        "that does not exist";
                } else if (err) {
                    r->message = "a put of the transaction failed";
                }
                break;
            }
            case RAFTKV__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE: {
                const Raftkv__DeleteRangeArgs *d = op->request_delete_range;
                Raftkv__DeleteRangeReply *dr = kv_arena_alloc(mem, sizeof *dr);
                if (!dr) {
                    return KV_STORE_ENOMEM;
                }
                raftkv__delete_range_reply__init(dr);
                resp->response_case =
                    RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
                resp->response_delete_range = dr;
                bool more = false;
                rv = kv_change_delete(c, &d->key, &d->range_end, d->limit,
                                      &more, mem, &dr->deleted,
                                      d->prev_kv ? &dr->prev_kvs : NULL,
                                      &dr->n_prev_kvs, &err);
                dr->more = more;
                if (err) {
                    r->message =
                        "a delete of the transaction failed (with "
                        "prev_kv: more than 4 MiB of keys)";
                }
                break;
            }
            case RAFTKV__REQUEST_OP__REQUEST_REQUEST_TXN: {
                Raftkv__TxnReply *tr = kv_arena_alloc(mem, sizeof *tr);
                if (!tr) {
                    return KV_STORE_ENOMEM;
                }
                raftkv__txn_reply__init(tr);
                resp->response_case =
                    RAFTKV__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
                resp->response_txn = tr;
                rv = run(c, op->request_txn, mem, tr);
                err = tr->err;
                if (err) {
                    r->message = tr->message;
                }
                break;
            }
            default:
                err = RAFTKV__KV_ERROR__KV_BAD_REQUEST;
                r->message = "an op of the transaction is empty";
                break;
        }
        if (rv) {
            return rv;
        }
        if (err) {
            r->err = err;
            return 0;
        }
    }
    return 0;
}

int kv_txn_run(struct kv_change *c,
               const Raftkv__TxnArgs *a,
               struct kv_arena *mem,
               Raftkv__TxnReply *r)
{
    int rv = run(c, a, mem, r);
    if (!rv) {
        set_revision(r, kv_change_revision(c));
    }
    return rv;
}
