/* lincheck.c: KV histories, and checking them group of keys by group. */
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lincheck.h"
#include "lincheck_group.h"
#include "lincheck_key.h"

/* ---- histories ---------------------------------------------------------- */

struct lc_history
{
    pthread_mutex_t lock; /* guards ev, n, cap */
    struct lc_event **ev; /* events in the order added, each one block */
    size_t n;             /* events */
    size_t cap;           /* slots in ev */
};

struct lc_history *lc_history_new(void)
{
    struct lc_history *h = calloc(1, sizeof *h);
    if (!h) {
        return NULL;
    }
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        free(h);
        errno = ENOMEM;
        return NULL;
    }
    return h;
}

void lc_history_free(struct lc_history *h)
{
    if (!h) {
        return;
    }
    for (size_t i = 0; i < h->n; i++) {
        free(h->ev[i]);
    }
    free(h->ev);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

/* Copy len bytes of src to *dst and return where they went (never NULL). */
static const void *copy_bytes(char **dst, const void *src, size_t len)
{
    char *at = *dst;
    if (len) {
        memcpy(at, src, len);
    }
    *dst += len;
    return at;
}

/* Is p a valid byte string of length n? */
static bool bytes_ok(const void *p, size_t n)
{
    return p || n == 0;
}

/* Does e have the fields of its op only, each one sound? */
static bool event_ok(const struct lc_event *e)
{
    if (e->op < LC_GET || e->op > LC_TXN || !bytes_ok(e->key, e->key_len) ||
        !bytes_ok(e->value, e->value_len) ||
        !bytes_ok(e->expected, e->expected_len) ||
        !bytes_ok(e->out, e->out_len) || (!e->reads && e->n_reads) ||
        (!e->compares && e->n_compares) || (!e->then_ops && e->n_then) ||
        (!e->else_ops && e->n_else) ||
        (!e->unknown && e->return_ns < e->call_ns)) {
        return false;
    }
    bool multi = e->op == LC_RANGE || e->op == LC_TXN;
    if (!multi) {
        return e->n_reads + e->n_compares + e->n_then + e->n_else == 0;
    }
    if (e->key_len || e->value_len || e->expected_len || e->out_len) {
        return false;
    }
    if (e->op == LC_RANGE) {
        if (e->n_reads == 0 || e->n_compares + e->n_then + e->n_else) {
            return false;
        }
        for (size_t i = 0; i < e->n_reads; i++) {
            const struct lc_read *r = &e->reads[i];
            if (!bytes_ok(r->key, r->key_len) ||
                !bytes_ok(r->out, r->out_len)) {
                return false;
            }
        }
        return true;
    }
    if (e->n_reads || e->n_compares + e->n_then + e->n_else == 0) {
        return false;
    }
    for (size_t i = 0; i < e->n_compares; i++) {
        const struct lc_compare *c = &e->compares[i];
        if (!bytes_ok(c->key, c->key_len) ||
            !bytes_ok(c->value, c->value_len) ||
            (c->target != LC_CMP_VALUE && c->target != LC_CMP_VERSION) ||
            c->result < LC_CMP_EQUAL || c->result > LC_CMP_NOT_EQUAL) {
            return false;
        }
    }
    for (size_t b = 0; b < 2; b++) {
        const struct lc_write *w = b ? e->else_ops : e->then_ops;
        size_t n = b ? e->n_else : e->n_then;
        for (size_t i = 0; i < n; i++) {
            if (!bytes_ok(w[i].key, w[i].key_len) ||
                !bytes_ok(w[i].value, w[i].value_len)) {
                return false;
            }
        }
    }
    return true;
}

/* *total += n; false on overflow. */
static bool add_size(size_t *total, size_t n)
{
    if (*total > SIZE_MAX - n) {
        return false;
    }
    *total += n;
    return true;
}

/* Bytes the copy of e needs after the struct: arrays, then strings. */
static bool event_size(const struct lc_event *e, size_t *arrays, size_t *bytes)
{
    size_t a = 0, b = 0;
    bool ok = add_size(&b, e->key_len) && add_size(&b, e->value_len) &&
              add_size(&b, e->expected_len) && add_size(&b, e->out_len);
    ok = ok && e->n_reads <= SIZE_MAX / sizeof *e->reads &&
         e->n_compares <= SIZE_MAX / sizeof *e->compares &&
         e->n_then <= SIZE_MAX / sizeof *e->then_ops &&
         e->n_else <= SIZE_MAX / sizeof *e->else_ops &&
         add_size(&a, e->n_reads * sizeof *e->reads) &&
         add_size(&a, e->n_compares * sizeof *e->compares) &&
         add_size(&a, e->n_then * sizeof *e->then_ops) &&
         add_size(&a, e->n_else * sizeof *e->else_ops);
    for (size_t i = 0; ok && i < e->n_reads; i++) {
        ok = add_size(&b, e->reads[i].key_len) &&
             add_size(&b, e->reads[i].out_len);
    }
    for (size_t i = 0; ok && i < e->n_compares; i++) {
        ok = add_size(&b, e->compares[i].key_len) &&
             add_size(&b, e->compares[i].value_len);
    }
    for (size_t i = 0; ok && i < e->n_then; i++) {
        ok = add_size(&b, e->then_ops[i].key_len) &&
             add_size(&b, e->then_ops[i].value_len);
    }
    for (size_t i = 0; ok && i < e->n_else; i++) {
        ok = add_size(&b, e->else_ops[i].key_len) &&
             add_size(&b, e->else_ops[i].value_len);
    }
    *arrays = a;
    *bytes = b;
    return ok;
}

/* Copy a branch's ops into w (their bytes to *at). */
static void copy_writes(struct lc_write *w,
                        const struct lc_write *src,
                        size_t n,
                        char **at)
{
    for (size_t i = 0; i < n; i++) {
        w[i] = src[i];
        w[i].key = copy_bytes(at, src[i].key, src[i].key_len);
        w[i].value = copy_bytes(at, src[i].value, src[i].value_len);
    }
}

int lc_history_add(struct lc_history *h, const struct lc_event *e)
{
    if (!h || !e || !event_ok(e)) {
        errno = EINVAL;
        return -1;
    }
    /* One block: the event, its arrays (every struct in them has the
     * event's alignment), then every byte string. */
    size_t arrays, bytes, total = sizeof(struct lc_event) + 1;
    if (!event_size(e, &arrays, &bytes) || !add_size(&total, arrays) ||
        !add_size(&total, bytes)) {
        errno = ENOMEM;
        return -1;
    }
    struct lc_event *c = malloc(total);
    if (!c) {
        return -1;
    }
    *c = *e;
    struct lc_read *reads = (struct lc_read *)(c + 1);
    struct lc_compare *cmps = (struct lc_compare *)(reads + e->n_reads);
    struct lc_write *then_ops = (struct lc_write *)(cmps + e->n_compares);
    struct lc_write *else_ops = then_ops + e->n_then;
    char *at = (char *)(else_ops + e->n_else);
    c->key = copy_bytes(&at, e->key, e->key_len);
    c->value = copy_bytes(&at, e->value, e->value_len);
    c->expected = copy_bytes(&at, e->expected, e->expected_len);
    c->out = copy_bytes(&at, e->out, e->out_len);
    for (size_t i = 0; i < e->n_reads; i++) {
        reads[i] = e->reads[i];
        reads[i].key = copy_bytes(&at, e->reads[i].key, e->reads[i].key_len);
        reads[i].out = copy_bytes(&at, e->reads[i].out, e->reads[i].out_len);
    }
    for (size_t i = 0; i < e->n_compares; i++) {
        cmps[i] = e->compares[i];
        cmps[i].key =
            copy_bytes(&at, e->compares[i].key, e->compares[i].key_len);
        cmps[i].value =
            copy_bytes(&at, e->compares[i].value, e->compares[i].value_len);
    }
    copy_writes(then_ops, e->then_ops, e->n_then, &at);
    copy_writes(else_ops, e->else_ops, e->n_else, &at);
    c->reads = e->n_reads ? reads : NULL;
    c->compares = e->n_compares ? cmps : NULL;
    c->then_ops = e->n_then ? then_ops : NULL;
    c->else_ops = e->n_else ? else_ops : NULL;
    *at = '\0';

    pthread_mutex_lock(&h->lock);
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        struct lc_event **ev = realloc(h->ev, cap * sizeof *ev);
        if (!ev) {
            pthread_mutex_unlock(&h->lock);
            free(c);
            errno = ENOMEM;
            return -1;
        }
        h->ev = ev;
        h->cap = cap;
    }
    h->ev[h->n++] = c;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

size_t lc_history_size(const struct lc_history *h)
{
    struct lc_history *m = (struct lc_history *)h;
    pthread_mutex_lock(&m->lock);
    size_t n = m->n;
    pthread_mutex_unlock(&m->lock);
    return n;
}

const struct lc_event *lc_history_get(const struct lc_history *h, size_t i)
{
    return i < h->n ? h->ev[i] : NULL;
}

/* ---- checking --------------------------------------------------------------
 *
 * Linearizability is local (Herlihy & Wing): a history is linearizable when
 * the history of each object is. Keys that a range or txn touches together
 * form one object here, a group; every other key is an object alone. A
 * group of one key with single-key ops goes to lc_check_key, the others to
 * lc_check_group's search over the group's keys. */

/* An event of the history, its place there and its group. */
struct ev_ref
{
    const struct lc_event *e; /* the event */
    size_t idx;               /* its index in the history */
    size_t group;             /* its group (a key id: the group's root) */
};

/* How many keys e touches (a key may count more than once). */
static size_t event_nkeys(const struct lc_event *e)
{
    switch (e->op) {
        case LC_RANGE:
            return e->n_reads;
        case LC_TXN:
            return e->n_compares + e->n_then + e->n_else;
        default:
            return 1;
    }
}

/* The i-th key e touches. */
static void event_key(const struct lc_event *e,
                      size_t i,
                      const void **p,
                      size_t *n)
{
    if (e->op == LC_RANGE) {
        *p = e->reads[i].key;
        *n = e->reads[i].key_len;
    } else if (e->op != LC_TXN) {
        *p = e->key;
        *n = e->key_len;
    } else if (i < e->n_compares) {
        *p = e->compares[i].key;
        *n = e->compares[i].key_len;
    } else if (i < e->n_compares + e->n_then) {
        *p = e->then_ops[i - e->n_compares].key;
        *n = e->then_ops[i - e->n_compares].key_len;
    } else {
        *p = e->else_ops[i - e->n_compares - e->n_then].key;
        *n = e->else_ops[i - e->n_compares - e->n_then].key_len;
    }
}

/* The distinct keys of a history, and the groups they form. */
struct keys
{
    const uint8_t **p; /* each key's bytes, by id */
    size_t *len;       /* its length */
    size_t *parent;    /* union-find: the parent of each key id */
    size_t n;          /* keys */
    size_t cap;        /* slots in p, len, parent */
    size_t *tab;       /* open addressing: key id + 1, 0 = free */
    size_t tab_cap;    /* slots (a power of two) */
};

static uint64_t hash_key(const void *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ULL;
    }
    return h ^ n;
}

