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

#define WAL_MAGIC    0x524b564cu /* "RKVL": a batch header */
#define WAL_ALIGN    4096u       /* batches start at this boundary */
#define WAL_HEADER   16u         /* magic, body length, body CRC, 0 */
#define WAL_SECTOR   512u        /* unit of a torn write */
#define WAL_PAYLOAD  504u        /* batch bytes in one sector */
#define MARK_HEAD    0x524b5748u /* "RKWH": a batch's first sector */
#define MARK_BODY    0x524b5742u /* "RKWB": its other sectors */
#define WAL_PREALLOC (1u << 20)  /* zeros written ahead of the appends */

enum wal_record {
    REC_ENTRY = 1,
    REC_HARD_STATE = 2,
    REC_TRUNCATE = 3,
    REC_SNAPSHOT = 4,
};

/* Checksum of a sector: its payload, where it lies and what it is, so
 * that a sector is intact only at the place and in the role it was
 * written for. */
static uint32_t sector_crc(const uint8_t *payload,
                           uint64_t seg,
                           uint64_t off,
                           uint32_t mark)
{
    uint8_t b[20];
    kv_put_u64(b, seg);
    kv_put_u64(b + 8, off);
    kv_put_u32(b + 16, mark);
    return kv_crc32c(kv_crc32c(0, payload, WAL_PAYLOAD), b, sizeof b);
}

/* Sectors a batch of @len bytes (header included) takes. */
static size_t batch_sectors(size_t len)
{
    return (len + WAL_PAYLOAD - 1) / WAL_PAYLOAD;
}

/* Bytes from a batch's start to the next batch's: its sectors, then zeros
 * up to a 4 KiB boundary. */
