/*
 * crpc.h — the public C API of CRPCCore, SwiftRPC's hot path.
 *
 * CRPCCore runs event loops (one thread each), owns sockets and connections, frames
 * messages with a 4-byte big-endian length prefix and encodes the MessagePack envelope of
 * wire protocol v1 (see docs/PROTOCOL.md), over TCP (IPv4, IPv6), Unix domain sockets and
 * TLS 1.3 (OpenSSL 3). It is usable from plain C: link with
 * -luring -lmsgpackc -lssl -lcrypto -lpthread.
 *
 * ADDRESSES. Everywhere a host is taken: a name or IPv4 literal, an IPv6 literal bare or in
 * brackets ("::1", "[::1]"), or a Unix domain socket, "unix:/path/to.sock" or
 * "unix:@name" (Linux's abstract namespace: no file); the port is ignored for those.
 *
 * BACKENDS. A loop does its I/O through io_uring (one ring per loop) when the kernel
 * allows it, and through epoll where io_uring is refused (seccomp in containers,
 * kernel.io_uring_disabled, gVisor, old kernels); the API and its behaviour are the same,
 * only the speed differs. The choice is made when a loop starts and logged once per
 * process on stderr ("crpc: I/O backend epoll (io_uring refused: ...)"). The environment
 * variable SWIFTRPC_BACKEND=uring|epoll forces one (auto, or unset, picks as above);
 * crpc_loop_backend() tells which one a loop runs.
 *
 * THREADING RULE. A loop is one thread with one ring (or one epoll set). Every connection
 * belongs to exactly one loop and its state is touched only on that loop's thread. Other threads
 * hand work to a loop through a lock-free queue plus an eventfd wake-up that is only
 * written when the loop is asleep, so a busy loop costs its producers no syscall.
 * Functions below say which threads may call them. Callbacks always run on the loop
 * thread that owns the connection, and must not block.
 *
 * ERRORS. Functions return 0 (or a count) on success and a negated errno on failure;
 * never errno itself. Protocol errors reuse errno values:
 *   -EMSGSIZE  a frame is larger than max_frame_size;
 *   -EBADMSG   bytes are not a well-formed MessagePack value or envelope;
 *   -EPROTO    the envelope's type and msgid parse but the rest does not;
 *   -ELOOP     MessagePack nesting is deeper than the configured limit.
 * crpc_strerror() names every code.
 */
#ifndef CRPC_H
#define CRPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- constants */

#define CRPC_DEFAULT_MAX_FRAME_SIZE (4u << 20) /* 4 MiB, wire protocol v1 default */
#define CRPC_DEFAULT_MAX_DEPTH 32u            /* MessagePack nesting limit, and the most
                                                 msgpack-c's fixed parse stack allows */
#define CRPC_DEFAULT_MAX_EXT 64u              /* ext map entries accepted per message */
#define CRPC_FRAME_HEADER_SIZE 4u
#define CRPC_DEFAULT_MAX_INFLIGHT 4096u       /* requests in flight per connection */
#define CRPC_DEFAULT_MAX_CONNECTIONS 65536u   /* per server */
#define CRPC_DEFAULT_MAX_OUTPUT (8u << 20)    /* unsent reply bytes per connection */
#define CRPC_DEFAULT_FRAME_TIMEOUT_MS 30000u  /* to finish a frame once it has begun */
#define CRPC_DEFAULT_EOF_DRAIN_MS 10000u      /* for the calls of a client that half-closed */
#define CRPC_DEFAULT_STREAM_CREDIT_MESSAGES 16u /* a stream's window when `rpc-credit` is */
#define CRPC_DEFAULT_STREAM_CREDIT_BYTES 65536u /*   absent (wire protocol v1) */

/** Message types of wire protocol v1 (first element of every envelope). */
enum crpc_msg_type {
    CRPC_MSG_REQUEST = 0,      /* [0, msgid, method, params, ext?] */
    CRPC_MSG_RESPONSE = 1,     /* [1, msgid, error, result, ext?] */
    CRPC_MSG_NOTIFICATION = 2, /* [2, method, params, ext?] */
    CRPC_MSG_CANCEL = 3,       /* [3, msgid] */
    /* The streams extension (see "Streams" below): */
    CRPC_MSG_ELEMENT = 4,      /* [4, sid, value, ext?] */
    CRPC_MSG_CREDIT = 5,       /* [5, sid, messages, bytes, ext?] */
    CRPC_MSG_HALF_CLOSE = 6,   /* [6, sid] */
};

/** Status codes carried in error responses; gRPC's numbering. */
enum crpc_status {
    CRPC_STATUS_OK = 0,
    CRPC_STATUS_CANCELLED = 1,
    CRPC_STATUS_UNKNOWN = 2,
    CRPC_STATUS_INVALID_ARGUMENT = 3,
    CRPC_STATUS_DEADLINE_EXCEEDED = 4,
    CRPC_STATUS_RESOURCE_EXHAUSTED = 8,
    CRPC_STATUS_UNIMPLEMENTED = 12,
    CRPC_STATUS_INTERNAL = 13,
    CRPC_STATUS_UNAVAILABLE = 14,
    CRPC_STATUS_UNAUTHENTICATED = 16,
};

/* ------------------------------------------------------------ opaque types */

typedef struct crpc_loop crpc_loop;
typedef struct crpc_server crpc_server;
typedef struct crpc_client crpc_client;

/**
 * A decoded MessagePack value, valid only during the callback that hands it out.
 * (It is a msgpack-c msgpack_object; the Swift layer walks it without a second parse.)
 */
typedef struct crpc_value crpc_value;

/** A decoder: limits plus the scratch space a decoded message points into. */
typedef struct crpc_decoder crpc_decoder;

/** Identifies one server-side connection: loop index, slot and generation. */
typedef uint64_t crpc_conn_id;

/** TLS settings shared by many connections (see "TLS" below). */
typedef struct crpc_tls_context crpc_tls_context;

/** One stream, on either side (see "Streams" below). */
typedef struct crpc_stream crpc_stream;

/* ---------------------------------------------------------- plain messages */

