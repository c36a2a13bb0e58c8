/* rpc.h: raftkv's one RPC protocol: frames, server, channel, errors, logging.
 *
 * Every hop in raftkv (client to server, server to server) speaks this:
 *
 *   frame := head_size (uint32, big-endian) | RpcHeader | args
 *
 * RpcHeader (proto/rpc.proto) names the service and method, the size of the
 * args, a call id that the reply echoes, and on replies a status and an error
 * text. One TCP connection carries many calls at once; replies come back in
 * any order, matched by call id.
 *
 * Server side: register any number of protobuf-c services (generated
 * ProtobufCService implementations) on an rpc_server; it dispatches each
 * request by (service_name, method_name) through their descriptors and sends
 * what the handler passes to its closure, now or later.
 *
 * Client side: an rpc_channel is a connection to one address; for each
 * service descriptor it hands out a ProtobufCService whose invoke() sends a
 * frame, so the generated stubs (raftkv__kv_service__get(...)) are the call
 * API. Every call's closure runs exactly once: with the reply, or with NULL on
 * failure (then rpc_last_error() says why).
 *
 * Threads: a server or channel belongs to the thread that runs its
 * event_base. Different threads may each use their own.
 */
#ifndef RPC_RPC_H
#define RPC_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include <proto/rpc.pb-c.h>

struct event_base;

/* ---------------------------------------------------------------- errors */

/* Outcomes of a call. The first values mirror Raftkv__RpcStatus (what a
 * server answered); the rest arise on the calling side. */
enum rpc_error {
    RPC_OK = 0,
    RPC_E_UNKNOWN_SERVICE = 1,   /* server has no such service */
    RPC_E_UNKNOWN_METHOD = 2,    /* service has no such method or handler */
    RPC_E_BAD_REQUEST = 3,       /* args did not unpack on the server */
    RPC_E_SHUTTING_DOWN = 4,     /* server is stopping */
    RPC_E_INTERNAL = 5,          /* handler failed without a reply */
    RPC_E_OVERLOADED = 6,        /* no room for the call (buffers full, or
                                    too many calls in flight) */
    RPC_E_DEADLINE_EXCEEDED = 7, /* the server found the call's deadline
                                    passed before it started it */
    RPC_E_WRONG_CLUSTER = 8,     /* the server is of another cluster than
                                    the one the caller means */
    RPC_E_TIMEOUT = 100,         /* no reply before the deadline */
    RPC_E_UNAVAILABLE,           /* could not connect (or backing off) */
    RPC_E_CONNECTION_LOST,       /* connection closed with the call pending */
    RPC_E_CANCELLED,             /* channel freed with the call pending */
    RPC_E_TOO_BIG,               /* request or reply over a frame cap */
    RPC_E_BAD_REPLY,             /* reply did not unpack: stream dropped */
    RPC_E_NOMEM,                 /* out of memory */
    RPC_E_INVALID,               /* bad argument to an rpc_ function */
    RPC_E_IO,                    /* socket error (bind, listen, ...) */
};

/**
 * Name an rpc_error code for people.
 * @param err a value of enum rpc_error
 * @return a static string, "unknown error" for values outside the enum
 */
const char *rpc_strerror(int err);

/**
 * Why the most recent closure of this thread ran with NULL.
 * Valid inside a closure (and until the next call completes on this
 * thread).
 * @return an enum rpc_error code; RPC_OK if the last call succeeded
 */
int rpc_last_status(void);

/**
 * The context of rpc_last_status(): "no reply from 127.0.0.1:7001 within
 * 500 ms", or the server's own error text.
 * @return a thread-local string, never NULL
 */
const char *rpc_last_error(void);

/* ---------------------------------------------------------------- frames */

#define RPC_PREFIX_SIZE 4 /* bytes of the big-endian head_size */

/* Default caps. A header holds two names, an id, a status and an error
 * text: 64 KiB is far above any legitimate one. Args hold at most one
 * AppendEntries batch or one snapshot chunk (each bounded at 1 MiB by the
 * node) or one client value: 8 MiB leaves room for large values while
 * bounding what one bad peer makes a node allocate. */
#define RPC_DEFAULT_MAX_HEAD (64u * 1024)
#define RPC_DEFAULT_MAX_ARGS (8u * 1024 * 1024)

/* A server answers a request whose args are over its cap with
 * RPC_E_BAD_REQUEST and an error text that starts with this, so that a
 * caller can tell "too big" from other bad requests (the wire status has
 * no value of its own for it): "request too big: raftkv.KvService.PutAppend
 * args of 9437184 bytes are over the server's cap of 8388608". */
#define RPC_TOO_BIG_PREFIX "request too big: "

/* Hard caps on one frame. Zero fields mean the defaults above. */
struct rpc_limits
{
    uint32_t max_head; /* largest head_size accepted or sent */
    uint32_t max_args; /* largest args_size accepted or sent */
};

/* Sizes of a frame about to be packed (see rpc_frame_plan). */
struct rpc_frame_plan
{
    size_t head_size; /* packed RpcHeader */
    size_t args_size; /* packed args */
    size_t total;     /* RPC_PREFIX_SIZE + head_size + args_size */
};

/**
 * Measure a frame and check it against the caps; sets hdr->args_size.
 * @param hdr the header; its args_size is overwritten
 * @param args the request or reply, or NULL for empty args
 * @param limits caps, or NULL for the defaults
 * @param plan filled with the sizes
 * @return 0, or RPC_E_TOO_BIG when the header or args exceed a cap
 */
int rpc_frame_plan(Raftkv__RpcHeader *hdr,
                   const ProtobufCMessage *args,
                   const struct rpc_limits *limits,
                   struct rpc_frame_plan *plan);

/**
 * Pack a planned frame into out, which has room for plan->total bytes.
 * @param hdr, args the same as given to rpc_frame_plan
 * @param plan the plan that rpc_frame_plan filled
 * @param out destination of plan->total bytes
 */
