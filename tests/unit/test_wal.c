/* test_wal.c: the write-ahead log: what a reopened log holds, segments,
 * interrupted appends and damage. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "cunit_main.h"
#include "store.h"
#include "wal.h"

static char dir[64];
static struct kv_wal w;
static struct kv_wal_contents c;

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/raftkv-wal-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
}

static void remove_dir(void)
{
    cunit_remove_tree(dir);
}

/* Entries first..last of term @term, data "e<index>". */
static void append(uint64_t first, uint64_t last, uint64_t term)
{
    char data[32];
    for (uint64_t i = first; i <= last; i++) {
        int len = snprintf(data, sizeof data, "e%llu", (unsigned long long)i);
        struct raft_entry e = {.index = i,
                               .term = term,
                               .type = RAFT_ENTRY_NORMAL,
                               .data = data,
                               .len = (size_t)len};
        CU_ASSERT_EQUAL_FATAL(kv_wal_add_entries(&w, &e, 1), 0);
    }
}

static int reopen(uint64_t seg_bytes)
{
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    return kv_wal_open(&w, dir, seg_bytes, &c);
}

/* The entry at @index in c, checked for its data. */
static const struct raft_entry *entry(uint64_t index)
{
    for (size_t i = 0; i < c.n_entries; i++) {
        if (c.entries[i].index == index) {
            char want[32];
            int len =
                snprintf(want, sizeof want, "e%llu", (unsigned long long)index);
            CU_ASSERT(c.entries[i].len == (size_t)len &&
                      memcmp(c.entries[i].data, want, (size_t)len) == 0);
            return &c.entries[i];
        }
    }
    return NULL;
}

static void check_range(uint64_t first, uint64_t last)
{
    CU_ASSERT_EQUAL_FATAL(c.n_entries, last - first + 1);
    CU_ASSERT_EQUAL(c.entries[0].index, first);
    CU_ASSERT_EQUAL(c.entries[c.n_entries - 1].index, last);
    for (uint64_t i = first; i <= last; i++) {
        CU_ASSERT_PTR_NOT_NULL(entry(i));
    }
}

static void segment_path(uint64_t no, char *out, size_t len)
{
    snprintf(out, len, "%s/wal/%016llx.wal", dir, (unsigned long long)no);
}

static off_t file_size(const char *path)
{
    struct stat s;
    return stat(path, &s) == 0 ? s.st_size : -1;
}

static void test_wal_reopen_holds_entries_hard_state_and_truncation(void)
{
    make_dir();
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    CU_ASSERT_EQUAL(c.n_entries, 0);
    append(1, 10, 1);
    CU_ASSERT_EQUAL(kv_wal_add_hard_state(&w, 1, 2), 0);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    /* A new leader overwrites 8..10 with its own entries. */
    CU_ASSERT_EQUAL(kv_wal_add_truncate(&w, 8), 0);
    append(8, 12, 2);
    CU_ASSERT_EQUAL(kv_wal_add_hard_state(&w, 2, 3), 0);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    CU_ASSERT_FALSE(kv_wal_pending(&w));
    CU_ASSERT_EQUAL_FATAL(reopen(0), 0);
    check_range(1, 12);
    CU_ASSERT_EQUAL(entry(7)->term, 1);
    CU_ASSERT_EQUAL(entry(8)->term, 2);
    CU_ASSERT_EQUAL(c.hs.term, 2);
    CU_ASSERT_EQUAL(c.hs.vote, 3);
    CU_ASSERT_EQUAL(c.cut_bytes, 0);
    /* A batch never synced is not there. */
    append(13, 13, 2);
    kv_wal_discard(&w);
    CU_ASSERT_EQUAL_FATAL(reopen(0), 0);
    check_range(1, 12);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    remove_dir();
}

