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
 * Register programs (byte 0 bit 6): bytes 1-2 give a length P, the next P
 * bytes are a program and the rest is guest RAM.  The program drives the
 * transport as a hostile driver would: BAR reads and writes anywhere in
 * BAR 0 (common cfg in any status order, queue select/size/addresses of
 * queues that do not exist, ISR, device cfg while live, notify, the MSI-X
 * table and PBA), PCI config writes (command, BAR moves while in use, the
 * MSI-X enable/mask bits), guest RAM changing under the device (rings,
 * avail idx running ahead), kicks and main-loop turns.  Byte 0 bit 7 picks
 * the second device: MSI-X (KVM_SIGNAL_MSI claimed, so the table is live)
 * with injected host errors (reads of 512k-1M fail EIO, writes of
 * 768k-1M ENOSPC).  Afterwards both devices are
 * reset and the PCI state put back, so every input starts the same.
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
static VirtioBlk *blk, *blk_msix;
static VirtioPci *vp, *vp_msix;
static uint64_t bar, bar_msix;
static char disk_path[64], disk_path2[64];

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

/* ---- phase 3: register programs ------------------------------------------------ */
static void conf_write(VirtioPci *d, unsigned reg, unsigned size, uint32_t v)
{
    bus_write(&vm.pio_bus, 0xcf8, 4, 0x80000000u | (unsigned)d->pci->slot << 11 | (reg & 0xfc));
    bus_write(&vm.pio_bus, 0xcfc + (reg & 3), size, v);
}

static uint32_t conf_read(VirtioPci *d, unsigned reg, unsigned size)
{
    uint64_t v = 0;

    bus_write(&vm.pio_bus, 0xcf8, 4, 0x80000000u | (unsigned)d->pci->slot << 11 | (reg & 0xfc));
    bus_read(&vm.pio_bus, 0xcfc + (reg & 3), size, &v);
    return (uint32_t)v;
}

/* Reads @n bytes of the program (zeros past its end). */
static uint64_t take(const uint8_t **p, const uint8_t *end, unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < n; i++) {
        v |= (uint64_t)(*p < end ? *(*p)++ : 0) << (8 * i);
    }
    return v;
}

static void dev_write(VirtioPci *d, unsigned off, unsigned size, uint64_t v)
{
    uint64_t at = d->pci->bars[VIRTIO_PCI_BAR].mapped_addr;

    if (at != PCI_BAR_UNMAPPED) {
        bus_write(&vm.mmio_bus, at + off, size, v);
    }
}

static void bring_up(VirtioPci *d, const Layout *l, uint64_t features)
{
    dev_write(d, 0x14, 1, 0);
    dev_write(d, 0x14, 1, 3);
    dev_write(d, 0x08, 4, 0);
    dev_write(d, 0x0c, 4, (uint32_t)features);
    dev_write(d, 0x08, 4, 1);
    dev_write(d, 0x0c, 4, (uint32_t)(features >> 32));
    dev_write(d, 0x14, 1, 0xb);
    dev_write(d, 0x16, 2, 0);
    dev_write(d, 0x18, 2, l->qsize);
    dev_write(d, 0x1a, 2, 0);              /* queue MSI-X vector 0 */
    dev_write(d, 0x10, 2, 1);              /* config MSI-X vector 1 */
    dev_write(d, 0x20, 8, l->desc);
    dev_write(d, 0x28, 8, l->avail);
    dev_write(d, 0x30, 8, l->used);
    dev_write(d, 0x1c, 2, 1);
    dev_write(d, 0x14, 1, 0xf);
}

static void run_loop(unsigned turns)
{
    for (unsigned i = 0; i < turns; i++) {
        keel_aio_poll(keel_main_aio_context(), false);
    }
}

