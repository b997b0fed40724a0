/*
 * The linux-aio engine (libaio): one kernel AIO context per AioContext.
 *
 * Submission: requests queue in software and go to io_submit() in batches
 * (all of a plugged section, or of one completion pass) at most
 * MAX_EVENTS in flight; when io_submit says EAGAIN the queue waits for a
 * completion (backpressure), or for a retry bottom half when nothing is in
 * flight to complete.
 * Completion: every iocb signals one eventfd (io_set_eventfd); its fd
 * handler reaps the completion ring.  The ring is read in user space (its
 * layout is kernel ABI, and libaio's own io_getevents used to do the same),
 * which is also what the io_poll function peeks at for adaptive polling; a
 * ring without the expected magic is reaped with io_getevents instead.
 * Flush, discard and write-zeroes go to the thread pool (kernel AIO has no
 * usable fdatasync or fallocate).
 */
#include "config.h"

#include "block/block-int.h"
#include "compat/event-notifier.h"
#include "compat/osdep.h"

#include <errno.h>
#include <glib.h>
#include <libaio.h>
#include <string.h>
#include <time.h>

#define MAX_EVENTS 256
#define REAP_BATCH 64

/* The completion ring the kernel maps at the address of the io_context_t
 * (fs/aio.c, struct aio_ring). */
struct aio_ring {
    unsigned id;
    unsigned nr;
    unsigned head;
    unsigned tail;
    unsigned magic;
    unsigned compat_features;
    unsigned incompat_features;
    unsigned header_length;
    struct io_event io_events[];
};
#define AIO_RING_MAGIC 0xa10a10a1

typedef struct LaioState {
    io_context_t ioctx;
    KeelEventNotifier notifier;
    KeelAioContext *ctx;
    GQueue pending;             /* LaioReq, not yet accepted by io_submit */
    unsigned in_flight;         /* accepted, not yet reaped */
    bool retry_scheduled;
    KeelBH *retry_bh;
} LaioState;

typedef struct LaioReq {
    struct iocb iocb;
    GList link;
    KeelCoroutine *co;
    int ret;                    /* -EINPROGRESS until completed */
} LaioReq;

static void laio_submit_pending(void *opaque);

static void laio_complete(LaioReq *req, long res)
{
    req->ret = (int)res;
    /* A request failed inside its own submission is not waiting yet: its
     * coroutine sees ret and does not yield. */
    if (req->co != keel_coroutine_self()) {
        keel_aio_co_wake(req->co);
    }
}

/* Copy up to @max events out of the ring and release their slots.  Returns
 * the number copied, or -1 when the ring cannot be read in user space. */
static int laio_ring_take(LaioState *s, struct io_event *out, int max)
{
    struct aio_ring *ring = (struct aio_ring *)s->ioctx;
    unsigned head, tail;
    int n = 0;

    if (ring->magic != AIO_RING_MAGIC || ring->incompat_features != 0) {
        return -1;
    }
    head = ring->head;
    tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
    while (head != tail && n < max) {
        out[n++] = ring->io_events[head];
        head = (head + 1) % ring->nr;
    }
    /* The kernel may reuse the slots once head moves past them. */
    __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
    return n;
}

static int laio_reap(LaioState *s, struct io_event *events, int max)
{
    int n = laio_ring_take(s, events, max);

    if (n < 0) {
        struct timespec zero = { 0, 0 };
        do {
            n = io_getevents(s->ioctx, 0, max, events, &zero);
        } while (n == -EINTR);
        if (n < 0) {
            keel_log("linux-aio: io_getevents: %s", g_strerror(-n));
            n = 0;
        }
    }
    return n;
}

static void laio_process_completions(LaioState *s)
{
    struct io_event events[REAP_BATCH];
    int n;

    /* Coroutines woken here run now; what they submit waits for the unplug
     * below and goes out in one io_submit. */
    keel_blk_io_plug();
    while ((n = laio_reap(s, events, REAP_BATCH)) > 0) {
        for (int i = 0; i < n; i++) {
            LaioReq *req = KEEL_CONTAINER_OF(events[i].obj, LaioReq, iocb);
            s->in_flight--;
            laio_complete(req, (long)events[i].res);
        }
    }
    if (s->pending.length) {
        block_defer_call(laio_submit_pending, s);
    }
    keel_blk_io_unplug();
}

static void laio_notifier_cb(KeelEventNotifier *e)
{
    LaioState *s = KEEL_CONTAINER_OF(e, LaioState, notifier);

    keel_event_notifier_test_and_clear(e);
    laio_process_completions(s);
}

