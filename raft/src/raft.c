/* raft.c - creating, restoring and freeing a core; getters and helpers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* splitmix64: small, seedable, good enough for timeouts. */
uint64_t rf_random(struct raft *r)
{
    uint64_t z = (r->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

struct raft_progress *rf_progress_of(struct raft *r, uint64_t id)
{
    for (size_t k = 0; k < r->n_prs; k++) {
        if (r->prs[k].id == id) {
            return &r->prs[k];
        }
    }
    return NULL;
}

/* A majority of the voters of the latest configuration. */
size_t rf_quorum_size(const struct raft *r)
{
    return rf_n_voters(r) / 2 + 1;
}

void rf_hint_leader(const struct raft *r, uint64_t *hint)
{
    if (hint != NULL) {
        *hint = r->leader;
    }
}

/* Queue a zeroed message; NULL when memory is short. */
struct raft_message *rf_msg_new(struct raft *r,
                                bool early,
                                enum raft_msg_type t,
                                uint64_t to)
{
    /* A message may leave before the write only if its term is on disk
     * already: a lone voter elected within one step sends its first
     * appends in a term it has not written yet, and must not (a crash
     * then lets it lead that term a second time). */
    struct raft_msgs *q =
        early && r->term == r->durable_term ? &r->early : &r->late;
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        struct raft_message *v = realloc(q->v, cap * sizeof *v);
        if (v == NULL) {
            return NULL;
        }
        q->v = v;
        q->cap = cap;
    }
    struct raft_message *m = &q->v[q->n++];
    memset(m, 0, sizeof *m);
    m->type = t;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

/* The bootstrap configuration of @cfg, encoded (NULL, 0: none). */
static int boot_encode(const struct raft_config *cfg, void **blob, size_t *len)
{
    *blob = NULL;
    *len = 0;
    if (cfg->n_members > 0) {
        return raft_conf_encode(cfg->members, cfg->n_members, blob, len);
    }
    if (cfg->n_voters == 0) {
        return 0;
    }
    if (cfg->voters == NULL || cfg->n_voters > RAFT_MAX_MEMBERS) {
        return RAFT_EINVAL;
    }
    struct raft_member m[RAFT_MAX_MEMBERS];
    for (size_t i = 0; i < cfg->n_voters; i++) {
        m[i] = (struct raft_member){.id = cfg->voters[i], .voter = true};
    }
    return raft_conf_encode(m, cfg->n_voters, blob, len);
}

int raft_config_check(const struct raft_config *cfg)
{
    if (cfg == NULL || cfg->id == 0 || cfg->heartbeat_ms == 0 ||
        cfg->election_ms <= cfg->heartbeat_ms || cfg->max_inflight == 0 ||
        cfg->max_append_bytes == 0 || cfg->snapshot_chunk_bytes == 0 ||
        (cfg->n_voters > 0 && cfg->voters == NULL) ||
        (cfg->n_members > 0 && cfg->members == NULL)) {
        return RAFT_EINVAL;
    }
    void *blob;
    size_t len;
    int rv = boot_encode(cfg, &blob, &len);
    if (rv != 0) {
        return rv == RAFT_ENOMEM ? 0 : RAFT_EINVAL; /* (checked again) */
    }
    bool ok = true;
    if (len > 0) {
        /* A bootstrap configuration names this node as a voter. */
        struct raft_member m[RAFT_MAX_MEMBERS];
        size_t n = 0;
        ok = raft_conf_decode(blob, len, m, RAFT_MAX_MEMBERS, &n) == 0;
        bool self = false;
        for (size_t i = 0; ok && i < n; i++) {
            self |= m[i].id == cfg->id && m[i].voter;
        }
        ok = ok && self;
    }
    free(blob);
    return ok ? 0 : RAFT_EINVAL;
}

struct raft *raft_new(const struct raft_config *cfg)
{
    if (raft_config_check(cfg) != 0) {
        return NULL;
    }
    struct raft *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return NULL;
    }
    r->fresh = true;
    r->fresh_until = cfg->start_ms + 2 * (uint64_t)cfg->election_ms;
    rf_conf_init(&r->boot);
    rf_conf_init(&r->conf);
    rf_conf_init(&r->base);
    rf_conf_init(&r->snap_conf);
    r->prs = calloc(RAFT_MAX_MEMBERS, sizeof *r->prs);
    r->rings =
        calloc((size_t)RAFT_MAX_MEMBERS * cfg->max_inflight, sizeof *r->rings);
    if (r->prs == NULL || r->rings == NULL) {
        goto err_free;
    }
    r->id = cfg->id;
    r->heartbeat_ms = cfg->heartbeat_ms;
    r->election_ms = cfg->election_ms;
    r->pre_vote = cfg->pre_vote;
    r->check_quorum = cfg->check_quorum;
    r->max_append_bytes = cfg->max_append_bytes;
    r->max_inflight = cfg->max_inflight;
    r->max_uncommitted_bytes = cfg->max_uncommitted_bytes;
    r->chunk_bytes = cfg->snapshot_chunk_bytes;
    r->trailing = cfg->snapshot_trailing;
    r->rng = cfg->seed ^ (cfg->id * 0x2545f4914f6cdd1dULL);
    r->now = cfg->start_ms;
    r->role = RAFT_FOLLOWER;
    r->unstable = 1;
    void *blob;
    size_t len;
    if (boot_encode(cfg, &blob, &len) != 0) {
        goto err_free;
    }
    struct rf_conf c;
    rf_conf_init(&c);
    int rv = rf_conf_set(&r->boot, blob, len);
    free(blob);
    if (rv != 0 || rf_conf_copy(&r->base, &r->boot) != 0 ||
        rf_conf_copy(&r->snap_conf, &r->boot) != 0 ||
        rf_conf_copy(&c, &r->boot) != 0) {
        goto err_free;
    }
    rf_conf_adopt(r, &c, 0);
    r->conf_dirty = false;
    rf_reset_election_timer(r);
    return r;

err_free:
    raft_free(r);
    return NULL;
}

static void free_msgs(struct raft_msgs *q)
{
    for (size_t k = 0; k < q->n; k++) {
        if (q->v[k].type == RAFT_MSG_APPEND) {
            free((void *)q->v[k].u.append.entries);
        }
    }
    free(q->v);
    q->v = NULL;
    q->n = q->cap = 0;
}

static void free_chunks(struct raft_snapshot_chunk *c, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        free((void *)c[k].data);
    }
    free(c);
}