static void test_wal_snapshot_mark_drops_entries_up_to_it(void)
{
    make_dir();
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    append(1, 20, 1);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL(kv_wal_add_snapshot(&w, 15, 1), 0);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL_FATAL(reopen(0), 0);
    CU_ASSERT_EQUAL(c.snap_index, 15);
    CU_ASSERT_EQUAL(c.snap_term, 1);
    check_range(16, 20);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    remove_dir();
}

static void test_wal_segments_roll_over_and_old_ones_are_released(void)
{
    make_dir();
    const uint64_t seg = 16 * 1024;
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, seg, &c), 0);
    CU_ASSERT_EQUAL(kv_wal_add_hard_state(&w, 4, 1), 0);
    /* One 4 KiB batch per sync: 4 batches fill a segment. */
    for (uint64_t i = 1; i <= 40; i++) {
        append(i, i, 4);
        CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    }
    CU_ASSERT_EQUAL(w.n_segs, 10);
    CU_ASSERT_EQUAL(kv_wal_bytes(&w), 40 * 4096);
    CU_ASSERT_EQUAL(w.segs[0].last_index, 4);
    /* Compacted up to 22: segments with entries 1-4 ... 17-20 go. */
    CU_ASSERT_EQUAL(kv_wal_release(&w, 22), 5);
    CU_ASSERT_EQUAL(w.n_segs, 5);
    char path[128];
    segment_path(1, path, sizeof path);
    CU_ASSERT_EQUAL(file_size(path), -1);
    /* The hard state, written once in the first segment, survives. */
    CU_ASSERT_EQUAL_FATAL(reopen(seg), 0);
    check_range(21, 40);
    CU_ASSERT_EQUAL(c.hs.term, 4);
    CU_ASSERT_EQUAL(c.hs.vote, 1);
    /* The current segment is never released. */
    CU_ASSERT_EQUAL(kv_wal_release(&w, 1000), 4);
    CU_ASSERT_EQUAL(w.n_segs, 1);
    CU_ASSERT_EQUAL_FATAL(reopen(seg), 0);
    check_range(37, 40);
    CU_ASSERT_EQUAL(c.hs.term, 4);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    remove_dir();
}

static void test_wal_interrupted_append_is_cut_off(void)
{
    make_dir();
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    append(1, 5, 1);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    /* A second, large batch (several pages) of which only part reached
     * the disk: its first page and a zero-filled rest. */
    char big[3000];
    memset(big, 'x', sizeof big);
    for (uint64_t i = 6; i <= 10; i++) {
        struct raft_entry e = {
            .index = i, .term = 1, .data = big, .len = sizeof big};
        CU_ASSERT_EQUAL(kv_wal_add_entries(&w, &e, 1), 0);
    }
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    kv_wal_close(&w);
    char path[128];
    segment_path(1, path, sizeof path);
    off_t size = file_size(path);
    CU_ASSERT_FATAL(size >= 5 * 4096); /* zeros run ahead of the appends */
    int fd = open(path, O_WRONLY);
    CU_ASSERT_FATAL(fd >= 0);
    static const uint8_t zeros[4096];
    CU_ASSERT_EQUAL(pwrite(fd, zeros, sizeof zeros, 3 * 4096), 4096);
    close(fd);
    kv_wal_contents_free(&c);
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    check_range(1, 5);
    /* What was written of the second batch is cut (not the zeros after). */
    CU_ASSERT(c.cut_bytes > 2 * 4096 && c.cut_bytes <= 4 * 4096);
    CU_ASSERT_EQUAL(file_size(path), 4096);
    /* Appends go on after the cut. */
    append(6, 6, 2);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL_FATAL(reopen(0), 0);
    check_range(1, 6);
    CU_ASSERT_EQUAL(c.cut_bytes, 0);
    /* A crash may leave the last batch's zero padding short: nothing is
     * lost, and the next batch still starts at a 4 KiB boundary. */
    kv_wal_close(&w);
    CU_ASSERT_EQUAL(truncate(path, 2 * 4096 - 1000), 0);
    kv_wal_contents_free(&c);
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    check_range(1, 6);
    CU_ASSERT_EQUAL(c.cut_bytes, 0);
    CU_ASSERT_EQUAL(file_size(path), 2 * 4096);
    append(7, 7, 2);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL_FATAL(reopen(0), 0);
    check_range(1, 7);
    /* Zeros past the last batch (written ahead of the appends, or left by
     * a crash) are no interrupted append and stay. */
    kv_wal_close(&w);
    CU_ASSERT_EQUAL(truncate(path, 10 * 4096), 0);
    kv_wal_contents_free(&c);
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    check_range(1, 7);
    CU_ASSERT_EQUAL(c.cut_bytes, 0);
    CU_ASSERT_EQUAL(file_size(path), 10 * 4096);
    append(8, 8, 2);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL_FATAL(reopen(0), 0);
    check_range(1, 8);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    remove_dir();
}

