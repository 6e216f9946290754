/*
 * peer.c — a server connection's crpc_peer and the memory behind it (see peer.h). The
 * strings are copies, so the peer outlives whatever described it (the TLS session's
 * buffers, the socket).
 */
#include "peer.h"

#include <stdlib.h>
#include <string.h>

#include "net.h"

crpc_peer_store *crpc_peer_new(int fd)
{
    crpc_peer_store *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->peer.uid = p->peer.gid = p->peer.pid = -1;
    char address[128];
    int transport = crpc_net_peer_address(fd, address, sizeof(address));
    if (transport >= 0)
        crpc_peer_set(p, &p->peer.address, address, SIZE_MAX);
    if (transport == CRPC_NET_UNIX) {
        p->peer.transport = CRPC_TRANSPORT_UNIX;
        p->peer.over_unix = 1;
        crpc_net_peer_cred(fd, &p->peer.uid, &p->peer.gid, &p->peer.pid);
    }
    return p;
}

void crpc_peer_set(crpc_peer_store *p, const char **field, const char *s, size_t len)
{
    if (!s || p->nowned == sizeof(p->owned) / sizeof(p->owned[0]))
        return;
    if (len == SIZE_MAX)
        len = strlen(s);
    char *copy = malloc(len + 1);
    if (!copy)
        return;
    memcpy(copy, s, len);
    copy[len] = 0;
    p->owned[p->nowned++] = copy;
    *field = copy;
}

void crpc_peer_add_san(crpc_peer_store *p, enum crpc_peer_san kind, const char *s, size_t len)
{
    char **grown = realloc(p->sans[kind], (p->nsans[kind] + 1) * sizeof(char *));
    if (!grown)
        return;
    p->sans[kind] = grown;
    char *copy = malloc(len + 1);
    if (!copy)
        return;
    memcpy(copy, s, len);
    copy[len] = 0;
    grown[p->nsans[kind]++] = copy;
}

void crpc_peer_set_der(crpc_peer_store *p, const uint8_t *der, size_t len)
{
    free(p->der);
    p->der = malloc(len);
    if (!p->der)
        return;
    memcpy(p->der, der, len);
    p->peer.cert_der = p->der;
    p->peer.cert_der_len = (uint32_t)len;
}

void crpc_peer_finish(crpc_peer_store *p)
{
    p->peer.cert_dns = (const char *const *)p->sans[PEER_SAN_DNS];
    p->peer.cert_dns_count = p->nsans[PEER_SAN_DNS];
    p->peer.cert_ips = (const char *const *)p->sans[PEER_SAN_IP];
    p->peer.cert_ips_count = p->nsans[PEER_SAN_IP];
    p->peer.cert_uris = (const char *const *)p->sans[PEER_SAN_URI];
    p->peer.cert_uris_count = p->nsans[PEER_SAN_URI];
}

void crpc_peer_free(crpc_peer_store *p)
{
    if (!p)
        return;
    for (unsigned i = 0; i < p->nowned; i++)
        free(p->owned[i]);
    for (int k = 0; k < PEER_SAN_KINDS; k++) {
        for (uint32_t i = 0; i < p->nsans[k]; i++)
            free(p->sans[k][i]);
        free(p->sans[k]);
    }
    free(p->der);
    free(p);
}
