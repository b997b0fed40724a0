/*
 * loop/iothread.h — a thread that runs its own AioContext.
 *
 * keel_iothread_new() starts the thread (all async signals blocked, via
 * keel_thread_create) and returns once its context exists; the context's
 * home thread is the iothread, and adaptive polling is on (32 µs window
 * limit, like QEMU's default).  The iothread owns its context; it lives until
 * keel_iothread_free().
 *
 * keel_aio_run_in_context_wait() runs a function in a context's home thread
 * and waits for it.  The caller runs it inline when it is that home thread.
 * A caller that has a current context of its own keeps running it while it
 * waits (so two threads waiting on each other do not deadlock); others block.
 *
 * Thread rules:
 *   keel_iothread_new, keel_iothread_stop_join, keel_iothread_free
 *                                          any thread but the iothread itself
 *   keel_iothread_get_aio_context, keel_iothread_id   any thread
 *   keel_aio_run_in_context_wait           any thread
 * keel_iothread_stop_join() queues the stop behind everything already
 * scheduled into the context: BHs scheduled (and coroutines woken) before
 * the call all run before the thread exits.  Work scheduled from other
 * threads after the call starts may or may not run; after it returns it
 * never runs.
 */
#ifndef KEEL_LOOP_IOTHREAD_H
#define KEEL_LOOP_IOTHREAD_H

#include "aio.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct KeelIOThread KeelIOThread;

/* QEMU's default for iothreads: busy-poll at most 32 µs before sleeping
 * (poll-grow and poll-shrink 0).  Retune a running iothread with
 * keel_aio_context_set_poll_params() on its context. */
#define KEEL_IOTHREAD_POLL_MAX_NS 32768

/* Returns NULL (and logs) when the thread cannot be created. */
KeelIOThread *keel_iothread_new(const char *id);
KeelAioContext *keel_iothread_get_aio_context(KeelIOThread *t);
const char *keel_iothread_id(KeelIOThread *t);
/* Stops the loop once the BHs scheduled before this call have run, and joins
 * the thread.  Idempotent. */
void keel_iothread_stop_join(KeelIOThread *t);
/* Stops (if needed) and frees the thread and its context. */
void keel_iothread_free(KeelIOThread *t);

void keel_aio_run_in_context_wait(KeelAioContext *ctx, void (*fn)(void *), void *opaque);

#ifdef __cplusplus
}
#endif

#endif
