/*
 * echo_floor.c - the performance floor every SwiftRPC figure is compared to.
 *
 * A bare io_uring echo of length-prefixed frames (4-byte big-endian payload
 * length, then the payload): no MessagePack, no dispatch, no allocation per
 * frame.  One file holds both ends:
 *
 *   serve  one thread, one ring; multishot accept, multishot recv into a
 *          provided buffer ring, complete frames appended unchanged to the
 *          connection's output buffer, one send per connection per loop turn.
 *   load   one thread, one ring, closed loop: every connection keeps --depth
 *          frames in flight, checks each echo byte for byte, and records the
 *          round-trip time in a log-linear histogram (<0.4% bucket error).
 *
 * Needs Linux >= 6.1 for IORING_SETUP_DEFER_TASKRUN (falls back to older
 * setups) and >= 6.0 for multishot recv with a buffer ring; liburing >= 2.3.
 *
 * Build:  gcc -O2 -std=gnu11 -Wall -Wextra -o echo_floor echo_floor.c -luring -lpthread
 * Try:    ./echo_floor serve --port 7000 --cpu 0 &
 *         ./echo_floor load --port 7000 --cpu 1 --conns 4 --depth 32 --payload 32 --duration 5
 *         kill %1
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * user_data layout: the op in the low byte, the connection slot above it.
 *
 *   63                                   8 7          0
 *  +--------------------------------------+------------+
 *  |            connection slot           |     op     |
 *  +--------------------------------------+------------+
 */
enum floor_op { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_SIGNAL, OP_CANCEL };

static inline uint64_t ud_make(enum floor_op op, uint32_t slot) { return ((uint64_t)slot << 8) | op; }
static inline enum floor_op ud_op(uint64_t ud) { return (enum floor_op)(ud & 0xff); }
static inline uint32_t ud_slot(uint64_t ud) { return (uint32_t)(ud >> 8); }

#define FRAME_HDR 4u
#define FRAME_MAX (4u << 20)   /* largest payload either side accepts */
#define RING_SQES 256u
#define RING_CQES 4096u        /* multishot ops can post many CQEs per turn */
/* The buffer ring hands out buffers in FIFO order, so every buffer gets
 * written in turn: keeping the whole pool (1 MiB) inside L2 made 64 KiB echoes
 * ~20% faster than a 8 MiB pool.  Running short only costs an -ENOBUFS re-arm.
 * Override with -DPBUF_COUNT=... -DPBUF_SIZE=... to experiment. */
