/* auth.c: AuthService (users, roles, tokens), and the checks that
 * KvService and AdminService calls pass once auth is enabled.
 *
 * Hashing or checking a password (Argon2id) takes about 60 ms and 64 MiB:
 * that runs on a worker thread, never on the event loop, so that neither
 * clients that authenticate nor a flood of wrong passwords hold up
 * heartbeats. The loop hands a job over, and the worker hands it back
 * through a pipe; the call is answered on the loop. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>

#include "service.h"

#define DEFAULT_TOKEN_TTL_S 300
#define MAX_PASSWORD        1024 /* bytes */
#define MAX_JOBS            64   /* waiting for the worker; more: refused */

static uint64_t wall_s(void)
{
    return (uint64_t)time(NULL);
}

/* Recent successful checks, so that a call whose token (or certificate
 * name) was checked a moment ago costs no HMAC and no LMDB reads: who it
 * is, whether that user is root, or that auth is off. An entry holds
 * while no auth change or snapshot was applied since (n->auth_gen) and
 * for at most AUTH_CACHE_S seconds (so a token's expiry is seen within
 * that). Permissions of users other than root are checked every time. */
#define AUTH_CACHE_SLOTS 64
#define AUTH_CACHE_S     1

struct auth_cache_entry
{
    uint64_t gen;                    /* n->auth_gen when filled (0: empty) */
    uint64_t until_s;                /* wall clock: holds before this */
    char token[KV_AUTH_TOKEN_MAX];   /* the call's token ... */
    char cert[KV_AUTH_MAX_NAME + 1]; /* ... and certificate name */
    char user[KV_AUTH_MAX_NAME + 1]; /* who that is */
    bool root;                       /* with the role root */
};

struct auth_cache
{
    uint64_t off_gen;     /* auth_gen at which auth was off (+1) */
    uint64_t off_until_s; /* and until when that holds */
    struct auth_cache_entry slot[AUTH_CACHE_SLOTS];
};

static struct auth_cache_entry *cache_slot(struct kv_services *s,
                                           const char *token,
                                           const char *cert)
{
    uint32_t h = 2166136261u;
    for (const char *p = token; *p; p++) {
        h = (h ^ (uint8_t)*p) * 16777619u;
    }
    for (const char *p = cert; *p; p++) {
        h = (h ^ (uint8_t)*p) * 16777619u;
    }
    return &s->auth_cache->slot[h % AUTH_CACHE_SLOTS];
}

/* The cached identity of a call, or NULL. */
static const struct auth_cache_entry *cache_get(struct kv_services *s,
                                                const char *token,
                                                const char *cert,
                                                uint64_t now)
{
    struct kv_node *n = s->node;
    const struct auth_cache_entry *e = cache_slot(s, token, cert);
    if (e->gen != n->auth_gen + 1 || now >= e->until_s ||
        strcmp(e->token, token) != 0 || strcmp(e->cert, cert) != 0) {
        return NULL;
    }
    return e;
}

static void cache_put(struct kv_services *s,
                      const char *token,
                      const char *cert,
                      uint64_t now,
                      const char *user,
                      bool root)
{
    struct kv_node *n = s->node;
    if (strlen(token) >= KV_AUTH_TOKEN_MAX || strlen(cert) > KV_AUTH_MAX_NAME) {
        return;
    }
    struct auth_cache_entry *e = cache_slot(s, token, cert);
    e->gen = n->auth_gen + 1;
    e->until_s = now + AUTH_CACHE_S;
    snprintf(e->token, sizeof e->token, "%s", token);
    snprintf(e->cert, sizeof e->cert, "%s", cert);
    snprintf(e->user, sizeof e->user, "%s", user);
    e->root = root;
}

/* Check a call's token against the applied state.
 * @param key NULL: the token only
 * @return a Raftkv__AuthError; msg filled unless OK */
static int check_call(struct kv_services *s,
                      void *closure_data,
                      const void *key,
                      size_t key_len,
                      const void *end,
                      size_t end_len,
                      enum kv_auth_need need,
                      char *user,
                      bool *is_root,
                      char *msg,
                      size_t msg_size)
{
    struct kv_node *n = s->node;
    const char *token = rpc_call_auth_token(closure_data);
    const char *cert = rpc_call_tls_name(closure_data);
    uint64_t now = wall_s();
    struct auth_cache *c = s->auth_cache;
    if (c && c->off_gen == n->auth_gen + 1 && now < c->off_until_s) {
        if (user) {
            user[0] = 0; /* auth is off */
        }
        if (is_root) {
            *is_root = true;
        }
        return RAFTKV__AUTH_ERROR__AUTH_OK;
    }
    const struct auth_cache_entry *e =
        c ? cache_get(s, token, cert, now) : NULL;
    if (e && (e->root || !key)) {
        if (user) {
            snprintf(user, KV_AUTH_MAX_NAME + 1, "%s", e->user);
        }
        if (is_root) {
            *is_root = e->root;
        }
        return RAFTKV__AUTH_ERROR__AUTH_OK;
    }
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        snprintf(msg, msg_size, "cannot read the auth state");
        return RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    }
    char who[KV_AUTH_MAX_NAME + 1];
    bool root = false;
    int err =
        kv_auth_check_range_as(&n->store, txn, token, cert, now, key, key_len,
                               end, end_len, need, who, &root, msg, msg_size);
    node_state_done(n, txn);
    if (err == RAFTKV__AUTH_ERROR__AUTH_OK && c) {
        if (!who[0] && root) {
            c->off_gen = n->auth_gen + 1; /* auth is off */
            c->off_until_s = now + AUTH_CACHE_S;
        } else {
            cache_put(s, token, cert, now, who, root);
        }
    }
    if (user) {
        snprintf(user, KV_AUTH_MAX_NAME + 1, "%s", who);
    }
    if (is_root) {
        *is_root = root;
    }
    return err;
}

