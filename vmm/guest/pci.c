/*
 * vmm/guest/pci.c — PCI configuration mechanism #1 (0xCF8/0xCFC) and bus
 * enumeration.  Runs at CPL3 (port I/O is open to it).  Buses are found by following
 * PCI-to-PCI bridges from bus 0, so an empty machine costs 32 probes.
 */
#include "config.h"

#include "vmm/guest/guest.h"

#define PCI_ADDR 0xcf8
#define PCI_DATA 0xcfc

struct pci_func pci_funcs[PCI_MAX_FUNCS];
unsigned pci_nfuncs;

static uint32_t conf_addr(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
    return 0x80000000u | (bus << 16) | (dev << 11) | (fn << 8) | (off & 0xfc);
}

static uint32_t read32_at(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
    outl(PCI_ADDR, conf_addr(bus, dev, fn, off));
    return inl(PCI_DATA);
}

uint32_t pci_read32(const struct pci_func *f, unsigned off)
{
    return read32_at(f->bus, f->dev, f->fn, off);
}

uint16_t pci_read16(const struct pci_func *f, unsigned off)
{
    outl(PCI_ADDR, conf_addr(f->bus, f->dev, f->fn, off));
    return inw(PCI_DATA + (off & 2));
}

uint8_t pci_read8(const struct pci_func *f, unsigned off)
{
    outl(PCI_ADDR, conf_addr(f->bus, f->dev, f->fn, off));
    return inb(PCI_DATA + (off & 3));
}

void pci_write32(const struct pci_func *f, unsigned off, uint32_t v)
{
    outl(PCI_ADDR, conf_addr(f->bus, f->dev, f->fn, off));
    outl(PCI_DATA, v);
}

void pci_write16(const struct pci_func *f, unsigned off, uint16_t v)
{
    outl(PCI_ADDR, conf_addr(f->bus, f->dev, f->fn, off));
    outw(PCI_DATA + (off & 2), v);
}

void pci_write8(const struct pci_func *f, unsigned off, uint8_t v)
{
    outl(PCI_ADDR, conf_addr(f->bus, f->dev, f->fn, off));
    outb(PCI_DATA + (off & 3), v);
}

uint64_t pci_bar_address(const struct pci_func *f, unsigned bar)
{
    if (bar > 5 || (f->header_type & 0x7f) != 0) {
        return 0;
    }
    uint32_t lo = pci_read32(f, 0x10 + 4 * bar);
    if (lo & 1) {
        return 0;                       /* I/O BAR */
    }
    uint64_t addr = lo & ~0xfull;
    if (((lo >> 1) & 3) == 2 && bar < 5) {
        addr |= (uint64_t)pci_read32(f, 0x14 + 4 * bar) << 32;
    }
    return addr;
}

static void print_func(const struct pci_func *f)
{
    kprintf("KEEL-GUEST: pci %02x:%02x.%x %04x:%04x class %02x.%02x.%02x "
            "hdr %02x irq %u pin %u",
            f->bus, f->dev, f->fn, f->vendor, f->device, f->class_code,
            f->subclass, f->prog_if, f->header_type & 0x7f, f->irq_line,
            f->irq_pin);
    if ((f->header_type & 0x7f) == 0) {
        for (unsigned bar = 0; bar < 6; bar++) {
            uint32_t v = pci_read32(f, 0x10 + 4 * bar);
            if (!v) {
                continue;
            }
            if (v & 1) {
                kprintf(" bar%u=io:0x%x", bar, v & ~3u);
            } else if (((v >> 1) & 3) == 2) {
                kprintf(" bar%u=mem64:0x%lx", bar, pci_bar_address(f, bar));
                bar++;
            } else {
                kprintf(" bar%u=mem:0x%x", bar, v & ~0xfu);
            }
        }
    }
    kprintf("\n");
}

static void scan_bus(unsigned bus, bool verbose, unsigned depth)
{
    for (unsigned dev = 0; dev < 32; dev++) {
        if ((read32_at(bus, dev, 0, 0) & 0xffff) == 0xffff) {
            continue;
        }
        unsigned nfn = (read32_at(bus, dev, 0, 0x0c) >> 16) & 0x80 ? 8 : 1;
        for (unsigned fn = 0; fn < nfn; fn++) {
            uint32_t id = read32_at(bus, dev, fn, 0);
            if ((id & 0xffff) == 0xffff) {
                continue;
            }
            struct pci_func tmp, *f = pci_nfuncs < PCI_MAX_FUNCS ?
                                      &pci_funcs[pci_nfuncs] : &tmp;
            uint32_t class = read32_at(bus, dev, fn, 0x08);
            uint32_t irq = read32_at(bus, dev, fn, 0x3c);
            f->bus = bus;
            f->dev = dev;
            f->fn = fn;
            f->vendor = id & 0xffff;
            f->device = id >> 16;
            f->class_code = class >> 24;
            f->subclass = class >> 16;
            f->prog_if = class >> 8;
            f->header_type = read32_at(bus, dev, fn, 0x0c) >> 16;
            f->irq_line = irq;
            f->irq_pin = irq >> 8;
            if (pci_nfuncs < PCI_MAX_FUNCS) {
                pci_nfuncs++;
            }
            if (verbose) {
                print_func(f);
            }
            if ((f->header_type & 0x7f) == 1 && depth < 8) {  /* bridge */
                unsigned secondary = (read32_at(bus, dev, fn, 0x18) >> 8) & 0xff;
                if (secondary > bus) {
                    scan_bus(secondary, verbose, depth + 1);
                }
            }
        }
    }
}

unsigned pci_enumerate(bool verbose)
{
    pci_nfuncs = 0;
    scan_bus(0, verbose, 0);
    return pci_nfuncs;
}
