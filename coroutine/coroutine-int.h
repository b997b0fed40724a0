/*
 * coroutine/coroutine-int.h — internal to coroutine/: the coroutine record,
 * the backend interface and the switch primitive.  Not installed.
 *
 * Division of labour.  The core (coroutine.c) owns the record, its stack
 * (mmap'd, guard page below, registered with valgrind), the pool and every
 * switch.  A switch is always the same sigsetjmp/siglongjmp pair with
 * savemask = 0, so it costs no system call whichever backend built the
 * coroutine.  A backend only *bootstraps*: it gets code running on a fresh
 * stack once, captures co->env there and returns to the creator.  A later
 * siglongjmp(co->env, CO_ACTION_ENTER) then runs coroutine_trampoline(co)
 * on the coroutine's stack.  That is why pooled coroutines need no backend
 * call at all, and why coroutines bootstrapped by different backends can be
 * mixed in one process.
 *
 * Threads: a coroutine runs on one thread at a time; it can move to another
 * thread only while it is suspended (see keel_aio_co_schedule()).  The
 * fields marked "atomic" are read by other threads.
 */
#ifndef KEEL_COROUTINE_COROUTINE_INT_H
#define KEEL_COROUTINE_COROUTINE_INT_H

#include "coroutine/coroutine.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef KEEL_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef KEEL_TSAN
#include <sanitizer/tsan_interface.h>
#endif

/* The value siglongjmp() delivers; never 0 (sigsetjmp's first return). */
typedef enum CoroutineAction {
    CO_ACTION_ENTER = 1,
    CO_ACTION_YIELD = 2,
    CO_ACTION_TERMINATE = 3,
} CoroutineAction;

struct KeelCoroutine {
    sigjmp_buf env;                 /* where to resume this coroutine */
    KeelCoroutineEntry *entry;
    void *entry_arg;

    /* Who entered us and gets control back at yield/termination; NULL while
     * suspended.  Non-NULL means "entered" (running or up the chain). */
    KeelCoroutine *caller;

    /* Home: the AioContext and thread that entered us last (atomic). */
    KeelAioContext *ctx;
    const void *home_thread;

    /* Non-NULL (the scheduler's name) from the moment a wake-up is queued
     * until it runs; a second wake-up in between aborts (atomic). */
    const char *scheduled;

    /* Link for exactly one of: a CoQueue, a CoMutex's waiters, or another
     * coroutine's deferred wake-ups (a coroutine waits for one thing). */
    KeelCoroutine *next;

    /* Coroutines woken by us in our own thread, entered once we yield or
     * terminate, so that waking never nests switches. */
    KeelCoroutine *wakeup_head, *wakeup_tail;

    KeelCoroutine *pool_next;

    /* The stack: [stack, stack + stack_size) usable, the guard page below. */
    void *map;
    size_t map_size;
    void *stack;
    size_t stack_size;
    unsigned valgrind_stack_id;
    void *tsan_fiber;               /* ThreadSanitizer's context for it */
    const char *backend;            /* which backend bootstrapped it */
};

/* ---- backends ------------------------------------------------------------ */
typedef struct CoroutineBackend {
    const char *name;
    /* Run code on co's fresh stack [co->stack, +co->stack_size) once so that
     * co->env is captured there, then return.  Returns 0, or -errno when
     * the mechanism is refused at run time (the core then falls back). */
    int (*bootstrap)(KeelCoroutine *co);
} CoroutineBackend;

#ifdef CONFIG_COROUTINE_UCONTEXT
extern const CoroutineBackend coroutine_ucontext_backend;
#endif
#ifdef CONFIG_COROUTINE_SIGALTSTACK
extern const CoroutineBackend coroutine_sigaltstack_backend;
#endif

/* What a backend calls on the new stack after capturing co->env, once the
 * first CO_ACTION_ENTER arrives: runs the entry, terminates, and loops for
 * the next user of a pooled coroutine.  Never returns. */
void coroutine_trampoline(KeelCoroutine *co) __attribute__((noreturn));

/* ---- AddressSanitizer fiber annotations ---------------------------------
 * ASan must be told when the stack changes under it, or it reports false
 * stack errors after a siglongjmp onto another stack.  No-ops otherwise. */
static inline void coroutine_asan_start(void **fake_stack_save,
                                        const void *bottom, size_t size)
{
#ifdef KEEL_ASAN
    __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
    (void)fake_stack_save; (void)bottom; (void)size;
#endif
}

static inline void coroutine_asan_finish(void *fake_stack_save,
                                         const void **bottom_old, size_t *size_old)
{
#ifdef KEEL_ASAN
    __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
    (void)fake_stack_save; (void)bottom_old; (void)size_old;
#endif
}

/* ---- ThreadSanitizer fibers ----------------------------------------------
 * TSan keeps a shadow call stack and the sigsetjmp buffers per thread; each
 * coroutine gets a fiber of its own, and every jump is preceded by a switch
 * to the fiber of the code that will run (with synchronisation: a switch is
 * a happens-before edge).  No-ops otherwise. */
static inline void *coroutine_tsan_current_fiber(void)
{
#ifdef KEEL_TSAN
    return __tsan_get_current_fiber();
#else
    return NULL;
#endif
}

static inline void coroutine_tsan_switch(void *fiber)
{
#ifdef KEEL_TSAN
    __tsan_switch_to_fiber(fiber, 0);
#else
    (void)fiber;
#endif
}

/* ---- internal helpers shared by the coroutine/ files ---------------------------- */

/* Print "keel: <message>" and abort: misuse that must not go unnoticed. */
void coroutine_fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* The calling thread's identity as stored in co->home_thread. */
const void *coroutine_thread_token(void);

/* keel_coroutine_enter() with @ctx recorded as @co's home (the bottom
 * half that runs a scheduled coroutine knows its context). */
void coroutine_enter_ctx(KeelAioContext *ctx, KeelCoroutine *co);

/* Queue @co to be entered by this thread right after the current coroutine
 * yields or terminates (the caller must be in a coroutine).  @who names the
 * caller for the double-wake message. */
void coroutine_wake_deferred(KeelCoroutine *co, const char *who);

/* Claim co->scheduled for @who; aborts naming both parties if taken. */
void coroutine_mark_scheduled(KeelCoroutine *co, const char *who);
/* Release the claim (the scheduled wake-up is about to run). */
void coroutine_clear_scheduled(KeelCoroutine *co);

/* Testing and benchmarking hooks (tests link libkeel statically). */
void coroutine_pool_set_enabled(bool enabled);
void coroutine_pool_drain(void);        /* this thread's and the global pool */
unsigned coroutine_pool_global_max(void);
unsigned coroutine_pool_global_size(void);

/* Lets KEEL_AIO_WAIT_WHILE (loop/) wait in coroutines; once, before the
 * first coroutine is created (co-loop.c). */
void coroutine_install_wait_ops(void);

#endif