/* Flip one byte of a segment. */
static void flip(uint64_t no, off_t at)
{
    char path[128];
    segment_path(no, path, sizeof path);
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t b;
    CU_ASSERT_EQUAL(pread(fd, &b, 1, at), 1);
    b ^= 0x40;
    CU_ASSERT_EQUAL(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

static void test_wal_damage_before_good_data_is_reported_not_cut(void)
{
    make_dir();
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    append(1, 3, 1);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    append(4, 6, 1);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    append(7, 9, 1);
    CU_ASSERT_EQUAL(kv_wal_sync(&w), 0);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    /* A byte inside the second batch's data: acknowledged entries follow,
     * so this is damage, not an interrupted append. */
    char path[128];
    segment_path(1, path, sizeof path);
    off_t size = file_size(path);
    flip(1, 4096 + 40);
    CU_ASSERT_EQUAL(kv_wal_open(&w, dir, 0, &c), KV_STORE_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(w.errmsg, "0000000000000001.wal"));
    CU_ASSERT_PTR_NOT_NULL(strstr(w.errmsg, "offset 4096"));
    CU_ASSERT_PTR_NOT_NULL(strstr(w.errmsg, "checksum"));
    CU_ASSERT_PTR_NOT_NULL(strstr(w.errmsg, "index 3"));
    /* Nothing was cut: the file is as it was. */
    CU_ASSERT_EQUAL(file_size(path), size);
    remove_dir();
}

static void test_wal_damage_in_an_older_segment_is_reported(void)
{
    make_dir();
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 8192, &c), 0);
    for (uint64_t i = 1; i <= 6; i++) {
        append(i, i, 1);
        CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    }
    CU_ASSERT_EQUAL(w.n_segs, 3);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    /* The last batch of segment 2 (a header byte). */
    flip(2, 4096 + 5);
    CU_ASSERT_EQUAL(kv_wal_open(&w, dir, 8192, &c), KV_STORE_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(w.errmsg, "0000000000000002.wal"));
    /* A missing segment in the middle is reported too. */
    char path[128];
    segment_path(2, path, sizeof path);
    CU_ASSERT_EQUAL(unlink(path), 0);
    CU_ASSERT_EQUAL(kv_wal_open(&w, dir, 8192, &c), KV_STORE_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(w.errmsg, "missing log segment"));
    remove_dir();
}

/* Write @len bytes at @at of segment @no. */
static void poke(uint64_t no, off_t at, const void *data, size_t len)
{
    char path[128];
    segment_path(no, path, sizeof path);
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(pwrite(fd, data, len, at), (ssize_t)len);
    close(fd);
}

/* A value crafted to look like log structure: sector trailers of the
 * current format ("RKWH" and a checksum) all through it, and where it
 * lands on a 4 KiB boundary of the file (the value starts 38 bytes into
 * a batch that starts on one), a batch header of the previous format
 * (magic "RKVW", a length and the header checksum it had in segment 1). */
