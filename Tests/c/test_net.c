/*
 * test_net.c — the socket helpers of net.c, on real sockets (no loop, no server):
 *   1. host syntax: crpc_net_is_unix, brackets, bad hosts refused with -EINVAL;
 *   2. listen_all "127.0.0.1" on port 0: one fd, connect, accept, peer_address both ways;
 *   3. "localhost": every address it resolves to, one port (::1 beside 127.0.0.1 where
 *      the hosts file lists both; else the pair is bound by hand and the reason printed);
 *      a second call on that port (the next loop's) binds beside it with SO_REUSEPORT;
 *   4. "::" and NULL: one dual-stack socket taking 127.0.0.1 (shown as IPv4) and ::1;
 *   5. unix:/tmp/...: mode 0600, connect, accept, peer_address, peer_cred; a live path is
 *      refused (-EADDRINUSE, with the message), a stale file replaced, a regular file
 *      refused (-EEXIST) and kept, unlink_unix; a 107-byte path works, 108 is too long;
 *   6. unix:@name: listen, connect, peer_address, -EADDRINUSE when taken, free once closed;
 *      a connect to a full backlog times out.
 * IPv6 parts skip (saying why) where ::1 cannot be bound; the rest always runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "net.h"

#define CHECK_STR(a, b)                                                                \
    do {                                                                               \
        const char *_a = (a), *_b = (b);                                               \
        if (strcmp(_a, _b) != 0) {                                                     \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
                    #a, _a, _b);                                                       \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static int family_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    CHECK(getsockname(fd, (struct sockaddr *)&ss, &len) == 0);
    return ss.ss_family;
}

static uint16_t port_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    CHECK(getsockname(fd, (struct sockaddr *)&ss, &len) == 0);
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

static int v6only_of(int fd)
{
    int v = -1;
    socklen_t len = sizeof(v);
    CHECK(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len) == 0);
    return v;
}

/* Connects to host:port, accepts on lfd, sends a byte each way. Returns the accepted fd;
 * *client receives the client's. */
static int connect_accept(int lfd, const char *host, uint16_t port, int *client)
{
    int c = crpc_net_connect(host, port, 2000);
    if (c < 0)
        fprintf(stderr, "connect %s port %u: %s\n", host, port, strerror(-c));
    CHECK(c >= 0);
    int a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    CHECK(a >= 0);
    char x = 'x';
    CHECK_EQ(write(c, &x, 1), 1);
    CHECK_EQ(read(a, &x, 1), 1);
    CHECK_EQ(write(a, &x, 1), 1);
    CHECK_EQ(read(c, &x, 1), 1);
    *client = c;
    return a;
}

/* What the server side shows: "<loopback>:<client's port>". */
static void check_tcp_peer(int a, int c, const char *ip, bool v6)
{
    char want[CRPC_NET_ADDR_MAX], got[CRPC_NET_ADDR_MAX];
    snprintf(want, sizeof(want), v6 ? "[%s]:%u" : "%s:%u", ip, port_of(c));
    CHECK_EQ(crpc_net_peer_address(a, got, sizeof(got)), CRPC_NET_TCP);
    CHECK_STR(got, want);
}

static bool resolves_to(const char *name, int family)
{
    struct addrinfo hints = {.ai_family = family, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(name, NULL, &hints, &ai) != 0)
        return false;
    freeaddrinfo(ai);
    return true;
}

