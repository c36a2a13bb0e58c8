/* test_frame.c: the frame codec: packing, incremental decoding, caps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include <proto/echo.pb-c.h>

#include "cunit_main.h"
#include "rpc/rpc.h"

/* Append one frame (call id, payload) to a growing buffer. */
struct stream
{
    uint8_t *data;
    size_t len;
};

static size_t add_frame(struct stream *s,
                        uint64_t call_id,
                        const char *payload,
                        size_t payload_len,
                        const struct rpc_limits *lim)
{
    Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
    hdr.service_name = "raftkv.test.EchoService";
    hdr.method_name = "Echo";
    hdr.call_id = call_id;
    Raftkv__Test__EchoArgs args = RAFTKV__TEST__ECHO_ARGS__INIT;
    args.payload.data = (uint8_t *)payload;
    args.payload.len = payload_len;
    struct rpc_frame_plan plan;
    CU_ASSERT_FATAL(
        rpc_frame_plan(&hdr, payload ? &args.base : NULL, lim, &plan) == 0);
    s->data = realloc(s->data, s->len + plan.total);
    CU_ASSERT_FATAL(s->data != NULL);
    rpc_frame_pack(&hdr, payload ? &args.base : NULL, &plan, s->data + s->len);
    s->len += plan.total;
    return plan.total;
}

/* Check a decoded frame against what add_frame wrote. */
static void check_frame(const struct rpc_frame *f,
                        uint64_t call_id,
                        const char *payload)
{
    CU_ASSERT_EQUAL(f->header->call_id, call_id);
    CU_ASSERT_STRING_EQUAL(f->header->service_name, "raftkv.test.EchoService");
    CU_ASSERT_STRING_EQUAL(f->header->method_name, "Echo");
    CU_ASSERT_EQUAL(f->args_size, f->header->args_size);
    Raftkv__Test__EchoArgs *a =
        raftkv__test__echo_args__unpack(NULL, f->args_size, f->args);
    CU_ASSERT_FATAL(a != NULL);
    CU_ASSERT_EQUAL(a->payload.len, strlen(payload));
    CU_ASSERT(memcmp(a->payload.data, payload, a->payload.len) == 0);
    raftkv__test__echo_args__free_unpacked(a, NULL);
}

static void test_frame_round_trip_in_one_read(void)
{
    struct stream s = {0};
    size_t n = add_frame(&s, 42, "hello", 5, NULL);
    struct rpc_decoder *d = rpc_decoder_new(NULL);
    struct rpc_frame f;
    size_t used;
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, s.data, s.len, &used, &f),
                    RPC_DECODE_FRAME);
    CU_ASSERT_EQUAL(used, n);
    check_frame(&f, 42, "hello");
    /* The head_size prefix is big-endian. */
    uint32_t head = (uint32_t)s.data[0] << 24 | (uint32_t)s.data[1] << 16 |
                    (uint32_t)s.data[2] << 8 | s.data[3];
    CU_ASSERT_EQUAL(RPC_PREFIX_SIZE + head + f.args_size, n);
    rpc_decoder_free(d);
    free(s.data);
}

static void test_frame_delivered_one_byte_at_a_time(void)
{
    struct stream s = {0};
    add_frame(&s, 7, "byte by byte", 12, NULL);
    add_frame(&s, 8, "second", 6, NULL);
    struct rpc_decoder *d = rpc_decoder_new(NULL);
    struct rpc_frame f;
    int frames = 0;
    for (size_t i = 0; i < s.len; i++) {
        size_t used;
        int rv = rpc_decoder_feed(d, s.data + i, 1, &used, &f);
        CU_ASSERT_EQUAL(used, 1);
        if (rv == RPC_DECODE_FRAME) {
            frames++;
            check_frame(&f, frames == 1 ? 7 : 8,
                        frames == 1 ? "byte by byte" : "second");
        } else {
            CU_ASSERT_EQUAL(rv, RPC_DECODE_MORE);
        }
    }
    CU_ASSERT_EQUAL(frames, 2);
    rpc_decoder_free(d);
    free(s.data);
}

