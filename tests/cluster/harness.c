/* harness.c: start, kill and pause kvserver processes; a retrying client. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sched.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/CUnit.h>
#include <rpc/rpc.h>

#include "cunit_main.h"
#include "diskfault_ctl.h"
#include "harness.h"

#ifndef KVSERVER_PATH
#error "KVSERVER_PATH must name the kvserver binary"
#endif

/* Ports the harness gives nodes: below the kernel's ephemeral range
 * (32768 and up), so that a connection some process opens meanwhile never
 * takes the port of a node that is down for a restart; 20000 and up are
 * the install tests' (tests/install). */
#define PORT_LOW  10000u
#define PORT_HIGH 20000u

/* Ports are reserved across the test processes that run at once (ctest
 * -j2): a lock file per port under PORT_LOCK_DIR, flock()ed while a
 * cluster of this process may use the port, released when it is destroyed
 * (or by the kernel when the process ends). A bind only proves a port free
 * now: a node of another process that is down for a restart leaves its
 * port free, and once two clusters that got one port answered each other's
 * clients (faults_lab and faults_nemesis in one CI run). */
#define PORT_LOCK_DIR "/tmp/raftkv-test-ports"

static pthread_mutex_t port_mu = PTHREAD_MUTEX_INITIALIZER;
static struct
{
    int fd;                    /* the flock()ed lock file, or 0: not ours */
    const struct h_cluster *c; /* the cluster that has it */
} port_res[PORT_HIGH - PORT_LOW];

bool h_port_reserve(uint16_t port, const struct h_cluster *c)
{
    if (port < PORT_LOW || port >= PORT_HIGH) {
        return false;
    }
    pthread_mutex_lock(&port_mu);
    bool ok = false;
    if (port_res[port - PORT_LOW].fd == 0) {
        char path[64];
        mkdir(PORT_LOCK_DIR, 01777);
        snprintf(path, sizeof path, PORT_LOCK_DIR "/%u", (unsigned)port);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0) {
            port_res[port - PORT_LOW].fd = fd;
            port_res[port - PORT_LOW].c = c;
            ok = true;
        } else if (fd >= 0) {
            close(fd); /* another process's */
        }
    }
    pthread_mutex_unlock(&port_mu);
    return ok;
}

void h_port_release(uint16_t port)
{
    if (port < PORT_LOW || port >= PORT_HIGH) {
        return;
    }
    pthread_mutex_lock(&port_mu);
    if (port_res[port - PORT_LOW].fd > 0) {
        close(port_res[port - PORT_LOW].fd); /* (drops the lock) */
        port_res[port - PORT_LOW].fd = 0;
        port_res[port - PORT_LOW].c = NULL;
    }
    pthread_mutex_unlock(&port_mu);
}

/* Release every port cluster c reserved. */
static void release_ports(const struct h_cluster *c)
{
    for (unsigned p = PORT_LOW; p < PORT_HIGH; p++) {
        if (port_res[p - PORT_LOW].c == c) {
            h_port_release((uint16_t)p);
        }
    }
}

/* A free port on host, reserved for cluster c (h_port_reserve), and the
 * socket holding it (close it once every node has its port). */
static uint16_t free_port(const struct h_cluster *c,
                          const char *host,
                          int *held)
{
    static unsigned seed;
    if (!seed) {
        seed = (unsigned)getpid() ^ (unsigned)h_now_ms();
    }
    *held = -1;
    for (int tries = 0; tries < 1000; tries++) {
        uint16_t port = (uint16_t)(PORT_LOW + (unsigned)rand_r(&seed) %
                                                  (PORT_HIGH - PORT_LOW));
        if (!h_port_reserve(port, c)) {
            continue; /* this process's already, or another's */
        }
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            h_port_release(port);
            return 0;
        }
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(port)};
        inet_pton(AF_INET, host, &sa.sin_addr);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            *held = fd;
            return port;
        }
        close(fd);
        h_port_release(port);
    }
    return 0;
}

/* A fresh random peer secret, readable by its owner only. */
static int write_secret(const char *path)
{
    uint8_t raw[32];
    char hex[65];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        perror("getrandom");
        return -1;
    }
    for (size_t i = 0; i < sizeof raw; i++) {
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, hex, 64) != 64) {
        perror(path);
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    close(fd);
    return 0;
}

struct rpc_channel *h_peer_channel(struct h_cluster *c,
                                   size_t i,
                                   size_t as,
                                   uint32_t deadline_ms)
{
    struct rpc_peer_auth *a = &c->as_member[as];
    char err[600];
    if (rpc_peer_key_from_file(c->secret, a->key, err, sizeof err) != 0) {
        fprintf(stderr, "harness: %s\n", err);
        return NULL;
    }
    a->self_id = c->nodes[as].id;
    a->cluster_id = 0; /* learn nothing: any cluster of this secret */
    struct rpc_channel_options o = {
        .deadline_ms = deadline_ms,
        .peer_auth = a,
        .peer_id = c->nodes[i].id,
        .tls = c->peer_tls,
    };
    return rpc_channel_new_blocking(c->nodes[i].host, c->nodes[i].peer_port,
                                    &o);
}

