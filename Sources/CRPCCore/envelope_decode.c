/*
 * envelope_decode.c — turns a frame body into a crpc_message (wire protocol v1).
 *
 * One pass over the untrusted bytes: crpc_msgpack_check proves each top-level element
 * complete and bomb-free and measures it, and the fixed-shape fields (type, msgid,
 * method) are read straight from the checked bytes. What is variable — the params or
 * result, the error, the ext map — is unpacked by msgpack-c into the decoder's zone:
 * ext and error at once (they are small and usually absent), params/result only when
 * someone asks (crpc_message_value), so a handler that forwards raw bytes never builds a
 * tree. The zone is cleared, not freed, between messages. Strings and bins point into
 * the frame (msgpack-c does not copy them).
 */
#include "crpc.h"
#include "msgpack_rules.h" /* the one MessagePack header reader */

#include <errno.h>
#include <stdbool.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

struct crpc_decoder {
    msgpack_zone zone;
    bool zone_dirty;        /* something was unpacked since the last clear */
    unsigned max_depth;
    unsigned max_ext;
    crpc_ext_entry *ext;    /* max_ext entries, filled per message */
    msgpack_object value;   /* the current message's body, once unpacked */
    const uint8_t *value_of;/* ...and the body it belongs to */
};

int crpc_decoder_create(unsigned max_depth, unsigned max_ext, crpc_decoder **out)
{
    crpc_decoder *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    /* msgpack-c's unpacker has a fixed stack of 32 containers: deeper input must be refused
     * by our check first, or msgpack-c would fail it as out of memory. */
    d->max_depth = max_depth && max_depth < CRPC_DEFAULT_MAX_DEPTH ? max_depth : CRPC_DEFAULT_MAX_DEPTH;
    if (d->max_depth < 2)
        d->max_depth = 2; /* the envelope array and flat params */
    d->max_ext = max_ext ? max_ext : CRPC_DEFAULT_MAX_EXT;
    d->ext = calloc(d->max_ext, sizeof(*d->ext));
    if (!d->ext || !msgpack_zone_init(&d->zone, 8192)) {
        free(d->ext);
        free(d);
        return -ENOMEM;
    }
    *out = d;
    return 0;
}

void crpc_decoder_destroy(crpc_decoder *d)
{
    if (!d)
        return;
    msgpack_zone_destroy(&d->zone);
    free(d->ext);
    free(d);
}

/* ------------------------------------------------ readers of checked bytes */

/* Headers are read with the shared readers (msgpack_rules.h), the validator's rules. */

/* Reads an array header; returns header size or 0 when `p` is not an array. */
static size_t array_header(const uint8_t *p, size_t len, uint32_t *count)
{
    return crpc_mp_array_header(p, len, count);
}

/* A non-negative integer that is exactly the n bytes at p, in any MessagePack encoding of
 * it: positive fixint, uint8..64, or int8..64 holding a value >= 0 (some libraries emit
 * signed encodings for small positive numbers; the protocol accepts them). -1 for anything
 * else, a negative value included. */
static int read_uint(const uint8_t *p, size_t n, uint64_t *v)
{
    if (n == 1 && p[0] <= 0x7f) {
        *v = p[0];
        return 0;
    }
    bool is_signed = p[0] >= 0xd0 && p[0] <= 0xd3;
    size_t width = crpc_mp_int_width(p[0]);
    if (width == 0 || n != width + 1 || (is_signed && (p[1] & 0x80)))
        return -1;
    uint64_t x = 0;
    for (size_t i = 1; i <= width; i++)
        x = x << 8 | p[i];
    *v = x;
    return 0;
}

/* A string that is exactly the n bytes at p. */
static int read_str(const uint8_t *p, size_t n, const char **s, uint32_t *slen)
{
    size_t hdr = crpc_mp_sized_header(p[0], 0);
    if (hdr == 0 || hdr > n)
        return -1;
    *s = (const char *)p + hdr;
    *slen = (uint32_t)(n - hdr); /* checked: the value is exactly n bytes */
    return 0;
}

static int is_array(const uint8_t *p)
{
    return (p[0] >= 0x90 && p[0] <= 0x9f) || p[0] == 0xdc || p[0] == 0xdd;
}

