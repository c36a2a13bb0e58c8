/* config.c: kvserver's options: one table for the command line, the
 * environment, the config file (libyaml) and --help. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <yaml.h>

#include "config.h"
#include "lease.h"
#include "metrics.h"
#include "quota.h"
#include "rpc/rpc.h"
#include "sm.h"
#include "wal.h"

#define VALUE_MAX 4096 /* longest value accepted from anywhere */

/* What an option's value is and how it is read. */
enum opt_kind {
    OPT_UINT,   /* a whole number in [min, max], stored << shift */
    OPT_BYTES,  /* bytes, optionally with K, M, G, T (binary) */
    OPT_STRING, /* a file name or a list, kept as given */
    OPT_ADDR,   /* HOST:PORT */
    OPT_SWITCH, /* true or false; on the command line alone: true */
    OPT_LEVEL,  /* debug, info, warn or error */
    OPT_ACTION, /* --help, --version, --print-config (min: the action) */
    OPT_FILE,   /* --config */
};

/* Where an option may come from. */
enum {
    ANYWHERE = 0,
    CLI_ONLY = 1, /* an action, not configuration */
    LIST = 2,     /* comma-separated; a YAML sequence in the file */
};

/* Where a value came from, in order of precedence (the last wins). */
enum layer { FROM_DEFAULT, FROM_FILE, FROM_ENV, FROM_CLI };

struct opt
{
    const char *name; /* --NAME, NAME: in the file, RAFTKV_SERVER_NAME */
    const char *arg;  /* what --help shows after --NAME (NULL: none) */
    enum opt_kind kind;
    unsigned flags;   /* CLI_ONLY, LIST */
    size_t off;       /* the field in struct kv_config (not actions) */
    size_t size;      /* its size (OPT_UINT: 4 or 8 bytes) */
    uint64_t min;     /* OPT_UINT: smallest value; OPT_ACTION: action */
    uint64_t max;     /* OPT_UINT: largest value (before the shift) */
    unsigned shift;   /* OPT_UINT: stored value is value << shift (MiB) */
    const char *help; /* --help lines, '\n'-separated, 49 columns */
};

/* One option's value: where it came from, for errors and --print-config. */
struct kv_config_value
{
    char *text;         /* as given (owned), or NULL: the default */
    enum layer layer;   /* which source gave it */
    char origin[320];   /* "--data-dir", "RAFTKV_SERVER_DATA_DIR", or
                           "FILE:LINE: data-dir": names it in messages */
    unsigned file_line; /* its line in the config file (0: not from it) */
};

#define FIELD(f) \
    offsetof(struct kv_config, f), sizeof(((struct kv_config *)0)->f)
#define UINT(name, arg, f, lo, hi, help)                         \
    {                                                            \
        name, arg, OPT_UINT, ANYWHERE, FIELD(f), lo, hi, 0, help \
    }
#define MIB(name, arg, f, lo, hi, help)                           \
    {                                                             \
        name, arg, OPT_UINT, ANYWHERE, FIELD(f), lo, hi, 20, help \
    }
#define BYTES(name, arg, f, help)                               \
    {                                                           \
        name, arg, OPT_BYTES, ANYWHERE, FIELD(f), 0, 0, 0, help \
    }
#define STRING(name, arg, flags, f, help)                     \
    {                                                         \
        name, arg, OPT_STRING, flags, FIELD(f), 0, 0, 0, help \
    }
#define SWITCH(name, f, help)                                     \
    {                                                             \
        name, NULL, OPT_SWITCH, ANYWHERE, FIELD(f), 0, 0, 0, help \
    }
#define ACTION(name, action, help)                                 \
    {                                                              \
        name, NULL, OPT_ACTION, CLI_ONLY, 0, 0, action, 0, 0, help \
    }

/* Every option, in --help's order. Adding one is adding a row (and a field
 * in struct kv_node_config or struct kv_config). */
