/* main.c: kvserver: take the options (config.c), run the node. */
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "node.h"
#include "raftkv_version.h"
#include "service.h"

/* Run the node with the options in @cfg (or restore a backup into its
 * data directory); the exit status. */
static int run(struct kv_config *cfg)
{
    struct kv_node_config *c = &cfg->node;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
              ((uint64_t)getpid() << 40) ^ c->id;
    rpc_log_set_level(cfg->log_level);
    char prefix[40];
    snprintf(prefix, sizeof prefix, "node %llu: ", (unsigned long long)c->id);
    rpc_log_set_prefix(prefix);
    signal(SIGPIPE, SIG_IGN);
    if (cfg->restore) {
        return kv_restore_file(c, cfg->restore);
    }
    struct kv_node *n;
    if (kv_node_open(c, &n) != 0) {
        return 1;
    }
    struct kv_services *services;
    int rv = kv_services_open(n, &services) == 0 ? kv_node_run(n) : 1;
    kv_node_close(n); /* tells the services that the node stops */
    kv_services_free(services);
    return rv;
}

int main(int argc, char **argv)
{
    struct kv_config cfg;
    int rv = kv_config_load(&cfg, argc, argv, environ);
    if (rv != KV_CONFIG_OK) {
        fprintf(stderr, "kvserver: %s%s\n", cfg.errmsg,
                rv == KV_CONFIG_EUSAGE ? " (see kvserver --help)" : "");
        kv_config_free(&cfg);
        return rv == KV_CONFIG_EUSAGE ? 2 : 1;
    }
    switch (cfg.action) {
        case KV_CONFIG_HELP:
            kv_config_usage(stdout);
            kv_config_free(&cfg);
            return 0;
        case KV_CONFIG_VERSION:
            fputs(RAFTKV_VERSION_LINE("kvserver"), stdout);
            kv_config_free(&cfg);
            return 0;
        case KV_CONFIG_PRINT:
            kv_config_print(&cfg, stdout);
            kv_config_free(&cfg);
            return 0;
        case KV_CONFIG_RUN:
            break;
    }
    rv = run(&cfg);
    kv_config_free(&cfg);
    return rv;
}
