/* snapshot.c - chunked InstallSnapshot (Figure 13) and log compaction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Leader: ask the caller to send the chunk at pr->snap_offset of the
 * current snapshot; the core never holds snapshot bytes. */
int rf_send_snapshot(struct raft *r, struct raft_progress *pr)
{
    if (r->snap_index == 0 || r->snap_conf.n == 0) {
        return 0; /* (a joined node that took no snapshot of its own) */
    }
    if (pr->state != RAFT_PR_SNAPSHOT || pr->snap_index != r->snap_index) {
        pr->state = RAFT_PR_SNAPSHOT;
        pr->snap_index = r->snap_index;
        pr->snap_offset = 0;
        pr->snap_reported = 0;
        pr->snap_heard = true;
        pr->in_count = 0;
        pr->in_head = 0;
    }
    struct raft_message *m = rf_msg_new(r, true, RAFT_MSG_SNAPSHOT, pr->id);
    if (m == NULL) {
        return RAFT_ENOMEM;
    }
    m->u.snapshot.index = r->snap_index;
    m->u.snapshot.term = r->snap_term;
    m->u.snapshot.offset = pr->snap_offset;
    m->u.snapshot.max_len = r->chunk_bytes;
    m->u.snapshot.seq = r->seq;
    m->u.snapshot.conf = r->snap_conf.blob;
    m->u.snapshot.conf_len = r->snap_conf.len;
    return 0;
}

/* Replace the snapshot's configuration; the old encoding stays until the
 * next advance (messages handed out may point to it). */
static int set_snap_conf(struct raft *r, struct rf_conf *c)
{
    int rv = rf_bury(r, r->snap_conf.blob);
    if (rv != 0) {
        return rv;
    }
    rf_conf_init(&r->snap_conf);
    rf_conf_move(&r->snap_conf, c);
    return 0;
}

static int push_chunk(struct raft *r, const struct raft_snapshot *s)
{
    if (r->n_chunks == r->cap_chunks) {
        size_t cap = r->cap_chunks ? r->cap_chunks * 2 : 8;
        struct raft_snapshot_chunk *v = realloc(r->chunks, cap * sizeof *v);
        if (v == NULL) {
            return RAFT_ENOMEM;
        }
        r->chunks = v;
        r->cap_chunks = cap;
    }
    void *copy = NULL;
    if (s->len > 0) {
        copy = malloc(s->len);
        if (copy == NULL) {
            return RAFT_ENOMEM;
        }
        memcpy(copy, s->data, s->len);
    }
    struct raft_snapshot_chunk *c = &r->chunks[r->n_chunks++];
    c->index = s->index;
    c->term = s->term;
    c->stream = s->stream;
    c->offset = s->offset;
    c->data = copy;
    c->len = s->len;
    c->done = s->done;
    return 0;
}

/* Figure 13 steps 6-8: keep the log after the snapshot if it matches,
 * otherwise discard it; the state machine is replaced. */
static int install(struct raft *r,
                   uint64_t index,
                   uint64_t term,
                   const void *conf,
                   size_t conf_len)
{
    uint64_t t;
    int rv;
    /* Its configuration (a leader without membership sends none: the
     * bootstrap one is the only one it ever had). */
    struct rf_conf sc, base, latest;
    rf_conf_init(&sc);
    rf_conf_init(&base);
    rf_conf_init(&latest);
    if (conf_len == 0 && r->boot.n == 0) {
        snprintf(r->errmsg, sizeof r->errmsg,
                 "a snapshot without its configuration");
        return RAFT_EINVAL;
    }
    rv = conf_len > 0 ? rf_conf_set(&sc, conf, conf_len)
                      : rf_conf_copy(&sc, &r->boot);
    if (rv == 0) {
        rv = rf_conf_copy(&base, &sc);
    }
    if (rv == 0) {
        rv = rf_conf_copy(&latest, &sc);
    }
    if (rv == 0) {
        /* Room to bury the whole log and the old configuration, so that
         * nothing below fails halfway. */
        rv = rf_bury_reserve(r, r->log.n + 1);
    }
    if (rv != 0) {
        rf_conf_free(&sc);
        rf_conf_free(&base);
        rf_conf_free(&latest);
        return rv;
    }
    if (rf_log_term(&r->log, index, &t) && t == term) {
        rv = rf_log_compact(r, index);
    } else {
        rv = rf_log_reset(r, index, term);
        if (rv == 0) {
            r->truncate_from = index + 1;
            if (r->stable > index) {
                r->stable = index;
            }
        }
    }
    if (rv != 0) {
        rf_conf_free(&sc);
        rf_conf_free(&base);
        rf_conf_free(&latest);
        return rv;
    }
    /* The snapshot's configuration is the base; a later one in the log
     * kept after it stays the latest. */
    rf_conf_free(&r->base);
    rf_conf_move(&r->base, &base);
    set_snap_conf(r, &sc); /* (room reserved above) */
    uint64_t at = 0;
    for (uint64_t i = rf_log_last_index(&r->log); i > r->log.offset; i--) {
        if (rf_log_get(&r->log, i)->type == RAFT_ENTRY_CONFIG) {
            at = i;
            break;
        }
    }
    if (at == 0) {
        rf_conf_adopt(r, &latest, 0);
    } else {
        rf_conf_free(&latest);
        r->conf_index = at;
    }
    if (r->stable < index) {
        r->stable = index;
    }
    if (r->unstable < index + 1) {
        r->unstable = index + 1;
    }
    if (rf_log_last_index(&r->log) < r->unstable - 1) {
        r->unstable = rf_log_last_index(&r->log) + 1;
    }
    r->commit = index;
    r->applied = index;
    r->snap_index = index;
    r->snap_term = term;
    r->install = true;
    r->install_index = index;
    r->install_term = term;
    return 0;
}

