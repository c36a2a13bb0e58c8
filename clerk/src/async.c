/* async.c: the clerk_async_* API over the op machine (op.c): handles on
 * a libevent base or on a base of their own behind a pollable fd. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include <proto/kv.pb-c.h>

#include "clerk/clerk.h"
#include "internal.h"
#include "op.h"

/* The async call the datamodel builders start instead of running it (see
 * ck_call): set by the clerk_async_* calls around a blocking builder. */
struct capture
{
    struct clerk_async *a; /* the async handle */
    enum reply_kind kind;  /* what its result is */
    clerk_async_cb cb;     /* the caller's callback */
    void *arg;             /* its argument */
    bool started;          /* ck_call started it */
    int rv;                /* what starting it returned */
};

static _Thread_local struct capture *capture;

bool ck_capturing(void)
{
    return capture != NULL;
}

/* An async handle: a struct clerk on the caller's event base, or on one
 * of its own that clerk_async_process runs (the pollable-fd mode). */
struct clerk_async
{
    struct clerk *c;    /* the handle */
    bool fd_mode;       /* base is ours; epfd is the caller's to poll */
    int epfd;           /* fd mode: the sockets and tfd */
    int tfd;            /* fd mode: a timerfd for the next timeout */
    struct ck_fd *fds;  /* fd mode: what epfd watches */
    size_t n_fds;       /* entries */
    size_t cap_fds;     /* room */
    bool dirty;         /* fd mode: epfd is behind the base's events */
    uint64_t next_ms;   /* fd mode: the next timeout (ck_now_ms), or 0 */
    bool in_process;    /* inside clerk_async_process */
    bool close_pending; /* closed from a callback: free when it returns */
    char errmsg[512];   /* why the last call was refused */
};

/* An fd in epfd and the events asked for. */
struct ck_fd
{
    int fd;          /* the socket */
    uint32_t events; /* EPOLLIN | EPOLLOUT */
};

static void mark_dirty(struct clerk_async *a);

static void async_done(struct ck_op *op, int rv, struct outcome *o)
{
    struct clerk_async_reply r = {.err = rv,
                                  .errmsg = o->errmsg,
                                  .maybe_applied = o->retried,
                                  .compact_revision = o->compact_revision};
    bool ok = rv == CLERK_OK || rv == CLERK_CAS_MISMATCH;
    struct ck_value *v = o->result;
    switch (op->kind) {
        case KIND_GET:
            if (ok && v) {
                r.value = v->data;
                r.value_len = v->len;
            }
            break;
        case KIND_CAS:
            if (rv == CLERK_OK && v && !v->swapped) {
                r.err = CLERK_CAS_MISMATCH;
                r.value = v->data;
                r.value_len = v->len;
            }
            break;
        case KIND_PUT:
            r.put = o->result;
            break;
        case KIND_DELETE:
            r.deleted = o->result;
            break;
        case KIND_RANGE:
            r.range = o->result;
            break;
        case KIND_TXN:
            r.txn = o->result;
            break;
        case KIND_NONE:
            break;
    }
    if (op->ucb) {
        op->ucb(op->ua, &r, op->uarg);
    }
}

/* Start @k as the async call the capture describes. */
int ck_capture_start(struct ck_call *k)
{
    struct capture *cp = capture;
    struct ck_op *op;
    cp->started = true;
    cp->rv = ck_op_create(cp->a->c, k, true, async_done, NULL, &op);
    if (cp->rv == CLERK_OK) {
        op->kind = cp->kind;
        op->ucb = cp->cb;
        op->uarg = cp->arg;
        op->ua = cp->a;
        ck_op_run(op);
        mark_dirty(cp->a);
    }
    return cp->rv;
}

/* Start @k on @a; its reply goes to @cb as @kind. */
static int async_start(struct clerk_async *a,
                       struct ck_call *k,
                       enum reply_kind kind,
                       clerk_async_cb cb,
                       void *arg)
{
    struct capture cp = {.a = a, .kind = kind, .cb = cb, .arg = arg};
    capture = &cp;
    int rv = ck_capture_start(k);
    capture = NULL;
    return rv;
}

