/*
 * client.c — the RPC client: one connection on one loop, calls keyed by msgid.
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
#include "core.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include "envelope.h"
#include "net.h"
#include "pending.h"

#define EARLY_CANCELS 16

struct crpc_client {
    crpc_loop *loop;
    crpc_client_config cfg;
    atomic_int refs;
    atomic_bool connected;
    atomic_uint pending_count;    /* snapshot for other threads */
    atomic_uint_fast64_t next_token;
    int fd;                       /* until attached to the loop */

    atomic_bool user_closed;      /* crpc_client_close was called */
    atomic_bool reconnecting;     /* the connection is down and being re-made */
    char *host;                   /* for reconnecting */
    uint16_t port;
    atomic_ulong late_replies;    /* replies whose call had already ended */
    atomic_ulong timeouts;        /* calls ended by their deadline */
    atomic_uint calls_in_transit; /* calls pushed to the loop's queue, not yet taken */
    atomic_ulong reconnects;      /* lost connections re-made */

    /* ---- loop thread only ---- */
    crpc_conn *conn;              /* NULL once the connection has started closing */
    crpc_pending_table pending;
    crpc_deadline_source deadlines; /* call deadlines and heartbeats */
    crpc_buf backlog;               /* frames of calls made while reconnecting */
    crpc_stop_hook stop_hook;       /* while reconnecting: the loop stopping ends the calls */
    bool ping_outstanding;          /* a heartbeat rpc.ping awaits its reply */
    /* Cancels that arrived (on the loop thread) before their call's hand-over task: the
     * call ends cancelled when that task runs. Emptied whenever no call is in transit. */
    uint64_t early_cancels[EARLY_CANCELS];
    unsigned early_cancel_count;
};

static crpc_client *client_of_deadlines(crpc_deadline_source *src)
{
    return (crpc_client *)((char *)src - offsetof(crpc_client, deadlines));
}

static void client_unref(crpc_client *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        crpc_pending_free(&c->pending);
        crpc_buf_free(&c->backlog);
        free(c->host);
        free(c);
    }
}

static void start_reconnect(crpc_client *c);
static void end_waiting_calls(crpc_client *c);

static void complete(crpc_call_fn cb, void *ctx, int status, uint32_t msgid)
{
    crpc_result r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.msgid = msgid;
    cb(ctx, &r);
}

/* ----------------------------------------------------------- connection ops */

static void client_on_frame(crpc_conn *conn, const uint8_t *body, uint32_t len)
{
    crpc_client *c = conn->owner;
    crpc_message m;
    int err = crpc_envelope_decode(conn->loop->dec, body, len, &m);
    if (err == -EBADMSG || err == -ENOMEM) {
        crpc_conn_close(conn, -EBADMSG);
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
    /* Reconnecting starts before the failed calls' callbacks run, so a retry made in one of
     * them already waits for the new connection. */
    if (c->cfg.reconnect && err != -ESHUTDOWN && !atomic_load(&c->user_closed) && !conn->loop->stopped)
        start_reconnect(c);
    int status = err == -ESHUTDOWN ? -ESHUTDOWN : -ECONNRESET;
    /* Detach the table first: callbacks may call back into the client. */
    crpc_pending_table t = c->pending;
    memset(&c->pending, 0, sizeof(c->pending));
    atomic_store(&c->pending_count, 0);
    for (uint32_t i = 0; t.slots && i <= t.mask; i++)
        if (t.slots[i].used)
            complete(t.slots[i].cb, t.slots[i].ctx, status, t.slots[i].msgid);
    crpc_pending_free(&t);
}

static void client_on_release(crpc_conn *conn) { client_unref(conn->owner); }

static const crpc_conn_ops client_conn_ops = {
    .on_frame = client_on_frame,
    .on_close = client_on_close,
    .on_release = client_on_release,
};

/* -------------------------------------------------------------- deadlines */

static int enqueue_call(crpc_client *c, uint64_t token, crpc_call_fn cb, void *ctx,
                        const crpc_call *call, const uint8_t *frame, uint32_t len,
                        uint64_t deadline);

static void ping_done(void *ctx, const crpc_result *res)
{
    (void)res;
    ((crpc_client *)ctx)->ping_outstanding = false;
}

/* Heartbeats: after heartbeat_ms without a byte from the server, send rpc.ping; after
 * dead_after_ms, give the peer up (pending calls end at once). Returns when to look
 * again (0: heartbeats off or the connection has gone). */
static uint64_t heartbeat(crpc_client *c, uint64_t now)
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
        c->ping_outstanding = enqueue_call(c, token, ping_done, c, &ping, NULL, 0, 0) == 0;
    }
    return c->ping_outstanding || now - last >= interval ? last + dead_after : last + interval;
}

