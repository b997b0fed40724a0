/*
 * Coroutine layer tests: core semantics, pool, stacks, CoQueue/CoMutex,
 * and the loop integration (iothreads, cross-thread wake, sleep, thread
 * pool, TLS after a move).  The same binary runs under both backends:
 * tests/coroutine-sigaltstack.sh runs it with KEEL_AVOID=ucontext.
 */
#include "config.h"

#include "coroutine/coroutine.h"
#include "coroutine/co-lock.h"
#include "coroutine/coroutine-int.h"
#include "compat/avoid.h"
#include "compat/features.h"
#include "compat/osdep.h"
#include "loop/aio.h"
#include "loop/iothread.h"
#include "loop/thread-pool.h"
#include "loop/timer.h"
#include "tests/keel-test.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static bool pool_enabled(void)
{
    const char *env = getenv("KEEL_COROUTINE_POOL");
    return !(env && !strcmp(env, "0"));
}

/* ---- lifecycle ------------------------------------------------------------ */

static void set_flag_entry(void *opaque)
{
    *(bool *)opaque = true;
}

static void test_lifecycle(void)
{
    bool done = false;
    KeelCoroutine *co = keel_coroutine_create(set_flag_entry, &done);
    KeelCoroutine *first = co;

    KEEL_OK(co != NULL, "lifecycle: create");
    keel_coroutine_enter(co);
    KEEL_OK(done, "lifecycle: first coroutine ran to completion");

    /* Again: the finished coroutine comes back from the pool. */
    done = false;
    co = keel_coroutine_create(set_flag_entry, &done);
    if (pool_enabled()) {
        KEEL_OK(co == first, "lifecycle: second create reuses the pooled coroutine");
    } else {
        keel_test_skip("lifecycle: pool disabled (KEEL_COROUTINE_POOL=0)");
    }
    keel_coroutine_enter(co);
    KEEL_OK(done, "lifecycle: second (pooled) coroutine ran to completion");
}

/* ---- yield counts -------------------------------------------------------- */

typedef struct YieldState {
    int yields_left;
    bool done;
} YieldState;

static void yield_n_entry(void *opaque)
{
    YieldState *s = opaque;

    while (s->yields_left > 0) {
        s->yields_left--;
        keel_coroutine_yield();
    }
    s->done = true;
}

static void test_yield_count(void)
{
    enum { N = 5 };
    YieldState s = { .yields_left = N };
    KeelCoroutine *co = keel_coroutine_create(yield_n_entry, &s);
    int enters = 0;

    while (!s.done) {
        keel_coroutine_enter(co);
        enters++;
    }
    KEEL_IS(enters, N + 1, "yield: a coroutine yielding %d times needs %d enters", N, N + 1);
}

/* ---- nesting -------------------------------------------------------------- */

typedef struct NestState {
    unsigned n_enter, n_return, max;
} NestState;

static void nest_entry(void *opaque)
{
    NestState *s = opaque;

    s->n_enter++;
    if (s->n_enter < s->max) {
        KeelCoroutine *child = keel_coroutine_create(nest_entry, s);
        keel_coroutine_enter(child);
    }
    s->n_return++;
}

static void test_nesting(void)
{
    NestState s = { .max = 128 };
    KeelCoroutine *root = keel_coroutine_create(nest_entry, &s);

    keel_coroutine_enter(root);
    KEEL_IS(s.n_enter, 128, "nesting: 128 coroutines entered, each by its parent");
    KEEL_IS(s.n_return, 128, "nesting: all 128 returned");
}

/* ---- self / entered / in-coroutine -------------------------------------- */

typedef struct SelfState {
    KeelCoroutine *co, *parent;
    bool self_ok, in_ok, entered_ok, parent_entered_ok;
} SelfState;

static void self_child_entry(void *opaque)
{
    SelfState *s = opaque;

    s->parent_entered_ok = keel_coroutine_entered(s->parent) &&
                           keel_coroutine_self() != s->parent;
}

static void self_entry(void *opaque)
{
    SelfState *s = opaque;

    s->self_ok = keel_coroutine_self() == s->co;
    s->in_ok = keel_in_coroutine();
    s->entered_ok = keel_coroutine_entered(s->co);
    s->parent = s->co;
    keel_coroutine_enter(keel_coroutine_create(self_child_entry, s));
    keel_coroutine_yield();
}