/* scripts/certs.sh CMD DIR [NAME [ADDR]] */
static int run_certs(const char *cmd,
                     const char *dir,
                     const char *name,
                     const char *addr)
{
    char line[1200];
    snprintf(line, sizeof line, "%s %s %s %s %s", CERTS_SH, cmd, dir,
             name ? name : "", addr ? addr : "");
    if (system(line) != 0) {
        fprintf(stderr, "harness: %s failed\n", line);
        return -1;
    }
    return 0;
}

/* Certificates for every node (naming its address) and for clients, the
 * TLS flags, and the contexts of h_client and h_peer_channel. */
static int tls_setup(struct h_cluster *c)
{
    char err[600], crt[400], key[400], ca[400];
    for (size_t i = 0; i < c->n; i++) {
        char name[32];
        snprintf(name, sizeof name, "node%zu", i + 1);
        if (run_certs("node", c->certs, name, c->nodes[i].host) != 0) {
            return -1;
        }
    }
    if (run_certs("client", c->certs, "root", NULL) != 0) {
        return -1;
    }
    snprintf(ca, sizeof ca, "%s/ca.crt", c->certs);
    struct rpc_tls_options co = {.ca_file = ca, .verify_peer = true};
    snprintf(crt, sizeof crt, "%s/node1.crt", c->certs);
    snprintf(key, sizeof key, "%s/node1.key", c->certs);
    struct rpc_tls_options po = {
        .ca_file = ca, .verify_peer = true, .cert_file = crt, .key_file = key};
    if (rpc_tls_new(&co, &c->client_tls, err, sizeof err) != 0 ||
        rpc_tls_new(&po, &c->peer_tls, err, sizeof err) != 0) {
        fprintf(stderr, "harness: %s\n", err);
        return -1;
    }
    return 0;
}

static int spawn_node(struct h_cluster *c, size_t i)
{
    struct h_node *nd = &c->nodes[i];
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)nd->id);
    char *argv[56];
    int argc = 0;
    argv[argc++] = "kvserver";
    argv[argc++] = "--id";
    argv[argc++] = id;
    char own_cluster[128], own_peers[128];
    snprintf(own_cluster, sizeof own_cluster, "%s=%s:%u", id, nd->host,
             nd->port);
    snprintf(own_peers, sizeof own_peers, "%s=%s:%u", id, nd->host,
             nd->peer_port);
    argv[argc++] = "--cluster";
    argv[argc++] = nd->joins ? own_cluster : c->cluster_arg;
    argv[argc++] = "--peers";
    argv[argc++] = nd->joins ? own_peers : c->peers_arg;
    if (nd->joins) {
        argv[argc++] = "--join";
    }
    argv[argc++] = "--peer-secret-file";
    argv[argc++] = c->secret;
    char tls[6][400];
    if (c->tls) {
        snprintf(tls[0], sizeof tls[0], "%s/node%zu.crt", c->certs, i + 1);
        snprintf(tls[1], sizeof tls[1], "%s/node%zu.key", c->certs, i + 1);
        snprintf(tls[2], sizeof tls[2], "%s/ca.crt", c->certs);
        argv[argc++] = "--tls-cert";
        argv[argc++] = tls[0];
        argv[argc++] = "--tls-key";
        argv[argc++] = tls[1];
        argv[argc++] = "--peer-tls-cert";
        argv[argc++] = tls[0];
        argv[argc++] = "--peer-tls-key";
        argv[argc++] = tls[1];
        argv[argc++] = "--peer-tls-ca";
        argv[argc++] = tls[2];
    }
    argv[argc++] = "--data-dir";
    argv[argc++] = nd->dir;
    char metrics[64], listen[2][64];
    snprintf(metrics, sizeof metrics, "%s:%u",
             nd->netns[0] ? "0.0.0.0" : nd->host, nd->metrics_port);
    argv[argc++] = "--metrics-addr";
    argv[argc++] = metrics;
    if (nd->netns[0]) {
        /* Inside its host: every address, reached at nd->host. */
        snprintf(listen[0], sizeof listen[0], "0.0.0.0:%u", nd->port);
        snprintf(listen[1], sizeof listen[1], "0.0.0.0:%u", nd->peer_port);
        argv[argc++] = "--listen";
        argv[argc++] = listen[0];
        argv[argc++] = "--peer-listen";
        argv[argc++] = listen[1];
    }
    char extra[sizeof c->extra + sizeof nd->own_extra + 2];
    snprintf(extra, sizeof extra, "%s %s", c->extra, nd->own_extra);
    char *save = NULL;
    for (char *t = strtok_r(extra, " ", &save); t && argc < 54;
         t = strtok_r(NULL, " ", &save)) {
        argv[argc++] = t;
    }
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (c->diskfault && df_setenv(nd->dir, nd->rules, nd->trace) != DF_OK) {
            _exit(126);
        }
        if (nd->netns[0]) {
            int ns = open(nd->netns, O_RDONLY | O_CLOEXEC);
            if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
                perror(nd->netns);
                _exit(125);
            }
            close(ns);
        }
        int fd = open(nd->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        /* The node's options are the harness's alone: no RAFTKV_SERVER_*
         * from the environment (config.h). In place, without allocating
         * (this is a child of a threaded process). */
        char **w = environ;
        for (char **r = environ; *r; r++) {
            if (strncmp(*r, "RAFTKV_SERVER_", 14) != 0) {
                *w++ = *r;
            }
        }
        *w = NULL;
        execv(KVSERVER_PATH, argv);
        perror("exec kvserver");
        _exit(127);
    }
    nd->pid = pid;
    nd->stopped = false;
    return 0;
}

