/*
 * The PCI host without KVM: config mechanism #1 through the port bus, the
 * host bridge, BAR assignment, sizing, relocation (with remap callbacks and
 * the bus following), capabilities, read-only registers, reset control.
 */
#include "config.h"

#include "tests/keel-test.h"
#include "vmm/pci.h"

#include <string.h>

static Vm vm;
static int remaps;
static int last_remap_bar;
static uint64_t last_old, last_new;
static int bar_reads;
static int last_read_bar;
static uint64_t last_read_offset;
static uint64_t last_write_value;

static uint64_t dev_bar_read(PciDevice *dev, int bar, uint64_t offset, unsigned size)
{
    (void)dev, (void)size;
    bar_reads++;
    last_read_bar = bar;
    last_read_offset = offset;
    return 0xab;
}

static void dev_bar_write(PciDevice *dev, int bar, uint64_t offset, uint64_t value, unsigned size)
{
    (void)dev, (void)bar, (void)offset, (void)size;
    last_write_value = value;
}

static void dev_bar_remap(PciDevice *dev, int bar, uint64_t old_addr, uint64_t new_addr)
{
    (void)dev;
    remaps++;
    last_remap_bar = bar;
    last_old = old_addr;
    last_new = new_addr;
}

static const PciDeviceOps dev_ops = {
    .bar_read = dev_bar_read,
    .bar_write = dev_bar_write,
    .bar_remap = dev_bar_remap,
};

static uint32_t cfg_read(unsigned slot, unsigned fn, unsigned reg, unsigned size)
{
    uint64_t v;

    bus_write(&vm.pio_bus, 0xcf8, 4, 0x80000000u | (slot << 11) | (fn << 8) | (reg & 0xfc));
    bus_read(&vm.pio_bus, 0xcfc + (reg & 3), size, &v);
    return (uint32_t)v;
}

static void cfg_write(unsigned slot, unsigned reg, uint32_t value, unsigned size)
{
    bus_write(&vm.pio_bus, 0xcf8, 4, 0x80000000u | (slot << 11) | (reg & 0xfc));
    bus_write(&vm.pio_bus, 0xcfc + (reg & 3), size, value);
}

