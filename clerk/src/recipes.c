/* recipes.c: locks with fencing tokens and elections, on leases,
 * transactions and watches (docs/recipes.md). Only the public API. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clerk/clerk.h"
#include "internal.h"

#define MAX_NAME 400 /* bytes of a lock's name (the key adds 17) */

struct clerk_lock
{
    char *key;      /* NAME/LEASE, NUL-terminated */
    size_t key_len; /* its length */
    size_t prefix;  /* bytes of NAME/ */
    uint64_t lease; /* the holder's lease */
    uint64_t token; /* the key's create revision */
};

static void lock_free(struct clerk_lock *l)
{
    if (l) {
        free(l->key);
        free(l);
    }
}

/* Put the key NAME/LEASE in line unless it is there already (the same
 * lease again): its create revision is the candidate's place. */
static int enqueue(struct clerk *c,
                   struct clerk_lock *l,
                   const void *value,
                   size_t value_len)
{
    struct clerk_txn *t = clerk_txn_new();
    if (!t) {
        return CLERK_NOMEM;
    }
    int rv =
        clerk_txn_compare_create(t, l->key, l->key_len, CLERK_CMP_EQUAL, 0);
    if (!rv) {
        rv = clerk_txn_put_lease(t, CLERK_TXN_THEN, l->key, l->key_len, value,
                                 value_len, l->lease, 0);
    }
    if (!rv) {
        rv = clerk_txn_range(t, CLERK_TXN_ELSE, l->key, l->key_len, NULL, 0, 0,
                             0);
    }
    struct clerk_txn_result *r = NULL;
    if (!rv) {
        rv = clerk_txn_commit(c, t, &r);
    }
    clerk_txn_free(t);
    if (rv) {
        return rv;
    }
    if (r->succeeded) {
        l->token = r->revision;
    } else if (r->n_responses == 1 && r->responses[0].range &&
               r->responses[0].range->n_kvs == 1) {
        l->token = r->responses[0].range->kvs[0].create_revision;
    } else {
        rv = CLERK_INTERNAL;
    }
    clerk_txn_result_free(r);
    return rv;
}

/* Is this key, under NAME/ (@prefix bytes), one in a lock's or an
 * election's line (NAME/ and 16 hex digits of a lease)? Keys the
 * application keeps under the same prefix ("jobs/state" beside the lock
 * "jobs") are not: nobody would ever delete them for the line. */
static bool in_line(const char *key, size_t key_len, size_t prefix)
{
    if (key_len != prefix + 16) {
        return false;
    }
    for (size_t i = prefix; i < key_len; i++) {
        char ch = key[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
            return false;
        }
    }
    return true;
}

/* The key in line just before ours (the highest create revision below our
 * token), read at *revision. Sets *mine_found when our key is there. */
static int predecessor(struct clerk *c,
                       const struct clerk_lock *l,
                       char **pred,
                       size_t *pred_len,
                       uint64_t *revision,
                       bool *mine_found)
{
    uint8_t end[MAX_NAME + 2];
    size_t end_len = clerk_prefix_end(l->key, l->prefix, end);
    char from[520]; /* a key is at most 511 bytes, + "\0" */
    memcpy(from, l->key, l->prefix);
    size_t from_len = l->prefix;
    uint64_t best = 0;
    *pred = NULL;
    *mine_found = false;
    *revision = 0;
    for (;;) {
        struct clerk_range_result *r;
        int rv = clerk_range(c, from, from_len, end, end_len, 0,
                             CLERK_RANGE_KEYS_ONLY, &r);
        if (rv) {
            free(*pred);
            *pred = NULL;
            return rv;
        }
        if (!*revision) {
            *revision = r->revision; /* reset below for the predecessor */
        }
        for (size_t i = 0; i < r->n_kvs; i++) {
            const struct clerk_kv *kv = &r->kvs[i];
            if (kv->key_len == l->key_len &&
                !memcmp(kv->key, l->key, l->key_len)) {
                *mine_found = kv->create_revision == l->token;
            } else if (kv->create_revision < l->token &&
                       kv->create_revision > best &&
                       in_line(kv->key, kv->key_len, l->prefix)) {
                char *p = malloc(kv->key_len + 1);
                if (!p) {
                    clerk_range_result_free(r);
                    free(*pred);
                    *pred = NULL;
                    return CLERK_NOMEM;
                }
                memcpy(p, kv->key, kv->key_len + 1);
                free(*pred);
                *pred = p;
                *pred_len = kv->key_len;
                best = kv->create_revision;
                /* Watched from the revision of the page that showed it:
                 * a later page's may be past its delete. */
                *revision = r->revision;
            }
        }
        /* More than one reply holds (a long line): go on after the last
         * key. */
        bool more = r->more && r->n_kvs > 0 &&
                    r->kvs[r->n_kvs - 1].key_len + 1 <= sizeof from;
        if (more) {
            const struct clerk_kv *last = &r->kvs[r->n_kvs - 1];
            memcpy(from, last->key, last->key_len);
            from[last->key_len] = 0;
            from_len = last->key_len + 1;
        }
        clerk_range_result_free(r);
        if (!more) {
            return CLERK_OK;
        }
    }
}