static void test_self(void)
{
    SelfState s = { 0 };

    KEEL_OK(keel_coroutine_self() == NULL, "self: NULL outside a coroutine");
    KEEL_OK(!keel_in_coroutine(), "in_coroutine: false outside");
    s.co = keel_coroutine_create(self_entry, &s);
    KEEL_OK(!keel_coroutine_entered(s.co), "entered: false before the first enter");
    keel_coroutine_enter(s.co);
    KEEL_OK(s.self_ok, "self: the running coroutine inside");
    KEEL_OK(s.in_ok, "in_coroutine: true inside");
    KEEL_OK(s.entered_ok, "entered: true while running");
    KEEL_OK(s.parent_entered_ok, "entered: true for a parent waiting on its child");
    KEEL_OK(!keel_coroutine_entered(s.co), "entered: false after it yielded");
    keel_coroutine_enter(s.co);
}

/* ---- execution order --------------------------------------------------------- */

static char order_log[64];

static void order_note(const char *what)
{
    strcat(order_log, what);
}

static void order_entry(void *opaque)
{
    const char *name = opaque;
    char buf[8];

    snprintf(buf, sizeof(buf), "%s1 ", name);
    order_note(buf);
    keel_coroutine_yield();
    snprintf(buf, sizeof(buf), "%s2 ", name);
    order_note(buf);
}

static void test_order(void)
{
    KeelCoroutine *a = keel_coroutine_create(order_entry, (void *)"a");
    KeelCoroutine *b = keel_coroutine_create(order_entry, (void *)"b");

    order_log[0] = 0;
    order_note("m1 ");
    keel_coroutine_enter(a);
    order_note("m2 ");
    keel_coroutine_enter(b);
    order_note("m3 ");
    keel_coroutine_enter(a);
    order_note("m4 ");
    keel_coroutine_enter(b);
    order_note("m5");
    KEEL_OK(!strcmp(order_log, "m1 a1 m2 b1 m3 a2 m4 b2 m5"),
            "order: two interleaved coroutines run in enter order (%s)", order_log);
}

/* ---- a terminated caller is never touched by a later yield -------------- */

typedef struct DanglingState {
    KeelCoroutine *child;
    int child_resumes;
    int parent_runs;
} DanglingState;

static void dangling_child_entry(void *opaque)
{
    DanglingState *s = opaque;

    keel_coroutine_yield();         /* back to the parent, which then ends */
    s->child_resumes++;
    keel_coroutine_yield();         /* must go back to main, not the parent */
    s->child_resumes++;
}

static void dangling_parent_entry(void *opaque)
{
    DanglingState *s = opaque;

    s->parent_runs++;
    s->child = keel_coroutine_create(dangling_child_entry, s);
    keel_coroutine_enter(s->child);     /* child yields back to us */
}

static void test_no_dangling_caller(void)
{
    DanglingState s = { 0 };
    KeelCoroutine *parent = keel_coroutine_create(dangling_parent_entry, &s);
    KeelCoroutine snapshot;

    keel_coroutine_enter(parent);       /* parent terminates: pooled or freed */
    if (pool_enabled()) {
        memcpy(&snapshot, parent, sizeof(snapshot));
    }
    keel_coroutine_enter(s.child);      /* must yield back to us, not to parent */
    KEEL_IS(s.child_resumes, 1, "dangling: child resumed once");
    KEEL_IS(s.parent_runs, 1, "dangling: the terminated parent never ran again");
    if (pool_enabled()) {
        KEEL_OK(!memcmp(&snapshot, parent, sizeof(snapshot)),
                "dangling: the terminated parent's record was not touched");
    } else {
        keel_test_skip("dangling: pool disabled, parent record freed");
    }
    keel_coroutine_enter(s.child);      /* let it finish */
    KEEL_IS(s.child_resumes, 2, "dangling: child finished normally");
}

/* ---- stacks and backend ------------------------------------------------------ */

static void nop_entry(void *opaque)
{
    (void)opaque;
}

static bool guard_page_present(KeelCoroutine *co)
{
    char line[512];
    uintptr_t lo, hi, want = (uintptr_t)co->map;
    bool found = false;
    FILE *f = fopen("/proc/self/maps", "r");

    if (!f) {
        return false;
    }
    while (fgets(line, sizeof(line), f)) {
        char perms[8];
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s", &lo, &hi, perms) == 3 &&
            lo <= want && want < hi) {
            /* the guard ends exactly where the stack starts */
            found = !strncmp(perms, "---", 3) && hi == (uintptr_t)co->stack;
            break;
        }
    }
    fclose(f);
    return found;
}

