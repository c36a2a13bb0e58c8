/* test_diskfault.c: the disk-fault shim on real processes: power loss, failed
 * syncs, full disks, torn writes, LMDB. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <lmdb.h>

#include "cunit_main.h"
#include "diskfault_ctl.h"

#ifndef DF_CHILD
#error "build with -DDF_CHILD=\"<path of df_child>\""
#endif

static char base[PATH_MAX];            /* this test's scratch directory */
static char data[PATH_MAX + 16];       /* the watched directory in it */
static char rules[PATH_MAX + 16];      /* the rules file */
static char trace_path[PATH_MAX + 16]; /* the trace file */

/* A running df_child. */
struct child
{
    pid_t pid;       /* its pid */
    int to;          /* its stdin */
    int from;        /* its stdout */
    char out[16384]; /* what it printed so far */
    size_t len;      /* bytes in out */
};

static void make_scratch(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(base, sizeof base, "%s/raftkv-diskfault-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base)) {
        snprintf(base, sizeof base, "/tmp/raftkv-diskfault-XXXXXX");
        CU_ASSERT_FATAL(mkdtemp(base) != NULL);
    }
    snprintf(data, sizeof data, "%s/data", base);
    snprintf(rules, sizeof rules, "%s/rules", base);
    snprintf(trace_path, sizeof trace_path, "%s/trace", base);
    CU_ASSERT_FATAL(mkdir(data, 0755) == 0);
}

static void remove_scratch(void)
{
    cunit_remove_tree(base);
}

/* Start df_child on @cmds (NULL-terminated) under the shim; @watch false
 * leaves RAFTKV_DISKFAULT_DIR unset. */
