/*
 * server_streams.c — a server connection's streams (see stream.h and crpc.h "Streams").
 *
 * A connection keeps its streams in flight in `c->streams`, keyed by sid (the table a
 * client keeps its calls in), each entry holding the core's reference. A stream leaves it
 * exactly once, in stream_over: its end response written (crpc_stream_end), the client's
 * cancel, a credit violation (answered 8 here), or the connection closing. It counts as a
 * request in flight until then, so the calls-in-flight limit and the drain of a shutdown
 * see it. Every event of a live stream reaches the owner's on_request with req->stream set;
 * after the CRPC_MSG_CANCEL that ends it (and after crpc_stream_end) none does.
 */
#include "stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "peer.h"
#include "server.h"

static crpc_stream *find(crpc_conn *c, uint32_t sid)
{
    crpc_pending *p = crpc_pending_find(&c->streams, sid);
    return p ? p->ctx : NULL;
}

/* Hands an event of `s` to the owner. `req` has the decoded frame (or is made here). */
static void deliver(crpc_conn *c, crpc_stream *s, crpc_request *req)
{
    crpc_server *srv = c->owner;
    req->conn = crpc_conn_id_make(c);
    req->server = srv;
    req->peer = &c->peer->peer;
    req->stream = s;
    srv->cfg.on_request(srv->cfg.user, req);
}

/* Takes `s` out of flight, once: out of the table, one request fewer in flight, and (with
 * `why`, a status) a last CRPC_MSG_CANCEL event saying why. */
static void stream_over(crpc_conn *c, crpc_stream *s, int32_t why)
{
    crpc_server *srv = c->owner;
    crpc_pending gone;
    crpc_pending_take(&c->streams, s->sid, &gone);
    s->live = false;
    atomic_store(&s->ended, true);
    atomic_fetch_sub_explicit(&srv->inflight, 1, memory_order_relaxed);
    if (why) {
        crpc_request req;
        memset(&req, 0, sizeof(req));
        req.msg.type = CRPC_MSG_CANCEL;
        req.msg.msgid = s->sid;
        req.msg.error_code = why;
        deliver(c, s, &req);
    }
    crpc_stream_unref(s); /* the table's */
    if (c->state == CONN_OPEN)
        server_answered(c);
    else if (c->inflight)
        c->inflight--;
}

/* The client broke the stream's rules: it is answered with `code` and ended. */
static void refuse(crpc_conn *c, crpc_stream *s, int32_t code, const char *why)
{
    crpc_count(&c->loop->counters.rejected, 1);
    if (crpc_encode_error(crpc_conn_out(c), s->sid, code, why, c->max_frame_size) == 0) {
        crpc_count(&c->loop->counters.frames_out, 1);
        crpc_conn_mark_dirty(c);
    }
    stream_over(c, s, code);
}

int server_stream_open(crpc_conn *c, crpc_request *req)
{
    crpc_server *srv = c->owner;
    const crpc_message *m = &req->msg;
    if (find(c, m->msgid))
        return -EEXIST;
    crpc_stream *s = crpc_stream_new(c->loop, m->stream_kind, true, c->max_frame_size);
    if (!s)
        return -ENOMEM;
    s->sid = m->msgid;
    s->server = srv;
    s->slot = c->slot;
    s->gen = c->gen;
    crpc_pending entry = {.msgid = m->msgid, .ctx = s};
    if (crpc_pending_insert(&c->streams, &entry)) {
        free(s);
        return -ENOMEM;
    }
    s->live = true;
    /* The client's window for what we send; what it may send waits for our accept. */
    if (s->kind != CRPC_STREAM_CLIENT)
        crpc_stream_add_credit(s, m->credit_messages, m->credit_bytes);
    c->inflight++;
    atomic_fetch_add_explicit(&srv->inflight, 1, memory_order_relaxed);
    deliver(c, s, req);
    return 0;
}

