/* watch.c: WatchService: watches of a key or a range, served on any node
 * from its applied state and the history of changes (mvcc.h).
 *
 * Every watch has the first revision it has not been sent yet (next). The
 * hub reads the changes of each turn once (NODE_EV_APPLIED) and gives each
 * watch that is up to date its own events, in one frame; a watch that is
 * behind (it started from an old revision, or its connection had no room:
 * rpc_stream_send refused) reads the history on its own until it catches
 * up, a bounded amount per turn. A watch whose place in the history is
 * compacted away ends with COMPACTED; nothing is ever skipped. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mvcc.h"
#include "service.h"

#define WATCH_MAX              100000u /* watches open on one node */
#define WATCH_DEFAULT_PROGRESS 10000u  /* ms between progress frames */
#define WATCH_MIN_PROGRESS     10u     /* shortest progress_ms honoured */
#define WATCH_CATCHUP_READS    4       /* history reads per watch per turn */
#define WATCH_FRAME_BYTES                    \
    (1u << 20) /* events per frame, about: a \
                  revision with more goes in \
                  pieces */

/* The WatchService of a service table. */
#define services_of_watch(svc) services_of(svc, watch_svc)

struct watch
{
    struct watch_hub *hub;                  /* owner */
    void *call;                             /* the stream's closure_data */
    Raftkv__WatchReply_Closure closure;     /* ends it */
    ProtobufCBinaryData key, end;           /* the range (owned copies) */
    bool no_put, no_delete, require_leader; /* filters, options */
    bool prev_kv;                           /* events carry prev_kv */
    uint64_t next;                          /* first revision not sent */
    uint32_t part;                          /* events of revision next
                                               sent already (a revision
                                               too big for one frame) */
    uint32_t progress_ms;                   /* idle frames this often */
    uint64_t sent_ms;                       /* when a frame last went */
    bool stalled;                           /* waits for room */
    bool created_pending;                   /* its first frame found no
                                               room: sent before any
                                               other */
    struct watch *prev, *next_w;            /* hub's list */
};

struct watch_hub
{
    struct kv_services *s;   /* the services */
    uint64_t rev;            /* every watch not behind has had everything up
                                to this revision */
    struct watch *list;      /* open watches */
    size_t n;                /* entries in list */
    size_t behind;           /* watches with next <= rev (catching up) */
    Raftkv__Event **scratch; /* one watch's events of a read */
    size_t scratch_cap;      /* entries in scratch */
    uint64_t failed_ms;      /* when a failed history read was logged */
    uint8_t *pack;           /* a frame packed for a run of watches */
    size_t pack_cap;         /* bytes allocated there */
    struct watch **run;      /* the run's watches that get that frame */
    void **run_calls;        /* their streams */
    int *run_results;        /* what sending gave each */
    size_t n_run, run_cap;   /* entries used, allocated */
    uint64_t events_sent;    /* events sent, for /metrics */
};

static bool is_behind(const struct watch *w)
{
    return w->next <= w->hub->rev;
}

static void hub_count(struct watch_hub *h)
{
    size_t b = 0;
    for (struct watch *w = h->list; w; w = w->next_w) {
        b += is_behind(w);
    }
    h->behind = b;
}

/* End a watch: its last frame (err, and the revision it reached), and
 * free it. */
static void watch_end(struct watch *w, int err, const char *msg)
{
    struct watch_hub *h = w->hub;
    struct kv_node *n = h->s->node;
    Raftkv__WatchReply r = RAFTKV__WATCH_REPLY__INIT;
    r.err = err;
    r.message = (char *)(msg ? msg : "");
    r.revision = w->next - 1;
    r.node_id = n->cfg.id;
    struct kv_revs revs;
    MDB_txn *txn = node_state_read(n, NULL);
    if (txn) {
        if (kv_mvcc_revs(&n->store, txn, &revs) == 0) {
            r.compact_revision = revs.compact;
        }
        node_state_done(n, txn);
    }
    if (w->prev) {
        w->prev->next_w = w->next_w;
    } else {
        h->list = w->next_w;
    }
    if (w->next_w) {
        w->next_w->prev = w->prev;
    }
    h->n--;
    Raftkv__WatchReply_Closure closure = w->closure;
    void *call = w->call;
    free(w->key.data);
    free(w->end.data);
    free(w);
    closure(&r, call);
}

