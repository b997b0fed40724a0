/*
 * vmm/virtio-core.h — the device-independent half of a virtio device: its
 * queues as the device sees them, between a transport (vmm/virtio-pci.h,
 * which owns the registers, the rings' addresses and the notification
 * paths) and a device (vmm/virtio-blk.c, which owns only its semantics).
 *
 * Per queue the core owns
 *   - its home AioContext (the main loop's or an iothread's), chosen by the
 *     device at init; everything below runs in that context's home thread;
 *   - the host notifier's handler and io_poll functions in that context (a
 *     kick, or adaptive polling of the avail index, runs a handler pass;
 *     while the context busy-polls the driver is told not to kick);
 *   - the handler pass: kicks off while the device pops, re-checked after
 *     they are back on, and a pass that took a whole ring's worth while the
 *     driver keeps refilling yields to the loop (re-kicks itself);
 *   - the used-ring interrupt decision: completions (virtio_queue_push/
 *     fill/flush) schedule one bottom half per queue, which asks the ring
 *     (EVENT_IDX's used_event, or NO_INTERRUPT) whether the driver wants an
 *     interrupt, so interrupts are coalesced per completion pass;
 *   - stop: in the queue's home thread the handler is removed, the device's
 *     queue_stop hook finishes or fails what is in flight, and the pending
 *     interrupt decision is cancelled, before the transport forgets the ring;
 *   - the count of chains popped and not yet pushed (inflight).
 * Per device it owns the negotiated features, the configuration accessors
 * and NEEDS_RESET: a queue found broken (virtio_queue_set_broken) stops the
 * whole device taking requests, as QEMU's virtio_error does, until reset.
 *
 * A device plugs in through VirtioDeviceOps (kvmtool's virtio_ops, QEMU's
 * VirtioDeviceClass): handle_output per queue, get_config/set_config,
 * start (features known) / queue_stop / reset.  A transport plugs in
 * through VirtioTransportOps (queue and configuration interrupts,
 * NEEDS_RESET); it maps each queue's ring (virtqueue_start on q->vq, while
 * the queue is stopped) and routes kicks to its host notifier (q->notifier,
 * which it may register as a KVM ioeventfd).
 *
 * Ownership: the device embeds (or allocates) the VirtioDevice and calls
 * virtio_device_init/cleanup; the core owns each queue's VirtQueue, host
 * notifier and BH.  Elements popped through virtio_queue_pop belong to the
 * device until pushed (g_free after).
 *
 * Thread rules:
 *   virtio_device_init / _cleanup,
 *   virtio_device_bind_transport                    main thread, not started
 *   virtio_device_start / _stop / _reset,
 *   virtio_device_get_config / _set_config          global mutex held (vCPU
 *                                                   or main thread); stop may
 *                                                   drop and retake it
 *   virtio_queue_pop / _push / _fill / _flush,
 *   the ops' handle_output and queue_stop            the queue's home thread
 *   virtio_queue_set_broken, virtio_device_broken,
 *   virtio_device_config_changed,
 *   virtio_queue_call_in_home                       any thread
 *   virtio_queue_run_in_home                        any thread but the
 *                                                   queue's own callbacks
 */
#ifndef KEEL_VMM_VIRTIO_CORE_H
#define KEEL_VMM_VIRTIO_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compat/event-notifier.h"
#include "loop/aio.h"
#include "vmm/virtqueue.h"

/* The most queues one device has (virtio-blk num-queues= up to this). */
#define VIRTIO_MAX_QUEUES 16

typedef struct VirtioDevice VirtioDevice;
typedef struct VirtioQueue VirtioQueue;

typedef struct VirtioDeviceOps {
    /* Pops (virtio_queue_pop) and handles everything queue @q has, until
     * VQ_POP_EMPTY or the device is broken; returns how many chains it
     * took.  Home thread of @q; never called while @q is stopped or the
     * device broken.  Required. */
    unsigned (*handle_output)(VirtioDevice *vdev, VirtioQueue *q);
    /* Copies @len bytes of device configuration (little endian). */
    void (*get_config)(VirtioDevice *vdev, uint8_t *buf, unsigned len);
    /* The driver wrote @len bytes at @off of the configuration (optional:
     * without it writes are ignored). */
    void (*set_config)(VirtioDevice *vdev, unsigned off, const uint8_t *buf, unsigned len);
    /* DRIVER_OK with @features negotiated, before any handler runs
     * (optional). */
    void (*start)(VirtioDevice *vdev, uint64_t features);
    /* In @q's home thread, its handler removed: let what is in flight on
     * @q complete (or fail it); afterwards nothing may push to @q
     * (optional when the device completes everything synchronously). */
    void (*queue_stop)(VirtioDevice *vdev, VirtioQueue *q);
    /* Device reset, after every queue stopped (optional). */
    void (*reset)(VirtioDevice *vdev);
} VirtioDeviceOps;

typedef struct VirtioTransportOps {
    /* Interrupt for queue @q (the core decided the driver wants one). */
    void (*notify_queue)(void *transport, int q);
    /* Show NEEDS_RESET and send a configuration interrupt. */
    void (*set_needs_reset)(void *transport);
    /* The configuration changed: bump config_generation, interrupt. */
    void (*config_changed)(void *transport);
} VirtioTransportOps;

