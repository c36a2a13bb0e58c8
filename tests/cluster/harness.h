/* harness.h: real kvserver clusters on loopback for tests, and a small
 * retrying KV client over the generated stubs. */
#ifndef TESTS_CLUSTER_HARNESS_H
#define TESTS_CLUSTER_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <proto/kv.pb-c.h>
#include <rpc/rpc.h>

/* Node slots of a cluster: its first nodes, then the ones h_node_add makes
 * (a membership test adds a slot for each new host and never reuses one,
 * as ids are never reused). At most 16: a libclerk handle holds at most
 * 16 servers, and the fault suite's admin handle lists every slot. */
#define H_MAX_NODES 16

struct h_cluster;

/* Makes (or undoes) the host of node slot i, for tests on hosts made of
 * network namespaces (test_hosts): sets nodes[i].host, the address the
 * others and the clients reach it at, and nodes[i].netns, the namespace
 * it runs in. @return 0, or -1 (message on stderr) */
typedef int (*h_host_fn)(struct h_cluster *c, size_t i);

/* On such hosts every node has the same ports: clients on this one,
 * peers on the next, metrics on the one after. */
#define H_HOST_PORT 7001

struct h_node
{
    uint64_t id;           /* node id (1-based) */
    char host[32];         /* its loopback address */
    uint16_t port;         /* its port on host */
    char dir[512];         /* its data directory */
    char log[512];         /* its log file */
    uint16_t metrics_port; /* its /metrics and /health port on host */
    uint16_t peer_port;    /* its peer (Raft) port on host */
    pid_t pid;             /* running process, or 0 */
    bool stopped;          /* SIGSTOPped */
    char rules[512];       /* its disk-fault rules (h_start.diskfault) */
    char trace[512];       /* its disk-operation trace (same) */
    bool joins;            /* added after the start (h_node_add): runs
                              with --join and only its own addresses */
    char own_extra[128];   /* more flags for this node alone */
    char netns[128];       /* the network namespace it runs in (a file
                              such as /run/netns/h1), bound to 0.0.0.0
                              there on the H_HOST_PORT ports; "": the
                              test's own, on host */
};

struct h_cluster
{
    size_t n;                         /* nodes */
    struct h_node nodes[H_MAX_NODES]; /* the nodes */
    char root[256];                   /* temp directory holding everything */
    char cluster_arg[512];            /* the --cluster list */
    char peers_arg[512];              /* the --peers list */
    char secret[512];                 /* the --peer-secret-file */
    struct rpc_peer_auth as_member[H_MAX_NODES]; /* h_peer_channel's */
    bool tls;                                    /* h_start.tls */
    char certs[300];                             /* its certificates */
    struct rpc_tls *client_tls; /* h_client's (trusts the CA) */
    struct rpc_tls *peer_tls;   /* h_peer_channel's (node1's cert) */
    char extra[512];            /* extra kvserver flags, space-separated */
    bool keep;                  /* keep root after a failure */
    bool diskfault;      /* nodes run on libdiskfault.so (tests/diskfault) */
    h_host_fn new_host;  /* h_start.new_host */
    h_host_fn drop_host; /* h_start.drop_host */
};

/* How to start a cluster, beyond its flags. */
struct h_start
{
    bool distinct_hosts; /* node i on 127.0.0.(11+i), so packet filters
                            can tell the nodes apart */
    bool tls;            /* clients and peers over TLS (certificates from
                            scripts/certs.sh in the cluster's directory;
                            h_client and h_peer_channel use them) */
    bool diskfault;      /* every node on libdiskfault.so, watching its data
                            directory: h_node_rules fails or crashes its
                            disk, h_node_power_loss drops what it did not
                            sync */
    h_host_fn new_host;  /* every node (h_node_add's too) on a host of its
                            own that this makes: a network namespace with
                            an address, where it binds 0.0.0.0 on the
                            H_HOST_PORT ports (NULL: loopback) */
    h_host_fn drop_host; /* undoes new_host when a host is lost
                            (h_node_lose_host; NULL: nothing) */
};

/**
 * GET http://host:metrics_port/path of node i.
 * @param body out: the response body, NUL-terminated (truncated to len)
 * @return the HTTP status, or -1 when the node did not answer
 */
int h_http_get(struct h_cluster *c,
               size_t i,
               const char *method,
               const char *path,
               char *body,
               size_t len);

/**
 * The value of a metric line "name value" (or "name{labels} value" with
 * the labels given in @name) in a /metrics body.
 * @return the value, or -1 when the metric is missing
 */
double h_metric(const char *body, const char *name);

/** Milliseconds of CLOCK_MONOTONIC. */
uint64_t h_now_ms(void);

