/* lincheck_json.c: histories as JSON lines, one event per line (jansson). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lincheck.h"

static const char *const op_names[] = {"get", "put",   "append", "delete",
                                       "cas", "range", "txn"};
#define N_OPS (sizeof op_names / sizeof *op_names)

static const char *const cmp_names[] = {"=", ">", "<", "!="};

/* ---- bytes as JSON strings ------------------------------------------------
 *
 * A history's strings are bytes; a JSON string is characters. Byte b is
 * character U+00bb: written as UTF-8 (which JSON_ENSURE_ASCII turns into
 * \u00bb), read back by taking each character as one byte. */

/* A JSON string holding exactly these bytes, or NULL without memory. */
static json_t *bytes_string(const void *p, size_t n)
{
    const unsigned char *b = p;
    char *utf8 = malloc(2 * n + 1);
    if (!utf8) {
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] < 0x80) {
            utf8[k++] = (char)b[i];
        } else {
            utf8[k++] = (char)(0xc0 | (b[i] >> 6));
            utf8[k++] = (char)(0x80 | (b[i] & 0x3f));
        }
    }
    json_t *s = json_stringn_nocheck(utf8, k);
    free(utf8);
    return s;
}

/* ---- writing ------------------------------------------------------------- */

/* obj[name] = v, taking v; false when v is NULL or without memory. */
static bool set_new(json_t *obj, const char *name, json_t *v)
{
    return v && json_object_set_new(obj, name, v) == 0;
}

static bool set_bytes(json_t *obj, const char *name, const void *p, size_t n)
{
    return set_new(obj, name, bytes_string(p, n));
}

static bool set_bool(json_t *obj, const char *name, bool v)
{
    return set_new(obj, name, json_boolean(v));
}

