/*
 * The loop APIs that QEMU has and Keel added for embedders, tested the way
 * QEMU's test-aio does (exact keel_aio_poll results, orders):
 *   idle BHs (qemu_bh_schedule_idle), io_poll companions for plain fd
 *   handlers, timers embedded in the caller's struct, KEEL_CLOCK_HOST,
 *   keel_timer_mod_anticipate_ns, KEEL_AIO_WAIT_WHILE + keel_aio_wait_kick
 *   from a thread, and what a forked child may use.
 */
#include "config.h"

#include "loop/aio.h"
#include "loop/aio-int.h"
#include "loop/aio-wait.h"
#include "loop/iothread.h"
#include "loop/thread-pool.h"
#include "loop/timer.h"
#include "compat/atomic.h"
#include "compat/osdep.h"
#include "tests/keel-test.h"
#include "tests/loop-test-util.h"

#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- idle BHs ---- */

static char order[64];
static int order_len;

static void note(char c)
{
    if (order_len < (int)sizeof(order) - 1) {
        order[order_len++] = c;
        order[order_len] = 0;
    }
}

static void note_bh(void *opaque)
{
    note(*(const char *)opaque);
}

static void timer_note(void *opaque)
{
    note(*(const char *)opaque);
}

static void test_idle_bh(void)
{
    KeelAioContext *ctx = keel_aio_context_new();
    KeelBH *idle = keel_aio_bh_new(ctx, note_bh, "i");
    KeelBH *normal = keel_aio_bh_new(ctx, note_bh, "n");
    KeelTimer t;

    order_len = 0;
    order[0] = 0;
    keel_bh_schedule_idle(idle);
    KEEL_IS(keel_aio_poll(ctx, false), false, "idle: a pass that only ran an idle BH returns false");
    KEEL_OK(!strcmp(order, "i"), "idle: ...but the BH ran (%s)", order);
    KEEL_IS(keel_aio_poll(ctx, false), false, "idle: it ran once");

    keel_bh_schedule_idle(idle);
    keel_bh_schedule(normal);
    KEEL_IS(keel_aio_poll(ctx, false), true, "idle: with a normal BH too, the pass returns true");
    KEEL_OK(!strcmp(order, "iin"), "idle: both ran in scheduling order (%s)", order);

    /* Scheduled normally after idle: a normal BH again. */
    keel_bh_schedule_idle(idle);
    keel_bh_schedule(idle);
    KEEL_IS(keel_aio_poll(ctx, false), true, "idle: schedule after schedule_idle makes it progress");

    /* A blocking poll with only an idle BH and a far timer: the BH runs
     * without waiting for the timer (the sleep is capped), the poll returns
     * only for the timer (the BH is not progress). */
    keel_timer_init(&t, ctx, KEEL_CLOCK_REALTIME, timer_note, "t");
    keel_timer_mod_ns(&t, keel_clock_get_ns(KEEL_CLOCK_REALTIME) + 200 * 1000000LL);
    order_len = 0;
    keel_bh_schedule_idle(idle);
    KEEL_IS(keel_aio_poll(ctx, true), true, "idle: blocking poll returns true (the timer)");
    KEEL_OK(!strcmp(order, "it"), "idle: the idle BH ran before the 200 ms timer (%s)", order);
    keel_timer_deinit(&t);

    keel_bh_delete(idle);
    keel_bh_delete(normal);
    keel_aio_context_unref(ctx);
}

/* ---- fd handlers with busy-poll companions ---- */

static int fds[2];
static int fd_published, fd_consumed;       /* atomic */
static int fd_readies, fd_reads, fd_begins, fd_ends;
static bool fd_in_mode, fd_order_ok = true;

static bool fd_poll(void *opaque)
{
    (void)opaque;
    return keel_atomic_load_acquire(&fd_published) != keel_atomic_read(&fd_consumed);
}

static void fd_ready(void *opaque)
{
    (void)opaque;
    fd_readies++;
    keel_atomic_store_release(&fd_consumed, keel_atomic_load_acquire(&fd_published));
}

static void fd_read(void *opaque)
{
    (void)opaque;
    fd_reads++;
    loop_test_drain(fds[0]);
    keel_atomic_store_release(&fd_consumed, keel_atomic_load_acquire(&fd_published));
}

