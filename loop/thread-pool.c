/*
 * The per-AioContext thread pool.  One mutex guards the queue, the done list
 * and the worker counts; workers sleep on a condition variable (monotonic
 * clock, so idle timeouts survive wall-clock jumps).  Finished requests go to
 * a done list and one BH of the context hands them to their callbacks.
 */
#include "config.h"

#include "loop/thread-pool.h"
#include "loop/aio-int.h"
#include "compat/osdep.h"

#include <assert.h>
#include <errno.h>
#include <time.h>

#define POOL_DEFAULT_MAX_WORKERS 64
#define POOL_DEFAULT_IDLE_TIMEOUT_NS (10 * 1000000000LL)

typedef enum {
    REQ_QUEUED,     /* in pool->queue */
    REQ_ACTIVE,     /* a worker runs fn */
    REQ_DONE,       /* in pool->done, waiting for the completion BH */
} ReqState;

struct KeelThreadPoolReq {
    ThreadPool *pool;
    KeelThreadPoolFunc *fn;
    void *arg;
    KeelThreadPoolCompletion *cb;
    void *opaque;
    ReqState state;                 /* under pool->lock */
    int ret;                        /* under pool->lock */
    KeelThreadPoolReq *next;        /* queue or done list; under pool->lock */
};

typedef struct ReqList {
    KeelThreadPoolReq *head, *tail;
} ReqList;

struct ThreadPool {
    KeelAioContext *ctx;
    KeelBH *completion_bh;
    pthread_mutex_t lock;
    pthread_cond_t work_cond;       /* workers wait for requests */
    pthread_cond_t exit_cond;       /* teardown waits for the last worker */
    ReqList queue;
    ReqList done;
    ReqList ready;                  /* home thread only */
    int cur_workers;
    int idle_workers;               /* waiting in work_cond */
    int wakeups;                    /* signals sent, not yet consumed */
    int min_workers, max_workers;
    unsigned in_flight;             /* atomic: submitted, callback not run yet */
    int64_t idle_timeout_ns;
    bool stopping;
    bool spawn_failed_logged;
};

static void req_list_append(ReqList *l, KeelThreadPoolReq *req)
{
    req->next = NULL;
    if (l->tail) {
        l->tail->next = req;
    } else {
        l->head = req;
    }
    l->tail = req;
}

static KeelThreadPoolReq *req_list_pop(ReqList *l)
{
    KeelThreadPoolReq *req = l->head;

    if (req) {
        l->head = req->next;
        if (!l->head) {
            l->tail = NULL;
        }
        req->next = NULL;
    }
    return req;
}

static void req_list_remove(ReqList *l, KeelThreadPoolReq *req)
{
    KeelThreadPoolReq *prev = NULL;

    for (KeelThreadPoolReq *r = l->head; r; prev = r, r = r->next) {
        if (r == req) {
            if (prev) {
                prev->next = r->next;
            } else {
                l->head = r->next;
            }
            if (l->tail == r) {
                l->tail = prev;
            }
            r->next = NULL;
            return;
        }
    }
}

