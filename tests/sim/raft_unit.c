/* raft_unit.c - unit tests of each feature of the core, driven directly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_main.h"

static const uint64_t voters[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static struct raft_update U; /* the outstanding update of the core under test */

static struct raft_config cfg(uint64_t id, unsigned n)
{
    struct raft_config c = {0};
    c.id = id;
    c.voters = voters;
    c.n_voters = n;
    c.heartbeat_ms = 50;
    c.election_ms = 200;
    c.seed = id;
    c.max_append_bytes = 1 << 20;
    c.max_inflight = 8;
    c.snapshot_chunk_bytes = 64;
    return c;
}

static struct raft *start(const struct raft_config *c)
{
    struct raft *r = raft_new(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    struct raft_persisted p = {0};
    CU_ASSERT_EQUAL_FATAL(raft_restore(r, &p), 0);
    return r;
}

static struct raft_update *upd(struct raft *r)
{
    CU_ASSERT_EQUAL_FATAL(raft_get_update(r, &U), 0);
    return &U;
}

static void adv(struct raft *r)
{
    CU_ASSERT_EQUAL_FATAL(raft_advance(r, &U), 0);
}

static void flush(struct raft *r)
{
    while (raft_has_update(r)) {
        upd(r);
        adv(r);
    }
}

/* Count messages of @type (to @to, 0: any) in the outstanding update. */
static size_t count_msgs(enum raft_msg_type type, uint64_t to)
{
    size_t n = 0;
    for (size_t k = 0; k < U.n_early; k++) {
        n += U.early[k].type == type && (to == 0 || U.early[k].to == to);
    }
    for (size_t k = 0; k < U.n_messages; k++) {
        n += U.messages[k].type == type && (to == 0 || U.messages[k].to == to);
    }
    return n;
}

static const struct raft_message *find_msg(enum raft_msg_type type, uint64_t to)
{
    for (size_t k = 0; k < U.n_early; k++) {
        if (U.early[k].type == type && (to == 0 || U.early[k].to == to)) {
            return &U.early[k];
        }
    }
    for (size_t k = 0; k < U.n_messages; k++) {
        if (U.messages[k].type == type && (to == 0 || U.messages[k].to == to)) {
            return &U.messages[k];
        }
    }
    return NULL;
}

/* Win an election by granting every (pre-)vote request. */
static void make_leader(struct raft *r)
{
    CU_ASSERT_EQUAL_FATAL(raft_tick(r, 10000), 0);
    for (int round = 0; round < 10 && raft_role(r) != RAFT_LEADER; round++) {
        struct raft_message resps[16];
        size_t nr = 0;
        upd(r);
        for (size_t k = 0; k < U.n_messages; k++) {
            const struct raft_message *m = &U.messages[k];
            if (m->type != RAFT_MSG_VOTE) {
                continue;
            }
            memset(&resps[nr], 0, sizeof resps[nr]);
            resps[nr].type = RAFT_MSG_VOTE_RESP;
            resps[nr].from = m->to;
            resps[nr].to = m->from;
            resps[nr].term = m->term;
            resps[nr].u.vote_resp.pre_vote = m->u.vote.pre_vote;
            resps[nr].u.vote_resp.granted = true;
            nr++;
        }
        adv(r);
        for (size_t k = 0; k < nr; k++) {
            CU_ASSERT_EQUAL_FATAL(raft_step(r, &resps[k]), 0);
        }
    }
    CU_ASSERT_EQUAL_FATAL(raft_role(r), RAFT_LEADER);
}

static struct raft_message append_resp(struct raft *r,
                                       uint64_t from,
                                       bool success,
                                       uint64_t index,
                                       uint64_t seq)
{
    struct raft_message m = {0};
    m.type = RAFT_MSG_APPEND_RESP;
    m.from = from;
    m.to = raft_id(r);
    m.term = raft_term(r);
    m.u.append_resp.success = success;
    m.u.append_resp.index = index;
    m.u.append_resp.last_index = index;
    m.u.append_resp.seq = seq;
    return m;
}

static void ack(struct raft *r, uint64_t from, uint64_t index, uint64_t seq)
{
    struct raft_message m = append_resp(r, from, true, index, seq);
    CU_ASSERT_EQUAL_FATAL(raft_step(r, &m), 0);
}

static struct raft_message append_req(uint64_t from,
                                      uint64_t to,
                                      uint64_t term,
                                      uint64_t prev,
                                      uint64_t prev_term,
                                      const struct raft_entry *es,
                                      size_t n,
                                      uint64_t commit)
{
    struct raft_message m = {0};
    m.type = RAFT_MSG_APPEND;
    m.from = from;
    m.to = to;
    m.term = term;
    m.cookie = 77;
    m.u.append.prev_index = prev;
    m.u.append.prev_term = prev_term;
    m.u.append.entries = es;
    m.u.append.n_entries = n;
    m.u.append.commit = commit;
    return m;
}

/* A core restored with a log whose terms are @terms[0..n-1]. */
static struct raft *start_with_log(struct raft_config *c,
                                   uint64_t term,
                                   const uint64_t *terms,
                                   size_t n)
{
    struct raft_entry es[32];
    for (size_t k = 0; k < n; k++) {
        es[k].term = terms[k];
        es[k].index = k + 1;
        es[k].type = RAFT_ENTRY_NORMAL;
        es[k].data = "x";
        es[k].len = 1;
    }
    struct raft *r = raft_new(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    struct raft_persisted p = {0};
    p.hs.term = term;
    p.entries = es;
    p.n_entries = n;
    CU_ASSERT_EQUAL_FATAL(raft_restore(r, &p), 0);
    return r;
}

/* ---- configuration and restore ---------------------------------------- */

static void test_config_invalid_is_rejected(void)
{
    struct raft_config c = cfg(1, 3);
    CU_ASSERT_EQUAL(raft_config_check(&c), 0);
    c.id = 0;
    CU_ASSERT_EQUAL(raft_config_check(&c), RAFT_EINVAL);
    CU_ASSERT_PTR_NULL(raft_new(&c));
    c = cfg(4, 3); /* not a voter */
    CU_ASSERT_EQUAL(raft_config_check(&c), RAFT_EINVAL);
    c = cfg(1, 3);
    c.election_ms = c.heartbeat_ms;
    CU_ASSERT_EQUAL(raft_config_check(&c), RAFT_EINVAL);
    uint64_t dup[] = {1, 2, 2};
    c = cfg(1, 3);
    c.voters = dup;
    CU_ASSERT_EQUAL(raft_config_check(&c), RAFT_EINVAL);
    CU_ASSERT_STRING_EQUAL(raft_strerror(RAFT_NOTLEADER), "not the leader");
}

static void test_restore_rejects_gap_between_snapshot_and_log(void)
{
    struct raft_config c = cfg(1, 3);
    struct raft_entry es[2] = {{2, 7, RAFT_ENTRY_NORMAL, "a", 1},
                               {2, 8, RAFT_ENTRY_NORMAL, "b", 1}};
    struct raft_persisted p = {0};
    p.hs.term = 2;
    p.snap_index = 5;
    p.snap_term = 1;
    p.applied = 5;
    p.entries = es;
    p.n_entries = 2;
    struct raft *r = raft_new(&c);
    CU_ASSERT_EQUAL(raft_restore(r, &p), RAFT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(raft_errmsg(r), "gap"));
    raft_free(r);

    /* Same log starting right after the snapshot: accepted. */
    es[0].index = 6;
    es[1].index = 7;
    p.hs.commit = 6;
    r = raft_new(&c);
    CU_ASSERT_EQUAL(raft_restore(r, &p), 0);
    CU_ASSERT_EQUAL(raft_first_index(r), 6);
    CU_ASSERT_EQUAL(raft_last_index(r), 7);
    CU_ASSERT_EQUAL(raft_commit_index(r), 6);
    CU_ASSERT_EQUAL(raft_snapshot_index(r), 5);
    CU_ASSERT_EQUAL(raft_term(r), 2);
    raft_free(r);

    /* Commit beyond the stored log is corrupt state. */
    p.hs.commit = 9;
    r = raft_new(&c);
    CU_ASSERT_EQUAL(raft_restore(r, &p), RAFT_EINVAL);
    raft_free(r);
}

static void test_election_timeout_is_randomized_per_seed(void)
{
    uint64_t seen[8];
    size_t distinct = 0;
    for (uint64_t seed = 1; seed <= 8; seed++) {
        struct raft_config c = cfg(1, 3);
        c.seed = seed;
        c.start_ms = 1000;
        struct raft *r = start(&c);
        uint64_t t = raft_next_timeout(r);
        CU_ASSERT(t >= 1000 + 200 && t < 1000 + 400);
        bool dup = false;
        for (size_t k = 0; k < distinct; k++) {
            dup |= seen[k] == t;
        }
        if (!dup) {
            seen[distinct++] = t;
        }
        raft_free(r);
    }
    CU_ASSERT(distinct >= 4);
}

/* ---- persistence contract ---------------------------------------------- */

static void test_single_node_commits_only_after_own_persist(void)
{
    struct raft_config c = cfg(1, 1);
    struct raft *r = start(&c);
    CU_ASSERT_EQUAL(raft_tick(r, 10000), 0);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_LEADER);
    upd(r);
    CU_ASSERT_EQUAL_FATAL(U.n_entries, 1); /* the no-op */
    CU_ASSERT_EQUAL(U.entries[0].type, RAFT_ENTRY_NOOP);
    CU_ASSERT_EQUAL(U.n_committed, 0);
    CU_ASSERT(U.hs_changed && U.hs.vote == 1 && U.hs.term == 1);
    CU_ASSERT(U.role_changed && U.role == RAFT_LEADER);
    CU_ASSERT_EQUAL(raft_commit_index(r), 0);
    adv(r);
    CU_ASSERT_EQUAL(raft_commit_index(r), 1);

    uint64_t index, term;
    flush(r);
    CU_ASSERT_EQUAL(raft_propose(r, "cmd", 3, &index, &term, NULL), 0);
    CU_ASSERT_EQUAL(index, 2);
    upd(r);
    CU_ASSERT_EQUAL(U.n_entries, 1);
    CU_ASSERT_EQUAL(U.n_committed, 0);
    CU_ASSERT_EQUAL(raft_commit_index(r), 1);
    adv(r);
    CU_ASSERT_EQUAL(raft_commit_index(r), 2);
    upd(r);
    CU_ASSERT_EQUAL_FATAL(U.n_committed, 1);
    CU_ASSERT_EQUAL(U.committed[0].len, 3);
    CU_ASSERT_EQUAL(memcmp(U.committed[0].data, "cmd", 3), 0);
    adv(r);
    raft_free(r);
}

static void test_vote_is_persisted_before_its_response(void)
{
    struct raft_config c = cfg(2, 3);
    struct raft *r = start(&c);
    struct raft_message m = {0};
    m.type = RAFT_MSG_VOTE;
    m.from = 1;
    m.to = 2;
    m.term = 5;
    m.cookie = 42;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT(U.hs_changed);
    CU_ASSERT_EQUAL(U.hs.term, 5);
    CU_ASSERT_EQUAL(U.hs.vote, 1);
    CU_ASSERT_EQUAL(U.n_early, 0); /* nothing may leave before the write */
    const struct raft_message *resp = find_msg(RAFT_MSG_VOTE_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(resp->u.vote_resp.granted);
    CU_ASSERT_EQUAL(resp->cookie, 42);
    adv(r);
    /* A second candidate in the same term is refused. */
    m.from = 3;
    m.cookie = 43;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    resp = find_msg(RAFT_MSG_VOTE_RESP, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(!resp->u.vote_resp.granted);
    adv(r);
    raft_free(r);
}

/* A node that starts with nothing persisted (a wiped data directory) may
 * have voted in the current term before the wipe: for the longest election
 * timeout it votes only for candidates with an empty log (a new cluster). */
static void test_fresh_node_votes_only_in_a_new_cluster_at_first(void)
{
    struct raft_config c = cfg(2, 3);
    c.start_ms = 1000;
    struct raft *r = start(&c);
    struct raft_message m = {0};
    m.type = RAFT_MSG_VOTE;
    m.from = 1;
    m.to = 2;
    m.term = 7;
    m.u.vote.last_index = 40;
    m.u.vote.last_term = 6;
    m.cookie = 1;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    const struct raft_message *resp = find_msg(RAFT_MSG_VOTE_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(!resp->u.vote_resp.granted);
    CU_ASSERT_EQUAL(U.hs.vote, 0);
    adv(r);
    /* A candidate of a new cluster (empty log) gets the vote. */
    m.from = 3;
    m.term = 8;
    m.u.vote.last_index = 0;
    m.u.vote.last_term = 0;
    m.cookie = 2;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    resp = find_msg(RAFT_MSG_VOTE_RESP, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(resp->u.vote_resp.granted);
    adv(r);
    /* Once the longest election timeout has passed, it votes normally. */
    CU_ASSERT_EQUAL(raft_tick(r, 1000 + 2 * 200), 0);
    flush(r);
    m.from = 1;
    m.term = 20;
    m.u.vote.last_index = 40;
    m.u.vote.last_term = 6;
    m.cookie = 3;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    resp = find_msg(RAFT_MSG_VOTE_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(resp->u.vote_resp.granted);
    adv(r);
    raft_free(r);
    /* A node restarted with persisted state votes at once. */
    const uint64_t terms[] = {1, 1};
    c.start_ms = 0;
    r = start_with_log(&c, 1, terms, 2);
    m.term = 7; /* a candidate's term is at least its last log term (6) */
    m.cookie = 4;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    resp = find_msg(RAFT_MSG_VOTE_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(resp->u.vote_resp.granted);
    adv(r);
    raft_free(r);
}

static void test_leader_appends_may_leave_before_the_write(void)
{
    struct raft_config c = cfg(1, 3);
    struct raft *r = start(&c);
    make_leader(r);
    upd(r);
    CU_ASSERT_EQUAL(U.n_entries, 1);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_APPEND, 0), 2);
    for (size_t k = 0; k < U.n_early; k++) {
        CU_ASSERT_EQUAL(U.early[k].type, RAFT_MSG_APPEND);
    }
    CU_ASSERT_EQUAL(U.n_messages, 0);
    adv(r);
    raft_free(r);
}

static void test_calls_between_get_update_and_advance_are_refused(void)
{
    struct raft_config c = cfg(1, 1);
    struct raft *r = start(&c);
    raft_tick(r, 10000);
    upd(r);
    CU_ASSERT_EQUAL(raft_tick(r, 20000), RAFT_EBUSY);
    CU_ASSERT_EQUAL(raft_propose(r, "a", 1, NULL, NULL, NULL), RAFT_EBUSY);
    CU_ASSERT_EQUAL(raft_read_index(r, 1, NULL), RAFT_EBUSY);
    CU_ASSERT_FALSE(raft_has_update(r));
    struct raft_update other = {0};
    CU_ASSERT_EQUAL(raft_get_update(r, &other), RAFT_EBUSY);
    adv(r);
    CU_ASSERT_EQUAL(raft_propose(r, "a", 1, NULL, NULL, NULL), 0);
    flush(r);
    raft_free(r);
}

/* ---- requests and responses -------------------------------------------- */

static void test_every_request_gets_one_response_with_its_cookie(void)
{
    struct raft_config c = cfg(2, 3);
    struct raft *r = start(&c);
    struct raft_message m = append_req(1, 2, 3, 0, 0, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    flush(r);
    /* Stale requests of each kind are answered too. */
    enum raft_msg_type types[] = {RAFT_MSG_VOTE, RAFT_MSG_APPEND,
                                  RAFT_MSG_SNAPSHOT, RAFT_MSG_TIMEOUT_NOW};
    for (size_t k = 0; k < 4; k++) {
        struct raft_message q = {0};
        q.type = types[k];
        q.from = 3;
        q.to = 2;
        q.term = 1;
        q.cookie = 100 + k;
        if (q.type == RAFT_MSG_SNAPSHOT) {
            q.u.snapshot.index = 5;
            q.u.snapshot.term = 1;
        }
        CU_ASSERT_EQUAL(raft_step(r, &q), 0);
    }
    /* And current ones. */
    m = append_req(1, 2, 3, 0, 0, NULL, 0, 0);
    m.cookie = 200;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    struct raft_message t = {0};
    t.type = RAFT_MSG_TIMEOUT_NOW;
    t.from = 1;
    t.to = 2;
    t.term = 3;
    t.cookie = 201;
    CU_ASSERT_EQUAL(raft_step(r, &t), 0);
    upd(r);
    uint64_t cookies[] = {100, 101, 102, 103, 200, 201};
    for (size_t k = 0; k < 6; k++) {
        size_t n = 0;
        for (size_t j = 0; j < U.n_messages; j++) {
            n += U.messages[j].cookie == cookies[k];
        }
        CU_ASSERT_EQUAL(n, 1);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(find_msg(RAFT_MSG_VOTE_RESP, 3));
    CU_ASSERT_EQUAL(find_msg(RAFT_MSG_VOTE_RESP, 3)->term, 3);
    /* TimeoutNow made it campaign at once (no pre-vote). */
    CU_ASSERT_EQUAL(raft_role(r), RAFT_CANDIDATE);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_VOTE, 0), 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(find_msg(RAFT_MSG_VOTE, 1));
    CU_ASSERT(find_msg(RAFT_MSG_VOTE, 1)->u.vote.transfer);
    adv(r);
    raft_free(r);
}

static void test_step_rejects_malformed_messages(void)
{
    struct raft_config c = cfg(2, 3);
    struct raft *r = start(&c);
    struct raft_entry es[2] = {{1, 1, RAFT_ENTRY_NORMAL, "a", 1},
                               {1, 3, RAFT_ENTRY_NORMAL, "b", 1}};
    struct raft_message m = append_req(1, 2, 1, 0, 0, es, 2, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), RAFT_EINVAL); /* not consecutive */
    m = append_req(0, 2, 1, 0, 0, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), RAFT_EINVAL); /* no sender */
    m = append_req(1, 3, 1, 0, 0, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), RAFT_EINVAL); /* not for us */
    es[1].index = 2;
    es[1].term = 4;
    m = append_req(1, 2, 1, 0, 0, es, 2, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), RAFT_EINVAL); /* entry beyond term */
    struct raft_entry bad = {1, 1, RAFT_ENTRY_CONFIG, "\x01\x05", 2};
    m = append_req(1, 2, 1, 0, 0, &bad, 1, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), RAFT_EINVAL); /* bad configuration */
    bad.type = (enum raft_entry_type)9;
    CU_ASSERT_EQUAL(raft_step(r, &m), RAFT_EINVAL); /* unknown type */
    CU_ASSERT_FALSE(raft_has_update(r));
    /* An answer from a node that is not a member changes nothing. */
    struct raft_message resp = {0};
    resp.type = RAFT_MSG_VOTE_RESP;
    resp.from = 9;
    resp.to = 2;
    resp.term = 50;
    CU_ASSERT_EQUAL(raft_step(r, &resp), 0);
    CU_ASSERT_EQUAL(raft_term(r), 0);
    CU_ASSERT_FALSE(raft_has_update(r));
    raft_free(r);
}

static void test_propose_to_follower_is_refused_with_leader_hint(void)
{
    struct raft_config c = cfg(2, 3);
    struct raft *r = start(&c);
    uint64_t hint = 99;
    CU_ASSERT_EQUAL(raft_propose(r, "a", 1, NULL, NULL, &hint), RAFT_NOTLEADER);
    CU_ASSERT_EQUAL(hint, 0);
    struct raft_message m = append_req(3, 2, 1, 0, 0, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    CU_ASSERT_EQUAL(raft_propose(r, "a", 1, NULL, NULL, &hint), RAFT_NOTLEADER);
    CU_ASSERT_EQUAL(hint, 3);
    CU_ASSERT_EQUAL(raft_read_index(r, 1, &hint), RAFT_NOTLEADER);
    CU_ASSERT_EQUAL(hint, 3);
    flush(r);
    raft_free(r);
}

/* ---- commit rule and backtracking -------------------------------------- */

static void test_figure8_old_term_entry_not_committed_by_counting(void)
{
    struct raft_config c = cfg(1, 5);
    uint64_t terms[] = {1, 2};
    struct raft *r = start_with_log(&c, 3, terms, 2);
    make_leader(r); /* term 4, no-op at index 3 */
    flush(r);
    CU_ASSERT_EQUAL(raft_term(r), 4);
    CU_ASSERT_EQUAL(raft_last_index(r), 3);
    /* A majority (1, 2, 3) holds index 2 of term 2: not committed. */
    ack(r, 2, 2, 0);
    ack(r, 3, 2, 0);
    CU_ASSERT_EQUAL(raft_commit_index(r), 0);
    /* Once the term-4 no-op is on a majority, both are. */
    ack(r, 2, 3, 0);
    CU_ASSERT_EQUAL(raft_commit_index(r), 0);
    ack(r, 3, 3, 0);
    CU_ASSERT_EQUAL(raft_commit_index(r), 3);
    flush(r);
    raft_free(r);
}

static void test_append_reject_carries_conflict_term_and_index(void)
{
    struct raft_config c = cfg(2, 3);
    uint64_t terms[] = {1, 1, 2, 2, 2};
    struct raft *r = start_with_log(&c, 2, terms, 5);
    struct raft_message m = append_req(1, 2, 3, 5, 3, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    const struct raft_message *resp = find_msg(RAFT_MSG_APPEND_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_FALSE(resp->u.append_resp.success);
    CU_ASSERT_EQUAL(resp->u.append_resp.conflict_term, 2);
    CU_ASSERT_EQUAL(resp->u.append_resp.conflict_index, 3);
    CU_ASSERT_EQUAL(resp->u.append_resp.index, 5);
    CU_ASSERT_EQUAL(resp->cookie, 77);
    adv(r);
    /* Log too short: conflict index is last + 1. */
    m = append_req(1, 2, 3, 8, 3, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    resp = find_msg(RAFT_MSG_APPEND_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_EQUAL(resp->u.append_resp.conflict_term, 0);
    CU_ASSERT_EQUAL(resp->u.append_resp.conflict_index, 6);
    adv(r);
    /* A conflicting entry truncates the log, reported for storage. */
    struct raft_entry e = {3, 3, RAFT_ENTRY_NORMAL, "z", 1};
    m = append_req(1, 2, 3, 2, 1, &e, 1, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT_EQUAL(U.truncate_from, 3);
    CU_ASSERT_EQUAL_FATAL(U.n_entries, 1);
    CU_ASSERT_EQUAL(U.entries[0].index, 3);
    CU_ASSERT_EQUAL(U.entries[0].term, 3);
    resp = find_msg(RAFT_MSG_APPEND_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(resp->u.append_resp.success);
    CU_ASSERT_EQUAL(resp->u.append_resp.index, 3);
    adv(r);
    CU_ASSERT_EQUAL(raft_last_index(r), 3);
    raft_free(r);
}

static void test_leader_skips_a_conflicting_term_in_one_step(void)
{
    struct raft_config c = cfg(1, 3);
    uint64_t terms[] = {1, 1, 1, 1, 1, 1};
    struct raft *r = start_with_log(&c, 4, terms, 6);
    make_leader(r); /* term 5, no-op at 7 */
    flush(r);
    /* Probe at prev 6 rejected: follower has term 3 from index 2 on, a
     * term the leader does not have: next goes straight to 2. */
    struct raft_message m = append_resp(r, 2, false, 6, 0);
    m.u.append_resp.conflict_term = 3;
    m.u.append_resp.conflict_index = 2;
    m.u.append_resp.last_index = 9;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    const struct raft_message *a = find_msg(RAFT_MSG_APPEND, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(a->u.append.prev_index, 1);
    CU_ASSERT_EQUAL(a->u.append.n_entries, 6);
    adv(r);
    raft_free(r);
}

static void test_pipeline_bounded_by_max_inflight_and_bytes(void)
{
    struct raft_config c = cfg(1, 3);
    c.max_inflight = 2;
    c.max_append_bytes = 100;
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    ack(r, 2, 1, 0); /* peer 2 moves to pipelined replication */
    flush(r);
    char buf[60] = {0};
    for (int k = 0; k < 6; k++) {
        CU_ASSERT_EQUAL(raft_propose(r, buf, sizeof buf, NULL, NULL, NULL), 0);
    }
    upd(r);
    /* 6 entries of 60 B, 100 B per message: one entry each, 2 in flight. */
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_APPEND, 2), 2);
    const struct raft_message *a = find_msg(RAFT_MSG_APPEND, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(a->u.append.n_entries, 1);
    adv(r);
    ack(r, 2, 2, 0);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_APPEND, 2), 1);
    adv(r);
    raft_free(r);
}

/* Empty entries still count RAFT_ENTRY_OVERHEAD each: one message holds
 * at most max_append_bytes / RAFT_ENTRY_OVERHEAD of them. */
static void test_append_of_empty_entries_is_bounded_in_count(void)
{
    struct raft_config c = cfg(1, 3);
    c.max_append_bytes = 10 * RAFT_ENTRY_OVERHEAD;
    c.max_inflight = 64;
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    ack(r, 2, 1, 0);
    flush(r);
    for (int k = 0; k < 95; k++) {
        CU_ASSERT_EQUAL(raft_propose(r, "", 0, NULL, NULL, NULL), 0);
    }
    upd(r);
    size_t total = 0;
    for (size_t k = 0; k < U.n_messages; k++) {
        if (U.messages[k].type == RAFT_MSG_APPEND && U.messages[k].to == 2) {
            CU_ASSERT(U.messages[k].u.append.n_entries <= 10);
            total += U.messages[k].u.append.n_entries;
        }
    }
    for (size_t k = 0; k < U.n_early; k++) {
        if (U.early[k].type == RAFT_MSG_APPEND && U.early[k].to == 2) {
            CU_ASSERT(U.early[k].u.append.n_entries <= 10);
            total += U.early[k].u.append.n_entries;
        }
    }
    CU_ASSERT_EQUAL(total, 95);
    adv(r);
    raft_free(r);
}

static void test_uncommitted_bytes_limit_refuses_proposals(void)
{
    struct raft_config c = cfg(1, 3);
    c.max_uncommitted_bytes = 100;
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    char buf[60] = {0};
    CU_ASSERT_EQUAL(raft_propose(r, buf, 60, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(raft_propose(r, buf, 60, NULL, NULL, NULL), RAFT_EFULL);
    flush(r);
    ack(r, 2, 2, 0); /* commits 1..2 */
    CU_ASSERT_EQUAL(raft_commit_index(r), 2);
    CU_ASSERT_EQUAL(raft_propose(r, buf, 60, NULL, NULL, NULL), 0);
    flush(r);
    raft_free(r);
}

/* ---- pre-vote and check-quorum ----------------------------------------- */

static void test_pre_vote_does_not_change_terms(void)
{
    struct raft_config c = cfg(1, 3);
    c.pre_vote = true;
    struct raft *r = start(&c);
    CU_ASSERT_EQUAL(raft_tick(r, 10000), 0);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_PRECANDIDATE);
    CU_ASSERT_EQUAL(raft_term(r), 0);
    upd(r);
    CU_ASSERT_FALSE(U.hs_changed);
    const struct raft_message *v = find_msg(RAFT_MSG_VOTE, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT(v->u.vote.pre_vote);
    CU_ASSERT_EQUAL(v->term, 1);
    struct raft_message req = *v;
    adv(r);

    /* The voter grants without moving its own term or vote. */
    struct raft_config c2 = cfg(2, 3);
    c2.pre_vote = true;
    struct raft *r2 = start(&c2);
    req.cookie = 5;
    CU_ASSERT_EQUAL(raft_step(r2, &req), 0);
    CU_ASSERT_EQUAL(raft_term(r2), 0);
    upd(r2);
    CU_ASSERT_FALSE(U.hs_changed);
    const struct raft_message *resp = find_msg(RAFT_MSG_VOTE_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(resp->u.vote_resp.granted && resp->u.vote_resp.pre_vote);
    struct raft_message grant = *resp;
    adv(r2);
    /* One grant + itself = quorum: a real election with term 1. */
    CU_ASSERT_EQUAL(raft_step(r, &grant), 0);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_CANDIDATE);
    CU_ASSERT_EQUAL(raft_term(r), 1);
    flush(r);
    raft_free(r);
    raft_free(r2);
}

/* TimeoutNow forces an election at once: only the follower's current
 * leader may send it. From another member, or at a term whose leader the
 * follower has not heard from, it is answered and ignored. */
static void test_timeout_now_is_honoured_only_from_the_current_leader(void)
{
    struct raft_config c = cfg(2, 3);
    struct raft *r = start(&c);
    struct raft_message m = append_req(1, 2, 3, 0, 0, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    flush(r);
    CU_ASSERT_EQUAL(raft_leader(r), 1);
    struct raft_message t = {0};
    t.type = RAFT_MSG_TIMEOUT_NOW;
    t.from = 3; /* a member, not the leader */
    t.to = 2;
    t.term = 3;
    t.cookie = 7;
    CU_ASSERT_EQUAL(raft_step(r, &t), 0);
    t.term = 4; /* a term nobody leads yet */
    t.cookie = 8;
    CU_ASSERT_EQUAL(raft_step(r, &t), 0);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_TIMEOUT_NOW_RESP, 3), 2);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_VOTE, 0), 0);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_FOLLOWER);
    CU_ASSERT_EQUAL(raft_term(r), 3); /* the term did not move either */
    CU_ASSERT_EQUAL(raft_leader(r), 1);
    adv(r);
    /* The leader of term 4, once heard, may. */
    m = append_req(1, 2, 4, 0, 0, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    flush(r);
    t.from = 1;
    t.cookie = 9;
    CU_ASSERT_EQUAL(raft_step(r, &t), 0);
    upd(r);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_CANDIDATE);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_VOTE, 0), 2);
    adv(r);
    raft_free(r);
}

static void test_lease_follower_ignores_elections_while_leader_is_heard(void)
{
    struct raft_config c = cfg(2, 3);
    c.pre_vote = true;
    c.start_ms = 1000;
    struct raft *r = start(&c);
    struct raft_message m = append_req(1, 2, 1, 0, 0, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    flush(r);
    /* Within an election timeout of hearing the leader: refused, and the
     * term does not move even for a real RequestVote. */
    struct raft_message v = {0};
    v.type = RAFT_MSG_VOTE;
    v.from = 3;
    v.to = 2;
    v.term = 2;
    v.u.vote.pre_vote = true;
    CU_ASSERT_EQUAL(raft_step(r, &v), 0);
    v.u.vote.pre_vote = false;
    CU_ASSERT_EQUAL(raft_step(r, &v), 0);
    CU_ASSERT_EQUAL(raft_term(r), 1);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_VOTE_RESP, 3), 2);
    for (size_t k = 0; k < U.n_messages; k++) {
        CU_ASSERT_FALSE(U.messages[k].u.vote_resp.granted);
    }
    adv(r);
    /* Once the leader has been silent for an election timeout: granted. */
    CU_ASSERT_EQUAL(raft_tick(r, 1000 + 200), 0);
    v.u.vote.pre_vote = true;
    CU_ASSERT_EQUAL(raft_step(r, &v), 0);
    upd(r);
    const struct raft_message *resp = find_msg(RAFT_MSG_VOTE_RESP, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(resp->u.vote_resp.granted);
    adv(r);
    raft_free(r);
}

/* A node cut off for a long time returns: with pre-vote the leader and
 * its term survive; without, the returning node forces a new term. */
static uint64_t rejoin_term_increase(bool pre_vote)
{
    struct sim_config c = {0};
    c.n = 3;
    c.seed = test_seed;
    c.pre_vote = pre_vote;
    struct sim *s = sim_new(&c);
    int leader = sim_check_one_leader(s, 1000);
    SIM_CHECK(s, leader >= 0);
    sim_run(s, 500);
    uint64_t term = raft_term(sim_raft(s, (unsigned)leader));
    unsigned f = (unsigned)(leader + 1) % 3;
    sim_disconnect(s, f);
    sim_run(s, 5000);
    sim_connect(s, f);
    sim_run(s, 2000);
    SIM_CHECK(s, sim_check_one_leader(s, 1000) >= 0);
    uint64_t now = raft_term(sim_raft(s, (unsigned)sim_leader(s)));
    SIM_ASSERT_OK(s);
    sim_free(s);
    return now - term;
}

static void test_prevote_rejoining_node_does_not_disrupt_leader(void)
{
    CU_ASSERT_EQUAL(rejoin_term_increase(true), 0);
    CU_ASSERT(rejoin_term_increase(false) > 0); /* the test can tell */
}

static bool isolated_leader_still_leads(bool check_quorum)
{
    struct sim_config c = {0};
    c.n = 3;
    c.seed = test_seed;
    c.pre_vote = true;
    c.check_quorum = check_quorum;
    struct sim *s = sim_new(&c);
    int leader = sim_check_one_leader(s, 1000);
    SIM_CHECK(s, leader >= 0);
    sim_disconnect(s, (unsigned)leader);
    sim_run(s, 1000); /* > 2 election timeouts */
    bool leads = raft_role(sim_raft(s, (unsigned)leader)) == RAFT_LEADER;
    SIM_ASSERT_OK(s);
    sim_free(s);
    return leads;
}

static void test_check_quorum_isolated_leader_steps_down(void)
{
    CU_ASSERT_FALSE(isolated_leader_still_leads(true));
    CU_ASSERT_TRUE(isolated_leader_still_leads(false));
}

/* ---- ReadIndex --------------------------------------------------------- */

static uint64_t heartbeat_seq(uint64_t to)
{
    const struct raft_message *m = find_msg(RAFT_MSG_APPEND, to);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    return m->u.append.seq;
}

static void test_read_index_waits_for_a_heartbeat_quorum(void)
{
    struct raft_config c = cfg(1, 3);
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    ack(r, 2, 1, 0);
    flush(r);
    CU_ASSERT_EQUAL(raft_commit_index(r), 1);
    /* Three reads in one turn share one round. */
    CU_ASSERT_EQUAL(raft_read_index(r, 7, NULL), 0);
    CU_ASSERT_EQUAL(raft_read_index(r, 8, NULL), 0);
    CU_ASSERT_EQUAL(raft_read_index(r, 9, NULL), 0);
    upd(r);
    CU_ASSERT_EQUAL(U.n_reads, 0);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_APPEND, 2), 1);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_APPEND, 3), 1);
    uint64_t seq = heartbeat_seq(2);
    adv(r);
    ack(r, 3, 1, seq - 1); /* an older round does not count */
    CU_ASSERT_FALSE(raft_has_update(r));
    ack(r, 3, 1, seq);
    upd(r);
    CU_ASSERT_EQUAL_FATAL(U.n_reads, 3);
    for (size_t k = 0; k < U.n_reads; k++) {
        CU_ASSERT(U.reads[k].ok);
        CU_ASSERT_EQUAL(U.reads[k].index, 1);
        CU_ASSERT_EQUAL(U.reads[k].ctx, 7 + k);
    }
    adv(r);
    raft_free(r);
}

