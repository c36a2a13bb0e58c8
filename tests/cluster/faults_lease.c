/* faults_lease.c: the lease workload of the fault suite (faults.h's ext).
 *
 * Holders, each with a handle of its own, grant a short lease (2 or 3 s),
 * attach three keys to it and keep it alive, rewriting their keys all the
 * time: half with clerk_lease_keepalive_start, half by hand
 * (clerk_lease_keepalive_once), counting the lease valid for a TTL after
 * the send of their last good renewal (docs/data-model.md); the
 * nemesis kills, pauses and cuts off nodes (the leader too) meanwhile.
 * Half the holders live through the whole test; the others live a few
 * seconds, then die (their keep-alive stops, the lease is not revoked)
 * or revoke their lease, and start again with a new one. A holder whose
 * keep-alive reports its lease lost starts again too.
 *
 * The check reads the committed history of every holder's keys:
 * - a lease's keys are deleted only when the lease ended (all at one
 *   revision), never while its holder kept it alive: a delete that was
 *   committed (bounded by the return time of an operation that saw its
 *   revision, or by a put refused LEASE_NOT_FOUND) earlier than the holder
 *   died, revoked, or was told by its keep-alive that the lease was lost
 *   (less LF_LATE_MS, as late as a keep-alive may tell), or for a lease
 *   renewed by hand before the end of its validity, fails the test;
 * - a holder alive at the end, never told its lease was lost, still has
 *   its lease and every key, and none of them was ever deleted;
 * - a lease that ended (its holder died, revoked it, or was told it was
 *   lost) is gone within the TTL, two election timeouts and a generous
 *   slack after healing (LEASE_NOT_FOUND), and its keys are deleted, all
 *   at one revision (a revoked lease at the revocation's revision).
 * Leases lost while their holders kept them alive are allowed when the
 * keep-alive said so (the cluster had no leader for a TTL): counted and
 * printed with the reason. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"

#define LF_SLOTS     8   /* holders at any time; the first half steady */
#define LF_KEYS      3   /* keys attached to each lease */
#define LF_MAX_LIVES 512 /* leases over the whole test */
#define LF_PUT_MS    40  /* a holder's pause between its writes */
#define LF_LATE_MS                                                           \
    700                   /* a keep-alive tells of a lost lease at most this \
                             late (its retry pause, one last attempt with a  \
                             connect, the machine) */
#define LF_ELECTION 1000  /* 2 x kvserver's default --election-ms */
#define LF_SLACK_MS 10000 /* for the machine, on top of TTL + elections */
#define LF_MAX_OBS  (1u << 20) /* revisions seen, with when */

/* How a holder's lease ended (as the holder saw it). */
enum lf_end {
    LF_ALIVE,   /* still kept alive when the check began */
    LF_DIED,    /* its keep-alive stopped; not revoked */
    LF_REVOKED, /* revoked by its holder */
    LF_LOST,    /* its keep-alive said it was lost */
};

/* One lease of one holder. */
struct lf_life
{
    size_t slot;                /* the holder */
    unsigned num;               /* its holder's how manieth lease */
    uint64_t lease;             /* its id */
    int64_t ttl;                /* seconds it was granted with */
    bool acked[LF_KEYS];        /* a put of the key was acknowledged */
    struct clerk_keepalive *ka; /* its keep-alive (until it ends) */
    uint64_t t_start;           /* ms: keep-alive started */
    uint64_t t_end;             /* ms: died, revoke sent, lost told */
    enum lf_end end;            /* how it ended */
    int lost_reason;            /* the keep-alive's reason (LF_LOST) */
    uint64_t t_lost;            /* ms: when it was told (atomic; 0: never) */
    int revoke_rv;              /* clerk_lease_revoke's answer */
    uint64_t revoke_rev;        /* the revision it deleted the keys at */
    uint64_t t_not_found;       /* ms: a put of its came back LEASE_NOT_FOUND
                                   before it was told (0: none) */
    uint64_t puts;              /* puts acknowledged */
    bool by_hand;               /* renewed by renew_by_hand, not in the
                                   background */
    uint64_t valid_until;       /* by hand: ms, a TTL after the send of the
                                   last renewal that succeeded: the lease
                                   lives at least until then */
    uint64_t next_renew;        /* by hand: ms, the next renewal */
    uint64_t delete_rev;        /* the check's: its keys' delete revision */
    uint64_t t_gone;            /* the check's: ms after healing it was gone */
};