/* Root (or, with @self set, that user) may go on: AUTH_OK; otherwise the
 * refusal, with msg naming what is missing. */
static int require_root(struct kv_services *s,
                        void *closure_data,
                        const char *self,
                        const char *what,
                        char *msg,
                        size_t msg_size)
{
    char user[KV_AUTH_MAX_NAME + 1];
    bool root;
    int err = check_call(s, closure_data, NULL, 0, NULL, 0, KV_AUTH_ANY, user,
                         &root, msg, msg_size);
    if (err || root || (self && strcmp(self, user) == 0)) {
        return err;
    }
    snprintf(msg, msg_size, "user '%s' may not %s: that needs the role root",
             user, what);
    return RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED;
}

/* An AuthError as the KvError of a KV call. */
static int kv_error_of(int auth_err)
{
    switch (auth_err) {
        case RAFTKV__AUTH_ERROR__AUTH_OK:
            return RAFTKV__KV_ERROR__KV_OK;
        case RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED:
            return RAFTKV__KV_ERROR__KV_UNAUTHENTICATED;
        case RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED:
            return RAFTKV__KV_ERROR__KV_PERMISSION_DENIED;
        default:
            return RAFTKV__KV_ERROR__KV_INTERNAL;
    }
}

int auth_check_kv(struct kv_services *s,
                  void *closure_data,
                  const ProtobufCBinaryData *key,
                  enum kv_auth_need need,
                  char *msg,
                  size_t msg_size)
{
    return kv_error_of(check_call(s, closure_data, key ? key->data : NULL,
                                  key ? key->len : 0, NULL, 0, need, NULL, NULL,
                                  msg, msg_size));
}

int auth_check_range(struct kv_services *s,
                     void *closure_data,
                     const ProtobufCBinaryData *key,
                     const ProtobufCBinaryData *range_end,
                     enum kv_auth_need need,
                     char *msg,
                     size_t msg_size)
{
    return kv_error_of(check_call(s, closure_data, key->data, key->len,
                                  range_end->data, range_end->len, need, NULL,
                                  NULL, msg, msg_size));
}

int auth_check_root(struct kv_services *s,
                    void *closure_data,
                    const char *what,
                    char *msg,
                    size_t msg_size)
{
    return kv_error_of(
        require_root(s, closure_data, NULL, what, msg, msg_size));
}

/* ------------------------------------------------------------- replies */

static void set_hint(struct kv_node *n,
                     uint64_t leader,
                     Raftkv__AuthLeaderHint *h)
{
    h->id = leader;
    h->address = leader ? (char *)node_peer_addr(n, leader) : "";
}

static void reply_change(struct kv_node *n,
                         ProtobufCClosure closure,
                         void *data,
                         int err,
                         uint64_t leader,
                         const char *msg)
{
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    set_hint(n, leader, &hint);
    Raftkv__AuthChangeReply r = RAFTKV__AUTH_CHANGE_REPLY__INIT;
    r.err = err;
    r.message = (char *)(msg ? msg : "");
    r.leader = &hint;
    closure(&r.base, data);
}

/* A KvError of the node's write path as an AuthError. */
static int auth_error_of(int kv_err)
{
    switch (kv_err) {
        case RAFTKV__KV_ERROR__KV_OK:
            return RAFTKV__AUTH_ERROR__AUTH_OK;
        case RAFTKV__KV_ERROR__KV_WRONG_LEADER:
            return RAFTKV__AUTH_ERROR__AUTH_NOT_LEADER;
        case RAFTKV__KV_ERROR__KV_TIMEOUT:
            return RAFTKV__AUTH_ERROR__AUTH_TIMEOUT;
        case RAFTKV__KV_ERROR__KV_BAD_REQUEST:
        case RAFTKV__KV_ERROR__KV_VALUE_TOO_LARGE:
            return RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST;
        case RAFTKV__KV_ERROR__KV_SHUTTING_DOWN:
        case RAFTKV__KV_ERROR__KV_NO_SPACE:
        case RAFTKV__KV_ERROR__KV_UNAVAILABLE:
            return RAFTKV__AUTH_ERROR__AUTH_UNAVAILABLE;
        case RAFTKV__KV_ERROR__KV_UNAUTHENTICATED:
            return RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED;
        case RAFTKV__KV_ERROR__KV_PERMISSION_DENIED:
            return RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED;
        default:
            return RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    }
}

/* A proposed auth change (Command.auth) waiting for its entry. */
struct auth_change
{
    struct node_write_waiter w; /* the node's part */
    ProtobufCClosure closure;   /* completes the call (AuthChangeReply) */
    void *data;                 /* its argument */
};

/* The node is done with a change: with @o (applied) its AuthError and
 * message, without it the node's KvError @err mapped to an AuthError. */
static void change_done(struct kv_node *n,
                        struct node_write_waiter *w,
                        int err,
                        const struct kv_outcome *o,
                        uint64_t leader,
                        const char *msg)
{
    struct auth_change *c = (struct auth_change *)w;
    if (o) {
        n->metrics.proposals_committed++;
        /* Applied: the outcome holds an AuthError and its message. */
        reply_change(n, c->closure, c->data, o->err, 0,
                     o->current ? (const char *)o->current : "");
    } else {
        n->metrics.proposals_failed++;
        reply_change(n, c->closure, c->data, auth_error_of(err), leader, msg);
    }
    free(c);
}

/* -------------------------------------------------------------- worker */