/** One `ext` metadata entry. Key and value point into the frame being handled. */
typedef struct crpc_ext_entry {
    const char *key;
    uint32_t key_len;
    uint32_t value_len;
    const uint8_t *value;
    uint8_t is_binary; /* 1: MessagePack bin, 0: str */
} crpc_ext_entry;

/**
 * A decoded envelope. Pointers refer into the frame and are valid only while the
 * callback that received it runs.
 */
typedef struct crpc_message {
    uint8_t type;              /* enum crpc_msg_type */
    uint32_t msgid;            /* request, response, cancel */
    const char *method;        /* request, notification: "Service.Method" */
    uint32_t method_len;
    const uint8_t *body;       /* params (request, notification) or result (response): */
    uint32_t body_len;         /*   the raw MessagePack bytes, an array for params;
                                    crpc_message_value() unpacks them on demand */
    int32_t error_code;        /* response: 0 on success, else enum crpc_status (or other) */
    const char *error_msg;     /* response: error message when error_code != 0 */
    uint32_t error_msg_len;
    uint64_t timeout_us;       /* `rpc-timeout-us` from ext; 0 when absent */
    const crpc_ext_entry *ext; /* user metadata (keys not starting with "rpc-") */
    uint32_t ext_count;
    crpc_decoder *decoder;     /* private: what crpc_message_value unpacks with */
    /* Streams. A request that opens one: stream_kind (enum crpc_stream_kind, from
     * `rpc-stream`; 0 for a call) and the credit it gives the server (`rpc-credit`; the
     * defaults when absent). A credit frame: the credit it grants. An element: body is its
     * value. Counts above 2^32 - 1 are clamped to it. */
    uint8_t stream_kind;
    uint32_t credit_messages;
    uint32_t credit_bytes;
    uint32_t frame_len;        /* the frame's body length: what an element costs in byte
                                  credit (grant it back as the element is taken) */
} crpc_message;

/**
 * msg->body unpacked by msgpack-c into the decoder's zone (the bytes were already
 * checked, so this cannot be a memory bomb). Valid as long as the message. Unpacking is
 * done on the first call only: the envelope itself is read without building a tree, so a
 * handler that forwards raw bytes never pays for one.
 * Returns NULL when there is no body or memory ran out.
 */
const crpc_value *crpc_message_value(const crpc_message *msg);

/* ------------------------------------------------------------- frame codec */

/**
 * Parses one frame header at `buf`. Keeps no state and never allocates.
 * Returns the whole frame's size (4 + N bytes) when `len` holds a complete frame, and
 * stores N in *body_len; returns 0 when more bytes are needed (even just to read the
 * header); -EBADMSG when N is 0; -EMSGSIZE when N > max_frame_size (checked from the
 * header alone, before any body byte is needed).
 */
long crpc_frame_parse(const uint8_t *buf, size_t len, uint32_t max_frame_size,
                      uint32_t *body_len);

/**
 * Measures the one MessagePack value at the start of `buf`, checking it is complete
 * and safe to unpack: every container's element count fits in the bytes left (no
 * allocation bombs), every str/bin/ext length lies inside `len`, nesting is at most
 * `max_depth`, and no reserved byte (0xc1) appears.
 * Returns the value's size in bytes (> 0); -EBADMSG when truncated, oversized or
 * reserved; -ELOOP when nested deeper than max_depth; -EINVAL when len is 0.
 */
long crpc_msgpack_check(const uint8_t *buf, size_t len, unsigned max_depth);

/**
 * Finds element `index` of the MessagePack array at `buf` (which must have passed
 * crpc_msgpack_check). Stores its bytes in *elem / *elem_len.
 * Returns 0; -EBADMSG when `buf` is not an array; -ENOENT when index is out of range.
 */
int crpc_msgpack_array_elem(const uint8_t *buf, size_t len, uint32_t index,
                            const uint8_t **elem, size_t *elem_len);

/**
 * Creates a decoder with the given limits (0 picks the default; max_depth counts the
 * envelope array itself and is capped at CRPC_DEFAULT_MAX_DEPTH).
 * Returns 0; -ENOMEM.
 */
int crpc_decoder_create(unsigned max_depth, unsigned max_ext, crpc_decoder **out);
/** Frees a decoder and everything it decoded. */
void crpc_decoder_destroy(crpc_decoder *dec);

/**
 * Decodes one frame body (without its length prefix) into *msg. The result stays valid
 * until the next call on the same decoder, and only while `body` is alive.
 * Returns 0; -EBADMSG when no msgid can be recovered (not an array, unknown type, bad
 * msgid): the connection must be closed; -EPROTO when type and msgid parse but the rest
 * does not (method, params, error, result, ext, or bytes after the envelope): msg->type
 * and msg->msgid are set so a request can be answered with status 3;
 * -ELOOP when nested deeper than the limit; -E2BIG when the ext map has more entries
 * than the limit (treated like -EPROTO).
 */
int crpc_envelope_decode(crpc_decoder *dec, const uint8_t *body, size_t len,
                         crpc_message *msg);

/* ------------------------------------------------------------------- loops */

/** Loop settings; zero-initialise and set what you need. */
typedef struct crpc_loop_config {
    unsigned ring_entries;   /* io_uring SQ size; 0 = 1024 */
    unsigned buf_count;      /* io_uring provided receive buffers, a power of two; 0 = 64
                                (2 MiB at the default size: small enough to stay in cache,
                                and a buffer is held only until its bytes are parsed or
                                copied). epoll reads into one 256 KiB buffer per loop */
    unsigned buf_size;       /* bytes each; 0 = 32 KiB */
    int cpu;                 /* pin the loop thread to this CPU; -1 or 0-init = no pinning */
    int pin;                 /* set to 1 to honour `cpu` (so a zeroed config never pins) */
    unsigned max_depth;      /* decoding limits of messages received on this loop */
    unsigned max_ext;        /*   (0 = the defaults) */
} crpc_loop_config;

/**
 * Creates a loop (its backend and buffers are set up on its own thread at start).
 * Thread: any. Returns 0; -ENOMEM.
 */
int crpc_loop_create(const crpc_loop_config *cfg, crpc_loop **out);

