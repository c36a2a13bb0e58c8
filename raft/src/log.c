/* log.c - the in-memory log since the last compaction. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

uint64_t rf_log_last_index(const struct raft_log *l)
{
    return l->offset + l->n;
}

uint64_t rf_log_last_term(const struct raft_log *l)
{
    return l->n > 0 ? l->entries[l->n - 1].term : l->offset_term;
}

/* Term at @index if known (the compaction boundary included). */
bool rf_log_term(const struct raft_log *l, uint64_t index, uint64_t *term)
{
    if (index == l->offset) {
        *term = l->offset_term;
        return true;
    }
    if (index < l->offset || index > rf_log_last_index(l)) {
        return false;
    }
    *term = l->entries[index - l->offset - 1].term;
    return true;
}

struct raft_entry *rf_log_get(const struct raft_log *l, uint64_t index)
{
    if (index <= l->offset || index > rf_log_last_index(l)) {
        return NULL;
    }
    return &l->entries[index - l->offset - 1];
}

int rf_log_reserve(struct raft_log *l, size_t extra)
{
    if (l->n + extra <= l->cap) {
        return 0;
    }
    size_t cap = l->cap ? l->cap : 16;
    while (cap < l->n + extra) {
        cap *= 2;
    }
    struct raft_entry *v = realloc(l->entries, cap * sizeof *v);
    if (v == NULL) {
        return RAFT_ENOMEM;
    }
    l->entries = v;
    l->cap = cap;
    return 0;
}

static int graveyard_reserve(struct raft *r, size_t extra)
{
    if (r->n_graveyard + extra <= r->cap_graveyard) {
        return 0;
    }
    size_t cap = r->cap_graveyard ? r->cap_graveyard : 16;
    while (cap < r->n_graveyard + extra) {
        cap *= 2;
    }
    void **v = realloc(r->graveyard, cap * sizeof *v);
    if (v == NULL) {
        return RAFT_ENOMEM;
    }
    r->graveyard = v;
    r->cap_graveyard = cap;
    return 0;
}

int rf_bury_reserve(struct raft *r, size_t extra)
{
    return graveyard_reserve(r, extra);
}

/* Free @buf at the next advance: messages handed out may point into it. */
int rf_bury(struct raft *r, void *buf)
{
    if (buf == NULL) {
        return 0;
    }
    int rv = graveyard_reserve(r, 1);
    if (rv != 0) {
        return rv;
    }
    r->graveyard[r->n_graveyard++] = buf;
    return 0;
}

/* Append one entry at last index + 1, copying @data. */
int rf_log_append(struct raft *r,
                  uint64_t term,
                  enum raft_entry_type type,
                  const void *data,
                  size_t len)
{
    struct raft_log *l = &r->log;
    void *copy = NULL;
    if (rf_log_reserve(l, 1) != 0) {
        return RAFT_ENOMEM;
    }
    if (len > 0) {
        copy = malloc(len);
        if (copy == NULL) {
            return RAFT_ENOMEM;
        }
        memcpy(copy, data, len);
    }
    struct raft_entry *e = &l->entries[l->n];
    e->term = term;
    e->index = rf_log_last_index(l) + 1;
    e->type = type;
    e->data = copy;
    e->len = len;
    if (type == RAFT_ENTRY_CONFIG) {
        /* In force once appended (raft.h: MEMBERSHIP). */
        struct rf_conf c;
        rf_conf_init(&c);
        int rv = rf_conf_set(&c, copy, len);
        if (rv != 0) {
            free(copy);
            return rv;
        }
        l->n++;
        rf_conf_adopt(r, &c, e->index);
        return 0;
    }
    l->n++;
    return 0;
}

/* Drop entries >= @from (a conflict, Figure 2 AppendEntries step 3). */
int rf_log_truncate(struct raft *r, uint64_t from)
{
    struct raft_log *l = &r->log;
    if (from > rf_log_last_index(l)) {
        return 0;
    }
    size_t keep = from - l->offset - 1;
    if (graveyard_reserve(r, l->n - keep) != 0) {
        return RAFT_ENOMEM;
    }
    /* A configuration entry truncated gives way to the one before it. */
    struct rf_conf before;
    uint64_t before_at = 0;
    rf_conf_init(&before);
    bool conf_goes = r->conf_index >= from;
    if (conf_goes && rf_conf_as_of(r, from - 1, &before, &before_at) != 0) {
        return RAFT_ENOMEM;
    }
    for (size_t k = keep; k < l->n; k++) {
        if (l->entries[k].data != NULL) {
            r->graveyard[r->n_graveyard++] = (void *)l->entries[k].data;
        }
    }
    l->n = keep;
    if (conf_goes) {
        rf_conf_adopt(r, &before, before_at);
    }
    return 0;
}

/* Drop entries <= @upto (covered by a snapshot). */
int rf_log_compact(struct raft *r, uint64_t upto)
{
    struct raft_log *l = &r->log;
    if (upto <= l->offset) {
        return 0;
    }
    if (upto > rf_log_last_index(l)) {
        upto = rf_log_last_index(l);
    }
    size_t drop = upto - l->offset;
    if (graveyard_reserve(r, drop) != 0) {
        return RAFT_ENOMEM;
    }
    /* The base follows the log's start. */
    struct rf_conf base;
    uint64_t base_at = 0;
    rf_conf_init(&base);
    if (rf_conf_as_of(r, upto, &base, &base_at) != 0) {
        return RAFT_ENOMEM;
    }
    rf_conf_free(&r->base);
    rf_conf_move(&r->base, &base);
    if (r->conf_index <= upto) {
        r->conf_index = 0; /* the latest is the base now */
    }
    uint64_t term = l->entries[drop - 1].term;
    for (size_t k = 0; k < drop; k++) {
        if (l->entries[k].data != NULL) {
            r->graveyard[r->n_graveyard++] = (void *)l->entries[k].data;
        }
    }
    memmove(l->entries, l->entries + drop, (l->n - drop) * sizeof *l->entries);
    l->n -= drop;
    l->offset = upto;
    l->offset_term = term;
    return 0;
}

/* Make the log empty, starting after (@index, @term). */
int rf_log_reset(struct raft *r, uint64_t index, uint64_t term)
{
    struct raft_log *l = &r->log;
    int rv = rf_log_truncate(r, l->offset + 1);
    if (rv != 0) {
        return rv;
    }
    l->offset = index;
    l->offset_term = term;
    return 0;
}

void rf_log_free(struct raft_log *l)
{
    for (size_t k = 0; k < l->n; k++) {
        free((void *)l->entries[k].data);
    }
    free(l->entries);
    l->entries = NULL;
    l->n = l->cap = 0;
}
