/* raft.h - the Raft consensus core: a pure, deterministic state machine. */
#ifndef RAFT_RAFT_H
#define RAFT_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * USAGE (one event-loop turn of the node that owns a core)
 *
 *   raft_tick(r, now_ms);                      // monotonic time from caller
 *   raft_step(r, &msg) / raft_propose(...) / raft_read_index(...) ...
 *   if (raft_has_update(r)) {
 *       raft_get_update(r, &u);
 *       send u.early[]                         // may leave before the write
 *       in one transaction, in this order: stage u.chunks[] (offset 0
 *         restarts the staging area); if u.install, replace the state
 *         machine with the staged snapshot, record its index/term as the
 *         last snapshot and as the applied index, drop stored entries <=
 *         its index; delete stored entries >= u.truncate_from (if != 0);
 *         append u.entries[]; write u.hs if u.hs_changed; apply
 *         u.committed[] (state machine writes and the applied index);
 *       fsync                                  // one write per turn
 *       answer u.reads[] (ok: once applied >= index)
 *       send u.messages[]                      // only after the write
 *       raft_advance(r, &u);
 *   }
 *
 * PERSISTENCE CONTRACT
 *   - Everything a message promises is durable before it leaves: votes
 *     (hard state), append and snapshot acknowledgements (entries, snapshot),
 *     the candidate's own term and vote before its RequestVote. Hence
 *     u.messages[] may be sent only after the update's writes completed.
 *   - u.early[] holds only a leader's AppendEntries / InstallSnapshot
 *     requests to followers; they may be sent before the write completes
 *     (Raft thesis 10.2.1). The leader counts its own log toward a commit
 *     only once raft_advance() reports the entries persisted.
 *   - Between raft_get_update() and raft_advance() no other raft_* call is
 *     allowed on the handle except the read-only getters (RAFT_EBUSY).
 *   - Buffers in an update (entries, messages, chunk data) stay valid until
 *     raft_advance(). If the node crashes before the write completed it
 *     simply restarts from what it had persisted.
 *   - The write may be two, each synced: first the state machine part
 *     (chunks, install, u.committed[]), then the log part (dropping and
 *     truncating, u.entries[], u.hs). A crash between them leaves the state
 *     machine ahead of the log: restart from the state as a snapshot at its
 *     applied index, with the stored entries that go with it (those holding
 *     that index and term, or starting right after it) or none.
 *     raft_restore() takes that snapshot's term if the hard state is older.
 *   - A write that fails: keep the update, send none of u.messages[], call
 *     only getters on the core, and write the same update again later.
 *
 * REQUEST/RESPONSE PAIRING
 *   Each request stepped in (RAFT_MSG_VOTE incl. pre-vote, RAFT_MSG_APPEND
 *   incl. heartbeats, RAFT_MSG_SNAPSHOT, RAFT_MSG_TIMEOUT_NOW) produces
 *   exactly one response message in u.messages[] (a rejection where needed)
 *   whose cookie is the request's cookie, so the node can complete the
 *   incoming RPC. The TimeoutNow response is only an acknowledgement; the
 *   core ignores it when stepped back in. raft_step() returning an error
 *   produces no response: the node answers that RPC with an error itself.
 *   Requests produced by the core carry cookie 0.
 */

/* Terms are bounded. Each election adds one to the term, so a real cluster
 * stays far below 2^62 (one election per millisecond would take over 100
 * million years to get there). A larger term can only come from a forged or
 * damaged message or file: raft_step() refuses a message that has or
 * carries one, and raft_restore() refuses persisted state that holds one.
 * The core never makes a term above it: a node at RAFT_TERM_MAX no longer
 * campaigns (and term + 1 never overflows). */
#define RAFT_TERM_MAX (UINT64_C(1) << 62)

/* The most a message may raise a node's term in one step. A message whose
 * term is further above the node's term is refused (RAFT_EINVAL, no
 * response); if it is a kind that would have raised the term, the node
 * raises its own term by exactly this much (becoming a follower, no vote,
 * no leader), which is always safe in Raft. Why: without it a single
 * forged message at a term just below RAFT_TERM_MAX would use up every
 * term and end elections for good; with it, that takes 2^30 of them. A
 * real cluster never gets 2^32 terms ahead of a member (that many
 * elections take decades), and a node that is that far behind anyway (it
 * was down or wiped while forged messages raised the cluster's term)
 * still catches up, one step per message it hears. */
