/*
 * net.c — socket helpers: parsing a host ("name", "[v6]", "unix:/path", "unix:@name"),
 * listening on every address a host resolves to with SO_REUSEPORT (one socket per address
 * per loop, so the kernel spreads connections over the loops), listening on a Unix socket
 * without trampling a live server's, connecting with a timeout, and describing the peer of
 * an accepted connection. Plain blocking syscalls: they run once per socket, never per
 * message. Nothing here owns an fd once it is returned: the caller closes it.
 *
 * Linux: SO_REUSEPORT (3.9), abstract Unix names, SO_PEERCRED, SO_DOMAIN.
 * Try it: Tests/c/test_net.c (scripts/c-tests.sh test_net).
 */
#define _GNU_SOURCE
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096
#define UNIX_PREFIX "unix:"
#define UNIX_PREFIX_LEN (sizeof(UNIX_PREFIX) - 1)

bool crpc_net_is_unix(const char *host)
{
    return host && strncmp(host, UNIX_PREFIX, UNIX_PREFIX_LEN) == 0;
}

/* ---- TCP addresses ------------------------------------------------------------------ */

/* host -> addrinfo list. NULL or "" is the wildcard (passive) or loopback; "[v6]" is an
 * IPv6 literal with its brackets stripped (a name in brackets is refused). */
static int resolve(const char *host, uint16_t port, int passive, struct addrinfo **res)
{
    if (crpc_net_is_unix(host))
        return -EINVAL;
    char literal[INET6_ADDRSTRLEN + IF_NAMESIZE + 1]; /* "v6%scope" */
    int flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    if (host && host[0] == '[') {
        size_t n = strlen(host);
        if (n < 3 || host[n - 1] != ']' || n - 2 >= sizeof(literal))
            return -EINVAL;
        memcpy(literal, host + 1, n - 2);
        literal[n - 2] = '\0';
        host = literal;
        flags |= AI_NUMERICHOST;
    }
    if (host && !host[0])
        host = NULL;
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = flags & AI_NUMERICHOST ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = flags;
    int rc = getaddrinfo(host, service, &hints, res);
    if (rc == EAI_SYSTEM)
        return errno ? -errno : -EINVAL;
    if (rc == EAI_MEMORY)
        return -ENOMEM;
    return rc ? -EINVAL : 0;
}

static bool is_v6_wildcard(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 &&
           IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

static bool is_v4_wildcard(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET &&
           ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
}

/* Same address, ports aside (they are all the same within one lookup anyway). */
static bool same_address(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return IN6_ARE_ADDR_EQUAL(&x->sin6_addr, &y->sin6_addr) && x->sin6_scope_id == y->sin6_scope_id;
}

static void set_port(struct sockaddr *sa, uint16_t port)
{
    if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)sa)->sin_port = htons(port);
}

static uint16_t local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

