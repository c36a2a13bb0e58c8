/* rpcbench: calls/s and latency of a small Echo call over raftkv's RPC.
 *
 *   rpcbench [--conns M] [--clients N] [--duration SECONDS] [--payload BYTES]
 *            [--server HOST:PORT]
 *
 * N closed-loop clients (each sends its next call when the reply arrives)
 * share M multiplexed connections, all on one event loop. Without --server
 * it forks an Echo server process on 127.0.0.1 (one event loop), so client
 * and server each have a core, as in shared/anchors/pingpong.c. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "echo_service.h"
#include "hist.h"
#include "rpc/rpc.h"

struct client
{
    ProtobufCService *svc; /* its channel's Echo service */
    uint64_t started;      /* ns of the call in flight */
};

static struct event_base *base;
static struct hist hist;
static uint64_t errors, end_ns;
static Raftkv__Test__EchoArgs args = RAFTKV__TEST__ECHO_ARGS__INIT;
static int running;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_reply(const Raftkv__Test__EchoReply *reply, void *data);

static void send_call(struct client *c)
{
    c->started = now_ns();
    raftkv__test__echo_service__echo(c->svc, &args, on_reply, c);
}

static void on_reply(const Raftkv__Test__EchoReply *reply, void *data)
{
    struct client *c = data;
    uint64_t t = now_ns();
    if (reply) {
        hist_add(&hist, t - c->started);
    } else {
        errors++;
    }
    if (t < end_ns) {
        send_call(c);
    } else if (--running == 0) {
        event_base_loopbreak(base);
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: rpcbench [--conns M] [--clients N] [--duration SECONDS]"
            " [--payload BYTES] [--server HOST:PORT]\n");
}

int main(int argc, char **argv)
{
    int conns = 1, clients = 1, payload = 64;
    double duration = 5;
    char host[256] = "127.0.0.1";
    uint16_t port = 0;
    static const struct option opts[] = {
        {"conns", required_argument, NULL, 'c'},
        {"clients", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"payload", required_argument, NULL, 'p'},
        {"server", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
            case 'c':
                conns = atoi(optarg);
                break;
            case 'n':
                clients = atoi(optarg);
                break;
            case 'd':
                duration = atof(optarg);
                break;
            case 'p':
                payload = atoi(optarg);
                break;
            case 's': {
                char *colon = strrchr(optarg, ':');
                if (!colon || colon == optarg) {
                    fprintf(stderr, "rpcbench: --server wants HOST:PORT\n");
                    return 2;
                }
                snprintf(host, sizeof host, "%.*s", (int)(colon - optarg),
                         optarg);
                port = (uint16_t)atoi(colon + 1);
                break;
            }
            case 'h':
                usage(stdout);
                return 0;
            default:
                usage(stderr);
                return 2;
        }
    }
    if (conns < 1 || clients < 1 || duration <= 0 || payload < 0 ||
        payload > 1 << 20) {
        fprintf(stderr,
                "rpcbench: need conns, clients >= 1, duration > 0, "
                "0 <= payload <= 1 MiB\n");
        return 2;
    }
    pid_t pid = 0;
    if (!port) {
        pid = echo_server_spawn(host, 0, &port);
        if (pid < 0) {
            fprintf(stderr, "rpcbench: could not start the echo server\n");
            return 1;
        }
    }
    base = event_base_new();
    struct rpc_channel **ch = calloc((size_t)conns, sizeof *ch);
    struct client *cl = calloc((size_t)clients, sizeof *cl);
    uint8_t *buf = calloc(1, (size_t)payload + 1);
    if (!base || !ch || !cl || !buf) {
        fprintf(stderr, "rpcbench: out of memory\n");
        return 1;
    }
    args.payload.data = buf;
    args.payload.len = (size_t)payload;
    for (int i = 0; i < conns; i++) {
        ch[i] = rpc_channel_new(base, host, port, NULL);
    }
    for (int i = 0; i < clients; i++) {
        cl[i].svc = rpc_channel_service(
            ch[i % conns], &raftkv__test__echo_service__descriptor);
    }
    /* Warm up: one call per connection, so connects are not measured. */
    end_ns = 0;
    running = conns;
    for (int i = 0; i < conns; i++) {
        send_call(&cl[i]);
    }
    event_base_dispatch(base);
    memset(&hist, 0, sizeof hist);
    errors = 0;
    uint64_t start = now_ns();
    end_ns = start + (uint64_t)(duration * 1e9);
    running = clients;
    for (int i = 0; i < clients; i++) {
        send_call(&cl[i]);
    }
    event_base_dispatch(base);
    double elapsed = (double)(now_ns() - start) / 1e9;
    printf(
        "op=echo conns=%d clients=%d payload=%d calls=%llu errors=%llu "
        "elapsed=%.2fs rate=%.0f calls/s mean=%.1fus p50=%.1fus "
        "p90=%.1fus p99=%.1fus max=%.1fus\n",
        conns, clients, payload, (unsigned long long)hist.n,
        (unsigned long long)errors, elapsed, (double)hist.n / elapsed,
        hist.n ? hist.sum / (double)hist.n / 1e3 : 0.0,
        (double)hist_quantile(&hist, 0.5) / 1e3,
        (double)hist_quantile(&hist, 0.9) / 1e3,
        (double)hist_quantile(&hist, 0.99) / 1e3, (double)hist.max / 1e3);
    for (int i = 0; i < conns; i++) {
        rpc_channel_free(ch[i]);
    }
    free(ch);
    free(cl);
    free(buf);
    event_base_free(base);
    echo_server_kill(pid);
    return errors ? 1 : 0;
}
