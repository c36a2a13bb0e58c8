/* watch.c: clerk_watch: a WatchService stream on a connection of its own,
 * resumed on another server from the revision after the last delivered. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <proto/kv.pb-c.h>
#include <rpc/rpc.h>

#include "clerk/clerk.h"
#include "internal.h"

#define RETRY_MIN_MS  20  /* first wait before reconnecting */
#define RETRY_MAX_MS  500 /* longest */
#define WAIT_SLICE_MS 200 /* rpc_channel_wait at most this long at once */
/* A watch asks for progress frames this often when its caller did not
 * (they are not handed out then): a stream silent for SILENT_TIMES that
 * long is taken for broken (a node frozen, or a network that drops
 * without closing) and the watch moves on. */
#define PROGRESS_MS  1000
#define SILENT_TIMES 3

/* A batch received, not yet handed to the caller. */
struct batch
{
    struct clerk_events_result *r;
    struct batch *next;
};

struct clerk_watch
{
    struct clerk *c;              /* the handle (borrowed) */
    ProtobufCBinaryData key, end; /* the range (owned copies) */
    struct clerk_watch_options o; /* as opened */
    size_t server;                /* the server it uses or tries next */
    struct rpc_channel *ch;       /* its connection, or NULL */
    struct rpc_stream *st;        /* the open stream, or NULL */
    bool created;                 /* a node accepted the watch */
    uint64_t next;                /* first revision not delivered (0:
                                     not known before the first node
                                     accepts a watch from now) */
    uint64_t given;               /* every change up to this revision was
                                     handed to the caller (batches queued
                                     but not yet taken are past it) */
    struct batch *head, *tail;    /* batches to hand out */
    int ended;                    /* the watch is over: why (clerk
                                     error), else 0 */
    uint64_t retry_at;            /* no reconnect before (ms) */
    unsigned retry_ms;            /* the wait after the next failure */
    char errmsg[512];             /* why it ended, or the last failure */
    uint64_t part_rev;            /* the newest revision delivered, of
                                 which ... */
    uint32_t part_count;          /* ... this many events (a node sends a
                                     revision too big for one frame in
                                     pieces) */
    uint32_t skip;                /* events of part_rev that the stream
                                     resumed since will send again */
    uint64_t started_ms;          /* when the stream was started */
    uint64_t pumped_ms;           /* when the caller last stopped reading
                                     (pump returned) */
    uint64_t frame_ms;            /* when its last frame came */
    unsigned attempt_ms;          /* the handle's per-server deadline */
    size_t refused;               /* tries in a row that made no
                                     connection (ck_tried) */
    /* clerk_watch_start: */
    clerk_watch_cb cb;    /* the caller's callback, or NULL */
    void *cb_arg;         /* its argument */
    pthread_t thread;     /* runs the watch */
    atomic_bool stop;     /* clerk_watch_close asked it to end */
    atomic_bool detached; /* closed from the callback: the thread
                             frees the watch itself */
};

/* The stream broke or the node gave up on it (@t: what the try came
 * to): try another server after a pause that grows while failures
 * repeat; end at once when every server refused the connection and none
 * ever answered the handle, as its other calls do. */
static void broken(struct clerk_watch *w, enum ck_try t, const char *why)
{
    if (ck_tried_locked(w->c, &w->refused, t)) {
        char all[300];
        ck_refused_text(w->c, all, sizeof all);
        w->ended = CLERK_UNAVAILABLE;
        snprintf(w->errmsg, sizeof w->errmsg, "%.250s (last: %.200s)", all,
                 why);
        return;
    }
    snprintf(w->errmsg, sizeof w->errmsg, "watch at %s: %s",
             ck_server_addr(w->c, w->server), why);
    w->server = (w->server + 1) % ck_n_servers(w->c);
    w->retry_at = ck_now_ms() + w->retry_ms;
    w->retry_ms =
        w->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : w->retry_ms * 2;
}

static void queue(struct clerk_watch *w, struct clerk_events_result *r)
{
    struct batch *b = malloc(sizeof *b);
    if (!b) {
        clerk_events_result_free(r);
        w->ended = CLERK_NOMEM;
        snprintf(w->errmsg, sizeof w->errmsg, "out of memory");
        return;
    }
    b->r = r;
    b->next = NULL;
    if (w->tail) {
        w->tail->next = b;
    } else {
        w->head = b;
    }
    w->tail = b;
}

