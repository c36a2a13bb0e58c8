/* faults.c: the engine of the fault-injection suite (see faults.h). */
#include <inttypes.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "cunit_main.h"
#include "faults.h"

faults_packet_cut_fn faults_packet_cut;
faults_packet_drops_fn faults_packet_drops;

#define MAX_CLIENTS    32
#define NEMESIS_MIN_MS 1000 /* the lab's partition period: 1-1.2 s */
#define NEMESIS_MAX_MS 1200

bool faults_full_tier(void)
{
    const char *t = getenv("RAFTKV_FAULT_TIER");
    return t && !strcmp(t, "full");
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------ the world */

/* Outcome of one append, for the exactly-once check. */
enum append_state {
    AP_NONE = 0,
    AP_ACKED,    /* acknowledged: present exactly once */
    AP_UNKNOWN,  /* outcome unknown: at most once */
    AP_REFUSED,  /* not applied (UNAVAILABLE): never */
    AP_NO_SPACE, /* not applied (NO_SPACE): never */
};

struct client
{
    struct world *w;
    int num;                      /* global client number, unique per test */
    struct clerk *ck;             /* its own handle */
    unsigned rng;                 /* its choices */
    uint8_t *appends;             /* enum append_state by sequence number */
    size_t n_appends;             /* sequence numbers used */
    size_t cap;                   /* allocated */
    char own_key[32];             /* its key unless random_keys */
    bool reader;                  /* only reads, so it sticks to any node */
    pthread_t thread;             /* running it */
    uint64_t last_revision;       /* highest store revision it was served at */
    unsigned seq;                 /* values it wrote (WL_TXN: unique values) */
    bool seen_found[MAX_CLIENTS]; /* WL_TXN: each key, last range */
    uint64_t seen_version[MAX_CLIENTS]; /* its version then */
    char seen_value[MAX_CLIENTS][32];   /* its value then */
};

struct world
{
    const struct scenario *sc;
    struct h_cluster c;
    struct clerk *admin; /* fault commands and status */
    pthread_mutex_t lock;
    bool link[H_MAX_NODES][H_MAX_NODES]; /* i's calls to j get through */
    bool alive[H_MAX_NODES];             /* process running */
    bool paused[H_MAX_NODES];            /* SIGSTOPped */
    bool gone[H_MAX_NODES];  /* retired for good: removed from the cluster,
                                or its host lost (faults_retire) */
    struct lc_history *hist; /* every call and return */
    unsigned rng;            /* the nemesis's choices */
    volatile bool stop;      /* clients stop */
    int64_t end_ns;          /* the round ends then */
    int finished;            /* clients done (atomic) */
    struct client clients[MAX_CLIENTS * 3];
    size_t n_clients; /* all rounds */
    char keys[MAX_CLIENTS][32];
    size_t n_keys;       /* random_keys: the shared keys */
    bool failed;         /* a check failed: keep the directory */
    unsigned n_failures; /* messages printed */
    /* report */
    uint64_t ok, unknown, refused, errors;
    uint64_t kills, pauses, partitions;
    uint64_t inj_cut, inj_drop_req, inj_drop_rep, inj_delay, inj_dup,
        inj_reorder;
    uint64_t packet_drops; /* packets the filter dropped (netns) */
    uint64_t power_losses; /* nodes whose power was cut (diskfault) */
    uint64_t at_write;     /* of them, at a log write or sync */
    uint64_t disk_fulls;   /* disks filled (NEM_DISK_FULL) */
    uint64_t sync_fails;   /* syncs made to fail (NEM_SYNC_FAIL) */
    uint64_t tr_crashes;   /* power losses in the nodes' traces */
    uint64_t tr_enospc;    /* operations failed with ENOSPC in them */
    uint64_t tr_eio;       /* operations failed with EIO in them */
    size_t bank_total;     /* WL_BANK: what the balances sum to */
    uint64_t ranges;       /* ranges over the workload's keys served */
    uint64_t sums_checked; /* WL_BANK: of them, with the total checked */
    uint64_t transfers;    /* WL_BANK: transfers made; WL_TXN: txns that
                              succeeded */
    uint64_t conflicts;    /* WL_BANK: transfers retried after a compare
                              failed; WL_TXN: txns that failed */
    uint64_t read_only;    /* WL_TXN: txns with no write answered */
    unsigned seed;         /* rng's first value */
    void *ext;             /* sc->ext's state */
    void *nem;             /* sc->nem's state */
};

static void fail(struct world *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fail(struct world *w, const char *fmt, ...)
{
    char msg[1500];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (w->n_failures++ < 10) {
        fprintf(stderr, "%s: FAILED: %s\n", w->sc->name, msg);
    } else if (w->n_failures == 11) {
        fprintf(stderr, "%s: (more failures not shown)\n", w->sc->name);
    }
    w->failed = true;
}

void faults_fail(struct world *w, const char *fmt, ...)
{
    char msg[1500];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail(w, "%s", msg);
}

struct h_cluster *faults_cluster(struct world *w)
{
    return &w->c;
}

struct clerk *faults_admin(struct world *w)
{
    return w->admin;
}

unsigned faults_seed(struct world *w)
{
    return w->seed;
}

const struct scenario *faults_scenario(struct world *w)
{
    return w->sc;
}

/* ----------------------------------------------------------- the faults */

/* The rule every link and client gets when the network is unreliable. */
static struct clerk_fault base_rule(const struct world *w)
{
    struct clerk_fault f = {0};
    if (w->sc->unreliable) {
        f.drop_request = 0.1;
        f.drop_reply = 0.1;
        f.delay_min_ms = 0;
        f.delay_max_ms = 27;
    }
    if (w->sc->duplicate) {
        f.duplicate = 0.1;
    }
    if (w->sc->reorder) {
        f.reorder = 2.0 / 3.0;
        f.reorder_min_ms = 200;
        f.reorder_max_ms = 2200;
    }
    return f;
}

/* Add up what a node's rules did before they are replaced. */
static void count_injected(struct world *w,
                           const struct clerk_fault *r,
                           size_t n)
{
    for (size_t i = 0; i < n; i++) {
        w->inj_cut += r[i].n_cut;
        w->inj_drop_req += r[i].n_dropped_requests;
        w->inj_drop_rep += r[i].n_dropped_replies;
        w->inj_delay += r[i].n_delayed;
        w->inj_dup += r[i].n_duplicated;
        w->inj_reorder += r[i].n_reordered;
    }
}

/* Add up what node i's rules in force did; returns clerk_fault's result. */
static int read_counts(struct world *w, size_t i)
{
    struct clerk_fault *now = NULL;
    size_t n = 0;
    int rv = clerk_fault(w->admin, i, false, NULL, 0, 0, &now, &n);
    if (rv == CLERK_OK) {
        count_injected(w, now, n);
        clerk_free(now);
    }
    return rv;
}

/* The peer a node said it does not have ("node 3 has no peer 7"), or 0:
 * a member that node has not heard of yet, or one it has dropped. */
static uint64_t no_such_peer(const char *msg)
{
    const char *p = strstr(msg, "has no peer ");
    return p ? strtoull(p + strlen("has no peer "), NULL, 10) : 0;
}

/* Give node i its rules for the current links (caller holds the lock). */
static void apply_node(struct world *w, size_t i)
{
    if (!w->alive[i] || w->paused[i] || w->gone[i]) {
        return;
    }
    struct clerk_fault rules[H_MAX_NODES + 1];
    size_t k = 0;
    struct clerk_fault base = base_rule(w);
    rules[k] = base;
    rules[k++].target = CLERK_FAULT_CLIENTS;
    for (size_t j = 0; j < w->c.n; j++) {
        if (j == i || w->gone[j]) {
            continue;
        }
        rules[k] = base;
        rules[k].target = w->c.nodes[j].id;
        if (!w->link[i][j] && !faults_packet_cut) {
            rules[k].cut = true;
        }
        k++;
    }
    /* A node just started may not listen yet, and one installing a
     * snapshot (on its loop) may not answer within the admin handle's
     * 400 ms: try for a while. */
    int rv = CLERK_UNAVAILABLE;
    for (int tries = 0;
         tries < 50 && (rv == CLERK_UNAVAILABLE || rv == CLERK_TIMEOUT);
         tries++) {
        if (tries) {
            h_sleep_ms(100);
        }
        rv = read_counts(w, i);
    }
    uint64_t seed = (uint64_t)rand_r(&w->rng) + 1;
    int slow = 0;
    for (bool again = rv == CLERK_OK; again;) {
        again = false;
        rv = clerk_fault(w->admin, i, true, rules, k, seed, NULL, NULL);
        if ((rv == CLERK_UNAVAILABLE || rv == CLERK_TIMEOUT) && ++slow < 20) {
            /* Busy (a snapshot install): the rules are set whole or not
             * at all, so setting them again is safe. */
            h_sleep_ms(100);
            again = true;
            continue;
        }
        /* While the membership changes, a node may not know a new member
         * yet (it gets no rule for it) or may have dropped a removed one:
         * leave that target out. */
        uint64_t id =
            rv == CLERK_BAD_REQUEST ? no_such_peer(clerk_errmsg(w->admin)) : 0;
        size_t r = 1;
        while (id && r < k && rules[r].target != id) {
            r++;
        }
        if (id && r < k) {
            rules[r] = rules[--k];
            again = true;
        }
    }
    if (rv != CLERK_OK) {
        fail(w, "setting faults on node %zu: %s", i + 1,
             clerk_errmsg(w->admin));
    }
}

/* Make the links take effect everywhere (caller holds the lock). */
static void apply_links(struct world *w)
{
    if (faults_packet_cut && faults_packet_cut(&w->c, w->link) != 0) {
        fail(w, "packet filter rules could not be set");
    }
    for (size_t i = 0; i < w->c.n; i++) {
        apply_node(w, i);
    }
}

static void all_links(struct world *w, bool up)
{
    for (size_t i = 0; i < w->c.n; i++) {
        for (size_t j = 0; j < w->c.n; j++) {
            w->link[i][j] = up || i == j;
        }
    }
}

/* Links only within groups (group[i] of each node). */
static void set_groups(struct world *w, const int *group)
{
    for (size_t i = 0; i < w->c.n; i++) {
        for (size_t j = 0; j < w->c.n; j++) {
            w->link[i][j] = group[i] == group[j];
        }
    }
    w->partitions++;
}

static void shuffle(struct world *w, size_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = i;
    }
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rand_r(&w->rng) % i;
        size_t t = p[i - 1];
        p[i - 1] = p[j];
        p[j] = t;
    }
}