/* Ends every call whose deadline has passed (-ETIMEDOUT, a cancel frame to the server),
 * runs the heartbeat, then finds the next time to look. The table is scanned rather than
 * kept in deadline order: this runs only when the earliest recorded deadline passes, and
 * that bound is kept tight. */
static void expire_calls(crpc_deadline_source *src, uint64_t now)
{
    crpc_client *c = client_of_deadlines(src);
    crpc_loop *loop = c->loop;
    for (;;) {
        uint32_t due[64], n = 0;
        for (uint32_t i = 0; c->pending.slots && i <= c->pending.mask && n < 64; i++) {
            const crpc_pending *p = &c->pending.slots[i];
            if (p->used && p->deadline && p->deadline <= now)
                due[n++] = p->msgid;
        }
        if (n == 0)
            break;
        for (uint32_t i = 0; i < n; i++) { /* callbacks may change the table: take by id */
            crpc_pending p;
            if (!crpc_pending_take(&c->pending, due[i], &p))
                continue;
            atomic_fetch_add_explicit(&c->timeouts, 1, memory_order_relaxed);
            atomic_store_explicit(&c->pending_count, c->pending.count, memory_order_relaxed);
            if (c->conn && crpc_encode_cancel(crpc_conn_out(c->conn), p.msgid) == 0)
                crpc_conn_mark_dirty(c->conn);
            complete(p.cb, p.ctx, -ETIMEDOUT, p.msgid);
        }
    }
    uint64_t next = heartbeat(c, now);
    for (uint32_t i = 0; c->pending.slots && i <= c->pending.mask; i++) {
        const crpc_pending *p = &c->pending.slots[i];
        if (p->used && p->deadline && (!next || p->deadline < next))
            next = p->deadline;
    }
    if (next)
        src->next_deadline = next;
    else
        crpc_loop_unwatch_deadline(loop, src);
}

/* ---------------------------------------------------------------- connect */

/* Returns 0, or -ESHUTDOWN (the loop is stopping) / -ENOMEM (no memory for the
 * connection), having closed the socket and dropped the connection's reference. */
static int attach(crpc_loop *l, crpc_client *c)
{
    crpc_conn *conn = l->stopped ? NULL
                                 : crpc_conn_open(l, c->fd, &client_conn_ops, c, c->cfg.max_frame_size);
    if (!conn) {
        close(c->fd);
        atomic_store(&c->connected, false);
        client_unref(c); /* the connection's reference */
        return l->stopped ? -ESHUTDOWN : -ENOMEM;
    }
    c->conn = conn;
    if (c->cfg.heartbeat_ms)
        crpc_loop_watch_deadline(l, &c->deadlines, crpc_loop_now_ns(l) + (uint64_t)c->cfg.heartbeat_ms * 1000000u);
    return 0;
}

typedef struct client_task {
    crpc_task task;
    crpc_client *client;
    crpc_call_fn cb;
    void *ctx;
    uint64_t token;
    uint64_t deadline;
    uint32_t len;
    uint8_t frame[];
} client_task;

/* Off the loop thread the caller already has its client: a failure here leaves it closed
 * (calls fail with -ENOTCONN). */
static void run_attach(crpc_loop *l, crpc_task *t)
{
    (void)attach(l, ((client_task *)t)->client);
    free(t);
}

static client_task *task_new(crpc_client *c, void (*run)(crpc_loop *, crpc_task *),
                             const crpc_buf *frame)
{
    size_t n = frame ? frame->len : 0;
    client_task *t = malloc(sizeof(*t) + n);
    if (!t)
        return NULL;
    memset(t, 0, sizeof(*t));
    t->task.run = run;
    t->client = c;
    t->len = (uint32_t)n;
    if (n)
        memcpy(t->frame, frame->data, n);
    return t;
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
    c->deadlines.expire = expire_calls;
    c->host = strdup(host ? host : "127.0.0.1");
    c->port = port;
    if (!c->cfg.reconnect_min_ms)
        c->cfg.reconnect_min_ms = 50;
    if (!c->cfg.reconnect_max_ms)
        c->cfg.reconnect_max_ms = 5000;
    int fd = c->host ? crpc_net_connect(c->host, port, c->cfg.connect_timeout_ms) : -ENOMEM;
    if (fd < 0) {
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
        client_task *t = task_new(c, run_attach, NULL);
        int err = t ? crpc_loop_push(loop, &t->task) : -ENOMEM;
        if (err) {
            free(t);
            close(fd);
            free(c->host);
            free(c);
            return err;
        }
    }
    *out = c;
    return 0;
}

