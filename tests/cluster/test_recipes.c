/* test_recipes.c: locks with fencing tokens and elections (libclerk's
 * recipes and kvctl lock / elect) on a real 3-node cluster: mutual
 * exclusion with growing tokens, a holder whose lease ended has its
 * guarded write refused (also a kvctl lock paused with SIGSTOP), waiters
 * in line and their timeouts, and an election's campaign, proclaim,
 * resign and leader. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "clerk/clerk.h"
#include "cunit_main.h"
#include "harness.h"

static struct h_cluster rc; /* one cluster for every test */
static char eps[512];
static struct clerk *ck;

static int setup(void)
{
    if (h_cluster_start(&rc, 3, NULL) != 0 || h_find_leader(&rc, 10000) < 0) {
        return 1;
    }
    h_endpoints(&rc, eps, sizeof eps);
    struct clerk_options o = {.deadline_ms = 10000};
    return clerk_open(&ck, eps, &o) == CLERK_OK ? 0 : 1;
}

static int teardown(void)
{
    clerk_close(ck);
    rc.keep = CU_get_number_of_failures() > 0;
    return h_cluster_destroy(&rc) == 0 ? 0 : 1;
}

static struct clerk *open_handle(void)
{
    struct clerk *c = NULL;
    struct clerk_options o = {.deadline_ms = 10000};
    CU_ASSERT_FATAL(clerk_open(&c, eps, &o) == CLERK_OK);
    return c;
}

/* A lease kept alive in the background. */
struct kept
{
    uint64_t id;
    struct clerk_keepalive *ka;
};

static void keep(struct clerk *c, int64_t ttl, struct kept *k)
{
    CU_ASSERT_FATAL(clerk_lease_grant(c, ttl, 0, &k->id, NULL) == CLERK_OK);
    CU_ASSERT_FATAL(clerk_lease_keepalive_start(c, k->id, NULL, NULL, &k->ka) ==
                    CLERK_OK);
}

static void unkeep(struct clerk *c, struct kept *k)
{
    clerk_lease_keepalive_stop(k->ka);
    k->ka = NULL;
    clerk_lease_revoke(c, k->id, NULL, NULL);
}

/* A write guarded by the lock: 1 done, 0 refused (lock lost), -1 error. */
static int guarded_put(struct clerk *c,
                       const struct clerk_lock *l,
                       const char *key,
                       const char *value)
{
    struct clerk_txn *t = clerk_txn_new();
    clerk_txn_guard(t, l);
    clerk_txn_put(t, CLERK_TXN_THEN, key, strlen(key), value, strlen(value), 0);
    struct clerk_txn_result *r = NULL;
    int err = clerk_txn_commit(c, t, &r);
    clerk_txn_free(t);
    int rv = err ? -1 : r->succeeded ? 1 : 0;
    if (err) {
        fprintf(stderr, "\n  guarded put: %s: %s\n", clerk_error_code(err),
                clerk_errmsg(c));
    }
    clerk_txn_result_free(r);
    return rv;
}

/* ------------------------------------------------ mutual exclusion */

enum { WORKERS = 4, ROUNDS = 5 };

static struct
{
    pthread_mutex_t lock;
    int inside;   /* workers in the critical section now */
    int overlaps; /* times a worker found another inside */
    int refused;  /* guarded writes refused while holding */
    int errors;   /* calls that failed */
    uint64_t tokens[WORKERS * ROUNDS]; /* in the order taken */
    int n_tokens;
} mx = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, {0}, 0};

