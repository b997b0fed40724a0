/*
 * tests/fuzz-virtqueue.c — libFuzzer target (clang -fsanitize=fuzzer,
 * address,undefined; built and run by tests/fuzz-virtqueue.sh / `make fuzz`)
 * over the device side of the split virtqueue and the virtio-blk request
 * parser.
 *
 * Input: byte 0 chooses the queue size (bits 0-3: 1 << n, up to 256),
 * EVENT_IDX (bit 4) and INDIRECT_DESC (bit 5); the rest is guest RAM from address 0: the descriptor table at 0, the driver
 * area right after it, the device area after that (4-byte aligned), then
 * buffers.  Guest RAM is two slots in separate heap blocks (so ASan sees any
 * access that leaves one), 64 KiB at 0 and 64 KiB at 1 GiB.
 *
 * Phase 1 pops every chain with virtqueue_pop() and checks what it returns:
 * every iovec lies wholly inside one RAM slot, no more buffers than the
 * queue (or indirect table) holds, byte counts add up and stay under the
 * limit, a bad chain's status iovec is one writable byte in RAM.  Phase 2
 * gives the same memory to a real virtio-blk device (fake VM without KVM,
 * a 1 MiB image, thread-pool engine): DRIVER_OK, kick, let it work, then a
 * reset, which must drain everything.  Sanitizers catch the rest.
 *
 * KEEL_FUZZ_SEEDS=DIR writes a few well-formed inputs to DIR and exits
 * (the script's seed corpus).
 */
#include "config.h"

#include "vmm/virtio-blk.h"
#include "vmm/virtio-pci.h"
#include "vmm/virtqueue.h"
#include "loop/main-loop.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOT_SIZE (64u << 10)
#define SLOT1_GPA (1ull << 30)
#define DISK_SIZE (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static KvmCaps caps;
static Vm vm;
static uint8_t *slot0, *slot1;
static PciHost *host;
static VirtioBlk *blk;
static VirtioPci *vp;
static uint64_t bar;
static char disk_path[64];

typedef struct Layout {
    uint16_t qsize;
    bool event_idx, indirect;
    uint64_t desc, avail, used;
} Layout;

static void layout_of(uint8_t cfg, Layout *l)
{
    unsigned n = cfg & 15;

    l->qsize = (uint16_t)(1u << (n > 8 ? 8 : n));
    l->event_idx = cfg & 0x10;
    l->indirect = cfg & 0x20;
    l->desc = 0;
    l->avail = 16ull * l->qsize;
    l->used = (l->avail + 6 + 2ull * l->qsize + 3) & ~3ull;
}

static bool in_slot(const void *p, size_t len, const uint8_t *slot)
{
    const uint8_t *b = p;
    return b >= slot && len <= SLOT_SIZE && (size_t)(b - slot) <= SLOT_SIZE - len;
}

static void check_iov(const struct iovec *v)
{
    if (!in_slot(v->iov_base, v->iov_len, slot0) && !in_slot(v->iov_base, v->iov_len, slot1)) {
        fprintf(stderr, "iovec %p+%zu outside guest RAM\n", v->iov_base, v->iov_len);
        abort();
    }
}

/* ---- phase 1: the virtqueue alone ------------------------------------------- */
static void fuzz_virtqueue(const Layout *l)
{
    static VirtQueue vq;
    const char *why;

    if (virtqueue_start(&vq, &vm, l->qsize, l->desc, l->avail, l->used, l->event_idx,
                        l->indirect, &why) < 0) {
        abort();        /* our layout is always valid */
    }
    for (unsigned i = 0; i < 2u * l->qsize + 2; i++) {
        VirtQueueElement *e;
        VirtQueuePopResult r = virtqueue_pop(&vq, sizeof(*e) + 8, (void **)&e);
        uint64_t out = 0, in = 0;

        if (r == VQ_POP_EMPTY || r == VQ_POP_BROKEN) {
            break;
        }
        if (e->head >= l->qsize || e->out_num + e->in_num > l->qsize) {
            abort();
        }
        for (unsigned k = 0; k < e->out_num; k++) {
            check_iov(&e->out_sg[k]);
            out += e->out_sg[k].iov_len;
        }
        for (unsigned k = 0; k < e->in_num; k++) {
            check_iov(&e->in_sg[k]);
            in += e->in_sg[k].iov_len;
        }
        if (r == VQ_POP_BAD_CHAIN) {
            if (e->out_num || e->in_num > 1 || (e->in_num && in != 1)) {
                abort();
            }
        } else if (out != e->out_bytes || in != e->in_bytes ||
                   out + in > VIRTQUEUE_MAX_CHAIN_BYTES) {
            abort();
        }
        virtqueue_push(&vq, e, (uint32_t)in);
        virtqueue_should_notify(&vq);
        g_free(e);
        virtqueue_set_notification(&vq, true);
    }
    virtqueue_reset(&vq);
}

/* ---- phase 2: the device ------------------------------------------------------ */
static void mmio_write(unsigned off, unsigned size, uint64_t v)
{
    bus_write(&vm.mmio_bus, bar + off, size, v);
}