const char *clerk_version(void)
{
    return CLERK_VERSION;
}

static int async_new(struct clerk_async **out,
                     const char *servers,
                     const struct clerk_options *opts,
                     struct event_base *base)
{
    struct clerk_async *a = calloc(1, sizeof *a);
    if (!a) {
        return CLERK_NOMEM;
    }
    a->epfd = a->tfd = -1;
    int rv = ck_open_on(&a->c, servers, opts, base);
    if (rv) {
        free(a);
        return rv;
    }
    *out = a;
    return CLERK_OK;
}

int clerk_async_open(struct clerk_async **out,
                     const char *servers,
                     const struct clerk_options *opts,
                     struct event_base *base)
{
    if (!out || !base) {
        return CLERK_INVALID;
    }
    return async_new(out, servers, opts, base);
}

int clerk_async_open_fd(struct clerk_async **out,
                        const char *servers,
                        const struct clerk_options *opts)
{
    if (!out) {
        return CLERK_INVALID;
    }
    struct clerk_async *a;
    int rv = async_new(&a, servers, opts, NULL);
    if (rv) {
        return rv;
    }
    a->fd_mode = true;
    a->epfd = epoll_create1(EPOLL_CLOEXEC);
    a->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = a->tfd};
    if (a->epfd < 0 || a->tfd < 0 ||
        epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->tfd, &ev) != 0) {
        clerk_async_close(a);
        return CLERK_NOMEM;
    }
    *out = a;
    return CLERK_OK;
}

/* Free the handle (its ops have ended). */
static void async_free(struct clerk_async *a)
{
    clerk_close(a->c);
    if (a->epfd >= 0) {
        close(a->epfd);
    }
    if (a->tfd >= 0) {
        close(a->tfd);
    }
    free(a->fds);
    free(a);
}

static void on_deferred_free(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    async_free(arg);
}

void clerk_async_close(struct clerk_async *a)
{
    if (!a || a->c->closing) {
        return;
    }
    ck_shutdown(a->c);
    if (a->fd_mode && (a->in_process || a->c->depth > 0)) {
        /* clerk_async_process frees it when its loop is done. */
        a->close_pending = true;
        mark_dirty(a);
    } else if (a->c->depth > 0) {
        /* Inside a callback that a channel's reply ran: the channel is
         * still reading. Free the handle on the loop's next turn. */
        struct timeval now = {0, 0};
        if (event_base_once(a->c->base, -1, EV_TIMEOUT, on_deferred_free, a,
                            &now) != 0) {
            /* No memory for it: the handle stays allocated. */
        }
    } else {
        async_free(a);
    }
}

const char *clerk_async_errmsg(const struct clerk_async *a)
{
    return a->c->errmsg;
}

size_t clerk_async_pending(const struct clerk_async *a)
{
    size_t n = 0;
    for (const struct ck_op *op = a->c->ops; op; op = op->next) {
        n += !op->open_session;
    }
    return n;
}

void clerk_async_set_deadline(struct clerk_async *a, unsigned ms)
{
    clerk_set_deadline(a->c, ms);
}

void clerk_async_set_read_mode(struct clerk_async *a, enum clerk_read_mode mode)
{
    clerk_set_read_mode(a->c, mode);
}

static int check_key(struct clerk_async *a,
                     const void *key,
                     size_t key_len,
                     const void *value,
                     size_t value_len,
                     clerk_async_cb cb)
{
    if (!a || !cb || (!key && key_len) || (!value && value_len)) {
        return CLERK_INVALID;
    }
    if (key_len == 0) {
        ck_errmsgf(a->c, "the key is empty");
        return CLERK_BAD_REQUEST;
    }
    if (a->c->closing) {
        return CLERK_CLOSED;
    }
    return CLERK_OK;
}

