/* internal.h - private state of the Raft core shared by its source files. */
#ifndef RAFT_INTERNAL_H
#define RAFT_INTERNAL_H

#include "raft/raft.h"

/* In-memory log: entries after (offset, offset_term). */
struct raft_log
{
    struct raft_entry *entries; /* entries[k] has index offset + 1 + k */
    size_t n;                   /* number of entries */
    size_t cap;                 /* allocated slots */
    uint64_t offset;            /* index of the entry before entries[0] */
    uint64_t offset_term;       /* term of that entry */
};

/* Replication state of one follower, as seen by the leader. */
enum raft_progress_state {
    RAFT_PR_PROBE,     /* one append at a time until a match is found */
    RAFT_PR_REPLICATE, /* pipelined appends */
    RAFT_PR_SNAPSHOT,  /* sending an InstallSnapshot stream */
};

/* A configuration: the members decoded from an encoding it owns. */
struct rf_conf
{
    void *blob;                             /* raft_conf_encode's, or NULL */
    size_t len;                             /* its length (0: empty) */
    struct raft_member m[RAFT_MAX_MEMBERS]; /* ctx point into blob */
    size_t n;                               /* members (0: none known) */
};

/* What the core knows about one member (itself included). */
struct raft_progress
{
    uint64_t id;                    /* member id */
    bool voter;                     /* a voter (else a learner) */
    uint64_t match;                 /* Figure 2: matchIndex */
    uint64_t next;                  /* Figure 2: nextIndex */
    enum raft_progress_state state; /* replication mode */
    bool probe_sent;                /* probe outstanding (PROBE) */
    uint64_t *inflight;             /* last index of each unacked append */
    unsigned in_head;               /* oldest slot of inflight ring */
    unsigned in_count;              /* unacked appends */
    uint64_t match_at_hb;           /* oldest unacked append at last tick */
    bool active;                    /* heard from since last quorum check */
    uint64_t ack_seq;               /* highest round seq acknowledged */
    bool voted;                     /* answered our (pre-)vote request */
    bool granted;                   /* ... and granted it */
    uint64_t snap_index;            /* snapshot being sent (SNAPSHOT) */
    uint64_t snap_offset;           /* next chunk offset (SNAPSHOT) */
    uint64_t snap_reported;         /* next offset the follower last asked */
    bool snap_heard;                /* chunk progress since last tick */
};

/* A pending ReadIndex request. */
struct raft_pending_read
{
    uint64_t ctx; /* caller's context */
    uint64_t seq; /* round that must be acknowledged by a quorum */
};

/* Growable array of messages. */
struct raft_msgs
{
    struct raft_message *v; /* messages */
    size_t n;               /* used */
    size_t cap;             /* allocated */
};

/* The core. */
struct raft
{
    /* configuration */
    uint64_t id;                  /* this node */
    struct raft_progress *prs;    /* one per member (RAFT_MAX_MEMBERS) */
    size_t n_prs;                 /* number of members */
    uint64_t *rings;              /* the inflight rings: RAFT_MAX_MEMBERS of
                                     max_inflight, each used by at most
                                     one progress */
    unsigned heartbeat_ms;        /* heartbeat interval */
    unsigned election_ms;         /* election timeout base */
    bool pre_vote;                /* pre-vote enabled */
    bool check_quorum;            /* check-quorum enabled */
    size_t max_append_bytes;      /* batching limit */
    unsigned max_inflight;        /* pipeline depth */
    size_t max_uncommitted_bytes; /* proposal limit */
    size_t chunk_bytes;           /* InstallSnapshot chunk size */
    uint64_t trailing;            /* entries kept behind a snapshot */
    uint64_t rng;                 /* PRNG state (splitmix64) */

    /* persistent state (Figure 2) and the log */
    uint64_t term;       /* currentTerm */
    uint64_t vote;       /* votedFor */
    uint64_t commit;     /* commitIndex */
    struct raft_log log; /* in-memory log */
    uint64_t snap_index; /* last snapshot index */
    uint64_t snap_term;  /* last snapshot term */

