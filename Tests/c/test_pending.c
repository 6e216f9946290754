/*
 * test_pending.c — the msgid table against a plain reference array, through a million
 * random inserts and removals with ids that collide in every way the probing allows,
 * plus the renumbering lookup by token.
 */
#include <stdint.h>

#include "check.h"
#include "pending.h"

#define IDS 4096

static uint64_t rng = 88172645463325252ull;
static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

int main(void)
{
    crpc_pending_table t = {0};
    static bool present[IDS];
    static uint32_t ids[IDS];
    uint32_t live = 0;
    for (uint32_t i = 0; i < IDS; i++)
        ids[i] = (next_rand() % 4 == 0) ? i * 1024 : next_rand(); /* clustered and spread ids */
    for (int step = 0; step < 1000000; step++) {
        uint32_t k = next_rand() % IDS;
        crpc_pending out;
        if (present[k]) {
            CHECK(crpc_pending_take(&t, ids[k], &out));
            CHECK_EQ(out.token, k);
            CHECK(!crpc_pending_find(&t, ids[k]));
            present[k] = false;
            live--;
        } else if (!crpc_pending_find(&t, ids[k])) { /* random ids may repeat: skip those */
            crpc_pending p = {.token = k, .msgid = ids[k]};
            CHECK_EQ(crpc_pending_insert(&t, &p), 0);
            present[k] = true;
            live++;
        }
        CHECK_EQ(t.count, live);
        if (step % 9973 == 0)
            for (uint32_t i = 0; i < IDS; i++)
                CHECK_EQ(crpc_pending_find(&t, ids[i]) != NULL && crpc_pending_find(&t, ids[i])->token == i, present[i]);
    }
    /* Token lookup: a call whose msgid was renumbered is still found. */
    crpc_pending_free(&t);
    crpc_pending p = {.token = (1ull << 32) + 5, .msgid = 6};
    CHECK_EQ(crpc_pending_insert(&t, &p), 0);
    uint32_t msgid = 0;
    CHECK(crpc_pending_find_token(&t, (1ull << 32) + 5, &msgid));
    CHECK_EQ(msgid, 6);
    CHECK(!crpc_pending_find_token(&t, 5, &msgid));
    crpc_pending_free(&t);
    printf("PASS test_pending\n");
    return 0;
}