/* Does host:port accept a TCP connection now? */
static bool accepts(const char *host, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* Does process pid hold the socket listening on TCP port (IPv4)? Read
 * from /proc: the listener's inode in /proc/net/tcp, then pid's fds. */
static bool listens_itself(pid_t pid, uint16_t port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f) {
        return true; /* cannot tell: assume so */
    }
    unsigned long inodes[16];
    size_t n = 0;
    char line[512];
    while (fgets(line, sizeof line, f) && n < 16) {
        unsigned lport, st;
        unsigned long ino;
        if (sscanf(line,
                   " %*u: %*x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu",
                   &lport, &st, &ino) == 3 &&
            lport == port && st == 0x0A) {
            inodes[n++] = ino;
        }
    }
    fclose(f);
    char dir[64], path[400], target[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof path, "%s/%d", dir, fd);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len <= 0) {
            continue;
        }
        target[len] = 0;
        unsigned long ino;
        if (sscanf(target, "socket:[%lu]", &ino) != 1) {
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            if (inodes[k] == ino) {
                return true;
            }
        }
    }
    return false;
}

/* Has the child pid run kvserver yet (not still a copy of this process)? */
static bool runs_kvserver(pid_t pid)
{
    char path[64], exe[PATH_MAX], want[PATH_MAX];
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    ssize_t len = readlink(path, exe, sizeof exe - 1);
    if (len <= 0 || !realpath(KVSERVER_PATH, want)) {
        return true; /* cannot tell: assume so */
    }
    exe[len] = 0;
    /* A binary replaced (rebuilt) since the child ran it still counts. */
    static const char deleted[] = " (deleted)";
    size_t dl = sizeof deleted - 1;
    if ((size_t)len > dl && strcmp(exe + len - dl, deleted) == 0) {
        exe[len - dl] = 0;
    }
    return strcmp(exe, want) == 0;
}

int h_node_spawn(struct h_cluster *c, size_t i)
{
    return spawn_node(c, i);
}

int h_node_start(struct h_cluster *c, size_t i)
{
    struct h_node *nd = &c->nodes[i];
    if (spawn_node(c, i) != 0) {
        return -1;
    }
    /* Started means listening: poll its port until it accepts, or the
     * process has exited (a node that refuses its data, flags or port). */
    uint64_t end = h_now_ms() + H_START_TIMEOUT_MS;
    for (;;) {
        int status;
        if (waitpid(nd->pid, &status, WNOHANG) == nd->pid) {
            nd->pid = 0;
            fprintf(stderr,
                    "harness: node %llu exited at start (%s %d) before "
                    "listening on %s:%u; its log: %s\n",
                    (unsigned long long)nd->id,
                    WIFEXITED(status) ? "status" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                    nd->host, nd->port, nd->log);
            c->keep = true;
            return -1;
        }
        /* Both listeners: a node that got its client port but not its
         * peer port exits at once, and must not count as started. */
        if (accepts(nd->host, nd->port) &&
            (c->n == 1 || accepts(nd->host, nd->peer_port))) {
            /* And its own: another process on its port (which took it
             * while the node was down) would answer its clients. (Until
             * the child has run kvserver, it holds copies of this
             * process's sockets: wait for that first.) */
            if (!nd->netns[0] && !runs_kvserver(nd->pid) && h_now_ms() < end) {
                h_sleep_ms(1);
                continue;
            }
            if (!nd->netns[0] && !listens_itself(nd->pid, nd->port)) {
                fprintf(stderr,
                        "harness: node %llu (pid %d): another process "
                        "listens on its port %s:%u; its log: %s\n",
                        (unsigned long long)nd->id, (int)nd->pid, nd->host,
                        nd->port, nd->log);
                h_node_kill(c, i);
                c->keep = true;
                return -1;
            }
            return 0;
        }
        if (h_now_ms() >= end) {
            fprintf(stderr,
                    "harness: node %llu (pid %d) did not listen on %s:%u "
                    "within %d ms; its log: %s\n",
                    (unsigned long long)nd->id, (int)nd->pid, nd->host,
                    nd->port, H_START_TIMEOUT_MS, nd->log);
            c->keep = true;
            return -1;
        }
        h_sleep_ms(10);
    }
}

/* A node on a host of its own: the same ports as every other. */
static void host_ports(struct h_node *nd)
{
    nd->port = H_HOST_PORT;
    nd->peer_port = H_HOST_PORT + 1;
    nd->metrics_port = H_HOST_PORT + 2;
}