static void test_stack(void)
{
    size_t old_size = keel_coroutine_get_stack_size();
    KeelCoroutine *co;
    const char *reason = NULL;
    const char *backend = keel_coroutine_backend(&reason);

    keel_coroutine_set_stack_size(100000);
    KEEL_IS(keel_coroutine_get_stack_size() % 4096, 0, "stack: size rounded to pages");
    KEEL_OK(keel_coroutine_get_stack_size() >= 100000, "stack: size at least as asked");
    co = keel_coroutine_create(nop_entry, NULL);
    KEEL_IS(co->stack_size, keel_coroutine_get_stack_size(),
            "stack: a new coroutine gets the configured size (not a pooled one)");
    KEEL_OK(guard_page_present(co), "stack: PROT_NONE guard page right below the stack");
    KEEL_OK(co->backend && !strcmp(co->backend, backend),
            "backend: new coroutine bootstrapped by %s (%s)", backend, reason);
    if (keel_avoid(KEEL_PATH_UCONTEXT)) {
        KEEL_OK(!strcmp(backend, "sigaltstack"),
                "backend: KEEL_AVOID=ucontext selects sigaltstack");
    } else {
#ifdef CONFIG_COROUTINE_UCONTEXT
        KEEL_OK(!strcmp(backend, "ucontext"), "backend: ucontext preferred");
#else
        KEEL_OK(!strcmp(backend, "sigaltstack"), "backend: sigaltstack (only one built)");
#endif
    }
    keel_coroutine_enter(co);
    keel_coroutine_set_stack_size(old_size);
    co = keel_coroutine_create(nop_entry, NULL);
    KEEL_IS(co->stack_size, old_size, "stack: pooled coroutines of another size are not reused");
    keel_coroutine_enter(co);
    KEEL_OK(coroutine_pool_global_max() >= 16 && coroutine_pool_global_max() <= 1024,
            "pool: global cap %u derived from vm.max_map_count", coroutine_pool_global_max());
}

/* Deep recursion on a coroutine stack: the stack really is usable. */
static unsigned recurse(unsigned depth)
{
    volatile char pad[512];

    pad[0] = (char)depth;
    return depth ? recurse(depth - 1) + pad[0] - (char)depth + 1 : 0;
}

static void deep_entry(void *opaque)
{
    *(unsigned *)opaque = recurse(1000);     /* ~600 KiB of the 1 MiB stack */
}

static void test_deep_stack(void)
{
    unsigned result = 0;

    keel_coroutine_enter(keel_coroutine_create(deep_entry, &result));
    KEEL_IS(result, 1000, "stack: 1000 frames of 512+ bytes fit");
}

/* ---- CoQueue ----------------------------------------------------------------- */

typedef struct QueueState {
    KeelCoQueue queue;
    char log[32];
} QueueState;

static void queue_waiter_entry(void *opaque)
{
    QueueState *s = opaque;
    char id = 'a' + (char)strlen(s->log);

    s->log[strlen(s->log)] = (char)(id - 'a' + 'A');    /* "A" = a waits */
    keel_co_queue_wait(&s->queue, NULL);
    s->log[strlen(s->log)] = id;                        /* "a" = a woke */
}

static void test_co_queue(void)
{
    QueueState s;

    memset(&s, 0, sizeof(s));
    keel_co_queue_init(&s.queue);
    KEEL_OK(keel_co_queue_empty(&s.queue), "CoQueue: empty after init");
    KEEL_OK(!keel_co_queue_next(&s.queue), "CoQueue: next on an empty queue wakes nobody");
    keel_coroutine_enter(keel_coroutine_create(queue_waiter_entry, &s));
    keel_coroutine_enter(keel_coroutine_create(queue_waiter_entry, &s));
    keel_coroutine_enter(keel_coroutine_create(queue_waiter_entry, &s));
    KEEL_OK(!strcmp(s.log, "ABC"), "CoQueue: three waiters suspended (%s)", s.log);
    KEEL_OK(!keel_co_queue_empty(&s.queue), "CoQueue: not empty with waiters");
    KEEL_OK(keel_co_queue_next(&s.queue), "CoQueue: next wakes one");
    KEEL_OK(!strcmp(s.log, "ABCa"), "CoQueue: the first waiter woke first (%s)", s.log);
    keel_co_queue_restart_all(&s.queue);
    KEEL_OK(!strcmp(s.log, "ABCabc"), "CoQueue: restart_all wakes the rest in FIFO order (%s)",
            s.log);
    KEEL_OK(keel_co_queue_empty(&s.queue), "CoQueue: empty again");
}

