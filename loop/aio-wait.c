/*
 * KEEL_AIO_WAIT_WHILE and keel_aio_wait_kick (see loop/aio-wait.h).
 *
 * Every waiter is on one list under wait_lock.  A kick bumps the kick
 * count and wakes each waiter by the means its kind needs: a one-shot BH
 * into the context it polls (a BH is progress, so its blocking poll
 * returns), the condition variable, or scheduling the coroutine back in.
 * A waiter compares the kick count with the one it saw before evaluating
 * its condition, so a kick between evaluation and wait makes it evaluate
 * again instead of sleeping.
 */
#include "config.h"

#include "loop/aio-wait.h"
#include "compat/atomic.h"

static pthread_mutex_t wait_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wait_cond = PTHREAD_COND_INITIALIZER;
static KeelAioWaiter *waiters;          /* under wait_lock */
static unsigned kicks;                  /* written under wait_lock */
static unsigned num_waiters;            /* atomic: a kick's fast path */
static const KeelAioWaitCoroutineOps *co_ops;  /* atomic; set once */

void keel_aio_wait_set_coroutine_ops(const KeelAioWaitCoroutineOps *ops)
{
    keel_atomic_store_release(&co_ops, ops);
}

void keel_aio_wait_begin(KeelAioWaiter *w, KeelAioContext *ctx)
{
    const KeelAioWaitCoroutineOps *ops = keel_atomic_load_acquire(&co_ops);

    w->co = ops ? ops->self() : NULL;
    if (w->co) {
        w->poll_ctx = NULL;
    } else if (keel_aio_context_in_home_thread(ctx)) {
        w->poll_ctx = ctx;
    } else {
        w->poll_ctx = keel_current_aio_context();
    }
    w->armed = false;
    pthread_mutex_lock(&wait_lock);
    w->seen_kicks = kicks;
    w->next = waiters;
    w->pprev = &waiters;
    if (waiters) {
        waiters->pprev = &w->next;
    }
    waiters = w;
    keel_atomic_fetch_add(&num_waiters, 1);
    pthread_mutex_unlock(&wait_lock);
}

void keel_aio_wait_once(KeelAioWaiter *w)
{
    pthread_mutex_lock(&wait_lock);
    if (w->seen_kicks != kicks) {
        /* Kicked since the condition was evaluated: evaluate again. */
        w->seen_kicks = kicks;
        pthread_mutex_unlock(&wait_lock);
        return;
    }
    if (w->co) {
        w->armed = true;
        pthread_mutex_unlock(&wait_lock);
        co_ops->yield();
        pthread_mutex_lock(&wait_lock);
    } else if (!w->poll_ctx) {
        while (w->seen_kicks == kicks) {
            pthread_cond_wait(&wait_cond, &wait_lock);
        }
    } else {
        pthread_mutex_unlock(&wait_lock);
        /* A kick from now on schedules a BH into poll_ctx: this returns. */
        keel_aio_poll(w->poll_ctx, true);
        pthread_mutex_lock(&wait_lock);
    }
    w->seen_kicks = kicks;
    pthread_mutex_unlock(&wait_lock);
}

void keel_aio_wait_end(KeelAioWaiter *w)
{
    pthread_mutex_lock(&wait_lock);
    *w->pprev = w->next;
    if (w->next) {
        w->next->pprev = w->pprev;
    }
    keel_atomic_fetch_sub(&num_waiters, 1);
    pthread_mutex_unlock(&wait_lock);
}

static void wait_kick_bh(void *opaque)
{
    (void)opaque;               /* its running is the wake-up */
}

void keel_aio_wait_kick(void)
{
    /* Full barrier: the caller's change to the condition is ordered before
     * this load, and the waiter's registration before its evaluation (a
     * seq_cst RMW), so either we see the waiter or it sees the change. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!keel_atomic_load_seq_cst(&num_waiters)) {
        return;
    }
    pthread_mutex_lock(&wait_lock);
    kicks++;
    for (KeelAioWaiter *w = waiters; w; w = w->next) {
        if (w->co) {
            if (w->armed) {
                /* Never entered here: it resumes from its own loop, after
                 * the kicker (maybe in the same thread) is done. */
                w->armed = false;
                co_ops->schedule(w->co);
            }
        } else if (w->poll_ctx) {
            keel_aio_bh_schedule_oneshot(w->poll_ctx, wait_kick_bh, NULL);
        }
    }
    pthread_cond_broadcast(&wait_cond);
    pthread_mutex_unlock(&wait_lock);
}
