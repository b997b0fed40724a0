/*
 * vmm/guest/virtio-blk.c — the virtio-blk driver (see blk.h).  Runs at
 * CPL3: the hot path (build chain, publish, kick, reap) is native code plus
 * one MMIO write per kick.
 */
#include "config.h"

#include "vmm/guest/blk.h"

#define QUEUE_SIZE_MAX 1024
#define WATCHDOG_HZ 100

static bool setup_device(struct blk_dev *b)
{
    struct virtio_pci_dev *d = &b->pci;

    if (!virtio_reset(d) || !virtio_negotiate(d, b->wanted_features)) {
        return false;
    }
    uint64_t f = d->features;
    b->capacity = virtio_cfg64(d, VBLK_CFG_CAPACITY);
    b->blk_size = (f & FEATURE(VIRTIO_BLK_F_BLK_SIZE)) ?
                  virtio_cfg32(d, VBLK_CFG_BLK_SIZE) : BLK_SECTOR;
    b->size_max = (f & FEATURE(VIRTIO_BLK_F_SIZE_MAX)) ?
                  virtio_cfg32(d, VBLK_CFG_SIZE_MAX) : 0;
    b->seg_max = (f & FEATURE(VIRTIO_BLK_F_SEG_MAX)) ?
                 virtio_cfg32(d, VBLK_CFG_SEG_MAX) : 0;
    b->max_discard_sectors = (f & FEATURE(VIRTIO_BLK_F_DISCARD)) ?
                             virtio_cfg32(d, VBLK_CFG_MAX_DISCARD_SECTORS) : 0;
    b->max_write_zeroes_sectors = (f & FEATURE(VIRTIO_BLK_F_WRITE_ZEROES)) ?
                                  virtio_cfg32(d, VBLK_CFG_MAX_WRITE_ZEROES_SECTORS) : 0;
    b->ro = !!(f & FEATURE(VIRTIO_BLK_F_RO));
    if (!b->blk_size || b->blk_size % BLK_SECTOR) {
        b->blk_size = BLK_SECTOR;
    }
    b->num_queues = (f & FEATURE(VIRTIO_BLK_F_MQ)) ?
                    *(volatile uint16_t *)(d->device_cfg + VBLK_CFG_NUM_QUEUES) : 1;
    if (!b->num_queues) {
        b->num_queues = 1;
    }
    b->nqueues = b->want_queues < b->num_queues ? b->want_queues : b->num_queues;
    if (b->nqueues > BLK_MAX_QUEUES) {
        b->nqueues = BLK_MAX_QUEUES;
    }
    if (b->msix && !virtio_msix_enable(d, b->nqueues)) {
        virtio_set_status(d, VIRTIO_STATUS_FAILED);
        return false;
    }
    for (unsigned q = 0; q < b->nqueues; q++) {
        if (!vq_init(&b->vqs[q], d, q, QUEUE_SIZE_MAX)) {
            virtio_set_status(d, VIRTIO_STATUS_FAILED);
            return false;
        }
    }
    virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                         VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    return true;
}

/* Descriptor layout for the slots: direct chains of `stride` descriptors
 * when every queue's ring has room for all of its slots, else one indirect
 * descriptor per slot.  Data is cut into segments of at most size_max
 * bytes.  queue_slots[q]: the slots wanted on queue q (lowered if the
 * queue cannot hold them). */
