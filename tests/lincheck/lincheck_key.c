/* lincheck_key.c: the search for a linearization of one key's operations
 * (Wing & Gong's search with Lowe's memo, as Porcupine does it). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lincheck_key.h"
#include "lincheck_msg.h"

/* ---- byte strings as hashes ---------------------------------------------- */

/* Polynomial hash mod 2^64: hash(a + b) = hash(a) * HASH_BASE^|b| + hash(b),
 * so a state's hash follows from its parent's without reading the parent's
 * bytes. Equal hashes are always confirmed by comparing bytes. */
#define HASH_BASE 0x100000001b3ULL

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++) {
        h = h * HASH_BASE + p[i] + 1;
    }
    return h;
}

static uint64_t hash_pow(size_t n)
{
    uint64_t r = 1, b = HASH_BASE;
    while (n) {
        if (n & 1) {
            r *= b;
        }
        b *= b;
        n >>= 1;
    }
    return r;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* ---- the search's data --------------------------------------------------- */

#define STATE_ABSENT 0u /* the key does not exist */
#define STATE_EMPTY  1u /* the empty string: the root of every other state */
#define STATE_NONE   UINT32_MAX

/* Pools of unknown ops that are interchangeable: same effect, no output
 * checked, so which of them were linearized does not matter once they
 * have been called (and all that have been linearized have), only how
 * many. The memo counts them instead of keeping their bits. */
enum pool {
    POOL_NONE,
    POOL_SILENT, /* silent writes (step()): only ever glued to a delete */
    POOL_DELETE, /* deletes of unknown outcome */
    POOLS
};

/* A model state: its parent's bytes followed by seg (a rope sharing the
 * bytes of the history's events, so a step never copies a string). States
 * are interned: two ids never hold the same bytes. */
struct state
{
    uint32_t parent;        /* state this one extends; STATE_NONE for roots */
    const uint8_t *seg;     /* bytes after the parent's (in an event) */
    size_t seg_len;         /* length of seg */
    size_t len;             /* total length */
    uint64_t hash;          /* hash_bytes of the whole string */
    uint32_t prefix_of;     /* op whose out it is known to begin, or NONE */
    uint32_t not_prefix_of; /* op whose out it is known not to begin */
};

/* One operation of the key being checked. */
struct op
{
    const struct lc_event *ev; /* the event */
    uint64_t zobrist;          /* random bits xored into the set hash */
    uint64_t value_hash;       /* hash_bytes of value */
    uint64_t value_pow;        /* HASH_BASE^value_len */
    uint64_t expected_hash;    /* hash_bytes of expected */
    uint64_t out_hash;         /* hash_bytes of out */
    uint32_t put_state;        /* interned state "value", or STATE_NONE */
    uint32_t expected_state;   /* the state equal to expected, or NONE */
    uint32_t out_state;        /* the state equal to out, or STATE_NONE */
    uint32_t bit;              /* its bit in the linearized set */
    bool known;                /* its outcome is known */
    bool silent;               /* unknown write nothing depends on */
    uint8_t pool;              /* interchangeable group (POOL_...), or 0 */
    size_t call_pos;           /* index of its call event in sorted order */
    size_t ret_pos;            /* index of its return event */
};

/* A call or return event in the doubly-linked list of the search. */
struct entry
{
    struct entry *prev;  /* previous entry, or the head */
    struct entry *next;  /* next entry, or NULL */
    struct entry *match; /* call: its return entry */
    uint32_t op;         /* index into ops */
    bool is_call;        /* call (true) or return */
};

/* What the search remembers of a lift, to undo it. */
struct frame
{
    struct entry *entry; /* the lifted call */
    uint32_t state;      /* the state before */
    uint32_t lo;         /* lo before */
    int64_t maxk;        /* maxk before */
    uint32_t memo;       /* the memo entry of the config it led to */
    uint8_t pass;        /* the pass it was chosen in (search()) */
    bool glued;          /* the frame below lifted a silent write for it */
    bool forced;         /* a free read (free_read()): nothing else to try */
};

/* A memo entry: a (set of linearized ops, state) pair already explored.
 * The set is kept as the known-op words lo .. lo + nw - 1 (every word
 * below lo is full, every one above is empty), the words of the unknown
 * ops in no pool, and the number linearized of each pool. The hash covers
 * the state and the known ops only, so that entries that differ in
 * unknown ops meet in one probe chain. */
struct memo_entry
{
    uint64_t hash;        /* hash of known set and state */
    uint32_t state;       /* the state */
    uint32_t lo;          /* first known word that is not full */
    uint32_t nw;          /* known words stored */
    uint32_t used[POOLS]; /* ops of each pool linearized */
    bool done;            /* explored to the end without success */
    size_t off;           /* where the words are in the arena */
};

/* Where the search came closest, for the failure message. */
#define BEST_TAIL 4
struct best
{
    int64_t depth;            /* ops linearized there, -1 before any */
    size_t known;             /* known ops among them */
    size_t ret_pos;           /* where the stuck return is in the list */
    uint32_t tail[BEST_TAIL]; /* the last ops linearized, oldest first */
    size_t ntail;             /* entries in tail */
    uint32_t state;           /* the state there */
    uint32_t stuck;           /* the op whose return could not be passed */
    uint64_t *set;            /* the linearized set there */
};

struct checker
{
    struct op *ops; /* this key's ops: known by call time, then unknown */
    size_t n;       /* ops */
    size_t nk;      /* known ops */
    size_t nsilent; /* ops marked silent */
    size_t pool_size[POOLS]; /* ops in each pool */
    struct entry *ents;      /* head (index 0) then 2n entries */
    struct frame *stack;     /* lifts, at most n */
    size_t depth;            /* frames on the stack */

    struct state *st; /* states, by id */
    size_t nst;       /* states */
    size_t st_cap;    /* slots in st */
    uint32_t *itab;   /* intern table of state ids (STATE_NONE = free) */
    size_t itab_cap;  /* slots (a power of two) */

    uint64_t *set;        /* linearized ops: known, unknown, pooled words */
    size_t kw;            /* known words */
    size_t uw;            /* unknown words (ops in no pool) */
    size_t sw;            /* pooled ops' words */
    uint32_t used[POOLS]; /* ops of each pool linearized */
    uint32_t lo;          /* first known word that is not full */
    int64_t maxk;         /* highest known op linearized, or -1 */
    uint64_t zob;         /* xor of the linearized known ops' zobrist bits */

    struct memo_entry *memo; /* entries, in the order made */
    size_t memo_n;           /* entries */
    size_t memo_vcap;        /* entries allocated */
    uint32_t *mtab;          /* open-addressing table of entry indices */
    size_t mtab_cap;         /* its slots (a power of two) */
    uint64_t *arena;         /* the memo's words */
    size_t arena_n;          /* words used */
    size_t arena_cap;        /* words allocated */

    struct best best;         /* closest approach */
    size_t max_depth;         /* most ops linearized at once so far */
    struct timespec deadline; /* when to give up, if has_deadline */
    bool has_deadline;        /* a budget was given */
};

/* ---- states -------------------------------------------------------------- */

/* Reads a rope (and an optional flat tail after it) backwards in chunks. */
struct rev
{
    const struct state *st; /* the states */
    uint32_t node;          /* next state to read, STATE_EMPTY at the end */
    const uint8_t *p;       /* current chunk */
    size_t n;               /* bytes of the chunk not consumed (its head) */
};

static void rev_init(struct rev *r,
                     const struct state *st,
                     uint32_t node,
                     const void *tail,
                     size_t tail_len)
{
    r->st = st;
    r->node = node;
    r->p = tail;
    r->n = tail_len;
}

/* Make the current chunk non-empty. @return false at the start. */
static bool rev_fill(struct rev *r)
{
    while (r->n == 0) {
        if (r->node == STATE_EMPTY || r->node == STATE_ABSENT ||
            r->node == STATE_NONE) {
            return false;
        }
        const struct state *s = &r->st[r->node];
        r->p = s->seg;
        r->n = s->seg_len;
        r->node = s->parent;
    }
    return true;
}

/* Are two byte strings of equal length, each a state plus a tail, equal? */
static bool rev_equal(struct rev *a, struct rev *b)
{
    for (;;) {
        if (a->n == 0 && b->n == 0 && a->node == b->node) {
            return true; /* the same state from here to the start */
        }
        bool fa = rev_fill(a), fb = rev_fill(b);
        if (!fa || !fb) {
            return fa == fb;
        }
        size_t k = a->n < b->n ? a->n : b->n;
        if (memcmp(a->p + a->n - k, b->p + b->n - k, k) != 0) {
            return false;
        }
        a->n -= k;
        b->n -= k;
    }
}

/* Does state s hold exactly the bytes p[0..len) with hash h? */
static bool state_equals(const struct checker *ck,
                         uint32_t s,
                         const void *p,
                         size_t len,
                         uint64_t h)
{
    if (s == STATE_ABSENT || ck->st[s].len != len || ck->st[s].hash != h) {
        return false;
    }
    struct rev a, b;
    rev_init(&a, ck->st, s, NULL, 0);
    rev_init(&b, ck->st, STATE_EMPTY, p, len);
    return rev_equal(&a, &b);
}

/* Like state_equals, remembering in *memo the one state (states are
 * interned) found equal, so each op compares bytes about once. */
static bool state_matches(const struct checker *ck,
                          uint32_t s,
                          const void *p,
                          size_t len,
                          uint64_t h,
                          uint32_t *memo)
{
    if (*memo != STATE_NONE) {
        return s == *memo;
    }
    if (!state_equals(ck, s, p, len, h)) {
        return false;
    }
    *memo = s;
    return true;
}

static int grow_intern_table(struct checker *ck)
{
    size_t cap = ck->itab_cap ? 2 * ck->itab_cap : 1024;
    uint32_t *t = malloc(cap * sizeof *t);
    if (!t) {
        return -1;
    }
    memset(t, 0xff, cap * sizeof *t);
    for (size_t i = 0; i < ck->itab_cap; i++) {
        uint32_t id = ck->itab[i];
        if (id == STATE_NONE) {
            continue;
        }
        size_t j = mix64(ck->st[id].hash ^ ck->st[id].len) & (cap - 1);
        while (t[j] != STATE_NONE) {
            j = (j + 1) & (cap - 1);
        }
        t[j] = id;
    }
    free(ck->itab);
    ck->itab = t;
    ck->itab_cap = cap;
    return 0;
}

/* The state holding s's bytes followed by v[0..vlen) (hash vh, HASH_BASE^vlen
 * in vpow), created if new. s is not absent. @return its id or STATE_NONE
 * when out of memory. */
static uint32_t state_extend(struct checker *ck,
                             uint32_t s,
                             const void *v,
                             size_t vlen,
                             uint64_t vh,
                             uint64_t vpow)
{
    if (vlen == 0) {
        return s;
    }
    if (ck->nst * 2 >= ck->itab_cap && grow_intern_table(ck) != 0) {
        return STATE_NONE;
    }
    uint64_t h = ck->st[s].hash * vpow + vh;
    size_t len = ck->st[s].len + vlen;
    size_t j = mix64(h ^ len) & (ck->itab_cap - 1);
    for (; ck->itab[j] != STATE_NONE; j = (j + 1) & (ck->itab_cap - 1)) {
        uint32_t c = ck->itab[j];
        const struct state *cs = &ck->st[c];
        if (cs->hash != h || cs->len != len) {
            continue;
        }
        if (cs->parent == s && cs->seg_len == vlen &&
            memcmp(cs->seg, v, vlen) == 0) {
            return c;
        }
        struct rev a, b;
        rev_init(&a, ck->st, c, NULL, 0);
        rev_init(&b, ck->st, s, v, vlen);
        if (rev_equal(&a, &b)) {
            return c;
        }
    }
    if (ck->nst == ck->st_cap) {
        size_t cap = 2 * ck->st_cap;
        if (cap >= STATE_NONE) {
            return STATE_NONE;
        }
        struct state *st = realloc(ck->st, cap * sizeof *st);
        if (!st) {
            return STATE_NONE;
        }
        ck->st = st;
        ck->st_cap = cap;
    }
    uint32_t id = (uint32_t)ck->nst++;
    ck->st[id] = (struct state){.parent = s,
                                .seg = v,
                                .seg_len = vlen,
                                .len = len,
                                .hash = h,
                                .prefix_of = STATE_NONE,
                                .not_prefix_of = STATE_NONE};
    ck->itab[j] = id;
    return id;
}

/* Is state s (not absent) a prefix of op r's out? Remembered in the
 * states (for the last r asked), so that going down a chain of appends
 * compares each segment once. */
static bool state_is_prefix(struct checker *ck, uint32_t s, uint32_t r)
{
    const struct lc_event *e = ck->ops[r].ev;
    struct state *st = ck->st;
    if (st[s].len > e->out_len) {
        return false;
    }
    if (s == STATE_EMPTY || st[s].prefix_of == r) {
        return true;
    }
    if (st[s].not_prefix_of == r) {
        return false;
    }
    uint32_t p = st[s].parent;
    bool ok;
    if (p == STATE_EMPTY || st[p].prefix_of == r) {
        ok = memcmp(st[s].seg, (const uint8_t *)e->out + st[p].len,
                    st[s].seg_len) == 0;
    } else if (st[p].not_prefix_of == r) {
        ok = false;
    } else {
        struct rev a, b;
        rev_init(&a, st, s, NULL, 0);
        rev_init(&b, st, STATE_EMPTY, e->out, st[s].len);
        ok = rev_equal(&a, &b);
        for (uint32_t q = p; ok && q != STATE_EMPTY && st[q].prefix_of != r;
             q = st[q].parent) {
            st[q].prefix_of = r;
        }
    }
    if (ok) {
        st[s].prefix_of = r;
    } else {
        st[s].not_prefix_of = r;
    }
    return ok;
}

/* ---- the model ----------------------------------------------------------- */

/* The state set by op's value (put, cas swap). */
static uint32_t put_state(struct checker *ck, struct op *o)
{
    if (o->put_state == STATE_NONE) {
        o->put_state =
            state_extend(ck, STATE_EMPTY, o->ev->value, o->ev->value_len,
                         o->value_hash, o->value_pow);
    }
    return o->put_state;
}

/* Apply op to state s. @return 1 and the next state in *next when the
 * model accepts the op there, 0 when it does not, -1 when out of memory */
static int step(struct checker *ck, struct op *o, uint32_t s, uint32_t *next)
{
    const struct lc_event *e = o->ev;
    *next = s;
    if (o->silent) {
        /* Its value, once written, stays in the state (appends keep it
         * too) until a put, delete or swap replaces the state, and no get
         * or cas could succeed in between (none shows the value). So
         * leaving it out (linearizing it last) does as well, unless it is
         * what makes an absent key present for a delete that found it:
         * search() applies it only then, glued to that delete. */
        return 0;
    }
    switch (e->op) {
        case LC_GET:
            if (!e->found) {
                return s == STATE_ABSENT;
            }
            return state_matches(ck, s, e->out, e->out_len, o->out_hash,
                                 &o->out_state);
        case LC_PUT:
            *next = put_state(ck, o);
            break;
        case LC_APPEND:
            *next =
                state_extend(ck, s == STATE_ABSENT ? STATE_EMPTY : s, e->value,
                             e->value_len, o->value_hash, o->value_pow);
            break;
        case LC_DELETE:
            *next = STATE_ABSENT;
            if (o->known && e->found != (s != STATE_ABSENT)) {
                return 0;
            }
            return 1;
        case LC_CAS: {
            bool match =
                e->expect_absent
                    ? s == STATE_ABSENT
                    : state_matches(ck, s, e->expected, e->expected_len,
                                    o->expected_hash, &o->expected_state);
            if (!o->known) {
                if (match) {
                    *next = put_state(ck, o);
                    break;
                }
                return 1;
            }
            if (e->swapped) {
                if (!match) {
                    return 0;
                }
                *next = put_state(ck, o);
                break;
            }
            if (match) {
                return 0;
            }
            if (!e->found) {
                return s == STATE_ABSENT;
            }
            return state_matches(ck, s, e->out, e->out_len, o->out_hash,
                                 &o->out_state);
        }
        case LC_RANGE:
        case LC_TXN:
            return 0; /* lc_check sends these to lc_check_group */
    }
    return *next == STATE_NONE ? -1 : 1;
}

/* ---- messages ------------------------------------------------------------ */

static void msg_state(struct lc_msg *m, const struct checker *ck, uint32_t s)
{
    if (s == STATE_ABSENT) {
        lc_msg_printf(m, "absent");
        return;
    }
    uint8_t tail[LC_SHOW_BYTES];
    size_t len = ck->st[s].len,
           want = len < LC_SHOW_BYTES ? len : LC_SHOW_BYTES;
    size_t got = 0;
    struct rev r;
    rev_init(&r, ck->st, s, NULL, 0);
    while (got < want && rev_fill(&r)) {
        size_t k = r.n < want - got ? r.n : want - got;
        memcpy(tail + want - got - k, r.p + r.n - k, k);
        got += k;
        r.n -= k;
    }
    lc_msg_tail(m, tail, want, len);
}

/* The failure message of a key with no linearization. */
static void describe_failure(const struct checker *ck, struct lc_msg *m)
{
    const struct best *b = &ck->best;
    lc_msg_key(m, ck->ops[0].ev);
    lc_msg_printf(m,
                  " (%zu operations): longest linearizable prefix found: "
                  "%" PRId64 " ops",
                  ck->n, b->depth);
    if (b->ntail) {
        lc_msg_printf(m, b->ntail < (size_t)b->depth ? " ending ... " : ": ");
        for (size_t i = 0; i < b->ntail; i++) {
            lc_msg_printf(m, "%s", i ? "; " : "");
            lc_msg_op(m, ck->ops[b->tail[i]].ev);
        }
    }
    lc_msg_printf(m, "; state then ");
    msg_state(m, ck, b->state);
    lc_msg_printf(m, "; no order of the pending ops gets past the return of ");
    lc_msg_op(m, ck->ops[b->stuck].ev);
    lc_msg_printf(m, "; pending:");
    size_t shown = 0, more = 0, limit = ck->ops[b->stuck].ret_pos;
    for (size_t i = 0; i < ck->n; i++) {
        const struct op *o = &ck->ops[i];
        if (o->call_pos > limit || (b->set[o->bit / 64] >> (o->bit % 64)) & 1) {
            continue;
        }
        if (shown == 6) {
            more++;
            continue;
        }
        lc_msg_printf(m, "%s", shown ? "; " : " ");
        lc_msg_op(m, o->ev);
        shown++;
    }
    if (more) {
        lc_msg_printf(m, "; and %zu more", more);
    }
}

/* ---- the search ---------------------------------------------------------- */

static void lift(struct entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    struct entry *r = e->match;
    r->prev->next = r->next;
    if (r->next) {
        r->next->prev = r->prev;
    }
}

static void unlift(struct entry *e)
{
    struct entry *r = e->match;
    r->prev->next = r;
    if (r->next) {
        r->next->prev = r;
    }
    e->prev->next = e;
    e->next->prev = e;
}

static uint64_t memo_hash(const struct checker *ck, uint32_t state)
{
    return mix64(ck->zob ^ (state * 0x9e3779b97f4a7c15ULL));
}

/* The known words of the current set to store: from lo to maxk's word. */
static uint32_t memo_known_words(const struct checker *ck)
{
    if (ck->maxk < 0 || (uint64_t)ck->maxk / 64 < ck->lo) {
        return 0;
    }
    return (uint32_t)((uint64_t)ck->maxk / 64 - ck->lo + 1);
}

/* Does entry me rule out the current set with state (me->state)? When it
 * holds the same known ops, its unknown ops are a subset of the current
 * ones and it used no more of each pool, and it failed (or is the very
 * same config). Sound because an unknown op never has to be linearized:
 * whatever completes the current config completes one with fewer unknown
 * ops applied and the same state; and the ops of a pool are
 * interchangeable (enum pool). */
static bool memo_rules_out(const struct checker *ck,
                           const struct memo_entry *me,
                           uint32_t nw)
{
    const uint64_t *w = ck->arena + me->off;
    for (int p = 1; p < POOLS; p++) {
        if (me->used[p] > ck->used[p]) {
            return false;
        }
    }
    if (me->lo != ck->lo || me->nw != nw ||
        memcmp(w, ck->set + ck->lo, nw * sizeof *w) != 0) {
        return false;
    }
    const uint64_t *u = ck->set + ck->kw;
    bool same = true;
    for (size_t i = 0; i < ck->uw; i++) {
        if (w[nw + i] & ~u[i]) {
            return false;
        }
        same = same && w[nw + i] == u[i];
    }
    for (int p = 1; p < POOLS; p++) {
        same = same && me->used[p] == ck->used[p];
    }
    return me->done || same;
}

static size_t memo_bytes(size_t vcap, size_t tcap, size_t acap)
{
    return vcap * sizeof(struct memo_entry) + tcap * sizeof(uint32_t) +
           acap * sizeof(uint64_t);
}

/* Double the memo table, or make it hold at least `want` slots. */
static int memo_grow(struct checker *ck, size_t want)
{
    size_t cap = ck->mtab_cap ? 2 * ck->mtab_cap : 64;
    while (cap < want) {
        cap *= 2;
    }
    uint32_t *t = malloc(cap * sizeof *t);
    if (!t) {
        return -1;
    }
    memset(t, 0xff, cap * sizeof *t);
    for (size_t i = 0; i < ck->memo_n; i++) {
        size_t j = ck->memo[i].hash & (cap - 1);
        while (t[j] != UINT32_MAX) {
            j = (j + 1) & (cap - 1);
        }
        t[j] = (uint32_t)i;
    }
    free(ck->mtab);
    ck->mtab = t;
    ck->mtab_cap = cap;
    return 0;
}

/* Make room for `need` more arena words and one more entry. */
static int memo_reserve(struct checker *ck, size_t need)
{
    if (ck->memo_n * 2 >= ck->mtab_cap) {
        if (ck->memo_n >= UINT32_MAX / 2 ||
            memo_bytes(ck->memo_vcap, 2 * ck->mtab_cap, ck->arena_cap) >
                LC_MEMO_CAP_BYTES ||
            memo_grow(ck, 0) != 0) {
            return -1;
        }
    }
    if (ck->memo_n == ck->memo_vcap) {
        size_t cap = ck->memo_vcap ? 2 * ck->memo_vcap : 64;
        if (memo_bytes(cap, ck->mtab_cap, ck->arena_cap) > LC_MEMO_CAP_BYTES) {
            return -1;
        }
        struct memo_entry *v = realloc(ck->memo, cap * sizeof *v);
        if (!v) {
            return -1;
        }
        ck->memo = v;
        ck->memo_vcap = cap;
    }
    if (ck->arena_n + need > ck->arena_cap) {
        size_t cap = ck->arena_cap ? ck->arena_cap : 256;
        while (cap < ck->arena_n + need) {
            cap *= 2;
        }
        if (memo_bytes(ck->memo_vcap, ck->mtab_cap, cap) > LC_MEMO_CAP_BYTES) {
            return -1;
        }
        uint64_t *a = realloc(ck->arena, cap * sizeof *a);
        if (!a) {
            return -1;
        }
        ck->arena = a;
        ck->arena_cap = cap;
    }
    return 0;
}

/* Look the current (set, state) up: @return its new entry's index when it
 * is to be explored, UINT32_MAX when an entry rules it out, or -1 (as
 * int64_t) when out of memory or over the cap */
static int64_t memo_visit(struct checker *ck, uint32_t state)
{
    uint32_t nw = memo_known_words(ck);
    if (memo_reserve(ck, nw + ck->uw) != 0) {
        return -1;
    }
    uint64_t h = memo_hash(ck, state);
    size_t j = h & (ck->mtab_cap - 1);
    for (; ck->mtab[j] != UINT32_MAX; j = (j + 1) & (ck->mtab_cap - 1)) {
        const struct memo_entry *me = &ck->memo[ck->mtab[j]];
        if (me->hash == h && me->state == state && memo_rules_out(ck, me, nw)) {
            return UINT32_MAX;
        }
    }
    uint64_t *w = ck->arena + ck->arena_n;
    if (nw) {
        memcpy(w, ck->set + ck->lo, nw * sizeof *w);
    }
    if (ck->uw) {
        memcpy(w + nw, ck->set + ck->kw, ck->uw * sizeof *w);
    }
    uint32_t idx = (uint32_t)ck->memo_n++;
    ck->memo[idx] = (struct memo_entry){
        .hash = h, .state = state, .lo = ck->lo, .nw = nw, .off = ck->arena_n};
    memcpy(ck->memo[idx].used, ck->used, sizeof ck->used);
    ck->arena_n += nw + ck->uw;
    ck->mtab[j] = idx;
    return idx;
}

/* Add op o to the linearized set. */
static void set_add(struct checker *ck, const struct op *o, uint32_t id)
{
    ck->set[o->bit / 64] |= 1ULL << (o->bit % 64);
    ck->used[o->pool]++;
    if (o->known) {
        ck->zob ^= o->zobrist;
        if ((int64_t)id > ck->maxk) {
            ck->maxk = id;
        }
        while (ck->lo < ck->kw && ck->set[ck->lo] == UINT64_MAX) {
            ck->lo++;
        }
    }
}

/* Take o out of the set again, restoring lo and maxk. */
static void set_remove(struct checker *ck,
                       const struct op *o,
                       uint32_t lo,
                       int64_t maxk)
{
    ck->set[o->bit / 64] &= ~(1ULL << (o->bit % 64));
    ck->used[o->pool]--;
    if (o->known) {
        ck->zob ^= o->zobrist;
    }
    ck->lo = lo;
    ck->maxk = maxk;
}

/* Remember the closest approach: stuck at the return of op `stuck`, with
 * known_done known ops linearized. Closest is the latest return reached,
 * then the most known ops. */
static void note_best(struct checker *ck,
                      uint32_t state,
                      uint32_t stuck,
                      size_t known_done)
{
    struct best *b = &ck->best;
    size_t pos = ck->ops[stuck].ret_pos;
    if (b->depth >= 0 &&
        (pos < b->ret_pos || (pos == b->ret_pos && known_done <= b->known))) {
        return;
    }
    b->ret_pos = pos;
    b->known = known_done;
    b->depth = (int64_t)ck->depth;
    b->ntail = ck->depth < BEST_TAIL ? ck->depth : BEST_TAIL;
    for (size_t i = 0; i < b->ntail; i++) {
        b->tail[i] = ck->stack[ck->depth - b->ntail + i].entry->op;
    }
    b->state = state;
    b->stuck = stuck;
    memcpy(b->set, ck->set, (ck->kw + ck->uw + ck->sw) * sizeof *ck->set);
}

static bool past_deadline(const struct checker *ck)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > ck->deadline.tv_sec ||
           (now.tv_sec == ck->deadline.tv_sec &&
            now.tv_nsec >= ck->deadline.tv_nsec);
}

