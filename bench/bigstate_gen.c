/* bigstate_gen.c: write a large backup file (what `kvctl snapshot save`
 * makes and `kvserver --restore` reads) without a cluster, for the
 * big-state benchmark (bench/bigstate.sh).
 *
 *   bigstate_gen FILE KEYS [VALUE_BYTES]
 *
 * Key i (0 <= i < KEYS) is "k" and i in 12 decimal digits; its value is i
 * in 12 decimal digits, repeated to VALUE_BYTES (default 256). Every key
 * was written once, at revision i + 2, with the history compacted (the
 * values are in the keys' records); no sessions, users or leases. The
 * stream's parts are written by the server's own encoders (snap.h) and
 * its records in the key records' layout (mvcc.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mvcc.h"
#include "snap.h"
#include "wal.h"

#define STATE_INDEX 1000 /* the applied index the state claims */
#define STATE_TERM  2
#define OUT_BUF     (8u << 20)

struct out
{
    FILE *fp;       /* the file */
    uint8_t *buf;   /* bytes not written yet */
    size_t len;     /* in buf */
    uint32_t crc;   /* CRC-32C of every byte so far */
    uint64_t total; /* bytes so far */
};

static int out_put(struct out *o, const void *p, size_t n)
{
    o->crc = kv_crc32c(o->crc, p, n);
    o->total += n;
    if (o->len + n > OUT_BUF) {
        if (fwrite(o->buf, 1, o->len, o->fp) != o->len) {
            return -1;
        }
        o->len = 0;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

/* The value of key i: i in 12 digits, repeated. */
static void bigstate_value(uint64_t i, uint8_t *v, size_t len)
{
    char d[13];
    snprintf(d, sizeof d, "%012" PRIu64, i);
    for (size_t j = 0; j < len; j++) {
        v[j] = (uint8_t)d[j % 12];
    }
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: bigstate_gen FILE KEYS [VALUE_BYTES]\n");
        return 2;
    }
    char *end;
    uint64_t keys = strtoull(argv[2], &end, 10);
    size_t vlen = argc == 4 ? strtoul(argv[3], NULL, 10) : 256;
    if (*end || keys == 0 || keys > 999999999999ull || vlen > (1u << 20)) {
        fprintf(stderr, "bigstate_gen: bad KEYS or VALUE_BYTES\n");
        return 2;
    }
    struct out o = {0};
    o.buf = malloc(OUT_BUF);
    uint8_t *rec = malloc(SNAP_RECORD_HEAD + 16 + KV_REC_HEAD + vlen);
    if (!o.buf || !rec) {
        fprintf(stderr, "bigstate_gen: out of memory\n");
        return 1;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    o.fp = fopen(tmp, "wb");
    if (!o.fp) {
        fprintf(stderr, "bigstate_gen: %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint8_t head[SNAP_HEADER_SIZE];
    snap_put_header(head, STATE_INDEX, STATE_TERM, 0);
    int bad = out_put(&o, head, sizeof head);
    uint64_t records = 0;
    for (uint64_t i = 0; i < keys && !bad; i++) {
        char key[16];
        int klen = snprintf(key, sizeof key, "k%012" PRIu64, i);
        uint8_t *p = rec;
        snap_put_record_head(p, SNAP_KIND_KV, (uint32_t)klen,
                             (uint32_t)(KV_REC_HEAD + vlen));
        p += SNAP_RECORD_HEAD;
        memcpy(p, key, (size_t)klen);
        p += klen;
        uint64_t rev = i + 2;
        kv_put_u64(p, rev);     /* create_revision */
        kv_put_u64(p + 8, rev); /* mod_revision */
        kv_put_u64(p + 16, 1);  /* version */
        kv_put_u64(p + 24, 0);  /* lease */
        p[32] = KV_REC_INLINE;  /* the value follows */
        bigstate_value(i, p + KV_REC_HEAD, vlen);
        p += KV_REC_HEAD + vlen;
        bad = out_put(&o, rec, (size_t)(p - rec));
        records++;
    }
    /* kvmeta "revs": revision, compaction point (all of it: the history
     * is empty), history bytes. */
    if (!bad) {
        uint8_t r[SNAP_RECORD_HEAD + 4 + 24];
        snap_put_record_head(r, SNAP_KIND_KVMETA, 4, 24);
        memcpy(r + SNAP_RECORD_HEAD, "revs", 4);
        kv_put_u64(r + SNAP_RECORD_HEAD + 4, keys + 1);
        kv_put_u64(r + SNAP_RECORD_HEAD + 12, keys + 1);
        kv_put_u64(r + SNAP_RECORD_HEAD + 20, 0);
        bad = out_put(&o, r, sizeof r);
        records++;
    }
    if (!bad) {
        uint8_t t[SNAP_TRAILER_SIZE];
        snap_put_trailer(t, records, o.crc);
        bad = out_put(&o, t, sizeof t);
    }
    if (!bad && o.len && fwrite(o.buf, 1, o.len, o.fp) != o.len) {
        bad = 1;
    }
    if (bad || fflush(o.fp) != 0 || fclose(o.fp) != 0 ||
        rename(tmp, argv[1]) != 0) {
        fprintf(stderr, "bigstate_gen: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) +
               (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("wrote %s: %" PRIu64 " keys of %zu-byte values, %" PRIu64
           " bytes, state at index %d, term %d, in %.1f s\n",
           argv[1], keys, vlen, o.total, STATE_INDEX, STATE_TERM, s);
    free(o.buf);
    free(rec);
    return 0;
}