static void *worker(void *arg)
{
    (void)arg;
    struct clerk *c = open_handle();
    struct kept k;
    keep(c, 10, &k);
    for (int i = 0; i < ROUNDS; i++) {
        struct clerk_lock *l = NULL;
        int err = clerk_lock(c, "mx", 2, k.id, 60000, &l);
        if (err) {
            pthread_mutex_lock(&mx.lock);
            mx.errors++;
            pthread_mutex_unlock(&mx.lock);
            continue;
        }
        pthread_mutex_lock(&mx.lock);
        mx.overlaps += mx.inside > 0;
        mx.inside++;
        mx.tokens[mx.n_tokens++] = clerk_lock_token(l);
        pthread_mutex_unlock(&mx.lock);
        char v[32];
        snprintf(v, sizeof v, "%llu", (unsigned long long)clerk_lock_token(l));
        int g = guarded_put(c, l, "mx-data", v);
        usleep(2000);
        pthread_mutex_lock(&mx.lock);
        mx.inside--;
        mx.refused += g == 0;
        mx.errors += g < 0;
        pthread_mutex_unlock(&mx.lock);
        if (clerk_unlock(c, l) != CLERK_OK) {
            pthread_mutex_lock(&mx.lock);
            mx.errors++;
            pthread_mutex_unlock(&mx.lock);
        }
    }
    unkeep(c, &k);
    clerk_close(c);
    return NULL;
}

static void test_lock_excludes_and_its_tokens_grow(void)
{
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        pthread_create(&th[i], NULL, worker, NULL);
    }
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(th[i], NULL);
    }
    CU_ASSERT_EQUAL(mx.errors, 0);
    CU_ASSERT_EQUAL(mx.overlaps, 0);
    CU_ASSERT_EQUAL(mx.refused, 0);
    CU_ASSERT_EQUAL(mx.n_tokens, WORKERS * ROUNDS);
    for (int i = 1; i < mx.n_tokens; i++) {
        CU_ASSERT(mx.tokens[i] > mx.tokens[i - 1]);
    }
    /* The last guarded write is the last holder's. */
    void *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(clerk_get(ck, "mx-data", 7, &v, &len), CLERK_OK);
    char want[32];
    snprintf(want, sizeof want, "%llu",
             (unsigned long long)mx.tokens[mx.n_tokens - 1]);
    CU_ASSERT(v && len == strlen(want) && !memcmp(v, want, len));
    clerk_free(v);
}

/* ------------------------------------------------------- fencing */

static void test_holder_whose_lease_ended_is_fenced_off(void)
{
    struct clerk *a = open_handle();
    uint64_t la = 0;
    CU_ASSERT_FATAL(clerk_lease_grant(a, 2, 0, &la, NULL) == CLERK_OK);
    struct clerk_lock *al = NULL;
    CU_ASSERT_FATAL(clerk_lock(a, "fence", 5, la, 10000, &al) == CLERK_OK);
    CU_ASSERT_EQUAL(guarded_put(a, al, "fence-data", "a1"), 1);
    /* A is "paused": nobody renews its lease. B waits for the lock and
     * gets it once A's lease expires. */
    struct clerk *b = open_handle();
    struct kept kb;
    keep(b, 10, &kb);
    struct clerk_lock *bl = NULL;
    uint64_t t0 = h_now_ms();
    CU_ASSERT_EQUAL_FATAL(clerk_lock(b, "fence", 5, kb.id, 30000, &bl),
                          CLERK_OK);
    CU_ASSERT(h_now_ms() - t0 >= 1000); /* it had to wait for the expiry */
    CU_ASSERT(clerk_lock_token(bl) > clerk_lock_token(al));
    /* A wakes up and writes as if it still held the lock: refused. */
    CU_ASSERT_EQUAL(guarded_put(a, al, "fence-data", "a2"), 0);
    CU_ASSERT_EQUAL(clerk_lock_held(a, al), CLERK_NOT_HELD);
    CU_ASSERT_EQUAL(guarded_put(b, bl, "fence-data", "b1"), 1);
    void *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(clerk_get(ck, "fence-data", 10, &v, &len), CLERK_OK);
    CU_ASSERT(v && len == 2 && !memcmp(v, "b1", 2));
    clerk_free(v);
    clerk_unlock(a, al); /* a lost lock: nothing to delete */
    CU_ASSERT_EQUAL(clerk_unlock(b, bl), CLERK_OK);
    unkeep(b, &kb);
    clerk_close(a);
    clerk_close(b);
}

