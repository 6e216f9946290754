/*
 * pending.h — a client's calls awaiting replies, keyed by msgid. Loop thread only.
 *
 * An open-addressing table (linear probing, backward-shift deletion, so no tombstones
 * pile up): lookup, insert and remove are O(1) and allocate nothing once the table has
 * grown to the connection's peak number of calls in flight. It grows at half full and
 * never shrinks below that peak, so timeouts and cancels cannot make it leak.
 */
#ifndef CRPC_PENDING_H
#define CRPC_PENDING_H

#include <stdbool.h>
#include <stdint.h>

#include "crpc.h"

typedef struct crpc_pending {
    uint64_t token;       /* the caller's call id */
    uint64_t deadline;    /* CLOCK_MONOTONIC ns when the call times out; 0: never */
    crpc_call_fn cb;
    void *ctx;
    uint32_t msgid;
    bool used;
} crpc_pending;

typedef struct crpc_pending_table {
    crpc_pending *slots;
    uint32_t mask;        /* capacity - 1; capacity is a power of two */
    uint32_t count;
} crpc_pending_table;

/* Adds an entry (msgid must not be in the table). Returns 0 or -ENOMEM. */
int crpc_pending_insert(crpc_pending_table *t, const crpc_pending *p);

/* The entry for msgid, or NULL. */
crpc_pending *crpc_pending_find(crpc_pending_table *t, uint32_t msgid);

/* Removes the entry for msgid into *out. Returns true when there was one. */
bool crpc_pending_take(crpc_pending_table *t, uint32_t msgid, crpc_pending *out);

/* The msgid of the call with this token, searching all entries when its id was
 * renumbered. Returns true when found. */
bool crpc_pending_find_token(crpc_pending_table *t, uint64_t token, uint32_t *msgid);

/* Frees the table's memory. */
void crpc_pending_free(crpc_pending_table *t);

#endif
