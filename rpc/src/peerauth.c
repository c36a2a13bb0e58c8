/* peerauth.c: the shared-secret handshake that peers pass before any frame.
 *
 * Both ends hold the cluster's key. The connecting side sends a hello with
 * a fresh nonce; the accepting side answers with its own nonce and an HMAC
 * that proves it holds the key; the connecting side checks it and proves
 * the same over both nonces; the accepting side checks that and says
 * whether it admits the connection. Labels keep one side's proof from
 * being replayed as the other's, and fresh nonces on both sides keep a
 * recorded handshake from being replayed at all. Crypto is OpenSSL's
 * (HMAC-SHA-256, RAND_bytes, CRYPTO_memcmp); nothing is written by hand.
 *
 *   hello  (64)  "RKVP" | version u32 | cluster u64 | from u64 | to u64
 *                | nonce_c[32]
 *   answer (88)  "RKVP" | code u32 | cluster u64 | id u64 | nonce_s[32]
 *                | mac_s[32] = HMAC(key, "raftkv peer server" | hello |
 *                  answer[0..56))
 *   proof  (36)  "RKVP" | mac_c[32] = HMAC(key, "raftkv peer client" |
 *                  hello | answer)
 *   result (8)   "RKVP" | code u32
 *
 * Integers are big-endian. A code other than RPC_PEER_OK ends the
 * connection after it is sent. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "peerauth.h"

#define LABEL_SERVER "raftkv peer server"
#define LABEL_CLIENT "raftkv peer client"

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8) {
        p[i] = (uint8_t)v;
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) {
        p[i] = (uint8_t)v;
    }
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

const char *rpc_peer_code_str(uint32_t code)
{
    switch (code) {
        case RPC_PEER_OK:
            return "accepted";
        case RPC_PEER_BAD_VERSION:
            return "unsupported handshake version";
        case RPC_PEER_NOT_MEMBER:
            return "not a member of this cluster";
        case RPC_PEER_WRONG_TARGET:
            return "that is not this node's id";
        case RPC_PEER_OTHER_CLUSTER:
            return "it belongs to another cluster";
        case RPC_PEER_BAD_PROOF:
            return "it does not hold this cluster's secret";
        case RPC_PEER_TOO_MANY:
            return "too many connections from that node";
        default:
            return "refused";
    }
}

int rpc_peer_key_from_file(const char *path,
                           uint8_t key[RPC_PEER_KEY_SIZE],
                           char *err,
                           size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "open peer secret %s: %m", path);
        return RPC_E_IO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
        rpc_logf(RPC_LOG_WARN,
                 "peer secret %s can be read by other users (mode %03o); "
                 "chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
    }
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    bool more = !feof(f) && fgetc(f) != EOF;
    fclose(f);
    /* Trailing newlines are not part of the secret (echo adds one). */
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        n--;
    }
    if (more || n < RPC_PEER_SECRET_MIN) {
        snprintf(err, err_len,
                 "peer secret %s must hold %d to %zu bytes, not %s%zu (make "
                 "one with: openssl rand -hex 32 > %s)",
                 path, RPC_PEER_SECRET_MIN, sizeof buf, more ? "over " : "", n,
                 path);
        OPENSSL_cleanse(buf, sizeof buf);
        return RPC_E_INVALID;
    }
    unsigned len = 0;
    int ok = EVP_Digest(buf, n, key, &len, EVP_sha256(), NULL);
    OPENSSL_cleanse(buf, sizeof buf);
    if (!ok || len != RPC_PEER_KEY_SIZE) {
        snprintf(err, err_len, "hash peer secret %s: OpenSSL failed", path);
        return RPC_E_INTERNAL;
    }
    return 0;
}

