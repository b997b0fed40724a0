/*
 * iothreads: five iothreads bounce tokens at each other (one-shot BHs) for
 * about two seconds; no token is lost and every hop is counted exactly once,
 * in the right thread.  Then every iothread waits synchronously on its
 * neighbour at the same time (a cycle that deadlocks unless waiting keeps the
 * waiter's own context running), and the main thread (no context of its own)
 * runs functions in each iothread and waits.
 */
#include "config.h"

#include "loop/aio.h"
#include "loop/iothread.h"
#include "compat/atomic.h"
#include "tests/keel-test.h"
#include "tests/loop-test-util.h"

#include <stdio.h>

#define NTHREADS 5
#define NTOKENS 25
#define BOUNCE_MS 2000

static KeelIOThread *threads[NTHREADS];
static KeelAioContext *ctxs[NTHREADS];
static long hops_in_thread[NTHREADS];   /* each written by its own iothread */
static bool stop_bouncing;
static int retired;
static bool wrong_context;

typedef struct Token {
    int at;
    long hops;
} Token;

static Token tokens[NTOKENS];

static void hop_bh(void *opaque)
{
    Token *t = opaque;
    int me = t->at;

    if (keel_current_aio_context() != ctxs[me] || !keel_aio_context_in_home_thread(ctxs[me])) {
        keel_atomic_store_seq_cst(&wrong_context, true);
    }
    hops_in_thread[me]++;
    t->hops++;
    if (keel_atomic_load_seq_cst(&stop_bouncing)) {
        keel_atomic_fetch_add(&retired, 1);
        return;
    }
    /* Never to itself; the stride varies so every pair gets traffic. */
    t->at = (me + 1 + (int)(t->hops % (NTHREADS - 1))) % NTHREADS;
    keel_aio_bh_schedule_oneshot(ctxs[t->at], hop_bh, t);
}

static void noop_fn(void *opaque)
{
    (void)opaque;
}

static void test_bounce(void)
{
    long total_thread = 0, total_token = 0;
    int waited_ms = 0;
    bool all_moved = true;

    for (int i = 0; i < NTOKENS; i++) {
        tokens[i].at = i % NTHREADS;
        keel_aio_bh_schedule_oneshot(ctxs[tokens[i].at], hop_bh, &tokens[i]);
    }
    loop_test_sleep_ms(BOUNCE_MS);
    keel_atomic_store_seq_cst(&stop_bouncing, true);
    while (keel_atomic_load_seq_cst(&retired) < NTOKENS && waited_ms < 10000) {
        loop_test_sleep_ms(1);
        waited_ms++;
    }
    KEEL_IS(keel_atomic_load_seq_cst(&retired), NTOKENS,
            "every token came to rest (no lost work, no hang)");

    /* A synchronous round trip through each thread orders its counters
     * before our reads. */
    for (int i = 0; i < NTHREADS; i++) {
        keel_aio_run_in_context_wait(ctxs[i], noop_fn, NULL);
    }
    for (int i = 0; i < NTHREADS; i++) {
        total_thread += hops_in_thread[i];
    }
    for (int i = 0; i < NTOKENS; i++) {
        total_token += tokens[i].hops;
        all_moved &= tokens[i].hops > 1;
    }
    KEEL_OK(total_thread == total_token,
            "hops counted by threads (%ld) == hops counted by tokens (%ld)",
            total_thread, total_token);
    KEEL_OK(all_moved, "every token moved between threads");
    KEEL_OK(!keel_atomic_load_seq_cst(&wrong_context), "every hop ran in its target iothread");
    keel_test_diag("%ld hops in %d ms across %d iothreads", total_token, BOUNCE_MS, NTHREADS);
}

/* ---- one token, two threads, no polling: a lost wake-up is a hang ---- */

static long pingpong_hops;
static bool pingpong_stop;
static bool pingpong_done;

static void pingpong_bh(void *opaque)
{
    int me = (int)(intptr_t)opaque;

    keel_atomic_fetch_add(&pingpong_hops, 1);
    if (keel_atomic_load_seq_cst(&pingpong_stop)) {
        keel_atomic_store_seq_cst(&pingpong_done, true);
        return;
    }
    keel_aio_bh_schedule_oneshot(ctxs[!me], pingpong_bh, (void *)(intptr_t)!me);
}

static void test_pingpong(void)
{
    /* Polling would hide a lost eventfd write (the flag is polled too). */
    keel_aio_context_set_poll_params(ctxs[0], 0, 0, 0);
    keel_aio_context_set_poll_params(ctxs[1], 0, 0, 0);
    keel_aio_bh_schedule_oneshot(ctxs[0], pingpong_bh, (void *)(intptr_t)0);
    loop_test_sleep_ms(700);
    keel_atomic_store_seq_cst(&pingpong_stop, true);
    /* A token lost to a missed wake-up never reports back. */
    for (int ms = 0; ms < 5000 && !keel_atomic_load_seq_cst(&pingpong_done); ms++) {
        loop_test_sleep_ms(1);
    }
    KEEL_OK(keel_atomic_load_seq_cst(&pingpong_done),
            "one token between two sleeping threads kept moving (%ld hops): no lost wake-up",
            keel_atomic_load_seq_cst(&pingpong_hops));
    keel_aio_context_set_poll_params(ctxs[0], 32768, 0, 0);
    keel_aio_context_set_poll_params(ctxs[1], 32768, 0, 0);
}

