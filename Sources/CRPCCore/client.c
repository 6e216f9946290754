/*
 * client.c — the RPC client: one connection on one loop, calls keyed by msgid. This file
 * is the handle: connecting, its connection's ops, closing; client_calls.c has the calls and
 * client_reconnect.c the reconnecting (client.h draws the split).
 *
 * A call made on the loop's own thread (typically from a completion callback, which is
 * how closed-loop callers keep a connection busy) is encoded straight into the
 * connection's output and coalesced with everything else of this iteration. A call from
 * any other thread is encoded on that thread with a placeholder msgid and handed over as
 * a task; the loop picks the msgid, patches it in and appends the frame.
 *
 * Every call that crpc_client_call accepted ends exactly once: its reply, a cancel, or
 * the connection closing (all pending calls fail at once), and its table entry goes
 * with it. Msgids follow the call ids (mod 2^32) and skip ids still in flight.
 *
 * Lifetime: the handle is reference counted, one reference for the user (dropped by
 * crpc_client_destroy, on the loop thread, after every task queued before it), one for the
 * connection (dropped when its slot is released) and one for a reconnecting thread.
 */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envelope.h"
#include "net.h"
#include "tls.h"

void client_unref(crpc_client *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        crpc_pending_free(&c->pending);
        crpc_buf_free(&c->backlog);
        crpc_tls_free(c->fresh_tls);
        crpc_tls_context_release(c->cfg.tls);
        free(c->server_name);
        free(c->host);
        free(c);
    }
}

void client_complete_why(crpc_call_fn cb, void *ctx, int status, uint32_t msgid, const char *why)
{
    crpc_result r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.msgid = msgid;
    if (why && *why) {
        r.error_msg = why;
        r.error_msg_len = (uint32_t)strlen(why);
    }
    cb(ctx, &r);
}

void client_complete(crpc_call_fn cb, void *ctx, int status, uint32_t msgid)
{
    client_complete_why(cb, ctx, status, msgid, NULL);
}

/* ----------------------------------------------------------- connection ops */

static void client_on_frame(crpc_conn *conn, const uint8_t *body, uint32_t len)
{
    crpc_client *c = conn->owner;
    c->heard_back = true;
    crpc_message m;
    int err = crpc_envelope_decode(conn->loop->dec, body, len, &m);
    if (err == -EBADMSG || err == -ENOMEM) {
        crpc_conn_close(conn, -EBADMSG);
        return;
    }
    if (m.type == CRPC_MSG_ELEMENT || m.type == CRPC_MSG_CREDIT) {
        client_stream_frame(c, &m, len, err);
        return;
    }
    if (m.type != CRPC_MSG_RESPONSE)
        return; /* servers do not call clients in protocol v1 */
    crpc_pending p;
    if (!crpc_pending_take(&c->pending, m.msgid, &p)) {
        atomic_fetch_add_explicit(&c->late_replies, 1, memory_order_relaxed);
        return;
    }
    atomic_store_explicit(&c->pending_count, c->pending.count, memory_order_relaxed);
    crpc_result r;
    memset(&r, 0, sizeof(r));
    r.msgid = m.msgid;
    if (err) {
        /* The reply names its call but does not decode: the call still ends, once. */
        r.error_code = CRPC_STATUS_INTERNAL;
        r.error_msg = "malformed response";
        r.error_msg_len = (uint32_t)strlen(r.error_msg);
    } else {
        r.error_code = m.error_code;
        r.error_msg = m.error_msg;
        r.error_msg_len = m.error_msg_len;
        r.result = m.body;
        r.result_len = m.body_len;
        r.message = &m;
        r.ext = m.ext;
        r.ext_count = m.ext_count;
    }
    p.cb(p.ctx, &r);
}

static void client_on_close(crpc_conn *conn, int err)
{
    crpc_client *c = conn->owner;
    c->conn = NULL;
    atomic_store(&c->connected, false);
    crpc_loop_unwatch_deadline(conn->loop, &c->deadlines);
    /* A TLS failure says why (the filter's reason); the connection still ends the calls. */
    const char *why = conn->tls && conn->tls->reason[0] ? conn->tls->reason : NULL;
    /* The server refused our certificate before answering anything: reconnecting would be
     * refused again (every 50 ms, for ever). Not transient: give up, saying why. */
    bool refused = why && conn->tls->refused && !c->heard_back;
    if (refused) {
        snprintf(c->failure, sizeof(c->failure), "%s", why);
        atomic_store_explicit(&c->failed_for_good, true, memory_order_release);
    }
    /* Reconnecting starts before the failed calls' callbacks run, so a retry made in one of
     * them already waits for the new connection. */
    if (c->cfg.reconnect && !refused && err != -ESHUTDOWN && !atomic_load(&c->user_closed) && !conn->loop->stopped)
        client_start_reconnect(c);
    int status = err == -ESHUTDOWN ? -ESHUTDOWN : why ? -ECONNABORTED : -ECONNRESET;
    /* Detach the table first: callbacks may call back into the client. */
    crpc_pending_table t = c->pending;
    memset(&c->pending, 0, sizeof(c->pending));
    atomic_store(&c->pending_count, 0);
    for (uint32_t i = 0; t.slots && i <= t.mask; i++)
        if (t.slots[i].used)
            client_complete_why(t.slots[i].cb, t.slots[i].ctx, status, t.slots[i].msgid, why);
    crpc_pending_free(&t);
}