/* Send one frame. Returns 0 when sent, 1 when there was no room (the
 * watch is stalled until RPC_STREAM_WRITABLE), 2 when the stream is
 * ending (RPC_STREAM_CANCELLED comes). */
static int watch_send(struct watch *w,
                      Raftkv__Event **events,
                      size_t n_events,
                      uint64_t revision,
                      uint64_t compact,
                      bool created)
{
    struct watch_hub *h = w->hub;
    Raftkv__WatchReply r = RAFTKV__WATCH_REPLY__INIT;
    r.revision = revision;
    r.compact_revision = compact;
    r.events = events;
    r.n_events = n_events;
    r.created = created;
    r.node_id = h->s->node->cfg.id;
    int rv = rpc_stream_send(w->call, &r.base);
    if (rv == RPC_E_OVERLOADED) {
        w->stalled = true;
        return 1;
    }
    if (rv == RPC_E_TOO_BIG) {
        return RPC_E_TOO_BIG;
    }
    if (rv != 0) {
        return 2;
    }
    w->sent_ms = node_now_ms();
    h->events_sent += n_events;
    return 0;
}

static void watch_end(struct watch *w, int err, const char *msg);

/* One event is over the frame cap (a value near the cap with prev_kv):
 * the watch cannot go on without skipping it. */
static void watch_too_big(struct watch *w)
{
    char why[200];
    snprintf(
        why, sizeof why,
        "an event at revision %llu is over the frame size cap%s",
        (unsigned long long)w->next,
        w->prev_kv ? " with its previous value: watch without prev_kv" : "");
    watch_end(w, RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE, why);
}

/* Send a watch its events (matching it, oldest first, those of revision
 * w->next that it was sent already left out) up to revision @upto, in
 * frames of about WATCH_FRAME_BYTES: a revision with more goes in pieces,
 * every piece but its last saying the revision before it, so that a
 * client resuming after a piece starts at that revision again (and skips
 * what it has). Returns 0 when all is sent (w->next is upto + 1), or as
 * watch_send (1: no room, w->next and w->part say where it stopped);
 * 3 when one event alone is over the frame cap (the caller ends it). */
static int watch_deliver(struct watch *w,
                         Raftkv__Event **ev,
                         size_t k,
                         uint64_t upto,
                         uint64_t compact)
{
    size_t i = 0;
    while (i < k) {
        size_t j = i, bytes = 0;
        while (j < k) {
            size_t sz = protobuf_c_message_get_packed_size(&ev[j]->base) + 8;
            if (j > i && bytes + sz > WATCH_FRAME_BYTES) {
                break;
            }
            bytes += sz;
            j++;
        }
        uint64_t last = ev[j - 1]->kv->mod_revision;
        bool cut = j < k && ev[j]->kv->mod_revision == last;
        uint64_t rev = cut ? last - 1 : j < k ? last : upto;
        int rv = watch_send(w, ev + i, j - i, rev, compact, false);
        if (rv == RPC_E_TOO_BIG) {
            return 3;
        }
        if (rv) {
            return rv;
        }
        if (cut) {
            uint32_t n_last = 0;
            for (size_t x = i; x < j; x++) {
                n_last += ev[x]->kv->mod_revision == last;
            }
            w->part = w->next == last ? w->part + n_last : n_last;
            w->next = last;
        } else {
            w->next = rev + 1;
            w->part = 0;
        }
        i = j;
    }
    if (w->next <= upto) {
        w->next = upto + 1;
        w->part = 0;
    }
    return 0;
}

/* Pack a frame's WatchReply into h->pack; its length, 0 without memory. */
static size_t watch_pack(struct watch_hub *h,
                         Raftkv__Event **events,
                         size_t n_events,
                         uint64_t revision,
                         uint64_t compact)
{
    Raftkv__WatchReply r = RAFTKV__WATCH_REPLY__INIT;
    r.revision = revision;
    r.compact_revision = compact;
    r.events = events;
    r.n_events = n_events;
    r.node_id = h->s->node->cfg.id;
    size_t len = raftkv__watch_reply__get_packed_size(&r);
    if (len > h->pack_cap) {
        uint8_t *p = realloc(h->pack, len);
        if (!p) {
            return 0;
        }
        h->pack = p;
        h->pack_cap = len;
    }
    return raftkv__watch_reply__pack(&r, h->pack);
}

