/*
 * test_streams.c — streams (crpc.h "Streams"), every end of their life on both sides:
 *   1. a server stream paced by credit: every element arrives in order, no more in flight
 *      than granted, then the end; the client grants as it takes them;
 *   2. a client stream sent from another thread, waiting on -EAGAIN for WRITABLE; the
 *      server's grants pace it and its end carries the reply;
 *   3. a bidirectional echo, then elements the server sends after the client half-closed;
 *   4. the client cancels mid-stream: END -ECANCELED once, the server is told (cancelled);
 *   5. a deadline mid-stream: END -ETIMEDOUT, the server is told;
 *   6. a stalled stream (no credit granted) does not delay calls on its connection;
 *   7. a hand-written peer breaking the credit rules gets status 8 for that stream, and
 *      frames for unknown ids are dropped; the connection keeps working;
 *   8. a graceful shutdown lets an open stream finish and refuses new ones (14); a
 *      connection lost mid-stream ends the client's stream (-ECONNRESET) and the server's
 *      (unavailable);
 *   9. streams count as calls in flight (max_inflight) and every slot is given back;
 *  10. a sender's overshoot of the byte credit is a debt that grants pay off first (so the
 *      bytes in flight stay within a window and one element); a half-close before the
 *      accept leaves no credit to send with.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"
#include "wire.h"

static crpc_server *srv;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#define WAIT_FOR(cond)                                                          \
    do {                                                                        \
        uint64_t _until = now_ms() + 5000;                                      \
        while (!(cond) && now_ms() < _until)                                    \
            usleep(1000);                                                       \
        CHECK(cond);                                                            \
    } while (0)

static int is(const crpc_message *m, const char *name)
{
    return m->method_len == strlen(name) && memcmp(m->method, name, m->method_len) == 0;
}

/* A uint32 as MessagePack (0xce form). */
static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = 0xce;
    p[1] = (uint8_t)(v >> 24); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 8); p[4] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p) /* 0xce form */
{
    return (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
}

/* ------------------------------------------------------------- the server */

/* What the server keeps per stream (crpc_stream_set_user; freed by on_stream_release). */
typedef struct served {
    uint32_t count, sent;  /* T.Count: elements to send, sent so far */
    uint32_t got, bytes;   /* T.Sum, T.Echo: elements taken */
    uint32_t tail;         /* T.Echo: elements to send after the half-close */
    int hoard;             /* T.Sink: grants nothing back */
} served;

static atomic_int opened, cancels_cancelled, cancels_exhausted, cancels_unavailable, released;
static atomic_int max_unacked_seen;
static crpc_stream *_Atomic held;      /* T.Hold's stream, ended by the test */

/* Sends what credit allows; ends the stream once all is sent. */
static void pump(crpc_stream *s, served *st)
{
    while (st->sent < st->count) {
        uint8_t v[5];
        put_u32(v, st->sent);
        int rc = crpc_stream_send(s, v, 5, NULL, 0);
        if (rc == -EAGAIN)
            return; /* CRPC_MSG_CREDIT brings more */
        CHECK_EQ(rc, 0);
        st->sent++;
    }
    crpc_reply r = {0};
    CHECK_EQ(crpc_stream_end(s, &r), 0);
    crpc_stream_release(s);
}

static void on_open(const crpc_request *req)
{
    crpc_stream *s = req->stream;
    served *st = calloc(1, sizeof(*st));
    crpc_stream_set_user(s, st);
    atomic_fetch_add(&opened, 1);
    const crpc_message *m = &req->msg;
    if (is(m, "T.Count")) {
        CHECK_EQ(m->stream_kind, CRPC_STREAM_SERVER);
        const uint8_t *arg;
        size_t n;
        CHECK_EQ(crpc_msgpack_array_elem(m->body, m->body_len, 0, &arg, &n), 0);
        st->count = arg[0] == 0xce ? get_u32(arg) : arg[0];
        CHECK_EQ(crpc_stream_accept(s, 0, 0, NULL, 0), 0);
        pump(s, st);
    } else if (is(m, "T.Sum")) {
        CHECK_EQ(m->stream_kind, CRPC_STREAM_CLIENT);
        CHECK_EQ(crpc_stream_send(s, (const uint8_t *)"\xc0", 1, NULL, 0), -EINVAL); /* not ours to send */
        crpc_ext_entry lead = {.key = "lead", .key_len = 4, .value = (const uint8_t *)"yes", .value_len = 3};
        CHECK_EQ(crpc_stream_accept(s, 4, 1024, &lead, 1), 0);
        CHECK_EQ(crpc_stream_accept(s, 4, 1024, NULL, 0), -EALREADY);
    } else if (is(m, "T.Hoard")) {
        CHECK_EQ(crpc_stream_accept(s, 100, 1000, NULL, 0), 0);
        st->hoard = 1;
        atomic_store(&held, s);
    } else if (is(m, "T.Lazy")) {
        st->hoard = 2; /* accepted only after the client's half-close */
    } else if (is(m, "T.Sink")) {
        st->hoard = 1;
        CHECK_EQ(crpc_stream_accept(s, 4, 1024, NULL, 0), 0);
    } else if (is(m, "T.Echo")) {
        st->tail = 3;
        CHECK_EQ(crpc_stream_accept(s, 4, 4096, NULL, 0), 0);
    } else if (is(m, "T.Hold")) {
        CHECK_EQ(crpc_stream_accept(s, 0, 0, NULL, 0), 0);
        atomic_store(&held, s); /* the test ends it, or the client does */
    } else {
        crpc_reply r = {.error_code = CRPC_STATUS_UNIMPLEMENTED, .error_msg = "no such stream", .error_msg_len = 14};
        CHECK_EQ(crpc_stream_end(s, &r), 0);
        crpc_stream_release(s);
    }
}

static void on_element(const crpc_request *req)
{
    crpc_stream *s = req->stream;
    served *st = crpc_stream_user(s);
    st->got++;
    st->bytes += req->msg.body_len;
    if (crpc_stream_kind(s) == CRPC_STREAM_BIDI)
        CHECK_EQ(crpc_stream_send(s, req->msg.body, req->msg.body_len, NULL, 0), 0);
    if (!st->hoard)
        CHECK_EQ(crpc_stream_grant(s, 1, req->msg.body_len + 16), 0); /* taken: one more */
}

static void on_half_close(const crpc_request *req)
{
    crpc_stream *s = req->stream;
    served *st = crpc_stream_user(s);
    if (st->hoard == 2) { /* T.Lazy: the accept comes late and must grant nothing */
        CHECK_EQ(crpc_stream_accept(s, 4, 1024, NULL, 0), 0);
        return;
    }
    CHECK_EQ(crpc_stream_grant(s, 1, 1), -EPIPE); /* the client sends no more */
    uint8_t result[11] = {0x92};
    put_u32(result + 1, st->got);
    put_u32(result + 6, st->bytes);
    crpc_reply r = {0};
    if (crpc_stream_kind(s) == CRPC_STREAM_CLIENT) {
        r.result = result;
        r.result_len = sizeof(result);
    } else {
        for (uint32_t i = 0; i < st->tail; i++) /* still sending after the half-close */
            CHECK_EQ(crpc_stream_send(s, (const uint8_t *)"\xa4tail", 5, NULL, 0), 0);
    }
    CHECK_EQ(crpc_stream_end(s, &r), 0);
    CHECK_EQ(crpc_stream_end(s, &r), -EPIPE);
    crpc_stream_release(s);
}

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (!req->stream) {
        if (req->msg.type == CRPC_MSG_REQUEST) {
            crpc_reply r = {0};
            crpc_server_reply(req->server, req->conn, req->msg.msgid, &r);
        }
        return;
    }
    switch (req->msg.type) {
    case CRPC_MSG_REQUEST: on_open(req); break;
    case CRPC_MSG_ELEMENT: on_element(req); break;
    case CRPC_MSG_HALF_CLOSE: on_half_close(req); break;
    case CRPC_MSG_CREDIT: pump(req->stream, crpc_stream_user(req->stream)); break;
    case CRPC_MSG_CANCEL: {
        int code = req->msg.error_code;
        atomic_fetch_add(code == CRPC_STATUS_CANCELLED ? &cancels_cancelled
                         : code == CRPC_STATUS_RESOURCE_EXHAUSTED ? &cancels_exhausted
                                                                  : &cancels_unavailable, 1);
        crpc_reply r = {0};
        CHECK_EQ(crpc_stream_end(req->stream, &r), -EPIPE); /* over already */
        crpc_stream *expected = req->stream;
        atomic_compare_exchange_strong(&held, &expected, NULL);
        /* A stream the application had ended gets no event: it still holds this one. */
        crpc_stream_release(req->stream);
        break;
    }
    }
}

