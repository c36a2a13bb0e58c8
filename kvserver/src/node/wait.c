/* wait.c: how the node answers services without knowing them: waiters
 * embedded in requests (a write until its entry is applied, a read until
 * it may be served) and subscribers to the loop's broadcasts (node.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>

#include "node.h"

/* ------------------------------------------------------------- writes */

/* Hold @w until its entry (@index, @term) is applied. */
static void queue_write(struct kv_node *n,
                        struct node_write_waiter *w,
                        uint64_t index,
                        uint64_t term)
{
    w->index = index;
    w->term = term;
    w->proposed_ms = node_now_ms();
    w->deadline = w->proposed_ms + n->cfg.request_timeout_ms;
    w->next = NULL;
    if (n->writes_tail) {
        n->writes_tail->next = w;
    } else {
        n->writes = w;
    }
    n->writes_tail = w;
    node_schedule_turn(n);
}

int node_propose(struct kv_node *n,
                 const Raftkv__Command *cmd,
                 struct node_write_waiter *w)
{
    if (n->frozen) {
        /* This node cannot write; the leader, when it is another, may. */
        uint64_t leader = raft_leader(n->raft);
        if (leader && leader != n->cfg.id) {
            w->done(n, w, RAFTKV__KV_ERROR__KV_WRONG_LEADER, NULL, leader,
                    "not the leader (and this node cannot write its disk)");
            return RAFTKV__KV_ERROR__KV_WRONG_LEADER;
        }
        int err = n->disk_full ? RAFTKV__KV_ERROR__KV_NO_SPACE
                               : RAFTKV__KV_ERROR__KV_UNAVAILABLE;
        w->done(n, w, err, NULL, 0, n->store.errmsg);
        return err;
    }
    size_t len = raftkv__command__get_packed_size(cmd);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        w->done(n, w, RAFTKV__KV_ERROR__KV_INTERNAL, NULL, 0, "out of memory");
        return RAFTKV__KV_ERROR__KV_INTERNAL;
    }
    raftkv__command__pack(cmd, buf);
    uint64_t index, term, hint = 0;
    node_clock(n);
    int rv = raft_propose(n->raft, buf, len, &index, &term, &hint);
    free(buf);
    if (rv) {
        int err;
        if (rv == RAFT_NOTLEADER || rv == RAFT_ETRANSFER) {
            err = hint ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                       : RAFTKV__KV_ERROR__KV_UNAVAILABLE;
            w->done(n, w, err, NULL, hint,
                    rv == RAFT_ETRANSFER ? "leadership is being transferred"
                                         : "not the leader");
        } else {
            err = rv == RAFT_EFULL ? RAFTKV__KV_ERROR__KV_UNAVAILABLE
                                   : RAFTKV__KV_ERROR__KV_INTERNAL;
            w->done(n, w, err, NULL, 0, raft_strerror(rv));
        }
        return err;
    }
    queue_write(n, w, index, term);
    return 0;
}

int node_propose_change(struct kv_node *n,
                        const struct raft_change *c,
                        struct node_write_waiter *w,
                        char *why,
                        size_t why_len)
{
    if (n->frozen) {
        snprintf(why, why_len, "this node cannot write its disk: %s",
                 n->store.errmsg);
        return RAFT_EFULL;
    }
    uint64_t index, hint = 0;
    node_clock(n);
    int rv = raft_propose_change(n->raft, c, &index, &hint);
    if (rv) {
        snprintf(why, why_len, "%s",
                 rv == RAFT_EINVAL || rv == RAFT_ECHANGE ? raft_errmsg(n->raft)
                                                         : raft_strerror(rv));
        return rv;
    }
    queue_write(n, w, index, raft_term(n->raft));
    return 0;
}

size_t node_writes_pending(const struct kv_node *n)
{
    size_t k = 0;
    for (const struct node_write_waiter *w = n->writes; w; w = w->next) {
        k++;
    }
    return k;
}

static struct node_write_waiter *pop_write(struct kv_node *n)
{
    struct node_write_waiter *w = n->writes;
    n->writes = w->next;
    if (!n->writes) {
        n->writes_tail = NULL;
    }
    w->next = NULL;
    return w;
}

