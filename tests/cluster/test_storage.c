/* test_storage.c: what a node keeps on disk stays right when its input or
 * its disk goes wrong: snapshot streams that are damaged or mixed, client
 * sessions that are forgotten. */
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <clerk/clerk.h>
#include <event2/event.h>

#include <proto/admin.pb-c.h>
#include <proto/raft.pb-c.h>
#include <rpc/rpc.h>

#include "cunit_main.h"
#include "harness.h"
#include "store.h"
#include "wal.h"

/* ------------------------------------------------------------ helpers */

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A snapshot stream (kvserver/src/snap.h) at @index/@term holding @n keys
 * "<prefix><i>" with values "value of <prefix><i>". Returns its length. */
static size_t make_stream(uint8_t *buf,
                          uint64_t index,
                          uint64_t term,
                          const char *prefix,
                          int n)
{
    size_t len = 0;
    memcpy(buf, "RKVSNAP2", 8);
    put_u64(buf + 8, index);
    put_u64(buf + 16, term);
    put_u64(buf + 24, 0);
    len = 32;
    for (int i = 0; i < n; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "%s%03d", prefix, i);
        int vl = snprintf(v, sizeof v, "value of %s%03d", prefix, i);
        buf[len] = 1;
        put_u32(buf + len + 1, (uint32_t)kl);
        put_u32(buf + len + 5, (uint32_t)vl);
        memcpy(buf + len + 9, k, (size_t)kl);
        memcpy(buf + len + 9 + kl, v, (size_t)vl);
        len += 9 + (size_t)kl + (size_t)vl;
    }
    buf[len] = 0xFF;
    put_u64(buf + len + 1, (uint64_t)n);
    put_u32(buf + len + 9, rpc_crc32c(0, buf, len + 9));
    return len + 13;
}

/* What a node says of itself (AdminService.Status). */
struct view
{
    bool ok;
    uint64_t term, commit, cluster_id;
};

static void on_status(const Raftkv__StatusReply *r, void *data)
{
    struct view *v = data;
    if (r) {
        v->ok = true;
        v->term = r->term;
        v->commit = r->commit_index;
        v->cluster_id = r->cluster_id;
    }
}

static struct view status_of(struct h_cluster *c, size_t i)
{
    struct view v = {0};
    struct rpc_channel_options o = {.deadline_ms = 5000};
    struct rpc_channel *ch =
        rpc_channel_new_blocking(c->nodes[i].host, c->nodes[i].port, &o);
    if (ch) {
        Raftkv__StatusArgs a = RAFTKV__STATUS_ARGS__INIT;
        raftkv__admin_service__status(
            rpc_channel_service(ch, &raftkv__admin_service__descriptor), &a,
            on_status, &v);
        rpc_channel_free(ch);
    }
    return v;
}

/* A chunk sent as another node of the cluster would send it. */
struct chunk_out
{
    bool replied;
    uint64_t next_offset;
    bool installed;
};

static void on_chunk(const Raftkv__InstallSnapshotReply *r, void *data)
{
    struct chunk_out *o = data;
    if (r) {
        o->replied = true;
        o->next_offset = r->next_offset;
        o->installed = r->installed;
    }
}

struct sender
{
    struct rpc_channel *ch; /* to the node under test */
    uint64_t from, to;      /* ids */
    uint64_t cluster_id;    /* the cluster's */
    uint64_t term;          /* the sender's term */
    uint64_t index;         /* snapshot index and term */
};

static struct chunk_out send_chunk(struct sender *s,
                                   uint64_t stream,
                                   const uint8_t *data,
                                   uint64_t offset,
                                   size_t len,
                                   bool done)
{
    struct chunk_out o = {0};
    Raftkv__InstallSnapshotArgs a = RAFTKV__INSTALL_SNAPSHOT_ARGS__INIT;
    a.cluster_id = s->cluster_id;
    a.from = s->from;
    a.to = s->to;
    a.term = s->term;
    a.last_included_index = s->index;
    a.last_included_term = s->term;
    a.offset = offset;
    a.data.data = (uint8_t *)data + offset;
    a.data.len = len;
    a.done = done;
    a.crc32c = rpc_crc32c(0, data + offset, len);
    a.stream_id = stream;
    raftkv__raft_service__install_snapshot(
        rpc_channel_service(s->ch, &raftkv__raft_service__descriptor), &a,
        on_chunk, &o);
    return o;
}

/* The node is still running (it did not stop on the input). */
static bool running(struct h_cluster *c, size_t i)
{
    return c->nodes[i].pid && waitpid(c->nodes[i].pid, NULL, WNOHANG) == 0;
}

/* A stale read from node i (its own applied state). */
static int stale_get(struct h_cluster *c,
                     size_t i,
                     const char *key,
                     char *out,
                     size_t len)
{
    struct h_client cl;
    if (h_client_open(&cl, c, cunit_seed()) != 0) {
        return -1;
    }
    struct h_result r = h_get(&cl, key, true, i);
    int err = r.err;
    if (err == 0 && out) {
        snprintf(out, len, "%s", r.value ? r.value : "");
    }
    h_result_free(&r);
    h_client_close(&cl);
    return err;
}

/* ----------------------------------------------------- snapshot streams */

/* Node 1 of a 2-node cluster whose node 2 is the test: node 2's process
 * is stopped, and the test sends InstallSnapshot chunks in its name. */
static struct h_cluster cl;

static void impersonate_with(struct sender *s, const struct h_start *o)
{
    CU_ASSERT_EQUAL_FATAL(h_cluster_start_with(&cl, 2, NULL, o), 0);
    h_node_kill(&cl, 1);
    struct view v = status_of(&cl, 0);
    CU_ASSERT_FATAL(v.ok);
    s->ch = h_peer_channel(&cl, 0, 1, 10000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s->ch);
    s->from = cl.nodes[1].id;
    s->to = cl.nodes[0].id;
    s->cluster_id = v.cluster_id;
    s->term = v.term + 1;
    s->index = v.commit + 100;
}

static void impersonate(struct sender *s)
{
    impersonate_with(s, NULL);
}

