/*
 * msgpack_rules.h — the one reader of MessagePack headers and the one validator of
 * untrusted MessagePack, shared by the C core (msgpack_check.c, via crpc.h's
 * crpc_msgpack_check) and the Swift coder (MessagePackValidator, through the CMsgPack
 * module). Header-only so that both build it from this file without a library between
 * them; everything is static inline.
 *
 * Why validate: msgpack-c's unpacker allocates `count * sizeof(msgpack_object)` as soon as
 * it reads a container header, so a 5-byte value claiming four billion elements would ask
 * for ~100 GB. A value passes when every container claims no more elements than bytes
 * remain (each element takes at least one byte, a map pair two), every str/bin/ext length
 * and fixed-width field lies inside the buffer, nesting is bounded, and the reserved byte
 * 0xc1 does not appear. The walk is iterative (a counter per open container), keeps no
 * heap state and never allocates.
 */
#ifndef CRPC_MSGPACK_RULES_H
#define CRPC_MSGPACK_RULES_H

#include <stddef.h>
#include <stdint.h>

/* The deepest nesting the walk can track (its counter stack lives on the C stack). */
#define CRPC_MP_DEPTH_LIMIT 512u

/* What a header says about the value that starts with it. */
typedef struct crpc_mp_header {
    uint32_t hdr;       /* bytes of the header itself (type byte and length field) */
    uint64_t payload;   /* bytes after the header: str/bin bodies, ext type and data,
                           fixed-width scalars */
    uint64_t children;  /* values nested inside: an array's count, twice a map's */
    uint8_t is_container;
    uint8_t is_map;
} crpc_mp_header;

/* Why a value was refused (crpc_mp_check's `why`). */
typedef enum crpc_mp_problem_kind {
    CRPC_MP_OK = 0,
    CRPC_MP_EMPTY,            /* no bytes at all */
    CRPC_MP_TRUNCATED_VALUE,  /* a value was due where the input ended */
    CRPC_MP_TRUNCATED_HEADER, /* a length or count field runs past the end (`byte` says which) */
    CRPC_MP_RESERVED_BYTE,    /* 0xc1 */
    CRPC_MP_PAYLOAD_PAST_END, /* a body or fixed-width field claims `claimed` bytes, `remaining` left */
    CRPC_MP_TOO_DEEP,         /* a container deeper than max_depth */
    CRPC_MP_TOO_MANY,         /* a container claims `claimed` values (2 per map pair), `remaining` bytes left */
} crpc_mp_problem_kind;

typedef struct crpc_mp_problem {
    crpc_mp_problem_kind kind;
    uint8_t byte;        /* the type byte of the offending value */
    uint8_t is_map;      /* for CRPC_MP_TOO_MANY */
    size_t offset;       /* where the offending value starts */
    uint64_t claimed;
    uint64_t remaining;
} crpc_mp_problem;

/* crpc_mp_check flags. */
enum {
    /* An empty array or map counts as a level of nesting too (the Swift coder's rule: `[]`
     * is depth 1). Without it only containers that hold values count, as in msgpack-c's
     * own parse stack. */
    CRPC_MP_EMPTY_CONTAINERS_NEST = 1u,
};

static inline uint32_t crpc_mp_rd16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t crpc_mp_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Reads the header of the value at p (left >= 1 bytes). Returns 0; -1 for the reserved
 * byte 0xc1; -2 when the header's length or count field runs past `left`.
 */
