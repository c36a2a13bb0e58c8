/* df_child.c: runs a scripted list of file and LMDB operations for the shim's
 * tests.
 *
 * Usage: df_child DIR CMD...   (file names are relative to DIR)
 * Each command prints one line "INDEX RESULT" on stdout, RESULT being the
 * call's return value or -ENAME:
 *   open:F:FLAGS[:NAME] open F (called NAME in later commands, default F);
 *                       FLAGS letters: c O_CREAT, x O_EXCL, t O_TRUNC,
 *                       a O_APPEND, d O_DSYNC, w O_WRONLY (else O_RDWR),
 *                       - none
 *   pwrite:F:OFF:LEN:C  LEN bytes of character C at OFF
 *   write:F:LEN:C       LEN bytes of C at the file position
 *   writev:F:OFF:LEN:C  lseek to OFF, then writev in two pieces
 *   fsync:F  fdatasync:F  close:F  ftruncate:F:LEN
 *   unlink:F  rename:A:B  mkdir:D  dirsync:D (open D, fsync it, close)
 *   wait                print "INDEX ready", read a line from stdin
 *   mdb-open:FLAGS      open an LMDB environment in DIR; FLAGS: sync,
 *                       nosync or nometasync
 *   mdb-flags:FLAGS     switch to sync, nosync or nometasync
 *   mdb-txns:FIRST:N:PER  N transactions of PER keys each, from key FIRST
 *   mdb-sync  mdb-close
 *   sigwrites:F:N       N times a 4 KiB pwrite and an fdatasync of F while
 *                       a SIGALRM every 200 us runs a handler that write()s
 *                       a byte to /dev/null; prints how many alarms came
 * Keys are "k%08u", values 200 bytes derived from the key.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <lmdb.h>

#define MAX_FILES 16

static struct
{
    char name[256]; /* as given */
    int fd;         /* open fd */
} files[MAX_FILES];

static MDB_env *env;
static MDB_dbi dbi;

static int devnull = -1;             /* sigwrites: the handler's target */
static volatile sig_atomic_t alarms; /* sigwrites: handler runs */

/* As libevent's signal handler does with its pipe: a write() in a signal
 * handler, which may interrupt the program inside the shim. */
static void on_alarm(int sig)
{
    (void)sig;
    int err = errno;
    char c = 0;
    if (write(devnull, &c, 1) == 1) {
        alarms++;
    }
    errno = err;
}

static long long sigwrites(int fd, int n)
{
    devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval on = {{0, 200}, {0, 200}}, off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &on, NULL);
    static char page[4096];
    long long rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (pwrite(fd, page, sizeof page, (off_t)i * 4096) != sizeof page ||
            fdatasync(fd) != 0) {
            rc = -1;
        }
    }
    int err = errno;
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_DFL);
    close(devnull);
    errno = err;
    return rc ? rc : alarms;
}

static int fd_of(const char *name)
{
    for (int i = 0; i < MAX_FILES; i++) {
        if (files[i].fd > 0 && !strcmp(files[i].name, name)) {
            return files[i].fd;
        }
    }
    return -1;
}

static void remember(const char *name, int fd)
{
    for (int i = 0; i < MAX_FILES; i++) {
        if (files[i].fd <= 0) {
            snprintf(files[i].name, sizeof files[i].name, "%s", name);
            files[i].fd = fd;
            return;
        }
    }
}

static void forget(int fd)
{
    for (int i = 0; i < MAX_FILES; i++) {
        if (files[i].fd == fd) {
            files[i].fd = 0;
        }
    }
}

static void print_result(int index, long long rc, int err)
{
    if (rc >= 0) {
        printf("%d %lld\n", index, rc);
    } else {
        const char *name = strerrorname_np(err);
        printf("%d -%s\n", index, name ? name : "E?");
    }
    fflush(stdout);
}

static unsigned mdb_flags_of(const char *s)
{
    if (!strcmp(s, "nosync")) {
        return MDB_NOSYNC;
    }
    if (!strcmp(s, "nometasync")) {
        return MDB_NOMETASYNC;
    }
    return 0;
}

/* Value of key @k: 200 bytes that say which key they belong to. */
static void value_of(unsigned k, char *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        out[i] = (char)('a' + (k + i) % 26);
    }
}

/* An LMDB call's result: 0, or -1 with errno set to its code. */
static long long mdb_result(int rc)
{
    if (rc == 0) {
        return 0;
    }
    errno = rc > 0 ? rc : EIO;
    fprintf(stderr, "df_child: %s\n", mdb_strerror(rc));
    return -1;
}

