/*
 * Adaptive polling: off by default (io_poll never called); each event source
 * has its own window, which grows when the source fires soon after a wait
 * begins and shrinks when it fires later than poll-max-ns; a timer wake
 * teaches nothing; a source that fires soon keeps the context polling even
 * when another source is always slow; work visible only to io_poll is then
 * found by busy-polling; one handler without io_poll disables polling; a BH
 * scheduled from another thread ends a busy-poll; a source quiet for a
 * second no longer keeps the context polling.
 */
#include "config.h"

#include "loop/aio.h"
#include "loop/aio-int.h"
#include "loop/timer.h"
#include "compat/atomic.h"
#include "tests/keel-test.h"
#include "tests/loop-test-util.h"

static KeelAioContext *ctx;

/* One pipe-backed event source.  "ready" is what its io_poll reports; the
 * pipe byte is what wakes a sleeping poll.  An event is consumed once,
 * whichever of the two is seen first; a byte that arrives after its event
 * was found by polling is only drained. */
typedef struct Source {
    int fds[2];
    bool ready;                     /* atomic */
    int poll_calls;                 /* atomic */
    int found_by_poll;              /* io_poll calls that returned true */
    int reads;                      /* events consumed; home thread */
} Source;

static bool source_poll(void *opaque)
{
    Source *s = opaque;
    bool ready = keel_atomic_load_seq_cst(&s->ready);

    keel_atomic_fetch_add(&s->poll_calls, 1);
    if (ready) {
        s->found_by_poll++;
    }
    return ready;
}

static void source_read(void *opaque)
{
    Source *s = opaque;

    if (keel_atomic_xchg(&s->ready, false)) {
        s->reads++;
    }
    loop_test_drain(s->fds[0]);
}

/* One blocking poll, with a timer @ms away so that it cannot hang when
 * nothing else wakes it.  True when @s was consumed. */
static bool poll_once_for(Source *s, KeelTimer *t, int ms)
{
    int before = s->reads;

    keel_timer_mod_ns(t, keel_clock_get_ns(KEEL_CLOCK_REALTIME) + ms * 1000000LL);
    keel_aio_poll(ctx, true);
    keel_timer_del(t);
    return s->reads == before + 1;
}

static void source_init(Source *s, bool with_poll)
{
    memset(s, 0, sizeof(*s));
    loop_test_pipe(s->fds);
    keel_aio_set_fd_handler(ctx, s->fds[0], source_read, NULL,
                            with_poll ? source_poll : NULL, s);
}

static void source_cleanup(Source *s)
{
    keel_aio_set_fd_handler(ctx, s->fds[0], NULL, NULL, NULL, NULL);
    close(s->fds[0]);
    close(s->fds[1]);
}

/* Another thread makes a source ready after a delay: flag first (what
 * io_poll sees), then the pipe byte (what wakes a sleeper). */
typedef struct Firing {
    Source *src;
    int delay_us;
} Firing;

static void *fire_thread(void *opaque)
{
    Firing *f = opaque;

    if (f->delay_us) {
        struct timespec ts = { f->delay_us / 1000000, (f->delay_us % 1000000) * 1000L };
        nanosleep(&ts, NULL);
    }
    keel_atomic_store_seq_cst(&f->src->ready, true);
    loop_test_write_byte(f->src->fds[1]);
    return NULL;
}

/* Blocking polls until @s fires, @delay_us after the wait begins; 0: it
 * fires before the wait, so the first look finds it (no scheduling
 * involved: the test asserts on "sooner than poll-max-ns" only with 0, and
 * on "later" only with delays well past it). */
static void wait_for_source(Source *s, int delay_us)
{
    Firing f = { s, delay_us };
    int before = s->reads;
    pthread_t tid;

    if (!delay_us) {
        fire_thread(&f);
    } else {
        pthread_create(&tid, NULL, fire_thread, &f);
    }
    while (s->reads == before) {
        keel_aio_poll(ctx, true);
    }
    if (delay_us) {
        pthread_join(tid, NULL);
    }
}

static int timer_fired;

static void timer_cb(void *opaque)
{
    (void)opaque;
    timer_fired++;
}

/* One blocking poll woken by a timer @ms from now. */
static void sleep_on_timer(KeelTimer *t, int ms)
{
    int before = timer_fired;

    keel_timer_mod_ns(t, keel_clock_get_ns(KEEL_CLOCK_REALTIME) + ms * 1000000LL);
    while (timer_fired == before) {
        keel_aio_poll(ctx, true);
    }
}

static void remote_bh_cb(void *opaque)
{
    (*(int *)opaque)++;
}

static void *remote_schedule(void *opaque)
{
    loop_test_sleep_ms(5);
    keel_bh_schedule(opaque);
    return NULL;
}