static void test_syntax(void)
{
    CHECK(crpc_net_is_unix("unix:/tmp/x.sock"));
    CHECK(crpc_net_is_unix("unix:@name"));
    CHECK(!crpc_net_is_unix("localhost"));
    CHECK(!crpc_net_is_unix("unixhost"));
    CHECK(!crpc_net_is_unix(NULL));
    int fds[CRPC_NET_MAX_LISTEN];
    uint16_t port;
    CHECK_EQ(crpc_net_listen_all("[::1", 0, fds, CRPC_NET_MAX_LISTEN, &port), -EINVAL);
    CHECK_EQ(crpc_net_listen_all("[]", 0, fds, CRPC_NET_MAX_LISTEN, &port), -EINVAL);
    CHECK_EQ(crpc_net_listen_all("[localhost]", 0, fds, CRPC_NET_MAX_LISTEN, &port), -EINVAL);
    CHECK_EQ(crpc_net_listen_all("[127.0.0.1]", 0, fds, CRPC_NET_MAX_LISTEN, &port), -EINVAL);
    CHECK_EQ(crpc_net_listen_all("unix:/tmp/x.sock", 0, fds, CRPC_NET_MAX_LISTEN, &port), -EINVAL);
    CHECK_EQ(crpc_net_listen_all("127.0.0.1", 0, fds, 0, &port), -EINVAL);
    CHECK_EQ(crpc_net_listen_all("no-such-host.invalid", 0, fds, CRPC_NET_MAX_LISTEN, &port), -EINVAL);
    char msg[256] = "";
    CHECK_EQ(crpc_net_listen_unix("localhost", 0, msg, sizeof(msg)), -EINVAL);
    CHECK(strstr(msg, "localhost") != NULL);
    CHECK_EQ(crpc_net_listen_unix("unix:", 0, msg, sizeof(msg)), -EINVAL);
    CHECK_EQ(crpc_net_listen_unix("unix:@", 0, msg, sizeof(msg)), -EINVAL);
    CHECK_EQ(crpc_net_connect("unix:", 0, 100), -EINVAL);
}

static void test_v4(void)
{
    int fds[CRPC_NET_MAX_LISTEN], c;
    uint16_t port = 0;
    CHECK_EQ(crpc_net_listen_all("127.0.0.1", 0, fds, CRPC_NET_MAX_LISTEN, &port), 1);
    CHECK(port != 0);
    CHECK_EQ(port_of(fds[0]), port);
    int a = connect_accept(fds[0], "127.0.0.1", port, &c);
    check_tcp_peer(a, c, "127.0.0.1", false);
    char got[CRPC_NET_ADDR_MAX], want[32];
    snprintf(want, sizeof(want), "127.0.0.1:%u", port);
    CHECK_EQ(crpc_net_peer_address(c, got, sizeof(got)), CRPC_NET_TCP);
    CHECK_STR(got, want);
    CHECK_EQ(crpc_net_peer_address(c, got, 4), -ENOSPC);
    CHECK_EQ(crpc_net_peer_address(fds[0], got, sizeof(got)), -ENOTCONN);
    int32_t uid;
    CHECK_EQ(crpc_net_peer_cred(a, &uid, NULL, NULL), -EOPNOTSUPP);
    crpc_net_tune(a);
    /* The old single-address entry point still works. */
    uint16_t port2 = 0;
    int l = crpc_net_listen("127.0.0.1", 0, &port2);
    CHECK(l >= 0 && port2 != 0);
    close(l);
    close(a);
    close(c);
    close(fds[0]);
}

/* "::1" and "127.0.0.1" on one port, fds from whichever calls bound them. */
static void check_pair(int fd4, int fd6, uint16_t port)
{
    CHECK_EQ(family_of(fd4), AF_INET);
    CHECK_EQ(family_of(fd6), AF_INET6);
    CHECK_EQ(v6only_of(fd6), 1);
    CHECK_EQ(port_of(fd4), port);
    CHECK_EQ(port_of(fd6), port);
    int c, a = connect_accept(fd6, "[::1]", port, &c);
    check_tcp_peer(a, c, "::1", true);
    char got[CRPC_NET_ADDR_MAX], want[32];
    snprintf(want, sizeof(want), "[::1]:%u", port);
    CHECK_EQ(crpc_net_peer_address(c, got, sizeof(got)), CRPC_NET_TCP);
    CHECK_STR(got, want);
    close(a);
    close(c);
    a = connect_accept(fd4, "127.0.0.1", port, &c);
    check_tcp_peer(a, c, "127.0.0.1", false);
    close(a);
    close(c);
}

