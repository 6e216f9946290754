/*
 * loop.c — the event loop: one thread, and its I/O backend (io_uring, or epoll where
 * io_uring is refused; see backend.h).
 *
 * THREADING RULE: a loop's backend state, buffers and connections are touched only by the
 * loop's own thread. Other threads hand it work with crpc_loop_push(): a lock-free stack
 * of tasks plus an eventfd that is written only when the loop is (about to be) asleep. A
 * busy loop re-checks the queue every iteration, so producers pay no syscall then.
 *
 * One iteration: run queued tasks, end calls past their deadline, flush every dirty
 * connection with one send each, wait for events (not at all if work is queued; no later
 * than the earliest deadline), dispatch every event.
 *
 * The loop never names its users: a server or client plugs in through hooks (start, stop),
 * deadline sources, stop hooks, tasks and listeners, and depends on the loop, not the
 * other way round (server/client -> loop -> conn -> backend).
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <dirent.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

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

#if defined(DEBUG) || defined(CRPC_DEBUG)
void crpc_loop_assert_current(const crpc_loop *loop, const char *where)
{
    if (current_loop != loop && atomic_load(&loop->state) == 1) {
        fprintf(stderr, "crpc: %s ran off its loop's thread (the loop's state is its thread's alone)\n", where);
        abort();
    }
}
#endif

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
    pthread_mutex_init(&l->start_mu, NULL);
    pthread_cond_init(&l->start_cv, NULL);
    *out = l;
    return 0;
}

/* --------------------------------------------------------------- set-up */

/* What both backends need; the backend itself is picked by crpc_backend_select. */
static int loop_init(crpc_loop *l)
{
    l->event_fd = eventfd(0, EFD_CLOEXEC);
    if (l->event_fd < 0)
        return -errno;
    int err = crpc_decoder_create(l->cfg.max_depth, l->cfg.max_ext, &l->dec);
    if (err)
        return err;
    return crpc_backend_select(l);
}

static void loop_teardown(crpc_loop *l)
{
    if (l->io)
        l->backend->teardown(l);
    l->io = NULL;
    /* event_fd stays open until crpc_loop_destroy: a producer or crpc_loop_stop may still
     * write to it after this thread has exited. */
    crpc_decoder_destroy(l->dec);
    l->dec = NULL;
}

const char *crpc_loop_backend(const crpc_loop *l)
{
    int st = atomic_load(&l->state);
    return (st == 1 || st == 2 || st == 3) && l->backend ? l->backend->name : NULL;
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

void *crpc_frame_task_new(size_t size, void (*run)(crpc_loop *, crpc_task *), const crpc_buf *frame)
{
    size_t n = frame ? frame->len : 0;
    uint8_t *p = malloc(size + n);
    if (!p)
        return NULL;
    memset(p, 0, size);
    crpc_frame_task *t = (crpc_frame_task *)p;
    t->task.run = run;
    t->len = (uint32_t)n;
    t->frame = p + size;
    if (n)
        memcpy(p + size, frame->data, n);
    return t;
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
    CRPC_ASSERT_ON_LOOP(l);
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
    CRPC_ASSERT_ON_LOOP(l);
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
    CRPC_ASSERT_ON_LOOP(l);
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
    CRPC_ASSERT_ON_LOOP(l);
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

/* ------------------------------------------------------ hooks, listeners */

void crpc_loop_set_hooks(crpc_loop *l, const crpc_loop_hooks *hooks) { l->hooks = *hooks; }

int crpc_loop_add_listener(crpc_loop *l, crpc_listener *lst)
{
    if (l->nlisteners == CRPC_MAX_LISTENERS)
        return -ENOSPC;
    lst->index = l->nlisteners;
    l->listeners[l->nlisteners++] = lst;
    return 0;
}

crpc_listener *crpc_loop_listener(crpc_loop *l, uint32_t index)
{
    return index < l->nlisteners ? l->listeners[index] : NULL;
}

static void close_conn(crpc_conn *c, void *ctx)
{
    (void)ctx;
    crpc_conn_close(c, -ESHUTDOWN);
}

static void begin_stop(crpc_loop *l)
{
    l->stopped = true;
    if (l->hooks.on_stop)
        l->hooks.on_stop(l, l->hooks.ctx);
    crpc_conn_for_each_open(l, close_conn, NULL);
    while (l->stop_hooks) { /* each hook removes itself */
        crpc_stop_hook *h = l->stop_hooks;
        crpc_loop_remove_stop_hook(l, h);
        h->on_stop(h);
    }
}

static void run(crpc_loop *l)
{
    atomic_store_explicit(&l->now_ns, crpc_monotonic_ns(), memory_order_relaxed);
    if (l->hooks.on_start)
        l->hooks.on_start(l, l->hooks.ctx);
    for (;;) {
        run_tasks(l, NULL);
        if (!l->stopped && atomic_load(&l->stop_requested))
            begin_stop(l);
        if (l->stopped && !crpc_conn_any(l) && l->holds == 0)
            break;
        /* Calls past their deadline end now, so their cancel frames go out with this flush. */
        uint64_t deadline = l->deadlines ? expire_due(l, crpc_monotonic_ns()) : 0;
        crpc_loop_flush(l);

        uint64_t timeout = CRPC_WAIT_FOREVER;
        atomic_store(&l->sleeping, 1);
        /* A send that ended within the flush (epoll writes at once) may have left output
         * queued: that, like a queued task, means no sleeping. */
        if (atomic_load(&l->queue) || l->dirty_head ||
            (!l->stopped && atomic_load(&l->stop_requested))) {
            atomic_store(&l->sleeping, 0);
            timeout = 0;
        } else if (deadline) {
            /* Sleep no later than the earliest call deadline on this loop. */
            uint64_t now = crpc_monotonic_ns();
            timeout = deadline > now ? deadline - now : 0;
        }
        l->backend->wait(l, timeout);
        atomic_store(&l->sleeping, 0);
        atomic_store_explicit(&l->now_ns, crpc_monotonic_ns(), memory_order_relaxed);
        l->backend->dispatch(l);
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
    int err = loop_init(l);
    pthread_mutex_lock(&l->start_mu);
    l->start_error = err;
    atomic_store(&l->state, err ? -1 : 1);
    pthread_cond_broadcast(&l->start_cv);
    pthread_mutex_unlock(&l->start_mu);
    if (!err)
        run(l);
    else
        atomic_store(&l->queue, CRPC_QUEUE_CLOSED);
    loop_teardown(l);
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
    crpc_conn_table_free(l);
    if (l->event_fd >= 0)
        close(l->event_fd);
    pthread_mutex_destroy(&l->start_mu);
    pthread_cond_destroy(&l->start_cv);
    free(l);
}
