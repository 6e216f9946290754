/*
 * test_envelope.c — wire protocol v1 envelopes: every message kind round-trips through
 * the encoder and decoder, and every rejection the protocol names is reported as it says
 * (-EBADMSG: close; -EPROTO with the msgid kept: answer status 3). MessagePack values are
 * checked for bombs and truncation at every length, against a guard page.
 */
#include <errno.h>
#include <stdint.h>

#include "buf.h"
#include "check.h"
#include "crpc.h"
#include "envelope.h"
#include "guard.h"

#include <msgpack.h>

static crpc_decoder *dec;
static guard g;

static int decode(const uint8_t *body, size_t len, crpc_message *m)
{
    const uint8_t *p = guard_place(&g, body, len);
    return crpc_envelope_decode(dec, p, len, m);
}

/* Decodes the single frame in b (skipping its length prefix). */
static int decode_frame(const crpc_buf *b, crpc_message *m)
{
    uint32_t n;
    CHECK_EQ(crpc_frame_parse(b->data, b->len, UINT32_MAX, &n), (long)b->len);
    return decode(b->data + 4, n, m);
}

static void test_request_round_trip(void)
{
    const uint8_t params[] = {0x92, 0x2a, 0xa3, 'a', 'b', 'c'}; /* [42, "abc"] */
    const crpc_ext_entry ext[] = {
        {.key = "trace", .key_len = 5, .value = (const uint8_t *)"t-1", .value_len = 3},
        {.key = "blob", .key_len = 4, .value = (const uint8_t *)"\x00\x01", .value_len = 2, .is_binary = 1},
    };
    crpc_call call = {.method = "Arith.Multiply", .method_len = 14, .params = params,
                      .params_len = sizeof(params), .ext = ext, .ext_count = 2, .timeout_us = 1500000};
    crpc_buf b = {0};
    CHECK_EQ(crpc_encode_request(&b, 7, &call, 1024), 0);
    crpc_patch_request_msgid(b.data, 0xdeadbeef);
    crpc_message m;
    CHECK_EQ(decode_frame(&b, &m), 0);
    CHECK_EQ(m.type, CRPC_MSG_REQUEST);
    CHECK_EQ(m.msgid, 0xdeadbeef);
    CHECK(m.method_len == 14 && memcmp(m.method, "Arith.Multiply", 14) == 0);
    CHECK(m.body_len == sizeof(params) && memcmp(m.body, params, sizeof(params)) == 0);
    const crpc_value *v = crpc_message_value(&m); /* unpacked by msgpack-c on demand */
    CHECK(v != NULL);
    CHECK(crpc_message_value(&m) == v);           /* once */
    const msgpack_object *o = (const msgpack_object *)v;
    CHECK(o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 2);
    CHECK(o->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.array.ptr[0].via.u64 == 42);
    CHECK(o->via.array.ptr[1].type == MSGPACK_OBJECT_STR && o->via.array.ptr[1].via.str.size == 3);
    CHECK_EQ(m.timeout_us, 1500000);
    CHECK_EQ(m.ext_count, 2);
    CHECK(m.ext[0].key_len == 5 && memcmp(m.ext[0].key, "trace", 5) == 0 && !m.ext[0].is_binary);
    CHECK(m.ext[0].value_len == 3 && memcmp(m.ext[0].value, "t-1", 3) == 0);
    CHECK(m.ext[1].is_binary && m.ext[1].value_len == 2 && m.ext[1].value[1] == 1);

    /* Without params or ext: [0, id, method, []] and no ext element at all. */
    crpc_call bare = {.method = "rpc.ping", .method_len = 8};
    b.len = 0;
    CHECK_EQ(crpc_encode_request(&b, 1, &bare, 1024), 0);
    CHECK_EQ(b.data[4], 0x94);
    CHECK_EQ(decode_frame(&b, &m), 0);
    CHECK(m.body_len == 1 && m.body[0] == 0x90 && m.ext_count == 0 && m.timeout_us == 0);
    crpc_buf_free(&b);
}

