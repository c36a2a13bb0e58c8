/* kvctl_parse.c: kvctl's input: tokens, key ranges and their options,
 * transactions from etcdctl's text form or from JSON. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clerk/clerk.h"
#include "kvctl_parse.h"

static bool fail(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return false;
}

/* ------------------------------------------------------------- tokens */

static int hexval(char c)
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

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A "..." string at *p (past the opening quote): its bytes to *out, up
 * to the closing quote, which *p ends past. NULL or the reason. */
static const char *unquote(char **p, char **out)
{
    char *s = *p, *o = *out;
    for (;;) {
        if (!*s) {
            return "unterminated \"";
        }
        if (*s == '"') {
            s++;
            break;
        }
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        s++;
        const char *from = "nrt\"\\", *to = "\n\r\t\"\\";
        const char *hit = *s ? strchr(from, *s) : NULL;
        if (hit) {
            *o++ = to[hit - from];
            s++;
        } else if (*s == 'x') {
            int hi = hexval(s[1]), lo = hi >= 0 ? hexval(s[2]) : -1;
            if (hi < 0 || lo < 0) {
                return "\\x needs two hex digits";
            }
            *o++ = (char)(hi << 4 | lo);
            s += 3;
        } else {
            return "unknown escape in \"...\"";
        }
    }
    *p = s;
    *out = o;
    return NULL;
}

int kvctl_tokenize(char *line, struct tok *t, int max, const char **why)
{
    int n = 0;
    char *p = line;
    for (;;) {
        while (blank(*p)) {
            p++;
        }
        if (!*p) {
            return n;
        }
        if (n == max) {
            *why = "too many tokens";
            return -1;
        }
        char *out = p, *start = p;
        if (*p == '"') {
            p++;
            if ((*why = unquote(&p, &out)) != NULL) {
                return -1;
            }
        } else if (*p == '\'') {
            p++;
            while (*p && *p != '\'') {
                *out++ = *p++;
            }
            if (*p != '\'') {
                *why = "unterminated '";
                return -1;
            }
            p++;
        } else {
            while (*p && !blank(*p)) {
                *out++ = *p++;
            }
        }
        bool at_end = !*p;
        if (*p && !blank(*p)) {
            *why = "a quote must end its token";
            return -1;
        }
        t[n].p = start;
        t[n].len = (size_t)(out - start);
        n++;
        if (at_end) {
            *out = 0;
            return n;
        }
        p++;
        *out = 0;
    }
}

/* ------------------------------------------------------- range specs */

static bool parse_u64(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        return false;
    }
    *v = x;
    return true;
}

bool kvctl_parse_lease_id(const char *s, uint64_t *id)
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
    }
    if (!*s || strlen(s) > 16) {
        return false;
    }
    uint64_t v = 0;
    for (; *s; s++) {
        int d = *s >= '0' && *s <= '9'   ? *s - '0'
                : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
                : *s >= 'A' && *s <= 'F' ? *s - 'A' + 10
                                         : -1;
        if (d < 0) {
            return false;
        }
        v = v << 4 | (uint64_t)d;
    }
    *id = v;
    return v != 0;
}

