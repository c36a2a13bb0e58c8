/* sim.c - deterministic simulator: nodes, storage, network, invariants. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define SNAP_HEADER 32

/* A stored log entry (owned copy). */
struct disk_entry
{
    uint64_t term;             /* entry term */
    uint64_t index;            /* entry index */
    enum raft_entry_type type; /* entry type */
    uint8_t *data;             /* payload */
    size_t len;                /* payload length */
};

/* What survives a crash. Two parts, written and synced separately, the
 * state part first (as kvserver does): the state machine (applied index,
 * hash chain, values, snapshot, staging area) and the log (hard state,
 * stored entries). */
struct disk
{
    struct raft_hard_state hs; /* log: hard state */
    struct disk_entry *log;    /* log: stored entries, consecutive */
    size_t n;                  /* number */
    size_t cap;                /* allocated */
    uint64_t snap_index;       /* state: snapshot index (the log's base) */
    uint64_t snap_term;        /* state: snapshot term */
    uint64_t snap_chain;       /* state: hash chain at the snapshot; its
                                  bytes are made from it per stream */
    uint8_t *stage;            /* state: incoming snapshot being staged */
    size_t stage_len;          /* bytes staged */
    uint64_t stage_index;      /* its index */
    uint64_t stage_term;       /* its term */
    uint64_t stage_stream;     /* its sender's stream */
    uint64_t applied;          /* state machine: last applied index */
    uint64_t applied_term;     /* term of that entry */
    uint64_t chain;            /* state machine: hash chain of commands */
    uint64_t *values;          /* state machine: value applied per index */
    size_t values_cap;         /* allocated */
    uint8_t *conf;             /* state machine: the configuration as of
                                  applied (NULL: the bootstrap one) */
    size_t conf_len;           /* its length */
    uint8_t *snap_conf;        /* state: the configuration as of
                                  snap_index */
    size_t snap_conf_len;      /* its length */
};

/* A simulated server. */
struct node
{
    struct raft *r;       /* the core, NULL when down */
    bool up;              /* running */
    bool connected;       /* all links up (lab's connected[i]) */
    unsigned incarnation; /* bumped at each crash */
    struct disk d;        /* persisted state */
    bool busy;            /* an update is being written (or held) */
    struct raft_update u; /* that update */
    bool frozen;          /* its write failed: held, retried later;
                             the node refuses everything meanwhile */
    bool state_done;      /* its state part is on disk already */
    unsigned fail_next;   /* writes still to fail (sim_disk_fail) */
    bool fail_log_only;   /* ... after their state part succeeded */
    bool crash_mid;       /* crash between the parts of a write */
    uint64_t stream_to[SIM_MAX_NODES]; /* snapshot stream sent to each */
    uint64_t promise_term;             /* highest term it sent a vote in */
    uint64_t promise_vote;             /* for whom (itself as candidate) */
    struct raft_message **inbox;       /* messages that arrived while busy */
    size_t n_inbox;                    /* number */
    size_t cap_inbox;                  /* allocated */
    uint64_t cookies[256];     /* requests stepped since the last update */
    uint64_t cookie_from[256]; /* their senders */
    int cookie_type[256];      /* their types */
    size_t n_cookies;          /* number */
    uint64_t last_commit;      /* commit index last seen (monotonic) */
    bool led;                  /* its last update said it leads */
    bool joiner;               /* not in the bootstrap configuration: it
                                  starts knowing none */
    unsigned disk_min;         /* write latency range */
    unsigned disk_max;         /* ... */
};

/* A scheduled event: a message delivery or a write completion. */
struct event
{
    uint64_t time;          /* when */
    uint64_t seq;           /* tie breaker: FIFO */
    unsigned node;          /* destination / writer */
    unsigned from;          /* sender (deliveries) */
    unsigned incarnation;   /* writer's incarnation (writes) */
    struct raft_message *m; /* message, NULL for a write completion */
};

/* Who led a term (Election Safety); a hash table, as terms may be huge. */
struct leader_slot
{
    uint64_t term; /* key */
    uint64_t id;   /* node number + 1; 0: slot free */
};

/* Globally known truth about one committed index. */
struct gentry
{
    bool set;       /* some node applied it */
    uint64_t term;  /* its term */
    uint64_t seen;  /* lowest term of a node when it applied it: at
                       least the term in which it was committed */
    uint64_t hash;  /* its payload hash */
    uint64_t value; /* its value */
    uint64_t chain; /* state machine chain after it */
};

/* Log Matching record: (index, term) seen in some log. */
struct lm_slot
{
    uint64_t index;     /* key */
    uint64_t term;      /* key */
    uint64_t hash;      /* payload hash */
    uint64_t prev_term; /* term of index - 1 in that log (0: unknown) */
    bool used;          /* slot in use */
};

struct sim
{
    struct sim_config cfg;                   /* configuration */
    struct sim_net net;                      /* network behaviour */
    uint64_t rng;                            /* PRNG */
    uint64_t now;                            /* virtual time */
    struct node nodes[SIM_MAX_NODES];        /* the cluster */
    bool link[SIM_MAX_NODES][SIM_MAX_NODES]; /* link[a][b]: a -> b works */
    struct event *heap;                      /* pending events */
    size_t n_heap;                           /* number */
    size_t cap_heap;                         /* allocated */
    uint64_t ev_seq;                         /* event counter */
    uint64_t cookie;                         /* cookie counter */
    uint64_t stream_seq;                     /* snapshot stream counter */
    unsigned disk_fail;                      /* per-mille of writes failing */
    struct leader_slot *leaders;             /* leader of each term */
    size_t cap_leaders;                      /* slots (power of two) */
    size_t n_leaders;                        /* used */
    struct gentry *gc;                       /* committed truth per index */
    size_t cap_gc;                           /* allocated */
    uint64_t gc_max;        /* highest committed index applied */
    struct lm_slot *lm;     /* Log Matching table */
    size_t cap_lm;          /* slots (power of two) */
    size_t n_lm;            /* used */
    uint64_t *read_floor;   /* per read ctx: gc_max at issue */
    size_t cap_reads;       /* allocated */
    uint64_t read_ctx;      /* counter */
    struct sim_stats stats; /* counters */
    uint64_t changes;       /* membership changes proposed */
    uint64_t handoffs;      /* removed leaders that stepped down */
    bool failed;            /* an invariant failed */
    char why[512];          /* what failed */
};

void (*sim_alloc_guard)(bool armed);

static void arm(bool on)
{
    if (sim_alloc_guard != NULL) {
        sim_alloc_guard(on);
    }
}

/* An allowed allocation failure of the core? */
static bool nomem_ok(const struct sim *s, int rv)
{
    return rv == RAFT_ENOMEM && s->cfg.tolerate_nomem;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (q == NULL && n > 0) {
        fprintf(stderr, "sim: out of memory\n");
        abort();
    }
    return q;
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t sim_random(struct sim *s)
{
    s->rng += 0x9e3779b97f4a7c15ULL;
    return mix64(s->rng);
}

static uint64_t rnd_range(struct sim *s, uint64_t lo, uint64_t hi)
{
    return hi <= lo ? lo : lo + sim_random(s) % (hi - lo + 1);
}

static bool chance(struct sim *s, unsigned permille)
{
    return permille > 0 && sim_random(s) % 1000 < permille;
}

static uint64_t hash_bytes(const void *data, size_t len, int type)
{
    const uint8_t *p = data;
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)type;
    for (size_t k = 0; k < len; k++) {
        h = (h ^ p[k]) * 1099511628211ULL;
    }
    return h;
}

void sim_fail(struct sim *s, const char *fmt, ...)
{
    if (s->failed) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(s->why, sizeof s->why,
                     "t=%llu ms: ", (unsigned long long)s->now);
    vsnprintf(s->why + n, sizeof s->why - (size_t)n, fmt, ap);
    va_end(ap);
    s->failed = true;
}

bool sim_failed(const struct sim *s)
{
    return s->failed;
}

const char *sim_why(const struct sim *s)
{
    return s->why;
}

uint64_t sim_now(const struct sim *s)
{
    return s->now;
}

unsigned sim_n(const struct sim *s)
{
    return s->cfg.n;
}

/* ---- messages ---------------------------------------------------------- */

