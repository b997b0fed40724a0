/*
 * loop/timer.h — clocks and timers that fire in an AioContext.
 *
 * Clocks: KEEL_CLOCK_REALTIME is CLOCK_MONOTONIC in nanoseconds (it never
 * jumps); KEEL_CLOCK_VIRTUAL follows it but stops while paused (process-wide)
 * and resumes where it stopped, so its timers neither fire nor count towards
 * poll timeouts while it is paused.
 *
 * A timer belongs to one context and its callback runs in that context's home
 * thread, once per keel_timer_mod_ns(), never before the deadline.  The
 * nearest deadline is folded into the context's poll timeout (nanoseconds
 * with ppoll, rounded up to whole milliseconds otherwise), so a loop never
 * busy-waits for a timer.
 *
 * Ownership: the caller owns a timer; free it with keel_timer_free() before
 * the context goes away.
 *
 * Thread rules:
 *   keel_clock_get_ns, keel_clock_virtual_pause/resume    any thread
 *   keel_aio_timer_new_ns                                 any thread
 *   keel_timer_mod_ns, keel_timer_del, keel_timer_pending any thread
 *   keel_timer_free                                       home thread of the context
 * A timer deleted from another thread may already be running in the home
 * thread; it is never started afterwards.
 */
#ifndef KEEL_LOOP_TIMER_H
#define KEEL_LOOP_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "aio.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    KEEL_CLOCK_REALTIME,
    KEEL_CLOCK_VIRTUAL,
    KEEL_CLOCK__MAX
} KeelClockType;

int64_t keel_clock_get_ns(KeelClockType type);

/* Stop / restart the virtual clock (idempotent).  Resuming wakes every
 * context so that virtual timers are rearmed. */
void keel_clock_virtual_pause(void);
void keel_clock_virtual_resume(void);

typedef struct KeelTimer KeelTimer;
typedef void KeelTimerCb(void *opaque);

KeelTimer *keel_aio_timer_new_ns(KeelAioContext *ctx, KeelClockType type,
                                 KeelTimerCb *cb, void *opaque);

/* Arm (or re-arm) to fire at @expire_ns, absolute on the timer's clock.  A
 * deadline in the past fires at the next poll. */
void keel_timer_mod_ns(KeelTimer *t, int64_t expire_ns);
void keel_timer_del(KeelTimer *t);
bool keel_timer_pending(KeelTimer *t);
/* Deletes and frees. */
void keel_timer_free(KeelTimer *t);

#ifdef __cplusplus
}
#endif

#endif