int clerk_async_get(struct clerk_async *a,
                    const void *key,
                    size_t key_len,
                    clerk_async_cb cb,
                    void *arg)
{
    int rv = check_key(a, key, key_len, NULL, 0, cb);
    if (rv) {
        return rv;
    }
    Raftkv__GetArgs g = RAFTKV__GET_ARGS__INIT;
    g.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    struct ck_call k = {.method = "Get",
                        .args = &g.base,
                        .take = ck_take_get,
                        .drop = ck_drop_value};
    return async_start(a, &k, KIND_GET, cb, arg);
}

static int put_append(struct clerk_async *a,
                      Raftkv__PutOp op,
                      const void *key,
                      size_t key_len,
                      const void *value,
                      size_t value_len,
                      clerk_async_cb cb,
                      void *arg)
{
    int rv = check_key(a, key, key_len, value, value_len, cb);
    if (rv) {
        return rv;
    }
    Raftkv__PutAppendArgs p = RAFTKV__PUT_APPEND_ARGS__INIT;
    p.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    p.value = (ProtobufCBinaryData){value_len, (uint8_t *)value};
    p.op = op;
    struct ck_call k = {
        .method = "PutAppend", .args = &p.base, .write = true, .session = true};
    return async_start(a, &k, KIND_NONE, cb, arg);
}

int clerk_async_put(struct clerk_async *a,
                    const void *key,
                    size_t key_len,
                    const void *value,
                    size_t value_len,
                    clerk_async_cb cb,
                    void *arg)
{
    return put_append(a, RAFTKV__PUT_OP__PUT_OP_PUT, key, key_len, value,
                      value_len, cb, arg);
}

int clerk_async_append(struct clerk_async *a,
                       const void *key,
                       size_t key_len,
                       const void *value,
                       size_t value_len,
                       clerk_async_cb cb,
                       void *arg)
{
    return put_append(a, RAFTKV__PUT_OP__PUT_OP_APPEND, key, key_len, value,
                      value_len, cb, arg);
}

int clerk_async_delete(struct clerk_async *a,
                       const void *key,
                       size_t key_len,
                       clerk_async_cb cb,
                       void *arg)
{
    int rv = check_key(a, key, key_len, NULL, 0, cb);
    if (rv) {
        return rv;
    }
    Raftkv__DeleteArgs d = RAFTKV__DELETE_ARGS__INIT;
    d.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    struct ck_call k = {
        .method = "Delete", .args = &d.base, .write = true, .session = true};
    return async_start(a, &k, KIND_NONE, cb, arg);
}

int clerk_async_cas(struct clerk_async *a,
                    const void *key,
                    size_t key_len,
                    const void *expected,
                    size_t expected_len,
                    const void *new_value,
                    size_t new_len,
                    clerk_async_cb cb,
                    void *arg)
{
    int rv = check_key(a, key, key_len, new_value, new_len, cb);
    if (rv || (!expected && expected_len)) {
        return rv ? rv : CLERK_INVALID;
    }
    Raftkv__CompareAndSwapArgs s = RAFTKV__COMPARE_AND_SWAP_ARGS__INIT;
    s.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    if (expected) {
        s.expected_case =
            RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECTED_VALUE;
        s.expected_value =
            (ProtobufCBinaryData){expected_len, (uint8_t *)expected};
    } else {
        s.expected_case = RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECT_ABSENT;
        s.expect_absent = 1;
    }
    s.new_value = (ProtobufCBinaryData){new_len, (uint8_t *)new_value};
    struct ck_call k = {.method = "CompareAndSwap",
                        .args = &s.base,
                        .write = true,
                        .session = true,
                        .take = ck_take_cas,
                        .drop = ck_drop_value};
    return async_start(a, &k, KIND_CAS, cb, arg);
}

/* Run a blocking builder of datamodel.c with a capture set: its ck_call
 * starts the call on @a instead of running it. */
