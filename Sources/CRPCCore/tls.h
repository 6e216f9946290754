/*
 * tls.h — the TLS byte filter between a connection's backend and its framing (tls.c).
 *
 * A plaintext connection has c->tls == NULL and never enters this file: conn.c tests the
 * pointer on receive and on send, nothing more. A TLS connection's ciphertext arrives in
 * crpc_tls_received, is decrypted into a per-thread buffer and handed to the framing
 * (crpc_conn_plaintext); what a loop iteration collected in the connection's output is
 * encrypted once per flush (crpc_tls_seal) straight into the buffer the backend sends.
 * OpenSSL reads and writes through a BIO of ours that reads the bytes the backend handed
 * over and appends to that buffer, so no memory BIO sits in between.
 *
 * Loop thread only, but crpc_tls_client_handshake, which runs on the connecting thread
 * before the connection joins a loop.
 */
#ifndef CRPC_TLS_H
#define CRPC_TLS_H

#include <openssl/ssl.h>

#include "core.h"

#define CRPC_TLS_ALPN "swiftrpc/1" /* the one application protocol (docs/PROTOCOL.md) */

/* The reason OpenSSL's error queue holds, into buf (fallback when empty), and its reason
 * code; the queue is emptied (it is per thread, shared by every connection of a loop)
 * (tls_context.c). */
void crpc_tls_take_reason(char *buf, size_t len, const char *fallback, int *reason_code);

/* Why a server refused a handshake: each cause is logged at most once per 10 s. */
enum crpc_tls_cause {
    TLS_CAUSE_TIMEOUT = 0,   /* not done within handshake_timeout_ms */
    TLS_CAUSE_TOO_MANY_BYTES,/* more than max_handshake_bytes before the end */
    TLS_CAUSE_NOT_TLS,       /* the bytes are not TLS (a plaintext client?) */
    TLS_CAUSE_NO_CERT,       /* client authentication required, none presented */
    TLS_CAUSE_BAD_CERT,      /* the client's certificate did not verify */
    TLS_CAUSE_ALPN,          /* no "swiftrpc/1" offered */
    TLS_CAUSE_BAD_RECORD,    /* a record that does not decrypt, is too long, is cut */
    TLS_CAUSE_CLOSED,        /* the client went away midway */
    TLS_CAUSE_CLIENT_REFUSED,/* the client's alert: it does not trust our certificate */
    TLS_CAUSE_OTHER,
    TLS_CAUSE_COUNT
};

struct crpc_tls_context {
    atomic_int refs;
    SSL_CTX *ssl_ctx;
    bool server;
    bool alpn_optional;
    uint32_t handshake_timeout_ms;
    uint32_t max_handshake_bytes;
};

typedef struct crpc_tls_conn {
    SSL *ssl;
    const uint8_t *rd;      /* ciphertext handed over by the backend, not yet read */
    size_t rd_len;
    crpc_buf cout;          /* ciphertext written and not yet handed to the backend */
    bool established;       /* the handshake is done; application data flows */
    bool closing;           /* close_notify written: nothing more is sealed */
    bool server;
    bool refused;           /* client: the server's alert refused our certificate (not
                               transient: reconnecting would only be refused again) */
    uint64_t started_ns;    /* loop clock when the handshake began */
    uint32_t handshake_bytes;
    uint32_t handshake_timeout_ms, max_handshake_bytes;
    char reason[160];       /* why it failed, for the owner's error ("" if it did not) */
} crpc_tls_conn;

/* A server connection's filter, handshake pending (NULL when out of memory). */
crpc_tls_conn *crpc_tls_accept(crpc_tls_context *ctx);

/* Client: runs the handshake on the blocking socket fd within timeout_ms, checking the
 * server's certificate against server_name. Returns the filter (established) or NULL with
 * *err set (-EKEYREJECTED: verification failed, -ECONNABORTED, -ETIMEDOUT, -ENOMEM) and the
 * reason in crpc_last_error(). */
crpc_tls_conn *crpc_tls_client_handshake(crpc_tls_context *ctx, int fd, const char *server_name,
                                         uint32_t timeout_ms, int *err);

/* Frees the filter (the connection is released). */
void crpc_tls_free(crpc_tls_conn *t);

/* Ciphertext arrived: drives the handshake or decrypts into the framing. The connection
 * may close meanwhile (check c->state). */
void crpc_tls_received(crpc_conn *c, const uint8_t *data, size_t n);

/* Before a send: encrypts what c's output collected (once the handshake is done) and moves
 * the ciphertext into the buffer the backend sends (out[out_cur ^ 1], which is free).
 * Returns true when there is something to send. */
bool crpc_tls_seal(crpc_conn *c);

/* The connection is closing in order: seals what is left and writes close_notify. */
void crpc_tls_close_notify(crpc_conn *c);

/* The server's janitor, once a second: closes a handshake past its time; gives back an
 * idle connection's buffers (OpenSSL's ~34 KB and ours). */
void crpc_tls_janitor(crpc_conn *c, uint64_t now);

/* The peer's input ended (EOF). True when that refused a server handshake midway (counted,
 * logged, closed); false: the framing's usual end of input applies. */
bool crpc_tls_input_ended(crpc_conn *c);

/* Fills c's peer with the session's details (server side, once established). */
void crpc_tls_describe_peer(crpc_conn *c);

#endif