static uint64_t batch_span(size_t len)
{
    uint64_t b = (uint64_t)batch_sectors(len) * WAL_SECTOR;
    return (b + WAL_ALIGN - 1) / WAL_ALIGN * WAL_ALIGN;
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
        w->pend_hs = true;
        w->pend_term = term;
        w->pend_vote = vote;
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
        w->pend_snap = true;
        w->pend_snap_index = index;
        w->pend_snap_term = term;
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
    w->pend_hs = false;
    w->pend_snap = false;
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

/* Start segment @no (its first batch will carry the hard state and the
 * snapshot mark). */
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

/* Put the durable hard state and snapshot mark in front of the batch's
 * records: the first batch of a segment, so that the segment describes
 * itself once the ones before it are deleted. The batch's own records
 * (a newer hard state, say) follow and win at replay. */
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

/* Cut the batch in buf into sectors in w->out, for segment @seg at file
 * offset w->size; returns the bytes to write (sectors and zero padding). */
static int cut_into_sectors(struct kv_wal *w, uint64_t seg, size_t *out_len)
{
    size_t n = batch_sectors(w->len);
    size_t span = (size_t)batch_span(w->len);
    if (span > w->out_cap) {
        uint8_t *o = realloc(w->out, span);
        if (!o) {
            return fail(w, ENOMEM, "%s: out of memory for a log batch", w->dir);
        }
        w->out = o;
        w->out_cap = span;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t *sec = w->out + i * WAL_SECTOR;
        size_t from = i * WAL_PAYLOAD;
        size_t take = w->len - from < WAL_PAYLOAD ? w->len - from : WAL_PAYLOAD;
        memcpy(sec, w->buf + from, take);
        memset(sec + take, 0, WAL_PAYLOAD - take);
        uint32_t mark = i == 0 ? MARK_HEAD : MARK_BODY;
        kv_put_u32(sec + WAL_PAYLOAD, mark);
        kv_put_u32(sec + WAL_PAYLOAD + 4,
                   sector_crc(sec, seg, w->size + i * WAL_SECTOR, mark));
    }
    memset(w->out + n * WAL_SECTOR, 0, span - n * WAL_SECTOR);
    *out_len = span;
    return 0;
}

int kv_wal_sync(struct kv_wal *w)
{
    if (w->len == 0) {
        return 0;
    }
    int rv = 0;
    if (w->size >= w->segment_bytes) {
        rv = new_segment(w, w->segs[w->n_segs - 1].no + 1);
    }
    if (!rv && w->size == 0) {
        rv = prepend_state(w);
    }
    if (rv) {
        kv_wal_discard(w);
        return rv;
    }
    struct kv_wal_segment *cur = &w->segs[w->n_segs - 1];
    size_t body = w->len - WAL_HEADER;
    kv_put_u32(w->buf, WAL_MAGIC);
    kv_put_u32(w->buf + 4, (uint32_t)body);
    kv_put_u32(w->buf + 8, kv_crc32c(0, w->buf + WAL_HEADER, body));
    kv_put_u32(w->buf + 12, 0);
    size_t padded = 0;
    rv = cut_into_sectors(w, cur->no, &padded);
    if (rv) {
        kv_wal_discard(w);
        return rv;
    }
    char path[1200];
    seg_path(w, cur->no, path, sizeof path);
    if (w->size + padded > w->alloc) {
        rv = extend(w, w->size + padded, path);
    }
    size_t done = 0;
    while (!rv && done < padded) {
        ssize_t k = pwrite(w->fd, w->out + done, padded - done,
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
        /* Nothing of this batch counts, the hard state and snapshot mark
         * in it included: cut it off; the caller adds its records again
         * and retries, which writes the pages anew (a failed fdatasync
         * may have dropped them from the page cache unwritten). */
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
    if (w->pend_hs) {
        w->term = w->pend_term;
        w->vote = w->pend_vote;
    }
    if (w->pend_snap) {
        w->snap_index = w->pend_snap_index;
        w->snap_term = w->pend_snap_term;
    }
    w->syncs++;
    kv_wal_discard(w);
    return 0;
}

size_t kv_wal_release(struct kv_wal *w, uint64_t upto)
{
    size_t k = 0;
    /* Segment k+1 must hold a batch: its first one carries the hard state
     * and snapshot mark that would otherwise go with segment k. */
    while (k + 1 < w->n_segs && w->segs[k].last_index <= upto &&
           w->segs[k + 1].bytes > 0) {
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

int kv_wal_reset(struct kv_wal *w)
{
    kv_wal_discard(w);
    for (size_t i = 0; i < w->n_segs; i++) {
        char path[1200];
        seg_path(w, w->segs[i].no, path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT) {
            return fail(w, errno, "%s: unlink: %s", path, strerror(errno));
        }
    }
    w->n_segs = 0;
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    w->size = w->alloc = 0;
    w->term = w->vote = w->snap_index = w->snap_term = 0;
    int rv = sync_dir(w);
    return rv ? rv : new_segment(w, 1);
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
    free(w->out);
    w->fd = -1;
    w->segs = NULL;
    w->buf = NULL;
    w->out = NULL;
    w->n_segs = w->cap_segs = w->len = w->cap = w->out_cap = 0;
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
            if (etype != RAFT_ENTRY_NORMAL && etype != RAFT_ENTRY_NOOP &&
                etype != RAFT_ENTRY_CONFIG) {
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

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

enum sector_state {
    SEC_ZERO, /* never written (bytes past the end of the file too) */
    SEC_HEAD, /* an intact first sector of a batch */
    SEC_BODY, /* an intact later sector of a batch */
    SEC_BAD,  /* neither: its checksum fails */
};

/* What the sector at @off of segment @seg's image is. */
static enum sector_state sector_state(const uint8_t *img,
                                      uint64_t size,
                                      uint64_t off,
                                      uint64_t seg)
{
    uint8_t tmp[WAL_SECTOR];
    const uint8_t *p = img + off;
    if (off >= size) {
        return SEC_ZERO;
    }
    if (size - off < WAL_SECTOR) {
        memset(tmp, 0, sizeof tmp);
        memcpy(tmp, p, (size_t)(size - off));
        p = tmp;
    }
    if (all_zero(p, WAL_SECTOR)) {
        return SEC_ZERO;
    }
    uint32_t mark = kv_get_u32(p + WAL_PAYLOAD);
    if ((mark == MARK_HEAD || mark == MARK_BODY) &&
        kv_get_u32(p + WAL_PAYLOAD + 4) == sector_crc(p, seg, off, mark)) {
        return mark == MARK_HEAD ? SEC_HEAD : SEC_BODY;
    }
    return SEC_BAD;
}

/* Can the damaged batch at @from be an append that never finished? Only
 * when every sector from it to the end of the file is intact or still
 * zero, and none after it starts a batch. A finished append has all its
 * sectors intact and its checksum matching, so such damage is the last
 * write, cut short (or a mix of it and an earlier failed try at the same
 * place); a sector whose checksum fails is damage to acknowledged data,
 * and a batch header after the damage shows that appends went on. */
static bool torn_tail(const uint8_t *img,
                      uint64_t size,
                      uint64_t from,
                      uint64_t seg)
{
    for (uint64_t o = from; o < size; o += WAL_SECTOR) {
        enum sector_state st = sector_state(img, size, o, seg);
        if (st == SEC_BAD || (st == SEC_HEAD && o != from)) {
            return false;
        }
    }
    return true;
}

/* Check the batch at @o: every sector intact, the body's checksum right.
 * Returns NULL, or what is wrong (with *bad_at the offset of the sector
 * at fault). */
static const char *check_batch(const uint8_t *img,
                               uint64_t size,
                               uint64_t o,
                               uint64_t seg,
                               uint64_t *bad_at)
{
    *bad_at = o;
    enum sector_state st = sector_state(img, size, o, seg);
    if (st == SEC_BAD) {
        return "sector checksum mismatch";
    }
    if (st != SEC_HEAD) {
        return "no batch header";
    }
    if (kv_get_u32(img + o) != WAL_MAGIC) {
        return "unknown batch format";
    }
    uint32_t body = kv_get_u32(img + o + 4);
    size_t n = batch_sectors(WAL_HEADER + (size_t)body);
    uint32_t crc = 0;
    size_t left = body;
    for (size_t i = 0; i < n; i++) {
        uint64_t so = o + (uint64_t)i * WAL_SECTOR;
        if (i > 0) {
            st = sector_state(img, size, so, seg);
            if (st != SEC_BODY) {
                *bad_at = so;
                return st == SEC_ZERO  ? "batch cut short"
                       : st == SEC_BAD ? "sector checksum mismatch"
                                       : "batch header inside a batch";
            }
        }
        size_t skip = i == 0 ? WAL_HEADER : 0;
        size_t take = left < WAL_PAYLOAD - skip ? left : WAL_PAYLOAD - skip;
        crc = kv_crc32c(crc, img + so + skip, take);
        left -= take;
    }
    if (crc != kv_get_u32(img + o + 8)) {
        return "batch checksum mismatch";
    }
    return NULL;
}

/* Read one segment image; *end is set to the end of its last good batch.
 * The bodies of the good batches are gathered, in order, at the start of
 * the image (each moves only towards the front, into bytes already read),
 * and the entries point there. */
static int replay_segment(struct replay *r,
                          uint8_t *img,
                          uint64_t size,
                          bool last,
                          uint64_t *end)
{
    uint64_t seg = r->seg->no;
    uint64_t o = 0, gathered = 0;
    while (o < size) {
        r->offset = o;
        if (all_zero(img + o, (size_t)(size - o))) {
            break; /* zeros written ahead of the appends */
        }
        if (o == 0 && size >= 4 && kv_get_u32(img) == 0x524b5657u) {
            return damaged(r,
                           "a segment in the log format of an older "
                           "kvserver");
        }
        uint64_t bad_at;
        const char *what = check_batch(img, size, o, seg, &bad_at);
        if (what) {
            if (last && torn_tail(img, size, o, seg)) {
                /* An append that did not finish: never acknowledged. */
                *end = o;
                return 0;
            }
            if (bad_at != o) {
                char why[128];
                snprintf(why, sizeof why, "%s in its sector at offset %" PRIu64,
                         what, bad_at);
                return damaged(r, why);
            }
            return damaged(r, what);
        }
        uint32_t body = kv_get_u32(img + o + 4);
        size_t n = batch_sectors(WAL_HEADER + (size_t)body);
        uint8_t *dst = img + gathered;
        size_t left = body;
        for (size_t i = 0; i < n; i++) {
            size_t skip = i == 0 ? WAL_HEADER : 0;
            size_t take = left < WAL_PAYLOAD - skip ? left : WAL_PAYLOAD - skip;
            memmove(dst, img + o + (uint64_t)i * WAL_SECTOR + skip, take);
            dst += take;
            left -= take;
        }
        int rv = replay_body(r, img + gathered, body);
        if (rv) {
            return rv;
        }
        gathered += body;
        /* Batches start at 4 KiB boundaries; a crash may have left the
         * zero padding of the last one short, which loses nothing. */
        o += batch_span(WAL_HEADER + (size_t)body);
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
    if (mkdir(w->dir, 0700) == 0) {
        /* The directory's name must last too. */
        int fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int rc = fd < 0 || fsync(fd) != 0 ? errno : 0;
        if (fd >= 0) {
            close(fd);
        }
        if (rc) {
            return fail(w, rc, "%s: fsync: %s", data_dir, strerror(rc));
        }
    } else if (errno != EEXIST) {
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
            uint64_t written = size;
            while (written > end && img[written - 1] == 0) {
                written--;
            }
            out->cut_bytes = written > end ? written - end : 0;
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
