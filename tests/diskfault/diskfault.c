/* diskfault.c: an LD_PRELOAD shim that fails, fills and power-cuts a data dir.
 *
 * In the spirit of etcd's failpoints and lazyfs: a process started with
 * LD_PRELOAD=libdiskfault.so sees its file system calls on the files under
 * RAFTKV_DISKFAULT_DIR go through this shim, which can fail them, refuse
 * growth as a full disk would, and simulate a power loss: every byte not yet
 * made durable by a successful fsync/fdatasync (or an O_DSYNC write), and
 * every create, unlink and rename not yet made durable by an fsync of its
 * directory, is undone on disk, then the process gets SIGKILL.
 *
 * Environment, read once at load:
 *   RAFTKV_DISKFAULT_DIR=DIR     watch the files under DIR (nothing happens
 *                                without it: every call passes through)
 *   RAFTKV_DISKFAULT_RULES=FILE  rules, read at start and again after SIGUSR1
 *   RAFTKV_DISKFAULT_TRACE=FILE  one line per operation on a watched file:
 *                                SEQ OP RELPATH OFFSET LEN RESULT
 * SIGUSR1 reloads the rules, SIGUSR2 is a power loss now.
 *
 * Rules file, one rule per line, '#' starts a comment:
 *   fail PATH OP ERRNO [after N] [times M|always]
 *       the (N+1)-th and following matching calls, M of them (default 1),
 *       return -1 with errno ERRNO (EIO, ENOSPC, EDQUOT, EROFS, ... or a
 *       number) and do nothing
 *   crash PATH OP [after N] [torn] [keep=none|random] [seed=S]
 *       power loss at the (N+1)-th matching call, before it does anything;
 *       with torn, a write first puts a random non-empty proper subset of
 *       its 512-byte sectors on disk (durably)
 *   full            writes, ftruncates and fallocates that would grow a
 *                   watched file fail with ENOSPC; overwrites succeed
 *   full off        (the default) the disk has room
 *   signal [keep=none|random] [seed=S]   how SIGUSR2 cuts the power
 * PATH is a substring of the path relative to DIR (a rename matches
 * "old->new") or '*'. OP is one of write (also matches dsync-write),
 * dsync-write, fsync, fdatasync, sync (fsync or fdatasync), dirsync,
 * ftruncate, fallocate, sync-range, create, unlink, rename, any. Counters
 * start when the rules are (re)loaded; every matching rule counts a call,
 * the first one that fires decides.
 *
 * Durability model (lazyfs-like, 4 KiB pages): per file (by st_dev and
 * st_ino, so that two fds on one file share it) a durable size and, for each
 * page below it modified since it was last durable, its durable content. A
 * failed sync marks the file's dirty pages "lost" (fsyncgate: the kernel
 * dropped them): a later sync does not save them unless they are written
 * again. keep=random lets each non-durable page survive a power loss or not,
 * independently. See README.md for what is not modelled.
 */
#undef _FORTIFY_SOURCE
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(off_t) == 8, "the *64 wrappers share the 64-bit code");

#define DF_PAGE   4096u
#define DF_SECTOR 512u
#define DF_NONE   SIZE_MAX

enum df_op {
    OP_WRITE,
    OP_DSYNC_WRITE,
    OP_FSYNC,
    OP_FDATASYNC,
    OP_DIRSYNC,
    OP_FTRUNCATE,
    OP_FALLOCATE,
    OP_SYNC_RANGE,
    OP_CREATE,
    OP_UNLINK,
    OP_RENAME,
    OP_COUNT
};

static const char *const op_names[OP_COUNT] = {
    "write",     "dsync-write", "fsync",  "fdatasync", "dirsync", "ftruncate",
    "fallocate", "sync-range",  "create", "unlink",    "rename",
};

/* The saved durable content of one page of a watched file. */
struct df_page
{
    uint64_t no;         /* page number (offset / DF_PAGE) */
    bool lost;           /* a failed sync dropped it; only a write revives it */
    unsigned char *data; /* DF_PAGE bytes; zeros at and beyond durable_size */
};

/* A watched file or directory, by (st_dev, st_ino). */
struct df_file
{
    dev_t dev;             /* st_dev */
    ino_t ino;             /* st_ino */
    bool dir;              /* a directory: only fsync (dirsync) matters */
    bool gone;             /* durably unlinked, or moved out of DIR */
    char *path;            /* current absolute path */
    uint64_t durable_size; /* size a power loss leaves */
    struct df_page *pages; /* saved pages, sorted by no */
    size_t n_pages;        /* pages in use */
    size_t cap_pages;      /* pages allocated */
};

enum df_meta_kind { META_CREATE, META_UNLINK, META_RENAME };

/* A create, unlink or rename not yet made durable by a directory fsync. */
struct df_meta
{
    enum df_meta_kind kind; /* what to undo */
    char *path;             /* created file, unlinked name, or rename source */
    char *path2;            /* unlink: hidden name; rename: target */
    char *hidden;           /* rename: hidden link to the replaced file */
    dev_t dir_dev[2];       /* directories whose fsync makes it durable */
    ino_t dir_ino[2];       /* (both the same unless a rename across) */
    size_t file;            /* the file (index in files), or DF_NONE */
    size_t replaced;        /* rename: the replaced file, or DF_NONE */
};

enum df_rule_kind { RULE_FAIL, RULE_CRASH };

/* One line of the rules file. */
struct df_rule
{
    enum df_rule_kind kind; /* fail or crash */
    char path[256];         /* substring of the relative path, or "*" */
    unsigned ops;           /* mask of 1 << enum df_op */
    int err;                /* fail: the errno */
    uint64_t after;         /* calls that pass first */
    uint64_t times;         /* fail: calls that fail then */
    bool always;            /* fail: every call after `after` */
    bool torn;              /* crash: tear the write */
    bool keep_random;       /* crash: pages survive at random */
    bool seeded;            /* seed was given */
    uint64_t seed;          /* crash: for torn and keep=random */
    uint64_t count;         /* matching calls since the load */
};

/* A decision taken for one call. */
struct df_action
{
    int kind;             /* 0: go on; 1: fail; 2: crash */
    struct df_rule *rule; /* the rule that fired */
};

/* The real functions, found with dlsym(RTLD_NEXT). */
static struct
{
    int (*openat)(int, const char *, int, ...);
    int (*close)(int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*pwrite)(int, const void *, size_t, off_t);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*pwritev)(int, const struct iovec *, int, off_t);
    int (*fsync)(int);
    int (*fdatasync)(int);
    int (*sync_file_range)(int, off_t, off_t, unsigned int);
    int (*ftruncate)(int, off_t);
    int (*fallocate)(int, int, off_t, off_t);
    int (*unlinkat)(int, const char *, int);
    int (*renameat)(int, const char *, int, const char *);
} real;

static struct
{
    bool active;               /* RAFTKV_DISKFAULT_DIR was set */
    char dir[PATH_MAX];        /* the watched directory, canonical */
    size_t dir_len;            /* strlen(dir) */
    bool dir_canonical;        /* realpath() succeeded on it */
    char rules_path[PATH_MAX]; /* RAFTKV_DISKFAULT_RULES, or "" */
    int trace_fd;              /* O_APPEND, or -1 */
    uint64_t seq;              /* trace lines written */
    struct df_file *files;     /* every watched file seen */
    size_t n_files;            /* files in use */
    size_t cap_files;          /* files allocated */
    size_t *fd_file;           /* fd -> file index + 1, 0 when not watched */
    size_t n_fds;              /* fd_file entries */
    struct df_meta *meta;      /* pending metadata operations, oldest first */
    size_t n_meta;             /* meta in use */
    size_t cap_meta;           /* meta allocated */
    struct df_rule *rules;     /* the loaded rules */
    size_t n_rules;            /* rules in use */
    bool full;                 /* the disk is full */
    bool sig_keep_random;      /* SIGUSR2: keep=random */
    bool sig_seeded;           /* SIGUSR2: seed given */
    uint64_t sig_seed;         /* SIGUSR2: the seed */
    uint64_t hidden_no;        /* names of hidden unlinked files */
} df = {.trace_fd = -1};

static atomic_int busy;                      /* the shim's state is in use */
static __thread bool inside;                 /* this thread holds it */
static volatile sig_atomic_t reload_pending; /* SIGUSR1 came */
static volatile sig_atomic_t crash_pending;  /* SIGUSR2 came while busy */
static unsigned char zero_page[DF_PAGE];

