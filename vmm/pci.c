/*
 * PCI host bridge (configuration mechanism #1) and BAR management.
 *
 * BAR registers live in config space like any other register; their write
 * masks encode the size (address bits below the size are read-only zero),
 * so sizing needs no special case.  After every write that touches the
 * command register or a BAR, each BAR's effective mapping is recomputed and
 * moved on the bus if it changed.
 */
#include "config.h"

#include "vmm/pci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONF1_ADDR_PORT 0xcf8
#define CONF1_ENABLE    0x80000000u
#define RESET_CONTROL_OFFSET 1      /* 0xcf9 */

#define PCI_IO_WINDOW_START 0xc000ull
#define PCI_IO_WINDOW_END   0x10000ull
#define PCI_MEM64_LIMIT     (1ull << 46)

/* The host bridge's IDs: Red Hat's "QEMU PCIe host bridge" is the generic
 * choice that no guest applies chipset quirks to. */
#define HOST_BRIDGE_VENDOR  0x1b36
#define HOST_BRIDGE_DEVICE  0x0008

struct PciHost {
    Vm *vm;
    uint32_t config_address;
    uint8_t reset_control;
    PciDevice *devices[PCI_MAX_DEVICES];
    int wanted_slot;            /* 1 + the slot the next device asks for; 0: any */
    uint64_t next_io;
    uint64_t next_mmio;
};

uint32_t pci_config_read(PciDevice *dev, unsigned off, unsigned size)
{
    uint32_t v = 0;

    for (unsigned i = 0; i < size && off + i < PCI_CONFIG_SIZE; i++) {
        v |= (uint32_t)dev->config[off + i] << (8 * i);
    }
    return v;
}

void pci_config_set(PciDevice *dev, unsigned off, uint32_t value, unsigned size)
{
    for (unsigned i = 0; i < size && off + i < PCI_CONFIG_SIZE; i++) {
        dev->config[off + i] = (uint8_t)(value >> (8 * i));
    }
}

void pci_device_set_wmask(PciDevice *dev, unsigned off, unsigned len, uint8_t mask)
{
    for (unsigned i = 0; i < len && off + i < PCI_CONFIG_SIZE; i++) {
        dev->wmask[off + i] = mask;
    }
}

/* ---- BAR mapping ------------------------------------------------------- */

static uint64_t pci_bar_bus_read(void *opaque, uint64_t offset, unsigned size)
{
    struct PciBarHandle *h = opaque;
    return h->dev->ops->bar_read(h->dev, h->bar, offset, size);
}

static void pci_bar_bus_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    struct PciBarHandle *h = opaque;
    h->dev->ops->bar_write(h->dev, h->bar, offset, value, size);
}

static const BusOps pci_bar_bus_ops = {
    .read = pci_bar_bus_read,
    .write = pci_bar_bus_write,
};

/* Where BAR @i should be mapped now, or PCI_BAR_UNMAPPED. */
static uint64_t pci_bar_wanted_addr(PciDevice *dev, int i)
{
    PciBar *b = &dev->bars[i];
    uint16_t cmd = (uint16_t)pci_config_read(dev, PCI_COMMAND, 2);
    uint32_t lo = pci_config_read(dev, PCI_BAR0 + 4 * i, 4);
    uint64_t addr;

    switch (b->type) {
    case PCI_BAR_IO:
        addr = lo & ~3u;
        if (!(cmd & PCI_COMMAND_IO) || !addr || addr + b->size > PCI_IO_WINDOW_END) {
            return PCI_BAR_UNMAPPED;
        }
        return addr;
    case PCI_BAR_MEM32:
        addr = lo & ~0xfu;
        /* Also refuses the all-ones sizing pattern (it lands above the
         * MMIO window, over the IOAPIC/LAPIC/flash area). */
        if (!(cmd & PCI_COMMAND_MEMORY) || !addr || addr + b->size > VM_PCI_MMIO_END) {
            return PCI_BAR_UNMAPPED;
        }
        return addr;
    case PCI_BAR_MEM64:
        addr = (lo & ~0xfull) | ((uint64_t)pci_config_read(dev, PCI_BAR0 + 4 * i + 4, 4) << 32);
        if (!(cmd & PCI_COMMAND_MEMORY) || !addr || addr + b->size > PCI_MEM64_LIMIT ||
            (addr < VM_HIGH_RAM_START && addr + b->size > VM_PCI_MMIO_END)) {
            return PCI_BAR_UNMAPPED;
        }
        return addr;
    case PCI_BAR_NONE:
        break;
    }
    return PCI_BAR_UNMAPPED;
}

