/* replication.c - AppendEntries: leader pipeline, follower checks, commit. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void inflight_add(struct raft *r,
                         struct raft_progress *pr,
                         uint64_t last)
{
    unsigned slot = (pr->in_head + pr->in_count) % r->max_inflight;
    pr->inflight[slot] = last;
    pr->in_count++;
}

/* An acknowledgement up to @index frees the appends it covers. */
static void inflight_free_to(struct raft *r,
                             struct raft_progress *pr,
                             uint64_t index)
{
    while (pr->in_count > 0 && pr->inflight[pr->in_head] <= index) {
        pr->in_head = (pr->in_head + 1) % r->max_inflight;
        pr->in_count--;
    }
}

static void become_probe(struct raft_progress *pr, uint64_t next)
{
    pr->state = RAFT_PR_PROBE;
    pr->next = next;
    pr->match_at_hb = 0;
    pr->probe_sent = false;
    pr->in_count = 0;
    pr->in_head = 0;
}

static void become_replicate(struct raft_progress *pr)
{
    pr->state = RAFT_PR_REPLICATE;
    pr->next = pr->match + 1;
    pr->match_at_hb = 0;
    pr->in_count = 0;
    pr->in_head = 0;
}

/* Figure 2: "for each server, index of the next log entry to send to that
 * server (initialized to leader last log index + 1)". */
void rf_progress_reset(struct raft *r)
{
    uint64_t last = rf_log_last_index(&r->log);
    for (size_t k = 0; k < r->n_prs; k++) {
        struct raft_progress *pr = &r->prs[k];
        become_probe(pr, last + 1);
        pr->match = pr->id == r->id ? r->stable : 0;
        pr->match_at_hb = 0;
        pr->active = pr->id == r->id;
        pr->ack_seq = 0;
        pr->snap_index = 0;
        pr->snap_offset = 0;
        pr->snap_reported = 0;
        pr->snap_heard = true;
    }
}

/* One AppendEntries message after @prev with up to max_append_bytes
 * (RAFT_ENTRY_OVERHEAD counted per entry). */
static int send_one(struct raft *r,
                    struct raft_progress *pr,
                    uint64_t prev,
                    uint64_t prev_term,
                    bool with_entries,
                    uint64_t *sent_last)
{
    uint64_t last = rf_log_last_index(&r->log);
    size_t n = 0;
    size_t bytes = 0;
    struct raft_entry *copy = NULL;
    if (with_entries) {
        while (prev + n < last) {
            const struct raft_entry *e = rf_log_get(&r->log, prev + n + 1);
            size_t cost = e->len + RAFT_ENTRY_OVERHEAD;
            if (n > 0 && bytes + cost > r->max_append_bytes) {
                break;
            }
            bytes += cost;
            n++;
        }
    }
    if (n > 0) {
        copy = malloc(n * sizeof *copy);
        if (copy == NULL) {
            return RAFT_ENOMEM;
        }
        memcpy(copy, rf_log_get(&r->log, prev + 1), n * sizeof *copy);
    }
    struct raft_message *m = rf_msg_new(r, true, RAFT_MSG_APPEND, pr->id);
    if (m == NULL) {
        free(copy);
        return RAFT_ENOMEM;
    }
    m->u.append.prev_index = prev;
    m->u.append.prev_term = prev_term;
    m->u.append.commit = r->commit;
    m->u.append.seq = r->seq;
    m->u.append.entries = copy;
    m->u.append.n_entries = n;
    *sent_last = prev + n;
    return 0;
}

