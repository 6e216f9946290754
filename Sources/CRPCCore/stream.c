/*
 * stream.c — the stream handle: references, credit, and the crpc_stream_* functions.
 *
 * Each function may run on any thread. On the loop's own thread, with nothing of the
 * stream's still queued, its frame is written straight into the connection's output;
 * otherwise it is built on the caller's thread (when it carries a value) and handed to the
 * loop as a task. `in_transit` counts those tasks, so a frame made on the loop while one
 * is queued queues behind it: a stream's frames leave in the order they were made.
 *
 * Credit for sending is taken here, on the caller's thread, before the frame is handed
 * over (see stream.h): a send that finds none returns -EAGAIN at once and leaves
 * `want_credit` set, so the grant that brings more says so (WRITABLE / CRPC_MSG_CREDIT).
 * The flag is set before credit is looked at again, and the grant adds credit before it
 * clears the flag, so a grant that lands in between is never missed (at worst it is
 * reported when the retried send already used it: a spurious wake-up, documented).
 */
#include "stream.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "envelope.h"

crpc_stream *crpc_stream_new(crpc_loop *loop, int kind, bool is_server, uint32_t max_frame_size)
{
    crpc_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    atomic_init(&s->refs, 2);
    s->kind = (uint8_t)kind;
    s->is_server = is_server;
    s->loop = loop;
    s->max_frame_size = max_frame_size;
    return s;
}

/* Server streams tell the owner's on_stream_release (server_streams.c); client streams
 * drop the reference they hold on their client (client_streams.c). */
void server_stream_released(crpc_stream *s);
void client_stream_released(crpc_stream *s);

void crpc_stream_unref(crpc_stream *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    if (s->is_server)
        server_stream_released(s);
    else
        client_stream_released(s);
    free(s);
}

void crpc_stream_release(crpc_stream *s)
{
    if (s)
        crpc_stream_unref(s);
}

/* ------------------------------------------------------------------ credit */

static uint32_t add_sat(uint32_t a, uint32_t b) { return a > UINT32_MAX - b ? UINT32_MAX : a + b; }

/* The byte half of send_credit is signed: an element that overshoots leaves a debt, which
 * grants pay off before the next element may go. Receivers grant back what they took, frame
 * by frame, so with the debt kept the bytes in flight never exceed the window by more than
 * one element (forgiving the overshoot would let them grow with every large element). */
static int32_t credit_bytes(uint64_t credit) { return (int32_t)(uint32_t)credit; }

static uint64_t pack_credit(uint32_t messages, int64_t bytes)
{
    if (bytes > INT32_MAX)
        bytes = INT32_MAX;
    return (uint64_t)messages << 32 | (uint32_t)(int32_t)bytes;
}

bool crpc_stream_add_credit(crpc_stream *s, uint32_t messages, uint32_t bytes)
{
    uint64_t cur = atomic_load(&s->send_credit), next;
    do {
        next = pack_credit(add_sat((uint32_t)(cur >> 32), messages), (int64_t)credit_bytes(cur) + bytes);
    } while (!atomic_compare_exchange_weak(&s->send_credit, &cur, next));
    return (messages || bytes) && atomic_exchange(&s->want_credit, false);
}

/* Takes one message and `len` bytes of send credit (one element may overshoot the bytes,
 * leaving a debt). False when there is not one message and one byte left. */
static bool take_once(crpc_stream *s, uint32_t len)
{
    uint64_t cur = atomic_load(&s->send_credit), next;
    do {
        uint32_t m = (uint32_t)(cur >> 32);
        int32_t b = credit_bytes(cur);
        if (m == 0 || b < 1)
            return false;
        next = pack_credit(m - 1, (int64_t)b - len);
    } while (!atomic_compare_exchange_weak(&s->send_credit, &cur, next));
    return true;
}

/* Whether one message and one byte of credit are there now. The load acquires what the
 * grant's thread wrote before it (a client stream's sid is set before credit can come). */
static bool has_credit(crpc_stream *s)
{
    uint64_t cur = atomic_load(&s->send_credit);
    if (cur >> 32 && credit_bytes(cur) >= 1)
        return true;
    atomic_store(&s->want_credit, true);
    cur = atomic_load(&s->send_credit); /* a grant may have landed before the flag was seen */
    return cur >> 32 && credit_bytes(cur) >= 1;
}

static bool take_credit(crpc_stream *s, uint32_t len)
{
    if (take_once(s, len))
        return true;
    atomic_store(&s->want_credit, true);
    return take_once(s, len); /* a grant may have landed before the flag was seen */
}

