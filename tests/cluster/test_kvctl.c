/* test_kvctl.c: kvctl as a user runs it: values from files and standard
 * input, raw and base64 output, options after the command, pipe mode's
 * one line per command and its prompt, snapshot save's local errors. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "cunit_main.h"
#include "harness.h"

static struct h_cluster kc; /* one cluster for every test */
static char eps[512];       /* its endpoints */
static char work[128];      /* files of the tests */

/* What a kvctl run gave: its exit status, standard output and error. */
struct run
{
    int status;      /* exit status, -1 if it did not exit */
    char out[16384]; /* standard output (NUL-terminated too) */
    size_t out_len;  /* its bytes */
    char err[4096];  /* standard error */
    double seconds;  /* how long it took */
};

/* Read at most cap-1 bytes of path into buf; returns the count. */
static size_t slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = 0;
    if (f) {
        fclose(f);
    }
    return n;
}

/* Run `kvctl --cluster EPS ARGS` through the shell (ARGS may redirect
 * standard input); cluster NULL: no --cluster. A kvctl that does not end
 * within 60 s (a pipe-mode command that never answers) is killed: the
 * test fails instead of hanging. */
static void kvctl_run(struct run *r, const char *cluster, const char *args)
{
    char cmd[4096], out_path[256], err_path[256];
    snprintf(out_path, sizeof out_path, "%s/stdout", work);
    snprintf(err_path, sizeof err_path, "%s/stderr", work);
    snprintf(cmd, sizeof cmd, "timeout -k 5 60 %s %s%s %s >%s 2>%s", KVCTL_BIN,
             cluster ? "--cluster " : "", cluster ? cluster : "", args,
             out_path, err_path);
    uint64_t t0 = h_now_ms();
    int st = system(cmd);
    r->seconds = (double)(h_now_ms() - t0) / 1000.0;
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r->out_len = slurp(out_path, r->out, sizeof r->out);
    slurp(err_path, r->err, sizeof r->err);
}

static void kvctl1(struct run *r, const char *args)
{
    kvctl_run(r, eps, args);
}

/* Write n bytes to WORK/name; its path to path. */
static void write_file(const char *name,
                       const void *p,
                       size_t n,
                       char *path,
                       size_t len)
{
    snprintf(path, len, "%s/%s", work, name);
    FILE *f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT(fwrite(p, 1, n, f) == n);
    fclose(f);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        n += *s == '\n';
    }
    return n;
}

static int setup(void)
{
    snprintf(work, sizeof work, "/tmp/raftkv-test-kvctl-XXXXXX");
    if (!mkdtemp(work)) {
        return 1;
    }
    if (h_cluster_start(&kc, 3, NULL) != 0 || h_find_leader(&kc, 10000) < 0) {
        return 1;
    }
    h_endpoints(&kc, eps, sizeof eps);
    return 0;
}

static int teardown(void)
{
    kc.keep = CU_get_number_of_failures() > 0;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", work);
    if (system(cmd) != 0) {
        return 1;
    }
    return h_cluster_destroy(&kc) == 0 ? 0 : 1;
}

/* A value with a NUL, a byte that is not UTF-8 and a newline at the end. */
static const char bin[] = {'a', 0, 'b', (char)0xff, '\n'};