#define PBUF_GROUP 0
#ifndef PBUF_COUNT
#define PBUF_COUNT 32u         /* power of two, <= 32768 */
#endif
#ifndef PBUF_SIZE
#define PBUF_SIZE (32u << 10)  /* a 64 KiB frame spans 2-3 buffers */
#endif
#define OBUF_MIN (16u << 10)

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint32_t be32_load(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void be32_store(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/*
 * floor_frames_parse: keeps no state, never allocates.
 * Returns the number of bytes at the start of buf made of complete frames
 * (0 = need more), or -EMSGSIZE if a header announces more than FRAME_MAX.
 */
static ssize_t floor_frames_parse(const uint8_t *buf, size_t len)
{
	size_t off = 0;
	while (len - off >= FRAME_HDR) {
		uint32_t n = be32_load(buf + off);
		if (n > FRAME_MAX)
			return -EMSGSIZE;
		if (len - off - FRAME_HDR < n)
			break;
		off += FRAME_HDR + n;
	}
	return (ssize_t)off;
}

/* ---- provided buffer ring ------------------------------------------------
 * The kernel picks a buffer for each multishot recv completion; the buffer is
 * ours from that CQE until we hand it back with floor_pbuf_recycle().  We
 * consume every buffer before the next CQE, so recycled buffers are published
 * in one batch per loop turn (floor_pbuf_publish). */
struct floor_pbuf {
	struct io_uring_buf_ring *br;
	uint8_t *mem;
	int unpublished;  /* buffers added since the last tail advance */
};

static int floor_pbuf_init(struct floor_pbuf *p, struct io_uring *ring)
{
	size_t ring_sz = PBUF_COUNT * sizeof(struct io_uring_buf);
	p->br = mmap(NULL, ring_sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p->br == MAP_FAILED)
		return -errno;
	p->mem = mmap(NULL, (size_t)PBUF_COUNT * PBUF_SIZE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p->mem == MAP_FAILED) {
		int err = -errno;
		munmap(p->br, ring_sz);
		return err;
	}
	struct io_uring_buf_reg reg = { .ring_addr = (uintptr_t)p->br,
					.ring_entries = PBUF_COUNT, .bgid = PBUF_GROUP };
	int ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret < 0) {
		munmap(p->mem, (size_t)PBUF_COUNT * PBUF_SIZE);
		munmap(p->br, ring_sz);
		return ret;
	}
	io_uring_buf_ring_init(p->br);
	for (unsigned i = 0; i < PBUF_COUNT; i++)
		io_uring_buf_ring_add(p->br, p->mem + (size_t)i * PBUF_SIZE, PBUF_SIZE, (unsigned short)i,
				      io_uring_buf_ring_mask(PBUF_COUNT), (int)i);
	io_uring_buf_ring_advance(p->br, PBUF_COUNT);
	p->unpublished = 0;
	return 0;
}

static inline void floor_pbuf_recycle(struct floor_pbuf *p, unsigned bid)
{
	io_uring_buf_ring_add(p->br, p->mem + (size_t)bid * PBUF_SIZE, PBUF_SIZE, (unsigned short)bid,
			      io_uring_buf_ring_mask(PBUF_COUNT), p->unpublished++);
}

static inline void floor_pbuf_publish(struct floor_pbuf *p)
{
	if (p->unpublished) {
		io_uring_buf_ring_advance(p->br, p->unpublished);
		p->unpublished = 0;
	}
}

static void floor_pbuf_free(struct floor_pbuf *p, struct io_uring *ring)
{
	io_uring_unregister_buf_ring(ring, PBUF_GROUP);
	munmap(p->mem, (size_t)PBUF_COUNT * PBUF_SIZE);
	munmap(p->br, PBUF_COUNT * sizeof(struct io_uring_buf));
}

/* ---- output buffers ------------------------------------------------------ */
struct floor_obuf {
	uint8_t *data;
	size_t len, cap;
};

/* Makes room for extra more bytes; only ever called on the accumulating buffer,
 * never on the one a send is reading from, so realloc cannot move live data. */
static int floor_obuf_reserve(struct floor_obuf *b, size_t extra)
{
	if (b->len + extra <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : OBUF_MIN;
	while (cap < b->len + extra)
		cap *= 2;
	uint8_t *d = realloc(b->data, cap);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

/* ---- latency histogram ---------------------------------------------------
 * Log-linear in nanoseconds: exact below 256 ns, then 128 linear buckets per
 * power of two, so a bucket midpoint is within 0.4% of any value in it. */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((65u - HIST_SUB_BITS) * HIST_SUB)

struct floor_hist {
	uint64_t count, max;
	uint64_t b[HIST_BUCKETS];
};

static inline void floor_hist_record(struct floor_hist *h, uint64_t v)
{
	unsigned idx;
	if (v < 2 * HIST_SUB) {
		idx = (unsigned)v;
	} else {
		unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - HIST_SUB_BITS;
		idx = shift * HIST_SUB + (unsigned)(v >> shift);
	}
	h->b[idx]++;
	h->count++;
	if (v > h->max)
		h->max = v;
}

static double floor_hist_quantile_us(const struct floor_hist *h, double q)
{
	if (!h->count)
		return 0;
	uint64_t want = (uint64_t)(q * (double)h->count + 0.999999), seen = 0;
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen < want)
			continue;
		if (i < 2 * HIST_SUB)
			return i / 1e3;
		unsigned shift = i / HIST_SUB - 1;
		uint64_t lo = (uint64_t)(i - shift * HIST_SUB) << shift;
		uint64_t mid = lo + ((1ull << shift) >> 1);
		return (double)(mid < h->max ? mid : h->max) / 1e3;
	}
	return (double)h->max / 1e3;
}

/* ---- connections ---------------------------------------------------------
 * A connection lives in slots[slot] from accept/connect until it is closing
 * and no recv, send or flush still refers to it; then floor_conn_maybe_free()
 * closes the fd and frees it.  out[acc] accumulates frames while
 * out[acc ^ 1] may be in flight; the first `commit` bytes of out[acc] are
 * complete frames, anything after is a partial frame still being received. */
struct floor_conn {
	int fd;
	uint32_t slot;
	unsigned pending;        /* ops in flight naming this conn */
	bool sending, closing, dirty;
	struct floor_conn *next_dirty;
	struct floor_obuf out[2];
	unsigned acc;            /* index of the accumulating buffer */
	size_t commit;           /* complete-frame bytes at the start of out[acc] */
	size_t sent;             /* progress of the send of out[acc ^ 1] */

	/* load generator only */
	uint64_t *ts;            /* FIFO of send times, depth entries */
	uint32_t ts_head, ts_count;
	uint64_t tx_seq, rx_seq; /* stamped into the first 8 payload bytes */
	uint8_t *tmpl;           /* header + payload pattern of every frame sent */
	uint8_t rx_hdr[FRAME_HDR];
	unsigned rx_hdr_have;    /* 0..4 header bytes of the current echo seen */
	uint32_t rx_len, rx_off; /* its announced length, payload bytes seen */
	bool rx_bad;
};

struct floor_loop {
	struct io_uring ring;
	struct floor_pbuf pbuf;
	struct floor_conn **slots;
	uint32_t nslots, nconns;
	struct floor_conn *dirty;
	bool is_client, stopping, accept_armed;
	int listen_fd, sig_fd;
	struct signalfd_siginfo siginfo;
	uint64_t now;            /* sampled once per loop turn */
	/* load generator */
	uint32_t depth, payload;
	uint64_t win_start, win_end, errors;
	struct floor_hist hist;
};

static struct io_uring_sqe *floor_sqe_get(struct floor_loop *L)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&L->ring);
	if (!sqe) {
		io_uring_submit(&L->ring);
		sqe = io_uring_get_sqe(&L->ring);
	}
	return sqe;  /* never NULL after a submit: the SQ was just drained */
}