static void run_program(VirtioPci *d, const Layout *l, uint64_t features, const uint8_t *p,
                        const uint8_t *end)
{
    static const unsigned sizes[4] = { 1, 2, 4, 8 };
    uint64_t v;

    while (p < end) {
        uint8_t op = *p++;
        unsigned size = sizes[(op >> 4) & 3];

        switch (op & 15) {
        case 0:     /* BAR 0 write anywhere (32 KiB) */
            v = take(&p, end, 2) & 0x7fff;
            dev_write(d, (unsigned)v, size, take(&p, end, 8));
            break;
        case 1: {   /* BAR 0 read */
            uint64_t at = d->pci->bars[VIRTIO_PCI_BAR].mapped_addr, r;
            v = take(&p, end, 2) & 0x7fff;
            if (at != PCI_BAR_UNMAPPED) {
                bus_read(&vm.mmio_bus, at + v, size, &r);
            }
            break;
        }
        case 2:     /* PCI config write (command, BAR moves, MSI-X control) */
            v = take(&p, end, 1);
            conf_write(d, (unsigned)v, size > 4 ? 4 : size, (uint32_t)take(&p, end, 4));
            break;
        case 3:     /* PCI config read */
            (void)conf_read(d, (unsigned)take(&p, end, 1), size > 4 ? 4 : size);
            break;
        case 4:     /* main-loop turns: completions, bottom halves */
            run_loop(1 + (op >> 4));
            break;
        case 5:     /* guest RAM changes under the device */
            v = take(&p, end, 2) % (SLOT_SIZE - 8);
            {
                uint64_t w = take(&p, end, 8);
                memcpy(slot0 + v, &w, size);
            }
            break;
        case 6:     /* the ordinary bring-up, to reach a live queue at once */
            bring_up(d, l, features);
            break;
        case 7:     /* kick queue q (0 exists; others must be ignored) */
            dev_write(d, VIRTIO_PCI_NOTIFY_OFF + 4 * (op >> 4), 2, op >> 4);
            break;
        case 8:     /* device_status in any order */
            dev_write(d, 0x14, 1, take(&p, end, 1));
            break;
        case 9:     /* an MSI-X table entry: address, data, vector control */
            v = VIRTIO_PCI_MSIX_TABLE_OFF + 16 * ((op >> 4) & 1);
            dev_write(d, (unsigned)v, 4, take(&p, end, 4));
            dev_write(d, (unsigned)v + 4, 4, 0);
            dev_write(d, (unsigned)v + 8, 4, take(&p, end, 4));
            dev_write(d, (unsigned)v + 12, 4, take(&p, end, 1));
            break;
        case 10: {  /* avail idx jumps ahead by N */
            uint16_t idx;
            memcpy(&idx, slot0 + l->avail + 2, 2);
            idx = (uint16_t)(idx + take(&p, end, 2));
            memcpy(slot0 + l->avail + 2, &idx, 2);
            break;
        }
        case 11:    /* queue select and size (queues that do not exist too) */
            dev_write(d, 0x16, 2, take(&p, end, 2));
            dev_write(d, 0x18, 2, take(&p, end, 2));
            break;
        default:
            break;
        }
    }
}

/* Puts both devices back: reset (drains), PCI command, BAR 0, MSI-X. */
static void restore(VirtioPci *d, uint64_t bar_addr)
{
    dev_write(d, 0x14, 1, 0);
    run_loop(2);
    conf_write(d, PCI_COMMAND, 2, 0x6);                 /* memory, bus master */
    conf_write(d, PCI_BAR0, 4, (uint32_t)bar_addr);
    if (d->msix_cap >= 0) {
        conf_write(d, (unsigned)d->msix_cap + 2, 2, 0);
        for (unsigned e = 0; e < d->msix_nvec; e++) {
            unsigned off = VIRTIO_PCI_MSIX_TABLE_OFF + 16 * e;
            dev_write(d, off, 4, 0);
            dev_write(d, off + 4, 4, 0);
            dev_write(d, off + 8, 4, 0);
            dev_write(d, off + 12, 4, 1);               /* masked */
        }
    }
    dev_write(d, 0x14, 1, 0);
    if (d->pci->bars[VIRTIO_PCI_BAR].mapped_addr != bar_addr) {
        fprintf(stderr, "BAR 0 not restored\n");
        abort();
    }
}