static int listen_one(const struct sockaddr *sa, socklen_t salen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    /* REUSEADDR: rebinding over TIME_WAIT after a restart; REUSEPORT: one listener per
     * loop on the same address, the kernel spreading connections over them. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (sa->sa_family == AF_INET6) {
        /* Set either way, since net.ipv6.bindv6only may hold either default. Only "::"
         * takes IPv4 too; a specific address never needs it, and V6ONLY keeps "::ffff:..."
         * from ever clashing with the IPv4 socket bound beside it. */
        int v6only = !is_v6_wildcard(sa);
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0) {
            int err = -errno;
            close(fd);
            return err;
        }
    }
    if (bind(fd, sa, salen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

typedef struct addr_set {
    int n;
    struct sockaddr_storage addr[CRPC_NET_MAX_LISTEN];
    socklen_t len[CRPC_NET_MAX_LISTEN];
} addr_set;

/* The distinct addresses of a lookup, at most max, IPv6 wildcards first: a dual-stack
 * "::" must be tried before 0.0.0.0 to know whether 0.0.0.0 is still needed. */
static int collect(const struct addrinfo *ai, int max, addr_set *set)
{
    set->n = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (const struct addrinfo *a = ai; a; a = a->ai_next) {
            if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
                is_v6_wildcard(a->ai_addr) != (pass == 0))
                continue;
            bool dup = false;
            for (int i = 0; i < set->n && !dup; i++)
                dup = same_address((struct sockaddr *)&set->addr[i], a->ai_addr);
            if (dup)
                continue;
            if (set->n == max || set->n == CRPC_NET_MAX_LISTEN)
                return -E2BIG;
            memcpy(&set->addr[set->n], a->ai_addr, a->ai_addrlen);
            set->len[set->n++] = a->ai_addrlen;
        }
    }
    return set->n ? 0 : -EINVAL;
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

/* One attempt at binding the whole set on port (0: the first bind picks it). */
static int bind_set(addr_set *set, uint16_t port, int *fds, uint16_t *bound_port)
{
    int n = 0, skipped = 0;
    bool dual_stack = false;
    for (int i = 0; i < set->n; i++) {
        struct sockaddr *sa = (struct sockaddr *)&set->addr[i];
        if (dual_stack && is_v4_wildcard(sa))
            continue; /* "::" already takes IPv4; binding 0.0.0.0 too would clash */
        set_port(sa, port);
        int fd = listen_one(sa, set->len[i]);
        if (fd == -EADDRNOTAVAIL || fd == -EAFNOSUPPORT) {
            /* e.g. ::1 where IPv6 is off: serve the addresses that do exist */
            if (!skipped)
                skipped = fd;
            continue;
        }
        if (fd < 0) {
            close_all(fds, n);
            return fd;
        }
        if (port == 0 && (port = local_port(fd)) == 0) {
            close(fd); /* getsockname failed on a socket just bound: cannot happen */
            close_all(fds, n);
            return -EINVAL;
        }
        dual_stack |= is_v6_wildcard(sa);
        fds[n++] = fd;
    }
    if (n == 0)
        return skipped ? skipped : -EADDRNOTAVAIL;
    *bound_port = port;
    return n;
}

static int listen_addrinfo(const struct addrinfo *ai, int max, uint16_t port, int *fds,
                           uint16_t *bound_port)
{
    addr_set set;
    int err = collect(ai, max, &set);
    if (err)
        return err;
    /* The port the first bind picked can be taken on another address: pick afresh. */
    int attempts = port == 0 && set.n > 1 ? 8 : 1;
    do
        err = bind_set(&set, port, fds, bound_port);
    while (err == -EADDRINUSE && --attempts > 0);
    return err;
}

int crpc_net_listen_all(const char *host, uint16_t port, int *fds, int max_fds,
                        uint16_t *bound_port)
{
    if (max_fds < 1)
        return -EINVAL;
    struct addrinfo *ai;
    int err = resolve(host, port, 1, &ai);
    if (err)
        return err;
    err = listen_addrinfo(ai, max_fds, port, fds, bound_port);
    freeaddrinfo(ai);
    return err;
}

int crpc_net_listen(const char *host, uint16_t port, uint16_t *bound_port)
{
    struct addrinfo *ai;
    int err = resolve(host, port, 1, &ai);
    if (err)
        return err;
    struct addrinfo *next = ai->ai_next;
    ai->ai_next = NULL; /* the first address only */
    int fd;
    err = listen_addrinfo(ai, 1, port, &fd, bound_port);
    ai->ai_next = next;
    freeaddrinfo(ai);
    return err < 0 ? err : fd;
}

/* ---- Unix addresses ----------------------------------------------------------------- */

/* "unix:/path" or "unix:@name" -> a sockaddr_un and the length to bind/connect with.
 * Paths keep the portable limit of 107 bytes plus the NUL. */
static int unix_address(const char *host, struct sockaddr_un *sun, socklen_t *len)
{
    if (!crpc_net_is_unix(host))
        return -EINVAL;
    const char *name = host + UNIX_PREFIX_LEN;
    bool abstract = name[0] == '@';
    name += abstract;
    size_t n = strlen(name);
    if (n == 0)
        return -EINVAL;
    if (n >= sizeof(sun->sun_path))
        return -ENAMETOOLONG;
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    /* Abstract: a leading NUL, then exactly n bytes (the length says where it ends). */
    memcpy(sun->sun_path + abstract, name, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    return 0;
}

/* Whether something listens at sun: -EADDRINUSE when it is alive (it accepted, or its
 * backlog is full, or it is a socket of another type), 0 when the file is stale
 * (ECONNREFUSED), else the connect error. A live server sees one connection that ends at
 * once, as with any port probe. */
static int unix_probe(const struct sockaddr_un *sun, socklen_t len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int err = connect(fd, (const struct sockaddr *)sun, len) == 0 ? -EADDRINUSE : -errno;
    close(fd);
    if (err == -EAGAIN || err == -EPROTOTYPE)
        return -EADDRINUSE;
    return err == -ECONNREFUSED ? 0 : err;
}

/* Writes "host: what" to err and returns rc. */
__attribute__((format(printf, 5, 6))) static int fail(char *err, size_t errlen, int rc,
                                                      const char *host, const char *fmt, ...)
{
    if (err && errlen) {
        int n = snprintf(err, errlen, "%s ", host ? host : "(null)");
        if (n >= 0 && (size_t)n < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return rc;
}

int crpc_net_listen_unix(const char *host, unsigned mode, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    socklen_t len;
    int rc = unix_address(host, &sun, &len);
    if (rc == -ENAMETOOLONG)
        return fail(err, errlen, rc, host, "is too long a path (at most %zu bytes)",
                    sizeof(sun.sun_path) - 1);
    if (rc)
        return fail(err, errlen, rc, host, "is not a Unix socket (unix:/path or unix:@name)");
    const char *path = sun.sun_path[0] ? sun.sun_path : NULL;
    if (path) {
        struct stat st;
        if (lstat(path, &st) == 0) {
            if (!S_ISSOCK(st.st_mode))
                return fail(err, errlen, -EEXIST, host, "exists and is not a socket");
            rc = unix_probe(&sun, len);
            if (rc == -EADDRINUSE)
                return fail(err, errlen, rc, host, "is in use by a running server");
            if (rc)
                return fail(err, errlen, rc, host, "exists and cannot be probed: %s",
                            strerror(-rc));
            /* Stale: its server died without removing it. Two servers starting at once on
             * one stale file can still race here (both find it stale, both unlink): the
             * later one takes the path, the earlier keeps a socket nobody can reach. */
            if (unlink(path) < 0 && errno != ENOENT) {
                rc = -errno;
                return fail(err, errlen, rc, host, "is a stale socket that cannot be removed: %s",
                            strerror(-rc));
            }
        } else if (errno != ENOENT) {
            rc = -errno;
            return fail(err, errlen, rc, host, "cannot be checked: %s", strerror(-rc));
        }
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        return fail(err, errlen, rc, host, "socket: %s", strerror(-rc));
    }
    if (bind(fd, (struct sockaddr *)&sun, len) < 0) {
        rc = -errno;
        close(fd);
        if (rc == -EADDRINUSE)
            return fail(err, errlen, rc, host, "is in use%s",
                        path ? " (bound just now by another process)" : " by another socket");
        return fail(err, errlen, rc, host, "cannot be bound: %s", strerror(-rc));
    }
    /* Before listen: until then every connect is refused, so none slips in under the
     * umask's permissions. */
    if (path && mode && chmod(path, mode & 07777) < 0) {
        rc = -errno;
        unlink(path);
        close(fd);
        return fail(err, errlen, rc, host, "chmod %#o: %s", mode, strerror(-rc));
    }
    if (listen(fd, LISTEN_BACKLOG) < 0) {
        rc = -errno;
        if (path)
            unlink(path);
        close(fd);
        return fail(err, errlen, rc, host, "listen: %s", strerror(-rc));
    }
    return fd;
}

void crpc_net_unlink_unix(const char *host)
{
    struct sockaddr_un sun;
    socklen_t len;
    struct stat st;
    if (unix_address(host, &sun, &len) == 0 && sun.sun_path[0] && lstat(sun.sun_path, &st) == 0 &&
        S_ISSOCK(st.st_mode))
        unlink(sun.sun_path);
}

/* ---- Connecting --------------------------------------------------------------------- */

void crpc_net_tune(int fd)
{
    int one = 1;
    /* Replies are already coalesced per loop iteration; Nagle would only add delay. On a
     * Unix socket this fails with EOPNOTSUPP, which is fine: there is no Nagle there, and
     * asking first would cost a syscall per accepted connection. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int connect_one(const struct addrinfo *ai, uint32_t timeout_ms)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int err = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            err = -errno;
        } else {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int n;
            do
                n = poll(&p, 1, (int)timeout_ms);
            while (n < 0 && errno == EINTR);
            if (n == 0) {
                err = -ETIMEDOUT;
            } else {
                socklen_t len = sizeof(err);
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                err = -err;
            }
        }
    }
    if (err) {
        close(fd);
        return err;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    crpc_net_tune(fd);
    return fd;
}

/* A Unix connect completes at once or, while the listener's backlog is full, waits in the
 * kernel: non-blocking it would just fail with EAGAIN, so it blocks, bounded by
 * SO_SNDTIMEO (which the kernel applies to that wait), and 0 ms means do not wait. */
static int connect_unix(const char *host, uint32_t timeout_ms)
{
    struct sockaddr_un sun;
    socklen_t len;
    int err = unix_address(host, &sun, &len);
    if (err)
        return err;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (timeout_ms ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    if (timeout_ms)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int rc;
    do /* EINTR comes only from the backlog wait, before anything connected: retry */
        rc = connect(fd, (struct sockaddr *)&sun, len);
    while (rc < 0 && errno == EINTR);
    err = rc < 0 ? -errno : 0;
    if (err == -EAGAIN || err == -EINPROGRESS)
        err = -ETIMEDOUT;
    if (err) {
        close(fd);
        return err;
    }
    if (timeout_ms) {
        tv = (struct timeval){0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* sends never time out */
    } else {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    }
    return fd;
}

int crpc_net_connect(const char *host, uint16_t port, uint32_t timeout_ms)
{
    if (crpc_net_is_unix(host))
        return connect_unix(host, timeout_ms);
    struct addrinfo *ai;
    int err = resolve(host, port, 0, &ai);
    if (err)
        return err;
    err = -ECONNREFUSED;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        err = connect_one(a, timeout_ms);
        if (err >= 0 || err == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(ai);
    return err;
}

/* ---- Describing a peer -------------------------------------------------------------- */

static int put(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int put(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = len ? vsnprintf(buf, len, fmt, ap) : -1;
    va_end(ap);
    return n >= 0 && (size_t)n < len ? 0 : -ENOSPC;
}

/* "unix:/path", "unix:@name" (NULs inside an abstract name shown as '@', as ss does), or
 * "unix:" for an unnamed socket. */
static int put_unix(char *buf, size_t len, const struct sockaddr_un *sun, socklen_t salen)
{
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t n = salen > off ? salen - off : 0;
    char name[sizeof(sun->sun_path) + 1];
    if (n > sizeof(sun->sun_path))
        n = sizeof(sun->sun_path);
    if (n && sun->sun_path[0] == '\0') {
        for (size_t i = 0; i < n; i++)
            name[i] = sun->sun_path[i] ? sun->sun_path[i] : '@';
        name[n] = '\0';
    } else {
        memcpy(name, sun->sun_path, n);
        name[n] = '\0'; /* a path's own NUL, when the length counted it, ends it earlier */
    }
    return put(buf, len, UNIX_PREFIX "%s", name);
}

static bool unix_named(const struct sockaddr_un *sun, socklen_t salen)
{
    size_t off = offsetof(struct sockaddr_un, sun_path);
    return salen > off && (sun->sun_path[0] != '\0' || salen > off + 1);
}

int crpc_net_peer_address(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -errno;
    char host[INET6_ADDRSTRLEN];
    int err;
    switch (ss.ss_family) {
    case AF_UNIX: {
        /* An accepted socket carries the listener's name; its peer, a client that did not
         * bind, has none. A client's own socket is the other way round. */
        struct sockaddr_storage own;
        socklen_t ol = sizeof(own);
        if (getsockname(fd, (struct sockaddr *)&own, &ol) == 0 &&
            unix_named((struct sockaddr_un *)&own, ol))
            err = put_unix(buf, len, (struct sockaddr_un *)&own, ol);
        else
            err = put_unix(buf, len, (struct sockaddr_un *)&ss, sl);
        return err ? err : CRPC_NET_UNIX;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            /* An IPv4 client of a dual-stack "::": say it as IPv4. */
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], host, sizeof(host));
            err = put(buf, len, "%s:%u", host, (unsigned)ntohs(s6->sin6_port));
        } else {
            inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
            char scope[IF_NAMESIZE + 2] = "";
            if (s6->sin6_scope_id) {
                char ifname[IF_NAMESIZE];
                if (if_indextoname(s6->sin6_scope_id, ifname))
                    snprintf(scope, sizeof(scope), "%%%s", ifname);
                else
                    snprintf(scope, sizeof(scope), "%%%u", (unsigned)s6->sin6_scope_id);
            }
            err = put(buf, len, "[%s%s]:%u", host, scope, (unsigned)ntohs(s6->sin6_port));
        }
        return err ? err : CRPC_NET_TCP;
    }
    case AF_INET: {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        err = put(buf, len, "%s:%u", host, (unsigned)ntohs(s4->sin_port));
        return err ? err : CRPC_NET_TCP;
    }
    default:
        if (len)
            buf[0] = '\0';
        return -EAFNOSUPPORT;
    }
}

int crpc_net_peer_cred(int fd, int32_t *uid, int32_t *gid, int32_t *pid)
{
    /* On a TCP socket SO_PEERCRED "succeeds" with uid -1 and pid 0: refuse instead. */
    int domain;
    socklen_t dl = sizeof(domain);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) < 0)
        return -errno;
    if (domain != AF_UNIX)
        return -EOPNOTSUPP;
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
        return -errno;
    if (uid)
        *uid = (int32_t)cred.uid;
    if (gid)
        *gid = (int32_t)cred.gid;
    if (pid)
        *pid = (int32_t)cred.pid;
    return 0;
}
