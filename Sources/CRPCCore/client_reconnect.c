/*
 * client_reconnect.c — keeping a client's connection: heartbeats that find a silent peer,
 * and, once the connection is lost, a thread that re-makes it with jittered, capped
 * exponential backoff, for ever, while calls made meanwhile wait in the backlog (each up
 * to its timeout) or fail at once (fail_fast).
 */
#include "client.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#include "envelope.h"
#include "net.h"
#include "tls.h"

static void ping_done(void *ctx, const crpc_result *res)
{
    (void)res;
    ((crpc_client *)ctx)->ping_outstanding = false;
}

/* Heartbeats: after heartbeat_ms without a byte from the server, send rpc.ping; after
 * dead_after_ms, give the peer up (pending calls end at once). Returns when to look
 * again (0: heartbeats off or the connection has gone). */
uint64_t client_heartbeat(crpc_client *c, uint64_t now)
{
    if (!c->cfg.heartbeat_ms || !c->conn)
        return 0;
    uint64_t interval = (uint64_t)c->cfg.heartbeat_ms * 1000000u;
    uint64_t dead_after = (uint64_t)c->cfg.dead_after_ms * 1000000u;
    uint64_t last = c->conn->last_rx_ns;
    if (now - last >= dead_after) {
        crpc_conn_close(c->conn, -ETIMEDOUT);
        return 0;
    }
    if (now - last >= interval && !c->ping_outstanding) {
        crpc_call ping = {.method = "rpc.ping", .method_len = 8};
        uint64_t token = atomic_fetch_add_explicit(&c->next_token, 1, memory_order_relaxed);
        c->ping_outstanding = client_enqueue_call(c, token, ping_done, c, &ping, NULL, 0, 0, NULL) == 0;
    }
    return c->ping_outstanding || now - last >= interval ? last + dead_after : last + interval;
}

/* -------------------------------------------------------------- reconnect */

typedef struct reattach_task {
    crpc_task task;
    crpc_client *client;
    int fd;                 /* -1: reconnecting gave up for good (c->failure says why) */
    crpc_tls_conn *tls;     /* the new connection's TLS session, if any */
} reattach_task;

/* The new connection replaces the lost one; calls that waited for it are sent (those that
 * timed out meanwhile are skipped: their frames no longer match a pending call). */
static void run_reattach(crpc_loop *l, crpc_task *t)
{
    reattach_task *rt = (reattach_task *)t;
    crpc_client *c = rt->client;
    int fd = rt->fd;
    crpc_tls_conn *tls = rt->tls;
    free(rt);
    if (fd < 0) {
        /* Not transient (the server's certificate does not verify): the waiting calls end
         * with why, later ones fail at once. */
        atomic_store(&c->reconnecting, false);
        client_end_waiting_calls(c, -EKEYREJECTED, c->failure);
        client_unref(c);
        return;
    }
    if (atomic_load(&c->user_closed) || l->stopped) {
        close(fd);
        crpc_tls_free(tls);
        atomic_store(&c->reconnecting, false);
        client_unref(c);
        return;
    }
    atomic_fetch_add(&c->refs, 1); /* the new connection's reference */
    crpc_conn *conn = crpc_conn_open(l, fd, &client_conn_ops, c, c->cfg.max_frame_size);
    if (!conn) {
        close(fd);
        crpc_tls_free(tls);
        atomic_fetch_sub(&c->refs, 1);
        client_start_reconnect(c); /* out of memory or slots: try again later */
        client_unref(c);
        return;
    }
    conn->tls = tls;
    c->conn = conn;
    c->heard_back = false;
    crpc_loop_remove_stop_hook(l, &c->stop_hook);
    atomic_store(&c->connected, true);
    atomic_store(&c->reconnecting, false);
    atomic_fetch_add_explicit(&c->reconnects, 1, memory_order_relaxed);
    crpc_buf *out = crpc_conn_out(conn);
    /* The backlog holds whole request frames this client encoded itself. */
    uint32_t body_len;
    long len;
    for (size_t off = 0;
         (len = crpc_frame_parse(c->backlog.data + off, c->backlog.len - off, c->cfg.max_frame_size, &body_len)) > 0;
         off += (size_t)len) {
        const uint8_t *f = c->backlog.data + off;
        if (crpc_pending_find(&c->pending, crpc_request_msgid(f)) && crpc_buf_append(out, f, (size_t)len))
            break; /* out of memory: the call will time out or end with the connection */
    }
    c->backlog.len = 0;
    crpc_buf_trim(&c->backlog, 64 * 1024);
    crpc_conn_mark_dirty(conn);
    if (c->cfg.heartbeat_ms)
        crpc_loop_watch_deadline(l, &c->deadlines, crpc_loop_now_ns(l) + (uint64_t)c->cfg.heartbeat_ms * 1000000u);
    client_unref(c); /* the reconnecting thread's reference */
}