static void test_read_index_new_leader_waits_for_its_noop(void)
{
    struct raft_config c = cfg(1, 3);
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    CU_ASSERT_EQUAL(raft_read_index(r, 1, NULL), 0);
    upd(r);
    uint64_t seq = heartbeat_seq(2);
    adv(r);
    /* The round is confirmed but the no-op is not committed. */
    struct raft_message m = append_resp(r, 2, false, 1, seq);
    m.u.append_resp.conflict_index = 1;
    m.u.append_resp.last_index = 0;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT_EQUAL(U.n_reads, 0);
    adv(r);
    ack(r, 2, 1, seq);
    upd(r);
    CU_ASSERT_EQUAL_FATAL(U.n_reads, 1);
    CU_ASSERT(U.reads[0].ok && U.reads[0].index == 1);
    adv(r);
    raft_free(r);
}

static void test_read_fails_when_leadership_is_lost(void)
{
    struct raft_config c = cfg(1, 3);
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    CU_ASSERT_EQUAL(raft_read_index(r, 11, NULL), 0);
    flush(r);
    struct raft_message m =
        append_req(2, 1, raft_term(r) + 1, 0, 0, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_FOLLOWER);
    upd(r);
    CU_ASSERT_EQUAL_FATAL(U.n_reads, 1);
    CU_ASSERT_EQUAL(U.reads[0].ctx, 11);
    CU_ASSERT_FALSE(U.reads[0].ok);
    CU_ASSERT(U.role_changed && U.leader == 2);
    adv(r);
    raft_free(r);
}