/**
 * Starts the loop's thread and waits until its I/O backend is ready: io_uring, or epoll
 * when io_uring is refused (see BACKENDS above; ring_entries, buf_count and buf_size
 * apply to io_uring only).
 * Thread: any, once. Returns 0; -EALREADY if started; -EINVAL when SWIFTRPC_BACKEND
 * holds a value other than uring, io_uring, epoll or auto; with SWIFTRPC_BACKEND=uring,
 * the io_uring set-up error (-EPERM, -ENOSYS when io_uring is refused, -EOPNOTSUPP when
 * the kernel lacks an operation the core uses, -EINVAL, -ENOMEM); otherwise an epoll or
 * eventfd set-up error (-EMFILE, -ENOMEM). On failure no thread is left running.
 */
int crpc_loop_start(crpc_loop *loop);

/**
 * The I/O backend a started loop runs: "io_uring" or "epoll" (a static string). NULL when
 * the loop has not started (or failed to). Thread: any.
 */
const char *crpc_loop_backend(const crpc_loop *loop);

/**
 * Stops the loop: every connection on it closes (pending calls complete with
 * -ESHUTDOWN) and the thread is joined. Thread: any but the loop's own.
 * Returns 0; -EDEADLK when called on the loop's own thread; -EINVAL if never started.
 */
int crpc_loop_stop(crpc_loop *loop);

/** Frees a stopped (or never started) loop. */
void crpc_loop_destroy(crpc_loop *loop);

/** Runs fn(arg) on the loop's thread soon. Thread: any. Returns 0; -ENOMEM; -ESHUTDOWN. */
int crpc_loop_post(crpc_loop *loop, void (*fn)(void *arg), void *arg);

/**
 * Pins every thread of this process that exists now to `cpu`; threads they start later
 * inherit the mask. For benchmarks that keep client and server on separate CPUs.
 * Thread: any. Returns 0; -EINVAL when `cpu` is negative or not online; a negated errno
 * from sched_setaffinity.
 */
int crpc_pin_process(int cpu);

/**
 * The monotonic clock (CLOCK_MONOTONIC, in nanoseconds) as read once when the loop woke for
 * its current iteration: a timestamp that costs nothing, shared by every completion of the
 * iteration. Thread: any (a relaxed read).
 */
uint64_t crpc_loop_now_ns(const crpc_loop *loop);

/** 1 when the calling thread is this loop's thread, else 0. */
int crpc_loop_is_current(const crpc_loop *loop);

/* ------------------------------------------------------------------ server */

/** How a connection reached the server. */
enum crpc_transport {
    CRPC_TRANSPORT_TCP = 0,
    CRPC_TRANSPORT_TLS = 1,  /* TLS over TCP or over a Unix socket (see crpc_peer.over_unix) */
    CRPC_TRANSPORT_UNIX = 2,
};

/**
 * Who is on the other end of a server connection. Worked out once, when the connection
 * is accepted (TLS: when its handshake completes), and valid as long as the connection;
 * every request of the connection points at the same one. Strings are NUL-terminated;
 * NULL (or a count of 0) when the transport does not say.
 */
typedef struct crpc_peer {
    int transport;              /* enum crpc_transport */
    int over_unix;              /* 1: the bytes travel over a Unix socket (TLS or not) */
    const char *address;        /* "127.0.0.1:5555", "[::1]:5555", "unix:/path" (the
                                   listener's path: a Unix client has no name of its own) */
    /* Unix sockets: the peer process's credentials (SO_PEERCRED); -1 otherwise. */
    int32_t uid, gid, pid;
    /* TLS: the session, and the client certificate when it was presented and verified. */
    const char *tls_version;    /* "TLSv1.3" */
    const char *tls_cipher;     /* "TLS_AES_128_GCM_SHA256" */
    const char *alpn;           /* "swiftrpc/1"; NULL when none was agreed */
    const char *sni;            /* the server name the client asked for */
    const char *cert_subject;   /* RFC 2253 form: "CN=client,O=Example" */
    const char *const *cert_dns;/* subjectAltName DNS entries */
    uint32_t cert_dns_count;
    const char *const *cert_ips;/* subjectAltName IP entries, as text */
    uint32_t cert_ips_count;
    const char *const *cert_uris;/* subjectAltName URI entries (SPIFFE IDs) */
    uint32_t cert_uris_count;
    const uint8_t *cert_der;    /* the certificate's DER bytes */
    uint32_t cert_der_len;
    /* The owner's per-connection slot (the Swift layer keeps its view of the peer here, so
     * it is built once per connection too). Set and read on the loop thread only; when the
     * connection is released, crpc_server_config.on_peer_release gets it. */
    void *user;
} crpc_peer;

/**
 * A request, notification or cancel as delivered to the server's callback, or an event of
 * a stream (see "Streams" below: then `stream` is set and msg.type says which event).
 */
typedef struct crpc_request {
    crpc_conn_id conn;      /* pass back to crpc_server_reply */
    crpc_message msg;       /* msg.type tells request / notification / cancel (/ stream event) */
    crpc_server *server;    /* the server to reply through: a request can arrive before
                               crpc_server_start has returned the handle to its caller */
    crpc_peer *peer;        /* the connection's peer (its `user` slot may be set) */
    crpc_stream *stream;    /* the stream this frame belongs to; NULL for calls */
} crpc_request;

/**
 * Called on the owning loop's thread for every request, notification and cancel.
 * Everything `req` points to is valid only until it returns: copy what you keep.
 * A request must be answered exactly once with crpc_server_reply (from any thread).
 */
typedef void (*crpc_request_fn)(void *user, const crpc_request *req);

/**
 * Called on the owning loop's thread when a server connection closes, so work still
 * running for its requests can be cancelled (their replies would be dropped anyway).
 */
typedef void (*crpc_conn_closed_fn)(void *user, crpc_conn_id conn);

/**
 * crpc_conn_closed_fn with why the connection ended: 0 when it was an orderly end (the
 * client ended its input, by a half-close, a close or a frame that cannot be parsed, and
 * every request it had sent was answered), so work it started that needs no reply (its
 * notifications) may finish; else a negated errno (-ECONNRESET, -ETIMEDOUT: its drain time
 * ran out, -ESHUTDOWN: the server is stopping...) and that work should stop.
 */