/* ------------------------------------------------------------------ calls */

/* The msgid for a call: its id mod 2^32, skipping ids still in flight. */
static uint32_t pick_msgid(crpc_client *c, uint64_t token)
{
    uint32_t id = (uint32_t)token;
    while (crpc_pending_find(&c->pending, id))
        id++;
    return id;
}

/* Registers the call and appends its frame (msgid patched in). Loop thread only. */
static int enqueue_call(crpc_client *c, uint64_t token, crpc_call_fn cb, void *ctx,
                        const crpc_call *call, const uint8_t *frame, uint32_t len,
                        uint64_t deadline)
{
    /* While reconnecting, the frame waits in the backlog (see reattach). */
    crpc_buf *out = c->conn ? crpc_conn_out(c->conn) : &c->backlog;
    size_t start = out->len;
    uint32_t msgid = pick_msgid(c, token);
    int err = frame ? crpc_buf_append(out, frame, len)
                    : crpc_encode_request(out, msgid, call, c->cfg.max_frame_size);
    if (err)
        return err;
    crpc_patch_request_msgid(out->data + start, msgid);
    crpc_pending p = {.token = token, .cb = cb, .ctx = ctx, .msgid = msgid, .deadline = deadline};
    err = crpc_pending_insert(&c->pending, &p);
    if (err) {
        out->len = start;
        return err;
    }
    if (deadline)
        crpc_loop_watch_deadline(c->loop, &c->deadlines, deadline);
    atomic_store_explicit(&c->pending_count, c->pending.count, memory_order_relaxed);
    if (c->conn)
        crpc_conn_mark_dirty(c->conn);
    return 0;
}

/* Whether a call can go out (now, or from the backlog once reconnected). */
static int can_send(crpc_client *c, crpc_loop *l)
{
    if (c->conn)
        return 0;
    if (l->stopped)
        return -ESHUTDOWN;
    if (atomic_load(&c->reconnecting) && !c->cfg.fail_fast && !atomic_load(&c->user_closed))
        return 0;
    return -ENOTCONN;
}

/* Whether `token` was cancelled before its call reached the loop (and forgets it). */
static bool take_early_cancel(crpc_client *c, uint64_t token)
{
    for (unsigned i = 0; i < c->early_cancel_count; i++) {
        if (c->early_cancels[i] == token) {
            c->early_cancels[i] = c->early_cancels[--c->early_cancel_count];
            return true;
        }
    }
    return false;
}

static void run_call(crpc_loop *l, crpc_task *t)
{
    client_task *ct = (client_task *)t;
    crpc_client *c = ct->client;
    bool cancelled = take_early_cancel(c, ct->token);
    if (atomic_fetch_sub(&c->calls_in_transit, 1) == 1)
        c->early_cancel_count = 0; /* no call left that a remaining entry could name */
    if (cancelled) {
        complete(ct->cb, ct->ctx, -ECANCELED, 0); /* never sent */
        free(ct);
        return;
    }
    int err = can_send(c, l);
    if (!err)
        err = enqueue_call(c, ct->token, ct->cb, ct->ctx, NULL, ct->frame, ct->len, ct->deadline);
    if (err)
        complete(ct->cb, ct->ctx, err, 0);
    free(ct);
}

