/* txn.c: the transaction builder: compares and ops kept in their wire
 * form (TxnArgs), ready for clerk_txn_commit. */
#include <stdlib.h>
#include <string.h>

#include "clerk/clerk.h"
#include "internal.h"

struct clerk_txn
{
    Raftkv__TxnArgs *args; /* compares, then and else ops (malloc'd like an
                              unpacked message: freed by free_unpacked) */
    size_t ops;            /* ops in all, nested transactions' included */
    size_t writes;         /* of them puts and deletes */
    unsigned depth;        /* how deep its nested transactions go (0: none) */
};

bool ck_txn_writes(const struct clerk_txn *t)
{
    return t->writes > 0;
}

const Raftkv__TxnArgs *ck_txn_args(const struct clerk_txn *t)
{
    return t->args;
}

struct clerk_txn *clerk_txn_new(void)
{
    struct clerk_txn *t = calloc(1, sizeof *t);
    if (!t) {
        return NULL;
    }
    t->args = malloc(sizeof *t->args);
    if (!t->args) {
        free(t);
        return NULL;
    }
    raftkv__txn_args__init(t->args);
    return t;
}

void clerk_txn_free(struct clerk_txn *t)
{
    if (!t) {
        return;
    }
    raftkv__txn_args__free_unpacked(t->args, NULL);
    free(t);
}

/* A malloc'd copy of bytes (NULL for none). */
static bool copy_bytes(ProtobufCBinaryData *out, const void *p, size_t len)
{
    out->len = 0;
    out->data = NULL;
    if (!len) {
        return true;
    }
    out->data = malloc(len);
    if (!out->data) {
        return false;
    }
    memcpy(out->data, p, len);
    out->len = len;
    return true;
}

/* Make room for one more pointer in an array of n. */
static bool grow(void ***arr, size_t n)
{
    void **p = realloc(*arr, (n + 1) * sizeof *p);
    if (!p) {
        return false;
    }
    *arr = p;
    return true;
}

static bool valid_result(enum clerk_compare_result r)
{
    return r == CLERK_CMP_EQUAL || r == CLERK_CMP_GREATER ||
           r == CLERK_CMP_LESS || r == CLERK_CMP_NOT_EQUAL;
}

/* Add a compare of key's target; its value is filled by the caller. */
static int add_compare(struct clerk_txn *t,
                       const void *key,
                       size_t key_len,
                       enum clerk_compare_result result,
                       Raftkv__Compare__Target target,
                       Raftkv__Compare **out)
{
    if (!t || (!key && key_len) || !valid_result(result)) {
        return CLERK_INVALID;
    }
    if (!key_len) {
        return CLERK_BAD_REQUEST;
    }
    Raftkv__TxnArgs *a = t->args;
    Raftkv__Compare *cmp = malloc(sizeof *cmp);
    if (!cmp || !grow((void ***)&a->compare, a->n_compare)) {
        free(cmp);
        return CLERK_NOMEM;
    }
    raftkv__compare__init(cmp);
    if (!copy_bytes(&cmp->key, key, key_len)) {
        free(cmp);
        return CLERK_NOMEM;
    }
    cmp->result = (Raftkv__Compare__Result)result;
    cmp->target = target;
    a->compare[a->n_compare++] = cmp;
    *out = cmp;
    return CLERK_OK;
}

int clerk_txn_compare_value(struct clerk_txn *t,
                            const void *key,
                            size_t key_len,
                            enum clerk_compare_result result,
                            const void *value,
                            size_t value_len)
{
    if (!value && value_len) {
        return CLERK_INVALID;
    }
    Raftkv__Compare *cmp;
    int rv = add_compare(t, key, key_len, result,
                         RAFTKV__COMPARE__TARGET__VALUE, &cmp);
    if (rv) {
        return rv;
    }
    cmp->target_union_case = RAFTKV__COMPARE__TARGET_UNION_VALUE;
    if (!copy_bytes(&cmp->value, value, value_len)) {
        t->args->n_compare--;
        raftkv__compare__free_unpacked(cmp, NULL);
        return CLERK_NOMEM;
    }
    return CLERK_OK;
}

