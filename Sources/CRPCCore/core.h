/*
 * core.h — the internal structures shared by the loop, connection, server and client
 * files. Nothing here is public; include/crpc.h is.
 *
 * THREADING RULE (see crpc.h): everything in crpc_loop below the "loop thread only"
 * line, and everything in crpc_conn, is touched only by the loop's own thread. Other
 * threads reach a loop only through crpc_loop_push().
 */
#ifndef CRPC_CORE_H
#define CRPC_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "backend.h"
#include "buf.h"
#include "crpc.h"
#include "pending.h"

typedef struct crpc_conn crpc_conn;
typedef struct crpc_tls_conn crpc_tls_conn;     /* tls.h */
typedef struct crpc_peer_store crpc_peer_store; /* peer.h */

/* Sets what crpc_last_error() returns on this thread (errors.c). */
void crpc_set_last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Confinement, checked in debug builds (SwiftPM's debug configuration defines DEBUG; the C
 * tests define CRPC_DEBUG) and compiled away in release ones: a loop-thread-only function
 * run on another thread while the loop's thread runs aborts, naming itself. Before the
 * loop starts and after it exits its owner is the one thread touching it: no check. */
#if defined(DEBUG) || defined(CRPC_DEBUG)
void crpc_loop_assert_current(const crpc_loop *loop, const char *where);
#define CRPC_ASSERT_ON_LOOP(loop) crpc_loop_assert_current((loop), __func__)
#else
#define CRPC_ASSERT_ON_LOOP(loop) ((void)0)
#endif

/* ------------------------------------------------------------------ tasks */

/* Work handed to a loop from any thread. `run` executes on the loop thread, owns the
 * task and frees it. When the loop has stopped, run is still called exactly once (with
 * loop->stopped set) so the task can fail its caller cleanly. */
typedef struct crpc_task {
    struct crpc_task *next;
    void (*run)(crpc_loop *loop, struct crpc_task *task);
} crpc_task;

/* A task that carries one frame, built on another thread, for the loop to append to a
 * connection's output: how every reply, call and notification made off the loop thread
 * reaches it. The owner's task struct starts with this; the frame's bytes follow the
 * owner's struct in the same allocation. */
typedef struct crpc_frame_task {
    crpc_task task;
    uint32_t len;
    const uint8_t *frame;
} crpc_frame_task;

/* Allocates an owner's task of `size` bytes (zeroed, its crpc_frame_task first) with a copy
 * of `frame` (NULL: none) after it, and `run` set. NULL when out of memory. The owner
 * frees it with free() once run. */
void *crpc_frame_task_new(size_t size, void (*run)(crpc_loop *, crpc_task *), const crpc_buf *frame);

/* Pushes a task; wakes the loop only if it sleeps. Returns 0 or -ESHUTDOWN (the loop has
 * exited and will never run it: the caller still owns the task). */
int crpc_loop_push(crpc_loop *loop, crpc_task *task);

/* -------------------------------------------------------------- deadlines */

/* Something on a loop with deadlines (a client's calls with timeouts). The loop sleeps no
 * later than the earliest next_deadline and then calls expire, which ends what is due and
 * sets next_deadline again (0: none left; the source then unlinks itself). next_deadline
 * may be early (a lower bound): expire just finds nothing due. Loop thread only. */
typedef struct crpc_deadline_source {
    struct crpc_deadline_source *next, *prev;
    bool linked;
    uint64_t next_deadline; /* CLOCK_MONOTONIC ns */
    void (*expire)(struct crpc_deadline_source *src, uint64_t now);
} crpc_deadline_source;

/* Makes sure the loop watches `src`, whose earliest deadline is now at most `deadline`. */
void crpc_loop_watch_deadline(crpc_loop *loop, crpc_deadline_source *src, uint64_t deadline);

/* Stops watching `src`. */
void crpc_loop_unwatch_deadline(crpc_loop *loop, crpc_deadline_source *src);

/* CLOCK_MONOTONIC now, in ns. */
uint64_t crpc_monotonic_ns(void);

/* What the loop's owner plugs in (redis ae's beforesleep, in spirit): the loop knows tasks,
 * deadlines, wake-ups, its backend and these, and never who its owner is. Set before
 * crpc_loop_start; both run on the loop thread. */