int crpc_client_call(crpc_client *c, const crpc_call *call, crpc_call_fn cb, void *ctx,
                     uint64_t *call_id)
{
    if (!cb)
        return -EINVAL;
    if (!atomic_load_explicit(&c->connected, memory_order_relaxed) &&
        !(atomic_load(&c->reconnecting) && !c->cfg.fail_fast))
        return -ENOTCONN;
    uint64_t token = atomic_fetch_add_explicit(&c->next_token, 1, memory_order_relaxed);
    if (call_id)
        *call_id = token;
    /* The deadline counts from now, on the caller's clock, not from when the loop sees it. */
    uint64_t deadline = 0;
    if (call->timeout_us) /* saturating: a timeout of centuries must not wrap to "now" */
        deadline = call->timeout_us > (UINT64_MAX - crpc_monotonic_ns()) / 1000u
                       ? UINT64_MAX : crpc_monotonic_ns() + call->timeout_us * 1000u;
    if (crpc_loop_current() == c->loop) {
        int err = can_send(c, c->loop);
        return err ? err : enqueue_call(c, token, cb, ctx, call, NULL, 0, deadline);
    }
    crpc_buf *scratch = crpc_thread_scratch();
    if (!scratch)
        return -ENOMEM;
    int err = crpc_encode_request(scratch, 0, call, c->cfg.max_frame_size);
    if (err)
        return err;
    client_task *t = task_new(c, run_call, scratch);
    if (!t)
        return -ENOMEM;
    t->cb = cb;
    t->ctx = ctx;
    t->token = token;
    t->deadline = deadline;
    atomic_fetch_add(&c->calls_in_transit, 1);
    err = crpc_loop_push(c->loop, &t->task);
    if (err) {
        atomic_fetch_sub(&c->calls_in_transit, 1);
        free(t);
    }
    return err;
}

static void run_frame(crpc_loop *l, crpc_task *t)
{
    (void)l;
    client_task *ct = (client_task *)t;
    crpc_conn *conn = ct->client->conn;
    if (conn && crpc_buf_append(crpc_conn_out(conn), ct->frame, ct->len) == 0)
        crpc_conn_mark_dirty(conn);
    free(ct);
}

int crpc_client_notify(crpc_client *c, const crpc_call *call)
{
    if (!atomic_load_explicit(&c->connected, memory_order_relaxed))
        return -ENOTCONN;
    if (crpc_loop_current() == c->loop) {
        if (!c->conn)
            return -ENOTCONN;
        int err = crpc_encode_notification(crpc_conn_out(c->conn), call, c->cfg.max_frame_size);
        if (!err)
            crpc_conn_mark_dirty(c->conn);
        return err;
    }
    crpc_buf *scratch = crpc_thread_scratch();
    if (!scratch)
        return -ENOMEM;
    int err = crpc_encode_notification(scratch, call, c->cfg.max_frame_size);
    if (err)
        return err;
    client_task *t = task_new(c, run_frame, scratch);
    if (!t)
        return -ENOMEM;
    err = crpc_loop_push(c->loop, &t->task);
    if (err)
        free(t);
    return err;
}

/* ----------------------------------------------------------------- cancel */

static int cancel_here(crpc_client *c, uint64_t token)
{
    uint32_t msgid;
    crpc_pending p;
    if (!crpc_pending_find_token(&c->pending, token, &msgid) ||
        !crpc_pending_take(&c->pending, msgid, &p)) {
        /* Made on another thread and still in the loop's queue? Then it ends cancelled
         * when it is taken from there. */
        if (atomic_load(&c->calls_in_transit) > 0 && token < atomic_load(&c->next_token) &&
            c->early_cancel_count < EARLY_CANCELS) {
            c->early_cancels[c->early_cancel_count++] = token;
            return 0;
        }
        return -ENOENT;
    }
    atomic_store_explicit(&c->pending_count, c->pending.count, memory_order_relaxed);
    if (c->conn && crpc_encode_cancel(crpc_conn_out(c->conn), msgid) == 0)
        crpc_conn_mark_dirty(c->conn);
    complete(p.cb, p.ctx, -ECANCELED, msgid);
    return 0;
}

static void run_cancel(crpc_loop *l, crpc_task *t)
{
    (void)l;
    client_task *ct = (client_task *)t;
    cancel_here(ct->client, ct->token);
    free(ct);
}

int crpc_client_cancel(crpc_client *c, uint64_t call_id)
{
    if (crpc_loop_current() == c->loop)
        return cancel_here(c, call_id);
    client_task *t = task_new(c, run_cancel, NULL);
    if (!t)
        return -ENOMEM;
    t->token = call_id;
    int err = crpc_loop_push(c->loop, &t->task);
    if (err) {
        free(t);
        return err == -ESHUTDOWN ? -ENOENT : err; /* a stopped loop has ended every call */
    }
    return 0;
}

