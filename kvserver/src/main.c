/* main.c: the kvserver command line. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lease.h"
#include "metrics.h"
#include "node.h"
#include "quota.h"
#include "raftkv_version.h"
#include "service.h"

static const char usage_text[] =
    "usage: kvserver --id N --cluster ID=HOST:PORT,... --data-dir DIR\n"
    "                --peer-secret-file FILE [options]\n"
    "\n"
    "One node of a raftkv cluster. Every node is started with the same\n"
    "--cluster list (client addresses) and --peers list (addresses where\n"
    "the nodes talk Raft to each other). A node serves clients on its\n"
    "--cluster address and the other nodes on its --peers address only.\n"
    "\n"
    "  --id N                   this node's id in --cluster (1..2^63)\n"
    "  --cluster LIST           all nodes' client addresses:\n"
    "                           1=127.0.0.1:7001,2=...  (1 to %d nodes)\n"
    "  --peers LIST             all nodes' peer addresses, same ids:\n"
    "                           1=127.0.0.1:7002,2=... (default: each node's\n"
    "                           client host, client port + 1)\n"
    "  --peer-listen HOST:PORT  where this node accepts peers (default: its\n"
    "                           own --peers address; 0.0.0.0:PORT for all)\n"
    "  --peer-secret-file FILE  the cluster's shared secret (16 bytes to\n"
    "                           4 KiB; the same file on every node; make one\n"
    "                           with: openssl rand -hex 32 > FILE; chmod "
    "600).\n"
    "                           Nodes prove they hold it before any Raft\n"
    "                           message is read. Required with 2+ nodes\n"
    "  --data-dir DIR           where this node keeps its data (created if\n"
    "                           missing; must belong to this cluster and id)\n"
    "  --heartbeat-ms MS        leader heartbeat interval (default 100)\n"
    "  --election-ms MS         election timeout base; the actual timeout is\n"
    "                           random in [MS, 2*MS) (default 500)\n"
    "  --request-timeout-ms MS  a write not applied by then is answered\n"
    "                           TIMEOUT, outcome unknown (default 3000)\n"
    "  --snapshot-entries N     compact the log once it holds more than N\n"
    "                           entries (default 10000)\n"
    "  --snapshot-trailing N    entries kept behind a compaction, so a\n"
    "                           slightly lagging follower needs no snapshot\n"
    "                           (default 1000)\n"
    "  --state-commit-ms MS     commit the applied state to LMDB at least\n"
    "                           this often (default 100); the log holds\n"
    "                           every committed write meanwhile\n"
    "  --wal-segment-mb N       size of one log segment file (default 64)\n"
    "  --max-sessions N         clients remembered for exactly-once writes;\n"
    "                           the least recently writing is forgotten first\n"
    "                           (default 100000)\n"
    "  --max-connections N      client connections open at once; more are\n"
    "                           accepted and closed at once (logged at most\n"
    "                           once a second). The other nodes' connections\n"
    "                           do not count. 0: no limit (default 10000)\n"
    "  --max-connections-per-source N\n"
    "                           client connections open at once from one\n"
    "                           address; more are closed at once. 0: no\n"
    "                           limit (default 1000)\n"
    "  --frame-timeout-ms MS    close a connection that starts a request and\n"
    "                           does not finish sending it within MS, or\n"
    "                           leaves more than --max-output-mb of replies\n"
    "                           unread for MS (slow or stuck clients).\n"
    "                           0: never (default 10000)\n"
    "  --idle-timeout-ms MS     close a client connection with nothing sent\n"
    "                           or pending for MS (clients reconnect by\n"
    "                           themselves). 0: never (default 300000)\n"
    "  --max-buffered-mb N      bytes all client connections may buffer\n"
    "                           together (requests read, replies unsent);\n"
    "                           over it, connections whose replies pile up\n"
    "                           unread stop being read until they drain.\n"
    "                           0: no budget (default 1024)\n"
    "  --max-output-mb N        unread replies one connection may hold; above\n"
    "                           it the node stops reading that connection's\n"
    "                           requests, at 4x it closes it (default 8)\n"
    "  --quota-bytes N          the leader refuses writes (NO_SPACE) that\n"
    "                           would grow the applied state past N bytes\n"
    "                           (512MiB, 8GiB: K, M, G, T are binary units);\n"
    "                           deletes are still accepted. 0: no quota\n"
    "                           (default 8GiB)\n"
    "  --history-revisions N    the leader compacts the history of changes\n"
    "                           (for resuming watches, docs/data-model.md)\n"
    "                           to the last N revisions (default 100000)\n"
    "  --history-bytes N        and to at most N bytes (256MiB: K, M, G, T\n"
    "                           are binary units; 0: no cap; default 256MiB)\n"
    "  --lease-min-ttl S        the shortest TTL of a lease, in seconds: a\n"
    "                           grant asking less gets S (default: 3 x\n"
    "                           --election-ms, rounded up to a second; a\n"
    "                           lease must outlive an election)\n"
    "  --auth-token-ttl-s S     tokens that clients get from Authenticate\n"
    "                           (users and roles, docs/auth.md) are valid\n"
    "                           for S seconds (default 300)\n"
    "  --log-level LEVEL        debug, info, warn or error (default info)\n"
    "  --restore FILE           fill the empty --data-dir with a snapshot\n"
    "                           saved by `kvctl snapshot save`, then exit\n"
    "  --metrics-addr HOST:PORT serve Prometheus metrics at /metrics and a\n"
    "                           health check at /health (default: off)\n"
    "  --tls-cert FILE          serve clients over TLS with this PEM\n"
    "                           certificate (chain) ...\n"
    "  --tls-key FILE           ... and its key\n"
    "  --tls-client-auth        require client certificates signed by\n"
    "                           --tls-ca; the certificate's CN is the user\n"
    "  --tls-ca FILE            CA certificates for client certificates\n"
    "  --peer-tls-cert FILE     talk to peers over mutual TLS: this node's\n"
    "                           certificate (it must name its --peers\n"
    "                           address), ...\n"
    "  --peer-tls-key FILE      ... its key, ...\n"
    "  --peer-tls-ca FILE       ... and the CA that signs every node's\n"
    "  --peer-tls-allowed-names LIST\n"
    "                           peers' certificates must carry one of these\n"
    "                           names (comma-separated; default: any name\n"
    "                           the CA signed). The peer secret is still\n"
    "                           needed: it binds each connection to a node id\n"
    "                           SIGHUP reloads every certificate and key\n"
    "                           for new connections\n"
    "  --enable-fault-injection accept fault commands (kvctl fault): drop,\n"
    "                           delay, duplicate or cut this node's traffic.\n"
    "                           For tests; never on a production cluster\n"
    "  -h, --help               this text\n"
    "  --version                print kvserver's version and exit\n"
    "\n"
    "SIGTERM or SIGINT stops the node cleanly. Exit status: 0 after a clean\n"
    "stop, 1 when the node cannot start or finds its data damaged, 2 for a\n"
    "bad command line.\n";

static void die_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "kvserver: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see kvserver --help)\n");
    exit(2);
}

static uint64_t parse_u64(const char *opt,
                          const char *s,
                          uint64_t min,
                          uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "%s wants a whole number from %llu to %llu, not '%%s'", opt,
                 (unsigned long long)min, (unsigned long long)max);
        die_usage(msg, s);
    }
    return v;
}

/* Split "host:port" or "[v6]:port"; host must have room for 256 bytes. */
static void parse_hostport(const char *opt,
                           char *item,
                           char *host,
                           uint16_t *port)
{
    char *colon = strrchr(item, ':');
    if (!colon || colon == item) {
        char msg[120];
        snprintf(msg, sizeof msg, "%s wants HOST:PORT, not '%%s'", opt);
        die_usage(msg, item);
    }
    *colon = 0;
    char *h = item;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = 0;
        h++;
    }
    if (strlen(h) >= 256) {
        die_usage("host '%s' is too long", h);
    }
    snprintf(host, 256, "%s", h);
    *port = (uint16_t)parse_u64(opt, colon + 1, 1, 65535);
}

