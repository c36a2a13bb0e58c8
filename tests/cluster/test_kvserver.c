/* test_kvserver.c: real kvserver clusters on loopback: the node's promises. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <errno.h>

#include <CUnit/Basic.h>

#include "cunit_main.h"
#include "harness.h"

#define OK        RAFTKV__KV_ERROR__KV_OK
#define NOT_FOUND RAFTKV__KV_ERROR__KV_NOT_FOUND

/* Did the running test fail an assert since `before`? Keeps its logs. */
#define FAILED_SINCE(before) (CU_get_number_of_failures() > (before))

static bool get_equals(struct h_client *cl, const char *key, const char *want)
{
    struct h_result r = h_get(cl, key, false, 0);
    bool ok = r.err == OK && r.value && strcmp(r.value, want) == 0;
    if (!ok) {
        fprintf(stderr, "get %s: err %d value '%s', want '%s'\n", key, r.err,
                r.value ? r.value : "(none)", want);
    }
    h_result_free(&r);
    return ok;
}

static void test_cluster_elects_and_serves_all_operations(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    c.keep = true;
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed()) == 0);

    struct h_result r = h_put(&cl, "k", "v1", 2);
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(get_equals(&cl, "k", "v1"));
    r = h_append(&cl, "k", "+v2");
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(get_equals(&cl, "k", "v1+v2"));
    r = h_append(&cl, "fresh", "a");
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(get_equals(&cl, "fresh", "a"));

    r = h_cas(&cl, "c", NULL, "first"); /* must not exist: it does not */
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(r.swapped);
    r = h_cas(&cl, "c", NULL, "second"); /* now it exists */
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(!r.swapped);
    r = h_cas(&cl, "c", "wrong", "third");
    CU_ASSERT(!r.swapped);
    r = h_cas(&cl, "c", "first", "fourth");
    CU_ASSERT(r.swapped);
    CU_ASSERT(get_equals(&cl, "c", "fourth"));

    r = h_del(&cl, "k");
    CU_ASSERT_EQUAL(r.err, OK);
    r = h_get(&cl, "k", false, 0);
    CU_ASSERT_EQUAL(r.err, NOT_FOUND);
    r = h_del(&cl, "k");
    CU_ASSERT_EQUAL(r.err, NOT_FOUND);

    /* Binary-safe values. */
    char bin[5] = {'a', 0, 'b', 0, 'c'};
    r = h_put(&cl, "bin", bin, 5);
    CU_ASSERT_EQUAL(r.err, OK);
    r = h_get(&cl, "bin", false, 0);
    CU_ASSERT_EQUAL(r.len, 5);
    CU_ASSERT(r.value && memcmp(r.value, bin, 5) == 0);
    h_result_free(&r);

    /* Every node serves a stale read of the replicated value. */
    for (size_t i = 0; i < c.n; i++) {
        bool seen = false;
        for (int t = 0; t < 100 && !seen; t++) {
            r = h_get(&cl, "c", true, i);
            seen = r.err == OK && r.value && strcmp(r.value, "fourth") == 0;
            h_result_free(&r);
            if (!seen) {
                h_sleep_ms(20);
            }
        }
        CU_ASSERT(seen);
    }
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* ---------------------------------------------------- load generation */

struct writer
{
    struct h_cluster *c; /* cluster */
    int thread;          /* writer number */
    int count;           /* keys to write */
    int acked;           /* keys acknowledged OK */
    int unknown;         /* writes whose outcome stayed unknown */
    char *acked_log;     /* the appends acknowledged, in order */
    size_t log_len;      /* its length */
    unsigned seed;       /* client id seed */
    bool appends;        /* also append a token to "log-<thread>" */
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct h_client cl;
    if (h_client_open(&cl, w->c, w->seed) != 0) {
        return NULL;
    }
    w->acked_log = calloc(1, (size_t)w->count * 12 + 1);
    char key[64], val[64], logkey[64];
    snprintf(logkey, sizeof logkey, "log-%d", w->thread);
    for (int i = 0; i < w->count; i++) {
        snprintf(key, sizeof key, "w%d-k%d", w->thread, i);
        snprintf(val, sizeof val, "v%d", i);
        struct h_result r = h_put(&cl, key, val, strlen(val));
        if (r.err == OK) {
            w->acked++;
        } else {
            w->unknown++;
        }
        if (w->appends) {
            snprintf(val, sizeof val, "%d;", i);
            r = h_append(&cl, logkey, val);
            if (r.err == OK) {
                memcpy(w->acked_log + w->log_len, val, strlen(val));
                w->log_len += strlen(val);
            } else {
                w->unknown++;
            }
        }
    }
    h_client_close(&cl);
    return NULL;
}

