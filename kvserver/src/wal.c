/* wal.c: the Raft log as an append-only write-ahead log (see wal.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"
#include "wal.h"

#define WAL_MAGIC    0x524b5657u /* "RKVW" */
#define WAL_ALIGN    4096u
#define WAL_HEADER   16u
#define WAL_PREALLOC (1u << 20) /* zeros written ahead of the appends */

enum wal_record {
    REC_ENTRY = 1,
    REC_HARD_STATE = 2,
    REC_TRUNCATE = 3,
    REC_SNAPSHOT = 4,
};

static uint32_t header_crc(const uint8_t *h, uint64_t seg)
{
    uint8_t b[20];
    memcpy(b, h, 12);
    kv_put_u64(b + 12, seg);
    return kv_crc32c(0, b, sizeof b);
}

static void seg_path(const struct kv_wal *w, uint64_t no, char *out, size_t len)
{
    snprintf(out, len, "%s/%016" PRIx64 ".wal", w->dir, no);
}

static int fail(struct kv_wal *w, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct kv_wal *w, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->errmsg, sizeof w->errmsg, fmt, ap);
    va_end(ap);
    if (err == ENOSPC || err == EDQUOT) {
        return KV_STORE_ENOSPC;
    }
    return err == ENOMEM ? KV_STORE_ENOMEM : KV_STORE_EIO;
}

static int sync_dir(struct kv_wal *w)
{
    int fd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return fail(w, errno, "%s: open: %s", w->dir, strerror(errno));
    }
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    return rc ? fail(w, err, "%s: fsync: %s", w->dir, strerror(err)) : 0;
}

/* ---- building a batch ---- */

static int reserve(struct kv_wal *w, size_t more)
{
    if (w->len + more <= w->cap) {
        return 0;
    }
    size_t cap = w->cap ? w->cap : 64 * 1024;
    while (cap < w->len + more) {
        cap *= 2;
    }
    uint8_t *b = realloc(w->buf, cap);
    if (!b) {
        return fail(w, ENOMEM, "%s: out of memory for a log batch", w->dir);
    }
    w->buf = b;
    w->cap = cap;
    return 0;
}

static int begin_batch(struct kv_wal *w)
{
    if (w->len == 0) {
        int rv = reserve(w, WAL_HEADER);
        if (rv) {
            return rv;
        }
        w->len = WAL_HEADER;
    }
    return 0;
}

static int add_u64s(struct kv_wal *w, int type, uint64_t a, uint64_t b, int n)
{
    int rv = begin_batch(w);
    if (!rv) {
        rv = reserve(w, 1 + 16);
    }
    if (rv) {
        return rv;
    }
    w->buf[w->len++] = (uint8_t)type;
    kv_put_u64(w->buf + w->len, a);
    w->len += 8;
    if (n == 2) {
        kv_put_u64(w->buf + w->len, b);
        w->len += 8;
    }
    return 0;
}

int kv_wal_add_entries(struct kv_wal *w, const struct raft_entry *e, size_t n)
{
    int rv = begin_batch(w);
    for (size_t i = 0; i < n && !rv; i++) {
        rv = reserve(w, 1 + 8 + 8 + 1 + 4 + e[i].len);
        if (rv) {
            break;
        }
        uint8_t *p = w->buf + w->len;
        p[0] = REC_ENTRY;
        kv_put_u64(p + 1, e[i].index);
        kv_put_u64(p + 9, e[i].term);
        p[17] = (uint8_t)e[i].type;
        kv_put_u32(p + 18, (uint32_t)e[i].len);
        if (e[i].len) {
            memcpy(p + 22, e[i].data, e[i].len);
        }
        w->len += 22 + e[i].len;
        if (e[i].index > w->batch_last) {
            w->batch_last = e[i].index;
        }
    }
    return rv;
}

int kv_wal_add_hard_state(struct kv_wal *w, uint64_t term, uint64_t vote)
{
    int rv = add_u64s(w, REC_HARD_STATE, term, vote, 2);
    if (!rv) {
        w->term = term;
        w->vote = vote;
    }
    return rv;
}

int kv_wal_add_truncate(struct kv_wal *w, uint64_t from)
{
    return add_u64s(w, REC_TRUNCATE, from, 0, 1);
}

int kv_wal_add_snapshot(struct kv_wal *w, uint64_t index, uint64_t term)
{
    int rv = add_u64s(w, REC_SNAPSHOT, index, term, 2);
    if (!rv) {
        w->snap_index = index;
        w->snap_term = term;
    }
    return rv;
}

bool kv_wal_pending(const struct kv_wal *w)
{
    return w->len > 0;
}