static void test_other_kinds(void)
{
    crpc_buf b = {0};
    crpc_message m;
    const uint8_t params[] = {0x91, 0xc0};
    crpc_call note = {.method = "Log.Write", .method_len = 9, .params = params, .params_len = 2};
    CHECK_EQ(crpc_encode_notification(&b, &note, 1024), 0);
    CHECK_EQ(decode_frame(&b, &m), 0);
    CHECK(m.type == CRPC_MSG_NOTIFICATION && m.method_len == 9 && m.body_len == 2);

    const uint8_t result[] = {0xcd, 0x01, 0x00};
    const crpc_ext_entry ext[] = {{.key = "k", .key_len = 1, .value = (const uint8_t *)"v", .value_len = 1}};
    crpc_reply ok = {.result = result, .result_len = 3, .ext = ext, .ext_count = 1};
    b.len = 0;
    CHECK_EQ(crpc_encode_response(&b, 99, &ok, 1024), 0);
    CHECK_EQ(decode_frame(&b, &m), 0);
    CHECK(m.type == CRPC_MSG_RESPONSE && m.msgid == 99 && m.error_code == 0);
    CHECK(m.body_len == 3 && memcmp(m.body, result, 3) == 0 && m.ext_count == 1);

    b.len = 0;
    CHECK_EQ(crpc_encode_error(&b, 5, CRPC_STATUS_UNIMPLEMENTED, "no such method", 1024), 0);
    CHECK_EQ(decode_frame(&b, &m), 0);
    CHECK(m.error_code == 12 && m.error_msg_len == 14 && memcmp(m.error_msg, "no such method", 14) == 0);
    CHECK(m.body_len == 1 && m.body[0] == 0xc0); /* result is nil beside an error */

    b.len = 0;
    CHECK_EQ(crpc_encode_cancel(&b, 77), 0);
    CHECK_EQ(decode_frame(&b, &m), 0);
    CHECK(m.type == CRPC_MSG_CANCEL && m.msgid == 77);

    /* Oversized messages are refused and leave the buffer as it was. */
    static uint8_t big[2000];
    big[0] = 0x91; big[1] = 0xc5; big[2] = 0x07; big[3] = 0xc0; /* [bin16 of 1984 bytes] */
    crpc_call huge = {.method = "A.B", .method_len = 3, .params = big, .params_len = 4 + 1984};
    b.len = 3;
    CHECK_EQ(crpc_encode_request(&b, 1, &huge, 1000), -EMSGSIZE);
    CHECK_EQ(b.len, 3);
    CHECK_EQ(crpc_encode_request(&b, 1, &huge, 4000), 0);
    /* Params that are not one MessagePack value are refused before anything is written. */
    const uint8_t broken[] = {0x92, 0x01};
    crpc_call bad = {.method = "A.B", .method_len = 3, .params = broken, .params_len = 2};
    size_t before = b.len;
    CHECK_EQ(crpc_encode_request(&b, 1, &bad, 4000), -EINVAL);
    CHECK_EQ(b.len, before);
    crpc_buf_free(&b);
}

#define BODY(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

/* The streams' frames round-trip: an open's kind and credit, an element's value and
 * metadata, a credit's counts (clamped to 32 bits), a half-close's sid. */
