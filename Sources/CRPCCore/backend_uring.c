/*
 * backend_uring.c — the io_uring backend: one ring per loop, one accept at a time, multishot
 * recv into a provided-buffer ring, one send per dirty connection per iteration, and a
 * read on the loop's eventfd for wake-ups.
 *
 * Needs Linux 6.0+ (multishot recv; SINGLE_ISSUER and DEFER_TASKRUN are used when there)
 * and the liburing 2.3 API. init refuses (so backend.c falls back to epoll) when the ring
 * cannot be set up (-EPERM under seccomp or kernel.io_uring_disabled, -ENOSYS) or the
 * kernel lacks an opcode we need (-EOPNOTSUPP) or buffer rings (-EINVAL).
 * Try it: SWIFTRPC_BACKEND=uring scripts/c-tests.sh.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "userdata.h"

#define BUF_GROUP 0

typedef struct uring_io {
    struct io_uring ring;
    bool ring_ready;
    uint64_t event_val;           /* the eventfd read lands here */
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    unsigned buf_count, buf_size;
    unsigned bufs_returned;       /* buffers added since the last advance */
    unsigned batch_left;          /* completions of this dispatch not yet handled */
} uring_io;

static inline uring_io *io_of(crpc_loop *l) { return l->io; }

static inline uint8_t *buf_at(uring_io *io, unsigned bid)
{
    return io->bufs + (size_t)bid * io->buf_size;
}

/* Returns a free SQE, submitting first if the queue is full. Never NULL. */
static struct io_uring_sqe *get_sqe(crpc_loop *l)
{
    uring_io *io = io_of(l);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
    while (!sqe) {
        io_uring_submit(&io->ring);
        sqe = io_uring_get_sqe(&io->ring);
    }
    return sqe;
}

/* Gives a provided buffer back to the kernel (batched until the end of dispatch). */
static void recycle_buf(uring_io *io, unsigned bid)
{
    io_uring_buf_ring_add(io->br, buf_at(io, bid), io->buf_size, (unsigned short)bid,
                          io_uring_buf_ring_mask(io->buf_count), (int)io->bufs_returned++);
}

static void cancel(crpc_loop *l, uint64_t target)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_cancel64(sqe, target, 0);
    io_uring_sqe_set_data64(sqe, crpc_ud_encode(CRPC_OP_IGNORE, 0, 0));
}

static void arm_wake(crpc_loop *l)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_read(sqe, l->event_fd, &io_of(l)->event_val, sizeof(uint64_t), 0);
    io_uring_sqe_set_data64(sqe, crpc_ud_encode(CRPC_OP_WAKE, 0, 0));
}

/* ---------------------------------------------------------------- set-up */

/* The opcodes the core submits. SEND_ZC is not used: it is probed because it came with
 * 6.0, the kernel that also brought multishot recv, which a probe cannot show directly. */
static int probe_opcodes(struct io_uring *ring)
{
    static const int needed[] = {IORING_OP_READ, IORING_OP_SEND, IORING_OP_RECV,
                                 IORING_OP_ACCEPT, IORING_OP_ASYNC_CANCEL, IORING_OP_SEND_ZC};
    const unsigned nops = 256;
    struct io_uring_probe *probe = calloc(1, sizeof(*probe) + nops * sizeof(struct io_uring_probe_op));
    if (!probe)
        return -ENOMEM;
    int err = io_uring_register_probe(ring, probe, nops); /* the kernel's own refusal, if any */
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]) && !err; i++)
        if (!io_uring_opcode_supported(probe, needed[i]))
            err = -EOPNOTSUPP;
    free(probe);
    return err;
}

static void uring_teardown(crpc_loop *l)
{
    uring_io *io = io_of(l);
    if (!io)
        return;
    if (io->ring_ready)
        io_uring_queue_exit(&io->ring);
    if (io->br)
        munmap(io->br, io->buf_count * sizeof(struct io_uring_buf));
    free(io->bufs);
    free(io);
    l->io = NULL;
}