typedef void (*crpc_conn_ended_fn)(void *user, crpc_conn_id conn, int reason);

/** Server settings; zero-initialise and set what you need. */
typedef struct crpc_server_config {
    const char *host;        /* NULL = "127.0.0.1" */
    uint16_t port;           /* 0 picks a free port (see crpc_server_port) */
    unsigned loops;          /* 0 = one per online CPU */
    int first_cpu;           /* with pin_loops: loop i runs on CPU first_cpu + i */
    int pin_loops;           /* 1 to pin loop threads */
    uint32_t max_frame_size; /* 0 = CRPC_DEFAULT_MAX_FRAME_SIZE */
    unsigned max_depth;      /* 0 = CRPC_DEFAULT_MAX_DEPTH */
    unsigned max_ext;        /* 0 = CRPC_DEFAULT_MAX_EXT */
    uint32_t max_inflight;   /* requests per connection delivered and not yet answered;
                                beyond it a request is answered at once with status 8;
                                0 = CRPC_DEFAULT_MAX_INFLIGHT */
    uint32_t max_connections;/* across all loops; beyond it new connections are closed at
                                once; 0 = CRPC_DEFAULT_MAX_CONNECTIONS */
    uint32_t max_output;     /* bytes of unsent replies per connection before the server
                                stops reading from it (it resumes below half); a client
                                that never reads cannot grow the server's memory;
                                0 = CRPC_DEFAULT_MAX_OUTPUT */
    uint32_t frame_timeout_ms; /* a connection holding a partial frame this long is closed
                                  (slowloris); 0 = CRPC_DEFAULT_FRAME_TIMEOUT_MS */
    crpc_request_fn on_request;
    crpc_conn_closed_fn on_conn_closed; /* optional */
    void *user;
    uint32_t eof_drain_ms;   /* a client that half-closes (or sends a frame that cannot be
                                parsed after good ones) is read no more, but the requests it
                                sent before still run and are answered; its connection closes
                                once their replies are sent, or after this long (the rest
                                are cut off, with a reset); 0 = CRPC_DEFAULT_EOF_DRAIN_MS */
    int fd_reserve;          /* file descriptors the server leaves free for the rest of the
                                process (the Swift runtime's libdispatch aborts the process
                                when an open() fails; the application opens files and
                                sockets): a connection whose descriptor would fall in the
                                reserve is closed and accepting pauses until one frees up;
                                0 = the soft limit / 8, at least 32 and at most 1024;
                                CRPC_FD_RESERVE_NONE = none (accept until EMFILE) */
    int keep_fd_limit;       /* 1: leave RLIMIT_NOFILE alone; 0 (default): raise the soft
                                limit to the hard limit at start, where allowed */
    crpc_conn_ended_fn on_conn_ended; /* optional; when set, called instead of on_conn_closed */
    crpc_tls_context *tls;   /* NULL: plaintext; else every connection speaks TLS (the server
                                takes its own reference; see crpc_server_reload_tls) */
    uint32_t unix_mode;      /* host "unix:/path": the socket file's mode (0600...); 0 leaves
                                it to the umask. A stale file of a dead server is replaced, a
                                live server's is refused (-EADDRINUSE); removed at stop */
    void (*on_peer_release)(void *user, void *peer_user); /* optional: a released connection's
                                crpc_peer.user, when it was set (loop thread) */
    void (*on_stream_release)(void *user, void *stream_user); /* optional: a freed stream's
                                crpc_stream_set_user value, when it was set (any thread:
                                the one that dropped the last reference) */
} crpc_server_config;

#define CRPC_FD_RESERVE_NONE (-1)

/** What the descriptor limit lets a started server do (crpc_server_get_limits). */
typedef struct crpc_server_limits {
    uint64_t fd_limit;          /* the soft RLIMIT_NOFILE the server runs under */
    uint64_t fd_limit_before;   /* the soft limit before start raised it (same if not) */
    uint32_t fd_reserve;        /* descriptors left free for the rest of the process */
    uint32_t max_connections;   /* the limit in force: max_connections, lowered to what the
                                   descriptors left at start allow beside the reserve */
} crpc_server_limits;

/**
 * Creates a server, binds and listens (SO_REUSEPORT, one listening socket per loop) and
 * starts its loops. Thread: any.
 * Returns 0; -EINVAL (no on_request, bad host, bad SWIFTRPC_BACKEND); -EADDRINUSE,
 * -EACCES, -EADDRNOTAVAIL from bind; -EPERM/-ENOSYS when io_uring is refused and
 * SWIFTRPC_BACKEND=uring forbids the epoll fallback; -ENOMEM; see crpc_loop_start.
 */
int crpc_server_start(const crpc_server_config *cfg, crpc_server **out);

/** The bound port (the picked one when config.port was 0). */
uint16_t crpc_server_port(const crpc_server *srv);

/** The I/O backend of the server's loops ("io_uring" or "epoll"; see crpc_loop_backend). */
const char *crpc_server_backend(const crpc_server *srv);

/** A reply to hand to crpc_server_reply. Zero-initialise. */
typedef struct crpc_reply {
    int32_t error_code;           /* 0 for success, else a crpc_status */
    const char *error_msg;        /* with error_code != 0 */
    uint32_t error_msg_len;
    const uint8_t *result;        /* one encoded MessagePack value; NULL sends nil */
    uint32_t result_len;
    const crpc_ext_entry *ext;    /* response metadata; may be NULL */
    uint32_t ext_count;
} crpc_reply;

/**
 * Sends the response to request `msgid` on connection `conn`. Thread: any; on the
 * loop's own thread the reply is written straight into the connection's output and
 * coalesced with every other reply of this loop iteration into one send.
 * Returns 0; -ENOTCONN when the connection has gone (the reply is dropped);
 * -EMSGSIZE when the encoded response exceeds max_frame_size (nothing is sent: answer
 * again with an error); -ENOMEM; -ESHUTDOWN when the server is stopping.
 */
int crpc_server_reply(crpc_server *srv, crpc_conn_id conn, uint32_t msgid,
                      const crpc_reply *reply);

