/*
 * conn.c — connections: the slot table, reassembling frames, and coalesced sending.
 * Loop thread only. Shared by both backends (backend.h): they move the bytes, this file
 * decides what the bytes mean and what to send.
 *
 * Receive: the backend hands over whatever arrived (io_uring: a provided buffer filled by
 * a multishot recv; epoll: the loop's read buffer). Whole frames are handed to the owner
 * straight from there (parsed in place); only a frame that spans reads is copied, into
 * the connection's `in` buffer, and handed on once complete.
 *
 * Send: replies and requests are encoded into out[out_cur] as they are produced. At the
 * end of the loop iteration each dirty connection sends all of it in one send; while that
 * send is in flight new output collects in the other buffer. The backend resumes short
 * sends and reports the end with crpc_conn_sent.
 *
 * End of input: when the peer half-closes, or sends a frame that cannot be parsed after
 * good ones, reading stops but the connection stays: an owner with on_input_end (the
 * server) lets the requests it already has finish and closes once their replies are sent.
 *
 * TLS: a connection with a filter (c->tls, tls.h) hands its ciphertext to the filter,
 * which decrypts into crpc_conn_plaintext; at the send the filter encrypts what collected
 * (crpc_tls_seal). A plaintext connection pays the pointer's test and nothing else.
 *
 * Close: on_close runs at once (failing pending calls), the socket is shut down and the
 * backend stops watching it, and the slot is released (generation bumped) only when no
 * completion can name it any more (no hold left; see backend.h). A close that would cut
 * output short (replies collected or half sent) resets the connection instead of ending it
 * with a FIN, so the peer never mistakes half a frame for an orderly end.
 */
#include "core.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include "peer.h"
#include "tls.h"
#include "userdata.h"

/* Output buffers larger than this are freed when idle, so one burst does not pin memory. */
#define OUT_KEEP_BYTES (256u * 1024u)

static int grow_slots(crpc_loop *l)
{
    uint32_t cap = l->conn_cap ? l->conn_cap * 2 : 64;
    if (cap > CRPC_SLOT_MAX + 1u)
        return -EMFILE;
    crpc_conn **conns = realloc(l->conns, cap * sizeof(*conns));
    if (!conns)
        return -ENOMEM;
    l->conns = conns;
    uint32_t *free_slots = realloc(l->free_slots, cap * sizeof(*free_slots));
    if (!free_slots)
        return -ENOMEM;
    l->free_slots = free_slots;
    /* Push new slots so that the lowest index is handed out first. */
    for (uint32_t i = cap; i-- > l->conn_cap;) {
        conns[i] = NULL;
        free_slots[l->nfree++] = i;
    }
    l->conn_cap = cap;
    return 0;
}

crpc_conn *crpc_conn_open(crpc_loop *l, int fd, const crpc_conn_ops *ops, void *owner,
                          uint32_t max_frame_size)
{
    CRPC_ASSERT_ON_LOOP(l);
    if (l->nfree == 0 && grow_slots(l))
        return NULL;
    uint32_t slot = l->free_slots[l->nfree - 1];
    crpc_conn *c = l->conns[slot];
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return NULL;
        c->loop = l;
        c->slot = slot;
        l->conns[slot] = c;
    }
    l->nfree--;
    c->fd = fd;
    c->state = CONN_OPEN;
    c->ops = ops;
    c->owner = owner;
    c->max_frame_size = max_frame_size;
    c->ops_inflight = 0;
    /* `dirty` is left alone: a slot released while still on the loop's dirty list stays
     * linked until the next flush unlinks it; clearing it here would let mark_dirty link the
     * slot a second time and turn the list into a cycle. */
    c->send_inflight = c->recv_armed = false;
    c->out_cur = 0;
    c->sent = 0;
    c->last_rx_ns = crpc_loop_now_ns(l);
    c->partial_since_ns = 0;
    c->inflight = 0;
    c->max_output = 0;
    c->paused = false;
    c->recv_cancelling = false;
    c->io_events = 0;
    c->close_when_flushed = false;
    c->input_ended = c->peer_done = c->lingering = c->reset_on_close = false;
    c->input_ended_ns = 0;
    c->tls = NULL;
    c->peer = NULL;
    memset(&c->streams, 0, sizeof(c->streams));
    if (l->backend->conn_open(c)) {
        c->state = CONN_FREE;
        c->fd = -1;
        l->free_slots[l->nfree++] = slot;
        return NULL;
    }
    atomic_fetch_add(&l->open_conns, 1);
    return c;
}