/* Add a watch to the run that gets the frame in h->pack; false without
 * memory. */
static bool run_add(struct watch_hub *h, struct watch *w)
{
    if (h->n_run == h->run_cap) {
        size_t cap = h->run_cap ? h->run_cap * 2 : 64;
        struct watch **r = realloc(h->run, cap * sizeof *r);
        if (r) {
            h->run = r;
        }
        void **c = r ? realloc(h->run_calls, cap * sizeof *c) : NULL;
        if (c) {
            h->run_calls = c;
        }
        int *x = c ? realloc(h->run_results, cap * sizeof *x) : NULL;
        if (!x) {
            return false;
        }
        h->run_results = x;
        h->run_cap = cap;
    }
    h->run[h->n_run] = w;
    h->run_calls[h->n_run] = w->call;
    h->n_run++;
    return true;
}

/* Send the run its frame (h->pack, len bytes, n_events in it; through
 * revision upto): one frame per connection where the clients take shared
 * frames. A watch that had no room stalls where it is (behind once the
 * hub moves on); one whose stream is ending waits for its end. */
static void run_send(struct watch_hub *h,
                     size_t len,
                     size_t n_events,
                     uint64_t upto)
{
    if (!h->n_run) {
        return;
    }
    rpc_stream_send_shared(h->run_calls, h->n_run, h->pack, len,
                           h->run_results);
    uint64_t now = node_now_ms();
    for (size_t i = 0; i < h->n_run; i++) {
        struct watch *w = h->run[i];
        int rv = h->run_results[i];
        if (rv == RPC_E_OVERLOADED) {
            w->stalled = true;
        } else if (rv == 0) {
            w->sent_ms = now;
            h->events_sent += n_events;
            w->next = upto + 1;
        }
    }
    h->n_run = 0;
}

/* The first frame: where the watch starts. Returns false when the watch
 * cannot go on yet (no room: it goes when there is; or the stream is
 * ending). */
static bool watch_send_created(struct watch *w)
{
    struct kv_node *n = w->hub->s->node;
    struct kv_revs revs = {0};
    MDB_txn *txn = node_state_read(n, NULL);
    if (txn) {
        kv_mvcc_revs(&n->store, txn, &revs);
        node_state_done(n, txn);
    }
    int rv = watch_send(w, NULL, 0, w->next - 1, revs.compact, true);
    w->created_pending = rv == 1;
    return rv == 0;
}

/* Do two watches want the same events, in the same form? */
static bool watch_alike(const struct watch *a, const struct watch *b)
{
    return a->no_put == b->no_put && a->no_delete == b->no_delete &&
           a->prev_kv == b->prev_kv && a->key.len == b->key.len &&
           a->end.len == b->end.len &&
           !memcmp(a->key.data, b->key.data, a->key.len) &&
           (!a->end.len || !memcmp(a->end.data, b->end.data, a->end.len));
}

static bool watch_wants(const struct watch *w, const Raftkv__Event *ev)
{
    if (ev->type == RAFTKV__EVENT__EVENT_TYPE__PUT ? w->no_put : w->no_delete) {
        return false;
    }
    return kv_range_has(&w->key, &w->end, ev->kv->key.data, ev->kv->key.len);
}

/* Room for one watch's share of a read's events. */
static bool scratch_fit(struct watch_hub *h, size_t n)
{
    if (n <= h->scratch_cap) {
        return true;
    }
    Raftkv__Event **s = realloc(h->scratch, n * sizeof *s);
    if (!s) {
        return false;
    }
    h->scratch = s;
    h->scratch_cap = n;
    return true;
}

/* Log a failed history read, at most once every 10 s. */
static void hub_read_failed(struct watch_hub *h, const char *why)
{
    uint64_t now = node_now_ms();
    if (!h->failed_ms || now - h->failed_ms >= 10000) {
        h->failed_ms = now;
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: watch: %s; ending the watches "
                 "that need it",
                 (unsigned long long)h->s->node->cfg.id, why);
    }
}