/**
 * Hands the memory the allocator holds free back to the kernel (glibc's malloc_trim): after
 * a burst of handlers or connections has ended, freed memory otherwise stays in the
 * process (in the allocator's per-thread arenas) and shows as resident. Walks every arena
 * with its lock held, so call it off the hot path, after a burst, not per request.
 * Thread: any.
 */
void crpc_release_free_memory(void);

/**
 * 1 when the calling thread runs the server's loop `index` (a connection id's top 8 bits
 * name its loop), else 0: for confinement checks. Thread: any.
 */
int crpc_server_on_loop(const crpc_server *srv, unsigned index);

/**
 * Runs fn(arg) on the server's loop `index` soon (as crpc_loop_post does): how work that
 * belongs on a connection's loop (a task executor for its handlers) gets there.
 * Thread: any. Returns 0; -EINVAL (no such loop); -ENOMEM; -ESHUTDOWN (the loop has stopped).
 */
int crpc_server_post(crpc_server *srv, unsigned index, void (*fn)(void *arg), void *arg);

/**
 * Replaces the server's TLS settings (a new certificate, new trust roots): handshakes that
 * start from now on use `tls`, connections already open keep what they have. The server
 * takes its own reference. Thread: any.
 * Returns 0; -EINVAL when the server was started without TLS or `tls` is not a server
 * context.
 */
int crpc_server_reload_tls(crpc_server *srv, crpc_tls_context *tls);

/** Fills `out` with the limits the server started with. Thread: any. */
void crpc_server_get_limits(const crpc_server *srv, crpc_server_limits *out);

/** Connections currently open across all loops. Thread: any (a snapshot). */
unsigned crpc_server_connection_count(const crpc_server *srv);

/**
 * Shuts down gracefully: stops accepting, answers new requests with status 14
 * (unavailable), waits up to `drain_ms` for the requests already delivered to be answered
 * with crpc_server_reply, then stops as crpc_server_stop does. Blocks the caller.
 * Thread: any but a loop thread of this server.
 * Returns 0 when every request was answered in time; -ETIMEDOUT when the drain deadline
 * cut some off (their connections are closed all the same); -EDEADLK on a loop thread.
 */
int crpc_server_shutdown(crpc_server *srv, uint32_t drain_ms);

/** Requests delivered to on_request and not yet answered (a snapshot). Thread: any. */
unsigned crpc_server_inflight(const crpc_server *srv);

/** A server's traffic since it started, summed over its loops. */
typedef struct crpc_server_stats {
    uint64_t frames_in;        /* frames received: requests, notifications, cancels, good or bad */
    uint64_t frames_out;       /* responses queued: replies, error replies, rpc.ping answers */
    uint64_t bytes_in;         /* bytes read from its connections */
    uint64_t bytes_out;        /* bytes written to them */
    uint64_t rejected_frames;  /* refused: oversized or not a frame, or an envelope that does not
                                  decode (the connection closes), params or metadata past a limit
                                  (answered 3), past the calls-in-flight limit (answered 8) */
    uint64_t rejected_connections; /* accepted and closed at once: past max_connections, while
                                      stopping, or with a descriptor in the reserve */
    uint64_t tls_handshakes;   /* TLS handshakes completed */
    uint64_t rejected_handshakes; /* TLS connections closed before their handshake completed:
                                     not TLS, a bad or missing client certificate, no ALPN,
                                     too slow (the handshake timeout), too many bytes, a bad
                                     record, or closed by the client midway (each cause is
                                     logged on stderr, at most once per cause per 10 s) */
} crpc_server_stats;

/**
 * Fills `out` with the server's traffic counters. Thread: any (each loop's counters are
 * exact; the sum is a snapshot taken one loop at a time).
 */
void crpc_server_get_stats(const crpc_server *srv, crpc_server_stats *out);

/**
 * Stops accepting, closes every connection and joins the loops. Replies sent afterwards
 * (from handlers still running elsewhere) fail with -ESHUTDOWN. Idempotent.
 * Thread: any but a loop thread of this server. Returns 0; -EDEADLK on a loop thread.
 */
int crpc_server_stop(crpc_server *srv);

/**
 * Stops the server if needed and frees it. No other thread may use `srv` any more.
 * Thread: any but a loop thread of this server.
 */
void crpc_server_destroy(crpc_server *srv);

/* ------------------------------------------------------------------ client */

/**
 * The outcome of one call, handed to its completion callback exactly once.
 * status 0: a response arrived; error_code says whether it is an error reply.
 * status < 0: no response will come: -ECONNRESET (connection lost), -ESHUTDOWN (client
 * or loop closed), -ECANCELED (crpc_client_cancel), -ENOTCONN (sent after the
 * connection had gone), -ETIMEDOUT (the call's timeout passed), -ECONNABORTED (the
 * TLS connection failed: a bad record, an alert), -EKEYREJECTED (reconnecting met a server
 * certificate that does not verify). With status < 0, error_msg says why when the core
 * knows more than the status (the TLS reason); else it is NULL.
 */
typedef struct crpc_result {
    int status;
    uint32_t msgid;
    int32_t error_code;
    const char *error_msg;
    uint32_t error_msg_len;
    const uint8_t *result;        /* the raw MessagePack result (nil when absent) */
    uint32_t result_len;
    const crpc_message *message;  /* the response (for crpc_message_value); NULL when status < 0 */
    const crpc_ext_entry *ext;
    uint32_t ext_count;
} crpc_result;

/** Completion callback; runs on the client's loop thread, must not block. */
typedef void (*crpc_call_fn)(void *ctx, const crpc_result *res);

