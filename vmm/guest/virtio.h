/*
 * vmm/guest/virtio.h — the guest's virtio-pci (modern) transport, split
 * virtqueue and virtio-blk definitions.
 *
 * Contract:
 *   virtio_pci_find()   picks a virtio-blk function (1af4:1042, or the
 *                       transitional 1af4:1001 when it has the modern
 *                       capabilities), assigns unassigned memory BARs,
 *                       enables memory decode and bus mastering, and maps
 *                       the common/notify/ISR/device-config structures.
 *   virtio_pci_*        status, features, reset.
 *   vq_*                one split virtqueue: the driver owns the rings
 *                       (allocated from the guest heap, identity-mapped),
 *                       adds chains to the avail ring, kicks with
 *                       notification suppression (EVENT_IDX or the
 *                       NO_NOTIFY flag), and reaps the used ring.
 * All of it runs at CPL3 on the boot CPU, except the vq_* ring operations,
 * whose callers serialise them per queue (blk.h).  Ordering against the device: x86 stores are not reordered
 * with stores nor loads with loads, so publishing needs only a compiler
 * barrier; the checks that read the device's event index after publishing
 * need a full fence (store → load).
 */
#ifndef KEEL_GUEST_VIRTIO_H
#define KEEL_GUEST_VIRTIO_H

#include "vmm/guest/guest.h"

/* ---- PCI capabilities (virtio 1.x, 4.1.4) ---------------------------------- */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG    3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4

/* Common configuration structure offsets. */
#define VCC_DEVICE_FEATURE_SELECT 0x00
#define VCC_DEVICE_FEATURE        0x04
#define VCC_DRIVER_FEATURE_SELECT 0x08
#define VCC_DRIVER_FEATURE        0x0c
#define VCC_MSIX_CONFIG           0x10
#define VCC_NUM_QUEUES            0x12
#define VCC_DEVICE_STATUS         0x14
#define VCC_CONFIG_GENERATION     0x15
#define VCC_QUEUE_SELECT          0x16
#define VCC_QUEUE_SIZE            0x18
#define VCC_QUEUE_MSIX_VECTOR     0x1a
#define VCC_QUEUE_ENABLE          0x1c
#define VCC_QUEUE_NOTIFY_OFF      0x1e
#define VCC_QUEUE_DESC            0x20
#define VCC_QUEUE_DRIVER          0x28
#define VCC_QUEUE_DEVICE          0x30

/* Device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER      0x02
#define VIRTIO_STATUS_DRIVER_OK   0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

/* Feature bits. */
#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14
#define VIRTIO_F_INDIRECT_DESC    28
#define VIRTIO_F_EVENT_IDX        29
#define VIRTIO_F_VERSION_1        32
#define FEATURE(bit) (1ull << (bit))

/* ---- split virtqueue (2.6) ------------------------------------------------- */
#define VRING_DESC_F_NEXT     1
#define VRING_DESC_F_WRITE    2
#define VRING_DESC_F_INDIRECT 4
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY     1

struct vring_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct vring_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[];        /* [size], then uint16_t used_event */
};

struct vring_used_elem {
    uint32_t id;
    uint32_t len;
};

struct vring_used {
    uint16_t flags;
    uint16_t idx;
    struct vring_used_elem ring[];   /* [size], then uint16_t avail_event */
};

/* ---- virtio-blk (5.2) ------------------------------------------------------ */
#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20

struct virtio_blk_outhdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;        /* 512-byte units, whatever blk_size says */
};