static inline int crpc_mp_read_header(const uint8_t *p, size_t left, crpc_mp_header *h)
{
    uint8_t b = p[0];
    h->hdr = 1;
    h->payload = 0;
    h->children = 0;
    h->is_container = 0;
    h->is_map = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 0;                                                   /* fixint, nil, bool */
    if (b >= 0xa0 && b <= 0xbf) { h->payload = b & 0x1f; return 0; } /* fixstr */
    if (b >= 0x90 && b <= 0x9f) { h->children = b & 0x0f; h->is_container = 1; return 0; }
    if (b >= 0x80 && b <= 0x8f) {
        h->children = 2u * (b & 0x0f);
        h->is_container = h->is_map = 1;
        return 0;
    }
    size_t need;
    switch (b) {
    case 0xc4: case 0xd9: case 0xc7: need = 2; break;          /* bin8, str8, ext8 */
    case 0xc5: case 0xda: case 0xdc: case 0xde: case 0xc8: need = 3; break; /* 16-bit fields */
    case 0xc6: case 0xdb: case 0xdd: case 0xdf: case 0xc9: need = 5; break; /* 32-bit fields */
    case 0xcc: case 0xd0: h->payload = 1; return 0;
    case 0xcd: case 0xd1: h->payload = 2; return 0;
    case 0xca: case 0xce: case 0xd2: h->payload = 4; return 0;
    case 0xcb: case 0xcf: case 0xd3: h->payload = 8; return 0;
    case 0xd4: h->payload = 2; return 0;                          /* fixext1: type + 1 */
    case 0xd5: h->payload = 3; return 0;
    case 0xd6: h->payload = 5; return 0;
    case 0xd7: h->payload = 9; return 0;
    case 0xd8: h->payload = 17; return 0;
    default: return -1;                                           /* 0xc1, never used */
    }
    if (left < need)
        return -2;
    h->hdr = (uint32_t)need;
    switch (b) {
    case 0xc4: case 0xd9: h->payload = p[1]; break;
    case 0xc5: case 0xda: h->payload = crpc_mp_rd16(p + 1); break;
    case 0xc6: case 0xdb: h->payload = crpc_mp_rd32(p + 1); break;
    case 0xc7: h->payload = p[1] + 1ull; break;                   /* the ext type byte counts as payload */
    case 0xc8: h->payload = crpc_mp_rd16(p + 1) + 1ull; break;
    case 0xc9: h->payload = crpc_mp_rd32(p + 1) + 1ull; break;
    case 0xdc: h->children = crpc_mp_rd16(p + 1); h->is_container = 1; break;
    case 0xdd: h->children = crpc_mp_rd32(p + 1); h->is_container = 1; break;
    case 0xde: h->children = 2ull * crpc_mp_rd16(p + 1); h->is_container = h->is_map = 1; break;
    case 0xdf: h->children = 2ull * crpc_mp_rd32(p + 1); h->is_container = h->is_map = 1; break;
    }
    return 0;
}

/* Readers for the fields every envelope has, on the per-message path: the rules of
 * crpc_mp_read_header for one family each, without its general switch. */

/* An array header: returns its size in bytes and sets *count; 0 when `p` (len bytes) does
 * not start with a whole array header. */
static inline size_t crpc_mp_array_header(const uint8_t *p, size_t len, uint32_t *count)
{
    if (len >= 1 && p[0] >= 0x90 && p[0] <= 0x9f) {
        *count = p[0] & 0x0f;
        return 1;
    }
    if (len >= 3 && p[0] == 0xdc) {
        *count = crpc_mp_rd16(p + 1);
        return 3;
    }
    if (len >= 5 && p[0] == 0xdd) {
        *count = crpc_mp_rd32(p + 1);
        return 5;
    }
    return 0;
}

/* The bytes after the type byte of uint8..64 (0xcc..0xcf) and int8..64 (0xd0..0xd3): 1, 2,
 * 4 or 8; 0 for any other byte. */
static inline unsigned crpc_mp_int_width(uint8_t b)
{
    return b >= 0xcc && b <= 0xd3 ? 1u << ((b - 0xcc) & 3) : 0;
}

/* The header size of a str (fixstr, str8/16/32) or, with `bin`, a bin (bin8/16/32): 1, 2,
 * 3 or 5; 0 when `b` starts no such value. */
