/*
 * The coroutine core: enter/yield/terminate, the per-thread state, stacks,
 * the pool, backend selection and the features line.  See coroutine-int.h
 * for how the work is split with the backends.
 */
#include "config.h"

/* glibc's fortified longjmp (__longjmp_chk) refuses to jump to a frame on
 * another stack, which is exactly what a coroutine switch does. */
#undef _FORTIFY_SOURCE

#include "coroutine/coroutine-int.h"
#include "compat/avoid.h"
#include "compat/features.h"
#include "compat/osdep.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef CONFIG_VALGRIND
#include <valgrind/valgrind.h>
#endif

#define DEFAULT_STACK_SIZE      (1u << 20)
#define MIN_STACK_SIZE          (16u << 10)
/* Per-thread cache: big enough that a busy iothread rarely touches the
 * global pool; refilled from it in batches to take its lock rarely. */
#define LOCAL_POOL_MAX          64
#define POOL_REFILL_BATCH       16

/* ---- per-thread state ---------------------------------------------------- */

typedef struct CoroutineThread {
    KeelCoroutine leader;       /* stands for the thread's own stack */
    KeelCoroutine *current;     /* running coroutine; NULL or &leader outside */
    KeelCoroutine *pool;        /* finished coroutines kept for reuse */
    unsigned pool_size;
    bool exit_hook;             /* pool_key set, so thread exit drains pool */
} CoroutineThread;

static __thread CoroutineThread co_thread;

/*
 * Every access to co_thread goes through this function.  A coroutine that
 * yields can resume in another thread; a cached TLS address would then name
 * the old thread's state.  Not inlinable, and the empty asm hides the
 * result's origin, so no caller can keep the address across a switch.
 */
static __attribute__((noinline)) CoroutineThread *co_thread_get(void)
{
    CoroutineThread *t = &co_thread;

    __asm__ __volatile__("" : "+r"(t));
    return t;
}

static KeelCoroutine *co_current(CoroutineThread *t)
{
    return t->current ? t->current : &t->leader;
}

const void *coroutine_thread_token(void)
{
    return &co_thread_get()->leader;
}

void coroutine_fatal(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs("keel: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

/* ---- configuration ------------------------------------------------------- */

static pthread_once_t config_once = PTHREAD_ONCE_INIT;
static size_t stack_size;               /* atomic after config_once */
static bool pool_enabled = true;        /* atomic after config_once */
static unsigned global_pool_max;        /* set once in config_once */

static size_t page_size(void)
{
    static size_t size;

    if (!size) {
        long ps = sysconf(_SC_PAGESIZE);
        size = ps > 0 ? (size_t)ps : 4096;
    }
    return size;
}

static size_t stack_size_round(size_t bytes)
{
    size_t page = page_size();

    if (bytes < MIN_STACK_SIZE) {
        bytes = MIN_STACK_SIZE;
    }
    return (bytes + page - 1) & ~(page - 1);
}

/* "65536", "64k", "1m": bytes, or 0 when malformed. */
static size_t parse_size(const char *s)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s) {
        return 0;
    }
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    return *end ? 0 : (size_t)v;
}

/*
 * Every pooled coroutine holds two mappings (the guard page splits its
 * stack's VMA).  Running out of vm.max_map_count makes mmap fail for the
 * whole process, so the global pool stays at an eighth of it (a quarter
 * of the maps), and at most 1024 coroutines (1 GiB of address space at
 * the default stack size).
 */
static unsigned compute_global_pool_max(void)
{
    unsigned long max_map_count = 65530;    /* the kernel's default */
    FILE *f = fopen("/proc/sys/vm/max_map_count", "re");

    if (f) {
        unsigned long v;
        if (fscanf(f, "%lu", &v) == 1 && v > 0) {
            max_map_count = v;
        }
        fclose(f);
    }
    max_map_count /= 8;
    if (max_map_count > 1024) {
        max_map_count = 1024;
    }
    return (unsigned)max_map_count;
}

