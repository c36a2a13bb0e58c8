/* log.c: one-line log messages with a timestamp, to stderr or a handler. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rpc/rpc.h"

static rpc_log_cb log_cb;
static void *log_data;
static int log_level = RPC_LOG_INFO;
static char log_prefix[64];

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void rpc_log_set_handler(rpc_log_cb cb, void *data)
{
    log_cb = cb;
    log_data = data;
}

void rpc_log_set_level(int level)
{
    log_level = level;
}

void rpc_log_set_prefix(const char *prefix)
{
    snprintf(log_prefix, sizeof log_prefix, "%s", prefix ? prefix : "");
}

void rpc_logf(int level, const char *fmt, ...)
{
    if (level < log_level) {
        return;
    }
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (log_cb) {
        log_cb(level, line, log_data);
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int li = level < 0 ? 0 : level > 3 ? 3 : level;
    size_t plen = strlen(log_prefix);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s%s\n",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
            tm.tm_sec, ts.tv_nsec / 1000000, level_names[li],
            plen && strncmp(line, log_prefix, plen) != 0 ? log_prefix : "",
            line);
}