static long long run_mdb(char **a, int n, const char *dir)
{
    if (!strcmp(a[0], "mdb-open") && n == 2) {
        int rc = mdb_env_create(&env);
        if (!rc) {
            mdb_env_set_mapsize(env, 64u << 20);
            rc = mdb_env_open(env, dir, mdb_flags_of(a[1]), 0600);
        }
        MDB_txn *txn = NULL;
        if (!rc) {
            rc = mdb_txn_begin(env, NULL, 0, &txn);
        }
        if (!rc) {
            rc = mdb_dbi_open(txn, NULL, 0, &dbi);
        }
        if (!rc) {
            rc = mdb_txn_commit(txn);
        } else if (txn) {
            mdb_txn_abort(txn);
        }
        return mdb_result(rc);
    }
    if (!strcmp(a[0], "mdb-flags") && n == 2) {
        int rc = mdb_env_set_flags(env, MDB_NOSYNC | MDB_NOMETASYNC, 0);
        unsigned f = mdb_flags_of(a[1]);
        if (!rc && f) {
            rc = mdb_env_set_flags(env, f, 1);
        }
        return mdb_result(rc);
    }
    if (!strcmp(a[0], "mdb-txns") && n == 4) {
        unsigned first = (unsigned)atoi(a[1]), k = first;
        int txns = atoi(a[2]), per = atoi(a[3]);
        for (int t = 0; t < txns; t++) {
            MDB_txn *txn;
            int rc = mdb_txn_begin(env, NULL, 0, &txn);
            for (int i = 0; !rc && i < per; i++, k++) {
                char key[16], val[200];
                snprintf(key, sizeof key, "k%08u", k);
                value_of(k, val, sizeof val);
                MDB_val mk = {strlen(key), key}, mv = {sizeof val, val};
                rc = mdb_put(txn, dbi, &mk, &mv, 0);
            }
            rc = rc ? (mdb_txn_abort(txn), rc) : mdb_txn_commit(txn);
            if (rc) {
                return mdb_result(rc);
            }
        }
        return k - first;
    }
    if (!strcmp(a[0], "mdb-sync") && n == 1) {
        return mdb_result(mdb_env_sync(env, 1));
    }
    if (!strcmp(a[0], "mdb-close") && n == 1) {
        mdb_env_close(env);
        env = NULL;
        return 0;
    }
    errno = EINVAL;
    return -2;
}

static int open_flags(const char *s)
{
    int fl = strchr(s, 'w') ? O_WRONLY : O_RDWR;
    fl |= strchr(s, 'c') ? O_CREAT : 0;
    fl |= strchr(s, 'x') ? O_EXCL : 0;
    fl |= strchr(s, 't') ? O_TRUNC : 0;
    fl |= strchr(s, 'a') ? O_APPEND : 0;
    fl |= strchr(s, 'd') ? O_DSYNC : 0;
    return fl;
}

static char *filled(size_t len, const char *c)
{
    char *buf = malloc(len ? len : 1);
    if (buf) {
        memset(buf, c[0], len);
    }
    return buf;
}

/* Run one command; -2 for a malformed one. */
static long long run(char **a, int n, const char *dir)
{
    const char *op = a[0];
    if (!strncmp(op, "mdb-", 4)) {
        return run_mdb(a, n, dir);
    }
    if (!strcmp(op, "open") && (n == 3 || n == 4)) {
        int fd = open(a[1], open_flags(a[2]) | O_CLOEXEC, 0644);
        if (fd >= 0) {
            remember(n == 4 ? a[3] : a[1], fd);
        }
        return fd;
    }
    if ((!strcmp(op, "pwrite") || !strcmp(op, "writev")) && n == 5) {
        size_t len = strtoul(a[3], NULL, 10);
        off_t off = strtoll(a[2], NULL, 10);
        char *buf = filled(len, a[4]);
        int fd = fd_of(a[1]);
        long long rc;
        if (!strcmp(op, "pwrite")) {
            rc = pwrite(fd, buf, len, off);
        } else {
            struct iovec v[2] = {{buf, len / 2},
                                 {buf + len / 2, len - len / 2}};
            rc = lseek(fd, off, SEEK_SET) < 0 ? -1 : writev(fd, v, 2);
        }
        int err = errno;
        free(buf);
        errno = err;
        return rc;
    }
    if (!strcmp(op, "write") && n == 4) {
        size_t len = strtoul(a[2], NULL, 10);
        char *buf = filled(len, a[3]);
        long long rc = write(fd_of(a[1]), buf, len);
        int err = errno;
        free(buf);
        errno = err;
        return rc;
    }
    if (!strcmp(op, "fsync") && n == 2) {
        return fsync(fd_of(a[1]));
    }
    if (!strcmp(op, "fdatasync") && n == 2) {
        return fdatasync(fd_of(a[1]));
    }
    if (!strcmp(op, "ftruncate") && n == 3) {
        return ftruncate(fd_of(a[1]), strtoll(a[2], NULL, 10));
    }
    if (!strcmp(op, "close") && n == 2) {
        int fd = fd_of(a[1]);
        forget(fd);
        return close(fd);
    }
    if (!strcmp(op, "unlink") && n == 2) {
        return unlink(a[1]);
    }
    if (!strcmp(op, "rename") && n == 3) {
        return rename(a[1], a[2]);
    }
    if (!strcmp(op, "mkdir") && n == 2) {
        return mkdir(a[1], 0755);
    }
    if (!strcmp(op, "sigwrites") && n == 3) {
        return sigwrites(fd_of(a[1]), atoi(a[2]));
    }
    if (!strcmp(op, "dirsync") && n == 2) {
        int fd = open(a[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            return -1;
        }
        int rc = fsync(fd);
        int err = errno;
        close(fd);
        errno = err;
        return rc;
    }
    errno = EINVAL;
    return -2;
}

int main(int argc, char **argv)
{
    if (argc < 2 || chdir(argv[1]) != 0) {
        fprintf(stderr, "usage: df_child DIR CMD...\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        int index = i - 2;
        if (!strcmp(argv[i], "wait")) {
            printf("%d ready\n", index);
            fflush(stdout);
            char line[64];
            if (!fgets(line, sizeof line, stdin)) {
                return 0;
            }
            continue;
        }
        char cmd[1024], *a[8];
        int n = 0;
        snprintf(cmd, sizeof cmd, "%s", argv[i]);
        for (char *save = NULL, *t = strtok_r(cmd, ":", &save); t && n < 8;
             t = strtok_r(NULL, ":", &save)) {
            a[n++] = t;
        }
        errno = 0;
        long long rc = n ? run(a, n, ".") : -2;
        if (rc == -2) {
            fprintf(stderr, "df_child: bad command %s\n", argv[i]);
            return 2;
        }
        print_result(index, rc, errno);
    }
    return 0;
}
