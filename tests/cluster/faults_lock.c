/* faults_lock.c: the lock workload of the fault suite (faults.h's ext).
 *
 * Contenders, each with a handle and a lease of its own (2 s, kept alive
 * by clerk_lease_keepalive_start), take one lock (clerk_lock) again and
 * again while the nemesis kills, pauses and cuts off nodes. Inside, every
 * write goes to one log key, guarded by the lock (clerk_txn_guard): "begin
 * TOKEN", two "work TOKEN", "end TOKEN", then clerk_unlock. Some holders
 * are paused instead: their keep-alive stops and they sleep, holding the
 * lock, until it is not held any more (clerk_lock_held) and another holder
 * has begun, then they try "late TOKEN" and "end TOKEN", which must be
 * refused. Some are killed: they stop their keep-alive and never unlock,
 * and the next holder gets the lock when their lease expires. A guarded
 * write that failed or whose outcome is unknown ends the section (the
 * holder unlocks), as one that was refused does.
 *
 * The check replays the committed history of the lock's keys and of the
 * log key (clerk_events): the accepted guarded writes never interleave
 * (between a "begin T" and the next begin, every write has token T), each
 * begin's token is above every earlier one, and at the revision of each
 * accepted write its writer really held the lock: its key existed with
 * the token as create revision and no key ahead of it in line. Every
 * write acknowledged as accepted is in the history at its revision, none
 * that was refused is, none is twice; every token clerk_lock handed out is
 * the create revision of the holder's key. Refused writes (the fencing at
 * work) are counted; paused holders must have been fenced off. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"

#define LK_CONTENDERS 5
#define LK_TTL        2    /* seconds: the lease of every contender */
#define LK_WAIT_MS    4000 /* clerk_lock's timeout */
#define LK_PAUSE_MS                                                   \
    15000                  /* a paused holder waits this long at most \
                              for its lock to be lost */
#define LK_OTHER_MS   3000 /* then for another holder's begin */
#define LK_MAX_WRITES (1u << 16)
#define LK_MAX_SECTS  (1u << 13)
#define LK_MAX_KEYS   256 /* lock keys alive at once (the replay) */
#define LK_NAME       "lk"
#define LK_LOG        "lk-log"

enum lk_phase { PH_BEGIN, PH_WORK, PH_END, PH_LATE };
static const char *const lk_phases[] = {"begin", "work", "end", "late"};

enum lk_outcome {
    OUT_ACCEPTED, /* committed, the guard held */
    OUT_REFUSED,  /* committed, the guard failed: nothing written */
    OUT_UNKNOWN,  /* no answer: may land, at most once */
};

/* How a critical section goes. */
enum lk_kind { SK_NORMAL, SK_PAUSED, SK_KILLED };
static const char *const lk_kinds[] = {"normal", "paused", "killed"};

/* A guarded write of the log key. */
struct lk_write
{
    size_t sect;         /* its critical section */
    enum lk_phase phase; /* which */
    enum lk_outcome out; /* its answer */
    int rv;              /* the clerk's (OUT_UNKNOWN) */
    uint64_t rev;        /* OUT_ACCEPTED: its revision */
    uint64_t landed;     /* the check's: its revision in the history */
};

/* A critical section: the lock taken once. */
struct lk_sect
{
    int client;        /* the contender */
    uint64_t lease;    /* its lease */
    uint64_t token;    /* clerk_lock_token */
    enum lk_kind kind; /* how it went */
    bool saw_lost;     /* paused: clerk_lock_held said NOT_HELD */
    uint64_t wait_ms;  /* paused: till then, or till it gave up */
    bool created;      /* the check's: its key's creation found */
};

struct lk_state;

struct lk_contender
{
    struct lk_state *s;         /* the workload */
    int num;                    /* its number */
    struct clerk *ck;           /* its own handle */
    unsigned rng;               /* its choices */
    pthread_t thread;           /* running it */
    bool running;               /* thread started */
    uint64_t lease;             /* its lease (0: none) */
    struct clerk_keepalive *ka; /* keeping it alive */
    int lost;                   /* the keep-alive said it was lost (atomic) */
    unsigned sections;          /* it had */
};

