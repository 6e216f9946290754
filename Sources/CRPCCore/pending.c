/*
 * pending.c — the msgid -> call table (see pending.h).
 */
#include "pending.h"

#include <errno.h>
#include <stdlib.h>

static inline uint32_t home(const crpc_pending_table *t, uint32_t msgid)
{
    /* Ids are sequential, so the low bits already spread well; mix a little anyway so a
     * peer choosing ids cannot line them up into long probe runs. */
    return (msgid * 0x9E3779B1u) >> 7 & t->mask;
}

static int grow(crpc_pending_table *t)
{
    uint32_t cap = t->slots ? (t->mask + 1) * 2 : 64;
    crpc_pending *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    crpc_pending *old = t->slots;
    uint32_t old_cap = old ? t->mask + 1 : 0;
    t->slots = slots;
    t->mask = cap - 1;
    for (uint32_t i = 0; i < old_cap; i++) {
        if (!old[i].used)
            continue;
        uint32_t j = home(t, old[i].msgid);
        while (slots[j].used)
            j = (j + 1) & t->mask;
        slots[j] = old[i];
    }
    free(old);
    return 0;
}

int crpc_pending_insert(crpc_pending_table *t, const crpc_pending *p)
{
    if (!t->slots || (t->count + 1) * 2 > t->mask + 1) {
        int err = grow(t);
        if (err)
            return err;
    }
    uint32_t j = home(t, p->msgid);
    while (t->slots[j].used)
        j = (j + 1) & t->mask;
    t->slots[j] = *p;
    t->slots[j].used = true;
    t->count++;
    return 0;
}

static crpc_pending *find_slot(crpc_pending_table *t, uint32_t msgid)
{
    if (!t->slots)
        return NULL;
    for (uint32_t j = home(t, msgid);; j = (j + 1) & t->mask) {
        if (!t->slots[j].used)
            return NULL;
        if (t->slots[j].msgid == msgid)
            return &t->slots[j];
    }
}

crpc_pending *crpc_pending_find(crpc_pending_table *t, uint32_t msgid)
{
    return find_slot(t, msgid);
}

bool crpc_pending_take(crpc_pending_table *t, uint32_t msgid, crpc_pending *out)
{
    crpc_pending *p = find_slot(t, msgid);
    if (!p)
        return false;
    *out = *p;
    /* Backward-shift deletion: pull later entries of the probe run into the hole. */
    uint32_t hole = (uint32_t)(p - t->slots);
    for (uint32_t j = (hole + 1) & t->mask; t->slots[j].used; j = (j + 1) & t->mask) {
        uint32_t h = home(t, t->slots[j].msgid);
        /* Entry j may move to the hole if its home is not in (hole, j] cyclically. */
        if (((j - h) & t->mask) >= ((j - hole) & t->mask)) {
            t->slots[hole] = t->slots[j];
            hole = j;
        }
    }
    t->slots[hole].used = false;
    t->count--;
    return true;
}

bool crpc_pending_find_token(crpc_pending_table *t, uint64_t token, uint32_t *msgid)
{
    crpc_pending *p = find_slot(t, (uint32_t)token);
    if (p && p->token == token) {
        *msgid = p->msgid;
        return true;
    }
    for (uint32_t j = 0; t->slots && j <= t->mask; j++) {
        if (t->slots[j].used && t->slots[j].token == token) {
            *msgid = t->slots[j].msgid;
            return true;
        }
    }
    return false;
}

void crpc_pending_free(crpc_pending_table *t)
{
    free(t->slots);
    t->slots = NULL;
    t->mask = t->count = 0;
}