/* A frame of the stream (end false), or its end. */
static void on_frame(struct rpc_stream *st,
                     const ProtobufCMessage *msg,
                     bool end,
                     void *arg)
{
    (void)st;
    struct clerk_watch *w = arg;
    const Raftkv__WatchReply *r = (const Raftkv__WatchReply *)msg;
    w->frame_ms = ck_now_ms();
    if (end) {
        w->st = NULL; /* freed by the channel after this */
        if (!r) {
            broken(w, ck_try_of_status(rpc_last_status()), rpc_last_error());
        } else if (r->err == RAFTKV__KV_ERROR__KV_COMPACTED) {
            w->ended = CLERK_COMPACTED;
            snprintf(w->errmsg, sizeof w->errmsg,
                     "watch at %s: %s (history kept after revision %llu)",
                     ck_server_addr(w->c, w->server),
                     r->message && *r->message ? r->message : "compacted",
                     (unsigned long long)r->compact_revision);
        } else if (r->err == RAFTKV__KV_ERROR__KV_OK ||
                   r->err == RAFTKV__KV_ERROR__KV_SHUTTING_DOWN ||
                   r->err == RAFTKV__KV_ERROR__KV_UNAVAILABLE ||
                   r->err == RAFTKV__KV_ERROR__KV_INTERNAL) {
            broken(w, CK_TRY_ANSWERED,
                   r->message && *r->message ? r->message
                                             : "the node ended the watch");
        } else {
            w->ended = ck_error_of(r->err);
            snprintf(w->errmsg, sizeof w->errmsg, "watch at %s: %s",
                     ck_server_addr(w->c, w->server),
                     r->message && *r->message ? r->message
                                               : clerk_strerror(w->ended));
        }
        return;
    }
    if (r->created) {
        w->created = true;
        ck_tried_locked(w->c, &w->refused, CK_TRY_ANSWERED); /* served */
        if (!w->next) {
            w->next = r->revision + 1;
            w->given = r->revision; /* where it starts */
        }
        return;
    }
    /* Only what was not delivered before (a node that resumed the watch
     * starts at w->next: this drops nothing in practice). */
    Raftkv__Event **keep =
        malloc((r->n_events ? r->n_events : 1) * sizeof *keep);
    if (!keep) {
        w->ended = CLERK_NOMEM;
        snprintf(w->errmsg, sizeof w->errmsg, "out of memory");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < r->n_events; i++) {
        if (!r->events[i]->kv) {
            continue;
        }
        uint64_t rev = r->events[i]->kv->mod_revision;
        if (rev < w->next) {
            continue; /* delivered before */
        }
        if (rev == w->part_rev && w->skip) {
            w->skip--; /* the start of a revision given in part before */
            continue;
        }
        if (rev == w->part_rev) {
            w->part_count++;
        } else {
            w->part_rev = rev;
            w->part_count = 1;
            w->skip = 0;
        }
        keep[k++] = r->events[i];
    }
    if ((r->revision + 1 < w->next || !w->o.progress_ms) && !k) {
        free(keep);
        /* Nothing new (an old progress frame), or progress the caller did
         * not ask for (the watch's own, to see that the node lives). */
        if (r->revision + 1 > w->next) {
            w->next = r->revision + 1;
        }
        return;
    }
    struct clerk_events_result *b = ck_events_of(keep, k, w->o.prev_kv);
    free(keep);
    if (!b) {
        w->ended = CLERK_NOMEM;
        snprintf(w->errmsg, sizeof w->errmsg, "out of memory");
        return;
    }
    if (r->revision + 1 > w->next) {
        w->next = r->revision + 1;
    }
    if (w->part_rev < w->next) {
        w->part_rev = 0; /* complete: nothing of it to skip */
        w->part_count = 0;
    }
    b->revision = w->next - 1;
    b->compact_revision = r->compact_revision;
    b->next_revision = w->next;
    w->retry_ms = RETRY_MIN_MS; /* it works again */
    queue(w, b);
}

