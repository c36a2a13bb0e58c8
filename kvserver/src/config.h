/* config.h: kvserver's options, from the command line, the environment and
 * a YAML config file, described once (config.c's table).
 *
 * Every option NAME (kvserver --help) can be given as --NAME on the
 * command line, as RAFTKV_SERVER_NAME in the environment (capitals, '_'
 * for '-': --data-dir is RAFTKV_SERVER_DATA_DIR) and as "NAME: value" in
 * the file that --config FILE (or RAFTKV_SERVER_CONFIG) names. The command
 * line wins over the environment, the environment over the file, the file
 * over the defaults. --restore, --config, --print-config, --help and
 * --version are for the command line only.
 *
 * The environment prefix is RAFTKV_SERVER_, not RAFTKV_: RAFTKV_CLUSTER,
 * RAFTKV_CACERT, RAFTKV_USER ... are kvctl's and libclerk users' (a client
 * endpoint list is not a --cluster list), and a node started from a shell
 * that has them set must not take them for its own. RAFTKV_SERVER_FLAGS,
 * read by scripts/cluster.sh, is the one RAFTKV_SERVER_ name that is not an
 * option; any other unknown one is an error, as an unknown option is.
 *
 *   struct kv_config cfg;
 *   if (kv_config_load(&cfg, argc, argv, environ) != KV_CONFIG_OK) {
 *       fprintf(stderr, "kvserver: %s\n", cfg.errmsg); ...
 *   }
 *   ... kv_node_open(&cfg.node, ...) ...
 *   kv_config_free(&cfg);
 */
#ifndef KVSERVER_CONFIG_H
#define KVSERVER_CONFIG_H

#include <stdio.h>

#include "node.h"

#define KV_CONFIG_ENV_PREFIX "RAFTKV_SERVER_"
#define KV_CONFIG_ENV_FILE   "RAFTKV_SERVER_CONFIG" /* names the file */

/* Results of kv_config_load. */
enum {
    KV_CONFIG_OK = 0,
    KV_CONFIG_EUSAGE, /* a bad option, value, file or variable (exit 2) */
    KV_CONFIG_ENOMEM, /* out of memory */
};

/* What the command line asks for. */
enum kv_config_action {
    KV_CONFIG_RUN = 0, /* run the node, or restore with --restore FILE */
    KV_CONFIG_HELP,    /* -h, --help: kv_config_usage() */
    KV_CONFIG_VERSION, /* --version */
    KV_CONFIG_PRINT,   /* --print-config: kv_config_print() */
};

struct kv_config_value; /* one option's value and where it came from */

/* The options in effect. Strings point into memory the config owns. */
struct kv_config
{
    struct kv_node_config node;     /* what the node runs with */
    int log_level;                  /* RPC_LOG_* */
    const char *restore;            /* --restore FILE, or NULL */
    enum kv_config_action action;   /* what to do */
    const char *file;               /* the config file read, or NULL */
    const char *cluster;            /* --cluster as given */
    const char *peers;              /* --peers as given, or NULL */
    const char *peer_listen;        /* --peer-listen as given, or NULL */
    const char *listen;             /* --listen as given, or NULL */
    const char *advertise;          /* --advertise as given, or NULL */
    const char *peer_advertise;     /* --peer-advertise as given, or NULL */
    struct kv_config_value *values; /* per option (private) */
    char errmsg[1024];              /* why kv_config_load failed */
};

/**
 * Fill @cfg from the defaults, the config file, @envp and @argv, in that
 * order (the last one wins), and check the result. --help and --version
 * stop at once: @cfg->action says which, nothing else is read.
 * @param cfg filled; call kv_config_free() after, whatever the result
 * @param argc, argv the command line (getopt_long may reorder argv)
 * @param envp the environment (environ), NULL-terminated; borrowed
 * @return KV_CONFIG_OK, KV_CONFIG_EUSAGE (@cfg->errmsg names the option,
 *         the variable or the file and line, and what is wrong), or
 *         KV_CONFIG_ENOMEM
 */
int kv_config_load(struct kv_config *cfg,
                   int argc,
                   char **argv,
                   char *const *envp);

/** Free what kv_config_load() allocated (not @cfg itself). */
void kv_config_free(struct kv_config *cfg);

/** Write kvserver --help to @f. */
void kv_config_usage(FILE *f);

/**
 * Write the options in effect to @f as a config file that kvserver reads
 * back to the same effect, each line saying where its value came from.
 */
void kv_config_print(const struct kv_config *cfg, FILE *f);

#endif /* KVSERVER_CONFIG_H */