static void on_stream_release(void *user, void *stream_user)
{
    (void)user;
    free(stream_user);
    atomic_fetch_add(&released, 1);
}

/* -------------------------------------------------------------- the client */

typedef struct watcher {
    crpc_stream *s;
    atomic_int accepted, elements, writable, ends, end_status, end_code;
    atomic_int order_ok;
    atomic_int unacked;        /* elements received and not granted back */
    int grant;                 /* grant back each element as it comes (1) or not (0) */
    char lead[8];
    uint32_t result_count, result_bytes;
} watcher;

static void watch(void *ctx, const crpc_stream_event *ev)
{
    watcher *w = ctx;
    CHECK_EQ(atomic_load(&w->ends), 0); /* nothing after END */
    switch (ev->type) {
    case CRPC_STREAM_ACCEPTED:
        CHECK_EQ(atomic_fetch_add(&w->accepted, 1), 0);
        for (uint32_t i = 0; i < ev->message->ext_count; i++)
            if (ev->message->ext[i].key_len == 4 && memcmp(ev->message->ext[i].key, "lead", 4) == 0)
                memcpy(w->lead, ev->message->ext[i].value, ev->message->ext[i].value_len < 7 ? ev->message->ext[i].value_len : 7);
        break;
    case CRPC_STREAM_ELEMENT: {
        const crpc_message *m = ev->message;
        int i = atomic_fetch_add(&w->elements, 1);
        if (m->body_len == 5 && m->body[0] == 0xce && get_u32(m->body) != (uint32_t)i)
            atomic_store(&w->order_ok, 0);
        int un = atomic_fetch_add(&w->unacked, 1) + 1;
        if (un > atomic_load(&max_unacked_seen))
            atomic_store(&max_unacked_seen, un);
        if (w->grant) {
            atomic_fetch_sub(&w->unacked, 1);
            CHECK_EQ(crpc_stream_grant(ev->stream, 1, m->body_len + 16), 0);
        }
        break;
    }
    case CRPC_STREAM_WRITABLE:
        atomic_fetch_add(&w->writable, 1);
        break;
    case CRPC_STREAM_END: {
        const crpc_result *r = ev->result;
        atomic_store(&w->end_status, r->status);
        atomic_store(&w->end_code, r->error_code);
        if (r->status == 0 && r->result_len == 11 && r->result[0] == 0x92) {
            w->result_count = get_u32(r->result + 1);
            w->result_bytes = get_u32(r->result + 6);
        }
        atomic_fetch_add(&w->ends, 1);
        break;
    }
    }
}

