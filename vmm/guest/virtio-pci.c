/*
 * vmm/guest/virtio-pci.c — virtio over PCI, modern interface only (the
 * capabilities in configuration space point at structures in memory BARs),
 * and the split virtqueue.  See virtio.h for the contract.  Runs at CPL3.
 */
#include "config.h"

#include "vmm/guest/virtio.h"

#define PCI_COMMAND      0x04
#define PCI_STATUS       0x06
#define PCI_CAP_PTR      0x34
#define PCI_CMD_MEM      0x0002
#define PCI_CMD_MASTER   0x0004
#define PCI_CMD_INTX_OFF 0x0400
#define PCI_STATUS_CAPS  0x0010
#define PCI_CAP_VENDOR   0x09

/* Where unassigned BARs go (qboot and a bare VMM leave them at 0): the
 * start of the usual 32-bit PCI hole, below the IOAPIC/LAPIC/BIOS. */
#define BAR_WINDOW_START 0xe0000000ull
#define BAR_WINDOW_END   0xfec00000ull
static uint64_t bar_window_next = BAR_WINDOW_START;

static volatile uint8_t *mmio8(volatile uint8_t *base, unsigned off)
{
    return base + off;
}
static volatile uint16_t *mmio16(volatile uint8_t *base, unsigned off)
{
    return (volatile uint16_t *)(base + off);
}
static volatile uint32_t *mmio32(volatile uint8_t *base, unsigned off)
{
    return (volatile uint32_t *)(base + off);
}

/* Sizes and places every unassigned memory BAR of f. */
static bool assign_bars(struct pci_func *f)
{
    uint16_t cmd = pci_read16(f, PCI_COMMAND);
    bool ok = true;

    pci_write16(f, PCI_COMMAND, cmd & ~(PCI_CMD_MEM | PCI_CMD_MASTER));
    for (unsigned bar = 0; bar < 6; bar++) {
        unsigned off = 0x10 + 4 * bar;
        uint32_t lo = pci_read32(f, off);
        bool is64 = !(lo & 1) && ((lo >> 1) & 3) == 2;
        if (lo & 1) {
            continue;                            /* I/O: we never use it */
        }
        uint64_t addr = pci_bar_address(f, bar);
        if (addr) {
            bar += is64;
            continue;
        }
        pci_write32(f, off, 0xffffffffu);
        uint64_t mask = pci_read32(f, off) & ~0xfull;
        pci_write32(f, off, lo);
        if (is64) {
            uint32_t hi = pci_read32(f, off + 4);
            pci_write32(f, off + 4, 0xffffffffu);
            mask |= (uint64_t)pci_read32(f, off + 4) << 32;
            pci_write32(f, off + 4, hi);
        } else {
            mask |= 0xffffffff00000000ull;
        }
        if (!(mask & 0xffffffffull)) {
            bar += is64;
            continue;                            /* not implemented */
        }
        uint64_t size = ~mask + 1;
        uint64_t base = ALIGN_UP(bar_window_next, size);
        if (base + size > BAR_WINDOW_END) {
            kprintf("KEEL-GUEST: no room to assign BAR%u (size 0x%lx)\n", bar, size);
            ok = false;
            bar += is64;
            continue;
        }
        bar_window_next = base + size;
        pci_write32(f, off, (uint32_t)base | (lo & 0xf));
        if (is64) {
            pci_write32(f, off + 4, (uint32_t)(base >> 32));
        }
        kprintf("KEEL-GUEST: pci %02x:%02x.%x assigned BAR%u at 0x%lx (size 0x%lx)\n",
                f->bus, f->dev, f->fn, bar, base, size);
        bar += is64;
    }
    pci_write16(f, PCI_COMMAND, cmd | PCI_CMD_MEM | PCI_CMD_MASTER);
    return ok;
}

/* Resolves a virtio capability's (bar, offset, length) to a mapped pointer. */
static volatile uint8_t *cap_pointer(struct pci_func *f, unsigned cap)
{
    unsigned bar = pci_read8(f, cap + 4);
    uint32_t offset = pci_read32(f, cap + 8);
    uint32_t length = pci_read32(f, cap + 12);
    uint64_t base = pci_bar_address(f, bar);

    if (!base || !map_mmio(base + offset, length)) {
        return NULL;
    }
    return (volatile uint8_t *)(uintptr_t)(base + offset);
}

