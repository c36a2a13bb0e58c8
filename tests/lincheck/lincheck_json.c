/* lincheck_json.c: histories as JSON lines, one event per line. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lincheck.h"

static const char *const op_names[] = {"get", "put", "append", "delete", "cas"};

/* ---- writing ------------------------------------------------------------- */

/* A JSON string holding exactly these bytes: each byte >= 0x80 is one
 * \u00XX escape, so the reader gets the same bytes back. */
static void write_string(FILE *f, const void *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *b = p;
    putc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = b[i];
        switch (c) {
            case '"':
                fputs("\\\"", f);
                break;
            case '\\':
                fputs("\\\\", f);
                break;
            case '\n':
                fputs("\\n", f);
                break;
            case '\t':
                fputs("\\t", f);
                break;
            case '\r':
                fputs("\\r", f);
                break;
            default:
                if (c < 0x20 || c >= 0x7f) {
                    fputs("\\u00", f);
                    putc(hex[c >> 4], f);
                    putc(hex[c & 15], f);
                } else {
                    putc(c, f);
                }
        }
    }
    putc('"', f);
}

static void write_field(FILE *f, const char *name, const void *p, size_t n)
{
    fprintf(f, ",\"%s\":", name);
    write_string(f, p, n);
}

static void write_event(FILE *f, const struct lc_event *e)
{
    fprintf(f, "{\"client\":%d,\"op\":\"%s\"", e->client, op_names[e->op]);
    write_field(f, "key", e->key, e->key_len);
    switch (e->op) {
        case LC_GET:
            fprintf(f, ",\"found\":%s", e->found ? "true" : "false");
            if (e->found) {
                write_field(f, "out", e->out, e->out_len);
            }
            break;
        case LC_PUT:
        case LC_APPEND:
            write_field(f, "value", e->value, e->value_len);
            break;
        case LC_DELETE:
            fprintf(f, ",\"found\":%s", e->found ? "true" : "false");
            break;
        case LC_CAS:
            if (e->expect_absent) {
                fputs(",\"expected\":null", f);
            } else {
                write_field(f, "expected", e->expected, e->expected_len);
            }
            write_field(f, "value", e->value, e->value_len);
            fprintf(f, ",\"swapped\":%s", e->swapped ? "true" : "false");
            if (!e->swapped) {
                fprintf(f, ",\"found\":%s", e->found ? "true" : "false");
                if (e->found) {
                    write_field(f, "out", e->out, e->out_len);
                }
            }
            break;
    }
    if (e->unknown) {
        fputs(",\"unknown\":true", f);
    }
    fprintf(f, ",\"call\":%" PRId64, e->call_ns);
    if (!e->unknown) {
        fprintf(f, ",\"return\":%" PRId64, e->return_ns);
    }
    fputs("}\n", f);
}

int lc_history_write(const struct lc_history *h, FILE *f)
{
    size_t n = lc_history_size(h);
    for (size_t i = 0; i < n; i++) {
        write_event(f, lc_history_get(h, i));
        if (ferror(f)) {
            return -1;
        }
    }
    if (fflush(f) != 0 || ferror(f)) {
        return -1;
    }
    return 0;
}

/* ---- reading ------------------------------------------------------------- */

/* A growable byte buffer for a decoded string. */
struct buf
{
    char *p;    /* bytes */
    size_t n;   /* used */
    size_t cap; /* allocated */
};

static int buf_put(struct buf *b, char c)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        char *p = realloc(b->p, cap);
        if (!p) {
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    b->p[b->n++] = c;
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
    F_COUNT
};

static const char *const field_names[F_COUNT] = {
    "client", "op",      "key",     "value", "expected", "found",
    "out",    "swapped", "unknown", "call",  "return"};

/* The state of reading one line. */
struct parser
{
    const char *p;           /* next character */
    const char *end;         /* end of the line */
    size_t line;             /* line number, from 1 */
    char *err;               /* error message buffer */
    size_t errlen;           /* its size */
    bool seen[F_COUNT];      /* fields present on this line */
    bool null[F_COUNT];      /* fields given as null */
    struct buf str[F_COUNT]; /* decoded strings (key, value, ...) */
    int64_t num[F_COUNT];    /* integers (client, call, return) */
    bool flag[F_COUNT];      /* booleans (found, swapped, unknown) */
    struct buf name;         /* the field name being read */
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

static void skip_space(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' ||
                               *ps->p == '\r' || *ps->p == '\n')) {
        ps->p++;
    }
}