static int keys_init(struct keys *k, size_t max)
{
    memset(k, 0, sizeof *k);
    k->cap = max ? max : 1;
    k->tab_cap = 16;
    while (k->tab_cap < 2 * k->cap) {
        k->tab_cap *= 2;
    }
    k->p = malloc(k->cap * sizeof *k->p);
    k->len = malloc(k->cap * sizeof *k->len);
    k->parent = malloc(k->cap * sizeof *k->parent);
    k->tab = calloc(k->tab_cap, sizeof *k->tab);
    return k->p && k->len && k->parent && k->tab ? 0 : -1;
}

static void keys_free(struct keys *k)
{
    free(k->p);
    free(k->len);
    free(k->parent);
    free(k->tab);
}

/* The id of a key, made when new (there is room: keys_init's max). */
static size_t key_id(struct keys *k, const void *p, size_t n)
{
    size_t mask = k->tab_cap - 1, i = (size_t)hash_key(p, n) & mask;
    for (;; i = (i + 1) & mask) {
        size_t id = k->tab[i];
        if (id == 0) {
            break;
        }
        id--;
        if (k->len[id] == n && (n == 0 || memcmp(k->p[id], p, n) == 0)) {
            return id;
        }
    }
    size_t id = k->n++;
    k->p[id] = p;
    k->len[id] = n;
    k->parent[id] = id;
    k->tab[i] = id + 1;
    return id;
}