enum search_result { SEARCH_OK, SEARCH_FAIL, SEARCH_TIMEOUT, SEARCH_NOMEM };

/* Can the config just entered (state; the list as it is) still succeed, by
 * a quick look ahead? Take the first read R (get, or cas that reported the
 * current value) whose return is in the list: only ops called before that
 * return can be linearized before R. If the key is present and none of
 * them can replace the state (put, delete, swapping cas), the state can
 * only grow by appends until R, so R must see it as a prefix. If the key
 * is absent and none of them can create it (put, append, swapping cas), R
 * must see it absent. @return the return entry of an R that cannot be
 * satisfied (so the config is sure to fail), or NULL */
static struct entry *look_ahead(struct checker *ck, uint32_t state)
{
    bool absent = state == STATE_ABSENT;
    for (struct entry *e = ck->ents[0].next; e; e = e->next) {
        const struct lc_event *p = ck->ops[e->op].ev;
        if (e->is_call) {
            bool swap = p->op == LC_CAS && (p->unknown || p->swapped);
            if (swap || p->op == LC_PUT ||
                (absent ? p->op == LC_APPEND : p->op == LC_DELETE)) {
                return NULL;
            }
        } else if (!p->unknown &&
                   (p->op == LC_GET || (p->op == LC_CAS && !p->swapped))) {
            bool ok = absent ? !p->found
                             : p->found && state_is_prefix(ck, state, e->op);
            return ok ? NULL : e;
        }
    }
    return NULL;
}