static bool parse_caps(struct virtio_pci_dev *d)
{
    struct pci_func *f = d->pci;

    if (!(pci_read16(f, PCI_STATUS) & PCI_STATUS_CAPS)) {
        return false;
    }
    for (unsigned cap = pci_read8(f, PCI_CAP_PTR) & 0xfc, n = 0; cap && n < 48;
         cap = pci_read8(f, cap + 1) & 0xfc, n++) {
        if (pci_read8(f, cap) != PCI_CAP_VENDOR) {
            continue;
        }
        switch (pci_read8(f, cap + 3)) {
        case VIRTIO_PCI_CAP_COMMON_CFG:
            if (!d->common) {
                d->common = cap_pointer(f, cap);
            }
            break;
        case VIRTIO_PCI_CAP_NOTIFY_CFG:
            if (!d->notify_base) {
                d->notify_base = cap_pointer(f, cap);
                d->notify_off_multiplier = pci_read32(f, cap + 16);
            }
            break;
        case VIRTIO_PCI_CAP_ISR_CFG:
            if (!d->isr) {
                d->isr = cap_pointer(f, cap);
            }
            break;
        case VIRTIO_PCI_CAP_DEVICE_CFG:
            if (!d->device_cfg) {
                d->device_cfg = cap_pointer(f, cap);
            }
            break;
        }
    }
    return d->common && d->notify_base && d->isr && d->device_cfg;
}

/* The legacy IRQ that f's INTx pin reaches.  On a PIIX3/PIIX4 south bridge
 * (QEMU's i440fx machine) that is decided by the bridge's PIRQ route
 * registers (0x60-0x63), with QEMU's swizzle PIRQ = (slot - 1 + pin - 1)
 * mod 4 for bus 0; firmware is supposed to copy the result into the
 * Interrupt Line register, and SeaBIOS does, but qboot writes a different
 * line.  Elsewhere (keel-vmm) the Interrupt Line register is the answer. */
static unsigned intx_irq(const struct pci_func *f)
{
    if (f->irq_pin < 1 || f->irq_pin > 4) {
        return 0xff;
    }
    for (unsigned i = 0; i < pci_nfuncs && f->bus == 0; i++) {
        const struct pci_func *isa = &pci_funcs[i];
        if (isa->bus == 0 && isa->vendor == 0x8086 &&
            (isa->device == 0x7000 || isa->device == 0x7110)) {
            unsigned pirq = (f->dev - 1 + f->irq_pin - 1) & 3;
            uint8_t route = pci_read8(isa, 0x60 + pirq);
            if (route & 0x80 || route >= 16) {
                break;                           /* routing disabled */
            }
            if (route != f->irq_line) {
                kprintf("KEEL-GUEST: pci %02x:%02x.%x: INT%c# is routed to IRQ %u "
                        "(PIRQ%c), not the %u its Interrupt Line says\n", f->bus,
                        f->dev, f->fn, 'A' + f->irq_pin - 1, route, 'A' + pirq,
                        f->irq_line);
            }
            return route;
        }
    }
    return f->irq_line;
}

bool virtio_pci_find(struct virtio_pci_dev *d, unsigned index)
{
    unsigned seen = 0;

    if (!pci_nfuncs) {
        pci_enumerate(false);
    }
    for (unsigned i = 0; i < pci_nfuncs; i++) {
        struct pci_func *f = &pci_funcs[i];
        if (f->vendor != 0x1af4 || (f->device != 0x1042 && f->device != 0x1001)) {
            continue;
        }
        if (seen++ != index) {
            continue;
        }
        memset(d, 0, sizeof(*d));
        d->pci = f;
        assign_bars(f);
        if (!parse_caps(d)) {
            kprintf("KEEL-GUEST: virtio-blk %02x:%02x.%x %04x:%04x has no usable "
                    "modern capabilities (legacy-only devices are not supported)\n",
                    f->bus, f->dev, f->fn, f->vendor, f->device);
            return false;
        }
        d->irq = intx_irq(f);
        /* INTx on: the workload's irq mode sleeps on it. */
        pci_write16(f, PCI_COMMAND, pci_read16(f, PCI_COMMAND) & ~PCI_CMD_INTX_OFF);
        kprintf("KEEL-GUEST: virtio-blk %02x:%02x.%x %04x:%04x common=%p notify=%p "
                "(x%u) isr=%p device=%p irq=%u\n", f->bus, f->dev, f->fn, f->vendor,
                f->device, (void *)d->common, (void *)d->notify_base,
                d->notify_off_multiplier, (void *)d->isr, (void *)d->device_cfg,
                d->irq);
        return true;
    }
    kprintf("KEEL-GUEST: no virtio-blk device #%u (1af4:1042 or 1af4:1001) found\n",
            index);
    return false;
}

