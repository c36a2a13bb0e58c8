/* persist.c: what a node keeps on disk, and in which order.
 *
 * The Raft log and hard state go to the write-ahead log (wal.c): one
 * append and one fdatasync per loop turn, before the node tells anyone the
 * entries are stored. The state machine lives in LMDB (store.c) at its
 * applied index, written by a transaction that stays open across turns
 * and commits every --state-commit-ms, or sooner when it grows large: the
 * log already holds every committed entry, so after a crash the node
 * replays whatever the last state commit did not include. Reads see the
 * open transaction. Before the log is compacted, the state it replaces is
 * committed with a full sync.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "node.h"

#define STATE_MAX_OPS   20000          /* commit the state after this many */
#define STATE_MAX_BYTES (32u << 20)    /* or this many bytes of entries */
#define MAP_HEADROOM    (128ull << 20) /* free map kept for one transaction */
#define STATE_HASTEN_MS 100 /* commits while a compaction waits for one */

/* Remember one applied client entry's outcome for this turn's replies. */
static int note_applied(struct kv_node *n,
                        const struct raft_entry *e,
                        int op,
                        struct kv_outcome *o)
{
    if (n->n_done == n->cap_done) {
        size_t cap = n->cap_done ? n->cap_done * 2 : 64;
        struct kv_applied *d = realloc(n->done, cap * sizeof *d);
        if (!d) {
            return KV_STORE_ENOMEM;
        }
        n->done = d;
        n->cap_done = cap;
    }
    struct kv_applied *a = &n->done[n->n_done++];
    a->index = e->index;
    a->term = e->term;
    a->op = op;
    a->outcome = *o;
    return 0;
}

void node_clear_applied(struct kv_node *n)
{
    for (size_t i = 0; i < n->n_done; i++) {
        kv_outcome_clear(&n->done[i].outcome);
    }
    n->n_done = 0;
}

/* Which client op an entry holds (for replies), without keeping it. */
static int entry_op(const struct raft_entry *e)
{
    Raftkv__Command *c = raftkv__command__unpack(NULL, e->len, e->data);
    int op = c ? (int)c->op_case : 0;
    if (c) {
        raftkv__command__free_unpacked(c, NULL);
    }
    return op;
}

/* Grow the map until a transaction's worth of writes fits. Needs every
 * transaction closed: call with no state transaction open. */
static int ensure_headroom(struct kv_node *n)
{
    struct kv_store *st = &n->store;
    MDB_envinfo info;
    MDB_stat stat;
    if (mdb_env_info(st->env, &info) != 0 || mdb_env_stat(st->env, &stat)) {
        return 0;
    }
    uint64_t used = ((uint64_t)info.me_last_pgno + 1) * stat.ms_psize;
    while (used + MAP_HEADROOM > st->map_size) {
        peer_close_streams(n);
        node_publish(n, NODE_EV_RELEASE_READERS);
        int rv = kv_store_grow(st);
        if (rv) {
            return rv;
        }
        rpc_logf(RPC_LOG_INFO, "node %llu: LMDB map grown to %zu MiB",
                 (unsigned long long)n->cfg.id, st->map_size >> 20);
    }
    return 0;
}

/* Open the state transaction, if none is. */
static int state_open(struct kv_node *n)
{
    if (n->state_txn) {
        return 0;
    }
    int rv = ensure_headroom(n);
    if (rv) {
        return rv;
    }
    int rc = mdb_txn_begin(n->store.env, NULL, 0, &n->state_txn);
    if (rc) {
        n->state_txn = NULL;
        return kv_store_fail(&n->store, rc, "begin write");
    }
    n->state_ops = 0;
    n->state_bytes = 0;
    struct timeval tv = {(time_t)(n->cfg.state_commit_ms / 1000),
                         (suseconds_t)(n->cfg.state_commit_ms % 1000) * 1000};
    evtimer_add(n->state_ev, &tv);
    return 0;
}

/* Drop the state transaction: what it applied is applied again later from
 * the log, which the core still holds in memory past the last commit. */
static void state_abort(struct kv_node *n)
{
    if (n->state_txn) {
        mdb_txn_abort(n->state_txn);
        n->state_txn = NULL;
    }
    event_del(n->state_ev);
    node_clear_applied(n);
    n->applied = n->durable_applied;
    n->applied_term = n->durable_term;
    n->auth_gen++; /* auth changes applied since may be gone */
    kv_lease_counts_forget(&n->store); /* and keys attached to leases */
}

MDB_txn *node_state_read(struct kv_node *n, int *rc)
{
    int r = 0;
    MDB_txn *txn = n->state_txn;
    if (!txn && (r = mdb_txn_begin(n->store.env, NULL, MDB_RDONLY, &txn))) {
        txn = NULL;
    }
    if (rc) {
        *rc = r;
    }
    return txn;
}

void node_state_done(struct kv_node *n, MDB_txn *txn)
{
    if (txn && txn != n->state_txn) {
        mdb_txn_abort(txn);
    }
}

/* The state at @index is on disk for good (what a compaction may rely
 * on). */
static void state_set_synced(struct kv_node *n, uint64_t index, uint64_t term)
{
    if (index > n->synced_applied) {
        n->synced_applied = index;
        n->synced_term = term;
    }
}

