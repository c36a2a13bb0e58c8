/* lincheck_group.c: the search for a linearization of a group of keys that
 * ranges and transactions join: Wing & Gong's search with Lowe's memo, as
 * in lincheck_key.c, over a model that holds every key of the group. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lincheck_group.h"
#include "lincheck_msg.h"

#define ID_NONE UINT32_MAX /* out of memory, where an id was wanted */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ULL;
    }
    return mix64(h ^ n);
}

/* Bytewise order, a prefix first (etcd's order of values). */
static int cmp_bytes(const void *a, size_t an, const void *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) {
        return c;
    }
    return an < bn ? -1 : an > bn;
}

/* ---- interned byte strings ----------------------------------------------
 *
 * Keys and values get small ids: equal bytes, equal ids. Id 0 is no
 * string (a value id 0 is "absent"). The bytes are the events' (borrowed)
 * or, for the results of appends, the table's own. */

struct str
{
    const uint8_t *p; /* bytes */
    size_t len;       /* length */
    uint64_t hash;    /* hash_bytes */
    bool owned;       /* p is the table's to free */
};

struct strings
{
    struct str *s;  /* by id; s[0] unused */
    size_t n;       /* ids in use, 0 included */
    size_t cap;     /* slots in s */
    uint32_t *tab;  /* open addressing: ids, 0 = free */
    size_t tab_cap; /* slots (a power of two) */
    size_t owned;   /* bytes the table allocated */
};

static int strings_init(struct strings *t)
{
    memset(t, 0, sizeof *t);
    t->cap = 64;
    t->tab_cap = 128;
    t->s = malloc(t->cap * sizeof *t->s);
    t->tab = calloc(t->tab_cap, sizeof *t->tab);
    t->n = 1;
    return t->s && t->tab ? 0 : -1;
}

static void strings_free(struct strings *t)
{
    for (size_t i = 1; t->s && i < t->n; i++) {
        if (t->s[i].owned) {
            free((void *)t->s[i].p);
        }
    }
    free(t->s);
    free(t->tab);
}

static int strings_grow(struct strings *t)
{
    size_t cap = 2 * t->tab_cap;
    uint32_t *tab = calloc(cap, sizeof *tab);
    if (!tab) {
        return -1;
    }
    for (size_t id = 1; id < t->n; id++) {
        size_t i = (size_t)t->s[id].hash & (cap - 1);
        while (tab[i]) {
            i = (i + 1) & (cap - 1);
        }
        tab[i] = (uint32_t)id;
    }
    free(t->tab);
    t->tab = tab;
    t->tab_cap = cap;
    return 0;
}

/* The id of these bytes. When new, owned says that p is handed over to
 * the table (else p must outlive it); when not new, an owned p is freed.
 * @return the id, or ID_NONE without memory (an owned p freed) */
static uint32_t intern(struct strings *t, const void *p, size_t len, bool owned)
{
    uint64_t h = hash_bytes(p, len);
    size_t mask = t->tab_cap - 1, i = (size_t)h & mask;
    for (; t->tab[i]; i = (i + 1) & mask) {
        const struct str *s = &t->s[t->tab[i]];
        if (s->hash == h && s->len == len &&
            (len == 0 || memcmp(s->p, p, len) == 0)) {
            if (owned) {
                free((void *)p);
            }
            return t->tab[i];
        }
    }
    if (t->n >= ID_NONE - 1) {
        goto err_free;
    }
    if (t->n == t->cap) {
        size_t cap = 2 * t->cap;
        struct str *s = realloc(t->s, cap * sizeof *s);
        if (!s) {
            goto err_free;
        }
        t->s = s;
        t->cap = cap;
    }
    uint32_t id = (uint32_t)t->n++;
    t->s[id] = (struct str){.p = p, .len = len, .hash = h, .owned = owned};
    t->tab[i] = id;
    t->owned += owned ? len : 0;
    if (2 * t->n > t->tab_cap && strings_grow(t) != 0) {
        t->n--;
        t->tab[i] = 0;
        t->owned -= owned ? len : 0;
        goto err_free;
    }
    return id;

err_free:
    if (owned) {
        free((void *)p);
    }
    return ID_NONE;
}

/* ---- the search's data --------------------------------------------------- */

/* A compare, with ids for its key and value. */
struct gcmp
{
    uint32_t key;              /* key index */
    enum lc_cmp_target target; /* value or version */
    enum lc_cmp_result result; /* relation */
    uint32_t value;            /* value id (LC_CMP_VALUE) */
    uint64_t version;          /* operand (LC_CMP_VERSION) */
};

