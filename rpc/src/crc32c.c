/* crc32c.c: CRC-32C (Castagnoli), for log batches, snapshot streams and
 * snapshot files. */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
        crc_table[i] = c;
    }
}

static uint32_t crc_bytes(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len--) {
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* SSE 4.2 computes CRC-32C itself, 8 bytes an instruction: the log
 * checksums every byte it writes twice (the batch and its sectors). */
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t crc,
                                                            const uint8_t *p,
                                                            size_t len)
{
    while (len && ((uintptr_t)p & 7)) {
        crc = __builtin_ia32_crc32qi(crc, *p++);
        len--;
    }
    uint64_t c = crc;
    for (; len >= 8; len -= 8, p += 8) {
        uint64_t v;
        __builtin_memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    crc = (uint32_t)c;
    while (len--) {
        crc = __builtin_ia32_crc32qi(crc, *p++);
    }
    return crc;
}

static bool use_sse42;

static void crc_init_all(void)
{
    crc_init();
    __builtin_cpu_init();
    use_sse42 = __builtin_cpu_supports("sse4.2");
}
#else
static void crc_init_all(void)
{
    crc_init();
}
#endif

uint32_t rpc_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init_all);
    crc = ~crc;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (use_sse42) {
        return ~crc_sse42(crc, data, len);
    }
#endif
    return ~crc_bytes(crc, data, len);
}
