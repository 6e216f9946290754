/*
 * fuzz_frame.c — libFuzzer target for the frame parser and the MessagePack checker.
 *
 * Invariants: the parser never reads past `len` (ASan), a positive result is exactly
 * 4 + N with N within the limit, and the checker's size of a value never exceeds the
 * input. Build and run: scripts/fuzz.sh (README, "Fuzzing").
 */
#include <stdint.h>
#include <stdlib.h>

#include "crpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    uint32_t body = 0;
    long r = crpc_frame_parse(data, len, 1u << 16, &body);
    if (r > 0 && ((size_t)r > len || (size_t)r != body + 4u || body > (1u << 16) || body == 0))
        abort();
    for (unsigned depth = 1; depth <= 40; depth += 13) {
        long n = len ? crpc_msgpack_check(data, len, depth) : 0;
        if (n > 0 && (size_t)n > len)
            abort();
    }
    return 0;
}
