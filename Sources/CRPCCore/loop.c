/*
 * loop.c — the event loop: one thread, one io_uring ring, one provided-buffer ring.
 *
 * THREADING RULE: a loop's ring, buffers and connections are touched only by the loop's
 * own thread. Other threads hand it work with crpc_loop_push(): a lock-free stack of
 * tasks plus an eventfd that is written only when the loop is (about to be) asleep. A
 * busy loop re-checks the queue every iteration, so producers pay no syscall then.
 *
 * One iteration: run queued tasks, flush every dirty connection with one send each,
 * submit and wait for at least one completion (or none if work is queued), dispatch
 * every completion, hand receive buffers back to the kernel in one batch.
 *
 * Needs Linux 6.0+ for the preferred flags (SINGLE_ISSUER, DEFER_TASKRUN) and 5.19+ for
 * multishot accept/recv with provided buffer rings (liburing 2.3 API).
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <dirent.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "userdata.h"

static __thread crpc_loop *current_loop;

crpc_loop *crpc_loop_current(void) { return current_loop; }

int crpc_pin_process(int cpu)
{
    if (cpu < 0 || cpu >= CPU_SETSIZE)
        return -EINVAL;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    DIR *tasks = opendir("/proc/self/task");
    if (!tasks)
        return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
    int err = 0;
    struct dirent *d;
    while ((d = readdir(tasks))) {
        pid_t tid = (pid_t)atoi(d->d_name);
        if (tid > 0 && sched_setaffinity(tid, sizeof(set), &set) && !err)
            err = -errno;
    }
    closedir(tasks);
    return err;
}

int crpc_loop_is_current(const crpc_loop *loop) { return loop && current_loop == loop; }

uint64_t crpc_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t crpc_loop_now_ns(const crpc_loop *loop)
{
    return atomic_load_explicit(&loop->now_ns, memory_order_relaxed);
}

int crpc_loop_create(const crpc_loop_config *cfg, crpc_loop **out)
{
    crpc_loop *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    if (cfg)
        l->cfg = *cfg;
    if (!l->cfg.ring_entries)
        l->cfg.ring_entries = 1024;
    if (!l->cfg.buf_count || (l->cfg.buf_count & (l->cfg.buf_count - 1)))
        l->cfg.buf_count = 64;
    if (!l->cfg.buf_size)
        l->cfg.buf_size = 32 * 1024;
    l->event_fd = -1;
    l->listen_fd = -1;
    pthread_mutex_init(&l->start_mu, NULL);
    pthread_cond_init(&l->start_cv, NULL);
    *out = l;
    return 0;
}

/* ------------------------------------------------------------ ring set-up */

static int ring_init(crpc_loop *l)
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
        ret = io_uring_queue_init_params(l->cfg.ring_entries, &l->ring, &p);
    }
    if (ret < 0)
        return ret;
    l->ring_ready = true;

    /* The provided-buffer ring: the kernel picks a free buffer for each receive, so idle
     * connections hold no receive memory. Buffers come back via crpc_loop_recycle_buf. */
    l->buf_count = l->cfg.buf_count;
    l->buf_size = l->cfg.buf_size;
    size_t ring_bytes = l->buf_count * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED)
        return -ENOMEM;
    l->br = br;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)br;
    reg.ring_entries = l->buf_count;
    reg.bgid = CRPC_BUF_GROUP;
    ret = io_uring_register_buf_ring(&l->ring, &reg, 0);
    if (ret < 0)
        return ret;
    io_uring_buf_ring_init(l->br);
    l->bufs = malloc((size_t)l->buf_count * l->buf_size);
    if (!l->bufs)
        return -ENOMEM;
    int mask = io_uring_buf_ring_mask(l->buf_count);
    for (unsigned i = 0; i < l->buf_count; i++)
        io_uring_buf_ring_add(l->br, crpc_loop_buf(l, i), l->buf_size, (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(l->br, (int)l->buf_count);

    l->event_fd = eventfd(0, EFD_CLOEXEC);
    if (l->event_fd < 0)
        return -errno;
    return crpc_decoder_create(l->cfg.max_depth, l->cfg.max_ext, &l->dec);
}

static void ring_teardown(crpc_loop *l)
{
    if (l->ring_ready) {
        io_uring_queue_exit(&l->ring);
        l->ring_ready = false;
    }
    if (l->br)
        munmap(l->br, l->buf_count * sizeof(struct io_uring_buf));
    l->br = NULL;
    free(l->bufs);
    l->bufs = NULL;
    /* event_fd stays open until crpc_loop_destroy: a producer or crpc_loop_stop may still
     * write to it after this thread has exited. */
    crpc_decoder_destroy(l->dec);
    l->dec = NULL;
}

struct io_uring_sqe *crpc_loop_sqe(crpc_loop *l)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
    while (!sqe) {
        io_uring_submit(&l->ring);
        sqe = io_uring_get_sqe(&l->ring);
    }
    return sqe;
}