/** Sleep ms milliseconds. */
void h_sleep_ms(unsigned ms);

/**
 * Start n nodes on free ports of 127.0.0.1 with data under a new temp dir,
 * each one listening when this returns (h_node_start).
 * @param extra more kvserver flags ("--snapshot-entries 100"), or NULL
 * @return 0, or -1 (message on stderr)
 */
int h_cluster_start(struct h_cluster *c, size_t n, const char *extra);

/**
 * h_cluster_start, but with distinct_hosts node i listens on (and sends
 * from) its own address 127.0.0.(11+i), so that packet filters can tell
 * the nodes apart.
 */
int h_cluster_start_hosts(struct h_cluster *c,
                          size_t n,
                          const char *extra,
                          bool distinct_hosts);

/**
 * Make room for one more node (not started): a new id (one above every
 * id so far), free ports on node 0's host, and flags that start it with
 * --join (it joins the running cluster once a leader adds it: kvctl
 * member add, with h_node_peer_addr and h_node_addr). Start it with
 * h_node_start.
 * @return its index, or -1 (H_MAX_NODES reached, no port)
 */
int h_node_add(struct h_cluster *c);

/**
 * Reserve a port of the harness's range (10000-19999) for cluster c,
 * across every process that uses the harness at once: false when this
 * process or another has it. Ports the harness picks are reserved so;
 * h_cluster_destroy releases a cluster's.
 */
bool h_port_reserve(uint16_t port, const struct h_cluster *c);

/** Release a port h_port_reserve reserved. */
void h_port_release(uint16_t port);

/**
 * Give node i new ports (a host that moved; start it with h_node_start,
 * after kvctl member update).
 * @return 0, or -1 (no free port)
 */
int h_node_move(struct h_cluster *c, size_t i);

/** "HOST:PORT" of node i's client and peer listeners. */
void h_node_addr(const struct h_cluster *c, size_t i, char *out, size_t len);
void h_node_peer_addr(const struct h_cluster *c,
                      size_t i,
                      char *out,
                      size_t len);

/** "HOST:PORT,HOST:PORT,..." of every node, for clerk_open. */
void h_endpoints(const struct h_cluster *c, char *out, size_t len);

/** The same for the nodes whose bit is set in mask (bit i: node i),
 * listed from node first on, wrapping around. */
void h_endpoints_of(const struct h_cluster *c,
                    uint32_t mask,
                    size_t first,
                    char *out,
                    size_t len);

/**
 * Stop every node (SIGKILL), then look for sanitizer reports in every
 * node's log: each one fails the running test (if a test is running) with
 * the log's name, and keeps the directory. Deletes the temp dir unless
 * c->keep.
 * @return 0, or -1 when a node's log holds a sanitizer report (a suite's
 *         cleanup function returns it, so that the suite fails)
 */
int h_cluster_destroy(struct h_cluster *c);

/* How long h_node_start waits for a node to listen. */
#define H_START_TIMEOUT_MS 15000

/**
 * h_cluster_start with the options in @o (NULL: none).
 */
int h_cluster_start_with(struct h_cluster *c,
                         size_t n,
                         const char *extra,
                         const struct h_start *o);

/**
 * Replace node i's disk-fault rules (tests/diskfault/README.md) and, when
 * it runs, make it read them (at its next disk operation). Only for a
 * cluster started with h_start.diskfault.
 * @return 0, or -1
 */
int h_node_rules(struct h_cluster *c, size_t i, const char *rules);

/**
 * Cut node i's power: what it wrote and did not sync is undone on disk,
 * then it dies (SIGKILL); it is reaped. Without h_start.diskfault, the
 * same as h_node_kill (the page cache keeps what was written).
 */
void h_node_power_loss(struct h_cluster *c, size_t i);

/**
 * Cut the power of every running node but @leader, each at its next write
 * to its log (wal/), before that write does anything: a node that answers
 * before its log write is durable (an acknowledgement or a vote sent too
 * early, a sync left out) is caught there. @leader is paused (SIGSTOP)
 * while their rules are set and resumed, so that they all crash on the same
 * batch of its, the first it sends afterwards. A node whose log write does
 * not come within @timeout_ms loses power then (h_node_power_loss). On
 * return every node but @leader is down (reaped) with empty rules; @leader
 * still runs. Only for a cluster started with h_start.diskfault.
 * @return how many nodes crashed at a log write, or -1 (not on the shim)
 */
int h_power_loss_at_next_log_write(struct h_cluster *c,
                                   size_t leader,
                                   unsigned timeout_ms);

/** How many lines of the file hold @needle (0 when it cannot be read)? */
size_t h_file_count(const char *path, const char *needle);

/**
 * Has node i exited (within @timeout_ms; 0: now)? An exited node is reaped
 * (pid 0).
 */
