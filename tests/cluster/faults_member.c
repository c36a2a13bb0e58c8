/* faults_member.c: the membership nemesis of the fault suite. While the
 * engine's clients run their workload (checked for exactly-once appends
 * and linearizability as in every other test), the cluster changes shape
 * one node at a time, as an operator changes it (docs/operations.md):
 *
 * - grow: a new node slot (a new id) is added as a learner, started with
 *   --join, and promoted once it caught up (PROMOTE answers UNAVAILABLE
 *   while it is behind: tried again);
 * - shrink: a voter is removed, sometimes the leader (it hands off and
 *   stops), sometimes one that is dead;
 * - replace: a voter's host is lost (killed, its data wiped, never started
 *   again under its id; on hosts made of network namespaces the host goes
 *   too), a new id is added and promoted (a new host at a new address),
 *   then the old one is removed.
 *
 * A change may come with a kill of the leader right after it proposed the
 * change (its log says so), a kill of the node being added (while it
 * catches up) or of the node being removed (right after its removal was
 * proposed), and, when the scenario's nemesis is NEM_RANDOM_HALVES, a
 * partition: the new node cut off, the leader in a minority, or random
 * halves. The voters stay within 3 and the scenario's max_servers. The
 * first steps of every test follow a fixed tour, so that each kind of
 * change and fault happens in every run; then the choices are random.
 *
 * After every answer the nemesis reads the membership from the leader and
 * follows it: a change whose outcome is unknown may have happened or not,
 * and an OK must show. After each round (healed): every member, learners
 * too, reaches the leader's commit index, and the voters are within
 * bounds. At the end: no two nodes led in one term (every node's log),
 * and each kind of change and fault happened. Every step is written to
 * member-nemesis.log in the cluster's directory. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "faults.h"

#define MIN_VOTERS   3
#define CALL_MS      15000 /* a membership call's deadline */
#define CHANGE_MS    30000 /* the most a change may take, retries included */
#define CATCH_UP_MS  30000 /* for every member to reach the commit index */
#define STOP_WAIT_MS 10000 /* for a removed node to stop by itself */

/* What a node slot is to the cluster. */
enum slot {
    SL_SPARE = 0, /* made (h_node_add), not a member (yet) */
    SL_LEARNER,   /* a member without a vote */
    SL_VOTER,     /* a voting member */
    SL_GONE,      /* removed, or never to be a member: retired */
};

/* The kinds of steps. */
enum action { ACT_GROW, ACT_SHRINK, ACT_REPLACE };

/* Whom a membership call kills once the leader proposed its change. */
enum kill { KILL_NONE, KILL_LEADER, KILL_CHANGING };

/* How a step breaks things beside its change. */
enum cut {
    CUT_NONE,
    CUT_CHANGING, /* the node being added (or removed) cut off */
    CUT_MINORITY, /* the leader in a minority when the change is asked */
    CUT_HALVES,   /* random halves when the change is asked */
};

/* One step: its change and faults. */
struct plan
{
    enum action act;
    bool kill_leader_add;     /* kill the leader right after it proposed
                                 the add */
    bool kill_leader_promote; /* ... the promotion */
    bool kill_leader_remove;  /* ... the removal */
    bool kill_new;            /* kill the new node while it catches up */
    bool kill_victim;         /* kill the node being removed right after
                                 its removal was proposed */
    bool victim_dead;         /* kill it before (a dead node removed) */
    bool victim_leader;       /* remove the leader */
    enum cut cut;             /* a partition at the change */
};

struct member_nem
{
    enum slot slot[H_MAX_NODES]; /* each node slot */
    size_t max_voters;           /* voters stay in MIN_VOTERS..this */
    bool partitions;             /* partitions too */
    unsigned steps;              /* steps taken */
    char trace[600];             /* the trace file */
    bool cut_now;                /* a partition is in force */
    /* counts for the report and the coverage check */
    uint64_t adds, promotes, removes, leader_removes, replaces;
    uint64_t answers_unavailable, answers_unknown, answers_refused;
    uint64_t leader_kills, new_kills, victim_kills, cut_changes;
    uint64_t self_stops, stop_kills;
    /* A leader kill the plan asked for that did not happen (the change
     * was done before its proposal showed in the leader's log: a loaded
     * machine): owed, and tried at the next add or promotion. */
    bool owe_leader_kill;
    uint64_t missed_leader_kills;
    size_t voters, fewest, most; /* voters now, and the range seen */
};

/* ------------------------------------------------------------ helpers */

