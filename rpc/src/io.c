/* io.c: frames into and out of libevent buffers; socket and clock helpers. */
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "internal.h"

int rpc_write_frame(struct evbuffer *out,
                    Raftkv__RpcHeader *hdr,
                    const ProtobufCMessage *args,
                    const struct rpc_limits *limits)
{
    struct rpc_frame_plan plan;
    int rv = rpc_frame_plan(hdr, args, limits, &plan);
    if (rv != 0) {
        return rv;
    }
    struct evbuffer_iovec vec;
    if (evbuffer_reserve_space(out, (ev_ssize_t)plan.total, &vec, 1) != 1) {
        return RPC_E_NOMEM;
    }
    rpc_frame_pack(hdr, args, &plan, vec.iov_base);
    vec.iov_len = plan.total;
    if (evbuffer_commit_space(out, &vec, 1) != 0) {
        return RPC_E_NOMEM;
    }
    return 0;
}

int rpc_write_frame_packed(struct evbuffer *out,
                           Raftkv__RpcHeader *hdr,
                           const void *args,
                           size_t args_size,
                           const struct rpc_limits *limits)
{
    size_t max_head =
        limits && limits->max_head ? limits->max_head : RPC_DEFAULT_MAX_HEAD;
    size_t max_args =
        limits && limits->max_args ? limits->max_args : RPC_DEFAULT_MAX_ARGS;
    if (args_size > max_args) {
        return RPC_E_TOO_BIG;
    }
    hdr->args_size = (uint32_t)args_size;
    size_t head_size = raftkv__rpc_header__get_packed_size(hdr);
    if (head_size > max_head) {
        return RPC_E_TOO_BIG;
    }
    size_t total = RPC_PREFIX_SIZE + head_size + args_size;
    struct evbuffer_iovec vec;
    if (evbuffer_reserve_space(out, (ev_ssize_t)total, &vec, 1) != 1) {
        return RPC_E_NOMEM;
    }
    uint8_t *p = vec.iov_base;
    p[0] = (uint8_t)(head_size >> 24);
    p[1] = (uint8_t)(head_size >> 16);
    p[2] = (uint8_t)(head_size >> 8);
    p[3] = (uint8_t)head_size;
    raftkv__rpc_header__pack(hdr, p + RPC_PREFIX_SIZE);
    if (args_size) {
        memcpy(p + RPC_PREFIX_SIZE + head_size, args, args_size);
    }
    vec.iov_len = total;
    if (evbuffer_commit_space(out, &vec, 1) != 0) {
        return RPC_E_NOMEM;
    }
    return 0;
}

int rpc_read_frames(struct evbuffer *in,
                    struct rpc_decoder *d,
                    rpc_frame_cb cb,
                    void *ctx)
{
    for (;;) {
        struct evbuffer_iovec vec[8];
        int n = evbuffer_peek(in, -1, NULL, vec, 8);
        if (n <= 0) {
            return 0;
        }
        if (n > 8) {
            n = 8;
        }
        size_t consumed = 0;
        int got = RPC_DECODE_MORE;
        struct rpc_frame frame;
        for (int i = 0; i < n; i++) {
            size_t used;
            got = rpc_decoder_feed(d, vec[i].iov_base, vec[i].iov_len, &used,
                                   &frame);
            consumed += used;
            if (got != RPC_DECODE_MORE) {
                break;
            }
        }
        if (got == RPC_DECODE_ERROR) {
            evbuffer_drain(in, consumed);
            return RPC_DECODE_ERROR;
        }
        if (got == RPC_DECODE_MORE) {
            /* Everything peeked is staged in the decoder. */
            evbuffer_drain(in, consumed);
            continue;
        }
        /* The frame may point into the buffer: use it before draining. */
        int stop = cb(ctx, &frame);
        evbuffer_drain(in, consumed);
        if (stop) {
            return stop;
        }
    }
}

void rpc_bev_flush(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    if (evbuffer_get_length(out) == 0 || bufferevent_openssl_get_ssl(bev)) {
        return; /* TLS: only the bufferevent may write (it encrypts) */
    }
    /* A socket bufferevent freezes the start of its output buffer so that
     * only its own write callback drains it; that callback unfreezes it
     * around the write the same way. An error is left for that callback
     * to meet and report. */
    evbuffer_unfreeze(out, 1);
    evbuffer_write(out, bufferevent_getfd(bev));
    evbuffer_freeze(out, 1);
}

void rpc_format_addr(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        snprintf(out, len, "%s:%u", host, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        snprintf(out, len, "[%s]:%u", host, ntohs(s6->sin6_port));
    } else {
        snprintf(out, len, "local");
    }
}

uint64_t rpc_trace_id_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z ? z : 1;
}

uint64_t rpc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void rpc_tune_socket(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
}
