/*
 * The Intel MultiProcessor Specification 1.4 table: a floating pointer
 * structure ("_MP_") and the configuration table ("PCMP") it points at,
 * listing the present CPUs, the PCI and ISA buses, the IOAPIC, how ISA IRQs
 * reach IOAPIC pins and the local interrupts.  Linux reads it with acpi=off
 * (and simple kernels read only this); see vmm/acpi.h for where it goes.
 *
 * PCI INTx is left to the guest's reading of each device's interrupt-line
 * register (pci.c routes INTA# of a device to an ISA IRQ, 5/9/10/11), the
 * way the ISA entries below already route those IRQs to IOAPIC pins.
 */
#include "config.h"

#include "vmm/acpi.h"

#include <string.h>

#define MP_SPEC_REV         4       /* 1.4 */
#define MP_LAPIC_VERSION    0x14    /* what KVM's LAPIC version register says */
#define MP_IOAPIC_VERSION   0x11    /* KVM's IOAPIC */

enum { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_IOINTR = 3, MP_LINTR = 4 };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };

#define MP_BUS_PCI 0
#define MP_BUS_ISA 1


/* An 8-byte interrupt entry (I/O or local). */
static uint8_t *mp_intr(uint8_t *e, uint8_t type, uint8_t kind, uint16_t flags, uint8_t bus,
                        uint8_t irq, uint8_t dst_id, uint8_t dst_pin)
{
    e[0] = type;
    e[1] = kind;
    fw_put16(e + 2, flags);
    e[4] = bus;
    e[5] = irq;
    e[6] = dst_id;
    e[7] = dst_pin;
    return e + 8;
}

size_t mptable_build(uint8_t *buf, size_t len, uint64_t gpa, const CpuTopology *topo,
                     uint32_t cpu_signature, uint32_t cpu_features)
{
    /* The IOAPIC's ID follows the CPUs' (SeaBIOS numbers it so). */
    uint8_t ioapic_id = (uint8_t)(topo_max_apic_id(topo) + 1);
    size_t table_len = 44 + 20 * topo->cpus + 8 * 2 /* buses */ + 8 /* IOAPIC */ +
                       8 * 15 /* ISA IRQs 0-15 but 2 */ + 8 * 2 /* LINT0, LINT1 */;
    uint8_t *fp = buf, *t = buf + 16, *e;
    uint16_t entries = 0;

    if (16 + table_len > len || gpa + 16 + table_len > 0x100000 || (gpa & 15) ||
        ioapic_id == 0xff) {
        return 0;
    }
    memset(buf, 0, 16 + table_len);
    if (!cpu_signature) {
        cpu_signature = 0x600;          /* family 6 */
    }

    /* The configuration table header; length and count filled in below. */
    memcpy(t, "PCMP", 4);
    t[6] = MP_SPEC_REV;
    memcpy(t + 8, "KEEL    ", 8);        /* OEM ID */
    memcpy(t + 16, "KEEL-VMM    ", 12);  /* product ID */
    fw_put32(t + 36, LAPIC_ADDR);
    e = t + 44;

    for (unsigned i = 0; i < topo->cpus; i++, entries++) {
        e[0] = MP_PROCESSOR;
        e[1] = (uint8_t)topo_apic_id(topo, i);
        e[2] = MP_LAPIC_VERSION;
        e[3] = 0x01 | (i == 0 ? 0x02 : 0);  /* enabled; CPU 0 is the bootstrap CPU */
        fw_put32(e + 4, cpu_signature);
        fw_put32(e + 8, cpu_features);
        e += 20;
    }
    e[0] = MP_BUS;
    e[1] = MP_BUS_PCI;
    memcpy(e + 2, "PCI   ", 6);
    e += 8;
    e[0] = MP_BUS;
    e[1] = MP_BUS_ISA;
    memcpy(e + 2, "ISA   ", 6);
    e += 8;
    e[0] = MP_IOAPIC;
    e[1] = ioapic_id;
    e[2] = MP_IOAPIC_VERSION;
    e[3] = 0x01;                        /* usable */
    fw_put32(e + 4, IOAPIC_ADDR);
    e += 8;
    entries += 3;

    /* ISA IRQ 0 (the PIT) on pin 2, every other ISA IRQ on its own pin,
     * as SeaBIOS describes QEMU's PC.  No ExtINT entry for the 8259 on
     * pin 0: Linux trusts such an entry ("ExtINT not setup in hardware but
     * reported by MP table") and, under KVM with acpi=off, lost its timer
     * tick.  Flags 0 = "conforms to the bus" (edge, active high on ISA),
     * except the PCI INTx and SCI IRQs, which are level-triggered, active
     * high, as the MADT overrides say. */
    for (unsigned irq = 0; irq < 16; irq++) {
        uint16_t flags = (irq == 5 || irq == 9 || irq == 10 || irq == 11) ? 0x000d : 0;

        if (irq == 2) {
            continue;                   /* the cascade: no ISA device uses it */
        }
        e = mp_intr(e, MP_IOINTR, MP_INT, flags, MP_BUS_ISA, (uint8_t)irq, ioapic_id,
                    (uint8_t)(irq == 0 ? 2 : irq));
        entries++;
    }
    /* LINT0 of the BSP takes ExtINT (virtual wire); LINT1 of every LAPIC NMI. */
    e = mp_intr(e, MP_LINTR, MP_EXTINT, 0, MP_BUS_ISA, 0, 0, 0);
    e = mp_intr(e, MP_LINTR, MP_NMI, 0, MP_BUS_ISA, 0, 0xff, 1);
    entries += 2;

    fw_put16(t + 4, (uint16_t)(e - t));    /* base table length */
    fw_put16(t + 34, entries);
    t[7] = (uint8_t)(0x100 - acpi_checksum(t, (size_t)(e - t)));

    /* The floating pointer: "_MP_", table address, 1 paragraph, rev 1.4,
     * feature bytes 0 (a table is present; virtual-wire mode). */
    memcpy(fp, "_MP_", 4);
    fw_put32(fp + 4, (uint32_t)(gpa + 16));
    fp[8] = 1;
    fp[9] = MP_SPEC_REV;
    fp[10] = (uint8_t)(0x100 - acpi_checksum(fp, 16));
    return (size_t)(e - buf);
}