struct lk_state
{
    struct world *w;                       /* the engine's test */
    struct lk_contender cs[LK_CONTENDERS]; /* the contenders */
    volatile bool stop;                    /* they stop now */
    volatile bool draining;                /* no new lock taken; the
                                              paused finish */
    unsigned pausing;                      /* paused now (atomic) */
    uint64_t first_rev;                    /* the history starts here */
    unsigned begins;                       /* begins accepted (atomic) */
    pthread_mutex_t lock;                  /* the fields below */
    struct lk_write *writes;               /* by sequence number */
    size_t n_writes;                       /* used */
    struct lk_sect *sects;                 /* every section */
    size_t n_sects;                        /* used */
    uint64_t lock_timeouts, lock_lost, lock_errors; /* clerk_lock's */
    uint64_t leases, lease_failed, leases_lost;     /* grants (+ keep-alive) */
    uint64_t filler, filler_failed;                 /* the engine clients' */
    /* report */
    uint64_t history_events; /* read back */
};

/* ---------------------------------------------------------- contenders */

static void on_lost(uint64_t id, int reason, void *arg)
{
    struct lk_contender *c = arg;
    (void)id;
    (void)reason;
    __atomic_store_n(&c->lost, 1, __ATOMIC_RELEASE);
}

static bool lk_nap(struct lk_state *s, unsigned ms)
{
    for (unsigned t = 0; t < ms && !s->stop; t += 20) {
        h_sleep_ms(20);
    }
    return s->stop;
}

/* Let the lease go without revoking it (it expires): a death. */
static void drop_lease(struct lk_contender *c)
{
    clerk_lease_keepalive_stop(c->ka);
    c->ka = NULL;
    c->lease = 0;
    __atomic_store_n(&c->lost, 0, __ATOMIC_RELEASE);
}

/* A new lease, kept alive: false when none could be had now. */
static bool new_lease(struct lk_contender *c)
{
    struct lk_state *s = c->s;
    uint64_t id = 0;
    int rv = clerk_lease_grant(c->ck, LK_TTL, 0, &id, NULL);
    if (rv == CLERK_OK) {
        rv = clerk_lease_keepalive_start(c->ck, id, on_lost, c, &c->ka);
    }
    pthread_mutex_lock(&s->lock);
    *(rv == CLERK_OK ? &s->leases : &s->lease_failed) += 1;
    pthread_mutex_unlock(&s->lock);
    c->lease = rv == CLERK_OK ? id : 0;
    return rv == CLERK_OK;
}

/* A guarded write of phase p in section sect: its outcome. */
static enum lk_outcome guarded_write(struct lk_contender *c,
                                     const struct clerk_lock *l,
                                     size_t sect,
                                     enum lk_phase p)
{
    struct lk_state *s = c->s;
    pthread_mutex_lock(&s->lock);
    if (s->n_writes == LK_MAX_WRITES) {
        pthread_mutex_unlock(&s->lock);
        return OUT_UNKNOWN; /* (never sent) */
    }
    size_t seq = s->n_writes++;
    struct lk_write *wr = &s->writes[seq];
    memset(wr, 0, sizeof *wr);
    wr->sect = sect;
    wr->phase = p;
    wr->out = OUT_UNKNOWN;
    pthread_mutex_unlock(&s->lock);
    char val[64];
    snprintf(val, sizeof val, "T%" PRIu64 " %s w%zu", clerk_lock_token(l),
             lk_phases[p], seq);
    struct clerk_txn *t = clerk_txn_new();
    if (!t) {
        return OUT_UNKNOWN;
    }
    int rv = clerk_txn_guard(t, l);
    if (!rv) {
        rv = clerk_txn_put(t, CLERK_TXN_THEN, LK_LOG, strlen(LK_LOG), val,
                           strlen(val), 0);
    }
    struct clerk_txn_result *r = NULL;
    if (!rv) {
        rv = clerk_txn_commit(c->ck, t, &r);
    }
    clerk_txn_free(t);
    enum lk_outcome out = OUT_UNKNOWN;
    uint64_t rev = 0;
    if (rv == CLERK_OK) {
        out = r->succeeded ? OUT_ACCEPTED : OUT_REFUSED;
        rev = r->revision;
    }
    clerk_txn_result_free(r);
    pthread_mutex_lock(&s->lock);
    wr->out = out;
    wr->rv = rv;
    wr->rev = out == OUT_ACCEPTED ? rev : 0;
    pthread_mutex_unlock(&s->lock);
    if (out == OUT_ACCEPTED && p == PH_BEGIN) {
        __atomic_fetch_add(&s->begins, 1, __ATOMIC_RELEASE);
    }
    return out;
}