uint8_t virtio_get_status(struct virtio_pci_dev *d)
{
    return *mmio8(d->common, VCC_DEVICE_STATUS);
}

void virtio_set_status(struct virtio_pci_dev *d, uint8_t status)
{
    *mmio8(d->common, VCC_DEVICE_STATUS) = status;
}

bool virtio_reset(struct virtio_pci_dev *d)
{
    virtio_set_status(d, 0);
    for (unsigned i = 0; i < 1000000; i++) {
        if (virtio_get_status(d) == 0) {
            return true;
        }
        cpu_relax();
    }
    kprintf("KEEL-GUEST: virtio reset did not complete (status 0x%x)\n",
            virtio_get_status(d));
    return false;
}

bool virtio_negotiate(struct virtio_pci_dev *d, uint64_t wanted)
{
    virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
    virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    *mmio32(d->common, VCC_DEVICE_FEATURE_SELECT) = 0;
    uint64_t lo = *mmio32(d->common, VCC_DEVICE_FEATURE);
    *mmio32(d->common, VCC_DEVICE_FEATURE_SELECT) = 1;
    uint64_t hi = *mmio32(d->common, VCC_DEVICE_FEATURE);
    d->device_features = lo | hi << 32;
    if (!(d->device_features & FEATURE(VIRTIO_F_VERSION_1))) {
        kprintf("KEEL-GUEST: device does not offer VIRTIO_F_VERSION_1\n");
        virtio_set_status(d, VIRTIO_STATUS_FAILED);
        return false;
    }
    d->features = d->device_features & (wanted | FEATURE(VIRTIO_F_VERSION_1));
    *mmio32(d->common, VCC_DRIVER_FEATURE_SELECT) = 0;
    *mmio32(d->common, VCC_DRIVER_FEATURE) = (uint32_t)d->features;
    *mmio32(d->common, VCC_DRIVER_FEATURE_SELECT) = 1;
    *mmio32(d->common, VCC_DRIVER_FEATURE) = (uint32_t)(d->features >> 32);
    virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                         VIRTIO_STATUS_FEATURES_OK);
    if (!(virtio_get_status(d) & VIRTIO_STATUS_FEATURES_OK)) {
        kprintf("KEEL-GUEST: device refused features 0x%lx\n", d->features);
        virtio_set_status(d, VIRTIO_STATUS_FAILED);
        return false;
    }
    return true;
}

/* Device config reads, retried until config_generation is stable (a
 * 64-bit field is two accesses). */
uint8_t virtio_cfg8(struct virtio_pci_dev *d, unsigned off)
{
    return *mmio8(d->device_cfg, off);
}

uint32_t virtio_cfg32(struct virtio_pci_dev *d, unsigned off)
{
    return *mmio32(d->device_cfg, off);
}

uint64_t virtio_cfg64(struct virtio_pci_dev *d, unsigned off)
{
    uint8_t gen;
    uint64_t v;

    do {
        gen = *mmio8(d->common, VCC_CONFIG_GENERATION);
        v = *mmio32(d->device_cfg, off) |
            (uint64_t)*mmio32(d->device_cfg, off + 4) << 32;
    } while (gen != *mmio8(d->common, VCC_CONFIG_GENERATION));
    return v;
}

static void write64(volatile uint8_t *base, unsigned off, uint64_t v)
{
    *mmio32(base, off) = (uint32_t)v;
    *mmio32(base, off + 4) = (uint32_t)(v >> 32);
}

static void *alloc_zeroed(uint64_t size)
{
    void *p = guest_alloc(ALIGN_UP(size, 4096), 4096);

    if (p) {
        memset(p, 0, ALIGN_UP(size, 4096));
    }
    return p;
}