/* A compare of a number: version, create or mod revision. */
static int compare_number(struct clerk_txn *t,
                          const void *key,
                          size_t key_len,
                          enum clerk_compare_result result,
                          Raftkv__Compare__Target target,
                          uint64_t v)
{
    Raftkv__Compare *cmp;
    int rv = add_compare(t, key, key_len, result, target, &cmp);
    if (rv) {
        return rv;
    }
    switch (target) {
        case RAFTKV__COMPARE__TARGET__VERSION:
            cmp->target_union_case = RAFTKV__COMPARE__TARGET_UNION_VERSION;
            cmp->version = v;
            break;
        case RAFTKV__COMPARE__TARGET__CREATE:
            cmp->target_union_case =
                RAFTKV__COMPARE__TARGET_UNION_CREATE_REVISION;
            cmp->create_revision = v;
            break;
        case RAFTKV__COMPARE__TARGET__LEASE:
            cmp->target_union_case = RAFTKV__COMPARE__TARGET_UNION_LEASE;
            cmp->lease = v;
            break;
        default:
            cmp->target_union_case = RAFTKV__COMPARE__TARGET_UNION_MOD_REVISION;
            cmp->mod_revision = v;
            break;
    }
    return CLERK_OK;
}

int clerk_txn_compare_version(struct clerk_txn *t,
                              const void *key,
                              size_t key_len,
                              enum clerk_compare_result result,
                              uint64_t version)
{
    return compare_number(t, key, key_len, result,
                          RAFTKV__COMPARE__TARGET__VERSION, version);
}

int clerk_txn_compare_create(struct clerk_txn *t,
                             const void *key,
                             size_t key_len,
                             enum clerk_compare_result result,
                             uint64_t revision)
{
    return compare_number(t, key, key_len, result,
                          RAFTKV__COMPARE__TARGET__CREATE, revision);
}

int clerk_txn_compare_mod(struct clerk_txn *t,
                          const void *key,
                          size_t key_len,
                          enum clerk_compare_result result,
                          uint64_t revision)
{
    return compare_number(t, key, key_len, result, RAFTKV__COMPARE__TARGET__MOD,
                          revision);
}

int clerk_txn_compare_lease(struct clerk_txn *t,
                            const void *key,
                            size_t key_len,
                            enum clerk_compare_result result,
                            uint64_t lease)
{
    return compare_number(t, key, key_len, result,
                          RAFTKV__COMPARE__TARGET__LEASE, lease);
}

int clerk_txn_compare_range_end(struct clerk_txn *t,
                                const void *range_end,
                                size_t range_end_len)
{
    if (!t || !t->args->n_compare || (!range_end && range_end_len)) {
        return CLERK_INVALID;
    }
    Raftkv__Compare *cmp = t->args->compare[t->args->n_compare - 1];
    ProtobufCBinaryData end;
    if (!copy_bytes(&end, range_end, range_end_len)) {
        return CLERK_NOMEM;
    }
    free(cmp->range_end.data);
    cmp->range_end = end;
    return CLERK_OK;
}

/* Add an op to a branch, once the caller made it; takes it on CLERK_OK,
 * frees it otherwise. ops is what it adds to the count. */
static int add_op(struct clerk_txn *t,
                  enum clerk_txn_branch branch,
                  Raftkv__RequestOp *op,
                  size_t ops)
{
    Raftkv__TxnArgs *a = t->args;
    Raftkv__RequestOp ***arr =
        branch == CLERK_TXN_THEN ? &a->success : &a->failure;
    size_t *n = branch == CLERK_TXN_THEN ? &a->n_success : &a->n_failure;
    if (t->ops + ops > CLERK_TXN_MAX_OPS) {
        raftkv__request_op__free_unpacked(op, NULL);
        return CLERK_BAD_REQUEST;
    }
    if (!grow((void ***)arr, *n)) {
        raftkv__request_op__free_unpacked(op, NULL);
        return CLERK_NOMEM;
    }
    (*arr)[(*n)++] = op;
    t->ops += ops;
    return CLERK_OK;
}

static bool bad_op_args(const struct clerk_txn *t,
                        enum clerk_txn_branch branch,
                        const void *key,
                        size_t key_len)
{
    return !t || (!key && key_len) ||
           (branch != CLERK_TXN_THEN && branch != CLERK_TXN_ELSE);
}

int clerk_txn_put(struct clerk_txn *t,
                  enum clerk_txn_branch branch,
                  const void *key,
                  size_t key_len,
                  const void *value,
                  size_t value_len,
                  unsigned flags)
{
    return clerk_txn_put_lease(t, branch, key, key_len, value, value_len, 0,
                               flags);
}