bool blk_setup_slots(struct blk_dev *b, const unsigned *queue_slots, uint32_t max_len)
{
    uint32_t seg = b->size_max ? b->size_max : max_len;
    unsigned want[BLK_MAX_QUEUES], total = 0;

    if (!seg) {
        seg = 4096;
    }
    b->max_segs = max_len ? (max_len + seg - 1) / seg : 1;
    if (b->seg_max && b->max_segs > b->seg_max) {
        kprintf("KEEL-GUEST: a %u-byte request needs %u segments; the device "
                "takes %u\n", max_len, b->max_segs, b->seg_max);
        return false;
    }
    b->stride = 2 + b->max_segs;
    b->indirect = false;
    for (unsigned q = 0; q < b->nqueues; q++) {
        want[q] = queue_slots[q];
        if (want[q] * b->stride > b->vqs[q].size) {
            b->indirect |= !!(b->pci.features & FEATURE(VIRTIO_F_INDIRECT_DESC));
        }
    }
    for (unsigned q = 0; q < b->nqueues; q++) {
        unsigned fit = b->indirect ? b->vqs[q].size : b->vqs[q].size / b->stride;
        if (want[q] > fit) {
            kprintf("KEEL-GUEST: queue %u of size %u fits %u requests of %u "
                    "descriptors; iodepth lowered from %u\n", q, b->vqs[q].size, fit,
                    b->indirect ? 1 : b->stride, want[q]);
            want[q] = fit;
        }
        if (!want[q] || total + want[q] > BLK_MAX_SLOTS) {
            return false;
        }
        b->queue_slots[q] = want[q];
        total += want[q];
    }
    b->nslots = total;
    /* Header (16 bytes) and status (1 byte) of every slot in one area. */
    uint8_t *small = guest_alloc(32ull * total, 4096);
    if (!small) {
        return false;
    }
    memset(small, 0, 32ull * total);
    for (unsigned q = 0, s = 0; q < b->nqueues; q++) {
        for (unsigned i = 0; i < b->queue_slots[q]; i++, s++) {
            struct blk_slot *sl = &b->slot[s];
            memset(sl, 0, sizeof(*sl));
            sl->hdr = (struct virtio_blk_outhdr *)(small + 32 * s);
            sl->status = small + 32 * s + 16;
            sl->queue = (uint16_t)q;
            sl->head = b->indirect ? i : i * b->stride;
            if (b->indirect) {
                sl->table = guest_alloc(16ull * b->stride, 16);
                if (!sl->table) {
                    return false;
                }
            }
            b->head_to_slot[q][sl->head] = s;
        }
    }
    return true;
}

unsigned blk_first_slot(const struct blk_dev *b, unsigned q)
{
    unsigned s = 0;

    for (unsigned i = 0; i < q && i < b->nqueues; i++) {
        s += b->queue_slots[i];
    }
    return s;
}

static void setup_irq(struct blk_dev *b)
{
    unsigned irq = b->pci.irq;

    pic_init();
    syscall3(SYS_SET_IRQ_ACK, irq, (uint64_t)(uintptr_t)b->pci.isr, 0);
    pic_unmask(irq, true);              /* PCI INTx is level-triggered */
    pit_start_periodic(WATCHDOG_HZ);
    pic_unmask(0, false);
}

bool blk_open(struct blk_dev *b, unsigned index, uint64_t wanted_features,
              unsigned want_queues, bool irq_mode, bool msix)
{
    memset(b, 0, sizeof(*b));
    b->msix = irq_mode && msix;
    b->want_queues = want_queues ? want_queues : 1;
    b->wanted_features = wanted_features |
                         (b->want_queues > 1 ? FEATURE(VIRTIO_BLK_F_MQ) : 0);
    b->irq_mode = irq_mode;
    if (!virtio_pci_find(&b->pci, index) || !setup_device(b)) {
        return false;
    }
    if (irq_mode && !b->msix) {
        if (b->pci.irq == 0 || b->pci.irq >= 16) {
            kprintf("KEEL-GUEST: mode=irq needs a legacy INTx line (got %u)\n",
                    b->pci.irq);
            return false;
        }
        setup_irq(b);
    }
    if (b->msix) {
        lapic_timer_periodic(10000);     /* the watchdog tick: 100 Hz */
    }
    b->irqs_at_start = 0;                /* blk_device_irqs subtracts it */
    b->irqs_at_start = blk_device_irqs(b);
    return true;
}

void blk_route_irq(struct blk_dev *b, unsigned q, uint32_t apic_id)
{
    virtio_msix_route(&b->pci, q, apic_id, MSI_VECTOR_BASE + q);
}

bool blk_init(struct blk_dev *b, unsigned index, uint64_t wanted_features,
              unsigned nslots, uint32_t max_len, bool irq_mode)
{
    return blk_open(b, index, wanted_features, 1, irq_mode, false) &&
           blk_setup_slots(b, &nslots, max_len);
}

bool blk_reinit(struct blk_dev *b)
{
    for (unsigned s = 0; s < b->nslots; s++) {
        b->slot[s].busy = false;
        b->slot[s].done = false;
    }
    return setup_device(b);
}

