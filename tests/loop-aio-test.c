/*
 * AioContext scenarios: the return value of a poll in every case, BHs
 * (schedule, cancel, delete, self-delete, once per poll, one-shot, order,
 * nesting), event notifiers, explicit notify, timers on both clocks,
 * handler removal and replacement during dispatch, and cross-thread
 * wake-ups.
 *
 * Built several times: driven by keel_aio_poll() (loop-aio-test), the same
 * under a SIGCONT storm (loop-aio-eintr-test), driven by
 * g_main_context_iteration() on a GMainContext with the context's GSource
 * attached (loop-glib-test, -DLOOP_TEST_DRIVER_GLIB), and both drivers with
 * the context in epoll mode from the first handler on (loop-aio-epoll-test,
 * loop-glib-epoll-test, -DLOOP_TEST_EPOLL).
 */
#include "config.h"

#include "loop/aio.h"
#include "loop/aio-int.h"
#include "loop/timer.h"
#include "tests/keel-test.h"
#include "tests/loop-test-util.h"

static KeelAioContext *ctx;
static pthread_t home_thread;
/* Whether this kernel gives us epoll (an old-kernel run may not). */
static bool have_epoll;

/* ---- the driver: one iteration of the loop ---- */

#ifdef LOOP_TEST_DRIVER_GLIB
static GMainContext *gctx;
static const char *driver_name = "glib";

static bool poll_nb(void)
{
    /* glib reports an EINTR'd zero-timeout poll as "nothing happened";
     * when nothing was dispatched, look again to be sure. */
    for (int i = 0; i < 3; i++) {
        if (g_main_context_iteration(gctx, FALSE)) {
            return true;
        }
    }
    return false;
}

/* A blocking iteration that is expected to make progress.  glib may also
 * return for EINTR or an internal wake-up, so try again a bounded number of
 * times. */
static bool poll_block_progress(void)
{
    for (int i = 0; i < 1000; i++) {
        if (g_main_context_iteration(gctx, TRUE)) {
            return true;
        }
    }
    return false;
}

static bool poll_block(void)
{
    return g_main_context_iteration(gctx, TRUE);
}

static void driver_init(void)
{
    GSource *src = keel_aio_get_g_source(ctx);
    gctx = g_main_context_new();
    g_source_attach(src, gctx);
    g_source_unref(src);
}

static void fini_read(void *opaque)
{
    loop_test_drain(*(int *)opaque);
}

static void driver_fini(void)
{
    GSource *src = keel_aio_get_g_source(ctx);
    int fds[2];

    g_source_destroy(src);
    g_source_unref(src);
    g_main_context_unref(gctx);

    /* Detached from glib, the context still runs with keel_aio_poll (and
     * handler changes do not touch the destroyed source). */
    loop_test_pipe(fds);
    loop_test_write_byte(fds[1]);
    keel_aio_set_fd_handler(ctx, fds[0], fini_read, NULL, NULL, &fds[0]);
    KEEL_OK(keel_aio_poll(ctx, false), "glib: after g_source_destroy, keel_aio_poll still works");
    keel_aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);
}
#else
static const char *driver_name = "aio_poll";

static bool poll_nb(void)
{
    return keel_aio_poll(ctx, false);
}

static bool poll_block_progress(void)
{
    return keel_aio_poll(ctx, true);
}

static bool poll_block(void)
{
    return keel_aio_poll(ctx, true);
}

static void driver_init(void)
{
}

static void driver_fini(void)
{
}
#endif

static bool in_home(void)
{
    return pthread_equal(pthread_self(), home_thread);
}

/* ---- BHs ---- */

typedef struct Counter {
    int count;
    bool wrong_thread;
    KeelBH *bh;
    KeelBH *other;
    int order[8];
    int norder;
} Counter;

static int order_log[16];
static int order_len;

static void count_cb(void *opaque)
{
    Counter *c = opaque;
    c->count++;
    if (!in_home()) {
        c->wrong_thread = true;
    }
}

static void test_empty(void)
{
    KEEL_OK(!poll_nb(), "%s: empty context: non-blocking poll makes no progress", driver_name);
    KEEL_OK(keel_current_aio_context() == ctx, "%s: current context is ours", driver_name);
}