static bool laio_poll_cb(void *opaque)
{
    LaioState *s = KEEL_CONTAINER_OF((KeelEventNotifier *)opaque, LaioState, notifier);
    struct aio_ring *ring = (struct aio_ring *)s->ioctx;

    if (ring->magic != AIO_RING_MAGIC) {
        return false;
    }
    return ring->head != __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
}

static void laio_retry_bh(void *opaque)
{
    LaioState *s = opaque;

    s->retry_scheduled = false;
    laio_submit_pending(s);
}

static void laio_submit_pending(void *opaque)
{
    LaioState *s = opaque;
    struct iocb *iocbs[MAX_EVENTS];

    while (s->pending.length && s->in_flight < MAX_EVENTS) {
        unsigned room = MAX_EVENTS - s->in_flight;
        int n = 0, ret;

        for (GList *l = s->pending.head; l && (unsigned)n < room; l = l->next) {
            iocbs[n++] = &((LaioReq *)l->data)->iocb;
        }
        ret = io_submit(s->ioctx, n, iocbs);
        if (ret == -EAGAIN || ret == -EINTR || ret == 0) {
            /* The kernel queue is full: a completion will retry; with none in
             * flight, a bottom half must. */
            if (s->in_flight == 0 && !s->retry_scheduled) {
                s->retry_scheduled = true;
                keel_bh_schedule(s->retry_bh);
            }
            return;
        }
        if (ret < 0) {
            /* The first iocb is bad (EINVAL, EBADF...): fail it, go on. */
            LaioReq *req = g_queue_pop_head_link(&s->pending)->data;
            laio_complete(req, ret);
            continue;
        }
        for (int i = 0; i < ret; i++) {
            g_queue_pop_head_link(&s->pending);
        }
        s->in_flight += ret;
    }
}

static int laio_co_rw(void *state, int fd, bool write, int64_t offset,
                      const struct iovec *iov, int iovcnt)
{
    LaioState *s = state;
    LaioReq req;

    if (write) {
        io_prep_pwritev(&req.iocb, fd, iov, iovcnt, offset);
    } else {
        io_prep_preadv(&req.iocb, fd, iov, iovcnt, offset);
    }
    io_set_eventfd(&req.iocb, keel_event_notifier_get_wfd(&s->notifier));
    req.co = keel_coroutine_self();
    req.ret = -EINPROGRESS;
    req.link.data = &req;
    req.link.prev = req.link.next = NULL;
    g_queue_push_tail_link(&s->pending, &req.link);
    block_defer_call(laio_submit_pending, s);
    while (req.ret == -EINPROGRESS) {
        keel_coroutine_yield();
    }
    return req.ret;
}

static int laio_ctx_new(KeelAioContext *ctx, void **state)
{
    LaioState *s = g_new0(LaioState, 1);
    int ret;

    ret = keel_event_notifier_init(&s->notifier, false);
    if (ret < 0) {
        g_free(s);
        return ret;
    }
    if (!keel_event_notifier_is_eventfd(&s->notifier)) {
        /* io_set_eventfd needs a real eventfd. */
        keel_event_notifier_cleanup(&s->notifier);
        g_free(s);
        return -ENODEV;
    }
    ret = io_setup(MAX_EVENTS, &s->ioctx);
    if (ret < 0) {
        keel_event_notifier_cleanup(&s->notifier);
        g_free(s);
        return ret;
    }
    s->ctx = ctx;
    g_queue_init(&s->pending);
    s->retry_bh = keel_aio_bh_new(ctx, laio_retry_bh, s);
    keel_aio_set_event_notifier(ctx, &s->notifier, laio_notifier_cb, laio_poll_cb);
    *state = s;
    return 0;
}

static void laio_ctx_free(void *state)
{
    LaioState *s = state;

    /* Every backend using it has drained: nothing is pending or in flight. */
    keel_aio_set_event_notifier(s->ctx, &s->notifier, NULL, NULL);
    keel_bh_delete(s->retry_bh);
    io_destroy(s->ioctx);
    keel_event_notifier_cleanup(&s->notifier);
    g_free(s);
}

int linux_aio_probe_kernel(void)
{
    KeelEventNotifier e;
    io_context_t ioctx = 0;
    int ret;

    ret = keel_event_notifier_init(&e, false);
    if (ret < 0) {
        return ret;
    }
    if (!keel_event_notifier_is_eventfd(&e)) {
        keel_event_notifier_cleanup(&e);
        return -ENODEV;
    }
    keel_event_notifier_cleanup(&e);
    ret = io_setup(1, &ioctx);
    if (ret < 0) {
        return ret;
    }
    io_destroy(ioctx);
    return 0;
}

const BlockEngineOps engine_linux_aio_ops = {
    .name = "linux-aio",
    .ctx_new = laio_ctx_new,
    .ctx_free = laio_ctx_free,
    .co_rw = laio_co_rw,
};