static int setup(crpc_loop *l, uring_io *io)
{
    /* Best flags first, falling back on -EINVAL from older kernels:
     * SINGLE_ISSUER  only this thread submits, so the kernel skips submission locking;
     * DEFER_TASKRUN  completion work runs when we ask for events, in one batch, instead
     *                of interrupting the thread (requires SINGLE_ISSUER);
     * COOP_TASKRUN   the older cousin: no forced interrupts, work runs at the next enter;
     * SUBMIT_ALL     one bad SQE does not stop the rest of the batch;
     * CQSIZE         a completion queue 4x the submission queue: multishot ops post many
     *                completions per submission. */
    const unsigned base = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
    const unsigned tries[] = {
        base | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        base | IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_CQSIZE,
    };
    int ret = -EINVAL;
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]) && ret == -EINVAL; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = tries[i];
        p.cq_entries = l->cfg.ring_entries * 4;
        ret = io_uring_queue_init_params(l->cfg.ring_entries, &io->ring, &p);
    }
    if (ret < 0)
        return ret;
    io->ring_ready = true;
    ret = probe_opcodes(&io->ring);
    if (ret < 0)
        return ret;

    /* The provided-buffer ring: the kernel picks a free buffer for each receive, so idle
     * connections hold no receive memory. Buffers come back via recycle_buf. */
    io->buf_count = l->cfg.buf_count;
    io->buf_size = l->cfg.buf_size;
    size_t ring_bytes = io->buf_count * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED)
        return -ENOMEM;
    io->br = br;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)br;
    reg.ring_entries = io->buf_count;
    reg.bgid = BUF_GROUP;
    ret = io_uring_register_buf_ring(&io->ring, &reg, 0);
    if (ret < 0)
        return ret;
    io_uring_buf_ring_init(io->br);
    io->bufs = malloc((size_t)io->buf_count * io->buf_size);
    if (!io->bufs)
        return -ENOMEM;
    int mask = io_uring_buf_ring_mask(io->buf_count);
    for (unsigned i = 0; i < io->buf_count; i++)
        io_uring_buf_ring_add(io->br, buf_at(io, i), io->buf_size, (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(io->br, (int)io->buf_count);
    return 0;
}

static int uring_init(crpc_loop *l)
{
    uring_io *io = calloc(1, sizeof(*io));
    if (!io)
        return -ENOMEM;
    l->io = io;
    int err = setup(l, io);
    if (err) {
        uring_teardown(l);
        return err;
    }
    arm_wake(l);
    return 0;
}

/* --------------------------------------------------------------- accept */

/* One accept at a time, not a multishot one: a multishot accept takes every connection
 * waiting in the backlog in one go, each with a descriptor, past any reserve the server
 * keeps (seen: 318 descriptors held against a limit of 118); one at a time lets the server
 * look at each descriptor before the next is taken. Connections are long-lived: the SQE
 * per accept does not show. */
/* The armed accept holds the loop (it must not exit with the SQE in the kernel's hands). */
static void uring_accept_arm(crpc_loop *l, crpc_listener *lst)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    io_uring_prep_accept(sqe, lst->fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, crpc_ud_encode(CRPC_OP_ACCEPT, lst->index, 0));
    lst->armed = true;
    crpc_loop_hold(l);
}

/* armed clears when the cancelled accept's completion comes in. */
static void uring_accept_stop(crpc_loop *l, crpc_listener *lst)
{
    if (lst->armed)
        cancel(l, crpc_ud_encode(CRPC_OP_ACCEPT, lst->index, 0));
}

/* The accept has ended: its owner re-arms it (on_end) unless it pauses. */
static void on_accept(crpc_loop *l, crpc_listener *lst, const struct io_uring_cqe *cqe)
{
    lst->armed = false;
    crpc_loop_unhold(l);
    if (cqe->res >= 0)
        lst->on_accept(lst, cqe->res);
    lst->on_end(lst, cqe->res < 0 ? cqe->res : 0);
}

/* ---------------------------------------------------------- connections */

/* Arms the multishot receive; it holds the slot until its last completion. */
static void arm_recv(crpc_conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(c->loop);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, crpc_ud_encode(CRPC_OP_RECV, c->slot, c->gen));
    c->recv_armed = true;
    crpc_conn_hold(c);
}

static int uring_conn_open(crpc_conn *c)
{
    arm_recv(c);
    return 0;
}

/* The socket is shut down already, which ends the receive; the cancel makes sure. A send
 * in flight is cancelled too: a close that cuts output shuts only the read side (conn.c),
 * and a peer that does not read would otherwise keep that send, and the slot, for ever. */
static void uring_conn_closing(crpc_conn *c)
{
    if (c->recv_armed)
        cancel(c->loop, crpc_ud_encode(CRPC_OP_RECV, c->slot, c->gen));
    if (c->send_inflight)
        cancel(c->loop, crpc_ud_encode(CRPC_OP_SEND, c->slot, c->gen));
}

static void uring_recv_pause(crpc_conn *c)
{
    if (c->recv_armed && !c->recv_cancelling) {
        c->recv_cancelling = true; /* its -ECANCELED ending is ours, not an error */
        cancel(c->loop, crpc_ud_encode(CRPC_OP_RECV, c->slot, c->gen));
    }
}

/* Re-arms unless the cancelled receive is still winding down: its last completion re-arms
 * then (see on_recv). */
static void uring_recv_resume(crpc_conn *c)
{
    if (!c->recv_armed)
        arm_recv(c);
}

