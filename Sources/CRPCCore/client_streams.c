/*
 * client_streams.c — a client's streams (see stream.h and crpc.h "Streams").
 *
 * A stream is a call whose pending entry (in the client's table of calls, keyed by sid)
 * completes with client_stream_ended: whatever ends a call — its response, its timeout, a
 * cancel, the connection closing, the client closing — ends a stream the same way, once,
 * and that completion is the stream's END event. Element and credit frames find the stream
 * through the same entry; frames for ids no longer in the table are dropped.
 *
 * Streams need the connection up: one opened while the client is reconnecting fails with
 * -ENOTCONN instead of waiting in the backlog, where its sid could be renumbered.
 */
#include "client.h"

#include <errno.h>
#include <stdlib.h>

#include "envelope.h"
#include "stream.h"

/* Hands an event to the application, holding the stream while its callback runs (the
 * callback may cancel it and drop the application's reference). */
static void tell(crpc_stream *s, int type, const crpc_message *m, const crpc_result *r)
{
    crpc_stream_event ev = {.type = type, .stream = s, .message = m, .result = r};
    atomic_fetch_add(&s->refs, 1);
    s->fn(s->ctx, &ev);
    crpc_stream_unref(s);
}

/* The pending entry's completion: the stream's END, once. */
static void client_stream_ended(void *ctx, const crpc_result *res)
{
    crpc_stream *s = ctx;
    s->live = false;
    atomic_store(&s->ended, true);
    tell(s, CRPC_STREAM_END, NULL, res);
    crpc_stream_unref(s); /* the core's */
}

void client_stream_released(crpc_stream *s) { client_unref(s->client); }

/* Ends a live stream from our side: the server is told with a cancel frame. */
static void give_up(crpc_client *c, crpc_stream *s, int status, const char *why)
{
    crpc_pending p;
    if (!crpc_pending_take(&c->pending, s->sid, &p))
        return;
    atomic_store_explicit(&c->pending_count, c->pending.count, memory_order_relaxed);
    if (c->conn && crpc_encode_cancel(crpc_conn_out(c->conn), s->sid) == 0)
        crpc_conn_mark_dirty(c->conn);
    client_complete_why(p.cb, p.ctx, status, s->sid, why);
}

void client_stream_frame(crpc_client *c, const crpc_message *m, uint32_t len, int decode_err)
{
    crpc_pending *p = crpc_pending_find(&c->pending, m->msgid);
    if (!p || p->cb != client_stream_ended)
        return; /* not a stream in flight (one that ended a moment ago): dropped */
    crpc_stream *s = p->ctx;
    if (decode_err) {
        give_up(c, s, -EPROTO, "the server sent a stream frame that does not decode");
        return;
    }
    if (m->type == CRPC_MSG_ELEMENT) {
        if (!crpc_stream_take_recv(s, len)) {
            give_up(c, s, -EOVERFLOW, "the server sent a stream element beyond the credit granted");
            return;
        }
        tell(s, CRPC_STREAM_ELEMENT, m, NULL);
        return;
    }
    bool first = !atomic_exchange(&s->accepted, true);
    bool wake = crpc_stream_add_credit(s, m->credit_messages, m->credit_bytes);
    if (first)
        tell(s, CRPC_STREAM_ACCEPTED, m, NULL);
    else if (wake)
        tell(s, CRPC_STREAM_WRITABLE, NULL, NULL);
}

/* --------------------------------------------------------------- opening */

/* Registers the stream and appends its open frame (sid patched in). Loop thread only. */
static int open_here(crpc_client *c, crpc_stream *s, const uint8_t *frame, uint32_t len, uint64_t deadline)
{
    if (!c->conn)
        return c->loop->stopped ? -ESHUTDOWN : -ENOTCONN;
    uint32_t sid;
    int err = client_enqueue_call(c, s->token, client_stream_ended, s, NULL, frame, len, deadline, &sid);
    if (err)
        return err;
    s->sid = sid; /* before any credit can arrive (it comes off this loop's socket) */
    s->live = true;
    return 0;
}