#define RAFT_TERM_MAX_JUMP (UINT64_C(1) << 32)

/* What an entry costs toward max_append_bytes beyond its data: the framing
 * of its term, index and type. It bounds the entries of one message even
 * when they are empty, so that a receiver can refuse a message with more
 * entries than a leader ever sends before unpacking it. */
#define RAFT_ENTRY_OVERHEAD 32u

/* Error codes returned by raft_* functions. */
enum raft_error {
    RAFT_OK = 0,
    RAFT_ENOMEM,     /* an allocation failed; the core stays consistent */
    RAFT_EINVAL,     /* invalid argument, config or restored state */
    RAFT_NOTLEADER,  /* this node is not the leader; see the leader hint */
    RAFT_ETRANSFER,  /* leadership transfer in progress; hint = target */
    RAFT_EFULL,      /* too many uncommitted bytes; retry later */
    RAFT_EBUSY,      /* called between raft_get_update and raft_advance */
    RAFT_ECOMPACTED, /* index already compacted away */
    RAFT_ESTALE,     /* index/term is older than the core's state */
    RAFT_ECHANGE,    /* a membership change cannot start now: the last
                        one is not committed yet, or this leader has not
                        committed an entry of its term yet */
};

/* Role of a node. */
enum raft_role {
    RAFT_FOLLOWER,
    RAFT_PRECANDIDATE, /* pre-vote round (thesis 9.6), term unchanged */
    RAFT_CANDIDATE,
    RAFT_LEADER,
};

/* Type of a log entry. */
enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 1, /* a command for the state machine */
    RAFT_ENTRY_NOOP = 2,   /* appended by each new leader; apply does nothing */
    RAFT_ENTRY_CONFIG = 3, /* a membership change: data is the whole new
                              configuration (raft_conf_encode); it is in
                              force from the moment a node appends it */
};

/*
 * MEMBERSHIP (Raft thesis chapter 4: one server at a time)
 *
 * A configuration lists the members: voters, which elect and make
 * majorities, and learners, which receive the log but have no vote. Every
 * member carries a context the core never reads (kvserver puts the node's
 * addresses there). A configuration entry holds the whole configuration
 * and is in force on a node as soon as the node appends it, committed or
 * not; a truncated one gives way to the one before it. A leader proposes
 * one change at a time (raft_propose_change): adding a learner, promoting
 * a learner, removing a member, or changing a member's context. Any two
 * majorities of configurations one change apart intersect, so no two
 * leaders can be elected in one term across a change. A new leader first
 * commits an entry of its own term (its no-op) before it proposes a change
 * (the known fix to the single-server algorithm). A leader that removes
 * itself goes on leading without counting itself until the change is
 * committed, then hands off (TimeoutNow to the most up-to-date voter) and
 * steps down. A node that is not a voter in its configuration never starts
 * an election, and pre-vote with leases keeps a removed node that missed
 * its removal from disturbing the others.
 *
 * A node with no configuration at all (raft_config with no voters and no
 * members) is one that joins a running cluster: it waits for a leader to
 * send it the log or a snapshot (which carries the configuration).
 */
#define RAFT_MAX_MEMBERS    64   /* voters and learners together */
#define RAFT_MAX_MEMBER_CTX 1024 /* bytes of a member's context */

/* One member of a configuration. */
struct raft_member
{
    uint64_t id;     /* node id (non-zero) */
    bool voter;      /* false: a learner (receives the log, no vote) */
    const void *ctx; /* opaque to the core (addresses ...), or NULL */
    size_t ctx_len;  /* its length (at most RAFT_MAX_MEMBER_CTX) */
};

/* A membership change. */
enum raft_change_type {
    RAFT_CHANGE_ADD_LEARNER = 1, /* add a node as a learner */
    RAFT_CHANGE_PROMOTE,         /* make a learner a voter */
    RAFT_CHANGE_REMOVE,          /* remove a member (voter or learner) */
    RAFT_CHANGE_UPDATE,          /* replace a member's context */
};

struct raft_change
{
    enum raft_change_type type;
    uint64_t id;     /* the member */
    const void *ctx; /* ADD_LEARNER, UPDATE (PROMOTE: if ctx_len > 0) */
    size_t ctx_len;
};