/* ---- leadership transfer ----------------------------------------------- */

static void test_transfer_refuses_proposals_then_times_out(void)
{
    struct raft_config c = cfg(1, 3);
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    CU_ASSERT_EQUAL(raft_transfer_leader(r, 7), RAFT_EINVAL);
    CU_ASSERT_EQUAL(raft_transfer_leader(r, 2), 0);
    uint64_t hint = 0;
    CU_ASSERT_EQUAL(raft_propose(r, "a", 1, NULL, NULL, &hint), RAFT_ETRANSFER);
    CU_ASSERT_EQUAL(hint, 2);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_TIMEOUT_NOW, 0), 0); /* not caught up */
    adv(r);
    /* Caught up: TimeoutNow goes out, after the write like any message. */
    ack(r, 2, 1, 0);
    upd(r);
    const struct raft_message *t = find_msg(RAFT_MSG_TIMEOUT_NOW, 2);
    CU_ASSERT_PTR_NOT_NULL(t);
    for (size_t k = 0; k < U.n_early; k++) {
        CU_ASSERT_NOT_EQUAL(U.early[k].type, RAFT_MSG_TIMEOUT_NOW);
    }
    adv(r);
    /* Nobody took over within an election timeout: abandoned. */
    CU_ASSERT_EQUAL(raft_tick(r, 10000 + 250), 0);
    flush(r);
    CU_ASSERT_EQUAL(raft_propose(r, "a", 1, NULL, NULL, NULL), 0);
    flush(r);
    raft_free(r);
}

static void test_transfer_moves_leadership_to_target(void)
{
    struct sim_config c = {0};
    c.n = 5;
    c.seed = test_seed;
    c.pre_vote = true;
    c.check_quorum = true;
    struct sim *s = sim_new(&c);
    SIM_CHECK(s, sim_one(s, 1, 8, 5, true) > 0);
    for (int round = 0; round < 5; round++) {
        int leader = sim_check_one_leader(s, 1000);
        SIM_CHECK(s, leader >= 0);
        unsigned target = (unsigned)(leader + 1 + round % 4) % 5;
        SIM_CHECK(s, sim_transfer(s, (unsigned)leader, target) == 0);
        sim_run(s, 200);
        SIM_CHECK(s, sim_leader(s) == (int)target);
        SIM_CHECK(s, sim_one(s, 100 + (uint64_t)round, 8, 5, true) > 0);
    }
    SIM_ASSERT_OK(s);
    sim_free(s);
}