bool vq_init(struct virtqueue *vq, struct virtio_pci_dev *d, unsigned index,
             unsigned max_size)
{
    volatile uint8_t *c = d->common;

    memset(vq, 0, sizeof(*vq));
    *mmio16(c, VCC_QUEUE_SELECT) = index;
    unsigned size = *mmio16(c, VCC_QUEUE_SIZE);
    if (!size) {
        kprintf("KEEL-GUEST: virtqueue %u does not exist\n", index);
        return false;
    }
    if (size & (size - 1)) {
        kprintf("KEEL-GUEST: virtqueue %u size %u is not a power of two\n", index, size);
        return false;
    }
    while (max_size && size > max_size && size > 1) {
        size /= 2;
    }
    vq->dev = d;
    vq->index = index;
    vq->size = size;
    vq->desc = alloc_zeroed(16ull * size);
    vq->avail = alloc_zeroed(6 + 2ull * size);
    vq->used = alloc_zeroed(6 + 8ull * size);
    if (!vq->desc || !vq->avail || !vq->used) {
        kprintf("KEEL-GUEST: out of memory for virtqueue %u\n", index);
        return false;
    }
    vq->used_event = &vq->avail->ring[size];
    vq->avail_event = (volatile uint16_t *)&vq->used->ring[size];
    vq->event_idx = !!(d->features & FEATURE(VIRTIO_F_EVENT_IDX));

    *mmio16(c, VCC_QUEUE_SIZE) = size;
    *mmio16(c, VCC_QUEUE_MSIX_VECTOR) = d->msix ? (uint16_t)index : 0xffff;
    if (d->msix && *mmio16(c, VCC_QUEUE_MSIX_VECTOR) != index) {
        kprintf("KEEL-GUEST: virtqueue %u: the device refused MSI-X vector %u\n",
                index, index);
        return false;
    }
    write64(c, VCC_QUEUE_DESC, (uint64_t)(uintptr_t)vq->desc);
    write64(c, VCC_QUEUE_DRIVER, (uint64_t)(uintptr_t)vq->avail);
    write64(c, VCC_QUEUE_DEVICE, (uint64_t)(uintptr_t)vq->used);
    unsigned notify_off = *mmio16(c, VCC_QUEUE_NOTIFY_OFF);
    vq->notify = mmio16(d->notify_base, notify_off * d->notify_off_multiplier);
    *mmio16(c, VCC_QUEUE_ENABLE) = 1;
    vq_disable_irq(vq);
    return true;
}

#define PCI_CAP_MSIX       0x11
#define MSIX_CTRL_ENABLE   0x8000
#define MSIX_CTRL_MASKALL  0x4000
#define VIRTIO_MSI_NO_VECTOR 0xffff

static unsigned find_cap(struct pci_func *f, uint8_t id)
{
    unsigned cap = pci_read8(f, PCI_CAP_PTR) & 0xfc;

    for (unsigned n = 0; cap && pci_read8(f, cap) != id && n < 48; n++) {
        cap = pci_read8(f, cap + 1) & 0xfc;
    }
    return cap;
}

bool virtio_msix_enable(struct virtio_pci_dev *d, unsigned entries)
{
    struct pci_func *f = d->pci;
    unsigned cap = find_cap(f, PCI_CAP_MSIX);

    if (!cap) {
        kprintf("KEEL-GUEST: virtio-blk has no MSI-X capability\n");
        return false;
    }
    uint16_t ctrl = pci_read16(f, cap + 2);
    uint32_t table = pci_read32(f, cap + 4);
    uint64_t base = pci_bar_address(f, table & 7);
    d->msix_entries = (ctrl & 0x7ff) + 1u;
    if (d->msix_entries < entries) {
        kprintf("KEEL-GUEST: virtio-blk has %u MSI-X entries, %u wanted\n",
                d->msix_entries, entries);
        return false;
    }
    if (!base || !map_mmio(base + (table & ~7u), 16ull * d->msix_entries)) {
        kprintf("KEEL-GUEST: virtio-blk's MSI-X table is not mappable\n");
        return false;
    }
    d->msix_table = (volatile uint32_t *)(uintptr_t)(base + (table & ~7u));
    for (unsigned e = 0; e < d->msix_entries; e++) {
        d->msix_table[4 * e + 3] = 1;                       /* masked */
    }
    pci_write16(f, cap + 2, (uint16_t)((ctrl & ~MSIX_CTRL_MASKALL) | MSIX_CTRL_ENABLE));
    *mmio16(d->common, VCC_MSIX_CONFIG) = VIRTIO_MSI_NO_VECTOR;
    d->msix = true;
    return true;
}