/* Runs on its own thread while the connection is down: connect (blocking, with the
 * connect timeout), back off with jitter, double the delay up to the cap, never give up
 * until the client is closed. */
static void *reconnect_main(void *arg)
{
    crpc_client *c = arg;
    crpc_loop *loop = c->loop; /* kept valid by loop->helpers until this thread ends */
    uint64_t delay = c->cfg.reconnect_min_ms;
    unsigned seed = (unsigned)(uintptr_t)c ^ (unsigned)crpc_monotonic_ns();
#define GIVE_UP() (atomic_load(&c->user_closed) || atomic_load(&loop->stop_requested))
    while (!GIVE_UP()) {
        /* Full jitter over the upper half: many clients of one dead server spread out. */
        uint64_t wait_ms = delay / 2 + (uint64_t)rand_r(&seed) % (delay / 2 + 1);
        for (uint64_t slept = 0; slept < wait_ms && !GIVE_UP(); slept += 10)
            usleep(10000);
        if (GIVE_UP())
            break;
        int fd = client_dial(c);
        if (fd == -EKEYREJECTED) { /* written once, then published: callers read it after */
            snprintf(c->failure, sizeof(c->failure), "%s", crpc_last_error());
            atomic_store_explicit(&c->failed_for_good, true, memory_order_release);
        }
        if (fd >= 0 || fd == -EKEYREJECTED) {
            reattach_task *t = GIVE_UP() ? NULL : malloc(sizeof(*t));
            if (t) {
                t->task.run = run_reattach;
                t->client = c;
                t->fd = fd < 0 ? -1 : fd;
                t->tls = c->fresh_tls;
                c->fresh_tls = NULL;
                if (crpc_loop_push(loop, &t->task) == 0) {
                    atomic_fetch_sub(&loop->helpers, 1); /* run_reattach drops our reference */
                    return NULL;
                }
                crpc_tls_free(t->tls);
                free(t);
            }
            if (fd >= 0)
                close(fd);
            break;
        }
        delay = delay * 2 > c->cfg.reconnect_max_ms ? c->cfg.reconnect_max_ms : delay * 2;
    }
#undef GIVE_UP
    atomic_store(&c->reconnecting, false);
    client_unref(c);
    atomic_fetch_sub(&loop->helpers, 1); /* last: the loop may be destroyed from here on */
    return NULL;
}

static void on_loop_stop(crpc_stop_hook *hook)
{
    client_end_waiting_calls((crpc_client *)((char *)hook - offsetof(crpc_client, stop_hook)), -ESHUTDOWN, NULL);
}

void client_start_reconnect(crpc_client *c)
{
    atomic_store(&c->reconnecting, true);
    c->stop_hook.on_stop = on_loop_stop;
    crpc_loop_add_stop_hook(c->loop, &c->stop_hook);
    atomic_fetch_add(&c->refs, 1);        /* the reconnecting thread's */
    atomic_fetch_add(&c->loop->helpers, 1);
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attr, reconnect_main, c) != 0) {
        atomic_store(&c->reconnecting, false);
        atomic_fetch_sub(&c->refs, 1);
        atomic_fetch_sub(&c->loop->helpers, 1);
    }
    pthread_attr_destroy(&attr);
}

/* ----------------------------------------------------- waiting calls end */

/* Reconnecting, with no connection to close: the calls waiting in the backlog end now. */
void client_end_waiting_calls(crpc_client *c, int status, const char *why)
{
    crpc_loop_remove_stop_hook(c->loop, &c->stop_hook);
    crpc_loop_unwatch_deadline(c->loop, &c->deadlines);
    crpc_pending_table t = c->pending;
    memset(&c->pending, 0, sizeof(c->pending));
    atomic_store(&c->pending_count, 0);
    c->backlog.len = 0;
    for (uint32_t i = 0; t.slots && i <= t.mask; i++)
        if (t.slots[i].used)
            client_complete_why(t.slots[i].cb, t.slots[i].ctx, status, t.slots[i].msgid, why);
    crpc_pending_free(&t);
}

