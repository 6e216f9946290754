/*
 * test_memory.c — a closed connection keeps no memory, whatever state it closed in.
 * 32 clients send echoes and never read, so each connection's output grows to the
 * server's max_output (where it stops reading), then every client resets its connection.
 * The heap must be back within 1 MiB of where it was before they connected; it used to
 * keep every closed connection's output until a new connection reused the slot.
 * Counted with the sanitizer allocator's own total (the C tests run under ASan), which,
 * unlike RSS, sees exactly what is allocated and not yet freed, plus the buffers large
 * enough to be memory mappings of their own (buf.c), which no allocator sees.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "check.h"
#include "crpc.h"
#include "wire.h"

#ifdef __SANITIZE_ADDRESS__
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void) { return __sanitizer_get_current_allocated_bytes() + crpc_buf_mapped_bytes(); }
#else
#include <malloc.h>
static size_t heap_in_use(void) { return mallinfo2().uordblks + mallinfo2().hblkhd + crpc_buf_mapped_bytes(); }
#endif

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type == CRPC_MSG_REQUEST)
        wire_echo_first_arg(req);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IONBF, 0);
    enum { CLIENTS = 32 };
    const uint32_t max_output = 2u << 20;
    crpc_server_config cfg = {.loops = 1, .on_request = on_request, .max_output = max_output};
    crpc_server *srv;
    int err = crpc_server_start(&cfg, &srv);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(crpc_server_port(srv))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    /* A first connection and its close warm up what the server keeps for good (its loop's
     * buffers), so the baseline is the server's steady state. */
    int warm = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_EQ(connect(warm, (struct sockaddr *)&a, sizeof(a)), 0);
    close(warm);
    usleep(100000);
    size_t baseline = heap_in_use();

    int fds[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        CHECK_EQ(connect(fds[i], (struct sockaddr *)&a, sizeof(a)), 0);
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    }
    /* Each writes until 1 s passes with no progress: the server has stopped reading it (a
     * shorter window mistakes a stall of a loaded machine for that). They write in turn, so
     * the idle second is waited out once for all rather than once per client. */
    static uint8_t frame[CLIENTS][40 * 1024];
    size_t n[CLIENTS], off[CLIENTS];
    uint32_t next_id[CLIENTS];
    uint64_t last_progress[CLIENTS];
    bool filled[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        n[i] = wire_request(frame[i], "Test.Echo", 0, 32 * 1024, 0x5a);
        off[i] = 0;
        next_id[i] = 1;
        last_progress[i] = now_ms();
        filled[i] = false;
    }
    for (int left = CLIENTS; left > 0;) {
        bool progress = false;
        for (int i = 0; i < CLIENTS; i++) {
            if (filled[i])
                continue;
            ssize_t w = send(fds[i], frame[i] + off[i], n[i] - off[i], MSG_NOSIGNAL);
            if (w > 0) {
                off[i] += (size_t)w;
                last_progress[i] = now_ms();
                progress = true;
                if (off[i] == n[i]) {
                    n[i] = wire_request(frame[i], "Test.Echo", next_id[i]++, 32 * 1024, 0x5a);
                    off[i] = 0;
                }
            } else {
                CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
                if (now_ms() - last_progress[i] >= 1000) {
                    filled[i] = true;
                    left--;
                }
            }
        }
        if (!progress)
            usleep(2000);
    }
    size_t peak = heap_in_use();
    printf("memory: %d clients that never read hold %zu MiB of server heap\n", CLIENTS,
           (peak - baseline) >> 20);
    CHECK(peak - baseline > (size_t)CLIENTS * max_output / 2); /* the scenario did fill them */

    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < CLIENTS; i++) {
        setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
        close(fds[i]);
    }
    for (int i = 0; i < 5000 && crpc_server_connection_count(srv); i++)
        usleep(1000);
    CHECK_EQ(crpc_server_connection_count(srv), 0);
    size_t after = heap_in_use();
    long long kept = (long long)after - (long long)baseline;
    printf("memory: after they reset, the server keeps %lld KiB more than before they came\n", kept / 1024);
    CHECK(kept < 1 << 20);
    crpc_server_destroy(srv);
    printf("PASS test_memory\n");
    return 0;
}
