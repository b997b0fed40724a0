/*
 * tests/vmm-virtio-test.c — virtio-blk and its virtio-pci transport and
 * virtqueue, driven by this test as the guest driver, without KVM.
 *
 * The "VM" is guest RAM in a plain mapping plus the vCPU buses; its KVM
 * fds are -1 and its capabilities say "none", so every KVM path takes its
 * fallback (kicks through the BAR write, interrupts through the ioctls,
 * which fail harmlessly and are counted).  The test thread plays the vCPU:
 * it reaches the device through the PCI configuration ports and the BAR
 * (vmm/bus.h, as the exit handler would), builds rings and descriptor
 * chains in guest RAM, and runs the main loop to let the device work.
 *
 * Covered: PCI identity and capabilities; feature negotiation and
 * FEATURES_OK refusal; device configuration; every request type and its
 * error statuses; data landing in the image file; malformed chains of
 * every kind (IOERR when the status byte is usable, NEEDS_RESET + config
 * interrupt otherwise, the device usable after a reset); EVENT_IDX and
 * NO_INTERRUPT suppression and per-pass coalescing of interrupts; MSI-X
 * table, masking and PBA; merging of adjacent requests (and splitting a
 * merged request that failed); a reset with requests in flight (they complete
 * into the old ring before the reset finishes, nothing after); the same
 * data path with the drive in an iothread; a two-queue device with each
 * queue in its own iothread (MQ, num_queues, MSI-X vectors, data across
 * queues, reset with I/O in flight on both, NEEDS_RESET from one queue
 * stopping both), and one made from a JSON -device line with
 * iothread-vq-mapping (werror=stop held and retried per queue).
 */
#include "config.h"

#include "tests/keel-test.h"
#include "vmm/virtio-blk.h"
#include "vmm/virtio-pci.h"
#include "vmm/pci.h"
#include "vmm/machine.h"
#include "vmm/options.h"
#include "block/block-backend.h"
#include "loop/iothread.h"
#include "loop/main-loop.h"
#include "compat/osdep.h"

#include <fcntl.h>
#include <glib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define RAM_SIZE (32u << 20)
#define DISK_SIZE (4u << 20)
#define QSIZE 64

/* Guest-physical layout of our driver's structures. */
#define GPA_DESC 0x10000
#define GPA_AVAIL 0x11000
#define GPA_USED 0x12000
#define GPA_HDR 0x20000        /* 16-byte headers, 32 apart */
#define GPA_STATUS 0x21000     /* status bytes, 16 apart */
#define GPA_DATA 0x100000      /* data buffers, 64 KiB apart */
#define GPA_INDIRECT 0x30000

static KvmCaps fake_caps;
static Vm vm;
static Vm *machine = &vm;       /* whose PCI ports conf_read/conf_write use */
static uint8_t *ram;
static PciHost *host;

/* ---- the fake machine ------------------------------------------------------ */

static void machine_init(bool signal_msi)
{
    memset(&vm, 0, sizeof(vm));
    memset(&fake_caps, 0, sizeof(fake_caps));
    fake_caps.signal_msi = signal_msi;
    vm.kvm_fd = vm.vm_fd = vm.ram_fd = -1;
    vm.caps = &fake_caps;
    bus_init(&vm.pio_bus, "pio");
    bus_init(&vm.mmio_bus, "mmio");
    ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ram == MAP_FAILED) {
        keel_test_skip_all("cannot map guest RAM");
    }
    vm.ram = ram;
    vm.ram_size = RAM_SIZE;
    vm.slots[0] = (VmRamSlot) { .gpa = 0, .size = RAM_SIZE, .hva = ram };
    vm.nr_slots = 1;
    vm.low_ram_end = RAM_SIZE;
    host = pci_host_new(&vm);
}

static void machine_free(void)
{
    pci_host_free(host);
    bus_destroy(&vm.pio_bus);
    bus_destroy(&vm.mmio_bus);
    munmap(ram, RAM_SIZE);
}

static uint32_t conf_read(unsigned slot, unsigned reg, unsigned size)
{
    uint64_t v = 0;

    bus_write(&machine->pio_bus, 0xcf8, 4, 0x80000000u | slot << 11 | (reg & 0xfc));
    bus_read(&machine->pio_bus, 0xcfc + (reg & 3), size, &v);
    return (uint32_t)v;
}

static void conf_write(unsigned slot, unsigned reg, unsigned size, uint32_t v)
{
    bus_write(&machine->pio_bus, 0xcf8, 4, 0x80000000u | slot << 11 | (reg & 0xfc));
    bus_write(&machine->pio_bus, 0xcfc + (reg & 3), size, v);
}

/* ---- our "driver" ------------------------------------------------------------------ */

typedef struct Drv {
    VirtioBlk *blk;
    VirtioPci *vp;
    KeelAioContext *ctx;
    unsigned slot;
    uint64_t bar;
    uint16_t qsize;
    uint16_t avail_idx;
    uint16_t used_seen;
    bool event_idx;
    char path[64];
    int fd;                 /* the image, for checking from the "host" */
} Drv;

static uint64_t mmio_read(Drv *d, unsigned off, unsigned size)
{
    uint64_t v = 0;

    bus_read(&vm.mmio_bus, d->bar + off, size, &v);
    return v;
}

static void mmio_write(Drv *d, unsigned off, unsigned size, uint64_t v)
{
    bus_write(&vm.mmio_bus, d->bar + off, size, v);
}

static uint8_t status_reg(Drv *d)
{
    return (uint8_t)mmio_read(d, 0x14, 1);
}

static void *gpa(uint64_t a)
{
    return ram + a;
}

static void put_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    uint8_t *p = gpa(table + 16ull * i);

    memcpy(p, &addr, 8);
    memcpy(p + 8, &len, 4);
    memcpy(p + 12, &flags, 2);
    memcpy(p + 14, &next, 2);
}

static uint16_t used_idx(void)
{
    return __atomic_load_n((uint16_t *)gpa(GPA_USED + 2), __ATOMIC_ACQUIRE);
}

static void used_elem(uint16_t i, uint32_t *id, uint32_t *len, uint16_t qsize)
{
    uint8_t *e = gpa(GPA_USED + 4 + 8ull * (i % qsize));

    memcpy(id, e, 4);
    memcpy(len, e + 4, 4);
}

static void publish(Drv *d, uint16_t head)
{
    uint16_t *ring = gpa(GPA_AVAIL + 4);

    ring[d->avail_idx % d->qsize] = head;
    d->avail_idx++;
    __atomic_store_n((uint16_t *)gpa(GPA_AVAIL + 2), d->avail_idx, __ATOMIC_RELEASE);
}

static void kick(Drv *d)
{
    mmio_write(d, VIRTIO_PCI_NOTIFY_OFF, 2, 0);
}

/* Let the device work until used->idx reaches @want (or 5 s pass). */
static bool wait_used(Drv *d, uint16_t want)
{
    int64_t deadline = keel_monotonic_ns() + 5000000000ll;

    while ((uint16_t)(used_idx() - want) > 0x8000 && keel_monotonic_ns() < deadline) {
        if (d->ctx == keel_main_aio_context()) {
            keel_aio_poll(d->ctx, false);
        }
        g_usleep(100);
    }
    return used_idx() == want;
}

/* Run the main context until nothing is left to do right now. */
static void settle(Drv *d)
{
    for (int i = 0; i < 50; i++) {
        while (keel_aio_poll(keel_main_aio_context(), false)) {
        }
        g_usleep(200);
    }
    (void)d;
}

/* Queue @q > 0 of a multiqueue device: its rings (queue 0 keeps GPA_DESC...). */
#define GPA_MQ_DESC(q) (0x40000ull + 0x4000ull * (q))
#define GPA_MQ_AVAIL(q) (GPA_MQ_DESC(q) + 0x1000)
#define GPA_MQ_USED(q) (GPA_MQ_DESC(q) + 0x2000)

static void drv_setup_queue(Drv *d, unsigned q, uint16_t qsize)
{
    uint64_t desc = q ? GPA_MQ_DESC(q) : GPA_DESC;
    uint64_t avail = q ? GPA_MQ_AVAIL(q) : GPA_AVAIL, used = q ? GPA_MQ_USED(q) : GPA_USED;

    memset(gpa(desc), 0, 0x3000);
    mmio_write(d, 0x16, 2, q);
    mmio_write(d, 0x18, 2, qsize);
    mmio_write(d, 0x20, 8, desc);
    mmio_write(d, 0x28, 4, (uint32_t)avail);  /* 64-bit fields as two halves */
    mmio_write(d, 0x2c, 4, 0);
    mmio_write(d, 0x30, 4, (uint32_t)used);
    mmio_write(d, 0x34, 4, 0);
    mmio_write(d, 0x1c, 2, 1);
}

