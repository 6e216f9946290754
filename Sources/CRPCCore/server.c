/*
 * server.c — the RPC server: listening loops, request delivery and replies.
 *
 * Each loop owns one SO_REUSEPORT listening socket, accepted from by its backend
 * (io_uring: one accept at a time; epoll: accept4 until EAGAIN), so accepted connections
 * are spread over the loops by the kernel and never migrate. What to do with an accepted
 * socket, and how to back off when accepting fails, is decided here.
 *
 * Descriptors (server_limits.c picks the limit and the reserve): the process must never
 * reach its RLIMIT_NOFILE. After each accept the server looks at the lowest free number;
 * when it is in the reserve, accepting pauses, clients wait in the listen backlog, and the
 * janitor resumes once a descriptor below the reserve is free again. A socket that still
 * lands in the reserve (another thread took the last one meanwhile) is closed at once. Every frame is
 * decoded on its loop thread and delivered to the user's callback; `rpc.ping` is
 * answered right there. crpc_server_reply may come from any thread: on the owning loop
 * it encodes straight into the connection's output, elsewhere it builds the frame on the
 * caller's thread and hands it over as a task.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "envelope.h"
#include "net.h"
#include "peer.h"
#include "server.h"
#include "tls.h"
#include "userdata.h"

/* --------------------------------------------------------------- accepting */

static void server_on_frame(crpc_conn *c, const uint8_t *body, uint32_t len);
static void server_on_close(crpc_conn *c, int err)
{
    crpc_server *srv = c->owner;
    server_streams_closed(c);
    if (srv->cfg.on_conn_ended) {
        /* Closed once everything its client sent was answered: an orderly end. */
        int reason = c->input_ended && err == -ESHUTDOWN ? 0 : err ? err : -ECONNRESET;
        srv->cfg.on_conn_ended(srv->cfg.user, crpc_conn_id_make(c), reason);
    } else if (srv->cfg.on_conn_closed) {
        srv->cfg.on_conn_closed(srv->cfg.user, crpc_conn_id_make(c));
    }
}

/* The client has half-closed, or sent a frame that cannot be parsed after good ones: the
 * calls it sent before still run, their replies are sent, then the connection closes (the
 * janitor cuts it off after eof_drain_ms). */
static void server_on_input_end(crpc_conn *c, int err)
{
    (void)err;
    /* A stream lives on what its client sends (credit, elements, the half-close): with the
     * client's input over, its streams end (told as unavailable); its calls drain. */
    server_streams_closed(c);
    if (c->inflight == 0)
        crpc_conn_close_when_flushed(c);
}

static void server_on_release(crpc_conn *c)
{
    crpc_server *srv = c->owner;
    if (c->peer && c->peer->peer.user && srv->cfg.on_peer_release)
        srv->cfg.on_peer_release(srv->cfg.user, c->peer->peer.user);
}

static const crpc_conn_ops server_conn_ops = {
    .on_frame = server_on_frame,
    .on_close = server_on_close,
    .on_input_end = server_on_input_end,
    .on_release = server_on_release,
    .flush_early = true,
};

/* Arms every listener of the loop that is not accepting. */
static void arm_accept(server_loop *sl)
{
    for (unsigned i = 0; i < sl->nlisteners; i++)
        if (!sl->listeners[i].lst.armed)
            sl->loop->backend->accept_arm(sl->loop, &sl->listeners[i].lst);
}

/* Stops every listener of the loop and shuts its socket down. */
static void stop_listeners(server_loop *sl)
{
    for (unsigned i = 0; i < sl->nlisteners; i++) {
        sl->loop->backend->accept_stop(sl->loop, &sl->listeners[i].lst);
        shutdown(sl->listeners[i].lst.fd, SHUT_RDWR);
    }
}

static server_loop *loop_of(crpc_listener *lst)
{
    return ((server_listener *)((char *)lst - offsetof(server_listener, lst)))->sl;
}

