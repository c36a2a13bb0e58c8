/* peerauth.h: the peer handshake's messages (private; see peerauth.c). */
#ifndef RPC_PEERAUTH_H
#define RPC_PEERAUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

#define RPC_PEER_MAGIC       "RKVP"
#define RPC_PEER_VERSION     1u
#define RPC_PEER_HELLO_SIZE  64
#define RPC_PEER_ANSWER_SIZE 88
#define RPC_PEER_PROOF_SIZE  36
#define RPC_PEER_RESULT_SIZE 8
#define RPC_PEER_MAC_SIZE    32

/* Answer and result codes. */
enum rpc_peer_code {
    RPC_PEER_OK = 0,
    RPC_PEER_BAD_VERSION = 1,   /* not our handshake, or another version */
    RPC_PEER_NOT_MEMBER = 2,    /* the caller's id is not admitted */
    RPC_PEER_WRONG_TARGET = 3,  /* the caller wants another node id */
    RPC_PEER_OTHER_CLUSTER = 4, /* the cluster ids differ */
    RPC_PEER_BAD_PROOF = 5,     /* the HMAC does not check: another key */
    RPC_PEER_TOO_MANY = 6,      /* that id holds too many connections */
};

/* One handshake in progress, either side. */
struct rpc_peer_hs
{
    uint8_t hello[RPC_PEER_HELLO_SIZE];   /* as sent or received */
    uint8_t answer[RPC_PEER_ANSWER_SIZE]; /* as sent or received */
    uint64_t peer_id;                     /* the other end's claimed id */
    uint64_t peer_cluster;                /* its cluster id (0: unknown) */
    uint64_t to;                          /* the id the hello asked for */
    bool refuse; /* accepting side: the caller's id is not admitted; it is
                    told so in the result, once both ends proved the key,
                    so that it can believe it */
};

/* Name a code for log lines. */
const char *rpc_peer_code_str(uint32_t code);

/* Connecting side: start a handshake with node `to`; fills out.
 * Returns 0 or RPC_E_INTERNAL (no randomness). */
int rpc_peer_hello(struct rpc_peer_hs *hs,
                   const struct rpc_peer_auth *auth,
                   uint64_t to,
                   uint8_t out[RPC_PEER_HELLO_SIZE]);

/* Accepting side: answer a hello; returns the code sent in out. */
uint32_t rpc_peer_answer(struct rpc_peer_hs *hs,
                         const struct rpc_peer_auth *auth,
                         const uint8_t hello[RPC_PEER_HELLO_SIZE],
                         uint8_t out[RPC_PEER_ANSWER_SIZE]);

/* Connecting side: check the answer. Fills the proof to send when the
 * server accepted the hello (also when its answer does not satisfy us:
 * sent anyway, it lets the server log the failure too); on a code other
 * than RPC_PEER_OK why says what is wrong. */
uint32_t rpc_peer_check_answer(struct rpc_peer_hs *hs,
                               const struct rpc_peer_auth *auth,
                               const uint8_t answer[RPC_PEER_ANSWER_SIZE],
                               uint8_t out[RPC_PEER_PROOF_SIZE],
                               char *why,
                               size_t why_len);

/* Accepting side: check the proof; returns the code sent in out. */
uint32_t rpc_peer_check_proof(struct rpc_peer_hs *hs,
                              const struct rpc_peer_auth *auth,
                              const uint8_t proof[RPC_PEER_PROOF_SIZE],
                              uint8_t out[RPC_PEER_RESULT_SIZE]);

/* Connecting side: the code of a result message. */
uint32_t rpc_peer_check_result(const uint8_t result[RPC_PEER_RESULT_SIZE]);

#endif /* RPC_PEERAUTH_H */