static void free_buffers(void **v, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        free(v[k]);
    }
    free(v);
}

void raft_free(struct raft *r)
{
    if (r == NULL) {
        return;
    }
    free_msgs(&r->early);
    free_msgs(&r->late);
    free_msgs(&r->out_early);
    free_msgs(&r->out_late);
    free_chunks(r->chunks, r->n_chunks);
    free_chunks(r->out_chunks, r->n_out_chunks);
    free(r->done_reads);
    free(r->out_reads);
    free(r->reads);
    free_buffers(r->graveyard, r->n_graveyard);
    free_buffers(r->out_graveyard, r->n_out_graveyard);
    rf_log_free(&r->log);
    rf_conf_free(&r->boot);
    rf_conf_free(&r->conf);
    rf_conf_free(&r->base);
    rf_conf_free(&r->snap_conf);
    free(r->rings);
    free(r->prs);
    free(r);
}

static int restore_fail(struct raft *r, const char *why)
{
    snprintf(r->errmsg, sizeof r->errmsg, "restore: %s", why);
    return RAFT_EINVAL;
}

static int restore_term_fail(struct raft *r, const char *what, uint64_t term)
{
    snprintf(r->errmsg, sizeof r->errmsg,
             "restore: %s term %llu is above RAFT_TERM_MAX and cannot be "
             "real: the stored data is damaged",
             what, (unsigned long long)term);
    return RAFT_EINVAL;
}