static struct raft_message *msg_copy(const struct raft_message *m)
{
    struct raft_message *c = xrealloc(NULL, sizeof *c);
    *c = *m;
    if (m->type == RAFT_MSG_APPEND && m->u.append.n_entries > 0) {
        size_t n = m->u.append.n_entries;
        struct raft_entry *es = xrealloc(NULL, n * sizeof *es);
        for (size_t k = 0; k < n; k++) {
            es[k] = m->u.append.entries[k];
            es[k].data = NULL;
            if (es[k].len > 0) {
                void *d = xrealloc(NULL, es[k].len);
                memcpy(d, m->u.append.entries[k].data, es[k].len);
                es[k].data = d;
            }
        }
        c->u.append.entries = es;
    }
    if (m->type == RAFT_MSG_SNAPSHOT) {
        c->u.snapshot.data = NULL;
        c->u.snapshot.conf = NULL;
        if (m->u.snapshot.conf_len > 0) {
            void *d = xrealloc(NULL, m->u.snapshot.conf_len);
            memcpy(d, m->u.snapshot.conf, m->u.snapshot.conf_len);
            c->u.snapshot.conf = d;
        }
    }
    if (m->type == RAFT_MSG_SNAPSHOT && m->u.snapshot.len > 0) {
        void *d = xrealloc(NULL, m->u.snapshot.len);
        memcpy(d, m->u.snapshot.data, m->u.snapshot.len);
        c->u.snapshot.data = d;
    }
    return c;
}

static void msg_free(struct raft_message *m)
{
    if (m == NULL) {
        return;
    }
    if (m->type == RAFT_MSG_APPEND) {
        for (size_t k = 0; k < m->u.append.n_entries; k++) {
            free((void *)m->u.append.entries[k].data);
        }
        free((void *)m->u.append.entries);
    }
    if (m->type == RAFT_MSG_SNAPSHOT) {
        free((void *)m->u.snapshot.data);
        free((void *)m->u.snapshot.conf);
    }
    free(m);
}

/* ---- event heap -------------------------------------------------------- */

static bool ev_before(const struct event *a, const struct event *b)
{
    return a->time < b->time || (a->time == b->time && a->seq < b->seq);
}

static void heap_push(struct sim *s, struct event ev)
{
    if (s->n_heap == s->cap_heap) {
        s->cap_heap = s->cap_heap ? s->cap_heap * 2 : 256;
        s->heap = xrealloc(s->heap, s->cap_heap * sizeof *s->heap);
    }
    ev.seq = s->ev_seq++;
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_before(&ev, &s->heap[p])) {
            break;
        }
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = ev;
}

static struct event heap_pop(struct sim *s)
{
    struct event top = s->heap[0];
    struct event last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->n_heap) {
            break;
        }
        if (c + 1 < s->n_heap && ev_before(&s->heap[c + 1], &s->heap[c])) {
            c++;
        }
        if (!ev_before(&s->heap[c], &last)) {
            break;
        }
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->n_heap > 0) {
        s->heap[i] = last;
    }
    return top;
}

/* ---- global truth and invariants --------------------------------------- */

static struct gentry *gc_at(struct sim *s, uint64_t index)
{
    if (index >= s->cap_gc) {
        size_t cap = s->cap_gc ? s->cap_gc : 1024;
        while (cap <= index) {
            cap *= 2;
        }
        s->gc = xrealloc(s->gc, cap * sizeof *s->gc);
        memset(s->gc + s->cap_gc, 0, (cap - s->cap_gc) * sizeof *s->gc);
        s->cap_gc = cap;
    }
    return &s->gc[index];
}

static void lm_grow(struct sim *s);

static struct lm_slot *lm_find(struct sim *s, uint64_t index, uint64_t term)
{
    if (s->n_lm * 2 >= s->cap_lm) {
        lm_grow(s);
    }
    size_t mask = s->cap_lm - 1;
    size_t i = mix64(index * 1000003ULL + term) & mask;
    while (s->lm[i].used &&
           (s->lm[i].index != index || s->lm[i].term != term)) {
        i = (i + 1) & mask;
    }
    return &s->lm[i];
}

static void lm_grow(struct sim *s)
{
    struct lm_slot *old = s->lm;
    size_t old_cap = s->cap_lm;
    s->cap_lm = old_cap ? old_cap * 2 : 4096;
    s->lm = xrealloc(NULL, s->cap_lm * sizeof *s->lm);
    memset(s->lm, 0, s->cap_lm * sizeof *s->lm);
    s->n_lm = 0;
    for (size_t k = 0; k < old_cap; k++) {
        if (old[k].used) {
            struct lm_slot *n = lm_find(s, old[k].index, old[k].term);
            *n = old[k];
            s->n_lm++;
        }
    }
    free(old);
}

/* Log Matching (Figure 3): same index and term => same entry and same
 * preceding entry (by induction, identical logs up to there). */
static void check_log_matching(struct sim *s,
                               unsigned i,
                               const struct raft_entry *e)
{
    uint64_t prev_term = 0;
    uint64_t h = hash_bytes(e->data, e->len, e->type);
    if (e->index > 1 &&
        raft_entry_term(s->nodes[i].r, e->index - 1, &prev_term) != 0) {
        prev_term = 0;
    }
    struct lm_slot *slot = lm_find(s, e->index, e->term);
    if (!slot->used) {
        slot->used = true;
        slot->index = e->index;
        slot->term = e->term;
        slot->hash = h;
        slot->prev_term = prev_term;
        s->n_lm++;
        return;
    }
    if (slot->hash != h) {
        sim_fail(s, "log matching: node %u entry %llu/%llu differs", i,
                 (unsigned long long)e->index, (unsigned long long)e->term);
    }
    if (slot->prev_term != 0 && prev_term != 0 &&
        slot->prev_term != prev_term) {
        sim_fail(s,
                 "log matching: node %u entry %llu/%llu has prev term "
                 "%llu, another log %llu",
                 i, (unsigned long long)e->index, (unsigned long long)e->term,
                 (unsigned long long)prev_term,
                 (unsigned long long)slot->prev_term);
    }
    if (slot->prev_term == 0) {
        slot->prev_term = prev_term;
    }
}

static struct leader_slot *leader_of(struct sim *s, uint64_t term)
{
    if (s->n_leaders * 2 >= s->cap_leaders) {
        struct leader_slot *old = s->leaders;
        size_t old_cap = s->cap_leaders;
        s->cap_leaders = old_cap ? old_cap * 2 : 256;
        s->leaders = xrealloc(NULL, s->cap_leaders * sizeof *s->leaders);
        memset(s->leaders, 0, s->cap_leaders * sizeof *s->leaders);
        s->n_leaders = 0;
        for (size_t k = 0; k < old_cap; k++) {
            if (old[k].id != 0) {
                *leader_of(s, old[k].term) = old[k];
                s->n_leaders++;
            }
        }
        free(old);
    }
    size_t mask = s->cap_leaders - 1;
    size_t k = mix64(term) & mask;
    while (s->leaders[k].id != 0 && s->leaders[k].term != term) {
        k = (k + 1) & mask;
    }
    return &s->leaders[k];
}

/* Election Safety and Leader Completeness (Figure 3). */
static void check_new_leader(struct sim *s, unsigned i, uint64_t term)
{
    struct leader_slot *l = leader_of(s, term);
    if (l->id != 0 && l->id != i + 1) {
        sim_fail(s, "election safety: nodes %llu and %u both lead term %llu",
                 (unsigned long long)l->id - 1, i, (unsigned long long)term);
        return;
    }
    if (l->id == 0) {
        s->n_leaders++;
    }
    l->term = term;
    l->id = i + 1;
    struct raft *r = s->nodes[i].r;
    /* A leader is a voter, unless its latest configuration (its own
     * removal, not committed yet) says otherwise. */
    if (!raft_is_voter(r, i + 1) &&
        raft_conf_index(r) <= raft_commit_index(r)) {
        sim_fail(s,
                 "membership: node %u leads term %llu without being a "
                 "voter in its configuration",
                 i, (unsigned long long)term);
        return;
    }
    uint64_t first = raft_first_index(r);
    for (uint64_t idx = first; idx <= s->gc_max; idx++) {
        uint64_t t;
        /* Figure 3: an entry committed in a term is in the logs of the
         * leaders of every higher term. A leader of an older term can
         * still be elected late (votes of its term delivered after a newer
         * leader committed) and lack it. */
        if (!s->gc[idx].set || s->gc[idx].seen >= term) {
            continue;
        }
        if (raft_entry_term(r, idx, &t) != 0 || t != s->gc[idx].term) {
            sim_fail(s,
                     "leader completeness: node %u leads term %llu "
                     "without committed entry %llu",
                     i, (unsigned long long)term, (unsigned long long)idx);
            return;
        }
    }
}