bool kvctl_parse_spec(enum spec_cmd cmd,
                      struct tok *t,
                      int n,
                      struct range_spec *s,
                      char *why,
                      size_t why_len)
{
    static const char *const use[] = {
        [SPEC_GET] =
            "get KEY [END] [--prefix] [--from-key] [--limit N] "
            "[--keys-only] [--count-only] [--rev-info] "
            "[--sort-order ascend|descend] [--print-value-only]",
        [SPEC_PUT] =
            "put KEY VALUE|-|--file F [--prev-kv] [--ignore-value] "
            "[--lease ID]",
        [SPEC_DEL] = "del KEY [END] [--prefix] [--from-key] [--prev-kv]",
    };
    memset(s, 0, sizeof *s);
    struct tok pos[2];
    int n_pos = 0;
    bool prefix = false, from_key = false, options_end = false;
    for (int i = 0; i < n; i++) {
        const char *a = t[i].p;
        bool opt = !options_end && a[0] == '-' && a[1] == '-';
        if (!opt) {
            if (n_pos == 2) {
                return fail(why, why_len, "usage: %s", use[cmd]);
            }
            pos[n_pos++] = t[i];
            continue;
        }
        if (!strcmp(a, "--")) {
            options_end = true;
            continue;
        }
        s->extended = true;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const char *val = eq ? eq + 1 : (i + 1 < n ? t[i + 1].p : NULL);
#define IS(name) (nl == strlen(name) && !strncmp(a, name, nl))
#define TAKE_VALUE() \
    do {             \
        if (!eq) {   \
            i++;     \
        }            \
    } while (0)
        if (cmd != SPEC_PUT && IS("--prefix")) {
            prefix = true;
        } else if (cmd != SPEC_PUT && IS("--from-key")) {
            from_key = true;
        } else if (cmd == SPEC_GET && IS("--limit")) {
            if (!val || !parse_u64(val, &s->limit)) {
                return fail(why, why_len, "--limit needs a number");
            }
            TAKE_VALUE();
        } else if (cmd == SPEC_GET && IS("--sort-order")) {
            if (val && !strcmp(val, "ascend")) {
                s->flags |= CLERK_RANGE_SORT_ASCEND;
            } else if (val && !strcmp(val, "descend")) {
                s->flags |= CLERK_RANGE_SORT_DESCEND;
            } else {
                return fail(why, why_len,
                            "--sort-order wants ascend or descend");
            }
            TAKE_VALUE();
        } else if (cmd == SPEC_GET && IS("--keys-only")) {
            s->flags |= CLERK_RANGE_KEYS_ONLY;
        } else if (cmd == SPEC_GET && IS("--count-only")) {
            s->flags |= CLERK_RANGE_COUNT_ONLY;
        } else if (cmd == SPEC_GET && IS("--rev-info")) {
            s->rev_info = true;
        } else if (cmd == SPEC_GET && IS("--print-value-only")) {
            s->print_value_only = true;
        } else if (cmd == SPEC_PUT && IS("--prev-kv")) {
            s->flags |= CLERK_PUT_PREV_KV;
        } else if (cmd == SPEC_PUT && IS("--ignore-value")) {
            s->flags |= CLERK_PUT_IGNORE_VALUE;
        } else if (cmd == SPEC_PUT && IS("--lease")) {
            if (!val || !kvctl_parse_lease_id(val, &s->lease)) {
                return fail(why, why_len,
                            "--lease needs a lease id in hex (as kvctl "
                            "lease grant prints it)");
            }
            TAKE_VALUE();
        } else if (cmd == SPEC_PUT && IS("--file")) {
            if (!val || !*val) {
                return fail(why, why_len, "--file needs a FILE");
            }
            s->value_file = val;
            TAKE_VALUE();
        } else if (cmd == SPEC_DEL && IS("--prev-kv")) {
            s->flags |= CLERK_DELETE_PREV_KV;
        } else {
            return fail(why, why_len, "unknown option %.60s; usage: %s", a,
                        use[cmd]);
        }
#undef IS
#undef TAKE_VALUE
    }
    bool ignore = (s->flags & CLERK_PUT_IGNORE_VALUE) != 0 || s->value_file;
    if (s->value_file && (s->flags & CLERK_PUT_IGNORE_VALUE)) {
        return fail(why, why_len,
                    "--file and --ignore-value exclude each other");
    }
    int want_min = cmd == SPEC_PUT && !ignore ? 2 : 1;
    int want_max = cmd == SPEC_PUT && ignore ? 1 : 2;
    if (n_pos < want_min || n_pos > want_max) {
        return fail(why, why_len, "usage: %s", use[cmd]);
    }
    s->key = pos[0];
    if (s->key.len == 0) {
        return fail(why, why_len, "the key is empty");
    }
    if (cmd == SPEC_PUT) {
        if (n_pos == 2) {
            s->value = pos[1];
            s->value_stdin = !strcmp(pos[1].p, "-");
        } else {
            s->value = (struct tok){(char *)"", 0};
        }
        return true;
    }
    if ((prefix || from_key) && n_pos == 2) {
        return fail(why, why_len, "END cannot go with --prefix or --from-key");
    }
    if (prefix && from_key) {
        return fail(why, why_len, "--prefix and --from-key exclude each other");
    }
    if (prefix) {
        if (s->key.len > sizeof s->end_buf) {
            return fail(why, why_len, "the prefix is too long");
        }
        s->end_len = clerk_prefix_end(s->key.p, s->key.len, s->end_buf);
        s->end = s->end_buf;
    } else if (from_key) {
        s->end = "";
        s->end_len = 1; /* "\0": every key from KEY on */
    } else if (n_pos == 2) {
        s->end = pos[1].p;
        s->end_len = pos[1].len;
        s->extended = true;
    }
    s->ranged = s->end != NULL;
    return true;
}