/* A pending silent write that would make an absent key present (put,
 * append, cas if absent) and may be linearized now: its call is before
 * the first return in the list. Any one does: they differ only in values
 * nobody reads. @return its call entry, or NULL */
static struct entry *silent_maker(struct checker *ck)
{
    for (struct entry *e = ck->ents[0].next; e && e->is_call; e = e->next) {
        const struct op *o = &ck->ops[e->op];
        if (o->silent && (o->ev->op != LC_CAS || o->ev->expect_absent)) {
            return e;
        }
    }
    return NULL;
}

/* A known op that may be linearized now, changes nothing and is accepted
 * in this state: a get, a cas that did not swap, a delete that found
 * nothing. Linearizing it right away loses nothing (from anywhere later
 * it could move here: the state is the same there, as it must match the
 * same output), so the search does that and tries nothing else at this
 * config. @return its call entry, or NULL (*err set when out of memory) */
static struct entry *free_read(struct checker *ck, uint32_t state, bool *err)
{
    for (struct entry *e = ck->ents[0].next; e && e->is_call; e = e->next) {
        struct op *o = &ck->ops[e->op];
        enum lc_op op = o->ev->op;
        if (!o->known || !(op == LC_GET || (op == LC_CAS && !o->ev->swapped) ||
                           (op == LC_DELETE && !o->ev->found))) {
            continue;
        }
        uint32_t next;
        int ok = step(ck, o, state, &next);
        if (ok) {
            *err = ok < 0;
            return ok < 0 ? NULL : e;
        }
    }
    return NULL;
}

