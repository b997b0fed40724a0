/*
 * loop/aio-wait.h — wait for a condition that other threads (or coroutines)
 * change: QEMU's AIO_WAIT_WHILE and aio_wait_kick.
 *
 *   KEEL_AIO_WAIT_WHILE(ctx, cond)
 *
 * evaluates @cond and, while it is true, waits for something to happen,
 * then evaluates it again; it returns whether it waited at all.  @ctx is the
 * context whose work @cond is about.  How it waits depends on the caller:
 *   - in @ctx's home thread (not in a coroutine): keel_aio_poll(@ctx, true),
 *     so @ctx's own handlers, BHs and timers make the progress;
 *   - in another thread with a current context of its own (the main loop
 *     waiting for an iothread's context): it polls its own context, so its
 *     work goes on; @ctx's thread makes the progress;
 *   - in a thread without a context: it sleeps on a condition variable;
 *   - in a coroutine (with a home AioContext): it yields; its thread goes
 *     on running other work.
 * In the last three cases nothing in the waiter's own loop changes when
 * @cond does, so whoever changes what @cond reads must call
 * keel_aio_wait_kick() afterwards (QEMU's rule, too).  A kick wakes every
 * waiter once so each re-evaluates its condition; a kick that arrives
 * between the evaluation and the wait is not lost.  Kicking with nobody
 * waiting costs one atomic load.
 *
 * Thread rules: KEEL_AIO_WAIT_WHILE from any thread or coroutine, never
 * from a callback of @ctx that could be needed to make @cond false (it
 * would wait for itself); keel_aio_wait_kick from any thread or coroutine,
 * also from callbacks.  The KeelAioWaiter functions are what the macro
 * expands to; call them directly only to write such a macro yourself.
 */
#ifndef KEEL_LOOP_AIO_WAIT_H
#define KEEL_LOOP_AIO_WAIT_H

#include <pthread.h>
#include <stdbool.h>

#include "aio.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One waiter, on the waiter's stack.  Fields are private. */
typedef struct KeelAioWaiter {
    KeelAioContext *poll_ctx;       /* polled while waiting, or NULL */
    void *co;                       /* the waiting coroutine, or NULL */
    unsigned seen_kicks;            /* kick count at the last evaluation */
    bool armed;                     /* a coroutine waiter sleeps for a kick */
    struct KeelAioWaiter *next, **pprev;
} KeelAioWaiter;

void keel_aio_wait_begin(KeelAioWaiter *w, KeelAioContext *ctx);
/* Wait once (the condition was just found true). */
void keel_aio_wait_once(KeelAioWaiter *w);
void keel_aio_wait_end(KeelAioWaiter *w);

/* Wake every waiter once, so that it re-evaluates its condition. */
void keel_aio_wait_kick(void);

#define KEEL_AIO_WAIT_WHILE(ctx, cond) __extension__ ({   \
    KeelAioWaiter keel_waiter_;                             \
    bool keel_waited_ = false;                              \
    keel_aio_wait_begin(&keel_waiter_, (ctx));              \
    while ((cond)) {                                        \
        keel_aio_wait_once(&keel_waiter_);                  \
        keel_waited_ = true;                                \
    }                                                       \
    keel_aio_wait_end(&keel_waiter_);                       \
    keel_waited_; })

/* For the coroutine layer (which sits above this one): how a coroutine
 * waiter finds itself, yields, and is scheduled back in.  Installed by
 * libkeel's coroutine code before the first coroutine exists. */
typedef struct KeelAioWaitCoroutineOps {
    void *(*self)(void);            /* the running coroutine, or NULL */
    void (*yield)(void);
    void (*schedule)(void *co);     /* resume it later in its home context */
} KeelAioWaitCoroutineOps;
void keel_aio_wait_set_coroutine_ops(const KeelAioWaitCoroutineOps *ops);

#ifdef __cplusplus
}
#endif

#endif
