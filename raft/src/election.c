/* election.c - role changes, election timers, pre-vote and RequestVote. */
#include <stdio.h>

#include "internal.h"

/* Figure 2 / section 5.2: election timeouts are random in [T, 2T). */
void rf_reset_election_timer(struct raft *r)
{
    r->election_due = r->now + r->election_ms + rf_random(r) % r->election_ms;
}

/* With pre-vote or check-quorum a node that hears from a leader ignores
 * elections for an election timeout (thesis 4.2.3). */
bool rf_in_lease(const struct raft *r)
{
    if (!r->pre_vote && !r->check_quorum) {
        return false;
    }
    if (r->role == RAFT_LEADER) {
        return true;
    }
    return r->leader != 0 && r->now < r->leader_contact + r->election_ms;
}

static void leave_leadership(struct raft *r)
{
    if (r->role == RAFT_LEADER) {
        rf_reads_fail_all(r);
        rf_transfer_abort(r);
        r->uncommitted_bytes = 0;
        r->round_needed = false;
        r->broadcast_needed = false;
    }
}

/* Figure 2: "If RPC request or response contains term T > currentTerm:
 * set currentTerm = T, convert to follower". Also used to step down. */
void rf_become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
    leave_leadership(r);
    if (term > r->term) {
        r->term = term;
        r->vote = 0;
        r->role_dirty = true;
    }
    if (r->role != RAFT_FOLLOWER || r->leader != leader) {
        r->role_dirty = true;
    }
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
    if (leader != 0) {
        r->leader_contact = r->now;
    }
    rf_reset_election_timer(r);
}

int rf_become_leader(struct raft *r)
{
    /* A majority elected it in this term: whatever it may have lost of an
     * earlier life, it is part of the live cluster now (raft.c: fresh). */
    r->fresh = false;
    r->role = RAFT_LEADER;
    r->leader = r->id;
    r->role_dirty = true;
    r->uncommitted_bytes = 0;
    r->transfer_target = 0;
    r->heartbeat_due = r->now + r->heartbeat_ms;
    r->quorum_due = r->now + r->election_ms;
    rf_progress_reset(r);
    /* Section 8: a no-op entry at the start of the term lets the leader
     * commit (and serve reads) without waiting for a client. */
    int rv = rf_log_append(r, r->term, RAFT_ENTRY_NOOP, NULL, 0);
    if (rv != 0) {
        rf_become_follower(r, r->term, 0);
        return rv;
    }
    r->term_start = rf_log_last_index(&r->log);
    struct raft_progress *self = rf_progress_of(r, r->id);
    if (self != NULL) {
        self->next = rf_log_last_index(&r->log) + 1;
    }
    return rf_broadcast_append(r, false);
}

static size_t count_votes(struct raft *r, bool granted)
{
    size_t n = 0;
    for (size_t k = 0; k < r->n_prs; k++) {
        if (r->prs[k].voter && r->prs[k].voted &&
            r->prs[k].granted == granted) {
            n++;
        }
    }
    return n;
}

/* Tally (pre-)votes and move on when a quorum is reached. */
static int tally(struct raft *r)
{
    if (count_votes(r, true) >= rf_quorum_size(r)) {
        if (r->role == RAFT_PRECANDIDATE) {
            return rf_start_election(r, false, false);
        }
        return rf_become_leader(r);
    }
    if (count_votes(r, false) >= rf_quorum_size(r)) {
        rf_become_follower(r, r->term, 0);
    }
    return 0;
}