/* ------------------------------------------------- text transactions */

/* One compare line: TARGET("KEY"[, "END"]) OP VALUE. */
static bool parse_compare(struct clerk_txn *txn,
                          char *line,
                          char *why,
                          size_t why_len)
{
    char *p = line;
    while (blank(*p)) {
        p++;
    }
    char *open = strchr(p, '(');
    if (!open) {
        return fail(why, why_len,
                    "a compare looks like mod(\"key\") > \"5\" "
                    "(targets: value, version, create, mod)");
    }
    size_t tl = (size_t)(open - p);
    char target[16];
    snprintf(target, sizeof target, "%.*s", (int)(tl < 15 ? tl : 15), p);
    char *q = open + 1;
    while (blank(*q)) {
        q++;
    }
    if (*q != '"') {
        return fail(why, why_len, "the key of a compare is in \"...\"");
    }
    q++;
    char *key = q, *out = q;
    const char *err = unquote(&q, &out);
    if (err) {
        return fail(why, why_len, "%s", err);
    }
    size_t key_len = (size_t)(out - key);
    char *end = NULL;
    size_t end_len = 0;
    while (blank(*q)) {
        q++;
    }
    if (*q == ',') {
        q++;
        while (blank(*q)) {
            q++;
        }
        if (*q != '"') {
            return fail(why, why_len,
                        "the range end of a compare is in \"...\"");
        }
        q++;
        end = out = q;
        if ((err = unquote(&q, &out)) != NULL) {
            return fail(why, why_len, "%s", err);
        }
        end_len = (size_t)(out - end);
        while (blank(*q)) {
            q++;
        }
    }
    if (*q != ')') {
        return fail(why, why_len, "missing ) after the key");
    }
    q++;
    while (blank(*q)) {
        q++;
    }
    enum clerk_compare_result r;
    if (!strncmp(q, "!=", 2)) {
        r = CLERK_CMP_NOT_EQUAL;
        q += 2;
    } else if (!strncmp(q, "==", 2)) {
        r = CLERK_CMP_EQUAL;
        q += 2;
    } else if (*q == '=' || *q == '<' || *q == '>') {
        r = *q == '='   ? CLERK_CMP_EQUAL
            : *q == '<' ? CLERK_CMP_LESS
                        : CLERK_CMP_GREATER;
        q++;
    } else {
        return fail(why, why_len, "the operator is one of = != < >");
    }
    while (blank(*q)) {
        q++;
    }
    char *val = q;
    size_t val_len;
    if (*q == '"') {
        q++;
        val = out = q;
        if ((err = unquote(&q, &out)) != NULL) {
            return fail(why, why_len, "%s", err);
        }
        val_len = (size_t)(out - val);
        while (blank(*q)) {
            q++;
        }
        if (*q) {
            return fail(why, why_len, "text after the value");
        }
    } else {
        while (*q && !blank(*q)) {
            q++;
        }
        val_len = (size_t)(q - val);
        while (blank(*q)) {
            q++;
        }
        if (*q) {
            return fail(why, why_len, "text after the value");
        }
    }
    val[val_len] = 0;
    int rv;
    uint64_t num = 0;
    bool numeric = strcmp(target, "value") != 0;
    if (numeric && !parse_u64(val, &num)) {
        return fail(why, why_len, "%s compares a number, not '%.40s'", target,
                    val);
    }
    if (!strcmp(target, "value")) {
        rv = clerk_txn_compare_value(txn, key, key_len, r, val, val_len);
    } else if (!strcmp(target, "version") || !strcmp(target, "ver")) {
        rv = clerk_txn_compare_version(txn, key, key_len, r, num);
    } else if (!strcmp(target, "create") || !strcmp(target, "c")) {
        rv = clerk_txn_compare_create(txn, key, key_len, r, num);
    } else if (!strcmp(target, "mod") || !strcmp(target, "m")) {
        rv = clerk_txn_compare_mod(txn, key, key_len, r, num);
    } else {
        return fail(why, why_len,
                    "unknown compare target '%s' (value, version, create, "
                    "mod)",
                    target);
    }
    if (rv == CLERK_OK && end) {
        rv = clerk_txn_compare_range_end(txn, end, end_len);
    }
    if (rv) {
        return fail(why, why_len, "%s", clerk_strerror(rv));
    }
    return true;
}