/* Parse --peers "1=host:port,..." into peer_hosts/peer_ports, by the ids
 * --cluster gave. */
static void parse_peers(struct kv_node_config *c, const char *list)
{
    bool seen[KV_MAX_NODES] = {false};
    char *copy = strdup(list);
    if (!copy) {
        fprintf(stderr, "kvserver: out of memory\n");
        exit(1);
    }
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) {
            die_usage("--peers item '%s' is not ID=HOST:PORT", item);
        }
        *eq = 0;
        uint64_t id = parse_u64("--peers id", item, 1, INT64_MAX);
        size_t i = 0;
        while (i < c->n_nodes && c->ids[i] != id) {
            i++;
        }
        if (i == c->n_nodes) {
            die_usage("--peers names node %s, which is not in --cluster", item);
        }
        if (seen[i]) {
            die_usage("--peers names node %s twice", item);
        }
        seen[i] = true;
        parse_hostport("--peers", eq + 1, c->peer_hosts[i], &c->peer_ports[i]);
    }
    free(copy);
    for (size_t i = 0; i < c->n_nodes; i++) {
        if (!seen[i]) {
            char id[32];
            snprintf(id, sizeof id, "%llu", (unsigned long long)c->ids[i]);
            die_usage("--peers has no address for node %s", id);
        }
    }
}