int main(void)
{
    Source fast, slow, nopoll;
    KeelTimer *t;
    int bh_count = 0;
    KeelBH *bh;
    pthread_t tid;
    bool fast_open = true;

    loop_test_sigcont_start();
    ctx = keel_aio_context_new();
    t = keel_aio_timer_new_ns(ctx, KEEL_CLOCK_REALTIME, timer_cb, NULL);
    source_init(&fast, true);

    /* Off by default. */
    wait_for_source(&fast, 0);
    sleep_on_timer(t, 2);
    KEEL_IS(keel_atomic_load_seq_cst(&fast.poll_calls), 0,
            "polling is off by default: io_poll never called");
    KEEL_IS(aio_context_poll_window_ns(ctx), 0, "window stays 0 while off");

    /* On.  A timer wake says nothing about any source. */
    keel_aio_context_set_poll_params(ctx, 50 * 1000000LL, 10, 0);
    sleep_on_timer(t, 1);
    KEEL_IS(aio_handler_poll_window_ns(ctx, fast.fds[0]), 0,
            "a timer wake leaves the sources' windows alone");

    /* A source that has fired when the wait begins (well under the 50 ms
     * max) grows. */
    wait_for_source(&fast, 0);
    KEEL_OK(aio_handler_poll_window_ns(ctx, fast.fds[0]) > 0,
            "a source that fires sooner than poll-max-ns grows its window (%lld ns)",
            (long long)aio_handler_poll_window_ns(ctx, fast.fds[0]));
    KEEL_IS(aio_context_poll_window_ns(ctx), aio_handler_poll_window_ns(ctx, fast.fds[0]),
            "the context polls for that window");

    /* A second source that always fires after 100 ms (beyond the max),
     * alternating with the fast one: a single window would be reset by
     * every slow wait; per source, the fast one's stays open. */
    source_init(&slow, true);
    for (int round = 0; round < 4; round++) {
        wait_for_source(&slow, 100 * 1000);
        fast_open &= aio_context_poll_window_ns(ctx) > 0;
        wait_for_source(&fast, 0);
    }
    KEEL_IS(aio_handler_poll_window_ns(ctx, slow.fds[0]), 0,
            "the slow source's window is closed (it fires later than poll-max-ns)");
    KEEL_OK(fast_open, "the context kept polling for the fast source after every slow wait");
    KEEL_OK(fast.found_by_poll > 0,
            "the fast source's events were found by busy-polling (%d times)",
            fast.found_by_poll);

    /* Work visible only to io_poll: found by busy-polling, no fd event. */
    keel_atomic_store_seq_cst(&fast.ready, true);
    KEEL_OK(poll_once_for(&fast, t, 2000),
            "a blocking poll finds work that only io_poll can see (io_read ran once)");

    /* A handler without io_poll disables polling for the whole context. */
    source_init(&nopoll, false);
    keel_atomic_store_seq_cst(&fast.poll_calls, 0);
    keel_atomic_store_seq_cst(&fast.ready, true);
    sleep_on_timer(t, 5);
    KEEL_IS(keel_atomic_load_seq_cst(&fast.poll_calls), 0,
            "a handler without io_poll disables polling");
    source_cleanup(&nopoll);
    KEEL_OK(poll_once_for(&fast, t, 2000), "removing it re-enables polling: the work is found");

    /* A BH from another thread ends the busy-poll (the wake-up flag is
     * polled too). */
    keel_aio_context_set_poll_params(ctx, 1000 * 1000000LL, 2, 0);
    bh = keel_aio_bh_new(ctx, remote_bh_cb, &bh_count);
    pthread_create(&tid, NULL, remote_schedule, bh);
    while (!bh_count) {
        keel_aio_poll(ctx, true);
    }
    pthread_join(tid, NULL);
    KEEL_IS(bh_count, 1, "a remote BH during polling ran once");
    keel_bh_delete(bh);

    /* A source that fires later than poll-max-ns shrinks (shrink 0: reset). */
    keel_aio_context_set_poll_params(ctx, 100 * 1000, 2, 0);
    wait_for_source(&fast, 20 * 1000);
    KEEL_IS(aio_handler_poll_window_ns(ctx, fast.fds[0]), 0,
            "a source firing later than poll-max-ns resets its window");

    /* Quiet sources stop counting: after a second without events the
     * context does not poll for them. */
    keel_aio_context_set_poll_params(ctx, 50 * 1000000LL, 10, 0);
    wait_for_source(&fast, 0);
    KEEL_OK(aio_context_poll_window_ns(ctx) > 0, "the fast source opened its window again");
    sleep_on_timer(t, 1100);
    KEEL_IS(aio_context_poll_window_ns(ctx), 0,
            "after a second without events the context no longer polls for it");

    /* Disable again: io_poll no longer called. */
    keel_aio_context_set_poll_params(ctx, 0, 0, 0);
    keel_atomic_store_seq_cst(&fast.poll_calls, 0);
    sleep_on_timer(t, 2);
    KEEL_IS(keel_atomic_load_seq_cst(&fast.poll_calls), 0, "poll-max-ns 0 turns polling off");

    source_cleanup(&fast);
    source_cleanup(&slow);
    keel_timer_free(t);
    keel_aio_context_unref(ctx);
    loop_test_sigcont_report();
    return keel_test_done();
}
