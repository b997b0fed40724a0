/*
 * The firmware tables without a VM: ACPI (RSDP → RSDT/XSDT → FADT → DSDT,
 * FACS; MADT) and the MP table are built for several -smp topologies into
 * a buffer and walked the way a guest walks them: signatures, lengths,
 * checksums, pointers, one LAPIC per CPU with the topology's APIC IDs.
 * Then ACPICA's disassembler (iasl -d, Debian's acpica-tools) reads each
 * ACPI table back: it must accept them and name every CPU.  Without iasl
 * that part is skipped; the structural checks always run.
 */
#include "config.h"

#include "tests/keel-test.h"
#include "vmm/acpi.h"
#include "vmm/loader.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GPA ACPI_TABLES_ADDR

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* The table at guest-physical @addr inside @buf (of @used bytes), checked:
 * inside the buffer, signature @sig, checksum 0.  NULL otherwise. */
static const uint8_t *table_at(const uint8_t *buf, size_t used, uint64_t addr, const char *sig,
                               const char *what)
{
    const uint8_t *t;
    uint32_t len;

    if (addr < GPA || addr + 36 > GPA + used) {
        KEEL_OK(false, "%s: %s at 0x%llx lies inside the tables", what, sig,
                (unsigned long long)addr);
        return NULL;
    }
    t = buf + (addr - GPA);
    len = rd32(t + 4);
    KEEL_OK(!memcmp(t, sig, 4) && addr + len <= GPA + used && acpi_checksum(t, len) == 0,
            "%s: %s at 0x%llx: signature, length %u, checksum", what, sig,
            (unsigned long long)addr, len);
    return t;
}

static char *tmpdir;

/* Writes @len bytes of @t to NAME.dat, runs iasl -d on it; returns the
 * disassembly (g_free) or NULL. */
static char *iasl_disassemble(const char *name, const uint8_t *t, size_t len)
{
    char *dat = g_strdup_printf("%s/%s.dat", tmpdir, name);
    char *dsl = g_strdup_printf("%s/%s.dsl", tmpdir, name);
    char *cmd = g_strdup_printf("cd %s && iasl -d %s.dat >%s.log 2>&1", tmpdir, name, name);
    char *text = NULL;
    int rc;

    g_file_set_contents(dat, (const char *)t, (gssize)len, NULL);
    unlink(dsl);
    rc = system(cmd);
    if (rc != 0 || !g_file_get_contents(dsl, &text, NULL, NULL)) {
        char *log = NULL, *logf = g_strdup_printf("%s/%s.log", tmpdir, name);
        g_file_get_contents(logf, &log, NULL, NULL);
        keel_test_diag("iasl -d %s.dat: rc=%d\n%s", name, rc, log ? log : "");
        g_free(log);
        g_free(logf);
        text = NULL;
    }
    g_free(dat);
    g_free(dsl);
    g_free(cmd);
    return text;
}

/* iasl marks what it could not make sense of with "****" comments or
 * "Error"/"Invalid" lines. */
static bool dsl_clean(const char *text)
{
    return !strstr(text, "****") && !strstr(text, "Error") && !strstr(text, "Invalid") &&
           !strstr(text, "Unknown");
}