/* One log entry. */
struct raft_entry
{
    uint64_t term;             /* term in which a leader created it */
    uint64_t index;            /* position in the log, from 1 */
    enum raft_entry_type type; /* NORMAL or NOOP */
    const void *data;          /* opaque command bytes (NULL if len == 0) */
    size_t len;                /* length of data */
};

/* The state that must survive a crash, besides the log and snapshot. */
struct raft_hard_state
{
    uint64_t term;   /* Figure 2: currentTerm */
    uint64_t vote;   /* Figure 2: votedFor in term (0 = none) */
    uint64_t commit; /* commit index; kept so it never goes back */
};

/* Message types. Requests have odd values, their responses follow. */
enum raft_msg_type {
    RAFT_MSG_VOTE = 1,         /* RequestVote or pre-vote (request) */
    RAFT_MSG_VOTE_RESP,        /* response to RAFT_MSG_VOTE */
    RAFT_MSG_APPEND,           /* AppendEntries or heartbeat (request) */
    RAFT_MSG_APPEND_RESP,      /* response to RAFT_MSG_APPEND */
    RAFT_MSG_SNAPSHOT,         /* InstallSnapshot chunk (request) */
    RAFT_MSG_SNAPSHOT_RESP,    /* response to RAFT_MSG_SNAPSHOT */
    RAFT_MSG_TIMEOUT_NOW,      /* leadership transfer: start an election */
    RAFT_MSG_TIMEOUT_NOW_RESP, /* acknowledgement of RAFT_MSG_TIMEOUT_NOW */
};

/* RequestVote arguments (Figure 2), also used for pre-vote. */
struct raft_vote
{
    bool pre_vote;       /* pre-vote: term is the candidate's term + 1 */
    bool transfer;       /* election started by TimeoutNow: ignore leases */
    uint64_t last_index; /* candidate's last log index */
    uint64_t last_term;  /* term of candidate's last log entry */
};

/* RequestVote results. */
struct raft_vote_resp
{
    bool pre_vote; /* answers a pre-vote */
    bool granted;  /* vote granted */
};

/* AppendEntries arguments (Figure 2). */
struct raft_append
{
    uint64_t prev_index; /* index of entry preceding the new ones */
    uint64_t prev_term;  /* term of that entry */
    uint64_t commit;     /* leader's commit index */
    uint64_t seq;        /* round number, echoed (ReadIndex) */
    const struct raft_entry *entries; /* entries to store (none: heartbeat) */
    size_t n_entries;                 /* number of entries */
};

/* AppendEntries results, with fast-backtracking hints. */
struct raft_append_resp
{
    bool success;            /* entries matched and were stored */
    uint64_t index;          /* success: last index now known to match;
                                failure: the rejected prev_index */
    uint64_t conflict_term;  /* failure: term at prev_index, 0 if log short */
    uint64_t conflict_index; /* failure: first index of conflict_term, or
                                last index + 1 when the log is short */
    uint64_t last_index;     /* follower's last log index */
    uint64_t seq;            /* echo of the request's seq */
};

/* InstallSnapshot chunk (Figure 13, chunked). The leader core leaves data
 * NULL, len 0 and stream 0: the caller fills data/len (at most max_len
 * bytes) from its snapshot at `index` starting at `offset`, done when that
 * chunk ends the snapshot (offset + len == size; an empty final chunk is
 * fine), and stream. A caller without that snapshot drops the message.
 *
 * The bytes of a snapshot at one index need not be the same each time the
 * caller produces them (a node that streams its state machine as of its
 * applied index, which moves on). `stream` names one production of the
 * bytes: the caller picks a new value each time it starts producing them
 * anew (at offset 0, or when it reopens its source at any offset) and sends
 * every chunk of that production with it. The follower stages a chunk at
 * offset > 0 only if it continues the chunks it staged with the same
 * index, term and stream; so a late chunk of an earlier production is
 * never mixed into a newer one; and a chunk at offset 0 of the production
 * being staged is a resend, answered with the next offset expected, not a
 * new start (a late copy of the first chunk does not undo the transfer).
 *
 * One chunk is in flight per follower; the follower answers with the next
 * offset it expects, 0 for a transfer it does not know (another index,
 * term or stream: so an interrupted or reopened one restarts from 0), and
 * the leader resends from the last offset asked for after a heartbeat
 * interval without progress. */