static int open_stream(crpc_client *c, watcher *w, const char *method, int kind, const uint8_t *params,
                       uint32_t params_len, uint32_t credit_m, uint32_t credit_b, uint64_t timeout_us)
{
    memset(w, 0, sizeof(*w));
    atomic_store(&w->order_ok, 1);
    w->grant = 1;
    crpc_stream_open o = {.kind = kind, .credit_messages = credit_m, .credit_bytes = credit_b};
    o.call.method = method;
    o.call.method_len = (uint32_t)strlen(method);
    o.call.params = params;
    o.call.params_len = params_len;
    o.call.timeout_us = timeout_us;
    return crpc_client_open_stream(c, &o, watch, w, &w->s);
}

static atomic_int call_done;
static void on_call(void *ctx, const crpc_result *r)
{
    (void)ctx;
    CHECK_EQ(r->status, 0);
    atomic_fetch_add(&call_done, 1);
}

static void call_ping(crpc_client *c)
{
    crpc_call call = {.method = "T.Ping", .method_len = 6};
    CHECK_EQ(crpc_client_call(c, &call, on_call, NULL, NULL), 0);
}

/* -------------------------------------------------------------- the tests */

static void server_stream(crpc_client *c)
{
    /* 1000 elements through a window of 4: the server waits for credit 250 times. */
    uint8_t params[6] = {0x91};
    put_u32(params + 1, 1000);
    watcher w;
    CHECK_EQ(open_stream(c, &w, "T.Count", CRPC_STREAM_SERVER, params, 6, 4, 1 << 20, 0), 0);
    WAIT_FOR(atomic_load(&w.ends) == 1);
    CHECK_EQ(w.end_status, 0);
    CHECK_EQ(w.end_code, 0);
    CHECK_EQ(w.elements, 1000);
    CHECK_EQ(w.order_ok, 1);
    CHECK_EQ(w.accepted, 1);
    CHECK(atomic_load(&max_unacked_seen) <= 4);
    crpc_stream_release(w.s);

    /* Count 0: accepted and ended, no element. */
    put_u32(params + 1, 0);
    CHECK_EQ(open_stream(c, &w, "T.Count", CRPC_STREAM_SERVER, params, 6, 0, 0, 0), 0);
    WAIT_FOR(atomic_load(&w.ends) == 1);
    CHECK_EQ(w.elements, 0);
    crpc_stream_release(w.s);

    /* An unknown stream method ends at once with 12. */
    CHECK_EQ(open_stream(c, &w, "T.Nope", CRPC_STREAM_BIDI, NULL, 0, 0, 0, 0), 0);
    WAIT_FOR(atomic_load(&w.ends) == 1);
    CHECK_EQ(w.end_code, CRPC_STATUS_UNIMPLEMENTED);
    crpc_stream_release(w.s);
}

