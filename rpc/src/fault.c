/* fault.c: the choices of fault injection, shared by server and channel. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define CUT_FAIL_MAX_MS     100 /* a cut link fails a call within this */
#define REORDER_DEFAULT_MIN 200 /* the lab's long reordering */
#define REORDER_DEFAULT_MAX 2200

static bool prob_ok(double p)
{
    return !isnan(p) && p >= 0.0 && p <= 1.0;
}

bool rpc_faults_valid(const struct rpc_faults *f, char *why, size_t why_len)
{
    const char *bad = NULL;
    if (!prob_ok(f->drop_request)) {
        bad = "drop_request is not a probability in [0, 1]";
    } else if (!prob_ok(f->drop_reply)) {
        bad = "drop_reply is not a probability in [0, 1]";
    } else if (!prob_ok(f->duplicate)) {
        bad = "duplicate is not a probability in [0, 1]";
    } else if (!prob_ok(f->reorder)) {
        bad = "reorder is not a probability in [0, 1]";
    } else if (f->delay_min_ms > f->delay_max_ms) {
        bad = "delay: the minimum is above the maximum";
    } else if (f->reorder_min_ms > f->reorder_max_ms) {
        bad = "reorder delay: the minimum is above the maximum";
    } else if (f->delay_max_ms > RPC_FAULT_MAX_MS ||
               f->reorder_max_ms > RPC_FAULT_MAX_MS) {
        bad = "a delay is over 60000 ms";
    }
    if (bad && why) {
        snprintf(why, why_len, "%s", bad);
    }
    return bad == NULL;
}

/* What zero means: a reorder range of 0-0 is the lab's 200-2200 ms. */
static void fill_defaults(struct rpc_faults *f)
{
    if (f->reorder > 0 && f->reorder_max_ms == 0) {
        f->reorder_min_ms = REORDER_DEFAULT_MIN;
        f->reorder_max_ms = REORDER_DEFAULT_MAX;
    }
}

bool rpc_faults_active(const struct rpc_faults *f)
{
    return f->cut || f->drop_request > 0 || f->drop_reply > 0 ||
           f->delay_max_ms > 0 || f->duplicate > 0 || f->reorder > 0;
}

int rpc_fault_set(struct rpc_fault_state *st,
                  const struct rpc_faults *f,
                  uint64_t seed)
{
    if (f && !rpc_faults_valid(f, NULL, 0)) {
        return RPC_E_INVALID;
    }
    memset(&st->stats, 0, sizeof st->stats); /* counts are per rule */
    if (!f) {
        memset(&st->f, 0, sizeof st->f);
        st->active = false;
        return 0;
    }
    st->f = *f;
    fill_defaults(&st->f);
    st->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    st->active = rpc_faults_active(&st->f);
    return 0;
}

/* splitmix64 */
static uint64_t next(struct rpc_fault_state *st)
{
    uint64_t z = (st->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static bool chance(struct rpc_fault_state *st, double p)
{
    return p > 0 && (double)(next(st) >> 11) * 0x1.0p-53 < p;
}

static uint32_t between(struct rpc_fault_state *st, uint32_t lo, uint32_t hi)
{
    return hi > lo ? lo + (uint32_t)(next(st) % ((uint64_t)hi - lo + 1)) : lo;
}

void rpc_fault_plan(struct rpc_fault_state *st, struct rpc_fault_choice *c)
{
    memset(c, 0, sizeof *c);
    if (!st->active) {
        return;
    }
    const struct rpc_faults *f = &st->f;
    if (f->cut) {
        c->cut = true;
        c->fail_after_ms = between(st, 0, CUT_FAIL_MAX_MS);
        st->stats.cut++;
        return;
    }
    c->delay_ms = between(st, f->delay_min_ms, f->delay_max_ms);
    if (chance(st, f->drop_request)) {
        c->drop_request = true;
        c->fail_after_ms = c->delay_ms;
        st->stats.dropped_requests++;
        return;
    }
    if (c->delay_ms) {
        st->stats.delayed++;
    }
    if (chance(st, f->duplicate)) {
        c->duplicate = true;
        st->stats.duplicated++;
    }
    if (chance(st, f->drop_reply)) {
        c->drop_reply = true;
        st->stats.dropped_replies++;
    } else if (chance(st, f->reorder)) {
        c->hold_ms = between(st, f->reorder_min_ms, f->reorder_max_ms);
        st->stats.reordered++;
    }
}

void rpc_fault_stats_add(struct rpc_fault_stats *to,
                         const struct rpc_fault_stats *from)
{
    to->cut += from->cut;
    to->dropped_requests += from->dropped_requests;
    to->dropped_replies += from->dropped_replies;
    to->delayed += from->delayed;
    to->duplicated += from->duplicated;
    to->reordered += from->reordered;
}
