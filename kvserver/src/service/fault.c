/* fault.c: AdminService.Fault: fault injection on a node's own traffic,
 * allowed only with --enable-fault-injection. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "service.h"

#define KV_SERVICE_NAME "raftkv.KvService"

static void spec_to_faults(const Raftkv__FaultSpec *sp, struct rpc_faults *f)
{
    memset(f, 0, sizeof *f);
    if (!sp) {
        return;
    }
    f->cut = sp->cut;
    f->drop_request = sp->drop_request;
    f->drop_reply = sp->drop_reply;
    f->delay_min_ms = sp->delay_min_ms;
    f->delay_max_ms = sp->delay_max_ms;
    f->duplicate = sp->duplicate;
    f->reorder = sp->reorder;
    f->reorder_min_ms = sp->reorder_min_ms;
    f->reorder_max_ms = sp->reorder_max_ms;
}

static void faults_to_spec(const struct rpc_faults *f, Raftkv__FaultSpec *sp)
{
    sp->cut = f->cut;
    sp->drop_request = f->drop_request;
    sp->drop_reply = f->drop_reply;
    sp->delay_min_ms = f->delay_min_ms;
    sp->delay_max_ms = f->delay_max_ms;
    sp->duplicate = f->duplicate;
    sp->reorder = f->reorder;
    sp->reorder_min_ms = f->reorder_min_ms;
    sp->reorder_max_ms = f->reorder_max_ms;
}

static void counts_of(const struct rpc_fault_stats *st, Raftkv__FaultCounts *c)
{
    c->cut = st->cut;
    c->dropped_requests = st->dropped_requests;
    c->dropped_replies = st->dropped_replies;
    c->delayed = st->delayed;
    c->duplicated = st->duplicated;
    c->reordered = st->reordered;
}

/* "cut" or "drop-request 0.10 drop-reply 0.10 delay 0-27ms ..." */
static void describe(const struct rpc_faults *f, char *out, size_t len)
{
    size_t o = 0;
    out[0] = 0;
#define PUT(...)                                                           \
    do {                                                                   \
        int w_ = snprintf(out + o, len - o, __VA_ARGS__);                  \
        o = w_ < 0 ? o : (size_t)w_ >= len - o ? len - 1 : o + (size_t)w_; \
    } while (0)
    if (f->cut) {
        PUT(" cut");
    }
    if (f->drop_request > 0) {
        PUT(" drop-request %.3g", f->drop_request);
    }
    if (f->drop_reply > 0) {
        PUT(" drop-reply %.3g", f->drop_reply);
    }
    if (f->delay_max_ms > 0) {
        PUT(" delay %u-%u ms", f->delay_min_ms, f->delay_max_ms);
    }
    if (f->duplicate > 0) {
        PUT(" duplicate %.3g", f->duplicate);
    }
    if (f->reorder > 0) {
        PUT(" reorder %.3g (%u-%u ms)", f->reorder, f->reorder_min_ms,
            f->reorder_max_ms);
    }
#undef PUT
    if (!out[0]) {
        snprintf(out, len, " none");
    }
}

static struct kv_peer *peer_by_id(struct kv_node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_peers; i++) {
        if (n->peers[i].id == id) {
            return &n->peers[i];
        }
    }
    return NULL;
}

/* Apply one target's faults (NULL or inactive: remove them). */
static void set_target(struct kv_node *n,
                       uint64_t target,
                       const struct rpc_faults *f,
                       uint64_t seed)
{
    const struct rpc_faults *now; /* as the rpc layer keeps them */
    char whose[64], what[256];
    if (target == 0) {
        rpc_server_set_faults(n->server, KV_SERVICE_NAME, f, seed);
        now = rpc_server_faults(n->server, KV_SERVICE_NAME);
        snprintf(whose, sizeof whose, "from clients");
    } else {
        struct kv_peer *p = peer_by_id(n, target);
        rpc_channel_set_faults(p->ch, f, seed);
        now = rpc_channel_faults(p->ch);
        snprintf(whose, sizeof whose, "to node %" PRIu64, target);
    }
    describe(now ? now : &(struct rpc_faults){0}, what, sizeof what);
    /* The seed, so that a run's random choices can be repeated. */
    rpc_logf(RPC_LOG_WARN,
             "node %" PRIu64 ": fault injection: calls %s:%s (seed %" PRIu64
             ")",
             n->cfg.id, whose, what, seed);
}

