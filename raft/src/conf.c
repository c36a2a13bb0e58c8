/* conf.c - membership: configurations, their encoding, one change at a
 * time (raft.h: MEMBERSHIP). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The encoding: a version byte (1), the member count (2 bytes), then per
 * member its id (8 bytes), flags (1 byte: 1 = voter), context length (2
 * bytes) and context. Little-endian. */
#define CONF_VERSION 1
#define CONF_HEAD    3
#define MEMBER_HEAD  11

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int k = 0; k < 8; k++) {
        p[k] = (uint8_t)(v >> (8 * k));
    }
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) {
        v = (v << 8) | p[k];
    }
    return v;
}

/* A configuration the core accepts: members with distinct non-zero ids,
 * at least one voter, contexts within bounds. */
static int check_members(const struct raft_member *m, size_t n)
{
    if (n == 0 || n > RAFT_MAX_MEMBERS) {
        return RAFT_EINVAL;
    }
    size_t voters = 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i].id == 0 || m[i].ctx_len > RAFT_MAX_MEMBER_CTX ||
            (m[i].ctx_len > 0 && m[i].ctx == NULL)) {
            return RAFT_EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (m[j].id == m[i].id) {
                return RAFT_EINVAL;
            }
        }
        voters += m[i].voter;
    }
    return voters > 0 ? 0 : RAFT_EINVAL;
}

int raft_conf_encode(const struct raft_member *m,
                     size_t n,
                     void **out,
                     size_t *len)
{
    if (m == NULL || out == NULL || len == NULL || check_members(m, n) != 0) {
        return RAFT_EINVAL;
    }
    size_t size = CONF_HEAD;
    for (size_t i = 0; i < n; i++) {
        size += MEMBER_HEAD + m[i].ctx_len;
    }
    uint8_t *p = malloc(size);
    if (p == NULL) {
        return RAFT_ENOMEM;
    }
    p[0] = CONF_VERSION;
    put_u16(p + 1, (uint16_t)n);
    size_t at = CONF_HEAD;
    for (size_t i = 0; i < n; i++) {
        put_u64(p + at, m[i].id);
        p[at + 8] = m[i].voter ? 1 : 0;
        put_u16(p + at + 9, (uint16_t)m[i].ctx_len);
        if (m[i].ctx_len > 0) {
            memcpy(p + at + MEMBER_HEAD, m[i].ctx, m[i].ctx_len);
        }
        at += MEMBER_HEAD + m[i].ctx_len;
    }
    *out = p;
    *len = size;
    return 0;
}

int raft_conf_decode(const void *data,
                     size_t len,
                     struct raft_member *out,
                     size_t max,
                     size_t *n)
{
    const uint8_t *p = data;
    if (data == NULL || out == NULL || n == NULL || len < CONF_HEAD ||
        p[0] != CONF_VERSION) {
        return RAFT_EINVAL;
    }
    size_t count = get_u16(p + 1);
    if (count > max || count > RAFT_MAX_MEMBERS) {
        return RAFT_EINVAL;
    }
    size_t at = CONF_HEAD;
    for (size_t i = 0; i < count; i++) {
        if (len - at < MEMBER_HEAD) {
            return RAFT_EINVAL;
        }
        out[i].id = get_u64(p + at);
        if (p[at + 8] > 1) {
            return RAFT_EINVAL;
        }
        out[i].voter = p[at + 8] == 1;
        out[i].ctx_len = get_u16(p + at + 9);
        at += MEMBER_HEAD;
        if (len - at < out[i].ctx_len) {
            return RAFT_EINVAL;
        }
        out[i].ctx = out[i].ctx_len > 0 ? p + at : NULL;
        at += out[i].ctx_len;
    }
    if (at != len || check_members(out, count) != 0) {
        return RAFT_EINVAL;
    }
    *n = count;
    return 0;
}

void rf_conf_init(struct rf_conf *c)
{
    c->blob = NULL;
    c->len = 0;
    c->n = 0;
}

void rf_conf_free(struct rf_conf *c)
{
    free(c->blob);
    rf_conf_init(c);
}

/* Copy and decode @data (len 0: the empty configuration). On failure @c
 * is unchanged. */
int rf_conf_set(struct rf_conf *c, const void *data, size_t len)
{
    struct rf_conf tmp;
    rf_conf_init(&tmp);
    if (len > 0) {
        tmp.blob = malloc(len);
        if (tmp.blob == NULL) {
            return RAFT_ENOMEM;
        }
        memcpy(tmp.blob, data, len);
        tmp.len = len;
        if (raft_conf_decode(tmp.blob, len, tmp.m, RAFT_MAX_MEMBERS, &tmp.n) !=
            0) {
            free(tmp.blob);
            return RAFT_EINVAL;
        }
    }
    rf_conf_free(c);
    rf_conf_move(c, &tmp);
    return 0;
}

int rf_conf_copy(struct rf_conf *to, const struct rf_conf *from)
{
    return rf_conf_set(to, from->blob, from->len);
}