/* One membership change at a time: a leader's log holds at most one
 * configuration entry that no node knows to be committed. */
static void check_one_change(struct sim *s, unsigned i)
{
    uint64_t known = s->gc_max;
    for (unsigned k = 0; k < s->cfg.n; k++) {
        if (s->nodes[k].up && raft_commit_index(s->nodes[k].r) > known) {
            known = raft_commit_index(s->nodes[k].r);
        }
    }
    struct raft *r = s->nodes[i].r;
    unsigned confs = 0;
    uint64_t first = raft_first_index(r);
    for (uint64_t idx = raft_last_index(r); idx > known && idx >= first;
         idx--) {
        const struct raft_entry *e = raft_entry_at(r, idx);
        confs += e != NULL && e->type == RAFT_ENTRY_CONFIG;
    }
    if (confs > 1) {
        sim_fail(s,
                 "membership: leader %u holds %u uncommitted configuration "
                 "entries",
                 i, confs);
    }
}

/* State Machine Safety: every node applies the same entry at an index. */
static void check_apply(struct sim *s,
                        unsigned i,
                        const struct raft_entry *e,
                        uint64_t value,
                        uint64_t chain)
{
    struct gentry *g = gc_at(s, e->index);
    uint64_t h = hash_bytes(e->data, e->len, e->type);
    /* A node applies an entry only once it learned that it is committed,
     * from a leader of the term that committed it or of a later one (or
     * as that leader): its term is at least the commit's term. */
    uint64_t now_term = raft_term(s->nodes[i].r);
    if (g->set && now_term < g->seen) {
        g->seen = now_term;
    }
    if (!g->set) {
        g->set = true;
        g->term = e->term;
        g->seen = now_term;
        g->hash = h;
        g->value = value;
        g->chain = chain;
        if (e->index > s->gc_max) {
            s->gc_max = e->index;
        }
        return;
    }
    if (g->term != e->term || g->hash != h || g->chain != chain) {
        sim_fail(s,
                 "state machine safety: node %u applied a different "
                 "entry at %llu (term %llu vs %llu)",
                 i, (unsigned long long)e->index, (unsigned long long)e->term,
                 (unsigned long long)g->term);
    }
}

/* ---- storage ----------------------------------------------------------- */

static uint64_t disk_last(const struct disk *d)
{
    return d->n > 0 ? d->log[d->n - 1].index : d->snap_index;
}

static void disk_drop_from(struct disk *d, uint64_t from)
{
    while (d->n > 0 && d->log[d->n - 1].index >= from) {
        free(d->log[--d->n].data);
    }
}

static void disk_drop_upto(struct disk *d, uint64_t upto)
{
    size_t k = 0;
    while (k < d->n && d->log[k].index <= upto) {
        free(d->log[k].data);
        k++;
    }
    if (k > 0) {
        memmove(d->log, d->log + k, (d->n - k) * sizeof *d->log);
        d->n -= k;
    }
}

static void disk_set_value(struct disk *d, uint64_t index, uint64_t value)
{
    if (index >= d->values_cap) {
        size_t cap = d->values_cap ? d->values_cap : 1024;
        while (cap <= index) {
            cap *= 2;
        }
        d->values = xrealloc(d->values, cap * sizeof *d->values);
        memset(d->values + d->values_cap, 0,
               (cap - d->values_cap) * sizeof *d->values);
        d->values_cap = cap;
    }
    d->values[index] = value;
}

static void set_blob(uint8_t **to, size_t *to_len, const void *p, size_t len)
{
    free(*to);
    *to = NULL;
    *to_len = len;
    if (len > 0) {
        *to = xrealloc(NULL, len);
        memcpy(*to, p, len);
    }
}

static void disk_free(struct disk *d)
{
    disk_drop_from(d, 0);
    free(d->log);
    free(d->stage);
    free(d->values);
    free(d->conf);
    free(d->snap_conf);
    memset(d, 0, sizeof *d);
}

static uint64_t entry_value(const struct raft_entry *e)
{
    uint64_t v = 0;
    if (e->type == RAFT_ENTRY_NORMAL && e->len >= 8) {
        memcpy(&v, e->data, 8);
    }
    return v;
}

/* Byte @k of the snapshot (@index, @term, @chain) as produced for stream
 * @stream: a header {index, term, chain, stream}, then a pattern of the
 * chain, all masked by the stream. Two productions of one snapshot differ
 * at almost every offset, as those of a node streaming its moving state
 * do, so chunks of two streams mixed in one staging area are caught. */
static uint8_t snap_mask(uint64_t stream, size_t k)
{
    return (uint8_t)mix64(stream * 0x9e3779b97f4a7c15ULL + k);
}

static uint8_t snap_byte(const uint64_t hdr[4], size_t k)
{
    uint8_t plain = k < SNAP_HEADER ? (uint8_t)(hdr[k / 8] >> (8 * (k % 8)))
                                    : (uint8_t)((hdr[2] >> (8 * (k % 8))) ^ k);
    return plain ^ snap_mask(hdr[3], k);
}

static size_t snap_len(const struct sim *s)
{
    return SNAP_HEADER + s->cfg.snapshot_pad;
}

/* The state machine, as it is now, becomes the snapshot. */
static void make_snapshot(struct disk *d)
{
    d->snap_index = d->applied;
    d->snap_term = d->applied_term;
    d->snap_chain = d->chain;
    set_blob(&d->snap_conf, &d->snap_conf_len, d->conf, d->conf_len);
}

/* Check the staged bytes (of stream @stream) and read their header. */
static bool parse_snapshot(struct sim *s,
                           const uint8_t *b,
                           size_t len,
                           uint64_t stream,
                           uint64_t hdr[4])
{
    if (len != snap_len(s)) {
        return false;
    }
    memset(hdr, 0, 4 * sizeof hdr[0]);
    for (size_t k = 0; k < SNAP_HEADER; k++) {
        uint8_t plain = b[k] ^ snap_mask(stream, k);
        hdr[k / 8] |= (uint64_t)plain << (8 * (k % 8));
    }
    if (hdr[3] != stream) {
        return false;
    }
    for (size_t k = 0; k < len; k++) {
        if (b[k] != snap_byte(hdr, k)) {
            return false;
        }
    }
    return true;
}

/* ---- nodes ------------------------------------------------------------- */

static void send_msg(struct sim *s,
                     unsigned from,
                     const struct raft_message *m);

static bool node_ok(const struct sim *s, unsigned i)
{
    return s->nodes[i].up && !s->nodes[i].busy;
}

/* Step @m into node @i; a request gets a cookie and must get exactly one
 * response, unless raft_step() fails (then the node answers an error). */
static int step_raw(struct sim *s, unsigned i, struct raft_message *m)
{
    struct node *nd = &s->nodes[i];
    bool req = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_APPEND ||
               m->type == RAFT_MSG_SNAPSHOT || m->type == RAFT_MSG_TIMEOUT_NOW;
    if (req) {
        if (nd->n_cookies == 256) {
            sim_fail(s, "too many requests in one turn on node %u", i);
            return RAFT_EBUSY;
        }
        m->cookie = ++s->cookie;
        nd->cookies[nd->n_cookies] = m->cookie;
        nd->cookie_from[nd->n_cookies] = m->from;
        nd->cookie_type[nd->n_cookies] = m->type;
        nd->n_cookies++;
    }
    arm(true);
    int rv = raft_step(nd->r, m);
    arm(false);
    if (rv != 0) {
        nd->n_cookies -= req;
    }
    return rv;
}

static void step_into(struct sim *s, unsigned i, struct raft_message *m)
{
    /* Only a term that jumps too far may be refused (after sim_inject). */
    bool far = m->term > raft_term(s->nodes[i].r) + RAFT_TERM_MAX_JUMP;
    int rv = step_raw(s, i, m);
    if (rv != 0 && !nomem_ok(s, rv) && !(rv == RAFT_EINVAL && far)) {
        sim_fail(s, "node %u: raft_step(type %d) failed: %s", i, m->type,
                 raft_strerror(rv));
    }
}

