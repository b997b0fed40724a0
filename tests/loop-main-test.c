/*
 * The main loop: keel_main_loop_wait() runs plain glib sources (timeout,
 * idle, io watches — enough of them to make the query array grow) and the
 * main AioContext's BHs, fd handlers and timers; it drops the global mutex
 * while sleeping so another thread can take it; SIGTERM/SIGINT/SIGHUP reach
 * the handler through the signal fd, in the main thread.
 */
#include "config.h"

#include "loop/aio.h"
#include "loop/main-loop.h"
#include "loop/timer.h"
#include "compat/osdep.h"
#include "compat/atomic.h"
#include "tests/keel-test.h"
#include "tests/loop-test-util.h"

#include <sys/wait.h>

static pthread_t main_thread;

/* Spin the main loop until *@flag is non-zero, for at most 10 s (a
 * heartbeat source makes every blocking wait return within 50 ms). */
static bool wait_for(volatile int *flag)
{
    int64_t end = keel_monotonic_ns() + 10 * 1000000000LL;

    while (!*flag && keel_monotonic_ns() < end) {
        keel_main_loop_wait(false);
    }
    return *flag != 0;
}

static gboolean heartbeat(gpointer opaque)
{
    (void)opaque;
    return G_SOURCE_CONTINUE;
}

static int timeout_fired;

static gboolean on_timeout(gpointer opaque)
{
    (void)opaque;
    timeout_fired++;
    return G_SOURCE_REMOVE;
}

static int idle_ran;

static gboolean on_idle(gpointer opaque)
{
    (void)opaque;
    idle_ran++;
    return G_SOURCE_REMOVE;
}

#define NWATCHES 100
static int watch_calls[NWATCHES];
static int watches_fired;

static gboolean on_watch(GIOChannel *ch, GIOCondition cond, gpointer opaque)
{
    int i = (int)(intptr_t)opaque;
    (void)cond;
    loop_test_drain(g_io_channel_unix_get_fd(ch));
    watch_calls[i]++;
    watches_fired++;
    return G_SOURCE_REMOVE;
}

static void test_glib_sources(void)
{
    int pipes[NWATCHES][2];
    bool once = true;

    g_timeout_add(10, on_timeout, NULL);
    KEEL_OK(wait_for(&timeout_fired), "g_timeout_add fires in keel_main_loop_wait");
    keel_main_loop_wait(true);
    KEEL_IS(timeout_fired, 1, "... once");

    g_idle_add(on_idle, NULL);
    KEEL_OK(wait_for(&idle_ran), "g_idle_add runs");

    /* Many watches: the GPollFD array must grow and be queried again. */
    for (int i = 0; i < NWATCHES; i++) {
        GIOChannel *ch;
        loop_test_pipe(pipes[i]);
        ch = g_io_channel_unix_new(pipes[i][0]);
        g_io_add_watch(ch, G_IO_IN, on_watch, (void *)(intptr_t)i);
        g_io_channel_unref(ch);
    }
    keel_main_loop_wait(true);
    KEEL_IS(watches_fired, 0, "idle watches do not fire");
    for (int i = 0; i < NWATCHES; i++) {
        loop_test_write_byte(pipes[i][1]);
    }
    for (int64_t end = keel_monotonic_ns() + 10000000000LL;
         watches_fired < NWATCHES && keel_monotonic_ns() < end;) {
        keel_main_loop_wait(false);
    }
    for (int i = 0; i < NWATCHES; i++) {
        once &= watch_calls[i] == 1;
        close(pipes[i][0]);
        close(pipes[i][1]);
    }
    KEEL_IS(watches_fired, NWATCHES, "%d g_io_add_watch sources all fired", NWATCHES);
    KEEL_OK(once, "... each once");
}

static int bh_ran, fd_ran;
static bool bh_wrong_thread;

static void main_bh(void *opaque)
{
    (void)opaque;
    bh_ran++;
    if (!pthread_equal(pthread_self(), main_thread)) {
        bh_wrong_thread = true;
    }
}

static void main_fd(void *opaque)
{
    fd_ran++;
    loop_test_drain(*(int *)opaque);
}

static int timer_fired;
static int64_t timer_deadline, timer_fired_at;

static void main_timer(void *opaque)
{
    (void)opaque;
    timer_fired++;
    timer_fired_at = keel_clock_get_ns(KEEL_CLOCK_REALTIME);
}

static void test_aio_in_main_loop(void)
{
    KeelAioContext *ctx = keel_main_aio_context();
    KeelBH *bh = keel_aio_bh_new(ctx, main_bh, NULL);
    KeelTimer *t = keel_aio_timer_new_ns(ctx, KEEL_CLOCK_REALTIME, main_timer, NULL);
    int fds[2];

    keel_bh_schedule(bh);
    KEEL_OK(wait_for(&bh_ran), "a main-context BH runs in keel_main_loop_wait");
    keel_main_loop_wait(true);
    KEEL_IS(bh_ran, 1, "... once");

    loop_test_pipe(fds);
    keel_aio_set_fd_handler(ctx, fds[0], main_fd, NULL, NULL, &fds[0]);
    loop_test_write_byte(fds[1]);
    KEEL_OK(wait_for(&fd_ran), "a main-context fd handler runs");
    keel_aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);

    timer_deadline = keel_clock_get_ns(KEEL_CLOCK_REALTIME) + 20 * 1000000LL;
    keel_timer_mod_ns(t, timer_deadline);
    KEEL_OK(wait_for(&timer_fired), "a main-context timer fires");
    KEEL_IS(timer_fired, 1, "... once");
    KEEL_OK(timer_fired_at >= timer_deadline, "... not before its deadline");
    keel_timer_free(t);

    keel_bh_delete(bh);
}