static void handle_fault(Raftkv__AdminService_Service *svc,
                         const Raftkv__FaultArgs *a,
                         Raftkv__FaultReply_Closure closure,
                         void *data)
{
    struct kv_node *n = services_of(svc, admin_svc)->node;
    Raftkv__FaultReply r = RAFTKV__FAULT_REPLY__INIT;
    char msg[300] = "";
    r.node_id = n->cfg.id;
    r.message = msg;
    if (!n->cfg.fault_injection) {
        r.error = RAFTKV__ADMIN_ERROR__ADMIN_DISABLED;
        snprintf(msg, sizeof msg,
                 "fault injection is disabled on node %" PRIu64
                 " (start kvserver with --enable-fault-injection)",
                 n->cfg.id);
        closure(&r, data);
        return;
    }
    /* Check every rule before changing anything. */
    for (size_t i = 0; i < a->n_rules; i++) {
        const Raftkv__FaultRule *rule = a->rules[i];
        struct rpc_faults f;
        spec_to_faults(rule->spec, &f);
        char why[200];
        if (rule->target != 0 && !peer_by_id(n, rule->target)) {
            snprintf(msg, sizeof msg,
                     "rule %zu: node %" PRIu64 " has no peer %" PRIu64
                     " (targets are the other nodes' ids, or 0 for clients)",
                     i + 1, n->cfg.id, rule->target);
        } else if (!rpc_faults_valid(&f, why, sizeof why)) {
            snprintf(msg, sizeof msg, "rule %zu: %s", i + 1, why);
        }
        if (msg[0]) {
            r.error = RAFTKV__ADMIN_ERROR__ADMIN_BAD_REQUEST;
            closure(&r, data);
            return;
        }
    }
    uint64_t seed = a->seed;
    if (!seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ n->cfg.id;
    }
    if (a->clear) {
        set_target(n, 0, NULL, seed);
        for (size_t i = 0; i < n->n_peers; i++) {
            set_target(n, n->peers[i].id, NULL, seed);
        }
    }
    for (size_t i = 0; i < a->n_rules; i++) {
        struct rpc_faults f;
        spec_to_faults(a->rules[i]->spec, &f);
        /* Each target draws its own sequence. */
        set_target(n, a->rules[i]->target, &f, seed + 0x9E37 * (i + 1));
    }

    /* Answer with every rule in force and what it has done. */
    Raftkv__FaultRule rules[KV_MAX_NODES + 1];
    Raftkv__FaultRule *rp[KV_MAX_NODES + 1];
    Raftkv__FaultSpec specs[KV_MAX_NODES + 1];
    Raftkv__FaultCounts counts[KV_MAX_NODES + 1];
    size_t k = 0;
    for (size_t i = 0; i <= n->n_peers; i++) {
        const struct rpc_faults *f =
            i == 0 ? rpc_server_faults(n->server, KV_SERVICE_NAME)
                   : rpc_channel_faults(n->peers[i - 1].ch);
        if (!f) {
            continue;
        }
        struct rpc_fault_stats st;
        if (i == 0) {
            rpc_server_get_fault_stats(n->server, &st);
        } else {
            rpc_channel_get_fault_stats(n->peers[i - 1].ch, &st);
        }
        raftkv__fault_rule__init(&rules[k]);
        raftkv__fault_spec__init(&specs[k]);
        raftkv__fault_counts__init(&counts[k]);
        rules[k].target = i == 0 ? 0 : n->peers[i - 1].id;
        faults_to_spec(f, &specs[k]);
        counts_of(&st, &counts[k]);
        rules[k].spec = &specs[k];
        rules[k].counts = &counts[k];
        rp[k] = &rules[k];
        k++;
    }
    r.n_rules = k;
    r.rules = rp;
    closure(&r, data);
}

int fault_service_init(struct kv_services *s)
{
    s->admin_svc.fault = handle_fault;
    return 0;
}