/* Every request stepped in gets exactly one response with its cookie. */
static void check_pairing(struct sim *s,
                          unsigned i,
                          const struct raft_update *u)
{
    struct node *nd = &s->nodes[i];
    for (size_t k = 0; k < u->n_early; k++) {
        if (u->early[k].cookie != 0 || u->early[k].type % 2 == 0) {
            sim_fail(s, "node %u: early message is not a request", i);
        }
    }
    for (size_t c = 0; c < nd->n_cookies; c++) {
        unsigned found = 0;
        for (size_t k = 0; k < u->n_messages; k++) {
            const struct raft_message *m = &u->messages[k];
            if (m->cookie == nd->cookies[c]) {
                if ((int)m->type != nd->cookie_type[c] + 1 ||
                    m->to != nd->cookie_from[c]) {
                    sim_fail(s, "node %u: response of wrong type/peer", i);
                }
                found++;
            }
        }
        if (found != 1) {
            sim_fail(s, "node %u: request type %d got %u responses", i,
                     nd->cookie_type[c], found);
        }
    }
    for (size_t k = 0; k < u->n_messages; k++) {
        const struct raft_message *m = &u->messages[k];
        bool resp = m->type % 2 == 0;
        if (resp != (m->cookie != 0)) {
            sim_fail(s, "node %u: message type %d with cookie %llu", i, m->type,
                     (unsigned long long)m->cookie);
        }
    }
    nd->n_cookies = 0;
}

static void attempt_write(struct sim *s, unsigned i);

static void begin_update(struct sim *s, unsigned i)
{
    struct node *nd = &s->nodes[i];
    arm(true);
    int rv = raft_get_update(nd->r, &nd->u);
    arm(false);
    if (nomem_ok(s, rv)) {
        return;
    }
    if (rv != 0) {
        sim_fail(s, "node %u: raft_get_update: %s", i, raft_strerror(rv));
        return;
    }
    struct raft_update *u = &nd->u;
    check_pairing(s, i, u);
    for (size_t k = 0; k < u->n_entries; k++) {
        check_log_matching(s, i, &u->entries[k]);
    }
    if (u->role_changed && u->role == RAFT_LEADER) {
        check_new_leader(s, i, u->term);
    }
    if (u->role == RAFT_LEADER) {
        check_one_change(s, i);
    }
    if (u->role_changed) {
        if (nd->led && u->role != RAFT_LEADER && !raft_is_voter(nd->r, i + 1)) {
            s->handoffs++;
        }
        nd->led = u->role == RAFT_LEADER;
    }
    if (u->hs.commit < nd->d.hs.commit) {
        sim_fail(s, "node %u: hard state commit goes back", i);
    }
    for (size_t k = 0; k < u->n_early; k++) {
        send_msg(s, i, &u->early[k]);
    }
    nd->busy = true;
    nd->state_done = false;
    bool writes = u->hs_changed || u->n_entries || u->n_chunks || u->install ||
                  u->truncate_from;
    if (!writes || nd->disk_max == 0) {
        attempt_write(s, i);
        return;
    }
    struct event ev = {0};
    ev.time = s->now + rnd_range(s, nd->disk_min, nd->disk_max);
    ev.node = i;
    ev.incarnation = nd->incarnation;
    heap_push(s, ev);
}

/* The state part of a write: stage chunks, install a snapshot, apply the
 * committed entries. kvserver commits it (LMDB) before the log part. */
static void persist_state(struct sim *s,
                          unsigned i,
                          const struct raft_update *u)
{
    struct disk *d = &s->nodes[i].d;
    for (size_t k = 0; k < u->n_chunks; k++) {
        const struct raft_snapshot_chunk *c = &u->chunks[k];
        if (c->offset == 0) {
            d->stage_len = 0;
            d->stage_index = c->index;
            d->stage_term = c->term;
            d->stage_stream = c->stream;
        }
        if (c->index != d->stage_index || c->term != d->stage_term ||
            c->stream != d->stage_stream || c->offset != d->stage_len) {
            sim_fail(s,
                     "node %u: chunk at %llu (stream %llu) does not continue "
                     "staging (stream %llu, %zu bytes)",
                     i, (unsigned long long)c->offset,
                     (unsigned long long)c->stream,
                     (unsigned long long)d->stage_stream, d->stage_len);
            return;
        }
        d->stage = xrealloc(d->stage, d->stage_len + c->len + 1);
        if (c->len > 0) {
            memcpy(d->stage + d->stage_len, c->data, c->len);
        }
        d->stage_len += c->len;
    }
    if (u->install) {
        uint64_t hdr[4];
        if (d->stage_index != u->install_index ||
            d->stage_term != u->install_term ||
            !parse_snapshot(s, d->stage, d->stage_len, d->stage_stream, hdr) ||
            hdr[0] != u->install_index || hdr[1] != u->install_term) {
            sim_fail(s, "node %u: staged snapshot is corrupt", i);
            return;
        }
        struct gentry *g = gc_at(s, hdr[0]);
        if (!g->set || g->chain != hdr[2]) {
            sim_fail(s,
                     "node %u: snapshot %llu state differs from the "
                     "committed one",
                     i, (unsigned long long)hdr[0]);
            return;
        }
        if (hdr[0] <= d->applied) {
            sim_fail(s, "node %u: snapshot %llu installed over applied %llu", i,
                     (unsigned long long)hdr[0],
                     (unsigned long long)d->applied);
            return;
        }
        for (uint64_t idx = d->applied + 1; idx <= hdr[0]; idx++) {
            disk_set_value(d, idx, gc_at(s, idx)->value);
        }
        d->stage_len = 0;
        d->applied = hdr[0];
        d->applied_term = hdr[1];
        d->chain = hdr[2];
        if (u->install_conf_len == 0) {
            sim_fail(s,
                     "node %u: a snapshot installed without its "
                     "configuration",
                     i);
            return;
        }
        set_blob(&d->conf, &d->conf_len, u->install_conf, u->install_conf_len);
        make_snapshot(d);
        s->stats.installs++;
    }
    for (size_t k = 0; k < u->n_committed; k++) {
        const struct raft_entry *e = &u->committed[k];
        if (e->index != d->applied + 1) {
            sim_fail(s, "node %u: applies %llu after %llu", i,
                     (unsigned long long)e->index,
                     (unsigned long long)d->applied);
            return;
        }
        if (e->index > u->hs.commit) {
            sim_fail(s, "node %u: applies %llu beyond commit %llu", i,
                     (unsigned long long)e->index,
                     (unsigned long long)u->hs.commit);
            return;
        }
        uint64_t value = entry_value(e);
        d->chain =
            mix64(d->chain ^ hash_bytes(e->data, e->len, e->type) ^ e->term);
        d->applied = e->index;
        d->applied_term = e->term;
        disk_set_value(d, e->index, value);
        if (e->type == RAFT_ENTRY_CONFIG) {
            set_blob(&d->conf, &d->conf_len, e->data, e->len);
        }
        check_apply(s, i, e, value, d->chain);
    }
}

/* The log part of a write: drop what a snapshot covers, truncate, append,
 * write the hard state. One append and one sync in kvserver's WAL. */
static void persist_log(struct sim *s, unsigned i, const struct raft_update *u)
{
    struct disk *d = &s->nodes[i].d;
    if (u->install) {
        disk_drop_upto(d, u->install_index);
    }
    if (u->truncate_from != 0) {
        disk_drop_from(d, u->truncate_from);
    }
    for (size_t k = 0; k < u->n_entries; k++) {
        const struct raft_entry *e = &u->entries[k];
        if (e->index != disk_last(d) + 1) {
            sim_fail(s, "node %u: entry %llu stored after %llu", i,
                     (unsigned long long)e->index,
                     (unsigned long long)disk_last(d));
            return;
        }
        if (d->n == d->cap) {
            d->cap = d->cap ? d->cap * 2 : 64;
            d->log = xrealloc(d->log, d->cap * sizeof *d->log);
        }
        struct disk_entry *de = &d->log[d->n++];
        de->term = e->term;
        de->index = e->index;
        de->type = e->type;
        de->len = e->len;
        de->data = NULL;
        if (e->len > 0) {
            de->data = xrealloc(NULL, e->len);
            memcpy(de->data, e->data, e->len);
        }
    }
    if (u->hs_changed) {
        if (u->hs.term < d->hs.term ||
            (u->hs.term == d->hs.term && d->hs.vote != 0 &&
             u->hs.vote != d->hs.vote)) {
            sim_fail(s, "node %u: term or vote goes back", i);
        }
        d->hs = u->hs;
    }
}