/* A transfer to a node that cannot take over is abandoned: the leader keeps
 * its term and takes proposals again; a lagging target is caught up first,
 * and proposals made during the transfer are refused, not lost. */
static void test_transfer_to_a_down_or_lagging_target(void)
{
    struct sim_config c = {0};
    c.n = 3;
    c.seed = test_seed;
    c.pre_vote = true;
    c.check_quorum = true;
    struct sim *s = sim_new(&c);
    SIM_CHECK(s, sim_one(s, 1, 8, 3, true) > 0);
    int leader = sim_check_one_leader(s, 1000);
    SIM_CHECK(s, leader >= 0);
    unsigned target = (unsigned)(leader + 1) % 3;
    uint64_t term = raft_term(sim_raft(s, (unsigned)leader));

    /* Down: abandoned after an election timeout, same leader, same term. */
    sim_disconnect(s, target);
    SIM_CHECK(s, sim_transfer(s, (unsigned)leader, target) == 0);
    uint64_t index;
    SIM_CHECK(s, sim_propose(s, (unsigned)leader, 2, 8, &index, NULL) ==
                     RAFT_ETRANSFER);
    sim_run(s, 3 * 200);
    SIM_CHECK(s, sim_leader(s) == leader);
    SIM_CHECK(s, raft_term(sim_raft(s, (unsigned)leader)) == term);
    SIM_CHECK(s, sim_one(s, 3, 8, 2, true) > 0);

    /* Lagging: it missed entries while cut off; the transfer brings it up
     * to date, then it leads with every committed entry. */
    for (int k = 0; k < 20; k++) {
        SIM_CHECK(s, sim_one(s, 10 + (uint64_t)k, 8, 2, true) > 0);
    }
    sim_connect(s, target);
    SIM_CHECK(s, sim_transfer(s, (unsigned)leader, target) == 0);
    sim_run(s, 500);
    SIM_CHECK(s, sim_leader(s) == (int)target);
    SIM_CHECK(s, sim_one(s, 99, 8, 3, true) > 0);
    /* To itself: nothing to do. */
    SIM_CHECK(s, sim_transfer(s, target, target) == 0);
    sim_run(s, 300);
    SIM_CHECK(s, sim_leader(s) == (int)target);
    SIM_ASSERT_OK(s);
    sim_free(s);
}

/* ---- snapshots --------------------------------------------------------- */

static void test_snapshot_taken_compacts_keeping_trailing_entries(void)
{
    struct raft_config c = cfg(1, 1);
    c.snapshot_trailing = 5;
    struct raft *r = start(&c);
    raft_tick(r, 10000);
    flush(r);
    for (int k = 0; k < 19; k++) {
        raft_propose(r, "e", 1, NULL, NULL, NULL);
        flush(r);
    }
    CU_ASSERT_EQUAL(raft_applied_index(r), 20);
    CU_ASSERT_EQUAL(raft_snapshot_taken(r, 21, 1), RAFT_EINVAL);
    CU_ASSERT_EQUAL(raft_snapshot_taken(r, 15, 2), RAFT_EINVAL);
    CU_ASSERT_EQUAL(raft_snapshot_taken(r, 15, 1), 0);
    CU_ASSERT_EQUAL(raft_snapshot_index(r), 15);
    CU_ASSERT_EQUAL(raft_first_index(r), 11);
    CU_ASSERT_EQUAL(raft_snapshot_taken(r, 12, 1), RAFT_ESTALE);
    uint64_t t;
    CU_ASSERT_EQUAL(raft_entry_term(r, 9, &t), RAFT_ECOMPACTED);
    CU_ASSERT_EQUAL(raft_entry_term(r, 10, &t), 0);
    raft_free(r);
}

static void test_snapshot_leader_asks_caller_for_chunks(void)
{
    struct raft_config c = cfg(1, 3);
    c.snapshot_chunk_bytes = 100;
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    ack(r, 2, 1, 0);
    flush(r);
    for (int k = 0; k < 5; k++) {
        raft_propose(r, "e", 1, NULL, NULL, NULL);
        flush(r);
        ack(r, 2, raft_last_index(r), 0);
        flush(r);
    }
    CU_ASSERT_EQUAL(raft_commit_index(r), 6);
    CU_ASSERT_EQUAL(raft_snapshot_taken(r, 6, 1), 0);
    /* Peer 3 never answered: its next entry is gone, so a snapshot. */
    raft_tick(r, 10000 + 60);
    upd(r);
    const struct raft_message *m = find_msg(RAFT_MSG_SNAPSHOT, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_PTR_NULL(m->u.snapshot.data);
    CU_ASSERT_EQUAL(m->u.snapshot.index, 6);
    CU_ASSERT_EQUAL(m->u.snapshot.term, 1);
    CU_ASSERT_EQUAL(m->u.snapshot.offset, 0);
    CU_ASSERT_EQUAL(m->u.snapshot.max_len, 100);
    CU_ASSERT_PTR_NOT_NULL(find_msg(RAFT_MSG_APPEND, 2)); /* heartbeat */
    adv(r);
    /* The follower asks for offset 100 next; then reports installed. */
    struct raft_message resp = {0};
    resp.type = RAFT_MSG_SNAPSHOT_RESP;
    resp.from = 3;
    resp.to = 1;
    resp.term = raft_term(r);
    resp.u.snapshot_resp.index = 6;
    resp.u.snapshot_resp.next_offset = 100;
    CU_ASSERT_EQUAL(raft_step(r, &resp), 0);
    upd(r);
    m = find_msg(RAFT_MSG_SNAPSHOT, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->u.snapshot.offset, 100);
    adv(r);
    resp.u.snapshot_resp.installed = true;
    resp.u.snapshot_resp.next_offset = 0;
    CU_ASSERT_EQUAL(raft_step(r, &resp), 0);
    upd(r);
    m = find_msg(RAFT_MSG_APPEND, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->u.append.prev_index, 6);
    adv(r);
    raft_free(r);
}

static void test_snapshot_lost_chunk_is_resent_and_restartable(void)
{
    struct raft_config c = cfg(1, 3);
    c.snapshot_chunk_bytes = 100;
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    ack(r, 2, 1, 0);
    flush(r);
    CU_ASSERT_EQUAL(raft_snapshot_taken(r, 1, 1), 0);
    uint64_t now = 10000;
    raft_tick(r, now += 60);
    upd(r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(find_msg(RAFT_MSG_SNAPSHOT, 3));
    adv(r);
    /* Chunk at 0 answered: asks for 100. That chunk is then lost. */
    struct raft_message resp = {0};
    resp.type = RAFT_MSG_SNAPSHOT_RESP;
    resp.from = 3;
    resp.to = 1;
    resp.term = raft_term(r);
    resp.u.snapshot_resp.index = 1;
    resp.u.snapshot_resp.next_offset = 100;
    CU_ASSERT_EQUAL(raft_step(r, &resp), 0);
    flush(r);
    /* Two heartbeat intervals without progress: resent at 100. */
    raft_tick(r, now += 60);
    flush(r);
    raft_tick(r, now += 60);
    upd(r);
    const struct raft_message *m = find_msg(RAFT_MSG_SNAPSHOT, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->u.snapshot.offset, 100);
    adv(r);
    /* The follower lost its staging area (restart): it asks for 0. */
    resp.u.snapshot_resp.next_offset = 0;
    CU_ASSERT_EQUAL(raft_step(r, &resp), 0);
    flush(r);
    raft_tick(r, now += 60);
    flush(r);
    raft_tick(r, now += 60);
    upd(r);
    m = find_msg(RAFT_MSG_SNAPSHOT, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->u.snapshot.offset, 0);
    adv(r);
    raft_free(r);
}

static void test_report_unreachable_makes_the_leader_probe(void)
{
    struct raft_config c = cfg(1, 3);
    c.max_inflight = 1;
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    ack(r, 2, 1, 0);
    flush(r);
    CU_ASSERT_EQUAL(raft_propose(r, "a", 1, NULL, NULL, NULL), 0);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_APPEND, 2), 1);
    adv(r);
    /* The pipeline to 2 is full; nothing more goes until... */
    CU_ASSERT_EQUAL(raft_propose(r, "b", 1, NULL, NULL, NULL), 0);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_APPEND, 2), 0);
    adv(r);
    /* ... the node reports the send failed: a probe from match + 1. */
    CU_ASSERT_EQUAL(raft_report_unreachable(r, 2), 0);
    CU_ASSERT_EQUAL(raft_tick(r, 10000 + 60), 0);
    upd(r);
    const struct raft_message *m = find_msg(RAFT_MSG_APPEND, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->u.append.prev_index, 1);
    CU_ASSERT_EQUAL(m->u.append.n_entries, 2);
    adv(r);
    raft_free(r);
}

static struct raft_message chunk(uint64_t offset,
                                 const char *data,
                                 size_t len,
                                 bool done)
{
    struct raft_message m = {0};
    m.type = RAFT_MSG_SNAPSHOT;
    m.from = 1;
    m.to = 2;
    m.term = 3;
    m.cookie = 9;
    m.u.snapshot.index = 10;
    m.u.snapshot.term = 2;
    m.u.snapshot.offset = offset;
    m.u.snapshot.data = data;
    m.u.snapshot.len = len;
    m.u.snapshot.done = done;
    return m;
}