/* Wait until the key @pred is deleted (after revision @rev), or the
 * deadline. */
static int wait_deleted(struct clerk *c,
                        const char *pred,
                        size_t pred_len,
                        uint64_t rev,
                        uint64_t deadline,
                        const volatile sig_atomic_t *stop)
{
    struct clerk_watch_options o = {.start_revision = rev + 1, .no_put = true};
    struct clerk_watch *w;
    int rv = clerk_watch_open(c, pred, pred_len, NULL, 0, &o, &w);
    if (rv) {
        return rv;
    }
    for (;;) {
        uint64_t now = ck_now_ms();
        if (now >= deadline || (stop && *stop)) {
            rv = CLERK_TIMEOUT;
            break;
        }
        uint64_t left = deadline - now;
        struct clerk_events_result *b;
        rv = clerk_watch_next(w, left > 200 ? 200 : (unsigned)left, &b);
        if (rv == CLERK_TIMEOUT) {
            continue;
        }
        if (rv) {
            break;
        }
        bool gone = b->n_events > 0; /* deletes only */
        clerk_events_result_free(b);
        if (gone) {
            break;
        }
    }
    clerk_watch_close(w);
    return rv;
}

/* Errors that a later try may not meet: the cluster was briefly without
 * a leader, a node failed (a read it failed until the deadline is
 * CLERK_INTERNAL), or the history a watch wanted is compacted. */
static bool transient(int rv)
{
    return rv == CLERK_UNAVAILABLE || rv == CLERK_TIMEOUT ||
           rv == CLERK_UNKNOWN_OUTCOME || rv == CLERK_COMPACTED ||
           rv == CLERK_INTERNAL;
}

static int take(struct clerk *c,
                const void *name,
                size_t name_len,
                uint64_t lease,
                const void *value,
                size_t value_len,
                unsigned timeout_ms,
                const volatile sig_atomic_t *stop,
                struct clerk_lock **out)
{
    if (out) {
        *out = NULL;
    }
    if (!c || !out || (!name && name_len) || (!value && value_len) || !lease) {
        return CLERK_INVALID;
    }
    if (!name_len || name_len > MAX_NAME) {
        return CLERK_BAD_REQUEST;
    }
    uint64_t deadline = ck_now_ms() + timeout_ms;
    struct clerk_lock *l = calloc(1, sizeof *l);
    if (!l || !(l->key = malloc(name_len + 18))) {
        lock_free(l);
        return CLERK_NOMEM;
    }
    memcpy(l->key, name, name_len);
    l->key[name_len] = '/';
    l->prefix = name_len + 1;
    l->key_len = l->prefix +
                 (size_t)snprintf(l->key + l->prefix, 17, "%016" PRIx64, lease);
    l->lease = lease;
    int rv;
    /* In line (creating the key again is harmless: the same lease's key
     * stays as it was). */
    while ((rv = enqueue(c, l, value, value_len)) && transient(rv) &&
           ck_now_ms() < deadline && !(stop && *stop)) {
        ck_sleep_ms(50);
    }
    while (!rv) {
        if (stop && *stop) {
            rv = CLERK_TIMEOUT;
            break;
        }
        char *pred;
        size_t pred_len = 0;
        uint64_t rev = 0;
        bool mine = false;
        rv = predecessor(c, l, &pred, &pred_len, &rev, &mine);
        if (rv && transient(rv) && ck_now_ms() < deadline) {
            rv = 0; /* read the line again */
            ck_sleep_ms(50);
            continue;
        }
        if (rv) {
            break;
        }
        if (!mine) {
            /* Our key went with our lease. */
            free(pred);
            rv = CLERK_LEASE_NOT_FOUND;
            break;
        }
        if (!pred) {
            *out = l; /* first in line */
            return CLERK_OK;
        }
        rv = wait_deleted(c, pred, pred_len, rev, deadline, stop);
        free(pred);
        if (rv && rv != CLERK_TIMEOUT && transient(rv) &&
            ck_now_ms() < deadline) {
            rv = 0; /* read the line again */
            ck_sleep_ms(50);
        }
    }
    /* Leave the line (the key would otherwise go only with the lease). */
    clerk_delete(c, l->key, l->key_len);
    lock_free(l);
    return rv;
}

int clerk_lock(struct clerk *c,
               const void *name,
               size_t name_len,
               uint64_t lease,
               unsigned timeout_ms,
               struct clerk_lock **out)
{
    return take(c, name, name_len, lease, "", 0, timeout_ms, NULL, out);
}

int ck_lock_take(struct clerk *c,
                 const void *name,
                 size_t name_len,
                 uint64_t lease,
                 const void *value,
                 size_t value_len,
                 unsigned timeout_ms,
                 const volatile sig_atomic_t *stop,
                 struct clerk_lock **out)
{
    return take(c, name, name_len, lease, value, value_len, timeout_ms, stop,
                out);
}