int h_node_add(struct h_cluster *c)
{
    if (c->n == H_MAX_NODES) {
        fprintf(stderr, "harness: no room for another node\n");
        return -1;
    }
    size_t i = c->n;
    struct h_node *nd = &c->nodes[i];
    memset(nd, 0, sizeof *nd);
    uint64_t id = 0;
    for (size_t k = 0; k < c->n; k++) {
        id = c->nodes[k].id > id ? c->nodes[k].id : id;
    }
    nd->id = id + 1;
    nd->joins = true;
    if (c->new_host) {
        if (c->new_host(c, i) != 0) {
            return -1;
        }
        host_ports(nd);
    } else {
        snprintf(nd->host, sizeof nd->host, "%s", c->nodes[0].host);
        int held[3];
        nd->port = free_port(c, nd->host, &held[0]);
        nd->metrics_port = free_port(c, nd->host, &held[1]);
        nd->peer_port = free_port(c, nd->host, &held[2]);
        for (int k = 0; k < 3; k++) {
            if (held[k] >= 0) {
                close(held[k]);
            }
        }
        if (!nd->port || !nd->metrics_port || !nd->peer_port) {
            return -1;
        }
    }
    snprintf(nd->dir, sizeof nd->dir, "%s/node%llu", c->root,
             (unsigned long long)nd->id);
    snprintf(nd->log, sizeof nd->log, "%s/node%llu.log", c->root,
             (unsigned long long)nd->id);
    snprintf(nd->rules, sizeof nd->rules, "%s/node%llu.rules", c->root,
             (unsigned long long)nd->id);
    snprintf(nd->trace, sizeof nd->trace, "%s/node%llu.trace", c->root,
             (unsigned long long)nd->id);
    c->n++;
    return (int)i;
}

int h_node_move(struct h_cluster *c, size_t i)
{
    struct h_node *nd = &c->nodes[i];
    int held[2];
    nd->port = free_port(c, nd->host, &held[0]);
    nd->peer_port = free_port(c, nd->host, &held[1]);
    for (int k = 0; k < 2; k++) {
        if (held[k] >= 0) {
            close(held[k]);
        }
    }
    /* Its flags name only its own addresses from now on. */
    nd->joins = true;
    return nd->port && nd->peer_port ? 0 : -1;
}

void h_node_addr(const struct h_cluster *c, size_t i, char *out, size_t len)
{
    snprintf(out, len, "%s:%u", c->nodes[i].host, c->nodes[i].port);
}

void h_node_peer_addr(const struct h_cluster *c,
                      size_t i,
                      char *out,
                      size_t len)
{
    snprintf(out, len, "%s:%u", c->nodes[i].host, c->nodes[i].peer_port);
}

int h_cluster_start(struct h_cluster *c, size_t n, const char *extra)
{
    return h_cluster_start_hosts(c, n, extra, false);
}

void h_endpoints(const struct h_cluster *c, char *out, size_t len)
{
    h_endpoints_of(c, UINT32_MAX, 0, out, len);
}

void h_endpoints_of(const struct h_cluster *c,
                    uint32_t mask,
                    size_t first,
                    char *out,
                    size_t len)
{
    size_t off = 0;
    out[0] = 0;
    for (size_t k = 0; k < c->n && off < len; k++) {
        size_t i = (first + k) % c->n;
        if (mask & (1u << i)) {
            off += (size_t)snprintf(out + off, len - off, "%s%s:%u",
                                    off ? "," : "", c->nodes[i].host,
                                    c->nodes[i].port);
        }
    }
}

int h_cluster_start_hosts(struct h_cluster *c,
                          size_t n,
                          const char *extra,
                          bool distinct_hosts)
{
    struct h_start o = {.distinct_hosts = distinct_hosts};
    return h_cluster_start_with(c, n, extra, &o);
}

int h_cluster_start_with(struct h_cluster *c,
                         size_t n,
                         const char *extra,
                         const struct h_start *o)
{
    memset(c, 0, sizeof *c);
    bool distinct_hosts = o && o->distinct_hosts;
    c->diskfault = o && o->diskfault;
    snprintf(c->root, sizeof c->root, "/tmp/raftkv-test-XXXXXX");
    if (!mkdtemp(c->root)) {
        perror("mkdtemp");
        return -1;
    }
    snprintf(c->extra, sizeof c->extra, "%s", extra ? extra : "");
    c->n = n;
    size_t off = 0, poff = 0;
    int held[3 * H_MAX_NODES];
    snprintf(c->secret, sizeof c->secret, "%s/peer.secret", c->root);
    if (write_secret(c->secret) != 0) {
        return -1;
    }
    c->tls = o && o->tls;
    if (c->tls) {
        snprintf(c->certs, sizeof c->certs, "%s/certs", c->root);
        if (run_certs("ca", c->certs, NULL, NULL) != 0) {
            return -1;
        }
    }
    c->new_host = o ? o->new_host : NULL;
    c->drop_host = o ? o->drop_host : NULL;
    for (size_t i = 0; i < n; i++) {
        struct h_node *nd = &c->nodes[i];
        nd->id = i + 1;
        held[i] = held[H_MAX_NODES + i] = held[2 * H_MAX_NODES + i] = -1;
        if (c->new_host) {
            if (c->new_host(c, i) != 0) {
                return -1;
            }
            host_ports(nd);
        } else {
            snprintf(nd->host, sizeof nd->host, "127.0.0.%zu",
                     distinct_hosts ? 11 + i : 1);
            nd->port = free_port(c, nd->host, &held[i]);
            nd->metrics_port = free_port(c, nd->host, &held[H_MAX_NODES + i]);
            nd->peer_port = free_port(c, nd->host, &held[2 * H_MAX_NODES + i]);
        }
        snprintf(nd->dir, sizeof nd->dir, "%s/node%zu", c->root, i + 1);
        snprintf(nd->log, sizeof nd->log, "%s/node%zu.log", c->root, i + 1);
        snprintf(nd->rules, sizeof nd->rules, "%s/node%zu.rules", c->root,
                 i + 1);
        snprintf(nd->trace, sizeof nd->trace, "%s/node%zu.trace", c->root,
                 i + 1);
        off += (size_t)snprintf(c->cluster_arg + off,
                                sizeof c->cluster_arg - off, "%s%zu=%s:%u",
                                i ? "," : "", i + 1, nd->host, nd->port);
        poff += (size_t)snprintf(c->peers_arg + poff,
                                 sizeof c->peers_arg - poff, "%s%zu=%s:%u",
                                 i ? "," : "", i + 1, nd->host, nd->peer_port);
    }
    for (size_t i = 0; i < n; i++) {
        if (held[i] >= 0) {
            close(held[i]);
        }
        if (held[H_MAX_NODES + i] >= 0) {
            close(held[H_MAX_NODES + i]);
        }
        if (held[2 * H_MAX_NODES + i] >= 0) {
            close(held[2 * H_MAX_NODES + i]);
        }
    }
    if (c->tls && tls_setup(c) != 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (h_node_start(c, i) != 0) {
            return -1;
        }
    }
    return 0;
}