int raft_restore(struct raft *r, const struct raft_persisted *p)
{
    if (p == NULL || r->log.n != 0 || r->log.offset != 0) {
        return RAFT_EINVAL;
    }
    if (p->snap_index > 0 && p->snap_term == 0) {
        return restore_fail(r, "snapshot without a term");
    }
    /* raft.h: RAFT_TERM_MAX. No real cluster gets there. */
    if (p->hs.term > RAFT_TERM_MAX) {
        return restore_term_fail(r, "hard state", p->hs.term);
    }
    if (p->snap_term > RAFT_TERM_MAX) {
        return restore_term_fail(r, "snapshot", p->snap_term);
    }
    for (size_t k = 0; k < p->n_entries; k++) {
        if (p->entries[k].term > RAFT_TERM_MAX) {
            return restore_term_fail(r, "stored entry", p->entries[k].term);
        }
    }
    if (p->conf_len > 0 || p->conf != NULL) {
        struct rf_conf c;
        rf_conf_init(&c);
        int rv = p->conf_len > 0 ? rf_conf_set(&c, p->conf, p->conf_len)
                                 : RAFT_EINVAL;
        if (rv == RAFT_ENOMEM) {
            return rv;
        }
        if (rv != 0) {
            return restore_fail(r, "malformed configuration");
        }
        if (rf_conf_copy(&r->base, &c) != 0 ||
            rf_conf_copy(&r->snap_conf, &c) != 0) {
            rf_conf_free(&c);
            return RAFT_ENOMEM;
        }
        rf_conf_adopt(r, &c, 0);
    }
    r->log.offset = p->snap_index;
    r->log.offset_term = p->snap_term;
    uint64_t expect = 0;
    for (size_t k = 0; k < p->n_entries; k++) {
        const struct raft_entry *e = &p->entries[k];
        if (k > 0 && e->index != expect) {
            return restore_fail(r, "stored entries are not consecutive");
        }
        expect = e->index + 1;
        if (e->term == 0 || (e->len > 0 && e->data == NULL) ||
            (e->type != RAFT_ENTRY_NORMAL && e->type != RAFT_ENTRY_NOOP &&
             e->type != RAFT_ENTRY_CONFIG)) {
            return restore_fail(r, "malformed stored entry");
        }
        if (k > 0 && e->term < p->entries[k - 1].term) {
            return restore_fail(r, "stored entry terms go back");
        }
        if (e->index < p->snap_index) {
            continue;
        }
        if (e->index == p->snap_index) {
            if (e->term != p->snap_term) {
                return restore_fail(r, "stored entry conflicts with snapshot");
            }
            continue;
        }
        if (e->index != rf_log_last_index(&r->log) + 1) {
            return restore_fail(r, "gap between snapshot and stored log");
        }
        if (e->term < rf_log_last_term(&r->log)) {
            return restore_fail(r, "stored entry terms go back");
        }
        int rv = rf_log_append(r, e->term, e->type, e->data, e->len);
        if (rv == RAFT_EINVAL) {
            return restore_fail(r, "malformed stored configuration entry");
        }
        if (rv != 0) {
            return rv;
        }
    }
    uint64_t last = rf_log_last_index(&r->log);
    uint64_t commit = p->hs.commit;
    if (commit < p->snap_index) {
        commit = p->snap_index;
    }
    if (commit > last) {
        return restore_fail(r, "commit index beyond the stored log");
    }
    if (p->applied < p->snap_index || p->applied > commit) {
        return restore_fail(r, "applied index outside [snapshot, commit]");
    }
    /* A node that writes its state machine (snapshot, applied entries)
     * before its log and hard state, as kvserver does, may crash between
     * the two and come back with a snapshot of a term its hard state never
     * reached. It takes that term, with no vote: it gave none in it, since
     * a vote is on disk before it is sent. The next update writes it. */
    uint64_t term = p->hs.term;
    uint64_t vote = p->hs.vote;
    if (p->snap_term > term) {
        term = p->snap_term;
        vote = 0;
    }
    if (rf_log_last_term(&r->log) > term) {
        return restore_fail(r, "log has a term beyond the current term");
    }
    r->term = term;
    r->vote = vote;
    r->fresh = p->hs.term == 0 && p->snap_index == 0 && p->n_entries == 0;
    r->commit = commit;
    r->applied = p->applied;
    r->snap_index = p->snap_index;
    r->snap_term = p->snap_term;
    r->stable = last;
    r->unstable = last + 1;
    r->hs_saved.term = p->hs.term;
    r->hs_saved.vote = p->hs.vote;
    r->hs_saved.commit = r->commit;
    r->durable_term = p->hs.term;
    r->conf_dirty = false;
    return 0;
}