/* The node that leads in the highest term, or -1. */
static int find_leader(struct world *w)
{
    struct clerk_node_status *st;
    size_t n;
    if (clerk_status(w->admin, &st, &n) != CLERK_OK) {
        return -1;
    }
    int best = -1;
    uint64_t term = 0;
    for (size_t i = 0; i < n && i < w->c.n; i++) {
        if (st[i].reachable && !strcmp(st[i].role, "leader") &&
            st[i].term >= term) {
            best = (int)i;
            term = st[i].term;
        }
    }
    clerk_free(st);
    return best;
}

/* Cut node i's power (diskfault): half the time at once, half the time
 * at its next write or sync of its log (at once if none comes within a
 * second). What it did not sync is lost; its disk works again after. */
static void power_loss(struct world *w, size_t i)
{
    bool at_write = false;
    if (rand_r(&w->rng) % 2 && h_node_rules(&w->c, i, "crash wal/ any") == 0) {
        at_write = h_node_exited(&w->c, i, 1000);
    }
    if (!at_write) {
        h_node_power_loss(&w->c, i);
    }
    h_node_rules(&w->c, i, "");
    w->power_losses++;
    w->at_write += at_write;
}

/* kill -9 node i, or with diskfault cut its power. */
static void kill_node(struct world *w, size_t i)
{
    if (w->alive[i]) {
        if (w->paused[i]) {
            h_node_pause(&w->c, i, false);
            w->paused[i] = false;
        }
        if (w->sc->diskfault) {
            power_loss(w, i);
        } else {
            h_node_kill(&w->c, i);
            w->kills++;
        }
        w->alive[i] = false;
    }
}

static void start_node(struct world *w, size_t i)
{
    if (!w->alive[i] && !w->gone[i]) {
        if (h_node_start(&w->c, i) != 0) {
            fail(w, "restarting node %zu", i + 1);
            return;
        }
        w->alive[i] = true;
    }
}

/* Restart nodes (h_node_start returns once each listens) and give them
 * their rules. */
static void restart_and_apply(struct world *w, const size_t *nodes, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        start_node(w, nodes[k]);
    }
    for (size_t k = 0; k < n; k++) {
        apply_node(w, nodes[k]);
    }
}

static void pause_node(struct world *w, size_t i, bool pause)
{
    if (w->alive[i] && w->paused[i] != pause) {
        h_node_pause(&w->c, i, pause);
        w->paused[i] = pause;
        w->pauses += pause;
    }
}

static bool round_over(struct world *w)
{
    if (w->sc->appends_per_client) {
        return __atomic_load_n(&w->finished, __ATOMIC_ACQUIRE) >=
               (int)w->sc->clients;
    }
    return now_ns() >= w->end_ns;
}

/* Sleep unless the round ends meanwhile. */
static void nap(struct world *w, unsigned ms)
{
    for (unsigned t = 0; t < ms && !round_over(w); t += 20) {
        h_sleep_ms(20);
    }
}

static unsigned period(struct world *w)
{
    unsigned ms = w->sc->nemesis_ms;
    if (ms) {
        return ms + (unsigned)rand_r(&w->rng) % (ms / 5 + 1);
    }
    return NEMESIS_MIN_MS +
           (unsigned)rand_r(&w->rng) % (NEMESIS_MAX_MS - NEMESIS_MIN_MS + 1);
}

static bool wait_serving(struct world *w, unsigned ms);

/* Every node loses power (diskfault), while the clients write: the
 * followers each at their next log write, before it does anything, then
 * the leader. The followers come back first and must elect a leader and
 * serve without the old one, so what they acknowledged must come back
 * from their own disks; then the old leader. Without a leader, every node
 * loses power at once. Called without the lock. */
static void power_loss_all(struct world *w)
{
    size_t n = w->c.n, order[H_MAX_NODES], k = 0;
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < n; i++) {
        pause_node(w, i, false);
    }
    int l = find_leader(w);
    if (l < 0) {
        shuffle(w, order, n);
        for (size_t i = 0; i < n; i++) {
            kill_node(w, order[i]);
        }
        pthread_mutex_unlock(&w->lock);
        nap(w, 500);
        pthread_mutex_lock(&w->lock);
        restart_and_apply(w, order, n);
        pthread_mutex_unlock(&w->lock);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        w->power_losses += w->alive[i];
    }
    int crashed = h_power_loss_at_next_log_write(&w->c, (size_t)l, 3000);
    h_node_power_loss(&w->c, (size_t)l);
    h_node_rules(&w->c, (size_t)l, "");
    w->at_write += crashed > 0 ? (uint64_t)crashed : 0;
    for (size_t i = 0; i < n; i++) {
        w->alive[i] = false;
        if (i != (size_t)l) {
            order[k++] = i;
        }
    }
    restart_and_apply(w, order, k);
    pthread_mutex_unlock(&w->lock);
    if (!wait_serving(w, 20000)) {
        fail(w,
             "no leader served within 20 s of the power loss without the "
             "old leader (node %d)",
             l + 1);
    }
    pthread_mutex_lock(&w->lock);
    size_t one = (size_t)l;
    restart_and_apply(w, &one, 1);
    pthread_mutex_unlock(&w->lock);
}

