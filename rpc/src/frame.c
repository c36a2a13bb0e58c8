/* frame.c: packing and incremental decoding of head_size | RpcHeader | args. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc.h"

enum decoder_state {
    DEC_PREFIX, /* reading the 4-byte head_size */
    DEC_HEAD,   /* reading head_size bytes of RpcHeader */
    DEC_ARGS,   /* reading args_size bytes of args */
    DEC_SKIP,   /* skipping the args of an oversized frame */
    DEC_FAILED, /* the stream is broken; nothing more is read */
};

struct rpc_decoder
{
    struct rpc_limits limits;        /* caps checked before any allocation */
    enum decoder_state state;        /* what the next bytes are */
    uint8_t prefix[RPC_PREFIX_SIZE]; /* head_size as it arrives */
    size_t prefix_have;              /* bytes of prefix so far */
    uint32_t head_size;              /* decoded head_size */
    uint8_t *buf;              /* staging for a header or args in pieces */
    size_t buf_cap;            /* allocated bytes of buf */
    size_t have;               /* bytes staged in buf for this part */
    Raftkv__RpcHeader *header; /* header of the frame being read/returned */
    bool delivered;            /* header belongs to a frame already returned */
    bool skip_oversized;       /* return oversized frames, skip their args */
    uint32_t skip_left;        /* args bytes still to skip (DEC_SKIP) */
    char errmsg[160];          /* why the stream broke */
};

static void fill_limits(struct rpc_limits *out, const struct rpc_limits *in)
{
    out->max_head = in && in->max_head ? in->max_head : RPC_DEFAULT_MAX_HEAD;
    out->max_args = in && in->max_args ? in->max_args : RPC_DEFAULT_MAX_ARGS;
}

int rpc_frame_plan(Raftkv__RpcHeader *hdr,
                   const ProtobufCMessage *args,
                   const struct rpc_limits *limits,
                   struct rpc_frame_plan *plan)
{
    struct rpc_limits lim;
    fill_limits(&lim, limits);
    size_t args_size = args ? protobuf_c_message_get_packed_size(args) : 0;
    if (args_size > lim.max_args) {
        return RPC_E_TOO_BIG;
    }
    hdr->args_size = (uint32_t)args_size;
    size_t head_size = raftkv__rpc_header__get_packed_size(hdr);
    if (head_size > lim.max_head) {
        return RPC_E_TOO_BIG;
    }
    plan->head_size = head_size;
    plan->args_size = args_size;
    plan->total = RPC_PREFIX_SIZE + head_size + args_size;
    return 0;
}

void rpc_frame_pack(const Raftkv__RpcHeader *hdr,
                    const ProtobufCMessage *args,
                    const struct rpc_frame_plan *plan,
                    uint8_t *out)
{
    uint32_t h = (uint32_t)plan->head_size;
    out[0] = (uint8_t)(h >> 24);
    out[1] = (uint8_t)(h >> 16);
    out[2] = (uint8_t)(h >> 8);
    out[3] = (uint8_t)h;
    raftkv__rpc_header__pack(hdr, out + RPC_PREFIX_SIZE);
    if (args && plan->args_size) {
        protobuf_c_message_pack(args, out + RPC_PREFIX_SIZE + plan->head_size);
    }
}

struct rpc_decoder *rpc_decoder_new(const struct rpc_limits *limits)
{
    struct rpc_decoder *d = calloc(1, sizeof *d);
    if (!d) {
        return NULL;
    }
    fill_limits(&d->limits, limits);
    d->state = DEC_PREFIX;
    return d;
}

static void release_header(struct rpc_decoder *d)
{
    if (d->header) {
        raftkv__rpc_header__free_unpacked(d->header, NULL);
        d->header = NULL;
    }
    d->delivered = false;
}

void rpc_decoder_free(struct rpc_decoder *d)
{
    if (!d) {
        return;
    }
    release_header(d);
    free(d->buf);
    free(d);
}

const char *rpc_decoder_errmsg(const struct rpc_decoder *d)
{
    return d->errmsg;
}

void rpc_decoder_skip_oversized(struct rpc_decoder *d, bool on)
{
    d->skip_oversized = on;
}

bool rpc_decoder_mid_frame(const struct rpc_decoder *d)
{
    switch (d->state) {
        case DEC_PREFIX:
            return d->prefix_have > 0;
        case DEC_HEAD:
        case DEC_ARGS:
        case DEC_SKIP:
            return true;
        case DEC_FAILED:
        default:
            return false;
    }
}

static int fail(struct rpc_decoder *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct rpc_decoder *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->errmsg, sizeof d->errmsg, fmt, ap);
    va_end(ap);
    d->state = DEC_FAILED;
    release_header(d);
    return RPC_DECODE_ERROR;
}

