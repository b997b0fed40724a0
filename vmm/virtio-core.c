/*
 * The device-independent virtio core; see virtio-core.h for the contract.
 *
 * Threads: a queue's handler, io_poll functions, notify BH and stop all run
 * in its home thread, so its state needs no lock; the hand-over happens in
 * virtio_device_start (attach: the home thread starts running the handler)
 * and virtio_device_stop (the teardown runs in the home thread itself).
 */
#include "config.h"

#include "vmm/virtio-core.h"
#include "compat/atomic.h"
#include "compat/osdep.h"
#include "loop/iothread.h"
#include "loop/main-loop.h"

#include <errno.h>
#include <glib.h>
#include <string.h>

/* A guest can break its queues at will: say so, but not endlessly. */
#define BROKEN_LOG_LIMIT 10

/* ---- the interrupt decision ------------------------------------------------------ */

static void notify_bh(void *opaque)
{
    VirtioQueue *q = opaque;
    VirtioDevice *vdev = q->vdev;

    if (virtqueue_should_notify(&q->vq)) {
        q->stats.irqs++;
        vdev->transport_ops->notify_queue(vdev->transport, q->index);
    } else {
        q->stats.irqs_suppressed++;
    }
}

void virtio_queue_fill(VirtioQueue *q, const VirtQueueElement *elem, uint32_t len)
{
    virtqueue_fill(&q->vq, elem, len);
    q->inflight--;
}

void virtio_queue_flush(VirtioQueue *q)
{
    virtqueue_flush(&q->vq);
    keel_bh_schedule(q->notify_bh);
}

void virtio_queue_push(VirtioQueue *q, const VirtQueueElement *elem, uint32_t len)
{
    virtio_queue_fill(q, elem, len);
    virtio_queue_flush(q);
}

VirtQueuePopResult virtio_queue_pop(VirtioQueue *q, size_t elem_size, void **out)
{
    VirtQueuePopResult r = virtqueue_pop(&q->vq, elem_size, out);

    if (r == VQ_POP_OK || r == VQ_POP_BAD_CHAIN) {
        q->inflight++;
    }
    return r;
}

/* ---- NEEDS_RESET ------------------------------------------------------------------ */

bool virtio_device_broken(VirtioDevice *vdev)
{
    return keel_atomic_load_acquire(&vdev->broken);
}

void virtio_queue_set_broken(VirtioQueue *q, const char *why)
{
    VirtioDevice *vdev = q->vdev;
    uint64_t n;

    keel_atomic_store_release(&vdev->broken, true);
    n = keel_atomic_add_fetch(&vdev->needs_reset, 1);
    if (n <= BROKEN_LOG_LIMIT) {
        keel_log("%s: queue %d: %s: device needs reset%s", vdev->name, q->index, why,
                 n == BROKEN_LOG_LIMIT ? " (further ones not logged)" : "");
    }
    if (vdev->transport_ops) {
        vdev->transport_ops->set_needs_reset(vdev->transport);
    }
}

/* ---- handler passes ---------------------------------------------------------------- */

/* One pass: everything the driver made available, as the device takes it. */
static void queue_pass(VirtioQueue *q)
{
    VirtioDevice *vdev = q->vdev;
    VirtQueue *vq = &q->vq;
    uint64_t batch = 0;
    /* Kicks off while the device pops, unless busy-polling already turned
     * them off (on_poll_begin): then they stay off until on_poll_end. */
    bool toggle_kicks = vq->notification;

    if (!q->running || virtio_device_broken(vdev)) {
        return;
    }
    q->stats.handler_passes++;
    do {
        if (toggle_kicks) {
            virtqueue_set_notification(vq, false);
        }
        batch += vdev->ops->handle_output(vdev, q);
        if (virtio_device_broken(vdev)) {
            break;
        }
        if (toggle_kicks) {
            virtqueue_set_notification(vq, true);
        }
        if (batch >= vq->size && virtqueue_avail_pending(vq)) {
            /* A driver that keeps refilling the ring must not keep this
             * thread to itself: finish the pass, come back next iteration. */
            keel_event_notifier_set(&q->notifier);
            break;
        }
    } while (virtqueue_avail_pending(vq));
    if (batch > q->stats.batches_max) {
        q->stats.batches_max = batch;
    }
}