static void floor_conn_maybe_free(struct floor_loop *L, struct floor_conn *c)
{
	if (!c->closing || c->pending || c->dirty)
		return;
	close(c->fd);
	L->slots[c->slot] = NULL;
	L->nconns--;
	free(c->out[0].data);
	free(c->out[1].data);
	free(c->ts);
	free(c->tmpl);
	free(c);
}

/* Starts closing: shutdown() makes an armed recv finish and a blocked send fail,
 * so the pending count drains to zero and the conn is freed. */
static void floor_conn_close(struct floor_loop *L, struct floor_conn *c)
{
	if (!c->closing) {
		c->closing = true;
		shutdown(c->fd, SHUT_RDWR);
	}
	floor_conn_maybe_free(L, c);
}

static int floor_conn_new(struct floor_loop *L, int fd, struct floor_conn **out)
{
	uint32_t slot = 0;
	while (slot < L->nslots && L->slots[slot])
		slot++;
	if (slot == L->nslots) {
		uint32_t n = L->nslots ? L->nslots * 2 : 16;
		struct floor_conn **s = realloc(L->slots, n * sizeof(*s));
		if (!s)
			return -ENOMEM;
		memset(s + L->nslots, 0, (n - L->nslots) * sizeof(*s));
		L->slots = s;
		L->nslots = n;
	}
	struct floor_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->slot = slot;
	L->slots[slot] = c;
	L->nconns++;
	*out = c;
	return 0;
}

static void floor_conn_mark_dirty(struct floor_loop *L, struct floor_conn *c)
{
	if (!c->dirty) {
		c->dirty = true;
		c->next_dirty = L->dirty;
		L->dirty = c;
	}
}

static void floor_recv_arm(struct floor_loop *L, struct floor_conn *c)
{
	struct io_uring_sqe *sqe = floor_sqe_get(L);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = PBUF_GROUP;
	io_uring_sqe_set_data64(sqe, ud_make(OP_RECV, c->slot));
	c->pending++;
}

