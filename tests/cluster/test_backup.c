/* test_backup.c: kvctl snapshot save while writes go on, and a new cluster
 * started from the file with kvserver --restore. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

#define OK                   RAFTKV__KV_ERROR__KV_OK
#define FAILED_SINCE(before) (CU_get_number_of_failures() > (before))
#define TRAILER              13 /* kind, record count, CRC-32C */
#define HEADER               32

struct writer
{
    struct h_cluster *c;
    volatile bool stop;
    volatile int acked; /* keys w0..w(acked-1) acknowledged */
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct h_client cl;
    if (h_client_open(&cl, w->c, cunit_seed() + 7) != 0) {
        return NULL;
    }
    char key[32], val[32];
    for (int i = 0; !w->stop && i < 100000; i++) {
        snprintf(key, sizeof key, "w%d", i);
        snprintf(val, sizeof val, "v%d", i);
        if (h_put(&cl, key, val, strlen(val)).err != OK) {
            break;
        }
        w->acked = i + 1;
    }
    h_client_close(&cl);
    return NULL;
}

static int to_file(const void *data, size_t len, void *arg)
{
    return fwrite(data, 1, len, arg) == len ? 0 : -1;
}

static struct clerk *open_clerk(struct h_cluster *c)
{
    char eps[512];
    h_endpoints(c, eps, sizeof eps);
    struct clerk *ck = NULL;
    CU_ASSERT_FATAL(clerk_open(&ck, eps, NULL) == CLERK_OK);
    return ck;
}

/* Save the state of cluster c to path; returns the file's size. */
static long save(struct h_cluster *c, const char *path, uint64_t *index)
{
    struct clerk *ck = open_clerk(c);
    FILE *fp = fopen(path, "wb");
    CU_ASSERT_FATAL(fp != NULL);
    uint64_t term = 0, bytes = 0;
    int err = clerk_snapshot_save(ck, to_file, fp, index, &term, &bytes);
    if (err) {
        fprintf(stderr, "snapshot save: %s\n", clerk_errmsg(ck));
    }
    CU_ASSERT_EQUAL(err, CLERK_OK);
    fclose(fp);
    clerk_close(ck);
    struct stat st;
    CU_ASSERT_FATAL(stat(path, &st) == 0);
    CU_ASSERT_EQUAL((uint64_t)st.st_size, bytes);
    return (long)st.st_size;
}

static char *slurp(const char *path, long *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        return NULL;
    }
    fseek(fp, 0, SEEK_END);
    *len = ftell(fp);
    rewind(fp);
    char *b = malloc((size_t)*len + 1);
    if (b && fread(b, 1, (size_t)*len, fp) != (size_t)*len) {
        free(b);
        b = NULL;
    }
    fclose(fp);
    return b;
}