/* --- Async-signal-safe formatting ----------------------------------- */

/* A line being built without stdio (also used in the signal handler). */
struct df_line
{
    char b[2 * PATH_MAX + 160]; /* the text */
    size_t n;                   /* its length */
};

static void put_char(struct df_line *l, char c)
{
    if (l->n < sizeof l->b - 1) {
        l->b[l->n++] = c;
    }
}

static void put_str(struct df_line *l, const char *s)
{
    for (; *s; s++) {
        put_char(l, *s);
    }
}

/* Append a trace field: whitespace becomes '?' (the trace splits on it). */
static void put_field(struct df_line *l, const char *s)
{
    for (; *s; s++) {
        put_char(l, (*s == ' ' || *s == '\n' || *s == '\t') ? '?' : *s);
    }
}

static void put_u64(struct df_line *l, uint64_t v)
{
    char t[24];
    int i = 0;
    do {
        t[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (i) {
        put_char(l, t[--i]);
    }
}

static const struct
{
    int err;
    const char *name;
} errnames[] = {
    {EIO, "EIO"},         {ENOSPC, "ENOSPC"}, {EDQUOT, "EDQUOT"},
    {EROFS, "EROFS"},     {EFBIG, "EFBIG"},   {EINTR, "EINTR"},
    {EAGAIN, "EAGAIN"},   {ENOMEM, "ENOMEM"}, {EACCES, "EACCES"},
    {EPERM, "EPERM"},     {EEXIST, "EEXIST"}, {ENOENT, "ENOENT"},
    {EBADF, "EBADF"},     {EINVAL, "EINVAL"}, {EISDIR, "EISDIR"},
    {ENOTDIR, "ENOTDIR"},
};

static const char *errno_name(int err)
{
    for (size_t i = 0; i < sizeof errnames / sizeof errnames[0]; i++) {
        if (errnames[i].err == err) {
            return errnames[i].name;
        }
    }
    return NULL;
}

/* Append a call's result: a count, or "-ENAME". */
static void put_result(struct df_line *l, long long ret, int err)
{
    if (ret >= 0) {
        put_u64(l, (uint64_t)ret);
        return;
    }
    const char *name = errno_name(err);
    put_char(l, '-');
    if (name) {
        put_str(l, name);
    } else {
        put_char(l, 'E');
        put_u64(l, (uint64_t)err);
    }
}

static void say(const struct df_line *l)
{
    if (real.write) {
        ssize_t k = real.write(2, l->b, l->n);
        (void)k;
    }
}

/* --- Real functions ------------------------------------------------- */

static void *next_symbol(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        static const char msg[] = "diskfault: dlsym failed\n";
        syscall(SYS_write, 2, msg, sizeof msg - 1); /* not our write */
        abort();
    }
    return p;
}

static void resolve_real(void)
{
    if (real.renameat) {
        return;
    }
    real.openat = next_symbol("openat");
    real.close = next_symbol("close");
    real.dup = next_symbol("dup");
    real.dup2 = next_symbol("dup2");
    real.dup3 = next_symbol("dup3");
    real.write = next_symbol("write");
    real.pwrite = next_symbol("pwrite");
    real.writev = next_symbol("writev");
    real.pwritev = next_symbol("pwritev");
    real.fsync = next_symbol("fsync");
    real.fdatasync = next_symbol("fdatasync");
    real.sync_file_range = next_symbol("sync_file_range");
    real.ftruncate = next_symbol("ftruncate");
    real.fallocate = next_symbol("fallocate");
    real.unlinkat = next_symbol("unlinkat");
    real.renameat = next_symbol("renameat");
}

/* --- Locking and signals -------------------------------------------- */

static void power_loss(bool keep_random,
                       bool seeded,
                       uint64_t seed,
                       const char *op,
                       const char *rel,
                       uint64_t off,
                       uint64_t len,
                       const char *result);
static void load_rules(void);

/* Does a call go straight to libc? When the shim is off, and when this
 * thread is inside the shim already: a signal handler of the program that
 * interrupted a wrapper and calls one (libevent's writes a byte to its
 * signal pipe) would otherwise wait for the state forever. Such a call is
 * not traced, and a file it writes or closes is not tracked. */
static bool passthrough(void)
{
    return !df.active || inside;
}

/* Take the shim's state (a spin lock: the signal handler only tries it).
 * This thread counts as inside before it holds the state and until after
 * it let it go: a signal handler's call in between must go to libc, not
 * wait for a state its own thread holds. */
static void enter(void)
{
    inside = true;
    int expected = 0;
    while (!atomic_compare_exchange_weak(&busy, &expected, 1)) {
        expected = 0;
        sched_yield();
    }
    if (reload_pending) {
        reload_pending = 0;
        load_rules();
    }
}

static void crash_by_signal(void)
{
    power_loss(df.sig_keep_random, df.sig_seeded, df.sig_seed, "power-loss",
               "-", 0, 0, "crash");
}

/* Release the state; a SIGUSR2 that came meanwhile cuts the power now. */
static void leave(void)
{
    atomic_store(&busy, 0);
    inside = false;
    if (crash_pending) {
        int expected = 0;
        if (atomic_compare_exchange_strong(&busy, &expected, 1)) {
            crash_by_signal();
        }
    }
}

static void on_reload_signal(int sig)
{
    (void)sig;
    reload_pending = 1;
}

static void on_power_signal(int sig)
{
    (void)sig;
    int expected = 0;
    if (atomic_compare_exchange_strong(&busy, &expected, 1)) {
        crash_by_signal();
    }
    crash_pending = 1; /* inside a wrapper: it crashes when it leaves */
}

/* --- Paths ---------------------------------------------------------- */

/* Make the watched directory canonical once it exists. */
static void canonicalize_dir(void)
{
    char buf[PATH_MAX];
    if (!df.dir_canonical && realpath(df.dir, buf)) {
        snprintf(df.dir, sizeof df.dir, "%s", buf);
        df.dir_len = strlen(df.dir);
        df.dir_canonical = true;
    }
}

/* The absolute path of @path relative to @dirfd, its parent directory
 * resolved (the file itself need not exist). */
static int resolve_path(int dirfd, const char *path, char *out)
{
    char joined[2 * PATH_MAX];
    if (path[0] == '/') {
        snprintf(joined, sizeof joined, "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base)) {
                return -1;
            }
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof base - 1);
            if (n <= 0) {
                return -1;
            }
            base[n] = 0;
        }
        snprintf(joined, sizeof joined, "%s/%s", base, path);
    }
    size_t len = strlen(joined);
    while (len > 1 && joined[len - 1] == '/') {
        joined[--len] = 0;
    }
    char *slash = strrchr(joined, '/');
    const char *name = slash + 1;
    char parent[PATH_MAX];
    if (!strcmp(name, ".") || !strcmp(name, "..") || slash == joined) {
        return realpath(joined, out) ? 0 : -1;
    }
    *slash = 0;
    if (!realpath(joined, parent)) {
        return -1;
    }
    if (snprintf(out, PATH_MAX, "%s/%s", strcmp(parent, "/") ? parent : "",
                 name) >= PATH_MAX) {
        return -1;
    }
    struct stat st;
    if (lstat(out, &st) == 0 && S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        if (realpath(out, target)) {
            snprintf(out, PATH_MAX, "%s", target);
        }
    }
    return 0;
}

static bool is_under_dir(const char *abs)
{
    canonicalize_dir();
    return !strncmp(abs, df.dir, df.dir_len) &&
           (abs[df.dir_len] == '/' || abs[df.dir_len] == 0);
}

/* @abs relative to DIR ("." for DIR itself). */
static const char *relative(const char *abs)
{
    if (strncmp(abs, df.dir, df.dir_len)) {
        return abs;
    }
    if (abs[df.dir_len] == 0) {
        return ".";
    }
    return abs[df.dir_len] == '/' ? abs + df.dir_len + 1 : abs;
}

/* The directory part of @abs in @out (PATH_MAX bytes). */
static void parent_of(const char *abs, char *out)
{
    snprintf(out, PATH_MAX, "%s", abs);
    char *slash = strrchr(out, '/');
    if (slash == out) {
        out[1] = 0;
    } else if (slash) {
        *slash = 0;
    }
}