/* Resets the device and sets it up with @features and @nq queues. */
static bool drv_setup_mq(Drv *d, uint64_t features, uint16_t qsize, unsigned nq)
{
    uint64_t offered;

    mmio_write(d, 0x14, 1, 0);
    if (status_reg(d) != 0) {
        return false;
    }
    memset(gpa(GPA_DESC), 0, 0x3000);
    mmio_write(d, 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    mmio_write(d, 0x00, 4, 0);
    offered = mmio_read(d, 0x04, 4);
    mmio_write(d, 0x00, 4, 1);
    offered |= mmio_read(d, 0x04, 4) << 32;
    features &= offered;
    mmio_write(d, 0x08, 4, 0);
    mmio_write(d, 0x0c, 4, (uint32_t)features);
    mmio_write(d, 0x08, 4, 1);
    mmio_write(d, 0x0c, 4, (uint32_t)(features >> 32));
    mmio_write(d, 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                           VIRTIO_STATUS_FEATURES_OK);
    if (!(status_reg(d) & VIRTIO_STATUS_FEATURES_OK)) {
        return false;
    }
    d->event_idx = features >> VIRTIO_F_EVENT_IDX & 1;
    for (unsigned q = 0; q < nq; q++) {
        drv_setup_queue(d, q, qsize);
    }
    d->qsize = qsize;
    d->avail_idx = 0;
    d->used_seen = 0;
    mmio_write(d, 0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                           VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    return (status_reg(d) & (VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET)) ==
           VIRTIO_STATUS_DRIVER_OK;
}

static bool drv_setup(Drv *d, uint64_t features, uint16_t qsize)
{
    return drv_setup_mq(d, features, qsize, 1);
}

#define ALL_FEATURES ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_EVENT_IDX) | \
                      (1ull << VIRTIO_F_INDIRECT_DESC) | (1ull << VIRTIO_BLK_F_FLUSH) | \
                      (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES) | \
                      (1ull << VIRTIO_BLK_F_SEG_MAX) | (1ull << VIRTIO_BLK_F_SIZE_MAX) | \
                      (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_RO))

static void drv_open(Drv *d, KeelAioContext *ctx, const char *extra, bool readonly)
{
    VirtioBlkConf conf;
    char err[256];

    memset(d, 0, sizeof(*d));
    snprintf(d->path, sizeof(d->path), "%s/keel-virtio-test.XXXXXX", g_get_tmp_dir());
    d->fd = mkstemp(d->path);
    if (d->fd < 0 || ftruncate(d->fd, DISK_SIZE) < 0) {
        keel_test_skip_all("cannot create a disk image in %s", g_get_tmp_dir());
    }
    memset(&conf, 0, sizeof(conf));
    conf.name = "virtio-blk-test";
    keel_blk_options_init(&conf.blk);
    conf.blk.filename = d->path;
    conf.blk.aio = KEEL_BLK_AIO_THREADS;
    conf.blk.readonly = readonly;
    conf.blk.inject = (char *)extra;
    conf.serial = "serial-0123456789abcdefgh";     /* longer than 20: cut */
    conf.ctx = ctx;
    conf.iothread_id = ctx == keel_main_aio_context() ? NULL : "io0";
    conf.intx_irq = 10;
    d->blk = virtio_blk_new(&vm, host, &conf, err, sizeof(err));
    unlink(d->path);        /* the open fds keep it; nothing left if we die */
    if (!d->blk) {
        printf("# %s\n", err);
        keel_test_skip_all("cannot create the device");
    }
    d->vp = virtio_blk_get_transport(d->blk);
    d->ctx = ctx;
    d->slot = d->vp->pci->slot;
    d->bar = conf_read(d->slot, PCI_BAR0, 4) & ~0xfu;
}

static void drv_close(Drv *d)
{
    keel_global_mutex_lock();
    virtio_blk_free(d->blk);
    keel_global_mutex_unlock();
    close(d->fd);
}

/* A request in slot @s: header, optional data, status; direct chain in
 * descriptors 3s..3s+2 (or 2 without data).  Returns the head. */
static uint16_t build_req_in(uint64_t table, unsigned s, uint32_t type, uint64_t sector,
                             uint32_t len, bool dev_writes)
{
    uint64_t hdr = GPA_HDR + 32ull * s, st = GPA_STATUS + 16ull * s, data = GPA_DATA + 65536ull * s;
    uint16_t h = (uint16_t)(3 * s);
    uint8_t *hp = gpa(hdr);

    memcpy(hp, &type, 4);
    memset(hp + 4, 0, 4);
    memcpy(hp + 8, &sector, 8);
    *(uint8_t *)gpa(st) = 0xee;
    if (len) {
        put_desc(table, h, hdr, 16, VRING_DESC_F_NEXT, h + 1);
        put_desc(table, h + 1, data, len,
                 VRING_DESC_F_NEXT | (dev_writes ? VRING_DESC_F_WRITE : 0), h + 2);
        put_desc(table, h + 2, st, 1, VRING_DESC_F_WRITE, 0);
    } else {
        put_desc(table, h, hdr, 16, VRING_DESC_F_NEXT, h + 1);
        put_desc(table, h + 1, st, 1, VRING_DESC_F_WRITE, 0);
    }
    return h;
}

static uint16_t build_req(unsigned s, uint32_t type, uint64_t sector, uint32_t len, bool dev_writes)
{
    return build_req_in(GPA_DESC, s, type, sector, len, dev_writes);
}

static uint8_t req_status(unsigned s)
{
    return *(volatile uint8_t *)gpa(GPA_STATUS + 16ull * s);
}

static uint8_t *req_data(unsigned s)
{
    return gpa(GPA_DATA + 65536ull * s);
}

/* What queue @q's thread has popped and still holds, read in that thread
 * (the counters are its own). */
typedef struct QueueCounts {
    VirtioQueue *q;
    uint64_t popped;
    unsigned inflight;
} QueueCounts;

static void queue_counts_in_home(void *opaque)
{
    QueueCounts *c = opaque;

    c->popped = c->q->vq.nr_popped;
    c->inflight = c->q->inflight;
}

static QueueCounts queue_counts(VirtioPci *vp, int q)
{
    QueueCounts c = { .q = virtio_device_queue(vp->vdev, q) };

    virtio_queue_run_in_home(c.q, queue_counts_in_home, &c);
    return c;
}

/* One request start to finish; returns its status byte (0xee: none). */
static int do_req(Drv *d, unsigned s, uint32_t type, uint64_t sector, uint32_t len,
                  bool dev_writes, uint32_t *used_len)
{
    uint32_t id, l;

    publish(d, build_req(s, type, sector, len, dev_writes));
    kick(d);
    if (!wait_used(d, (uint16_t)(d->used_seen + 1))) {
        return -1;
    }
    used_elem(d->used_seen, &id, &l, d->qsize);
    d->used_seen++;
    if (used_len) {
        *used_len = l;
    }
    return id == 3 * s ? req_status(s) : -2;
}

static uint8_t isr_read(Drv *d)
{
    return (uint8_t)mmio_read(d, VIRTIO_PCI_ISR_OFF, 1);
}

/* ---- tests ---------------------------------------------------------------------------- */

/* The fake machine offers KVM_SIGNAL_MSI, so MSI-X is there unless forced off. */
static bool msix_expected(void)
{
    return !keel_avoid(KEEL_PATH_MSIX) && !keel_avoid(KEEL_PATH_SIGNAL_MSI);
}

static void test_identity(Drv *d)
{
    unsigned cap, types = 0, msix = 0, mult = 0;

    KEEL_IS(conf_read(d->slot, 0, 2), 0x1af4, "vendor 0x1af4");
    KEEL_IS(conf_read(d->slot, 2, 2), 0x1042, "device 0x1042 (modern virtio-blk)");
    KEEL_IS(conf_read(d->slot, 8, 1), 1, "revision 1");
    KEEL_IS(conf_read(d->slot, 0x2c, 2), 0x1af4, "subsystem vendor");
    KEEL_IS(conf_read(d->slot, 0x0b, 1), 0x01, "class: mass storage");
    KEEL_IS(conf_read(d->slot, 0x3d, 1), 1, "INTA#");
    KEEL_IS(conf_read(d->slot, 0x3c, 1), 10, "interrupt line 10");
    for (cap = conf_read(d->slot, 0x34, 1); cap; cap = conf_read(d->slot, cap + 1, 1)) {
        if (conf_read(d->slot, cap, 1) == 0x09) {
            unsigned type = conf_read(d->slot, cap + 3, 1);
            types |= 1u << type;
            if (type == 2) {
                mult = conf_read(d->slot, cap + 16, 4);
            }
        } else if (conf_read(d->slot, cap, 1) == 0x11) {
            msix = cap;
        }
    }
    KEEL_IS(types, 0x1e, "vendor capabilities: common, notify, ISR, device config");
    KEEL_IS(mult, 4, "notify_off_multiplier 4");
    if (!msix_expected()) {
        KEEL_OK(msix == 0, "no MSI-X capability (KEEL_AVOID=%s)",
                keel_avoid(KEEL_PATH_MSIX) ? "msix" : "signal-msi");
        return;
    }
    KEEL_OK(msix != 0, "MSI-X capability present (KVM_SIGNAL_MSI \"available\")");
    KEEL_IS(conf_read(d->slot, msix + 2, 2) & 0x7ff, 1, "two MSI-X vectors (config + queue)");
}

static void test_negotiation(Drv *d)
{
    uint64_t f;

    mmio_write(d, 0x14, 1, 0);
    mmio_write(d, 0x00, 4, 0);
    f = mmio_read(d, 0x04, 4);
    mmio_write(d, 0x00, 4, 1);
    f |= mmio_read(d, 0x04, 4) << 32;
    KEEL_IS(f & (ALL_FEATURES & ~(1ull << VIRTIO_BLK_F_RO)),
            ALL_FEATURES & ~(1ull << VIRTIO_BLK_F_RO), "all the required features are offered");
    KEEL_OK(!(f & (1ull << VIRTIO_BLK_F_RO)), "RO not offered for a writable drive");

    /* Not offered: bit 0 (BARRIER).  FEATURES_OK must not stick. */
    mmio_write(d, 0x14, 1, 3);
    mmio_write(d, 0x08, 4, 0);
    mmio_write(d, 0x0c, 4, 1);
    mmio_write(d, 0x08, 4, 1);
    mmio_write(d, 0x0c, 4, 1);
    mmio_write(d, 0x14, 1, 3 | VIRTIO_STATUS_FEATURES_OK);
    KEEL_OK(!(status_reg(d) & VIRTIO_STATUS_FEATURES_OK), "FEATURES_OK refused for an unoffered feature");
    mmio_write(d, 0x14, 1, 0);
    mmio_write(d, 0x14, 1, 3);
    mmio_write(d, 0x08, 4, 1);
    mmio_write(d, 0x0c, 4, 0);
    mmio_write(d, 0x14, 1, 3 | VIRTIO_STATUS_FEATURES_OK);
    KEEL_OK(!(status_reg(d) & VIRTIO_STATUS_FEATURES_OK), "FEATURES_OK refused without VERSION_1");
    mmio_write(d, 0x14, 1, 0);
    KEEL_IS(status_reg(d), 0, "reset reads back 0");

    KEEL_OK(drv_setup(d, ALL_FEATURES, QSIZE), "set-up with every feature");
    KEEL_IS(mmio_read(d, 0x12, 2), 1, "num_queues 1");
    mmio_write(d, 0x16, 2, 0);
    KEEL_IS(mmio_read(d, 0x1e, 2), 0, "queue 0 notify_off 0");
    KEEL_IS(mmio_read(d, 0x20, 8), GPA_DESC, "queue_desc reads back (64-bit)");
    KEEL_IS(mmio_read(d, 0x2c, 4), 0, "queue_driver high half");
    KEEL_IS(mmio_read(d, VIRTIO_PCI_DEVCFG_OFF + 0, 4) | mmio_read(d, VIRTIO_PCI_DEVCFG_OFF + 4, 4) << 32,
            DISK_SIZE / 512, "capacity in sectors");
    KEEL_IS(mmio_read(d, VIRTIO_PCI_DEVCFG_OFF + 12, 4), VIRTIO_BLK_SEG_MAX, "seg_max");
    KEEL_IS(mmio_read(d, VIRTIO_PCI_DEVCFG_OFF + 8, 4), VIRTIO_BLK_SIZE_MAX, "size_max");
    KEEL_IS(mmio_read(d, VIRTIO_PCI_DEVCFG_OFF + 20, 4), 512, "blk_size");
    KEEL_IS(mmio_read(d, VIRTIO_PCI_DEVCFG_OFF + 40, 4), 1, "max_discard_seg");
    KEEL_IS(mmio_read(d, 0x15, 1), 0, "config_generation 0");
}

static void test_requests(Drv *d)
{
    uint8_t buf[8192];
    uint32_t ulen = 0;
    ssize_t n;

    for (unsigned i = 0; i < 8192; i++) {
        req_data(0)[i] = (uint8_t)(i * 7 + 3);
    }
    KEEL_IS(do_req(d, 0, VIRTIO_BLK_T_OUT, 8, 8192, false, &ulen), VIRTIO_BLK_S_OK, "write 8 KiB at sector 8");
    KEEL_IS(ulen, 1, "write: used length 1 (the status byte)");
    n = pread(d->fd, buf, sizeof(buf), 4096);
    KEEL_OK(n == 8192 && !memcmp(buf, req_data(0), 8192), "the data is in the image file");
    memset(req_data(1), 0, 8192);
    KEEL_IS(do_req(d, 1, VIRTIO_BLK_T_IN, 8, 8192, true, &ulen), VIRTIO_BLK_S_OK, "read it back");
    KEEL_IS(ulen, 8193, "read: used length = data + status");
    KEEL_OK(!memcmp(req_data(1), req_data(0), 8192), "read data equals what was written");
    KEEL_IS(do_req(d, 2, VIRTIO_BLK_T_FLUSH, 0, 0, false, NULL), VIRTIO_BLK_S_OK, "flush");
    memset(req_data(3), 0xaa, 32);
    KEEL_IS(do_req(d, 3, VIRTIO_BLK_T_GET_ID, 0, 20, true, &ulen), VIRTIO_BLK_S_OK, "GET_ID");
    KEEL_OK(!memcmp(req_data(3), "serial-0123456789abc", 20) && req_data(3)[20] == 0xaa,
            "GET_ID: the serial, cut to 20 bytes, nothing written past them");
    KEEL_IS(do_req(d, 4, 99, 0, 512, true, NULL), VIRTIO_BLK_S_UNSUPP, "unknown type: UNSUPP");
    KEEL_IS(do_req(d, 5, VIRTIO_BLK_T_IN, DISK_SIZE / 512 - 1, 1024, true, NULL),
            VIRTIO_BLK_S_IOERR, "read crossing the end of the disk: IOERR");
    KEEL_IS(do_req(d, 6, VIRTIO_BLK_T_OUT, UINT64_MAX / 256, 512, false, NULL),
            VIRTIO_BLK_S_IOERR, "write at a huge sector (overflow): IOERR");
    KEEL_IS(do_req(d, 7, VIRTIO_BLK_T_IN, 0, 100, true, NULL), VIRTIO_BLK_S_IOERR,
            "read of a partial sector: IOERR");

    /* write-zeroes over the 8 KiB written above */
    {
        struct { uint64_t sector; uint32_t num, flags; } seg = { 8, 16, 0 };
        memcpy(req_data(8), &seg, sizeof(seg));
        KEEL_IS(do_req(d, 8, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false, NULL), VIRTIO_BLK_S_OK,
                "write-zeroes");
        n = pread(d->fd, buf, 8192, 4096);
        KEEL_OK(n == 8192 && buf[0] == 0 && !memcmp(buf, buf + 1, 8191), "write-zeroes: zeroes in the image");
        seg.flags = 2;
        memcpy(req_data(9), &seg, sizeof(seg));
        KEEL_IS(do_req(d, 9, VIRTIO_BLK_T_DISCARD, 0, 16, false, NULL), VIRTIO_BLK_S_UNSUPP,
                "discard with unknown flags: UNSUPP");
        seg.flags = 0;
        memcpy(req_data(10), &seg, sizeof(seg));
        KEEL_IS(do_req(d, 10, VIRTIO_BLK_T_DISCARD, 0, 16, false, NULL), VIRTIO_BLK_S_OK, "discard");
        KEEL_IS(do_req(d, 11, VIRTIO_BLK_T_DISCARD, 0, 8, false, NULL), VIRTIO_BLK_S_IOERR,
                "discard with a truncated segment: IOERR");
    }
    /* A request whose header is device-writable: no readable header. */
    {
        uint16_t h = build_req(12, VIRTIO_BLK_T_IN, 0, 512, true);
        put_desc(GPA_DESC, h, GPA_HDR + 32 * 12, 16, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, h + 1);
        publish(d, h);
        kick(d);
        KEEL_OK(wait_used(d, (uint16_t)(d->used_seen + 1)), "writable header: completed");
        d->used_seen++;
        KEEL_IS(req_status(12), VIRTIO_BLK_S_IOERR, "writable header: IOERR");
    }
}

/* Submits a malformed chain built by @build; returns what happened:
 * 1 = failed with IOERR, 2 = NEEDS_RESET, 0 = something else. */
static int bad_chain(Drv *d, void (*build)(Drv *d, uint16_t h))
{
    uint16_t h = build_req(0, VIRTIO_BLK_T_IN, 0, 512, true);
    int64_t deadline = keel_monotonic_ns() + 2000000000ll;

    build(d, h);
    publish(d, h);
    kick(d);
    while (keel_monotonic_ns() < deadline) {
        if (used_idx() == (uint16_t)(d->used_seen + 1)) {
            d->used_seen++;
            return req_status(0) == VIRTIO_BLK_S_IOERR ? 1 : 0;
        }
        if (status_reg(d) & VIRTIO_STATUS_NEEDS_RESET) {
            return 2;
        }
        keel_aio_poll(keel_main_aio_context(), false);
        g_usleep(100);
    }
    return 0;
}

static void b_outside_ram(Drv *d, uint16_t h)
{
    (void)d;
    put_desc(GPA_DESC, h + 1, RAM_SIZE - 256, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, h + 2);
}
static void b_wrap(Drv *d, uint16_t h)
{
    (void)d;
    put_desc(GPA_DESC, h + 1, UINT64_MAX - 100, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, h + 2);
}
static void b_loop(Drv *d, uint16_t h)
{
    (void)d;
    put_desc(GPA_DESC, h + 2, GPA_STATUS, 1, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, h + 1);
}
static void b_next_range(Drv *d, uint16_t h)
{
    put_desc(GPA_DESC, h + 1, GPA_DATA, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, d->qsize + 5);
}
static void b_direction(Drv *d, uint16_t h)
{
    (void)d;
    /* readable data after a writable one, status still writable */
    put_desc(GPA_DESC, h, GPA_HDR, 16, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, h + 1);
    put_desc(GPA_DESC, h + 1, GPA_DATA, 512, VRING_DESC_F_NEXT, h + 2);
}
static void b_no_status(Drv *d, uint16_t h)
{
    (void)d;
    put_desc(GPA_DESC, h + 1, GPA_DATA, 512, 0, 0);    /* all readable: no status */
}
static void b_huge(Drv *d, uint16_t h)
{
    /* 40 buffers of all of RAM (aliased): 1.25 GiB in one chain, over the
     * 1 GiB limit, though every buffer is inside guest RAM. */
    (void)d;
    for (unsigned i = 0; i < 40; i++) {
        put_desc(GPA_DESC, h + 1 + i, 0, RAM_SIZE, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
                 (uint16_t)(h + 2 + i));
    }
    put_desc(GPA_DESC, h + 41, GPA_STATUS, 1, VRING_DESC_F_WRITE, 0);
}
static void b_indirect(Drv *d, uint16_t h, bool nested, uint32_t len)
{
    (void)d;
    put_desc(GPA_INDIRECT, 0, GPA_HDR, 16, VRING_DESC_F_NEXT, 1);
    put_desc(GPA_INDIRECT, 1, GPA_DATA, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE |
             (nested ? VRING_DESC_F_INDIRECT : 0), 2);
    put_desc(GPA_INDIRECT, 2, GPA_STATUS, 1, VRING_DESC_F_WRITE, 0);
    put_desc(GPA_DESC, h, GPA_INDIRECT, len, VRING_DESC_F_INDIRECT, 0);
}
static void b_indirect_ok(Drv *d, uint16_t h) { b_indirect(d, h, false, 48); }
static void b_indirect_nested(Drv *d, uint16_t h) { b_indirect(d, h, true, 48); }
static void b_indirect_badlen(Drv *d, uint16_t h) { b_indirect(d, h, false, 40); }
static void b_indirect_next(Drv *d, uint16_t h)
{
    b_indirect(d, h, false, 48);
    put_desc(GPA_DESC, h, GPA_INDIRECT, 48, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, h + 1);
}
static void b_indirect_loop(Drv *d, uint16_t h)
{
    b_indirect(d, h, false, 48);
    put_desc(GPA_INDIRECT, 2, GPA_STATUS, 1, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
}

static void reset_and_setup(Drv *d, uint64_t features)
{
    KEEL_OK(drv_setup(d, features, QSIZE), "re-initialised after NEEDS_RESET");
}

static void test_bad_chains(Drv *d)
{
    static const struct {
        const char *name;
        void (*build)(Drv *d, uint16_t h);
        int want;       /* 1 IOERR, 2 NEEDS_RESET, 3 OK */
    } cases[] = {
        { "data buffer outside guest RAM", b_outside_ram, 1 },
        { "address wrapping around 2^64", b_wrap, 1 },
        { "loop", b_loop, 2 },
        { "next index out of range", b_next_range, 2 },
        { "readable after writable", b_direction, 1 },
        { "no device-writable status", b_no_status, 2 },
        { "1.25 GiB in one chain (RAM aliased 40 times)", b_huge, 1 },
        { "indirect table", b_indirect_ok, 3 },
        { "nested indirect", b_indirect_nested, 1 },
        { "indirect table of 2.5 descriptors", b_indirect_badlen, 2 },
        { "indirect with NEXT", b_indirect_next, 2 },
        { "loop inside an indirect table", b_indirect_loop, 2 },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        int r;
        uint8_t isr;
        if (cases[i].want == 3) {
            uint16_t h = build_req(0, VIRTIO_BLK_T_IN, 0, 512, true);
            cases[i].build(d, h);
            publish(d, h);
            kick(d);
            r = wait_used(d, (uint16_t)(d->used_seen + 1)) ? 3 : 0;
            if (r) {
                d->used_seen++;
                r = req_status(0) == VIRTIO_BLK_S_OK ? 3 : 0;
            }
            KEEL_IS(r, 3, "well-formed %s: accepted", cases[i].name);
            continue;
        }
        isr_read(d);
        r = bad_chain(d, cases[i].build);
        KEEL_IS(r, cases[i].want, "%s: %s", cases[i].name,
                cases[i].want == 1 ? "fails with IOERR" : "NEEDS_RESET");
        if (r == 2) {
            isr = isr_read(d);
            KEEL_OK(isr & 2, "%s: configuration interrupt (ISR 0x%x)", cases[i].name, isr);
            reset_and_setup(d, ALL_FEATURES);
        }
        KEEL_IS(do_req(d, 1, VIRTIO_BLK_T_IN, 0, 512, true, NULL), VIRTIO_BLK_S_OK,
                "after %s: a good request works", cases[i].name);
    }

    /* Indirect not negotiated: an indirect descriptor is refused. */
    KEEL_OK(drv_setup(d, ALL_FEATURES & ~(1ull << VIRTIO_F_INDIRECT_DESC), QSIZE),
            "set-up without INDIRECT_DESC");
    KEEL_IS(bad_chain(d, b_indirect_ok), 2, "indirect without the feature: NEEDS_RESET");
    reset_and_setup(d, ALL_FEATURES);

    /* Broken rings. */
    publish(d, (uint16_t)(d->qsize + 3));
    kick(d);
    settle(d);
    KEEL_OK(status_reg(d) & VIRTIO_STATUS_NEEDS_RESET, "avail entry >= queue size: NEEDS_RESET");
    reset_and_setup(d, ALL_FEATURES);
    __atomic_store_n((uint16_t *)gpa(GPA_AVAIL + 2), (uint16_t)(d->qsize + 1), __ATOMIC_RELEASE);
    kick(d);
    settle(d);
    KEEL_OK(status_reg(d) & VIRTIO_STATUS_NEEDS_RESET, "avail idx ahead by more than the queue: NEEDS_RESET");
    reset_and_setup(d, ALL_FEATURES);

    /* Rings outside RAM, misaligned, bad size. */
    mmio_write(d, 0x14, 1, 0);
    mmio_write(d, 0x14, 1, 3);
    mmio_write(d, 0x08, 4, 1);
    mmio_write(d, 0x0c, 4, 1);
    mmio_write(d, 0x14, 1, 0xb);
    mmio_write(d, 0x16, 2, 0);
    mmio_write(d, 0x20, 8, RAM_SIZE - 64);
    mmio_write(d, 0x28, 8, GPA_AVAIL);
    mmio_write(d, 0x30, 8, GPA_USED);
    mmio_write(d, 0x1c, 2, 1);
    mmio_write(d, 0x14, 1, 0xf);
    KEEL_OK(status_reg(d) & VIRTIO_STATUS_NEEDS_RESET, "descriptor table outside RAM: NEEDS_RESET at DRIVER_OK");
    mmio_write(d, 0x14, 1, 0);
    mmio_write(d, 0x14, 1, 3);
    mmio_write(d, 0x08, 4, 1);
    mmio_write(d, 0x0c, 4, 1);
    mmio_write(d, 0x14, 1, 0xb);
    mmio_write(d, 0x18, 2, 48);
    mmio_write(d, 0x20, 8, GPA_DESC);
    mmio_write(d, 0x1c, 2, 1);
    mmio_write(d, 0x14, 1, 0xf);
    KEEL_OK(status_reg(d) & VIRTIO_STATUS_NEEDS_RESET, "queue size 48 (not a power of two): NEEDS_RESET");
    reset_and_setup(d, ALL_FEATURES);
    KEEL_IS(do_req(d, 1, VIRTIO_BLK_T_IN, 0, 512, true, NULL), VIRTIO_BLK_S_OK,
            "the device works after all of that");
}

/* EVENT_IDX and NO_INTERRUPT suppression; one interrupt per pass. */
static void test_interrupts(Drv *d)
{
    uint16_t *used_event, *avail_flags = gpa(GPA_AVAIL);
    uint64_t before;

    KEEL_OK(drv_setup(d, ALL_FEATURES, QSIZE), "set-up with EVENT_IDX");
    used_event = gpa(GPA_AVAIL + 4 + 2 * QSIZE);
    isr_read(d);
    *used_event = 0xffff;       /* far away: no interrupts */
    for (unsigned s = 0; s < 8; s++) {
        publish(d, build_req(s, VIRTIO_BLK_T_GET_ID, 0, 20, true));
    }
    kick(d);
    KEEL_OK(wait_used(d, 8), "8 requests complete");
    d->used_seen = 8;
    settle(d);
    KEEL_IS(isr_read(d), 0, "EVENT_IDX: used_event far away, no interrupt");
    KEEL_IS(*(uint16_t *)gpa(GPA_USED + 4 + 8 * QSIZE), 8,
            "avail_event = next entry to pop after the pass");

    *used_event = 9;            /* interrupt when entry 9 is used (i.e. idx 10) */
    publish(d, build_req(0, VIRTIO_BLK_T_GET_ID, 0, 20, true));
    kick(d);
    wait_used(d, 9);
    settle(d);
    KEEL_IS(isr_read(d), 0, "EVENT_IDX: entry 8 used, used_event 9: still quiet");
    publish(d, build_req(1, VIRTIO_BLK_T_GET_ID, 0, 20, true));
    kick(d);
    wait_used(d, 10);
    settle(d);
    KEEL_IS(isr_read(d), 1, "EVENT_IDX: entry 9 used: interrupt (ISR queue bit)");
    KEEL_IS(isr_read(d), 0, "ISR is read-to-clear");
    d->used_seen = 10;

    *used_event = d->used_seen;
    before = d->vp->stats.irqs_intx_ioctl;
    for (unsigned s = 0; s < 8; s++) {
        publish(d, build_req(s, VIRTIO_BLK_T_GET_ID, 0, 20, true));
    }
    kick(d);
    wait_used(d, 18);
    settle(d);
    d->used_seen = 18;
    KEEL_IS(d->vp->stats.irqs_intx_ioctl - before, 1, "8 completions in one pass: one interrupt");
    isr_read(d);

    KEEL_OK(drv_setup(d, ALL_FEATURES & ~(1ull << VIRTIO_F_EVENT_IDX), QSIZE), "set-up without EVENT_IDX");
    *avail_flags = VRING_AVAIL_F_NO_INTERRUPT;
    KEEL_IS(do_req(d, 0, VIRTIO_BLK_T_GET_ID, 0, 20, true, NULL), 0, "request with NO_INTERRUPT");
    settle(d);
    KEEL_IS(isr_read(d), 0, "NO_INTERRUPT: no interrupt");
    *avail_flags = 0;
    KEEL_IS(do_req(d, 0, VIRTIO_BLK_T_GET_ID, 0, 20, true, NULL), 0, "request with interrupts on");
    settle(d);
    KEEL_IS(isr_read(d), 1, "interrupt when the driver wants one");
    KEEL_IS(*(uint16_t *)gpa(GPA_USED) & VRING_USED_F_NO_NOTIFY, 0,
            "NO_NOTIFY is clear again after the pass (kicks wanted)");
}

static void test_msix(Drv *d)
{
    unsigned cap = 0;
    uint64_t before;

    for (unsigned c = conf_read(d->slot, 0x34, 1); c; c = conf_read(d->slot, c + 1, 1)) {
        if (conf_read(d->slot, c, 1) == 0x11) {
            cap = c;
        }
    }
    KEEL_IS(conf_read(d->slot, cap + 4, 4), VIRTIO_PCI_MSIX_TABLE_OFF, "MSI-X table in BAR0 at 0x4000");
    KEEL_IS(conf_read(d->slot, cap + 8, 4), VIRTIO_PCI_MSIX_PBA_OFF, "PBA in BAR0 at 0x5000");
    KEEL_IS(mmio_read(d, VIRTIO_PCI_MSIX_TABLE_OFF + 12, 4), 1, "vectors start masked");
    for (unsigned v = 0; v < 2; v++) {
        mmio_write(d, VIRTIO_PCI_MSIX_TABLE_OFF + 16 * v, 4, 0xfee00000);
        mmio_write(d, VIRTIO_PCI_MSIX_TABLE_OFF + 16 * v + 4, 4, 0);
        mmio_write(d, VIRTIO_PCI_MSIX_TABLE_OFF + 16 * v + 8, 4, 0x40 + v);
    }
    KEEL_IS(mmio_read(d, VIRTIO_PCI_MSIX_TABLE_OFF + 24, 4), 0x41, "table entry reads back");
    conf_write(d->slot, cap + 2, 2, 0x8000);
    KEEL_OK(d->vp->msix_enabled, "MSI-X enabled through the capability");

    KEEL_OK(drv_setup(d, ALL_FEATURES, QSIZE), "set-up");
    mmio_write(d, 0x10, 2, 0);
    mmio_write(d, 0x16, 2, 0);
    mmio_write(d, 0x1a, 2, 7);
    KEEL_IS(mmio_read(d, 0x1a, 2), VIRTIO_NO_VECTOR, "an impossible vector reads back as NO_VECTOR");
    mmio_write(d, 0x1a, 2, 1);
    KEEL_IS(mmio_read(d, 0x1a, 2), 1, "queue vector 1");
    KEEL_IS(mmio_read(d, 0x10, 2), 0, "config vector 0");

    before = d->vp->stats.irqs_masked;
    KEEL_IS(do_req(d, 0, VIRTIO_BLK_T_GET_ID, 0, 20, true, NULL), 0, "request with vector 1 masked");
    settle(d);
    KEEL_IS(d->vp->stats.irqs_masked - before, 1, "masked vector: delivery deferred");
    KEEL_IS(mmio_read(d, VIRTIO_PCI_MSIX_PBA_OFF, 4), 2, "PBA bit 1 set");
    KEEL_IS(isr_read(d), 0, "MSI-X on: the ISR is not used");
    before = d->vp->stats.irqs_msix_ioctl;
    mmio_write(d, VIRTIO_PCI_MSIX_TABLE_OFF + 16 + 12, 4, 0);
    KEEL_IS(d->vp->stats.irqs_msix_ioctl - before, 1, "unmasking fires the pending vector (KVM_SIGNAL_MSI)");
    KEEL_IS(mmio_read(d, VIRTIO_PCI_MSIX_PBA_OFF, 4), 0, "PBA clear");
    before = d->vp->stats.irqs_msix_ioctl;
    *(uint16_t *)gpa(GPA_AVAIL + 4 + 2 * QSIZE) = d->used_seen;     /* used_event: this one */
    KEEL_IS(do_req(d, 0, VIRTIO_BLK_T_GET_ID, 0, 20, true, NULL), 0, "request with vector 1 live");
    settle(d);
    KEEL_IS(d->vp->stats.irqs_msix_ioctl - before, 1, "one MSI for it");
    conf_write(d->slot, cap + 2, 2, 0);
    KEEL_OK(!d->vp->msix_enabled, "MSI-X disabled again");
    mmio_write(d, 0x14, 1, 0);
}

/* Requests held in the backend (inject delay) while the driver resets. */
static void test_reset_inflight(KeelAioContext *ctx, const char *where)
{
    Drv d;
    uint16_t old_used;

    drv_open(&d, ctx, "any:delay=150", false);
    KEEL_OK(drv_setup(&d, ALL_FEATURES, QSIZE), "%s: set-up of a drive whose requests take 150 ms", where);
    for (unsigned s = 0; s < 4; s++) {
        publish(&d, build_req(s, VIRTIO_BLK_T_OUT, 8 * s, 4096, false));
    }
    kick(&d);
    /* Let the device pick them up (they then sleep in the backend). */
    for (int i = 0; i < 20 && queue_counts(d.vp, 0).popped < 4; i++) {
        if (ctx == keel_main_aio_context()) {
            keel_aio_poll(ctx, false);
        }
        g_usleep(2000);
    }
    KEEL_IS(used_idx(), 0, "%s: 4 requests in flight, none completed yet", where);
    mmio_write(&d, 0x14, 1, 0);
    KEEL_IS(status_reg(&d), 0, "%s: reset finished", where);
    KEEL_IS(used_idx(), 4, "%s: the in-flight requests completed into the old ring before it", where);
    for (unsigned s = 0; s < 4; s++) {
        KEEL_IS(req_status(s), VIRTIO_BLK_S_OK, "%s: request %u status OK", where, s);
    }
    old_used = used_idx();
    g_usleep(200000);
    if (ctx == keel_main_aio_context()) {
        settle(&d);
    }
    KEEL_IS(used_idx(), old_used, "%s: nothing completes into the ring after the reset", where);
    KEEL_OK(drv_setup(&d, ALL_FEATURES, QSIZE), "%s: set-up again", where);
    KEEL_IS(do_req(&d, 5, VIRTIO_BLK_T_IN, 0, 4096, true, NULL), VIRTIO_BLK_S_OK, "%s: and it works", where);
    drv_close(&d);
}

/* Adjacent writes popped in one pass become one backend request; when it
 * fails, each is retried alone so only the guilty one reports IOERR. */
static void test_merging(void)
{
    Drv d;
    VirtioBlkStats st;
    uint8_t buf[4096];
    bool data_ok = true;

    drv_open(&d, keel_main_aio_context(), "write:EIO:offset=40k", false);
    KEEL_OK(drv_setup(&d, ALL_FEATURES, QSIZE), "merging: set-up");
    for (unsigned s = 0; s < 4; s++) {
        memset(req_data(s), 'a' + (int)s, 4096);
        publish(&d, build_req(s, VIRTIO_BLK_T_OUT, 8 * (3 - s), 4096, false));  /* reversed */
    }
    kick(&d);
    KEEL_OK(wait_used(&d, 4), "merging: 4 adjacent writes complete");
    virtio_blk_get_stats(d.blk, &st);
    KEEL_IS(st.merged, 4, "merging: sent as one merged request (sorted by offset)");
    for (unsigned s = 0; s < 4; s++) {
        KEEL_IS(req_status(s), VIRTIO_BLK_S_OK, "merging: request %u OK", s);
        data_ok &= pread(d.fd, buf, 4096, 4096 * (3 - s)) == 4096 && buf[0] == 'a' + s &&
                   !memcmp(buf, buf + 1, 4095);
    }
    KEEL_OK(data_ok, "merging: every block holds its own request's data");
    for (unsigned s = 0; s < 4; s++) {
        publish(&d, build_req(s, VIRTIO_BLK_T_OUT, 64 + 8 * s, 4096, false));    /* 32k..48k */
    }
    kick(&d);
    KEEL_OK(wait_used(&d, 8), "merging: 4 more adjacent writes, one over the bad offset");
    virtio_blk_get_stats(d.blk, &st);
    KEEL_IS(st.merge_retries, 1, "merging: the failed merged request was split");
    KEEL_OK(req_status(0) == 0 && req_status(1) == 0 && req_status(2) == VIRTIO_BLK_S_IOERR &&
            req_status(3) == 0, "merging: only the write covering 40k fails (%d %d %d %d)",
            req_status(0), req_status(1), req_status(2), req_status(3));
    drv_close(&d);
}

/* Host I/O errors are logged on stderr (drive, operation, offset, errno),
 * rate-limited, and counted in the drive's statistics (issue 16 item 6). */
static void test_io_error_log(void)
{
    Drv d;
    VirtioBlkStats st;
    char logpath[64], log[8192];
    int logfd, saved_stderr;
    ssize_t len;
    unsigned lines = 0;
    uint16_t done = 0;

    snprintf(logpath, sizeof(logpath), "%s/keel-virtio-log.XXXXXX", g_get_tmp_dir());
    logfd = mkstemp(logpath);
    saved_stderr = dup(STDERR_FILENO);
    if (logfd < 0 || saved_stderr < 0) {
        keel_test_skip("I/O error log: cannot capture stderr");
        return;
    }
    unlink(logpath);
    drv_open(&d, keel_main_aio_context(), "write:ENOSPC;read:EIO:offset=1M-2M", false);
    KEEL_OK(drv_setup(&d, ALL_FEATURES, QSIZE), "I/O error log: set-up");
    fflush(stderr);
    dup2(logfd, STDERR_FILENO);
    /* 14 failing writes at once (not adjacent: no merging), then a read. */
    for (unsigned s = 0; s < 14; s++) {
        publish(&d, build_req(s, VIRTIO_BLK_T_OUT, 16 * s, 4096, false));
    }
    kick(&d);
    done += 14;
    KEEL_OK(wait_used(&d, done), "I/O error log: 14 writes complete");
    publish(&d, build_req(14, VIRTIO_BLK_T_IN, 2048 + 8, 4096, true));    /* 1 MiB + 4 KiB */
    kick(&d);
    KEEL_OK(wait_used(&d, ++done), "I/O error log: the read completes");
    /* After the rate limit's second: logged again, with the count held back. */
    g_usleep(1100 * 1000);
    publish(&d, build_req(15, VIRTIO_BLK_T_OUT, 0, 512, false));
    kick(&d);
    KEEL_OK(wait_used(&d, ++done), "I/O error log: one more write completes");
    fflush(stderr);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    len = pread(logfd, log, sizeof(log) - 1, 0);
    close(logfd);
    log[len > 0 ? len : 0] = '\0';
    for (char *p = log; (p = strstr(p, "host I/O error")); p++) {
        lines++;
    }
    KEEL_OK(req_status(0) == VIRTIO_BLK_S_IOERR && req_status(13) == VIRTIO_BLK_S_IOERR &&
            req_status(14) == VIRTIO_BLK_S_IOERR && req_status(15) == VIRTIO_BLK_S_IOERR,
            "I/O error log: the guest sees IOERR");
    KEEL_OK(strstr(log, "keel: virtio-blk-test: host I/O error: write at offset 0 (4096 bytes): "
                   "No space left on device (errno 28)") != NULL,
            "I/O error log: names the drive, the operation, the offset and the errno");
    KEEL_OK(strstr(log, "further ones at most once a second") != NULL,
            "I/O error log: says when it starts holding back");
    if (!KEEL_IS(lines, 11, "I/O error log: 16 errors: 10 lines for the first burst, 5 held "
                 "back, 1 line after a second")) {
        printf("# %s\n", log);
    }
    KEEL_OK(strstr(log, "5 more since the last report") != NULL,
            "I/O error log: the late line counts the 5 held back (4 writes and the read)");
    virtio_blk_get_stats(d.blk, &st);
    KEEL_IS(st.io_errors, 16, "I/O error log: every host error in the drive's statistics");
    KEEL_IS(st.last_io_errno, ENOSPC, "I/O error log: the latest errno in the statistics");
    drv_close(&d);
}

static void test_iothread(void)
{
    KeelIOThread *t = keel_iothread_new("io0");
    Drv d;
    uint8_t buf[4096];

    if (!t) {
        keel_test_skip("no iothread");
        return;
    }
    drv_open(&d, keel_iothread_get_aio_context(t), NULL, false);
    KEEL_OK(drv_setup(&d, ALL_FEATURES, QSIZE), "iothread: set-up");
    for (unsigned i = 0; i < 4096; i++) {
        req_data(0)[i] = (uint8_t)(i ^ 0x5a);
    }
    KEEL_IS(do_req(&d, 0, VIRTIO_BLK_T_OUT, 100, 4096, false, NULL), VIRTIO_BLK_S_OK, "iothread: write");
    KEEL_IS(do_req(&d, 1, VIRTIO_BLK_T_IN, 100, 4096, true, NULL), VIRTIO_BLK_S_OK, "iothread: read");
    KEEL_OK(!memcmp(req_data(0), req_data(1), 4096), "iothread: data round trip");
    KEEL_OK(pread(d.fd, buf, 4096, 51200) == 4096 && !memcmp(buf, req_data(0), 4096),
            "iothread: data in the image");
    KEEL_IS(bad_chain(&d, b_loop), 2, "iothread: a loop sets NEEDS_RESET");
    KEEL_OK(drv_setup(&d, ALL_FEATURES, QSIZE), "iothread: reset + set-up from another thread");
    KEEL_IS(do_req(&d, 1, VIRTIO_BLK_T_IN, 100, 4096, true, NULL), VIRTIO_BLK_S_OK, "iothread: works after");
    drv_close(&d);
    test_reset_inflight(keel_iothread_get_aio_context(t), "iothread");
    keel_iothread_free(t);
}

/* ---- multiqueue: queue 1 of a two-queue device, driven by hand ------------------ */

static uint16_t mq_avail[2], mq_used_seen[2];

static uint16_t mq_used_idx(unsigned q)
{
    return __atomic_load_n((uint16_t *)gpa((q ? GPA_MQ_USED(q) : GPA_USED) + 2),
                           __ATOMIC_ACQUIRE);
}

static void mq_submit(Drv *d, unsigned q, unsigned s, uint32_t type, uint64_t sector,
                      uint32_t len, bool dev_writes)
{
    uint64_t avail = q ? GPA_MQ_AVAIL(q) : GPA_AVAIL;
    uint16_t *ring = gpa(avail + 4);

    ring[mq_avail[q] % d->qsize] = build_req_in(q ? GPA_MQ_DESC(q) : GPA_DESC, s, type, sector,
                                                len, dev_writes);
    mq_avail[q]++;
    __atomic_store_n((uint16_t *)gpa(avail + 2), mq_avail[q], __ATOMIC_RELEASE);
    mmio_write(d, VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * q, 2, 0);
}

static bool mq_wait(unsigned q, uint16_t want)
{
    int64_t deadline = keel_monotonic_ns() + 5000000000ll;

    while (mq_used_idx(q) != want && keel_monotonic_ns() < deadline) {
        g_usleep(200);
    }
    return mq_used_idx(q) == want;
}

static void test_multiqueue(void)
{
    KeelIOThread *io[2] = { keel_iothread_new("io0"), keel_iothread_new("io1") };
    VirtioBlkConf conf;
    VirtioDevice *vdev;
    char err[256], line[512];
    unsigned msix = 0;
    uint8_t buf[4096];
    Drv d;

    if (!io[0] || !io[1]) {
        keel_test_skip("multiqueue: no iothreads");
        return;
    }
    memset(&d, 0, sizeof(d));
    snprintf(d.path, sizeof(d.path), "%s/keel-virtio-test.XXXXXX", g_get_tmp_dir());
    d.fd = mkstemp(d.path);
    if (d.fd < 0 || ftruncate(d.fd, DISK_SIZE) < 0) {
        keel_test_skip_all("cannot create a disk image in %s", g_get_tmp_dir());
    }
    memset(&conf, 0, sizeof(conf));
    conf.name = "virtio-blk-mq";
    keel_blk_options_init(&conf.blk);
    conf.blk.filename = d.path;
    conf.blk.aio = KEEL_BLK_AIO_THREADS;
    conf.blk.inject = (char *)"write:delay=100";
    conf.num_queues = 2;
    for (int q = 0; q < 2; q++) {
        conf.queue_ctx[q] = keel_iothread_get_aio_context(io[q]);
        conf.queue_iothread[q] = q ? "io1" : "io0";
    }
    conf.ctx = conf.queue_ctx[0];
    conf.iothread_id = "io0";
    conf.intx_irq = 10;
    d.blk = virtio_blk_new(&vm, host, &conf, err, sizeof(err));
    unlink(d.path);
    if (!d.blk) {
        KEEL_OK(false, "multiqueue: device created (%s)", err);
        return;
    }
    d.vp = virtio_blk_get_transport(d.blk);
    d.ctx = conf.ctx;
    d.slot = d.vp->pci->slot;
    d.bar = conf_read(d.slot, PCI_BAR0, 4) & ~0xfu;
    vdev = virtio_blk_get_device(d.blk);

    mmio_write(&d, 0x00, 4, 0);
    KEEL_OK(mmio_read(&d, 0x04, 4) >> VIRTIO_BLK_F_MQ & 1, "multiqueue: VIRTIO_BLK_F_MQ offered");
    KEEL_IS(mmio_read(&d, 0x12, 2), 2, "multiqueue: common cfg num_queues 2");
    KEEL_IS(mmio_read(&d, VIRTIO_PCI_DEVCFG_OFF + 34, 2), 2, "multiqueue: config num_queues 2");
    for (unsigned cap = conf_read(d.slot, 0x34, 1); cap; cap = conf_read(d.slot, cap + 1, 1)) {
        if (conf_read(d.slot, cap, 1) == 0x11) {
            msix = cap;
        }
    }
    if (msix_expected() && vm_signal_msi_usable(&vm)) {
        KEEL_OK(msix && (conf_read(d.slot, msix + 2, 2) & 0x7ff) == 2,
                "multiqueue: three MSI-X vectors (config + one per queue)");
    } else {
        /* Forced off, or KVM_SIGNAL_MSI fell back for good earlier (an
         * old-kernel preset refuses it): no MSI-X capability at all. */
        KEEL_OK(!msix, "multiqueue: no MSI-X without a way to deliver it");
    }
    KEEL_OK(vdev->queues[0].ctx == conf.queue_ctx[0] && vdev->queues[1].ctx == conf.queue_ctx[1],
            "multiqueue: each queue lives in its iothread");
    virtio_blk_describe(d.blk, line, sizeof(line));
    KEEL_OK(strstr(line, "queues=2") && strstr(line, "vq-iothreads=io0,io1"),
            "multiqueue: the start-up line names the mapping (%s)", line);

    KEEL_OK(drv_setup_mq(&d, ALL_FEATURES | (1ull << VIRTIO_BLK_F_MQ), QSIZE, 2),
            "multiqueue: set-up with both queues");
    mq_avail[0] = mq_avail[1] = mq_used_seen[0] = mq_used_seen[1] = 0;
    /* Write through queue 1 (io1, attached to the backend whose home is
     * io0: it submits and completes on io1's own engine), read back
     * through queue 0. */
    for (unsigned i = 0; i < 4096; i++) {
        req_data(8)[i] = (uint8_t)(i * 7 + 1);
    }
    mq_submit(&d, 1, 8, VIRTIO_BLK_T_OUT, 40, 4096, false);
    KEEL_OK(mq_wait(1, 1) && req_status(8) == VIRTIO_BLK_S_OK, "multiqueue: write on queue 1");
    KEEL_OK(strcmp(keel_blk_engine_name_in(virtio_blk_get_backend(d.blk), conf.queue_ctx[1]),
                   "none") != 0,
            "multiqueue: queue 1 submitted on an engine of its own iothread (%s), no bounce",
            keel_blk_engine_name_in(virtio_blk_get_backend(d.blk), conf.queue_ctx[1]));
    mq_submit(&d, 0, 0, VIRTIO_BLK_T_IN, 40, 4096, true);
    KEEL_OK(mq_wait(0, 1) && req_status(0) == VIRTIO_BLK_S_OK, "multiqueue: read on queue 0");
    KEEL_OK(!memcmp(req_data(0), req_data(8), 4096), "multiqueue: the data crossed queues");
    KEEL_OK(pread(d.fd, buf, 4096, 40 * 512) == 4096 && !memcmp(buf, req_data(8), 4096),
            "multiqueue: and is in the image");

    /* Writes in flight on both queues (100 ms each): the reset waits for
     * all of them, each completing into its own ring. */
    mq_submit(&d, 0, 1, VIRTIO_BLK_T_OUT, 80, 4096, false);
    mq_submit(&d, 1, 9, VIRTIO_BLK_T_OUT, 88, 4096, false);
    mq_submit(&d, 1, 10, VIRTIO_BLK_T_OUT, 96, 4096, false);
    for (int i = 0; i < 500 && (queue_counts(d.vp, 0).popped < 2 ||
                                queue_counts(d.vp, 1).popped < 3); i++) {
        g_usleep(1000);
    }
    KEEL_OK(mq_used_idx(0) == 1 && mq_used_idx(1) == 1, "multiqueue: 3 writes in flight");
    mmio_write(&d, 0x14, 1, 0);
    KEEL_IS(status_reg(&d), 0, "multiqueue: reset finished");
    KEEL_OK(mq_used_idx(0) == 2 && mq_used_idx(1) == 3,
            "multiqueue: every in-flight write completed into its own ring first");
    KEEL_OK(queue_counts(d.vp, 0).inflight == 0 && queue_counts(d.vp, 1).inflight == 0,
            "multiqueue: nothing in flight on either queue");

    /* A chain without a status byte on queue 1 breaks the device: queue 0
     * takes nothing until the reset. */
    KEEL_OK(drv_setup_mq(&d, ALL_FEATURES | (1ull << VIRTIO_BLK_F_MQ), QSIZE, 2),
            "multiqueue: set-up again");
    mq_avail[0] = mq_avail[1] = 0;
    put_desc(GPA_MQ_DESC(1), 30, GPA_HDR + 32 * 10, 16, 0, 0);
    {
        uint16_t *ring = gpa(GPA_MQ_AVAIL(1) + 4);
        ring[0] = 30;
        mq_avail[1] = 1;
        __atomic_store_n((uint16_t *)gpa(GPA_MQ_AVAIL(1) + 2), 1, __ATOMIC_RELEASE);
        mmio_write(&d, VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT, 2, 0);
    }
    for (int i = 0; i < 500 && !(status_reg(&d) & VIRTIO_STATUS_NEEDS_RESET); i++) {
        g_usleep(1000);
    }
    KEEL_OK(status_reg(&d) & VIRTIO_STATUS_NEEDS_RESET, "multiqueue: queue 1 sets NEEDS_RESET");
    mq_submit(&d, 0, 2, VIRTIO_BLK_T_IN, 0, 512, true);
    g_usleep(50000);
    KEEL_IS(mq_used_idx(0), 0, "multiqueue: queue 0 takes nothing while the device is broken");
    KEEL_OK(drv_setup_mq(&d, ALL_FEATURES | (1ull << VIRTIO_BLK_F_MQ), QSIZE, 2),
            "multiqueue: reset + set-up");
    mq_avail[0] = mq_avail[1] = 0;
    mq_submit(&d, 0, 2, VIRTIO_BLK_T_IN, 40, 4096, true);
    mq_submit(&d, 1, 11, VIRTIO_BLK_T_IN, 40, 4096, true);
    KEEL_OK(mq_wait(0, 1) && mq_wait(1, 1) && !memcmp(req_data(2), req_data(8), 4096) &&
            !memcmp(req_data(11), req_data(8), 4096), "multiqueue: both queues read after it");
    KEEL_OK(queue_counts(d.vp, 0).popped > 0 && queue_counts(d.vp, 1).popped > 0,
            "multiqueue: each queue's handler ran");

    drv_close(&d);
    keel_iothread_free(io[1]);
    keel_iothread_free(io[0]);
}

/* The command line's way in: JSON -device with an explicit mapping (queue
 * 0 on io1, queue 1 on io0), werror=stop holding a failed write of queue 1
 * until QMP's cont (vmm_block_devices_retry), drain across both queues. */
static unsigned io_error_calls;
static bool io_error_stopping;

static void count_io_error(void *opaque, const char *device, bool is_write, int error,
                           bool stopping)
{
    (void)opaque, (void)device, (void)is_write, (void)error;
    __atomic_add_fetch(&io_error_calls, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&io_error_stopping, stopping, __ATOMIC_SEQ_CST);
}

static void test_block_devices_mq(void)
{
    char kernel[64], image[64], drive[160], errbuf[512];
    const char *device = "{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\",\"num-queues\":2,"
                         "\"iothread-vq-mapping\":[{\"iothread\":\"io0\",\"vqs\":[1]},"
                         "{\"iothread\":\"io1\",\"vqs\":[0]}]}";
    const char *argv[16];
    VmmOptions opts;
    VmmBlockDevices *devs;
    VmmMachine *machine;
    VmmBlockInfo info;
    VirtioDevice *vdev;
    uint8_t buf[4096];
    int argc = 0, kfd;
    Drv d;

    memset(&d, 0, sizeof(d));
    snprintf(kernel, sizeof(kernel), "%s/keel-virtio-k.XXXXXX", g_get_tmp_dir());
    snprintf(image, sizeof(image), "%s/keel-virtio-mq.XXXXXX", g_get_tmp_dir());
    kfd = mkstemp(kernel);
    d.fd = mkstemp(image);
    if (kfd < 0 || d.fd < 0 || ftruncate(d.fd, DISK_SIZE) < 0) {
        keel_test_skip_all("cannot create files in %s", g_get_tmp_dir());
    }
    close(kfd);
    snprintf(drive, sizeof(drive), "file=%s,if=none,id=d0,format=raw,werror=stop,"
             "inject=write:ENOSPC:once", image);
    argv[argc++] = "keel-vmm";
    argv[argc++] = "-kernel", argv[argc++] = kernel;
    argv[argc++] = "-object", argv[argc++] = "iothread,id=io0";
    argv[argc++] = "-object", argv[argc++] = "iothread,id=io1";
    argv[argc++] = "-drive", argv[argc++] = drive;
    argv[argc++] = "-device", argv[argc++] = device;
    argv[argc] = NULL;
    if (vmm_options_parse(&opts, argc, (char **)argv, errbuf, sizeof(errbuf)) < 0) {
        KEEL_OK(false, "command line: JSON -device with iothread-vq-mapping parses (%s)", errbuf);
        goto out;
    }
    /* As keel-vmm's main(): the machine owns the iothreads and the INTx
     * lines, the drives take theirs from it. */
    machine = vmm_machine_new("mq", NULL, NULL, false, false);
    vmm_machine_attach_vm(machine, &vm);
    for (int i = 0; i < opts.nr_iothreads; i++) {
        KEEL_OK(vmm_machine_add_iothread(machine, &opts.iothreads[i], errbuf,
                                         sizeof(errbuf)) == 0,
                "command line: the machine starts iothread %s", opts.iothreads[i].id);
    }
    devs = vmm_block_devices_new(machine, host, &opts, errbuf, sizeof(errbuf));
    KEEL_OK(devs != NULL, "command line: the drive is created in the machine's iothreads%s%s",
            devs ? "" : ": ", devs ? "" : errbuf);
    if (!devs) {
        vmm_machine_attach_vm(machine, NULL);
        vmm_machine_free(machine);
        vmm_options_free(&opts);
        goto out;
    }
    KEEL_OK(vmm_machine_find_device(machine, "virtio-blk0", "virtio-blk-pci") ==
            vmm_block_devices_drive(devs, 0),
            "machine: the registry lists virtio-blk0 with its device");
    d.blk = vmm_block_devices_drive(devs, 0);
    d.vp = virtio_blk_get_transport(d.blk);
    d.slot = d.vp->pci->slot;
    d.bar = conf_read(d.slot, PCI_BAR0, 4) & ~0xfu;
    vdev = virtio_blk_get_device(d.blk);
    KEEL_OK(d.vp->intx_irq && kvm_irq_line_owner(&vm.irqs, d.vp->intx_irq) &&
            !strcmp(kvm_irq_line_owner(&vm.irqs, d.vp->intx_irq), "virtio-blk0"),
            "machine: the drive's INTx line %u is claimed for virtio-blk0", d.vp->intx_irq);
    KEEL_OK(vdev->num_queues == 2 && !strcmp(vdev->queues[0].iothread_id, "io1") &&
            !strcmp(vdev->queues[1].iothread_id, "io0") &&
            vdev->queues[0].ctx != vdev->queues[1].ctx &&
            vdev->queues[0].ctx != keel_main_aio_context(),
            "command line: queue 0 in io1, queue 1 in io0 (explicit vqs)");
    vmm_block_devices_set_io_error_hook(devs, count_io_error, NULL);

    KEEL_OK(drv_setup_mq(&d, ALL_FEATURES | (1ull << VIRTIO_BLK_F_MQ), QSIZE, 2),
            "command line: set-up with both queues");
    mq_avail[0] = mq_avail[1] = 0;
    for (unsigned i = 0; i < 4096; i++) {
        req_data(8)[i] = (uint8_t)(i * 3 + 5);
    }
    mq_submit(&d, 1, 8, VIRTIO_BLK_T_OUT, 16, 4096, false);
    for (int i = 0; i < 2000 && !__atomic_load_n(&io_error_calls, __ATOMIC_SEQ_CST); i++) {
        g_usleep(1000);
    }
    KEEL_OK(__atomic_load_n(&io_error_calls, __ATOMIC_SEQ_CST) == 1 &&
            __atomic_load_n(&io_error_stopping, __ATOMIC_SEQ_CST),
            "werror=stop: the failed write is reported, stopping");
    vmm_block_devices_drain(devs);
    KEEL_IS(mq_used_idx(1), 0, "werror=stop: drained, the write is held (not completed)");
    KEEL_OK(vmm_block_devices_query(devs, &info, 1) == 1 && !strcmp(info.io_status, "nospace"),
            "query-block: io-status nospace");
    vmm_block_devices_retry(devs);
    KEEL_OK(mq_wait(1, 1) && req_status(8) == VIRTIO_BLK_S_OK,
            "cont: the held write is retried in its queue and succeeds");
    KEEL_OK(pread(d.fd, buf, 4096, 16 * 512) == 4096 && !memcmp(buf, req_data(8), 4096),
            "cont: the data is in the image");
    KEEL_OK(vmm_block_devices_query(devs, &info, 1) == 1 && !strcmp(info.io_status, "ok") &&
            info.wr_operations == 1 && info.failed_wr_operations == 0,
            "query-block: io-status ok, one write counted once");
    mq_submit(&d, 0, 0, VIRTIO_BLK_T_IN, 16, 4096, true);
    KEEL_OK(mq_wait(0, 1) && !memcmp(req_data(0), req_data(8), 4096),
            "read back through queue 0 (io1)");
    vmm_block_devices_free(devs, NULL);
    KEEL_OK(!vmm_machine_find_device(machine, "virtio-blk0", NULL),
            "machine: the freed drive left the registry");
    vmm_machine_attach_vm(machine, NULL);
    vmm_machine_free(machine);      /* the iothreads end after the drive */
    vmm_options_free(&opts);
out:
    unlink(kernel);
    unlink(image);
    close(d.fd);
}

static void test_readonly(void)
{
    Drv d;

    drv_open(&d, keel_main_aio_context(), NULL, true);
    KEEL_OK(drv_setup(&d, ALL_FEATURES, QSIZE), "read-only drive: set-up (RO negotiated)");
    KEEL_OK(d.vp->guest_features >> VIRTIO_BLK_F_RO & 1, "read-only drive offers RO");
    KEEL_IS(do_req(&d, 0, VIRTIO_BLK_T_OUT, 0, 512, false, NULL), VIRTIO_BLK_S_IOERR, "read-only: write fails");
    KEEL_IS(do_req(&d, 1, VIRTIO_BLK_T_IN, 0, 512, true, NULL), VIRTIO_BLK_S_OK, "read-only: read works");
    drv_close(&d);
}

/* With a real KVM VM (no vCPU): the device's KVM paths set up without
 * error — ioeventfd on the notify address, INTx irqfd with a resample fd,
 * MSI-X vectors on GSI routes with irqfds — and a completion goes out
 * through the irqfd.  (Delivery to a running guest is vmm-blk-test's.) */
static void test_kvm_paths(void)
{
    Vm real;
    PciHost *h;
    VirtioBlk *blk;
    VirtioPci *vp;
    VirtioBlkConf conf;
    char err[256], path[64];
    unsigned slot, cap = 0;
    uint64_t bar, before;
    bool efd, want_ioeventfd, want_irqfd, want_msix;
    int fd;

    if (!(kvm_caps_probe()->irqfd && kvm_caps_probe()->ioeventfd &&
          kvm_caps_probe()->irq_routing && !kvm_caps_probe()->open_errno)) {
        keel_test_skip("KVM paths: /dev/kvm unusable or without irqfd/ioeventfd/routing");
        return;
    }
    keel_global_mutex_lock();
    if (vm_create(&real, 16u << 20, VM_RAM_AUTO) < 0) {
        keel_global_mutex_unlock();
        keel_test_skip("KVM paths: cannot create a VM");
        return;
    }
    keel_global_mutex_unlock();
    h = pci_host_new(&real);
    snprintf(path, sizeof(path), "%s/keel-virtio-kvm.XXXXXX", g_get_tmp_dir());
    fd = mkstemp(path);
    if (fd < 0 || ftruncate(fd, DISK_SIZE) < 0) {
        keel_test_skip("KVM paths: no image");
        return;
    }
    memset(&conf, 0, sizeof(conf));
    conf.name = "virtio-blk-kvm";
    keel_blk_options_init(&conf.blk);
    conf.blk.filename = path;
    conf.blk.aio = KEEL_BLK_AIO_THREADS;
    conf.ctx = keel_main_aio_context();
    conf.intx_irq = 11;
    blk = virtio_blk_new(&real, h, &conf, err, sizeof(err));
    unlink(path);
    KEEL_OK(blk != NULL, "KVM paths: device created on a real VM (%s)", blk ? "ok" : err);
    if (!blk) {
        goto out;
    }
    vp = virtio_blk_get_transport(blk);
    /* What KEEL_AVOID leaves: the notifiers must be eventfds for KVM. */
    efd = keel_event_notifier_is_eventfd(&vp->vdev->queues[0].notifier);
    want_ioeventfd = efd && !keel_avoid(KEEL_PATH_IOEVENTFD);
    want_irqfd = efd && !keel_avoid(KEEL_PATH_IRQFD);
    want_msix = !keel_avoid(KEEL_PATH_MSIX) &&
                (want_irqfd || (kvm_caps_probe()->signal_msi && !keel_avoid(KEEL_PATH_SIGNAL_MSI)));
    KEEL_OK(vp->use_ioeventfd == want_ioeventfd && vp->queues[0].ioeventfd_assigned == want_ioeventfd,
            "KVM paths: the notify address is %s", want_ioeventfd ? "a KVM ioeventfd" : "left to the exit handler");
    KEEL_OK(vp->intx_irqfd == want_irqfd, "KVM paths: INTx through %s",
            want_irqfd ? "a level-triggered irqfd with a resample fd" : "KVM_IRQ_LINE");
    KEEL_OK(vp->msix_present == want_msix && (!want_msix || vp->msix_use_irqfd == want_irqfd),
            "KVM paths: MSI-X %s", !want_msix ? "not offered" : want_irqfd ? "through irqfds"
                                                                       : "through KVM_SIGNAL_MSI");
    if (!want_msix) {
        keel_global_mutex_lock();
        virtio_blk_free(blk);
        keel_global_mutex_unlock();
        goto out;
    }

    /* Drive it through the real VM's buses (the global mutex is taken by them). */
    machine = &real;
    slot = vp->pci->slot;
    bar = conf_read(slot, PCI_BAR0, 4) & ~0xfull;
    for (unsigned c = conf_read(slot, 0x34, 1); c; c = conf_read(slot, c + 1, 1)) {
        if (conf_read(slot, c, 1) == 0x11) {
            cap = c;
        }
    }
    for (unsigned v = 0; v < 2; v++) {
        bus_write(&real.mmio_bus, bar + VIRTIO_PCI_MSIX_TABLE_OFF + 16 * v, 4, 0xfee00000);
        bus_write(&real.mmio_bus, bar + VIRTIO_PCI_MSIX_TABLE_OFF + 16 * v + 8, 4, 0x30 + v);
        bus_write(&real.mmio_bus, bar + VIRTIO_PCI_MSIX_TABLE_OFF + 16 * v + 12, 4, 0);
    }
    conf_write(slot, cap + 2, 2, 0x8000);
    if (want_irqfd) {
        KEEL_OK(vp->msix[0].irqfd_ready && vp->msix[1].irqfd_ready && vp->msix[0].gsi >= 24 &&
                vp->msix[1].gsi > vp->msix[0].gsi,
                "KVM paths: both vectors have a GSI route (%d, %d) and an irqfd", vp->msix[0].gsi,
                vp->msix[1].gsi);
        bus_write(&real.mmio_bus, bar + VIRTIO_PCI_MSIX_TABLE_OFF + 16 + 8, 4, 0x41);
        KEEL_IS(vp->msix[1].route_data, 0x41, "KVM paths: a changed entry updates its route");
    }
    before = vp->stats.irqs_msix_irqfd + vp->stats.irqs_msix_ioctl;
    virtio_pci_notify_queue(vp, 0);             /* queue vector still NO_VECTOR */
    KEEL_IS(vp->stats.irqs_msix_irqfd + vp->stats.irqs_msix_ioctl, before,
            "KVM paths: NO_VECTOR: no interrupt");
    bus_write(&real.mmio_bus, bar + 0x16, 2, 0);
    bus_write(&real.mmio_bus, bar + 0x1a, 2, 1);
    before = want_irqfd ? vp->stats.irqs_msix_irqfd : vp->stats.irqs_msix_ioctl;
    virtio_pci_notify_queue(vp, 0);
    KEEL_IS(want_irqfd ? vp->stats.irqs_msix_irqfd : vp->stats.irqs_msix_ioctl, before + 1,
            "KVM paths: a queue interrupt goes out by %s", want_irqfd ? "irqfd" : "KVM_SIGNAL_MSI");
    keel_global_mutex_lock();
    virtio_blk_free(blk);
    keel_global_mutex_unlock();
out:
    machine = &vm;
    pci_host_free(h);
    keel_global_mutex_lock();
    vm_destroy(&real);
    keel_global_mutex_unlock();
    close(fd);
}

int main(void)
{
    Drv d;

    alarm(60);
    if (keel_main_loop_init() < 0) {
        keel_test_skip_all("no main loop");
    }
    machine_init(true);

    drv_open(&d, keel_main_aio_context(), NULL, false);
    test_identity(&d);
    test_negotiation(&d);
    test_requests(&d);
    test_bad_chains(&d);
    test_interrupts(&d);
    if (msix_expected()) {
        test_msix(&d);
    } else {
        keel_test_skip("MSI-X registers: MSI-X forced off by KEEL_AVOID");
    }
    drv_close(&d);

    test_readonly();
    test_merging();
    test_io_error_log();
    test_reset_inflight(keel_main_aio_context(), "main loop");
    test_iothread();
    test_multiqueue();
    test_block_devices_mq();
    test_kvm_paths();

    machine_free();
    return keel_test_done();
}
