/*
 * stream.h — a stream's state, shared by its three files:
 *   stream.c          the handle: references, credit, the crpc_stream_* functions and the
 *                     hand-over of their frames to the loop, in order;
 *   server_streams.c  a server connection's streams: the table by sid, their frames, their
 *                     ends (server.c hands them over);
 *   client_streams.c  a client's streams: opening, their frames, their end (the client's
 *                     pending table holds them beside its calls).
 * Nothing here is public; include/crpc.h is.
 *
 * Credit the peer granted us (what we may send) is read and taken on any thread, lock-free:
 * both counts live in one 64-bit atomic, messages in the high half, bytes in the low one.
 * Credit we granted the peer (what it may still send) is the loop's alone, as is whether
 * the stream is still in flight (`live`). As a receiver we forgive a peer's overshoot
 * (its byte credit floors at zero), as a sender we keep our own as a debt: lenient to
 * others, strict with ourselves.
 */
#ifndef CRPC_STREAM_H
#define CRPC_STREAM_H

#include "core.h"

struct crpc_stream {
    atomic_int refs;            /* the core's (while live) and the application's */
    uint8_t kind;               /* enum crpc_stream_kind */
    bool is_server;
    uint32_t sid;               /* client: set on the loop before any credit can arrive */
    crpc_loop *loop;
    uint32_t max_frame_size;

    /* server */
    crpc_server *server;
    uint32_t slot, gen;         /* its connection */
    _Atomic(void *) user;       /* crpc_stream_set_user */

    /* client */
    crpc_client *client;
    crpc_stream_fn fn;
    void *ctx;
    uint64_t token;             /* the call id its pending entry carries */

    /* any thread */
    _Atomic uint64_t send_credit; /* messages << 32 | bytes we may send (a signed 32-bit
                                     count: an overshoot leaves a debt, see stream.c) */
    atomic_bool want_credit;    /* a send was refused for credit since the last grant */
    atomic_uint in_transit;     /* frames handed to the loop and not appended yet */
    atomic_bool ended;          /* over: nothing more is sent (a hint off the loop) */
    atomic_bool half_closed;    /* client: the application half-closed */
    atomic_bool accepted;       /* server: the first credit frame is written;
                                   client: it has arrived */
    atomic_bool ending;         /* server: crpc_stream_end was called (once) */

    /* loop thread only */
    bool live;                  /* in flight: its table holds the core's reference */
    uint32_t recv_messages;     /* what the peer may still send us */
    uint32_t recv_bytes;
};

/* The operations a stream's frames carry to the loop. */
enum stream_op { STREAM_SEND, STREAM_GRANT, STREAM_ACCEPT, STREAM_HALF_CLOSE, STREAM_END, STREAM_CANCEL };

/* A new stream with two references (the core's and the application's); NULL: no memory. */
crpc_stream *crpc_stream_new(crpc_loop *loop, int kind, bool is_server, uint32_t max_frame_size);

/* Drops a reference; the last frees the stream (a server's on_stream_release first). */
void crpc_stream_unref(crpc_stream *s);

/* Adds credit the peer granted us (saturating); true when a send had been refused for
 * the lack of it (the owner then says WRITABLE). Any thread. */
bool crpc_stream_add_credit(crpc_stream *s, uint32_t messages, uint32_t bytes);

/* Adds credit we grant the peer (saturating). Loop thread only. */
void crpc_stream_add_recv(crpc_stream *s, uint32_t messages, uint32_t bytes);

/* Takes the credit for one received element of `len` body bytes; false when the peer had
 * none (a credit violation). Loop thread only. */
bool crpc_stream_take_recv(crpc_stream *s, uint32_t len);

/* The side-specific work of one operation on the loop thread: append `frame` (NULL: none
 * made off the loop; encode it here) to the stream's connection and do what the op means.
 * Returns 0, or -EPIPE when the stream is no longer live (nothing is written). */
int server_stream_run(crpc_stream *s, int op, const uint8_t *frame, uint32_t len,
                      uint32_t messages, uint32_t bytes, const crpc_reply *reply,
                      const crpc_ext_entry *ext, uint32_t ext_count);
int client_stream_run(crpc_stream *s, int op, const uint8_t *frame, uint32_t len,
                      uint32_t messages, uint32_t bytes);

#endif
