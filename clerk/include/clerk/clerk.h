/* clerk.h: the raftkv client library: a blocking API to a raftkv cluster.
 *
 *   struct clerk *ck;
 *   if (clerk_open(&ck, "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
 *                  NULL) != CLERK_OK) ...
 *   clerk_put(ck, "k", 1, "v", 1);
 *   void *val; size_t len;
 *   if (clerk_get(ck, "k", 1, &val, &len) == CLERK_OK) { ...; clerk_free(val);
 * } clerk_close(ck);
 *
 * A handle finds the leader, follows NOT_LEADER hints (to a leader missing
 * from its list too: it adds that address), retries other servers
 * with backoff until the operation's deadline, and gives every write a
 * request id that it keeps across retries, so each write is applied exactly
 * once. Keys and values are bytes (pointer and length); keys are 1 to 511
 * bytes, values up to 4 MiB.
 *
 * Threads: a handle may be shared by threads; its operations run one at a
 * time (a mutex). For parallel operations open a handle per thread.
 */
#ifndef CLERK_CLERK_H
#define CLERK_CLERK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Results of clerk operations. */
enum clerk_error {
    CLERK_OK = 0,
    CLERK_NOT_FOUND,       /* get, delete: no such key */
    CLERK_CAS_MISMATCH,    /* cas: the key did not hold the expected value
                              (or existed when it must not); nothing written */
    CLERK_UNKNOWN_OUTCOME, /* write: the deadline passed after the write
                              reached a server, or a later try was refused
                              (a full disk) after an earlier one reached a
                              leader; it may or may not have been applied.
                              Read the key to find out. */
    CLERK_UNAVAILABLE,     /* no leader accepted the operation before the
                              deadline; a write was not applied */
    CLERK_TIMEOUT,         /* read: the deadline passed */
    CLERK_BAD_REQUEST,     /* the cluster refused the request as malformed */
    CLERK_VALUE_TOO_LARGE, /* key over 511 bytes or value over 4 MiB */
    CLERK_NO_SPACE,        /* the leader's disk is full; not applied */
    CLERK_INVALID,         /* bad argument (NULL pointer, bad server list) */
    CLERK_NOMEM,           /* out of memory */
    CLERK_INTERNAL,        /* unexpected answer from the cluster */
    CLERK_DISABLED,        /* the server does not allow the operation (fault
                              injection without --enable-fault-injection) */
    CLERK_SESSION_EXPIRED, /* write: the cluster forgot this handle's session
                              (more than --max-sessions clients wrote since
                              it last did) while the write was being retried:
                              this try was not applied, an earlier one may
                              have been. Read the key to find out. The next
                              write opens a new session. */
};

/* How reads are served. */
enum clerk_read_mode {
    CLERK_READ_LINEARIZABLE = 0, /* by the leader, after confirming it leads */
    CLERK_READ_STALE = 1,        /* by any server, from its applied state */
};

/* Settings of a handle. Zero fields mean the defaults. */
struct clerk_options
{
    unsigned deadline_ms;           /* per operation, retries included; 5000 */
    unsigned attempt_ms;            /* per call to one server; 1000 */
    enum clerk_read_mode read_mode; /* linearizable */
};

struct clerk;

/**
 * Open a handle to a cluster. No connection is made until the first call.
 * @param out set to the handle
 * @param servers "HOST:PORT,HOST:PORT,..." ([v6addr]:port for IPv6); the
 *   kvserver form "ID=HOST:PORT" is accepted too. Copied.
 * @param opts settings (copied), or NULL for the defaults
 * @return CLERK_OK, CLERK_INVALID (empty or malformed list; clerk_strerror
 *   and the message of clerk_open_error() say why) or CLERK_NOMEM
 */
int clerk_open(struct clerk **out,
               const char *servers,
               const struct clerk_options *opts);

/**
 * Why the last clerk_open of this thread failed.
 * @return a thread-local string
 */
const char *clerk_open_error(void);

/**
 * Close a handle and its connections.
 * @param c the handle, or NULL
 */
void clerk_close(struct clerk *c);

/**
 * Read a key.
 * @param value set to a copy of the value (free with clerk_free); a
 *   terminating NUL byte follows it, not counted in value_len
 * @param value_len set to its length
 * @return CLERK_OK, CLERK_NOT_FOUND, CLERK_TIMEOUT, CLERK_UNAVAILABLE,
 *   CLERK_VALUE_TOO_LARGE, CLERK_BAD_REQUEST, CLERK_INVALID, CLERK_NOMEM
 */
int clerk_get(struct clerk *c,
              const void *key,
              size_t key_len,
              void **value,
              size_t *value_len);

