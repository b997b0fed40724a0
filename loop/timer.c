/*
 * Clocks and timers.  Each context keeps one sorted list per clock behind a
 * mutex (timers are armed from any thread); the list's earliest deadline is
 * mirrored in an atomic so the home thread computes its poll timeout without
 * taking the lock.
 */
#include "config.h"

#include "loop/aio-int.h"
#include "compat/osdep.h"

#include <assert.h>
#include <string.h>


/* ---- the virtual clock: monotonic minus the time spent paused ---- */

static pthread_mutex_t vclock_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t vclock_offset;       /* under vclock_lock */
static int64_t vclock_frozen;       /* value while paused; under vclock_lock */
static bool vclock_paused;          /* atomic; written under vclock_lock */

int64_t keel_clock_get_ns(KeelClockType type)
{
    int64_t now;

    if (type == KEEL_CLOCK_REALTIME) {
        return keel_monotonic_ns();
    }
    if (type == KEEL_CLOCK_HOST) {
        return keel_realtime_ns();
    }
    assert(type == KEEL_CLOCK_VIRTUAL);
    pthread_mutex_lock(&vclock_lock);
    now = keel_atomic_read(&vclock_paused)
              ? vclock_frozen : keel_monotonic_ns() - vclock_offset;
    pthread_mutex_unlock(&vclock_lock);
    return now;
}

void keel_clock_virtual_pause(void)
{
    pthread_mutex_lock(&vclock_lock);
    if (!keel_atomic_read(&vclock_paused)) {
        vclock_frozen = keel_monotonic_ns() - vclock_offset;
        keel_atomic_store_seq_cst(&vclock_paused, true);
    }
    pthread_mutex_unlock(&vclock_lock);
}

void keel_clock_virtual_resume(void)
{
    bool resumed = false;

    pthread_mutex_lock(&vclock_lock);
    if (keel_atomic_read(&vclock_paused)) {
        vclock_offset = keel_monotonic_ns() - vclock_frozen;
        keel_atomic_store_seq_cst(&vclock_paused, false);
        resumed = true;
    }
    pthread_mutex_unlock(&vclock_lock);
    if (resumed) {
        /* Sleepers ignored virtual timers while paused: make them look again. */
        aio_context_foreach(aio_notify_internal);
    }
}

static bool clock_enabled(KeelClockType type)
{
    return type != KEEL_CLOCK_VIRTUAL || !keel_atomic_load_seq_cst(&vclock_paused);
}

/* ---- timer lists ---- */

void aio_timers_init(KeelAioContext *ctx)
{
    for (int i = 0; i < KEEL_CLOCK__MAX; i++) {
        pthread_mutex_init(&ctx->timers[i].lock, NULL);
        ctx->timers[i].head = NULL;
        keel_atomic_store_seq_cst(&ctx->timers[i].earliest, -1);
    }
}

void aio_timers_cleanup(KeelAioContext *ctx)
{
    for (int i = 0; i < KEEL_CLOCK__MAX; i++) {
        TimerList *tl = &ctx->timers[i];
        /* Timers still armed are their owners' to free; just disarm them. */
        pthread_mutex_lock(&tl->lock);
        for (KeelTimer *t = tl->head; t;) {
            KeelTimer *next = t->next;
            t->expire_ns = -1;
            t->next = NULL;
            t = next;
        }
        tl->head = NULL;
        pthread_mutex_unlock(&tl->lock);
        pthread_mutex_destroy(&tl->lock);
    }
}

/* Under tl->lock: keep the lock-free mirror of the head's deadline. */
static void timer_list_update_earliest(TimerList *tl)
{
    /* seq_cst: the waker side of the wake-up protocol (A) in aio.c. */
    keel_atomic_store_seq_cst(&tl->earliest, tl->head ? tl->head->expire_ns : -1);
}

