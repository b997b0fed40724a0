/*
 * bench-loop: the event loop next to its limit and its peers, in one run.
 *
 *  1. BH schedule + dispatch per second in one thread
 *     (keel BH + aio_poll; glib g_idle_add-style source + iteration;
 *      libuv uv_async_send + uv_run NOWAIT).
 *  2. Cross-thread wake latency, one way: thread A stamps the time and wakes
 *     thread B, which is asleep in its loop; B stamps the time in the
 *     callback.  Median and p99 over many samples, against a raw eventfd
 *     (B blocked in poll() on it) as the limit.  A waits 20 µs between
 *     samples so B is asleep; then 2 µs, inside the adaptive polling
 *     window, where B busy-polls instead of sleeping.
 *  3. Timer lateness: arm a timer, sleep in the loop, how late the callback
 *     runs (keel ns timers; glib and libuv have ms timers).
 *  4. fd dispatch cost with 1, 64 and 1024 registered fds: write a byte to
 *     one pipe, one non-blocking loop iteration reads it (includes the
 *     write and read system calls).
 *
 * Timings are for humans; nothing here is asserted.  KEEL_BENCH_QUICK=1
 * shortens every case (used to smoke-test the program).
 */
#include "config.h"

#include "loop/aio.h"
#include "loop/aio-int.h"
#include "loop/timer.h"
#include "compat/atomic.h"
#include "compat/osdep.h"
#include "compat/event-notifier.h"

#include <glib.h>
#include <glib-unix.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#ifdef HAVE_SYS_PRCTL_H
#include <sys/prctl.h>
#endif
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<uv.h>)
#include <uv.h>
#define HAVE_UV 1
#endif
#endif

static double scale = 1.0;          /* KEEL_BENCH_QUICK shrinks the runs */

