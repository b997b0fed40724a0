/*
 * bench-coroutine: what coroutine operations cost, per backend, next to two
 * references measured by the same program: a plain (non-inlined) function
 * call and a bare sigsetjmp/siglongjmp pair (what one switch costs at the
 * least).  Every number is the best of several runs, in ns per operation.
 *
 * Both backends are measured in one process: KEEL_AVOID is re-read and the
 * pool drained, so fresh coroutines are bootstrapped by the other backend.
 * (Switching is the same sigsetjmp/siglongjmp code for both; the backends
 * differ in how a coroutine is started, which the unpooled create shows.)
 */
#include "config.h"

#undef _FORTIFY_SOURCE      /* as in coroutine.c */

#include "coroutine/coroutine.h"
#include "coroutine/co-lock.h"
#include "coroutine/coroutine-int.h"
#include "compat/avoid.h"
#include "compat/osdep.h"
#include "loop/iothread.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { RUNS = 5 };

typedef double BenchFn(long iterations);

/* Best of RUNS, each sized to take roughly 50 ms. */
static double measure(BenchFn *fn, long iterations)
{
    double best = 1e30;

    for (int run = 0; run < RUNS; run++) {
        double ns = fn(iterations);
        if (ns < best) {
            best = ns;
        }
    }
    return best;
}

static int64_t now_ns(void)
{
    return keel_monotonic_ns();
}

/* ---- references ----------------------------------------------------------- */

static __attribute__((noinline)) void plain_function(long *counter)
{
    __asm__ __volatile__("" : : : "memory");
    (*counter)++;
}

static void (*volatile plain_function_ptr)(long *) = plain_function;

static double bench_function_call(long n)
{
    long counter = 0;
    int64_t t0 = now_ns();

    for (long i = 0; i < n; i++) {
        plain_function_ptr(&counter);
    }
    return (double)(now_ns() - t0) / (double)n;
}

static sigjmp_buf jmp_ref;

static __attribute__((noinline)) void setjmp_longjmp_once(void)
{
    if (!sigsetjmp(jmp_ref, 0)) {
        siglongjmp(jmp_ref, 1);
    }
}

static double bench_setjmp_longjmp(long n)
{
    int64_t t0 = now_ns();

    for (long i = 0; i < n; i++) {
        setjmp_longjmp_once();
    }
    return (double)(now_ns() - t0) / (double)n;
}

/* ---- coroutines ---------------------------------------------------------- */

static void yield_forever_entry(void *opaque)
{
    (void)opaque;
    for (;;) {
        keel_coroutine_yield();
    }
}

static KeelCoroutine *yielder;

static double bench_enter_yield(long n)
{
    int64_t t0 = now_ns();

    for (long i = 0; i < n; i++) {
        keel_coroutine_enter(yielder);
    }
    return (double)(now_ns() - t0) / (double)n;
}

static void nop_entry(void *opaque)
{
    (void)opaque;
}

static double bench_create_enter_terminate(long n)
{
    int64_t t0 = now_ns();

    for (long i = 0; i < n; i++) {
        keel_coroutine_enter(keel_coroutine_create(nop_entry, NULL));
    }
    return (double)(now_ns() - t0) / (double)n;
}

/* Uncontended lock + unlock inside one coroutine. */
static long mutex_iterations;
static double mutex_result;

static void mutex_uncontended_entry(void *opaque)
{
    KeelCoMutex *m = opaque;
    int64_t t0 = now_ns();

    for (long i = 0; i < mutex_iterations; i++) {
        keel_co_mutex_lock(m);
        keel_co_mutex_unlock(m);
    }
    mutex_result = (double)(now_ns() - t0) / (double)mutex_iterations;
}

static double bench_mutex_uncontended(long n)
{
    KeelCoMutex m = KEEL_CO_MUTEX_INITIALIZER;

    mutex_iterations = n;
    keel_coroutine_enter(keel_coroutine_create(mutex_uncontended_entry, &m));
    return mutex_result;
}

/*
 * Hand-off: two coroutines in one thread take turns.  Each holds the mutex
 * across a yield, so the other is always queued when it unlocks: every
 * unlock hands ownership to the waiter, which then runs (deferred wake-up,
 * from the enter loop).  Per hand-off: unlock, the waiter's wake-up and its
 * switch in, the unlocker's failed lock and switch out, plus the enter and
 * yield that drive the turn.
 */
static KeelCoMutex handoff_mutex;

static void mutex_handoff_entry(void *opaque)
{
    long n = *(long *)opaque;

    for (long i = 0; i < n; i++) {
        keel_co_mutex_lock(&handoff_mutex);
        keel_coroutine_yield();
        keel_co_mutex_unlock(&handoff_mutex);
    }
}

static double bench_mutex_handoff(long n)
{
    KeelCoroutine *a, *b;
    int64_t t0;
    double ns;

    keel_co_mutex_init(&handoff_mutex);
    a = keel_coroutine_create(mutex_handoff_entry, &n);
    b = keel_coroutine_create(mutex_handoff_entry, &n);
    keel_coroutine_enter(a);            /* a holds it */
    keel_coroutine_enter(b);            /* b queues */
    t0 = now_ns();
    for (long i = 0; i < n - 1; i++) {
        /* the holder unlocks (hand-off), re-locks (queues) */
        keel_coroutine_enter(i % 2 ? b : a);
    }
    ns = (double)(now_ns() - t0) / (double)(n - 1);
    /* Drain: each coroutine is holding (suspended), queued or finished;
     * entering the holder until nobody holds finishes both. */
    while (handoff_mutex.locked) {
        keel_coroutine_enter(handoff_mutex.holder);
    }
    return ns;
}