static void test_kvctl_put_takes_the_value_from_a_file_or_stdin(void)
{
    struct run r;
    char path[256], args[512];
    write_file("value", bin, sizeof bin, path, sizeof path);
    snprintf(args, sizeof args, "put bin --file %s", path);
    kvctl1(&r, args);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "OK\n");
    kvctl1(&r, "get bin --print-value-only");
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(r.out_len == sizeof bin && !memcmp(r.out, bin, sizeof bin));
    /* - is standard input, all of it. */
    snprintf(args, sizeof args, "put bin2 - <%s", path);
    kvctl1(&r, args);
    CU_ASSERT_EQUAL(r.status, 0);
    kvctl1(&r, "get bin2 --print-value-only");
    CU_ASSERT(r.out_len == sizeof bin && !memcmp(r.out, bin, sizeof bin));
    /* A file that cannot be read: a local error, nothing written. */
    kvctl1(&r, "put bin3 --file /nonexistent/value");
    CU_ASSERT_EQUAL(r.status, 11);
    CU_ASSERT(strstr(r.err, "IO_ERROR") && strstr(r.err, "/nonexistent/value"));
    kvctl1(&r, "get bin3");
    CU_ASSERT_EQUAL(r.status, 1);
    kvctl1(&r, "put bin3 --file");
    CU_ASSERT_EQUAL(r.status, 2);
    /* In pipe mode standard input holds the commands. */
    write_file("cmds", "put bin4 -\n", 11, path, sizeof path);
    snprintf(args, sizeof args, "<%s", path);
    kvctl1(&r, args);
    CU_ASSERT(!strncmp(r.out, "ERROR USAGE", 11));
    CU_ASSERT_EQUAL(count_lines(r.out), 1);
}

static void test_kvctl_print_value_only_adds_no_newline(void)
{
    struct run r;
    kvctl1(&r, "put raw value");
    CU_ASSERT_EQUAL(r.status, 0);
    kvctl1(&r, "get raw --print-value-only");
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(r.out_len == 5 && !memcmp(r.out, "value", 5));
    /* Plain get still ends its line. */
    kvctl1(&r, "get raw");
    CU_ASSERT_STRING_EQUAL(r.out, "value\n");
}

static void test_kvctl_json_keys_and_values_are_base64(void)
{
    struct run r;
    char path[256], args[512];
    write_file("value", bin, sizeof bin, path, sizeof path);
    snprintf(args, sizeof args, "put b64 --file %s", path);
    kvctl1(&r, args);
    CU_ASSERT_EQUAL(r.status, 0);
    /* base64 of "a\0b\xff\n" */
    kvctl1(&r, "-w json get b64");
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "{\"ok\":true,\"value\":\"YQBi/wo=\"}\n");
    kvctl1(&r, "-w json cas b64 nope x");
    CU_ASSERT_EQUAL(r.status, 4);
    CU_ASSERT(strstr(r.out, "\"current\":\"YQBi/wo=\"") != NULL);
    kvctl1(&r, "-w json get b64 --rev-info");
    CU_ASSERT(strstr(r.out, "\"key\":\"YjY0\"") != NULL);
    CU_ASSERT(strstr(r.out, "\"value\":\"YQBi/wo=\"") != NULL);
}

static void test_kvctl_options_after_the_command_and_double_dash(void)
{
    struct run r;
    kvctl1(&r, "put after v");
    CU_ASSERT_EQUAL(r.status, 0);
    /* kvctl's own options after the command, as etcdctl takes them. */
    bool seen = false;
    for (int t = 0; t < 50 && !seen; t++) { /* a stale read may lag */
        kvctl1(&r, "get after --stale");
        seen = r.status == 0 && !strcmp(r.out, "v\n");
    }
    CU_ASSERT(seen);
    kvctl1(&r, "get --stale after");
    CU_ASSERT_EQUAL(r.status, 0);
    kvctl1(&r, "get after -w json --timeout 3");
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "{\"ok\":true,\"value\":\"dg==\"}\n");
    kvctl1(&r, "put after2 v2 --timeout 3");
    CU_ASSERT_EQUAL(r.status, 0);
    kvctl1(&r, "get after --timeout");
    CU_ASSERT_EQUAL(r.status, 2);
    /* -- ends the options: keys and values that start with dashes. */
    kvctl1(&r, "put -- -k- --v--");
    CU_ASSERT_EQUAL(r.status, 0);
    kvctl1(&r, "get -- -k-");
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "--v--\n");
    kvctl1(&r, "get -- --stale");
    CU_ASSERT_EQUAL(r.status, 1); /* the key --stale, not the option */
    kvctl_run(&r, NULL, "--version");
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(!strncmp(r.out, "kvctl ", 6));
    /* Pipe mode takes kvctl's options on its command line only. */
    char path[256], args[512];
    write_file("cmds", "get after --stale\n", 18, path, sizeof path);
    snprintf(args, sizeof args, "<%s", path);
    kvctl1(&r, args);
    CU_ASSERT(!strncmp(r.out, "ERROR USAGE", 11));
    CU_ASSERT(strstr(r.out, "command line") != NULL);
}