static void test_snapshot_chunk_of_an_earlier_stream_is_not_mixed_in(void)
{
    struct sender s;
    impersonate(&s);
    static uint8_t a[8192], b[8192];
    size_t la = make_stream(a, s.index, s.term, "a", 60);
    size_t lb = make_stream(b, s.index, s.term, "b", 60);
    CU_ASSERT_EQUAL_FATAL(la, lb);
    size_t half = la / 2;
    /* Stream 1 starts; the sender starts over with stream 2 (its state
     * moved on); a late chunk of stream 1 arrives where stream 2 goes on. */
    struct chunk_out r = send_chunk(&s, 1, a, 0, half, false);
    CU_ASSERT(r.replied && r.next_offset == half);
    r = send_chunk(&s, 2, b, 0, half, false);
    CU_ASSERT(r.replied && r.next_offset == half);
    r = send_chunk(&s, 1, a, half, la - half, true);
    CU_ASSERT(r.replied);
    CU_ASSERT_FALSE(r.installed);
    CU_ASSERT_FATAL(running(&cl, 0));
    /* Stream 2 completes and is what the node holds. */
    r = send_chunk(&s, 2, b, half, lb - half, true);
    CU_ASSERT(r.replied);
    CU_ASSERT(r.installed);
    CU_ASSERT_FATAL(running(&cl, 0));
    char val[64];
    CU_ASSERT_EQUAL(stale_get(&cl, 0, "b007", val, sizeof val), 0);
    CU_ASSERT_STRING_EQUAL(val, "value of b007");
    CU_ASSERT_EQUAL(stale_get(&cl, 0, "a007", NULL, 0),
                    RAFTKV__KV_ERROR__KV_NOT_FOUND);
    rpc_channel_free(s.ch);
    CU_ASSERT_EQUAL(h_cluster_destroy(&cl), 0);
}

static void on_together(const Raftkv__InstallSnapshotReply *r, void *data)
{
    struct chunk_out *o = data;
    if (r) {
        o->replied = true;
        o->next_offset = r->next_offset;
        o->installed = r->installed;
    }
}

static void test_snapshot_newer_stream_in_the_same_turn_as_an_install(void)
{
    struct sender s;
    impersonate(&s);
    static uint8_t a[8192], b[8192];
    size_t la = make_stream(a, s.index, s.term, "a", 60);
    size_t lb = make_stream(b, s.index + 50, s.term, "b", 60);
    size_t half = lb / 2;
    /* Delayed requests arrive together (a partition heals): the whole of
     * snapshot A, then the start of a newer snapshot B. The core installs
     * A and starts staging B in the same turn: B's first chunk must not
     * replace A's stream before A is installed. */
    struct event_base *base = event_base_new();
    CU_ASSERT_FATAL(base != NULL);
    struct rpc_channel_options o = {
        .deadline_ms = 10000,
        .peer_auth = &cl.as_member[1],
        .peer_id = cl.nodes[0].id,
    };
    struct rpc_channel *ch =
        rpc_channel_new(base, cl.nodes[0].host, cl.nodes[0].peer_port, &o);
    CU_ASSERT_FATAL(ch != NULL);
    ProtobufCService *svc =
        rpc_channel_service(ch, &raftkv__raft_service__descriptor);
    struct chunk_out out[2] = {{0}, {0}};
    const uint8_t *data[2] = {a, b};
    size_t lens[2] = {la, half};
    uint64_t index[2] = {s.index, s.index + 50};
    for (int k = 0; k < 2; k++) {
        Raftkv__InstallSnapshotArgs args = RAFTKV__INSTALL_SNAPSHOT_ARGS__INIT;
        args.cluster_id = s.cluster_id;
        args.from = s.from;
        args.to = s.to;
        args.term = s.term;
        args.last_included_index = index[k];
        args.last_included_term = s.term;
        args.offset = 0;
        args.data.data = (uint8_t *)data[k];
        args.data.len = lens[k];
        args.done = k == 0;
        args.crc32c = rpc_crc32c(0, data[k], lens[k]);
        args.stream_id = 11 + (uint64_t)k;
        raftkv__raft_service__install_snapshot(svc, &args, on_together,
                                               &out[k]);
    }
    uint64_t end = h_now_ms() + 10000;
    while ((!out[0].replied || !out[1].replied) && h_now_ms() < end) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        h_sleep_ms(1);
    }
    rpc_channel_free(ch);
    event_base_free(base);
    CU_ASSERT(out[0].replied && out[0].installed);
    CU_ASSERT(out[1].replied && out[1].next_offset == half);
    CU_ASSERT_FATAL(running(&cl, 0));
    CU_ASSERT_FALSE(h_log_contains(&cl, 0, "damaged"));
    char val[64];
    CU_ASSERT_EQUAL(stale_get(&cl, 0, "a007", val, sizeof val), 0);
    CU_ASSERT_STRING_EQUAL(val, "value of a007");
    /* B goes on from its staged first half and is installed. */
    s.index += 50;
    struct chunk_out r = send_chunk(&s, 12, b, half, lb - half, true);
    CU_ASSERT(r.replied && r.installed);
    CU_ASSERT_FATAL(running(&cl, 0));
    CU_ASSERT_EQUAL(stale_get(&cl, 0, "b007", val, sizeof val), 0);
    CU_ASSERT_STRING_EQUAL(val, "value of b007");
    CU_ASSERT_EQUAL(stale_get(&cl, 0, "a007", NULL, 0),
                    RAFTKV__KV_ERROR__KV_NOT_FOUND);
    rpc_channel_free(s.ch);
    CU_ASSERT_EQUAL(h_cluster_destroy(&cl), 0);
}

static void test_snapshot_failing_its_stream_checksum_is_fetched_again(void)
{
    struct sender s;
    impersonate(&s);
    static uint8_t a[8192];
    size_t la = make_stream(a, s.index, s.term, "c", 60);
    a[la - 1] ^= 0x10; /* the stream checksum; each chunk's own is right */
    size_t half = la / 2;
    struct chunk_out r = send_chunk(&s, 7, a, 0, half, false);
    CU_ASSERT(r.replied && r.next_offset == half);
    r = send_chunk(&s, 7, a, half, la - half, true);
    /* Refused, and asked for from the start; the node goes on. */
    CU_ASSERT(r.replied);
    CU_ASSERT_FALSE(r.installed);
    CU_ASSERT_EQUAL(r.next_offset, 0);
    CU_ASSERT_FATAL(running(&cl, 0));
    CU_ASSERT(h_log_contains(&cl, 0, "fails its stream checksum"));
    CU_ASSERT_EQUAL(stale_get(&cl, 0, "c007", NULL, 0),
                    RAFTKV__KV_ERROR__KV_NOT_FOUND);
    /* The same in one chunk. */
    r = send_chunk(&s, 8, a, 0, la, true);
    CU_ASSERT(r.replied && !r.installed && r.next_offset == 0);
    CU_ASSERT_FATAL(running(&cl, 0));
    /* A fresh, intact copy is installed. */
    a[la - 1] ^= 0x10;
    r = send_chunk(&s, 9, a, 0, half, false);
    CU_ASSERT(r.replied && r.next_offset == half);
    r = send_chunk(&s, 9, a, half, la - half, true);
    CU_ASSERT(r.replied && r.installed);
    char val[64];
    CU_ASSERT_EQUAL(stale_get(&cl, 0, "c007", val, sizeof val), 0);
    CU_ASSERT_STRING_EQUAL(val, "value of c007");
    CU_ASSERT_FATAL(running(&cl, 0));
    rpc_channel_free(s.ch);
    CU_ASSERT_EQUAL(h_cluster_destroy(&cl), 0);
}