static void test_bh_basic(void)
{
    Counter c = { 0 };
    KeelBH *bh = keel_aio_bh_new(ctx, count_cb, &c);

    KEEL_OK(!poll_nb(), "%s: unscheduled BH: no progress", driver_name);
    keel_bh_schedule(bh);
    keel_bh_schedule(bh);
    KEEL_OK(poll_nb(), "%s: scheduled BH: progress", driver_name);
    KEEL_IS(c.count, 1, "%s: scheduled twice, ran once", driver_name);
    KEEL_OK(!poll_nb(), "%s: after it ran: no progress", driver_name);
    KEEL_IS(c.count, 1, "%s: not run again", driver_name);

    keel_bh_schedule(bh);
    keel_bh_cancel(bh);
    KEEL_OK(!poll_nb(), "%s: cancelled BH: no progress", driver_name);
    KEEL_IS(c.count, 1, "%s: cancelled BH did not run", driver_name);
    keel_bh_schedule(bh);
    KEEL_OK(poll_nb(), "%s: rescheduled after cancel: progress", driver_name);
    KEEL_IS(c.count, 2, "%s: rescheduled after cancel: ran", driver_name);

    keel_bh_schedule(bh);
    keel_bh_delete(bh);
    KEEL_OK(!poll_nb(), "%s: scheduled then deleted: no progress", driver_name);
    KEEL_IS(c.count, 2, "%s: deleted BH never ran", driver_name);
    KEEL_OK(!c.wrong_thread, "%s: BHs ran in the home thread", driver_name);
}

static void self_delete_cb(void *opaque)
{
    Counter *c = opaque;
    c->count++;
    keel_bh_delete(c->bh);
}

static void test_bh_self_delete(void)
{
    Counter c = { 0 };

    c.bh = keel_aio_bh_new(ctx, self_delete_cb, &c);
    keel_bh_schedule(c.bh);
    KEEL_OK(poll_nb(), "%s: self-deleting BH: progress", driver_name);
    KEEL_IS(c.count, 1, "%s: self-deleting BH ran once", driver_name);
    KEEL_OK(!poll_nb(), "%s: after self-delete: no progress", driver_name);
    KEEL_IS(c.count, 1, "%s: self-deleted BH did not run again", driver_name);
}

static void resched_cb(void *opaque)
{
    Counter *c = opaque;
    c->count++;
    keel_bh_schedule(c->bh);
}

typedef struct FdCounter {
    int rfd, wfd;
    int reads;
    int writes;
    bool remove_self;
    bool remove_other;
    struct FdCounter *other;
    int fd_to_remove;
} FdCounter;

static void fd_read_count(void *opaque)
{
    FdCounter *f = opaque;
    f->reads++;         /* level-triggered: left readable on purpose */
}

static void test_bh_once_per_poll(void)
{
    Counter c = { 0 };
    FdCounter f = { 0 };
    int fds[2];
    bool all_progress = true;

    loop_test_pipe(fds);
    f.rfd = fds[0];
    loop_test_write_byte(fds[1]);
    keel_aio_set_fd_handler(ctx, fds[0], fd_read_count, NULL, NULL, &f);

    c.bh = keel_aio_bh_new(ctx, resched_cb, &c);
    keel_bh_schedule(c.bh);
    for (int i = 0; i < 10; i++) {
        all_progress &= poll_nb();
    }
    KEEL_OK(all_progress, "%s: self-rescheduling BH: every poll made progress", driver_name);
    KEEL_IS(c.count, 10, "%s: self-rescheduling BH ran exactly once per poll", driver_name);
    KEEL_IS(f.reads, 10, "%s: the ready fd was not starved (once per poll)", driver_name);
    keel_bh_delete(c.bh);
    keel_aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL);
    poll_nb();
    KEEL_OK(!poll_nb(), "%s: after delete and removal: no progress", driver_name);
    KEEL_IS(c.count, 10, "%s: deleted rescheduled BH did not run", driver_name);
    KEEL_IS(f.reads, 10, "%s: removed handler did not run", driver_name);
    close(fds[0]);
    close(fds[1]);
}