static void test_kvctl_pipe_mode_answers_one_line_per_command(void)
{
    struct run r;
    char path[256], args[512];
    const char *cmds =
        "put p1 1\n"
        "status\n"
        "help\n"
        "help put\n"
        "member list\n"
        "get p --prefix\n"
        "get nothing\n"
        "watch p1\n"
        "lease keep-alive 1\n"
        "get p1\n";
    write_file("cmds", cmds, strlen(cmds), path, sizeof path);
    snprintf(args, sizeof args, "<%s", path);
    kvctl1(&r, args);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_EQUAL(count_lines(r.out), 10);
    CU_ASSERT(strstr(r.out, "\"usage: kvctl") != NULL);
    CU_ASSERT(strstr(r.out, "role=leader") != NULL);
    CU_ASSERT(strstr(r.out, "\n\"1\"\n") != NULL); /* get p1, the last */
    /* No prompt when standard input is not a terminal. */
    CU_ASSERT(strstr(r.err, "kvctl>") == NULL);
    snprintf(args, sizeof args, "-w json <%s", path);
    kvctl1(&r, args);
    CU_ASSERT_EQUAL(count_lines(r.out), 10);
    for (char *line = r.out; *line;) {
        char *nl = strchr(line, '\n');
        CU_ASSERT_FATAL(nl != NULL);
        CU_ASSERT(line[0] == '{' && nl[-1] == '}');
        line = nl + 1;
    }
    CU_ASSERT(strstr(r.out, "{\"ok\":true,\"help\":\"usage: kvctl") != NULL);
    /* The table of status, on one line too. */
    write_file("cmds", "status\n", 7, path, sizeof path);
    snprintf(args, sizeof args, "-w table <%s", path);
    kvctl1(&r, args);
    CU_ASSERT_EQUAL(count_lines(r.out), 1);
    CU_ASSERT(strstr(r.out, "ROLE") != NULL && strstr(r.out, " | ") != NULL);
}

/* Read from fd until needle shows up or ms pass; true if it did. */
static bool read_until(int fd,
                       const char *needle,
                       char *buf,
                       size_t cap,
                       unsigned ms)
{
    size_t n = strlen(buf);
    uint64_t end = h_now_ms() + ms;
    while (!strstr(buf, needle) && h_now_ms() < end && n + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) {
            continue;
        }
        ssize_t got = read(fd, buf + n, cap - n - 1);
        if (got <= 0) {
            break;
        }
        n += (size_t)got;
        buf[n] = 0;
    }
    return strstr(buf, needle) != NULL;
}

static void test_kvctl_pipe_mode_prompts_on_a_terminal(void)
{
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        execl(KVCTL_BIN, "kvctl", "--cluster", eps, (char *)NULL);
        _exit(127);
    }
    char buf[8192] = "";
    CU_ASSERT(read_until(master, "kvctl> ", buf, sizeof buf, 10000));
    CU_ASSERT(write(master, "put tty 1\n", 10) == 10);
    /* The answer, then the next prompt (the terminal turns \n into \r\n). */
    CU_ASSERT(read_until(master, "OK\r\nkvctl> ", buf, sizeof buf, 10000));
    CU_ASSERT(write(master, "\x04", 1) == 1); /* end of input */
    int st = -1;
    for (int t = 0; t < 100 && waitpid(pid, &st, WNOHANG) == 0; t++) {
        h_sleep_ms(100);
        read_until(master, "\x01", buf, sizeof buf, 0);
    }
    if (!WIFEXITED(st)) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        CU_FAIL("kvctl did not end at the end of its input");
    }
    close(master);
}