static size_t key_root(struct keys *k, size_t id)
{
    while (k->parent[id] != id) {
        k->parent[id] = k->parent[k->parent[id]];
        id = k->parent[id];
    }
    return id;
}

static void key_join(struct keys *k, size_t a, size_t b)
{
    a = key_root(k, a);
    b = key_root(k, b);
    if (a != b) {
        /* The lower id is the root: a group is named by its first key. */
        k->parent[a > b ? a : b] = a < b ? a : b;
    }
}

/* Sort order of ops: by group, then known before unknown, then by call
 * time, then as added. */
static int cmp_op(const void *pa, const void *pb)
{
    const struct ev_ref *ra = pa, *rb = pb;
    const struct lc_event *a = ra->e, *b = rb->e;
    if (ra->group != rb->group) {
        return ra->group < rb->group ? -1 : 1;
    }
    if (a->unknown != b->unknown) {
        return a->unknown ? 1 : -1;
    }
    if (a->call_ns != b->call_ns) {
        return a->call_ns < b->call_ns ? -1 : 1;
    }
    return ra->idx < rb->idx ? -1 : ra->idx > rb->idx;
}

/* A group's slice of the sorted events. */
struct group_range
{
    size_t start; /* first event */
    size_t n;     /* events */
    size_t keys;  /* keys in the group */
    bool multi;   /* a range or txn is among them */
};

static int cmp_range(const void *pa, const void *pb)
{
    const struct group_range *a = pa, *b = pb;
    if (a->n != b->n) {
        return a->n < b->n ? -1 : 1;
    }
    return a->start < b->start ? -1 : a->start > b->start;
}