/* A put or delete of a txn's branch, with ids. */
struct gwrite
{
    uint32_t key;   /* key index */
    bool del;       /* delete */
    uint32_t value; /* put: value id */
};

/* One operation of the group, with ids for what it names. */
struct gop
{
    const struct lc_event *ev; /* the event */
    uint64_t zobrist;          /* random bits xored into the set hash */
    uint32_t bit;              /* its bit in the set */
    bool known;                /* its outcome is known */
    uint32_t key;              /* single-key ops: key index */
    uint32_t value;            /* put/append/cas: value id */
    uint32_t expected;         /* cas: expected value id (0: absent) */
    uint32_t out;              /* get, cas mismatch: value seen (0: absent) */
    uint32_t *rkey;            /* range: key indices read */
    uint32_t *rval;            /* range: value ids seen (0: absent) */
    struct gcmp *cmp;          /* txn: compares */
    struct gwrite *then_ops;   /* txn: then branch */
    struct gwrite *else_ops;   /* txn: else branch */
    size_t call_pos;           /* index of its call in the sorted events */
    size_t ret_pos;            /* index of its return */
};

/* A call or return in the doubly-linked list of the search. */
struct entry
{
    struct entry *prev;  /* previous entry, or the head */
    struct entry *next;  /* next entry, or NULL */
    struct entry *match; /* call: its return entry */
    uint32_t op;         /* index into ops */
    bool is_call;        /* call (true) or return */
};

/* A key's value and version before a step changed them. */
struct undo
{
    uint32_t key;     /* key index */
    uint32_t val;     /* value id before */
    uint64_t version; /* version before */
};

/* A lift, to undo it. */
struct frame
{
    struct entry *entry; /* the lifted call */
    size_t undo;         /* the undo log's length before the step */
};

/* A memo slot: a (set of linearized ops, state) already explored. */
struct slot
{
    uint64_t hash; /* of the set and the state */
    size_t off;    /* where its words are in the arena; SIZE_MAX = free */
};

/* Where the search came closest, for the failure message. */
#define BEST_TAIL 4
struct best
{
    int64_t depth;            /* ops linearized there, -1 before any */
    uint32_t tail[BEST_TAIL]; /* the last ops linearized, oldest first */
    size_t ntail;             /* entries in tail */
    uint32_t stuck;           /* the op whose return could not be passed */
    uint32_t *val;            /* the state there: values */
    uint64_t *version;        /* and versions */
    uint64_t *set;            /* the linearized set there */
};

struct checker
{
    struct gop *ops;     /* the group's ops */
    size_t n;            /* ops */
    struct strings keys; /* the group's keys (index = id - 1) */
    struct strings vals; /* values */
    size_t nk;           /* keys */
    bool versions;       /* a compare reads versions: states differ by
                            them too */
    uint32_t *val;       /* the state: each key's value id (0: absent) */
    uint64_t *version;   /* each key's version (0: absent) */
    uint64_t state_hash; /* xor of key_hash() over the keys */
    struct undo *undo;   /* changes of the steps on the stack */
    size_t nundo;        /* entries */
    size_t undo_cap;     /* slots */
    struct entry *ents;  /* head (index 0) then 2n entries */
    struct frame *stack; /* lifts */
    size_t depth;        /* frames on the stack */
    size_t max_depth;    /* most ops linearized at once so far */
    uint64_t *set;       /* linearized ops, a bit each: known ops' words, then
                            unknown ops' */
    size_t nw;           /* words in set */
    size_t kw;           /* of them, known ops' words */
    size_t nk_bits;      /* known ops */
    size_t lo;           /* known words below lo are all full */
    size_t hi;           /* known words from hi on are all empty */
    uint64_t zob;        /* xor of the linearized ops' zobrist bits */
    size_t state_words;  /* words a state takes in the memo */
    uint64_t *arena;     /* memo entries: set words, then state words */
    size_t arena_n;      /* words used */
    size_t arena_cap;    /* words allocated */
    struct slot *mtab;   /* open addressing over the entries */
    size_t mtab_cap;     /* slots (a power of two) */
    size_t memo_n;       /* entries */
    struct best best;    /* closest approach */
    struct timespec deadline; /* when to give up, if has_deadline */
    bool has_deadline;        /* a budget was given */
};

