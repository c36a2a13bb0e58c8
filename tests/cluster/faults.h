/* faults.h: the engine of the fault-injection suite: a real cluster, clerks
 * that record every call and return, a nemesis that injects faults, and
 * the checks (every acknowledged append present exactly once and in order;
 * a bank's total never changes; the whole history linearizable). */
#ifndef TESTS_CLUSTER_FAULTS_H
#define TESTS_CLUSTER_FAULTS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <clerk/clerk.h>

#include "harness.h"
#include "lincheck.h"

/* What the nemesis does while clients run. */
enum nemesis {
    NEM_NONE,
    NEM_RANDOM_HALVES,  /* the lab's: each node on a random side, ~1 s */
    NEM_KILL_ONE,       /* kill -9 a random node, restart it */
    NEM_KILL_MINORITY,  /* kill -9 a minority at once, restart them */
    NEM_KILL_LEADER,    /* kill -9 the leader, restart it */
    NEM_KILL_ALL,       /* kill -9 every node, restart them all (with
                           diskfault: the followers lose power at their next
                           log write, then the leader; the followers come
                           back first and must serve without it) */
    NEM_PAUSE_LEADER,   /* SIGSTOP the leader, SIGCONT it */
    NEM_ISOLATE_LEADER, /* cut every link of the leader */
    NEM_RING,           /* majorities ring: each node sees a different
                           majority */
    NEM_BRIDGE,         /* two halves joined by one node */
    NEM_MIXED,          /* a random one of the above each round (and of
                           the disk faults below, with diskfault) */
    NEM_PACKETS,        /* random halves as nftables drop rules (netns) */
    NEM_DISK_FULL,      /* a node's disk (often the leader's) fills for
                           about a period, then empties (diskfault) */
    NEM_SYNC_FAIL,      /* a node's next sync fails once with EIO
                           (sometimes the leader's; diskfault) */
};

/* The operations clients issue. */
enum workload {
    WL_APPEND_GET, /* the lab's: 50% append of a unique token, 50% get */
    WL_REGISTER,   /* put, get, cas, delete on few keys (Jepsen register) */
    WL_BANK,       /* Jepsen's bank: accounts (keys) with a fixed total;
                      clients move money in transactions (read both
                      balances with a range, then a txn comparing their
                      mod revisions, retried when a compare fails); every
                      range over the accounts (readers' and writers')
                      must sum to the total */
    WL_TXN,        /* ranges, gets, puts, deletes and txns comparing
                      values and versions (then and else branches) on
                      few keys, checked for linearizability as one
                      group */
};

struct world; /* the engine's state of one test (faults.c) */

/* The fixed steps the membership nemesis (faults_member) takes first. */
enum member_tour {
    TOUR_FAULTS = 0, /* each kind of change, with kills of the leader right
                        after a proposal and of the nodes being added or
                        removed (and partitions, with NEM_RANDOM_HALVES) */
    TOUR_HOSTS,      /* add a 4th and a 5th node, remove one, replace one
                        (its host lost and wiped, a new host at a new
                        address under a new id) */
};

/* A nemesis in a file of its own (scenario.nem): the engine calls its
 * step instead of scenario.nemesis's, on the thread that runs the
 * nemesis (the main thread: it may start nodes), with the engine's
 * functions below to act on the cluster. */
struct faults_nemesis
{
    /* Once a leader serves, before the first round: its state (NULL
     * after calling faults_fail). */
    void *(*start)(struct world *w);
    /* One round of faults; called again until the round is over (a step
     * may outlast the round a little: it leaves the cluster whole). */
    void (*step)(void *state, struct world *w);
    /* After each round, every fault healed (dead nodes restarted) and a
     * leader serving: its checks, through faults_fail. */
    void (*check)(void *state, struct world *w);
    /* After the last round: its last checks, its part of the report
     * line (into @line), then free the state. */
    void (*finish)(void *state, struct world *w, char *line, size_t len);
};