void rpc_frame_pack(const Raftkv__RpcHeader *hdr,
                    const ProtobufCMessage *args,
                    const struct rpc_frame_plan *plan,
                    uint8_t *out);

/* A decoded frame. Borrowed from the decoder: valid until its next feed. */
struct rpc_frame
{
    const Raftkv__RpcHeader *header; /* unpacked header */
    const uint8_t *args;             /* args_size bytes (may be NULL if 0) */
    size_t args_size;                /* equals header->args_size, except
                                        0 when oversized */
    bool oversized; /* header->args_size is over the cap and the decoder
                       skips those bytes (rpc_decoder_skip_oversized):
                       args is NULL */
};

/* Results of rpc_decoder_feed. */
enum rpc_decode_result {
    RPC_DECODE_MORE = 0,   /* all input used; the frame is not complete */
    RPC_DECODE_FRAME = 1,  /* a frame is complete (input may remain) */
    RPC_DECODE_ERROR = -1, /* the stream is broken: see errmsg; sticky */
};

struct rpc_decoder;

/**
 * Make an incremental frame decoder. It is a pure function of the bytes fed
 * to it, in pieces of any size.
 * @param limits caps, copied; NULL for the defaults
 * @return the decoder, or NULL when out of memory
 */
struct rpc_decoder *rpc_decoder_new(const struct rpc_limits *limits);

/**
 * Free a decoder and the frame it last returned.
 * @param d the decoder, or NULL
 */
void rpc_decoder_free(struct rpc_decoder *d);

/**
 * Feed bytes. Consumes input up to the end of the next complete frame.
 * When a frame is complete its args point into data when they lay there
 * whole, otherwise into the decoder's own buffer; either way the frame is
 * valid until the next call, and data must stay unchanged until then.
 * @param d the decoder
 * @param data, len the next bytes of the stream (borrowed)
 * @param used set to the number of bytes consumed
 * @param frame filled when the result is RPC_DECODE_FRAME
 * @return an enum rpc_decode_result
 */
int rpc_decoder_feed(struct rpc_decoder *d,
                     const uint8_t *data,
                     size_t len,
                     size_t *used,
                     struct rpc_frame *frame);

/**
 * Why the decoder failed: "head_size 70000 over the cap of 65536".
 * @return a string owned by the decoder; "" before any failure
 */
const char *rpc_decoder_errmsg(const struct rpc_decoder *d);

/**
 * Choose what a frame whose header is whole and valid but whose args_size
 * is over the cap does. Off (the default): the stream is broken
 * (RPC_DECODE_ERROR). On: the frame is returned at once, with oversized
 * set and no args, and the decoder then skips its args_size bytes as they
 * come, without storing them, so that a server can answer that call with
 * an error and go on with the next frame. A head_size over its cap or a
 * header that does not unpack stays an error either way.
 * @param d the decoder
 * @param on skip oversized args instead of failing
 */
void rpc_decoder_skip_oversized(struct rpc_decoder *d, bool on);

/**
 * Is the decoder inside a frame: has it taken some of a frame's bytes but
 * not yet returned the frame, or is it still skipping an oversized
 * frame's args? (A server uses it to time out connections that start a
 * frame and never finish it.)
 * @param d the decoder
 * @return true inside a frame; false between frames or after an error
 */
bool rpc_decoder_mid_frame(const struct rpc_decoder *d);

/* ------------------------------------------------------------- peer auth */

/* Peers of a cluster prove to each other that they hold the cluster's
 * secret before any frame passes between them: a server given a
 * peer_auth reads nothing from a connection but the handshake until the
 * other end has proven it (HMAC-SHA-256 over fresh nonces from both ends;
 * docs/protocol.md), and a channel given one proves itself and checks the
 * server's proof before it sends a call. A failed handshake closes the
 * connection, with a log line on both ends that says why. It
 * authenticates the connection's start; on a network where someone can
 * change bytes in flight, use TLS as well. */
#define RPC_PEER_KEY_SIZE   32 /* bytes of a peer key */
#define RPC_PEER_SECRET_MIN 16 /* shortest secret accepted */

/* May a node of this id connect? */
typedef bool (*rpc_peer_allow_cb)(uint64_t peer_id, void *arg);

/* A server that proved it holds the key refused this node's id (its allow
 * said no: for kvserver, this node was removed from the cluster for
 * good). Runs from the channel's event loop; it must not free the
 * channel. */
typedef void (*rpc_peer_refused_cb)(uint64_t server_id, void *arg);

/* One node's side of the handshake. Borrowed by servers and channels
 * (it must outlive them); the owner may change cluster_id at any time,
 * and each handshake reads it then. */
struct rpc_peer_auth
{
    uint8_t key[RPC_PEER_KEY_SIZE]; /* from rpc_peer_key_from_file */
    uint64_t self_id;               /* this node's id (not 0) */
    uint64_t cluster_id;            /* this node's cluster (0: not known
                                       yet; then any cluster is accepted) */
    rpc_peer_allow_cb allow;        /* server side: admit this id? NULL:
                                       any id but self_id and 0. An id it
                                       refuses learns so only once both
                                       ends proved the key */
    void *allow_arg;                /* passed to allow */
    rpc_peer_refused_cb refused;    /* channel side: a server that proved
                                       the key refused us (NULL: none) */
    void *refused_arg;              /* passed to refused */
};

/**
 * Derive a peer key from a secret file: the SHA-256 of its bytes (a final
 * newline dropped). Logs a warning when others may read the file.
 * @param path the file (at least RPC_PEER_SECRET_MIN bytes, at most 4 KiB)
 * @param key filled with the key
 * @param err, err_len filled with the reason on failure
 * @return 0, RPC_E_IO (cannot open), RPC_E_INVALID (too short or too
 *   long) or RPC_E_INTERNAL
 */
int rpc_peer_key_from_file(const char *path,
                           uint8_t key[RPC_PEER_KEY_SIZE],
                           char *err,
                           size_t err_len);

