/* echo_service.h: the test EchoService, and a server process running it. */
#ifndef TESTS_ECHO_SERVICE_H
#define TESTS_ECHO_SERVICE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <proto/echo.pb-c.h>

struct event_base;

/* An EchoService implementation whose Defer replies come from timers on
 * base. Echo with payload "whoami" answers the caller's address, "token"
 * the auth token of its header ("mark" notes calls in mark_at;
 * "deadline" answers the ms left of the call's deadline, -1 for none;
 * "trace" its trace id in hex),
 * "peerid" the node id its connection
 * proved in the peer handshake, "tlsname" the CN of its verified client
 * certificate. Stream sends count frames "<payload>:<n>" (n from 0), one
 * every delay_ms (as fast as flow control lets it when 0), then a last
 * reply "end:<frames sent>"; with count 0 it goes on until cancelled. Chat
 * answers its request and each message the caller sends on it with a frame
 * of the same payload (dropped when there is no room), and ends with
 * "end:<messages taken>" at a message "end". The Unimplemented slot is
 * left NULL on purpose. */
struct echo_service
{
    Raftkv__Test__EchoService_Service svc; /* must be first */
    struct event_base *base;               /* for Defer's timers */
    uint64_t calls;                        /* handler invocations */
    uint64_t deferred;                     /* Defer replies not yet sent */
    uint32_t max_delay_ms;                 /* clamp Defer delays (0: none) */
    uint64_t streams_open;                 /* Stream calls not yet ended */
    uint64_t streams_cancelled;            /* ended by a cancel or close */
    uint64_t stream_frames;                /* Stream frames sent */
    uint64_t stream_stalls;                /* sends refused for no room */
    uint64_t chats_open;                   /* Chat calls not yet ended */
    uint64_t chats_cancelled;              /* of them, ended by a cancel,
                                              a close or a refused message */
    uint64_t chat_messages;                /* messages Chat streams took */
    char chat_last[64];                    /* the last one's payload */
    uint64_t mark_at;                      /* calls, counting itself, when
                                              an Echo "mark" was handled */
    struct echo_stream *shared;            /* open Stream calls whose
                                              payload starts with "share"
                                              (count 0): they send only
                                              echo_share_send's frames */
};

/**
 * Send one frame of @payload to every open "share" stream, with
 * rpc_stream_send_shared (newest stream first).
 * @param results out: each stream's result, newest first
 * @param cap entries in results
 * @return the streams sent to
 */
size_t echo_share_send(struct echo_service *e,
                       const char *payload,
                       int *results,
                       size_t cap);

/**
 * Fill an echo service for a base.
 * @param e the service to fill
 * @param base the event base whose timers answer Defer (borrowed)
 */
void echo_service_init(struct echo_service *e, struct event_base *base);

/**
 * Fork a process that serves EchoService on host, on a free port.
 * The child dies with its parent.
 * @param host the address to listen on, e.g. "127.0.0.1"
 * @param port 0 for a free port, or a port to reuse
 * @param port_out set to the port listened on
 * @return the child's pid, or -1 on failure
 */
pid_t echo_server_spawn(const char *host, uint16_t port, uint16_t *port_out);

/**
 * Kill (SIGKILL) and reap a spawned server.
 */
void echo_server_kill(pid_t pid);

#endif /* TESTS_ECHO_SERVICE_H */
