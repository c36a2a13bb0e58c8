/* test_clerk_errors.c: what libclerk tells its caller when a server
 * answers INTERNAL (a failure of the server itself: a store error, a bug),
 * against two in-process KvServices: a "leader" that fails every read and
 * write so, and "followers" that send every call to it. Both are tried
 * again until their deadline (the failure may be one node's, and brief;
 * a write's may have come after it was proposed). Then a read ends with
 * CLERK_INTERNAL and the leader's message, a write with an unknown
 * outcome and the leader's message in the error: not only the
 * followers' last redirect. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <event2/event.h>

#include <proto/kv.pb-c.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "echo_loop.h"
#include "rpc/rpc.h"

#define FAILURE "cannot read the state: injected by the test"

/* A KvService whose reads and writes fail INTERNAL (sessions open), or,
 * with redirect set, a follower sending every call to @leader. */
struct failing
{
    Raftkv__KvService_Service svc; /* first: handlers get its address */
    bool redirect;                 /* a follower */
    char leader[64];               /* its leader's address */
    struct event_base *base;
    struct rpc_server *server;
    uint16_t port;
    pthread_t thread;
    atomic_bool stop;
    atomic_int reads, writes;
};

/* The answer of @f to a read or write: its error, message and hint. */
static int answer(struct failing *f,
                  char **message,
                  Raftkv__LeaderHint **leader,
                  Raftkv__LeaderHint *hint)
{
    if (f->redirect) {
        *hint = (Raftkv__LeaderHint)RAFTKV__LEADER_HINT__INIT;
        hint->id = 1;
        hint->address = f->leader;
        *leader = hint;
        *message = "not the leader";
        return RAFTKV__KV_ERROR__KV_WRONG_LEADER;
    }
    *message = FAILURE;
    return RAFTKV__KV_ERROR__KV_INTERNAL;
}

static void on_get(Raftkv__KvService_Service *svc,
                   const Raftkv__GetArgs *a,
                   Raftkv__GetReply_Closure closure,
                   void *data)
{
    (void)a;
    struct failing *f = (struct failing *)svc;
    atomic_fetch_add(&f->reads, 1);
    Raftkv__GetReply r = RAFTKV__GET_REPLY__INIT;
    Raftkv__LeaderHint hint;
    r.err = answer(f, &r.message, &r.leader, &hint);
    closure(&r, data);
}

static void on_range(Raftkv__KvService_Service *svc,
                     const Raftkv__RangeArgs *a,
                     Raftkv__RangeReply_Closure closure,
                     void *data)
{
    (void)a;
    struct failing *f = (struct failing *)svc;
    atomic_fetch_add(&f->reads, 1);
    Raftkv__RangeReply r = RAFTKV__RANGE_REPLY__INIT;
    Raftkv__LeaderHint hint;
    r.err = answer(f, &r.message, &r.leader, &hint);
    closure(&r, data);
}

static void on_open_session(Raftkv__KvService_Service *svc,
                            const Raftkv__OpenSessionArgs *a,
                            Raftkv__OpenSessionReply_Closure closure,
                            void *data)
{
    (void)a;
    struct failing *f = (struct failing *)svc;
    Raftkv__OpenSessionReply r = RAFTKV__OPEN_SESSION_REPLY__INIT;
    Raftkv__LeaderHint hint;
    if (f->redirect) {
        r.err = answer(f, &r.message, &r.leader, &hint);
    }
    closure(&r, data);
}