/** Client settings; zero-initialise and set what you need. */
typedef struct crpc_client_config {
    uint32_t connect_timeout_ms; /* 0 = 5000 */
    uint32_t max_frame_size;     /* 0 = CRPC_DEFAULT_MAX_FRAME_SIZE */
    unsigned max_depth;          /* 0 = CRPC_DEFAULT_MAX_DEPTH */
    unsigned max_ext;            /* 0 = CRPC_DEFAULT_MAX_EXT */
    uint32_t heartbeat_ms;       /* send rpc.ping after this long without hearing from the
                                    server; 0 = no heartbeats */
    uint32_t dead_after_ms;      /* with heartbeats: close the connection (pending calls end
                                    with -ECONNRESET) after this long without a byte from the
                                    server; 0 = 3 x heartbeat_ms */
    int reconnect;               /* 1: when the connection is lost (not closed by
                                    crpc_client_close), reconnect with jittered, capped
                                    exponential backoff, for as long as the client lives */
    uint32_t reconnect_min_ms;   /* first delay; 0 = 50 */
    uint32_t reconnect_max_ms;   /* cap on the delay; 0 = 5000 */
    int fail_fast;               /* with reconnect: calls made while disconnected fail at once
                                    (-ENOTCONN) instead of waiting for the connection up to
                                    their timeout */
    crpc_tls_context *tls;       /* NULL: plaintext; else TLS, for reconnects too (the client
                                    takes its own reference) */
    const char *server_name;     /* TLS: the name sent as SNI and checked against the server's
                                    certificate (a DNS or IP subjectAltName); NULL = the host */
} crpc_client_config;

/**
 * Connects to host:port (blocking the caller up to the connect timeout; with TLS the
 * handshake too, within the same timeout) and attaches the connection to `loop`, which
 * must be started. Thread: any.
 * Returns 0; -ETIMEDOUT; -ECONNREFUSED and other connect errors; -EINVAL (bad host);
 * -ENOMEM; -ESHUTDOWN (the loop is stopping); with TLS, -EKEYREJECTED (the server's
 * certificate did not verify: unknown CA, expired, wrong name) and -ECONNABORTED (the
 * handshake failed otherwise: not a TLS server, no common protocol or ALPN, alert), both with the
 * reason in crpc_last_error(). A client whose reconnect meets -EKEYREJECTED stops
 * reconnecting (it is not transient): its calls fail with that reason. Off the loop's thread the attach happens
 * later on the loop; if it fails there (the loop stopped meanwhile, out of memory) the
 * client is returned closed and its calls fail with -ENOTCONN.
 */
int crpc_client_connect(crpc_loop *loop, const char *host, uint16_t port,
                        const crpc_client_config *cfg, crpc_client **out);

/** One call's arguments. Zero-initialise. */
typedef struct crpc_call {
    const char *method;           /* "Service.Method" */
    uint32_t method_len;
    const uint8_t *params;        /* an encoded MessagePack array; NULL sends [] */
    uint32_t params_len;
    const crpc_ext_entry *ext;    /* request metadata; may be NULL */
    uint32_t ext_count;
    uint64_t timeout_us;          /* 0: none; else sent as rpc-timeout-us, and the call
                                     ends with -ETIMEDOUT (a cancel frame tells the
                                     server) if no reply came within it */
} crpc_call;

/**
 * Sends a request. Thread: any; from the loop's own thread (e.g. inside a completion
 * callback) it is encoded straight into the connection's output without a hop.
 * On 0, `cb` will run exactly once; on failure it never runs. *call_id (may be NULL)
 * receives a handle for crpc_client_cancel.
 * Returns 0; -ENOTCONN when the connection is known to be gone; -EMSGSIZE when the
 * request exceeds max_frame_size (the connection stays healthy); -EINVAL (no method,
 * params not one MessagePack value); -ENOMEM.
 */
int crpc_client_call(crpc_client *c, const crpc_call *call, crpc_call_fn cb, void *ctx,
                     uint64_t *call_id);

/**
 * Sends a notification (oneway; never answered). Thread: any.
 * Returns 0; -ENOTCONN; -EMSGSIZE; -EINVAL; -ENOMEM.
 */
int crpc_client_notify(crpc_client *c, const crpc_call *call);

/**
 * Gives up on a call: its callback runs with -ECANCELED (unless its reply or another
 * ending got there first) and a cancel frame tells the server. Thread: any.
 * A call made on another thread whose hand-over to the loop is still queued is cancelled
 * too: it ends with -ECANCELED when the loop takes it, and is never sent.
 * Returns 0 (off the loop thread the cancel is queued); -ENOENT on the loop thread when
 * the call has already ended (or, with more than 16 such early cancels outstanding at
 * once, when it has not reached the loop yet).
 */
int crpc_client_cancel(crpc_client *c, uint64_t call_id);

/** 1 while the connection is open, 0 while it is down (or reconnecting). Thread: any. */
int crpc_client_is_connected(const crpc_client *c);

/** Calls awaiting a reply. Thread: any (a snapshot). */
unsigned crpc_client_pending_count(const crpc_client *c);

/** Counters of a client, as of now. */
typedef struct crpc_client_stats {
    uint32_t pending;       /* calls awaiting a reply */
    uint64_t late_replies;  /* replies that arrived after their call had ended (timed out,
                               cancelled): dropped */
    uint64_t timeouts;      /* calls ended by their timeout */
    uint64_t reconnects;    /* lost connections re-made (with cfg.reconnect) */
} crpc_client_stats;

/** Fills *out. Thread: any (a snapshot). */
void crpc_client_get_stats(const crpc_client *c, crpc_client_stats *out);

/**
 * Closes the connection: pending calls complete with -ESHUTDOWN, later calls fail with
 * -ENOTCONN, no reconnecting. The handle stays valid until crpc_client_destroy.
 * Thread: any. Idempotent.
 */
void crpc_client_close(crpc_client *c);

/**
 * Closes the connection if still open and releases the handle; its memory is freed once
 * the loop is done with it. No thread may use `c` afterwards. Thread: any, once.
 */
void crpc_client_destroy(crpc_client *c);

/* ----------------------------------------------------------------- streams */

