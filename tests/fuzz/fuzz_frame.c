/* fuzz_frame.c: libFuzzer target: the frame decoder on arbitrary bytes in
 * arbitrary pieces, and every raftkv message type on the decoded args. */
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
    /* The first byte picks the piece size (1..256) and the caps. */
    size_t piece = (size_t)data[0] + 1;
    struct rpc_limits lim = {.max_head = (data[0] & 1) ? 64 : 0,
                             .max_args = (data[0] & 2) ? 4096 : 0};
    data++;
    size--;
    struct rpc_decoder *d = rpc_decoder_new(&lim);
    if (!d) {
        return 0;
    }
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
                break;
            }
            if (rv == RPC_DECODE_FRAME) {
                if (f.args_size != f.header->args_size) {
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
