/*
 * Places where libkeel must behave as QEMU's loop does (test-aio,
 * test-thread-pool, test-nested-aio-poll), each found deviating once:
 *   1. keel_iothread_stop_join() runs every BH scheduled before it, and
 *      resumes a coroutine woken (from another thread) before it;
 *   2. a busy-poll ready callback that runs a nested aio_poll on its own
 *      context is not called again for the same handler from inside it;
 *   3. keel_thread_pool_submit() with no completion callback.
 */
#include "config.h"

#include "loop/aio.h"
#include "loop/iothread.h"
#include "loop/thread-pool.h"
#include "loop/timer.h"
#include "coroutine/coroutine.h"
#include "compat/atomic.h"
#include "compat/event-notifier.h"
#include "tests/keel-test.h"
#include "tests/loop-test-util.h"

/* ---- 1. stop_join runs what was scheduled before it ---- */

#define STOP_BHS 10

static bool first_started;          /* atomic */
static int stop_bh_runs;            /* atomic */
static KeelCoroutine *stop_co;
static bool stop_co_resumed, stop_co_finished;
static KeelAioContext *stop_co_ctx;

static void slow_first_bh(void *opaque)
{
    (void)opaque;
    keel_atomic_store_seq_cst(&first_started, true);
    /* Long enough that the main thread queues the rest and asks to stop
     * while this one still runs. */
    loop_test_sleep_ms(50);
    keel_atomic_fetch_add(&stop_bh_runs, 1);
}

static void counted_bh(void *opaque)
{
    (void)opaque;
    keel_atomic_fetch_add(&stop_bh_runs, 1);
}

static void stop_co_entry(void *opaque)
{
    (void)opaque;
    keel_coroutine_yield();
    stop_co_resumed = true;
    stop_co_ctx = keel_current_aio_context();
    stop_co_finished = true;
}

static void start_co_in_iothread(void *opaque)
{
    (void)opaque;
    stop_co = keel_coroutine_create(stop_co_entry, NULL);
    keel_aio_co_enter(keel_current_aio_context(), stop_co);   /* yields at once */
}

static void test_stop_runs_scheduled(void)
{
    KeelIOThread *t = keel_iothread_new("stop");
    KeelAioContext *ctx = keel_iothread_get_aio_context(t);

    keel_aio_run_in_context_wait(ctx, start_co_in_iothread, NULL);
    keel_aio_bh_schedule_oneshot(ctx, slow_first_bh, NULL);
    while (!keel_atomic_load_seq_cst(&first_started)) {
        loop_test_sleep_ms(1);
    }
    for (int i = 1; i < STOP_BHS; i++) {
        keel_aio_bh_schedule_oneshot(ctx, counted_bh, NULL);
    }
    keel_aio_co_wake(stop_co);          /* from this thread: a BH over there */
    keel_iothread_stop_join(t);
    KEEL_IS(keel_atomic_load_seq_cst(&stop_bh_runs), STOP_BHS,
            "every BH scheduled before keel_iothread_stop_join ran");
    KEEL_OK(stop_co_resumed && stop_co_finished,
            "a coroutine woken before the join was resumed and finished");
    KEEL_OK(stop_co_ctx == ctx, "it resumed in the iothread's context");
    keel_iothread_free(t);
}

/* ---- 2. no ready re-entry from a nested aio_poll ---- */

static KeelAioContext *nest_ctx;
static KeelEventNotifier nest_notifier;
static KeelTimer *nest_timer;
static bool nest_work;              /* io_poll says "work" while set */
static int nest_depth, nest_max_depth, nest_readies, nest_callbacks;
static bool nest_inner_ret;

static bool nest_poll(void *opaque)
{
    (void)opaque;
    return nest_work;
}

static void nest_timer_cb(void *opaque)
{
    (void)opaque;
}