struct raft_snapshot
{
    uint64_t index;   /* last index covered by the snapshot */
    uint64_t term;    /* term of that entry */
    uint64_t offset;  /* byte offset of this chunk */
    size_t max_len;   /* largest chunk the caller may put in */
    uint64_t seq;     /* round number, echoed (ReadIndex) */
    uint64_t stream;  /* identity of the byte stream this chunk belongs to:
                         set by the sending caller when it fills data, a
                         new value each time it starts producing the
                         snapshot's bytes anew (0 from the leader core) */
    const void *data; /* chunk bytes (filled by the sending caller) */
    size_t len;       /* chunk length */
    bool done;        /* last chunk */
    const void *conf; /* the configuration as of index (raft_conf_encode),
                         set by the leader core; the sending caller sends
                         it with every chunk */
    size_t conf_len;  /* its length (0 only from a core without
                         membership: the receiver's bootstrap applies) */
};

/* InstallSnapshot results. */
struct raft_snapshot_resp
{
    uint64_t index;       /* snapshot index this answers */
    uint64_t next_offset; /* next byte offset expected (0: restart) */
    bool installed;       /* snapshot complete; follower log starts after */
    uint64_t last_index;  /* follower's last log index */
    uint64_t seq;         /* echo of the request's seq */
};

/* A message between cores. The node converts it to and from the wire. */
struct raft_message
{
    enum raft_msg_type type; /* which member of u is valid */
    uint64_t from;           /* sender id */
    uint64_t to;             /* receiver id */
    uint64_t term;           /* sender's term (pre-vote: proposed term) */
    uint64_t cookie;         /* request: set by the receiving caller;
                                response: copied from the request */
    union
    {
        struct raft_vote vote;                   /* RAFT_MSG_VOTE */
        struct raft_vote_resp vote_resp;         /* RAFT_MSG_VOTE_RESP */
        struct raft_append append;               /* RAFT_MSG_APPEND */
        struct raft_append_resp append_resp;     /* RAFT_MSG_APPEND_RESP */
        struct raft_snapshot snapshot;           /* RAFT_MSG_SNAPSHOT */
        struct raft_snapshot_resp snapshot_resp; /* RAFT_MSG_SNAPSHOT_RESP */
    } u; /* type-specific fields (TimeoutNow has none) */
};

/* Follower side: a snapshot chunk for the caller to stage. */
struct raft_snapshot_chunk
{
    uint64_t index;   /* snapshot index */
    uint64_t term;    /* snapshot term */
    uint64_t stream;  /* the sender's stream (struct raft_snapshot); every
                         chunk after offset 0 has the same as that one */
    uint64_t offset;  /* byte offset; 0 starts a new staging area */
    const void *data; /* chunk bytes */
    size_t len;       /* chunk length */
    bool done;        /* last chunk: install follows in the same update */
};

/* A finished read request. */
struct raft_read
{
    uint64_t ctx;   /* the caller's context from raft_read_index() */
    uint64_t index; /* ok: serve the read once applied >= index */
    bool ok;        /* false: leadership lost, the read failed */
};

/* Everything one turn produced. Valid until raft_advance(). */
struct raft_update
{
    bool hs_changed;           /* hs must be written */
    struct raft_hard_state hs; /* hard state to persist */
    bool install;              /* install the staged snapshot below */
    uint64_t install_index;    /* its index */
    uint64_t install_term;     /* its term */
    const void *install_conf;  /* the configuration as of install_index
                                  (raft_conf_encode): kept with the state,
                                  as the configuration applied entries of
                                  type RAFT_ENTRY_CONFIG make, and handed
                                  back in raft_persisted.conf */
    size_t install_conf_len;   /* its length */
    const struct raft_snapshot_chunk *chunks; /* chunks to stage, in order */
    size_t n_chunks;                          /* number of chunks */
    uint64_t truncate_from;           /* != 0: delete stored entries >= this */
    const struct raft_entry *entries; /* entries to append to storage */
    size_t n_entries;                 /* number of entries */
    const struct raft_message *early; /* may be sent before the write */
    size_t n_early;                   /* number of early messages */
    const struct raft_message *messages; /* send only after the write */
    size_t n_messages;                   /* number of messages */
    const struct raft_entry *committed;  /* apply these, in order */
    size_t n_committed;                  /* number of committed entries */
    const struct raft_read *reads;       /* completed or failed read requests */
    size_t n_reads;                      /* number of reads */
    bool role_changed;   /* role, leader or term changed since last update */
    enum raft_role role; /* current role */
    uint64_t leader;     /* current leader id, 0 if unknown */
    uint64_t term;       /* current term */
    bool conf_changed;   /* the latest configuration (raft_members())
                            changed since the last update */
};