/* Completed reads: none may miss an index committed before it was issued. */
static void answer_reads(struct sim *s, unsigned i, const struct raft_update *u)
{
    for (size_t k = 0; k < u->n_reads; k++) {
        const struct raft_read *rd = &u->reads[k];
        if (!rd->ok) {
            s->stats.reads_failed++;
            continue;
        }
        s->stats.reads_ok++;
        if (rd->ctx < s->cap_reads && rd->index < s->read_floor[rd->ctx]) {
            sim_fail(s,
                     "node %u: stale read at %llu, %llu was committed "
                     "before it was issued",
                     i, (unsigned long long)rd->index,
                     (unsigned long long)s->read_floor[rd->ctx]);
        }
    }
}

static void drop_inbox(struct node *nd)
{
    for (size_t k = 0; k < nd->n_inbox; k++) {
        msg_free(nd->inbox[k]);
    }
    nd->n_inbox = 0;
}

static void process_inbox(struct sim *s, unsigned i);

/* Everything after a successful write: messages, advance, compaction. */
static void finish_update(struct sim *s, unsigned i)
{
    struct node *nd = &s->nodes[i];
    answer_reads(s, i, &nd->u);
    for (size_t k = 0; k < nd->u.n_messages; k++) {
        send_msg(s, i, &nd->u.messages[k]);
    }
    arm(true);
    int rv = raft_advance(nd->r, &nd->u);
    arm(false);
    if (rv != 0) {
        sim_fail(s, "node %u: raft_advance: %s", i, raft_strerror(rv));
    }
    nd->busy = false;
    nd->frozen = false;
    nd->state_done = false;
    struct disk *d = &nd->d;
    if (s->cfg.snapshot_every > 0 &&
        d->applied >= d->snap_index + s->cfg.snapshot_every) {
        make_snapshot(d);
        if (d->snap_index > s->cfg.trailing) {
            disk_drop_upto(d, d->snap_index - s->cfg.trailing);
        }
    }
    if (d->snap_index > raft_snapshot_index(nd->r)) {
        /* Tell the core; after a failure (RAFT_ENOMEM) try again later. */
        arm(true);
        rv = raft_snapshot_taken(nd->r, d->snap_index, d->snap_term);
        arm(false);
        /* A joined node knows no configuration before the entry that
         * added it: no snapshot of the core's there. */
        bool unknown = rv == RAFT_EINVAL && d->snap_conf == NULL && nd->joiner;
        if (rv != 0 && !nomem_ok(s, rv) && !unknown) {
            sim_fail(s, "node %u: raft_snapshot_taken(%llu): %s (%s)", i,
                     (unsigned long long)d->snap_index, raft_strerror(rv),
                     raft_errmsg(nd->r));
        }
    }
    process_inbox(s, i);
}

/* Write the outstanding update, as kvserver's node_persist does: the state
 * part, then the log part. A failed write (sim_disk_fail, or at random)
 * leaves nothing of the failed part on disk; the node holds the update,
 * sends none of u.messages, refuses every message and call, and tries the
 * same write again after retry_ms (node.c: freeze, on_retry). A crash
 * between the parts (sim_crash_mid_write) keeps only the state part. */
static void attempt_write(struct sim *s, unsigned i)
{
    struct node *nd = &s->nodes[i];
    const struct raft_update *u = &nd->u;
    bool has_state = u->n_chunks || u->install || u->n_committed;
    bool has_log =
        u->install || u->truncate_from || u->n_entries || u->hs_changed;
    if (nd->crash_mid && has_state && has_log) {
        if (!nd->state_done) {
            persist_state(s, i, u);
        }
        nd->crash_mid = false;
        s->stats.write_crashes++;
        sim_crash(s, i);
        return;
    }
    bool fail = false;
    if (has_state || has_log) {
        if (nd->fail_next > 0) {
            nd->fail_next--;
            fail = true;
        } else if (chance(s, s->disk_fail)) {
            fail = true;
            nd->fail_log_only = chance(s, 500);
            nd->fail_next = (unsigned)rnd_range(s, 0, 2); /* in a row */
        }
    }
    if (!nd->state_done && (!fail || nd->fail_log_only)) {
        persist_state(s, i, u);
        nd->state_done = true;
    }
    if (s->failed) {
        return;
    }
    if (fail) {
        s->stats.disk_failures++;
        nd->frozen = true;
        drop_inbox(nd); /* what arrived during the write is refused */
        struct event ev = {0};
        ev.time = s->now + s->cfg.retry_ms;
        ev.node = i;
        ev.incarnation = nd->incarnation;
        heap_push(s, ev);
        return;
    }
    persist_log(s, i, u);
    if (!s->failed) {
        finish_update(s, i);
    }
}

static void process_inbox(struct sim *s, unsigned i)
{
    struct node *nd = &s->nodes[i];
    for (size_t k = 0; k < nd->n_inbox; k++) {
        if (nd->up && !nd->busy) {
            step_into(s, i, nd->inbox[k]);
        }
        msg_free(nd->inbox[k]);
    }
    nd->n_inbox = 0;
}

static void pump(struct sim *s, unsigned i)
{
    unsigned guard = 0;
    while (!s->failed && node_ok(s, i) && raft_has_update(s->nodes[i].r)) {
        begin_update(s, i);
        if (++guard > 1000) {
            sim_fail(s, "node %u: updates never end", i);
        }
    }
}

/* ---- network ----------------------------------------------------------- */

static void schedule(struct sim *s,
                     unsigned from,
                     unsigned to,
                     struct raft_message *m,
                     uint64_t delay)
{
    struct event ev = {0};
    ev.time = s->now + delay;
    ev.node = to;
    ev.from = from;
    ev.m = m;
    heap_push(s, ev);
}

/* What a message promises is on disk when it leaves (raft.h, persistence
 * contract): its term (pre-vote excepted, which proposes term + 1), and a
 * vote, given or asked for oneself; and no node votes twice in a term. */
static void check_promise(struct sim *s,
                          unsigned from,
                          const struct raft_message *m)
{
    struct node *nd = &s->nodes[from];
    const struct raft_hard_state *hs = &nd->d.hs;
    bool pre = (m->type == RAFT_MSG_VOTE && m->u.vote.pre_vote) ||
               (m->type == RAFT_MSG_VOTE_RESP && m->u.vote_resp.pre_vote);
    if (!pre && m->term > hs->term) {
        sim_fail(s,
                 "node %u: sent a message (type %d) of term %llu with term "
                 "%llu on disk",
                 from, m->type, (unsigned long long)m->term,
                 (unsigned long long)hs->term);
        return;
    }
    uint64_t vote = 0;
    if (m->type == RAFT_MSG_VOTE && !pre) {
        vote = from + 1;
    } else if (m->type == RAFT_MSG_VOTE_RESP && !pre &&
               m->u.vote_resp.granted) {
        vote = m->to;
    }
    if (vote == 0) {
        return;
    }
    if (hs->term == m->term && hs->vote != vote) {
        sim_fail(s,
                 "node %u: sent its vote for %llu in term %llu, but its "
                 "disk says %llu",
                 from, (unsigned long long)vote, (unsigned long long)m->term,
                 (unsigned long long)hs->vote);
    }
    if (nd->promise_term == m->term && nd->promise_vote != vote) {
        sim_fail(s, "node %u: voted for %llu and %llu in term %llu", from,
                 (unsigned long long)nd->promise_vote, (unsigned long long)vote,
                 (unsigned long long)m->term);
    }
    if (m->term >= nd->promise_term) {
        nd->promise_term = m->term;
        nd->promise_vote = vote;
    }
}

/* The sending node fills an InstallSnapshot chunk from its snapshot, with
 * the stream it sends that follower: a new one at offset 0, after the
 * sender restarted, or when it reopens its source (cfg.stream_reopen). */
static struct raft_message *fill_chunk(struct sim *s,
                                       unsigned from,
                                       unsigned to,
                                       const struct raft_message *m)
{
    struct node *nd = &s->nodes[from];
    const struct disk *d = &nd->d;
    const struct raft_snapshot *sn = &m->u.snapshot;
    size_t size = snap_len(s);
    if (sn->data != NULL || sn->stream != 0) {
        sim_fail(s, "node %u: the core filled a chunk itself", from);
        return NULL;
    }
    if (d->snap_index != sn->index || d->snap_term != sn->term ||
        sn->offset > size) {
        return NULL; /* it no longer has that snapshot: dropped */
    }
    if (sn->offset == 0 || nd->stream_to[to] == 0 ||
        chance(s, s->cfg.stream_reopen)) {
        nd->stream_to[to] = ++s->stream_seq;
    }
    uint64_t hdr[4] = {d->snap_index, d->snap_term, d->snap_chain,
                       nd->stream_to[to]};
    size_t len = size - sn->offset;
    if (len > sn->max_len) {
        len = sn->max_len;
    }
    uint8_t *buf = xrealloc(NULL, len + 1);
    for (size_t k = 0; k < len; k++) {
        buf[k] = snap_byte(hdr, sn->offset + k);
    }
    struct raft_message tmp = *m;
    tmp.u.snapshot.stream = hdr[3];
    tmp.u.snapshot.data = buf;
    tmp.u.snapshot.len = len;
    tmp.u.snapshot.done = sn->offset + len == size;
    s->stats.snap_chunks++;
    struct raft_message *c = msg_copy(&tmp);
    free(buf);
    return c;
}