/* A snapshot of many chunks is built beside the live state, one update at
 * a time (docs/kvserver.md, snapshots): a power loss part way leaves the
 * old state and makes the node forget the transfer, which starts over and
 * is installed whole; a power loss after the install keeps it. */
static void test_snapshot_of_many_chunks_survives_a_power_loss_part_way(void)
{
    struct sender s;
    struct h_start o = {.diskfault = true};
    impersonate_with(&s, &o);
    static uint8_t a[65536];
    size_t la = make_stream(a, s.index, s.term, "d", 999);
    const size_t step = 2048;
    CU_ASSERT_FATAL(la > 10 * step);
    uint64_t off = 0;
    for (int i = 0; i < 6; i++, off += step) {
        struct chunk_out r = send_chunk(&s, 21, a, off, step, false);
        CU_ASSERT(r.replied && r.next_offset == off + step);
    }
    char incoming[700];
    snprintf(incoming, sizeof incoming, "%s/incoming", cl.nodes[0].dir);
    CU_ASSERT(access(incoming, F_OK) == 0); /* the build, part way */
    h_node_power_loss(&cl, 0);
    CU_ASSERT_EQUAL_FATAL(h_node_start(&cl, 0), 0);
    rpc_channel_free(s.ch);
    s.ch = h_peer_channel(&cl, 0, 1, 10000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s.ch);
    CU_ASSERT(access(incoming, F_OK) != 0); /* deleted at the start */
    CU_ASSERT_EQUAL(stale_get(&cl, 0, "d007", NULL, 0),
                    RAFTKV__KV_ERROR__KV_NOT_FOUND);
    /* The transfer is forgotten: the next chunk is asked for from 0. */
    struct chunk_out r = send_chunk(&s, 21, a, off, step, false);
    CU_ASSERT(r.replied && r.next_offset == 0);
    for (off = 0; off < la; off += step) {
        size_t n = la - off < step ? la - off : step;
        r = send_chunk(&s, 22, a, off, n, off + n == la);
        CU_ASSERT_FATAL(r.replied);
    }
    CU_ASSERT(r.installed);
    CU_ASSERT_FATAL(running(&cl, 0));
    CU_ASSERT(access(incoming, F_OK) != 0);
    char val[64];
    CU_ASSERT_EQUAL(stale_get(&cl, 0, "d998", val, sizeof val), 0);
    CU_ASSERT_STRING_EQUAL(val, "value of d998");
    /* Installed for good. */
    h_node_power_loss(&cl, 0);
    CU_ASSERT_EQUAL_FATAL(h_node_start(&cl, 0), 0);
    CU_ASSERT_EQUAL(stale_get(&cl, 0, "d500", val, sizeof val), 0);
    CU_ASSERT_STRING_EQUAL(val, "value of d500");
    CU_ASSERT_FALSE(h_log_contains(&cl, 0, "damaged"));
    rpc_channel_free(s.ch);
    CU_ASSERT_EQUAL(h_cluster_destroy(&cl), 0);
}

/* A 3-node cluster that compacts every 10 entries, holding 30 MB (300
 * values of 100 kB, "big000".."big299", the first byte 'a' + i % 26):
 * a snapshot of 30 chunks. @w is opened on it; returns the leader. */
static int start_with_30_chunks(struct h_cluster *c,
                                struct h_client *w,
                                const char *more_flags)
{
    char flags[256];
    snprintf(flags, sizeof flags,
             "--snapshot-entries 10 --snapshot-trailing 2 --log-level debug "
             "%s",
             more_flags);
    CU_ASSERT_FATAL(h_cluster_start(c, 3, flags) == 0);
    CU_ASSERT_FATAL(h_client_open(w, c, cunit_seed()) == 0);
    static char big[100001];
    memset(big, 'v', sizeof big - 1);
    for (int i = 0; i < 300; i++) {
        char key[32];
        snprintf(key, sizeof key, "big%03d", i);
        big[0] = (char)('a' + i % 26);
        struct h_result r = h_put(w, key, big, sizeof big - 1);
        CU_ASSERT_EQUAL_FATAL(r.err, 0);
        h_result_free(&r);
    }
    int leader = h_find_leader(c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    return leader;
}

/* Node f loses its data: killed, its directory deleted, started again. */
static void wipe_node(struct h_cluster *c, size_t f)
{
    h_node_kill(c, f);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", c->nodes[f].dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    CU_ASSERT_EQUAL_FATAL(h_node_start(c, f), 0);
}

/* The snapshot streams the leader began to node f so far: a follower
 * that fell behind while the state was written may have been sent one
 * before the test wipes it (the tests count those after). */
static size_t streams_to(struct h_cluster *c, int leader, size_t f)
{
    char needle[64];
    snprintf(needle, sizeof needle, ") to node %zu\n", f + 1);
    size_t n = 0;
    FILE *in = fopen(c->nodes[leader].log, "r");
    char line[2048];
    while (in && fgets(line, sizeof line, in)) {
        n += strstr(line, "sending a snapshot") && strstr(line, needle);
    }
    if (in) {
        fclose(in);
    }
    return n;
}

/* A follower that goes silent for a while in the middle of a transfer
 * (paused 1.5 s, as a slow disk would keep it writing a chunk) still holds
 * the leader's compactions back (up to the log's cap, 50 compactions'
 * worth): it is not sent the snapshot anew. */
static void test_snapshot_receiver_silent_mid_transfer_is_not_restarted(void)
{
    struct h_cluster c;
    struct h_client w;
    int leader = start_with_30_chunks(&c, &w, "--enable-fault-injection");
    size_t f = ((size_t)leader + 1) % c.n;
    char key[32];
    /* The leader's calls to it take 20-30 ms each: the 30 chunks take
     * over half a second. */
    char eps[1024];
    h_endpoints(&c, eps, sizeof eps);
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, NULL) == CLERK_OK);
    struct clerk_fault slow = {
        .target = f + 1, .delay_min_ms = 20, .delay_max_ms = 30};
    CU_ASSERT_EQUAL_FATAL(
        clerk_fault(ck, (size_t)leader, true, &slow, 1, 0, NULL, NULL),
        CLERK_OK);
    /* It may have been sent (and installed) one while it lagged: its log
     * is kept across the wipe, so what counts is what comes after. */
    size_t earlier = streams_to(&c, leader, f);
    char answers[64];
    snprintf(answers, sizeof answers, "node %zu answers the snapshot", f + 1);
    size_t answered = h_log_count(&c, (size_t)leader, answers);
    size_t installs = h_log_count(&c, f, "installed a snapshot of the state");
    wipe_node(&c, f);
    /* Stop it once the leader has had its answer to a chunk of the new
     * stream (and a few more chunks have gone), and write meanwhile: a
     * compaction's worth every 10 writes. A follower that never answered
     * a chunk does not hold compactions back. */
    uint64_t end = h_now_ms() + 10000;
    while (h_log_count(&c, (size_t)leader, answers) == answered &&
           h_now_ms() < end) {
        h_sleep_ms(5);
    }
    CU_ASSERT_FATAL(h_log_count(&c, (size_t)leader, answers) > answered);
    h_sleep_ms(100);
    h_node_pause(&c, f, true);
    bool mid =
        h_log_count(&c, f, "installed a snapshot of the state") == installs;
    int n = 0;
    end = h_now_ms() + 1500;
    for (; n < 100 && h_now_ms() < end; n++) { /* within the log's cap */
        snprintf(key, sizeof key, "w%d", n % 50);
        struct h_result r = h_put(&w, key, "x", 1);
        h_result_free(&r);
    }
    while (h_now_ms() < end) {
        h_sleep_ms(10);
    }
    h_node_pause(&c, f, false);
    bool installed = false;
    for (end = h_now_ms() + 30000; !installed && h_now_ms() < end;) {
        h_sleep_ms(50);
        installed =
            h_log_count(&c, f, "installed a snapshot of the state") > installs;
    }
    CU_ASSERT(installed);
    size_t streams = streams_to(&c, leader, f) - earlier;
    printf(
        "(%s; %d writes while it was stopped, %zu streams; %zu before "
        "the wipe) ",
        mid ? "stopped mid-transfer" : "the transfer was over first", n,
        streams, earlier);
    CU_ASSERT(n >= 10);
    CU_ASSERT_EQUAL(streams, 1);
    c.keep = c.keep || streams != 1; /* the logs say why */
    clerk_close(ck);
    h_client_close(&w);
    CU_ASSERT_EQUAL(h_cluster_destroy(&c), 0);
}