/* The passes over the pending calls of a config, in order. */
enum pass {
    PASS_KNOWN,   /* known ops */
    PASS_GLUED,   /* known deletes that found the key, on an absent key,
                     each with a silent write before it */
    PASS_UNKNOWN, /* unknown ops */
    PASS_DONE
};

/* Wing & Gong's search with Lowe's memo over the list of call/return
 * entries: lift a call the model accepts (and whose (set, state) is new),
 * backtrack at a return nothing pending can precede. Each config tries the
 * known calls, then known deletes glued to a silent write (step()), then
 * the unknown calls: the configs with fewer unknown ops applied are
 * explored first and then rule out (memo_rules_out) the same ones with
 * more. */
static enum search_result search(struct checker *ck)
{
    struct entry *head = &ck->ents[0];
    struct entry *e = head->next;
    uint32_t state = STATE_ABSENT;
    size_t known_left = ck->nk;
    enum pass pass = PASS_KNOWN;
    bool fresh = true;    /* a new config: look ahead, look for reads */
    bool forcing = false; /* e is a free read */
    uint64_t steps = 0;

    while (known_left > 0) {
        if ((steps++ & 4095) == 0 && ck->has_deadline && past_deadline(ck)) {
            return SEARCH_TIMEOUT;
        }
        if (fresh) {
            fresh = false;
            struct entry *r = look_ahead(ck, state);
            if (r) {
                e = r;            /* the return it cannot get past */
                pass = PASS_DONE; /* so: backtrack */
            } else {
                bool err = false;
                r = free_read(ck, state, &err);
                if (err) {
                    return SEARCH_NOMEM;
                }
                if (r) {
                    e = r;
                    forcing = true;
                }
            }
        }
        if (e->is_call) {
            struct op *o = &ck->ops[e->op];
            bool glued = pass == PASS_GLUED;
            bool turn =
                pass == PASS_UNKNOWN
                    ? !o->known
                    : o->known &&
                          (!glued || (o->ev->op == LC_DELETE && o->ev->found));
            if (!turn) {
                e = e->next; /* its turn is in another pass */
                continue;
            }
            uint32_t next = STATE_ABSENT;
            struct entry *glue = glued ? silent_maker(ck) : NULL;
            int ok = glued ? glue != NULL : step(ck, o, state, &next);
            if (ok < 0) {
                return SEARCH_NOMEM;
            }
            if (ok && !o->known && next == state) {
                /* An unknown op that changes nothing: whatever follows
                 * it here follows just as well without it. */
                ok = 0;
            }
            if (ok) {
                uint32_t lo = ck->lo;
                int64_t maxk = ck->maxk;
                if (glue) {
                    set_add(ck, &ck->ops[glue->op], glue->op);
                }
                set_add(ck, o, e->op);
                int64_t idx = memo_visit(ck, next);
                if (idx < 0) {
                    return SEARCH_NOMEM;
                }
                if (idx != UINT32_MAX) {
                    struct frame f = {.entry = e,
                                      .state = state,
                                      .lo = lo,
                                      .maxk = maxk,
                                      .memo = (uint32_t)idx,
                                      .pass = (uint8_t)pass,
                                      .forced = forcing};
                    forcing = false;
                    if (glue) {
                        struct frame g = f;
                        g.entry = glue;
                        ck->stack[ck->depth++] = g;
                        lift(glue);
                        f.glued = true;
                    }
                    ck->stack[ck->depth++] = f;
                    if (ck->depth > ck->max_depth) {
                        ck->max_depth = ck->depth;
                    }
                    state = next;
                    known_left -= o->known;
                    lift(e);
                    e = head->next;
                    pass = PASS_KNOWN;
                    fresh = true;
                    continue;
                }
                set_remove(ck, o, lo, maxk);
                if (glue) {
                    set_remove(ck, &ck->ops[glue->op], lo, maxk);
                }
            }
            if (forcing) {
                /* The free read leads where the search has been: so does
                 * this config. */
                forcing = false;
                while (e->is_call) {
                    e = e->next;
                }
                pass = PASS_DONE;
                continue;
            }
            e = e->next;
        } else if (pass < PASS_UNKNOWN) {
            /* On to the next pass that has anything to try. */
            pass++;
            if (pass == PASS_GLUED &&
                (state != STATE_ABSENT ||
                 ck->used[POOL_SILENT] == ck->pool_size[POOL_SILENT])) {
                pass++;
            }
            if (pass == PASS_UNKNOWN && ck->nk == ck->n) {
                pass++;
            }
            if (pass != PASS_DONE) {
                e = head->next;
            }
        } else {
            note_best(ck, state, e->op, ck->nk - known_left);
            bool forced;
            do { /* a free read that fails fails its config too */
                if (ck->depth == 0) {
                    return SEARCH_FAIL;
                }
                struct frame *f = &ck->stack[--ck->depth];
                struct op *o = &ck->ops[f->entry->op];
                ck->memo[f->memo].done = true;
                state = f->state;
                set_remove(ck, o, f->lo, f->maxk);
                known_left += o->known;
                unlift(f->entry);
                if (f->glued) {
                    struct frame *g = &ck->stack[--ck->depth];
                    set_remove(ck, &ck->ops[g->entry->op], g->lo, g->maxk);
                    unlift(g->entry);
                }
                e = f->entry->next;
                pass = f->pass;
                forced = f->forced;
            } while (forced);
        }
    }
    return SEARCH_OK;
}

