/*
 * test_faults.c — faults from outside:
 *   1. a server process killed with SIGKILL mid-call: every pending call fails at once
 *      (-ECONNRESET, status 14 in Swift), well within a second;
 *   2. 10,000 concurrent connections are accepted and served (the file limit is raised
 *      as needed; the test skips if the hard limit is too low), and the server's memory
 *      per idle connection is reported.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"

#define CONNS 10000

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static crpc_server *srv;

static void hold_requests(void *user, const crpc_request *req) { (void)user; (void)req; }

static void answer_requests(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    crpc_reply r = {0};
    crpc_server_reply(srv, req->conn, req->msg.msgid, &r);
}

static void answer_requests_with_echo(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    crpc_reply r = {0};
    const uint8_t *arg;
    size_t arg_len;
    if (crpc_msgpack_array_elem(req->msg.body, req->msg.body_len, 0, &arg, &arg_len) == 0) {
        r.result = arg;
        r.result_len = (uint32_t)arg_len;
    }
    crpc_server_reply(srv, req->conn, req->msg.msgid, &r);
}

static atomic_int reset, other;
static _Atomic uint64_t last_end;

static void on_end(void *ctx, const crpc_result *res)
{
    (void)ctx;
    atomic_fetch_add(res->status == -ECONNRESET ? &reset : &other, 1);
    atomic_store(&last_end, now_ms());
}

static void killed_server(void)
{
    int ready[2];
    CHECK_EQ(pipe(ready), 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) { /* the server: holds every request until it is killed */
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed check in the parent ends us too */
        crpc_server_config cfg = {.loops = 1, .on_request = hold_requests};
        int err = crpc_server_start(&cfg, &srv);
        uint16_t port = err ? 0 : crpc_server_port(srv);
        if (write(ready[1], &port, sizeof(port)) != sizeof(port))
            _exit(1);
        pause();
        _exit(0);
    }
    uint16_t port = 0;
    CHECK_EQ(read(ready[0], &port, sizeof(port)), (long)sizeof(port));
    if (port == 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        printf("SKIP: the server could not start (SWIFTRPC_BACKEND=uring where io_uring is refused?)\n");
        exit(SKIP_EXIT);
    }
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), 0);
    crpc_client *c;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", port, NULL, &c), 0);
    crpc_call call = {.method = "Test.Hold", .method_len = 9};
    for (int i = 0; i < 100; i++)
        CHECK_EQ(crpc_client_call(c, &call, on_end, NULL, NULL), 0);
    usleep(100000); /* the calls reach the server */
    uint64_t killed_at = now_ms();
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    for (int i = 0; i < 2000 && atomic_load(&reset) + atomic_load(&other) < 100; i++)
        usleep(1000);
    CHECK_EQ(atomic_load(&reset), 100);
    CHECK_EQ(atomic_load(&other), 0);
    uint64_t took = atomic_load(&last_end) - killed_at;
    CHECK(took < 1000);
    printf("faults: server killed, 100 pending calls failed within %llu ms\n", (unsigned long long)took);
    crpc_client_destroy(c);
    CHECK_EQ(crpc_loop_stop(loop), 0);
    crpc_loop_destroy(loop);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* The client side of part 2, in a child process so each side needs only ~10,000
 * descriptors: connects, reports, pings every connection when told, reports again. */
static void client_process(uint16_t port, int to_parent, int from_parent)
{
    static int fds[CONNS];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char ok = 1, go;
    for (int i = 0; i < CONNS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&a, sizeof(a)) != 0)
            ok = 0;
    }
    if (write(to_parent, &ok, 1) != 1 || read(from_parent, &go, 1) != 1)
        _exit(1);
    static const uint8_t ping[] = {0, 0, 0, 13, 0x94, 0x00, 0x01, 0xa8, 'r', 'p', 'c', '.', 'p', 'i', 'n', 'g', 0x90};
    for (int i = 0; i < CONNS && ok; i++)
        if (write(fds[i], ping, sizeof(ping)) != (ssize_t)sizeof(ping))
            ok = 0;
    for (int i = 0; i < CONNS && ok; i++) {
        uint8_t reply[16];
        size_t got = 0;
        while (got < 4 + 5 && ok) { /* [1, 1, nil, nil] is 5 bytes */
            ssize_t n = read(fds[i], reply + got, sizeof(reply) - got);
            if (n <= 0)
                ok = 0;
            else
                got += (size_t)n;
        }
        if (ok && !(reply[3] == 5 && reply[4] == 0x94 && reply[5] == 0x01 && reply[6] == 0x01))
            ok = 0;
    }
    if (write(to_parent, &ok, 1) != 1 || read(from_parent, &go, 1) != 1)
        _exit(1);
    _exit(ok ? 0 : 1);
}