/* Start the stream on w->server (a new connection each time). */
static void connect_stream(struct clerk_watch *w)
{
    if (w->ch) {
        rpc_channel_free(w->ch);
        w->ch = NULL;
    }
    w->created = false;
    w->ch = ck_channel_new(w->c, w->server);
    if (!w->ch) {
        broken(w, CK_TRY_SILENT, "out of memory");
        return;
    }
    Raftkv__WatchArgs a = RAFTKV__WATCH_ARGS__INIT;
    a.key = w->key;
    a.range_end = w->end;
    a.start_revision = w->next ? w->next : w->o.start_revision;
    /* A revision given in part: the node sends it from its start. */
    w->skip = w->next && w->part_rev == w->next ? w->part_count : 0;
    a.no_put = w->o.no_put;
    a.no_delete = w->o.no_delete;
    a.require_leader = w->o.require_leader;
    a.progress_ms = w->o.progress_ms ? w->o.progress_ms : PROGRESS_MS;
    a.prev_kv = w->o.prev_kv;
    w->started_ms = w->frame_ms = ck_now_ms();
    w->st = rpc_channel_stream(w->ch, &raftkv__watch_service__descriptor,
                               "Watch", &a.base, on_frame, w);
    if (!w->st) {
        broken(w, ck_try_of_status(rpc_last_status()), rpc_last_error());
    }
}

/* Run the watch until a batch is queued, it ends, or @deadline (ms). With
 * @until_created, until a node has accepted it instead. */
static void pump_loop(struct clerk_watch *w,
                      uint64_t deadline,
                      bool until_created);

static void pump(struct clerk_watch *w, uint64_t deadline, bool until_created)
{
    /* The time the caller was not reading is not the node's silence:
     * frames may be waiting unread. */
    uint64_t entry = ck_now_ms();
    if (w->pumped_ms && entry > w->pumped_ms) {
        w->frame_ms += entry - w->pumped_ms;
        w->started_ms += entry - w->pumped_ms;
    }
    pump_loop(w, deadline, until_created);
    w->pumped_ms = ck_now_ms();
}

static void pump_loop(struct clerk_watch *w,
                      uint64_t deadline,
                      bool until_created)
{
    for (;;) {
        if (w->ended || (until_created ? w->created : w->head != NULL)) {
            return;
        }
        uint64_t now = ck_now_ms();
        if (now >= deadline) {
            return;
        }
        if (!w->st) {
            if (now < w->retry_at) {
                uint64_t until =
                    w->retry_at < deadline ? w->retry_at : deadline;
                ck_sleep_ms(until - now);
                continue;
            }
            connect_stream(w);
            continue;
        }
        /* A node that accepted the connection but does not answer (it is
         * stopped), or went silent: try the next. */
        uint64_t progress = w->o.progress_ms ? w->o.progress_ms : PROGRESS_MS;
        bool mute = !w->created && now - w->started_ms > w->attempt_ms;
        bool silent =
            w->created && now - w->frame_ms > SILENT_TIMES * progress + 1000;
        if (mute || silent) {
            char why[120];
            snprintf(why, sizeof why, "%s for %llu ms",
                     mute ? "no answer" : "no frame",
                     (unsigned long long)(now - (mute ? w->started_ms
                                                      : w->frame_ms)));
            rpc_stream_cancel(w->st);
            w->st = NULL;
            broken(w, CK_TRY_SILENT, why);
            continue;
        }
        uint64_t left = deadline - now;
        rpc_channel_wait(w->ch,
                         left < WAIT_SLICE_MS ? (uint32_t)left : WAIT_SLICE_MS);
    }
}

static bool copy_bytes(ProtobufCBinaryData *to, const void *p, size_t n)
{
    to->len = n;
    to->data = NULL;
    if (!n) {
        return true;
    }
    to->data = malloc(n);
    if (to->data) {
        memcpy(to->data, p, n);
    }
    return to->data != NULL;
}

int clerk_watch_open(struct clerk *c,
                     const void *key,
                     size_t key_len,
                     const void *range_end,
                     size_t range_end_len,
                     const struct clerk_watch_options *o,
                     struct clerk_watch **out)
{
    if (out) {
        *out = NULL;
    }
    if (!c || !out || (!key && key_len) || (!range_end && range_end_len)) {
        return CLERK_INVALID;
    }
    if (!key_len) {
        ck_set_errmsg(c, "watch: the key is empty");
        return CLERK_BAD_REQUEST;
    }
    struct clerk_watch *w = calloc(1, sizeof *w);
    if (!w || !copy_bytes(&w->key, key, key_len) ||
        !copy_bytes(&w->end, range_end, range_end_len)) {
        clerk_watch_close(w);
        return CLERK_NOMEM;
    }
    w->c = c;
    if (o) {
        w->o = *o;
    }
    w->server = ck_preferred_server(c);
    w->retry_ms = RETRY_MIN_MS;
    w->attempt_ms = ck_attempt_ms(c);
    pump(w, ck_now_ms() + ck_deadline_ms(c), true);
    if (!w->created) {
        int rv = w->ended ? w->ended : CLERK_UNAVAILABLE;
        if (!w->ended) {
            char why[600];
            snprintf(why, sizeof why, "no server accepted the watch (last: %s)",
                     w->errmsg[0] ? w->errmsg : "no answer");
            ck_set_errmsg(c, why);
        } else {
            ck_set_errmsg(c, w->errmsg);
        }
        clerk_watch_close(w);
        return rv;
    }
    *out = w;
    return CLERK_OK;
}