static void client_on_release(crpc_conn *conn) { client_unref(conn->owner); }

const crpc_conn_ops client_conn_ops = {
    .on_frame = client_on_frame,
    .on_close = client_on_close,
    .on_release = client_on_release,
};

/* ---------------------------------------------------------------- connect */

/* Returns 0, or -ESHUTDOWN (the loop is stopping) / -ENOMEM (no memory for the
 * connection), having closed the socket and dropped the connection's reference. */
static int attach(crpc_loop *l, crpc_client *c)
{
    crpc_conn *conn = l->stopped ? NULL
                                 : crpc_conn_open(l, c->fd, &client_conn_ops, c, c->cfg.max_frame_size);
    if (!conn) {
        close(c->fd);
        crpc_tls_free(c->fresh_tls);
        c->fresh_tls = NULL;
        atomic_store(&c->connected, false);
        client_unref(c); /* the connection's reference */
        return l->stopped ? -ESHUTDOWN : -ENOMEM;
    }
    conn->tls = c->fresh_tls; /* before the loop reads from it: we are on its thread */
    c->fresh_tls = NULL;
    c->conn = conn;
    c->heard_back = false;
    if (c->cfg.heartbeat_ms)
        crpc_loop_watch_deadline(l, &c->deadlines, crpc_loop_now_ns(l) + (uint64_t)c->cfg.heartbeat_ms * 1000000u);
    return 0;
}

/* Off the loop thread the caller already has its client: a failure here leaves it closed
 * (calls fail with -ENOTCONN). */
static void run_attach(crpc_loop *l, crpc_task *t)
{
    (void)attach(l, ((client_task *)t)->client);
    free(t);
}

client_task *client_task_new(crpc_client *c, void (*run)(crpc_loop *, crpc_task *), const crpc_buf *frame)
{
    client_task *t = crpc_frame_task_new(sizeof(*t), run, frame);
    if (t)
        t->client = c;
    return t;
}

int client_dial(crpc_client *c)
{
    crpc_set_last_error("%s", "");
    uint64_t start = crpc_monotonic_ns();
    int fd = crpc_net_connect(c->host, c->port, c->cfg.connect_timeout_ms);
    if (fd < 0 || !c->cfg.tls)
        return fd;
    uint64_t spent_ms = (crpc_monotonic_ns() - start) / 1000000u;
    uint32_t left = spent_ms < c->cfg.connect_timeout_ms ? c->cfg.connect_timeout_ms - (uint32_t)spent_ms : 1;
    int err = 0;
    crpc_tls_conn *t = crpc_tls_client_handshake(c->cfg.tls, fd, c->server_name, left, &err);
    if (!t) {
        close(fd);
        return err;
    }
    crpc_tls_free(c->fresh_tls);
    c->fresh_tls = t;
    return fd;
}

/* The name a TLS client checks: the configured one, else the host (brackets off an IPv6
 * literal; "localhost" for a Unix socket, which has no name). */
static char *tls_server_name(const char *configured, const char *host)
{
    if (configured)
        return strdup(configured);
    if (crpc_net_is_unix(host))
        return strdup("localhost");
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
        return strndup(host + 1, n - 2);
    return strdup(host);
}