static const struct opt opts[] = {
    UINT("id",
         "N",
         node.id,
         1,
         INT64_MAX,
         "this node's id in --cluster (1..2^63)"),
    STRING("cluster",
           "LIST",
           LIST,
           cluster,
           "all nodes' client addresses:\n"
           "1=127.0.0.1:7001,2=...  (1 to 9 nodes)"),
    STRING("peers",
           "LIST",
           LIST,
           peers,
           "all nodes' peer addresses, same ids:\n"
           "1=127.0.0.1:7002,2=... (default: each node's\n"
           "client host, client port + 1)"),
    STRING("peer-listen",
           "HOST:PORT",
           ANYWHERE,
           peer_listen,
           "where this node accepts peers (default: its\n"
           "own --peers address; 0.0.0.0:PORT for all)"),
    STRING("peer-secret-file",
           "FILE",
           ANYWHERE,
           node.peer_secret_file,
           "the cluster's shared secret (16 bytes to\n"
           "4 KiB; the same file on every node; make one\n"
           "with: openssl rand -hex 32 > FILE; chmod 600).\n"
           "Nodes prove they hold it before any Raft\n"
           "message is read. Required with 2+ nodes"),
    STRING("data-dir",
           "DIR",
           ANYWHERE,
           node.data_dir,
           "where this node keeps its data (created if\n"
           "missing; must belong to this cluster and id)"),
    STRING("listen",
           "HOST:PORT",
           ANYWHERE,
           listen,
           "where this node accepts clients (default: its\n"
           "own --cluster address, which is where others\n"
           "reach it; 0.0.0.0:PORT for all)"),
    STRING("advertise",
           "HOST:PORT",
           ANYWHERE,
           advertise,
           "where clients and the other nodes reach this\n"
           "node (a name or an address; default: its own\n"
           "--cluster entry, which it replaces; with --join\n"
           "--cluster may then be left out)"),
    STRING("peer-advertise",
           "HOST:PORT",
           ANYWHERE,
           peer_advertise,
           "where the other nodes reach this node for\n"
           "Raft (default: its own --peers entry, or the\n"
           "advertised host, port + 1)"),
    SWITCH("join",
           node.join,
           "this node joins a running cluster: it is not\n"
           "in the first configuration; add it with kvctl\n"
           "member add, and it gets the data from the\n"
           "leader. --cluster then gives addresses only\n"
           "(this node's at least)"),
    {"force-new-cluster", NULL, OPT_SWITCH, CLI_ONLY,
     FIELD(node.force_new_cluster), 0, 0, 0,
     "disaster recovery, when a majority of the\n"
     "nodes is lost for good: start a cluster of\n"
     "this node alone from its data; the others are\n"
     "removed for good (docs/operations.md)"},
    UINT("heartbeat-ms",
         "MS",
         node.heartbeat_ms,
         1,
         60000,
         "leader heartbeat interval (default 100)"),
    UINT("election-ms",
         "MS",
         node.election_ms,
         2,
         600000,
         "election timeout base; the actual timeout is\n"
         "random in [MS, 2*MS) (default 500)"),
    UINT("request-timeout-ms",
         "MS",
         node.request_timeout_ms,
         1,
         3600000,
         "a write not applied by then is answered\n"
         "TIMEOUT, outcome unknown (default 3000)"),
    UINT("snapshot-entries",
         "N",
         node.snapshot_entries,
         1,
         UINT32_MAX,
         "compact the log once it holds more than N\n"
         "entries (default 10000)"),
    UINT("snapshot-trailing",
         "N",
         node.snapshot_trailing,
         0,
         UINT32_MAX,
         "entries kept behind a compaction, so a\n"
         "slightly lagging follower needs no snapshot\n"
         "(default 1000)"),
    UINT("state-commit-ms",
         "MS",
         node.state_commit_ms,
         1,
         60000,
         "commit the applied state to LMDB at least\n"
         "this often (default 100); the log holds\n"
         "every committed write meanwhile"),
    MIB("wal-segment-mb",
        "N",
        node.wal_segment_bytes,
        1,
        4096,
        "size of one log segment file (default 64)"),
    UINT("max-sessions",
         "N",
         node.max_sessions,
         1,
         UINT32_MAX,
         "clients remembered for exactly-once writes;\n"
         "the least recently writing is forgotten first\n"
         "(default 100000)"),
    UINT("max-connections",
         "N",
         node.max_connections,
         0,
         1000000,
         "client connections open at once; more are\n"
         "accepted and closed at once (logged at most\n"
         "once a second). The other nodes' connections\n"
         "do not count. 0: no limit (default 10000)"),
    UINT("max-connections-per-source",
         "N",
         node.max_per_source,
         0,
         1000000,
         "client connections open at once from one\n"
         "address; more are closed at once. 0: no\n"
         "limit (default 1000)"),
    UINT("max-inflight-per-conn",
         "N",
         node.max_inflight_conn,
         1,
         UINT32_MAX,
         "calls in flight (started, not yet answered) on\n"
         "one client connection; more are answered\n"
         "OVERLOADED at once, never started, and\n"
         "clients retry them (default 10000)"),
    UINT("max-inflight",
         "N",
         node.max_inflight,
         1,
         UINT32_MAX,
         "calls in flight on all client connections\n"
         "together; more are answered OVERLOADED at\n"
         "once (default 100000)"),
    UINT("slow-request-ms",
         "MS",
         node.slow_request_ms,
         0,
         3600000,
         "log a client call that takes MS or more, with\n"
         "its trace id and where the time went (queue,\n"
         "raft commit, apply, reply). 0: never\n"
         "(default 500)"),
    UINT("frame-timeout-ms",
         "MS",
         node.frame_timeout_ms,
         0,
         3600000,
         "close a connection that starts a request and\n"
         "does not finish sending it within MS, or\n"
         "leaves more than --max-output-mb of replies\n"
         "unread for MS (slow or stuck clients).\n"
         "0: never (default 10000)"),
    UINT("idle-timeout-ms",
         "MS",
         node.idle_timeout_ms,
         0,
         86400000,
         "close a client connection with nothing sent\n"
         "or pending for MS (clients reconnect by\n"
         "themselves). 0: never (default 300000)"),
    MIB("max-buffered-mb",
        "N",
        node.max_buffered,
        0,
        1u << 20,
        "bytes all client connections may buffer\n"
        "together (requests read, replies unsent);\n"
        "over it, connections whose replies pile up\n"
        "unread stop being read until they drain.\n"
        "0: no budget (default 1024)"),
    MIB("max-output-mb",
        "N",
        node.max_output,
        1,
        1024,
        "unread replies one connection may hold; above\n"
        "it the node stops reading that connection's\n"
        "requests, at 4x it closes it (default 8)"),
    BYTES("quota-bytes",
          "N",
          node.quota_bytes,
          "the leader refuses writes (NO_SPACE) that\n"
          "would grow the applied state past N bytes\n"
          "(512MiB, 8GiB: K, M, G, T are binary units);\n"
          "deletes are still accepted. 0: no quota\n"
          "(default 8GiB)"),
    UINT("history-revisions",
         "N",
         node.history_revisions,
         1,
         UINT64_MAX / 2,
         "the leader compacts the history of changes\n"
         "(for resuming watches, docs/data-model.md)\n"
         "to the last N revisions (default 100000)"),
    BYTES("history-bytes",
          "N",
          node.history_bytes,
          "and to at most N bytes (256MiB: K, M, G, T\n"
          "are binary units; 0: no cap; default 256MiB)"),
    UINT("compact-step-records",
         "N",
         node.compact_step_records,
         0,
         UINT64_MAX / 2,
         "the leader compacts the history (kvctl compact,\n"
         "and its own) in log entries that drop about N\n"
         "events (and 64 MiB) at most, one after the\n"
         "other: every node drops them on its event loop.\n"
         "0: in one entry (default 100000)"),
    UINT("max-delete-keys",
         "N",
         node.max_delete_keys,
         0,
         UINT64_MAX / 2,
         "the leader refuses (TOO_MANY_KEYS) a delete of\n"
         "a range, or a transaction's deletes, over more\n"
         "than N keys: every node applies a write on its\n"
         "event loop, which a delete of a million keys\n"
         "holds for about a second. kvctl del deletes\n"
         "larger ranges in pieces. 0: no limit\n"
         "(default 10000)"),
    UINT("max-lease-keys",
         "N",
         node.max_lease_keys,
         0,
         UINT64_MAX / 2,
         "the leader refuses (TOO_MANY_KEYS) a put that\n"
         "would give a lease more than N keys, and ends\n"
         "expired leases in writes of about N keys:\n"
         "ending a lease deletes all its keys in one\n"
         "write, which holds every node for 2 to 4 us\n"
         "a key. 0: no limit (default 100000)"),
    UINT("count-slice-keys",
         "N",
         node.count_slice_keys,
         0,
         UINT64_MAX / 2,
         "a Range (or a transaction that only reads)\n"
         "that counts more keys than N (count only, or\n"
         "past a limit) counts the rest N keys per loop\n"
         "turn, of the state the read found, and answers\n"
         "at the end: other requests are served between\n"
         "the slices. 0: count at once (default 20000)"),
    UINT("lease-min-ttl",
         "S",
         node.lease_min_ttl_s,
         1,
         KV_LEASE_MAX_TTL,
         "the shortest TTL of a lease, in seconds: a\n"
         "grant asking less gets S (default: 3 x\n"
         "--election-ms, rounded up to a second; a\n"
         "lease must outlive an election)"),
    UINT("auth-token-ttl-s",
         "S",
         node.auth_token_ttl_s,
         1,
         30 * 86400,
         "tokens that clients get from Authenticate\n"
         "(users and roles, docs/auth.md) are valid\n"
         "for S seconds (default 300)"),
    {"log-level", "LEVEL", OPT_LEVEL, ANYWHERE, FIELD(log_level), 0, 0, 0,
     "debug, info, warn or error (default info)"},
    STRING("restore",
           "FILE",
           CLI_ONLY,
           restore,
           "fill the empty --data-dir with a snapshot\n"
           "saved by `kvctl snapshot save`, then exit"),
    {"metrics-addr", "HOST:PORT", OPT_ADDR, ANYWHERE, FIELD(node.metrics_addr),
     0, 0, 0,
     "serve Prometheus metrics at /metrics and a\n"
     "health check at /health (default: off)"},
    STRING("tls-cert",
           "FILE",
           ANYWHERE,
           node.tls.cert_file,
           "serve clients over TLS with this PEM\n"
           "certificate (chain) ..."),
    STRING("tls-key", "FILE", ANYWHERE, node.tls.key_file, "... and its key"),
    SWITCH("tls-client-auth",
           node.tls.verify_peer,
           "require client certificates signed by\n"
           "--tls-ca; the certificate's CN is the user"),
    STRING("tls-ca",
           "FILE",
           ANYWHERE,
           node.tls.ca_file,
           "CA certificates for client certificates"),
    STRING("peer-tls-cert",
           "FILE",
           ANYWHERE,
           node.peer_tls.cert_file,
           "talk to peers over mutual TLS: this node's\n"
           "certificate (it must name its --peers\n"
           "address), ..."),
    STRING("peer-tls-key",
           "FILE",
           ANYWHERE,
           node.peer_tls.key_file,
           "... its key, ..."),
    STRING("peer-tls-ca",
           "FILE",
           ANYWHERE,
           node.peer_tls.ca_file,
           "... and the CA that signs every node's"),
    STRING("peer-tls-allowed-names",
           "LIST",
           LIST,
           node.peer_tls.allowed_names,
           "peers' certificates must carry one of these\n"
           "names (comma-separated; default: any name\n"
           "the CA signed). The peer secret is still\n"
           "needed: it binds each connection to a node id\n"
           "SIGHUP reloads every certificate and key\n"
           "for new connections"),
    SWITCH("enable-fault-injection",
           node.fault_injection,
           "accept fault commands (kvctl fault): drop,\n"
           "delay, duplicate or cut this node's traffic.\n"
           "For tests; never on a production cluster"),
    {"config", "FILE", OPT_FILE, CLI_ONLY, FIELD(file), 0, 0, 0,
     "read options from this YAML file (default:\n"
     "$" KV_CONFIG_ENV_FILE "; see below)"},
    ACTION("print-config",
           KV_CONFIG_PRINT,
           "check the options, print them as a config\n"
           "file saying where each came from, and exit"),
    ACTION("help", KV_CONFIG_HELP, "this text"),
    ACTION("version", KV_CONFIG_VERSION, "print kvserver's version and exit"),
};

