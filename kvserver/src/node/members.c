/* members.c: the cluster's membership as a node sees it: the members'
 * addresses (in the Raft configuration's member contexts), the peers it
 * talks to, the ids removed for good, and what a configuration entry does
 * when it is applied. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node.h"

/* A member's context: "peer=HOST:PORT client=HOST:PORT". */
size_t members_ctx_format(char *buf,
                          size_t len,
                          const char *peer,
                          const char *client)
{
    int k = snprintf(buf, len, "peer=%s client=%s", peer, client);
    return k < 0 || (size_t)k >= len ? 0 : (size_t)k;
}

/* Read one "name=value" of a context into @out (empty when absent). */
static void ctx_field(const void *ctx,
                      size_t len,
                      const char *name,
                      char *out,
                      size_t out_len)
{
    out[0] = 0;
    const char *p = ctx, *end = p + len;
    size_t nl = strlen(name);
    while (p < end) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *stop = sp ? sp : end;
        if ((size_t)(stop - p) > nl && !memcmp(p, name, nl) && p[nl] == '=') {
            size_t vl = (size_t)(stop - p) - nl - 1;
            if (vl < out_len) {
                memcpy(out, p + nl + 1, vl);
                out[vl] = 0;
            }
            return;
        }
        p = stop + 1;
    }
}

void members_flag_addr(const struct kv_node_config *c,
                       uint64_t id,
                       bool peer,
                       char *out,
                       size_t len)
{
    out[0] = 0;
    for (size_t i = 0; i < c->n_nodes; i++) {
        if (c->ids[i] == id) {
            const char *h = peer ? c->peer_hosts[i] : c->hosts[i];
            snprintf(out, len, strchr(h, ':') ? "[%s]:%u" : "%s:%u", h,
                     peer ? c->peer_ports[i] : c->ports[i]);
            return;
        }
    }
}

void node_member_addr(const struct kv_node *n,
                      uint64_t id,
                      bool peer,
                      char *out,
                      size_t len)
{
    const struct raft_member *m;
    size_t k = n->raft ? raft_members(n->raft, &m) : 0;
    for (size_t i = 0; i < k; i++) {
        if (m[i].id == id && m[i].ctx_len) {
            ctx_field(m[i].ctx, m[i].ctx_len, peer ? "peer" : "client", out,
                      len);
            if (out[0]) {
                return;
            }
        }
    }
    members_flag_addr(&n->cfg, id, peer, out, len);
}

const char *node_peer_addr(struct kv_node *n, uint64_t id)
{
    static char buf[300];
    node_member_addr(n, id, false, buf, sizeof buf);
    return buf;
}

int members_bootstrap(const struct kv_node_config *c,
                      struct raft_member *m,
                      char (*ctx)[MEMBER_CTX_MAX],
                      size_t *n)
{
    *n = 0;
    if (c->join) {
        return 0; /* it learns the configuration from the leader */
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        char peer[300], client[300];
        members_flag_addr(c, c->ids[i], true, peer, sizeof peer);
        members_flag_addr(c, c->ids[i], false, client, sizeof client);
        size_t len = members_ctx_format(ctx[i], MEMBER_CTX_MAX, peer, client);
        if (!len) {
            return -1;
        }
        m[i] = (struct raft_member){
            .id = c->ids[i], .voter = true, .ctx = ctx[i], .ctx_len = len};
    }
    *n = c->n_nodes;
    return 0;
}

bool node_removed(const struct kv_node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_removed; i++) {
        if (n->removed[i] == id) {
            return true;
        }
    }
    return false;
}

/* Split "host:port" or "[v6]:port"; false when it is not one. */
bool members_split_addr(const char *addr,
                        char *host,
                        size_t hlen,
                        uint16_t *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1]) {
        return false;
    }
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || p == 0 || p > 65535) {
        return false;
    }
    size_t hl = (size_t)(colon - addr);
    const char *h = addr;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hlen) {
        return false;
    }
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (uint16_t)p;
    return true;
}

/* The source address of our calls to peers: our own peer host, unless
 * that is a wildcard. */
static const char *bind_host(const char *host)
{
    if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::") || !*host) {
        return NULL;
    }
    return host;
}

static void peer_drop(struct kv_node *n, size_t i)
{
    struct kv_peer *p = &n->peers[i];
    if (p->stream_open) {
        snap_stream_close(&p->stream);
    }
    rpc_channel_free(p->ch);
    free(p->chunk);
    n->peers[i] = n->peers[--n->n_peers];
    memset(&n->peers[n->n_peers], 0, sizeof n->peers[n->n_peers]);
}