/* Move @from into @to (which must hold nothing); @from is left empty. */
void rf_conf_move(struct rf_conf *to, struct rf_conf *from)
{
    *to = *from; /* the members point into the blob, which moves along */
    rf_conf_init(from);
}

const struct raft_member *rf_conf_find(const struct rf_conf *c, uint64_t id)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->m[i].id == id) {
            return &c->m[i];
        }
    }
    return NULL;
}

/* The configuration as of @index (>= log.offset): the last configuration
 * entry at or before it in the log, else the base. @at: that entry's index
 * (0 for the base). */
int rf_conf_as_of(const struct raft *r,
                  uint64_t index,
                  struct rf_conf *out,
                  uint64_t *at)
{
    uint64_t last = rf_log_last_index(&r->log);
    if (index > last) {
        index = last;
    }
    for (uint64_t i = index; i > r->log.offset; i--) {
        const struct raft_entry *e = rf_log_get(&r->log, i);
        if (e->type == RAFT_ENTRY_CONFIG) {
            *at = i;
            return rf_conf_set(out, e->data, e->len);
        }
    }
    *at = 0;
    return rf_conf_copy(out, &r->base);
}

/* A fresh progress for a member the leader starts to track. */
static void progress_fresh(struct raft *r,
                           struct raft_progress *pr,
                           const struct raft_member *m,
                           uint64_t *ring)
{
    memset(pr, 0, sizeof *pr);
    pr->id = m->id;
    pr->voter = m->voter;
    pr->inflight = ring;
    pr->state = RAFT_PR_PROBE;
    pr->next = rf_log_last_index(&r->log) + 1;
    pr->match = m->id == r->id ? r->stable : 0;
    pr->active = m->id == r->id;
    pr->snap_heard = true;
}

/* Make the progress table follow r->conf: members that stay keep their
 * progress (and inflight ring), new ones start fresh, removed ones go. It
 * cannot fail: the table and the rings are allocated for
 * RAFT_MAX_MEMBERS. */
static void progress_sync(struct raft *r)
{
    struct raft_progress next[RAFT_MAX_MEMBERS];
    bool ring_used[RAFT_MAX_MEMBERS] = {false};
    bool is_new[RAFT_MAX_MEMBERS] = {false};
    const struct rf_conf *c = &r->conf;
    for (size_t i = 0; i < c->n; i++) {
        struct raft_progress *old = rf_progress_of(r, c->m[i].id);
        if (old != NULL) {
            next[i] = *old;
            next[i].voter = c->m[i].voter;
            ring_used[(size_t)(old->inflight - r->rings) / r->max_inflight] =
                true;
        } else {
            is_new[i] = true;
        }
    }
    size_t free_ring = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!is_new[i]) {
            continue;
        }
        while (ring_used[free_ring]) {
            free_ring++;
        }
        ring_used[free_ring] = true;
        progress_fresh(r, &next[i], &c->m[i],
                       r->rings + free_ring * r->max_inflight);
    }
    memcpy(r->prs, next, c->n * sizeof *next);
    r->n_prs = c->n;
}

/* @c (made at entry @at, 0: the base) becomes the latest configuration. */
void rf_conf_adopt(struct raft *r, struct rf_conf *c, uint64_t at)
{
    rf_conf_free(&r->conf);
    rf_conf_move(&r->conf, c);
    r->conf_index = at;
    r->conf_dirty = true;
    progress_sync(r);
}

bool rf_is_voter(const struct raft *r, uint64_t id)
{
    const struct raft_member *m = rf_conf_find(&r->conf, id);
    return m != NULL && m->voter;
}

/* May this node campaign? When it is a voter in its latest
 * configuration, or in the one in force at its commit index: a leader
 * that appended its own removal and crashed before anyone else had it
 * must still be able to win and finish, or the others, whose
 * configuration still counts it, could never elect anyone. (Voting is
 * another matter: every node that knows a configuration votes, learners
 * included, as the thesis has it (4.1): a learner whose promotion it has
 * not heard of yet may be needed for a majority.) */
bool rf_may_campaign(const struct raft *r)
{
    if (rf_is_voter(r, r->id)) {
        return true;
    }
    if (r->conf_index <= r->commit) {
        return false; /* the latest is the committed one */
    }
    uint64_t i = r->commit < rf_log_last_index(&r->log)
                     ? r->commit
                     : rf_log_last_index(&r->log);
    for (; i > r->log.offset; i--) {
        const struct raft_entry *e = rf_log_get(&r->log, i);
        if (e->type != RAFT_ENTRY_CONFIG) {
            continue;
        }
        struct raft_member m[RAFT_MAX_MEMBERS];
        size_t n = 0;
        if (raft_conf_decode(e->data, e->len, m, RAFT_MAX_MEMBERS, &n) != 0) {
            return false;
        }
        for (size_t k = 0; k < n; k++) {
            if (m[k].id == r->id) {
                return m[k].voter;
            }
        }
        return false;
    }
    const struct raft_member *b = rf_conf_find(&r->base, r->id);
    return b != NULL && b->voter;
}

size_t rf_n_voters(const struct raft *r)
{
    size_t n = 0;
    for (size_t k = 0; k < r->n_prs; k++) {
        n += r->prs[k].voter;
    }
    return n;
}