int node_state_commit(struct kv_node *n, bool full)
{
    struct kv_store *st = &n->store;
    if (!n->state_txn && full && !n->meta_vouchable) {
        /* The last commit's meta page may have been lost to a failed
         * flush, which no later flush saves: commit again (the same
         * applied index) to write a new one. */
        int rv = state_open(n);
        if (!rv) {
            rv = kv_store_put_meta(st, n->state_txn, "applied", n->applied);
        }
        if (rv) {
            state_abort(n);
            return rv;
        }
    }
    if (!n->state_txn) {
        if (full && !n->state_synced) {
            /* The last commit left its meta page unsynced. */
            int rc = mdb_env_sync(st->env, 1);
            if (rc) {
                /* The pages it did not write are lost, that meta page
                 * too (fsyncgate): no later flush vouches for it. */
                n->meta_vouchable = false;
                return kv_store_fail(st, rc, "sync");
            }
            n->state_synced = true;
        }
        if (full) {
            state_set_synced(n, n->durable_applied, n->durable_term);
            n->meta_vouchable = true;
        }
        return 0;
    }
    /* LMDB commits with two flushes: the data pages, then the meta page.
     * MDB_NOMETASYNC leaves the meta page to the next commit's flush: the
     * database stays intact, but a machine crash may undo this commit,
     * which the log replays. A full sync is for what the log no longer
     * holds: a compaction or a received snapshot. */
    if (full == n->meta_async) {
        mdb_env_set_flags(st->env, MDB_NOMETASYNC, full ? 0 : 1);
        n->meta_async = !full;
    }
    event_del(n->state_ev);
    /* A commit that applied something wrote its meta record, so LMDB
     * flushes its data pages: that flush also puts the previous commit's
     * meta page on disk for good (an empty commit flushes nothing) -
     * unless a flush failed after that page was written: the kernel may
     * have dropped it, and a later flush does not write it again. */
    bool wrote = n->applied != n->durable_applied;
    bool vouch = wrote && n->meta_vouchable;
    uint64_t prev = n->durable_applied, prev_term = n->durable_term;
    double t0 = kv_seconds();
    int rc = mdb_txn_commit(n->state_txn);
    n->state_txn = NULL;
    kv_hist_observe(&n->metrics.state_commit, kv_seconds() - t0);
    if (rc) {
        int rv = kv_store_fail(st, rc, "commit (fsync)");
        n->meta_vouchable = false;
        state_abort(n);
        return rv;
    }
    n->durable_applied = n->applied;
    n->durable_term = n->applied_term;
    if (full) {
        state_set_synced(n, n->applied, n->applied_term);
    } else if (vouch) {
        state_set_synced(n, prev, prev_term);
    }
    n->meta_vouchable = true; /* its own meta page, written after its flush */
    n->state_synced = full;
    n->state_commits++;
    n->state_commit_ms = node_now_ms();
    return 0;
}

/* Apply the committed entries up to @upto, from the core's log. */
static int state_apply_upto(struct kv_node *n, uint64_t upto)
{
    struct kv_store *st = &n->store;
    uint64_t from = n->applied;
    for (uint64_t i = n->applied + 1; i <= upto; i++) {
        const struct raft_entry *e = raft_entry_at(n->raft, i);
        if (!e) {
            snprintf(st->errmsg, sizeof st->errmsg,
                     "%s: committed entry %llu is not in memory to apply",
                     st->dir, (unsigned long long)i);
            return KV_STORE_EIO;
        }
        if (e->type == RAFT_ENTRY_CONFIG) {
            bool gone = false;
            int rv = members_apply(n, n->state_txn, e, &gone);
            struct kv_outcome o;
            memset(&o, 0, sizeof o);
            if (!rv) {
                rv = note_applied(n, e, 0, &o); /* its waiter hears OK */
            }
            if (rv) {
                return rv;
            }
            if (gone) {
                node_removed_self(n, e->index);
            }
        }
        if (e->type == RAFT_ENTRY_NORMAL) {
            struct kv_outcome o;
            int rv =
                kv_sm_apply(st, n->state_txn, e->index, e->data, e->len, &o);
            if (!rv && o.cluster_id) {
                node_set_cluster_id(n, o.cluster_id);
            }
            int op = rv ? 0 : entry_op(e);
            if (op == RAFTKV__COMMAND__OP_AUTH) {
                n->auth_gen++; /* cached auth checks are void */
            }
            if (!rv) {
                rv = note_applied(n, e, op, &o);
                if (rv) {
                    kv_outcome_clear(&o);
                }
            }
            if (rv) {
                return rv;
            }
        }
        n->applied = e->index;
        n->applied_term = e->term;
        n->state_ops++;
        n->state_bytes += e->len;
    }
    if (n->applied == from) {
        return 0;
    }
    int rv = kv_store_put_meta(st, n->state_txn, "applied", n->applied);
    if (!rv) {
        rv = kv_store_put_meta(st, n->state_txn, "applied_term",
                               n->applied_term);
    }
    return rv;
}

/* Switch the finished build in for the live state: every reader and the
 * state transaction go (what it applied is older than the snapshot), the
 * environment closes, the build's file is renamed over it and it opens
 * again. A store that cannot be opened again stops the node, as in
 * reopen_store. */
static int switch_in_build(struct kv_node *n)
{
    struct kv_store *st = &n->store;
    peer_close_streams(n);
    node_publish(n, NODE_EV_RELEASE_READERS);
    state_abort(n);
    kv_store_close(st);
    int rv = kv_install_switch(&n->build, st);
    if (!st->env) {
        rpc_logf(RPC_LOG_ERROR,
                 "node %llu: cannot open the applied state after installing "
                 "a snapshot: %s; stopping",
                 (unsigned long long)n->cfg.id, st->errmsg);
        n->stopping = true;
        n->exit_code = 1;
        event_base_loopexit(n->base, NULL);
        return rv ? rv : KV_STORE_EIO;
    }
    n->state_synced = true; /* the switch synced everything */
    n->meta_async = false;  /* a fresh environment's flags */
    n->meta_vouchable = true;
    return rv;
}

