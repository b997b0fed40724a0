/*
 * ucontext backend: makecontext/swapcontext run a start function on the new
 * stack exactly once; it captures co->env with sigsetjmp and jumps straight
 * back to the creator.  From then on the core switches with sigsetjmp/
 * siglongjmp only, because swapcontext saves and restores the signal mask
 * with a system call on every switch.
 */
#include "config.h"

/* See coroutine.c: the fortified longjmp refuses cross-stack jumps. */
#undef _FORTIFY_SOURCE

#include "coroutine/coroutine-int.h"

#include <errno.h>
#include <stdint.h>
#include <ucontext.h>

#ifdef CONFIG_VALGRIND
#include <valgrind/valgrind.h>
#endif

/* Lives on the creator's stack for the duration of the bootstrap. */
typedef struct UcontextBoot {
    KeelCoroutine *co;
    sigjmp_buf *creator_env;
    void *creator_tsan_fiber;
} UcontextBoot;

/*
 * makecontext passes only int arguments, so the UcontextBoot pointer
 * arrives split in two 32-bit halves (a pointer does not fit in one int on
 * 64-bit hosts, and passing it through varargs as a long is not portable).
 */
static void ucontext_start(int ptr_lo, int ptr_hi)
{
    uint64_t bits = ((uint64_t)(uint32_t)ptr_hi << 32) | (uint32_t)ptr_lo;
    UcontextBoot *boot = (UcontextBoot *)(uintptr_t)bits;
    KeelCoroutine *co = boot->co;
    const void *creator_bottom = NULL;
    size_t creator_size = 0;
    void *fake_stack_save = NULL;

    coroutine_asan_finish(NULL, &creator_bottom, &creator_size);
    if (!sigsetjmp(co->env, 0)) {
        coroutine_asan_start(&fake_stack_save, creator_bottom, creator_size);
        coroutine_tsan_switch(boot->creator_tsan_fiber);
        siglongjmp(*boot->creator_env, 1);
    }
    coroutine_trampoline(co);
}

static int ucontext_bootstrap_on_stack(KeelCoroutine *co)
{
    ucontext_t uc, creator_uc;
    sigjmp_buf creator_env;
    UcontextBoot boot = {
        .co = co, .creator_env = &creator_env,
        .creator_tsan_fiber = coroutine_tsan_current_fiber(),
    };
    uint64_t bits = (uint64_t)(uintptr_t)&boot;
    void *fake_stack_save = NULL;

    if (getcontext(&uc) < 0) {
        return -errno;
    }
    uc.uc_link = NULL;
    uc.uc_stack.ss_sp = co->stack;
    uc.uc_stack.ss_size = co->stack_size;
    uc.uc_stack.ss_flags = 0;
    /* The cast is how makecontext is specified: it calls the function with
     * the argc int arguments that follow. */
    makecontext(&uc, (void (*)(void))ucontext_start, 2,
                (int)(uint32_t)bits, (int)(uint32_t)(bits >> 32));

    if (!sigsetjmp(creator_env, 0)) {
        coroutine_asan_start(&fake_stack_save, co->stack, co->stack_size);
        coroutine_tsan_switch(co->tsan_fiber);
        swapcontext(&creator_uc, &uc);
        /* swapcontext returns here only when it failed */
        coroutine_tsan_switch(boot.creator_tsan_fiber);
        coroutine_asan_finish(fake_stack_save, NULL, NULL);
        return errno ? -errno : -EINVAL;
    }
    coroutine_asan_finish(fake_stack_save, NULL, NULL);
    return 0;
}

static int ucontext_bootstrap(KeelCoroutine *co)
{
#ifdef CONFIG_VALGRIND
    /* To valgrind, swapcontext onto an unknown stack looks like a wild
     * stack-pointer change.  The core registers the stack for good after
     * the bootstrap (the sigaltstack backend needs it unregistered then). */
    unsigned id = VALGRIND_STACK_REGISTER(co->stack, (char *)co->stack + co->stack_size);
    int ret = ucontext_bootstrap_on_stack(co);

    VALGRIND_STACK_DEREGISTER(id);
    return ret;
#else
    return ucontext_bootstrap_on_stack(co);
#endif
}

const CoroutineBackend coroutine_ucontext_backend = {
    .name = "ucontext",
    .bootstrap = ucontext_bootstrap,
};