/* ------------------------------------------------------------------- TLS */

/* TLS for servers and channels: OpenSSL through libevent's
 * bufferevent_openssl. One rpc_tls is one set of PEM files; servers and
 * channels borrow it. TLS 1.2 at least. */
struct rpc_tls_options
{
    bool server;               /* for accepting (else for connecting) */
    const char *cert_file;     /* PEM certificate chain: a server's own
                                  (required), or a client's certificate for
                                  client-certificate auth (optional) */
    const char *key_file;      /* its PEM private key */
    const char *ca_file;       /* PEM CA certificates that the other end's
                                  certificate must chain to */
    bool verify_peer;          /* check the other end: a server requires
                                  a client certificate; a client checks the
                                  server's chain and that it names the
                                  address dialled. Needs ca_file */
    const char *allowed_names; /* comma-separated names (DNS SAN or CN)
                                  one of which the other end's certificate
                                  must carry; NULL: any the CA signed */
};

struct rpc_tls;

/**
 * Load a TLS context from PEM files.
 * @param o the options (copied)
 * @param out set to the context
 * @param err, err_len filled with the reason on failure ("load private
 *   key /etc/raftkv/node.key: ... no such file")
 * @return 0, RPC_E_INVALID (bad options or files) or RPC_E_NOMEM
 */
int rpc_tls_new(const struct rpc_tls_options *o,
                struct rpc_tls **out,
                char *err,
                size_t err_len);

/**
 * Read the same files again (new certificates after a renewal): new
 * connections use them, open ones keep theirs. On failure the context in
 * use stays.
 * @return 0, or RPC_E_INVALID with err saying why
 */
int rpc_tls_reload(struct rpc_tls *t, char *err, size_t err_len);

/**
 * Free a context (after the servers and channels that borrow it).
 * @param t the context, or NULL
 */
void rpc_tls_free(struct rpc_tls *t);

/* ---------------------------------------------------------------- server */

/* A look at a request's packed args before they are unpacked: return
 * false (with why filled) to answer RPC_E_BAD_REQUEST without unpacking
 * them, e.g. when they hold more repeated items than the caller ever
 * sends (unpacking millions of empty items costs far more memory than the
 * bytes). */
typedef bool (*rpc_precheck_cb)(const ProtobufCServiceDescriptor *service,
                                const ProtobufCMethodDescriptor *method,
                                const uint8_t *args,
                                size_t len,
                                char *why,
                                size_t why_len,
                                void *arg);

/* Server settings. Zero fields mean the defaults. */
struct rpc_server_options
{
    struct rpc_limits limits;  /* frame caps for requests and replies */
    size_t max_output;         /* per-connection output buffer: reading
                                  pauses above it and resumes below half;
                                  a connection whose output passes 4x it is
                                  closed. Default 8 MiB. */
    uint32_t max_connections;  /* client connections (all but peers) open
                                  at once; one over it is accepted, logged
                                  (at most once a second) and closed at
                                  once. Only listeners count; an adopted
                                  socket is always taken. 0: no limit */
    const char *peer_service;  /* full name of the service the other nodes
                                  of a cluster call (raftkv.RaftService):
                                  a connection that calls it is a peer,
                                  counted apart from clients and never
                                  closed for idleness (copied); NULL: none */
    uint32_t peer_reserve;     /* connections admitted over max_connections
                                  on probation, so that a peer can connect
                                  while clients hold every slot: one whose
                                  first frame is not a peer_service call,
                                  or that sends none within
                                  RPC_PROBATION_MS, is closed as refused.
                                  Needs peer_service; 0: none */
    uint32_t frame_timeout_ms; /* a connection that holds part of a
                                  request frame, or whose replies stay
                                  over max_output unread (reading paused),
                                  this long is closed: a slow-loris client
                                  or one that never reads. 0: never */
    uint32_t idle_timeout_ms;  /* a client connection with no call pending
                                  and nothing read or answered this long
                                  is closed. 0: never */
    uint32_t max_per_source;   /* connections open at once from one
                                  source address; more are closed at once
                                  (logged at most once a second). With
                                  peer_auth only connections still in the
                                  handshake count. 0: no limit */
    const struct rpc_peer_auth *peer_auth; /* every connection must pass
                                  the peer handshake first (borrowed; see
                                  "peer auth"); NULL: none */
    struct rpc_tls *tls;                   /* serve TLS with this server context
                                              (borrowed); NULL: plain TCP */
    size_t max_buffered;         /* one budget for the bytes buffered by all
                                    connections (input, output, replies
                                    waiting): above it a connection that
                                    reads stops reading until the total
                                    drains to half. 0: no budget */
    rpc_precheck_cb precheck;    /* called before every unpack; NULL: none */
    void *precheck_arg;          /* passed to precheck */
    uint32_t max_per_peer;       /* with peer_auth: connections one peer id
                                    may hold; a newer one closes its oldest.
                                    Default 4 */
    uint32_t handshake_ms;       /* with peer_auth: a connection that has not
                                finished the handshake this long after
                                it was accepted is closed. Default 2000 */
    uint32_t max_streams;        /* streams open at once on one connection
                                    (rpc_stream_open refuses more with
                                    RPC_E_OVERLOADED). Default 4096 */
    uint32_t max_inflight;       /* calls started on one connection and not
                                    yet answered (open streams not counted):
                                    a call past it is answered
                                    RPC_E_OVERLOADED at once and never
                                    started (shed). Peers (peer_service) are
                                    never shed. Default 10000; UINT32_MAX:
                                    no limit */
    uint32_t max_inflight_total; /* the same for all client connections
                                    together. Default 100000; UINT32_MAX:
                                    no limit */
    uint32_t frames_per_turn;    /* requests one connection's read hands to
                                    handlers before the loop turns to the
                                    others; the rest wait in its input (at
                                    backlog_priority). Default 64 */
    int io_priority;             /* libevent priority of the connections'
                                    reads and writes, plus one (0: the base's
                                    default). The base must have priorities
                                    (event_base_priority_init) */
    int backlog_priority;        /* priority, plus one, at which requests that
                                    frames_per_turn left are handled (0: as
                                    io_priority) */
    uint32_t slow_ms;            /* a call answered this long or more after
                                    its request was read is logged, with its
                                    trace id and where the time went (queue,
                                    handler and rpc_call_note's detail,
                                    reply). 0: never */
};

