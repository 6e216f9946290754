/*
 * test_shutdown.c — graceful shutdown:
 *   1. in-flight requests are answered before the server closes; requests arriving
 *      during the drain get status 14; the drain returns 0;
 *   2. with handlers that never answer, the drain deadline cuts them off (-ETIMEDOUT)
 *      and the callers' calls fail with -ECONNRESET.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"

#define HELD 20

static crpc_server *srv;
static atomic_int held;
static crpc_conn_id held_conn[HELD];
static uint32_t held_msgid[HELD];
static atomic_bool answer_held;

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    int i = atomic_fetch_add(&held, 1);
    if (i < HELD) {
        held_conn[i] = req->conn;
        held_msgid[i] = req->msg.msgid;
    }
}

static void on_end(void *ctx, const crpc_result *res);
static crpc_client *client;
static atomic_int ok, unavailable, reset, other;
static atomic_bool shutting_down; /* set by main right before crpc_server_shutdown */

/* Once the drain has begun (main's flag, then 50 ms for crpc_server_shutdown to mark the
 * server draining), sends one more call (refused with 14); once that refusal is in,
 * answers the held requests, if this round answers them at all. */
static void *answerer(void *arg)
{
    (void)arg;
    while (!atomic_load(&shutting_down))
        usleep(1000);
    usleep(50000);
    crpc_call call = {.method = "Test.Late", .method_len = 9};
    CHECK_EQ(crpc_client_call(client, &call, on_end, NULL, NULL), 0);
    if (!atomic_load(&answer_held))
        return NULL;
    /* The refusal must reach the caller before the drain ends and closes the connection. */
    for (int i = 0; i < 3000 && atomic_load(&unavailable) < 1; i++)
        usleep(1000);
    for (int i = 0; i < HELD; i++) {
        crpc_reply r = {0};
        crpc_server_reply(srv, held_conn[i], held_msgid[i], &r);
    }
    return NULL;
}

static void on_end(void *ctx, const crpc_result *res)
{
    (void)ctx;
    if (res->status == 0 && res->error_code == 0)
        atomic_fetch_add(&ok, 1);
    else if (res->status == 0 && res->error_code == CRPC_STATUS_UNAVAILABLE)
        atomic_fetch_add(&unavailable, 1);
    else if (res->status == -ECONNRESET)
        atomic_fetch_add(&reset, 1);
    else
        atomic_fetch_add(&other, 1);
}

static void wait_for(atomic_int *v, int n)
{
    for (int i = 0; i < 3000 && atomic_load(v) < n; i++)
        usleep(1000);
}

static void round_trip(bool answer, uint32_t drain_ms, int want_rc)
{
    atomic_store(&held, 0);
    atomic_store(&ok, 0);
    atomic_store(&unavailable, 0);
    atomic_store(&reset, 0);
    atomic_store(&answer_held, answer);
    atomic_store(&shutting_down, false);
    crpc_server_config cfg = {.loops = 2, .on_request = on_request};
    int err = crpc_server_start(&cfg, &srv);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), 0);
    crpc_client *c;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", crpc_server_port(srv), NULL, &c), 0);
    client = c;
    crpc_call call = {.method = "Test.Work", .method_len = 9};
    for (int i = 0; i < HELD; i++)
        CHECK_EQ(crpc_client_call(c, &call, on_end, NULL, NULL), 0);
    wait_for(&held, HELD);
    CHECK_EQ(crpc_server_inflight(srv), HELD);

    pthread_t t;
    pthread_create(&t, NULL, answerer, NULL);
    atomic_store(&shutting_down, true);
    int rc = crpc_server_shutdown(srv, drain_ms);
    pthread_join(t, NULL);
    CHECK_EQ(rc, want_rc);
    wait_for(answer ? &ok : &reset, HELD);
    wait_for(&unavailable, 1);
    CHECK_EQ(atomic_load(&unavailable), 1); /* the call made during the drain */
    CHECK_EQ(atomic_load(&other), 0);
    if (answer) {
        CHECK_EQ(atomic_load(&ok), HELD);
    } else {
        CHECK_EQ(atomic_load(&reset), HELD);
    }
    crpc_client_destroy(c);
    CHECK_EQ(crpc_loop_stop(loop), 0);
    crpc_loop_destroy(loop);
    crpc_server_destroy(srv);
}

int main(void)
{
    round_trip(true, 3000, 0);
    printf("shutdown: %d in-flight calls answered during the drain\n", HELD);
    round_trip(false, 1000, -ETIMEDOUT);
    printf("shutdown: the drain deadline cut %d unanswered calls off\n", HELD);
    printf("PASS test_shutdown\n");
    return 0;
}