/* Ping-pong: two coroutines wake each other through CoQueues.  Wake-ups
 * inside a coroutine are deferred to the enterer's loop, so this runs
 * 50,000 switches from one enter without any stack growing. */
enum { PING_PONG_ROUNDS = 25000 };

typedef struct PingPong {
    KeelCoQueue queue[2];
    int count[2];
    uintptr_t first_sp[2];
    bool grew[2];
    bool finished[2];
} PingPong;

typedef struct PingPongArg {
    PingPong *pp;
    int me;
} PingPongArg;

static void ping_pong_entry(void *opaque)
{
    PingPongArg *arg = opaque;
    PingPong *pp = arg->pp;
    int me = arg->me;

    for (int i = 0; i < PING_PONG_ROUNDS; i++) {
        volatile char marker = 0;
        uintptr_t sp = (uintptr_t)&marker;

        if (i == 0) {
            pp->first_sp[me] = sp;
        } else if (sp != pp->first_sp[me]) {
            pp->grew[me] = true;
        }
        pp->count[me]++;
        keel_co_queue_next(&pp->queue[!me]);
        keel_co_queue_wait(&pp->queue[me], NULL);
    }
    keel_co_queue_next(&pp->queue[!me]);
    pp->finished[me] = true;
}

static void test_ping_pong(void)
{
    PingPong pp;
    PingPongArg args[2] = { { &pp, 0 }, { &pp, 1 } };

    memset(&pp, 0, sizeof(pp));
    keel_coroutine_enter(keel_coroutine_create(ping_pong_entry, &args[0]));
    keel_coroutine_enter(keel_coroutine_create(ping_pong_entry, &args[1]));
    KEEL_IS(pp.count[0], PING_PONG_ROUNDS, "ping-pong: first coroutine ran %d rounds",
            PING_PONG_ROUNDS);
    KEEL_IS(pp.count[1], PING_PONG_ROUNDS, "ping-pong: second coroutine ran %d rounds",
            PING_PONG_ROUNDS);
    KEEL_OK(pp.finished[0] && pp.finished[1], "ping-pong: both finished");
    KEEL_OK(!pp.grew[0] && !pp.grew[1], "ping-pong: no stack growth over 50,000 switches");
}

/* ---- CoMutex in one thread ----------------------------------------------- */

typedef struct MutexOrder {
    KeelCoMutex mutex;
    char log[16];
    int holders;
    bool overlap;
} MutexOrder;

typedef struct MutexOrderArg {
    MutexOrder *m;
    char id;
} MutexOrderArg;

static void mutex_order_entry(void *opaque)
{
    MutexOrderArg *arg = opaque;
    MutexOrder *m = arg->m;

    keel_co_mutex_lock(&m->mutex);
    if (++m->holders != 1) {
        m->overlap = true;
    }
    m->log[strlen(m->log)] = arg->id;
    keel_coroutine_yield();             /* hold it across a yield */
    m->holders--;
    keel_co_mutex_unlock(&m->mutex);
}

static void test_co_mutex_fifo(void)
{
    MutexOrder m;
    MutexOrderArg args[4] = { { &m, 'a' }, { &m, 'b' }, { &m, 'c' }, { &m, 'd' } };
    KeelCoroutine *co[4];

    memset(&m, 0, sizeof(m));
    keel_co_mutex_init(&m.mutex);
    for (int i = 0; i < 3; i++) {
        co[i] = keel_coroutine_create(mutex_order_entry, &args[i]);
        keel_coroutine_enter(co[i]);    /* a takes it; b, c queue */
    }
    KEEL_OK(!strcmp(m.log, "a"), "CoMutex: one holder, the others wait (%s)", m.log);
    keel_coroutine_enter(co[0]);        /* a unlocks: hands off to b */
    KEEL_OK(!strcmp(m.log, "ab"), "CoMutex: unlock hands off to the oldest waiter (%s)", m.log);
    co[3] = keel_coroutine_create(mutex_order_entry, &args[3]);
    keel_coroutine_enter(co[3]);        /* d queues behind c */
    keel_coroutine_enter(co[1]);        /* b unlocks: c, not d */
    KEEL_OK(!strcmp(m.log, "abc"), "CoMutex: FIFO, a newcomer does not overtake (%s)", m.log);
    keel_coroutine_enter(co[2]);
    keel_coroutine_enter(co[3]);
    KEEL_OK(!strcmp(m.log, "abcd"), "CoMutex: everyone got it once, in order (%s)", m.log);
    KEEL_OK(!m.overlap, "CoMutex: never two holders");
    KEEL_OK(!m.mutex.locked && !m.mutex.waiters_head, "CoMutex: unlocked and no waiters at the end");
}