static void schedule_other_cb(void *opaque)
{
    Counter *c = opaque;
    c->count++;
    keel_bh_schedule(c->other);
}

static void test_bh_scheduled_during_dispatch(void)
{
    Counter a = { 0 }, b = { 0 };

    b.bh = keel_aio_bh_new(ctx, count_cb, &b);
    a.other = b.bh;
    a.bh = keel_aio_bh_new(ctx, schedule_other_cb, &a);
    keel_bh_schedule(a.bh);
    KEEL_OK(poll_nb(), "%s: BH A ran", driver_name);
    KEEL_IS(a.count, 1, "%s: A ran once", driver_name);
    KEEL_IS(b.count, 0, "%s: B, scheduled by A, waits for the next pass", driver_name);
    KEEL_OK(poll_nb(), "%s: next pass: progress", driver_name);
    KEEL_IS(b.count, 1, "%s: B ran on the next pass", driver_name);
    KEEL_OK(!poll_nb(), "%s: then nothing", driver_name);
    keel_bh_delete(a.bh);
    keel_bh_delete(b.bh);
}

static void order_cb(void *opaque)
{
    order_log[order_len++] = (int)(intptr_t)opaque;
}

static void test_bh_order_and_oneshot(void)
{
    KeelBH *bhs[3];

    order_len = 0;
    for (int i = 0; i < 3; i++) {
        bhs[i] = keel_aio_bh_new(ctx, order_cb, (void *)(intptr_t)i);
    }
    keel_bh_schedule(bhs[0]);
    keel_bh_schedule(bhs[1]);
    keel_aio_bh_schedule_oneshot(ctx, order_cb, (void *)(intptr_t)7);
    keel_bh_schedule(bhs[2]);
    KEEL_OK(poll_nb(), "%s: BHs and one-shot: progress", driver_name);
    KEEL_IS(order_len, 4, "%s: four callbacks", driver_name);
    KEEL_OK(order_log[0] == 0 && order_log[1] == 1 && order_log[2] == 7 && order_log[3] == 2,
            "%s: BHs run in scheduling order", driver_name);
    KEEL_OK(!poll_nb(), "%s: one-shot does not run twice", driver_name);
    KEEL_IS(order_len, 4, "%s: still four callbacks", driver_name);
    for (int i = 0; i < 3; i++) {
        keel_bh_delete(bhs[i]);
    }
}

/* A BH that runs a nested poll: the nested poll finishes the outer batch. */
static Counter nest_b;
static int nested_progress;

static void nesting_cb(void *opaque)
{
    (void)opaque;
    nested_progress = keel_aio_poll(ctx, false) ? 1 : 0;
}

static void test_bh_nested_poll(void)
{
    KeelBH *a = keel_aio_bh_new(ctx, nesting_cb, NULL);

    memset(&nest_b, 0, sizeof(nest_b));
    nest_b.bh = keel_aio_bh_new(ctx, count_cb, &nest_b);
    keel_bh_schedule(a);
    keel_bh_schedule(nest_b.bh);
    KEEL_OK(poll_nb(), "%s: nesting BH: progress", driver_name);
    KEEL_IS(nested_progress, 1, "%s: the nested poll ran the rest of the batch", driver_name);
    KEEL_IS(nest_b.count, 1, "%s: the second BH ran exactly once", driver_name);
    KEEL_OK(!poll_nb(), "%s: then nothing", driver_name);
    keel_bh_delete(a);
    keel_bh_delete(nest_b.bh);
}

/* ---- event notifiers and notify ---- */

static int notifier_calls;

static void notifier_cb(KeelEventNotifier *e)
{
    notifier_calls++;
    keel_event_notifier_test_and_clear(e);
}