static void test_stream_frames(void)
{
    crpc_buf b = {0};
    crpc_message m;
    crpc_stream_open open = {.kind = CRPC_STREAM_BIDI, .credit_messages = 3, .credit_bytes = 70000};
    open.call.method = "S.Chat";
    open.call.method_len = 6;
    open.call.timeout_us = 5;
    CHECK_EQ(crpc_encode_stream_open(&b, 9, &open, 4096), 0);
    CHECK_EQ(decode(b.data + 4, b.len - 4, &m), 0);
    CHECK_EQ(m.type, CRPC_MSG_REQUEST);
    CHECK_EQ(m.msgid, 9);
    CHECK_EQ(m.stream_kind, CRPC_STREAM_BIDI);
    CHECK_EQ(m.credit_messages, 3);
    CHECK_EQ(m.credit_bytes, 70000);
    CHECK_EQ(m.timeout_us, 5);
    CHECK_EQ(m.ext_count, 0); /* the reserved keys are not metadata */
    /* Without rpc-credit, a stream open gets the protocol's default window. */
    b.len = 0;
    open.credit_messages = open.credit_bytes = 0;
    CHECK_EQ(crpc_encode_stream_open(&b, 9, &open, 4096), 0);
    CHECK_EQ(decode(b.data + 4, b.len - 4, &m), 0);
    CHECK_EQ(m.credit_messages, CRPC_DEFAULT_STREAM_CREDIT_MESSAGES);
    CHECK_EQ(m.credit_bytes, CRPC_DEFAULT_STREAM_CREDIT_BYTES);

    b.len = 0;
    crpc_ext_entry e = {.key = "k", .key_len = 1, .value = (const uint8_t *)"v", .value_len = 1};
    CHECK_EQ(crpc_encode_element(&b, 70000, (const uint8_t *)"\xa2hi", 3, &e, 1, 4096), 0);
    CHECK_EQ(decode(b.data + 4, b.len - 4, &m), 0);
    CHECK_EQ(m.type, CRPC_MSG_ELEMENT);
    CHECK_EQ(m.msgid, 70000);
    CHECK_EQ(m.body_len, 3);
    CHECK_EQ(memcmp(m.body, "\xa2hi", 3), 0);
    CHECK_EQ(m.ext_count, 1);
    CHECK_EQ(m.frame_len, b.len - 4);
    CHECK_EQ(crpc_encode_element(&b, 1, (const uint8_t *)"\x92\x01", 2, NULL, 0, 4096), -EINVAL);
    CHECK_EQ(crpc_encode_element(&b, 1, (const uint8_t *)"\xa2hi", 3, NULL, 0, 4), -EMSGSIZE);

    b.len = 0;
    CHECK_EQ(crpc_encode_credit(&b, 2, 16, 65536, NULL, 0, 4096), 0);
    CHECK_EQ(decode(b.data + 4, b.len - 4, &m), 0);
    CHECK_EQ(m.type, CRPC_MSG_CREDIT);
    CHECK_EQ(m.credit_messages, 16);
    CHECK_EQ(m.credit_bytes, 65536);
    /* [5, 2, 2^40, 1]: a count past 32 bits is clamped. */
    const uint8_t big[] = {0x94, 0x05, 0x02, 0xcf, 0, 0, 1, 0, 0, 0, 0, 0, 0x01};
    CHECK_EQ(decode(big, sizeof(big), &m), 0);
    CHECK_EQ(m.credit_messages, UINT32_MAX);

    b.len = 0;
    CHECK_EQ(crpc_encode_half_close(&b, 4), 0);
    CHECK_EQ(decode(b.data + 4, b.len - 4, &m), 0);
    CHECK_EQ(m.type, CRPC_MSG_HALF_CLOSE);
    CHECK_EQ(m.msgid, 4);
    crpc_buf_free(&b);
}

static void expect_at(int line, const uint8_t *body, size_t len, int want, uint32_t want_msgid)
{
    crpc_message m;
    int r = decode(body, len, &m);
    if (r != want)
        fprintf(stderr, "line %d: decode returned %d (%s), want %d\n", line, r, crpc_strerror(r), want);
    CHECK_EQ(r, want);
    if (want == -EPROTO || want == 0)
        CHECK_EQ(m.msgid, want_msgid);
}

#define expect(...) expect_at(__LINE__, __VA_ARGS__)

