/* fuzz_dispatch.c: libFuzzer target: arbitrary bytes from a client into a
 * live rpc_server (over a socketpair), through dispatch to real handlers.
 *
 * The client reads at most READ_PER_TURN bytes of replies per loop turn,
 * the server's socket buffer is small and its output cap is 1 KiB, so
 * that replies back up: reading pauses and resumes, and a connection
 * whose replies pass 4 KiB closes, as with a client that reads slowly.
 *
 * The EchoService is the test one, except Defer: instead of a timer, its
 * calls wait in a list that the harness answers a few loop turns later
 * (delay_ms & 7 turns), or after the connection closed. That keeps every
 * run free of sleeps and of the clock, so an input does the same thing
 * each time. Defer's delay_ms also picks how it is answered: bit 3 calls
 * rpc_server_flush after answering (as kvserver does before an fsync),
 * bit 4 answers with rpc_call_fail (status delay_ms >> 5, the payload as
 * the error text) instead of a reply. */
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "echo_service.h"
#include "rpc/rpc.h"

#define MAX_TURNS     10000 /* loop turns an input may take */
#define READ_PER_TURN 1024  /* reply bytes the client reads per turn */

/* A Defer call waiting for the harness to answer it. */
struct deferred
{
    struct deferred *next;                   /* list, oldest last */
    Raftkv__Test__EchoReply_Closure closure; /* the server's closure */
    void *closure_data;                      /* and its call */
    uint32_t delay_ms;                       /* turns, flush and fail bits */
    uint32_t turns;                          /* loop turns left to wait */
    size_t len;                              /* bytes of payload */
    uint8_t payload[];                       /* copy of the request's */
};

static struct event_base *base;
static struct rpc_server *server;
static struct echo_service echo;
static struct deferred *waiting; /* Defer calls not yet answered */

static void quiet(int level, const char *line, void *data)
{
    (void)level;
    (void)line;
    (void)data;
}

static void fuzz_defer(Raftkv__Test__EchoService_Service *svc,
                       const Raftkv__Test__EchoArgs *in,
                       Raftkv__Test__EchoReply_Closure closure,
                       void *closure_data)
{
    (void)svc;
    struct deferred *d = malloc(sizeof *d + in->payload.len);
    if (!d) {
        closure(NULL, closure_data);
        return;
    }
    d->closure = closure;
    d->closure_data = closure_data;
    d->delay_ms = in->delay_ms;
    d->turns = in->delay_ms & 7;
    d->len = in->payload.len;
    if (d->len) {
        memcpy(d->payload, in->payload.data, d->len);
    }
    d->next = waiting;
    waiting = d;
}

/* Answer a Defer call as its delay_ms says, and free it. */
static void answer(struct deferred *d)
{
    if (d->delay_ms & 16) {
        char msg[4097];
        size_t n = d->len < sizeof msg - 1 ? d->len : sizeof msg - 1;
        memcpy(msg, d->payload, n);
        msg[n] = '\0';
        rpc_call_fail(d->closure_data, (int)(d->delay_ms >> 5), msg);
    } else {
        Raftkv__Test__EchoReply reply = RAFTKV__TEST__ECHO_REPLY__INIT;
        reply.payload.data = d->payload;
        reply.payload.len = d->len;
        d->closure(&reply, d->closure_data);
    }
    if (d->delay_ms & 8) {
        rpc_server_flush(server);
    }
    free(d);
}

/* One loop turn passed: answer the calls whose wait is over. */
static void answer_due(void)
{
    struct deferred **p = &waiting;
    while (*p) {
        struct deferred *d = *p;
        if (d->turns == 0) {
            *p = d->next;
            answer(d);
        } else {
            d->turns--;
            p = &d->next;
        }
    }
}

static bool settled(void)
{
    struct rpc_server_stats st;
    rpc_server_get_stats(server, &st);
    return st.open == 0 && !waiting;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    rpc_log_set_handler(quiet, NULL);
    base = event_base_new();
    struct rpc_server_options o = {
        .limits = {.max_head = 4096, .max_args = 64 * 1024},
        .max_output = 1024};
    server = rpc_server_new(base, &o);
    echo_service_init(&echo, base);
    echo.svc.defer = fuzz_defer;
    if (!base || !server ||
        rpc_server_add_service(server, &echo.svc.base) != 0) {
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
        return 0;
    }
    int sndbuf = 4096; /* the kernel doubles it: 8 KiB in flight at most */
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (rpc_server_adopt(server, sv[0], "fuzz") != 0) {
        close(sv[1]);
        return 0;
    }
    size_t off = 0;
    char sink[READ_PER_TURN];
    if (size == 0) {
        shutdown(sv[1], SHUT_WR);
    }
    /* Feed the input, read some of what comes back, answer Defers as they
     * fall due; the server closes its end at our EOF, at a broken frame or
     * on too many unread replies. */
    for (int turn = 0; turn < MAX_TURNS && !settled(); turn++) {
        if (off < size) {
            ssize_t w = write(sv[1], data + off, size - off);
            if (w > 0) {
                off += (size_t)w;
            }
            if (off == size) {
                shutdown(sv[1], SHUT_WR);
            }
        }
        ssize_t got = read(sv[1], sink, sizeof sink); /* a slow reader */
        (void)got;
        event_base_loop(base, EVLOOP_NONBLOCK);
        answer_due();
    }
    /* Nothing here waits for the clock: a connection still open, or a call
     * still pending, after that many turns is a hang. */
    if (!settled()) {
        __builtin_trap();
    }
    close(sv[1]);
    event_base_loop(base, EVLOOP_NONBLOCK); /* frees what libevent defers */
    return 0;
}