/* A port nothing listens on (bound, then closed). */
static unsigned closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    CU_ASSERT_FATAL(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Every server refuses the connection: get and put fail at once (not
 * after --timeout), with the same error and exit code, saying so. */
static void test_kvctl_every_server_refusing_fails_at_once(void)
{
    char none[128];
    snprintf(none, sizeof none, "127.0.0.1:%u,127.0.0.2:%u,127.0.0.3:%u",
             closed_port(), closed_port(), closed_port());
    struct run g, p;
    kvctl_run(&g, none, "--timeout 20 get k");
    kvctl_run(&p, none, "--timeout 20 put k v");
    printf("\n  get: exit %d in %.2f s: %s", g.status, g.seconds, g.err);
    CU_ASSERT_EQUAL(g.status, p.status);
    CU_ASSERT_NOT_EQUAL(g.status, 0);
    CU_ASSERT(g.seconds < 5 && p.seconds < 5);
    CU_ASSERT(strstr(g.err, "UNAVAILABLE: no server accepted a connection") !=
              NULL);
    CU_ASSERT(strstr(p.err, "UNAVAILABLE: no server accepted a connection") !=
              NULL);
}

/* The same for the calls that do not go through the op machine: admin,
 * membership, auth, leader transfer, snapshot and watch. Each failed only
 * after the whole --timeout before. */
static void test_kvctl_admin_and_watch_fail_at_once_when_every_server_refuses(
    void)
{
    char none[128], snap[300];
    snprintf(none, sizeof none, "127.0.0.1:%u,127.0.0.2:%u,127.0.0.3:%u",
             closed_port(), closed_port(), closed_port());
    snprintf(snap, sizeof snap, "--timeout 20 snapshot save %s/r.snap", work);
    const char *cmds[] = {
        snap,
        "--timeout 20 watch k",
        "--timeout 20 member list",
        "--timeout 20 transfer-leader 2",
        "--timeout 20 auth status",
        "--timeout 20 user list",
        "--timeout 20 role list",
        "--timeout 20 role get r",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        struct run r;
        kvctl_run(&r, none, cmds[i]);
        printf("\n  %s: exit %d in %.2f s: %s", cmds[i], r.status, r.seconds,
               r.err);
        CU_ASSERT_EQUAL(r.status, 3);
        CU_ASSERT(r.seconds < 5);
        CU_ASSERT(strstr(r.err,
                         "UNAVAILABLE: no server accepted a connection "
                         "(all 3 refused") != NULL);
    }
}

/* Two of three nodes gone: kvctl says the quorum is lost, not only that
 * one node refused; get and put with the same error code (no leader
 * served either: UNAVAILABLE; a get said TIMEOUT). */
static void test_kvctl_says_when_the_quorum_is_lost(void)
{
    struct h_cluster q;
    CU_ASSERT_FATAL(h_cluster_start(&q, 3, NULL) == 0);
    int leader = h_find_leader(&q, 10000);
    CU_ASSERT_FATAL(leader >= 0);
    char qeps[512];
    h_endpoints(&q, qeps, sizeof qeps);
    /* The leader and one follower: the third is left alone. */
    h_node_kill(&q, (size_t)leader);
    h_node_kill(&q, (size_t)(leader + 1) % 3);
    struct run r, g;
    kvctl_run(&r, qeps, "--timeout 3 put k v");
    printf("\n  put: exit %d: %s", r.status, r.err);
    CU_ASSERT_EQUAL(r.status, 3);
    CU_ASSERT(strstr(r.err, "UNAVAILABLE: ") != NULL);
    CU_ASSERT(strstr(r.err, "quorum lost: 1 of 3 servers answer") != NULL);
    kvctl_run(&g, qeps, "--timeout 3 get k");
    printf("\n  get: exit %d: %s", g.status, g.err);
    CU_ASSERT_EQUAL(g.status, 3);
    CU_ASSERT(strstr(g.err, "UNAVAILABLE: ") != NULL);
    CU_ASSERT(strstr(g.err, "quorum lost: 1 of 3 servers answer") != NULL);
    CU_ASSERT(h_cluster_destroy(&q) == 0);
}

/* A list that mixes two clusters: status marks the node of the other one
 * (the first node that answers names the cluster) instead of showing it
 * as a member, in every format. */
static void test_kvctl_status_marks_a_node_of_another_cluster(void)
{
    struct h_cluster other;
    CU_ASSERT_FATAL(h_cluster_start(&other, 1, NULL) == 0);
    CU_ASSERT_FATAL(h_find_leader(&other, 10000) >= 0);
    char oaddr[128], mixed[700], want[300];
    h_endpoints(&other, oaddr, sizeof oaddr);
    snprintf(mixed, sizeof mixed, "%s,%s", eps, oaddr);
    struct run r;
    kvctl_run(&r, mixed, "-w json status");
    printf("\n  json: %s", r.out);
    CU_ASSERT_EQUAL(r.status, 0);
    snprintf(want, sizeof want,
             "\"address\":\"%s\",\"reachable\":false,\"other_cluster\":true,"
             "\"error\":\"answers for another cluster: this node is of "
             "cluster ",
             oaddr);
    CU_ASSERT(strstr(r.out, want) != NULL);
    const char *oc = strstr(r.out, "other_cluster"); /* that node alone */
    CU_ASSERT(oc != NULL && strstr(oc + 1, "other_cluster") == NULL);
    kvctl_run(&r, mixed, "-w table status");
    printf("\n  table:\n%s", r.out);
    CU_ASSERT_EQUAL(r.status, 0);
    const char *row = strstr(r.out, oaddr);
    CU_ASSERT_FATAL(row != NULL);
    CU_ASSERT(strncmp(row + 23, "not a member: answers for another cluster",
                      41) == 0);
    /* One leader: this cluster's. */
    const char *l = strstr(r.out, " leader ");
    CU_ASSERT(l != NULL && strstr(l + 1, " leader ") == NULL);
    kvctl_run(&r, mixed, "status");
    CU_ASSERT(strstr(r.out, "reachable=false other_cluster=true error=") !=
              NULL);
    CU_ASSERT(h_cluster_destroy(&other) == 0);
}

static void test_kvctl_snapshot_save_local_errors_and_stdout(void)
{
    struct run r;
    char args[512], path[256];
    /* Found before the cluster is asked: a cluster that cannot answer
     * would take the whole --timeout and exit 3. */
    kvctl_run(&r, "127.0.0.1:1",
              "--timeout 5 snapshot save /nonexistent/dir/s.snap");
    CU_ASSERT_EQUAL(r.status, 11);
    CU_ASSERT(r.seconds < 3);
    CU_ASSERT(strstr(r.err, "IO_ERROR") && strstr(r.err, "/nonexistent/dir"));
    kvctl1(&r, "-w json snapshot save /nonexistent/dir/s.snap");
    CU_ASSERT_EQUAL(r.status, 11);
    CU_ASSERT(!strncmp(r.out, "{\"ok\":false,\"error\":\"IO_ERROR\"", 30));
    /* To a file, and to standard output (the answer on stderr). */
    snprintf(path, sizeof path, "%s/s.snap", work);
    snprintf(args, sizeof args, "snapshot save %s", path);
    kvctl1(&r, args);
    CU_ASSERT_EQUAL(r.status, 0);
    struct stat st1, st2;
    CU_ASSERT_FATAL(stat(path, &st1) == 0);
    kvctl1(&r, "snapshot save -");
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(!strncmp(r.err, "OK saved -", 10));
    snprintf(path, sizeof path, "%s/stdout", work);
    CU_ASSERT_FATAL(stat(path, &st2) == 0);
    CU_ASSERT(st2.st_size > 0 && st2.st_size >= st1.st_size / 2);
    /* Documented: kvctl --help lists exit code 11. */
    kvctl_run(&r, NULL, "--help");
    CU_ASSERT(strstr(r.out, "11 a local file could not be read") != NULL);
}

/* snapshot save writes FILE.tmp and renames it over FILE: a FILE that is
 * not a regular file is refused before the cluster is asked, and left as
 * it was (a FIFO or a device was replaced by a regular file; a directory
 * failed only after the whole transfer). */
static void test_kvctl_snapshot_save_refuses_what_is_not_a_file(void)
{
    struct run r;
    char args[512], path[256];
    /* A directory: exit 11 at once, even when no server answers. */
    snprintf(args, sizeof args, "--timeout 5 snapshot save %s", work);
    kvctl_run(&r, "127.0.0.1:1", args);
    CU_ASSERT_EQUAL(r.status, 11);
    CU_ASSERT(r.seconds < 3);
    CU_ASSERT(strstr(r.err, "IO_ERROR") && strstr(r.err, "a directory"));
    snprintf(path, sizeof path, "%s.tmp", work);
    CU_ASSERT(access(path, F_OK) != 0);
    /* A FIFO, on a cluster that answers: refused, still a FIFO. */
    snprintf(path, sizeof path, "%s/fifo", work);
    CU_ASSERT_FATAL(mkfifo(path, 0600) == 0);
    snprintf(args, sizeof args, "snapshot save %s", path);
    kvctl1(&r, args);
    CU_ASSERT_EQUAL(r.status, 11);
    CU_ASSERT(strstr(r.err, "not a regular file") != NULL);
    struct stat st;
    CU_ASSERT(stat(path, &st) == 0 && S_ISFIFO(st.st_mode));
    unlink(path);
    /* A regular file is still replaced. */
    write_file("old.snap", "old", 3, path, sizeof path);
    snprintf(args, sizeof args, "snapshot save %s", path);
    kvctl1(&r, args);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 3);
    unlink(path);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static CU_TestInfo tests[] = {
        {"test_kvctl_put_takes_the_value_from_a_file_or_stdin",
         test_kvctl_put_takes_the_value_from_a_file_or_stdin},
        {"test_kvctl_print_value_only_adds_no_newline",
         test_kvctl_print_value_only_adds_no_newline},
        {"test_kvctl_json_keys_and_values_are_base64",
         test_kvctl_json_keys_and_values_are_base64},
        {"test_kvctl_options_after_the_command_and_double_dash",
         test_kvctl_options_after_the_command_and_double_dash},
        {"test_kvctl_pipe_mode_answers_one_line_per_command",
         test_kvctl_pipe_mode_answers_one_line_per_command},
        {"test_kvctl_pipe_mode_prompts_on_a_terminal",
         test_kvctl_pipe_mode_prompts_on_a_terminal},
        {"test_kvctl_snapshot_save_local_errors_and_stdout",
         test_kvctl_snapshot_save_local_errors_and_stdout},
        {"test_kvctl_every_server_refusing_fails_at_once",
         test_kvctl_every_server_refusing_fails_at_once},
        {"test_kvctl_admin_and_watch_fail_at_once_when_every_server_refuses",
         test_kvctl_admin_and_watch_fail_at_once_when_every_server_refuses},
        {"test_kvctl_says_when_the_quorum_is_lost",
         test_kvctl_says_when_the_quorum_is_lost},
        {"test_kvctl_status_marks_a_node_of_another_cluster",
         test_kvctl_status_marks_a_node_of_another_cluster},
        {"test_kvctl_snapshot_save_refuses_what_is_not_a_file",
         test_kvctl_snapshot_save_refuses_what_is_not_a_file},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"kvctl", setup, teardown, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