static void test_rejections(void)
{
    expect(BODY(0x2a), -EBADMSG, 0);                          /* not an array */
    expect(BODY(0x91, 0x00), -EBADMSG, 0);                    /* too short to hold a msgid */
    expect(BODY(0x92, 0x07, 0x01), -EBADMSG, 0);              /* unknown type 7 */
    /* The streams' frames (types 4-6): their sid is known, the rest must be there. */
    expect(BODY(0x92, 0x04, 0x01), -EPROTO, 1);               /* an element without a value */
    expect(BODY(0x93, 0x05, 0x01, 0x02), -EPROTO, 1);         /* credit without its bytes */
    expect(BODY(0x94, 0x05, 0x01, 0x02, 0xa1, 'x'), -EPROTO, 1); /* credit bytes not a count */
    expect(BODY(0x95, 0x00, 0x01, 0xa3, 'A', '.', 'B', 0x90, 0x81, 0xaa, 'r', 'p', 'c', '-', 's', 't', 'r', 'e', 'a',
                'm', 0x04), -EPROTO, 1);                      /* rpc-stream kind 4 */
    expect(BODY(0x92, 0x06, 0x01), 0, 1);                     /* a half-close is just its sid */
    expect(BODY(0x92, 0xff, 0x01), -EBADMSG, 0);              /* negative type */
    expect(BODY(0x94, 0x00, 0xa1, 'x', 0xa3, 'A', '.', 'B', 0x90), -EBADMSG, 0); /* msgid a string */
    expect(BODY(0x94, 0x00, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0xa3, 'A', '.', 'B', 0x90), -EBADMSG, 0); /* msgid >= 2^32 */
    expect(BODY(0x94, 0x00, 0x05, 0xa3, 'A', '.', 'B'), -EPROTO, 5);   /* claims 4, has 3: msgid still known */
    expect(BODY(0x92, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01), -EBADMSG, 0); /* array32 bomb as type */
    /* An envelope claiming 4 billion elements: refused without allocating, msgid kept. */
    expect(BODY(0xdd, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01), -EPROTO, 1);
    /* msgid recovered: status 3 and the connection stays. */
    expect(BODY(0x94, 0x00, 0x05, 0xa3, 'A', '.', 'B', 0x2a), -EPROTO, 5);          /* params not an array */
    expect(BODY(0x94, 0x00, 0x06, 0x2a, 0x90), -EPROTO, 6);                         /* method not a string */
    expect(BODY(0x93, 0x00, 0x07, 0xa3, 'A', '.', 'B'), -EPROTO, 7);                /* params missing */
    expect(BODY(0x95, 0x00, 0x08, 0xa3, 'A', '.', 'B', 0x90, 0x2a), -EPROTO, 8);    /* ext not a map */
    expect(BODY(0x95, 0x00, 0x09, 0xa3, 'A', '.', 'B', 0x90, 0x81, 0xa1, 'k', 0x01), -EPROTO, 9); /* ext value int */
    expect(BODY(0x95, 0x00, 0x0a, 0xa3, 'A', '.', 'B', 0x90, 0x81, 0x01, 0xa1, 'v'), -EPROTO, 10); /* ext key int */
    expect(BODY(0x94, 0x00, 0x0b, 0xa3, 'A', '.', 'B', 0xdd, 0xff, 0xff, 0xff, 0xff), -EPROTO, 11); /* params bomb */
    expect(BODY(0x94, 0x00, 0x0c, 0xa3, 'A', '.', 'B', 0x90, 0xc0), -EPROTO, 12);   /* trailing bytes */
    expect(BODY(0x94, 0x00, 0x0d, 0xa3, 'A', '.', 'B', 0x91, 0xc1), -EPROTO, 13);   /* reserved byte */
    /* Fine: extra trailing elements are ignored, ext may be nil or empty. */
    expect(BODY(0x97, 0x00, 0x0e, 0xa3, 'A', '.', 'B', 0x90, 0x80, 0x01, 0xc0), 0, 14);
    expect(BODY(0x95, 0x00, 0x0f, 0xa3, 'A', '.', 'B', 0x90, 0xc0), 0, 15);
    /* A response whose error is not [code, message]. */
    expect(BODY(0x94, 0x01, 0x10, 0x2a, 0xc0), -EPROTO, 16);

    /* Depth: 100 nested arrays in params is past the default limit of 64. */
    uint8_t deep[8 + 100 + 1] = {0x94, 0x00, 0x11, 0xa3, 'A', '.', 'B'};
    for (int i = 0; i < 100; i++)
        deep[7 + i] = 0x91;
    deep[107] = 0xc0;
    expect(deep, 108, -ELOOP, 17);

    /* Too many ext entries. */
    uint8_t many[16 + 65 * 3] = {0x95, 0x00, 0x12, 0xa3, 'A', '.', 'B', 0x90, 0xde, 0x00, 65};
    size_t n = 11;
    for (int i = 0; i < 65; i++) {
        many[n++] = 0xa1;
        many[n++] = (uint8_t)('!' + i);
        many[n++] = 0xa0;
    }
    expect(many, n, -E2BIG, 18);
}