static void floor_send_submit(struct floor_loop *L, struct floor_conn *c)
{
	struct floor_obuf *b = &c->out[c->acc ^ 1];
	struct io_uring_sqe *sqe = floor_sqe_get(L);
	io_uring_prep_send(sqe, c->fd, b->data + c->sent, b->len - c->sent, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud_make(OP_SEND, c->slot));
	c->pending++;
}

/* Hands all complete frames of out[acc] to one send; a trailing partial frame
 * moves to the other buffer, which becomes the accumulating one. */
static int floor_conn_flush(struct floor_loop *L, struct floor_conn *c)
{
	if (c->sending || c->commit == 0)
		return 0;
	struct floor_obuf *tx = &c->out[c->acc], *nx = &c->out[c->acc ^ 1];
	size_t tail = tx->len - c->commit;
	nx->len = 0;
	if (tail) {
		int ret = floor_obuf_reserve(nx, tail);
		if (ret < 0)
			return ret;
		memcpy(nx->data, tx->data + c->commit, tail);
		nx->len = tail;
	}
	tx->len = c->commit;
	c->commit = 0;
	c->acc ^= 1;
	c->sent = 0;
	c->sending = true;
	floor_send_submit(L, c);
	return 0;
}

static void floor_flush_all(struct floor_loop *L)
{
	while (L->dirty) {
		struct floor_conn *c = L->dirty;
		L->dirty = c->next_dirty;
		c->dirty = false;
		if (c->closing)
			floor_conn_maybe_free(L, c);
		else if (floor_conn_flush(L, c) < 0)
			floor_conn_close(L, c);
	}
}

static void floor_on_send(struct floor_loop *L, struct floor_conn *c, int res)
{
	c->pending--;
	if (res < 0 || c->closing) {
		c->sending = false;
		if (res < 0 && L->is_client && !L->stopping)
			L->errors++;
		floor_conn_close(L, c);
		return;
	}
	c->sent += (size_t)res;
	if (c->sent < c->out[c->acc ^ 1].len) {  /* short send: finish it first */
		floor_send_submit(L, c);
		return;
	}
	c->sending = false;
	if (c->commit)
		floor_conn_mark_dirty(L, c);
}

/* ---- server side --------------------------------------------------------- */

/* Appends received bytes unchanged and commits every frame now complete. */
static int floor_server_rx(struct floor_loop *L, struct floor_conn *c, const uint8_t *p, size_t n)
{
	struct floor_obuf *b = &c->out[c->acc];
	int ret = floor_obuf_reserve(b, n);
	if (ret < 0)
		return ret;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	ssize_t done = floor_frames_parse(b->data + c->commit, b->len - c->commit);
	if (done < 0)
		return (int)done;
	if (done) {
		c->commit += (size_t)done;
		floor_conn_mark_dirty(L, c);
	}
	return 0;
}

/* ---- load generator side ------------------------------------------------- */

static int floor_client_send_frame(struct floor_loop *L, struct floor_conn *c)
{
	struct floor_obuf *b = &c->out[c->acc];
	size_t flen = FRAME_HDR + L->payload;
	int ret = floor_obuf_reserve(b, flen);
	if (ret < 0)
		return ret;
	uint8_t *f = b->data + b->len;
	memcpy(f, c->tmpl, flen);
	memcpy(f + FRAME_HDR, &c->tx_seq, L->payload < 8 ? L->payload : 8);
	c->tx_seq++;
	b->len += flen;
	c->commit = b->len;
	/* Send time = the turn that queued it; the coalesced send leaves this turn. */
	c->ts[(c->ts_head + c->ts_count++) % L->depth] = L->now;
	floor_conn_mark_dirty(L, c);
	return 0;
}

/* Whether p[0..n) equals payload bytes [off, off+n) of echo number rx_seq:
 * the sequence number in the first 8 bytes, the template after them. */