/* ---- misuse aborts with a clear message ----------------------------------- */

static bool expect_abort(void (*fn)(void), const char *needle, char *msg, size_t msg_size)
{
    int fds[2];
    pid_t pid;
    size_t len = 0;
    int status;
    ssize_t n;

    msg[0] = 0;
    if (pipe(fds) < 0) {
        return false;
    }
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        /* no core dumps for an expected abort */
        signal(SIGABRT, SIG_DFL);
        fn();
        _exit(0);
    }
    close(fds[1]);
    while (len < msg_size - 1 && (n = read(fds[0], msg + len, msg_size - 1 - len)) > 0) {
        len += (size_t)n;
    }
    msg[len] = 0;
    close(fds[0]);
    if (waitpid(pid, &status, 0) != pid) {
        return false;
    }
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && strstr(msg, needle);
}

static KeelCoroutine *reentry_target;

static void reenter_self_entry(void *opaque)
{
    (void)opaque;
    keel_coroutine_enter(reentry_target);
}

static void do_enter_running(void)
{
    reentry_target = keel_coroutine_create(reenter_self_entry, NULL);
    keel_coroutine_enter(reentry_target);
}

static void do_yield_outside(void)
{
    keel_coroutine_yield();
}

static void unlock_unowned_entry(void *opaque)
{
    KeelCoMutex m = KEEL_CO_MUTEX_INITIALIZER;
    (void)opaque;
    keel_co_mutex_unlock(&m);
}

static void do_unlock_unowned(void)
{
    keel_coroutine_enter(keel_coroutine_create(unlock_unowned_entry, NULL));
}

static void do_enter_finished(void)
{
    KeelCoroutine *co = keel_coroutine_create(nop_entry, NULL);

    keel_coroutine_enter(co);
    keel_coroutine_enter(co);   /* pooled, so the record is still there */
}

static void test_misuse(void)
{
    char msg[4096];

    KEEL_OK(expect_abort(do_enter_running, "is already entered", msg, sizeof(msg)),
            "misuse: entering a running coroutine aborts naming the problem");
    KEEL_OK(expect_abort(do_yield_outside, "outside a coroutine", msg, sizeof(msg)),
            "misuse: yield outside a coroutine aborts");
    KEEL_OK(expect_abort(do_unlock_unowned, "not locked", msg, sizeof(msg)),
            "misuse: unlocking an unlocked CoMutex aborts");
    if (pool_enabled()) {
        KEEL_OK(expect_abort(do_enter_finished, "has finished", msg, sizeof(msg)),
                "misuse: entering a finished (pooled) coroutine aborts");
    } else {
        keel_test_skip("misuse: pool disabled, a finished coroutine is freed at once");
    }
}

/* ======================================================================
 * Loop integration
 * ====================================================================== */

static KeelAioContext *main_ctx;

/* Run the main context until *@flag becomes true (set from any thread). */
static void main_loop_until(int *flag)
{
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
        keel_aio_poll(main_ctx, true);
    }
}

static void set_flag_and_notify(int *flag)
{
    __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
    keel_aio_notify(main_ctx);
}

static KeelCoroutine *double_sched_co;

static void do_schedule_twice(void)
{
    double_sched_co = keel_coroutine_create(nop_entry, NULL);
    keel_aio_co_schedule(main_ctx, double_sched_co);
    keel_aio_co_schedule(main_ctx, double_sched_co);
}

/* ---- a coroutine woken from another thread resumes in its home thread -- */