/* ---- the model ----------------------------------------------------------- */

static uint64_t key_hash(const struct checker *ck, uint32_t k)
{
    uint64_t v = ck->val[k];
    uint64_t x =
        (uint64_t)k * 0x9e3779b97f4a7c15ULL ^ v * 0xc2b2ae3d27d4eb4fULL;
    if (ck->versions) {
        x ^= mix64(ck->version[k] + 0x165667b19e3779f9ULL);
    }
    return mix64(x);
}

/* Give key k a value and version, logging the old ones. */
static int set_key(struct checker *ck, uint32_t k, uint32_t val, uint64_t ver)
{
    if (ck->nundo == ck->undo_cap) {
        size_t cap = ck->undo_cap ? 2 * ck->undo_cap : 256;
        struct undo *u = realloc(ck->undo, cap * sizeof *u);
        if (!u) {
            return -1;
        }
        ck->undo = u;
        ck->undo_cap = cap;
    }
    ck->undo[ck->nundo++] =
        (struct undo){.key = k, .val = ck->val[k], .version = ck->version[k]};
    ck->state_hash ^= key_hash(ck, k);
    ck->val[k] = val;
    ck->version[k] = ver;
    ck->state_hash ^= key_hash(ck, k);
    return 0;
}

/* Undo the changes logged after mark. */
static void undo_to(struct checker *ck, size_t mark)
{
    while (ck->nundo > mark) {
        const struct undo *u = &ck->undo[--ck->nundo];
        ck->state_hash ^= key_hash(ck, u->key);
        ck->val[u->key] = u->val;
        ck->version[u->key] = u->version;
        ck->state_hash ^= key_hash(ck, u->key);
    }
}

/* Did the changes logged after mark leave the state as it was? */
static bool unchanged_since(const struct checker *ck, size_t mark)
{
    for (size_t i = mark; i < ck->nundo; i++) {
        uint32_t k = ck->undo[i].key;
        if (ck->val[k] != ck->undo[i].val ||
            (ck->versions && ck->version[k] != ck->undo[i].version)) {
            return false;
        }
    }
    return true;
}

static int put_key(struct checker *ck, uint32_t k, uint32_t val)
{
    return set_key(ck, k, val, ck->version[k] + 1);
}

static int delete_key(struct checker *ck, uint32_t k)
{
    return ck->val[k] ? set_key(ck, k, 0, 0) : 0;
}

/* Key k's value followed by id's bytes. */
static int append_key(struct checker *ck, uint32_t k, uint32_t id)
{
    const struct str *cur = &ck->vals.s[ck->val[k]], *add = &ck->vals.s[id];
    if (ck->val[k] == 0 || cur->len == 0) {
        return put_key(ck, k, id);
    }
    if (add->len == 0) {
        return put_key(ck, k, ck->val[k]);
    }
    if (cur->len > SIZE_MAX - add->len || ck->vals.owned > LC_MEMO_CAP_BYTES) {
        return -1;
    }
    uint8_t *p = malloc(cur->len + add->len);
    if (!p) {
        return -1;
    }
    memcpy(p, cur->p, cur->len);
    memcpy(p + cur->len, add->p, add->len);
    uint32_t v = intern(&ck->vals, p, cur->len + add->len, true);
    return v == ID_NONE ? -1 : put_key(ck, k, v);
}

static bool relation_holds(enum lc_cmp_result r, int c)
{
    switch (r) {
        case LC_CMP_EQUAL:
            return c == 0;
        case LC_CMP_GREATER:
            return c > 0;
        case LC_CMP_LESS:
            return c < 0;
        case LC_CMP_NOT_EQUAL:
            return c != 0;
    }
    return false;
}

/* Does a compare hold in the state? A value compare on an absent key is
 * false whatever the relation; a version compare sees 0 there. */
static bool compare_holds(const struct checker *ck, const struct gcmp *c)
{
    if (c->target == LC_CMP_VERSION) {
        uint64_t v = ck->version[c->key];
        return relation_holds(c->result, v < c->version ? -1 : v > c->version);
    }
    uint32_t cur = ck->val[c->key];
    if (cur == 0) {
        return false;
    }
    if (cur == c->value) {
        return relation_holds(c->result, 0);
    }
    const struct str *a = &ck->vals.s[cur], *b = &ck->vals.s[c->value];
    return relation_holds(c->result, cmp_bytes(a->p, a->len, b->p, b->len));
}