static void test_snapshot_follower_validates_offsets_and_installs(void)
{
    struct raft_config c = cfg(2, 3);
    uint64_t terms[] = {1, 1, 1};
    struct raft *r = start_with_log(&c, 2, terms, 3);
    struct raft_message m = chunk(0, "0123456789", 10, false);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT_EQUAL_FATAL(U.n_chunks, 1);
    CU_ASSERT_EQUAL(U.chunks[0].offset, 0);
    CU_ASSERT_EQUAL(U.chunks[0].len, 10);
    const struct raft_message *resp = find_msg(RAFT_MSG_SNAPSHOT_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_EQUAL(resp->u.snapshot_resp.next_offset, 10);
    CU_ASSERT_EQUAL(resp->cookie, 9);
    adv(r);
    /* A gap: refused, asking again for offset 10. */
    m = chunk(20, "abcdefghij", 10, false);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT_EQUAL(U.n_chunks, 0);
    resp = find_msg(RAFT_MSG_SNAPSHOT_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_FALSE(resp->u.snapshot_resp.installed);
    CU_ASSERT_EQUAL(resp->u.snapshot_resp.next_offset, 10);
    adv(r);
    /* Restart from offset 0 (a new sender), then finish. */
    m = chunk(0, "0123456789", 10, false);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    m = chunk(10, "abc", 3, true);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT_EQUAL_FATAL(U.n_chunks, 2);
    CU_ASSERT_EQUAL(U.chunks[0].offset, 0);
    CU_ASSERT(U.chunks[1].done);
    CU_ASSERT(U.install && U.install_index == 10 && U.install_term == 2);
    CU_ASSERT_EQUAL(U.truncate_from, 11); /* the old log is discarded */
    CU_ASSERT_EQUAL(U.n_committed, 0);    /* the snapshot replaces them */
    CU_ASSERT_EQUAL(U.hs.commit, 10);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_SNAPSHOT_RESP, 1), 2);
    adv(r);
    CU_ASSERT_EQUAL(raft_last_index(r), 10);
    CU_ASSERT_EQUAL(raft_first_index(r), 11);
    CU_ASSERT_EQUAL(raft_applied_index(r), 10);
    /* Appends continue after the snapshot. */
    struct raft_entry e = {3, 11, RAFT_ENTRY_NORMAL, "n", 1};
    m = append_req(1, 2, 3, 10, 2, &e, 1, 11);
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT_EQUAL(U.n_entries, 1);
    CU_ASSERT_EQUAL(U.n_committed, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(find_msg(RAFT_MSG_APPEND_RESP, 1));
    CU_ASSERT(find_msg(RAFT_MSG_APPEND_RESP, 1)->u.append_resp.success);
    adv(r);
    raft_free(r);
}

/* A late copy of a transfer's first chunk (a resend that crossed the
 * answer, or one that came over an older connection) does not start the
 * transfer over: with a 10 GiB state that would be minutes of transfer
 * lost, and the leader would open a new stream. */
static void test_snapshot_resent_first_chunk_does_not_restart(void)
{
    struct raft_config c = cfg(2, 3);
    uint64_t terms[] = {1, 1, 1};
    struct raft *r = start_with_log(&c, 2, terms, 3);
    struct raft_message m = chunk(0, "0123456789", 10, false);
    m.u.snapshot.stream = 7;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    m = chunk(10, "abcdefghij", 10, false);
    m.u.snapshot.stream = 7;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT_EQUAL(U.n_chunks, 2);
    adv(r);
    /* The first chunk again: nothing staged, the next offset asked. */
    m = chunk(0, "0123456789", 10, false);
    m.u.snapshot.stream = 7;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT_EQUAL(U.n_chunks, 0);
    const struct raft_message *resp = find_msg(RAFT_MSG_SNAPSHOT_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_EQUAL(resp->u.snapshot_resp.next_offset, 20);
    CU_ASSERT_FALSE(resp->u.snapshot_resp.installed);
    adv(r);
    /* The transfer goes on from there and installs. */
    m = chunk(20, "xyz", 3, true);
    m.u.snapshot.stream = 7;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT_EQUAL_FATAL(U.n_chunks, 1);
    CU_ASSERT_EQUAL(U.chunks[0].offset, 20);
    CU_ASSERT(U.install && U.install_index == 10);
    adv(r);
    raft_free(r);

    /* A first chunk of another production does start over. */
    r = start_with_log(&c, 2, terms, 3);
    m = chunk(0, "0123456789", 10, false);
    m.u.snapshot.stream = 7;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    m = chunk(10, "abcdefghij", 10, false);
    m.u.snapshot.stream = 7;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    adv(r);
    m = chunk(0, "ABCDEFGHIJ", 10, false);
    m.u.snapshot.stream = 8;
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    upd(r);
    CU_ASSERT_EQUAL_FATAL(U.n_chunks, 1);
    CU_ASSERT_EQUAL(U.chunks[0].offset, 0);
    CU_ASSERT_EQUAL(U.chunks[0].stream, 8);
    resp = find_msg(RAFT_MSG_SNAPSHOT_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_EQUAL(resp->u.snapshot_resp.next_offset, 10);
    adv(r);
    raft_free(r);
}

/* ---- terms that cannot be real ----------------------------------------- */

static struct raft_message vote_req(uint64_t from,
                                    uint64_t to,
                                    uint64_t term,
                                    bool pre_vote,
                                    bool transfer)
{
    struct raft_message m = {0};
    m.type = RAFT_MSG_VOTE;
    m.from = from;
    m.to = to;
    m.term = term;
    m.cookie = 31;
    m.u.vote.pre_vote = pre_vote;
    m.u.vote.transfer = transfer;
    m.u.vote.last_index = 3;
    m.u.vote.last_term = 2;
    return m;
}

static struct raft_message typed(enum raft_msg_type type,
                                 uint64_t from,
                                 uint64_t to,
                                 uint64_t term)
{
    struct raft_message m = {0};
    m.type = type;
    m.from = from;
    m.to = to;
    m.term = term;
    m.cookie = type % 2 ? 32 : 0;
    return m;
}

/* A message refused for its term changes nothing and gets no response. */
static void assert_refused(struct raft *r, const struct raft_message *m)
{
    uint64_t term = raft_term(r);
    enum raft_role role = raft_role(r);
    CU_ASSERT_EQUAL(raft_step(r, m), RAFT_EINVAL);
    CU_ASSERT_EQUAL(raft_term(r), term);
    CU_ASSERT_EQUAL(raft_role(r), role);
    CU_ASSERT_FALSE(raft_has_update(r));
}

/* RequestVote, pre-vote, AppendEntries, InstallSnapshot and TimeoutNow with
 * a term above RAFT_TERM_MAX, or carrying one, are refused: before, one
 * RequestVote at 2^64-1 (a term no election can follow; TimeoutNow's
 * election at term + 1 wrapped to 0) stopped every election for good. */
static void test_term_forged_requests_beyond_the_bound_are_refused(void)
{
    struct raft_config c = cfg(2, 3);
    uint64_t terms[] = {1, 1, 2};
    struct raft *r = start_with_log(&c, 2, terms, 3);
    const uint64_t absurd[] = {UINT64_MAX, RAFT_TERM_MAX + 1};
    for (size_t k = 0; k < 2; k++) {
        uint64_t t = absurd[k];
        struct raft_message m = vote_req(1, 2, t, false, false);
        assert_refused(r, &m);
        m = vote_req(1, 2, t, false, true);
        assert_refused(r, &m);
        m = vote_req(1, 2, t, true, false); /* pre-vote: t = term + 1 */
        assert_refused(r, &m);
        m = vote_req(1, 2, 3, false, false);
        m.u.vote.last_term = t;
        assert_refused(r, &m);
        m = append_req(1, 2, t, 3, 2, NULL, 0, 3);
        assert_refused(r, &m);
        struct raft_entry e = {t, 4, RAFT_ENTRY_NORMAL, "x", 1};
        m = append_req(1, 2, t, 3, 2, &e, 1, 4);
        assert_refused(r, &m);
        m = append_req(1, 2, t, 3, t, NULL, 0, 0);
        assert_refused(r, &m);
        m = chunk(0, "abc", 3, true);
        m.term = t;
        m.u.snapshot.term = t;
        assert_refused(r, &m);
        m = typed(RAFT_MSG_TIMEOUT_NOW, 1, 2, t);
        assert_refused(r, &m);
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(raft_errmsg(r), "cannot be real"));

    /* It still votes, campaigns, leads and commits. */
    struct raft_message v = vote_req(1, 2, 3, false, false);
    CU_ASSERT_EQUAL(raft_step(r, &v), 0);
    upd(r);
    const struct raft_message *resp = find_msg(RAFT_MSG_VOTE_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(resp->u.vote_resp.granted);
    CU_ASSERT_EQUAL(U.hs.term, 3);
    adv(r);
    make_leader(r);
    CU_ASSERT_EQUAL(raft_term(r), 4);
    flush(r);
    uint64_t index;
    CU_ASSERT_EQUAL(raft_propose(r, "a", 1, &index, NULL, NULL), 0);
    flush(r);
    ack(r, 1, index, 0);
    CU_ASSERT_EQUAL(raft_commit_index(r), index);
    flush(r);
    raft_free(r);
}

/* Responses with absurd terms do not depose a leader. */
static void test_term_forged_responses_beyond_the_bound_are_refused(void)
{
    struct raft_config c = cfg(1, 3);
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    uint64_t term = raft_term(r);
    struct raft_message m = typed(RAFT_MSG_VOTE_RESP, 2, 1, UINT64_MAX);
    m.u.vote_resp.granted = true;
    assert_refused(r, &m);
    m.u.vote_resp.pre_vote = true;
    assert_refused(r, &m);
    m = append_resp(r, 2, true, 1, 0);
    m.term = UINT64_MAX;
    assert_refused(r, &m);
    m = append_resp(r, 2, false, 1, 0);
    m.u.append_resp.conflict_term = UINT64_MAX; /* above the message's */
    assert_refused(r, &m);
    m = typed(RAFT_MSG_SNAPSHOT_RESP, 2, 1, RAFT_TERM_MAX + 1);
    assert_refused(r, &m);
    m = typed(RAFT_MSG_TIMEOUT_NOW_RESP, 2, 1, UINT64_MAX);
    assert_refused(r, &m);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_LEADER);
    CU_ASSERT_EQUAL(raft_term(r), term);
    ack(r, 2, 1, 0);
    CU_ASSERT_EQUAL(raft_commit_index(r), 1);
    flush(r);
    raft_free(r);
}

/* A term more than RAFT_TERM_MAX_JUMP above ours is refused; the node only
 * moves its own term up by that step, so a forged message cannot use up the
 * terms, and a node that really is that far behind catches up. */
static void test_term_far_jump_is_refused_and_raises_the_term_one_step(void)
{
    const uint64_t J = RAFT_TERM_MAX_JUMP;
    struct raft_config c = cfg(2, 3);
    c.pre_vote = true;
    uint64_t terms[] = {1, 1};
    struct raft *r = start_with_log(&c, 5, terms, 2);
    /* A pre-vote proposes a term without raising anyone's: refused, no
     * change. */
    struct raft_message m = vote_req(3, 2, 5 + J + 1, true, false);
    assert_refused(r, &m);
    m = append_req(1, 2, 5 + 2 * J + 1, 2, 1, NULL, 0, 0);
    CU_ASSERT_EQUAL(raft_step(r, &m), RAFT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(raft_errmsg(r), "2^32"));
    CU_ASSERT_EQUAL(raft_term(r), 5 + J);
    CU_ASSERT_EQUAL(raft_leader(r), 0);
    upd(r);
    CU_ASSERT(U.hs_changed && U.hs.term == 5 + J && U.hs.vote == 0);
    CU_ASSERT_EQUAL(U.n_messages, 0); /* refused: no response */
    adv(r);
    CU_ASSERT_EQUAL(raft_step(r, &m), RAFT_EINVAL);
    CU_ASSERT_EQUAL(raft_term(r), 5 + 2 * J);
    flush(r);
    /* Within one step now: followed. */
    CU_ASSERT_EQUAL(raft_step(r, &m), 0);
    CU_ASSERT_EQUAL(raft_term(r), 5 + 2 * J + 1);
    CU_ASSERT_EQUAL(raft_leader(r), 1);
    upd(r);
    const struct raft_message *resp = find_msg(RAFT_MSG_APPEND_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(resp->u.append_resp.success);
    adv(r);
    /* While it hears that leader, a far RequestVote changes nothing. */
    m = vote_req(3, 2, raft_term(r) + J + 1, false, false);
    assert_refused(r, &m);
    raft_free(r);
}

static int restore_with(uint64_t hs_term,
                        uint64_t snap_term,
                        uint64_t entry_term,
                        char *why,
                        size_t why_len)
{
    struct raft_config c = cfg(1, 3);
    struct raft_entry es[2] = {{entry_term, 5, RAFT_ENTRY_NORMAL, "a", 1},
                               {entry_term, 6, RAFT_ENTRY_NORMAL, "b", 1}};
    struct raft_persisted p = {0};
    p.hs.term = hs_term;
    p.snap_index = 4;
    p.snap_term = snap_term;
    p.applied = 4;
    p.entries = es;
    p.n_entries = 2;
    struct raft *r = raft_new(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    int rv = raft_restore(r, &p);
    snprintf(why, why_len, "%s", raft_errmsg(r));
    raft_free(r);
    return rv;
}

/* Stored terms above RAFT_TERM_MAX are damage, not state to run from. */
static void test_term_restore_refuses_terms_beyond_the_bound(void)
{
    char why[200];
    const uint64_t bad = RAFT_TERM_MAX + 1;
    CU_ASSERT_EQUAL(restore_with(bad, 1, 1, why, sizeof why), RAFT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "hard state term"));
    CU_ASSERT_EQUAL(restore_with(3, bad, bad, why, sizeof why), RAFT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "snapshot term"));
    CU_ASSERT_EQUAL(restore_with(3, 1, bad, why, sizeof why), RAFT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "stored entry term"));
    CU_ASSERT_EQUAL(
        restore_with(UINT64_MAX, UINT64_MAX, UINT64_MAX, why, sizeof why),
        RAFT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "cannot be real"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "damaged"));
    /* The bound itself is a term like any other. */
    CU_ASSERT_EQUAL(restore_with(RAFT_TERM_MAX, RAFT_TERM_MAX, RAFT_TERM_MAX,
                                 why, sizeof why),
                    0);
}

/* A node at RAFT_TERM_MAX - 1 can still hold one election, and one at the
 * bound none: term + 1 is never computed past it, in either round. */
static void test_term_node_at_the_bound_does_not_overflow(void)
{
    uint64_t terms[] = {1};
    struct raft_config c = cfg(1, 3);
    struct raft *r = start_with_log(&c, RAFT_TERM_MAX - 1, terms, 1);
    make_leader(r);
    CU_ASSERT_EQUAL(raft_term(r), RAFT_TERM_MAX);
    flush(r);
    ack(r, 2, 2, 0);
    CU_ASSERT_EQUAL(raft_commit_index(r), 2);
    flush(r);
    raft_free(r);

    for (int pre_vote = 0; pre_vote < 2; pre_vote++) {
        c = cfg(2, 3);
        c.pre_vote = pre_vote;
        r = start_with_log(&c, RAFT_TERM_MAX, terms, 1);
        for (uint64_t t = 10000; t <= 12000; t += 500) {
            CU_ASSERT_EQUAL(raft_tick(r, t), 0);
            CU_ASSERT_EQUAL(raft_role(r), RAFT_FOLLOWER);
            CU_ASSERT_EQUAL(raft_term(r), RAFT_TERM_MAX);
            if (raft_has_update(r)) {
                upd(r);
                CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_VOTE, 0), 0);
                CU_ASSERT(!U.hs_changed || U.hs.term == RAFT_TERM_MAX);
                adv(r);
            }
        }
        CU_ASSERT_PTR_NOT_NULL(strstr(raft_errmsg(r), "no election"));
        /* A TimeoutNow is acknowledged, but no election follows. */
        struct raft_message m =
            typed(RAFT_MSG_TIMEOUT_NOW, 1, 2, RAFT_TERM_MAX);
        CU_ASSERT_EQUAL(raft_step(r, &m), 0);
        upd(r);
        CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_TIMEOUT_NOW_RESP, 1), 1);
        CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_VOTE, 0), 0);
        CU_ASSERT_EQUAL(raft_term(r), RAFT_TERM_MAX);
        adv(r);
        /* A leader of that term is still followed. */
        m = append_req(1, 2, RAFT_TERM_MAX, 1, 1, NULL, 0, 1);
        CU_ASSERT_EQUAL(raft_step(r, &m), 0);
        upd(r);
        const struct raft_message *resp = find_msg(RAFT_MSG_APPEND_RESP, 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
        CU_ASSERT(resp->u.append_resp.success);
        adv(r);
        raft_free(r);
    }
}