static void send_msg(struct sim *s, unsigned from, const struct raft_message *m)
{
    unsigned to = (unsigned)m->to - 1;
    bool req = m->type % 2 == 1;
    s->stats.messages++;
    if (req) {
        s->stats.requests++;
    }
    if (to >= s->cfg.n || m->from != from + 1) {
        sim_fail(s, "node %u: message to unknown node %llu", from,
                 (unsigned long long)m->to);
        return;
    }
    check_promise(s, from, m);
    struct raft_message *c;
    if (m->type == RAFT_MSG_SNAPSHOT) {
        c = fill_chunk(s, from, to, m);
        if (c == NULL) {
            return;
        }
    } else {
        if (m->type == RAFT_MSG_APPEND) {
            for (size_t k = 0; k < m->u.append.n_entries; k++) {
                s->stats.entry_bytes += m->u.append.entries[k].len;
            }
        }
        c = msg_copy(m);
    }
    if (!s->link[from][to] ||
        chance(s, req ? s->net.drop_req : s->net.drop_resp)) {
        msg_free(c);
        return;
    }
    uint64_t delay = rnd_range(s, s->net.delay_min, s->net.delay_max);
    if (!req && chance(s, s->net.long_reorder)) {
        delay = rnd_range(s, 200, 2200);
    }
    if (chance(s, s->net.dup)) {
        schedule(s, from, to, msg_copy(c),
                 rnd_range(s, s->net.delay_min, s->net.delay_max + 20));
    }
    schedule(s, from, to, c, delay);
}

static void handle_event(struct sim *s, struct event *ev)
{
    struct node *nd = &s->nodes[ev->node];
    if (ev->m == NULL) {
        if (nd->up && nd->busy && ev->incarnation == nd->incarnation) {
            attempt_write(s, ev->node);
        }
        return;
    }
    if (!nd->up || nd->frozen || !s->link[ev->from][ev->node]) {
        msg_free(ev->m); /* a frozen node refuses requests, drops replies */
        return;
    }
    if (nd->busy) {
        if (nd->n_inbox == nd->cap_inbox) {
            nd->cap_inbox = nd->cap_inbox ? nd->cap_inbox * 2 : 64;
            nd->inbox = xrealloc(nd->inbox, nd->cap_inbox * sizeof *nd->inbox);
        }
        nd->inbox[nd->n_inbox++] = ev->m;
        return;
    }
    step_into(s, ev->node, ev->m);
    msg_free(ev->m);
}

/* ---- lifecycle --------------------------------------------------------- */

/* At start, like kvserver's pick_entries(): the state machine (applied at
 * a, term at) is a snapshot; the stored log goes with it if it holds
 * (a, at), or starts right after a snapshot at a. Otherwise a crash fell
 * between the state and the log part of a write (the state has entries
 * or a snapshot the log lacks): the log is of another branch or too short,
 * and nothing of it after a can be committed; keep only the state. */
static void recover_disk(struct disk *d)
{
    uint64_t a = d->applied;
    uint64_t at = d->applied_term;
    uint64_t first = d->n > 0 ? d->log[0].index : 0;
    uint64_t last = d->n > 0 ? d->log[d->n - 1].index : 0;
    bool holds;
    if (a == 0) {
        holds = true;
    } else if (d->n > 0 && first <= a && a <= last) {
        holds = d->log[a - first].term == at && first <= d->snap_index + 1;
    } else {
        holds = d->snap_index == a && d->snap_term == at &&
                (d->n == 0 || first == a + 1);
    }
    if (!holds) {
        disk_drop_from(d, 0);
        make_snapshot(d);
    }
}

static void start_node(struct sim *s, unsigned i)
{
    struct node *nd = &s->nodes[i];
    uint64_t voters[SIM_MAX_NODES];
    for (unsigned k = 0; k < s->cfg.n; k++) {
        voters[k] = k + 1;
    }
    struct raft_config rc = {0};
    rc.id = i + 1;
    rc.voters = voters;
    rc.n_voters = nd->joiner ? 0 : s->cfg.voters;
    rc.heartbeat_ms = s->cfg.heartbeat_ms;
    rc.election_ms = s->cfg.election_ms;
    rc.seed =
        mix64(s->cfg.seed ^ (i * 7919ULL) ^ ((uint64_t)nd->incarnation << 32));
    rc.start_ms = s->now;
    rc.pre_vote = s->cfg.pre_vote;
    rc.check_quorum = s->cfg.check_quorum;
    rc.max_append_bytes = s->cfg.max_append_bytes;
    rc.max_inflight = s->cfg.max_inflight;
    rc.max_uncommitted_bytes = s->cfg.max_uncommitted;
    rc.snapshot_chunk_bytes = s->cfg.chunk_bytes;
    rc.snapshot_trailing = s->cfg.trailing;
    nd->r = raft_new(&rc);
    if (nd->r == NULL) {
        sim_fail(s, "node %u: raft_new failed", i);
        return;
    }
    struct disk *d = &nd->d;
    recover_disk(d);
    if (d->hs.term < nd->promise_term ||
        (d->hs.term == nd->promise_term && d->hs.vote != nd->promise_vote)) {
        sim_fail(s,
                 "node %u: restarts with term %llu vote %llu on disk, but "
                 "it sent a vote for %llu in term %llu",
                 i, (unsigned long long)d->hs.term,
                 (unsigned long long)d->hs.vote,
                 (unsigned long long)nd->promise_vote,
                 (unsigned long long)nd->promise_term);
        return;
    }
    struct raft_entry *es = xrealloc(NULL, (d->n + 1) * sizeof *es);
    for (size_t k = 0; k < d->n; k++) {
        es[k].term = d->log[k].term;
        es[k].index = d->log[k].index;
        es[k].type = d->log[k].type;
        es[k].data = d->log[k].data;
        es[k].len = d->log[k].len;
    }
    struct raft_persisted p = {0};
    p.hs = d->hs;
    if (p.hs.commit < d->applied) {
        p.hs.commit = d->applied; /* what is applied is committed */
    }
    p.snap_index = d->snap_index;
    p.snap_term = d->snap_term;
    p.applied = d->applied;
    p.conf = d->snap_conf;
    p.conf_len = d->snap_conf_len;
    p.entries = es;
    p.n_entries = d->n;
    int rv = raft_restore(nd->r, &p);
    free(es);
    if (rv != 0) {
        sim_fail(s, "node %u: raft_restore: %s (%s)", i, raft_strerror(rv),
                 raft_errmsg(nd->r));
        return;
    }
    if (raft_commit_index(nd->r) < d->hs.commit) {
        sim_fail(s, "node %u: commit index went back across a restart", i);
    }
    nd->last_commit = raft_commit_index(nd->r);
    nd->up = true;
    nd->busy = false;
    nd->frozen = false;
    nd->state_done = false;
    nd->n_cookies = 0;
}

