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
#include <string.h>
#include <sys/socket.h>
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
    static uint8_t frame[40 * 1024];
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        CHECK_EQ(connect(fds[i], (struct sockaddr *)&a, sizeof(a)), 0);
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    }
    /* Each writes until 200 ms pass with no progress: the server has stopped reading it. */
    for (int i = 0; i < CLIENTS; i++) {
        size_t n = wire_request(frame, "Test.Echo", 0, 32 * 1024, 0x5a), off = 0;
        for (uint32_t k = 1, idle = 0; idle < 100;) {
            ssize_t w = send(fds[i], frame + off, n - off, MSG_NOSIGNAL);
            if (w > 0) {
                off += (size_t)w;
                idle = 0;
                if (off == n) {
                    n = wire_request(frame, "Test.Echo", k++, 32 * 1024, 0x5a);
                    off = 0;
                }
            } else {
                CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
                idle++;
                usleep(2000);
            }
        }
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