void crpc_stream_add_recv(crpc_stream *s, uint32_t messages, uint32_t bytes)
{
    s->recv_messages = add_sat(s->recv_messages, messages);
    s->recv_bytes = add_sat(s->recv_bytes, bytes);
}

bool crpc_stream_take_recv(crpc_stream *s, uint32_t len)
{
    if (s->recv_messages == 0 || s->recv_bytes == 0)
        return false;
    s->recv_messages--;
    s->recv_bytes = s->recv_bytes > len ? s->recv_bytes - len : 0;
    return true;
}

/* ---------------------------------------------------------- the hand-over */

typedef struct stream_task {
    crpc_frame_task handoff;
    crpc_stream *s;       /* the task's own reference */
    int op;
    uint32_t messages, bytes;
} stream_task;

static int run_here(crpc_stream *s, int op, const uint8_t *frame, uint32_t len, uint32_t messages,
                    uint32_t bytes, const crpc_reply *reply, const crpc_ext_entry *ext, uint32_t ext_count)
{
    return s->is_server ? server_stream_run(s, op, frame, len, messages, bytes, reply, ext, ext_count)
                        : client_stream_run(s, op, frame, len, messages, bytes);
}

static void run_stream_task(crpc_loop *l, crpc_task *t)
{
    stream_task *st = (stream_task *)t;
    crpc_stream *s = st->s;
    if (!l->stopped)
        run_here(s, st->op, st->handoff.len ? st->handoff.frame : NULL, st->handoff.len, st->messages,
                 st->bytes, NULL, NULL, 0);
    atomic_fetch_sub(&s->in_transit, 1);
    crpc_stream_unref(s);
    free(st);
}

/* True when an operation may be done right here: on the loop, behind nothing queued. */
static bool on_loop(crpc_stream *s)
{
    return crpc_loop_current() == s->loop && atomic_load(&s->in_transit) == 0;
}

/* Hands `op` (with `frame`, NULL: none) to the loop. */
static int hand_over(crpc_stream *s, int op, const crpc_buf *frame, uint32_t messages, uint32_t bytes)
{
    stream_task *t = crpc_frame_task_new(sizeof(*t), run_stream_task, frame);
    if (!t)
        return -ENOMEM;
    t->s = s;
    t->op = op;
    t->messages = messages;
    t->bytes = bytes;
    atomic_fetch_add(&s->refs, 1);
    atomic_fetch_add(&s->in_transit, 1);
    int err = crpc_loop_push(s->loop, &t->handoff.task);
    if (err) {
        atomic_fetch_sub(&s->in_transit, 1);
        atomic_fetch_sub(&s->refs, 1); /* the application still holds one */
        free(t);
        return -EPIPE; /* the loop has stopped: every stream on it has ended */
    }
    return 0;
}

/* ---------------------------------------------------------- the functions */

/* Whether this side sends elements on this kind of stream. */
static bool sends(const crpc_stream *s)
{
    return s->kind == CRPC_STREAM_BIDI || s->kind == (s->is_server ? CRPC_STREAM_SERVER : CRPC_STREAM_CLIENT);
}

int crpc_stream_send(crpc_stream *s, const uint8_t *value, uint32_t len, const crpc_ext_entry *ext,
                     uint32_t ext_count)
{
    if (!s || !value || !sends(s))
        return -EINVAL;
    if (atomic_load(&s->ended) || (!s->is_server && atomic_load(&s->half_closed)) ||
        (s->is_server && atomic_load(&s->ending)))
        return -EPIPE;
    if (s->is_server && !atomic_load(&s->accepted)) {
        /* The first element accepts the stream (before it, in order), with the defaults. */
        bool grants = s->kind != CRPC_STREAM_SERVER;
        int err = crpc_stream_accept(s, grants ? CRPC_DEFAULT_STREAM_CREDIT_MESSAGES : 0,
                                     grants ? CRPC_DEFAULT_STREAM_CREDIT_BYTES : 0, NULL, 0);
        if (err && err != -EALREADY)
            return err;
    }
    /* Credit first: none means nothing to encode, and seeing some makes the sid visible. */
    if (!has_credit(s))
        return -EAGAIN;
    crpc_buf *buf = crpc_thread_scratch();
    if (!buf)
        return -ENOMEM;
    int err = crpc_encode_element(buf, s->sid, value, len, ext, ext_count, s->max_frame_size);
    if (err)
        return err;
    if (!take_credit(s, (uint32_t)buf->len - CRPC_FRAME_HEADER_SIZE))
        return -EAGAIN; /* another sender took the last of it */
    if (on_loop(s))
        return run_here(s, STREAM_SEND, buf->data, (uint32_t)buf->len, 0, 0, NULL, NULL, 0);
    return hand_over(s, STREAM_SEND, buf, 0, 0);
}