static inline bool floor_client_payload_ok(struct floor_loop *L, struct floor_conn *c,
					   const uint8_t *p, uint32_t off, size_t n)
{
	const uint8_t *want = c->tmpl + FRAME_HDR;
	uint32_t stamp = L->payload < 8 ? L->payload : 8;
	for (; n && off < stamp; n--, off++, p++)  /* sequence number bytes */
		if (*p != ((const uint8_t *)&c->rx_seq)[off])
			return false;
	if (off >= L->payload)
		return n == 0;
	size_t m = n < L->payload - off ? n : L->payload - off;
	return memcmp(p, want + off, m) == 0;
}

/* Checks received bytes against the frames sent, one echo at a time and without
 * copying, then sends one new frame per echo (closed loop). */
static int floor_client_rx(struct floor_loop *L, struct floor_conn *c, const uint8_t *p, size_t n)
{
	while (n) {
		if (c->rx_hdr_have < FRAME_HDR) {
			size_t k = FRAME_HDR - c->rx_hdr_have;
			if (k > n)
				k = n;
			memcpy(c->rx_hdr + c->rx_hdr_have, p, k);
			c->rx_hdr_have += (unsigned)k;
			p += k;
			n -= k;
			if (c->rx_hdr_have < FRAME_HDR)
				break;
			c->rx_len = be32_load(c->rx_hdr);
			if (c->rx_len > FRAME_MAX)
				return -EMSGSIZE;
			c->rx_off = 0;
			c->rx_bad = c->rx_len != L->payload;
		} else {
			size_t k = c->rx_len - c->rx_off;
			if (k > n)
				k = n;
			if (!c->rx_bad && !floor_client_payload_ok(L, c, p, c->rx_off, k))
				c->rx_bad = true;
			c->rx_off += (uint32_t)k;
			p += k;
			n -= k;
		}
		if (c->rx_hdr_have < FRAME_HDR || c->rx_off < c->rx_len)
			continue;
		/* one complete echo */
		if (!c->ts_count)
			return -EPROTO;  /* more echoes than frames sent */
		uint64_t t0 = c->ts[c->ts_head];
		c->ts_head = (c->ts_head + 1) % L->depth;
		c->ts_count--;
		if (L->now >= L->win_start && L->now < L->win_end) {
			floor_hist_record(&L->hist, L->now - t0);
			L->errors += c->rx_bad;
		}
		c->rx_seq++;
		c->rx_hdr_have = 0;
		c->rx_off = c->rx_len = 0;
		if (!L->stopping) {
			int ret = floor_client_send_frame(L, c);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* ---- completion dispatch ------------------------------------------------- */

static void floor_on_recv(struct floor_loop *L, struct floor_conn *c, struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		if (res > 0 && !c->closing) {
			const uint8_t *p = L->pbuf.mem + (size_t)bid * PBUF_SIZE;
			int ret = L->is_client ? floor_client_rx(L, c, p, (size_t)res)
					       : floor_server_rx(L, c, p, (size_t)res);
			if (ret < 0) {
				if (L->is_client)
					L->errors++;
				floor_conn_close(L, c);
			}
		}
		floor_pbuf_recycle(&L->pbuf, bid);
	}
	if (cqe->flags & IORING_CQE_F_MORE)
		return;
	/* The multishot recv ended (no IORING_CQE_F_MORE): re-arm unless the peer
	 * is gone.  After -ENOBUFS the buffers recycled this turn are published
	 * before the re-arm is submitted. */
	c->pending--;
	if (!c->closing && (res > 0 || res == -ENOBUFS)) {
		floor_recv_arm(L, c);
		return;
	}
	if (L->is_client && !L->stopping && !c->closing)
		L->errors++;  /* the server went away mid-run */
	floor_conn_close(L, c);
}

static void floor_accept_arm(struct floor_loop *L)
{
	struct io_uring_sqe *sqe = floor_sqe_get(L);
	io_uring_prep_multishot_accept(sqe, L->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud_make(OP_ACCEPT, 0));
	L->accept_armed = true;
}

static void floor_signal_arm(struct floor_loop *L)
{
	struct io_uring_sqe *sqe = floor_sqe_get(L);
	io_uring_prep_read(sqe, L->sig_fd, &L->siginfo, sizeof(L->siginfo), 0);
	io_uring_sqe_set_data64(sqe, ud_make(OP_SIGNAL, 0));
}

static void floor_server_stop(struct floor_loop *L)
{
	L->stopping = true;
	if (L->accept_armed) {
		struct io_uring_sqe *sqe = floor_sqe_get(L);
		io_uring_prep_cancel64(sqe, ud_make(OP_ACCEPT, 0), 0);
		io_uring_sqe_set_data64(sqe, ud_make(OP_CANCEL, 0));
	}
	for (uint32_t i = 0; i < L->nslots; i++)
		if (L->slots[i])
			floor_conn_close(L, L->slots[i]);
}

static void floor_dispatch(struct floor_loop *L, struct io_uring_cqe *cqe)
{
	uint32_t slot = ud_slot(cqe->user_data);
	switch (ud_op(cqe->user_data)) {
	case OP_ACCEPT:
		if (cqe->res >= 0) {
			struct floor_conn *c;
			if (L->stopping || floor_conn_new(L, cqe->res, &c) < 0)
				close(cqe->res);
			else
				floor_recv_arm(L, c);
		}
		if (!(cqe->flags & IORING_CQE_F_MORE)) {
			L->accept_armed = false;
			if (!L->stopping)
				floor_accept_arm(L);
		}
		break;
	case OP_RECV:
		floor_on_recv(L, L->slots[slot], cqe);
		break;
	case OP_SEND:
		floor_on_send(L, L->slots[slot], cqe->res);
		break;
	case OP_SIGNAL:
		floor_server_stop(L);
		break;
	case OP_CANCEL:
		break;
	}
}

/* One loop turn: submit and wait (bounded by timeout_ns if nonzero), handle every
 * CQE, give consumed buffers back, and issue the coalesced sends.  Returns
 * 0 or a negative errno from io_uring_enter (-ETIME and -EINTR are benign). */
static int floor_loop_turn(struct floor_loop *L, uint64_t timeout_ns)
{
	struct io_uring_cqe *cqe;
	int ret;
	if (timeout_ns) {
		struct __kernel_timespec ts = { .tv_sec = (long long)(timeout_ns / 1000000000ull),
						.tv_nsec = (long long)(timeout_ns % 1000000000ull) };
		ret = io_uring_submit_and_wait_timeout(&L->ring, &cqe, 1, &ts, NULL);
	} else {
		ret = io_uring_submit_and_wait(&L->ring, 1);
	}
	if (ret < 0 && ret != -ETIME && ret != -EINTR)
		return ret;
	L->now = now_ns();
	unsigned head, seen = 0;
	io_uring_for_each_cqe(&L->ring, head, cqe) {
		floor_dispatch(L, cqe);
		seen++;
	}
	io_uring_cq_advance(&L->ring, seen);
	floor_pbuf_publish(&L->pbuf);
	floor_flush_all(L);
	return 0;
}

static int floor_loop_init(struct floor_loop *L)
{
	struct io_uring_params p = { 0 };
	/* SINGLE_ISSUER: only this thread submits, so the kernel skips locking.
	 * DEFER_TASKRUN: completions run only when we enter the kernel to wait,
	 * batching them and sparing us interrupts mid-turn (needs SINGLE_ISSUER).
	 * CQSIZE: room for bursts of multishot completions. */
	unsigned flags[] = { IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
			     IORING_SETUP_SINGLE_ISSUER, 0 };
	int ret = -EINVAL;
	for (unsigned i = 0; i < 3 && ret == -EINVAL; i++) {
		memset(&p, 0, sizeof(p));
		p.flags = flags[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = RING_CQES;
		ret = io_uring_queue_init_params(RING_SQES, &L->ring, &p);
	}
	if (ret < 0)
		return ret;
	ret = floor_pbuf_init(&L->pbuf, &L->ring);
	if (ret < 0)
		io_uring_queue_exit(&L->ring);
	return ret;
}

/* Waits up to ~2 s for every conn to finish its ops, then tears down.
 * Conns still busy after that are freed anyway: the ring exit cancels their ops. */
static void floor_loop_exit(struct floor_loop *L)
{
	uint64_t give_up = now_ns() + 2000000000ull;
	while ((L->nconns || L->accept_armed) && now_ns() < give_up)
		if (floor_loop_turn(L, 100000000ull) < 0)
			break;
	for (uint32_t i = 0; i < L->nslots; i++) {
		struct floor_conn *c = L->slots[i];
		if (c) {
			c->closing = true;
			c->pending = 0;
			c->dirty = false;
			floor_conn_maybe_free(L, c);
		}
	}
	floor_pbuf_free(&L->pbuf, &L->ring);
	io_uring_queue_exit(&L->ring);
	free(L->slots);
}

/* ---- command line -------------------------------------------------------- */

struct floor_opts {
	const char *mode, *host;
	int port, cpu, conns, depth, payload;
	double duration, warmup;
	bool json;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: echo_floor serve --port P [--host 127.0.0.1] [--cpu N]\n"
		"       echo_floor load  --port P [--host 127.0.0.1] [--conns 4] [--depth 32]\n"
		"                        [--payload 32] [--duration 5] [--warmup 1] [--cpu N] [--json]\n");
	exit(2);
}

static void floor_opts_parse(struct floor_opts *o, int argc, char **argv)
{
	*o = (struct floor_opts){ .host = "127.0.0.1", .port = -1, .cpu = -1, .conns = 4,
				  .depth = 32, .payload = 32, .duration = 5, .warmup = 1 };
	if (argc < 2)
		usage();
	o->mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--json")) { o->json = true; continue; }
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--port")) o->port = atoi(v);
		else if (!strcmp(a, "--host")) o->host = v;
		else if (!strcmp(a, "--cpu")) o->cpu = atoi(v);
		else if (!strcmp(a, "--conns")) o->conns = atoi(v);
		else if (!strcmp(a, "--depth")) o->depth = atoi(v);
		else if (!strcmp(a, "--payload")) o->payload = atoi(v);
		else if (!strcmp(a, "--duration")) o->duration = atof(v);
		else if (!strcmp(a, "--warmup")) o->warmup = atof(v);
		else usage();
	}
	if (o->port < 0 || o->port > 65535 || o->conns < 1 || o->depth < 1 || o->payload < 0 ||
	    (unsigned)o->payload > FRAME_MAX || o->duration <= 0 || o->warmup < 0)
		usage();
}

static int floor_cpu_pin(int cpu)
{
	if (cpu < 0)
		return 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) < 0 ? -errno : 0;
}

