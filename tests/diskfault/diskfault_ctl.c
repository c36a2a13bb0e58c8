/* diskfault_ctl.c: rules files, signals and trace counts for diskfault tests.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diskfault_ctl.h"

#ifndef DISKFAULT_LIB
#error "build with -DDISKFAULT_LIB=\"<path of libdiskfault.so>\""
#endif

const char *df_lib_path(void)
{
    return DISKFAULT_LIB;
}

static int set_or_unset(const char *name, const char *value)
{
    int rc = value ? setenv(name, value, 1) : unsetenv(name);
    return rc ? DF_ESYS : DF_OK;
}

int df_setenv(const char *dir, const char *rules, const char *trace)
{
    char buf[8192];
    const char *pre = getenv("LD_PRELOAD");
    snprintf(buf, sizeof buf, "%s%s%s", DISKFAULT_LIB, pre && *pre ? ":" : "",
             pre && *pre ? pre : "");
    const char *asan = getenv("ASAN_OPTIONS");
    char asan_buf[4096];
    snprintf(asan_buf, sizeof asan_buf, "%s%sverify_asan_link_order=0",
             asan && *asan ? asan : "", asan && *asan ? ":" : "");
    if (setenv("LD_PRELOAD", buf, 1) || setenv("ASAN_OPTIONS", asan_buf, 1) ||
        set_or_unset("RAFTKV_DISKFAULT_DIR", dir) ||
        set_or_unset("RAFTKV_DISKFAULT_RULES", rules) ||
        set_or_unset("RAFTKV_DISKFAULT_TRACE", trace)) {
        return DF_ESYS;
    }
    return DF_OK;
}

int df_write_rules(const char *path, const char *rules)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >=
        (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return DF_ESYS;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return DF_ESYS;
    }
    int err;
    size_t len = strlen(rules), done = 0;
    while (done < len) {
        ssize_t k = write(fd, rules + done, len - done);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            err = k < 0 ? errno : EIO;
            goto err_close;
        }
        done += (size_t)k;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        err = errno;
        goto err_unlink;
    }
    return DF_OK;

err_close:
    close(fd);
err_unlink:
    unlink(tmp);
    errno = err;
    return DF_ESYS;
}

int df_reload(pid_t pid)
{
    return kill(pid, SIGUSR1) ? DF_ESYS : DF_OK;
}

int df_power_loss(pid_t pid)
{
    return kill(pid, SIGUSR2) ? DF_ESYS : DF_OK;
}

/* Split one trace line; false when it is not one. */
static bool parse_line(const char *line, struct df_trace_op *o)
{
    char op[sizeof o->op], path[sizeof o->path], result[sizeof o->result];
    int n = sscanf(line, "%llu %23s %511s %llu %llu %31s", &o->seq, op, path,
                   &o->off, &o->len, result);
    if (n != 6) {
        return false;
    }
    memcpy(o->op, op, sizeof op);
    memcpy(o->path, path, sizeof path);
    memcpy(o->result, result, sizeof result);
    return true;
}

long df_trace_count(const char *trace, const char *op, const char *pathmatch)
{
    FILE *fp = fopen(trace, "r");
    if (!fp) {
        return errno == ENOENT ? 0 : -1;
    }
    bool any_op = !op || !strcmp(op, "*");
    bool any_path = !pathmatch || !strcmp(pathmatch, "*");
    long count = 0;
    char line[1200];
    struct df_trace_op o;
    while (fgets(line, sizeof line, fp)) {
        if (parse_line(line, &o) && (any_op || !strcmp(o.op, op)) &&
            (any_path || strstr(o.path, pathmatch))) {
            count++;
        }
    }
    fclose(fp);
    return count;
}

int df_trace_last(const char *trace, struct df_trace_op *out)
{
    FILE *fp = fopen(trace, "r");
    if (!fp) {
        return DF_ESYS;
    }
    char line[1200], last[1200] = "";
    while (fgets(line, sizeof line, fp)) {
        memcpy(last, line, sizeof last);
    }
    fclose(fp);
    return parse_line(last, out) ? DF_OK : DF_EINVAL;
}

const char *df_strerror(int code)
{
    switch (code) {
        case DF_OK:
            return "success";
        case DF_ESYS:
            return "system call failed (see errno)";
        case DF_EINVAL:
            return "invalid argument or trace line";
    }
    return "unknown error";
}