/* A holder paused past its lease: its keep-alive stops, it waits until
 * the lock is lost and another holder has begun, then writes again. */
static void pause_holder(struct lk_contender *c,
                         const struct clerk_lock *l,
                         size_t sect)
{
    struct lk_state *s = c->s;
    unsigned begins = __atomic_load_n(&s->begins, __ATOMIC_ACQUIRE);
    drop_lease(c);
    bool lost = false;
    uint64_t t0 = h_now_ms();
    for (uint64_t end = t0 + LK_PAUSE_MS;
         !s->stop && !lost && h_now_ms() < end;) {
        lk_nap(s, 200);
        lost = clerk_lock_held(c->ck, l) == CLERK_NOT_HELD;
    }
    uint64_t waited = h_now_ms() - t0;
    for (unsigned t = 0;
         t < LK_OTHER_MS && !s->stop && !s->draining &&
         __atomic_load_n(&s->begins, __ATOMIC_ACQUIRE) == begins;
         t += 20) {
        h_sleep_ms(20);
    }
    pthread_mutex_lock(&s->lock);
    s->sects[sect].saw_lost = lost;
    s->sects[sect].wait_ms = waited;
    pthread_mutex_unlock(&s->lock);
    if (guarded_write(c, l, sect, PH_LATE) == OUT_ACCEPTED) {
        guarded_write(c, l, sect, PH_END);
    }
}

/* One critical section, from the lock taken to its end. */
static void section(struct lk_contender *c, struct clerk_lock *l)
{
    struct lk_state *s = c->s;
    enum lk_kind kind = SK_NORMAL;
    unsigned dice = (unsigned)rand_r(&c->rng) % 8;
    if ((c->num == 0 && c->sections == 0) || dice == 0) {
        kind = SK_PAUSED;
    } else if ((c->num == 1 && c->sections == 0) || dice == 1) {
        kind = SK_KILLED;
    }
    c->sections++;
    pthread_mutex_lock(&s->lock);
    if (s->draining) {
        kind = SK_NORMAL; /* the check waits for the paused, not for new */
    } else if (kind == SK_PAUSED) {
        /* Under the lock: the check sees it once it drains. */
        __atomic_fetch_add(&s->pausing, 1, __ATOMIC_ACQ_REL);
    }
    if (s->n_sects == LK_MAX_SECTS) {
        if (kind == SK_PAUSED) {
            __atomic_fetch_sub(&s->pausing, 1, __ATOMIC_ACQ_REL);
        }
        pthread_mutex_unlock(&s->lock);
        clerk_unlock(c->ck, l);
        return;
    }
    size_t sect = s->n_sects++;
    s->sects[sect] = (struct lk_sect){.client = c->num,
                                      .lease = c->lease,
                                      .token = clerk_lock_token(l),
                                      .kind = kind};
    pthread_mutex_unlock(&s->lock);
    bool begun = guarded_write(c, l, sect, PH_BEGIN) == OUT_ACCEPTED;
    if (begun && kind == SK_PAUSED) {
        pause_holder(c, l, sect);
    } else if (kind == SK_PAUSED) {
        pthread_mutex_lock(&s->lock);
        s->sects[sect].kind = SK_NORMAL; /* ended at its begin */
        pthread_mutex_unlock(&s->lock);
    }
    if (kind == SK_PAUSED) {
        __atomic_fetch_sub(&s->pausing, 1, __ATOMIC_ACQ_REL);
    }
    if (!begun || kind == SK_PAUSED) {
        clerk_unlock(c->ck, l); /* a paused one's key is gone (or goes) */
        return;
    }
    switch (kind) {
        case SK_PAUSED:
            return;
        case SK_KILLED:
            if (rand_r(&c->rng) % 2) {
                guarded_write(c, l, sect, PH_WORK);
            }
            drop_lease(c);
            clerk_unlock(NULL, l); /* frees it; the key stays */
            return;
        case SK_NORMAL:
            break;
    }
    for (int i = 0; i < 2; i++) {
        if (guarded_write(c, l, sect, PH_WORK) != OUT_ACCEPTED) {
            clerk_unlock(c->ck, l);
            return;
        }
        h_sleep_ms((unsigned)rand_r(&c->rng) % 30);
    }
    guarded_write(c, l, sect, PH_END);
    clerk_unlock(c->ck, l);
}