/* How long a connection admitted into peer_reserve has to show itself a
 * peer. */
#define RPC_PROBATION_MS 1000u

/* Counters of a server, for logs and metrics. */
struct rpc_server_stats
{
    uint64_t accepted;            /* connections accepted or adopted */
    uint64_t open;                /* connections open now */
    uint64_t calls;               /* requests dispatched to a handler */
    uint64_t error_replies;       /* requests answered with a non-OK status */
    uint64_t bad_frames;          /* connections closed for a broken stream */
    uint64_t dropped_replies;     /* replies whose connection was gone */
    uint64_t overflow_closes;     /* connections closed for output overflow
                                     (4x max_output, or over it unread for
                                     frame_timeout_ms) */
    uint64_t peers;               /* of open: peer connections */
    uint64_t refused_connections; /* closed at once: over max_connections
                                     (or failed the peer probation) */
    uint64_t oversized_requests;  /* requests answered "too big" whose args
                                     were skipped; the connection stays */
    uint64_t frame_timeouts;      /* connections closed for a frame not
                                     finished within frame_timeout_ms */
    uint64_t idle_closes;         /* connections closed after
                                     idle_timeout_ms */
    uint64_t handshakes_failed;   /* peer handshakes refused or timed out */
    uint64_t tls_failures;        /* connections closed for a failed TLS
                                     handshake or a refused certificate */
    uint64_t budget_pauses;       /* connections paused for max_buffered */
    uint64_t buffered;            /* bytes in all connections' buffers now
                                     (counted with max_buffered only) */
    uint64_t stream_messages;     /* client messages handed to open streams */
    uint64_t dropped_messages;    /* client messages for a stream that was
                                     not open (ended, cancelled, unknown) */
    uint64_t shared_frames;       /* stream frames sent once for several
                                     streams (rpc_stream_send_shared) */
    uint64_t shed;                /* calls answered RPC_E_OVERLOADED, never
                                     started: over max_inflight (of their
                                     connection) or max_inflight_total */
    uint64_t inflight;            /* calls started, not yet answered, now */
    uint64_t backlogged;          /* times a connection's read stopped at
                                     frames_per_turn with requests left */
    uint64_t expired;             /* calls answered RPC_E_DEADLINE_EXCEEDED:
                                     their timeout_ms had passed before they
                                     were started */
    uint64_t slow;                /* calls logged as slow (slow_ms) */
    uint64_t wrong_cluster;       /* calls refused RPC_E_WRONG_CLUSTER */
};

/* Calls of one method of a served service, by how they were answered. */
#define RPC_STATUS_SLOTS 10
struct rpc_method_stats
{
    uint64_t answered[RPC_STATUS_SLOTS]; /* by status: RPC_OK (0) to
                                            RPC_E_OVERLOADED (6); 7: other */
};

/**
 * CRC-32C (Castagnoli) of @len bytes, continuing from @crc (0 to start).
 * Used for the log, snapshot streams and snapshot files.
 */
uint32_t rpc_crc32c(uint32_t crc, const void *data, size_t len);

struct rpc_server;

/**
 * Make a server on an event base. It serves nothing until a service is
 * added and it listens (or adopts a connected socket).
 * With max_connections set, it raises the process's soft open-file limit
 * to what max_connections + peer_reserve (+ 64 spare) need when the hard
 * limit allows, and otherwise lowers max_connections to fit, with a
 * warning: past the open-file limit accept fails for peers and clients
 * alike.
 * @param base the caller's event base (borrowed; must outlive the server)
 * @param opts settings, copied; NULL for the defaults
 * @return the server, or NULL when out of memory
 */
struct rpc_server *rpc_server_new(struct event_base *base,
                                  const struct rpc_server_options *opts);

/**
 * Stop listening, close every connection and free the server. Replies that
 * handlers send later are dropped safely.
 * @param s the server, or NULL
 */
void rpc_server_free(struct rpc_server *s);

/**
 * The cluster this server belongs to: its replies carry it, and a request
 * that names another (RpcHeader.cluster_id) is refused RPC_E_WRONG_CLUSTER
 * before it starts. 0 (the default): unknown; a request that names any
 * cluster is then refused too (the server cannot tell it is of that
 * cluster), and one that names none is served.
 */
void rpc_server_set_cluster_id(struct rpc_server *s, uint64_t id);

/**
 * Serve a service. Requests name it by its descriptor's full name
 * ("raftkv.KvService"). A generated service whose handler slot for a method
 * is NULL answers that method with RPC_E_UNKNOWN_METHOD.
 * Handlers get the unpacked input (valid until the handler returns) and a
 * closure that must be called exactly once, at once or later from the same
 * event loop: with the reply (borrowed during the call; the caller frees
 * it), or with NULL, which answers RPC_E_INTERNAL.
 * @param s the server
 * @param service the implementation (borrowed; must outlive the server)
 * @return 0, RPC_E_INVALID when a service of that name is already served,
 *   or RPC_E_NOMEM
 */
int rpc_server_add_service(struct rpc_server *s, ProtobufCService *service);

/**
 * Listen on host:port (port 0 picks a free port).
 * @param s the server
 * @param host a numeric address or a name ("127.0.0.1", "localhost")
 * @param port the port, or 0
 * @param bound_port set to the port listened on (may be NULL)
 * @return 0, or RPC_E_IO with rpc_server_errmsg() saying why
 */
int rpc_server_listen(struct rpc_server *s,
                      const char *host,
                      uint16_t port,
                      uint16_t *bound_port);