/* ---- global mutex ---- */

typedef struct Contender {
    bool held_before;
    bool held_inside;
    int increments;             /* under the global mutex */
    KeelBH *bh;
} Contender;

static void *contender_thread(void *opaque)
{
    Contender *c = opaque;

    keel_atomic_store_seq_cst(&c->held_before, keel_global_mutex_held());
    /* Succeeds only while the main thread sleeps in keel_main_loop_wait. */
    keel_global_mutex_lock();
    keel_atomic_store_seq_cst(&c->held_inside, keel_global_mutex_held());
    c->increments++;
    keel_global_mutex_unlock();
    keel_bh_schedule(c->bh);
    return NULL;
}

static int contender_bh_ran;

static void contender_bh(void *opaque)
{
    (void)opaque;
    contender_bh_ran++;
}

static void test_global_mutex(void)
{
    Contender c = { 0 };
    pthread_t tid;
    bool held_throughout = true;

    c.bh = keel_aio_bh_new(keel_main_aio_context(), contender_bh, NULL);
    keel_global_mutex_lock();
    KEEL_OK(keel_global_mutex_held(), "main thread holds the global mutex");
    pthread_create(&tid, NULL, contender_thread, &c);
    for (int64_t end = keel_monotonic_ns() + 10000000000LL;
         !contender_bh_ran && keel_monotonic_ns() < end;) {
        keel_main_loop_wait(false);
        held_throughout &= keel_global_mutex_held();
    }
    KEEL_IS(contender_bh_ran, 1, "the other thread got the mutex while the loop slept");
    KEEL_OK(held_throughout, "keel_main_loop_wait gives the mutex back to its caller");
    pthread_join(tid, NULL);
    KEEL_IS(c.increments, 1, "the other thread ran its critical section once");
    KEEL_OK(!keel_atomic_load_seq_cst(&c.held_before) &&
            keel_atomic_load_seq_cst(&c.held_inside),
            "held() answers for the calling thread");
    keel_global_mutex_unlock();
    KEEL_OK(!keel_global_mutex_held(), "released");
    keel_bh_delete(c.bh);
}

/* ---- signals ---- */

static int signals_seen[3];
static bool signal_wrong_thread;

static void on_signal(int signo, void *opaque)
{
    (void)opaque;
    if (!pthread_equal(pthread_self(), main_thread)) {
        signal_wrong_thread = true;
    }
    if (signo == SIGTERM) {
        signals_seen[0]++;
    } else if (signo == SIGINT) {
        signals_seen[1]++;
    } else if (signo == SIGHUP) {
        signals_seen[2]++;
    }
}

static void test_signals(void)
{
    keel_main_loop_set_signal_handler(on_signal, NULL);
    kill(getpid(), SIGTERM);
    KEEL_OK(wait_for(&signals_seen[0]), "SIGTERM reaches the handler");
    kill(getpid(), SIGINT);
    KEEL_OK(wait_for(&signals_seen[1]), "SIGINT reaches the handler");
    kill(getpid(), SIGHUP);
    KEEL_OK(wait_for(&signals_seen[2]), "SIGHUP reaches the handler");
    KEEL_OK(signals_seen[0] == 1 && signals_seen[1] == 1 && signals_seen[2] == 1,
            "each signal handled once");
    KEEL_OK(!signal_wrong_thread, "signal handler ran in the main thread");
}

/* Without a handler: SIGHUP is ignored, SIGTERM kills with the default
 * action.  In a child forked before any thread exists. */
static void test_default_signal_action(void)
{
    pid_t pid = fork();
    int status = 0;

    if (pid == 0) {
        int64_t end;
        if (keel_main_loop_init() < 0) {
            _exit(3);
        }
        kill(getpid(), SIGHUP);
        for (int i = 0; i < 20; i++) {
            keel_main_loop_wait(true);
        }
        kill(getpid(), SIGTERM);
        end = keel_monotonic_ns() + 5 * 1000000000LL;
        while (keel_monotonic_ns() < end) {
            keel_main_loop_wait(true);
        }
        _exit(0);
    }
    if (pid < 0) {
        keel_test_skip("fork failed");
        return;
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    KEEL_OK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM,
            "no handler: SIGHUP ignored, SIGTERM terminates (status 0x%x)", status);
}

int main(void)
{
    int ret;

    test_default_signal_action();
    main_thread = pthread_self();
    /* Before any other thread: the signal fd blocks the signals here. */
    ret = keel_main_loop_init();
    KEEL_IS(ret, 0, "keel_main_loop_init");
    if (ret < 0) {
        return keel_test_done();
    }
    KEEL_IS(keel_main_loop_init(), 0, "a second init is a no-op");
    loop_test_sigcont_start();
    KEEL_OK(keel_main_aio_context() != NULL, "main AioContext exists");
    KEEL_OK(keel_current_aio_context() == keel_main_aio_context(),
            "the main context is the main thread's current context");

    g_timeout_add(50, heartbeat, NULL);
    test_glib_sources();
    test_aio_in_main_loop();
    test_global_mutex();
    test_signals();

    loop_test_sigcont_report();
    return keel_test_done();
}
