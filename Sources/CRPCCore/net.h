/*
 * net.h — socket set-up helpers (see net.c). Plain blocking syscalls, run once per socket.
 * Each returns an fd, a count or a transport on success and a negated errno on failure,
 * never errno itself.
 *
 * Host syntax, everywhere a host is taken:
 *   "example.org", "10.0.0.1"       a name or an IPv4 literal (getaddrinfo)
 *   "::1", "[::1]"                  an IPv6 literal, bare or in brackets (brackets stripped)
 *   "unix:/run/app.sock"            a Unix socket file (at most 107 bytes of path)
 *   "unix:@name"                    a Linux abstract socket: address "\0name", no file
 * A TCP port is ignored for unix: hosts.
 */
#ifndef CRPC_NET_H
#define CRPC_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What crpc_net_peer_address returns on success. */
enum crpc_net_transport { CRPC_NET_TCP = 0, CRPC_NET_UNIX = 1 };

/* The most listening sockets one host can need (every distinct address it resolves to). */
#define CRPC_NET_MAX_LISTEN 16

/* Enough for any text crpc_net_peer_address writes ("unix:@" + 107 bytes, or
 * "[v6%scope]:port"), NUL included. */
#define CRPC_NET_ADDR_MAX 128

/* True when host names a Unix socket ("unix:..."); NULL is not. */
bool crpc_net_is_unix(const char *host);

/*
 * Listens (backlog 4096, SO_REUSEADDR, SO_REUSEPORT, SOCK_CLOEXEC, blocking) on every
 * distinct address host resolves to, all on one port, and stores the fds in fds[0..n).
 * NULL or "" means the wildcards. port 0: the first bind picks a free port and the rest
 * take it (a clash there retries with a fresh port). *bound_port receives the port.
 *   - "::" is dual stack (IPV6_V6ONLY=0: IPv4 clients reach it as ::ffff:a.b.c.d); once it
 *     is bound, a 0.0.0.0 from the same lookup is skipped (it would clash). Every other
 *     IPv6 address is IPV6_V6ONLY=1, so "localhost" binds ::1 and 127.0.0.1 side by side.
 *   - An address the host cannot bind (EADDRNOTAVAIL: ::1 without IPv6; EAFNOSUPPORT) is
 *     skipped while another one binds.
 * Returns n >= 1; -EINVAL (unix: host, bad brackets, name not resolved, max_fds < 1);
 * -E2BIG (more distinct addresses than max_fds); -EADDRINUSE, -EACCES and other
 * socket/bind/listen errors. On failure nothing is left open.
 */
int crpc_net_listen_all(const char *host, uint16_t port, int *fds, int max_fds,
                        uint16_t *bound_port);

/* crpc_net_listen_all, first resolved address only (the behaviour before listen_all;
 * kept for callers not yet moved). Returns the fd or as listen_all. */
int crpc_net_listen(const char *host, uint16_t port, uint16_t *bound_port);

/*
 * Listens (backlog 4096, SOCK_CLOEXEC, blocking) on a Unix socket, host "unix:...".
 * A path: an existing socket file is probed with a connect: a live server (it accepts, or
 * its backlog is full) -> -EADDRINUSE; ECONNREFUSED (a stale file left by a dead server)
 * -> the file is removed and replaced. mode != 0 is applied with chmod after bind and
 * before listen (so no client connects under the umask's bits); 0 keeps the umask's.
 * An abstract name is just bound (-EADDRINUSE when taken; mode is ignored).
 * SO_REUSEPORT does not spread Unix connections: one listener serves all the loops.
 * Returns the fd; -EINVAL (not unix:, empty name); -ENAMETOOLONG (path > 107 bytes);
 * -EADDRINUSE (a live server); -EEXIST (the path is not a socket); -EACCES, -ENOENT
 * (no such directory) and other errors. On failure a one-line message naming the host
 * is written to err (when errlen > 0), nothing is left open and no file is left behind.
 */
int crpc_net_listen_unix(const char *host, unsigned mode, char *err, size_t errlen);

/* Removes the socket file of a "unix:/path" host, for the server's shutdown (after its
 * listener is closed). Nothing for abstract names, for other hosts, or when the path is
 * not a socket (never removes a regular file). */
void crpc_net_unlink_unix(const char *host);

/*
 * A connected, blocking socket. TCP: each resolved address is tried in turn, TCP_NODELAY
 * set. unix:: a blocking connect that waits up to timeout_ms while the listener's backlog
 * is full. timeout_ms 0 fails at once unless the connect completes immediately.
 * Returns the fd; -ETIMEDOUT; -ECONNREFUSED, -ENOENT (no socket file) and other connect
 * errors; -EINVAL (bad host), -ENAMETOOLONG.
 */
int crpc_net_connect(const char *host, uint16_t port, uint32_t timeout_ms);

/* Per-connection socket options: TCP_NODELAY on TCP; nothing on a Unix socket. */
void crpc_net_tune(int fd);

/*
 * Writes who is at the other end of connected fd, NUL-terminated: "127.0.0.1:5555",
 * "[::1]:5555" ("[fe80::1%eth0]:5555"), an IPv4-mapped IPv6 peer as IPv4. Unix: the
 * socket's own name (the listener's, on an accepted socket, whose peer is normally
 * unnamed) or else the peer's: "unix:/run/app.sock", "unix:@name"; "unix:" for a
 * socketpair. Returns the transport (CRPC_NET_TCP, CRPC_NET_UNIX); -ENOSPC when len is too
 * small (buf holds what fitted; CRPC_NET_ADDR_MAX always fits); -ENOTCONN, -EBADF,
 * -ENOTSOCK; -EAFNOSUPPORT for another family.
 */
int crpc_net_peer_address(int fd, char *buf, size_t len);

/* The peer's uid, gid and pid, as the kernel recorded them at connect (SO_PEERCRED);
 * NULL pointers are skipped. Returns 0; -EOPNOTSUPP (not a Unix socket); -EBADF,
 * -ENOTSOCK. */
int crpc_net_peer_cred(int fd, int32_t *uid, int32_t *gid, int32_t *pid);

#endif