/* One round of a nemesis: break something, wait, (maybe) repair. */
static void nemesis_step(struct world *w, enum nemesis kind)
{
    size_t n = w->c.n, p[H_MAX_NODES];
    int group[H_MAX_NODES];
    pthread_mutex_lock(&w->lock);
    switch (kind) {
        case NEM_NONE:
            break;
        case NEM_RANDOM_HALVES:
        case NEM_PACKETS: {
            /* Each node on a random side; drawn again when every node
             * landed on the same side, so that each round cuts links. */
            bool split = false;
            while (!split) {
                for (size_t i = 0; i < n; i++) {
                    group[i] = rand_r(&w->rng) % 2;
                    split = split || (i && group[i] != group[0]);
                }
            }
            set_groups(w, group);
            apply_links(w);
            pthread_mutex_unlock(&w->lock);
            nap(w, period(w));
            return; /* the next round re-partitions; heal at the end */
        }
        case NEM_KILL_ALL:
            if (w->sc->diskfault) {
                pthread_mutex_unlock(&w->lock);
                power_loss_all(w);
                nap(w, period(w));
                return;
            }
            /* fall through */
        case NEM_KILL_ONE:
        case NEM_KILL_MINORITY: {
            size_t k = kind == NEM_KILL_ONE   ? 1
                       : kind == NEM_KILL_ALL ? n
                                              : (n - 1) / 2;
            shuffle(w, p, n);
            for (size_t i = 0; i < k; i++) {
                kill_node(w, p[i]);
            }
            pthread_mutex_unlock(&w->lock);
            nap(w, kind == NEM_KILL_ALL ? 500 : period(w));
            pthread_mutex_lock(&w->lock);
            restart_and_apply(w, p, k);
            pthread_mutex_unlock(&w->lock);
            nap(w, period(w));
            return;
        }
        case NEM_KILL_LEADER: {
            int l = find_leader(w);
            if (l >= 0) {
                kill_node(w, (size_t)l);
                pthread_mutex_unlock(&w->lock);
                nap(w, period(w));
                pthread_mutex_lock(&w->lock);
                size_t one = (size_t)l;
                restart_and_apply(w, &one, 1);
            }
            pthread_mutex_unlock(&w->lock);
            nap(w, period(w));
            return;
        }
        case NEM_PAUSE_LEADER: {
            int l = find_leader(w);
            if (l >= 0) {
                pause_node(w, (size_t)l, true);
                pthread_mutex_unlock(&w->lock);
                nap(w, period(w) + 500);
                pthread_mutex_lock(&w->lock);
                pause_node(w, (size_t)l, false);
            }
            pthread_mutex_unlock(&w->lock);
            nap(w, period(w));
            return;
        }
        case NEM_ISOLATE_LEADER: {
            int l = find_leader(w);
            if (l >= 0) {
                for (size_t i = 0; i < n; i++) {
                    group[i] = i == (size_t)l;
                }
                set_groups(w, group);
                apply_links(w);
                pthread_mutex_unlock(&w->lock);
                nap(w, period(w) + 500);
                pthread_mutex_lock(&w->lock);
                all_links(w, true);
                apply_links(w);
            }
            pthread_mutex_unlock(&w->lock);
            nap(w, period(w));
            return;
        }
        case NEM_RING:
        case NEM_BRIDGE: {
            /* Ring: node p[k] reaches p[k-1] and p[k+1]. Bridge: p[0..h-1]
             * and p[h+1..] apart, p[h] reaches everyone. */
            shuffle(w, p, n);
            int l = kind == NEM_BRIDGE ? find_leader(w) : -1;
            if (l >= 0 && p[n / 2] == (size_t)l) {
                /* A leader on the bridge reaches everyone and nothing
                 * happens: put it in one of the halves. */
                p[n / 2] = p[0];
                p[0] = (size_t)l;
            }
            size_t pos[H_MAX_NODES];
            for (size_t k = 0; k < n; k++) {
                pos[p[k]] = k;
            }
            for (size_t i = 0; i < n; i++) {
                for (size_t j = 0; j < n; j++) {
                    size_t a = pos[i], b = pos[j], h = n / 2;
                    size_t d = a > b ? a - b : b - a;
                    if (kind == NEM_RING) {
                        /* Each node sees the k nearest on either side:
                         * 1 + 2k nodes, just a majority (k = 1 for 5
                         * nodes, 2 for 7). */
                        size_t ring = d < n - d ? d : n - d;
                        size_t k = (n / 2 + 1) / 2;
                        w->link[i][j] = ring <= k;
                    } else {
                        w->link[i][j] = a == h || b == h || (a < h) == (b < h);
                    }
                }
            }
            w->partitions++;
            apply_links(w);
            pthread_mutex_unlock(&w->lock);
            nap(w, period(w) + 500);
            pthread_mutex_lock(&w->lock);
            all_links(w, true);
            apply_links(w);
            pthread_mutex_unlock(&w->lock);
            nap(w, period(w) / 2);
            return;
        }
        case NEM_DISK_FULL:
        case NEM_SYNC_FAIL: {
            /* The leader's disk (half the time, a third for a sync) or
             * another node's. The fault must bite: a full disk is kept
             * (up to 2 s more) until a write failed on it, and a sync
             * failure is waited for as long. */
            int l = find_leader(w);
            bool full = kind == NEM_DISK_FULL;
            size_t t = l >= 0 && rand_r(&w->rng) % (full ? 2 : 3) == 0
                           ? (size_t)l
                           : (size_t)rand_r(&w->rng) % n;
            if (!w->alive[t] || w->paused[t]) {
                break;
            }
            const char *mark = full ? " -ENOSPC" : " -EIO";
            size_t before = h_file_count(w->c.nodes[t].trace, mark);
            if (h_node_rules(&w->c, t,
                             full ? "full" : "fail * sync EIO times 1") != 0) {
                fail(w, "setting disk rules on node %zu", t + 1);
                break;
            }
            *(full ? &w->disk_fulls : &w->sync_fails) += 1;
            pthread_mutex_unlock(&w->lock);
            nap(w, full ? period(w) : 0);
            for (unsigned ms = 0;
                 ms < 2000 && !round_over(w) &&
                 h_file_count(w->c.nodes[t].trace, mark) == before;
                 ms += 100) {
                h_sleep_ms(100);
            }
            pthread_mutex_lock(&w->lock);
            h_node_rules(&w->c, t, "");
            pthread_mutex_unlock(&w->lock);
            /* The node goes on by itself: it retries every second. */
            nap(w, period(w));
            return;
        }
        case NEM_MIXED:
            break;
    }
    pthread_mutex_unlock(&w->lock);
    if (kind == NEM_MIXED) {
        static const enum nemesis pick[] = {
            NEM_RANDOM_HALVES, NEM_KILL_ONE,       NEM_KILL_LEADER,
            NEM_PAUSE_LEADER,  NEM_ISOLATE_LEADER, NEM_KILL_MINORITY,
            NEM_DISK_FULL,     NEM_SYNC_FAIL,
        };
        size_t kinds = sizeof pick / sizeof *pick - (w->sc->diskfault ? 0 : 2);
        nemesis_step(w, pick[rand_r(&w->rng) % kinds]);
        pthread_mutex_lock(&w->lock);
        all_links(w, true);
        apply_links(w);
        pthread_mutex_unlock(&w->lock);
    } else {
        nap(w, 100);
    }
}

/* Undo every fault: links up, paused nodes resumed, dead nodes started. */
static void heal(struct world *w)
{
    pthread_mutex_lock(&w->lock);
    size_t dead[H_MAX_NODES], k = 0;
    for (size_t i = 0; i < w->c.n; i++) {
        pause_node(w, i, false);
        if (!w->alive[i]) {
            dead[k++] = i;
        }
    }
    all_links(w, true);
    apply_links(w);
    for (size_t i = 0; i < w->c.n && w->sc->diskfault; i++) {
        h_node_rules(&w->c, i, ""); /* every disk works */
    }
    restart_and_apply(w, dead, k);
    pthread_mutex_unlock(&w->lock);
}

/* ------------------------------------------- for a nemesis of its own */

bool faults_round_over(struct world *w)
{
    return round_over(w);
}

void faults_nap(struct world *w, unsigned ms)
{
    nap(w, ms);
}

unsigned faults_random(struct world *w)
{
    return (unsigned)rand_r(&w->rng);
}

int faults_leader(struct world *w)
{
    return find_leader(w);
}

bool faults_alive(struct world *w, size_t i)
{
    return w->alive[i];
}

void faults_kill(struct world *w, size_t i)
{
    pthread_mutex_lock(&w->lock);
    kill_node(w, i);
    pthread_mutex_unlock(&w->lock);
}

int faults_stop(struct world *w, size_t i)
{
    int st = -1;
    pthread_mutex_lock(&w->lock);
    if (w->alive[i]) {
        if (w->paused[i]) {
            h_node_pause(&w->c, i, false);
            w->paused[i] = false;
        }
        st = h_node_term(&w->c, i);
        w->alive[i] = false;
    }
    pthread_mutex_unlock(&w->lock);
    return st;
}

int faults_restart(struct world *w, size_t i)
{
    pthread_mutex_lock(&w->lock);
    bool was = w->alive[i];
    restart_and_apply(w, &i, 1);
    int rv = w->alive[i] || w->gone[i] ? 0 : -1;
    if (!was && w->alive[i]) {
        /* Its peers' channels to it are new: they get their rules too. */
        apply_links(w);
    }
    pthread_mutex_unlock(&w->lock);
    return rv;
}

/* A handle on every node slot, in order (clerk_fault and clerk_status
 * count servers by their place in the list). */
static int open_admin(struct world *w)
{
    char eps[2048];
    h_endpoints(&w->c, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 10000, .attempt_ms = 400};
    struct clerk *ck = NULL;
    if (clerk_open(&ck, eps, &o) != CLERK_OK) {
        return -1;
    }
    clerk_close(w->admin);
    w->admin = ck;
    return 0;
}

int faults_add_node(struct world *w)
{
    pthread_mutex_lock(&w->lock);
    int i = h_node_add(&w->c);
    if (i >= 0) {
        w->alive[i] = w->paused[i] = w->gone[i] = false;
        for (size_t j = 0; j < w->c.n; j++) {
            w->link[i][j] = w->link[j][i] = true;
        }
        if (open_admin(w) != 0) {
            fail(w, "clerk_open of the admin handle with node %d", i + 1);
            i = -1;
        }
    }
    pthread_mutex_unlock(&w->lock);
    return i;
}

void faults_retire(struct world *w, size_t i)
{
    pthread_mutex_lock(&w->lock);
    if (w->c.nodes[i].pid == 0) {
        w->alive[i] = false; /* it stopped by itself: no kill */
    }
    kill_node(w, i);
    w->gone[i] = true;
    pthread_mutex_unlock(&w->lock);
}

void faults_lose_host(struct world *w, size_t i)
{
    pthread_mutex_lock(&w->lock);
    kill_node(w, i);
    h_node_lose_host(&w->c, i);
    w->gone[i] = true;
    pthread_mutex_unlock(&w->lock);
}

bool faults_retired(struct world *w, size_t i)
{
    return w->gone[i];
}

void faults_partition(struct world *w, const int *group)
{
    pthread_mutex_lock(&w->lock);
    set_groups(w, group);
    apply_links(w);
    pthread_mutex_unlock(&w->lock);
}

void faults_heal_links(struct world *w)
{
    pthread_mutex_lock(&w->lock);
    all_links(w, true);
    apply_links(w);
    pthread_mutex_unlock(&w->lock);
}

/* The nodes clients may call: all but the retired ones. */
static uint32_t live_mask(const struct world *w)
{
    uint32_t mask = 0;
    for (size_t i = 0; i < w->c.n; i++) {
        mask |= w->gone[i] ? 0 : 1u << i;
    }
    return mask;
}

/* ------------------------------------------------------------- clients */

