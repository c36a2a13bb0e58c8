/* sim.h - deterministic simulator: N Raft cores, virtual clock, faulty network.
 */
#ifndef SIM_SIM_H
#define SIM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "raft/raft.h"

#define SIM_MAX_NODES 9

/* Cluster and core parameters of one simulation. */
struct sim_config
{
    unsigned n;              /* number of nodes (ids 1..n) */
    unsigned voters;         /* of them, the bootstrap configuration's
                                voters: ids 1..voters (0: all n); the
                                others start knowing no configuration,
                                as nodes that join (sim_change adds them) */
    uint64_t seed;           /* drives every random choice */
    bool pre_vote;           /* core option */
    bool check_quorum;       /* core option */
    unsigned heartbeat_ms;   /* core heartbeat (default 50) */
    unsigned election_ms;    /* core election timeout (default 200) */
    size_t max_append_bytes; /* core batching limit (default 64 KiB) */
    unsigned max_inflight;   /* core pipeline depth (default 8) */
    size_t max_uncommitted;  /* core proposal limit (0: none) */
    size_t chunk_bytes;      /* InstallSnapshot chunk (default 64) */
    uint64_t trailing;       /* entries kept behind a snapshot */
    unsigned snapshot_every; /* snapshot each N applied entries (0: off) */
    size_t snapshot_pad;     /* padding bytes in each snapshot */
    unsigned disk_min_ms;    /* write latency range (0,0: instant) */
    unsigned disk_max_ms;    /* ... */
    unsigned disk_fail;      /* per-mille of writes that fail (then the
                                node retries; see sim_disk_fail) */
    unsigned retry_ms;       /* a failed write is retried after (1000) */
    unsigned stream_reopen;  /* per-mille of snapshot chunks after offset 0
                                for which the sender reopens its stream */
    bool tolerate_nomem;     /* RAFT_ENOMEM from the core is not a failure */
};

/* Called with true before and false after each call into a core, so a test
 * can make only the core's allocations fail (see raft_soak -m). */
extern void (*sim_alloc_guard)(bool armed);

/* Network behaviour ("unreliable" in the lab suite). */
struct sim_net
{
    unsigned delay_min;    /* per-message delay range in ms */
    unsigned delay_max;    /* ... */
    unsigned drop_req;     /* per-mille of requests dropped */
    unsigned drop_resp;    /* per-mille of responses dropped */
    unsigned dup;          /* per-mille of messages duplicated */
    unsigned long_reorder; /* per-mille of responses delayed 200-2200 ms */
};

/* Message statistics since the last sim_reset_stats(). */
struct sim_stats
{
    uint64_t requests;      /* request messages sent (RPC count) */
    uint64_t messages;      /* all messages sent */
    uint64_t entry_bytes;   /* entry payload bytes in AppendEntries */
    uint64_t snap_chunks;   /* InstallSnapshot chunks sent */
    uint64_t installs;      /* snapshots installed by followers */
    uint64_t reads_ok;      /* ReadIndex requests that completed */
    uint64_t reads_failed;  /* ReadIndex requests that failed */
    uint64_t disk_failures; /* writes that failed (each one retried) */
    uint64_t write_crashes; /* crashes between a write's state and log part */
    uint64_t injected;      /* forged messages stepped in (sim_inject) */
};

struct sim;

struct sim *sim_new(const struct sim_config *cfg);
void sim_free(struct sim *s);

/* Run virtual time forward; false once an invariant failed. */
bool sim_run(struct sim *s, uint64_t ms);
bool sim_failed(const struct sim *s);
const char *sim_why(const struct sim *s); /* the failed invariant */
uint64_t sim_now(const struct sim *s);
unsigned sim_n(const struct sim *s); /* number of nodes */

/* Faults. Nodes are numbered 0..n-1 (raft id = number + 1). */
void sim_set_net(struct sim *s, const struct sim_net *net);
void sim_reliable(struct sim *s);                      /* 1-5 ms, no loss */
void sim_unreliable(struct sim *s, bool long_reorder); /* lab constants */
void sim_link(struct sim *s, unsigned from, unsigned to, bool up);
void sim_connect(struct sim *s, unsigned i);         /* all links of i up */
void sim_disconnect(struct sim *s, unsigned i);      /* all links of i down */
void sim_heal(struct sim *s);                        /* every link up */
void sim_partition(struct sim *s, const int *group); /* same group talks */
void sim_crash(struct sim *s, unsigned i);           /* loses unpersisted */
void sim_restart(struct sim *s, unsigned i);         /* from persisted state */
void sim_wipe(struct sim *s, unsigned i); /* restart with nothing persisted */
/* Wipe and restart as a node that joins (knowing no configuration): a
 * replaced host. */