#define N_OPTS (sizeof opts / sizeof opts[0])
_Static_assert(KV_MAX_NODES == 9, "--cluster's help says 1 to 9 nodes");

/* Indexes of the rows that the checks after loading look at. */
enum {
    O_ID = 0,
    O_CLUSTER = 1,
    O_PEERS = 2,
    O_PEER_LISTEN = 3,
    O_PEER_SECRET = 4,
    O_DATA_DIR = 5,
    O_LISTEN = 6,
    O_ADVERTISE = 7,
    O_PEER_ADVERTISE = 8,
};

static const char usage_head[] =
    "usage: kvserver --id N --cluster ID=HOST:PORT,... --data-dir DIR\n"
    "                --peer-secret-file FILE [options]\n"
    "       kvserver --config FILE [options]\n"
    "\n"
    "One node of a raftkv cluster. Every node is started with the same\n"
    "--cluster list (client addresses) and --peers list (addresses where\n"
    "the nodes talk Raft to each other). A node serves clients on its\n"
    "--cluster address and the other nodes on its --peers address only.\n"
    "\n";

static const char usage_tail[] =
    "\n"
    "Every option but --restore, --config, --print-config, --help and\n"
    "--version can also come from the environment, as RAFTKV_SERVER_ and\n"
    "its name in capitals with _ for - (RAFTKV_SERVER_DATA_DIR; empty is\n"
    "unset), and from the config file, a YAML mapping of the names\n"
    "without -- (data-dir: /var/lib/raftkv; lists may be YAML sequences).\n"
    "The command line wins over the environment, the environment over the\n"
    "file, the file over the defaults. Switches take a value anywhere but\n"
    "alone on the command line: true or false (--tls-client-auth=false).\n"
    "\n"
    "SIGTERM or SIGINT stops the node cleanly. Exit status: 0 after a clean\n"
    "stop, 1 when the node cannot start or finds its data damaged, 2 for a\n"
    "bad option, variable or config file.\n";

/* ------------------------------------------------------------- errors */

static int fail(struct kv_config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct kv_config *cfg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cfg->errmsg, sizeof cfg->errmsg, fmt, ap);
    va_end(ap);
    return KV_CONFIG_EUSAGE;
}

static int fail_nomem(struct kv_config *cfg)
{
    snprintf(cfg->errmsg, sizeof cfg->errmsg, "out of memory");
    return KV_CONFIG_ENOMEM;
}

/* How messages name option i: where its value in effect came from. */
static const char *label(const struct kv_config *cfg, size_t i)
{
    return cfg->values[i].text ? cfg->values[i].origin : opts[i].name;
}

/* ------------------------------------------------------ reading values */

static void *field(struct kv_config *cfg, const struct opt *o)
{
    return (char *)cfg + o->off;
}

static const void *cfield(const struct kv_config *cfg, const struct opt *o)
{
    return (const char *)cfg + o->off;
}

static void store_uint(struct kv_config *cfg, const struct opt *o, uint64_t v)
{
    if (o->size == sizeof(uint32_t)) {
        uint32_t v32 = (uint32_t)v;
        memcpy(field(cfg, o), &v32, sizeof v32);
    } else {
        memcpy(field(cfg, o), &v, sizeof v);
    }
}

static uint64_t load_uint(const struct kv_config *cfg, const struct opt *o)
{
    if (o->size == sizeof(uint32_t)) {
        uint32_t v32;
        memcpy(&v32, cfield(cfg, o), sizeof v32);
        return v32;
    }
    uint64_t v;
    memcpy(&v, cfield(cfg, o), sizeof v);
    return v;
}

/* A whole number in [min, max]; 0 on success. */
static int to_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] < '0' || s[0] > '9' || v < min ||
        v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_uint(struct kv_config *cfg,
                      const struct opt *o,
                      const char *lab,
                      const char *s)
{
    uint64_t v;
    uint64_t limit = o->size == sizeof(uint32_t) ? UINT32_MAX : UINT64_MAX;
    if (to_u64(s, o->min, o->max, &v) != 0 || (v << o->shift) > limit ||
        (v << o->shift) >> o->shift != v) {
        return fail(cfg, "%s wants a whole number from %llu to %llu, not '%s'",
                    lab, (unsigned long long)o->min, (unsigned long long)o->max,
                    s);
    }
    store_uint(cfg, o, v << o->shift);
    return KV_CONFIG_OK;
}

static int parse_bytes(struct kv_config *cfg,
                       const struct opt *o,
                       const char *lab,
                       const char *s)
{
    uint64_t v;
    if (kv_quota_parse(s, &v) != 0) {
        return fail(cfg,
                    "%s wants a number of bytes, optionally with K, M, G or "
                    "T (512MiB, 8GiB), not '%s'",
                    lab, s);
    }
    memcpy(field(cfg, o), &v, sizeof v);
    return KV_CONFIG_OK;
}

static int parse_string(struct kv_config *cfg,
                        const struct opt *o,
                        const char *lab,
                        const char *s)
{
    (void)lab;
    memcpy(field(cfg, o), &s, sizeof s);
    return KV_CONFIG_OK;
}

static int parse_addr(struct kv_config *cfg,
                      const struct opt *o,
                      const char *lab,
                      const char *s)
{
    char host[256];
    uint16_t port;
    if (metrics_parse_addr(s, host, &port) != 0) {
        return fail(cfg, "%s wants HOST:PORT, not '%s'", lab, s);
    }
    return parse_string(cfg, o, lab, s);
}