/* kvserver writes the state machine (a received snapshot, applied entries)
 * and syncs it before it writes the log and hard state. A crash between
 * the two leaves a snapshot of a term the hard state never reached: found
 * by the simulator (raft_soak -r 194 with disk faults). raft_restore()
 * refused that state for good ("log has a term beyond the current term"),
 * so the node could never start again; it now takes the snapshot's term
 * with no vote (none was given in it: a vote is on disk before it leaves)
 * and writes it in its first update. */
static void
test_restore_after_a_crash_between_state_and_log_takes_the_snapshot_term(void)
{
    struct raft_config c = cfg(2, 3);
    struct raft_persisted p = {0};
    p.hs.term = 1;
    p.hs.vote = 1;
    p.hs.commit = 3;
    p.snap_index = 10;
    p.snap_term = 2;
    p.applied = 10;
    struct raft *r = raft_new(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL_FATAL(raft_restore(r, &p), 0);
    CU_ASSERT_EQUAL(raft_term(r), 2);
    CU_ASSERT_EQUAL(raft_commit_index(r), 10);
    CU_ASSERT(raft_has_update(r));
    upd(r);
    CU_ASSERT(U.hs_changed && U.hs.term == 2 && U.hs.vote == 0);
    CU_ASSERT_EQUAL(U.n_messages, 0);
    adv(r);
    /* It has not voted in term 2: it may now. */
    struct raft_message v = vote_req(3, 2, 2, false, false);
    v.u.vote.last_index = 10;
    CU_ASSERT_EQUAL(raft_step(r, &v), 0);
    upd(r);
    const struct raft_message *resp = find_msg(RAFT_MSG_VOTE_RESP, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT(resp->u.vote_resp.granted);
    CU_ASSERT(U.hs.term == 2 && U.hs.vote == 3);
    adv(r);
    raft_free(r);

    /* Stored entries beyond the term are still damage: a log and its hard
     * state are written together. */
    struct raft_entry e = {3, 11, RAFT_ENTRY_NORMAL, "a", 1};
    p.entries = &e;
    p.n_entries = 1;
    r = raft_new(&c);
    CU_ASSERT_EQUAL(raft_restore(r, &p), RAFT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(raft_errmsg(r), "beyond the current term"));
    raft_free(r);
}

/* Forged messages with absurd terms, stepped into every node of a running
 * cluster over and over (sim_inject), are refused; elections and commits
 * go on, and no term moves further than one RAFT_TERM_MAX_JUMP per forged
 * message that is within the bound. */
static void test_term_forged_messages_injected_into_a_running_cluster(void)
{
    struct sim_config c = {0};
    c.n = 5;
    c.seed = test_seed;
    c.pre_vote = true;
    c.check_quorum = true;
    struct sim *s = sim_new(&c);
    SIM_CHECK(s, sim_one(s, 1, 8, 5, true) > 0);
    struct raft_entry e = {UINT64_MAX, 1000, RAFT_ENTRY_NORMAL, "x", 1};
    unsigned refused = 0;
    for (int round = 0; round < 40; round++) {
        unsigned to = (unsigned)(sim_random(s) % 5);
        uint64_t from = 1 + (to + 1 + sim_random(s) % 4) % 5;
        uint64_t t = round % 2 ? UINT64_MAX : RAFT_TERM_MAX + 1;
        struct raft_message ms[8];
        ms[0] = vote_req(from, to + 1, t, false, true);
        ms[1] = vote_req(from, to + 1, t, false, false);
        ms[2] = vote_req(from, to + 1, t, true, false);
        ms[3] = append_req(from, to + 1, t, 999, t, &e, 1, 1000);
        ms[4] = chunk(0, "abc", 3, true);
        ms[4].from = from;
        ms[4].to = to + 1;
        ms[4].term = t;
        ms[4].u.snapshot.term = t;
        ms[5] = typed(RAFT_MSG_TIMEOUT_NOW, from, to + 1, t);
        ms[6] = typed(RAFT_MSG_VOTE_RESP, from, to + 1, t);
        ms[6].u.vote_resp.granted = true;
        ms[7] = typed(RAFT_MSG_APPEND_RESP, from, to + 1, t);
        ms[7].u.append_resp.success = true;
        for (size_t k = 0; k < 8; k++) {
            int rv = sim_inject(s, to, &ms[k]);
            SIM_CHECK(s, rv == RAFT_EINVAL || rv == RAFT_EBUSY);
            refused += rv == RAFT_EINVAL;
        }
        SIM_CHECK(s, sim_one(s, 100 + (uint64_t)round, 8, 5, true) > 0);
        if (round % 10 == 9) { /* elections still work */
            int leader = sim_check_one_leader(s, 1000);
            SIM_CHECK(s, leader >= 0);
            sim_restart(s, (unsigned)leader);
            SIM_CHECK(s, sim_one(s, 200 + (uint64_t)round, 8, 5, true) > 0);
        }
    }
    SIM_CHECK(s, refused > 100);
    for (unsigned i = 0; i < 5; i++) { /* only real elections moved them */
        SIM_CHECK(s, raft_term(sim_raft(s, i)) < 1000);
    }
    /* A TimeoutNow within the bound but far above moves nothing (it
     * names no leader); a vote for a transfer that far above moves the
     * term one step, then the cluster goes on at that term. */
    int leader = sim_check_one_leader(s, 1000);
    SIM_CHECK(s, leader >= 0);
    unsigned f = (unsigned)(leader + 1) % 5;
    uint64_t term = raft_term(sim_raft(s, f));
    struct raft_message tn =
        typed(RAFT_MSG_TIMEOUT_NOW, (uint64_t)leader + 1, f + 1, RAFT_TERM_MAX);
    SIM_CHECK(s, sim_inject(s, f, &tn) == RAFT_EINVAL);
    SIM_CHECK(s, raft_term(sim_raft(s, f)) == term);
    struct raft_message far =
        vote_req((uint64_t)leader + 1, f + 1, RAFT_TERM_MAX, false, true);
    SIM_CHECK(s, sim_inject(s, f, &far) == RAFT_EINVAL);
    SIM_CHECK(s, raft_term(sim_raft(s, f)) == term + RAFT_TERM_MAX_JUMP);
    SIM_CHECK(s, sim_one(s, 999, 8, 5, true) > 0);
    for (unsigned i = 0; i < 5; i++) {
        SIM_CHECK(s,
                  raft_term(sim_raft(s, i)) < term + RAFT_TERM_MAX_JUMP + 1000);
    }
    SIM_ASSERT_OK(s);
    sim_free(s);
}

/* ---- snapshot streams -------------------------------------------------- */

#define STREAM_SNAP_LEN 200 /* bytes of the snapshot in the stream test */

/* The sending caller's part: fill a chunk the leader core asked for from
 * production @stream of the snapshot (each production has other bytes). */
static struct raft_message fill(const struct raft_message *req,
                                uint64_t stream,
                                uint8_t *buf)
{
    struct raft_message m = *req;
    size_t off = (size_t)m.u.snapshot.offset;
    size_t len = STREAM_SNAP_LEN - off;
    if (len > m.u.snapshot.max_len) {
        len = m.u.snapshot.max_len;
    }
    for (size_t k = 0; k < len; k++) {
        buf[k] = (uint8_t)(stream * 31 + off + k);
    }
    m.u.snapshot.stream = stream;
    m.u.snapshot.data = buf;
    m.u.snapshot.len = len;
    m.u.snapshot.done = off + len == STREAM_SNAP_LEN;
    m.cookie = 50 + off;
    return m;
}

/* Step @m into @f; return its response and what it staged. */
static struct raft_message follower_takes(struct raft *f,
                                          const struct raft_message *m,
                                          size_t *n_staged,
                                          uint64_t *staged_stream)
{
    CU_ASSERT_EQUAL_FATAL(raft_step(f, m), 0);
    upd(f);
    *n_staged = U.n_chunks;
    for (size_t k = 0; k < U.n_chunks; k++) {
        CU_ASSERT_EQUAL(U.chunks[k].offset, m->u.snapshot.offset);
        *staged_stream = U.chunks[k].stream;
    }
    const struct raft_message *resp = find_msg(RAFT_MSG_SNAPSHOT_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    struct raft_message out = *resp;
    adv(f);
    return out;
}

/* The leader's next request for follower 3, if any (copied). */
static bool leader_sends(struct raft *l, struct raft_message *out)
{
    bool found = false;
    if (raft_has_update(l)) {
        upd(l);
        const struct raft_message *m = find_msg(RAFT_MSG_SNAPSHOT, 3);
        if (m != NULL) {
            *out = *m;
            found = true;
        }
        adv(l);
    }
    return found;
}

/* The node fills InstallSnapshot chunks from a byte stream it produces
 * from its current state, so two productions of one snapshot differ. A
 * chunk is staged only if it continues the production staged so far
 * (index, term and stream): a late chunk of an earlier stream at the
 * offset the follower expects used to be staged into the newer stream
 * (whose checksum then failed at install). The leader restarts from 0
 * when the follower does not know the stream, and goes on otherwise. */
static void test_snapshot_chunk_of_an_earlier_stream_is_never_staged(void)
{
    uint8_t b1[64], b2[64], b3[64];
    uint64_t terms[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    struct raft_config lc = cfg(1, 3);
    struct raft *l = start_with_log(&lc, 1, terms, 10);
    make_leader(l); /* term 2, no-op at 11 */
    flush(l);
    ack(l, 2, 11, 0);
    flush(l);
    CU_ASSERT_EQUAL_FATAL(raft_commit_index(l), 11);
    CU_ASSERT_EQUAL_FATAL(raft_snapshot_taken(l, 11, 2), 0);
    struct raft_config fc = cfg(3, 3);
    struct raft *f = start(&fc);
    uint64_t now = 10000;
    struct raft_message req, resp, late;
    size_t n;
    uint64_t stream = 0;
    CU_ASSERT_EQUAL(raft_tick(l, now += 60), 0);
    CU_ASSERT_FATAL(leader_sends(l, &req));
    CU_ASSERT_EQUAL(req.u.snapshot.offset, 0);
    CU_ASSERT_EQUAL(req.u.snapshot.stream, 0); /* the caller sets it */

    /* Stream 1: chunk 0 staged; chunk 64 is filled but delayed. */
    struct raft_message c = fill(&req, 1, b1);
    resp = follower_takes(f, &c, &n, &stream);
    CU_ASSERT(n == 1 && stream == 1);
    CU_ASSERT_EQUAL(resp.u.snapshot_resp.next_offset, 64);
    CU_ASSERT_EQUAL(raft_step(l, &resp), 0);
    CU_ASSERT_FATAL(leader_sends(l, &req));
    CU_ASSERT_EQUAL(req.u.snapshot.offset, 64);
    late = fill(&req, 1, b2);

    /* The sender reopens its stream (stream 2) at offset 64: refused as
     * an unknown transfer, and the leader restarts from 0 after a stall. */
    c = fill(&req, 2, b3);
    resp = follower_takes(f, &c, &n, &stream);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(resp.u.snapshot_resp.next_offset, 0);
    CU_ASSERT_FALSE(resp.u.snapshot_resp.installed);
    CU_ASSERT_EQUAL(raft_step(l, &resp), 0);
    CU_ASSERT_FALSE(leader_sends(l, &req));
    CU_ASSERT_EQUAL(raft_tick(l, now += 60), 0);
    CU_ASSERT_FALSE(leader_sends(l, &req));
    CU_ASSERT_EQUAL(raft_tick(l, now += 60), 0);
    CU_ASSERT_FATAL(leader_sends(l, &req));
    CU_ASSERT_EQUAL(req.u.snapshot.offset, 0);
    c = fill(&req, 2, b1);
    resp = follower_takes(f, &c, &n, &stream);
    CU_ASSERT(n == 1 && stream == 2);
    CU_ASSERT_EQUAL(raft_step(l, &resp), 0);
    CU_ASSERT_FATAL(leader_sends(l, &req));
    CU_ASSERT_EQUAL(req.u.snapshot.offset, 64);

    /* The late chunk of stream 1 arrives at the offset stream 2 expects:
     * not staged, answered as unknown; the leader does not restart. */
    resp = follower_takes(f, &late, &n, &stream);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(resp.u.snapshot_resp.next_offset, 0);
    CU_ASSERT_EQUAL(raft_step(l, &resp), 0);
    CU_ASSERT_FALSE(leader_sends(l, &req));

    /* Stream 2 goes on to the end and is installed. */
    struct raft_message want = req;
    bool installed = false;
    for (int k = 0; k < 4 && !installed; k++) {
        c = fill(&want, 2, b2);
        resp = follower_takes(f, &c, &n, &stream);
        CU_ASSERT(n == 1 && stream == 2);
        installed = resp.u.snapshot_resp.installed;
        CU_ASSERT_EQUAL(raft_step(l, &resp), 0);
        if (!installed) {
            CU_ASSERT_FATAL(leader_sends(l, &want));
            CU_ASSERT_EQUAL(want.u.snapshot.offset, c.u.snapshot.offset + 64);
        }
    }
    CU_ASSERT_FATAL(installed);
    CU_ASSERT_EQUAL(raft_snapshot_index(f), 11);
    CU_ASSERT_EQUAL(raft_applied_index(f), 11);
    upd(l);
    const struct raft_message *a = find_msg(RAFT_MSG_APPEND, 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(a->u.append.prev_index, 11);
    adv(l);
    raft_free(l);
    raft_free(f);
}

#define T(f)  \
    {         \
#f, f \
    }
/* ---- membership --------------------------------------------------------- */

static void test_conf_encoding_round_trips_and_rejects_malformed(void)
{
    struct raft_member m[3] = {
        {1, true, "a:1", 3}, {7, false, NULL, 0}, {3, true, "c", 1}};
    void *blob;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(raft_conf_encode(m, 3, &blob, &len), 0);
    struct raft_member out[RAFT_MAX_MEMBERS];
    size_t n = 0;
    CU_ASSERT_EQUAL(raft_conf_decode(blob, len, out, RAFT_MAX_MEMBERS, &n), 0);
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT(out[0].id == 1 && out[0].voter && out[0].ctx_len == 3 &&
              memcmp(out[0].ctx, "a:1", 3) == 0);
    CU_ASSERT(out[1].id == 7 && !out[1].voter && out[1].ctx_len == 0);
    CU_ASSERT(out[2].id == 3 && out[2].voter);
    /* Every shorter prefix, and one byte more, is refused. */
    for (size_t k = 0; k < len; k++) {
        CU_ASSERT_EQUAL(raft_conf_decode(blob, k, out, RAFT_MAX_MEMBERS, &n),
                        RAFT_EINVAL);
    }
    uint8_t longer[64];
    memcpy(longer, blob, len);
    longer[len] = 0;
    CU_ASSERT_EQUAL(raft_conf_decode(longer, len + 1, out, 3, &n), RAFT_EINVAL);
    CU_ASSERT_EQUAL(raft_conf_decode(blob, len, out, 2, &n), RAFT_EINVAL);
    ((uint8_t *)blob)[0] = 2; /* another version */
    CU_ASSERT_EQUAL(raft_conf_decode(blob, len, out, 3, &n), RAFT_EINVAL);
    free(blob);
    struct raft_member dup[2] = {{1, true, NULL, 0}, {1, false, NULL, 0}};
    CU_ASSERT_EQUAL(raft_conf_encode(dup, 2, &blob, &len), RAFT_EINVAL);
    struct raft_member learners[1] = {{4, false, NULL, 0}};
    CU_ASSERT_EQUAL(raft_conf_encode(learners, 1, &blob, &len), RAFT_EINVAL);
    struct raft_member zero[1] = {{0, true, NULL, 0}};
    CU_ASSERT_EQUAL(raft_conf_encode(zero, 1, &blob, &len), RAFT_EINVAL);
}

/* Node 1 leads {1..n} with its no-op committed (acknowledged by 2). */
static struct raft *committed_leader(unsigned n)
{
    struct raft_config c = cfg(1, n);
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    if (n > 1) {
        ack(r, 2, raft_last_index(r), 0);
    }
    flush(r);
    CU_ASSERT_EQUAL_FATAL(raft_commit_index(r), raft_last_index(r));
    return r;
}

static int change(struct raft *r, enum raft_change_type t, uint64_t id)
{
    struct raft_change c = {t, id, "ctx", 3};
    return raft_propose_change(r, &c, NULL, NULL);
}

static bool is_member(struct raft *r, uint64_t id, bool *voter)
{
    const struct raft_member *m;
    size_t n = raft_members(r, &m);
    for (size_t k = 0; k < n; k++) {
        if (m[k].id == id) {
            *voter = m[k].voter;
            return true;
        }
    }
    return false;
}

static void test_member_change_waits_for_the_leaders_first_commit(void)
{
    struct raft_config c = cfg(1, 3);
    struct raft *r = start(&c);
    make_leader(r);
    flush(r);
    /* The no-op of its term is not committed: no change yet (the fix to
     * single-server changes). */
    CU_ASSERT_EQUAL(change(r, RAFT_CHANGE_ADD_LEARNER, 4), RAFT_ECHANGE);
    ack(r, 2, raft_last_index(r), 0);
    CU_ASSERT_EQUAL(change(r, RAFT_CHANGE_ADD_LEARNER, 4), 0);
    /* One at a time: the next waits for this one's commit. */
    CU_ASSERT_EQUAL(change(r, RAFT_CHANGE_PROMOTE, 4), RAFT_ECHANGE);
    CU_ASSERT(raft_conf_index(r) > raft_commit_index(r));
    flush(r);
    ack(r, 2, raft_last_index(r), 0);
    CU_ASSERT_EQUAL(raft_conf_index(r), raft_commit_index(r));
    CU_ASSERT_EQUAL(change(r, RAFT_CHANGE_ADD_LEARNER, 4), RAFT_EINVAL);
    CU_ASSERT_EQUAL(change(r, RAFT_CHANGE_PROMOTE, 2), RAFT_EINVAL);
    CU_ASSERT_EQUAL(change(r, RAFT_CHANGE_REMOVE, 9), RAFT_EINVAL);
    /* Not before the learner holds the entry that made it one. */
    CU_ASSERT_EQUAL(change(r, RAFT_CHANGE_PROMOTE, 4), RAFT_ECHANGE);
    ack(r, 4, raft_conf_index(r), 0);
    CU_ASSERT_EQUAL(change(r, RAFT_CHANGE_PROMOTE, 4), 0);
    bool voter = false;
    CU_ASSERT(is_member(r, 4, &voter) && voter);
    raft_free(r);
}

static void test_member_learner_gets_the_log_but_no_say(void)
{
    struct raft *r = committed_leader(3);
    CU_ASSERT_EQUAL_FATAL(change(r, RAFT_CHANGE_ADD_LEARNER, 4), 0);
    upd(r);
    CU_ASSERT(U.conf_changed);
    CU_ASSERT(count_msgs(RAFT_MSG_APPEND, 4) > 0); /* replicated to it */
    adv(r);
    uint64_t conf = raft_last_index(r);
    /* The learner alone does not commit; a voter does. */
    ack(r, 4, conf, 0);
    CU_ASSERT(raft_commit_index(r) < conf);
    ack(r, 2, conf, 0);
    CU_ASSERT_EQUAL(raft_commit_index(r), conf);
    struct raft_peer_info pi;
    CU_ASSERT_EQUAL(raft_peer_info(r, 4, &pi), 0);
    CU_ASSERT_EQUAL(pi.match, conf);
    /* A learner cannot be handed leadership. */
    CU_ASSERT_EQUAL(raft_transfer_leader(r, 4), RAFT_EINVAL);
    raft_free(r);
}

static void test_member_promoted_learner_counts_toward_commit(void)
{
    struct raft *r = committed_leader(1);
    CU_ASSERT_EQUAL_FATAL(change(r, RAFT_CHANGE_ADD_LEARNER, 2), 0);
    flush(r); /* a lone voter commits it alone */
    CU_ASSERT_EQUAL(raft_commit_index(r), raft_last_index(r));
    ack(r, 2, raft_last_index(r), 0);
    CU_ASSERT_EQUAL_FATAL(change(r, RAFT_CHANGE_PROMOTE, 2), 0);
    flush(r);
    uint64_t promote = raft_last_index(r);
    /* Two voters now: the promotion itself needs node 2. */
    CU_ASSERT(raft_commit_index(r) < promote);
    ack(r, 2, promote, 0);
    CU_ASSERT_EQUAL(raft_commit_index(r), promote);
    raft_free(r);
}

static void test_member_removed_leader_hands_off_and_steps_down(void)
{
    struct raft *r = committed_leader(3);
    ack(r, 3, raft_last_index(r), 0);
    CU_ASSERT_EQUAL_FATAL(change(r, RAFT_CHANGE_REMOVE, 1), 0);
    flush(r);
    uint64_t conf = raft_last_index(r);
    /* It leads on without counting itself: {2, 3} must both have it. */
    ack(r, 2, conf, 0);
    CU_ASSERT(raft_commit_index(r) < conf);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_LEADER);
    ack(r, 3, conf, 0);
    CU_ASSERT_EQUAL(raft_commit_index(r), conf);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_FOLLOWER);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_TIMEOUT_NOW, 0), 1);
    const struct raft_message *hb = find_msg(RAFT_MSG_APPEND, 2);
    CU_ASSERT(hb != NULL && hb->u.append.commit == conf);
    adv(r);
    /* Removed: it never campaigns again. */
    CU_ASSERT_EQUAL(raft_tick(r, 100000), 0);
    flush(r);
    CU_ASSERT_EQUAL(raft_tick(r, 200000), 0);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_VOTE, 0), 0);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_FOLLOWER);
    adv(r);
    bool voter;
    CU_ASSERT_FALSE(is_member(r, 1, &voter));
    raft_free(r);
}

