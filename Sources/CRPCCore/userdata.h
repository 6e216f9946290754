/*
 * userdata.h — what a completion's user_data says, and nothing else.
 *
 * Every SQE the core submits (io_uring) and every file it watches (epoll's data.u64)
 * carries a 64-bit tag naming the operation and the connection slot it belongs to, plus
 * that slot's generation. A slot is reused after its
 * connection closes, with the generation bumped, so a late completion for a dead
 * connection can never be mistaken for one of its successor. Never a raw fd.
 *
 *   63      56 55                    32 31                              0
 *  +----------+------------------------+---------------------------------+
 *  | op kind  |   slot (24 bits)       |   generation (32 bits)          |
 *  +----------+------------------------+---------------------------------+
 */
#ifndef CRPC_USERDATA_H
#define CRPC_USERDATA_H

#include <stdint.h>

enum crpc_op {
    CRPC_OP_IGNORE = 0, /* completions nobody waits for (cancel requests) */
    CRPC_OP_ACCEPT = 1, /* an accept on a listener (slot: its index in the loop's table) */
    CRPC_OP_RECV = 2,   /* multishot recv into the provided buffer ring */
    CRPC_OP_SEND = 3,   /* one send of a connection's output buffer */
    CRPC_OP_WAKE = 4,   /* read of the loop's eventfd (epoll: the eventfd is readable) */
    CRPC_OP_CONN = 5,   /* epoll: a connection's socket is readable or writable */
};

#define CRPC_SLOT_BITS 24u
#define CRPC_SLOT_MAX ((1u << CRPC_SLOT_BITS) - 1u)

static inline uint64_t crpc_ud_encode(enum crpc_op op, uint32_t slot, uint32_t gen)
{
    return (uint64_t)op << 56 | (uint64_t)(slot & CRPC_SLOT_MAX) << 32 | gen;
}

static inline enum crpc_op crpc_ud_op(uint64_t ud) { return (enum crpc_op)(ud >> 56); }
static inline uint32_t crpc_ud_slot(uint64_t ud) { return (uint32_t)(ud >> 32) & CRPC_SLOT_MAX; }
static inline uint32_t crpc_ud_gen(uint64_t ud) { return (uint32_t)ud; }

#endif