void kv_wal_discard(struct kv_wal *w)
{
    w->len = 0;
    w->batch_last = 0;
}

/* ---- segments ---- */

static int push_segment(struct kv_wal *w, uint64_t no)
{
    if (w->n_segs == w->cap_segs) {
        size_t cap = w->cap_segs ? w->cap_segs * 2 : 8;
        struct kv_wal_segment *s = realloc(w->segs, cap * sizeof *s);
        if (!s) {
            return fail(w, ENOMEM, "%s: out of memory", w->dir);
        }
        w->segs = s;
        w->cap_segs = cap;
    }
    w->segs[w->n_segs++] = (struct kv_wal_segment){.no = no};
    return 0;
}

/* Start segment @no; its first batch will carry the hard state and the
 * snapshot mark, so that the segments before it can go. */
static int new_segment(struct kv_wal *w, uint64_t no)
{
    char path[1200];
    seg_path(w, no, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        return fail(w, errno, "%s: create: %s", path, strerror(errno));
    }
    int rv = push_segment(w, no);
    if (rv) {
        close(fd);
        unlink(path);
        return rv;
    }
    rv = sync_dir(w);
    if (rv) {
        w->n_segs--;
        close(fd);
        unlink(path);
        return rv;
    }
    if (w->fd >= 0) {
        close(w->fd);
    }
    w->fd = fd;
    w->size = 0;
    w->alloc = 0;
    return 0;
}

/* Make the segment's file at least @need bytes long, with zeros, and some
 * way beyond: the next appends then rewrite allocated blocks only. */
static int extend(struct kv_wal *w, uint64_t need, const char *path)
{
    static const uint8_t zeros[64 * 1024];
    uint64_t target = need + WAL_PREALLOC;
    while (w->alloc < target) {
        size_t len = target - w->alloc < sizeof zeros
                         ? (size_t)(target - w->alloc)
                         : sizeof zeros;
        ssize_t k = pwrite(w->fd, zeros, len, (off_t)w->alloc);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            int err = k < 0 ? errno : EIO;
            return fail(w, err, "%s: extend to %" PRIu64 " bytes: %s", path,
                        target, strerror(err));
        }
        w->alloc += (uint64_t)k;
    }
    return 0;
}

/* Put the hard state and snapshot mark in front of the batch's records. */
static int prepend_state(struct kv_wal *w)
{
    uint8_t pre[34];
    size_t n = 0;
    pre[n++] = REC_HARD_STATE;
    kv_put_u64(pre + n, w->term);
    kv_put_u64(pre + n + 8, w->vote);
    n += 16;
    if (w->snap_index) {
        pre[n++] = REC_SNAPSHOT;
        kv_put_u64(pre + n, w->snap_index);
        kv_put_u64(pre + n + 8, w->snap_term);
        n += 16;
    }
    int rv = begin_batch(w);
    if (!rv) {
        rv = reserve(w, n);
    }
    if (rv) {
        return rv;
    }
    memmove(w->buf + WAL_HEADER + n, w->buf + WAL_HEADER, w->len - WAL_HEADER);
    memcpy(w->buf + WAL_HEADER, pre, n);
    w->len += n;
    return 0;
}

int kv_wal_sync(struct kv_wal *w)
{
    if (w->len == 0) {
        return 0;
    }
    struct kv_wal_segment *cur = &w->segs[w->n_segs - 1];
    int rv = 0;
    if (w->size >= w->segment_bytes) {
        rv = new_segment(w, cur->no + 1);
        if (!rv) {
            rv = prepend_state(w);
        }
        if (rv) {
            kv_wal_discard(w);
            return rv;
        }
        cur = &w->segs[w->n_segs - 1];
    }
    size_t body = w->len - WAL_HEADER;
    size_t padded = (w->len + WAL_ALIGN - 1) / WAL_ALIGN * WAL_ALIGN;
    rv = reserve(w, padded - w->len);
    if (rv) {
        kv_wal_discard(w);
        return rv;
    }
    memset(w->buf + w->len, 0, padded - w->len);
    kv_put_u32(w->buf, WAL_MAGIC);
    kv_put_u32(w->buf + 4, (uint32_t)body);
    kv_put_u32(w->buf + 8, kv_crc32c(0, w->buf + WAL_HEADER, body));
    kv_put_u32(w->buf + 12, header_crc(w->buf, cur->no));
    char path[1200];
    seg_path(w, cur->no, path, sizeof path);
    if (w->size + padded > w->alloc) {
        rv = extend(w, w->size + padded, path);
    }
    size_t done = 0;
    while (!rv && done < padded) {
        ssize_t k = pwrite(w->fd, w->buf + done, padded - done,
                           (off_t)(w->size + done));
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            int err = k < 0 ? errno : EIO;
            rv = fail(w, err, "%s: write at offset %" PRIu64 ": %s", path,
                      w->size + done, strerror(err));
            break;
        }
        done += (size_t)k;
    }
    if (!rv && fdatasync(w->fd) != 0) {
        int err = errno;
        rv = fail(w, err, "%s: fdatasync: %s", path, strerror(err));
    }
    if (rv) {
        /* Nothing of this batch counts: cut it off, the caller retries. */
        if (ftruncate(w->fd, (off_t)w->size) != 0) {
            /* The next open cuts a damaged tail off anyway. */
        }
        w->alloc = w->size;
        kv_wal_discard(w);
        return rv;
    }
    w->size += padded;
    cur->bytes = w->size;
    if (w->batch_last > cur->last_index) {
        cur->last_index = w->batch_last;
    }
    w->syncs++;
    kv_wal_discard(w);
    return 0;
}

