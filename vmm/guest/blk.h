/*
 * vmm/guest/blk.h — the guest's virtio-blk driver: device set-up, request
 * slots, submission and completion.  Used by workload.c; runs at CPL3.
 *
 * Requests live in slots, each owning its descriptors (a fixed run of
 * `stride` ring descriptors, or one ring descriptor plus an indirect table
 * when the queue is too small for iodepth chains), its header and status
 * byte, and a data buffer chosen by the caller.  A used element's id (the
 * chain head) maps back to its slot, so nothing is allocated per request.
 *
 * Waiting: blk_wait() polls the used ring (mode poll: interrupts
 * suppressed) or sleeps in the kernel until the device's INTx arrives
 * (mode irq: a 100 Hz PIT tick bounds each sleep so timeouts still work).
 *
 * Several queues (VIRTIO_BLK_F_MQ, blk_open with want_queues > 1): each
 * queue has its own descriptors, slots and lock.  Several CPUs may share a
 * queue: publishing (vq_add, kick) and reaping the used ring happen under
 * the queue's lock, and a CPU that reaps marks each completed slot done,
 * so the CPU owning the slot finds it (blk_complete_slots) whichever CPU
 * took it off the ring.  The device set-up and the single-queue calls
 * (blk_complete, blk_wait, blk_sync) are the BSP's, before or after the
 * CPUs' work.
 */
#ifndef KEEL_GUEST_BLK_H
#define KEEL_GUEST_BLK_H

#include "vmm/guest/virtio.h"

#define BLK_MAX_SLOTS 256
#define BLK_MAX_QUEUES 16
#define BLK_SECTOR 512
#define VIRTIO_BLK_F_MQ 12
#define VBLK_CFG_NUM_QUEUES 34

struct blk_slot {
    struct virtio_blk_outhdr *hdr;
    volatile uint8_t *status;
    struct vring_desc *table;        /* indirect table, or NULL */
    void *data;
    uint32_t len;
    uint32_t type;
    uint16_t head;
    uint16_t queue;
    bool busy;
    volatile bool done;              /* reaped off the used ring, not yet taken */
    /* workload bookkeeping */
    uint64_t block;
    uint32_t gen;
    bool verify;
};

struct blk_dev {
    struct virtio_pci_dev pci;
    struct virtqueue vqs[BLK_MAX_QUEUES];
    unsigned nqueues;                /* set up: 1, or with MQ up to want_queues */
    unsigned want_queues;
    unsigned num_queues;             /* the device's num_queues (1 without MQ) */
    volatile uint32_t lock[BLK_MAX_QUEUES];
    unsigned queue_slots[BLK_MAX_QUEUES];   /* slots per queue */
    uint64_t wanted_features;
    unsigned queue_size_max;
    uint64_t capacity;               /* 512-byte sectors */
    uint32_t blk_size, size_max, seg_max;
    uint32_t max_discard_sectors, max_write_zeroes_sectors;
    bool ro, indirect, irq_mode;
    bool msix;                       /* irq_mode by MSI-X: queue q on vector q */
    /* slots */
    struct blk_slot slot[BLK_MAX_SLOTS];
    unsigned nslots, stride, max_segs;
    uint16_t head_to_slot[BLK_MAX_QUEUES][1024];
    uint64_t irqs_at_start;
    uint64_t irq_waits;             /* times blk_wait slept for an interrupt */
};

/* Finds device #index, negotiates (wanted features ∩ offered), reads the
 * config and sets up queue 0 with room for `nslots` requests of up to
 * `max_len` data bytes each.  irq_mode: route INTx through the PIC. */
bool blk_init(struct blk_dev *b, unsigned index, uint64_t wanted_features,
              unsigned nslots, uint32_t max_len, bool irq_mode);
/* blk_init in two steps, for several queues: blk_open negotiates (asking
 * for VIRTIO_BLK_F_MQ when want_queues > 1) and sets up
 * min(want_queues, num_queues) queues; then the caller, knowing nqueues,
 * gives each queue its number of slots.  Slots are numbered queue by
 * queue: queue 0's first. */
bool blk_open(struct blk_dev *b, unsigned index, uint64_t wanted_features,
              unsigned want_queues, bool irq_mode, bool msix);
/* MSI-X: queue q's interrupt (IDT vector MSI_VECTOR_BASE + q) goes to the
 * local APIC `apic_id`: the CPU that uses the queue. */
void blk_route_irq(struct blk_dev *b, unsigned q, uint32_t apic_id);
bool blk_setup_slots(struct blk_dev *b, const unsigned *queue_slots, uint32_t max_len);
/* The first slot of queue q. */
unsigned blk_first_slot(const struct blk_dev *b, unsigned q);
/* Device reset and the same set-up again (after NEEDS_RESET). */
bool blk_reinit(struct blk_dev *b);
void blk_print_info(struct blk_dev *b);

/* Builds slot s's chain for one request and publishes it (no kick).
 * data/len: the payload (NULL/0 for FLUSH). */
void blk_submit(struct blk_dev *b, unsigned s, uint32_t type, uint64_t sector,
                void *data, uint32_t len);
/* Pops one completion of queue 0: the slot index, or -1 if none. */
int blk_complete(struct blk_dev *b);
/* Notifies queue q's device side (under the queue's lock). */
void blk_kick(struct blk_dev *b, unsigned q);
/* Reaps the queues in `queue_mask` and returns one completed slot of the
 * list slots[0..n) (now not busy), or -1.  Any CPU. */
int blk_complete_slots(struct blk_dev *b, uint32_t queue_mask, const uint16_t *slots,
                       unsigned n);
/* Waits until blk_complete_slots may have something or `deadline` (TSC)
 * passes: spinning, or (sleep: MSI-X, and every queue in the mask sends
 * its interrupt to this CPU) in SYS_WAIT_IRQ after asking each queue for
 * an interrupt; *sleeps counts the sleeps.  A watchdog tick (the LAPIC
 * timer) bounds each sleep. */
bool blk_wait_slots(struct blk_dev *b, uint32_t queue_mask, const uint16_t *slots,
                    unsigned n, uint64_t deadline, unsigned cpu, bool sleep,
                    uint64_t *sleeps);
/* Waits until a completion is ready or `deadline` (TSC) passes. */
bool blk_wait(struct blk_dev *b, uint64_t deadline);
/* One request start to finish on slot s; returns the status byte, or -1 on
 * timeout. */
int blk_sync(struct blk_dev *b, unsigned s, uint32_t type, uint64_t sector,
             void *data, uint32_t len);
/* Device interrupts since blk_open: INTx, or all queues' MSI-X vectors. */
uint64_t blk_device_irqs(struct blk_dev *b);
/* mode irq (INTx): lets a device interrupt that is still pending be taken,
 * for up to `ticks` watchdog ticks, and returns blk_device_irqs().  A completion
 * that lands just after a watchdog tick woke the guest is polled from the
 * used ring while interrupts are off, so its (level) interrupt stays
 * pending; it has not been lost. */
uint64_t blk_settle_irqs(struct blk_dev *b, unsigned ticks);

#endif