/* Send what @pr may receive now; a heartbeat always sends something. */
int rf_send_append(struct raft *r, struct raft_progress *pr, bool heartbeat)
{
    uint64_t prev_term;
    uint64_t sent;
    int rv;
    if (pr->id == r->id || r->role != RAFT_LEADER) {
        return 0;
    }
    if (pr->state == RAFT_PR_SNAPSHOT) {
        return 0; /* the stream is driven by responses and ticks */
    }
    if (pr->state == RAFT_PR_PROBE) {
        if (pr->probe_sent && !heartbeat) {
            return 0;
        }
        if (!rf_log_term(&r->log, pr->next - 1, &prev_term)) {
            return rf_send_snapshot(r, pr);
        }
        rv = send_one(r, pr, pr->next - 1, prev_term, true, &sent);
        if (rv == 0) {
            pr->probe_sent = true;
        }
        return rv;
    }
    /* REPLICATE: a heartbeat only proves leadership and carries commit. */
    if (heartbeat) {
        if (!rf_log_term(&r->log, pr->match, &prev_term)) {
            return rf_send_snapshot(r, pr);
        }
        return send_one(r, pr, pr->match, prev_term, false, &sent);
    }
    uint64_t last = rf_log_last_index(&r->log);
    while (pr->in_count < r->max_inflight && pr->next <= last) {
        if (!rf_log_term(&r->log, pr->next - 1, &prev_term)) {
            return rf_send_snapshot(r, pr);
        }
        rv = send_one(r, pr, pr->next - 1, prev_term, true, &sent);
        if (rv != 0) {
            return rv;
        }
        inflight_add(r, pr, sent);
        pr->next = sent + 1;
    }
    return 0;
}