struct virtio_blk_discard_write_zeroes {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

/* Device configuration offsets. */
#define VBLK_CFG_CAPACITY       0
#define VBLK_CFG_SIZE_MAX       8
#define VBLK_CFG_SEG_MAX        12
#define VBLK_CFG_BLK_SIZE       20
#define VBLK_CFG_MAX_DISCARD_SECTORS      36
#define VBLK_CFG_MAX_DISCARD_SEG          40
#define VBLK_CFG_MAX_WRITE_ZEROES_SECTORS 48
#define VBLK_CFG_MAX_WRITE_ZEROES_SEG     52

/* ---- transport ------------------------------------------------------------- */
struct virtio_pci_dev {
    struct pci_func *pci;
    volatile uint8_t *common;
    volatile uint8_t *isr;
    volatile uint8_t *device_cfg;
    volatile uint8_t *notify_base;
    uint32_t notify_off_multiplier;
    uint64_t device_features;
    uint64_t features;           /* negotiated */
    unsigned irq;                /* legacy INTx line (PIC), 0xff if none */
    /* MSI-X (virtio_msix_enable): queue n uses table entry n. */
    bool msix;
    volatile uint32_t *msix_table;
    unsigned msix_entries;
};

/* Finds the index-th usable virtio-blk function; false (after printing
 * why) if there is none. */
bool virtio_pci_find(struct virtio_pci_dev *d, unsigned index);
uint8_t virtio_get_status(struct virtio_pci_dev *d);
void virtio_set_status(struct virtio_pci_dev *d, uint8_t status);
/* Writes 0 and waits for the device to read back 0. */
bool virtio_reset(struct virtio_pci_dev *d);
/* ACKNOWLEDGE | DRIVER, offers `wanted & device features` (VERSION_1 is
 * required), FEATURES_OK and checks the device kept it. */
bool virtio_negotiate(struct virtio_pci_dev *d, uint64_t wanted);
/* test=hostile: moves the BAR holding the common configuration to a free
 * 1 MiB-aligned spot of the BAR window (@back: to where it was), maps it
 * and re-reads the capabilities, so d's pointers follow.  The caller
 * recomputes queue notify pointers (vq_refresh_notify). */
bool virtio_pci_move_bar(struct virtio_pci_dev *d, bool back);
/* Enables the function's MSI-X with every entry masked and no config
 * vector; from then on vq_init gives queue n vector n (and fails if the
 * device does not take it).  False without an MSI-X capability of at
 * least `entries` entries. */
bool virtio_msix_enable(struct virtio_pci_dev *d, unsigned entries);
/* Points MSI-X entry `entry` at the local APIC `apic_id` with `vector`
 * (fixed, edge) and unmasks it. */
void virtio_msix_route(struct virtio_pci_dev *d, unsigned entry, uint32_t apic_id,
                       unsigned vector);
uint8_t virtio_cfg8(struct virtio_pci_dev *d, unsigned off);
uint32_t virtio_cfg32(struct virtio_pci_dev *d, unsigned off);
uint64_t virtio_cfg64(struct virtio_pci_dev *d, unsigned off);

struct virtqueue {
    struct virtio_pci_dev *dev;
    unsigned index;
    unsigned size;
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
    volatile uint16_t *notify;
    volatile uint16_t *used_event;     /* in the avail ring */
    volatile uint16_t *avail_event;    /* in the used ring */
    bool event_idx;
    uint16_t avail_idx;          /* next avail slot (our shadow of idx) */
    uint16_t kicked_idx;         /* avail idx at the last notify decision */
    uint16_t last_used;          /* next used entry to consume */
    uint64_t kicks, kicks_suppressed;
};

/* Sets up queue `index` with at most max_size entries (0: the device's
 * maximum); the rings come from the heap; its MSI-X vector is `index`
 * with MSI-X on, else none.  Called between FEATURES_OK and DRIVER_OK. */
bool vq_init(struct virtqueue *vq, struct virtio_pci_dev *d, unsigned index,
             unsigned max_size);
/* Publishes a chain whose head descriptor is `head`. */
static inline void vq_add(struct virtqueue *vq, uint16_t head)
{
    vq->avail->ring[vq->avail_idx & (vq->size - 1)] = head;
    vq->avail_idx++;
    barrier();
    ((volatile struct vring_avail *)vq->avail)->idx = vq->avail_idx;
}
/* Re-reads queue vq's notify address (after a BAR move). */
void vq_refresh_notify(struct virtqueue *vq);
/* Notifies the device of everything added since the last kick, unless the
 * device asked not to be (EVENT_IDX avail_event, or NO_NOTIFY). */
void vq_kick(struct virtqueue *vq);
/* Pops one used element; false when the used ring is empty. */
static inline bool vq_pop_used(struct virtqueue *vq, uint32_t *id, uint32_t *len)
{
    volatile struct vring_used *used = vq->used;

    if (used->idx == vq->last_used) {
        return false;
    }
    barrier();                   /* the entry after the index (loads in order) */
    const volatile struct vring_used_elem *e = &used->ring[vq->last_used & (vq->size - 1)];
    *id = e->id;
    *len = e->len;
    vq->last_used++;
    return true;
}
static inline bool vq_has_used(struct virtqueue *vq)
{
    return ((volatile struct vring_used *)vq->used)->idx != vq->last_used;
}
/* Interrupt suppression: on = interrupt at the next used entry; off = none
 * (poll mode).  vq_enable_irq returns false if entries arrived meanwhile
 * (the caller must not sleep then). */
bool vq_enable_irq(struct virtqueue *vq);
void vq_disable_irq(struct virtqueue *vq);

#endif