/* HMAC(key, label | a | b) into mac. */
static bool mac3(const uint8_t *key,
                 const char *label,
                 const uint8_t *a,
                 size_t a_len,
                 const uint8_t *b,
                 size_t b_len,
                 uint8_t mac[RPC_PEER_MAC_SIZE])
{
    uint8_t
        buf[sizeof LABEL_SERVER + RPC_PEER_HELLO_SIZE + RPC_PEER_ANSWER_SIZE];
    size_t l = strlen(label);
    if (l + a_len + b_len > sizeof buf) {
        return false;
    }
    memcpy(buf, label, l);
    memcpy(buf + l, a, a_len);
    memcpy(buf + l + a_len, b, b_len);
    unsigned len = 0;
    return HMAC(EVP_sha256(), key, RPC_PEER_KEY_SIZE, buf, l + a_len + b_len,
                mac, &len) != NULL &&
           len == RPC_PEER_MAC_SIZE;
}

int rpc_peer_hello(struct rpc_peer_hs *hs,
                   const struct rpc_peer_auth *auth,
                   uint64_t to,
                   uint8_t out[RPC_PEER_HELLO_SIZE])
{
    memset(hs, 0, sizeof *hs);
    memcpy(out, RPC_PEER_MAGIC, 4);
    put_u32(out + 4, RPC_PEER_VERSION);
    put_u64(out + 8, auth->cluster_id);
    put_u64(out + 16, auth->self_id);
    put_u64(out + 24, to);
    if (RAND_bytes(out + 32, 32) != 1) {
        return RPC_E_INTERNAL;
    }
    memcpy(hs->hello, out, RPC_PEER_HELLO_SIZE);
    hs->to = to;
    return 0;
}

uint32_t rpc_peer_answer(struct rpc_peer_hs *hs,
                         const struct rpc_peer_auth *auth,
                         const uint8_t hello[RPC_PEER_HELLO_SIZE],
                         uint8_t out[RPC_PEER_ANSWER_SIZE])
{
    memset(hs, 0, sizeof *hs);
    memcpy(hs->hello, hello, RPC_PEER_HELLO_SIZE);
    hs->peer_cluster = get_u64(hello + 8);
    hs->peer_id = get_u64(hello + 16);
    hs->to = get_u64(hello + 24);
    uint32_t code = RPC_PEER_OK;
    if (memcmp(hello, RPC_PEER_MAGIC, 4) != 0 ||
        get_u32(hello + 4) != RPC_PEER_VERSION) {
        code = RPC_PEER_BAD_VERSION;
    } else if (hs->to != auth->self_id) {
        code = RPC_PEER_WRONG_TARGET;
    } else if (hs->peer_id == 0 || hs->peer_id == auth->self_id) {
        code = RPC_PEER_NOT_MEMBER;
    } else if (auth->allow && !auth->allow(hs->peer_id, auth->allow_arg)) {
        /* Refused in the result, after the proofs: a refusal in the
         * answer comes before this node proved anything, and a node
         * refused for good (removed from the cluster) must be able to
         * tell a member's refusal from an impostor's. */
        hs->refuse = true;
    }
    memset(out, 0, RPC_PEER_ANSWER_SIZE);
    memcpy(out, RPC_PEER_MAGIC, 4);
    put_u32(out + 4, code);
    put_u64(out + 8, auth->cluster_id);
    put_u64(out + 16, auth->self_id);
    if (code == RPC_PEER_OK &&
        (RAND_bytes(out + 24, 32) != 1 ||
         !mac3(auth->key, LABEL_SERVER, hello, RPC_PEER_HELLO_SIZE, out, 56,
               out + 56))) {
        code = RPC_PEER_BAD_VERSION; /* no randomness: refuse */
        put_u32(out + 4, code);
    }
    memcpy(hs->answer, out, RPC_PEER_ANSWER_SIZE);
    return code;
}