static inline unsigned crpc_mp_sized_header(uint8_t b, int bin)
{
    if (!bin && b >= 0xa0 && b <= 0xbf)
        return 1;
    unsigned first = bin ? 0xc4 : 0xd9;
    return b >= first && b <= first + 2 ? (1u << (b - first)) + 1 : 0;
}

static inline long crpc_mp_refuse(crpc_mp_problem *why, crpc_mp_problem_kind kind, const uint8_t *buf,
                                  size_t start, uint64_t claimed, uint64_t remaining, uint8_t is_map)
{
    if (why) {
        why->kind = kind;
        why->byte = kind == CRPC_MP_EMPTY || kind == CRPC_MP_TRUNCATED_VALUE ? 0 : buf[start];
        why->is_map = is_map;
        why->offset = start;
        why->claimed = claimed;
        why->remaining = remaining;
    }
    return kind == CRPC_MP_TOO_DEEP ? -2 : -1;
}

/*
 * Checks that `buf` starts with one well-formed MessagePack value nested at most
 * `max_depth` containers deep (capped at CRPC_MP_DEPTH_LIMIT). Returns the value's size in
 * bytes (> 0; the caller decides about trailing bytes); -2 when it nests too deep; -1 for
 * anything else wrong. `why` (may be NULL) then says what and where.
 */
static inline long crpc_mp_check(const uint8_t *buf, size_t len, unsigned max_depth, unsigned flags,
                                 crpc_mp_problem *why)
{
    if (len == 0)
        return crpc_mp_refuse(why, CRPC_MP_EMPTY, buf, 0, 0, 0, 0);
    if (max_depth > CRPC_MP_DEPTH_LIMIT)
        max_depth = CRPC_MP_DEPTH_LIMIT;
    /* remaining[d]: values still to read in the container open at depth d. */
    uint64_t remaining[CRPC_MP_DEPTH_LIMIT + 1];
    unsigned depth = 0;
    remaining[0] = 1;
    size_t pos = 0;
    for (;;) {
        while (remaining[depth] == 0) {
            if (depth == 0)
                return (long)pos;
            depth--;
        }
        remaining[depth]--;
        if (pos >= len)
            return crpc_mp_refuse(why, CRPC_MP_TRUNCATED_VALUE, buf, pos, 0, 0, 0);
        size_t start = pos;
        crpc_mp_header h;
        int err = crpc_mp_read_header(buf + pos, len - pos, &h);
        if (err)
            return crpc_mp_refuse(why, err == -1 ? CRPC_MP_RESERVED_BYTE : CRPC_MP_TRUNCATED_HEADER, buf, start,
                                  0, len - pos, 0);
        pos += h.hdr;
        if (h.payload > len - pos)
            return crpc_mp_refuse(why, CRPC_MP_PAYLOAD_PAST_END, buf, start, h.payload, len - pos, 0);
        pos += (size_t)h.payload;
        if (h.is_container) {
            /* Which is reported when a container is both too deep and too large: the depth
             * under CRPC_MP_EMPTY_CONTAINERS_NEST (the Swift coder's order), the size
             * otherwise (the core's). */
            int strict = (flags & CRPC_MP_EMPTY_CONTAINERS_NEST) != 0;
            int too_deep = (h.children || strict) && depth + 1 > max_depth;
            if (strict && too_deep)
                return crpc_mp_refuse(why, CRPC_MP_TOO_DEEP, buf, start, 0, 0, h.is_map);
            /* Each nested value takes at least one byte: more claimed than left is a bomb. */
            if (h.children > len - pos)
                return crpc_mp_refuse(why, CRPC_MP_TOO_MANY, buf, start, h.children, len - pos, h.is_map);
            if (too_deep)
                return crpc_mp_refuse(why, CRPC_MP_TOO_DEEP, buf, start, 0, 0, h.is_map);
            if (h.children)
                remaining[++depth] = h.children;
        }
    }
}

#endif