static void test_event_notifier(void)
{
    KeelEventNotifier e;

    if (keel_event_notifier_init(&e, false) < 0) {
        keel_test_skip("event notifier");
        return;
    }
    notifier_calls = 0;
    keel_aio_set_event_notifier(ctx, &e, notifier_cb, NULL);
    KEEL_OK(!poll_nb(), "%s: idle notifier: no progress", driver_name);
    keel_event_notifier_set(&e);
    KEEL_OK(poll_nb(), "%s: set notifier: progress", driver_name);
    KEEL_IS(notifier_calls, 1, "%s: set notifier: exactly one callback", driver_name);
    KEEL_OK(!poll_nb(), "%s: cleared notifier: no progress", driver_name);
    keel_event_notifier_set(&e);
    keel_event_notifier_set(&e);
    KEEL_OK(poll_block_progress(), "%s: set twice: blocking poll wakes", driver_name);
    KEEL_IS(notifier_calls, 2, "%s: set twice before a poll: one callback", driver_name);
    keel_aio_set_event_notifier(ctx, &e, NULL, NULL);
    keel_event_notifier_set(&e);
    KEEL_OK(!poll_nb(), "%s: removed notifier: no progress", driver_name);
    KEEL_IS(notifier_calls, 2, "%s: removed notifier: no callback", driver_name);
    keel_event_notifier_cleanup(&e);
}

static void test_explicit_notify(void)
{
    keel_aio_notify(ctx);
    KEEL_OK(!poll_nb(), "%s: explicit notify: non-blocking poll, no progress", driver_name);
    keel_aio_notify(ctx);
    KEEL_OK(!poll_block(), "%s: explicit notify: blocking poll returns, no progress", driver_name);
    KEEL_OK(!poll_nb(), "%s: notify consumed", driver_name);
}

/* ---- fd handlers ---- */

static void fd_read_drain(void *opaque)
{
    FdCounter *f = opaque;
    f->reads++;
    loop_test_drain(f->rfd);
}

static void fd_write_once(void *opaque)
{
    FdCounter *f = opaque;
    f->writes++;
    /* Stop asking once we have been told the pipe is writable. */
    keel_aio_set_fd_handler(ctx, f->wfd, NULL, NULL, NULL, NULL);
}

static void test_fd_handlers(void)
{
    FdCounter f = { 0 };
    int fds[2];

    loop_test_pipe(fds);
    f.rfd = fds[0];
    f.wfd = fds[1];
    keel_aio_set_fd_handler(ctx, fds[0], fd_read_drain, NULL, NULL, &f);
    KEEL_OK(!poll_nb(), "%s: idle fd: no progress", driver_name);
    loop_test_write_byte(fds[1]);
    KEEL_OK(poll_nb(), "%s: readable fd: progress", driver_name);
    KEEL_IS(f.reads, 1, "%s: read handler ran once", driver_name);
    KEEL_OK(!poll_nb(), "%s: drained fd: no progress", driver_name);
    loop_test_write_byte(fds[1]);
    KEEL_OK(poll_block_progress(), "%s: readable fd: blocking poll returns progress", driver_name);
    KEEL_IS(f.reads, 2, "%s: read handler ran again", driver_name);

    keel_aio_set_fd_handler(ctx, fds[1], NULL, fd_write_once, NULL, &f);
    KEEL_OK(poll_nb(), "%s: writable fd: progress", driver_name);
    KEEL_IS(f.writes, 1, "%s: write handler ran once and removed itself", driver_name);
    KEEL_OK(!poll_nb(), "%s: then nothing", driver_name);

    keel_aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL);
    loop_test_write_byte(fds[1]);
    KEEL_OK(!poll_nb(), "%s: removed handler: no progress", driver_name);
    KEEL_IS(f.reads, 2, "%s: removed handler never ran", driver_name);
    close(fds[0]);
    close(fds[1]);
}

static void fd_remove_other(void *opaque)
{
    FdCounter *f = opaque;
    f->reads++;
    keel_aio_set_fd_handler(ctx, f->other->rfd, NULL, NULL, NULL, NULL);
    keel_aio_set_fd_handler(ctx, f->rfd, NULL, NULL, NULL, NULL);
}