/* ---- per key ------------------------------------------------------------- */

/* A call or return time to sort. */
struct event_ref
{
    int64_t t;    /* time; INT64_MAX for unknown returns */
    uint32_t op;  /* index into ops */
    bool is_call; /* call (true) or return */
};

static int cmp_event_ref(const void *pa, const void *pb)
{
    const struct event_ref *a = pa, *b = pb;
    if (a->t != b->t) {
        return a->t < b->t ? -1 : 1;
    }
    if (a->is_call != b->is_call) {
        return a->is_call ? -1 : 1; /* calls first: equal times overlap */
    }
    return a->op < b->op ? -1 : a->op > b->op;
}

/* How many bytes of reads find_silent_writes may scan per key. */
#define SILENT_SCAN_BYTES ((size_t)256 << 20)

/* Does p[0..n) contain v[0..len)? Counts the bytes looked at in *work. */
static bool contains(const void *p,
                     size_t n,
                     const void *v,
                     size_t len,
                     size_t *work)
{
    *work += n;
    return memmem(p, n, v, len) != NULL;
}

/* Does known op e show these bytes: a get or a cas that reported a value
 * containing them, or a cas that swapped expecting them? */
static bool known_op_shows(const struct lc_event *e,
                           const void *v,
                           size_t len,
                           size_t *work)
{
    if (e->found && (e->op == LC_GET || (e->op == LC_CAS && !e->swapped))) {
        return contains(e->out, e->out_len, v, len, work);
    }
    if (e->op == LC_CAS && e->swapped && !e->expect_absent) {
        return contains(e->expected, e->expected_len, v, len, work);
    }
    return false;
}