static void trace(struct member_nem *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void trace(struct member_nem *m, const char *fmt, ...)
{
    FILE *f = fopen(m->trace, "a");
    if (!f) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(f, "%8.3f step %u: ", (double)h_now_ms() / 1000, m->steps);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    va_end(ap);
    fclose(f);
}

static unsigned pick(struct world *w, unsigned n)
{
    return faults_random(w) % n;
}

static bool one_in(struct world *w, unsigned n)
{
    return pick(w, n) == 0;
}

static uint64_t id_of(struct world *w, size_t i)
{
    return faults_cluster(w)->nodes[i].id;
}

/* Bytes in a file (0 when it cannot be read). */
static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Does the file hold @needle past byte @from? */
static bool grew_with(const char *path, long from, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return false;
    }
    bool found = false;
    char line[2048];
    if (fseek(f, from, SEEK_SET) == 0) {
        while (!found && fgets(line, sizeof line, f)) {
            found = strstr(line, needle) != NULL;
        }
    }
    fclose(f);
    return found;
}

/* The slots the cluster may still have: all but the retired. */
static uint32_t live_slots(struct world *w)
{
    uint32_t mask = 0;
    for (size_t i = 0; i < faults_cluster(w)->n; i++) {
        mask |= faults_retired(w, i) ? 0 : 1u << i;
    }
    return mask;
}

static const char *change_name(enum clerk_member_change type)
{
    switch (type) {
        case CLERK_MEMBER_ADD:
            return "add";
        case CLERK_MEMBER_PROMOTE:
            return "promote";
        case CLERK_MEMBER_REMOVE:
            return "remove";
        default:
            return "update";
    }
}

/* -------------------------------------------------- the membership */

static const struct clerk_member *find(const struct clerk_members *ml,
                                       uint64_t id)
{
    for (size_t i = 0; i < ml->n; i++) {
        if (ml->members[i].id == id) {
            return &ml->members[i];
        }
    }
    return NULL;
}

/* Node i is no longer a member: it must stop by itself (exit status 0)
 * when it ran and could hear of its removal (@expect_stop), else it is
 * killed. Never started again under its id. */
static void retire(struct member_nem *m,
                   struct world *w,
                   size_t i,
                   bool expect_stop)
{
    struct h_cluster *c = faults_cluster(w);
    if (faults_alive(w, i) && c->nodes[i].pid > 0) {
        int st = expect_stop ? h_node_wait_exit(c, i, STOP_WAIT_MS) : -1;
        if (st == 0) {
            m->self_stops++;
            trace(m, "node %" PRIu64 " stopped by itself", id_of(w, i));
        } else {
            if (st > 0) {
                faults_fail(w,
                            "node %" PRIu64
                            " was removed from the cluster and stopped with "
                            "status %d, not 0",
                            id_of(w, i), st);
            } else if (expect_stop) {
                faults_fail(w,
                            "node %" PRIu64
                            " was removed from the cluster but did not "
                            "stop by itself within %d ms",
                            id_of(w, i), STOP_WAIT_MS);
            }
            m->stop_kills++;
            trace(m, "node %" PRIu64 " killed: no longer a member",
                  id_of(w, i));
        }
    }
    faults_retire(w, i);
    m->slot[i] = SL_GONE;
}

/* Read the membership from the leader (once its last change is
 * committed) and follow it: slots become learners and voters, members
 * that left are retired. @expect_stop: a removed node that runs should
 * stop by itself (see retire).
 * @return false when no leader answered in time (the test failed) */