static void test_remove_during_dispatch(void)
{
    FdCounter a = { 0 }, b = { 0 };
    int pa[2], pb[2];

    loop_test_pipe(pa);
    loop_test_pipe(pb);
    a.rfd = pa[0];
    b.rfd = pb[0];
    a.other = &b;
    b.other = &a;
    loop_test_write_byte(pa[1]);
    loop_test_write_byte(pb[1]);
    keel_aio_set_fd_handler(ctx, pa[0], fd_remove_other, NULL, NULL, &a);
    keel_aio_set_fd_handler(ctx, pb[0], fd_remove_other, NULL, NULL, &b);
    /* Both are ready in the same poll; whichever runs first removes the
     * other, which must then not run. */
    KEEL_OK(poll_nb(), "%s: handlers that remove each other: progress", driver_name);
    KEEL_IS(a.reads + b.reads, 1, "%s: the removed handler was not called", driver_name);
    KEEL_OK(!poll_nb(), "%s: both removed: no progress (fds still readable)", driver_name);
    KEEL_IS(a.reads + b.reads, 1, "%s: neither ran again", driver_name);
    close(pa[0]);
    close(pa[1]);
    close(pb[0]);
    close(pb[1]);
}

static FdCounter replaced;

static void fd_second(void *opaque)
{
    FdCounter *f = opaque;
    f->writes++;        /* counts the replacement's calls */
    loop_test_drain(f->rfd);
}

static void fd_first_replaces(void *opaque)
{
    FdCounter *f = opaque;
    f->reads++;
    keel_aio_set_fd_handler(ctx, f->rfd, fd_second, NULL, NULL, f);
}

static void test_replace_during_dispatch(void)
{
    int fds[2];

    memset(&replaced, 0, sizeof(replaced));
    loop_test_pipe(fds);
    replaced.rfd = fds[0];
    loop_test_write_byte(fds[1]);
    keel_aio_set_fd_handler(ctx, fds[0], fd_first_replaces, NULL, NULL, &replaced);
    KEEL_OK(poll_nb(), "%s: first handler: progress", driver_name);
    KEEL_IS(replaced.reads, 1, "%s: first handler ran once", driver_name);
    KEEL_IS(replaced.writes, 0, "%s: its replacement waits for the next poll", driver_name);
    KEEL_OK(poll_nb(), "%s: replacement: progress", driver_name);
    KEEL_IS(replaced.reads, 1, "%s: first handler never ran again", driver_name);
    KEEL_IS(replaced.writes, 1, "%s: replacement ran", driver_name);
    KEEL_OK(!poll_nb(), "%s: drained: no progress", driver_name);
    keel_aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);
}

/* ---- timers ---- */

typedef struct TimerState {
    KeelTimer *timer;
    KeelClockType type;
    int fired;
    int64_t deadline;
    int64_t fired_at;
    bool early;
    bool wrong_thread;
} TimerState;

static void timer_cb(void *opaque)
{
    TimerState *ts = opaque;
    ts->fired++;
    ts->fired_at = keel_clock_get_ns(ts->type);
    if (ts->fired_at < ts->deadline) {
        ts->early = true;
    }
    if (!in_home()) {
        ts->wrong_thread = true;
    }
}

static void timer_arm(TimerState *ts, KeelClockType type, int64_t delay_ns)
{
    memset(ts, 0, sizeof(*ts));
    ts->type = type;
    ts->timer = keel_aio_timer_new_ns(ctx, type, timer_cb, ts);
    ts->deadline = keel_clock_get_ns(type) + delay_ns;
    keel_timer_mod_ns(ts->timer, ts->deadline);
}