static int floor_sockaddr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		*len = sizeof(*in4);
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*in6);
	} else {
		return -EINVAL;
	}
	return 0;
}

static int floor_serve(const struct floor_opts *o)
{
	static struct floor_loop L;
	struct sockaddr_storage ss;
	socklen_t sl;
	int ret = floor_sockaddr(o->host, o->port, &ss, &sl);
	if (ret < 0)
		return ret;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	/* Signals arrive through a signalfd read on the ring: no race between a
	 * flag check and the wait.  A shell starts background jobs with SIGINT
	 * ignored, and ignored signals never reach a signalfd: restore defaults. */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	L.sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);
	L.listen_fd = fd;
	if (L.sig_fd < 0 || (ret = floor_loop_init(&L)) < 0) {
		ret = L.sig_fd < 0 ? -errno : ret;
		if (L.sig_fd >= 0)
			close(L.sig_fd);
		close(fd);
		return ret;
	}
	floor_accept_arm(&L);
	floor_signal_arm(&L);
	int port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						  : ((struct sockaddr_in6 *)&ss)->sin6_port);
	printf("listening on %s:%d\n", o->host, port);
	fflush(stdout);
	while (!L.stopping && (ret = floor_loop_turn(&L, 0)) == 0)
		;
	if (!L.stopping)
		floor_server_stop(&L);
	floor_loop_exit(&L);
	close(L.sig_fd);
	close(fd);
	return ret;
}