static void fill_with_fake_headers(uint8_t *v, size_t len)
{
    for (size_t at = 0; at + 8 <= len; at += 8) {
        kv_put_u32(v + at, 0x524b5748u); /* "RKWH" */
        kv_put_u32(v + at + 4, kv_crc32c(0, v, at));
    }
    for (size_t at = 4096 - 38; at + 16 <= len; at += 4096) {
        uint8_t *h = v + at;
        kv_put_u32(h, 0x524b5657u); /* "RKVW" */
        kv_put_u32(h + 4, 64);
        kv_put_u32(h + 8, kv_crc32c(0, h + 16, 64));
        uint8_t b[20];
        memcpy(b, h, 12);
        kv_put_u64(b + 12, 1);
        kv_put_u32(h + 12, kv_crc32c(0, b, sizeof b));
    }
}

static void test_wal_client_values_cannot_look_like_log_structure(void)
{
    make_dir();
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    append(1, 3, 1);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    /* A batch of values that imitate batch headers and sector trailers
     * throughout, torn by a crash: one of its middle sectors never
     * reached the disk. It must be cut as an interrupted append, not
     * taken for damage followed by good data. */
    static uint8_t v[12000];
    fill_with_fake_headers(v, sizeof v);
    struct raft_entry e = {.index = 4,
                           .term = 1,
                           .type = RAFT_ENTRY_NORMAL,
                           .data = v,
                           .len = sizeof v};
    CU_ASSERT_EQUAL(kv_wal_add_entries(&w, &e, 1), 0);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    static const uint8_t zeros[512];
    poke(1, 4096 + 5 * 512, zeros, sizeof zeros);
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    check_range(1, 3);
    CU_ASSERT(c.cut_bytes > 0);
    /* Written again in full, such a value reads back as it was. */
    CU_ASSERT_EQUAL(kv_wal_add_entries(&w, &e, 1), 0);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    append(5, 5, 1);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL_FATAL(reopen(0), 0);
    CU_ASSERT_EQUAL_FATAL(c.n_entries, 5);
    CU_ASSERT_EQUAL(c.entries[3].len, sizeof v);
    CU_ASSERT(memcmp(c.entries[3].data, v, sizeof v) == 0);
    CU_ASSERT_EQUAL(c.cut_bytes, 0);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    remove_dir();
}

static void test_wal_damage_to_the_last_acknowledged_batch_is_not_cut(void)
{
    make_dir();
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    append(1, 3, 1);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    /* The last batch was synced (acknowledged): a flipped bit in it, even
     * in a value of zeros, is damage to report, never a torn append to
     * cut (that would forget acknowledged entries and votes). */
    static uint8_t v[3000];
    memset(v, 0, sizeof v);
    struct raft_entry e = {.index = 4,
                           .term = 1,
                           .type = RAFT_ENTRY_NORMAL,
                           .data = v,
                           .len = sizeof v};
    CU_ASSERT_EQUAL(kv_wal_add_entries(&w, &e, 1), 0);
    CU_ASSERT_EQUAL(kv_wal_add_hard_state(&w, 1, 2), 0);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    char path[128];
    segment_path(1, path, sizeof path);
    off_t size = file_size(path);
    flip(1, 4096 + 3 * 512 + 100);
    CU_ASSERT_EQUAL(kv_wal_open(&w, dir, 0, &c), KV_STORE_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(w.errmsg, "offset 4096"));
    CU_ASSERT_PTR_NOT_NULL(strstr(w.errmsg, "checksum"));
    CU_ASSERT_PTR_NOT_NULL(strstr(w.errmsg, "index 3"));
    CU_ASSERT_EQUAL(file_size(path), size);
    /* The same for a flip in its header. */
    flip(1, 4096 + 3 * 512 + 100);
    flip(1, 4096 + 2);
    CU_ASSERT_EQUAL(kv_wal_open(&w, dir, 0, &c), KV_STORE_ECORRUPT);
    CU_ASSERT_EQUAL(file_size(path), size);
    remove_dir();
}