/* Give the changes after h->rev, read once, to every watch that is not
 * behind. */
static void hub_advance(struct watch_hub *h)
{
    struct kv_node *n = h->s->node;
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        return; /* the next turn tries again */
    }
    struct kv_revs revs;
    if (kv_mvcc_revs(&n->store, txn, &revs) != 0) {
        node_state_done(n, txn);
        return;
    }
    if (h->rev >= revs.revision) {
        node_state_done(n, txn);
        return; /* nothing new */
    }
    bool any = false, any_prev = false;
    for (struct watch *w = h->list; w; w = w->next_w) {
        if (!is_behind(w)) {
            any = true;
            any_prev |= w->prev_kv;
        }
    }
    if (!any && h->rev < revs.revision) {
        h->rev = revs.revision; /* no watch to give the changes to */
    }
    while (h->rev < revs.revision) {
        struct kv_arena mem = {0};
        Raftkv__EventsArgs a = RAFTKV__EVENTS_ARGS__INIT;
        Raftkv__EventsReply r = RAFTKV__EVENTS_REPLY__INIT;
        a.start_revision = h->rev + 1;
        if (kv_mvcc_events(&n->store, txn, &a, any_prev, &mem, &r) != 0) {
            kv_arena_free(&mem);
            /* The watches that wait for these changes cannot have them
             * here: they end, and their clients go on at another node. */
            char why[300];
            snprintf(why, sizeof why, "cannot read the history: %.250s",
                     n->store.errmsg);
            hub_read_failed(h, why);
            struct watch *w = h->list, *wn;
            for (; w; w = wn) {
                wn = w->next_w;
                if (!is_behind(w)) {
                    watch_end(w, RAFTKV__KV_ERROR__KV_INTERNAL, why);
                }
            }
            break;
        }
        if (r.err == RAFTKV__KV_ERROR__KV_COMPACTED) {
            /* Compacted within the turn that made the changes: the watches
             * that needed them end; the others go on after it. */
            struct watch *w = h->list, *next;
            for (; w; w = next) {
                next = w->next_w;
                if (!is_behind(w) && w->next <= r.compact_revision) {
                    watch_end(w, RAFTKV__KV_ERROR__KV_COMPACTED,
                              "the history the watch needed is compacted");
                }
            }
            h->rev = r.compact_revision;
            kv_arena_free(&mem);
            continue;
        }
        if (r.err) {
            kv_arena_free(&mem);
            break;
        }
        uint64_t upto = r.next_revision - 1;
        /* The same events without prev_kv, for the watches that did not
         * ask for it. */
        Raftkv__Event **plain = r.events;
        if (any_prev && r.n_events) {
            plain = kv_arena_alloc(&mem, r.n_events * sizeof *plain);
            Raftkv__Event *copies =
                kv_arena_alloc(&mem, r.n_events * sizeof *copies);
            if (!plain || !copies) {
                kv_arena_free(&mem);
                break; /* tried again next turn */
            }
            for (size_t i = 0; i < r.n_events; i++) {
                copies[i] = *r.events[i];
                copies[i].prev_kv = NULL;
                copies[i].prev_kv_missing = false;
                plain[i] = &copies[i];
            }
        }
        /* A run of watches alike (the same range, filters and place: many
         * watchers of one prefix) gets one frame, filtered and packed
         * once. */
        const struct watch *like = NULL;
        uint64_t like_next = 0;
        size_t k = 0, packed_len = 0;
        struct watch *w = h->list, *wn;
        for (; w; w = wn) {
            wn = w->next_w; /* (w may end below) */
            if (is_behind(w) || w->next > upto || w->created_pending) {
                continue; /* catching up, starting later, or not started */
            }
            if (!like || like_next != w->next || !watch_alike(w, like)) {
                run_send(h, packed_len, k, upto); /* the last run's */
                Raftkv__Event **evs = w->prev_kv ? r.events : plain;
                like = w;
                like_next = w->next;
                k = 0;
                packed_len = 0;
                if (!scratch_fit(h, r.n_events)) {
                    like = NULL;
                    continue; /* no memory: it waits for the next turn */
                }
                for (size_t i = 0; i < r.n_events; i++) {
                    if (evs[i]->kv->mod_revision >= w->next &&
                        watch_wants(w, evs[i])) {
                        h->scratch[k++] = evs[i];
                    }
                }
                if (k && !(packed_len = watch_pack(h, h->scratch, k, upto,
                                                   revs.compact))) {
                    like = NULL;
                    continue; /* no memory: it waits for the next turn */
                }
            }
            if (k && packed_len > WATCH_FRAME_BYTES) {
                /* Too big for one frame: in pieces, watch by watch. */
                int rv = watch_deliver(w, h->scratch, k, upto, revs.compact);
                if (rv == 3) {
                    watch_too_big(w); /* frees it: the next filters anew */
                    like = NULL;
                }
                continue;
            }
            if (k && run_add(h, w)) {
                continue; /* sent with its run */
            }
            if (k) {
                continue; /* no memory: stays where it is, behind once
                             rev moves */
            }
            w->next = upto + 1;
        }
        run_send(h, packed_len, k, upto);
        h->rev = upto;
        kv_arena_free(&mem);
    }
    node_state_done(n, txn);
}