/* A write at an applied index for which no outcome was recorded here. */
static void resolve_unmatched(struct kv_node *n, struct node_write_waiter *w)
{
    uint64_t term;
    if (raft_entry_term(n->raft, w->index, &term) == 0 && term != w->term) {
        w->done(n, w, RAFTKV__KV_ERROR__KV_WRONG_LEADER, NULL,
                raft_leader(n->raft),
                "not applied: a new leader replaced the entry");
    } else {
        w->done(n, w, RAFTKV__KV_ERROR__KV_TIMEOUT, NULL, raft_leader(n->raft),
                "outcome unknown; retry with the same request id");
    }
}

void node_complete_writes(struct kv_node *n)
{
    for (size_t i = 0; i < n->n_done; i++) {
        const struct kv_applied *d = &n->done[i];
        while (n->writes && n->writes->index < d->index) {
            resolve_unmatched(n, pop_write(n));
        }
        if (!n->writes || n->writes->index != d->index) {
            continue;
        }
        struct node_write_waiter *w = pop_write(n);
        if (w->term == d->term) {
            w->done(n, w, d->outcome.err, &d->outcome, 0, NULL);
        } else {
            resolve_unmatched(n, w);
        }
    }
    while (n->writes && n->writes->index <= n->applied) {
        resolve_unmatched(n, pop_write(n));
    }
}

void node_note_write(struct kv_node *n,
                     const struct node_write_waiter *w,
                     bool applied,
                     void *call)
{
    uint64_t now = node_now_ms();
    if (applied && n->apply_began_ms >= w->proposed_ms) {
        rpc_call_note(
            call, "raft commit %llu ms, apply %llu ms, index %llu",
            (unsigned long long)(n->apply_began_ms - w->proposed_ms),
            (unsigned long long)(n->apply_done_ms - n->apply_began_ms),
            (unsigned long long)w->index);
    } else {
        rpc_call_note(call, "in raft %llu ms, not applied here, index %llu",
                      (unsigned long long)(now - w->proposed_ms),
                      (unsigned long long)w->index);
    }
}

void node_note_read(const struct node_read_waiter *w, void *call)
{
    rpc_call_note(call, "read index round and applied state %llu ms",
                  (unsigned long long)(node_now_ms() - w->began_ms));
}

/* -------------------------------------------------------------- reads */

static void list_append(struct node_read_list *l, struct node_read_waiter *w)
{
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail) {
        l->tail->next = w;
    } else {
        l->head = w;
    }
    l->tail = w;
}

static void list_remove(struct node_read_list *l, struct node_read_waiter *w)
{
    if (w->prev) {
        w->prev->next = w->next;
    } else {
        l->head = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    } else {
        l->tail = w->prev;
    }
    w->prev = w->next = NULL;
}

int node_read_begin(struct kv_node *n, struct node_read_waiter *w)
{
    if (n->frozen) {
        uint64_t leader = raft_leader(n->raft);
        bool other = leader && leader != n->cfg.id;
        int err = other ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                        : RAFTKV__KV_ERROR__KV_UNAVAILABLE;
        w->ready(n, w, err, other ? leader : 0,
                 "node cannot persist; use a stale read or another node");
        return err;
    }
    uint64_t hint = 0;
    node_clock(n);
    w->seq = n->read_seq + 1;
    int rv = raft_read_index(n->raft, w->seq, &hint);
    if (rv) {
        int err = rv == RAFT_NOTLEADER && hint
                      ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                      : RAFTKV__KV_ERROR__KV_UNAVAILABLE;
        w->ready(n, w, err, hint,
                 rv == RAFT_NOTLEADER ? "not the leader" : raft_strerror(rv));
        return err;
    }
    n->read_seq = w->seq;
    w->index = 0;
    w->confirmed = false;
    w->began_ms = node_now_ms();
    w->deadline = w->began_ms + n->cfg.request_timeout_ms;
    if (w->caller_deadline && w->caller_deadline < w->deadline) {
        w->deadline = w->caller_deadline;
    }
    list_append(&n->reads, w);
    node_schedule_turn(n);
    return 0;
}

/* The core answers reads in the order they began, and the list holds them
 * in that order: one walk finds them all (reads that timed out meanwhile
 * are gone from the list, and their answers match nothing). */
