/* test_config.c: kvserver's options from the command line, the environment
 * and a YAML config file: precedence, every option from every source, and
 * a clear refusal (naming the file and line, or the variable) of what is
 * wrong. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "config.h"
#include "cunit_main.h"
#include "rpc/rpc.h"

static char dir[64];
static char path[128]; /* the config file of the test */

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/raftkv-test-config-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/kvserver.conf", dir);
}

static void remove_dir(void)
{
    cunit_remove_tree(dir);
}

/* Write the config file. */
static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

#define MAX_ARGS 32

/* Load a config from a command line (NULL-terminated strings) and an
 * environment (NULL-terminated "NAME=value" strings). */
static int load(struct kv_config *cfg,
                const char *const *args,
                const char *const *env)
{
    char *argv[MAX_ARGS + 2] = {"kvserver"};
    int argc = 1;
    for (size_t i = 0; args && args[i] && argc <= MAX_ARGS; i++) {
        argv[argc++] = (char *)args[i];
    }
    char *envp[MAX_ARGS + 1] = {NULL};
    for (size_t i = 0; env && env[i] && i < MAX_ARGS; i++) {
        envp[i] = (char *)env[i];
    }
    return kv_config_load(cfg, argc, argv, envp);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NO_ENV    ((const char *const[]){NULL})

/* The load fails with a usage error whose message holds every string
 * given. */
static void refused(const char *const *args, const char *const *env, ...)
{
    struct kv_config cfg;
    int rv = load(&cfg, args, env);
    CU_ASSERT_EQUAL(rv, KV_CONFIG_EUSAGE);
    va_list ap;
    va_start(ap, env);
    for (const char *want; (want = va_arg(ap, const char *));) {
        if (!strstr(cfg.errmsg, want)) {
            fprintf(stderr, "\n  message '%s' lacks '%s'\n", cfg.errmsg, want);
            CU_FAIL("the refusal does not say what and where");
        }
    }
    va_end(ap);
    kv_config_free(&cfg);
}

/* A node that joins names its own addresses alone (--advertise,
 * --peer-advertise); a node's --advertise must match its --cluster entry;
 * --listen binds apart from them. */
static void test_config_advertise_and_listen(void)
{
    struct kv_config cfg;
    int rv = load(&cfg,
                  ARGS("--id", "4", "--join", "--advertise",
                       "node4.example:7001", "--data-dir", "/d",
                       "--peer-secret-file", "/s", "--listen", "0.0.0.0:7001"),
                  NO_ENV);
    CU_ASSERT_EQUAL_FATAL(rv, KV_CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.node.n_nodes, 1);
    CU_ASSERT_EQUAL(cfg.node.ids[0], 4);
    CU_ASSERT_STRING_EQUAL(cfg.node.hosts[0], "node4.example");
    CU_ASSERT_EQUAL(cfg.node.ports[0], 7001);
    CU_ASSERT_STRING_EQUAL(cfg.node.peer_hosts[0], "node4.example");
    CU_ASSERT_EQUAL(cfg.node.peer_ports[0], 7002);
    CU_ASSERT_STRING_EQUAL(cfg.node.listen_host, "0.0.0.0");
    CU_ASSERT_EQUAL(cfg.node.listen_port, 7001);
    CU_ASSERT(cfg.node.join);
    kv_config_free(&cfg);
    rv = load(
        &cfg,
        ARGS("--id", "4", "--join", "--advertise", "10.0.0.4:7001",
             "--peer-advertise", "10.9.0.4:9000", "--cluster",
             "1=10.0.0.1:7001", "--data-dir", "/d", "--peer-secret-file", "/s"),
        NO_ENV);
    CU_ASSERT_EQUAL_FATAL(rv, KV_CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.node.n_nodes, 2); /* its own entry added */
    CU_ASSERT_EQUAL(cfg.node.ids[1], 4);
    CU_ASSERT_STRING_EQUAL(cfg.node.peer_hosts[1], "10.9.0.4");
    CU_ASSERT_EQUAL(cfg.node.peer_ports[1], 9000);
    kv_config_free(&cfg);
    refused(ARGS("--id", "1", "--cluster", "1=10.0.0.1:7001", "--advertise",
                 "10.0.0.9:7001", "--data-dir", "/d"),
            NO_ENV, "--advertise", "differs", NULL);
    refused(
        ARGS("--id", "1", "--advertise", "10.0.0.1:7001", "--data-dir", "/d"),
        NO_ENV, "cluster", NULL); /* only a node that joins */
    refused(
        ARGS("--id", "4", "--join", "--advertise", "h:1", "--data-dir", "/d"),
        NO_ENV, "--peer-secret-file", NULL);
}

static void test_config_precedence_is_command_line_env_file_default(void)
{
    make_dir();
    write_file(
        "# a node\n"
        "id: 1\n"
        "cluster: 1=127.0.0.1:7001\n"
        "data-dir: /from/file\n"
        "heartbeat-ms: 50\n"
        "election-ms: 1000\n"
        "request-timeout-ms: 4000\n");
    char config[160];
    snprintf(config, sizeof config, "--config=%s", path);
    struct kv_config cfg;
    int rv = load(&cfg, ARGS(config, "--request-timeout-ms", "6000"),
                  ARGS("RAFTKV_SERVER_ELECTION_MS=2000",
                       "RAFTKV_SERVER_REQUEST_TIMEOUT_MS=5000"));
    CU_ASSERT_EQUAL_FATAL(rv, KV_CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.node.id, 1);
    CU_ASSERT_STRING_EQUAL(cfg.node.data_dir, "/from/file"); /* file */
    CU_ASSERT_EQUAL(cfg.node.heartbeat_ms, 50);              /* file */
    CU_ASSERT_EQUAL(cfg.node.election_ms, 2000);             /* env */
    CU_ASSERT_EQUAL(cfg.node.request_timeout_ms, 6000);      /* cli */
    CU_ASSERT_EQUAL(cfg.node.snapshot_entries, 10000);       /* default */
    CU_ASSERT_EQUAL(cfg.node.lease_min_ttl_s, 6);            /* 3 x 2000 ms */
    CU_ASSERT_EQUAL(cfg.node.peer_ports[0], 7002);
    kv_config_free(&cfg);
    remove_dir();
}

static void test_config_file_lists_sequences_and_switches(void)
{
    make_dir();
    write_file(
        "id: 2\n"
        "cluster:\n"
        "  - 1=10.0.0.1:7001\n"
        "  - 2=10.0.0.2:7001\n"
        "  - \"3=[::1]:7001\"\n"
        "peers: [1=10.0.0.1:8001, 2=10.0.0.2:8001, 3=10.0.0.3:8001]\n"
        "data-dir: '/var/lib/raft kv'\n"
        "peer-secret-file: /etc/raftkv/peer.secret\n"
        "quota-bytes: 1GiB\n"
        "wal-segment-mb: 16\n"
        "log-level: warn\n"
        "enable-fault-injection: true\n"
        "peer-tls-cert: /etc/raftkv/node.crt\n"
        "peer-tls-key: /etc/raftkv/node.key\n"
        "peer-tls-ca: /etc/raftkv/ca.crt\n"
        "peer-tls-allowed-names:\n"
        "  - node1\n"
        "  - node2\n");
    struct kv_config cfg;
    /* A switch goes off from the command line with =false. */
    int rv = load(
        &cfg, ARGS("--config", path, "--enable-fault-injection=false"), NO_ENV);
    CU_ASSERT_EQUAL_FATAL(rv, KV_CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.node.n_nodes, 3);
    CU_ASSERT_STRING_EQUAL(cfg.node.hosts[2], "::1");
    CU_ASSERT_EQUAL(cfg.node.peer_ports[2], 8001);
    CU_ASSERT_STRING_EQUAL(cfg.node.peer_listen_host, "10.0.0.2");
    CU_ASSERT_STRING_EQUAL(cfg.node.data_dir, "/var/lib/raft kv");
    CU_ASSERT_EQUAL(cfg.node.quota_bytes, 1ull << 30);
    CU_ASSERT_EQUAL(cfg.node.wal_segment_bytes, 16u << 20);
    CU_ASSERT_EQUAL(cfg.log_level, RPC_LOG_WARN);
    CU_ASSERT_FALSE(cfg.node.fault_injection);
    CU_ASSERT_STRING_EQUAL(cfg.node.peer_tls.allowed_names, "node1,node2");
    kv_config_free(&cfg);
    /* And on from the environment, which the file's false does not undo. */
    write_file(
        "id: 1\ncluster: 1=127.0.0.1:7001\ndata-dir: /d\n"
        "enable-fault-injection: false\n");
    rv = load(&cfg, ARGS("--config", path),
              ARGS("RAFTKV_SERVER_ENABLE_FAULT_INJECTION=true"));
    CU_ASSERT_EQUAL_FATAL(rv, KV_CONFIG_OK);
    CU_ASSERT_TRUE(cfg.node.fault_injection);
    kv_config_free(&cfg);
    remove_dir();
}

/* The file can come from RAFTKV_SERVER_CONFIG; --config wins over it. */
static void test_config_file_named_by_the_environment(void)
{
    make_dir();
    write_file("id: 1\ncluster: 1=127.0.0.1:7001\ndata-dir: /d\n");
    char var[200];
    snprintf(var, sizeof var, "RAFTKV_SERVER_CONFIG=%s", path);
    struct kv_config cfg;
    CU_ASSERT_EQUAL(load(&cfg, NULL, ARGS(var)), KV_CONFIG_OK);
    CU_ASSERT_STRING_EQUAL(cfg.node.data_dir, "/d");
    CU_ASSERT_STRING_EQUAL(cfg.file, path);
    kv_config_free(&cfg);
    refused(ARGS("--config", "/nonexistent/kvserver.conf"), ARGS(var),
            "/nonexistent/kvserver.conf (--config)", "No such file", NULL);
    refused(NULL, ARGS("RAFTKV_SERVER_CONFIG=/nonexistent/k.conf"),
            "/nonexistent/k.conf (RAFTKV_SERVER_CONFIG)", NULL);
    remove_dir();
}

/* The client's variables (RAFTKV_CLUSTER is an endpoint list for kvctl)
 * and cluster.sh's RAFTKV_SERVER_FLAGS are not the node's; an empty
 * variable is unset. */
static void test_config_env_ignores_client_variables(void)
{
    struct kv_config cfg;
    int rv = load(
        &cfg,
        ARGS("--id", "1", "--cluster", "1=127.0.0.1:7001", "--data-dir", "/d"),
        ARGS("RAFTKV_CLUSTER=127.0.0.9:1,127.0.0.9:2",
             "RAFTKV_CACERT=/nonexistent", "RAFTKV_PORT=x",
             "RAFTKV_SERVER_FLAGS=--bogus",
             "RAFTKV_SERVER_METRICS_ADDR=", "RAFTKV_SERVER_PEERS=", "OTHER=1"));
    CU_ASSERT_EQUAL_FATAL(rv, KV_CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.node.n_nodes, 1);
    CU_ASSERT_STRING_EQUAL(cfg.node.hosts[0], "127.0.0.1");
    CU_ASSERT_PTR_NULL(cfg.node.metrics_addr);
    CU_ASSERT_PTR_NULL(cfg.node.tls.ca_file);
    kv_config_free(&cfg);
}

static void test_config_file_errors_name_the_file_and_line(void)
{
    make_dir();
    char config[160];
    snprintf(config, sizeof config, "--config=%s", path);
    char at2[160], at3[160];
    snprintf(at2, sizeof at2, "%s:2:", path);
    snprintf(at3, sizeof at3, "%s:3:", path);
    struct
    {
        const char *file;
        const char *where;
        const char *says;
    } cases[] = {
        {"id: 1\nfoo: bar\n", at2, "unknown key 'foo'"},
        {"id: 1\ndata_dir: /d\n", at2, "did you mean data-dir?"},
        {"id: 1\nelection-ms: soon\n", at2,
         "election-ms wants a whole number from 2 to 600000, not 'soon'"},
        {"id: 1\nheartbeat-ms: 70000\n", at2, "heartbeat-ms wants"},
        {"id: 1\nquota-bytes: 8 GB\n", at2, "quota-bytes wants a number"},
        {"id: 1\nlog-level: loud\n", at2, "log-level wants debug"},
        {"id: 1\ntls-client-auth: maybe\n", at2, "wants true or false"},
        {"id: 1\nmetrics-addr: nowhere\n", at2, "metrics-addr wants HOST:PORT"},
        {"id: 1\n\nid: 2\n", at3, "id is given twice (first on line 1)"},
        {"id: 1\npeer-secret: 0123456789abcdef\n", at2,
         "name the file that holds it with peer-secret-file"},
        {"id: 1\nrestore: /backup\n", at2, "--restore is for the command line"},
        {"id: 1\nconfig: /other.conf\n", at2, "--config is for the command"},
        {"id: 1\nheartbeat-ms: [1, 2]\n", at2, "takes one value, not a list"},
        {"id: 1\ncluster:\n  a: 1\n", at3, "cluster wants a value or a list"},
        {"id: 1\ndata-dir:\n", at2, "data-dir has no value"},
        {"id: 1\ndata-dir: &d /d\nelection-ms: *d\n", at3, "aliases"},
        {"id: 1\n---\nid: 2\n", at2, "a second YAML document"},
        {"id: 1\ndata-dir: \"/d\n", at3, "YAML: found unexpected end"},
        {"- id: 1\n", ":1:", "not a name: value line"},
        {"id: 1\ncluster: 1=127.0.0.1:7001,1=127.0.0.2:7001\ndata-dir: /d\n",
         at2, "cluster names node 1 twice"},
        {"id: 7\ncluster: 1=127.0.0.1:7001\ndata-dir: /d\n", ":1: id",
         "id 7 is not in --cluster"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(cases[i].file);
        refused(ARGS(config), NO_ENV, cases[i].where, cases[i].says, NULL);
    }
    /* Not a file at all. */
    refused(ARGS("--config", dir), NO_ENV, dir, "not a regular file", NULL);
    remove_dir();
}

static void test_config_env_and_command_line_errors_name_the_source(void)
{
    const char *const base[] = {
        "--id", "1", "--cluster", "1=127.0.0.1:7001", "--data-dir", "/d", NULL};
    refused(base, ARGS("RAFTKV_SERVER_ELECTION_MS=soon"),
            "RAFTKV_SERVER_ELECTION_MS wants a whole number", NULL);
    refused(base, ARGS("RAFTKV_SERVER_ELECTON_MS=700"),
            "RAFTKV_SERVER_ELECTON_MS in the environment", "no option", NULL);
    refused(base, ARGS("RAFTKV_SERVER_data_dir=/x"),
            "RAFTKV_SERVER_data_dir in the environment", NULL);
    refused(base, ARGS("RAFTKV_SERVER_RESTORE=/backup"),
            "RAFTKV_SERVER_RESTORE in the environment",
            "--restore is for the command line", NULL);
    refused(base, ARGS("RAFTKV_SERVER_PEER_SECRET=0123456789abcdef"),
            "RAFTKV_SERVER_PEER_SECRET", "peer-secret-file", NULL);
    refused(ARGS("--id", "1", "--bogus"), NO_ENV, "unknown option --bogus",
            NULL);
    refused(ARGS("--id"), NO_ENV, "option --id needs a value", NULL);
    refused(ARGS("--id", "1", "stray"), NO_ENV, "unexpected argument 'stray'",
            NULL);
    refused(ARGS("--id", "0"), NO_ENV, "--id wants a whole number from 1",
            NULL);
    refused(ARGS("--cluster", "1=127.0.0.1:7001", "--data-dir", "/d"), NO_ENV,
            "--id is required", "RAFTKV_SERVER_ID", "id: in the config file",
            NULL);
    refused(ARGS("--id", "1", "--data-dir", "/d"), NO_ENV,
            "--cluster is required", NULL);
    refused(ARGS("--id", "1", "--cluster", "1=127.0.0.1:7001"), NO_ENV,
            "--data-dir is required", NULL);
    refused(
        ARGS("--id", "1", "--cluster", "1=127.0.0.1:70000", "--data-dir", "/d"),
        NO_ENV, "--cluster wants a port from 1 to 65535", NULL);
    refused(ARGS("--id", "1", "--cluster", "1=127.0.0.1:1,2=127.0.0.1:3",
                 "--data-dir", "/d"),
            NO_ENV, "needs --peer-secret-file", NULL);
}

/* --help and --version answer whatever else is wrong. */
static void test_config_help_and_version_stop_at_once(void)
{
    struct kv_config cfg;
    CU_ASSERT_EQUAL(load(&cfg, ARGS("--version", "--id", "x"),
                         ARGS("RAFTKV_SERVER_BOGUS=1")),
                    KV_CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.action, KV_CONFIG_VERSION);
    kv_config_free(&cfg);
    CU_ASSERT_EQUAL(load(&cfg, ARGS("-h"), ARGS("RAFTKV_SERVER_BOGUS=1")),
                    KV_CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.action, KV_CONFIG_HELP);
    kv_config_free(&cfg);
    /* The usage text lists the sources and every option once. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CU_ASSERT_FATAL(f != NULL);
    kv_config_usage(f);
    fclose(f);
    CU_ASSERT(strstr(text, "  --config FILE") != NULL);
    CU_ASSERT(strstr(text, "RAFTKV_SERVER_DATA_DIR") != NULL);
    CU_ASSERT(strstr(text, "  --max-connections-per-source N\n") != NULL);
    CU_ASSERT(strstr(text, "  --version") != NULL);
    free(text);
}

/* Print the config in effect into a string (to free). */
static char *print(const struct kv_config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CU_ASSERT_FATAL(f != NULL);
    kv_config_print(cfg, f);
    fclose(f);
    return text;
}

/* The lines of a printed config without their comments. */
static void strip_comments(char *text)
{
    char *w = text;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') {
            continue;
        }
        char *hash = strstr(line, " # ");
        size_t n = hash ? (size_t)(hash - line) : strlen(line);
        while (n && line[n - 1] == ' ') {
            n--;
        }
        memmove(w, line, n);
        w += n;
        *w++ = '\n';
    }
    *w = 0;
}

/* --print-config writes a file that loads back to the same options: from
 * the file, and (each line as a variable) from the environment. So every
 * option is readable from both. */
static void test_config_print_reads_back_from_file_and_environment(void)
{
    make_dir();
    struct kv_config cfg;
    int rv =
        load(&cfg,
             ARGS("--id", "2", "--cluster",
                  "1=127.0.0.1:7001,2=127.0.0.2:7001,3=[::1]:7001",
                  "--peer-secret-file", "/etc/raftkv/peer secret", "--data-dir",
                  "/var/lib/raftkv", "--metrics-addr", "127.0.0.2:9101",
                  "--tls-cert", "/c#1", "--tls-key", "/k", "--tls-client-auth",
                  "--tls-ca", "/ca", "--quota-bytes", "3000", "--log-level",
                  "error", "--max-output-mb", "3", "--print-config"),
             NO_ENV);
    CU_ASSERT_EQUAL_FATAL(rv, KV_CONFIG_OK);
    CU_ASSERT_EQUAL(cfg.action, KV_CONFIG_PRINT);
    char *first = print(&cfg);
    kv_config_free(&cfg);
    write_file(first);
    rv = load(&cfg, ARGS("--config", path), NO_ENV);
    if (rv != KV_CONFIG_OK) {
        fprintf(stderr, "\n%s\n%s\n", cfg.errmsg, first);
    }
    CU_ASSERT_EQUAL_FATAL(rv, KV_CONFIG_OK);
    char *second = print(&cfg);
    kv_config_free(&cfg);
    strip_comments(first);
    strip_comments(second);
    CU_ASSERT_STRING_EQUAL(first, second);
    CU_ASSERT(strstr(first, "tls-cert: \"/c#1\"\n") != NULL);
    CU_ASSERT(strstr(first, "quota-bytes: 3000\n") != NULL);
    CU_ASSERT(strstr(first, "max-output-mb: 3\n") != NULL);
    /* The same lines as RAFTKV_SERVER_* variables. */
    char *vars[64];
    size_t n = 0;
    char *copy = strdup(first);
    for (char *line = strtok(copy, "\n"); line && n < 63;
         line = strtok(NULL, "\n")) {
        char *colon = strstr(line, ": ");
        CU_ASSERT_FATAL(colon != NULL);
        char *value = colon + 2;
        size_t vl = strlen(value);
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
            value[vl - 1] = 0; /* no escapes in these values */
            value++;
        }
        *colon = 0;
        char var[600];
        int k = snprintf(var, sizeof var, "RAFTKV_SERVER_");
        for (char *p = line; *p; p++) {
            var[k++] = *p == '-' ? '_' : (char)(*p - 'a' + 'A');
        }
        snprintf(var + k, sizeof var - (size_t)k, "=%s", value);
        vars[n++] = strdup(var);
    }
    vars[n] = NULL;
    char *argv[] = {"kvserver", NULL};
    rv = kv_config_load(&cfg, 1, argv, vars);
    if (rv != KV_CONFIG_OK) {
        fprintf(stderr, "\n%s\n", cfg.errmsg);
    }
    CU_ASSERT_EQUAL_FATAL(rv, KV_CONFIG_OK);
    char *third = print(&cfg);
    kv_config_free(&cfg);
    strip_comments(third);
    CU_ASSERT_STRING_EQUAL(first, third);
    for (size_t i = 0; i < n; i++) {
        free(vars[i]);
    }
    free(copy);
    free(first);
    free(second);
    free(third);
    remove_dir();
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_config_advertise_and_listen", test_config_advertise_and_listen},
        {"test_config_precedence_is_command_line_env_file_default",
         test_config_precedence_is_command_line_env_file_default},
        {"test_config_file_lists_sequences_and_switches",
         test_config_file_lists_sequences_and_switches},
        {"test_config_file_named_by_the_environment",
         test_config_file_named_by_the_environment},
        {"test_config_env_ignores_client_variables",
         test_config_env_ignores_client_variables},
        {"test_config_file_errors_name_the_file_and_line",
         test_config_file_errors_name_the_file_and_line},
        {"test_config_env_and_command_line_errors_name_the_source",
         test_config_env_and_command_line_errors_name_the_source},
        {"test_config_help_and_version_stop_at_once",
         test_config_help_and_version_stop_at_once},
        {"test_config_print_reads_back_from_file_and_environment",
         test_config_print_reads_back_from_file_and_environment},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"config", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