void sim_wipe_join(struct sim *s, unsigned i);
bool sim_up(const struct sim *s, unsigned i);
bool sim_connected(const struct sim *s, unsigned i);
void sim_set_disk(struct sim *s, unsigned i, unsigned min_ms, unsigned max_ms);

/* Disk faults, as a kvserver node meets them. A write is two parts synced
 * one after the other: the state machine (chunks, install, applied
 * entries), then the log (truncate, entries, hard state). A failed write
 * leaves its failed part unwritten; the node keeps the update (u.early
 * already left), sends none of u.messages, refuses every message and call,
 * and writes the same update again after cfg.retry_ms. */
/* The next @times writes of node @i that write anything fail (0: none);
 * with @log_only each writes its state part and fails the log part. */
void sim_disk_fail(struct sim *s, unsigned i, unsigned times, bool log_only);
/* Node @i crashes during its next write that has both parts, after the
 * state part: it restarts with the state part and without the log part. */
void sim_crash_mid_write(struct sim *s, unsigned i);
/* Per-mille of writes (on every node) that fail at random, each followed
 * by up to two more failures in a row; 0 also disarms the faults above. */
void sim_set_disk_failures(struct sim *s, unsigned permille);
bool sim_frozen(const struct sim *s, unsigned i); /* holding a failed write */

/* Step a forged message into node @i now, whatever the links (m->to must
 * be @i + 1, m->from another node). A request gets a cookie, so its
 * response is checked like any other.
 * @return raft_step()'s result, or RAFT_EBUSY if @i is down or writing. */
int sim_inject(struct sim *s, unsigned i, const struct raft_message *m);

/* Observations. */
struct raft *sim_raft(struct sim *s, unsigned i); /* NULL when down */
int sim_leader(const struct sim *s); /* an up leader of the highest term */
/* Leaders among up nodes connected to each other: lab's checkOneLeader(). */
int sim_check_one_leader(struct sim *s, uint64_t within_ms);
bool sim_no_leader(struct sim *s); /* no connected node thinks it leads */
unsigned sim_n_committed(struct sim *s, uint64_t index, uint64_t *value);
uint64_t sim_applied(const struct sim *s, unsigned i);
uint64_t sim_commit_max(const struct sim *s); /* highest applied anywhere */
bool sim_value_at(const struct sim *s, uint64_t index, uint64_t *value);
size_t sim_persisted_log_bytes(const struct sim *s, unsigned i);
struct sim_stats sim_get_stats(const struct sim *s);
void sim_reset_stats(struct sim *s);
uint64_t sim_random(struct sim *s);

/* Clients. */
int sim_propose(struct sim *s,
                unsigned i,
                uint64_t value,
                size_t len,
                uint64_t *index,
                uint64_t *term);
/* Lab's one(): commit @value on >= @expected nodes within 10 s; returns the
 * index or 0 (and fails the simulation) if it could not. */
uint64_t sim_one(struct sim *s,
                 uint64_t value,
                 size_t len,
                 unsigned expected,
                 bool retry);
int sim_read(struct sim *s, unsigned i);
/* Propose a membership change of node @target at node @i. */
int sim_change(struct sim *s,
               unsigned i,
               enum raft_change_type type,
               unsigned target);
/* Membership changes proposed, and leaders that removed themselves and
 * handed off, since sim_new. */
uint64_t sim_changes(const struct sim *s);
uint64_t sim_handoffs(const struct sim *s); /* ReadIndex on node i */
int sim_transfer(struct sim *s, unsigned i, unsigned target);

/* Print every node's state (role, term, indexes) to @f. */
void sim_dump(const struct sim *s, FILE *f);

/* Record an extra failure (from a test) in the simulation's report. */
void sim_fail(struct sim *s, const char *fmt, ...);

#endif /* SIM_SIM_H */