typedef struct crpc_loop_hooks {
    void *ctx;
    void (*on_start)(crpc_loop *loop, void *ctx); /* before the first iteration */
    void (*on_stop)(crpc_loop *loop, void *ctx);  /* stop requested: take no new work (before
                                                     the loop closes its connections) */
} crpc_loop_hooks;

void crpc_loop_set_hooks(crpc_loop *loop, const crpc_loop_hooks *hooks);

/* Keeps the loop from exiting after a stop while the kernel still holds something of its
 * owner's (an armed accept), until the matching unhold. Loop thread only. */
static inline void crpc_loop_hold(crpc_loop *loop);
static inline void crpc_loop_unhold(crpc_loop *loop);

/* ----------------------------------------------------------- listeners */

/* A listening socket served by one loop. Its owner decides what an accepted socket
 * becomes; the backend only arms, stops and reports. Loop thread only. */
typedef struct crpc_listener {
    int fd;
    uint32_t index;         /* in its loop's listener table (names it in user_data) */
    bool armed;             /* the backend is accepting on it */
    /* A socket was accepted (the owner has it now). Returns false to pause: the backend
     * stops accepting until the owner arms it again. */
    bool (*on_accept)(struct crpc_listener *lst, int fd);
    /* Accepting has stopped (armed is clear): err -ECANCELED or 0 when the owner asked for
     * it, else the error (-EMFILE...). */
    void (*on_end)(struct crpc_listener *lst, int err);
} crpc_listener;

#define CRPC_MAX_LISTENERS 4

/* Adds `lst` to the loop's table (before crpc_loop_start). Returns 0 or -ENOSPC. */
int crpc_loop_add_listener(crpc_loop *loop, crpc_listener *lst);

/* The listener the backend's user_data names, or NULL. */
crpc_listener *crpc_loop_listener(crpc_loop *loop, uint32_t index);

/* Something on a loop with no connection to close that must still end its work when the
 * loop stops (a reconnecting client's waiting calls). Loop thread only. */
typedef struct crpc_stop_hook {
    struct crpc_stop_hook *next, *prev;
    bool linked;
    void (*on_stop)(struct crpc_stop_hook *hook);
} crpc_stop_hook;

void crpc_loop_add_stop_hook(crpc_loop *loop, crpc_stop_hook *hook);
void crpc_loop_remove_stop_hook(crpc_loop *loop, crpc_stop_hook *hook);

/* ------------------------------------------------------------ connections */

typedef struct crpc_conn_ops {
    /* One complete frame body; valid only during the call. */
    void (*on_frame)(crpc_conn *c, const uint8_t *body, uint32_t len);
    /* The connection starts closing (err: 0 for EOF, else a negated errno); once. */
    void (*on_close)(crpc_conn *c, int err);
    /* The peer will send nothing more we can read: end of input (err 0), or a frame that
     * cannot be parsed (err: -EBADMSG, -EMSGSIZE...) after the frames before it were handed
     * on. Reading has stopped for good; the owner finishes what it was given and closes the
     * connection itself (crpc_conn_close_when_flushed). NULL: the connection closes at once. */
    void (*on_input_end)(crpc_conn *c, int err);
    /* The slot is being released: no more completions will name it. */
    void (*on_release)(crpc_conn *c);
    /* Send output as soon as the input that produced it is handled (crpc_conn_flush_early). */
    bool flush_early;
} crpc_conn_ops;

enum crpc_conn_state { CONN_FREE = 0, CONN_OPEN, CONN_CLOSING };