/**
 * Set a key to a value.
 * @return CLERK_OK, CLERK_UNKNOWN_OUTCOME, CLERK_UNAVAILABLE,
 *   CLERK_VALUE_TOO_LARGE, CLERK_NO_SPACE, CLERK_BAD_REQUEST, CLERK_INVALID
 */
int clerk_put(struct clerk *c,
              const void *key,
              size_t key_len,
              const void *value,
              size_t value_len);

/**
 * Append to a key's value (an absent key counts as empty).
 * @return as clerk_put
 */
int clerk_append(struct clerk *c,
                 const void *key,
                 size_t key_len,
                 const void *value,
                 size_t value_len);

/**
 * Delete a key.
 * @return CLERK_OK, CLERK_NOT_FOUND (nothing was deleted), or as clerk_put
 */
int clerk_delete(struct clerk *c, const void *key, size_t key_len);

/**
 * Compare and swap: set key to new_value only if it holds expected (or,
 * with expected NULL, only if it does not exist).
 * @param expected the value required, or NULL for "must not exist"; an
 *   empty value is a non-NULL pointer with length 0
 * @param current if not NULL and the result is CLERK_CAS_MISMATCH, set to
 *   the value found (NULL when the key did not exist); free with clerk_free
 * @return CLERK_OK (swapped), CLERK_CAS_MISMATCH, or as clerk_put
 */
int clerk_cas(struct clerk *c,
              const void *key,
              size_t key_len,
              const void *expected,
              size_t expected_len,
              const void *new_value,
              size_t new_len,
              void **current,
              size_t *current_len);

/* One server's view, from clerk_status. */
struct clerk_node_status
{
    char address[300];       /* as given to clerk_open */
    bool reachable;          /* it answered */
    uint64_t id;             /* its node id (unreachable: from the leader's
                                list when the address matches, else 0) */
    char role[16];           /* follower, pre-candidate, candidate, leader */
    uint64_t term;           /* current term */
    uint64_t leader;         /* leader id it knows (0: none) */
    uint64_t commit_index;   /* commit index */
    uint64_t applied_index;  /* applied index of its state machine */
    uint64_t last_log_index; /* last log index */
    uint64_t snapshot_index; /* its log starts after this */
    bool disk_full;          /* it refuses writes for lack of space */
    char error[200];         /* why it did not answer */
    /* How far it trails the leader: the reachable server that leads in the
     * highest term. Servers answer one after the other, so under load the
     * numbers are approximate. */
    bool lag_known;       /* applied_lag is set: it and a leader answered */
    uint64_t applied_lag; /* leader's commit index minus its applied index */
    bool progress_known;  /* the leader reported its replication to it
                             (also for a server that did not answer) */
    uint64_t match_index; /* leader's view: last log index stored on it */
    uint64_t replication_lag; /* leader's last log index minus match_index */
    uint64_t ack_age_ms;      /* leader's view: about how long since it last
                                 answered the leader (0: just now) */
};

/**
 * Ask every server for its status, and fill in how far each one trails
 * the leader.
 * @param nodes set to an array of one entry per server: those given to
 *   clerk_open, then leaders it found that were not (free with clerk_free)
 * @param n set to the number of entries
 * @return CLERK_OK (even if some servers did not answer: see reachable),
 *   or CLERK_NOMEM
 */
int clerk_status(struct clerk *c, struct clerk_node_status **nodes, size_t *n);

/**
 * Hand leadership to another node (Raft leadership transfer): the leader
 * brings the target's log up to date, then tells it to start an election
 * at once, so the cluster changes leader without an election timeout of
 * unavailability (writes wait, and clerks retry them, for the few
 * milliseconds it takes). For maintenance: move leadership off a node
 * before stopping it. Returns once the target leads, or the transfer
 * failed; the operation's deadline (clerk_set_deadline) bounds it.
 * @param target_id the node to lead; 0 lets the leader pick its most
 *   up-to-date follower
 * @param new_leader if not NULL, set to the leader id the answering node
 *   knows (CLERK_OK: the target; 0: none known)
 * @return CLERK_OK (the target leads now, or already did),
 *   CLERK_BAD_REQUEST (no node has that id; a single-node cluster),
 *   CLERK_TIMEOUT (the target did not take over in time, about an election
 *   timeout: it is down, unreachable or too far behind; the leader gave
 *   up and takes writes again), CLERK_UNAVAILABLE (no leader answered
 *   before the deadline, another transfer is in progress, no follower is
 *   reachable for target 0, or leadership went to another node),
 *   CLERK_INVALID, CLERK_NOMEM. clerk_errmsg says which.
 */
int clerk_transfer_leader(struct clerk *c,
                          uint64_t target_id,
                          uint64_t *new_leader);

