/* lincheck_msg.h: the checker's failure messages: bounded text, bytes shown
 * printable, operations as "c3 append("x") [call,return]". */
#ifndef TESTS_LINCHECK_MSG_H
#define TESTS_LINCHECK_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "lincheck.h"

/* A bounded string being written. */
struct lc_msg
{
    char *buf;  /* the text */
    size_t cap; /* its size */
    size_t len; /* characters written (or that would have been) */
};

/* Bytes shown of a long value (its head or tail). */
#define LC_SHOW_BYTES 32

/** Append printf-style text; a cut message ends with "...". */
void lc_msg_printf(struct lc_msg *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** Append bytes as printable text: \" \\ and \xHH for the rest. */
void lc_msg_bytes(struct lc_msg *m, const uint8_t *p, size_t n);

/** Append a value, quoted: its head only when long. */
void lc_msg_value(struct lc_msg *m, const void *p, size_t n);

/** Append the last n of total bytes, quoted; "..." and the length when
 * cut. */
void lc_msg_tail(struct lc_msg *m, const void *p, size_t n, size_t total);

/** Append a value read, quoted: its tail only when long (appends differ
 * there). */
void lc_msg_read(struct lc_msg *m, const void *p, size_t n);

/** Append an op as "c3 append("x") [call,return]" ("?" for what is
 * unknown). */
void lc_msg_op(struct lc_msg *m, const struct lc_event *e);

/** Append "key "k"" for a single-key op's key. */
void lc_msg_key(struct lc_msg *m, const struct lc_event *e);

#endif /* TESTS_LINCHECK_MSG_H */
