/*
 * msgpack_check.c — measures one MessagePack value and proves it safe to unpack.
 *
 * msgpack-c's unpacker allocates `count * sizeof(msgpack_object)` as soon as it reads a
 * container header, so a 5-byte frame claiming four billion elements would ask for
 * ~100 GB. Every untrusted value passes through crpc_msgpack_check first: a container
 * must claim no more elements than bytes remain (each element takes at least one byte),
 * lengths must stay inside the buffer, and nesting is bounded. The walk is iterative
 * (a counter per open container), keeps no heap state and never allocates.
 */
#include "crpc.h"

#include <errno.h>

#define CHECK_DEPTH_LIMIT 512u

static inline uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Reads the header of the value at p. On success sets *hdr (header bytes), *payload
 * (bytes that follow the header: str/bin/ext bodies and fixed-size scalars) and
 * *children (values nested inside: array count, or twice the map count).
 * Returns 0, or -EBADMSG for a truncated header or the reserved byte 0xc1.
 */
static int read_header(const uint8_t *p, size_t left, size_t *hdr, uint64_t *payload,
                       uint64_t *children)
{
    uint8_t b = p[0];
    *payload = 0;
    *children = 0;
    *hdr = 1;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 0;                                  /* fixint, nil, bool */
    if (b >= 0xa0 && b <= 0xbf) { *payload = b & 0x1f; return 0; }        /* fixstr */
    if (b >= 0x90 && b <= 0x9f) { *children = b & 0x0f; return 0; }       /* fixarray */
    if (b >= 0x80 && b <= 0x8f) { *children = 2u * (b & 0x0f); return 0; } /* fixmap */

    size_t need;
    switch (b) {
    case 0xc4: case 0xd9: need = 2; break;                  /* bin8, str8 */
    case 0xc5: case 0xda: case 0xdc: case 0xde: need = 3; break; /* 16-bit lengths */
    case 0xc6: case 0xdb: case 0xdd: case 0xdf: need = 5; break; /* 32-bit lengths */
    case 0xc7: need = 3; break;                              /* ext8: len, type */
    case 0xc8: need = 4; break;                              /* ext16 */
    case 0xc9: need = 6; break;                              /* ext32 */
    case 0xcc: case 0xd0: *payload = 1; return 0;
    case 0xcd: case 0xd1: *payload = 2; return 0;
    case 0xca: case 0xce: case 0xd2: *payload = 4; return 0;
    case 0xcb: case 0xcf: case 0xd3: *payload = 8; return 0;
    case 0xd4: *payload = 2; return 0;                       /* fixext1: type + 1 */
    case 0xd5: *payload = 3; return 0;
    case 0xd6: *payload = 5; return 0;
    case 0xd7: *payload = 9; return 0;
    case 0xd8: *payload = 17; return 0;
    default: return -EBADMSG;                                /* 0xc1, never used */
    }
    if (left < need)
        return -EBADMSG;
    *hdr = need;
    switch (b) {
    case 0xc4: case 0xd9: *payload = p[1]; break;
    case 0xc5: case 0xda: *payload = rd16(p + 1); break;
    case 0xc6: case 0xdb: *payload = rd32(p + 1); break;
    case 0xc7: *payload = p[1] + 1ull; *hdr = 2; break;      /* type byte counted as payload */
    case 0xc8: *payload = rd16(p + 1) + 1ull; *hdr = 3; break;
    case 0xc9: *payload = rd32(p + 1) + 1ull; *hdr = 5; break;
    case 0xdc: *children = rd16(p + 1); break;
    case 0xdd: *children = rd32(p + 1); break;
    case 0xde: *children = 2ull * rd16(p + 1); break;
    case 0xdf: *children = 2ull * rd32(p + 1); break;
    }
    return 0;
}

/* The scalars and strings that make up most envelopes, measured without the general walk:
 * returns their size, or 0 when the value needs the general walk (or is malformed). */
static inline size_t quick_size(const uint8_t *p, size_t len)
{
    uint8_t b = p[0];
    size_t n;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 1;
    if (b >= 0xa0 && b <= 0xbf)
        n = 1 + (size_t)(b & 0x1f);                         /* fixstr */
    else if (b == 0xcc || b == 0xd0)
        n = 2;
    else if (b == 0xcd || b == 0xd1)
        n = 3;
    else if (b == 0xce || b == 0xd2 || b == 0xca)
        n = 5;
    else if (b == 0xcf || b == 0xd3 || b == 0xcb)
        n = 9;
    else if ((b == 0xc4 || b == 0xd9) && len >= 2)
        n = 2 + (size_t)p[1];                               /* bin8, str8 */
    else
        return 0;
    return n <= len ? n : 0;
}

long crpc_msgpack_check(const uint8_t *buf, size_t len, unsigned max_depth)
{
    if (len == 0)
        return -EINVAL;
    size_t quick = quick_size(buf, len);
    if (quick)
        return (long)quick;
    if (max_depth == 0 || max_depth > CHECK_DEPTH_LIMIT)
        max_depth = max_depth ? CHECK_DEPTH_LIMIT : CRPC_DEFAULT_MAX_DEPTH;

    /* remaining[d]: values still to read in the container open at depth d. */
    uint64_t remaining[CHECK_DEPTH_LIMIT + 1];
    unsigned depth = 0;
    remaining[0] = 1;
    size_t pos = 0;

    while (1) {
        while (remaining[depth] == 0) {
            if (depth == 0)
                return (long)pos;
            depth--;
        }
        remaining[depth]--;
        if (pos >= len)
            return -EBADMSG;
        size_t hdr;
        uint64_t payload, children;
        int err = read_header(buf + pos, len - pos, &hdr, &payload, &children);
        if (err)
            return err;
        pos += hdr;
        if (payload > len - pos)
            return -EBADMSG;
        pos += (size_t)payload;
        if (children) {
            /* Each nested value takes at least one byte: more claimed than left is a bomb. */
            if (children > len - pos)
                return -EBADMSG;
            if (depth + 1 > max_depth)
                return -ELOOP;
            remaining[++depth] = children;
        }
    }
}

int crpc_msgpack_array_elem(const uint8_t *buf, size_t len, uint32_t index,
                            const uint8_t **elem, size_t *elem_len)
{
    if (len == 0)
        return -EBADMSG;
    size_t hdr;
    uint64_t payload, children;
    uint8_t b = buf[0];
    if (!((b >= 0x90 && b <= 0x9f) || b == 0xdc || b == 0xdd))
        return -EBADMSG;
    if (read_header(buf, len, &hdr, &payload, &children))
        return -EBADMSG;
    if (index >= children)
        return -ENOENT;
    size_t pos = hdr;
    for (uint32_t i = 0;; i++) {
        long n = crpc_msgpack_check(buf + pos, len - pos, CHECK_DEPTH_LIMIT);
        if (n < 0)
            return (int)n;
        if (i == index) {
            *elem = buf + pos;
            *elem_len = (size_t)n;
            return 0;
        }
        pos += (size_t)n;
    }
}