static void deadline_after(struct timespec *ts, int64_t ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ns / 1000000000LL;
    ts->tv_nsec += ns % 1000000000LL;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *worker_thread(void *opaque)
{
    ThreadPool *pool = opaque;

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        KeelThreadPoolReq *req;
        bool timed_out = false;

        while (!pool->queue.head && !pool->stopping &&
               pool->cur_workers <= pool->max_workers) {
            struct timespec deadline;
            int rc;

            if (timed_out && pool->cur_workers > pool->min_workers) {
                break;
            }
            deadline_after(&deadline, pool->idle_timeout_ns);
            pool->idle_workers++;
            rc = pthread_cond_timedwait(&pool->work_cond, &pool->lock, &deadline);
            pool->idle_workers--;
            if (pool->wakeups > 0) {
                /* Maybe not for us, but whoever it was for finds the queue
                 * non-empty when it wakes for any reason, or we serve it. */
                pool->wakeups--;
            }
            timed_out = rc == ETIMEDOUT;
        }
        if (pool->stopping || !pool->queue.head) {
            break;      /* stopping, idle too long, or above the maximum */
        }
        req = req_list_pop(&pool->queue);
        req->state = REQ_ACTIVE;
        pthread_mutex_unlock(&pool->lock);

        int ret = req->fn(req->arg);

        pthread_mutex_lock(&pool->lock);
        req->ret = ret;
        req->state = REQ_DONE;
        req_list_append(&pool->done, req);
        /* Lock-free and never blocks; under the lock so teardown (which
         * waits for this worker under the lock) sees the BH alive. */
        keel_bh_schedule(pool->completion_bh);
    }
    pool->cur_workers--;
    if (pool->cur_workers == 0) {
        pthread_cond_broadcast(&pool->exit_cond);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* Under pool->lock. */
static bool spawn_worker(ThreadPool *pool)
{
    pthread_t tid;
    int ret = keel_thread_create(&tid, "keel-worker", worker_thread, pool);

    if (ret < 0) {
        if (!pool->spawn_failed_logged) {
            keel_log("thread pool: cannot start a worker: %s", g_strerror(-ret));
            pool->spawn_failed_logged = true;
        }
        return false;
    }
    pthread_detach(tid);
    pool->cur_workers++;
    return true;
}

/* Under pool->lock: make sure some worker will pick up a queued request. */
static bool kick_worker(ThreadPool *pool)
{
    if (pool->idle_workers > pool->wakeups) {
        pool->wakeups++;
        return true;
    } else if (pool->cur_workers < pool->max_workers) {
        spawn_worker(pool);
    }
    /* Otherwise every worker is busy; one takes it when it finishes. */
    return false;
}

/* Completion BH, in the context's home thread. */
static void completion_bh_cb(void *opaque)
{
    ThreadPool *pool = opaque;
    KeelThreadPoolReq *req;

    pthread_mutex_lock(&pool->lock);
    if (pool->done.head) {
        if (pool->ready.tail) {
            pool->ready.tail->next = pool->done.head;
        } else {
            pool->ready.head = pool->done.head;
        }
        pool->ready.tail = pool->done.tail;
        pool->done.head = pool->done.tail = NULL;
    }
    pthread_mutex_unlock(&pool->lock);
    /* One lock round-trip per batch, not per request.  A callback that runs
     * a nested aio_poll still gets the rest through the reschedule. */
    while ((req = req_list_pop(&pool->ready))) {
        if (pool->ready.head) {
            keel_bh_schedule(pool->completion_bh);
        }
        if (req->cb) {
            req->cb(req->opaque, req->ret);
        }
        g_free(req);
        keel_atomic_fetch_sub(&pool->in_flight, 1);
    }
    /* Drop a reschedule from above that has nothing left to hand out, so an
     * idle aio_poll reports no progress; under the lock, so a worker's new
     * schedule (made after it appends to done) comes after the cancel. */
    pthread_mutex_lock(&pool->lock);
    if (!pool->done.head && !pool->ready.head) {
        keel_bh_cancel(pool->completion_bh);
    }
    pthread_mutex_unlock(&pool->lock);
}

static ThreadPool *thread_pool_get(KeelAioContext *ctx)
{
    ThreadPool *pool;

    pthread_mutex_lock(&ctx->pool_lock);
    pool = keel_atomic_read(&ctx->pool);
    if (!pool) {
        pthread_condattr_t attr;

        pool = g_new0(ThreadPool, 1);
        pool->ctx = ctx;
        pool->completion_bh = keel_aio_bh_new(ctx, completion_bh_cb, pool);
        pthread_mutex_init(&pool->lock, NULL);
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&pool->work_cond, &attr);
        pthread_cond_init(&pool->exit_cond, &attr);
        pthread_condattr_destroy(&attr);
        pool->max_workers = POOL_DEFAULT_MAX_WORKERS;
        pool->idle_timeout_ns = POOL_DEFAULT_IDLE_TIMEOUT_NS;
        keel_atomic_store_release(&ctx->pool, pool);
    }
    pthread_mutex_unlock(&ctx->pool_lock);
    return pool;
}

bool thread_pool_busy(KeelAioContext *ctx)
{
    ThreadPool *pool = keel_atomic_load_acquire(&ctx->pool);

    return pool && keel_atomic_read(&pool->in_flight) != 0;
}

KeelThreadPoolReq *keel_thread_pool_submit(KeelAioContext *ctx, KeelThreadPoolFunc *fn,
                                           void *arg, KeelThreadPoolCompletion *cb,
                                           void *opaque)
{
    ThreadPool *pool = thread_pool_get(ctx);
    KeelThreadPoolReq *req = g_new0(KeelThreadPoolReq, 1);

    req->pool = pool;
    req->fn = fn;
    req->arg = arg;
    req->cb = cb;
    req->opaque = opaque;
    req->state = REQ_QUEUED;
    keel_atomic_fetch_add(&pool->in_flight, 1);
    pthread_mutex_lock(&pool->lock);
    req_list_append(&pool->queue, req);
    bool sig = kick_worker(pool);
    pthread_mutex_unlock(&pool->lock);
    if (sig) {
        pthread_cond_signal(&pool->work_cond);
    }
    return req;
}

void keel_thread_pool_cancel(KeelThreadPoolReq *req)
{
    ThreadPool *pool = req->pool;

    pthread_mutex_lock(&pool->lock);
    if (req->state == REQ_QUEUED) {
        req_list_remove(&pool->queue, req);
        req->ret = -ECANCELED;
        req->state = REQ_DONE;
        req_list_append(&pool->done, req);
        keel_bh_schedule(pool->completion_bh);
    }
    pthread_mutex_unlock(&pool->lock);
}

void keel_thread_pool_set_limits(KeelAioContext *ctx, int min_workers, int max_workers)
{
    ThreadPool *pool = thread_pool_get(ctx);

    if (max_workers < 1) {
        max_workers = 1;
    }
    if (min_workers < 0) {
        min_workers = 0;
    }
    if (min_workers > max_workers) {
        min_workers = max_workers;
    }
    pthread_mutex_lock(&pool->lock);
    pool->min_workers = min_workers;
    pool->max_workers = max_workers;
    while (pool->cur_workers < pool->min_workers && spawn_worker(pool)) {
    }
    /* Workers above a lowered maximum, and idle ones that may now time out
     * earlier, re-check their conditions. */
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->lock);
}