/* A channel to peer @p at its address. */
static int peer_connect(struct kv_node *n, struct kv_peer *p)
{
    char host[256], self_peer[300], self_host[256];
    uint16_t port, self_port;
    if (!members_split_addr(p->addr, host, sizeof host, &port)) {
        rpc_logf(RPC_LOG_WARN,
                 "node %llu: node %llu has no usable address "
                 "('%s'); it cannot be reached",
                 (unsigned long long)n->cfg.id, (unsigned long long)p->id,
                 p->addr);
        return -1;
    }
    node_member_addr(n, n->cfg.id, true, self_peer, sizeof self_peer);
    const char *bh = NULL;
    if (members_split_addr(self_peer, self_host, sizeof self_host,
                           &self_port)) {
        bh = bind_host(self_host);
    }
    struct rpc_channel_options o = {
        .deadline_ms = n->cfg.election_ms,
        .connect_timeout_ms = n->cfg.election_ms,
        .backoff_max_ms = n->cfg.heartbeat_ms * 2,
        .bind_host = bh,
        .limits.max_args = KV_PEER_MAX_ARGS,
        .peer_auth = &n->peer_auth,
        .peer_id = p->id,
        .tls = n->peer_tls_out,
        .priority = 0 + 1, /* Raft messages before clients' work */
    };
    p->ch = rpc_channel_new(n->base, host, port, &o);
    p->raft =
        p->ch ? rpc_channel_service(p->ch, &raftkv__raft_service__descriptor)
              : NULL;
    if (!p->raft) {
        rpc_channel_free(p->ch);
        p->ch = NULL;
        return -1;
    }
    return 0;
}

void node_sync_peers(struct kv_node *n)
{
    const struct raft_member *m;
    size_t k = raft_members(n->raft, &m);
    /* Gone from the configuration: no more calls to them. */
    for (size_t i = 0; i < n->n_peers;) {
        bool member = false;
        for (size_t j = 0; j < k; j++) {
            member |= m[j].id == n->peers[i].id;
        }
        if (!member) {
            rpc_logf(RPC_LOG_INFO, "node %llu: node %llu is no longer a member",
                     (unsigned long long)n->cfg.id,
                     (unsigned long long)n->peers[i].id);
            peer_drop(n, i);
        } else {
            i++;
        }
    }
    for (size_t j = 0; j < k; j++) {
        if (m[j].id == n->cfg.id) {
            continue;
        }
        char addr[300];
        node_member_addr(n, m[j].id, true, addr, sizeof addr);
        struct kv_peer *p = NULL;
        for (size_t i = 0; i < n->n_peers; i++) {
            if (n->peers[i].id == m[j].id) {
                p = &n->peers[i];
            }
        }
        if (p && !strcmp(p->addr, addr)) {
            continue;
        }
        if (p) {
            /* A new address (member update): a new channel. */
            rpc_logf(RPC_LOG_INFO, "node %llu: node %llu moves to %s",
                     (unsigned long long)n->cfg.id, (unsigned long long)p->id,
                     addr);
            rpc_channel_free(p->ch);
            p->ch = NULL;
            p->raft = NULL;
        } else {
            if (n->n_peers == KV_MAX_PEERS) {
                continue;
            }
            p = &n->peers[n->n_peers++];
            memset(p, 0, sizeof *p);
            p->id = m[j].id;
        }
        snprintf(p->addr, sizeof p->addr, "%s", addr);
        if (peer_connect(n, p) != 0) {
            rpc_logf(
                RPC_LOG_WARN, "node %llu: no channel to node %llu at %s yet",
                (unsigned long long)n->cfg.id, (unsigned long long)p->id, addr);
        }
    }
}

/* ------------------------------------------- configuration entries */

#define META_CONF    "raftconf"
#define META_REMOVED "removed"

static int meta_get(struct kv_store *st,
                    MDB_txn *txn,
                    const char *key,
                    MDB_val *v)
{
    MDB_val k = {strlen(key), (void *)key};
    int rc = mdb_get(txn, st->kvmeta, &k, v);
    if (rc == MDB_NOTFOUND) {
        v->mv_size = 0;
        v->mv_data = NULL;
        return 0;
    }
    return rc ? kv_store_fail(st, rc, "read kvmeta") : 0;
}

static int meta_put(struct kv_store *st,
                    MDB_txn *txn,
                    const char *key,
                    const void *data,
                    size_t len)
{
    MDB_val k = {strlen(key), (void *)key}, v = {len, (void *)data};
    int rc = mdb_put(txn, st->kvmeta, &k, &v, 0);
    return rc ? kv_store_fail(st, rc, "write kvmeta") : 0;
}

int members_load(struct kv_node *n, MDB_txn *txn, void **conf, size_t *conf_len)
{
    struct kv_store *st = &n->store;
    MDB_val v;
    *conf = NULL;
    *conf_len = 0;
    int rv = meta_get(st, txn, META_CONF, &v);
    if (!rv && v.mv_size) {
        *conf = malloc(v.mv_size);
        if (!*conf) {
            return KV_STORE_ENOMEM;
        }
        memcpy(*conf, v.mv_data, v.mv_size);
        *conf_len = v.mv_size;
    }
    if (!rv) {
        rv = meta_get(st, txn, META_REMOVED, &v);
    }
    if (!rv) {
        free(n->removed);
        n->removed = NULL;
        n->n_removed = v.mv_size / 8;
        if (n->n_removed) {
            n->removed = malloc(v.mv_size);
            if (!n->removed) {
                n->n_removed = 0;
                return KV_STORE_ENOMEM;
            }
            for (size_t i = 0; i < n->n_removed; i++) {
                n->removed[i] = kv_get_u64((const uint8_t *)v.mv_data + 8 * i);
            }
        }
    }
    return rv;
}