size_t kv_wal_release(struct kv_wal *w, uint64_t upto)
{
    size_t k = 0;
    while (k + 1 < w->n_segs && w->segs[k].last_index <= upto) {
        char path[1200];
        seg_path(w, w->segs[k].no, path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT) {
            break;
        }
        k++;
    }
    if (k) {
        memmove(w->segs, w->segs + k, (w->n_segs - k) * sizeof *w->segs);
        w->n_segs -= k;
        sync_dir(w);
    }
    return k;
}

uint64_t kv_wal_bytes(const struct kv_wal *w)
{
    uint64_t b = 0;
    for (size_t i = 0; i < w->n_segs; i++) {
        b += w->segs[i].bytes;
    }
    return b;
}

void kv_wal_close(struct kv_wal *w)
{
    if (w->fd >= 0) {
        close(w->fd);
    }
    free(w->segs);
    free(w->buf);
    w->fd = -1;
    w->segs = NULL;
    w->buf = NULL;
    w->n_segs = w->cap_segs = w->len = w->cap = 0;
}

/* ---- reading ---- */

struct replay
{
    struct kv_wal *w;
    struct kv_wal_contents *c;
    size_t cap;       /* entries allocated */
    const char *path; /* segment being read */
    uint64_t offset;  /* batch being read */
    struct kv_wal_segment *seg;
};

static uint64_t last_index(const struct replay *r)
{
    const struct kv_wal_contents *c = r->c;
    return c->n_entries ? c->entries[c->n_entries - 1].index : 0;
}

/* Drop entries with index >= from. */
static void drop_from(struct kv_wal_contents *c, uint64_t from)
{
    while (c->n_entries && c->entries[c->n_entries - 1].index >= from) {
        c->n_entries--;
    }
}

/* Drop entries with index <= upto. */
static void drop_upto(struct kv_wal_contents *c, uint64_t upto)
{
    size_t k = 0;
    while (k < c->n_entries && c->entries[k].index <= upto) {
        k++;
    }
    if (k == 0) {
        return;
    }
    memmove(c->entries, c->entries + k,
            (c->n_entries - k) * sizeof *c->entries);
    c->n_entries -= k;
}

static int damaged(struct replay *r, const char *what)
{
    fail(r->w, EIO,
         "%s: damaged log at offset %" PRIu64
         " (%s); the last good "
         "entry before it is index %" PRIu64,
         r->path, r->offset, what, last_index(r));
    return KV_STORE_ECORRUPT;
}

