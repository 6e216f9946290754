/*
 * test_frame.c — the frame parser, fed every prefix (every split point) of every input,
 * each placed against a guard page so an over-read crashes the test.
 */
#include <errno.h>
#include <stdint.h>

#include "check.h"
#include "crpc.h"
#include "guard.h"

static size_t frame(uint8_t *out, uint32_t n, uint8_t fill)
{
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    memset(out + 4, fill, n);
    return 4 + n;
}

/* Every prefix of a valid frame (plus trailing bytes of a next frame) parses right. */
static void check_valid(guard *g, uint32_t n, uint32_t max)
{
    static uint8_t in[70000 + 16];
    size_t len = frame(in, n, 0x5a);
    memcpy(in + len, "\0\0\0\1x", 5); /* the start of a following frame */
    for (size_t k = 0; k <= len + 5; k++) {
        const uint8_t *p = guard_place(g, in, k);
        uint32_t body = 0;
        long r = crpc_frame_parse(p, k, max, &body);
        if (k < len) {
            CHECK_EQ(r, 0);
        } else {
            CHECK_EQ(r, (long)len);
            CHECK_EQ(body, n);
        }
    }
}

/* A bad header is reported as soon as the 4 header bytes are there, never before. */
static void check_bad(guard *g, uint32_t n, uint32_t max, long want)
{
    uint8_t in[16] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n, 1, 2, 3};
    for (size_t k = 0; k <= sizeof(in); k++) {
        const uint8_t *p = guard_place(g, in, k);
        uint32_t body = 0;
        long r = crpc_frame_parse(p, k, max, &body);
        CHECK_EQ(r, k < 4 ? 0 : want);
    }
}

int main(void)
{
    guard g = guard_new(70016);
    const uint32_t sizes[] = {1, 2, 3, 4, 5, 31, 32, 33, 255, 256, 4096, 65535, 65536, 70000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        check_valid(&g, sizes[i], CRPC_DEFAULT_MAX_FRAME_SIZE);
    check_valid(&g, 100, 100);              /* exactly the limit is allowed */
    check_bad(&g, 0, 1024, -EBADMSG);       /* empty frames are not allowed */
    check_bad(&g, 101, 100, -EMSGSIZE);     /* one past the limit */
    check_bad(&g, 0xffffffffu, CRPC_DEFAULT_MAX_FRAME_SIZE, -EMSGSIZE);
    check_bad(&g, CRPC_DEFAULT_MAX_FRAME_SIZE + 1, CRPC_DEFAULT_MAX_FRAME_SIZE, -EMSGSIZE);
    printf("PASS test_frame\n");
    return 0;
}