static void test_frame_one_and_a_half_frames_in_one_read(void)
{
    struct stream s = {0};
    size_t n1 = add_frame(&s, 1, "first frame", 11, NULL);
    size_t n2 = add_frame(&s, 2, "second frame", 12, NULL);
    struct rpc_decoder *d = rpc_decoder_new(NULL);
    struct rpc_frame f;
    size_t used;
    size_t first_read = n1 + n2 / 2;
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, s.data, first_read, &used, &f),
                    RPC_DECODE_FRAME);
    CU_ASSERT_EQUAL(used, n1);
    check_frame(&f, 1, "first frame");
    CU_ASSERT_EQUAL(
        rpc_decoder_feed(d, s.data + n1, first_read - n1, &used, &f),
        RPC_DECODE_MORE);
    CU_ASSERT_EQUAL(used, first_read - n1);
    CU_ASSERT_EQUAL(
        rpc_decoder_feed(d, s.data + first_read, s.len - first_read, &used, &f),
        RPC_DECODE_FRAME);
    CU_ASSERT_EQUAL(used, s.len - first_read);
    check_frame(&f, 2, "second frame");
    rpc_decoder_free(d);
    free(s.data);
}

static void test_frame_many_frames_in_one_read(void)
{
    struct stream s = {0};
    char payload[32];
    for (int i = 0; i < 500; i++) {
        int len = snprintf(payload, sizeof payload, "payload-%d", i);
        add_frame(&s, (uint64_t)i + 1, payload, (size_t)len, NULL);
    }
    struct rpc_decoder *d = rpc_decoder_new(NULL);
    size_t pos = 0;
    int frames = 0;
    while (pos < s.len) {
        struct rpc_frame f;
        size_t used;
        int rv = rpc_decoder_feed(d, s.data + pos, s.len - pos, &used, &f);
        CU_ASSERT_EQUAL_FATAL(rv, RPC_DECODE_FRAME);
        snprintf(payload, sizeof payload, "payload-%d", frames);
        check_frame(&f, (uint64_t)frames + 1, payload);
        /* Whole frames in the input are not copied. */
        CU_ASSERT(f.args >= s.data + pos && f.args < s.data + pos + used);
        pos += used;
        frames++;
    }
    CU_ASSERT_EQUAL(frames, 500);
    rpc_decoder_free(d);
    free(s.data);
}

static void test_frame_random_split_points_decode_the_same(void)
{
    unsigned seed = cunit_seed();
    struct stream s = {0};
    char payload[64];
    for (int i = 0; i < 50; i++) {
        int len = snprintf(payload, sizeof payload, "p%d-%0*d", i, i % 40, 0);
        add_frame(&s, (uint64_t)i + 1, payload, (size_t)len, NULL);
    }
    for (int round = 0; round < 200; round++) {
        struct rpc_decoder *d = rpc_decoder_new(NULL);
        size_t pos = 0;
        int frames = 0;
        while (pos < s.len) {
            size_t chunk = 1 + (size_t)rand_r(&seed) % 97;
            if (chunk > s.len - pos) {
                chunk = s.len - pos;
            }
            size_t off = 0;
            while (off < chunk) {
                struct rpc_frame f;
                size_t used;
                int rv = rpc_decoder_feed(d, s.data + pos + off, chunk - off,
                                          &used, &f);
                CU_ASSERT_FATAL(rv != RPC_DECODE_ERROR);
                off += used;
                if (rv == RPC_DECODE_FRAME) {
                    int len = snprintf(payload, sizeof payload, "p%d-%0*d",
                                       frames, frames % 40, 0);
                    (void)len;
                    check_frame(&f, (uint64_t)frames + 1, payload);
                    frames++;
                }
            }
            pos += chunk;
        }
        CU_ASSERT_EQUAL(frames, 50);
        rpc_decoder_free(d);
    }
    free(s.data);
}

static void test_frame_empty_args(void)
{
    struct stream s = {0};
    add_frame(&s, 9, NULL, 0, NULL);
    struct rpc_decoder *d = rpc_decoder_new(NULL);
    struct rpc_frame f;
    size_t used;
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, s.data, s.len, &used, &f),
                    RPC_DECODE_FRAME);
    CU_ASSERT_EQUAL(used, s.len);
    CU_ASSERT_EQUAL(f.header->call_id, 9);
    CU_ASSERT_EQUAL(f.args_size, 0);
    CU_ASSERT_EQUAL(f.header->args_size, 0);
    rpc_decoder_free(d);
    free(s.data);
}

