/*
 * envelope_decode.c — turns a frame body into a crpc_message (wire protocol v1).
 *
 * Two passes over untrusted bytes: crpc_msgpack_check proves each top-level element
 * complete and bomb-free (and measures it, which gives the raw byte range of params or
 * result for callers that bring their own decoder), then msgpack-c unpacks the body
 * once into the decoder's zone. The zone is cleared, not freed, between messages, so a
 * steady stream of small messages allocates nothing. Strings and bins in the result
 * point into the frame (msgpack-c does not copy them).
 */
#include "crpc.h"

#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

struct crpc_decoder {
    msgpack_zone zone;
    unsigned max_depth;
    unsigned max_ext;
    crpc_ext_entry *ext; /* max_ext entries, filled per message */
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

/* Reads an array header; returns header size or 0 when `p` is not an array. */
static size_t array_header(const uint8_t *p, size_t len, uint32_t *count)
{
    if (len >= 1 && p[0] >= 0x90 && p[0] <= 0x9f) {
        *count = p[0] & 0x0f;
        return 1;
    }
    if (len >= 3 && p[0] == 0xdc) {
        *count = (uint32_t)p[1] << 8 | p[2];
        return 3;
    }
    if (len >= 5 && p[0] == 0xdd) {
        *count = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
        return 5;
    }
    return 0;
}

/* Reads an unsigned integer (positive fixint or uint8..64) of exactly `n` bytes. */
static int read_uint(const uint8_t *p, size_t n, uint64_t *v)
{
    uint64_t x = 0;
    if (n == 1 && p[0] <= 0x7f) {
        *v = p[0];
        return 0;
    }
    size_t width = p[0] == 0xcc ? 1 : p[0] == 0xcd ? 2 : p[0] == 0xce ? 4 : p[0] == 0xcf ? 8 : 0;
    if (width == 0 || n != width + 1)
        return -1;
    for (size_t i = 1; i <= width; i++)
        x = x << 8 | p[i];
    *v = x;
    return 0;
}

static int as_uint(const msgpack_object *o, uint64_t max, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
        return -1;
    *v = o->via.u64;
    return 0;
}

/* Fills msg->ext / timeout_us from an ext map (nil or absent means none). */
static int decode_ext(crpc_decoder *d, const msgpack_object *o, crpc_message *msg)
{
    if (o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_MAP)
        return -EPROTO;
    if (o->via.map.size > d->max_ext)
        return -E2BIG;
    uint32_t n = 0;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            return -EPROTO;
        const char *k = kv->key.via.str.ptr;
        uint32_t klen = kv->key.via.str.size;
        if (klen >= 4 && memcmp(k, "rpc-", 4) == 0) {
            if (klen == 14 && memcmp(k, "rpc-timeout-us", 14) == 0) {
                uint64_t t;
                if (as_uint(&kv->val, UINT64_MAX, &t))
                    return -EPROTO;
                msg->timeout_us = t;
            }
            continue; /* other reserved keys: room to grow, ignored */
        }
        crpc_ext_entry *e = &d->ext[n++];
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
    msg->ext = n ? d->ext : NULL;
    msg->ext_count = n;
    return 0;
}

static int decode_error(const msgpack_object *o, crpc_message *msg)
{
    if (o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 2)
        return -EPROTO;
    const msgpack_object *code = &o->via.array.ptr[0], *text = &o->via.array.ptr[1];
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

int crpc_envelope_decode(crpc_decoder *d, const uint8_t *body, size_t len, crpc_message *msg)
{
    memset(msg, 0, sizeof(*msg));
    uint32_t count;
    size_t pos = array_header(body, len, &count);
    if (pos == 0 || count < 2)
        return -EBADMSG;

    /* Measure every element; remember where the first five start. */
    size_t start[5] = {0}, size[5] = {0};
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
            start[i] = pos;
            size[i] = (size_t)n;
        }
        pos += (size_t)n;
    }
    if (!bad && pos != len)
        bad = -EPROTO; /* bytes after the envelope */

    /* Type and msgid are unsigned integers: read them straight from the checked bytes. */
    uint64_t type;
    if (read_uint(body + start[0], size[0], &type) || type > CRPC_MSG_CANCEL)
        return -EBADMSG;
    msg->type = (uint8_t)type;
    if (type != CRPC_MSG_NOTIFICATION) {
        uint64_t id;
        if (read_uint(body + start[1], size[1], &id) || id > UINT32_MAX)
            return -EBADMSG;
        msg->msgid = (uint32_t)id;
    }
    if (type == CRPC_MSG_CANCEL)
        return bad;
    if (bad)
        return bad;

    /* The envelope is proven well-formed: unpack it whole, once. */
    msgpack_zone_clear(&d->zone);
    msgpack_object root;
    size_t off = 0;
    int ur = msgpack_unpack((const char *)body, len, &off, &d->zone, &root);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        return -ENOMEM;
    if (ur != MSGPACK_UNPACK_SUCCESS)
        return -EPROTO;
    const msgpack_object *el = root.via.array.ptr;

    /* Index of method (request, notification) or error (response), then params/result. */
    uint32_t first = type == CRPC_MSG_NOTIFICATION ? 1 : 2;
    if (count < first + 2)
        return -EPROTO;
    if (type != CRPC_MSG_RESPONSE) {
        if (el[first].type != MSGPACK_OBJECT_STR)
            return -EPROTO;
        msg->method = el[first].via.str.ptr;
        msg->method_len = el[first].via.str.size;
    } else {
        int err = decode_error(&el[first], msg);
        if (err)
            return err;
    }
    const msgpack_object *payload = &el[first + 1];
    if (type != CRPC_MSG_RESPONSE && payload->type != MSGPACK_OBJECT_ARRAY)
        return -EPROTO;
    msg->body = body + start[first + 1];
    msg->body_len = (uint32_t)size[first + 1];
    msg->value = (const crpc_value *)payload;
    if (count > first + 2)
        return decode_ext(d, &el[first + 2], msg);
    return 0;
}