/* Once a second: closes connections that have held a partial frame for longer than the
 * frame timeout (slowloris), so a trickle of bytes cannot pin a connection for ever, and
 * those whose client half-closed and whose calls outran the drain time; resumes accepting
 * after a back-off. */
static void expire_conn(crpc_conn *c, void *ctx)
{
    const server_loop *sl = ctx;
    uint64_t now = crpc_loop_now_ns(c->loop);
    uint64_t limit = (uint64_t)sl->srv->cfg.frame_timeout_ms * 1000000u;
    uint64_t drain = (uint64_t)sl->srv->cfg.eof_drain_ms * 1000000u;
    if (c->tls) {
        crpc_tls_janitor(c, now); /* too slow a handshake; idle buffers */
        if (c->state != CONN_OPEN)
            return;
    }
    /* A paused connection is not the client's doing: the server chose not to read. */
    if (!c->paused && c->partial_since_ns && now - c->partial_since_ns > limit)
        crpc_conn_close(c, -ETIMEDOUT);
    else if (c->input_ended && now - c->input_ended_ns > drain) {
        /* Its calls ran out of drain time (or its peer never ended a lingering close):
         * unanswered calls make it a reset, so nobody mistakes it for an orderly end. */
        c->reset_on_close = c->inflight > 0;
        crpc_conn_close(c, -ETIMEDOUT);
    }
}

static void janitor(crpc_deadline_source *src, uint64_t now)
{
    server_loop *sl = (server_loop *)((char *)src - offsetof(server_loop, janitor));
    crpc_conn_for_each_open(sl->loop, expire_conn, sl);
    if (sl->accept_backoff && !sl->loop->stopped && !sl->accept_stopped &&
        server_descriptor_free(sl->srv, sl->listeners[0].lst.fd)) {
        sl->accept_backoff = false;
        arm_accept(sl);
    }
    src->next_deadline = now + 1000000000ull;
}

/* The loop's start hook: the janitor and the listener begin. */
static void loop_started(crpc_loop *l, void *ctx)
{
    server_loop *sl = ctx;
    sl->janitor.expire = janitor;
    crpc_loop_watch_deadline(l, &sl->janitor, crpc_monotonic_ns() + 1000000000ull);
    arm_accept(sl);
}

/* The loop's stop hook: no more accepts (its connections close next). */
static void loop_stopping(crpc_loop *l, void *ctx)
{
    (void)l;
    stop_listeners(ctx);
}

static bool on_accept(crpc_listener *lst, int fd)
{
    server_loop *sl = loop_of(lst);
    crpc_server *srv = sl->srv;
    crpc_loop *l = sl->loop;
    if (fd >= srv->fd_ceiling) {
        /* The reserve is being eaten: refuse this one and wait for descriptors to free up. */
        close(fd);
        crpc_count(&l->counters.rejected_connections, 1);
        sl->accept_backoff = true;
        return false;
    }
    if (l->stopped || sl->accept_stopped || crpc_server_connection_count(srv) >= srv->cfg.max_connections) {
        close(fd); /* stopping, draining, or at the connection limit: refuse this one */
        crpc_count(&l->counters.rejected_connections, 1);
        return true;
    }
    crpc_net_tune(fd);
    crpc_conn *c = crpc_conn_open(l, fd, &server_conn_ops, srv, srv->cfg.max_frame_size);
    if (c) {
        c->max_output = srv->cfg.max_output;
        c->peer = crpc_peer_new(fd);
        if (srv->tls_on) {
            pthread_mutex_lock(&srv->tls_mu); /* crpc_server_reload_tls may swap it */
            c->tls = crpc_tls_accept(srv->tls);
            pthread_mutex_unlock(&srv->tls_mu);
            if (c->tls)
                c->tls->started_ns = crpc_loop_now_ns(l);
        }
        if (!c->peer || (srv->tls_on && !c->tls))
            crpc_conn_close(c, -ENOMEM); /* refuse this one, keep serving */
    } else {
        close(fd); /* out of memory or slots: refuse this one, keep serving */
    }
    if (!server_descriptor_free(srv, lst->fd)) {
        sl->accept_backoff = true; /* the next one would fall in the reserve: wait instead */
        return false;
    }
    return true;
}

