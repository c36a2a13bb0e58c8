/* echo_loop.c: an in-process echo server and recorded calls for rpc tests. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "echo_loop.h"

int echo_completions;

uint64_t test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int echo_local_start(struct echo_local *l,
                     const struct rpc_server_options *opts)
{
    memset(l, 0, sizeof *l);
    l->base = event_base_new();
    if (!l->base) {
        return -1;
    }
    l->server = rpc_server_new(l->base, opts);
    if (!l->server) {
        goto err_free_base;
    }
    echo_service_init(&l->echo, l->base);
    if (rpc_server_add_service(l->server, &l->echo.svc.base) != 0 ||
        rpc_server_listen(l->server, "127.0.0.1", 0, &l->port) != 0) {
        goto err_free_server;
    }
    return 0;

err_free_server:
    rpc_server_free(l->server);
    l->server = NULL;
err_free_base:
    event_base_free(l->base);
    l->base = NULL;
    return -1;
}

void echo_local_stop(struct echo_local *l)
{
    rpc_server_free(l->server);
    l->server = NULL;
    if (l->base) {
        event_base_free(l->base);
        l->base = NULL;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

bool loop_run_until(struct event_base *base,
                    const int *counter,
                    int target,
                    int timeout_ms)
{
    /* A short persistent timer keeps EVLOOP_ONCE from blocking past the
     * deadline when nothing else happens. */
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 5000};
    event_add(tick, &tv);
    uint64_t deadline = test_now_ms() + (uint64_t)timeout_ms;
    while ((!counter || *counter < target) && test_now_ms() < deadline) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    event_free(tick);
    return counter && *counter >= target;
}

void loop_run_for(struct event_base *base, int ms)
{
    loop_run_until(base, NULL, 0, ms);
}

void echo_result_closure(const Raftkv__Test__EchoReply *reply, void *data)
{
    struct echo_result *r = data;
    r->done++;
    r->order = echo_completions++;
    if (reply) {
        r->status = RPC_OK;
        size_t n = reply->payload.len < sizeof r->payload - 1
                       ? reply->payload.len
                       : sizeof r->payload - 1;
        if (n) { /* an empty payload may have no data pointer */
            memcpy(r->payload, reply->payload.data, n);
        }
        r->payload[n] = 0;
    } else {
        r->status = rpc_last_status();
        snprintf(r->error, sizeof r->error, "%s", rpc_last_error());
    }
}

void echo_call(ProtobufCService *svc,
               int method,
               const char *payload,
               uint32_t delay_ms,
               struct echo_result *r)
{
    Raftkv__Test__EchoArgs args = RAFTKV__TEST__ECHO_ARGS__INIT;
    args.payload.data = (uint8_t *)payload;
    args.payload.len = strlen(payload);
    args.delay_ms = delay_ms;
    svc->invoke(svc, (unsigned)method, &args.base,
                (ProtobufCClosure)echo_result_closure, r);
}