    /* membership */
    struct rf_conf boot;      /* the bootstrap configuration */
    struct rf_conf conf;      /* the latest (raft_members) */
    uint64_t conf_index;      /* the entry that made it (0: base) */
    struct rf_conf base;      /* as of log.offset */
    struct rf_conf snap_conf; /* as of snap_index */
    bool conf_dirty;          /* conf changed since the last update */
    uint64_t term_start;      /* leader: index of its no-op */

    /* volatile state */
    uint64_t now;            /* last time from raft_tick */
    enum raft_role role;     /* current role */
    uint64_t leader;         /* known leader, 0 if none */
    uint64_t applied;        /* last index handed out to apply */
    uint64_t stable;         /* last index known durable */
    uint64_t election_due;   /* when the election timer fires */
    uint64_t heartbeat_due;  /* leader: next heartbeat */
    uint64_t quorum_due;     /* leader: next check-quorum */
    uint64_t leader_contact; /* last time we heard from a leader */

    /* leader state */
    uint64_t seq;                    /* heartbeat round counter */
    bool round_needed;               /* reads wait for a new round */
    struct raft_pending_read *reads; /* pending reads, FIFO */
    size_t n_reads;                  /* number */
    size_t cap_reads;                /* allocated */
    size_t uncommitted_bytes;        /* bytes proposed beyond commit */
    uint64_t transfer_target;        /* 0: no transfer */
    uint64_t transfer_due;           /* transfer abandoned at */
    bool timeout_now_sent;           /* TimeoutNow already sent */
    bool broadcast_needed;           /* new entries to send at flush */

    /* follower: incoming snapshot */
    bool snap_in;            /* staging in progress */
    uint64_t snap_in_index;  /* its index */
    uint64_t snap_in_term;   /* its term */
    uint64_t snap_in_stream; /* its sender's stream (raft_snapshot) */
    uint64_t snap_in_offset; /* next expected offset */

    /* output accumulated for the next update */
    struct raft_msgs early; /* leader requests, may precede the write */
    struct raft_msgs late;  /* everything else */
    struct raft_snapshot_chunk *chunks; /* chunks to stage */
    size_t n_chunks;                    /* number */
    size_t cap_chunks;                  /* allocated */
    bool install;                       /* install staged snapshot */
    uint64_t install_index;             /* its index */
    uint64_t install_term;              /* its term */
    uint64_t truncate_from;             /* 0 or first stored index to delete */
    uint64_t unstable; /* first index not yet handed out to store */
    struct raft_hard_state hs_saved; /* last hard state handed out */
    uint64_t durable_term;           /* the term known written (advanced) */
    struct raft_read *done_reads;    /* finished reads */
    size_t n_done_reads;             /* number */
    size_t cap_done_reads;           /* allocated */
    bool role_dirty;                 /* role/leader/term changed */
    void **graveyard;                /* entry buffers to free at advance */
    size_t n_graveyard;              /* number */
    size_t cap_graveyard;            /* allocated */

    /* outstanding update */
    bool busy;                  /* between get_update and advance */
    bool fresh;                 /* started with no persisted state (a new
                                   or wiped data directory) */
    uint64_t fresh_until;       /* until then, a fresh node votes only for
                                   candidates with an empty log */
    uint64_t upd_last;          /* last entry index handed out in it */
    bool upd_has_entries;       /* it contained entries */
    struct raft_msgs out_early; /* messages owned by it */
    struct raft_msgs out_late;  /* messages owned by it */
    struct raft_snapshot_chunk *out_chunks; /* chunks owned by it */
    size_t n_out_chunks;                    /* number */
    struct raft_read *out_reads;            /* reads owned by it */
    size_t n_out_reads;                     /* number */
    void **out_graveyard;                   /* buffers freed at advance */
    size_t n_out_graveyard;                 /* number */
    bool out_install;                       /* it installed a snapshot */

    char errmsg[160]; /* context of the last failure */
};

/* Functions shared between the core's files carry the rf_ prefix: internal,
 * and unable to clash with the node's symbols in a static link. */