/* Errors after which accepting again at once would fail again at once: the process or the
 * system is out of something, or the listener itself is unusable (-EINVAL). Any other (a
 * connection aborted before it was taken, a firewall refusing one) concerns that
 * connection only, and accepting goes on. */
static bool must_back_off(int err)
{
    return err == -EMFILE || err == -ENFILE || err == -ENOBUFS || err == -ENOMEM || err == -EINVAL;
}

static void on_accept_end(crpc_listener *lst, int err)
{
    server_loop *sl = loop_of(lst);
    if (must_back_off(err))
        sl->accept_backoff = true; /* re-arming now would spin; the janitor re-arms within a
                                      second */
    else if (!sl->loop->stopped && !sl->accept_stopped && !sl->accept_backoff)
        sl->loop->backend->accept_arm(sl->loop, lst);
}

/* ---------------------------------------------------------------- requests */

static void reply_error(crpc_conn *c, uint32_t msgid, int32_t code, const char *message)
{
    if (crpc_encode_error(crpc_conn_out(c), msgid, code, message, c->max_frame_size) == 0) {
        crpc_count(&c->loop->counters.frames_out, 1);
        crpc_conn_mark_dirty(c);
    }
}

static int is_method(const crpc_message *m, const char *name, uint32_t n)
{
    return m->method_len == n && memcmp(m->method, name, n) == 0;
}