typedef struct WakeState {
    KeelCoroutine *co;
    pthread_t home, before, after;
    int done;
} WakeState;

static void *waker_thread(void *opaque)
{
    WakeState *s = opaque;

    /* Wake it whether or not it has yielded yet: either way it must resume
     * in its home thread, through a BH. */
    keel_aio_co_wake(s->co);
    return NULL;
}

static void wake_entry(void *opaque)
{
    WakeState *s = opaque;
    pthread_t worker;

    s->before = pthread_self();
    keel_thread_create(&worker, "co-waker", waker_thread, s);
    keel_coroutine_yield();
    s->after = pthread_self();
    pthread_join(worker, NULL);
    set_flag_and_notify(&s->done);
}

static void test_wake_from_worker(void)
{
    WakeState s = { .home = pthread_self() };

    s.co = keel_coroutine_create(wake_entry, &s);
    keel_coroutine_enter(s.co);
    KEEL_OK(keel_coroutine_get_aio_context(s.co) == main_ctx,
            "wake: home context is the enterer's context");
    main_loop_until(&s.done);
    KEEL_OK(pthread_equal(s.before, s.home), "wake: started in the home thread");
    KEEL_OK(pthread_equal(s.after, s.home),
            "wake: woken from a worker thread, resumed in its home thread");
}

/* ---- CoMutex contended from 5 iothreads ---------------------------------- */

enum { MUTEX_THREADS = 5, MUTEX_ITERATIONS = 200 };

typedef struct SharedCounter {
    KeelCoMutex mutex;
    long counter;
    int holders;
    bool overlap;
    int finished;
    int all_done;
} SharedCounter;

typedef struct MutexWorker {
    SharedCounter *shared;
    KeelAioContext *ctx;
    bool wrong_thread;
} MutexWorker;

static void mutex_worker_entry(void *opaque)
{
    MutexWorker *w = opaque;
    SharedCounter *s = w->shared;

    for (int i = 0; i < MUTEX_ITERATIONS; i++) {
        long seen;

        keel_co_mutex_lock(&s->mutex);
        if (!keel_aio_context_in_home_thread(w->ctx)) {
            w->wrong_thread = true;
        }
        if (__atomic_add_fetch(&s->holders, 1, __ATOMIC_RELAXED) != 1) {
            s->overlap = true;
        }
        seen = s->counter;
        /* Give the loop (and the other threads) a chance to pile up on
         * the mutex while we hold it. */
        if (i % 4 == 0) {
            keel_aio_co_schedule(w->ctx, keel_coroutine_self());
            keel_coroutine_yield();
        }
        s->counter = seen + 1;
        __atomic_sub_fetch(&s->holders, 1, __ATOMIC_RELAXED);
        keel_co_mutex_unlock(&s->mutex);
    }
    if (__atomic_add_fetch(&s->finished, 1, __ATOMIC_ACQ_REL) == MUTEX_THREADS) {
        set_flag_and_notify(&s->all_done);
    }
}

static void test_co_mutex_iothreads(void)
{
    SharedCounter s;
    KeelIOThread *threads[MUTEX_THREADS];
    MutexWorker workers[MUTEX_THREADS];
    bool wrong_thread = false;
    unsigned pool_before;

    memset(&s, 0, sizeof(s));
    keel_co_mutex_init(&s.mutex);
    for (int i = 0; i < MUTEX_THREADS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "co-mutex-%d", i);
        threads[i] = keel_iothread_new(name);
        workers[i] = (MutexWorker) {
            .shared = &s, .ctx = keel_iothread_get_aio_context(threads[i]),
        };
    }
    for (int i = 0; i < MUTEX_THREADS; i++) {
        keel_aio_co_schedule(workers[i].ctx,
                             keel_coroutine_create(mutex_worker_entry, &workers[i]));
    }
    main_loop_until(&s.all_done);
    pool_before = coroutine_pool_global_size();
    for (int i = 0; i < MUTEX_THREADS; i++) {
        keel_iothread_stop_join(threads[i]);
        keel_iothread_free(threads[i]);
        wrong_thread |= workers[i].wrong_thread;
    }
    /* Each worker finished in its iothread, so it sat in that thread's
     * cache; the exiting threads hand their caches to the global pool. */
    if (pool_enabled()) {
        KEEL_OK(coroutine_pool_global_size() >= pool_before + MUTEX_THREADS ||
                coroutine_pool_global_size() == coroutine_pool_global_max(),
                "pool: exiting iothreads moved their cached coroutines to the global pool "
                "(%u -> %u)", pool_before, coroutine_pool_global_size());
    } else {
        keel_test_skip("pool: disabled (KEEL_COROUTINE_POOL=0)");
    }
    KEEL_IS(s.counter, MUTEX_THREADS * MUTEX_ITERATIONS,
            "CoMutex: 5 coroutines in 5 iothreads, no lost updates");
    KEEL_OK(!s.overlap, "CoMutex: never two holders at once across threads");
    KEEL_OK(!wrong_thread, "CoMutex: every waiter resumed in its own iothread");
    KEEL_OK(!s.mutex.locked, "CoMutex: unlocked at the end");
}