/* Consume c (after spaces) or fail. */
static int expect(struct parser *ps, char c, const char *what)
{
    skip_space(ps);
    if (ps->p >= ps->end) {
        return fail(ps, "unexpected end of line, expected %s", what);
    }
    if (*ps->p != c) {
        unsigned char got = (unsigned char)*ps->p;
        if (got >= 0x20 && got < 0x7f) {
            return fail(ps, "expected %s, found '%c'", what, got);
        }
        return fail(ps, "expected %s, found byte 0x%02x", what, got);
    }
    ps->p++;
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* A JSON string into b (replacing its content); `what` names it. */
static int parse_string(struct parser *ps, struct buf *b, const char *what)
{
    b->n = 0;
    if (expect(ps, '"', "a string") != 0) {
        return -1;
    }
    for (;;) {
        if (ps->p >= ps->end) {
            return fail(ps, "unterminated string in %s", what);
        }
        unsigned char c = (unsigned char)*ps->p++;
        if (c == '"') {
            return 0;
        }
        if (c < 0x20) {
            return fail(ps, "raw control byte 0x%02x in %s (escape it)", c,
                        what);
        }
        if (c == '\\') {
            if (ps->p >= ps->end) {
                return fail(ps, "unterminated string in %s", what);
            }
            char x = *ps->p++;
            switch (x) {
                case '"':
                case '\\':
                case '/':
                    c = (unsigned char)x;
                    break;
                case 'n':
                    c = '\n';
                    break;
                case 't':
                    c = '\t';
                    break;
                case 'r':
                    c = '\r';
                    break;
                case 'b':
                    c = '\b';
                    break;
                case 'f':
                    c = '\f';
                    break;
                case 'u': {
                    unsigned v = 0;
                    for (int i = 0; i < 4; i++) {
                        int d = ps->p < ps->end ? hex_digit(*ps->p) : -1;
                        if (d < 0) {
                            return fail(ps,
                                        "bad \\u escape in %s (4 hex digits)",
                                        what);
                        }
                        v = v * 16 + (unsigned)d;
                        ps->p++;
                    }
                    if (v > 0xff) {
                        return fail(
                            ps,
                            "\\u%04x in %s is above \\u00ff (one escape "
                            "per byte)",
                            v, what);
                    }
                    c = (unsigned char)v;
                    break;
                }
                default:
                    if ((unsigned char)x >= 0x20 && (unsigned char)x < 0x7f) {
                        return fail(ps, "bad escape \\%c in %s", x, what);
                    }
                    return fail(ps, "bad escape in %s", what);
            }
        }
        if (buf_put(b, (char)c) != 0) {
            return fail(ps, "out of memory");
        }
    }
}

/* Does the input continue with word (a literal)? Consume it if so. */
static bool take_word(struct parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
        return false;
    }
    const char *after = ps->p + n;
    if (after < ps->end && ((*after >= 'a' && *after <= 'z') ||
                            (*after >= '0' && *after <= '9'))) {
        return false;
    }
    ps->p = after;
    return true;
}

static int parse_bool(struct parser *ps, bool *out, const char *what)
{
    skip_space(ps);
    if (take_word(ps, "true")) {
        *out = true;
    } else if (take_word(ps, "false")) {
        *out = false;
    } else {
        return fail(ps, "\"%s\" must be true or false", what);
    }
    return 0;
}