void crpc_loop_recycle_buf(crpc_loop *l, unsigned bid)
{
    io_uring_buf_ring_add(l->br, crpc_loop_buf(l, bid), l->buf_size, (unsigned short)bid,
                          io_uring_buf_ring_mask(l->buf_count), (int)l->bufs_returned++);
}

static void arm_wake(crpc_loop *l)
{
    struct io_uring_sqe *sqe = crpc_loop_sqe(l);
    io_uring_prep_read(sqe, l->event_fd, &l->event_val, sizeof(l->event_val), 0);
    io_uring_sqe_set_data64(sqe, crpc_ud_encode(CRPC_OP_WAKE, 0, 0));
}

/* ------------------------------------------------------------------ tasks */

int crpc_loop_push(crpc_loop *l, crpc_task *t)
{
    crpc_task *head = atomic_load_explicit(&l->queue, memory_order_relaxed);
    do {
        if (head == CRPC_QUEUE_CLOSED)
            return -ESHUTDOWN;
        t->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&l->queue, &head, t, memory_order_seq_cst,
                                                    memory_order_relaxed));
    /* Pairs with the loop's store of sleeping=1 then load of queue (both seq_cst): either
     * the loop sees our task before sleeping, or we see it asleep and wake it. */
    if (atomic_exchange(&l->sleeping, 0)) {
        uint64_t one = 1;
        ssize_t n = write(l->event_fd, &one, sizeof(one));
        (void)n; /* EAGAIN means the counter is already non-zero: the loop will wake */
    }
    return 0;
}

/* Runs every queued task in the order it was pushed. */
static void run_tasks(crpc_loop *l, crpc_task *replacement)
{
    crpc_task *list = atomic_exchange(&l->queue, replacement);
    if (!list || list == CRPC_QUEUE_CLOSED)
        return;
    crpc_task *fifo = NULL;
    while (list) { /* the stack pops newest first: reverse it */
        crpc_task *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        crpc_task *next = fifo->next;
        fifo->run(l, fifo);
        fifo = next;
    }
}

typedef struct post_task {
    crpc_task task;
    void (*fn)(void *);
    void *arg;
} post_task;

static void run_post(crpc_loop *l, crpc_task *t)
{
    (void)l;
    post_task *p = (post_task *)t;
    p->fn(p->arg);
    free(p);
}

int crpc_loop_post(crpc_loop *l, void (*fn)(void *), void *arg)
{
    post_task *p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->task.run = run_post;
    p->fn = fn;
    p->arg = arg;
    int err = crpc_loop_push(l, &p->task);
    if (err)
        free(p);
    return err;
}

/* -------------------------------------------------------------- deadlines */

void crpc_loop_watch_deadline(crpc_loop *l, crpc_deadline_source *src, uint64_t deadline)
{
    if (!src->linked) {
        src->prev = NULL;
        src->next = l->deadlines;
        if (l->deadlines)
            l->deadlines->prev = src;
        l->deadlines = src;
        src->linked = true;
        src->next_deadline = deadline;
        l->deadlines_gen++;
    } else if (deadline < src->next_deadline || src->next_deadline == 0) {
        src->next_deadline = deadline;
    }
}

void crpc_loop_unwatch_deadline(crpc_loop *l, crpc_deadline_source *src)
{
    if (!src->linked)
        return;
    if (src->prev)
        src->prev->next = src->next;
    else
        l->deadlines = src->next;
    if (src->next)
        src->next->prev = src->prev;
    src->linked = false;
    src->next_deadline = 0;
    l->deadlines_gen++;
}

/* Ends what is due; returns the earliest deadline still pending (0: none). Expiring runs
 * completion callbacks, which may add or remove sources: the walk then starts over (what
 * was already handled is no longer due). */
