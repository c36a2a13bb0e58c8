/* faults_watch.c: the watch workload of the fault suite (faults.h's ext).
 *
 * Writers put, delete, delete prefixes and commit transactions of several
 * puts on three prefixes (and write outside them), while watchers record
 * every event they are given: on a prefix, a range or one key; from now or
 * from an old revision; opened before the faults or during them; each
 * first served by a different node (followers too), some with
 * require_leader. The nemesis kills (the leader, any node: every node
 * serves some watch), pauses and partitions nodes meanwhile. At the end,
 * with every fault healed, each watcher must reach the store's final
 * revision (loosely bounded), and what it was given must be exactly the
 * committed history of its range (clerk_events) from its start revision:
 * every event once, in revision order, with its key, type and value, and
 * nothing else. Every acknowledged write must be in that history too. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"

#define WF_KEYS        5   /* keys per prefix: wa/0 .. wa/4 */
#define WF_PRELOAD     60  /* writes before the watchers open */
#define WF_PROGRESS_MS 200 /* watchers' progress frames while idle */
#define WF_LIVENESS_MS                                                 \
    30000                  /* after healing: every watcher reaches the \
                              final revision within this (loose) */
#define WF_MAX_CLIENTS 128 /* client numbers over every round */

static const char *const wf_prefixes[] = {"wa/", "wb/", "wc/"};
#define WF_PREFIXES (sizeof wf_prefixes / sizeof *wf_prefixes)

/* A watcher of the workload. */
struct wf_spec
{
    const char *what;    /* for reports */
    const char *key;     /* its first key */
    const char *end;     /* range end: NULL the key alone, "" the key as a
                            prefix */
    bool old;            /* from an old revision (inside the preload) */
    bool no_delete;      /* puts only */
    bool require_leader; /* the node ends it when it has no leader */
    unsigned open_ms;    /* opened this long into the first round (0:
                            before it) */
};

static const struct wf_spec wf_specs[] = {
    {"prefix wa/ from now", "wa/", "", false, false, false, 0},
    {"prefix wb/ from now, require_leader", "wb/", "", false, false, true, 0},
    {"key wa/1 from now", "wa/1", NULL, false, false, false, 0},
    {"prefix wa/ from an old revision", "wa/", "", true, false, false, 0},
    {"range [wa/, wc/) from an old revision, require_leader", "wa/", "wc/",
     true, false, true, 0},
    {"key wc/2 from an old revision", "wc/2", NULL, true, false, false, 0},
    {"prefix wc/, puts only", "wc/", "", false, true, false, 0},
    {"prefix wb/ from now, opened during the faults", "wb/", "", false, false,
     false, 1500},
    {"every prefix from an old revision, opened during the faults", "w", "x",
     true, false, true, 3000},
};
#define WF_WATCHERS (sizeof wf_specs / sizeof *wf_specs)

/* An event: given by a watch, or read from the history. */
struct wf_event
{
    uint64_t rev;        /* its mod_revision */
    int type;            /* CLERK_EVENT_* */
    char *key;           /* key, then value, in one block */
    size_t key_len;      /* its length */
    char *value;         /* inside key's block */
    size_t value_len;    /* its length */
    uint64_t create_rev; /* the key's create revision (puts) */
    uint64_t version;    /* its version (puts) */
};

struct wf_events
{
    struct wf_event *ev; /* in the order given */
    size_t n, cap;       /* used, allocated */
};

/* A write that was acknowledged: it must be in the history. */
struct wf_write
{
    uint64_t rev;   /* the revision it made */
    int type;       /* CLERK_EVENT_* */
    char key[16];   /* the key it changed */
    char value[32]; /* its value (puts) */
};

struct wf_state;

struct wf_watcher
{
    struct wf_state *s;         /* the workload */
    const struct wf_spec *spec; /* what it watches */
    size_t node;                /* the node it asks first */
    struct clerk *ck;           /* its own handle */
    struct clerk_watch *cw;     /* the watch, once open */
    pthread_t thread;           /* running it */
    bool running;               /* thread started */
    bool done;                  /* thread over (atomic) */
    uint64_t start;             /* first revision it must give (0: not
                                   open) */
    struct wf_events got;       /* what it gave, in order */
    uint64_t rev;               /* the last batch's revision */
    uint64_t batches, empty;    /* batches, of them progress only */
    unsigned breaks;            /* times its stream broke (it resumed) */
    int ended;                  /* the error that ended it, or 0 */
    char why[600];              /* its message */
    char order[400];            /* first batch out of order, as it came */
    bool reached;               /* it reached the final revision */
    uint64_t reached_ms;        /* that long after healing */
    char last_msg[512];         /* clerk_watch_errmsg last seen */
};