/* Every acknowledged put is readable; appends are there once, in order. */
static void check_writer(struct h_client *cl, struct writer *w)
{
    char key[64], val[64];
    int missing = 0;
    for (int i = 0; i < w->count; i++) {
        snprintf(key, sizeof key, "w%d-k%d", w->thread, i);
        snprintf(val, sizeof val, "v%d", i);
        struct h_result r = h_get(cl, key, false, 0);
        if (r.err != OK || strcmp(r.value, val) != 0) {
            missing++;
        }
        h_result_free(&r);
    }
    CU_ASSERT_EQUAL(missing, 0);
    if (w->appends && w->unknown == 0) {
        char logkey[64];
        snprintf(logkey, sizeof logkey, "log-%d", w->thread);
        struct h_result r = h_get(cl, logkey, false, 0);
        CU_ASSERT_EQUAL(r.err, OK);
        CU_ASSERT(r.value && strcmp(r.value, w->acked_log) == 0);
        h_result_free(&r);
    }
    free(w->acked_log);
}

/* Heartbeats must keep every follower from even trying an election. */
static void test_healthy_cluster_keeps_its_leader(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    h_sleep_ms(300); /* let the first round of elections settle */
    size_t before[H_MAX_NODES];
    for (size_t i = 0; i < c.n; i++) {
        before[i] = h_log_count(&c, i, "candidate");
    }
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed()) == 0);
    for (int t = 0; t < 40; t++) { /* 4 s: several election timeouts */
        if (t % 4 == 0) {
            CU_ASSERT_EQUAL(h_put(&cl, "tick", "tock", 4).err, OK);
        }
        h_sleep_ms(100);
    }
    for (size_t i = 0; i < c.n; i++) {
        CU_ASSERT_EQUAL(h_log_count(&c, i, "candidate"), before[i]);
    }
    CU_ASSERT_EQUAL(h_find_leader(&c, 1000), leader);
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

static void test_kill_leader_under_load_loses_no_acknowledged_write(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    enum { THREADS = 4, KEYS = 150 };
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct writer w[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct writer){.c = &c,
                               .thread = i,
                               .count = KEYS,
                               .seed = cunit_seed() + (unsigned)i,
                               .appends = true};
        pthread_create(&th[i], NULL, writer_main, &w[i]);
    }
    h_sleep_ms(700);
    h_node_kill(&c, (size_t)leader); /* kill -9 in the middle of writes */
    h_sleep_ms(1500);
    CU_ASSERT(h_node_start(&c, (size_t)leader) == 0);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed() + 99) == 0);
    int acked = 0, unknown = 0;
    for (int i = 0; i < THREADS; i++) {
        acked += w[i].acked;
        unknown += w[i].unknown;
        check_writer(&cl, &w[i]);
    }
    printf("\n    %d puts acknowledged, %d with unknown outcome\n", acked,
           unknown);
    CU_ASSERT_EQUAL(unknown, 0); /* the client retried until it knew */
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

static void test_restart_of_all_nodes_keeps_the_data(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct writer w = {.c = &c,
                       .thread = 0,
                       .count = 200,
                       .seed = cunit_seed(),
                       .appends = true};
    writer_main(&w);
    CU_ASSERT_EQUAL(w.acked, 200);
    /* A clean stop of every node... */
    for (size_t i = 0; i < c.n; i++) {
        CU_ASSERT_EQUAL(h_node_term(&c, i), 0);
    }
    for (size_t i = 0; i < c.n; i++) {
        CU_ASSERT(h_node_start(&c, i) == 0);
    }
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed() + 1) == 0);
    check_writer(&cl, &w);
    /* ...and kill -9 of every node. */
    CU_ASSERT_EQUAL(h_put(&cl, "after", "restart", 7).err, OK);
    for (size_t i = 0; i < c.n; i++) {
        h_node_kill(&c, i);
    }
    for (size_t i = 0; i < c.n; i++) {
        CU_ASSERT(h_node_start(&c, i) == 0);
    }
    CU_ASSERT(get_equals(&cl, "after", "restart"));
    CU_ASSERT(get_equals(&cl, "w0-k199", "v199"));
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* Send one raw PutAppend with a fixed request id until some node gives a
 * definite answer (the leader may change under us). */