/* --------------------------------------------------- the line */

struct waiter
{
    struct clerk *c;
    struct kept k;
    struct clerk_lock *l;
    int err;
    uint64_t taken_ms;
};

static void *wait_for_lock(void *arg)
{
    struct waiter *w = arg;
    w->err = clerk_lock(w->c, "line", 4, w->k.id, 30000, &w->l);
    w->taken_ms = h_now_ms();
    return NULL;
}

/* Keys in line for "line". */
static uint64_t in_line(void)
{
    struct clerk_range_result *r = NULL;
    uint8_t end[16];
    size_t end_len = clerk_prefix_end("line/", 5, end);
    int err = clerk_range(ck, "line/", 5, end, end_len, 0,
                          CLERK_RANGE_COUNT_ONLY, &r);
    uint64_t n = err ? UINT64_MAX : r->count;
    clerk_range_result_free(r);
    return n;
}

static void test_waiters_take_turns_and_leave_the_line_on_timeout(void)
{
    struct kept kh;
    keep(ck, 10, &kh);
    struct clerk_lock *hl = NULL;
    CU_ASSERT_FATAL(clerk_lock(ck, "line", 4, kh.id, 10000, &hl) == CLERK_OK);
    /* A waiter that gives up leaves the line. */
    struct waiter quick = {.c = open_handle()};
    keep(quick.c, 10, &quick.k);
    uint64_t t0 = h_now_ms();
    CU_ASSERT_EQUAL(clerk_lock(quick.c, "line", 4, quick.k.id, 300, &quick.l),
                    CLERK_TIMEOUT);
    CU_ASSERT(h_now_ms() - t0 >= 300);
    CU_ASSERT_EQUAL(in_line(), 1);
    unkeep(quick.c, &quick.k);
    clerk_close(quick.c);

    /* Three waiters, in line one after another: each gets the lock in
     * turn, in the order they came. */
    enum { N = 3 };
    struct waiter w[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].c = open_handle();
        keep(w[i].c, 10, &w[i].k);
        pthread_create(&th[i], NULL, wait_for_lock, &w[i]);
        uint64_t end = h_now_ms() + 10000;
        while (in_line() != (uint64_t)i + 2 && h_now_ms() < end) {
            h_sleep_ms(10);
        }
    }
    CU_ASSERT_EQUAL(in_line(), N + 1);
    h_sleep_ms(200);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_PTR_NULL(w[i].l); /* all still waiting */
    }
    CU_ASSERT_EQUAL(clerk_unlock(ck, hl), CLERK_OK);
    for (int i = 0; i < N; i++) {
        /* Waiter i holds it; the others behind it still wait. */
        uint64_t end = h_now_ms() + 10000;
        while (!w[i].l && w[i].err == 0 && h_now_ms() < end) {
            h_sleep_ms(10);
        }
        CU_ASSERT_EQUAL(w[i].err, CLERK_OK);
        CU_ASSERT_PTR_NOT_NULL(w[i].l);
        for (int j = i + 1; j < N; j++) {
            CU_ASSERT_PTR_NULL(w[j].l);
        }
        h_sleep_ms(100);
        if (w[i].l) {
            CU_ASSERT_EQUAL(guarded_put(w[i].c, w[i].l, "line-data", "x"), 1);
            clerk_unlock(w[i].c, w[i].l);
        }
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        unkeep(w[i].c, &w[i].k);
        clerk_close(w[i].c);
    }
    CU_ASSERT_EQUAL(in_line(), 0);
    unkeep(ck, &kh);
}

/* ------------------------------------------------------- election */

struct candidate
{
    struct clerk *c;
    struct kept k;
    struct clerk_lock *l;
    int err;
};

static void *campaign(void *arg)
{
    struct candidate *cd = arg;
    cd->err =
        clerk_campaign(cd->c, "elect", 5, cd->k.id, "b", 1, 30000, &cd->l);
    return NULL;
}

