/*
 * Adaptive polling: off by default (io_poll never called); when every
 * handler has an io_poll function the window grows after short sleeps and a
 * blocking poll then finds work through io_poll alone (the fd never becomes
 * readable); one handler without io_poll disables polling; long sleeps shrink
 * the window; a BH scheduled from another thread ends a busy-poll.
 */
#include "config.h"

#include "loop/aio.h"
#include "loop/aio-int.h"
#include "loop/timer.h"
#include "compat/atomic.h"
#include "tests/keel-test.h"
#include "tests/loop-test-util.h"

static KeelAioContext *ctx;
static bool work_ready;
static int poll_calls;
static int read_calls;

static bool my_poll(void *opaque)
{
    (void)opaque;
    keel_atomic_fetch_add(&poll_calls, 1);
    return keel_atomic_load_seq_cst(&work_ready);
}

static void my_read(void *opaque)
{
    (void)opaque;
    read_calls++;
    keel_atomic_store_seq_cst(&work_ready, false);
}

static void nop_read(void *opaque)
{
    (void)opaque;
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
    int fds[2], other[2];
    KeelTimer *t;
    int bh_count = 0;
    KeelBH *bh;
    pthread_t tid;

    loop_test_sigcont_start();
    ctx = keel_aio_context_new();
    t = keel_aio_timer_new_ns(ctx, KEEL_CLOCK_REALTIME, timer_cb, NULL);
    loop_test_pipe(fds);
    loop_test_pipe(other);
    keel_aio_set_fd_handler(ctx, fds[0], my_read, NULL, my_poll, NULL);

    /* Off by default. */
    sleep_on_timer(t, 2);
    KEEL_IS(keel_atomic_load_seq_cst(&poll_calls), 0,
            "polling is off by default: io_poll never called");
    KEEL_IS(ctx->poll_ns, 0, "window stays 0 while off");

    /* On: a short sleep (well under max) grows the window. */
    keel_aio_context_set_poll_params(ctx, 1000 * 1000000LL, 2, 0);
    sleep_on_timer(t, 1);
    KEEL_OK(ctx->poll_ns > 0, "a sleep shorter than poll-max-ns grows the window (%lld ns)",
            (long long)ctx->poll_ns);

    /* Work visible only to io_poll: found by busy-polling, no fd event. */
    keel_atomic_store_seq_cst(&work_ready, true);
    KEEL_OK(keel_aio_poll(ctx, true), "blocking poll makes progress through io_poll alone");
    KEEL_IS(read_calls, 1, "io_read ran once for the polled work");
    KEEL_OK(keel_atomic_load_seq_cst(&poll_calls) > 0, "io_poll was called");

    /* A handler without io_poll disables polling for the whole context. */
    keel_aio_set_fd_handler(ctx, other[0], nop_read, NULL, NULL, NULL);
    keel_atomic_store_seq_cst(&poll_calls, 0);
    keel_atomic_store_seq_cst(&work_ready, true);
    sleep_on_timer(t, 5);
    KEEL_IS(keel_atomic_load_seq_cst(&poll_calls), 0,
            "a handler without io_poll disables polling");
    KEEL_IS(read_calls, 1, "so the polled-only work was not seen");
    keel_aio_set_fd_handler(ctx, other[0], NULL, NULL, NULL, NULL);
    KEEL_OK(keel_aio_poll(ctx, true), "removing it re-enables polling: work found");
    KEEL_IS(read_calls, 2, "io_read ran for it");

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

    /* Sleeps longer than poll-max-ns shrink the window (shrink 0: reset). */
    keel_aio_context_set_poll_params(ctx, 100 * 1000, 2, 0);
    sleep_on_timer(t, 20);
    KEEL_IS(ctx->poll_ns, 0, "a sleep longer than poll-max-ns resets the window");

    /* Disable again: io_poll no longer called. */
    keel_aio_context_set_poll_params(ctx, 0, 0, 0);
    keel_atomic_store_seq_cst(&poll_calls, 0);
    sleep_on_timer(t, 2);
    KEEL_IS(keel_atomic_load_seq_cst(&poll_calls), 0, "poll-max-ns 0 turns polling off");

    keel_aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL);
    keel_timer_free(t);
    keel_aio_context_unref(ctx);
    close(fds[0]);
    close(fds[1]);
    close(other[0]);
    close(other[1]);
    loop_test_sigcont_report();
    return keel_test_done();
}
