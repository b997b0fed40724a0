/*
 * vmm/virtio-pci.h — the virtio 1.x PCI transport ("modern" only): a PCI
 * function 1AF4:(1040 + virtio device id), revision 1, whose vendor
 * capabilities (0x09) point at the common configuration, notification, ISR
 * and device-configuration structures in one 32-bit memory BAR (BAR 0), plus
 * an MSI-X capability whose table and PBA live in the same BAR:
 *
 *   BAR0 0x0000 common cfg   0x1000 ISR   0x2000 device cfg
 *        0x3000 notify (queue q at 0x3000 + 4 * q: notify_off_multiplier 4)
 *        0x4000 MSI-X table  0x5000 MSI-X PBA        (BAR size 32 KiB)
 *
 * Notifications (guest → device).  Each queue has a host notifier (a
 * KeelEventNotifier).  When KVM has ioeventfd and the notifier is an
 * eventfd, the queue's notify address is a KVM ioeventfd on it, so a kick
 * never leaves the kernel; otherwise the vCPU's MMIO exit reaches
 * bar_write, which sets the same notifier.  The device watches the notifier
 * in the queue's AioContext.  The ioeventfds follow BAR moves (bar_remap).
 *
 * Interrupts (device → guest), from any thread, never taking the global
 * mutex (an iothread must not wait for a vCPU that waits for it):
 *   - MSI-X (when the guest enabled it): per vector an irqfd on a KVM MSI
 *     route (vm_msi_route_*, which rebuilds the irqchip routes each time),
 *     else KVM_SIGNAL_MSI; masked vectors set their PBA bit and fire on
 *     unmask.  The capability is offered only when one of those works and
 *     KEEL_AVOID does not name "msix".
 *   - INTx otherwise: ISR bits (bit 0 queue, bit 1 config) read-to-clear;
 *     the line is an irqfd with a resample fd (KVM de-asserts it at EOI and
 *     we re-assert while ISR is still set), else KVM_IRQ_LINE levels driven
 *     under the device's irq lock.  INTX_DISABLE in the command register is
 *     honoured.
 * KEEL_AVOID=irqfd / signal-msi / msix force the fallbacks (via vmm/kvm.h's
 * seams and keel_avoid()).
 *
 * Status and reset.  Writing 0 to device_status resets the device: the
 * virtio core (vmm/virtio-core.h) quiesces its queues, each in its home
 * thread (no handler runs and no request is in flight afterwards; it may
 * drop the global mutex meanwhile), then the queues forget their rings.  FEATURES_OK is refused (reads back clear) for
 * features the device did not offer or without VERSION_1; DRIVER_OK starts
 * the enabled queues (a ring outside RAM sets NEEDS_RESET instead).
 * NEEDS_RESET (0x40) is set by virtio_pci_set_needs_reset() from any thread
 * and announced with a configuration interrupt.  config_generation counts
 * device-configuration changes (virtio_pci_config_changed()).
 *
 * Ownership: the device (virtio-blk) owns a VirtioDevice (the core: queues,
 * rings, notifiers) and a VirtioPci made with virtio_pci_new() for it, freed
 * with virtio_pci_free() before the core.  The PciDevice belongs to the
 * PciHost.
 *
 * Thread rules:
 *   virtio_pci_new / virtio_pci_free          main thread, vCPUs not running
 *   register accesses (bar_read/bar_write, config_write, bar_remap) and the
 *   device hooks they call                     vCPU thread, global mutex held
 *   virtio_pci_notify_queue, virtio_pci_set_needs_reset, virtio_pci_config_changed,
 *   virtio_pci_stats                           any thread
 *   virtio_pci_reset                           global mutex held (vCPU or main)
 */
#ifndef KEEL_VMM_VIRTIO_PCI_H
#define KEEL_VMM_VIRTIO_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "compat/event-notifier.h"
#include "vmm/pci.h"
#include "vmm/virtio-core.h"
#include "vmm/virtqueue.h"

#define VIRTIO_PCI_VENDOR_ID 0x1af4
#define VIRTIO_PCI_DEVICE_ID_BASE 0x1040
#define VIRTIO_PCI_MAX_QUEUES VIRTIO_MAX_QUEUES
#define VIRTIO_NO_VECTOR 0xffff

/* device_status bits */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

/* transport feature bits */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

/* BAR 0 layout */
#define VIRTIO_PCI_BAR 0
#define VIRTIO_PCI_BAR_SIZE 0x8000
#define VIRTIO_PCI_COMMON_OFF 0x0000
#define VIRTIO_PCI_COMMON_LEN 0x38
#define VIRTIO_PCI_ISR_OFF 0x1000
#define VIRTIO_PCI_DEVCFG_OFF 0x2000
#define VIRTIO_PCI_DEVCFG_MAX 0x100
#define VIRTIO_PCI_NOTIFY_OFF 0x3000
#define VIRTIO_PCI_NOTIFY_MULT 4
#define VIRTIO_PCI_MSIX_TABLE_OFF 0x4000
#define VIRTIO_PCI_MSIX_PBA_OFF 0x5000

typedef struct VirtioPci VirtioPci;

