/* lease.c: leases over ck_call (LeaseService), puts with a lease, the
 * keep-alive stream (LeaseKeepAliveStream) to the leader, and the
 * background keep-alive: a thread with a handle and a stream of its own. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <proto/kv.pb-c.h>
#include <rpc/rpc.h>

#include "clerk/clerk.h"
#include "internal.h"

/* ------------------------------------------------------------- results */

/* A copy of a reply message (the result of a call that returns fields
 * the caller picks from it). */
static bool take_copy(const ProtobufCMessage *reply, void **result)
{
    size_t len = protobuf_c_message_get_packed_size(reply);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        return false;
    }
    protobuf_c_message_pack(reply, buf);
    *result = protobuf_c_message_unpack(reply->descriptor, NULL, len, buf);
    free(buf);
    return *result != NULL;
}

static void drop_copy(void *result)
{
    if (result) {
        protobuf_c_message_free_unpacked(result, NULL);
    }
}

/* A LeaseService call to a final answer; *reply is a copy of it on
 * CLERK_OK (free with drop_copy). */
static int lease_call(struct clerk *c,
                      const char *method,
                      ProtobufCMessage *args,
                      bool write,
                      void **reply)
{
    struct ck_call k = {.service = &raftkv__lease_service__descriptor,
                        .method = method,
                        .args = args,
                        .write = write,
                        .session = write,
                        .take = take_copy,
                        .drop = drop_copy};
    return ck_call(c, &k, reply);
}

int clerk_lease_grant(struct clerk *c,
                      int64_t ttl_s,
                      uint64_t id,
                      uint64_t *id_out,
                      int64_t *ttl_out)
{
    if (!c) {
        return CLERK_INVALID;
    }
    Raftkv__LeaseGrantArgs a = RAFTKV__LEASE_GRANT_ARGS__INIT;
    a.ttl = ttl_s;
    a.id = id;
    Raftkv__LeaseGrantReply *r;
    int rv = lease_call(c, "LeaseGrant", &a.base, true, (void **)&r);
    if (rv == CLERK_OK) {
        if (id_out) {
            *id_out = r->id;
        }
        if (ttl_out) {
            *ttl_out = r->ttl;
        }
    }
    drop_copy(r);
    return rv;
}

int clerk_lease_revoke(struct clerk *c,
                       uint64_t id,
                       uint64_t *revision,
                       uint64_t *deleted)
{
    if (!c) {
        return CLERK_INVALID;
    }
    Raftkv__LeaseRevokeArgs a = RAFTKV__LEASE_REVOKE_ARGS__INIT;
    a.id = id;
    Raftkv__LeaseRevokeReply *r;
    int rv = lease_call(c, "LeaseRevoke", &a.base, true, (void **)&r);
    if (rv == CLERK_OK) {
        if (revision) {
            *revision = r->revision;
        }
        if (deleted) {
            *deleted = r->deleted;
        }
    }
    drop_copy(r);
    return rv;
}

int clerk_lease_keepalive_once(struct clerk *c, uint64_t id, int64_t *ttl_out)
{
    if (!c) {
        return CLERK_INVALID;
    }
    Raftkv__LeaseKeepAliveArgs a = RAFTKV__LEASE_KEEP_ALIVE_ARGS__INIT;
    a.id = id;
    Raftkv__LeaseKeepAliveReply *r;
    int rv = lease_call(c, "LeaseKeepAlive", &a.base, false, (void **)&r);
    if (rv == CLERK_OK && ttl_out) {
        *ttl_out = r->ttl;
    }
    drop_copy(r);
    return rv;
}

void clerk_lease_ttl_result_free(struct clerk_lease_ttl_result *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->n_keys; i++) {
        free(r->keys[i].key);
    }
    free(r->keys);
    free(r);
}