struct sim *sim_new(const struct sim_config *cfg)
{
    struct sim *s = calloc(1, sizeof *s);
    if (s == NULL || cfg->n == 0 || cfg->n > SIM_MAX_NODES) {
        free(s);
        return NULL;
    }
    s->cfg = *cfg;
    if (s->cfg.heartbeat_ms == 0) {
        s->cfg.heartbeat_ms = 50;
    }
    if (s->cfg.election_ms == 0) {
        s->cfg.election_ms = 200;
    }
    if (s->cfg.max_append_bytes == 0) {
        s->cfg.max_append_bytes = 64 * 1024;
    }
    if (s->cfg.max_inflight == 0) {
        s->cfg.max_inflight = 8;
    }
    if (s->cfg.chunk_bytes == 0) {
        s->cfg.chunk_bytes = 64;
    }
    if (s->cfg.retry_ms == 0) {
        s->cfg.retry_ms = 1000;
    }
    if (s->cfg.voters == 0 || s->cfg.voters > s->cfg.n) {
        s->cfg.voters = s->cfg.n;
    }
    s->disk_fail = cfg->disk_fail;
    s->rng = cfg->seed;
    s->now = 1000;
    sim_reliable(s);
    for (unsigned i = 0; i < cfg->n; i++) {
        s->nodes[i].disk_min = cfg->disk_min_ms;
        s->nodes[i].disk_max = cfg->disk_max_ms;
        s->nodes[i].connected = true;
        for (unsigned j = 0; j < cfg->n; j++) {
            s->link[i][j] = true;
        }
    }
    for (unsigned i = 0; i < cfg->n; i++) {
        s->nodes[i].joiner = i >= s->cfg.voters;
        start_node(s, i);
    }
    return s;
}

void sim_free(struct sim *s)
{
    if (s == NULL) {
        return;
    }
    for (unsigned i = 0; i < s->cfg.n; i++) {
        struct node *nd = &s->nodes[i];
        raft_free(nd->r);
        for (size_t k = 0; k < nd->n_inbox; k++) {
            msg_free(nd->inbox[k]);
        }
        free(nd->inbox);
        disk_free(&nd->d);
    }
    for (size_t k = 0; k < s->n_heap; k++) {
        msg_free(s->heap[k].m);
    }
    free(s->heap);
    free(s->leaders);
    free(s->gc);
    free(s->lm);
    free(s->read_floor);
    free(s);
}

void sim_crash(struct sim *s, unsigned i)
{
    struct node *nd = &s->nodes[i];
    if (!nd->up) {
        return;
    }
    raft_free(nd->r); /* an outstanding (or held) update is lost */
    nd->r = NULL;
    nd->up = false;
    nd->busy = false;
    nd->frozen = false;
    nd->state_done = false;
    nd->incarnation++;
    nd->n_cookies = 0;
    nd->led = false;
    memset(nd->stream_to, 0, sizeof nd->stream_to);
    drop_inbox(nd);
}

void sim_restart(struct sim *s, unsigned i)
{
    sim_crash(s, i);
    start_node(s, i);
}

void sim_wipe(struct sim *s, unsigned i)
{
    struct node *nd = &s->nodes[i];
    sim_crash(s, i);
    disk_free(&nd->d);
    nd->last_commit = 0;  /* its commit index legitimately starts over */
    nd->promise_term = 0; /* and so do its votes (raft.c: fresh) */
    nd->promise_vote = 0;
    start_node(s, i);
}

void sim_wipe_join(struct sim *s, unsigned i)
{
    s->nodes[i].joiner = true;
    sim_wipe(s, i);
}

bool sim_up(const struct sim *s, unsigned i)
{
    return s->nodes[i].up;
}

bool sim_connected(const struct sim *s, unsigned i)
{
    return s->nodes[i].connected;
}

void sim_set_disk(struct sim *s, unsigned i, unsigned min_ms, unsigned max_ms)
{
    s->nodes[i].disk_min = min_ms;
    s->nodes[i].disk_max = max_ms;
}

/* ---- the run loop ------------------------------------------------------ */

static void observe(struct sim *s, unsigned i)
{
    struct node *nd = &s->nodes[i];
    uint64_t c = raft_commit_index(nd->r);
    if (c < nd->last_commit) {
        sim_fail(s, "node %u: commit index went back %llu -> %llu", i,
                 (unsigned long long)nd->last_commit, (unsigned long long)c);
    }
    nd->last_commit = c;
}

bool sim_run(struct sim *s, uint64_t ms)
{
    uint64_t end = s->now + ms;
    unsigned same = 0;
    while (!s->failed) {
        uint64_t t = end;
        if (s->n_heap > 0 && s->heap[0].time < t) {
            t = s->heap[0].time;
        }
        for (unsigned i = 0; i < s->cfg.n; i++) {
            if (node_ok(s, i)) {
                uint64_t nt = raft_next_timeout(s->nodes[i].r);
                if (nt < t) {
                    t = nt;
                }
            }
        }
        if (t <= s->now) {
            t = s->now;
            if (++same > 10000) {
                sim_fail(s, "no progress in virtual time");
                break;
            }
        } else {
            same = 0;
        }
        s->now = t;
        while (!s->failed && s->n_heap > 0 && s->heap[0].time <= s->now) {
            struct event ev = heap_pop(s);
            handle_event(s, &ev);
        }
        for (unsigned i = 0; i < s->cfg.n && !s->failed; i++) {
            if (!node_ok(s, i)) {
                continue;
            }
            arm(true);
            int rv = raft_tick(s->nodes[i].r, s->now);
            arm(false);
            if (rv != 0 && !nomem_ok(s, rv)) {
                sim_fail(s, "node %u: raft_tick: %s", i, raft_strerror(rv));
            }
            pump(s, i);
            if (s->nodes[i].up) {
                observe(s, i);
            }
        }
        if (t >= end) {
            break;
        }
    }
    return !s->failed;
}

/* ---- faults ------------------------------------------------------------ */

void sim_set_net(struct sim *s, const struct sim_net *net)
{
    s->net = *net;
}

void sim_reliable(struct sim *s)
{
    struct sim_net n = {1, 5, 0, 0, 0, 0};
    s->net = n;
}

void sim_unreliable(struct sim *s, bool long_reorder)
{
    struct sim_net n = {0, 27, 100, 100, 0, long_reorder ? 667 : 0};
    s->net = n;
}

void sim_link(struct sim *s, unsigned from, unsigned to, bool up)
{
    s->link[from][to] = up;
}

void sim_connect(struct sim *s, unsigned i)
{
    s->nodes[i].connected = true;
    for (unsigned j = 0; j < s->cfg.n; j++) {
        if (s->nodes[j].connected) {
            s->link[i][j] = s->link[j][i] = true;
        }
    }
}

void sim_disconnect(struct sim *s, unsigned i)
{
    s->nodes[i].connected = false;
    for (unsigned j = 0; j < s->cfg.n; j++) {
        if (j != i) {
            s->link[i][j] = s->link[j][i] = false;
        }
    }
}

void sim_heal(struct sim *s)
{
    for (unsigned i = 0; i < s->cfg.n; i++) {
        s->nodes[i].connected = true;
        for (unsigned j = 0; j < s->cfg.n; j++) {
            s->link[i][j] = true;
        }
    }
}

void sim_partition(struct sim *s, const int *group)
{
    for (unsigned i = 0; i < s->cfg.n; i++) {
        s->nodes[i].connected = false;
        for (unsigned j = 0; j < s->cfg.n; j++) {
            s->link[i][j] = group[i] == group[j];
        }
    }
}

void sim_disk_fail(struct sim *s, unsigned i, unsigned times, bool log_only)
{
    s->nodes[i].fail_next = times;
    s->nodes[i].fail_log_only = log_only;
}

void sim_crash_mid_write(struct sim *s, unsigned i)
{
    s->nodes[i].crash_mid = true;
}

void sim_set_disk_failures(struct sim *s, unsigned permille)
{
    s->disk_fail = permille;
    if (permille == 0) {
        for (unsigned i = 0; i < s->cfg.n; i++) {
            s->nodes[i].fail_next = 0;
            s->nodes[i].crash_mid = false;
        }
    }
}

bool sim_frozen(const struct sim *s, unsigned i)
{
    return s->nodes[i].up && s->nodes[i].frozen;
}

int sim_inject(struct sim *s, unsigned i, const struct raft_message *m)
{
    if (!node_ok(s, i)) {
        return RAFT_EBUSY;
    }
    struct raft_message c = *m;
    int rv = step_raw(s, i, &c);
    if (rv != 0 && rv != RAFT_EINVAL && !nomem_ok(s, rv)) {
        sim_fail(s, "node %u: raft_step(forged type %d): %s", i, m->type,
                 raft_strerror(rv));
    }
    s->stats.injected++;
    pump(s, i);
    return rv;
}

/* ---- observations ------------------------------------------------------ */

struct raft *sim_raft(struct sim *s, unsigned i)
{
    return s->nodes[i].up ? s->nodes[i].r : NULL;
}

int sim_leader(const struct sim *s)
{
    int best = -1;
    for (unsigned i = 0; i < s->cfg.n; i++) {
        const struct node *nd = &s->nodes[i];
        if (nd->up && raft_role(nd->r) == RAFT_LEADER &&
            (best < 0 || raft_term(nd->r) > raft_term(s->nodes[best].r))) {
            best = (int)i;
        }
    }
    return best;
}