/* A wiped follower gets a snapshot of many chunks while the leader takes
 * writes that would compact its log many times over meanwhile: the leader
 * holds compaction back until the transfer is done, so it is not started
 * over and over (docs/kvserver.md, snapshots). */
static void test_snapshot_of_many_chunks_gets_across_under_writes(void)
{
    struct h_cluster c;
    struct h_client w;
    int leader = start_with_30_chunks(&c, &w, "");
    size_t f = ((size_t)leader + 1) % c.n;
    char key[32];
    /* Counted after what it may have been sent while it lagged. */
    size_t earlier = streams_to(&c, leader, f);
    size_t installs = h_log_count(&c, f, "installed a snapshot of the state");
    wipe_node(&c, f);
    /* Writes go on (each a log entry: a compaction's worth every 10)
     * until the follower has installed the state, for at most 30 s: one
     * every 5 ms, so that the 500 entries the leader keeps at most for a
     * transfer (PEER_SNAPSHOT_HOLD_LOG compactions' worth) last 2.5 s,
     * several times the transfer's time. Unpaced, one writer made 934
     * writes during a transfer here, and the leader compacted and started
     * the stream over, as it should. */
    uint64_t end = h_now_ms() + 30000;
    int n = 0;
    bool installed = false;
    while (!installed && h_now_ms() < end) {
        snprintf(key, sizeof key, "w%d", n++ % 50);
        struct h_result r = h_put(&w, key, "x", 1);
        h_result_free(&r);
        installed =
            h_log_count(&c, f, "installed a snapshot of the state") > installs;
        h_sleep_ms(5);
    }
    CU_ASSERT(installed);
    /* Writes go on: the entries written during the transfer are kept
     * until the follower has them, so it needs no second snapshot. */
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "w%d", n++ % 50);
        struct h_result r = h_put(&w, key, "y", 1);
        h_result_free(&r);
    }
    /* One stream: none was started over for a compaction, and no second
     * one was needed (each start is logged, at debug level when they
     * come quickly). */
    size_t streams = streams_to(&c, leader, f) - earlier;
    printf("(%d writes during the transfer, %zu streams) ", n, streams);
    CU_ASSERT(n >= 10); /* compactions were due meanwhile */
    CU_ASSERT_EQUAL(streams, 1);
    c.keep = c.keep || streams != 1; /* the logs say why */
    /* The snapshot may precede the last puts: the log brings them. */
    char val[8] = "";
    end = h_now_ms() + 10000;
    while (strcmp(val, "nvvvv") != 0 && h_now_ms() < end) {
        struct h_result r = h_get(&w, "big299", true, f);
        snprintf(val, sizeof val, "%.5s", r.err == 0 && r.value ? r.value : "");
        h_result_free(&r);
    }
    CU_ASSERT_STRING_EQUAL(val, "nvvvv");
    h_client_close(&w);
    CU_ASSERT_EQUAL(h_cluster_destroy(&c), 0);
}

/* ------------------------------------------------------------- sessions */

/* Append "x" to @key as client @cl's request @rid, at the leader. */
static int append_as(struct h_client *who, const char *key, uint64_t rid)
{
    for (int tries = 0; tries < 100; tries++) {
        int leader = h_find_leader(who->c, 10000);
        if (leader < 0) {
            return -1;
        }
        int err = h_put_raw(who, (size_t)leader, key, "x", rid, true);
        if (err != RAFTKV__KV_ERROR__KV_WRONG_LEADER && err != -1 &&
            err != RAFTKV__KV_ERROR__KV_UNAVAILABLE) {
            return err;
        }
        h_sleep_ms(50);
    }
    return -1;
}

/* Node i's applied value of @key, "" when absent; the nodes apply in
 * their own time, so poll until all agree or 10 s pass. */
static bool replicas_agree(struct h_cluster *c,
                           const char *key,
                           char *out,
                           size_t len)
{
    uint64_t end = h_now_ms() + 10000;
    for (;;) {
        char first[64] = "", v[64];
        bool same = true;
        for (size_t i = 0; i < c->n; i++) {
            int err = stale_get(c, i, key, v, sizeof v);
            if (err == RAFTKV__KV_ERROR__KV_NOT_FOUND) {
                v[0] = 0;
            } else if (err != 0) {
                same = false;
                break;
            }
            if (i == 0) {
                snprintf(first, sizeof first, "%s", v);
            } else if (strcmp(first, v) != 0) {
                same = false;
            }
        }
        if (same) {
            snprintf(out, len, "%s", first);
            return true;
        }
        if (h_now_ms() >= end) {
            return false;
        }
        h_sleep_ms(100);
    }
}