/* Where clerk_snapshot_save puts the bytes; a non-zero return stops it. */
typedef int (*clerk_sink)(const void *data, size_t len, void *arg);

/**
 * Save a consistent copy of the whole state: the leader reads it out under
 * one LMDB read transaction while writes go on, and it holds every write
 * acknowledged before the call. The bytes (a snapshot stream ending in a
 * CRC-32C of the whole, checked here) go to @sink in order; `kvserver
 * --restore FILE` starts a node from them. The deadline (clerk_set_deadline)
 * bounds finding the leader and each chunk, not the whole save.
 * @param index, term if not NULL, set to the applied index of the copy and
 *   its term
 * @param bytes if not NULL, set to the bytes given to @sink
 * @return CLERK_OK, CLERK_UNAVAILABLE (no leader answered, or the leader
 *   changed or lost the stream midway: run it again), CLERK_INTERNAL (the
 *   checksum did not match), CLERK_INVALID (@sink failed; errno is its),
 *   CLERK_NOMEM. clerk_errmsg says which.
 */
int clerk_snapshot_save(struct clerk *c,
                        clerk_sink sink,
                        void *arg,
                        uint64_t *index,
                        uint64_t *term,
                        uint64_t *bytes);

/* Fault injection, for fault-injection tests on a real cluster: what one
 * server does to its own traffic. Servers accept it only when started with
 * --enable-fault-injection. */
/* Target of a rule for client calls arriving at the server. */
#define CLERK_FAULT_CLIENTS 0

struct clerk_fault
{
    uint64_t target;         /* a node id: the server's Raft calls to that
                                node (one direction of the link), or
                                CLERK_FAULT_CLIENTS */
    bool cut;                /* nothing passes */
    double drop_request;     /* share of requests lost (handler never runs) */
    double drop_reply;       /* share of replies lost after the handler ran */
    unsigned delay_min_ms;   /* each request delayed uniformly in */
    unsigned delay_max_ms;   /*   [delay_min_ms, delay_max_ms] */
    double duplicate;        /* share of requests delivered twice */
    double reorder;          /* share of replies held back uniformly in */
    unsigned reorder_min_ms; /*   [reorder_min_ms, reorder_max_ms] */
    unsigned reorder_max_ms; /*   (0 and 0: 200 to 2200 ms) */
    /* In the rules clerk_fault reports: what the rule did so far. */
    uint64_t n_cut, n_dropped_requests, n_dropped_replies;
    uint64_t n_delayed, n_duplicated, n_reordered;
};

/**
 * Change the fault-injection rules of one server.
 * @param server index of the server in the list given to clerk_open
 * @param clear remove all of its rules first
 * @param rules rules to set; each replaces its target's earlier rule, and a
 *   rule that injects nothing removes it (NULL when n_rules is 0)
 * @param seed seeds the server's random choices (0: any)
 * @param now if not NULL, set to the rules in force afterwards, with their
 *   counters (free with clerk_free); n_now to their number
 * @return CLERK_OK, CLERK_DISABLED, CLERK_BAD_REQUEST (a bad rule; see
 *   clerk_errmsg), CLERK_UNAVAILABLE (the server did not answer),
 *   CLERK_INVALID, CLERK_NOMEM
 */
int clerk_fault(struct clerk *c,
                size_t server,
                bool clear,
                const struct clerk_fault *rules,
                size_t n_rules,
                uint64_t seed,
                struct clerk_fault **now,
                size_t *n_now);

/**
 * Change the deadline of the operations that follow.
 * @param ms milliseconds, retries included; 0 restores the default
 */
void clerk_set_deadline(struct clerk *c, unsigned ms);

/**
 * Change the read mode of the reads that follow.
 */
void clerk_set_read_mode(struct clerk *c, enum clerk_read_mode mode);

/**
 * Context of the handle's last failure: "no leader answered within 5000 ms
 * (last: 127.0.0.1:7002: connection refused)". With a shared handle it
 * describes the last operation of any thread.
 * @return a string owned by the handle
 */
const char *clerk_errmsg(const struct clerk *c);

/**
 * A stable upper-case name for an error: "NOT_FOUND", "CAS_MISMATCH",
 * "TIMEOUT" (also for CLERK_UNKNOWN_OUTCOME), "UNAVAILABLE", ...
 */
const char *clerk_error_code(int err);

/**
 * A short description of an error for people.
 */
const char *clerk_strerror(int err);

/**
 * Free what clerk_get, clerk_cas or clerk_status returned.
 */
void clerk_free(void *p);

#ifdef __cplusplus
}
#endif

#endif /* CLERK_CLERK_H */