/* A revision and when an operation that saw it returned: the revision
 * was committed by then. */
struct lf_obs
{
    uint64_t rev; /* a revision */
    uint64_t t;   /* ms: an answer at or past it came back */
};

struct lf_state;

struct lf_slot
{
    struct lf_state *s; /* the workload */
    size_t num;         /* its number */
    struct clerk *ck;   /* its own handle */
    unsigned rng;       /* its choices */
    pthread_t thread;   /* running it */
    bool running;       /* thread started */
    unsigned lives;     /* leases it had */
};

struct lf_state
{
    struct world *w;                    /* the engine's test */
    struct lf_slot slots[LF_SLOTS];     /* the holders */
    volatile bool stop;                 /* holders stop now */
    uint64_t first_rev;                 /* the history starts here */
    uint64_t t0;                        /* ms: the workload started */
    uint64_t t_stop;                    /* ms: the holders stopped */
    uint64_t expired_early;             /* leases not revoked whose keys
                                           were deleted before then */
    uint64_t term0;                     /* the leader's term at the start */
    pthread_mutex_t lock;               /* the fields below */
    struct lf_life lives[LF_MAX_LIVES]; /* every lease */
    size_t n_lives;                     /* used */
    struct lf_obs *obs;                 /* revisions seen */
    size_t n_obs;                       /* used */
    uint64_t filler, filler_failed;     /* the engine clients' operations */
    uint64_t put_failed;                /* holders' puts not acknowledged */
    uint64_t grant_failed;              /* grants or first renewals failed */
    /* report */
    uint64_t term1;           /* the leader's term at the check */
    uint64_t deletes;         /* delete events of holders' keys */
    uint64_t longest_gone_ms; /* a dead lease's time to go */
    int64_t worst_ms;         /* of deletes of leases that died or
                                 were lost: the most a commit came
                                 before its holder let go (at most
                                 LF_LATE_MS; INT64_MIN: none) */
    int64_t worst_hand_ms;    /* the same for leases renewed by hand,
                                 to the end of their validity (at
                                 most 0) */
};

static uint64_t lf_now(void)
{
    return h_now_ms();
}

static void observe(struct lf_state *s, uint64_t rev, uint64_t t)
{
    pthread_mutex_lock(&s->lock);
    if (s->n_obs < LF_MAX_OBS) {
        s->obs[s->n_obs++] = (struct lf_obs){rev, t};
    }
    pthread_mutex_unlock(&s->lock);
}

static void key_of(const struct lf_state *s,
                   const struct lf_life *l,
                   size_t k,
                   char *out,
                   size_t len)
{
    snprintf(out, len, "lf/%03zu/k%zu", (size_t)(l - s->lives), k);
}

static const char *end_name(enum lf_end e)
{
    switch (e) {
        case LF_ALIVE:
            return "alive";
        case LF_DIED:
            return "died";
        case LF_REVOKED:
            return "revoked";
        case LF_LOST:
            return "lost";
    }
    return "?";
}

/* ------------------------------------------------------------ holders */

static void on_lost(uint64_t id, int reason, void *arg)
{
    struct lf_life *l = arg;
    (void)id;
    l->lost_reason = reason;
    __atomic_store_n(&l->t_lost, lf_now(), __ATOMIC_RELEASE);
}

/* Sleep ms unless the workload stops meanwhile; true when it stops. */
static bool lf_nap(struct lf_state *s, unsigned ms)
{
    for (unsigned t = 0; t < ms && !s->stop; t += 20) {
        h_sleep_ms(20);
    }
    return s->stop;
}

/* A put of key k of the life: 1 done, 0 not, -1 the lease is gone. */
static int put_key(struct lf_state *s, struct lf_life *l, size_t k, unsigned n)
{
    struct lf_slot *sl = &s->slots[l->slot];
    char key[32], val[32];
    key_of(s, l, k, key, sizeof key);
    snprintf(val, sizeof val, "v%u", n);
    struct clerk_put_result *r = NULL;
    int rv = clerk_put_lease(sl->ck, key, strlen(key), val, strlen(val),
                             l->lease, 0, &r);
    uint64_t t = lf_now();
    if (rv == CLERK_OK) {
        observe(s, r->revision, t);
        l->puts++;
        l->acked[k] = true;
    }
    clerk_put_result_free(r);
    if (rv == CLERK_LEASE_NOT_FOUND) {
        if (!__atomic_load_n(&l->t_lost, __ATOMIC_ACQUIRE) && !l->t_not_found) {
            l->t_not_found = t;
        }
        return -1;
    }
    if (rv != CLERK_OK) {
        pthread_mutex_lock(&s->lock);
        s->put_failed++;
        pthread_mutex_unlock(&s->lock);
    }
    return rv == CLERK_OK;
}

