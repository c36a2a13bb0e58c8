/* lincheck.h: records histories of KV operations and checks that they are
 * linearizable (Porcupine's method: Wing & Gong's search with Lowe's
 * memoisation, partitioned into groups of keys that no operation joins).
 *
 *   struct lc_history *h = lc_history_new();
 *   struct lc_event e = {.client = 1, .op = LC_PUT, .key = "k", .key_len = 1,
 *                        .value = "v", .value_len = 1,
 *                        .call_ns = t0, .return_ns = t1};
 *   lc_history_add(h, &e);                  (from any thread)
 *   ...
 *   struct lc_result res;
 *   if (lc_check(h, 60, &res) != LC_LINEARIZABLE) puts(res.detail);
 *   lc_history_free(h);
 *
 * The model, per key: the state is "absent" or a byte string.
 *  - get: found and out == state, or !found and the state is absent;
 *  - put: state = value; append: state = (state or "") + value;
 *  - delete: state = absent; found says the state was present;
 *  - cas: matches when (expect_absent and absent) or (present and state ==
 *    expected); swapped: must match, state = value; not swapped: must not
 *    match, and found/out give the current state.
 * Operations over several keys (the keys' versions count changes: 0 when
 * absent, 1 after the write that created the key, +1 per later put,
 * append or swap; a delete makes it 0 again):
 *  - range: a read of several keys at one instant; each read key's found
 *    and out must match the state;
 *  - txn: if every compare holds (a value compare on an absent key is
 *    false; a version compare sees 0), the then-ops run, else the
 *    else-ops (puts and deletes, in order); succeeded says which.
 * An operation with unknown outcome (a timed-out write) has an infinite
 * return time and any output; it takes effect as its op would, or never.
 * Gets and ranges with unknown outcome are dropped before checking.
 */
#ifndef TESTS_LINCHECK_H
#define TESTS_LINCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum lc_op { LC_GET, LC_PUT, LC_APPEND, LC_DELETE, LC_CAS, LC_RANGE, LC_TXN };

/* One key of a range read, as the range saw it. */
struct lc_read
{
    const void *key; /* the key */
    size_t key_len;  /* its length */
    bool found;      /* it existed */
    const void *out; /* its value when found */
    size_t out_len;  /* its length */
};

/* What a transaction's compare looks at. */
enum lc_cmp_target { LC_CMP_VALUE, LC_CMP_VERSION };

/* How a compare weighs the key's target against the operand (as etcd's:
 * values bytewise, versions as numbers). */
enum lc_cmp_result {
    LC_CMP_EQUAL = 0,
    LC_CMP_GREATER = 1, /* the key's is greater */
    LC_CMP_LESS = 2,
    LC_CMP_NOT_EQUAL = 3,
};

/* One compare of a transaction. */
struct lc_compare
{
    const void *key;           /* the key */
    size_t key_len;            /* its length */
    enum lc_cmp_target target; /* value or version */
    enum lc_cmp_result result; /* the relation that must hold */
    const void *value;         /* LC_CMP_VALUE: the operand */
    size_t value_len;          /* its length */
    uint64_t version;          /* LC_CMP_VERSION: the operand */
};

/* One op of a transaction's branch: a put or a delete of one key. */
struct lc_write
{
    bool del;          /* delete (value ignored) instead of put */
    const void *key;   /* the key */
    size_t key_len;    /* its length */
    const void *value; /* put: the value */
    size_t value_len;  /* its length */
};

/* One operation of a history, as a client saw it. Byte strings are
 * pointer + length and binary-safe. A range or txn leaves key empty and
 * uses its own fields below. */
struct lc_event
{
    int client;           /* who called it (for messages) */
    enum lc_op op;        /* what it was */
    const void *key;      /* the key */
    size_t key_len;       /* its length */
    const void *value;    /* put/append argument; cas: new value */
    size_t value_len;     /* its length */
    const void *expected; /* cas: required value */
    size_t expected_len;  /* its length */
    bool expect_absent;   /* cas: the key must not exist (expected ignored) */
    bool unknown;         /* outcome unknown (timed out write): it may or may
                             not have taken effect; its return time is
                             treated as infinite and its output ignored */
    bool found;           /* get: the key existed; delete: something was
                             deleted; cas mismatch: the key existed */
    const void *out;      /* get: value read; cas mismatch: the current value */
    size_t out_len;       /* its length */
    bool swapped;         /* cas: it swapped */
    int64_t call_ns;      /* when the client called (monotonic ns) */
    int64_t return_ns;    /* when it returned (ignored when unknown) */
    const struct lc_read *reads;       /* range: each key read */
    size_t n_reads;                    /* their number */
    const struct lc_compare *compares; /* txn: the compares */
    size_t n_compares;                 /* their number */
    const struct lc_write *then_ops;   /* txn: run when every compare holds */
    size_t n_then;                     /* their number */
    const struct lc_write *else_ops;   /* txn: run otherwise */
    size_t n_else;                     /* their number */
    bool succeeded;                    /* txn: the compares held */
};