static void test_timers(void)
{
    TimerState t, sentinel, del;

    timer_arm(&t, KEEL_CLOCK_REALTIME, 30 * 1000000LL);
    KEEL_OK(keel_timer_pending(t.timer), "%s: armed timer is pending", driver_name);
    KEEL_OK(!poll_nb(), "%s: timer not due: no progress", driver_name);
    KEEL_IS(t.fired, 0, "%s: timer not fired before its deadline", driver_name);
    KEEL_OK(poll_block_progress(), "%s: blocking poll wakes for the timer", driver_name);
    KEEL_IS(t.fired, 1, "%s: timer fired once", driver_name);
    KEEL_OK(!t.early, "%s: timer fired at or after its deadline", driver_name);
    KEEL_OK(!t.wrong_thread, "%s: timer ran in the home thread", driver_name);
    KEEL_OK(!keel_timer_pending(t.timer), "%s: fired timer is no longer pending", driver_name);
    KEEL_OK(!poll_nb(), "%s: after firing: no progress", driver_name);
    KEEL_IS(t.fired, 1, "%s: timer did not fire twice", driver_name);

    /* A deadline in the past fires at the next poll. */
    keel_timer_mod_ns(t.timer, 0);
    t.deadline = 0;
    KEEL_OK(poll_block_progress(), "%s: past deadline: blocking poll returns at once", driver_name);
    KEEL_IS(t.fired, 2, "%s: past deadline fired", driver_name);
    keel_timer_free(t.timer);

    /* Deleted timers never fire; a later sentinel proves the poll went past
     * the deleted deadline. */
    timer_arm(&del, KEEL_CLOCK_REALTIME, 5 * 1000000LL);
    timer_arm(&sentinel, KEEL_CLOCK_REALTIME, 20 * 1000000LL);
    keel_timer_del(del.timer);
    KEEL_OK(!keel_timer_pending(del.timer), "%s: deleted timer not pending", driver_name);
    while (!sentinel.fired) {
        poll_block();
    }
    KEEL_IS(del.fired, 0, "%s: deleted timer never fired", driver_name);
    KEEL_IS(sentinel.fired, 1, "%s: sentinel fired once", driver_name);
    keel_timer_free(del.timer);
    keel_timer_free(sentinel.timer);

    /* Re-arming moves the deadline, it does not add a second firing. */
    timer_arm(&t, KEEL_CLOCK_REALTIME, 1000 * 1000000LL);
    t.deadline = keel_clock_get_ns(KEEL_CLOCK_REALTIME) + 10 * 1000000LL;
    keel_timer_mod_ns(t.timer, t.deadline);
    while (!t.fired) {
        poll_block();
    }
    KEEL_IS(t.fired, 1, "%s: re-armed timer fired once", driver_name);
    KEEL_OK(!t.early, "%s: re-armed timer fired after its new deadline", driver_name);
    KEEL_OK(!poll_nb(), "%s: re-armed timer: nothing left", driver_name);
    keel_timer_free(t.timer);
}

static void test_virtual_clock(void)
{
    TimerState v, sentinel;
    int64_t a, b;

    keel_clock_virtual_pause();
    a = keel_clock_get_ns(KEEL_CLOCK_VIRTUAL);
    timer_arm(&v, KEEL_CLOCK_VIRTUAL, 5 * 1000000LL);
    timer_arm(&sentinel, KEEL_CLOCK_REALTIME, 30 * 1000000LL);
    while (!sentinel.fired) {
        poll_block();
    }
    b = keel_clock_get_ns(KEEL_CLOCK_VIRTUAL);
    KEEL_IS(b, a, "%s: paused virtual clock stands still", driver_name);
    KEEL_IS(v.fired, 0, "%s: virtual timer does not fire while paused", driver_name);
    keel_clock_virtual_resume();
    while (!v.fired) {
        poll_block();
    }
    KEEL_IS(v.fired, 1, "%s: virtual timer fired once after resume", driver_name);
    KEEL_OK(!v.early, "%s: virtual timer not early on its clock", driver_name);
    KEEL_OK(keel_clock_get_ns(KEEL_CLOCK_VIRTUAL) >= b, "%s: virtual clock resumed", driver_name);
    keel_timer_free(v.timer);
    keel_timer_free(sentinel.timer);
}

/* ---- cross-thread ---- */

typedef enum { ACT_BH, ACT_NOTIFY, ACT_TIMER, ACT_ADD_HANDLER, ACT_REMOVE_HANDLER } Action;

typedef struct Remote {
    Action action;
    KeelBH *bh;
    KeelTimer *timer;
    int64_t deadline;
    int fd;
    int wfd;
    FdCounter *f;
} Remote;

