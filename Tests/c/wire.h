/*
 * wire.h — request frames built by hand for the C tests that talk to a server over raw
 * sockets (the client would never send some of what they send next to them).
 */
#ifndef CRPC_TEST_WIRE_H
#define CRPC_TEST_WIRE_H

#include <stdint.h>
#include <string.h>

/* Writes [0, id, method, [bin of n bytes of `fill`]] as a frame at out (method shorter
 * than 32 bytes); returns the frame's length. */
static inline size_t wire_request(uint8_t *out, const char *method, uint32_t id, uint32_t n, uint8_t fill)
{
    size_t mlen = strlen(method);
    uint8_t *p = out + 4;
    *p++ = 0x94; *p++ = 0x00;
    *p++ = 0xce; *p++ = (uint8_t)(id >> 24); *p++ = (uint8_t)(id >> 16); *p++ = (uint8_t)(id >> 8); *p++ = (uint8_t)id;
    *p++ = (uint8_t)(0xa0 | mlen); memcpy(p, method, mlen); p += mlen;
    *p++ = 0x91; *p++ = 0xc6;
    *p++ = (uint8_t)(n >> 24); *p++ = (uint8_t)(n >> 16); *p++ = (uint8_t)(n >> 8); *p++ = (uint8_t)n;
    memset(p, fill, n); p += n;
    uint32_t len = (uint32_t)(p - out - 4);
    out[0] = (uint8_t)(len >> 24); out[1] = (uint8_t)(len >> 16); out[2] = (uint8_t)(len >> 8); out[3] = (uint8_t)len;
    return (size_t)(p - out);
}

#endif