/* Mark silent the unknown puts, appends and cases whose (non-empty) value
 * nothing could depend on: no known op shows it (known_op_shows) and no
 * unknown cas that is not silent expects it. See step() for why they need
 * not be linearized. The scan is bounded; past the bound none is silent. */
static void find_silent_writes(struct checker *ck)
{
    size_t work = 0;
    for (size_t i = ck->nk; i < ck->n; i++) {
        struct op *o = &ck->ops[i];
        const struct lc_event *e = o->ev;
        o->silent = e->op != LC_GET && e->op != LC_DELETE && e->value_len > 0;
        for (size_t j = 0; o->silent && j < ck->nk; j++) {
            o->silent =
                !known_op_shows(ck->ops[j].ev, e->value, e->value_len, &work);
            if (work > SILENT_SCAN_BYTES) {
                goto err_too_much;
            }
        }
    }
    /* An unknown cas that may matter makes what it expects matter. */
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t i = ck->nk; i < ck->n; i++) {
            const struct lc_event *w = ck->ops[i].ev;
            if (w->op != LC_CAS || w->expect_absent || ck->ops[i].silent) {
                continue;
            }
            for (size_t j = ck->nk; j < ck->n; j++) {
                struct op *u = &ck->ops[j];
                if (u->silent &&
                    contains(w->expected, w->expected_len, u->ev->value,
                             u->ev->value_len, &work)) {
                    u->silent = false;
                    changed = true;
                }
                if (work > SILENT_SCAN_BYTES) {
                    goto err_too_much;
                }
            }
        }
    }
    for (size_t i = ck->nk; i < ck->n; i++) {
        ck->nsilent += ck->ops[i].silent;
    }
    return;

