/*
 * client.h — the client's internals, shared by its three files:
 *   client.c            the handle: connecting, its connection's ops, closing, statistics;
 *   client_calls.c      calls, notifications, cancels and timeouts;
 *   client_reconnect.c  heartbeats, the reconnect thread and its backoff, the backlog of
 *                       calls made while reconnecting.
 * Nothing here is public; include/crpc.h is.
 */
#ifndef CRPC_CLIENT_H
#define CRPC_CLIENT_H

#include "core.h"
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
    char *server_name;            /* TLS: SNI and the name the certificate must carry */
    crpc_tls_conn *fresh_tls;     /* TLS: a handshaken session waiting for its attach */
    char failure[160];            /* why the client gave up for good (a server certificate
                                     that does not verify, the server refusing ours): written
                                     once, before failed_for_good is set (release) */
    atomic_bool failed_for_good;  /* read (acquire) before failure is */

    /* ---- loop thread only ---- */
    crpc_conn *conn;              /* NULL once the connection has started closing */
    crpc_pending_table pending;
    crpc_deadline_source deadlines; /* call deadlines and heartbeats */
    crpc_buf backlog;               /* frames of calls made while reconnecting */
    crpc_stop_hook stop_hook;       /* while reconnecting: the loop stopping ends the calls */
    bool ping_outstanding;          /* a heartbeat rpc.ping awaits its reply */
    bool heard_back;                /* a frame came on this connection (since it opened) */
    /* Cancels that arrived (on the loop thread) before their call's hand-over task: the
     * call ends cancelled when that task runs. Emptied whenever no call is in transit. */
    uint64_t early_cancels[EARLY_CANCELS];
    unsigned early_cancel_count;
};

/* Work handed to the client's loop from another thread: a call, a notification or a
 * cancel, carrying the frame built on the caller's thread (crpc_frame_task). */
typedef struct client_task {
    crpc_frame_task handoff;
    crpc_client *client;
    crpc_call_fn cb;
    void *ctx;
    uint64_t token;
    uint64_t deadline;
} client_task;

static inline crpc_client *client_of_deadlines(crpc_deadline_source *src)
{
    return (crpc_client *)((char *)src - offsetof(crpc_client, deadlines));
}

/* The connection's ops (client.c). */
extern const crpc_conn_ops client_conn_ops;

/* Drops a reference; the last one frees the handle (client.c). */
void client_unref(crpc_client *c);

/* Ends a call with `status` and nothing else to report (client.c). */
void client_complete(crpc_call_fn cb, void *ctx, int status, uint32_t msgid);

/* The same with why, in words (NULL: nothing to say) (client.c). */
void client_complete_why(crpc_call_fn cb, void *ctx, int status, uint32_t msgid, const char *why);

/* Connects to the client's host (TLS: and handshakes) within the connect timeout; the
 * fd, or a negated errno with the reason in crpc_last_error(). The TLS session waits in
 * c->fresh_tls (client.c). Any thread. */
int client_dial(crpc_client *c);

/* A task for c's loop carrying `frame` (NULL: none), fields zeroed (client.c). */
client_task *client_task_new(crpc_client *c, void (*run)(crpc_loop *, crpc_task *), const crpc_buf *frame);

/* Registers a call and appends its frame, msgid patched in. Loop thread only
 * (client_calls.c). Returns 0; -ENOMEM; the encoder's errors. */
int client_enqueue_call(crpc_client *c, uint64_t token, crpc_call_fn cb, void *ctx,
                        const crpc_call *call, const uint8_t *frame, uint32_t len,
                        uint64_t deadline, uint32_t *msgid_out);

/* The deadline `timeout_us` from now, on the caller's clock (0: none) (client_calls.c). */
uint64_t client_deadline(uint64_t timeout_us);

/* Whether `token` was cancelled before its call reached the loop (and forgets it)
 * (client_calls.c). */
bool client_take_early_cancel(crpc_client *c, uint64_t token);

/* An element or credit frame (body length `len`; decode_err: what decoding said) for a
 * stream of the client; frames for ids that are not streams in flight are dropped
 * (client_streams.c). */
void client_stream_frame(crpc_client *c, const crpc_message *m, uint32_t len, int decode_err);

/* The deadline source's expiry: timeouts, then the heartbeat (client_calls.c). */
void client_expire_calls(crpc_deadline_source *src, uint64_t now);

/* Heartbeats: returns when to look again (0: off or no connection) (client_reconnect.c). */
uint64_t client_heartbeat(crpc_client *c, uint64_t now);

/* The connection is lost: a thread re-makes it (client_reconnect.c). */
void client_start_reconnect(crpc_client *c);

/* Reconnecting, with no connection to close: the waiting calls end now with `status`
 * (and why, when not NULL) (client_reconnect.c). */
void client_end_waiting_calls(crpc_client *c, int status, const char *why);

#endif