int clerk_watch_next(struct clerk_watch *w,
                     unsigned timeout_ms,
                     struct clerk_events_result **out)
{
    if (out) {
        *out = NULL;
    }
    if (!w || !out) {
        return CLERK_INVALID;
    }
    pump(w, ck_now_ms() + timeout_ms, false);
    if (w->head) {
        struct batch *b = w->head;
        w->head = b->next;
        if (!w->head) {
            w->tail = NULL;
        }
        *out = b->r;
        w->given = b->r->revision;
        free(b);
        return CLERK_OK;
    }
    return w->ended ? w->ended : CLERK_TIMEOUT;
}

uint64_t clerk_watch_revision(const struct clerk_watch *w)
{
    return w ? w->given : 0;
}

const char *clerk_watch_errmsg(const struct clerk_watch *w)
{
    return w ? w->errmsg : "";
}

static void watch_free(struct clerk_watch *w);

/* The thread of clerk_watch_start: batches to the callback until the
 * watch ends or is closed. */
static void *watch_thread(void *arg)
{
    struct clerk_watch *w = arg;
    while (!atomic_load(&w->stop)) {
        struct clerk_events_result *b = NULL;
        int err = clerk_watch_next(w, WAIT_SLICE_MS, &b);
        if (err == CLERK_TIMEOUT) {
            continue;
        }
        if (atomic_load(&w->stop)) {
            clerk_events_result_free(b);
            break;
        }
        w->cb(w, b, err, w->cb_arg);
        clerk_events_result_free(b);
        if (err) {
            /* Over: the caller still closes it (or did, from the
             * callback). */
            while (!atomic_load(&w->stop)) {
                ck_sleep_ms(20);
            }
        }
    }
    if (atomic_load(&w->detached)) {
        watch_free(w);
    }
    return NULL;
}

int clerk_watch_start(struct clerk *c,
                      const void *key,
                      size_t key_len,
                      const void *range_end,
                      size_t range_end_len,
                      const struct clerk_watch_options *o,
                      clerk_watch_cb cb,
                      void *arg,
                      struct clerk_watch **out)
{
    if (out) {
        *out = NULL;
    }
    if (!cb || !out) {
        return CLERK_INVALID;
    }
    struct clerk_watch *w;
    int rv = clerk_watch_open(c, key, key_len, range_end, range_end_len, o, &w);
    if (rv) {
        return rv;
    }
    w->cb = cb;
    w->cb_arg = arg;
    atomic_init(&w->stop, false);
    atomic_init(&w->detached, false);
    if (pthread_create(&w->thread, NULL, watch_thread, w) != 0) {
        w->cb = NULL;
        clerk_watch_close(w);
        ck_set_errmsg(c, "watch: cannot start its thread");
        return CLERK_NOMEM;
    }
    *out = w;
    return CLERK_OK;
}

void clerk_watch_close(struct clerk_watch *w)
{
    if (!w) {
        return;
    }
    if (w->cb) {
        atomic_store(&w->stop, true);
        if (pthread_equal(pthread_self(), w->thread)) {
            /* From the callback: the thread frees it when it returns. */
            atomic_store(&w->detached, true);
            pthread_detach(w->thread);
            return;
        }
        pthread_join(w->thread, NULL);
    }
    watch_free(w);
}

static void watch_free(struct clerk_watch *w)
{
    if (w->st) {
        rpc_stream_cancel(w->st);
        rpc_channel_flush(w->ch);
    }
    rpc_channel_free(w->ch);
    while (w->head) {
        struct batch *b = w->head;
        w->head = b->next;
        clerk_events_result_free(b->r);
        free(b);
    }
    free(w->key.data);
    free(w->end.data);
    free(w);
}