void h_node_lose_host(struct h_cluster *c, size_t i)
{
    h_node_kill(c, i);
    cunit_remove_tree(c->nodes[i].dir);
    if (c->drop_host && c->drop_host(c, i) != 0) {
        fprintf(stderr, "harness: node %llu's host could not be undone\n",
                (unsigned long long)c->nodes[i].id);
    }
}

void h_node_kill(struct h_cluster *c, size_t i)
{
    struct h_node *nd = &c->nodes[i];
    if (nd->pid > 0) {
        kill(nd->pid, SIGKILL);
        waitpid(nd->pid, NULL, 0);
        nd->pid = 0;
    }
}

int h_node_term(struct h_cluster *c, size_t i)
{
    struct h_node *nd = &c->nodes[i];
    if (nd->pid <= 0) {
        return -1;
    }
    if (nd->stopped) {
        kill(nd->pid, SIGCONT);
    }
    kill(nd->pid, SIGTERM);
    int status = 0;
    for (int waited = 0; waited < 10000; waited += 10) {
        if (waitpid(nd->pid, &status, WNOHANG) == nd->pid) {
            nd->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
        }
        h_sleep_ms(10);
    }
    h_node_kill(c, i);
    return -1;
}

void h_node_pause(struct h_cluster *c, size_t i, bool pause)
{
    struct h_node *nd = &c->nodes[i];
    if (nd->pid > 0) {
        kill(nd->pid, pause ? SIGSTOP : SIGCONT);
        nd->stopped = pause;
    }
}

size_t h_log_count(struct h_cluster *c, size_t i, const char *needle)
{
    FILE *f = fopen(c->nodes[i].log, "r");
    if (!f) {
        return 0;
    }
    char line[2048];
    size_t found = 0;
    while (fgets(line, sizeof line, f)) {
        found += strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

int h_http_get(struct h_cluster *c,
               size_t i,
               const char *method,
               const char *path,
               char *body,
               size_t len)
{
    struct h_node *nd = &c->nodes[i];
    body[0] = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(nd->metrics_port)};
    inet_pton(AF_INET, nd->host, &sa.sin_addr);
    struct timeval tv = {5, 0};
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     method, path, nd->host);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    static char resp[1 << 20];
    size_t got = 0;
    ssize_t k;
    while (got < sizeof resp - 1 &&
           (k = read(fd, resp + got, sizeof resp - 1 - got)) > 0) {
        got += (size_t)k;
    }
    close(fd);
    resp[got] = 0;
    int status;
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
        return -1;
    }
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, len, "%s", b ? b + 4 : "");
    return status;
}

double h_metric(const char *body, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *p = body; p && *p;
         p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (strncmp(p, name, nlen) == 0 && p[nlen] == ' ') {
            return strtod(p + nlen + 1, NULL);
        }
    }
    return -1;
}

bool h_log_contains(struct h_cluster *c, size_t i, const char *needle)
{
    return h_log_count(c, i, needle) > 0;
}

/* The first line of node i's log that is a sanitizer report, into line;
 * false when there is none. */
static bool sanitizer_line(struct h_cluster *c,
                           size_t i,
                           char *line,
                           size_t len)
{
    static const char *const marks[] = {"AddressSanitizer", "LeakSanitizer",
                                        "runtime error:"};
    FILE *f = fopen(c->nodes[i].log, "r");
    if (!f) {
        return false;
    }
    bool found = false;
    while (!found && fgets(line, (int)len, f)) {
        for (size_t m = 0; m < sizeof marks / sizeof marks[0]; m++) {
            found = found || strstr(line, marks[m]) != NULL;
        }
    }
    fclose(f);
    if (found) {
        line[strcspn(line, "\n")] = 0;
    }
    return found;
}

/* Did any node of c report a memory or undefined-behaviour error (in a
 * sanitizer build)? */
bool h_sanitizer_reports(struct h_cluster *c)
{
    bool found = false;
    char line[512];
    for (size_t i = 0; i < c->n; i++) {
        if (sanitizer_line(c, i, line, sizeof line)) {
            fprintf(stderr, "sanitizer report in %s: %s\n", c->nodes[i].log,
                    line);
            found = true;
        }
    }
    return found;
}

