/*
 * tls_context.c — TLS contexts (crpc_tls_context, crpc.h): OpenSSL's SSL_CTX set up the one
 * way the core speaks TLS — TLS 1.3 (1.2 when allowed) with AEAD ciphers only, no
 * renegotiation, compression or session tickets, ALPN "swiftrpc/1" offered by clients and
 * required by servers — with the certificates, keys and trust roots loaded from files or
 * memory. Any thread; a context is reference counted and shared by many connections.
 */
#define _GNU_SOURCE
#include "tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_HANDSHAKE_TIMEOUT_MS 10000u
#define DEFAULT_MAX_HANDSHAKE_BYTES (64u * 1024u)
#define TLS12_AEAD_CIPHERS                                                                 \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                           \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                           \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* ----------------------------------------------------------------- errors */

/* The reason OpenSSL's error queue holds (then emptied: the queue is per thread and every
 * connection of the loop shares it), or `fallback`. */
void crpc_tls_take_reason(char *buf, size_t len, const char *fallback, int *reason_code)
{
    unsigned long e = ERR_peek_last_error();
    *reason_code = e ? ERR_GET_REASON(e) : 0;
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : fallback);
    ERR_clear_error();
}

/* Says once, on the first TLS context, which data path runs and why. */
static void log_data_path(void)
{
    static atomic_bool said;
    if (atomic_exchange(&said, true))
        return;
    char ulps[128] = "";
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");
    if (f) {
        if (!fgets(ulps, sizeof(ulps), f))
            ulps[0] = 0;
        fclose(f);
        ulps[strcspn(ulps, "\n")] = 0;
    }
    fprintf(stderr, "crpc: TLS data path userspace (OpenSSL %s; kernel TLS not used: the kernel offers ULPs [%s])\n",
            OpenSSL_version(OPENSSL_VERSION_STRING), ulps);
}

/* ---------------------------------------------------------------- contexts */

static int load_failure(const char *what, int err)
{
    char why[160];
    int code;
    crpc_tls_take_reason(why, sizeof(why), "unknown reason", &code);
    crpc_set_last_error("%s: %s", what, why);
    return err;
}

/* The chain (leaf first) and key, from memory or files. */
static int load_identity(SSL_CTX *ctx, const crpc_tls_options *o)
{
    if (o->cert_pem) {
        BIO *b = BIO_new_mem_buf(o->cert_pem, (int)(o->cert_pem_len ? o->cert_pem_len : strlen(o->cert_pem)));
        X509 *leaf = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        if (!leaf || SSL_CTX_use_certificate(ctx, leaf) != 1) {
            X509_free(leaf);
            BIO_free(b);
            return load_failure("certificate (PEM in memory)", -EBADMSG);
        }
        X509_free(leaf);
        X509 *extra;
        while ((extra = PEM_read_bio_X509(b, NULL, NULL, NULL)))
            if (SSL_CTX_add0_chain_cert(ctx, extra) != 1)
                X509_free(extra);
        ERR_clear_error(); /* the end of the PEM text reads as an error */
        BIO_free(b);
    } else if (o->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1)
            return load_failure(o->cert_file, access(o->cert_file, R_OK) ? -ENOENT : -EBADMSG);
    }
    if (o->key_pem) {
        BIO *b = BIO_new_mem_buf(o->key_pem, (int)(o->key_pem_len ? o->key_pem_len : strlen(o->key_pem)));
        EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (!key || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
            EVP_PKEY_free(key);
            return load_failure("private key (PEM in memory)", -EBADMSG);
        }
        EVP_PKEY_free(key);
    } else if (o->key_file) {
        if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1)
            return load_failure(o->key_file, access(o->key_file, R_OK) ? -ENOENT : -EBADMSG);
    }
    bool has_cert = o->cert_pem || o->cert_file, has_key = o->key_pem || o->key_file;
    if (has_cert != has_key) {
        crpc_set_last_error("a certificate needs its private key, and a key its certificate");
        return -EINVAL;
    }
    if (has_cert && SSL_CTX_check_private_key(ctx) != 1)
        return load_failure("the private key does not match the certificate", -EINVAL);
    return 0;
}

static int load_roots(SSL_CTX *ctx, const crpc_tls_options *o, bool *loaded)
{
    *loaded = false;
    if (o->ca_pem) {
        BIO *b = BIO_new_mem_buf(o->ca_pem, (int)(o->ca_pem_len ? o->ca_pem_len : strlen(o->ca_pem)));
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        X509 *x;
        int n = 0;
        while (b && (x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
            n += X509_STORE_add_cert(store, x) == 1;
            X509_free(x);
        }
        BIO_free(b);
        ERR_clear_error();
        if (n == 0) {
            crpc_set_last_error("trust roots (PEM in memory): no certificate parses");
            return -EBADMSG;
        }
        *loaded = true;
    } else if (o->ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1)
            return load_failure(o->ca_file, access(o->ca_file, R_OK) ? -ENOENT : -EBADMSG);
        *loaded = true;
    }
    return 0;
}

