/* read.c - ReadIndex requests and leadership transfer (TimeoutNow). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Room to finish every pending read without allocating later. */
static int reserve_done(struct raft *r)
{
    size_t need = r->n_done_reads + r->n_reads;
    if (need <= r->cap_done_reads) {
        return 0;
    }
    size_t cap = r->cap_done_reads ? r->cap_done_reads * 2 : 16;
    while (cap < need) {
        cap *= 2;
    }
    struct raft_read *v = realloc(r->done_reads, cap * sizeof *v);
    if (v == NULL) {
        return RAFT_ENOMEM;
    }
    r->done_reads = v;
    r->cap_done_reads = cap;
    return 0;
}

int raft_read_index(struct raft *r, uint64_t ctx, uint64_t *leader_hint)
{
    if (r->busy) {
        return RAFT_EBUSY;
    }
    if (r->role != RAFT_LEADER) {
        rf_hint_leader(r, leader_hint);
        return RAFT_NOTLEADER;
    }
    if (r->n_reads == r->cap_reads) {
        size_t cap = r->cap_reads ? r->cap_reads * 2 : 16;
        struct raft_pending_read *v = realloc(r->reads, cap * sizeof *v);
        if (v == NULL) {
            return RAFT_ENOMEM;
        }
        r->reads = v;
        r->cap_reads = cap;
    }
    r->n_reads++;
    if (reserve_done(r) != 0) {
        r->n_reads--;
        return RAFT_ENOMEM;
    }
    r->reads[r->n_reads - 1].ctx = ctx;
    r->reads[r->n_reads - 1].seq = r->seq + 1;
    if (rf_n_voters(r) > 1 || !rf_is_voter(r, r->id)) {
        r->round_needed = true;
    }
    rf_reads_check(r);
    return 0;
}

/* Thesis 6.4: serve reads once (1) an entry of this term is committed and
 * (2) a quorum acknowledged a heartbeat round sent after the request. */
int rf_reads_check(struct raft *r)
{
    uint64_t t;
    if (r->role != RAFT_LEADER || r->n_reads == 0) {
        return 0;
    }
    if (!rf_log_term(&r->log, r->commit, &t) || t != r->term) {
        return 0;
    }
    size_t done = 0;
    while (done < r->n_reads) {
        uint64_t seq = r->reads[done].seq;
        size_t acks = 0;
        for (size_t k = 0; k < r->n_prs; k++) {
            acks += r->prs[k].voter &&
                    (r->prs[k].id == r->id || r->prs[k].ack_seq >= seq);
        }
        if (acks < rf_quorum_size(r)) {
            break;
        }
        struct raft_read *out = &r->done_reads[r->n_done_reads++];
        out->ctx = r->reads[done].ctx;
        out->index = r->commit;
        out->ok = true;
        done++;
    }
    if (done) { /* (each new read checks too: shift only what is done) */
        memmove(r->reads, r->reads + done,
                (r->n_reads - done) * sizeof *r->reads);
        r->n_reads -= done;
    }
    return 0;
}

/* Leadership lost: every pending read fails so clients retry elsewhere. */
int rf_reads_fail_all(struct raft *r)
{
    for (size_t k = 0; k < r->n_reads; k++) {
        struct raft_read *out = &r->done_reads[r->n_done_reads++];
        out->ctx = r->reads[k].ctx;
        out->index = 0;
        out->ok = false;
    }
    r->n_reads = 0;
    return 0;
}

/* Thesis 3.10: once the target's log matches, tell it to campaign now. */
int rf_transfer_check(struct raft *r, struct raft_progress *pr)
{
    if (r->transfer_target != pr->id || r->timeout_now_sent ||
        pr->match != rf_log_last_index(&r->log)) {
        return 0;
    }
    struct raft_message *m = rf_msg_new(r, false, RAFT_MSG_TIMEOUT_NOW, pr->id);
    if (m == NULL) {
        return RAFT_ENOMEM;
    }
    r->timeout_now_sent = true;
    return 0;
}

void rf_transfer_abort(struct raft *r)
{
    r->transfer_target = 0;
    r->timeout_now_sent = false;
}

int raft_transfer_leader(struct raft *r, uint64_t target)
{
    if (r->busy) {
        return RAFT_EBUSY;
    }
    if (r->role != RAFT_LEADER) {
        return RAFT_NOTLEADER;
    }
    struct raft_progress *pr = rf_progress_of(r, target);
    if (pr == NULL || !pr->voter) {
        return RAFT_EINVAL;
    }
    if (target == r->id || target == r->transfer_target) {
        return 0;
    }
    r->transfer_target = target;
    r->transfer_due = r->now + r->election_ms;
    r->timeout_now_sent = false;
    int rv = rf_transfer_check(r, pr);
    if (rv != 0) {
        return rv;
    }
    return rf_send_append(r, pr, false);
}

/* Follower: the leader hands over; campaign at once, skipping pre-vote. */
int rf_step_timeout_now(struct raft *r, const struct raft_message *m)
{
    struct raft_message *resp =
        rf_msg_new(r, false, RAFT_MSG_TIMEOUT_NOW_RESP, m->from);
    if (resp == NULL) {
        return RAFT_ENOMEM;
    }
    resp->cookie = m->cookie;
    if (r->role != RAFT_FOLLOWER || r->leader == 0 || m->from != r->leader) {
        /* Only our leader may hand leadership over: anyone else's
         * TimeoutNow would force an election (thesis 3.10 sends it from
         * the leader to the chosen follower). */
        return 0;
    }
    return rf_start_election(r, false, true);
}
