/*
 * test_timeouts.c — call deadlines on the client:
 *   1. a call with a timeout that gets no reply ends with -ETIMEDOUT, once, close to its
 *      deadline, and its table slot is freed at once;
 *   2. the server is sent a cancel frame for each timed-out call;
 *   3. a reply arriving after the timeout is dropped and counted as late;
 *   4. calls with and without timeouts mixed: only the overdue ones time out.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"

#define HELD 50

static crpc_server *srv;
static atomic_int held, cancels;
static crpc_conn_id held_conn[HELD];
static uint32_t held_msgid[HELD];

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type == CRPC_MSG_CANCEL) {
        atomic_fetch_add(&cancels, 1);
        return;
    }
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    if (req->msg.method_len == 9 && memcmp(req->msg.method, "Test.Hold", 9) == 0) {
        int i = atomic_fetch_add(&held, 1);
        if (i < HELD) {
            held_conn[i] = req->conn;
            held_msgid[i] = req->msg.msgid;
        }
        return; /* answered later, too late */
    }
    crpc_reply r = {0};
    CHECK_EQ(crpc_server_reply(srv, req->conn, req->msg.msgid, &r), 0);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static atomic_int timed_out, other, fast_ok;
static _Atomic uint64_t last_end_ms;

static void on_held(void *ctx, const crpc_result *res)
{
    (void)ctx;
    if (res->status == -ETIMEDOUT)
        atomic_fetch_add(&timed_out, 1);
    else
        atomic_fetch_add(&other, 1);
    atomic_store(&last_end_ms, now_ms());
}

static void on_fast(void *ctx, const crpc_result *res)
{
    (void)ctx;
    if (res->status == 0 && res->error_code == 0)
        atomic_fetch_add(&fast_ok, 1);
    else
        atomic_fetch_add(&other, 1);
}

/* A cancel made on the loop thread while the call's hand-over (from another thread) is
 * still queued behind it: the call ends cancelled, once, and is never sent. */
static crpc_client *early_client;
static sem_t early_go;
static _Atomic uint64_t early_id;
static atomic_int early_cancel_rc = 1, early_status = 1, early_ends;

static void cancel_on_loop(void *arg)
{
    (void)arg;
    sem_wait(&early_go); /* holds the loop until the call below is queued behind us */
    atomic_store(&early_cancel_rc, crpc_client_cancel(early_client, atomic_load(&early_id)));
}

static void on_early(void *ctx, const crpc_result *res)
{
    (void)ctx;
    atomic_store(&early_status, res->status);
    atomic_fetch_add(&early_ends, 1);
}

static void wait_for(atomic_int *v, int n, int ms)
{
    for (int i = 0; i < ms && atomic_load(v) < n; i++)
        usleep(1000);
}

int main(void)
{
    crpc_server_config cfg = {.loops = 1, .on_request = on_request};
    int err = crpc_server_start(&cfg, &srv);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), 0);
    crpc_client *c;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", crpc_server_port(srv), NULL, &c), 0);

    /* Held calls with a 1 s timeout, interleaved with quick calls that have none (the
     * quick ones must all be answered well within that second, even under sanitizers). */
    uint64_t start = now_ms();
    crpc_call hold = {.method = "Test.Hold", .method_len = 9, .timeout_us = 1000000};
    crpc_call fast = {.method = "Test.Fast", .method_len = 9};
    for (int i = 0; i < HELD; i++) {
        CHECK_EQ(crpc_client_call(c, &hold, on_held, NULL, NULL), 0);
        CHECK_EQ(crpc_client_call(c, &fast, on_fast, NULL, NULL), 0);
    }
    wait_for(&fast_ok, HELD, 2000);
    CHECK_EQ(atomic_load(&fast_ok), HELD);
    CHECK_EQ(crpc_client_pending_count(c), HELD); /* the held ones are still waiting */
    wait_for(&timed_out, HELD, 4000);
    uint64_t took = atomic_load(&last_end_ms) - start;
    CHECK_EQ(atomic_load(&timed_out), HELD);
    CHECK_EQ(atomic_load(&other), 0);
    CHECK(took >= 1000 && took < 3000);
    CHECK_EQ(crpc_client_pending_count(c), 0); /* slots freed at once */
    printf("timeouts: %d calls ended with -ETIMEDOUT after %llu ms\n", HELD, (unsigned long long)took);

    /* The server heard about each of them. */
    wait_for(&cancels, HELD, 2000);
    CHECK_EQ(atomic_load(&cancels), HELD);

    /* The server answers anyway: every reply is late, dropped and counted. */
    CHECK_EQ(atomic_load(&held), HELD);
    for (int i = 0; i < HELD; i++) {
        crpc_reply r = {0};
        CHECK_EQ(crpc_server_reply(srv, held_conn[i], held_msgid[i], &r), 0);
    }
    crpc_client_stats st;
    for (int i = 0; i < 2000; i++) {
        crpc_client_get_stats(c, &st);
        if (st.late_replies == HELD)
            break;
        usleep(1000);
    }
    CHECK_EQ(st.late_replies, HELD);
    CHECK_EQ(st.timeouts, HELD);
    usleep(50000);
    CHECK_EQ(atomic_load(&timed_out) + atomic_load(&other), HELD); /* nothing ended twice */

    /* Early cancel: see cancel_on_loop. */
    early_client = c;
    sem_init(&early_go, 0, 0);
    CHECK_EQ(crpc_loop_post(loop, cancel_on_loop, NULL), 0);
    uint64_t id = 0;
    int cancels_before = atomic_load(&cancels);
    CHECK_EQ(crpc_client_call(c, &fast, on_early, NULL, &id), 0);
    atomic_store(&early_id, id);
    sem_post(&early_go);
    wait_for(&early_ends, 1, 2000);
    CHECK_EQ(atomic_load(&early_cancel_rc), 0);
    CHECK_EQ(atomic_load(&early_status), -ECANCELED);
    usleep(50000);
    CHECK_EQ(atomic_load(&early_ends), 1);
    CHECK_EQ(atomic_load(&cancels), cancels_before); /* never sent, so nothing to cancel */
    CHECK_EQ(crpc_client_pending_count(c), 0);
    printf("timeouts: a call cancelled before it reached the loop ended once, cancelled, unsent\n");

    crpc_client_destroy(c);
    CHECK_EQ(crpc_loop_stop(loop), 0);
    crpc_loop_destroy(loop);
    crpc_server_destroy(srv);
    printf("PASS test_timeouts\n");
    return 0;
}
