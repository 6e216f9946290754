/*
 * msgpack_check.c — measures one MessagePack value and proves it safe to unpack: crpc.h's
 * face of the rules in Sources/CMsgPack/msgpack_rules.h (the walk and the header reader,
 * shared with the Swift coder), plus a quick path for the scalars most envelopes are
 * made of. Every untrusted value passes through crpc_msgpack_check first.
 */
#include "crpc.h"
#include "msgpack_rules.h" /* the header reader and the walk, shared with the Swift coder */

#include <errno.h>

#define CHECK_DEPTH_LIMIT CRPC_MP_DEPTH_LIMIT

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
    if (max_depth == 0)
        max_depth = CRPC_DEFAULT_MAX_DEPTH;
    long n = crpc_mp_check(buf, len, max_depth, 0, NULL);
    return n >= 0 ? n : n == -2 ? -ELOOP : -EBADMSG;
}

int crpc_msgpack_array_elem(const uint8_t *buf, size_t len, uint32_t index,
                            const uint8_t **elem, size_t *elem_len)
{
    if (len == 0)
        return -EBADMSG;
    crpc_mp_header h;
    if (crpc_mp_read_header(buf, len, &h) || !h.is_container || h.is_map)
        return -EBADMSG;
    if (index >= h.children)
        return -ENOENT;
    size_t pos = h.hdr;
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