static void fuzz_program(const Layout *l, bool second, const uint8_t *prog, size_t plen,
                         const uint8_t *image, size_t ilen)
{
    VirtioPci *d = second ? vp_msix : vp;
    uint64_t features = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_FLUSH) |
                        (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES) |
                        (l->event_idx ? 1ull << VIRTIO_F_EVENT_IDX : 0) |
                        (l->indirect ? 1ull << VIRTIO_F_INDIRECT_DESC : 0);

    memset(slot0, 0, SLOT_SIZE);
    memcpy(slot0, image, ilen < SLOT_SIZE ? ilen : SLOT_SIZE);
    run_program(d, l, features, prog, prog + plen);
    run_loop(4);
    restore(vp, bar);
    restore(vp_msix, bar_msix);
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
    snprintf(disk_path2, sizeof(disk_path2), "%s/keel-fuzz-disk2.XXXXXX",
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

    /* The second device: MSI-X (KVM_SIGNAL_MSI claimed; the ioctl then
     * fails on the fake VM, which the device must survive) and host errors. */
    caps.signal_msi = true;
    fd = mkstemp(disk_path2);
    if (fd < 0 || ftruncate(fd, DISK_SIZE) < 0) {
        abort();
    }
    close(fd);
    conf.name = "virtio-blk-fuzz-msix";
    conf.blk.filename = disk_path2;
    conf.blk.inject = (char *)"read:EIO:offset=512k-1M;write:ENOSPC:offset=768k-1M";
    conf.intx_irq = 11;
    blk_msix = virtio_blk_new(&vm, host, &conf, err, sizeof(err));
    unlink(disk_path2);
    if (!blk_msix) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    vp_msix = virtio_blk_get_transport(blk_msix);
    bar_msix = vp_msix->pci->bars[VIRTIO_PCI_BAR].mapped_addr;
    if (vp_msix->msix_cap < 0) {
        fprintf(stderr, "the second device has no MSI-X\n");
        abort();
    }

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
        /* The same rings as register programs: bring-up, kick, loop; on the
         * MSI-X device also enable MSI-X, move the BAR while live, kick. */
        {
            static const uint8_t progs[2][24] = {
                { 6, 7, 4, 0x34 },
                { 0x12, PCI_COMMAND, 0x06, 0, 0, 0,          /* memory + bus master */
                  0x12, 0 /* MSI-X control, patched */, 0x00, 0x80, 0, 0,   /* enable */
                  6, 7, 0x34,                                  /* bring-up, kick, loop */
                  0x22, PCI_BAR0, 0x00, 0x00, 0x00, 0xe0,      /* BAR 0 moved in use */
                  4, 7, 4 },
            };
            uint8_t prog_in[3 + 24 + 0x1000];
            for (int k = 0; k < 2; k++) {
                prog_in[0] = (uint8_t)(in[0] | 0x40 | (k ? 0x80 : 0));
                prog_in[1] = 24;
                prog_in[2] = 0;
                memcpy(prog_in + 3, progs[k], 24);
                if (k) {
                    prog_in[3 + 7] = (uint8_t)(vp_msix->msix_cap + 2);
                }
                memcpy(prog_in + 3 + 24, ram, 0x1000);
                snprintf(path, sizeof(path), "%s/seed-program-%d", seeds, k);
                f = fopen(path, "wb");
                if (!f || fwrite(prog_in, 1, sizeof(prog_in), f) != sizeof(prog_in) ||
                    fclose(f) != 0) {
                    abort();
                }
            }
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
    if (data[0] & 0x40) {
        size_t plen = size >= 3 ? (size_t)(data[1] | data[2] << 8) : 0;
        const uint8_t *prog = data + (size < 3 ? size : 3);
        size_t rest = size < 3 ? 0 : size - 3;

        plen = plen < rest ? plen : rest;
        fuzz_program(&l, data[0] & 0x80, prog, plen, prog + plen, rest - plen);
        return 0;
    }
    memset(slot0, 0, SLOT_SIZE);
    memcpy(slot0, data + 1, size - 1 < SLOT_SIZE ? size - 1 : SLOT_SIZE);
    memcpy(slot1, slot0, SLOT_SIZE);
    fuzz_virtqueue(&l);
    fuzz_device(&l, data + 1, size - 1);
    return 0;
}