int clerk_txn_put_lease(struct clerk_txn *t,
                        enum clerk_txn_branch branch,
                        const void *key,
                        size_t key_len,
                        const void *value,
                        size_t value_len,
                        uint64_t lease,
                        unsigned flags)
{
    if (bad_op_args(t, branch, key, key_len) || (!value && value_len)) {
        return CLERK_INVALID;
    }
    if (!key_len) {
        return CLERK_BAD_REQUEST;
    }
    Raftkv__RequestOp *op = malloc(sizeof *op);
    Raftkv__PutRequest *p = malloc(sizeof *p);
    if (!op || !p) {
        free(op);
        free(p);
        return CLERK_NOMEM;
    }
    raftkv__request_op__init(op);
    raftkv__put_request__init(p);
    op->request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = p;
    p->prev_kv = (flags & CLERK_PUT_PREV_KV) != 0;
    p->ignore_value = (flags & CLERK_PUT_IGNORE_VALUE) != 0;
    p->lease = lease;
    if (!copy_bytes(&p->key, key, key_len) ||
        !copy_bytes(&p->value, value, value_len)) {
        raftkv__request_op__free_unpacked(op, NULL);
        return CLERK_NOMEM;
    }
    int rv = add_op(t, branch, op, 1);
    t->writes += rv == CLERK_OK;
    return rv;
}

int clerk_txn_delete(struct clerk_txn *t,
                     enum clerk_txn_branch branch,
                     const void *key,
                     size_t key_len,
                     const void *range_end,
                     size_t range_end_len,
                     unsigned flags)
{
    if (bad_op_args(t, branch, key, key_len) || (!range_end && range_end_len)) {
        return CLERK_INVALID;
    }
    if (!key_len) {
        return CLERK_BAD_REQUEST;
    }
    Raftkv__RequestOp *op = malloc(sizeof *op);
    Raftkv__DeleteRangeArgs *d = malloc(sizeof *d);
    if (!op || !d) {
        free(op);
        free(d);
        return CLERK_NOMEM;
    }
    raftkv__request_op__init(op);
    raftkv__delete_range_args__init(d);
    op->request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op->request_delete_range = d;
    d->prev_kv = (flags & CLERK_DELETE_PREV_KV) != 0;
    if (!copy_bytes(&d->key, key, key_len) ||
        !copy_bytes(&d->range_end, range_end, range_end_len)) {
        raftkv__request_op__free_unpacked(op, NULL);
        return CLERK_NOMEM;
    }
    int rv = add_op(t, branch, op, 1);
    t->writes += rv == CLERK_OK;
    return rv;
}

int clerk_txn_range(struct clerk_txn *t,
                    enum clerk_txn_branch branch,
                    const void *key,
                    size_t key_len,
                    const void *range_end,
                    size_t range_end_len,
                    uint64_t limit,
                    unsigned flags)
{
    if (bad_op_args(t, branch, key, key_len) || (!range_end && range_end_len)) {
        return CLERK_INVALID;
    }
    if (!key_len) {
        return CLERK_BAD_REQUEST;
    }
    Raftkv__RequestOp *op = malloc(sizeof *op);
    Raftkv__RangeArgs *r = malloc(sizeof *r);
    if (!op || !r) {
        free(op);
        free(r);
        return CLERK_NOMEM;
    }
    raftkv__request_op__init(op);
    raftkv__range_args__init(r);
    op->request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op->request_range = r;
    ck_range_flags(r, limit, flags);
    if (!copy_bytes(&r->key, key, key_len) ||
        !copy_bytes(&r->range_end, range_end, range_end_len)) {
        raftkv__request_op__free_unpacked(op, NULL);
        return CLERK_NOMEM;
    }
    return add_op(t, branch, op, 1);
}

int clerk_txn_txn(struct clerk_txn *t,
                  enum clerk_txn_branch branch,
                  struct clerk_txn *nested)
{
    if (!t || !nested || nested == t ||
        (branch != CLERK_TXN_THEN && branch != CLERK_TXN_ELSE)) {
        return CLERK_INVALID;
    }
    if (nested->depth + 1 > CLERK_TXN_MAX_DEPTH ||
        t->ops + nested->ops + 1 > CLERK_TXN_MAX_OPS) {
        return CLERK_BAD_REQUEST;
    }
    Raftkv__RequestOp *op = malloc(sizeof *op);
    if (!op) {
        return CLERK_NOMEM;
    }
    raftkv__request_op__init(op);
    op->request_case = RAFTKV__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = nested->args;
    /* add_op frees op, and with it nested->args, when it fails: checked
     * above, only out of memory is left, so keep nested's args out. */
    Raftkv__TxnArgs *a = t->args;
    Raftkv__RequestOp ***arr =
        branch == CLERK_TXN_THEN ? &a->success : &a->failure;
    size_t *n = branch == CLERK_TXN_THEN ? &a->n_success : &a->n_failure;
    if (!grow((void ***)arr, *n)) {
        free(op);
        return CLERK_NOMEM;
    }
    (*arr)[(*n)++] = op;
    t->ops += nested->ops + 1;
    t->writes += nested->writes;
    if (nested->depth + 1 > t->depth) {
        t->depth = nested->depth + 1;
    }
    free(nested);
    return CLERK_OK;
}