/**
 * Serve an already connected socket (a socketpair end in tests and fuzzing).
 * The server owns fd from now on, also on failure.
 * @param s the server
 * @param fd a connected stream socket
 * @param peer a name for logs (copied), or NULL
 * @return 0, or RPC_E_NOMEM
 */
int rpc_server_adopt(struct rpc_server *s, int fd, const char *peer);

/**
 * Context of the last failure of a server call: "listen on 127.0.0.1:7001:
 * Address already in use".
 * @return a string owned by the server
 */
const char *rpc_server_errmsg(const struct rpc_server *s);

/**
 * Write the replies queued since the last call to their sockets now, as far
 * as each socket takes them without blocking; the rest leaves when the loop
 * runs. A caller about to block (on an fsync) uses this so that replies it
 * has already decided do not wait for it.
 * @param s the server
 */
void rpc_server_flush(struct rpc_server *s);

/**
 * Read the server's counters.
 * @param s the server
 * @param out filled with a copy
 */
void rpc_server_get_stats(const struct rpc_server *s,
                          struct rpc_server_stats *out);

/**
 * Per-method counts of a served service.
 * @param service_name full protobuf name, e.g. "raftkv.KvService"
 * @param n_methods out: entries in the result (the service's methods, in
 * descriptor order)
 * @return the counts, valid while the server lives; NULL if no such service
 */
const struct rpc_method_stats *rpc_server_method_stats(
    const struct rpc_server *s,
    const char *service_name,
    size_t *n_methods);

/**
 * Answer a call with an error status instead of a reply; this counts as
 * the call's one closure.
 * @param closure_data the closure_data the handler was given
 * @param status an RPC_E_ code from 1 to 99
 * @param msg text for the caller (copied), or NULL
 */
void rpc_call_fail(void *closure_data, int status, const char *msg);

/**
 * Close every connection that proved node id @peer_id in the peer
 * handshake (a node refused from now on: it must handshake again, and the
 * server's allow callback decides). Calls in progress on them end as on a
 * lost connection. Not from a handler of a call on such a connection.
 * @return how many were closed
 */
size_t rpc_server_drop_peer(struct rpc_server *s, uint64_t peer_id);

/**
 * The address of the peer that made a call: "127.0.0.1:50432".
 * @param closure_data the closure_data the handler was given
 * @return a string valid until the call's closure runs
 */
const char *rpc_call_peer(void *closure_data);

/**
 * The auth token the request of a call carried in its header (RpcHeader
 * auth_token), for a service that checks who is calling.
 * @param closure_data the closure_data the handler was given
 * @return the token, valid until the call's closure runs; "" when the
 *   request carried none
 */
const char *rpc_call_auth_token(void *closure_data);

/**
 * The common name of the verified certificate that the connection of a
 * call showed (a TLS server that verifies clients).
 * @param closure_data the closure_data the handler was given
 * @return the name, valid until the call's closure runs; "" without one
 */
const char *rpc_call_tls_name(void *closure_data);

/**
 * The node id that the connection of a call proved in the peer handshake.
 * @param closure_data the closure_data the handler was given
 * @return the id, or 0 on a server without peer_auth
 */
uint64_t rpc_call_peer_id(void *closure_data);

/**
 * Milliseconds of CLOCK_MONOTONIC: the clock of rpc_call_deadline.
 */
uint64_t rpc_now_ms(void);

/**
 * The next trace id of a generator: splitmix64 of a counter (@state, which
 * the caller seeds with random bytes), never 0.
 */
uint64_t rpc_trace_id_next(uint64_t *state);

/**
 * The trace id of a call: the caller's (RpcHeader.trace_id), or one the
 * server made. Log lines about the call carry it (as 16 hex digits), and
 * its reply echoes it.
 * @param closure_data the closure_data the handler was given
 */
uint64_t rpc_call_trace_id(void *closure_data);

/**
 * Has the call taken the server's slow_ms already? A handler asks before
 * it spends time on rpc_call_note.
 */
bool rpc_call_slow(void *closure_data);

/**
 * Say where a call's time went inside its handler ("raft commit 12 ms,
 * apply 1 ms"), for the slow-call line; the last note stands (at most
 * 159 bytes kept).
 */