/* Finish the build of the stream the core's install names: check its
 * end and give it the node's meta, the applied index and the
 * configuration in its last transaction (left open for the switch). */
static int finish_build(struct kv_node *n, const struct raft_update *u)
{
    struct kv_store *st = &n->store;
    struct kv_install *in = &n->build;
    uint64_t applied = 0, applied_term = 0;
    if (!kv_install_active(in)) {
        snprintf(st->errmsg, sizeof st->errmsg,
                 "%s: the snapshot at index %llu to install was not kept "
                 "(a failed write dropped it); a fresh one is needed",
                 st->dir, (unsigned long long)u->install_index);
        return KV_STORE_EIO;
    }
    int rc = 0;
    MDB_txn *live = node_state_read(n, &rc);
    if (!live) {
        return kv_store_fail(st, rc, "begin read");
    }
    MDB_txn *txn = NULL;
    int rv = kv_install_finish(in, st, live, &applied, &applied_term, &txn);
    node_state_done(n, live);
    if (!rv) {
        rv = kv_sm_install_done(&in->st, txn);
    }
    if (!rv && applied < u->install_index) {
        /* The stream is at least as new as the core's snapshot. */
        snprintf(in->st.errmsg, sizeof in->st.errmsg,
                 "%s: received snapshot holds index %llu, older than "
                 "the %llu it was sent for",
                 st->dir, (unsigned long long)applied,
                 (unsigned long long)u->install_index);
        rv = KV_STORE_ECORRUPT;
    }
    struct kv_meta m = {0};
    if (!rv) {
        rv = kv_store_read_meta(&in->st, txn, &m);
    }
    /* members_install writes through the node's store handles: the build
     * opened the same databases in the same order, so they are the same
     * numbers (checked). */
    if (!rv && (in->st.meta != st->meta || in->st.kvmeta != st->kvmeta)) {
        snprintf(in->st.errmsg, sizeof in->st.errmsg,
                 "%s: the new state's databases do not match", st->dir);
        rv = KV_STORE_EIO;
    }
    if (!rv) {
        rv = members_install(n, txn, u->install_conf, u->install_conf_len);
    }
    if (!rv) {
        rv = kv_store_put_meta(&in->st, txn, "applied", applied);
    }
    if (!rv) {
        rv = kv_store_put_meta(&in->st, txn, "applied_term", applied_term);
    }
    if (rv) {
        snprintf(st->errmsg, sizeof st->errmsg, "%s", in->st.errmsg);
        if (rv == KV_STORE_ECORRUPT) {
            kv_install_drop(in); /* never installed */
            in->lost = true;
        }
        return rv; /* otherwise the caller goes back to its mark */
    }
    in->index = applied;
    in->term = applied_term;
    in->cluster_id = m.cluster_id;
    return 0;
}

/* Install the state built from the stream the core's install names
 * (install.h): finished, then switched in whole. */
static int install_staged(struct kv_node *n, const struct raft_update *u)
{
    struct kv_install *in = &n->build;
    if (!in->finished) {
        int rv = finish_build(n, u);
        if (rv) {
            return rv;
        }
    }
    uint64_t applied = in->index, applied_term = in->term;
    uint64_t cluster_id = in->cluster_id, bytes = in->bytes;
    double secs = kv_install_now() - in->began;
    int rv = switch_in_build(n);
    if (rv) {
        return rv;
    }
    if (cluster_id) {
        node_set_cluster_id(n, cluster_id); /* from the snapshot */
    }
    n->auth_gen++; /* new users and roles, perhaps */
    n->applied = n->durable_applied = applied;
    n->applied_term = n->durable_term = applied_term;
    n->synced_applied = applied; /* the switch synced everything */
    n->synced_term = applied_term;
    n->snap_index = u->install_index;
    n->metrics.snapshots_received++;
    rpc_logf(RPC_LOG_INFO,
             "node %llu: installed a snapshot of the state at index %llu: "
             "%llu bytes received and built in %.1f s (%.1f MB/s)",
             (unsigned long long)n->cfg.id, (unsigned long long)applied,
             (unsigned long long)bytes, secs,
             secs > 0 ? (double)bytes / secs / 1e6 : 0.0);
    return 0;
}

/* Stage snapshot chunks and install a received snapshot; the install
 * must be on disk before the leader hears of it.
 *
 * The chunks build a new state beside the live one (install.h), one
 * bounded transaction per update, not synced: a node that restarts has
 * forgotten the transfer (its core answers the next chunk with offset 0),
 * so what a crash leaves of a build is deleted at the next start. A
 * failed write goes back to where the update began, for the update to be
 * written again.
 *
 * The chunks of one update are staged in the order the core took them,
 * and the install happens right after the final chunk of the stream it
 * names: chunks taken after it (the start of a newer snapshot, when
 * delayed requests arrive together) begin a new staging of their own and
 * must not replace the stream before it is installed. */