/* One op line: put|get|del with their arguments. */
static bool parse_op(struct clerk_txn *txn,
                     enum clerk_txn_branch branch,
                     char *line,
                     char *why,
                     size_t why_len)
{
    struct tok t[16];
    const char *err = NULL;
    int n = kvctl_tokenize(line, t, 16, &err);
    if (n < 0) {
        return fail(why, why_len, "%s", err);
    }
    enum spec_cmd cmd;
    if (!strcmp(t[0].p, "put")) {
        cmd = SPEC_PUT;
    } else if (!strcmp(t[0].p, "get") || !strcmp(t[0].p, "range")) {
        cmd = SPEC_GET;
    } else if (!strcmp(t[0].p, "del") || !strcmp(t[0].p, "delete")) {
        cmd = SPEC_DEL;
    } else {
        return fail(why, why_len, "unknown op '%.40s' (put, get, del)", t[0].p);
    }
    struct range_spec s;
    if (!kvctl_parse_spec(cmd, t + 1, n - 1, &s, why, why_len)) {
        return false;
    }
    if (s.value_file) {
        return fail(why, why_len, "--file cannot go in a transaction");
    }
    int rv;
    switch (cmd) {
        case SPEC_PUT:
            rv = clerk_txn_put_lease(txn, branch, s.key.p, s.key.len, s.value.p,
                                     s.value.len, s.lease, s.flags);
            break;
        case SPEC_GET:
            rv = clerk_txn_range(txn, branch, s.key.p, s.key.len, s.end,
                                 s.end_len, s.limit, s.flags);
            break;
        default:
            rv = clerk_txn_delete(txn, branch, s.key.p, s.key.len, s.end,
                                  s.end_len, s.flags);
            break;
    }
    if (rv) {
        return fail(why, why_len, "%s", clerk_strerror(rv));
    }
    return true;
}

bool kvctl_txn_parse_text(const char *text,
                          struct clerk_txn **out,
                          char *why,
                          size_t why_len)
{
    *out = NULL;
    char *copy = strdup(text);
    struct clerk_txn *txn = clerk_txn_new();
    if (!copy || !txn) {
        free(copy);
        clerk_txn_free(txn);
        return fail(why, why_len, "out of memory");
    }
    int section = 0; /* compares, success ops, failure ops */
    int line_no = 0;
    bool ok = true;
    char *save = NULL, *p = copy;
    for (char *line = p; line && ok; line = save) {
        char *nl = strchr(line, '\n');
        save = nl ? nl + 1 : NULL;
        if (nl) {
            *nl = 0;
        }
        line_no++;
        char *s = line;
        while (blank(*s)) {
            s++;
        }
        if (*s == '#') {
            continue;
        }
        if (!*s) {
            if (!save || !*save) {
                break; /* the text's last newline */
            }
            if (++section > 2) {
                ok = fail(why, why_len,
                          "line %d: more than three sections (compares, "
                          "success ops, failure ops)",
                          line_no);
            }
            continue;
        }
        char msg[200];
        ok = section == 0
                 ? parse_compare(txn, s, msg, sizeof msg)
                 : parse_op(txn, section == 1 ? CLERK_TXN_THEN : CLERK_TXN_ELSE,
                            s, msg, sizeof msg);
        if (!ok) {
            fail(why, why_len, "line %d: %s", line_no, msg);
        }
    }
    free(copy);
    if (!ok) {
        clerk_txn_free(txn);
        return false;
    }
    *out = txn;
    return true;
}

/* ------------------------------------------------------------- base64 */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *kvctl_base64(const void *p, size_t n)
{
    const unsigned char *s = p;
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out) {
        return NULL;
    }
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)s[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= s[i + 2];
        }
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *o = 0;
    return out;
}

