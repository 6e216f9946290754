/*
 * test_tls.c — TLS in the core, with certificates made for the run
 * (scripts/make-test-certs.sh: a throw-away CA, ECDSA P-256):
 *   1. mutual TLS: calls (small, 200 KB across records, 2,000 pipelined) come back right;
 *      the server sees who the client is (TLS 1.3, ALPN, SNI, subject, SANs, DER);
 *   2. the client refuses a server it cannot verify: another CA, a wrong name, an expired
 *      certificate (-EKEYREJECTED, with the reason in crpc_last_error);
 *   3. the server refuses clients: no certificate, another CA's, an expired one, no ALPN,
 *      plaintext, garbage, a record too long, a cut record, a silent client (the handshake
 *      timeout), too many handshake bytes — each counted in rejected_handshakes (or, after
 *      the handshake, rejected_frames), and a good client is served afterwards;
 *   4. a TLS client on a plaintext port fails its connect with -ECONNABORTED;
 *   5. crpc_server_reload_tls: new handshakes get the new certificate, an open connection
 *      keeps working;
 *   6. 1,000 TLS connections at once, each making a call;
 *   7. what is only on when configured: TLS 1.2, clients without ALPN, optional client
 *      certificates; PEM from memory; a server checked by its IP subjectAltName.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"
#include "wire.h"

static char dir[64];
static char peer_seen[512]; /* what the server saw of the last peer, as text */

static const char *cert(const char *name)
{
    static char paths[8][128];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 128, "%s/%s", dir, name);
    return p;
}

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    const crpc_peer *p = req->peer;
    snprintf(peer_seen, sizeof(peer_seen), "%d|%s|%s|%s|%s|%s|%u|%s|%u", p->transport, p->tls_version ? p->tls_version : "-",
             p->alpn ? p->alpn : "-", p->sni ? p->sni : "-", p->cert_subject ? p->cert_subject : "-",
             p->cert_uris_count ? p->cert_uris[0] : "-", p->cert_dns_count, p->cert_dns_count ? p->cert_dns[0] : "-",
             p->cert_der_len > 0);
    wire_echo_first_arg(req);
}

static crpc_tls_context *server_ctx(const char *crt, const char *key, int auth, uint32_t timeout_ms)
{
    crpc_tls_options o = {.cert_file = cert(crt), .key_file = cert(key), .ca_file = cert("ca.pem"),
                          .client_auth = auth, .handshake_timeout_ms = timeout_ms};
    crpc_tls_context *ctx = NULL;
    int rc = crpc_tls_server_context(&o, &ctx);
    if (rc)
        fprintf(stderr, "server context: %s (%s)\n", crpc_strerror(rc), crpc_last_error());
    CHECK_EQ(rc, 0);
    return ctx;
}

static crpc_tls_context *client_ctx(const char *ca, const char *crt, const char *key)
{
    crpc_tls_options o = {.ca_file = cert(ca), .cert_file = crt ? cert(crt) : NULL, .key_file = key ? cert(key) : NULL};
    crpc_tls_context *ctx = NULL;
    CHECK_EQ(crpc_tls_client_context(&o, &ctx), 0);
    return ctx;
}

/* ------------------------------------------------------------- sync calls */

typedef struct outcome {
    atomic_int done;
    int status;
    int32_t error_code;
    size_t result_len;
    uint8_t first;
    char why[200];
} outcome;

static void on_done(void *ctx, const crpc_result *r)
{
    outcome *o = ctx;
    o->status = r->status;
    o->error_code = r->error_code;
    o->result_len = r->result_len;
    o->first = r->result_len > 5 ? r->result[5] : 0;
    snprintf(o->why, sizeof(o->why), "%.*s", (int)r->error_msg_len, r->error_msg ? r->error_msg : "");
    atomic_store(&o->done, 1);
}

static void wait_done(atomic_int *v, int n, int ms)
{
    for (int i = 0; i < ms && atomic_load(v) < n; i++)
        usleep(1000);
    CHECK(atomic_load(v) >= n);
}

