/* service.c: every service of a node, made and registered in one place. */
#include <stdio.h>
#include <stdlib.h>

#include "service.h"

int kv_services_open(struct kv_node *n, struct kv_services **out)
{
    /* Each init fills its service table or slots of another's and
     * subscribes to the node's broadcasts; auth comes after the admin
     * handlers it puts the root check in front of. */
    static int (*const inits[])(struct kv_services *) = {
        kv_service_init,      lease_service_init, admin_service_init,
        backup_service_init,  fault_service_init, auth_service_init,
        metrics_service_init, watch_service_init,
    };
    struct kv_services *s = calloc(1, sizeof *s);
    *out = s;
    if (!s) {
        fprintf(stderr, "kvserver: out of memory\n");
        return -1;
    }
    s->node = n;
    for (size_t i = 0; i < sizeof inits / sizeof inits[0]; i++) {
        if (inits[i](s) != 0) {
            return -1; /* it said why */
        }
    }
    rpc_server_add_service(n->server, &s->kv_svc.base);
    rpc_server_add_service(n->server, &s->lease_svc.base);
    rpc_server_add_service(n->server, &s->admin_svc.base);
    rpc_server_add_service(n->server, &s->auth_svc.base);
    rpc_server_add_service(n->server, &s->watch_svc.base);
    return 0;
}

void kv_services_free(struct kv_services *s)
{
    if (s) {
        watch_service_free(s);
    }
    lease_service_free(s);
    free(s);
}
