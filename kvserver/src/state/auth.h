/* auth.h: users, roles and key-range permissions (etcd's auth model): the
 * replicated auth state, its commands, permission checks and tokens. */
#ifndef KVSERVER_AUTH_H
#define KVSERVER_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <proto/auth.pb-c.h>

#include "sm.h"
#include "store.h"

/* The built-in role that may do everything. */
#define KV_AUTH_ROOT "root"
/* Bytes of the token signing key (HMAC-SHA-256). */
#define KV_AUTH_KEY_LEN 32
/* Longest user or role name. */
#define KV_AUTH_MAX_NAME 128
/* Room for a token: "v1." hex(name) "." expiry "." version "." hex(mac). */
#define KV_AUTH_TOKEN_MAX (3 + 2 * KV_AUTH_MAX_NAME + 2 * 21 + 2 + 64 + 1)

/* What a call needs on a key. */
enum kv_auth_need {
    KV_AUTH_ANY = 0,       /* only a valid user (OpenSession) */
    KV_AUTH_READ = 1,      /* Get */
    KV_AUTH_WRITE = 2,     /* Put, Append, Delete */
    KV_AUTH_READWRITE = 3, /* CompareAndSwap */
};

/* Results of token checks (kv_auth_token_verify). */
enum kv_auth_token_error {
    KV_AUTH_TOKEN_OK = 0,
    KV_AUTH_TOKEN_MALFORMED, /* not a token of this format */
    KV_AUTH_TOKEN_BAD_MAC,   /* altered, or signed with another key */
    KV_AUTH_TOKEN_EXPIRED,   /* its expiry has passed */
};

/**
 * Apply an auth command (Command.auth) at a log index. A refused command
 * is an outcome (out->err a Raftkv__AuthError, out->current a message for
 * people, NUL-terminated), the same on every node.
 * @param out filled; free with kv_outcome_clear
 * @return 0, or a store error (the caller aborts the transaction)
 */
int kv_auth_apply(struct kv_store *st,
                  MDB_txn *txn,
                  uint64_t index,
                  const Raftkv__AuthCommand *cmd,
                  struct kv_outcome *out);

/**
 * Whether auth is enabled in the applied state.
 * @param enabled set
 * @return 0 or a store error
 */
int kv_auth_enabled(struct kv_store *st, MDB_txn *txn, bool *enabled);

/**
 * The log index of the last auth change applied (0: none).
 * @return 0 or a store error
 */
int kv_auth_revision(struct kv_store *st, MDB_txn *txn, uint64_t *rev);

/**
 * Read a user.
 * @param out set to the record (free with
 *   raftkv__auth_user_record__free_unpacked), or NULL when there is none
 * @return 0 or a store error
 */
int kv_auth_get_user(struct kv_store *st,
                     MDB_txn *txn,
                     const char *name,
                     Raftkv__AuthUserRecord **out);

/**
 * Read a role ("root" is built in and has no stored record: out NULL,
 * *builtin true).
 * @param out set to the record (free with
 *   raftkv__auth_role_record__free_unpacked), or NULL when there is none
 * @return 0 or a store error
 */
int kv_auth_get_role(struct kv_store *st,
                     MDB_txn *txn,
                     const char *name,
                     Raftkv__AuthRoleRecord **out);

/**
 * List the user ("u") or role ("r") names, sorted.
 * @param kind 'u' or 'r'
 * @param names set to a malloc'd array of malloc'd strings (free each and
 *   the array); n to their number
 * @return 0, KV_STORE_ENOMEM or a store error
 */
int kv_auth_list(struct kv_store *st,
                 MDB_txn *txn,
                 char kind,
                 char ***names,
                 size_t *n);

/**
 * Check a password against the stored user (libsodium
 * crypto_pwhash_str_verify) and, when it matches, sign a token.
 * @param now_s wall-clock seconds; the token expires at now_s + ttl_s
 * @param token filled (KV_AUTH_TOKEN_MAX bytes)
 * @param msg filled with the reason of a refusal
 * @return a Raftkv__AuthError: OK, NOT_ENABLED, UNAUTHENTICATED (wrong user
 *   name or password, the same answer for both) or INTERNAL
 */
int kv_auth_authenticate(struct kv_store *st,
                         MDB_txn *txn,
                         const char *user,
                         const char *password,
                         uint64_t now_s,
                         uint64_t ttl_s,
                         char *token,
                         char *msg,
                         size_t msg_size);