static void record(struct client *cl,
                   enum lc_op op,
                   const char *key,
                   const void *value,
                   size_t value_len,
                   int64_t call,
                   int rv,
                   const void *out,
                   size_t out_len,
                   const void *expected,
                   size_t expected_len,
                   bool expect_absent)
{
    struct world *w = cl->w;
    struct lc_event e = {
        .client = cl->num,
        .op = op,
        .key = key,
        .key_len = strlen(key),
        .value = value,
        .value_len = value_len,
        .expected = expected,
        .expected_len = expected_len,
        .expect_absent = expect_absent,
        .call_ns = call,
        .return_ns = now_ns(),
    };
    switch (rv) {
        case CLERK_OK:
            e.found = true;
            e.swapped = true;
            e.out = out;
            e.out_len = out_len;
            break;
        case CLERK_NOT_FOUND:
            break;
        case CLERK_CAS_MISMATCH:
            e.found = out != NULL;
            e.out = out;
            e.out_len = out_len;
            break;
        case CLERK_UNKNOWN_OUTCOME:
        case CLERK_TIMEOUT:
        case CLERK_SESSION_EXPIRED: /* an earlier try may have been */
            e.unknown = true;
            break;
        case CLERK_UNAVAILABLE:
        case CLERK_NO_SPACE:
            /* Not applied: it stays out of the history, so a read that
             * sees its effect makes the history fail the check. */
            __atomic_fetch_add(&w->refused, 1, __ATOMIC_RELAXED);
            return;
        default:
            __atomic_fetch_add(&w->errors, 1, __ATOMIC_RELAXED);
            pthread_mutex_lock(&w->lock);
            fail(w, "client %d: unexpected %s: %s", cl->num,
                 clerk_error_code(rv), clerk_errmsg(cl->ck));
            pthread_mutex_unlock(&w->lock);
            return;
    }
    __atomic_fetch_add(e.unknown ? &w->unknown : &w->ok, 1, __ATOMIC_RELAXED);
    if (lc_history_add(w->hist, &e) != 0) {
        pthread_mutex_lock(&w->lock);
        fail(w, "out of memory recording the history");
        pthread_mutex_unlock(&w->lock);
    }
}

static const char *pick_key(struct client *cl)
{
    struct world *w = cl->w;
    if (w->sc->random_keys || w->sc->workload == WL_REGISTER) {
        return w->keys[(size_t)rand_r(&cl->rng) % w->n_keys];
    }
    if (cl->reader) { /* a writer's key of this round */
        size_t first = w->n_clients - w->sc->clients - w->sc->readers;
        return w->clients[first + (size_t)rand_r(&cl->rng) % w->sc->clients]
            .own_key;
    }
    return cl->own_key;
}

/* Append the token "[num.seq]" and remember its fate. */
static void do_append(struct client *cl, const char *key)
{
    if (cl->n_appends == cl->cap) {
        size_t cap = cl->cap ? cl->cap * 2 : 256;
        uint8_t *a = realloc(cl->appends, cap);
        if (!a) {
            return;
        }
        memset(a + cl->cap, 0, cap - cl->cap);
        cl->appends = a;
        cl->cap = cap;
    }
    size_t seq = cl->n_appends++;
    char tok[48];
    int len = snprintf(tok, sizeof tok, "[%d.%zu]", cl->num, seq);
    int64_t t = now_ns();
    int rv = clerk_append(cl->ck, key, strlen(key), tok, (size_t)len);
    cl->appends[seq] = rv == CLERK_OK            ? AP_ACKED
                       : rv == CLERK_UNAVAILABLE ? AP_REFUSED
                       : rv == CLERK_NO_SPACE    ? AP_NO_SPACE
                                                 : AP_UNKNOWN;
    record(cl, LC_APPEND, key, tok, (size_t)len, t, rv, NULL, 0, NULL, 0,
           false);
}

static void do_get(struct client *cl, const char *key)
{
    void *v = NULL;
    size_t len = 0;
    int64_t t = now_ns();
    int rv = clerk_get(cl->ck, key, strlen(key), &v, &len);
    record(cl, LC_GET, key, NULL, 0, t, rv, v, len, NULL, 0, false);
    clerk_free(v);
}

/* Jepsen's register: small values, put / cas / delete / get. */
static void do_register_op(struct client *cl, const char *key)
{
    char val[16], exp[16];
    int vl = snprintf(val, sizeof val, "%u", (unsigned)rand_r(&cl->rng) % 5);
    int el = snprintf(exp, sizeof exp, "%u", (unsigned)rand_r(&cl->rng) % 5);
    int64_t t = now_ns();
    int r = rand_r(&cl->rng) % 10, rv;
    if (r < 4) {
        do_get(cl, key);
    } else if (r < 6) {
        rv = clerk_put(cl->ck, key, strlen(key), val, (size_t)vl);
        record(cl, LC_PUT, key, val, (size_t)vl, t, rv, NULL, 0, NULL, 0,
               false);
    } else if (r < 9) {
        bool absent = r == 8;
        void *cur = NULL;
        size_t cur_len = 0;
        rv =
            clerk_cas(cl->ck, key, strlen(key), absent ? NULL : exp,
                      absent ? 0 : (size_t)el, val, (size_t)vl, &cur, &cur_len);
        record(cl, LC_CAS, key, val, (size_t)vl, t, rv, cur, cur_len, exp,
               absent ? 0 : (size_t)el, absent);
        clerk_free(cur);
    } else {
        rv = clerk_delete(cl->ck, key, strlen(key));
        record(cl, LC_DELETE, key, NULL, 0, t, rv, NULL, 0, NULL, 0, false);
    }
}

/* ------------------------------------------- bank and txn workloads */

#define BANK_START    100 /* each account's balance at the start */
#define BANK_MAX_MOVE 10  /* the most one transfer moves */
#define TXN_RETRIES                                    \
    10 /* reads and tries of a transfer whose compares \
          failed (another transfer came first) */

/* The prefix of the workload's keys (WL_BANK, WL_TXN): a range over it
 * returns them all and nothing else of the test's. */
static const char *multi_prefix(const struct world *w)
{
    return w->sc->workload == WL_BANK ? "bank/" : "tx/";
}

/* What a range over the workload's keys saw, per key (index in w->keys). */
struct seen
{
    bool found[MAX_CLIENTS];                /* the key was in the range */
    const struct clerk_kv *kv[MAX_CLIENTS]; /* it, in the result */
};

/* The revisions a client sees must not go back: its calls follow each
 * other in real time, so a linearizable store serves each at a revision
 * at least that of the one before. */
static void check_revision(struct client *cl, const char *what, uint64_t rev)
{
    struct world *w = cl->w;
    if (rev < cl->last_revision) {
        pthread_mutex_lock(&w->lock);
        fail(w,
             "client %d: %s served at revision %" PRIu64
             " after an earlier call saw %" PRIu64 " (a stale read)",
             cl->num, what, rev, cl->last_revision);
        pthread_mutex_unlock(&w->lock);
    }
    if (rev > cl->last_revision) {
        cl->last_revision = rev;
    }
}

/* Count an op's outcome, and add it to the history unless it was not
 * applied (a read of unknown outcome is added; the checker drops it). */
static void record_event(struct client *cl, struct lc_event *e, int rv)
{
    struct world *w = cl->w;
    e->client = cl->num;
    e->return_ns = now_ns();
    switch (rv) {
        case CLERK_OK:
            break;
        case CLERK_UNKNOWN_OUTCOME:
        case CLERK_TIMEOUT:
        case CLERK_SESSION_EXPIRED:
            e->unknown = true;
            e->return_ns = 0;
            break;
        case CLERK_UNAVAILABLE:
        case CLERK_NO_SPACE:
            __atomic_fetch_add(&w->refused, 1, __ATOMIC_RELAXED);
            return;
        default:
            __atomic_fetch_add(&w->errors, 1, __ATOMIC_RELAXED);
            pthread_mutex_lock(&w->lock);
            fail(w, "client %d: unexpected %s: %s", cl->num,
                 clerk_error_code(rv), clerk_errmsg(cl->ck));
            pthread_mutex_unlock(&w->lock);
            return;
    }
    __atomic_fetch_add(e->unknown ? &w->unknown : &w->ok, 1, __ATOMIC_RELAXED);
    if (lc_history_add(w->hist, e) != 0) {
        pthread_mutex_lock(&w->lock);
        fail(w, "out of memory recording the history");
        pthread_mutex_unlock(&w->lock);
    }
}

/* Range over every key of the workload, record it, and check it: only the
 * workload's keys; with WL_BANK every account, none negative, the total.
 * @return the result (caller frees) when rv is CLERK_OK and the checks
 *   pass, with *s filled in; else NULL */
static struct clerk_range_result *range_all(struct client *cl, struct seen *s)
{
    struct world *w = cl->w;
    const char *prefix = multi_prefix(w);
    char end[16];
    size_t plen = strlen(prefix);
    size_t elen = clerk_prefix_end(prefix, plen, end);
    struct clerk_range_result *r = NULL;
    struct lc_read reads[MAX_CLIENTS];
    struct lc_event e = {.op = LC_RANGE,
                         .reads = reads,
                         .n_reads = w->n_keys,
                         .call_ns = now_ns()};
    int rv = clerk_range(cl->ck, prefix, plen, end, elen, 0, 0, &r);
    memset(s, 0, sizeof *s);
    bool ok = rv == CLERK_OK;
    for (size_t i = 0; ok && i < r->n_kvs; i++) {
        const struct clerk_kv *kv = &r->kvs[i];
        size_t k = 0;
        while (k < w->n_keys && (strlen(w->keys[k]) != kv->key_len ||
                                 memcmp(w->keys[k], kv->key, kv->key_len))) {
            k++;
        }
        if (k == w->n_keys || s->found[k]) {
            pthread_mutex_lock(&w->lock);
            fail(w, "client %d: a range returned key %.*s %s", cl->num,
                 (int)kv->key_len, (const char *)kv->key,
                 k == w->n_keys ? "that no one wrote" : "twice");
            pthread_mutex_unlock(&w->lock);
            ok = false;
            break;
        }
        s->found[k] = true;
        s->kv[k] = kv;
    }
    for (size_t k = 0; k < w->n_keys; k++) {
        reads[k] = (struct lc_read){.key = w->keys[k],
                                    .key_len = strlen(w->keys[k]),
                                    .found = ok && s->found[k]};
        if (reads[k].found) {
            reads[k].out = s->kv[k]->value;
            reads[k].out_len = s->kv[k]->value_len;
        }
    }
    if (rv == CLERK_OK && !ok) {
        clerk_range_result_free(r);
        return NULL;
    }
    if (rv != CLERK_OK) {
        record_event(cl, &e, rv); /* a read: unknown ones are dropped */
        clerk_range_result_free(r);
        return NULL;
    }
    record_event(cl, &e, rv);
    check_revision(cl, "a range", r->revision);
    __atomic_fetch_add(&w->ranges, 1, __ATOMIC_RELAXED);
    if (w->sc->workload != WL_BANK) {
        return r;
    }
    /* The bank's invariant, in one reply at one revision. */
    long sum = 0;
    char why[200] = "";
    for (size_t k = 0; k < w->n_keys && !why[0]; k++) {
        char *endp;
        long bal = -1;
        if (s->found[k]) {
            bal = strtol(s->kv[k]->value, &endp, 10);
        }
        if (!s->found[k]) {
            snprintf(why, sizeof why, "account %s missing", w->keys[k]);
        } else if (s->kv[k]->value_len == 0 || *endp != '\0' || bal < 0) {
            snprintf(why, sizeof why, "account %s holds '%.20s'", w->keys[k],
                     (const char *)s->kv[k]->value);
        }
        sum += bal;
    }
    if (!why[0] && sum != (long)w->bank_total) {
        snprintf(why, sizeof why, "the balances sum to %ld, not %zu", sum,
                 w->bank_total);
    }
    if (why[0]) {
        pthread_mutex_lock(&w->lock);
        fail(w, "client %d: range at revision %" PRIu64 ": %s", cl->num,
             r->revision, why);
        pthread_mutex_unlock(&w->lock);
        clerk_range_result_free(r);
        return NULL;
    }
    __atomic_fetch_add(&w->sums_checked, 1, __ATOMIC_RELAXED);
    return r;
}