err_too_much:
    for (size_t i = ck->nk; i < ck->n; i++) {
        ck->ops[i].silent = false;
    }
}

static void checker_free(struct checker *ck)
{
    free(ck->ops);
    free(ck->ents);
    free(ck->stack);
    free(ck->st);
    free(ck->itab);
    free(ck->set);
    free(ck->memo);
    free(ck->mtab);
    free(ck->arena);
    free(ck->best.set);
}

/* Set up the search of one key's events (see lc_check_key()). */
static int checker_init(struct checker *ck,
                        const struct lc_event *const *ev,
                        size_t n)
{
    memset(ck, 0, sizeof *ck);
    ck->n = n;
    while (ck->nk < n && !ev[ck->nk]->unknown) {
        ck->nk++;
    }
    ck->kw = (ck->nk + 63) / 64;
    size_t all_uw = (n - ck->nk + 63) / 64; /* silent or not: see below */
    ck->maxk = -1;
    ck->st_cap = 64;
    ck->ops = calloc(n, sizeof *ck->ops);
    ck->ents = calloc(2 * n + 1, sizeof *ck->ents);
    ck->stack = calloc(n, sizeof *ck->stack);
    ck->st = malloc(ck->st_cap * sizeof *ck->st);
    ck->set = calloc(ck->kw + 2 * all_uw + 1, sizeof *ck->set);
    ck->best.set = calloc(ck->kw + 2 * all_uw + 1, sizeof *ck->set);
    ck->arena_cap = 256;
    ck->arena = malloc(ck->arena_cap * sizeof *ck->arena);
    struct event_ref *refs = malloc(2 * n * sizeof *refs);
    struct entry **call_entry = malloc(n * sizeof *call_entry);
    if (!ck->ops || !ck->ents || !ck->stack || !ck->st || !ck->set ||
        !ck->best.set || !ck->arena || !refs || !call_entry ||
        grow_intern_table(ck) != 0 || memo_grow(ck, 4 * n) != 0) {
        free(call_entry);
        free(refs);
        checker_free(ck);
        return -1;
    }
    ck->st[STATE_ABSENT] = (struct state){.parent = STATE_NONE,
                                          .prefix_of = STATE_NONE,
                                          .not_prefix_of = STATE_NONE};
    ck->st[STATE_EMPTY] = ck->st[STATE_ABSENT];
    ck->nst = 2;
    ck->best.depth = -1;

    for (size_t i = 0; i < n; i++) {
        const struct lc_event *e = ev[i];
        struct op *o = &ck->ops[i];
        o->ev = e;
        o->known = !e->unknown;
        o->bit = (uint32_t)i; /* unknown ones: below */
        o->zobrist = mix64(0x6a09e667f3bcc908ULL + i * 0x9e3779b97f4a7c15ULL);
        o->value_hash = hash_bytes(e->value, e->value_len);
        o->value_pow = hash_pow(e->value_len);
        o->expected_hash = hash_bytes(e->expected, e->expected_len);
        o->out_hash = hash_bytes(e->out, e->out_len);
        o->put_state = o->expected_state = o->out_state = STATE_NONE;
        refs[2 * i] = (struct event_ref){
            .t = e->call_ns, .op = (uint32_t)i, .is_call = true};
        refs[2 * i + 1] = (struct event_ref){
            .t = e->unknown ? INT64_MAX : e->return_ns, .op = (uint32_t)i};
    }
    qsort(refs, 2 * n, sizeof *refs, cmp_event_ref);

    /* Bits: known ops, then unknown ops kept in the memo, then pooled ones
     * (only counted there). */
    find_silent_writes(ck);
    size_t pooled = 0;
    for (size_t i = ck->nk; i < n; i++) {
        struct op *o = &ck->ops[i];
        o->pool = o->silent                ? POOL_SILENT
                  : o->ev->op == LC_DELETE ? POOL_DELETE
                                           : POOL_NONE;
        ck->pool_size[o->pool]++;
        pooled += o->pool != POOL_NONE;
    }
    ck->uw = (n - ck->nk - pooled + 63) / 64;
    ck->sw = (pooled + 63) / 64;
    size_t nu = 0, np = 0;
    for (size_t i = ck->nk; i < n; i++) {
        struct op *o = &ck->ops[i];
        o->bit = (uint32_t)(o->pool ? (ck->kw + ck->uw) * 64 + np++
                                    : ck->kw * 64 + nu++);
    }

    struct entry *prev = &ck->ents[0];
    for (size_t i = 0; i < 2 * n; i++) {
        struct entry *en = &ck->ents[i + 1];
        en->op = refs[i].op;
        en->is_call = refs[i].is_call;
        en->prev = prev;
        prev->next = en;
        prev = en;
        if (en->is_call) {
            ck->ops[en->op].call_pos = i;
            call_entry[en->op] = en;
        } else {
            ck->ops[en->op].ret_pos = i;
            call_entry[en->op]->match = en;
        }
    }
    prev->next = NULL;
    free(call_entry);
    free(refs);
    return 0;
}