static void many_connections(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t need = CONNS + 256;
    if (rl.rlim_cur < need) {
        if (rl.rlim_max < need) {
            printf("SKIP: 10,000 connections need %llu descriptors, the hard limit is %llu\n",
                   (unsigned long long)need, (unsigned long long)rl.rlim_max);
            return;
        }
        rl.rlim_cur = need;
        CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    crpc_server_config cfg = {.loops = 2, .on_request = answer_requests};
    CHECK_EQ(crpc_server_start(&cfg, &srv), 0);
    long rss0 = rss_kib();
    int up[2], down[2];
    CHECK_EQ(pipe(up), 0);
    CHECK_EQ(pipe(down), 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        client_process(crpc_server_port(srv), up[1], down[0]);
    }
    char ok = 0;
    CHECK_EQ(read(up[0], &ok, 1), 1);
    CHECK_EQ(ok, 1);
    for (int i = 0; i < 10000 && crpc_server_connection_count(srv) < CONNS; i++)
        usleep(1000);
    CHECK_EQ(crpc_server_connection_count(srv), CONNS);
    long rss_idle = rss_kib();
    CHECK_EQ(write(down[1], "g", 1), 1); /* every connection now sends rpc.ping */
    CHECK_EQ(read(up[0], &ok, 1), 1);
    CHECK_EQ(ok, 1);
    long rss_served = rss_kib();
    CHECK_EQ(write(down[1], "q", 1), 1);
    int status;
    CHECK_EQ(waitpid(child, &status, 0), child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("faults: %d connections accepted and served; server memory %.2f KiB per idle connection, "
           "%.2f KiB once each had served a call (RSS, user space; kernel socket buffers not counted)\n",
           CONNS, (double)(rss_idle - rss0) / CONNS, (double)(rss_served - rss0) / CONNS);
    for (int i = 0; i < 10000 && crpc_server_connection_count(srv) > 0; i++)
        usleep(1000);
    CHECK_EQ(crpc_server_connection_count(srv), 0);
    crpc_server_destroy(srv);
}

/* A client that asks for a 1 MiB echo, reads 100 bytes of it and vanishes: the server
 * drops the rest of the reply and keeps serving everyone else. */
static void vanish_mid_reply(void)
{
    crpc_server_config cfg = {.loops = 1, .on_request = answer_requests_with_echo};
    CHECK_EQ(crpc_server_start(&cfg, &srv), 0);
    uint16_t port = crpc_server_port(srv);
    for (int round = 0; round < 20; round++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        static uint8_t req[(1 << 20) + 64];
        uint32_t n = 1 << 20;
        uint8_t *p = req + 4;
        *p++ = 0x94; *p++ = 0x00; *p++ = 0x01; *p++ = 0xaa; memcpy(p, "Bench.Echo", 10); p += 10;
        *p++ = 0x91; *p++ = 0xc6; *p++ = (uint8_t)(n >> 24); *p++ = (uint8_t)(n >> 16); *p++ = (uint8_t)(n >> 8); *p++ = (uint8_t)n;
        memset(p, 0x33, n); p += n;
        uint32_t len = (uint32_t)(p - req - 4);
        req[0] = (uint8_t)(len >> 24); req[1] = (uint8_t)(len >> 16); req[2] = (uint8_t)(len >> 8); req[3] = (uint8_t)len;
        size_t total = (size_t)(p - req), off = 0;
        while (off < total) {
            ssize_t w = send(fd, req + off, total - off, MSG_NOSIGNAL);
            CHECK(w > 0);
            off += (size_t)w;
        }
        uint8_t head[100];
        size_t got = 0;
        while (got < sizeof(head)) {
            ssize_t r = read(fd, head + got, sizeof(head) - got);
            CHECK(r > 0);
            got += (size_t)r;
        }
        close(fd); /* gone, with most of a 1 MiB reply unsent */
    }
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), 0);
    crpc_client *c;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", port, NULL, &c), 0);
    atomic_store(&reset, 0);
    atomic_store(&other, 0);
    crpc_call ping = {.method = "rpc.ping", .method_len = 8};
    CHECK_EQ(crpc_client_call(c, &ping, on_end, NULL, NULL), 0);
    for (int i = 0; i < 2000 && atomic_load(&other) == 0; i++)
        usleep(1000);
    CHECK_EQ(atomic_load(&other), 1); /* answered (anything but a reset counts as "other") */
    crpc_client_destroy(c);
    CHECK_EQ(crpc_loop_stop(loop), 0);
    crpc_loop_destroy(loop);
    for (int i = 0; i < 2000 && crpc_server_connection_count(srv) > 0; i++)
        usleep(1000);
    CHECK_EQ(crpc_server_connection_count(srv), 0);
    crpc_server_destroy(srv);
    printf("faults: 20 clients vanished mid-reply; the server kept serving\n");
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    killed_server();
    vanish_mid_reply();
    many_connections();
    printf("PASS test_faults\n");
    return 0;
}
