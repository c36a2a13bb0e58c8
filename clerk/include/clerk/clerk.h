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
 * time (a mutex). For parallel operations open a handle per thread, or use
 * one async handle (clerk_async_*, at the end of this file): many
 * operations in flight, callbacks from an event loop.
 *
 * Signals: a server that dies while libclerk writes to it can make the
 * write raise SIGPIPE, whose default action ends the process. Programs
 * should ignore it (signal(SIGPIPE, SIG_IGN)); libclerk
 * then sees the error and goes on at another server. It does not change
 * the process's signal dispositions itself.
 */
#ifndef CLERK_CLERK_H
#define CLERK_CLERK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <clerk/clerk_version.h> /* CLERK_VERSION, CLERK_VERSION_NUMBER */

#ifdef __cplusplus
extern "C" {
#endif

/* Results of clerk operations. */
enum clerk_error {
    CLERK_OK = 0,
    CLERK_NOT_FOUND,         /* get, delete: no such key */
    CLERK_CAS_MISMATCH,      /* cas: the key did not hold the expected value
                                (or existed when it must not); nothing written */
    CLERK_UNKNOWN_OUTCOME,   /* write: the deadline passed after the write
                                reached a server, or a later try was refused
                                (a full disk) after an earlier one reached a
                                leader; it may or may not have been applied.
                                Read the key to find out. */
    CLERK_UNAVAILABLE,       /* no leader accepted the operation before the
                                deadline (quorum lost, no leader known),
                                a read as a write; a write was not applied.
                                At once when every server refused the
                                connection and none ever answered this
                                handle */
    CLERK_TIMEOUT,           /* read: the deadline passed after a server
                                that may have been serving it was reached
                                (no answer from it, or the leader's read
                                timed out) */
    CLERK_BAD_REQUEST,       /* the cluster refused the request as malformed */
    CLERK_VALUE_TOO_LARGE,   /* key over 511 bytes or value over 4 MiB */
    CLERK_NO_SPACE,          /* no room: the leader's disk is full or the
                                write would pass --quota-bytes; not applied
                                (clerk_errmsg says which) */
    CLERK_INVALID,           /* bad argument (NULL pointer, bad server list) */
    CLERK_NOMEM,             /* out of memory */
    CLERK_INTERNAL,          /* unexpected answer from the cluster, or a
                                server failed a read itself until the
                                deadline (its message in clerk_errmsg) */
    CLERK_DISABLED,          /* the server does not allow the operation (fault
                                injection without --enable-fault-injection) */
    CLERK_SESSION_EXPIRED,   /* write: the cluster forgot this handle's session
                                (more than --max-sessions clients wrote since
                                it last did) while the write was being retried:
                                this try was not applied, an earlier one may
                                have been. Read the key to find out. The next
                                write opens a new session. */
    CLERK_UNAUTHENTICATED,   /* auth is enabled and the handle has no user
                                (clerk_options.user), a wrong user name or
                                password, or its password changed; nothing
                                was applied. clerk_errmsg says which. */
    CLERK_PERMISSION_DENIED, /* the user's roles do not allow this on the
                              key (or it needs the role root); nothing was
                              applied. clerk_errmsg names what is missing */
    CLERK_COMPACTED,         /* the history asked for (clerk_events' start
                                revision, clerk_compact's revision) was
                                compacted away; the result's
                                compact_revision (and clerk_errmsg) says up
                                to where */
    CLERK_FUTURE_REVISION,   /* the revision asked for is newer than the
                                store's; nothing was done */
    CLERK_LEASE_NOT_FOUND,   /* no such lease: never granted, revoked, or
                            expired (its keys are gone with it); a put
                            or transaction naming it wrote nothing */
    CLERK_NOT_HELD,          /* a lock or a leadership is not held (any
                                more): its key is gone, its lease ended */
    CLERK_CLOSED,            /* async: the handle was closed before the
                                operation ended (or it was started on a
                                closed handle). A write may or may not have
                                been applied, as CLERK_UNKNOWN_OUTCOME */
    CLERK_TOO_MANY_KEYS,     /* a delete of a range (or a transaction's
                                deletes) would delete more keys than the
                                leader's --max-delete-keys allows in one
                                write (default 10000); nothing was applied.
                                Delete the range in pieces: read its keys
                                (CLERK_RANGE_KEYS_ONLY, a limit) and delete
                                up to the last one read, as kvctl del does.
                                Also: a put (or a transaction's puts) would
                                give a lease more keys than the leader's
                                --max-lease-keys (default 100000); nothing
                                was applied */
};

/* How reads are served. */
enum clerk_read_mode {
    CLERK_READ_LINEARIZABLE = 0, /* by the leader, after confirming it leads */
    CLERK_READ_STALE = 1,        /* by any server, from its applied state */
    CLERK_READ_STALE_HEDGED = 2, /* as STALE, and a read not answered after
                                    the p95 of this handle's recent stale
                                    reads is also sent to a second server:
                                    the first answer wins (docs/clerk.md) */
};

/* Settings of a handle. Zero fields mean the defaults. */
struct clerk_options
{
    unsigned deadline_ms;           /* per operation, retries included; 5000 */
    unsigned attempt_ms;            /* per call to one server; 1000 */
    enum clerk_read_mode read_mode; /* linearizable */
    const char *user;     /* authenticate as this user (copied; NULL or "":
                             no user). The handle authenticates lazily at
                             the first server it calls, sends the token
                             with every call, and authenticates again once
                             when a call is refused UNAUTHENTICATED (an
                             expired token), then retries it (a write with
                             the same request id). A wrong user or
                             password ends the call UNAUTHENTICATED, even
                             over a client certificate that names a
                             user */
    const char *password; /* its password (copied; kept in the handle's
                             memory until clerk_close, which wipes it) */
    const char *cacert;   /* talk TLS, trusting servers whose certificate
                             this PEM CA file signed and that name the
                             address dialled (NULL: plain TCP). Read at
                             clerk_open */
    const char *cert;     /* with cacert: a client certificate (PEM) to
                             show, for servers that require one (its CN
                             is the user); NULL: none */
    const char *key;      /* its private key (PEM) */
};

struct clerk;

/**
 * Open a handle to a cluster. No connection is made until the first call.
 * @param out set to the handle
 * @param servers "HOST:PORT,HOST:PORT,..." ([v6addr]:port for IPv6); the
 *   kvserver form "ID=HOST:PORT" is accepted too. Copied.
 * @param opts settings (copied), or NULL for the defaults
 * @return CLERK_OK, CLERK_INVALID (empty or malformed list, or TLS files
 *   that do not load; clerk_open_error() says why) or CLERK_NOMEM
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
    bool reachable;          /* it answered, for the handle's cluster */
    bool other_cluster;      /* it answered for another cluster than the
                                handle's (not one of its members: reachable
                                is false, error names both ids) */
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
 * the leader. A server that answers for another cluster than the handle's
 * (the id given, or of its first answer) is marked other_cluster, not
 * reachable: it is no member, and its leader is not taken for the
 * cluster's.
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

/* One member of the cluster, from clerk_member_list/clerk_member_change. */
struct clerk_member
{
    uint64_t id;            /* node id */
    bool learner;           /* receives the log, has no vote (yet) */
    char peer_address[300]; /* HOST:PORT where the nodes reach it (Raft) */
    char address[300];      /* HOST:PORT where clients reach it */
};

/* The cluster's membership as its leader knows it. */
struct clerk_members
{
    struct clerk_member *members; /* the members */
    size_t n;                     /* their number */
    bool committed;      /* the last change is committed (one change at a
                            time: the next waits until it is) */
    uint64_t leader_id;  /* the node that answered leads (0: none known) */
    uint64_t cluster_id; /* the cluster's id */
    uint64_t *removed;   /* ids removed for good: never members again */
    size_t n_removed;    /* their number */
};

/* A membership change (clerk_member_change). */
enum clerk_member_change {
    CLERK_MEMBER_ADD = 0,     /* add a node as a learner: it gets the log
                                 (start it with kvserver --join) */
    CLERK_MEMBER_PROMOTE = 1, /* make a learner that caught up a voter */
    CLERK_MEMBER_REMOVE = 2,  /* remove a member for good (the leader too:
                                 it hands leadership over first) */
    CLERK_MEMBER_UPDATE = 3,  /* change a member's addresses */
};

/**
 * The cluster's members, from its leader (or, when no leader answers
 * before the deadline, CLERK_UNAVAILABLE).
 * @param out set to the list (free with clerk_members_free)
 * @return CLERK_OK, CLERK_UNAVAILABLE, CLERK_INVALID, CLERK_NOMEM
 */
int clerk_member_list(struct clerk *c, struct clerk_members **out);

/**
 * Change the membership, one node at a time, through the leader: returns
 * once the change is committed and applied there. Grow a cluster by
 * adding a node (ADD, with its addresses), starting it with kvserver
 * --join, and promoting it once it caught up (PROMOTE waits for that no
 * longer than a call: it answers CLERK_UNAVAILABLE while the learner is
 * behind). Replace a failed node by adding the new one under a new id,
 * promoting it, then removing the old one. A removed id is never added
 * again.
 * @param peer_address, address for ADD and UPDATE: the node's HOST:PORT
 *   for the other nodes and for clients (NULL otherwise)
 * @param after if not NULL, set to the membership after the change (free
 *   with clerk_members_free)
 * @return CLERK_OK, CLERK_BAD_REQUEST (not a member, already one, a
 *   removed id, the last voter, bad addresses), CLERK_UNAVAILABLE (no
 *   leader; another change is not committed yet; the learner has not
 *   caught up), CLERK_TIMEOUT (proposed; not known to be applied: check
 *   clerk_member_list), CLERK_UNAUTHENTICATED, CLERK_PERMISSION_DENIED
 *   (root only, with auth), CLERK_INVALID, CLERK_NOMEM. clerk_errmsg says
 *   which.
 */
int clerk_member_change(struct clerk *c,
                        enum clerk_member_change type,
                        uint64_t id,
                        const char *peer_address,
                        const char *address,
                        struct clerk_members **after);

void clerk_members_free(struct clerk_members *m);

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

/* ------------------------------------------------------ users and roles
 *
 * etcd's auth model (docs/auth.md). Once auth is enabled, every call
 * carries the token of the handle's user (clerk_options.user), and all the
 * functions below but clerk_auth_status need a user with the role root
 * (clerk_user_passwd also the user itself, clerk_user_get the user
 * itself). Changes, gets and lists go to the leader (so they see every
 * change acknowledged before); clerk_auth_status is answered by any server
 * from its applied state. Each returns CLERK_OK, or:
 * CLERK_UNAUTHENTICATED, CLERK_PERMISSION_DENIED, CLERK_NOT_FOUND (no such
 * user or role, or not granted), CLERK_BAD_REQUEST (exists already, a bad
 * name, auth enable without a user root that has the role root),
 * CLERK_UNAVAILABLE (no leader answered before the deadline; not applied),
 * CLERK_UNKNOWN_OUTCOME (a change may or may not have been applied),
 * CLERK_INVALID, CLERK_NOMEM. clerk_errmsg says what the server said. */

/* What a permission allows. */
enum clerk_perm_type {
    CLERK_PERM_READ = 0,
    CLERK_PERM_WRITE = 1,
    CLERK_PERM_READWRITE = 2,
};

/* A permission of a role: keys k with key <= k < range_end (bytewise);
 * range_end empty: key alone; range_end "\0" (one zero byte): every key
 * from key on. */
struct clerk_permission
{
    enum clerk_perm_type type; /* what it allows */
    void *key;                 /* first key (NUL-terminated copy) */
    size_t key_len;            /* its length */
    void *range_end;           /* end of the range (NUL-terminated copy) */
    size_t range_end_len;      /* its length (0: key alone) */
};

/**
 * Add a user. The server hashes the password (Argon2id) before it goes
 * into the log; the plain password is never stored.
 * @param name 1 to 128 printable bytes, no '/', ':' or space (copied)
 * @param password not empty (copied)
 * @return as the block above says
 */
int clerk_user_add(struct clerk *c, const char *name, const char *password);

/**
 * Delete a user (not root while auth is enabled); its tokens stop working.
 * @return as the block above says
 */
int clerk_user_delete(struct clerk *c, const char *name);

/**
 * Change a user's password; its earlier tokens stop working. When it is
 * the handle's own user, the handle uses the new password from now on.
 * @return as the block above says
 */
int clerk_user_passwd(struct clerk *c, const char *name, const char *password);

/**
 * Grant a role (one added with clerk_role_add, or the built-in "root").
 * @return as the block above says
 */
int clerk_user_grant_role(struct clerk *c, const char *user, const char *role);

/**
 * Take a role from a user.
 * @return as the block above says (CLERK_NOT_FOUND: it did not have it)
 */
int clerk_user_revoke_role(struct clerk *c, const char *user, const char *role);

/**
 * A user's roles.
 * @param roles set to an array of n names, sorted (one allocation: free
 *   with clerk_free)
 * @return as the block above says
 */
int clerk_user_get(struct clerk *c, const char *name, char ***roles, size_t *n);

/**
 * All user names, sorted.
 * @param names set to an array of n names (free with clerk_free)
 * @return as the block above says
 */
int clerk_user_list(struct clerk *c, char ***names, size_t *n);

/**
 * Add a role (without permissions).
 * @return as the block above says
 */
int clerk_role_add(struct clerk *c, const char *name);

/**
 * Delete a role; users that had it lose it.
 * @return as the block above says
 */
int clerk_role_delete(struct clerk *c, const char *name);

/**
 * Grant a role a permission on a key or range (see struct
 * clerk_permission; for a prefix P use range_end = clerk_prefix_end(P)).
 * Granting the same key and range_end again replaces its type.
 * @return as the block above says
 */
int clerk_role_grant_permission(struct clerk *c,
                                const char *role,
                                enum clerk_perm_type type,
                                const void *key,
                                size_t key_len,
                                const void *range_end,
                                size_t range_end_len);

/**
 * Take a permission (the same key and range_end) from a role.
 * @return as the block above says (CLERK_NOT_FOUND: the role has none)
 */
int clerk_role_revoke_permission(struct clerk *c,
                                 const char *role,
                                 const void *key,
                                 size_t key_len,
                                 const void *range_end,
                                 size_t range_end_len);

/**
 * A role's permissions.
 * @param perms set to an array of n (one allocation: free with clerk_free)
 * @return as the block above says
 */
int clerk_role_get(struct clerk *c,
                   const char *name,
                   struct clerk_permission **perms,
                   size_t *n);

/**
 * All role names (with the built-in root), sorted.
 * @param names set to an array of n names (free with clerk_free)
 * @return as the block above says
 */
int clerk_role_list(struct clerk *c, char ***names, size_t *n);

/**
 * Turn auth on: from now on every call needs a token. Needs a user
 * "root" with the role "root" (CLERK_BAD_REQUEST otherwise).
 * @return as the block above says
 */
int clerk_auth_enable(struct clerk *c);

/**
 * Turn auth off; the tokens made until now stop working for good.
 * @return as the block above says
 */
int clerk_auth_disable(struct clerk *c);

/**
 * Whether auth is on (open to anyone).
 * @param enabled set
 * @param revision if not NULL, set to the log index of the last auth
 *   change the answering server applied
 * @return as the block above says
 */
int clerk_auth_status(struct clerk *c, bool *enabled, uint64_t *revision);

/**
 * The range_end that makes a permission cover every key that starts with
 * prefix (etcd's prefix end): the prefix with its last byte below 0xff
 * incremented and the rest cut, or "\0" when all bytes are 0xff.
 * @param out at least len bytes (1 when len is 0)
 * @return the length written to out
 */
size_t clerk_prefix_end(const void *prefix, size_t len, void *out);

/* ---------------------------------------------------------- data model
 *
 * etcd's v3 data model (docs/clerk.md, "Ranges, transactions, history").
 * One cluster-wide revision counts the store's changes: 1 for an empty
 * store, and each write (a transaction with writes counts once) makes the
 * next one. Every key records the revision that created it, the one that
 * last changed it, and its version (changes since it was created).
 *
 * A range of keys is given as key and range_end: range_end NULL (or
 * length 0) is key alone; [key, range_end) bytewise; range_end "\0" (one
 * zero byte) every key from key on; key "\0" with range_end "\0" every
 * key; clerk_prefix_end gives the range_end of a prefix.
 *
 * Results are allocated by the library and owned by the caller: each
 * result type is freed, with everything it points to, by its one _free
 * function (NULL is fine). Keys and values in results are copies, each
 * followed by a NUL byte that their length does not count.
 *
 * Reads (clerk_range, clerk_get_ex, clerk_events) follow the handle's read
 * mode; writes (clerk_put_ex, clerk_delete_range, clerk_txn_commit) go
 * through the handle's session like clerk_put: retried with the same
 * request id, applied exactly once. */

/* A key as stored. */
struct clerk_kv
{
    void *key;                /* the key (NUL-terminated copy) */
    size_t key_len;           /* its length */
    void *value;              /* its value (empty with keys-only) */
    size_t value_len;         /* its length */
    uint64_t create_revision; /* revision of the write that created it */
    uint64_t mod_revision;    /* revision of its last change */
    uint64_t version;         /* changes since created (1 after the put
                                 that created it) */
    uint64_t lease;           /* the lease it is attached to (0: none) */
};

/* clerk_range flags. */
#define CLERK_RANGE_KEYS_ONLY    0x1u /* no values */
#define CLERK_RANGE_COUNT_ONLY   0x2u /* only the count: no keys */
#define CLERK_RANGE_SORT_ASCEND  0x4u /* by key, ascending (the default) */
#define CLERK_RANGE_SORT_DESCEND 0x8u /* by key, descending */
#define CLERK_RANGE_NO_COUNT                    \
    0x10u /* count only the keys answered, not  \
            the rest of a range cut by limit or \
            the 4 MiB bound: the server walks   \
            the rest to count it (about 0.5 s   \
            per million keys, holding its       \
            other requests); later pages of a   \
            long range need no count */

/* What clerk_range found. */
struct clerk_range_result
{
    uint64_t revision;    /* the store's revision it was served at */
    struct clerk_kv *kvs; /* the keys, in the order asked for */
    size_t n_kvs;         /* their number */
    bool more;            /* keys in the range were left out: by the
                             limit, or because the reply reached the
                             server's bound (4 MiB): see clerk_range */
    uint64_t count;       /* keys in the whole range, limit or not
                             (CLERK_RANGE_NO_COUNT: the keys answered) */
};

/**
 * Read the keys in a range, with their revisions.
 *
 * A reply holds at most 4 MiB of keys and values: a range that is larger
 * comes back cut, with more set and fewer than limit keys (or limit 0).
 * For the rest, ask again from the last key returned with a zero byte
 * appended (ascending order), the same range_end, and limit reduced by
 * what came; pages of one range may be served at different revisions.
 * `kvctl get` does this by itself.
 *
 * @param key first key (copied; 1 to 511 bytes)
 * @param range_end see the block above (copied)
 * @param limit at most this many keys (0: no limit)
 * @param flags CLERK_RANGE_* or 0
 * @param out set to the result (free with clerk_range_result_free)
 * @return CLERK_OK (also for an empty range), CLERK_TIMEOUT,
 *   CLERK_UNAVAILABLE, CLERK_BAD_REQUEST, CLERK_VALUE_TOO_LARGE,
 *   CLERK_UNAUTHENTICATED, CLERK_PERMISSION_DENIED, CLERK_INVALID,
 *   CLERK_NOMEM
 */
int clerk_range(struct clerk *c,
                const void *key,
                size_t key_len,
                const void *range_end,
                size_t range_end_len,
                uint64_t limit,
                unsigned flags,
                struct clerk_range_result **out);

/**
 * Free a clerk_range result and everything in it.
 * @param r the result, or NULL
 */
void clerk_range_result_free(struct clerk_range_result *r);

/**
 * Read one key with its revisions (clerk_get with more to say).
 * @param kv set to a copy of the key (free with clerk_kv_free); NULL when
 *   the result is not CLERK_OK
 * @param revision if not NULL, set to the store's revision the read was
 *   served at (also with CLERK_NOT_FOUND)
 * @return CLERK_OK, CLERK_NOT_FOUND, or as clerk_range
 */
int clerk_get_ex(struct clerk *c,
                 const void *key,
                 size_t key_len,
                 struct clerk_kv **kv,
                 uint64_t *revision);

/**
 * Free what clerk_get_ex returned.
 * @param kv the key, or NULL
 */
void clerk_kv_free(struct clerk_kv *kv);

/* clerk_put_ex and clerk_txn_put flags. */
#define CLERK_PUT_PREV_KV 0x1u /* answer the key as it was before */
#define CLERK_PUT_IGNORE_VALUE                   \
    0x2u /* keep the current value (the key must \
            exist; value must be empty): bumps   \
            mod_revision and version */

/* What a put did. */
struct clerk_put_result
{
    uint64_t revision;        /* the revision this write made */
    struct clerk_kv *prev_kv; /* with CLERK_PUT_PREV_KV: the key before
                                 the put; NULL when it did not exist */
};

/**
 * Set a key to a value (clerk_put with more to say).
 * @param flags CLERK_PUT_* or 0
 * @param out if not NULL, set to the result on CLERK_OK (free with
 *   clerk_put_result_free), else to NULL
 * @return as clerk_put (CLERK_BAD_REQUEST: CLERK_PUT_IGNORE_VALUE on a key
 *   that does not exist)
 */
int clerk_put_ex(struct clerk *c,
                 const void *key,
                 size_t key_len,
                 const void *value,
                 size_t value_len,
                 unsigned flags,
                 struct clerk_put_result **out);

/**
 * Free a put result.
 * @param r the result, or NULL
 */
void clerk_put_result_free(struct clerk_put_result *r);

/* clerk_delete_range and clerk_txn_delete flags. */
#define CLERK_DELETE_PREV_KV 0x1u /* answer the deleted keys */

/* What a delete of a range did. */
struct clerk_delete_result
{
    uint64_t revision;         /* the revision it made (the store's when
                                  nothing was deleted) */
    uint64_t deleted;          /* keys deleted */
    struct clerk_kv *prev_kvs; /* with CLERK_DELETE_PREV_KV: the deleted
                                  keys as they were */
    size_t n_prev_kvs;         /* their number */
    bool more;                 /* clerk_delete_range_limit: keys of the
                                  range are left */
};

/**
 * Delete every key in a range (one write: one revision).
 * @param key, range_end the range (see above; copied)
 * @param flags CLERK_DELETE_* or 0
 * @param out if not NULL, set to the result on CLERK_OK (free with
 *   clerk_delete_result_free), else to NULL
 * @return CLERK_OK (also when nothing was in the range: deleted is 0), or
 *   as clerk_put
 */
int clerk_delete_range(struct clerk *c,
                       const void *key,
                       size_t key_len,
                       const void *range_end,
                       size_t range_end_len,
                       unsigned flags,
                       struct clerk_delete_result **out);

/**
 * Delete the first @limit keys of a range (in key order; one write: one
 * revision); r->more says whether keys are left. A range larger than the
 * leader allows in one write (CLERK_TOO_MANY_KEYS from clerk_delete_range)
 * is deleted in pieces this way, each its own revision: call again with
 * the same range until more is false. Needs every node of the cluster at
 * a version that has it: an older node deletes the whole range.
 * @param limit at most this many keys (0: all, as clerk_delete_range)
 * @return as clerk_delete_range
 */
int clerk_delete_range_limit(struct clerk *c,
                             const void *key,
                             size_t key_len,
                             const void *range_end,
                             size_t range_end_len,
                             uint64_t limit,
                             unsigned flags,
                             struct clerk_delete_result **out);

/**
 * Free a delete result.
 * @param r the result, or NULL
 */
void clerk_delete_result_free(struct clerk_delete_result *r);

/* ------------------------------------------------------- transactions
 *
 *   struct clerk_txn *t = clerk_txn_new();
 *   clerk_txn_compare_version(t, "lock", 4, CLERK_CMP_EQUAL, 0);
 *   clerk_txn_put(t, CLERK_TXN_THEN, "lock", 4, "me", 2, 0);
 *   clerk_txn_range(t, CLERK_TXN_ELSE, "lock", 4, NULL, 0, 0, 0);
 *   struct clerk_txn_result *r;
 *   if (clerk_txn_commit(ck, t, &r) == CLERK_OK && r->succeeded) ...
 *   clerk_txn_result_free(r);
 *   clerk_txn_free(t);
 *
 * If every compare holds, the THEN ops run, else the ELSE ops: in order,
 * each seeing those before it, all at one revision (none when no op
 * writes). At most CLERK_TXN_MAX_OPS ops in all, nested transactions
 * included, nested at most CLERK_TXN_MAX_DEPTH deep: the builder refuses
 * more (CLERK_BAD_REQUEST). The builder's calls copy their keys and
 * values. */

#define CLERK_TXN_MAX_OPS   128 /* ops in one transaction, nested included */
#define CLERK_TXN_MAX_DEPTH 8   /* transactions inside transactions */

/* How a compare weighs the key's target against the value given. */
enum clerk_compare_result {
    CLERK_CMP_EQUAL = 0,
    CLERK_CMP_GREATER = 1, /* the key's is greater */
    CLERK_CMP_LESS = 2,
    CLERK_CMP_NOT_EQUAL = 3,
};

/* Which ops an op is added to. */
enum clerk_txn_branch {
    CLERK_TXN_THEN = 0, /* run when every compare holds */
    CLERK_TXN_ELSE = 1, /* run otherwise */
};

struct clerk_txn;

/**
 * A new, empty transaction (no compares: it succeeds).
 * @return the builder (free with clerk_txn_free), or NULL without memory
 */
struct clerk_txn *clerk_txn_new(void);

/**
 * Free a transaction builder (and the nested ones given to it).
 * @param t the builder, or NULL
 */
void clerk_txn_free(struct clerk_txn *t);

/**
 * Compare a key's value. A key that does not exist has no value: every
 * value compare on it is false.
 * @return CLERK_OK, CLERK_INVALID (NULL, bad result), CLERK_BAD_REQUEST
 *   (empty key), CLERK_NOMEM
 */
int clerk_txn_compare_value(struct clerk_txn *t,
                            const void *key,
                            size_t key_len,
                            enum clerk_compare_result result,
                            const void *value,
                            size_t value_len);

/**
 * Compare a key's version (0: the key does not exist).
 * @return as clerk_txn_compare_value
 */
int clerk_txn_compare_version(struct clerk_txn *t,
                              const void *key,
                              size_t key_len,
                              enum clerk_compare_result result,
                              uint64_t version);

/**
 * Compare a key's create revision (0: the key does not exist).
 * @return as clerk_txn_compare_value
 */
int clerk_txn_compare_create(struct clerk_txn *t,
                             const void *key,
                             size_t key_len,
                             enum clerk_compare_result result,
                             uint64_t revision);

/**
 * Compare a key's mod revision (0: the key does not exist).
 * @return as clerk_txn_compare_value
 */
int clerk_txn_compare_mod(struct clerk_txn *t,
                          const void *key,
                          size_t key_len,
                          enum clerk_compare_result result,
                          uint64_t revision);

/**
 * Make the last compare added hold for every key in [key, range_end)
 * instead of key alone (range_end as in clerk_range).
 * @return CLERK_OK, CLERK_INVALID (no compare yet), CLERK_NOMEM
 */
int clerk_txn_compare_range_end(struct clerk_txn *t,
                                const void *range_end,
                                size_t range_end_len);

/**
 * Add a put to a branch.
 * @param flags CLERK_PUT_* or 0
 * @return CLERK_OK, CLERK_INVALID, CLERK_BAD_REQUEST (empty key, over
 *   CLERK_TXN_MAX_OPS), CLERK_NOMEM
 */
int clerk_txn_put(struct clerk_txn *t,
                  enum clerk_txn_branch branch,
                  const void *key,
                  size_t key_len,
                  const void *value,
                  size_t value_len,
                  unsigned flags);

/**
 * Add a delete of a range (range_end NULL: key alone) to a branch.
 * @param flags CLERK_DELETE_* or 0
 * @return as clerk_txn_put
 */
int clerk_txn_delete(struct clerk_txn *t,
                     enum clerk_txn_branch branch,
                     const void *key,
                     size_t key_len,
                     const void *range_end,
                     size_t range_end_len,
                     unsigned flags);

/**
 * Add a read of a range (range_end NULL: key alone) to a branch.
 * @param limit at most this many keys (0: no limit)
 * @param flags CLERK_RANGE_* or 0
 * @return as clerk_txn_put
 */
int clerk_txn_range(struct clerk_txn *t,
                    enum clerk_txn_branch branch,
                    const void *key,
                    size_t key_len,
                    const void *range_end,
                    size_t range_end_len,
                    uint64_t limit,
                    unsigned flags);

/**
 * Add a nested transaction to a branch.
 * @param nested handed over on CLERK_OK (freed with t); the caller's
 *   otherwise
 * @return CLERK_OK, CLERK_INVALID (NULL, t itself),
 *   CLERK_BAD_REQUEST (over CLERK_TXN_MAX_OPS or CLERK_TXN_MAX_DEPTH),
 *   CLERK_NOMEM
 */
int clerk_txn_txn(struct clerk_txn *t,
                  enum clerk_txn_branch branch,
                  struct clerk_txn *nested);

/* What kind of op a response answers. */
enum clerk_op_type {
    CLERK_OP_RANGE = 0,
    CLERK_OP_PUT = 1,
    CLERK_OP_DELETE = 2,
    CLERK_OP_TXN = 3,
};

struct clerk_txn_result;

/* The answer of one op of the branch that ran: the member of its type is
 * set (their revision fields hold the transaction's revision). */
struct clerk_txn_response
{
    enum clerk_op_type type;          /* which member is set */
    struct clerk_range_result *range; /* CLERK_OP_RANGE */
    struct clerk_put_result *put;     /* CLERK_OP_PUT */
    struct clerk_delete_result *del;  /* CLERK_OP_DELETE */
    struct clerk_txn_result *txn;     /* CLERK_OP_TXN */
};

/* What a transaction did. */
struct clerk_txn_result
{
    uint64_t revision;                    /* the revision it made, or the
                                             store's when nothing was
                                             written */
    bool succeeded;                       /* the compares held: THEN ran */
    struct clerk_txn_response *responses; /* one per op of that branch */
    size_t n_responses;                   /* their number */
};

/**
 * Run a transaction: one write through the handle's session (retried
 * with the same request id, applied exactly once). One with no put or
 * delete in either branch is a linearizable read instead, as clerk_range
 * (no log entry, no revision; a deadline that passes is CLERK_TIMEOUT,
 * never CLERK_UNKNOWN_OUTCOME); it still goes through a session, which
 * servers older than read-only transactions ask of every Txn (so a new
 * handle's first one opens a session: one log entry). The builder is not
 * changed; it may be committed again.
 * @param out if not NULL, set to the result on CLERK_OK (free with
 *   clerk_txn_result_free), else to NULL
 * @return CLERK_OK (whether the compares held or not: see succeeded), or
 *   as clerk_put
 */
int clerk_txn_commit(struct clerk *c,
                     const struct clerk_txn *t,
                     struct clerk_txn_result **out);

/**
 * Free a transaction result and everything in it.
 * @param r the result, or NULL
 */
void clerk_txn_result_free(struct clerk_txn_result *r);

/* ------------------------------------------------------------- history */

/**
 * Drop the history of changes up to and including a revision (the keys
 * are not touched): clerk_events can no longer start there. Not a session
 * write; a retried compact that finds its own work done answers CLERK_OK.
 * @param revision not newer than the store's
 * @param compact_revision if not NULL, set to where the history now
 *   starts after (with CLERK_COMPACTED: where it started already)
 * @return CLERK_OK, CLERK_COMPACTED (revision is compacted already),
 *   CLERK_FUTURE_REVISION, CLERK_UNKNOWN_OUTCOME, CLERK_UNAVAILABLE,
 *   CLERK_UNAUTHENTICATED, CLERK_PERMISSION_DENIED, CLERK_INVALID
 */
int clerk_compact(struct clerk *c,
                  uint64_t revision,
                  uint64_t *compact_revision);

/* A change to a key, from the history. */
enum clerk_event_type {
    CLERK_EVENT_PUT = 0,
    CLERK_EVENT_DELETE = 1,
};

struct clerk_event
{
    enum clerk_event_type type; /* put or delete */
    struct clerk_kv kv;         /* the key after the change; a delete has
                                   the key and mod_revision only */
};

/* A key before a change (watches with prev_kv). */
struct clerk_prev_kv
{
    bool known;         /* kv holds the key's version before the change */
    bool missing;       /* the key existed, but that version is no longer
                           kept (compacted) */
    struct clerk_kv kv; /* when known */
};

/* What clerk_events found (and what a watch delivers). */
struct clerk_events_result
{
    uint64_t revision;              /* the store's revision */
    uint64_t compact_revision;      /* history is kept after this one */
    struct clerk_event *events;     /* oldest first */
    size_t n_events;                /* their number */
    bool more;                      /* events were left out (limit or the
                                       reply's size bound) */
    uint64_t next_revision;         /* where the next poll starts */
    struct clerk_prev_kv *prev_kvs; /* a watch with prev_kv: one per event
                                       (neither known nor missing: the key
                                       did not exist); else NULL */
};

/**
 * Read the history: the changes made at revisions >= start_revision to
 * keys in the range, oldest first (a poll form of watch). Poll again from
 * next_revision for what follows.
 * @param start_revision first revision (0: the oldest kept)
 * @param key, range_end the keys (see above; copied); key NULL (or of
 *   length 0) with no range_end: every key's changes
 * @param limit at most this many events (0: as many as fit in a reply)
 * @param out set to the result on CLERK_OK and CLERK_COMPACTED (there with
 *   revision and compact_revision only; free with
 *   clerk_events_result_free), else to NULL
 * @return CLERK_OK, CLERK_COMPACTED (start_revision <= compact_revision:
 *   no longer kept), CLERK_FUTURE_REVISION, or as clerk_range
 */
int clerk_events(struct clerk *c,
                 uint64_t start_revision,
                 const void *key,
                 size_t key_len,
                 const void *range_end,
                 size_t range_end_len,
                 uint64_t limit,
                 struct clerk_events_result **out);

/**
 * Free a clerk_events result and everything in it.
 * @param r the result, or NULL
 */
void clerk_events_result_free(struct clerk_events_result *r);

/* --------------------------------------------------------------- watch */

/* A watch: the changes to a key or a range as they happen, from a
 * revision on, in revision order. It has a connection of its own to one
 * server (any node serves watches); when that breaks, or the node stops,
 * it resumes on another from the revision after the last it delivered, so
 * that no change is missed and none comes twice. A watch is used by one
 * thread at a time; the handle it came from must outlive it (the handle's
 * lock is taken only while the watch connects). */
struct clerk_watch;

struct clerk_watch_options
{
    uint64_t start_revision; /* first revision to deliver; 0: the changes
                                after the serving node's revision */
    bool no_put;             /* leave out puts */
    bool no_delete;          /* leave out deletes */
    bool require_leader;     /* a node that loses its leader ends the
                                stream (the watch moves on to another) */
    unsigned progress_ms;    /* while nothing changes, an empty batch at
                                least this often (0: the server's, 10 s) */
    bool prev_kv;            /* give each event the key as it was before
                                (clerk_events_result.prev_kvs) */
};

/**
 * Start watching [key, range_end) (range_end as clerk_range: NULL for the
 * key alone, clerk_prefix_end for a prefix, "\0" for every key from key
 * on). Returns once a node has accepted the watch.
 * @param o options, or NULL for the defaults
 * @param out set to the watch on CLERK_OK, else NULL
 * @return CLERK_OK, CLERK_COMPACTED (start_revision is no longer kept),
 *   CLERK_BAD_REQUEST, CLERK_UNAUTHENTICATED, CLERK_PERMISSION_DENIED,
 *   CLERK_UNAVAILABLE (no node accepted it within the handle's deadline),
 *   CLERK_INVALID, CLERK_NOMEM; the handle's clerk_errmsg says why
 */
int clerk_watch_open(struct clerk *c,
                     const void *key,
                     size_t key_len,
                     const void *range_end,
                     size_t range_end_len,
                     const struct clerk_watch_options *o,
                     struct clerk_watch **out);

/**
 * Wait for the next batch: the changes of one or more revisions, oldest
 * first, or none (a progress notification). In every batch, revision says
 * that every change up to it has been delivered (resume from revision + 1).
 * @param timeout_ms the longest wait
 * @param out set to the batch on CLERK_OK (free with
 *   clerk_events_result_free), else NULL
 * @return CLERK_OK; CLERK_TIMEOUT (nothing within timeout_ms: call again);
 *   or the watch is over: CLERK_COMPACTED (it fell behind the history
 *   kept), CLERK_PERMISSION_DENIED, CLERK_UNAUTHENTICATED, CLERK_INTERNAL
 *   (clerk_watch_errmsg says why)
 */
int clerk_watch_next(struct clerk_watch *w,
                     unsigned timeout_ms,
                     struct clerk_events_result **out);

/* What clerk_watch_start calls: each batch (borrowed: freed when the
 * callback returns), or once, with batch NULL and err set, when the watch
 * is over (as clerk_watch_next's errors). */
typedef void (*clerk_watch_cb)(struct clerk_watch *w,
                               const struct clerk_events_result *batch,
                               int err,
                               void *arg);

/**
 * clerk_watch_open, then a thread of the watch's own that hands every
 * batch to @cb, in order, one at a time. clerk_watch_close stops the
 * thread (it may be called from the callback) and frees the watch; do
 * not call clerk_watch_next on such a watch.
 * @return as clerk_watch_open; CLERK_NOMEM when the thread cannot start
 */
int clerk_watch_start(struct clerk *c,
                      const void *key,
                      size_t key_len,
                      const void *range_end,
                      size_t range_end_len,
                      const struct clerk_watch_options *o,
                      clerk_watch_cb cb,
                      void *arg,
                      struct clerk_watch **out);

/**
 * Every change up to this revision has been handed to the caller: right
 * after clerk_watch_open, the revision the watch starts after (its
 * start_revision - 1, or for a watch from now the revision the node had
 * reached); then the revision of the last batch clerk_watch_next returned.
 * Batches that came but were not taken yet are past it. With
 * clerk_watch_start, call it from the callback only.
 */
uint64_t clerk_watch_revision(const struct clerk_watch *w);

/**
 * Why the watch ended, or what its last reconnect met.
 */
const char *clerk_watch_errmsg(const struct clerk_watch *w);

/**
 * Cancel a watch and free it.
 * @param w the watch, or NULL
 */
void clerk_watch_close(struct clerk_watch *w);
/* -------------------------------------------------------------- leases
 *
 *   uint64_t id;
 *   clerk_lease_grant(ck, 10, 0, &id, NULL);          (a 10 s lease)
 *   clerk_put_lease(ck, "svc/a", 5, "addr", 4, id, 0, NULL);
 *   struct clerk_keepalive *ka;
 *   clerk_lease_keepalive_start(ck, id, on_lost, NULL, &ka);
 *   ... while it runs, svc/a stays; when this process dies, the lease
 *   expires and svc/a is deleted ...
 *   clerk_lease_keepalive_stop(ka);
 *   clerk_lease_revoke(ck, id, NULL, NULL);
 *
 * A lease is granted with a TTL in seconds; keys put with it are deleted,
 * all at one revision, when it is revoked or when the leader sees no
 * keep-alive for a whole TTL (docs/data-model.md, "Leases"). Lease ids
 * are 64-bit numbers below 2^63; kvctl prints them in hex. Keep-alives,
 * time-to-live and list calls are answered by the leader once it has
 * proven it still leads. */

/**
 * Grant a lease. The cluster raises a TTL below its minimum
 * (kvserver --lease-min-ttl, 2 s by default) to it.
 * @param ttl_s seconds, 1 to 31536000 (a year)
 * @param id the id to grant (0: the leader picks a random one); granting
 *   an id that exists fails with CLERK_BAD_REQUEST
 * @param id_out if not NULL, set to the lease's id
 * @param ttl_out if not NULL, set to the TTL it was granted with
 * @return CLERK_OK, CLERK_BAD_REQUEST (bad TTL, the id exists), or as
 *   clerk_put (a write: retried with the same request id)
 */
int clerk_lease_grant(struct clerk *c,
                      int64_t ttl_s,
                      uint64_t id,
                      uint64_t *id_out,
                      int64_t *ttl_out);

/**
 * Revoke a lease: delete it and every key attached to it, at one
 * revision.
 * @param revision if not NULL, set to the revision that deleted its keys
 *   (the store's when it had none)
 * @param deleted if not NULL, set to the number of keys deleted
 * @return CLERK_OK, CLERK_LEASE_NOT_FOUND (gone already: expired, revoked
 *   before), or as clerk_put
 */
int clerk_lease_revoke(struct clerk *c,
                       uint64_t id,
                       uint64_t *revision,
                       uint64_t *deleted);

/**
 * Renew a lease once, to its full TTL from the moment the leader answers.
 * The caller must count the lease lost a TTL after it SENT the last
 * successful renewal (not after it got the answer): the leader may have
 * started the TTL any time in between.
 * @param ttl_out if not NULL, set to the TTL it now has (seconds)
 * @return CLERK_OK, CLERK_LEASE_NOT_FOUND (it expired or was revoked),
 *   CLERK_TIMEOUT (no leader answered before the deadline: not renewed),
 *   CLERK_BAD_REQUEST (id 0), CLERK_UNAUTHENTICATED, CLERK_INVALID
 */
int clerk_lease_keepalive_once(struct clerk *c, uint64_t id, int64_t *ttl_out);

/* What clerk_lease_timetolive found. */
struct clerk_lease_ttl_result
{
    uint64_t id;           /* the lease */
    int64_t ttl;           /* whole seconds it has left, by the leader's
                              clock (0: due to expire now) */
    int64_t granted_ttl;   /* the TTL it was granted with */
    uint64_t revision;     /* the store's revision */
    struct clerk_kv *keys; /* with keys: its keys, key and key_len only
                              (value empty), in key order */
    size_t n_keys;         /* their number */
};

/**
 * How long a lease has left, and optionally its keys.
 * @param keys list its keys too (with auth enabled: root, or a user who
 *   may read every one of them)
 * @param out set to the result on CLERK_OK (free with
 *   clerk_lease_ttl_result_free), else to NULL
 * @return CLERK_OK, CLERK_LEASE_NOT_FOUND, CLERK_PERMISSION_DENIED, or as
 *   clerk_lease_keepalive_once
 */
int clerk_lease_timetolive(struct clerk *c,
                           uint64_t id,
                           bool keys,
                           struct clerk_lease_ttl_result **out);

/**
 * Free a time-to-live result.
 * @param r the result, or NULL
 */
void clerk_lease_ttl_result_free(struct clerk_lease_ttl_result *r);

/**
 * Every lease's id, ascending.
 * @param ids set to an array of *n ids (free with clerk_free; NULL when
 *   there is none)
 * @return CLERK_OK, or as clerk_lease_keepalive_once
 */
int clerk_lease_list(struct clerk *c, uint64_t **ids, size_t *n);

/**
 * clerk_put_ex, attaching the key to a lease (it is deleted when the
 * lease ends; a put without the lease, as clerk_put_ex does, takes it off
 * the lease again).
 * @param lease the lease (0: none)
 * @return as clerk_put_ex, or CLERK_LEASE_NOT_FOUND (the lease does not
 *   exist: nothing was written), CLERK_VALUE_TOO_LARGE (a key attached to
 *   a lease is at most 503 bytes)
 */
int clerk_put_lease(struct clerk *c,
                    const void *key,
                    size_t key_len,
                    const void *value,
                    size_t value_len,
                    uint64_t lease,
                    unsigned flags,
                    struct clerk_put_result **out);

/**
 * Called once when a background keep-alive gives up a lease: from then on
 * the holder must act as if its keys are gone.
 * @param id the lease
 * @param reason CLERK_LEASE_NOT_FOUND (it expired or was revoked: its
 *   keys are deleted), or why no renewal succeeded for a whole TTL counted
 *   from the send time of the last one that did (CLERK_TIMEOUT,
 *   CLERK_UNAUTHENTICATED, ...): the lease may have expired by now
 * @param arg as given to clerk_lease_keepalive_start
 */
typedef void (*clerk_lease_lost_cb)(uint64_t id, int reason, void *arg);

struct clerk_keepalive;

/**
 * Keep a lease alive from a thread of its own, with its own connections
 * (a handle like @c: its servers, user and TLS): it renews the lease once
 * at once (in this call), then every third of its TTL, retrying in
 * between when a renewal fails. The renewals go over one keep-alive
 * stream (LeaseService.LeaseKeepAliveStream) that it keeps open to the
 * leader and reopens at the new one when leadership moves (unary
 * keep-alives with servers that do not have the stream). It calls @lost,
 * once, and stops renewing when the lease is lost (see
 * clerk_lease_lost_cb).
 *
 * Threads: @lost runs on the keep-alive thread; it must not call
 * clerk_lease_keepalive_stop on its own handle (it may use other
 * handles). Stop every keep-alive before closing @c.
 * @param c the handle to copy (borrowed until clerk_lease_keepalive_stop)
 * @param lost called when the lease is lost, or NULL
 * @param out set to the keep-alive on CLERK_OK
 * @return CLERK_OK (the first renewal succeeded), or what the first
 *   renewal returned (CLERK_LEASE_NOT_FOUND, CLERK_TIMEOUT, ...; no
 *   thread then; clerk_errmsg(c) says why), CLERK_INVALID, CLERK_NOMEM
 */
int clerk_lease_keepalive_start(struct clerk *c,
                                uint64_t id,
                                clerk_lease_lost_cb lost,
                                void *arg,
                                struct clerk_keepalive **out);

/**
 * Stop a keep-alive (the lease is not revoked: it expires a TTL after
 * the last renewal unless revoked) and free it: closes its stream and
 * waits for its thread (a renewal in flight is given up).
 * @param k the keep-alive, or NULL
 */
void clerk_lease_keepalive_stop(struct clerk_keepalive *k);

/**
 * Add a put to a branch, attaching the key to a lease (0: none). When the
 * lease does not exist at commit, the whole transaction changes nothing
 * and clerk_txn_commit returns CLERK_LEASE_NOT_FOUND.
 * @return as clerk_txn_put
 */
int clerk_txn_put_lease(struct clerk_txn *t,
                        enum clerk_txn_branch branch,
                        const void *key,
                        size_t key_len,
                        const void *value,
                        size_t value_len,
                        uint64_t lease,
                        unsigned flags);

/**
 * Compare the lease a key is attached to (0: none, or the key does not
 * exist).
 * @return as clerk_txn_compare_value
 */
int clerk_txn_compare_lease(struct clerk_txn *t,
                            const void *key,
                            size_t key_len,
                            enum clerk_compare_result result,
                            uint64_t lease);

/* ------------------------------------------------------------- recipes
 *
 * Locks and elections on top of leases, transactions and watches, safe by
 * construction (docs/recipes.md). Both keep a key NAME/LEASE (the lease in
 * 16 hex digits) attached to the caller's lease; the key with the lowest
 * create revision under NAME/ holds the lock (leads). A waiter watches
 * only the key just before its own, so a release wakes one waiter, not
 * all of them.
 *
 * Fencing: a lock's token is its key's create revision, which only grows
 * from one holder to the next. A holder whose lease ended (it was paused,
 * partitioned, or its keep-alive failed) has lost the lock whether it
 * knows or not: another may hold it already. So every write that the lock
 * protects goes through a transaction guarded by clerk_txn_guard (a
 * compare on the lock key's create revision): it is refused as soon as
 * the lock is lost, however late the holder acts.
 *
 *   uint64_t lease;
 *   clerk_lease_grant(ck, 10, 0, &lease, NULL);
 *   clerk_lease_keepalive_start(ck, lease, on_lost, NULL, &ka);
 *   struct clerk_lock *l;
 *   if (clerk_lock(ck, "jobs", 4, lease, 30000, &l) == CLERK_OK) {
 *       struct clerk_txn *t = clerk_txn_new();
 *       clerk_txn_guard(t, l);
 *       clerk_txn_put(t, CLERK_TXN_THEN, "jobs/state", 10, "done", 4, 0);
 *       struct clerk_txn_result *r;
 *       if (clerk_txn_commit(ck, t, &r) == CLERK_OK && !r->succeeded)
 *           ... the lock was lost: the write did not happen ...
 *       clerk_unlock(ck, l);
 *   } */

/* A lock held (clerk_lock) or a candidacy (clerk_campaign). */
struct clerk_lock;

/**
 * Take the lock @name for the holder of @lease (keep the lease alive while
 * holding it: the lock goes with it). Waits in line until it holds the
 * lock, or @timeout_ms passes (then it leaves the line). The same lease
 * taking the same lock again gets the same lock.
 * @param name, name_len the lock's name (a key prefix; "/" is appended)
 * @param lease a lease of the caller's (clerk_lease_grant)
 * @param timeout_ms the longest wait for the lock
 * @param out set to the lock on CLERK_OK, else NULL
 * @return CLERK_OK; CLERK_TIMEOUT (not taken within timeout_ms);
 *   CLERK_LEASE_NOT_FOUND (the lease ended, or ends while waiting);
 *   CLERK_INVALID, CLERK_BAD_REQUEST (empty name), or as clerk_txn_commit
 */
int clerk_lock(struct clerk *c,
               const void *name,
               size_t name_len,
               uint64_t lease,
               unsigned timeout_ms,
               struct clerk_lock **out);

/**
 * The lock's fencing token: its key's create revision. Tokens grow from
 * one holder of a lock to the next.
 */
uint64_t clerk_lock_token(const struct clerk_lock *l);

/**
 * The lock's key (NAME/LEASE), NUL-terminated, owned by the lock.
 */
const char *clerk_lock_key(const struct clerk_lock *l, size_t *len);

/**
 * Make a transaction conditional on holding the lock: a compare that the
 * lock's key exists with the token as its create revision. With it, the
 * THEN branch runs only while the lock is held.
 * @return as clerk_txn_compare_create
 */
int clerk_txn_guard(struct clerk_txn *t, const struct clerk_lock *l);

/**
 * Is the lock still held (its key there, with its token)? A linearizable
 * read; for a write, use clerk_txn_guard instead (the answer can be stale
 * by the time the write happens).
 * @return CLERK_OK (held), CLERK_NOT_HELD, or as clerk_get
 */
int clerk_lock_held(struct clerk *c, const struct clerk_lock *l);

/**
 * Release a lock (delete its key; the lease stays) and free it. Also for
 * a lock that is lost already. The lock is freed even when the delete
 * fails (the key then goes with the lease).
 * @param l the lock, or NULL
 * @return CLERK_OK, or as clerk_delete
 */
int clerk_unlock(struct clerk *c, struct clerk_lock *l);

/**
 * Campaign to lead the election @name with @value (what observers see),
 * for the holder of @lease: clerk_lock with a value. Returns once this
 * candidate leads, or after @timeout_ms (then it withdraws).
 * @return as clerk_lock
 */
int clerk_campaign(struct clerk *c,
                   const void *name,
                   size_t name_len,
                   uint64_t lease,
                   const void *value,
                   size_t value_len,
                   unsigned timeout_ms,
                   struct clerk_lock **out);

/**
 * The leader announces a new value, only while it still leads.
 * @return CLERK_OK, CLERK_NOT_HELD (it does not lead any more: nothing
 *   written), or as clerk_txn_commit
 */
int clerk_proclaim(struct clerk *c,
                   const struct clerk_lock *l,
                   const void *value,
                   size_t value_len);

/**
 * Stop leading (or campaigning): clerk_unlock.
 */
int clerk_resign(struct clerk *c, struct clerk_lock *l);

/**
 * Who leads the election @name: its key, value and revisions (the value
 * is what the leader last proclaimed).
 * @param out set to the leader's key on CLERK_OK (free with
 *   clerk_kv_free), else NULL
 * @return CLERK_OK, CLERK_NOT_FOUND (nobody leads), or as clerk_range
 */
int clerk_election_leader(struct clerk *c,
                          const void *name,
                          size_t name_len,
                          struct clerk_kv **out);

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
 * Talk only to servers of this cluster. A handle holds to the cluster id
 * of the first answer it gets unless it was given one; from then on its
 * calls carry it, and an address that answers for another cluster (a
 * server list that is wrong, an address now used by another cluster)
 * refuses them before starting anything: the handle passes over that
 * server, and an operation no server of the cluster took says "HOST
 * answers for another cluster: this node is of cluster X, not Y".
 * Status, membership, transfer, backup and auth calls do not check it.
 * @param id the cluster id (16 hex digits in `kvctl status -w json`'s
 *   nodes' logs, "this is cluster ..."); 0: learn it from the first answer
 */
void clerk_set_cluster_id(struct clerk *c, uint64_t id);

/**
 * The cluster id the handle holds to: given, or learned from its first
 * answer; 0 before either.
 */
uint64_t clerk_cluster_id(struct clerk *c);

/**
 * Context of the handle's last failure: "no leader answered within 5000 ms
 * (last: 127.0.0.1:7002: connection refused)". With a shared handle it
 * describes the last operation of any thread (read race-free: the message
 * is copied under a lock of its own, so this never waits for another
 * thread's operation). Thread: any.
 * @return a string of the calling thread, valid until its fourth next
 *   call of clerk_errmsg
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

/* ------------------------------------------------------------ async API
 *
 * An async handle makes the same operations as a blocking one, with the
 * same semantics (leader discovery, NOT_LEADER hints, retries with backoff,
 * the handle's deadline per operation, exactly-once writes, auth tokens,
 * the same error codes and CLERK_UNKNOWN_OUTCOME rules), but a call
 * returns at once and its callback runs later, from an event loop. Any
 * number of operations may be in flight: they share one connection per
 * server (calls are multiplexed by call id), and each write in flight
 * has a session of its own (the cluster keeps one request id per
 * session), taken from a pool the handle keeps.
 *
 * Two ways to run it:
 * - libevent: clerk_async_open(&a, servers, opts, base) on the caller's
 *   event_base; callbacks run from event_base_dispatch/loop.
 * - any other loop: clerk_async_open_fd(&a, servers, opts), then poll
 *   clerk_async_fd(a) for reading (with clerk_async_timeout_ms(a) as the
 *   longest wait) and call clerk_async_process(a) when it is readable or
 *   the timeout passed; callbacks run from clerk_async_process.
 *
 * Callbacks: each started operation (a call that returned CLERK_OK) calls
 * its callback exactly once: with its outcome, or with CLERK_CLOSED when
 * the handle is closed first. A call that returns an error never calls
 * it. A callback may start operations, and may close the handle: the
 * operations still pending then end with CLERK_CLOSED (their callbacks
 * run inside clerk_async_close), and the handle's memory goes when the
 * loop's callback returns (libevent: on the loop's next turn, so run the
 * loop until it has nothing left, or once more; fd mode: when
 * clerk_async_process returns).
 *
 * Threads: an async handle belongs to the thread that runs its loop: call
 * every clerk_async_* function from that thread (libevent: not while
 * another thread runs the base).
 *
 * Arguments (keys, values, transactions) are copied when the call
 * starts; the reply passed to a callback is valid during the callback
 * only.
 */
struct event_base;
struct clerk_async;

/* What an async operation ended with; valid during the callback only. */
struct clerk_async_reply
{
    int err;                   /* a clerk_error (CLERK_CLOSED: the handle was
                                  closed first) */
    const char *errmsg;        /* its context, as clerk_errmsg ("" or the
                                  server's message on success) */
    const void *value;         /* get: the value (NUL-terminated); cas with
                                  CLERK_CAS_MISMATCH: the current value, NULL
                                  when the key does not exist */
    size_t value_len;          /* its length */
    bool maybe_applied;        /* write: an earlier try may have been applied
                                  (CLERK_UNKNOWN_OUTCOME, CLERK_SESSION_EXPIRED
                                  say so too) */
    uint64_t compact_revision; /* CLERK_COMPACTED: up to where */
    const struct clerk_put_result *put;        /* clerk_async_put_ex */
    const struct clerk_delete_result *deleted; /* clerk_async_delete_range */
    const struct clerk_range_result *range;    /* clerk_async_range */
    const struct clerk_txn_result *txn;        /* clerk_async_txn */
};

/* Told the outcome of one async operation. */
typedef void (*clerk_async_cb)(struct clerk_async *a,
                               const struct clerk_async_reply *r,
                               void *arg);

/**
 * Open an async handle on a libevent event base. No connection is made
 * until the first call.
 * @param out set to the handle
 * @param servers as clerk_open (copied)
 * @param opts as clerk_open (copied), or NULL
 * @param base the caller's event base (borrowed: it must outlive the
 *   handle, and run once more after a close from a callback). The
 *   handle then belongs to the thread that runs base.
 * @return CLERK_OK, CLERK_INVALID (no base, bad list or TLS files:
 *   clerk_open_error() says why) or CLERK_NOMEM
 */
int clerk_async_open(struct clerk_async **out,
                     const char *servers,
                     const struct clerk_options *opts,
                     struct event_base *base);

/**
 * Open an async handle for a loop of the caller's (poll, epoll, another
 * library's): it runs an event base of its own, which
 * clerk_async_process runs without blocking; clerk_async_fd gives one fd
 * to wait on.
 * @return as clerk_async_open
 */
int clerk_async_open_fd(struct clerk_async **out,
                        const char *servers,
                        const struct clerk_options *opts);

/**
 * Close the handle: every pending operation ends with CLERK_CLOSED (its
 * callback runs once, inside this call), connections close. May be
 * called from a callback (see above). A second call does nothing.
 * Thread: the handle's (the one that runs its loop).
 * @param a the handle, or NULL
 */
void clerk_async_close(struct clerk_async *a);

/**
 * fd mode: the fd to poll for reading (an epoll fd holding the handle's
 * sockets and a timer). Level-triggered: readable as long as there is
 * work for clerk_async_process.
 * @return the fd, or -1 for a handle on a libevent base
 */
int clerk_async_fd(const struct clerk_async *a);

/**
 * fd mode: the longest the caller may wait before calling
 * clerk_async_process even if the fd stays quiet (the fd's timer covers
 * it too; this is for loops that prefer a timeout).
 * @return milliseconds, 0 for at once, -1 for no timer pending
 */
int clerk_async_timeout_ms(const struct clerk_async *a);

/**
 * fd mode: do what is ready (read replies, send requests, fire timers)
 * without blocking, running callbacks. Thread: the handle's; never from
 * one of its callbacks.
 * @return CLERK_OK; CLERK_CLOSED when a callback closed the handle (it is
 *   freed now); CLERK_INVALID (not fd mode, or called from a callback);
 *   CLERK_NOMEM
 */
int clerk_async_process(struct clerk_async *a);

/**
 * Operations started and not yet ended.
 */
size_t clerk_async_pending(const struct clerk_async *a);

/**
 * Why the last clerk_async_* call returned an error (and the context of
 * what clerk_async_open could not do: see clerk_open_error()).
 */
const char *clerk_async_errmsg(const struct clerk_async *a);

/**
 * The deadline of the operations started from now on (0: the default);
 * as clerk_set_deadline.
 */
void clerk_async_set_deadline(struct clerk_async *a, unsigned ms);

/**
 * The read mode of the reads started from now on; as clerk_set_read_mode.
 */
void clerk_async_set_read_mode(struct clerk_async *a,
                               enum clerk_read_mode mode);

/*
 * The operations: as their blocking namesakes; each returns CLERK_OK when
 * the operation started (cb is called once later), or, without calling
 * cb, CLERK_INVALID (NULL handle, callback or pointer with a length),
 * CLERK_BAD_REQUEST (empty key), CLERK_CLOSED (a closed handle) or
 * CLERK_NOMEM. Keys and values are copied.
 */

/** clerk_get: r->value holds the value on CLERK_OK. */
int clerk_async_get(struct clerk_async *a,
                    const void *key,
                    size_t key_len,
                    clerk_async_cb cb,
                    void *arg);

/** clerk_put. */
int clerk_async_put(struct clerk_async *a,
                    const void *key,
                    size_t key_len,
                    const void *value,
                    size_t value_len,
                    clerk_async_cb cb,
                    void *arg);

/** clerk_put_ex with a lease (0: none), as clerk_put_lease: r->put. */
int clerk_async_put_ex(struct clerk_async *a,
                       const void *key,
                       size_t key_len,
                       const void *value,
                       size_t value_len,
                       uint64_t lease,
                       unsigned flags,
                       clerk_async_cb cb,
                       void *arg);

/** clerk_append. */
int clerk_async_append(struct clerk_async *a,
                       const void *key,
                       size_t key_len,
                       const void *value,
                       size_t value_len,
                       clerk_async_cb cb,
                       void *arg);

/** clerk_delete (CLERK_NOT_FOUND when there was no key). */
int clerk_async_delete(struct clerk_async *a,
                       const void *key,
                       size_t key_len,
                       clerk_async_cb cb,
                       void *arg);

/** clerk_cas: CLERK_CAS_MISMATCH with r->value the current value. */
int clerk_async_cas(struct clerk_async *a,
                    const void *key,
                    size_t key_len,
                    const void *expected,
                    size_t expected_len,
                    const void *new_value,
                    size_t new_len,
                    clerk_async_cb cb,
                    void *arg);

/** clerk_range: r->range. */
int clerk_async_range(struct clerk_async *a,
                      const void *key,
                      size_t key_len,
                      const void *range_end,
                      size_t range_end_len,
                      uint64_t limit,
                      unsigned flags,
                      clerk_async_cb cb,
                      void *arg);

/** clerk_delete_range: r->deleted. */
int clerk_async_delete_range(struct clerk_async *a,
                             const void *key,
                             size_t key_len,
                             const void *range_end,
                             size_t range_end_len,
                             unsigned flags,
                             clerk_async_cb cb,
                             void *arg);

/** clerk_txn_commit (the builder is copied; free it when you like):
 * r->txn. */
int clerk_async_txn(struct clerk_async *a,
                    const struct clerk_txn *t,
                    clerk_async_cb cb,
                    void *arg);

#ifdef __cplusplus
}
#endif

#endif /* CLERK_CLERK_H */