/* ---- CoQueue as a condition variable across two iothreads --------------- */

enum { QUEUE_ITEMS = 300 };

typedef struct Channel {
    KeelCoMutex mutex;
    KeelCoQueue queue;
    KeelAioContext *consumer_ctx, *producer_ctx;
    int items, consumed;
    bool consumer_wrong_thread;
    int done;
} Channel;

static void consumer_entry(void *opaque)
{
    Channel *c = opaque;

    keel_co_mutex_lock(&c->mutex);
    while (c->consumed < QUEUE_ITEMS) {
        while (c->items == 0) {
            keel_co_queue_wait(&c->queue, &c->mutex);
            if (!keel_aio_context_in_home_thread(c->consumer_ctx)) {
                c->consumer_wrong_thread = true;
            }
        }
        c->items--;
        c->consumed++;
    }
    keel_co_mutex_unlock(&c->mutex);
    set_flag_and_notify(&c->done);
}

static void producer_entry(void *opaque)
{
    Channel *c = opaque;

    for (int i = 0; i < QUEUE_ITEMS; i++) {
        keel_co_mutex_lock(&c->mutex);
        c->items++;
        keel_co_queue_next(&c->queue);
        keel_co_mutex_unlock(&c->mutex);
        if (i % 3 == 0) {
            keel_aio_co_schedule(c->producer_ctx, keel_coroutine_self());
            keel_coroutine_yield();
        }
    }
}

static void test_co_queue_iothreads(void)
{
    KeelIOThread *consumer = keel_iothread_new("co-consumer");
    KeelIOThread *producer = keel_iothread_new("co-producer");
    Channel c;

    memset(&c, 0, sizeof(c));
    keel_co_mutex_init(&c.mutex);
    keel_co_queue_init(&c.queue);
    c.consumer_ctx = keel_iothread_get_aio_context(consumer);
    c.producer_ctx = keel_iothread_get_aio_context(producer);
    keel_aio_co_schedule(c.consumer_ctx, keel_coroutine_create(consumer_entry, &c));
    keel_aio_co_schedule(c.producer_ctx, keel_coroutine_create(producer_entry, &c));
    main_loop_until(&c.done);
    keel_iothread_free(consumer);
    keel_iothread_free(producer);
    KEEL_IS(c.consumed, QUEUE_ITEMS, "CoQueue+CoMutex: every item produced in one iothread "
            "was consumed in the other");
    KEEL_OK(!c.consumer_wrong_thread, "CoQueue: the waiter always resumed in its own iothread");
    KEEL_OK(keel_co_queue_empty(&c.queue), "CoQueue: no waiter left behind");
}

/* ---- reschedule into another iothread; TLS follows the thread ------------ */

KEEL_DEFINE_STATIC_CO_TLS(int, test_thread_tag)

typedef struct MoveState {
    KeelAioContext *target;
    int tag_before, tag_after;
    bool in_target_thread;
    int done;
} MoveState;

static void set_tag_in_iothread(void *opaque)
{
    set_test_thread_tag(*(int *)opaque);
}

static void move_entry(void *opaque)
{
    MoveState *s = opaque;

    s->tag_before = get_test_thread_tag();
    keel_aio_co_reschedule_self(s->target);
    s->in_target_thread = keel_aio_context_in_home_thread(s->target);
    s->tag_after = get_test_thread_tag();
    /* and back home */
    keel_aio_co_reschedule_self(main_ctx);
    set_flag_and_notify(&s->done);
}