static void run_open(crpc_loop *l, crpc_task *t)
{
    (void)l;
    client_task *ct = (client_task *)t;
    crpc_client *c = ct->client;
    crpc_stream *s = ct->ctx;
    bool cancelled = client_take_early_cancel(c, ct->token);
    if (atomic_fetch_sub(&c->calls_in_transit, 1) == 1)
        c->early_cancel_count = 0;
    int err = cancelled ? -ECANCELED : open_here(c, s, ct->handoff.frame, ct->handoff.len, ct->deadline);
    atomic_fetch_sub(&s->in_transit, 1);
    if (err)
        client_complete(client_stream_ended, s, err, 0); /* never sent */
    free(ct);
}

int crpc_client_open_stream(crpc_client *c, const crpc_stream_open *open, crpc_stream_fn fn, void *ctx,
                            crpc_stream **out)
{
    if (!c || !open || !fn || !out || open->kind < CRPC_STREAM_SERVER || open->kind > CRPC_STREAM_BIDI)
        return -EINVAL;
    if (!atomic_load_explicit(&c->connected, memory_order_relaxed)) {
        crpc_set_last_error("%s", atomic_load_explicit(&c->failed_for_good, memory_order_acquire) ? c->failure : "");
        return -ENOTCONN;
    }
    crpc_buf *frame = crpc_thread_scratch();
    if (!frame)
        return -ENOMEM;
    int err = crpc_encode_stream_open(frame, 0, open, c->cfg.max_frame_size);
    if (err)
        return err;
    crpc_stream *s = crpc_stream_new(c->loop, open->kind, false, c->cfg.max_frame_size);
    if (!s)
        return -ENOMEM;
    s->client = c;
    s->fn = fn;
    s->ctx = ctx;
    s->token = atomic_fetch_add_explicit(&c->next_token, 1, memory_order_relaxed);
    if (open->kind != CRPC_STREAM_CLIENT) /* what the server may send before we grant more */
        crpc_stream_add_recv(s, open->credit_messages ? open->credit_messages : CRPC_DEFAULT_STREAM_CREDIT_MESSAGES,
                             open->credit_bytes ? open->credit_bytes : CRPC_DEFAULT_STREAM_CREDIT_BYTES);
    uint64_t deadline = client_deadline(open->call.timeout_us);
    atomic_fetch_add(&c->refs, 1); /* the stream's, dropped when it is freed */
    if (crpc_loop_current() == c->loop) {
        err = open_here(c, s, frame->data, (uint32_t)frame->len, deadline);
        if (err) {
            client_unref(c);
            free(s);
            return err;
        }
        *out = s;
        return 0;
    }
    client_task *t = client_task_new(c, run_open, frame);
    if (!t) {
        client_unref(c);
        free(s);
        return -ENOMEM;
    }
    t->cb = client_stream_ended;
    t->ctx = s;
    t->token = s->token;
    t->deadline = deadline;
    atomic_fetch_add(&c->calls_in_transit, 1);
    atomic_fetch_add(&s->in_transit, 1); /* what the application does next queues behind */
    err = crpc_loop_push(c->loop, &t->handoff.task);
    if (err) {
        atomic_fetch_sub(&c->calls_in_transit, 1);
        free(t);
        client_unref(c);
        free(s);
        return err;
    }
    *out = s;
    return 0;
}

/* --------------------------------------------------------------- the ops */

int client_stream_run(crpc_stream *s, int op, const uint8_t *frame, uint32_t len, uint32_t messages,
                      uint32_t bytes)
{
    CRPC_ASSERT_ON_LOOP(s->loop);
    crpc_client *c = s->client;
    if (op == STREAM_CANCEL) {
        if (s->live)
            give_up(c, s, -ECANCELED, NULL);
        return 0;
    }
    if (!s->live || !c->conn)
        return -EPIPE;
    crpc_buf *out = crpc_conn_out(c->conn);
    int err = frame ? crpc_buf_append(out, frame, len)
              : op == STREAM_GRANT ? crpc_encode_credit(out, s->sid, messages, bytes, NULL, 0, c->cfg.max_frame_size)
              : op == STREAM_HALF_CLOSE ? crpc_encode_half_close(out, s->sid)
              : -EINVAL;
    if (err)
        return err;
    if (op == STREAM_GRANT)
        crpc_stream_add_recv(s, messages, bytes);
    crpc_conn_mark_dirty(c->conn);
    return 0;
}
