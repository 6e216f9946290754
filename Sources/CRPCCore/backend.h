/*
 * backend.h — the one seam between the core and the kernel's I/O interface.
 *
 * Framing, the envelope, the connection table, limits, deadlines and the C API are shared;
 * only how bytes move differs. Two backends implement this table: io_uring
 * (backend_uring.c, the fast path) and epoll (backend_epoll.c, for where io_uring is
 * refused: seccomp in containers, kernel.io_uring_disabled, gVisor). backend.c picks one
 * per loop when the loop starts; nothing else looks at which one runs.
 *
 * Every entry runs on the loop's own thread. Backends report back through the shared
 * completion functions in core.h: crpc_conn_received / crpc_conn_end_input / crpc_conn_sent
 * / crpc_conn_close for connections, a listener's on_accept / on_end for a listener.
 *
 * Slot lifetime: a backend that gives the kernel a reference to a connection (an armed
 * SQE) or calls back into the shared code for it takes crpc_conn_hold first and drops it
 * with crpc_conn_unhold, so a connection closed meanwhile is released only afterwards.
 */
#ifndef CRPC_BACKEND_H
#define CRPC_BACKEND_H

#include <stdint.h>

typedef struct crpc_loop crpc_loop;
typedef struct crpc_conn crpc_conn;
typedef struct crpc_listener crpc_listener;

#define CRPC_WAIT_FOREVER UINT64_MAX

typedef struct crpc_backend {
    const char *name; /* "io_uring" or "epoll", as crpc_loop_backend returns it */

    /* Sets up the loop's I/O state in loop->io. Returns 0 or a negated errno; on failure
     * it has released what it took, so another backend can be tried. */
    int (*init)(crpc_loop *loop);
    /* Releases loop->io (every connection is gone by then). */
    void (*teardown)(crpc_loop *loop);

    /* Starts accepting on lst->fd (sets lst->armed), or reports the failure with on_end. */
    void (*accept_arm)(crpc_loop *loop, crpc_listener *lst);
    /* Stops accepting; lst->armed is cleared now or when the kernel confirms (on_end
     * follows either way). The owner shuts the socket down when it stops for good. */
    void (*accept_stop)(crpc_loop *loop, crpc_listener *lst);

    /* A connection was just opened: start reading. Returns 0 or a negated errno (the
     * connection then never existed for the backend). */
    int (*conn_open)(crpc_conn *c);
    /* The connection has started closing (its socket is already shut down): stop
     * everything for it; its slot is released once unheld. */
    void (*conn_closing)(crpc_conn *c);
    /* Backpressure: stop reading / read again. */
    void (*recv_pause)(crpc_conn *c);
    void (*recv_resume)(crpc_conn *c);
    /* Sends c->out[c->out_cur ^ 1] from offset c->sent, resuming short sends itself, and
     * ends with crpc_conn_sent once it is all sent or the send failed. */
    void (*send)(crpc_conn *c);

    /* Submits what is queued and waits up to timeout_ns (0: do not block;
     * CRPC_WAIT_FOREVER) for events, the eventfd wake-up among them. */
    void (*wait)(crpc_loop *loop, uint64_t timeout_ns);
    /* Handles every event the last wait collected. */
    void (*dispatch)(crpc_loop *loop);
} crpc_backend;

extern const crpc_backend crpc_backend_uring;
extern const crpc_backend crpc_backend_epoll;

/* Picks and initialises the loop's backend (SWIFTRPC_BACKEND, else io_uring with a
 * fallback to epoll when it is refused), logging the choice once per process. Returns 0
 * or a negated errno: -EINVAL for an unknown SWIFTRPC_BACKEND value; the io_uring error
 * when io_uring was forced and refused; epoll's error when nothing could start. */
int crpc_backend_select(crpc_loop *loop);

#endif