static void test_frame_largest_allowed_args_pass_and_one_more_is_refused(void)
{
    struct rpc_limits lim = {.max_head = 256, .max_args = 1000};
    /* EchoArgs{payload: 997 bytes} packs to tag(1) + varint len(2) + 997. */
    char *payload = malloc(998);
    memset(payload, 'x', 998);
    struct stream s = {0};
    add_frame(&s, 1, payload, 997, &lim);
    struct rpc_decoder *d = rpc_decoder_new(&lim);
    struct rpc_frame f;
    size_t used;
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, s.data, s.len, &used, &f),
                    RPC_DECODE_FRAME);
    CU_ASSERT_EQUAL(f.args_size, 1000);

    Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
    Raftkv__Test__EchoArgs args = RAFTKV__TEST__ECHO_ARGS__INIT;
    args.payload.data = (uint8_t *)payload;
    args.payload.len = 998;
    struct rpc_frame_plan plan;
    CU_ASSERT_EQUAL(rpc_frame_plan(&hdr, &args.base, &lim, &plan),
                    RPC_E_TOO_BIG);
    rpc_decoder_free(d);
    free(payload);
    free(s.data);
}

static void test_frame_head_over_cap_fails_before_reading_it(void)
{
    struct rpc_limits lim = {.max_head = 100, .max_args = 1000};
    uint8_t prefix[4] = {0, 0, 0, 101};
    struct rpc_decoder *d = rpc_decoder_new(&lim);
    struct rpc_frame f;
    size_t used;
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, prefix, 4, &used, &f),
                    RPC_DECODE_ERROR);
    CU_ASSERT(strstr(rpc_decoder_errmsg(d), "head_size 101") != NULL);
    /* The error is sticky: a broken stream is never trusted again. */
    uint8_t more[8] = {0};
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, more, sizeof more, &used, &f),
                    RPC_DECODE_ERROR);
    rpc_decoder_free(d);

    /* 0xFFFFFFFF must not make the decoder allocate 4 GiB. */
    uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    d = rpc_decoder_new(NULL);
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, huge, 4, &used, &f), RPC_DECODE_ERROR);
    rpc_decoder_free(d);
}

static void test_frame_args_over_cap_fail_after_the_header(void)
{
    struct rpc_limits small = {.max_head = 256, .max_args = 10};
    struct stream s = {0};
    add_frame(&s, 1, "more than ten bytes", 19, NULL);
    struct rpc_decoder *d = rpc_decoder_new(&small);
    struct rpc_frame f;
    size_t used;
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, s.data, s.len, &used, &f),
                    RPC_DECODE_ERROR);
    CU_ASSERT(strstr(rpc_decoder_errmsg(d), "args_size 21") != NULL);
    CU_ASSERT(used < s.len); /* the args were never read */
    rpc_decoder_free(d);
    free(s.data);
}

/* A frame header that announces args_size bytes of args (none follow). */
static size_t add_header_only(struct stream *s,
                              uint64_t call_id,
                              uint32_t args_size)
{
    Raftkv__RpcHeader hdr = RAFTKV__RPC_HEADER__INIT;
    hdr.service_name = "raftkv.test.EchoService";
    hdr.method_name = "Echo";
    hdr.call_id = call_id;
    hdr.args_size = args_size;
    size_t hs = raftkv__rpc_header__get_packed_size(&hdr);
    s->data = realloc(s->data, s->len + RPC_PREFIX_SIZE + hs);
    CU_ASSERT_FATAL(s->data != NULL);
    uint8_t *p = s->data + s->len;
    p[0] = (uint8_t)(hs >> 24);
    p[1] = (uint8_t)(hs >> 16);
    p[2] = (uint8_t)(hs >> 8);
    p[3] = (uint8_t)hs;
    raftkv__rpc_header__pack(&hdr, p + RPC_PREFIX_SIZE);
    s->len += RPC_PREFIX_SIZE + hs;
    return RPC_PREFIX_SIZE + hs;
}