struct wf_state
{
    struct world *w;                   /* the engine's test */
    uint64_t first_rev;                /* the preload's first write */
    uint64_t old_rev;                  /* old watchers start here */
    struct wf_watcher ws[WF_WATCHERS]; /* the watchers */
    volatile bool stop;                /* watchers stop now */
    uint64_t target;                   /* final revision (atomic; 0
                                          until healed) */
    uint64_t target_ms;                /* when it was set */
    pthread_mutex_t lock;              /* the fields below */
    struct wf_write *acked;            /* acknowledged writes */
    size_t n_acked, cap_acked;         /* used, allocated */
    unsigned seq[WF_MAX_CLIENTS];      /* values per client */
    uint64_t puts, deletes, txns, prefix_dels, outside; /* acknowledged */
    uint64_t unknown, refused;          /* writes not acknowledged */
    uint64_t final_rev, history_events; /* the check's */
    uint64_t slowest_ms;                /* to reach final_rev */
};

static uint64_t wf_now_ms(void)
{
    return h_now_ms();
}

/* ------------------------------------------------------------- events */

static bool events_push(struct wf_events *v, const struct clerk_event *e)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        struct wf_event *ev = realloc(v->ev, cap * sizeof *ev);
        if (!ev) {
            return false;
        }
        v->ev = ev;
        v->cap = cap;
    }
    struct wf_event *d = &v->ev[v->n];
    d->key = malloc(e->kv.key_len + e->kv.value_len + 1);
    if (!d->key) {
        return false;
    }
    memcpy(d->key, e->kv.key, e->kv.key_len);
    d->key_len = e->kv.key_len;
    d->value = d->key + d->key_len;
    if (e->kv.value_len) {
        memcpy(d->value, e->kv.value, e->kv.value_len);
    }
    d->value_len = e->kv.value_len;
    d->rev = e->kv.mod_revision;
    d->type = (int)e->type;
    d->create_rev = e->kv.create_revision;
    d->version = e->kv.version;
    v->n++;
    return true;
}

/* Add e without copying its key (v must not be freed with events_free). */
static bool events_share(struct wf_events *v, const struct wf_event *e)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        struct wf_event *ev = realloc(v->ev, cap * sizeof *ev);
        if (!ev) {
            return false;
        }
        v->ev = ev;
        v->cap = cap;
    }
    v->ev[v->n++] = *e;
    return true;
}

static void events_free(struct wf_events *v)
{
    for (size_t i = 0; i < v->n; i++) {
        free(v->ev[i].key);
    }
    free(v->ev);
    memset(v, 0, sizeof *v);
}