/* Under tl->lock. */
static void timer_list_unlink(TimerList *tl, KeelTimer *t)
{
    for (KeelTimer **pp = &tl->head; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    t->next = NULL;
    t->expire_ns = -1;
}

int64_t aio_timers_deadline_ns(KeelAioContext *ctx)
{
    int64_t best = -1;

    for (int i = 0; i < KEEL_CLOCK__MAX; i++) {
        int64_t expire = keel_atomic_load_seq_cst(&ctx->timers[i].earliest);
        int64_t delta;

        if (expire < 0 || !clock_enabled(i)) {
            continue;
        }
        delta = expire - keel_clock_get_ns(i);
        if (delta <= 0) {
            return 0;
        }
        if (best < 0 || delta < best) {
            best = delta;
        }
    }
    return best;
}

bool aio_timers_run(KeelAioContext *ctx)
{
    bool progress = false;

    for (int i = 0; i < KEEL_CLOCK__MAX; i++) {
        TimerList *tl = &ctx->timers[i];
        int64_t now;

        if (keel_atomic_read(&tl->earliest) < 0 || !clock_enabled(i)) {
            continue;
        }
        now = keel_clock_get_ns(i);
        for (;;) {
            KeelTimer *t;

            pthread_mutex_lock(&tl->lock);
            t = tl->head;
            if (!t || t->expire_ns > now) {
                pthread_mutex_unlock(&tl->lock);
                break;
            }
            tl->head = t->next;
            t->next = NULL;
            t->expire_ns = -1;
            timer_list_update_earliest(tl);
            pthread_mutex_unlock(&tl->lock);
            /* Unlocked: the callback may re-arm or free the timer. */
            t->cb(t->opaque);
            progress = true;
        }
    }
    return progress;
}

void keel_timer_init(KeelTimer *t, KeelAioContext *ctx, KeelClockType type,
                     KeelTimerCb *cb, void *opaque)
{
    assert(type >= 0 && type < KEEL_CLOCK__MAX);
    memset(t, 0, sizeof(*t));
    t->ctx = ctx;
    t->type = type;
    t->cb = cb;
    t->opaque = opaque;
    t->expire_ns = -1;
}

KeelTimer *keel_aio_timer_new_ns(KeelAioContext *ctx, KeelClockType type,
                                 KeelTimerCb *cb, void *opaque)
{
    KeelTimer *t = g_new0(KeelTimer, 1);

    keel_timer_init(t, ctx, type, cb, opaque);
    return t;
}

/* Arm at @expire_ns; with @anticipate, only if that is sooner than the
 * pending deadline (or none is pending). */
static void timer_mod(KeelTimer *t, int64_t expire_ns, bool anticipate)
{
    TimerList *tl = &t->ctx->timers[t->type];
    KeelTimer **pp;
    bool rearm;

    if (expire_ns < 0) {
        expire_ns = 0;          /* -1 means "not pending" */
    }
    pthread_mutex_lock(&tl->lock);
    if (anticipate && t->expire_ns >= 0 && t->expire_ns <= expire_ns) {
        pthread_mutex_unlock(&tl->lock);
        return;
    }
    if (t->expire_ns >= 0) {
        timer_list_unlink(tl, t);
    }
    t->expire_ns = expire_ns;
    /* After timers with the same deadline: equal deadlines fire in order. */
    for (pp = &tl->head; *pp && (*pp)->expire_ns <= expire_ns; pp = &(*pp)->next) {
    }
    t->next = *pp;
    *pp = t;
    rearm = tl->head == t;
    timer_list_update_earliest(tl);
    pthread_mutex_unlock(&tl->lock);
    if (rearm) {
        /* The context may be sleeping with a later deadline. */
        aio_notify_internal(t->ctx);
    }
}

void keel_timer_mod_ns(KeelTimer *t, int64_t expire_ns)
{
    timer_mod(t, expire_ns, false);
}

void keel_timer_mod_anticipate_ns(KeelTimer *t, int64_t expire_ns)
{
    timer_mod(t, expire_ns, true);
}

void keel_timer_deinit(KeelTimer *t)
{
    keel_timer_del(t);
}

void keel_timer_del(KeelTimer *t)
{
    TimerList *tl = &t->ctx->timers[t->type];

    pthread_mutex_lock(&tl->lock);
    if (t->expire_ns >= 0) {
        timer_list_unlink(tl, t);
        timer_list_update_earliest(tl);
    }
    pthread_mutex_unlock(&tl->lock);
}

bool keel_timer_pending(KeelTimer *t)
{
    TimerList *tl = &t->ctx->timers[t->type];
    bool pending;

    pthread_mutex_lock(&tl->lock);
    pending = t->expire_ns >= 0;
    pthread_mutex_unlock(&tl->lock);
    return pending;
}

void keel_timer_free(KeelTimer *t)
{
    if (t) {
        keel_timer_del(t);
        g_free(t);
    }
}