static void on_put_append(Raftkv__KvService_Service *svc,
                          const Raftkv__PutAppendArgs *a,
                          Raftkv__PutAppendReply_Closure closure,
                          void *data)
{
    (void)a;
    struct failing *f = (struct failing *)svc;
    atomic_fetch_add(&f->writes, 1);
    Raftkv__PutAppendReply r = RAFTKV__PUT_APPEND_REPLY__INIT;
    Raftkv__LeaderHint hint;
    r.err = answer(f, &r.message, &r.leader, &hint);
    closure(&r, data);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void *serve(void *arg)
{
    struct failing *f = arg;
    struct event *tick = event_new(f->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 10000};
    event_add(tick, &tv);
    while (!atomic_load(&f->stop)) {
        event_base_loop(f->base, EVLOOP_ONCE);
    }
    event_free(tick);
    return NULL;
}

static int failing_start(struct failing *f, const struct failing *leader)
{
    memset(f, 0, sizeof *f);
    if (leader) {
        f->redirect = true;
        snprintf(f->leader, sizeof f->leader, "127.0.0.1:%u",
                 (unsigned)leader->port);
    }
    f->svc = (Raftkv__KvService_Service){
        RAFTKV__KV_SERVICE__BASE_INIT,
        on_get,
        on_put_append,
        NULL, /* delete */
        NULL, /* compare_and_swap */
        on_open_session,
        on_range,
        NULL, /* delete_range */
        NULL, /* txn */
        NULL, /* compact */
        NULL, /* events */
    };
    f->base = event_base_new();
    f->server = f->base ? rpc_server_new(f->base, NULL) : NULL;
    if (!f->server || rpc_server_add_service(f->server, &f->svc.base) != 0 ||
        rpc_server_listen(f->server, "127.0.0.1", 0, &f->port) != 0 ||
        pthread_create(&f->thread, NULL, serve, f) != 0) {
        return -1;
    }
    return 0;
}

static void failing_stop(struct failing *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    rpc_server_free(f->server);
    event_base_free(f->base);
}

/* A handle on the servers given (NULL ends the list). */
static struct clerk *open_on(unsigned deadline_ms, const struct failing *f, ...)
{
    char eps[256] = "";
    va_list ap;
    va_start(ap, f);
    for (; f; f = va_arg(ap, const struct failing *)) {
        size_t used = strlen(eps);
        snprintf(eps + used, sizeof eps - used, "%s127.0.0.1:%u",
                 used ? "," : "", (unsigned)f->port);
    }
    va_end(ap);
    struct clerk_options o = {.deadline_ms = deadline_ms};
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, &o) == CLERK_OK);
    return ck;
}

static void test_read_failed_by_the_server_says_so(void)
{
    struct failing f, g, h;
    CU_ASSERT_FATAL(failing_start(&f, NULL) == 0);
    CU_ASSERT_FATAL(failing_start(&g, &f) == 0);
    CU_ASSERT_FATAL(failing_start(&h, &f) == 0);
    struct clerk *ck = open_on(300, &g, &f, &h, NULL);
    /* Whichever server it tried last when the deadline came, and both
     * read calls (Range, Get). */
    int told = 0;
    for (int i = 0; i < 10; i++) {
        struct clerk_kv *kv = NULL;
        void *value = NULL;
        size_t len = 0;
        int rv = i % 2 ? clerk_get(ck, "k", 1, &value, &len)
                       : clerk_get_ex(ck, "k", 1, &kv, NULL);
        if (i == 0) {
            printf("\n  get: %s: %s\n", clerk_error_code(rv), clerk_errmsg(ck));
        }
        CU_ASSERT_EQUAL(rv, CLERK_INTERNAL);
        told += strstr(clerk_errmsg(ck), FAILURE) != NULL;
        clerk_kv_free(kv);
        clerk_free(value);
    }
    CU_ASSERT_EQUAL(told, 10);
    /* Tried again (a node's failure may be brief), not given up at once. */
    CU_ASSERT(atomic_load(&f.reads) >= 20);
    clerk_close(ck);
    failing_stop(&h);
    failing_stop(&g);
    failing_stop(&f);
}

static void test_write_failed_by_the_server_keeps_its_message(void)
{
    struct failing f, g, h;
    CU_ASSERT_FATAL(failing_start(&f, NULL) == 0);
    CU_ASSERT_FATAL(failing_start(&g, &f) == 0);
    CU_ASSERT_FATAL(failing_start(&h, &f) == 0);
    struct clerk *ck = open_on(300, &g, &f, &h, NULL);
    /* Whichever server it tried last when the deadline came. */
    int told = 0;
    for (int i = 0; i < 10; i++) {
        int rv = clerk_put(ck, "k", 1, "v", 1);
        if (i == 0) {
            printf("\n  put: %s: %s\n", clerk_error_code(rv), clerk_errmsg(ck));
        }
        /* It may have been applied before the server failed: unknown. */
        CU_ASSERT_EQUAL(rv, CLERK_UNKNOWN_OUTCOME);
        told += strstr(clerk_errmsg(ck), FAILURE) != NULL;
    }
    CU_ASSERT_EQUAL(told, 10);
    CU_ASSERT(atomic_load(&f.writes) >= 2);
    clerk_close(ck);
    failing_stop(&h);
    failing_stop(&g);
    failing_stop(&f);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_read_failed_by_the_server_says_so",
         test_read_failed_by_the_server_says_so},
        {"test_write_failed_by_the_server_keeps_its_message",
         test_write_failed_by_the_server_keeps_its_message},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"clerk_errors", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
