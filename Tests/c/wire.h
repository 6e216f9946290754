/*
 * wire.h — what the C tests that talk to a server over raw sockets share: a loopback
 * connect, request frames built by hand (the client would never send some of what they
 * send next to them), and the echo their servers answer with.
 */
#ifndef CRPC_TEST_WIRE_H
#define CRPC_TEST_WIRE_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "check.h"
#include "crpc.h"

/* A blocking TCP connection to 127.0.0.1:port. */
static inline int wire_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* Answers a request with its first argument (nil when it has none). */
static inline void wire_echo_first_arg(const crpc_request *req)
{
    const uint8_t *arg = NULL;
    size_t arg_len = 0;
    crpc_reply r = {0};
    if (crpc_msgpack_array_elem(req->msg.body, req->msg.body_len, 0, &arg, &arg_len) == 0) {
        r.result = arg;
        r.result_len = (uint32_t)arg_len;
    }
    crpc_server_reply(req->server, req->conn, req->msg.msgid, &r);
}

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
