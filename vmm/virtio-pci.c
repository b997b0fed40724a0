/*
 * The virtio 1.x PCI transport; see virtio-pci.h for the contract.
 *
 * Register accesses arrive from the vCPU thread under the global mutex (the
 * PCI BAR is a BUS_LOCKED region), so the common configuration needs no lock
 * of its own.  Interrupt state is shared with the threads that complete
 * requests (main loop or iothread), which never take the global mutex: it
 * lives under irq_lock.
 */
#include "config.h"

#include "vmm/virtio-pci.h"
#include "compat/avoid.h"
#include "compat/event-notifier.h"
#include "compat/features.h"
#include "compat/osdep.h"
#include "loop/main-loop.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Vendor-specific capability types (virtio 1.x 4.1.4). */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_FMASK 0x4000
#define MSIX_ENTRY_SIZE 16
#define MSIX_ENTRY_MASKED 1u

#define ISR_QUEUE 0x1
#define ISR_CONFIG 0x2

/* Common configuration layout (virtio 1.x 4.1.4.3). */
enum {
    CC_DFSELECT = 0x00, CC_DF = 0x04, CC_GFSELECT = 0x08, CC_GF = 0x0c,
    CC_MSIX_CONFIG = 0x10, CC_NUM_QUEUES = 0x12, CC_STATUS = 0x14, CC_CFG_GEN = 0x15,
    CC_Q_SELECT = 0x16, CC_Q_SIZE = 0x18, CC_Q_MSIX = 0x1a, CC_Q_ENABLE = 0x1c,
    CC_Q_NOFF = 0x1e, CC_Q_DESC = 0x20, CC_Q_DRIVER = 0x28, CC_Q_DEVICE = 0x30,
};

static const struct { uint8_t off, size; } common_fields[] = {
    { CC_DFSELECT, 4 }, { CC_DF, 4 }, { CC_GFSELECT, 4 }, { CC_GF, 4 },
    { CC_MSIX_CONFIG, 2 }, { CC_NUM_QUEUES, 2 }, { CC_STATUS, 1 }, { CC_CFG_GEN, 1 },
    { CC_Q_SELECT, 2 }, { CC_Q_SIZE, 2 }, { CC_Q_MSIX, 2 }, { CC_Q_ENABLE, 2 },
    { CC_Q_NOFF, 2 }, { CC_Q_DESC, 8 }, { CC_Q_DRIVER, 8 }, { CC_Q_DEVICE, 8 },
};

#define STAT_INC(vp, field) __atomic_add_fetch(&(vp)->stats.field, 1, __ATOMIC_RELAXED)

/* Messages a guest can provoke over and over: only the first few. */
#define GUEST_LOG_LIMIT 10

static bool may_log(VirtioPci *vp)
{
    return __atomic_add_fetch(&vp->guest_logs, 1, __ATOMIC_RELAXED) <= GUEST_LOG_LIMIT;
}

