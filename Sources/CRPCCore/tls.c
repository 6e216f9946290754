/*
 * tls.c — the per-connection TLS byte filter (tls.h draws the seam; the contexts it makes
 * sessions from are tls_context.c's).
 *
 * Receive: the backend's bytes are read by OpenSSL through our BIO, which hands out the
 * window crpc_tls_received was given (no memory BIO: nothing is copied into one first);
 * plaintext is decrypted into a per-thread buffer of one record's size and parsed from there
 * (a frame spanning records is reassembled in c->in, as for plaintext).
 *
 * Send: replies collect in c->out[c->out_cur] as plaintext; at the flush one SSL_write
 * encrypts all of it (one record per 16 KiB) and our BIO appends the records to `cout`,
 * which then becomes the buffer the backend sends. Handshake messages, alerts and
 * close_notify land in `cout` the same way, whenever OpenSSL writes them.
 *
 * Idle memory: OpenSSL keeps a read and a write buffer (~17 KiB each) per connection once
 * used; the janitor frees them, and our buffers, on connections idle for a second
 * (crpc_tls_check_handshake), so an idle TLS connection costs what the SSL object costs.
 *
 * Kernel TLS would plug in at established(): hand the session's keys to the kernel
 * (setsockopt TCP_ULP "tls", then TLS_TX/TLS_RX) and drop the filter so the connection
 * runs as plaintext. Not built: this machine's kernel lacks the tls ULP, and an untested
 * path is not shipped. crpc_tls_data_path() names the path in use.
 */
#define _GNU_SOURCE
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "peer.h"

/* ------------------------------------------------------------------ our BIO */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
    crpc_tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (crpc_buf_append(&t->cout, data, len))
        return 0; /* out of memory: OpenSSL fails the operation */
    *written = len;
    return 1;
}

static int bio_read(BIO *b, char *out, size_t len, size_t *readbytes)
{
    crpc_tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->rd_len == 0) {
        BIO_set_retry_read(b); /* SSL_ERROR_WANT_READ: the next receive continues */
        return 0;
    }
    size_t n = len < t->rd_len ? len : t->rd_len;
    memcpy(out, t->rd, n);
    t->rd += n;
    t->rd_len -= n;
    *readbytes = n;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    crpc_tls_conn *t = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1; /* the loop's flush sends */
    case BIO_CTRL_PENDING: return t ? (long)t->rd_len : 0;
    default: return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void make_bio_method(void)
{
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "crpc connection");
    if (!bio_method)
        return;
    BIO_meth_set_write_ex(bio_method, bio_write);
    BIO_meth_set_read_ex(bio_method, bio_read);
    BIO_meth_set_ctrl(bio_method, bio_ctrl);
    BIO_meth_set_create(bio_method, bio_create);
}

/* Points ssl's reads and writes at t through our BIO. */
static bool use_our_bio(crpc_tls_conn *t)
{
    pthread_once(&bio_once, make_bio_method);
    BIO *b = bio_method ? BIO_new(bio_method) : NULL;
    if (!b)
        return false;
    BIO_set_data(b, t);
    SSL_set_bio(t->ssl, b, b);
    return true;
}

/* ------------------------------------------------------------- connections */

static crpc_tls_conn *conn_new(crpc_tls_context *ctx)
{
    crpc_tls_conn *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ssl = SSL_new(ctx->ssl_ctx); /* holds its own reference to the SSL_CTX */
    if (!t->ssl) {
        free(t);
        ERR_clear_error();
        return NULL;
    }
    t->server = ctx->server;
    t->handshake_timeout_ms = ctx->handshake_timeout_ms;
    t->max_handshake_bytes = ctx->max_handshake_bytes;
    return t;
}

crpc_tls_conn *crpc_tls_accept(crpc_tls_context *ctx)
{
    crpc_tls_conn *t = conn_new(ctx);
    if (!t || !use_our_bio(t)) {
        crpc_tls_free(t);
        ERR_clear_error(); /* out of memory: leave no error for the next connection */
        return NULL;
    }
    SSL_set_accept_state(t->ssl);
    return t;
}