/* ---- the wake-up race: schedule exactly while the target goes to sleep ----
 * The main thread schedules a BH into a non-polling iothread and spins until
 * it ran, then schedules again at once: the next schedule lands while the
 * iothread is returning from aio_poll and heading back to sleep, which is
 * where a broken notify protocol loses the wake-up (and this test hangs). */

static long race_runs;

static void race_bh(void *opaque)
{
    (void)opaque;
    keel_atomic_fetch_add(&race_runs, 1);
}

static void test_wake_race(void)
{
    KeelBH *bh = keel_aio_bh_new(ctxs[2], race_bh, NULL);
    int64_t end = keel_monotonic_ns() + 500 * 1000000LL;
    long n = 0;
    bool lost = false;

    keel_aio_context_set_poll_params(ctxs[2], 0, 0, 0);
    while (!lost && keel_monotonic_ns() < end) {
        int64_t give_up = keel_monotonic_ns() + 2000 * 1000000LL;
        /* Sweep the moment of the schedule across the target's way back
         * to sleep. */
        for (volatile long spin = 0; spin < (n * 7) % 400; spin++) {
        }
        keel_bh_schedule(bh);
        n++;
        while (keel_atomic_load_seq_cst(&race_runs) != n) {
            if (keel_monotonic_ns() > give_up) {
                lost = true;
                break;
            }
        }
    }
    KEEL_OK(!lost, "BH scheduled while the target goes to sleep: never lost (%ld rounds)", n);
    keel_bh_delete(bh);
    keel_aio_context_set_poll_params(ctxs[2], 32768, 0, 0);
}

/* ---- waiting on each other in a cycle ---- */

#define CYCLE_ROUNDS 50

static int cycle_count[NTHREADS];      /* written in the target's thread */
static int cycle_done;

static void cycle_inc(void *opaque)
{
    int *counter = opaque;
    (*counter)++;
}

static void cycle_bh(void *opaque)
{
    int me = (int)(intptr_t)opaque;
    int next = (me + 1) % NTHREADS;

    for (int r = 0; r < CYCLE_ROUNDS; r++) {
        keel_aio_run_in_context_wait(ctxs[next], cycle_inc, &cycle_count[next]);
    }
    keel_atomic_fetch_add(&cycle_done, 1);
}

static int read_counter_val;

static void read_counter(void *opaque)
{
    read_counter_val = *(int *)opaque;
}

static void test_wait_cycle(void)
{
    int waited_ms = 0;
    bool exact = true;

    for (int i = 0; i < NTHREADS; i++) {
        keel_aio_bh_schedule_oneshot(ctxs[i], cycle_bh, (void *)(intptr_t)i);
    }
    while (keel_atomic_load_seq_cst(&cycle_done) < NTHREADS && waited_ms < 10000) {
        loop_test_sleep_ms(1);
        waited_ms++;
    }
    KEEL_IS(keel_atomic_load_seq_cst(&cycle_done), NTHREADS,
            "iothreads waiting on each other in a cycle: no deadlock");
    for (int i = 0; i < NTHREADS; i++) {
        keel_aio_run_in_context_wait(ctxs[i], read_counter, &cycle_count[i]);
        exact &= read_counter_val == CYCLE_ROUNDS;
    }
    KEEL_OK(exact, "each run_in_context_wait ran exactly once (%d per thread)", CYCLE_ROUNDS);
}

/* ---- from a thread without a context ---- */

typedef struct Probe {
    KeelAioContext *expected;
    bool right;
    int runs;
} Probe;

static void probe_fn(void *opaque)
{
    Probe *p = opaque;
    p->runs++;
    p->right = keel_current_aio_context() == p->expected &&
               keel_aio_context_in_home_thread(p->expected);
}

static void test_run_from_main(void)
{
    bool all_right = true;
    int runs = 0;

    KEEL_OK(keel_current_aio_context() == NULL, "the main thread has no context here");
    for (int i = 0; i < NTHREADS; i++) {
        Probe p = { .expected = ctxs[i] };
        keel_aio_run_in_context_wait(ctxs[i], probe_fn, &p);
        all_right &= p.right;
        runs += p.runs;
    }
    KEEL_IS(runs, NTHREADS, "run_in_context_wait from the main thread: ran once each");
    KEEL_OK(all_right, "... in the iothread, with its context current");
}

int main(void)
{
    bool ok = true;

    loop_test_sigcont_start();
    for (int i = 0; i < NTHREADS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "t%d", i);
        threads[i] = keel_iothread_new(id);
        if (!threads[i]) {
            keel_test_skip_all("cannot create threads");
        }
        ctxs[i] = keel_iothread_get_aio_context(threads[i]);
        ok &= ctxs[i] != NULL && strcmp(keel_iothread_id(threads[i]), id) == 0 &&
              !keel_aio_context_in_home_thread(ctxs[i]);
    }
    KEEL_OK(ok, "five iothreads with their own contexts and ids");

    test_run_from_main();
    test_pingpong();
    test_wake_race();
    test_bounce();
    test_wait_cycle();

    for (int i = 0; i < NTHREADS; i++) {
        keel_iothread_stop_join(threads[i]);
    }
    keel_iothread_stop_join(threads[0]);    /* idempotent */
    for (int i = 0; i < NTHREADS; i++) {
        keel_iothread_free(threads[i]);
    }
    KEEL_OK(true, "stopped, joined and freed");
    loop_test_sigcont_report();
    return keel_test_done();
}