static void test_member_truncated_config_entry_gives_way(void)
{
    struct raft_config c = cfg(2, 3);
    struct raft *r = start(&c);
    struct raft_member m[4] = {{1, true, NULL, 0},
                               {2, true, NULL, 0},
                               {3, true, NULL, 0},
                               {4, false, "x", 1}};
    void *blob;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(raft_conf_encode(m, 4, &blob, &len), 0);
    struct raft_entry es[2] = {{1, 1, RAFT_ENTRY_NOOP, NULL, 0},
                               {1, 2, RAFT_ENTRY_CONFIG, blob, len}};
    struct raft_message a = append_req(1, 2, 1, 0, 0, es, 2, 1);
    CU_ASSERT_EQUAL_FATAL(raft_step(r, &a), 0);
    bool voter = true;
    CU_ASSERT(is_member(r, 4, &voter) && !voter); /* in force, uncommitted */
    CU_ASSERT_EQUAL(raft_conf_index(r), 2);
    upd(r);
    CU_ASSERT(U.conf_changed);
    adv(r);
    /* The leader of term 2 never had it: its entry 2 replaces it. */
    struct raft_entry other = {2, 2, RAFT_ENTRY_NORMAL, "y", 1};
    a = append_req(3, 2, 2, 1, 1, &other, 1, 1);
    CU_ASSERT_EQUAL_FATAL(raft_step(r, &a), 0);
    CU_ASSERT_FALSE(is_member(r, 4, &voter));
    CU_ASSERT_EQUAL(raft_members(r, NULL), 3);
    CU_ASSERT_EQUAL(raft_conf_index(r), 0);
    upd(r);
    CU_ASSERT(U.conf_changed);
    adv(r);
    free(blob);
    raft_free(r);
}

static void test_member_joining_node_campaigns_only_as_a_voter(void)
{
    struct raft_config c = cfg(4, 0); /* joins: no configuration */
    CU_ASSERT_EQUAL(raft_config_check(&c), 0);
    struct raft *r = start(&c);
    CU_ASSERT_EQUAL(raft_members(r, NULL), 0);
    CU_ASSERT_EQUAL(raft_tick(r, 100000), 0);
    flush(r);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_FOLLOWER);
    /* The leader sends the entry that makes it a learner ... */
    struct raft_member m[2] = {{1, true, NULL, 0}, {4, false, NULL, 0}};
    void *blob;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(raft_conf_encode(m, 2, &blob, &len), 0);
    struct raft_entry es[2] = {{1, 1, RAFT_ENTRY_NOOP, NULL, 0},
                               {1, 2, RAFT_ENTRY_CONFIG, blob, len}};
    struct raft_message a = append_req(1, 4, 1, 0, 0, es, 2, 2);
    CU_ASSERT_EQUAL_FATAL(raft_step(r, &a), 0);
    flush(r);
    CU_ASSERT_EQUAL(raft_tick(r, 200000), 0);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_VOTE, 0), 0); /* a learner */
    adv(r);
    free(blob);
    /* ... then the one that promotes it: now it may campaign. */
    m[1].voter = true;
    CU_ASSERT_EQUAL_FATAL(raft_conf_encode(m, 2, &blob, &len), 0);
    struct raft_entry e3 = {1, 3, RAFT_ENTRY_CONFIG, blob, len};
    a = append_req(1, 4, 1, 2, 1, &e3, 1, 3);
    CU_ASSERT_EQUAL_FATAL(raft_step(r, &a), 0);
    flush(r);
    CU_ASSERT_EQUAL(raft_tick(r, 300000), 0);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_VOTE, 1), 1);
    adv(r);
    free(blob);
    raft_free(r);
}