void crpc_tls_free(crpc_tls_conn *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    crpc_buf_free(&t->cout);
    free(t);
}

static bool is_ip_literal(const char *name)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

/* Waits for fd to be readable or writable until deadline; false when it passed. */
static bool wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = crpc_monotonic_ns();
        if (now >= deadline)
            return false;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)((deadline - now + 999999) / 1000000));
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

/* Why a client handshake failed, as an error code and crpc_last_error(). */
static int client_failure(SSL *ssl, int ssl_err)
{
    char why[160];
    int code;
    long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
        ERR_clear_error();
        crpc_set_last_error("TLS: the server's certificate did not verify: %s",
                            X509_verify_cert_error_string(verify));
        return -EKEYREJECTED;
    }
    unsigned long last = ERR_peek_last_error();
    if ((ssl_err == SSL_ERROR_SYSCALL && last == 0) ||
        (last && ERR_GET_REASON(last) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        ERR_clear_error();
        crpc_set_last_error("TLS: the server closed the connection during the handshake (is it a TLS server?)");
        return -ECONNABORTED;
    }
    crpc_tls_take_reason(why, sizeof(why), "handshake failed", &code);
    crpc_set_last_error("TLS handshake failed: %s", why);
    return -ECONNABORTED;
}

crpc_tls_conn *crpc_tls_client_handshake(crpc_tls_context *ctx, int fd, const char *server_name,
                                         uint32_t timeout_ms, int *err)
{
    crpc_tls_conn *t = conn_new(ctx);
    if (!t) {
        *err = -ENOMEM;
        crpc_set_last_error("out of memory");
        return NULL;
    }
    SSL *ssl = t->ssl;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (is_ip_literal(server_name)) {
        X509_VERIFY_PARAM_set1_ip_asc(param, server_name); /* no SNI for an address */
    } else {
        SSL_set_tlsext_host_name(ssl, server_name);
        SSL_set1_host(ssl, server_name);
    }
    SSL_set_fd(ssl, fd);
    SSL_set_connect_state(ssl);
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    uint64_t deadline = crpc_monotonic_ns() + (uint64_t)timeout_ms * 1000000u;
    int rc = 0;
    for (;;) {
        int r = SSL_do_handshake(ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(ssl, r);
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
            wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline))
            continue;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            crpc_set_last_error("TLS: the handshake did not finish within %u ms", (unsigned)timeout_ms);
            rc = -ETIMEDOUT;
        } else {
            rc = client_failure(ssl, e);
        }
        break;
    }
    fcntl(fd, F_SETFL, flags);
    if (!rc) {
        const unsigned char *alpn;
        unsigned alpn_len;
        SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
        if (alpn_len && (alpn_len != strlen(CRPC_TLS_ALPN) || memcmp(alpn, CRPC_TLS_ALPN, alpn_len))) {
            crpc_set_last_error("TLS: the server chose ALPN \"%.*s\", not " CRPC_TLS_ALPN, (int)alpn_len, alpn);
            rc = -ECONNABORTED;
        }
    }
    /* From here on the loop feeds it: our BIO replaces the socket (SSL_set_fd's BIO does
     * not own the descriptor). Read-ahead is off, so nothing past the handshake was read. */
    if (!rc && !use_our_bio(t))
        rc = -ENOMEM;
    if (rc) {
        *err = rc;
        crpc_tls_free(t);
        return NULL;
    }
    t->established = true;
    return t;
}

/* ------------------------------------------------------- the server's refusals */

static const char *const cause_names[TLS_CAUSE_COUNT] = {
    [TLS_CAUSE_TIMEOUT] = "the handshake timed out",
    [TLS_CAUSE_TOO_MANY_BYTES] = "too many bytes before the handshake completed",
    [TLS_CAUSE_NOT_TLS] = "not TLS (a plaintext client on the TLS port?)",
    [TLS_CAUSE_NO_CERT] = "no client certificate",
    [TLS_CAUSE_BAD_CERT] = "the client certificate did not verify",
    [TLS_CAUSE_ALPN] = ("no ALPN " CRPC_TLS_ALPN),
    [TLS_CAUSE_BAD_RECORD] = "a bad TLS record",
    [TLS_CAUSE_CLOSED] = "the client closed the connection during the handshake",
    [TLS_CAUSE_CLIENT_REFUSED] = "the client refused our certificate",
    [TLS_CAUSE_OTHER] = "TLS error",
};