/* The server requires ALPN "swiftrpc/1": one offered among others is picked; none of ours
 * offered fails the handshake with no_application_protocol. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char ours[] = "\x0a" CRPC_TLS_ALPN;
    unsigned char *picked;
    if (SSL_select_next_proto(&picked, outlen, ours, sizeof(ours) - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = picked;
    return SSL_TLSEXT_ERR_OK;
}

/* A client that offers no ALPN at all never reaches select_alpn: refused here unless the
 * server lets such clients in. */
static int check_client_hello(SSL *ssl, int *alert, void *arg)
{
    /* The flag itself, not the context: a connection keeps its SSL_CTX alive, not our
     * context, which a reload may free before this connection's ClientHello arrives. */
    bool alpn_optional = (uintptr_t)arg != 0;
    const unsigned char *ext;
    size_t len;
    if (alpn_optional ||
        SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &len))
        return SSL_CLIENT_HELLO_SUCCESS;
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
}

static int make_context(const crpc_tls_options *o, bool server, crpc_tls_context **out)
{
    crpc_set_last_error("%s", "");
    if (!o || !out)
        return -EINVAL;
    crpc_tls_context *ctx = calloc(1, sizeof(*ctx));
    SSL_CTX *s = ctx ? SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()) : NULL;
    if (!s) {
        free(ctx);
        crpc_set_last_error("out of memory");
        return -ENOMEM;
    }
    ctx->ssl_ctx = s;
    ctx->server = server;
    atomic_init(&ctx->refs, 1);
    ctx->alpn_optional = o->alpn_optional != 0;
    ctx->handshake_timeout_ms = o->handshake_timeout_ms ? o->handshake_timeout_ms : DEFAULT_HANDSHAKE_TIMEOUT_MS;
    ctx->max_handshake_bytes = o->max_handshake_bytes ? o->max_handshake_bytes : DEFAULT_MAX_HANDSHAKE_BYTES;
    SSL_CTX_set_min_proto_version(s, o->allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_cipher_list(s, TLS12_AEAD_CIPHERS);
    /* TLS 1.3's suites are all AEAD; AES-128-GCM first (OpenSSL's default puts AES-256
     * first: ~12% slower per byte here, and no stronger in any way that matters for 128-bit
     * security), ChaCha20 for peers without AES instructions. */
    SSL_CTX_set_ciphersuites(s, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384");
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    int err = load_identity(s, o);
    bool roots = false;
    if (!err)
        err = load_roots(s, o, &roots);
    if (!err && server) {
        SSL_CTX_set_num_tickets(s, 0);
        SSL_CTX_set_alpn_select_cb(s, select_alpn, NULL);
        SSL_CTX_set_client_hello_cb(s, check_client_hello, (void *)(uintptr_t)ctx->alpn_optional);
        if (!(o->cert_pem || o->cert_file)) {
            crpc_set_last_error("a TLS server needs a certificate and its private key");
            err = -EINVAL;
        } else if (o->client_auth != CRPC_TLS_CLIENT_AUTH_NONE && !roots) {
            crpc_set_last_error("client authentication needs the trust roots to check client certificates against");
            err = -EINVAL;
        } else if (o->client_auth == CRPC_TLS_CLIENT_AUTH_REQUIRED) {
            SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        } else if (o->client_auth == CRPC_TLS_CLIENT_AUTH_OPTIONAL) {
            SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
        }
    } else if (!err) {
        if (!roots && SSL_CTX_set_default_verify_paths(s) != 1)
            err = load_failure("the system's trust roots", -ENOENT);
        SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
        static const unsigned char alpn[] = "\x0a" CRPC_TLS_ALPN;
        if (!err && SSL_CTX_set_alpn_protos(s, alpn, sizeof(alpn) - 1) != 0)
            err = -ENOMEM;
    }
    if (err) {
        SSL_CTX_free(s);
        free(ctx);
        return err;
    }
    log_data_path();
    *out = ctx;
    return 0;
}

int crpc_tls_server_context(const crpc_tls_options *o, crpc_tls_context **out)
{
    return make_context(o, true, out);
}

int crpc_tls_client_context(const crpc_tls_options *o, crpc_tls_context **out)
{
    return make_context(o, false, out);
}

void crpc_tls_context_release(crpc_tls_context *ctx)
{
    if (ctx && atomic_fetch_sub(&ctx->refs, 1) == 1) {
        SSL_CTX_free(ctx->ssl_ctx);
        free(ctx);
    }
}