/* Order by (revision, key). */
static int ident_cmp(const struct wf_event *a, const struct wf_event *b)
{
    if (a->rev != b->rev) {
        return a->rev < b->rev ? -1 : 1;
    }
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(a->key, b->key, n);
    if (c) {
        return c;
    }
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

static bool same_ident(const struct wf_event *a, const struct wf_event *b)
{
    return ident_cmp(a, b) == 0;
}

/* Same change: the key, type, and for a put value, create revision and
 * version. */
static bool same_event(const struct wf_event *a, const struct wf_event *b)
{
    if (!same_ident(a, b) || a->type != b->type) {
        return false;
    }
    if (a->type != CLERK_EVENT_PUT) {
        return true;
    }
    return a->value_len == b->value_len &&
           !memcmp(a->value, b->value, a->value_len) &&
           a->create_rev == b->create_rev && a->version == b->version;
}

static const char *type_name(int type)
{
    return type == CLERK_EVENT_PUT ? "PUT" : "DELETE";
}

/* "rev 123 PUT wa/1='c3.17' (created 100, version 4)" */
static void describe(const struct wf_event *e, char *out, size_t len)
{
    if (e->type == CLERK_EVENT_PUT) {
        snprintf(out, len,
                 "rev %" PRIu64 " PUT %.*s='%.*s' (created %" PRIu64
                 ", version %" PRIu64 ")",
                 e->rev, (int)e->key_len, e->key, (int)e->value_len, e->value,
                 e->create_rev, e->version);
    } else {
        snprintf(out, len, "rev %" PRIu64 " %s %.*s", e->rev,
                 type_name(e->type), (int)e->key_len, e->key);
    }
}

/* ----------------------------------------------------------- watchers */

static bool in_range(const struct wf_spec *sp, const char *k, size_t klen)
{
    size_t kl = strlen(sp->key);
    if (!sp->end) {
        return klen == kl && !memcmp(k, sp->key, kl);
    }
    if (!*sp->end) {
        return klen >= kl && !memcmp(k, sp->key, kl);
    }
    /* [key, end) in byte order */
    struct wf_event a = {.key = (char *)k, .key_len = klen};
    struct wf_event lo = {.key = (char *)sp->key, .key_len = kl};
    struct wf_event hi = {.key = (char *)sp->end, .key_len = strlen(sp->end)};
    return ident_cmp(&a, &lo) >= 0 && ident_cmp(&a, &hi) < 0;
}

static int open_watch(struct wf_watcher *wt)
{
    const struct wf_spec *sp = wt->spec;
    struct clerk_watch_options o = {
        .start_revision = sp->old ? wt->s->old_rev : 0,
        .no_delete = sp->no_delete,
        .require_leader = sp->require_leader,
        .progress_ms = WF_PROGRESS_MS,
    };
    uint8_t end[64];
    size_t end_len = 0;
    const void *endp = NULL;
    if (sp->end && !*sp->end) {
        end_len = clerk_prefix_end(sp->key, strlen(sp->key), end);
        endp = end;
    } else if (sp->end) {
        endp = sp->end;
        end_len = strlen(sp->end);
    }
    int rv = clerk_watch_open(wt->ck, sp->key, strlen(sp->key), endp, end_len,
                              &o, &wt->cw);
    if (rv == CLERK_OK) {
        wt->start = o.start_revision ? o.start_revision
                                     : clerk_watch_revision(wt->cw) + 1;
        wt->rev = wt->start - 1;
        /* Failures while it opened are not breaks of the stream. */
        snprintf(wt->last_msg, sizeof wt->last_msg, "%s",
                 clerk_watch_errmsg(wt->cw));
    }
    return rv;
}

/* Take a batch: note the first sign of disorder as it comes (the final
 * comparison finds every problem; this says in which batch). */
static void take(struct wf_watcher *wt, const struct clerk_events_result *r)
{
    wt->batches++;
    wt->empty += r->n_events == 0;
    if (r->revision < wt->rev && !wt->order[0]) {
        snprintf(wt->order, sizeof wt->order,
                 "batch %" PRIu64 " says revision %" PRIu64
                 " after a batch that said %" PRIu64,
                 wt->batches, r->revision, wt->rev);
    }
    for (size_t i = 0; i < r->n_events; i++) {
        const struct clerk_event *e = &r->events[i];
        uint64_t mod = e->kv.mod_revision;
        if ((mod <= wt->rev || mod > r->revision) && !wt->order[0]) {
            snprintf(wt->order, sizeof wt->order,
                     "batch %" PRIu64 " (revision %" PRIu64
                     ") holds an event at revision %" PRIu64
                     " after every change up to %" PRIu64 " had been delivered",
                     wt->batches, r->revision, mod, wt->rev);
        }
        if (!events_push(&wt->got, e)) {
            wt->ended = CLERK_NOMEM;
            snprintf(wt->why, sizeof wt->why, "out of memory");
            return;
        }
    }
    if (r->revision > wt->rev) {
        wt->rev = r->revision;
    }
}

static void note_break(struct wf_watcher *wt)
{
    const char *m = clerk_watch_errmsg(wt->cw);
    if (*m && strcmp(m, wt->last_msg) != 0) {
        wt->breaks++;
        snprintf(wt->last_msg, sizeof wt->last_msg, "%s", m);
    }
}

static void watch_loop(struct wf_watcher *wt);

static void *watcher_main(void *arg)
{
    struct wf_watcher *wt = arg;
    watch_loop(wt);
    __atomic_store_n(&wt->done, true, __ATOMIC_RELEASE);
    return NULL;
}

/* Open the watch (when it opens during the faults), then take batches
 * until it reaches the final revision, ends, or is stopped. */
static void watch_loop(struct wf_watcher *wt)
{
    struct wf_state *s = wt->s;
    for (unsigned t = 0; t < wt->spec->open_ms && !s->stop; t += 20) {
        h_sleep_ms(20);
    }
    /* Opened during the faults: no node may accept it for a while. */
    while (!wt->cw && !s->stop) {
        int rv = open_watch(wt);
        if (rv == CLERK_OK) {
            break;
        }
        if (rv != CLERK_UNAVAILABLE && rv != CLERK_TIMEOUT) {
            wt->ended = rv;
            snprintf(wt->why, sizeof wt->why, "open: %s: %s",
                     clerk_error_code(rv), clerk_errmsg(wt->ck));
            return;
        }
        snprintf(wt->last_msg, sizeof wt->last_msg, "open: %s",
                 clerk_errmsg(wt->ck));
        h_sleep_ms(100);
    }
    while (wt->cw && !s->stop) {
        uint64_t target = __atomic_load_n(&s->target, __ATOMIC_ACQUIRE);
        if (target && wt->rev >= target) {
            wt->reached = true;
            wt->reached_ms = wf_now_ms() - s->target_ms;
            break;
        }
        struct clerk_events_result *r = NULL;
        int rv = clerk_watch_next(wt->cw, 200, &r);
        note_break(wt);
        if (rv == CLERK_TIMEOUT) {
            continue;
        }
        if (rv != CLERK_OK) {
            wt->ended = rv;
            snprintf(wt->why, sizeof wt->why, "%s: %s", clerk_error_code(rv),
                     clerk_watch_errmsg(wt->cw));
            break;
        }
        take(wt, r);
        clerk_events_result_free(r);
        if (wt->ended) {
            break;
        }
    }
}

/* ------------------------------------------------------------- writers */

static void record(struct wf_state *s,
                   uint64_t rev,
                   int type,
                   const char *key,
                   const char *value)
{
    pthread_mutex_lock(&s->lock);
    if (s->n_acked == s->cap_acked) {
        size_t cap = s->cap_acked ? 2 * s->cap_acked : 1024;
        struct wf_write *a = realloc(s->acked, cap * sizeof *a);
        if (!a) {
            pthread_mutex_unlock(&s->lock);
            return; /* the check only misses this write */
        }
        s->acked = a;
        s->cap_acked = cap;
    }
    struct wf_write *a = &s->acked[s->n_acked++];
    a->rev = rev;
    a->type = type;
    snprintf(a->key, sizeof a->key, "%s", key);
    snprintf(a->value, sizeof a->value, "%s", value ? value : "");
    pthread_mutex_unlock(&s->lock);
}

static void count(struct wf_state *s, uint64_t *what, int rv)
{
    pthread_mutex_lock(&s->lock);
    if (rv == CLERK_OK) {
        (*what)++;
    } else if (rv == CLERK_TIMEOUT || rv == CLERK_UNKNOWN_OUTCOME) {
        s->unknown++;
    } else {
        s->refused++;
    }
    pthread_mutex_unlock(&s->lock);
}

static void pick_key(unsigned *rng, char *key, size_t len)
{
    snprintf(key, len, "%s%u", wf_prefixes[rand_r(rng) % WF_PREFIXES],
             (unsigned)rand_r(rng) % WF_KEYS);
}

/* A value no other write has: client and sequence number. */
static void unique_value(struct wf_state *s, int client, char *v, size_t len)
{
    unsigned n = __atomic_fetch_add(&s->seq[client % WF_MAX_CLIENTS], 1,
                                    __ATOMIC_RELAXED);
    snprintf(v, len, "c%d.%u", client, n);
}

static void do_put(struct wf_state *s,
                   struct clerk *ck,
                   const char *key,
                   int client)
{
    char v[32];
    unique_value(s, client, v, sizeof v);
    struct clerk_put_result *r = NULL;
    int rv = clerk_put_ex(ck, key, strlen(key), v, strlen(v), 0, &r);
    if (rv == CLERK_OK) {
        record(s, r->revision, CLERK_EVENT_PUT, key, v);
    }
    clerk_put_result_free(r);
    count(s, &s->puts, rv);
}

static void do_delete(struct wf_state *s,
                      struct clerk *ck,
                      const char *key,
                      const char *prefix)
{
    uint8_t end[16];
    size_t end_len = prefix ? clerk_prefix_end(prefix, strlen(prefix), end) : 0;
    const char *k = prefix ? prefix : key;
    struct clerk_delete_result *r = NULL;
    int rv = clerk_delete_range(ck, k, strlen(k), prefix ? end : NULL, end_len,
                                CLERK_DELETE_PREV_KV, &r);
    if (rv == CLERK_OK) {
        for (size_t i = 0; i < r->n_prev_kvs; i++) {
            record(s, r->revision, CLERK_EVENT_DELETE, r->prev_kvs[i].key,
                   NULL);
        }
    }
    clerk_delete_result_free(r);
    count(s, prefix ? &s->prefix_dels : &s->deletes, rv);
}

/* A transaction of 2 to 4 puts on different keys (of any prefix),
 * sometimes with a delete of yet another key: one revision. */
static void do_txn(struct wf_state *s,
                   struct clerk *ck,
                   unsigned *rng,
                   int client)
{
    char keys[5][16], vals[5][32];
    size_t n = 2 + (size_t)rand_r(rng) % 3, k = 0;
    bool del = rand_r(rng) % 3 == 0;
    for (int tries = 0; k < n + del && tries < 50; tries++) {
        pick_key(rng, keys[k], sizeof keys[k]);
        bool dup = false;
        for (size_t j = 0; j < k; j++) {
            dup = dup || !strcmp(keys[j], keys[k]);
        }
        k += !dup;
    }
    struct clerk_txn *t = clerk_txn_new();
    if (!t) {
        return;
    }
    for (size_t i = 0; i < k; i++) {
        if (del && i == k - 1) {
            clerk_txn_delete(t, CLERK_TXN_THEN, keys[i], strlen(keys[i]), NULL,
                             0, CLERK_DELETE_PREV_KV);
        } else {
            unique_value(s, client, vals[i], sizeof vals[i]);
            clerk_txn_put(t, CLERK_TXN_THEN, keys[i], strlen(keys[i]), vals[i],
                          strlen(vals[i]), 0);
        }
    }
    struct clerk_txn_result *r = NULL;
    int rv = clerk_txn_commit(ck, t, &r);
    if (rv == CLERK_OK && r->succeeded) {
        for (size_t i = 0; i < r->n_responses && i < k; i++) {
            const struct clerk_txn_response *op = &r->responses[i];
            if (op->type == CLERK_OP_PUT) {
                record(s, r->revision, CLERK_EVENT_PUT, keys[i], vals[i]);
            } else if (op->type == CLERK_OP_DELETE && op->del &&
                       op->del->deleted) {
                record(s, r->revision, CLERK_EVENT_DELETE, keys[i], NULL);
            }
        }
    }
    clerk_txn_result_free(r);
    clerk_txn_free(t);
    count(s, &s->txns, rv);
}

static void wf_op(void *state, struct clerk *ck, unsigned *rng, int client)
{
    struct wf_state *s = state;
    char key[16];
    pick_key(rng, key, sizeof key);
    int dice = rand_r(rng) % 100;
    if (dice < 50) {
        do_put(s, ck, key, client);
    } else if (dice < 65) {
        do_delete(s, ck, key, NULL);
    } else if (dice < 85) {
        do_txn(s, ck, rng, client);
    } else if (dice < 88) {
        do_delete(s, ck, NULL, wf_prefixes[rand_r(rng) % WF_PREFIXES]);
    } else {
        /* Outside every watch: revisions move on without an event. */
        char k[24], v[32];
        snprintf(k, sizeof k, "zz/%d", client);
        unique_value(s, client, v, sizeof v);
        int rv = clerk_put(ck, k, strlen(k), v, strlen(v));
        count(s, &s->outside, rv);
    }
}

/* ---------------------------------------------------------------- start */

static void *wf_start(struct world *w)
{
    struct wf_state *s = calloc(1, sizeof *s);
    if (!s) {
        faults_fail(w, "out of memory");
        return NULL;
    }
    s->w = w;
    pthread_mutex_init(&s->lock, NULL);
    struct clerk *admin = faults_admin(w);
    struct h_cluster *c = faults_cluster(w);
    unsigned rng = faults_seed(w);
    /* Some history before the watchers: the old ones start in its
     * middle. */
    for (int i = 0; i < WF_PRELOAD; i++) {
        char key[16];
        pick_key(&rng, key, sizeof key);
        if (i == WF_PRELOAD / 2) {
            s->old_rev = s->n_acked ? s->acked[s->n_acked - 1].rev + 1 : 0;
        }
        if (i % 7 == 6) {
            do_delete(s, admin, key, NULL);
        } else if (i % 11 == 10) {
            do_txn(s, admin, &rng, WF_MAX_CLIENTS - 1);
        } else {
            do_put(s, admin, key, WF_MAX_CLIENTS - 1);
        }
    }
    if (s->n_acked < WF_PRELOAD / 2 || !s->old_rev) {
        faults_fail(w, "the preload was not acknowledged (%zu writes)",
                    s->n_acked);
        pthread_mutex_destroy(&s->lock);
        free(s->acked);
        free(s);
        return NULL;
    }
    s->first_rev = s->acked[0].rev;
    for (size_t i = 0; i < WF_WATCHERS; i++) {
        struct wf_watcher *wt = &s->ws[i];
        wt->s = s;
        wt->spec = &wf_specs[i];
        wt->node = i % c->n;
        char eps[1024];
        h_endpoints_of(c, UINT32_MAX, wt->node, eps, sizeof eps);
        struct clerk_options o = {.deadline_ms = 5000, .attempt_ms = 500};
        if (clerk_open(&wt->ck, eps, &o) != CLERK_OK) {
            faults_fail(w, "clerk_open for watcher %zu", i);
            continue;
        }
        if (!wt->spec->open_ms) {
            int rv = open_watch(wt);
            if (rv != CLERK_OK) {
                faults_fail(w, "watcher %zu (%s): open: %s: %s", i,
                            wt->spec->what, clerk_error_code(rv),
                            clerk_errmsg(wt->ck));
                continue;
            }
        }
        wt->running = pthread_create(&wt->thread, NULL, watcher_main, wt) == 0;
    }
    return s;
}

/* ---------------------------------------------------------------- check */

/* The store's revision, by a linearizable read. */
static uint64_t final_revision(struct clerk *admin)
{
    for (int t = 0; t < 50; t++) {
        struct clerk_range_result *r = NULL;
        if (clerk_range(admin, "zz/", 3, NULL, 0, 1, 0, &r) == CLERK_OK) {
            uint64_t rev = r->revision;
            clerk_range_result_free(r);
            return rev;
        }
        h_sleep_ms(200);
    }
    return 0;
}

/* Every change to the workload's keys from @from on. */
static int read_history(struct wf_state *s, uint64_t from, struct wf_events *h)
{
    struct clerk *admin = faults_admin(s->w);
    uint64_t rev = from;
    for (;;) {
        struct clerk_events_result *r = NULL;
        int rv = clerk_events(admin, rev, "w", 1, "x", 1, 0, &r);
        if (rv == CLERK_COMPACTED) {
            faults_fail(s->w,
                        "the history from revision %" PRIu64
                        " is compacted (kept after %" PRIu64
                        "): the check cannot be made; write less or raise "
                        "--history-revisions",
                        rev, r ? r->compact_revision : 0);
            clerk_events_result_free(r);
            return -1;
        }
        if (rv != CLERK_OK) {
            faults_fail(s->w, "reading the history from %" PRIu64 ": %s: %s",
                        rev, clerk_error_code(rv), clerk_errmsg(admin));
            return -1;
        }
        for (size_t i = 0; i < r->n_events; i++) {
            if (!events_push(h, &r->events[i])) {
                clerk_events_result_free(r);
                faults_fail(s->w, "out of memory");
                return -1;
            }
        }
        bool more = r->more;
        rev = r->next_revision;
        clerk_events_result_free(r);
        if (!more) {
            return 0;
        }
    }
}

static int sort_cmp(const void *a, const void *b)
{
    return ident_cmp(*(const struct wf_event *const *)a,
                     *(const struct wf_event *const *)b);
}

static const struct wf_event **sorted(const struct wf_events *v)
{
    const struct wf_event **p = malloc((v->n ? v->n : 1) * sizeof *p);
    if (p) {
        for (size_t i = 0; i < v->n; i++) {
            p[i] = &v->ev[i];
        }
        qsort(p, v->n, sizeof *p, sort_cmp);
    }
    return p;
}

/* Where in v is an event with e's revision and key (from 0 to before),
 * or -1. */
static long find(const struct wf_events *v,
                 const struct wf_event *e,
                 size_t before)
{
    for (size_t i = 0; i < before && i < v->n; i++) {
        if (same_ident(&v->ev[i], e)) {
            return (long)i;
        }
    }
    return -1;
}

/* What the watcher gave (d) must be the history of its range (h). */
static void compare(struct wf_state *s,
                    size_t num,
                    const struct wf_events *d,
                    const struct wf_events *h)
{
    struct wf_watcher *wt = &s->ws[num];
    size_t i = 0;
    while (i < d->n && i < h->n && same_event(&d->ev[i], &h->ev[i])) {
        i++;
    }
    if (i == d->n && i == h->n) {
        return;
    }
    /* How many are missing, twice, or not in the history at all. */
    size_t missing = 0, dups = 0, extra = 0;
    const struct wf_event **sd = sorted(d), **sh = sorted(h);
    if (sd && sh) {
        size_t a = 0, b = 0;
        while (a < d->n || b < h->n) {
            int c = a == d->n ? 1 : b == h->n ? -1 : ident_cmp(sd[a], sh[b]);
            if (c < 0) {
                extra++;
                a++;
            } else if (c > 0) {
                missing++;
                b++;
            } else {
                b++;
                a++;
                while (a < d->n && same_ident(sd[a], sd[a - 1])) {
                    dups++;
                    a++;
                }
            }
        }
    }
    free(sd);
    free(sh);
    char first[700], x[200], y[200];
    if (i < d->n && i < h->n) {
        const struct wf_event *de = &d->ev[i], *he = &h->ev[i];
        describe(de, x, sizeof x);
        describe(he, y, sizeof y);
        long at;
        if (same_ident(de, he)) {
            snprintf(first, sizeof first,
                     "event %zu given as %s, the history "
                     "has %s",
                     i, x, y);
        } else if ((at = find(d, de, i)) >= 0) {
            snprintf(first, sizeof first,
                     "DUPLICATE: event %zu given is %s, "
                     "given already as event %ld (the history has %s next)",
                     i, x, at, y);
        } else if (find(d, he, d->n) < 0) {
            snprintf(first, sizeof first,
                     "MISSING: the history's event %zu, "
                     "%s, was never given (given instead: %s)",
                     i, y, x);
        } else if (find(h, de, h->n) < 0) {
            snprintf(first, sizeof first,
                     "NOT IN THE HISTORY: event %zu "
                     "given is %s (the history has %s there)",
                     i, x, y);
        } else {
            snprintf(first, sizeof first,
                     "OUT OF ORDER: event %zu given is "
                     "%s, the history has %s there",
                     i, x, y);
        }
    } else if (i == d->n) {
        describe(&h->ev[i], y, sizeof y);
        snprintf(first, sizeof first,
                 "MISSING: the history's last %zu "
                 "events were never given, from %s",
                 h->n - i, y);
    } else {
        describe(&d->ev[i], x, sizeof x);
        snprintf(first, sizeof first,
                 "%zu events given after the history's "
                 "last, from %s",
                 d->n - i, x);
    }
    char prev[200] = "none";
    if (i) {
        describe(&d->ev[i - 1], prev, sizeof prev);
    }
    faults_fail(s->w,
                "watcher %zu (%s; first asked node %zu; from revision %" PRIu64
                ", to %" PRIu64
                ", %u breaks): gave %zu events, the history "
                "has %zu: %zu missing, %zu duplicates, %zu not in the "
                "history; first difference: %s; the last event that agreed: "
                "%s",
                num, wt->spec->what, wt->node + 1, wt->start, wt->rev,
                wt->breaks, d->n, h->n, missing, dups, extra, first, prev);
}

/* Every acknowledged write is in the history (sorted by (rev, key)). */
static void check_acked(struct wf_state *s, const struct wf_events *h)
{
    const struct wf_event **sh = sorted(h);
    if (!sh) {
        return;
    }
    size_t lost = 0;
    for (size_t i = 0; i < s->n_acked; i++) {
        const struct wf_write *a = &s->acked[i];
        struct wf_event k = {
            .rev = a->rev, .key = (char *)a->key, .key_len = strlen(a->key)};
        const struct wf_event *kp = &k;
        const struct wf_event **f =
            bsearch(&kp, sh, h->n, sizeof *sh, sort_cmp);
        bool ok = f && (*f)->type == a->type &&
                  (a->type != CLERK_EVENT_PUT ||
                   ((*f)->value_len == strlen(a->value) &&
                    !memcmp((*f)->value, a->value, (*f)->value_len)));
        if (!ok && lost++ < 3) {
            faults_fail(s->w,
                        "the acknowledged %s of %s%s%s at revision %" PRIu64
                        " is not in the history",
                        type_name(a->type), a->key, *a->value ? "=" : "",
                        a->value, a->rev);
        }
    }
    free(sh);
}

static void wf_check(void *state, struct world *w)
{
    struct wf_state *s = state;
    struct clerk *admin = faults_admin(w);
    uint64_t final = final_revision(admin);
    if (!final) {
        faults_fail(w, "no linearizable read of the final revision: %s",
                    clerk_errmsg(admin));
    }
    s->final_rev = final;
    s->target_ms = wf_now_ms();
    __atomic_store_n(&s->target, final ? final : UINT64_MAX, __ATOMIC_RELEASE);
    /* Liveness (loose): each watcher gets to the final revision. */
    for (uint64_t end = wf_now_ms() + WF_LIVENESS_MS; wf_now_ms() < end;) {
        bool all = true;
        for (size_t i = 0; i < WF_WATCHERS; i++) {
            struct wf_watcher *wt = &s->ws[i];
            all = all && (!wt->running ||
                          __atomic_load_n(&wt->done, __ATOMIC_ACQUIRE));
        }
        if (all) {
            break;
        }
        h_sleep_ms(50);
    }
    s->stop = true;
    uint64_t from = s->first_rev;
    for (size_t i = 0; i < WF_WATCHERS; i++) {
        struct wf_watcher *wt = &s->ws[i];
        if (!wt->running) {
            continue;
        }
        pthread_join(wt->thread, NULL);
        if (wt->start && wt->start < from) {
            from = wt->start;
        }
        if (wt->reached && wt->reached_ms > s->slowest_ms) {
            s->slowest_ms = wt->reached_ms;
        }
        if (wt->ended) {
            faults_fail(w, "watcher %zu (%s) ended: %s%s", i, wt->spec->what,
                        wt->why,
                        wt->ended == CLERK_COMPACTED
                            ? " (COMPACTED: the history it needed was "
                              "dropped, though far fewer revisions than "
                              "the cap were written)"
                            : "");
        } else if (!wt->start) {
            faults_fail(w, "watcher %zu (%s) never opened: %s", i,
                        wt->spec->what, wt->last_msg);
        } else if (!wt->reached && final) {
            faults_fail(w,
                        "watcher %zu (%s) at revision %" PRIu64
                        " %u ms after healing; the store is at %" PRIu64
                        "; its last failure: %s",
                        i, wt->spec->what, wt->rev, WF_LIVENESS_MS, final,
                        wt->last_msg[0] ? wt->last_msg : "none");
        }
        if (wt->order[0]) {
            faults_fail(w, "watcher %zu (%s): %s", i, wt->spec->what,
                        wt->order);
        }
    }
    /* Kills must have broken streams, or resuming was not tested. */
    const struct scenario *sc = faults_scenario(w);
    unsigned breaks = 0;
    for (size_t i = 0; i < WF_WATCHERS; i++) {
        breaks += s->ws[i].breaks;
    }
    if ((sc->nemesis == NEM_KILL_ONE || sc->nemesis == NEM_KILL_LEADER ||
         sc->nemesis == NEM_KILL_MINORITY || sc->crash) &&
        breaks == 0) {
        faults_fail(w, "nodes were killed, but no watch's stream broke");
    }
    struct wf_events h = {0};
    if (read_history(s, from, &h) != 0) {
        events_free(&h);
        return;
    }
    s->history_events = h.n;
    check_acked(s, &h);
    for (size_t i = 0; i < WF_WATCHERS; i++) {
        struct wf_watcher *wt = &s->ws[i];
        if (!wt->start) {
            continue;
        }
        /* Its range, from its start to the revision it said it had
         * delivered everything up to. */
        struct wf_events want = {0};
        for (size_t j = 0; j < h.n; j++) {
            const struct wf_event *e = &h.ev[j];
            if (e->rev >= wt->start && e->rev <= wt->rev &&
                in_range(wt->spec, e->key, e->key_len) &&
                !(wt->spec->no_delete && e->type == CLERK_EVENT_DELETE)) {
                if (!events_share(&want, e)) {
                    faults_fail(w, "out of memory");
                    break;
                }
            }
        }
        compare(s, i, &wt->got, &want);
        free(want.ev);
    }
    events_free(&h);
}

static void wf_finish(void *state, char *line, size_t len)
{
    struct wf_state *s = state;
    size_t given = 0;
    unsigned breaks = 0;
    uint64_t empty = 0;
    for (size_t i = 0; i < WF_WATCHERS; i++) {
        struct wf_watcher *wt = &s->ws[i];
        given += wt->got.n;
        breaks += wt->breaks;
        empty += wt->empty;
        clerk_watch_close(wt->cw);
        clerk_close(wt->ck);
        events_free(&wt->got);
    }
    snprintf(line, len,
             "watch: %zu watchers gave %zu events (and %" PRIu64
             " progress batches), their streams broke %u times and "
             "resumed; writes acknowledged: %" PRIu64 " puts, %" PRIu64
             " deletes, %" PRIu64 " txns, %" PRIu64 " prefix deletes, %" PRIu64
             " outside (%" PRIu64 " unknown, %" PRIu64
             " refused); history: %" PRIu64 " events to revision %" PRIu64
             "; the slowest watcher reached it %" PRIu64 " ms after healing",
             WF_WATCHERS, given, empty, breaks, s->puts, s->deletes, s->txns,
             s->prefix_dels, s->outside, s->unknown, s->refused,
             s->history_events, s->final_rev, s->slowest_ms);
    pthread_mutex_destroy(&s->lock);
    free(s->acked);
    free(s);
}

const struct faults_ext faults_watch = {
    .start = wf_start,
    .op = wf_op,
    .check = wf_check,
    .finish = wf_finish,
};