/* Add a put (value) or delete (value NULL) to a txn and to its event. */
static int txn_write(struct clerk_txn *t,
                     enum clerk_txn_branch branch,
                     struct lc_write *w,
                     const char *key,
                     const char *value)
{
    *w = (struct lc_write){.del = value == NULL,
                           .key = key,
                           .key_len = strlen(key),
                           .value = value,
                           .value_len = value ? strlen(value) : 0};
    return value ? clerk_txn_put(t, branch, key, strlen(key), value,
                                 strlen(value), 0)
                 : clerk_txn_delete(t, branch, key, strlen(key), NULL, 0, 0);
}

/* Commit t and record it as e (its then/else and compares filled in).
 * @return clerk_txn_commit's result */
static int commit_and_record(struct client *cl,
                             struct clerk_txn *t,
                             struct lc_event *e,
                             bool *succeeded)
{
    struct clerk_txn_result *res = NULL;
    e->op = LC_TXN;
    e->call_ns = now_ns();
    int rv = clerk_txn_commit(cl->ck, t, &res);
    *succeeded = rv == CLERK_OK && res->succeeded;
    if (rv == CLERK_OK) {
        e->succeeded = res->succeeded;
        check_revision(cl, "a txn", res->revision);
    }
    record_event(cl, e, rv);
    clerk_txn_result_free(res);
    return rv;
}

/* One transfer: read the accounts, move up to BANK_MAX_MOVE from one to
 * another in a txn that holds only if neither changed since (their mod
 * revisions), again while another transfer comes first. */
static void do_transfer(struct client *cl)
{
    struct world *w = cl->w;
    for (int attempt = 0; attempt < TXN_RETRIES && !w->stop; attempt++) {
        struct seen s;
        struct clerk_range_result *r = range_all(cl, &s);
        if (!r) {
            return;
        }
        size_t n = w->n_keys, a = (size_t)rand_r(&cl->rng) % n;
        size_t b = (a + 1 + (size_t)rand_r(&cl->rng) % (n - 1)) % n;
        long ba = strtol(s.kv[a]->value, NULL, 10);
        long bb = strtol(s.kv[b]->value, NULL, 10);
        if (ba == 0) {
            clerk_range_result_free(r);
            continue;
        }
        long x =
            1 + rand_r(&cl->rng) % (ba < BANK_MAX_MOVE ? ba : BANK_MAX_MOVE);
        char va[24], vb[24], na[24], nb[24];
        snprintf(va, sizeof va, "%ld", ba);
        snprintf(vb, sizeof vb, "%ld", bb);
        snprintf(na, sizeof na, "%ld", ba - x);
        snprintf(nb, sizeof nb, "%ld", bb + x);
        /* The txn compares mod revisions; its event compares the values
         * read, which is what the mod revisions vouch for when it
         * succeeds. A txn that failed is left out: equal values do not
         * mean equal revisions, and it changed nothing. One of unknown
         * outcome may have taken effect, where the values were those. */
        struct lc_compare cmp[2] = {
            {.key = w->keys[a],
             .key_len = strlen(w->keys[a]),
             .value = va,
             .value_len = strlen(va)},
            {.key = w->keys[b],
             .key_len = strlen(w->keys[b]),
             .value = vb,
             .value_len = strlen(vb)},
        };
        struct lc_write puts[2];
        struct lc_event e = {
            .compares = cmp, .n_compares = 2, .then_ops = puts, .n_then = 2};
        struct clerk_txn *t = clerk_txn_new();
        int brv = t ? CLERK_OK : CLERK_NOMEM;
        brv =
            brv ? brv
                : clerk_txn_compare_mod(t, w->keys[a], strlen(w->keys[a]),
                                        CLERK_CMP_EQUAL, s.kv[a]->mod_revision);
        brv =
            brv ? brv
                : clerk_txn_compare_mod(t, w->keys[b], strlen(w->keys[b]),
                                        CLERK_CMP_EQUAL, s.kv[b]->mod_revision);
        brv =
            brv ? brv : txn_write(t, CLERK_TXN_THEN, &puts[0], w->keys[a], na);
        brv =
            brv ? brv : txn_write(t, CLERK_TXN_THEN, &puts[1], w->keys[b], nb);
        clerk_range_result_free(r);
        if (brv != CLERK_OK) {
            pthread_mutex_lock(&w->lock);
            fail(w, "building a transfer: %s", clerk_error_code(brv));
            pthread_mutex_unlock(&w->lock);
            clerk_txn_free(t);
            return;
        }
        struct clerk_txn_result *res = NULL;
        e.op = LC_TXN;
        e.call_ns = now_ns();
        int rv = clerk_txn_commit(cl->ck, t, &res);
        clerk_txn_free(t);
        if (rv == CLERK_OK) {
            check_revision(cl, "a transfer", res->revision);
        }
        bool retry = rv == CLERK_OK && !res->succeeded;
        clerk_txn_result_free(res);
        if (retry) {
            __atomic_fetch_add(&w->conflicts, 1, __ATOMIC_RELAXED);
            continue;
        }
        e.succeeded = true;
        record_event(cl, &e, rv);
        if (rv == CLERK_OK) {
            __atomic_fetch_add(&w->transfers, 1, __ATOMIC_RELAXED);
        }
        return;
    }
}

/* A value no one else writes: "c<client>.<n>". */
static void unique_value(struct client *cl, char *buf, size_t n)
{
    snprintf(buf, n, "c%d.%u", cl->num, cl->seq++);
}

/* The txn workload: ranges over its keys, single-key ops, and txns that
 * compare what the client last saw (values and versions) with then and
 * else branches. */