static void pci_update_mappings(PciDevice *dev)
{
    Vm *vm = dev->host->vm;

    for (int i = 0; i < PCI_NUM_BARS; i++) {
        PciBar *b = &dev->bars[i];
        Bus *bus = b->type == PCI_BAR_IO ? &vm->pio_bus : &vm->mmio_bus;
        uint64_t old = b->mapped_addr, want;

        if (b->type == PCI_BAR_NONE) {
            continue;
        }
        want = pci_bar_wanted_addr(dev, i);
        if (want == old) {
            continue;
        }
        if (old != PCI_BAR_UNMAPPED) {
            bus_remove(bus, old, &dev->bar_handles[i]);
        }
        if (want != PCI_BAR_UNMAPPED &&
            bus_add(bus, want, b->size, &pci_bar_bus_ops, &dev->bar_handles[i], BUS_LOCKED,
                    dev->name) < 0) {
            /* Overlaps another region: a guest bug; leave the BAR dark. */
            want = PCI_BAR_UNMAPPED;
        }
        b->mapped_addr = want;
        if (want != old && dev->ops->bar_remap) {
            dev->ops->bar_remap(dev, i, old, want);
        }
    }
}

/* ---- config space ---------------------------------------------------- */

static void pci_config_write(PciDevice *dev, unsigned off, uint32_t value, unsigned size)
{
    bool touches_mapping = false;

    for (unsigned i = 0; i < size && off + i < PCI_CONFIG_SIZE; i++) {
        unsigned o = off + i;
        uint8_t m = dev->wmask[o];
        dev->config[o] = (uint8_t)((dev->config[o] & ~m) | ((value >> (8 * i)) & m));
        if ((o >= PCI_COMMAND && o < PCI_COMMAND + 2) || (o >= PCI_BAR0 && o < PCI_BAR0 + 24)) {
            touches_mapping = true;
        }
    }
    if (touches_mapping) {
        pci_update_mappings(dev);
        if (off <= PCI_COMMAND + 1 && off + size > PCI_COMMAND + 1) {
            /* INTX_DISABLE may have changed: re-evaluate the line. */
            pci_device_set_irq(dev, dev->irq_level);
        }
    }
    if (dev->ops && dev->ops->config_write) {
        dev->ops->config_write(dev, off, value, size);
    }
}

static PciDevice *pci_host_selected(PciHost *host, unsigned *reg)
{
    uint32_t a = host->config_address;
    unsigned bus = (a >> 16) & 0xff, slot = (a >> 11) & 0x1f, fn = (a >> 8) & 7;

    if (!(a & CONF1_ENABLE) || bus != 0 || fn != 0) {
        return NULL;
    }
    *reg = a & 0xfc;
    return host->devices[slot];
}

static uint64_t pci_conf1_read(void *opaque, uint64_t offset, unsigned size)
{
    PciHost *host = opaque;
    PciDevice *dev;
    unsigned reg;

    if (offset == 0 && size == 4) {
        return host->config_address;
    }
    if (offset == RESET_CONTROL_OFFSET && size == 1) {
        return host->reset_control;
    }
    if (offset < 4) {
        return (1ull << (size * 8)) - 1;
    }
    dev = pci_host_selected(host, &reg);
    if (!dev) {
        return size == 4 ? 0xffffffffu : (1u << (size * 8)) - 1;
    }
    return pci_config_read(dev, reg + (unsigned)(offset - 4), size);
}

