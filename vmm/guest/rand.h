/*
 * vmm/guest/rand.h — the test guest's reproducible randomness, kept apart
 * from guest.h so host-side tests (tests/vmm-guest-rand-test.c) compile the
 * very same functions.  Pure functions of the caller's state; no globals.
 */
#ifndef KEEL_GUEST_RAND_H
#define KEEL_GUEST_RAND_H

#include <stdbool.h>
#include <stdint.h>

/* 64-bit xorshift (Marsaglia, shifts 13/7/17): the workload's block picks. */
static inline uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* splitmix64 (Steele, Lea, Flood): every output bit depends on every state
 * bit, so its top bit is a fair coin independent of any xorshift stream. */
static inline uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The state of randrw's read/write choice for @seed: a stream of its own.
 * (Taking the choice from the block picker's next xorshift output made it
 * bit 0 ^ bit 7 of the previous output: the shifts by 13 and 17 leave bit
 * 0 alone and the shift by 7 xors in bit 7.  With a power-of-two number of
 * blocks that is a function of the block index, so every block was always
 * written or always read, and reads never checked a written block.) */
static inline uint64_t rw_choice_seed(uint32_t seed)
{
    return 0xD1B54A32D192ED03ull * ((uint64_t)seed + 1);
}

/* randrw: whether the next request writes (a fair coin from @state). */
static inline bool rw_choose_write(uint64_t *state)
{
    return splitmix64(state) >> 63;
}

#endif