static int run_branch(struct checker *ck, const struct gwrite *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((w[i].del ? delete_key(ck, w[i].key)
                      : put_key(ck, w[i].key, w[i].value)) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Take op o in the current state: 1 when the model accepts what the client
 * saw (the state then changed as o does), 0 when it does not (the state
 * unchanged), -1 without memory. An op of unknown outcome is accepted
 * whenever it can take effect, and takes the effect the state gives it. */
static int step(struct checker *ck, const struct gop *o)
{
    const struct lc_event *e = o->ev;
    uint32_t cur = e->op <= LC_CAS ? ck->val[o->key] : 0;
    int rv = 0;
    switch (e->op) {
        case LC_GET:
            return (e->found ? cur == o->out : cur == 0) ? 1 : 0;
        case LC_PUT:
            rv = put_key(ck, o->key, o->value);
            break;
        case LC_APPEND:
            rv = append_key(ck, o->key, o->value);
            break;
        case LC_DELETE:
            if (o->known && e->found != (cur != 0)) {
                return 0;
            }
            rv = delete_key(ck, o->key);
            break;
        case LC_CAS: {
            bool match =
                e->expect_absent ? cur == 0 : cur != 0 && cur == o->expected;
            if (o->known && (e->swapped != match ||
                             (!match && (e->found ? cur != o->out : cur)))) {
                return 0;
            }
            rv = match ? put_key(ck, o->key, o->value) : 0;
            break;
        }
        case LC_RANGE:
            for (size_t i = 0; i < e->n_reads; i++) {
                if (ck->val[o->rkey[i]] != o->rval[i]) {
                    return 0;
                }
            }
            return 1;
        case LC_TXN: {
            bool holds = true;
            for (size_t i = 0; i < e->n_compares && holds; i++) {
                holds = compare_holds(ck, &o->cmp[i]);
            }
            if (o->known && e->succeeded != holds) {
                return 0;
            }
            rv = holds ? run_branch(ck, o->then_ops, e->n_then)
                       : run_branch(ck, o->else_ops, e->n_else);
            break;
        }
    }
    return rv == 0 ? 1 : -1;
}

/* ---- the memo ------------------------------------------------------------ */

static uint64_t config_hash(const struct checker *ck)
{
    return mix64(ck->zob ^ mix64(ck->state_hash));
}

/* The state as memo words: values two to a word, then versions. */
static void state_words(const struct checker *ck, uint64_t *w)
{
    size_t vw = (ck->nk + 1) / 2;
    memset(w, 0, vw * sizeof *w);
    for (size_t k = 0; k < ck->nk; k++) {
        w[k / 2] |= (uint64_t)ck->val[k] << (k % 2 ? 32 : 0);
    }
    if (ck->versions) {
        memcpy(w + vw, ck->version, ck->nk * sizeof *w);
    }
}

static size_t memo_bytes(const struct checker *ck)
{
    return ck->arena_cap * sizeof *ck->arena + ck->mtab_cap * sizeof *ck->mtab +
           ck->vals.owned;
}

static int memo_grow_table(struct checker *ck)
{
    size_t cap = ck->mtab_cap ? 2 * ck->mtab_cap : 1024;
    struct slot *t = malloc(cap * sizeof *t);
    if (!t) {
        return -1;
    }
    for (size_t i = 0; i < cap; i++) {
        t[i].off = SIZE_MAX;
    }
    for (size_t i = 0; i < ck->mtab_cap; i++) {
        if (ck->mtab[i].off == SIZE_MAX) {
            continue;
        }
        size_t j = (size_t)ck->mtab[i].hash & (cap - 1);
        while (t[j].off != SIZE_MAX) {
            j = (j + 1) & (cap - 1);
        }
        t[j] = ck->mtab[i];
    }
    free(ck->mtab);
    ck->mtab = t;
    ck->mtab_cap = cap;
    return 0;
}

/* The full value of known word i (the last one may be partial). */
static uint64_t full_word(const struct checker *ck, size_t i)
{
    return i + 1 < ck->kw || ck->nk_bits % 64 == 0
               ? UINT64_MAX
               : (1ULL << (ck->nk_bits % 64)) - 1;
}

/* Remember the current config: 1 when it is new, 0 when it was explored
 * already, -1 without memory (or past the cap). An entry holds lo and hi,
 * the known words between them (those below are full, those from hi on
 * empty: a set that is nearly a prefix of the ops by call time takes few
 * words), the unknown ops' words and the state. */
static int memo_visit(struct checker *ck)
{
    size_t uw = ck->nw - ck->kw, win = ck->hi - ck->lo;
    size_t words = 2 + win + uw + ck->state_words;
    if (ck->arena_cap - ck->arena_n < words) {
        size_t cap = 2 * ck->arena_cap + words;
        if (cap * sizeof *ck->arena + ck->mtab_cap * sizeof *ck->mtab >
            LC_MEMO_CAP_BYTES) {
            return -1;
        }
        uint64_t *a = realloc(ck->arena, cap * sizeof *a);
        if (!a) {
            return -1;
        }
        ck->arena = a;
        ck->arena_cap = cap;
    }
    /* The candidate goes at the arena's end; it stays only when new. */
    uint64_t *w = ck->arena + ck->arena_n;
    w[0] = ck->lo;
    w[1] = ck->hi;
    memcpy(w + 2, ck->set + ck->lo, win * sizeof *w);
    memcpy(w + 2 + win, ck->set + ck->kw, uw * sizeof *w);
    state_words(ck, w + 2 + win + uw);
    uint64_t h = config_hash(ck);
    size_t mask = ck->mtab_cap - 1, i = (size_t)h & mask;
    for (; ck->mtab[i].off != SIZE_MAX; i = (i + 1) & mask) {
        const uint64_t *o = ck->arena + ck->mtab[i].off;
        if (ck->mtab[i].hash == h && o[0] == w[0] && o[1] == w[1] &&
            memcmp(o, w, words * sizeof *w) == 0) {
            return 0;
        }
    }
    ck->mtab[i] = (struct slot){.hash = h, .off = ck->arena_n};
    ck->arena_n += words;
    ck->memo_n++;
    if (2 * ck->memo_n > ck->mtab_cap) {
        if (memo_bytes(ck) + ck->mtab_cap * sizeof *ck->mtab >
                LC_MEMO_CAP_BYTES ||
            memo_grow_table(ck) != 0) {
            return -1;
        }
    }
    return 1;
}

/* ---- messages ------------------------------------------------------------ */

static void msg_keys(struct lc_msg *m, const struct checker *ck)
{
    lc_msg_printf(m, "keys ");
    for (size_t k = 0; k < ck->nk && k < 6; k++) {
        const struct str *s = &ck->keys.s[k + 1];
        lc_msg_printf(m, "%s", k ? ", " : "");
        lc_msg_value(m, s->p, s->len);
    }
    if (ck->nk > 6) {
        lc_msg_printf(m, " and %zu more", ck->nk - 6);
    }
}

/* A state: {"k":"v"@version, "j":absent}. */
static void msg_state(struct lc_msg *m,
                      const struct checker *ck,
                      const uint32_t *val,
                      const uint64_t *version)
{
    lc_msg_printf(m, "{");
    for (size_t k = 0; k < ck->nk; k++) {
        const struct str *key = &ck->keys.s[k + 1];
        lc_msg_printf(m, "%s", k ? ", " : "");
        lc_msg_value(m, key->p, key->len);
        if (val[k] == 0) {
            lc_msg_printf(m, ":absent");
            continue;
        }
        lc_msg_printf(m, ":");
        lc_msg_read(m, ck->vals.s[val[k]].p, ck->vals.s[val[k]].len);
        if (ck->versions) {
            lc_msg_printf(m, "@%" PRIu64, version[k]);
        }
    }
    lc_msg_printf(m, "}");
}

static bool in_set(const uint64_t *set, size_t i)
{
    return (set[i / 64] >> (i % 64)) & 1;
}

/* The failure message: how far the search got, and where it stuck. */
static void describe_failure(const struct checker *ck, struct lc_msg *m)
{
    const struct best *b = &ck->best;
    msg_keys(m, ck);
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
    msg_state(m, ck, b->val, b->version);
    lc_msg_printf(m, "; no order of the pending ops gets past the return of ");
    lc_msg_op(m, ck->ops[b->stuck].ev);
    lc_msg_printf(m, "; pending:");
    size_t shown = 0, more = 0, limit = ck->ops[b->stuck].ret_pos;
    for (size_t i = 0; i < ck->n; i++) {
        if (ck->ops[i].call_pos > limit || in_set(b->set, ck->ops[i].bit)) {
            continue;
        }
        if (shown == 6) {
            more++;
            continue;
        }
        lc_msg_printf(m, "%s", shown ? "; " : " ");
        lc_msg_op(m, ck->ops[i].ev);
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

/* Add op to the linearized set, or take it out; lo and hi follow. */
static void flip_bit(struct checker *ck, uint32_t op)
{
    size_t b = ck->ops[op].bit, i = b / 64;
    ck->set[i] ^= 1ULL << (b % 64);
    ck->zob ^= ck->ops[op].zobrist;
    if (i >= ck->kw) {
        return;
    }
    if (ck->set[i] >> (b % 64) & 1) {
        while (ck->lo < ck->kw && ck->set[ck->lo] == full_word(ck, ck->lo)) {
            ck->lo++;
        }
        if (i >= ck->hi) {
            ck->hi = i + 1;
        }
    } else {
        if (i < ck->lo) {
            ck->lo = i;
        }
        while (ck->hi > ck->lo && ck->set[ck->hi - 1] == 0) {
            ck->hi--;
        }
    }
}

/* A dead end at the return of op stuck: remember it when deepest. */
static void note_best(struct checker *ck, uint32_t stuck)
{
    struct best *b = &ck->best;
    if ((int64_t)ck->depth <= b->depth) {
        return;
    }
    b->depth = (int64_t)ck->depth;
    b->stuck = stuck;
    b->ntail = ck->depth < BEST_TAIL ? ck->depth : BEST_TAIL;
    for (size_t i = 0; i < b->ntail; i++) {
        b->tail[i] = ck->stack[ck->depth - b->ntail + i].entry->op;
    }
    memcpy(b->val, ck->val, ck->nk * sizeof *b->val);
    memcpy(b->version, ck->version, ck->nk * sizeof *b->version);
    memcpy(b->set, ck->set, ck->nw * sizeof *b->set);
}

static bool past_deadline(const struct checker *ck)
{
    if (!ck->has_deadline) {
        return false;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > ck->deadline.tv_sec ||
           (now.tv_sec == ck->deadline.tv_sec &&
            now.tv_nsec >= ck->deadline.tv_nsec);
}

enum search_result { SEARCH_OK, SEARCH_FAIL, SEARCH_TIMEOUT, SEARCH_NOMEM };

/* Lowe's version of Wing & Gong's search: walk the list of calls and
 * returns; lift a call the model accepts (unless its config was explored
 * before) and start again from the head; at a return, undo the last lift
 * and go on after it. Done when the walk meets the end or the return of an
 * unknown op (all at infinity, after every known return). */
static enum search_result search(struct checker *ck)
{
    struct entry *head = &ck->ents[0], *e = head->next;
    for (uint64_t iter = 1;; iter++) {
        if (iter % 4096 == 0 && past_deadline(ck)) {
            return SEARCH_TIMEOUT;
        }
        if (!e || (!e->is_call && !ck->ops[e->op].known)) {
            return SEARCH_OK;
        }
        if (!e->is_call) {
            note_best(ck, e->op);
            if (ck->depth == 0) {
                return SEARCH_FAIL;
            }
            struct frame f = ck->stack[--ck->depth];
            flip_bit(ck, f.entry->op);
            undo_to(ck, f.undo);
            unlift(f.entry);
            e = f.entry->next;
            continue;
        }
        const struct gop *o = &ck->ops[e->op];
        size_t mark = ck->nundo;
        int r = step(ck, o);
        if (r < 0) {
            return SEARCH_NOMEM;
        }
        /* An unknown op that changes nothing need never be applied: the
         * same state with fewer ops linearized is as good. */
        if (r && !o->known && unchanged_since(ck, mark)) {
            r = 0;
        }
        if (r) {
            flip_bit(ck, e->op);
            int v = memo_visit(ck);
            if (v < 0) {
                return SEARCH_NOMEM;
            }
            if (v) {
                ck->stack[ck->depth++] =
                    (struct frame){.entry = e, .undo = mark};
                if (ck->depth > ck->max_depth) {
                    ck->max_depth = ck->depth;
                }
                lift(e);
                e = head->next;
                continue;
            }
            flip_bit(ck, e->op);
        }
        undo_to(ck, mark);
        e = e->next;
    }
}

/* ---- setting up ---------------------------------------------------------- */

/* A call or return time to sort. */
struct event_ref
{
    int64_t t;    /* time */
    bool inf;     /* the return of an unknown op: after every other */
    uint32_t op;  /* index into ops */
    bool is_call; /* call (true) or return */
};

static int cmp_event_ref(const void *pa, const void *pb)
{
    const struct event_ref *a = pa, *b = pb;
    if (a->inf != b->inf) {
        return a->inf ? 1 : -1;
    }
    if (a->t != b->t) {
        return a->t < b->t ? -1 : 1;
    }
    if (a->is_call != b->is_call) {
        return a->is_call ? -1 : 1; /* calls first: equal times overlap */
    }
    return a->op < b->op ? -1 : a->op > b->op;
}

static void checker_free(struct checker *ck)
{
    for (size_t i = 0; ck->ops && i < ck->n; i++) {
        free(ck->ops[i].rkey);
        free(ck->ops[i].rval);
        free(ck->ops[i].cmp);
        free(ck->ops[i].then_ops);
        free(ck->ops[i].else_ops);
    }
    free(ck->ops);
    strings_free(&ck->keys);
    strings_free(&ck->vals);
    free(ck->val);
    free(ck->version);
    free(ck->undo);
    free(ck->ents);
    free(ck->stack);
    free(ck->set);
    free(ck->arena);
    free(ck->mtab);
    free(ck->best.val);
    free(ck->best.version);
    free(ck->best.set);
}

/* Key index of these bytes (new keys get the next index). */
static uint32_t key_index(struct checker *ck, const void *p, size_t n)
{
    uint32_t id = intern(&ck->keys, p, n, false);
    return id == ID_NONE ? ID_NONE : id - 1;
}

/* Value id of these bytes (borrowed from the event). */
static uint32_t value_id(struct checker *ck, const void *p, size_t n)
{
    return intern(&ck->vals, p, n, false);
}

static int compile_writes(struct checker *ck,
                          const struct lc_write *src,
                          size_t n,
                          struct gwrite **out)
{
    *out = calloc(n ? n : 1, sizeof **out);
    if (!*out) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct gwrite *w = &(*out)[i];
        w->del = src[i].del;
        w->key = key_index(ck, src[i].key, src[i].key_len);
        w->value = w->del ? 0 : value_id(ck, src[i].value, src[i].value_len);
        if (w->key == ID_NONE || w->value == ID_NONE) {
            return -1;
        }
    }
    return 0;
}

/* Ids for everything op o names. */
static int compile_op(struct checker *ck, struct gop *o)
{
    const struct lc_event *e = o->ev;
    if (e->op <= LC_CAS) {
        o->key = key_index(ck, e->key, e->key_len);
        o->value = value_id(ck, e->value, e->value_len);
        o->expected =
            e->expect_absent ? 0 : value_id(ck, e->expected, e->expected_len);
        o->out = e->found ? value_id(ck, e->out, e->out_len) : 0;
        return o->key == ID_NONE || o->value == ID_NONE ||
                       o->expected == ID_NONE || o->out == ID_NONE
                   ? -1
                   : 0;
    }
    if (e->op == LC_RANGE) {
        o->rkey = malloc(e->n_reads * sizeof *o->rkey);
        o->rval = malloc(e->n_reads * sizeof *o->rval);
        if (!o->rkey || !o->rval) {
            return -1;
        }
        for (size_t i = 0; i < e->n_reads; i++) {
            const struct lc_read *r = &e->reads[i];
            o->rkey[i] = key_index(ck, r->key, r->key_len);
            o->rval[i] = r->found ? value_id(ck, r->out, r->out_len) : 0;
            if (o->rkey[i] == ID_NONE || o->rval[i] == ID_NONE) {
                return -1;
            }
        }
        return 0;
    }
    o->cmp = calloc(e->n_compares ? e->n_compares : 1, sizeof *o->cmp);
    if (!o->cmp) {
        return -1;
    }
    for (size_t i = 0; i < e->n_compares; i++) {
        const struct lc_compare *c = &e->compares[i];
        struct gcmp *g = &o->cmp[i];
        g->key = key_index(ck, c->key, c->key_len);
        g->target = c->target;
        g->result = c->result;
        g->version = c->version;
        g->value = c->target == LC_CMP_VALUE
                       ? value_id(ck, c->value, c->value_len)
                       : 0;
        if (g->key == ID_NONE || g->value == ID_NONE) {
            return -1;
        }
        ck->versions = ck->versions || c->target == LC_CMP_VERSION;
    }
    return compile_writes(ck, e->then_ops, e->n_then, &o->then_ops) != 0 ||
                   compile_writes(ck, e->else_ops, e->n_else, &o->else_ops) != 0
               ? -1
               : 0;
}

/* Set up the search of a group's events (see lc_check_group()). */
static int checker_init(struct checker *ck,
                        const struct lc_event *const *ev,
                        size_t n)
{
    memset(ck, 0, sizeof *ck);
    ck->n = n;
    ck->best.depth = -1;
    for (size_t i = 0; i < n; i++) {
        ck->nk_bits += !ev[i]->unknown;
    }
    ck->kw = (ck->nk_bits + 63) / 64;
    ck->nw = ck->kw + (n - ck->nk_bits + 63) / 64;
    ck->ops = calloc(n, sizeof *ck->ops);
    ck->ents = calloc(2 * n + 1, sizeof *ck->ents);
    ck->stack = calloc(n, sizeof *ck->stack);
    ck->set = calloc(ck->nw, sizeof *ck->set);
    ck->best.set = calloc(ck->nw, sizeof *ck->best.set);
    struct event_ref *refs = malloc(2 * n * sizeof *refs);
    struct entry **call_entry = malloc(n * sizeof *call_entry);
    size_t nknown = 0;
    int rv = -1;
    if (strings_init(&ck->keys) != 0 || strings_init(&ck->vals) != 0 ||
        !ck->ops || !ck->ents || !ck->stack || !ck->set || !ck->best.set ||
        !refs || !call_entry) {
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        struct gop *o = &ck->ops[i];
        o->ev = ev[i];
        o->known = !ev[i]->unknown;
        o->bit = (uint32_t)(o->known ? nknown++ : ck->kw * 64 + (i - nknown));
        o->zobrist = mix64(0x6a09e667f3bcc908ULL + i * 0x9e3779b97f4a7c15ULL);
        if (compile_op(ck, o) != 0) {
            goto done;
        }
        refs[2 * i] = (struct event_ref){
            .t = ev[i]->call_ns, .op = (uint32_t)i, .is_call = true};
        refs[2 * i + 1] = (struct event_ref){
            .t = ev[i]->return_ns, .inf = !o->known, .op = (uint32_t)i};
    }
    ck->nk = ck->keys.n - 1;
    ck->val = calloc(ck->nk, sizeof *ck->val);
    ck->version = calloc(ck->nk, sizeof *ck->version);
    ck->best.val = calloc(ck->nk, sizeof *ck->best.val);
    ck->best.version = calloc(ck->nk, sizeof *ck->best.version);
    if (!ck->val || !ck->version || !ck->best.val || !ck->best.version ||
        memo_grow_table(ck) != 0) {
        goto done;
    }
    ck->state_words = (ck->nk + 1) / 2 + (ck->versions ? ck->nk : 0);
    for (uint32_t k = 0; k < ck->nk; k++) {
        ck->state_hash ^= key_hash(ck, k);
    }
    qsort(refs, 2 * n, sizeof *refs, cmp_event_ref);
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
    rv = 0;

done:
    free(call_entry);
    free(refs);
    return rv;
}

/* ---- the entry point ----------------------------------------------------- */

enum lc_key_result lc_check_group(const struct lc_event *const *ev,
                                  size_t n,
                                  const struct timespec *deadline,
                                  char *detail,
                                  size_t detail_len)
{
    struct lc_msg m = {.buf = detail, .cap = detail_len};
    struct checker ck;
    if (checker_init(&ck, ev, n) != 0) {
        lc_msg_printf(&m,
                      "a group of %zu operations: out of memory setting "
                      "up the search",
                      n);
        checker_free(&ck);
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
            msg_keys(&m, &ck);
            lc_msg_printf(&m, " (%zu operations): ", ck.n);
            if (r == SEARCH_TIMEOUT) {
                lc_msg_printf(&m, "ran out of time");
            } else {
                lc_msg_printf(&m, "ran out of memory (memo cap %zu MiB)",
                              LC_MEMO_CAP_BYTES >> 20);
            }
            lc_msg_printf(&m,
                          " after %zu memo entries, with at most %zu "
                          "operations linearized at once",
                          ck.memo_n, ck.max_depth);
            break;
    }
    checker_free(&ck);
    return r == SEARCH_OK        ? LC_KEY_OK
           : r == SEARCH_FAIL    ? LC_KEY_FAIL
           : r == SEARCH_TIMEOUT ? LC_KEY_TIMEOUT
                                 : LC_KEY_NOMEM;
}