static void server_on_frame(crpc_conn *c, const uint8_t *body, uint32_t len)
{
    crpc_server *srv = c->owner;
    crpc_request req;
    req.stream = NULL;
    crpc_count(&c->loop->counters.frames_in, 1);
    int err = crpc_envelope_decode(c->loop->dec, body, len, &req.msg);
    if (err == -ENOMEM) {
        crpc_conn_close(c, err);
        return;
    }
    if (err == -EBADMSG) {
        /* No msgid to answer: nothing after this frame can be trusted. What came before
         * it is answered, then the connection closes. */
        crpc_count(&c->loop->counters.rejected, 1);
        crpc_conn_end_input(c, err);
        return;
    }
    if (err && req.msg.type >= CRPC_MSG_ELEMENT) {
        /* A stream's frame that does not decode ends that stream (answered 3). */
        server_stream_frame(c, &req, len, err);
        return;
    }
    if (err) {
        crpc_count(&c->loop->counters.rejected, 1);
        /* The msgid is known: a request gets status 3 and the connection stays open. */
        if (req.msg.type == CRPC_MSG_REQUEST)
            reply_error(c, req.msg.msgid, CRPC_STATUS_INVALID_ARGUMENT,
                        err == -ELOOP  ? "invalid params: nested too deeply"
                        : err == -E2BIG ? "invalid metadata: too many ext entries"
                                        : "invalid params: envelope does not decode");
        return;
    }
    switch (req.msg.type) {
    case CRPC_MSG_REQUEST:
        if (is_method(&req.msg, "rpc.ping", 8)) {
            crpc_reply nil = {0};
            if (crpc_encode_response(crpc_conn_out(c), req.msg.msgid, &nil, c->max_frame_size) == 0) {
                crpc_count(&c->loop->counters.frames_out, 1);
                crpc_conn_mark_dirty(c);
            }
            return;
        }
        if (atomic_load_explicit(&srv->draining, memory_order_relaxed)) {
            reply_error(c, req.msg.msgid, CRPC_STATUS_UNAVAILABLE, "server is shutting down");
            return;
        }
        if (c->inflight >= srv->cfg.max_inflight) {
            crpc_count(&c->loop->counters.rejected, 1);
            reply_error(c, req.msg.msgid, CRPC_STATUS_RESOURCE_EXHAUSTED, "too many calls in flight on this connection");
            return;
        }
        if (req.msg.stream_kind) {
            err = server_stream_open(c, &req);
            if (err == -ENOMEM)
                reply_error(c, req.msg.msgid, CRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory opening the stream");
            else if (err)
                reply_error(c, req.msg.msgid, CRPC_STATUS_INVALID_ARGUMENT, "stream id already in flight");
            return;
        }
        c->inflight++;
        atomic_fetch_add_explicit(&srv->inflight, 1, memory_order_relaxed);
        break;
    case CRPC_MSG_ELEMENT:
    case CRPC_MSG_CREDIT:
    case CRPC_MSG_HALF_CLOSE:
        server_stream_frame(c, &req, len, 0);
        return;
    case CRPC_MSG_CANCEL:
        if (server_stream_frame(c, &req, len, 0))
            return;
        break;
    case CRPC_MSG_NOTIFICATION:
        break;
    default:
        return; /* a response sent to a server answers nothing: dropped */
    }
    req.conn = crpc_conn_id_make(c);
    req.server = srv;
    req.peer = &c->peer->peer; /* every server connection has one (on_accept) */
    srv->cfg.on_request(srv->cfg.user, &req);
}

/* ----------------------------------------------------------------- replies */

/* A reply made off the loop thread, handed over with its frame. */
typedef struct reply_task {
    crpc_frame_task handoff;
    uint32_t slot, gen;
} reply_task;

/* A request of `c` has its answer, already in the output: one fewer in flight. A client
 * that has stopped sending is closed once the last of its replies is sent. */
void server_answered(crpc_conn *c)
{
    if (c->inflight)
        c->inflight--;
    if (c->input_ended && c->inflight == 0)
        crpc_conn_close_when_flushed(c);
}

static void run_reply(crpc_loop *l, crpc_task *t)
{
    reply_task *r = (reply_task *)t;
    crpc_conn *c = crpc_conn_lookup(l, r->slot, r->gen);
    if (c) {
        if (crpc_buf_append(crpc_conn_out(c), r->handoff.frame, r->handoff.len) == 0) {
            crpc_count(&l->counters.frames_out, 1);
            crpc_conn_mark_dirty(c);
            crpc_conn_check_output(c);
        }
        server_answered(c);
    }
    free(r);
}

static int reply(crpc_server *srv, crpc_conn_id conn, uint32_t msgid, const crpc_reply *reply);

int crpc_server_reply(crpc_server *srv, crpc_conn_id conn, uint32_t msgid, const crpc_reply *r)
{
    int rc = reply(srv, conn, msgid, r);
    /* The drain counts requests answered, or whose caller has gone; a reply refused for its
     * size or content leaves the request to be answered again. */
    if (rc == 0 || rc == -ENOTCONN || rc == -ESHUTDOWN)
        atomic_fetch_sub_explicit(&srv->inflight, 1, memory_order_relaxed);
    return rc;
}

static int reply(crpc_server *srv, crpc_conn_id conn, uint32_t msgid, const crpc_reply *reply)
{
    unsigned idx = (unsigned)(conn >> 56);
    uint32_t slot = (uint32_t)(conn >> 32) & CRPC_SLOT_MAX, gen = (uint32_t)conn;
    if (idx >= srv->nloops)
        return -ENOTCONN;
    crpc_loop *l = srv->loops[idx];
    uint32_t max = srv->cfg.max_frame_size;

    if (crpc_loop_current() == l) {
        crpc_conn *c = crpc_conn_lookup(l, slot, gen);
        if (!c)
            return -ENOTCONN;
        int err = crpc_encode_response(crpc_conn_out(c), msgid, reply, max);
        if (!err) {
            crpc_count(&l->counters.frames_out, 1);
            crpc_conn_mark_dirty(c);
            crpc_conn_check_output(c); /* replies from posted work count toward the cap too */
            server_answered(c);
        }
        return err;
    }
    crpc_buf *scratch = crpc_thread_scratch();
    if (!scratch)
        return -ENOMEM;
    int err = crpc_encode_response(scratch, msgid, reply, max);
    if (err)
        return err;
    reply_task *r = crpc_frame_task_new(sizeof(*r), run_reply, scratch);
    if (!r)
        return -ENOMEM;
    r->slot = slot;
    r->gen = gen;
    err = crpc_loop_push(l, &r->handoff.task);
    if (err)
        free(r);
    return err;
}

/* --------------------------------------------------------------- lifecycle */

/* Stops and joins every loop; the loops' memory stays until destroy_loops, so replies
 * racing with the stop fail cleanly with -ESHUTDOWN instead of touching freed memory. */
static void stop_loops(crpc_server *srv)
{
    for (unsigned i = 0; i < srv->nloops; i++) {
        crpc_loop *l = srv->loops[i];
        if (l)
            crpc_loop_stop(l);
        /* The loop has exited (or never started): nothing can accept on it any more. */
        server_loop *sl = &srv->shards[i];
        for (unsigned k = 0; k < sl->nlisteners; k++) {
            if (sl->listeners[k].lst.fd >= 0) {
                close(sl->listeners[k].lst.fd);
                sl->listeners[k].lst.fd = -1;
            }
        }
    }
    if (srv->unix_file) {
        crpc_net_unlink_unix(srv->unix_file); /* every listener is closed: nobody serves it */
        free(srv->unix_file);
        srv->unix_file = NULL;
    }
}

static void destroy_loops(crpc_server *srv)
{
    stop_loops(srv);
    for (unsigned i = 0; i < srv->nloops; i++)
        crpc_loop_destroy(srv->loops[i]);
    free(srv->loops);
    free(srv->shards);
}

int crpc_server_post(crpc_server *srv, unsigned index, void (*fn)(void *arg), void *arg)
{
    if (index >= srv->nloops)
        return -EINVAL;
    return crpc_loop_post(srv->loops[index], fn, arg);
}

int crpc_server_on_loop(const crpc_server *srv, unsigned index)
{
    return index < srv->nloops && crpc_loop_is_current(srv->loops[index]);
}

int crpc_server_start(const crpc_server_config *cfg, crpc_server **out)
{
    crpc_set_last_error("%s", ""); /* only this call's reason, if it gives one */
    if (!cfg || !cfg->on_request)
        return -EINVAL;
    crpc_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->cfg = *cfg;
    pthread_mutex_init(&srv->tls_mu, NULL);
    if (cfg->tls) {
        if (!cfg->tls->server) {
            free(srv);
            return -EINVAL;
        }
        atomic_fetch_add(&cfg->tls->refs, 1);
        srv->tls = cfg->tls;
        srv->tls_on = true;
    }
    srv->cfg.tls = NULL; /* srv->tls is the one in force */
    if (!srv->cfg.host)
        srv->cfg.host = "127.0.0.1";
    if (!srv->cfg.max_frame_size)
        srv->cfg.max_frame_size = CRPC_DEFAULT_MAX_FRAME_SIZE;
    if (!srv->cfg.max_inflight)
        srv->cfg.max_inflight = CRPC_DEFAULT_MAX_INFLIGHT;
    if (!srv->cfg.max_connections)
        srv->cfg.max_connections = CRPC_DEFAULT_MAX_CONNECTIONS;
    if (!srv->cfg.max_output)
        srv->cfg.max_output = CRPC_DEFAULT_MAX_OUTPUT;
    if (!srv->cfg.frame_timeout_ms)
        srv->cfg.frame_timeout_ms = CRPC_DEFAULT_FRAME_TIMEOUT_MS;
    if (!srv->cfg.eof_drain_ms)
        srv->cfg.eof_drain_ms = CRPC_DEFAULT_EOF_DRAIN_MS;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    srv->nloops = cfg->loops ? cfg->loops : (unsigned)(ncpu > 0 ? ncpu : 1);
    if (srv->nloops > 255)
        srv->nloops = 255; /* the loop index has 8 bits in a connection id */
    srv->loops = calloc(srv->nloops, sizeof(*srv->loops));
    srv->shards = calloc(srv->nloops, sizeof(*srv->shards));
    if (!srv->loops || !srv->shards) {
        free(srv->loops);
        free(srv->shards);
        crpc_tls_context_release(srv->tls);
        free(srv);
        return -ENOMEM;
    }
    server_apply_fd_limits(srv);
    int err = 0;
    uint16_t port = cfg->port;
    int unix_fd = -1;
    if (crpc_net_is_unix(srv->cfg.host)) {
        char why[256] = "";
        unix_fd = crpc_net_listen_unix(srv->cfg.host, srv->cfg.unix_mode, why, sizeof(why));
        if (unix_fd < 0) {
            crpc_set_last_error("%s", why);
            err = unix_fd;
        }
        /* The caller's host string need not outlive this call: stop unlinks our copy (for
         * an abstract name, crpc_net_unlink_unix does nothing). */
        if (unix_fd >= 0)
            srv->unix_file = strdup(srv->cfg.host);
        port = 0;
    }
    for (unsigned i = 0; i < srv->nloops && !err; i++) {
        crpc_loop_config lc = {.cpu = cfg->first_cpu + (int)i, .pin = cfg->pin_loops,
                               .max_depth = cfg->max_depth, .max_ext = cfg->max_ext};
        err = crpc_loop_create(&lc, &srv->loops[i]);
        if (err)
            break;
        crpc_loop *l = srv->loops[i];
        l->index = (int)i;
        server_loop *sl = &srv->shards[i];
        sl->srv = srv;
        sl->loop = l;
        crpc_loop_set_hooks(l, &(crpc_loop_hooks){.ctx = sl, .on_start = loop_started, .on_stop = loop_stopping});
        int fds[CRPC_MAX_LISTENERS];
        int n;
        if (unix_fd >= 0) {
            fds[0] = i == 0 ? unix_fd : fcntl(unix_fd, F_DUPFD_CLOEXEC, 0);
            n = fds[0] < 0 ? -errno : 1;
        } else {
            /* Every address the host resolves to; later loops share the port. */
            n = crpc_net_listen_all(srv->cfg.host, port, fds, CRPC_MAX_LISTENERS, &port);
        }
        if (n < 0)
            err = n;
        for (int k = 0; k < n; k++) {
            server_listener *sls = &sl->listeners[sl->nlisteners++];
            sls->sl = sl;
            sls->lst.fd = fds[k];
            sls->lst.on_accept = on_accept;
            sls->lst.on_end = on_accept_end;
            if (!err)
                err = crpc_loop_add_listener(l, &sls->lst);
        }
    }
    if (err && unix_fd >= 0 && srv->nloops && srv->shards[0].nlisteners == 0)
        close(unix_fd); /* never handed to a loop */
    srv->port = port;
    /* The loops read max_connections once they accept: set it before they start (the
     * descriptors they will open are counted in: a listener, an eventfd and a ring or
     * epoll set each, opened already or about to be). */
    server_limit_connections(srv);
    for (unsigned i = 0; i < srv->nloops && !err; i++)
        err = crpc_loop_start(srv->loops[i]);
    if (err) {
        destroy_loops(srv);
        crpc_tls_context_release(srv->tls);
        free(srv);
        return err;
    }
    *out = srv;
    return 0;
}

uint16_t crpc_server_port(const crpc_server *srv) { return srv->port; }

unsigned crpc_server_connection_count(const crpc_server *srv)
{
    unsigned n = 0;
    for (unsigned i = 0; i < srv->nloops; i++)
        n += atomic_load(&srv->loops[i]->open_conns);
    return n;
}

/* Graceful shutdown, first step (on each loop): refuse new connections from now on. */
static void stop_accepting(void *arg)
{
    server_loop *sl = arg;
    sl->accept_stopped = true;
    if (!sl->loop->stopped)
        stop_listeners(sl);
}

static void close_once_flushed(crpc_conn *c, void *ctx)
{
    (void)ctx;
    crpc_conn_close_when_flushed(c);
}

/* Graceful shutdown, last step: every connection closes once its replies are sent. */
static void close_when_flushed(void *arg)
{
    server_loop *sl = arg;
    crpc_conn_for_each_open(sl->loop, close_once_flushed, NULL);
}

/* Runs fn on every loop (a loop that has exited runs nothing: its connections are gone). */
static void post_to_loops(crpc_server *srv, void (*fn)(void *))
{
    for (unsigned i = 0; i < srv->nloops; i++)
        crpc_loop_post(srv->loops[i], fn, &srv->shards[i]);
}

void crpc_server_get_stats(const crpc_server *srv, crpc_server_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < srv->nloops; i++) {
        const crpc_loop_counters *k = &srv->loops[i]->counters;
        out->frames_in += atomic_load_explicit(&k->frames_in, memory_order_relaxed);
        out->frames_out += atomic_load_explicit(&k->frames_out, memory_order_relaxed);
        out->bytes_in += atomic_load_explicit(&k->bytes_in, memory_order_relaxed);
        out->bytes_out += atomic_load_explicit(&k->bytes_out, memory_order_relaxed);
        out->rejected_frames += atomic_load_explicit(&k->rejected, memory_order_relaxed);
        out->rejected_connections += atomic_load_explicit(&k->rejected_connections, memory_order_relaxed);
        out->tls_handshakes += atomic_load_explicit(&k->tls_handshakes, memory_order_relaxed);
        out->rejected_handshakes += atomic_load_explicit(&k->rejected_handshakes, memory_order_relaxed);
    }
}