static void *remote_thread(void *opaque)
{
    Remote *r = opaque;

    loop_test_sleep_ms(20);     /* let the home thread go to sleep (not required) */
    switch (r->action) {
    case ACT_BH:
        keel_bh_schedule(r->bh);
        break;
    case ACT_NOTIFY:
        keel_aio_notify(ctx);
        break;
    case ACT_TIMER:
        keel_timer_mod_ns(r->timer, r->deadline);
        break;
    case ACT_ADD_HANDLER:
        keel_aio_set_fd_handler(ctx, r->fd, fd_read_drain, NULL, NULL, r->f);
        break;
    case ACT_REMOVE_HANDLER:
        /* Removed, then made readable: it must never run. */
        keel_aio_set_fd_handler(ctx, r->fd, NULL, NULL, NULL, NULL);
        loop_test_write_byte(r->wfd);
        keel_bh_schedule(r->bh);
        break;
    }
    return NULL;
}

static void run_remote(Remote *r, pthread_t *tid)
{
    pthread_create(tid, NULL, remote_thread, r);
}

static void test_cross_thread(void)
{
    Counter c = { 0 };
    Remote r = { 0 };
    pthread_t tid;
    TimerState t;
    FdCounter f = { 0 };
    int fds[2];

    c.bh = keel_aio_bh_new(ctx, count_cb, &c);
    r.action = ACT_BH;
    r.bh = c.bh;
    run_remote(&r, &tid);
    KEEL_OK(poll_block_progress(), "%s: BH from another thread wakes a blocking poll", driver_name);
    KEEL_IS(c.count, 1, "%s: remote BH ran once", driver_name);
    KEEL_OK(!c.wrong_thread, "%s: remote BH ran in the home thread", driver_name);
    pthread_join(tid, NULL);
    keel_bh_delete(c.bh);

    r.action = ACT_NOTIFY;
    run_remote(&r, &tid);
    KEEL_OK(!poll_block(), "%s: notify from another thread: wakes, no progress", driver_name);
    pthread_join(tid, NULL);

    /* A remote timer_mod makes a sleeping poll recompute its timeout. */
    memset(&t, 0, sizeof(t));
    t.type = KEEL_CLOCK_REALTIME;
    t.timer = keel_aio_timer_new_ns(ctx, KEEL_CLOCK_REALTIME, timer_cb, &t);
    t.deadline = keel_clock_get_ns(KEEL_CLOCK_REALTIME) + 30 * 1000000LL;
    r.action = ACT_TIMER;
    r.timer = t.timer;
    r.deadline = t.deadline;
    run_remote(&r, &tid);
    while (!t.fired) {
        poll_block();
    }
    KEEL_IS(t.fired, 1, "%s: remotely armed timer fired once", driver_name);
    KEEL_OK(!t.early, "%s: remotely armed timer not early", driver_name);
    KEEL_OK(!t.wrong_thread, "%s: remotely armed timer ran in the home thread", driver_name);
    pthread_join(tid, NULL);
    keel_timer_free(t.timer);

    /* A handler added from another thread is polled by the sleeping loop. */
    loop_test_pipe(fds);
    f.rfd = fds[0];
    loop_test_write_byte(fds[1]);
    r.action = ACT_ADD_HANDLER;
    r.fd = fds[0];
    r.f = &f;
    run_remote(&r, &tid);
    while (!f.reads) {
        poll_block();
    }
    KEEL_IS(f.reads, 1, "%s: remotely added handler ran once", driver_name);
    pthread_join(tid, NULL);

    /* Removed from another thread while the home thread sleeps. */
    memset(&c, 0, sizeof(c));
    c.bh = keel_aio_bh_new(ctx, count_cb, &c);
    r.action = ACT_REMOVE_HANDLER;
    r.wfd = fds[1];
    r.bh = c.bh;
    run_remote(&r, &tid);
    while (!c.count) {
        poll_block();
    }
    pthread_join(tid, NULL);
    poll_nb();
    KEEL_IS(f.reads, 1, "%s: remotely removed handler never ran again", driver_name);
    KEEL_IS(c.count, 1, "%s: the sentinel BH ran once", driver_name);
    keel_bh_delete(c.bh);
    close(fds[0]);
    close(fds[1]);
}

/* A device epoll refuses (EPERM): polled one by one even in epoll mode. */
static void test_dev_null(void)
{
    FdCounter f = { 0 };
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        keel_test_skip("no /dev/null");
        return;
    }
    keel_aio_set_fd_handler(ctx, fd, fd_read_count, NULL, NULL, &f);
