/*
 * test_backend.c — choosing the I/O backend (backend.c), each case in a forked child so
 * it starts from a clean process:
 *   1. a seccomp filter makes io_uring_setup fail with EPERM (as Docker's default profile
 *      does): loops fall back to epoll, say so once on stderr, and calls succeed;
 *   1b. the same with ENOSYS (a kernel built without io_uring, gVisor): epoll again, and
 *      the line on stderr names that reason;
 *   2. the same with io_uring_register refused (ring set up, buffer ring / opcode probe
 *      refused, as on kernels too old for them): epoll again;
 *   3. that filter with SWIFTRPC_BACKEND=uring: the start fails with -EPERM, no fallback;
 *   4. SWIFTRPC_BACKEND=epoll forces epoll; an unknown value is -EINVAL;
 *   5. with nothing forced, io_uring runs exactly when this kernel lets a ring start.
 * Cases 1-3 need seccomp (x86_64 or aarch64); the test skips if it cannot install a filter.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <liburing.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"

#if defined(__x86_64__)
#define THIS_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_ARCH AUDIT_ARCH_AARCH64
#endif

/* ---------------------------------------------------------------- seccomp */

#define NO_SECCOMP 3 /* a child's exit status: no filter could be installed */

/* Makes syscall `nr` fail with `err` in this process from now on; everything else runs. */
static int refuse_syscall(long nr, int err)
{
#ifdef THIS_ARCH
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof(filter) / sizeof(filter[0]), .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return -errno;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
        return -errno;
    return 0;
#else
    (void)nr;
    (void)err;
    return -ENOTSUP;
#endif
}

/* -------------------------------------------------------- server + client */

static crpc_server *g_srv;

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    if (req->msg.type != CRPC_MSG_REQUEST)
        return;
    const uint8_t *arg;
    size_t arg_len;
    crpc_reply r = {0};
    CHECK_EQ(crpc_msgpack_array_elem(req->msg.body, req->msg.body_len, 0, &arg, &arg_len), 0);
    r.result = arg;
    r.result_len = (uint32_t)arg_len;
    CHECK_EQ(crpc_server_reply(g_srv, req->conn, req->msg.msgid, &r), 0);
}

static atomic_int answered, good;

static void on_reply(void *ctx, const crpc_result *res)
{
    uintptr_t n = (uintptr_t)ctx;
    /* the echo of [n] is the positive fixint n */
    if (res->status == 0 && res->error_code == 0 && res->result_len == 1 && res->result[0] == n)
        atomic_fetch_add(&good, 1);
    atomic_fetch_add(&answered, 1);
}

/* A server (2 loops) and a client loop; 100 echo calls must all succeed, on `want`. */
static void serve_and_call(const char *want)
{
    crpc_server_config cfg = {.loops = 2, .on_request = on_request};
    CHECK_EQ(crpc_server_start(&cfg, &g_srv), 0);
    CHECK(crpc_server_backend(g_srv) && strcmp(crpc_server_backend(g_srv), want) == 0);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK(crpc_loop_backend(loop) == NULL); /* not started yet */
    CHECK_EQ(crpc_loop_start(loop), 0);
    CHECK(strcmp(crpc_loop_backend(loop), want) == 0);
    crpc_client *c;
    CHECK_EQ(crpc_client_connect(loop, "127.0.0.1", crpc_server_port(g_srv), NULL, &c), 0);
    for (uintptr_t i = 0; i < 100; i++) {
        uint8_t params[2] = {0x91, (uint8_t)i};
        crpc_call call = {.method = "Test.Echo", .method_len = 9, .params = params, .params_len = 2};
        CHECK_EQ(crpc_client_call(c, &call, on_reply, (void *)i, NULL), 0);
    }
    for (int i = 0; i < 5000 && atomic_load(&answered) < 100; i++)
        usleep(1000);
    CHECK_EQ(atomic_load(&good), 100);
    crpc_client_destroy(c);
    CHECK_EQ(crpc_loop_stop(loop), 0);
    crpc_loop_destroy(loop);
    crpc_server_destroy(g_srv);
}

/* ------------------------------------------------------------------ cases */

static void case_setup_refused(void)
{
    if (refuse_syscall(__NR_io_uring_setup, EPERM))
        exit(NO_SECCOMP);
    serve_and_call("epoll");
}

static void case_setup_missing(void)
{
    if (refuse_syscall(__NR_io_uring_setup, ENOSYS))
        exit(NO_SECCOMP);
    serve_and_call("epoll");
}