static void on_recv(crpc_loop *l, crpc_conn *c, const struct io_uring_cqe *cqe)
{
    uring_io *io = io_of(l);
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (cqe->res > 0) {
            crpc_conn_received(c, buf_at(io, bid), (size_t)cqe->res);
            /* Other completions of this batch wait: send what this input produced now
             * (see crpc_conn_flush_early); the submit costs a syscall per connection
             * that had input, shared by every frame that input held. */
            if (io->batch_left && crpc_conn_flush_early(c))
                io_uring_submit(&io->ring);
        }
        recycle_buf(io, bid);
    }
    if (cqe->res == 0)
        crpc_conn_end_input(c, 0); /* orderly EOF: the peer reads on (see conn.c) */
    else if (cqe->res < 0 && cqe->res != -ENOBUFS && !(cqe->res == -ECANCELED && c->recv_cancelling))
        crpc_conn_close(c, cqe->res);
    if (!more) {
        /* The multishot receive has ended. After -ENOBUFS (every provided buffer was busy;
         * they are recycled by now) or a kernel-side stop, an open connection re-arms. */
        c->recv_armed = false;
        c->recv_cancelling = false;
        bool rearm = c->state == CONN_OPEN && !c->paused && !c->peer_done;
        crpc_conn_unhold(c);
        if (rearm)
            arm_recv(c);
    }
}

static void submit_send(crpc_conn *c)
{
    const crpc_buf *b = &c->out[c->out_cur ^ 1];
    struct io_uring_sqe *sqe = get_sqe(c->loop);
    io_uring_prep_send(sqe, c->fd, b->data + c->sent, b->len - c->sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, crpc_ud_encode(CRPC_OP_SEND, c->slot, c->gen));
    crpc_conn_hold(c);
}

static void on_send(crpc_conn *c, const struct io_uring_cqe *cqe)
{
    if (cqe->res >= 0 && c->state == CONN_OPEN) {
        c->sent += (size_t)cqe->res;
        if (c->sent < c->out[c->out_cur ^ 1].len) {
            submit_send(c); /* short send: finish this buffer first, keeping order */
            crpc_conn_unhold(c);
            return;
        }
    }
    crpc_conn_sent(c, cqe->res < 0 ? cqe->res : 0);
    crpc_conn_unhold(c);
}

/* -------------------------------------------------------- wait, dispatch */

static void uring_wait(crpc_loop *l, uint64_t timeout_ns)
{
    struct io_uring *ring = &io_of(l)->ring;
    int ret;
    if (timeout_ns == 0) {
        ret = io_uring_submit_and_get_events(ring);
    } else if (timeout_ns == CRPC_WAIT_FOREVER) {
        ret = io_uring_submit_and_wait(ring, 1);
    } else {
        struct __kernel_timespec ts = {.tv_sec = (long long)(timeout_ns / 1000000000ull),
                                       .tv_nsec = (long long)(timeout_ns % 1000000000ull)};
        struct io_uring_cqe *unused;
        ret = io_uring_submit_and_wait_timeout(ring, &unused, 1, &ts, NULL);
    }
    (void)ret; /* -EINTR/-EAGAIN/-EBUSY/-ETIME: just go round again */
}

static void dispatch_one(crpc_loop *l, const struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    switch (crpc_ud_op(ud)) {
    case CRPC_OP_WAKE:
        arm_wake(l);
        return;
    case CRPC_OP_ACCEPT: {
        crpc_listener *lst = crpc_loop_listener(l, crpc_ud_slot(ud));
        if (lst)
            on_accept(l, lst, cqe);
        else if (cqe->res >= 0)
            close(cqe->res); /* cannot happen: listeners outlive their loop */
        return;
    }
    case CRPC_OP_RECV:
    case CRPC_OP_SEND: {
        uint32_t slot = crpc_ud_slot(ud);
        crpc_conn *c = slot < l->conn_cap ? l->conns[slot] : NULL;
        if (!c || c->gen != crpc_ud_gen(ud) || c->state == CONN_FREE) {
            /* Cannot happen while slots wait for their completions; be safe anyway. */
            if (cqe->flags & IORING_CQE_F_BUFFER)
                recycle_buf(io_of(l), cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            return;
        }
        if (crpc_ud_op(ud) == CRPC_OP_RECV)
            on_recv(l, c, cqe);
        else
            on_send(c, cqe);
        return;
    }
    case CRPC_OP_CONN:
    case CRPC_OP_IGNORE:
        return;
    }
}

static void uring_dispatch(crpc_loop *l)
{
    uring_io *io = io_of(l);
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0, ready = io_uring_cq_ready(&io->ring);
    io_uring_for_each_cqe(&io->ring, head, cqe) {
        seen++;
        io->batch_left = ready > seen ? ready - seen : 0;
        dispatch_one(l, cqe);
    }
    io->batch_left = 0;
    io_uring_cq_advance(&io->ring, seen);
    if (io->bufs_returned) {
        io_uring_buf_ring_advance(io->br, (int)io->bufs_returned);
        io->bufs_returned = 0;
    }
}

static void uring_send(crpc_conn *c) { submit_send(c); }

const crpc_backend crpc_backend_uring = {
    .name = "io_uring",
    .init = uring_init,
    .teardown = uring_teardown,
    .accept_arm = uring_accept_arm,
    .accept_stop = uring_accept_stop,
    .conn_open = uring_conn_open,
    .conn_closing = uring_conn_closing,
    .recv_pause = uring_recv_pause,
    .recv_resume = uring_recv_resume,
    .send = uring_send,
    .wait = uring_wait,
    .dispatch = uring_dispatch,
};
