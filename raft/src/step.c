/* step.c - inputs of the core: messages, ticks, proposals. */
#include <stdio.h>

#include "internal.h"

static bool is_request(enum raft_msg_type t)
{
    return t == RAFT_MSG_VOTE || t == RAFT_MSG_APPEND ||
           t == RAFT_MSG_SNAPSHOT || t == RAFT_MSG_TIMEOUT_NOW;
}

/* Bad input never reaches the state machine. */
static int validate(const struct raft *r, const struct raft_message *m)
{
    if (m == NULL || m->to != r->id || m->from == r->id || m->from == 0 ||
        m->type < RAFT_MSG_VOTE || m->type > RAFT_MSG_TIMEOUT_NOW_RESP) {
        return RAFT_EINVAL;
    }
    /* raft.h: RAFT_TERM_MAX. Every term a message carries is at most its
     * own (a candidate's last log term, a leader's prev and entry terms, a
     * snapshot's term, a follower's conflict term): bounding m->term
     * bounds them all once those are checked, here and below. */
    if (m->term > RAFT_TERM_MAX) {
        return RAFT_EINVAL;
    }
    if (m->type == RAFT_MSG_VOTE && m->u.vote.last_term > m->term) {
        return RAFT_EINVAL;
    }
    if (m->type == RAFT_MSG_APPEND_RESP &&
        m->u.append_resp.conflict_term > m->term) {
        return RAFT_EINVAL;
    }
    if (m->type == RAFT_MSG_APPEND) {
        const struct raft_append *a = &m->u.append;
        uint64_t prev_term = a->prev_term;
        if (a->n_entries > 0 && a->entries == NULL) {
            return RAFT_EINVAL;
        }
        if (a->prev_term > m->term || (a->prev_index == 0 && a->prev_term)) {
            return RAFT_EINVAL;
        }
        for (size_t k = 0; k < a->n_entries; k++) {
            const struct raft_entry *e = &a->entries[k];
            if (e->index != a->prev_index + 1 + k || e->term < prev_term ||
                e->term > m->term || (e->len > 0 && e->data == NULL) ||
                (e->type != RAFT_ENTRY_NORMAL && e->type != RAFT_ENTRY_NOOP &&
                 e->type != RAFT_ENTRY_CONFIG)) {
                return RAFT_EINVAL;
            }
            if (e->type == RAFT_ENTRY_CONFIG) {
                struct raft_member mb[RAFT_MAX_MEMBERS];
                size_t n;
                if (raft_conf_decode(e->data, e->len, mb, RAFT_MAX_MEMBERS,
                                     &n) != 0) {
                    return RAFT_EINVAL;
                }
            }
            prev_term = e->term;
        }
    }
    if (m->type == RAFT_MSG_SNAPSHOT) {
        const struct raft_snapshot *s = &m->u.snapshot;
        if (s->index == 0 || s->term == 0 || s->term > m->term ||
            (s->len > 0 && s->data == NULL) ||
            (s->conf_len > 0 && s->conf == NULL)) {
            return RAFT_EINVAL;
        }
        struct raft_member mb[RAFT_MAX_MEMBERS];
        size_t n;
        if (s->conf_len > 0 && raft_conf_decode(s->conf, s->conf_len, mb,
                                                RAFT_MAX_MEMBERS, &n) != 0) {
            return RAFT_EINVAL;
        }
    }
    return 0;
}

/* A request from an older term: reject it, carrying our term (Figure 2:
 * "Reply false if term < currentTerm"). */