static bool reconcile(struct member_nem *m, struct world *w, bool expect_stop)
{
    struct h_cluster *c = faults_cluster(w);
    struct clerk_members *ml = NULL;
    uint64_t end = h_now_ms() + CHANGE_MS;
    for (;;) {
        int rv = clerk_member_list(faults_admin(w), &ml);
        if (rv == CLERK_OK && ml->committed) {
            break;
        }
        clerk_members_free(ml);
        ml = NULL;
        if (h_now_ms() >= end) {
            faults_fail(w,
                        "no leader answered with a committed membership "
                        "within %d ms: %s",
                        CHANGE_MS, clerk_errmsg(faults_admin(w)));
            return false;
        }
        h_sleep_ms(100);
    }
    size_t voters = 0;
    for (size_t i = 0; i < c->n; i++) {
        const struct clerk_member *e = find(ml, c->nodes[i].id);
        if (e && m->slot[i] == SL_GONE) {
            faults_fail(w, "node %" PRIu64 " is a member again",
                        c->nodes[i].id);
        } else if (e) {
            m->slot[i] = e->learner ? SL_LEARNER : SL_VOTER;
            voters += !e->learner;
            /* Where the others and the clients reach it: as added. */
            char addr[64], peer[64];
            h_node_addr(c, i, addr, sizeof addr);
            h_node_peer_addr(c, i, peer, sizeof peer);
            if (strcmp(e->address, addr) || strcmp(e->peer_address, peer)) {
                faults_fail(w,
                            "member %" PRIu64
                            " has the addresses %s (peers) and %s "
                            "(clients), not %s and %s",
                            e->id, e->peer_address, e->address, peer, addr);
            }
        } else if (m->slot[i] == SL_LEARNER || m->slot[i] == SL_VOTER) {
            trace(m, "node %" PRIu64 " is no longer a member", c->nodes[i].id);
            retire(m, w, i, expect_stop);
        }
    }
    for (size_t k = 0; k < ml->n; k++) {
        size_t i = 0;
        while (i < c->n && c->nodes[i].id != ml->members[k].id) {
            i++;
        }
        if (i == c->n) {
            faults_fail(w, "member %" PRIu64 " was never added",
                        ml->members[k].id);
        }
    }
    clerk_members_free(ml);
    m->voters = voters;
    m->fewest = voters < m->fewest ? voters : m->fewest;
    m->most = voters > m->most ? voters : m->most;
    if (voters < MIN_VOTERS || voters > m->max_voters) {
        faults_fail(w, "%zu voters, outside %d..%zu", voters, MIN_VOTERS,
                    m->max_voters);
    }
    return true;
}

/* ---------------------------------------------------------- changes */

/* One membership call, on a thread of its own when a node is to be
 * killed meanwhile. */
struct call
{
    struct clerk *ck;
    enum clerk_member_change type;
    uint64_t id;
    char peer[64], addr[64]; /* ADD */
    int rv;
    char msg[700];
    int done; /* (atomic) */
};

