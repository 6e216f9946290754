/*
 * client_calls.c — a client's calls, notifications, cancels and timeouts (see client.c for
 * the rules every call follows: it ends exactly once, msgids follow call ids).
 */
#include "client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

/* --------------------------------------------------------------- timeouts */

/* Ends every call whose deadline has passed (-ETIMEDOUT, a cancel frame to the server),
 * runs the heartbeat, then finds the next time to look. The table is scanned rather than
 * kept in deadline order: this runs only when the earliest recorded deadline passes, and
 * that bound is kept tight. */
void client_expire_calls(crpc_deadline_source *src, uint64_t now)
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
            client_complete(p.cb, p.ctx, -ETIMEDOUT, p.msgid);
        }
    }
    uint64_t next = client_heartbeat(c, now);
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

/* ------------------------------------------------------------------ calls */

uint64_t client_deadline(uint64_t timeout_us)
{
    if (!timeout_us)
        return 0;
    uint64_t now = crpc_monotonic_ns(); /* saturating: a timeout of centuries must not wrap */
    return timeout_us > (UINT64_MAX - now) / 1000u ? UINT64_MAX : now + timeout_us * 1000u;
}

/* The msgid for a call: its id mod 2^32, skipping ids still in flight. */
static uint32_t pick_msgid(crpc_client *c, uint64_t token)
{
    uint32_t id = (uint32_t)token;
    while (crpc_pending_find(&c->pending, id))
        id++;
    return id;
}

/* Registers the call and appends its frame (msgid patched in). Loop thread only. */
int client_enqueue_call(crpc_client *c, uint64_t token, crpc_call_fn cb, void *ctx,
                        const crpc_call *call, const uint8_t *frame, uint32_t len,
                        uint64_t deadline, uint32_t *msgid_out)
{
    CRPC_ASSERT_ON_LOOP(c->loop);
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
    if (msgid_out)
        *msgid_out = msgid;
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
    crpc_set_last_error("%s", atomic_load_explicit(&c->failed_for_good, memory_order_acquire) ? c->failure : "");
    return -ENOTCONN;
}

bool client_take_early_cancel(crpc_client *c, uint64_t token)
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
    bool cancelled = client_take_early_cancel(c, ct->token);
    if (atomic_fetch_sub(&c->calls_in_transit, 1) == 1)
        c->early_cancel_count = 0; /* no call left that a remaining entry could name */
    if (cancelled) {
        client_complete(ct->cb, ct->ctx, -ECANCELED, 0); /* never sent */
        free(ct);
        return;
    }
    int err = can_send(c, l);
    if (!err)
        err = client_enqueue_call(c, ct->token, ct->cb, ct->ctx, NULL, ct->handoff.frame, ct->handoff.len, ct->deadline, NULL);
    /* A call that reached the loop after the client gave up for good says why too. */
    bool gave_up = err == -ENOTCONN && atomic_load_explicit(&c->failed_for_good, memory_order_acquire);
    if (err)
        client_complete_why(ct->cb, ct->ctx, err, 0, gave_up ? c->failure : NULL);
    free(ct);
}

int crpc_client_call(crpc_client *c, const crpc_call *call, crpc_call_fn cb, void *ctx,
                     uint64_t *call_id)
{
    if (!cb)
        return -EINVAL;
    if (!atomic_load_explicit(&c->connected, memory_order_relaxed) &&
        !(atomic_load(&c->reconnecting) && !c->cfg.fail_fast)) {
        /* Why the client gave up for good, if it did; else no reason. */
        crpc_set_last_error("%s", atomic_load_explicit(&c->failed_for_good, memory_order_acquire) ? c->failure : "");
        return -ENOTCONN;
    }
    uint64_t token = atomic_fetch_add_explicit(&c->next_token, 1, memory_order_relaxed);
    if (call_id)
        *call_id = token;
    uint64_t deadline = client_deadline(call->timeout_us);
    if (crpc_loop_current() == c->loop) {
        int err = can_send(c, c->loop);
        return err ? err : client_enqueue_call(c, token, cb, ctx, call, NULL, 0, deadline, NULL);
    }
    crpc_buf *scratch = crpc_thread_scratch();
    if (!scratch)
        return -ENOMEM;
    int err = crpc_encode_request(scratch, 0, call, c->cfg.max_frame_size);
    if (err)
        return err;
    client_task *t = client_task_new(c, run_call, scratch);
    if (!t)
        return -ENOMEM;
    t->cb = cb;
    t->ctx = ctx;
    t->token = token;
    t->deadline = deadline;
    atomic_fetch_add(&c->calls_in_transit, 1);
    err = crpc_loop_push(c->loop, &t->handoff.task);
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
    if (conn && crpc_buf_append(crpc_conn_out(conn), ct->handoff.frame, ct->handoff.len) == 0)
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
    client_task *t = client_task_new(c, run_frame, scratch);
    if (!t)
        return -ENOMEM;
    err = crpc_loop_push(c->loop, &t->handoff.task);
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
    client_complete(p.cb, p.ctx, -ECANCELED, msgid);
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
    client_task *t = client_task_new(c, run_cancel, NULL);
    if (!t)
        return -ENOMEM;
    t->token = call_id;
    int err = crpc_loop_push(c->loop, &t->handoff.task);
    if (err) {
        free(t);
        return err == -ESHUTDOWN ? -ENOENT : err; /* a stopped loop has ended every call */
    }
    return 0;
}