/* Follower: InstallSnapshot receiver; m->term == term. */
int rf_step_snapshot(struct raft *r, const struct raft_message *m)
{
    const struct raft_snapshot *s = &m->u.snapshot;
    rf_heard_from_leader(r, m->from);
    struct raft_message *resp =
        rf_msg_new(r, false, RAFT_MSG_SNAPSHOT_RESP, m->from);
    if (resp == NULL) {
        return RAFT_ENOMEM;
    }
    struct raft_snapshot_resp *sr = &resp->u.snapshot_resp;
    resp->cookie = m->cookie;
    sr->index = s->index;
    sr->seq = s->seq;
    if (s->index <= r->commit) {
        /* Everything it holds is committed here already. */
        r->snap_in = false;
        sr->installed = true;
        sr->last_index = rf_log_last_index(&r->log);
        return 0;
    }
    /* A chunk at 0 begins a transfer, unless it is a resend of the first
     * chunk of the one being staged (the same production: a sender starts
     * anew only with a new stream, struct raft_snapshot), which must not
     * throw away what came after it; it is answered as a duplicate below.
     * Stream 0 names no production: such a chunk always begins anew. */
    bool resent = s->offset == 0 && s->stream != 0 && r->snap_in &&
                  r->snap_in_offset > 0 && r->snap_in_index == s->index &&
                  r->snap_in_term == s->term && r->snap_in_stream == s->stream;
    if (s->offset == 0 && !resent) {
        r->snap_in = true;
        r->snap_in_index = s->index;
        r->snap_in_term = s->term;
        r->snap_in_stream = s->stream;
        r->snap_in_offset = 0;
    }
    /* A chunk continues the staging area only if it is of the same
     * production of the snapshot's bytes (raft.h: struct raft_snapshot);
     * one of another stream is answered as an unknown transfer, so the
     * leader restarts from 0 if that stream is the one it now sends. */
    bool same = r->snap_in && r->snap_in_index == s->index &&
                r->snap_in_term == s->term && r->snap_in_stream == s->stream;
    if (!same || s->offset != r->snap_in_offset) {
        sr->next_offset = same ? r->snap_in_offset : 0;
        sr->last_index = rf_log_last_index(&r->log);
        return 0;
    }
    int rv = push_chunk(r, s);
    if (rv != 0) {
        r->late.n--;
        return rv;
    }
    r->snap_in_offset += s->len;
    sr->next_offset = r->snap_in_offset;
    if (s->done) {
        rv = install(r, s->index, s->term, s->conf, s->conf_len);
        if (rv != 0) {
            r->late.n--;
            return rv;
        }
        r->snap_in = false;
        sr->installed = true;
        sr->next_offset = 0;
    }
    sr->last_index = rf_log_last_index(&r->log);
    return 0;
}

/* Leader: a chunk was answered; send the next one or resume appends. */
int rf_step_snapshot_resp(struct raft *r, const struct raft_message *m)
{
    const struct raft_snapshot_resp *sr = &m->u.snapshot_resp;
    struct raft_progress *pr = rf_progress_of(r, m->from);
    if (r->role != RAFT_LEADER) {
        return 0;
    }
    pr->active = true;
    if (sr->seq > pr->ack_seq) {
        pr->ack_seq = sr->seq;
    }
    rf_reads_check(r);
    if (sr->installed) {
        if (sr->index > rf_log_last_index(&r->log)) {
            return RAFT_EINVAL;
        }
        if (sr->index > pr->match) {
            pr->match = sr->index;
        }
        if (pr->state == RAFT_PR_SNAPSHOT) {
            pr->state = RAFT_PR_PROBE;
            pr->probe_sent = false;
            pr->next = pr->match + 1;
        }
        rf_maybe_commit(r);
        int rv = rf_transfer_check(r, pr);
        if (rv != 0) {
            return rv;
        }
        return rf_send_append(r, pr, false);
    }
    if (pr->state != RAFT_PR_SNAPSHOT || sr->index != pr->snap_index) {
        return 0;
    }
    pr->snap_reported = sr->next_offset;
    if (sr->next_offset > pr->snap_offset) {
        pr->snap_offset = sr->next_offset;
        pr->snap_heard = true;
        return rf_send_snapshot(r, pr);
    }
    return 0;
}

int raft_snapshot_taken(struct raft *r, uint64_t index, uint64_t term)
{
    uint64_t t;
    if (r->busy) {
        return RAFT_EBUSY;
    }
    if (index <= r->snap_index) {
        return RAFT_ESTALE;
    }
    if (index > r->applied || !rf_log_term(&r->log, index, &t) || t != term) {
        return RAFT_EINVAL;
    }
    /* The configuration as of the snapshot goes with it to followers. */
    struct rf_conf sc;
    uint64_t at;
    rf_conf_init(&sc);
    int rv = rf_conf_as_of(r, index, &sc, &at);
    if (rv != 0) {
        return rv;
    }
    if (sc.n == 0) {
        /* A node that joined knows no configuration before the entry
         * that added it: no snapshot before it. */
        snprintf(r->errmsg, sizeof r->errmsg,
                 "no configuration known at index %llu",
                 (unsigned long long)index);
        return RAFT_EINVAL;
    }
    rv = rf_bury_reserve(r, r->log.n + 1); /* (see install) */
    if (rv == 0 && index > r->trailing) {
        rv = rf_log_compact(r, index - r->trailing);
    }
    if (rv != 0) {
        rf_conf_free(&sc);
        return rv;
    }
    set_snap_conf(r, &sc); /* (room reserved above) */
    r->snap_index = index;
    r->snap_term = term;
    return 0;
}