uint32_t rpc_peer_check_answer(struct rpc_peer_hs *hs,
                               const struct rpc_peer_auth *auth,
                               const uint8_t answer[RPC_PEER_ANSWER_SIZE],
                               uint8_t out[RPC_PEER_PROOF_SIZE],
                               char *why,
                               size_t why_len)
{
    memcpy(hs->answer, answer, RPC_PEER_ANSWER_SIZE);
    hs->peer_cluster = get_u64(answer + 8);
    hs->peer_id = get_u64(answer + 16);
    uint32_t code = get_u32(answer + 4);
    uint8_t mac[RPC_PEER_MAC_SIZE];
    if (memcmp(answer, RPC_PEER_MAGIC, 4) != 0) {
        snprintf(why, why_len, "it does not speak the peer handshake");
        return RPC_PEER_BAD_VERSION;
    }
    if (code != RPC_PEER_OK) {
        snprintf(why, why_len, "it refused us: %s", rpc_peer_code_str(code));
        return code;
    }
    /* The proof goes out even when the answer does not satisfy us, so
     * that the server too logs why the connection failed (another
     * secret, another cluster). */
    memcpy(out, RPC_PEER_MAGIC, 4);
    if (!mac3(auth->key, LABEL_CLIENT, hs->hello, RPC_PEER_HELLO_SIZE, answer,
              RPC_PEER_ANSWER_SIZE, out + 4) ||
        !mac3(auth->key, LABEL_SERVER, hs->hello, RPC_PEER_HELLO_SIZE, answer,
              56, mac)) {
        snprintf(why, why_len, "HMAC failed");
        return RPC_PEER_BAD_VERSION;
    }
    if (CRYPTO_memcmp(mac, answer + 56, RPC_PEER_MAC_SIZE) != 0) {
        snprintf(why, why_len,
                 "it does not prove it holds this cluster's secret (is "
                 "--peer-secret-file the same on every node?)");
        return RPC_PEER_BAD_PROOF;
    }
    if (hs->peer_id != hs->to) {
        snprintf(why, why_len, "it is node %llu, not node %llu",
                 (unsigned long long)hs->peer_id, (unsigned long long)hs->to);
        return RPC_PEER_WRONG_TARGET;
    }
    if (hs->peer_cluster && auth->cluster_id &&
        hs->peer_cluster != auth->cluster_id) {
        snprintf(why, why_len,
                 "it belongs to cluster %016llx, this node to cluster %016llx",
                 (unsigned long long)hs->peer_cluster,
                 (unsigned long long)auth->cluster_id);
        return RPC_PEER_OTHER_CLUSTER;
    }
    return RPC_PEER_OK;
}

uint32_t rpc_peer_check_proof(struct rpc_peer_hs *hs,
                              const struct rpc_peer_auth *auth,
                              const uint8_t proof[RPC_PEER_PROOF_SIZE],
                              uint8_t out[RPC_PEER_RESULT_SIZE])
{
    uint8_t mac[RPC_PEER_MAC_SIZE];
    uint32_t code = RPC_PEER_OK;
    if (memcmp(proof, RPC_PEER_MAGIC, 4) != 0 ||
        !mac3(auth->key, LABEL_CLIENT, hs->hello, RPC_PEER_HELLO_SIZE,
              hs->answer, RPC_PEER_ANSWER_SIZE, mac) ||
        CRYPTO_memcmp(mac, proof + 4, RPC_PEER_MAC_SIZE) != 0) {
        code = RPC_PEER_BAD_PROOF;
    } else if (hs->peer_cluster && auth->cluster_id &&
               hs->peer_cluster != auth->cluster_id) {
        code = RPC_PEER_OTHER_CLUSTER;
    } else if (hs->refuse) {
        code = RPC_PEER_NOT_MEMBER;
    }
    memcpy(out, RPC_PEER_MAGIC, 4);
    put_u32(out + 4, code);
    return code;
}

uint32_t rpc_peer_check_result(const uint8_t result[RPC_PEER_RESULT_SIZE])
{
    if (memcmp(result, RPC_PEER_MAGIC, 4) != 0) {
        return RPC_PEER_BAD_VERSION;
    }
    return get_u32(result + 4);
}