void node_confirm_reads(struct kv_node *n,
                        const struct raft_read *reads,
                        size_t n_reads)
{
    struct node_read_waiter *w = n->reads.head;
    uint64_t last = 0;
    for (size_t i = 0; i < n_reads; i++) {
        uint64_t seq = reads[i].ctx;
        if (seq < last) {
            w = n->reads.head; /* (out of order: look from the start) */
        }
        last = seq;
        while (w && w->seq < seq) {
            w = w->next;
        }
        if (!w || w->seq != seq) {
            continue;
        }
        struct node_read_waiter *found = w;
        w = w->next;
        list_remove(&n->reads, found);
        if (reads[i].ok) {
            found->index = reads[i].index;
            found->confirmed = true;
            list_append(&n->reads_ready, found);
        } else {
            uint64_t leader = raft_leader(n->raft);
            found->ready(n, found,
                         leader ? RAFTKV__KV_ERROR__KV_WRONG_LEADER
                                : RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                         leader, "leadership lost");
        }
    }
}

/* Confirmed reads are served in the order they were confirmed, whose read
 * indexes do not go down: the first one the applied state has not reached
 * ends the walk. */
void node_serve_reads(struct kv_node *n)
{
    unsigned served = 0;
    struct node_read_waiter *w;
    while ((w = n->reads_ready.head) && w->index <= n->applied) {
        if (served++ == NODE_READS_PER_TURN) {
            /* The loop's sockets and timers first; then the rest. */
            struct timeval now = {0, 0};
            if (n->serve_ev && !n->stopping) {
                evtimer_add(n->serve_ev, &now);
            }
            return;
        }
        list_remove(&n->reads_ready, w);
        w->ready(n, w, 0, 0, NULL);
    }
}

/* ----------------------------------------------------- sweep, shutdown */

/* Every read whose deadline passed (callers' deadlines differ: the whole
 * list, a few times a second). */
static void sweep_reads(struct kv_node *n,
                        struct node_read_list *l,
                        uint64_t now)
{
    struct node_read_waiter *r = l->head, *next;
    for (; r; r = next) {
        next = r->next;
        if (r->deadline <= now) {
            list_remove(l, r);
            r->ready(n, r, RAFTKV__KV_ERROR__KV_TIMEOUT, raft_leader(n->raft),
                     "read not confirmed in time");
        }
    }
}

void node_sweep_waiters(struct kv_node *n)
{
    uint64_t now = node_now_ms();
    /* Writes time out in order; a later one cannot expire first. */
    while (n->writes && n->writes->deadline <= now) {
        struct node_write_waiter *w = pop_write(n);
        w->done(n, w, RAFTKV__KV_ERROR__KV_TIMEOUT, NULL, raft_leader(n->raft),
                "not applied in time; outcome unknown, retry with the same "
                "request id");
    }
    sweep_reads(n, &n->reads, now);
    sweep_reads(n, &n->reads_ready, now);
}

void node_fail_waiters(struct kv_node *n, int err, const char *why)
{
    while (n->writes) {
        struct node_write_waiter *w = pop_write(n);
        /* The write may still commit through another leader. */
        w->done(n, w, RAFTKV__KV_ERROR__KV_TIMEOUT, NULL, 0, why);
    }
    struct node_read_list *lists[2] = {&n->reads, &n->reads_ready};
    for (int k = 0; k < 2; k++) {
        struct node_read_waiter *r;
        while ((r = lists[k]->head)) {
            list_remove(lists[k], r);
            r->ready(n, r, err, 0, why);
        }
    }
}

/* -------------------------------------------------------- subscribers */

int node_subscribe(struct kv_node *n,
                   unsigned events,
                   node_event_cb cb,
                   void *arg)
{
    if (n->n_subs == NODE_MAX_SUBSCRIBERS) {
        rpc_logf(RPC_LOG_ERROR,
                 "node %llu: no room for another subscriber (%d at most)",
                 (unsigned long long)n->cfg.id, NODE_MAX_SUBSCRIBERS);
        return -1;
    }
    struct node_subscriber *s = &n->subs[n->n_subs++];
    s->events = events;
    s->cb = cb;
    s->arg = arg;
    return 0;
}

void node_publish(struct kv_node *n, enum node_event ev)
{
    for (size_t i = 0; i < n->n_subs; i++) {
        if (n->subs[i].events & ev) {
            n->subs[i].cb(n, ev, n->subs[i].arg);
        }
    }
}