int clerk_lease_timetolive(struct clerk *c,
                           uint64_t id,
                           bool keys,
                           struct clerk_lease_ttl_result **out)
{
    if (out) {
        *out = NULL;
    }
    if (!c || !out) {
        return CLERK_INVALID;
    }
    Raftkv__LeaseTimeToLiveArgs a = RAFTKV__LEASE_TIME_TO_LIVE_ARGS__INIT;
    a.id = id;
    a.keys = keys;
    Raftkv__LeaseTimeToLiveReply *r;
    int rv = lease_call(c, "LeaseTimeToLive", &a.base, false, (void **)&r);
    if (rv != CLERK_OK) {
        drop_copy(r);
        return rv;
    }
    struct clerk_lease_ttl_result *res = calloc(1, sizeof *res);
    if (!res ||
        (r->n_keys && !(res->keys = calloc(r->n_keys, sizeof *res->keys)))) {
        free(res);
        drop_copy(r);
        return CLERK_NOMEM;
    }
    res->id = r->id;
    res->ttl = r->ttl;
    res->granted_ttl = r->granted_ttl;
    res->revision = r->revision;
    for (size_t i = 0; i < r->n_keys; i++) {
        char *k = malloc(r->keys[i].len + 1);
        if (!k) {
            drop_copy(r);
            clerk_lease_ttl_result_free(res);
            return CLERK_NOMEM;
        }
        if (r->keys[i].len) {
            memcpy(k, r->keys[i].data, r->keys[i].len);
        }
        k[r->keys[i].len] = 0;
        res->keys[i].key = k;
        res->keys[i].key_len = r->keys[i].len;
        res->keys[i].value = k + r->keys[i].len; /* "" */
        res->keys[i].lease = r->id;
        res->n_keys++;
    }
    drop_copy(r);
    *out = res;
    return CLERK_OK;
}

int clerk_lease_list(struct clerk *c, uint64_t **ids, size_t *n)
{
    if (!c || !ids || !n) {
        return CLERK_INVALID;
    }
    *ids = NULL;
    *n = 0;
    Raftkv__LeaseListArgs a = RAFTKV__LEASE_LIST_ARGS__INIT;
    Raftkv__LeaseListReply *r;
    int rv = lease_call(c, "LeaseList", &a.base, false, (void **)&r);
    if (rv == CLERK_OK && r->n_ids) {
        *ids = malloc(r->n_ids * sizeof **ids);
        if (!*ids) {
            rv = CLERK_NOMEM;
        } else {
            memcpy(*ids, r->ids, r->n_ids * sizeof **ids);
            *n = r->n_ids;
        }
    }
    drop_copy(r);
    return rv;
}

/* ------------------------------------------------------ puts with lease */

int clerk_put_lease(struct clerk *c,
                    const void *key,
                    size_t key_len,
                    const void *value,
                    size_t value_len,
                    uint64_t lease,
                    unsigned flags,
                    struct clerk_put_result **out)
{
    return ck_put(c, key, key_len, value, value_len, lease, flags, out);
}

/* ------------------------------------------------- keep-alive stream */

#define KA_RETRY_MIN_MS 10  /* pause after every server failed in a row */
#define KA_RETRY_MAX_MS 200 /* longest such pause */
#define KA_WAIT_SLICE_MS                               \
    100 /* rpc_channel_wait at most this long at once, \
           so that stop is seen */

struct ck_keepalive
{
    struct clerk *c;        /* the handle (borrowed) */
    uint64_t id;            /* the lease */
    ck_stop_cb stop;        /* has the caller given up? (or NULL) */
    void *stop_arg;         /* its argument */
    size_t server;          /* the server it uses or tries next */
    struct rpc_channel *ch; /* its connection, or NULL */
    struct rpc_stream *st;  /* the open stream, or NULL */
    bool unary;             /* the servers do not know the stream: renew
                               with LeaseKeepAlive */
    /* What came for the renewal in flight: */
    bool answered;  /* an answer (or the stream's last frame) */
    int err;        /* its KvError */
    int64_t ttl;    /* its TTL */
    char hint[300]; /* its leader hint's address ("": none) */
    int rpc_status; /* the stream ended without a last frame: why */
    char why[400];  /* the server's message, or the rpc error */
};

int ck_keepalive_open(struct clerk *c,
                      uint64_t id,
                      ck_stop_cb stop,
                      void *stop_arg,
                      struct ck_keepalive **out)
{
    struct ck_keepalive *k = calloc(1, sizeof *k);
    if (!k) {
        return CLERK_NOMEM;
    }
    k->c = c;
    k->id = id;
    k->stop = stop;
    k->stop_arg = stop_arg;
    k->server = ck_preferred_server(c);
    *out = k;
    return CLERK_OK;
}

/* Cancel the stream and drop its connection. */
static void ka_drop(struct ck_keepalive *k)
{
    if (k->st) {
        rpc_stream_cancel(k->st);
        rpc_channel_flush(k->ch);
        k->st = NULL;
    }
    rpc_channel_free(k->ch);
    k->ch = NULL;
}

void ck_keepalive_close(struct ck_keepalive *k)
{
    if (k) {
        ka_drop(k);
        free(k);
    }
}