void crpc_conn_for_each_open(crpc_loop *l, void (*fn)(crpc_conn *c, void *ctx), void *ctx)
{
    for (uint32_t i = 0; i < l->conn_cap; i++)
        if (l->conns[i] && l->conns[i]->state == CONN_OPEN)
            fn(l->conns[i], ctx);
}

bool crpc_conn_any(const crpc_loop *l) { return l->nfree != l->conn_cap; }

void crpc_conn_table_free(crpc_loop *l)
{
    for (uint32_t i = 0; i < l->conn_cap; i++) {
        if (l->conns[i]) {
            crpc_tls_free(l->conns[i]->tls);
            crpc_peer_free(l->conns[i]->peer);
            crpc_pending_free(&l->conns[i]->streams);
            crpc_buf_free(&l->conns[i]->in);
            crpc_buf_free(&l->conns[i]->out[0]);
            crpc_buf_free(&l->conns[i]->out[1]);
            free(l->conns[i]);
        }
    }
    free(l->conns);
    free(l->free_slots);
    l->conns = NULL;
    l->free_slots = NULL;
    l->conn_cap = l->nfree = 0;
}

crpc_conn *crpc_conn_lookup(crpc_loop *l, uint32_t slot, uint32_t gen)
{
    if (slot >= l->conn_cap)
        return NULL;
    crpc_conn *c = l->conns[slot];
    if (!c || c->gen != gen || c->state != CONN_OPEN)
        return NULL;
    return c;
}

static void release(crpc_conn *c)
{
    crpc_loop *l = c->loop;
    close(c->fd);
    c->fd = -1;
    if (c->ops->on_release)
        c->ops->on_release(c);
    crpc_tls_free(c->tls);
    c->tls = NULL;
    crpc_peer_free(c->peer);
    c->peer = NULL;
    crpc_pending_free(&c->streams); /* emptied when it closed (server_streams.c) */
    /* Whatever state it closed in (replies never read, half a frame), a closed connection
     * keeps no memory: its buffers are freed now, not when a new connection reuses the slot. */
    crpc_buf_free(&c->in);
    crpc_buf_free(&c->out[0]);
    crpc_buf_free(&c->out[1]);
    c->gen++;
    c->state = CONN_FREE;
    c->owner = NULL;
    l->free_slots[l->nfree++] = c->slot;
    atomic_fetch_sub(&l->open_conns, 1);
}

/* Output collected and not yet handed over (a client's last cancel frames; TLS: those,
 * sealed, then close_notify, or the alert of a refused handshake) goes now if the socket
 * takes all of it without waiting. */
static void send_rest_now(crpc_conn *c)
{
    if (c->send_inflight)
        return;
    /* Whether anything but close_notify is waiting: replies, cancels, an alert. */
    bool owed = crpc_conn_unsent(c) > 0;
    if (c->tls)
        crpc_tls_close_notify(c);
    crpc_buf *pending = c->tls ? &c->tls->cout : crpc_conn_out(c);
    if (!pending->len)
        return;
    ssize_t n = send(c->fd, pending->data, pending->len, MSG_DONTWAIT | MSG_NOSIGNAL);
    /* Sent; or all that is left is close_notify, which a full socket may drop: the frames
     * carry their own length, so a FIN without it is still an orderly end (a reset here
     * would make the kernel discard replies already queued). Else a frame is cut, or none
     * went: the reset below. */
    if (n == (ssize_t)pending->len || !owed)
        pending->len = 0;
}

void crpc_conn_close(crpc_conn *c, int err)
{
    CRPC_ASSERT_ON_LOOP(c->loop);
    if (c->state != CONN_OPEN)
        return;
    c->state = CONN_CLOSING;
    c->ops->on_close(c, err);
    send_rest_now(c);
    if (crpc_conn_unsent(c) || c->reset_on_close) {
        /* Output (or work) would be cut short: linger 0 makes the close a reset, and only
         * the read side is shut (a FIN now would follow the half-sent frame like an
         * orderly end). The backend cancels what it has armed. */
        struct linger reset = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
        shutdown(c->fd, SHUT_RD);
    } else {
        /* Shutting the socket down tells the peer now and makes the kernel finish whatever
         * the backend has armed on it. */
        shutdown(c->fd, SHUT_RDWR);
    }
    c->loop->backend->conn_closing(c);
    if (c->ops_inflight == 0)
        release(c);
}

