/*
 * test_heartbeat.c — dead peers and heartbeats:
 *   1. a peer that accepts but never answers is declared dead after dead_after_ms, and the
 *      call pending on it fails at once with -ECONNRESET (status 14 in Swift);
 *   2. an idle connection to a live server stays up: its pings are answered.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A peer that accepts one connection and reads everything, answering nothing. */
static int silent_fd;
static void *silent_peer(void *arg)
{
    (void)arg;
    int c = accept(silent_fd, NULL, NULL);
    char buf[4096];
    while (c >= 0 && read(c, buf, sizeof(buf)) > 0) {
    }
    if (c >= 0)
        close(c);
    return NULL;
}

static atomic_int ended, status;
static _Atomic uint64_t ended_at;

static void on_end(void *ctx, const crpc_result *res)
{
    (void)ctx;
    atomic_store(&status, res->status);
    atomic_store(&ended_at, now_ms());
    atomic_fetch_add(&ended, 1);
}

static void on_request(void *user, const crpc_request *req) { (void)user; (void)req; }

int main(void)
{
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    int err = crpc_loop_start(loop);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);

    /* 1. A silent peer. */
    silent_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    CHECK_EQ(bind(silent_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    CHECK_EQ(listen(silent_fd, 1), 0);
    CHECK_EQ(getsockname(silent_fd, (struct sockaddr *)&a, &alen), 0);
    pthread_t peer;
    pthread_create(&peer, NULL, silent_peer, NULL);

    crpc_client_config cfg = {.heartbeat_ms = 50, .dead_after_ms = 200};
    crpc_client *c;
    uint64_t start = now_ms(); /* before the connect: the dead timer runs from it */
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", ntohs(a.sin_port), &cfg, &c), 0);
    crpc_call call = {.method = "Any.Thing", .method_len = 9};
    CHECK_EQ(crpc_client_call(c, &call, on_end, NULL, NULL), 0);
    for (int i = 0; i < 3000 && !atomic_load(&ended); i++)
        usleep(1000);
    CHECK_EQ(atomic_load(&ended), 1);
    CHECK_EQ(atomic_load(&status), -ECONNRESET);
    uint64_t took = atomic_load(&ended_at) - start;
    CHECK(took >= 200 && took < 1000);
    CHECK(!crpc_client_is_connected(c));
    printf("heartbeat: silent peer declared dead after %llu ms\n", (unsigned long long)took);
    crpc_client_destroy(c);
    pthread_join(peer, NULL);
    close(silent_fd);

    /* 2. A live server keeps an idle connection: its pings are answered. dead_after is
     * wide (a loaded machine can stall a ping's answer for a few hundred ms), and the
     * silence lasts three of those periods, so without answered pings it would die. */
    crpc_client_config live_cfg = {.heartbeat_ms = 50, .dead_after_ms = 1000};
    crpc_server_config scfg = {.loops = 1, .on_request = on_request};
    crpc_server *srv;
    CHECK_EQ(crpc_server_start(&scfg, &srv), 0);
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", crpc_server_port(srv), &live_cfg, &c), 0);
    usleep(3 * 1000 * 1000); /* three dead_after periods of silence from the caller's side */
    CHECK(crpc_client_is_connected(c));
    crpc_client_stats st;
    crpc_client_get_stats(c, &st);
    CHECK_EQ(st.pending, 0);
    crpc_client_destroy(c);
    crpc_server_destroy(srv);

    CHECK_EQ(crpc_loop_stop(loop), 0);
    crpc_loop_destroy(loop);
    printf("PASS test_heartbeat\n");
    return 0;
}