static void test_session_retry_after_eviction_is_refused_not_applied(void)
{
    struct h_cluster c;
    CU_ASSERT_EQUAL_FATAL(h_cluster_start(&c, 3, "--max-sessions 2"), 0);
    struct h_client a, b, d;
    unsigned seed = cunit_seed();
    CU_ASSERT_FATAL(h_client_open(&a, &c, seed) == 0);
    CU_ASSERT_FATAL(h_client_open(&b, &c, seed + 1) == 0);
    CU_ASSERT_FATAL(h_client_open(&d, &c, seed + 2) == 0);
    /* Client a appends once; its reply is lost (the test ignores it). */
    CU_ASSERT_EQUAL(append_as(&a, "k", 1), 0);
    /* Two more clients open sessions: a, the least recent, is forgotten. */
    struct h_result r = h_put(&b, "b", "1", 1);
    CU_ASSERT_EQUAL(r.err, 0);
    r = h_put(&d, "d", "1", 1);
    CU_ASSERT_EQUAL(r.err, 0);
    /* a retries the same request: refused, never applied twice. */
    CU_ASSERT_EQUAL(append_as(&a, "k", 1),
                    RAFTKV__KV_ERROR__KV_SESSION_EXPIRED);
    CU_ASSERT_EQUAL(append_as(&a, "k", 2),
                    RAFTKV__KV_ERROR__KV_SESSION_EXPIRED);
    char v[64];
    CU_ASSERT_FATAL(replicas_agree(&c, "k", v, sizeof v));
    CU_ASSERT_STRING_EQUAL(v, "x");
    h_client_close(&a);
    h_client_close(&b);
    h_client_close(&d);
    CU_ASSERT_EQUAL(h_cluster_destroy(&c), 0);
}

static void test_session_eviction_is_the_same_on_every_replica(void)
{
    /* Node 1 remembers 2 sessions, the others the default: the bound is
     * the leader's, carried in the log, whichever node leads. */
    struct h_cluster c;
    CU_ASSERT_EQUAL_FATAL(h_cluster_start(&c, 3, NULL), 0);
    h_node_kill(&c, 0);
    snprintf(c.extra, sizeof c.extra, "--max-sessions 2");
    CU_ASSERT_EQUAL_FATAL(h_node_start(&c, 0), 0);
    c.extra[0] = 0;
    unsigned seed = cunit_seed();
    for (int round = 0; round < 2; round++) {
        struct h_client a, b, d;
        char key[16];
        snprintf(key, sizeof key, "k%d", round);
        CU_ASSERT_FATAL(h_client_open(&a, &c, seed + 10 * round) == 0);
        CU_ASSERT_FATAL(h_client_open(&b, &c, seed + 10 * round + 1) == 0);
        CU_ASSERT_FATAL(h_client_open(&d, &c, seed + 10 * round + 2) == 0);
        CU_ASSERT_EQUAL(append_as(&a, key, 1), 0);
        struct h_result r = h_put(&b, "b", "1", 1);
        CU_ASSERT_EQUAL(r.err, 0);
        r = h_put(&d, "d", "1", 1);
        CU_ASSERT_EQUAL(r.err, 0);
        int err = append_as(&a, key, 1);
        CU_ASSERT(err == 0 || err == RAFTKV__KV_ERROR__KV_SESSION_EXPIRED);
        /* Whatever the leader decided, every replica holds the same. */
        char v[64];
        CU_ASSERT(replicas_agree(&c, key, v, sizeof v));
        CU_ASSERT_STRING_EQUAL(v, "x");
        h_client_close(&a);
        h_client_close(&b);
        h_client_close(&d);
        /* The second round with node 1 leading, if it did not. */
        int leader = h_find_leader(&c, 10000);
        if (round == 0 && leader != 0 && leader >= 0) {
            h_node_kill(&c, (size_t)leader);
            CU_ASSERT_EQUAL(h_node_start(&c, (size_t)leader), 0);
        }
    }
    CU_ASSERT_EQUAL(h_cluster_destroy(&c), 0);
}

/* ------------------------------------------------------- failing disks */

/* Poll until node i's log holds @needle (10 s). */
static bool wait_log(struct h_cluster *c, size_t i, const char *needle)
{
    uint64_t end = h_now_ms() + 10000;
    while (!h_log_contains(c, i, needle)) {
        if (h_now_ms() >= end) {
            return false;
        }
        h_sleep_ms(20);
    }
    return true;
}

/* n puts of "v<i>" to keys "<prefix><i>" through the harness client. */
static void puts_n(struct h_cluster *c, const char *prefix, int n)
{
    struct h_client hc;
    CU_ASSERT_FATAL(h_client_open(&hc, c, cunit_seed()) == 0);
    for (int i = 0; i < n; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "%s%d", prefix, i);
        snprintf(v, sizeof v, "v%d", i);
        struct h_result r = h_put(&hc, k, v, strlen(v));
        CU_ASSERT_EQUAL(r.err, 0);
        h_result_free(&r);
    }
    h_client_close(&hc);
}

static void put_done(struct clerk_async *a,
                     const struct clerk_async_reply *r,
                     void *arg)
{
    (void)a;
    *(int *)arg = r->err;
}

/* Put prefix0..prefix(n-1) (values v0...) all at once: the leader sends
 * them in a few appends, so a follower's log grows by n entries within a
 * few milliseconds, however loaded the machine. */
static void puts_burst(struct h_cluster *c, const char *prefix, int n)
{
    char eps[1024];
    h_endpoints(c, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 20000};
    struct clerk_async *a = NULL;
    CU_ASSERT_FATAL(clerk_async_open_fd(&a, eps, &o) == CLERK_OK);
    int *errs = calloc((size_t)n, sizeof *errs);
    CU_ASSERT_FATAL(errs != NULL);
    for (int i = 0; i < n; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "%s%d", prefix, i);
        snprintf(v, sizeof v, "v%d", i);
        errs[i] = -1;
        CU_ASSERT_EQUAL(clerk_async_put_ex(a, k, strlen(k), v, strlen(v), 0, 0,
                                           put_done, &errs[i]),
                        CLERK_OK);
    }
    uint64_t end = h_now_ms() + 30000;
    while (clerk_async_pending(a) && h_now_ms() < end) {
        struct pollfd p = {.fd = clerk_async_fd(a), .events = POLLIN};
        poll(&p, 1, 10);
        clerk_async_process(a);
    }
    for (int i = 0; i < n; i++) {
        CU_ASSERT_EQUAL(errs[i], CLERK_OK);
    }
    clerk_async_close(a);
    free(errs);
}

/* Node i has applied everything and holds key/value (10 s). */
static bool node_holds(struct h_cluster *c,
                       size_t i,
                       const char *key,
                       const char *want)
{
    uint64_t end = h_now_ms() + 10000;
    for (;;) {
        char v[64];
        if (stale_get(c, i, key, v, sizeof v) == 0 && strcmp(v, want) == 0) {
            return true;
        }
        if (h_now_ms() >= end) {
            return false;
        }
        h_sleep_ms(50);
    }
}