/* Every truncation of a valid value is refused, and no byte past the end is read. */
/* Every MessagePack encoding of a value in range is accepted wherever the envelope reads an
 * unsigned integer (type, msgid, rpc-timeout-us): some libraries write small positive
 * numbers as int8..64. Negative values stay refused. */
static void test_signed_encodings_of_unsigned_values(void)
{
    /* msgid 5, 6, 7, 8 as int8, int16, int32, int64 */
    expect(BODY(0x94, 0x00, 0xd0, 0x05, 0xa3, 'A', '.', 'B', 0x90), 0, 5);
    expect(BODY(0x94, 0x00, 0xd1, 0x00, 0x06, 0xa3, 'A', '.', 'B', 0x90), 0, 6);
    expect(BODY(0x94, 0x00, 0xd2, 0x00, 0x00, 0x00, 0x07, 0xa3, 'A', '.', 'B', 0x90), 0, 7);
    expect(BODY(0x94, 0x00, 0xd3, 0, 0, 0, 0, 0, 0, 0, 0x08, 0xa3, 'A', '.', 'B', 0x90), 0, 8);
    /* the largest msgid, 2^32 - 1, as int64; and 2^32 as int64 is still out of range */
    expect(BODY(0x94, 0x00, 0xd3, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xa3, 'A', '.', 'B', 0x90), 0, 0xffffffffu);
    expect(BODY(0x94, 0x00, 0xd3, 0, 0, 0, 1, 0, 0, 0, 0, 0xa3, 'A', '.', 'B', 0x90), -EBADMSG, 0);
    /* negative msgids in each width */
    expect(BODY(0x94, 0x00, 0xd0, 0xff, 0xa3, 'A', '.', 'B', 0x90), -EBADMSG, 0);
    expect(BODY(0x94, 0x00, 0xd1, 0x80, 0x00, 0xa3, 'A', '.', 'B', 0x90), -EBADMSG, 0);
    expect(BODY(0x94, 0x00, 0xd2, 0xff, 0xff, 0xff, 0xfb, 0xa3, 'A', '.', 'B', 0x90), -EBADMSG, 0);
    expect(BODY(0x94, 0x00, 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0, 0xa3, 'A', '.', 'B', 0x90), -EBADMSG, 0);
    /* the type as int8 / uint8, a response and a cancel */
    expect(BODY(0x94, 0xd0, 0x00, 0x09, 0xa3, 'A', '.', 'B', 0x90), 0, 9);
    expect(BODY(0x94, 0xcc, 0x01, 0xd1, 0x00, 0x0a, 0xc0, 0xc0), 0, 10);
    expect(BODY(0x92, 0xd2, 0x00, 0x00, 0x00, 0x03, 0xd0, 0x0b), 0, 11);
    /* rpc-timeout-us as int8, int32 and int64; negative is refused with the msgid kept */
    static const uint8_t key[] = {0xae, 'r', 'p', 'c', '-', 't', 'i', 'm', 'e', 'o', 'u', 't', '-', 'u', 's'};
    const struct { uint8_t enc[9]; size_t n; int want; uint64_t us; } timeouts[] = {
        {{0xd0, 0x7f}, 2, 0, 127},
        {{0xd2, 0x00, 0x0f, 0x42, 0x40}, 5, 0, 1000000},
        {{0xd3, 0, 0, 0, 0x1b, 0xf0, 0x8e, 0xb0, 0x00}, 9, 0, 120000000000ull},
        {{0xd0, 0xf0}, 2, -EPROTO, 0},
    };
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
        uint8_t body[64] = {0x95, 0x00, 0x0c, 0xa3, 'A', '.', 'B', 0x90, 0x81};
        size_t n = 9;
        memcpy(body + n, key, sizeof(key));
        n += sizeof(key);
        memcpy(body + n, timeouts[i].enc, timeouts[i].n);
        n += timeouts[i].n;
        crpc_message m;
        CHECK_EQ(decode(body, n, &m), timeouts[i].want);
        CHECK_EQ(m.msgid, 12u);
        if (timeouts[i].want == 0)
            CHECK_EQ(m.timeout_us, timeouts[i].us);
    }
}