static void do_txn_op(struct client *cl)
{
    struct world *w = cl->w;
    size_t n = w->n_keys, k = (size_t)rand_r(&cl->rng) % n;
    const char *key = w->keys[k];
    int r = rand_r(&cl->rng) % 100, rv;
    char val[32];
    unique_value(cl, val, sizeof val);
    if (r < 30 || cl->reader) {
        struct seen s;
        struct clerk_range_result *res = range_all(cl, &s);
        for (size_t i = 0; res && i < n; i++) {
            cl->seen_found[i] = s.found[i];
            cl->seen_version[i] = s.found[i] ? s.kv[i]->version : 0;
            snprintf(cl->seen_value[i], sizeof cl->seen_value[i], "%.*s",
                     s.found[i] ? (int)s.kv[i]->value_len : 0,
                     s.found[i] ? (const char *)s.kv[i]->value : "");
        }
        clerk_range_result_free(res);
        return;
    }
    int64_t t = now_ns();
    if (r < 42) {
        do_get(cl, key);
        return;
    }
    if (r < 52) {
        rv = clerk_put(cl->ck, key, strlen(key), val, strlen(val));
        record(cl, LC_PUT, key, val, strlen(val), t, rv, NULL, 0, NULL, 0,
               false);
        return;
    }
    if (r < 58) {
        rv = clerk_delete(cl->ck, key, strlen(key));
        record(cl, LC_DELETE, key, NULL, 0, t, rv, NULL, 0, NULL, 0, false);
        return;
    }
    /* A txn: one or two compares on what this client saw last, a then
     * branch of one or two writes to different keys, maybe an else. */
    struct lc_compare cmp[2];
    struct lc_write then_ops[2], else_ops[1];
    char vals[3][32];
    struct lc_event e = {
        .compares = cmp, .then_ops = then_ops, .else_ops = else_ops};
    struct clerk_txn *txn = clerk_txn_new();
    int brv = txn ? CLERK_OK : CLERK_NOMEM;
    size_t ncmp = 1 + (size_t)rand_r(&cl->rng) % 2;
    for (size_t i = 0; i < ncmp && !brv; i++) {
        size_t c = (size_t)rand_r(&cl->rng) % n;
        /* Mostly "unchanged since I looked"; sometimes another relation. */
        enum lc_cmp_result res =
            rand_r(&cl->rng) % 3 ? LC_CMP_EQUAL
                                 : (enum lc_cmp_result)(rand_r(&cl->rng) % 4);
        cmp[i] = (struct lc_compare){
            .key = w->keys[c], .key_len = strlen(w->keys[c]), .result = res};
        if (cl->seen_found[c] && rand_r(&cl->rng) % 2) {
            cmp[i].target = LC_CMP_VALUE;
            cmp[i].value = cl->seen_value[c];
            cmp[i].value_len = strlen(cl->seen_value[c]);
            brv = clerk_txn_compare_value(txn, cmp[i].key, cmp[i].key_len,
                                          (enum clerk_compare_result)res,
                                          cmp[i].value, cmp[i].value_len);
        } else {
            cmp[i].target = LC_CMP_VERSION;
            cmp[i].version = cl->seen_version[c];
            brv = clerk_txn_compare_version(txn, cmp[i].key, cmp[i].key_len,
                                            (enum clerk_compare_result)res,
                                            cmp[i].version);
        }
        e.n_compares++;
    }
    /* A quarter have no writes at all: served as linearizable reads, their
     * succeeded says what the compares saw at one instant. */
    bool read_only = rand_r(&cl->rng) % 4 == 0;
    size_t nthen = read_only ? 0 : 1 + (size_t)rand_r(&cl->rng) % 2;
    for (size_t i = 0; i < nthen && !brv; i++) {
        size_t c = (k + i) % n; /* different keys */
        unique_value(cl, vals[i], sizeof vals[i]);
        bool del = rand_r(&cl->rng) % 4 == 0;
        brv = txn_write(txn, CLERK_TXN_THEN, &then_ops[i], w->keys[c],
                        del ? NULL : vals[i]);
        e.n_then++;
    }
    if (!brv && !read_only && rand_r(&cl->rng) % 2) {
        unique_value(cl, vals[2], sizeof vals[2]);
        brv = txn_write(txn, CLERK_TXN_ELSE, &else_ops[0], w->keys[(k + 1) % n],
                        vals[2]);
        e.n_else++;
    }
    if (brv != CLERK_OK) {
        pthread_mutex_lock(&w->lock);
        fail(w, "building a txn: %s", clerk_error_code(brv));
        pthread_mutex_unlock(&w->lock);
        clerk_txn_free(txn);
        return;
    }
    bool succeeded;
    int crv = commit_and_record(cl, txn, &e, &succeeded);
    clerk_txn_free(txn);
    __atomic_fetch_add(succeeded ? &w->transfers : &w->conflicts, 1,
                       __ATOMIC_RELAXED);
    if (read_only && crv == CLERK_OK) {
        __atomic_fetch_add(&w->read_only, 1, __ATOMIC_RELAXED);
    }
}

/* Make the bank's accounts, in one txn (recorded), before any client
 * runs. */
static int open_bank(struct world *w)
{
    struct client admin = {.w = w, .num = -1, .ck = w->admin};
    struct lc_write puts[MAX_CLIENTS];
    char val[24];
    snprintf(val, sizeof val, "%d", BANK_START);
    struct clerk_txn *t = clerk_txn_new();
    int rv = t ? CLERK_OK : CLERK_NOMEM;
    for (size_t k = 0; k < w->n_keys && rv == CLERK_OK; k++) {
        rv = txn_write(t, CLERK_TXN_THEN, &puts[k], w->keys[k], val);
    }
    w->bank_total = w->n_keys * BANK_START;
    struct lc_event e = {.then_ops = puts, .n_then = w->n_keys};
    bool succeeded = false;
    if (rv == CLERK_OK) {
        clerk_set_deadline(w->admin, 30000);
        rv = commit_and_record(&admin, t, &e, &succeeded);
        clerk_set_deadline(w->admin, 0);
    }
    clerk_txn_free(t);
    if (!succeeded) {
        fail(w, "making the accounts: %s: %s", clerk_error_code(rv),
             clerk_errmsg(w->admin));
        return -1;
    }
    return 0;
}