static uint64_t expire_due(crpc_loop *l, uint64_t now)
{
restart:;
    uint64_t earliest = 0, gen = l->deadlines_gen;
    for (crpc_deadline_source *src = l->deadlines; src; src = src->next) {
        if (src->next_deadline && src->next_deadline <= now) {
            src->expire(src, now);
            if (l->deadlines_gen != gen)
                goto restart;
        }
        if (src->next_deadline && (!earliest || src->next_deadline < earliest))
            earliest = src->next_deadline;
    }
    return earliest;
}

/* ------------------------------------------------------------- stop hooks */

void crpc_loop_add_stop_hook(crpc_loop *l, crpc_stop_hook *h)
{
    if (h->linked)
        return;
    h->prev = NULL;
    h->next = l->stop_hooks;
    if (l->stop_hooks)
        l->stop_hooks->prev = h;
    l->stop_hooks = h;
    h->linked = true;
}

void crpc_loop_remove_stop_hook(crpc_loop *l, crpc_stop_hook *h)
{
    if (!h->linked)
        return;
    if (h->prev)
        h->prev->next = h->next;
    else
        l->stop_hooks = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->linked = false;
}

/* -------------------------------------------------------------- dispatch */

static void dispatch(crpc_loop *l, const struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    switch (crpc_ud_op(ud)) {
    case CRPC_OP_WAKE:
        arm_wake(l);
        return;
    case CRPC_OP_ACCEPT:
        crpc_server_on_accept(l, cqe);
        return;
    case CRPC_OP_RECV:
    case CRPC_OP_SEND: {
        uint32_t slot = crpc_ud_slot(ud);
        crpc_conn *c = slot < l->conn_cap ? l->conns[slot] : NULL;
        if (!c || c->gen != crpc_ud_gen(ud) || c->state == CONN_FREE) {
            /* Cannot happen while slots wait for their completions; be safe anyway. */
            if (cqe->flags & IORING_CQE_F_BUFFER)
                crpc_loop_recycle_buf(l, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            return;
        }
        if (crpc_ud_op(ud) == CRPC_OP_RECV)
            crpc_conn_on_recv(l, c, cqe);
        else
            crpc_conn_on_send(l, c, cqe);
        return;
    }
    case CRPC_OP_IGNORE:
        return;
    }
}

static bool conns_in_use(const crpc_loop *l)
{
    return l->nfree != l->conn_cap;
}

static void begin_stop(crpc_loop *l)
{
    l->stopped = true;
    if (l->listen_fd >= 0) {
        struct io_uring_sqe *sqe = crpc_loop_sqe(l);
        io_uring_prep_cancel64(sqe, crpc_ud_encode(CRPC_OP_ACCEPT, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, crpc_ud_encode(CRPC_OP_IGNORE, 0, 0));
        shutdown(l->listen_fd, SHUT_RDWR);
    }
    for (uint32_t i = 0; i < l->conn_cap; i++)
        if (l->conns[i] && l->conns[i]->state == CONN_OPEN)
            crpc_conn_close(l->conns[i], -ESHUTDOWN);
    while (l->stop_hooks) { /* each hook removes itself */
        crpc_stop_hook *h = l->stop_hooks;
        crpc_loop_remove_stop_hook(l, h);
        h->on_stop(h);
    }
}

static void run(crpc_loop *l)
{
    atomic_store_explicit(&l->now_ns, crpc_monotonic_ns(), memory_order_relaxed);
    arm_wake(l);
    if (l->listen_fd >= 0)
        crpc_server_arm_accept(l);
    for (;;) {
        run_tasks(l, NULL);
        if (!l->stopped && atomic_load(&l->stop_requested))
            begin_stop(l);
        if (l->stopped && !conns_in_use(l) && !l->accept_armed)
            break;
        /* Calls past their deadline end now, so their cancel frames go out with this flush. */
        uint64_t deadline = l->deadlines ? expire_due(l, crpc_monotonic_ns()) : 0;
        crpc_loop_flush(l);

        unsigned wait = 1;
        atomic_store(&l->sleeping, 1);
        if (atomic_load(&l->queue) || (!l->stopped && atomic_load(&l->stop_requested))) {
            atomic_store(&l->sleeping, 0);
            wait = 0;
        }
        int ret;
        if (!wait) {
            ret = io_uring_submit_and_get_events(&l->ring);
        } else if (deadline) {
            /* Sleep no later than the earliest call deadline on this loop. */
            uint64_t now = crpc_monotonic_ns();
            uint64_t wait_ns = deadline > now ? deadline - now : 0;
            struct __kernel_timespec ts = {.tv_sec = (long long)(wait_ns / 1000000000ull),
                                           .tv_nsec = (long long)(wait_ns % 1000000000ull)};
            struct io_uring_cqe *unused;
            ret = io_uring_submit_and_wait_timeout(&l->ring, &unused, 1, &ts, NULL);
        } else {
            ret = io_uring_submit_and_wait(&l->ring, 1);
        }
        atomic_store(&l->sleeping, 0);
        atomic_store_explicit(&l->now_ns, crpc_monotonic_ns(), memory_order_relaxed);
        (void)ret; /* -EINTR/-EAGAIN/-EBUSY: just go round again */

        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&l->ring, head, cqe) {
            dispatch(l, cqe);
            seen++;
        }
        io_uring_cq_advance(&l->ring, seen);
        if (l->bufs_returned) {
            io_uring_buf_ring_advance(l->br, (int)l->bufs_returned);
            l->bufs_returned = 0;
        }
    }
    if (l->listen_fd >= 0) {
        close(l->listen_fd);
        l->listen_fd = -1;
    }
    /* Close the queue for good; whatever is still in it fails its caller cleanly. */
    run_tasks(l, CRPC_QUEUE_CLOSED);
}

static void *loop_main(void *arg)
{
    crpc_loop *l = arg;
    current_loop = l;
    if (l->cfg.pin && l->cfg.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(l->cfg.cpu, &set);
        sched_setaffinity(0, sizeof(set), &set); /* best effort: a missing CPU is not fatal */
    }
    int err = ring_init(l);
    pthread_mutex_lock(&l->start_mu);
    l->start_error = err;
    atomic_store(&l->state, err ? -1 : 1);
    pthread_cond_broadcast(&l->start_cv);
    pthread_mutex_unlock(&l->start_mu);
    if (!err)
        run(l);
    else
        atomic_store(&l->queue, CRPC_QUEUE_CLOSED);
    ring_teardown(l);
    atomic_store(&l->state, 2);
    return NULL;
}

int crpc_loop_start(crpc_loop *l)
{
    if (atomic_load(&l->state) != 0)
        return -EALREADY;
    int err = pthread_create(&l->thread, NULL, loop_main, l);
    if (err)
        return -err;
    pthread_mutex_lock(&l->start_mu);
    while (atomic_load(&l->state) == 0)
        pthread_cond_wait(&l->start_cv, &l->start_mu);
    err = l->start_error;
    pthread_mutex_unlock(&l->start_mu);
    if (err) {
        pthread_join(l->thread, NULL);
        atomic_store(&l->state, -1);
    }
    return err;
}

int crpc_loop_stop(crpc_loop *l)
{
    if (current_loop == l)
        return -EDEADLK;
    int st = atomic_load(&l->state);
    if (st == 3)
        return 0; /* already stopped and joined */
    if (st != 1 && st != 2)
        return -EINVAL;
    if (!atomic_exchange(&l->stop_requested, true)) {
        uint64_t one = 1;
        ssize_t n = write(l->event_fd, &one, sizeof(one)); /* wake it whatever it is doing */
        (void)n;
    }
    /* Exactly one caller joins the thread; any other waits until it has. */
    if (!atomic_exchange(&l->joining, true)) {
        pthread_join(l->thread, NULL);
        atomic_store(&l->state, 3);
    } else {
        while (atomic_load(&l->state) != 3)
            usleep(1000);
    }
    return 0;
}

void crpc_loop_destroy(crpc_loop *l)
{
    if (!l)
        return;
    /* A reconnecting client's thread may still be connecting; it checks stop_requested
     * before touching the loop again and says when it is done. */
    while (atomic_load(&l->helpers) > 0)
        usleep(1000);
    for (uint32_t i = 0; i < l->conn_cap; i++) {
        if (l->conns[i]) {
            crpc_buf_free(&l->conns[i]->in);
            crpc_buf_free(&l->conns[i]->out[0]);
            crpc_buf_free(&l->conns[i]->out[1]);
            free(l->conns[i]);
        }
    }
    free(l->conns);
    free(l->free_slots);
    if (l->event_fd >= 0)
        close(l->event_fd);
    pthread_mutex_destroy(&l->start_mu);
    pthread_cond_destroy(&l->start_cv);
    free(l);
}