/* A workload in a file of its own (scenario.ext), run on the engine's
 * cluster, clients and nemesis: the engine calls op from each client's
 * thread instead of its own operations, and its other hooks from the
 * thread that runs the nemesis. */
struct faults_ext
{
    /* Once a leader serves, before the first round: set up, start what
     * runs beside the clients; returns the workload's state (NULL after
     * calling faults_fail). */
    void *(*start)(struct world *w);
    /* One operation of client number @client, with its handle and its
     * random state. */
    void (*op)(void *state, struct clerk *ck, unsigned *rng, int client);
    /* After the last round, with every fault healed and a leader serving:
     * stop and check (failures through faults_fail). */
    void (*check)(void *state, struct world *w);
    /* Its part of the report line (into @line), then free the state. */
    void (*finish)(void *state, char *line, size_t len);
};

/* One test of the suite. */
struct scenario
{
    const char *name;
    size_t servers;
    size_t clients;
    size_t readers;   /* more clients that only read: each stays on the
                         node that answers, so stale reads show */
    bool unreliable;  /* lab's: 10% requests and 10% replies lost, each
                         request delayed 0-27 ms, on every link and client */
    bool reorder;     /* long reordering: 2/3 of replies held 200-2200 ms */
    bool duplicate;   /* 10% of requests delivered twice */
    bool random_keys; /* clients share keys instead of one each */
    bool crash;       /* lab's persist: every node killed between rounds */
    bool diskfault;   /* nodes on the disk-fault shim (tests/diskfault):
                         every kill is a power loss (what a node did not
                         sync is lost), and the disk nemeses can act */
    enum nemesis nemesis;
    enum workload workload;
    unsigned snapshot;         /* --snapshot-entries (0: the default) */
    bool distinct_hosts;       /* node i on 127.0.0.(11+i) */
    size_t keys;               /* random_keys: how many (0: one per client);
                                  WL_BANK: accounts (0: 5); WL_TXN: keys
                                  (0: 3) */
    size_t appends_per_client; /* >0: clients only append, this many each,
                                  and the round ends when they are done */
    unsigned iter_ms;          /* 0: the tier's */
    int iterations;            /* 0: the tier's */
    /* A workload of its own instead of workload (NULL: none). */
    const struct faults_ext *ext;
    /* More kvserver flags (NULL: none). */
    const char *flags;
    /* The nemesis's period in ms, up to a fifth more at random (0: the
     * lab's 1-1.2 s). Slower faults leave a leader in place long enough
     * for a lease to expire (TTL + 2 election timeouts). */
    unsigned nemesis_ms;
    /* Only in the full tier (RAFTKV_FAULT_TIER=full): the quick tier runs
     * the suite's other tests, to keep the default run short. */
    bool full_only;
    /* A nemesis of its own instead of nemesis (NULL: none); nemesis then
     * says which of the usual faults it may mix in (NEM_NONE: none but
     * its own; NEM_RANDOM_HALVES: partitions too). */
    const struct faults_nemesis *nem;
    /* The most voters nem may grow the cluster to (0: servers); the
     * full tier's second run starts nem's tests on 5 nodes and lets them
     * grow to 7. */
    size_t max_servers;
    /* The membership nemesis's first steps, and whether it stops after
     * them (else random ones follow until the round ends). */
    enum member_tour tour;
    bool tour_only;
    /* Each node on a host of its own (h_start.new_host, drop_host: a
     * network namespace with an address; test_hosts), NULL: loopback. */
    h_host_fn new_host;
    h_host_fn drop_host;
};

/* How long and how often: RAFTKV_FAULT_TIER=quick (default) or full. */
bool faults_full_tier(void);

/**
 * Run a scenario start to end with CUnit asserts: start the cluster, run
 * the rounds, check, stop everything. Prints one report line. Keeps the
 * cluster's directory (logs, data, history.jsonl) when a check fails. The
 * full tier runs it a second time on 7 nodes with other random choices.
 */
void faults_run(const struct scenario *sc);

/* The watch workload (faults_watch.c): writers on three prefixes,
 * watchers whose events must be the committed history exactly. */
