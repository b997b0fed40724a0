/*
 * Coroutines meet the event loop: scheduling into an AioContext, waking
 * from any thread, moving between threads, sleeping on a timer, and
 * waiting for the thread pool.
 */
#include "config.h"

#include "coroutine/coroutine-int.h"
#include "loop/aio-wait.h"

#include <errno.h>

static void co_schedule_bh(void *opaque)
{
    KeelCoroutine *co = opaque;

    coroutine_clear_scheduled(co);
    coroutine_enter_ctx(keel_coroutine_get_aio_context(co), co);
}

void keel_aio_co_schedule(KeelAioContext *ctx, KeelCoroutine *co)
{
    if (!ctx) {
        coroutine_fatal("keel_aio_co_schedule: no AioContext given for coroutine %p",
                        (void *)co);
    }
    coroutine_mark_scheduled(co, "keel_aio_co_schedule");
    /* From now on @ctx is its home: wakers in other threads go there. */
    __atomic_store_n(&co->ctx, ctx, __ATOMIC_RELEASE);
    keel_aio_bh_schedule_oneshot(ctx, co_schedule_bh, co);
}

void keel_aio_co_enter(KeelAioContext *ctx, KeelCoroutine *co)
{
    bool here;

    if (ctx) {
        here = keel_aio_context_in_home_thread(ctx);
    } else {
        /* Entered from a thread without an AioContext: only that thread may
         * resume it, since there is no loop to send it to. */
        here = !co->home_thread || co->home_thread == coroutine_thread_token();
        if (!here) {
            coroutine_fatal("keel_aio_co_wake: coroutine %p has no home AioContext "
                            "(it was entered from a thread without one) and cannot "
                            "be woken from another thread", (void *)co);
        }
    }
    if (!here) {
        keel_aio_co_schedule(ctx, co);
    } else if (keel_in_coroutine()) {
        /* Includes waking ourselves before yielding: runs after the yield. */
        coroutine_wake_deferred(co, "keel_aio_co_wake");
    } else {
        coroutine_enter_ctx(ctx, co);
    }
}

void keel_aio_co_wake(KeelCoroutine *co)
{
    keel_aio_co_enter(keel_coroutine_get_aio_context(co), co);
}

/* ---- moving the running coroutine ---------------------------------------- */

typedef struct RescheduleSelf {
    KeelCoroutine *co;
    KeelAioContext *new_ctx;
} RescheduleSelf;

static void reschedule_self_bh(void *opaque)
{
    RescheduleSelf *move = opaque;      /* on the coroutine's stack */

    keel_aio_co_schedule(move->new_ctx, move->co);
}

void keel_aio_co_reschedule_self(KeelAioContext *new_ctx)
{
    KeelCoroutine *self = keel_coroutine_self();
    KeelAioContext *old_ctx = keel_current_aio_context();
    RescheduleSelf move = { .co = self, .new_ctx = new_ctx };

    if (!self) {
        coroutine_fatal("keel_aio_co_reschedule_self called outside a coroutine");
    }
    if (old_ctx == new_ctx) {
        return;
    }
    if (!old_ctx) {
        coroutine_fatal("keel_aio_co_reschedule_self: the current thread has no "
                        "AioContext to run the move from");
    }
    /* Scheduling into new_ctx directly would let its thread enter us before
     * we have yielded here.  A bottom half of our own context can only run
     * after the yield, so it does the scheduling. */
    keel_aio_bh_schedule_oneshot(old_ctx, reschedule_self_bh, &move);
    keel_coroutine_yield();
}

/* ---- sleeping ---------------------------------------------------------------- */

static void co_sleep_timer_cb(void *opaque)
{
    keel_aio_co_wake(opaque);
}

void keel_co_sleep_ns(KeelClockType type, int64_t ns)
{
    KeelCoroutine *self = keel_coroutine_self();
    KeelAioContext *ctx = keel_current_aio_context();
    KeelTimer *timer;
    int64_t now, deadline;

    if (!self) {
        coroutine_fatal("keel_co_sleep_ns called outside a coroutine");
    }
    if (!ctx) {
        coroutine_fatal("keel_co_sleep_ns: the current thread has no AioContext");
    }
    now = keel_clock_get_ns(type);
    deadline = ns > 0 && now > INT64_MAX - ns ? INT64_MAX : now + (ns > 0 ? ns : 0);
    timer = keel_aio_timer_new_ns(ctx, type, co_sleep_timer_cb, self);
    keel_timer_mod_ns(timer, deadline);
    keel_coroutine_yield();
    /* The timer fired in ctx and woke us there: this is ctx's thread. */
    keel_timer_free(timer);
}

/* ---- the thread pool --------------------------------------------------------- */

typedef struct PoolCoWait {
    KeelCoroutine *co;
    int ret;
} PoolCoWait;

static void pool_co_complete(void *opaque, int ret)
{
    PoolCoWait *wait = opaque;          /* on the coroutine's stack */

    wait->ret = ret;
    keel_aio_co_wake(wait->co);
}

int keel_thread_pool_submit_co(KeelThreadPoolFunc *fn, void *arg)
{
    PoolCoWait wait = { .co = keel_coroutine_self(), .ret = -EINPROGRESS };
    KeelAioContext *ctx = keel_current_aio_context();

    if (!wait.co) {
        coroutine_fatal("keel_thread_pool_submit_co called outside a coroutine");
    }
    if (!ctx) {
        coroutine_fatal("keel_thread_pool_submit_co: the current thread has no AioContext");
    }
    keel_thread_pool_submit(ctx, fn, arg, pool_co_complete, &wait);
    keel_coroutine_yield();
    return wait.ret;
}

/* ---- KEEL_AIO_WAIT_WHILE from a coroutine (loop/aio-wait.h) ------------------ */

static void *wait_co_self(void)
{
    return keel_coroutine_self();
}

static void wait_co_schedule(void *co)
{
    keel_aio_co_schedule(keel_coroutine_get_aio_context(co), co);
}

static const KeelAioWaitCoroutineOps wait_co_ops = {
    .self = wait_co_self,
    .yield = keel_coroutine_yield,
    .schedule = wait_co_schedule,
};

void coroutine_install_wait_ops(void)
{
    keel_aio_wait_set_coroutine_ops(&wait_co_ops);
}