void rpc_call_note(void *closure_data, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/**
 * When the caller stops waiting for a call's answer (RpcHeader.timeout_ms,
 * counted from when the server read the request), in rpc_now_ms() time.
 * A handler that waits (a read for its ReadIndex round, a write for its
 * commit) gives up by then: nobody would read a later answer.
 * @param closure_data the closure_data the handler was given
 * @return the deadline, or 0 when the caller gave none
 */
uint64_t rpc_call_deadline(void *closure_data);

/* ---------------------------------------------------------------- streams */

/* A server stream answers one call with many frames (proto/rpc.proto):
 * the handler makes its call a stream with rpc_stream_open, sends any
 * number of messages with rpc_stream_send, and ends it, as any call, by
 * calling its closure once (the last frame, with the final reply or an
 * error status). The caller may cancel the stream; a stream also ends
 * when its connection closes. A handler that also takes the caller's
 * messages while the stream is open (rpc_stream_send_msg on the channel)
 * says so with rpc_stream_on_message.
 *
 * Flow control: a stream sends only while its connection's unsent output
 * is under max_output / RPC_STREAM_SHARE, so that single replies keep room
 * and one slow reader costs the server at most that much per connection;
 * past it rpc_stream_send refuses (RPC_E_OVERLOADED) and the handler keeps
 * its place until RPC_STREAM_WRITABLE says the output has drained. A
 * connection whose reader does not read at all is closed by the server's
 * usual rules (frame_timeout_ms, 4x max_output). */
#define RPC_STREAM_SHARE 2u

/* Events of an open stream, for its handler. */
enum rpc_stream_event {
    RPC_STREAM_WRITABLE = 1,  /* room again after a refused send */
    RPC_STREAM_CANCELLED = 2, /* the caller cancelled it, its connection
                                 closed, or the server refused one of its
                                 messages (rpc_stream_on_message): call the
                                 closure and send nothing more (the last
                                 frame goes nowhere, or carries the
                                 refusal instead of the closure's reply);
                                 the last event the stream gets */
};

/* A stream's event callback; runs from the event loop. */
typedef void (*rpc_stream_cb)(void *closure_data, int event, void *arg);

/**
 * Make a call a stream (from its handler, before its closure runs).
 * @param closure_data the closure_data the handler was given
 * @param cb told of the stream's events (see enum rpc_stream_event)
 * @param arg passed to cb
 * @return 0; RPC_E_CONNECTION_LOST when the connection is gone already
 *   (call the closure); RPC_E_INVALID (opened twice, cb NULL);
 *   RPC_E_NOMEM
 */
int rpc_stream_open(void *closure_data, rpc_stream_cb cb, void *arg);

/* A message the caller sent on an open stream (RpcHeader stream_msg),
 * unpacked as the method's input type; borrowed for the call. Runs from
 * the event loop, in the order the messages came. The handler may send
 * (rpc_stream_send) and may end the stream (its closure) from here. */
typedef void (*rpc_stream_message_cb)(void *closure_data,
                                      const ProtobufCMessage *msg,
                                      void *arg);

/**
 * Take the caller's messages on an open stream (a bidirectional stream:
 * proto "rpc M(stream In) returns (stream Out)"). Each message is bounded
 * by the server's frame caps and its precheck as a request is. Without
 * this, a message ends the stream with RPC_E_BAD_REQUEST; so does a
 * message over the args cap (its bytes are skipped and the connection
 * stays). A message whose args do not unpack breaks the connection, as a
 * request's would; one for a stream that is not open is dropped
 * (rpc_server_stats dropped_messages). Nothing is queued: each message is
 * handed over as it is read, so a handler that keeps state per message
 * bounds it itself.
 * @param closure_data the stream's call (after rpc_stream_open)
 * @param cb called for each message, with the arg given to rpc_stream_open
 * @return 0; RPC_E_INVALID (not an open stream, or cb NULL)
 */
int rpc_stream_on_message(void *closure_data, rpc_stream_message_cb cb);

/**
 * Send one message of an open stream (a frame with more set).
 * @param closure_data the stream's call
 * @param msg the message, of the method's output type (borrowed)
 * @return 0 sent; RPC_E_OVERLOADED not sent for lack of room: wait for
 *   RPC_STREAM_WRITABLE; RPC_E_TOO_BIG not sent, the message is over the
 *   frame cap (the stream goes on); RPC_E_CONNECTION_LOST not sent, the
 *   stream is ending (RPC_STREAM_CANCELLED comes); RPC_E_INVALID (not a
 *   stream)
 */
int rpc_stream_send(void *closure_data, const ProtobufCMessage *msg);

/**
 * rpc_stream_send with the message packed already (the method's output
 * type, packed once for many streams that send the same).
 * @param args, len the packed message (borrowed)
 * @return as rpc_stream_send; RPC_E_TOO_BIG over the frame cap
 */
int rpc_stream_send_packed(void *closure_data, const void *args, size_t len);

/**
 * rpc_stream_send_packed of the same message to many streams: the streams
 * of one connection whose caller allows it (RpcHeader.shared_ok) get one
 * frame that names them all (also_call_ids), the others a frame each.
 * Flow control is each stream's, as rpc_stream_send_packed's.
 * @param calls the streams' closure_data
 * @param n their number
 * @param args, len the packed message (borrowed)
 * @param results out: for each stream, what rpc_stream_send_packed would
 *   have returned (0: sent)
 */
void rpc_stream_send_shared(void *const *calls,
                            size_t n,
                            const void *args,
                            size_t len,
                            int *results);

/**
 * Has the stream been cancelled, or its connection closed?
 * @param closure_data the stream's call
 */
bool rpc_stream_cancelled(void *closure_data);

/* --------------------------------------------------------------- channel */

/* Channel settings. Zero fields mean the defaults. */
struct rpc_channel_options
{
    uint32_t deadline_ms;        /* per call; default 5000 */
    uint32_t connect_timeout_ms; /* default 1000 */
    uint32_t backoff_min_ms;     /* first wait after a failed connect; 20 */
    uint32_t backoff_max_ms;     /* longest wait between connects; 1000 */
    const char *bind_host;       /* local source address (copied); NULL: any */
    struct rpc_limits limits;    /* frame caps */
    size_t max_output;           /* unsent bytes above which calls fail
                                    with RPC_E_OVERLOADED; default 64 MiB */
    const struct rpc_peer_auth *peer_auth; /* pass the peer handshake on
                                    every connection before any call
                                    (borrowed); NULL: none */
    uint64_t peer_id;    /* with peer_auth: the node id the server
                            must prove it is */
    struct rpc_tls *tls; /* speak TLS with this client context
                            (borrowed); NULL: plain TCP */
    int priority;        /* libevent priority of the connection's reads
                            and writes, plus one (0: the base's default;
                            the base must have priorities) */
};

/* Counters of a channel. */
struct rpc_channel_stats
{
    uint64_t calls;        /* calls started */
    uint64_t failed;       /* calls whose closure ran with NULL */
    uint64_t late_replies; /* replies that came after their call ended */
    uint64_t connects;     /* connections established */
};

struct rpc_channel;

/**
 * Make an asynchronous channel to host:port on the caller's event base.
 * It connects on the first call and again after a failure (with backoff);
 * calls made meanwhile wait in its buffer. Closures run from the event loop,
 * never from inside the stub call itself.
 * @param base the caller's event base (borrowed; must outlive the channel)
 * @param host the server's address or name (copied)
 * @param port the server's port
 * @param opts settings, copied; NULL for the defaults
 * @return the channel, or NULL when out of memory or host is NULL
 */
struct rpc_channel *rpc_channel_new(struct event_base *base,
                                    const char *host,
                                    uint16_t port,
                                    const struct rpc_channel_options *opts);

/**
 * Make a blocking channel: it runs an event base of its own, and each stub
 * call returns only after its closure has run. One thread at a time.
 * @return the channel, or NULL when out of memory or host is NULL
 */
struct rpc_channel *rpc_channel_new_blocking(
    const char *host,
    uint16_t port,
    const struct rpc_channel_options *opts);

/**
 * Fail every pending call (closure with NULL, RPC_E_CANCELLED; the closures
 * run inside this call), close the connection and free the channel.
 * @param ch the channel, or NULL
 */
void rpc_channel_free(struct rpc_channel *ch);

/**
 * The client side of a service on this channel, for the generated stubs.
 * Asking twice for one descriptor returns the same service.
 * @param ch the channel
 * @param desc the generated descriptor (static)
 * @return the service (owned by the channel), or NULL when out of memory
 */
ProtobufCService *rpc_channel_service(struct rpc_channel *ch,
                                      const ProtobufCServiceDescriptor *desc);

/**
 * Set the deadline of the calls made from now on.
 * @param ch the channel
 * @param ms milliseconds from the call's start; 0 restores the default
 */
void rpc_channel_set_deadline(struct rpc_channel *ch, uint32_t ms);

/**
 * Send this trace id (RpcHeader.trace_id) with the calls made from now on:
 * the servers log those calls under it. libclerk gives an operation one id
 * for all its tries.
 * @param id the id; 0 gives each call an id of the channel's own
 */
void rpc_channel_set_trace_id(struct rpc_channel *ch, uint64_t id);

/**
 * Send this cluster id (RpcHeader.cluster_id) with the calls made from now
 * on: a server of another cluster refuses them (RPC_E_WRONG_CLUSTER)
 * without starting them.
 * @param id the cluster id; 0: any
 */
void rpc_channel_set_cluster_id(struct rpc_channel *ch, uint64_t id);

/**
 * The cluster id the channel's last answer carried (0: none seen yet).
 */
uint64_t rpc_channel_cluster_id(const struct rpc_channel *ch);

/**
 * Send an auth token in the header of every call made from now on.
 * @param ch the channel
 * @param token the token (copied), or NULL or "" for none
 * @return 0, or RPC_E_NOMEM
 */
int rpc_channel_set_auth_token(struct rpc_channel *ch, const char *token);

/**
 * Write what the channel has queued to its socket now, as far as the socket
 * takes it without blocking. libevent otherwise writes only when the loop
 * runs again; a caller about to block (on an fsync) uses this to let its
 * requests leave first.
 * @param ch the channel
 */
void rpc_channel_flush(struct rpc_channel *ch);

/**
 * Calls started and not yet completed.
 */
size_t rpc_channel_pending(const struct rpc_channel *ch);

/**
 * Is the channel's connection established right now?
 */
bool rpc_channel_connected(const struct rpc_channel *ch);

/**
 * Read the channel's counters.
 */
void rpc_channel_get_stats(const struct rpc_channel *ch,
                           struct rpc_channel_stats *out);

/**
 * "host:port" of the channel's server.
 */
const char *rpc_channel_target(const struct rpc_channel *ch);

/* A stream started on a channel (rpc_channel_stream). */
struct rpc_stream;

/* A stream's callback, from the event loop: with end false, msg is one
 * message (borrowed for the call); with end true, the stream is over: msg
 * is its last message, or NULL when it failed (rpc_last_status() and
 * rpc_last_error() say why: the server's status, RPC_E_CONNECTION_LOST,
 * RPC_E_UNAVAILABLE, RPC_E_CANCELLED when the channel was freed), and the
 * stream handle is freed when the callback returns. */
typedef void (*rpc_stream_msg_cb)(struct rpc_stream *st,
                                  const ProtobufCMessage *msg,
                                  bool end,
                                  void *arg);

/**
 * Start a server stream: call a method whose server answers with many
 * frames (proto "returns (stream ...)"). A stream has no deadline; it
 * lasts until the server ends it, the caller cancels it, or the connection
 * is lost. Other calls and streams share the connection meanwhile.
 * @param ch the channel
 * @param desc the service's generated descriptor
 * @param method the method's name ("Watch")
 * @param input the request, of the method's input type (borrowed)
 * @param cb told of each message and of the end (exactly one end call,
 *   unless the stream is cancelled first)
 * @param arg passed to cb
 * @return the stream, or NULL (bad arguments, out of memory; see
 *   rpc_last_error()) and then cb is never called
 */
struct rpc_stream *rpc_channel_stream(struct rpc_channel *ch,
                                      const ProtobufCServiceDescriptor *desc,
                                      const char *method,
                                      const ProtobufCMessage *input,
                                      rpc_stream_msg_cb cb,
                                      void *arg);

/**
 * Cancel a stream that has not ended: the server is told to stop, frames
 * still on their way are dropped, the callback is not called again (not
 * even for the end) and the handle is freed. May be called from the
 * stream's own callback for a message (end false), not after its end.
 * @param st the stream
 */
void rpc_stream_cancel(struct rpc_stream *st);

/**
 * Send a further message on a stream whose method takes them (a frame
 * with stream_msg set; rpc_stream_on_message on the server). Messages
 * leave in the order they are sent, after the request that started the
 * stream; on a blocking channel they leave when its loop next runs
 * (rpc_channel_wait, a call, rpc_channel_flush). Injected faults do not
 * touch them. The server's answers come to the stream's callback. A
 * server that does not take messages on the stream ends it with
 * RPC_E_BAD_REQUEST (an older server: with RPC_E_UNKNOWN_SERVICE).
 * May be called from the stream's own callback for a message (end false),
 * not after its end.
 * @param st the stream
 * @param msg the message, of the method's input type (borrowed)
 * @return 0 queued to be sent; RPC_E_INVALID (a NULL or wrong-type
 *   message); RPC_E_TOO_BIG over the frame cap (not sent, the stream goes
 *   on); RPC_E_OVERLOADED (the connection's unsent output is over the
 *   channel's max_output: not sent); the stream's start failed
 *   (RPC_E_UNAVAILABLE, ...: its end comes from the loop); RPC_E_NOMEM.
 *   rpc_last_error() says why
 */
int rpc_stream_send_msg(struct rpc_stream *st, const ProtobufCMessage *msg);

/**
 * The call id of a stream (in the server's logs).
 */
uint64_t rpc_stream_id(const struct rpc_stream *st);

/**
 * Run a blocking channel's own event loop until at least one closure or
 * stream callback has run, or timeout_ms passes (streams on a blocking
 * channel make progress only while this, or a call on the channel, runs).
 * @param ch a channel made by rpc_channel_new_blocking
 * @param timeout_ms the longest wait
 * @return 0 when a callback ran, RPC_E_TIMEOUT, RPC_E_INVALID (not a
 *   blocking channel) or RPC_E_NOMEM
 */
int rpc_channel_wait(struct rpc_channel *ch, uint32_t timeout_ms);

/* ---------------------------------------------------------------- faults */

/* Faults to inject into calls, for fault-injection tests (kvserver
 * --enable-fault-injection, `kvctl fault`). They model a bad network the
 * way the well-known Raft lab suites do. Probabilities are in [0, 1]; an
 * all-zero struct injects nothing. */
struct rpc_faults
{
    bool cut;                /* nothing passes: a call fails after 0-100 ms
                                without reaching the server */
    double drop_request;     /* share of requests lost: the handler never
                                runs */
    double drop_reply;       /* share of replies lost after the handler ran */
    uint32_t delay_min_ms;   /* every request is delayed by a uniform */
    uint32_t delay_max_ms;   /* time in [delay_min_ms, delay_max_ms] */
    double duplicate;        /* share of requests delivered twice (the
                                second reply is discarded) */
    double reorder;          /* share of replies held back by a uniform */
    uint32_t reorder_min_ms; /* time in [reorder_min_ms, reorder_max_ms] */
    uint32_t reorder_max_ms; /* (0, 0 means 200-2200 ms, the lab's) */
};

#define RPC_FAULT_MAX_MS 60000u /* longest delay or hold accepted */

/* Counters of what injected faults did since they were last set. */
struct rpc_fault_stats
{
    uint64_t cut;              /* calls refused for a cut link */
    uint64_t dropped_requests; /* requests lost */
    uint64_t dropped_replies;  /* replies lost */
    uint64_t delayed;          /* requests delayed */
    uint64_t duplicated;       /* requests sent twice */
    uint64_t reordered;        /* replies held back */
};

/**
 * Check a fault description.
 * @param f the faults
 * @param why filled with the reason when invalid (may be NULL)
 * @return true when every probability is in [0, 1] and every range is
 *   ordered and at most RPC_FAULT_MAX_MS
 */
bool rpc_faults_valid(const struct rpc_faults *f, char *why, size_t why_len);

/**
 * Is anything injected?
 */
bool rpc_faults_active(const struct rpc_faults *f);

/**
 * Inject faults into the calls this channel makes from now on (calls in
 * flight are left alone). Every call's closure still runs exactly once:
 * lost requests and replies fail the call (RPC_E_UNAVAILABLE for a cut
 * link, RPC_E_CONNECTION_LOST for a loss) after a short delay.
 * @param ch the channel
 * @param f the faults (copied), or NULL to stop injecting
 * @param seed seeds the channel's choices
 * @return 0, or RPC_E_INVALID when f is not valid
 */
int rpc_channel_set_faults(struct rpc_channel *ch,
                           const struct rpc_faults *f,
                           uint64_t seed);

/**
 * Inject faults into the requests a server receives for one service (a
 * lost request gets no reply at all, as on a real network).
 * @param s the server
 * @param service the service's full name ("raftkv.KvService")
 * @param f the faults (copied), or NULL to stop injecting
 * @param seed seeds the choices
 * @return 0, RPC_E_INVALID (unknown service or invalid faults) or
 *   RPC_E_NOMEM
 */
int rpc_server_set_faults(struct rpc_server *s,
                          const char *service,
                          const struct rpc_faults *f,
                          uint64_t seed);

/**
 * The faults a channel injects now, with defaults filled in (a reorder
 * range of 0-0 reads 200-2200 ms).
 * @return the faults (owned by the channel), or NULL when it injects none
 */
const struct rpc_faults *rpc_channel_faults(const struct rpc_channel *ch);

/**
 * The faults a server injects into one service's requests now.
 * @return the faults (owned by the server), or NULL when none or no such
 *   service
 */
const struct rpc_faults *rpc_server_faults(const struct rpc_server *s,
                                           const char *service);

/** What faults this channel injected so far. */
void rpc_channel_get_fault_stats(const struct rpc_channel *ch,
                                 struct rpc_fault_stats *out);

/** What faults this server injected so far (all services). */
void rpc_server_get_fault_stats(const struct rpc_server *s,
                                struct rpc_fault_stats *out);

/* --------------------------------------------------------------- logging */

enum rpc_log_level {
    RPC_LOG_DEBUG = 0,
    RPC_LOG_INFO = 1,
    RPC_LOG_WARN = 2,
    RPC_LOG_ERROR = 3,
};

/* Where log lines go: level and one formatted line without newline. */
typedef void (*rpc_log_cb)(int level, const char *line, void *data);

/**
 * Send log lines to a handler instead of standard error.
 * @param cb the handler, or NULL for the default (stderr, with timestamp)
 * @param data passed to cb
 */
void rpc_log_set_handler(rpc_log_cb cb, void *data);

/**
 * Drop log lines below a level (default RPC_LOG_INFO).
 */
void rpc_log_set_level(int level);

/**
 * Text put in front of every log line that does not already start with it
 * ("node 3: "), so that each line names its node.
 */
void rpc_log_set_prefix(const char *prefix);

/**
 * Log one line at a level.
 */
void rpc_logf(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif /* RPC_RPC_H */