static void *call_main(void *arg)
{
    struct call *c = arg;
    c->rv =
        clerk_member_change(c->ck, c->type, c->id, c->peer[0] ? c->peer : NULL,
                            c->addr[0] ? c->addr : NULL, NULL);
    snprintf(c->msg, sizeof c->msg, "%s", clerk_errmsg(c->ck));
    __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Ask for one change of node i, through a handle of its own (one attempt
 * per server, as an operator's kvctl). With @who: kill the leader, or node
 * i, as soon as the leader's log says it proposed the change, and start it
 * again a moment later unless it is the node being removed. *did_kill
 * (if not NULL) says whether it did (the leader refuses some changes
 * before proposing them, as a promotion of a learner that is behind).
 * @return clerk_member_change's result */
static int change(struct member_nem *m,
                  struct world *w,
                  enum clerk_member_change type,
                  size_t i,
                  enum kill who,
                  bool *did_kill)
{
    struct h_cluster *c = faults_cluster(w);
    struct call call = {.type = type, .id = id_of(w, i)};
    if (type == CLERK_MEMBER_ADD) {
        h_node_peer_addr(c, i, call.peer, sizeof call.peer);
        h_node_addr(c, i, call.addr, sizeof call.addr);
    }
    int l = faults_leader(w);
    int kill = who == KILL_LEADER ? l : who == KILL_CHANGING ? (int)i : -1;
    if (kill >= 0 && !faults_alive(w, (size_t)kill)) {
        kill = -1;
    }
    char eps[2048];
    h_endpoints_of(c, live_slots(w), l >= 0 ? (size_t)l : 0, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = CALL_MS, .attempt_ms = CALL_MS};
    if (clerk_open(&call.ck, eps, &o) != CLERK_OK) {
        faults_fail(w, "clerk_open for a membership change");
        return CLERK_INVALID;
    }
    bool killed = false;
    if (kill < 0 || l < 0) {
        call_main(&call);
    } else {
        char needle[80];
        snprintf(needle, sizeof needle, "membership: proposing node %" PRIu64,
                 call.id);
        long from = file_size(c->nodes[l].log);
        pthread_t t;
        if (pthread_create(&t, NULL, call_main, &call) != 0) {
            call_main(&call);
        } else {
            /* Read the log without a pause: a change commits within a
             * few milliseconds. */
            uint64_t end = h_now_ms() + 5000;
            while (!__atomic_load_n(&call.done, __ATOMIC_ACQUIRE) &&
                   h_now_ms() < end) {
                if (grew_with(c->nodes[l].log, from, needle)) {
                    faults_kill(w, (size_t)kill);
                    killed = true;
                    break;
                }
            }
            if (killed && !(type == CLERK_MEMBER_REMOVE && (size_t)kill == i)) {
                /* Back a moment later (it may hold the quorum). */
                h_sleep_ms(200 + pick(w, 400));
                faults_restart(w, (size_t)kill);
            }
            pthread_join(t, NULL);
        }
    }
    clerk_close(call.ck);
    if (did_kill) {
        *did_kill = killed;
    }
    if (who == KILL_LEADER && !killed && call.rv == CLERK_OK) {
        m->owe_leader_kill = true;
        m->missed_leader_kills++;
    }
    if (killed) {
        if (kill == l) {
            m->leader_kills++;
            m->owe_leader_kill = false;
        } else if (type == CLERK_MEMBER_REMOVE) {
            m->victim_kills++;
        } else {
            m->new_kills++;
        }
    }
    m->answers_unavailable += call.rv == CLERK_UNAVAILABLE;
    m->answers_unknown += call.rv == CLERK_TIMEOUT;
    m->answers_refused += call.rv == CLERK_BAD_REQUEST;
    m->cut_changes += m->cut_now;
    trace(m, "%s node %" PRIu64 " (leader node %" PRIu64 "%s%s): %s: %s",
          change_name(type), call.id, l >= 0 ? id_of(w, (size_t)l) : 0,
          killed ? ", killed node " : "",
          killed ? (kill == l ? "the leader" : "the changing one") : "",
          clerk_error_code(call.rv), call.msg);
    return call.rv;
}

/* Has the change of node i happened, by the membership just read? */
static bool done(const struct member_nem *m,
                 enum clerk_member_change type,
                 size_t i)
{
    switch (type) {
        case CLERK_MEMBER_ADD:
            return m->slot[i] == SL_LEARNER || m->slot[i] == SL_VOTER;
        case CLERK_MEMBER_PROMOTE:
            return m->slot[i] == SL_VOTER;
        default:
            return m->slot[i] == SL_GONE;
    }
}

/* Ask for the change again until the membership shows it (reading it
 * after every answer), for at most CHANGE_MS. The first try may kill
 * (@who) right after the proposal. An answer OK must show in the
 * membership. A removed node that ran with every link up must stop by
 * itself (docs/operations.md).
 * @return whether it happened (else the test failed) */
static bool drive(struct member_nem *m,
                  struct world *w,
                  enum clerk_member_change type,
                  size_t i,
                  enum kill who)
{
    uint64_t end = h_now_ms() + CHANGE_MS;
    if (who == KILL_NONE && m->owe_leader_kill &&
        (type == CLERK_MEMBER_ADD || type == CLERK_MEMBER_PROMOTE)) {
        who = KILL_LEADER;
        trace(m, "the leader kill an earlier change missed: at this %s",
              change_name(type));
    }
    for (;;) {
        /* A removed node that runs, and hears from the cluster, stops by
         * itself (exit status 0). */
        bool stop = type == CLERK_MEMBER_REMOVE && !m->cut_now;
        bool killed = false;
        int rv = change(m, w, type, i, who, &killed);
        if (killed) {
            who = KILL_NONE; /* once */
        }
        if (!reconcile(m, w, stop)) {
            return false;
        }
        if (done(m, type, i)) {
            return true;
        }
        if (rv == CLERK_OK) {
            faults_fail(w,
                        "%s of node %" PRIu64
                        " answered OK, but the membership does not show it",
                        change_name(type), id_of(w, i));
            return false;
        }
        if (h_now_ms() >= end) {
            faults_fail(w,
                        "could not %s node %" PRIu64
                        " within %d ms (last answer %s)",
                        change_name(type), id_of(w, i), CHANGE_MS,
                        clerk_error_code(rv));
            return false;
        }
        h_sleep_ms(rv == CLERK_UNAVAILABLE ? 100 : 300);
    }
}

/* --------------------------------------------------------- partitions */

/* Cut the cluster for a change of node @i (the new node, or the one
 * removed): @i alone, the leader in a minority, or random halves. */
static void cut(struct member_nem *m, struct world *w, enum cut how, size_t i)
{
    struct h_cluster *c = faults_cluster(w);
    int group[H_MAX_NODES] = {0};
    int l = faults_leader(w);
    if (how == CUT_NONE || (how == CUT_MINORITY && l < 0)) {
        return;
    }
    if (how == CUT_CHANGING) {
        group[i] = 1;
    } else if (how == CUT_MINORITY) {
        /* The leader and fewer than half the other voters on one side. */
        size_t side = m->voters / 2 - 1, k = 0;
        group[l] = 1;
        for (size_t j = 0; j < c->n && k < side; j++) {
            if ((int)j != l && m->slot[j] == SL_VOTER && one_in(w, 2)) {
                group[j] = 1;
                k++;
            }
        }
    } else {
        bool split = false;
        while (!split) {
            for (size_t j = 0; j < c->n; j++) {
                group[j] = (int)pick(w, 2);
                split = split || (j && group[j] != group[0]);
            }
        }
    }
    faults_partition(w, group);
    m->cut_now = true;
    trace(m, "partition: %s",
          how == CUT_CHANGING   ? "the changing node cut off"
          : how == CUT_MINORITY ? "the leader in a minority"
                                : "random halves");
}

static void heal_cut(struct member_nem *m, struct world *w)
{
    if (m->cut_now) {
        faults_heal_links(w);
        m->cut_now = false;
        trace(m, "partition healed");
    }
}

/* ------------------------------------------------------------ steps */

/* A voter other than the leader (or the leader with @leader), or -1. */
static int pick_voter(struct member_nem *m, struct world *w, bool leader)
{
    struct h_cluster *c = faults_cluster(w);
    int l = faults_leader(w);
    if (leader) {
        return l >= 0 && m->slot[l] == SL_VOTER ? l : -1;
    }
    size_t cand[H_MAX_NODES], n = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (m->slot[i] == SL_VOTER && (int)i != l) {
            cand[n++] = i;
        }
    }
    return n ? (int)cand[pick(w, (unsigned)n)] : -1;
}

/* Add a new node as a learner, start it, promote it once caught up.
 * @return its slot, or -1 */
static int grow(struct member_nem *m, struct world *w, const struct plan *p)
{
    int i = faults_add_node(w);
    if (i < 0) {
        return -1;
    }
    size_t n = (size_t)i;
    if (p->cut == CUT_MINORITY || p->cut == CUT_HALVES) {
        /* The add asked under the partition; healed for the rest. */
        cut(m, w, p->cut, n);
        change(m, w, CLERK_MEMBER_ADD, n, KILL_NONE, NULL);
        faults_nap(w, 300);
        heal_cut(m, w);
    }
    if (!drive(m, w, CLERK_MEMBER_ADD, n,
               p->kill_leader_add ? KILL_LEADER : KILL_NONE)) {
        return -1;
    }
    m->adds++;
    if (p->cut == CUT_CHANGING) {
        cut(m, w, p->cut, n); /* before it starts: it gets nothing */
    }
    if (faults_restart(w, n) != 0) {
        return -1;
    }
    if (p->kill_new) {
        h_sleep_ms(50 + pick(w, 400));
        faults_kill(w, n);
        m->new_kills++;
        trace(m, "node %" PRIu64 " killed while it catches up", id_of(w, n));
        h_sleep_ms(300);
        if (faults_restart(w, n) != 0) {
            return -1;
        }
    }
    if (p->cut == CUT_CHANGING) {
        /* Cut off, it cannot catch up: never promoted meanwhile. */
        for (int t = 0; t < 5; t++) {
            if (change(m, w, CLERK_MEMBER_PROMOTE, n, KILL_NONE, NULL) ==
                CLERK_OK) {
                faults_fail(w,
                            "node %" PRIu64
                            " was promoted while it was cut off from the "
                            "others and held nothing",
                            id_of(w, n));
            }
            h_sleep_ms(200);
        }
        heal_cut(m, w);
    }
    if (!drive(m, w, CLERK_MEMBER_PROMOTE, n,
               p->kill_leader_promote ? KILL_LEADER : KILL_NONE)) {
        return -1;
    }
    m->promotes++;
    return i;
}

/* Remove voter v. */
static bool shrink(struct member_nem *m,
                   struct world *w,
                   const struct plan *p,
                   size_t v)
{
    int l = faults_leader(w);
    if (p->victim_dead && faults_alive(w, v)) {
        faults_kill(w, v);
        m->victim_kills++;
        trace(m, "node %" PRIu64 " killed before its removal", id_of(w, v));
    }
    enum kill who = p->kill_leader_remove ? KILL_LEADER
                    : p->kill_victim      ? KILL_CHANGING
                                          : KILL_NONE;
    if (p->cut != CUT_NONE) {
        /* Asked under the partition (with its kill); healed for the
         * rest. */
        cut(m, w, p->cut, v);
        change(m, w, CLERK_MEMBER_REMOVE, v, who, NULL);
        who = KILL_NONE;
        faults_nap(w, 300);
        heal_cut(m, w);
    }
    bool was_leader = l == (int)v;
    if (!drive(m, w, CLERK_MEMBER_REMOVE, v, who)) {
        return false;
    }
    m->removes++;
    m->leader_removes += was_leader;
    return true;
}

static void step(struct member_nem *m, struct world *w, const struct plan *p)
{
    const char *names[] = {"grow", "shrink", "replace"};
    trace(m, "%s (%zu voters)%s%s%s%s%s%s%s", names[p->act], m->voters,
          p->kill_leader_add ? ", kill the leader at the add" : "",
          p->kill_leader_promote ? ", kill the leader at the promotion" : "",
          p->kill_leader_remove ? ", kill the leader at the removal" : "",
          p->kill_new ? ", kill the new node" : "",
          p->kill_victim ? ", kill the removed node at its removal" : "",
          p->victim_dead ? ", remove a dead node" : "",
          p->victim_leader ? ", remove the leader" : "");
    switch (p->act) {
        case ACT_GROW:
            grow(m, w, p);
            break;
        case ACT_SHRINK: {
            int v = pick_voter(m, w, p->victim_leader);
            if (v < 0) {
                v = pick_voter(m, w, false);
            }
            if (v >= 0) {
                shrink(m, w, p, (size_t)v);
            }
            break;
        }
        case ACT_REPLACE: {
            /* The old host is lost first (wiped): never started again. */
            int v = pick_voter(m, w, p->victim_leader);
            if (v < 0) {
                v = pick_voter(m, w, false);
            }
            if (v < 0) {
                break;
            }
            faults_lose_host(w, (size_t)v);
            trace(m, "node %" PRIu64 "'s host (%s) is lost and wiped",
                  id_of(w, (size_t)v), faults_cluster(w)->nodes[v].host);
            struct plan q = *p;
            q.victim_dead = false;
            q.kill_victim = false;
            q.kill_leader_remove = false;
            q.cut = p->cut == CUT_CHANGING ? CUT_CHANGING : CUT_NONE;
            if (grow(m, w, &q) < 0) {
                break;
            }
            q = *p;
            q.victim_dead = false;
            q.kill_victim = false;
            q.cut = p->cut == CUT_CHANGING ? CUT_NONE : p->cut;
            if (shrink(m, w, &q, (size_t)v)) {
                m->replaces++;
            }
            break;
        }
    }
    heal_cut(m, w);
}

/* The fixed tour of the first steps: each kind of change and fault in
 * every run (scenario.tour). */
static bool tour(struct member_nem *m, struct world *w, struct plan *p)
{
    static const struct plan plain[] = {
        {.act = ACT_GROW, .kill_leader_add = true},
        {.act = ACT_REPLACE, .kill_new = true, .kill_leader_promote = true},
        {.act = ACT_SHRINK, .victim_leader = true},
        {.act = ACT_GROW, .kill_leader_promote = true},
        {.act = ACT_SHRINK, .kill_victim = true},
    };
    static const struct plan cuts[] = {
        {.act = ACT_GROW, .cut = CUT_CHANGING},
        {.act = ACT_SHRINK, .cut = CUT_MINORITY, .kill_victim = true},
        {.act = ACT_REPLACE, .cut = CUT_HALVES, .kill_leader_add = true},
        {.act = ACT_GROW, .cut = CUT_MINORITY, .kill_new = true},
        {.act = ACT_SHRINK, .victim_leader = true, .cut = CUT_CHANGING},
    };
    static const struct plan hosts[] = {
        {.act = ACT_GROW},
        {.act = ACT_GROW},
        {.act = ACT_SHRINK},
        {.act = ACT_REPLACE},
    };
    const struct plan *t = m->partitions ? cuts : plain;
    size_t n = m->partitions ? sizeof cuts / sizeof *cuts
                             : sizeof plain / sizeof *plain;
    if (faults_scenario(w)->tour == TOUR_HOSTS) {
        t = hosts;
        n = sizeof hosts / sizeof *hosts;
    }
    if (m->steps >= n) {
        return false;
    }
    *p = t[m->steps];
    return true;
}

/* A random step that keeps the voters within bounds. */
static void random_plan(struct member_nem *m, struct world *w, struct plan *p)
{
    memset(p, 0, sizeof *p);
    bool can_grow = m->voters < m->max_voters;
    bool can_shrink = m->voters > MIN_VOTERS;
    unsigned r = pick(w, 3);
    p->act = r == 0 && can_grow     ? ACT_GROW
             : r == 1 && can_shrink ? ACT_SHRINK
             : can_grow             ? ACT_REPLACE
                                    : ACT_SHRINK;
    p->kill_leader_add = one_in(w, 4);
    p->kill_leader_promote = one_in(w, 4);
    p->kill_leader_remove = one_in(w, 5);
    p->kill_new = one_in(w, 4);
    p->kill_victim = !p->kill_leader_remove && one_in(w, 4);
    p->victim_dead = !p->kill_victim && one_in(w, 5);
    p->victim_leader = one_in(w, 3);
    if (m->partitions && one_in(w, 2)) {
        p->cut = (enum cut)(1 + pick(w, 3));
    }
}

/* ------------------------------------------------------------ hooks */

static void *nem_start(struct world *w)
{
    const struct scenario *sc = faults_scenario(w);
    struct member_nem *m = calloc(1, sizeof *m);
    if (!m) {
        faults_fail(w, "out of memory");
        return NULL;
    }
    m->max_voters = sc->max_servers ? sc->max_servers : sc->servers;
    m->partitions = sc->nemesis == NEM_RANDOM_HALVES;
    m->fewest = SIZE_MAX;
    snprintf(m->trace, sizeof m->trace, "%s/member-nemesis.log",
             faults_cluster(w)->root);
    trace(m, "%s: %zu voters, up to %zu%s", sc->name, sc->servers,
          m->max_voters, m->partitions ? ", with partitions" : "");
    if (!reconcile(m, w, false)) {
        free(m);
        return NULL;
    }
    return m;
}

static void nem_step(void *state, struct world *w)
{
    struct member_nem *m = state;
    struct plan p;
    if (!tour(m, w, &p)) {
        if (faults_scenario(w)->tour_only) {
            faults_nap(w, 200);
            return;
        }
        random_plan(m, w, &p);
    }
    /* Only what keeps the voters within bounds (a replacement is one
     * more for a while), with a slot for a new node. */
    bool can_add =
        faults_cluster(w)->n < H_MAX_NODES && m->voters < m->max_voters;
    bool can_remove = m->voters > MIN_VOTERS;
    if (p.act != ACT_SHRINK && !can_add) {
        p.act = ACT_SHRINK;
    } else if (p.act == ACT_SHRINK && !can_remove) {
        p.act = ACT_GROW;
    }
    if ((p.act == ACT_SHRINK && !can_remove) ||
        (p.act != ACT_SHRINK && !can_add)) {
        faults_nap(w, 500); /* no slot left, and nothing to remove */
        return;
    }
    step(m, w, &p);
    m->steps++;
    faults_nap(w, 200 + pick(w, 600));
}

/* Every member, learners too, reaches the leader's commit index. */
static void check_caught_up(struct member_nem *m, struct world *w)
{
    struct h_cluster *c = faults_cluster(w);
    struct clerk_node_status *st = NULL;
    size_t n = 0;
    uint64_t target = 0, term = 0;
    if (clerk_status(faults_admin(w), &st, &n) == CLERK_OK) {
        for (size_t k = 0; k < n; k++) {
            if (st[k].reachable && !strcmp(st[k].role, "leader") &&
                st[k].term >= term) {
                term = st[k].term;
                target = st[k].commit_index;
            }
        }
        clerk_free(st);
    }
    if (!target) {
        faults_fail(w, "no leader in the status of the nodes");
        return;
    }
    char behind[600] = "";
    uint64_t start = h_now_ms(), end = start + CATCH_UP_MS;
    for (;;) {
        behind[0] = 0;
        size_t off = 0;
        if (clerk_status(faults_admin(w), &st, &n) != CLERK_OK) {
            st = NULL;
            n = 0;
        }
        for (size_t i = 0; i < c->n; i++) {
            if (m->slot[i] != SL_VOTER && m->slot[i] != SL_LEARNER) {
                continue;
            }
            bool ok = i < n && st[i].reachable && st[i].id == c->nodes[i].id &&
                      st[i].applied_index >= target;
            if (!ok && off < sizeof behind) {
                off += (size_t)snprintf(
                    behind + off, sizeof behind - off,
                    " node %" PRIu64 " (%s, applied %" PRIu64 ")",
                    c->nodes[i].id,
                    m->slot[i] == SL_VOTER ? "voter" : "learner",
                    i < n && st[i].reachable ? st[i].applied_index : 0);
            }
        }
        clerk_free(st);
        if (!behind[0] || h_now_ms() >= end) {
            break;
        }
        h_sleep_ms(100);
    }
    if (behind[0]) {
        faults_fail(w,
                    "members did not reach the commit index %" PRIu64
                    " within %d ms:%s",
                    target, CATCH_UP_MS, behind);
    } else {
        trace(m, "every member reached index %" PRIu64 " in %" PRIu64 " ms",
              target, h_now_ms() - start);
    }
}

static void nem_check(void *state, struct world *w)
{
    struct member_nem *m = state;
    heal_cut(m, w);
    if (!reconcile(m, w, false)) {
        return;
    }
    /* Slots that never became members (a change that failed) go. */
    for (size_t i = 0; i < faults_cluster(w)->n; i++) {
        if (m->slot[i] == SL_SPARE) {
            retire(m, w, i, false);
        }
    }
    check_caught_up(m, w);
}

/* No two nodes led in one term: every "leader in term T" line of every
 * node's log, restarts included. */
static void check_one_leader_per_term(struct world *w, uint64_t *terms)
{
    struct h_cluster *c = faults_cluster(w);
    size_t cap = 256, n = 0;
    uint64_t(*led)[2] = malloc(cap * sizeof *led); /* term, node */
    if (!led) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        FILE *f = fopen(c->nodes[i].log, "r");
        char line[2048];
        while (f && fgets(line, sizeof line, f)) {
            const char *p = strstr(line, ": leader in term ");
            unsigned long long id, term;
            const char *q = p ? strstr(line, " node ") : NULL;
            if (!q ||
                sscanf(q, " node %llu: leader in term %llu", &id, &term) != 2) {
                continue;
            }
            size_t k = 0;
            while (k < n && led[k][0] != term) {
                k++;
            }
            if (k < n && led[k][1] != id) {
                faults_fail(
                    w, "two leaders in term %llu: nodes %" PRIu64 " and %llu",
                    term, led[k][1], id);
            } else if (k == n) {
                if (n == cap) {
                    void *more = realloc(led, 2 * cap * sizeof *led);
                    if (!more) {
                        break;
                    }
                    led = more;
                    cap *= 2;
                }
                led[n][0] = term;
                led[n][1] = id;
                n++;
            }
        }
        if (f) {
            fclose(f);
        }
    }
    free(led);
    *terms = n;
}

