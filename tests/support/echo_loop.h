/* echo_loop.h: an in-process echo server and recorded calls for rpc tests. */
#ifndef TESTS_ECHO_LOOP_H
#define TESTS_ECHO_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "echo_service.h"
#include "rpc/rpc.h"

struct event_base;

/* Method indexes of EchoService, for echo_call. */
enum {
    ECHO_M_ECHO = 0,
    ECHO_M_DEFER = 1,
    ECHO_M_UNIMPLEMENTED = 2,
    ECHO_M_FAIL = 3,
};

/* A server serving one EchoService on 127.0.0.1, on its own base. */
struct echo_local
{
    struct event_base *base;   /* made by echo_local_start */
    struct rpc_server *server; /* listening on port */
    struct echo_service echo;  /* the service it serves */
    uint16_t port;             /* the port it listens on */
};

/* What a call's closure saw. */
struct echo_result
{
    int done;          /* times the closure ran: must end at 1 */
    int status;        /* RPC_OK or rpc_last_status() */
    char error[256];   /* rpc_last_error() on failure */
    char payload[256]; /* reply payload, NUL-terminated */
    int order;         /* value of echo_completions when it ran */
};

/* Closures run by echo_result_closure so far; tests reset it to 0 before
 * a batch and wait for it to reach the batch's size. */
extern int echo_completions;

/**
 * Milliseconds of CLOCK_MONOTONIC.
 */
uint64_t test_now_ms(void);

/**
 * Make a base, a server on it serving an echo service, listening on a free
 * port of 127.0.0.1.
 * @param l filled in
 * @param opts server settings (copied), or NULL for the defaults
 * @return 0, or -1 when any step failed (nothing is left allocated)
 */
int echo_local_start(struct echo_local *l,
                     const struct rpc_server_options *opts);

/**
 * Free the server (if l->server is still set) and the base.
 */
void echo_local_stop(struct echo_local *l);

/**
 * Run base's loop until *counter reaches target or timeout_ms pass.
 * @param counter the counter to watch, or NULL to run for timeout_ms
 * @return true when the counter reached the target
 */
bool loop_run_until(struct event_base *base,
                    const int *counter,
                    int target,
                    int timeout_ms);

/**
 * Run base's loop for ms milliseconds.
 */
void loop_run_for(struct event_base *base, int ms);

/**
 * The closure of echo_call: records the outcome in the struct echo_result
 * it is given and bumps echo_completions.
 */
void echo_result_closure(const Raftkv__Test__EchoReply *reply, void *data);

/**
 * Start a call of an EchoService method whose closure fills r.
 * @param svc a channel's service for an EchoService descriptor
 * @param method an ECHO_M_ index
 * @param payload the payload (a C string, copied)
 * @param delay_ms Defer's delay
 * @param r where the outcome goes (borrowed until the closure runs)
 */
void echo_call(ProtobufCService *svc,
               int method,
               const char *payload,
               uint32_t delay_ms,
               struct echo_result *r);

#endif /* TESTS_ECHO_LOOP_H */