static int parse_int(struct parser *ps, int64_t *out, const char *what)
{
    skip_space(ps);
    bool neg = ps->p < ps->end && *ps->p == '-';
    const char *q = ps->p + neg;
    if (q >= ps->end || *q < '0' || *q > '9') {
        return fail(ps, "\"%s\" must be an integer", what);
    }
    uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX;
    for (; q < ps->end && *q >= '0' && *q <= '9'; q++) {
        unsigned d = (unsigned)(*q - '0');
        if (v > (limit - d) / 10) {
            return fail(ps, "\"%s\" is out of range", what);
        }
        v = v * 10 + d;
    }
    if (q < ps->end && (*q == '.' || *q == 'e' || *q == 'E')) {
        return fail(ps, "\"%s\" must be an integer", what);
    }
    ps->p = q;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int parse_field(struct parser *ps, enum field f)
{
    const char *name = field_names[f];
    skip_space(ps);
    bool nullable = f == F_EXPECTED || f == F_RETURN;
    if (nullable && take_word(ps, "null")) {
        ps->null[f] = true;
        return 0;
    }
    switch (f) {
        case F_CLIENT:
        case F_CALL:
        case F_RETURN:
            if (parse_int(ps, &ps->num[f], name) != 0) {
                return -1;
            }
            if (f == F_CLIENT &&
                (ps->num[f] < -2147483647 - 1 || ps->num[f] > 2147483647)) {
                return fail(ps, "\"client\" is out of range");
            }
            return 0;
        case F_FOUND:
        case F_SWAPPED:
        case F_UNKNOWN:
            return parse_bool(ps, &ps->flag[f], name);
        default:
            if (ps->p < ps->end && *ps->p != '"') {
                return fail(ps, "\"%s\" must be a string", name);
            }
            return parse_string(ps, &ps->str[f], name);
    }
}

/* One line's object into e (pointing into ps's buffers). */
static int parse_line(struct parser *ps, struct lc_event *e)
{
    struct buf *nb = &ps->name;
    memset(ps->seen, 0, sizeof ps->seen);
    memset(ps->null, 0, sizeof ps->null);
    memset(ps->flag, 0, sizeof ps->flag);
    if (expect(ps, '{', "'{'") != 0) {
        return -1;
    }
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
    } else {
        for (;;) {
            if (parse_string(ps, nb, "a field name") != 0) {
                return -1;
            }
            enum field f = F_COUNT;
            for (int i = 0; i < F_COUNT; i++) {
                if (strlen(field_names[i]) == nb->n &&
                    memcmp(field_names[i], nb->p, nb->n) == 0) {
                    f = (enum field)i;
                }
            }
            if (f == F_COUNT) {
                struct buf shown = {0};
                for (size_t i = 0; i < nb->n && i < 40; i++) {
                    unsigned char c = (unsigned char)nb->p[i];
                    buf_put(&shown, c >= 0x20 && c < 0x7f ? (char)c : '?');
                }
                buf_put(&shown, '\0');
                fail(ps, "unknown field \"%s\"", shown.p ? shown.p : "");
                free(shown.p);
                return -1;
            }
            if (ps->seen[f]) {
                return fail(ps, "field \"%s\" given twice", field_names[f]);
            }
            ps->seen[f] = true;
            if (expect(ps, ':', "':'") != 0 || parse_field(ps, f) != 0) {
                return -1;
            }
            skip_space(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (expect(ps, '}', "',' or '}'") != 0) {
                return -1;
            }
            break;
        }
    }
    skip_space(ps);
    if (ps->p < ps->end) {
        return fail(ps, "unexpected text after the object");
    }

    if (!ps->seen[F_OP]) {
        return fail(ps, "missing \"op\"");
    }
    const struct buf *op = &ps->str[F_OP];
    int opi = -1;
    for (int i = 0; i < 5; i++) {
        if (strlen(op_names[i]) == op->n &&
            memcmp(op_names[i], op->p, op->n) == 0) {
            opi = i;
        }
    }
    if (opi < 0) {
        return fail(ps, "\"op\" must be get, put, append, delete or cas");
    }
    if (!ps->seen[F_KEY]) {
        return fail(ps, "missing \"key\"");
    }
    if (!ps->seen[F_CALL]) {
        return fail(ps, "missing \"call\"");
    }
    bool unknown = ps->seen[F_UNKNOWN] && ps->flag[F_UNKNOWN];
    bool has_return = ps->seen[F_RETURN] && !ps->null[F_RETURN];
    if (!unknown && !has_return) {
        return fail(ps,
                    "missing \"return\" (required unless \"unknown\" "
                    "is true)");
    }
    if (!unknown && ps->num[F_RETURN] < ps->num[F_CALL]) {
        return fail(ps, "\"return\" is before \"call\"");
    }
    if ((opi == LC_PUT || opi == LC_APPEND || opi == LC_CAS) &&
        !ps->seen[F_VALUE]) {
        return fail(ps, "missing \"value\" (required by %s)", op_names[opi]);
    }

    memset(e, 0, sizeof *e);
    e->client = ps->seen[F_CLIENT] ? (int)ps->num[F_CLIENT] : 0;
    e->op = (enum lc_op)opi;
    e->key = ps->str[F_KEY].p;
    e->key_len = ps->str[F_KEY].n;
    if (ps->seen[F_VALUE]) {
        e->value = ps->str[F_VALUE].p;
        e->value_len = ps->str[F_VALUE].n;
    }
    e->expect_absent = !ps->seen[F_EXPECTED] || ps->null[F_EXPECTED];
    if (!e->expect_absent) {
        e->expected = ps->str[F_EXPECTED].p;
        e->expected_len = ps->str[F_EXPECTED].n;
    }
    bool has_out = ps->seen[F_OUT];
    if (has_out) {
        e->out = ps->str[F_OUT].p;
        e->out_len = ps->str[F_OUT].n;
    }
    e->found = ps->seen[F_FOUND] ? ps->flag[F_FOUND] : has_out;
    e->swapped = ps->flag[F_SWAPPED];
    e->unknown = unknown;
    e->call_ns = ps->num[F_CALL];
    e->return_ns = has_return ? ps->num[F_RETURN] : 0;
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
        ps.p = line;
        ps.end = line + n;
        if (ps.end > ps.p && ps.end[-1] == '\n') {
            ps.end--; /* a string cannot run on past the line */
        }
        skip_space(&ps);
        if (ps.p == ps.end) {
            continue; /* blank line */
        }
        struct lc_event e;
        if (parse_line(&ps, &e) != 0) {
            rv = -1;
            break;
        }
        if (lc_history_add(h, &e) != 0) {
            rv = fail(&ps, "%s",
                      errno == EINVAL ? "invalid event" : "out of memory");
            break;
        }
    }
    free(line);
    for (int i = 0; i < F_COUNT; i++) {
        free(ps.str[i].p);
    }
    free(ps.name.p);
    return rv;
}