/* Everything is sent: close, or linger for a peer that may still be sending. */
static void finish(crpc_conn *c)
{
    if (!c->input_ended || c->peer_done) {
        crpc_conn_close(c, -ESHUTDOWN);
    } else if (!c->lingering) {
        c->lingering = true;
        send_rest_now(c); /* TLS: close_notify before the FIN */
        shutdown(c->fd, SHUT_WR);
    }
}

void crpc_conn_close_when_flushed(crpc_conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    if (crpc_conn_unsent(c) == 0 && !c->send_inflight)
        finish(c);
    else
        c->close_when_flushed = true;
}

void crpc_conn_end_input(crpc_conn *c, int err)
{
    CRPC_ASSERT_ON_LOOP(c->loop);
    if (c->state != CONN_OPEN)
        return;
    if (err == 0 && c->tls && crpc_tls_input_ended(c))
        return; /* a client gone midway through its handshake: refused and closed */
    if (c->input_ended) {
        if (err == 0 && !c->peer_done) { /* the EOF after a fatal frame */
            c->peer_done = true;
            if (c->recv_armed)
                c->loop->backend->recv_pause(c);
            if (c->lingering)
                crpc_conn_close(c, -ESHUTDOWN); /* all was sent; now nothing is unread */
        }
        return;
    }
    if (!c->ops->on_input_end) {
        crpc_conn_close(c, err);
        return;
    }
    c->input_ended = true;
    c->input_ended_ns = crpc_loop_now_ns(c->loop);
    c->partial_since_ns = 0;
    if (err == 0) {
        /* EOF: nothing more can arrive. (A fatal frame's caller is still walking c->in and
         * frees it itself; after one, reading goes on, discarding, until the EOF.) */
        c->peer_done = true;
        crpc_buf_free(&c->in);
        if (c->recv_armed)
            c->loop->backend->recv_pause(c);
    }
    c->ops->on_input_end(c, err);
}

/* Releases a closing slot once nothing holds it. */
void crpc_conn_unhold(crpc_conn *c)
{
    c->ops_inflight--;
    if (c->state == CONN_CLOSING && c->ops_inflight == 0)
        release(c);
}

/* Hands every whole frame in [p, p+n) to the owner; returns bytes consumed or -errno. */
static long deliver_frames(crpc_conn *c, const uint8_t *p, size_t n)
{
    size_t used = 0;
    while (c->state == CONN_OPEN && !c->input_ended) {
        uint32_t body_len;
        long r = crpc_frame_parse(p + used, n - used, c->max_frame_size, &body_len);
        if (r <= 0)
            return r < 0 ? r : (long)used;
        c->ops->on_frame(c, p + used + CRPC_FRAME_HEADER_SIZE, body_len);
        used += (size_t)r;
    }
    return (long)used;
}

void crpc_conn_received(crpc_conn *c, const uint8_t *data, size_t n)
{
    CRPC_ASSERT_ON_LOOP(c->loop);
    if (c->state != CONN_OPEN || c->input_ended)
        return; /* after a fatal frame (or what a receive had in hand at EOF): discarded */
    crpc_count(&c->loop->counters.bytes_in, n);
    c->last_rx_ns = crpc_loop_now_ns(c->loop);
    if (c->tls) {
        crpc_tls_received(c, data, n);
        if (c->state == CONN_OPEN)
            crpc_conn_check_output(c);
        return;
    }
    crpc_conn_plaintext(c, data, n);
    crpc_conn_check_output(c);
}