/* Is e dropped before checking: a read whose outcome is unknown? */
static bool dropped(const struct lc_event *e)
{
    return e->unknown && (e->op == LC_GET || e->op == LC_RANGE);
}

/* The deadline budget_seconds from now; false when there is none. */
static bool deadline_in(double budget_seconds, struct timespec *deadline)
{
    if (!(budget_seconds > 0)) {
        return false;
    }
    clock_gettime(CLOCK_MONOTONIC, deadline);
    double end =
        (double)deadline->tv_sec + deadline->tv_nsec / 1e9 + budget_seconds;
    if (end > 9e15) {
        return false;
    }
    deadline->tv_sec = (time_t)end;
    deadline->tv_nsec = (long)((end - (double)deadline->tv_sec) * 1e9);
    return true;
}

enum lc_verdict lc_check(const struct lc_history *h,
                         double budget_seconds,
                         struct lc_result *res)
{
    struct lc_result scratch;
    if (!res) {
        res = &scratch;
    }
    memset(res, 0, sizeof *res);
    struct ev_ref *ev = NULL;
    struct group_range *groups = NULL;
    const struct lc_event **gev = NULL;
    size_t *keys_in = NULL;
    struct keys keys;

    size_t total = h ? h->n : 0, n = 0, nkeyrefs = 0;
    for (size_t i = 0; i < total; i++) {
        nkeyrefs += event_nkeys(h->ev[i]);
    }
    ev = malloc((total ? total : 1) * sizeof *ev);
    groups = malloc((total ? total : 1) * sizeof *groups);
    gev = malloc((total ? total : 1) * sizeof *gev);
    if (keys_init(&keys, nkeyrefs) != 0 || !ev || !groups || !gev) {
        goto err_nomem;
    }
    /* Every key an event touches joins its first key's group. */
    for (size_t i = 0; i < total; i++) {
        const struct lc_event *e = h->ev[i];
        if (dropped(e)) {
            continue;
        }
        const void *p;
        size_t len, m = event_nkeys(e);
        event_key(e, 0, &p, &len);
        size_t first = key_id(&keys, p, len);
        for (size_t j = 1; j < m; j++) {
            event_key(e, j, &p, &len);
            key_join(&keys, first, key_id(&keys, p, len));
        }
        ev[n++] = (struct ev_ref){.e = e, .idx = i, .group = first};
    }
    res->ops = n;
    res->keys = keys.n;
    keys_in = calloc(keys.n ? keys.n : 1, sizeof *keys_in);
    if (!keys_in) {
        goto err_nomem;
    }
    for (size_t k = 0; k < keys.n; k++) {
        keys_in[key_root(&keys, k)]++;
    }
    for (size_t i = 0; i < n; i++) {
        ev[i].group = key_root(&keys, ev[i].group);
    }
    qsort(ev, n, sizeof *ev, cmp_op);
    size_t ngroups = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || ev[i - 1].group != ev[i].group) {
            groups[ngroups++] =
                (struct group_range){.start = i, .keys = keys_in[ev[i].group]};
        }
        struct group_range *g = &groups[ngroups - 1];
        g->n++;
        g->multi = g->multi || ev[i].e->op == LC_RANGE || ev[i].e->op == LC_TXN;
    }
    res->groups = ngroups;
    qsort(groups, ngroups, sizeof *groups, cmp_range);

    struct timespec deadline = {0};
    bool has_deadline = deadline_in(budget_seconds, &deadline);
    res->verdict = LC_LINEARIZABLE;
    for (size_t g = 0; g < ngroups; g++) {
        for (size_t i = 0; i < groups[g].n; i++) {
            gev[i] = ev[groups[g].start + i].e;
        }
        enum lc_key_result r =
            groups[g].multi ? lc_check_group(gev, groups[g].n,
                                             has_deadline ? &deadline : NULL,
                                             res->detail, sizeof res->detail)
                            : lc_check_key(gev, groups[g].n,
                                           has_deadline ? &deadline : NULL,
                                           res->detail, sizeof res->detail);
        if (r == LC_KEY_OK) {
            res->keys_done += groups[g].keys;
            continue;
        }
        if (r == LC_KEY_FAIL) {
            res->keys_done += groups[g].keys;
            res->verdict = LC_NOT_LINEARIZABLE;
        } else {
            res->verdict = LC_UNKNOWN;
            res->timed_out = r == LC_KEY_TIMEOUT;
        }
        break;
    }
    free(keys_in);
    keys_free(&keys);
    free(gev);
    free(groups);
    free(ev);
    return res->verdict;

err_nomem:
    free(keys_in);
    keys_free(&keys);
    free(gev);
    free(groups);
    free(ev);
    memset(res, 0, sizeof *res);
    res->verdict = LC_UNKNOWN;
    snprintf(res->detail, sizeof res->detail,
             "out of memory setting up the search");
    return res->verdict;
}
