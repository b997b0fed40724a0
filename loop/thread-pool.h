/*
 * loop/thread-pool.h — a pool of worker threads per AioContext for blocking
 * calls.
 *
 * keel_thread_pool_submit() queues @fn(@arg) for a worker; when it returns,
 * @cb(@opaque, ret) runs in the home thread of @ctx by a bottom half (@cb may
 * be NULL: fire and forget, as QEMU's thread_pool_submit).  The
 * pool is created on first use; workers are started on demand up to the
 * maximum (default 64), an idle worker exits after 10 s unless that would
 * leave fewer than the minimum (default 0).  Workers block every async
 * signal.
 *
 * keel_thread_pool_cancel(): a request no worker has started yet is removed
 * and completes with ret = -ECANCELED (its fn never runs); a started one is
 * never interrupted and completes normally.  Either way the completion
 * callback runs exactly once, later, from the BH (never inside cancel).
 *
 * Ownership: the pool owns a request until its completion callback has
 * returned; the pointer is invalid afterwards.  The pool dies with its
 * context: queued requests are dropped without callbacks, running ones are
 * waited for.
 *
 * Thread rules:
 *   keel_thread_pool_submit        any thread (completion: ctx's home thread)
 *   keel_thread_pool_cancel        the home thread of the request's context,
 *                                  before its completion callback ran
 *   keel_thread_pool_set_limits    any thread
 */
#ifndef KEEL_LOOP_THREAD_POOL_H
#define KEEL_LOOP_THREAD_POOL_H

#include "aio.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int KeelThreadPoolFunc(void *opaque);
typedef void KeelThreadPoolCompletion(void *opaque, int ret);
typedef struct KeelThreadPoolReq KeelThreadPoolReq;

KeelThreadPoolReq *keel_thread_pool_submit(KeelAioContext *ctx, KeelThreadPoolFunc *fn,
                                           void *arg, KeelThreadPoolCompletion *cb,
                                           void *opaque);
void keel_thread_pool_cancel(KeelThreadPoolReq *req);
/* 0 <= min <= max, max >= 1 (out-of-range values are clamped).  Starts
 * workers up to @min_workers; workers above @max_workers exit when idle. */
void keel_thread_pool_set_limits(KeelAioContext *ctx, int min_workers, int max_workers);

#ifdef __cplusplus
}
#endif

#endif