static void fd_begin(void *opaque)
{
    (void)opaque;
    fd_order_ok &= !fd_in_mode;
    fd_in_mode = true;
    fd_begins++;
}

static void fd_end(void *opaque)
{
    (void)opaque;
    fd_order_ok &= fd_in_mode;
    fd_in_mode = false;
    fd_ends++;
}

static void test_fd_poll(void)
{
    KeelAioContext *ctx = keel_aio_context_new();
    KeelAioFdPollOps ops = { .poll = fd_poll, .ready = fd_ready,
                             .begin = fd_begin, .end = fd_end };

    loop_test_pipe(fds);
    keel_aio_set_fd_handler_poll(ctx, fds[0], fd_read, NULL, &ops, NULL);
    KEEL_IS(keel_aio_poll(ctx, false), false, "fd poll: nothing to do → false");
    /* Polling off: signalled work goes to io_read. */
    keel_atomic_fetch_add(&fd_published, 1);
    loop_test_write_byte(fds[1]);
    KEEL_IS(keel_aio_poll(ctx, true), true, "fd poll: signalled work → true");
    KEEL_IS(fd_reads, 1, "fd poll: ...and it went to io_read");
    /* Polling on; one more signalled item teaches the handler's window
     * (it fired at once after the wait began). */
    keel_aio_context_set_poll_params(ctx, 10 * 1000 * 1000, 2, 0);
    keel_atomic_fetch_add(&fd_published, 1);
    loop_test_write_byte(fds[1]);
    KEEL_IS(keel_aio_poll(ctx, true), true, "fd poll: signalled work with polling on → true");
    KEEL_IS(fd_reads, 2, "fd poll: ...io_read (the window was still 0)");
    /* Work without a byte in the pipe: only io_poll can see it. */
    keel_atomic_fetch_add(&fd_published, 1);
    KEEL_IS(keel_aio_poll(ctx, true), true, "fd poll: unsignalled work found by polling → true");
    KEEL_OK(fd_readies == 1 && fd_reads == 2, "fd poll: ...and it went to ready (%d), not io_read",
            fd_readies);
    KEEL_IS(fd_begins, 1, "fd poll: begin ran when busy-polling started");
    /* A quiet non-blocking pass: no progress. */
    KEEL_IS(keel_aio_poll(ctx, false), false, "fd poll: consumed → false");
    keel_aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL);
    KEEL_OK(fd_order_ok, "fd poll: begin and end alternate");
    close(fds[0]);
    close(fds[1]);
    keel_aio_context_unref(ctx);
}

/* ---- embedded timers, HOST clock, anticipate ---- */

typedef struct Device {
    int id;
    KeelTimer timer;                /* embedded, QEMU's timer_init */
    int fired;
} Device;

static void device_timer(void *opaque)
{
    Device *d = opaque;
    d->fired++;
    note((char)('0' + d->id));
}