static void *contender_main(void *arg)
{
    struct lk_contender *c = arg;
    struct lk_state *s = c->s;
    while (!s->stop && !s->draining) {
        if (c->lease && __atomic_load_n(&c->lost, __ATOMIC_ACQUIRE)) {
            pthread_mutex_lock(&s->lock);
            s->leases_lost++;
            pthread_mutex_unlock(&s->lock);
            drop_lease(c);
        }
        if (!c->lease && !new_lease(c)) {
            lk_nap(s, 100);
            continue;
        }
        struct clerk_lock *l = NULL;
        int rv = clerk_lock(c->ck, LK_NAME, strlen(LK_NAME), c->lease,
                            LK_WAIT_MS, &l);
        if (rv != CLERK_OK) {
            pthread_mutex_lock(&s->lock);
            *(rv == CLERK_TIMEOUT           ? &s->lock_timeouts
              : rv == CLERK_LEASE_NOT_FOUND ? &s->lock_lost
                                            : &s->lock_errors) += 1;
            pthread_mutex_unlock(&s->lock);
            if (rv == CLERK_LEASE_NOT_FOUND) {
                drop_lease(c);
            } else if (rv != CLERK_TIMEOUT) {
                lk_nap(s, 50);
            }
            continue;
        }
        section(c, l);
    }
    drop_lease(c);
    return NULL;
}

/* The engine's clients: writes elsewhere, so the log is never idle. */
static void lk_op(void *state, struct clerk *ck, unsigned *rng, int client)
{
    struct lk_state *s = state;
    char key[24], val[24];
    snprintf(key, sizeof key, "lz/%d", client);
    snprintf(val, sizeof val, "%u", (unsigned)rand_r(rng));
    int rv = clerk_put(ck, key, strlen(key), val, strlen(val));
    pthread_mutex_lock(&s->lock);
    *(rv == CLERK_OK ? &s->filler : &s->filler_failed) += 1;
    pthread_mutex_unlock(&s->lock);
    h_sleep_ms(20);
}

static uint64_t store_revision(struct clerk *admin)
{
    for (int t = 0; t < 50; t++) {
        struct clerk_range_result *r = NULL;
        if (clerk_range(admin, "zz", 2, NULL, 0, 1, 0, &r) == CLERK_OK) {
            uint64_t rev = r->revision;
            clerk_range_result_free(r);
            return rev;
        }
        h_sleep_ms(200);
    }
    return 0;
}

static void *lk_start(struct world *w)
{
    struct lk_state *s = calloc(1, sizeof *s);
    if (!s || !(s->writes = calloc(LK_MAX_WRITES, sizeof *s->writes)) ||
        !(s->sects = calloc(LK_MAX_SECTS, sizeof *s->sects))) {
        if (s) {
            free(s->writes);
        }
        free(s);
        faults_fail(w, "out of memory");
        return NULL;
    }
    s->w = w;
    pthread_mutex_init(&s->lock, NULL);
    s->first_rev = store_revision(faults_admin(w)) + 1;
    struct h_cluster *cl = faults_cluster(w);
    unsigned rng = faults_seed(w);
    for (int i = 0; i < LK_CONTENDERS; i++) {
        struct lk_contender *c = &s->cs[i];
        c->s = s;
        c->num = i;
        c->rng = (unsigned)rand_r(&rng);
        char eps[1024];
        h_endpoints_of(cl, UINT32_MAX, (size_t)i % cl->n, eps, sizeof eps);
        struct clerk_options o = {.deadline_ms = 3000, .attempt_ms = 300};
        if (clerk_open(&c->ck, eps, &o) != CLERK_OK) {
            faults_fail(w, "clerk_open for contender %d", i);
            continue;
        }
        c->running = pthread_create(&c->thread, NULL, contender_main, c) == 0;
    }
    return s;
}

/* ---------------------------------------------------------------- check */

/* An event of the lock's keys or the log key. */
struct lk_ev
{
    uint64_t rev;    /* its revision */
    bool put;        /* a put (else a delete) */
    uint64_t create; /* a put's create revision */
    char key[40];    /* the key */
    char value[64];  /* a put's value */
};

/* A lock key in line during the replay. */
struct lk_key
{
    char key[40];    /* NAME/LEASE */
    uint64_t create; /* its create revision: its place, the token */
};

