/*
 * buf.c — growable byte buffers (see buf.h for the lifecycle).
 */
#include "buf.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

int crpc_buf_grow(crpc_buf *b, size_t extra)
{
    size_t need = b->len + extra;
    if (need < b->len)
        return -ENOMEM; /* overflow */
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

void crpc_buf_consume(crpc_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void crpc_buf_free(crpc_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void crpc_buf_trim(crpc_buf *b, size_t keep)
{
    if (b->len == 0 && b->cap > keep)
        crpc_buf_free(b);
}

/* The scratch buffer is freed when its thread exits (the key's destructor), so threads
 * that come and go leave nothing behind. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    crpc_buf_free(p);
    free(p);
}

static void scratch_key_init(void) { pthread_key_create(&scratch_key, scratch_free); }

crpc_buf *crpc_thread_scratch(void)
{
    static __thread crpc_buf *scratch;
    if (!scratch) {
        pthread_once(&scratch_once, scratch_key_init);
        scratch = calloc(1, sizeof(*scratch));
        if (!scratch)
            return NULL;
        pthread_setspecific(scratch_key, scratch);
    }
    scratch->len = 0;
    return scratch;
}
