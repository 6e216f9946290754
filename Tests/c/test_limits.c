/*
 * test_limits.c — the server's limits hold against misbehaving clients:
 *   1. beyond max_inflight unanswered requests on a connection, requests get status 8 at
 *      once, and the connection stays usable;
 *   2. beyond max_connections, new connections are closed at once;
 *   3. a client that sends and never reads is slowed: the server stops reading once
 *      max_output bytes of replies wait, so what the client can push is bounded; when it
 *      finally reads, every request it got in is answered;
 *   4. a connection that holds half a frame past frame_timeout_ms is closed (slowloris).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"
#include "wire.h"

static crpc_server *srv;

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    if (req->msg.method_len == 9 && memcmp(req->msg.method, "Test.Hold", 9) == 0)
        return; /* never answered */
    wire_echo_first_arg(req);
}

/* 1 when the server has closed `fd` within `ms` (a read returns EOF or a reset). */
static int closed_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1)
        return 0;
    char b[64];
    ssize_t n = read(fd, b, sizeof(b));
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static atomic_int exhausted, answered, other;

static void on_end(void *ctx, const crpc_result *res)
{
    (void)ctx;
    if (res->status == 0 && res->error_code == CRPC_STATUS_RESOURCE_EXHAUSTED)
        atomic_fetch_add(&exhausted, 1);
    else if (res->status == 0 && res->error_code == 0)
        atomic_fetch_add(&answered, 1);
    else
        atomic_fetch_add(&other, 1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* a closed connection shows up as a failed check, not a kill */
    setvbuf(stdout, NULL, _IONBF, 0);
    crpc_server_config cfg = {.loops = 1, .on_request = on_request, .max_inflight = 4,
                              .max_connections = 3, .max_output = 256 * 1024, .frame_timeout_ms = 200};
    int err = crpc_server_start(&cfg, &srv);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);
    uint16_t port = crpc_server_port(srv);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), 0);
    crpc_client *c;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", port, NULL, &c), 0);

    /* 1. Four held, six refused with 8; then the connection still answers. */
    crpc_call hold = {.method = "Test.Hold", .method_len = 9};
    for (int i = 0; i < 10; i++)
        CHECK_EQ(crpc_client_call(c, &hold, on_end, NULL, NULL), 0);
    for (int i = 0; i < 2000 && atomic_load(&exhausted) < 6; i++)
        usleep(1000);
    CHECK_EQ(atomic_load(&exhausted), 6);
    crpc_call ping = {.method = "rpc.ping", .method_len = 8};
    CHECK_EQ(crpc_client_call(c, &ping, on_end, NULL, NULL), 0);
    for (int i = 0; i < 2000 && atomic_load(&answered) < 1; i++)
        usleep(1000);
    CHECK_EQ(atomic_load(&answered), 1);
    printf("limits: 4 calls in flight allowed, 6 refused with status 8\n");

    /* 2. Connection 1 is the client above; two more fit, the fourth is closed at once. */
    int a = wire_connect(port), b = wire_connect(port), extra = wire_connect(port);
    CHECK(closed_within(extra, 2000));
    CHECK(!closed_within(a, 100));
    close(extra);
    close(b);
    usleep(50000);

    /* 3. A client that never reads: 32 KiB echoes, written without blocking until the
     * kernel refuses more. The server pauses reading at 256 KiB of unsent replies, so the
     * total stays bounded (socket buffers plus the limit), not endless. */
    int fd = a;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    static uint8_t frame[64 * 1024];
    size_t total = 0, n = wire_request(frame, "Bench.Echo", 0, 32 * 1024, 0x5a), off = 0;
    uint32_t sent_frames = 0;
    for (int idle = 0; idle < 100;) { /* write until 200 ms pass without progress */
        ssize_t w = send(fd, frame + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            total += (size_t)w;
            idle = 0;
            if (off == n) {
                sent_frames++;
                n = wire_request(frame, "Bench.Echo", sent_frames, 32 * 1024, 0x5a);
                off = 0;
            }
        } else {
            CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
            idle++;
            usleep(2000);
        }
        CHECK(total < 256u << 20); /* far beyond any socket buffer: the server never paused */
    }
    printf("limits: a client that never reads got %zu KiB in before the server stopped reading\n", total / 1024);
    /* Now it reads (finishing the frame it was in the middle of): every request is answered. */
    uint32_t replies = 0, want = sent_frames + (off ? 1 : 0);
    uint8_t buf[65536];
    size_t have = 0;
    for (int waited = 0; replies < want && waited < 5000;) {
        if (off && off < n) {
            ssize_t w = send(fd, frame + off, n - off, MSG_NOSIGNAL);
            if (w > 0)
                off += (size_t)w;
        }
        ssize_t r = read(fd, buf + have, sizeof(buf) - have);
        if (r <= 0) {
            usleep(1000);
            waited++;
            continue;
        }
        have += (size_t)r;
        for (;;) { /* count whole frames */
            if (have < 4)
                break;
            uint32_t len = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
            if (have < 4 + len)
                break;
            replies++;
            memmove(buf, buf + 4 + len, have - 4 - len);
            have -= 4 + len;
        }
    }
    CHECK_EQ(replies, want);
    printf("limits: then it read, and all %u requests it got in were answered\n", want);
    close(fd);

    /* 3b. Another one that never reads, paused likewise, then resets the connection: the
     * server is not reading it then, yet must notice and close it. */
    for (int i = 0; i < 1000 && crpc_server_connection_count(srv) != 1; i++)
        usleep(1000);
    CHECK_EQ(crpc_server_connection_count(srv), 1);
    int rude = wire_connect(port);
    fcntl(rude, F_SETFL, fcntl(rude, F_GETFL) | O_NONBLOCK);
    n = wire_request(frame, "Bench.Echo", 0, 32 * 1024, 0x5a);
    off = 0;
    for (int idle = 0, k = 1; idle < 100;) {
        ssize_t w = send(rude, frame + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            idle = 0;
            if (off == n) {
                n = wire_request(frame, "Bench.Echo", (uint32_t)k++, 32 * 1024, 0x5a);
                off = 0;
            }
        } else {
            idle++;
            usleep(2000);
        }
    }
    CHECK_EQ(crpc_server_connection_count(srv), 2);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    CHECK_EQ(setsockopt(rude, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(rude); /* RST */
    for (int i = 0; i < 1000 && crpc_server_connection_count(srv) != 1; i++)
        usleep(1000);
    CHECK_EQ(crpc_server_connection_count(srv), 1);
    printf("limits: a paused client that reset its connection was closed\n");

    /* 4. Slowloris: 3 bytes of a header, then nothing. */
    usleep(50000);
    int slow = wire_connect(port);
    CHECK_EQ(write(slow, "\0\0\0", 3), 3);
    uint64_t t0 = (uint64_t)time(NULL);
    CHECK(closed_within(slow, 3000));
    CHECK((uint64_t)time(NULL) - t0 <= 3);
    close(slow);
    printf("limits: a half-sent frame was cut off\n");

    CHECK_EQ(atomic_load(&other), 0);
    crpc_client_destroy(c);
    CHECK_EQ(crpc_loop_stop(loop), 0);
    crpc_loop_destroy(loop);
    crpc_server_destroy(srv);
    printf("PASS test_limits\n");
    return 0;
}
