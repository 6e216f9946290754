/*
 * record_cost.c — what OpenSSL costs per TLS 1.3 record, with no network: a client and a
 * server session joined by memory BIOs; each round writes one record on one side and reads
 * it on the other. The per-record figure docs/BENCHMARKS.md quotes for W1.
 *
 *   scripts/make-test-certs.sh /tmp/certs
 *   cc -O2 Benchmarks/tls/record_cost.c -lssl -lcrypto -o /tmp/record_cost
 *   /tmp/record_cost /tmp/certs [TLS_AES_128_GCM_SHA256 | TLS_CHACHA20_POLY1305_SHA256]
 */
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void move(BIO *from, BIO *to)
{
    char buf[65536];
    int n;
    while ((n = BIO_read(from, buf, sizeof(buf))) > 0)
        BIO_write(to, buf, n);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CERT_DIR [SUITE]\n", argv[0]);
        return 2;
    }
    const char *suite = argc > 2 ? argv[2] : "TLS_AES_128_GCM_SHA256";
    char chain[512], key[512];
    snprintf(chain, sizeof(chain), "%s/server.pem", argv[1]);
    snprintf(key, sizeof(key), "%s/server.key", argv[1]);
    SSL_CTX *s = SSL_CTX_new(TLS_server_method()), *c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(s, TLS1_3_VERSION);
    SSL_CTX_set_num_tickets(s, 0);
    SSL_CTX_set_ciphersuites(s, suite);
    SSL_CTX_set_ciphersuites(c, suite);
    if (SSL_CTX_use_certificate_chain_file(s, chain) != 1 || SSL_CTX_use_PrivateKey_file(s, key, SSL_FILETYPE_PEM) != 1) {
        fprintf(stderr, "cannot load %s / %s\n", chain, key);
        return 1;
    }
    SSL *a = SSL_new(c), *b = SSL_new(s);
    BIO *ar = BIO_new(BIO_s_mem()), *aw = BIO_new(BIO_s_mem()), *br = BIO_new(BIO_s_mem()), *bw = BIO_new(BIO_s_mem());
    SSL_set_bio(a, ar, aw);
    SSL_set_bio(b, br, bw);
    SSL_set_connect_state(a);
    SSL_set_accept_state(b);
    for (int i = 0; i < 10; i++) {
        SSL_do_handshake(a);
        move(aw, br);
        SSL_do_handshake(b);
        move(bw, ar);
    }
    static char out[16384];
    const int sizes[] = {50, 1024, 16384};
    for (int k = 0; k < 3; k++) {
        int size = sizes[k], rounds = size > 1000 ? 20000 : 200000;
        char *record = calloc(1, (size_t)size);
        size_t w, r;
        double t0 = now();
        for (int i = 0; i < rounds; i++) {
            SSL_write_ex(a, record, (size_t)size, &w);
            move(aw, br);
            SSL_read_ex(b, out, sizeof(out), &r);
        }
        printf("%s %5d bytes: write + read %.2f us per record\n", suite, size, (now() - t0) / rounds * 1e6);
        free(record);
    }
    return 0;
}
