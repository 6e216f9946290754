/*
 * frame.c — the stateless frame parser of wire protocol v1.
 *
 * A frame is a 4-byte big-endian length N followed by N bytes. The parser keeps no
 * state and never allocates: the caller feeds it whatever bytes it has and learns
 * whether a whole frame is there. N is checked against the limit from the header
 * alone, so an oversized frame is refused before a byte of it is buffered.
 */
#include "crpc.h"

#include <errno.h>

long crpc_frame_parse(const uint8_t *buf, size_t len, uint32_t max_frame_size,
                      uint32_t *body_len)
{
    if (len < CRPC_FRAME_HEADER_SIZE)
        return 0;
    uint32_t n = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
                 (uint32_t)buf[2] << 8 | (uint32_t)buf[3];
    if (n == 0)
        return -EBADMSG;
    if (n > max_frame_size)
        return -EMSGSIZE;
    if (len - CRPC_FRAME_HEADER_SIZE < n)
        return 0;
    *body_len = n;
    return (long)n + CRPC_FRAME_HEADER_SIZE;
}