static void check_acpi(const CpuTopology *topo, const char *what, bool have_iasl)
{
    size_t size = 64 * 1024;
    uint8_t *buf = g_malloc0(size);
    size_t used = acpi_build_tables(buf, size, GPA, topo);
    const uint8_t *rsdt, *xsdt, *fadt, *madt, *dsdt, *facs;
    unsigned lapics = 0, enabled = 0, ioapics = 0, isos = 0, nmis = 0;
    bool ids_ok = true, iso0 = false;
    uint32_t len;

    KEEL_OK(used > 0 && used <= size, "%s: ACPI tables built (%zu bytes)", what, used);
    KEEL_OK(!memcmp(buf, "RSD PTR ", 8) && acpi_checksum(buf, 20) == 0 &&
            acpi_checksum(buf, 36) == 0 && buf[15] == 2 && rd32(buf + 20) == 36,
            "%s: RSDP signature, both checksums, revision 2, length 36", what);
    rsdt = table_at(buf, used, rd32(buf + 16), "RSDT", what);
    xsdt = table_at(buf, used, rd64(buf + 24), "XSDT", what);
    if (!rsdt || !xsdt) {
        g_free(buf);
        return;
    }
    KEEL_OK(rd32(rsdt + 4) == 36 + 8 && rd32(xsdt + 4) == 36 + 16 &&
            rd32(rsdt + 36) == rd64(xsdt + 36) && rd32(rsdt + 40) == rd64(xsdt + 44),
            "%s: RSDT and XSDT list the same two tables", what);
    fadt = table_at(buf, used, rd64(xsdt + 36), "FACP", what);
    madt = table_at(buf, used, rd64(xsdt + 44), "APIC", what);
    if (!fadt || !madt) {
        g_free(buf);
        return;
    }
    KEEL_OK(rd32(fadt + 4) == 244 && fadt[8] == 3 && rd32(fadt + 40) == rd64(fadt + 140) &&
            rd32(fadt + 36) == rd64(fadt + 132) && (rd32(fadt + 36) & 63) == 0,
            "%s: FADT rev 3, 244 bytes, DSDT/X_DSDT and FACS/X_FIRMWARE_CTRL agree", what);
    KEEL_OK(rd32(fadt + 56) == ACPI_PM_BASE && rd32(fadt + 64) == ACPI_PM_BASE + 4 &&
            rd32(fadt + 76) == ACPI_PM_BASE + 8 && fadt[46] == ACPI_SCI_IRQ &&
            rd64(fadt + 116 + 4) == 0xcf9 && fadt[128] == 6 && (rd32(fadt + 112) & (1u << 10)),
            "%s: FADT PM1a event/control, PM timer, SCI 9, reset register 0xCF9=6", what);
    dsdt = table_at(buf, used, rd32(fadt + 40), "DSDT", what);
    facs = buf + (rd32(fadt + 36) - GPA);
    KEEL_OK(!memcmp(facs, "FACS", 4) && rd32(facs + 4) == 64, "%s: FACS", what);

    /* MADT: walk the entries to the end of the table. */
    len = rd32(madt + 4);
    KEEL_OK(rd32(madt + 36) == LAPIC_ADDR && (rd32(madt + 40) & 1),
            "%s: MADT LAPIC address, PCAT_COMPAT", what);
    for (uint32_t off = 44; off < len;) {
        const uint8_t *e = madt + off;

        if (e[1] < 2 || off + e[1] > len) {
            KEEL_OK(false, "%s: MADT entry at %u has a bad length %u", what, off, e[1]);
            break;
        }
        switch (e[0]) {
        case 0:
            if (e[2] != lapics || e[3] != topo_apic_id(topo, lapics)) {
                ids_ok = false;
            }
            if ((rd32(e + 4) & 1) != (lapics < topo->cpus)) {
                ids_ok = false;
            }
            enabled += rd32(e + 4) & 1;
            lapics++;
            break;
        case 1:
            ioapics += rd32(e + 4) == IOAPIC_ADDR && rd32(e + 8) == 0;
            break;
        case 2:
            isos++;
            iso0 |= e[3] == 0 && rd32(e + 4) == 2;
            break;
        case 4:
            nmis += e[2] == 0xff && e[5] == 1;
            break;
        }
        off += e[1];
    }
    KEEL_OK(lapics == topo->max_cpus && enabled == topo->cpus && ids_ok,
            "%s: MADT has %u LAPICs (%u enabled), UIDs in order, APIC IDs from the topology",
            what, lapics, enabled);
    KEEL_OK(ioapics == 1 && isos == 5 && iso0 && nmis == 1,
            "%s: MADT IOAPIC at 0xFEC00000, 5 overrides incl. IRQ0→GSI2, LINT1 NMI", what);

    if (have_iasl && dsdt) {
        char *text;

        text = iasl_disassemble("dsdt", dsdt, rd32(dsdt + 4));
        if (text) {
            bool all = true;
            for (unsigned i = 0; i < topo->cpus; i++) {
                char dev[32];
                snprintf(dev, sizeof(dev), "Device (C%03X)", i);
                all &= strstr(text, dev) != NULL;
            }
            KEEL_OK(dsl_clean(text) && all && strstr(text, "Device (PCI0)") &&
                    strstr(text, "EisaId (\"PNP0A03\")") && strstr(text, "Name (_S5, Package") &&
                    strstr(text, "WordBusNumber") && strstr(text, "DWordMemory") &&
                    strstr(text, "0xFEBFFFFF") && strstr(text, "EisaId (\"PNP0501\")"),
                    "%s: iasl disassembles the DSDT: PCI0 (PNP0A03) with its windows, COM1, "
                    "_S5, one processor device per CPU", what);
            /* And the ASL compiles back without a complaint. */
            {
                char *cmd = g_strdup_printf("cd %s && iasl dsdt.dsl >dsdt-compile.log 2>&1 && "
                                            "grep -q ' 0 Errors, 0 Warnings' dsdt-compile.log",
                                            tmpdir);
                KEEL_OK(system(cmd) == 0, "%s: the disassembled DSDT compiles again with no "
                        "errors or warnings", what);
                g_free(cmd);
            }
        } else {
            KEEL_OK(false, "%s: iasl -d accepts the DSDT", what);
        }
        g_free(text);

        text = iasl_disassemble("apic", madt, len);
        if (text) {
            unsigned named = 0;
            for (const char *p = text; (p = strstr(p, "Local Apic ID : ")); p++) {
                named++;
            }
            KEEL_OK(dsl_clean(text) && named == topo->max_cpus &&
                    strstr(text, "I/O APIC") && strstr(text, "Interrupt Source Override"),
                    "%s: iasl disassembles the MADT with %u local APICs (named %u)", what,
                    topo->max_cpus, named);
        } else {
            KEEL_OK(false, "%s: iasl -d accepts the MADT", what);
        }
        g_free(text);

        text = iasl_disassemble("facp", fadt, rd32(fadt + 4));
        KEEL_OK(text && dsl_clean(text) && strstr(text, "PM Timer Block Address : 00000608"),
                "%s: iasl disassembles the FADT", what);
        g_free(text);
        text = iasl_disassemble("facs", facs, 64);
        KEEL_OK(text && dsl_clean(text), "%s: iasl disassembles the FACS", what);
        g_free(text);
        text = iasl_disassemble("xsdt", xsdt, rd32(xsdt + 4));
        KEEL_OK(text && dsl_clean(text), "%s: iasl disassembles the XSDT", what);
        g_free(text);
        text = iasl_disassemble("rsdt", rsdt, rd32(rsdt + 4));
        KEEL_OK(text && dsl_clean(text), "%s: iasl disassembles the RSDT", what);
        g_free(text);
    }
    KEEL_IS(acpi_build_tables(buf, used - 1, GPA, topo), 0, "%s: a buffer 1 byte short is refused",
            what);
    g_free(buf);
}