/* ---- the entry point ----------------------------------------------------- */

enum lc_key_result lc_check_key(const struct lc_event *const *ev,
                                size_t n,
                                const struct timespec *deadline,
                                char *detail,
                                size_t detail_len)
{
    struct lc_msg m = {.buf = detail, .cap = detail_len};
    struct checker ck;
    if (checker_init(&ck, ev, n) != 0) {
        lc_msg_key(&m, ev[0]);
        lc_msg_printf(&m, ": out of memory setting up the search");
        return LC_KEY_NOMEM;
    }
    if (deadline) {
        ck.deadline = *deadline;
        ck.has_deadline = true;
    }
    enum search_result r = search(&ck);
    switch (r) {
        case SEARCH_OK:
            break;
        case SEARCH_FAIL:
            describe_failure(&ck, &m);
            break;
        case SEARCH_TIMEOUT:
        case SEARCH_NOMEM:
            lc_msg_key(&m, ev[0]);
            lc_msg_printf(&m, " (%zu operations): ", ck.n);
            if (r == SEARCH_TIMEOUT) {
                lc_msg_printf(&m, "ran out of time");
            } else {
                lc_msg_printf(&m, "ran out of memory (memo cap %zu MiB)",
                              LC_MEMO_CAP_BYTES >> 20);
            }
            lc_msg_printf(
                &m,
                " after %zu memo entries, with at most %zu operations "
                "linearized at once",
                ck.memo_n, ck.max_depth);
            break;
    }
    checker_free(&ck);
    return r == SEARCH_OK        ? LC_KEY_OK
           : r == SEARCH_FAIL    ? LC_KEY_FAIL
           : r == SEARCH_TIMEOUT ? LC_KEY_TIMEOUT
                                 : LC_KEY_NOMEM;
}