/* Unpacks n checked bytes with msgpack-c into the zone. */
static int unpack(crpc_decoder *d, const uint8_t *p, size_t n, msgpack_object *out)
{
    size_t off = 0;
    d->zone_dirty = true;
    int r = msgpack_unpack((const char *)p, n, &off, &d->zone, out);
    if (r == MSGPACK_UNPACK_NOMEM_ERROR)
        return -ENOMEM;
    return r == MSGPACK_UNPACK_SUCCESS ? 0 : -EPROTO;
}

/* ---------------------------------------------------------- variable parts */

/* Fills msg->ext / timeout_us from an ext map (nil means none). */
static int decode_ext(crpc_decoder *d, const uint8_t *p, size_t n, crpc_message *msg)
{
    if (p[0] == 0xc0)
        return 0;
    msgpack_object o;
    int err = unpack(d, p, n, &o);
    if (err)
        return err;
    if (o.type != MSGPACK_OBJECT_MAP)
        return -EPROTO;
    if (o.via.map.size > d->max_ext)
        return -E2BIG;
    uint32_t count = 0;
    bool credit_given = false;
    for (uint32_t i = 0; i < o.via.map.size; i++) {
        const msgpack_object_kv *kv = &o.via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            return -EPROTO;
        const char *k = kv->key.via.str.ptr;
        uint32_t klen = kv->key.via.str.size;
        if (klen >= 4 && memcmp(k, "rpc-", 4) == 0) {
            if (klen == 14 && memcmp(k, "rpc-timeout-us", 14) == 0) {
                if (kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                    return -EPROTO;
                msg->timeout_us = kv->val.via.u64;
            } else if (klen == 10 && memcmp(k, "rpc-stream", 10) == 0) {
                if (kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER || kv->val.via.u64 < 1 ||
                    kv->val.via.u64 > 3)
                    return -EPROTO;
                msg->stream_kind = (uint8_t)kv->val.via.u64;
            } else if (klen == 10 && memcmp(k, "rpc-credit", 10) == 0) {
                const msgpack_object *c = kv->val.via.array.ptr;
                if (kv->val.type != MSGPACK_OBJECT_ARRAY || kv->val.via.array.size < 2 ||
                    c[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                    c[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                    return -EPROTO;
                msg->credit_messages = c[0].via.u64 > UINT32_MAX ? UINT32_MAX : (uint32_t)c[0].via.u64;
                msg->credit_bytes = c[1].via.u64 > UINT32_MAX ? UINT32_MAX : (uint32_t)c[1].via.u64;
                credit_given = true;
            }
            continue; /* other reserved keys: room to grow, ignored */
        }
        crpc_ext_entry *e = &d->ext[count++];
        e->key = k;
        e->key_len = klen;
        if (kv->val.type == MSGPACK_OBJECT_STR) {
            e->value = (const uint8_t *)kv->val.via.str.ptr;
            e->value_len = kv->val.via.str.size;
            e->is_binary = 0;
        } else if (kv->val.type == MSGPACK_OBJECT_BIN) {
            e->value = (const uint8_t *)kv->val.via.bin.ptr;
            e->value_len = kv->val.via.bin.size;
            e->is_binary = 1;
        } else {
            return -EPROTO;
        }
    }
    msg->ext = count ? d->ext : NULL;
    msg->ext_count = count;
    if (msg->type == CRPC_MSG_REQUEST && msg->stream_kind && !credit_given) {
        msg->credit_messages = CRPC_DEFAULT_STREAM_CREDIT_MESSAGES;
        msg->credit_bytes = CRPC_DEFAULT_STREAM_CREDIT_BYTES;
    }
    return 0;
}

/* A response's error element: nil, or [code, message]. */
static int decode_error(crpc_decoder *d, const uint8_t *p, size_t n, crpc_message *msg)
{
    if (p[0] == 0xc0)
        return 0;
    msgpack_object o;
    int err = unpack(d, p, n, &o);
    if (err)
        return err;
    if (o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size < 2)
        return -EPROTO;
    const msgpack_object *code = &o.via.array.ptr[0], *text = &o.via.array.ptr[1];
    if (code->type == MSGPACK_OBJECT_POSITIVE_INTEGER && code->via.u64 <= INT32_MAX)
        msg->error_code = (int32_t)code->via.u64;
    else if (code->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && code->via.i64 >= INT32_MIN)
        msg->error_code = (int32_t)code->via.i64;
    else
        return -EPROTO;
    if (msg->error_code == 0)
        msg->error_code = CRPC_STATUS_UNKNOWN; /* an error must not read as success */
    if (text->type != MSGPACK_OBJECT_STR)
        return -EPROTO;
    msg->error_msg = text->via.str.ptr;
    msg->error_msg_len = text->via.str.size;
    return 0;
}

/* A count of a credit frame, clamped to 32 bits. */
static int read_count(const uint8_t *p, size_t n, uint32_t *out)
{
    uint64_t v;
    if (read_uint(p, n, &v))
        return -1;
    *out = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    return 0;
}

/* The rest of an element [4, sid, value, ext?] or a credit [5, sid, messages, bytes, ext?]. */
static int decode_stream_frame(crpc_decoder *d, uint64_t type, uint32_t count, const uint8_t *const *el,
                               const size_t *size, crpc_message *msg)
{
    uint32_t ext_at;
    if (type == CRPC_MSG_ELEMENT) {
        if (count < 3)
            return -EPROTO;
        msg->body = el[2];
        msg->body_len = (uint32_t)size[2];
        ext_at = 3;
    } else {
        if (count < 4 || read_count(el[2], size[2], &msg->credit_messages) ||
            read_count(el[3], size[3], &msg->credit_bytes))
            return -EPROTO;
        ext_at = 4;
    }
    return count > ext_at ? decode_ext(d, el[ext_at], size[ext_at], msg) : 0;
}

/* --------------------------------------------------------------- envelope */

int crpc_envelope_decode(crpc_decoder *d, const uint8_t *body, size_t len, crpc_message *msg)
{
    memset(msg, 0, sizeof(*msg));
    msg->decoder = d;
    msg->frame_len = (uint32_t)len;
    d->value_of = NULL;
    if (d->zone_dirty) {
        msgpack_zone_clear(&d->zone);
        d->zone_dirty = false;
    }
    uint32_t count;
    size_t pos = array_header(body, len, &count);
    if (pos == 0 || count < 2)
        return -EBADMSG;

    /* Measure (and so check) every element; remember where the first five are. */
    const uint8_t *el[5] = {0};
    size_t size[5] = {0};
    int bad = 0;
    for (uint32_t i = 0; i < count; i++) {
        long n = crpc_msgpack_check(body + pos, len - pos, d->max_depth - 1);
        if (n < 0) {
            if (i < 2)
                return -EBADMSG;
            bad = n == -ELOOP ? -ELOOP : -EPROTO;
            break;
        }
        if (i < 5) {
            el[i] = body + pos;
            size[i] = (size_t)n;
        }
        pos += (size_t)n;
    }
    if (!bad && pos != len)
        bad = -EPROTO; /* bytes after the envelope */

    uint64_t type;
    if (read_uint(el[0], size[0], &type) || type > CRPC_MSG_HALF_CLOSE)
        return -EBADMSG;
    msg->type = (uint8_t)type;
    if (type != CRPC_MSG_NOTIFICATION) {
        uint64_t id;
        if (read_uint(el[1], size[1], &id) || id > UINT32_MAX)
            return -EBADMSG;
        msg->msgid = (uint32_t)id;
    }
    if (type == CRPC_MSG_CANCEL || type == CRPC_MSG_HALF_CLOSE || bad)
        return bad;
    if (type == CRPC_MSG_ELEMENT || type == CRPC_MSG_CREDIT)
        return decode_stream_frame(d, type, count, el, size, msg);

    /* Index of method (request, notification) or error (response), then params/result. */
    uint32_t first = type == CRPC_MSG_NOTIFICATION ? 1 : 2;
    if (count < first + 2)
        return -EPROTO;
    int err;
    if (type == CRPC_MSG_RESPONSE)
        err = decode_error(d, el[first], size[first], msg);
    else
        err = read_str(el[first], size[first], &msg->method, &msg->method_len) ? -EPROTO : 0;
    if (err)
        return err;
    const uint8_t *payload = el[first + 1];
    if (type != CRPC_MSG_RESPONSE && !is_array(payload))
        return -EPROTO;
    msg->body = payload;
    msg->body_len = (uint32_t)size[first + 1];
    if (count > first + 2)
        return decode_ext(d, el[first + 2], size[first + 2], msg);
    return 0;
}

const crpc_value *crpc_message_value(const crpc_message *msg)
{
    crpc_decoder *d = msg->decoder;
    if (!d || !msg->body)
        return NULL;
    if (d->value_of != msg->body) {
        if (unpack(d, msg->body, msg->body_len, &d->value))
            return NULL;
        d->value_of = msg->body;
    }
    return (const crpc_value *)&d->value;
}
