/*
 * loop/aio.h — the AioContext: one event loop that runs fd handlers, bottom
 * halves (BHs) and timers, and that is also a GSource.
 *
 * Every context has a *home thread*: the only thread that runs its callbacks
 * (keel_aio_poll(), or the GMainContext it is attached to).  The thread that
 * creates a context is its home thread until keel_aio_context_set_home_thread()
 * is called from another thread (an iothread does this when it starts).
 * Handlers, BHs, timers and thread-pool completions of a context always run in
 * its home thread, so code that only runs there needs no locks of its own.
 *
 * keel_aio_poll(ctx, blocking) returns true when it made progress: a handler,
 * a BH or a timer callback ran.  The context's own wake-up notifier and an
 * explicit keel_aio_notify() are not progress.  A blocking call sleeps until a
 * callback runs or keel_aio_notify() is called; a non-blocking call never
 * sleeps.  Each call runs every BH that was scheduled when it started at most
 * once; BHs scheduled by those callbacks wait for the next call, so a BH that
 * reschedules itself runs exactly once per call and cannot starve fds.
 *
 * fds are polled with ppoll (nanosecond timeouts); a context with more than
 * 16 handlers moves the fds epoll accepts into an epoll set, so a wake-up
 * costs the same with 1000 fds as with 10 (falls back to poll where the
 * kernel refuses epoll).
 *
 * Ownership: a context is reference counted (it is a GSource; the GSource
 * reference count is its reference count).  BHs are owned by the caller
 * until keel_bh_delete(); one-shot BHs free themselves.  fd handlers never own
 * their opaque pointer.  The last unref frees everything still registered
 * (handlers, BHs not yet deleted, the thread pool); timers must be freed by
 * their owners before that.
 *
 * Thread rules, per function:
 *   keel_aio_context_new / ref / unref          any thread
 *   keel_aio_context_set_home_thread            the new home thread
 *   keel_aio_context_in_home_thread             any thread
 *   keel_current_aio_context                    any thread (answers for the caller)
 *   keel_aio_set_fd_handler / _event_notifier   any thread, also from a handler
 *   keel_aio_poll                               home thread only (asserted)
 *   keel_aio_notify                             any thread, never blocks
 *   keel_aio_bh_new, keel_bh_schedule, keel_bh_schedule_idle,
 *   keel_bh_cancel, keel_bh_delete,
 *   keel_aio_bh_schedule_oneshot                any thread; lock-free
 *   keel_aio_get_g_source                       any thread; the GMainContext the
 *                                               source is attached to must be
 *                                               iterated by the home thread
 *   keel_aio_context_set_poll_params            any thread (read at the next poll)
 *   keel_aio_set_event_notifier_poll            like keel_aio_set_event_notifier
 *   keel_aio_set_fd_handler_poll                like keel_aio_set_fd_handler
 *
 * A handler removed from a thread other than the home thread may still be
 * running in the home thread when the call returns (it is never *started*
 * afterwards).  To free a handler's opaque data safely, remove the handler
 * from the home thread (keel_aio_run_in_context_wait() gets you there).
 *
 * fork(): only the forking thread exists in the child, so every context,
 * iothread, thread pool, BH, timer, fd handler, coroutine and block backend
 * made before the fork belongs to threads that are gone.  The child may:
 * create new contexts (keel_aio_context_new, then
 * keel_aio_context_set_home_thread in the thread that runs it), new thread
 * pools (keel_thread_pool_submit on a new context starts new workers), new
 * iothreads, coroutines and block backends, and use the clocks, the
 * features report and KEEL_AVOID.  It must not poll, schedule into, submit
 * to, wake, unref or free anything from before the fork (leak it; the
 * parent's copies are untouched), nor use the main loop set up by
 * keel_main_loop_init in the parent.  Or it calls exec.
 * (tests/loop-api-test forks with an iothread and a busy pool running.)
 */
#ifndef KEEL_LOOP_AIO_H
#define KEEL_LOOP_AIO_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "../compat/event-notifier.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct KeelAioContext KeelAioContext;
typedef void KeelIOHandler(void *opaque);
/* User-space poll: returns true when work is ready (then io_read is called). */
typedef bool KeelAioPollFn(void *opaque);
typedef void KeelBHFunc(void *opaque);
typedef struct KeelBH KeelBH;

/* A new context whose home thread is the caller (and, if the caller has no
 * current context yet, the caller's current context).  Never fails. */
KeelAioContext *keel_aio_context_new(void);
void keel_aio_context_ref(KeelAioContext *ctx);
void keel_aio_context_unref(KeelAioContext *ctx);

/* Make the calling thread the home thread of @ctx and @ctx its current
 * context.  Only while no other thread runs the context. */
void keel_aio_context_set_home_thread(KeelAioContext *ctx);
bool keel_aio_context_in_home_thread(KeelAioContext *ctx);

/* The context whose home thread is the caller (the last one set with
 * keel_aio_context_set_home_thread, or the first one it created), or NULL. */
KeelAioContext *keel_current_aio_context(void);

/* Register, replace (same fd) or — with all three callbacks NULL — remove the
 * handler of @fd.  io_read runs on POLLIN/POLLHUP/POLLERR, io_write on
 * POLLOUT/POLLERR.  io_poll, when every handler of the context has one, lets
 * the context busy-poll instead of sleeping (see set_poll_params). */
void keel_aio_set_fd_handler(KeelAioContext *ctx, int fd, KeelIOHandler *io_read,
                             KeelIOHandler *io_write, KeelAioPollFn *io_poll,
                             void *opaque);