static void describe_write(const struct lk_state *s,
                           size_t seq,
                           char *out,
                           size_t len)
{
    const struct lk_write *wr = &s->writes[seq];
    const struct lk_sect *se = &s->sects[wr->sect];
    const char *out_s = wr->out == OUT_ACCEPTED  ? "accepted"
                        : wr->out == OUT_REFUSED ? "refused"
                                                 : clerk_error_code(wr->rv);
    snprintf(out, len,
             "'%s T%" PRIu64 " w%zu' of contender %d (lease %016" PRIx64
             ", a %s section; answered %s)",
             lk_phases[wr->phase], se->token, seq, se->client, se->lease,
             lk_kinds[se->kind], out_s);
}

/* Replay the lock's keys and the log key's history. */
static void replay(struct lk_state *s, const struct lk_ev *h, size_t n)
{
    struct world *w = s->w;
    struct lk_key line[LK_MAX_KEYS];
    size_t n_line = 0;
    uint64_t cur = 0, cur_rev = 0, max_token = 0;
    char d[400];
    for (size_t i = 0; i < n; i++) {
        const struct lk_ev *e = &h[i];
        const char *key = e->key;
        uint64_t rev = e->rev;
        if (!strncmp(key, LK_NAME "/", strlen(LK_NAME) + 1)) {
            size_t at = 0;
            while (at < n_line && strcmp(line[at].key, key)) {
                at++;
            }
            if (!e->put) {
                if (at < n_line) {
                    line[at] = line[--n_line];
                }
                continue;
            }
            if (at == n_line && n_line < LK_MAX_KEYS) {
                snprintf(line[n_line].key, sizeof line[n_line].key, "%s", key);
                line[n_line++].create = e->create;
            } else if (at < n_line) {
                line[at].create = e->create;
            }
            /* The section that took the lock with this key. */
            for (size_t k = 0; k < s->n_sects; k++) {
                struct lk_sect *se = &s->sects[k];
                char mine[40];
                snprintf(mine, sizeof mine, LK_NAME "/%016" PRIx64, se->lease);
                if (se->token == e->create && !strcmp(mine, key)) {
                    se->created = true;
                }
            }
            continue;
        }
        if (strcmp(key, LK_LOG) || !e->put) {
            faults_fail(w, "rev %" PRIu64 ": %s of %s: nobody writes that", rev,
                        e->put ? "PUT" : "DELETE", key);
            continue;
        }
        uint64_t token = 0;
        char phase[16];
        size_t seq = 0;
        if (sscanf(e->value, "T%" SCNu64 " %15s w%zu", &token, phase, &seq) !=
                3 ||
            seq >= s->n_writes) {
            faults_fail(w, "rev %" PRIu64 ": %s='%s': no contender wrote that",
                        rev, key, e->value);
            continue;
        }
        struct lk_write *wr = &s->writes[seq];
        const struct lk_sect *se = &s->sects[wr->sect];
        describe_write(s, seq, d, sizeof d);
        if (wr->landed) {
            faults_fail(w,
                        "rev %" PRIu64
                        ": %s is in the history twice (first "
                        "at rev %" PRIu64 ")",
                        rev, d, wr->landed);
            continue;
        }
        wr->landed = rev;
        if (wr->out == OUT_REFUSED) {
            faults_fail(w,
                        "rev %" PRIu64
                        ": %s is in the history, but its guard "
                        "failed",
                        rev, d);
        } else if (wr->out == OUT_ACCEPTED && wr->rev != rev) {
            faults_fail(w,
                        "rev %" PRIu64
                        ": %s is in the history, but was "
                        "answered at rev %" PRIu64,
                        rev, d, wr->rev);
        }
        /* Its writer held the lock: its key in line, first. */
        const struct lk_key *own = NULL, *ahead = NULL;
        for (size_t k = 0; k < n_line; k++) {
            if (line[k].create == token) {
                own = &line[k];
            } else if (line[k].create < token &&
                       (!ahead || line[k].create < ahead->create)) {
                ahead = &line[k];
            }
        }
        char mine[40];
        snprintf(mine, sizeof mine, LK_NAME "/%016" PRIx64, se->lease);
        if (!own || strcmp(own->key, mine)) {
            faults_fail(w,
                        "rev %" PRIu64
                        ": %s landed, but its lock key %s "
                        "created at rev %" PRIu64
                        " was not there (%zu keys "
                        "in line)",
                        rev, d, mine, token, n_line);
        } else if (ahead) {
            faults_fail(w,
                        "rev %" PRIu64 ": %s landed, but %s (token %" PRIu64
                        ") was ahead of it in line: it did not hold the lock",
                        rev, d, ahead->key, ahead->create);
        }
        /* No interleaving; tokens grow from one section to the next. */
        if (wr->phase == PH_BEGIN) {
            if (token <= max_token) {
                faults_fail(w,
                            "rev %" PRIu64
                            ": %s: its token is not above "
                            "T%" PRIu64
                            " of the section before (begun at "
                            "rev %" PRIu64 ")",
                            rev, d, max_token, cur_rev);
            }
            cur = token;
            cur_rev = rev;
            max_token = token > max_token ? token : max_token;
        } else if (token != cur) {
            faults_fail(w,
                        "rev %" PRIu64
                        ": %s INTERLEAVES with the section of "
                        "T%" PRIu64 " begun at rev %" PRIu64,
                        rev, d, cur, cur_rev);
        }
    }
}