static int reject_stale(struct raft *r, const struct raft_message *m)
{
    struct raft_message *resp = rf_msg_new(r, false, m->type + 1, m->from);
    if (resp == NULL) {
        return RAFT_ENOMEM;
    }
    resp->cookie = m->cookie;
    switch (m->type) {
        case RAFT_MSG_VOTE:
            resp->u.vote_resp.pre_vote = m->u.vote.pre_vote;
            break;
        case RAFT_MSG_APPEND:
            resp->u.append_resp.index = m->u.append.prev_index;
            resp->u.append_resp.last_index = rf_log_last_index(&r->log);
            resp->u.append_resp.seq = m->u.append.seq;
            break;
        case RAFT_MSG_SNAPSHOT:
            resp->u.snapshot_resp.index = m->u.snapshot.index;
            resp->u.snapshot_resp.seq = m->u.snapshot.seq;
            resp->u.snapshot_resp.last_index = rf_log_last_index(&r->log);
            break;
        default:
            break;
    }
    return 0;
}

/* Whether a message of a higher term makes this node take that term
 * (Figure 2: "If RPC request or response contains term T > currentTerm:
 * set currentTerm = T"), with the exceptions of pre-vote and leases. */
static bool raises_term(const struct raft *r, const struct raft_message *m)
{
    if (m->type == RAFT_MSG_VOTE) {
        return !m->u.vote.pre_vote && (m->u.vote.transfer || !rf_in_lease(r));
    }
    if (m->type == RAFT_MSG_TIMEOUT_NOW) {
        return false; /* see raft_step */
    }
    /* A granted pre-vote carries the proposed term. */
    return !(m->type == RAFT_MSG_VOTE_RESP && m->u.vote_resp.pre_vote &&
             m->u.vote_resp.granted);
}

/* A term too far above ours (RAFT_TERM_MAX_JUMP in raft.h says why):
 * refuse the message, and move our own term up by the largest allowed
 * step if the message would have raised it. */
static int refuse_jump(struct raft *r, const struct raft_message *m)
{
    snprintf(r->errmsg, sizeof r->errmsg,
             "message term %llu from node %llu is more than 2^32 above "
             "term %llu: refused",
             (unsigned long long)m->term, (unsigned long long)m->from,
             (unsigned long long)r->term);
    if (raises_term(r, m)) {
        rf_become_follower(r, r->term + RAFT_TERM_MAX_JUMP, 0);
    }
    return RAFT_EINVAL;
}

int raft_step(struct raft *r, const struct raft_message *m)
{
    if (r->busy) {
        return RAFT_EBUSY;
    }
    int rv = validate(r, m);
    if (rv != 0) {
        if (m != NULL && m->term > RAFT_TERM_MAX) {
            snprintf(r->errmsg, sizeof r->errmsg,
                     "message term %llu from node %llu is above "
                     "RAFT_TERM_MAX: it cannot be real",
                     (unsigned long long)m->term, (unsigned long long)m->from);
        }
        return rv;
    }
    if (!is_request(m->type) && rf_progress_of(r, m->from) == NULL) {
        return 0; /* an answer from a node that is no longer a member */
    }
    if (m->term > r->term + RAFT_TERM_MAX_JUMP) {
        return refuse_jump(r, m);
    }
    if (m->term > r->term) {
        if (m->type == RAFT_MSG_VOTE) {
            if (!m->u.vote.transfer && rf_in_lease(r)) {
                /* Thesis 4.2.3: a node hearing from a leader ignores
                 * elections, so a returning node cannot disrupt. */
                return reject_stale(r, m);
            }
            if (!m->u.vote.pre_vote) {
                rf_become_follower(r, m->term, 0);
            }
        } else if (m->type == RAFT_MSG_VOTE_RESP && m->u.vote_resp.pre_vote &&
                   m->u.vote_resp.granted) {
            /* A granted pre-vote carries the proposed term. */
        } else if (m->type == RAFT_MSG_TIMEOUT_NOW) {
            /* A leader sends TimeoutNow in its term, to a follower that
             * acknowledged it there: one from a term above ours comes
             * from no leader we know. Answer it; change nothing. */
            return reject_stale(r, m);
        } else {
            bool from_leader =
                m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_SNAPSHOT;
            rf_become_follower(r, m->term, from_leader ? m->from : 0);
        }
    } else if (m->term < r->term) {
        if (is_request(m->type)) {
            return reject_stale(r, m);
        }
        return 0; /* stale response */
    }

    switch (m->type) {
        case RAFT_MSG_VOTE:
            return rf_step_vote(r, m);
        case RAFT_MSG_VOTE_RESP:
            return rf_step_vote_resp(r, m);
        case RAFT_MSG_APPEND:
            if (r->role == RAFT_LEADER) {
                return reject_stale(r, m); /* cannot happen: one per term */
            }
            return rf_step_append(r, m);
        case RAFT_MSG_APPEND_RESP:
            return rf_step_append_resp(r, m);
        case RAFT_MSG_SNAPSHOT:
            if (r->role == RAFT_LEADER) {
                return reject_stale(r, m);
            }
            return rf_step_snapshot(r, m);
        case RAFT_MSG_SNAPSHOT_RESP:
            return rf_step_snapshot_resp(r, m);
        case RAFT_MSG_TIMEOUT_NOW:
            if (r->role == RAFT_LEADER) {
                return reject_stale(r, m);
            }
            return rf_step_timeout_now(r, m);
        case RAFT_MSG_TIMEOUT_NOW_RESP:
            return 0;
    }
    return RAFT_EINVAL;
}