int main(void)
{
    PciHost *host;
    PciDevice *dev;
    uint64_t v;
    uint8_t cap_body[6] = { 1, 2, 3, 4, 5, 6 };
    int cap;

    memset(&vm, 0, sizeof(vm));
    vm.vm_fd = vm.kvm_fd = vm.ram_fd = -1;     /* IRQ ioctls fail harmlessly */
    bus_init(&vm.pio_bus, "pio");
    bus_init(&vm.mmio_bus, "mmio");

    host = pci_host_new(&vm);
    KEEL_OK(host != NULL, "host bridge created");

    bus_write(&vm.pio_bus, 0xcf8, 4, 0x80001234u);
    bus_read(&vm.pio_bus, 0xcf8, 4, &v);
    KEEL_IS(v, 0x80001234u, "0xCF8 keeps the address (mechanism #1 probe)");
    bus_write(&vm.pio_bus, 0xcfb, 1, 0x01);
    bus_read(&vm.pio_bus, 0xcf8, 4, &v);
    KEEL_IS(v, 0x80001234u, "byte write to 0xCFB does not disturb it");

    KEEL_IS(cfg_read(0, 0, 0, 4), 0x00081b36u, "00:00.0 is the host bridge (1b36:0008)");
    KEEL_IS(cfg_read(0, 0, 0x0a, 2), 0x0600, "class: host bridge");
    KEEL_IS(cfg_read(0, 1, 0, 4), 0xffffffffu, "function 1 absent: all-ones");
    KEEL_IS(cfg_read(5, 0, 0, 4), 0xffffffffu, "empty slot: all-ones");
    KEEL_IS(cfg_read(0, 0, 2, 2), 0x0008, "16-bit read at offset 2");
    cfg_write(0, 0, 0x12345678, 4);
    KEEL_IS(cfg_read(0, 0, 0, 4), 0x00081b36u, "vendor/device are read-only");

    dev = pci_device_new(host, "test", 0x1af4, 0x1042, 0x018000, 1, 0x1af4, 2, &dev_ops, NULL);
    KEEL_OK(dev && dev->slot == 1, "device lands in slot 1");
    KEEL_IS(pci_device_add_bar(dev, 0, PCI_BAR_IO, 32, false), 0, "I/O BAR 0 (32 bytes)");
    KEEL_IS(pci_device_add_bar(dev, 1, PCI_BAR_MEM32, 0x1000, false), 0, "MEM32 BAR 1 (4 KiB)");
    KEEL_IS(pci_device_add_bar(dev, 2, PCI_BAR_MEM64, 0x4000, true), 0, "MEM64 BAR 2 (16 KiB)");
    KEEL_OK(pci_device_add_bar(dev, 3, PCI_BAR_MEM32, 0x1000, false) < 0,
            "BAR 3 is the upper half of BAR 2");
    KEEL_OK(pci_device_add_bar(dev, 4, PCI_BAR_MEM32, 3000, false) < 0, "non-power-of-two refused");
    cap = pci_device_add_capability(dev, 0x09, cap_body, sizeof(cap_body));
    KEEL_IS(cap, 0x40, "first capability at 0x40");
    KEEL_IS(pci_device_add_capability(dev, 0x11, cap_body, 2), 0x48,
            "second capability after it, 4-aligned");
    KEEL_IS(pci_device_realize(dev, 10), 0, "realized with INTx on IRQ 10");
    KEEL_IS(remaps, 3, "each BAR mapped once at realize");

    KEEL_IS(cfg_read(1, 0, 0, 4), 0x10421af4u, "vendor/device");
    KEEL_IS(cfg_read(1, 0, 0x08, 4), 0x01800001u, "class + revision");
    KEEL_IS(cfg_read(1, 0, 0x2c, 4), 0x00021af4u, "subsystem IDs");
    KEEL_IS(cfg_read(1, 0, 0x3c, 2), 0x010a, "interrupt line 10, pin INTA#");
    KEEL_IS(cfg_read(1, 0, 0x06, 2) & PCI_STATUS_CAP_LIST, PCI_STATUS_CAP_LIST, "status: cap list");
    KEEL_IS(cfg_read(1, 0, 0x34, 1), 0x40, "capability pointer");
    KEEL_IS(cfg_read(1, 0, 0x40, 2), 0x4809, "cap 0x09 → next 0x48");
    KEEL_IS(cfg_read(1, 0, 0x44, 4), 0x06050403u, "capability body");
    KEEL_IS(cfg_read(1, 0, 0x04, 2) & 7, 7, "I/O, memory and bus master enabled");

    KEEL_IS(cfg_read(1, 0, 0x10, 4), 0xc001u, "BAR0: I/O at 0xc000");
    KEEL_IS(cfg_read(1, 0, 0x14, 4), 0xc0000000u, "BAR1: memory at 3 GiB");
    KEEL_IS(cfg_read(1, 0, 0x18, 4), 0xc000400cu, "BAR2: 64-bit prefetchable, aligned");
    KEEL_IS(cfg_read(1, 0, 0x1c, 4), 0, "BAR2 upper half");

    bar_reads = 0;
    bus_read(&vm.mmio_bus, 0xc0000010, 4, &v);
    KEEL_OK(v == 0xab && bar_reads == 1 && last_read_bar == 1 && last_read_offset == 0x10,
            "MMIO read reaches BAR 1 at offset 0x10");
    bus_read(&vm.pio_bus, 0xc004, 2, &v);
    KEEL_OK(bar_reads == 2 && last_read_bar == 0 && last_read_offset == 4, "port read reaches BAR 0");
    bus_write(&vm.mmio_bus, 0xc0004008, 4, 0x55aa);
    KEEL_IS(last_write_value, 0x55aa, "MMIO write reaches BAR 2");

    /* Sizing, as a guest does it: decoding off, all-ones, read, restore. */
    remaps = 0;
    cfg_write(1, 0x04, 0, 2);
    KEEL_IS(remaps, 3, "disabling decode unmaps all three BARs");
    KEEL_OK(last_new == PCI_BAR_UNMAPPED, "remap reports 'unmapped'");
    bus_read(&vm.mmio_bus, 0xc0000010, 4, &v);
    KEEL_IS(v, 0xffffffffu, "unmapped BAR reads all-ones");
    cfg_write(1, 0x10, 0xffffffffu, 4);
    cfg_write(1, 0x14, 0xffffffffu, 4);
    cfg_write(1, 0x18, 0xffffffffu, 4);
    cfg_write(1, 0x1c, 0xffffffffu, 4);
    KEEL_IS(cfg_read(1, 0, 0x10, 4), 0xffffffe1u, "I/O BAR size mask (32 bytes)");
    KEEL_IS(cfg_read(1, 0, 0x14, 4), 0xfffff000u, "MEM32 BAR size mask (4 KiB)");
    KEEL_IS(cfg_read(1, 0, 0x18, 4), 0xffffc00cu, "MEM64 BAR size mask, flags kept");
    KEEL_IS(cfg_read(1, 0, 0x1c, 4), 0xffffffffu, "MEM64 upper half all writable");

    /* Relocate: new addresses, decoding back on. */
    cfg_write(1, 0x10, 0xd000, 4);
    cfg_write(1, 0x14, 0xd0000000u, 4);
    cfg_write(1, 0x18, 0x00000000u, 4);
    cfg_write(1, 0x1c, 0x00000001u, 4);       /* BAR2 above 4 GiB */
    remaps = 0;
    cfg_write(1, 0x04, 7, 2);
    KEEL_IS(remaps, 3, "enabling decode maps them at their new addresses");
    KEEL_OK(dev->bars[1].mapped_addr == 0xd0000000u && dev->bars[2].mapped_addr == 0x100000000ull &&
            dev->bars[0].mapped_addr == 0xd000, "the device sees the new addresses");
    bar_reads = 0;
    bus_read(&vm.mmio_bus, 0xd0000004, 4, &v);
    KEEL_OK(bar_reads == 1 && last_read_bar == 1 && last_read_offset == 4, "new MMIO address works");
    bus_read(&vm.mmio_bus, 0xc0000004, 4, &v);
    KEEL_OK(bar_reads == 1 && v == 0xffffffffu, "old MMIO address is unclaimed");
    bus_read(&vm.mmio_bus, 0x100000000ull + 8, 4, &v);
    KEEL_OK(bar_reads == 2 && last_read_bar == 2, "64-bit BAR above 4 GiB works");

    /* Moving a BAR while decoding stays on (some guests do). */
    remaps = 0;
    cfg_write(1, 0x14, 0xd0100000u, 4);
    KEEL_OK(remaps == 1 && last_remap_bar == 1 && last_old == 0xd0000000u &&
            last_new == 0xd0100000u, "live BAR move: one remap old → new");

    /* Reset control. */
    KEEL_IS(vm_stop_reason(&vm), VM_STOP_NONE, "no stop yet");
    bus_write(&vm.pio_bus, 0xcf9, 1, 0x02);
    KEEL_IS(vm_stop_reason(&vm), VM_STOP_NONE, "0xCF9 bit 1 alone does not reset");
    bus_write(&vm.pio_bus, 0xcf9, 1, 0x06);
    KEEL_IS(vm_stop_reason(&vm), VM_STOP_RESET, "0xCF9 ← 0x06 resets");

    pci_host_free(host);
    KEEL_IS(vm.pio_bus.nr_regions, 0, "freeing the host unregisters every port");
    KEEL_IS(vm.mmio_bus.nr_regions, 0, "and every BAR");
    bus_destroy(&vm.pio_bus);
    bus_destroy(&vm.mmio_bus);
    return keel_test_done();
}