static void put_le(uint8_t *p, uint64_t v, unsigned size)
{
    for (unsigned i = 0; i < size; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get_le(const uint8_t *p, unsigned size)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < size; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* ---- interrupts (irq_lock held) ------------------------------------------------ */

/* The PCI status register's Interrupt Status bit mirrors ISR != 0.  pci.c
 * reads config bytes under the global mutex; we may not hold it, so the
 * byte is updated atomically. */
static void intx_status_bit(VirtioPci *vp, bool on)
{
    uint8_t *st = &vp->pci->config[PCI_STATUS];

    if (on) {
        __atomic_fetch_or(st, (uint8_t)PCI_STATUS_INTERRUPT, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_and(st, (uint8_t)~PCI_STATUS_INTERRUPT, __ATOMIC_RELAXED);
    }
}

/* Drive the INTx line from the ISR.  @force: send the level even if we
 * think KVM has it already. */
static void intx_update(VirtioPci *vp, bool force)
{
    bool want = vp->isr && !vp->intx_disabled && !vp->msix_enabled && vp->intx_irq;

    intx_status_bit(vp, vp->isr != 0);
    if (vp->intx_irqfd) {
        /* Level-triggered irqfd: KVM holds the line until the guest's EOI,
         * then tells us on the resample fd (intx_resample_cb); until then
         * another write would change nothing. */
        if (want && (!vp->intx_asserted || force)) {
            vp->intx_asserted = true;
            keel_event_notifier_set(&vp->intx_notifier);
            STAT_INC(vp, irqs_intx_irqfd);
        }
        return;
    }
    if (want != vp->intx_level || force) {
        vm_set_irq_line(vp->vm, vp->intx_irq, want);
        if (want && !vp->intx_level) {
            STAT_INC(vp, irqs_intx_ioctl);
        }
        vp->intx_level = want;
    }
}

static void msix_fire(VirtioPci *vp, uint16_t v)
{
    VirtioMsixVector *vec;

    if (v == VIRTIO_NO_VECTOR || v >= vp->msix_nvec) {
        return;
    }
    vec = &vp->msix[v];
    if (vp->msix_function_mask || (vec->ctrl & MSIX_ENTRY_MASKED)) {
        vec->pending = true;
        STAT_INC(vp, irqs_masked);
        return;
    }
    if (vec->irqfd_ready) {
        keel_event_notifier_set(&vec->irqfd);
        STAT_INC(vp, irqs_msix_irqfd);
        return;
    }
    STAT_INC(vp, irqs_msix_ioctl);
    if (vm_signal_msi(vp->vm, ((uint64_t)vec->addr_hi << 32) | vec->addr_lo, vec->data) ==
        -ENOTSUP) {
        static bool warned;
        if (!warned) {
            warned = true;
            keel_log("%s: KVM_SIGNAL_MSI refused and no irqfd route: MSI-X vector %u lost",
                     vp->name, v);
        }
    }
}

/* Global mutex and irq_lock held: make the vector's KVM route match its
 * table entry (routes only matter while the vector can fire). */
static void msix_sync_vector(VirtioPci *vp, unsigned v)
{
    VirtioMsixVector *vec = &vp->msix[v];
    uint64_t addr = ((uint64_t)vec->addr_hi << 32) | vec->addr_lo;
    int r;

    if (!vp->msix_use_irqfd || !vp->msix_enabled || (vec->ctrl & MSIX_ENTRY_MASKED) ||
        !vec->irqfd_init) {
        return;
    }
    if (vec->gsi < 0) {
        int gsi = vm_msi_route_add(vp->vm, addr, vec->data);
        if (gsi < 0) {
            if (may_log(vp)) {
                keel_log("%s: no KVM MSI route for vector %u (%s): using KVM_SIGNAL_MSI",
                         vp->name, v, keel_errno_name(-gsi));
            }
            return;
        }
        vec->gsi = gsi;
        vec->route_addr = addr;
        vec->route_data = vec->data;
        r = vm_msi_route_commit(vp->vm);
        if (r == 0) {
            r = vm_set_irqfd(vp->vm, (uint32_t)gsi,
                             keel_event_notifier_get_wfd(&vec->irqfd), -1, true);
        }
        vec->irqfd_ready = r == 0;
        if (r < 0 && r != -ENOTSUP && may_log(vp)) {
            keel_log("%s: irqfd for MSI-X vector %u: %s: using KVM_SIGNAL_MSI", vp->name, v,
                     keel_errno_name(-r));
        }
        return;
    }
    if (addr != vec->route_addr || vec->data != vec->route_data) {
        vm_msi_route_update(vp->vm, vec->gsi, addr, vec->data);
        vec->route_addr = addr;
        vec->route_data = vec->data;
        if (vm_msi_route_commit(vp->vm) < 0) {
            vec->irqfd_ready = false;       /* the route is stale: ioctl instead */
        }
    }
}

/* irq_lock held: deliver what the PBA holds for vectors that can fire now. */
static void msix_flush_pending(VirtioPci *vp)
{
    if (!vp->msix_enabled || vp->msix_function_mask) {
        return;
    }
    for (unsigned v = 0; v < vp->msix_nvec; v++) {
        if (vp->msix[v].pending && !(vp->msix[v].ctrl & MSIX_ENTRY_MASKED)) {
            vp->msix[v].pending = false;
            msix_fire(vp, (uint16_t)v);
        }
    }
}

void virtio_pci_notify_queue(VirtioPci *vp, int q)
{
    pthread_mutex_lock(&vp->irq_lock);
    if (vp->msix_enabled) {
        msix_fire(vp, vp->queues[q].msix_vector);
    } else {
        vp->isr |= ISR_QUEUE;
        intx_update(vp, false);
    }
    pthread_mutex_unlock(&vp->irq_lock);
}

static void notify_config(VirtioPci *vp)
{
    STAT_INC(vp, config_irqs);
    pthread_mutex_lock(&vp->irq_lock);
    if (vp->msix_enabled) {
        msix_fire(vp, vp->msix_config_vector);
    } else {
        vp->isr |= ISR_CONFIG;
        intx_update(vp, false);
    }
    pthread_mutex_unlock(&vp->irq_lock);
}

void virtio_pci_set_needs_reset(VirtioPci *vp)
{
    bool was = __atomic_exchange_n(&vp->needs_reset, true, __ATOMIC_ACQ_REL);

    if (!was) {
        notify_config(vp);
    }
}

void virtio_pci_config_changed(VirtioPci *vp)
{
    __atomic_add_fetch(&vp->config_generation, 1, __ATOMIC_ACQ_REL);
    notify_config(vp);
}

/* EOI of our level-triggered irqfd: KVM lowered the line; raise it again
 * while the guest has not read the ISR yet.  Main loop thread. */
static void intx_resample_cb(KeelEventNotifier *e)
{
    VirtioPci *vp = KEEL_CONTAINER_OF(e, VirtioPci, intx_resample);

    keel_event_notifier_test_and_clear(e);
    pthread_mutex_lock(&vp->irq_lock);
    vp->intx_asserted = false;
    intx_update(vp, false);
    pthread_mutex_unlock(&vp->irq_lock);
}

/* ---- status, start, reset ------------------------------------------------------- */

static bool features_acceptable(VirtioPci *vp)
{
    return !(vp->guest_features & ~vp->host_features) &&
           (vp->guest_features >> VIRTIO_F_VERSION_1 & 1);
}

static VirtQueue *core_vq(VirtioPci *vp, int q)
{
    return &virtio_device_queue(vp->vdev, q)->vq;
}

static KeelEventNotifier *core_notifier(VirtioPci *vp, int q)
{
    return &virtio_device_queue(vp->vdev, q)->notifier;
}

static void virtio_pci_start(VirtioPci *vp)
{
    bool failed = false;

    for (int q = 0; q < vp->num_queues; q++) {
        VirtioPciQueue *pq = &vp->queues[q];
        const char *why = NULL;
        if (!pq->enabled) {
            continue;
        }
        if (virtqueue_start(core_vq(vp, q), vp->vm, pq->size, pq->desc, pq->driver, pq->device,
                            virtio_pci_has_feature(vp, VIRTIO_F_EVENT_IDX),
                            virtio_pci_has_feature(vp, VIRTIO_F_INDIRECT_DESC), &why) < 0) {
            failed = true;
            if (!may_log(vp)) {
                continue;
            }
            keel_log("%s: queue %d: %s (desc 0x%llx driver 0x%llx device 0x%llx size %u): "
                     "device needs reset", vp->name, q, why, (unsigned long long)pq->desc,
                     (unsigned long long)pq->driver, (unsigned long long)pq->device, pq->size);
        }
    }
    if (failed) {
        for (int q = 0; q < vp->num_queues; q++) {
            virtqueue_reset(core_vq(vp, q));
        }
        virtio_pci_set_needs_reset(vp);
        return;
    }
    vp->started = true;
    virtio_device_start(vp->vdev, vp->guest_features);
}

void virtio_pci_stop(VirtioPci *vp)
{
    if (vp->started) {
        virtio_device_stop(vp->vdev);
        vp->started = false;
    }
}

void virtio_pci_reset(VirtioPci *vp)
{
    virtio_pci_stop(vp);
    virtio_device_reset(vp->vdev);
    for (int q = 0; q < vp->num_queues; q++) {
        VirtioPciQueue *pq = &vp->queues[q];
        virtqueue_reset(core_vq(vp, q));
        pq->size = pq->max_size;
        pq->enabled = false;
        pq->desc = pq->driver = pq->device = 0;
    }
    vp->status = 0;
    __atomic_store_n(&vp->needs_reset, false, __ATOMIC_RELEASE);
    vp->guest_features = 0;
    vp->device_feature_select = vp->driver_feature_select = 0;
    vp->queue_select = 0;
    pthread_mutex_lock(&vp->irq_lock);
    vp->msix_config_vector = VIRTIO_NO_VECTOR;
    for (int q = 0; q < vp->num_queues; q++) {
        vp->queues[q].msix_vector = VIRTIO_NO_VECTOR;
    }
    for (unsigned v = 0; v < vp->msix_nvec; v++) {
        vp->msix[v].pending = false;
    }
    vp->isr = 0;
    intx_update(vp, false);
    pthread_mutex_unlock(&vp->irq_lock);
    STAT_INC(vp, resets);
}

static void write_status(VirtioPci *vp, uint8_t v)
{
    uint8_t old = vp->status;

    if (v == 0) {
        virtio_pci_reset(vp);
        return;
    }
    v &= (uint8_t)~VIRTIO_STATUS_NEEDS_RESET;       /* the device's bit */
    if ((v & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK) &&
        !features_acceptable(vp)) {
        v &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
    }
    vp->status = v;
    if ((v & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK) && !vp->started) {
        if (!(v & VIRTIO_STATUS_FEATURES_OK)) {
            /* Features never accepted: nothing to run the queues with. */
            virtio_pci_set_needs_reset(vp);
            return;
        }
        virtio_pci_start(vp);
    }
}

/* ---- common configuration ---------------------------------------------------------- */

static VirtioPciQueue *selected_queue(VirtioPci *vp)
{
    return vp->queue_select < vp->num_queues ? &vp->queues[vp->queue_select] : NULL;
}

static uint64_t common_field_read(VirtioPci *vp, unsigned off)
{
    VirtioPciQueue *pq = selected_queue(vp);
    uint8_t st;

    switch (off) {
    case CC_DFSELECT: return vp->device_feature_select;
    case CC_DF:
        return vp->device_feature_select < 2 ?
               (uint32_t)(vp->host_features >> (32 * vp->device_feature_select)) : 0;
    case CC_GFSELECT: return vp->driver_feature_select;
    case CC_GF:
        return vp->driver_feature_select < 2 ?
               (uint32_t)(vp->guest_features >> (32 * vp->driver_feature_select)) : 0;
    case CC_MSIX_CONFIG: return vp->msix_config_vector;
    case CC_NUM_QUEUES: return (uint64_t)vp->num_queues;
    case CC_STATUS:
        st = vp->status;
        if (__atomic_load_n(&vp->needs_reset, __ATOMIC_ACQUIRE)) {
            st |= VIRTIO_STATUS_NEEDS_RESET;
        }
        return st;
    case CC_CFG_GEN: return __atomic_load_n(&vp->config_generation, __ATOMIC_ACQUIRE);
    case CC_Q_SELECT: return vp->queue_select;
    case CC_Q_SIZE: return pq ? pq->size : 0;
    case CC_Q_MSIX: return pq ? pq->msix_vector : VIRTIO_NO_VECTOR;
    case CC_Q_ENABLE: return pq ? pq->enabled : 0;
    case CC_Q_NOFF: return pq ? vp->queue_select : 0;
    case CC_Q_DESC: return pq ? pq->desc : 0;
    case CC_Q_DRIVER: return pq ? pq->driver : 0;
    case CC_Q_DEVICE: return pq ? pq->device : 0;
    }
    return 0;
}

static void common_image(VirtioPci *vp, uint8_t *img)
{
    memset(img, 0, VIRTIO_PCI_COMMON_LEN);
    for (size_t i = 0; i < G_N_ELEMENTS(common_fields); i++) {
        put_le(img + common_fields[i].off, common_field_read(vp, common_fields[i].off),
               common_fields[i].size);
    }
}

static uint16_t checked_vector(VirtioPci *vp, uint64_t v)
{
    /* A vector the device cannot map reads back as NO_VECTOR (4.1.5.1.2). */
    return v < vp->msix_nvec ? (uint16_t)v : VIRTIO_NO_VECTOR;
}

static void common_field_write(VirtioPci *vp, unsigned off, uint64_t v)
{
    VirtioPciQueue *pq = selected_queue(vp);
    bool live = vp->status & VIRTIO_STATUS_DRIVER_OK;

    switch (off) {
    case CC_DFSELECT:
        vp->device_feature_select = (uint32_t)v;
        break;
    case CC_GFSELECT:
        vp->driver_feature_select = (uint32_t)v;
        break;
    case CC_GF:
        if (vp->driver_feature_select < 2 && !(vp->status & VIRTIO_STATUS_FEATURES_OK)) {
            unsigned shift = 32 * vp->driver_feature_select;
            vp->guest_features = (vp->guest_features & ~(0xffffffffull << shift)) |
                                 ((v & 0xffffffffull) << shift);
        }
        break;
    case CC_MSIX_CONFIG:
        pthread_mutex_lock(&vp->irq_lock);
        vp->msix_config_vector = checked_vector(vp, v);
        pthread_mutex_unlock(&vp->irq_lock);
        break;
    case CC_STATUS:
        write_status(vp, (uint8_t)v);
        break;
    case CC_Q_SELECT:
        vp->queue_select = (uint16_t)v;
        break;
    case CC_Q_SIZE:
        if (pq && !live) {
            pq->size = (uint16_t)v;     /* checked when the queue starts */
        }
        break;
    case CC_Q_MSIX:
        if (pq) {
            pthread_mutex_lock(&vp->irq_lock);
            pq->msix_vector = checked_vector(vp, v);
            pthread_mutex_unlock(&vp->irq_lock);
        }
        break;
    case CC_Q_ENABLE:
        if (pq && !live && v == 1) {
            pq->enabled = true;
        }
        break;
    case CC_Q_DESC:
        if (pq && !live) {
            pq->desc = v;
        }
        break;
    case CC_Q_DRIVER:
        if (pq && !live) {
            pq->driver = v;
        }
        break;
    case CC_Q_DEVICE:
        if (pq && !live) {
            pq->device = v;
        }
        break;
    default:
        break;          /* read-only fields */
    }
}

/* Any width at any offset: merge the written bytes into the current image,
 * then apply every field the write touched, in address order. */
static void common_write(VirtioPci *vp, unsigned off, uint64_t value, unsigned size)
{
    uint8_t img[VIRTIO_PCI_COMMON_LEN];

    if (off >= VIRTIO_PCI_COMMON_LEN) {
        return;
    }
    if (size > VIRTIO_PCI_COMMON_LEN - off) {
        size = VIRTIO_PCI_COMMON_LEN - off;
    }
    common_image(vp, img);
    put_le(img + off, value, size);
    for (size_t i = 0; i < G_N_ELEMENTS(common_fields); i++) {
        unsigned fo = common_fields[i].off, fs = common_fields[i].size;
        if (fo < off + size && off < fo + fs) {
            common_field_write(vp, fo, get_le(img + fo, fs));
        }
    }
}

static uint64_t common_read(VirtioPci *vp, unsigned off, unsigned size)
{
    uint8_t img[VIRTIO_PCI_COMMON_LEN + 8] = { 0 };

    if (off >= VIRTIO_PCI_COMMON_LEN) {
        return 0;
    }
    common_image(vp, img);
    return get_le(img + off, size);
}

/* ---- MSI-X table and PBA ------------------------------------------------------------------ */

static uint64_t msix_table_read(VirtioPci *vp, unsigned off, unsigned size)
{
    uint8_t img[MSIX_ENTRY_SIZE + 8] = { 0 };
    unsigned v = off / MSIX_ENTRY_SIZE, o = off % MSIX_ENTRY_SIZE;
    uint64_t r;

    if (v >= vp->msix_nvec) {
        return 0;
    }
    pthread_mutex_lock(&vp->irq_lock);
    put_le(img + 0, vp->msix[v].addr_lo, 4);
    put_le(img + 4, vp->msix[v].addr_hi, 4);
    put_le(img + 8, vp->msix[v].data, 4);
    put_le(img + 12, vp->msix[v].ctrl, 4);
    pthread_mutex_unlock(&vp->irq_lock);
    r = get_le(img + o, size);
    return r;
}

static void msix_table_write(VirtioPci *vp, unsigned off, uint64_t value, unsigned size)
{
    uint8_t img[MSIX_ENTRY_SIZE + 8] = { 0 };
    unsigned v = off / MSIX_ENTRY_SIZE, o = off % MSIX_ENTRY_SIZE;
    VirtioMsixVector *vec;

    if (v >= vp->msix_nvec) {
        return;
    }
    if (size > MSIX_ENTRY_SIZE - o) {
        size = MSIX_ENTRY_SIZE - o;
    }
    vec = &vp->msix[v];
    pthread_mutex_lock(&vp->irq_lock);
    put_le(img + 0, vec->addr_lo, 4);
    put_le(img + 4, vec->addr_hi, 4);
    put_le(img + 8, vec->data, 4);
    put_le(img + 12, vec->ctrl, 4);
    put_le(img + o, value, size);
    vec->addr_lo = (uint32_t)get_le(img + 0, 4) & ~3u;
    vec->addr_hi = (uint32_t)get_le(img + 4, 4);
    vec->data = (uint32_t)get_le(img + 8, 4);
    vec->ctrl = (uint32_t)get_le(img + 12, 4) & MSIX_ENTRY_MASKED;
    msix_sync_vector(vp, v);
    msix_flush_pending(vp);
    pthread_mutex_unlock(&vp->irq_lock);
}

static uint64_t msix_pba_read(VirtioPci *vp, unsigned off, unsigned size)
{
    uint8_t img[16] = { 0 };

    if (off >= 8) {
        return 0;
    }
    pthread_mutex_lock(&vp->irq_lock);
    for (unsigned v = 0; v < vp->msix_nvec && v < 64; v++) {
        if (vp->msix[v].pending) {
            img[v / 8] |= (uint8_t)(1u << (v % 8));
        }
    }
    pthread_mutex_unlock(&vp->irq_lock);
    return get_le(img + off, size);
}

/* ---- BAR and config-space hooks ------------------------------------------------------------ */

static uint64_t virtio_pci_bar_read(PciDevice *dev, int bar, uint64_t offset, unsigned size)
{
    VirtioPci *vp = dev->opaque;
    unsigned off = (unsigned)offset;

    if (!vp || bar != VIRTIO_PCI_BAR || offset >= VIRTIO_PCI_BAR_SIZE) {
        return 0;
    }
    if (off < VIRTIO_PCI_ISR_OFF) {
        return common_read(vp, off - VIRTIO_PCI_COMMON_OFF, size);
    }
    if (off < VIRTIO_PCI_DEVCFG_OFF) {
        uint8_t isr;
        if (off != VIRTIO_PCI_ISR_OFF) {
            return 0;
        }
        /* Read-to-clear; de-asserts the line (KVM_IRQ_LINE mode). */
        pthread_mutex_lock(&vp->irq_lock);
        isr = vp->isr;
        vp->isr = 0;
        intx_update(vp, false);
        pthread_mutex_unlock(&vp->irq_lock);
        return isr;
    }
    if (off < VIRTIO_PCI_NOTIFY_OFF) {
        uint8_t cfg[VIRTIO_PCI_DEVCFG_MAX + 8] = { 0 };
        unsigned o = off - VIRTIO_PCI_DEVCFG_OFF;
        if (o >= vp->config_len) {
            return 0;
        }
        virtio_device_get_config(vp->vdev, cfg, vp->config_len);
        return get_le(cfg + o, size);
    }
    if (off < VIRTIO_PCI_MSIX_TABLE_OFF) {
        return 0;       /* notify: write-only */
    }
    if (off < VIRTIO_PCI_MSIX_PBA_OFF) {
        return msix_table_read(vp, off - VIRTIO_PCI_MSIX_TABLE_OFF, size);
    }
    return msix_pba_read(vp, off - VIRTIO_PCI_MSIX_PBA_OFF, size);
}

static void virtio_pci_bar_write(PciDevice *dev, int bar, uint64_t offset, uint64_t value,
                                 unsigned size)
{
    VirtioPci *vp = dev->opaque;
    unsigned off = (unsigned)offset;

    if (!vp || bar != VIRTIO_PCI_BAR || offset >= VIRTIO_PCI_BAR_SIZE) {
        return;
    }
    if (off < VIRTIO_PCI_ISR_OFF) {
        common_write(vp, off - VIRTIO_PCI_COMMON_OFF, value, size);
    } else if (off >= VIRTIO_PCI_NOTIFY_OFF && off < VIRTIO_PCI_MSIX_TABLE_OFF) {
        /* The exit-handler path of a kick (no ioeventfd, or a write KVM's
         * ioeventfd did not match): the same notifier. */
        unsigned q = (off - VIRTIO_PCI_NOTIFY_OFF) / VIRTIO_PCI_NOTIFY_MULT;
        if (q < (unsigned)vp->num_queues) {
            STAT_INC(vp, exit_kicks);
            keel_event_notifier_set(core_notifier(vp, (int)q));
        }
    } else if (off >= VIRTIO_PCI_MSIX_TABLE_OFF && off < VIRTIO_PCI_MSIX_PBA_OFF) {
        msix_table_write(vp, off - VIRTIO_PCI_MSIX_TABLE_OFF, value, size);
    } else if (off >= VIRTIO_PCI_DEVCFG_OFF && off < VIRTIO_PCI_NOTIFY_OFF) {
        unsigned o = off - VIRTIO_PCI_DEVCFG_OFF;
        uint8_t buf[8];
        if (o < vp->config_len && size <= sizeof(buf) && size <= vp->config_len - o) {
            put_le(buf, value, size);
            virtio_device_set_config(vp->vdev, o, buf, size);
        }
    }
    /* ISR and the PBA ignore writes. */
}

static void assign_ioeventfds(VirtioPci *vp, uint64_t bar_addr)
{
    for (int q = 0; q < vp->num_queues; q++) {
        VirtioPciQueue *pq = &vp->queues[q];
        uint64_t addr;
        int r;

        if (pq->ioeventfd_assigned) {
            vm_set_ioeventfd(vp->vm, pq->ioeventfd_addr, 2, false, false, 0,
                             keel_event_notifier_get_wfd(core_notifier(vp, q)), false);
            pq->ioeventfd_assigned = false;
        }
        if (bar_addr == PCI_BAR_UNMAPPED || !vp->use_ioeventfd) {
            continue;
        }
        addr = bar_addr + VIRTIO_PCI_NOTIFY_OFF + (uint64_t)q * VIRTIO_PCI_NOTIFY_MULT;
        r = vm_set_ioeventfd(vp->vm, addr, 2, false, false, 0,
                             keel_event_notifier_get_wfd(core_notifier(vp, q)), true);
        if (r == 0) {
            pq->ioeventfd_assigned = true;
            pq->ioeventfd_addr = addr;
        } else {
            if (r != -ENOTSUP) {
                keel_log("%s: KVM_IOEVENTFD at 0x%llx: %s: kicks take the exit handler",
                         vp->name, (unsigned long long)addr, keel_errno_name(-r));
            }
            vp->use_ioeventfd = false;
        }
    }
}

static void virtio_pci_bar_remap(PciDevice *dev, int bar, uint64_t old_addr, uint64_t new_addr)
{
    VirtioPci *vp = dev->opaque;

    (void)old_addr;
    if (bar == VIRTIO_PCI_BAR && vp) {
        assign_ioeventfds(vp, new_addr);
    }
}

static bool write_touches(unsigned off, unsigned size, unsigned reg, unsigned reg_size)
{
    return off < reg + reg_size && reg < off + size;
}

static void virtio_pci_config_write(PciDevice *dev, unsigned off, uint32_t value, unsigned size)
{
    VirtioPci *vp = dev->opaque;

    (void)value;
    if (!vp) {
        return;
    }
    if (write_touches(off, size, PCI_COMMAND, 2)) {
        pthread_mutex_lock(&vp->irq_lock);
        vp->intx_disabled = pci_config_read(dev, PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE;
        intx_update(vp, true);
        pthread_mutex_unlock(&vp->irq_lock);
    }
    if (vp->msix_present && write_touches(off, size, (unsigned)vp->msix_cap + 2, 2)) {
        uint16_t ctrl = (uint16_t)pci_config_read(dev, (unsigned)vp->msix_cap + 2, 2);
        pthread_mutex_lock(&vp->irq_lock);
        vp->msix_enabled = ctrl & MSIX_CTRL_ENABLE;
        vp->msix_function_mask = ctrl & MSIX_CTRL_FMASK;
        if (vp->msix_enabled) {
            for (unsigned v = 0; v < vp->msix_nvec; v++) {
                msix_sync_vector(vp, v);
            }
            msix_flush_pending(vp);
        }
        intx_update(vp, true);      /* INTx is off while MSI-X is on */
        pthread_mutex_unlock(&vp->irq_lock);
    }
}

static const PciDeviceOps virtio_pci_ops = {
    .bar_read = virtio_pci_bar_read,
    .bar_write = virtio_pci_bar_write,
    .bar_remap = virtio_pci_bar_remap,
    .config_write = virtio_pci_config_write,
};

/* ---- creation ---------------------------------------------------------------------------------- */

static int add_vendor_cap(PciDevice *dev, uint8_t type, uint32_t offset, uint32_t length,
                          bool notify)
{
    /* struct virtio_pci_cap after cap_vndr/cap_next: cap_len, cfg_type, bar,
     * id, padding[2], offset, length [, notify_off_multiplier]. */
    uint8_t body[18] = { 0 };
    size_t len = notify ? 18 : 14;

    body[0] = (uint8_t)(len + 2);
    body[1] = type;
    body[2] = VIRTIO_PCI_BAR;
    put_le(body + 6, offset, 4);
    put_le(body + 10, length, 4);
    if (notify) {
        put_le(body + 14, VIRTIO_PCI_NOTIFY_MULT, 4);
    }
    return pci_device_add_capability(dev, PCI_CAP_ID_VNDR, body, len);
}

/* MSI-X is offered only with a way to deliver it: irqfds on GSI routes
 * (which need eventfd notifiers) or KVM_SIGNAL_MSI. */
static bool msix_possible(Vm *vm, bool have_eventfd)
{
    if (keel_avoid(KEEL_PATH_MSIX)) {
        return false;
    }
    return (have_eventfd && vm_irqfd_usable(vm) && vm_gsi_routing_usable(vm)) ||
           vm_signal_msi_usable(vm);
}

static void setup_intx(VirtioPci *vp)
{
    int r;

    if (!vp->intx_irq || !vm_irqfd_usable(vp->vm)) {
        return;
    }
    if (keel_event_notifier_init(&vp->intx_notifier, false) < 0) {
        return;
    }
    if (keel_event_notifier_init(&vp->intx_resample, false) < 0) {
        keel_event_notifier_cleanup(&vp->intx_notifier);
        return;
    }
    if (!keel_event_notifier_is_eventfd(&vp->intx_notifier) ||
        !keel_event_notifier_is_eventfd(&vp->intx_resample)) {
        goto fail;
    }
    r = vm_set_irqfd(vp->vm, vp->intx_irq, keel_event_notifier_get_wfd(&vp->intx_notifier),
                     keel_event_notifier_get_wfd(&vp->intx_resample), true);
    if (r < 0) {
        if (r != -ENOTSUP) {
            keel_log("%s: level-triggered irqfd (resample) for IRQ %u: %s: INTx through "
                     "KVM_IRQ_LINE", vp->name, vp->intx_irq, keel_errno_name(-r));
        }
        goto fail;
    }
    keel_aio_set_event_notifier(keel_main_aio_context(), &vp->intx_resample,
                                intx_resample_cb, NULL);
    vp->intx_irqfd = true;
    return;
fail:
    keel_event_notifier_cleanup(&vp->intx_notifier);
    keel_event_notifier_cleanup(&vp->intx_resample);
}

static void setup_msix(VirtioPci *vp)
{
    bool irqfd = vm_irqfd_usable(vp->vm) && vm_gsi_routing_usable(vp->vm);
    uint8_t body[10];

    vp->msix_nvec = (unsigned)vp->num_queues + 1;
    vp->msix = g_new0(VirtioMsixVector, vp->msix_nvec);
    for (unsigned v = 0; v < vp->msix_nvec; v++) {
        VirtioMsixVector *vec = &vp->msix[v];
        vec->ctrl = MSIX_ENTRY_MASKED;
        vec->gsi = -1;
        if (irqfd && keel_event_notifier_init(&vec->irqfd, false) == 0) {
            vec->irqfd_init = true;
            if (!keel_event_notifier_is_eventfd(&vec->irqfd)) {
                keel_event_notifier_cleanup(&vec->irqfd);
                vec->irqfd_init = false;
            }
        }
    }
    vp->msix_use_irqfd = irqfd && vp->msix[0].irqfd_init;
    put_le(body, vp->msix_nvec - 1, 2);
    put_le(body + 2, VIRTIO_PCI_MSIX_TABLE_OFF | VIRTIO_PCI_BAR, 4);
    put_le(body + 6, VIRTIO_PCI_MSIX_PBA_OFF | VIRTIO_PCI_BAR, 4);
    vp->msix_cap = pci_device_add_capability(vp->pci, PCI_CAP_ID_MSIX, body, sizeof(body));
    if (vp->msix_cap < 0) {
        return;
    }
    /* Enable and function-mask are the guest's. */
    pci_device_set_wmask(vp->pci, (unsigned)vp->msix_cap + 3, 1, 0xc0);
    vp->msix_present = true;
}

static void transport_notify_queue(void *transport, int q)
{
    virtio_pci_notify_queue(transport, q);
}

static void transport_set_needs_reset(void *transport)
{
    virtio_pci_set_needs_reset(transport);
}

static void transport_config_changed(void *transport)
{
    virtio_pci_config_changed(transport);
}

static const VirtioTransportOps virtio_pci_transport_ops = {
    .notify_queue = transport_notify_queue,
    .set_needs_reset = transport_set_needs_reset,
    .config_changed = transport_config_changed,
};

VirtioPci *virtio_pci_new(Vm *vm, PciHost *host, const char *name, uint16_t virtio_id,
                          uint32_t class_code, uint64_t host_features, uint16_t queue_size,
                          unsigned config_len, unsigned intx_irq, VirtioDevice *vdev,
                          char *err, size_t errlen)
{
    int num_queues = vdev->num_queues;
    VirtioPci *vp;

    if (num_queues < 1 || num_queues > VIRTIO_PCI_MAX_QUEUES ||
        config_len > VIRTIO_PCI_DEVCFG_MAX || !queue_size || (queue_size & (queue_size - 1)) ||
        queue_size > VIRTQUEUE_MAX_SIZE) {
        snprintf(err, errlen, "%s: bad virtio-pci parameters", name);
        return NULL;
    }
    vp = g_new0(VirtioPci, 1);
    vp->vm = vm;
    vp->name = name;
    vp->vdev = vdev;
    vp->config_len = config_len;
    vp->host_features = host_features | (1ull << VIRTIO_F_VERSION_1);
    vp->num_queues = num_queues;
    vp->msix_config_vector = VIRTIO_NO_VECTOR;
    vp->msix_cap = -1;
    vp->intx_irq = intx_irq;
    pthread_mutex_init(&vp->irq_lock, NULL);
    vp->use_ioeventfd = vm_ioeventfd_usable(vm);
    for (int q = 0; q < num_queues; q++) {
        VirtioPciQueue *pq = &vp->queues[q];
        pq->vp = vp;
        pq->index = q;
        pq->max_size = pq->size = queue_size;
        pq->msix_vector = VIRTIO_NO_VECTOR;
        if (!keel_event_notifier_is_eventfd(core_notifier(vp, q))) {
            vp->use_ioeventfd = false;      /* KVM needs an eventfd */
        }
    }

    vp->pci = pci_device_new(host, name, VIRTIO_PCI_VENDOR_ID,
                             (uint16_t)(VIRTIO_PCI_DEVICE_ID_BASE + virtio_id), class_code,
                             1, VIRTIO_PCI_VENDOR_ID, 0x1100, &virtio_pci_ops, vp);
    if (!vp->pci) {
        snprintf(err, errlen, "%s: no free PCI slot", name);
        goto fail;
    }
    if (pci_device_add_bar(vp->pci, VIRTIO_PCI_BAR, PCI_BAR_MEM32, VIRTIO_PCI_BAR_SIZE,
                           false) < 0 ||
        add_vendor_cap(vp->pci, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_COMMON_OFF,
                       VIRTIO_PCI_COMMON_LEN, false) < 0 ||
        add_vendor_cap(vp->pci, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_ISR_OFF, 1, false) < 0 ||
        add_vendor_cap(vp->pci, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_DEVCFG_OFF,
                       config_len, false) < 0 ||
        add_vendor_cap(vp->pci, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_PCI_NOTIFY_OFF,
                       (uint32_t)num_queues * VIRTIO_PCI_NOTIFY_MULT, true) < 0) {
        snprintf(err, errlen, "%s: cannot lay out the PCI function", name);
        goto fail_pci;
    }
    if (msix_possible(vm, keel_event_notifier_is_eventfd(core_notifier(vp, 0)))) {
        setup_msix(vp);
    }
    /* INTx belongs to us rather than pci.c (realized without an IRQ): its
     * level must be driven from threads that do not hold the global mutex. */
    if (pci_device_realize(vp->pci, 0) < 0) {
        snprintf(err, errlen, "%s: no room for the BAR", name);
        goto fail_pci;
    }
    if (intx_irq) {
        pci_config_set(vp->pci, PCI_INTERRUPT_LINE, intx_irq, 1);
        pci_config_set(vp->pci, PCI_INTERRUPT_PIN, 1, 1);      /* INTA# */
    }
    setup_intx(vp);
    virtio_device_bind_transport(vdev, &virtio_pci_transport_ops, vp);
    return vp;

fail_pci:
    /* The function stays on the bus (the host owns it) but goes dark. */
    vp->pci->opaque = NULL;
fail:
    if (vp->msix) {
        for (unsigned v = 0; v < vp->msix_nvec; v++) {
            if (vp->msix[v].irqfd_init) {
                keel_event_notifier_cleanup(&vp->msix[v].irqfd);
            }
        }
        g_free(vp->msix);
    }
    pthread_mutex_destroy(&vp->irq_lock);
    g_free(vp);
    return NULL;
}

void virtio_pci_free(VirtioPci *vp)
{
    if (!vp) {
        return;
    }
    virtio_pci_stop(vp);
    assign_ioeventfds(vp, PCI_BAR_UNMAPPED);
    if (vp->intx_irqfd) {
        vm_set_irqfd(vp->vm, vp->intx_irq, keel_event_notifier_get_wfd(&vp->intx_notifier),
                     -1, false);
        keel_aio_set_event_notifier(keel_main_aio_context(), &vp->intx_resample, NULL, NULL);
        keel_event_notifier_cleanup(&vp->intx_notifier);
        keel_event_notifier_cleanup(&vp->intx_resample);
    }
    for (unsigned v = 0; v < vp->msix_nvec; v++) {
        VirtioMsixVector *vec = &vp->msix[v];
        if (vec->irqfd_ready) {
            vm_set_irqfd(vp->vm, (uint32_t)vec->gsi, keel_event_notifier_get_wfd(&vec->irqfd),
                         -1, false);
        }
        if (vec->irqfd_init) {
            keel_event_notifier_cleanup(&vec->irqfd);
        }
    }
    if (vp->intx_level) {
        vm_set_irq_line(vp->vm, vp->intx_irq, 0);
    }
    virtio_device_bind_transport(vp->vdev, NULL, NULL);
    /* The PciDevice stays with the host until pci_host_free; make it inert. */
    vp->pci->opaque = NULL;
    g_free(vp->msix);
    pthread_mutex_destroy(&vp->irq_lock);
    g_free(vp);
}

/* ---- reporting ------------------------------------------------------------------------------------ */

void virtio_pci_describe(VirtioPci *vp, char *buf, size_t len)
{
    const char *msix;

    if (!vp->msix_present) {
        msix = keel_avoid(KEEL_PATH_MSIX) ? "off(KEEL_AVOID)" : "off(no-irqfd-route-or-signal-msi)";
    } else {
        msix = vp->msix_use_irqfd ? "irqfd" : "signal-msi";
    }
    snprintf(buf, len, "notify=%s intx=%s msix=%s",
             vp->use_ioeventfd ? "ioeventfd" : "exit-handler",
             vp->intx_irqfd ? "irqfd-resample" : "irq-line", msix);
}

static const char *msix_feature_active(const char **reason)
{
    if (keel_avoid(KEEL_PATH_MSIX)) {
        *reason = "KEEL_AVOID";
        return "intx";
    }
    *reason = "default";
    return "msix";
}

/* Whether this KVM can take a level-triggered irqfd with a resample fd. */
static const char *intx_feature_active(const char **reason)
{
    int fd, r;

    if (keel_avoid(KEEL_PATH_IRQFD)) {
        *reason = "KEEL_AVOID";
        return "irq-line";
    }
    if (strcmp(keel_event_notifier_backend(NULL), "eventfd") != 0) {
        *reason = "event-notifier=pipe";     /* an irqfd must be an eventfd */
        return "irq-line";
    }
    fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        *reason = "no-dev-kvm";
        return "irq-line";
    }
    r = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD_RESAMPLE);
    close(fd);
    if (r <= 0) {
        *reason = "KVM_CAP_IRQFD_RESAMPLE=0";
        return "irq-line";
    }
    *reason = "default";
    return "irqfd-resample";
}

static const KeelFeature virtio_msix_feature = {
    "virtio-msix", "msix,intx", msix_feature_active,
};
static const KeelFeature virtio_intx_feature = {
    "virtio-intx", "irqfd-resample,irq-line", intx_feature_active,
};

void virtio_pci_features_register(void)
{
    keel_feature_register(&virtio_msix_feature);
    keel_feature_register(&virtio_intx_feature);
}