static void test_localhost(bool have_v6)
{
    int fds[CRPC_NET_MAX_LISTEN], more[CRPC_NET_MAX_LISTEN];
    uint16_t port = 0, port2 = 0;
    bool lists_v6 = resolves_to("localhost", AF_INET6), lists_v4 = resolves_to("localhost", AF_INET);
    int n = crpc_net_listen_all("localhost", 0, fds, CRPC_NET_MAX_LISTEN, &port);
    CHECK_EQ(n, (lists_v4 ? 1 : 0) + (lists_v6 && have_v6 ? 1 : 0));
    /* The next loop's call: the same addresses on the port the first one bound. */
    CHECK_EQ(crpc_net_listen_all("localhost", port, more, CRPC_NET_MAX_LISTEN, &port2), n);
    CHECK_EQ(port2, port);
    for (int i = 0; i < n; i++) /* else the kernel may hand the connections below to them */
        close(more[i]);
    int fd4 = -1, fd6 = -1;
    for (int i = 0; i < n; i++)
        *(family_of(fds[i]) == AF_INET ? &fd4 : &fd6) = fds[i];
    if (fd4 >= 0 && fd6 >= 0) {
        check_pair(fd4, fd6, port);
    } else {
        int c, a;
        if (fd4 >= 0) {
            a = connect_accept(fd4, "localhost", port, &c);
            close(a);
            close(c);
        }
        if (!have_v6) {
            printf("net: localhost: the IPv6 half skipped (::1 cannot be bound)\n");
        } else {
            printf("net: localhost resolves to %s only here: binding ::1 and 127.0.0.1 "
                   "side by side by hand\n", lists_v6 ? "::1" : "127.0.0.1");
            int p4[1], p6[1];
            uint16_t p = 0;
            CHECK_EQ(crpc_net_listen_all("127.0.0.1", 0, p4, 1, &p), 1);
            CHECK_EQ(crpc_net_listen_all("[::1]", p, p6, 1, &p), 1);
            check_pair(p4[0], p6[0], p);
            close(p4[0]);
            close(p6[0]);
        }
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static void test_dual_stack(const char *host, bool have_v6)
{
    int fds[CRPC_NET_MAX_LISTEN], c, a;
    uint16_t port = 0;
    int n = crpc_net_listen_all(host, 0, fds, CRPC_NET_MAX_LISTEN, &port);
    if (n < 0) { /* no IPv6 socket at all: "::" has nothing else to fall back on */
        CHECK(host && !have_v6);
        printf("net: %s cannot be bound here (%s): skipped\n", host, strerror(-n));
        return;
    }
    /* NULL: "::" taken, 0.0.0.0 from the same lookup skipped; only without any IPv6
     * socket is 0.0.0.0 bound instead. IPv6 switched off on the interfaces (no ::1) still
     * binds "::", and IPv4 reaches it. */
    CHECK_EQ(n, 1);
    bool dual = family_of(fds[0]) == AF_INET6;
    CHECK(dual || (!host && !have_v6));
    if (dual)
        CHECK_EQ(v6only_of(fds[0]), 0);
    a = connect_accept(fds[0], "127.0.0.1", port, &c);
    check_tcp_peer(a, c, "127.0.0.1", false); /* ::ffff:127.0.0.1, shown as IPv4 */
    close(a);
    close(c);
    if (have_v6) {
        a = connect_accept(fds[0], "::1", port, &c);
        check_tcp_peer(a, c, "::1", true);
        close(a);
        close(c);
    }
    /* The next loop's call binds beside it. */
    int more[CRPC_NET_MAX_LISTEN];
    uint16_t port2;
    CHECK_EQ(crpc_net_listen_all(host, port, more, CRPC_NET_MAX_LISTEN, &port2), 1);
    CHECK_EQ(port2, port);
    close(more[0]);
    close(fds[0]);
}

static void test_unix_path(void)
{
    char path[96], host[128], msg[256], got[CRPC_NET_ADDR_MAX];
    snprintf(path, sizeof(path), "/tmp/crpc-test-net-%d.sock", (int)getpid());
    snprintf(host, sizeof(host), "unix:%s", path);
    unlink(path);

    int l = crpc_net_listen_unix(host, 0600, msg, sizeof(msg));
    if (l < 0)
        fprintf(stderr, "%s\n", msg);
    CHECK(l >= 0);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK_EQ(st.st_mode & 0777, 0600);

    int c, a = connect_accept(l, host, 0, &c);
    crpc_net_tune(a); /* harmless on a Unix socket */
    crpc_net_tune(c);
    CHECK_EQ(crpc_net_peer_address(a, got, sizeof(got)), CRPC_NET_UNIX);
    CHECK_STR(got, host);
    CHECK_EQ(crpc_net_peer_address(c, got, sizeof(got)), CRPC_NET_UNIX);
    CHECK_STR(got, host);
    int32_t uid = -1, gid = -1, pid = -1;
    CHECK_EQ(crpc_net_peer_cred(a, &uid, &gid, &pid), 0);
    CHECK_EQ(uid, getuid());
    CHECK_EQ(gid, getgid());
    CHECK_EQ(pid, getpid());
    close(a);
    close(c);

    /* A live server keeps its path. Its probe arrives as a connection that ends at once. */
    msg[0] = '\0';
    CHECK_EQ(crpc_net_listen_unix(host, 0, msg, sizeof(msg)), -EADDRINUSE);
    char want[256];
    snprintf(want, sizeof(want), "%s is in use by a running server", host);
    CHECK_STR(msg, want);
    a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    CHECK(a >= 0);
    char x;
    CHECK_EQ(read(a, &x, 1), 0);
    close(a);

    /* Dead without unlinking: the file is stale, connects are refused, and it is replaced. */
    close(l);
    CHECK(stat(path, &st) == 0);
    CHECK_EQ(crpc_net_connect(host, 0, 100), -ECONNREFUSED);
    l = crpc_net_listen_unix(host, 0, msg, sizeof(msg));
    CHECK(l >= 0);
    a = connect_accept(l, host, 0, &c);
    close(a);
    close(c);
    close(l);
    crpc_net_unlink_unix(host);
    CHECK(stat(path, &st) < 0 && errno == ENOENT);
    CHECK_EQ(crpc_net_connect(host, 0, 100), -ENOENT);
    crpc_net_unlink_unix(host); /* nothing there: nothing done */

    /* Not a socket: refused, and left alone (by unlink_unix too). */
    int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    CHECK(f >= 0);
    close(f);
    CHECK_EQ(crpc_net_listen_unix(host, 0, msg, sizeof(msg)), -EEXIST);
    snprintf(want, sizeof(want), "%s exists and is not a socket", host);
    CHECK_STR(msg, want);
    crpc_net_unlink_unix(host);
    CHECK(stat(path, &st) == 0 && S_ISREG(st.st_mode));
    unlink(path);

    /* A missing directory. */
    CHECK_EQ(crpc_net_listen_unix("unix:/nonexistent-dir-crpc/x.sock", 0, msg, sizeof(msg)), -ENOENT);

    /* 107 bytes of path fit sun_path with its NUL; 108 do not. */
    char lpath[128], lhost[160];
    int pre = snprintf(lpath, sizeof(lpath), "/tmp/crpc-test-net-%d-", (int)getpid());
    memset(lpath + pre, 'a', 107 - (size_t)pre);
    lpath[107] = '\0';
    snprintf(lhost, sizeof(lhost), "unix:%s", lpath);
    l = crpc_net_listen_unix(lhost, 0, msg, sizeof(msg));
    CHECK(l >= 0);
    a = connect_accept(l, lhost, 0, &c);
    CHECK_EQ(crpc_net_peer_address(a, got, sizeof(got)), CRPC_NET_UNIX);
    CHECK_STR(got, lhost);
    close(a);
    close(c);
    close(l);
    crpc_net_unlink_unix(lhost);
    CHECK(access(lpath, F_OK) < 0);
    strcat(lhost, "a");
    msg[0] = '\0';
    CHECK_EQ(crpc_net_listen_unix(lhost, 0, msg, sizeof(msg)), -ENAMETOOLONG);
    CHECK(strstr(msg, "too long") != NULL);
    CHECK_EQ(crpc_net_connect(lhost, 0, 100), -ENAMETOOLONG);
    CHECK_EQ(crpc_net_listen_unix(lhost, 0, NULL, 0), -ENAMETOOLONG); /* no message wanted */
}

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void test_unix_abstract(void)
{
    char host[64], msg[256], got[CRPC_NET_ADDR_MAX];
    snprintf(host, sizeof(host), "unix:@crpc-test-net-%d", (int)getpid());
    int l = crpc_net_listen_unix(host, 0600, msg, sizeof(msg));
    if (l < 0)
        fprintf(stderr, "%s\n", msg);
    CHECK(l >= 0);
    int c, a = connect_accept(l, host, 0, &c);
    CHECK_EQ(crpc_net_peer_address(a, got, sizeof(got)), CRPC_NET_UNIX);
    CHECK_STR(got, host);
    CHECK_EQ(crpc_net_peer_address(c, got, sizeof(got)), CRPC_NET_UNIX);
    CHECK_STR(got, host);
    int32_t pid = -1;
    CHECK_EQ(crpc_net_peer_cred(a, NULL, NULL, &pid), 0);
    CHECK_EQ(pid, getpid());
    close(a);
    close(c);
    msg[0] = '\0';
    CHECK_EQ(crpc_net_listen_unix(host, 0, msg, sizeof(msg)), -EADDRINUSE);
    CHECK(strncmp(msg, host, strlen(host)) == 0 && strstr(msg, "in use") != NULL);
    crpc_net_unlink_unix(host); /* nothing to remove */
    close(l);
    /* No file: the name is free the moment its socket is closed. */
    CHECK_EQ(crpc_net_connect(host, 0, 100), -ECONNREFUSED);
    l = crpc_net_listen_unix(host, 0, msg, sizeof(msg));
    CHECK(l >= 0);
    close(l);

    /* A full backlog: the connect waits for room, up to its timeout. A listener with
     * backlog 0 takes one connection; the next one waits. */
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t n = strlen(host + 6);
    memcpy(sun.sun_path + 1, host + 6, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    CHECK(bind(l, (struct sockaddr *)&sun, len) == 0);
    CHECK(listen(l, 0) == 0);
    int first = crpc_net_connect(host, 0, 1000);
    CHECK(first >= 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int second = crpc_net_connect(host, 0, 200);
    long ms = elapsed_ms(&t0);
    if (second >= 0) {
        printf("net: a backlog-0 Unix listener took a second connection here: timeout part skipped\n");
        close(second);
    } else {
        CHECK_EQ(second, -ETIMEDOUT);
        CHECK(ms >= 150 && ms < 2000);
        CHECK_EQ(crpc_net_connect(host, 0, 0), -ETIMEDOUT); /* 0 ms: no wait at all */
    }
    close(first);
    close(l);
}

int main(void)
{
    int probe[1];
    uint16_t p;
    int v6 = crpc_net_listen_all("::1", 0, probe, 1, &p);
    bool have_v6 = v6 == 1;
    if (have_v6)
        close(probe[0]);
    else
        printf("net: ::1 cannot be bound here (%s): IPv6 checks skipped\n", strerror(-v6));

    test_syntax();
    test_v4();
    test_localhost(have_v6);
    test_dual_stack("::", have_v6);
    test_dual_stack(NULL, have_v6);
    test_dual_stack("[::]", have_v6);
    test_unix_path();
    test_unix_abstract();
    printf("net: all checks passed\n");
    return 0;
}
