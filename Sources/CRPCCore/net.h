/* net.h — socket set-up helpers (see net.c). Each returns an fd or a negated errno. */
#ifndef CRPC_NET_H
#define CRPC_NET_H

#include <stdint.h>

/* A listening socket with SO_REUSEPORT; *bound_port receives the port actually bound. */
int crpc_net_listen(const char *host, uint16_t port, uint16_t *bound_port);

/* A connected, blocking, TCP_NODELAY socket, or -ETIMEDOUT after timeout_ms. */
int crpc_net_connect(const char *host, uint16_t port, uint32_t timeout_ms);

/* Per-connection socket options (TCP_NODELAY). */
void crpc_net_tune(int fd);

#endif
