/*
 * loop/aio-int.h — internal to loop/: the AioContext layout shared by the
 * files of the loop (aio.c, timer.c, main-loop.c, thread-pool.c).  Not
 * installed; other layers use loop/aio.h.
 */
#ifndef KEEL_LOOP_AIO_INT_H
#define KEEL_LOOP_AIO_INT_H

#include <pthread.h>

#include "loop/aio.h"
#include "loop/timer.h"
#include "compat/atomic.h"
#include "compat/features.h"

typedef struct AioHandler AioHandler;
typedef struct BHSlice BHSlice;
typedef struct ThreadPool ThreadPool;

/* Active timers of one clock in one context, sorted by deadline. */
typedef struct TimerList {
    pthread_mutex_t lock;
    KeelTimer *head;                /* under lock */
    int64_t earliest KEEL_ATOMIC_ALIGNED;  /* head's deadline or -1; written
                                       (atomically) under lock, read lock-free
                                       by the home thread */
} TimerList;

struct KeelAioContext {
    GSource source;                 /* first: the context is a GSource */

    /* An address unique to the home thread (its thread-local slot). */
    uintptr_t home_id;              /* atomic */

    /* ---- fd handlers ----
     * The list is walked lock-free by the home thread only (aio_poll, the
     * GSource callbacks); walkers counts the nesting depth of those walks.
     * Other threads insert at the head under list_lock with a release store
     * and only mark nodes deleted; the home thread unlinks and frees deleted
     * nodes when walkers is 0. */
    pthread_mutex_t list_lock;
    AioHandler *handlers;           /* atomic */
    unsigned walkers;               /* home thread */
    unsigned deleted_pending;       /* atomic: nodes marked deleted, not yet freed */
    unsigned list_generation;       /* atomic: bumped on every change */
    unsigned poll_disable_cnt;      /* atomic: live handlers without io_poll */

    /* epoll mode: past epoll_threshold live handlers the context moves the
     * fds that epoll accepts into an epoll set (O(1) per wake-up instead of
     * O(fds)); the set's fd is then polled in their place, by keel_aio_poll
     * with the nanosecond timeout and by glib as one GPollFD.  Fds epoll
     * refuses (regular files, /dev/null) stay in the poll array.  epoll_fd
     * goes from -1 to an fd once, under list_lock, and never back. */
    int epoll_fd;                   /* atomic */
    bool epoll_unavailable;         /* under list_lock: creation failed */
    unsigned live_handlers;         /* under list_lock */
    unsigned epoll_threshold;       /* under list_lock */
    GPollFD epoll_pfd;              /* registered with the GSource in epoll mode */
    void *epoll_events;             /* struct epoll_event[]; home thread */

    /* The poll array, rebuilt when list_generation moves (home thread). */
    GPollFD *pollfds;
    AioHandler **pollnodes;
    unsigned npollfds, pollcap, poll_generation;
    bool poll_cache_valid;

    /* ---- bottom halves ----
     * bh_list is a lock-free LIFO push list; the home thread takes it whole
     * (atomic exchange) into a BHSlice, reverses it and runs it.  Slices are
     * queued so a nested aio_poll finishes the outer slice first. */
    KeelBH *bh_list;                /* atomic */
    BHSlice *slice_first, *slice_last;  /* home thread */

    /* ---- wake-up protocol (see keel_aio_notify in aio.c) ---- */
    unsigned notify_me;             /* atomic: 2 per sleeping aio_poll, bit 0: glib */
    bool notified;                  /* atomic: a wake-up was requested */
    bool notify_explicit;           /* atomic: ... by keel_aio_notify() itself */
    KeelEventNotifier notifier;
    GPollFD notifier_pfd;           /* registered with the GSource */

    /* ---- timers ---- */
    TimerList timers[KEEL_CLOCK__MAX];

    /* ---- adaptive polling ---- */
    /* atomic: written by any thread, read by the home thread */
    int64_t poll_max_ns KEEL_ATOMIC_ALIGNED;
    int64_t poll_grow KEEL_ATOMIC_ALIGNED;
    int64_t poll_shrink KEEL_ATOMIC_ALIGNED;
    /* Each event source keeps its own window (AioHandler.poll_ns, and this
     * one for the wake-up flag: BHs and notifies); the context busy-polls
     * for the largest window among sources that fired recently
     * (aio_context_poll_window_ns).  Home thread. */
    int64_t wakeup_poll_ns;
    int64_t wakeup_last_event_ns;
    /* Busy-poll mode (handlers' poll_begin called, poll_end not yet), and
     * for glib: run io_poll once at the next dispatch (set when prepare
     * leaves the mode).  Home thread. */
    bool poll_started;
    bool poll_recheck;
    unsigned poll_skipped_waits;    /* fd waits skipped in a row (see aio_poll) */

    /* ---- thread pool (created on first submit) ---- */
    pthread_mutex_t pool_lock;
    ThreadPool *pool;               /* atomic; set once under pool_lock */

    /* ---- registry of live contexts (virtual clock resume) ---- */
    KeelAioContext *all_next, **all_pprev;
};

/* Wake the home thread because shared state changed (timer, handler list,
 * BH).  A no-op from the home thread itself, which recomputes its timeout
 * before it sleeps; from elsewhere, a wake-up that keel_aio_poll does not
 * report as an explicit notify. */
void aio_notify_internal(KeelAioContext *ctx);

/* Nanoseconds until the nearest enabled timer of @ctx fires: -1 when none,
 * 0 when one is due. */
int64_t aio_timers_deadline_ns(KeelAioContext *ctx);
/* Run due timers (home thread); returns whether a callback ran. */
bool aio_timers_run(KeelAioContext *ctx);
void aio_timers_init(KeelAioContext *ctx);
void aio_timers_cleanup(KeelAioContext *ctx);

/* Context registry: used to wake every context when the virtual clock
 * resumes. */
void aio_context_foreach(void (*fn)(KeelAioContext *ctx));

/* Thread pool teardown on the last unref (thread-pool.c). */
void thread_pool_free(ThreadPool *pool);
/* Whether requests submitted to @ctx's pool still await their callback. */
bool thread_pool_busy(KeelAioContext *ctx);
/* "aio-fd-monitor": epoll past EPOLL_DEFAULT_THRESHOLD fds, else poll. */
extern const KeelFeature loop_fdmon_feature;

/* For tests: switch to epoll mode past @n live handlers (0: at the first);
 * takes effect at the next handler change. */
void aio_context_set_epoll_threshold(KeelAioContext *ctx, unsigned n);
/* Whether the context is in epoll mode. */
bool aio_context_uses_epoll(KeelAioContext *ctx);

/* For tests, home thread: the window the next blocking poll would busy-poll
 * for (before the poll-max-ns cap), and one fd handler's own window (-1: no
 * live handler for @fd). */
int64_t aio_context_poll_window_ns(KeelAioContext *ctx);
int64_t aio_handler_poll_window_ns(KeelAioContext *ctx, int fd);

/* For tests: the idle time after which a worker above the minimum exits,
 * and the number of live workers. */
void thread_pool_set_idle_timeout_ns(KeelAioContext *ctx, int64_t ns);
int thread_pool_worker_count(KeelAioContext *ctx);

#endif
