/*
 * backend_epoll.c — the epoll backend, for where io_uring is refused (Docker's default
 * seccomp profile, kernel.io_uring_disabled, gVisor). Same core, fewer batched syscalls.
 *
 * Level-triggered epoll over the sockets, each tagged with its slot and generation (as
 * io_uring's user_data is, see userdata.h), so an event for a connection that has since
 * closed is recognised and dropped.
 *   receive  EPOLLIN; recv into one loop-wide read buffer until a short read (the socket
 *            is drained) or a few rounds (fairness: level-triggering brings us back), and
 *            hand the bytes to crpc_conn_received. Idle connections hold no read memory,
 *            as with io_uring's provided buffers. Backpressure drops EPOLLIN.
 *   send     written at once from the flush; EPOLLOUT is registered only when the socket
 *            is full, and dropped once the buffer has gone.
 *   accept   the listener is made non-blocking; accept4 in a loop until EAGAIN.
 *   wake     the loop's eventfd is watched like a socket and drained when it fires.
 *   time     epoll_wait's timeout, rounded up to the millisecond (deadlines never fire
 *            early).
 * Sockets stay in blocking mode (client sockets arrive so); every call passes
 * MSG_DONTWAIT instead. Needs nothing newer than Linux 2.6.27.
 * Try it: SWIFTRPC_BACKEND=epoll scripts/c-tests.sh.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "userdata.h"

#define MAX_EVENTS 256
#define READ_BYTES (256u * 1024u) /* big enough for a few 64 KiB frames per read */
#define READS_PER_EVENT 8         /* then other connections get their turn */
#define ACCEPTS_PER_EVENT 64

typedef struct epoll_io {
    int epfd;
    int nready;                   /* events collected by the last wait */
    uint8_t *rbuf;                /* the loop-wide read buffer */
    struct epoll_event events[MAX_EVENTS];
} epoll_io;

static inline epoll_io *io_of(crpc_loop *l) { return l->io; }

static int ctl(crpc_loop *l, int op, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    return epoll_ctl(io_of(l)->epfd, op, fd, &ev) ? -errno : 0;
}

/* ---------------------------------------------------------------- set-up */

static void epoll_teardown(crpc_loop *l)
{
    epoll_io *io = io_of(l);
    if (!io)
        return;
    if (io->epfd >= 0)
        close(io->epfd);
    free(io->rbuf);
    free(io);
    l->io = NULL;
}

static int epoll_init(crpc_loop *l)
{
    epoll_io *io = calloc(1, sizeof(*io));
    if (!io)
        return -ENOMEM;
    l->io = io;
    io->epfd = epoll_create1(EPOLL_CLOEXEC);
    int err = io->epfd < 0 ? -errno : 0;
    if (!err && !(io->rbuf = malloc(READ_BYTES)))
        err = -ENOMEM;
    if (!err)
        err = ctl(l, EPOLL_CTL_ADD, l->event_fd, EPOLLIN, crpc_ud_encode(CRPC_OP_WAKE, 0, 0));
    if (err)
        epoll_teardown(l);
    return err;
}

/* --------------------------------------------------------------- accept */

static void epoll_accept_arm(crpc_loop *l, crpc_listener *lst)
{
    int flags = fcntl(lst->fd, F_GETFL);
    int err = flags < 0 ? -errno : 0;
    if (!err && !(flags & O_NONBLOCK) && fcntl(lst->fd, F_SETFL, flags | O_NONBLOCK) < 0)
        err = -errno;
    if (!err)
        err = ctl(l, EPOLL_CTL_ADD, lst->fd, EPOLLIN, crpc_ud_encode(CRPC_OP_ACCEPT, lst->index, 0));
    if (err) {
        lst->on_end(lst, err); /* the owner backs off and tries again */
        return;
    }
    lst->armed = true;
}

static void unwatch_listener(crpc_loop *l, crpc_listener *lst)
{
    if (lst->armed)
        ctl(l, EPOLL_CTL_DEL, lst->fd, 0, 0);
    lst->armed = false;
}