/* At most one line per cause per 10 s, for the whole process, with how many were not
 * logged since the last one. */
static void log_refusal(crpc_conn *c, enum crpc_tls_cause cause, const char *detail)
{
    static _Atomic uint64_t last_ns[TLS_CAUSE_COUNT];
    static atomic_uint quiet[TLS_CAUSE_COUNT];
    uint64_t now = crpc_loop_now_ns(c->loop), last = atomic_load(&last_ns[cause]);
    if (last && now - last < 10000000000ull) {
        atomic_fetch_add(&quiet[cause], 1);
        return;
    }
    if (!atomic_compare_exchange_strong(&last_ns[cause], &last, now)) {
        atomic_fetch_add(&quiet[cause], 1);
        return;
    }
    unsigned more = atomic_exchange(&quiet[cause], 0);
    fprintf(stderr, "crpc: TLS connection from %s refused: %s%s%s%s\n",
            c->peer && c->peer->peer.address ? c->peer->peer.address : "?", cause_names[cause], detail ? " (" : "",
            detail ? detail : "", detail ? ")" : "");
    if (more)
        fprintf(stderr, "crpc: (%u more TLS refusals for that cause in the last 10 s)\n", more);
}

/* Closes the connection, alert first (OpenSSL has written it into cout, when one applies). */
static void refuse(crpc_conn *c, enum crpc_tls_cause cause, const char *detail)
{
    crpc_tls_conn *t = c->tls;
    snprintf(t->reason, sizeof(t->reason), "%s%s%s", cause_names[cause], detail ? ": " : "", detail ? detail : "");
    if (!t->established)
        crpc_count(&c->loop->counters.rejected_handshakes, 1);
    else
        crpc_count(&c->loop->counters.rejected, 1);
    log_refusal(c, cause, detail);
    crpc_conn_close(c, -ECONNABORTED);
}

static enum crpc_tls_cause classify(int reason)
{
    switch (reason) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_UNSUPPORTED_PROTOCOL:
        return TLS_CAUSE_NOT_TLS;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return TLS_CAUSE_NO_CERT;
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return TLS_CAUSE_BAD_CERT;
    case SSL_R_NO_APPLICATION_PROTOCOL:
    case SSL_R_CALLBACK_FAILED:
        return TLS_CAUSE_ALPN;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        return TLS_CAUSE_CLOSED;
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        return TLS_CAUSE_CLIENT_REFUSED;
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
    case SSL_R_DATA_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
    case SSL_R_BAD_RECORD_TYPE:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_BAD_LENGTH:
    case SSL_R_LENGTH_MISMATCH:
        return TLS_CAUSE_BAD_RECORD;
    default:
        return TLS_CAUSE_OTHER;
    }
}

/* The alerts a server sends a client whose certificate it will not take (TLS 1.3 sends them
 * after the client's side of the handshake is done). */
static bool refuses_our_certificate(int reason)
{
    switch (reason) {
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
        return true;
    default:
        return false;
    }
}

/* An SSL call failed with e: a refusal (server) or the end of the connection. */
static void failed(crpc_conn *c, int e)
{
    crpc_tls_conn *t = c->tls;
    if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: an orderly end of input */
        crpc_conn_end_input(c, 0);
        return;
    }
    if (e == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0) {
        ERR_clear_error();
        if (t->server && !t->established) {
            refuse(c, TLS_CAUSE_CLOSED, NULL);
        } else {
            snprintf(t->reason, sizeof(t->reason), "TLS: the connection was cut");
            crpc_conn_close(c, -ECONNABORTED);
        }
        return;
    }
    char why[160];
    int code;
    long verify = t->server ? SSL_get_verify_result(t->ssl) : X509_V_OK;
    crpc_tls_take_reason(why, sizeof(why), "TLS error", &code);
    if (t->server) {
        enum crpc_tls_cause cause = classify(code);
        refuse(c, cause, cause == TLS_CAUSE_BAD_CERT && verify != X509_V_OK ? X509_verify_cert_error_string(verify) : why);
    } else {
        snprintf(t->reason, sizeof(t->reason), "TLS: %.150s", why);
        t->refused = refuses_our_certificate(code);
        crpc_count(&c->loop->counters.rejected, 1);
        crpc_conn_close(c, -ECONNABORTED);
    }
}