static void test_reschedule_tls(void)
{
    KeelIOThread *thread = keel_iothread_new("co-move");
    MoveState s = { .target = keel_iothread_get_aio_context(thread) };
    int tag = 2;

    set_test_thread_tag(1);
    keel_aio_run_in_context_wait(s.target, set_tag_in_iothread, &tag);
    keel_coroutine_enter(keel_coroutine_create(move_entry, &s));
    main_loop_until(&s.done);
    KEEL_IS(s.tag_before, 1, "TLS: the coroutine sees the main thread's value first");
    KEEL_OK(s.in_target_thread, "reschedule_self: resumed in the target iothread");
    KEEL_IS(s.tag_after, 2, "TLS: after moving it sees the iothread's value");
    keel_iothread_stop_join(thread);
    keel_iothread_free(thread);
}

/* ---- co_sleep ----------------------------------------------------------------- */

typedef struct SleepState {
    int64_t start, end;
    bool same_thread;
    int done;
} SleepState;

static void sleep_entry(void *opaque)
{
    SleepState *s = opaque;
    pthread_t me = pthread_self();

    s->start = keel_clock_get_ns(KEEL_CLOCK_REALTIME);
    keel_co_sleep_ns(KEEL_CLOCK_REALTIME, 10 * 1000 * 1000);
    s->end = keel_clock_get_ns(KEEL_CLOCK_REALTIME);
    s->same_thread = pthread_equal(me, pthread_self());
    set_flag_and_notify(&s->done);
}

static void test_co_sleep(void)
{
    SleepState s = { 0 };

    keel_coroutine_enter(keel_coroutine_create(sleep_entry, &s));
    KEEL_OK(!s.done, "co_sleep: the coroutine yielded to the loop");
    main_loop_until(&s.done);
    /* behaviour, not timing: never woken before the deadline */
    KEEL_OK(s.end - s.start >= 10 * 1000 * 1000, "co_sleep: woke no earlier than asked");
    KEEL_OK(s.same_thread, "co_sleep: resumed in its own thread");
}

/* ---- thread_pool_submit_co -------------------------------------------------- */

typedef struct PoolState {
    pthread_t home;
    pthread_t worker;
    int ret;
    bool resumed_home;
    int done;
} PoolState;

static int pool_work(void *opaque)
{
    PoolState *s = opaque;

    s->worker = pthread_self();
    return 42;
}

static void pool_entry(void *opaque)
{
    PoolState *s = opaque;

    s->ret = keel_thread_pool_submit_co(pool_work, s);
    s->resumed_home = pthread_equal(pthread_self(), s->home);
    set_flag_and_notify(&s->done);
}

static void test_thread_pool_co(void)
{
    PoolState s = { .home = pthread_self() };

    keel_coroutine_enter(keel_coroutine_create(pool_entry, &s));
    main_loop_until(&s.done);
    KEEL_IS(s.ret, 42, "thread_pool_submit_co: returns the function's result");
    KEEL_OK(!pthread_equal(s.worker, s.home), "thread_pool_submit_co: ran in a worker thread");
    KEEL_OK(s.resumed_home, "thread_pool_submit_co: resumed in its own context");
}

/* ---- the features line ---------------------------------------------------- */

static void test_features(void)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    const char *backend = keel_coroutine_backend(NULL);
    char want[64];

    keel_coroutine_features_register();
    keel_features_print(f);
    fclose(f);
    snprintf(want, sizeof(want), "coroutine active=%s compiled=", backend);
    KEEL_OK(buf && strstr(buf, want), "features: reports the coroutine backend in use");
    free(buf);
}

int main(void)
{
    char msg[4096];

    /* Core, single thread, no loop. */
    test_lifecycle();
    test_yield_count();
    test_nesting();
    test_self();
    test_order();
    test_no_dangling_caller();
    test_stack();
    test_deep_stack();
    test_co_queue();
    test_ping_pong();
    test_co_mutex_fifo();
    test_misuse();
    test_features();

    /* Loop integration. */
    main_ctx = keel_aio_context_new();
    KEEL_OK(expect_abort(do_schedule_twice, "already has a wake-up pending", msg, sizeof(msg)),
            "misuse: scheduling a coroutine twice aborts naming the problem");
    test_wake_from_worker();
    test_co_sleep();
    test_thread_pool_co();
    test_reschedule_tls();
    test_co_mutex_iothreads();
    test_co_queue_iothreads();

    keel_aio_context_unref(main_ctx);
    return keel_test_done();
}
