/*
 * loop/timer.h — clocks and timers that fire in an AioContext.
 *
 * Clocks: KEEL_CLOCK_REALTIME is CLOCK_MONOTONIC in nanoseconds (it never
 * jumps; QEMU's QEMU_CLOCK_REALTIME); KEEL_CLOCK_VIRTUAL follows it but stops
 * while paused (process-wide) and resumes where it stopped, so its timers
 * neither fire nor count towards poll timeouts while it is paused;
 * KEEL_CLOCK_HOST is CLOCK_REALTIME, the wall clock (QEMU_CLOCK_HOST): it
 * jumps when the system time is set, and a timer on it fires when the wall
 * clock passes its deadline as seen at the next poll.
 *
 * A timer belongs to one context and its callback runs in that context's home
 * thread, once per keel_timer_mod_ns(), never before the deadline.  The
 * nearest deadline is folded into the context's poll timeout (nanoseconds
 * with ppoll, rounded up to whole milliseconds otherwise), so a loop never
 * busy-waits for a timer.
 *
 * Ownership: the caller owns a timer.  keel_aio_timer_new_ns() allocates
 * one (free it with keel_timer_free()); keel_timer_init() sets up one
 * embedded in the caller's own struct (QEMU's timer_init; end it with
 * keel_timer_deinit(), never keel_timer_free()).  Either way, before the
 * context goes away.  The fields of KeelTimer are private.
 *
 * Thread rules:
 *   keel_clock_get_ns, keel_clock_virtual_pause/resume    any thread
 *   keel_aio_timer_new_ns, keel_timer_init                any thread
 *   keel_timer_mod_ns, keel_timer_mod_anticipate_ns,
 *   keel_timer_del, keel_timer_pending                    any thread
 *   keel_timer_free, keel_timer_deinit                    home thread of the context
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
    KEEL_CLOCK_HOST,
    KEEL_CLOCK__MAX
} KeelClockType;

int64_t keel_clock_get_ns(KeelClockType type);

/* Stop / restart the virtual clock (idempotent).  Resuming wakes every
 * context so that virtual timers are rearmed. */
void keel_clock_virtual_pause(void);
void keel_clock_virtual_resume(void);

typedef struct KeelTimer KeelTimer;
typedef void KeelTimerCb(void *opaque);

/* Public only so that it can be embedded; use the functions below. */
struct KeelTimer {
    KeelAioContext *ctx;
    KeelClockType type;
    KeelTimerCb *cb;
    void *opaque;
    int64_t expire_ns;              /* -1: not pending; under the list lock */
    KeelTimer *next;                /* under the list lock */
};

/* Set up @t, in the caller's memory, for @ctx (not pending). */
void keel_timer_init(KeelTimer *t, KeelAioContext *ctx, KeelClockType type,
                     KeelTimerCb *cb, void *opaque);
/* Deletes @t; its memory stays the caller's. */
void keel_timer_deinit(KeelTimer *t);

KeelTimer *keel_aio_timer_new_ns(KeelAioContext *ctx, KeelClockType type,
                                 KeelTimerCb *cb, void *opaque);

/* Arm (or re-arm) to fire at @expire_ns, absolute on the timer's clock.  A
 * deadline in the past fires at the next poll. */
void keel_timer_mod_ns(KeelTimer *t, int64_t expire_ns);
/* Like keel_timer_mod_ns, but only ever brings the deadline forward: a
 * pending timer with an earlier (or equal) deadline is left alone. */
void keel_timer_mod_anticipate_ns(KeelTimer *t, int64_t expire_ns);
void keel_timer_del(KeelTimer *t);
bool keel_timer_pending(KeelTimer *t);
/* Deletes and frees. */
void keel_timer_free(KeelTimer *t);

#ifdef __cplusplus
}
#endif

#endif