/* --- Trace ---------------------------------------------------------- */

static void trace_line(const char *op,
                       const char *rel,
                       uint64_t off,
                       uint64_t len,
                       const char *result)
{
    df.seq++;
    if (df.trace_fd < 0) {
        return;
    }
    struct df_line l;
    l.n = 0;
    put_u64(&l, df.seq);
    put_char(&l, ' ');
    put_field(&l, op);
    put_char(&l, ' ');
    put_field(&l, *rel ? rel : ".");
    put_char(&l, ' ');
    put_u64(&l, off);
    put_char(&l, ' ');
    put_u64(&l, len);
    put_char(&l, ' ');
    put_field(&l, result);
    put_char(&l, '\n');
    ssize_t k = real.write(df.trace_fd, l.b, l.n);
    (void)k;
}

static void trace_call(enum df_op op,
                       const char *rel,
                       uint64_t off,
                       uint64_t len,
                       long long ret,
                       int err)
{
    struct df_line r;
    r.n = 0;
    put_result(&r, ret, err);
    r.b[r.n] = 0;
    trace_line(op_names[op], rel, off, len, r.b);
}

/* --- Rules ---------------------------------------------------------- */

static int parse_errno(const char *s)
{
    for (size_t i = 0; i < sizeof errnames / sizeof errnames[0]; i++) {
        if (!strcmp(errnames[i].name, s)) {
            return errnames[i].err;
        }
    }
    char *end;
    long v = strtol(s, &end, 10);
    return (*s && !*end && v > 0 && v < 4096) ? (int)v : 0;
}

static unsigned parse_op(const char *s)
{
    if (!strcmp(s, "any")) {
        return (1u << OP_COUNT) - 1;
    }
    if (!strcmp(s, "sync")) {
        return 1u << OP_FSYNC | 1u << OP_FDATASYNC;
    }
    if (!strcmp(s, "write")) {
        return 1u << OP_WRITE | 1u << OP_DSYNC_WRITE;
    }
    for (int i = 0; i < OP_COUNT; i++) {
        if (!strcmp(s, op_names[i])) {
            return 1u << i;
        }
    }
    return 0;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || *s == '-') {
        return false;
    }
    *out = v;
    return true;
}

/* Parse keep=... and seed=... options. */
static bool parse_keep(const char *w,
                       bool *random,
                       bool *seeded,
                       uint64_t *seed)
{
    if (!strcmp(w, "keep=none")) {
        *random = false;
    } else if (!strcmp(w, "keep=random")) {
        *random = true;
    } else if (!strncmp(w, "seed=", 5) && parse_u64(w + 5, seed)) {
        *seeded = true;
    } else {
        return false;
    }
    return true;
}

static void complain(const char *file, unsigned line, const char *what)
{
    struct df_line l;
    l.n = 0;
    put_str(&l, "diskfault: ");
    put_str(&l, file);
    put_char(&l, ':');
    put_u64(&l, line);
    put_str(&l, ": ");
    put_str(&l, what);
    put_str(&l, " (line ignored)\n");
    say(&l);
}

/* Parse the words of one rule line; false when it is not a rule. */
static bool parse_rule(char **w, int n, struct df_rule *r, const char **why)
{
    memset(r, 0, sizeof *r);
    r->times = 1;
    int i = 0;
    if (!strcmp(w[0], "fail")) {
        r->kind = RULE_FAIL;
        if (n < 4) {
            *why = "fail needs PATH OP ERRNO";
            return false;
        }
        r->err = parse_errno(w[3]);
        if (!r->err) {
            *why = "unknown errno";
            return false;
        }
        i = 4;
    } else {
        r->kind = RULE_CRASH;
        if (n < 3) {
            *why = "crash needs PATH OP";
            return false;
        }
        i = 3;
    }
    snprintf(r->path, sizeof r->path, "%s", w[1]);
    r->ops = parse_op(w[2]);
    if (!r->ops) {
        *why = "unknown operation";
        return false;
    }
    for (; i < n; i++) {
        if (!strcmp(w[i], "after") && i + 1 < n &&
            parse_u64(w[i + 1], &r->after)) {
            i++;
        } else if (r->kind == RULE_FAIL && !strcmp(w[i], "times") &&
                   i + 1 < n && parse_u64(w[i + 1], &r->times)) {
            i++;
        } else if (r->kind == RULE_FAIL && !strcmp(w[i], "always")) {
            r->always = true;
        } else if (r->kind == RULE_CRASH && !strcmp(w[i], "torn")) {
            r->torn = true;
        } else if (r->kind == RULE_CRASH &&
                   parse_keep(w[i], &r->keep_random, &r->seeded, &r->seed)) {
            /* parsed */
        } else {
            *why = "unknown option";
            return false;
        }
    }
    return true;
}

/* (Re)read the rules file: counters restart, a missing file means none. */
static void load_rules(void)
{
    free(df.rules);
    df.rules = NULL;
    df.n_rules = 0;
    df.full = false;
    df.sig_keep_random = false;
    df.sig_seeded = false;
    if (!df.rules_path[0]) {
        return;
    }
    int fd = real.openat(AT_FDCWD, df.rules_path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    while (text) {
        if (len + 1 >= cap) {
            char *bigger = realloc(text, cap * 2);
            if (!bigger) {
                free(text);
                text = NULL;
                break;
            }
            text = bigger;
            cap *= 2;
        }
        ssize_t k = read(fd, text + len, cap - 1 - len);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            break;
        }
        len += (size_t)k;
    }
    real.close(fd);
    if (!text) {
        return;
    }
    text[len] = 0;
    size_t n_lines = 1;
    for (size_t i = 0; i < len; i++) {
        n_lines += text[i] == '\n';
    }
    df.rules = calloc(n_lines, sizeof *df.rules);
    unsigned line_no = 0;
    for (char *line = text, *next; line && df.rules; line = next) {
        next = strchr(line, '\n');
        if (next) {
            *next++ = 0;
        }
        line_no++;
        char *hash = strchr(line, '#');
        if (hash) {
            *hash = 0;
        }
        char *w[16];
        int n = 0;
        for (char *s2 = NULL, *t = strtok_r(line, " \t\r", &s2); t && n < 16;
             t = strtok_r(NULL, " \t\r", &s2)) {
            w[n++] = t;
        }
        if (n == 0) {
            continue;
        }
        const char *why = "unknown rule";
        if (!strcmp(w[0], "full") && n == 1) {
            df.full = true;
        } else if (!strcmp(w[0], "full") && n == 2 && !strcmp(w[1], "off")) {
            df.full = false;
        } else if (!strcmp(w[0], "signal")) {
            for (int i = 1; i < n; i++) {
                if (!parse_keep(w[i], &df.sig_keep_random, &df.sig_seeded,
                                &df.sig_seed)) {
                    complain(df.rules_path, line_no, "unknown signal option");
                }
            }
        } else if ((!strcmp(w[0], "fail") || !strcmp(w[0], "crash")) &&
                   parse_rule(w, n, &df.rules[df.n_rules], &why)) {
            df.n_rules++;
        } else {
            complain(df.rules_path, line_no, why);
        }
    }
    free(text);
}

static bool rule_matches(const struct df_rule *r,
                         enum df_op op,
                         const char *rel)
{
    return (r->ops & (1u << op)) &&
           (!strcmp(r->path, "*") || strstr(rel, r->path));
}

/* Count this call against every matching rule; the first that fires wins. */
static struct df_action decide(enum df_op op, const char *rel)
{
    struct df_action a = {0, NULL};
    for (size_t i = 0; i < df.n_rules; i++) {
        struct df_rule *r = &df.rules[i];
        if (!rule_matches(r, op, rel)) {
            continue;
        }
        r->count++;
        if (a.kind || r->count <= r->after) {
            continue;
        }
        if (r->kind == RULE_CRASH) {
            if (r->count == r->after + 1) {
                a.kind = 2;
                a.rule = r;
            }
        } else if (r->always || r->count <= r->after + r->times) {
            a.kind = 1;
            a.rule = r;
        }
    }
    return a;
}

static uint64_t clock_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid();
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* keep=random: does page @page of file @fi survive? */
static bool page_survives(uint64_t seed, size_t fi, uint64_t page)
{
    return mix64(seed ^ mix64((uint64_t)fi * 0x100000001b3ull ^ mix64(page))) &
           1;
}