static void config_init(void)
{
    coroutine_install_wait_ops();
    const char *env = getenv("KEEL_COROUTINE_STACK_SIZE");
    size_t size = DEFAULT_STACK_SIZE;

    if (env && *env) {
        size = parse_size(env);
        if (!size) {
            /* Said, not silently ignored; but a library never ends its
             * host over a setting. */
            keel_log("KEEL_COROUTINE_STACK_SIZE='%s' is not a size (bytes, optionally "
                     "with a k, m or g suffix); using the default", env);
            size = DEFAULT_STACK_SIZE;
        }
    }
    __atomic_store_n(&stack_size, stack_size_round(size), __ATOMIC_RELEASE);

    env = getenv("KEEL_COROUTINE_POOL");
    if (env && !strcmp(env, "0")) {
        __atomic_store_n(&pool_enabled, false, __ATOMIC_RELEASE);
    }
    global_pool_max = compute_global_pool_max();
}

static void config_get(void)
{
    pthread_once(&config_once, config_init);
}

void keel_coroutine_set_stack_size(size_t bytes)
{
    config_get();
    __atomic_store_n(&stack_size, stack_size_round(bytes), __ATOMIC_RELEASE);
}

size_t keel_coroutine_get_stack_size(void)
{
    config_get();
    return __atomic_load_n(&stack_size, __ATOMIC_ACQUIRE);
}

/* ---- backends ------------------------------------------------------------ */

#if defined(CONFIG_COROUTINE_UCONTEXT) && defined(CONFIG_COROUTINE_SIGALTSTACK)
#define COMPILED_BACKENDS "ucontext,sigaltstack"
static KeelSeam ucontext_seam = KEEL_SEAM_INIT(KEEL_PATH_UCONTEXT, "ucontext", "sigaltstack");
#elif defined(CONFIG_COROUTINE_UCONTEXT)
#define COMPILED_BACKENDS "ucontext"
#elif defined(CONFIG_COROUTINE_SIGALTSTACK)
#define COMPILED_BACKENDS "sigaltstack"
#else
#error "configure selected no coroutine backend"
#endif

const char *keel_coroutine_backend(const char **reason)
{
#if defined(CONFIG_COROUTINE_UCONTEXT) && defined(CONFIG_COROUTINE_SIGALTSTACK)
    return keel_seam_active(&ucontext_seam, reason);
#else
    if (reason) {
        *reason = "only backend built";
    }
    return COMPILED_BACKENDS;
#endif
}

static void coroutine_bootstrap(KeelCoroutine *co)
{
    const CoroutineBackend *backend;
    int ret;

#if defined(CONFIG_COROUTINE_UCONTEXT) && defined(CONFIG_COROUTINE_SIGALTSTACK)
    if (keel_seam_use_primary(&ucontext_seam)) {
        ret = coroutine_ucontext_backend.bootstrap(co);
        if (ret == 0) {
            co->backend = coroutine_ucontext_backend.name;
            return;
        }
        /* e.g. a libc whose makecontext is a stub returning ENOSYS */
        keel_seam_primary_failed(&ucontext_seam, -ret);
    }
    backend = &coroutine_sigaltstack_backend;
#elif defined(CONFIG_COROUTINE_UCONTEXT)
    backend = &coroutine_ucontext_backend;
#else
    backend = &coroutine_sigaltstack_backend;
#endif
    ret = backend->bootstrap(co);
    if (ret < 0) {
        coroutine_fatal("cannot start a coroutine with the %s backend: %s",
                        backend->name, strerror(-ret));
    }
    co->backend = backend->name;
}

static const char *coroutine_feature_active(const char **reason)
{
    return keel_coroutine_backend(reason);
}

static const KeelFeature coroutine_feature = {
    .name = "coroutine",
    .compiled = COMPILED_BACKENDS,
    .active = coroutine_feature_active,
};

void keel_coroutine_features_register(void)
{
    keel_feature_register(&coroutine_feature);
}

/* ---- stacks -------------------------------------------------------------- */

