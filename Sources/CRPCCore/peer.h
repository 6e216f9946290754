/*
 * peer.h — who is on the other end of a server connection (crpc_peer in crpc.h), worked
 * out once per connection and owned by it (peer.c). Loop thread only.
 */
#ifndef CRPC_PEER_H
#define CRPC_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crpc.h"

enum crpc_peer_san { PEER_SAN_DNS = 0, PEER_SAN_IP, PEER_SAN_URI, PEER_SAN_KINDS };

/* The public view first, so a store and its crpc_peer are the same address; then the
 * copies it points into. */
typedef struct crpc_peer_store {
    crpc_peer peer;
    char *owned[8];              /* strings the fields point at */
    unsigned nowned;
    char **sans[PEER_SAN_KINDS];
    uint32_t nsans[PEER_SAN_KINDS];
    uint8_t *der;
} crpc_peer_store;

/* The accepted socket fd's address (and, on a Unix socket, the peer's credentials).
 * NULL when out of memory. */
crpc_peer_store *crpc_peer_new(int fd);

/* Sets *field to a copy of s (len SIZE_MAX: up to its NUL). NULL s: nothing. */
void crpc_peer_set(crpc_peer_store *p, const char **field, const char *s, size_t len);

/* Adds a subjectAltName of one kind. */
void crpc_peer_add_san(crpc_peer_store *p, enum crpc_peer_san kind, const char *s, size_t len);

/* Keeps a copy of the certificate's DER bytes. */
void crpc_peer_set_der(crpc_peer_store *p, const uint8_t *der, size_t len);

/* Points the public fields at what was added. */
void crpc_peer_finish(crpc_peer_store *p);

void crpc_peer_free(crpc_peer_store *p);

#endif