uint64_t raft_id(const struct raft *r)
{
    return r->id;
}

enum raft_role raft_role(const struct raft *r)
{
    return r->role;
}

uint64_t raft_term(const struct raft *r)
{
    return r->term;
}

uint64_t raft_leader(const struct raft *r)
{
    return r->leader;
}

uint64_t raft_commit_index(const struct raft *r)
{
    return r->commit;
}

uint64_t raft_applied_index(const struct raft *r)
{
    return r->applied;
}

uint64_t raft_last_index(const struct raft *r)
{
    return rf_log_last_index(&r->log);
}

uint64_t raft_first_index(const struct raft *r)
{
    return r->log.offset + 1;
}

uint64_t raft_snapshot_index(const struct raft *r)
{
    return r->snap_index;
}

int raft_peer_info(const struct raft *r,
                   uint64_t id,
                   struct raft_peer_info *out)
{
    if (r->role != RAFT_LEADER) {
        return RAFT_NOTLEADER;
    }
    for (size_t k = 0; k < r->n_prs; k++) {
        const struct raft_progress *pr = &r->prs[k];
        if (pr->id == id) {
            out->match = id == r->id ? r->stable : pr->match;
            out->rounds_unacked =
                id == r->id || pr->ack_seq >= r->seq ? 0 : r->seq - pr->ack_seq;
            return 0;
        }
    }
    return RAFT_EINVAL;
}

int raft_entry_term(const struct raft *r, uint64_t index, uint64_t *term)
{
    if (index < r->log.offset) {
        return RAFT_ECOMPACTED;
    }
    return rf_log_term(&r->log, index, term) ? 0 : RAFT_EINVAL;
}

const struct raft_entry *raft_entry_at(const struct raft *r, uint64_t index)
{
    return rf_log_get(&r->log, index);
}

const char *raft_strerror(int code)
{
    switch (code) {
        case RAFT_OK:
            return "success";
        case RAFT_ENOMEM:
            return "out of memory";
        case RAFT_EINVAL:
            return "invalid argument";
        case RAFT_NOTLEADER:
            return "not the leader";
        case RAFT_ETRANSFER:
            return "leadership transfer in progress";
        case RAFT_EFULL:
            return "too many uncommitted bytes";
        case RAFT_EBUSY:
            return "an update is outstanding";
        case RAFT_ECOMPACTED:
            return "index compacted";
        case RAFT_ESTALE:
            return "stale index or term";
        default:
            return "unknown error";
    }
}

const char *raft_errmsg(const struct raft *r)
{
    return r->errmsg;
}

const char *raft_role_name(enum raft_role role)
{
    switch (role) {
        case RAFT_FOLLOWER:
            return "follower";
        case RAFT_PRECANDIDATE:
            return "pre-candidate";
        case RAFT_CANDIDATE:
            return "candidate";
        case RAFT_LEADER:
            return "leader";
    }
    return "unknown";
}