/* Read the history for a watch that is behind, until it has caught up
 * with the hub, has no room, or has had its share of this turn. Returns
 * false when the watch ended. */
static bool watch_catch_up(struct watch *w)
{
    struct watch_hub *h = w->hub;
    struct kv_node *n = h->s->node;
    for (int reads = 0; reads < WATCH_CATCHUP_READS && is_behind(w) &&
                        !w->stalled && !w->created_pending;
         reads++) {
        MDB_txn *txn = node_state_read(n, NULL);
        if (!txn) {
            return true;
        }
        struct kv_arena mem = {0};
        Raftkv__EventsArgs a = RAFTKV__EVENTS_ARGS__INIT;
        Raftkv__EventsReply r = RAFTKV__EVENTS_REPLY__INIT;
        a.start_revision = w->next;
        a.key = w->key;
        a.range_end = w->end;
        int rv = kv_mvcc_events(&n->store, txn, &a, w->prev_kv, &mem, &r);
        if (rv) {
            char why[300];
            snprintf(why, sizeof why, "cannot read the history: %.250s",
                     n->store.errmsg);
            kv_arena_free(&mem);
            node_state_done(n, txn);
            hub_read_failed(h, why);
            watch_end(w, RAFTKV__KV_ERROR__KV_INTERNAL, why);
            return false;
        }
        if (rv == 0 && r.err == RAFTKV__KV_ERROR__KV_COMPACTED) {
            kv_arena_free(&mem);
            node_state_done(n, txn);
            watch_end(w, RAFTKV__KV_ERROR__KV_COMPACTED,
                      "the watch fell behind the history kept: resume from "
                      "a revision after compact_revision");
            return false;
        }
        if (rv != 0 || r.err) {
            kv_arena_free(&mem);
            node_state_done(n, txn);
            return true; /* tried again next turn */
        }
        /* Only what the hub has given the others, so that the watch joins
         * them exactly where they are. */
        uint64_t upto = r.next_revision - 1;
        if (upto > h->rev) {
            upto = h->rev;
        }
        size_t k = 0;
        uint32_t skip = w->part; /* of revision w->next, sent already */
        if (!scratch_fit(h, r.n_events)) {
            kv_arena_free(&mem);
            node_state_done(n, txn);
            return true; /* no memory: tried again next turn */
        }
        for (size_t i = 0; i < r.n_events; i++) {
            const Raftkv__Event *ev = r.events[i];
            if (ev->kv->mod_revision > upto ||
                (ev->type == RAFTKV__EVENT__EVENT_TYPE__PUT ? w->no_put
                                                            : w->no_delete)) {
                continue;
            }
            if (skip && ev->kv->mod_revision == w->next) {
                skip--;
                continue;
            }
            h->scratch[k++] = r.events[i];
        }
        int sent = watch_deliver(w, h->scratch, k, upto, r.compact_revision);
        kv_arena_free(&mem);
        node_state_done(n, txn);
        if (sent == 3) {
            watch_too_big(w);
            return false;
        }
        if (sent) {
            return true;
        }
    }
    return true;
}