/* Renew a lease by hand (clerk_lease_keepalive_once), as often as the
 * background keep-alive does, counting it lost a TTL after the send of
 * the last renewal that succeeded (docs/data-model.md). */
static void renew_by_hand(struct lf_slot *sl, struct lf_life *l)
{
    uint64_t now = lf_now();
    if (now < l->next_renew) {
        return;
    }
    if (now >= l->valid_until) {
        l->lost_reason = CLERK_TIMEOUT;
        __atomic_store_n(&l->t_lost, now, __ATOMIC_RELEASE);
        return;
    }
    clerk_set_deadline(sl->ck, (unsigned)(l->valid_until - now));
    int64_t ttl = 0;
    int rv = clerk_lease_keepalive_once(sl->ck, l->lease, &ttl);
    clerk_set_deadline(sl->ck, 0);
    if (rv == CLERK_OK) {
        uint64_t ms = (uint64_t)(ttl > 0 ? ttl : 1) * 1000;
        l->valid_until = now + ms;
        l->next_renew = now + ms / 3;
    } else if (rv == CLERK_LEASE_NOT_FOUND) {
        l->lost_reason = rv;
        __atomic_store_n(&l->t_lost, lf_now(), __ATOMIC_RELEASE);
    } else {
        l->next_renew = lf_now() + 100;
    }
}

/* Begin a new life: a lease, its keep-alive, its keys. NULL when the
 * cluster could not grant one now, or the test stops. */
