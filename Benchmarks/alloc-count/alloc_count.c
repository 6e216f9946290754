/*
 * alloc_count.c — counts a process's heap allocations, for "allocations per call" figures.
 *
 * An LD_PRELOAD shim: malloc, calloc, realloc, posix_memalign, aligned_alloc and memalign
 * bump one counter and forward to glibc's own entry points (__libc_*), so no dlsym
 * bootstrap is needed. At exit it prints "alloc-count: N allocations" to standard error.
 * Per-call figures come from two runs of different lengths:
 *   (allocations(long) - allocations(short)) / (calls(long) - calls(short))
 * which cancels start-up and shutdown. scripts/alloc-per-call.sh does exactly that.
 *
 * Build: gcc -O2 -shared -fPIC -o alloc_count.so alloc_count.c
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_ulong allocations;

void *malloc(size_t n)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_realloc(p, n);
}

void *memalign(size_t align, size_t n)
{
    atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n) { return memalign(align, n); }

int posix_memalign(void **out, size_t align, size_t n)
{
    void *p = memalign(align, n);
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}

__attribute__((destructor)) static void report(void)
{
    char line[64];
    int len = snprintf(line, sizeof(line), "alloc-count: %lu allocations\n",
                       atomic_load(&allocations));
    ssize_t w = write(STDERR_FILENO, line, (size_t)len);
    (void)w;
}