static void test_member_snapshot_carries_the_configuration(void)
{
    struct raft *r = committed_leader(3);
    ack(r, 3, raft_last_index(r), 0);
    CU_ASSERT_EQUAL_FATAL(change(r, RAFT_CHANGE_ADD_LEARNER, 4), 0);
    flush(r);
    uint64_t conf = raft_last_index(r);
    ack(r, 2, conf, 0);
    ack(r, 3, conf, 0);
    flush(r);
    uint64_t t;
    CU_ASSERT_EQUAL_FATAL(raft_entry_term(r, conf, &t), 0);
    CU_ASSERT_EQUAL_FATAL(raft_snapshot_taken(r, conf, t), 0);
    /* Node 4 is a fresh learner: it gets the snapshot, with the
     * configuration. */
    struct raft_message rej = append_resp(r, 4, false, conf, 0);
    rej.u.append_resp.last_index = 0;
    rej.u.append_resp.conflict_index = 1;
    CU_ASSERT_EQUAL(raft_step(r, &rej), 0);
    upd(r);
    const struct raft_message *sn = find_msg(RAFT_MSG_SNAPSHOT, 4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sn);
    struct raft_member m[RAFT_MAX_MEMBERS];
    size_t n = 0;
    CU_ASSERT_EQUAL(
        raft_conf_decode(sn->u.snapshot.conf, sn->u.snapshot.conf_len, m,
                         RAFT_MAX_MEMBERS, &n),
        0);
    CU_ASSERT_EQUAL(n, 4);
    /* The learner installs it and takes the configuration. */
    uint8_t copy[512];
    size_t clen = sn->u.snapshot.conf_len;
    CU_ASSERT_FATAL(clen <= sizeof copy);
    memcpy(copy, sn->u.snapshot.conf, clen);
    struct raft_message chunk = *sn;
    chunk.cookie = 5;
    chunk.u.snapshot.conf = copy;
    chunk.u.snapshot.data = "state";
    chunk.u.snapshot.len = 5;
    chunk.u.snapshot.done = true;
    chunk.u.snapshot.stream = 1;
    adv(r);
    struct raft_config c4 = cfg(4, 0);
    struct raft *f = start(&c4);
    CU_ASSERT_EQUAL_FATAL(raft_step(f, &chunk), 0);
    upd(f);
    CU_ASSERT(U.install && U.conf_changed);
    CU_ASSERT(U.install_conf_len == clen &&
              memcmp(U.install_conf, copy, clen) == 0);
    adv(f);
    CU_ASSERT_EQUAL(raft_members(f, NULL), 4);
    CU_ASSERT_FALSE(raft_is_voter(f, 4));
    raft_free(f);
    /* Without its configuration, a node that knows none refuses it. */
    f = start(&c4);
    chunk.u.snapshot.conf = NULL;
    chunk.u.snapshot.conf_len = 0;
    CU_ASSERT_EQUAL(raft_step(f, &chunk), RAFT_EINVAL);
    raft_free(f);
    raft_free(r);
}

static void test_member_restore_takes_the_persisted_configuration(void)
{
    struct raft_member m[2] = {{2, true, "b", 1}, {5, false, "e", 1}};
    void *blob;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(raft_conf_encode(m, 2, &blob, &len), 0);
    struct raft_config c = cfg(5, 0);
    struct raft *r = raft_new(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    struct raft_persisted p = {0};
    p.hs.term = 3;
    p.snap_index = 10;
    p.snap_term = 3;
    p.applied = 10;
    p.hs.commit = 10;
    p.conf = blob;
    p.conf_len = len;
    CU_ASSERT_EQUAL_FATAL(raft_restore(r, &p), 0);
    const struct raft_member *got;
    CU_ASSERT_EQUAL(raft_members(r, &got), 2);
    CU_ASSERT(got[1].id == 5 && !got[1].voter && got[1].ctx_len == 1);
    CU_ASSERT_FALSE(raft_is_voter(r, 5));
    raft_free(r);
    /* A damaged one is refused. */
    r = raft_new(&c);
    p.conf_len = len - 1;
    CU_ASSERT_EQUAL(raft_restore(r, &p), RAFT_EINVAL);
    raft_free(r);
    free(blob);
}

/* A core restored with configuration @m and log @es. */
static struct raft *start_with_conf(uint64_t id,
                                    const struct raft_member *m,
                                    size_t n,
                                    uint64_t term,
                                    const struct raft_entry *es,
                                    size_t n_es)
{
    struct raft_config c = cfg(id, 0);
    void *blob;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(raft_conf_encode(m, n, &blob, &len), 0);
    struct raft *r = raft_new(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    struct raft_persisted p = {0};
    p.hs.term = term;
    p.conf = blob;
    p.conf_len = len;
    p.entries = es;
    p.n_entries = n_es;
    CU_ASSERT_EQUAL_FATAL(raft_restore(r, &p), 0);
    free(blob);
    return r;
}

/* Found by the soak: a lone voter wins within one step, in a term it has
 * not written; its appends to learners must wait for that write (a crash
 * before it would let it lead the same term twice). */
static void test_member_lone_voter_sends_nothing_of_an_unwritten_term(void)
{
    struct raft_member m[2] = {{1, true, NULL, 0}, {2, false, NULL, 0}};
    struct raft *r = start_with_conf(1, m, 2, 0, NULL, 0);
    CU_ASSERT_EQUAL(raft_tick(r, 100000), 0);
    CU_ASSERT_EQUAL(raft_role(r), RAFT_LEADER);
    upd(r);
    CU_ASSERT(U.hs_changed && U.hs.term == 1);
    CU_ASSERT_EQUAL(U.n_early, 0);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_APPEND, 2), 1); /* after the write */
    adv(r);
    /* Once the term is on disk, appends may go early again. */
    ack(r, 2, 1, 0);
    CU_ASSERT_EQUAL(raft_propose(r, "x", 1, NULL, NULL, NULL), 0);
    upd(r);
    CU_ASSERT(U.n_early > 0);
    adv(r);
    raft_free(r);
}

static void test_member_node_knowing_no_configuration_does_not_vote(void)
{
    struct raft_config c = cfg(4, 0);
    struct raft *r = start(&c);
    struct raft_message v = {0};
    v.type = RAFT_MSG_VOTE;
    v.from = 1;
    v.to = 4;
    v.term = 5;
    v.cookie = 9;
    CU_ASSERT_EQUAL(raft_step(r, &v), 0);
    upd(r);
    const struct raft_message *resp = find_msg(RAFT_MSG_VOTE_RESP, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_FALSE(resp->u.vote_resp.granted);
    adv(r);
    raft_free(r);
    /* A learner that knows its configuration votes (it may be a voter
     * already without knowing it). */
    struct raft_member m[2] = {{1, true, NULL, 0}, {4, false, NULL, 0}};
    r = start_with_conf(4, m, 2, 0, NULL, 0);
    CU_ASSERT_EQUAL(raft_step(r, &v), 0);
    upd(r);
    resp = find_msg(RAFT_MSG_VOTE_RESP, 1);
    CU_ASSERT(resp != NULL && resp->u.vote_resp.granted);
    adv(r);
    raft_free(r);
}

/* Found by the soak: a leader appended its own removal, crashed before
 * anyone else had it, and came back: the others still count it, so it
 * must campaign (in force at its commit index it is a voter), win with
 * their votes and finish the change. */
static void test_member_leader_back_with_its_own_removal_campaigns(void)
{
    struct raft_member old[2] = {{1, true, NULL, 0}, {2, true, NULL, 0}};
    struct raft_member next[1] = {{1, true, NULL, 0}};
    void *blob;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(raft_conf_encode(next, 1, &blob, &len), 0);
    struct raft_entry es[2] = {{1, 1, RAFT_ENTRY_NOOP, NULL, 0},
                               {1, 2, RAFT_ENTRY_CONFIG, blob, len}};
    struct raft *r = start_with_conf(2, old, 2, 1, es, 2);
    free(blob);
    CU_ASSERT_FALSE(raft_is_voter(r, 2)); /* its latest configuration */
    CU_ASSERT_EQUAL(raft_tick(r, 100000), 0);
    upd(r);
    CU_ASSERT_EQUAL(count_msgs(RAFT_MSG_VOTE, 1), 1);
    adv(r);
    raft_free(r);
}

/* Found by test_membership: a one-node cluster, fresh (started with no
 * persisted state), leads; a second voter added at once and handed
 * leadership asks for its vote within the fresh node's first two election
 * timeouts. The fresh rule (vote only in a new cluster or after hearing
 * from a leader) must not refuse it: a node that led is in the live
 * cluster. */
static void test_member_fresh_leader_votes_for_its_successor(void)
{
    struct raft_config c = cfg(1, 1);
    c.start_ms = 0;
    struct raft *r = start(&c);
    CU_ASSERT_EQUAL(raft_tick(r, 399), 0); /* fresh until 2 x election_ms */
    CU_ASSERT_EQUAL(raft_role(r), RAFT_LEADER);
    flush(r);
    CU_ASSERT_EQUAL(
        raft_propose_change(
            r, &(struct raft_change){RAFT_CHANGE_ADD_LEARNER, 2, NULL, 0}, NULL,
            NULL),
        0);
    flush(r);
    ack(r, 2, raft_last_index(r), 0);
    CU_ASSERT_EQUAL(change(r, RAFT_CHANGE_PROMOTE, 2), 0);
    flush(r);
    ack(r, 2, raft_last_index(r), 0);
    flush(r);
    /* Node 2 campaigns (TimeoutNow) with the whole log. */
    struct raft_message v = {0};
    v.type = RAFT_MSG_VOTE;
    v.from = 2;
    v.to = 1;
    v.term = raft_term(r) + 1;
    v.cookie = 3;
    v.u.vote.transfer = true;
    v.u.vote.last_index = raft_last_index(r);
    CU_ASSERT_EQUAL(
        raft_entry_term(r, v.u.vote.last_index, &v.u.vote.last_term), 0);
    CU_ASSERT_EQUAL(raft_step(r, &v), 0); /* (still at 399 ms) */
    upd(r);
    const struct raft_message *resp = find_msg(RAFT_MSG_VOTE_RESP, 2);
    CU_ASSERT(resp != NULL && resp->u.vote_resp.granted);
    adv(r);
    raft_free(r);
}

static const struct test_case cases[] = {
    T(test_config_invalid_is_rejected),
    T(test_restore_rejects_gap_between_snapshot_and_log),
    T(test_election_timeout_is_randomized_per_seed),
    T(test_single_node_commits_only_after_own_persist),
    T(test_vote_is_persisted_before_its_response),
    T(test_fresh_node_votes_only_in_a_new_cluster_at_first),
    T(test_leader_appends_may_leave_before_the_write),
    T(test_calls_between_get_update_and_advance_are_refused),
    T(test_every_request_gets_one_response_with_its_cookie),
    T(test_step_rejects_malformed_messages),
    T(test_propose_to_follower_is_refused_with_leader_hint),
    T(test_figure8_old_term_entry_not_committed_by_counting),
    T(test_append_reject_carries_conflict_term_and_index),
    T(test_leader_skips_a_conflicting_term_in_one_step),
    T(test_pipeline_bounded_by_max_inflight_and_bytes),
    T(test_uncommitted_bytes_limit_refuses_proposals),
    T(test_pre_vote_does_not_change_terms),
    T(test_timeout_now_is_honoured_only_from_the_current_leader),
    T(test_append_of_empty_entries_is_bounded_in_count),
    T(test_lease_follower_ignores_elections_while_leader_is_heard),
    T(test_prevote_rejoining_node_does_not_disrupt_leader),
    T(test_check_quorum_isolated_leader_steps_down),
    T(test_read_index_waits_for_a_heartbeat_quorum),
    T(test_read_index_new_leader_waits_for_its_noop),
    T(test_read_fails_when_leadership_is_lost),
    T(test_transfer_refuses_proposals_then_times_out),
    T(test_transfer_moves_leadership_to_target),
    T(test_transfer_to_a_down_or_lagging_target),
    T(test_snapshot_taken_compacts_keeping_trailing_entries),
    T(test_snapshot_leader_asks_caller_for_chunks),
    T(test_snapshot_follower_validates_offsets_and_installs),
    T(test_snapshot_resent_first_chunk_does_not_restart),
    T(test_snapshot_lost_chunk_is_resent_and_restartable),
    T(test_report_unreachable_makes_the_leader_probe),
    T(test_term_forged_requests_beyond_the_bound_are_refused),
    T(test_term_forged_responses_beyond_the_bound_are_refused),
    T(test_term_far_jump_is_refused_and_raises_the_term_one_step),
    T(test_term_restore_refuses_terms_beyond_the_bound),
    T(test_term_node_at_the_bound_does_not_overflow),
    T(test_restore_after_a_crash_between_state_and_log_takes_the_snapshot_term),
    T(test_term_forged_messages_injected_into_a_running_cluster),
    T(test_snapshot_chunk_of_an_earlier_stream_is_never_staged),
    T(test_conf_encoding_round_trips_and_rejects_malformed),
    T(test_member_change_waits_for_the_leaders_first_commit),
    T(test_member_learner_gets_the_log_but_no_say),
    T(test_member_promoted_learner_counts_toward_commit),
    T(test_member_removed_leader_hands_off_and_steps_down),
    T(test_member_truncated_config_entry_gives_way),
    T(test_member_joining_node_campaigns_only_as_a_voter),
    T(test_member_snapshot_carries_the_configuration),
    T(test_member_restore_takes_the_persisted_configuration),
    T(test_member_lone_voter_sends_nothing_of_an_unwritten_term),
    T(test_member_node_knowing_no_configuration_does_not_vote),
    T(test_member_leader_back_with_its_own_removal_campaigns),
    T(test_member_fresh_leader_votes_for_its_successor),
};

int main(int argc, char **argv)
{
    return test_run(argc, argv, "raft_unit", cases,
                    sizeof cases / sizeof cases[0], 1);
}
