/*
 * vmm/acpi.h — the firmware tables a PC guest looks for, and the small ACPI
 * power-management device they describe.
 *
 * keel-vmm has no BIOS, so it writes what one would leave in memory:
 *   - ACPI (acpi.c): RSDP, RSDT and XSDT, a classic (not hardware-reduced)
 *     FADT with FACS, a DSDT, and a MADT with one LAPIC entry per CPU;
 *   - the Intel MP 1.4 table (mptable.c), for guests booted with acpi=off
 *     and for small kernels that only read MP tables.
 * Both sit in the BIOS area that guests scan and the e820 map reserves:
 * ACPI at ACPI_TABLES_ADDR (the RSDP first, 16-byte aligned, where Linux's
 * scan of 0xE0000-0xFFFFF finds it; the Linux loader also passes its
 * address in boot_params.acpi_rsdp_addr and PVH's rsdp_paddr), the MP
 * floating pointer and table at MPTABLE_ADDR.
 *
 * MADT: the LAPICs (one per CPU up to maxcpus; the ones beyond -smp N are
 * marked disabled), the IOAPIC at 0xFEC00000 with GSI base 0, interrupt
 * source overrides as QEMU gives them (ISA IRQ 0 → GSI 2; the SCI and the
 * PCI INTx IRQs 5, 9, 10, 11 level-triggered, active high), and the LINT1
 * NMI of every CPU.
 *
 * FADT: the PM registers at ACPI_PM_BASE (PM1a event, PM1a control, a
 * 24-bit PM timer), SCI on IRQ 9 (never raised: no ACPI events), SMI_CMD 0
 * (always in ACPI mode), the reset register at port 0xCF9 (value 6, which
 * pci.c turns into a VM reset), and the 8042 flag.
 *
 * DSDT: \_SB.PCI0 (PNP0A03, bus 0, _CRS with the config ports and the I/O
 * and 32-bit memory windows BARs are assigned from, so Linux finds PCI
 * through ACPI), one ACPI0007 processor device per present CPU with _UID =
 * its MADT processor UID, COM1, the keyboard controller and the RTC, and
 * \_S5 (SLP_TYP 5: writing it with SLP_EN to PM1a control powers off).
 * The AML is produced by a small writer in acpi.c.
 *
 * Thread rules: the builders are pure (any thread).  firmware_tables_install
 * and acpi_pm_new from the main thread before the vCPUs start; the PM
 * device's registers are BUS_LOCKED.
 */
#ifndef KEEL_VMM_ACPI_H
#define KEEL_VMM_ACPI_H

#include "vmm/kvm.h"
#include "vmm/topology.h"

#include <stddef.h>
#include <stdint.h>

#define ACPI_TABLES_ADDR    0xE0000ull  /* RSDP, then the tables: 64 KiB */
#define ACPI_TABLES_SIZE    0x10000u
#define ACPI_RSDP_ADDR      ACPI_TABLES_ADDR
#define MPTABLE_ADDR        0xF0000ull  /* MP floating pointer, then the table */
#define MPTABLE_SIZE        0x10000u
#define FIRMWARE_AREA_START ACPI_TABLES_ADDR    /* reserved in the e820 map */
#define FIRMWARE_AREA_END   0x100000ull

#define ACPI_PM_BASE        0x600u      /* QEMU's PIIX4/ICH9 PM base */
#define ACPI_PM1_EVT_LEN    4u
#define ACPI_PM1_CNT_OFFSET 4u
#define ACPI_PM1_CNT_LEN    2u
#define ACPI_PM_TMR_OFFSET  8u
#define ACPI_PM_TMR_LEN     4u
#define ACPI_PM_LEN         12u
#define ACPI_SCI_IRQ        9u
#define ACPI_S5_SLP_TYP     5u
#define ACPI_PM_TIMER_HZ    3579545ull

#define IOAPIC_ADDR         0xFEC00000u
#define LAPIC_ADDR          0xFEE00000u
#define IOAPIC_PINS         24u

/* Writes RSDP, FACS, DSDT, FADT, MADT, RSDT and XSDT for @topo into @buf,
 * which the guest will see at guest-physical @gpa (16-byte aligned; the
 * RSDP comes first).  Returns the bytes used, or 0 if @len is too small. */
size_t acpi_build_tables(uint8_t *buf, size_t len, uint64_t gpa, const CpuTopology *topo);

/* Writes the MP floating pointer (first 16 bytes) and the MP configuration
 * table after it, for @topo's present CPUs, into @buf seen at @gpa.
 * @cpu_signature and @cpu_features are CPUID 1 EAX and EDX (0: use a
 * generic family 6).  Returns the bytes used, or 0 if @len is too small. */
size_t mptable_build(uint8_t *buf, size_t len, uint64_t gpa, const CpuTopology *topo,
                     uint32_t cpu_signature, uint32_t cpu_features);

/* Little-endian stores for the table builders (acpi.c, mptable.c). */
static inline void fw_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void fw_put32(uint8_t *p, uint32_t v)
{
    fw_put16(p, (uint16_t)v);
    fw_put16(p + 2, (uint16_t)(v >> 16));
}

/* Sum of @len bytes, mod 256 (a valid table sums to 0). */
uint8_t acpi_checksum(const uint8_t *p, size_t len);

/* Builds both into guest RAM at ACPI_TABLES_ADDR and MPTABLE_ADDR.
 * Returns 0, or -1 with a message in @err. */
int firmware_tables_install(Vm *vm, const CpuTopology *topo, char *err, size_t errlen);

/* The PM registers the FADT describes (PM1a event/control, PM timer) on
 * the port bus.  NULL (after a message) if they cannot be registered. */
typedef struct AcpiPm AcpiPm;
AcpiPm *acpi_pm_new(Vm *vm);
void acpi_pm_free(AcpiPm *pm);

#endif
