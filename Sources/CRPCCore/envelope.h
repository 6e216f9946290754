/*
 * envelope.h — internal encoders for wire protocol v1 messages.
 *
 * Each encoder appends one complete frame (length prefix included) to a crpc_buf
 * through msgpack-c's packer. On any failure the buffer is rolled back to where it
 * was, so a refused message never leaves half a frame in a connection's output.
 */
#ifndef CRPC_ENVELOPE_H
#define CRPC_ENVELOPE_H

#include "buf.h"
#include "crpc.h"

/* Byte offset, from the frame start, of a request's msgid. Requests always encode the
 * msgid as uint32 (0xce + 4 bytes, still valid MessagePack) so the loop thread can patch
 * the id into a frame built on another thread. */
#define CRPC_REQUEST_MSGID_OFFSET 7u

/* Appends a request frame for `msgid`. Returns 0; -EMSGSIZE; -EINVAL; -ENOMEM. */
int crpc_encode_request(crpc_buf *out, uint32_t msgid, const crpc_call *call,
                        uint32_t max_frame_size);

/* Patches the msgid of the request frame that starts at `frame`. */
void crpc_patch_request_msgid(uint8_t *frame, uint32_t msgid);

/* The msgid of a request frame made by crpc_encode_request (the one patched in). */
uint32_t crpc_request_msgid(const uint8_t *frame);

/* Appends a notification frame. Returns 0; -EMSGSIZE; -EINVAL; -ENOMEM. */
int crpc_encode_notification(crpc_buf *out, const crpc_call *call, uint32_t max_frame_size);

/* Appends a response frame. Returns 0; -EMSGSIZE; -EINVAL; -ENOMEM. */
int crpc_encode_response(crpc_buf *out, uint32_t msgid, const crpc_reply *reply,
                         uint32_t max_frame_size);

/* Appends an error response with a C-string message. Same returns. */
int crpc_encode_error(crpc_buf *out, uint32_t msgid, int32_t code, const char *message,
                      uint32_t max_frame_size);

/* Appends a cancel frame. Returns 0; -ENOMEM. */
int crpc_encode_cancel(crpc_buf *out, uint32_t msgid);

/* Streams. The open is a request (its msgid at CRPC_REQUEST_MSGID_OFFSET too) whose ext
 * carries rpc-stream and rpc-credit. Returns 0; -EMSGSIZE; -EINVAL; -ENOMEM. */
int crpc_encode_stream_open(crpc_buf *out, uint32_t sid, const crpc_stream_open *open,
                            uint32_t max_frame_size);

/* Appends [4, sid, value, ext?]. Returns 0; -EMSGSIZE; -EINVAL (not one value); -ENOMEM. */
int crpc_encode_element(crpc_buf *out, uint32_t sid, const uint8_t *value, uint32_t len,
                        const crpc_ext_entry *ext, uint32_t ext_count, uint32_t max_frame_size);

/* Appends [5, sid, messages, bytes, ext?]. Returns 0; -EMSGSIZE; -ENOMEM. */
int crpc_encode_credit(crpc_buf *out, uint32_t sid, uint32_t messages, uint32_t bytes,
                       const crpc_ext_entry *ext, uint32_t ext_count, uint32_t max_frame_size);

/* Appends [6, sid]. Returns 0; -ENOMEM. */
int crpc_encode_half_close(crpc_buf *out, uint32_t sid);

#endif