void blk_print_info(struct blk_dev *b)
{
    uint64_t f = b->pci.features;

    kprintf("KEEL-GUEST: blk capacity=%lu sectors (%lu MiB) blk_size=%u size_max=%u "
            "seg_max=%u queue=%u slots=%u%s features=0x%lx offered=0x%lx:%s%s%s%s%s%s%s%s\n",
            b->capacity, b->capacity >> 11, b->blk_size, b->size_max, b->seg_max,
            b->vqs[0].size, b->nslots, b->indirect ? " (indirect)" : "", f,
            b->pci.device_features,
            (f & FEATURE(VIRTIO_BLK_F_MQ)) ? " mq" : "",
            (f & FEATURE(VIRTIO_BLK_F_FLUSH)) ? " flush" : "",
            (f & FEATURE(VIRTIO_BLK_F_DISCARD)) ? " discard" : "",
            (f & FEATURE(VIRTIO_BLK_F_WRITE_ZEROES)) ? " write-zeroes" : "",
            (f & FEATURE(VIRTIO_BLK_F_RO)) ? " ro" : "",
            (f & FEATURE(VIRTIO_F_EVENT_IDX)) ? " event-idx" : "",
            (f & FEATURE(VIRTIO_F_INDIRECT_DESC)) ? " indirect-desc" : "",
            b->irq_mode ? " mode=irq" : " mode=poll");
}

static void put_desc(struct vring_desc *d, uint64_t addr, uint32_t len,
                     uint16_t flags, uint16_t next)
{
    d->addr = addr;
    d->len = len;
    d->flags = flags;
    d->next = next;
}

void blk_submit(struct blk_dev *b, unsigned s, uint32_t type, uint64_t sector,
                void *data, uint32_t len)
{
    struct blk_slot *sl = &b->slot[s];
    /* Direct: the slot's run of ring descriptors, linked by index.
     * Indirect: the slot's table, linked by table index. */
    struct virtqueue *vq = &b->vqs[sl->queue];
    struct vring_desc *d = sl->table ? sl->table : &vq->desc[sl->head];
    uint16_t base = sl->table ? 0 : sl->head;
    uint32_t seg = b->size_max ? b->size_max : len;
    uint16_t data_flags = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID ?
                          VRING_DESC_F_WRITE : 0;
    unsigned n = 0;

    sl->hdr->type = type;
    sl->hdr->reserved = 0;
    sl->hdr->sector = sector;
    *sl->status = 0xff;                  /* "untouched" until the device writes */
    sl->type = type;
    sl->data = data;
    sl->len = len;
    sl->busy = true;
    sl->done = false;

    put_desc(&d[n], (uint64_t)(uintptr_t)sl->hdr, sizeof(*sl->hdr),
             VRING_DESC_F_NEXT, base + n + 1);
    n++;
    for (uint32_t done = 0; done < len; n++) {
        uint32_t chunk = len - done < seg ? len - done : seg;
        put_desc(&d[n], (uint64_t)(uintptr_t)data + done, chunk,
                 data_flags | VRING_DESC_F_NEXT, base + n + 1);
        done += chunk;
    }
    put_desc(&d[n], (uint64_t)(uintptr_t)sl->status, 1, VRING_DESC_F_WRITE, 0);
    n++;
    if (sl->table) {
        put_desc(&vq->desc[sl->head], (uint64_t)(uintptr_t)sl->table,
                 n * sizeof(struct vring_desc), VRING_DESC_F_INDIRECT, 0);
    }
    spin_lock(&b->lock[sl->queue]);
    vq_add(vq, sl->head);
    spin_unlock(&b->lock[sl->queue]);
}

void blk_kick(struct blk_dev *b, unsigned q)
{
    spin_lock(&b->lock[q]);
    vq_kick(&b->vqs[q]);
    spin_unlock(&b->lock[q]);
}

/* Takes queue q's used entries off the ring, marking their slots done. */
static void reap(struct blk_dev *b, unsigned q)
{
    struct virtqueue *vq = &b->vqs[q];
    uint32_t id, len;

    spin_lock(&b->lock[q]);
    while (vq_pop_used(vq, &id, &len)) {
        if (id >= vq->size || id >= ARRAY_SIZE(b->head_to_slot[q])) {
            kprintf("KEEL-GUEST: device returned a bad used id %u on queue %u\n", id, q);
            continue;
        }
        b->slot[b->head_to_slot[q][id]].done = true;
    }
    if (!b->irq_mode) {
        vq_disable_irq(vq);
    }
    spin_unlock(&b->lock[q]);
}