/* Calls Test.Echo with a bin of n bytes of `fill`; returns the outcome. */
static outcome call(crpc_client *c, uint32_t n, uint8_t fill)
{
    uint8_t *params = malloc(n + 8);
    size_t len = 0;
    params[len++] = 0x91;
    params[len++] = 0xc6;
    params[len++] = (uint8_t)(n >> 24); params[len++] = (uint8_t)(n >> 16);
    params[len++] = (uint8_t)(n >> 8); params[len++] = (uint8_t)n;
    memset(params + len, fill, n);
    len += n;
    outcome o = {0};
    crpc_call k = {.method = "Test.Echo", .method_len = 9, .params = params, .params_len = (uint32_t)len};
    int rc = crpc_client_call(c, &k, on_done, &o, NULL);
    free(params);
    if (rc) {
        o.status = rc;
        return o;
    }
    wait_done(&o.done, 1, 10000);
    return o;
}

static int tls_connect(crpc_loop *loop, uint16_t port, crpc_tls_context *ctx, const char *name, crpc_client **out)
{
    crpc_client_config cfg = {.tls = ctx, .server_name = name, .connect_timeout_ms = 5000};
    return crpc_client_connect(loop, "127.0.0.1", port, &cfg, out);
}

static crpc_server_stats stats(crpc_server *srv)
{
    crpc_server_stats s;
    crpc_server_get_stats(srv, &s);
    return s;
}

/* Waits for the server's refusals to reach n. */
static void wait_rejected(crpc_server *srv, uint64_t n, int ms)
{
    for (int i = 0; i < ms && stats(srv).rejected_handshakes < n; i++)
        usleep(1000);
    CHECK_EQ(stats(srv).rejected_handshakes, n);
}

/* True when the server closes fd within 5 s (EOF or reset), reading and dropping bytes. */
static int closed_by_server(int fd)
{
    uint8_t buf[4096];
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 1;
        if (n < 0)
            return 0; /* timed out */
    }
}

/* A raw TLS 1.3 session with OpenSSL on fd, as a hostile client would hold one. */
static SSL *raw_tls(SSL_CTX *sctx, int fd)
{
    SSL *ssl = SSL_new(sctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    CHECK_EQ(SSL_connect(ssl), 1);
    return ssl;
}

/* Moves what the socket has into the session's read BIO (waits up to 2 s for some). */
static void feed(int fd, BIO *rbio)
{
    uint8_t buf[16384];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 2000) <= 0)
        return;
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0)
        BIO_write(rbio, buf, (int)n);
}

/* A client whose Finished and its first `extra` bytes of requests reach the server in one
 * write, as a client that pipelines at once does when the server reads late. Returns the
 * session (reading from fd from then on) with its replies unread. */
static SSL *handshake_and_pipeline(SSL_CTX *sctx, int fd, size_t extra)
{
    SSL *ssl = SSL_new(sctx);
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set_connect_state(ssl);
    static uint8_t out[1 << 20];
    for (int i = 0; i < 50 && SSL_do_handshake(ssl) != 1; i++) {
        int n = BIO_read(wbio, out, sizeof(out));
        if (n > 0)
            CHECK_EQ(send(fd, out, (size_t)n, MSG_NOSIGNAL), n);
        feed(fd, rbio);
    }
    CHECK(SSL_is_init_finished(ssl));
    static uint8_t frames[200 * 1024];
    size_t len = 0;
    for (uint32_t id = 1; len + 4200 < sizeof(frames) && len < extra; id++)
        len += wire_request(frames + len, "Test.Echo", id, 4096, 0x33);
    size_t written;
    CHECK_EQ(SSL_write_ex(ssl, frames, len, &written), 1);
    int n = BIO_read(wbio, out, sizeof(out)); /* Finished, then the requests */
    CHECK(n > (int)extra);
    CHECK_EQ(send(fd, out, (size_t)n, MSG_NOSIGNAL), n);
    return ssl;
}