static VirtioQueue *queue_of_notifier(void *notifier)
{
    return KEEL_CONTAINER_OF(notifier, VirtioQueue, notifier);
}

static void on_kick(KeelEventNotifier *e)
{
    keel_event_notifier_test_and_clear(e);
    queue_pass(queue_of_notifier(e));
}

/* Adaptive polling: new requests without waiting for the kick. */
static bool on_kick_poll(void *opaque)
{
    VirtioQueue *q = queue_of_notifier(opaque);

    if (q->running && !virtio_device_broken(q->vdev) && virtqueue_avail_pending(&q->vq)) {
        q->stats.poll_hits++;
        return true;
    }
    return false;
}

/* Found by polling: no kick to clear (the driver was told not to kick). */
static void on_kick_poll_ready(KeelEventNotifier *e)
{
    queue_pass(queue_of_notifier(e));
}

/* While the context busy-polls the ring, the driver need not kick (QEMU does
 * the same): each kick it saves is a guest exit. */
static void on_poll_begin(KeelEventNotifier *e)
{
    virtqueue_set_notification(&queue_of_notifier(e)->vq, false);
}

/* The context will sleep: kicks back on (the loop then polls once more for
 * what was queued while they were off). */
static void on_poll_end(KeelEventNotifier *e)
{
    virtqueue_set_notification(&queue_of_notifier(e)->vq, true);
}

static const KeelAioPollOps kick_poll_ops = {
    .poll = on_kick_poll,
    .ready = on_kick_poll_ready,
    .begin = on_poll_begin,
    .end = on_poll_end,
};

/* ---- homes ------------------------------------------------------------------------ */

bool virtio_queue_in_home(VirtioQueue *q)
{
    return keel_aio_context_in_home_thread(q->ctx);
}

void virtio_queue_call_in_home(VirtioQueue *q, void (*fn)(void *), void *opaque)
{
    if (virtio_queue_in_home(q)) {
        fn(opaque);
    } else {
        keel_aio_bh_schedule_oneshot(q->ctx, fn, opaque);
    }
}

/* A main-loop queue reset from a vCPU thread: the main loop needs the
 * global mutex to dispatch, so release it while waiting (the vCPU is inside
 * a device access; nothing else of this device runs meanwhile). */
void virtio_queue_run_in_home(VirtioQueue *q, void (*fn)(void *), void *opaque)
{
    bool drop;

    if (virtio_queue_in_home(q)) {
        fn(opaque);
        return;
    }
    drop = q->ctx == keel_main_aio_context() && keel_global_mutex_held();
    if (drop) {
        keel_global_mutex_unlock();
    }
    keel_aio_run_in_context_wait(q->ctx, fn, opaque);
    if (drop) {
        keel_global_mutex_lock();
    }
}

/* ---- start, stop, reset -------------------------------------------------------------- */

void virtio_device_start(VirtioDevice *vdev, uint64_t features)
{
    vdev->features = features;
    keel_atomic_store_release(&vdev->broken, false);
    if (vdev->ops->start) {
        vdev->ops->start(vdev, features);
    }
    vdev->started = true;
    for (int i = 0; i < vdev->num_queues; i++) {
        VirtioQueue *q = &vdev->queues[i];

        if (!virtqueue_started(&q->vq)) {
            continue;
        }
        /* The home thread sees running once it sees the handler. */
        q->running = true;
        keel_aio_set_event_notifier_poll(q->ctx, &q->notifier, on_kick, &kick_poll_ops);
        /* Whatever the driver queued before DRIVER_OK. */
        keel_event_notifier_set(&q->notifier);
    }
}