static int state_receive_snapshot(struct kv_node *n,
                                  const struct raft_update *u)
{
    struct kv_store *st = &n->store;
    struct kv_install *in = &n->build;
    /* A retry of an update whose install was done already: the chunks up
     * to that install's are skipped, the rest staged again. */
    bool already = u->install && n->applied >= u->install_index;
    bool past_install = !u->install || already;
    bool skipping = already;
    struct snap_check check = n->stage_check;
    uint64_t stream = n->stage_stream;
    int rv = kv_install_active(in) ? kv_install_mark(in) : 0;
    for (size_t i = 0; i < u->n_chunks && !rv; i++) {
        const struct raft_snapshot_chunk *c = &u->chunks[i];
        bool is_install = u->install && c->done && c->index == u->install_index;
        if (skipping) {
            skipping = !is_install;
            continue;
        }
        if (c->offset == 0) {
            rv = kv_install_begin(in, n->cfg.data_dir, st->map_size, c->stream);
            if (rv) {
                snprintf(st->errmsg, sizeof st->errmsg, "%s", in->st.errmsg);
                kv_install_drop(in);
                in->lost = true;
                break;
            }
            memset(&check, 0, sizeof check);
            stream = c->stream;
            rpc_logf(RPC_LOG_DEBUG,
                     "node %llu: receiving a snapshot (state at index %llu)",
                     (unsigned long long)n->cfg.id,
                     (unsigned long long)c->index);
        }
        if (kv_install_active(in)) {
            rv = kv_install_feed(in, c->data, c->len);
            if (rv) {
                snprintf(st->errmsg, sizeof st->errmsg, "%s", in->st.errmsg);
                break;
            }
        }
        snap_check_add(&check, c->data, c->len);
        if (is_install && !past_install) {
            rv = install_staged(n, u);
            past_install = true;
            memset(&check, 0, sizeof check);
            stream = 0;
        }
    }
    if (!rv && !past_install) {
        /* The core installs only with the final chunk in the same update;
         * without it, what is staged is checked as it is installed. */
        rv = install_staged(n, u);
        memset(&check, 0, sizeof check);
        stream = 0;
    }
    if (!rv && kv_install_active(in)) {
        rv = kv_install_keep(in);
        if (rv) {
            snprintf(st->errmsg, sizeof st->errmsg, "%s", in->st.errmsg);
        }
    }
    if (rv) {
        if (kv_install_active(in)) {
            kv_install_undo(in);
        }
        return rv;
    }
    /* What is staged now, for peer.c's check of the final chunk. */
    n->stage_check = check;
    n->stage_stream = stream;
    return 0;
}

int node_persist(struct kv_node *n, const struct raft_update *u)
{
    struct kv_store *st = &n->store;
    struct kv_wal *w = &n->wal;
    int rv = 0;
    if (u->n_committed) {
        uint64_t last = u->committed[u->n_committed - 1].index;
        if (last > n->handed) {
            n->handed = last;
        }
    }
    if (u->install && u->install_index > n->handed) {
        n->handed = u->install_index;
    }
    /* 1. The state: a received snapshot, then what is newly committed. */
    if (u->n_chunks || u->install) {
        rv = state_receive_snapshot(n, u);
    }
    if (!rv && n->applied < n->handed) {
        double t0 = kv_seconds();
        n->apply_began_ms = node_now_ms();
        rv = state_open(n);
        if (!rv) {
            rv = state_apply_upto(n, n->handed);
        }
        n->apply_done_ms = node_now_ms();
        kv_hist_observe(&n->metrics.apply, kv_seconds() - t0);
    }
    if (rv) {
        state_abort(n);
        return rv;
    }
    /* The entries applied above are committed, so durable on a majority,
     * and applying them is deterministic: their outcomes are final before
     * anything here is on disk. Their waiters hear now. */
    node_complete_writes(n);
    node_clear_applied(n);
    rpc_server_flush(n->server);

    /* 2. The log: one append, one fdatasync. */
    if (u->install) {
        rv = kv_wal_add_snapshot(w, u->install_index, u->install_term);
    }
    if (!rv && u->truncate_from) {
        rv = kv_wal_add_truncate(w, u->truncate_from);
    }
    if (!rv && u->n_entries) {
        rv = kv_wal_add_entries(w, u->entries, u->n_entries);
    }
    if (!rv && u->hs_changed &&
        (u->hs.term != w->term || u->hs.vote != w->vote)) {
        rv = kv_wal_add_hard_state(w, u->hs.term, u->hs.vote);
    }
    if (!rv && kv_wal_pending(w)) {
        double t0 = kv_seconds();
        rv = kv_wal_sync(w);
        kv_hist_observe(&n->metrics.wal_sync, kv_seconds() - t0);
    }
    if (rv) {
        kv_wal_discard(w);
        snprintf(st->errmsg, sizeof st->errmsg, "%.1150s", w->errmsg);
        return rv;
    }

    /* 3. A large state transaction commits now rather than on its timer. */
    if (n->state_ops >= STATE_MAX_OPS || n->state_bytes >= STATE_MAX_BYTES) {
        rv = node_state_commit(n, false);
    }
    return rv;
}

/* LMDB stops using an environment whose meta page it failed to write
 * (every later transaction gets MDB_PANIC), though its files stay intact:
 * the last meta page written before is still the one it opens. Close it
 * and open it again; the log applies again what its state lacks. */