/* Watch an event notifier: @cb runs (in the home thread) while it is set; the
 * callback clears it.  @cb == NULL removes.  @io_poll gets @e as opaque. */
void keel_aio_set_event_notifier(KeelAioContext *ctx, KeelEventNotifier *e,
                                 void (*cb)(KeelEventNotifier *e),
                                 KeelAioPollFn *io_poll);

/* Companions of an event notifier's io_poll, for handlers that can make
 * busy-polling cheaper (all optional, all run in the home thread, all get
 * @e):
 *   ready  called instead of @cb when io_poll found work, so a handler can
 *          skip clearing a notifier that nobody set;
 *   begin  the context starts busy-polling (it stays in that mode across
 *          keel_aio_poll calls while polling keeps finding work): e.g. ask
 *          the other side to stop setting the notifier;
 *   end    it stops, before it sleeps or hands over to glib: notifications
 *          back on.  After the end calls the context runs every io_poll
 *          once more, so work published while notifications were off is
 *          not left waiting for a notification that will not come.
 * A handler removed while the context polls gets no end call. */
typedef struct KeelAioPollOps {
    KeelAioPollFn *poll;
    void (*ready)(KeelEventNotifier *e);
    void (*begin)(KeelEventNotifier *e);
    void (*end)(KeelEventNotifier *e);
} KeelAioPollOps;

/* keel_aio_set_event_notifier with the companions above (@ops may be NULL;
 * it is copied). */
void keel_aio_set_event_notifier_poll(KeelAioContext *ctx, KeelEventNotifier *e,
                                      void (*cb)(KeelEventNotifier *e),
                                      const KeelAioPollOps *ops);

/* The same companions for a plain fd handler (QEMU's aio_set_fd_handler with
 * io_poll, io_poll_ready, io_poll_begin/end): @poll says whether work is
 * ready without a system call; when it does, @ready runs (NULL: @io_read);
 * @begin / @end bracket busy-poll mode as above.  All get @opaque and run in
 * the home thread.  While @ready (or @io_read for polled work) runs, a
 * nested keel_aio_poll on the same context does not poll this handler. */
typedef struct KeelAioFdPollOps {
    KeelAioPollFn *poll;
    KeelIOHandler *ready;
    KeelIOHandler *begin;
    KeelIOHandler *end;
} KeelAioFdPollOps;

/* keel_aio_set_fd_handler with the companions (@ops may be NULL; copied).
 * All of io_read, io_write and ops->poll NULL removes the handler. */
void keel_aio_set_fd_handler_poll(KeelAioContext *ctx, int fd, KeelIOHandler *io_read,
                                  KeelIOHandler *io_write, const KeelAioFdPollOps *ops,
                                  void *opaque);

/* Run ready handlers, due BHs and expired timers; see the top of this file. */
bool keel_aio_poll(KeelAioContext *ctx, bool blocking);

/* Wake the home thread: a blocking keel_aio_poll() returns (false, unless it
 * also ran something).  Thread-safe; writes the eventfd only when the home
 * thread is (about to be) asleep. */
void keel_aio_notify(KeelAioContext *ctx);

/* Bottom halves.  A BH runs in the home thread of @ctx.  Scheduling an
 * already scheduled BH is a no-op; cancel unschedules; delete frees it (also
 * from its own callback) and it never runs again.  Using a BH after deleting
 * it, or deleting it twice, is a bug. */
KeelBH *keel_aio_bh_new(KeelAioContext *ctx, KeelBHFunc *cb, void *opaque);
void keel_bh_schedule(KeelBH *bh);
void keel_bh_cancel(KeelBH *bh);
void keel_bh_delete(KeelBH *bh);
/* Schedule @bh as idle housekeeping (QEMU's qemu_bh_schedule_idle): it runs
 * the next time the home thread goes round its loop, but no later than
 * about 10 ms from now: a sleeping keel_aio_poll waits at most that long
 * for it.  Running it is not progress: keel_aio_poll(ctx, false) that only
 * ran idle BHs returns false, and a blocking one keeps waiting for real
 * work afterwards.  A keel_bh_schedule() before it runs makes it a normal
 * BH again; an idle schedule of a normally scheduled BH is a no-op. */
void keel_bh_schedule_idle(KeelBH *bh);
/* Run @cb(@opaque) once in @ctx's home thread. */
void keel_aio_bh_schedule_oneshot(KeelAioContext *ctx, KeelBHFunc *cb, void *opaque);

/* The context as a GSource, with a new reference (g_source_unref it).  Attach
 * it to a GMainContext iterated by the home thread to run the context from
 * glib (g_main_context_iteration / g_main_loop_run / keel_main_loop_wait). */
GSource *keel_aio_get_g_source(KeelAioContext *ctx);

/* Adaptive polling: when every handler has an io_poll function, keel_aio_poll
 * busy-polls for up to a window before sleeping.  Each event source (every
 * fd handler, and the wake-up flag that BHs and notifies raise) has its own
 * window: it starts at 0, grows (×@grow, 2 when 0) when the source fires
 * sooner than @max_ns after a wait begins and shrinks (÷@shrink; back to 0
 * when @shrink is 0, as in QEMU) when it fires later.  The context polls for
 * the largest window among the sources that fired in the last second; timer
 * wake-ups change no window.  @max_ns == 0 disables polling (the default for
 * every context but iothreads'). */
void keel_aio_context_set_poll_params(KeelAioContext *ctx, int64_t max_ns,
                                      int64_t grow, int64_t shrink);

#ifdef __cplusplus
}
#endif

#endif