/* Static configuration of a core. */
struct raft_config
{
    uint64_t id;                       /* this node's id (non-zero) */
    const uint64_t *voters;            /* the bootstrap configuration: ids of
                                          all voters, including id (0..64; none
                                          and no members: a node that joins a
                                          running cluster) ... */
    size_t n_voters;                   /* number of voters */
    const struct raft_member *members; /* ... or, instead of voters, its
                                          members with their contexts */
    size_t n_members;                  /* number of members (0: voters) */
    unsigned heartbeat_ms;             /* leader heartbeat interval */
    unsigned election_ms;              /* election timeout base; actual timeouts
                                          are random in [election, 2*election) */
    uint64_t seed;                /* PRNG seed (use a different one per node) */
    uint64_t start_ms;            /* current time at creation */
    bool pre_vote;                /* run a pre-vote round before elections */
    bool check_quorum;            /* leader steps down without a quorum */
    size_t max_append_bytes;      /* max entry bytes per AppendEntries;
                                     each entry counts its data plus
                                     RAFT_ENTRY_OVERHEAD, so a message holds
                                     at most max_append_bytes /
                                     RAFT_ENTRY_OVERHEAD entries (and at
                                     least one) */
    unsigned max_inflight;        /* max unacked AppendEntries per follower */
    size_t max_uncommitted_bytes; /* refuse proposals beyond (0: no limit) */
    size_t snapshot_chunk_bytes;  /* max InstallSnapshot chunk length */
    uint64_t snapshot_trailing;   /* entries kept before a snapshot */
};

/* Persisted state handed to raft_restore() at start. */
struct raft_persisted
{
    struct raft_hard_state hs;        /* last persisted hard state */
    uint64_t snap_index;              /* last snapshot's index (0: none) */
    uint64_t snap_term;               /* last snapshot's term */
    uint64_t applied;                 /* last index applied to the state machine
                                         (>= snap_index, <= commit) */
    const struct raft_entry *entries; /* stored log, consecutive, starting at
                                         or before snap_index + 1 */
    size_t n_entries;                 /* number of entries */
    const void *conf; /* the configuration as of snap_index (from the
                         applied RAFT_ENTRY_CONFIG entries or
                         u.install_conf), or NULL: the bootstrap one */
    size_t conf_len;  /* its length */
};

struct raft;

/**
 * Create a core in follower state with an empty log.
 * @cfg: configuration (copied).
 * @return the core, or NULL when @cfg is invalid (see raft_config_check())
 * or memory is short.
 */
struct raft *raft_new(const struct raft_config *cfg);

/**
 * Check a configuration.
 * @return 0 if valid, or RAFT_EINVAL.
 */
int raft_config_check(const struct raft_config *cfg);

/**
 * Free a core and everything it owns, including an outstanding update.
 * @r: the core, or NULL.
 */
void raft_free(struct raft *r);

/**
 * Load persisted state; call once, right after raft_new().
 * @p: persisted state; entry data is copied.
 * @return 0, RAFT_EINVAL (a gap between snapshot and log, commit beyond the
 * log, a term above RAFT_TERM_MAX, ...: raft_errmsg() says what) or
 * RAFT_ENOMEM. On error the core must be freed.
 */
int raft_restore(struct raft *r, const struct raft_persisted *p);

/**
 * Advance the clock: fire election, heartbeat, check-quorum and transfer
 * timers that are due.
 * @now_ms: monotonic milliseconds; never goes back.
 * @return 0, RAFT_EBUSY or RAFT_ENOMEM.
 */
int raft_tick(struct raft *r, uint64_t now_ms);

/**
 * Earliest time at which raft_tick() has something to do.
 * @return an absolute time in ms.
 */
uint64_t raft_next_timeout(const struct raft *r);