int members_forget(struct kv_store *st, MDB_txn *txn)
{
    const char *keys[] = {META_CONF, META_REMOVED};
    for (size_t i = 0; i < 2; i++) {
        MDB_val k = {strlen(keys[i]), (void *)keys[i]};
        int rc = mdb_del(txn, st->kvmeta, &k, NULL);
        if (rc && rc != MDB_NOTFOUND) {
            return kv_store_fail(st, rc, "clear kvmeta");
        }
    }
    return 0;
}

/* Ids removed for good (n->removed from @from on) lose their open Raft
 * connections: their next handshake is refused, after the proofs, which
 * tells a removed node that is still running to stop (a follower never
 * receives the entry that removes it). */
static void drop_removed(struct kv_node *n, size_t from)
{
    for (size_t i = from; i < n->n_removed && n->peer_server; i++) {
        rpc_server_drop_peer(n->peer_server, n->removed[i]);
    }
}

int members_install(struct kv_node *n,
                    MDB_txn *txn,
                    const void *conf,
                    size_t len)
{
    int rv = len ? meta_put(&n->store, txn, META_CONF, conf, len) : 0;
    if (!rv) {
        void *c;
        size_t cl;
        rv = members_load(n, txn, &c, &cl); /* the snapshot's removed ids */
        free(c);
    }
    if (!rv) {
        drop_removed(n, 0);
    }
    return rv;
}

int members_apply(struct kv_node *n,
                  MDB_txn *txn,
                  const struct raft_entry *e,
                  bool *self_removed)
{
    struct kv_store *st = &n->store;
    struct raft_member now[RAFT_MAX_MEMBERS], before[RAFT_MAX_MEMBERS];
    size_t n_now = 0, n_before = 0;
    *self_removed = false;
    if (raft_conf_decode(e->data, e->len, now, RAFT_MAX_MEMBERS, &n_now) != 0) {
        snprintf(st->errmsg, sizeof st->errmsg,
                 "%s: configuration entry %llu does not decode", st->dir,
                 (unsigned long long)e->index);
        return KV_STORE_ECORRUPT;
    }
    MDB_val old;
    int rv = meta_get(st, txn, META_CONF, &old);
    if (rv) {
        return rv;
    }
    /* The configuration before it: the last applied one, else the
     * bootstrap's (a cluster whose first change this is). */
    void *copy = NULL;
    if (old.mv_size) {
        copy = malloc(old.mv_size);
        if (!copy) {
            return KV_STORE_ENOMEM;
        }
        memcpy(copy, old.mv_data, old.mv_size);
        if (raft_conf_decode(copy, old.mv_size, before, RAFT_MAX_MEMBERS,
                             &n_before) != 0) {
            n_before = 0;
        }
    } else {
        char ctx[KV_MAX_NODES][MEMBER_CTX_MAX];
        if (members_bootstrap(&n->cfg, before, ctx, &n_before) != 0) {
            n_before = 0;
        }
        for (size_t i = 0; i < n_before; i++) {
            before[i].ctx = NULL; /* (ids only are used below) */
            before[i].ctx_len = 0;
        }
    }
    /* Who left: removed for good. */
    size_t added = 0;
    uint64_t *removed = n->removed;
    for (size_t i = 0; i < n_before; i++) {
        bool stays = false;
        for (size_t j = 0; j < n_now; j++) {
            stays |= now[j].id == before[i].id;
        }
        if (stays || node_removed(n, before[i].id)) {
            continue;
        }
        uint64_t *r = realloc(removed, (n->n_removed + added + 1) * 8);
        if (!r) {
            free(copy);
            n->removed = removed;
            return KV_STORE_ENOMEM;
        }
        /* node_removed reads n->removed in the next rounds: it must not
         * point at the block realloc just freed. */
        removed = n->removed = r;
        removed[n->n_removed + added++] = before[i].id;
        if (before[i].id == n->cfg.id) {
            *self_removed = true;
        }
    }
    free(copy);
    n->removed = removed;
    n->n_removed += added;
    drop_removed(n, n->n_removed - added);
    rv = meta_put(st, txn, META_CONF, e->data, e->len);
    if (!rv && added) {
        uint8_t *buf = malloc(n->n_removed * 8);
        if (!buf) {
            return KV_STORE_ENOMEM;
        }
        for (size_t i = 0; i < n->n_removed; i++) {
            kv_put_u64(buf + 8 * i, n->removed[i]);
        }
        rv = meta_put(st, txn, META_REMOVED, buf, n->n_removed * 8);
        free(buf);
    }
    return rv;
}