/* Make room for n staged bytes; caps were checked before, so n is bounded. */
static bool reserve(struct rpc_decoder *d, size_t n)
{
    if (n <= d->buf_cap) {
        return true;
    }
    uint8_t *nb = realloc(d->buf, n);
    if (!nb) {
        return false;
    }
    d->buf = nb;
    d->buf_cap = n;
    return true;
}

/* Collect a part of `need` bytes. Returns a pointer to all of them (into
 * data when they lie there whole, else into buf), or NULL when more input
 * is needed; sets *failed on allocation failure. */
static const uint8_t *collect(struct rpc_decoder *d,
                              const uint8_t *data,
                              size_t len,
                              size_t *pos,
                              size_t need,
                              bool *failed)
{
    size_t avail = len - *pos;
    if (d->have == 0 && avail >= need) {
        const uint8_t *p = data + *pos;
        *pos += need;
        return p;
    }
    if (!reserve(d, need)) {
        *failed = true;
        return NULL;
    }
    size_t take = need - d->have < avail ? need - d->have : avail;
    memcpy(d->buf + d->have, data + *pos, take);
    d->have += take;
    *pos += take;
    if (d->have < need) {
        return NULL;
    }
    return d->buf;
}

int rpc_decoder_feed(struct rpc_decoder *d,
                     const uint8_t *data,
                     size_t len,
                     size_t *used,
                     struct rpc_frame *frame)
{
    size_t pos = 0;
    bool oom = false;
    *used = 0;
    if (d->state == DEC_FAILED) {
        return RPC_DECODE_ERROR;
    }
    if (d->delivered) {
        release_header(d);
    }
    for (;;) {
        switch (d->state) {
            case DEC_PREFIX:
                while (d->prefix_have < RPC_PREFIX_SIZE && pos < len) {
                    d->prefix[d->prefix_have++] = data[pos++];
                }
                if (d->prefix_have < RPC_PREFIX_SIZE) {
                    *used = pos;
                    return RPC_DECODE_MORE;
                }
                d->head_size = (uint32_t)d->prefix[0] << 24 |
                               (uint32_t)d->prefix[1] << 16 |
                               (uint32_t)d->prefix[2] << 8 | d->prefix[3];
                d->prefix_have = 0;
                if (d->head_size > d->limits.max_head) {
                    *used = pos;
                    return fail(d, "head_size %u over the cap of %u",
                                d->head_size, d->limits.max_head);
                }
                d->have = 0;
                d->state = DEC_HEAD;
                break;
            case DEC_HEAD: {
                const uint8_t *h =
                    collect(d, data, len, &pos, d->head_size, &oom);
                if (!h) {
                    *used = pos;
                    return oom ? fail(d, "out of memory for a %u-byte header",
                                      d->head_size)
                               : RPC_DECODE_MORE;
                }
                d->header = raftkv__rpc_header__unpack(NULL, d->head_size, h);
                d->have = 0;
                if (!d->header) {
                    *used = pos;
                    return fail(d, "RpcHeader of %u bytes does not unpack",
                                d->head_size);
                }
                if (d->header->args_size > d->limits.max_args) {
                    *used = pos;
                    if (!d->skip_oversized) {
                        return fail(d, "args_size %u over the cap of %u",
                                    d->header->args_size, d->limits.max_args);
                    }
                    /* Answerable: hand out the header now, then drop the
                     * args as they come, never holding them. */
                    frame->header = d->header;
                    frame->args = NULL;
                    frame->args_size = 0;
                    frame->oversized = true;
                    d->delivered = true;
                    d->skip_left = d->header->args_size;
                    d->state = DEC_SKIP;
                    return RPC_DECODE_FRAME;
                }
                d->state = DEC_ARGS;
                break;
            }
            case DEC_SKIP: {
                size_t take =
                    len - pos < d->skip_left ? len - pos : d->skip_left;
                pos += take;
                d->skip_left -= (uint32_t)take;
                if (d->skip_left > 0) {
                    *used = pos;
                    return RPC_DECODE_MORE;
                }
                d->state = DEC_PREFIX;
                break;
            }
            case DEC_ARGS: {
                size_t need = d->header->args_size;
                const uint8_t *a = NULL;
                if (need > 0) {
                    a = collect(d, data, len, &pos, need, &oom);
                    if (!a) {
                        *used = pos;
                        return oom ? fail(d,
                                          "out of memory for %zu bytes of args",
                                          need)
                                   : RPC_DECODE_MORE;
                    }
                }
                frame->header = d->header;
                frame->args = a;
                frame->args_size = need;
                frame->oversized = false;
                d->have = 0;
                d->delivered = true;
                d->state = DEC_PREFIX;
                *used = pos;
                return RPC_DECODE_FRAME;
            }
            case DEC_FAILED:
            default:
                *used = pos;
                return RPC_DECODE_ERROR;
        }
    }
}