int clerk_campaign(struct clerk *c,
                   const void *name,
                   size_t name_len,
                   uint64_t lease,
                   const void *value,
                   size_t value_len,
                   unsigned timeout_ms,
                   struct clerk_lock **out)
{
    return take(c, name, name_len, lease, value, value_len, timeout_ms, NULL,
                out);
}

uint64_t clerk_lock_token(const struct clerk_lock *l)
{
    return l ? l->token : 0;
}

const char *clerk_lock_key(const struct clerk_lock *l, size_t *len)
{
    if (len) {
        *len = l ? l->key_len : 0;
    }
    return l ? l->key : "";
}

int clerk_txn_guard(struct clerk_txn *t, const struct clerk_lock *l)
{
    if (!l) {
        return CLERK_INVALID;
    }
    return clerk_txn_compare_create(t, l->key, l->key_len, CLERK_CMP_EQUAL,
                                    l->token);
}

int clerk_lock_held(struct clerk *c, const struct clerk_lock *l)
{
    if (!c || !l) {
        return CLERK_INVALID;
    }
    struct clerk_kv *kv = NULL;
    int rv = clerk_get_ex(c, l->key, l->key_len, &kv, NULL);
    if (rv == CLERK_NOT_FOUND) {
        return CLERK_NOT_HELD;
    }
    if (rv) {
        return rv;
    }
    rv = kv->create_revision == l->token ? CLERK_OK : CLERK_NOT_HELD;
    clerk_kv_free(kv);
    return rv;
}

int clerk_unlock(struct clerk *c, struct clerk_lock *l)
{
    if (!l) {
        return CLERK_OK;
    }
    int rv = c ? clerk_delete(c, l->key, l->key_len) : CLERK_INVALID;
    lock_free(l);
    return rv == CLERK_NOT_FOUND ? CLERK_OK : rv;
}

int clerk_resign(struct clerk *c, struct clerk_lock *l)
{
    return clerk_unlock(c, l);
}

int clerk_proclaim(struct clerk *c,
                   const struct clerk_lock *l,
                   const void *value,
                   size_t value_len)
{
    if (!c || !l || (!value && value_len)) {
        return CLERK_INVALID;
    }
    struct clerk_txn *t = clerk_txn_new();
    if (!t) {
        return CLERK_NOMEM;
    }
    int rv = clerk_txn_guard(t, l);
    if (!rv) {
        rv = clerk_txn_put_lease(t, CLERK_TXN_THEN, l->key, l->key_len, value,
                                 value_len, l->lease, 0);
    }
    struct clerk_txn_result *r = NULL;
    if (!rv) {
        rv = clerk_txn_commit(c, t, &r);
    }
    clerk_txn_free(t);
    if (!rv && !r->succeeded) {
        rv = CLERK_NOT_HELD;
    }
    clerk_txn_result_free(r);
    return rv;
}

int clerk_election_leader(struct clerk *c,
                          const void *name,
                          size_t name_len,
                          struct clerk_kv **out)
{
    if (out) {
        *out = NULL;
    }
    if (!c || !out || (!name && name_len)) {
        return CLERK_INVALID;
    }
    if (!name_len || name_len > MAX_NAME) {
        return CLERK_BAD_REQUEST;
    }
    char prefix[MAX_NAME + 1];
    memcpy(prefix, name, name_len);
    prefix[name_len] = '/';
    uint8_t end[MAX_NAME + 2];
    size_t end_len = clerk_prefix_end(prefix, name_len + 1, end);
    /* The candidate with the lowest create revision leads; a line is
     * short, so one read of the whole of it. */
    struct clerk_range_result *r;
    int rv = clerk_range(c, prefix, name_len + 1, end, end_len, 0, 0, &r);
    if (rv) {
        return rv;
    }
    const struct clerk_kv *best = NULL;
    for (size_t i = 0; i < r->n_kvs; i++) {
        if (in_line(r->kvs[i].key, r->kvs[i].key_len, name_len + 1) &&
            (!best || r->kvs[i].create_revision < best->create_revision)) {
            best = &r->kvs[i];
        }
    }
    if (!best) {
        clerk_range_result_free(r);
        return CLERK_NOT_FOUND;
    }
    struct clerk_kv *kv = malloc(sizeof *kv);
    char *buf = kv ? malloc(best->key_len + best->value_len + 2) : NULL;
    if (!buf) {
        free(kv);
        clerk_range_result_free(r);
        return CLERK_NOMEM;
    }
    *kv = *best;
    memcpy(buf, best->key, best->key_len + 1);
    kv->key = buf;
    kv->value = buf + best->key_len + 1;
    memcpy(kv->value, best->value, best->value_len);
    ((char *)kv->value)[best->value_len] = 0;
    clerk_range_result_free(r);
    *out = kv;
    return CLERK_OK;
}
