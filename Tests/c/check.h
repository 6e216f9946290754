/*
 * check.h — the tiny harness every C test program uses. A test is one program per
 * feature; it exits 0 when it passes, 77 when it must skip (the Automake convention,
 * e.g. io_uring forced and refused here) and 1 on the first failed check.
 */
#ifndef CRPC_TEST_CHECK_H
#define CRPC_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define SKIP_EXIT 77

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

#define CHECK_EQ(a, b)                                                                 \
    do {                                                                               \
        long long _a = (long long)(a), _b = (long long)(b);                            \
        if (_a != _b) {                                                                \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__,       \
                    __LINE__, #a, _a, #b, _b);                                         \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* Where io_uring is refused (seccomp, io_uring_disabled, old kernel) the core falls back
 * to epoll by itself, so tests run there too. Only a run forced onto io_uring
 * (SWIFTRPC_BACKEND=uring) can meet the refusal: that run skips. */
#define SKIP_IF_NO_URING(err)                                                          \
    do {                                                                               \
        int _e = (err);                                                                \
        if (_e == -EPERM || _e == -ENOSYS || _e == -EACCES || _e == -EOPNOTSUPP) {     \
            printf("SKIP: SWIFTRPC_BACKEND=uring, and io_uring is refused here (%s)\n", \
                   crpc_strerror(_e));                                                 \
            exit(SKIP_EXIT);                                                           \
        }                                                                              \
    } while (0)

#endif