static void test_disk_shutdown_after_a_failed_log_write_keeps_state_behind_log(
    void)
{
    struct h_cluster c;
    struct h_start o = {.diskfault = true};
    CU_ASSERT_EQUAL_FATAL(h_cluster_start_with(&c, 3, NULL, &o), 0);
    int l = h_find_leader(&c, 15000);
    CU_ASSERT_FATAL(l >= 0);
    size_t v = (size_t)(l + 1) % 3;
    puts_n(&c, "a", 5);
    /* Node v falls behind; when it runs again, the entries it is sent come
     * already committed, so it applies them in the turn whose log write
     * fails. */
    h_node_pause(&c, v, true);
    puts_n(&c, "b", 50);
    CU_ASSERT_EQUAL(h_node_rules(&c, v, "fail wal/ write EIO always"), 0);
    h_node_pause(&c, v, false);
    CU_ASSERT_FATAL(wait_log(&c, v, "cannot persist"));
    /* Stopped while it cannot write its log: the applied state must not
     * get ahead of what the log holds. */
    CU_ASSERT_EQUAL(h_node_term(&c, v), 0);
    struct kv_store st;
    CU_ASSERT_EQUAL_FATAL(kv_store_open(&st, c.nodes[v].dir, 0), 0);
    MDB_txn *txn;
    CU_ASSERT_EQUAL_FATAL(mdb_txn_begin(st.env, NULL, MDB_RDONLY, &txn), 0);
    struct kv_meta m;
    CU_ASSERT_EQUAL(kv_store_read_meta(&st, txn, &m), 0);
    mdb_txn_abort(txn);
    kv_store_close(&st);
    struct kv_wal wal;
    struct kv_wal_contents wc;
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&wal, c.nodes[v].dir, 0, &wc), 0);
    uint64_t last = wc.n_entries ? wc.entries[wc.n_entries - 1].index : 0;
    if (m.applied > last) {
        fprintf(stderr, "state at %llu, log up to %llu\n",
                (unsigned long long)m.applied, (unsigned long long)last);
    }
    CU_ASSERT(m.applied <= last);
    kv_wal_close(&wal);
    kv_wal_contents_free(&wc);
    /* It starts again with a working disk and catches up. */
    CU_ASSERT_EQUAL(h_node_rules(&c, v, ""), 0);
    CU_ASSERT_EQUAL_FATAL(h_node_start(&c, v), 0);
    CU_ASSERT(node_holds(&c, v, "b49", "v49"));
    CU_ASSERT_EQUAL(h_cluster_destroy(&c), 0);
}

/* A metric of node i's /metrics (-1: no answer or no such metric). */
static double node_metric(struct h_cluster *c, size_t i, const char *name)
{
    static char body[1 << 17];
    if (h_http_get(c, i, "GET", "/metrics", body, sizeof body) != 200) {
        return -1;
    }
    return h_metric(body, name);
}

/* Under a steady stream of writes a compaction takes the state of an
 * earlier commit, already on disk for good, instead of stalling the loop
 * with a sync of its own (docs/kvserver.md, snapshots and compaction); and
 * what it relies on is really on disk: every node losing its power at
 * once, right after the writes (what was not synced undone), loses no
 * acknowledged write and starts again. Small log segments, so that
 * compactions delete some, and three rounds. */
static void test_disk_compaction_under_load_relies_on_an_earlier_sync(void)
{
    struct h_cluster c;
    struct h_start o = {.diskfault = true};
    CU_ASSERT_EQUAL_FATAL(
        h_cluster_start_with(&c, 3,
                             "--snapshot-entries 1000 --snapshot-trailing 10 "
                             "--state-commit-ms 300 --wal-segment-mb 1",
                             &o),
        0);
    enum { N = 3000, ROUNDS = 3 };
    static char v[2048];
    double total = 0, synced = 0;
    for (int round = 0; round < ROUNDS; round++) {
        struct h_client hc;
        CU_ASSERT_FATAL(h_client_open(&hc, &c, cunit_seed()) == 0);
        for (int i = 0; i < N; i++) {
            char k[32];
            snprintf(k, sizeof k, "k%d", i);
            memset(v, 'a' + (i + round) % 26, sizeof v - 1);
            struct h_result r = h_put(&hc, k, v, sizeof v - 1);
            CU_ASSERT_EQUAL(r.err, 0);
            h_result_free(&r);
        }
        int l = h_find_leader(&c, 1000);
        if (l >= 0) {
            total += node_metric(&c, (size_t)l, "raftkv_log_compactions_total");
            synced += node_metric(&c, (size_t)l,
                                  "raftkv_log_compactions_synced_total");
        }
        for (size_t i = 0; i < c.n; i++) {
            h_node_power_loss(&c, i);
        }
        for (size_t i = 0; i < c.n; i++) {
            CU_ASSERT_EQUAL_FATAL(h_node_start(&c, i), 0);
        }
        int missing = 0;
        for (int i = 0; i < N; i++) {
            char k[32];
            snprintf(k, sizeof k, "k%d", i);
            memset(v, 'a' + (i + round) % 26, sizeof v - 1);
            struct h_result r = h_get(&hc, k, false, 0);
            if (r.err != 0 || !r.value || strcmp(r.value, v) != 0) {
                if (missing++ < 5) {
                    fprintf(stderr, "after the power loss: %s: error %d\n", k,
                            r.err);
                }
            }
            h_result_free(&r);
        }
        CU_ASSERT_EQUAL(missing, 0);
        h_client_close(&hc);
    }
    printf(
        "\n  leaders: %.0f compactions, %.0f of them synced their own "
        "state\n",
        total, synced);
    CU_ASSERT(total >= 3 * ROUNDS);
    CU_ASSERT(synced * 2 < total);
    for (size_t i = 0; i < c.n; i++) {
        CU_ASSERT_FALSE(h_log_contains(&c, i, "damaged"));
    }
    CU_ASSERT_EQUAL(h_cluster_destroy(&c), 0);
}

/* A compaction waiting for a commit that is on disk for good does not
 * wait for --state-commit-ms: with commits every 60 s, 250 writes (past
 * --snapshot-entries 200, short of the 1.5 times at which a compaction
 * syncs by itself) are compacted on every node within seconds. */
static void test_compaction_due_does_not_wait_for_a_slow_commit_timer(void)
{
    struct h_cluster c;
    CU_ASSERT_EQUAL_FATAL(
        h_cluster_start(&c, 3,
                        "--snapshot-entries 200 --snapshot-trailing 10 "
                        "--state-commit-ms 60000"),
        0);
    puts_n(&c, "c", 250);
    double compactions[3] = {0, 0, 0};
    uint64_t end = h_now_ms() + 5000;
    for (bool all = false; !all && h_now_ms() < end;) {
        h_sleep_ms(100);
        all = true;
        for (size_t i = 0; i < c.n; i++) {
            compactions[i] = node_metric(&c, i, "raftkv_log_compactions_total");
            all = all && compactions[i] >= 1;
        }
    }
    printf("(compactions: %.0f, %.0f, %.0f) ", compactions[0], compactions[1],
           compactions[2]);
    for (size_t i = 0; i < c.n; i++) {
        CU_ASSERT(compactions[i] >= 1);
    }
    CU_ASSERT_EQUAL(h_cluster_destroy(&c), 0);
}