/* log.c */
uint64_t rf_log_last_index(const struct raft_log *l);
uint64_t rf_log_last_term(const struct raft_log *l);
bool rf_log_term(const struct raft_log *l, uint64_t index, uint64_t *term);
struct raft_entry *rf_log_get(const struct raft_log *l, uint64_t index);
int rf_log_append(struct raft *r,
                  uint64_t term,
                  enum raft_entry_type type,
                  const void *data,
                  size_t len);
int rf_log_truncate(struct raft *r, uint64_t from);
int rf_log_compact(struct raft *r, uint64_t upto);
int rf_log_reset(struct raft *r, uint64_t index, uint64_t term);
int rf_log_reserve(struct raft_log *l, size_t extra);
int rf_bury(struct raft *r, void *buf);
int rf_bury_reserve(struct raft *r, size_t extra);
void rf_log_free(struct raft_log *l);

/* conf.c */
void rf_conf_init(struct rf_conf *c);
void rf_conf_free(struct rf_conf *c);
int rf_conf_set(struct rf_conf *c, const void *data, size_t len);
int rf_conf_copy(struct rf_conf *to, const struct rf_conf *from);
void rf_conf_move(struct rf_conf *to, struct rf_conf *from);
const struct raft_member *rf_conf_find(const struct rf_conf *c, uint64_t id);
int rf_conf_as_of(const struct raft *r,
                  uint64_t index,
                  struct rf_conf *out,
                  uint64_t *at);
void rf_conf_adopt(struct raft *r, struct rf_conf *c, uint64_t at);
bool rf_is_voter(const struct raft *r, uint64_t id);
bool rf_may_campaign(const struct raft *r);
size_t rf_n_voters(const struct raft *r);
int rf_step_down_removed(struct raft *r);

/* raft.c */
uint64_t rf_random(struct raft *r);
struct raft_progress *rf_progress_of(struct raft *r, uint64_t id);
size_t rf_quorum_size(const struct raft *r);
struct raft_message *rf_msg_new(struct raft *r,
                                bool early,
                                enum raft_msg_type t,
                                uint64_t to);
void rf_hint_leader(const struct raft *r, uint64_t *hint);

/* step.c */
int rf_may_propose(struct raft *r, uint64_t *leader_hint);

/* election.c */
void rf_become_follower(struct raft *r, uint64_t term, uint64_t leader);
int rf_become_leader(struct raft *r);
void rf_reset_election_timer(struct raft *r);
/* A request of the current term's leader arrived (AppendEntries or
 * InstallSnapshot): follow it and restart the election timer. */
void rf_heard_from_leader(struct raft *r, uint64_t leader);
int rf_start_election(struct raft *r, bool pre_vote, bool transfer);
int rf_tick_election(struct raft *r);
int rf_step_vote(struct raft *r, const struct raft_message *m);
int rf_step_vote_resp(struct raft *r, const struct raft_message *m);
bool rf_in_lease(const struct raft *r);

/* replication.c */
int rf_send_append(struct raft *r, struct raft_progress *pr, bool heartbeat);
int rf_broadcast_append(struct raft *r, bool heartbeat);
int rf_heartbeat_round(struct raft *r);
int rf_step_append(struct raft *r, const struct raft_message *m);
int rf_step_append_resp(struct raft *r, const struct raft_message *m);
bool rf_maybe_commit(struct raft *r);
void rf_progress_reset(struct raft *r);
int rf_tick_leader(struct raft *r);

/* snapshot.c */
int rf_send_snapshot(struct raft *r, struct raft_progress *pr);
int rf_step_snapshot(struct raft *r, const struct raft_message *m);
int rf_step_snapshot_resp(struct raft *r, const struct raft_message *m);
int rf_step_timeout_now(struct raft *r, const struct raft_message *m);

/* read.c */
int rf_reads_check(struct raft *r);
int rf_reads_fail_all(struct raft *r);
int rf_transfer_check(struct raft *r, struct raft_progress *pr);
void rf_transfer_abort(struct raft *r);

#endif /* RAFT_INTERNAL_H */
