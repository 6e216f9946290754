/*
 * guard.h — places test input so that its last byte sits right before an inaccessible
 * page: any read past the end faults at once instead of passing silently.
 */
#ifndef CRPC_TEST_GUARD_H
#define CRPC_TEST_GUARD_H

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

typedef struct guard {
    uint8_t *base;
    size_t span; /* usable bytes before the guard page */
} guard;

static inline guard guard_new(size_t max_len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t span = (max_len + page - 1) / page * page;
    if (span == 0)
        span = page;
    uint8_t *p = mmap(NULL, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    CHECK(mprotect(p + span, page, PROT_NONE) == 0);
    return (guard){p, span};
}

/* Copies `len` bytes so they end exactly at the guard page; returns where they start. */
static inline const uint8_t *guard_place(guard *g, const void *data, size_t len)
{
    CHECK(len <= g->span);
    uint8_t *dst = g->base + g->span - len;
    memcpy(dst, data, len);
    return dst;
}

#endif