int sim_check_one_leader(struct sim *s, uint64_t within_ms)
{
    uint64_t deadline = s->now + within_ms;
    while (!s->failed) {
        int best = -1;
        for (unsigned i = 0; i < s->cfg.n; i++) {
            struct node *nd = &s->nodes[i];
            if (!nd->up || !nd->connected || raft_role(nd->r) != RAFT_LEADER) {
                continue;
            }
            if (best < 0 || raft_term(nd->r) > raft_term(s->nodes[best].r)) {
                best = (int)i;
            }
        }
        if (best >= 0) {
            return best;
        }
        if (s->now >= deadline) {
            break;
        }
        sim_run(s, 10);
    }
    return -1;
}

bool sim_no_leader(struct sim *s)
{
    for (unsigned i = 0; i < s->cfg.n; i++) {
        struct node *nd = &s->nodes[i];
        if (nd->up && nd->connected && raft_role(nd->r) == RAFT_LEADER) {
            return false;
        }
    }
    return true;
}

unsigned sim_n_committed(struct sim *s, uint64_t index, uint64_t *value)
{
    unsigned count = 0;
    uint64_t v = 0;
    for (unsigned i = 0; i < s->cfg.n; i++) {
        const struct disk *d = &s->nodes[i].d;
        if (d->applied < index) {
            continue;
        }
        uint64_t vi = d->values[index];
        if (count > 0 && vi != v) {
            sim_fail(s, "committed values differ at %llu",
                     (unsigned long long)index);
        }
        v = vi;
        count++;
    }
    if (value != NULL) {
        *value = v;
    }
    return count;
}

uint64_t sim_applied(const struct sim *s, unsigned i)
{
    return s->nodes[i].d.applied;
}

uint64_t sim_commit_max(const struct sim *s)
{
    return s->gc_max;
}

bool sim_value_at(const struct sim *s, uint64_t index, uint64_t *value)
{
    if (index >= s->cap_gc || !s->gc[index].set) {
        return false;
    }
    *value = s->gc[index].value;
    return true;
}

size_t sim_persisted_log_bytes(const struct sim *s, unsigned i)
{
    const struct disk *d = &s->nodes[i].d;
    size_t bytes = sizeof d->hs;
    for (size_t k = 0; k < d->n; k++) {
        bytes += 24 + d->log[k].len;
    }
    return bytes;
}

struct sim_stats sim_get_stats(const struct sim *s)
{
    return s->stats;
}

void sim_reset_stats(struct sim *s)
{
    memset(&s->stats, 0, sizeof s->stats);
}

/* ---- clients ----------------------------------------------------------- */

int sim_propose(struct sim *s,
                unsigned i,
                uint64_t value,
                size_t len,
                uint64_t *index,
                uint64_t *term)
{
    if (!node_ok(s, i)) {
        return RAFT_NOTLEADER;
    }
    uint8_t buf[8192];
    if (len < 8) {
        len = 8;
    }
    if (len > sizeof buf) {
        len = sizeof buf;
    }
    memcpy(buf, &value, 8);
    for (size_t k = 8; k < len; k++) {
        buf[k] = (uint8_t)(value + k);
    }
    arm(true);
    int rv = raft_propose(s->nodes[i].r, buf, len, index, term, NULL);
    arm(false);
    if (rv == 0) {
        pump(s, i);
    }
    return rv;
}

uint64_t sim_one(struct sim *s,
                 uint64_t value,
                 size_t len,
                 unsigned expected,
                 bool retry)
{
    uint64_t t0 = s->now;
    unsigned start = 0;
    while (!s->failed && s->now < t0 + 10000) {
        uint64_t index = 0;
        for (unsigned k = 0; k < s->cfg.n; k++) {
            start = (start + 1) % s->cfg.n;
            if (!s->nodes[start].connected) {
                continue;
            }
            if (sim_propose(s, start, value, len, &index, NULL) == 0) {
                break;
            }
            index = 0;
        }
        if (index != 0) {
            uint64_t t1 = s->now;
            while (!s->failed && s->now < t1 + 2000) {
                uint64_t v;
                unsigned nd = sim_n_committed(s, index, &v);
                if (nd > 0 && nd >= expected && v == value) {
                    return index;
                }
                sim_run(s, 20);
            }
            if (!retry) {
                sim_fail(s, "one(%llu) failed to reach agreement",
                         (unsigned long long)value);
                return 0;
            }
        } else {
            sim_run(s, 50);
        }
    }
    sim_fail(s, "one(%llu) failed to reach agreement in 10 s",
             (unsigned long long)value);
    return 0;
}

int sim_read(struct sim *s, unsigned i)
{
    if (!node_ok(s, i)) {
        return RAFT_NOTLEADER;
    }
    uint64_t ctx = ++s->read_ctx;
    if (ctx >= s->cap_reads) {
        size_t cap = s->cap_reads ? s->cap_reads * 2 : 256;
        s->read_floor = xrealloc(s->read_floor, cap * sizeof *s->read_floor);
        s->cap_reads = cap;
    }
    s->read_floor[ctx] = s->gc_max;
    arm(true);
    int rv = raft_read_index(s->nodes[i].r, ctx, NULL);
    arm(false);
    if (rv == 0) {
        pump(s, i);
    }
    return rv;
}

int sim_change(struct sim *s,
               unsigned i,
               enum raft_change_type type,
               unsigned target)
{
    if (!node_ok(s, i) || target >= s->cfg.n) {
        return RAFT_NOTLEADER;
    }
    char ctx[32];
    int len = snprintf(ctx, sizeof ctx, "node-%u", target + 1);
    struct raft_change c = {
        .type = type,
        .id = target + 1,
        .ctx = type == RAFT_CHANGE_REMOVE ? NULL : ctx,
        .ctx_len = type == RAFT_CHANGE_REMOVE ? 0 : (size_t)len};
    arm(true);
    int rv = raft_propose_change(s->nodes[i].r, &c, NULL, NULL);
    arm(false);
    if (rv == 0) {
        s->changes++;
        if (getenv("SIM_TRACE")) {
            fprintf(stderr, "t=%llu: node %u proposes change %d of %u\n",
                    (unsigned long long)s->now, i, (int)type, target);
        }
        pump(s, i);
    }
    return rv;
}

uint64_t sim_changes(const struct sim *s)
{
    return s->changes;
}

uint64_t sim_handoffs(const struct sim *s)
{
    return s->handoffs;
}

int sim_transfer(struct sim *s, unsigned i, unsigned target)
{
    if (!node_ok(s, i)) {
        return RAFT_NOTLEADER;
    }
    arm(true);
    int rv = raft_transfer_leader(s->nodes[i].r, target + 1);
    arm(false);
    if (rv == 0) {
        pump(s, i);
    }
    return rv;
}

void sim_dump(const struct sim *s, FILE *f)
{
    fprintf(f, "t=%llu ms\n", (unsigned long long)s->now);
    for (unsigned i = 0; i < s->cfg.n; i++) {
        const struct node *nd = &s->nodes[i];
        const struct disk *d = &nd->d;
        if (!nd->up) {
            fprintf(f, "  node %u: down; disk term %llu applied %llu\n", i,
                    (unsigned long long)d->hs.term,
                    (unsigned long long)d->applied);
            continue;
        }
        const struct raft *r = nd->r;
        fprintf(f,
                "  node %u: %s term %llu leader %llu commit %llu applied "
                "%llu log %llu..%llu snapshot %llu%s\n",
                i, raft_role_name(raft_role(r)),
                (unsigned long long)raft_term(r),
                (unsigned long long)raft_leader(r),
                (unsigned long long)raft_commit_index(r),
                (unsigned long long)d->applied,
                (unsigned long long)raft_first_index(r),
                (unsigned long long)raft_last_index(r),
                (unsigned long long)raft_snapshot_index(r),
                nd->busy ? " (writing)" : "");
        const struct raft_member *m;
        size_t n = raft_members(r, &m);
        fprintf(f, "    members (entry %llu):",
                (unsigned long long)raft_conf_index(r));
        for (size_t k = 0; k < n; k++) {
            fprintf(f, " %llu%s", (unsigned long long)m[k].id,
                    m[k].voter ? "" : "(learner)");
        }
        fprintf(f, "%s\n", nd->joiner ? " [joined]" : "");
    }
}
