/*
 * The glib-integrated main loop, the global mutex, and signal delivery.
 */
#include "config.h"

#include "loop/main-loop.h"
#include "loop/aio-int.h"
#include "compat/osdep.h"
#include "compat/poll.h"
#include "compat/signalfd.h"

#include <assert.h>
#include <signal.h>

static KeelAioContext *main_ctx;
static int signal_fd = -1;
static void (*signal_handler)(int signo, void *opaque);
static void *signal_handler_opaque;

/* The query array of keel_main_loop_wait (main thread only). */
static GPollFD *main_pollfds;
static int main_pollfds_cap;

/* ---- global mutex ---- */

static pthread_mutex_t global_mutex = PTHREAD_MUTEX_INITIALIZER;
static __thread bool global_mutex_mine;

void keel_global_mutex_lock(void)
{
    assert(!global_mutex_mine);
    pthread_mutex_lock(&global_mutex);
    global_mutex_mine = true;
}

void keel_global_mutex_unlock(void)
{
    assert(global_mutex_mine);
    global_mutex_mine = false;
    pthread_mutex_unlock(&global_mutex);
}

bool keel_global_mutex_held(void)
{
    return global_mutex_mine;
}

/* ---- signals ---- */

static void default_signal_action(int signo)
{
    sigset_t set;

    if (signo == SIGHUP) {
        return;
    }
    /* Die the way the sender expects (status "killed by signal"). */
    signal(signo, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, signo);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    raise(signo);
}

static void signal_fd_read(void *opaque)
{
    KeelSignalInfo info;

    while (keel_signalfd_read(signal_fd, &info) == 1) {
        if (signal_handler) {
            signal_handler((int)info.ssi_signo, signal_handler_opaque);
        } else {
            default_signal_action((int)info.ssi_signo);
        }
    }
}

void keel_main_loop_set_signal_handler(void (*fn)(int signo, void *opaque), void *opaque)
{
    signal_handler = fn;
    signal_handler_opaque = opaque;
}

/* ---- the loop ---- */

int keel_main_loop_init(void)
{
    sigset_t mask;
    GSource *source;
    int fd;

    if (main_ctx) {
        return 0;
    }
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    fd = keel_signalfd_open(&mask);
    if (fd < 0) {
        return fd;
    }
    signal_fd = fd;

    main_ctx = keel_aio_context_new();
    keel_aio_context_set_home_thread(main_ctx);
    /* Adaptive polling stays off: the main loop also serves glib sources,
     * and busy-polling there would only burn a CPU. */
    keel_aio_context_set_poll_params(main_ctx, 0, 0, 0);
    source = keel_aio_get_g_source(main_ctx);
    g_source_attach(source, NULL);
    g_source_unref(source);
    keel_aio_set_fd_handler(main_ctx, signal_fd, signal_fd_read, NULL, NULL, NULL);
    return 0;
}

KeelAioContext *keel_main_aio_context(void)
{
    return main_ctx;
}

void keel_main_loop_wait(bool nonblocking)
{
    GMainContext *gctx = g_main_context_default();
    gint max_priority, timeout_ms;
    int64_t timeout_ns;
    bool unlocked = false;
    int n;

    if (!g_main_context_acquire(gctx)) {
        /* Another thread iterates the default context: not ours to run. */
        return;
    }
    g_main_context_prepare(gctx, &max_priority);
    for (;;) {
        n = g_main_context_query(gctx, max_priority, &timeout_ms, main_pollfds,
                                 main_pollfds_cap);
        if (n <= main_pollfds_cap) {
            break;
        }
        /* Too small: glib told us how many it needs; grow and ask again. */
        main_pollfds_cap = MAX(n, main_pollfds_cap * 2);
        main_pollfds = g_renew(GPollFD, main_pollfds, main_pollfds_cap);
    }

    if (nonblocking) {
        timeout_ns = 0;
    } else {
        timeout_ns = timeout_ms < 0 ? -1 : (int64_t)timeout_ms * 1000000;
        if (main_ctx && timeout_ns != 0) {
            /* glib's timeout is in ms rounded up; our timers know better. */
            int64_t deadline = aio_timers_deadline_ns(main_ctx);
            if (deadline >= 0 && (timeout_ns < 0 || deadline < timeout_ns)) {
                timeout_ns = deadline;
            }
        }
    }

    if (timeout_ns != 0 && keel_global_mutex_held()) {
        keel_global_mutex_unlock();
        unlocked = true;
    }
    /* EINTR leaves nothing ready; check/dispatch run anyway (timers). */
    keel_poll_ns(main_pollfds, (unsigned)n, timeout_ns);
    if (unlocked) {
        keel_global_mutex_lock();
    }

    if (g_main_context_check(gctx, max_priority, main_pollfds, n)) {
        g_main_context_dispatch(gctx);
    }
    g_main_context_release(gctx);
}

void keel_loop_features_register(void)
{
    keel_feature_register(&loop_fdmon_feature);
}