static int reopen_store(struct kv_node *n)
{
    struct kv_store *st = &n->store;
    peer_close_streams(n);
    node_publish(n, NODE_EV_RELEASE_READERS);
    state_abort(n);
    size_t map_size = st->map_size;
    kv_store_close(st);
    int rv = kv_store_open(st, n->cfg.data_dir, map_size);
    MDB_txn *txn = NULL;
    struct kv_meta m;
    if (!rv) {
        int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
        rv = rc ? kv_store_fail(st, rc, "begin read") : 0;
    }
    if (!rv) {
        rv = kv_store_read_meta(st, txn, &m);
        mdb_txn_abort(txn);
    }
    if (rv) {
        /* Nothing can be served without the environment: stop, and let
         * the next start open it. */
        rpc_logf(RPC_LOG_ERROR,
                 "node %llu: cannot reopen the applied state: %s; stopping",
                 (unsigned long long)n->cfg.id, st->errmsg);
        kv_store_close(st);
        n->stopping = true;
        n->exit_code = 1;
        event_base_loopexit(n->base, NULL);
        return rv;
    }
    n->applied = n->durable_applied = m.applied;
    n->applied_term = n->durable_term = m.applied_term;
    n->state_synced = false;
    n->meta_async = false;
    n->meta_vouchable = false; /* what it read may be a page since lost */
    rpc_logf(RPC_LOG_WARN,
             "node %llu: LMDB environment reopened after a failed write; "
             "its state is at index %llu, the log applies the rest again",
             (unsigned long long)n->cfg.id, (unsigned long long)m.applied);
    return 0;
}

int node_persist_growing(struct kv_node *n, const struct raft_update *u)
{
    for (int tries = 0; tries < 16; tries++) {
        if (n->store.fatal) {
            int rv = reopen_store(n);
            if (rv) {
                return rv;
            }
        }
        int rv = node_persist(n, u);
        if (rv && n->store.fatal) {
            continue; /* reopen and try again */
        }
        if (rv != KV_STORE_EMAPFULL) {
            return rv;
        }
        /* Resizing needs every transaction closed; persist dropped its. */
        peer_close_streams(n);
        node_publish(n, NODE_EV_RELEASE_READERS);
        rv = kv_store_grow(&n->store);
        if (rv) {
            return rv;
        }
        rpc_logf(RPC_LOG_INFO, "node %llu: LMDB map grown to %zu MiB",
                 (unsigned long long)n->cfg.id, n->store.map_size >> 20);
    }
    return KV_STORE_EMAPFULL;
}

void node_state_due(struct kv_node *n)
{
    if (!n->state_txn) {
        return;
    }
    int rv = node_state_commit(n, false);
    if (rv == 0) {
        return;
    }
    rpc_logf(RPC_LOG_ERROR,
             "node %llu: cannot write the applied state: %s; applying again "
             "from the log",
             (unsigned long long)n->cfg.id, n->store.errmsg);
    /* Re-apply what the failed commit held; reads wait meanwhile. */
    rv = state_open(n);
    if (rv && n->store.fatal && reopen_store(n) == 0) {
        rv = state_open(n);
    }
    if (rv == 0 && state_apply_upto(n, n->handed) == 0) {
        node_clear_applied(n);
        return;
    }
    state_abort(n);
    struct timeval tv = {1, 0};
    evtimer_add(n->state_ev, &tv);
}

int node_state_read_now(struct kv_node *n, MDB_txn **txn)
{
    uint64_t at = n->applied;
    *txn = NULL;
    node_state_due(n);
    if (n->state_txn || n->durable_applied != at ||
        mdb_txn_begin(n->store.env, NULL, MDB_RDONLY, txn) != 0) {
        *txn = NULL;
        return -1;
    }
    return 0;
}

void node_maybe_compact(struct kv_node *n)
{
    uint64_t last = raft_last_index(n->raft);
    uint64_t first = raft_first_index(n->raft);
    if (n->applied < n->last_compact + n->cfg.snapshot_entries ||
        last - first + 1 <= n->cfg.snapshot_entries) {
        return;
    }
    uint64_t keep_from = n->applied > n->cfg.snapshot_trailing
                             ? n->applied - n->cfg.snapshot_trailing
                             : 0;
    if (last - first + 1 <
            (uint64_t)PEER_SNAPSHOT_HOLD_LOG * n->cfg.snapshot_entries &&
        peer_sending_snapshot(n, keep_from)) {
        return; /* (node.h: a transfer would start over) */
    }
    /* The log before the snapshot goes away: the state that replaces it
     * must be on disk for good. Under a steady load that is the state of
     * the commit before the last one (the last one's flush put its meta
     * page on disk), a commit interval or two behind: it needs no flush of
     * its own, which would stall the loop. Wait for one while the log has
     * room (up to 1.5 times --snapshot-entries), committing at least every
     * STATE_HASTEN_MS meanwhile (a long --state-commit-ms, or a node just
     * started, would otherwise keep the log from being compacted).
     * Otherwise commit the applied state with a full sync now and take
     * that. */
    uint64_t index = n->synced_applied, term = n->synced_term;
    bool own_sync = false;
    if (index <= n->last_compact ||
        n->applied - index > n->cfg.snapshot_entries) {
        if (n->state_txn &&
            last - first + 1 <
                n->cfg.snapshot_entries + n->cfg.snapshot_entries / 2) {
            if (node_now_ms() - n->state_commit_ms >= STATE_HASTEN_MS) {
                node_state_due(n);
            }
            return;
        }
        if (node_state_commit(n, true) != 0) {
            rpc_logf(RPC_LOG_WARN, "node %llu: log compaction postponed: %s",
                     (unsigned long long)n->cfg.id, n->store.errmsg);
            return;
        }
        index = n->durable_applied;
        term = n->durable_term;
        own_sync = true;
    }
    if (index <= n->last_compact ||
        raft_snapshot_taken(n->raft, index, term) != 0) {
        return;
    }
    n->snap_index = index;
    n->last_compact = index;
    n->metrics.compactions++;
    n->metrics.compactions_synced += own_sync;
    uint64_t upto =
        index > n->cfg.snapshot_trailing ? index - n->cfg.snapshot_trailing : 0;
    size_t k = kv_wal_release(&n->wal, upto);
    rpc_logf(RPC_LOG_DEBUG,
             "node %llu: snapshot at %llu; %zu log segments deleted",
             (unsigned long long)n->cfg.id, (unsigned long long)index, k);
}