struct crpc_conn {
    crpc_loop *loop;
    uint32_t slot;
    uint32_t gen;
    int fd;
    uint8_t state;          /* enum crpc_conn_state */
    bool recv_armed;        /* the backend is reading (io_uring: a multishot recv is armed) */
    bool send_inflight;
    bool dirty;             /* on the loop's dirty list, to be flushed */
    int ops_inflight;       /* holds: SQEs whose completions are still to come, or a
                               backend's call into the shared code under way */
    uint64_t last_rx_ns;    /* loop clock when bytes last arrived (heartbeats) */
    uint64_t partial_since_ns; /* loop clock when the pending partial frame began; 0: none */
    uint32_t inflight;      /* server: requests delivered and not yet answered */
    uint32_t max_output;    /* server: unsent bytes before reading pauses; 0: no limit */
    bool paused;            /* reading stopped until the output drains (backpressure) */
    bool recv_cancelling;   /* io_uring: we cancelled the armed receive to pause reading */
    uint32_t io_events;     /* epoll: the events registered for fd (0: not registered) */
    bool close_when_flushed; /* graceful shutdown: close once every reply has been sent */
    bool input_ended;       /* EOF or a fatal frame: nothing more is parsed (on_input_end) */
    bool peer_done;         /* EOF seen: nothing more will arrive, reading has stopped */
    bool lingering;         /* after a fatal frame, all sent: our side is shut for writing
                               and what still arrives is discarded until the peer's EOF */
    bool reset_on_close;    /* a close now cuts work short: reset, not an orderly end */
    uint64_t input_ended_ns; /* loop clock when the input ended */
    uint32_t max_frame_size;
    crpc_buf in;            /* a partial frame carried over between receives */
    crpc_buf out[2];        /* out[out_cur] collects; the other one is being sent */
    uint8_t out_cur;
    size_t sent;            /* bytes of the in-flight buffer already sent */
    crpc_conn *dirty_next;
    const crpc_conn_ops *ops;
    void *owner;            /* the crpc_server or crpc_client */
    crpc_tls_conn *tls;     /* the TLS filter (tls.h); NULL: plaintext, which pays nothing
                               but this pointer's test on receive and send */
    crpc_peer_store *peer;  /* server: who the peer is (peer.h); NULL on clients */
    crpc_pending_table streams; /* server: its streams in flight by sid (server_streams.c) */
};

/* Takes a free slot for fd and arms its receive. Returns the connection or NULL (fd is
 * then still the caller's). Loop thread only. */
crpc_conn *crpc_conn_open(crpc_loop *loop, int fd, const crpc_conn_ops *ops, void *owner,
                          uint32_t max_frame_size);

/* Starts closing: on_close runs now, the slot is released once its completions are in. */
void crpc_conn_close(crpc_conn *c, int err);

/* The peer's input has ended (err 0: EOF; else the fatal frame's error). With an
 * on_input_end op, reading stops and the owner decides when to close; without one the
 * connection closes now. Backends call it for EOF, conn.c for a frame that cannot be parsed,
 * owners for a frame whose envelope cannot be trusted. */
void crpc_conn_end_input(crpc_conn *c, int err);

/* Closes once everything written for the connection has been sent (now, if nothing is).
 * After a fatal frame, whose peer may still be sending, the close lingers: the write side
 * is shut and incoming bytes are discarded until the peer's EOF (closing with unread input
 * would make the kernel reset the connection and drop the replies queued before it). */
void crpc_conn_close_when_flushed(crpc_conn *c);

/* The buffer to encode output into; call crpc_conn_mark_dirty after writing. */
static inline crpc_buf *crpc_conn_out(crpc_conn *c) { return &c->out[c->out_cur]; }

/* Queues the connection for the send at the end of this loop iteration. */
void crpc_conn_mark_dirty(crpc_conn *c);

/* The connection in `slot` if it is open and of generation `gen`, else NULL. */
crpc_conn *crpc_conn_lookup(crpc_loop *loop, uint32_t slot, uint32_t gen);

/* Calls fn for every open connection of the loop (fn may close it). */
void crpc_conn_for_each_open(crpc_loop *loop, void (*fn)(crpc_conn *c, void *ctx), void *ctx);

/* True while any slot is taken (open, or closing and awaiting its completions). */
bool crpc_conn_any(const crpc_loop *loop);

/* Frees the slot table and every connection's memory (the loop has exited). */
void crpc_conn_table_free(crpc_loop *loop);

/* What the backends report (see backend.h). */

/* n bytes arrived for c (the bytes are valid only during the call): frames are handed on,
 * a partial one is kept (TLS: decrypted first). The connection may close meanwhile (check
 * c->state). */
void crpc_conn_received(crpc_conn *c, const uint8_t *data, size_t n);

/* n bytes of plaintext for the framing: what crpc_conn_received does once the bytes are
 * clear (the TLS filter calls it with what it decrypted). */
void crpc_conn_plaintext(crpc_conn *c, const uint8_t *data, size_t n);

/* The send of out[out_cur ^ 1] has ended: all of it went out (err 0) or it failed (err:
 * a negated errno; the connection closes). */
void crpc_conn_sent(crpc_conn *c, int err);

