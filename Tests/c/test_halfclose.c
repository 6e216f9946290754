/*
 * test_halfclose.c — the server answers everything it was sent before the input ended:
 *   1. requests, then shutdown(SHUT_WR): replies answered later (from another thread) and
 *      at once all arrive, then an orderly EOF;
 *   2. 3,000 x 4 KiB echoes, then SHUT_WR: every reply arrives whole, then EOF;
 *   3. 300 cycles of connect, one request, SHUT_WR: each gets its reply;
 *   4. good requests followed, in the same write, by a frame that cannot be trusted
 *      (msgid 2^32, length 0, length 0xFFFFFFFF, not an array): the good ones are
 *      answered, then the connection closes;
 *   4b. good requests, a fatal frame, then 4 MiB more that the peer writes before it reads
 *      anything: the server reads on (discarding) so the writer is not stuck, the replies
 *      arrive whole, then an orderly end (closing with unread input would have reset the
 *      connection and dropped them);
 *   5. a request never answered, then SHUT_WR: the connection is reset once eof_drain_ms
 *      has passed (a call cut off must not look like an orderly end).
 * Raw sockets on the client side, so nothing but the server's behaviour is measured.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"
#include "wire.h"

static crpc_server *srv;

typedef struct later {
    crpc_conn_id conn;
    uint32_t msgid;
} later;

/* Answers one Test.Later request 200 ms after it came, from its own thread: after the
 * half-close has been seen (so the replies test the drain path), and well before the
 * drain time (eof_drain_ms, 1 s, checked by a janitor once a second) runs out. */
static void *answer_later(void *arg)
{
    later *l = arg;
    usleep(200 * 1000);
    crpc_reply r = {0};
    CHECK_EQ(crpc_server_reply(srv, l->conn, l->msgid, &r), 0);
    free(l);
    return NULL;
}

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    if (req->msg.method_len == 9 && memcmp(req->msg.method, "Test.Hold", 9) == 0)
        return; /* never answered */
    if (req->msg.method_len == 10 && memcmp(req->msg.method, "Test.Later", 10) == 0) {
        later *l = malloc(sizeof(*l));
        l->conn = req->conn;
        l->msgid = req->msg.msgid;
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, answer_later, l), 0);
        pthread_detach(t);
        return;
    }
    wire_echo_first_arg(req);
}

/* A connection whose reads give up after 10 s (a server that never ends it fails the test). */
static int raw_connect(uint16_t port)
{
    int fd = wire_connect(port);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        CHECK(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

/* How the reading side ended. */
enum ending { ENDED_EOF, ENDED_RESET, ENDED_TIMEOUT };

/* Reads whole frames until the connection ends; counts them, checks each one is a response
 * to an id below `max_id`, and says how it ended. A frame cut by the end fails the check,
 * unless the end was a reset. */
static enum ending read_replies(int fd, uint32_t max_id, uint32_t *replies)
{
    static uint8_t buf[1 << 20];
    size_t have = 0;
    *replies = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + have, sizeof(buf) - have, 0);
        if (r == 0) {
            CHECK_EQ(have, 0); /* an orderly end never cuts a frame */
            return ENDED_EOF;
        }
        if (r < 0)
            return errno == ECONNRESET ? ENDED_RESET : ENDED_TIMEOUT;
        have += (size_t)r;
        size_t off = 0;
        while (have - off >= 4) {
            const uint8_t *f = buf + off;
            uint32_t len = (uint32_t)f[0] << 24 | (uint32_t)f[1] << 16 | (uint32_t)f[2] << 8 | f[3];
            if (have - off < 4 + (size_t)len)
                break;
            /* [1, msgid, ...]: a fixarray, type 1, then the msgid as a uint32 or smaller */
            CHECK(f[4] >= 0x94 && f[4] <= 0x95 && f[5] == 0x01);
            uint32_t id = f[6] <= 0x7f ? f[6] : f[6] == 0xcc ? f[7] : f[6] == 0xcd ? (uint32_t)f[7] << 8 | f[8]
                        : (uint32_t)f[7] << 24 | (uint32_t)f[8] << 16 | (uint32_t)f[9] << 8 | f[10];
            CHECK(id < max_id);
            (*replies)++;
            off += 4 + len;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
}

static uint8_t frame[1 << 16];

static void test_late_and_quick_replies(uint16_t port)
{
    int fd = raw_connect(port);
    uint32_t id = 0;
    for (int i = 0; i < 10; i++, id++)
        write_all(fd, frame, wire_request(frame, "Test.Later", id, 8, (uint8_t)id));
    for (int i = 0; i < 20; i++, id++)
        write_all(fd, frame, wire_request(frame, "Test.Echo", id, 8, (uint8_t)id));
    CHECK_EQ(shutdown(fd, SHUT_WR), 0);
    uint32_t replies;
    CHECK_EQ(read_replies(fd, id, &replies), ENDED_EOF);
    CHECK_EQ(replies, 30);
    close(fd);
    printf("halfclose: 10 late and 20 quick requests, then SHUT_WR: 30 replies, then EOF\n");
}

/* The writer runs on its own thread: the server's replies must be read meanwhile, or both
 * sides' socket buffers fill (the server stops reading at max_output, by design). */
typedef struct bulk_writer {
    int fd;
    uint32_t count;
} bulk_writer;

static void *write_bulk(void *arg)
{
    bulk_writer *w = arg;
    static uint8_t f[8192];
    for (uint32_t i = 0; i < w->count; i++)
        write_all(w->fd, f, wire_request(f, "Test.Echo", i, 4096, (uint8_t)i));
    CHECK_EQ(shutdown(w->fd, SHUT_WR), 0);
    return NULL;
}

static void test_bulk_then_halfclose(uint16_t port)
{
    int fd = raw_connect(port);
    bulk_writer w = {.fd = fd, .count = 3000};
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, write_bulk, &w), 0);
    uint32_t replies;
    CHECK_EQ(read_replies(fd, w.count, &replies), ENDED_EOF);
    pthread_join(t, NULL);
    CHECK_EQ(replies, w.count);
    close(fd);
    printf("halfclose: 3000 x 4 KiB echoes, then SHUT_WR: 3000 whole replies, then EOF\n");
}