static void epoll_accept_stop(crpc_loop *l, crpc_listener *lst)
{
    bool was_armed = lst->armed;
    unwatch_listener(l, lst);
    if (was_armed)
        lst->on_end(lst, -ECANCELED);
}

static void on_acceptable(crpc_loop *l, crpc_listener *lst)
{
    for (int i = 0; i < ACCEPTS_PER_EVENT && lst->armed; i++) {
        int fd = accept4(lst->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            if (!lst->on_accept(lst, fd)) { /* the owner pauses (descriptors are short) */
                unwatch_listener(l, lst);
                lst->on_end(lst, 0);
                return;
            }
            continue;
        }
        switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return;
        case EINTR:
        case ECONNABORTED: /* that one connection is gone, not the listener */
        case EPROTO:
        case EPERM:        /* a firewall refused that one */
            continue;
        default: {         /* -EMFILE and the like: stop; the owner backs off and retries */
            int err = -errno;
            unwatch_listener(l, lst);
            lst->on_end(lst, err);
            return;
        }
        }
    }
}

/* ---------------------------------------------------------- connections */

static uint64_t conn_tag(const crpc_conn *c) { return crpc_ud_encode(CRPC_OP_CONN, c->slot, c->gen); }

/* Changes what the socket is watched for; a failure closes the connection. */
static void watch(crpc_conn *c, uint32_t events)
{
    if (c->state != CONN_OPEN || events == c->io_events)
        return;
    int err = ctl(c->loop, EPOLL_CTL_MOD, c->fd, events, conn_tag(c));
    if (err) {
        crpc_conn_close(c, err);
        return;
    }
    c->io_events = events;
}

static int epoll_conn_open(crpc_conn *c)
{
    int err = ctl(c->loop, EPOLL_CTL_ADD, c->fd, EPOLLIN, conn_tag(c));
    if (err)
        return err;
    c->io_events = EPOLLIN;
    c->recv_armed = true;
    return 0;
}

/* Nothing is in the kernel's hands, so everything stops here. The explicit DEL matters:
 * a forked child may keep the socket open, and epoll watches the open file, not the fd. */
static void epoll_conn_closing(crpc_conn *c)
{
    ctl(c->loop, EPOLL_CTL_DEL, c->fd, 0, 0);
    c->io_events = 0;
    c->recv_armed = false;
    c->send_inflight = false;
}

static void epoll_recv_pause(crpc_conn *c)
{
    c->recv_armed = false;
    watch(c, c->io_events & ~(uint32_t)EPOLLIN);
}

static void epoll_recv_resume(crpc_conn *c)
{
    c->recv_armed = true;
    watch(c, c->io_events | EPOLLIN);
}

static void epoll_send(crpc_conn *c)
{
    const crpc_buf *b = &c->out[c->out_cur ^ 1];
    while (c->sent < b->len) {
        ssize_t n = send(c->fd, b->data + c->sent, b->len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->sent += (size_t)n;
            /* A short write means the socket buffer is full: asking again would only
             * earn EAGAIN. */
            if (c->sent < b->len) {
                watch(c, c->io_events | EPOLLOUT);
                return;
            }
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            watch(c, c->io_events | EPOLLOUT);
            return;
        } else {
            crpc_conn_sent(c, n < 0 ? -errno : -EPIPE);
            return;
        }
    }
    watch(c, c->io_events & ~(uint32_t)EPOLLOUT);
    if (c->state == CONN_OPEN)
        crpc_conn_sent(c, 0);
}

/* Reads until the socket is drained, the connection pauses or closes, or its turn is up.
 * The hold keeps the slot's buffers alive while callbacks run (one may close it). */