/* Keeps c's slot (and its buffers) from being released until the matching unhold. */
static inline void crpc_conn_hold(crpc_conn *c) { c->ops_inflight++; }
void crpc_conn_unhold(crpc_conn *c);

/* Bytes written for this connection and not yet sent. */
size_t crpc_conn_unsent(const crpc_conn *c);

/* Backpressure: stops reading while the unsent output is over max_output, and resumes
 * once it has drained below half. Call after adding output. */
void crpc_conn_check_output(crpc_conn *c);

/* Sends what every dirty connection has collected: one send per connection. */
void crpc_loop_flush(crpc_loop *loop);

/* Starts the send of what c has collected now, before the end of the iteration (it stays
 * on the dirty list; the iteration's flush then finds its send under way), if c's ops ask
 * for it (flush_early). Returns true if a send started. Backends call it for a connection
 * whose input they have just handed on while more events of the same batch wait: the peer
 * can work on these replies while this loop handles the rest, instead of both sides taking
 * turns. Servers opt in; clients do not: a client's early sends cost it a submit per
 * connection per iteration, and on W2 the client is the busier side (measured: server-only
 * early flush gave 2.20M calls/s and 0.45 us of client CPU per call, both sides 2.13M and
 * 0.47 us, median of 3 each). */
bool crpc_conn_flush_early(crpc_conn *c);

/* ------------------------------------------------------------------ loops */

/* Traffic counters of one loop. Only the loop thread writes them, so an update is a
 * relaxed load and store (no locked instruction on the hot path); any thread may read
 * them (crpc_server_get_stats sums a server's loops). */
typedef struct crpc_loop_counters {
    _Atomic uint64_t frames_in, frames_out, bytes_in, bytes_out, rejected, rejected_connections;
    _Atomic uint64_t tls_handshakes, rejected_handshakes;
} crpc_loop_counters;

static inline void crpc_count(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

struct crpc_loop {
    crpc_loop_config cfg;
    pthread_t thread;
    int index;                       /* within its server, for connection ids */
    _Atomic(crpc_task *) queue;      /* Treiber stack; CRPC_QUEUE_CLOSED once exited */
    atomic_int sleeping;             /* 1 while blocked waiting for events */
    atomic_bool stop_requested;
    atomic_bool joining;             /* one crpc_loop_stop caller joins the thread */
    atomic_int state;                /* 0 new, 1 running, 2 exited, -1 failed */
    atomic_uint open_conns;
    _Atomic uint64_t now_ns;         /* CLOCK_MONOTONIC when this iteration woke */
    int event_fd;
    int start_error;
    pthread_mutex_t start_mu;
    pthread_cond_t start_cv;

    const crpc_backend *backend;     /* set once at start, before state turns 1 */

    /* ---- loop thread only ---- */
    void *io;                        /* the backend's own state */
    bool stopped;                    /* tasks run after exit see this */
    crpc_conn **conns;
    uint32_t conn_cap;
    uint32_t *free_slots;
    uint32_t nfree;
    crpc_conn *dirty_head;
    crpc_deadline_source *deadlines; /* sources with pending deadlines */
    uint64_t deadlines_gen;          /* bumped when that list changes */
    crpc_decoder *dec;
    crpc_loop_hooks hooks;           /* set before start */
    crpc_listener *listeners[CRPC_MAX_LISTENERS]; /* set before start */
    uint32_t nlisteners;
    unsigned holds;                  /* crpc_loop_hold: the loop exits only at 0 */
    atomic_int helpers;              /* threads that may still push to this loop (client
                                        reconnects); destroy waits for them */
    struct crpc_stop_hook *stop_hooks; /* told when the loop stops (loop thread only) */
    crpc_loop_counters counters;     /* this loop's traffic (crpc_server_get_stats) */
};

static inline void crpc_loop_hold(crpc_loop *loop) { loop->holds++; }
static inline void crpc_loop_unhold(crpc_loop *loop) { loop->holds--; }

#define CRPC_QUEUE_CLOSED ((crpc_task *)1)

/* The loop the calling thread runs, or NULL. */
crpc_loop *crpc_loop_current(void);

/* Connection ids: loop index (8 bits) | slot (24) | generation (32). */
static inline crpc_conn_id crpc_conn_id_make(const crpc_conn *c)
{
    return (uint64_t)(uint8_t)c->loop->index << 56 | (uint64_t)c->slot << 32 | c->gen;
}

#endif