/* Every change to the lock's keys and the log key from first_rev on
 * (*out: free). */
static int read_history(struct lk_state *s, struct lk_ev **out, size_t *n)
{
    struct clerk *admin = faults_admin(s->w);
    size_t cap = 1024;
    struct lk_ev *ev = malloc(cap * sizeof *ev);
    *n = 0;
    if (!ev) {
        faults_fail(s->w, "out of memory");
        return -1;
    }
    uint64_t rev = s->first_rev;
    for (;;) {
        struct clerk_events_result *r = NULL;
        int rv =
            clerk_events(admin, rev, LK_NAME, strlen(LK_NAME), "ll", 2, 0, &r);
        if (rv != CLERK_OK) {
            faults_fail(s->w, "reading the history from %" PRIu64 ": %s: %s",
                        rev, clerk_error_code(rv), clerk_errmsg(admin));
            clerk_events_result_free(r);
            free(ev);
            return -1;
        }
        for (size_t i = 0; i < r->n_events; i++) {
            const struct clerk_event *e = &r->events[i];
            if (*n == cap) {
                struct lk_ev *m = realloc(ev, 2 * cap * sizeof *ev);
                if (!m) {
                    clerk_events_result_free(r);
                    free(ev);
                    faults_fail(s->w, "out of memory");
                    return -1;
                }
                ev = m;
                cap *= 2;
            }
            struct lk_ev *d = &ev[(*n)++];
            d->rev = e->kv.mod_revision;
            d->put = e->type == CLERK_EVENT_PUT;
            d->create = e->kv.create_revision;
            snprintf(d->key, sizeof d->key, "%.*s", (int)e->kv.key_len,
                     (const char *)e->kv.key);
            snprintf(d->value, sizeof d->value, "%.*s", (int)e->kv.value_len,
                     (const char *)e->kv.value);
        }
        bool more = r->more;
        rev = r->next_revision;
        clerk_events_result_free(r);
        if (!more) {
            *out = ev;
            return 0;
        }
    }
}

static void lk_check(void *state, struct world *w)
{
    struct lk_state *s = state;
    /* Paused holders finish on the healed cluster: their lease expires,
     * another takes the lock, their late writes are refused. */
    pthread_mutex_lock(&s->lock);
    s->draining = true;
    pthread_mutex_unlock(&s->lock);
    for (unsigned t = 0;
         t < LK_PAUSE_MS && __atomic_load_n(&s->pausing, __ATOMIC_ACQUIRE);
         t += 50) {
        h_sleep_ms(50);
    }
    s->stop = true;
    for (int i = 0; i < LK_CONTENDERS; i++) {
        if (s->cs[i].running) {
            pthread_join(s->cs[i].thread, NULL);
            s->cs[i].running = false;
        }
    }
    struct lk_ev *ev = NULL;
    size_t n = 0;
    if (read_history(s, &ev, &n) != 0) {
        return;
    }
    s->history_events = n;
    replay(s, ev, n);
    free(ev);
    /* What the contenders were told against what landed. */
    char d[400];
    size_t lost_acks = 0;
    for (size_t i = 0; i < s->n_writes; i++) {
        struct lk_write *wr = &s->writes[i];
        if (wr->out == OUT_ACCEPTED && !wr->landed && lost_acks++ < 5) {
            describe_write(s, i, d, sizeof d);
            faults_fail(w,
                        "%s was accepted at rev %" PRIu64
                        " but is not in the history",
                        d, wr->rev);
        }
    }
    size_t paused = 0, fenced_late = 0;
    for (size_t i = 0; i < s->n_sects; i++) {
        struct lk_sect *se = &s->sects[i];
        if (!se->created) {
            faults_fail(w,
                        "contender %d took the lock with token %" PRIu64
                        ", but its key " LK_NAME "/%016" PRIx64
                        " was not created at that revision",
                        se->client, se->token, se->lease);
        }
        paused += se->kind == SK_PAUSED;
    }
    for (size_t i = 0; i < s->n_writes; i++) {
        fenced_late +=
            s->writes[i].phase == PH_LATE && s->writes[i].out == OUT_REFUSED;
    }
    if (s->n_sects < 3) {
        faults_fail(w, "only %zu critical sections in the whole test",
                    s->n_sects);
    }
    if (paused && !fenced_late) {
        faults_fail(w,
                    "%zu holders were paused past their lease, but no late "
                    "write was refused: fencing was not tested",
                    paused);
    }
}