int h_cluster_destroy(struct h_cluster *c)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->nodes[i].stopped) {
            kill(c->nodes[i].pid, SIGCONT);
        }
        h_node_kill(c, i);
    }
    /* Every cluster test ends here: a sanitizer report in any node's log
     * fails it (the nodes are dead, so the logs are complete). */
    int rv = 0;
    char line[512], msg[1200];
    for (size_t i = 0; i < c->n && c->root[0]; i++) {
        if (!sanitizer_line(c, i, line, sizeof line)) {
            continue;
        }
        snprintf(msg, sizeof msg, "sanitizer report in node %llu's log %s: %s",
                 (unsigned long long)c->nodes[i].id, c->nodes[i].log, line);
        fprintf(stderr, "harness: %s\n", msg);
        if (CU_get_current_test()) {
            CU_assertImplementation(CU_FALSE, __LINE__, msg, __FILE__, "",
                                    CU_FALSE);
        }
        c->keep = true;
        rv = -1;
    }
    rpc_tls_free(c->client_tls);
    rpc_tls_free(c->peer_tls);
    c->client_tls = c->peer_tls = NULL;
    release_ports(c);
    if (c->keep) {
        fprintf(stderr, "harness: kept logs and data in %s\n", c->root);
    } else if (c->root[0]) {
        cunit_remove_tree(c->root);
    }
    return rv;
}

/* --------------------------------------------------------------- time */

uint64_t h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void h_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* -------------------------------------------------------------- client */

int h_client_open(struct h_client *cl, struct h_cluster *c, unsigned seed)
{
    memset(cl, 0, sizeof *cl);
    cl->c = c;
    cl->next_request = 1;
    cl->deadline_ms = 15000;
    for (size_t i = 0; i < 16; i++) {
        cl->client_id[i] = (uint8_t)rand_r(&seed);
    }
    for (size_t i = 0; i < c->n; i++) {
        struct rpc_channel_options o = {.deadline_ms = 1500,
                                        .connect_timeout_ms = 500,
                                        .backoff_max_ms = 100,
                                        .tls = c->client_tls};
        cl->ch[i] =
            rpc_channel_new_blocking(c->nodes[i].host, c->nodes[i].port, &o);
        if (!cl->ch[i]) {
            return -1;
        }
    }
    return 0;
}

void h_client_close(struct h_client *cl)
{
    for (size_t i = 0; i < H_MAX_NODES; i++) {
        rpc_channel_free(cl->ch[i]);
        cl->ch[i] = NULL;
    }
}

void h_result_free(struct h_result *r)
{
    free(r->value);
    r->value = NULL;
}

/* What one call returned. */
struct call_out
{
    bool replied;    /* a reply came */
    int err;         /* its KvError */
    uint64_t leader; /* its hint */
    bool swapped;    /* CAS */
    char *value;     /* Get */
    size_t len;
};

static void copy_hint(struct call_out *o, const Raftkv__LeaderHint *h)
{
    o->leader = h ? h->id : 0;
}

static void on_get(const Raftkv__GetReply *r, void *data)
{
    struct call_out *o = data;
    if (!r) {
        return;
    }
    o->replied = true;
    o->err = r->err;
    copy_hint(o, r->leader);
    if (r->err == RAFTKV__KV_ERROR__KV_OK) {
        o->value = malloc(r->value.len + 1);
        memcpy(o->value, r->value.data, r->value.len);
        o->value[r->value.len] = 0;
        o->len = r->value.len;
    }
}

static void on_put(const Raftkv__PutAppendReply *r, void *data)
{
    struct call_out *o = data;
    if (r) {
        o->replied = true;
        o->err = r->err;
        copy_hint(o, r->leader);
    }
}

static void on_del(const Raftkv__DeleteReply *r, void *data)
{
    struct call_out *o = data;
    if (r) {
        o->replied = true;
        o->err = r->err;
        copy_hint(o, r->leader);
    }
}

static void on_cas(const Raftkv__CompareAndSwapReply *r, void *data)
{
    struct call_out *o = data;
    if (r) {
        o->replied = true;
        o->err = r->err;
        o->swapped = r->swapped;
        copy_hint(o, r->leader);
    }
}

static void on_open(const Raftkv__OpenSessionReply *r, void *data)
{
    struct call_out *o = data;
    if (r) {
        o->replied = true;
        o->err = r->err;
        copy_hint(o, r->leader);
    }
}

enum op { OP_GET, OP_PUT, OP_APPEND, OP_DEL, OP_CAS, OP_OPEN };

struct op_args
{
    enum op op;
    const char *key;
    const char *val;
    size_t len;
    const char *expected;
    bool stale;
    uint64_t request_id;
};