/* --- Files and fds -------------------------------------------------- */

static size_t file_of_fd(int fd)
{
    if (fd < 0 || (size_t)fd >= df.n_fds || !df.fd_file[fd]) {
        return DF_NONE;
    }
    return df.fd_file[fd] - 1;
}

static void set_fd(int fd, size_t fi)
{
    if (fd < 0) {
        return;
    }
    if ((size_t)fd >= df.n_fds) {
        if (fi == DF_NONE) {
            return;
        }
        size_t n = df.n_fds ? df.n_fds : 64;
        while (n <= (size_t)fd) {
            n *= 2;
        }
        size_t *grown = realloc(df.fd_file, n * sizeof *grown);
        if (!grown) {
            return; /* not watched then */
        }
        memset(grown + df.n_fds, 0, (n - df.n_fds) * sizeof *grown);
        df.fd_file = grown;
        df.n_fds = n;
    }
    df.fd_file[fd] = fi == DF_NONE ? 0 : fi + 1;
}

static size_t find_file(dev_t dev, ino_t ino)
{
    for (size_t i = 0; i < df.n_files; i++) {
        if (!df.files[i].gone && df.files[i].dev == dev &&
            df.files[i].ino == ino) {
            return i;
        }
    }
    return DF_NONE;
}

static void set_path(struct df_file *f, const char *abs)
{
    char *copy = strdup(abs);
    if (copy) {
        free(f->path);
        f->path = copy;
    }
}

/* The record of a file opened at @abs; @fresh when the open created it. */
static size_t add_file(const struct stat *st, const char *abs, bool fresh)
{
    size_t fi = find_file(st->st_dev, st->st_ino);
    if (fi != DF_NONE && fresh) {
        df.files[fi].gone = true; /* a reused inode number */
        fi = DF_NONE;
    }
    if (fi != DF_NONE) {
        set_path(&df.files[fi], abs);
        return fi;
    }
    if (df.n_files == df.cap_files) {
        size_t cap = df.cap_files ? 2 * df.cap_files : 16;
        struct df_file *grown = realloc(df.files, cap * sizeof *grown);
        if (!grown) {
            return DF_NONE;
        }
        df.files = grown;
        df.cap_files = cap;
    }
    struct df_file *f = &df.files[df.n_files];
    memset(f, 0, sizeof *f);
    f->path = strdup(abs);
    if (!f->path) {
        return DF_NONE;
    }
    f->dev = st->st_dev;
    f->ino = st->st_ino;
    f->dir = S_ISDIR(st->st_mode);
    f->durable_size = fresh ? 0 : (uint64_t)st->st_size;
    return df.n_files++;
}

static struct df_page *find_page(struct df_file *f, uint64_t no)
{
    size_t lo = 0, hi = f->n_pages;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (f->pages[mid].no < no) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < f->n_pages && f->pages[lo].no == no ? &f->pages[lo] : NULL;
}

static void drop_page(struct df_file *f, struct df_page *p)
{
    size_t i = (size_t)(p - f->pages);
    free(p->data);
    memmove(p, p + 1, (f->n_pages - i - 1) * sizeof *p);
    f->n_pages--;
}

/* An fd on @fd's file that can be read: @fd or a new one in *@tmp. */
static int readable_fd(int fd, int *tmp)
{
    *tmp = -1;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_ACCMODE) != O_WRONLY) {
        return fd;
    }
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    *tmp = real.openat(AT_FDCWD, link, O_RDONLY | O_CLOEXEC, 0);
    return *tmp;
}

static void warn(const char *what, const struct df_file *f)
{
    struct df_line l;
    l.n = 0;
    put_str(&l, "diskfault: ");
    put_str(&l, what);
    put_str(&l, ": ");
    put_str(&l, f->path);
    put_char(&l, '\n');
    say(&l);
}

/* The saved page @no, saving the durable content (the current bytes below
 * durable_size, zeros beyond) if it has none yet. */
static struct df_page *save_page(struct df_file *f, int rfd, uint64_t no)
{
    struct df_page *have = find_page(f, no);
    if (have) {
        return have;
    }
    unsigned char *data = calloc(1, DF_PAGE);
    if (!data) {
        warn("out of memory saving a page", f);
        return NULL;
    }
    uint64_t start = no * DF_PAGE;
    if (start < f->durable_size) {
        size_t want = f->durable_size - start < DF_PAGE
                          ? (size_t)(f->durable_size - start)
                          : DF_PAGE;
        size_t got = 0;
        while (got < want) {
            ssize_t k =
                pread(rfd, data + got, want - got, (off_t)(start + got));
            if (k < 0 && errno == EINTR) {
                continue;
            }
            if (k <= 0) {
                break;
            }
            got += (size_t)k;
        }
    }
    if (f->n_pages == f->cap_pages) {
        size_t cap = f->cap_pages ? 2 * f->cap_pages : 16;
        struct df_page *grown = realloc(f->pages, cap * sizeof *grown);
        if (!grown) {
            free(data);
            warn("out of memory saving a page", f);
            return NULL;
        }
        f->pages = grown;
        f->cap_pages = cap;
    }
    size_t lo = 0;
    while (lo < f->n_pages && f->pages[lo].no < no) {
        lo++;
    }
    memmove(&f->pages[lo + 1], &f->pages[lo],
            (f->n_pages - lo) * sizeof *f->pages);
    f->pages[lo] = (struct df_page){.no = no, .lost = false, .data = data};
    f->n_pages++;
    return &f->pages[lo];
}

/* Before bytes [@off, @end) change: save the durable pages among them. */
static void save_range(struct df_file *f, int fd, uint64_t off, uint64_t end)
{
    if (off >= f->durable_size || off >= end) {
        return;
    }
    if (end > f->durable_size) {
        end = f->durable_size;
    }
    int tmp;
    int rfd = readable_fd(fd, &tmp);
    if (rfd < 0) {
        warn("cannot read to save pages", f);
        return;
    }
    for (uint64_t p = off / DF_PAGE; p * DF_PAGE < end; p++) {
        save_page(f, rfd, p);
    }
    if (tmp >= 0) {
        real.close(tmp);
    }
}

/* Bytes [@off, @off + @n) were written: their pages are dirty again. */
static void mark_written(struct df_file *f, uint64_t off, uint64_t n)
{
    for (uint64_t p = off / DF_PAGE; n && p * DF_PAGE < off + n; p++) {
        struct df_page *e = find_page(f, p);
        if (e) {
            e->lost = false;
        }
    }
}

/* Bytes [@off, @end), as they are in the file now, are durable (an O_DSYNC
 * write, a torn write's sectors). The pages saved before they were written
 * keep the durable content of their other bytes. */
static void make_durable(struct df_file *f, int fd, uint64_t off, uint64_t end)
{
    int tmp;
    int rfd = readable_fd(fd, &tmp);
    if (rfd < 0 || off >= end) {
        if (tmp >= 0) {
            real.close(tmp);
        }
        return;
    }
    uint64_t old = f->durable_size;
    uint64_t grown = end > old ? end : old;
    /* Pages the size now reaches but this range does not cover: their
     * non-durable bytes read back as zeros. */
    for (uint64_t p = old / DF_PAGE; end > old && p * DF_PAGE < end; p++) {
        uint64_t ps = p * DF_PAGE;
        uint64_t pe = ps + DF_PAGE < grown ? ps + DF_PAGE : grown;
        if (!(ps >= off && pe <= end)) {
            save_page(f, rfd, p);
        }
    }
    for (uint64_t p = off / DF_PAGE; p * DF_PAGE < end; p++) {
        struct df_page *e = find_page(f, p);
        if (!e) {
            continue;
        }
        uint64_t ps = p * DF_PAGE;
        uint64_t pe = ps + DF_PAGE < grown ? ps + DF_PAGE : grown;
        if (ps >= off && pe <= end) {
            drop_page(f, e);
            continue;
        }
        uint64_t from = off > ps ? off : ps;
        uint64_t to = end < ps + DF_PAGE ? end : ps + DF_PAGE;
        ssize_t k = pread(rfd, e->data + (from - ps), to - from, (off_t)from);
        (void)k;
    }
    f->durable_size = grown;
    if (tmp >= 0) {
        real.close(tmp);
    }
}