/* -------------------------------------------------------------- reconnect */

typedef struct reattach_task {
    crpc_task task;
    crpc_client *client;
    int fd;
} reattach_task;

/* The new connection replaces the lost one; calls that waited for it are sent (those that
 * timed out meanwhile are skipped: their frames no longer match a pending call). */
static void run_reattach(crpc_loop *l, crpc_task *t)
{
    reattach_task *rt = (reattach_task *)t;
    crpc_client *c = rt->client;
    int fd = rt->fd;
    free(rt);
    if (atomic_load(&c->user_closed) || l->stopped) {
        close(fd);
        atomic_store(&c->reconnecting, false);
        client_unref(c);
        return;
    }
    atomic_fetch_add(&c->refs, 1); /* the new connection's reference */
    crpc_conn *conn = crpc_conn_open(l, fd, &client_conn_ops, c, c->cfg.max_frame_size);
    if (!conn) {
        close(fd);
        atomic_fetch_sub(&c->refs, 1);
        start_reconnect(c); /* out of memory or slots: try again later */
        client_unref(c);
        return;
    }
    c->conn = conn;
    crpc_loop_remove_stop_hook(l, &c->stop_hook);
    atomic_store(&c->connected, true);
    atomic_store(&c->reconnecting, false);
    atomic_fetch_add_explicit(&c->reconnects, 1, memory_order_relaxed);
    crpc_buf *out = crpc_conn_out(conn);
    for (size_t off = 0; off + CRPC_REQUEST_MSGID_OFFSET + 4 <= c->backlog.len;) {
        const uint8_t *f = c->backlog.data + off;
        size_t len = CRPC_FRAME_HEADER_SIZE +
                     ((size_t)f[0] << 24 | (size_t)f[1] << 16 | (size_t)f[2] << 8 | f[3]);
        const uint8_t *id = f + CRPC_REQUEST_MSGID_OFFSET;
        uint32_t msgid = (uint32_t)id[0] << 24 | (uint32_t)id[1] << 16 | (uint32_t)id[2] << 8 | id[3];
        if (crpc_pending_find(&c->pending, msgid) && crpc_buf_append(out, f, len))
            break; /* out of memory: the call will time out or end with the connection */
        off += len;
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
        int fd = crpc_net_connect(c->host, c->port, c->cfg.connect_timeout_ms);
        if (fd >= 0) {
            reattach_task *t = GIVE_UP() ? NULL : malloc(sizeof(*t));
            if (t) {
                t->task.run = run_reattach;
                t->client = c;
                t->fd = fd;
                if (crpc_loop_push(loop, &t->task) == 0) {
                    atomic_fetch_sub(&loop->helpers, 1); /* run_reattach drops our reference */
                    return NULL;
                }
                free(t);
            }
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
    end_waiting_calls((crpc_client *)((char *)hook - offsetof(crpc_client, stop_hook)));
}

static void start_reconnect(crpc_client *c)
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

/* ------------------------------------------------------------------ close */

/* Reconnecting, with no connection to close: the calls waiting in the backlog end now. */
static void end_waiting_calls(crpc_client *c)
{
    crpc_loop_remove_stop_hook(c->loop, &c->stop_hook);
    crpc_loop_unwatch_deadline(c->loop, &c->deadlines);
    crpc_pending_table t = c->pending;
    memset(&c->pending, 0, sizeof(c->pending));
    atomic_store(&c->pending_count, 0);
    c->backlog.len = 0;
    for (uint32_t i = 0; t.slots && i <= t.mask; i++)
        if (t.slots[i].used)
            complete(t.slots[i].cb, t.slots[i].ctx, -ESHUTDOWN, t.slots[i].msgid);
    crpc_pending_free(&t);
}

/* The user closes: the server is told which calls were given up, a cancel frame each (as
 * for a timeout), so their handlers stop now. A server keeps running what a client sent
 * before its end of input, for up to its drain time, since a half-close and a close look
 * the same to it. The calls end here with -ESHUTDOWN (client_on_close). */
static void close_here(crpc_client *c)
{
    if (!c->conn) {
        end_waiting_calls(c);
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
    client_task *t = task_new(c, run_close, NULL);
    if (t && crpc_loop_push(c->loop, &t->task) == 0)
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
    client_task *t = task_new(c, run_release, NULL);
    if (t && crpc_loop_push(c->loop, &t->task) == 0)
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