static void lk_finish(void *state, char *line, size_t len)
{
    struct lk_state *s = state;
    size_t kinds[3] = {0}, outs[3][4] = {{0}}, saw_lost = 0, unk_landed = 0;
    uint64_t longest = 0;
    for (size_t i = 0; i < s->n_sects; i++) {
        const struct lk_sect *se = &s->sects[i];
        kinds[se->kind]++;
        saw_lost += se->saw_lost;
        if (se->saw_lost && se->wait_ms > longest) {
            longest = se->wait_ms;
        }
        if (se->kind == SK_PAUSED && !se->saw_lost) {
            printf("\n  lock: contender %d paused holding T%" PRIu64
                   " (lease %016" PRIx64 ") still held the lock %" PRIu64
                   " ms after its keep-alive stopped",
                   se->client, se->token, se->lease, se->wait_ms);
        }
    }
    for (size_t i = 0; i < s->n_writes; i++) {
        outs[s->writes[i].out][s->writes[i].phase]++;
        unk_landed += s->writes[i].out == OUT_UNKNOWN && s->writes[i].landed;
    }
    for (int i = 0; i < LK_CONTENDERS; i++) {
        drop_lease(&s->cs[i]);
        clerk_close(s->cs[i].ck);
    }
    size_t acc = 0, ref = 0, unk = 0;
    for (int p = 0; p < 4; p++) {
        acc += outs[OUT_ACCEPTED][p];
        ref += outs[OUT_REFUSED][p];
        unk += outs[OUT_UNKNOWN][p];
    }
    snprintf(
        line, len,
        "lock: %d contenders, %zu critical sections (%zu normal, %zu "
        "paused past their lease, %zu of them saw it lost, at most %" PRIu64
        " ms after their keep-alive stopped, %zu killed); "
        "guarded writes: %zu accepted, %zu refused (fenced: %zu begin, "
        "%zu work, %zu end, %zu late), %zu unknown (%zu of them landed); "
        "%" PRIu64 " events replayed; clerk_lock: %" PRIu64
        " timeouts, %" PRIu64 " leases lost while waiting, %" PRIu64
        " errors; %" PRIu64 " leases (%" PRIu64
        " lost by the keep-alive, "
        "%" PRIu64 " not granted); %" PRIu64 " other writes (%" PRIu64
        " failed)",
        LK_CONTENDERS, s->n_sects, kinds[SK_NORMAL], kinds[SK_PAUSED], saw_lost,
        longest, kinds[SK_KILLED], acc, ref, outs[OUT_REFUSED][PH_BEGIN],
        outs[OUT_REFUSED][PH_WORK], outs[OUT_REFUSED][PH_END],
        outs[OUT_REFUSED][PH_LATE], unk, unk_landed, s->history_events,
        s->lock_timeouts, s->lock_lost, s->lock_errors, s->leases,
        s->leases_lost, s->lease_failed, s->filler, s->filler_failed);
    pthread_mutex_destroy(&s->lock);
    free(s->writes);
    free(s->sects);
    free(s);
}

const struct faults_ext faults_lock = {
    .start = lk_start,
    .op = lk_op,
    .check = lk_check,
    .finish = lk_finish,
};
