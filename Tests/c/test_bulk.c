/*
 * test_bulk.c — payloads from 0 bytes to 3 MiB echoed through a real server and client,
 * all in flight at once, so frames span many reads (provided buffers for io_uring, the
 * read buffer for epoll) and replies fill the socket (short sends, EPOLLOUT). Every byte
 * of every reply is checked. Run on each backend by c-tests.sh --backend both.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"

static const uint32_t sizes[] = {0, 1, 31, 4096, 32767, 32768, 65536, 262143, 262145, 1 << 20, 3 << 20};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
#define ROUNDS 3
#define CALLS (NSIZES * ROUNDS)

static crpc_server *g_srv;

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    const uint8_t *arg;
    size_t arg_len;
    CHECK_EQ(crpc_msgpack_array_elem(req->msg.body, req->msg.body_len, 0, &arg, &arg_len), 0);
    crpc_reply r = {.result = arg, .result_len = (uint32_t)arg_len};
    CHECK_EQ(crpc_server_reply(g_srv, req->conn, req->msg.msgid, &r), 0);
}

static uint8_t pattern(size_t call, size_t i) { return (uint8_t)(call * 131 + i * 7 + (i >> 9)); }

static atomic_int done, good;

static void on_reply(void *ctx, const crpc_result *res)
{
    size_t call = (size_t)(uintptr_t)ctx;
    uint32_t n = sizes[call % NSIZES];
    int ok = res->status == 0 && res->error_code == 0 && res->result_len == 5 + n &&
             res->result[0] == 0xc6 &&
             ((uint32_t)res->result[1] << 24 | (uint32_t)res->result[2] << 16 |
              (uint32_t)res->result[3] << 8 | res->result[4]) == n;
    for (uint32_t i = 0; ok && i < n; i++)
        ok = res->result[5 + i] == pattern(call, i);
    if (!ok)
        fprintf(stderr, "bulk: call %zu (%u bytes) came back wrong (status %d)\n", call, n, res->status);
    atomic_fetch_add(&good, ok);
    atomic_fetch_add(&done, 1);
}

int main(void)
{
    crpc_server_config cfg = {.loops = 1, .on_request = on_request};
    int err = crpc_server_start(&cfg, &g_srv);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), 0);
    crpc_client *c;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", crpc_server_port(g_srv), NULL, &c), 0);

    uint8_t *params = malloc(6 + (3u << 20));
    CHECK(params);
    for (size_t call = 0; call < CALLS; call++) {
        uint32_t n = sizes[call % NSIZES];
        params[0] = 0x91; /* [bin32] */
        params[1] = 0xc6;
        params[2] = (uint8_t)(n >> 24);
        params[3] = (uint8_t)(n >> 16);
        params[4] = (uint8_t)(n >> 8);
        params[5] = (uint8_t)n;
        for (uint32_t i = 0; i < n; i++)
            params[6 + i] = pattern(call, i);
        crpc_call cl = {.method = "Test.Echo", .method_len = 9, .params = params, .params_len = 6 + n};
        CHECK_EQ(crpc_client_call(c, &cl, on_reply, (void *)(uintptr_t)call, NULL), 0);
    }
    free(params);
    for (int i = 0; i < 30000 && atomic_load(&done) < (int)CALLS; i++)
        usleep(1000);
    CHECK_EQ(atomic_load(&done), CALLS);
    CHECK_EQ(atomic_load(&good), CALLS);
    printf("bulk: %zu echoes of 0 B to 3 MiB, all in flight at once, every byte matched (%s)\n",
           (size_t)CALLS, crpc_loop_backend(loop));

    crpc_client_destroy(c);
    CHECK_EQ(crpc_loop_stop(loop), 0);
    crpc_loop_destroy(loop);
    crpc_server_destroy(g_srv);
    printf("PASS test_bulk\n");
    return 0;
}
