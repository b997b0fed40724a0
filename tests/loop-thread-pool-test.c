/*
 * Thread pool: many more requests than workers (each completes exactly once,
 * with its own result, in the submitting thread, never more than max workers
 * at a time); cancel of a queued request (-ECANCELED, fn never runs) and of a
 * running one (runs to the end); idle workers exit down to the minimum;
 * completion in an iothread's context when submitted there; teardown with
 * requests in flight.
 */
#include "config.h"

#include "loop/aio.h"
#include "loop/aio-int.h"
#include "loop/iothread.h"
#include "loop/thread-pool.h"
#include "compat/atomic.h"
#include "tests/keel-test.h"
#include "tests/loop-test-util.h"

static pthread_t home_thread;

/* ---- submit many ---- */

#define NREQ 300
#define MAX_WORKERS 4

static int active, max_active;
static int completions[NREQ];
static int completed;
static bool bad_result, wrong_thread;

static int busy_fn(void *opaque)
{
    int id = (int)(intptr_t)opaque;
    int now = keel_atomic_fetch_add(&active, 1) + 1;
    int seen = keel_atomic_load_seq_cst(&max_active);

    while (now > seen) {
        int prev = keel_atomic_cmpxchg(&max_active, seen, now);
        if (prev == seen) {
            break;
        }
        seen = prev;
    }
    if (id % 8 == 0) {
        loop_test_sleep_ms(1);
    }
    keel_atomic_fetch_sub(&active, 1);
    return id * 3 + 1;
}

static void busy_done(void *opaque, int ret)
{
    int id = (int)(intptr_t)opaque;

    completions[id]++;
    completed++;
    if (ret != id * 3 + 1) {
        bad_result = true;
    }
    if (!pthread_equal(pthread_self(), home_thread)) {
        wrong_thread = true;
    }
}

static void test_submit_many(void)
{
    KeelAioContext *ctx = keel_aio_context_new();
    bool exactly_once = true;

    keel_thread_pool_set_limits(ctx, 0, MAX_WORKERS);
    for (int i = 0; i < NREQ; i++) {
        keel_thread_pool_submit(ctx, busy_fn, (void *)(intptr_t)i, busy_done, (void *)(intptr_t)i);
    }
    KEEL_IS(completed, 0, "no completion runs inside submit");
    KEEL_OK(thread_pool_worker_count(ctx) <= MAX_WORKERS, "never more workers than the maximum");
    while (completed < NREQ) {
        keel_aio_poll(ctx, true);
    }
    for (int i = 0; i < NREQ; i++) {
        exactly_once &= completions[i] == 1;
    }
    KEEL_IS(completed, NREQ, "%d requests on %d workers all completed", NREQ, MAX_WORKERS);
    KEEL_OK(exactly_once, "each completion ran exactly once");
    KEEL_OK(!bad_result, "each completion got its own result");
    KEEL_OK(!wrong_thread, "completions ran in the submitting (home) thread");
    KEEL_OK(keel_atomic_load_seq_cst(&max_active) <= MAX_WORKERS,
            "at most %d ran at once (saw %d)",
            MAX_WORKERS, keel_atomic_load_seq_cst(&max_active));
    KEEL_OK(thread_pool_worker_count(ctx) <= MAX_WORKERS, "worker count within the maximum");
    KEEL_OK(!keel_aio_poll(ctx, false), "nothing left to do");
    keel_aio_context_unref(ctx);
}

/* ---- cancel ---- */

typedef struct Gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool started;
    bool open;
} Gate;

static Gate gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false };

static int gated_fn(void *opaque)
{
    (void)opaque;
    pthread_mutex_lock(&gate.lock);
    gate.started = true;
    pthread_cond_broadcast(&gate.cond);
    while (!gate.open) {
        pthread_cond_wait(&gate.cond, &gate.lock);
    }
    pthread_mutex_unlock(&gate.lock);
    return 42;
}

static int plain_runs;

static int plain_fn(void *opaque)
{
    (void)opaque;
    keel_atomic_fetch_add(&plain_runs, 1);
    return 7;
}

typedef struct Result {
    int calls;
    int ret;
} Result;

static void record_done(void *opaque, int ret)
{
    Result *r = opaque;
    r->calls++;
    r->ret = ret;
}

