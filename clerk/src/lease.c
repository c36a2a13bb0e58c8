/* lease.c: leases over ck_call (LeaseService), puts with a lease, and the
 * background keep-alive: a thread with a handle of its own. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <proto/kv.pb-c.h>

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

/* ---------------------------------------------------------- keep-alive */

struct clerk_keepalive
{
    struct clerk *ck;         /* its own handle (ck_clone) */
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
    clerk_set_deadline(k->ck, budget);
    int64_t ttl = 0;
    int rv = clerk_lease_keepalive_once(k->ck, k->id, &ttl);
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
    k->id = id;
    k->lost = lost;
    k->arg = arg;
    /* The first renewal here: the caller learns at once whether the
     * lease is there. */
    uint64_t sent = ck_now_ms();
    int64_t ttl = 0;
    rv = clerk_lease_keepalive_once(k->ck, id, &ttl);
    if (rv != CLERK_OK) {
        clerk_close(k->ck);
        free(k);
        return rv;
    }
    k->last_ok_sent = sent;
    k->ttl = ttl > 0 ? ttl : 1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&k->lock, NULL);
    if (pthread_create(&k->thread, NULL, keepalive_main, k) != 0) {
        pthread_cond_destroy(&k->wake);
        pthread_mutex_destroy(&k->lock);
        clerk_close(k->ck);
        free(k);
        return CLERK_NOMEM;
    }
    *out = k;
    return CLERK_OK;
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
    pthread_cond_destroy(&k->wake);
    pthread_mutex_destroy(&k->lock);
    clerk_close(k->ck);
    free(k);
}