void *kvctl_unbase64(const char *s, size_t *n)
{
    size_t len = strlen(s);
    unsigned char *out = malloc(len / 4 * 3 + 3), *o = out;
    if (!out) {
        return NULL;
    }
    uint32_t v = 0;
    int bits = 0;
    size_t pad = 0;
    for (size_t i = 0; i < len; i++) {
        const char *hit = s[i] ? strchr(b64, s[i]) : NULL;
        if (s[i] == '=') {
            pad++;
            continue;
        }
        if (!hit || pad) {
            free(out);
            return NULL;
        }
        v = v << 6 | (uint32_t)(hit - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (unsigned char)(v >> bits);
        }
    }
    if ((len % 4 != 0 && pad) || pad > 2) {
        free(out);
        return NULL;
    }
    *n = (size_t)(o - out);
    *o = 0;
    return out;
}

/* ------------------------------------------------- JSON transactions */

/* A base64 member of o (absent: empty); false for bad base64. */
static bool json_b64(json_t *o, const char *name, void **p, size_t *n)
{
    json_t *v = json_object_get(o, name);
    *p = NULL;
    *n = 0;
    if (!v) {
        return true;
    }
    if (!json_is_string(v)) {
        return false;
    }
    *p = kvctl_unbase64(json_string_value(v), n);
    return *p != NULL;
}

/* A number member of o, as a number or a string (absent: 0). */
static bool json_u64(json_t *o, const char *name, uint64_t *v)
{
    json_t *j = json_object_get(o, name);
    *v = 0;
    if (!j) {
        return true;
    }
    if (json_is_integer(j) && json_integer_value(j) >= 0) {
        *v = (uint64_t)json_integer_value(j);
        return true;
    }
    return json_is_string(j) && parse_u64(json_string_value(j), v);
}

static bool json_flag(json_t *o, const char *name)
{
    return json_is_true(json_object_get(o, name));
}

/* An enum member given by name (or number); absent: 0. */
static bool json_enum(json_t *o,
                      const char *name,
                      const char *const *names,
                      int n,
                      int *v)
{
    json_t *j = json_object_get(o, name);
    *v = 0;
    if (!j) {
        return true;
    }
    if (json_is_integer(j)) {
        *v = (int)json_integer_value(j);
        return *v >= 0 && *v < n;
    }
    for (int i = 0; json_is_string(j) && i < n; i++) {
        if (!strcmp(json_string_value(j), names[i])) {
            *v = i;
            return true;
        }
    }
    return false;
}

static bool json_txn(json_t *o, struct clerk_txn *txn, char *why, size_t wl);

static bool json_compare(json_t *c, struct clerk_txn *txn, char *why, size_t wl)
{
    static const char *const results[] = {"EQUAL", "GREATER", "LESS",
                                          "NOT_EQUAL"};
    static const char *const targets[] = {"VERSION", "CREATE", "MOD", "VALUE"};
    int result, target;
    void *key = NULL, *end = NULL, *val = NULL;
    size_t kl, el, vl;
    uint64_t num = 0;
    bool ok = false;
    if (!json_is_object(c)) {
        return fail(why, wl, "a compare is an object");
    }
    if (!json_enum(c, "result", results, 4, &result) ||
        !json_enum(c, "target", targets, 4, &target)) {
        return fail(why, wl,
                    "compare: result is EQUAL, GREATER, LESS or NOT_EQUAL; "
                    "target VERSION, CREATE, MOD or VALUE");
    }
    static const char *const num_field[] = {"version", "create_revision",
                                            "mod_revision"};
    if (!json_b64(c, "key", &key, &kl) ||
        !json_b64(c, "range_end", &end, &el) ||
        !json_b64(c, "value", &val, &vl) ||
        (target != 3 && !json_u64(c, num_field[target], &num))) {
        fail(why, wl, "compare: bad base64 or number");
        goto out;
    }
    enum clerk_compare_result r = (enum clerk_compare_result)result;
    int rv = target == 0   ? clerk_txn_compare_version(txn, key, kl, r, num)
             : target == 1 ? clerk_txn_compare_create(txn, key, kl, r, num)
             : target == 2
                 ? clerk_txn_compare_mod(txn, key, kl, r, num)
                 : clerk_txn_compare_value(txn, key, kl, r, val ? val : "", vl);
    if (!rv && end) {
        rv = clerk_txn_compare_range_end(txn, end, el);
    }
    if (rv) {
        fail(why, wl, "compare: %s", clerk_strerror(rv));
        goto out;
    }
    ok = true;
out:
    free(key);
    free(end);
    free(val);
    return ok;
}