static void nest_ready(KeelEventNotifier *e)
{
    (void)e;
    nest_readies++;
    nest_depth++;
    if (nest_depth > nest_max_depth) {
        nest_max_depth = nest_depth;
    }
    if (nest_depth == 1) {
        /* The work is still pending while the nested poll runs (as when a
         * handler waits for its own request): it must not see this
         * handler again.  The timer ends the nested call. */
        keel_timer_mod_ns(nest_timer, keel_clock_get_ns(KEEL_CLOCK_REALTIME) + 2000000);
        nest_inner_ret = keel_aio_poll(nest_ctx, true);
    }
    nest_work = false;
    nest_depth--;
}

static void nest_notify(KeelEventNotifier *e)
{
    nest_callbacks++;
    keel_event_notifier_test_and_clear(e);
    nest_work = false;
}

static const KeelAioPollOps nest_ops = { .poll = nest_poll, .ready = nest_ready };

static void test_no_nested_ready(void)
{
    nest_ctx = keel_aio_context_new();
    if (keel_event_notifier_init(&nest_notifier, false) < 0) {
        keel_test_skip("cannot create an event notifier");
        return;
    }
    nest_timer = keel_aio_timer_new_ns(nest_ctx, KEEL_CLOCK_REALTIME, nest_timer_cb, NULL);
    keel_aio_set_event_notifier_poll(nest_ctx, &nest_notifier, nest_notify, &nest_ops);
    keel_aio_context_set_poll_params(nest_ctx, 10 * 1000 * 1000, 2, 0);
    /* Teach the handler's window: it fires at once after the wait begins. */
    for (int i = 0; i < 4; i++) {
        nest_work = true;
        keel_event_notifier_set(&nest_notifier);
        keel_aio_poll(nest_ctx, true);
    }
    KEEL_OK(nest_callbacks > 0 && !nest_work, "the notifier callback consumed signalled work");
    /* Now work that only io_poll sees. */
    for (int i = 0; i < 20 && nest_readies == 0; i++) {
        nest_work = true;
        keel_aio_poll(nest_ctx, true);
        if (nest_work) {
            keel_event_notifier_set(&nest_notifier);
            keel_aio_poll(nest_ctx, true);
        }
    }
    KEEL_OK(nest_readies > 0, "busy-polling called the ready callback (%d times)", nest_readies);
    KEEL_IS(nest_max_depth, 1, "the ready callback was not re-entered by its nested aio_poll");
    KEEL_OK(nest_inner_ret, "the nested aio_poll returned progress (the timer)");

    keel_aio_set_event_notifier(nest_ctx, &nest_notifier, NULL, NULL);
    keel_timer_free(nest_timer);
    keel_event_notifier_cleanup(&nest_notifier);
    keel_aio_context_unref(nest_ctx);
}

/* ---- 3. thread-pool submit without a completion callback ---- */

static int pool_fn_runs;            /* atomic */

static int pool_fn(void *opaque)
{
    (void)opaque;
    keel_atomic_fetch_add(&pool_fn_runs, 1);
    return 0;
}

static void test_pool_null_cb(void)
{
    KeelAioContext *ctx = keel_aio_context_new();
    int64_t deadline = keel_clock_get_ns(KEEL_CLOCK_REALTIME) + 10LL * 1000 * 1000 * 1000;

    for (int i = 0; i < 4; i++) {
        keel_thread_pool_submit(ctx, pool_fn, NULL, NULL, NULL);
    }
    while (keel_atomic_load_seq_cst(&pool_fn_runs) < 4 &&
           keel_clock_get_ns(KEEL_CLOCK_REALTIME) < deadline) {
        keel_aio_poll(ctx, false);
        loop_test_sleep_ms(1);
    }
    /* Run the completion BH for whatever finished last. */
    while (keel_aio_poll(ctx, false)) {
    }
    KEEL_IS(keel_atomic_load_seq_cst(&pool_fn_runs), 4,
            "four requests without a completion callback ran and completed");
    keel_aio_context_unref(ctx);
}

int main(void)
{
    loop_test_sigcont_start();
    keel_test_plan(8);
    test_stop_runs_scheduled();
    test_no_nested_ready();
    test_pool_null_cb();
    loop_test_sigcont_report();
    return keel_test_done();
}
