/*
 * net.c — socket helpers: resolving host:port, listening with SO_REUSEPORT (one socket
 * per loop, so the kernel spreads connections over the loops), and connecting with a
 * timeout. Plain blocking syscalls: they run once per socket, never per message.
 */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int resolve(const char *host, uint16_t port, int passive, struct addrinfo **res)
{
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    int rc = getaddrinfo(host, service, &hints, res);
    if (rc == EAI_SYSTEM)
        return -errno;
    return rc ? -EINVAL : 0;
}

int crpc_net_listen(const char *host, uint16_t port, uint16_t *bound_port)
{
    struct addrinfo *ai;
    int err = resolve(host, port, 1, &ai);
    if (err)
        return err;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = -errno;
        goto out;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        err = -errno;
        close(fd);
        goto out;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    err = fd;
out:
    freeaddrinfo(ai);
    return err;
}

void crpc_net_tune(int fd)
{
    int one = 1;
    /* Replies are already coalesced per loop iteration; Nagle would only add delay. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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

int crpc_net_connect(const char *host, uint16_t port, uint32_t timeout_ms)
{
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
