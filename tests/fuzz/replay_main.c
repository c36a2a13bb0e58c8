/* replay_main.c: runs a libFuzzer target on saved inputs, without libFuzzer.
 *
 *   fuzz_<target>_replay DIR_OR_FILE...
 *
 * Linked with a target's source, it calls LLVMFuzzerInitialize (when the
 * target has one) and then LLVMFuzzerTestOneInput once on every regular file
 * named or found (not recursively, in name order) in each directory named.
 * A crash or a sanitizer report ends the process with a non-zero status and
 * the name of the input that caused it on stderr. So does an argument that
 * is missing or that yields no input: a corpus that is not there must not
 * pass for one that replays cleanly. It is how the build replays the
 * checked-in corpus in every configuration, gcc and sanitizers included. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));
void __sanitizer_set_death_callback(void (*callback)(void))
    __attribute__((weak));

/* The input being run, named when the process dies on it. */
static char current[4096];

static void write_str(const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) {
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Async-signal-safe: only write(2) on a buffer filled before the input. */
static void name_current(void)
{
    if (current[0]) {
        write_str("replay: died on input ");
        write_str(current);
        write_str("\n");
    }
}

static void on_fatal_signal(int sig)
{
    name_current();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Name the input on a crash: through the sanitizers' death callback when
 * they are linked in (they handle the signals themselves), else through
 * handlers that restore the default action and raise again. */
static void catch_deaths(void)
{
    if (__sanitizer_set_death_callback) {
        __sanitizer_set_death_callback(name_current);
    }
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
            signal(sigs[i], on_fatal_signal);
        }
    }
}

/* Read a whole file into a buffer of exactly its size, as libFuzzer hands
 * inputs over, so that reads past the end are caught. Returns 0 or -1. */
static int read_file(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        goto err_close;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fprintf(stderr, "replay: %s: out of memory for %zu bytes\n", path, n);
        goto err_close;
    }
    if (n && fread(buf, 1, n, f) != n) {
        fprintf(stderr, "replay: %s: short read\n", path);
        goto err_free_buf;
    }
    fclose(f);
    *data = buf;
    *size = n;
    return 0;

err_free_buf:
    free(buf);
err_close:
    fclose(f);
    return -1;
}

/* Run the target on one file. Returns 0, or -1 when it cannot be read. */
static int run_file(const char *path)
{
    uint8_t *data;
    size_t size;
    if (read_file(path, &data, &size) != 0) {
        return -1;
    }
    snprintf(current, sizeof current, "%s", path);
    LLVMFuzzerTestOneInput(data, size);
    current[0] = '\0';
    free(data);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Run the target on the regular files of a directory. Returns how many it
 * ran, or -1 on a file or directory that cannot be read. */
static long run_dir(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, by_name);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    long ran = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        int len = snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        if (ran >= 0 && names[i]->d_name[0] != '.' && len > 0 &&
            (size_t)len < sizeof path && stat(path, &st) == 0 &&
            S_ISREG(st.st_mode)) {
            ran = run_file(path) == 0 ? ran + 1 : -1;
        }
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    catch_deaths();
    if (LLVMFuzzerInitialize) {
        LLVMFuzzerInitialize(&argc, &argv);
    }
    long total = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        long ran = S_ISDIR(st.st_mode) ? run_dir(argv[i])
                                       : (run_file(argv[i]) == 0 ? 1 : -1);
        if (ran < 0) {
            return 1;
        }
        if (ran == 0) {
            fprintf(stderr, "replay: %s: no inputs\n", argv[i]);
            return 1;
        }
        printf("replay: %s: %ld inputs\n", argv[i], ran);
        total += ran;
    }
    printf("replay: ran %ld inputs, no crash\n", total);
    return 0;
}