static void pci_conf1_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    PciHost *host = opaque;
    PciDevice *dev;
    unsigned reg;

    if (offset == 0 && size == 4) {
        host->config_address = (uint32_t)value & 0x80fffffcu;
        return;
    }
    if (offset == RESET_CONTROL_OFFSET && size == 1) {
        /* 0xCF9: bit 2 starts the reset that bit 1 selected; any reset ends us. */
        host->reset_control = (uint8_t)value & 0x0e;
        if (value & 0x04) {
            vm_request_stop(host->vm, VM_STOP_RESET, 0);
        }
        return;
    }
    if (offset < 4) {
        return;     /* e.g. the byte at 0xCFB that mechanism probes poke */
    }
    dev = pci_host_selected(host, &reg);
    if (dev) {
        pci_config_write(dev, reg + (unsigned)(offset - 4), (uint32_t)value, size);
    }
}

static const BusOps pci_conf1_ops = {
    .read = pci_conf1_read,
    .write = pci_conf1_write,
};

/* ---- devices ---------------------------------------------------------- */

PciDevice *pci_device_new(PciHost *host, const char *name, uint16_t vendor, uint16_t device,
                          uint32_t class_code, uint8_t revision, uint16_t subsys_vendor,
                          uint16_t subsys_id, const PciDeviceOps *ops, void *opaque)
{
    PciDevice *dev;
    int slot = -1;

    if (host->wanted_slot) {
        /* -device ...,addr=SLOT: that slot or nothing. */
        slot = host->wanted_slot - 1;
        host->wanted_slot = 0;
        if (slot >= PCI_MAX_DEVICES || host->devices[slot]) {
            return NULL;
        }
    }
    for (int i = 0; i < PCI_MAX_DEVICES && slot < 0; i++) {
        if (!host->devices[i]) {
            slot = i;
        }
    }
    if (slot < 0) {
        return NULL;
    }
    dev = calloc(1, sizeof(*dev));
    if (!dev) {
        return NULL;
    }
    dev->host = host;
    dev->slot = (uint8_t)slot;
    dev->ops = ops;
    dev->opaque = opaque;
    dev->name = name;
    dev->next_cap_offset = 0x40;
    for (int i = 0; i < PCI_NUM_BARS; i++) {
        dev->bars[i].mapped_addr = PCI_BAR_UNMAPPED;
        dev->bar_handles[i].dev = dev;
        dev->bar_handles[i].bar = i;
    }
    pci_config_set(dev, PCI_VENDOR_ID, vendor, 2);
    pci_config_set(dev, PCI_DEVICE_ID, device, 2);
    pci_config_set(dev, PCI_REVISION_ID, revision, 1);
    pci_config_set(dev, PCI_CLASS_PROG, class_code, 3);
    pci_config_set(dev, PCI_SUBSYSTEM_VENDOR_ID, subsys_vendor, 2);
    pci_config_set(dev, PCI_SUBSYSTEM_ID, subsys_id, 2);
    /* Command: I/O, memory, bus master, INTx disable are the guest's. */
    pci_config_set(dev, PCI_COMMAND, 0, 2);
    dev->wmask[PCI_COMMAND] = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    dev->wmask[PCI_COMMAND + 1] = PCI_COMMAND_INTX_DISABLE >> 8;
    dev->wmask[PCI_INTERRUPT_LINE] = 0xff;
    dev->wmask[0x0c] = 0xff;            /* cache line size */
    dev->wmask[0x0d] = 0xff;            /* latency timer */
    host->devices[slot] = dev;
    return dev;
}