/* The server's handshake is done: who the client is, once. */
static void established(crpc_conn *c)
{
    crpc_tls_conn *t = c->tls;
    t->established = true;
    crpc_count(&c->loop->counters.tls_handshakes, 1);
    crpc_tls_describe_peer(c);
}

/* ------------------------------------------------------------- data path */

/* One record's plaintext at most per SSL_read; the framing copies what it keeps. */
static __thread uint8_t plain[16384];

void crpc_tls_received(crpc_conn *c, const uint8_t *data, size_t n)
{
    crpc_tls_conn *t = c->tls;
    t->rd = data;
    t->rd_len = n;
    ERR_clear_error(); /* SSL_get_error reads the thread's queue: it must start empty */
    if (!t->established) {
        int r = SSL_do_handshake(t->ssl);
        /* What the handshake itself took: requests sent right after the client's Finished,
         * in the same read, are not handshake bytes. */
        size_t took = n - t->rd_len;
        t->handshake_bytes += (uint32_t)(took > UINT32_MAX - t->handshake_bytes ? UINT32_MAX - t->handshake_bytes : took);
        if (r != 1 && t->handshake_bytes > t->max_handshake_bytes) {
            refuse(c, TLS_CAUSE_TOO_MANY_BYTES, NULL);
            goto out;
        }
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e != SSL_ERROR_WANT_READ)
                failed(c, e);
            goto out;
        }
        established(c);
    }
    while (c->state == CONN_OPEN && !c->input_ended) {
        size_t got;
        if (SSL_read_ex(t->ssl, plain, sizeof(plain), &got) == 1) {
            crpc_conn_plaintext(c, plain, got);
            /* Every byte handed over is in and nothing is left to decrypt: asking again
             * would only say so (an SSL_read costs ~0.5 us even then). */
            if (t->rd_len == 0 && !SSL_has_pending(t->ssl))
                break;
            continue;
        }
        int e = SSL_get_error(t->ssl, 0);
        if (e != SSL_ERROR_WANT_READ)
            failed(c, e);
        else if (SSL_has_pending(t->ssl) && !c->partial_since_ns)
            c->partial_since_ns = crpc_loop_now_ns(c->loop); /* half a record: slowloris too */
        break;
    }
out:
    t->rd = NULL;
    t->rd_len = 0;
    if (c->state == CONN_OPEN && t->cout.len)
        crpc_conn_mark_dirty(c); /* handshake messages, alerts */
}

/* Encrypts what c's output collected (once the handshake is done) into cout. False when
 * that failed: the connection is closed. */
static bool encrypt_collected(crpc_conn *c)
{
    crpc_tls_conn *t = c->tls;
    crpc_buf *plain_out = crpc_conn_out(c);
    if (!t->established || t->closing || !plain_out->len)
        return true;
    size_t written;
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, plain_out->data, plain_out->len, &written) != 1) {
        /* Only our BIO can fail it, out of memory. */
        ERR_clear_error();
        snprintf(t->reason, sizeof(t->reason), "TLS: out of memory encrypting");
        crpc_conn_close(c, -ENOMEM);
        return false;
    }
    plain_out->len = 0;
    return true;
}

bool crpc_tls_seal(crpc_conn *c)
{
    crpc_tls_conn *t = c->tls;
    if (!encrypt_collected(c) || !t->cout.len)
        return false;
    crpc_buf *send = &c->out[c->out_cur ^ 1];
    crpc_buf spare = *send; /* empty: no send is in flight */
    *send = t->cout;
    t->cout = spare;
    return true;
}

