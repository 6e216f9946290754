/*
 * test_loopback.c — a real server and real clients on loopback (either I/O backend):
 *   1. 100,000 pipelined requests over 4 connections, every reply matched to its request;
 *   2. calls made from a foreign thread and from completion callbacks both work;
 *   3. a server stopping mid-call fails every pending call exactly once;
 *   4. a client vanishing mid-frame leaves the server healthy for everyone else;
 *   5. rpc.ping is answered, unknown envelopes close only their own connection.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"

#define CONNS 4
#define DEPTH 32
#define TOTAL 100000

/* ------------------------------------------------------------ the server */

static atomic_int held_count;
static _Atomic crpc_conn_id held_conn;
static crpc_server *g_srv;

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    if (req->msg.method_len == 9 && memcmp(req->msg.method, "Test.Hold", 9) == 0) {
        atomic_store(&held_conn, req->conn);
        atomic_fetch_add(&held_count, 1); /* never answered: the server stops first */
        return;
    }
    const uint8_t *arg;
    size_t arg_len;
    crpc_reply r = {0};
    if (crpc_msgpack_array_elem(req->msg.body, req->msg.body_len, 0, &arg, &arg_len) == 0) {
        r.result = arg;
        r.result_len = (uint32_t)arg_len;
    } else {
        r.error_code = CRPC_STATUS_INVALID_ARGUMENT;
        r.error_msg = "want one argument";
        r.error_msg_len = 17;
    }
    CHECK_EQ(crpc_server_reply(req->server, req->conn, req->msg.msgid, &r), 0);
}

static crpc_server *start_server(void)
{
    crpc_server_config cfg = {.loops = 2, .on_request = on_request};
    crpc_server *srv;
    int err = crpc_server_start(&cfg, &srv);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);
    CHECK(crpc_server_port(srv) != 0);
    return srv;
}

/* ------------------------------------------------------------ the client */

typedef struct conn_state {
    crpc_client *client;
    atomic_int sent, done, bad;
} conn_state;

static conn_state conns[CONNS];
static atomic_int total_sent, total_done;

static void on_echo(void *ctx, const crpc_result *res);

/* params = [n] with n a uint32, encoded by hand: 0x91 0xce n. */
static int send_echo(conn_state *cs, uint32_t n)
{
    uint8_t params[6] = {0x91, 0xce, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    crpc_call call = {.method = "Bench.Echo", .method_len = 10, .params = params, .params_len = 6};
    return crpc_client_call(cs->client, &call, on_echo, (void *)(uintptr_t)n, NULL);
}

static void on_echo(void *ctx, const crpc_result *res)
{
    uint32_t n = (uint32_t)(uintptr_t)ctx;
    conn_state *cs = &conns[n % CONNS];
    if (res->status != 0 || res->error_code != 0 || res->result_len != 5 ||
        res->result[0] != 0xce ||
        ((uint32_t)res->result[1] << 24 | (uint32_t)res->result[2] << 16 |
         (uint32_t)res->result[3] << 8 | res->result[4]) != n)
        atomic_fetch_add(&cs->bad, 1);
    atomic_fetch_add(&cs->done, 1);
    atomic_fetch_add(&total_done, 1);
    /* Keep the pipeline full from the loop thread: the no-hop path. */
    int next = atomic_fetch_add(&total_sent, 1);
    if (next < TOTAL) {
        uint32_t id = (uint32_t)next;
        id = id - id % CONNS + (uint32_t)(cs - conns); /* stay on this connection */
        CHECK_EQ(send_echo(cs, id), 0);
    }
}

static void wait_until(atomic_int *v, int target, int seconds)
{
    for (int i = 0; i < seconds * 1000 && atomic_load(v) < target; i++)
        usleep(1000);
}

static void test_pipelined(crpc_loop *loop, uint16_t port)
{
    for (int i = 0; i < CONNS; i++)
        CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", port, NULL, &conns[i].client), 0);
    /* Fill each connection to DEPTH from this (foreign) thread. */
    for (int d = 0; d < DEPTH; d++)
        for (int i = 0; i < CONNS; i++) {
            int next = atomic_fetch_add(&total_sent, 1);
            uint32_t id = (uint32_t)next - (uint32_t)next % CONNS + (uint32_t)i;
            CHECK_EQ(send_echo(&conns[i], id), 0);
        }
    wait_until(&total_done, TOTAL, 60);
    CHECK_EQ(atomic_load(&total_done), TOTAL);
    for (int i = 0; i < CONNS; i++) {
        CHECK_EQ(atomic_load(&conns[i].bad), 0);
        CHECK(atomic_load(&conns[i].done) > 0);
        CHECK_EQ(crpc_client_pending_count(conns[i].client), 0);
    }
    printf("pipelined: %d calls over %d connections matched\n", TOTAL, CONNS);
}

/* The server's traffic counters after the pipelined run: every request in, every reply out. */
static void test_traffic_counters(crpc_server *srv)
{
    crpc_server_stats s;
    crpc_server_get_stats(srv, &s);
    CHECK(s.frames_in >= TOTAL);
    CHECK(s.frames_out >= TOTAL);
    CHECK(s.bytes_in > (uint64_t)TOTAL * 4);  /* at least every frame's length prefix */
    CHECK(s.bytes_out > (uint64_t)TOTAL * 4);
    CHECK_EQ(s.rejected_frames, 0);
    printf("counters: %llu frames in, %llu out, %llu bytes in, %llu out\n",
           (unsigned long long)s.frames_in, (unsigned long long)s.frames_out,
           (unsigned long long)s.bytes_in, (unsigned long long)s.bytes_out);
}

/* ----------------------------------------------------- ping and bad input */

static atomic_int ping_done, ping_ok;

static void on_ping(void *ctx, const crpc_result *res)
{
    (void)ctx;
    if (res->status == 0 && res->error_code == 0 && res->result_len == 1 && res->result[0] == 0xc0)
        atomic_fetch_add(&ping_ok, 1);
    atomic_fetch_add(&ping_done, 1);
}

static void ping(crpc_client *c)
{
    crpc_call call = {.method = "rpc.ping", .method_len = 8};
    int before = atomic_load(&ping_done);
    CHECK_EQ(crpc_client_call(c, &call, on_ping, NULL, NULL), 0);
    wait_until(&ping_done, before + 1, 10);
    CHECK_EQ(atomic_load(&ping_ok), before + 1);
}

static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static void test_hostile_peers(crpc_server *srv, uint16_t port)
{
    unsigned base = crpc_server_connection_count(srv);
    crpc_server_stats before, after;
    crpc_server_get_stats(srv, &before);
    /* Half a frame, then gone. */
    int fd = raw_connect(port);
    const uint8_t half[] = {0, 0, 0, 20, 0x94, 0x00, 0x01};
    CHECK_EQ(write(fd, half, sizeof(half)), (long)sizeof(half));
    usleep(20000);
    close(fd);
    /* A frame that is not an envelope: the server must close this connection only. */
    fd = raw_connect(port);
    const uint8_t junk[] = {0, 0, 0, 1, 0x2a};
    CHECK_EQ(write(fd, junk, sizeof(junk)), (long)sizeof(junk));
    char b;
    CHECK_EQ(read(fd, &b, 1), 0); /* EOF: closed by the server */
    close(fd);
    /* An oversized length: refused from the header alone. */
    fd = raw_connect(port);
    const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff};
    CHECK_EQ(write(fd, huge, sizeof(huge)), 4);
    CHECK_EQ(read(fd, &b, 1), 0);
    close(fd);
    for (int i = 0; i < 1000 && crpc_server_connection_count(srv) != base; i++)
        usleep(1000);
    CHECK_EQ(crpc_server_connection_count(srv), base);
    ping(conns[0].client); /* everyone else is still served */
    crpc_server_get_stats(srv, &after);
    /* The junk envelope and the oversized length were rejected; half a frame was not. */
    CHECK_EQ(after.rejected_frames, before.rejected_frames + 2);
    CHECK_EQ(after.frames_in, before.frames_in + 2);   /* the junk frame and the ping */
    CHECK_EQ(after.frames_out, before.frames_out + 1); /* the ping's answer */
    printf("hostile peers: server healthy, %u connections\n", base);
}