static void test_disk_failed_lmdb_meta_write_does_not_wedge_the_node(void)
{
    struct h_cluster c;
    struct h_start o = {.diskfault = true};
    /* A compaction commits with a full sync of its own when the log
     * passes 1.5 times --snapshot-entries before a commit it can rely on:
     * no state commit on the timer, and the puts in one burst (one at a
     * time, on a loaded machine, the commits that a waiting compaction
     * hastens came between them, and no meta page was written O_DSYNC). */
    CU_ASSERT_EQUAL_FATAL(h_cluster_start_with(&c, 3,
                                               "--snapshot-entries 50 "
                                               "--snapshot-trailing 5 "
                                               "--state-commit-ms 60000",
                                               &o),
                          0);
    int l = h_find_leader(&c, 15000);
    CU_ASSERT_FATAL(l >= 0);
    size_t v = (size_t)(l + 1) % 3;
    /* The meta page of a fully synced state commit (a compaction's) fails
     * once: LMDB refuses the environment from then on. */
    CU_ASSERT_EQUAL(
        h_node_rules(&c, v, "fail data.mdb dsync-write EIO times 1"), 0);
    puts_burst(&c, "c", 120);
    /* The node may reopen after the puts are answered (the followers'
     * compactions come after they apply): wait for it, then read the
     * fault's trace. */
    CU_ASSERT(wait_log(&c, v, "LMDB environment reopened"));
    CU_ASSERT(h_file_contains(c.nodes[v].trace, "dsync-write data.mdb") &&
              h_file_contains(c.nodes[v].trace, "-EIO"));
    puts_n(&c, "d", 10);
    CU_ASSERT(node_holds(&c, v, "c119", "v119"));
    CU_ASSERT(node_holds(&c, v, "d9", "v9"));
    CU_ASSERT_EQUAL(h_cluster_destroy(&c), 0);
}

/* Node i's state commits so far, failed ones too (-1: no answer). */
static double state_commits(struct h_cluster *c, size_t i)
{
    return node_metric(c, i, "raftkv_state_commit_duration_seconds_count");
}

/* Wait (10 s) until node i has made more than @before state commits. */
static bool commits_after(struct h_cluster *c, size_t i, double before)
{
    uint64_t end = h_now_ms() + 10000;
    while (state_commits(c, i) <= before) {
        if (h_now_ms() >= end) {
            return false;
        }
        h_sleep_ms(20);
    }
    return true;
}

/* Wait until node i has made no state commit for a second. */
static void commits_quiet(struct h_cluster *c, size_t i)
{
    double last = -2, now;
    while ((now = state_commits(c, i)) != last) {
        last = now;
        h_sleep_ms(1000);
    }
}

/* Put key=val (len bytes) and wait for the state commit that holds it
 * (--state-commit-ms after it is applied); @extra more commits (failed
 * ones too). */
static void put_committed(struct h_cluster *c,
                          struct h_client *hc,
                          const char *key,
                          const char *val,
                          size_t len,
                          int extra)
{
    double before = state_commits(c, 0);
    struct h_result r = h_put(hc, key, val, len);
    CU_ASSERT_EQUAL_FATAL(r.err, 0);
    h_result_free(&r);
    CU_ASSERT_FATAL(commits_after(c, 0, before + extra));
}

/* A compaction relies only on a state whose meta page is on disk: a failed
 * LMDB flush (fsyncgate: the kernel drops the pages it did not write, and
 * no later flush writes them) loses the meta page of the commit before it,
 * so the next commit's flush does not put that state on disk for good.
 * Commits C and D (D's flush puts C's meta page on disk; D's own meta page
 * is written after its flush), then the next flush fails, the same state
 * is committed again (E), a compaction comes, then the power goes at the
 * next commit. The compaction once took D's state, deleting the log
 * segments up to D, while the disk held C's: the node could not start
 * ("the state is at index C but the log starts at E"). Values of over 1
 * MiB fill a segment each (--wal-segment-mb 1); a one-node cluster whose
 * compaction is due at the fourth write. */
static void test_disk_compaction_after_a_failed_lmdb_flush_keeps_its_log(void)
{
    enum { S = 40, BIG = (1 << 20) + 65536 };
    struct h_cluster c;
    struct h_start o = {.diskfault = true};
    char extra[200];
    snprintf(extra, sizeof extra,
             "--snapshot-entries %d --snapshot-trailing 0 "
             "--state-commit-ms 300 --wal-segment-mb 1",
             S);
    CU_ASSERT_EQUAL_FATAL(h_cluster_start_with(&c, 1, extra, &o), 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 15000) == 0);
    struct h_client hc;
    CU_ASSERT_FATAL(h_client_open(&hc, &c, cunit_seed()) == 0);
    /* Small writes up to index S - 3: the four below end at S + 1, where
     * the log holds more than S entries (none compacted yet). */
    char k[32], v[32];
    int pads = 0;
    for (;;) {
        double applied = node_metric(&c, 0, "raftkv_applied_index");
        CU_ASSERT_FATAL(applied > 0 && applied <= S - 3);
        if (applied == S - 3) {
            break;
        }
        snprintf(k, sizeof k, "p%d", pads);
        snprintf(v, sizeof v, "v%d", pads++);
        struct h_result r = h_put(&hc, k, v, strlen(v));
        CU_ASSERT_EQUAL_FATAL(r.err, 0);
        h_result_free(&r);
    }
    commits_quiet(&c, 0);
    char *big = malloc(BIG);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    /* C, then D: each value in a segment of its own. */
    memset(big, 'c', BIG);
    put_committed(&c, &hc, "c", big, BIG, 0);
    memset(big, 'd', BIG);
    put_committed(&c, &hc, "d", big, BIG, 0);
    /* The next LMDB flush fails (E's), and E is committed again. */
    CU_ASSERT_EQUAL(h_node_rules(&c, 0, "fail data.mdb sync EIO"), 0);
    put_committed(&c, &hc, "e", "small", 5, 1);
    CU_ASSERT_FATAL(h_file_contains(c.nodes[0].trace, "-EIO"));
    /* The compaction is due at this write; the power goes at the next
     * commit, before it writes anything. */
    CU_ASSERT_EQUAL(h_node_rules(&c, 0, "crash data.mdb any"), 0);
    struct h_result r = h_put(&hc, "f", "small", 5);
    CU_ASSERT_EQUAL(r.err, 0);
    h_result_free(&r);
    CU_ASSERT_FATAL(h_node_exited(&c, 0, 10000));
    CU_ASSERT(h_file_contains(c.nodes[0].trace, "unlink wal/"));
    h_client_close(&hc);
    CU_ASSERT_EQUAL(h_node_rules(&c, 0, ""), 0);
    int started = h_node_start(&c, 0);
    CU_ASSERT_FALSE(h_log_contains(&c, 0, "the log starts at"));
    CU_ASSERT_EQUAL_FATAL(started, 0);
    /* Nothing acknowledged is lost. */
    CU_ASSERT_FATAL(h_client_open(&hc, &c, cunit_seed()) == 0);
    const char *keys[] = {"c", "d", "e", "f"};
    for (size_t i = 0; i < 4; i++) {
        r = h_get(&hc, keys[i], false, 0);
        size_t want = i < 2 ? BIG : 5;
        CU_ASSERT(r.err == 0 && r.value && r.len == want &&
                  r.value[0] == (i < 2 ? keys[i][0] : 's'));
        h_result_free(&r);
    }
    snprintf(k, sizeof k, "p%d", pads - 1);
    snprintf(v, sizeof v, "v%d", pads - 1);
    r = h_get(&hc, k, false, 0);
    CU_ASSERT(r.err == 0 && r.value && strcmp(r.value, v) == 0);
    h_result_free(&r);
    h_client_close(&hc);
    free(big);
    CU_ASSERT_EQUAL(h_cluster_destroy(&c), 0);
}

