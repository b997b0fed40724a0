/*
 * The AioContext: fd handlers, bottom halves, the wake-up protocol,
 * keel_aio_poll() with adaptive polling, and the GSource glue.
 *
 * Memory ordering.  Every cross-thread flag below (marked "atomic" where it
 * is declared) is accessed only through the compat/atomic.h macros, whose
 * names carry the memory order: keel_atomic_load_seq_cst/_store_seq_cst and
 * every read-modify-write are seq_cst.  The orderings that matter are named
 * where they are used:
 *
 *  (A) The wake-up protocol is a Dekker pair between the sleeper and a
 *      waker.  The home thread, before it sleeps, does
 *          notify_me += 2 (seq_cst);  then reads notified, bh_list and the
 *          timer deadlines (seq_cst)              -- aio_compute_timeout()
 *      and a waker, after publishing its work (BH push, timer insert,
 *      handler insert, all seq_cst or under a mutex), does
 *          notified = true (seq_cst);  then reads notify_me (seq_cst)
 *                                                  -- aio_notify_wake()
 *      In the single total order of seq_cst operations one of the two
 *      second steps comes after the other's first step: either the sleeper
 *      sees the work (and does not sleep) or the waker sees notify_me != 0
 *      (and writes the eventfd).  No wake-up is lost, and no eventfd write
 *      happens while notify_me is 0, i.e. while nobody sleeps or is about to.
 *  (B) notified is cleared (exchange) by aio_notify_accept() *before*
 *      aio_bh_poll() takes bh_list, so a BH pushed after the clear is either
 *      taken now or leaves notified set for the next round.
 *  (C) bh_list push is a release CAS after bh->next is written; the home
 *      thread's exchange is acquire, so it sees every pushed node's fields.
 *  (D) The handler list head is published with a release store after the
 *      node is filled in; the home thread walks it with acquire loads.
 *  (E) bh->flags: schedule's fetch_or and the home thread's fetch_and
 *      (acq_rel) decide who pushes the BH; whoever sees PENDING clear pushes.
 */
#include "config.h"

#include "loop/aio-int.h"
#include "compat/avoid.h"
#include "compat/osdep.h"
#include "compat/poll.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* More live handlers than this and the context moves to epoll mode. */
#define EPOLL_DEFAULT_THRESHOLD 16
/* Events fetched per epoll_wait; more stay ready for the next poll. */
#define EPOLL_BATCH 128

struct AioHandler {
    GPollFD pfd;                    /* fd, events fixed once published;
                                       revents: home thread (and glib there) */
    KeelIOHandler *io_read;
    KeelIOHandler *io_write;
    KeelAioPollFn *io_poll;
    void (*notifier_cb)(KeelEventNotifier *e);  /* event-notifier handlers */
    /* Busy-poll companions: KeelAioPollOps for event notifiers (they get
     * opaque = @e), KeelAioFdPollOps for fd handlers; at most one is set. */
    KeelAioPollOps en_ops;
    KeelAioFdPollOps fd_ops;
    bool poll_begun;                /* home thread: begin called, end not yet */
    bool in_poll_ready;             /* home thread: its polled callback runs;
                                       a nested aio_poll skips its io_poll */
    void *opaque;
    bool deleted;                   /* atomic */
    bool in_epoll;                  /* atomic: in the epoll set, not in a
                                       GPollFD list */
    /* Adaptive polling, home thread: this source's window and when it last
     * fired (see aio_poll_window). */
    int64_t poll_ns;
    int64_t last_event_ns;
    AioHandler *next;               /* see aio-int.h for who may touch it */
};

enum {
    BH_PENDING   = 1,   /* in bh_list or in a slice */
    BH_SCHEDULED = 2,   /* run it when dequeued */
    BH_ONESHOT   = 4,   /* free after running */
    BH_DELETED   = 8,   /* free when dequeued, do not run */
    BH_IDLE      = 16,  /* keel_bh_schedule_idle: not progress, no hurry */
};

/* How long an idle BH may wait for the loop to come round (QEMU: 10 ms). */
#define BH_IDLE_TIMEOUT_NS (10 * 1000 * 1000)

struct KeelBH {
    KeelAioContext *ctx;
    KeelBHFunc *cb;
    void *opaque;
    unsigned flags;                 /* atomic: BH_* */
    KeelBH *next;                   /* written by whoever pushes (E) */
};

struct BHSlice {
    KeelBH *head;
    BHSlice *next;
};

/* The caller's current context; its address identifies the thread. */
static __thread KeelAioContext *current_ctx;

static inline uintptr_t self_id(void)
{
    return (uintptr_t)&current_ctx;
}

/* ------------------------------------------------------------------ */
/* Registry of live contexts                                           */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static KeelAioContext *registry_head;
static pthread_once_t registry_atfork_once = PTHREAD_ONCE_INIT;

/* fork() while another thread holds registry_lock would leave it locked in
 * the child, whose first keel_aio_context_new() would then hang. */
static void registry_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
}

static void registry_after_fork(void)
{
    pthread_mutex_unlock(&registry_lock);
}

static void registry_atfork_init(void)
{
    pthread_atfork(registry_prepare, registry_after_fork, registry_after_fork);
}