int crpc_client_connect(crpc_loop *loop, const char *host, uint16_t port,
                        const crpc_client_config *cfg, crpc_client **out)
{
    crpc_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    if (cfg)
        c->cfg = *cfg;
    if (!c->cfg.connect_timeout_ms)
        c->cfg.connect_timeout_ms = 5000;
    if (!c->cfg.max_frame_size)
        c->cfg.max_frame_size = CRPC_DEFAULT_MAX_FRAME_SIZE;
    if (c->cfg.heartbeat_ms && !c->cfg.dead_after_ms)
        c->cfg.dead_after_ms = 3 * c->cfg.heartbeat_ms;
    c->loop = loop;
    c->deadlines.expire = client_expire_calls;
    c->host = strdup(host ? host : "127.0.0.1");
    c->port = port;
    if (!c->cfg.reconnect_min_ms)
        c->cfg.reconnect_min_ms = 50;
    if (!c->cfg.reconnect_max_ms)
        c->cfg.reconnect_max_ms = 5000;
    if (c->cfg.tls && c->cfg.tls->server) {
        free(c->host);
        free(c);
        crpc_set_last_error("a server TLS context cannot make client connections");
        return -EINVAL;
    }
    if (c->cfg.tls) {
        atomic_fetch_add(&c->cfg.tls->refs, 1);
        c->server_name = c->host ? tls_server_name(cfg->server_name, c->host) : NULL;
        c->cfg.server_name = NULL; /* c->server_name is the copy in force */
    }
    int fd = c->host && (!c->cfg.tls || c->server_name) ? client_dial(c) : -ENOMEM;
    if (fd < 0) {
        crpc_tls_context_release(c->cfg.tls);
        free(c->server_name);
        free(c->host);
        free(c);
        return fd;
    }
    c->fd = fd;
    atomic_init(&c->refs, 2);
    atomic_init(&c->connected, true);
    if (crpc_loop_current() == loop) {
        int err = attach(loop, c);
        if (err) {
            client_unref(c); /* the caller's reference: it never gets the client */
            return err;
        }
    } else {
        client_task *t = client_task_new(c, run_attach, NULL);
        int err = t ? crpc_loop_push(loop, &t->handoff.task) : -ENOMEM;
        if (err) {
            free(t);
            close(fd);
            crpc_tls_free(c->fresh_tls);
            crpc_tls_context_release(c->cfg.tls);
            free(c->server_name);
            free(c->host);
            free(c);
            return err;
        }
    }
    *out = c;
    return 0;
}

/* ------------------------------------------------------------------ close */

/* The user closes: the server is told which calls were given up, a cancel frame each (as
 * for a timeout), so their handlers stop now. A server keeps running what a client sent
 * before its end of input, for up to its drain time, since a half-close and a close look
 * the same to it. The calls end here with -ESHUTDOWN (client_on_close). */
static void close_here(crpc_client *c)
{
    if (!c->conn) {
        client_end_waiting_calls(c, -ESHUTDOWN, NULL);
        return;
    }
    crpc_buf *out = crpc_conn_out(c->conn);
    for (uint32_t i = 0; c->pending.slots && i <= c->pending.mask; i++)
        if (c->pending.slots[i].used && crpc_encode_cancel(out, c->pending.slots[i].msgid))
            break; /* out of memory: the server's drain time ends those handlers */
    crpc_conn_close(c->conn, -ESHUTDOWN);
}

static void run_close(crpc_loop *l, crpc_task *t)
{
    (void)l;
    close_here(((client_task *)t)->client);
    free(t);
}

static void run_release(crpc_loop *l, crpc_task *t)
{
    (void)l;
    client_unref(((client_task *)t)->client);
    free(t);
}

void crpc_client_close(crpc_client *c)
{
    if (!c || atomic_exchange(&c->user_closed, true))
        return;
    /* From now on calls fail at once with -ENOTCONN, on the caller's thread. */
    atomic_store(&c->connected, false);
    if (crpc_loop_current() == c->loop) {
        close_here(c);
        return;
    }
    client_task *t = client_task_new(c, run_close, NULL);
    if (t && crpc_loop_push(c->loop, &t->handoff.task) == 0)
        return;
    free(t); /* the loop has exited: its stop closed the connection already */
}

void crpc_client_destroy(crpc_client *c)
{
    if (!c)
        return;
    crpc_client_close(c);
    /* The user's reference is dropped by a task queued after everything already queued for
     * this client (calls, the close), even on the loop thread, so none of those tasks can
     * find the handle freed. */
    client_task *t = client_task_new(c, run_release, NULL);
    if (t && crpc_loop_push(c->loop, &t->handoff.task) == 0)
        return;
    free(t);
    /* The loop is exiting: once its thread is gone, nothing can touch the handle. */
    while (atomic_load(&c->loop->state) == 1 && crpc_loop_current() != c->loop)
        usleep(1000);
    client_unref(c);
}

int crpc_client_is_connected(const crpc_client *c) { return atomic_load(&c->connected); }

unsigned crpc_client_pending_count(const crpc_client *c) { return atomic_load(&c->pending_count); }

void crpc_client_get_stats(const crpc_client *c, crpc_client_stats *out)
{
    out->pending = atomic_load_explicit(&c->pending_count, memory_order_relaxed);
    out->late_replies = atomic_load_explicit(&c->late_replies, memory_order_relaxed);
    out->timeouts = atomic_load_explicit(&c->timeouts, memory_order_relaxed);
    out->reconnects = atomic_load_explicit(&c->reconnects, memory_order_relaxed);
}