/* A txn's branch as an array of {"op","key"[,"value"]}. */
static json_t *branch_json(const struct lc_write *w, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *o = json_object();
        bool ok =
            o && set_new(o, "op", json_string(w[i].del ? "delete" : "put")) &&
            set_bytes(o, "key", w[i].key, w[i].key_len) &&
            (w[i].del || set_bytes(o, "value", w[i].value, w[i].value_len));
        if (!ok || json_array_append_new(a, o) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *reads_json(const struct lc_event *e)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < e->n_reads; i++) {
        const struct lc_read *r = &e->reads[i];
        json_t *o = json_object();
        bool ok = o && set_bytes(o, "key", r->key, r->key_len) &&
                  set_bool(o, "found", r->found) &&
                  (!r->found || set_bytes(o, "out", r->out, r->out_len));
        if (!ok || json_array_append_new(a, o) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *compares_json(const struct lc_event *e)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < e->n_compares; i++) {
        const struct lc_compare *c = &e->compares[i];
        json_t *o = json_object();
        bool value = c->target == LC_CMP_VALUE;
        bool ok =
            o && set_bytes(o, "key", c->key, c->key_len) &&
            set_new(o, "target", json_string(value ? "value" : "version")) &&
            set_new(o, "result", json_string(cmp_names[c->result])) &&
            (value
                 ? set_bytes(o, "value", c->value, c->value_len)
                 : set_new(o, "version", json_integer((json_int_t)c->version)));
        if (!ok || json_array_append_new(a, o) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* One event as a JSON object (fields in the README's order), or NULL. */
static json_t *event_json(const struct lc_event *e)
{
    json_t *o = json_object();
    if (!o || !set_new(o, "client", json_integer(e->client)) ||
        !set_new(o, "op", json_string(op_names[e->op]))) {
        goto err_free;
    }
    bool ok = true;
    switch (e->op) {
        case LC_GET:
            ok = set_bytes(o, "key", e->key, e->key_len) &&
                 set_bool(o, "found", e->found) &&
                 (!e->found || set_bytes(o, "out", e->out, e->out_len));
            break;
        case LC_PUT:
        case LC_APPEND:
            ok = set_bytes(o, "key", e->key, e->key_len) &&
                 set_bytes(o, "value", e->value, e->value_len);
            break;
        case LC_DELETE:
            ok = set_bytes(o, "key", e->key, e->key_len) &&
                 set_bool(o, "found", e->found);
            break;
        case LC_CAS:
            ok = set_bytes(o, "key", e->key, e->key_len) &&
                 (e->expect_absent ? set_new(o, "expected", json_null())
                                   : set_bytes(o, "expected", e->expected,
                                               e->expected_len)) &&
                 set_bytes(o, "value", e->value, e->value_len) &&
                 set_bool(o, "swapped", e->swapped);
            if (ok && !e->swapped) {
                ok = set_bool(o, "found", e->found) &&
                     (!e->found || set_bytes(o, "out", e->out, e->out_len));
            }
            break;
        case LC_RANGE:
            ok = set_new(o, "reads", reads_json(e));
            break;
        case LC_TXN:
            ok = set_new(o, "compares", compares_json(e)) &&
                 set_new(o, "then", branch_json(e->then_ops, e->n_then)) &&
                 set_new(o, "else", branch_json(e->else_ops, e->n_else)) &&
                 (e->unknown || set_bool(o, "succeeded", e->succeeded));
            break;
    }
    if (!ok || (e->unknown && !set_bool(o, "unknown", true)) ||
        !set_new(o, "call", json_integer(e->call_ns)) ||
        (!e->unknown && !set_new(o, "return", json_integer(e->return_ns)))) {
        goto err_free;
    }
    return o;

err_free:
    json_decref(o);
    return NULL;
}

int lc_history_write(const struct lc_history *h, FILE *f)
{
    size_t n = lc_history_size(h);
    for (size_t i = 0; i < n; i++) {
        json_t *o = event_json(lc_history_get(h, i));
        if (!o) {
            errno = ENOMEM;
            return -1;
        }
        int rv = json_dumpf(o, f, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(o);
        if (rv != 0 || putc('\n', f) == EOF || ferror(f)) {
            return -1;
        }
    }
    if (fflush(f) != 0 || ferror(f)) {
        return -1;
    }
    return 0;
}

/* ---- reading ------------------------------------------------------------- */

/* The state of reading one line: what it allocated, freed at its end. */
struct parser
{
    size_t line;   /* line number, from 1 */
    char *err;     /* error message buffer */
    size_t errlen; /* its size */
    void **mem;    /* blocks allocated for this line's event */
    size_t nmem;   /* their number */
    size_t capmem; /* slots in mem */
};

static int fail(struct parser *ps, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct parser *ps, const char *fmt, ...)
{
    if (ps->errlen) {
        int n = snprintf(ps->err, ps->errlen, "line %zu: ", ps->line);
        if (n >= 0 && (size_t)n < ps->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* A block that lives until the line is done (zeroed), or NULL. */
static void *line_alloc(struct parser *ps, size_t n)
{
    if (ps->nmem == ps->capmem) {
        size_t cap = ps->capmem ? 2 * ps->capmem : 16;
        void **m = realloc(ps->mem, cap * sizeof *m);
        if (!m) {
            return NULL;
        }
        ps->mem = m;
        ps->capmem = cap;
    }
    void *p = calloc(1, n ? n : 1);
    if (p) {
        ps->mem[ps->nmem++] = p;
    }
    return p;
}

static void line_free(struct parser *ps)
{
    for (size_t i = 0; i < ps->nmem; i++) {
        free(ps->mem[i]);
    }
    ps->nmem = 0;
}

/* The bytes of JSON string v (each character one byte, U+0000..U+00FF). */
static int get_bytes(struct parser *ps,
                     json_t *v,
                     const char *what,
                     const void **out,
                     size_t *out_len)
{
    if (!json_is_string(v)) {
        return fail(ps, "\"%s\" must be a string", what);
    }
    const unsigned char *s = (const unsigned char *)json_string_value(v);
    size_t n = json_string_length(v), k = 0;
    unsigned char *b = line_alloc(ps, n + 1);
    if (!b) {
        return fail(ps, "out of memory");
    }
    for (size_t i = 0; i < n; k++) {
        unsigned c = s[i];
        if (c < 0x80) {
            b[k] = (unsigned char)c;
            i++;
            continue;
        }
        /* jansson gives valid UTF-8: decode one character. */
        int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
        unsigned cp = c & (0x3f >> more);
        for (int j = 1; j <= more && i + (size_t)j < n; j++) {
            cp = (cp << 6) | (s[i + (size_t)j] & 0x3f);
        }
        if (cp > 0xff) {
            return fail(ps,
                        "\\u%04x in %s is above \\u00ff (one character per "
                        "byte)",
                        cp, what);
        }
        b[k] = (unsigned char)cp;
        i += (size_t)more + 1;
    }
    *out = b;
    *out_len = k;
    return 0;
}

static int get_bool(struct parser *ps, json_t *v, const char *what, bool *out)
{
    if (!json_is_boolean(v)) {
        return fail(ps, "\"%s\" must be true or false", what);
    }
    *out = json_is_true(v);
    return 0;
}

static int get_int(struct parser *ps,
                   json_t *v,
                   const char *what,
                   int64_t lo,
                   int64_t hi,
                   int64_t *out)
{
    if (!json_is_integer(v)) {
        return fail(ps, "\"%s\" must be an integer", what);
    }
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        return fail(ps, "\"%s\" is out of range", what);
    }
    *out = (int64_t)x;
    return 0;
}

/* Which of names is s; -1 when none. */
static int name_index(const char *s, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* The field name as shown in a message: printable, at most 40 bytes. */
static void shown_name(const char *name, char out[48])
{
    size_t i = 0;
    for (; name[i] && i < 40; i++) {
        unsigned char c = (unsigned char)name[i];
        out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[i] = '\0';
}

/* Check that object o has only the fields in names (where says where). */
static int only_fields(struct parser *ps,
                       json_t *o,
                       const char *const *names,
                       size_t n,
                       const char *where)
{
    const char *name;
    json_t *v;
    json_object_foreach(o, name, v)
    {
        if (name_index(name, names, n) < 0) {
            char shown[48];
            shown_name(name, shown);
            return fail(ps, "unknown field \"%s\"%s", shown, where);
        }
    }
    return 0;
}

/* The array field of a range or txn: its elements must be objects. */
static int get_array(struct parser *ps, json_t *v, const char *what, size_t *n)
{
    if (!json_is_array(v)) {
        return fail(ps, "\"%s\" must be an array", what);
    }
    *n = json_array_size(v);
    for (size_t i = 0; i < *n; i++) {
        if (!json_is_object(json_array_get(v, i))) {
            return fail(ps, "\"%s\" must hold objects", what);
        }
    }
    return 0;
}

static int parse_reads(struct parser *ps, json_t *v, struct lc_event *e)
{
    static const char *const names[] = {"key", "found", "out"};
    size_t n = 0;
    if (get_array(ps, v, "reads", &n) != 0) {
        return -1;
    }
    struct lc_read *r = line_alloc(ps, n * sizeof *r);
    if (!r) {
        return fail(ps, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(v, i);
        json_t *key = json_object_get(o, "key");
        json_t *found = json_object_get(o, "found");
        json_t *out = json_object_get(o, "out");
        if (only_fields(ps, o, names, 3, " in \"reads\"") != 0) {
            return -1;
        }
        if (!key) {
            return fail(ps, "missing \"key\" in \"reads\"");
        }
        if (get_bytes(ps, key, "key", &r[i].key, &r[i].key_len) != 0 ||
            (out && get_bytes(ps, out, "out", &r[i].out, &r[i].out_len) != 0) ||
            (found && get_bool(ps, found, "found", &r[i].found) != 0)) {
            return -1;
        }
        if (!found) {
            r[i].found = out != NULL;
        }
        if (!r[i].found && out) {
            return fail(ps, "\"out\" of a key not found in \"reads\"");
        }
    }
    e->reads = r;
    e->n_reads = n;
    return 0;
}

static int parse_compares(struct parser *ps, json_t *v, struct lc_event *e)
{
    static const char *const names[] = {"key", "target", "result", "value",
                                        "version"};
    static const char *const targets[] = {"value", "version"};
    size_t n = 0;
    if (get_array(ps, v, "compares", &n) != 0) {
        return -1;
    }
    struct lc_compare *c = line_alloc(ps, n * sizeof *c);
    if (!c) {
        return fail(ps, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(v, i);
        json_t *key = json_object_get(o, "key");
        json_t *target = json_object_get(o, "target");
        json_t *result = json_object_get(o, "result");
        if (only_fields(ps, o, names, 5, " in \"compares\"") != 0) {
            return -1;
        }
        if (!key || !target || !result) {
            return fail(ps,
                        "a compare needs \"key\", \"target\" and "
                        "\"result\"");
        }
        int t = json_is_string(target)
                    ? name_index(json_string_value(target), targets, 2)
                    : -1;
        int r = json_is_string(result)
                    ? name_index(json_string_value(result), cmp_names, 4)
                    : -1;
        if (t < 0) {
            return fail(ps, "\"target\" must be value or version");
        }
        if (r < 0) {
            return fail(ps, "\"result\" must be =, !=, > or <");
        }
        c[i].target = (enum lc_cmp_target)t;
        c[i].result = (enum lc_cmp_result)r;
        if (get_bytes(ps, key, "key", &c[i].key, &c[i].key_len) != 0) {
            return -1;
        }
        const char *operand = t == LC_CMP_VALUE ? "value" : "version";
        const char *other = t == LC_CMP_VALUE ? "version" : "value";
        json_t *x = json_object_get(o, operand);
        if (!x) {
            return fail(ps, "missing \"%s\" in a %s compare", operand, operand);
        }
        if (json_object_get(o, other)) {
            return fail(ps, "\"%s\" in a %s compare", other, operand);
        }
        int64_t ver = 0;
        if (t == LC_CMP_VALUE
                ? get_bytes(ps, x, "value", &c[i].value, &c[i].value_len)
                : get_int(ps, x, "version", 0, INT64_MAX, &ver)) {
            return -1;
        }
        c[i].version = t == LC_CMP_VERSION ? (uint64_t)ver : 0;
    }
    e->compares = c;
    e->n_compares = n;
    return 0;
}

static int parse_branch(struct parser *ps,
                        json_t *v,
                        const char *what,
                        const struct lc_write **out,
                        size_t *out_n)
{
    static const char *const names[] = {"op", "key", "value"};
    static const char *const ops[] = {"put", "delete"};
    size_t n = 0;
    if (get_array(ps, v, what, &n) != 0) {
        return -1;
    }
    struct lc_write *w = line_alloc(ps, n * sizeof *w);
    if (!w) {
        return fail(ps, "out of memory");
    }
    char where[32];
    snprintf(where, sizeof where, " in \"%s\"", what);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(v, i);
        json_t *op = json_object_get(o, "op");
        json_t *key = json_object_get(o, "key");
        json_t *value = json_object_get(o, "value");
        if (only_fields(ps, o, names, 3, where) != 0) {
            return -1;
        }
        int k =
            json_is_string(op) ? name_index(json_string_value(op), ops, 2) : -1;
        if (k < 0) {
            return fail(ps, "\"op\" in \"%s\" must be put or delete", what);
        }
        w[i].del = k == 1;
        if (!key) {
            return fail(ps, "missing \"key\" in \"%s\"", what);
        }
        if (!w[i].del && !value) {
            return fail(ps, "missing \"value\" of a put in \"%s\"", what);
        }
        if (w[i].del && value) {
            return fail(ps, "\"value\" of a delete in \"%s\"", what);
        }
        if (get_bytes(ps, key, "key", &w[i].key, &w[i].key_len) != 0 ||
            (value && get_bytes(ps, value, "value", &w[i].value,
                                &w[i].value_len) != 0)) {
            return -1;
        }
    }
    *out = w;
    *out_n = n;
    return 0;
}

enum field {
    F_CLIENT,
    F_OP,
    F_KEY,
    F_VALUE,
    F_EXPECTED,
    F_FOUND,
    F_OUT,
    F_SWAPPED,
    F_UNKNOWN,
    F_CALL,
    F_RETURN,
    F_READS,
    F_COMPARES,
    F_THEN,
    F_ELSE,
    F_SUCCEEDED,
    F_COUNT
};

static const char *const field_names[F_COUNT] = {
    "client",   "op",      "key",     "value",    "expected", "found",
    "out",      "swapped", "unknown", "call",     "return",   "reads",
    "compares", "then",    "else",    "succeeded"};

/* Which ops may have a field: bit i for op i. */
#define OPS_SINGLE                                                             \
    ((1u << LC_GET) | (1u << LC_PUT) | (1u << LC_APPEND) | (1u << LC_DELETE) | \
     (1u << LC_CAS))
#define OPS_ALL ((1u << N_OPS) - 1)
static const unsigned field_ops[F_COUNT] = {
    [F_CLIENT] = OPS_ALL,        [F_OP] = OPS_ALL,
    [F_KEY] = OPS_SINGLE,        [F_VALUE] = OPS_SINGLE,
    [F_EXPECTED] = OPS_SINGLE,   [F_FOUND] = OPS_SINGLE,
    [F_OUT] = OPS_SINGLE,        [F_SWAPPED] = OPS_SINGLE,
    [F_UNKNOWN] = OPS_ALL,       [F_CALL] = OPS_ALL,
    [F_RETURN] = OPS_ALL,        [F_READS] = 1u << LC_RANGE,
    [F_COMPARES] = 1u << LC_TXN, [F_THEN] = 1u << LC_TXN,
    [F_ELSE] = 1u << LC_TXN,     [F_SUCCEEDED] = 1u << LC_TXN,
};

/* One line's object into e (pointing into blocks of ps). */
static int parse_object(struct parser *ps, json_t *obj, struct lc_event *e)
{
    json_t *f[F_COUNT] = {0};
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v)
    {
        int i = name_index(name, field_names, F_COUNT);
        if (i < 0) {
            char shown[48];
            shown_name(name, shown);
            return fail(ps, "unknown field \"%s\"", shown);
        }
        f[i] = v;
    }
    if (!f[F_OP]) {
        return fail(ps, "missing \"op\"");
    }
    int op = json_is_string(f[F_OP])
                 ? name_index(json_string_value(f[F_OP]), op_names, N_OPS)
                 : -1;
    if (op < 0) {
        return fail(ps,
                    "\"op\" must be get, put, append, delete, cas, range or "
                    "txn");
    }
    for (int i = 0; i < F_COUNT; i++) {
        if (f[i] && !(field_ops[i] >> op & 1)) {
            return fail(ps, "field \"%s\" is not one of %s's", field_names[i],
                        op_names[op]);
        }
    }
    memset(e, 0, sizeof *e);
    e->op = (enum lc_op)op;
    int64_t x = 0;
    if (f[F_CLIENT]) {
        if (get_int(ps, f[F_CLIENT], "client", INT32_MIN, INT32_MAX, &x) != 0) {
            return -1;
        }
        e->client = (int)x;
    }
    if (op <= LC_CAS && !f[F_KEY]) {
        return fail(ps, "missing \"key\"");
    }
    if (f[F_KEY] && get_bytes(ps, f[F_KEY], "key", &e->key, &e->key_len) != 0) {
        return -1;
    }
    if (f[F_UNKNOWN] &&
        get_bool(ps, f[F_UNKNOWN], "unknown", &e->unknown) != 0) {
        return -1;
    }
    if (!f[F_CALL]) {
        return fail(ps, "missing \"call\"");
    }
    if (get_int(ps, f[F_CALL], "call", INT64_MIN, INT64_MAX, &e->call_ns) !=
        0) {
        return -1;
    }
    bool has_return = f[F_RETURN] && !json_is_null(f[F_RETURN]);
    if (has_return && get_int(ps, f[F_RETURN], "return", INT64_MIN, INT64_MAX,
                              &e->return_ns) != 0) {
        return -1;
    }
    if (!e->unknown && !has_return) {
        return fail(ps,
                    "missing \"return\" (required unless \"unknown\" "
                    "is true)");
    }
    if (!e->unknown && e->return_ns < e->call_ns) {
        return fail(ps, "\"return\" is before \"call\"");
    }
    if (!has_return) {
        e->return_ns = 0;
    }
    bool needs_value = op == LC_PUT || op == LC_APPEND || op == LC_CAS;
    if (needs_value && !f[F_VALUE]) {
        return fail(ps, "missing \"value\" (required by %s)", op_names[op]);
    }
    if (f[F_VALUE] &&
        get_bytes(ps, f[F_VALUE], "value", &e->value, &e->value_len) != 0) {
        return -1;
    }
    e->expect_absent = !f[F_EXPECTED] || json_is_null(f[F_EXPECTED]);
    if (!e->expect_absent && get_bytes(ps, f[F_EXPECTED], "expected",
                                       &e->expected, &e->expected_len) != 0) {
        return -1;
    }
    if (f[F_OUT] && get_bytes(ps, f[F_OUT], "out", &e->out, &e->out_len) != 0) {
        return -1;
    }
    e->found = f[F_OUT] != NULL;
    if (f[F_FOUND] && get_bool(ps, f[F_FOUND], "found", &e->found) != 0) {
        return -1;
    }
    if (f[F_SWAPPED] &&
        get_bool(ps, f[F_SWAPPED], "swapped", &e->swapped) != 0) {
        return -1;
    }
    if (op == LC_RANGE) {
        if (!f[F_READS]) {
            return fail(ps, "missing \"reads\" (required by range)");
        }
        if (parse_reads(ps, f[F_READS], e) != 0) {
            return -1;
        }
        if (e->n_reads == 0) {
            return fail(ps, "\"reads\" is empty");
        }
    }
    if (op == LC_TXN) {
        if ((f[F_COMPARES] && parse_compares(ps, f[F_COMPARES], e) != 0) ||
            (f[F_THEN] && parse_branch(ps, f[F_THEN], "then", &e->then_ops,
                                       &e->n_then) != 0) ||
            (f[F_ELSE] && parse_branch(ps, f[F_ELSE], "else", &e->else_ops,
                                       &e->n_else) != 0)) {
            return -1;
        }
        if (e->n_compares + e->n_then + e->n_else == 0) {
            return fail(ps, "a txn needs a compare or an op");
        }
        if (!e->unknown && !f[F_SUCCEEDED]) {
            return fail(ps,
                        "missing \"succeeded\" (required by txn unless "
                        "\"unknown\" is true)");
        }
        if (f[F_SUCCEEDED] &&
            get_bool(ps, f[F_SUCCEEDED], "succeeded", &e->succeeded) != 0) {
            return -1;
        }
    }
    return 0;
}

int lc_history_read(struct lc_history *h, FILE *f, char *err, size_t errlen)
{
    struct parser ps = {.err = err, .errlen = err ? errlen : 0};
    char *line = NULL;
    size_t line_cap = 0;
    int rv = 0;
    if (ps.errlen) {
        err[0] = '\0';
    }
    for (;;) {
        errno = 0;
        ssize_t n = getline(&line, &line_cap, f);
        if (n < 0) {
            if (ferror(f) || errno == ENOMEM) {
                ps.line++;
                rv = fail(&ps, "read error: %s", strerror(errno ? errno : EIO));
            }
            break;
        }
        ps.line++;
        size_t len = (size_t)n;
        if (strspn(line, " \t\r\n") == len) {
            continue; /* blank line */
        }
        json_error_t jerr;
        json_t *obj = json_loadb(
            line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (!obj) {
            rv = fail(&ps, "%s (column %d)", jerr.text, jerr.column);
            break;
        }
        struct lc_event e;
        if (!json_is_object(obj)) {
            rv = fail(&ps, "expected an object");
        } else if (parse_object(&ps, obj, &e) != 0) {
            rv = -1;
        } else if (lc_history_add(h, &e) != 0) {
            rv = fail(&ps, "%s",
                      errno == EINVAL ? "invalid event" : "out of memory");
        }
        json_decref(obj);
        line_free(&ps);
        if (rv != 0) {
            break;
        }
    }
    free(line);
    free(ps.mem);
    return rv;
}