/* An answer of the stream (end false), or its last frame / its failure. */
static void on_ka_frame(struct rpc_stream *st,
                        const ProtobufCMessage *msg,
                        bool end,
                        void *arg)
{
    (void)st;
    struct ck_keepalive *k = arg;
    const Raftkv__LeaseKeepAliveReply *r =
        (const Raftkv__LeaseKeepAliveReply *)msg;
    if (end) {
        k->st = NULL; /* freed by the channel after this */
    }
    if (!r) {
        k->rpc_status = rpc_last_status();
        snprintf(k->why, sizeof k->why, "%s", rpc_last_error());
        return;
    }
    if (!end && r->id != k->id) {
        return; /* (not ours: only one lease is renewed on it) */
    }
    k->answered = true;
    k->err = r->err;
    k->ttl = r->ttl;
    snprintf(k->hint, sizeof k->hint, "%s",
             r->leader && r->leader->address ? r->leader->address : "");
    snprintf(k->why, sizeof k->why, "%s",
             r->message && *r->message ? r->message
             : end                     ? "the node ended the keep-alive stream"
                                       : "");
    if (end && r->err == RAFTKV__KV_ERROR__KV_OK) {
        k->err = RAFTKV__KV_ERROR__KV_UNAVAILABLE; /* ended, not renewed */
    }
}

static bool ka_stopped(struct ck_keepalive *k)
{
    return k->stop && k->stop(k->stop_arg);
}

/* Send the renewal: the request of a new stream, or a message on the open
 * one. False when it was not sent: the open stream had ended meanwhile
 * (k->answered and the fields after it, or k->rpc_status, say how: a node
 * that stopped leading hints at the leader), or it could not be sent
 * (k->why says why). */
static bool ka_send(struct ck_keepalive *k)
{
    Raftkv__LeaseKeepAliveArgs a = RAFTKV__LEASE_KEEP_ALIVE_ARGS__INIT;
    a.id = k->id;
    k->answered = false;
    k->rpc_status = 0;
    if (k->st) {
        /* The stream's end, if it came since the last renewal, first. */
        rpc_channel_wait(k->ch, 0);
        if (!k->st) {
            return false;
        }
        k->answered = false; /* (an answer that is not ours, ignored) */
        if (rpc_stream_send_msg(k->st, &a.base) == 0) {
            return true;
        }
        snprintf(k->why, sizeof k->why, "%s", rpc_last_error());
        ka_drop(k);
        return false;
    }
    ka_drop(k);
    k->ch = ck_channel_new(k->c, k->server);
    if (k->ch) {
        k->st =
            rpc_channel_stream(k->ch, &raftkv__lease_service__descriptor,
                               "LeaseKeepAliveStream", &a.base, on_ka_frame, k);
    }
    if (!k->st) {
        snprintf(k->why, sizeof k->why, "%s",
                 k->ch ? rpc_last_error() : "out of memory");
        return false;
    }
    return true;
}

