/*
 * crpc-cbench — the core measured alone, through include/crpc.h only.
 *
 *   crpc-cbench serve [--host H] [--port P] [--loops N] [--cpu C]
 *       serves Bench.Echo (returns its argument) and rpc.ping until SIGINT/SIGTERM;
 *       prints "listening on H:P" once ready.
 *   crpc-cbench load [--host H] --port P [--conns 4] [--depth 32] [--payload 32]
 *                    [--duration 5] [--warmup 1] [--cpu C] [--json]
 *       closed loop: each connection keeps `depth` Bench.Echo calls in flight, issued
 *       from completion callbacks on the loop thread; every reply is compared with
 *       its request. Prints calls/s, MB/s and latency percentiles.
 *
 * Build: part of the Swift package (`swift build -c release --product crpc-cbench`).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crpc.h"

static const char *opt_host = "127.0.0.1";
static int opt_port, opt_loops = 1, opt_cpu = -1, opt_conns = 4, opt_depth = 32, opt_json;
static long opt_payload = 32;
static double opt_duration = 5, opt_warmup = 1;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ server */

static crpc_server *srv;
static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    crpc_reply r = {0};
    const uint8_t *arg;
    size_t arg_len;
    if (req->msg.method_len == 10 && memcmp(req->msg.method, "Bench.Echo", 10) == 0) {
        if (crpc_msgpack_array_elem(req->msg.body, req->msg.body_len, 0, &arg, &arg_len) == 0) {
            r.result = arg;
            r.result_len = (uint32_t)arg_len;
        } else {
            r.error_code = CRPC_STATUS_INVALID_ARGUMENT;
            r.error_msg = "Bench.Echo takes one argument";
            r.error_msg_len = (uint32_t)strlen(r.error_msg);
        }
    } else {
        r.error_code = CRPC_STATUS_UNIMPLEMENTED;
        r.error_msg = "no such method";
        r.error_msg_len = (uint32_t)strlen(r.error_msg);
    }
    crpc_server_reply(req->server, req->conn, req->msg.msgid, &r);
}

static int serve(void)
{
    crpc_server_config cfg = {.host = opt_host, .port = (uint16_t)opt_port,
                              .loops = (unsigned)opt_loops, .on_request = on_request};
    if (opt_cpu >= 0) {
        cfg.pin_loops = 1;
        cfg.first_cpu = opt_cpu;
    }
    int err = crpc_server_start(&cfg, &srv);
    if (err) {
        fprintf(stderr, "crpc-cbench: cannot serve: %s\n", crpc_strerror(err));
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("listening on %s:%u\n", opt_host, crpc_server_port(srv));
    fflush(stdout);
    while (!stop_flag)
        pause();
    crpc_server_destroy(srv);
    return 0;
}

/* -------------------------------------------------------------- histogram */

/* Log-linear buckets over nanoseconds: 64 sub-buckets per power of two (<1.6% error). */
#define SUB_BITS 6
#define BUCKETS (64 * 64)
static uint64_t hist[BUCKETS];
static uint64_t hist_max;

static unsigned bucket_of(uint64_t v)
{
    if (v < (1u << SUB_BITS))
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (e - SUB_BITS)) & ((1u << SUB_BITS) - 1);
    return ((e - SUB_BITS + 1) << SUB_BITS) + sub;
}

static uint64_t bucket_value(unsigned b)
{
    if (b < (1u << SUB_BITS))
        return b;
    unsigned e = (b >> SUB_BITS) + SUB_BITS - 1;
    uint64_t sub = b & ((1u << SUB_BITS) - 1);
    return ((1ull << SUB_BITS) | sub) << (e - SUB_BITS);
}

static double percentile_us(double p, uint64_t total)
{
    uint64_t want = (uint64_t)ceil(p * (double)total), seen = 0;
    for (unsigned b = 0; b < BUCKETS; b++) {
        seen += hist[b];
        if (seen >= want && hist[b])
            return (double)bucket_value(b) / 1000.0;
    }
    return (double)hist_max / 1000.0;
}

/* ------------------------------------------------------------------- load */

typedef struct slot {
    crpc_client *client;
    uint64_t sent_at;
    uint32_t seq;
} slot;

static uint8_t *params;        /* [bin payload], re-used by every call */
static size_t params_len, payload_off;
static atomic_int measuring, running;
static uint64_t calls, errors;  /* loop thread only */
static crpc_loop *client_loop;   /* timestamps come from its iteration clock, as in the floor */

static void on_reply(void *ctx, const crpc_result *res);

static void issue(slot *s)
{
    s->seq++;
    memcpy(params + payload_off, &s->seq, opt_payload >= 4 ? 4 : (size_t)opt_payload);
    crpc_call call = {.method = "Bench.Echo", .method_len = 10, .params = params,
                      .params_len = (uint32_t)params_len};
    s->sent_at = crpc_loop_now_ns(client_loop);
    if (crpc_client_call(s->client, &call, on_reply, s, NULL) != 0)
        errors++;
}

static void on_reply(void *ctx, const crpc_result *res)
{
    slot *s = ctx;
    uint64_t lat = crpc_loop_now_ns(client_loop) - s->sent_at;
    /* The echo must be the very bin we sent: header and payload, seq included. */
    int ok = res->status == 0 && res->error_code == 0 &&
             res->result_len == params_len - 1 &&
             memcmp(res->result, params + 1, params_len - 1 - (size_t)opt_payload) == 0 &&
             memcmp(res->result + (payload_off - 1), &s->seq, opt_payload >= 4 ? 4 : (size_t)opt_payload) == 0;
    if (atomic_load_explicit(&measuring, memory_order_relaxed)) {
        if (!ok)
            errors++;
        calls++;
        hist[bucket_of(lat)]++;
        if (lat > hist_max)
            hist_max = lat;
    }
    if (res->status == 0 && atomic_load_explicit(&running, memory_order_relaxed))
        issue(s);
}

