/*
 * fuzz_envelope.c — libFuzzer target for the envelope decoder (and msgpack-c's unpacking
 * of what it accepts).
 *
 * Invariants: nothing is read past the input (ASan); no allocation bomb gets through (the
 * fuzzer's RSS limit); every pointer in a decoded message lies inside the input; a decoded
 * request re-encodes and decodes back to the same msgid, method and params (a stream open:
 * and the same kind and credit); an element or credit frame re-encodes and decodes back to
 * the same sid and value or counts.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "crpc.h"
#include "envelope.h"

static int inside(const uint8_t *p, size_t n, const uint8_t *data, size_t len)
{
    return !p || (p >= data && p + n <= data + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    static crpc_decoder *dec;
    if (!dec && crpc_decoder_create(0, 8, &dec))
        abort();
    crpc_message m;
    int err = crpc_envelope_decode(dec, data, len, &m);
    if (err && err != -EBADMSG && err != -EPROTO && err != -ELOOP && err != -E2BIG)
        abort();
    if (err)
        return 0;
    if (!inside(m.body, m.body_len, data, len) || !inside((const uint8_t *)m.method, m.method_len, data, len))
        abort();
    for (uint32_t i = 0; i < m.ext_count; i++)
        if (!inside((const uint8_t *)m.ext[i].key, m.ext[i].key_len, data, len) ||
            !inside(m.ext[i].value, m.ext[i].value_len, data, len))
            abort();
    if (m.body && !crpc_message_value(&m))
        abort(); /* checked bytes must unpack */
    if (m.type == CRPC_MSG_REQUEST) {
        uint32_t msgid = m.msgid, method_len = m.method_len, params_len = m.body_len;
        char method[256];
        uint8_t params[4096];
        if (method_len > sizeof(method) || params_len > sizeof(params))
            return 0;
        memcpy(method, m.method, method_len);
        memcpy(params, m.body, params_len);
        crpc_call call = {.method = method, .method_len = method_len, .params = params, .params_len = params_len};
        crpc_stream_open open = {.call = call, .kind = m.stream_kind, .credit_messages = m.credit_messages,
                                 .credit_bytes = m.credit_bytes};
        uint8_t kind = m.stream_kind;
        uint32_t credit_m = m.credit_messages, credit_b = m.credit_bytes;
        crpc_buf b = {0};
        int enc = kind ? crpc_encode_stream_open(&b, msgid, &open, UINT32_MAX)
                       : crpc_encode_request(&b, msgid, &call, UINT32_MAX);
        if (method_len && enc == 0) {
            crpc_message again;
            if (crpc_envelope_decode(dec, b.data + 4, b.len - 4, &again) != 0 || again.msgid != msgid ||
                again.method_len != method_len || memcmp(again.method, method, method_len) ||
                again.body_len != params_len || memcmp(again.body, params, params_len) ||
                again.stream_kind != kind || (kind && (again.credit_messages != credit_m || again.credit_bytes != credit_b)))
                abort();
        }
        crpc_buf_free(&b);
    } else if (m.type == CRPC_MSG_ELEMENT || m.type == CRPC_MSG_CREDIT) {
        uint32_t sid = m.msgid, value_len = m.body_len, credit_m = m.credit_messages, credit_b = m.credit_bytes;
        uint8_t value[4096];
        if (value_len > sizeof(value))
            return 0;
        memcpy(value, m.body, value_len);
        crpc_buf b = {0};
        int enc = m.type == CRPC_MSG_ELEMENT ? crpc_encode_element(&b, sid, value, value_len, NULL, 0, UINT32_MAX)
                                             : crpc_encode_credit(&b, sid, credit_m, credit_b, NULL, 0, UINT32_MAX);
        uint8_t type = m.type;
        crpc_message again;
        if (enc != 0 || crpc_envelope_decode(dec, b.data + 4, b.len - 4, &again) != 0 || again.type != type ||
            again.msgid != sid ||
            (type == CRPC_MSG_ELEMENT ? again.body_len != value_len || memcmp(again.body, value, value_len)
                                      : again.credit_messages != credit_m || again.credit_bytes != credit_b))
            abort();
        crpc_buf_free(&b);
    }
    return 0;
}