bool h_node_exited(struct h_cluster *c, size_t i, unsigned timeout_ms);

/**
 * Wait up to @timeout_ms for node i to exit, and reap it (pid 0).
 * @return its exit status (0-255), 128 + the signal that ended it, or -1
 *         when it still runs (or was not running)
 */
int h_node_wait_exit(struct h_cluster *c, size_t i, unsigned timeout_ms);

/** Empty node i's disk-operation trace. */
void h_trace_reset(struct h_cluster *c, size_t i);

/** Does the file hold @needle? */
bool h_file_contains(const char *path, const char *needle);

/**
 * Start (or restart) node i (0-based) with its existing data, and wait
 * (up to H_START_TIMEOUT_MS, polling) until it accepts connections on its
 * port. Call it from the main thread: the node is killed when the thread
 * that started it ends (PR_SET_PDEATHSIG), so that no node outlives a
 * crashed test.
 * @return 0 once it listens; -1 when it exited first (reaped: pid 0) or
 *         never listened in time (left running), with the log's name on
 *         stderr and c->keep set
 */
int h_node_start(struct h_cluster *c, size_t i);

/**
 * Start (or restart) node i like h_node_start, but return as soon as its
 * process is forked, without waiting for it to listen: for tests of what a
 * node does while it starts.
 * @return 0, or -1 (fork failed)
 */
int h_node_spawn(struct h_cluster *c, size_t i);

/**
 * Node i's host is lost for good: the node is killed, its data directory
 * wiped, and with h_start.drop_host its host undone. (Its log stays.)
 */
void h_node_lose_host(struct h_cluster *c, size_t i);

/** kill -9 node i and reap it. */
void h_node_kill(struct h_cluster *c, size_t i);

/** SIGTERM node i and wait for it; returns its exit status or -1. */
int h_node_term(struct h_cluster *c, size_t i);

/** SIGSTOP / SIGCONT node i. */
void h_node_pause(struct h_cluster *c, size_t i, bool pause);

/** Does node i's log file contain needle? */
bool h_log_contains(struct h_cluster *c, size_t i, const char *needle);

/** Did any node report a memory or undefined-behaviour error (sanitizer
 * builds)? Names the log on stderr. */
bool h_sanitizer_reports(struct h_cluster *c);

/** How many lines of node i's log contain needle? */
size_t h_log_count(struct h_cluster *c, size_t i, const char *needle);

/** Index of the node that answers as leader within timeout_ms, or -1. */
int h_find_leader(struct h_cluster *c, int timeout_ms);

/* A test client: blocking calls, follows leader hints, retries with the
 * same request id until deadline_ms passes. */
struct h_client
{
    struct h_cluster *c;                 /* the cluster */
    struct rpc_channel *ch[H_MAX_NODES]; /* one per node */
    size_t leader;                       /* node it tries first */
    uint8_t client_id[16];               /* random */
    bool session_open;                   /* opened for client_id */
    uint64_t next_request;               /* request ids */
    unsigned deadline_ms;                /* per operation, all retries */
};

/* Result of a client operation. */
struct h_result
{
    int err;      /* Raftkv__KvError, or -1 when every try failed */
    bool swapped; /* CAS */
    char *value;  /* Get: NUL-terminated copy (malloc'd) or NULL */
    size_t len;   /* its length */
};

int h_client_open(struct h_client *cl, struct h_cluster *c, unsigned seed);

/**
 * A blocking channel to node i's peer port that passes the peer handshake
 * as node `as` (with the cluster's secret): for tests that play a member
 * sending Raft messages of its own making.
 * @param deadline_ms per call
 * @return the channel (free it with rpc_channel_free), or NULL
 */
struct rpc_channel *h_peer_channel(struct h_cluster *c,
                                   size_t i,
                                   size_t as,
                                   uint32_t deadline_ms);
void h_client_close(struct h_client *cl);
struct h_result h_put(struct h_client *cl,
                      const char *key,
                      const char *val,
                      size_t len);
struct h_result h_append(struct h_client *cl, const char *key, const char *val);
struct h_result h_get(struct h_client *cl,
                      const char *key,
                      bool stale,
                      size_t node);
struct h_result h_del(struct h_client *cl, const char *key);
struct h_result h_cas(struct h_client *cl,
                      const char *key,
                      const char *expected,
                      const char *new_value);
/** Send one PutAppend with an explicit request id to one node, once (the
 * client's session is opened first if it is not). */
int h_put_raw(struct h_client *cl,
              size_t node,
              const char *key,
              const char *val,
              uint64_t request_id,
              bool append);
void h_result_free(struct h_result *r);

#endif /* TESTS_CLUSTER_HARNESS_H */