static int raw_until_answered(struct h_client *cl,
                              struct h_cluster *c,
                              const char *key,
                              const char *val,
                              uint64_t rid)
{
    for (int t = 0; t < 200; t++) {
        int err = h_put_raw(cl, (size_t)t % c->n, key, val, rid, true);
        if (err == OK || err == RAFTKV__KV_ERROR__KV_BAD_REQUEST) {
            return err;
        }
        h_sleep_ms(25);
    }
    return -1;
}

static void test_duplicate_request_ids_are_applied_once(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed()) == 0);
    /* The same append (same client, same request id) sent three times. */
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(raw_until_answered(&cl, &c, "dup", "x", 7), OK);
    }
    CU_ASSERT(get_equals(&cl, "dup", "x"));
    CU_ASSERT_EQUAL(raw_until_answered(&cl, &c, "dup", "y", 8), OK);
    CU_ASSERT(get_equals(&cl, "dup", "xy"));
    /* An old request id that was overtaken is refused, not applied. */
    CU_ASSERT_EQUAL(raw_until_answered(&cl, &c, "dup", "z", 6),
                    RAFTKV__KV_ERROR__KV_BAD_REQUEST);
    CU_ASSERT(get_equals(&cl, "dup", "xy"));
    /* Sessions survive a restart of the whole cluster. */
    for (size_t i = 0; i < c.n; i++) {
        h_node_kill(&c, i);
        CU_ASSERT(h_node_start(&c, i) == 0);
    }
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    CU_ASSERT_EQUAL(raw_until_answered(&cl, &c, "dup", "y", 8), OK);
    CU_ASSERT(get_equals(&cl, "dup", "xy"));
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

static int run_kvserver(const char *args, char *out, size_t out_len)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "timeout 10 %s %s 2>&1", KVSERVER_BIN, args);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, out_len - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_data_directory_of_another_cluster_is_refused(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 1, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    CU_ASSERT_EQUAL(h_node_term(&c, 0), 0);
    char args[1024], out[4096];
    /* Same directory, another cluster list. */
    snprintf(args, sizeof args,
             "--id 1 --cluster 1=127.0.0.1:%u,2=127.0.0.1:1 --data-dir %s",
             c.nodes[0].port, c.nodes[0].dir);
    CU_ASSERT_EQUAL(run_kvserver(args, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "belongs to another cluster") != NULL);
    CU_ASSERT(strstr(out, c.nodes[0].dir) != NULL);
    /* Same directory, same cluster, another node id. */
    snprintf(args, sizeof args, "--id 2 --cluster 2=127.0.0.1:%u --data-dir %s",
             c.nodes[0].port, c.nodes[0].dir);
    CU_ASSERT_EQUAL(run_kvserver(args, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "another cluster") != NULL ||
              strstr(out, "belongs to node 1") != NULL);
    /* A data directory that is a file. */
    snprintf(args, sizeof args, "--id 1 --cluster 1=127.0.0.1:%u --data-dir %s",
             c.nodes[0].port, c.nodes[0].log);
    CU_ASSERT_EQUAL(run_kvserver(args, out, sizeof out), 1);
    CU_ASSERT(strstr(out, c.nodes[0].log) != NULL);
    /* The original node still starts from it. */
    CU_ASSERT(h_node_start(&c, 0) == 0);
    CU_ASSERT(h_find_leader(&c, 10000) == 0);
    h_cluster_destroy(&c);
}

static void test_peer_from_another_cluster_is_refused(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    /* A node of another cluster that lists a real node as its peer. */
    size_t victim = (size_t)(leader + 1) % c.n;
    struct h_cluster rogue;
    char extra[64];
    snprintf(extra, sizeof extra, "--election-ms 200 --heartbeat-ms 50");
    CU_ASSERT_FATAL(h_cluster_start(&rogue, 1, extra) == 0);
    h_node_kill(&rogue, 0);
    /* A fresh directory: the first start may have stamped the old one. */
    snprintf(rogue.nodes[0].dir, sizeof rogue.nodes[0].dir, "%s/rogue",
             rogue.root);
    rogue.nodes[0].id = 9; /* an id the real cluster does not use */
    snprintf(rogue.cluster_arg, sizeof rogue.cluster_arg,
             "9=127.0.0.1:%u,%llu=127.0.0.1:%u", rogue.nodes[0].port,
             (unsigned long long)c.nodes[victim].id, c.nodes[victim].port);
    CU_ASSERT_FATAL(h_node_start(&rogue, 0) == 0);
    bool refused = false;
    for (int t = 0; t < 100 && !refused; t++) {
        h_sleep_ms(50);
        refused = h_log_contains(&c, victim, "cluster id mismatch");
    }
    CU_ASSERT(refused);
    /* The real cluster keeps its leader and keeps serving. */
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed()) == 0);
    CU_ASSERT_EQUAL(h_put(&cl, "still", "serving", 7).err, OK);
    CU_ASSERT(get_equals(&cl, "still", "serving"));
    CU_ASSERT_EQUAL(h_find_leader(&c, 5000), leader);
    h_client_close(&cl);
    rogue.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&rogue);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