static void check_mptable(const CpuTopology *topo, const char *what)
{
    uint8_t buf[MPTABLE_SIZE];
    size_t used = mptable_build(buf, sizeof(buf), MPTABLE_ADDR, topo, 0x000806f8, 0x178bfbff);
    const uint8_t *t = buf + 16, *e;
    unsigned cpus = 0, bsps = 0, buses = 0, ioapics = 0, extint = 0, ints = 0, lints = 0;
    bool ids_ok = true, irq0_pin2 = false;
    uint16_t entries, len;

    KEEL_OK(used > 16, "%s: MP table built (%zu bytes)", what, used);
    KEEL_OK(!memcmp(buf, "_MP_", 4) && rd32(buf + 4) == MPTABLE_ADDR + 16 && buf[8] == 1 &&
            buf[9] == 4 && acpi_checksum(buf, 16) == 0,
            "%s: floating pointer: signature, table address, length, rev 1.4, checksum", what);
    len = (uint16_t)(t[4] | t[5] << 8);
    entries = (uint16_t)(t[34] | t[35] << 8);
    KEEL_OK(!memcmp(t, "PCMP", 4) && t[6] == 4 && 16 + (size_t)len == used && acpi_checksum(t, len) == 0 &&
            rd32(t + 36) == LAPIC_ADDR, "%s: PCMP header, length %u, checksum", what, len);
    e = t + 44;
    for (unsigned i = 0; i < entries && e < t + len; i++) {
        switch (e[0]) {
        case 0:
            ids_ok &= e[1] == topo_apic_id(topo, cpus) && (e[3] & 1) && rd32(e + 4) == 0x000806f8;
            bsps += (e[3] & 2) != 0;
            cpus++;
            e += 20;
            continue;
        case 1:
            buses++;
            break;
        case 2:
            ioapics += rd32(e + 4) == IOAPIC_ADDR && e[1] > topo_max_apic_id(topo);
            break;
        case 3:
            extint += e[1] == 3;
            ints += e[1] == 0;
            irq0_pin2 |= e[1] == 0 && e[5] == 0 && e[7] == 2;
            break;
        case 4:
            lints++;
            break;
        }
        e += 8;
    }
    KEEL_OK(e == t + len, "%s: %u entries fill the table exactly", what, entries);
    KEEL_OK(cpus == topo->cpus && bsps == 1 && ids_ok && (buf[16 + 44 + 3] & 2),
            "%s: %u processors, CPU 0 the only BSP, APIC IDs from the topology", what, cpus);
    KEEL_OK(buses == 2 && ioapics == 1 && extint == 0 && ints == 15 && irq0_pin2 && lints == 2,
            "%s: PCI+ISA buses, IOAPIC (ID after the CPUs), 15 ISA IRQs (no ExtINT pin), "
            "IRQ0→pin 2, LINT0/1", what);
}