/**
 * Step a received message. A request gets exactly one response in the next
 * update, with @m's cookie. Leases and timers use the time of the last
 * raft_tick(), so tick before stepping what a loop turn gathered.
 * @m: the message; borrowed for the call only (entries and data copied).
 * @return 0, RAFT_EINVAL (not for this node, unknown sender, malformed, a
 * term above RAFT_TERM_MAX: nothing changed; or a term more than
 * RAFT_TERM_MAX_JUMP above ours: only our term may move, see there;
 * raft_errmsg() says which term), RAFT_EBUSY or RAFT_ENOMEM (the message
 * may be partly applied, with no response: safe, as if the response were
 * lost).
 */
int raft_step(struct raft *r, const struct raft_message *m);

/**
 * Propose a command (leader only).
 * @data, @len: command bytes, copied.
 * @index, @term: out, where the entry was placed (may be NULL).
 * @leader_hint: out, on RAFT_NOTLEADER the known leader (0: unknown), on
 * RAFT_ETRANSFER the transfer target (may be NULL).
 * @return 0, RAFT_NOTLEADER, RAFT_ETRANSFER, RAFT_EFULL, RAFT_EBUSY or
 * RAFT_ENOMEM.
 */
int raft_propose(struct raft *r,
                 const void *data,
                 size_t len,
                 uint64_t *index,
                 uint64_t *term,
                 uint64_t *leader_hint);

/**
 * Propose a membership change (leader only): the configuration entry is
 * appended, and in force, at once. See MEMBERSHIP above.
 * @index: out, where the entry was placed (may be NULL).
 * @leader_hint: out, on RAFT_NOTLEADER the known leader (may be NULL).
 * @return 0, RAFT_NOTLEADER, RAFT_ETRANSFER, RAFT_ECHANGE (one change is
 * not committed yet, the leader has not committed in its term, or a
 * learner to promote has not acknowledged the configuration that made it
 * one), RAFT_EINVAL
 * (adding a member, promoting a node that is not a learner, removing or
 * updating a node that is not a member, removing the last voter, a
 * context too long, too many members: raft_errmsg() says which),
 * RAFT_EBUSY or RAFT_ENOMEM.
 */
int raft_propose_change(struct raft *r,
                        const struct raft_change *c,
                        uint64_t *index,
                        uint64_t *leader_hint);

/**
 * The latest configuration (the last configuration entry in the log,
 * committed or not, else that of the snapshot or the bootstrap).
 * @out: set to the members, borrowed until the next mutating call.
 * @return the number of members (0: this node knows no configuration).
 */
size_t raft_members(const struct raft *r, const struct raft_member **out);

/** @return the index of the entry that made the latest configuration (0:
 * it is the bootstrap's or a snapshot's); committed once <= commit. */
uint64_t raft_conf_index(const struct raft *r);

/** @return whether @id is a voter in the latest configuration. */
bool raft_is_voter(const struct raft *r, uint64_t id);

/**
 * Encode a configuration (what a RAFT_ENTRY_CONFIG entry holds).
 * @out: set to a malloc'ed buffer the caller frees; @len: its length.
 * @return 0, RAFT_EINVAL (no voter, a zero or repeated id, a context too
 * long, more than RAFT_MAX_MEMBERS) or RAFT_ENOMEM.
 */
int raft_conf_encode(const struct raft_member *m,
                     size_t n,
                     void **out,
                     size_t *len);

/**
 * Decode and check a configuration.
 * @out: room for @max members; their ctx point into @data.
 * @n: out, the number of members.
 * @return 0 or RAFT_EINVAL (malformed, or more than @max members).
 */
int raft_conf_decode(const void *data,
                     size_t len,
                     struct raft_member *out,
                     size_t max,
                     size_t *n);

/**
 * Request a linearizable read (ReadIndex, thesis 6.4). The read completes
 * in a later update once a heartbeat round confirms leadership and the
 * leader has committed an entry of its term; reads share rounds. If
 * leadership is lost first, it is reported as failed.
 * @ctx: caller's context, returned with the result.
 * @leader_hint: out, on RAFT_NOTLEADER (may be NULL).
 * @return 0, RAFT_NOTLEADER, RAFT_EBUSY or RAFT_ENOMEM.
 */
int raft_read_index(struct raft *r, uint64_t ctx, uint64_t *leader_hint);