/* Bring the hub up to date, then the watches that are behind. */
static void hub_pump(struct watch_hub *h)
{
    hub_advance(h);
    struct watch *w = h->list, *next;
    for (; w; w = next) {
        next = w->next_w;
        if (is_behind(w) && !w->stalled) {
            watch_catch_up(w);
        }
    }
    hub_count(h);
}

static void on_stream_event(void *call, int event, void *arg)
{
    (void)call;
    struct watch *w = arg;
    if (event == RPC_STREAM_CANCELLED) {
        watch_end(w, RAFTKV__KV_ERROR__KV_OK, "cancelled");
        return;
    }
    /* Only this watch: the hub moves on at the next turn (and may end
     * watches then). */
    w->stalled = false;
    if (w->created_pending && !watch_send_created(w)) {
        return;
    }
    if (is_behind(w) && watch_catch_up(w) && is_behind(w)) {
        w->hub->behind++; /* (recounted at the next pump) */
    }
}

/* The periodic work: progress frames, watches that lost their leader,
 * catching up. */
static void hub_sweep(struct watch_hub *h)
{
    struct kv_node *n = h->s->node;
    uint64_t now = node_now_ms();
    bool leaderless = raft_leader(n->raft) == 0;
    struct watch *w = h->list, *next;
    for (; w; w = next) {
        next = w->next_w;
        if (w->require_leader && leaderless) {
            watch_end(w, RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                      "the node has no leader (require_leader)");
            continue;
        }
        if (!is_behind(w) && !w->stalled && !w->created_pending &&
            now - w->sent_ms >= w->progress_ms) {
            uint64_t at = w->next - 1 < h->rev ? w->next - 1 : h->rev;
            watch_send(w, NULL, 0, at, 0, false);
        }
    }
}

static void on_node_event(struct kv_node *n, enum node_event ev, void *arg)
{
    (void)n;
    struct watch_hub *h = arg;
    if (ev == NODE_EV_STOPPING) {
        while (h->list) {
            watch_end(h->list, RAFTKV__KV_ERROR__KV_SHUTTING_DOWN,
                      "the node is stopping");
        }
        return;
    }
    if (ev == NODE_EV_APPLIED || h->behind) {
        hub_pump(h);
    }
    if (ev == NODE_EV_SWEEP) {
        hub_sweep(h);
    }
}

static void reply_error(Raftkv__WatchReply_Closure closure,
                        void *data,
                        uint64_t node_id,
                        int err,
                        const char *msg)
{
    Raftkv__WatchReply r = RAFTKV__WATCH_REPLY__INIT;
    r.err = err;
    r.message = (char *)msg;
    r.node_id = node_id;
    closure(&r, data);
}

static bool copy_bytes(ProtobufCBinaryData *to, const ProtobufCBinaryData *from)
{
    to->len = from->len;
    to->data = NULL;
    if (!from->len) {
        return true;
    }
    to->data = malloc(from->len);
    if (to->data) {
        memcpy(to->data, from->data, from->len);
    }
    return to->data != NULL;
}