/* Sends `n` elements of 259 bytes from this (non-loop) thread, waiting on -EAGAIN. */
static void send_all(watcher *w, int n)
{
    uint8_t value[259] = {0xc5, 0x01, 0x00}; /* bin of 256 bytes */
    int refused = 0;
    for (int i = 0; i < n;) {
        int rc = crpc_stream_send(w->s, value, sizeof(value), NULL, 0);
        if (rc == -EAGAIN) {
            refused++;
            usleep(100);
            continue;
        }
        CHECK_EQ(rc, 0);
        i++;
    }
    CHECK(refused > 0); /* the server's window (4 messages, 1024 bytes) paced it */
}

static void client_stream_paced(crpc_client *c)
{
    watcher w;
    CHECK_EQ(open_stream(c, &w, "T.Sum", CRPC_STREAM_CLIENT, NULL, 0, 0, 0, 0), 0);
    /* No element may go before the server accepts. */
    WAIT_FOR(atomic_load(&w.accepted) == 1);
    CHECK_EQ(strcmp(w.lead, "yes"), 0);
    send_all(&w, 200);
    CHECK_EQ(crpc_stream_half_close(w.s), 0);
    CHECK_EQ(crpc_stream_half_close(w.s), -EPIPE);
    CHECK_EQ(crpc_stream_send(w.s, (const uint8_t *)"\xc0", 1, NULL, 0), -EPIPE);
    WAIT_FOR(atomic_load(&w.ends) == 1);
    CHECK_EQ(w.end_status, 0);
    CHECK_EQ(w.end_code, 0);
    CHECK_EQ(w.result_count, 200);
    CHECK_EQ(w.result_bytes, 200u * 259); /* the values' lengths, as the server summed them */
    crpc_stream_release(w.s);
}