/* ------------------------------------------------- server stops mid-call */

static atomic_int held_done, held_reset, held_other;

static void on_held(void *ctx, const crpc_result *res)
{
    (void)ctx;
    if (res->status == -ECONNRESET)
        atomic_fetch_add(&held_reset, 1);
    else
        atomic_fetch_add(&held_other, 1);
    atomic_fetch_add(&held_done, 1);
}

static void test_server_stops_mid_call(crpc_server *srv)
{
    const int n = 200;
    crpc_call call = {.method = "Test.Hold", .method_len = 9};
    for (int i = 0; i < n; i++)
        CHECK_EQ(crpc_client_call(conns[i % CONNS].client, &call, on_held, NULL, NULL), 0);
    wait_until(&held_count, n, 10);
    CHECK_EQ(atomic_load(&held_count), n);
    CHECK_EQ(crpc_server_stop(srv), 0);
    wait_until(&held_done, n, 10);
    usleep(50000); /* any duplicate completion would show up now */
    CHECK_EQ(atomic_load(&held_done), n);
    CHECK_EQ(atomic_load(&held_reset), n);
    CHECK_EQ(atomic_load(&held_other), 0);
    /* A handler answering after the stop is told so, and nothing is touched. */
    crpc_reply late = {0};
    CHECK_EQ(crpc_server_reply(srv, atomic_load(&held_conn), 1, &late), -ESHUTDOWN);
    CHECK_EQ(crpc_server_stop(srv), 0); /* idempotent */
    crpc_server_destroy(srv);
    for (int i = 0; i < CONNS; i++) {
        CHECK(!crpc_client_is_connected(conns[i].client));
        CHECK_EQ(crpc_client_pending_count(conns[i].client), 0);
        crpc_call c2 = {.method = "Bench.Echo", .method_len = 10};
        CHECK_EQ(crpc_client_call(conns[i].client, &c2, on_held, NULL, NULL), -ENOTCONN);
    }
    printf("server stop: %d pending calls failed once each\n", n);
}

int main(void)
{
    g_srv = start_server();
    uint16_t port = crpc_server_port(g_srv);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    int err = crpc_loop_start(loop);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);

    test_pipelined(loop, port);
    test_traffic_counters(g_srv);
    ping(conns[1].client);
    test_hostile_peers(g_srv, port);
    test_server_stops_mid_call(g_srv);

    /* A closed handle stays valid: calls fail at once, until it is destroyed. */
    for (int i = 0; i < CONNS; i++) {
        crpc_client_close(conns[i].client);
        crpc_client_close(conns[i].client); /* idempotent */
        crpc_call c3 = {.method = "Bench.Echo", .method_len = 10};
        CHECK_EQ(crpc_client_call(conns[i].client, &c3, on_held, NULL, NULL), -ENOTCONN);
        crpc_client_destroy(conns[i].client);
    }
    CHECK_EQ(crpc_loop_stop(loop), 0);
    crpc_loop_destroy(loop);
    printf("PASS test_loopback\n");
    return 0;
}