bool server_stream_frame(crpc_conn *c, crpc_request *req, uint32_t frame_len, int decode_err)
{
    crpc_message *m = &req->msg;
    crpc_stream *s = find(c, m->msgid);
    if (!s)
        return m->type != CRPC_MSG_CANCEL; /* a call's cancel goes on; the rest is dropped */
    if (decode_err) {
        refuse(c, s, CRPC_STATUS_INVALID_ARGUMENT, "stream frame does not decode");
        return true;
    }
    switch (m->type) {
    case CRPC_MSG_ELEMENT:
        /* Elements of a server stream, or after the half-close, were never granted either. */
        if (!crpc_stream_take_recv(s, frame_len)) {
            refuse(c, s, CRPC_STATUS_RESOURCE_EXHAUSTED, "stream element beyond the credit granted");
            return true;
        }
        deliver(c, s, req);
        break;
    case CRPC_MSG_CREDIT:
        if (crpc_stream_add_credit(s, m->credit_messages, m->credit_bytes))
            deliver(c, s, req);
        break;
    case CRPC_MSG_HALF_CLOSE:
        if (s->kind == CRPC_STREAM_SERVER || atomic_load(&s->half_closed))
            break; /* nothing to close, or closed already */
        atomic_store(&s->half_closed, true);
        s->recv_messages = 0; /* no element may follow */
        deliver(c, s, req);
        break;
    case CRPC_MSG_CANCEL:
        stream_over(c, s, CRPC_STATUS_CANCELLED);
        break;
    }
    return true;
}

/* Every stream of a connection that closes, or whose input ended, ends: told as unavailable. */
void server_streams_closed(crpc_conn *c)
{
    while (c->streams.count) {
        crpc_stream *s = NULL;
        for (uint32_t i = 0; !s && i <= c->streams.mask; i++)
            if (c->streams.slots[i].used)
                s = c->streams.slots[i].ctx;
        stream_over(c, s, CRPC_STATUS_UNAVAILABLE);
    }
}

void server_stream_released(crpc_stream *s)
{
    void *user = atomic_load(&s->user);
    if (user && s->server->cfg.on_stream_release)
        s->server->cfg.on_stream_release(s->server->cfg.user, user);
}

int server_stream_run(crpc_stream *s, int op, const uint8_t *frame, uint32_t len, uint32_t messages,
                      uint32_t bytes, const crpc_reply *reply, const crpc_ext_entry *ext, uint32_t ext_count)
{
    CRPC_ASSERT_ON_LOOP(s->loop);
    crpc_conn *c = s->live ? crpc_conn_lookup(s->loop, s->slot, s->gen) : NULL;
    if (!c || (op == STREAM_GRANT && atomic_load(&s->half_closed)))
        return -EPIPE;
    crpc_buf *out = crpc_conn_out(c);
    int err = 0;
    if (frame)
        err = crpc_buf_append(out, frame, len);
    else if (op == STREAM_END)
        err = crpc_encode_response(out, s->sid, reply, s->max_frame_size);
    else if (op == STREAM_GRANT || op == STREAM_ACCEPT)
        err = crpc_encode_credit(out, s->sid, messages, bytes, ext, ext_count, s->max_frame_size);
    if (err)
        return err;
    /* After the client's half-close, an accept still carries the leading metadata but
     * grants nothing: no element may follow the half-close. */
    if ((op == STREAM_GRANT || op == STREAM_ACCEPT) && !atomic_load(&s->half_closed))
        crpc_stream_add_recv(s, messages, bytes);
    if (op == STREAM_SEND && !atomic_load(&s->accepted))
        atomic_store(&s->accepted, true); /* an element written on the loop accepts too */
    crpc_count(&c->loop->counters.frames_out, 1);
    crpc_conn_mark_dirty(c);
    crpc_conn_check_output(c);
    if (op == STREAM_END)
        stream_over(c, s, 0);
    return 0;
}