#define CAPTURED(a, kind_, cb_, arg_, call)                         \
    do {                                                            \
        if (!(a) || !(cb_)) {                                       \
            return CLERK_INVALID;                                   \
        }                                                           \
        if ((a)->c->closing) {                                      \
            return CLERK_CLOSED;                                    \
        }                                                           \
        struct capture cp_ = {                                      \
            .a = (a), .kind = (kind_), .cb = (cb_), .arg = (arg_)}; \
        capture = &cp_;                                             \
        int rv_ = (call);                                           \
        capture = NULL;                                             \
        return cp_.started ? cp_.rv : (rv_ ? rv_ : CLERK_INTERNAL); \
    } while (0)

int clerk_async_put_ex(struct clerk_async *a,
                       const void *key,
                       size_t key_len,
                       const void *value,
                       size_t value_len,
                       uint64_t lease,
                       unsigned flags,
                       clerk_async_cb cb,
                       void *arg)
{
    struct clerk_put_result *r;
    CAPTURED(a, KIND_PUT, cb, arg,
             ck_put(a->c, key, key_len, value, value_len, lease, flags, &r));
}

int clerk_async_range(struct clerk_async *a,
                      const void *key,
                      size_t key_len,
                      const void *range_end,
                      size_t range_end_len,
                      uint64_t limit,
                      unsigned flags,
                      clerk_async_cb cb,
                      void *arg)
{
    struct clerk_range_result *r;
    CAPTURED(a, KIND_RANGE, cb, arg,
             clerk_range(a->c, key, key_len, range_end, range_end_len, limit,
                         flags, &r));
}

int clerk_async_delete_range(struct clerk_async *a,
                             const void *key,
                             size_t key_len,
                             const void *range_end,
                             size_t range_end_len,
                             unsigned flags,
                             clerk_async_cb cb,
                             void *arg)
{
    struct clerk_delete_result *r;
    CAPTURED(a, KIND_DELETE, cb, arg,
             clerk_delete_range(a->c, key, key_len, range_end, range_end_len,
                                flags, &r));
}

int clerk_async_txn(struct clerk_async *a,
                    const struct clerk_txn *t,
                    clerk_async_cb cb,
                    void *arg)
{
    struct clerk_txn_result *r;
    CAPTURED(a, KIND_TXN, cb, arg, clerk_txn_commit(a->c, t, &r));
}

/* ------------------------------------------------------ pollable fd */

/* The events of the base, gathered for epfd. */
struct gather
{
    struct ck_fd *fds;   /* fds and what they wait for */
    size_t n, cap;       /* entries, room */
    struct timeval next; /* the earliest timeout (wall clock) */
    bool has_next;       /* one was seen */
    bool nomem;          /* out of memory */
};

static int gather_event(const struct event_base *b,
                        const struct event *cev,
                        void *arg)
{
    (void)b;
    struct gather *g = arg;
    struct event *ev = (struct event *)cev;
    struct timeval tv;
    if (event_pending(ev, EV_TIMEOUT, &tv)) {
        if (!g->has_next || evutil_timercmp(&tv, &g->next, <)) {
            g->next = tv;
            g->has_next = true;
        }
    }
    int fd = event_get_fd(ev);
    short what = (short)event_pending(ev, EV_READ | EV_WRITE, NULL);
    if (fd < 0 || !what) {
        return 0;
    }
    uint32_t e =
        (what & EV_READ ? EPOLLIN : 0) | (what & EV_WRITE ? EPOLLOUT : 0);
    for (size_t k = 0; k < g->n; k++) {
        if (g->fds[k].fd == fd) {
            g->fds[k].events |= e;
            return 0;
        }
    }
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        struct ck_fd *p = realloc(g->fds, cap * sizeof *p);
        if (!p) {
            g->nomem = true;
            return 0;
        }
        g->fds = p;
        g->cap = cap;
    }
    g->fds[g->n++] = (struct ck_fd){fd, e};
    return 0;
}

/* Make epfd watch what the base waits for, and the timerfd fire at its
 * next timeout. */