int raft_tick(struct raft *r, uint64_t now_ms)
{
    if (r->busy) {
        return RAFT_EBUSY;
    }
    if (now_ms > r->now) {
        r->now = now_ms;
    }
    if (r->role == RAFT_LEADER) {
        return rf_tick_leader(r);
    }
    return rf_tick_election(r);
}

uint64_t raft_next_timeout(const struct raft *r)
{
    if (r->role != RAFT_LEADER) {
        return r->election_due;
    }
    uint64_t t = r->heartbeat_due;
    if (r->check_quorum && r->quorum_due < t) {
        t = r->quorum_due;
    }
    if (r->transfer_target != 0 && r->transfer_due < t) {
        t = r->transfer_due;
    }
    return t;
}

/* May this node append a new entry now? 0, or why not (with the leader,
 * or the transfer target, in *leader_hint). */
int rf_may_propose(struct raft *r, uint64_t *leader_hint)
{
    if (r->busy) {
        return RAFT_EBUSY;
    }
    if (r->role != RAFT_LEADER) {
        rf_hint_leader(r, leader_hint);
        return RAFT_NOTLEADER;
    }
    if (r->transfer_target != 0) {
        if (leader_hint != NULL) {
            *leader_hint = r->transfer_target;
        }
        return RAFT_ETRANSFER;
    }
    return 0;
}

int raft_propose(struct raft *r,
                 const void *data,
                 size_t len,
                 uint64_t *index,
                 uint64_t *term,
                 uint64_t *leader_hint)
{
    int gate = rf_may_propose(r, leader_hint);
    if (gate != 0) {
        return gate;
    }
    if (len > 0 && data == NULL) {
        return RAFT_EINVAL;
    }
    if (r->max_uncommitted_bytes > 0 && r->uncommitted_bytes > 0 &&
        r->uncommitted_bytes + len > r->max_uncommitted_bytes) {
        return RAFT_EFULL;
    }
    int rv = rf_log_append(r, r->term, RAFT_ENTRY_NORMAL, data, len);
    if (rv != 0) {
        return rv;
    }
    r->uncommitted_bytes += len;
    r->broadcast_needed = true;
    if (index != NULL) {
        *index = rf_log_last_index(&r->log);
    }
    if (term != NULL) {
        *term = r->term;
    }
    return 0;
}

int raft_report_unreachable(struct raft *r, uint64_t peer)
{
    if (r->busy) {
        return RAFT_EBUSY;
    }
    struct raft_progress *pr = rf_progress_of(r, peer);
    if (r->role == RAFT_LEADER && pr != NULL && pr->id != r->id &&
        pr->state == RAFT_PR_REPLICATE) {
        pr->state = RAFT_PR_PROBE;
        pr->next = pr->match + 1;
        pr->probe_sent = false;
        pr->in_count = 0;
        pr->in_head = 0;
    }
    return 0;
}