int rf_broadcast_append(struct raft *r, bool heartbeat)
{
    for (size_t k = 0; k < r->n_prs; k++) {
        int rv = rf_send_append(r, &r->prs[k], heartbeat);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* A new heartbeat round: ReadIndex requests waiting for it complete when a
 * quorum echoes its seq (thesis 6.4). */
int rf_heartbeat_round(struct raft *r)
{
    r->seq++;
    return rf_broadcast_append(r, true);
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

/* Figure 2, rules for leaders: "If there exists an N such that N >
 * commitIndex, a majority of matchIndex[i] >= N, and log[N].term ==
 * currentTerm: set commitIndex = N" (Figure 8: older terms are never
 * committed by counting replicas). */
bool rf_maybe_commit(struct raft *r)
{
    uint64_t match[RAFT_MAX_MEMBERS];
    uint64_t term;
    size_t voters = 0;
    /* Only the voters of the latest configuration count (a leader that
     * removed itself does not count its own log). */
    for (size_t k = 0; k < r->n_prs; k++) {
        if (r->prs[k].voter) {
            match[voters++] =
                r->prs[k].id == r->id ? r->stable : r->prs[k].match;
        }
    }
    if (voters == 0) {
        return false;
    }
    qsort(match, voters, sizeof match[0], cmp_desc);
    uint64_t n = match[voters / 2];
    if (n <= r->commit || !rf_log_term(&r->log, n, &term) || term != r->term) {
        return false;
    }
    for (uint64_t i = r->commit + 1; i <= n; i++) {
        size_t len = rf_log_get(&r->log, i)->len;
        r->uncommitted_bytes -=
            len < r->uncommitted_bytes ? len : r->uncommitted_bytes;
    }
    r->commit = n;
    rf_reads_check(r);
    if (r->role == RAFT_LEADER && !rf_is_voter(r, r->id) &&
        r->conf_index <= r->commit) {
        rf_step_down_removed(r); /* (ENOMEM: as if TimeoutNow were lost) */
    }
    return true;
}

/* First index of the run of @term that ends at @index (fast backtracking). */
static uint64_t first_of_term(const struct raft *r,
                              uint64_t index,
                              uint64_t term)
{
    uint64_t t;
    while (index - 1 > r->commit && index - 1 > r->log.offset &&
           rf_log_term(&r->log, index - 1, &t) && t == term) {
        index--;
    }
    return index;
}

void rf_heard_from_leader(struct raft *r, uint64_t leader)
{
    r->fresh = false;
    if (r->role != RAFT_FOLLOWER || r->leader != leader) {
        rf_become_follower(r, r->term, leader);
    } else {
        r->leader_contact = r->now;
        rf_reset_election_timer(r);
    }
}

/* Figure 2, AppendEntries RPC receiver implementation; m->term == term. */
int rf_step_append(struct raft *r, const struct raft_message *m)
{
    const struct raft_append *a = &m->u.append;
    rf_heard_from_leader(r, m->from);
    struct raft_message *resp =
        rf_msg_new(r, false, RAFT_MSG_APPEND_RESP, m->from);
    if (resp == NULL) {
        return RAFT_ENOMEM;
    }
    resp->cookie = m->cookie;
    resp->u.append_resp.seq = a->seq;

    uint64_t prev = a->prev_index;
    uint64_t prev_term = a->prev_term;
    const struct raft_entry *es = a->entries;
    size_t n = a->n_entries;
    if (prev < r->commit) {
        /* Entries up to commit are committed, hence identical (Log
         * Matching, Leader Completeness): skip them. */
        uint64_t skip = r->commit - prev;
        if (skip > n) {
            skip = n;
        }
        es += skip;
        n -= skip;
        prev = r->commit;
        rf_log_term(&r->log, prev, &prev_term);
        if (n == 0) {
            resp->u.append_resp.success = true;
            resp->u.append_resp.index = r->commit;
            resp->u.append_resp.last_index = rf_log_last_index(&r->log);
            return 0;
        }
    }
    uint64_t t;
    if (!rf_log_term(&r->log, prev, &t)) {
        /* "Reply false if log doesn't contain an entry at prevLogIndex" */
        resp->u.append_resp.index = a->prev_index;
        resp->u.append_resp.conflict_index = rf_log_last_index(&r->log) + 1;
        resp->u.append_resp.last_index = rf_log_last_index(&r->log);
        return 0;
    }
    if (t != prev_term) {
        /* "... whose term matches prevLogTerm"; hint the start of the
         * conflicting term so the leader skips it in one step. */
        resp->u.append_resp.index = a->prev_index;
        resp->u.append_resp.conflict_term = t;
        resp->u.append_resp.conflict_index = first_of_term(r, prev, t);
        resp->u.append_resp.last_index = rf_log_last_index(&r->log);
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        const struct raft_entry *e = &es[k];
        if (e->index <= rf_log_last_index(&r->log)) {
            rf_log_term(&r->log, e->index, &t);
            if (t == e->term) {
                continue;
            }
            /* "If an existing entry conflicts with a new one (same index
             * but different terms), delete the existing entry and all
             * that follow it". Committed entries never conflict. */
            if (e->index <= r->commit) {
                r->late.n--;
                return RAFT_EINVAL;
            }
            int rv = rf_log_truncate(r, e->index);
            if (rv != 0) {
                r->late.n--;
                return rv;
            }
            if (r->unstable > e->index) {
                r->unstable = e->index;
            }
            if (r->truncate_from == 0 || r->truncate_from > e->index) {
                r->truncate_from = e->index;
            }
            if (r->stable >= e->index) {
                r->stable = e->index - 1;
            }
        }
        /* "Append any new entries not already in the log" */
        int rv = rf_log_append(r, e->term, e->type, e->data, e->len);
        if (rv != 0) {
            r->late.n--;
            return rv;
        }
    }
    uint64_t last_new = prev + n;
    /* "If leaderCommit > commitIndex, set commitIndex = min(leaderCommit,
     * index of last new entry)" */
    uint64_t commit = a->commit < last_new ? a->commit : last_new;
    if (commit > r->commit) {
        r->commit = commit;
    }
    resp->u.append_resp.success = true;
    resp->u.append_resp.index = last_new;
    resp->u.append_resp.last_index = rf_log_last_index(&r->log);
    return 0;
}

/* Where to probe next after a rejection (fast backtracking). */
static uint64_t backtrack(const struct raft *r,
                          const struct raft_progress *pr,
                          const struct raft_append_resp *a)
{
    uint64_t next = a->conflict_index;
    if (a->conflict_term != 0) {
        uint64_t i = a->index;
        uint64_t t;
        if (i > rf_log_last_index(&r->log)) {
            i = rf_log_last_index(&r->log);
        }
        while (i > r->log.offset && rf_log_term(&r->log, i, &t) &&
               t >= a->conflict_term) {
            if (t == a->conflict_term) {
                next = i + 1;
                break;
            }
            i--;
        }
    }
    if (next > a->index) {
        next = a->index; /* always move back past the rejected entry */
    }
    if (next > a->last_index + 1) {
        next = a->last_index + 1;
    }
    if (next < pr->match + 1) {
        next = pr->match + 1;
    }
    return next;
}

int rf_step_append_resp(struct raft *r, const struct raft_message *m)
{
    const struct raft_append_resp *a = &m->u.append_resp;
    struct raft_progress *pr = rf_progress_of(r, m->from);
    if (r->role != RAFT_LEADER) {
        return 0;
    }
    pr->active = true;
    if (a->seq > pr->ack_seq) {
        pr->ack_seq = a->seq;
    }
    if (a->success) {
        if (a->index > rf_log_last_index(&r->log)) {
            return RAFT_EINVAL;
        }
        if (a->index > pr->match) {
            pr->match = a->index;
        }
        if (pr->next < pr->match + 1) {
            pr->next = pr->match + 1;
        }
        inflight_free_to(r, pr, pr->match);
        if (pr->state == RAFT_PR_PROBE ||
            (pr->state == RAFT_PR_SNAPSHOT && pr->match >= r->log.offset)) {
            become_replicate(pr);
        }
        rf_maybe_commit(r);
        int rv = rf_transfer_check(r, pr);
        if (rv != 0) {
            return rv;
        }
    } else {
        if (pr->state == RAFT_PR_SNAPSHOT) {
            rf_reads_check(r);
            return 0;
        }
        bool current = pr->state == RAFT_PR_REPLICATE
                           ? a->index <= pr->match
                           : a->index == pr->next - 1;
        if (current && a->last_index < pr->match) {
            /* The follower lacks entries it acknowledged: its data
             * directory was wiped, or this rejection was overtaken by
             * later acknowledgements. Probe from what it has: entries it
             * still holds are acknowledged again at once. */
            pr->match = a->last_index;
            become_probe(pr, a->last_index + 1);
            rf_reads_check(r);
            return rf_send_append(r, pr, false);
        }
        if (pr->state == RAFT_PR_REPLICATE && a->index <= pr->match) {
            rf_reads_check(r);
            return 0; /* stale */
        }
        if (pr->state == RAFT_PR_PROBE && a->index != pr->next - 1) {
            rf_reads_check(r);
            return 0; /* stale */
        }
        become_probe(pr, backtrack(r, pr, a));
    }
    rf_reads_check(r);
    return rf_send_append(r, pr, false);
}

/* Leader timers: heartbeats, retransmission, check-quorum, transfer. */
int rf_tick_leader(struct raft *r)
{
    int rv;
    if (r->transfer_target != 0 && r->now >= r->transfer_due) {
        rf_transfer_abort(r);
    }
    if (r->check_quorum && r->now >= r->quorum_due) {
        /* Thesis 6.2: a leader that has not heard from a majority for an
         * election timeout steps down. */
        size_t active = 0;
        r->quorum_due = r->now + r->election_ms;
        for (size_t k = 0; k < r->n_prs; k++) {
            active += r->prs[k].voter && r->prs[k].active;
            r->prs[k].active = r->prs[k].id == r->id;
        }
        if (active < rf_quorum_size(r)) {
            rf_become_follower(r, r->term, 0);
            return 0;
        }
    }
    if (r->now < r->heartbeat_due) {
        return 0;
    }
    r->heartbeat_due = r->now + r->heartbeat_ms;
    for (size_t k = 0; k < r->n_prs; k++) {
        struct raft_progress *pr = &r->prs[k];
        if (pr->id == r->id) {
            continue;
        }
        if (pr->state == RAFT_PR_REPLICATE && pr->match_at_hb != 0 &&
            pr->match < pr->match_at_hb) {
            /* The oldest append outstanding at the previous heartbeat is
             * still unacknowledged a heartbeat later: presume it lost. */
            become_probe(pr, pr->match + 1);
        }
        pr->match_at_hb = pr->state == RAFT_PR_REPLICATE && pr->in_count > 0
                              ? pr->inflight[pr->in_head]
                              : 0;
        if (pr->state == RAFT_PR_SNAPSHOT) {
            if (!pr->snap_heard) {
                pr->snap_offset = pr->snap_reported;
                rv = rf_send_snapshot(r, pr);
                if (rv != 0) {
                    return rv;
                }
            }
            pr->snap_heard = false;
        }
    }
    rv = rf_heartbeat_round(r);
    if (rv != 0) {
        return rv;
    }
    return rf_broadcast_append(r, false);
}