static bool leader_is(const char *want)
{
    struct clerk_kv *kv = NULL;
    int err = clerk_election_leader(ck, "elect", 5, &kv);
    bool ok = want ? err == CLERK_OK && kv->value_len == strlen(want) &&
                         !memcmp(kv->value, want, kv->value_len)
                   : err == CLERK_NOT_FOUND;
    clerk_kv_free(kv);
    return ok;
}

static void test_election_campaign_proclaim_resign(void)
{
    CU_ASSERT(leader_is(NULL));
    struct candidate a = {.c = open_handle()};
    keep(a.c, 10, &a.k);
    CU_ASSERT_EQUAL_FATAL(
        clerk_campaign(a.c, "elect", 5, a.k.id, "a", 1, 10000, &a.l), CLERK_OK);
    CU_ASSERT(leader_is("a"));
    struct candidate b = {.c = open_handle()};
    keep(b.c, 10, &b.k);
    pthread_t th;
    pthread_create(&th, NULL, campaign, &b);
    h_sleep_ms(300);
    CU_ASSERT_PTR_NULL(b.l); /* a leads: b waits */
    CU_ASSERT_EQUAL(clerk_proclaim(a.c, a.l, "a2", 2), CLERK_OK);
    CU_ASSERT(leader_is("a2"));
    CU_ASSERT_EQUAL(clerk_resign(a.c, a.l), CLERK_OK);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(b.err, CLERK_OK);
    CU_ASSERT(leader_is("b"));
    /* b's lease ends: b no longer leads and cannot proclaim. */
    unkeep(b.c, &b.k);
    CU_ASSERT_EQUAL(clerk_proclaim(b.c, b.l, "b2", 2), CLERK_NOT_HELD);
    CU_ASSERT(leader_is(NULL));
    clerk_resign(b.c, b.l);
    unkeep(a.c, &a.k);
    clerk_close(a.c);
    clerk_close(b.c);
}

/* The application's own keys under the lock's name ("jobs/state" beside
 * the lock "jobs", as clerk.h's and docs/recipes.md's examples write) are
 * not in the line: the next holder does not wait for them, and an
 * election does not take one for its leader. (The next lock waited for
 * "jobs/state" until its timeout before.) */
static void test_other_keys_under_the_name_are_not_in_line(void)
{
    struct clerk *a = open_handle();
    struct kept ka;
    keep(a, 10, &ka);
    struct clerk_lock *al = NULL;
    CU_ASSERT_FATAL(clerk_lock(a, "jobs", 4, ka.id, 10000, &al) == CLERK_OK);
    CU_ASSERT_EQUAL(guarded_put(a, al, "jobs/state", "done"), 1);
    CU_ASSERT_EQUAL(clerk_unlock(a, al), CLERK_OK);
    struct clerk_lock *bl = NULL;
    CU_ASSERT_EQUAL(clerk_lock(a, "jobs", 4, ka.id, 3000, &bl), CLERK_OK);
    if (bl) {
        CU_ASSERT_EQUAL(clerk_unlock(a, bl), CLERK_OK);
    }
    /* An election beside a key of the application's. */
    CU_ASSERT_EQUAL(clerk_put(a, "elect2/notes", 12, "x", 1), CLERK_OK);
    struct clerk_kv *kv = NULL;
    CU_ASSERT_EQUAL(clerk_election_leader(a, "elect2", 6, &kv),
                    CLERK_NOT_FOUND);
    clerk_kv_free(kv);
    struct clerk_lock *el = NULL;
    CU_ASSERT_EQUAL_FATAL(
        clerk_campaign(a, "elect2", 6, ka.id, "me", 2, 3000, &el), CLERK_OK);
    kv = NULL;
    CU_ASSERT_EQUAL(clerk_election_leader(a, "elect2", 6, &kv), CLERK_OK);
    CU_ASSERT(kv && kv->value_len == 2 && !memcmp(kv->value, "me", 2));
    clerk_kv_free(kv);
    CU_ASSERT_EQUAL(clerk_resign(a, el), CLERK_OK);
    unkeep(a, &ka);
    clerk_close(a);
}