int blk_complete_slots(struct blk_dev *b, uint32_t queue_mask, const uint16_t *slots,
                       unsigned n)
{
    for (unsigned q = 0; q < b->nqueues; q++) {
        if ((queue_mask & (1u << q)) && vq_has_used(&b->vqs[q])) {
            reap(b, q);
        }
    }
    for (unsigned i = 0; i < n; i++) {
        struct blk_slot *sl = &b->slot[slots[i]];
        if (sl->busy && sl->done) {
            barrier();                   /* the status byte after the flag */
            sl->done = false;
            sl->busy = false;
            return slots[i];
        }
    }
    return -1;
}

static bool ask_for_interrupts(struct blk_dev *b, uint32_t queue_mask)
{
    bool idle = true;

    for (unsigned q = 0; q < b->nqueues; q++) {
        if (queue_mask & (1u << q)) {
            spin_lock(&b->lock[q]);
            idle &= vq_enable_irq(&b->vqs[q]);
            spin_unlock(&b->lock[q]);
        }
    }
    return idle;
}

bool blk_wait_slots(struct blk_dev *b, uint32_t queue_mask, const uint16_t *slots,
                    unsigned n, uint64_t deadline, unsigned cpu, bool sleep,
                    uint64_t *sleeps)
{
    for (;;) {
        /* What arrives after this read stays pending (IF=0 at CPL3) and
         * ends the sleep at once. */
        uint64_t seen = irq_state.cpu_total[cpu];
        for (unsigned q = 0; q < b->nqueues; q++) {
            if ((queue_mask & (1u << q)) && vq_has_used(&b->vqs[q])) {
                return true;
            }
        }
        for (unsigned i = 0; i < n; i++) {
            if (b->slot[slots[i]].busy && b->slot[slots[i]].done) {
                return true;
            }
        }
        if (rdtsc() > deadline) {
            return false;
        }
        if (sleep && ask_for_interrupts(b, queue_mask)) {
            bool done = false;
            for (unsigned i = 0; i < n && !done; i++) {
                done = b->slot[slots[i]].busy && b->slot[slots[i]].done;
            }
            if (!done) {
                (*sleeps)++;
                syscall3(SYS_WAIT_IRQ, seen, 0, 0);
            }
        } else {
            cpu_relax();
        }
    }
}

int blk_complete(struct blk_dev *b)
{
    uint32_t id, len;

    if (!vq_pop_used(&b->vqs[0], &id, &len)) {
        return -1;
    }
    if (id >= b->vqs[0].size || id >= ARRAY_SIZE(b->head_to_slot[0])) {
        kprintf("KEEL-GUEST: device returned a bad used id %u\n", id);
        return -1;
    }
    unsigned s = b->head_to_slot[0][id];
    b->slot[s].busy = false;
    return (int)s;
}

bool blk_wait(struct blk_dev *b, uint64_t deadline)
{
    while (!vq_has_used(&b->vqs[0])) {
        if (rdtsc() > deadline) {
            return false;
        }
        if (b->irq_mode) {
            uint64_t seen = irq_state.cpu_total[0];
            if (vq_enable_irq(&b->vqs[0])) {
                b->irq_waits++;
                syscall3(SYS_WAIT_IRQ, seen, 0, 0);
            }
        } else {
            cpu_relax();
        }
    }
    if (!b->irq_mode) {
        vq_disable_irq(&b->vqs[0]);
    }
    return true;
}

int blk_sync(struct blk_dev *b, unsigned s, uint32_t type, uint64_t sector,
             void *data, uint32_t len)
{
    uint64_t deadline = rdtsc() + tsc_khz * 10000;      /* 10 s */

    blk_submit(b, s, type, sector, data, len);
    blk_kick(b, b->slot[s].queue);
    while (b->slot[s].busy) {
        if (!blk_wait(b, deadline)) {
            return -1;
        }
        while (blk_complete(b) >= 0) {
        }
    }
    return *b->slot[s].status;
}

uint64_t blk_device_irqs(struct blk_dev *b)
{
    uint64_t n = 0;

    if (b->msix) {
        for (unsigned q = 0; q < b->nqueues; q++) {
            n += irq_state.msi_count[q];
        }
    } else if (b->irq_mode) {
        n = irq_state.count[b->pci.irq];
    }
    return n - b->irqs_at_start;
}

uint64_t blk_settle_irqs(struct blk_dev *b, unsigned ticks)
{
    /* Each wait ends at the next interrupt: the pending one at once, or
     * the watchdog's tick. */
    while (b->irq_mode && !b->msix && !blk_device_irqs(b) && ticks--) {
        syscall3(SYS_WAIT_IRQ, irq_state.cpu_total[0], 0, 0);
    }
    return blk_device_irqs(b);
}