static int floor_load(const struct floor_opts *o)
{
	static struct floor_loop L;
	struct sockaddr_storage ss;
	socklen_t sl;
	int ret = floor_sockaddr(o->host, o->port, &ss, &sl);
	if (ret < 0)
		return ret;
	L.is_client = true;
	L.depth = (uint32_t)o->depth;
	L.payload = (uint32_t)o->payload;
	L.listen_fd = L.sig_fd = -1;
	if ((ret = floor_loop_init(&L)) < 0)
		return ret;
	L.now = now_ns();
	L.win_start = L.now + (uint64_t)(o->warmup * 1e9);
	L.win_end = L.win_start + (uint64_t)(o->duration * 1e9);
	for (int i = 0; i < o->conns && ret == 0; i++) {
		struct floor_conn *c;
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sl) < 0) {
			ret = -errno;
			if (fd >= 0)
				close(fd);
			break;
		}
		if ((ret = floor_conn_new(&L, fd, &c)) < 0) {
			close(fd);
			break;
		}
		c->ts = calloc(L.depth, sizeof(*c->ts));
		c->tmpl = malloc(FRAME_HDR + L.payload);
		if (!c->ts || !c->tmpl) {
			ret = -ENOMEM;
			break;
		}
		be32_store(c->tmpl, L.payload);
		for (uint32_t j = 0; j < L.payload; j++)
			c->tmpl[FRAME_HDR + j] = (uint8_t)(j * 131 + i * 7 + 1);
		floor_recv_arm(&L, c);
		for (uint32_t j = 0; j < L.depth && ret == 0; j++)
			ret = floor_client_send_frame(&L, c);
	}
	if (ret == 0)
		floor_flush_all(&L);
	while (ret == 0 && L.now < L.win_end && L.nconns == (uint32_t)o->conns)
		ret = floor_loop_turn(&L, L.win_end - L.now);
	if (L.nconns != (uint32_t)o->conns && ret == 0)
		ret = -ECONNRESET;
	L.stopping = true;
	for (uint32_t i = 0; i < L.nslots; i++)
		if (L.slots[i])
			floor_conn_close(&L, L.slots[i]);
	floor_loop_exit(&L);
	if (ret < 0)
		return ret;

	double secs = (double)(L.win_end - L.win_start) / 1e9;
	double cps = (double)L.hist.count / secs;
	double mbs = cps * 2.0 * L.payload / 1e6;
	double p50 = floor_hist_quantile_us(&L.hist, 0.50), p90 = floor_hist_quantile_us(&L.hist, 0.90);
	double p99 = floor_hist_quantile_us(&L.hist, 0.99), p999 = floor_hist_quantile_us(&L.hist, 0.999);
	double max = (double)L.hist.max / 1e3;
	if (o->json)
		printf("{\"workload\":\"floor\",\"conns\":%d,\"depth\":%d,\"payload\":%d,"
		       "\"calls_per_sec\":%.0f,\"mb_per_sec\":%.2f,\"p50_us\":%.2f,\"p90_us\":%.2f,"
		       "\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f,\"errors\":%llu}\n",
		       o->conns, o->depth, o->payload, cps, mbs, p50, p90, p99, p999, max,
		       (unsigned long long)L.errors);
	else
		printf("floor conns=%d depth=%d payload=%d: calls/s=%.0f, MB/s=%.2f, p50=%.1fus "
		       "p90=%.1fus p99=%.1fus p999=%.1fus max=%.1fus, errors=%llu\n",
		       o->conns, o->depth, o->payload, cps, mbs, p50, p90, p99, p999, max,
		       (unsigned long long)L.errors);
	return L.errors ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct floor_opts o;
	floor_opts_parse(&o, argc, argv);
	int ret = floor_cpu_pin(o.cpu);
	if (ret < 0) {
		fprintf(stderr, "echo_floor: --cpu %d: %s\n", o.cpu, strerror(-ret));
		return 1;
	}
	if (!strcmp(o.mode, "serve"))
		ret = floor_serve(&o);
	else if (!strcmp(o.mode, "load"))
		ret = floor_load(&o);
	else
		usage();
	if (ret < 0) {
		fprintf(stderr, "echo_floor %s: %s\n", o.mode, strerror(-ret));
		return 1;
	}
	return ret;
}