static void test_lagging_follower_catches_up_through_a_snapshot(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    enum { THREADS = 8 };
    int total = getenv("RAFTKV_SNAPSHOT_KEYS")
                    ? atoi(getenv("RAFTKV_SNAPSHOT_KEYS"))
                    : 100000;
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3,
                                    "--snapshot-entries 5000 "
                                    "--snapshot-trailing 500") == 0);
    int leader = h_find_leader(&c, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    size_t lagging = (size_t)(leader + 1) % c.n;
    h_node_kill(&c, lagging);
    struct writer w[THREADS];
    pthread_t th[THREADS];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct writer){.c = &c,
                               .thread = i,
                               .count = total / THREADS,
                               .seed = cunit_seed() + (unsigned)i};
        pthread_create(&th[i], NULL, writer_main, &w[i]);
    }
    int acked = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        acked += w[i].acked;
        free(w[i].acked_log);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) +
                  (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("\n    %d keys written by %d clients in %.1f s (%.0f/s)\n", acked,
           THREADS, secs, acked / secs);
    CU_ASSERT_EQUAL(acked, total / THREADS * THREADS);
    /* The log was compacted far past what the lagging node has. */
    CU_ASSERT(h_node_start(&c, lagging) == 0);
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed() + 100) == 0);
    char key[64];
    snprintf(key, sizeof key, "w%d-k%d", THREADS - 1, total / THREADS - 1);
    char want[64];
    snprintf(want, sizeof want, "v%d", total / THREADS - 1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool caught_up = false;
    for (int t = 0; t < 600 && !caught_up; t++) {
        struct h_result r = h_get(&cl, key, true, lagging);
        caught_up = r.err == OK && r.value && strcmp(r.value, want) == 0;
        h_result_free(&r);
        if (!caught_up) {
            h_sleep_ms(100);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CU_ASSERT(caught_up);
    printf("    lagging node caught up %.1f s after restart\n",
           (double)(t1.tv_sec - t0.tv_sec) +
               (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    /* It holds every key, from a snapshot: spot-check a spread of them. */
    int wrong = 0;
    for (int i = 0; i < total; i += 97) {
        int thread = i % THREADS, k = i / THREADS;
        snprintf(key, sizeof key, "w%d-k%d", thread, k);
        snprintf(want, sizeof want, "v%d", k);
        struct h_result r = h_get(&cl, key, true, lagging);
        wrong += !(r.err == OK && r.value && strcmp(r.value, want) == 0);
        h_result_free(&r);
    }
    CU_ASSERT_EQUAL(wrong, 0);
    /* It came through a snapshot: the leader streamed one to it. */
    bool streamed = false;
    for (size_t i = 0; i < c.n; i++) {
        streamed |= i != lagging && h_log_contains(&c, i, "sending a snapshot");
    }
    CU_ASSERT(streamed);
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

/* A full disk: writes fail clearly, reads go on, space comes back. */
/* Wait until node @i serves @key = @want from its own state. */
static bool node_has(struct h_client *cl,
                     size_t i,
                     const char *key,
                     const char *want,
                     int timeout_ms)
{
    uint64_t end = h_now_ms() + (uint64_t)timeout_ms;
    while (h_now_ms() < end) {
        struct h_result r = h_get(cl, key, true, i);
        bool ok = r.err == OK && r.value && strcmp(r.value, want) == 0;
        h_result_free(&r);
        if (ok) {
            return true;
        }
        h_sleep_ms(50);
    }
    return false;
}

/* Where a log segment's batches end: past them the file holds zeros. */
static off_t data_end(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        return -1;
    }
    off_t end = 0, at = 0;
    static uint8_t page[4096];
    size_t got;
    while ((got = fread(page, 1, sizeof page, fp)) > 0) {
        for (size_t i = 0; i < got; i++) {
            if (page[i]) {
                end = at + (off_t)sizeof page;
                break;
            }
        }
        at += (off_t)got;
    }
    fclose(fp);
    return end;
}

/* A damaged log stops the node with the file and the index; a wiped node
 * catches up from the others. An interrupted append at the end of the log
 * is cut off instead. */
static void test_damaged_log_is_refused_and_a_wiped_node_catches_up(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    struct writer w = {.c = &c, .count = 100, .seed = cunit_seed()};
    writer_main(&w);
    CU_ASSERT_EQUAL(w.acked, 100);
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed() + 1) == 0);
    int leader = h_find_leader(&c, 10000);
    size_t f = leader == 1 ? 2 : 1; /* a follower */
    CU_ASSERT_FATAL(node_has(&cl, f, "w0-k99", "v99", 10000));
    CU_ASSERT_EQUAL(h_node_term(&c, f), 0);

    /* Flip a byte inside the second batch of its first log segment: good
     * batches follow, so this is damage, not an interrupted append. */
    char seg[700];
    snprintf(seg, sizeof seg, "%s/wal/0000000000000001.wal", c.nodes[f].dir);
    CU_ASSERT_FATAL(data_end(seg) >= 3 * 4096);
    FILE *fp = fopen(seg, "r+b");
    CU_ASSERT_FATAL(fp != NULL);
    fseek(fp, 4096 + 30, SEEK_SET);
    int ch = fgetc(fp);
    fseek(fp, 4096 + 30, SEEK_SET);
    fputc(ch ^ 0x20, fp);
    fclose(fp);
    char args[1400], out[4096];
    snprintf(args, sizeof args, "--id %llu --cluster %s --data-dir %s",
             (unsigned long long)c.nodes[f].id, c.cluster_arg,
             c.nodes[f].dir);
    CU_ASSERT_EQUAL(run_kvserver(args, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "0000000000000001.wal") != NULL);
    CU_ASSERT(strstr(out, "damaged log at offset 4096") != NULL);
    CU_ASSERT(strstr(out, "last good entry before it is index") != NULL);
    CU_ASSERT(strstr(out, "wiping its data directory") != NULL);
    if (FAILED_SINCE(failures_at_start)) {
        fprintf(stderr, "kvserver said:\n%s\n", out);
    }

    /* The documented recovery: wipe it; it catches up from the others. */
    CU_ASSERT_EQUAL(cunit_remove_tree(c.nodes[f].dir), 0);
    CU_ASSERT_FATAL(h_node_start(&c, f) == 0);
    CU_ASSERT(node_has(&cl, f, "w0-k99", "v99", 20000));
    CU_ASSERT(node_has(&cl, f, "w0-k0", "v0", 5000));

    /* An append cut short at the end of the last segment (a crash during
     * the write) is dropped, and the node starts. The last append holds one
     * 6000-byte value: two pages, cut in the middle of its data. */
    static char big[6001];
    memset(big, 'b', 6000);
    CU_ASSERT_EQUAL(h_put(&cl, "tail", big, 6000).err, OK);
    CU_ASSERT(node_has(&cl, f, "tail", big, 10000));
    CU_ASSERT_EQUAL(h_node_term(&c, f), 0);
    off_t size = data_end(seg);
    CU_ASSERT_FATAL(size >= 3 * 4096);
    CU_ASSERT_EQUAL(truncate(seg, size - 8192 + 3000), 0);
    CU_ASSERT_FATAL(h_node_start(&c, f) == 0);
    CU_ASSERT(node_has(&cl, f, "tail", big, 20000));
    CU_ASSERT(h_log_contains(&c, f, "interrupted log append"));
    CU_ASSERT_EQUAL(h_put(&cl, "tail", "t2", 2).err, OK);
    CU_ASSERT(node_has(&cl, f, "tail", "t2", 10000));
    check_writer(&cl, &w);
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
}

static void test_full_disk_refuses_writes_and_recovers(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    if (geteuid() != 0) {
        printf("\n    skipped: mounting a small tmpfs needs root\n");
        return;
    }
    char root[] = "/tmp/raftkv-diskfull-XXXXXX";
    CU_ASSERT_FATAL(mkdtemp(root) != NULL);
    if (mount("tmpfs", root, "tmpfs", 0, "size=24m") != 0) {
        printf("\n    skipped: cannot mount tmpfs: %s\n", strerror(errno));
        rmdir(root);
        return;
    }
    /* Fill most of it, so the node hits the limit soon. */
    char filler[300];
    snprintf(filler, sizeof filler, "%s/filler", root);
    FILE *f = fopen(filler, "w");
    static char block[1 << 20];
    for (int i = 0; i < 14; i++) {
        fwrite(block, 1, sizeof block, f);
    }
    fclose(f);
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 1, NULL) == 0);
    c.keep = true;
    h_node_kill(&c, 0);
    snprintf(c.nodes[0].dir, sizeof c.nodes[0].dir, "%s/data", root);
    CU_ASSERT_FATAL(h_node_start(&c, 0) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) == 0);
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed()) == 0);
    /* The write that meets the full disk stays unanswered until the node's
     * request timeout (outcome unknown); its retry gets NO_SPACE. */
    cl.deadline_ms = 10000;
    static char value[64 * 1024];
    memset(value, 'd', sizeof value);
    int written = 0, err = OK;
    char key[32];
    for (int i = 0; i < 400 && err == OK; i++) {
        snprintf(key, sizeof key, "big%d", i);
        struct h_result r = h_put(&cl, key, value, sizeof value);
        err = r.err;
        written += err == OK;
    }
    printf("\n    %d writes of 64 KiB before the disk was full (err %d)\n",
           written, err);
    CU_ASSERT(written > 0);
    CU_ASSERT_EQUAL(err, RAFTKV__KV_ERROR__KV_NO_SPACE);
    /* The node is alive and serves what it has. */
    CU_ASSERT(c.nodes[0].pid > 0 && kill(c.nodes[0].pid, 0) == 0);
    struct h_result r = h_get(&cl, "big0", true, 0);
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT_EQUAL(r.len, sizeof value);
    h_result_free(&r);
    /* Space returns: writes work again, and nothing was lost. */
    unlink(filler);
    cl.deadline_ms = 10000;
    /* The node retries its held write every second. */
    for (int t = 0; t < 50; t++) {
        r = h_put(&cl, "after", "space", 5);
        if (r.err != RAFTKV__KV_ERROR__KV_NO_SPACE) {
            break;
        }
        h_sleep_ms(200);
    }
    CU_ASSERT_EQUAL(r.err, OK);
    CU_ASSERT(get_equals(&cl, "after", "space"));
    for (int i = 0; i < written; i++) {
        snprintf(key, sizeof key, "big%d", i);
        r = h_get(&cl, key, false, 0);
        CU_ASSERT(r.err == OK && r.len == sizeof value);
        h_result_free(&r);
    }
    h_client_close(&cl);
    /* Restart from the same data: intact. */
    h_node_kill(&c, 0);
    CU_ASSERT(h_node_start(&c, 0) == 0);
    CU_ASSERT_FATAL(h_client_open(&cl, &c, cunit_seed() + 1) == 0);
    CU_ASSERT(get_equals(&cl, "after", "space"));
    h_client_close(&cl);
    c.keep = FAILED_SINCE(failures_at_start);
    h_cluster_destroy(&c);
    umount(root);
    rmdir(root);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_cluster_elects_and_serves_all_operations",
         test_cluster_elects_and_serves_all_operations},
        {"test_healthy_cluster_keeps_its_leader",
         test_healthy_cluster_keeps_its_leader},
        {"test_kill_leader_under_load_loses_no_acknowledged_write",
         test_kill_leader_under_load_loses_no_acknowledged_write},
        {"test_restart_of_all_nodes_keeps_the_data",
         test_restart_of_all_nodes_keeps_the_data},
        {"test_duplicate_request_ids_are_applied_once",
         test_duplicate_request_ids_are_applied_once},
        {"test_data_directory_of_another_cluster_is_refused",
         test_data_directory_of_another_cluster_is_refused},
        {"test_peer_from_another_cluster_is_refused",
         test_peer_from_another_cluster_is_refused},
        {"test_lagging_follower_catches_up_through_a_snapshot",
         test_lagging_follower_catches_up_through_a_snapshot},
        {"test_full_disk_refuses_writes_and_recovers",
         test_full_disk_refuses_writes_and_recovers},
        {"test_damaged_log_is_refused_and_a_wiped_node_catches_up",
         test_damaged_log_is_refused_and_a_wiped_node_catches_up},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"kvserver", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