int ck_keepalive_renew(struct ck_keepalive *k,
                       unsigned budget_ms,
                       int64_t *ttl_out,
                       uint64_t *sent_out)
{
    struct clerk *c = k->c;
    uint64_t deadline = ck_now_ms() + budget_ms;
    unsigned attempt_ms = ck_attempt_ms(c), pause = KA_RETRY_MIN_MS;
    size_t failures = 0, hops = 0, n = ck_n_servers(c);
    bool reauthenticated = false;
    char last[600] = "no server tried";
    for (;;) {
        uint64_t now = ck_now_ms();
        if (now >= deadline || ka_stopped(k)) {
            break;
        }
        if (k->unary) {
            /* Servers without the stream (an older kvserver). */
            clerk_set_deadline(c, (unsigned)(deadline - now));
            int rv = clerk_lease_keepalive_once(c, k->id, ttl_out);
            clerk_set_deadline(c, 0);
            if (rv == CLERK_OK && sent_out) {
                *sent_out = now;
            }
            return rv;
        }
        uint64_t sent = now;
        bool moved = false;
        if (ka_send(k)) {
            uint64_t until =
                sent + attempt_ms < deadline ? sent + attempt_ms : deadline;
            while (!k->answered && k->st && !ka_stopped(k) &&
                   (now = ck_now_ms()) < until) {
                uint64_t left = until - now;
                rpc_channel_wait(k->ch, left < KA_WAIT_SLICE_MS
                                            ? (uint32_t)left
                                            : KA_WAIT_SLICE_MS);
            }
            if (!k->answered && k->st) {
                if (ka_stopped(k)) {
                    break;
                }
                /* Accepted the connection but does not answer: stopped,
                 * cut off, or a leader that cannot prove it leads. */
                snprintf(k->why, sizeof k->why, "no answer within %u ms",
                         attempt_ms);
                ka_drop(k);
            }
        }
        const char *addr = ck_server_addr(c, k->server);
        if (!k->answered) {
            if (k->rpc_status == RPC_E_UNKNOWN_METHOD ||
                k->rpc_status == RPC_E_UNKNOWN_SERVICE) {
                k->unary = true; /* (renewed unary from now on) */
                continue;
            }
            snprintf(last, sizeof last, "%.150s: %.400s", addr, k->why);
        } else {
            switch (k->err) {
                case RAFTKV__KV_ERROR__KV_OK:
                    ck_found_leader(c, k->server);
                    if (ttl_out) {
                        *ttl_out = k->ttl;
                    }
                    if (sent_out) {
                        *sent_out = sent;
                    }
                    return CLERK_OK;
                case RAFTKV__KV_ERROR__KV_WRONG_LEADER: {
                    size_t to;
                    snprintf(last, sizeof last,
                             "%.150s: not the leader (%.400s)", addr, k->why);
                    ka_drop(k); /* (the node ended the stream) */
                    if (ck_server_of_addr(c, k->hint, &to) && to != k->server) {
                        k->server = to;
                        moved = true;
                        n = ck_n_servers(c);
                    }
                    break;
                }
                case RAFTKV__KV_ERROR__KV_UNAUTHENTICATED:
                    ka_drop(k);
                    if (!reauthenticated) {
                        /* The token expired: a new one, a new stream. */
                        reauthenticated = true;
                        ck_forget_token(c);
                        continue;
                    }
                    ck_set_errmsg(c, k->why);
                    return CLERK_UNAUTHENTICATED;
                case RAFTKV__KV_ERROR__KV_UNAVAILABLE:
                case RAFTKV__KV_ERROR__KV_SHUTTING_DOWN:
                case RAFTKV__KV_ERROR__KV_TIMEOUT:
                case RAFTKV__KV_ERROR__KV_INTERNAL:
                    /* The node ended the stream (it stopped leading, or
                     * stops): another server. */
                    snprintf(last, sizeof last, "%.150s: %.400s", addr, k->why);
                    ka_drop(k);
                    break;
                default: {
                    /* LEASE_NOT_FOUND, BAD_REQUEST, PERMISSION_DENIED: the
                     * cluster's answer for this lease. */
                    char why[600];
                    snprintf(why, sizeof why, "lease %016llx: %.500s",
                             (unsigned long long)k->id, k->why);
                    ck_set_errmsg(c, why);
                    return ck_error_of(k->err);
                }
            }
        }
        if (moved && ++hops < n) {
            continue; /* to the leader the hint names */
        }
        if (!moved) {
            k->server = (k->server + 1) % n;
        }
        if (moved || ++failures >= n) {
            /* Every server failed in a row, or they send the clerk to
             * each other (an election): pause before more. */
            failures = hops = 0;
            uint64_t t = ck_now_ms(), left = t < deadline ? deadline - t : 0;
            ck_sleep_ms(pause < left ? pause : left);
            pause = pause * 2 > KA_RETRY_MAX_MS ? KA_RETRY_MAX_MS : pause * 2;
        }
    }
    char why[800];
    snprintf(why, sizeof why,
             "lease %016llx not renewed: no leader answered within %u ms "
             "(last: %s)",
             (unsigned long long)k->id, budget_ms, last);
    ck_set_errmsg(c, why);
    return CLERK_TIMEOUT;
}

/* ---------------------------------------------------------- keep-alive */

/* The background keep-alive: a thread with a handle of its own (so that
 * its renewals never wait behind the caller's operations), renewing over
 * one keep-alive stream of its own. One stream per keep-alive rather than
 * one per handle shared by all of them: the handle is the keep-alive's
 * own already, a stream costs the leader a few hundred bytes, and keep-
 * alives then never wait for each other's renewals or reconnects. */
struct clerk_keepalive
{
    struct clerk *ck;         /* its own handle (ck_clone) */
    struct ck_keepalive *ka;  /* its stream */
    uint64_t id;              /* the lease */
    clerk_lease_lost_cb lost; /* told once when it is lost */
    void *arg;                /* lost's argument */
    pthread_t thread;         /* renews it */
    pthread_mutex_t lock;     /* guards stop */
    pthread_cond_t wake;      /* signalled by stop */
    bool stop;                /* clerk_lease_keepalive_stop was called */
    uint64_t last_ok_sent;    /* ms: when the last good renewal was sent */
    int64_t ttl;              /* seconds, as the last renewal said */
};

static bool stopped(void *arg)
{
    struct clerk_keepalive *k = arg;
    pthread_mutex_lock(&k->lock);
    bool stop = k->stop;
    pthread_mutex_unlock(&k->lock);
    return stop;
}

