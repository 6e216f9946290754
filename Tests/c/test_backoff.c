/*
 * test_backoff.c — a server short of file descriptors. Its process may open only two more
 * sockets than it needs to run; six clients connect and each sends rpc.ping. Two are
 * answered at once; the third waits, and the server must neither spin (its CPU time is
 * measured) nor stop for good: each time two clients hang up, the next two are accepted
 * (the janitor re-arms accepting within a second) and answered. Twice:
 *   - with no reserve: accepting the third fails with EMFILE;
 *   - with a reserve of 8 descriptors left for the rest of the process: the server stops
 *     before it, and the process never holds more than its limit minus the reserve.
 * Both limits are hard ones, so the server cannot raise them. Runs on each backend (epoll's
 * accept4 loop, io_uring's accept).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crpc.h"

#define CLIENTS 6
#define SPARE 2   /* descriptors the server has for connections */
#define RESERVE 8 /* the second run's reserve */

static crpc_server *srv;

static void on_request(void *user, const crpc_request *req)
{
    (void)user;
    (void)req; /* only rpc.ping comes, and the core answers it */
}

/* The server process: squeezes its descriptor limit so that, once the server holds its
 * own (listener, eventfd, ring or epoll set), exactly SPARE numbers are left. */
static void serve(int ready_fd, int reserve)
{
    const int own = 3;
    struct rlimit rl;
    int limit = 0, free_fds = 0;
    while (free_fds < own + SPARE + reserve) { /* the lowest numbers are handed out first */
        if (fcntl(limit, F_GETFD) < 0 && errno == EBADF)
            free_fds++;
        limit++;
    }
    rl.rlim_cur = rl.rlim_max = (rlim_t)limit;
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    crpc_server_config cfg = {.loops = 1, .on_request = on_request,
                              .fd_reserve = reserve ? reserve : CRPC_FD_RESERVE_NONE};
    int err = crpc_server_start(&cfg, &srv);
    uint16_t port = err ? 0 : crpc_server_port(srv);
    if (!err) { /* the limits it reports are the ones it was given */
        crpc_server_limits lim;
        crpc_server_get_limits(srv, &lim);
        if (lim.fd_limit != (uint64_t)limit || lim.fd_reserve != (uint32_t)reserve || lim.max_connections != SPARE) {
            fprintf(stderr, "limits: fd_limit %llu (want %d), reserve %u, max_connections %u (want %d)\n",
                    (unsigned long long)lim.fd_limit, limit, lim.fd_reserve, lim.max_connections, SPARE);
            _exit(1); /* the parent's read of the port fails */
        }
    }
    if (write(ready_fd, &port, sizeof(port)) != sizeof(port))
        _exit(1);
    pause();
    _exit(0);
}

static int connect_to(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    /* [0, 1, "rpc.ping", []] */
    static const uint8_t ping[] = {0, 0, 0, 13, 0x94, 0x00, 0x01, 0xa8, 'r', 'p', 'c', '.',
                                   'p', 'i', 'n', 'g', 0x90};
    CHECK_EQ(write(fd, ping, sizeof(ping)), (long)sizeof(ping));
    return fd;
}

/* 1 when the ping's reply [1, 1, nil, nil] arrives within timeout_ms. */
static int answered(int fd, int timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    static const uint8_t want[] = {0, 0, 0, 5, 0x94, 0x01, 0x01, 0xc0, 0xc0};
    uint8_t got[sizeof(want)];
    size_t n = 0;
    while (n < sizeof(got)) {
        ssize_t r = read(fd, got + n, sizeof(got) - n);
        if (r <= 0)
            return 0;
        n += (size_t)r;
    }
    CHECK(memcmp(got, want, sizeof(want)) == 0);
    return 1;
}

/* The child's CPU time (user + system) in ms, from /proc. */
static long cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    CHECK(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* fields after the command name */
    CHECK(p);
    unsigned long utime, stime;
    CHECK_EQ(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime), 2);
    return (long)((utime + stime) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

/* Descriptors the child holds now, numbered below `below` (the test's own process may have
 * inherited some with higher numbers, which take none the server could use). */
static int open_fds(pid_t pid, int below)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    CHECK(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.' && atoi(e->d_name) < below;
    closedir(d);
    return n;
}

static void run(int reserve)
{
    int ready[2];
    CHECK_EQ(pipe(ready), 0);
    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed check in the parent ends us too */
        close(ready[0]);
        serve(ready[1], reserve);
    }
    close(ready[1]);
    uint16_t port = 0;
    CHECK_EQ(read(ready[0], &port, sizeof(port)), (long)sizeof(port));
    if (port == 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        printf("SKIP: the server could not start (SWIFTRPC_BACKEND=uring where io_uring is refused?)\n");
        exit(SKIP_EXIT);
    }
    struct rlimit rl;
    CHECK_EQ(prlimit(child, RLIMIT_NOFILE, NULL, &rl), 0);
    int most = 0;

    int fds[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        fds[i] = connect_to(port); /* the kernel completes the handshakes: the backlog */
    long cpu_before = cpu_ms(child);
    /* Accepted in order of arrival, SPARE at a time. */
    for (int wave = 0; wave < CLIENTS / SPARE; wave++) {
        for (int i = 0; i < SPARE; i++)
            if (!answered(fds[wave * SPARE + i], 3000)) {
                fprintf(stderr, "reserve %d: client %d of wave %d not answered (%d descriptors held)\n",
                        reserve, i, wave, open_fds(child, (int)rl.rlim_cur));
                exit(1);
            }
        if (wave * SPARE + SPARE < CLIENTS)
            CHECK(!answered(fds[wave * SPARE + SPARE], 300)); /* out of descriptors */
        int held = open_fds(child, (int)rl.rlim_cur);
        most = held > most ? held : most;
        for (int i = 0; i < SPARE; i++)
            close(fds[wave * SPARE + i]); /* frees descriptors in the server */
    }
    long cpu = cpu_ms(child) - cpu_before;
    /* Three waves took at least two janitor rounds (about 2 s); a loop spinning on EMFILE
     * would burn all of it. */
    CHECK(cpu < 500);
    if (reserve)
        CHECK(most <= (int)rl.rlim_cur - reserve); /* the reserve was never touched */
    printf("backoff (%s): the server accepted %d clients %d at a time, holding at most %d of "
           "%d descriptors, using %ld ms of CPU meanwhile\n", reserve ? "reserve of 8" : "EMFILE",
           CLIENTS, SPARE, most, (int)rl.rlim_cur, cpu);
    for (int i = 0; i < CLIENTS; i++)
        close(fds[i]);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
}

int main(void)
{
    run(0);
    run(RESERVE);
    printf("PASS test_backoff\n");
    return 0;
}