static void fuzz_device(const Layout *l, const uint8_t *image, size_t len)
{
    uint64_t features = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_FLUSH) |
                        (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES) |
                        (l->event_idx ? 1ull << VIRTIO_F_EVENT_IDX : 0) |
                        (l->indirect ? 1ull << VIRTIO_F_INDIRECT_DESC : 0);

    mmio_write(0x14, 1, 0);
    mmio_write(0x14, 1, 3);
    mmio_write(0x08, 4, 0);
    mmio_write(0x0c, 4, (uint32_t)features);
    mmio_write(0x08, 4, 1);
    mmio_write(0x0c, 4, (uint32_t)(features >> 32));
    mmio_write(0x14, 1, 0xb);
    mmio_write(0x16, 2, 0);
    mmio_write(0x18, 2, l->qsize);
    mmio_write(0x20, 8, l->desc);
    mmio_write(0x28, 8, l->avail);
    mmio_write(0x30, 8, l->used);
    mmio_write(0x1c, 2, 1);
    mmio_write(0x14, 1, 0xf);
    /* The rings as the input says (the device zeroed the used index). */
    memcpy(slot0, image, len < SLOT_SIZE ? len : SLOT_SIZE);
    mmio_write(VIRTIO_PCI_NOTIFY_OFF, 2, 0);
    for (int i = 0; i < 4; i++) {
        keel_aio_poll(keel_main_aio_context(), false);
    }
    mmio_write(0x14, 1, 0);     /* reset: drains what is in flight */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    VirtioBlkConf conf;
    char err[256];
    const char *seeds = getenv("KEEL_FUZZ_SEEDS");
    int fd;

    (void)argc, (void)argv;
    if (keel_main_loop_init() < 0) {
        abort();
    }
    caps.signal_msi = false;
    vm.kvm_fd = vm.vm_fd = vm.ram_fd = -1;
    vm.caps = &caps;
    bus_init(&vm.pio_bus, "pio");
    bus_init(&vm.mmio_bus, "mmio");
    slot0 = calloc(1, SLOT_SIZE);
    slot1 = calloc(1, SLOT_SIZE);
    vm.slots[0] = (VmRamSlot) { .gpa = 0, .size = SLOT_SIZE, .hva = slot0 };
    vm.slots[1] = (VmRamSlot) { .gpa = SLOT1_GPA, .size = SLOT_SIZE, .hva = slot1 };
    vm.nr_slots = 2;
    host = pci_host_new(&vm);

    snprintf(disk_path, sizeof(disk_path), "%s/keel-fuzz-disk.XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : g_get_tmp_dir());
    fd = mkstemp(disk_path);
    if (fd < 0 || ftruncate(fd, DISK_SIZE) < 0) {
        abort();
    }
    close(fd);
    memset(&conf, 0, sizeof(conf));
    conf.name = "virtio-blk-fuzz";
    keel_blk_options_init(&conf.blk);
    conf.blk.filename = disk_path;
    conf.blk.aio = KEEL_BLK_AIO_THREADS;
    conf.blk.cache = KEEL_BLK_CACHE_UNSAFE;
    conf.serial = "fuzz";
    conf.ctx = keel_main_aio_context();
    conf.intx_irq = 10;
    blk = virtio_blk_new(&vm, host, &conf, err, sizeof(err));
    unlink(disk_path);          /* the open fd keeps it */
    if (!blk) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    vp = virtio_blk_get_transport(blk);
    bar = vp->pci->bars[VIRTIO_PCI_BAR].mapped_addr;

    if (seeds) {
        /* queue of 8: a read, a write, a flush, each a direct 3/2-chain */
        uint8_t in[1 + 0x1000];
        Layout l;
        FILE *f;
        char path[512];
        uint8_t *ram = in + 1;

        memset(in, 0, sizeof(in));
        in[0] = 3 | 0x10 | 0x20;
        layout_of(in[0], &l);
        for (unsigned r = 0; r < 3; r++) {
            uint8_t *d = ram + l.desc + 48 * r;
            uint64_t hdr = 0x300 + 16 * r, buf = 0x400 + 0x200 * r, st = 0x380 + r;
            uint32_t type = r == 0 ? 0 : r == 1 ? 1 : 4, len16 = 16, len = 512, one = 1;
            uint16_t fl_next = 1, fl_wnext = 3, fl_w = 2, next;
            memcpy(ram + hdr, &type, 4);
            memcpy(d, &hdr, 8);
            memcpy(d + 8, &len16, 4);
            memcpy(d + 12, &fl_next, 2);
            next = (uint16_t)(3 * r + 1);
            memcpy(d + 14, &next, 2);
            memcpy(d + 16, &buf, 8);
            memcpy(d + 24, &len, 4);
            memcpy(d + 28, r == 0 ? &fl_wnext : &fl_next, 2);
            next = (uint16_t)(3 * r + 2);
            memcpy(d + 30, &next, 2);
            memcpy(d + 32, &st, 8);
            memcpy(d + 40, &one, 4);
            memcpy(d + 44, &fl_w, 2);
            next = (uint16_t)(3 * r);
            memcpy(ram + l.avail + 4 + 2 * r, &next, 2);       /* avail ring */
        }
        ram[l.avail + 2] = 3;                                   /* avail idx */
        snprintf(path, sizeof(path), "%s/seed-rw-flush", seeds);
        f = fopen(path, "wb");
        if (!f || fwrite(in, 1, sizeof(in), f) != sizeof(in) || fclose(f) != 0) {
            abort();
        }
        in[0] = 0x10;       /* queue of 1, EVENT_IDX */
        snprintf(path, sizeof(path), "%s/seed-small", seeds);
        f = fopen(path, "wb");
        if (!f || fwrite(in, 1, 64, f) != 64 || fclose(f) != 0) {
            abort();
        }
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Layout l;

    if (size < 1) {
        return 0;
    }
    layout_of(data[0], &l);
    memset(slot0, 0, SLOT_SIZE);
    memcpy(slot0, data + 1, size - 1 < SLOT_SIZE ? size - 1 : SLOT_SIZE);
    memcpy(slot1, slot0, SLOT_SIZE);
    fuzz_virtqueue(&l);
    fuzz_device(&l, data + 1, size - 1);
    return 0;
}