/* Section 5.2 (and thesis 9.6 for the pre-vote round). */
int rf_start_election(struct raft *r, bool pre_vote, bool transfer)
{
    if (r->term >= RAFT_TERM_MAX) {
        /* Both rounds ask for term + 1, which no node accepts (raft.h:
         * RAFT_TERM_MAX). Stay a follower: a leader of this term that
         * is heard again is followed. */
        snprintf(r->errmsg, sizeof r->errmsg,
                 "term %llu is RAFT_TERM_MAX: no election can follow it",
                 (unsigned long long)r->term);
        rf_become_follower(r, r->term, 0);
        return 0;
    }
    if (!rf_may_campaign(r)) {
        /* A learner, a removed node or one that knows no configuration
         * yet never campaigns (raft.h: MEMBERSHIP). */
        rf_reset_election_timer(r);
        return 0;
    }
    leave_leadership(r);
    if (pre_vote) {
        r->role = RAFT_PRECANDIDATE;
    } else {
        r->role = RAFT_CANDIDATE;
        r->term++;
        r->vote = r->id;
    }
    r->leader = 0;
    r->role_dirty = true;
    rf_reset_election_timer(r);
    for (size_t k = 0; k < r->n_prs; k++) {
        struct raft_progress *pr = &r->prs[k];
        pr->voted = pr->id == r->id;
        pr->granted = pr->id == r->id;
        if (pr->id == r->id || !pr->voter) {
            continue;
        }
        struct raft_message *m = rf_msg_new(r, false, RAFT_MSG_VOTE, pr->id);
        if (m == NULL) {
            return RAFT_ENOMEM;
        }
        m->term = pre_vote ? r->term + 1 : r->term;
        m->u.vote.pre_vote = pre_vote;
        m->u.vote.transfer = transfer;
        m->u.vote.last_index = rf_log_last_index(&r->log);
        m->u.vote.last_term = rf_log_last_term(&r->log);
    }
    return tally(r);
}

int rf_tick_election(struct raft *r)
{
    if (r->role == RAFT_LEADER || r->now < r->election_due) {
        return 0;
    }
    return rf_start_election(r, r->pre_vote, false);
}

/* Section 5.4.1: the candidate's log is at least as up-to-date. */
static bool log_up_to_date(const struct raft *r, const struct raft_message *m)
{
    uint64_t lt = rf_log_last_term(&r->log);
    if (m->u.vote.last_term != lt) {
        return m->u.vote.last_term > lt;
    }
    return m->u.vote.last_index >= rf_log_last_index(&r->log);
}

/* Figure 2, RequestVote RPC receiver implementation. The caller already
 * applied the term rules (and leases) of raft_step(). */
int rf_step_vote(struct raft *r, const struct raft_message *m)
{
    bool grant;
    if (r->conf.n == 0) {
        /* A node that knows no configuration yet (it joins, or is a
         * wiped host started again) does not vote: it cannot tell a
         * stale candidate from a current one, and its empty log would
         * lend any of them its vote. */
        grant = false;
    } else if (m->u.vote.pre_vote) {
        grant = m->term > r->term && log_up_to_date(r, m);
    } else {
        bool can = r->vote == m->from || (r->vote == 0 && r->leader == 0);
        /* A node that started with no persisted state may have lost a
         * vote it gave in this term just before its data directory was
         * wiped. For the longest election timeout after its start, which
         * outlasts any election of that term, it votes only in a new
         * cluster (every log empty) or after hearing from a leader. */
        if (r->fresh && r->now < r->fresh_until && m->u.vote.last_index > 0) {
            can = false;
        }
        grant = m->term == r->term && can && log_up_to_date(r, m);
    }
    struct raft_message *resp =
        rf_msg_new(r, false, RAFT_MSG_VOTE_RESP, m->from);
    if (resp == NULL) {
        return RAFT_ENOMEM;
    }
    resp->cookie = m->cookie;
    resp->u.vote_resp.pre_vote = m->u.vote.pre_vote;
    resp->u.vote_resp.granted = grant;
    if (grant && m->u.vote.pre_vote) {
        resp->term = m->term;
    }
    if (grant && !m->u.vote.pre_vote) {
        r->vote = m->from;
        rf_reset_election_timer(r);
    }
    return 0;
}

int rf_step_vote_resp(struct raft *r, const struct raft_message *m)
{
    struct raft_progress *pr = rf_progress_of(r, m->from);
    if (pr == NULL || !pr->voter) {
        return 0; /* not a vote that counts */
    }
    if (m->u.vote_resp.pre_vote) {
        if (r->role != RAFT_PRECANDIDATE) {
            return 0;
        }
        if (m->u.vote_resp.granted && m->term != r->term + 1) {
            return 0;
        }
    } else if (r->role != RAFT_CANDIDATE || m->term != r->term) {
        return 0;
    }
    pr->voted = true;
    pr->granted = m->u.vote_resp.granted;
    return tally(r);
}