static void test_cycles(uint16_t port)
{
    for (int i = 0; i < 300; i++) {
        int fd = raw_connect(port);
        write_all(fd, frame, wire_request(frame, "Test.Echo", 7, 16, (uint8_t)7));
        CHECK_EQ(shutdown(fd, SHUT_WR), 0);
        uint32_t replies;
        CHECK_EQ(read_replies(fd, 8, &replies), ENDED_EOF);
        CHECK_EQ(replies, 1);
        close(fd);
    }
    printf("halfclose: 300 cycles of one request and SHUT_WR: every one answered\n");
}

static void test_fatal_frame_after_good_ones(uint16_t port)
{
    static const uint8_t msgid_too_big[] = {0, 0, 0, 14, 0x94, 0x00, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0,
                                            0xa1, 'X', 0x90};
    static const uint8_t length_zero[] = {0, 0, 0, 0};
    static const uint8_t length_huge[] = {0xff, 0xff, 0xff, 0xff};
    static const uint8_t not_an_array[] = {0, 0, 0, 1, 0x2a};
    const struct { const char *name; const uint8_t *bytes; size_t n; } fatal[] = {
        {"msgid 2^32", msgid_too_big, sizeof(msgid_too_big)},
        {"length 0", length_zero, sizeof(length_zero)},
        {"length 0xFFFFFFFF", length_huge, sizeof(length_huge)},
        {"not an array", not_an_array, sizeof(not_an_array)},
    };
    static uint8_t batch[64 * 1024];
    for (size_t k = 0; k < sizeof(fatal) / sizeof(fatal[0]); k++) {
        for (uint32_t good = 1; good <= 50; good += 49) {
            size_t n = 0;
            for (uint32_t i = 0; i < good; i++)
                n += wire_request(batch + n, "Test.Echo", i, 16, (uint8_t)i);
            memcpy(batch + n, fatal[k].bytes, fatal[k].n);
            n += fatal[k].n;
            int fd = raw_connect(port);
            write_all(fd, batch, n); /* one write: good frames and the fatal one together */
            uint32_t replies;
            enum ending e = read_replies(fd, good, &replies);
            if (replies != good)
                fprintf(stderr, "after %u good frames and %s: %u replies\n", good, fatal[k].name, replies);
            CHECK_EQ(replies, good);
            if (!(e == ENDED_EOF || e == ENDED_RESET)) fprintf(stderr, "%s good=%u ending %d\n", fatal[k].name, good, e);
            CHECK(e == ENDED_EOF || e == ENDED_RESET);
            close(fd);
        }
    }
    printf("halfclose: 1 and 50 good requests before each of 4 fatal frames: all answered, then closed\n");
}

static void test_writes_after_a_fatal_frame(uint16_t port)
{
    static uint8_t batch[5 << 20];
    size_t n = 0;
    for (uint32_t i = 0; i < 50; i++)
        n += wire_request(batch + n, "Test.Echo", i, 16, (uint8_t)i);
    memcpy(batch + n, "\0\0\0\1\x2a", 5); /* not an array */
    n += 5;
    memset(batch + n, 0x77, 4 << 20); /* anything: it is never parsed */
    n += 4 << 20;
    int fd = raw_connect(port);
    write_all(fd, batch, n); /* blocks unless the server keeps reading */
    uint32_t replies;
    enum ending e = read_replies(fd, 50, &replies);
    close(fd);
    CHECK_EQ(replies, 50);
    CHECK(e == ENDED_EOF);
    printf("halfclose: 50 requests, a fatal frame, then 4 MiB more: all answered, then EOF\n");
}

static void test_drain_time_runs_out(uint16_t port)
{
    int fd = raw_connect(port);
    write_all(fd, frame, wire_request(frame, "Test.Echo", 0, 8, (uint8_t)0));
    write_all(fd, frame, wire_request(frame, "Test.Hold", 1, 8, (uint8_t)1));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0); /* before the half-close the drain time runs from */
    CHECK_EQ(shutdown(fd, SHUT_WR), 0);
    uint32_t replies;
    enum ending e = read_replies(fd, 2, &replies);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK_EQ(replies, 1);
    CHECK(e == ENDED_RESET); /* the held call was cut off */
    CHECK(waited >= 1.0 && waited < 5.0);
    close(fd);
    printf("halfclose: a call never answered: closed after the drain time (%.1f s)\n", waited);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IONBF, 0);
    crpc_server_config cfg = {.loops = 1, .on_request = on_request, .eof_drain_ms = 1000};
    int err = crpc_server_start(&cfg, &srv);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);
    uint16_t port = crpc_server_port(srv);
    test_late_and_quick_replies(port);
    test_bulk_then_halfclose(port);
    test_cycles(port);
    test_fatal_frame_after_good_ones(port);
    test_writes_after_a_fatal_frame(port);
    test_drain_time_runs_out(port);
    for (int i = 0; i < 2000 && crpc_server_connection_count(srv); i++)
        usleep(1000);
    CHECK_EQ(crpc_server_connection_count(srv), 0);
    crpc_server_destroy(srv);
    printf("PASS test_halfclose\n");
    return 0;
}
