/*
 * server.h — the server's internals, shared by its two files:
 *   server.c         listening loops, accepting, request delivery, replies, lifecycle;
 *   server_limits.c  the descriptor limit, the reserve and the connection limit.
 * Nothing here is public; include/crpc.h is.
 */
#ifndef CRPC_SERVER_H
#define CRPC_SERVER_H

#include "core.h"

typedef struct server_loop server_loop;

/* One listening socket of a loop: TCP, one per address the host resolves to (each loop has
 * its own SO_REUSEPORT sockets); a Unix socket, one shared by every loop (a dup each). */
typedef struct server_listener {
    crpc_listener lst;
    server_loop *sl;
} server_listener;

/* What the server keeps per loop: the listeners the loop serves and the janitor. Loop
 * thread only, but for the listeners' fds before start and after the loop has exited. */
struct server_loop {
    crpc_server *srv;
    crpc_loop *loop;
    server_listener listeners[CRPC_MAX_LISTENERS];
    unsigned nlisteners;
    crpc_deadline_source janitor;  /* closes connections stuck mid-frame or past their drain */
    bool accept_stopped;           /* graceful shutdown: no more accepts */
    bool accept_backoff;           /* accepting paused (EMFILE, the reserve): the janitor resumes */
};

struct crpc_server {
    crpc_server_config cfg;
    uint16_t port;
    unsigned nloops;
    crpc_loop **loops;
    server_loop *shards;    /* nloops of them, loops[i]'s in shards[i] */
    atomic_bool draining;   /* graceful shutdown: new requests get status 14 */
    atomic_long inflight;   /* requests delivered and not yet answered */
    crpc_server_limits limits;
    int fd_ceiling;         /* descriptors numbered from here on are the reserve; INT_MAX: none */
    char *unix_file;        /* the "unix:..." host listened on (our copy): its file is
                               removed at stop */
    bool tls_on;            /* every connection speaks TLS (set at start, never changes) */
    pthread_mutex_t tls_mu; /* guards tls: accepts read it, crpc_server_reload_tls swaps it */
    crpc_tls_context *tls;  /* NULL: plaintext */
};

/* Raises the soft descriptor limit to the hard one (where allowed) and picks the reserve.
 * Before the loops start, so their own descriptors come out of the raised limit. */
void server_apply_fd_limits(crpc_server *srv);

/* Lowers max_connections to what is left beside the reserve and what the process holds
 * once the loops run. */
void server_limit_connections(crpc_server *srv);

/* True when a descriptor below the reserve is free now (any_fd: one to F_DUPFD from). */
bool server_descriptor_free(const crpc_server *srv, int any_fd);

/* A request of `c` has its answer, already in the output: one fewer in flight (server.c). */
void server_answered(crpc_conn *c);

/* Streams (server_streams.c). An open request: registers the stream and delivers it;
 * -EEXIST (its sid is a stream in flight), -ENOMEM. */
int server_stream_open(crpc_conn *c, crpc_request *req);

/* An element, credit, half-close or cancel frame (`frame_len`: its body length; decode_err:
 * what decoding said) for a stream of `c`: handled, true; false for a cancel that names no
 * stream (a call's, delivered as before). */
bool server_stream_frame(crpc_conn *c, crpc_request *req, uint32_t frame_len, int decode_err);

/* `c` is closing, or its input ended: its streams end (told as unavailable). */
void server_streams_closed(crpc_conn *c);

#endif