static int parse_switch(struct kv_config *cfg,
                        const struct opt *o,
                        const char *lab,
                        const char *s)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!strcmp(s, yes[i]) || !strcmp(s, no[i])) {
            bool v = !strcmp(s, yes[i]);
            memcpy(field(cfg, o), &v, sizeof v);
            return KV_CONFIG_OK;
        }
    }
    return fail(cfg, "%s wants true or false, not '%s'", lab, s);
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static int parse_level(struct kv_config *cfg,
                       const struct opt *o,
                       const char *lab,
                       const char *s)
{
    for (int i = 0; i < 4; i++) {
        if (!strcmp(s, level_names[i])) {
            int level = RPC_LOG_DEBUG + i;
            memcpy(field(cfg, o), &level, sizeof level);
            return KV_CONFIG_OK;
        }
    }
    return fail(cfg, "%s wants debug, info, warn or error, not '%s'", lab, s);
}

static int parse_action(struct kv_config *cfg,
                        const struct opt *o,
                        const char *lab,
                        const char *s)
{
    (void)lab;
    (void)s;
    cfg->action = (enum kv_config_action)o->min;
    return KV_CONFIG_OK;
}

typedef int (*parse_cb)(struct kv_config *cfg,
                        const struct opt *o,
                        const char *lab,
                        const char *s);

/* How each kind is read, by enum opt_kind. */
static const parse_cb parsers[] = {
    [OPT_UINT] = parse_uint,     [OPT_BYTES] = parse_bytes,
    [OPT_STRING] = parse_string, [OPT_ADDR] = parse_addr,
    [OPT_SWITCH] = parse_switch, [OPT_LEVEL] = parse_level,
    [OPT_ACTION] = parse_action, [OPT_FILE] = parse_string,
};

/* Take @text (copied) as option i's value from @layer, which @origin
 * names in messages; @line is its line in the config file, or 0. */
static int set_value(struct kv_config *cfg,
                     size_t i,
                     const char *text,
                     enum layer layer,
                     const char *origin,
                     unsigned line)
{
    const struct opt *o = &opts[i];
    struct kv_config_value *v = &cfg->values[i];
    if (strlen(text) > VALUE_MAX) {
        return fail(cfg, "%s is longer than %d bytes", origin, VALUE_MAX);
    }
    if (!*text) {
        return fail(cfg, "%s has no value", origin);
    }
    char *copy = strdup(text);
    if (!copy) {
        return fail_nomem(cfg);
    }
    free(v->text);
    v->text = copy;
    v->layer = layer;
    v->file_line = line;
    snprintf(v->origin, sizeof v->origin, "%s", origin);
    return parsers[o->kind](cfg, o, origin, copy);
}

/* The row of option @name (of @len bytes), or N_OPTS. */
static size_t find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        if (strlen(opts[i].name) == len && !memcmp(opts[i].name, name, len)) {
            return i;
        }
    }
    return N_OPTS;
}

/* Why @name, a key of the config file (@where is "FILE:LINE") or a
 * variable of the environment (@where is its name), is not a setting, in a
 * message that helps. */
static int refuse_name(struct kv_config *cfg,
                       const char *where,
                       const char *name,
                       bool env)
{
    const char *what = env ? " in the environment" : "";
    size_t i = find_opt(name, strlen(name));
    if (i < N_OPTS) {
        return fail(cfg, "%s%s: --%s is for the command line only", where, what,
                    name);
    }
    if (strstr(name, "secret")) {
        return fail(cfg,
                    "%s%s: unknown option %s: the secret itself is never "
                    "given here, name the file that holds it with "
                    "peer-secret-file",
                    where, what, name);
    }
    char dashed[128];
    snprintf(dashed, sizeof dashed, "%s", name);
    for (char *p = dashed; *p; p++) {
        *p = *p == '_' ? '-' : *p;
    }
    i = find_opt(dashed, strlen(dashed));
    if (!env && i < N_OPTS && !(opts[i].flags & CLI_ONLY)) {
        return fail(cfg, "%s: unknown key '%s' (did you mean %s?)", where, name,
                    dashed);
    }
    if (env) {
        return fail(cfg,
                    "%s in the environment: no option --%s (kvserver --help "
                    "lists them; a variable is RAFTKV_SERVER_ and the "
                    "option's name in capitals, _ for -; RAFTKV_SERVER_FLAGS, "
                    "for scripts/cluster.sh, is the one other name)",
                    where, name);
    }
    return fail(cfg,
                "%s: unknown key '%s' (the keys are kvserver --help's option "
                "names without --)",
                where, name);
}

/* ----------------------------------------------------- the config file */

/* Where the reader is in the file's structure. */
enum yaml_state {
    Y_STREAM,  /* before the stream */
    Y_DOC,     /* before a document, or after the one there is */
    Y_TOP,     /* inside the document, before its mapping */
    Y_KEY,     /* in the mapping, before a key */
    Y_VALUE,   /* after a key, before its value */
    Y_SEQ,     /* in a list's sequence */
    Y_DOC_END, /* after the mapping */
};

struct yaml_reader
{
    struct kv_config *cfg;
    const char *path;         /* the file, for messages */
    enum yaml_state state;    /* where we are */
    bool had_doc;             /* a document was read */
    size_t opt;               /* the key's option */
    unsigned key_line;        /* the key's line */
    char list[VALUE_MAX + 2]; /* a sequence's items joined with ',' */
    size_t list_len;          /* bytes in list */
    bool list_long;           /* the items did not fit */
};

/* The key of line @line: its option, or an error. */
static int read_key(struct yaml_reader *r, const char *key, unsigned line)
{
    struct kv_config *cfg = r->cfg;
    char where[300];
    snprintf(where, sizeof where, "%s:%u", r->path, line);
    size_t i = find_opt(key, strlen(key));
    if (i == N_OPTS || (opts[i].flags & CLI_ONLY)) {
        return refuse_name(cfg, where, key, false);
    }
    if (cfg->values[i].layer == FROM_FILE && cfg->values[i].file_line) {
        return fail(cfg, "%s: %s is given twice (first on line %u)", where, key,
                    cfg->values[i].file_line);
    }
    r->opt = i;
    r->key_line = line;
    return KV_CONFIG_OK;
}

static int read_value(struct yaml_reader *r, const char *value)
{
    char origin[320];
    snprintf(origin, sizeof origin, "%s:%u: %s", r->path, r->key_line,
             opts[r->opt].name);
    return set_value(r->cfg, r->opt, value, FROM_FILE, origin, r->key_line);
}