static void nem_finish(void *state, struct world *w, char *line, size_t len)
{
    struct member_nem *m = state;
    uint64_t terms = 0;
    bool hosts = faults_scenario(w)->tour == TOUR_HOSTS;
    check_one_leader_per_term(w, &terms);
    /* What the tour makes happen in every run (unless a check failed
     * first and cut it short). */
    struct
    {
        const char *what;
        uint64_t n, least;
    } need[] = {
        {"nodes added", m->adds, hosts ? 3 : 1},
        {"learners promoted", m->promotes, hosts ? 3 : 1},
        {"nodes removed", m->removes, hosts ? 2 : 1},
        {"hosts replaced", m->replaces, 1},
        {"leaders killed right after they proposed a change", m->leader_kills,
         hosts ? 0 : 1},
        {"nodes being added or removed killed", m->new_kills + m->victim_kills,
         hosts ? 0 : 1},
        {"changes asked under a partition", m->cut_changes,
         m->partitions ? 1 : 0},
    };
    for (size_t k = 0; k < sizeof need / sizeof *need; k++) {
        if (need[k].n < need[k].least && m->steps >= 3) {
            faults_fail(w, "%" PRIu64 " %s in %u steps (at least %" PRIu64 ")",
                        need[k].n, need[k].what, m->steps, need[k].least);
        }
    }
    snprintf(
        line, len,
        "membership: %u steps, %" PRIu64 " added, %" PRIu64
        " promoted, %" PRIu64 " removed (%" PRIu64 " leaders), %" PRIu64
        " hosts replaced; killed right after "
        "the proposal: %" PRIu64 " leaders (%" PRIu64
        " missed, tried later); %" PRIu64
        " new or leaving nodes killed; %" PRIu64
        " changes under a partition; answers %" PRIu64 " unavailable, %" PRIu64
        " unknown, %" PRIu64 " refused; removed nodes: %" PRIu64
        " stopped by themselves, %" PRIu64
        " killed; voters %zu..%zu (now %zu); %" PRIu64
        " terms with one leader each",
        m->steps, m->adds, m->promotes, m->removes, m->leader_removes,
        m->replaces, m->leader_kills, m->missed_leader_kills,
        m->new_kills + m->victim_kills, m->cut_changes, m->answers_unavailable,
        m->answers_unknown, m->answers_refused, m->self_stops, m->stop_kills,
        m->fewest == SIZE_MAX ? 0 : m->fewest, m->most, m->voters, terms);
    free(m);
}

const struct faults_nemesis faults_member = {
    .start = nem_start,
    .step = nem_step,
    .check = nem_check,
    .finish = nem_finish,
};