/* ---------------------------------------------------------- kvctl */

/* Run a shell command line; its output into out. */
static int sh(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_kvctl_lock_runs_a_command_with_the_token(void)
{
    char cmd[4096], out[1024];
    /* The command sees the key and the token, and its guarded write goes
     * through; kvctl exits with the command's status. */
    snprintf(cmd, sizeof cmd,
             "%s --cluster %s lock kv1 -- sh -c 'echo \"$RAFTKV_LOCK_KEY "
             "$RAFTKV_LOCK_TOKEN\"; printf \"create(\\\"%%s\\\") = "
             "\\\"%%s\\\"\\n\\nput kv1-data held\\n\\n\" \"$RAFTKV_LOCK_KEY\" "
             "\"$RAFTKV_LOCK_TOKEN\" | %s --cluster %s txn; exit 7' "
             "2>&1",
             KVCTL_BIN, eps, KVCTL_BIN, eps);
    int st = sh(cmd, out, sizeof out);
    CU_ASSERT_EQUAL(st, 7);
    unsigned long long token = 0;
    char key[128] = "";
    CU_ASSERT_EQUAL(sscanf(out, "%127s %llu", key, &token), 2);
    CU_ASSERT(strncmp(key, "kv1/", 4) == 0 && strlen(key) == 20);
    CU_ASSERT(token > 0);
    CU_ASSERT(strstr(out, "SUCCESS") != NULL);
    void *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(clerk_get(ck, "kv1-data", 8, &v, &len), CLERK_OK);
    CU_ASSERT(v && len == 4 && !memcmp(v, "held", 4));
    clerk_free(v);
    /* Released, and its lease revoked: nobody is in line. */
    uint8_t end[16];
    size_t end_len = clerk_prefix_end("kv1/", 4, end);
    struct clerk_range_result *r = NULL;
    CU_ASSERT_EQUAL(
        clerk_range(ck, "kv1/", 4, end, end_len, 0, CLERK_RANGE_COUNT_ONLY, &r),
        CLERK_OK);
    CU_ASSERT(r && r->count == 0);
    clerk_range_result_free(r);
    /* elect: the observer prints the leader's proposal. */
    struct candidate a = {.c = open_handle()};
    keep(a.c, 10, &a.k);
    CU_ASSERT_FATAL(clerk_campaign(a.c, "kv2", 3, a.k.id, "node-a", 6, 10000,
                                   &a.l) == CLERK_OK);
    snprintf(cmd, sizeof cmd,
             "timeout --preserve-status -s INT 1 %s --cluster %s elect kv2",
             KVCTL_BIN, eps);
    st = sh(cmd, out, sizeof out);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT_STRING_EQUAL(out, "node-a\n");
    clerk_resign(a.c, a.l);
    unkeep(a.c, &a.k);
    clerk_close(a.c);
}

/* Keys in line for a lock. */
static uint64_t line_of(const char *name)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s/", name);
    uint8_t end[64];
    size_t end_len = clerk_prefix_end(prefix, strlen(prefix), end);
    struct clerk_range_result *r = NULL;
    int err = clerk_range(ck, prefix, strlen(prefix), end, end_len, 0,
                          CLERK_RANGE_COUNT_ONLY, &r);
    uint64_t n = err ? UINT64_MAX : r->count;
    clerk_range_result_free(r);
    return n;
}

/* SIGINT to a kvctl started with fork(); its wait status. One that does
 * not exit within 5 s is killed, and the test fails with @why. */
static int interrupt(pid_t pid, const char *why)
{
    kill(pid, SIGINT);
    int st = 0;
    pid_t done = 0;
    uint64_t end = h_now_ms() + 5000;
    while ((done = waitpid(pid, &st, WNOHANG)) == 0 && h_now_ms() < end) {
        h_sleep_ms(20);
    }
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        CU_assertImplementation(CU_FALSE, __LINE__, why, __FILE__, "",
                                CU_FALSE);
    }
    return st;
}