void crpc_conn_plaintext(crpc_conn *c, const uint8_t *data, size_t n)
{
    long r;
    if (c->in.len) {
        /* A frame is already partly here: complete it first. */
        if (crpc_buf_append(&c->in, data, n)) {
            crpc_conn_close(c, -ENOMEM);
            return;
        }
        r = deliver_frames(c, c->in.data, c->in.len);
        if (r > 0)
            crpc_buf_consume(&c->in, (size_t)r);
    } else {
        r = deliver_frames(c, data, n);
        if (r >= 0 && (size_t)r < n && c->state == CONN_OPEN && !c->input_ended &&
            crpc_buf_append(&c->in, data + r, n - (size_t)r))
            r = -ENOMEM;
    }
    if (r == -ENOMEM) {
        crpc_conn_close(c, (int)r);
        return;
    }
    if (r < 0) {
        /* Oversized or not a frame: nothing after it can be trusted, but the frames before
         * it were good and are answered. */
        crpc_count(&c->loop->counters.rejected, 1);
        crpc_conn_end_input(c, (int)r);
    }
    if (c->input_ended) {
        /* A fatal frame (the owner's, or the framing's): a partial frame can never be
         * completed now. */
        crpc_buf_free(&c->in);
        return;
    }
    /* Slowloris: remember since when the frame now pending has been half-sent. A frame
     * completed in this read means the one left over is a new one. */
    if (c->in.len == 0)
        c->partial_since_ns = 0;
    else if (r > 0 || !c->partial_since_ns)
        c->partial_since_ns = crpc_loop_now_ns(c->loop);
}

size_t crpc_conn_unsent(const crpc_conn *c)
{
    size_t n = c->out[c->out_cur].len + (c->tls ? c->tls->cout.len : 0);
    if (c->send_inflight)
        n += c->out[c->out_cur ^ 1].len - c->sent;
    return n;
}

void crpc_conn_check_output(crpc_conn *c)
{
    if (!c->max_output || c->state != CONN_OPEN)
        return;
    size_t unsent = crpc_conn_unsent(c);
    if (!c->paused && unsent > c->max_output) {
        c->paused = true;
        c->loop->backend->recv_pause(c);
    } else if (c->paused && unsent <= c->max_output / 2) {
        c->paused = false;
        if (c->partial_since_ns) /* the frame timeout counts again from now */
            c->partial_since_ns = crpc_loop_now_ns(c->loop);
        if (!c->peer_done) /* after a fatal frame it reads on, discarding */
            c->loop->backend->recv_resume(c);
    }
}

void crpc_conn_sent(crpc_conn *c, int err)
{
    crpc_buf *b = &c->out[c->out_cur ^ 1];
    c->send_inflight = false;
    if (err < 0) {
        b->len = 0; /* lost with the connection: nothing may resend it */
        c->sent = 0;
        crpc_conn_close(c, err);
        return;
    }
    if (c->state != CONN_OPEN)
        return;
    crpc_count(&c->loop->counters.bytes_out, b->len);
    b->len = 0;
    c->sent = 0;
    crpc_buf_trim(b, OUT_KEEP_BYTES);
    if (crpc_conn_out(c)->len || (c->tls && c->tls->cout.len))
        crpc_conn_mark_dirty(c);
    if (c->paused)
        crpc_conn_check_output(c); /* drained enough to read again? */
    if (c->close_when_flushed && crpc_conn_unsent(c) == 0)
        finish(c);
}

void crpc_conn_mark_dirty(crpc_conn *c)
{
    CRPC_ASSERT_ON_LOOP(c->loop);
    if (c->dirty)
        return;
    c->dirty = true;
    c->dirty_next = c->loop->dirty_head;
    c->loop->dirty_head = c;
}

/* Hands the collected output to the backend unless a send is under way already. */
static bool start_send(crpc_conn *c)
{
    if (c->state != CONN_OPEN || c->send_inflight)
        return false;
    if (c->tls) {
        if (!crpc_tls_seal(c)) /* the ciphertext is now in out[out_cur ^ 1] */
            return false;
    } else {
        if (!crpc_conn_out(c)->len)
            return false;
        c->out_cur ^= 1;
    }
    c->sent = 0;
    c->send_inflight = true;
    c->loop->backend->send(c);
    return true;
}

void crpc_loop_flush(crpc_loop *l)
{
    CRPC_ASSERT_ON_LOOP(l);
    crpc_conn *c = l->dirty_head;
    l->dirty_head = NULL;
    while (c) {
        crpc_conn *next = c->dirty_next;
        c->dirty = false;
        start_send(c);
        c = next;
    }
}

bool crpc_conn_flush_early(crpc_conn *c)
{
    return c->ops->flush_early && c->dirty && start_send(c);
}
