/* tls.c: OpenSSL contexts for servers and channels, and their reload.
 *
 * A struct rpc_tls holds one SSL_CTX made from PEM files. Reloading makes
 * a new context from the same files and swaps it in only when that
 * worked: connections already open keep the context they started with
 * (OpenSSL counts its references), new ones get the new one. Crypto and
 * certificate checks are OpenSSL's; nothing here is written by hand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "internal.h"

struct rpc_tls
{
    SSL_CTX *ctx;                  /* current context */
    bool server;                   /* made for accepting */
    bool verify_peer;              /* check the other end's certificate */
    char *cert, *key, *ca, *names; /* copies of the options */
};

/* The reason of the last OpenSSL failure, after what. */
static void ssl_fail(char *err, size_t len, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e) {
        ERR_error_string_n(e, buf, sizeof buf);
    }
    ERR_clear_error();
    snprintf(err, len, "%s%s%s: %s", what, file ? " " : "", file ? file : "",
             buf);
}

static SSL_CTX *make_ctx(const struct rpc_tls *t, char *err, size_t len)
{
    SSL_CTX *ctx =
        SSL_CTX_new(t->server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        ssl_fail(err, len, "make a TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* (no SSL_MODE_RELEASE_BUFFERS: it frees and reallocates 16 KiB
     * buffers around every record, which costs more than it saves here) */
    if (t->cert && SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
        ssl_fail(err, len, "load certificate", t->cert);
        goto err_free_ctx;
    }
    if (t->key &&
        SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1) {
        ssl_fail(err, len, "load private key", t->key);
        goto err_free_ctx;
    }
    if (t->cert && t->key && SSL_CTX_check_private_key(ctx) != 1) {
        ssl_fail(err, len, "the key does not match the certificate", t->key);
        goto err_free_ctx;
    }
    if (t->ca && SSL_CTX_load_verify_locations(ctx, t->ca, NULL) != 1) {
        ssl_fail(err, len, "load CA certificates", t->ca);
        goto err_free_ctx;
    }
    if (t->verify_peer) {
        int mode = SSL_VERIFY_PEER;
        if (t->server) {
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
            if (t->ca) {
                STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->ca);
                if (names) {
                    SSL_CTX_set_client_CA_list(ctx, names);
                }
            }
        }
        SSL_CTX_set_verify(ctx, mode, NULL);
    }
    return ctx;

err_free_ctx:
    SSL_CTX_free(ctx);
    return NULL;
}

static char *dup_or_null(const char *s, bool *ok)
{
    if (!s || !*s) {
        return NULL;
    }
    char *d = strdup(s);
    if (!d) {
        *ok = false;
    }
    return d;
}

int rpc_tls_new(const struct rpc_tls_options *o,
                struct rpc_tls **out,
                char *err,
                size_t err_len)
{
    *out = NULL;
    if (o->server && (!o->cert_file || !o->key_file)) {
        snprintf(err, err_len, "a TLS server needs a certificate and a key");
        return RPC_E_INVALID;
    }
    if (!!o->cert_file != !!o->key_file) {
        snprintf(err, err_len,
                 "a TLS certificate needs its key and a key its certificate");
        return RPC_E_INVALID;
    }
    if (o->verify_peer && !o->ca_file) {
        snprintf(err, err_len,
                 "checking the other end's certificate needs a CA file");
        return RPC_E_INVALID;
    }
    struct rpc_tls *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, err_len, "out of memory");
        return RPC_E_NOMEM;
    }
    bool ok = true;
    t->server = o->server;
    t->verify_peer = o->verify_peer;
    t->cert = dup_or_null(o->cert_file, &ok);
    t->key = dup_or_null(o->key_file, &ok);
    t->ca = dup_or_null(o->ca_file, &ok);
    t->names = dup_or_null(o->allowed_names, &ok);
    if (!ok) {
        snprintf(err, err_len, "out of memory");
        rpc_tls_free(t);
        return RPC_E_NOMEM;
    }
    t->ctx = make_ctx(t, err, err_len);
    if (!t->ctx) {
        rpc_tls_free(t);
        return RPC_E_INVALID;
    }
    *out = t;
    return 0;
}

int rpc_tls_reload(struct rpc_tls *t, char *err, size_t err_len)
{
    SSL_CTX *ctx = make_ctx(t, err, err_len);
    if (!ctx) {
        return RPC_E_INVALID; /* the old context stays */
    }
    SSL_CTX_free(t->ctx);
    t->ctx = ctx;
    return 0;
}

void rpc_tls_free(struct rpc_tls *t)
{
    if (!t) {
        return;
    }
    SSL_CTX_free(t->ctx);
    free(t->cert);
    free(t->key);
    free(t->ca);
    free(t->names);
    free(t);
}

SSL *rpc_tls_ssl(struct rpc_tls *t, const char *host)
{
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl || t->server || !host || !t->verify_peer) {
        return ssl;
    }
    /* A client checks that the certificate names the address it dialled:
     * an IP address as an IP SAN, a name as a DNS SAN (or CN). */
    X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(p, host) != 1) {
        ERR_clear_error();
        SSL_set_tlsext_host_name(ssl, host);
        if (SSL_set1_host(ssl, host) != 1) {
            SSL_free(ssl);
            return NULL;
        }
    }
    return ssl;
}

bool rpc_tls_name_allowed(const struct rpc_tls *t,
                          SSL *ssl,
                          char *why,
                          size_t why_len)
{
    if (!t->names) {
        return true;
    }
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (!cert) {
        snprintf(why, why_len, "it showed no certificate");
        return false;
    }
    bool ok = false;
    char names[1024];
    snprintf(names, sizeof names, "%s", t->names);
    char *save = NULL;
    for (char *n = strtok_r(names, ",", &save); n && !ok;
         n = strtok_r(NULL, ",", &save)) {
        ok = X509_check_host(cert, n, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                             NULL) == 1;
    }
    if (!ok) {
        char cn[256] = "";
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
                                  cn, sizeof cn);
        snprintf(why, why_len,
                 "its certificate (CN '%s') names none of the allowed %s", cn,
                 t->names);
    }
    X509_free(cert);
    return ok;
}

void rpc_tls_peer_cn(SSL *ssl, char *out, size_t len)
{
    out[0] = 0;
    X509 *cert = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
    if (!cert) {
        return;
    }
    if (SSL_get_verify_result(ssl) == X509_V_OK &&
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
                                  out, (int)len) < 0) {
        out[0] = 0;
    }
    X509_free(cert);
}

void rpc_tls_error(struct bufferevent *bev, char *out, size_t len)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long first = bufferevent_get_openssl_error(bev);
    while (bufferevent_get_openssl_error(bev)) {
        /* the first is the cause; drain the rest */
    }
    if (!first) {
        first = ERR_get_error();
    }
    ERR_clear_error();
    if (v != X509_V_OK) {
        snprintf(out, len, "TLS: certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        return;
    }
    if (!first) {
        snprintf(out, len,
                 "TLS handshake failed (the other end closed it: does it "
                 "speak TLS, and does it trust our certificate?)");
        return;
    }
    char buf[256];
    ERR_error_string_n(first, buf, sizeof buf);
    const char *words = strrchr(buf, ':');
    snprintf(out, len, "TLS: %s", words ? words + 1 : buf);
}