void crpc_tls_close_notify(crpc_conn *c)
{
    crpc_tls_conn *t = c->tls;
    if (!t->established || t->closing || c->send_inflight)
        return;
    encrypt_collected(c); /* what is collected goes first, then close_notify, both in cout */
    t->closing = true;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
}

bool crpc_tls_input_ended(crpc_conn *c)
{
    crpc_tls_conn *t = c->tls;
    if (!t->server || t->established)
        return false;
    refuse(c, TLS_CAUSE_CLOSED, NULL); /* a FIN midway through the handshake */
    return true;
}

void crpc_tls_janitor(crpc_conn *c, uint64_t now)
{
    crpc_tls_conn *t = c->tls;
    if (!t->established) {
        if (!t->started_ns)
            t->started_ns = now;
        else if (now - t->started_ns > (uint64_t)t->handshake_timeout_ms * 1000000u)
            refuse(c, TLS_CAUSE_TIMEOUT, NULL);
        return;
    }
    /* Idle for a second with nothing in hand: give the buffers back. */
    if (now - c->last_rx_ns > 1000000000ull && !c->send_inflight && !c->out[0].len && !c->out[1].len &&
        !t->cout.len && !c->in.len && !SSL_has_pending(t->ssl)) { /* not mid-record either */
        SSL_free_buffers(t->ssl);
        crpc_buf_free(&t->cout);
        crpc_buf_free(&c->out[0]);
        crpc_buf_free(&c->out[1]);
    }
}

/* ------------------------------------------------------------------ peers */

/* Adds the subjectAltNames of one kind as text. */
static void add_sans(crpc_peer_store *p, const GENERAL_NAMES *names, int type, enum crpc_peer_san kind)
{
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != type)
            continue;
        if (type == GEN_IPADD) {
            char text[INET6_ADDRSTRLEN] = "";
            const ASN1_OCTET_STRING *ip = g->d.iPAddress;
            if (ip->length == 4 || ip->length == 16)
                inet_ntop(ip->length == 4 ? AF_INET : AF_INET6, ip->data, text, sizeof(text));
            crpc_peer_add_san(p, kind, text, strlen(text));
        } else {
            const ASN1_IA5STRING *s = type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
            crpc_peer_add_san(p, kind, (const char *)s->data, (size_t)s->length);
        }
    }
}

void crpc_tls_describe_peer(crpc_conn *c)
{
    crpc_peer_store *p = c->peer;
    if (!p)
        return;
    SSL *ssl = c->tls->ssl;
    p->peer.transport = CRPC_TRANSPORT_TLS;
    crpc_peer_set(p, &p->peer.tls_version, SSL_get_version(ssl), SIZE_MAX);
    crpc_peer_set(p, &p->peer.tls_cipher, SSL_get_cipher_name(ssl), SIZE_MAX);
    const unsigned char *alpn;
    unsigned alpn_len;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn_len)
        crpc_peer_set(p, &p->peer.alpn, (const char *)alpn, alpn_len);
    crpc_peer_set(p, &p->peer.sni, SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), SIZE_MAX);
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (!cert || SSL_get_verify_result(ssl) != X509_V_OK)
        return;
    BIO *b = BIO_new(BIO_s_mem());
    if (b && X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
        char *text;
        long len = BIO_get_mem_data(b, &text);
        crpc_peer_set(p, &p->peer.cert_subject, text, (size_t)len);
    }
    BIO_free(b);
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    add_sans(p, names, GEN_DNS, PEER_SAN_DNS);
    add_sans(p, names, GEN_IPADD, PEER_SAN_IP);
    add_sans(p, names, GEN_URI, PEER_SAN_URI);
    GENERAL_NAMES_free(names);
    unsigned char *der = NULL;
    int len = i2d_X509(cert, &der);
    if (len > 0)
        crpc_peer_set_der(p, der, (size_t)len);
    OPENSSL_free(der);
    crpc_peer_finish(p);
}