/*
 * Hand-off between threads: one coroutine in each of two iothreads pass the
 * mutex back and forth.  The holder waits (yielding to its loop) until the
 * other coroutine is queued, then unlocks — handing the mutex over to the
 * other thread, where that coroutine resumes through a bottom half (plus an
 * eventfd wake-up when that thread sleeps) — and queues again itself.
 * Waiting for a waiter first keeps it a strict alternation: otherwise one
 * side could run away while the other thread is preempted.
 */
typedef struct CrossThread {
    KeelCoMutex mutex;
    long rounds;
    int finished;
    int64_t start_ns, end_ns;
} CrossThread;

static void cross_thread_entry(void *opaque)
{
    CrossThread *x = opaque;

    keel_co_mutex_lock(&x->mutex);
    if (!x->start_ns) {
        x->start_ns = -1;       /* the first holder; time from the first hand-off */
    }
    for (long i = 0; i < x->rounds; i++) {
        while (!__atomic_load_n(&x->mutex.waiters_head, __ATOMIC_ACQUIRE)) {
            keel_aio_co_schedule(keel_current_aio_context(), keel_coroutine_self());
            keel_coroutine_yield();
        }
        if (x->start_ns == -1) {
            x->start_ns = now_ns();
        }
        keel_co_mutex_unlock(&x->mutex);
        keel_co_mutex_lock(&x->mutex);
    }
    keel_co_mutex_unlock(&x->mutex);
    if (__atomic_add_fetch(&x->finished, 1, __ATOMIC_ACQ_REL) == 2) {
        x->end_ns = now_ns();
    }
}

static double bench_mutex_cross_thread(long n)
{
    KeelIOThread *threads[2] = { keel_iothread_new("bench-co-a"), keel_iothread_new("bench-co-b") };
    CrossThread x = { .rounds = n };

    if (!threads[0] || !threads[1]) {
        fprintf(stderr, "bench: cannot start iothreads\n");
        exit(1);
    }
    keel_co_mutex_init(&x.mutex);
    /* The first coroutine takes the mutex before the second one starts. */
    keel_aio_co_schedule(keel_iothread_get_aio_context(threads[0]),
                         keel_coroutine_create(cross_thread_entry, &x));
    while (!__atomic_load_n(&x.mutex.locked, __ATOMIC_ACQUIRE)) {
        usleep(100);
    }
    keel_aio_co_schedule(keel_iothread_get_aio_context(threads[1]),
                         keel_coroutine_create(cross_thread_entry, &x));
    /* Timestamps come from the coroutines; how we wait does not matter. */
    while (__atomic_load_n(&x.finished, __ATOMIC_ACQUIRE) < 2) {
        usleep(1000);
    }
    for (int i = 0; i < 2; i++) {
        keel_iothread_free(threads[i]);
    }
    /* each coroutine handed over once per round, plus the final unlock */
    return (double)(x.end_ns - x.start_ns) / (double)(2 * n + 1);
}

static void print_row(const char *backend, const char *operation, double ns)
{
    printf("%-12s %-36s %10.1f\n", backend, operation, ns);
}

static void bench_backend(const char *avoid)
{
    const char *error;
    const char *backend;
    KeelCoroutine *probe;

    /* Re-read KEEL_AVOID and empty the pool: the next coroutines are
     * bootstrapped by the backend under test. */
    if (keel_avoid_parse_for_testing(avoid, &error) < 0) {
        fprintf(stderr, "%s\n", error);
        exit(1);
    }
    coroutine_pool_set_enabled(true);
    coroutine_pool_drain();
    backend = keel_coroutine_backend(NULL);
    probe = keel_coroutine_create(nop_entry, NULL);
    if (strcmp(probe->backend, backend)) {
        fprintf(stderr, "bench: expected %s, got %s\n", backend, probe->backend);
        exit(1);
    }
    keel_coroutine_enter(probe);

    /* Never finishes, by design: it only yields. */
    yielder = keel_coroutine_create(yield_forever_entry, NULL);
    print_row(backend, "enter+yield round trip", measure(bench_enter_yield, 2000000));
    print_row(backend, "create+enter+terminate, pooled",
              measure(bench_create_enter_terminate, 1000000));
    coroutine_pool_set_enabled(false);
    print_row(backend, "create+enter+terminate, unpooled",
              measure(bench_create_enter_terminate, 5000));
    coroutine_pool_set_enabled(true);
    print_row(backend, "CoMutex lock+unlock, uncontended",
              measure(bench_mutex_uncontended, 2000000));
    print_row(backend, "CoMutex hand-off (2 coroutines)", measure(bench_mutex_handoff, 500000));
    print_row(backend, "CoMutex hand-off across 2 iothreads",
              measure(bench_mutex_cross_thread, 500));
}

int main(void)
{
    printf("# ns per operation, best of %d runs; stack %zu KiB\n", RUNS,
           keel_coroutine_get_stack_size() >> 10);
    printf("%-12s %-36s %10s\n", "backend", "operation", "ns/op");
    print_row("reference", "plain function call", measure(bench_function_call, 20000000));
    print_row("reference", "sigsetjmp+siglongjmp (one switch)",
              measure(bench_setjmp_longjmp, 10000000));
#ifdef CONFIG_COROUTINE_UCONTEXT
    bench_backend("");
#endif
#ifdef CONFIG_COROUTINE_SIGALTSTACK
    bench_backend("ucontext");
#endif
    return 0;
}