extern const struct faults_ext faults_watch;

/* The lease workload (faults_lease.c): holders keep leases alive with
 * keys on them through the faults, some die or revoke; checked against
 * the committed history. */
extern const struct faults_ext faults_lease;

/* The lock workload (faults_lock.c): contenders take one lock, write
 * guarded by its token, and are paused past their lease or killed; the
 * guarded writes in the history must never interleave. */
extern const struct faults_ext faults_lock;

/** A check of an ext workload failed: print it (the first few), fail the
 * test and keep the cluster's directory. From the nemesis's thread. */
void faults_fail(struct world *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** The cluster of the running test. */
struct h_cluster *faults_cluster(struct world *w);

/** A handle on every node (10 s deadline), for the nemesis's thread. */
struct clerk *faults_admin(struct world *w);

/** The random seed of the running test (its nemesis's choices follow). */
unsigned faults_seed(struct world *w);

/** The running test. */
const struct scenario *faults_scenario(struct world *w);

/* The membership nemesis (faults_member.c): nodes added as learners,
 * promoted, removed (the leader too) and replaced while the clients run,
 * with kills of the leader right after it proposed a change and of the
 * node being added or removed, and partitions when scenario.nemesis is
 * NEM_RANDOM_HALVES; every member must catch up after each round, and no
 * term may have had two leaders. */
extern const struct faults_nemesis faults_member;

/* ------------------------------------------- for a nemesis of its own */

/** Is the running round over (its time is up)? */
bool faults_round_over(struct world *w);

/** Sleep @ms unless the round ends meanwhile. */
void faults_nap(struct world *w, unsigned ms);

/** The next of the nemesis's random numbers (its seed's sequence). */
unsigned faults_random(struct world *w);

/** The node that leads in the highest term (its index), or -1. */
int faults_leader(struct world *w);

/** Is node i running (started, not killed, not retired)? */
bool faults_alive(struct world *w, size_t i);

/** kill -9 node i (with diskfault: cut its power). */
void faults_kill(struct world *w, size_t i);

/** Stop node i the way an operator does (SIGTERM, as systemctl stop):
 * its exit status (0: a clean stop), or -1 (it was not running, or did
 * not stop within 10 s and was killed). */
int faults_stop(struct world *w, size_t i);

/** Start node i if it is down (not retired) and give it its rules.
 * @return 0, or -1 (it did not start; the test fails) */
int faults_restart(struct world *w, size_t i);

/**
 * A new node slot (h_node_add: a new id, started with --join), not
 * started; the admin handle (faults_admin) and the next round's clients
 * know its address. The partitions give it its side.
 * @return its index, or -1 (no slot left)
 */
int faults_add_node(struct world *w);

/**
 * Node i is gone for good (removed, or its host lost): killed if it still
 * runs, never restarted, and left out of rules and client lists.
 */
void faults_retire(struct world *w, size_t i);

/**
 * Node i's host is lost for good (h_node_lose_host: killed, its data
 * wiped, its host undone): never started again, left out of rules and
 * client lists (retired), though still a member until it is removed.
 */
void faults_lose_host(struct world *w, size_t i);

/** Has node i been retired? */
bool faults_retired(struct world *w, size_t i);

/** Links only within groups (group[i] of each node), applied at once. */
void faults_partition(struct world *w, const int *group);

/** Every link up again (and each node's rules given again: a member added
 * since has channels with no rules). */
void faults_heal_links(struct world *w);

/* Packet-level partitions need a hook (set by the netns test program):
 * make node i able (or not) to reach node j. */
typedef int (*faults_packet_cut_fn)(const struct h_cluster *c,
                                    const bool link[H_MAX_NODES][H_MAX_NODES]);
extern faults_packet_cut_fn faults_packet_cut;

/* With packet-level partitions: how many packets the filter has dropped
 * so far (each partition must drop some). */
typedef uint64_t (*faults_packet_drops_fn)(void);
extern faults_packet_drops_fn faults_packet_drops;

#endif /* TESTS_CLUSTER_FAULTS_H */