typedef struct VirtioQueueStats {
    uint64_t handler_passes;        /* passes that ran handle_output */
    uint64_t batches_max;           /* most chains one pass took */
    uint64_t poll_hits;             /* passes started by polling, not a kick */
    uint64_t irqs, irqs_suppressed; /* interrupt decisions */
} VirtioQueueStats;

struct VirtioQueue {
    VirtioDevice *vdev;
    int index;
    KeelAioContext *ctx;            /* home: handler, completions, BH */
    const char *iothread_id;        /* for messages; NULL: main loop */
    /* The ring: mapped by the transport while stopped, then the home
     * thread's.  Kicks: the transport sets the notifier (or KVM does). */
    VirtQueue vq;
    KeelEventNotifier notifier;
    bool notifier_ok;
    /* Home thread. */
    KeelBH *notify_bh;
    bool running;                   /* handler attached, ring ours */
    unsigned inflight;              /* popped, not yet pushed */
    VirtioQueueStats stats;
};

struct VirtioDevice {
    const char *name;               /* "virtio-blk0", for messages (borrowed) */
    const VirtioDeviceOps *ops;
    void *opaque;                   /* the device's */
    int num_queues;
    VirtioQueue queues[VIRTIO_MAX_QUEUES];
    const VirtioTransportOps *transport_ops;
    void *transport;
    uint64_t features;              /* negotiated; set by start, read by handlers */
    bool started;                   /* global mutex */
    bool broken;                    /* atomic: NEEDS_RESET, take no requests */
    uint64_t needs_reset;           /* atomic: times a queue was found broken */
};

/* Sets up @vdev with @num_queues (1..VIRTIO_MAX_QUEUES) queues, queue q
 * living in @ctxs[q] (@iothread_ids[q] names it, or NULL / @iothread_ids
 * NULL: the main loop).  Returns 0 or a negative errno (bad arguments,
 * no notifier). */
int virtio_device_init(VirtioDevice *vdev, const char *name, const VirtioDeviceOps *ops,
                       void *opaque, int num_queues, KeelAioContext *const *ctxs,
                       const char *const *iothread_ids);
/* Frees what init made.  Stopped first (virtio_device_stop). */
void virtio_device_cleanup(VirtioDevice *vdev);

void virtio_device_bind_transport(VirtioDevice *vdev, const VirtioTransportOps *ops,
                                  void *transport);

/* DRIVER_OK: the transport started the rings it could (virtqueue_start);
 * hands each started queue to its home thread and runs a first pass there
 * for what the driver queued before. */
void virtio_device_start(VirtioDevice *vdev, uint64_t features);
/* Quiesces every queue in its home thread (see the top); afterwards no
 * handler runs and nothing is in flight.  No-op when not started. */
void virtio_device_stop(VirtioDevice *vdev);
/* Device reset: stop, the device's reset hook, NEEDS_RESET cleared. */
void virtio_device_reset(VirtioDevice *vdev);

void virtio_device_get_config(VirtioDevice *vdev, uint8_t *buf, unsigned len);
void virtio_device_set_config(VirtioDevice *vdev, unsigned off, const uint8_t *buf,
                              unsigned len);
/* For the device: its configuration changed (e.g. a resize). */
void virtio_device_config_changed(VirtioDevice *vdev);

bool virtio_device_broken(VirtioDevice *vdev);
static inline bool virtio_device_has_feature(const VirtioDevice *vdev, unsigned bit)
{
    return (vdev->features >> bit) & 1;
}

static inline VirtioQueue *virtio_device_queue(VirtioDevice *vdev, int q)
{
    return &vdev->queues[q];
}

/* The whole device needs a reset because of queue @q (@why is logged, the
 * first few times).  No queue takes requests afterwards. */
void virtio_queue_set_broken(VirtioQueue *q, const char *why);

/* virtqueue_pop on @q's ring, counting the element as in flight (for
 * VQ_POP_OK and VQ_POP_BAD_CHAIN). */
VirtQueuePopResult virtio_queue_pop(VirtioQueue *q, size_t elem_size, void **out);
/* Puts @elem on the used ring (@len bytes written) and publishes it; the
 * interrupt decision follows in the queue's BH. */
void virtio_queue_push(VirtioQueue *q, const VirtQueueElement *elem, uint32_t len);
/* The same in two steps, for a group of completions published at once. */
void virtio_queue_fill(VirtioQueue *q, const VirtQueueElement *elem, uint32_t len);
void virtio_queue_flush(VirtioQueue *q);

/* Whether the caller runs in @q's home thread. */
bool virtio_queue_in_home(VirtioQueue *q);
/* Runs @fn(@opaque) in @q's home thread: now when the caller is there,
 * else from a one-shot BH (does not wait).  For completions that arrive in
 * another thread (a block backend whose home is another context). */
void virtio_queue_call_in_home(VirtioQueue *q, void (*fn)(void *), void *opaque);
/* Runs @fn(@opaque) in @q's home thread and waits.  A caller holding the
 * global mutex releases it meanwhile when the queue lives in the main
 * loop (which needs it to dispatch). */
void virtio_queue_run_in_home(VirtioQueue *q, void (*fn)(void *), void *opaque);

#endif