/**
 * Start a leadership transfer (thesis 3.10): catch @target up, then send it
 * TimeoutNow. Proposals are refused meanwhile; the transfer is abandoned
 * after an election timeout.
 * @return 0, RAFT_NOTLEADER, RAFT_EINVAL (the target is not a voter),
 * RAFT_EBUSY or RAFT_ENOMEM.
 */
int raft_transfer_leader(struct raft *r, uint64_t target);

/**
 * Tell the core that the state machine holds a snapshot of every entry up
 * to @index (which must be applied). The core compacts its in-memory log,
 * keeping cfg.snapshot_trailing entries, and uses this snapshot for
 * followers that lag behind. The caller compacts its stored log itself.
 * @term: term of the entry at @index.
 * @return 0, RAFT_EINVAL (not applied, wrong term), RAFT_ESTALE (older than
 * the current snapshot), RAFT_EBUSY or RAFT_ENOMEM (nothing changed).
 */
int raft_snapshot_taken(struct raft *r, uint64_t index, uint64_t term);

/**
 * Report that a message to @peer could not be delivered; the leader sends
 * the next probe sooner. Optional.
 * @return 0 or RAFT_EBUSY.
 */
int raft_report_unreachable(struct raft *r, uint64_t peer);

/**
 * Whether raft_get_update() has anything to hand out.
 * @return true if so.
 */
bool raft_has_update(const struct raft *r);

/**
 * Collect what to persist, send and apply. Must be followed by
 * raft_advance() once the writes are durable.
 * @u: out.
 * @return 0, RAFT_EBUSY (an update is outstanding) or RAFT_ENOMEM.
 */
int raft_get_update(struct raft *r, struct raft_update *u);

/**
 * Report that the writes of @u are durable and its messages were sent (or
 * dropped). Frees the update's buffers.
 * @return 0 or RAFT_EINVAL (@u is not the outstanding update).
 */
int raft_advance(struct raft *r, struct raft_update *u);

/* Read-only getters: allowed at any time, even with an update outstanding. */

/** @return this node's id. */
uint64_t raft_id(const struct raft *r);

/** @return the current role. */
enum raft_role raft_role(const struct raft *r);

/** @return the current term. */
uint64_t raft_term(const struct raft *r);

/** @return the known leader's id, or 0. */
uint64_t raft_leader(const struct raft *r);

/** @return the commit index. */
uint64_t raft_commit_index(const struct raft *r);

/** @return the last index handed out to apply (or covered by an installed
 * snapshot). */
uint64_t raft_applied_index(const struct raft *r);

/** @return the last log index. */
uint64_t raft_last_index(const struct raft *r);

/** @return the first log index held in memory. */
uint64_t raft_first_index(const struct raft *r);

/** @return the index of the last snapshot (0: none). */
uint64_t raft_snapshot_index(const struct raft *r);

/* A leader's view of one member's replication, from raft_peer_info(). */
struct raft_peer_info
{
    uint64_t match;          /* Figure 2: matchIndex, the highest index
                                known stored on it (the leader: its own
                                durable last index) */
    uint64_t rounds_unacked; /* heartbeat rounds since it last answered
                                one (0 for the leader itself) */
};

/**
 * The leader's replication progress of member @id (read-only).
 * @out: filled on success.
 * @return 0, RAFT_NOTLEADER (only a leader tracks it) or RAFT_EINVAL
 * (@id is not a member).
 */
int raft_peer_info(const struct raft *r,
                   uint64_t id,
                   struct raft_peer_info *out);

/**
 * Term of the entry at @index (snapshot boundary included).
 * @term: out.
 * @return 0, or RAFT_ECOMPACTED / RAFT_EINVAL when not in memory.
 */
int raft_entry_term(const struct raft *r, uint64_t index, uint64_t *term);

/**
 * The entry at @index, borrowed until the next mutating call.
 * @return the entry, or NULL if not in memory.
 */
const struct raft_entry *raft_entry_at(const struct raft *r, uint64_t index);

/**
 * Describe an error code.
 * @return a static string.
 */
const char *raft_strerror(int code);

/**
 * Context of the last failure (e.g. why raft_restore() refused the state).
 * @return a string owned by the core.
 */
const char *raft_errmsg(const struct raft *r);

/** @return the name of a role ("leader", ...). */
const char *raft_role_name(enum raft_role role);

#endif /* RAFT_RAFT_H */