void thread_pool_set_idle_timeout_ns(KeelAioContext *ctx, int64_t ns)
{
    ThreadPool *pool = thread_pool_get(ctx);

    pthread_mutex_lock(&pool->lock);
    pool->idle_timeout_ns = ns > 0 ? ns : 1;
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->lock);
}

int thread_pool_worker_count(KeelAioContext *ctx)
{
    ThreadPool *pool = thread_pool_get(ctx);
    int n;

    pthread_mutex_lock(&pool->lock);
    n = pool->cur_workers;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

void thread_pool_free(ThreadPool *pool)
{
    KeelThreadPoolReq *req;

    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    while ((req = req_list_pop(&pool->queue))) {
        g_free(req);
    }
    pthread_cond_broadcast(&pool->work_cond);
    while (pool->cur_workers > 0) {
        pthread_cond_wait(&pool->exit_cond, &pool->lock);
    }
    while ((req = req_list_pop(&pool->done))) {
        g_free(req);
    }
    while ((req = req_list_pop(&pool->ready))) {
        g_free(req);
    }
    pthread_mutex_unlock(&pool->lock);
    keel_bh_delete(pool->completion_bh);
    pthread_cond_destroy(&pool->work_cond);
    pthread_cond_destroy(&pool->exit_cond);
    pthread_mutex_destroy(&pool->lock);
    g_free(pool);
}