static void case_register_refused(void)
{
    if (refuse_syscall(__NR_io_uring_register, EINVAL))
        exit(NO_SECCOMP);
    serve_and_call("epoll");
}

static void case_forced_uring_refused(void)
{
    if (refuse_syscall(__NR_io_uring_setup, EPERM))
        exit(NO_SECCOMP);
    setenv("SWIFTRPC_BACKEND", "uring", 1);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), -EPERM);
    CHECK(crpc_loop_backend(loop) == NULL);
    crpc_loop_destroy(loop);
    crpc_server_config cfg = {.loops = 1, .on_request = on_request};
    CHECK_EQ(crpc_server_start(&cfg, &g_srv), -EPERM);
}

static void case_forced_epoll(void)
{
    setenv("SWIFTRPC_BACKEND", "epoll", 1);
    serve_and_call("epoll");
}

static void case_bad_value(void)
{
    setenv("SWIFTRPC_BACKEND", "epol", 1);
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    CHECK_EQ(crpc_loop_start(loop), -EINVAL);
    crpc_loop_destroy(loop);
}

static void case_auto(void)
{
    struct io_uring ring;
    int ok = io_uring_queue_init(8, &ring, 0) == 0;
    if (ok)
        io_uring_queue_exit(&ring);
    serve_and_call(ok ? "io_uring" : "epoll");
}

/* Runs `fn` in a child with SWIFTRPC_BACKEND unset (unless fn sets it) and its stderr
 * captured. Returns the child's exit status; *log gets what it wrote on stderr. */
static int run_child(void (*fn)(void), char *log, size_t cap)
{
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    fflush(stdout); /* or the child would print what is buffered a second time */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        close(fds[1]);
        unsetenv("SWIFTRPC_BACKEND");
        fn();
        exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    while ((n = read(fds[0], log + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    log[len] = 0;
    close(fds[0]);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Runs a case; fails (showing the child's stderr) unless it exits 0. */
static int expect(const char *name, void (*fn)(void), char *log, size_t cap)
{
    int rc = run_child(fn, log, cap);
    if (rc != 0 && rc != NO_SECCOMP) {
        fprintf(stderr, "%s: child exited %d; its stderr:\n%s", name, rc, log);
        exit(1);
    }
    return rc;
}

int main(void)
{
    static char log[1 << 16];
    int no_seccomp = 0;

    if (expect("io_uring_setup refused", case_setup_refused, log, sizeof(log)) == NO_SECCOMP) {
        no_seccomp = 1;
    } else {
        /* three loops started, one line said why they run on epoll */
        CHECK_EQ(count(log, "crpc: I/O backend epoll (io_uring refused: Operation not permitted)\n"), 1);
        CHECK_EQ(count(log, "crpc: "), 1);
        printf("backend: io_uring_setup refused by seccomp: fell back to epoll, 100 calls answered\n");
        expect("io_uring_setup missing", case_setup_missing, log, sizeof(log));
        CHECK_EQ(count(log, "crpc: I/O backend epoll (io_uring refused: Function not implemented)\n"), 1);
        CHECK_EQ(count(log, "crpc: "), 1);
        printf("backend: io_uring_setup missing (ENOSYS): fell back to epoll, 100 calls answered\n");
        expect("io_uring_register refused", case_register_refused, log, sizeof(log));
        CHECK_EQ(count(log, "crpc: I/O backend epoll (io_uring refused: Invalid argument)\n"), 1);
        printf("backend: io_uring_register refused by seccomp: fell back to epoll\n");
        expect("forced io_uring refused", case_forced_uring_refused, log, sizeof(log));
        CHECK_EQ(count(log, "crpc: I/O backend epoll"), 0);
        printf("backend: SWIFTRPC_BACKEND=uring refused: -EPERM, no fallback\n");
    }

    expect("forced epoll", case_forced_epoll, log, sizeof(log));
    CHECK_EQ(count(log, "crpc: I/O backend epoll (forced by SWIFTRPC_BACKEND=epoll)\n"), 1);
    expect("bad value", case_bad_value, log, sizeof(log));
    CHECK_EQ(count(log, "SWIFTRPC_BACKEND=epol is not one of"), 1);
    expect("auto", case_auto, log, sizeof(log));
    CHECK_EQ(count(log, "crpc: I/O backend "), 1);
    printf("backend: forced epoll, unknown value refused, automatic choice: %s", log + 6);

    if (no_seccomp) {
        printf("SKIP: seccomp filters cannot be installed here: the fallback was not tried\n");
        return SKIP_EXIT;
    }
    printf("PASS test_backend\n");
    return 0;
}