static void test_timers(void)
{
    KeelAioContext *ctx = keel_aio_context_new();
    Device d1 = { .id = 1 }, d2 = { .id = 2 };
    int64_t now = keel_clock_get_ns(KEEL_CLOCK_REALTIME);
    struct timespec ts;
    int64_t host, wall;

    keel_timer_init(&d1.timer, ctx, KEEL_CLOCK_REALTIME, device_timer, &d1);
    keel_timer_init(&d2.timer, ctx, KEEL_CLOCK_REALTIME, device_timer, &d2);
    KEEL_OK(!keel_timer_pending(&d1.timer), "timer_init: not pending");
    order_len = 0;
    order[0] = 0;
    keel_timer_mod_ns(&d1.timer, now + 20 * 1000000LL);
    keel_timer_mod_ns(&d2.timer, now + 10 * 1000000LL);
    KEEL_IS(keel_aio_poll(ctx, false), false, "timers: none due → false");
    while (d1.fired + d2.fired < 2) {
        keel_aio_poll(ctx, true);
    }
    KEEL_OK(!strcmp(order, "21"), "timers: embedded timers fire in deadline order (%s)", order);

    /* Anticipate only moves a deadline earlier. */
    keel_timer_mod_ns(&d1.timer, now + 3600LL * 1000000000LL);
    keel_timer_mod_anticipate_ns(&d1.timer, now + 7200LL * 1000000000LL);
    KEEL_OK(keel_timer_pending(&d1.timer) && d1.timer.expire_ns == now + 3600LL * 1000000000LL,
            "anticipate: a later deadline leaves the pending one");
    keel_timer_mod_anticipate_ns(&d1.timer, keel_clock_get_ns(KEEL_CLOCK_REALTIME) + 1000000);
    KEEL_IS(keel_aio_poll(ctx, true), true, "anticipate: an earlier one is taken (fires now)");
    KEEL_IS(d1.fired, 2, "anticipate: ...once");
    keel_timer_mod_anticipate_ns(&d2.timer, keel_clock_get_ns(KEEL_CLOCK_REALTIME));
    KEEL_IS(keel_aio_poll(ctx, true), true, "anticipate: on an idle timer it arms it");
    KEEL_IS(d2.fired, 2, "anticipate: ...and it fired");

    /* HOST is the wall clock. */
    clock_gettime(CLOCK_REALTIME, &ts);
    wall = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    host = keel_clock_get_ns(KEEL_CLOCK_HOST);
    KEEL_OK(host >= wall && host - wall < 1000000000LL, "HOST clock reads CLOCK_REALTIME");
    keel_timer_init(&d1.timer, ctx, KEEL_CLOCK_HOST, device_timer, &d1);
    keel_timer_mod_ns(&d1.timer, host + 5 * 1000000LL);
    KEEL_IS(keel_aio_poll(ctx, true), true, "HOST timer fires");
    KEEL_OK(d1.fired == 3 && keel_clock_get_ns(KEEL_CLOCK_HOST) >= host + 5 * 1000000LL,
            "...not before its wall-clock deadline");
    keel_timer_deinit(&d1.timer);
    keel_timer_deinit(&d2.timer);
    keel_aio_context_unref(ctx);
}

/* ---- KEEL_AIO_WAIT_WHILE from threads ---- */

static bool wait_flag;              /* atomic */
static int wait_flag_thread_ok;

static int waiter_checks;           /* atomic: the waiter's condition evaluations */

/* The waiters' condition: notes that it was evaluated. */
static bool waiter_must_wait(void)
{
    keel_atomic_fetch_add(&waiter_checks, 1);
    return !keel_atomic_load_seq_cst(&wait_flag);
}

/* Sets the flag only after the waiter found it unset, so the waiter must
 * have waited however late the scheduler ran it; then a little later, so
 * that it is asleep, not spinning, when the kick comes. */
static void set_flag_bh(void *opaque)
{
    (void)opaque;
    while (keel_atomic_load_seq_cst(&waiter_checks) == 0) {
        loop_test_sleep_ms(1);
    }
    loop_test_sleep_ms(10);
    keel_atomic_store_seq_cst(&wait_flag, true);
    keel_aio_wait_kick();
}

static void *waiter_without_ctx(void *opaque)
{
    KeelAioContext *ctx = opaque;
    bool waited = KEEL_AIO_WAIT_WHILE(ctx, waiter_must_wait());

    wait_flag_thread_ok = waited && keel_atomic_load_seq_cst(&wait_flag) ? 1 : -1;
    return NULL;
}

static int own_bh_runs;

static void own_bh(void *opaque)
{
    (void)opaque;
    own_bh_runs++;
}