static void call_once(struct h_client *cl,
                      size_t node,
                      const struct op_args *a,
                      struct call_out *o)
{
    ProtobufCService *svc =
        rpc_channel_service(cl->ch[node], &raftkv__kv_service__descriptor);
    ProtobufCBinaryData key = {strlen(a->key), (uint8_t *)a->key};
    ProtobufCBinaryData cid = {16, cl->client_id};
    memset(o, 0, sizeof *o);
    switch (a->op) {
        case OP_GET: {
            Raftkv__GetArgs g = RAFTKV__GET_ARGS__INIT;
            g.key = key;
            g.stale_ok = a->stale;
            raftkv__kv_service__get(svc, &g, on_get, o);
            break;
        }
        case OP_PUT:
        case OP_APPEND: {
            Raftkv__PutAppendArgs p = RAFTKV__PUT_APPEND_ARGS__INIT;
            p.key = key;
            p.value.data = (uint8_t *)a->val;
            p.value.len = a->len;
            p.op = a->op == OP_PUT ? RAFTKV__PUT_OP__PUT_OP_PUT
                                   : RAFTKV__PUT_OP__PUT_OP_APPEND;
            p.client_id = cid;
            p.request_id = a->request_id;
            raftkv__kv_service__put_append(svc, &p, on_put, o);
            break;
        }
        case OP_DEL: {
            Raftkv__DeleteArgs d = RAFTKV__DELETE_ARGS__INIT;
            d.key = key;
            d.client_id = cid;
            d.request_id = a->request_id;
            raftkv__kv_service__delete(svc, &d, on_del, o);
            break;
        }
        case OP_CAS: {
            Raftkv__CompareAndSwapArgs s = RAFTKV__COMPARE_AND_SWAP_ARGS__INIT;
            s.key = key;
            if (a->expected) {
                s.expected_case =
                    RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECTED_VALUE;
                s.expected_value.data = (uint8_t *)a->expected;
                s.expected_value.len = strlen(a->expected);
            } else {
                s.expected_case =
                    RAFTKV__COMPARE_AND_SWAP_ARGS__EXPECTED_EXPECT_ABSENT;
                s.expect_absent = 1;
            }
            s.new_value.data = (uint8_t *)a->val;
            s.new_value.len = a->len;
            s.client_id = cid;
            s.request_id = a->request_id;
            raftkv__kv_service__compare_and_swap(svc, &s, on_cas, o);
            break;
        }
        case OP_OPEN: {
            Raftkv__OpenSessionArgs s = RAFTKV__OPEN_SESSION_ARGS__INIT;
            s.client_id = cid;
            raftkv__kv_service__open_session(svc, &s, on_open, o);
            break;
        }
    }
}

static size_t node_index(struct h_client *cl, uint64_t id)
{
    for (size_t i = 0; i < cl->c->n; i++) {
        if (cl->c->nodes[i].id == id) {
            return i;
        }
    }
    return 0;
}

static struct h_result run(struct h_client *cl, struct op_args *a);

/* Writes need an open session (kvserver refuses others). */
static int ensure_session(struct h_client *cl)
{
    if (cl->session_open) {
        return 0;
    }
    /* A new random id for each session (as libclerk does): two clients
     * opened with one seed must not share a session. */
    if (getrandom(cl->client_id, sizeof cl->client_id, 0) !=
        (ssize_t)sizeof cl->client_id) {
        return -1;
    }
    cl->next_request = 1;
    struct op_args o = {.op = OP_OPEN, .key = ""};
    struct h_result r = run(cl, &o);
    h_result_free(&r);
    cl->session_open = r.err == 0;
    return r.err;
}

static struct h_result run(struct h_client *cl, struct op_args *a)
{
    struct h_result res = {.err = -1};
    if (a->op != OP_GET && a->op != OP_OPEN) {
        res.err = ensure_session(cl);
        if (res.err) {
            return res;
        }
        a->request_id = cl->next_request++;
    }
    uint64_t deadline = h_now_ms() + cl->deadline_ms;
    size_t node = cl->leader;
    while (h_now_ms() < deadline) {
        struct call_out o;
        call_once(cl, node, a, &o);
        if (!o.replied) {
            node = (node + 1) % cl->c->n;
            h_sleep_ms(20);
            continue;
        }
        if (o.err == RAFTKV__KV_ERROR__KV_WRONG_LEADER) {
            node = o.leader ? node_index(cl, o.leader) : (node + 1) % cl->c->n;
            free(o.value);
            continue;
        }
        if (o.err == RAFTKV__KV_ERROR__KV_UNAVAILABLE ||
            o.err == RAFTKV__KV_ERROR__KV_TIMEOUT ||
            o.err == RAFTKV__KV_ERROR__KV_SHUTTING_DOWN) {
            free(o.value);
            h_sleep_ms(50);
            if (o.err != RAFTKV__KV_ERROR__KV_TIMEOUT) {
                node = (node + 1) % cl->c->n;
            }
            continue;
        }
        cl->leader = node;
        res.err = o.err;
        res.swapped = o.swapped;
        res.value = o.value;
        res.len = o.len;
        return res;
    }
    return res;
}

struct h_result h_put(struct h_client *cl,
                      const char *key,
                      const char *val,
                      size_t len)
{
    struct op_args a = {.op = OP_PUT, .key = key, .val = val, .len = len};
    return run(cl, &a);
}

struct h_result h_append(struct h_client *cl, const char *key, const char *val)
{
    struct op_args a = {
        .op = OP_APPEND, .key = key, .val = val, .len = strlen(val)};
    return run(cl, &a);
}

struct h_result h_get(struct h_client *cl,
                      const char *key,
                      bool stale,
                      size_t node)
{
    struct op_args a = {.op = OP_GET, .key = key, .stale = stale};
    if (stale) {
        struct call_out o;
        struct h_result res = {.err = -1};
        call_once(cl, node, &a, &o);
        if (o.replied) {
            res.err = o.err;
            res.value = o.value;
            res.len = o.len;
        }
        return res;
    }
    return run(cl, &a);
}

struct h_result h_del(struct h_client *cl, const char *key)
{
    struct op_args a = {.op = OP_DEL, .key = key};
    return run(cl, &a);
}