static void test_frame_oversized_args_are_skipped_when_asked(void)
{
    struct rpc_limits small = {.max_head = 256, .max_args = 10};
    struct stream s = {0};
    size_t n1 = add_frame(&s, 1, "more than ten bytes", 19, NULL);
    add_frame(&s, 2, "ok", 2, NULL);
    struct rpc_decoder *d = rpc_decoder_new(&small);
    rpc_decoder_skip_oversized(d, true);
    struct rpc_frame f;
    size_t used;
    /* The oversized frame comes out at its header, without args. */
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, s.data, s.len, &used, &f),
                    RPC_DECODE_FRAME);
    CU_ASSERT(f.oversized);
    CU_ASSERT_EQUAL(f.header->call_id, 1);
    CU_ASSERT_EQUAL(f.header->args_size, 21);
    CU_ASSERT_PTR_NULL(f.args);
    CU_ASSERT_EQUAL(f.args_size, 0);
    CU_ASSERT_EQUAL(used, n1 - 21); /* the args are still to come */
    CU_ASSERT(rpc_decoder_mid_frame(d));
    /* Its args are dropped and the next frame decodes as usual. */
    size_t pos = used;
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, s.data + pos, s.len - pos, &used, &f),
                    RPC_DECODE_FRAME);
    CU_ASSERT_EQUAL(used, s.len - pos);
    CU_ASSERT(!f.oversized);
    check_frame(&f, 2, "ok");
    CU_ASSERT(!rpc_decoder_mid_frame(d));
    CU_ASSERT_STRING_EQUAL(rpc_decoder_errmsg(d), "");
    rpc_decoder_free(d);

    /* The same, one byte at a time. */
    d = rpc_decoder_new(&small);
    rpc_decoder_skip_oversized(d, true);
    int frames = 0, oversized = 0;
    for (size_t i = 0; i < s.len; i++) {
        int rv = rpc_decoder_feed(d, s.data + i, 1, &used, &f);
        CU_ASSERT_EQUAL(used, 1);
        CU_ASSERT_FATAL(rv != RPC_DECODE_ERROR);
        if (rv == RPC_DECODE_FRAME) {
            frames++;
            if (f.oversized) {
                oversized++;
                CU_ASSERT_EQUAL(f.header->call_id, 1);
            } else {
                check_frame(&f, 2, "ok");
            }
        }
    }
    CU_ASSERT_EQUAL(frames, 2);
    CU_ASSERT_EQUAL(oversized, 1);
    rpc_decoder_free(d);
    free(s.data);
}

static void test_frame_skipping_huge_args_holds_no_memory_for_them(void)
{
    /* A header that announces 4 GiB: skipped as it streams by, 64 KiB at
     * a time, and never staged (the decoder holds only its header). */
    struct stream s = {0};
    add_header_only(&s, 5, 0xFFFFFFF0u);
    struct rpc_decoder *d = rpc_decoder_new(NULL);
    rpc_decoder_skip_oversized(d, true);
    struct rpc_frame f;
    size_t used;
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, s.data, s.len, &used, &f),
                    RPC_DECODE_FRAME);
    CU_ASSERT(f.oversized);
    CU_ASSERT_EQUAL(f.header->call_id, 5);
    static uint8_t junk[64 * 1024];
    memset(junk, 0xab, sizeof junk);
    for (int i = 0; i < 256; i++) { /* 16 MiB */
        CU_ASSERT_EQUAL_FATAL(rpc_decoder_feed(d, junk, sizeof junk, &used, &f),
                              RPC_DECODE_MORE);
        CU_ASSERT_EQUAL_FATAL(used, sizeof junk);
    }
    CU_ASSERT(rpc_decoder_mid_frame(d));
    rpc_decoder_free(d);
    free(s.data);
}

static void test_frame_skipping_still_fails_on_a_broken_header(void)
{
    struct rpc_limits lim = {.max_head = 100, .max_args = 1000};
    uint8_t prefix[4] = {0, 0, 0, 101};
    struct rpc_decoder *d = rpc_decoder_new(&lim);
    rpc_decoder_skip_oversized(d, true);
    struct rpc_frame f;
    size_t used;
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, prefix, 4, &used, &f),
                    RPC_DECODE_ERROR);
    CU_ASSERT(strstr(rpc_decoder_errmsg(d), "head_size 101") != NULL);
    CU_ASSERT(!rpc_decoder_mid_frame(d));
    rpc_decoder_free(d);

    uint8_t bad[10] = {0, 0, 0, 6, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff};
    d = rpc_decoder_new(NULL);
    rpc_decoder_skip_oversized(d, true);
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, bad, sizeof bad, &used, &f),
                    RPC_DECODE_ERROR);
    rpc_decoder_free(d);
}

