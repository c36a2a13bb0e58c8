/* lincheck_msg.c: the checker's failure messages (see lincheck_msg.h). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lincheck_msg.h"

void lc_msg_printf(struct lc_msg *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = m->len < m->cap ? m->cap - m->len : 0;
    int n = vsnprintf(room ? m->buf + m->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) {
        m->len += (size_t)n;
    }
    if (m->cap && m->len >= m->cap && m->cap > 4) {
        memcpy(m->buf + m->cap - 4, "...", 4); /* mark the truncation */
    }
}

/* Write bytes as a quoted printable string: \xHH for the rest. */
void lc_msg_bytes(struct lc_msg *m, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\') {
            lc_msg_printf(m, "\\%c", c);
        } else if (c >= 0x20 && c < 0x7f) {
            lc_msg_printf(m, "%c", c);
        } else {
            lc_msg_printf(m, "\\x%02x", c);
        }
    }
}

/* A value: quoted, its head only when long. */
void lc_msg_value(struct lc_msg *m, const void *p, size_t n)
{
    lc_msg_printf(m, "\"");
    lc_msg_bytes(m, p, n <= LC_SHOW_BYTES ? n : LC_SHOW_BYTES);
    if (n > LC_SHOW_BYTES) {
        lc_msg_printf(m, "...\"(%zu bytes)", n);
    } else {
        lc_msg_printf(m, "\"");
    }
}

/* The last n of total bytes, quoted; "..." and the length when cut. */
void lc_msg_tail(struct lc_msg *m, const void *p, size_t n, size_t total)
{
    if (n == total) {
        lc_msg_value(m, p, n);
        return;
    }
    lc_msg_printf(m, "\"...");
    lc_msg_bytes(m, p, n);
    lc_msg_printf(m, "\"(%zu bytes)", total);
}

/* A value read: quoted, its tail only when long (appends differ there). */
void lc_msg_read(struct lc_msg *m, const void *p, size_t n)
{
    size_t show = n <= LC_SHOW_BYTES ? n : LC_SHOW_BYTES;
    lc_msg_tail(m, (const uint8_t *)p + n - show, show, n);
}

static void msg_time(struct lc_msg *m, const struct lc_event *e)
{
    if (e->unknown) {
        lc_msg_printf(m, " [%" PRId64 ",?]", e->call_ns);
    } else {
        lc_msg_printf(m, " [%" PRId64 ",%" PRId64 "]", e->call_ns,
                      e->return_ns);
    }
}

/* A branch of a txn: "put("k","v"), delete("j")", or "nothing". */
static void msg_branch(struct lc_msg *m, const struct lc_write *w, size_t n)
{
    if (n == 0) {
        lc_msg_printf(m, "nothing");
    }
    for (size_t i = 0; i < n; i++) {
        lc_msg_printf(m, "%s%s(", i ? ", " : "", w[i].del ? "delete" : "put");
        lc_msg_value(m, w[i].key, w[i].key_len);
        if (!w[i].del) {
            lc_msg_printf(m, ",");
            lc_msg_value(m, w[i].value, w[i].value_len);
        }
        lc_msg_printf(m, ")");
    }
}

/* A txn's arguments and outcome: "c1 = "x" && version("k") > 2 ? put(...)
 * : nothing)->succeeded". */
static void msg_txn(struct lc_msg *m, const struct lc_event *e)
{
    static const char *const rel[] = {"=", ">", "<", "!="};
    for (size_t i = 0; i < e->n_compares; i++) {
        const struct lc_compare *c = &e->compares[i];
        lc_msg_printf(m, "%s", i ? " && " : "");
        if (c->target == LC_CMP_VALUE) {
            lc_msg_value(m, c->key, c->key_len);
            lc_msg_printf(m, " %s ", rel[c->result]);
            lc_msg_value(m, c->value, c->value_len);
        } else {
            lc_msg_printf(m, "version(");
            lc_msg_value(m, c->key, c->key_len);
            lc_msg_printf(m, ") %s %" PRIu64, rel[c->result], c->version);
        }
    }
    lc_msg_printf(m, e->n_compares ? " ? " : "true ? ");
    msg_branch(m, e->then_ops, e->n_then);
    lc_msg_printf(m, " : ");
    msg_branch(m, e->else_ops, e->n_else);
    lc_msg_printf(m, ")->%s",
                  e->unknown     ? "?"
                  : e->succeeded ? "succeeded"
                                 : "failed");
}

/* One op as "c3 append("x") [call,return]". */
void lc_msg_op(struct lc_msg *m, const struct lc_event *e)
{
    static const char *const names[] = {"get", "put",   "append", "delete",
                                        "cas", "range", "txn"};
    lc_msg_printf(m, "c%d %s(", e->client, names[e->op]);
    switch (e->op) {
        case LC_RANGE:
            lc_msg_printf(m, ")->{");
            for (size_t i = 0; i < e->n_reads; i++) {
                const struct lc_read *r = &e->reads[i];
                lc_msg_printf(m, "%s", i ? ", " : "");
                lc_msg_value(m, r->key, r->key_len);
                lc_msg_printf(m, ":");
                if (r->found) {
                    lc_msg_read(m, r->out, r->out_len);
                } else {
                    lc_msg_printf(m, "absent");
                }
            }
            lc_msg_printf(m, "}");
            break;
        case LC_TXN:
            msg_txn(m, e);
            break;
        case LC_PUT:
        case LC_APPEND:
            lc_msg_value(m, e->value, e->value_len);
            lc_msg_printf(m, ")");
            break;
        case LC_CAS:
            if (e->expect_absent) {
                lc_msg_printf(m, "absent");
            } else {
                lc_msg_value(m, e->expected, e->expected_len);
            }
            lc_msg_printf(m, "->");
            lc_msg_value(m, e->value, e->value_len);
            lc_msg_printf(m, ")");
            if (e->unknown) {
                lc_msg_printf(m, "->?");
            } else if (e->swapped) {
                lc_msg_printf(m, "->swapped");
            } else if (e->found) {
                lc_msg_printf(m, "->mismatch ");
                lc_msg_read(m, e->out, e->out_len);
            } else {
                lc_msg_printf(m, "->mismatch absent");
            }
            break;
        case LC_GET:
            lc_msg_printf(m, ")->");
            if (e->found) {
                lc_msg_read(m, e->out, e->out_len);
            } else {
                lc_msg_printf(m, "absent");
            }
            break;
        case LC_DELETE:
            lc_msg_printf(m, ")->%s",
                          e->unknown ? "?"
                          : e->found ? "found"
                                     : "absent");
            break;
    }
    msg_time(m, e);
}

void lc_msg_key(struct lc_msg *m, const struct lc_event *e)
{
    lc_msg_printf(m, "key ");
    lc_msg_value(m, e->key, e->key_len);
}