static void test_wait_while(void)
{
    KeelAioContext *main_ctx = keel_aio_context_new();
    KeelIOThread *t = keel_iothread_new("wait");
    KeelAioContext *ctx = keel_iothread_get_aio_context(t);
    pthread_t tid;
    bool waited;

    keel_aio_context_set_home_thread(main_ctx);
    KEEL_IS(KEEL_AIO_WAIT_WHILE(ctx, false), false, "wait: a false condition does not wait");

    /* The main thread (with a context of its own) waits for the iothread;
     * its own BHs still run meanwhile. */
    keel_atomic_store_seq_cst(&wait_flag, false);
    keel_atomic_store_seq_cst(&waiter_checks, 0);
    keel_aio_bh_schedule_oneshot(main_ctx, own_bh, NULL);
    keel_aio_bh_schedule_oneshot(ctx, set_flag_bh, NULL);
    waited = KEEL_AIO_WAIT_WHILE(ctx, waiter_must_wait());
    KEEL_OK(waited && keel_atomic_load_seq_cst(&wait_flag),
            "wait: the main thread waited until the iothread set the flag and kicked");
    KEEL_IS(own_bh_runs, 1, "wait: ...running its own context meanwhile");

    /* A thread without a context sleeps until the kick. */
    keel_atomic_store_seq_cst(&wait_flag, false);
    keel_atomic_store_seq_cst(&waiter_checks, 0);
    pthread_create(&tid, NULL, waiter_without_ctx, ctx);
    keel_aio_bh_schedule_oneshot(ctx, set_flag_bh, NULL);
    pthread_join(tid, NULL);
    KEEL_IS(wait_flag_thread_ok, 1, "wait: a thread without a context woke on the kick");

    /* In the home thread of ctx: plain polling. */
    keel_atomic_store_seq_cst(&wait_flag, false);
    keel_atomic_store_seq_cst(&waiter_checks, 0);
    keel_aio_bh_schedule_oneshot(main_ctx, set_flag_bh, NULL);
    KEEL_IS(KEEL_AIO_WAIT_WHILE(main_ctx, waiter_must_wait()), true,
            "wait: in the context's home thread it polls that context");

    /* Kicks with nobody waiting leave no work behind (a kick while a
     * waiter was registered may have left a no-op BH: run it first). */
    while (keel_aio_poll(main_ctx, false)) {
    }
    keel_aio_wait_kick();
    KEEL_IS(keel_aio_poll(main_ctx, false), false, "wait: a kick without waiters is no progress");

    keel_iothread_free(t);
    keel_aio_context_unref(main_ctx);
}

/* ---- fork: the child makes fresh ones ---- */

/* The sanitizer runtimes cannot run this case (see main). */
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)

static int child_fn(void *opaque)
{
    (void)opaque;
    return 7;
}

static int child_ret = -1;

static void child_done(void *opaque, int ret)
{
    (void)opaque;
    child_ret = ret;
}

static void test_fork(void)
{
    /* The parent has an iothread and a busy pool when it forks. */
    KeelIOThread *t = keel_iothread_new("pre-fork");
    KeelAioContext *parent_ctx = keel_aio_context_new();
    int status = -1;
    pid_t pid;

    keel_thread_pool_submit(parent_ctx, child_fn, NULL, NULL, NULL);
    pid = fork();
    if (pid == 0) {
        /* The child's rules (loop/aio.h): new contexts, pools, iothreads;
         * nothing from before the fork. */
        KeelAioContext *ctx = keel_aio_context_new();
        KeelIOThread *t2;
        int ok = 0;

        keel_aio_context_set_home_thread(ctx);
        keel_thread_pool_submit(ctx, child_fn, NULL, child_done, NULL);
        for (int i = 0; i < 1000 && child_ret < 0; i++) {
            keel_aio_poll(ctx, true);
        }
        ok += child_ret == 7;
        t2 = keel_iothread_new("child");
        if (t2) {
            keel_aio_run_in_context_wait(keel_iothread_get_aio_context(t2), own_bh, NULL);
            ok += own_bh_runs > 0;
            keel_iothread_free(t2);
        }
        keel_aio_context_unref(ctx);
        _exit(ok == 2 ? 0 : 1);
    }
    KEEL_OK(pid > 0, "fork: forked");
    if (pid > 0) {
        waitpid(pid, &status, 0);
    }
    KEEL_OK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "fork: the child's fresh context, thread pool and iothread work");
    while (thread_pool_busy(parent_ctx)) {
        keel_aio_poll(parent_ctx, true);
    }
    keel_aio_context_unref(parent_ctx);
    keel_iothread_free(t);
}
#endif

int main(void)
{
    loop_test_sigcont_start();
    test_idle_bh();
    test_fd_poll();
    test_timers();
    test_wait_while();
#if defined(__SANITIZE_THREAD__)
    /* TSan's runtime cannot follow a multithreaded parent into a child that
     * starts threads again; the plain build runs this case. */
    keel_test_skip("fork: not under ThreadSanitizer (its runtime does not support threads after fork)");
#elif defined(__SANITIZE_ADDRESS__)
    /* ASan's allocator is not fork-safe the way glibc's malloc is (no
     * atfork locking): a parent thread allocating at the fork leaves its
     * mutex held in the child, whose new pool worker then blocks forever
     * (seen: the worker in SizeClassAllocator64::GetFromAllocator). */
    keel_test_skip("fork: not under AddressSanitizer (its allocator is not fork-safe with threads)");
#else
    test_fork();
#endif
    loop_test_sigcont_report();
    return keel_test_done();
}