/* In the home thread: nothing of this queue runs after it returns. */
static void queue_stop_in_home(void *opaque)
{
    VirtioQueue *q = opaque;
    VirtioDevice *vdev = q->vdev;

    keel_aio_set_event_notifier(q->ctx, &q->notifier, NULL, NULL);
    q->running = false;
    if (vdev->ops->queue_stop) {
        vdev->ops->queue_stop(vdev, q);
    }
    /* The completions above scheduled it; the driver waits for the reset
     * to finish and expects no interrupt from this ring now. */
    keel_bh_cancel(q->notify_bh);
}

void virtio_device_stop(VirtioDevice *vdev)
{
    if (!vdev->started) {
        return;
    }
    for (int i = 0; i < vdev->num_queues; i++) {
        VirtioQueue *q = &vdev->queues[i];

        if (q->running) {
            virtio_queue_run_in_home(q, queue_stop_in_home, q);
        }
    }
    vdev->started = false;
}

void virtio_device_reset(VirtioDevice *vdev)
{
    virtio_device_stop(vdev);
    if (vdev->ops->reset) {
        vdev->ops->reset(vdev);
    }
    vdev->features = 0;
    keel_atomic_store_release(&vdev->broken, false);
}

/* ---- configuration ------------------------------------------------------------------- */

void virtio_device_get_config(VirtioDevice *vdev, uint8_t *buf, unsigned len)
{
    memset(buf, 0, len);
    if (vdev->ops->get_config) {
        vdev->ops->get_config(vdev, buf, len);
    }
}

void virtio_device_set_config(VirtioDevice *vdev, unsigned off, const uint8_t *buf,
                              unsigned len)
{
    if (vdev->ops->set_config) {
        vdev->ops->set_config(vdev, off, buf, len);
    }
}

void virtio_device_config_changed(VirtioDevice *vdev)
{
    if (vdev->transport_ops) {
        vdev->transport_ops->config_changed(vdev->transport);
    }
}

/* ---- lifetime ------------------------------------------------------------------------ */

int virtio_device_init(VirtioDevice *vdev, const char *name, const VirtioDeviceOps *ops,
                       void *opaque, int num_queues, KeelAioContext *const *ctxs,
                       const char *const *iothread_ids)
{
    int r;

    if (num_queues < 1 || num_queues > VIRTIO_MAX_QUEUES || !ops || !ops->handle_output) {
        return -EINVAL;
    }
    memset(vdev, 0, sizeof(*vdev));
    vdev->name = name;
    vdev->ops = ops;
    vdev->opaque = opaque;
    vdev->num_queues = num_queues;
    for (int i = 0; i < num_queues; i++) {
        VirtioQueue *q = &vdev->queues[i];

        q->vdev = vdev;
        q->index = i;
        q->ctx = ctxs[i];
        q->iothread_id = iothread_ids ? iothread_ids[i] : NULL;
        r = keel_event_notifier_init(&q->notifier, false);
        if (r < 0) {
            virtio_device_cleanup(vdev);
            return r;
        }
        q->notifier_ok = true;
        q->notify_bh = keel_aio_bh_new(q->ctx, notify_bh, q);
    }
    return 0;
}

void virtio_device_cleanup(VirtioDevice *vdev)
{
    virtio_device_stop(vdev);
    for (int i = 0; i < vdev->num_queues; i++) {
        VirtioQueue *q = &vdev->queues[i];

        virtqueue_free(&q->vq);
        if (q->notify_bh) {
            keel_bh_delete(q->notify_bh);
            q->notify_bh = NULL;
        }
        if (q->notifier_ok) {
            keel_event_notifier_cleanup(&q->notifier);
            q->notifier_ok = false;
        }
    }
}

void virtio_device_bind_transport(VirtioDevice *vdev, const VirtioTransportOps *ops,
                                  void *transport)
{
    vdev->transport_ops = ops;
    vdev->transport = transport;
}
