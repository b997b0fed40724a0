/*
 * The test guest's randrw choice, on the host (issue 16 item 5): compiles
 * vmm/guest/rand.h as the guest does and replays its main pass at iodepth 1
 * (block = xorshift64 % nblocks, then the read/write choice) to check that
 * the choice is independent of the block: writes reach about half of the
 * blocks each pass and main-pass reads land on written blocks.  The old
 * choice (bit 0 of the block stream's next xorshift output) is replayed
 * too, to show what the test catches: it is a function of the block index.
 */
#include "config.h"

#include "tests/keel-test.h"
#include "vmm/guest/rand.h"

#include <stdlib.h>
#include <string.h>

typedef struct Replay {
    uint64_t writes, reads, reads_of_written, blocks_written, blocks_mixed, blocks_twice;
} Replay;

/* The guest's main pass for @nblocks blocks, @ops requests, @seed (the same
 * seeding as vmm/guest/workload.c).  @old: the choice before the fix. */
static void replay(uint64_t nblocks, uint64_t ops, uint32_t seed, bool old, Replay *r)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ seed, rw_rng = rw_choice_seed(seed);
    uint8_t *written = calloc(nblocks, 1), *seen = calloc(nblocks, 1);

    memset(r, 0, sizeof(*r));
    for (uint64_t i = 0; i < ops; i++) {
        uint64_t b = xorshift64(&rng) % nblocks;
        bool write = old ? (xorshift64(&rng) & 1) : rw_choose_write(&rw_rng);

        seen[b] |= write ? 1 : 2;
        if (write) {
            r->writes++;
            written[b] = 1;
        } else {
            r->reads++;
            r->reads_of_written += written[b];
        }
    }
    for (uint64_t b = 0; b < nblocks; b++) {
        r->blocks_written += written[b];
        r->blocks_mixed += seen[b] == 3;
    }
    free(written);
    free(seen);
}

int main(void)
{
    static const uint64_t sizes[] = { 256, 1024, 4096, 1000 };
    Replay r;

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t n = sizes[i];
        for (uint32_t seed = 1; seed <= 3; seed++) {
            /* One pass of nblocks requests (randrw without runtime=). */
            replay(n, n, seed, false, &r);
            KEEL_OK(r.writes > n * 4 / 10 && r.writes < n * 6 / 10,
                    "nblocks=%llu seed=%u: %llu of %llu requests write (about half)",
                    (unsigned long long)n, seed, (unsigned long long)r.writes,
                    (unsigned long long)n);
            /* A block picked twice is read after a write with p ~ 1/4 per
             * pair: over a pass some 10% of reads land on written blocks. */
            KEEL_OK(r.reads_of_written > n / 20,
                    "nblocks=%llu seed=%u: %llu main-pass reads land on written blocks",
                    (unsigned long long)n, seed, (unsigned long long)r.reads_of_written);
            KEEL_OK(r.blocks_mixed > n / 20,
                    "nblocks=%llu seed=%u: %llu blocks both read and written",
                    (unsigned long long)n, seed, (unsigned long long)r.blocks_mixed);
        }
        /* 32 passes: every block gets written (a block-dependent choice
         * would leave half of them never written). */
        replay(n, 32 * n, 1, false, &r);
        KEEL_OK(r.blocks_written == n, "nblocks=%llu, 32 passes: all %llu blocks written "
                "(%llu)", (unsigned long long)n, (unsigned long long)n,
                (unsigned long long)r.blocks_written);
    }

    /* The old choice, for the record: with a power-of-two block count it
     * is bit 0 ^ bit 7 of the block index. */
    replay(1024, 16 * 1024, 1, true, &r);
    KEEL_OK(r.reads_of_written == 0 && r.blocks_mixed == 0 && r.blocks_written <= 512,
            "the old choice (the block stream's next bit 0) never reads a written block "
            "(%llu reads of written, %llu of 1024 blocks ever written): what this test catches",
            (unsigned long long)r.reads_of_written, (unsigned long long)r.blocks_written);
    {
        bool function_of_block = true;
        for (uint64_t b = 1; b < 1024; b++) {
            uint64_t x = b | (0x5555ull << 10);     /* any high bits */
            function_of_block &= (xorshift64(&x) & 1) == ((b ^ (b >> 7)) & 1);
        }
        KEEL_OK(function_of_block, "why: xorshift64's next bit 0 is bit 0 ^ bit 7 of the state");
    }
    return keel_test_done();
}