static void handle_watch(Raftkv__WatchService_Service *svc,
                         const Raftkv__WatchArgs *a,
                         Raftkv__WatchReply_Closure closure,
                         void *data)
{
    struct kv_services *s = services_of_watch(svc);
    struct watch_hub *h = s->watch;
    struct kv_node *n = s->node;
    uint64_t id = n->cfg.id;
    char why[400];
    if (n->stopping) {
        reply_error(closure, data, id, RAFTKV__KV_ERROR__KV_SHUTTING_DOWN,
                    "the node is stopping");
        return;
    }
    int err =
        kv_mvcc_check_range(&n->store, &a->key, &a->range_end, why, sizeof why);
    if (!err) {
        err = auth_check_range(s, data, &a->key, &a->range_end, KV_AUTH_READ,
                               why, sizeof why);
    }
    if (!err && h->n >= WATCH_MAX) {
        err = RAFTKV__KV_ERROR__KV_UNAVAILABLE;
        snprintf(why, sizeof why,
                 "this node has %u watches open, its limit; try another node",
                 WATCH_MAX);
    }
    if (err) {
        reply_error(closure, data, id, err, why);
        return;
    }
    hub_advance(h);
    struct watch *w = calloc(1, sizeof *w);
    if (!w || !copy_bytes(&w->key, &a->key) ||
        !copy_bytes(&w->end, &a->range_end)) {
        if (w) {
            free(w->key.data);
            free(w);
        }
        reply_error(closure, data, id, RAFTKV__KV_ERROR__KV_INTERNAL,
                    "out of memory");
        return;
    }
    w->hub = h;
    w->call = data;
    w->closure = closure;
    w->no_put = a->no_put;
    w->no_delete = a->no_delete;
    w->require_leader = a->require_leader;
    w->prev_kv = a->prev_kv;
    w->next = a->start_revision ? a->start_revision : h->rev + 1;
    w->progress_ms = a->progress_ms ? a->progress_ms : WATCH_DEFAULT_PROGRESS;
    if (w->progress_ms < WATCH_MIN_PROGRESS) {
        w->progress_ms = WATCH_MIN_PROGRESS;
    }
    int orv = rpc_stream_open(data, on_stream_event, w);
    if (orv != 0) {
        free(w->key.data);
        free(w->end.data);
        free(w);
        reply_error(closure, data, id,
                    orv == RPC_E_OVERLOADED ? RAFTKV__KV_ERROR__KV_UNAVAILABLE
                                            : RAFTKV__KV_ERROR__KV_INTERNAL,
                    orv == RPC_E_OVERLOADED
                        ? "too many streams open on this connection: close "
                          "some, or use another connection"
                        : "cannot open the stream");
        return;
    }
    w->next_w = h->list;
    if (h->list) {
        h->list->prev = w;
    }
    h->list = w;
    h->n++;
    if (w->require_leader && raft_leader(n->raft) == 0) {
        watch_end(w, RAFTKV__KV_ERROR__KV_UNAVAILABLE,
                  "the node has no leader (require_leader)");
        return;
    }
    /* The first frame says where the watch starts. */
    struct kv_revs revs = {0};
    MDB_txn *txn = node_state_read(n, NULL);
    if (txn) {
        kv_mvcc_revs(&n->store, txn, &revs);
        node_state_done(n, txn);
    }
    if (w->next <= revs.compact) {
        watch_end(w, RAFTKV__KV_ERROR__KV_COMPACTED,
                  "the history before that revision is compacted");
        return;
    }
    if (watch_send_created(w) && is_behind(w) && watch_catch_up(w) &&
        is_behind(w)) {
        h->behind++; /* (recounted at the next pump) */
    }
}

int watch_service_init(struct kv_services *s)
{
    struct watch_hub *h = calloc(1, sizeof *h);
    if (!h) {
        fprintf(stderr, "kvserver: out of memory\n");
        return -1;
    }
    h->s = s;
    s->watch = h;
    struct kv_node *n = s->node;
    MDB_txn *txn = node_state_read(n, NULL);
    struct kv_revs revs = {0};
    if (txn) {
        kv_mvcc_revs(&n->store, txn, &revs);
        node_state_done(n, txn);
    }
    h->rev = revs.revision;
    Raftkv__WatchService_Service init = RAFTKV__WATCH_SERVICE__INIT(handle_);
    s->watch_svc = init;
    return node_subscribe(n, NODE_EV_APPLIED | NODE_EV_SWEEP | NODE_EV_STOPPING,
                          on_node_event, h);
}

void watch_service_free(struct kv_services *s)
{
    if (s->watch) {
        free(s->watch->scratch);
        free(s->watch->pack);
        free(s->watch->run);
        free(s->watch->run_calls);
        free(s->watch->run_results);
        free(s->watch);
        s->watch = NULL;
    }
}

void watch_stats(const struct kv_services *s,
                 uint64_t *watches,
                 uint64_t *events_sent)
{
    *watches = s->watch ? s->watch->n : 0;
    *events_sent = s->watch ? s->watch->events_sent : 0;
}