/* One parser event. */
static int read_event(struct yaml_reader *r, const yaml_event_t *e)
{
    struct kv_config *cfg = r->cfg;
    unsigned line = (unsigned)e->start_mark.line + 1;
    const char *scalar = (const char *)e->data.scalar.value;
    switch (e->type) {
        case YAML_STREAM_START_EVENT:
        case YAML_STREAM_END_EVENT:
        case YAML_NO_EVENT:
            return KV_CONFIG_OK;
        case YAML_DOCUMENT_START_EVENT:
            if (r->had_doc) {
                return fail(cfg,
                            "%s:%u: a second YAML document: the config is "
                            "one mapping of name: value",
                            r->path, line);
            }
            r->state = Y_TOP;
            return KV_CONFIG_OK;
        case YAML_DOCUMENT_END_EVENT:
            r->had_doc = true;
            r->state = Y_DOC;
            return KV_CONFIG_OK;
        case YAML_MAPPING_START_EVENT:
            if (r->state == Y_TOP) {
                r->state = Y_KEY;
                return KV_CONFIG_OK;
            }
            break;
        case YAML_MAPPING_END_EVENT:
            r->state = Y_DOC_END;
            return KV_CONFIG_OK;
        case YAML_SEQUENCE_START_EVENT:
            if (r->state == Y_VALUE && (opts[r->opt].flags & LIST)) {
                r->state = Y_SEQ;
                r->list_len = 0;
                r->list_long = false;
                r->list[0] = 0;
                return KV_CONFIG_OK;
            }
            if (r->state == Y_VALUE) {
                return fail(cfg, "%s:%u: %s takes one value, not a list",
                            r->path, line, opts[r->opt].name);
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
            r->state = Y_KEY;
            if (r->list_long) {
                return fail(cfg, "%s:%u: %s is longer than %d bytes", r->path,
                            r->key_line, opts[r->opt].name, VALUE_MAX);
            }
            return read_value(r, r->list);
        case YAML_SCALAR_EVENT:
            if (r->state == Y_TOP && !*scalar) {
                r->state = Y_DOC_END; /* an empty document */
                return KV_CONFIG_OK;
            }
            if (r->state == Y_KEY) {
                r->state = Y_VALUE;
                return read_key(r, scalar, line);
            }
            if (r->state == Y_VALUE) {
                r->state = Y_KEY;
                return read_value(r, scalar);
            }
            if (r->state == Y_SEQ) {
                size_t len = strlen(scalar);
                if (r->list_len + len + 1 > VALUE_MAX) {
                    r->list_long = true;
                    return KV_CONFIG_OK;
                }
                if (r->list_len) {
                    r->list[r->list_len++] = ',';
                }
                memcpy(r->list + r->list_len, scalar, len + 1);
                r->list_len += len;
                return KV_CONFIG_OK;
            }
            break;
        case YAML_ALIAS_EVENT:
            return fail(cfg, "%s:%u: YAML aliases (*name) are not supported",
                        r->path, line);
    }
    if (r->state == Y_VALUE || r->state == Y_SEQ) {
        return fail(cfg, "%s:%u: %s wants a %s", r->path, line,
                    opts[r->opt].name,
                    opts[r->opt].flags & LIST ? "value or a list of values"
                                              : "single value");
    }
    return fail(cfg,
                "%s:%u: not a name: value line (the config file is one "
                "YAML mapping of option names to values)",
                r->path, line);
}

/* Read the config file @path, which @from (--config or
 * RAFTKV_SERVER_CONFIG) named. */
static int read_file(struct kv_config *cfg, const char *path, const char *from)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return fail(cfg, "config file %s (%s): %s", path, from,
                    strerror(errno));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fail(cfg, "config file %s (%s) is not a regular file", path,
                    from);
    }
    struct yaml_reader *r = calloc(1, sizeof *r);
    if (!r) {
        fclose(f);
        return fail_nomem(cfg);
    }
    r->cfg = cfg;
    r->path = path;
    r->state = Y_STREAM;
    int rv = KV_CONFIG_OK;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        rv = fail_nomem(cfg);
        goto err_free_reader;
    }
    yaml_parser_set_input_file(&p, f);
    bool done = false;
    while (!done && rv == KV_CONFIG_OK) {
        yaml_event_t e;
        if (!yaml_parser_parse(&p, &e)) {
            if (p.error == YAML_MEMORY_ERROR) {
                rv = fail_nomem(cfg);
            } else if (p.error == YAML_READER_ERROR) {
                rv = fail(cfg, "%s: %s at byte %zu", path,
                          p.problem ? p.problem : "cannot read",
                          p.problem_offset);
            } else {
                rv = fail(cfg, "%s:%zu: YAML: %s%s%s", path,
                          p.problem_mark.line + 1,
                          p.problem ? p.problem : "syntax error",
                          p.context ? " " : "", p.context ? p.context : "");
            }
            break;
        }
        done = e.type == YAML_STREAM_END_EVENT;
        rv = read_event(r, &e);
        yaml_event_delete(&e);
    }
    yaml_parser_delete(&p);
err_free_reader:
    free(r);
    fclose(f);
    return rv;
}

/* -------------------------------------------------------- environment */

