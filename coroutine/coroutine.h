/*
 * coroutine/coroutine.h — cooperative coroutines and their loop integration.
 *
 * A coroutine is a function running on its own stack that can suspend
 * itself (keel_coroutine_yield) and be resumed later (keel_coroutine_enter)
 * by whoever holds a pointer to it.  Entering is a call: the enterer is
 * suspended until the coroutine yields or returns, and a yield always goes
 * back to whoever entered it *this* time (never to an earlier enterer that
 * may be gone).  A coroutine whose entry function returns is finished: it
 * goes back to a pool and the pointer must not be used again.
 *
 * Backends.  Two are compiled in where the system has them:
 *   ucontext     makecontext() starts a coroutine once; every switch is a
 *                sigsetjmp/siglongjmp that saves no signal mask (no syscall).
 *   sigaltstack  the classic bootstrap: a signal delivered on the new stack
 *                captures a jump buffer there (process-wide state, so it is
 *                serialised and restores the previous handler, alternate
 *                stack and signal mask).  Switches are the same as above.
 * ucontext is preferred; KEEL_AVOID=ucontext (or makecontext failing at run
 * time) selects sigaltstack for coroutines created from then on.
 * keel_coroutine_backend() says which one and why.
 *
 * Stacks are mmap'd with a PROT_NONE guard page at the low end (an overflow
 * faults instead of corrupting memory).  Size: keel_coroutine_set_stack_size(),
 * or the environment variable KEEL_COROUTINE_STACK_SIZE (bytes, with an
 * optional k/m suffix); default 1 MiB.  Finished coroutines are kept for
 * reuse in a per-thread cache plus a bounded global pool (capped far below
 * vm.max_map_count, since every stack costs two mappings); a thread's cache
 * moves to the global pool when the thread exits.  KEEL_COROUTINE_POOL=0
 * disables reuse (useful with valgrind to catch use-after-free).
 *
 * Home context.  Each coroutine remembers the AioContext (and thread) of
 * whoever entered it last (keel_current_aio_context() at that moment).  A
 * wake-up from another thread (keel_aio_co_wake) always resumes it there,
 * through a bottom half, never inline in the waker's thread.
 *
 * Thread-local variables.  A coroutine that yields may be resumed in another
 * thread (keel_aio_co_reschedule_self, or a wake-up after its home changed).
 * The compiler, not knowing that, may compute the address of a __thread
 * variable once and reuse it after the yield, silently touching the old
 * thread's copy.  So coroutine code must never keep a pointer to a
 * thread-local variable across a yield (or anything that may yield), and
 * thread-locals that coroutine code reads should be reached through
 * non-inlined accessors: KEEL_DEFINE_STATIC_CO_TLS below makes them.
 *
 * Thread rules (per function below).  "Any thread" means any thread,
 * including threads without an AioContext.  A coroutine must be entered by
 * one thread at a time; moving it to another thread is done only by
 * scheduling it there while it is suspended.
 */
#ifndef KEEL_COROUTINE_COROUTINE_H
#define KEEL_COROUTINE_COROUTINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../loop/aio.h"
#include "../loop/timer.h"
#include "../loop/thread-pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct KeelCoroutine KeelCoroutine;
typedef void KeelCoroutineEntry(void *opaque);

/* ---- core ---------------------------------------------------------------- */

/* A new coroutine that will run entry(opaque) when first entered.  Taken
 * from the pool when possible.  Aborts when no stack can be mapped (like
 * g_malloc: there is no useful recovery).  Any thread. */
KeelCoroutine *keel_coroutine_create(KeelCoroutineEntry *entry, void *opaque);

/* Run @co until it yields or finishes; then run any coroutines it woke in
 * this thread (see keel_aio_co_wake), then return.  Records the caller's
 * AioContext as @co's home.  Aborts if @co is already entered (running, or
 * up the chain of callers) or has a wake-up scheduled.  Any thread that
 * may run @co now (its home thread, or any thread for a new coroutine). */
void keel_coroutine_enter(KeelCoroutine *co);

/* Suspend the current coroutine and return to whoever entered it.  Aborts
 * outside a coroutine.  Coroutine context only. */
void keel_coroutine_yield(void);

/* The running coroutine, or NULL outside a coroutine.  Any thread. */
KeelCoroutine *keel_coroutine_self(void);

/* Whether the caller runs in a coroutine.  Any thread. */
bool keel_in_coroutine(void);

/* Whether @co has been entered and has not yielded or finished since (it is
 * running or has entered another coroutine).  Any thread, racy by nature
 * unless @co belongs to the caller's thread. */
