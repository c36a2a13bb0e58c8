/* update.c - the Ready/Advance pair: hand out what to persist and send. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static bool hs_differs(const struct raft *r)
{
    return r->hs_saved.term != r->term || r->hs_saved.vote != r->vote ||
           r->hs_saved.commit != r->commit;
}

bool raft_has_update(const struct raft *r)
{
    if (r->busy) {
        return false;
    }
    return r->early.n > 0 || r->late.n > 0 || r->n_chunks > 0 || r->install ||
           r->truncate_from != 0 || r->unstable <= rf_log_last_index(&r->log) ||
           hs_differs(r) || r->applied < r->commit || r->n_done_reads > 0 ||
           r->role_dirty || r->conf_dirty ||
           (r->role == RAFT_LEADER && (r->broadcast_needed || r->round_needed));
}

/* Send what proposals and reads of this turn need: one batch per turn. */
static int flush(struct raft *r)
{
    int rv;
    if (r->role != RAFT_LEADER) {
        return 0;
    }
    if (r->round_needed) {
        rv = rf_heartbeat_round(r);
        if (rv != 0) {
            return rv;
        }
        r->round_needed = false;
    }
    if (r->broadcast_needed) {
        rv = rf_broadcast_append(r, false);
        if (rv != 0) {
            return rv;
        }
        r->broadcast_needed = false;
    }
    return 0;
}

static void take_msgs(struct raft_msgs *to, struct raft_msgs *from)
{
    *to = *from;
    memset(from, 0, sizeof *from);
}

int raft_get_update(struct raft *r, struct raft_update *u)
{
    if (r->busy) {
        return RAFT_EBUSY;
    }
    int rv = flush(r);
    if (rv != 0) {
        return rv;
    }
    struct raft_read *reads = NULL;
    if (r->n_done_reads > 0) {
        reads = malloc(r->n_done_reads * sizeof *reads);
        if (reads == NULL) {
            return RAFT_ENOMEM;
        }
        memcpy(reads, r->done_reads, r->n_done_reads * sizeof *reads);
    }
    memset(u, 0, sizeof *u);

    u->hs_changed = hs_differs(r);
    u->hs.term = r->term;
    u->hs.vote = r->vote;
    u->hs.commit = r->commit;
    r->hs_saved = u->hs;

    u->install = r->install;
    u->install_index = r->install_index;
    u->install_term = r->install_term;
    if (r->install) {
        u->install_conf = r->snap_conf.blob;
        u->install_conf_len = r->snap_conf.len;
    }
    u->conf_changed = r->conf_dirty;
    r->conf_dirty = false;
    r->out_install = r->install;
    r->install = false;

    u->chunks = r->chunks;
    u->n_chunks = r->n_chunks;
    r->out_chunks = r->chunks;
    r->n_out_chunks = r->n_chunks;
    r->chunks = NULL;
    r->n_chunks = r->cap_chunks = 0;

    u->truncate_from = r->truncate_from;
    r->truncate_from = 0;

    uint64_t last = rf_log_last_index(&r->log);
    r->upd_has_entries = false;
    if (r->unstable <= last) {
        u->entries = rf_log_get(&r->log, r->unstable);
        u->n_entries = last - r->unstable + 1;
        r->upd_has_entries = true;
        r->upd_last = last;
        r->unstable = last + 1;
    }

    take_msgs(&r->out_early, &r->early);
    take_msgs(&r->out_late, &r->late);
    u->early = r->out_early.v;
    u->n_early = r->out_early.n;
    u->messages = r->out_late.v;
    u->n_messages = r->out_late.n;

    /* Figure 2: "If commitIndex > lastApplied: increment lastApplied,
     * apply log[lastApplied] to state machine". */
    if (r->applied < r->commit) {
        u->committed = rf_log_get(&r->log, r->applied + 1);
        u->n_committed = r->commit - r->applied;
        r->applied = r->commit;
    }

    r->out_reads = reads;
    r->n_out_reads = r->n_done_reads;
    u->reads = reads;
    u->n_reads = r->n_done_reads;
    r->n_done_reads = 0;

    r->out_graveyard = r->graveyard;
    r->n_out_graveyard = r->n_graveyard;
    r->graveyard = NULL;
    r->n_graveyard = r->cap_graveyard = 0;

    u->role_changed = r->role_dirty;
    u->role = r->role;
    u->leader = r->leader;
    u->term = r->term;
    r->role_dirty = false;
    r->busy = true;
    return 0;
}

static void release_msgs(struct raft_msgs *q)
{
    for (size_t k = 0; k < q->n; k++) {
        if (q->v[k].type == RAFT_MSG_APPEND) {
            free((void *)q->v[k].u.append.entries);
        }
    }
    free(q->v);
    memset(q, 0, sizeof *q);
}

int raft_advance(struct raft *r, struct raft_update *u)
{
    if (!r->busy || u == NULL || u->messages != r->out_late.v ||
        u->early != r->out_early.v) {
        return RAFT_EINVAL;
    }
    r->durable_term = r->hs_saved.term; /* (written with this update) */
    if (r->upd_has_entries && r->upd_last > r->stable) {
        r->stable = r->upd_last;
    }
    release_msgs(&r->out_early);
    release_msgs(&r->out_late);
    for (size_t k = 0; k < r->n_out_chunks; k++) {
        free((void *)r->out_chunks[k].data);
    }
    free(r->out_chunks);
    r->out_chunks = NULL;
    r->n_out_chunks = 0;
    free(r->out_reads);
    r->out_reads = NULL;
    r->n_out_reads = 0;
    for (size_t k = 0; k < r->n_out_graveyard; k++) {
        free(r->out_graveyard[k]);
    }
    free(r->out_graveyard);
    r->out_graveyard = NULL;
    r->n_out_graveyard = 0;
    r->upd_has_entries = false;
    r->out_install = false;
    r->busy = false;
    memset(u, 0, sizeof *u);
    if (r->role == RAFT_LEADER) {
        /* The leader counts itself only for what is durable. */
        struct raft_progress *self = rf_progress_of(r, r->id);
        if (self != NULL) {
            self->match = r->stable;
        }
        rf_maybe_commit(r);
    }
    return 0;
}