static int64_t now_ns(void)
{
    return keel_monotonic_ns();
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void report_latency(const char *what, int64_t *samples, int n)
{
    qsort(samples, n, sizeof(*samples), cmp_i64);
    printf("  %-44s median %8.2f us   p99 %8.2f us   (n=%d)\n", what,
           samples[n / 2] / 1000.0, samples[(int)(n * 0.99)] / 1000.0, n);
    fflush(stdout);
}

static void spin_ns(int64_t ns)
{
    int64_t end = now_ns() + ns;
    while (now_ns() < end) {
    }
}

/* ================================================================== */
/* 1. same-thread schedule + dispatch                                  */

static long bh_count;

static void bh_cb(void *opaque)
{
    (void)opaque;
    bh_count++;
}

static double run_for(double seconds, void (*one)(void), long *counter)
{
    int64_t start = now_ns(), end = start + (int64_t)(seconds * scale * 1e9);
    long n = 0;

    *counter = 0;
    while (now_ns() < end) {
        for (int i = 0; i < 1000; i++) {
            one();
        }
        n += 1000;
    }
    if (*counter != n) {
        fprintf(stderr, "bench: lost work (%ld of %ld)\n", *counter, n);
        exit(1);
    }
    return n / ((now_ns() - start) / 1e9);
}

static KeelAioContext *bh_ctx;
static KeelBH *bh_bh;

static void keel_bh_once(void)
{
    keel_bh_schedule(bh_bh);
    keel_aio_poll(bh_ctx, false);
}

static GMainContext *g_ctx;
static long g_count;

static gboolean g_idle_cb(gpointer opaque)
{
    (void)opaque;
    g_count++;
    return G_SOURCE_REMOVE;
}

static void glib_idle_once(void)
{
    GSource *s = g_idle_source_new();
    g_source_set_callback(s, g_idle_cb, NULL, NULL);
    g_source_attach(s, g_ctx);
    g_source_unref(s);
    g_main_context_iteration(g_ctx, FALSE);
}

#ifdef HAVE_UV
static uv_loop_t uv_same_loop;
static uv_async_t uv_same_async;
static long uv_count;

static void uv_same_cb(uv_async_t *a)
{
    (void)a;
    uv_count++;
}

static void uv_async_once(void)
{
    uv_async_send(&uv_same_async);
    uv_run(&uv_same_loop, UV_RUN_NOWAIT);
}
#endif

static void bench_same_thread(void)
{
    double keel, glib_rate;

    printf("\n[1] schedule + dispatch in one thread (callbacks per second)\n");
    bh_ctx = keel_aio_context_new();
    bh_bh = keel_aio_bh_new(bh_ctx, bh_cb, NULL);
    keel = run_for(0.5, keel_bh_once, &bh_count);
    printf("  %-44s %12.0f /s\n", "keel BH + aio_poll(nonblocking)", keel);
    keel_bh_delete(bh_bh);
    keel_aio_poll(bh_ctx, false);
    keel_aio_context_unref(bh_ctx);

    g_ctx = g_main_context_new();
    glib_rate = run_for(0.5, glib_idle_once, &g_count);
    printf("  %-44s %12.0f /s   (keel x%.1f)\n", "glib idle source + iteration", glib_rate,
           keel / glib_rate);
    g_main_context_unref(g_ctx);

#ifdef HAVE_UV
    uv_loop_init(&uv_same_loop);
    uv_async_init(&uv_same_loop, &uv_same_async, uv_same_cb);
    double uv_rate = run_for(0.5, uv_async_once, &uv_count);
    printf("  %-44s %12.0f /s   (keel x%.1f)\n", "libuv uv_async_send + uv_run(NOWAIT)", uv_rate,
           keel / uv_rate);
    uv_close((uv_handle_t *)&uv_same_async, NULL);
    uv_run(&uv_same_loop, UV_RUN_DEFAULT);
    uv_loop_close(&uv_same_loop);
#endif
}

/* ================================================================== */
/* 2. cross-thread wake latency                                        */

#define GAP_NS 20000

static int nsamples;
static int64_t *samples;
static int64_t t_send KEEL_ATOMIC_ALIGNED;
static int done_seq;
static bool server_stop;
static bool server_ready;

static void record_sample(void)
{
    int64_t t1 = now_ns();
    int i = keel_atomic_read(&done_seq);

    samples[i] = t1 - keel_atomic_read(&t_send);
    keel_atomic_store_release(&done_seq, i + 1);
}

static int64_t gap_ns = GAP_NS;

/* Client side, shared by every case: wake, wait for the stamp, pause. */
static void run_client(const char *what, void (*wake)(void))
{
    while (!keel_atomic_load_seq_cst(&server_ready)) {
        sched_yield();
    }
    keel_atomic_store_seq_cst(&done_seq, 0);
    for (int i = 0; i < nsamples; i++) {
        spin_ns(gap_ns);
        keel_atomic_set(&t_send, now_ns());
        wake();
        while (keel_atomic_load_acquire(&done_seq) != i + 1) {
        }
    }
    report_latency(what, samples, nsamples);
}

static void start_server(pthread_t *tid, void *(*fn)(void *), void *arg)
{
    keel_atomic_store_seq_cst(&server_stop, false);
    keel_atomic_store_seq_cst(&server_ready, false);
    pthread_create(tid, NULL, fn, arg);
}

/* ---- raw eventfd ---- */

static KeelEventNotifier raw_en;

static void *raw_server(void *arg)
{
    struct pollfd pfd = { keel_event_notifier_get_fd(&raw_en), POLLIN, 0 };
    (void)arg;

    keel_atomic_store_seq_cst(&server_ready, true);
    for (;;) {
        poll(&pfd, 1, -1);
        keel_event_notifier_test_and_clear(&raw_en);
        if (keel_atomic_load_seq_cst(&server_stop)) {
            break;
        }
        record_sample();
    }
    return NULL;
}

static void raw_wake(void)
{
    keel_event_notifier_set(&raw_en);
}

static void *(*raw_server_en_init(void))(void *)
{
    keel_event_notifier_init(&raw_en, false);
    return raw_server;
}

static void raw_server_stop(pthread_t tid)
{
    keel_atomic_store_seq_cst(&server_stop, true);
    keel_event_notifier_set(&raw_en);
    pthread_join(tid, NULL);
    keel_event_notifier_cleanup(&raw_en);
}

/* ---- keel ---- */

static KeelAioContext *server_ctx;
static KeelBH *server_bh;
static int64_t server_poll_max_ns;

static void server_bh_cb(void *opaque)
{
    (void)opaque;
    record_sample();
}

static void *keel_server(void *arg)
{
    (void)arg;
    server_ctx = keel_aio_context_new();
    keel_aio_context_set_poll_params(server_ctx, server_poll_max_ns, 0, 0);
    server_bh = keel_aio_bh_new(server_ctx, server_bh_cb, NULL);
    keel_atomic_store_seq_cst(&server_ready, true);
    while (!keel_atomic_load_seq_cst(&server_stop)) {
        keel_aio_poll(server_ctx, true);
    }
    keel_bh_delete(server_bh);
    keel_aio_poll(server_ctx, false);
    keel_aio_context_unref(server_ctx);
    return NULL;
}

static void keel_wake(void)
{
    keel_bh_schedule(server_bh);
}

static void keel_stop(void)
{
    keel_atomic_store_seq_cst(&server_stop, true);
    keel_aio_notify(server_ctx);
}

/* ---- glib ---- */

static GMainContext *server_gctx;
static bool glib_flag;

static gboolean glib_idle_wake_cb(gpointer opaque)
{
    (void)opaque;
    record_sample();
    return G_SOURCE_REMOVE;
}

static void *glib_server(void *arg)
{
    bool flag_mode = arg != NULL;

    g_main_context_acquire(server_gctx);
    keel_atomic_store_seq_cst(&server_ready, true);
    while (!keel_atomic_load_seq_cst(&server_stop)) {
        g_main_context_iteration(server_gctx, TRUE);
        if (flag_mode && keel_atomic_xchg(&glib_flag, false)) {
            record_sample();
        }
    }
    g_main_context_release(server_gctx);
    return NULL;
}

static void glib_idle_wake(void)
{
    GSource *s = g_idle_source_new();
    g_source_set_callback(s, glib_idle_wake_cb, NULL, NULL);
    g_source_attach(s, server_gctx);
    g_source_unref(s);
}

static void glib_flag_wake(void)
{
    keel_atomic_store_seq_cst(&glib_flag, true);
    g_main_context_wakeup(server_gctx);
}

static void glib_stop(void)
{
    keel_atomic_store_seq_cst(&server_stop, true);
    g_main_context_wakeup(server_gctx);
}

#ifdef HAVE_UV
/* ---- libuv ---- */

static uv_loop_t uv_server_loop;
static uv_async_t uv_server_async;

static void uv_server_cb(uv_async_t *a)
{
    if (keel_atomic_load_seq_cst(&server_stop)) {
        uv_close((uv_handle_t *)a, NULL);
        return;
    }
    record_sample();
}

static void *uv_server(void *arg)
{
    (void)arg;
    keel_atomic_store_seq_cst(&server_ready, true);
    uv_run(&uv_server_loop, UV_RUN_DEFAULT);
    return NULL;
}

static void uv_wake(void)
{
    uv_async_send(&uv_server_async);
}
#endif

static void bench_wake_latency(void)
{
    pthread_t tid;

    printf("\n[2] cross-thread wake latency, one way (A stamps, wakes B; B stamps in the callback)\n");
    nsamples = (int)(10000 * scale);
    if (nsamples < 100) {
        nsamples = 100;
    }
    samples = g_new(int64_t, nsamples);

    start_server(&tid, raw_server_en_init(), NULL);
    run_client(keel_event_notifier_is_eventfd(&raw_en) ? "limit: raw eventfd, B in poll()"
                                                       : "limit: raw pipe, B in poll()", raw_wake);
    raw_server_stop(tid);

    server_poll_max_ns = 0;
    start_server(&tid, keel_server, NULL);
    run_client("keel BH -> aio_poll (polling off)", keel_wake);
    keel_stop();
    pthread_join(tid, NULL);

    server_poll_max_ns = 32768;
    start_server(&tid, keel_server, NULL);
    run_client("keel BH -> aio_poll (adaptive, max 32us)", keel_wake);
    keel_stop();
    pthread_join(tid, NULL);

    /* Wake-ups 2 us apart: inside the polling window, which is where
     * adaptive polling pays. */
    gap_ns = 2000;
    start_server(&tid, raw_server_en_init(), NULL);
    run_client("  2 us apart: raw eventfd", raw_wake);
    raw_server_stop(tid);
    start_server(&tid, keel_server, NULL);
    run_client("  2 us apart: keel BH (adaptive, max 32us)", keel_wake);
    keel_stop();
    pthread_join(tid, NULL);
    gap_ns = GAP_NS;

    server_gctx = g_main_context_new();
    start_server(&tid, glib_server, NULL);
    run_client("glib idle source -> iteration", glib_idle_wake);
    glib_stop();
    pthread_join(tid, NULL);

    start_server(&tid, glib_server, (void *)1);
    run_client("glib g_main_context_wakeup -> iteration", glib_flag_wake);
    glib_stop();
    pthread_join(tid, NULL);
    g_main_context_unref(server_gctx);

#ifdef HAVE_UV
    uv_loop_init(&uv_server_loop);
    uv_async_init(&uv_server_loop, &uv_server_async, uv_server_cb);
    start_server(&tid, uv_server, NULL);
    run_client("libuv uv_async_send -> uv_run", uv_wake);
    keel_atomic_store_seq_cst(&server_stop, true);
    uv_async_send(&uv_server_async);
    pthread_join(tid, NULL);
    uv_loop_close(&uv_server_loop);
#endif
    g_free(samples);
}

/* ================================================================== */
/* 3. timer lateness                                                   */

static int64_t fired_at;
static bool fired;

static void keel_timer_cb(void *opaque)
{
    (void)opaque;
    fired_at = now_ns();
    fired = true;
}

static gboolean glib_timer_cb(gpointer opaque)
{
    (void)opaque;
    fired_at = now_ns();
    fired = true;
    return G_SOURCE_REMOVE;
}

#ifdef HAVE_UV
static void uv_timer_cb_fn(uv_timer_t *t)
{
    (void)t;
    fired_at = now_ns();
    fired = true;
}
#endif

static void bench_timers(void)
{
    int n = (int)(200 * scale);
    int64_t *lat;
    KeelAioContext *ctx = keel_aio_context_new();
    KeelTimer *t = keel_aio_timer_new_ns(ctx, KEEL_CLOCK_REALTIME, keel_timer_cb, NULL);
    char what[64];

    if (n < 20) {
        n = 20;
    }
    lat = g_new(int64_t, n);
    printf("\n[3] timer lateness (callback time - deadline), loop asleep until then\n");
    for (int run = 0; run < 3; run++) {
        int delay_us = run == 1 ? 1000 : 100;
        const char *note = "";
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_TIMERSLACK)
        if (run == 2) {
            /* The kernel's default 50 us timer slack dominates lateness. */
            prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
            note = ", timer slack 1 ns";
        }
#else
        if (run == 2) {
            break;
        }
#endif
        for (int i = 0; i < n; i++) {
            int64_t deadline = now_ns() + delay_us * 1000LL;
            fired = false;
            keel_timer_mod_ns(t, deadline);
            while (!fired) {
                keel_aio_poll(ctx, true);
            }
            lat[i] = fired_at - deadline;
        }
        snprintf(what, sizeof(what), "keel timer, %d us%s", delay_us, note);
        report_latency(what, lat, n);
    }
#if defined(HAVE_SYS_PRCTL_H) && defined(PR_SET_TIMERSLACK)
    prctl(PR_SET_TIMERSLACK, 0UL, 0UL, 0UL, 0UL);     /* back to the default */
#endif
    keel_timer_free(t);
    keel_aio_context_unref(ctx);

    GMainContext *gc = g_main_context_new();
    for (int i = 0; i < n; i++) {
        GSource *s = g_timeout_source_new(1);
        int64_t deadline = now_ns() + 1000000;
        g_source_set_callback(s, glib_timer_cb, NULL, NULL);
        fired = false;
        g_source_attach(s, gc);
        g_source_unref(s);
        while (!fired) {
            g_main_context_iteration(gc, TRUE);
        }
        lat[i] = fired_at - deadline;
    }
    report_latency("glib g_timeout_source_new(1 ms)", lat, n);
    g_main_context_unref(gc);

#ifdef HAVE_UV
    uv_loop_t loop;
    uv_timer_t ut;
    uv_loop_init(&loop);
    uv_timer_init(&loop, &ut);
    for (int i = 0; i < n; i++) {
        int64_t deadline;
        uv_update_time(&loop);
        deadline = now_ns() + 1000000;
        fired = false;
        uv_timer_start(&ut, uv_timer_cb_fn, 1, 0);
        while (!fired) {
            uv_run(&loop, UV_RUN_ONCE);
        }
        lat[i] = fired_at - deadline;
    }
    report_latency("libuv uv_timer (1 ms)", lat, n);
    uv_close((uv_handle_t *)&ut, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
#endif
    g_free(lat);
}

/* ================================================================== */
/* 4. fd dispatch with N registered fds                                */

typedef int PipePair[2];
static PipePair *pipes;
static long fd_reads;

static void fd_read_cb(void *opaque)
{
    char c;
    if (read((int)(intptr_t)opaque, &c, 1) == 1) {
        fd_reads++;
    }
}

static gboolean glib_fd_cb(gint fd, GIOCondition cond, gpointer opaque)
{
    (void)cond;
    (void)opaque;
    fd_read_cb((void *)(intptr_t)fd);
    return G_SOURCE_CONTINUE;
}

#ifdef HAVE_UV
static void uv_poll_cb_fn(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    fd_read_cb(p->data);
}
#endif

/* ns per (write + one iteration), over about 0.3 s. */
static double time_dispatch(int nfds, void (*iterate)(void *), void *arg)
{
    int64_t start = now_ns(), end = start + (int64_t)(0.3e9 * scale);
    long iters = 0;

    fd_reads = 0;
    do {
        for (int k = 0; k < 100; k++, iters++) {
            char c = 'x';
            if (write(pipes[iters % nfds][1], &c, 1) != 1) {
                abort();
            }
            iterate(arg);
        }
    } while (now_ns() < end);
    if (fd_reads != iters) {
        fprintf(stderr, "bench: fd dispatch lost events (%ld of %ld)\n", fd_reads, iters);
        exit(1);
    }
    return (now_ns() - start) / (double)iters;
}

static void keel_iterate(void *arg)
{
    keel_aio_poll(arg, false);
}

static void glib_iterate(void *arg)
{
    g_main_context_iteration(arg, FALSE);
}

#ifdef HAVE_UV
static void uv_iterate(void *arg)
{
    uv_run(arg, UV_RUN_NOWAIT);
}
#endif

static void bench_fd_dispatch(void)
{
    static const int sizes[] = { 1, 64, 1024 };
    struct rlimit rl;

    printf("\n[4] fd dispatch: write 1 byte + one non-blocking iteration that reads it (ns each)\n");
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    printf("  %-10s %14s %14s %14s %14s\n", "fds", "keel (auto)", "keel (poll)", "glib", "libuv");
    for (unsigned s = 0; s < G_N_ELEMENTS(sizes); s++) {
        int n = sizes[s];
        double tk, tp, tg, tu = 0;

        if ((rlim_t)(2 * n + 64) > rl.rlim_cur) {
            printf("  %-10d (not enough fds)\n", n);
            continue;
        }
        pipes = g_new(PipePair, n);
        for (int i = 0; i < n; i++) {
            if (keel_pipe2(pipes[i], O_NONBLOCK | O_CLOEXEC) < 0) {
                abort();
            }
        }

        /* auto: poll up to 16 fds, epoll beyond; poll: never epoll. */
        for (int mode = 0; mode < 2; mode++) {
            KeelAioContext *ctx = keel_aio_context_new();
            if (mode == 1) {
                aio_context_set_epoll_threshold(ctx, UINT_MAX);
            }
            for (int i = 0; i < n; i++) {
                keel_aio_set_fd_handler(ctx, pipes[i][0], fd_read_cb, NULL, NULL,
                                        (void *)(intptr_t)pipes[i][0]);
            }
            *(mode ? &tp : &tk) = time_dispatch(n, keel_iterate, ctx);
            for (int i = 0; i < n; i++) {
                keel_aio_set_fd_handler(ctx, pipes[i][0], NULL, NULL, NULL, NULL);
            }
            keel_aio_context_unref(ctx);
        }

        GMainContext *gc = g_main_context_new();
        for (int i = 0; i < n; i++) {
            GSource *src = g_unix_fd_source_new(pipes[i][0], G_IO_IN);
            g_source_set_callback(src, (GSourceFunc)(void (*)(void))glib_fd_cb, NULL, NULL);
            g_source_attach(src, gc);
            g_source_unref(src);
        }
        tg = time_dispatch(n, glib_iterate, gc);
        g_main_context_unref(gc);

#ifdef HAVE_UV
        uv_loop_t loop;
        uv_poll_t *polls = g_new(uv_poll_t, n);
        uv_loop_init(&loop);
        for (int i = 0; i < n; i++) {
            uv_poll_init(&loop, &polls[i], pipes[i][0]);
            polls[i].data = (void *)(intptr_t)pipes[i][0];
            uv_poll_start(&polls[i], UV_READABLE, uv_poll_cb_fn);
        }
        tu = time_dispatch(n, uv_iterate, &loop);
        for (int i = 0; i < n; i++) {
            uv_close((uv_handle_t *)&polls[i], NULL);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        g_free(polls);
#endif
        printf("  %-10d %14.0f %14.0f %14.0f %14.0f\n", n, tk, tp, tg, tu);
        fflush(stdout);
        for (int i = 0; i < n; i++) {
            close(pipes[i][0]);
            close(pipes[i][1]);
        }
        g_free(pipes);
    }
}

int main(void)
{
    const char *quick = getenv("KEEL_BENCH_QUICK");
    const char *reason = NULL;
    int64_t start = now_ns();

    if (quick && strcmp(quick, "1") == 0) {
        scale = 0.05;
    }
    printf("bench-loop: keel %s, glib %u.%u.%u", PACKAGE_VERSION, glib_major_version,
           glib_minor_version, glib_micro_version);
#ifdef HAVE_UV
    printf(", libuv %s", uv_version_string());
#else
    printf(", libuv not built in");
#endif
    printf(", notifier %s", keel_event_notifier_backend(&reason));
    printf(", %ld CPUs\n", sysconf(_SC_NPROCESSORS_ONLN));

    bench_same_thread();
    bench_wake_latency();
    bench_timers();
    bench_fd_dispatch();
    printf("\ntotal %.1f s\n", (now_ns() - start) / 1e9);
    return 0;
}