/* Parse "1=host:port,2=host:port" into the config. */
static void parse_cluster(struct kv_node_config *c, const char *list)
{
    char *copy = strdup(list);
    if (!copy) {
        fprintf(stderr, "kvserver: out of memory\n");
        exit(1);
    }
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        if (c->n_nodes == KV_MAX_NODES) {
            die_usage("--cluster has more than 9 nodes%s", "");
        }
        char *eq = strchr(item, '=');
        if (!eq) {
            die_usage("--cluster item '%s' is not ID=HOST:PORT", item);
        }
        *eq = 0;
        size_t i = c->n_nodes;
        c->ids[i] = parse_u64("--cluster id", item, 1, INT64_MAX);
        parse_hostport("--cluster", eq + 1, c->hosts[i], &c->ports[i]);
        for (size_t j = 0; j < i; j++) {
            if (c->ids[j] == c->ids[i]) {
                die_usage("--cluster names node %s twice", item);
            }
        }
        c->n_nodes++;
    }
    free(copy);
    if (c->n_nodes == 0) {
        die_usage("--cluster is empty%s", "");
    }
}

int main(int argc, char **argv)
{
    struct kv_node_config c = {
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
        .max_output = 8u << 20,
        .max_buffered = (size_t)1 << 30,
        .quota_bytes = KV_QUOTA_DEFAULT,
        .history_revisions = 100000,
        .history_bytes = 256u << 20,
    };
    const char *cluster = NULL;
    const char *peers = NULL;
    const char *peer_listen = NULL;
    const char *restore = NULL;
    int level = RPC_LOG_INFO;
    bool have_id = false;
    static const struct option opts[] = {
        {"id", required_argument, NULL, 'i'},
        {"cluster", required_argument, NULL, 'c'},
        {"peers", required_argument, NULL, 'P'},
        {"peer-listen", required_argument, NULL, 'L'},
        {"peer-secret-file", required_argument, NULL, 's'},
        {"data-dir", required_argument, NULL, 'd'},
        {"heartbeat-ms", required_argument, NULL, 'H'},
        {"election-ms", required_argument, NULL, 'E'},
        {"request-timeout-ms", required_argument, NULL, 'T'},
        {"snapshot-entries", required_argument, NULL, 'S'},
        {"snapshot-trailing", required_argument, NULL, 't'},
        {"max-sessions", required_argument, NULL, 'm'},
        {"max-connections", required_argument, NULL, 'N'},
        {"max-connections-per-source", required_argument, NULL, 'x'},
        {"frame-timeout-ms", required_argument, NULL, 'f'},
        {"idle-timeout-ms", required_argument, NULL, 'I'},
        {"max-output-mb", required_argument, NULL, 'O'},
        {"max-buffered-mb", required_argument, NULL, 'B'},
        {"auth-token-ttl-s", required_argument, NULL, 'A'},
        {"quota-bytes", required_argument, NULL, 'Q'},
        {"state-commit-ms", required_argument, NULL, 'C'},
        {"wal-segment-mb", required_argument, NULL, 'W'},
        {"metrics-addr", required_argument, NULL, 'M'},
        {"restore", required_argument, NULL, 'R'},
        {"log-level", required_argument, NULL, 'l'},
        {"enable-fault-injection", no_argument, NULL, 'F'},
        {"tls-cert", required_argument, NULL, 1001},
        {"tls-key", required_argument, NULL, 1002},
        {"tls-ca", required_argument, NULL, 1003},
        {"tls-client-auth", no_argument, NULL, 1004},
        {"peer-tls-cert", required_argument, NULL, 1005},
        {"peer-tls-key", required_argument, NULL, 1006},
        {"peer-tls-ca", required_argument, NULL, 1007},
        {"peer-tls-allowed-names", required_argument, NULL, 1008},
        {"history-revisions", required_argument, NULL, 1009},
        {"history-bytes", required_argument, NULL, 1010},
        {"lease-min-ttl", required_argument, NULL, 1011},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0},
    };
    /* The file options 1001-1008 (1004 is a switch), in that order. */
    const char **tls_files[] = {
        &c.tls.cert_file,      &c.tls.key_file,
        &c.tls.ca_file,        NULL,
        &c.peer_tls.cert_file, &c.peer_tls.key_file,
        &c.peer_tls.ca_file,   &c.peer_tls.allowed_names,
    };
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
            case 'i':
                c.id = parse_u64("--id", optarg, 1, INT64_MAX);
                have_id = true;
                break;
            case 'c':
                cluster = optarg;
                break;
            case 'P':
                peers = optarg;
                break;
            case 'L':
                peer_listen = optarg;
                break;
            case 's':
                c.peer_secret_file = optarg;
                break;
            case 'd':
                c.data_dir = optarg;
                break;
            case 'H':
                c.heartbeat_ms =
                    (unsigned)parse_u64("--heartbeat-ms", optarg, 1, 60000);
                break;
            case 'E':
                c.election_ms =
                    (unsigned)parse_u64("--election-ms", optarg, 2, 600000);
                break;
            case 'T':
                c.request_timeout_ms = (unsigned)parse_u64(
                    "--request-timeout-ms", optarg, 1, 3600000);
                break;
            case 'S':
                c.snapshot_entries =
                    parse_u64("--snapshot-entries", optarg, 1, UINT32_MAX);
                break;
            case 't':
                c.snapshot_trailing =
                    parse_u64("--snapshot-trailing", optarg, 0, UINT32_MAX);
                break;
            case 'R':
                restore = optarg;
                break;
            case 'M': {
                char host[256];
                uint16_t port;
                if (metrics_parse_addr(optarg, host, &port) != 0) {
                    die_usage("--metrics-addr wants HOST:PORT, not '%s'",
                              optarg);
                }
                c.metrics_addr = optarg;
                break;
            }
            case 'C':
                c.state_commit_ms =
                    (unsigned)parse_u64("--state-commit-ms", optarg, 1, 60000);
                break;
            case 'W':
                c.wal_segment_bytes =
                    parse_u64("--wal-segment-mb", optarg, 1, 4096) << 20;
                break;
            case 'm':
                c.max_sessions =
                    parse_u64("--max-sessions", optarg, 1, UINT32_MAX);
                break;
            case 'N':
                c.max_connections = (unsigned)parse_u64("--max-connections",
                                                        optarg, 0, 1000000);
                break;
            case 'x':
                c.max_per_source = (unsigned)parse_u64(
                    "--max-connections-per-source", optarg, 0, 1000000);
                break;
            case 'f':
                c.frame_timeout_ms = (unsigned)parse_u64("--frame-timeout-ms",
                                                         optarg, 0, 3600000);
                break;
            case 'I':
                c.idle_timeout_ms = (unsigned)parse_u64("--idle-timeout-ms",
                                                        optarg, 0, 86400000);
                break;
            case 'A':
                c.auth_token_ttl_s =
                    parse_u64("--auth-token-ttl-s", optarg, 1, 30 * 86400);
                break;
            case 1009:
                c.history_revisions =
                    parse_u64("--history-revisions", optarg, 1, UINT64_MAX / 2);
                break;
            case 1011:
                c.lease_min_ttl_s = (int64_t)parse_u64(
                    "--lease-min-ttl", optarg, 1, KV_LEASE_MAX_TTL);
                break;
            case 1010:
                if (kv_quota_parse(optarg, &c.history_bytes) != 0) {
                    die_usage(
                        "--history-bytes wants a number of bytes, "
                        "optionally with K, M, G or T (256MiB), not '%s'",
                        optarg);
                }
                break;
            case 'Q':
                if (kv_quota_parse(optarg, &c.quota_bytes) != 0) {
                    die_usage(
                        "--quota-bytes wants a number of bytes, "
                        "optionally with K, M, G or T (512MiB, 8GiB), "
                        "not '%s'",
                        optarg);
                }
                break;
            case 'B':
                c.max_buffered =
                    parse_u64("--max-buffered-mb", optarg, 0, 1u << 20) << 20;
                break;
            case 'O':
                c.max_output = parse_u64("--max-output-mb", optarg, 1, 1024)
                               << 20;
                break;
            case 'l':
                if (!strcmp(optarg, "debug")) {
                    level = RPC_LOG_DEBUG;
                } else if (!strcmp(optarg, "info")) {
                    level = RPC_LOG_INFO;
                } else if (!strcmp(optarg, "warn")) {
                    level = RPC_LOG_WARN;
                } else if (!strcmp(optarg, "error")) {
                    level = RPC_LOG_ERROR;
                } else {
                    die_usage(
                        "--log-level wants debug, info, warn or error, "
                        "not '%s'",
                        optarg);
                }
                break;
            case 'F':
                c.fault_injection = true;
                break;
            case 1001:
            case 1002:
            case 1003:
            case 1005:
            case 1006:
            case 1007:
            case 1008:
                *tls_files[o - 1001] = optarg;
                break;
            case 1004:
                c.tls.verify_peer = true;
                break;
            case 'h':
                printf(usage_text, KV_MAX_NODES);
                return 0;
            case 'V':
                fputs(RAFTKV_VERSION_LINE("kvserver"), stdout);
                return 0;
            case ':':
                die_usage("option %s needs a value", argv[optind - 1]);
            /* fallthrough */
            default:
                die_usage("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        die_usage("unexpected argument '%s'", argv[optind]);
    }
    if (!have_id) {
        die_usage("--id is required%s", "");
    }
    if (!cluster) {
        die_usage("--cluster is required%s", "");
    }
    if (!c.data_dir) {
        die_usage("--data-dir is required%s", "");
    }
    parse_cluster(&c, cluster);
    bool found = false;
    for (size_t i = 0; i < c.n_nodes; i++) {
        found |= c.ids[i] == c.id;
    }
    if (!found) {
        char id[32];
        snprintf(id, sizeof id, "%llu", (unsigned long long)c.id);
        die_usage("--id %s is not in --cluster", id);
    }
    if (peers) {
        parse_peers(&c, peers);
    } else {
        for (size_t i = 0; i < c.n_nodes; i++) {
            if (c.ports[i] == 65535) {
                die_usage(
                    "--cluster port 65535 leaves no port + 1 for the "
                    "default peer address: give --peers%s",
                    "");
            }
            snprintf(c.peer_hosts[i], sizeof c.peer_hosts[i], "%s", c.hosts[i]);
            c.peer_ports[i] = (uint16_t)(c.ports[i] + 1);
        }
    }
    for (size_t i = 0; i < c.n_nodes; i++) {
        for (size_t j = 0; j < c.n_nodes; j++) {
            if (c.ports[i] == c.peer_ports[j] &&
                !strcmp(c.hosts[i], c.peer_hosts[j])) {
                char a[300];
                snprintf(a, sizeof a, "%s:%u", c.hosts[i], c.ports[i]);
                die_usage(
                    "%s is both a client and a peer address; clients "
                    "and peers need their own ports",
                    a);
            }
        }
        if (c.ids[i] == c.id) {
            snprintf(c.peer_listen_host, sizeof c.peer_listen_host, "%s",
                     c.peer_hosts[i]);
            c.peer_listen_port = c.peer_ports[i];
        }
    }
    if (peer_listen) {
        char *copy = strdup(peer_listen);
        if (!copy) {
            fprintf(stderr, "kvserver: out of memory\n");
            return 1;
        }
        parse_hostport("--peer-listen", copy, c.peer_listen_host,
                       &c.peer_listen_port);
        free(copy);
    }
    if (c.n_nodes > 1 && !c.peer_secret_file && !restore) {
        die_usage(
            "a cluster of several nodes needs --peer-secret-file: the "
            "same secret file on every node, so that nothing but its "
            "members can send Raft messages (make one with: openssl "
            "rand -hex 32 > FILE)%s",
            "");
    }
    if (!!c.tls.cert_file != !!c.tls.key_file) {
        die_usage("--tls-cert and --tls-key go together%s", "");
    }
    if (c.tls.verify_peer && (!c.tls.ca_file || !c.tls.cert_file)) {
        die_usage(
            "--tls-client-auth needs --tls-cert, --tls-key and "
            "--tls-ca%s",
            "");
    }
    if (c.tls.ca_file && !c.tls.verify_peer) {
        die_usage(
            "--tls-ca is for client certificates: add "
            "--tls-client-auth%s",
            "");
    }
    bool any_peer_tls = c.peer_tls.cert_file || c.peer_tls.key_file ||
                        c.peer_tls.ca_file || c.peer_tls.allowed_names;
    if (any_peer_tls && (!c.peer_tls.cert_file || !c.peer_tls.key_file ||
                         !c.peer_tls.ca_file)) {
        die_usage(
            "peer TLS needs --peer-tls-cert, --peer-tls-key and "
            "--peer-tls-ca%s",
            "");
    }
    if (c.heartbeat_ms >= c.election_ms) {
        die_usage("--heartbeat-ms must be below --election-ms%s", "");
    }
    if (c.lease_min_ttl_s == 0) {
        c.lease_min_ttl_s = (int64_t)((3ull * c.election_ms + 999) / 1000);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c.seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
             ((uint64_t)getpid() << 40) ^ c.id;
    rpc_log_set_level(level);
    char prefix[40];
    snprintf(prefix, sizeof prefix, "node %llu: ", (unsigned long long)c.id);
    rpc_log_set_prefix(prefix);
    signal(SIGPIPE, SIG_IGN);
    if (restore) {
        return kv_restore_file(&c, restore);
    }
    struct kv_node *n;
    if (kv_node_open(&c, &n) != 0) {
        return 1;
    }
    struct kv_services *services;
    int rv = kv_services_open(n, &services) == 0 ? kv_node_run(n) : 1;
    kv_node_close(n); /* tells the services that the node stops */
    kv_services_free(services);
    return rv;
}