enum job_kind { JOB_AUTHENTICATE, JOB_USER_ADD, JOB_USER_PASSWORD };

struct auth_job;
static void reply_authenticate(ProtobufCClosure closure,
                               void *data,
                               int err,
                               const char *token,
                               uint64_t ttl,
                               const char *msg);
static void finish_authenticate(struct auth_job *j);
static void finish_put_user(struct kv_services *s, struct auth_job *j);

/* A password to hash or check, off the loop. */
struct auth_job
{
    enum job_kind kind;                /* what to do with it */
    char *password;                    /* a copy, wiped when done */
    char user[KV_AUTH_MAX_NAME + 1];   /* the user */
    char hash[crypto_pwhash_STRBYTES]; /* Authenticate: the stored hash
                                          ("": unknown user); user add and
                                          passwd: the new hash */
    bool known;                        /* Authenticate: the user exists */
    uint64_t version;                  /* its password version */
    uint8_t key[KV_AUTH_KEY_LEN];      /* the token key */
    uint64_t expiry, ttl;              /* of the token to make */
    bool ok;                           /* the worker's answer */
    ProtobufCClosure closure;          /* answers the call */
    void *data;                        /* its argument */
    struct auth_job *next;             /* queue */
};

/* The worker thread and what it shares with the loop. */
struct auth_worker
{
    pthread_t thread;                   /* runs worker_main */
    pthread_mutex_t lock;               /* guards the fields below */
    pthread_cond_t wake;                /* a job or stop */
    struct auth_job *todo, *todo_tail;  /* waiting for the worker */
    struct auth_job *done;              /* for the loop */
    size_t n_todo;                      /* jobs in todo */
    bool stop;                          /* the node is stopping */
    int pipe[2];                        /* worker -> loop: jobs are done */
    struct event *ev;                   /* the loop's side of pipe */
    char dummy[crypto_pwhash_STRBYTES]; /* for unknown users */
};

static struct auth_job *job_new(const char *password,
                                ProtobufCClosure closure,
                                void *data)
{
    struct auth_job *j = calloc(1, sizeof *j);
    if (!j) {
        return NULL;
    }
    j->password = strdup(password);
    if (!j->password) {
        free(j);
        return NULL;
    }
    j->closure = closure;
    j->data = data;
    return j;
}

static void job_free(struct auth_job *j)
{
    if (!j) {
        return;
    }
    sodium_memzero(j->password, strlen(j->password));
    free(j->password);
    sodium_memzero(j, sizeof *j);
    free(j);
}

static void job_refuse(struct auth_job *j, int err, const char *why)
{
    if (j->kind == JOB_AUTHENTICATE) {
        reply_authenticate(j->closure, j->data, err, "", 0, why);
    } else {
        Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
        Raftkv__AuthChangeReply r = RAFTKV__AUTH_CHANGE_REPLY__INIT;
        r.err = err;
        r.message = (char *)why;
        r.leader = &hint;
        j->closure(&r.base, j->data);
    }
    job_free(j);
}

static void *worker_main(void *arg)
{
    struct auth_worker *w = arg;
    /* A stand-in to check unknown users against: as slow as a real one. */
    if (kv_auth_hash_password("not a password of anyone", w->dummy) != 0) {
        w->dummy[0] = 0;
    }
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->todo && !w->stop) {
            pthread_cond_wait(&w->wake, &w->lock);
        }
        if (w->stop) {
            break;
        }
        struct auth_job *j = w->todo;
        w->todo = j->next;
        if (!w->todo) {
            w->todo_tail = NULL;
        }
        w->n_todo--;
        pthread_mutex_unlock(&w->lock);
        size_t len = strlen(j->password);
        if (j->kind == JOB_AUTHENTICATE) {
            const char *h = j->known ? j->hash : w->dummy;
            j->ok = h[0] && crypto_pwhash_str_verify(h, j->password, len) == 0;
        } else {
            j->ok = kv_auth_hash_password(j->password, j->hash) == 0;
        }
        pthread_mutex_lock(&w->lock);
        j->next = w->done;
        w->done = j;
        /* Wake the loop; a full pipe holds wake-ups enough already. */
        ssize_t wr = write(w->pipe[1], "", 1);
        (void)wr;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* The loop: answer the jobs the worker finished. */
static void on_jobs_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct kv_services *s = arg;
    struct auth_worker *w = s->auth_worker;
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    pthread_mutex_lock(&w->lock);
    struct auth_job *list = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&w->lock);
    while (list) {
        struct auth_job *j = list;
        list = j->next;
        if (j->kind == JOB_AUTHENTICATE) {
            finish_authenticate(j);
        } else {
            finish_put_user(s, j);
        }
        job_free(j);
    }
}