static void test_check_truncations(void)
{
    const uint8_t value[] = {
        0x84, 0xa1, 'a', 0xdc, 0x00, 0x03, 0x01, 0xcd, 0x01, 0x00, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0,
        0xa1, 'b', 0xc4, 0x03, 1, 2, 3,
        0xa1, 'c', 0xd9, 0x02, 'h', 'i',
        0xa1, 'd', 0xd6, 0x01, 1, 2, 3, 4,
    };
    CHECK_EQ(crpc_msgpack_check(guard_place(&g, value, sizeof(value)), sizeof(value), 8), (long)sizeof(value));
    for (size_t k = 1; k < sizeof(value); k++)
        CHECK_EQ(crpc_msgpack_check(guard_place(&g, value, k), k, 8), -EBADMSG);
    CHECK_EQ(crpc_msgpack_check(value, sizeof(value), 1), -ELOOP); /* map > array: depth 2 */
    const uint8_t map_bomb[] = {0xdf, 0x80, 0x00, 0x00, 0x00, 0x01, 0x02};
    CHECK_EQ(crpc_msgpack_check(guard_place(&g, map_bomb, 7), 7, 8), -EBADMSG);
    const uint8_t str_past_end[] = {0xdb, 0x00, 0x10, 0x00, 0x00, 'x'};
    CHECK_EQ(crpc_msgpack_check(guard_place(&g, str_past_end, 6), 6, 8), -EBADMSG);
    /* The scalar fast path refuses short values too. */
    const uint8_t *const short_scalars[] = {(const uint8_t *)"\xd9\x05" "a", (const uint8_t *)"\xcd\x01",
                                            (const uint8_t *)"\xa3" "a", (const uint8_t *)"\xc4\x02\x00",
                                            (const uint8_t *)"\xcb\x00\x00"};
    const size_t short_len[] = {3, 2, 2, 3, 3};
    for (size_t i = 0; i < 5; i++)
        CHECK_EQ(crpc_msgpack_check(guard_place(&g, short_scalars[i], short_len[i]), short_len[i], 8), -EBADMSG);
    const uint8_t exact[] = {0xd9, 0x02, 'o', 'k'};
    CHECK_EQ(crpc_msgpack_check(guard_place(&g, exact, 4), 4, 8), 4);

    const uint8_t *e;
    size_t elen;
    const uint8_t arr[] = {0x93, 0x01, 0xa2, 'h', 'i', 0xc0};
    CHECK_EQ(crpc_msgpack_array_elem(arr, sizeof(arr), 1, &e, &elen), 0);
    CHECK(e == arr + 2 && elen == 3);
    CHECK_EQ(crpc_msgpack_array_elem(arr, sizeof(arr), 3, &e, &elen), -ENOENT);
    CHECK_EQ(crpc_msgpack_array_elem(arr + 1, 1, 0, &e, &elen), -EBADMSG);
}

int main(void)
{
    g = guard_new(64 * 1024);
    CHECK_EQ(crpc_decoder_create(0, 0, &dec), 0);
    test_request_round_trip();
    test_other_kinds();
    test_rejections();
    test_stream_frames();
    test_signed_encodings_of_unsigned_values();
    test_check_truncations();
    crpc_decoder_destroy(dec);
    printf("PASS test_envelope\n");
    return 0;
}