static void bidi(crpc_client *c)
{
    watcher w;
    CHECK_EQ(open_stream(c, &w, "T.Echo", CRPC_STREAM_BIDI, NULL, 0, 64, 1 << 20, 0), 0);
    WAIT_FOR(atomic_load(&w.accepted) == 1);
    for (uint32_t i = 0; i < 100;) {
        uint8_t v[5];
        put_u32(v, i);
        int rc = crpc_stream_send(w.s, v, 5, NULL, 0);
        if (rc == -EAGAIN) {
            usleep(100);
            continue;
        }
        CHECK_EQ(rc, 0);
        i++;
    }
    WAIT_FOR(atomic_load(&w.elements) == 100);
    CHECK_EQ(w.order_ok, 1);
    CHECK_EQ(crpc_stream_half_close(w.s), 0);
    WAIT_FOR(atomic_load(&w.ends) == 1);
    CHECK_EQ(w.elements, 103); /* the three sent after the half-close arrived too */
    CHECK_EQ(w.end_status, 0);
    CHECK_EQ(w.end_code, 0);
    crpc_stream_release(w.s);
}

static void cancel_and_deadline(crpc_client *c)
{
    watcher w;
    int before = atomic_load(&cancels_cancelled);
    CHECK_EQ(open_stream(c, &w, "T.Hold", CRPC_STREAM_SERVER, NULL, 0, 0, 0, 0), 0);
    WAIT_FOR(atomic_load(&w.accepted) == 1);
    CHECK_EQ(crpc_stream_cancel(w.s), 0);
    WAIT_FOR(atomic_load(&w.ends) == 1);
    CHECK_EQ(w.end_status, -ECANCELED);
    WAIT_FOR(atomic_load(&cancels_cancelled) == before + 1);
    CHECK_EQ(crpc_stream_cancel(w.s), 0); /* ended: nothing more happens */
    crpc_stream_release(w.s);
    usleep(20000);
    CHECK_EQ(w.ends, 1);

    CHECK_EQ(open_stream(c, &w, "T.Hold", CRPC_STREAM_SERVER, NULL, 0, 0, 0, 100000), 0);
    uint64_t start = now_ms();
    WAIT_FOR(atomic_load(&w.ends) == 1);
    CHECK_EQ(w.end_status, -ETIMEDOUT);
    CHECK(now_ms() - start >= 90);
    WAIT_FOR(atomic_load(&cancels_cancelled) == before + 2);
    crpc_stream_release(w.s);
}

static void stalled_stream(crpc_client *c)
{
    /* The client takes nothing: after its window of 2 the server can send no more, and the
     * calls on the connection are answered all the same. */
    uint8_t params[6] = {0x91};
    put_u32(params + 1, 100000);
    watcher w;
    CHECK_EQ(open_stream(c, &w, "T.Count", CRPC_STREAM_SERVER, params, 6, 2, 1 << 20, 0), 0);
    w.grant = 0;
    WAIT_FOR(atomic_load(&w.elements) >= 1);
    int before = atomic_load(&call_done);
    for (int i = 0; i < 100; i++)
        call_ping(c);
    WAIT_FOR(atomic_load(&call_done) == before + 100);
    usleep(20000);
    CHECK(atomic_load(&w.elements) <= 2);
    CHECK_EQ(crpc_stream_cancel(w.s), 0);
    WAIT_FOR(atomic_load(&w.ends) == 1);
    crpc_stream_release(w.s);
}