/* Which of the log's entries go with a state applied up to @a (term @at):
 * those after it, and those before it when they lead to it. Entries of
 * another branch (a snapshot installed just before a crash) are dropped,
 * and the drop is written to the log. Returns the first entry to keep. */
static int pick_entries(struct kv_node *n,
                        struct kv_wal_contents *c,
                        uint64_t a,
                        uint64_t at,
                        size_t *keep_from)
{
    struct kv_store *st = &n->store;
    *keep_from = 0;
    if (c->snap_index > a) {
        snprintf(st->errmsg, sizeof st->errmsg,
                 "%s: the log says a snapshot at index %llu was installed, "
                 "but the state is at index %llu",
                 st->dir, (unsigned long long)c->snap_index,
                 (unsigned long long)a);
        return KV_STORE_ECORRUPT;
    }
    if (c->n_entries == 0) {
        return 0;
    }
    uint64_t first = c->entries[0].index;
    uint64_t last = c->entries[c->n_entries - 1].index;
    if (first > a + 1) {
        snprintf(st->errmsg, sizeof st->errmsg,
                 "%s: the state is at index %llu but the log starts at %llu",
                 st->dir, (unsigned long long)a, (unsigned long long)first);
        return KV_STORE_ECORRUPT;
    }
    bool matches =
        a == 0 || first == a + 1 ||
        (a >= first && a <= last && c->entries[a - first].term == at);
    if (matches) {
        return 0;
    }
    if (last >= a && a >= first) {
        /* Another branch at index a: nothing of it can be committed. */
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: dropping log entries %llu-%llu of another "
                 "branch than the state's snapshot at %llu",
                 (unsigned long long)n->cfg.id, (unsigned long long)first,
                 (unsigned long long)last, (unsigned long long)a);
    }
    *keep_from = c->n_entries;
    int rv = kv_wal_add_snapshot(&n->wal, a, at);
    if (!rv) {
        rv = kv_wal_add_truncate(&n->wal, a + 1);
    }
    if (!rv) {
        rv = kv_wal_sync(&n->wal);
    }
    if (rv) {
        snprintf(st->errmsg, sizeof st->errmsg, "%.1150s", n->wal.errmsg);
    }
    return rv;
}

/* --force-new-cluster: this node alone becomes the cluster. Every other
 * member of its configuration is removed for good at once (their Raft
 * calls are refused from now on), and a configuration entry naming only
 * this node is appended to its log after everything it holds: once this
 * node, the only voter, commits its first entry, every entry of its log is
 * committed with it (acknowledged writes it holds are kept; writes it
 * holds that the old cluster never committed are kept too). The entries
 * of @c and @conf describe the node as read; the new entry is added to
 * @c. */