/* After a round: one more range, by the admin, must see the total. */
static void check_bank(struct world *w)
{
    struct client admin = {.w = w, .num = -1, .ck = w->admin};
    struct seen s;
    clerk_set_deadline(w->admin, 30000);
    struct clerk_range_result *r = range_all(&admin, &s);
    clerk_set_deadline(w->admin, 0);
    if (!r && !w->failed) {
        fail(w, "the final range over the accounts failed: %s",
             clerk_errmsg(w->admin));
    }
    clerk_range_result_free(r);
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    struct world *w = cl->w;
    if (w->sc->ext) {
        while (!w->stop) {
            w->sc->ext->op(w->ext, cl->ck, &cl->rng, cl->num);
        }
        __atomic_fetch_add(&w->finished, 1, __ATOMIC_RELEASE);
        return NULL;
    }
    if (w->sc->workload == WL_APPEND_GET && !w->sc->random_keys &&
        !cl->reader) {
        /* The lab's clients start a round by emptying their key. */
        int64_t t = now_ns();
        int rv = clerk_put(cl->ck, cl->own_key, strlen(cl->own_key), "", 0);
        record(cl, LC_PUT, cl->own_key, "", 0, t, rv, NULL, 0, NULL, 0, false);
    }
    while (!w->stop) {
        if (w->sc->workload == WL_BANK) {
            if (cl->reader) {
                struct seen seen;
                clerk_range_result_free(range_all(cl, &seen));
            } else {
                do_transfer(cl);
            }
            continue;
        }
        if (w->sc->workload == WL_TXN) {
            do_txn_op(cl);
            continue;
        }
        const char *key = pick_key(cl);
        if (cl->reader) {
            do_get(cl, key);
        } else if (w->sc->appends_per_client) {
            if (cl->n_appends == w->sc->appends_per_client) {
                break;
            }
            do_append(cl, key);
        } else if (w->sc->workload == WL_REGISTER) {
            do_register_op(cl, key);
        } else if (rand_r(&cl->rng) % 2) {
            do_append(cl, key);
        } else {
            do_get(cl, key);
        }
    }
    __atomic_fetch_add(&w->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* ------------------------------------------------------------- checks */

/* Read a key for the final check, recording the read. */
static char *final_get(struct world *w, const char *key, size_t *len)
{
    struct client fake = {.w = w, .num = -1, .ck = w->admin};
    void *v = NULL;
    int64_t t = now_ns();
    clerk_set_deadline(w->admin, 30000);
    int rv = clerk_get(w->admin, key, strlen(key), &v, len);
    clerk_set_deadline(w->admin, 0);
    record(&fake, LC_GET, key, NULL, 0, t, rv, v, *len, NULL, 0, false);
    if (rv == CLERK_NOT_FOUND) {
        *len = 0;
        return calloc(1, 1);
    }
    if (rv != CLERK_OK) {
        fail(w, "final read of %s: %s: %s", key, clerk_error_code(rv),
             clerk_errmsg(w->admin));
        return NULL;
    }
    return v;
}

/* Every acknowledged append of clients[from..] present exactly once and in
 * order; unknown ones at most once; refused ones never. */
static void check_appends(struct world *w,
                          size_t from,
                          const char **keys,
                          size_t n_keys)
{
    size_t total = 0;
    for (size_t c = from; c < w->n_clients; c++) {
        total += w->clients[c].n_appends;
    }
    /* Where each token was seen: count, and the last sequence number of
     * each client per key for the order check. */
    uint8_t *seen = calloc(total + 1, 1);
    size_t *base = calloc(w->n_clients + 1, sizeof *base);
    if (!seen || !base) {
        fail(w, "out of memory");
        free(seen);
        free(base);
        return;
    }
    for (size_t c = from, off = 0; c < w->n_clients; c++) {
        base[c] = off;
        off += w->clients[c].n_appends;
    }
    bool unread = false;
    for (size_t k = 0; k < n_keys; k++) {
        size_t len;
        char *v = final_get(w, keys[k], &len);
        if (!v) {
            unread = true; /* reported; its appends cannot be judged */
            continue;
        }
        long last[MAX_CLIENTS * 3];
        for (size_t c = 0; c < MAX_CLIENTS * 3; c++) {
            last[c] = -1;
        }
        const char *p = v, *end = v + len;
        while (p < end) {
            int num;
            size_t seq;
            int used = 0;
            if (sscanf(p, "[%d.%zu]%n", &num, &seq, &used) != 2 || used == 0 ||
                p + used > end) {
                fail(w,
                     "key %s holds something no client wrote at offset "
                     "%zu: %.40s",
                     keys[k], (size_t)(p - v), p);
                break;
            }
            p += used;
            size_t c = (size_t)num;
            if (num < 0 || c < from || c >= w->n_clients ||
                seq >= w->clients[c].n_appends) {
                continue; /* an earlier round's client (random keys) */
            }
            uint8_t st = w->clients[c].appends[seq];
            uint8_t *count = &seen[base[c] + seq];
            (*count)++;
            if (st == AP_REFUSED || st == AP_NO_SPACE) {
                fail(w,
                     "append [%d.%zu] was reported not applied (%s) but is "
                     "in %s",
                     num, seq, st == AP_REFUSED ? "UNAVAILABLE" : "NO_SPACE",
                     keys[k]);
            } else if (*count > 1) {
                fail(w, "append [%d.%zu] is in %s twice", num, seq, keys[k]);
            }
            if (st == AP_ACKED) {
                if ((long)seq < last[c]) {
                    fail(w,
                         "client %d's acknowledged appends out of order in "
                         "%s: %zu after %ld",
                         num, keys[k], seq, last[c]);
                }
                last[c] = (long)seq;
            }
        }
        free(v);
    }
    for (size_t c = from; c < w->n_clients && !unread; c++) {
        for (size_t s = 0; s < w->clients[c].n_appends; s++) {
            if (w->clients[c].appends[s] == AP_ACKED && !seen[base[c] + s]) {
                fail(w, "acknowledged append [%zu.%zu] is lost", c, s);
            }
        }
    }
    free(seen);
    free(base);
}

/* Wait for one leader that serves a linearizable read. */
static bool wait_serving(struct world *w, unsigned ms)
{
    for (unsigned t = 0; t < ms; t += 100) {
        void *v = NULL;
        size_t len;
        clerk_set_deadline(w->admin, 1000);
        int rv = clerk_get(w->admin, "probe", 5, &v, &len);
        clerk_set_deadline(w->admin, 0);
        clerk_free(v);
        if (rv == CLERK_OK || rv == CLERK_NOT_FOUND) {
            return true;
        }
        h_sleep_ms(100);
    }
    return false;
}

/* With a snapshot threshold, no node's log may hold much more than it,
 * once the faults are over: a leader holds its compactions back while a
 * follower takes a snapshot and then the entries written meanwhile
 * (docs/kvserver.md, snapshots and compaction), so its log may be longer
 * for the moment a follower that came back needs. Waits up to 10 s. */
static void check_log_bound(struct world *w)
{
    unsigned e = w->sc->snapshot, trailing = e / 10;
    if (!e) {
        return;
    }
    size_t over = 0;
    uint64_t over_len = 0;
    for (uint64_t end = h_now_ms() + 10000;; h_sleep_ms(200)) {
        struct clerk_node_status *st;
        size_t n;
        over = 0;
        if (clerk_status(w->admin, &st, &n) != CLERK_OK) {
            return;
        }
        for (size_t i = 0; i < n && i < w->c.n && !over; i++) {
            uint64_t len = st[i].last_log_index - st[i].snapshot_index;
            if (st[i].reachable && len > 2ull * e + trailing) {
                over = i + 1;
                over_len = len;
            }
        }
        clerk_free(st);
        if (!over || h_now_ms() >= end) {
            break;
        }
    }
    if (over) {
        fail(w,
             "node %zu's log holds %" PRIu64
             " entries with a "
             "threshold of %u",
             over, over_len, e);
    }
}

/* -------------------------------------------------------------- a test */

static int start_cluster(struct world *w)
{
    char extra[256];
    const struct scenario *sc = w->sc;
    snprintf(extra, sizeof extra, "--enable-fault-injection");
    if (sc->snapshot) {
        size_t l = strlen(extra);
        snprintf(extra + l, sizeof extra - l,
                 " --snapshot-entries %u --snapshot-trailing %u", sc->snapshot,
                 sc->snapshot / 10);
    }
    if (sc->flags) {
        size_t l = strlen(extra);
        snprintf(extra + l, sizeof extra - l, " %s", sc->flags);
    }
    struct h_start hs = {.distinct_hosts = sc->distinct_hosts,
                         .diskfault = sc->diskfault,
                         .new_host = sc->new_host,
                         .drop_host = sc->drop_host};
    if (h_cluster_start_with(&w->c, sc->servers, extra, &hs) != 0) {
        return -1;
    }
    if (open_admin(w) != 0) {
        return -1;
    }
    for (size_t i = 0; i < w->c.n; i++) {
        w->alive[i] = true;
    }
    all_links(w, true);
    return 0;
}

static void run_round(struct world *w, unsigned ms)
{
    const struct scenario *sc = w->sc;
    size_t from = w->n_clients;
    /* A lost request costs a client one attempt: keep attempts short, so
     * clients retry (with the same request id) as often as the lab's. */
    struct clerk_options o = {.deadline_ms = 5000, .attempt_ms = 250};
    for (size_t i = 0; i < sc->clients + sc->readers; i++) {
        struct client *cl = &w->clients[w->n_clients];
        memset(cl, 0, sizeof *cl);
        cl->w = w;
        cl->reader = i >= sc->clients;
        cl->num = (int)w->n_clients;
        cl->rng = (unsigned)rand_r(&w->rng);
        snprintf(cl->own_key, sizeof cl->own_key, "k%zu", i);
        /* Each client lists the servers from a different one, as users
         * do: first calls (reads included) land on every node. */
        char eps[2048];
        h_endpoints_of(&w->c, live_mask(w), i, eps, sizeof eps);
        if (clerk_open(&cl->ck, eps, &o) != CLERK_OK) {
            fail(w, "clerk_open");
            return;
        }
        w->n_clients++;
    }
    w->stop = false;
    w->finished = 0;
    w->end_ns = now_ns() + (int64_t)ms * 1000000;
    for (size_t c = from; c < w->n_clients; c++) {
        pthread_create(&w->clients[c].thread, NULL, client_main,
                       &w->clients[c]);
    }
    /* The nemesis runs on this thread: the nodes it restarts are children
     * of the main thread, whose death (not a helper thread's) kills them
     * (PR_SET_PDEATHSIG in the harness). A round with a number of appends
     * lasts until the clients have made them. */
    while (!round_over(w)) {
        if (sc->nem && w->nem) {
            sc->nem->step(w->nem, w);
        } else {
            nemesis_step(w, sc->nemesis);
        }
    }
    if (sc->crash && sc->diskfault) {
        /* The lab's crash as a power loss: every node, while the clients
         * still write (at their next log write for the followers), so
         * that what the nodes acknowledged last must come from their
         * disks. */
        heal(w);
        power_loss_all(w);
    }
    w->stop = true;
    for (size_t c = from; c < w->n_clients; c++) {
        pthread_join(w->clients[c].thread, NULL);
    }
    heal(w);
    if (sc->crash && !sc->diskfault) {
        /* The lab's persistence: every server down, then all back. */
        pthread_mutex_lock(&w->lock);
        size_t all[H_MAX_NODES];
        for (size_t i = 0; i < w->c.n; i++) {
            kill_node(w, i);
            all[i] = i;
        }
        pthread_mutex_unlock(&w->lock);
        h_sleep_ms(1000);
        pthread_mutex_lock(&w->lock);
        restart_and_apply(w, all, w->c.n);
        pthread_mutex_unlock(&w->lock);
    }
    if (!wait_serving(w, 20000)) {
        fail(w, "no leader serving reads 20 s after healing");
        return;
    }
    if (sc->workload == WL_BANK) {
        check_bank(w);
    }
    if (sc->workload == WL_APPEND_GET && !sc->ext) {
        const char *keys[MAX_CLIENTS];
        size_t nk = 0;
        if (sc->random_keys) {
            for (size_t k = 0; k < w->n_keys; k++) {
                keys[nk++] = w->keys[k];
            }
            check_appends(w, 0, keys, nk);
        } else {
            for (size_t c = from; c < w->n_clients; c++) {
                keys[nk++] = w->clients[c].own_key;
            }
            check_appends(w, from, keys, nk);
        }
    }
    check_log_bound(w);
    if (sc->nem && w->nem) {
        sc->nem->check(w->nem, w);
    }
}

static void check_history(struct world *w, double *secs)
{
    struct lc_result res;
    double budget = faults_full_tier() ? 300 : 60;
    int64_t t = now_ns();
    enum lc_verdict v = lc_check(w->hist, budget, &res);
    *secs = (double)(now_ns() - t) / 1e9;
    if (v == LC_NOT_LINEARIZABLE) {
        fail(w, "history of %zu operations is NOT linearizable: %s", res.ops,
             res.detail);
    } else if (v == LC_UNKNOWN) {
        fail(w,
             "linearizability unknown after %.0f s (%zu of %zu keys "
             "checked): %s",
             budget, res.keys_done, res.keys, res.detail);
    }
}

/* Every fault the scenario injects must have happened: faults that
 * silently did nothing (a node ignoring its rules, a nemesis that never
 * acted) would let the scenario pass without testing anything. */
static void check_faults_happened(struct world *w)
{
    const struct scenario *sc = w->sc;
    enum nemesis k = sc->nemesis;
    bool partitions = k == NEM_RANDOM_HALVES || k == NEM_ISOLATE_LEADER ||
                      k == NEM_RING || k == NEM_BRIDGE || k == NEM_PACKETS;
    bool kills = k == NEM_KILL_ONE || k == NEM_KILL_MINORITY ||
                 k == NEM_KILL_LEADER || k == NEM_KILL_ALL || sc->crash;
    if (kills && sc->diskfault && (w->power_losses == 0 || w->kills)) {
        fail(w, "%" PRIu64 " power losses and %" PRIu64 " kills -9",
             w->power_losses, w->kills);
    }
    if (sc->diskfault && w->tr_crashes != w->power_losses) {
        /* Each power loss shows in a trace (the shim undid what was not
         * synced): no node merely died of a signal. */
        fail(w,
             "%" PRIu64 " power losses made, %" PRIu64 " in the nodes' traces",
             w->power_losses, w->tr_crashes);
    }
    if (k == NEM_DISK_FULL && (w->disk_fulls == 0 || w->tr_enospc == 0)) {
        fail(w,
             "%" PRIu64 " disks filled, %" PRIu64
             " writes failed for lack of space",
             w->disk_fulls, w->tr_enospc);
    }
    if (k == NEM_SYNC_FAIL && (w->sync_fails == 0 || w->tr_eio == 0)) {
        fail(w, "%" PRIu64 " syncs set to fail, %" PRIu64 " failed",
             w->sync_fails, w->tr_eio);
    }
    if (partitions && w->partitions == 0) {
        fail(w, "the nemesis made no partition");
    }
    if (w->partitions && !faults_packet_cut && w->inj_cut == 0) {
        fail(w,
             "%" PRIu64
             " partitions but no call was cut: the nodes did "
             "not apply their cut rules",
             w->partitions);
    }
    if (w->partitions && faults_packet_cut && w->packet_drops == 0) {
        fail(w,
             "%" PRIu64
             " partitions but the packet filter dropped no "
             "packet",
             w->partitions);
    }
    if (kills && w->kills + w->power_losses == 0) {
        fail(w, "no node was killed");
    }
    if (k == NEM_PAUSE_LEADER && w->pauses == 0) {
        fail(w, "no leader was paused");
    }
    uint64_t any = w->kills + w->pauses + w->partitions + w->power_losses +
                   w->disk_fulls + w->sync_fails;
    if (k == NEM_MIXED && any == 0) {
        fail(w, "the mixed nemesis injected nothing");
    }
    if (sc->unreliable &&
        (w->inj_drop_req == 0 || w->inj_drop_rep == 0 || w->inj_delay == 0)) {
        fail(w,
             "unreliable network, but %" PRIu64 " lost requests, %" PRIu64
             " lost replies, %" PRIu64 " delays",
             w->inj_drop_req, w->inj_drop_rep, w->inj_delay);
    }
    if (sc->duplicate && w->inj_dup == 0) {
        fail(w, "duplicating network, but no request was duplicated");
    }
    if (sc->reorder && w->inj_reorder == 0) {
        fail(w, "reordering network, but no reply was held back");
    }
}

static void run_one(const struct scenario *sc, unsigned variant)
{
    struct world *w = calloc(1, sizeof *w);
    CU_ASSERT_FATAL(w != NULL);
    w->sc = sc;
    w->rng = cunit_seed() ^ (unsigned)(uintptr_t)sc->name[0] ^
             (unsigned)strlen(sc->name) * 2654435761u ^ variant * 40503u;
    w->seed = w->rng;
    pthread_mutex_init(&w->lock, NULL);
    w->hist = lc_history_new();
    CU_ASSERT_FATAL(sc->clients + sc->readers <= MAX_CLIENTS &&
                    sc->servers <= H_MAX_NODES);
    bool multi = sc->workload == WL_BANK || sc->workload == WL_TXN;
    w->n_keys = sc->keys                      ? sc->keys
                : sc->workload == WL_REGISTER ? 3
                : sc->workload == WL_BANK     ? 5
                : sc->workload == WL_TXN      ? 3
                                              : sc->clients;
    CU_ASSERT_FATAL(w->n_keys <= MAX_CLIENTS && (!multi || w->n_keys >= 2));
    for (size_t k = 0; k < w->n_keys; k++) {
        snprintf(w->keys[k], sizeof w->keys[k], "%s%zu",
                 multi ? multi_prefix(w) : "r", k);
    }
    int iterations = sc->iterations       ? sc->iterations
                     : faults_full_tier() ? 3
                                          : 1;
    unsigned ms = sc->iter_ms ? sc->iter_ms : faults_full_tier() ? 5000 : 2500;
    if (start_cluster(w) != 0) {
        CU_FAIL("cluster did not start");
        h_cluster_destroy(&w->c);
        free(w);
        return;
    }
    if (!wait_serving(w, 20000)) {
        fail(w, "no leader within 20 s of starting");
    }
    if (sc->workload == WL_BANK && !w->failed) {
        open_bank(w);
    }
    if (sc->ext && !w->failed) {
        w->ext = sc->ext->start(w);
    }
    if (sc->nem && !w->failed) {
        w->nem = sc->nem->start(w);
    }
    uint64_t drops0 = faults_packet_drops ? faults_packet_drops() : 0;
    pthread_mutex_lock(&w->lock);
    apply_links(w); /* unreliable or reordering from the start */
    pthread_mutex_unlock(&w->lock);
    int64_t t0 = now_ns();
    for (int i = 0; i < iterations && !w->failed && (!sc->ext || w->ext) &&
                    (!sc->nem || w->nem);
         i++) {
        run_round(w, ms);
    }
    /* Collect the counts of the rules still in force (clients and the
     * nemesis have stopped). */
    for (size_t i = 0; i < w->c.n; i++) {
        read_counts(w, i);
    }
    if (faults_packet_drops) {
        w->packet_drops = faults_packet_drops() - drops0;
    }
    for (size_t i = 0; i < w->c.n && sc->diskfault; i++) {
        const char *tr = w->c.nodes[i].trace;
        w->tr_crashes +=
            h_file_count(tr, " crash\n") + h_file_count(tr, " torn\n");
        w->tr_enospc += h_file_count(tr, " -ENOSPC\n");
        w->tr_eio += h_file_count(tr, " -EIO\n");
    }
    if (!w->failed) {
        check_faults_happened(w);
    }
    char ext_line[600] = "";
    if (w->ext) {
        sc->ext->check(w->ext, w);
        ext_line[0] = ';';
        ext_line[1] = ' ';
        sc->ext->finish(w->ext, ext_line + 2, sizeof ext_line - 2);
        w->ext = NULL;
    }
    char nem_line[600] = "";
    if (w->nem) {
        nem_line[0] = ';';
        nem_line[1] = ' ';
        sc->nem->finish(w->nem, w, nem_line + 2, sizeof nem_line - 2);
        w->nem = NULL;
    }
    double secs = 0;
    check_history(w, &secs);
    char disk[300] = "";
    if (sc->diskfault) {
        snprintf(disk, sizeof disk,
                 ", %" PRIu64 " power losses (%" PRIu64
                 " at a log write or sync; %" PRIu64 " in the traces), %" PRIu64
                 " full disks, %" PRIu64 " failing syncs, %" PRIu64
                 " writes failed ENOSPC, %" PRIu64 " operations failed EIO",
                 w->power_losses, w->at_write, w->tr_crashes, w->disk_fulls,
                 w->sync_fails, w->tr_enospc, w->tr_eio);
    }
    char multi_line[300] = "";
    if (sc->workload == WL_BANK) {
        snprintf(multi_line, sizeof multi_line,
                 "; bank: %zu accounts, %" PRIu64 " transfers (%" PRIu64
                 " retried after a compare failed), %" PRIu64
                 " ranges each summing to %zu",
                 w->n_keys, w->transfers, w->conflicts, w->sums_checked,
                 w->bank_total);
    } else if (sc->workload == WL_TXN) {
        snprintf(multi_line, sizeof multi_line,
                 "; txn: %zu keys, %" PRIu64 " txns succeeded, %" PRIu64
                 " failed their compares, %" PRIu64
                 " answered had no "
                 "write, %" PRIu64 " ranges",
                 w->n_keys, w->transfers, w->conflicts, w->read_only,
                 w->ranges);
    }
    printf(
        "\n  %s: %zu servers, %zu clients x %d rounds of %u ms, %.1f s; "
        "ops: %" PRIu64 " ok, %" PRIu64 " unknown, %" PRIu64
        " not applied; faults: %" PRIu64 " kills, %" PRIu64 " pauses, %" PRIu64
        " partitions, injected %" PRIu64 " cut calls, %" PRIu64
        " lost requests, %" PRIu64 " lost replies, %" PRIu64 " delays, %" PRIu64
        " duplicates, %" PRIu64 " reorders, %" PRIu64
        " dropped packets%s%s%s%s; "
        "history %zu ops checked in %.2f s: %s; seed %u\n",
        sc->name, sc->servers, sc->clients, iterations, ms,
        (double)(now_ns() - t0) / 1e9, w->ok, w->unknown, w->refused, w->kills,
        w->pauses, w->partitions, w->inj_cut, w->inj_drop_req, w->inj_drop_rep,
        w->inj_delay, w->inj_dup, w->inj_reorder, w->packet_drops, disk,
        multi_line, ext_line, nem_line, lc_history_size(w->hist), secs,
        w->failed ? "FAILED"
        : sc->ext ? "ok"
                  : "linearizable",
        cunit_seed());
    CU_ASSERT(!w->failed);
    if (w->failed && lc_history_size(w->hist)) {
        char path[600];
        snprintf(path, sizeof path, "%s/history.jsonl", w->c.root);
        FILE *f = fopen(path, "w");
        if (f) {
            lc_history_write(w->hist, f);
            fclose(f);
            fprintf(stderr, "%s: history in %s (check: lincheck %s)\n",
                    sc->name, path, path);
        }
    }
    if (w->failed) {
        w->c.keep = true;
    }
    for (size_t c = 0; c < w->n_clients; c++) {
        clerk_close(w->clients[c].ck);
        free(w->clients[c].appends);
    }
    clerk_close(w->admin);
    h_cluster_destroy(&w->c);
    lc_history_free(w->hist);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

void faults_run(const struct scenario *sc)
{
    if (sc->full_only && !faults_full_tier()) {
        printf("\n  %s: full tier only (RAFTKV_FAULT_TIER=full)\n", sc->name);
        return;
    }
    run_one(sc, 0);
    if (faults_full_tier()) {
        /* The full tier again on 7 nodes, with other choices (a nemesis
         * that changes the membership: from 5 nodes up to 7). */
        struct scenario big = *sc;
        char name[200];
        snprintf(name, sizeof name, "%s_%s", sc->name,
                 sc->nem ? "5_to_7_nodes" : "7_nodes");
        big.name = name;
        big.servers = sc->nem ? 5 : 7;
        big.max_servers = 7;
        run_one(&big, 1);
    }
}