static struct lf_life *begin_life(struct lf_slot *sl)
{
    struct lf_state *s = sl->s;
    int64_t ttl = sl->num / 2 % 2 ? 2 : 3;
    uint64_t id = 0, sent = lf_now();
    int rv = clerk_lease_grant(sl->ck, ttl, 0, &id, &ttl);
    if (rv != CLERK_OK) {
        pthread_mutex_lock(&s->lock);
        s->grant_failed++;
        pthread_mutex_unlock(&s->lock);
        return NULL; /* a grant that happened expires by itself */
    }
    pthread_mutex_lock(&s->lock);
    if (s->n_lives == LF_MAX_LIVES) {
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    struct lf_life *l = &s->lives[s->n_lives++];
    memset(l, 0, sizeof *l);
    l->slot = sl->num;
    l->num = sl->lives++;
    l->by_hand = sl->num % 2;
    l->lease = id;
    l->ttl = ttl;
    l->t_end = UINT64_MAX;
    pthread_mutex_unlock(&s->lock);
    l->t_start = lf_now();
    if (l->by_hand) {
        /* Valid for a TTL from the grant's send, at least. */
        l->valid_until = sent + (uint64_t)ttl * 1000;
        renew_by_hand(sl, l);
        rv = l->t_lost ? l->lost_reason : CLERK_OK;
    } else {
        rv = clerk_lease_keepalive_start(sl->ck, id, on_lost, l, &l->ka);
    }
    if (rv != CLERK_OK) {
        /* It may have expired already: a life that died at once. */
        l->end = LF_DIED;
        l->t_end = l->t_start;
        pthread_mutex_lock(&s->lock);
        s->grant_failed++;
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    return l;
}

/* End a life as its holder decided (not LF_LOST). */
static void end_life(struct lf_slot *sl, struct lf_life *l, bool revoke)
{
    if (__atomic_load_n(&l->t_lost, __ATOMIC_ACQUIRE)) {
        return; /* told meanwhile: the caller ends it as lost */
    }
    l->t_end = lf_now();
    clerk_lease_keepalive_stop(l->ka);
    l->ka = NULL;
    if (__atomic_load_n(&l->t_lost, __ATOMIC_ACQUIRE)) {
        l->end = LF_LOST; /* told before it stopped */
        l->t_end = l->t_lost;
        return;
    }
    l->end = LF_DIED;
    if (revoke) {
        l->end = LF_REVOKED;
        l->revoke_rv =
            clerk_lease_revoke(sl->ck, l->lease, &l->revoke_rev, NULL);
        if (l->revoke_rv == CLERK_OK) {
            observe(sl->s, l->revoke_rev, lf_now());
        }
    }
}

static void *slot_main(void *arg)
{
    struct lf_slot *sl = arg;
    struct lf_state *s = sl->s;
    bool steady = sl->num < LF_SLOTS / 2;
    unsigned n = 0;
    while (!s->stop) {
        struct lf_life *l = begin_life(sl);
        if (!l) {
            lf_nap(s, 100);
            continue;
        }
        uint64_t until =
            steady ? UINT64_MAX
                   : lf_now() + 1500 + (unsigned)rand_r(&sl->rng) % 4500;
        bool gone = false;
        for (size_t k = 0; !s->stop; k = (k + 1) % LF_KEYS) {
            if (l->by_hand) {
                renew_by_hand(sl, l);
            }
            uint64_t lost = __atomic_load_n(&l->t_lost, __ATOMIC_ACQUIRE);
            if (lost) {
                break;
            }
            if (lf_now() >= until) {
                end_life(sl, l, rand_r(&sl->rng) % 3 == 0);
                break;
            }
            if (put_key(s, l, k, n++) < 0) {
                gone = true; /* wait for the keep-alive to tell */
            }
            lf_nap(s, LF_PUT_MS + (gone ? 100 : 0));
        }
        if (__atomic_load_n(&l->t_lost, __ATOMIC_ACQUIRE) &&
            l->end != LF_LOST) {
            if (l->ka) {
                clerk_lease_keepalive_stop(l->ka);
                l->ka = NULL;
            }
            l->end = LF_LOST;
            l->t_end = l->t_lost;
        }
        if (s->stop) {
            if (l->by_hand && l->end == LF_ALIVE) {
                /* Nobody renews it any more: it dies with the test. */
                l->end = LF_DIED;
                l->t_end = lf_now();
            }
            break; /* a life kept alive in the background stays alive */
        }
        lf_nap(s, 100 + (unsigned)rand_r(&sl->rng) % 300);
    }
    return NULL;
}

/* The engine's clients: writes elsewhere and reads of the holders' keys,
 * so that every revision soon has an answer that saw it. */
static void lf_op(void *state, struct clerk *ck, unsigned *rng, int client)
{
    struct lf_state *s = state;
    int rv;
    uint64_t rev = 0;
    if (rand_r(rng) % 2) {
        char key[24], val[24];
        snprintf(key, sizeof key, "lz/%d", client);
        snprintf(val, sizeof val, "%u", (unsigned)rand_r(rng));
        struct clerk_put_result *r = NULL;
        rv = clerk_put_ex(ck, key, strlen(key), val, strlen(val), 0, &r);
        rev = rv == CLERK_OK ? r->revision : 0;
        clerk_put_result_free(r);
    } else {
        struct clerk_range_result *r = NULL;
        rv = clerk_range(ck, "lf/", 3, "lf0", 3, 0, CLERK_RANGE_COUNT_ONLY, &r);
        rev = rv == CLERK_OK ? r->revision : 0;
        clerk_range_result_free(r);
    }
    if (rev) {
        observe(s, rev, lf_now());
    }
    pthread_mutex_lock(&s->lock);
    *(rv == CLERK_OK ? &s->filler : &s->filler_failed) += 1;
    pthread_mutex_unlock(&s->lock);
    h_sleep_ms(10);
}

/* The term of the node that leads (0: none found). */
static uint64_t leader_term(struct clerk *admin)
{
    struct clerk_node_status *st;
    size_t n;
    uint64_t term = 0;
    if (clerk_status(admin, &st, &n) == CLERK_OK) {
        for (size_t i = 0; i < n; i++) {
            if (st[i].reachable && !strcmp(st[i].role, "leader") &&
                st[i].term > term) {
                term = st[i].term;
            }
        }
        clerk_free(st);
    }
    return term;
}

/* The store's revision, by a linearizable read (0: none). */
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

static void *lf_start(struct world *w)
{
    struct lf_state *s = calloc(1, sizeof *s);
    if (!s || !(s->obs = malloc(LF_MAX_OBS * sizeof *s->obs))) {
        free(s);
        faults_fail(w, "out of memory");
        return NULL;
    }
    s->w = w;
    pthread_mutex_init(&s->lock, NULL);
    struct clerk *admin = faults_admin(w);
    s->first_rev = store_revision(admin) + 1;
    s->t0 = lf_now();
    s->worst_ms = INT64_MIN;
    s->worst_hand_ms = INT64_MIN;
    s->term0 = leader_term(admin);
    struct h_cluster *c = faults_cluster(w);
    unsigned rng = faults_seed(w);
    for (size_t i = 0; i < LF_SLOTS; i++) {
        struct lf_slot *sl = &s->slots[i];
        sl->s = s;
        sl->num = i;
        sl->rng = (unsigned)rand_r(&rng);
        char eps[1024];
        h_endpoints_of(c, UINT32_MAX, i % c->n, eps, sizeof eps);
        /* By hand: short puts, so that they never hold up a renewal. */
        struct clerk_options o = {.deadline_ms = i % 2 ? 600 : 2000,
                                  .attempt_ms = 300};
        if (clerk_open(&sl->ck, eps, &o) != CLERK_OK) {
            faults_fail(w, "clerk_open for holder %zu", i);
            continue;
        }
        sl->running = pthread_create(&sl->thread, NULL, slot_main, sl) == 0;
    }
    return s;
}

/* ---------------------------------------------------------------- check */

static int obs_cmp(const void *a, const void *b)
{
    const struct lf_obs *x = a, *y = b;
    return x->rev < y->rev ? -1 : x->rev > y->rev;
}

/* Sort the observations and make each time the earliest of those at or
 * past its revision. */
static void prepare_obs(struct lf_state *s)
{
    qsort(s->obs, s->n_obs, sizeof *s->obs, obs_cmp);
    for (size_t i = s->n_obs; i-- > 1;) {
        if (s->obs[i].t < s->obs[i - 1].t) {
            s->obs[i - 1].t = s->obs[i].t;
        }
    }
}

/* When revision rev was committed at the latest (UINT64_MAX: no answer
 * saw it), and the revision that tells (*by). */
static uint64_t committed_by(const struct lf_state *s,
                             uint64_t rev,
                             uint64_t *by)
{
    size_t lo = 0, hi = s->n_obs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->obs[mid].rev < rev) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *by = lo < s->n_obs ? s->obs[lo].rev : 0;
    return lo < s->n_obs ? s->obs[lo].t : UINT64_MAX;
}

/* An event of a holder's key. */
struct lf_event
{
    uint64_t rev;   /* its revision */
    size_t life;    /* whose key */
    size_t key;     /* which of its keys */
    bool del;       /* a delete (else a put) */
    uint64_t lease; /* a put's lease */
};

/* Every change to the holders' keys from first_rev on (*out: free). */
static int read_history(struct lf_state *s, struct lf_event **out, size_t *n)
{
    struct clerk *admin = faults_admin(s->w);
    size_t cap = 1024;
    struct lf_event *ev = malloc(cap * sizeof *ev);
    *n = 0;
    if (!ev) {
        faults_fail(s->w, "out of memory");
        return -1;
    }
    uint64_t rev = s->first_rev;
    for (;;) {
        struct clerk_events_result *r = NULL;
        int rv = clerk_events(admin, rev, "lf/", 3, "lf0", 3, 0, &r);
        if (rv != CLERK_OK) {
            faults_fail(s->w, "reading the history from %" PRIu64 ": %s: %s",
                        rev, clerk_error_code(rv), clerk_errmsg(admin));
            clerk_events_result_free(r);
            free(ev);
            return -1;
        }
        for (size_t i = 0; i < r->n_events; i++) {
            const struct clerk_event *e = &r->events[i];
            size_t life, key;
            if (sscanf(e->kv.key, "lf/%zu/k%zu", &life, &key) != 2 ||
                life >= s->n_lives || key >= LF_KEYS) {
                faults_fail(s->w, "a change of a key no holder has: %s",
                            (const char *)e->kv.key);
                continue;
            }
            if (*n == cap) {
                struct lf_event *m = realloc(ev, 2 * cap * sizeof *ev);
                if (!m) {
                    clerk_events_result_free(r);
                    free(ev);
                    faults_fail(s->w, "out of memory");
                    return -1;
                }
                ev = m;
                cap *= 2;
            }
            ev[(*n)++] =
                (struct lf_event){e->kv.mod_revision, life, key,
                                  e->type == CLERK_EVENT_DELETE, e->kv.lease};
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

static void describe_life(const struct lf_state *s,
                          const struct lf_life *l,
                          char *out,
                          size_t len)
{
    uint64_t t0 = s->t0;
    char end[120];
    if (l->end == LF_ALIVE) {
        snprintf(end, sizeof end, "alive at the check");
    } else if (l->end == LF_LOST) {
        snprintf(end, sizeof end, "told lost (%s) at +%" PRIu64 " ms",
                 clerk_error_code(l->lost_reason), l->t_end - t0);
    } else {
        snprintf(end, sizeof end, "%s at +%" PRIu64 " ms", end_name(l->end),
                 l->t_end - t0);
    }
    snprintf(out, len,
             "lease %016" PRIx64 " (holder %zu's lease %u, TTL %" PRId64
             " s, kept alive from +%" PRIu64 " ms, %s, %" PRIu64 " puts)",
             l->lease, l->slot, l->num, l->ttl, l->t_start - t0, end, l->puts);
}

/* Ended leases must be gone within TTL + elections + slack of healing. */
static void wait_gone(struct lf_state *s, uint64_t healed)
{
    struct clerk *admin = faults_admin(s->w);
    uint64_t deadline = healed + 3000 + LF_ELECTION + LF_SLACK_MS;
    for (;;) {
        bool all = true;
        for (size_t i = 0; i < s->n_lives; i++) {
            struct lf_life *l = &s->lives[i];
            if (l->end == LF_ALIVE || l->t_gone) {
                continue;
            }
            struct clerk_lease_ttl_result *r = NULL;
            int rv = clerk_lease_timetolive(admin, l->lease, false, &r);
            clerk_lease_ttl_result_free(r);
            if (rv == CLERK_LEASE_NOT_FOUND) {
                l->t_gone = lf_now() - healed + 1;
            } else {
                all = false;
            }
        }
        if (all || lf_now() >= deadline) {
            break;
        }
        h_sleep_ms(200);
    }
    for (size_t i = 0; i < s->n_lives; i++) {
        struct lf_life *l = &s->lives[i];
        if (l->end == LF_ALIVE) {
            continue;
        }
        if (!l->t_gone) {
            char d[400];
            describe_life(s, l, d, sizeof d);
            faults_fail(s->w,
                        "%s ended, but the lease is still there %" PRIu64
                        " ms after healing (TTL + 2 election timeouts + "
                        "%u ms)",
                        d, lf_now() - healed, LF_SLACK_MS);
        } else if (l->t_gone - 1 > s->longest_gone_ms) {
            s->longest_gone_ms = l->t_gone - 1;
        }
    }
}

/* Whoever is alive now still has its lease and every key on it. */
static void check_alive(struct lf_state *s)
{
    struct clerk *admin = faults_admin(s->w);
    for (size_t i = 0; i < s->n_lives; i++) {
        struct lf_life *l = &s->lives[i];
        if (l->end != LF_ALIVE) {
            continue;
        }
        char d[400];
        describe_life(s, l, d, sizeof d);
        struct clerk_lease_ttl_result *r = NULL;
        int rv = clerk_lease_timetolive(admin, l->lease, true, &r);
        bool told = __atomic_load_n(&l->t_lost, __ATOMIC_ACQUIRE) != 0;
        if (rv != CLERK_OK && !told) {
            faults_fail(s->w,
                        "%s: its keep-alive runs and never said the lease "
                        "was lost, but time-to-live says %s: %s",
                        d, clerk_error_code(rv), clerk_errmsg(admin));
        } else if (rv == CLERK_OK) {
            size_t acked = 0;
            for (size_t k = 0; k < LF_KEYS; k++) {
                acked += l->acked[k];
            }
            if (r->n_keys < acked && !told) {
                faults_fail(
                    s->w,
                    "%s: the lease has %zu keys, %zu puts were acknowledged", d,
                    r->n_keys, acked);
            }
        }
        clerk_lease_ttl_result_free(r);
    }
}

/* The history of the holders' keys against what each holder saw. */
static void check_history(struct lf_state *s,
                          const struct lf_event *ev,
                          size_t n)
{
    struct lf_life *lives = s->lives;
    uint64_t t0 = s->t0;
    for (size_t i = 0; i < n; i++) {
        const struct lf_event *e = &ev[i];
        struct lf_life *l = &lives[e->life];
        char d[400];
        if (!e->del) {
            if (e->lease != l->lease) {
                describe_life(s, l, d, sizeof d);
                faults_fail(s->w,
                            "rev %" PRIu64
                            ": PUT of key %zu of %s attached "
                            "it to lease %016" PRIx64,
                            e->rev, e->key, d, e->lease);
            }
            if (l->delete_rev) {
                describe_life(s, l, d, sizeof d);
                faults_fail(s->w,
                            "rev %" PRIu64
                            ": PUT of key %zu of %s after its "
                            "lease ended at rev %" PRIu64,
                            e->rev, e->key, d, l->delete_rev);
            }
            continue;
        }
        s->deletes++;
        if (l->delete_rev && l->delete_rev != e->rev) {
            describe_life(s, l, d, sizeof d);
            faults_fail(s->w,
                        "the keys of %s were deleted at two revisions, "
                        "%" PRIu64 " and %" PRIu64,
                        d, l->delete_rev, e->rev);
            continue;
        }
        if (l->delete_rev) {
            continue; /* its other keys, at the same revision */
        }
        l->delete_rev = e->rev;
        uint64_t by = 0, t = committed_by(s, e->rev, &by);
        const char *how = "an answer at revision";
        if (l->t_not_found && l->t_not_found < t) {
            t = l->t_not_found;
            by = 0;
            how = "a put refused LEASE_NOT_FOUND";
        }
        /* Until when the holder may count on its lease: till it let go
         * (its keep-alive may tell LF_LATE_MS late); renewed by hand,
         * exactly a TTL after the last good renewal was sent. */
        uint64_t believed = l->t_end; /* UINT64_MAX: alive */
        uint64_t told = __atomic_load_n(&l->t_lost, __ATOMIC_ACQUIRE);
        uint64_t late = LF_LATE_MS;
        if (l->end == LF_ALIVE && told) {
            believed = told; /* told during the check */
        }
        if (l->by_hand && l->end != LF_REVOKED) {
            believed = l->valid_until;
            late = 0;
        }
        s->expired_early += l->end != LF_REVOKED && t < s->t_stop;
        int64_t *worst = l->by_hand ? &s->worst_hand_ms : &s->worst_ms;
        if (t != UINT64_MAX && believed != UINT64_MAX && l->end != LF_REVOKED &&
            (int64_t)(believed - t) > *worst) {
            *worst = (int64_t)(believed - t);
        }
        if (t != UINT64_MAX &&
            (believed == UINT64_MAX || t + late < believed)) {
            describe_life(s, l, d, sizeof d);
            char by_s[64] = "";
            if (by) {
                snprintf(by_s, sizeof by_s, " %" PRIu64, by);
            }
            char why[160];
            if (believed == UINT64_MAX) {
                snprintf(why, sizeof why,
                         "its keep-alive never said it was lost");
            } else if (l->by_hand) {
                snprintf(why, sizeof why,
                         "renewed by hand, it was valid until +%" PRIu64
                         " ms (a TTL after its last good renewal was sent)",
                         believed - t0);
            } else {
                snprintf(why, sizeof why,
                         "its keep-alive said it was lost only at +%" PRIu64
                         " ms (more than %d ms later)",
                         believed - t0, LF_LATE_MS);
            }
            faults_fail(s->w,
                        "rev %" PRIu64
                        ": DELETE of key %zu of %s, committed "
                        "by +%" PRIu64
                        " ms (%s%s), while its holder kept the "
                        "lease alive: %s",
                        e->rev, e->key, d, t - t0, how, by_s, why);
        } else if (l->end == LF_ALIVE && !told) {
            describe_life(s, l, d, sizeof d);
            faults_fail(s->w,
                        "rev %" PRIu64
                        ": DELETE of key %zu of %s, alive and "
                        "never told its lease was lost",
                        e->rev, e->key, d);
        }
        if (l->end == LF_REVOKED && l->revoke_rv == CLERK_OK &&
            e->rev != l->revoke_rev) {
            describe_life(s, l, d, sizeof d);
            faults_fail(s->w,
                        "the keys of %s were deleted at rev %" PRIu64
                        ", its revocation answered rev %" PRIu64,
                        d, e->rev, l->revoke_rev);
        }
    }
    /* Each ended lease: every key it made deleted, at that revision. */
    for (size_t i = 0; i < s->n_lives; i++) {
        struct lf_life *l = &lives[i];
        if (l->end == LF_ALIVE) {
            continue;
        }
        bool put[LF_KEYS] = {false}, gone[LF_KEYS] = {false};
        for (size_t j = 0; j < n; j++) {
            if (ev[j].life == i) {
                *(ev[j].del ? &gone[ev[j].key] : &put[ev[j].key]) = true;
            }
        }
        for (size_t k = 0; k < LF_KEYS; k++) {
            if (put[k] && !gone[k]) {
                char d[400];
                describe_life(s, l, d, sizeof d);
                faults_fail(s->w,
                            "%s ended (gone %" PRIu64
                            " ms after healing), but key %zu was never "
                            "deleted (its other keys at rev %" PRIu64 ")",
                            d, l->t_gone ? l->t_gone - 1 : 0, k, l->delete_rev);
            }
        }
    }
}

static void lf_check(void *state, struct world *w)
{
    struct lf_state *s = state;
    uint64_t healed = lf_now();
    s->t_stop = healed;
    s->stop = true;
    for (size_t i = 0; i < LF_SLOTS; i++) {
        if (s->slots[i].running) {
            pthread_join(s->slots[i].thread, NULL);
            s->slots[i].running = false;
        }
    }
    if (!s->n_lives) {
        faults_fail(w, "no holder got a lease");
        return;
    }
    s->term1 = leader_term(faults_admin(w));
    wait_gone(s, healed);
    check_alive(s);
    /* Every revision up to now has an answer. */
    uint64_t now_rev = store_revision(faults_admin(w));
    if (now_rev) {
        observe(s, now_rev, lf_now());
    }
    prepare_obs(s);
    struct lf_event *ev = NULL;
    size_t n = 0;
    if (read_history(s, &ev, &n) != 0) {
        return;
    }
    check_history(s, ev, n);
    free(ev);
}

static void lf_finish(void *state, char *line, size_t len)
{
    struct lf_state *s = state;
    size_t ends[4] = {0}, lost_nf = 0, steady_alive = 0;
    for (size_t i = 0; i < s->n_lives; i++) {
        struct lf_life *l = &s->lives[i];
        clerk_lease_keepalive_stop(l->ka);
        ends[l->end]++;
        lost_nf += l->end == LF_LOST && l->lost_reason == CLERK_LEASE_NOT_FOUND;
        steady_alive +=
            l->end == LF_ALIVE && l->slot < LF_SLOTS / 2 && l->num == 0;
    }
    for (size_t i = 0; i < LF_SLOTS; i++) {
        clerk_close(s->slots[i].ck);
    }
    char worst[80] = "none", hand[80] = "none";
    if (s->worst_ms != INT64_MIN) {
        snprintf(worst, sizeof worst, "%" PRId64 " ms %s its holder let go",
                 s->worst_ms < 0 ? -s->worst_ms : s->worst_ms,
                 s->worst_ms < 0 ? "after" : "before");
    }
    if (s->worst_hand_ms != INT64_MIN) {
        snprintf(hand, sizeof hand, "%" PRId64 " ms %s its validity ended",
                 s->worst_hand_ms < 0 ? -s->worst_hand_ms : s->worst_hand_ms,
                 s->worst_hand_ms < 0 ? "after" : "before");
    }
    snprintf(line, len,
             "lease: %zu leases of %d holders: %zu kept alive in the "
             "background to the end, %zu steady ones kept from the start "
             "(through terms %" PRIu64 "..%" PRIu64
             "), %zu died (renewed "
             "by hand: also at the end), %zu revoked, %zu lost (%zu "
             "LEASE_NOT_FOUND, %zu timed out); %" PRIu64
             " key deletes in the history, %" PRIu64
             " leases ended during the faults (of a lease not revoked, the "
             "earliest delete %s; renewed by hand, %s); ended leases gone at "
             "most %" PRIu64 " ms after healing; %" PRIu64
             " holder puts and %" PRIu64 " grants not done, %" PRIu64
             " other ops (%" PRIu64 " failed)",
             s->n_lives, LF_SLOTS, ends[LF_ALIVE], steady_alive, s->term0,
             s->term1, ends[LF_DIED], ends[LF_REVOKED], ends[LF_LOST], lost_nf,
             ends[LF_LOST] - lost_nf, s->deletes, s->expired_early, worst, hand,
             s->longest_gone_ms, s->put_failed, s->grant_failed, s->filler,
             s->filler_failed);
    pthread_mutex_destroy(&s->lock);
    free(s->obs);
    free(s);
}

const struct faults_ext faults_lease = {
    .start = lf_start,
    .op = lf_op,
    .check = lf_check,
    .finish = lf_finish,
};