static int force_new_cluster(struct kv_node *n,
                             struct kv_wal_contents *c,
                             const void *conf,
                             size_t conf_len,
                             struct kv_meta *m)
{
    struct kv_store *st = &n->store;
    struct raft_member old[RAFT_MAX_MEMBERS];
    char boot_ctx[KV_MAX_NODES][MEMBER_CTX_MAX];
    size_t n_old = 0;
    if (conf_len) {
        if (raft_conf_decode(conf, conf_len, old, RAFT_MAX_MEMBERS, &n_old)) {
            n_old = 0;
        }
    } else if (members_bootstrap(&n->cfg, old, boot_ctx, &n_old) != 0) {
        n_old = 0;
    }
    /* Every id of the last configuration in the log too (a change not
     * applied yet). */
    uint64_t ids[2 * RAFT_MAX_MEMBERS];
    size_t n_ids = 0;
    for (size_t i = 0; i < n_old; i++) {
        ids[n_ids++] = old[i].id;
    }
    for (size_t k = c->n_entries; k-- > 0;) {
        const struct raft_entry *e = &c->entries[k];
        struct raft_member lm[RAFT_MAX_MEMBERS];
        size_t nl = 0;
        if (e->type == RAFT_ENTRY_CONFIG && e->index > m->applied &&
            raft_conf_decode(e->data, e->len, lm, RAFT_MAX_MEMBERS, &nl) == 0) {
            for (size_t i = 0; i < nl && n_ids < 2 * RAFT_MAX_MEMBERS; i++) {
                ids[n_ids++] = lm[i].id;
            }
            break;
        }
    }
    size_t n_rm = n->n_removed;
    uint64_t *rm = realloc(n->removed, (n_rm + n_ids + 1) * sizeof *rm);
    if (!rm) {
        return -1;
    }
    n->removed = rm;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] != n->cfg.id && !node_removed(n, ids[i])) {
            rm[n->n_removed++] = ids[i];
        }
    }
    MDB_txn *txn;
    if (mdb_txn_begin(st->env, NULL, 0, &txn) != 0) {
        return -1;
    }
    uint8_t *buf = malloc(n->n_removed * 8 + 1);
    int rv = buf ? 0 : KV_STORE_ENOMEM;
    for (size_t i = 0; buf && i < n->n_removed; i++) {
        kv_put_u64(buf + 8 * i, n->removed[i]);
    }
    if (!rv) {
        MDB_val k = {7, "removed"}, v = {n->n_removed * 8, buf};
        int rc = mdb_put(txn, st->kvmeta, &k, &v, 0);
        rv = rc ? kv_store_fail(st, rc, "write kvmeta") : 0;
    }
    free(buf);
    if (rv || mdb_txn_commit(txn) != 0) {
        if (rv) {
            mdb_txn_abort(txn);
        }
        return -1;
    }
    /* The configuration entry: this node alone, at its own addresses. */
    char peer[300], client[300], ctx[MEMBER_CTX_MAX];
    members_flag_addr(&n->cfg, n->cfg.id, true, peer, sizeof peer);
    members_flag_addr(&n->cfg, n->cfg.id, false, client, sizeof client);
    size_t ctx_len = members_ctx_format(ctx, sizeof ctx, peer, client);
    struct raft_member me = {
        .id = n->cfg.id, .voter = true, .ctx = ctx, .ctx_len = ctx_len};
    void *blob;
    size_t len;
    if (!ctx_len || raft_conf_encode(&me, 1, &blob, &len) != 0) {
        return -1;
    }
    uint64_t last = c->n_entries ? c->entries[c->n_entries - 1].index
                                 : (m->applied > c->snap_index ? m->applied
                                                               : c->snap_index);
    uint64_t term = c->hs.term;
    if (c->n_entries && c->entries[c->n_entries - 1].term > term) {
        term = c->entries[c->n_entries - 1].term;
    }
    if (m->applied_term > term) {
        term = m->applied_term;
    }
    if (term == 0) {
        term = 1;
    }
    struct raft_entry e = {.term = term,
                           .index = last + 1,
                           .type = RAFT_ENTRY_CONFIG,
                           .data = blob,
                           .len = len};
    if (term > c->hs.term) {
        rv = kv_wal_add_hard_state(&n->wal, term, 0);
    }
    if (!rv) {
        rv = kv_wal_add_entries(&n->wal, &e, 1);
    }
    if (!rv) {
        rv = kv_wal_sync(&n->wal);
    }
    if (rv) {
        fprintf(stderr, "kvserver: --force-new-cluster: %s\n", n->wal.errmsg);
        free(blob);
        return -1;
    }
    /* What raft_restore reads: the same, plus the new entry (its data
     * kept in the contents' blobs, freed with them). */
    struct raft_entry *grown =
        realloc(c->entries, (c->n_entries + 1) * sizeof *grown);
    void **blobs = realloc(c->blobs, (c->n_blobs + 1) * sizeof *blobs);
    if (!grown || !blobs) {
        free(blob);
        if (grown) {
            c->entries = grown;
        }
        if (blobs) {
            c->blobs = blobs;
        }
        return -1;
    }
    c->entries = grown;
    c->blobs = blobs;
    c->blobs[c->n_blobs++] = blob;
    c->entries[c->n_entries++] = e;
    if (term > c->hs.term) {
        c->hs.term = term;
        c->hs.vote = 0;
    }
    rpc_logf(RPC_LOG_WARN,
             "node %llu: --force-new-cluster: this node alone is the cluster "
             "now (configuration entry %llu); %zu former members removed for "
             "good. Never start them again with their data",
             (unsigned long long)n->cfg.id, (unsigned long long)e.index,
             n->n_removed - n_rm);
    return 0;
}

