/* fuzz_frame.c: libFuzzer target: the frame decoder on arbitrary bytes in
 * arbitrary pieces, and every raftkv message type on the decoded args.
 *
 * Input: one byte of settings, then the stream. The byte + 1 is the piece
 * size (1..256); bit 0 caps heads at 64 bytes, bit 1 args at 4096 (else
 * the defaults); bit 2 makes the decoder skip the args of an oversized
 * frame (as a server's does) instead of failing. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <proto/admin.pb-c.h>
#include <proto/kv.pb-c.h>
#include <proto/raft.pb-c.h>

#include "rpc/rpc.h"

static const ProtobufCMessageDescriptor *const messages[] = {
    &raftkv__get_args__descriptor,
    &raftkv__put_append_args__descriptor,
    &raftkv__delete_args__descriptor,
    &raftkv__compare_and_swap_args__descriptor,
    &raftkv__get_reply__descriptor,
    &raftkv__compare_and_swap_reply__descriptor,
    &raftkv__request_vote_args__descriptor,
    &raftkv__append_entries_args__descriptor,
    &raftkv__append_entries_reply__descriptor,
    &raftkv__install_snapshot_args__descriptor,
    &raftkv__timeout_now_args__descriptor,
    &raftkv__ping_args__descriptor,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t piece = (size_t)data[0] + 1;
    struct rpc_limits lim = {.max_head = (data[0] & 1) ? 64 : 0,
                             .max_args = (data[0] & 2) ? 4096 : 0};
    bool skip = data[0] & 4;
    uint32_t max_args = lim.max_args ? lim.max_args : RPC_DEFAULT_MAX_ARGS;
    data++;
    size--;
    struct rpc_decoder *d = rpc_decoder_new(&lim);
    if (!d) {
        return 0;
    }
    rpc_decoder_skip_oversized(d, skip);
    size_t pos = 0;
    while (pos < size) {
        size_t len = size - pos < piece ? size - pos : piece;
        size_t off = 0;
        int rv = RPC_DECODE_MORE;
        while (off < len) {
            struct rpc_frame f;
            size_t used;
            rv = rpc_decoder_feed(d, data + pos + off, len - off, &used, &f);
            if (used > len - off) {
                __builtin_trap();
            }
            off += used;
            if (rv == RPC_DECODE_ERROR) {
                /* A broken stream always says why. */
                if (!rpc_decoder_errmsg(d)[0] || rpc_decoder_mid_frame(d)) {
                    __builtin_trap();
                }
                break;
            }
            if (rv == RPC_DECODE_FRAME && f.oversized) {
                /* Only when asked, only over the cap, and no args. */
                if (!skip || f.header->args_size <= max_args || f.args ||
                    f.args_size) {
                    __builtin_trap();
                }
            } else if (rv == RPC_DECODE_FRAME) {
                if (f.args_size != f.header->args_size ||
                    f.args_size > max_args) {
                    __builtin_trap();
                }
                size_t m =
                    f.header->call_id % (sizeof messages / sizeof messages[0]);
                ProtobufCMessage *msg = protobuf_c_message_unpack(
                    messages[m], NULL, f.args_size, f.args);
                if (msg) {
                    /* Whatever unpacks must pack again. */
                    size_t n = protobuf_c_message_get_packed_size(msg);
                    uint8_t *buf = n ? malloc(n) : NULL;
                    if (buf) {
                        protobuf_c_message_pack(msg, buf);
                        free(buf);
                    }
                    protobuf_c_message_free_unpacked(msg, NULL);
                }
            }
        }
        if (rv == RPC_DECODE_ERROR) {
            break;
        }
        pos += len;
    }
    rpc_decoder_free(d);
    return 0;
}