struct h_result h_cas(struct h_client *cl,
                      const char *key,
                      const char *expected,
                      const char *new_value)
{
    struct op_args a = {.op = OP_CAS,
                        .key = key,
                        .expected = expected,
                        .val = new_value,
                        .len = strlen(new_value)};
    return run(cl, &a);
}

int h_put_raw(struct h_client *cl,
              size_t node,
              const char *key,
              const char *val,
              uint64_t request_id,
              bool append)
{
    struct op_args a = {.op = append ? OP_APPEND : OP_PUT,
                        .key = key,
                        .val = val,
                        .len = strlen(val),
                        .request_id = request_id};
    int err = ensure_session(cl);
    if (err) {
        return err;
    }
    struct call_out o;
    call_once(cl, node, &a, &o);
    free(o.value);
    return o.replied ? o.err : -1;
}

int h_find_leader(struct h_cluster *c, int timeout_ms)
{
    uint64_t deadline = h_now_ms() + (uint64_t)timeout_ms;
    struct h_client cl;
    if (h_client_open(&cl, c, 1) != 0) {
        return -1;
    }
    int found = -1;
    while (found < 0 && h_now_ms() < deadline) {
        for (size_t i = 0; i < c->n && found < 0; i++) {
            if (c->nodes[i].pid <= 0 || c->nodes[i].stopped) {
                continue;
            }
            struct op_args a = {.op = OP_GET, .key = "__leader_probe__"};
            struct call_out o;
            call_once(&cl, i, &a, &o);
            if (o.replied && (o.err == RAFTKV__KV_ERROR__KV_OK ||
                              o.err == RAFTKV__KV_ERROR__KV_NOT_FOUND)) {
                found = (int)i;
            }
            free(o.value);
        }
        if (found < 0) {
            h_sleep_ms(50);
        }
    }
    h_client_close(&cl);
    return found;
}

/* ---------------------------------------------------------- disk faults */

int h_node_rules(struct h_cluster *c, size_t i, const char *rules)
{
    struct h_node *nd = &c->nodes[i];
    if (!c->diskfault || df_write_rules(nd->rules, rules) != DF_OK) {
        return -1;
    }
    return nd->pid && df_reload(nd->pid) != DF_OK ? -1 : 0;
}

void h_node_power_loss(struct h_cluster *c, size_t i)
{
    struct h_node *nd = &c->nodes[i];
    if (!nd->pid) {
        return;
    }
    if (!c->diskfault) {
        h_node_kill(c, i);
        return;
    }
    if (nd->stopped) {
        kill(nd->pid, SIGCONT); /* the shim's handler must run */
    }
    df_power_loss(nd->pid);
    int status;
    waitpid(nd->pid, &status, 0);
    nd->pid = 0;
    nd->stopped = false;
}

int h_power_loss_at_next_log_write(struct h_cluster *c,
                                   size_t leader,
                                   unsigned timeout_ms)
{
    if (!c->diskfault) {
        return -1;
    }
    bool armed[H_MAX_NODES] = {false};
    bool was_paused = c->nodes[leader].stopped;
    h_node_pause(c, leader, true);
    /* What it sent before the pause is taken in (and written) first. */
    h_sleep_ms(20);
    for (size_t i = 0; i < c->n; i++) {
        if (i != leader && c->nodes[i].pid > 0) {
            if (c->nodes[i].stopped) {
                h_node_pause(c, i, false);
            }
            armed[i] = h_node_rules(c, i, "crash wal/ write") == 0;
        }
    }
    if (!was_paused) {
        h_node_pause(c, leader, false);
    }
    int crashed = 0;
    uint64_t end = h_now_ms() + timeout_ms;
    for (size_t i = 0; i < c->n; i++) {
        if (i == leader || c->nodes[i].pid <= 0) {
            continue;
        }
        uint64_t now = h_now_ms();
        if (armed[i] && h_node_exited(c, i, now < end ? end - now : 0)) {
            crashed++;
        } else {
            h_node_power_loss(c, i);
        }
        h_node_rules(c, i, "");
    }
    return crashed;
}

size_t h_file_count(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    char line[4096];
    size_t found = 0;
    while (fgets(line, sizeof line, f)) {
        found += strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

bool h_node_exited(struct h_cluster *c, size_t i, unsigned timeout_ms)
{
    return c->nodes[i].pid == 0 || h_node_wait_exit(c, i, timeout_ms) >= 0;
}

int h_node_wait_exit(struct h_cluster *c, size_t i, unsigned timeout_ms)
{
    struct h_node *nd = &c->nodes[i];
    uint64_t end = h_now_ms() + timeout_ms;
    for (;;) {
        if (!nd->pid) {
            return -1;
        }
        int status;
        if (waitpid(nd->pid, &status, WNOHANG) == nd->pid) {
            nd->pid = 0;
            nd->stopped = false;
            return WIFEXITED(status) ? WEXITSTATUS(status)
                                     : 128 + WTERMSIG(status);
        }
        if (h_now_ms() >= end) {
            return -1;
        }
        h_sleep_ms(10);
    }
}

void h_trace_reset(struct h_cluster *c, size_t i)
{
    int fd = open(c->nodes[i].trace, O_WRONLY | O_TRUNC);
    if (fd >= 0) {
        close(fd);
    }
}

bool h_file_contains(const char *path, const char *needle)
{
    return h_file_count(path, needle) > 0;
}