unsigned crpc_server_inflight(const crpc_server *srv)
{
    long n = atomic_load_explicit(&srv->inflight, memory_order_relaxed);
    return n > 0 ? (unsigned)n : 0;
}

int crpc_server_shutdown(crpc_server *srv, uint32_t drain_ms)
{
    crpc_loop *cur = crpc_loop_current();
    for (unsigned i = 0; i < srv->nloops; i++)
        if (srv->loops[i] == cur)
            return -EDEADLK;
    atomic_store(&srv->draining, true);
    post_to_loops(srv, stop_accepting);
    uint64_t deadline = crpc_monotonic_ns() + (uint64_t)drain_ms * 1000000u;
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000};
    int drained = 0;
    while (!(drained = crpc_server_inflight(srv) == 0) && crpc_monotonic_ns() < deadline)
        nanosleep(&pause, NULL);
    /* Every call is answered: let the last replies reach the wire before closing. */
    post_to_loops(srv, close_when_flushed);
    while (crpc_server_connection_count(srv) > 0 && crpc_monotonic_ns() < deadline)
        nanosleep(&pause, NULL);
    stop_loops(srv);
    return drained ? 0 : -ETIMEDOUT;
}

int crpc_server_stop(crpc_server *srv)
{
    crpc_loop *cur = crpc_loop_current();
    for (unsigned i = 0; i < srv->nloops; i++)
        if (srv->loops[i] == cur)
            return -EDEADLK;
    stop_loops(srv);
    return 0;
}

void crpc_server_destroy(crpc_server *srv)
{
    if (!srv)
        return;
    destroy_loops(srv);
    crpc_tls_context_release(srv->tls);
    pthread_mutex_destroy(&srv->tls_mu);
    free(srv);
}

int crpc_server_reload_tls(crpc_server *srv, crpc_tls_context *tls)
{
    if (!srv->tls_on || !tls || !tls->server)
        return -EINVAL;
    atomic_fetch_add(&tls->refs, 1);
    pthread_mutex_lock(&srv->tls_mu);
    crpc_tls_context *old = srv->tls;
    srv->tls = tls;
    pthread_mutex_unlock(&srv->tls_mu);
    crpc_tls_context_release(old); /* open connections' SSL objects hold their SSL_CTX */
    return 0;
}

const char *crpc_server_backend(const crpc_server *srv)
{
    return srv->nloops ? crpc_loop_backend(srv->loops[0]) : NULL;
}
