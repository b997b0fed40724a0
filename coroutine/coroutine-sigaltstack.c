/*
 * sigaltstack backend: portable where makecontext is missing or broken.
 *
 * The only standard way to get code running on an arbitrary stack without
 * makecontext is a signal delivered on an alternate signal stack:
 *
 *   1. block every signal; install a SIGUSR2 handler with SA_ONSTACK and
 *      make the new coroutine stack the thread's alternate signal stack;
 *   2. unblock SIGUSR2 alone and send it to this thread, then block it again;
 *   3. the handler, now on the new stack, sigsetjmp()s and *returns*, so the
 *      kernel finishes signal delivery normally (sigreturn);
 *   4. restore the previous alternate stack and handler, then siglongjmp()
 *      back into the dead handler frame: we are on the new stack again,
 *      outside any signal context, and capture co->env there;
 *   5. jump back to the creator and restore its signal mask.
 *
 * Signal handlers and (for step 2) the SIGUSR2 disposition are process-wide,
 * so bootstraps are serialised by a mutex.  Everything stays blocked from
 * step 1 to step 5 so that no other signal can be delivered onto the new
 * stack and overwrite the handler frame that step 4 jumps into.  A SIGUSR2
 * already pending for this thread, or sent to the process during a
 * bootstrap, is consumed by it; the pool keeps bootstraps rare.
 */
#include "config.h"

/* See coroutine.c: the fortified longjmp refuses cross-stack jumps. */
#undef _FORTIFY_SOURCE

#include "coroutine/coroutine-int.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#ifdef CONFIG_VALGRIND
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#endif

/* All under boot_lock. */
static pthread_mutex_t boot_lock = PTHREAD_MUTEX_INITIALIZER;
static KeelCoroutine *boot_co;
static sigjmp_buf *boot_creator_env;
static sigjmp_buf boot_handler_env;
static pthread_t boot_thread;
static void *boot_creator_tsan_fiber;
static volatile sig_atomic_t boot_handler_ran;

/* Step 4, on the coroutine stack: capture co->env, go back to the creator;
 * continue from here on the first enter. */
static __attribute__((noinline, noreturn)) void sigaltstack_boot_finish(KeelCoroutine *co)
{
    const void *creator_bottom = NULL;
    size_t creator_size = 0;
    void *fake_stack_save = NULL;

    coroutine_asan_finish(NULL, &creator_bottom, &creator_size);
    if (!sigsetjmp(co->env, 0)) {
        coroutine_asan_start(&fake_stack_save, creator_bottom, creator_size);
        coroutine_tsan_switch(boot_creator_tsan_fiber);
        siglongjmp(*boot_creator_env, 1);
    }
    coroutine_trampoline(co);
}

/* Step 4 from the creator's side.  A function of its own so that no local
 * of the bootstrap lives across the sigsetjmp. */
static __attribute__((noinline)) void sigaltstack_boot_reenter(KeelCoroutine *co)
{
    sigjmp_buf creator_env;
    void *fake_stack_save = NULL;

    boot_creator_env = &creator_env;
    if (!sigsetjmp(creator_env, 0)) {
        coroutine_asan_start(&fake_stack_save, co->stack, co->stack_size);
        coroutine_tsan_switch(co->tsan_fiber);
        siglongjmp(boot_handler_env, 1);
    }
    coroutine_asan_finish(fake_stack_save, NULL, NULL);
}

static void sigaltstack_boot_handler(int signo)
{
    KeelCoroutine *co;

    (void)signo;
    if (!pthread_equal(pthread_self(), boot_thread)) {
        return;     /* a stray process-directed SIGUSR2 in another thread */
    }
    co = boot_co;
    boot_handler_ran = 1;
    /* Under TSan the jump buffer must belong to the coroutine's fiber (it
     * is jumped to from there); back to ours before returning. */
    coroutine_tsan_switch(co->tsan_fiber);
    if (!sigsetjmp(boot_handler_env, 0)) {
        coroutine_tsan_switch(boot_creator_tsan_fiber);
        return;     /* step 3 */
    }
    sigaltstack_boot_finish(co);
}

static int sigaltstack_bootstrap(KeelCoroutine *co)
{
    struct sigaction sa, old_sa;
    stack_t ss, old_ss;
    sigset_t all, old_mask, wait_mask;
    int ret = 0;

    pthread_mutex_lock(&boot_lock);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old_mask);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sigaltstack_boot_handler;
    sa.sa_flags = SA_ONSTACK;
    sigfillset(&sa.sa_mask);
    if (sigaction(SIGUSR2, &sa, &old_sa) < 0) {
        ret = -errno;
        goto out;
    }
    memset(&ss, 0, sizeof(ss));
    ss.ss_sp = co->stack;
    ss.ss_size = co->stack_size;
    if (sigaltstack(&ss, &old_ss) < 0) {
        ret = -errno;
        sigaction(SIGUSR2, &old_sa, NULL);
        goto out;
    }

    boot_co = co;
    boot_creator_tsan_fiber = coroutine_tsan_current_fiber();
    boot_thread = pthread_self();
    boot_handler_ran = 0;
    sigfillset(&wait_mask);
    sigdelset(&wait_mask, SIGUSR2);
    /* Unblocked, a signal a thread sends itself is delivered before
     * pthread_kill returns (ThreadSanitizer relies on that too: it runs
     * handlers of signals sent to oneself at once, on the alternate stack,
     * but defers others to a later point on the normal stack). */
    pthread_sigmask(SIG_SETMASK, &wait_mask, NULL);
    pthread_kill(boot_thread, SIGUSR2);
    while (!boot_handler_ran) {
        sigsuspend(&wait_mask);
    }
    pthread_sigmask(SIG_SETMASK, &all, NULL);

    /* Give back the previous alternate stack (or none) and handler. */
    if (old_ss.ss_flags & SS_DISABLE) {
#ifdef CONFIG_VALGRIND
        /* Valgrind remembers the range of a disabled alternate stack and
         * refuses sigaltstack() (EPERM) while the stack pointer is inside
         * it — i.e. when this coroutine later creates another one.  So
         * point it at a dummy range first; it is disabled right after and
         * never used. */
        if (RUNNING_ON_VALGRIND) {
            static char dummy_stack[64 * 1024];
            stack_t dummy = { .ss_sp = dummy_stack, .ss_size = sizeof(dummy_stack) };
            sigaltstack(&dummy, NULL);
        }
#endif
        ss.ss_flags = SS_DISABLE;
        sigaltstack(&ss, NULL);
    } else {
        old_ss.ss_flags &= ~SS_ONSTACK;
        sigaltstack(&old_ss, NULL);
    }
    sigaction(SIGUSR2, &old_sa, NULL);

#ifdef CONFIG_VALGRIND
    {
        /* Memcheck saw the handler return and marked its frame dead; step 4
         * deliberately lives in that frame again.  And it must know the
         * stack for the jumps there and back to be seen as stack switches
         * (registered only now: delivering the signal onto a registered
         * stack confuses it).  The core registers the stack for good. */
        unsigned id = VALGRIND_STACK_REGISTER(co->stack, (char *)co->stack + co->stack_size);

        VALGRIND_MAKE_MEM_DEFINED(co->stack, co->stack_size);
        sigaltstack_boot_reenter(co);
        VALGRIND_STACK_DEREGISTER(id);
    }
#else
    sigaltstack_boot_reenter(co);
#endif
out:
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    pthread_mutex_unlock(&boot_lock);
    return ret;
}

const CoroutineBackend coroutine_sigaltstack_backend = {
    .name = "sigaltstack",
    .bootstrap = sigaltstack_bootstrap,
};