int pci_device_add_bar(PciDevice *dev, int bar, PciBarType type, uint64_t size,
                       bool prefetchable)
{
    unsigned off = PCI_BAR0 + 4 * (unsigned)bar;
    uint32_t flags;
    uint64_t mask;

    if (bar < 0 || bar >= PCI_NUM_BARS || (size & (size - 1)) || dev->bars[bar].type ||
        (bar > 0 && dev->bars[bar - 1].type == PCI_BAR_MEM64) ||
        (type == PCI_BAR_MEM64 && (bar == PCI_NUM_BARS - 1 || dev->bars[bar + 1].type)) ||
        (type == PCI_BAR_IO && (size < 4 || size > 256)) ||
        (type != PCI_BAR_IO && size < 16) || type == PCI_BAR_NONE ||
        (type == PCI_BAR_MEM32 && size > (1ull << 31))) {
        return -EINVAL;
    }
    dev->bars[bar] = (PciBar) {
        .type = type, .size = size, .prefetchable = prefetchable,
        .mapped_addr = PCI_BAR_UNMAPPED,
    };
    mask = ~(size - 1);
    if (type == PCI_BAR_IO) {
        flags = 0x1;
        mask &= ~3ull;
    } else {
        flags = (type == PCI_BAR_MEM64 ? 0x4 : 0x0) | (prefetchable ? 0x8 : 0x0);
        mask &= ~0xfull;
    }
    pci_config_set(dev, off, flags, 4);
    for (int i = 0; i < 4; i++) {
        dev->wmask[off + i] = (uint8_t)(mask >> (8 * i));
    }
    if (type == PCI_BAR_MEM64) {
        for (int i = 0; i < 4; i++) {
            dev->wmask[off + 4 + i] = (uint8_t)(mask >> (32 + 8 * i));
        }
    }
    return 0;
}