/* ---------------------------------------------------------------- terms */

static void on_vote(const Raftkv__RequestVoteReply *r, void *data)
{
    *(bool *)data = r != NULL;
}

/* A RequestVote in another member's name, with @term. */
static void forge_vote(struct h_cluster *c,
                       size_t to,
                       uint64_t term,
                       bool pre_vote,
                       bool transfer)
{
    struct view v = status_of(c, to);
    struct rpc_channel *ch = h_peer_channel(c, to, (to + 1) % c->n, 3000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    Raftkv__RequestVoteArgs a = RAFTKV__REQUEST_VOTE_ARGS__INIT;
    a.cluster_id = v.cluster_id;
    a.from = c->nodes[(to + 1) % c->n].id;
    a.to = c->nodes[to].id;
    a.term = term;
    a.last_log_index = UINT64_MAX;
    a.last_log_term = term;
    a.pre_vote = pre_vote;
    a.leader_transfer = transfer;
    bool replied = false;
    raftkv__raft_service__request_vote(
        rpc_channel_service(ch, &raftkv__raft_service__descriptor), &a, on_vote,
        &replied);
    rpc_channel_free(ch);
}

/* A leader is elected, and a read served by it, within 15 s (reads, so
 * that this runs against a node of any version). */
static bool cluster_leads(struct h_cluster *c)
{
    return h_find_leader(c, 15000) >= 0;
}

static void test_terms_that_cannot_be_real_do_not_stop_elections(void)
{
    struct h_cluster c;
    CU_ASSERT_EQUAL_FATAL(h_cluster_start(&c, 3, NULL), 0);
    CU_ASSERT_FATAL(cluster_leads(&c));
    /* Forged votes at the top of the term range, for a leadership
     * transfer (which overrides leases) and as pre-votes at term + 1. */
    for (size_t i = 0; i < c.n; i++) {
        forge_vote(&c, i, UINT64_MAX, false, true);
        forge_vote(&c, i, UINT64_MAX, true, false);
        forge_vote(&c, i, UINT64_MAX - 1, false, false);
        forge_vote(&c, i, (UINT64_C(1) << 62) + 5, false, true);
    }
    /* Elections still work: the leader goes and another one is elected;
     * and again after every node restarted (the term is on disk). */
    int l = h_find_leader(&c, 15000);
    CU_ASSERT_FATAL(l >= 0);
    h_node_kill(&c, (size_t)l);
    CU_ASSERT(cluster_leads(&c));
    CU_ASSERT_EQUAL(h_node_start(&c, (size_t)l), 0);
    for (size_t i = 0; i < c.n; i++) {
        h_node_kill(&c, i);
    }
    for (size_t i = 0; i < c.n; i++) {
        CU_ASSERT_EQUAL_FATAL(h_node_start(&c, i), 0);
    }
    CU_ASSERT(cluster_leads(&c));
    for (size_t i = 0; i < c.n; i++) {
        struct view v = status_of(&c, i);
        CU_ASSERT(v.ok && v.term < (UINT64_C(1) << 62));
    }
    CU_ASSERT_EQUAL(h_cluster_destroy(&c), 0);
}

int main(int argc, char **argv)
{
    static CU_TestInfo snapshot_tests[] = {
        {"test_snapshot_chunk_of_an_earlier_stream_is_not_mixed_in",
         test_snapshot_chunk_of_an_earlier_stream_is_not_mixed_in},
        {"test_snapshot_newer_stream_in_the_same_turn_as_an_install",
         test_snapshot_newer_stream_in_the_same_turn_as_an_install},
        {"test_snapshot_failing_its_stream_checksum_is_fetched_again",
         test_snapshot_failing_its_stream_checksum_is_fetched_again},
        {"test_snapshot_of_many_chunks_survives_a_power_loss_part_way",
         test_snapshot_of_many_chunks_survives_a_power_loss_part_way},
        {"test_snapshot_receiver_silent_mid_transfer_is_not_restarted",
         test_snapshot_receiver_silent_mid_transfer_is_not_restarted},
        {"test_snapshot_of_many_chunks_gets_across_under_writes",
         test_snapshot_of_many_chunks_gets_across_under_writes},
        CU_TEST_INFO_NULL,
    };
    static CU_TestInfo session_tests[] = {
        {"test_session_retry_after_eviction_is_refused_not_applied",
         test_session_retry_after_eviction_is_refused_not_applied},
        {"test_session_eviction_is_the_same_on_every_replica",
         test_session_eviction_is_the_same_on_every_replica},
        CU_TEST_INFO_NULL,
    };
    static CU_TestInfo disk_tests[] = {
        {"test_disk_shutdown_after_a_failed_log_write_keeps_state_behind_log",
         test_disk_shutdown_after_a_failed_log_write_keeps_state_behind_log},
        {"test_disk_failed_lmdb_meta_write_does_not_wedge_the_node",
         test_disk_failed_lmdb_meta_write_does_not_wedge_the_node},
        {"test_disk_compaction_after_a_failed_lmdb_flush_keeps_its_log",
         test_disk_compaction_after_a_failed_lmdb_flush_keeps_its_log},
        {"test_compaction_due_does_not_wait_for_a_slow_commit_timer",
         test_compaction_due_does_not_wait_for_a_slow_commit_timer},
        {"test_disk_compaction_under_load_relies_on_an_earlier_sync",
         test_disk_compaction_under_load_relies_on_an_earlier_sync},
        CU_TEST_INFO_NULL,
    };
    static CU_TestInfo term_tests[] = {
        {"test_terms_that_cannot_be_real_do_not_stop_elections",
         test_terms_that_cannot_be_real_do_not_stop_elections},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"storage_snapshot", NULL, NULL, NULL, NULL, snapshot_tests},
        {"storage_terms", NULL, NULL, NULL, NULL, term_tests},
        {"storage_disk", NULL, NULL, NULL, NULL, disk_tests},
        {"storage_sessions", NULL, NULL, NULL, NULL, session_tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