static int read_env(struct kv_config *cfg, char *const *envp)
{
    size_t plen = strlen(KV_CONFIG_ENV_PREFIX);
    for (char *const *e = envp; e && *e; e++) {
        if (strncmp(*e, KV_CONFIG_ENV_PREFIX, plen) != 0) {
            continue;
        }
        const char *eq = strchr(*e, '=');
        if (!eq) {
            continue;
        }
        char var[128], name[128];
        size_t vlen = (size_t)(eq - *e);
        snprintf(var, sizeof var, "%.*s", (int)vlen, *e);
        if (!strcmp(var, KV_CONFIG_ENV_FILE) ||
            !strcmp(var, "RAFTKV_SERVER_FLAGS")) {
            continue; /* the file's name; scripts/cluster.sh's */
        }
        size_t n = 0;
        for (const char *p = var + plen; *p && n + 1 < sizeof name; p++) {
            name[n++] =
                *p == '_'
                    ? '-'
                    : (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        }
        name[n] = 0;
        bool upper = true; /* RAFTKV_SERVER_data_dir is not a name */
        for (const char *p = var + plen; *p; p++) {
            upper &= !(*p >= 'a' && *p <= 'z') && *p != '-';
        }
        size_t i = upper ? find_opt(name, n) : N_OPTS;
        if (i == N_OPTS || (opts[i].flags & CLI_ONLY)) {
            return refuse_name(cfg, var, name, true);
        }
        if (!eq[1]) {
            continue; /* empty: unset */
        }
        int rv = set_value(cfg, i, eq + 1, FROM_ENV, var, 0);
        if (rv != KV_CONFIG_OK) {
            return rv;
        }
    }
    return KV_CONFIG_OK;
}

/* ------------------------------------------------------- command line */

/* One option the command line gave, applied after the file and the
 * environment. */
struct cli_value
{
    size_t opt;       /* its row */
    const char *text; /* its value ("true" for a bare switch) */
};

static int read_cli(struct kv_config *cfg,
                    int argc,
                    char **argv,
                    struct cli_value *given,
                    size_t *n_given)
{
    struct option lo[N_OPTS + 1];
    for (size_t i = 0; i < N_OPTS; i++) {
        lo[i] =
            (struct option){opts[i].name,
                            opts[i].kind == OPT_SWITCH   ? optional_argument
                            : opts[i].kind == OPT_ACTION ? no_argument
                                                         : required_argument,
                            NULL, 256 + (int)i};
    }
    lo[N_OPTS] = (struct option){0};
    opterr = 0;
    optind = 0; /* start over (tests call this more than once) */
    int o;
    while ((o = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        if (o == 'h') {
            o = 256 + (int)find_opt("help", 4);
        }
        if (o == ':') {
            return fail(cfg, "option %s needs a value", argv[optind - 1]);
        }
        if (o < 256 || o >= 256 + (int)N_OPTS) {
            return fail(cfg, "unknown option %s", argv[optind - 1]);
        }
        size_t i = (size_t)(o - 256);
        if (opts[i].kind == OPT_ACTION) {
            cfg->action = (enum kv_config_action)opts[i].min;
            if (cfg->action != KV_CONFIG_PRINT) {
                return KV_CONFIG_OK; /* --help, --version: nothing more */
            }
            continue;
        }
        given[(*n_given)++] = (struct cli_value){i, optarg ? optarg : "true"};
    }
    if (optind < argc) {
        return fail(cfg, "unexpected argument '%s'", argv[optind]);
    }
    return KV_CONFIG_OK;
}

/* ------------------------------------------------ the checks at the end */

/* Split "host:port" or "[v6]:port" into host (256 bytes) and port. */
static int parse_hostport(struct kv_config *cfg,
                          const char *lab,
                          char *item,
                          char *host,
                          uint16_t *port)
{
    char *colon = strrchr(item, ':');
    if (!colon || colon == item) {
        return fail(cfg, "%s wants HOST:PORT, not '%s'", lab, item);
    }
    *colon = 0;
    char *h = item;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = 0;
        h++;
    }
    if (strlen(h) >= 256) {
        return fail(cfg, "%s: host '%s' is too long", lab, h);
    }
    snprintf(host, 256, "%s", h);
    uint64_t v;
    if (to_u64(colon + 1, 1, 65535, &v) != 0) {
        return fail(cfg, "%s wants a port from 1 to 65535, not '%s'", lab,
                    colon + 1);
    }
    *port = (uint16_t)v;
    return KV_CONFIG_OK;
}

/* "1=host:port,2=host:port" into the node's ids, hosts and ports. */
static int parse_cluster(struct kv_config *cfg, char *list)
{
    struct kv_node_config *c = &cfg->node;
    const char *lab = label(cfg, O_CLUSTER);
    char *save = NULL;
    for (char *item = strtok_r(list, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        if (c->n_nodes == KV_MAX_NODES) {
            return fail(cfg, "%s has more than %d nodes", lab, KV_MAX_NODES);
        }
        char *eq = strchr(item, '=');
        if (!eq) {
            return fail(cfg, "%s item '%s' is not ID=HOST:PORT", lab, item);
        }
        *eq = 0;
        size_t i = c->n_nodes;
        if (to_u64(item, 1, INT64_MAX, &c->ids[i]) != 0) {
            return fail(cfg, "%s: node id '%s' is not a number from 1 to %llu",
                        lab, item, (unsigned long long)INT64_MAX);
        }
        int rv = parse_hostport(cfg, lab, eq + 1, c->hosts[i], &c->ports[i]);
        if (rv != KV_CONFIG_OK) {
            return rv;
        }
        for (size_t j = 0; j < i; j++) {
            if (c->ids[j] == c->ids[i]) {
                return fail(cfg, "%s names node %s twice", lab, item);
            }
        }
        c->n_nodes++;
    }
    if (c->n_nodes == 0) {
        return fail(cfg, "%s is empty", lab);
    }
    return KV_CONFIG_OK;
}

/* --peers "1=host:port,..." into peer_hosts/peer_ports, by --cluster's
 * ids. */
static int parse_peers(struct kv_config *cfg, char *list)
{
    struct kv_node_config *c = &cfg->node;
    const char *lab = label(cfg, O_PEERS);
    bool seen[KV_MAX_NODES] = {false};
    char *save = NULL;
    for (char *item = strtok_r(list, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) {
            return fail(cfg, "%s item '%s' is not ID=HOST:PORT", lab, item);
        }
        *eq = 0;
        uint64_t id;
        if (to_u64(item, 1, INT64_MAX, &id) != 0) {
            return fail(cfg, "%s: node id '%s' is not a number from 1 to %llu",
                        lab, item, (unsigned long long)INT64_MAX);
        }
        size_t i = 0;
        while (i < c->n_nodes && c->ids[i] != id) {
            i++;
        }
        if (i == c->n_nodes) {
            return fail(cfg, "%s names node %s, which is not in --cluster", lab,
                        item);
        }
        if (seen[i]) {
            return fail(cfg, "%s names node %s twice", lab, item);
        }
        seen[i] = true;
        int rv = parse_hostport(cfg, lab, eq + 1, c->peer_hosts[i],
                                &c->peer_ports[i]);
        if (rv != KV_CONFIG_OK) {
            return rv;
        }
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        if (!seen[i]) {
            return fail(cfg, "%s has no address for node %llu", lab,
                        (unsigned long long)c->ids[i]);
        }
    }
    return KV_CONFIG_OK;
}

/* A required option is missing: say every way to give it. */
static int missing(struct kv_config *cfg, size_t i)
{
    char var[128];
    snprintf(var, sizeof var, "%s%s", KV_CONFIG_ENV_PREFIX, opts[i].name);
    for (char *p = var; *p; p++) {
        *p = *p == '-' ? '_' : (*p >= 'a' && *p <= 'z') ? *p - 'a' + 'A' : *p;
    }
    return fail(cfg,
                "--%s is required (on the command line, as %s: in the config "
                "file, or as %s)",
                opts[i].name, opts[i].name, var);
}

/* Work out the member lists and addresses, and refuse what cannot work. */
static int check(struct kv_config *cfg)
{
    struct kv_node_config *c = &cfg->node;
    if (!cfg->values[O_ID].text) {
        return missing(cfg, O_ID);
    }
    /* A node that joins may give its own address alone (--advertise). */
    char own[320];
    if (!cfg->cluster && !(c->join && cfg->advertise)) {
        return missing(cfg, O_CLUSTER);
    }
    if (!c->data_dir) {
        return missing(cfg, O_DATA_DIR);
    }
    if (!cfg->cluster) {
        snprintf(own, sizeof own, "%llu=%s", (unsigned long long)c->id,
                 cfg->advertise);
    }
    char *list = strdup(cfg->cluster ? cfg->cluster : own);
    if (!list) {
        return fail_nomem(cfg);
    }
    int rv = parse_cluster(cfg, list);
    free(list);
    if (rv != KV_CONFIG_OK) {
        return rv;
    }
    bool found = false;
    for (size_t i = 0; i < c->n_nodes; i++) {
        found |= c->ids[i] == c->id;
    }
    if (!found && c->join && cfg->advertise && c->n_nodes < KV_MAX_NODES) {
        /* Its own entry, added (the list names others' addresses). */
        size_t i = c->n_nodes++;
        c->ids[i] = c->id;
        list = strdup(cfg->advertise);
        if (!list) {
            return fail_nomem(cfg);
        }
        rv = parse_hostport(cfg, label(cfg, O_ADVERTISE), list, c->hosts[i],
                            &c->ports[i]);
        free(list);
        if (rv != KV_CONFIG_OK) {
            return rv;
        }
        found = true;
    }
    if (found && cfg->advertise) {
        /* --advertise and the node's own --cluster entry say one thing. */
        char host[256];
        uint16_t port;
        list = strdup(cfg->advertise);
        if (!list) {
            return fail_nomem(cfg);
        }
        rv = parse_hostport(cfg, label(cfg, O_ADVERTISE), list, host, &port);
        free(list);
        if (rv != KV_CONFIG_OK) {
            return rv;
        }
        for (size_t i = 0; i < c->n_nodes; i++) {
            if (c->ids[i] == c->id &&
                (strcmp(c->hosts[i], host) || c->ports[i] != port)) {
                return fail(cfg,
                            "%s %s differs from this node's --cluster entry "
                            "%s:%u: give one, or the same",
                            label(cfg, O_ADVERTISE), cfg->advertise,
                            c->hosts[i], c->ports[i]);
            }
        }
    }
    if (!found) {
        return fail(cfg, "%s %llu is not in --cluster", label(cfg, O_ID),
                    (unsigned long long)c->id);
    }
    if (cfg->peers) {
        list = strdup(cfg->peers);
        if (!list) {
            return fail_nomem(cfg);
        }
        rv = parse_peers(cfg, list);
        free(list);
        if (rv != KV_CONFIG_OK) {
            return rv;
        }
    } else {
        for (size_t i = 0; i < c->n_nodes; i++) {
            if (c->ports[i] == 65535) {
                return fail(cfg,
                            "--cluster port 65535 leaves no port + 1 for the "
                            "default peer address: give --peers");
            }
            snprintf(c->peer_hosts[i], sizeof c->peer_hosts[i], "%s",
                     c->hosts[i]);
            c->peer_ports[i] = (uint16_t)(c->ports[i] + 1);
        }
    }
    if (cfg->peer_advertise) {
        char host[256];
        uint16_t port;
        list = strdup(cfg->peer_advertise);
        if (!list) {
            return fail_nomem(cfg);
        }
        rv = parse_hostport(cfg, label(cfg, O_PEER_ADVERTISE), list, host,
                            &port);
        free(list);
        if (rv != KV_CONFIG_OK) {
            return rv;
        }
        for (size_t i = 0; i < c->n_nodes; i++) {
            if (c->ids[i] != c->id) {
                continue;
            }
            if (cfg->peers &&
                (strcmp(c->peer_hosts[i], host) || c->peer_ports[i] != port)) {
                return fail(cfg,
                            "%s %s differs from this node's --peers entry "
                            "%s:%u: give one, or the same",
                            label(cfg, O_PEER_ADVERTISE), cfg->peer_advertise,
                            c->peer_hosts[i], c->peer_ports[i]);
            }
            snprintf(c->peer_hosts[i], sizeof c->peer_hosts[i], "%s", host);
            c->peer_ports[i] = port;
        }
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        for (size_t j = 0; j < c->n_nodes; j++) {
            if (c->ports[i] == c->peer_ports[j] &&
                !strcmp(c->hosts[i], c->peer_hosts[j])) {
                return fail(cfg,
                            "%s:%u is both a client and a peer address; "
                            "clients and peers need their own ports",
                            c->hosts[i], c->ports[i]);
            }
        }
        if (c->ids[i] == c->id) {
            snprintf(c->peer_listen_host, sizeof c->peer_listen_host, "%s",
                     c->peer_hosts[i]);
            c->peer_listen_port = c->peer_ports[i];
        }
    }
    if (cfg->peer_listen) {
        list = strdup(cfg->peer_listen);
        if (!list) {
            return fail_nomem(cfg);
        }
        rv = parse_hostport(cfg, label(cfg, O_PEER_LISTEN), list,
                            c->peer_listen_host, &c->peer_listen_port);
        free(list);
        if (rv != KV_CONFIG_OK) {
            return rv;
        }
    }
    if (cfg->listen) {
        list = strdup(cfg->listen);
        if (!list) {
            return fail_nomem(cfg);
        }
        rv = parse_hostport(cfg, label(cfg, O_LISTEN), list, c->listen_host,
                            &c->listen_port);
        free(list);
        if (rv != KV_CONFIG_OK) {
            return rv;
        }
    }
    if (c->force_new_cluster && cfg->restore) {
        return fail(cfg, "--force-new-cluster does not go with --restore");
    }
    if ((c->n_nodes > 1 || c->join) && !c->peer_secret_file && !cfg->restore) {
        return fail(cfg,
                    "a cluster of several nodes needs --peer-secret-file: "
                    "the same secret file on every node, so that nothing but "
                    "its members can send Raft messages (make one with: "
                    "openssl rand -hex 32 > FILE)");
    }
    if (!!c->tls.cert_file != !!c->tls.key_file) {
        return fail(cfg, "--tls-cert and --tls-key go together");
    }
    if (c->tls.verify_peer && (!c->tls.ca_file || !c->tls.cert_file)) {
        return fail(cfg,
                    "--tls-client-auth needs --tls-cert, --tls-key and "
                    "--tls-ca");
    }
    if (c->tls.ca_file && !c->tls.verify_peer) {
        return fail(cfg,
                    "--tls-ca is for client certificates: add "
                    "--tls-client-auth");
    }
    bool any_peer_tls = c->peer_tls.cert_file || c->peer_tls.key_file ||
                        c->peer_tls.ca_file || c->peer_tls.allowed_names;
    if (any_peer_tls && (!c->peer_tls.cert_file || !c->peer_tls.key_file ||
                         !c->peer_tls.ca_file)) {
        return fail(cfg,
                    "peer TLS needs --peer-tls-cert, --peer-tls-key and "
                    "--peer-tls-ca");
    }
    if (c->heartbeat_ms >= c->election_ms) {
        return fail(cfg, "--heartbeat-ms must be below --election-ms");
    }
    if (c->lease_min_ttl_s == 0) {
        c->lease_min_ttl_s = (int64_t)((3ull * c->election_ms + 999) / 1000);
    }
    return KV_CONFIG_OK;
}

/* ---------------------------------------------------------------- load */

int kv_config_load(struct kv_config *cfg,
                   int argc,
                   char **argv,
                   char *const *envp)
{
    *cfg = (struct kv_config){
        .node =
            {
                .heartbeat_ms = 100,
                .election_ms = 500,
                .request_timeout_ms = 3000,
                .snapshot_entries = 10000,
                .snapshot_trailing = 1000,
                .max_sessions = KV_DEFAULT_MAX_SESSIONS,
                .state_commit_ms = 100,
                .wal_segment_bytes = KV_WAL_SEGMENT_BYTES,
                .max_connections = 10000,
                .frame_timeout_ms = 10000,
                .idle_timeout_ms = 300000,
                .max_per_source = 1000,
                .max_inflight_conn = 10000,
                .max_inflight = 100000,
                .slow_request_ms = 500,
                .max_output = 8u << 20,
                .max_buffered = (size_t)1 << 30,
                .auth_token_ttl_s = 300,
                .quota_bytes = KV_QUOTA_DEFAULT,
                .history_revisions = 100000,
                .history_bytes = 256u << 20,
                .max_delete_keys = 10000,
                .compact_step_records = 100000,
                .max_lease_keys = 100000,
                .count_slice_keys = 20000,
            },
        .log_level = RPC_LOG_INFO,
    };
    cfg->values = calloc(N_OPTS, sizeof *cfg->values);
    struct cli_value *given = calloc((size_t)argc + 1, sizeof *given);
    if (!cfg->values || !given) {
        free(given);
        return fail_nomem(cfg);
    }
    size_t n_given = 0;
    int rv = read_cli(cfg, argc, argv, given, &n_given);
    if (rv != KV_CONFIG_OK || cfg->action == KV_CONFIG_HELP ||
        cfg->action == KV_CONFIG_VERSION) {
        goto out;
    }
    /* The file first, whatever the order on the command line. */
    const char *file = NULL, *file_from = "--config";
    for (size_t k = 0; k < n_given; k++) {
        if (opts[given[k].opt].kind == OPT_FILE) {
            file = given[k].text;
        }
    }
    for (char *const *e = envp; !file && e && *e; e++) {
        size_t n = strlen(KV_CONFIG_ENV_FILE);
        if (!strncmp(*e, KV_CONFIG_ENV_FILE, n) && (*e)[n] == '=' &&
            (*e)[n + 1]) {
            file = *e + n + 1;
            file_from = KV_CONFIG_ENV_FILE;
        }
    }
    if (file) {
        rv =
            set_value(cfg, find_opt("config", 6), file, FROM_CLI, file_from, 0);
        if (rv == KV_CONFIG_OK) {
            rv = read_file(cfg, cfg->file, file_from);
        }
        if (rv != KV_CONFIG_OK) {
            goto out;
        }
    }
    rv = read_env(cfg, envp);
    for (size_t k = 0; rv == KV_CONFIG_OK && k < n_given; k++) {
        if (opts[given[k].opt].kind == OPT_FILE) {
            continue;
        }
        char origin[140];
        snprintf(origin, sizeof origin, "--%s", opts[given[k].opt].name);
        rv = set_value(cfg, given[k].opt, given[k].text, FROM_CLI, origin, 0);
    }
    if (rv == KV_CONFIG_OK) {
        rv = check(cfg);
    }
out:
    free(given);
    return rv;
}

void kv_config_free(struct kv_config *cfg)
{
    if (cfg->values) {
        for (size_t i = 0; i < N_OPTS; i++) {
            free(cfg->values[i].text);
        }
        free(cfg->values);
        cfg->values = NULL;
    }
}

/* ---------------------------------------------------------------- help */

void kv_config_usage(FILE *f)
{
    fputs(usage_head, f);
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &opts[i];
        char head[80];
        snprintf(head, sizeof head, "  %s--%s%s%s",
                 !strcmp(o->name, "help") ? "-h, " : "", o->name,
                 o->arg ? " " : "", o->arg ? o->arg : "");
        const char *h = o->help;
        if (strlen(head) > 26) {
            fprintf(f, "%s\n", head);
        } else {
            const char *nl = strchr(h, '\n');
            int n = nl ? (int)(nl - h) : (int)strlen(h);
            fprintf(f, "%-27s%.*s\n", head, n, h);
            h = nl ? nl + 1 : h + n;
        }
        while (*h) {
            const char *nl = strchr(h, '\n');
            int n = nl ? (int)(nl - h) : (int)strlen(h);
            fprintf(f, "%27s%.*s\n", "", n, h);
            h = nl ? nl + 1 : h + n;
        }
    }
    fputs(usage_tail, f);
}

/* -------------------------------------------------------- print-config */

/* @s as a YAML scalar into @out (4 * strlen(s) + 3 bytes): plain when
 * that reads back the same, else double-quoted. */
static void quote_scalar(const char *s, char *out)
{
    bool plain = *s && !strchr("-?:,[]{}#&*!|>'\"%@`", s[0]);
    for (const char *p = s; *p && plain; p++) {
        plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                (*p >= '0' && *p <= '9') || strchr("._/:=,@+-", *p);
        plain &= !(*p == ':' && (p[1] == ' ' || !p[1]));
    }
    if (plain) {
        strcpy(out, s);
        return;
    }
    *out++ = '"';
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *out++ = '\\';
            *out++ = *p;
        } else if ((unsigned char)*p < 0x20) {
            out += sprintf(out, "\\x%02x", (unsigned char)*p);
        } else {
            *out++ = *p;
        }
    }
    *out++ = '"';
    *out = 0;
}

