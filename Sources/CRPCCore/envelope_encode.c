/*
 * envelope_encode.c — builds wire protocol v1 frames with msgpack-c's packer.
 *
 * The packer writes through buf_write straight into the destination crpc_buf (a
 * connection's output buffer on the hot path), so a frame is built in place with no
 * intermediate copy. The 4-byte length prefix is reserved first and filled in last.
 * Pre-encoded values (params, result) are appended as raw bytes after a validity check.
 */
#include "envelope.h"

#include <errno.h>
#include <stdbool.h>
#include <msgpack.h>
#include <string.h>

static int buf_write(void *data, const char *p, size_t n)
{
    return crpc_buf_append(data, p, n) ? -1 : 0;
}

typedef struct frame {
    crpc_buf *out;
    size_t start;
    msgpack_packer pk;
} frame;

static int frame_begin(frame *f, crpc_buf *out)
{
    f->out = out;
    f->start = out->len;
    msgpack_packer_init(&f->pk, out, buf_write);
    static const uint8_t zero[4];
    return crpc_buf_append(out, zero, 4);
}

/* Finishes the frame: checks the limit and writes the length, or rolls back. */
static int frame_end(frame *f, int err, uint32_t max_frame_size)
{
    size_t n = f->out->len - f->start - 4;
    if (!err && n > max_frame_size)
        err = -EMSGSIZE;
    if (err) {
        f->out->len = f->start;
        return err < 0 ? err : -ENOMEM;
    }
    uint8_t *p = f->out->data + f->start;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    return 0;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

/* The reserved keys a request may carry besides user metadata. */
typedef struct reserved_ext {
    uint64_t timeout_us;       /* rpc-timeout-us; 0: absent */
    int stream_kind;           /* rpc-stream; 0: a call */
    uint32_t credit_messages;  /* rpc-credit [messages, bytes]; both 0: absent */
    uint32_t credit_bytes;
} reserved_ext;

/* The optional ext map: user entries plus the reserved keys; omitted when empty. */
static int pack_ext_reserved(msgpack_packer *pk, const crpc_ext_entry *ext, uint32_t count,
                             const reserved_ext *r)
{
    bool credit = r->credit_messages || r->credit_bytes;
    uint32_t n = count + (r->timeout_us ? 1 : 0) + (r->stream_kind ? 1 : 0) + (credit ? 1 : 0);
    if (n == 0)
        return 0;
    if (msgpack_pack_map(pk, n))
        return -1;
    if (r->timeout_us && (pack_str(pk, "rpc-timeout-us", 14) || msgpack_pack_uint64(pk, r->timeout_us)))
        return -1;
    if (r->stream_kind && (pack_str(pk, "rpc-stream", 10) || msgpack_pack_uint8(pk, (uint8_t)r->stream_kind)))
        return -1;
    if (credit && (pack_str(pk, "rpc-credit", 10) || msgpack_pack_array(pk, 2) ||
                   msgpack_pack_uint32(pk, r->credit_messages) || msgpack_pack_uint32(pk, r->credit_bytes)))
        return -1;
    for (uint32_t i = 0; i < count; i++) {
        const crpc_ext_entry *e = &ext[i];
        if (pack_str(pk, e->key, e->key_len))
            return -1;
        if (e->is_binary ? (msgpack_pack_bin(pk, e->value_len) ||
                            msgpack_pack_bin_body(pk, e->value, e->value_len))
                         : pack_str(pk, (const char *)e->value, e->value_len))
            return -1;
    }
    return 0;
}

static int pack_ext(msgpack_packer *pk, const crpc_ext_entry *ext, uint32_t count,
                    uint64_t timeout_us)
{
    reserved_ext r = {.timeout_us = timeout_us};
    return pack_ext_reserved(pk, ext, count, &r);
}

static int valid_value(const uint8_t *p, uint32_t n)
{
    return crpc_msgpack_check(p, n, 0) == (long)n;
}

static int valid_call(const crpc_call *c)
{
    if (!c->method || c->method_len == 0)
        return 0;
    if (c->params && !valid_value(c->params, c->params_len))
        return 0;
    return 1;
}

static int pack_params(frame *f, const crpc_call *call)
{
    if (!call->params)
        return msgpack_pack_array(&f->pk, 0);
    return crpc_buf_append(f->out, call->params, call->params_len);
}

static int encode_request(crpc_buf *out, uint32_t msgid, const crpc_call *call,
                          const reserved_ext *r, uint32_t max_frame_size)
{
    if (!valid_call(call))
        return -EINVAL;
    frame f;
    int err = frame_begin(&f, out);
    if (err)
        return err;
    int has_ext = call->ext_count || r->timeout_us || r->stream_kind;
    uint8_t head[8] = {(uint8_t)(has_ext ? 0x95 : 0x94), 0x00, 0xce,
                       (uint8_t)(msgid >> 24), (uint8_t)(msgid >> 16), (uint8_t)(msgid >> 8),
                       (uint8_t)msgid};
    err = crpc_buf_append(out, head, 7);
    if (!err)
        err = pack_str(&f.pk, call->method, call->method_len);
    if (!err)
        err = pack_params(&f, call);
    if (!err)
        err = pack_ext_reserved(&f.pk, call->ext, call->ext_count, r);
    return frame_end(&f, err, max_frame_size);
}

int crpc_encode_request(crpc_buf *out, uint32_t msgid, const crpc_call *call,
                        uint32_t max_frame_size)
{
    reserved_ext r = {.timeout_us = call->timeout_us};
    return encode_request(out, msgid, call, &r, max_frame_size);
}

int crpc_encode_stream_open(crpc_buf *out, uint32_t sid, const crpc_stream_open *open,
                            uint32_t max_frame_size)
{
    reserved_ext r = {.timeout_us = open->call.timeout_us, .stream_kind = open->kind,
                      .credit_messages = open->credit_messages, .credit_bytes = open->credit_bytes};
    return encode_request(out, sid, &open->call, &r, max_frame_size);
}

void crpc_patch_request_msgid(uint8_t *frame, uint32_t msgid)
{
    uint8_t *p = frame + CRPC_REQUEST_MSGID_OFFSET;
    p[0] = (uint8_t)(msgid >> 24);
    p[1] = (uint8_t)(msgid >> 16);
    p[2] = (uint8_t)(msgid >> 8);
    p[3] = (uint8_t)msgid;
}

uint32_t crpc_request_msgid(const uint8_t *frame)
{
    const uint8_t *id = frame + CRPC_REQUEST_MSGID_OFFSET;
    return (uint32_t)id[0] << 24 | (uint32_t)id[1] << 16 | (uint32_t)id[2] << 8 | id[3];
}

int crpc_encode_notification(crpc_buf *out, const crpc_call *call, uint32_t max_frame_size)
{
    if (!valid_call(call))
        return -EINVAL;
    frame f;
    int err = frame_begin(&f, out);
    if (err)
        return err;
    int has_ext = call->ext_count || call->timeout_us;
    err = msgpack_pack_array(&f.pk, has_ext ? 4 : 3) || msgpack_pack_uint8(&f.pk, 2) ||
          pack_str(&f.pk, call->method, call->method_len) || pack_params(&f, call) ||
          pack_ext(&f.pk, call->ext, call->ext_count, call->timeout_us);
    return frame_end(&f, err, max_frame_size);
}

int crpc_encode_response(crpc_buf *out, uint32_t msgid, const crpc_reply *r,
                         uint32_t max_frame_size)
{
    if (r->result && !valid_value(r->result, r->result_len))
        return -EINVAL;
    frame f;
    int err = frame_begin(&f, out);
    if (err)
        return err;
    msgpack_packer *pk = &f.pk;
    err = msgpack_pack_array(pk, r->ext_count ? 5 : 4) || msgpack_pack_uint8(pk, 1) ||
          msgpack_pack_uint32(pk, msgid);
    if (!err && r->error_code) {
        err = msgpack_pack_array(pk, 2) || msgpack_pack_int32(pk, r->error_code) ||
              pack_str(pk, r->error_msg ? r->error_msg : "", r->error_msg ? r->error_msg_len : 0) ||
              msgpack_pack_nil(pk);
    } else if (!err) {
        err = msgpack_pack_nil(pk) ||
              (r->result ? crpc_buf_append(out, r->result, r->result_len) : msgpack_pack_nil(pk));
    }
    if (!err)
        err = pack_ext(pk, r->ext, r->ext_count, 0);
    return frame_end(&f, err, max_frame_size);
}

int crpc_encode_error(crpc_buf *out, uint32_t msgid, int32_t code, const char *message,
                      uint32_t max_frame_size)
{
    crpc_reply r = {.error_code = code, .error_msg = message,
                    .error_msg_len = (uint32_t)strlen(message)};
    return crpc_encode_response(out, msgid, &r, max_frame_size);
}

int crpc_encode_cancel(crpc_buf *out, uint32_t msgid)
{
    frame f;
    int err = frame_begin(&f, out);
    if (err)
        return err;
    err = msgpack_pack_array(&f.pk, 2) || msgpack_pack_uint8(&f.pk, 3) ||
          msgpack_pack_uint32(&f.pk, msgid);
    return frame_end(&f, err, UINT32_MAX);
}

int crpc_encode_element(crpc_buf *out, uint32_t sid, const uint8_t *value, uint32_t len,
                        const crpc_ext_entry *ext, uint32_t ext_count, uint32_t max_frame_size)
{
    if (!value || !valid_value(value, len))
        return -EINVAL;
    frame f;
    int err = frame_begin(&f, out);
    if (err)
        return err;
    err = msgpack_pack_array(&f.pk, ext_count ? 4 : 3) || msgpack_pack_uint8(&f.pk, CRPC_MSG_ELEMENT) ||
          msgpack_pack_uint32(&f.pk, sid) || crpc_buf_append(out, value, len) ||
          pack_ext(&f.pk, ext, ext_count, 0);
    return frame_end(&f, err, max_frame_size);
}

int crpc_encode_credit(crpc_buf *out, uint32_t sid, uint32_t messages, uint32_t bytes,
                       const crpc_ext_entry *ext, uint32_t ext_count, uint32_t max_frame_size)
{
    frame f;
    int err = frame_begin(&f, out);
    if (err)
        return err;
    err = msgpack_pack_array(&f.pk, ext_count ? 5 : 4) || msgpack_pack_uint8(&f.pk, CRPC_MSG_CREDIT) ||
          msgpack_pack_uint32(&f.pk, sid) || msgpack_pack_uint32(&f.pk, messages) ||
          msgpack_pack_uint32(&f.pk, bytes) || pack_ext(&f.pk, ext, ext_count, 0);
    return frame_end(&f, err, max_frame_size);
}

int crpc_encode_half_close(crpc_buf *out, uint32_t sid)
{
    frame f;
    int err = frame_begin(&f, out);
    if (err)
        return err;
    err = msgpack_pack_array(&f.pk, 2) || msgpack_pack_uint8(&f.pk, CRPC_MSG_HALF_CLOSE) ||
          msgpack_pack_uint32(&f.pk, sid);
    return frame_end(&f, err, UINT32_MAX);
}