/* A sync succeeded: everything but the lost pages is durable. */
static void sync_succeeded(struct df_file *f, uint64_t size)
{
    for (size_t i = 0; i < f->n_pages;) {
        struct df_page *e = &f->pages[i];
        if (!e->lost || e->no * DF_PAGE >= size) {
            drop_page(f, e);
        } else {
            i++;
        }
    }
    f->durable_size = size;
}

/* A sync failed: the dirty pages are dropped without being written
 * (fsyncgate), including those beyond the durable size. */
static void sync_failed(struct df_file *f, int fd, uint64_t size)
{
    int tmp;
    int rfd = readable_fd(fd, &tmp);
    if (rfd >= 0) {
        for (uint64_t p = f->durable_size / DF_PAGE; p * DF_PAGE < size; p++) {
            save_page(f, rfd, p);
        }
    }
    for (size_t i = 0; i < f->n_pages; i++) {
        f->pages[i].lost = true;
    }
    if (tmp >= 0) {
        real.close(tmp);
    }
}

static uint64_t size_of_fd(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* --- Metadata ------------------------------------------------------- */

static bool dir_identity(const char *abs_file, dev_t *dev, ino_t *ino)
{
    char parent[PATH_MAX];
    parent_of(abs_file, parent);
    struct stat st;
    if (stat(parent, &st) != 0) {
        return false;
    }
    *dev = st.st_dev;
    *ino = st.st_ino;
    return true;
}

static struct df_meta *add_meta(enum df_meta_kind kind,
                                const char *path,
                                const char *path2,
                                size_t file)
{
    if (df.n_meta == df.cap_meta) {
        size_t cap = df.cap_meta ? 2 * df.cap_meta : 16;
        struct df_meta *grown = realloc(df.meta, cap * sizeof *grown);
        if (!grown) {
            return NULL;
        }
        df.meta = grown;
        df.cap_meta = cap;
    }
    struct df_meta *m = &df.meta[df.n_meta];
    memset(m, 0, sizeof *m);
    m->kind = kind;
    m->path = strdup(path);
    m->path2 = path2 ? strdup(path2) : NULL;
    m->file = file;
    m->replaced = DF_NONE;
    if (!m->path || (path2 && !m->path2) ||
        !dir_identity(path, &m->dir_dev[0], &m->dir_ino[0])) {
        free(m->path);
        free(m->path2);
        return NULL;
    }
    m->dir_dev[1] = m->dir_dev[0];
    m->dir_ino[1] = m->dir_ino[0];
    if (kind == META_RENAME) {
        dir_identity(path2, &m->dir_dev[1], &m->dir_ino[1]);
    }
    df.n_meta++;
    return m;
}

static void free_meta(struct df_meta *m)
{
    free(m->path);
    free(m->path2);
    free(m->hidden);
}

/* An fsync of directory (@dev, @ino) made its pending entries durable. */
static void commit_meta(dev_t dev, ino_t ino, bool all)
{
    size_t kept = 0;
    for (size_t i = 0; i < df.n_meta; i++) {
        struct df_meta *m = &df.meta[i];
        bool here = all || (m->dir_dev[0] == dev && m->dir_ino[0] == ino) ||
                    (m->dir_dev[1] == dev && m->dir_ino[1] == ino);
        if (!here) {
            df.meta[kept++] = *m;
            continue;
        }
        if (m->kind == META_UNLINK) {
            real.unlinkat(AT_FDCWD, m->path2, 0);
            if (m->file != DF_NONE) {
                df.files[m->file].gone = true;
            }
        } else if (m->kind == META_RENAME && m->hidden) {
            real.unlinkat(AT_FDCWD, m->hidden, 0);
            if (m->replaced != DF_NONE) {
                df.files[m->replaced].gone = true;
            }
        }
        free_meta(m);
    }
    df.n_meta = kept;
}

/* --- Power loss ----------------------------------------------------- */

static void put_seed_note(struct df_line *l, bool keep_random, uint64_t seed)
{
    put_str(l, keep_random ? "keep=random seed=" : "keep=none");
    if (keep_random) {
        put_u64(l, seed);
    }
}

/* Put file @fi back to its durable state. No allocation: this also runs in
 * the SIGUSR2 handler. */
static void restore_file(size_t fi, bool keep_random, uint64_t seed)
{
    struct df_file *f = &df.files[fi];
    if (f->dir || f->gone) {
        return;
    }
    int fd =
        real.openat(AT_FDCWD, f->path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_dev != f->dev ||
        st.st_ino != f->ino) {
        warn("cannot restore, not found at its path", f);
        if (fd >= 0) {
            real.close(fd);
        }
        return;
    }
    uint64_t size = (uint64_t)st.st_size, dur = f->durable_size, keep = dur;
    if (size == dur && f->n_pages == 0) {
        real.close(fd);
        return;
    }
    if (keep_random && size > dur) {
        for (uint64_t p = dur / DF_PAGE; p * DF_PAGE < size; p++) {
            struct df_page *e = find_page(f, p);
            bool lives = (!e || !e->lost) && page_survives(seed, fi, p);
            uint64_t pe = (p + 1) * DF_PAGE < size ? (p + 1) * DF_PAGE : size;
            if (lives && pe > keep) {
                keep = pe;
            }
        }
    }
    int rc = real.ftruncate(fd, (off_t)keep);
    for (size_t i = 0; i < f->n_pages; i++) {
        struct df_page *e = &f->pages[i];
        uint64_t ps = e->no * DF_PAGE;
        if (ps >= keep) {
            continue;
        }
        bool revert = !keep_random || e->lost || ps >= size ||
                      !page_survives(seed, fi, e->no);
        if (revert) {
            size_t n = keep - ps < DF_PAGE ? (size_t)(keep - ps) : DF_PAGE;
            rc |= real.pwrite(fd, e->data, n, (off_t)ps) != (ssize_t)n;
        }
    }
    /* keep=random: the pages beyond the old durable size that did not
     * survive read back as zeros (the size still covers them). */
    for (uint64_t p = dur / DF_PAGE; keep > dur && p * DF_PAGE < keep; p++) {
        if (find_page(f, p) || page_survives(seed, fi, p)) {
            continue;
        }
        uint64_t from = p * DF_PAGE > dur ? p * DF_PAGE : dur;
        uint64_t to = (p + 1) * DF_PAGE < keep ? (p + 1) * DF_PAGE : keep;
        rc |= real.pwrite(fd, zero_page, to - from, (off_t)from) !=
              (ssize_t)(to - from);
    }
    rc |= real.fsync(fd);
    real.close(fd);
    if (rc) {
        warn("restore incomplete", f);
    }
}

static void sync_parent(const char *path)
{
    char parent[PATH_MAX];
    parent_of(path, parent);
    int fd =
        real.openat(AT_FDCWD, parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd >= 0) {
        real.fsync(fd);
        real.close(fd);
    }
}

/* Undo the pending metadata operations, newest first. */
static void undo_meta(void)
{
    for (size_t i = df.n_meta; i-- > 0;) {
        struct df_meta *m = &df.meta[i];
        switch (m->kind) {
            case META_CREATE:
                real.unlinkat(AT_FDCWD, m->path, 0);
                break;
            case META_UNLINK:
                real.renameat(AT_FDCWD, m->path2, AT_FDCWD, m->path);
                break;
            case META_RENAME:
                real.renameat(AT_FDCWD, m->path2, AT_FDCWD, m->path);
                if (m->hidden) {
                    real.renameat(AT_FDCWD, m->hidden, AT_FDCWD, m->path2);
                }
                sync_parent(m->path2);
                break;
        }
        sync_parent(m->path);
    }
}

/* The power goes: what is not durable is lost, then SIGKILL. Called with
 * the state taken (busy), from a wrapper or the SIGUSR2 handler. */
static void power_loss(bool keep_random,
                       bool seeded,
                       uint64_t seed,
                       const char *op,
                       const char *rel,
                       uint64_t off,
                       uint64_t len,
                       const char *result)
{
    if (keep_random && !seeded) {
        seed = clock_seed();
    }
    struct df_line l;
    l.n = 0;
    put_str(&l, "diskfault: power loss at ");
    put_str(&l, op);
    put_char(&l, ' ');
    put_str(&l, rel);
    put_str(&l, " (");
    put_seed_note(&l, keep_random, seed);
    put_str(&l, ")\n");
    say(&l);
    trace_line(op, rel, off, len, result);
    for (size_t i = 0; i < df.n_files; i++) {
        restore_file(i, keep_random, seed);
    }
    undo_meta();
    kill(getpid(), SIGKILL);
    raise(SIGKILL);
    _exit(137);
}

/* --- Write path ----------------------------------------------------- */

enum df_wcall { W_WRITE, W_PWRITE, W_WRITEV, W_PWRITEV };

static ssize_t call_write(enum df_wcall c,
                          int fd,
                          const struct iovec *iov,
                          int cnt,
                          off_t off)
{
    switch (c) {
        case W_WRITE:
            return real.write(fd, iov[0].iov_base, iov[0].iov_len);
        case W_PWRITE:
            return real.pwrite(fd, iov[0].iov_base, iov[0].iov_len, off);
        case W_WRITEV:
            return real.writev(fd, iov, cnt);
        case W_PWRITEV:
            return real.pwritev(fd, iov, cnt, off);
    }
    errno = EINVAL;
    return -1;
}

/* A torn write: a random non-empty proper subset of its sectors reaches
 * the disk, durably; then the power goes. */
static void tear_write(size_t fi,
                       int fd,
                       const struct iovec *iov,
                       int cnt,
                       uint64_t off,
                       uint64_t len,
                       const struct df_rule *r,
                       const char *op)
{
    struct df_file *f = &df.files[fi];
    uint64_t seed = r->seeded ? r->seed : clock_seed();
    uint64_t first = off / DF_SECTOR;
    uint64_t n = len ? (off + len - 1) / DF_SECTOR - first + 1 : 0;
    unsigned char *buf = malloc(len ? len : 1);
    unsigned char *keep = calloc(n ? n : 1, 1);
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int wfd = real.openat(AT_FDCWD, link, O_RDWR | O_CLOEXEC, 0);
    struct df_line l;
    l.n = 0;
    put_str(&l, "diskfault: torn write of ");
    put_str(&l, relative(f->path));
    put_str(&l, " (seed=");
    put_u64(&l, seed);
    put_str(&l, "): sectors kept ");
    if (buf && keep && wfd >= 0 && n >= 2) {
        size_t at = 0;
        for (int i = 0; i < cnt; i++) {
            memcpy(buf + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
        uint64_t state = seed, kept = 0;
        for (uint64_t i = 0; i < n; i++) {
            state = mix64(state);
            keep[i] = state & 1;
            kept += keep[i];
        }
        state = mix64(state);
        if (kept == 0) {
            keep[state % n] = 1;
        } else if (kept == n) {
            keep[state % n] = 0;
        }
        save_range(f, fd, off, off + len);
        for (uint64_t i = 0; i < n; i++) {
            put_char(&l, keep[i] ? '1' : '0');
            if (!keep[i]) {
                continue;
            }
            uint64_t s = (first + i) * DF_SECTOR, e = s + DF_SECTOR;
            s = s > off ? s : off;
            e = e < off + len ? e : off + len;
            if (real.pwrite(wfd, buf + (s - off), e - s, (off_t)s) ==
                (ssize_t)(e - s)) {
                make_durable(&df.files[fi], wfd, s, e);
            }
        }
    } else {
        put_str(&l, "none (a write within one sector does not tear)");
    }
    put_char(&l, '\n');
    say(&l);
    free(buf);
    free(keep);
    if (wfd >= 0) {
        real.close(wfd);
    }
    power_loss(r->keep_random, true, seed, op, relative(df.files[fi].path), off,
               len, "torn");
}

static ssize_t write_hook(enum df_wcall c,
                          int fd,
                          const struct iovec *iov,
                          int cnt,
                          off_t pos)
{
    resolve_real();
    if (passthrough()) {
        return call_write(c, fd, iov, cnt, pos);
    }
    enter();
    size_t fi = file_of_fd(fd);
    if (fi == DF_NONE || df.files[fi].dir) {
        leave();
        return call_write(c, fd, iov, cnt, pos);
    }
    int fl = fcntl(fd, F_GETFL);
    uint64_t size = size_of_fd(fd);
    uint64_t off;
    if (fl >= 0 && (fl & O_APPEND)) {
        off = size;
    } else if (c == W_PWRITE || c == W_PWRITEV) {
        off = (uint64_t)pos;
    } else {
        off_t cur = lseek(fd, 0, SEEK_CUR);
        off = cur < 0 ? 0 : (uint64_t)cur;
    }
    uint64_t len = 0;
    for (int i = 0; i < cnt; i++) {
        len += iov[i].iov_len;
    }
    bool dsync = fl >= 0 && (fl & O_DSYNC);
    enum df_op op = dsync ? OP_DSYNC_WRITE : OP_WRITE;
    const char *rel = relative(df.files[fi].path);
    struct df_action a = decide(op, rel);
    if (a.kind == 2 && a.rule->torn) {
        tear_write(fi, fd, iov, cnt, off, len, a.rule, op_names[op]);
    }
    if (a.kind == 2) {
        power_loss(a.rule->keep_random, a.rule->seeded, a.rule->seed,
                   op_names[op], rel, off, len, "crash");
    }
    int err = a.kind == 1 ? a.rule->err : 0;
    /* A full disk takes what fits in the file's current size. */
    struct iovec small[64], *trimmed = NULL;
    const struct iovec *use = iov;
    int use_cnt = cnt;
    if (!err && df.full && len && off + len > size) {
        if (off >= size) {
            err = ENOSPC;
        } else {
            uint64_t room = size - off;
            trimmed = cnt <= 64 ? small : malloc((size_t)cnt * sizeof *iov);
            if (!trimmed) {
                err = ENOSPC;
            } else {
                use_cnt = 0;
                for (int i = 0; i < cnt && room; i++) {
                    trimmed[use_cnt] = iov[i];
                    if (trimmed[use_cnt].iov_len > room) {
                        trimmed[use_cnt].iov_len = room;
                    }
                    room -= trimmed[use_cnt++].iov_len;
                }
                use = trimmed;
            }
        }
    }
    ssize_t r;
    if (err) {
        r = -1;
    } else {
        save_range(&df.files[fi], fd, off, off + len);
        r = call_write(c, fd, use, use_cnt, pos);
        err = r < 0 ? errno : 0;
        if (r > 0) {
            struct df_file *f = &df.files[fi];
            mark_written(f, off, (uint64_t)r);
            if (dsync) {
                /* O_DSYNC writes back whole pages, and the size. */
                uint64_t now = size_of_fd(fd);
                uint64_t from = off / DF_PAGE * DF_PAGE;
                uint64_t to =
                    (off + (uint64_t)r + DF_PAGE - 1) / DF_PAGE * DF_PAGE;
                make_durable(f, fd, from, to < now ? to : now);
            }
        }
    }
    if (trimmed && trimmed != small) {
        free(trimmed);
    }
    trace_call(op, rel, off, len, r, err);
    leave();
    errno = err;
    return r;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    struct iovec v = {(void *)buf, n};
    return write_hook(W_WRITE, fd, &v, 1, 0);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    struct iovec v = {(void *)buf, n};
    return write_hook(W_PWRITE, fd, &v, 1, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    struct iovec v = {(void *)buf, n};
    return write_hook(W_PWRITE, fd, &v, 1, (off_t)off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    return write_hook(W_WRITEV, fd, iov, cnt, 0);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return write_hook(W_PWRITEV, fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
    return write_hook(W_PWRITEV, fd, iov, cnt, (off_t)off);
}

/* --- Syncs ---------------------------------------------------------- */

static int sync_hook(int fd, bool data_only)
{
    resolve_real();
    int (*call)(int) = data_only ? real.fdatasync : real.fsync;
    if (passthrough()) {
        return call(fd);
    }
    enter();
    size_t fi = file_of_fd(fd);
    if (fi == DF_NONE) {
        leave();
        return call(fd);
    }
    struct df_file *f = &df.files[fi];
    enum df_op op = f->dir ? OP_DIRSYNC : (data_only ? OP_FDATASYNC : OP_FSYNC);
    const char *rel = relative(f->path);
    uint64_t size = f->dir ? 0 : size_of_fd(fd);
    struct df_action a = decide(op, rel);
    if (a.kind == 2) {
        power_loss(a.rule->keep_random, a.rule->seeded, a.rule->seed,
                   op_names[op], rel, 0, size, "crash");
    }
    int r = -1, err;
    if (a.kind == 1) {
        err = a.rule->err;
    } else {
        r = call(fd);
        err = r ? errno : 0;
    }
    if (f->dir) {
        if (r == 0) {
            commit_meta(f->dev, f->ino, false);
        }
    } else if (r == 0) {
        sync_succeeded(f, size);
    } else {
        sync_failed(f, fd, size);
    }
    trace_call(op, rel, 0, size, r, err);
    leave();
    errno = err;
    return r;
}

int fsync(int fd)
{
    return sync_hook(fd, false);
}

int fdatasync(int fd)
{
    return sync_hook(fd, true);
}

/* Starts writeback but promises nothing: traced, never durable. */
int sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
    resolve_real();
    if (passthrough()) {
        return real.sync_file_range(fd, off, n, flags);
    }
    enter();
    size_t fi = file_of_fd(fd);
    if (fi == DF_NONE || df.files[fi].dir) {
        leave();
        return real.sync_file_range(fd, off, n, flags);
    }
    const char *rel = relative(df.files[fi].path);
    struct df_action a = decide(OP_SYNC_RANGE, rel);
    if (a.kind == 2) {
        power_loss(a.rule->keep_random, a.rule->seeded, a.rule->seed,
                   op_names[OP_SYNC_RANGE], rel, (uint64_t)off, (uint64_t)n,
                   "crash");
    }
    int r = -1, err = a.kind == 1 ? a.rule->err : 0;
    if (!err) {
        r = real.sync_file_range(fd, off, n, flags);
        err = r ? errno : 0;
    }
    trace_call(OP_SYNC_RANGE, rel, (uint64_t)off, (uint64_t)n, r, err);
    leave();
    errno = err;
    return r;
}

/* --- Size changes --------------------------------------------------- */

/* ftruncate on watched file @fi, the state taken. */
static int truncate_file(size_t fi, int fd, uint64_t len)
{
    const char *rel = relative(df.files[fi].path);
    uint64_t size = size_of_fd(fd);
    struct df_action a = decide(OP_FTRUNCATE, rel);
    if (a.kind == 2) {
        power_loss(a.rule->keep_random, a.rule->seeded, a.rule->seed,
                   op_names[OP_FTRUNCATE], rel, len, 0, "crash");
    }
    int r = -1, err = a.kind == 1 ? a.rule->err : 0;
    if (!err && df.full && len > size) {
        err = ENOSPC;
    }
    if (!err) {
        struct df_file *f = &df.files[fi];
        if (len < size) {
            save_range(f, fd, len, size);
        }
        r = real.ftruncate(fd, (off_t)len);
        err = r ? errno : 0;
    }
    trace_call(OP_FTRUNCATE, rel, len, 0, r, err);
    errno = err;
    return r;
}

int ftruncate(int fd, off_t len)
{
    resolve_real();
    if (passthrough()) {
        return real.ftruncate(fd, len);
    }
    enter();
    size_t fi = file_of_fd(fd);
    if (fi == DF_NONE || df.files[fi].dir || len < 0) {
        leave();
        return real.ftruncate(fd, len);
    }
    int r = truncate_file(fi, fd, (uint64_t)len);
    int err = errno;
    leave();
    errno = err;
    return r;
}

int ftruncate64(int fd, off64_t len)
{
    return ftruncate(fd, (off_t)len);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    resolve_real();
    if (passthrough()) {
        return real.fallocate(fd, mode, off, len);
    }
    enter();
    size_t fi = file_of_fd(fd);
    if (fi == DF_NONE || df.files[fi].dir || off < 0 || len <= 0) {
        leave();
        return real.fallocate(fd, mode, off, len);
    }
    const char *rel = relative(df.files[fi].path);
    uint64_t size = size_of_fd(fd), end = (uint64_t)off + (uint64_t)len;
    struct df_action a = decide(OP_FALLOCATE, rel);
    if (a.kind == 2) {
        power_loss(a.rule->keep_random, a.rule->seeded, a.rule->seed,
                   op_names[OP_FALLOCATE], rel, (uint64_t)off, (uint64_t)len,
                   "crash");
    }
    int r = -1, err = a.kind == 1 ? a.rule->err : 0;
    bool changes = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE |
                           FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE);
    if (!err && df.full && end > size && !(mode & FALLOC_FL_PUNCH_HOLE)) {
        err = ENOSPC;
    }
    if (!err) {
        struct df_file *f = &df.files[fi];
        if (changes) {
            bool shifts =
                mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE);
            save_range(f, fd, (uint64_t)off, shifts ? UINT64_MAX : end);
        }
        r = real.fallocate(fd, mode, off, len);
        err = r ? errno : 0;
    }
    trace_call(OP_FALLOCATE, rel, (uint64_t)off, (uint64_t)len, r, err);
    leave();
    errno = err;
    return r;
}

int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
    return fallocate(fd, mode, (off_t)off, (off_t)len);
}

/* --- Opens and fds -------------------------------------------------- */

static int open_hook(int dirfd, const char *path, int flags, mode_t mode)
{
    resolve_real();
    if (passthrough() || !path || (flags & O_TMPFILE) == O_TMPFILE) {
        return real.openat(dirfd, path, flags, mode);
    }
    enter();
    char abs[PATH_MAX];
    if (resolve_path(dirfd, path, abs) != 0 || !is_under_dir(abs)) {
        int fd = real.openat(dirfd, path, flags, mode);
        int err = errno;
        set_fd(fd, DF_NONE);
        leave();
        errno = err;
        return fd;
    }
    const char *rel = relative(abs);
    struct stat before;
    bool existed = stat(abs, &before) == 0;
    bool creating = (flags & O_CREAT) && !existed;
    bool trunc = (flags & O_TRUNC) && existed && S_ISREG(before.st_mode) &&
                 (flags & O_ACCMODE) != O_RDONLY;
    if (creating) {
        struct df_action a = decide(OP_CREATE, rel);
        if (a.kind == 2) {
            power_loss(a.rule->keep_random, a.rule->seeded, a.rule->seed,
                       op_names[OP_CREATE], rel, 0, 0, "crash");
        }
        if (a.kind == 1) {
            trace_call(OP_CREATE, rel, 0, 0, -1, a.rule->err);
            leave();
            errno = a.rule->err;
            return -1;
        }
    }
    int fd = real.openat(dirfd, path, trunc ? flags & ~O_TRUNC : flags, mode);
    int err = errno;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 ||
        !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
        set_fd(fd, DF_NONE);
        if (creating) {
            trace_call(OP_CREATE, rel, 0, 0, fd < 0 ? -1 : 0, err);
        }
        leave();
        errno = err;
        return fd;
    }
    size_t fi = add_file(&st, abs, creating);
    set_fd(fd, fi);
    if (creating) {
        add_meta(META_CREATE, abs, NULL, fi);
        trace_call(OP_CREATE, rel, 0, 0, 0, 0);
    }
    if (trunc && fi != DF_NONE && truncate_file(fi, fd, 0) != 0) {
        err = errno;
        real.close(fd);
        set_fd(fd, DF_NONE);
        fd = -1;
    }
    leave();
    errno = err;
    return fd;
}

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE
               ? (mode_t)va_arg(ap, int)
               : 0;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return open_hook(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return open_hook(AT_FDCWD, path, flags | O_LARGEFILE, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return open_hook(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return open_hook(dirfd, path, flags | O_LARGEFILE, mode);
}

int creat(const char *path, mode_t mode)
{
    return open_hook(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

int creat64(const char *path, mode_t mode)
{
    return open_hook(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

/* _FORTIFY_SOURCE's checked opens (they take no mode). */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

int __open_2(const char *path, int flags)
{
    return open_hook(AT_FDCWD, path, flags, 0);
}

int __open64_2(const char *path, int flags)
{
    return open_hook(AT_FDCWD, path, flags | O_LARGEFILE, 0);
}

int __openat_2(int dirfd, const char *path, int flags)
{
    return open_hook(dirfd, path, flags, 0);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
    return open_hook(dirfd, path, flags | O_LARGEFILE, 0);
}

int close(int fd)
{
    resolve_real();
    if (!passthrough()) {
        enter();
        set_fd(fd, DF_NONE);
        leave();
    }
    return real.close(fd);
}

/* Copy @from's watch onto @to (a dup of it), or clear it. */
static int track_dup(int from, int to)
{
    if (!passthrough()) {
        int err = errno;
        enter();
        set_fd(to, to >= 0 ? file_of_fd(from) : DF_NONE);
        leave();
        errno = err;
    }
    return to;
}

int dup(int fd)
{
    resolve_real();
    return track_dup(fd, real.dup(fd));
}

int dup2(int fd, int to)
{
    resolve_real();
    return track_dup(fd, real.dup2(fd, to));
}

int dup3(int fd, int to, int flags)
{
    resolve_real();
    return track_dup(fd, real.dup3(fd, to, flags));
}

/* --- Names ---------------------------------------------------------- */

/* A fresh hidden name in @abs's directory. */
static void hidden_name(const char *abs, char *out)
{
    char parent[PATH_MAX];
    parent_of(abs, parent);
    if (snprintf(out, PATH_MAX, "%s/.diskfault-unlinked.%ld.%llu", parent,
                 (long)getpid(),
                 (unsigned long long)++df.hidden_no) >= PATH_MAX) {
        out[0] = 0; /* the rename then fails: the unlink is not done */
    }
}

static int unlink_hook(int dirfd, const char *path, int flags)
{
    resolve_real();
    if (passthrough() || !path || (flags & AT_REMOVEDIR)) {
        return real.unlinkat(dirfd, path, flags);
    }
    enter();
    char abs[PATH_MAX];
    struct stat st;
    if (resolve_path(dirfd, path, abs) != 0 || !is_under_dir(abs) ||
        lstat(abs, &st) != 0 || !S_ISREG(st.st_mode)) {
        int r = real.unlinkat(dirfd, path, flags);
        int err = errno;
        leave();
        errno = err;
        return r;
    }
    const char *rel = relative(abs);
    struct df_action a = decide(OP_UNLINK, rel);
    if (a.kind == 2) {
        power_loss(a.rule->keep_random, a.rule->seeded, a.rule->seed,
                   op_names[OP_UNLINK], rel, 0, 0, "crash");
    }
    if (a.kind == 1) {
        trace_call(OP_UNLINK, rel, 0, 0, -1, a.rule->err);
        leave();
        errno = a.rule->err;
        return -1;
    }
    size_t fi = find_file(st.st_dev, st.st_ino);
    /* A create still pending: both vanish together. */
    for (size_t i = df.n_meta; i-- > 0;) {
        struct df_meta *m = &df.meta[i];
        if (m->kind == META_CREATE && m->file == fi && fi != DF_NONE &&
            !strcmp(m->path, abs)) {
            int r = real.unlinkat(AT_FDCWD, abs, 0);
            int err = r ? errno : 0;
            if (r == 0) {
                free_meta(m);
                memmove(m, m + 1, (df.n_meta - i - 1) * sizeof *m);
                df.n_meta--;
                df.files[fi].gone = true;
            }
            trace_call(OP_UNLINK, rel, 0, 0, r, err);
            leave();
            errno = err;
            return r;
        }
    }
    char hidden[PATH_MAX];
    hidden_name(abs, hidden);
    int r = real.renameat(AT_FDCWD, abs, AT_FDCWD, hidden);
    int err = r ? errno : 0;
    if (r == 0) {
        if (!add_meta(META_UNLINK, abs, hidden, fi)) {
            real.unlinkat(AT_FDCWD, hidden, 0); /* cannot track: plain unlink */
        } else if (fi != DF_NONE) {
            set_path(&df.files[fi], hidden);
        }
    }
    trace_call(OP_UNLINK, rel, 0, 0, r, err);
    leave();
    errno = err;
    return r;
}

int unlink(const char *path)
{
    return unlink_hook(AT_FDCWD, path, 0);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    return unlink_hook(dirfd, path, flags);
}

static int rename_hook(int odir, const char *old, int ndir, const char *new)
{
    resolve_real();
    if (passthrough() || !old || !new) {
        return real.renameat(odir, old, ndir, new);
    }
    enter();
    char from[PATH_MAX], to[PATH_MAX];
    struct stat st, over;
    bool in_from = resolve_path(odir, old, from) == 0 && is_under_dir(from);
    bool in_to = resolve_path(ndir, new, to) == 0 && is_under_dir(to);
    if (!in_from || !in_to || lstat(from, &st) != 0 || !S_ISREG(st.st_mode)) {
        /* Not tracked: directories, renames across DIR's boundary. A file
         * leaving DIR is no longer watched. */
        int r = real.renameat(odir, old, ndir, new);
        int err = errno;
        if (r == 0 && in_from && !in_to) {
            size_t fi = find_file(st.st_dev, st.st_ino);
            if (fi != DF_NONE) {
                df.files[fi].gone = true;
            }
        }
        leave();
        errno = err;
        return r;
    }
    char rel[2 * PATH_MAX + 4];
    snprintf(rel, sizeof rel, "%s->%s", relative(from), relative(to));
    struct df_action a = decide(OP_RENAME, rel);
    if (a.kind == 2) {
        power_loss(a.rule->keep_random, a.rule->seeded, a.rule->seed,
                   op_names[OP_RENAME], rel, 0, 0, "crash");
    }
    if (a.kind == 1) {
        trace_call(OP_RENAME, rel, 0, 0, -1, a.rule->err);
        leave();
        errno = a.rule->err;
        return -1;
    }
    char hidden[PATH_MAX];
    bool replaces = lstat(to, &over) == 0 && S_ISREG(over.st_mode) &&
                    !(over.st_dev == st.st_dev && over.st_ino == st.st_ino);
    if (replaces) {
        hidden_name(to, hidden);
        replaces = link(to, hidden) == 0;
    }
    int r = real.renameat(odir, old, ndir, new);
    int err = r ? errno : 0;
    if (r != 0) {
        if (replaces) {
            real.unlinkat(AT_FDCWD, hidden, 0);
        }
    } else {
        size_t fi = find_file(st.st_dev, st.st_ino);
        size_t gone = replaces ? find_file(over.st_dev, over.st_ino) : DF_NONE;
        if (fi != DF_NONE) {
            set_path(&df.files[fi], to);
        }
        if (gone != DF_NONE) {
            set_path(&df.files[gone], hidden);
        }
        struct df_meta *m = add_meta(META_RENAME, from, to, fi);
        if (m) {
            m->replaced = gone;
            m->hidden = replaces ? strdup(hidden) : NULL;
        } else if (replaces) {
            real.unlinkat(AT_FDCWD, hidden, 0);
        }
    }
    trace_call(OP_RENAME, rel, 0, 0, r, err);
    leave();
    errno = err;
    return r;
}

int rename(const char *old, const char *new)
{
    return rename_hook(AT_FDCWD, old, AT_FDCWD, new);
}

int renameat(int odir, const char *old, int ndir, const char *new)
{
    return rename_hook(odir, old, ndir, new);
}

/* --- Load and exit -------------------------------------------------- */

__attribute__((constructor)) static void start_diskfault(void)
{
    resolve_real();
    const char *dir = getenv("RAFTKV_DISKFAULT_DIR");
    if (!dir || !*dir) {
        return;
    }
    if (dir[0] == '/') {
        snprintf(df.dir, sizeof df.dir, "%s", dir);
    } else {
        char cwd[PATH_MAX];
        if (snprintf(df.dir, sizeof df.dir, "%s/%s",
                     getcwd(cwd, sizeof cwd) ? cwd : "",
                     dir) >= (int)sizeof df.dir) {
            return; /* too long to watch */
        }
    }
    df.dir_len = strlen(df.dir);
    while (df.dir_len > 1 && df.dir[df.dir_len - 1] == '/') {
        df.dir[--df.dir_len] = 0;
    }
    canonicalize_dir();
    const char *rules = getenv("RAFTKV_DISKFAULT_RULES");
    if (rules && *rules) {
        snprintf(df.rules_path, sizeof df.rules_path, "%s", rules);
    }
    const char *trace = getenv("RAFTKV_DISKFAULT_TRACE");
    if (trace && *trace) {
        df.trace_fd = real.openat(
            AT_FDCWD, trace, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    }
    load_rules();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = on_reload_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_power_signal;
    sigaction(SIGUSR2, &sa, NULL);
    df.active = true;
}

/* A clean exit is no power loss: what is pending would reach the disk. */
__attribute__((destructor)) static void stop_diskfault(void)
{
    if (!df.active) {
        return;
    }
    enter();
    commit_meta(0, 0, true);
    leave();
}
