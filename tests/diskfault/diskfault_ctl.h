/* diskfault_ctl.h: drive libdiskfault.so from a test: rules, signals, traces.
 *
 * A test starts a program with df_setenv() in its child (after fork, before
 * exec), writes rules with df_write_rules(), makes the program re-read them
 * with df_reload(), cuts its power with df_power_loss() and counts what it
 * did in the trace with df_trace_count(). The rules grammar and the trace
 * format are in README.md next to this file.
 */
#ifndef TESTS_DISKFAULT_CTL_H
#define TESTS_DISKFAULT_CTL_H

#include <stdbool.h>
#include <sys/types.h>

/* Error codes of the df_ functions. */
enum {
    DF_OK = 0,
    DF_ESYS = 1,   /* a system call failed; errno says which */
    DF_EINVAL = 2, /* a bad argument */
};

/* One line of a trace file: SEQ OP RELPATH OFFSET LEN RESULT. */
struct df_trace_op
{
    unsigned long long seq; /* boundary number, from 1 in each process */
    char op[24];            /* write, fsync, ..., or power-loss */
    char path[512];         /* relative to the watched dir; "old->new" */
    unsigned long long off; /* offset (ftruncate: the new length) */
    unsigned long long len; /* length (syncs: the file size) */
    char result[32];        /* a count, -ENAME, crash or torn */
};

/**
 * The path of libdiskfault.so in this build.
 * @return a constant string
 */
const char *df_lib_path(void);

/**
 * Set the environment of a process about to exec under the shim:
 * LD_PRELOAD (the shim first), RAFTKV_DISKFAULT_DIR, _RULES and _TRACE, and
 * verify_asan_link_order=0 added to ASAN_OPTIONS (a sanitized program
 * otherwise refuses a preloaded library that comes before the ASan runtime).
 * @param dir    the watched directory (copied); NULL leaves it unset, so
 *               that the shim does nothing
 * @param rules  the rules file (copied), or NULL
 * @param trace  the trace file (copied), or NULL
 * @return DF_OK, or DF_ESYS when setenv failed
 */
int df_setenv(const char *dir, const char *rules, const char *trace);

/**
 * Replace the rules file atomically (a temporary file, then rename), so
 * that a reload never reads half of it.
 * @param path   the rules file (borrowed)
 * @param rules  its whole new text (borrowed), "" for no rules
 * @return DF_OK, or DF_ESYS
 */
int df_write_rules(const char *path, const char *rules);

/**
 * Ask the process to re-read its rules (SIGUSR1): it does at its next
 * intercepted call. Counters of "after N" restart.
 * @return DF_OK, or DF_ESYS when kill failed
 */
int df_reload(pid_t pid);

/**
 * Cut the process's power (SIGUSR2): what is not durable is undone on disk,
 * then the process dies by SIGKILL. Waiting for it is the caller's.
 * @return DF_OK, or DF_ESYS when kill failed
 */
int df_power_loss(pid_t pid);

/**
 * Count the lines of a trace with operation @op on a path containing
 * @pathmatch.
 * @param trace      the trace file (borrowed)
 * @param op         an operation name, or NULL or "*" for any
 * @param pathmatch  a substring of the relative path, or NULL or "*"
 * @return the count, or -1 when the file cannot be read (a missing file
 *         counts 0)
 */
long df_trace_count(const char *trace, const char *op, const char *pathmatch);

/**
 * The last line of a trace.
 * @param trace  the trace file (borrowed)
 * @param out    filled in
 * @return DF_OK, DF_ESYS when the file cannot be read, DF_EINVAL when it
 *         is empty or its last line is not a trace line
 */
int df_trace_last(const char *trace, struct df_trace_op *out);

/**
 * @return a static description of a DF_ code
 */
const char *df_strerror(int code);

#endif /* TESTS_DISKFAULT_CTL_H */
