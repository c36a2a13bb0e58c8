/* lincheck_main.c: the lincheck command: check a JSON-lines KV history. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lincheck.h"

#define EXIT_NOT_LINEARIZABLE 1
#define EXIT_USAGE            2
#define EXIT_UNKNOWN          3

static void usage(FILE *f)
{
    fputs(
        "usage: lincheck [--budget SECONDS] [--quiet] FILE|-\n"
        "Check that a history of KV operations (JSON lines, see\n"
        "tests/lincheck/README.md; - reads stdin) is linearizable.\n"
        "  --budget SECONDS  give up after this long (default 60; 0 = no "
        "limit)\n"
        "  --quiet           print nothing when the history is "
        "linearizable\n"
        "  --help            this text\n"
        "Exit status: 0 linearizable, 1 not linearizable, 2 bad usage or "
        "input,\n"
        "3 unknown (the budget ran out).\n",
        f);
}

static int usage_error(const char *fmt, const char *arg)
{
    fputs("lincheck: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs(" (try --help)\n", stderr);
    return EXIT_USAGE;
}

static bool parse_budget(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0) {
        return false;
    }
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    double budget = 60;
    bool quiet = false;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            quiet = true;
        } else if (strcmp(a, "--budget") == 0) {
            if (i + 1 == argc) {
                return usage_error("%s needs a number of seconds", a);
            }
            if (!parse_budget(argv[++i], &budget)) {
                return usage_error("bad --budget \"%s\"", argv[i]);
            }
        } else if (strncmp(a, "--budget=", 9) == 0) {
            if (!parse_budget(a + 9, &budget)) {
                return usage_error("bad --budget \"%s\"", a + 9);
            }
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_error("unknown option %s", a);
        } else if (path) {
            return usage_error("one history file only (extra \"%s\")", a);
        } else {
            path = a;
        }
    }
    if (!path) {
        return usage_error("%s", "no history file given");
    }

    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "lincheck: %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    struct lc_history *h = lc_history_new();
    if (!h) {
        fprintf(stderr, "lincheck: out of memory\n");
        return EXIT_USAGE;
    }
    char err[256];
    int rv = lc_history_read(h, f, err, sizeof err);
    if (f != stdin) {
        fclose(f);
    }
    if (rv != 0) {
        fprintf(stderr, "lincheck: %s: %s\n",
                strcmp(path, "-") ? path : "stdin", err);
        lc_history_free(h);
        return EXIT_USAGE;
    }

    struct lc_result res;
    int status;
    switch (lc_check(h, budget, &res)) {
        case LC_LINEARIZABLE:
            if (!quiet) {
                printf("linearizable: %zu operations, %zu keys\n", res.ops,
                       res.keys);
            }
            status = 0;
            break;
        case LC_NOT_LINEARIZABLE:
            printf("NOT linearizable: %s\n", res.detail);
            status = EXIT_NOT_LINEARIZABLE;
            break;
        default:
            if (res.timed_out) {
                printf(
                    "unknown: time budget of %g s ran out after %zu of %zu "
                    "keys; %s\n",
                    budget, res.keys_done, res.keys, res.detail);
            } else {
                printf(
                    "unknown: the search gave up after %zu of %zu keys; %s\n",
                    res.keys_done, res.keys, res.detail);
            }
            status = EXIT_UNKNOWN;
            break;
    }
    lc_history_free(h);
    if (fflush(stdout) != 0) {
        return EXIT_USAGE;
    }
    return status;
}