struct lc_history; /* opaque; thread-safe to add to */

/**
 * Create an empty history.
 * @return the history, or NULL when out of memory
 */
struct lc_history *lc_history_new(void);

/** Free a history and every event in it (NULL is a no-op). */
void lc_history_free(struct lc_history *h);

/**
 * Append one event. Safe to call from many threads at once.
 * @param e copied, bytes and arrays included; e's pointers are not kept.
 *          A NULL pointer is allowed only with length (or count) 0. Unless
 *          e->unknown, e->return_ns must not be before e->call_ns. A range
 *          or txn has an empty key and touches at least one key; the other
 *          ops have no reads, compares or branch ops.
 * @return 0, or -1 with errno ENOMEM or EINVAL (bad op, target or result,
 *         NULL bytes with a length, return before call, fields of another
 *         op)
 */
int lc_history_add(struct lc_history *h, const struct lc_event *e);

/** @return the number of events added so far */
size_t lc_history_size(const struct lc_history *h);

/**
 * The i-th event in the order added. Not to be called while another
 * thread adds.
 * @return the event (owned by h, valid until lc_history_free), or NULL
 *         when i >= lc_history_size(h)
 */
const struct lc_event *lc_history_get(const struct lc_history *h, size_t i);

/**
 * Write the history as JSON lines, one object per event (README.md).
 * Not to be called while another thread adds.
 * @return 0, or -1 on a write error (errno set)
 */
int lc_history_write(const struct lc_history *h, FILE *f);

/**
 * Read JSON lines (README.md) and add their events to h. Blank lines are
 * skipped.
 * @param err    receives "line N: reason" on failure ("" on success)
 * @param errlen size of err (may be 0 with err NULL)
 * @return 0, or -1 on malformed input, a read error or out of memory; the
 *         events of the lines before the bad one stay in h
 */
int lc_history_read(struct lc_history *h, FILE *f, char *err, size_t errlen);

enum lc_verdict {
    LC_LINEARIZABLE = 0,
    LC_NOT_LINEARIZABLE = 1,
    LC_UNKNOWN = 2
};

struct lc_result
{
    enum lc_verdict verdict; /* the answer, also returned by lc_check */
    size_t ops;              /* operations checked (after dropping unknown
                                gets and ranges) */
    size_t keys;             /* distinct keys */
    size_t keys_done;        /* keys fully checked before the budget ran out
                                (a non-linearizable key counts as checked) */
    size_t groups;           /* groups of keys checked apart: keys that a
                                range or txn reads or writes together are
                                one group, every other key its own */
    bool timed_out;          /* UNKNOWN because the time budget ran out (else
                                UNKNOWN means the memory cap was hit) */
    char detail[2048];       /* NOT_LINEARIZABLE: the key (printable-escaped),
                                the longest linearizable prefix found, the op
                                whose return could not be passed and the
                                pending ops; UNKNOWN: the key and why; else
                                empty */
};

/**
 * Check the history. The keys are split into groups that no operation
 * joins (each key alone unless ranges and txns join it to others); the
 * groups are checked one by one, fewest operations first, and the first
 * non-linearizable one ends the check. The search's memo is capped
 * (LC_MEMO_CAP_BYTES); hitting the cap gives LC_UNKNOWN.
 * @param h              not to be added to during the check
 * @param budget_seconds bounds the whole search (0 = no limit); a budget
 *                       that runs out gives LC_UNKNOWN, never
 *                       LC_LINEARIZABLE
 * @param res            filled in (may be NULL)
 * @return the verdict
 */
enum lc_verdict lc_check(const struct lc_history *h,
                         double budget_seconds,
                         struct lc_result *res);

/* The most memory one group's search may use for its memo before giving
 * up with LC_UNKNOWN. */
#define LC_MEMO_CAP_BYTES ((size_t)1 << 30)

#endif /* TESTS_LINCHECK_H */
