/*
 * backend.c — the one place a loop's I/O backend is chosen (see backend.h).
 *
 * io_uring when the kernel lets us set up a ring with everything we use; epoll when it
 * does not: -EPERM from seccomp (Docker's default profile) or kernel.io_uring_disabled,
 * -ENOSYS from kernels built without it or sandboxes such as gVisor, -EINVAL or
 * -EOPNOTSUPP from kernels too old for buffer rings or multishot recv. Any io_uring set-up
 * error falls back: a ring that cannot start is unusable, whatever the reason, and epoll
 * reports its own error if it cannot start either.
 *
 * SWIFTRPC_BACKEND=uring (or io_uring) or =epoll forces a choice: CI runs the suite once
 * per backend, and a forced io_uring that is refused is an error, not a silent fallback.
 * The choice is made per loop (a process may gain a seccomp filter between two loops) and
 * logged on stderr once per process for each backend that runs, with the reason.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum choice { CHOICE_AUTO, CHOICE_URING, CHOICE_EPOLL, CHOICE_INVALID };

static enum choice env_choice(const char **value)
{
    const char *v = getenv("SWIFTRPC_BACKEND");
    *value = v;
    if (!v || !*v || strcmp(v, "auto") == 0)
        return CHOICE_AUTO;
    if (strcmp(v, "uring") == 0 || strcmp(v, "io_uring") == 0)
        return CHOICE_URING;
    if (strcmp(v, "epoll") == 0)
        return CHOICE_EPOLL;
    return CHOICE_INVALID;
}

/* One line per backend per process: bit 0 io_uring, bit 1 epoll, bit 2 a bad variable. */
static atomic_uint logged;

__attribute__((format(printf, 2, 3))) static void log_once(unsigned bit, const char *fmt, ...)
{
    if (atomic_fetch_or(&logged, bit) & bit)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "crpc: %s\n", line); /* one write: lines of concurrent loops never mix */
}

int crpc_backend_select(crpc_loop *l)
{
    const char *value;
    enum choice choice = env_choice(&value);
    if (choice == CHOICE_INVALID) {
        log_once(4, "SWIFTRPC_BACKEND=%s is not one of uring, epoll, auto", value);
        return -EINVAL;
    }
    if (choice != CHOICE_EPOLL) {
        int err = crpc_backend_uring.init(l);
        if (err == 0) {
            l->backend = &crpc_backend_uring;
            if (choice == CHOICE_URING)
                log_once(1, "I/O backend io_uring (forced by SWIFTRPC_BACKEND=%s)", value);
            else
                log_once(1, "I/O backend io_uring (the kernel allows it)");
            return 0;
        }
        if (choice == CHOICE_URING)
            return err;
        int err2 = crpc_backend_epoll.init(l);
        if (err2)
            return err2;
        l->backend = &crpc_backend_epoll;
        log_once(2, "I/O backend epoll (io_uring refused: %s)", strerror(-err));
        return 0;
    }
    int err = crpc_backend_epoll.init(l);
    if (err)
        return err;
    l->backend = &crpc_backend_epoll;
    log_once(2, "I/O backend epoll (forced by SWIFTRPC_BACKEND=%s)", value);
    return 0;
}