typedef struct VirtioPciQueue {
    VirtioPci *vp;                  /* back pointers, for notifier callbacks */
    int index;
    /* What the driver programmed (common cfg). */
    uint16_t size;
    uint16_t max_size;
    uint16_t msix_vector;
    bool enabled;
    uint64_t desc, driver, device;
    /* Guest → device: KVM's ioeventfd on the core queue's notifier. */
    bool ioeventfd_assigned;
    uint64_t ioeventfd_addr;
} VirtioPciQueue;

typedef struct VirtioMsixVector {
    uint32_t addr_lo, addr_hi, data, ctrl;  /* the table entry */
    bool pending;                   /* PBA bit */
    int gsi;                        /* KVM MSI route, -1: none */
    uint64_t route_addr;            /* what the route says */
    uint32_t route_data;
    KeelEventNotifier irqfd;        /* assigned to gsi when irqfd_ready */
    bool irqfd_init, irqfd_ready;
} VirtioMsixVector;

typedef struct VirtioPciStats {
    uint64_t exit_kicks;            /* notify writes that reached bar_write */
    uint64_t irqs_intx_irqfd, irqs_intx_ioctl;
    uint64_t irqs_msix_irqfd, irqs_msix_ioctl;
    uint64_t irqs_masked;           /* MSI-X deliveries deferred to the PBA */
    uint64_t config_irqs;
    uint64_t resets;
} VirtioPciStats;

struct VirtioPci {
    Vm *vm;
    PciDevice *pci;
    const char *name;
    VirtioDevice *vdev;             /* the device's core: queues, config, hooks */
    unsigned config_len;

    /* Common configuration (vCPU thread, global mutex). */
    uint64_t host_features;
    uint64_t guest_features;
    uint32_t device_feature_select, driver_feature_select;
    uint8_t status;
    uint8_t config_generation;      /* atomic */
    uint16_t msix_config_vector;
    uint16_t queue_select;
    int num_queues;
    bool started;                   /* the core's queues run */
    bool needs_reset;               /* atomic; reads as VIRTIO_STATUS_NEEDS_RESET */
    VirtioPciQueue queues[VIRTIO_PCI_MAX_QUEUES];

    /* Notification paths chosen at realize. */
    bool use_ioeventfd;             /* every queue's notify address has one */
    unsigned intx_irq;

    /* Interrupt state, under irq_lock (any thread). */
    pthread_mutex_t irq_lock;
    uint8_t isr;
    bool intx_disabled;             /* command register INTX_DISABLE */
    bool intx_level;                /* KVM_IRQ_LINE mode: what we asserted */
    bool intx_irqfd;                /* INTx through an irqfd + resample fd */
    bool intx_asserted;             /* irqfd mode: written, no EOI (resample) yet */
    KeelEventNotifier intx_notifier, intx_resample;
    bool msix_present;
    bool msix_use_irqfd;            /* routes + irqfd for vectors, else SIGNAL_MSI */
    bool msix_enabled, msix_function_mask;
    int msix_cap;                   /* config offset, or -1 */
    unsigned msix_nvec;
    VirtioMsixVector *msix;
    VirtioPciStats stats;           /* counters: atomic increments */
    unsigned guest_logs;            /* guest-provoked messages so far (atomic) */
};

/* Creates and realizes the function for @vdev (virtio_device_init done;
 * its queues are the function's, binds itself as @vdev's transport):
 * @virtio_id (2 = block), @class_code (24-bit), @host_features (VERSION_1
 * is added), queues of at most @queue_size entries, @config_len bytes of
 * device configuration, INTx on legacy IRQ @intx_irq.  The MSI-X table has
 * one vector per queue plus one for configuration changes (QEMU's
 * vectors = num-queues + 1).  Returns NULL with a message in @err. */
VirtioPci *virtio_pci_new(Vm *vm, PciHost *host, const char *name, uint16_t virtio_id,
                          uint32_t class_code, uint64_t host_features, uint16_t queue_size,
                          unsigned config_len, unsigned intx_irq, VirtioDevice *vdev,
                          char *err, size_t errlen);

/* Stops the device (its core's queues), removes its ioeventfds/irqfds and
 * frees it (not @vdev).  Main thread, global mutex held, vCPUs stopped. */
void virtio_pci_free(VirtioPci *vp);

/* The device reset (also what a write of 0 to device_status does). */
void virtio_pci_reset(VirtioPci *vp);

/* Quiesces the device (virtio_device_stop) without touching its
 * registers: for teardown.  Global mutex held. */
void virtio_pci_stop(VirtioPci *vp);

static inline VirtioPciQueue *virtio_pci_queue(VirtioPci *vp, int q)
{
    return &vp->queues[q];
}

static inline bool virtio_pci_has_feature(const VirtioPci *vp, unsigned bit)
{
    return (vp->guest_features >> bit) & 1;
}

/* Interrupt for queue @q (the caller checked virtqueue_should_notify). */
void virtio_pci_notify_queue(VirtioPci *vp, int q);

/* Sets NEEDS_RESET and sends a configuration interrupt. */
void virtio_pci_set_needs_reset(VirtioPci *vp);

/* The device configuration changed: bump config_generation, interrupt. */
void virtio_pci_config_changed(VirtioPci *vp);

/* One line naming the notification paths, e.g. "notify=ioeventfd
 * intx=irqfd-resample msix=irqfd". */
void virtio_pci_describe(VirtioPci *vp, char *buf, size_t len);

/* Registers "virtio-msix" in the features report (msix | intx). */
void virtio_pci_features_register(void);

#endif
