/* internal.h: helpers shared by the rpc server and channel (private). */
#ifndef RPC_INTERNAL_H
#define RPC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

struct evbuffer;
struct sockaddr;

/* Record why the current call failed, for rpc_last_status/_error. */
void rpc_set_last(int status, const char *msg);

/* Map a wire RpcStatus to an rpc_error code (unknown values: internal). */
int rpc_status_from_wire(int wire);

/* Append one frame to out with a single copy. Returns 0, RPC_E_TOO_BIG or
 * RPC_E_NOMEM. */
int rpc_write_frame(struct evbuffer *out,
                    Raftkv__RpcHeader *hdr,
                    const ProtobufCMessage *args,
                    const struct rpc_limits *limits);

/* The same with args packed already (args_size bytes). */
int rpc_write_frame_packed(struct evbuffer *out,
                           Raftkv__RpcHeader *hdr,
                           const void *args,
                           size_t args_size,
                           const struct rpc_limits *limits);

/* Called for each decoded frame; returns 0 to go on, non-zero to stop. */
typedef int (*rpc_frame_cb)(void *ctx, const struct rpc_frame *frame);

/* Decode and drain every complete frame in `in`, calling cb for each.
 * Returns 0 when the input is used up, RPC_DECODE_ERROR on a broken stream
 * (see rpc_decoder_errmsg), or cb's non-zero value when it stopped. */
int rpc_read_frames(struct evbuffer *in,
                    struct rpc_decoder *d,
                    rpc_frame_cb cb,
                    void *ctx);

/* "127.0.0.1:7001" or "[::1]:7001". */
void rpc_format_addr(const struct sockaddr *sa, char *out, size_t len);

/* Set TCP_NODELAY (and close-on-exec) on a connected socket. */
void rpc_tune_socket(int fd);

/* Write a socket bufferevent's queued output now, as far as the socket
 * takes it without blocking, instead of on the loop's next turn. */
struct bufferevent;
void rpc_bev_flush(struct bufferevent *bev);

/* TLS (tls.c). */
#include <openssl/ssl.h>
/* A new SSL for one connection; a client's checks that the other end's
 * certificate names host. NULL when out of memory. */
SSL *rpc_tls_ssl(struct rpc_tls *t, const char *host);
/* Does the other end's certificate carry one of the allowed names? */
bool rpc_tls_name_allowed(const struct rpc_tls *t,
                          SSL *ssl,
                          char *why,
                          size_t why_len);
/* The common name of a verified peer certificate, or "". */
void rpc_tls_peer_cn(SSL *ssl, char *out, size_t len);
/* Why a TLS bufferevent failed, for people. */
void rpc_tls_error(struct bufferevent *bev, char *out, size_t len);

/* Fault injection state of a channel or of one served service. */
struct rpc_fault_state
{
    struct rpc_faults f;          /* what to inject */
    bool active;                  /* anything at all */
    uint64_t rng;                 /* splitmix64 state */
    struct rpc_fault_stats stats; /* what it did */
};

/* What happens to one call. */
struct rpc_fault_choice
{
    bool cut;               /* refused: fail after fail_after_ms */
    bool drop_request;      /* lost: fail after fail_after_ms */
    uint32_t fail_after_ms; /* for cut and drop_request */
    uint32_t delay_ms;      /* hold the request this long first */
    bool duplicate;         /* deliver it twice */
    bool drop_reply;        /* lose the reply */
    uint32_t hold_ms;       /* hold the reply this long */
};

/* Set (f non-NULL) or clear faults; RPC_E_INVALID for invalid ones. */
int rpc_fault_set(struct rpc_fault_state *st,
                  const struct rpc_faults *f,
                  uint64_t seed);

/* Choose what happens to the next call. */
void rpc_fault_plan(struct rpc_fault_state *st, struct rpc_fault_choice *c);

/* to += from */
void rpc_fault_stats_add(struct rpc_fault_stats *to,
                         const struct rpc_fault_stats *from);

#endif /* RPC_INTERNAL_H */