/* Ctrl-C to a kvctl lock that waits in line: it leaves the line at once
 * and never runs its command. */
static void test_kvctl_lock_interrupted_while_waiting(void)
{
    struct kept kh;
    keep(ck, 10, &kh);
    struct clerk_lock *hl = NULL;
    CU_ASSERT_FATAL(clerk_lock(ck, "kv4", 3, kh.id, 10000, &hl) == CLERK_OK);
    char mark[512];
    snprintf(mark, sizeof mark, "%s/kv4-ran", rc.root);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        execl(KVCTL_BIN, KVCTL_BIN, "--cluster", eps, "lock", "kv4", "--",
              "touch", mark, (char *)NULL);
        _exit(127);
    }
    uint64_t end = h_now_ms() + 10000;
    while (line_of("kv4") != 2 && h_now_ms() < end) {
        h_sleep_ms(20);
    }
    CU_ASSERT_EQUAL(line_of("kv4"), 2);
    int st = interrupt(pid, "kvctl lock ignored SIGINT while waiting");
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 130);
    CU_ASSERT_EQUAL(line_of("kv4"), 1);
    CU_ASSERT_EQUAL(clerk_unlock(ck, hl), CLERK_OK);
    h_sleep_ms(300);
    struct stat sb;
    CU_ASSERT(stat(mark, &sb) != 0); /* the command never ran */
    unkeep(ck, &kh);
}

/* A kvctl lock whose process group is stopped (SIGSTOP) past its lease:
 * another client takes the lock, and when the paused command wakes up
 * its guarded write is refused. */
static void test_kvctl_lock_paused_past_its_lease_cannot_write(void)
{
    char script[512], out_path[512], mark[512];
    snprintf(mark, sizeof mark, "%s/lock-held", rc.root);
    snprintf(out_path, sizeof out_path, "%s/lock-out", rc.root);
    snprintf(script, sizeof script, "%s/lock-cmd.sh", rc.root);
    FILE *f = fopen(script, "w");
    CU_ASSERT_FATAL(f != NULL);
    /* Mark the lock as held, sleep (paused meanwhile), then write under
     * the token. */
    fprintf(f,
            "touch %s\nsleep 3\n"
            "printf 'create(\"%%s\") = \"%%s\"\\n\\nput kv3-data paused\\n\\n' "
            "\"$RAFTKV_LOCK_KEY\" \"$RAFTKV_LOCK_TOKEN\" | %s --cluster %s "
            "txn > %s 2>&1\n",
            mark, KVCTL_BIN, eps, out_path);
    fclose(f);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        execl(KVCTL_BIN, KVCTL_BIN, "--cluster", eps, "lock", "kv3", "--ttl",
              "2", "--", "sh", script, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    uint64_t end = h_now_ms() + 10000;
    struct stat sb;
    while (stat(mark, &sb) != 0 && h_now_ms() < end) {
        h_sleep_ms(10);
    }
    CU_ASSERT_FATAL(stat(mark, &sb) == 0);
    kill(-pid, SIGSTOP); /* kvctl, its keep-alive and the command */
    struct kept kb;
    keep(ck, 10, &kb);
    struct clerk_lock *bl = NULL;
    CU_ASSERT_EQUAL_FATAL(clerk_lock(ck, "kv3", 3, kb.id, 30000, &bl),
                          CLERK_OK);
    CU_ASSERT_EQUAL(guarded_put(ck, bl, "kv3-data", "new holder"), 1);
    kill(-pid, SIGCONT);
    int st = 0;
    end = h_now_ms() + 20000;
    pid_t done = 0;
    while ((done = waitpid(pid, &st, WNOHANG)) == 0 && h_now_ms() < end) {
        h_sleep_ms(20);
    }
    if (!done) {
        kill(-pid, SIGKILL);
        waitpid(pid, &st, 0);
        CU_FAIL("kvctl lock did not exit");
    }
    /* It says the lock was lost (or its command was stopped for it), and
     * whatever the paused command did, it did not write. */
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) != 0);
    void *v = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(clerk_get(ck, "kv3-data", 8, &v, &len), CLERK_OK);
    CU_ASSERT(v && len == 10 && !memcmp(v, "new holder", 10));
    clerk_free(v);
    clerk_unlock(ck, bl);
    unkeep(ck, &kb);
    unlink(script);
    unlink(mark);
    unlink(out_path);
}