static SSL_CTX *raw_ctx(int with_cert, int with_alpn)
{
    SSL_CTX *s = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(s, TLS1_3_VERSION);
    SSL_CTX_load_verify_locations(s, cert("ca.pem"), NULL);
    if (with_cert) {
        SSL_CTX_use_certificate_chain_file(s, cert("client.pem"));
        SSL_CTX_use_PrivateKey_file(s, cert("client.key"), SSL_FILETYPE_PEM);
    }
    if (with_alpn)
        SSL_CTX_set_alpn_protos(s, (const unsigned char *)"\x0aswiftrpc/1", 11);
    return s;
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/crpc-tls-test-%d", (int)getpid());
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "scripts/make-test-certs.sh %s", dir);
    CHECK_EQ(system(cmd), 0);

    crpc_tls_context *sctx = server_ctx("server.pem", "server.key", CRPC_TLS_CLIENT_AUTH_REQUIRED, 1500);
    crpc_server_config cfg = {.loops = 1, .on_request = on_request, .tls = sctx};
    crpc_server *srv;
    int rc = crpc_server_start(&cfg, &srv);
    SKIP_IF_NO_URING(rc);
    CHECK_EQ(rc, 0);
    crpc_tls_context_release(sctx); /* the server holds its own reference */
    uint16_t port = crpc_server_port(srv);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), 0);

    /* 1. Mutual TLS. */
    crpc_tls_context *good = client_ctx("ca.pem", "client.pem", "client.key");
    crpc_client *c;
    rc = tls_connect(loop, port, good, "localhost", &c);
    if (rc)
        fprintf(stderr, "connect: %s (%s)\n", crpc_strerror(rc), crpc_last_error());
    CHECK_EQ(rc, 0);
    outcome o = call(c, 100, 0xab);
    CHECK_EQ(o.status, 0);
    CHECK_EQ(o.error_code, 0);
    CHECK_EQ(o.result_len, 105);
    CHECK_EQ(o.first, 0xab);
    printf("peer: %s\n", peer_seen);
    CHECK(strstr(peer_seen, "1|TLSv1.3|swiftrpc/1|localhost|CN=test-client|spiffe://swiftrpc.test/client|1|client.test|1"));
    o = call(c, 200 * 1000, 0x5a); /* a frame across 13 records each way */
    CHECK_EQ(o.status, 0);
    CHECK_EQ(o.result_len, 200 * 1000 + 5);
    CHECK_EQ(o.first, 0x5a);
    static outcome many[2000];
    uint8_t params[] = {0x91, 0xc4, 0x01, 0x07};
    crpc_call k = {.method = "Test.Echo", .method_len = 9, .params = params, .params_len = sizeof(params)};
    atomic_int all = 0;
    for (int i = 0; i < 2000; i++)
        CHECK_EQ(crpc_client_call(c, &k, on_done, &many[i], NULL), 0);
    for (int i = 0; i < 2000; i++) {
        wait_done(&many[i].done, 1, 10000);
        CHECK_EQ(many[i].status, 0);
        atomic_fetch_add(&all, 1);
    }
    CHECK_EQ(stats(srv).tls_handshakes, 1);
    printf("mutual TLS: 2,002 calls answered, one of 200 KB\n");

    /* 2. The client refuses servers it cannot verify. */
    crpc_client *bad;
    crpc_tls_context *other = client_ctx("other-ca.pem", "client.pem", "client.key");
    CHECK_EQ(tls_connect(loop, port, other, "localhost", &bad), -EKEYREJECTED);
    printf("other CA: %s\n", crpc_last_error());
    CHECK(strstr(crpc_last_error(), "did not verify"));
    CHECK_EQ(tls_connect(loop, port, good, "wrong.example", &bad), -EKEYREJECTED);
    printf("wrong name: %s\n", crpc_last_error());
    CHECK(strstr(crpc_last_error(), "mismatch"));
    crpc_tls_context_release(other);
    uint64_t refused = stats(srv).rejected_handshakes; /* the server saw those alerts */

    /* 3. The server refuses bad clients, and keeps serving. */
    crpc_tls_context *nocert = client_ctx("ca.pem", NULL, NULL);
    crpc_client *anon;
    rc = tls_connect(loop, port, nocert, "localhost", &anon);
    /* TLS 1.3: the client's side of the handshake ends before the server checks its
     * certificate, so the refusal reaches the first call. */
    if (rc == 0) {
        o = call(anon, 10, 1);
        CHECK(o.status == -ECONNABORTED || o.status == -ECONNRESET || o.status == -ENOTCONN);
        printf("no client certificate: call ended %s (%s)\n", crpc_strerror(o.status), o.why);
        crpc_client_destroy(anon);
    }
    wait_rejected(srv, ++refused, 3000);
    const char *bad_clients[][2] = {{"other-client.pem", "other-client.key"}, {"expired-client.pem", "expired-client.key"}};
    for (int i = 0; i < 2; i++) {
        crpc_tls_context *x = client_ctx("ca.pem", bad_clients[i][0], bad_clients[i][1]);
        if (tls_connect(loop, port, x, "localhost", &anon) == 0) {
            o = call(anon, 10, 1);
            CHECK(o.status != 0);
            crpc_client_destroy(anon);
        }
        wait_rejected(srv, ++refused, 3000);
        crpc_tls_context_release(x);
    }
    crpc_tls_context_release(nocert);

    SSL_CTX *noalpn = raw_ctx(1, 0);
    int fd = wire_connect(port);
    SSL *ssl = SSL_new(noalpn);
    SSL_set_fd(ssl, fd);
    CHECK(SSL_connect(ssl) != 1); /* no_application_protocol */
    SSL_free(ssl);
    close(fd);
    wait_rejected(srv, ++refused, 3000);

    /* Plaintext on the TLS port: a good request frame. */
    fd = wire_connect(port);
    uint8_t frame[64];
    size_t flen = wire_request(frame, "Test.Echo", 1, 4, 0);
    CHECK_EQ(send(fd, frame, flen, 0), (ssize_t)flen);
    CHECK(closed_by_server(fd));
    close(fd);
    wait_rejected(srv, ++refused, 3000);

    /* Garbage that looks like nothing. */
    fd = wire_connect(port);
    uint8_t junk[512];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)(i * 37 + 11);
    CHECK_EQ(send(fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
    CHECK(closed_by_server(fd));
    close(fd);
    wait_rejected(srv, ++refused, 3000);

    /* A silent client: the handshake timeout (1.5 s here; the janitor looks every second). */
    fd = wire_connect(port);
    CHECK(closed_by_server(fd));
    close(fd);
    wait_rejected(srv, ++refused, 3000);

    /* Too many bytes before the handshake ends: a ClientHello that claims 64 KiB and is
     * sent in full-size handshake records. */
    fd = wire_connect(port);
    static uint8_t hello[5 * (5 + 16384)];
    size_t hl = 0;
    for (int r = 0; r < 5; r++) {
        uint8_t hdr[5] = {0x16, 0x03, 0x01, 0x40, 0x00};
        memcpy(hello + hl, hdr, 5);
        hl += 5;
        if (r == 0) {
            uint8_t hs[4] = {0x01, 0x01, 0x00, 0x00}; /* client_hello, 65536 bytes */
            memcpy(hello + hl, hs, 4);
        }
        hl += 16384;
    }
    send(fd, hello, hl, MSG_NOSIGNAL);
    CHECK(closed_by_server(fd));
    close(fd);
    wait_rejected(srv, ++refused, 3000);
    /* A client that goes away midway through its handshake: refused (counted), not an
     * orderly end. */
    fd = wire_connect(port);
    uint8_t half[15] = {0x16, 0x03, 0x01, 0x00, 0x80}; /* a record that never completes */
    CHECK_EQ(send(fd, half, sizeof(half), 0), (ssize_t)sizeof(half));
    shutdown(fd, SHUT_WR);
    CHECK(closed_by_server(fd));
    close(fd);
    wait_rejected(srv, ++refused, 3000);
    printf("refused: no certificate, other CA, expired, no ALPN, plaintext, garbage, silent, too big, gone: %llu\n",
           (unsigned long long)refused);

    /* The handshake-byte cap counts the handshake only: 100 KiB of requests arriving with
     * the client's Finished, in one write, are served, not refused. */
    SSL_CTX *piper = raw_ctx(1, 1);
    fd = wire_connect(port);
    ssl = handshake_and_pipeline(piper, fd, 100 * 1024);
    BIO *rbio = SSL_get_rbio(ssl);
    size_t replies = 0;
    uint8_t plainbuf[65536];
    for (int i = 0; i < 400 && replies < 24 * (4 + 4105); i++) { /* 24+ replies of 4 KiB */
        feed(fd, rbio);
        int n;
        while ((n = SSL_read(ssl, plainbuf, sizeof(plainbuf))) > 0)
            replies += (size_t)n;
    }
    CHECK(replies >= 24 * 4100);
    CHECK_EQ(stats(srv).rejected_handshakes, refused);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(piper);
    printf("a pipelining client's requests after its Finished are not handshake bytes\n");

    /* After the handshake: a record longer than 16 KiB + 256, and a cut record. */
    SSL_CTX *raw = raw_ctx(1, 1);
    uint64_t frames_rejected = stats(srv).rejected_frames;
    for (int kind = 0; kind < 2; kind++) {
        fd = wire_connect(port);
        ssl = raw_tls(raw, fd);
        uint8_t rec[5 + 20000] = {0x17, 0x03, 0x03, (uint8_t)(20000 >> 8), (uint8_t)(20000 & 0xff)};
        if (kind == 0) {
            send(fd, rec, sizeof(rec), MSG_NOSIGNAL);
        } else {
            rec[3] = 0x01; /* 256 bytes announced, 10 sent, then the end */
            rec[4] = 0x00;
            send(fd, rec, 15, MSG_NOSIGNAL);
            shutdown(fd, SHUT_WR);
        }
        CHECK(closed_by_server(fd));
        SSL_free(ssl);
        close(fd);
    }
    for (int i = 0; i < 3000 && stats(srv).rejected_frames < frames_rejected + 1; i++)
        usleep(1000);
    CHECK(stats(srv).rejected_frames >= frames_rejected + 1); /* the overlong record */
    SSL_CTX_free(raw);
    SSL_CTX_free(noalpn);
    o = call(c, 10, 3);
    CHECK_EQ(o.status, 0); /* the first client was never disturbed */
    crpc_client *again;
    CHECK_EQ(tls_connect(loop, port, good, "localhost", &again), 0);
    CHECK_EQ(call(again, 10, 4).status, 0);
    crpc_client_destroy(again);
    printf("bad records closed their connections; good clients served throughout\n");

    /* 4. A TLS client on a plaintext port. */
    crpc_server_config plain_cfg = {.loops = 1, .on_request = on_request};
    crpc_server *plain;
    CHECK_EQ(crpc_server_start(&plain_cfg, &plain), 0);
    rc = tls_connect(loop, crpc_server_port(plain), good, "localhost", &bad);
    printf("TLS client on a plaintext port: %s (%s)\n", crpc_strerror(rc), crpc_last_error());
    CHECK_EQ(rc, -ECONNABORTED);
    crpc_server_destroy(plain);

    /* 5. Reload: the other CA's certificate from now on. A connection accepted before it,
     * whose ClientHello comes after (and after the old context is gone), still completes
     * its handshake with the certificate it was accepted with. */
    int early = wire_connect(port);
    for (int i = 0; i < 2000 && crpc_server_connection_count(srv) < 2; i++)
        usleep(1000); /* c and the early one */
    crpc_tls_context *next = server_ctx("other-server.pem", "other-server.key", CRPC_TLS_CLIENT_AUTH_REQUIRED, 0);
    CHECK_EQ(crpc_server_reload_tls(srv, next), 0);
    crpc_tls_context_release(next);
    SSL_CTX *late = raw_ctx(1, 1);
    ssl = raw_tls(late, early); /* trusts ca.pem: the old certificate */
    SSL_free(ssl);
    close(early);
    SSL_CTX_free(late);
    crpc_tls_context *trusts_other = client_ctx("other-ca.pem", "client.pem", "client.key");
    CHECK_EQ(tls_connect(loop, port, trusts_other, "localhost", &again), 0);
    CHECK_EQ(call(again, 10, 5).status, 0);
    crpc_client_destroy(again);
    CHECK_EQ(tls_connect(loop, port, good, "localhost", &again), -EKEYREJECTED);
    CHECK_EQ(call(c, 10, 6).status, 0); /* opened before the reload: keeps its session */
    printf("reload: new handshakes use the new certificate, the open connection goes on\n");
    crpc_client_destroy(c);

    /* 6. 1,000 TLS connections at once. */
    enum { N = 1000 };
    static crpc_client *conns[N];
    static outcome each[N];
    for (int i = 0; i < N; i++) {
        rc = tls_connect(loop, port, trusts_other, "localhost", &conns[i]);
        if (rc)
            fprintf(stderr, "connection %d: %s (%s)\n", i, crpc_strerror(rc), crpc_last_error());
        CHECK_EQ(rc, 0);
    }
    for (int i = 0; i < N; i++)
        CHECK_EQ(crpc_client_call(conns[i], &k, on_done, &each[i], NULL), 0);
    for (int i = 0; i < N; i++) {
        wait_done(&each[i].done, 1, 20000);
        CHECK_EQ(each[i].status, 0);
    }
    CHECK(crpc_server_connection_count(srv) >= N);
    for (int i = 0; i < N; i++)
        crpc_client_destroy(conns[i]);
    printf("1,000 TLS connections, one call each: all answered\n");
    crpc_tls_context_release(trusts_other);
    crpc_tls_context_release(good);

    crpc_server_destroy(srv);

    /* 7. Only when configured. A default server refuses TLS 1.2 and clients without ALPN. */
    sctx = server_ctx("server.pem", "server.key", CRPC_TLS_CLIENT_AUTH_NONE, 0);
    crpc_server_config strict_cfg = {.loops = 1, .on_request = on_request, .tls = sctx};
    crpc_server *strict;
    CHECK_EQ(crpc_server_start(&strict_cfg, &strict), 0);
    crpc_tls_context_release(sctx);
    SSL_CTX *old = raw_ctx(0, 1);
    SSL_CTX_set_min_proto_version(old, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(old, TLS1_2_VERSION);
    SSL_CTX *bare = raw_ctx(0, 0);
    for (int i = 0; i < 2; i++) {
        fd = wire_connect(crpc_server_port(strict));
        ssl = SSL_new(i == 0 ? old : bare);
        SSL_set_fd(ssl, fd);
        CHECK(SSL_connect(ssl) != 1);
        SSL_free(ssl);
        close(fd);
    }
    wait_rejected(strict, 2, 3000);
    crpc_server_destroy(strict);
    /* ...and a server that allows them admits both; optional client certificates; the
     * certificate and key given as PEM text. */
    FILE *f = fopen(cert("server.pem"), "r");
    static char chain_pem[8192], key_pem[4096];
    size_t chain_len = fread(chain_pem, 1, sizeof(chain_pem) - 1, f);
    fclose(f);
    f = fopen(cert("server.key"), "r");
    size_t key_len = fread(key_pem, 1, sizeof(key_pem) - 1, f);
    fclose(f);
    crpc_tls_options lax = {.cert_pem = chain_pem, .cert_pem_len = chain_len, .key_pem = key_pem,
                            .key_pem_len = key_len, .ca_file = cert("ca.pem"),
                            .client_auth = CRPC_TLS_CLIENT_AUTH_OPTIONAL, .allow_tls12 = 1, .alpn_optional = 1};
    CHECK_EQ(crpc_tls_server_context(&lax, &sctx), 0);
    crpc_server_config lax_cfg = {.loops = 1, .on_request = on_request, .tls = sctx};
    crpc_server *open_srv;
    CHECK_EQ(crpc_server_start(&lax_cfg, &open_srv), 0);
    crpc_tls_context_release(sctx);
    for (int i = 0; i < 2; i++) {
        fd = wire_connect(crpc_server_port(open_srv));
        ssl = SSL_new(i == 0 ? old : bare);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, "localhost");
        CHECK_EQ(SSL_connect(ssl), 1);
        CHECK_EQ(SSL_write(ssl, frame, (int)flen), (int)flen); /* Test.Echo, 4 bytes */
        uint8_t reply[64];
        CHECK(SSL_read(ssl, reply, sizeof(reply)) > 4);
        printf("lax server: %s %s\n", SSL_get_version(ssl), i == 0 ? "(TLS 1.2 allowed)" : "(no ALPN allowed)");
        SSL_free(ssl);
        close(fd);
    }
    SSL_CTX_free(old);
    SSL_CTX_free(bare);
    crpc_tls_context *anon_ok = client_ctx("ca.pem", NULL, NULL);
    crpc_tls_context *with_cert = client_ctx("ca.pem", "client.pem", "client.key");
    crpc_client_config by_ip = {.tls = anon_ok}; /* no server name: 127.0.0.1 against the IP SAN */
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", crpc_server_port(open_srv), &by_ip, &again), 0);
    CHECK_EQ(call(again, 10, 7).status, 0);
    CHECK(strstr(peer_seen, "|-|-|0|")); /* no certificate: no subject, no SANs, no DER */
    crpc_client_destroy(again);
    CHECK_EQ(tls_connect(loop, crpc_server_port(open_srv), with_cert, "localhost", &again), 0);
    CHECK_EQ(call(again, 10, 8).status, 0);
    CHECK(strstr(peer_seen, "CN=test-client")); /* optional, shown and verified */
    crpc_client_destroy(again);
    crpc_tls_context_release(anon_ok);
    crpc_tls_context_release(with_cert);
    crpc_server_destroy(open_srv);
    printf("only when configured: TLS 1.2, no ALPN, optional client certificates; PEM in memory; IP SAN\n");

    crpc_loop_stop(loop);
    crpc_loop_destroy(loop);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
    printf("PASS test_tls\n");
    return 0;
}