/* kvserver --restore for node i of c; its output in out. */
static int restore(struct h_cluster *c,
                   size_t i,
                   const char *file,
                   char *out,
                   size_t len)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "timeout 30 %s --id %llu --cluster %s --data-dir %s --restore %s "
             "2>&1",
             KVSERVER_BIN, (unsigned long long)c->nodes[i].id, c->cluster_arg,
             c->nodes[i].dir, file);
    FILE *p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    size_t got = fread(out, 1, len - 1, p);
    out[got] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_save_under_writes_and_restore_a_new_cluster(void)
{
    unsigned failures_at_start = CU_get_number_of_failures();
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    /* Some large values, so that the copy takes several 1 MiB chunks. */
    struct h_client big;
    CU_ASSERT_FATAL(h_client_open(&big, &c, cunit_seed() + 3) == 0);
    static char blob[200 * 1024 + 1];
    for (int i = 0; i < 20; i++) {
        char key[32];
        memset(blob, 'a' + i, sizeof blob - 1);
        snprintf(key, sizeof key, "big%d", i);
        CU_ASSERT_EQUAL(h_put(&big, key, blob, sizeof blob - 1).err, OK);
    }
    h_client_close(&big);
    struct writer w = {.c = &c};
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, writer_main, &w) == 0);
    uint64_t until = h_now_ms() + 30000;
    while (w.acked < 200 && h_now_ms() < until) {
        h_sleep_ms(10);
    }
    CU_ASSERT_FATAL(w.acked >= 200);
    /* Saved while the writer goes on. */
    int acked_before = w.acked;
    char file[600], file2[600], damaged[600];
    snprintf(file, sizeof file, "%s/backup.snap", c.root);
    snprintf(file2, sizeof file2, "%s/again.snap", c.root);
    snprintf(damaged, sizeof damaged, "%s/damaged.snap", c.root);
    uint64_t index = 0;
    long size = save(&c, file, &index);
    int acked_after = w.acked;
    w.stop = true;
    pthread_join(th, NULL);
    CU_ASSERT(index > 0);
    CU_ASSERT(size > 3 * 1024 * 1024); /* read in four chunks or more */
    /* Writes were acknowledged while the copy was read: the consistency
     * checks below are about a save under writes, not an idle one. */
    CU_ASSERT(acked_after > acked_before);
    printf(
        "\n  saved %ld bytes at index %llu; writes acknowledged: %d "
        "before, %d after\n",
        size, (unsigned long long)index, acked_before, acked_after);

    /* A new cluster (other ports, empty directories) from the file. */
    struct h_cluster r;
    CU_ASSERT_FATAL(h_cluster_start(&r, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&r, 10000) >= 0); /* started for good */
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(h_node_term(&r, i), 0);
        CU_ASSERT_EQUAL(cunit_remove_tree(r.nodes[i].dir), 0);
    }
    char out[4096];
    /* A damaged copy is refused and leaves nothing behind. */
    long len;
    char *bytes = slurp(file, &len);
    CU_ASSERT_FATAL(bytes != NULL && len == size);
    bytes[len / 2] ^= 0x01;
    FILE *fp = fopen(damaged, "wb");
    CU_ASSERT_FATAL(fp != NULL);
    CU_ASSERT_EQUAL(fwrite(bytes, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    CU_ASSERT_EQUAL(restore(&r, 0, damaged, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "damaged") != NULL);
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(restore(&r, i, file, out, sizeof out), 0);
        CU_ASSERT(strstr(out, "restored") != NULL);
    }
    /* Not into a directory that holds data. */
    CU_ASSERT_EQUAL(restore(&r, 1, file, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "already holds data") != NULL);
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT(h_node_start(&r, i) == 0);
    }
    CU_ASSERT_FATAL(h_find_leader(&r, 10000) >= 0);

    /* Every write acknowledged before the save is there, and each key the
     * copy holds is one of the writer's in order (a prefix). */
    struct h_client cl;
    CU_ASSERT_FATAL(h_client_open(&cl, &r, cunit_seed()) == 0);
    int present = 0, missing_before = 0, gaps = 0;
    for (int i = 0; i < acked_after; i++) {
        char key[32], val[32];
        snprintf(key, sizeof key, "w%d", i);
        snprintf(val, sizeof val, "v%d", i);
        struct h_result g = h_get(&cl, key, false, 0);
        bool has = g.err == OK && g.value && strcmp(g.value, val) == 0;
        h_result_free(&g);
        if (has) {
            gaps += present != i;
            present++;
        } else if (i < acked_before) {
            missing_before++;
        }
    }
    for (int i = 0; i < 20; i++) {
        char key[32];
        snprintf(key, sizeof key, "big%d", i);
        struct h_result g = h_get(&cl, key, false, 0);
        CU_ASSERT(g.err == OK && g.len == sizeof blob - 1 &&
                  g.value[0] == 'a' + i && g.value[g.len - 1] == 'a' + i);
        h_result_free(&g);
    }
    CU_ASSERT_EQUAL(missing_before, 0);
    CU_ASSERT_EQUAL(gaps, 0);
    CU_ASSERT(present >= acked_before && present <= acked_after + 1);
    /* The restored state equals the saved one: the same records. */
    long size2 = save(&r, file2, &index);
    long len2;
    char *again = slurp(file2, &len2);
    CU_ASSERT_FATAL(again != NULL);
    bytes[len / 2] ^= 0x01;
    CU_ASSERT_EQUAL(size2, size);
    CU_ASSERT(len2 == len && memcmp(bytes + HEADER, again + HEADER,
                                    (size_t)len - HEADER - TRAILER) == 0);
    /* And it takes writes. */
    CU_ASSERT_EQUAL(h_put(&cl, "after", "restore", 7).err, OK);
    free(bytes);
    free(again);
    h_client_close(&cl);
    r.keep = FAILED_SINCE(failures_at_start);
    c.keep = r.keep;
    h_cluster_destroy(&r);
    h_cluster_destroy(&c);
}

/* A node keeps 4 snapshot reads; one that has ended holds its slot only
 * to resend a lost last chunk, so saves one after another never find the
 * node "busy" (the fifth within 30 s was refused: "4 snapshot reads are
 * in progress"). */
static void test_saves_one_after_another_are_not_refused(void)
{
    struct h_cluster c;
    CU_ASSERT_FATAL(h_cluster_start(&c, 3, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&c, 10000) >= 0);
    char path[512];
    snprintf(path, sizeof path, "%s/again.snap", c.root);
    uint64_t index = 0;
    for (int i = 0; i < 8; i++) {
        CU_ASSERT(save(&c, path, &index) > 0);
    }
    unlink(path);
    c.keep = CU_get_number_of_failures() > 0;
    CU_ASSERT(h_cluster_destroy(&c) == 0);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_save_under_writes_and_restore_a_new_cluster",
         test_save_under_writes_and_restore_a_new_cluster},
        {"test_saves_one_after_another_are_not_refused",
         test_saves_one_after_another_are_not_refused},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"backup", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