static void test_cancel(void)
{
    KeelAioContext *ctx = keel_aio_context_new();
    Result ra = { 0 }, rb = { 0 }, rc = { 0 };
    KeelThreadPoolReq *a, *b;

    keel_thread_pool_set_limits(ctx, 0, 1);
    a = keel_thread_pool_submit(ctx, gated_fn, NULL, record_done, &ra);
    pthread_mutex_lock(&gate.lock);
    while (!gate.started) {
        pthread_cond_wait(&gate.cond, &gate.lock);
    }
    pthread_mutex_unlock(&gate.lock);
    /* The only worker is busy: b and c stay queued. */
    b = keel_thread_pool_submit(ctx, plain_fn, NULL, record_done, &rb);
    keel_thread_pool_submit(ctx, plain_fn, NULL, record_done, &rc);
    keel_thread_pool_cancel(b);
    KEEL_IS(rb.calls, 0, "cancel does not call the completion synchronously");
    while (!rb.calls) {
        keel_aio_poll(ctx, true);
    }
    KEEL_IS(rb.calls, 1, "cancelled queued request completed once");
    KEEL_IS(rb.ret, -ECANCELED, "... with -ECANCELED");
    keel_thread_pool_cancel(a);     /* running: must not be interrupted */
    KEEL_IS(ra.calls, 0, "the running request is still running");

    pthread_mutex_lock(&gate.lock);
    gate.open = true;
    pthread_cond_broadcast(&gate.cond);
    pthread_mutex_unlock(&gate.lock);
    while (!ra.calls || !rc.calls) {
        keel_aio_poll(ctx, true);
    }
    KEEL_IS(ra.calls, 1, "cancelled running request completed once");
    KEEL_IS(ra.ret, 42, "... with its own result");
    KEEL_IS(rc.calls, 1, "the request behind it completed once");
    KEEL_IS(rc.ret, 7, "... with its result");
    KEEL_IS(keel_atomic_load_seq_cst(&plain_runs), 1,
            "the cancelled request's function never ran");
    KEEL_OK(!keel_aio_poll(ctx, false), "nothing left to do");
    keel_aio_context_unref(ctx);
}

/* ---- idle workers exit ---- */

static int sleepy_fn(void *opaque)
{
    (void)opaque;
    loop_test_sleep_ms(20);
    return 0;
}

static void count_done(void *opaque, int ret)
{
    (void)ret;
    (*(int *)opaque)++;
}

static bool wait_workers(KeelAioContext *ctx, int n)
{
    for (int i = 0; i < 5000 && thread_pool_worker_count(ctx) != n; i++) {
        loop_test_sleep_ms(1);
    }
    return thread_pool_worker_count(ctx) == n;
}

static void test_idle_exit(void)
{
    KeelAioContext *ctx = keel_aio_context_new();
    int done = 0;

    thread_pool_set_idle_timeout_ns(ctx, 30 * 1000000LL);
    keel_thread_pool_set_limits(ctx, 2, 4);
    KEEL_IS(thread_pool_worker_count(ctx), 2, "the minimum number of workers is started");
    for (int i = 0; i < 8; i++) {
        keel_thread_pool_submit(ctx, sleepy_fn, NULL, count_done, &done);
    }
    KEEL_OK(thread_pool_worker_count(ctx) <= 4, "busy pool within its maximum");
    while (done < 8) {
        keel_aio_poll(ctx, true);
    }
    KEEL_IS(done, 8, "all sleepy requests completed");
    KEEL_OK(wait_workers(ctx, 2), "idle workers exited down to the minimum (2)");
    keel_thread_pool_set_limits(ctx, 0, 4);
    KEEL_OK(wait_workers(ctx, 0), "with minimum 0 every idle worker exits");
    /* The pool still works after all workers left. */
    keel_thread_pool_submit(ctx, plain_fn, NULL, count_done, &done);
    while (done < 9) {
        keel_aio_poll(ctx, true);
    }
    KEEL_IS(done, 9, "a new request after all workers exited completes");
    keel_aio_context_unref(ctx);
}

/* ---- completion in an iothread ---- */

typedef struct Remote {
    KeelAioContext *ctx;
    int calls;
    bool right_thread;
    bool finished;
} Remote;

static void remote_done(void *opaque, int ret)
{
    Remote *r = opaque;
    r->calls++;
    r->right_thread = ret == 7 && keel_current_aio_context() == r->ctx &&
                      keel_aio_context_in_home_thread(r->ctx);
    keel_atomic_store_seq_cst(&r->finished, true);
}

static void remote_submit(void *opaque)
{
    Remote *r = opaque;
    keel_thread_pool_submit(r->ctx, plain_fn, NULL, remote_done, r);
}

static void test_iothread_completion(void)
{
    KeelIOThread *t = keel_iothread_new("pool");
    Remote r = { 0 };

    r.ctx = keel_iothread_get_aio_context(t);
    keel_aio_run_in_context_wait(r.ctx, remote_submit, &r);
    for (int i = 0; i < 5000 && !keel_atomic_load_seq_cst(&r.finished); i++) {
        loop_test_sleep_ms(1);
    }
    keel_iothread_stop_join(t);
    KEEL_IS(r.calls, 1, "request submitted in an iothread completed once");
    KEEL_OK(r.right_thread, "... in that iothread's context");
    keel_iothread_free(t);
}

/* ---- teardown with work in flight ---- */

static void never_called(void *opaque, int ret)
{
    (void)ret;
    (*(int *)opaque)++;
}

static void test_teardown(void)
{
    KeelAioContext *ctx = keel_aio_context_new();
    int calls = 0;

    keel_thread_pool_set_limits(ctx, 0, 2);
    for (int i = 0; i < 20; i++) {
        keel_thread_pool_submit(ctx, sleepy_fn, NULL, never_called, &calls);
    }
    keel_aio_context_unref(ctx);
    KEEL_IS(calls, 0, "unref with requests in flight: waits for workers, drops callbacks");
}

int main(void)
{
    loop_test_sigcont_start();
    home_thread = pthread_self();
    test_submit_many();
    test_cancel();
    test_idle_exit();
    test_iothread_completion();
    test_teardown();
    loop_test_sigcont_report();
    return keel_test_done();
}
