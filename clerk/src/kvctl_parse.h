/* kvctl_parse.h: kvctl's input: command-line tokens, key ranges, and
 * transactions in etcdctl's text form or as JSON. No I/O. */
#ifndef KVCTL_PARSE_H
#define KVCTL_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct clerk_txn;

/* A token: bytes that may hold NULs (NUL-terminated too). */
struct tok
{
    char *p;    /* its bytes */
    size_t len; /* their number */
};

/* The keys and options of get, del and put, and of a transaction's ops. */
struct range_spec
{
    struct tok key;                  /* KEY */
    const void *end;                 /* range_end: END, or made for --prefix or
                                        --from-key (NULL: KEY alone) */
    size_t end_len;                  /* its length */
    uint8_t end_buf[1024];           /* where --prefix's end is made */
    struct tok value;                /* put: VALUE */
    bool ranged;                     /* END, --prefix or --from-key given */
    uint64_t limit;                  /* --limit N (0: none) */
    unsigned flags;                  /* CLERK_RANGE_* (get), CLERK_PUT_* (put),
                                        CLERK_DELETE_* (del) */
    bool print_value_only, rev_info; /* get's output options */
    uint64_t lease;                  /* put: --lease ID (0: none) */
    const char *value_file;          /* put: --file F, the value's file */
    bool value_stdin;                /* put: VALUE is -, read standard input */
    bool extended; /* any option beyond the classic KEY [VALUE] */
};

/* Which command a range_spec is for. */
enum spec_cmd { SPEC_GET, SPEC_PUT, SPEC_DEL };

/**
 * Split a line into tokens in place: blanks separate them, "..." takes
 * the escapes \" \\ \n \r \t \xHH, '...' is literal.
 * @return the count, or -1 with *why set
 */
int kvctl_tokenize(char *line, struct tok *t, int max, const char **why);

/**
 * Parse a lease id as kvctl prints it: hex, with or without 0x.
 * @return true, or false when it is not one (or 0)
 */
bool kvctl_parse_lease_id(const char *s, uint64_t *id);

/**
 * Parse the arguments of get, put or del (t[0] is the command's first
 * argument): KEY [END|VALUE] and the options, before or after the
 * arguments; the word -- ends the options. put's value may come from a
 * file (--file F: value_file, value left empty) or standard input (VALUE
 * -: value_stdin, value holds "-"); reading it is the caller's.
 * @return true, or false with why (a usage message) filled
 */
bool kvctl_parse_spec(enum spec_cmd cmd,
                      struct tok *t,
                      int n,
                      struct range_spec *s,
                      char *why,
                      size_t why_len);

/**
 * Parse a transaction in etcdctl's text form: compares, one per line
 * (`mod("k") > "5"`, `value("k") = "v"`, `version("k") = "0"`,
 * `create("k") != "0"`), an empty line, the success ops (`put K V`,
 * `get K [END]`, `del K [END]`, with get/put/del's options), an empty
 * line, the failure ops. Lines starting with # are skipped.
 * @param out set to a new builder (free with clerk_txn_free)
 * @return true, or false with why (naming the line) filled
 */
bool kvctl_txn_parse_text(const char *text,
                          struct clerk_txn **out,
                          char *why,
                          size_t why_len);

/**
 * Parse a transaction in etcd's JSON form: {"compare":[{"key":B64,
 * "range_end":B64, "target":"VERSION|CREATE|MOD|VALUE",
 * "result":"EQUAL|GREATER|LESS|NOT_EQUAL", "version"|"create_revision"|
 * "mod_revision": N, "value": B64}], "success":[OP], "failure":[OP]}, an
 * OP being {"request_put":{"key","value","prev_kv","ignore_value"}},
 * {"request_range":{"key","range_end","limit","keys_only","count_only"}},
 * {"request_delete_range":{"key","range_end","prev_kv"}} or
 * {"request_txn":{...}}; keys and values in base64, numbers as numbers or
 * strings.
 * @return true, or false with why filled
 */
bool kvctl_txn_parse_json(const char *text,
                          struct clerk_txn **out,
                          char *why,
                          size_t why_len);

/**
 * Base64 (RFC 4648, with padding) of n bytes into a new string.
 * @return the string (free), or NULL without memory
 */
char *kvctl_base64(const void *p, size_t n);

/**
 * Decode base64 into a new buffer (NUL-terminated, *n its length).
 * @return the buffer (free), or NULL for bad input or without memory
 */
void *kvctl_unbase64(const char *s, size_t *n);

#endif /* KVCTL_PARSE_H */