/* ----------------------------------------------------------- a raw peer */

/* Reads one frame into buf; returns its body length. */
static uint32_t read_frame(int fd, uint8_t *buf, size_t cap)
{
    uint8_t h[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t n = read(fd, h + got, 4 - got);
        CHECK(n > 0);
        got += (size_t)n;
    }
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    CHECK(len <= cap);
    for (got = 0; got < len;) {
        ssize_t n = read(fd, buf + got, len - got);
        CHECK(n > 0);
        got += (size_t)n;
    }
    return len;
}

static void send_frame(int fd, const uint8_t *body, uint32_t len)
{
    uint8_t h[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    CHECK_EQ(write(fd, h, 4), 4);
    CHECK_EQ(write(fd, body, len), (ssize_t)len);
}

/* [0, sid, "T.Sink", [], {"rpc-stream": 2}] */
static void send_open_sink(int fd, uint8_t sid)
{
    uint8_t b[] = {0x95, 0x00, sid, 0xa6, 'T', '.', 'S', 'i', 'n', 'k', 0x90,
                   0x81, 0xaa, 'r', 'p', 'c', '-', 's', 't', 'r', 'e', 'a', 'm', 0x02};
    send_frame(fd, b, sizeof(b));
}

static void expect_ping_answered(int fd, uint8_t id)
{
    uint8_t req[] = {0x94, 0x00, id, 0xa6, 'T', '.', 'P', 'i', 'n', 'g', 0x90};
    send_frame(fd, req, sizeof(req));
    uint8_t buf[256];
    for (;;) { /* skip what the server still sends for streams */
        uint32_t n = read_frame(fd, buf, sizeof(buf));
        if (n >= 3 && buf[1] == 0x01 && buf[2] == id)
            return;
    }
}

/* [0, sid, "T.Lazy", [], {"rpc-stream": 2}] */
static void send_open_lazy(int fd, uint8_t sid)
{
    uint8_t b[] = {0x95, 0x00, sid, 0xa6, 'T', '.', 'L', 'a', 'z', 'y', 0x90,
                   0x81, 0xaa, 'r', 'p', 'c', '-', 's', 't', 'r', 'e', 'a', 'm', 0x02};
    send_frame(fd, b, sizeof(b));
}

static void hostile_peer(uint16_t port)
{
    int fd = wire_connect(port);
    /* Frames for ids that are no stream: dropped. */
    uint8_t element[] = {0x93, 0x04, 0x63, 0xc0}, credit[] = {0x94, 0x05, 0x63, 0x01, 0x01}, half[] = {0x92, 0x06, 0x63};
    send_frame(fd, element, sizeof(element));
    send_frame(fd, credit, sizeof(credit));
    send_frame(fd, half, sizeof(half));
    expect_ping_answered(fd, 1);

    /* Beyond the credit: the server granted 4 messages; the fifth element is refused (8). */
    int exhausted = atomic_load(&cancels_exhausted);
    send_open_sink(fd, 7);
    uint8_t buf[256];
    uint32_t n = read_frame(fd, buf, sizeof(buf));
    CHECK(n >= 5 && buf[1] == 0x05 && buf[2] == 0x07); /* the accept (small ids pack as fixints) */
    for (int i = 0; i < 5; i++) {
        uint8_t e[] = {0x93, 0x04, 0x07, 0xa1, 'x'};
        send_frame(fd, e, sizeof(e));
    }
    n = read_frame(fd, buf, sizeof(buf)); /* the end response: [1, 7, [8, msg], nil] */
    CHECK_EQ(buf[1], 0x01);
    CHECK_EQ(buf[2], 7);
    CHECK_EQ(buf[3], 0x92);
    CHECK_EQ(buf[4], CRPC_STATUS_RESOURCE_EXHAUSTED);
    WAIT_FOR(atomic_load(&cancels_exhausted) == exhausted + 1);
    expect_ping_answered(fd, 2); /* the connection lives on */

    /* Half-closed before the server accepted: the late accept grants nothing, so an element
     * after the half-close is beyond the credit (8). */
    exhausted = atomic_load(&cancels_exhausted);
    send_open_lazy(fd, 8);
    uint8_t half8[] = {0x92, 0x06, 0x08};
    send_frame(fd, half8, sizeof(half8));
    n = read_frame(fd, buf, sizeof(buf));
    CHECK(n >= 3 && buf[1] == 0x05 && buf[2] == 0x08); /* the late accept */
    uint8_t late[] = {0x93, 0x04, 0x08, 0xa1, 'x'};
    send_frame(fd, late, sizeof(late));
    n = read_frame(fd, buf, sizeof(buf));
    CHECK_EQ(buf[1], 0x01);
    CHECK_EQ(buf[2], 8);
    CHECK_EQ(buf[4], CRPC_STATUS_RESOURCE_EXHAUSTED);
    WAIT_FOR(atomic_load(&cancels_exhausted) == exhausted + 1);

    /* A stream open on a connection that then drops: the server's stream ends (unavailable). */
    int unavailable = atomic_load(&cancels_unavailable);
    send_open_sink(fd, 9);
    n = read_frame(fd, buf, sizeof(buf));
    close(fd);
    WAIT_FOR(atomic_load(&cancels_unavailable) == unavailable + 1);
}

static atomic_int shutdown_rc = 1;
static void *shutdown_thread(void *arg)
{
    atomic_store(&shutdown_rc, crpc_server_shutdown(arg, 3000));
    return NULL;
}

/* A sender's overshoot is a debt: with 1000 bytes of credit, two 600-byte elements go (the
 * second overshoots by about 200), and a grant of 100 bytes does not pay that off. */
static void byte_debt(crpc_client *c)
{
    watcher w;
    CHECK_EQ(open_stream(c, &w, "T.Hoard", CRPC_STREAM_CLIENT, NULL, 0, 0, 0, 0), 0);
    WAIT_FOR(atomic_load(&w.accepted) == 1);
    uint8_t value[603] = {0xc5, 0x02, 0x58}; /* bin of 600 bytes */
    CHECK_EQ(crpc_stream_send(w.s, value, sizeof(value), NULL, 0), 0);
    CHECK_EQ(crpc_stream_send(w.s, value, sizeof(value), NULL, 0), 0);
    CHECK_EQ(crpc_stream_send(w.s, value, sizeof(value), NULL, 0), -EAGAIN);
    crpc_stream *server_side = atomic_exchange(&held, NULL);
    CHECK(server_side != NULL);
    CHECK_EQ(crpc_stream_grant(server_side, 5, 100), 0);
    WAIT_FOR(atomic_load(&w.writable) >= 1);
    CHECK_EQ(crpc_stream_send(w.s, value, sizeof(value), NULL, 0), -EAGAIN); /* still in debt */
    CHECK_EQ(crpc_stream_grant(server_side, 0, 1000), 0);
    WAIT_FOR(atomic_load(&w.writable) >= 2);
    CHECK_EQ(crpc_stream_send(w.s, value, sizeof(value), NULL, 0), 0);
    crpc_reply r = {0};
    CHECK_EQ(crpc_stream_end(server_side, &r), 0);
    crpc_stream_release(server_side);
    WAIT_FOR(atomic_load(&w.ends) == 1);
    crpc_stream_release(w.s);
}

/* A graceful shutdown: a new stream is refused (14), the open one runs to its end. */
static void drain_stream(crpc_loop *loop)
{
    crpc_server *s2;
    crpc_server_config cfg = {.port = 0, .loops = 1, .on_request = on_request, .on_stream_release = on_stream_release};
    CHECK_EQ(crpc_server_start(&cfg, &s2), 0);
    crpc_client *c;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", crpc_server_port(s2), &(crpc_client_config){0}, &c), 0);
    watcher w, late;
    CHECK_EQ(open_stream(c, &w, "T.Hold", CRPC_STREAM_SERVER, NULL, 0, 0, 0, 0), 0);
    WAIT_FOR(atomic_load(&held) != NULL);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, shutdown_thread, s2), 0);
    WAIT_FOR(crpc_client_pending_count(c) == 1 && (usleep(50000), 1));
    CHECK_EQ(open_stream(c, &late, "T.Hold", CRPC_STREAM_SERVER, NULL, 0, 0, 0, 0), 0);
    WAIT_FOR(atomic_load(&late.ends) == 1);
    CHECK_EQ(late.end_code, CRPC_STATUS_UNAVAILABLE);
    CHECK_EQ(atomic_load(&w.ends), 0); /* still open while the server drains */
    /* The handler ends it from another thread: the drain completes in time. */
    crpc_stream *s = atomic_exchange(&held, NULL);
    uint8_t v[] = {0xa2, 'o', 'k'};
    CHECK_EQ(crpc_stream_send(s, v, 3, NULL, 0), 0);
    crpc_reply r = {0};
    CHECK_EQ(crpc_stream_end(s, &r), 0);
    crpc_stream_release(s);
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&shutdown_rc), 0);
    WAIT_FOR(atomic_load(&w.ends) == 1);
    CHECK_EQ(w.end_status, 0);
    CHECK_EQ(w.elements, 1);
    crpc_stream_release(w.s);
    crpc_stream_release(late.s);
    crpc_client_destroy(c);
    crpc_server_destroy(s2);
}

