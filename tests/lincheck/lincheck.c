/* lincheck.c: KV histories, and checking them key by key. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lincheck.h"
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

/* Copy len bytes of src to *dst and point field at the copy (never NULL). */
static const void *copy_bytes(char **dst, const void *src, size_t len)
{
    char *at = *dst;
    if (len) {
        memcpy(at, src, len);
    }
    *dst += len;
    return at;
}

int lc_history_add(struct lc_history *h, const struct lc_event *e)
{
    if (!h || !e || e->op < LC_GET || e->op > LC_CAS ||
        (!e->key && e->key_len) || (!e->value && e->value_len) ||
        (!e->expected && e->expected_len) || (!e->out && e->out_len) ||
        (!e->unknown && e->return_ns < e->call_ns)) {
        errno = EINVAL;
        return -1;
    }
    size_t bytes = e->key_len + e->value_len + e->expected_len + e->out_len;
    if (bytes < e->key_len || bytes > SIZE_MAX - sizeof(struct lc_event) - 1) {
        errno = ENOMEM;
        return -1;
    }
    struct lc_event *c = malloc(sizeof *c + bytes + 1);
    if (!c) {
        return -1;
    }
    *c = *e;
    char *at = (char *)(c + 1);
    c->key = copy_bytes(&at, e->key, e->key_len);
    c->value = copy_bytes(&at, e->value, e->value_len);
    c->expected = copy_bytes(&at, e->expected, e->expected_len);
    c->out = copy_bytes(&at, e->out, e->out_len);
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
 */

/* An event of the history and its place there (to sort stably). */
struct ev_ref
{
    const struct lc_event *e; /* the event */
    size_t idx;               /* its index in the history */
};

/* Sort order of ops: known before unknown, then by call time. */
static int cmp_op(const void *pa, const void *pb)
{
    const struct ev_ref *ra = pa, *rb = pb;
    const struct lc_event *a = ra->e, *b = rb->e;
    if (a->unknown != b->unknown) {
        return a->unknown ? 1 : -1;
    }
    if (a->call_ns != b->call_ns) {
        return a->call_ns < b->call_ns ? -1 : 1;
    }
    return ra->idx < rb->idx ? -1 : ra->idx > rb->idx;
}

static int cmp_key(const void *pa, const void *pb)
{
    const struct lc_event *a = ((const struct ev_ref *)pa)->e;
    const struct lc_event *b = ((const struct ev_ref *)pb)->e;
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = n ? memcmp(a->key, b->key, n) : 0;
    if (c) {
        return c;
    }
    if (a->key_len != b->key_len) {
        return a->key_len < b->key_len ? -1 : 1;
    }
    return cmp_op(pa, pb);
}

static bool keys_differ(const struct lc_event *a, const struct lc_event *b)
{
    return a->key_len != b->key_len ||
           (a->key_len && memcmp(a->key, b->key, a->key_len) != 0);
}

/* A key's slice of the sorted events. */
struct key_range
{
    size_t start; /* first event */
    size_t n;     /* events */
};

static int cmp_range(const void *pa, const void *pb)
{
    const struct key_range *a = pa, *b = pb;
    if (a->n != b->n) {
        return a->n < b->n ? -1 : 1;
    }
    return a->start < b->start ? -1 : a->start > b->start;
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
    struct key_range *keys = NULL;
    const struct lc_event **kev = NULL;

    size_t total = h ? h->n : 0, n = 0;
    ev = malloc((total ? total : 1) * sizeof *ev);
    keys = malloc((total ? total : 1) * sizeof *keys);
    kev = malloc((total ? total : 1) * sizeof *kev);
    if (!ev || !keys || !kev) {
        goto err_nomem;
    }
    for (size_t i = 0; i < total; i++) {
        if (!(h->ev[i]->op == LC_GET && h->ev[i]->unknown)) {
            ev[n++] = (struct ev_ref){.e = h->ev[i], .idx = i};
        }
    }
    res->ops = n;
    qsort(ev, n, sizeof *ev, cmp_key);
    size_t nkeys = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || keys_differ(ev[i - 1].e, ev[i].e)) {
            keys[nkeys++] = (struct key_range){.start = i};
        }
        keys[nkeys - 1].n++;
    }
    res->keys = nkeys;
    qsort(keys, nkeys, sizeof *keys, cmp_range);

    struct timespec deadline = {0};
    bool has_deadline = budget_seconds > 0;
    if (has_deadline) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        double end =
            (double)deadline.tv_sec + deadline.tv_nsec / 1e9 + budget_seconds;
        if (end > 9e15) {
            has_deadline = false;
        } else {
            deadline.tv_sec = (time_t)end;
            deadline.tv_nsec = (long)((end - (double)deadline.tv_sec) * 1e9);
        }
    }

    res->verdict = LC_LINEARIZABLE;
    for (size_t k = 0; k < nkeys; k++) {
        for (size_t i = 0; i < keys[k].n; i++) {
            kev[i] = ev[keys[k].start + i].e;
        }
        enum lc_key_result r =
            lc_check_key(kev, keys[k].n, has_deadline ? &deadline : NULL,
                         res->detail, sizeof res->detail);
        if (r == LC_KEY_OK) {
            res->keys_done++;
            continue;
        }
        if (r == LC_KEY_FAIL) {
            res->keys_done++;
            res->verdict = LC_NOT_LINEARIZABLE;
        } else {
            res->verdict = LC_UNKNOWN;
            res->timed_out = r == LC_KEY_TIMEOUT;
        }
        break;
    }
    free(kev);
    free(keys);
    free(ev);
    return res->verdict;

err_nomem:
    free(kev);
    free(keys);
    free(ev);
    res->verdict = LC_UNKNOWN;
    snprintf(res->detail, sizeof res->detail,
             "out of memory setting up the search");
    return res->verdict;
}