int crpc_stream_grant(crpc_stream *s, uint32_t messages, uint32_t bytes)
{
    if (!s || (messages == 0 && bytes == 0))
        return -EINVAL;
    if (atomic_load(&s->ended) || (s->is_server && (atomic_load(&s->ending) || atomic_load(&s->half_closed))))
        return -EPIPE;
    if (on_loop(s))
        return run_here(s, STREAM_GRANT, NULL, 0, messages, bytes, NULL, NULL, 0);
    return hand_over(s, STREAM_GRANT, NULL, messages, bytes);
}

int crpc_stream_accept(crpc_stream *s, uint32_t messages, uint32_t bytes, const crpc_ext_entry *ext,
                       uint32_t ext_count)
{
    if (!s || !s->is_server)
        return -EINVAL;
    bool grants = s->kind != CRPC_STREAM_SERVER;
    if (grants != (messages > 0 && bytes > 0) || (!grants && (messages || bytes)))
        return -EINVAL;
    if (atomic_load(&s->ended) || atomic_load(&s->ending))
        return -EPIPE;
    if (atomic_exchange(&s->accepted, true))
        return -EALREADY;
    if (on_loop(s))
        return run_here(s, STREAM_ACCEPT, NULL, 0, messages, bytes, NULL, ext, ext_count);
    /* Off the loop the frame (with its metadata) is made here; the server's sid is known. */
    crpc_buf *buf = crpc_thread_scratch();
    if (!buf)
        return -ENOMEM;
    int err = crpc_encode_credit(buf, s->sid, messages, bytes, ext, ext_count, s->max_frame_size);
    return err ? err : hand_over(s, STREAM_ACCEPT, buf, messages, bytes);
}

int crpc_stream_half_close(crpc_stream *s)
{
    if (!s || s->is_server || s->kind == CRPC_STREAM_SERVER)
        return -EINVAL;
    if (atomic_load(&s->ended) || atomic_exchange(&s->half_closed, true))
        return -EPIPE;
    if (on_loop(s))
        return run_here(s, STREAM_HALF_CLOSE, NULL, 0, 0, 0, NULL, NULL, 0);
    return hand_over(s, STREAM_HALF_CLOSE, NULL, 0, 0);
}

int crpc_stream_end(crpc_stream *s, const crpc_reply *reply)
{
    if (!s || !s->is_server || !reply)
        return -EINVAL;
    if (atomic_load(&s->ended) || atomic_load(&s->ending))
        return -EPIPE;
    if (on_loop(s)) {
        int err = run_here(s, STREAM_END, NULL, 0, 0, 0, reply, NULL, 0);
        if (!err)
            atomic_store(&s->ending, true);
        return err;
    }
    crpc_buf *buf = crpc_thread_scratch();
    if (!buf)
        return -ENOMEM;
    int err = crpc_encode_response(buf, s->sid, reply, s->max_frame_size);
    if (err)
        return err; /* too large: the stream is untouched, end it again with an error */
    if (atomic_exchange(&s->ending, true))
        return -EPIPE; /* ended by another thread meanwhile */
    return hand_over(s, STREAM_END, buf, 0, 0);
}

int crpc_stream_cancel(crpc_stream *s)
{
    if (!s || s->is_server)
        return -EINVAL;
    if (atomic_load(&s->ended))
        return 0;
    if (on_loop(s))
        return run_here(s, STREAM_CANCEL, NULL, 0, 0, 0, NULL, NULL, 0) == -ENOMEM ? -ENOMEM : 0;
    int err = hand_over(s, STREAM_CANCEL, NULL, 0, 0);
    return err == -EPIPE ? 0 : err;
}

uint32_t crpc_stream_sid(const crpc_stream *s) { return s->sid; }

int crpc_stream_kind(const crpc_stream *s) { return s->kind; }

void crpc_stream_set_user(crpc_stream *s, void *user) { atomic_store(&s->user, user); }

void *crpc_stream_user(const crpc_stream *s) { return atomic_load(&((crpc_stream *)s)->user); }