/*
 * A stream is a call with many elements in one or both directions, on the same connection
 * as the calls, its sid taken from the calls' msgid space (wire protocol v1, streams
 * extension: docs/PROTOCOL.md). Flow control is by credit: a side sends an element only
 * while it holds at least one message and one byte of the credit its peer granted (one
 * element may overshoot the bytes), so no side ever stops reading its socket for a stream
 * and a stalled stream never delays the others or the calls of its connection.
 *
 * HANDLES. A crpc_stream is reference counted: the core holds one while the stream is in
 * flight, and the application one from the moment it is handed out (crpc_client_open_stream,
 * or a server's open request) until it calls crpc_stream_release, once. The crpc_stream_*
 * functions may be called from any thread while the application holds its reference; from
 * the loop's own thread a frame is written straight into the connection's output, from
 * others it is handed over in order (the elements of one stream never overtake each other).
 *
 * LIFE. Every stream ends exactly once on each side:
 *   client: its callback gets CRPC_STREAM_END last, with the server's end response
 *     (status 0) or why none will come (status < 0: -ECANCELED crpc_stream_cancel,
 *     -ETIMEDOUT the call's timeout, -ECONNRESET connection lost, -ESHUTDOWN client
 *     closed, -EOVERFLOW the server sent beyond the credit it was granted: the stream is
 *     cancelled, -ENOTCONN never sent);
 *   server: crpc_stream_end sends the end response; or the on_request callback gets a
 *     CRPC_MSG_CANCEL event for the stream, its last, with msg.error_code saying why:
 *     CRPC_STATUS_CANCELLED (the client cancelled), CRPC_STATUS_RESOURCE_EXHAUSTED (the
 *     client sent beyond its credit: the core has answered the end with status 8),
 *     CRPC_STATUS_UNAVAILABLE (the connection closed, the server stopped, or the client
 *     ended its input: a stream lives on the credit and elements its client sends, so a
 *     half-closed connection's streams end while its calls drain).
 * A stream counts as a call in flight (max_inflight, crpc_server_inflight, the drain of
 * crpc_server_shutdown) until it ends.
 *
 * SERVER EVENTS, through on_request with req->stream set (borrowed for the callback), by
 * msg.type:
 *   CRPC_MSG_REQUEST     the open: msg.stream_kind, the params, metadata, timeout and the
 *                        credit the client gives. The application now holds a reference
 *                        to req->stream. It answers with crpc_stream_accept (for a
 *                        client or bidirectional stream, the client sends nothing before)
 *                        or ends it at once (an unknown method: status 12).
 *   CRPC_MSG_ELEMENT     msg.body is the element's value, msg.ext its metadata.
 *   CRPC_MSG_HALF_CLOSE  the client will send no more elements.
 *   CRPC_MSG_CREDIT      credit arrived after crpc_stream_send returned -EAGAIN (may be
 *                        spurious: send again, and wait for the next one if refused).
 *   CRPC_MSG_CANCEL      the last event (above).
 * A server that is draining (crpc_server_shutdown) answers new opens with status 14; the
 * streams already open run on until they end or the drain time cuts them off.
 */

/** The three kinds of stream (`rpc-stream`). */
enum crpc_stream_kind {
    CRPC_STREAM_SERVER = 1, /* one request, many response elements */
    CRPC_STREAM_CLIENT = 2, /* many request elements, one reply */
    CRPC_STREAM_BIDI = 3,   /* both */
};

/** What a client stream's callback is told, in this order: ACCEPTED at most once, then
 * ELEMENTs and WRITABLEs, END exactly once and last. */
enum crpc_stream_event_type {
    CRPC_STREAM_ACCEPTED = 1, /* the server's first credit frame: message->ext is its
                                 leading metadata; sends may start (client, bidi kinds) */
    CRPC_STREAM_ELEMENT = 2,  /* message->body is the element's value, message->ext its
                                 metadata; grant credit as the consumer takes them */
    CRPC_STREAM_WRITABLE = 3, /* credit arrived after crpc_stream_send returned -EAGAIN
                                 (may be spurious) */
    CRPC_STREAM_END = 4,      /* result: the end response (status 0: error_code, the result
                                 of a client stream, ext the trailing metadata) or why not */
};

typedef struct crpc_stream_event {
    int type;                     /* enum crpc_stream_event_type */
    crpc_stream *stream;
    const crpc_message *message;  /* ACCEPTED, ELEMENT; valid only during the callback */
    const crpc_result *result;    /* END; valid only during the callback */
} crpc_stream_event;

/** A client stream's callback; runs on the client's loop thread, must not block. */
typedef void (*crpc_stream_fn)(void *ctx, const crpc_stream_event *ev);

/** What opening a stream takes. Zero-initialise. */
typedef struct crpc_stream_open {
    crpc_call call;               /* method, opening params, metadata; timeout_us bounds the
                                     whole stream (it ends with -ETIMEDOUT and a cancel) */
    int kind;                     /* enum crpc_stream_kind */
    uint32_t credit_messages;     /* what the server may send before we grant more; */
    uint32_t credit_bytes;        /*   0 = the defaults (16 messages, 65536 bytes) */
} crpc_stream_open;

/**
 * Opens a stream: sends the open request. On 0, `fn` runs with CRPC_STREAM_END exactly
 * once (after which it is never called again) and *out holds the application's reference
 * (crpc_stream_release). Thread: any.
 * Returns 0; -EINVAL (no fn or out, a kind that is not 1-3, what crpc_client_call refuses);
 * -ENOTCONN; -EMSGSIZE; -ENOMEM.
 */
int crpc_client_open_stream(crpc_client *c, const crpc_stream_open *open, crpc_stream_fn fn,
                            void *ctx, crpc_stream **out);

/**
 * Sends one element (`value`: one encoded MessagePack value; `ext`: its metadata, may be
 * NULL) on a stream whose kind lets this side send (a client: client and bidi streams;
 * a server: server and bidi streams).
 * Returns 0; -EAGAIN when the peer's credit is used up (nothing is sent: wait for
 * WRITABLE / CRPC_MSG_CREDIT and send again; a client's stream is not accepted yet counts
 * as no credit); -EPIPE when the stream has ended or this side half-closed it; -EINVAL
 * (this side does not send on this kind, or the value is not one MessagePack value);
 * -EMSGSIZE (the element is larger than the frame limit; the stream is unharmed); -ENOMEM.
 */
int crpc_stream_send(crpc_stream *s, const uint8_t *value, uint32_t len,
                     const crpc_ext_entry *ext, uint32_t ext_count);