/* Make writes at or past @limit bytes of any file fail (EFBIG), as a full
 * disk or a failing device would; RLIM_INFINITY lifts it. */
static void limit_file_size(rlim_t limit)
{
    struct rlimit rl;
    CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = limit;
    CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

/* What the node does each turn (persist.c): add the hard state when it is
 * not the durable one, and sync. */
static int persist_hard_state(uint64_t term, uint64_t vote)
{
    if (term != w.term || vote != w.vote) {
        int rv = kv_wal_add_hard_state(&w, term, vote);
        if (rv) {
            return rv;
        }
    }
    return kv_wal_pending(&w) ? kv_wal_sync(&w) : 0;
}

static void test_wal_hard_state_of_a_failed_sync_is_written_by_the_retry(void)
{
    make_dir();
    signal(SIGXFSZ, SIG_IGN);
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, 0, &c), 0);
    CU_ASSERT_EQUAL_FATAL(persist_hard_state(1, 1), 0);
    /* The node votes for node 3 in term 2; the write fails. */
    limit_file_size((rlim_t)w.size);
    CU_ASSERT_NOT_EQUAL(persist_hard_state(2, 3), 0);
    CU_ASSERT_EQUAL(w.term, 1); /* nothing of it counts as written */
    CU_ASSERT_EQUAL(w.vote, 1);
    /* The retry writes the vote before it may be sent. */
    limit_file_size(RLIM_INFINITY);
    CU_ASSERT_EQUAL_FATAL(persist_hard_state(2, 3), 0);
    CU_ASSERT_EQUAL_FATAL(reopen(0), 0);
    CU_ASSERT_EQUAL(c.hs.term, 2);
    CU_ASSERT_EQUAL(c.hs.vote, 3);
    /* The same for a snapshot mark. */
    limit_file_size((rlim_t)w.size);
    CU_ASSERT_EQUAL(kv_wal_add_snapshot(&w, 9, 2), 0);
    CU_ASSERT_NOT_EQUAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL(w.snap_index, 0);
    limit_file_size(RLIM_INFINITY);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    remove_dir();
}

static void test_wal_every_segment_describes_itself(void)
{
    make_dir();
    signal(SIGXFSZ, SIG_IGN);
    const uint64_t seg = 8192;
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, seg, &c), 0);
    CU_ASSERT_EQUAL_FATAL(persist_hard_state(5, 2), 0);
    append(1, 1, 5);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL(w.n_segs, 1);
    /* Segment 2's first write fails: the segment exists, empty. */
    append(2, 2, 5);
    limit_file_size(0);
    CU_ASSERT_NOT_EQUAL(kv_wal_sync(&w), 0);
    limit_file_size(RLIM_INFINITY);
    CU_ASSERT_EQUAL(w.n_segs, 2);
    /* The retry and everything after it land in segment 2; once the log
     * is compacted past segment 1, the hard state must still be there. */
    append(2, 2, 5);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL(kv_wal_release(&w, 10), 1);
    CU_ASSERT_EQUAL_FATAL(reopen(seg), 0);
    CU_ASSERT_EQUAL(c.hs.term, 5);
    CU_ASSERT_EQUAL(c.hs.vote, 2);
    check_range(2, 2);

    /* A crash right after segment 4 was created: it is empty at the next
     * start. The segment before it may not go until segment 4 holds a
     * batch, which then starts with the hard state. */
    append(3, 3, 5);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    append(4, 4, 5);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL(w.n_segs, 2); /* segments 2 and 3 */
    kv_wal_close(&w);
    char path[128];
    segment_path(4, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    kv_wal_contents_free(&c);
    CU_ASSERT_EQUAL_FATAL(kv_wal_open(&w, dir, seg, &c), 0);
    CU_ASSERT_EQUAL(w.n_segs, 3);
    CU_ASSERT_EQUAL(kv_wal_release(&w, 10), 1); /* 2 goes, 3 stays */
    CU_ASSERT_EQUAL_FATAL(reopen(seg), 0);
    CU_ASSERT_EQUAL(c.hs.term, 5);
    CU_ASSERT_EQUAL(c.hs.vote, 2);
    append(5, 5, 5);
    CU_ASSERT_EQUAL_FATAL(kv_wal_sync(&w), 0);
    CU_ASSERT_EQUAL(kv_wal_release(&w, 10), 1); /* now 3 goes */
    CU_ASSERT_EQUAL_FATAL(reopen(seg), 0);
    CU_ASSERT_EQUAL(c.hs.term, 5);
    CU_ASSERT_EQUAL(c.hs.vote, 2);
    check_range(5, 5);
    kv_wal_close(&w);
    kv_wal_contents_free(&c);
    remove_dir();
}