static KeelCoroutine *coroutine_new(size_t size)
{
    KeelCoroutine *co = calloc(1, sizeof(*co));
    size_t page = page_size();
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;

    if (!co) {
        coroutine_fatal("out of memory allocating a coroutine");
    }
#ifdef MAP_STACK
    flags |= MAP_STACK;
#endif
    co->map_size = size + page;
    co->map = mmap(NULL, co->map_size, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (co->map == MAP_FAILED) {
        coroutine_fatal("cannot map a %zu-byte coroutine stack: %s", size, strerror(errno));
    }
    /* The guard page: running off the low end faults at once. */
    if (mprotect(co->map, page, PROT_NONE) < 0) {
        coroutine_fatal("cannot protect a coroutine stack guard page: %s", strerror(errno));
    }
    co->stack = (char *)co->map + page;
    co->stack_size = size;
#ifdef KEEL_TSAN
    co->tsan_fiber = __tsan_create_fiber(0);
#endif
    coroutine_bootstrap(co);
#ifdef CONFIG_VALGRIND
    /* After the bootstrap: memcheck must see the sigaltstack backend's
     * signal delivery as an ordinary alternate-stack signal. */
    co->valgrind_stack_id = VALGRIND_STACK_REGISTER(co->stack, (char *)co->stack + size);
#endif
    return co;
}

static void coroutine_delete(KeelCoroutine *co)
{
#ifdef CONFIG_VALGRIND
    VALGRIND_STACK_DEREGISTER(co->valgrind_stack_id);
#endif
#ifdef KEEL_TSAN
    __tsan_destroy_fiber(co->tsan_fiber);
#endif
    munmap(co->map, co->map_size);
    free(co);
}

/* ---- the pool -------------------------------------------------------------
 * Per-thread list first (no locking), then the global list under a mutex,
 * which threads refill from in batches and spill into when their own list is
 * full.  A thread's list moves to the global pool when the thread exits. */

static pthread_mutex_t global_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static KeelCoroutine *global_pool;
static unsigned global_pool_size;
static pthread_once_t pool_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t pool_key;

/* Keeps @co in the global pool if there is room; false otherwise. */
static bool global_pool_put(KeelCoroutine *co)
{
    bool kept = false;

    pthread_mutex_lock(&global_pool_lock);
    if (global_pool_size < global_pool_max) {
        co->pool_next = global_pool;
        global_pool = co;
        /* atomic: pool_get peeks at it without the lock */
        __atomic_store_n(&global_pool_size, global_pool_size + 1, __ATOMIC_RELAXED);
        kept = true;
    }
    pthread_mutex_unlock(&global_pool_lock);
    return kept;
}

static void pool_thread_exit(void *opaque)
{
    CoroutineThread *t = opaque;
    KeelCoroutine *co;

    while ((co = t->pool)) {
        t->pool = co->pool_next;
        if (!global_pool_put(co)) {
            coroutine_delete(co);
        }
    }
    t->pool_size = 0;
}

static void pool_key_init(void)
{
    if (pthread_key_create(&pool_key, pool_thread_exit) != 0) {
        coroutine_fatal("pthread_key_create failed");
    }
}

static KeelCoroutine *pool_get(CoroutineThread *t, size_t size)
{
    KeelCoroutine *co;

    if (!__atomic_load_n(&pool_enabled, __ATOMIC_RELAXED)) {
        return NULL;
    }
    if (!t->pool && __atomic_load_n(&global_pool_size, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&global_pool_lock);
        for (int i = 0; i < POOL_REFILL_BATCH && global_pool; i++) {
            co = global_pool;
            global_pool = co->pool_next;
            __atomic_store_n(&global_pool_size, global_pool_size - 1, __ATOMIC_RELAXED);
            co->pool_next = t->pool;
            t->pool = co;
            t->pool_size++;
        }
        pthread_mutex_unlock(&global_pool_lock);
    }
    while ((co = t->pool)) {
        t->pool = co->pool_next;
        t->pool_size--;
        if (co->stack_size == size) {
            return co;
        }
        coroutine_delete(co);       /* the stack size changed since */
    }
    return NULL;
}

static void pool_put(CoroutineThread *t, KeelCoroutine *co)
{
    co->entry = NULL;       /* marks it finished for keel_coroutine_enter */
    if (__atomic_load_n(&pool_enabled, __ATOMIC_RELAXED) &&
        co->stack_size == keel_coroutine_get_stack_size()) {
        if (t->pool_size < LOCAL_POOL_MAX) {
            if (!t->exit_hook) {
                pthread_once(&pool_key_once, pool_key_init);
                pthread_setspecific(pool_key, t);
                t->exit_hook = true;
            }
            co->pool_next = t->pool;
            t->pool = co;
            t->pool_size++;
            return;
        }
        if (global_pool_put(co)) {
            return;
        }
    }
    coroutine_delete(co);
}

void coroutine_pool_set_enabled(bool enabled)
{
    config_get();
    __atomic_store_n(&pool_enabled, enabled, __ATOMIC_RELEASE);
}

void coroutine_pool_drain(void)
{
    CoroutineThread *t = co_thread_get();
    KeelCoroutine *co, *list;

    pool_thread_exit(t);
    pthread_mutex_lock(&global_pool_lock);
    list = global_pool;
    global_pool = NULL;
    __atomic_store_n(&global_pool_size, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&global_pool_lock);
    while ((co = list)) {
        list = co->pool_next;
        coroutine_delete(co);
    }
}

unsigned coroutine_pool_global_max(void)
{
    config_get();
    return global_pool_max;
}

unsigned coroutine_pool_global_size(void)
{
    return __atomic_load_n(&global_pool_size, __ATOMIC_RELAXED);
}

/* ---- switching ----------------------------------------------------------- */

/* After arriving on a stack: tell ASan, and learn the thread's own stack
 * bounds from the first switch away from it (always the first switch of a
 * thread, since only the leader can enter the first coroutine). */
static void co_asan_arrived(void *fake_stack_save)
{
#ifdef KEEL_ASAN
    const void *bottom_old = NULL;
    size_t size_old = 0;
    CoroutineThread *t;

    coroutine_asan_finish(fake_stack_save, &bottom_old, &size_old);
    t = co_thread_get();
    if (!t->leader.stack) {
        t->leader.stack = (void *)bottom_old;
        t->leader.stack_size = size_old;
    }
#else
    (void)fake_stack_save;
#endif
}

/*
 * Save our registers in from->env and resume @to, handing it @action.
 * Returns when someone switches back to @from, with what they handed us.
 * sigsetjmp(…, 0) saves no signal mask: a switch makes no system call.
 */
static __attribute__((noinline)) int co_switch(CoroutineThread *t, KeelCoroutine *from,
                                               KeelCoroutine *to, CoroutineAction action)
{
    void *fake_stack_save = NULL;
    int ret;

    /* @t is the caller's thread, valid until the jump; after we are
     * resumed, possibly in another thread, it must not be used. */
    t->current = to;
    ret = sigsetjmp(from->env, 0);
    if (ret == 0) {
        /* Even a terminating coroutine keeps its ASan fake stack: a pooled
         * one resumes right here for its next user. */
        coroutine_asan_start(&fake_stack_save, to->stack, to->stack_size);
        if (!from->tsan_fiber) {
            from->tsan_fiber = coroutine_tsan_current_fiber();  /* a leader */
        }
        coroutine_tsan_switch(to->tsan_fiber);
        siglongjmp(to->env, action);
    }
    co_asan_arrived(fake_stack_save);
    return ret;
}

void coroutine_trampoline(KeelCoroutine *co)
{
    co_asan_arrived(NULL);
    for (;;) {
        KeelCoroutine *caller;

        co->entry(co->entry_arg);
        caller = co->caller;
        co->caller = NULL;
        /* Returns only when a new user of this pooled coroutine enters it. */
        co_switch(co_thread_get(), co, caller, CO_ACTION_TERMINATE);
    }
}

/* ---- public core API ----------------------------------------------------- */

KeelCoroutine *keel_coroutine_create(KeelCoroutineEntry *entry, void *opaque)
{
    size_t size = keel_coroutine_get_stack_size();
    KeelCoroutine *co = pool_get(co_thread_get(), size);

    if (!co) {
        co = coroutine_new(size);
    }
    co->entry = entry;
    co->entry_arg = opaque;
    co->caller = NULL;
    co->ctx = NULL;
    co->home_thread = NULL;
    co->scheduled = NULL;
    co->next = NULL;
    co->wakeup_head = co->wakeup_tail = NULL;
    co->pool_next = NULL;
    return co;
}

void coroutine_mark_scheduled(KeelCoroutine *co, const char *who)
{
    const char *prev = NULL;

    if (!__atomic_compare_exchange_n(&co->scheduled, &prev, who, false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        coroutine_fatal("%s: coroutine %p already has a wake-up pending (from %s); "
                        "waking it twice would run it twice", who, (void *)co, prev);
    }
}

void coroutine_clear_scheduled(KeelCoroutine *co)
{
    __atomic_store_n(&co->scheduled, NULL, __ATOMIC_RELEASE);
}

void coroutine_wake_deferred(KeelCoroutine *co, const char *who)
{
    CoroutineThread *t = co_thread_get();
    KeelCoroutine *self = co_current(t);

    if (self == &t->leader) {
        coroutine_fatal("%s: deferred wake-up outside a coroutine", who);
    }
    coroutine_mark_scheduled(co, who);
    co->next = NULL;
    if (self->wakeup_tail) {
        self->wakeup_tail->next = co;
    } else {
        self->wakeup_head = co;
    }
    self->wakeup_tail = co;
}

void coroutine_enter_ctx(KeelAioContext *ctx, KeelCoroutine *co)
{
    CoroutineThread *t = co_thread_get();
    KeelCoroutine *self = co_current(t);
    KeelCoroutine *pending = co;
    const char *scheduled = __atomic_load_n(&co->scheduled, __ATOMIC_ACQUIRE);

    /* self and t stay valid below: while we are inside this function our
     * own coroutine (if any) is entered, so it cannot move to another thread,
     * and everything we enter returns control to us in this thread. */
    if (scheduled) {
        coroutine_fatal("keel_coroutine_enter: coroutine %p already has a wake-up "
                        "pending (from %s); entering it now as well would run it twice",
                        (void *)co, scheduled);
    }
    co->next = NULL;
    while (pending) {
        KeelCoroutine *to = pending;
        int ret;

        pending = to->next;
        to->next = NULL;
        if (!to->entry) {
            coroutine_fatal("keel_coroutine_enter: coroutine %p has finished; "
                            "a finished coroutine must not be used again", (void *)to);
        }
        if (__atomic_load_n(&to->caller, __ATOMIC_RELAXED)) {
            coroutine_fatal("keel_coroutine_enter: coroutine %p is already entered "
                            "(running, or waiting for a coroutine it entered); "
                            "a coroutine cannot be entered twice", (void *)to);
        }
        coroutine_clear_scheduled(to);
        __atomic_store_n(&to->caller, self, __ATOMIC_RELAXED);
        __atomic_store_n(&to->ctx, ctx, __ATOMIC_RELEASE);
        to->home_thread = &t->leader;

        ret = co_switch(t, self, to, CO_ACTION_ENTER);

        /* Whatever @to woke in this thread runs next, before older pending
         * entries (depth first), all from this loop: no nesting. */
        if (to->wakeup_head) {
            to->wakeup_tail->next = pending;
            pending = to->wakeup_head;
            to->wakeup_head = to->wakeup_tail = NULL;
        }
        if (ret == CO_ACTION_TERMINATE) {
            pool_put(t, to);
        }
    }
}

void keel_coroutine_enter(KeelCoroutine *co)
{
    coroutine_enter_ctx(keel_current_aio_context(), co);
}

void keel_coroutine_yield(void)
{
    CoroutineThread *t = co_thread_get();
    KeelCoroutine *self = co_current(t);
    KeelCoroutine *to = self->caller;

    if (self == &t->leader) {
        coroutine_fatal("keel_coroutine_yield called outside a coroutine");
    }
    __atomic_store_n(&self->caller, NULL, __ATOMIC_RELAXED);
    co_switch(t, self, to, CO_ACTION_YIELD);
}

KeelCoroutine *keel_coroutine_self(void)
{
    CoroutineThread *t = co_thread_get();
    KeelCoroutine *self = t->current;

    return self == &t->leader ? NULL : self;
}

bool keel_in_coroutine(void)
{
    return keel_coroutine_self() != NULL;
}

bool keel_coroutine_entered(KeelCoroutine *co)
{
    return __atomic_load_n(&co->caller, __ATOMIC_RELAXED) != NULL;
}

KeelAioContext *keel_coroutine_get_aio_context(KeelCoroutine *co)
{
    return __atomic_load_n(&co->ctx, __ATOMIC_ACQUIRE);
}
