/* fuzz_dispatch.c: libFuzzer target: arbitrary bytes from a client into a
 * live rpc_server (over a socketpair), through dispatch to real handlers. */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "echo_service.h"
#include "rpc/rpc.h"

static struct event_base *base;
static struct rpc_server *server;
static struct echo_service echo;

static void quiet(int level, const char *line, void *data)
{
    (void)level;
    (void)line;
    (void)data;
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
        .max_output = 64 * 1024};
    server = rpc_server_new(base, &o);
    echo_service_init(&echo, base);
    echo.max_delay_ms = 1;
    rpc_server_add_service(server, &echo.svc.base);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
        return 0;
    }
    if (rpc_server_adopt(server, sv[0], "fuzz") != 0) {
        close(sv[1]);
        return 0;
    }
    size_t off = 0;
    char sink[65536];
    struct rpc_server_stats st;
    /* Feed the input, read whatever comes back, then close our end. */
    for (int spins = 0; spins < 100000; spins++) {
        if (off < size) {
            ssize_t w = write(sv[1], data + off, size - off);
            if (w > 0) {
                off += (size_t)w;
            }
            if (off == size) {
                shutdown(sv[1], SHUT_WR);
            }
        }
        while (read(sv[1], sink, sizeof sink) > 0) {
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        rpc_server_get_stats(server, &st);
        if (st.open == 0 && echo.deferred == 0) {
            break;
        }
        if (off == size && size == 0) {
            shutdown(sv[1], SHUT_WR);
        }
        if (echo.deferred) {
            usleep(200);
        }
    }
    close(sv[1]);
    /* Let the server see the close and answer outstanding Defers. */
    for (int spins = 0; spins < 10000; spins++) {
        rpc_server_get_stats(server, &st);
        if (st.open == 0 && echo.deferred == 0) {
            break;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(100);
    }
    return 0;
}