int main(void)
{
    static const struct { const char *what; CpuTopology t; } topos[] = {
        { "-smp 1", { 1, 1, 1, 1, 1 } },
        { "-smp 2", { 2, 2, 1, 2, 1 } },
        { "-smp 4", { 4, 4, 1, 4, 1 } },
        { "-smp 64", { 64, 64, 1, 64, 1 } },
        { "-smp 128", { 128, 128, 1, 128, 1 } },
        { "-smp 4,maxcpus=8", { 4, 8, 1, 8, 1 } },
        { "-smp sockets=2,cores=3,threads=2", { 12, 12, 2, 3, 2 } },
    };
    bool have_iasl = system("iasl -v >/dev/null 2>&1") == 0;

    tmpdir = g_dir_make_tmp("keel-acpi-XXXXXX", NULL);
    if (!have_iasl) {
        keel_test_diag("iasl not found (Debian: acpica-tools): skipping the disassembly checks");
    }
    for (size_t i = 0; i < G_N_ELEMENTS(topos); i++) {
        check_acpi(&topos[i].t, topos[i].what, have_iasl);
        check_mptable(&topos[i].t, topos[i].what);
    }
    if (!have_iasl) {
        keel_test_skip("iasl -d of every table (acpica-tools not installed)");
    }

    /* The e820 map reserves the whole table area. */
    {
        Vm vm;
        E820Entry map[LOADER_MAX_E820];
        int n;
        bool reserved = false, ram_overlap = false;

        memset(&vm, 0, sizeof(vm));
        vm.low_ram_end = 128ull << 20;
        n = loader_e820_map(&vm, map, LOADER_MAX_E820);
        for (int i = 0; i < n; i++) {
            uint64_t end = map[i].addr + map[i].size;
            if (map[i].type == E820_RESERVED && map[i].addr <= ACPI_TABLES_ADDR &&
                end >= MPTABLE_ADDR + MPTABLE_SIZE) {
                reserved = true;
            }
            if (map[i].type == E820_RAM && map[i].addr < FIRMWARE_AREA_END &&
                end > FIRMWARE_AREA_START) {
                ram_overlap = true;
            }
        }
        KEEL_OK(reserved && !ram_overlap, "e820 reserves 0xE0000-0xFFFFF and no RAM overlaps it");
    }

    if (getenv("KEEL_ACPI_TEST_KEEP")) {
        keel_test_diag("tables and disassembly kept in %s", tmpdir);   /* the last topology's */
    } else {
        char *cmd = g_strdup_printf("rm -rf %s", tmpdir);
        if (system(cmd) != 0) {
            keel_test_diag("could not remove %s", tmpdir);
        }
        g_free(cmd);
    }
    g_free(tmpdir);
    return keel_test_done();
}