/* The list of ID=HOST:PORT in effect, from the hosts and ports given. */
static void format_members(const struct kv_node_config *c,
                           bool peers,
                           char *buf,
                           size_t size)
{
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < c->n_nodes && n < size; i++) {
        const char *h = peers ? c->peer_hosts[i] : c->hosts[i];
        bool v6 = strchr(h, ':') != NULL;
        int w = snprintf(buf + n, size - n, "%s%llu=%s%s%s:%u", i ? "," : "",
                         (unsigned long long)c->ids[i], v6 ? "[" : "", h,
                         v6 ? "]" : "", peers ? c->peer_ports[i] : c->ports[i]);
        n += w > 0 ? (size_t)w : 0;
    }
}

static void format_bytes(uint64_t v, char *buf, size_t size)
{
    static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};
    for (int k = 0; k < 4; k++) {
        unsigned shift = 40 - 10 * (unsigned)k;
        if (v && v % (1ull << shift) == 0) {
            snprintf(buf, size, "%llu%s", (unsigned long long)(v >> shift),
                     units[k]);
            return;
        }
    }
    snprintf(buf, size, "%llu", (unsigned long long)v);
}

void kv_config_print(const struct kv_config *cfg, FILE *f)
{
    const struct kv_node_config *c = &cfg->node;
    fprintf(f,
            "# kvserver's options in effect (kvserver --print-config).\n"
            "# Precedence: command line > environment (RAFTKV_SERVER_*) >\n"
            "# config file%s%s > default.\n",
            cfg->file ? " " : "", cfg->file ? cfg->file : "");
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &opts[i];
        if (o->flags & CLI_ONLY) {
            continue;
        }
        char buf[VALUE_MAX + 64];
        const char *value = buf;
        const char *from =
            cfg->values[i].text ? cfg->values[i].origin : "default";
        switch (o->kind) {
            case OPT_UINT:
                snprintf(buf, sizeof buf, "%llu",
                         (unsigned long long)(load_uint(cfg, o) >> o->shift));
                break;
            case OPT_BYTES: {
                uint64_t v;
                memcpy(&v, cfield(cfg, o), sizeof v);
                format_bytes(v, buf, sizeof buf);
                break;
            }
            case OPT_SWITCH: {
                bool v;
                memcpy(&v, cfield(cfg, o), sizeof v);
                value = v ? "true" : "false";
                break;
            }
            case OPT_LEVEL:
                value = level_names[cfg->log_level - RPC_LOG_DEBUG];
                break;
            default:
                memcpy(&value, cfield(cfg, o), sizeof value);
                break;
        }
        if (i == O_CLUSTER || (i == O_PEERS && !cfg->peers)) {
            format_members(c, i == O_PEERS, buf, sizeof buf);
            value = buf;
            from = i == O_PEERS ? "default: client ports + 1" : from;
        }
        if (i == O_PEER_LISTEN && !cfg->peer_listen) {
            bool v6 = strchr(c->peer_listen_host, ':') != NULL;
            snprintf(buf, sizeof buf, "%s%s%s:%u", v6 ? "[" : "",
                     c->peer_listen_host, v6 ? "]" : "", c->peer_listen_port);
            value = buf;
            from = "default: this node's --peers address";
        }
        if (o->off == offsetof(struct kv_config, node.lease_min_ttl_s) &&
            !cfg->values[i].text) {
            from = "default: 3 x election-ms, in whole seconds";
        }
        char where[40];
        if (cfg->values[i].text && cfg->values[i].layer == FROM_FILE) {
            snprintf(where, sizeof where, "line %u of the config file",
                     cfg->values[i].file_line);
            from = where;
        }
        if (!value) {
            fprintf(f, "# %s:%*s # not set\n", o->name,
                    27 - (int)strlen(o->name), "");
            continue;
        }
        char *quoted = malloc(4 * strlen(value) + 3);
        if (!quoted) {
            fprintf(f, "# out of memory\n");
            return;
        }
        quote_scalar(value, quoted);
        int pad = 28 - (int)strlen(o->name) - (int)strlen(quoted);
        fprintf(f, "%s: %s%*s # %s\n", o->name, quoted, pad > 0 ? pad : 0, "",
                from);
        free(quoted);
    }
}