static void test_frame_mid_frame_follows_the_bytes(void)
{
    struct stream s = {0};
    add_frame(&s, 3, "abc", 3, NULL);
    struct rpc_decoder *d = rpc_decoder_new(NULL);
    struct rpc_frame f;
    size_t used;
    CU_ASSERT(!rpc_decoder_mid_frame(d));
    for (size_t i = 0; i + 1 < s.len; i++) {
        CU_ASSERT_EQUAL(rpc_decoder_feed(d, s.data + i, 1, &used, &f),
                        RPC_DECODE_MORE);
        CU_ASSERT(rpc_decoder_mid_frame(d)); /* from the first byte on */
    }
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, s.data + s.len - 1, 1, &used, &f),
                    RPC_DECODE_FRAME);
    CU_ASSERT(!rpc_decoder_mid_frame(d));
    rpc_decoder_free(d);
    free(s.data);
}

static void test_frame_garbage_header_is_an_error(void)
{
    /* head_size 6, then bytes that are not a valid RpcHeader (a field with
     * wire type 7, which does not exist). */
    uint8_t bad[10] = {0, 0, 0, 6, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff};
    struct rpc_decoder *d = rpc_decoder_new(NULL);
    struct rpc_frame f;
    size_t used;
    CU_ASSERT_EQUAL(rpc_decoder_feed(d, bad, sizeof bad, &used, &f),
                    RPC_DECODE_ERROR);
    CU_ASSERT(strstr(rpc_decoder_errmsg(d), "does not unpack") != NULL);
    rpc_decoder_free(d);
}

static void test_frame_random_garbage_never_crashes(void)
{
    unsigned seed = cunit_seed();
    uint8_t buf[512];
    int errors = 0;
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)rand_r(&seed) % sizeof buf;
        for (size_t i = 0; i < len; i++) {
            buf[i] = (uint8_t)rand_r(&seed);
        }
        /* Small head sizes reach the protobuf parser more often. */
        if (len >= 4 && round % 2) {
            buf[0] = buf[1] = buf[2] = 0;
        }
        struct rpc_decoder *d = rpc_decoder_new(NULL);
        size_t pos = 0;
        int rv = RPC_DECODE_MORE;
        while (pos < len) {
            struct rpc_frame f;
            size_t used;
            rv = rpc_decoder_feed(d, buf + pos, len - pos, &used, &f);
            CU_ASSERT_FATAL(used <= len - pos);
            pos += used;
            if (rv != RPC_DECODE_FRAME) {
                break;
            }
            CU_ASSERT_FATAL(f.args_size == f.header->args_size);
        }
        errors += rv == RPC_DECODE_ERROR;
        rpc_decoder_free(d);
    }
    CU_ASSERT(errors > 0); /* garbage must be recognised as such */
}

int main(int argc, char **argv)
{
    static CU_TestInfo tests[] = {
        {"test_frame_round_trip_in_one_read",
         test_frame_round_trip_in_one_read},
        {"test_frame_delivered_one_byte_at_a_time",
         test_frame_delivered_one_byte_at_a_time},
        {"test_frame_one_and_a_half_frames_in_one_read",
         test_frame_one_and_a_half_frames_in_one_read},
        {"test_frame_many_frames_in_one_read",
         test_frame_many_frames_in_one_read},
        {"test_frame_random_split_points_decode_the_same",
         test_frame_random_split_points_decode_the_same},
        {"test_frame_empty_args", test_frame_empty_args},
        {"test_frame_largest_allowed_args_pass_and_one_more_is_refused",
         test_frame_largest_allowed_args_pass_and_one_more_is_refused},
        {"test_frame_head_over_cap_fails_before_reading_it",
         test_frame_head_over_cap_fails_before_reading_it},
        {"test_frame_args_over_cap_fail_after_the_header",
         test_frame_args_over_cap_fail_after_the_header},
        {"test_frame_oversized_args_are_skipped_when_asked",
         test_frame_oversized_args_are_skipped_when_asked},
        {"test_frame_skipping_huge_args_holds_no_memory_for_them",
         test_frame_skipping_huge_args_holds_no_memory_for_them},
        {"test_frame_skipping_still_fails_on_a_broken_header",
         test_frame_skipping_still_fails_on_a_broken_header},
        {"test_frame_mid_frame_follows_the_bytes",
         test_frame_mid_frame_follows_the_bytes},
        {"test_frame_garbage_header_is_an_error",
         test_frame_garbage_header_is_an_error},
        {"test_frame_random_garbage_never_crashes",
         test_frame_random_garbage_never_crashes},
        CU_TEST_INFO_NULL,
    };
    static CU_SuiteInfo suites[] = {
        {"frame", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return cunit_main(argc, argv, suites);
}