bool keel_coroutine_entered(KeelCoroutine *co);

/* @co's home AioContext (NULL when it was entered from a thread without
 * one).  Any thread. */
KeelAioContext *keel_coroutine_get_aio_context(KeelCoroutine *co);

/* Stack size for coroutines created from now on (rounded up to pages; at
 * least 16 KiB).  Pooled coroutines of another size are not reused.  Any
 * thread. */
void keel_coroutine_set_stack_size(size_t bytes);
size_t keel_coroutine_get_stack_size(void);

/* "ucontext" or "sigaltstack": the backend new coroutines use; @reason (may
 * be NULL) gets "default", "KEEL_AVOID", "only backend built", or the errno
 * name that made ucontext fail.  Any thread. */
const char *keel_coroutine_backend(const char **reason);

/* Registers the "coroutine" line of the features report (compiled=
 * "ucontext,sigaltstack" as built).  Start-up, one thread. */
void keel_coroutine_features_register(void);

/* ---- loop integration (co-loop.c) ---------------------------------------- */

/* Resume @co in @ctx: enter it now when @ctx is the caller's context and
 * the caller is not a coroutine; after the current coroutine yields when
 * the caller is a coroutine of @ctx's thread; otherwise through a one-shot
 * bottom half in @ctx.  @co must be suspended, or about to suspend in the
 * thread that is running it.  Any thread. */
void keel_aio_co_enter(KeelAioContext *ctx, KeelCoroutine *co);

/* keel_aio_co_enter(home of @co, @co): the way to wake a coroutine that
 * waits for an event.  Aborts when the waker is in another thread and @co
 * has no home AioContext, and when @co already has a wake-up pending.
 * Any thread. */
void keel_aio_co_wake(KeelCoroutine *co);

/* Enter @co from a bottom half in @ctx (it becomes @co's home).  Aborts if
 * @co is already scheduled.  @co must be suspended by the time the bottom
 * half runs.  Any thread. */
void keel_aio_co_schedule(KeelAioContext *ctx, KeelCoroutine *co);

/* Move the running coroutine to @ctx: returns running in @ctx's home
 * thread.  Safe against the new thread entering us before we yielded (the
 * move is started from a bottom half of the old context).  Coroutine
 * context only, in a thread with an AioContext. */
void keel_aio_co_reschedule_self(KeelAioContext *ctx);

/* Sleep @ns nanoseconds of @type's clock on a timer of the current
 * AioContext.  Coroutine context only, in a thread with an AioContext. */
void keel_co_sleep_ns(KeelClockType type, int64_t ns);

/* Run fn(arg) in the current AioContext's thread pool and return its
 * result; the coroutine yields meanwhile and resumes in its own context.
 * Coroutine context only, in a thread with an AioContext. */
int keel_thread_pool_submit_co(KeelThreadPoolFunc *fn, void *arg);

/* ---- thread-local variables safe across yields ---------------------------
 * KEEL_DEFINE_STATIC_CO_TLS(int, counter) defines a static __thread
 * variable and three accessors, get_counter(), set_counter(v) and
 * get_ptr_counter().  They are never inlined and contain an empty asm
 * statement, so the compiler can neither inline them nor treat them as
 * pure: every call computes the address afresh for the thread that is
 * running now.  (A pointer from get_ptr_X() is still only valid until the
 * next yield.) */
#define KEEL_DEFINE_STATIC_CO_TLS(type, var)                                 \
    static __thread type keel_co_tls_##var;                                 \
    static __attribute__((noinline, unused)) type get_##var(void)           \
    {                                                                       \
        type *keel_p_ = &keel_co_tls_##var;                                 \
        __asm__ __volatile__("" : "+r"(keel_p_));                           \
        return *keel_p_;                                                    \
    }                                                                       \
    static __attribute__((noinline, unused)) void set_##var(type keel_v_)   \
    {                                                                       \
        type *keel_p_ = &keel_co_tls_##var;                                 \
        __asm__ __volatile__("" : "+r"(keel_p_));                           \
        *keel_p_ = keel_v_;                                                 \
    }                                                                       \
    static __attribute__((noinline, unused)) type *get_ptr_##var(void)      \
    {                                                                       \
        type *keel_p_ = &keel_co_tls_##var;                                 \
        __asm__ __volatile__("" : "+r"(keel_p_));                           \
        return keel_p_;                                                     \
    }

#ifdef __cplusplus
}
#endif

#endif