static void test_wal_crc32c_known_value(void)
{
    /* The standard check value of CRC-32C. */
    CU_ASSERT_EQUAL(kv_crc32c(0, "123456789", 9), 0xe3069283u);
    /* Incremental use gives the same result. */
    CU_ASSERT_EQUAL(kv_crc32c(kv_crc32c(0, "1234", 4), "56789", 5),
                    0xe3069283u);
}

/* CRC-32C bit by bit, from its definition (reflected, polynomial
 * 0x82f63b78, initial and final value ~0). */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) {
            crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
        }
    }
    return ~crc;
}

static void test_wal_crc32c_matches_its_definition_at_any_length(void)
{
    /* The fast path (SSE 4.2 where the CPU has it) against the
     * definition: every length up to 300 and random ones, at every
     * alignment, whole and in two parts. */
    unsigned seed = cunit_seed();
    static uint8_t buf[9000];
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (uint8_t)rand_r(&seed);
    }
    unsigned bad = 0;
    for (unsigned n = 0; n < 600; n++) {
        size_t len = n < 300 ? n : (size_t)rand_r(&seed) % 8000;
        size_t off = (size_t)rand_r(&seed) % 8;
        size_t cut = len ? (size_t)rand_r(&seed) % len : 0;
        const uint8_t *p = buf + off;
        uint32_t want = crc32c_bitwise(0, p, len);
        bad += kv_crc32c(0, p, len) != want;
        bad += kv_crc32c(kv_crc32c(0, p, cut), p + cut, len - cut) != want;
    }
    CU_ASSERT_EQUAL(bad, 0);
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_wal_reopen_holds_entries_hard_state_and_truncation",
         test_wal_reopen_holds_entries_hard_state_and_truncation},
        {"test_wal_snapshot_mark_drops_entries_up_to_it",
         test_wal_snapshot_mark_drops_entries_up_to_it},
        {"test_wal_segments_roll_over_and_old_ones_are_released",
         test_wal_segments_roll_over_and_old_ones_are_released},
        {"test_wal_interrupted_append_is_cut_off",
         test_wal_interrupted_append_is_cut_off},
        {"test_wal_damage_before_good_data_is_reported_not_cut",
         test_wal_damage_before_good_data_is_reported_not_cut},
        {"test_wal_damage_in_an_older_segment_is_reported",
         test_wal_damage_in_an_older_segment_is_reported},
        {"test_wal_client_values_cannot_look_like_log_structure",
         test_wal_client_values_cannot_look_like_log_structure},
        {"test_wal_damage_to_the_last_acknowledged_batch_is_not_cut",
         test_wal_damage_to_the_last_acknowledged_batch_is_not_cut},
        {"test_wal_hard_state_of_a_failed_sync_is_written_by_the_retry",
         test_wal_hard_state_of_a_failed_sync_is_written_by_the_retry},
        {"test_wal_every_segment_describes_itself",
         test_wal_every_segment_describes_itself},
        {"test_wal_crc32c_known_value", test_wal_crc32c_known_value},
        {"test_wal_crc32c_matches_its_definition_at_any_length",
         test_wal_crc32c_matches_its_definition_at_any_length},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"wal", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