int node_restore(struct kv_node *n)
{
    struct kv_store *st = &n->store;
    /* A snapshot being received when the node stopped: the transfer
     * starts over, so its build goes (install.h). */
    int err = kv_install_cleanup(n->cfg.data_dir);
    if (err) {
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: cannot delete %s/incoming (a snapshot being "
                 "received when the node stopped): %s",
                 (unsigned long long)n->cfg.id, n->cfg.data_dir, strerror(err));
    }
    int rv = kv_store_open(st, n->cfg.data_dir, n->cfg.map_size);
    if (rv) {
        fprintf(stderr, "kvserver: %s\n", st->errmsg);
        return -1;
    }
    rv = kv_store_check_identity(st, 0, n->cfg.id); /* stamped once it
                                                      listens (node.c) */
    if (rv) {
        fprintf(stderr, "kvserver: %s\n", st->errmsg);
        return -1;
    }
    if (st->format != KV_STORE_FORMAT) {
        uint64_t was = st->format;
        rv = kv_sm_upgrade(st);
        if (rv) {
            fprintf(stderr, "kvserver: %s: upgrade to format %d: %s\n",
                    n->cfg.data_dir, KV_STORE_FORMAT, st->errmsg);
            return -1;
        }
        rpc_logf(RPC_LOG_INFO,
                 "node %llu: %s upgraded from format %llu to %d%s",
                 (unsigned long long)n->cfg.id, n->cfg.data_dir,
                 (unsigned long long)was, KV_STORE_FORMAT,
                 was == KV_STORE_FORMAT_OLD ? " (keys got revisions)" : "");
    }
    MDB_txn *txn;
    if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) != 0) {
        fprintf(stderr, "kvserver: %s: cannot read\n", n->cfg.data_dir);
        return -1;
    }
    struct kv_meta m;
    void *conf = NULL;
    size_t conf_len = 0;
    rv = kv_store_read_meta(st, txn, &m);
    if (!rv) {
        rv = members_load(n, txn, &conf, &conf_len);
    }
    mdb_txn_abort(txn);
    if (rv) {
        fprintf(stderr, "kvserver: %s\n", st->errmsg);
        free(conf);
        return -1;
    }
    if (node_removed(n, n->cfg.id)) {
        fprintf(stderr,
                "kvserver: node %llu was removed from its cluster for good; "
                "it cannot serve again. To run a node on this host, wipe %s "
                "and add it under a new id (kvctl member add)\n",
                (unsigned long long)n->cfg.id, n->cfg.data_dir);
        free(conf);
        return -1;
    }
    n->cluster_id = m.cluster_id; /* 0 until the first leader names it */
    if (m.restoring) {
        fprintf(stderr,
                "kvserver: %s holds a restore that did not finish (kvserver "
                "--restore was stopped); run the same kvserver --restore "
                "again, then start the node\n",
                n->cfg.data_dir);
        free(conf);
        return -1;
    }
    struct kv_wal_contents c;
    rv = kv_wal_open(&n->wal, n->cfg.data_dir, n->cfg.wal_segment_bytes, &c);
    if (rv) {
        free(conf);
        fprintf(stderr, "kvserver: %s\n", n->wal.errmsg);
        if (rv == KV_STORE_ECORRUPT || rv == KV_STORE_EIO) {
            fprintf(stderr,
                    "kvserver: this node cannot serve from a damaged log. "
                    "Recover by wiping its data directory (%s) and "
                    "restarting it; it catches up from the others.\n",
                    n->cfg.data_dir);
        }
        return -1;
    }
    if (c.cut_bytes) {
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: cut %llu bytes of an interrupted log append "
                 "(written, never acknowledged)",
                 (unsigned long long)n->cfg.id,
                 (unsigned long long)c.cut_bytes);
    }
    if (n->cfg.force_new_cluster &&
        force_new_cluster(n, &c, conf, conf_len, &m) != 0) {
        fprintf(stderr, "kvserver: --force-new-cluster: cannot write %s (%s)\n",
                n->cfg.data_dir, st->errmsg);
        kv_wal_contents_free(&c);
        free(conf);
        return -1;
    }
    size_t keep = 0;
    rv = pick_entries(n, &c, m.applied, m.applied_term, &keep);
    if (rv) {
        fprintf(stderr, "kvserver: %s\n", st->errmsg);
        if (rv == KV_STORE_ECORRUPT) {
            fprintf(stderr,
                    "kvserver: recover by wiping this node's data directory "
                    "(%s) and restarting it; it catches up from the "
                    "others.\n",
                    n->cfg.data_dir);
        }
        kv_wal_contents_free(&c);
        free(conf);
        return -1;
    }
    n->applied = n->durable_applied = n->handed = m.applied;
    n->applied_term = n->durable_term = m.applied_term;
    n->synced_applied = m.applied;
    n->synced_term = m.applied_term;
    n->meta_vouchable = true;
    n->snap_index = m.applied;
    n->last_compact = m.applied;
    n->state_synced = true;

    /* The bootstrap configuration: --cluster's nodes, with their
     * addresses (none with --join: the leader's log or snapshot brings
     * it). The state's applied configuration overrides it. */
    struct raft_member boot[KV_MAX_NODES];
    char boot_ctx[KV_MAX_NODES][MEMBER_CTX_MAX];
    size_t n_boot = 0;
    if (members_bootstrap(&n->cfg, boot, boot_ctx, &n_boot) != 0) {
        fprintf(stderr, "kvserver: addresses too long\n");
        kv_wal_contents_free(&c);
        free(conf);
        return -1;
    }
    struct raft_config rc = {
        .id = n->cfg.id,
        .members = boot,
        .n_members = n_boot,
        .heartbeat_ms = n->cfg.heartbeat_ms,
        .election_ms = n->cfg.election_ms,
        .seed = n->cfg.seed,
        .start_ms = node_now_ms(),
        .pre_vote = true,
        .check_quorum = true,
        .max_append_bytes = 1u << 20,
        .max_inflight = 64,
        .max_uncommitted_bytes = 64u << 20,
        .snapshot_chunk_bytes = 1u << 20,
        .snapshot_trailing = n->cfg.snapshot_trailing,
    };
    n->raft = raft_new(&rc);
    if (!n->raft) {
        fprintf(stderr, "kvserver: invalid Raft configuration\n");
        kv_wal_contents_free(&c);
        free(conf);
        return -1;
    }
    /* The state is a snapshot at its applied index; the log's entries
     * around it are kept for followers and replayed after it. */
    struct raft_persisted p = {
        .hs = {.term = c.hs.term, .vote = c.hs.vote, .commit = m.applied},
        .snap_index = m.applied,
        .snap_term = m.applied_term,
        .applied = m.applied,
        .entries = c.entries ? c.entries + keep : NULL,
        .n_entries = c.n_entries - keep,
        .conf = conf,
        .conf_len = conf_len,
    };
    size_t n_entries = p.n_entries;
    rv = raft_restore(n->raft, &p);
    kv_wal_contents_free(&c);
    free(conf);
    if (rv) {
        fprintf(stderr, "kvserver: %s: cannot restore Raft state: %s\n",
                n->cfg.data_dir, raft_errmsg(n->raft));
        return -1;
    }
    rpc_logf(RPC_LOG_INFO,
             "node %llu: restored term %llu, applied %llu, %zu log entries "
             "in %zu segments",
             (unsigned long long)n->cfg.id, (unsigned long long)p.hs.term,
             (unsigned long long)m.applied, n_entries, n->wal.n_segs);
    return 0;
}
