/*
 * buf.h — a growable byte buffer, the one container the core copies bytes into.
 *
 * Lifecycle: zero-initialised is empty and owns nothing; crpc_buf_reserve grows it
 * (doubling, so appends are amortised O(1)); crpc_buf_free releases it. Output
 * buffers keep their capacity between sends so a steady connection stops allocating.
 */
#ifndef CRPC_BUF_H
#define CRPC_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct crpc_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} crpc_buf;

/* Makes room for `extra` more bytes. Returns 0 or -ENOMEM (the buffer is unchanged). */
int crpc_buf_grow(crpc_buf *b, size_t extra);

static inline int crpc_buf_reserve(crpc_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    return crpc_buf_grow(b, extra);
}

static inline int crpc_buf_append(crpc_buf *b, const void *p, size_t n)
{
    int err = crpc_buf_reserve(b, n);
    if (err)
        return err;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* Drops the first n bytes, moving the rest (a partial frame, usually small) to the front. */
void crpc_buf_consume(crpc_buf *b, size_t n);

/* Releases the memory; the buffer is empty and reusable afterwards. */
void crpc_buf_free(crpc_buf *b);

/* Shrinks an idle buffer that grew past `keep` bytes, so one burst does not pin memory. */
void crpc_buf_trim(crpc_buf *b, size_t keep);


/* Bytes held by buffers large enough to be memory mappings of their own (see buf.c), in
 * the whole process: what the allocator's own statistics do not see. */
size_t crpc_buf_mapped_bytes(void);

/* A per-thread scratch buffer for building a frame before handing it to another thread.
 * Empty on return; it keeps its capacity for the thread's lifetime and is freed when the
 * thread exits. NULL when out of memory. */
crpc_buf *crpc_thread_scratch(void);

#endif