/**
 * What checking a password needs, read from the applied state (the check
 * itself may then run on another thread).
 * @param hash filled with the user's password hash, "" when there is no
 *   such user (crypto_pwhash_STRBYTES bytes)
 * @param password_version set to the user's password version
 * @param key filled with the token key (KV_AUTH_KEY_LEN bytes)
 * @param msg filled with the reason of a refusal
 * @return a Raftkv__AuthError: OK, NOT_ENABLED or INTERNAL
 */
int kv_auth_login_info(struct kv_store *st,
                       MDB_txn *txn,
                       const char *user,
                       char *hash,
                       uint64_t *password_version,
                       uint8_t *key,
                       char *msg,
                       size_t msg_size);

/**
 * Check a call against the applied auth state: when auth is disabled
 * everything is allowed; otherwise the token must be valid (signed with
 * the current key, not expired, its user still there with the same
 * password version) and the user's roles must allow @need on @key (root
 * allows everything; a key of NULL checks only the token).
 * @param user if not NULL, set to the token's user (or "" when auth is
 *   disabled); KV_AUTH_MAX_NAME + 1 bytes
 * @param is_root if not NULL, set when the user has the role root (or auth
 *   is disabled)
 * @param msg filled with what is missing, for people
 * @return a Raftkv__AuthError: OK, UNAUTHENTICATED, PERMISSION_DENIED or
 *   INTERNAL
 */
int kv_auth_check(struct kv_store *st,
                  MDB_txn *txn,
                  const char *token,
                  uint64_t now_s,
                  const void *key,
                  size_t key_len,
                  enum kv_auth_need need,
                  char *user,
                  bool *is_root,
                  char *msg,
                  size_t msg_size);

/**
 * kv_auth_check, where a call without a token may be identified by the
 * verified client certificate of its connection (TLS with client
 * certificates): its common name is the user, which must exist. A token,
 * when there is one, wins.
 * @param cert_user the certificate's common name, or NULL or "" for none
 * @return as kv_auth_check
 */
int kv_auth_check_as(struct kv_store *st,
                     MDB_txn *txn,
                     const char *token,
                     const char *cert_user,
                     uint64_t now_s,
                     const void *key,
                     size_t key_len,
                     enum kv_auth_need need,
                     char *user,
                     bool *is_root,
                     char *msg,
                     size_t msg_size);

/**
 * kv_auth_check_as for every key of a range: [key, range_end), every key
 * from key on (range_end "\0"), or the key alone (end_len 0). The user's
 * permissions together must cover the whole range (etcd's rule).
 * @return as kv_auth_check
 */
int kv_auth_check_range_as(struct kv_store *st,
                           MDB_txn *txn,
                           const char *token,
                           const char *cert_user,
                           uint64_t now_s,
                           const void *key,
                           size_t key_len,
                           const void *range_end,
                           size_t end_len,
                           enum kv_auth_need need,
                           char *user,
                           bool *is_root,
                           char *msg,
                           size_t msg_size);

/**
 * Sign a token for a user.
 * @param token filled (KV_AUTH_TOKEN_MAX bytes)
 * @return 0, or -1 when the name is longer than KV_AUTH_MAX_NAME
 */
int kv_auth_token_sign(const uint8_t key[KV_AUTH_KEY_LEN],
                       const char *user,
                       uint64_t expiry_s,
                       uint64_t password_version,
                       char *token);

/**
 * Verify a token's signature and expiry (no state needed).
 * @param user filled with its user name (KV_AUTH_MAX_NAME + 1 bytes)
 * @param password_version set to the version it was signed for
 * @return an enum kv_auth_token_error
 */
int kv_auth_token_verify(const uint8_t key[KV_AUTH_KEY_LEN],
                         const char *token,
                         uint64_t now_s,
                         char *user,
                         uint64_t *password_version);

/**
 * Whether a permission covers a key: range_end empty is the key alone,
 * "\0" every key from key on, otherwise [key, range_end).
 */
bool kv_auth_perm_covers(const Raftkv__Permission *p,
                         const void *key,
                         size_t key_len);

/**
 * The end of a prefix's range (etcd's GetPrefixRangeEnd): the prefix with
 * its last byte below 0xff incremented and the rest cut; "\0" (every key
 * from the prefix on) when all its bytes are 0xff.
 * @param out at least len bytes (1 for an all-0xff prefix)
 * @return the end's length
 */
size_t kv_auth_prefix_end(const void *prefix, size_t len, uint8_t *out);

/**
 * Hash a password for the log and the store (Argon2id,
 * crypto_pwhash_str with the INTERACTIVE limits).
 * @param out filled (crypto_pwhash_STRBYTES bytes)
 * @return 0, or -1 (out of memory)
 */
int kv_auth_hash_password(const char *password, char *out);

#endif /* KVSERVER_AUTH_H */