static void job_submit(struct kv_services *s, struct auth_job *j)
{
    struct auth_worker *w = s->auth_worker;
    if (!w) {
        job_refuse(j, RAFTKV__AUTH_ERROR__AUTH_INTERNAL,
                   "passwords cannot be checked: no worker thread");
        return;
    }
    pthread_mutex_lock(&w->lock);
    if (w->n_todo >= MAX_JOBS) {
        pthread_mutex_unlock(&w->lock);
        job_refuse(j, RAFTKV__AUTH_ERROR__AUTH_UNAVAILABLE,
                   "too many passwords waiting to be checked; try again");
        return;
    }
    j->next = NULL;
    if (w->todo_tail) {
        w->todo_tail->next = j;
    } else {
        w->todo = j;
    }
    w->todo_tail = j;
    w->n_todo++;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

/* Start the worker; on failure the node runs without one (every call that
 * needs a password is answered INTERNAL). */
static void worker_start(struct kv_services *s)
{
    struct kv_node *n = s->node;
    struct auth_worker *w = calloc(1, sizeof *w);
    if (!w) {
        goto err;
    }
    if (pipe2(w->pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        goto err_free;
    }
    w->ev =
        event_new(n->base, w->pipe[0], EV_READ | EV_PERSIST, on_jobs_done, s);
    if (!w->ev || event_add(w->ev, NULL) != 0) {
        goto err_pipe;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        goto err_sync;
    }
    s->auth_worker = w;
    return;

err_sync:
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
err_pipe:
    if (w->ev) {
        event_free(w->ev);
    }
    close(w->pipe[0]);
    close(w->pipe[1]);
err_free:
    free(w);
err:
    rpc_logf(RPC_LOG_ERROR,
             "node %llu: cannot start the password worker (%s): users "
             "cannot authenticate",
             (unsigned long long)n->cfg.id, strerror(errno));
}

/* Stop the password worker and answer the calls waiting for it
 * (UNAVAILABLE); at shutdown, before the rpc server goes. */
static void auth_service_stop(struct kv_node *n, enum node_event ev, void *arg)
{
    (void)n;
    (void)ev;
    struct kv_services *s = arg;
    free(s->auth_cache);
    s->auth_cache = NULL;
    struct auth_worker *w = s->auth_worker;
    if (!w) {
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    /* At most one password is being worked on: about 60 ms. */
    pthread_join(w->thread, NULL);
    struct auth_job *lists[] = {w->todo, w->done};
    for (size_t i = 0; i < 2; i++) {
        while (lists[i]) {
            struct auth_job *j = lists[i];
            lists[i] = j->next;
            job_refuse(j, RAFTKV__AUTH_ERROR__AUTH_UNAVAILABLE,
                       "the node is shutting down");
        }
    }
    event_free(w->ev);
    close(w->pipe[0]);
    close(w->pipe[1]);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    sodium_memzero(w->dummy, sizeof w->dummy);
    free(w);
    s->auth_worker = NULL;
}

/* ------------------------------------------------------------- changes */

/* Whether a change may be proposed here: the caller is root (or @self),
 * and this node leads. Otherwise the call is answered. */
static bool may_change(struct kv_services *s,
                       ProtobufCClosure closure,
                       void *data,
                       const char *self,
                       const char *what)
{
    struct kv_node *n = s->node;
    char msg[400];
    int err = require_root(s, data, self, what, msg, sizeof msg);
    if (err) {
        reply_change(n, closure, data, err, 0, msg);
        return false;
    }
    uint64_t leader = raft_leader(n->raft);
    if (leader != n->cfg.id) {
        reply_change(n, closure, data,
                     leader ? RAFTKV__AUTH_ERROR__AUTH_NOT_LEADER
                            : RAFTKV__AUTH_ERROR__AUTH_UNAVAILABLE,
                     leader, leader ? "not the leader" : "no leader known");
        return false;
    }
    return true;
}

static void propose_change(struct kv_services *s,
                           Raftkv__AuthCommand *ac,
                           ProtobufCClosure closure,
                           void *data)
{
    struct kv_node *n = s->node;
    Raftkv__Command cmd = RAFTKV__COMMAND__INIT;
    cmd.op_case = RAFTKV__COMMAND__OP_AUTH;
    cmd.auth = ac;
    struct auth_change *c = calloc(1, sizeof *c);
    if (!c) {
        n->metrics.proposals_failed++;
        reply_change(n, closure, data, RAFTKV__AUTH_ERROR__AUTH_INTERNAL, 0,
                     "out of memory");
        return;
    }
    c->w.done = change_done;
    c->closure = closure;
    c->data = data;
    node_propose(n, &cmd, &c->w); /* answered by change_done */
}

/* UserAdd and UserChangePassword: the password is hashed here, before the
 * command is proposed, so the log never holds it. */
static void put_user(struct kv_services *s,
                     const char *name,
                     const char *password,
                     bool add,
                     ProtobufCClosure closure,
                     void *data)
{
    struct kv_node *n = s->node;
    if (!may_change(s, closure, data, add ? NULL : name,
                    add ? "add users" : "change another user's password")) {
        return;
    }
    if (!password[0] || strlen(password) > MAX_PASSWORD) {
        reply_change(n, closure, data, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST, 0,
                     password[0] ? "the password is longer than 1024 bytes"
                                 : "the password is empty");
        return;
    }
    if (strlen(name) > KV_AUTH_MAX_NAME) {
        reply_change(n, closure, data, RAFTKV__AUTH_ERROR__AUTH_BAD_REQUEST, 0,
                     "the user name is longer than 128 bytes");
        return;
    }
    struct auth_job *j = job_new(password, closure, data);
    if (!j) {
        reply_change(n, closure, data, RAFTKV__AUTH_ERROR__AUTH_INTERNAL, 0,
                     "out of memory");
        return;
    }
    j->kind = add ? JOB_USER_ADD : JOB_USER_PASSWORD;
    snprintf(j->user, sizeof j->user, "%s", name);
    job_submit(s, j);
}

/* A hash is ready (on the loop): propose the user with it. */
static void finish_put_user(struct kv_services *s, struct auth_job *j)
{
    struct kv_node *n = s->node;
    if (!j->ok) {
        reply_change(n, j->closure, j->data, RAFTKV__AUTH_ERROR__AUTH_INTERNAL,
                     0, "cannot hash the password (out of memory)");
        return;
    }
    Raftkv__UserPut put = RAFTKV__USER_PUT__INIT;
    put.name = j->user;
    put.password_hash = j->hash;
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    if (j->kind == JOB_USER_ADD) {
        ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_ADD;
        ac.user_add = &put;
    } else {
        ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_PASSWORD;
        ac.user_password = &put;
    }
    propose_change(s, &ac, j->closure, j->data);
}

static void handle_user_add(Raftkv__AuthService_Service *svc,
                            const Raftkv__UserAddArgs *a,
                            Raftkv__AuthChangeReply_Closure closure,
                            void *data)
{
    put_user(services_of(svc, auth_svc), a->name, a->password, true,
             (ProtobufCClosure)closure, data);
}

static void handle_user_password(Raftkv__AuthService_Service *svc,
                                 const Raftkv__UserChangePasswordArgs *a,
                                 Raftkv__AuthChangeReply_Closure closure,
                                 void *data)
{
    put_user(services_of(svc, auth_svc), a->name, a->password, false,
             (ProtobufCClosure)closure, data);
}

static void handle_user_delete(Raftkv__AuthService_Service *svc,
                               const Raftkv__UserDeleteArgs *a,
                               Raftkv__AuthChangeReply_Closure closure,
                               void *data)
{
    struct kv_services *s = services_of(svc, auth_svc);
    if (!may_change(s, (ProtobufCClosure)closure, data, NULL, "delete users")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_USER_DELETE;
    ac.user_delete = a->name;
    propose_change(s, &ac, (ProtobufCClosure)closure, data);
}

static void handle_grant_role(Raftkv__AuthService_Service *svc,
                              const Raftkv__UserGrantRoleArgs *a,
                              Raftkv__AuthChangeReply_Closure closure,
                              void *data)
{
    struct kv_services *s = services_of(svc, auth_svc);
    if (!may_change(s, (ProtobufCClosure)closure, data, NULL, "grant roles")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_GRANT_ROLE;
    ac.grant_role = (Raftkv__UserGrantRoleArgs *)a;
    propose_change(s, &ac, (ProtobufCClosure)closure, data);
}

static void handle_revoke_role(Raftkv__AuthService_Service *svc,
                               const Raftkv__UserRevokeRoleArgs *a,
                               Raftkv__AuthChangeReply_Closure closure,
                               void *data)
{
    struct kv_services *s = services_of(svc, auth_svc);
    if (!may_change(s, (ProtobufCClosure)closure, data, NULL, "revoke roles")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_REVOKE_ROLE;
    ac.revoke_role = (Raftkv__UserRevokeRoleArgs *)a;
    propose_change(s, &ac, (ProtobufCClosure)closure, data);
}

static void handle_role_add(Raftkv__AuthService_Service *svc,
                            const Raftkv__RoleAddArgs *a,
                            Raftkv__AuthChangeReply_Closure closure,
                            void *data)
{
    struct kv_services *s = services_of(svc, auth_svc);
    if (!may_change(s, (ProtobufCClosure)closure, data, NULL, "add roles")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_ROLE_ADD;
    ac.role_add = a->name;
    propose_change(s, &ac, (ProtobufCClosure)closure, data);
}

static void handle_role_delete(Raftkv__AuthService_Service *svc,
                               const Raftkv__RoleDeleteArgs *a,
                               Raftkv__AuthChangeReply_Closure closure,
                               void *data)
{
    struct kv_services *s = services_of(svc, auth_svc);
    if (!may_change(s, (ProtobufCClosure)closure, data, NULL, "delete roles")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_ROLE_DELETE;
    ac.role_delete = a->name;
    propose_change(s, &ac, (ProtobufCClosure)closure, data);
}

static void handle_grant_permission(Raftkv__AuthService_Service *svc,
                                    const Raftkv__RoleGrantPermissionArgs *a,
                                    Raftkv__AuthChangeReply_Closure closure,
                                    void *data)
{
    struct kv_services *s = services_of(svc, auth_svc);
    if (!may_change(s, (ProtobufCClosure)closure, data, NULL,
                    "grant permissions")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_GRANT_PERMISSION;
    ac.grant_permission = (Raftkv__RoleGrantPermissionArgs *)a;
    propose_change(s, &ac, (ProtobufCClosure)closure, data);
}

static void handle_revoke_permission(Raftkv__AuthService_Service *svc,
                                     const Raftkv__RoleRevokePermissionArgs *a,
                                     Raftkv__AuthChangeReply_Closure closure,
                                     void *data)
{
    struct kv_services *s = services_of(svc, auth_svc);
    if (!may_change(s, (ProtobufCClosure)closure, data, NULL,
                    "revoke permissions")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_REVOKE_PERMISSION;
    ac.revoke_permission = (Raftkv__RoleRevokePermissionArgs *)a;
    propose_change(s, &ac, (ProtobufCClosure)closure, data);
}

static void handle_enable(Raftkv__AuthService_Service *svc,
                          const Raftkv__AuthEnableArgs *a,
                          Raftkv__AuthChangeReply_Closure closure,
                          void *data)
{
    (void)a;
    struct kv_services *s = services_of(svc, auth_svc);
    if (!may_change(s, (ProtobufCClosure)closure, data, NULL, "enable auth")) {
        return;
    }
    /* The leader makes the token key; every node gets it through the log
     * (and snapshots). */
    uint8_t key[KV_AUTH_KEY_LEN];
    randombytes_buf(key, sizeof key);
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_ENABLE;
    ac.enable.data = key;
    ac.enable.len = sizeof key;
    propose_change(s, &ac, (ProtobufCClosure)closure, data);
    sodium_memzero(key, sizeof key);
}

static void handle_disable(Raftkv__AuthService_Service *svc,
                           const Raftkv__AuthDisableArgs *a,
                           Raftkv__AuthChangeReply_Closure closure,
                           void *data)
{
    (void)a;
    struct kv_services *s = services_of(svc, auth_svc);
    if (!may_change(s, (ProtobufCClosure)closure, data, NULL, "disable auth")) {
        return;
    }
    Raftkv__AuthCommand ac = RAFTKV__AUTH_COMMAND__INIT;
    ac.op_case = RAFTKV__AUTH_COMMAND__OP_DISABLE;
    ac.disable = true;
    propose_change(s, &ac, (ProtobufCClosure)closure, data);
}

/* --------------------------------------------------------------- reads */

static void reply_authenticate(ProtobufCClosure closure,
                               void *data,
                               int err,
                               const char *token,
                               uint64_t ttl,
                               const char *msg)
{
    Raftkv__AuthenticateReply r = RAFTKV__AUTHENTICATE_REPLY__INIT;
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    r.err = err;
    r.message = (char *)msg;
    r.leader = &hint;
    r.token = (char *)token;
    r.ttl_s = err == RAFTKV__AUTH_ERROR__AUTH_OK ? ttl : 0;
    closure(&r.base, data);
}

/* Authenticate: read the user's hash and the token key here, check the
 * password on the worker (finish_authenticate answers). An unknown user
 * is checked against a stand-in hash, so that the answer takes as long. */
static void handle_authenticate(Raftkv__AuthService_Service *svc,
                                const Raftkv__AuthenticateArgs *a,
                                Raftkv__AuthenticateReply_Closure closure,
                                void *data)
{
    struct kv_services *s = services_of(svc, auth_svc);
    struct kv_node *n = s->node;
    ProtobufCClosure cl = (ProtobufCClosure)closure;
    char msg[300] = "";
    uint64_t ttl =
        n->cfg.auth_token_ttl_s ? n->cfg.auth_token_ttl_s : DEFAULT_TOKEN_TTL_S;
    if (strlen(a->password) > MAX_PASSWORD ||
        strlen(a->user) > KV_AUTH_MAX_NAME) {
        reply_authenticate(cl, data, RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED,
                           "", 0,
                           "authentication failed: wrong user name or "
                           "password");
        return;
    }
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn) {
        reply_authenticate(cl, data, RAFTKV__AUTH_ERROR__AUTH_INTERNAL, "", 0,
                           "cannot read the auth state");
        return;
    }
    struct auth_job *j = job_new(a->password, cl, data);
    int err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    if (j) {
        err = kv_auth_login_info(&n->store, txn, a->user, j->hash, &j->version,
                                 j->key, msg, sizeof msg);
    } else {
        snprintf(msg, sizeof msg, "out of memory");
    }
    node_state_done(n, txn);
    if (err) {
        job_free(j);
        reply_authenticate(cl, data, err, "", 0, msg);
        return;
    }
    j->kind = JOB_AUTHENTICATE;
    j->known = j->hash[0] != 0;
    j->expiry = wall_s() + ttl;
    j->ttl = ttl;
    snprintf(j->user, sizeof j->user, "%s", a->user);
    job_submit(s, j);
}

/* The worker checked the password (on the loop): answer with a token. */
static void finish_authenticate(struct auth_job *j)
{
    char token[KV_AUTH_TOKEN_MAX] = "";
    if (j->ok && j->known &&
        kv_auth_token_sign(j->key, j->user, j->expiry, j->version, token) ==
            0) {
        reply_authenticate(j->closure, j->data, RAFTKV__AUTH_ERROR__AUTH_OK,
                           token, j->ttl, "");
    } else {
        reply_authenticate(j->closure, j->data,
                           RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED, "", 0,
                           "authentication failed: wrong user name or "
                           "password");
    }
    sodium_memzero(token, sizeof token);
}

/* Reads of users and roles are served by the leader, which has applied
 * every change it acknowledged (a follower may lag): AUTH_OK here, or
 * NOT_LEADER (hint filled) or UNAVAILABLE with msg. */
static int read_on_leader(struct kv_node *n,
                          Raftkv__AuthLeaderHint *hint,
                          char *msg,
                          size_t msg_size)
{
    uint64_t leader = raft_leader(n->raft);
    if (leader == n->cfg.id) {
        return RAFTKV__AUTH_ERROR__AUTH_OK;
    }
    set_hint(n, leader, hint);
    snprintf(msg, msg_size, "%s",
             leader ? "not the leader" : "no leader known");
    return leader ? RAFTKV__AUTH_ERROR__AUTH_NOT_LEADER
                  : RAFTKV__AUTH_ERROR__AUTH_UNAVAILABLE;
}

static void handle_user_get(Raftkv__AuthService_Service *svc,
                            const Raftkv__UserGetArgs *a,
                            Raftkv__UserGetReply_Closure closure,
                            void *data)
{
    struct kv_services *s = services_of(svc, auth_svc);
    struct kv_node *n = s->node;
    Raftkv__UserGetReply r = RAFTKV__USER_GET_REPLY__INIT;
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    Raftkv__AuthUserRecord *u = NULL;
    char msg[400] = "";
    r.leader = &hint;
    r.message = msg;
    r.err = require_root(s, data, a->name, "read other users", msg, sizeof msg);
    if (!r.err) {
        r.err = read_on_leader(n, &hint, msg, sizeof msg);
    }
    MDB_txn *txn = r.err ? NULL : node_state_read(n, NULL);
    if (!r.err && !txn) {
        r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    } else if (!r.err) {
        if (kv_auth_get_user(&n->store, txn, a->name, &u) != 0) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
            snprintf(msg, sizeof msg, "%.300s", n->store.errmsg);
        } else if (!u) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_USER_NOT_FOUND;
            snprintf(msg, sizeof msg, "no user '%s'", a->name);
        } else {
            r.roles = u->roles;
            r.n_roles = u->n_roles;
        }
        node_state_done(n, txn);
    }
    closure(&r, data);
    if (u) {
        raftkv__auth_user_record__free_unpacked(u, NULL);
    }
}

static void handle_role_get(Raftkv__AuthService_Service *svc,
                            const Raftkv__RoleGetArgs *a,
                            Raftkv__RoleGetReply_Closure closure,
                            void *data)
{
    struct kv_services *s = services_of(svc, auth_svc);
    struct kv_node *n = s->node;
    Raftkv__RoleGetReply r = RAFTKV__ROLE_GET_REPLY__INIT;
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    Raftkv__AuthRoleRecord *role = NULL;
    char msg[400] = "";
    r.leader = &hint;
    r.message = msg;
    r.err = require_root(s, data, NULL, "read roles", msg, sizeof msg);
    if (!r.err) {
        r.err = read_on_leader(n, &hint, msg, sizeof msg);
    }
    MDB_txn *txn = r.err ? NULL : node_state_read(n, NULL);
    if (!r.err && !txn) {
        r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    } else if (!r.err) {
        if (strcmp(a->name, KV_AUTH_ROOT) == 0) {
            snprintf(msg, sizeof msg, "built in: may do everything");
        } else if (kv_auth_get_role(&n->store, txn, a->name, &role) != 0) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
            snprintf(msg, sizeof msg, "%.300s", n->store.errmsg);
        } else if (!role) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_ROLE_NOT_FOUND;
            snprintf(msg, sizeof msg, "no role '%s'", a->name);
        } else {
            r.perms = role->perms;
            r.n_perms = role->n_perms;
        }
        node_state_done(n, txn);
    }
    closure(&r, data);
    if (role) {
        raftkv__auth_role_record__free_unpacked(role, NULL);
    }
}

/* UserList ('u') and RoleList ('r', with the built-in root). */
static void list_names(struct kv_services *s,
                       char kind,
                       Raftkv__NameListReply_Closure closure,
                       void *data)
{
    struct kv_node *n = s->node;
    Raftkv__NameListReply r = RAFTKV__NAME_LIST_REPLY__INIT;
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    char msg[400] = "";
    char **names = NULL, **all = NULL;
    size_t count = 0;
    r.leader = &hint;
    r.message = msg;
    r.err =
        require_root(s, data, NULL, kind == 'u' ? "list users" : "list roles",
                     msg, sizeof msg);
    if (!r.err) {
        r.err = read_on_leader(n, &hint, msg, sizeof msg);
    }
    MDB_txn *txn = r.err ? NULL : node_state_read(n, NULL);
    if (!r.err && !txn) {
        r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
    } else if (!r.err) {
        if (kv_auth_list(&n->store, txn, kind, &names, &count) != 0) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
            snprintf(msg, sizeof msg, "%.300s", n->store.errmsg);
        }
        node_state_done(n, txn);
    }
    r.names = names;
    r.n_names = count;
    if (!r.err && kind == 'r') {
        all = malloc((count + 1) * sizeof *all);
        if (!all) {
            r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
            snprintf(msg, sizeof msg, "out of memory");
        } else {
            size_t j = 0;
            bool placed = false;
            for (size_t i = 0; i < count; i++) {
                if (!placed && strcmp(KV_AUTH_ROOT, names[i]) < 0) {
                    all[j++] = KV_AUTH_ROOT;
                    placed = true;
                }
                all[j++] = names[i];
            }
            if (!placed) {
                all[j++] = KV_AUTH_ROOT;
            }
            r.names = all;
            r.n_names = j;
        }
    }
    closure(&r, data);
    free(all);
    for (size_t i = 0; i < count; i++) {
        free(names[i]);
    }
    free(names);
}

static void handle_user_list(Raftkv__AuthService_Service *svc,
                             const Raftkv__UserListArgs *a,
                             Raftkv__NameListReply_Closure closure,
                             void *data)
{
    (void)a;
    list_names(services_of(svc, auth_svc), 'u', closure, data);
}

static void handle_role_list(Raftkv__AuthService_Service *svc,
                             const Raftkv__RoleListArgs *a,
                             Raftkv__NameListReply_Closure closure,
                             void *data)
{
    (void)a;
    list_names(services_of(svc, auth_svc), 'r', closure, data);
}

static void handle_status(Raftkv__AuthService_Service *svc,
                          const Raftkv__AuthStatusArgs *a,
                          Raftkv__AuthStatusReply_Closure closure,
                          void *data)
{
    (void)a;
    struct kv_services *s = services_of(svc, auth_svc);
    struct kv_node *n = s->node;
    Raftkv__AuthStatusReply r = RAFTKV__AUTH_STATUS_REPLY__INIT;
    Raftkv__AuthLeaderHint hint = RAFTKV__AUTH_LEADER_HINT__INIT;
    r.leader = &hint;
    bool enabled = false;
    MDB_txn *txn = node_state_read(n, NULL);
    if (!txn || kv_auth_enabled(&n->store, txn, &enabled) != 0 ||
        kv_auth_revision(&n->store, txn, &r.auth_revision) != 0) {
        r.err = RAFTKV__AUTH_ERROR__AUTH_INTERNAL;
        r.message = "cannot read the auth state";
    }
    if (txn) {
        node_state_done(n, txn);
    }
    r.enabled = enabled;
    closure(&r, data);
}

/* --------------------------------------------- AdminService: root only */

/* Whether an admin call may go on; otherwise *err (an AdminError) and msg
 * say why. */
static bool admin_allowed(struct kv_services *s,
                          void *data,
                          const char *what,
                          int *err,
                          char *msg,
                          size_t msg_size)
{
    int a = require_root(s, data, NULL, what, msg, msg_size);
    if (a == RAFTKV__AUTH_ERROR__AUTH_OK) {
        return true;
    }
    *err = a == RAFTKV__AUTH_ERROR__AUTH_UNAUTHENTICATED
               ? RAFTKV__ADMIN_ERROR__ADMIN_UNAUTHENTICATED
           : a == RAFTKV__AUTH_ERROR__AUTH_PERMISSION_DENIED
               ? RAFTKV__ADMIN_ERROR__ADMIN_PERMISSION_DENIED
               : RAFTKV__ADMIN_ERROR__ADMIN_UNAVAILABLE;
    return false;
}

static void gate_transfer(Raftkv__AdminService_Service *svc,
                          const Raftkv__TransferLeaderArgs *a,
                          Raftkv__TransferLeaderReply_Closure closure,
                          void *data)
{
    struct kv_services *s = services_of(svc, admin_svc);
    struct kv_node *n = s->node;
    Raftkv__TransferLeaderReply r = RAFTKV__TRANSFER_LEADER_REPLY__INIT;
    char msg[400];
    int err;
    if (admin_allowed(s, data, "transfer leadership", &err, msg, sizeof msg)) {
        s->admin_inner.transfer_leader(svc, a, closure, data);
        return;
    }
    r.error = err;
    r.message = msg;
    r.node_id = n->cfg.id;
    r.target_id = a->target_id;
    r.term = raft_term(n->raft);
    closure(&r, data);
}

static void gate_snapshot_read(Raftkv__AdminService_Service *svc,
                               const Raftkv__SnapshotReadArgs *a,
                               Raftkv__SnapshotReadReply_Closure closure,
                               void *data)
{
    struct kv_services *s = services_of(svc, admin_svc);
    struct kv_node *n = s->node;
    Raftkv__SnapshotReadReply r = RAFTKV__SNAPSHOT_READ_REPLY__INIT;
    char msg[400];
    int err;
    if (admin_allowed(s, data, "read snapshots", &err, msg, sizeof msg)) {
        s->admin_inner.snapshot_read(svc, a, closure, data);
        return;
    }
    r.error = err;
    r.message = msg;
    r.node_id = n->cfg.id;
    closure(&r, data);
}

static void gate_fault(Raftkv__AdminService_Service *svc,
                       const Raftkv__FaultArgs *a,
                       Raftkv__FaultReply_Closure closure,
                       void *data)
{
    struct kv_services *s = services_of(svc, admin_svc);
    struct kv_node *n = s->node;
    Raftkv__FaultReply r = RAFTKV__FAULT_REPLY__INIT;
    char msg[400];
    int err;
    if (admin_allowed(s, data, "inject faults", &err, msg, sizeof msg)) {
        s->admin_inner.fault(svc, a, closure, data);
        return;
    }
    r.error = err;
    r.message = msg;
    r.node_id = n->cfg.id;
    closure(&r, data);
}

static void gate_member_change(Raftkv__AdminService_Service *svc,
                               const Raftkv__MemberChangeArgs *a,
                               Raftkv__MemberChangeReply_Closure closure,
                               void *data)
{
    struct kv_services *s = services_of(svc, admin_svc);
    struct kv_node *n = s->node;
    Raftkv__MemberChangeReply r = RAFTKV__MEMBER_CHANGE_REPLY__INIT;
    char msg[400];
    int err;
    if (admin_allowed(s, data, "change membership", &err, msg, sizeof msg)) {
        s->admin_inner.member_change(svc, a, closure, data);
        return;
    }
    r.error = err;
    r.message = msg;
    r.node_id = n->cfg.id;
    closure(&r, data);
}

int auth_service_init(struct kv_services *s)
{
    struct kv_node *n = s->node;
    /* Once per process is enough; later calls return 1 and do nothing.
     * It fails only without a usable random source (libsodium then aborts
     * on the first random bytes it needs). */
    if (sodium_init() < 0) {
        rpc_logf(RPC_LOG_ERROR,
                 "node %llu: sodium_init failed: users and "
                 "passwords cannot work",
                 (unsigned long long)n->cfg.id);
    }
    worker_start(s);
    s->auth_cache = calloc(1, sizeof *s->auth_cache); /* NULL: no cache */
    Raftkv__AuthService_Service svc = {
        RAFTKV__AUTH_SERVICE__BASE_INIT,
        handle_authenticate,
        handle_user_add,
        handle_user_delete,
        handle_user_password,
        handle_grant_role,
        handle_revoke_role,
        handle_user_get,
        handle_user_list,
        handle_role_add,
        handle_role_delete,
        handle_grant_permission,
        handle_revoke_permission,
        handle_role_get,
        handle_role_list,
        handle_enable,
        handle_disable,
        handle_status,
    };
    s->auth_svc = svc;
    /* The admin operations that change or reveal the cluster need root
     * once auth is enabled; Ping and Status stay open (health checks). */
    s->admin_inner = s->admin_svc;
    if (s->admin_svc.transfer_leader) {
        s->admin_svc.transfer_leader = gate_transfer;
    }
    if (s->admin_svc.snapshot_read) {
        s->admin_svc.snapshot_read = gate_snapshot_read;
    }
    if (s->admin_svc.fault) {
        s->admin_svc.fault = gate_fault;
    }
    if (s->admin_svc.member_change) {
        s->admin_svc.member_change = gate_member_change;
    }
    return node_subscribe(n, NODE_EV_STOPPING, auth_service_stop, s);
}