static bool json_op(json_t *op,
                    struct clerk_txn *txn,
                    enum clerk_txn_branch br,
                    char *why,
                    size_t wl)
{
    json_t *v;
    void *key = NULL, *end = NULL, *val = NULL;
    size_t kl = 0, el = 0, vl = 0;
    int rv;
    bool ok = false;
    if ((v = json_object_get(op, "request_txn"))) {
        struct clerk_txn *nested = clerk_txn_new();
        if (!nested) {
            return fail(why, wl, "out of memory");
        }
        if (!json_txn(v, nested, why, wl)) {
            clerk_txn_free(nested);
            return false;
        }
        rv = clerk_txn_txn(txn, br, nested);
        if (rv) {
            clerk_txn_free(nested);
            return fail(why, wl, "request_txn: %s", clerk_strerror(rv));
        }
        return true;
    }
    json_t *put = json_object_get(op, "request_put");
    json_t *range = json_object_get(op, "request_range");
    json_t *del = json_object_get(op, "request_delete_range");
    v = put ? put : range ? range : del;
    if (!json_is_object(v)) {
        return fail(why, wl,
                    "an op is {\"request_put\"|\"request_range\"|"
                    "\"request_delete_range\"|\"request_txn\": {...}}");
    }
    uint64_t limit = 0, lease = 0;
    if (!json_b64(v, "key", &key, &kl) ||
        !json_b64(v, "range_end", &end, &el) ||
        !json_b64(v, "value", &val, &vl) || !json_u64(v, "limit", &limit) ||
        !json_u64(v, "lease", &lease)) {
        fail(why, wl, "op: bad base64 or number");
        goto out;
    }
    if (put) {
        unsigned f =
            (json_flag(v, "prev_kv") ? CLERK_PUT_PREV_KV : 0) |
            (json_flag(v, "ignore_value") ? CLERK_PUT_IGNORE_VALUE : 0);
        rv = clerk_txn_put_lease(txn, br, key, kl, val, vl, lease, f);
    } else if (range) {
        unsigned f = (json_flag(v, "keys_only") ? CLERK_RANGE_KEYS_ONLY : 0) |
                     (json_flag(v, "count_only") ? CLERK_RANGE_COUNT_ONLY : 0);
        rv = clerk_txn_range(txn, br, key, kl, end, el, limit, f);
    } else {
        rv = clerk_txn_delete(
            txn, br, key, kl, end, el,
            json_flag(v, "prev_kv") ? CLERK_DELETE_PREV_KV : 0);
    }
    if (rv) {
        fail(why, wl, "op: %s", clerk_strerror(rv));
        goto out;
    }
    ok = true;
out:
    free(key);
    free(end);
    free(val);
    return ok;
}

static bool json_txn(json_t *o, struct clerk_txn *txn, char *why, size_t wl)
{
    if (!json_is_object(o)) {
        return fail(why, wl, "a transaction is a JSON object");
    }
    json_t *cmps = json_object_get(o, "compare");
    json_t *succ = json_object_get(o, "success");
    json_t *fails = json_object_get(o, "failure");
    if ((cmps && !json_is_array(cmps)) || (succ && !json_is_array(succ)) ||
        (fails && !json_is_array(fails))) {
        return fail(why, wl, "compare, success and failure are arrays");
    }
    size_t i;
    json_t *v;
    json_array_foreach(cmps, i, v)
    {
        if (!json_compare(v, txn, why, wl)) {
            return false;
        }
    }
    json_array_foreach(succ, i, v)
    {
        if (!json_op(v, txn, CLERK_TXN_THEN, why, wl)) {
            return false;
        }
    }
    json_array_foreach(fails, i, v)
    {
        if (!json_op(v, txn, CLERK_TXN_ELSE, why, wl)) {
            return false;
        }
    }
    return true;
}

bool kvctl_txn_parse_json(const char *text,
                          struct clerk_txn **out,
                          char *why,
                          size_t why_len)
{
    *out = NULL;
    json_error_t e;
    json_t *o = json_loads(text, 0, &e);
    if (!o) {
        return fail(why, why_len, "JSON line %d: %s", e.line, e.text);
    }
    struct clerk_txn *txn = clerk_txn_new();
    bool ok = txn ? json_txn(o, txn, why, why_len)
                  : fail(why, why_len, "out of memory");
    json_decref(o);
    if (!ok) {
        clerk_txn_free(txn);
        return false;
    }
    *out = txn;
    return true;
}