static void registry_add(KeelAioContext *ctx)
{
    pthread_once(&registry_atfork_once, registry_atfork_init);
    pthread_mutex_lock(&registry_lock);
    ctx->all_next = registry_head;
    if (registry_head) {
        registry_head->all_pprev = &ctx->all_next;
    }
    ctx->all_pprev = &registry_head;
    registry_head = ctx;
    pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(KeelAioContext *ctx)
{
    pthread_mutex_lock(&registry_lock);
    *ctx->all_pprev = ctx->all_next;
    if (ctx->all_next) {
        ctx->all_next->all_pprev = ctx->all_pprev;
    }
    pthread_mutex_unlock(&registry_lock);
}

void aio_context_foreach(void (*fn)(KeelAioContext *ctx))
{
    pthread_mutex_lock(&registry_lock);
    for (KeelAioContext *c = registry_head; c; c = c->all_next) {
        fn(c);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ------------------------------------------------------------------ */
/* Home thread                                                         */

void keel_aio_context_set_home_thread(KeelAioContext *ctx)
{
    keel_atomic_store_seq_cst(&ctx->home_id, self_id());
    current_ctx = ctx;
}

bool keel_aio_context_in_home_thread(KeelAioContext *ctx)
{
    return keel_atomic_read(&ctx->home_id) == self_id();
}

KeelAioContext *keel_current_aio_context(void)
{
    KeelAioContext *ctx = current_ctx;

    /* The context may have moved to another thread since. */
    return ctx && keel_aio_context_in_home_thread(ctx) ? ctx : NULL;
}

/* ------------------------------------------------------------------ */
/* Wake-up protocol                                                    */

static void aio_notify_wake(KeelAioContext *ctx)
{
    /* (A) waker side: publish "notified", then look for a sleeper. */
    keel_atomic_store_seq_cst(&ctx->notified, true);
    if (keel_atomic_load_seq_cst(&ctx->notify_me)) {
        keel_event_notifier_set(&ctx->notifier);
    }
}

void keel_aio_notify(KeelAioContext *ctx)
{
    /* Stored before notified, so whoever consumes notified (B) and then
     * reads notify_explicit sees it, or it stays for the next round. */
    keel_atomic_store_seq_cst(&ctx->notify_explicit, true);
    aio_notify_wake(ctx);
}

void aio_notify_internal(KeelAioContext *ctx)
{
    /* The home thread is running, not sleeping: it recomputes its timeout
     * (and rebuilds its poll set) before it sleeps again. */
    if (!keel_aio_context_in_home_thread(ctx)) {
        aio_notify_wake(ctx);
    }
}

/* Consume the wake-up; returns whether keel_aio_notify() was called. */
static bool aio_notify_accept(KeelAioContext *ctx, bool notifier_readable)
{
    if (notifier_readable) {
        keel_event_notifier_test_and_clear(&ctx->notifier);
    }
    /* (B): clear before aio_bh_poll() reads bh_list. */
    if (keel_atomic_load_seq_cst(&ctx->notified)) {
        keel_atomic_xchg(&ctx->notified, false);
    }
    if (keel_atomic_read(&ctx->notify_explicit)) {
        return keel_atomic_xchg(&ctx->notify_explicit, false);
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* Bottom halves                                                       */

KeelBH *keel_aio_bh_new(KeelAioContext *ctx, KeelBHFunc *cb, void *opaque)
{
    KeelBH *bh = g_new0(KeelBH, 1);

    bh->ctx = ctx;
    bh->cb = cb;
    bh->opaque = opaque;
    return bh;
}

static void aio_bh_enqueue(KeelBH *bh, unsigned new_flags)
{
    /* Read before publishing: once pushed, the home thread may free bh. */
    KeelAioContext *ctx = bh->ctx;
    unsigned old = keel_atomic_fetch_or(&bh->flags, BH_PENDING | new_flags);

    if (!(old & BH_PENDING)) {
        KeelBH *head = keel_atomic_read(&ctx->bh_list);
        for (;;) {
            KeelBH *seen;

            bh->next = head;
            /* (C) release publishes bh->next; seq_cst for (A). */
            seen = keel_atomic_cmpxchg(&ctx->bh_list, head, bh);
            if (seen == head) {
                break;
            }
            head = seen;
        }
    }
    aio_notify_internal(ctx);
}

void keel_bh_schedule(KeelBH *bh)
{
    /* A normal schedule wins over an idle one still pending. */
    keel_atomic_fetch_and(&bh->flags, ~(unsigned)BH_IDLE);
    aio_bh_enqueue(bh, BH_SCHEDULED);
}

void keel_bh_schedule_idle(KeelBH *bh)
{
    unsigned flags = keel_atomic_read(&bh->flags);

    if ((flags & BH_SCHEDULED) && !(flags & BH_IDLE)) {
        return;                 /* already scheduled normally */
    }
    aio_bh_enqueue(bh, BH_SCHEDULED | BH_IDLE);
}

void keel_bh_cancel(KeelBH *bh)
{
    keel_atomic_fetch_and(&bh->flags, ~(unsigned)BH_SCHEDULED);
}

void keel_bh_delete(KeelBH *bh)
{
    /* Freed by the home thread when it dequeues the BH. */
    aio_bh_enqueue(bh, BH_DELETED);
}

void keel_aio_bh_schedule_oneshot(KeelAioContext *ctx, KeelBHFunc *cb, void *opaque)
{
    aio_bh_enqueue(keel_aio_bh_new(ctx, cb, opaque), BH_SCHEDULED | BH_ONESHOT);
}

typedef enum { BHS_NONE, BHS_IDLE_ONLY, BHS_READY } BHsState;

static BHsState bh_state(KeelBH *bh)
{
    unsigned flags = keel_atomic_load_acquire(&bh->flags);

    if ((flags & (BH_SCHEDULED | BH_DELETED)) != BH_SCHEDULED) {
        return BHS_NONE;
    }
    return flags & BH_IDLE ? BHS_IDLE_ONLY : BHS_READY;
}

/* Is a BH waiting to run: BHS_READY for a normal one, BHS_IDLE_ONLY when
 * only idle ones wait.  Home thread. */
static BHsState aio_bhs_state(KeelAioContext *ctx)
{
    BHsState st = BHS_NONE, b;

    /* seq_cst load: second step of (A) on the sleeper side. */
    for (KeelBH *bh = keel_atomic_load_seq_cst(&ctx->bh_list); bh; bh = bh->next) {
        if ((b = bh_state(bh)) == BHS_READY) {
            return b;
        }
        st = MAX(st, b);
    }
    for (BHSlice *s = ctx->slice_first; s; s = s->next) {
        for (KeelBH *bh = s->head; bh; bh = bh->next) {
            if ((b = bh_state(bh)) == BHS_READY) {
                return b;
            }
            st = MAX(st, b);
        }
    }
    return st;
}

static bool aio_bhs_ready(KeelAioContext *ctx)
{
    return aio_bhs_state(ctx) == BHS_READY;
}

/* Run the BHs scheduled so far, once each.  Home thread. */
static bool aio_bh_poll(KeelAioContext *ctx)
{
    BHSlice slice;
    KeelBH *list, *reversed = NULL;
    bool progress = false;

    if (!keel_atomic_read(&ctx->bh_list) && !ctx->slice_first) {
        return false;
    }
    /* (C) acquire: see the fields of every pushed BH. */
    list = keel_atomic_xchg(&ctx->bh_list, NULL);
    /* Pushes are LIFO; run in scheduling order. */
    while (list) {
        KeelBH *next = list->next;
        list->next = reversed;
        reversed = list;
        list = next;
    }
    slice.head = reversed;
    slice.next = NULL;
    if (ctx->slice_last) {
        ctx->slice_last->next = &slice;
    } else {
        ctx->slice_first = &slice;
    }
    /* slice lives on this stack frame; it is unlinked before we return. */
#if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
    ctx->slice_last = &slice;
#if defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

    /* A nested aio_poll (from a BH) continues the outer slices first. */
    for (;;) {
        BHSlice *s = ctx->slice_first;
        KeelBH *bh;
        unsigned flags;

        if (!s) {
            break;
        }
        bh = s->head;
        if (!bh) {
            ctx->slice_first = s->next;
            if (!ctx->slice_first) {
                ctx->slice_last = NULL;
            }
            continue;
        }
        s->head = bh->next;
        /* (E): from here a new schedule pushes the BH again (next pass). */
        flags = keel_atomic_fetch_and(&bh->flags,
                                      ~(unsigned)(BH_PENDING | BH_SCHEDULED | BH_IDLE));
        if ((flags & (BH_SCHEDULED | BH_DELETED)) == BH_SCHEDULED) {
            /* An idle BH is housekeeping, not progress (QEMU). */
            progress |= !(flags & BH_IDLE);
            bh->cb(bh->opaque);
        }
        if (flags & (BH_DELETED | BH_ONESHOT)) {
            g_free(bh);
        }
    }
    return progress;
}

/* ------------------------------------------------------------------ */
/* fd handlers                                                         */

static void aio_walkers_enter(KeelAioContext *ctx)
{
    ctx->walkers++;
}

/* Unlink and free handlers marked deleted; home thread, no walkers. */
static void aio_free_deleted_handlers(KeelAioContext *ctx)
{
    AioHandler *dead = NULL;

    pthread_mutex_lock(&ctx->list_lock);
    AioHandler *node = keel_atomic_read(&ctx->handlers);
    AioHandler **pp = NULL;
    while (node) {
        AioHandler *next = node->next;
        if (keel_atomic_read(&node->deleted)) {
            if (pp) {
                *pp = next;
            } else {
                keel_atomic_store_release(&ctx->handlers, next);
            }
            node->next = dead;
            dead = node;
            keel_atomic_fetch_sub(&ctx->deleted_pending, 1);
        } else {
            pp = &node->next;
        }
        node = next;
    }
    keel_atomic_fetch_add(&ctx->list_generation, 1);
    pthread_mutex_unlock(&ctx->list_lock);

    while (dead) {
        AioHandler *next = dead->next;
        g_free(dead);
        dead = next;
    }
}

static void aio_walkers_exit(KeelAioContext *ctx)
{
    assert(ctx->walkers > 0);
    if (--ctx->walkers == 0 && keel_atomic_load_seq_cst(&ctx->deleted_pending)) {
        aio_free_deleted_handlers(ctx);
    }
}

/* The GSource's poll records (under list_lock).  A destroyed source (its
 * GMainContext dropped it) takes no more records; keel_aio_poll does not
 * need them. */
static void source_add_poll(KeelAioContext *ctx, GPollFD *pfd)
{
    if (!g_source_is_destroyed(&ctx->source)) {
        g_source_add_poll(&ctx->source, pfd);
    }
}

static void source_remove_poll(KeelAioContext *ctx, GPollFD *pfd)
{
    if (!g_source_is_destroyed(&ctx->source)) {
        g_source_remove_poll(&ctx->source, pfd);
    }
}

/* ---- epoll mode ---- */

/* epoll_create1 (2.6.27), else epoll_create + FD_CLOEXEC.  Returns the fd,
 * or -1 with errno set. */
static int aio_epoll_create(void)
{
    int fd = epoll_create1(EPOLL_CLOEXEC);

    if (fd < 0 && errno == ENOSYS) {
        fd = epoll_create(16);      /* the size is only a hint (> 0) */
        if (fd >= 0 && keel_set_cloexec(fd) < 0) {
            close(fd);
            fd = -1;
        }
    }
    return fd;
}

static bool aio_in_epoll_mode(KeelAioContext *ctx)
{
    return keel_atomic_load_acquire(&ctx->epoll_fd) >= 0;
}

/* Under list_lock: put @node in the epoll set; false if epoll refuses its fd
 * (EPERM for regular files and some devices), which then stays polled. */
static bool aio_epoll_add(int epfd, AioHandler *node)
{
    struct epoll_event ev = { .events = node->pfd.events, .data.ptr = node };

    /* poll's and epoll's IN/OUT/ERR/HUP bits are the same on Linux. */
    G_STATIC_ASSERT((int)EPOLLIN == (int)G_IO_IN && (int)EPOLLOUT == (int)G_IO_OUT &&
                    (int)EPOLLERR == (int)G_IO_ERR && (int)EPOLLHUP == (int)G_IO_HUP);
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, node->pfd.fd, &ev) < 0) {
        return false;
    }
    keel_atomic_store_seq_cst(&node->in_epoll, true);
    return true;
}

/* Under list_lock: switch to epoll mode when it pays off. */
static void aio_epoll_maybe_enable(KeelAioContext *ctx)
{
    static bool logged;             /* atomic */
    int epfd;

    if (aio_in_epoll_mode(ctx) || ctx->epoll_unavailable ||
        ctx->live_handlers <= ctx->epoll_threshold) {
        return;
    }
    if (keel_avoid(KEEL_PATH_EPOLL)) {
        ctx->epoll_unavailable = true;
        if (!keel_atomic_xchg(&logged, true)) {
            keel_log("epoll avoided (KEEL_AVOID): AioContexts poll every fd");
        }
        return;
    }
    epfd = aio_epoll_create();
    if (epfd < 0) {
        /* ENOSYS/EINVAL (very old kernel, seccomp) or out of fds: the poll
         * array keeps working, only slower with many fds. */
        ctx->epoll_unavailable = true;
        if (!keel_atomic_xchg(&logged, true)) {
            keel_log("epoll unavailable (%s): AioContexts poll every fd",
                     keel_errno_name(errno));
        }
        return;
    }
    /* The notifier joins the set (node NULL) so that a single epoll_wait
     * can sleep for everything; it also stays in slot 0 of the poll array
     * for the waits that need a nanosecond timeout. */
    struct epoll_event nev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, keel_event_notifier_get_fd(&ctx->notifier), &nev) < 0) {
        close(epfd);
        ctx->epoll_unavailable = true;
        return;
    }
    for (AioHandler *node = keel_atomic_read(&ctx->handlers);
         node; node = node->next) {
        if (!keel_atomic_read(&node->deleted) &&
            node->pfd.events && aio_epoll_add(epfd, node)) {
            source_remove_poll(ctx, &node->pfd);
        }
    }
    ctx->epoll_pfd.fd = epfd;
    ctx->epoll_pfd.events = G_IO_IN;
    source_add_poll(ctx, &ctx->epoll_pfd);
    /* Publish after every node's in_epoll (the home thread reads it when
     * it sees epoll_fd). */
    keel_atomic_store_release(&ctx->epoll_fd, epfd);
}

/* Home thread, walker held: wait up to @timeout_ns (0 or -1) for epoll
 * events, store them in the nodes' revents and append the nodes to @ready
 * (when not NULL; it has room for EPOLL_BATCH more).  The notifier has a NULL
 * node.  Returns the number of handler events (the notifier not counted),
 * or -1 (EINTR while sleeping). */
static int aio_epoll_wait(KeelAioContext *ctx, int64_t timeout_ns, AioHandler **ready,
                          unsigned *nready, bool *notifier_readable)
{
    struct epoll_event *events;
    int n;

    if (!ctx->epoll_events) {
        ctx->epoll_events = g_new(struct epoll_event, EPOLL_BATCH);
    }
    events = ctx->epoll_events;
    do {
        n = epoll_wait(keel_atomic_load_seq_cst(&ctx->epoll_fd), events, EPOLL_BATCH,
                       timeout_ns < 0 ? -1 : 0);
        /* Only a zero-timeout wait is retried here (it cannot sleep). */
    } while (n < 0 && errno == EINTR && timeout_ns == 0);
    if (n < 0) {
        return -1;
    }
    int handlers = 0;
    for (int i = 0; i < n; i++) {
        AioHandler *node = events[i].data.ptr;
        if (!node) {
            if (notifier_readable) {
                *notifier_readable = true;
            }
            continue;
        }
        node->pfd.revents = (gushort)events[i].events;
        handlers++;
        if (ready) {
            ready[(*nready)++] = node;
        }
    }
    return handlers;
}

/* The features report: which fd monitor a context with many fds uses. */
static const char *aio_fdmon_active(const char **reason)
{
    int fd;

    if (keel_avoid(KEEL_PATH_EPOLL)) {
        if (reason) {
            *reason = "KEEL_AVOID";
        }
        return "poll";
    }
    fd = aio_epoll_create();
    if (fd < 0) {
        if (reason) {
            *reason = keel_errno_name(errno);
        }
        return "poll";
    }
    close(fd);
    if (reason) {
        *reason = "default";
    }
    return "epoll";
}

const KeelFeature loop_fdmon_feature = {
    .name = "aio-fd-monitor",
    .compiled = "epoll,poll",
    .active = aio_fdmon_active,
};

void aio_context_set_epoll_threshold(KeelAioContext *ctx, unsigned n)
{
    pthread_mutex_lock(&ctx->list_lock);
    ctx->epoll_threshold = n;
    aio_epoll_maybe_enable(ctx);
    keel_atomic_fetch_add(&ctx->list_generation, 1);
    pthread_mutex_unlock(&ctx->list_lock);
}

bool aio_context_uses_epoll(KeelAioContext *ctx)
{
    return aio_in_epoll_mode(ctx);
}

static void aio_set_handler(KeelAioContext *ctx, int fd, KeelIOHandler *io_read,
                            KeelIOHandler *io_write, const KeelAioPollOps *en_ops,
                            const KeelAioFdPollOps *fd_ops,
                            void (*notifier_cb)(KeelEventNotifier *e), void *opaque)
{
    KeelAioPollFn *io_poll = en_ops ? en_ops->poll : fd_ops ? fd_ops->poll : NULL;
    bool home = keel_aio_context_in_home_thread(ctx);
    AioHandler *new_node = NULL, *old = NULL, *to_free = NULL;
    AioHandler **old_pp = NULL;

    if (io_read || io_write || io_poll || notifier_cb) {
        new_node = g_new0(AioHandler, 1);
        new_node->pfd.fd = fd;
        new_node->pfd.events = (io_read || notifier_cb ? G_IO_IN | G_IO_HUP | G_IO_ERR : 0) |
                               (io_write ? G_IO_OUT | G_IO_ERR : 0);
        new_node->io_read = io_read;
        new_node->io_write = io_write;
        new_node->io_poll = io_poll;
        if (io_poll && en_ops) {
            new_node->en_ops = *en_ops;
        } else if (io_poll) {
            new_node->fd_ops = *fd_ops;
        }
        new_node->notifier_cb = notifier_cb;
        new_node->opaque = opaque;
    }

    pthread_mutex_lock(&ctx->list_lock);
    AioHandler *head = keel_atomic_read(&ctx->handlers);
    AioHandler **pp = NULL;
    for (AioHandler *n = head; n; pp = &n->next, n = n->next) {
        if (n->pfd.fd == fd && !keel_atomic_read(&n->deleted)) {
            old = n;
            old_pp = pp;
            break;
        }
    }
    if (old) {
        /* Nobody polls it from now on; the memory lives until no walker. */
        if (keel_atomic_read(&old->in_epoll)) {
            /* EBADF/ENOENT if the fd was closed first: nothing to undo. */
            epoll_ctl(keel_atomic_load_seq_cst(&ctx->epoll_fd), EPOLL_CTL_DEL, fd, NULL);
        } else {
            source_remove_poll(ctx, &old->pfd);
        }
        ctx->live_handlers--;
        if (!old->io_poll) {
            keel_atomic_fetch_sub(&ctx->poll_disable_cnt, 1);
        }
        if (home && ctx->walkers == 0) {
            if (old_pp) {
                *old_pp = old->next;
            } else {
                keel_atomic_store_release(&ctx->handlers, old->next);
            }
            to_free = old;
        } else {
            keel_atomic_store_seq_cst(&old->deleted, true);
            keel_atomic_fetch_add(&ctx->deleted_pending, 1);
        }
    }
    if (new_node) {
        new_node->next = keel_atomic_read(&ctx->handlers);
        if (!aio_in_epoll_mode(ctx) || !new_node->pfd.events ||
            !aio_epoll_add(keel_atomic_load_seq_cst(&ctx->epoll_fd), new_node)) {
            source_add_poll(ctx, &new_node->pfd);
        }
        /* (D) publish the filled-in node. */
        keel_atomic_store_release(&ctx->handlers, new_node);
        ctx->live_handlers++;
        if (!io_poll) {
            keel_atomic_fetch_add(&ctx->poll_disable_cnt, 1);
        }
        aio_epoll_maybe_enable(ctx);
    }
    keel_atomic_fetch_add(&ctx->list_generation, 1);
    pthread_mutex_unlock(&ctx->list_lock);

    g_free(to_free);
    if (old || new_node) {
        /* A sleeping home thread must rebuild its poll set. */
        aio_notify_internal(ctx);
    }
}

void keel_aio_set_fd_handler(KeelAioContext *ctx, int fd, KeelIOHandler *io_read,
                             KeelIOHandler *io_write, KeelAioPollFn *io_poll,
                             void *opaque)
{
    KeelAioFdPollOps ops = { .poll = io_poll };

    aio_set_handler(ctx, fd, io_read, io_write, NULL, &ops, NULL, opaque);
}

void keel_aio_set_fd_handler_poll(KeelAioContext *ctx, int fd, KeelIOHandler *io_read,
                                  KeelIOHandler *io_write, const KeelAioFdPollOps *ops,
                                  void *opaque)
{
    KeelAioFdPollOps none = { .poll = NULL };

    aio_set_handler(ctx, fd, io_read, io_write, NULL, ops ? ops : &none, NULL, opaque);
}

void keel_aio_set_event_notifier(KeelAioContext *ctx, KeelEventNotifier *e,
                                 void (*cb)(KeelEventNotifier *e),
                                 KeelAioPollFn *io_poll)
{
    KeelAioPollOps ops = { .poll = io_poll };

    keel_aio_set_event_notifier_poll(ctx, e, cb, &ops);
}

void keel_aio_set_event_notifier_poll(KeelAioContext *ctx, KeelEventNotifier *e,
                                      void (*cb)(KeelEventNotifier *e),
                                      const KeelAioPollOps *ops)
{
    KeelAioPollOps none = { .poll = NULL };

    aio_set_handler(ctx, keel_event_notifier_get_fd(e), NULL, NULL,
                    cb && ops ? ops : &none, NULL, cb, e);
}

static bool handler_deleted(AioHandler *node)
{
    return keel_atomic_load_acquire(&node->deleted);
}

static void handler_call_read(AioHandler *node)
{
    if (node->notifier_cb) {
        node->notifier_cb(node->opaque);
    } else if (node->io_read) {
        node->io_read(node->opaque);
    }
}

/* io_poll said @node has work: its ready companion, else the read side. */
static void handler_call_polled(AioHandler *node)
{
    if (node->en_ops.ready) {
        node->en_ops.ready(node->opaque);
    } else if (node->fd_ops.ready) {
        node->fd_ops.ready(node->opaque);
    } else {
        handler_call_read(node);
    }
}

static bool handler_has_poll_begin(AioHandler *node)
{
    return node->en_ops.begin || node->fd_ops.begin;
}

static void handler_poll_begin_end(AioHandler *node, bool begin)
{
    if (node->en_ops.begin || node->en_ops.end) {
        void (*fn)(KeelEventNotifier *e) = begin ? node->en_ops.begin : node->en_ops.end;
        if (fn) {
            fn(node->opaque);
        }
    } else {
        KeelIOHandler *fn = begin ? node->fd_ops.begin : node->fd_ops.end;
        if (fn) {
            fn(node->opaque);
        }
    }
}

/* Dispatch one handler for the revents stored in it (consumed here, so a
 * nested poll and the outer one never both dispatch the same event). */
static bool aio_dispatch_handler(AioHandler *node)
{
    unsigned revents = node->pfd.revents & (node->pfd.events | G_IO_HUP | G_IO_ERR);
    bool progress = false;

    node->pfd.revents = 0;
    if (!revents || handler_deleted(node)) {
        return false;
    }
    if ((revents & (G_IO_IN | G_IO_HUP | G_IO_ERR)) && (node->io_read || node->notifier_cb)) {
        handler_call_read(node);
        progress = true;
    }
    if ((revents & (G_IO_OUT | G_IO_ERR)) && node->io_write && !handler_deleted(node)) {
        node->io_write(node->opaque);
        progress = true;
    }
    return progress;
}

/* Dispatch every handler with pending revents (glib path).  Home thread. */
static bool aio_dispatch_handlers(KeelAioContext *ctx)
{
    bool progress = false;

    aio_walkers_enter(ctx);
    for (AioHandler *node = keel_atomic_load_acquire(&ctx->handlers);
         node; node = node->next) {
        progress |= aio_dispatch_handler(node);
    }
    aio_walkers_exit(ctx);
    return progress;
}

/* Fill ctx->pollfds unless the list is unchanged: slot 0 the notifier,
 * slot 1 the epoll set in epoll mode, then the fds polled one by one.  Slots
 * without a handler have a NULL pollnodes entry.  Home thread, walker held. */
static unsigned aio_build_pollfds(KeelAioContext *ctx)
{
    unsigned gen = keel_atomic_load_seq_cst(&ctx->list_generation);
    int epfd = keel_atomic_load_acquire(&ctx->epoll_fd);
    unsigned n = 2;

    if (ctx->poll_cache_valid && gen == ctx->poll_generation) {
        return ctx->npollfds;
    }
    for (AioHandler *node = keel_atomic_load_acquire(&ctx->handlers);
         node; node = node->next) {
        n++;
    }
    if (n > ctx->pollcap) {
        ctx->pollcap = MAX(n, ctx->pollcap * 2);
        ctx->pollfds = g_renew(GPollFD, ctx->pollfds, ctx->pollcap);
        ctx->pollnodes = g_renew(AioHandler *, ctx->pollnodes, ctx->pollcap);
    }
    ctx->pollfds[0].fd = keel_event_notifier_get_fd(&ctx->notifier);
    ctx->pollfds[0].events = G_IO_IN;
    ctx->pollnodes[0] = NULL;
    n = 1;
    if (epfd >= 0) {
        ctx->pollfds[1].fd = epfd;
        ctx->pollfds[1].events = G_IO_IN;
        ctx->pollnodes[1] = NULL;
        n = 2;
    }
    /* Nodes inserted after we counted are at the head, before the ones we
     * counted, so at most the counted number is visited past this point. */
    for (AioHandler *node = keel_atomic_load_acquire(&ctx->handlers);
         node && n < ctx->pollcap; node = node->next) {
        if (handler_deleted(node) || !node->pfd.events ||
            keel_atomic_read(&node->in_epoll)) {
            continue;
        }
        ctx->pollfds[n].fd = node->pfd.fd;
        ctx->pollfds[n].events = node->pfd.events;
        ctx->pollnodes[n] = node;
        n++;
    }
    ctx->npollfds = n;
    ctx->poll_generation = gen;
    ctx->poll_cache_valid = true;
    return n;
}

/* ------------------------------------------------------------------ */
/* Adaptive polling                                                    */

#define POLL_GROW_START_NS 4000
/* Passes in a row in which polling found work without a look at the fds. */
#define POLL_MAX_SKIPPED_WAITS 16

static bool aio_can_poll(KeelAioContext *ctx)
{
    return keel_atomic_read(&ctx->poll_disable_cnt) == 0;
}

typedef enum { POLL_NOTHING, POLL_PROGRESS, POLL_WOKEN } PollResult;

/* The event sources that fired during one keel_aio_poll, for the windows. */
#define POLL_EVENTS_MAX 8
typedef struct PollEvents {
    int64_t at_ns;                  /* when the first was seen; 0: none yet */
    bool wakeup;                    /* the wake-up flag (BH, notify) */
    unsigned n;
    AioHandler *nodes[POLL_EVENTS_MAX];     /* the rest are not adapted */
} PollEvents;

/* @seen_ns: when the event was detected (0: now). */
static void poll_events_note_time(PollEvents *ev, int64_t seen_ns)
{
    if (!ev->at_ns) {
        ev->at_ns = seen_ns ? seen_ns : keel_monotonic_ns();
    }
}

static void poll_events_add(PollEvents *ev, AioHandler *node, int64_t seen_ns)
{
    poll_events_note_time(ev, seen_ns);
    if (ev->n < POLL_EVENTS_MAX) {
        ev->nodes[ev->n++] = node;
    }
}

/* Ask @node's io_poll; when it reports work, run the handler now (noted in
 * @ev when it is not NULL).  Returns whether it ran. */
static bool aio_poll_node(AioHandler *node, PollEvents *ev)
{
    /* A callback that runs a nested aio_poll on its own context would
     * otherwise be called again for the same work (QEMU takes the handler
     * off its poll list while io_poll_ready runs). */
    if (node->in_poll_ready || !node->io_poll(node->opaque) || handler_deleted(node)) {
        return false;
    }
    if (ev) {
        poll_events_add(ev, node, 0);
    }
    node->in_poll_ready = true;
    handler_call_polled(node);
    node->in_poll_ready = false;
    return true;
}

/* One round of every io_poll.  Home thread, walker held. */
static bool aio_poll_handlers_once(KeelAioContext *ctx, PollEvents *ev)
{
    bool progress = false;

    for (AioHandler *node = keel_atomic_load_acquire(&ctx->handlers); node; node = node->next) {
        if (node->io_poll && !handler_deleted(node)) {
            progress |= aio_poll_node(node, ev);
        }
    }
    return progress;
}

/* Busy-poll the io_poll functions (and the wake-up flag) until @until_ns.
 * Handlers found ready run at once and go into @ev; POLL_WOKEN sets
 * *@woken_ns. */
static PollResult aio_run_poll_handlers(KeelAioContext *ctx, int64_t until_ns, PollEvents *ev,
                                        int64_t *woken_ns)
{
    do {
        if (keel_atomic_load_acquire(&ctx->notified)) {
            *woken_ns = keel_monotonic_ns();
            return POLL_WOKEN;
        }
        if (aio_poll_handlers_once(ctx, ev)) {
            return POLL_PROGRESS;
        }
    } while (keel_monotonic_ns() < until_ns);
    return POLL_NOTHING;
}

/* Enter or leave busy-poll mode: the handlers' begin / end companions (a
 * handler added meanwhile gets its begin the next time the mode starts).
 * Leaving with @recheck, each handler whose end ran is polled once more,
 * since it may have suppressed the notification for work published
 * meanwhile; those with work run now (and go into @ev).  Returns whether
 * any did.  Home thread, walker held. */
static bool aio_poll_set_started(KeelAioContext *ctx, bool started, bool recheck,
                                 PollEvents *ev)
{
    bool progress = false;

    if (ctx->poll_started == started) {
        return false;
    }
    ctx->poll_started = started;
    for (AioHandler *node = keel_atomic_load_acquire(&ctx->handlers); node; node = node->next) {
        if (handler_deleted(node)) {
            continue;
        }
        if (started && handler_has_poll_begin(node) && !node->poll_begun) {
            node->poll_begun = true;
            handler_poll_begin_end(node, true);
        } else if (!started && node->poll_begun) {
            node->poll_begun = false;
            handler_poll_begin_end(node, false);
            if (recheck) {
                progress |= aio_poll_node(node, ev);
            }
        }
    }
    return progress;
}

/* A source that fired @block_ns after the wait began: keep its window if the
 * window caught it, shrink it if no window allowed would have, else grow. */
static void aio_adjust_poll_window(KeelAioContext *ctx, int64_t *poll_ns, int64_t block_ns,
                                   int64_t max_ns)
{
    if (*poll_ns > max_ns) {
        *poll_ns = max_ns;          /* the limit was lowered since it grew */
    }
    if (block_ns <= *poll_ns) {
        /* The window caught the event: keep it. */
    } else if (block_ns > max_ns) {
        /* Polling that long would not have helped: poll less. */
        int64_t shrink = keel_atomic_read(&ctx->poll_shrink);
        *poll_ns = shrink > 0 ? *poll_ns / shrink : 0;
    } else if (*poll_ns < max_ns) {
        /* A longer window would have caught it: grow. */
        int64_t grow = keel_atomic_read(&ctx->poll_grow);
        if (grow <= 0) {
            grow = 2;
        }
        *poll_ns = *poll_ns ? *poll_ns * grow : POLL_GROW_START_NS;
        if (*poll_ns > max_ns) {
            *poll_ns = max_ns;
        }
    }
}

/*
 * Why one window per source: a loop waits for events with very different
 * latencies.  A guest that sends its next request microseconds after the
 * previous one completed, over storage that takes 50 µs, gives one fast
 * source (the queue) and one slow one (the completions).  A single window
 * is reset by every slow wait and so is always 0 when the fast event comes;
 * with a window per source the queue's stays open and the completions'
 * closes.
 *
 * The context polls for the largest window among the sources that fired in
 * the last POLL_IDLE_NS: a source gone quiet does not keep it polling.
 */
#define POLL_IDLE_NS 1000000000LL

static int64_t aio_poll_window(KeelAioContext *ctx, int64_t now)
{
    int64_t window = 0;

    if (now - ctx->wakeup_last_event_ns < POLL_IDLE_NS) {
        window = ctx->wakeup_poll_ns;
    }
    for (AioHandler *node = keel_atomic_load_acquire(&ctx->handlers); node; node = node->next) {
        if (node->poll_ns > window && now - node->last_event_ns < POLL_IDLE_NS &&
            !handler_deleted(node)) {
            window = node->poll_ns;
        }
    }
    return window;
}

int64_t aio_context_poll_window_ns(KeelAioContext *ctx)
{
    assert(keel_aio_context_in_home_thread(ctx));
    return aio_poll_window(ctx, keel_monotonic_ns());
}

int64_t aio_handler_poll_window_ns(KeelAioContext *ctx, int fd)
{
    assert(keel_aio_context_in_home_thread(ctx));
    for (AioHandler *node = keel_atomic_load_acquire(&ctx->handlers); node; node = node->next) {
        if (node->pfd.fd == fd && !handler_deleted(node)) {
            return node->poll_ns;
        }
    }
    return -1;
}

/* End of a keel_aio_poll that waited from @poll_start: adapt the windows of
 * the sources that fired. */
static void aio_adjust_poll_windows(KeelAioContext *ctx, const PollEvents *ev,
                                    int64_t poll_start, int64_t max_ns)
{
    int64_t block_ns;

    if (!ev->at_ns) {
        return;                     /* only timers, or nothing: nothing learnt */
    }
    block_ns = ev->at_ns - poll_start;
    if (ev->wakeup) {
        aio_adjust_poll_window(ctx, &ctx->wakeup_poll_ns, block_ns, max_ns);
        ctx->wakeup_last_event_ns = ev->at_ns;
    }
    for (unsigned i = 0; i < ev->n; i++) {
        aio_adjust_poll_window(ctx, &ev->nodes[i]->poll_ns, block_ns, max_ns);
        ev->nodes[i]->last_event_ns = ev->at_ns;
    }
}

void keel_aio_context_set_poll_params(KeelAioContext *ctx, int64_t max_ns,
                                      int64_t grow, int64_t shrink)
{
    keel_atomic_store_seq_cst(&ctx->poll_grow, grow);
    keel_atomic_store_seq_cst(&ctx->poll_shrink, shrink);
    keel_atomic_store_seq_cst(&ctx->poll_max_ns, max_ns < 0 ? 0 : max_ns);
    aio_notify_internal(ctx);
}

/* ------------------------------------------------------------------ */
/* aio_poll                                                            */

/* ns the home thread may sleep: 0 when work is waiting or a wake-up was
 * requested, the nearest timer otherwise (-1: none). */
static int64_t aio_compute_timeout(KeelAioContext *ctx)
{
    BHsState bhs = BHS_NONE;
    int64_t deadline;

    /* (A) sleeper side, after notify_me was raised by the caller. */
    if (keel_atomic_load_seq_cst(&ctx->notified) ||
        (bhs = aio_bhs_state(ctx)) == BHS_READY) {
        return 0;
    }
    deadline = aio_timers_deadline_ns(ctx);
    if (bhs == BHS_IDLE_ONLY && (deadline < 0 || deadline > BH_IDLE_TIMEOUT_NS)) {
        deadline = BH_IDLE_TIMEOUT_NS;
    }
    return deadline;
}

bool keel_aio_poll(KeelAioContext *ctx, bool blocking)
{
    bool progress = false;
    /* When this call started waiting with polling allowed: the time until
     * the first event is what the windows adapt to. */
    int64_t poll_start = 0;
    int64_t max_ns = 0;
    PollEvents events = { 0 };

    assert(keel_aio_context_in_home_thread(ctx));
    aio_walkers_enter(ctx);
    for (;;) {
        AioHandler *ready_buf[32 + EPOLL_BATCH];
        AioHandler **ready = ready_buf;
        unsigned nready = 0, nfds;
        int64_t timeout = 0;
        bool sleeping = false, explicit_notify, epoll_mode, notifier_readable = false;
        int64_t seen_ns = 0;        /* when this pass saw its events (polling only) */
        bool polled = false;        /* polling found work (or a wake-up) this pass */
        int ret;

        if (blocking) {
            max_ns = keel_atomic_read(&ctx->poll_max_ns);
            timeout = aio_compute_timeout(ctx);
            if (timeout != 0 && max_ns > 0 && aio_can_poll(ctx)) {
                int64_t now = keel_monotonic_ns();
                int64_t window = MIN(aio_poll_window(ctx, now), max_ns);
                if (!poll_start) {
                    poll_start = now;
                }
                if (timeout > 0 && window > timeout) {
                    window = timeout;
                }
                if (window > 0) {
                    PollResult r;

                    aio_poll_set_started(ctx, true, false, NULL);
                    r = aio_run_poll_handlers(ctx, now + window, &events, &seen_ns);
                    if (r != POLL_NOTHING) {
                        progress |= r == POLL_PROGRESS;
                        timeout = 0;
                        polled = true;
                    }
                }
            }
            if (timeout != 0 && ctx->poll_started &&
                aio_poll_set_started(ctx, false, true, poll_start ? &events : NULL)) {
                /* Work published while notifications were off. */
                progress = true;
                timeout = 0;
                polled = true;
            }
            if (timeout != 0) {
                /* (A) sleeper side: announce, then look again. */
                keel_atomic_fetch_add(&ctx->notify_me, 2);
                sleeping = true;
                timeout = aio_compute_timeout(ctx);
            }
        }

        nfds = aio_build_pollfds(ctx);
        epoll_mode = nfds > 1 && !ctx->pollnodes[1];
        if (polled && ctx->poll_skipped_waits < POLL_MAX_SKIPPED_WAITS &&
            !thread_pool_busy(ctx)) {
            /* Polling found the work: every handler has an io_poll, so the
             * fds would mostly repeat it; save the system call, but look at
             * them every few passes so that no fd-only event starves.  Not
             * while thread-pool workers have our requests: the system call
             * is also where the scheduler hands this CPU to a worker that
             * our wake-up put here, instead of after the poll window
             * (measured: aio=threads in an iothread lost a fifth of its
             * IOPS on a 2-CPU host without it). */
            ctx->poll_skipped_waits++;
            ret = 0;
        } else if (timeout == 0 && nfds == 1) {
            /* No handlers and no sleep: the notifier alone has nothing to
             * say that notified did not (it is only written for sleepers),
             * so save the system call. */
            ret = 0;
        } else if (epoll_mode && nfds == 2 && timeout <= 0) {
            /* Everything is in the epoll set (the notifier too) and the
             * timeout needs no nanoseconds: one epoll_wait does it all. */
            ret = aio_epoll_wait(ctx, timeout, ready, &nready, &notifier_readable);
        } else {
            do {
                ret = keel_poll_ns(ctx->pollfds, nfds, timeout);
                /* A zero-timeout poll interrupted before it looked at the
                 * fds would hide ready handlers; it cannot sleep: retry. */
            } while (ret < 0 && errno == EINTR && timeout == 0);
            ctx->poll_skipped_waits = 0;
            if (ret > 0) {
                /* Collect ready handlers before running anything: a nested
                 * aio_poll reuses ctx->pollfds. */
                notifier_readable = ctx->pollfds[0].revents != 0;
                if ((unsigned)ret > G_N_ELEMENTS(ready_buf) - EPOLL_BATCH) {
                    ready = g_new(AioHandler *, (unsigned)ret + EPOLL_BATCH);
                }
                for (unsigned i = 1; i < nfds; i++) {
                    if (ctx->pollfds[i].revents && ctx->pollnodes[i]) {
                        ctx->pollnodes[i]->pfd.revents = ctx->pollfds[i].revents;
                        ready[nready++] = ctx->pollnodes[i];
                    }
                }
                if (epoll_mode && ctx->pollfds[1].revents) {
                    aio_epoll_wait(ctx, 0, ready, &nready, NULL);
                }
            }
        }
        if (sleeping) {
            keel_atomic_fetch_sub(&ctx->notify_me, 2);
        }
        if (poll_start && ret > 0 && !seen_ns) {
            seen_ns = keel_monotonic_ns();
        }
        explicit_notify = aio_notify_accept(ctx, notifier_readable);

        if (aio_bh_poll(ctx)) {
            progress = true;
            if (poll_start) {
                poll_events_note_time(&events, seen_ns);
                events.wakeup = true;
            }
        }
        for (unsigned i = 0; i < nready; i++) {
            if (aio_dispatch_handler(ready[i])) {
                progress = true;
                if (poll_start) {
                    poll_events_add(&events, ready[i], seen_ns);
                }
            }
        }
        if (ready != ready_buf) {
            g_free(ready);
        }
        progress |= aio_timers_run(ctx);

        /* Woken for nothing (EINTR, an internal wake-up, a stale eventfd):
         * a blocking call goes back to sleep. */
        if (!blocking || progress || explicit_notify) {
            break;
        }
    }
    if (poll_start && max_ns > 0) {
        aio_adjust_poll_windows(ctx, &events, poll_start, max_ns);
    }
    aio_walkers_exit(ctx);
    return progress;
}

/* ------------------------------------------------------------------ */
/* GSource                                                             */

static gboolean aio_ctx_prepare(GSource *source, gint *timeout)
{
    KeelAioContext *ctx = (KeelAioContext *)source;
    int64_t deadline;

    /* Busy-poll mode belongs to keel_aio_poll; glib is about to sleep:
     * leave it, and let dispatch run the io_poll round that follows. */
    if (ctx->poll_started) {
        aio_walkers_enter(ctx);
        aio_poll_set_started(ctx, false, false, NULL);   /* dispatch rechecks */
        aio_walkers_exit(ctx);
        ctx->poll_recheck = true;
    }
    if (ctx->poll_recheck) {
        *timeout = 0;
        return TRUE;
    }
    /* (A) sleeper side: glib may sleep after this; bit 0 is glib's. */
    keel_atomic_fetch_or(&ctx->notify_me, 1);
    if (aio_bhs_ready(ctx)) {
        *timeout = 0;
        return TRUE;
    }
    deadline = aio_timers_deadline_ns(ctx);
    if (deadline == 0) {
        *timeout = 0;
        return TRUE;
    }
    if (aio_bhs_state(ctx) == BHS_IDLE_ONLY &&
        (deadline < 0 || deadline > BH_IDLE_TIMEOUT_NS)) {
        deadline = BH_IDLE_TIMEOUT_NS;      /* check() then runs it */
    }
    /* A pending wake-up: do not sleep, but it is not work (check decides). */
    *timeout = keel_atomic_load_seq_cst(&ctx->notified) ? 0 : keel_poll_timeout_ms(deadline);
    return FALSE;
}

static gboolean aio_ctx_check(GSource *source)
{
    KeelAioContext *ctx = (KeelAioContext *)source;
    bool ready = false;

    keel_atomic_fetch_and(&ctx->notify_me, ~1u);
    aio_notify_accept(ctx, ctx->notifier_pfd.revents != 0);
    ctx->notifier_pfd.revents = 0;
    /* Idle BHs too: glib slept at most their 10 ms, now run them. */
    if (aio_bhs_state(ctx) != BHS_NONE || ctx->poll_recheck) {
        return TRUE;
    }
    aio_walkers_enter(ctx);
    if (ctx->epoll_pfd.revents) {
        ctx->epoll_pfd.revents = 0;
        if (aio_in_epoll_mode(ctx) && aio_epoll_wait(ctx, 0, NULL, NULL, NULL) > 0) {
            ready = true;
        }
    }
    for (AioHandler *node = keel_atomic_load_acquire(&ctx->handlers);
         node && !ready; node = node->next) {
        if ((node->pfd.revents & (node->pfd.events | G_IO_HUP | G_IO_ERR)) &&
            !handler_deleted(node)) {
            ready = true;
        }
    }
    aio_walkers_exit(ctx);
    return ready || aio_timers_deadline_ns(ctx) == 0;
}

static gboolean aio_ctx_dispatch(GSource *source, GSourceFunc callback, gpointer user_data)
{
    KeelAioContext *ctx = (KeelAioContext *)source;

    assert(keel_aio_context_in_home_thread(ctx));
    aio_walkers_enter(ctx);
    /* check() is skipped when prepare() found a BH: fetch epoll events here
     * too, or a busy BH would starve the fds in the epoll set. */
    if (ctx->epoll_pfd.revents) {
        ctx->epoll_pfd.revents = 0;
        if (aio_in_epoll_mode(ctx)) {
            aio_epoll_wait(ctx, 0, NULL, NULL, NULL);
        }
    }
    aio_bh_poll(ctx);
    aio_dispatch_handlers(ctx);
    if (ctx->poll_recheck) {
        ctx->poll_recheck = false;
        aio_poll_handlers_once(ctx, NULL);
    }
    aio_timers_run(ctx);
    aio_walkers_exit(ctx);
    return G_SOURCE_CONTINUE;
}

static void aio_ctx_finalize(GSource *source)
{
    KeelAioContext *ctx = (KeelAioContext *)source;
    KeelBH *bh;

    registry_remove(ctx);
    if (ctx->pool) {
        thread_pool_free(ctx->pool);
        ctx->pool = NULL;
    }
    /* Whatever is left (deleted BHs waiting for a pass, one-shots that never
     * ran, BHs their owners did not delete) goes with the context. */
    bh = keel_atomic_xchg(&ctx->bh_list, NULL);
    while (bh) {
        KeelBH *next = bh->next;
        g_free(bh);
        bh = next;
    }
    for (AioHandler *node = keel_atomic_load_seq_cst(&ctx->handlers); node;) {
        AioHandler *next = node->next;
        g_free(node);
        node = next;
    }
    keel_atomic_store_seq_cst(&ctx->handlers, NULL);
    if (keel_atomic_load_seq_cst(&ctx->epoll_fd) >= 0) {
        close(keel_atomic_load_seq_cst(&ctx->epoll_fd));
    }
    g_free(ctx->epoll_events);
    aio_timers_cleanup(ctx);
    keel_event_notifier_cleanup(&ctx->notifier);
    g_free(ctx->pollfds);
    g_free(ctx->pollnodes);
    pthread_mutex_destroy(&ctx->list_lock);
    pthread_mutex_destroy(&ctx->pool_lock);
    if (current_ctx == ctx) {
        current_ctx = NULL;
    }
}

static GSourceFuncs aio_source_funcs = {
    .prepare = aio_ctx_prepare,
    .check = aio_ctx_check,
    .dispatch = aio_ctx_dispatch,
    .finalize = aio_ctx_finalize,
};

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

KeelAioContext *keel_aio_context_new(void)
{
    GSource *source = g_source_new(&aio_source_funcs, sizeof(KeelAioContext));
    KeelAioContext *ctx = (KeelAioContext *)source;
    int ret;

    g_source_set_name(source, "keel-aio-context");
    pthread_mutex_init(&ctx->list_lock, NULL);
    pthread_mutex_init(&ctx->pool_lock, NULL);
    keel_atomic_store_seq_cst(&ctx->epoll_fd, -1);
    ctx->epoll_pfd.fd = -1;
    ctx->epoll_threshold = EPOLL_DEFAULT_THRESHOLD;
    ret = keel_event_notifier_init(&ctx->notifier, false);
    if (ret < 0) {
        /* Out of fds: nothing sensible to return; the API promises a context. */
        keel_log("cannot create the AioContext notifier: %s", g_strerror(-ret));
        abort();
    }
    ctx->notifier_pfd.fd = keel_event_notifier_get_fd(&ctx->notifier);
    ctx->notifier_pfd.events = G_IO_IN;
    g_source_add_poll(source, &ctx->notifier_pfd);
    aio_timers_init(ctx);
    keel_atomic_store_seq_cst(&ctx->home_id, self_id());
    if (!current_ctx) {
        current_ctx = ctx;
    }
    registry_add(ctx);
    return ctx;
}

void keel_aio_context_ref(KeelAioContext *ctx)
{
    g_source_ref(&ctx->source);
}

void keel_aio_context_unref(KeelAioContext *ctx)
{
    g_source_unref(&ctx->source);
}

GSource *keel_aio_get_g_source(KeelAioContext *ctx)
{
    return g_source_ref(&ctx->source);
}