/* A leader whose removal is committed: tell the others the commit, hand
 * leadership to the most up-to-date voter, and step down. */
int rf_step_down_removed(struct raft *r)
{
    int rv = rf_heartbeat_round(r);
    uint64_t last = rf_log_last_index(&r->log);
    struct raft_progress *best = NULL;
    for (size_t k = 0; k < r->n_prs; k++) {
        struct raft_progress *pr = &r->prs[k];
        if (pr->voter && pr->id != r->id &&
            (best == NULL || pr->match > best->match)) {
            best = pr;
        }
    }
    if (rv == 0 && best != NULL && best->match == last) {
        if (rf_msg_new(r, false, RAFT_MSG_TIMEOUT_NOW, best->id) == NULL) {
            rv = RAFT_ENOMEM;
        }
    }
    rf_become_follower(r, r->term, 0);
    return rv;
}

static int change_fail(struct raft *r, int rv, const char *why)
{
    snprintf(r->errmsg, sizeof r->errmsg, "membership change: %s", why);
    return rv;
}

int raft_propose_change(struct raft *r,
                        const struct raft_change *c,
                        uint64_t *index,
                        uint64_t *leader_hint)
{
    int gate = rf_may_propose(r, leader_hint);
    if (gate != 0) {
        return gate;
    }
    if (c == NULL || c->id == 0 || c->ctx_len > RAFT_MAX_MEMBER_CTX ||
        (c->ctx_len > 0 && c->ctx == NULL)) {
        return change_fail(r, RAFT_EINVAL, "bad arguments");
    }
    if (r->conf_index > r->commit) {
        return change_fail(r, RAFT_ECHANGE,
                           "the previous change is not committed yet");
    }
    if (r->commit < r->term_start) {
        return change_fail(r, RAFT_ECHANGE,
                           "the leader has not committed an entry of its "
                           "term yet");
    }
    struct raft_member m[RAFT_MAX_MEMBERS + 1];
    size_t n = r->conf.n;
    memcpy(m, r->conf.m, n * sizeof *m);
    size_t at = n;
    for (size_t i = 0; i < n; i++) {
        if (m[i].id == c->id) {
            at = i;
        }
    }
    switch (c->type) {
        case RAFT_CHANGE_ADD_LEARNER:
            if (at < n) {
                return change_fail(r, RAFT_EINVAL, "already a member");
            }
            if (n == RAFT_MAX_MEMBERS) {
                return change_fail(r, RAFT_EINVAL, "too many members");
            }
            m[n].id = c->id;
            m[n].voter = false;
            m[n].ctx = c->ctx;
            m[n].ctx_len = c->ctx_len;
            n++;
            break;
        case RAFT_CHANGE_PROMOTE:
            if (at == n || m[at].voter) {
                return change_fail(r, RAFT_EINVAL, "not a learner");
            }
            /* It must hold the configuration that made it a learner, or
             * it could be needed for a majority while it knows none (and
             * does not vote). */
            {
                struct raft_progress *pr = rf_progress_of(r, c->id);
                uint64_t need = r->conf_index > r->snap_index ? r->conf_index
                                                              : r->snap_index;
                if (pr == NULL || pr->match == 0 || pr->match < need) {
                    return change_fail(r, RAFT_ECHANGE,
                                       "the learner has not caught up");
                }
            }
            m[at].voter = true;
            if (c->ctx_len > 0) {
                m[at].ctx = c->ctx;
                m[at].ctx_len = c->ctx_len;
            }
            break;
        case RAFT_CHANGE_REMOVE:
            if (at == n) {
                return change_fail(r, RAFT_EINVAL, "not a member");
            }
            if (m[at].voter && rf_n_voters(r) == 1) {
                return change_fail(r, RAFT_EINVAL, "the last voter");
            }
            memmove(m + at, m + at + 1, (n - at - 1) * sizeof *m);
            n--;
            break;
        case RAFT_CHANGE_UPDATE:
            if (at == n) {
                return change_fail(r, RAFT_EINVAL, "not a member");
            }
            m[at].ctx = c->ctx;
            m[at].ctx_len = c->ctx_len;
            break;
        default:
            return change_fail(r, RAFT_EINVAL, "unknown change");
    }
    void *blob;
    size_t len;
    int rv = raft_conf_encode(m, n, &blob, &len);
    if (rv != 0) {
        return rv;
    }
    rv = rf_log_append(r, r->term, RAFT_ENTRY_CONFIG, blob, len);
    free(blob);
    if (rv != 0) {
        return rv;
    }
    r->broadcast_needed = true;
    if (index != NULL) {
        *index = rf_log_last_index(&r->log);
    }
    return 0;
}

size_t raft_members(const struct raft *r, const struct raft_member **out)
{
    if (out != NULL) {
        *out = r->conf.m;
    }
    return r->conf.n;
}

uint64_t raft_conf_index(const struct raft *r)
{
    return r->conf_index;
}

bool raft_is_voter(const struct raft *r, uint64_t id)
{
    return rf_is_voter(r, id);
}