static void build_params(void)
{
    /* 0x91 then bin8/16/32 header then payload bytes (a repeating pattern). */
    size_t hdr = opt_payload < 256 ? 2 : opt_payload < 65536 ? 3 : 5;
    params_len = 1 + hdr + (size_t)opt_payload;
    params = malloc(params_len);
    params[0] = 0x91;
    uint32_t n = (uint32_t)opt_payload;
    if (hdr == 2) { params[1] = 0xc4; params[2] = (uint8_t)n; }
    else if (hdr == 3) { params[1] = 0xc5; params[2] = (uint8_t)(n >> 8); params[3] = (uint8_t)n; }
    else { params[1] = 0xc6; params[2] = (uint8_t)(n >> 24); params[3] = (uint8_t)(n >> 16);
           params[4] = (uint8_t)(n >> 8); params[5] = (uint8_t)n; }
    payload_off = 1 + hdr;
    for (long i = 0; i < opt_payload; i++)
        params[payload_off + (size_t)i] = (uint8_t)(i * 31 + 7);
}

static void start_all(void *arg)
{
    slot *slots = arg;
    for (int i = 0; i < opt_conns * opt_depth; i++)
        issue(&slots[i]);
}

static int load(void)
{
    crpc_loop_config lc = {.cpu = opt_cpu, .pin = opt_cpu >= 0};
    crpc_loop *loop;
    int err = crpc_loop_create(&lc, &loop);
    if (!err)
        err = crpc_loop_start(loop);
    if (err) {
        fprintf(stderr, "crpc-cbench: cannot start a loop: %s\n", crpc_strerror(err));
        return 1;
    }
    client_loop = loop;
    build_params();
    slot *slots = calloc((size_t)(opt_conns * opt_depth), sizeof(slot));
    crpc_client **clients = calloc((size_t)opt_conns, sizeof(*clients));
    for (int c = 0; c < opt_conns; c++) {
        err = crpc_client_connect(loop, opt_host, (uint16_t)opt_port, NULL, &clients[c]);
        if (err) {
            fprintf(stderr, "crpc-cbench: connect %s:%d: %s\n", opt_host, opt_port, crpc_strerror(err));
            return 1;
        }
        for (int d = 0; d < opt_depth; d++)
            slots[c * opt_depth + d].client = clients[c];
    }
    atomic_store(&running, 1);
    crpc_loop_post(loop, start_all, slots); /* every call then runs on the loop thread */
    usleep((useconds_t)(opt_warmup * 1e6));
    struct timespec cpu0;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu0);
    uint64_t t0 = now_ns();
    atomic_store(&measuring, 1);
    usleep((useconds_t)(opt_duration * 1e6));
    atomic_store(&measuring, 0);
    uint64_t t1 = now_ns();
    atomic_store(&running, 0);
    usleep(100000); /* let calls in flight drain */
    for (int c = 0; c < opt_conns; c++)
        crpc_client_destroy(clients[c]);
    crpc_loop_stop(loop);
    crpc_loop_destroy(loop);

    double secs = (double)(t1 - t0) / 1e9;
    double rate = (double)calls / secs;
    double mbs = rate * (double)opt_payload * 2 / 1e6;
    const char *fmt = opt_json
        ? "{\"workload\":\"crpc-cbench\",\"conns\":%d,\"depth\":%d,\"payload\":%ld,"
          "\"calls_per_sec\":%.0f,\"mb_per_sec\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
          "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,\"errors\":%llu}\n"
        : "crpc-cbench conns=%d depth=%d payload=%ld: calls/s=%.0f MB/s=%.1f "
          "p50=%.1fus p90=%.1fus p99=%.1fus p999=%.1fus max=%.1fus errors=%llu\n";
    printf(fmt, opt_conns, opt_depth, opt_payload, rate, mbs, percentile_us(0.5, calls),
           percentile_us(0.9, calls), percentile_us(0.99, calls), percentile_us(0.999, calls),
           (double)hist_max / 1000.0, (unsigned long long)errors);
    free(slots);
    free(clients);
    free(params);
    return errors || calls == 0 ? 1 : 0;
}

static void usage(void)
{
    fputs("usage: crpc-cbench serve [--host H] [--port P] [--loops N] [--cpu C]\n"
          "       crpc-cbench load --port P [--host H] [--conns 4] [--depth 32] [--payload 32]\n"
          "                        [--duration 5] [--warmup 1] [--cpu C] [--json]\n", stderr);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    static const struct option opts[] = {
        {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"loops", 1, 0, 'l'}, {"cpu", 1, 0, 'c'},
        {"conns", 1, 0, 'n'}, {"depth", 1, 0, 'd'}, {"payload", 1, 0, 's'},
        {"duration", 1, 0, 't'}, {"warmup", 1, 0, 'w'}, {"json", 0, 0, 'j'}, {0, 0, 0, 0}};
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 'l': opt_loops = atoi(optarg); break;
        case 'c': opt_cpu = atoi(optarg); break;
        case 'n': opt_conns = atoi(optarg); break;
        case 'd': opt_depth = atoi(optarg); break;
        case 's': opt_payload = atol(optarg); break;
        case 't': opt_duration = atof(optarg); break;
        case 'w': opt_warmup = atof(optarg); break;
        case 'j': opt_json = 1; break;
        default: usage(); return 2;
        }
    }
    if (strcmp(argv[1], "serve") == 0)
        return serve();
    if (strcmp(argv[1], "load") == 0 && opt_port > 0 && opt_conns > 0 && opt_depth > 0 &&
        opt_payload >= 0)
        return load();
    usage();
    return 2;
}