static void start(struct child *c,
                  bool watch,
                  const char *rule_text,
                  const char *const *cmds)
{
    memset(c, 0, sizeof *c);
    CU_ASSERT_FATAL(df_write_rules(rules, rule_text) == DF_OK);
    int in[2], out[2];
    CU_ASSERT_FATAL(pipe(in) == 0 && pipe(out) == 0);
    const char *argv[64];
    int n = 0;
    argv[n++] = DF_CHILD;
    argv[n++] = data;
    for (int i = 0; cmds[i] && n < 63; i++) {
        argv[n++] = cmds[i];
    }
    argv[n] = NULL;
    c->pid = fork();
    CU_ASSERT_FATAL(c->pid >= 0);
    if (c->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        if (df_setenv(watch ? data : NULL, rules, trace_path) != DF_OK) {
            _exit(126);
        }
        execv(DF_CHILD, (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    c->to = in[1];
    c->from = out[0];
}

/* Read the child's output until it holds @want (or up to EOF when NULL). */
static bool read_until(struct child *c, const char *want)
{
    for (;;) {
        c->out[c->len] = 0;
        if (want && strstr(c->out, want)) {
            return true;
        }
        struct pollfd p = {c->from, POLLIN, 0};
        if (poll(&p, 1, 20000) <= 0) {
            return false; /* a hang: the caller's assert fails */
        }
        ssize_t k = read(c->from, c->out + c->len, sizeof c->out - 1 - c->len);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return want == NULL;
        }
        c->len += (size_t)k;
    }
}

/* Wait until command @index, a "wait", is reached. */
static void await(struct child *c, int index)
{
    char want[32];
    snprintf(want, sizeof want, "%d ready\n", index);
    CU_ASSERT_FATAL(read_until(c, want));
}

static void go_on(struct child *c)
{
    CU_ASSERT(write(c->to, "go\n", 3) == 3);
}

/* Close its stdin, read the rest, reap it. @return its wait status */
static int finish(struct child *c)
{
    close(c->to);
    if (!read_until(c, NULL)) {
        kill(c->pid, SIGKILL);
    }
    close(c->from);
    int status = 0;
    CU_ASSERT(waitpid(c->pid, &status, 0) == c->pid);
    return status;
}

/* Cut the child's power while it waits, reap it. @return its wait status */
static int power_loss(struct child *c)
{
    CU_ASSERT(df_power_loss(c->pid) == DF_OK);
    return finish(c);
}

static bool killed(int status)
{
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

/* What command @index printed, or "" when it did not run. */
static const char *result(const struct child *c, int index)
{
    static char buf[64];
    char want[16];
    int n = snprintf(want, sizeof want, "%d ", index);
    for (const char *line = c->out; line && *line;) {
        if ((line == c->out || line[-1] == '\n') &&
            !strncmp(line, want, (size_t)n)) {
            size_t len = strcspn(line + n, "\n");
            snprintf(buf, sizeof buf, "%.*s", (int)len, line + n);
            return buf;
        }
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return "";
}

static const char *path_in(const char *name)
{
    static char p[2 * PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", data, name);
    return p;
}

/* The size of @name in the data dir, -1 when absent. */
static long long size_of(const char *name)
{
    struct stat st;
    return stat(path_in(name), &st) == 0 ? (long long)st.st_size : -1;
}

/* Read @len bytes of @name at @off into @buf; false on a short read. */
static bool read_at(const char *name, off_t off, size_t len, char *buf)
{
    int fd = open(path_in(name), O_RDONLY);
    if (fd < 0) {
        return false;
    }
    ssize_t k = pread(fd, buf, len, off);
    close(fd);
    return k == (ssize_t)len;
}

/* Are bytes [@off, @off + @len) of @name all @c? */
static bool bytes_are(const char *name, off_t off, size_t len, char c)
{
    char *buf = malloc(len);
    bool same = buf && read_at(name, off, len, buf);
    for (size_t i = 0; same && i < len; i++) {
        same = buf[i] == c;
    }
    free(buf);
    return same;
}

static void create_file(const char *name, size_t len, char c)
{
    char *buf = malloc(len);
    CU_ASSERT_FATAL(buf != NULL);
    memset(buf, c, len);
    int fd = open(path_in(name), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, buf, len) == (ssize_t)len);
    close(fd);
    free(buf);
}

/* Files the shim left behind in the data dir (hidden unlinked ones). */
static int leftovers(void)
{
    DIR *d = opendir(data);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        n += !strncmp(e->d_name, ".diskfault", 10);
    }
    if (d) {
        closedir(d);
    }
    return n;
}

/* Make a file @name of @len bytes of @c, durable with its directory entry. */
#define DURABLE_FILE(name, len, c)                                     \
    "open:" name ":c", "pwrite:" name ":0:" #len ":" c, "fsync:" name, \
        "dirsync:."

static void test_power_loss_keeps_synced_data_and_drops_the_rest(void)
{
    const char *cmds[] = {DURABLE_FILE("f", 8192, "a"), "pwrite:f:0:100:b",
                          "pwrite:f:8192:4096:c", "wait", NULL};
    struct child c;
    start(&c, true, "", cmds);
    await(&c, 6);
    CU_ASSERT_EQUAL(size_of("f"), 12288);
    CU_ASSERT(killed(power_loss(&c)));
    /* Cut back to the synced size; the page overwritten after the sync has
     * its old content back. */
    CU_ASSERT_EQUAL(size_of("f"), 8192);
    CU_ASSERT(bytes_are("f", 0, 8192, 'a'));
    CU_ASSERT_EQUAL(df_trace_count(trace_path, "power-loss", NULL), 1);
}

static void test_power_loss_undoes_a_truncation_after_the_sync(void)
{
    const char *cmds[] = {DURABLE_FILE("f", 8192, "a"), "ftruncate:f:1000",
                          "pwrite:f:1000:50:z", "wait", NULL};
    struct child c;
    start(&c, true, "", cmds);
    await(&c, 6);
    CU_ASSERT_EQUAL(size_of("f"), 1050);
    CU_ASSERT(killed(power_loss(&c)));
    CU_ASSERT_EQUAL(size_of("f"), 8192);
    CU_ASSERT(bytes_are("f", 0, 8192, 'a'));
}

static void test_a_sync_on_any_fd_makes_the_whole_file_durable(void)
{
    /* A second fd on the file (g), as LMDB has: a sync on one covers writes
     * through the other. An O_DSYNC write is durable when it returns, the
     * page and the size it reaches included. */
    const char *cmds[] = {DURABLE_FILE("f", 4096, "a"),
                          "open:f:-:g",
                          "pwrite:f:0:4096:b",
                          "fdatasync:g",
                          "pwrite:f:4096:4096:c",
                          "open:f:d:dsync",
                          "pwrite:dsync:8192:512:d",
                          "pwrite:f:12288:4096:e",
                          "wait",
                          NULL};
    struct child c;
    start(&c, true, "", cmds);
    await(&c, 11);
    CU_ASSERT(killed(power_loss(&c)));
    CU_ASSERT_EQUAL(size_of("f"), 8192 + 512);
    CU_ASSERT(bytes_are("f", 0, 4096, 'b'));
    /* Written without a sync, then reached by the O_DSYNC write's size:
     * the bytes read back as zeros. */
    CU_ASSERT(bytes_are("f", 4096, 4096, 0));
    CU_ASSERT(bytes_are("f", 8192, 512, 'd'));
    CU_ASSERT_EQUAL(df_trace_count(trace_path, "dsync-write", "f"), 1);
}

static void test_fdatasync_eio_fails_once_then_succeeds(void)
{
    const char *cmds[] = {"open:log:c", "pwrite:log:0:4096:a", "fdatasync:log",
                          "fdatasync:log", NULL};
    struct child c;
    start(&c, true, "fail log fdatasync EIO times 1\n", cmds);
    int status = finish(&c);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_STRING_EQUAL(result(&c, 2), "-EIO");
    CU_ASSERT_STRING_EQUAL(result(&c, 3), "0");
    CU_ASSERT_EQUAL(df_trace_count(trace_path, "fdatasync", "log"), 2);
}

static void test_fsyncgate_data_of_a_failed_sync_is_lost_unless_rewritten(void)
{
    const char *cmds[] = {DURABLE_FILE("log", 8192, "x"),
                          "pwrite:log:0:4096:a",
                          "pwrite:log:4096:4096:b",
                          "pwrite:log:8192:4096:d",
                          "fdatasync:log",
                          "pwrite:log:4096:4096:c",
                          "fdatasync:log",
                          "wait",
                          NULL};
    struct child c;
    start(&c, true, "fail log fdatasync EIO\n", cmds);
    await(&c, 10);
    CU_ASSERT_STRING_EQUAL(result(&c, 7), "-EIO");
    CU_ASSERT_STRING_EQUAL(result(&c, 9), "0");
    CU_ASSERT(killed(power_loss(&c)));
    /* The later sync set the size, but the pages the failed sync dropped
     * were never written: page 0 has its old content, page 2 zeros; page 1,
     * written again, is on disk. */
    CU_ASSERT_EQUAL(size_of("log"), 12288);
    CU_ASSERT(bytes_are("log", 0, 4096, 'x'));
    CU_ASSERT(bytes_are("log", 4096, 4096, 'c'));
    CU_ASSERT(bytes_are("log", 8192, 4096, 0));
}

static void test_write_enospc_rule_fails_and_writes_nothing(void)
{
    const char *cmds[] = {"open:log:c",           "pwrite:log:0:100:a",
                          "pwrite:log:100:100:b", "write:log:100:b",
                          "pwrite:log:100:100:c", NULL};
    struct child c;
    start(&c, true, "fail log write ENOSPC after 1 times 2\n", cmds);
    int status = finish(&c);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_STRING_EQUAL(result(&c, 1), "100");
    CU_ASSERT_STRING_EQUAL(result(&c, 2), "-ENOSPC");
    CU_ASSERT_STRING_EQUAL(result(&c, 3), "-ENOSPC");
    CU_ASSERT_STRING_EQUAL(result(&c, 4), "100");
    CU_ASSERT_EQUAL(size_of("log"), 200);
    CU_ASSERT(bytes_are("log", 0, 100, 'a'));
    CU_ASSERT(bytes_are("log", 100, 100, 'c'));
}

static void test_full_disk_refuses_growth_until_reloaded_off(void)
{
    const char *cmds[] = {"open:log:c",
                          "pwrite:log:0:8192:a",
                          "wait",
                          "pwrite:log:8192:4096:b",
                          "pwrite:log:4000:8192:c",
                          "pwrite:log:0:4096:d",
                          "ftruncate:log:20000",
                          "wait",
                          "pwrite:log:8192:4096:e",
                          "ftruncate:log:20000",
                          NULL};
    struct child c;
    start(&c, true, "", cmds);
    await(&c, 2);
    CU_ASSERT(df_write_rules(rules, "full\n") == DF_OK);
    CU_ASSERT(df_reload(c.pid) == DF_OK);
    go_on(&c);
    await(&c, 7);
    CU_ASSERT(df_write_rules(rules, "full off\n") == DF_OK);
    CU_ASSERT(df_reload(c.pid) == DF_OK);
    go_on(&c);
    int status = finish(&c);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_STRING_EQUAL(result(&c, 1), "8192");
    CU_ASSERT_STRING_EQUAL(result(&c, 3), "-ENOSPC");
    CU_ASSERT_STRING_EQUAL(result(&c, 4), "4192"); /* what fits */
    CU_ASSERT_STRING_EQUAL(result(&c, 5), "4096"); /* overwrites succeed */
    CU_ASSERT_STRING_EQUAL(result(&c, 6), "-ENOSPC");
    CU_ASSERT_STRING_EQUAL(result(&c, 8), "4096");
    CU_ASSERT_STRING_EQUAL(result(&c, 9), "0");
    CU_ASSERT_EQUAL(size_of("log"), 20000);
    CU_ASSERT(bytes_are("log", 0, 4096, 'd'));
    CU_ASSERT(bytes_are("log", 4096, 4096, 'c'));
    CU_ASSERT(bytes_are("log", 8192, 4096, 'e'));
}

static void test_crash_after_n_kills_at_the_next_matching_call(void)
{
    const char *cmds[] = {"mkdir:wal",
                          "open:wal/seg:c",
                          "open:other:c",
                          "pwrite:wal/seg:0:512:a",
                          "pwrite:other:0:512:a",
                          "pwrite:wal/seg:512:512:b",
                          "fdatasync:wal/seg",
                          "pwrite:wal/seg:1024:512:c",
                          "pwrite:other:512:512:b",
                          "pwrite:wal/seg:1536:512:d",
                          "pwrite:wal/seg:2048:512:e",
                          NULL};
    struct child c;
    start(&c, true, "crash wal/ write after 3\n", cmds);
    CU_ASSERT(killed(finish(&c)));
    CU_ASSERT_STRING_EQUAL(result(&c, 8), "512");
    CU_ASSERT_STRING_EQUAL(result(&c, 9), ""); /* died in it */
    CU_ASSERT_EQUAL(df_trace_count(trace_path, "write", "wal/"), 4);
    CU_ASSERT_EQUAL(df_trace_count(trace_path, "write", "other"), 2);
    struct df_trace_op last;
    CU_ASSERT_FATAL(df_trace_last(trace_path, &last) == DF_OK);
    CU_ASSERT_STRING_EQUAL(last.op, "write");
    CU_ASSERT_STRING_EQUAL(last.path, "wal/seg");
    CU_ASSERT_EQUAL(last.off, 1536);
    CU_ASSERT_STRING_EQUAL(last.result, "crash");
    CU_ASSERT_EQUAL(last.seq, 9); /* 2 creates, 5 writes, 1 fdatasync */
    /* Its directory entry was never synced: the segment is gone. */
    CU_ASSERT_EQUAL(size_of("wal/seg"), -1);
}

static void test_torn_write_puts_some_sectors_on_disk(void)
{
    unsigned seed = cunit_seed();
    char rule[128];
    snprintf(rule, sizeof rule, "crash log write after 1 torn seed=%u\n", seed);
    const char *cmds[] = {DURABLE_FILE("log", 4096, "x"), "pwrite:log:0:8192:y",
                          NULL};
    struct child c;
    start(&c, true, rule, cmds);
    CU_ASSERT(killed(finish(&c)));
    long long size = size_of("log");
    CU_ASSERT(size >= 4096 && size <= 8192 && size % 512 == 0);
    char buf[8192];
    memset(buf, 0, sizeof buf);
    CU_ASSERT_FATAL(size > 0 && read_at("log", 0, (size_t)size, buf));
    int torn_y = 0, kept_old = 0;
    for (int s = 0; s < 16; s++) {
        char first = buf[s * 512];
        bool uniform = true;
        for (int i = 0; i < 512; i++) {
            uniform &= buf[s * 512 + i] == first;
        }
        CU_ASSERT(uniform); /* a sector is written whole or not at all */
        CU_ASSERT(first == 'y' || first == (s < 8 ? 'x' : 0));
        torn_y += first == 'y';
        kept_old += first != 'y';
    }
    if (torn_y == 0 || kept_old == 0) {
        printf("torn write seed %u: %d sectors new, %d old\n", seed, torn_y,
               kept_old);
    }
    CU_ASSERT(torn_y > 0);
    CU_ASSERT(kept_old > 0);
    /* The size reaches the last sector that made it. */
    CU_ASSERT(size == 4096 || buf[size - 1] == 'y');
    struct df_trace_op last;
    CU_ASSERT(df_trace_last(trace_path, &last) == DF_OK &&
              !strcmp(last.result, "torn"));
}

static void test_random_power_loss_keeps_whole_pages_reproducibly(void)
{
    unsigned seed = cunit_seed();
    char rule[128];
    snprintf(rule, sizeof rule, "signal keep=random seed=%u\n", seed);
    const char *cmds[] = {"open:log:c", "fsync:log",
                          "dirsync:.",  "pwrite:log:0:262144:r",
                          "wait",       NULL};
    char first[262144];
    long long first_size = -1;
    for (int round = 0; round < 2; round++) {
        unlink(path_in("log"));
        struct child c;
        start(&c, true, rule, cmds);
        await(&c, 4);
        CU_ASSERT(killed(power_loss(&c)));
        long long size = size_of("log");
        CU_ASSERT_FATAL(size >= 0 && size <= 262144 && size % 4096 == 0);
        static char buf[262144];
        CU_ASSERT_FATAL(read_at("log", 0, (size_t)size, buf));
        int pages_r = 0, pages_zero = (int)((262144 - size) / 4096);
        for (long long p = 0; p < size / 4096; p++) {
            bool r = bytes_are("log", p * 4096, 4096, 'r');
            bool z = bytes_are("log", p * 4096, 4096, 0);
            CU_ASSERT(r || z);
            pages_r += r;
            pages_zero += z;
        }
        CU_ASSERT(pages_r > 0 && pages_zero > 0); /* 64 coins: 2^-63 */
        if (round == 0) {
            memcpy(first, buf, (size_t)size);
            first_size = size;
        } else {
            /* The same seed loses the same pages. */
            CU_ASSERT_EQUAL(size, first_size);
            CU_ASSERT(memcmp(first, buf, (size_t)size) == 0);
        }
    }
}

static void test_pending_create_unlink_and_rename_are_undone(void)
{
    create_file("old", 1000, 'o');
    create_file("r1", 100, '1');
    create_file("a", 10, 'a');
    create_file("b", 20, 'b');
    const char *cmds[] = {
        "open:new:c",   "pwrite:new:0:100:n", "fsync:new", "unlink:old",
        "rename:r1:r2", "rename:a:b",         "wait",      NULL};
    struct child c;
    start(&c, true, "", cmds);
    await(&c, 6);
    CU_ASSERT_EQUAL(size_of("old"), -1);
    CU_ASSERT_EQUAL(size_of("r1"), -1);
    CU_ASSERT(killed(power_loss(&c)));
    CU_ASSERT_EQUAL(size_of("new"), -1);
    CU_ASSERT_EQUAL(size_of("old"), 1000);
    CU_ASSERT(bytes_are("old", 0, 1000, 'o'));
    CU_ASSERT_EQUAL(size_of("r1"), 100);
    CU_ASSERT_EQUAL(size_of("r2"), -1);
    CU_ASSERT(bytes_are("a", 0, 10, 'a'));
    CU_ASSERT(bytes_are("b", 0, 20, 'b'));
    CU_ASSERT_EQUAL(leftovers(), 0);
}

static void test_directory_fsync_makes_create_unlink_and_rename_durable(void)
{
    create_file("old", 1000, 'o');
    create_file("r1", 100, '1');
    create_file("a", 10, 'a');
    create_file("b", 20, 'b');
    const char *cmds[] = {"open:new:c",
                          "pwrite:new:0:100:n",
                          "fsync:new",
                          "unlink:old",
                          "rename:r1:r2",
                          "rename:a:b",
                          "dirsync:.",
                          "wait",
                          NULL};
    struct child c;
    start(&c, true, "", cmds);
    await(&c, 7);
    CU_ASSERT_EQUAL(leftovers(), 0);
    CU_ASSERT(killed(power_loss(&c)));
    CU_ASSERT_EQUAL(size_of("new"), 100);
    CU_ASSERT(bytes_are("new", 0, 100, 'n'));
    CU_ASSERT_EQUAL(size_of("old"), -1);
    CU_ASSERT_EQUAL(size_of("r1"), -1);
    CU_ASSERT_EQUAL(size_of("r2"), 100);
    CU_ASSERT_EQUAL(size_of("a"), -1);
    CU_ASSERT(bytes_are("b", 0, 10, 'a'));
    CU_ASSERT_EQUAL(size_of("b"), 10);
    CU_ASSERT_EQUAL(leftovers(), 0);
    CU_ASSERT_EQUAL(df_trace_count(trace_path, "dirsync", "."), 1);
}

/* Open the LMDB environment in the data dir and count the keys of
 * [@first, @first + @n) present with their value. */
static int lmdb_count(unsigned first, unsigned n, int *rc_out)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    int found = 0;
    int rc = mdb_env_create(&env);
    if (!rc) {
        rc = mdb_env_open(env, data, 0, 0600);
    }
    if (!rc) {
        rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
        if (!rc && !(rc = mdb_dbi_open(txn, NULL, 0, &dbi))) {
            for (unsigned k = first; k < first + n; k++) {
                char key[16], want[200];
                snprintf(key, sizeof key, "k%08u", k);
                for (size_t i = 0; i < sizeof want; i++) {
                    want[i] = (char)('a' + (k + i) % 26);
                }
                MDB_val mk = {strlen(key), key}, mv;
                found += mdb_get(txn, dbi, &mk, &mv) == 0 &&
                         mv.mv_size == sizeof want &&
                         !memcmp(mv.mv_data, want, sizeof want);
            }
        }
        if (!rc) {
            mdb_txn_abort(txn);
        }
    }
    mdb_env_close(env);
    *rc_out = rc;
    return found;
}

static void test_lmdb_keeps_synced_transactions_after_power_loss(void)
{
    /* 5 synced transactions of 20 keys, then 5 more with MDB_NOSYNC. */
    const char *cmds[] = {"mdb-open:sync",
                          "dirsync:.",
                          "mdb-txns:0:5:20",
                          "mdb-flags:nosync",
                          "mdb-txns:100:5:20",
                          "wait",
                          NULL};
    struct child c;
    start(&c, true, "signal keep=none\n", cmds);
    await(&c, 5);
    CU_ASSERT_STRING_EQUAL(result(&c, 4), "100");
    /* LMDB writes its meta pages through a second, O_DSYNC fd. */
    CU_ASSERT(df_trace_count(trace_path, "dsync-write", "data.mdb") >= 5);
    CU_ASSERT(df_trace_count(trace_path, "fdatasync", "data.mdb") >= 5);
    CU_ASSERT(killed(power_loss(&c)));
    int rc;
    CU_ASSERT_EQUAL(lmdb_count(0, 100, &rc), 100);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(lmdb_count(100, 100, &rc), 0);
}

static void test_lmdb_opens_after_random_power_loss(void)
{
    /* MDB_NOMETASYNC: each commit syncs the data and the previous meta
     * page; only the last meta page is at the mercy of the power. */
    const char *cmds[] = {"mdb-open:sync",
                          "dirsync:.",
                          "mdb-txns:0:5:20",
                          "mdb-flags:nometasync",
                          "mdb-txns:100:5:20",
                          "wait",
                          NULL};
    for (unsigned round = 0; round < 4; round++) {
        unsigned seed = cunit_seed() + round;
        char rule[64];
        snprintf(rule, sizeof rule, "signal keep=random seed=%u\n", seed);
        unlink(path_in("data.mdb"));
        unlink(path_in("lock.mdb"));
        struct child c;
        start(&c, true, rule, cmds);
        await(&c, 5);
        CU_ASSERT(killed(power_loss(&c)));
        int rc;
        CU_ASSERT_EQUAL(lmdb_count(0, 180, &rc), 180);
        CU_ASSERT_EQUAL(rc, 0);
        int last = lmdb_count(180, 20, &rc);
        CU_ASSERT(last == 0 || last == 20); /* all of a transaction or none */
        if (rc || (last != 0 && last != 20)) {
            printf("LMDB after keep=random seed %u: rc %d, last txn %d/20\n",
                   seed, rc, last);
        }
    }
}

static void test_without_dir_nothing_is_intercepted(void)
{
    const char *cmds[] = {"open:log:c", "pwrite:log:0:100:a", "fsync:log",
                          NULL};
    struct child c;
    start(&c, false, "fail * any EIO always\nfull\n", cmds);
    int status = finish(&c);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_STRING_EQUAL(result(&c, 1), "100");
    CU_ASSERT_STRING_EQUAL(result(&c, 2), "0");
    CU_ASSERT_EQUAL(size_of("log"), 100);
    CU_ASSERT_EQUAL(df_trace_count(trace_path, NULL, NULL), 0);
}

/* A signal handler of the program that calls write() while the program
 * is inside the shim (here in its fdatasync) goes straight to libc:
 * taking the shim's state again would wait forever. libevent's handler
 * does that write, so kvserver hung on SIGTERM during a sync. */
static void test_write_in_a_signal_handler_inside_the_shim_does_not_hang(void)
{
    const char *cmds[] = {"open:log:c", "sigwrites:log:300", NULL};
    struct child c;
    start(&c, true, "", cmds);
    int status = finish(&c);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT(atoll(result(&c, 1)) > 0);
    CU_ASSERT_EQUAL(df_trace_count(trace_path, "fdatasync", "log"), 300);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static CU_TestInfo tests[] = {
        {"test_power_loss_keeps_synced_data_and_drops_the_rest",
         test_power_loss_keeps_synced_data_and_drops_the_rest},
        {"test_power_loss_undoes_a_truncation_after_the_sync",
         test_power_loss_undoes_a_truncation_after_the_sync},
        {"test_a_sync_on_any_fd_makes_the_whole_file_durable",
         test_a_sync_on_any_fd_makes_the_whole_file_durable},
        {"test_fdatasync_eio_fails_once_then_succeeds",
         test_fdatasync_eio_fails_once_then_succeeds},
        {"test_fsyncgate_data_of_a_failed_sync_is_lost_unless_rewritten",
         test_fsyncgate_data_of_a_failed_sync_is_lost_unless_rewritten},
        {"test_write_enospc_rule_fails_and_writes_nothing",
         test_write_enospc_rule_fails_and_writes_nothing},
        {"test_full_disk_refuses_growth_until_reloaded_off",
         test_full_disk_refuses_growth_until_reloaded_off},
        {"test_crash_after_n_kills_at_the_next_matching_call",
         test_crash_after_n_kills_at_the_next_matching_call},
        {"test_torn_write_puts_some_sectors_on_disk",
         test_torn_write_puts_some_sectors_on_disk},
        {"test_random_power_loss_keeps_whole_pages_reproducibly",
         test_random_power_loss_keeps_whole_pages_reproducibly},
        {"test_pending_create_unlink_and_rename_are_undone",
         test_pending_create_unlink_and_rename_are_undone},
        {"test_directory_fsync_makes_create_unlink_and_rename_durable",
         test_directory_fsync_makes_create_unlink_and_rename_durable},
        {"test_lmdb_keeps_synced_transactions_after_power_loss",
         test_lmdb_keeps_synced_transactions_after_power_loss},
        {"test_lmdb_opens_after_random_power_loss",
         test_lmdb_opens_after_random_power_loss},
        {"test_without_dir_nothing_is_intercepted",
         test_without_dir_nothing_is_intercepted},
        {"test_write_in_a_signal_handler_inside_the_shim_does_not_hang",
         test_write_in_a_signal_handler_inside_the_shim_does_not_hang},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"diskfault", NULL, NULL, make_scratch, remove_scratch, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