int main(void)
{
    crpc_server_config cfg = {.port = 0, .loops = 1, .on_request = on_request,
                              .on_stream_release = on_stream_release, .max_inflight = 8};
    int err = crpc_server_start(&cfg, &srv);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);
    uint16_t port = crpc_server_port(srv);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(&(crpc_loop_config){0}, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), 0);
    crpc_client *c;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", port, &(crpc_client_config){0}, &c), 0);

    server_stream(c);
    client_stream_paced(c);
    bidi(c);
    cancel_and_deadline(c);
    stalled_stream(c);
    byte_debt(c);
    hostile_peer(port);
    drain_stream(loop);

    /* Streams count as calls in flight: 8 held streams fill the connection, the ninth is
     * refused with 8. */
    watcher hold[9];
    for (int i = 0; i < 9; i++)
        CHECK_EQ(open_stream(c, &hold[i], "T.Hold", CRPC_STREAM_SERVER, NULL, 0, 0, 0, 0), 0);
    WAIT_FOR(atomic_load(&hold[8].ends) == 1);
    CHECK_EQ(hold[8].end_code, CRPC_STATUS_RESOURCE_EXHAUSTED);
    CHECK_EQ(crpc_server_inflight(srv), 8);

    /* The server stops under them: every client stream ends with -ECONNRESET, every server
     * stream as unavailable. */
    int unavailable = atomic_load(&cancels_unavailable);
    crpc_server_stop(srv);
    for (int i = 0; i < 8; i++) {
        WAIT_FOR(atomic_load(&hold[i].ends) == 1);
        CHECK_EQ(hold[i].end_status, -ECONNRESET);
    }
    for (int i = 0; i < 9; i++)
        crpc_stream_release(hold[i].s);
    CHECK_EQ(atomic_load(&cancels_unavailable), unavailable + 8);
    CHECK_EQ(crpc_server_inflight(srv), 0);
    CHECK_EQ(crpc_client_pending_count(c), 0);
    CHECK_EQ(atomic_load(&released), atomic_load(&opened)); /* every stream freed */
    crpc_server_destroy(srv);
    crpc_client_destroy(c);
    crpc_loop_stop(loop);
    crpc_loop_destroy(loop);
    printf("test_streams: ok\n");
    return 0;
}
