/*
 * test_msgpack_rules — the shared MessagePack rules (Sources/CMsgPack/msgpack_rules.h):
 * what crpc_mp_check reports for each kind of bad input, and crpc.h's crpc_msgpack_check
 * (the core's face of it) keeping its documented return codes.
 */
#include <errno.h>

#include "check.h"
#include "crpc.h"
#include "msgpack_rules.h"

#define REFUSED(bytes, depth, flags, want_kind, want_offset)                                \
    do {                                                                                    \
        const uint8_t b_[] = bytes;                                                         \
        crpc_mp_problem why_;                                                               \
        CHECK(crpc_mp_check(b_, sizeof b_, depth, flags, &why_) < 0);                       \
        CHECK_EQ((int)why_.kind, (int)(want_kind));                                         \
        CHECK_EQ((long)why_.offset, (long)(want_offset));                                   \
    } while (0)
#define B(...) {__VA_ARGS__}

int main(void)
{
    crpc_mp_problem why;
    CHECK_EQ(crpc_mp_check(NULL, 0, 32, 0, &why), -1);
    CHECK_EQ((int)why.kind, CRPC_MP_EMPTY);
    REFUSED(B(0x92, 0x91, 0x01), 32, 0, CRPC_MP_TRUNCATED_VALUE, 3);
    REFUSED(B(0x91, 0xdb, 0xff), 32, 0, CRPC_MP_TRUNCATED_HEADER, 1);
    REFUSED(B(0x91, 0xc1), 32, 0, CRPC_MP_RESERVED_BYTE, 1);
    REFUSED(B(0x91, 0xa5, 0x61), 32, 0, CRPC_MP_PAYLOAD_PAST_END, 1);
    REFUSED(B(0x91, 0x91, 0x01), 1, 0, CRPC_MP_TOO_DEEP, 1);
    REFUSED(B(0xdd, 0xff, 0xff, 0xff, 0xff, 0x01), 32, 0, CRPC_MP_TOO_MANY, 0);
    const uint8_t bomb[] = {0xdf, 0x00, 0x00, 0x00, 0x03, 0x01, 0x02};
    CHECK(crpc_mp_check(bomb, sizeof bomb, 32, 0, &why) < 0);
    CHECK_EQ((long)why.claimed, 6L);
    CHECK_EQ((long)why.remaining, 2L);
    CHECK(why.is_map);

    /* Empty containers nest only under the flag; a deep and oversized container reports
     * its size without it (the core's order) and its depth with it (the coder's). */
    const uint8_t empty_in_one[] = {0x91, 0x90};
    CHECK_EQ(crpc_mp_check(empty_in_one, 2, 1, 0, NULL), 2);
    CHECK_EQ(crpc_mp_check(empty_in_one, 2, 1, CRPC_MP_EMPTY_CONTAINERS_NEST, &why), -2);
    CHECK_EQ((int)why.kind, CRPC_MP_TOO_DEEP);
    REFUSED(B(0x91, 0x92, 0x01), 1, 0, CRPC_MP_TOO_MANY, 1);
    REFUSED(B(0x91, 0x92, 0x01), 1, CRPC_MP_EMPTY_CONTAINERS_NEST, CRPC_MP_TOO_DEEP, 1);

    /* crpc_msgpack_check: size, -EBADMSG, -ELOOP, -EINVAL as crpc.h says. */
    const uint8_t value[] = {0x92, 0x01, 0xa1, 0x61, 0xff};
    CHECK_EQ(crpc_msgpack_check(value, sizeof value, 0), 4L);
    CHECK_EQ(crpc_msgpack_check(value, 0, 0), (long)-EINVAL);
    const uint8_t reserved[] = {0x91, 0xc1};
    CHECK_EQ(crpc_msgpack_check(reserved, sizeof reserved, 0), (long)-EBADMSG);
    const uint8_t deep[] = {0x91, 0x91, 0x91, 0x01};
    CHECK_EQ(crpc_msgpack_check(deep, sizeof deep, 2), (long)-ELOOP);
    CHECK_EQ(crpc_msgpack_check(deep, sizeof deep, 3), 4L);
    const uint8_t *elem;
    size_t elem_len;
    CHECK_EQ(crpc_msgpack_array_elem(value, 4, 1, &elem, &elem_len), 0);
    CHECK_EQ((long)(elem - value), 2L);
    CHECK_EQ((long)elem_len, 2L);
    CHECK_EQ(crpc_msgpack_array_elem(value, 4, 2, &elem, &elem_len), -ENOENT);
    const uint8_t map[] = {0x81, 0x01, 0x02};
    CHECK_EQ(crpc_msgpack_array_elem(map, 3, 0, &elem, &elem_len), -EBADMSG);
    printf("msgpack rules: ok\n");
    return 0;
}