#ifdef LOOP_TEST_EPOLL
    KEEL_OK(aio_context_uses_epoll(ctx) == have_epoll, "%s: context is in epoll mode%s",
            driver_name, have_epoll ? "" : " (no: epoll unavailable, poll fallback)");
#endif
    KEEL_OK(poll_nb(), "%s: /dev/null (always readable): progress", driver_name);
    KEEL_IS(f.reads, 1, "%s: /dev/null handler ran once", driver_name);
    keel_aio_set_fd_handler(ctx, fd, NULL, NULL, NULL, NULL);
    KEEL_OK(!poll_nb(), "%s: /dev/null removed: no progress", driver_name);
    close(fd);
}

/* More handlers than the epoll threshold: exactly the ready ones run. */
#define MANY 100

static void test_many_fds(void)
{
    static FdCounter fs[MANY];
    static int fds[MANY][2];
    bool exact = true;
    int rounds = 0;

    for (int i = 0; i < MANY; i++) {
        memset(&fs[i], 0, sizeof(fs[i]));
        loop_test_pipe(fds[i]);
        fs[i].rfd = fds[i][0];
        keel_aio_set_fd_handler(ctx, fds[i][0], fd_read_drain, NULL, NULL, &fs[i]);
    }
    KEEL_OK(aio_context_uses_epoll(ctx) == have_epoll, "%s: %d handlers: %s mode", driver_name,
            MANY, have_epoll ? "epoll" : "poll (epoll unavailable)");
    KEEL_OK(!poll_nb(), "%s: %d idle fds: no progress", driver_name, MANY);
    for (int i = 0; i < MANY; i += 7) {
        loop_test_write_byte(fds[i][1]);
    }
    while (poll_nb()) {
        rounds++;
    }
    for (int i = 0; i < MANY; i++) {
        exact &= fs[i].reads == (i % 7 == 0 ? 1 : 0);
    }
    KEEL_OK(rounds >= 1, "%s: ready fds among %d: progress", driver_name, MANY);
    KEEL_OK(exact, "%s: exactly the ready handlers ran, once each", driver_name);
    for (int i = 0; i < MANY; i++) {
        keel_aio_set_fd_handler(ctx, fds[i][0], NULL, NULL, NULL, NULL);
        close(fds[i][0]);
        close(fds[i][1]);
    }
    KEEL_OK(!poll_nb(), "%s: all removed: no progress", driver_name);
}

static void *current_in_thread(void *opaque)
{
    (void)opaque;
    return keel_current_aio_context();
}

static void test_current_context(void)
{
    pthread_t tid;
    void *other;

    pthread_create(&tid, NULL, current_in_thread, NULL);
    pthread_join(tid, &other);
    KEEL_OK(other == NULL, "%s: another thread has no current context", driver_name);
    KEEL_OK(keel_aio_context_in_home_thread(ctx), "%s: we are the home thread", driver_name);
}

int main(void)
{
    /* A glib critical or warning (e.g. misuse of the GSource) fails. */
    g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
    loop_test_sigcont_start();
    home_thread = pthread_self();
    have_epoll = strcmp(loop_fdmon_feature.active(NULL), "epoll") == 0;
    if (!have_epoll) {
        keel_test_diag("epoll unavailable: the epoll cases test the poll fallback");
    }
    ctx = keel_aio_context_new();
#ifdef LOOP_TEST_EPOLL
    aio_context_set_epoll_threshold(ctx, 0);
#endif
    driver_init();

    test_empty();
    test_bh_basic();
    test_bh_self_delete();
    test_bh_once_per_poll();
    test_bh_scheduled_during_dispatch();
    test_bh_order_and_oneshot();
    test_bh_nested_poll();
    test_event_notifier();
    test_explicit_notify();
    test_fd_handlers();
    test_remove_during_dispatch();
    test_replace_during_dispatch();
    test_timers();
    test_virtual_clock();
    test_cross_thread();
    test_dev_null();
    test_many_fds();
    test_current_context();

    driver_fini();
    keel_aio_context_unref(ctx);
    loop_test_sigcont_report();
    return keel_test_done();
}