/* Sleep until @until (ms of CLOCK_MONOTONIC) or stop; true when stopped. */
static bool wait_until(struct clerk_keepalive *k, uint64_t until)
{
    pthread_mutex_lock(&k->lock);
    while (!k->stop && ck_now_ms() < until) {
        struct timespec ts = {(time_t)(until / 1000),
                              (long)(until % 1000) * 1000000};
        pthread_cond_timedwait(&k->wake, &k->lock, &ts);
    }
    bool stop = k->stop;
    pthread_mutex_unlock(&k->lock);
    return stop;
}

/* One renewal, bounded by the time the lease is sure to live. */
static int renew(struct clerk_keepalive *k, uint64_t lost_at)
{
    uint64_t now = ck_now_ms(), sent = now;
    unsigned budget = lost_at > now ? (unsigned)(lost_at - now) : 1;
    int64_t ttl = 0;
    int rv = ck_keepalive_renew(k->ka, budget, &ttl, &sent);
    if (rv == CLERK_OK) {
        k->last_ok_sent = sent;
        k->ttl = ttl > 0 ? ttl : 1;
    }
    return rv;
}

static void *keepalive_main(void *arg)
{
    struct clerk_keepalive *k = arg;
    for (;;) {
        uint64_t ttl_ms = (uint64_t)k->ttl * 1000;
        uint64_t lost_at = k->last_ok_sent + ttl_ms;
        if (wait_until(k, k->last_ok_sent + ttl_ms / 3)) {
            break;
        }
        int rv;
        /* Retry until the lease is renewed, gone, or may have expired. */
        for (;;) {
            rv = renew(k, lost_at);
            if (stopped(k)) {
                return NULL;
            }
            if (rv == CLERK_OK || rv == CLERK_LEASE_NOT_FOUND ||
                ck_now_ms() >= lost_at) {
                break;
            }
            uint64_t pause = ttl_ms / 20 < 50 ? 50 : ttl_ms / 20;
            if (wait_until(k, ck_now_ms() + pause)) {
                return NULL;
            }
        }
        if (rv != CLERK_OK) {
            if (k->lost) {
                k->lost(k->id, rv, k->arg);
            }
            break;
        }
    }
    return NULL;
}

int clerk_lease_keepalive_start(struct clerk *c,
                                uint64_t id,
                                clerk_lease_lost_cb lost,
                                void *arg,
                                struct clerk_keepalive **out)
{
    if (!c || !out || !id) {
        return CLERK_INVALID;
    }
    *out = NULL;
    struct clerk_keepalive *k = calloc(1, sizeof *k);
    if (!k) {
        return CLERK_NOMEM;
    }
    int rv = ck_clone(c, &k->ck);
    if (rv) {
        free(k);
        return rv;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&k->lock, NULL);
    k->id = id;
    k->lost = lost;
    k->arg = arg;
    rv = ck_keepalive_open(k->ck, id, stopped, k, &k->ka);
    if (rv) {
        goto err_free_handle;
    }
    /* The first renewal here, within the handle's deadline: the caller
     * learns at once whether the lease is there. */
    int64_t ttl = 0;
    uint64_t sent = 0;
    rv = ck_keepalive_renew(k->ka, ck_deadline_ms(k->ck), &ttl, &sent);
    if (rv != CLERK_OK) {
        ck_set_errmsg(c, clerk_errmsg(k->ck)); /* (k->ck goes) */
        goto err_close_stream;
    }
    k->last_ok_sent = sent;
    k->ttl = ttl > 0 ? ttl : 1;
    if (pthread_create(&k->thread, NULL, keepalive_main, k) != 0) {
        rv = CLERK_NOMEM;
        goto err_close_stream;
    }
    *out = k;
    return CLERK_OK;

err_close_stream:
    ck_keepalive_close(k->ka);
err_free_handle:
    pthread_cond_destroy(&k->wake);
    pthread_mutex_destroy(&k->lock);
    clerk_close(k->ck);
    free(k);
    return rv;
}

void clerk_lease_keepalive_stop(struct clerk_keepalive *k)
{
    if (!k) {
        return;
    }
    pthread_mutex_lock(&k->lock);
    k->stop = true;
    pthread_cond_signal(&k->wake);
    pthread_mutex_unlock(&k->lock);
    pthread_join(k->thread, NULL);
    ck_keepalive_close(k->ka); /* cancels the stream on the server */
    pthread_cond_destroy(&k->wake);
    pthread_mutex_destroy(&k->lock);
    clerk_close(k->ck);
    free(k);
}