/**
 * Lets the peer send `messages` more elements and `bytes` more bytes (the body lengths of
 * element frames). Grant as the consumer takes elements, not as they arrive: that bounds
 * what a slow consumer holds to its window. A server's first grant accepts the stream.
 * Returns 0; -EPIPE (the stream has ended, or the peer half-closed); -EINVAL (both 0);
 * -ENOMEM.
 */
int crpc_stream_grant(crpc_stream *s, uint32_t messages, uint32_t bytes);

/**
 * Server: accepts a stream with its first credit frame, granting the client `messages` and
 * `bytes` (client and bidi kinds; a server stream grants nothing: pass 0, 0) and carrying
 * the leading metadata `ext` (may be NULL). The first element sent before an accept
 * accepts the stream itself (no metadata, the default window); an end needs none.
 * Returns 0; -EALREADY (accepted before); -EPIPE (ended); -EINVAL (a client handle, or
 * credit on a server stream, or none on a client/bidi one); -EMSGSIZE; -ENOMEM.
 */
int crpc_stream_accept(crpc_stream *s, uint32_t messages, uint32_t bytes,
                       const crpc_ext_entry *ext, uint32_t ext_count);

/**
 * Client: says no more elements will be sent (client and bidi streams); the stream ends
 * when the server's end response arrives. Returns 0; -EPIPE (ended, or half-closed
 * before); -EINVAL (a server handle or a server stream); -ENOMEM.
 */
int crpc_stream_half_close(crpc_stream *s);

/**
 * Server: ends the stream with its one end response (`reply`: the error, the result of a
 * client stream, the trailing metadata). Nothing more flows either way afterwards.
 * Returns 0; -EPIPE when the stream had already ended (cancelled, a credit violation, its
 * connection closed: nothing is sent); -EINVAL (a client handle); -EMSGSIZE (the response
 * is too large: end again with an error); -ENOMEM.
 */
int crpc_stream_end(crpc_stream *s, const crpc_reply *reply);

/**
 * Client: gives up on the stream: a cancel frame tells the server and the callback gets
 * END with -ECANCELED (unless another ending got there first). Returns 0; -EINVAL (a
 * server handle); -ENOMEM.
 */
int crpc_stream_cancel(crpc_stream *s);

/** Drops the application's reference (once). Thread: any. */
void crpc_stream_release(crpc_stream *s);

/** The stream's id on its connection. */
uint32_t crpc_stream_sid(const crpc_stream *s);

/** The stream's kind (enum crpc_stream_kind). */
int crpc_stream_kind(const crpc_stream *s);

/** Server: a pointer of the application's, handed to on_stream_release when the stream is
 * freed (set it while handling the open request). */
void crpc_stream_set_user(crpc_stream *s, void *user);
void *crpc_stream_user(const crpc_stream *s);

/* --------------------------------------------------------------------- TLS */

/*
 * TLS runs inside the core, between the I/O backend and the framing: ciphertext never
 * leaves C. TLS 1.3 by default (1.2 only when allowed), AEAD ciphers only, no
 * renegotiation, no compression, no session tickets (every handshake is a full one), ALPN
 * "swiftrpc/1". A server's handshakes run on its loops without blocking; a client's run
 * where its TCP connect runs (the connecting thread, or the reconnect thread), within the
 * connect timeout, so crpc_client_connect reports a certificate that does not verify. The
 * data path is OpenSSL in user space (stderr says so once: "crpc: TLS data path
 * userspace"); kernel TLS would plug in after the handshake (docs/ARCHITECTURE.md).
 */

/** Who must show a certificate to a server. */
enum crpc_tls_client_auth {
    CRPC_TLS_CLIENT_AUTH_NONE = 0,     /* none is asked for */
    CRPC_TLS_CLIENT_AUTH_OPTIONAL = 1, /* asked for; verified when presented */
    CRPC_TLS_CLIENT_AUTH_REQUIRED = 2, /* mutual TLS: a client without a good one is refused */
};

/** What a TLS context is made of; zero-initialise and set what you need. */
typedef struct crpc_tls_options {
    /* Our certificate chain (leaf first) and private key, as PEM files or PEM text in memory
     * (memory wins). A server needs them; a client only for mutual TLS. */
    const char *cert_file, *key_file;
    const char *cert_pem, *key_pem;
    size_t cert_pem_len, key_pem_len;
    /* Trust roots, PEM: a client checks the server against them (none given: the system's
     * bundle); a server checks client certificates against them. */
    const char *ca_file, *ca_pem;
    size_t ca_pem_len;
    int client_auth;               /* server: enum crpc_tls_client_auth (CA roots needed
                                      unless NONE) */
    int allow_tls12;               /* 1: TLS 1.2 too (ECDHE with AES-GCM or ChaCha20-Poly1305) */
    int alpn_optional;             /* server: admit clients that offer no ALPN at all (one
                                      that offers others is still refused) */
    uint32_t handshake_timeout_ms; /* server: a handshake not done by then is closed; 0 = 10000 */
    uint32_t max_handshake_bytes;  /* server: bytes a client may send before its handshake
                                      completes; 0 = 65536 */
} crpc_tls_options;

/**
 * Makes a server (or client) TLS context from `opts`. Thread: any. The context is
 * reference counted: servers and clients using it take their own reference.
 * Returns 0; -EINVAL (missing certificate or key, a key that does not match, client
 * authentication without trust roots), -ENOENT (a file cannot be read), -EBADMSG (PEM that
 * does not parse), -ENOMEM; the reason is in crpc_last_error().
 */
int crpc_tls_server_context(const crpc_tls_options *opts, crpc_tls_context **out);
int crpc_tls_client_context(const crpc_tls_options *opts, crpc_tls_context **out);

/** Drops the caller's reference. Thread: any. NULL is ignored. */
void crpc_tls_context_release(crpc_tls_context *ctx);

/* ------------------------------------------------------------------ errors */

/** A short description of a negated errno returned by this API (or a status). */
const char *crpc_strerror(int err);

/**
 * The reason the last failing crpc_* call on this thread gave, in words ("certificate
 * verify failed: certificate has expired"), or "" when it gave none. Valid until the
 * thread's next crpc_* call. Thread: any (each thread has its own).
 */
const char *crpc_last_error(void);

#ifdef __cplusplus
}
#endif
#endif /* CRPC_H */