static int replay_body(struct replay *r, const uint8_t *p, size_t len)
{
    struct kv_wal_contents *c = r->c;
    size_t i = 0;
    while (i < len) {
        int type = p[i++];
        size_t need = type == REC_ENTRY        ? 21
                      : type == REC_TRUNCATE   ? 8
                      : type == REC_HARD_STATE ? 16
                      : type == REC_SNAPSHOT   ? 16
                                               : 0;
        if (need == 0) {
            return damaged(r, "unknown record type");
        }
        if (len - i < need) {
            return damaged(r, "record cut short");
        }
        uint64_t a = kv_get_u64(p + i);
        if (type == REC_HARD_STATE) {
            c->hs.term = a;
            c->hs.vote = kv_get_u64(p + i + 8);
            i += 16;
        } else if (type == REC_SNAPSHOT) {
            c->snap_index = a;
            c->snap_term = kv_get_u64(p + i + 8);
            drop_upto(c, a);
            i += 16;
        } else if (type == REC_TRUNCATE) {
            drop_from(c, a);
            i += 8;
        } else {
            uint64_t term = kv_get_u64(p + i + 8);
            int etype = p[i + 16];
            uint32_t dlen = kv_get_u32(p + i + 17);
            i += 21;
            if (len - i < dlen) {
                return damaged(r, "entry cut short");
            }
            if (etype != RAFT_ENTRY_NORMAL && etype != RAFT_ENTRY_NOOP) {
                return damaged(r, "unknown entry type");
            }
            if (c->n_entries && a > last_index(r) + 1) {
                return damaged(r, "gap in entry indexes");
            }
            drop_from(c, a); /* an entry replaces any at its index */
            if (c->n_entries == r->cap) {
                size_t cap = r->cap ? r->cap * 2 : 1024;
                struct raft_entry *e = realloc(c->entries, cap * sizeof *e);
                if (!e) {
                    return fail(r->w, ENOMEM, "%s: out of memory", r->path);
                }
                c->entries = e;
                r->cap = cap;
            }
            c->entries[c->n_entries++] = (struct raft_entry){
                .index = a,
                .term = term,
                .type = (enum raft_entry_type)etype,
                .data = p + i,
                .len = dlen,
            };
            if (a > r->seg->last_index) {
                r->seg->last_index = a;
            }
            i += dlen;
        }
    }
    return 0;
}

/* Is there a valid batch header at a 4 KiB boundary at or after @from? */
static bool valid_batch_after(const uint8_t *img,
                              uint64_t size,
                              uint64_t from,
                              uint64_t seg)
{
    for (uint64_t o = from; o + WAL_HEADER <= size; o += WAL_ALIGN) {
        const uint8_t *h = img + o;
        if (kv_get_u32(h) == WAL_MAGIC &&
            kv_get_u32(h + 12) == header_crc(h, seg)) {
            return true;
        }
    }
    return false;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

/* Read one segment image; *end is set to the end of its last good batch. */
static int replay_segment(struct replay *r,
                          const uint8_t *img,
                          uint64_t size,
                          bool last,
                          uint64_t *end)
{
    uint64_t o = 0;
    while (o < size) {
        r->offset = o;
        const char *what = NULL;
        const uint8_t *h = img + o;
        uint32_t body = 0;
        if (all_zero(h, size - o)) {
            break; /* zeros written ahead of the appends */
        } else if (size - o < WAL_HEADER) {
            what = "batch header cut short";
        } else if (all_zero(h, WAL_HEADER)) {
            what = "no batch header";
        } else if (kv_get_u32(h) != WAL_MAGIC ||
                   kv_get_u32(h + 12) != header_crc(h, r->seg->no)) {
            what = "batch header checksum mismatch";
        } else {
            body = kv_get_u32(h + 4);
            if (size - o - WAL_HEADER < body) {
                what = "batch cut short";
            } else if (kv_crc32c(0, h + WAL_HEADER, body) !=
                       kv_get_u32(h + 8)) {
                what = "batch checksum mismatch";
            }
        }
        if (what) {
            if (last &&
                !valid_batch_after(img, size, o + WAL_ALIGN, r->seg->no)) {
                /* An append that did not finish: never acknowledged. */
                *end = o;
                return 0;
            }
            return damaged(r, what);
        }
        int rv = replay_body(r, h + WAL_HEADER, body);
        if (rv) {
            return rv;
        }
        /* Batches start at 4 KiB boundaries; a crash may have left the
         * zero padding of the last one short, which loses nothing. */
        o += (WAL_HEADER + (uint64_t)body + WAL_ALIGN - 1) / WAL_ALIGN *
             WAL_ALIGN;
    }
    *end = o;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Segment numbers in the directory, sorted. */
static int list_segments(struct kv_wal *w, uint64_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(w->dir);
    if (!d) {
        return fail(w, errno, "%s: %s", w->dir, strerror(errno));
    }
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *endp;
        size_t len = strlen(de->d_name);
        if (len != 20 || strcmp(de->d_name + 16, ".wal") != 0) {
            continue;
        }
        uint64_t no = strtoull(de->d_name, &endp, 16);
        if (endp != de->d_name + 16) {
            continue;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            uint64_t *v = realloc(*out, cap * sizeof *v);
            if (!v) {
                closedir(d);
                free(*out);
                *out = NULL;
                return fail(w, ENOMEM, "%s: out of memory", w->dir);
            }
            *out = v;
        }
        (*out)[(*n)++] = no;
    }
    closedir(d);
    if (*n > 1) {
        qsort(*out, *n, sizeof **out, cmp_u64);
    }
    return 0;
}

static int read_file(struct kv_wal *w,
                     const char *path,
                     int fd,
                     uint8_t **img,
                     uint64_t *size)
{
    struct stat stt;
    if (fstat(fd, &stt) != 0) {
        return fail(w, errno, "%s: stat: %s", path, strerror(errno));
    }
    *size = (uint64_t)stt.st_size;
    *img = malloc(*size ? *size : 1);
    if (!*img) {
        return fail(w, ENOMEM, "%s: out of memory reading %" PRIu64 " bytes",
                    path, *size);
    }
    uint64_t got = 0;
    while (got < *size) {
        ssize_t k = pread(fd, *img + got, *size - got, (off_t)got);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            int err = k < 0 ? errno : EIO;
            free(*img);
            *img = NULL;
            return fail(w, err, "%s: read: %s", path, strerror(err));
        }
        got += (uint64_t)k;
    }
    return 0;
}

