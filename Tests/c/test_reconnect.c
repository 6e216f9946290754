/*
 * test_reconnect.c — a client that reconnects:
 *   1. when its server goes away, the calls pending on the lost connection fail at once
 *      (-ECONNRESET), while calls made during the outage wait for the new connection;
 *   2. a waiting call with a timeout ends with -ETIMEDOUT if the outage outlasts it;
 *   3. once the server is back (same port) the client reconnects by itself and the waiting
 *      calls are sent and answered;
 *   4. with fail_fast, calls made during the outage fail at once with -ENOTCONN.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"

static crpc_server *srv;
static atomic_int hold_requests;

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST || atomic_load(&hold_requests))
        return;
    crpc_reply r = {0};
    crpc_server_reply(srv, req->conn, req->msg.msgid, &r);
}

static crpc_server *start_server(uint16_t port)
{
    crpc_server_config cfg = {.loops = 1, .port = port, .on_request = on_request};
    crpc_server *s;
    int err = crpc_server_start(&cfg, &s);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);
    return s;
}

static atomic_int ok, reset, timedout, other;

static void on_end(void *ctx, const crpc_result *res)
{
    (void)ctx;
    if (res->status == 0 && res->error_code == 0)
        atomic_fetch_add(&ok, 1);
    else if (res->status == -ECONNRESET)
        atomic_fetch_add(&reset, 1);
    else if (res->status == -ETIMEDOUT)
        atomic_fetch_add(&timedout, 1);
    else
        atomic_fetch_add(&other, 1);
}

static void wait_for(atomic_int *v, int n, int ms)
{
    for (int i = 0; i < ms && atomic_load(v) < n; i++)
        usleep(1000);
}

int main(void)
{
    srv = start_server(0);
    uint16_t port = crpc_server_port(srv);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), 0);
    crpc_client_config cfg = {.reconnect = 1, .reconnect_min_ms = 20, .reconnect_max_ms = 100};
    crpc_client *c;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", port, &cfg, &c), 0);
    crpc_client_config ff = cfg;
    ff.fail_fast = 1;
    crpc_client *fast;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", port, &ff, &fast), 0);

    crpc_call call = {.method = "Test.Echo", .method_len = 9};
    CHECK_EQ(crpc_client_call(c, &call, on_end, NULL, NULL), 0);
    wait_for(&ok, 1, 2000);
    CHECK_EQ(atomic_load(&ok), 1);

    /* The server goes away with 5 calls pending on it. */
    atomic_store(&hold_requests, 1);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(crpc_client_call(c, &call, on_end, NULL, NULL), 0);
    usleep(50000);
    crpc_server_destroy(srv);
    wait_for(&reset, 5, 2000);
    CHECK_EQ(atomic_load(&reset), 5);
    for (int i = 0; i < 200 && crpc_client_is_connected(fast); i++)
        usleep(1000);

    /* During the outage: 3 calls wait; one with a 100 ms timeout gives up; fail-fast fails. */
    for (int i = 0; i < 3; i++)
        CHECK_EQ(crpc_client_call(c, &call, on_end, NULL, NULL), 0);
    crpc_call brief = call;
    brief.timeout_us = 100000;
    CHECK_EQ(crpc_client_call(c, &brief, on_end, NULL, NULL), 0);
    CHECK_EQ(crpc_client_call(fast, &call, on_end, NULL, NULL), -ENOTCONN);
    wait_for(&timedout, 1, 2000);
    CHECK_EQ(atomic_load(&timedout), 1);
    CHECK_EQ(crpc_client_pending_count(c), 3);
    CHECK(!crpc_client_is_connected(c));
    usleep(300000); /* several failed attempts, backing off */

    /* The server is back on the same port: the client reconnects and the 3 calls go out. */
    atomic_store(&hold_requests, 0);
    srv = start_server(port);
    wait_for(&ok, 4, 5000);
    CHECK_EQ(atomic_load(&ok), 4);
    CHECK(crpc_client_is_connected(c));
    CHECK_EQ(crpc_client_pending_count(c), 0);
    CHECK_EQ(atomic_load(&other), 0);
    /* The fail-fast client reconnected too and works again. */
    for (int i = 0; i < 3000 && !crpc_client_is_connected(fast); i++)
        usleep(1000);
    CHECK_EQ(crpc_client_call(fast, &call, on_end, NULL, NULL), 0);
    wait_for(&ok, 5, 2000);
    CHECK_EQ(atomic_load(&ok), 5);
    printf("reconnect: 5 calls lost with the connection, 3 waited and were answered, 1 timed out\n");

    crpc_client_destroy(fast);

    /* 5. The loop stops while the client is reconnecting: the call waiting for the new
     * connection ends (-ESHUTDOWN) instead of hanging, and the reconnecting thread quits. */
    crpc_server_destroy(srv);
    for (int i = 0; i < 2000 && crpc_client_is_connected(c); i++)
        usleep(1000);
    int others_before = atomic_load(&other);
    CHECK_EQ(crpc_client_call(c, &call, on_end, NULL, NULL), 0);
    usleep(50000);
    CHECK_EQ(crpc_client_pending_count(c), 1);
    CHECK_EQ(crpc_loop_stop(loop), 0);
    CHECK_EQ(atomic_load(&other), others_before + 1); /* ended, with -ESHUTDOWN */
    crpc_client_destroy(c);
    crpc_loop_destroy(loop); /* waits for the reconnecting thread */
    printf("reconnect: a loop stopping mid-reconnect ends the waiting call\n");
    printf("PASS test_reconnect\n");
    return 0;
}