int pci_device_add_capability(PciDevice *dev, uint8_t cap_id, const void *body, size_t len)
{
    unsigned off = dev->next_cap_offset;
    unsigned total = (unsigned)(len + 2);

    if (off + total > PCI_CONFIG_SIZE) {
        return -ENOSPC;
    }
    dev->config[off] = cap_id;
    dev->config[off + 1] = 0;
    memcpy(&dev->config[off + 2], body, len);
    /* Link it at the end of the list. */
    if (!(dev->config[PCI_STATUS] & PCI_STATUS_CAP_LIST)) {
        dev->config[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
        dev->config[PCI_CAPABILITY_LIST] = (uint8_t)off;
    } else {
        unsigned p = dev->config[PCI_CAPABILITY_LIST];
        while (dev->config[p + 1]) {
            p = dev->config[p + 1];
        }
        dev->config[p + 1] = (uint8_t)off;
    }
    dev->next_cap_offset = (uint8_t)((off + total + 3) & ~3u);
    if (off + total + 3 >= PCI_CONFIG_SIZE) {
        dev->next_cap_offset = 0xfc;    /* full; the next add fails */
    }
    return (int)off;
}

int pci_device_realize(PciDevice *dev, unsigned intx_irq)
{
    PciHost *host = dev->host;
    uint16_t cmd = PCI_COMMAND_MASTER;

    if (intx_irq) {
        dev->irq = intx_irq;
        pci_config_set(dev, PCI_INTERRUPT_LINE, intx_irq, 1);
        pci_config_set(dev, PCI_INTERRUPT_PIN, 1, 1);   /* INTA# */
    }
    /* Assign addresses as firmware would: naturally aligned, in order. */
    for (int i = 0; i < PCI_NUM_BARS; i++) {
        PciBar *b = &dev->bars[i];
        uint64_t addr;

        if (b->type == PCI_BAR_IO) {
            addr = (host->next_io + b->size - 1) & ~(b->size - 1);
            if (addr + b->size > PCI_IO_WINDOW_END) {
                return -ENOSPC;
            }
            host->next_io = addr + b->size;
            cmd |= PCI_COMMAND_IO;
        } else if (b->type == PCI_BAR_MEM32 || b->type == PCI_BAR_MEM64) {
            addr = (host->next_mmio + b->size - 1) & ~(b->size - 1);
            if (addr + b->size > VM_PCI_MMIO_END) {
                return -ENOSPC;
            }
            host->next_mmio = addr + b->size;
            cmd |= PCI_COMMAND_MEMORY;
        } else {
            continue;
        }
        pci_config_set(dev, PCI_BAR0 + 4 * i,
                       (uint32_t)addr | (pci_config_read(dev, PCI_BAR0 + 4 * i, 4) & 0xf), 4);
        if (b->type == PCI_BAR_MEM64) {
            pci_config_set(dev, PCI_BAR0 + 4 * i + 4, (uint32_t)(addr >> 32), 4);
        }
    }
    pci_config_set(dev, PCI_COMMAND, cmd, 2);
    pci_update_mappings(dev);
    return 0;
}

void pci_device_set_irq(PciDevice *dev, bool level)
{
    bool masked = pci_config_read(dev, PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE;
    bool line;

    dev->irq_level = level;
    if (level) {
        dev->config[PCI_STATUS] |= PCI_STATUS_INTERRUPT;
    } else {
        dev->config[PCI_STATUS] &= ~PCI_STATUS_INTERRUPT;
    }
    line = level && !masked;
    if (dev->irq) {
        vm_set_irq_line(dev->host->vm, dev->irq, line);
    }
}

/* ---- the host bridge ------------------------------------------------- */

static uint64_t host_bridge_bar_read(PciDevice *dev, int bar, uint64_t offset, unsigned size)
{
    (void)dev, (void)bar, (void)offset;
    return (1ull << (size * 8)) - 1;
}

static void host_bridge_bar_write(PciDevice *dev, int bar, uint64_t offset, uint64_t value,
                                  unsigned size)
{
    (void)dev, (void)bar, (void)offset, (void)value, (void)size;
}

static const PciDeviceOps host_bridge_ops = {
    .bar_read = host_bridge_bar_read,
    .bar_write = host_bridge_bar_write,
};

PciHost *pci_host_new(Vm *vm)
{
    PciHost *host = calloc(1, sizeof(*host));
    PciDevice *bridge;

    if (!host) {
        return NULL;
    }
    host->vm = vm;
    host->next_io = PCI_IO_WINDOW_START;
    host->next_mmio = VM_PCI_MMIO_START;
    if (bus_add(&vm->pio_bus, CONF1_ADDR_PORT, 8, &pci_conf1_ops, host, BUS_LOCKED,
                "pci-conf1") < 0) {
        free(host);
        return NULL;
    }
    bridge = pci_device_new(host, "host-bridge", HOST_BRIDGE_VENDOR, HOST_BRIDGE_DEVICE,
                            0x060000, 0, HOST_BRIDGE_VENDOR, 0x1100, &host_bridge_ops, NULL);
    if (!bridge) {
        pci_host_free(host);
        return NULL;
    }
    /* The bridge decodes nothing of its own; keep its command read-only. */
    pci_config_set(bridge, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_IO, 2);
    pci_device_set_wmask(bridge, PCI_COMMAND, 2, 0);
    return host;
}

void pci_host_want_slot(PciHost *host, int slot)
{
    host->wanted_slot = slot >= 0 ? slot + 1 : 0;
}

void pci_host_free(PciHost *host)
{
    if (!host) {
        return;
    }
    bus_remove(&host->vm->pio_bus, CONF1_ADDR_PORT, host);
    for (int i = 0; i < PCI_MAX_DEVICES; i++) {
        PciDevice *dev = host->devices[i];
        if (!dev) {
            continue;
        }
        for (int b = 0; b < PCI_NUM_BARS; b++) {
            if (dev->bars[b].mapped_addr != PCI_BAR_UNMAPPED) {
                Bus *bus = dev->bars[b].type == PCI_BAR_IO ? &host->vm->pio_bus
                                                           : &host->vm->mmio_bus;
                bus_remove(bus, dev->bars[b].mapped_addr, &dev->bar_handles[b]);
            }
        }
        free(dev);
    }
    free(host);
}