void virtio_msix_route(struct virtio_pci_dev *d, unsigned entry, uint32_t apic_id,
                       unsigned vector)
{
    volatile uint32_t *e = d->msix_table + 4 * entry;

    e[3] = 1;
    e[0] = 0xfee00000u | apic_id << 12;          /* physical destination */
    e[1] = 0;
    e[2] = vector;                               /* fixed, edge */
    e[3] = 0;
}

void vq_refresh_notify(struct virtqueue *vq)
{
    struct virtio_pci_dev *d = vq->dev;

    *mmio16(d->common, VCC_QUEUE_SELECT) = vq->index;
    unsigned notify_off = *mmio16(d->common, VCC_QUEUE_NOTIFY_OFF);
    vq->notify = mmio16(d->notify_base, notify_off * d->notify_off_multiplier);
}

bool virtio_pci_move_bar(struct virtio_pci_dev *d, bool back)
{
    static uint64_t home;            /* where the BAR was before the move */
    static int moved_bar = -1;
    struct pci_func *f = d->pci;
    int bar = -1;

    for (unsigned cap = pci_read8(f, PCI_CAP_PTR) & 0xfc, n = 0; cap && n < 48;
         cap = pci_read8(f, cap + 1) & 0xfc, n++) {
        if (pci_read8(f, cap) == PCI_CAP_VENDOR &&
            pci_read8(f, cap + 3) == VIRTIO_PCI_CAP_COMMON_CFG) {
            bar = pci_read8(f, cap + 4);
            break;
        }
    }
    if (bar < 0 || bar > 5 || (back && bar != moved_bar)) {
        return false;
    }
    uint64_t old = pci_bar_address(f, (unsigned)bar);
    uint64_t to = back ? home : ALIGN_UP(bar_window_next, 0x100000ull);
    uint32_t lo = pci_read32(f, 0x10 + 4 * (unsigned)bar);
    if (!old || !to || to + 0x100000 > BAR_WINDOW_END) {
        return false;
    }
    if (!back) {
        home = old;
        moved_bar = bar;
        bar_window_next = to + 0x100000;
    }
    /* Live: memory decoding stays on, as a hostile driver would leave it. */
    pci_write32(f, 0x10 + 4 * (unsigned)bar, (uint32_t)to | (lo & 0xf));
    if (((lo >> 1) & 3) == 2) {
        pci_write32(f, 0x14 + 4 * (unsigned)bar, (uint32_t)(to >> 32));
    }
    d->common = d->isr = d->device_cfg = d->notify_base = NULL;
    return pci_bar_address(f, (unsigned)bar) == to && parse_caps(d);
}

void vq_kick(struct virtqueue *vq)
{
    uint16_t old = vq->kicked_idx, new = vq->avail_idx;
    bool notify;

    if (old == new) {
        return;
    }
    vq->kicked_idx = new;
    smp_mb();                    /* avail->idx visible before reading the event */
    if (vq->event_idx) {
        uint16_t event = *vq->avail_event;
        notify = (uint16_t)(new - event - 1) < (uint16_t)(new - old);
    } else {
        notify = !(((volatile struct vring_used *)vq->used)->flags & VRING_USED_F_NO_NOTIFY);
    }
    if (notify) {
        *vq->notify = vq->index;
        vq->kicks++;
    } else {
        vq->kicks_suppressed++;
    }
}

bool vq_enable_irq(struct virtqueue *vq)
{
    if (vq->event_idx) {
        *vq->used_event = vq->last_used;
    } else {
        ((volatile struct vring_avail *)vq->avail)->flags = 0;
    }
    smp_mb();                    /* the request visible before re-checking */
    return !vq_has_used(vq);
}

void vq_disable_irq(struct virtqueue *vq)
{
    if (vq->event_idx) {
        /* Just behind what we consumed: the device crosses it only after
         * 64K more completions, and every poll pass moves it along. */
        *vq->used_event = (uint16_t)(vq->last_used - 1);
    } else {
        ((volatile struct vring_avail *)vq->avail)->flags = VRING_AVAIL_F_NO_INTERRUPT;
    }
}