void kv_wal_contents_free(struct kv_wal_contents *c)
{
    for (size_t i = 0; i < c->n_blobs; i++) {
        free(c->blobs[i]);
    }
    free(c->blobs);
    free(c->entries);
    memset(c, 0, sizeof *c);
}

int kv_wal_open(struct kv_wal *w,
                const char *data_dir,
                uint64_t segment_bytes,
                struct kv_wal_contents *out)
{
    memset(w, 0, sizeof *w);
    memset(out, 0, sizeof *out);
    w->fd = -1;
    w->segment_bytes = segment_bytes ? segment_bytes : KV_WAL_SEGMENT_BYTES;
    snprintf(w->dir, sizeof w->dir, "%s/wal", data_dir);
    if (mkdir(w->dir, 0700) != 0 && errno != EEXIST) {
        return fail(w, errno, "%s: %s", w->dir, strerror(errno));
    }
    uint64_t *nos;
    size_t n;
    int rv = list_segments(w, &nos, &n);
    if (rv) {
        return rv;
    }
    struct replay r = {.w = w, .c = out};
    out->blobs = calloc(n ? n : 1, sizeof *out->blobs);
    if (!out->blobs) {
        free(nos);
        return fail(w, ENOMEM, "%s: out of memory", w->dir);
    }
    for (size_t i = 0; i < n && !rv; i++) {
        if (i > 0 && nos[i] != nos[i - 1] + 1) {
            char path[1200];
            seg_path(w, nos[i - 1] + 1, path, sizeof path);
            fail(w, EIO,
                 "%s: missing log segment (found %zu segments "
                 "around it)",
                 path, n);
            rv = KV_STORE_ECORRUPT;
            break;
        }
        rv = push_segment(w, nos[i]);
        if (rv) {
            break;
        }
        char path[1200];
        seg_path(w, nos[i], path, sizeof path);
        bool last = i + 1 == n;
        int fd = open(path, (last ? O_RDWR : O_RDONLY) | O_CLOEXEC);
        if (fd < 0) {
            rv = fail(w, errno, "%s: open: %s", path, strerror(errno));
            break;
        }
        uint8_t *img;
        uint64_t size = 0, end = 0;
        rv = read_file(w, path, fd, &img, &size);
        if (!rv) {
            out->blobs[out->n_blobs++] = img;
            r.path = path;
            r.seg = &w->segs[w->n_segs - 1];
            rv = replay_segment(&r, img, size, last, &end);
        }
        uint64_t alloc = size;
        if (!rv && last && end < size && all_zero(img + end, size - end)) {
            /* Zeros written ahead of the appends: nothing was cut. */
        } else if (!rv && last && end != size) {
            /* Cut an interrupted append off, or give the last batch back
             * its padding, so that the next one starts at a boundary. */
            out->cut_bytes = end < size ? size - end : 0;
            alloc = end;
            if (ftruncate(fd, (off_t)end) != 0 || fdatasync(fd) != 0) {
                rv = fail(w, errno,
                          "%s: cutting off an interrupted append: "
                          "%s",
                          path, strerror(errno));
            }
        }
        w->segs[w->n_segs - 1].bytes = end;
        if (last && !rv) {
            w->fd = fd;
            w->size = end;
            w->alloc = alloc;
        } else {
            close(fd);
        }
    }
    free(nos);
    if (!rv && n == 0) {
        rv = new_segment(w, 1);
    }
    if (rv) {
        kv_wal_close(w);
        kv_wal_contents_free(out);
        return rv;
    }
    w->term = out->hs.term;
    w->vote = out->hs.vote;
    w->snap_index = out->snap_index;
    w->snap_term = out->snap_term;
    return 0;
}