static int sync_fds(struct clerk_async *a)
{
    struct gather g = {0};
    event_base_foreach_event(a->c->base, gather_event, &g);
    if (g.nomem) {
        free(g.fds);
        return CLERK_NOMEM;
    }
    for (size_t k = 0; k < a->n_fds; k++) {
        bool kept = false;
        for (size_t j = 0; j < g.n && !kept; j++) {
            kept = g.fds[j].fd == a->fds[k].fd;
        }
        if (!kept) {
            epoll_ctl(a->epfd, EPOLL_CTL_DEL, a->fds[k].fd, NULL);
        }
    }
    for (size_t j = 0; j < g.n; j++) {
        const struct ck_fd *was = NULL;
        for (size_t k = 0; k < a->n_fds && !was; k++) {
            was = a->fds[k].fd == g.fds[j].fd ? &a->fds[k] : NULL;
        }
        if (was && was->events == g.fds[j].events) {
            continue;
        }
        struct epoll_event ev = {.events = g.fds[j].events,
                                 .data.fd = g.fds[j].fd};
        /* An fd closed and opened again under the same number left epfd
         * when it closed: add it again. */
        if (epoll_ctl(a->epfd, was ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, g.fds[j].fd,
                      &ev) != 0) {
            epoll_ctl(a->epfd, was ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, g.fds[j].fd,
                      &ev);
        }
    }
    free(a->fds);
    a->fds = g.fds;
    a->n_fds = g.n;
    a->cap_fds = g.cap;
    struct itimerspec its = {{0, 0}, {0, 0}};
    a->next_ms = 0;
    if (event_base_get_num_events(a->c->base, EVENT_BASE_COUNT_ACTIVE) > 0) {
        its.it_value.tv_nsec = 1; /* at once */
        a->next_ms = ck_now_ms();
    } else if (g.has_next) {
        struct timeval now, d;
        gettimeofday(&now, NULL);
        if (evutil_timercmp(&g.next, &now, >)) {
            evutil_timersub(&g.next, &now, &d);
        } else {
            d = (struct timeval){0, 0};
        }
        its.it_value.tv_sec = d.tv_sec;
        its.it_value.tv_nsec = d.tv_usec * 1000 + 1;
        a->next_ms = ck_now_ms() + (uint64_t)d.tv_sec * 1000 +
                     (uint64_t)(d.tv_usec + 999) / 1000;
    }
    timerfd_settime(a->tfd, 0, &its, NULL);
    a->dirty = false;
    return CLERK_OK;
}

/* fd mode: a call started outside clerk_async_process needs its fds in
 * epfd: make epfd readable at once so that the caller comes to
 * clerk_async_process. */
static void mark_dirty(struct clerk_async *a)
{
    if (!a->fd_mode || a->in_process || a->dirty) {
        return;
    }
    a->dirty = true;
    struct itimerspec its = {{0, 0}, {0, 1}};
    timerfd_settime(a->tfd, 0, &its, NULL);
}

int clerk_async_fd(const struct clerk_async *a)
{
    return a && a->fd_mode ? a->epfd : -1;
}

int clerk_async_timeout_ms(const struct clerk_async *a)
{
    if (!a || !a->fd_mode) {
        return -1;
    }
    if (a->dirty) {
        return 0;
    }
    if (!a->next_ms) {
        return -1;
    }
    uint64_t now = ck_now_ms();
    return a->next_ms > now ? (int)(a->next_ms - now) : 0;
}

int clerk_async_process(struct clerk_async *a)
{
    if (!a || !a->fd_mode || a->in_process) {
        return CLERK_INVALID;
    }
    uint64_t expirations;
    while (read(a->tfd, &expirations, sizeof expirations) > 0) {
    }
    a->in_process = true;
    for (int n = 0; n < 8; n++) {
        event_base_loop(a->c->base, EVLOOP_NONBLOCK);
        if (a->close_pending || event_base_get_num_events(
                                    a->c->base, EVENT_BASE_COUNT_ACTIVE) == 0) {
            break;
        }
    }
    a->in_process = false;
    if (a->close_pending) {
        async_free(a);
        return CLERK_CLOSED;
    }
    return sync_fds(a);
}