/* The leader's proposal in the election NAME ("" when nobody leads). */
static void leader_of(const char *name, char *out, size_t cap)
{
    struct clerk_kv *kv = NULL;
    out[0] = 0;
    if (clerk_election_leader(ck, name, strlen(name), &kv) == CLERK_OK) {
        snprintf(out, cap, "%.*s", (int)kv->value_len, (char *)kv->value);
        clerk_kv_free(kv);
    }
}

/* kvctl elect NAME PROPOSAL campaigns, prints its key and proposal once
 * it leads, and resigns when interrupted (exit 0): nobody leads then. */
static void test_kvctl_elect_campaigns_and_resigns_on_interrupt(void)
{
    char path[512], cmd[2048], who[64];
    snprintf(path, sizeof path, "%s/kvctl-elect.out", rc.root);
    snprintf(cmd, sizeof cmd, "exec %s --cluster %s elect kv9 prop-a > %s",
             KVCTL_BIN, eps, path);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    /* Its proposal leads in the cluster as soon as its key is written,
     * a moment before kvctl itself has read that it leads: wait for what
     * it prints then. SIGINT before that is an interrupted campaign
     * (exit 130), which test_kvctl_lock_interrupted_while_waiting covers. */
    char out[256] = "", key[128] = "", prop[64] = "";
    uint64_t end = h_now_ms() + 10000;
    do {
        h_sleep_ms(50);
        leader_of("kv9", who, sizeof who);
        out[0] = 0;
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(out, 1, sizeof out - 1, f);
            out[n] = 0;
            fclose(f);
        }
    } while ((strcmp(who, "prop-a") != 0 || !strstr(out, "\nprop-a\n")) &&
             h_now_ms() < end);
    CU_ASSERT_STRING_EQUAL(who, "prop-a");
    int st = interrupt(pid, "kvctl elect ignored SIGINT");
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    leader_of("kv9", who, sizeof who);
    CU_ASSERT_STRING_EQUAL(who, ""); /* resigned, not left to its lease */
    CU_ASSERT_EQUAL(sscanf(out, "%127s %63s", key, prop), 2);
    CU_ASSERT(strncmp(key, "kv9/", 4) == 0 && strlen(key) == 20);
    CU_ASSERT_STRING_EQUAL(prop, "prop-a");
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_lock_excludes_and_its_tokens_grow",
         test_lock_excludes_and_its_tokens_grow},
        {"test_holder_whose_lease_ended_is_fenced_off",
         test_holder_whose_lease_ended_is_fenced_off},
        {"test_waiters_take_turns_and_leave_the_line_on_timeout",
         test_waiters_take_turns_and_leave_the_line_on_timeout},
        {"test_other_keys_under_the_name_are_not_in_line",
         test_other_keys_under_the_name_are_not_in_line},
        {"test_election_campaign_proclaim_resign",
         test_election_campaign_proclaim_resign},
        {"test_kvctl_lock_runs_a_command_with_the_token",
         test_kvctl_lock_runs_a_command_with_the_token},
        {"test_kvctl_lock_interrupted_while_waiting",
         test_kvctl_lock_interrupted_while_waiting},
        {"test_kvctl_lock_paused_past_its_lease_cannot_write",
         test_kvctl_lock_paused_past_its_lease_cannot_write},
        {"test_kvctl_elect_campaigns_and_resigns_on_interrupt",
         test_kvctl_elect_campaigns_and_resigns_on_interrupt},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"recipes", setup, teardown, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