static void on_readable(crpc_loop *l, crpc_conn *c)
{
    uint8_t *rbuf = io_of(l)->rbuf;
    crpc_conn_hold(c);
    for (int i = 0; i < READS_PER_EVENT && c->state == CONN_OPEN && c->recv_armed; i++) {
        ssize_t n = recv(c->fd, rbuf, READ_BYTES, MSG_DONTWAIT);
        if (n > 0) {
            crpc_conn_received(c, rbuf, (size_t)n);
            if ((size_t)n < READ_BYTES)
                break; /* drained; if more comes, the level-triggered event says so */
        } else if (n == 0) {
            crpc_conn_end_input(c, 0); /* orderly EOF: the peer reads on (see conn.c) */
        } else if (errno == EINTR) {
            i--;
        } else {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                crpc_conn_close(c, -errno);
            break;
        }
    }
    crpc_conn_unhold(c);
}

/* The socket's pending error, for an EPOLLERR/EPOLLHUP nobody is reading or writing for. */
static int socket_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err == 0)
        return -ECONNRESET;
    return -err;
}

/* more: other events of this batch wait (see crpc_conn_flush_early). */
static void on_conn_event(crpc_loop *l, uint64_t tag, uint32_t events, bool more)
{
    uint32_t slot = crpc_ud_slot(tag), gen = crpc_ud_gen(tag);
    crpc_conn *c = crpc_conn_lookup(l, slot, gen);
    if (!c)
        return; /* closed earlier in this batch */
    const uint32_t trouble = EPOLLERR | EPOLLHUP;
    if (events & (EPOLLIN | trouble) && c->recv_armed)
        on_readable(l, c); /* reads what is left, then meets the EOF or the error */
    if (!(c = crpc_conn_lookup(l, slot, gen)))
        return;
    if (events & (EPOLLOUT | trouble) && c->io_events & EPOLLOUT)
        epoll_send(c); /* finishes the buffer, or meets the error */
    else if (events & trouble && !c->recv_armed)
        crpc_conn_close(c, socket_error(c->fd)); /* paused with nothing to send: the
                                                    level-triggered error would spin */
    else if (more)
        crpc_conn_flush_early(c);
}

/* -------------------------------------------------------- wait, dispatch */

static void epoll_wait_events(crpc_loop *l, uint64_t timeout_ns)
{
    epoll_io *io = io_of(l);
    int ms = -1;
    if (timeout_ns != CRPC_WAIT_FOREVER) {
        uint64_t t = (timeout_ns + 999999u) / 1000000u; /* round up: never wake early */
        ms = t > INT_MAX ? INT_MAX : (int)t;
    }
    io->nready = epoll_wait(io->epfd, io->events, MAX_EVENTS, ms);
    if (io->nready < 0)
        io->nready = 0; /* EINTR: go round again */
}

static void epoll_dispatch(crpc_loop *l)
{
    epoll_io *io = io_of(l);
    for (int i = 0; i < io->nready; i++) {
        uint64_t tag = io->events[i].data.u64;
        switch (crpc_ud_op(tag)) {
        case CRPC_OP_WAKE: {
            uint64_t v;
            ssize_t n = read(l->event_fd, &v, sizeof(v)); /* readable: cannot block */
            (void)n;
            break;
        }
        case CRPC_OP_ACCEPT: {
            crpc_listener *lst = crpc_loop_listener(l, crpc_ud_slot(tag));
            if (lst && lst->armed)
                on_acceptable(l, lst);
            break;
        }
        case CRPC_OP_CONN:
            on_conn_event(l, tag, io->events[i].events, i + 1 < io->nready);
            break;
        default:
            break;
        }
    }
    io->nready = 0;
}

const crpc_backend crpc_backend_epoll = {
    .name = "epoll",
    .init = epoll_init,
    .teardown = epoll_teardown,
    .accept_arm = epoll_accept_arm,
    .accept_stop = epoll_accept_stop,
    .conn_open = epoll_conn_open,
    .conn_closing = epoll_conn_closing,
    .recv_pause = epoll_recv_pause,
    .recv_resume = epoll_recv_resume,
    .send = epoll_send,
    .wait = epoll_wait_events,
    .dispatch = epoll_dispatch,
};
