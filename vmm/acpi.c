/*
 * ACPI tables (RSDP, RSDT, XSDT, FADT, FACS, DSDT, MADT), a small AML
 * writer for the DSDT, the PM registers the FADT points at, and the glue
 * that puts ACPI and the MP table into guest RAM.  See vmm/acpi.h.
 *
 * Layouts follow the ACPI 6.x specification (tables) and its chapter 19/20
 * (AML encoding; resource descriptors in 6.4 "Resource Data Types").
 * Multi-byte fields are little-endian, written byte by byte.
 */
#include "config.h"

#include "vmm/acpi.h"
#include "vmm/bus.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- little helpers ---------------------------------------------------- */


static void put64(uint8_t *p, uint64_t v)
{
    fw_put32(p, (uint32_t)v);
    fw_put32(p + 4, (uint32_t)(v >> 32));
}

uint8_t acpi_checksum(const uint8_t *p, size_t len)
{
    uint8_t sum = 0;

    for (size_t i = 0; i < len; i++) {
        sum = (uint8_t)(sum + p[i]);
    }
    return sum;
}

#define ACPI_OEM_ID        "KEEL  "     /* 6 bytes */
#define ACPI_OEM_TABLE_ID  "KEELVMM "   /* 8 bytes */
#define ACPI_HEADER_LEN    36u

/* The common 36-byte header; the checksum is set by table_finish(). */
static void table_header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
    memcpy(t, sig, 4);
    fw_put32(t + 4, len);
    t[8] = rev;
    t[9] = 0;
    memcpy(t + 10, ACPI_OEM_ID, 6);
    memcpy(t + 16, ACPI_OEM_TABLE_ID, 8);
    fw_put32(t + 24, 1);                   /* OEM revision */
    memcpy(t + 28, "KEEL", 4);          /* creator ID */
    fw_put32(t + 32, 1);                   /* creator revision */
}

static void table_finish(uint8_t *t, uint32_t len)
{
    t[9] = (uint8_t)(0x100 - acpi_checksum(t, len));
}

/* A Generic Address Structure for @bit_width bits of system I/O at @port. */
static void put_gas_io(uint8_t *p, uint16_t port, uint8_t bit_width, uint8_t access_size)
{
    p[0] = 1;                           /* system I/O space */
    p[1] = bit_width;
    p[2] = 0;                           /* bit offset */
    p[3] = access_size;                 /* 1 byte, 2 word, 3 dword */
    put64(p + 4, port);
}

/* ---- AML ----------------------------------------------------------------- */

#define AML_ZERO        0x00
#define AML_ONE         0x01
#define AML_NAME        0x08
#define AML_BYTE        0x0A
#define AML_WORD        0x0B
#define AML_DWORD       0x0C
#define AML_STRING      0x0D
#define AML_SCOPE       0x10
#define AML_BUFFER      0x11
#define AML_PACKAGE     0x12
#define AML_EXT         0x5B
#define AML_DEVICE      0x82    /* after AML_EXT */
#define AML_ROOT        0x5C    /* '\' */

static void aml_byte(GByteArray *a, uint8_t b)
{
    g_byte_array_append(a, &b, 1);
}

/* A NameSeg: four characters, '_'-padded. */
static void aml_nameseg(GByteArray *a, const char *name)
{
    char seg[4] = { '_', '_', '_', '_' };

    memcpy(seg, name, strnlen(name, 4));
    g_byte_array_append(a, (const guint8 *)seg, 4);
}

/* An integer in the shortest encoding. */
static void aml_int(GByteArray *a, uint64_t v)
{
    uint8_t b[8];

    if (v == 0 || v == 1) {
        aml_byte(a, v ? AML_ONE : AML_ZERO);
    } else if (v <= 0xff) {
        aml_byte(a, AML_BYTE);
        aml_byte(a, (uint8_t)v);
    } else if (v <= 0xffff) {
        aml_byte(a, AML_WORD);
        fw_put16(b, (uint16_t)v);
        g_byte_array_append(a, b, 2);
    } else {
        aml_byte(a, AML_DWORD);
        fw_put32(b, (uint32_t)v);
        g_byte_array_append(a, b, 4);
    }
}

static void aml_string(GByteArray *a, const char *s)
{
    aml_byte(a, AML_STRING);
    g_byte_array_append(a, (const guint8 *)s, (guint)strlen(s) + 1);
}

/* A compressed EISA ID ("PNP0A03") as its DWord integer. */
static void aml_eisaid(GByteArray *a, const char *id)
{
    uint32_t v = ((uint32_t)(id[0] - 0x40) << 26) | ((uint32_t)(id[1] - 0x40) << 21) |
                 ((uint32_t)(id[2] - 0x40) << 16) |
                 (uint32_t)strtoul(id + 3, NULL, 16);
    uint8_t b[4];

    /* Stored big-endian within the little-endian DWord. */
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
    aml_byte(a, AML_DWORD);
    g_byte_array_append(a, b, 4);
}

/* PkgLength of a package whose contents after it are @len bytes. */
static void aml_pkglength(GByteArray *a, size_t len)
{
    size_t total;

    if (len + 1 < 0x40) {
        aml_byte(a, (uint8_t)(len + 1));
        return;
    }
    for (unsigned extra = 1; extra <= 3; extra++) {
        total = len + 1 + extra;
        if (total < (1u << (4 + 8 * extra))) {
            aml_byte(a, (uint8_t)((extra << 6) | (total & 0xf)));
            for (unsigned i = 0; i < extra; i++) {
                aml_byte(a, (uint8_t)(total >> (4 + 8 * i)));
            }
            return;
        }
    }
    g_assert_not_reached();     /* > 256 MiB of AML */
}

/* Appends @op (1 or 2 bytes), PkgLength, then @body; frees @body. */
static void aml_package_op(GByteArray *a, const uint8_t *op, unsigned oplen, GByteArray *body)
{
    g_byte_array_append(a, op, oplen);
    aml_pkglength(a, body->len);
    g_byte_array_append(a, body->data, body->len);
    g_byte_array_free(body, TRUE);
}

/* Scope (NAME) { body }, NAME a root path like "\\_SB_". */
static void aml_scope(GByteArray *a, const char *root_seg, GByteArray *body)
{
    static const uint8_t op = AML_SCOPE;
    GByteArray *b = g_byte_array_new();

    aml_byte(b, AML_ROOT);
    aml_nameseg(b, root_seg);
    g_byte_array_append(b, body->data, body->len);
    g_byte_array_free(body, TRUE);
    aml_package_op(a, &op, 1, b);
}

/* Device (NAME) { body } */
static void aml_device(GByteArray *a, const char *name, GByteArray *body)
{
    static const uint8_t op[2] = { AML_EXT, AML_DEVICE };
    GByteArray *b = g_byte_array_new();

    aml_nameseg(b, name);
    g_byte_array_append(b, body->data, body->len);
    g_byte_array_free(body, TRUE);
    aml_package_op(a, op, 2, b);
}

/* Name (NAME, ...): the caller appends the value right after. */
static void aml_name(GByteArray *a, const char *name)
{
    aml_byte(a, AML_NAME);
    aml_nameseg(a, name);
}

/* Name (NAME, ResourceTemplate () { @descs }): a Buffer ending in an End Tag. */
static void aml_name_resources(GByteArray *a, const char *name, GByteArray *descs)
{
    static const uint8_t op = AML_BUFFER;
    static const uint8_t end_tag[2] = { 0x79, 0x00 };  /* checksum 0: "not computed" */
    GByteArray *b = g_byte_array_new();

    g_byte_array_append(descs, end_tag, 2);
    aml_int(b, descs->len);
    g_byte_array_append(b, descs->data, descs->len);
    g_byte_array_free(descs, TRUE);
    aml_name(a, name);
    aml_package_op(a, &op, 1, b);
}

/* Resource descriptors. */

/* IO (Decode16, base, base, align, len) */
static void res_io(GByteArray *r, uint16_t base, uint8_t align, uint8_t len)
{
    uint8_t d[8] = { 0x47, 0x01 };

    fw_put16(d + 2, base);
    fw_put16(d + 4, base);
    d[6] = align;
    d[7] = len;
    g_byte_array_append(r, d, sizeof(d));
}

/* IRQNoFlags () { irq } */
static void res_irq(GByteArray *r, unsigned irq)
{
    uint8_t d[3] = { 0x22 };

    fw_put16(d + 1, (uint16_t)(1u << irq));
    g_byte_array_append(r, d, sizeof(d));
}

/* Word{BusNumber,IO} (ResourceProducer, MinFixed, MaxFixed, PosDecode, ...) */
static void res_word_space(GByteArray *r, uint8_t type, uint8_t type_flags, uint16_t min,
                           uint16_t max)
{
    uint8_t d[16] = { 0x88, 13, 0, type, 0x0C /* MinFixed, MaxFixed */, type_flags };

    fw_put16(d + 6, 0);                            /* granularity */
    fw_put16(d + 8, min);
    fw_put16(d + 10, max);
    fw_put16(d + 12, 0);                           /* translation */
    fw_put16(d + 14, (uint16_t)(max - min + 1));   /* length */
    g_byte_array_append(r, d, sizeof(d));
}

/* DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable,
 * ReadWrite, 0, min, max, 0, len) */
static void res_dword_memory(GByteArray *r, uint32_t min, uint32_t max)
{
    uint8_t d[26] = { 0x87, 23, 0, 0 /* memory */, 0x0C, 0x01 /* ReadWrite */ };

    fw_put32(d + 6, 0);
    fw_put32(d + 10, min);
    fw_put32(d + 14, max);
    fw_put32(d + 18, 0);
    fw_put32(d + 22, max - min + 1);
    g_byte_array_append(r, d, sizeof(d));
}

/* A legacy ISA device: Device (NAME) { _HID, _UID, _CRS { IO, IRQ } }. */
static void aml_isa_device(GByteArray *a, const char *name, const char *hid, unsigned uid,
                           const uint16_t *ports, const uint8_t *port_lens, int nports,
                           unsigned irq)
{
    GByteArray *dev = g_byte_array_new();
    GByteArray *crs = g_byte_array_new();

    aml_name(dev, "_HID");
    aml_eisaid(dev, hid);
    aml_name(dev, "_UID");
    aml_int(dev, uid);
    for (int i = 0; i < nports; i++) {
        res_io(crs, ports[i], 1, port_lens[i]);
    }
    res_irq(crs, irq);
    aml_name_resources(dev, "_CRS", crs);
    aml_device(a, name, dev);
}

/* The DSDT's AML (after the table header). */
static GByteArray *dsdt_aml(const CpuTopology *topo)
{
    GByteArray *aml = g_byte_array_new();
    GByteArray *sb = g_byte_array_new();
    GByteArray *pci = g_byte_array_new();
    GByteArray *crs = g_byte_array_new();
    GByteArray *s5 = g_byte_array_new();
    static const uint8_t package_op = AML_PACKAGE;

    /* \_SB.PCI0: the host bridge on bus 0 with its windows. */
    aml_name(pci, "_HID");
    aml_eisaid(pci, "PNP0A03");
    aml_name(pci, "_UID");
    aml_int(pci, 0);
    aml_name(pci, "_BBN");
    aml_int(pci, 0);
    res_word_space(crs, 2 /* bus */, 0, 0, 0xff);
    res_io(crs, 0xcf8, 1, 8);           /* config address/data: consumed by the bridge */
    res_word_space(crs, 1 /* I/O */, 0x03 /* EntireRange */, 0x0000, 0x0cf7);
    res_word_space(crs, 1, 0x03, 0x0d00, 0xffff);
    res_dword_memory(crs, 0x000a0000, 0x000bffff);      /* legacy VGA window */
    res_dword_memory(crs, (uint32_t)VM_PCI_MMIO_START, (uint32_t)(VM_PCI_MMIO_END - 1));
    aml_name_resources(pci, "_CRS", crs);
    aml_device(sb, "PCI0", pci);

    /* The legacy devices keel-vmm has, so PNP finds them. */
    {
        static const uint16_t com1[] = { 0x3f8 }, kbd[] = { 0x60, 0x64 }, rtc[] = { 0x70 };
        static const uint8_t com1_len[] = { 8 }, kbd_len[] = { 1, 1 }, rtc_len[] = { 2 };

        aml_isa_device(sb, "COM1", "PNP0501", 1, com1, com1_len, 1, 4);
        aml_isa_device(sb, "KBD_", "PNP0303", 0, kbd, kbd_len, 2, 1);
        aml_isa_device(sb, "RTC_", "PNP0B00", 0, rtc, rtc_len, 1, 8);
    }

    /* One processor device per present CPU; _UID is the MADT processor UID. */
    for (unsigned i = 0; i < topo->cpus; i++) {
        GByteArray *cpu = g_byte_array_new();
        char name[16];

        snprintf(name, sizeof(name), "C%03X", i & 0xfff);
        aml_name(cpu, "_HID");
        aml_string(cpu, "ACPI0007");
        aml_name(cpu, "_UID");
        aml_int(cpu, i);
        aml_device(sb, name, cpu);
    }
    aml_scope(aml, "_SB_", sb);

    /* Name (_S5, Package () { 5, 5, 0, 0 }): SLP_TYPa, SLP_TYPb, reserved. */
    aml_byte(s5, 4);
    aml_int(s5, ACPI_S5_SLP_TYP);
    aml_int(s5, ACPI_S5_SLP_TYP);
    aml_int(s5, 0);
    aml_int(s5, 0);
    aml_name(aml, "_S5_");
    aml_package_op(aml, &package_op, 1, s5);
    return aml;
}

/* ---- tables -------------------------------------------------------------- */

#define FADT_LEN 244u       /* revision 3 (ACPI 2.0+ with the X_ fields) */
#define FACS_LEN 64u
#define RSDP_LEN 36u

static uint32_t madt_len(const CpuTopology *topo)
{
    return 44 + 8 * topo->max_cpus + 12 /* IOAPIC */ + 10 * 5 /* overrides */ + 6 /* NMI */;
}

static void build_madt(uint8_t *t, const CpuTopology *topo)
{
    /* ISA IRQ → GSI overrides: the PIT's IRQ 0 is wired to IOAPIC pin 2;
     * the SCI and PCI INTx IRQs are level-triggered, active high. */
    static const struct { uint8_t irq; uint32_t gsi; uint16_t flags; } iso[] = {
        { 0, 2, 0x0000 },       /* conforming */
        { 5, 5, 0x000d },       /* level (0xc), active high (0x1) */
        { 9, 9, 0x000d },
        { 10, 10, 0x000d },
        { 11, 11, 0x000d },
    };
    uint32_t len = madt_len(topo);
    uint8_t *e = t + 44;

    memset(t, 0, len);
    table_header(t, "APIC", len, 1);
    fw_put32(t + 36, LAPIC_ADDR);
    fw_put32(t + 40, 1);                   /* PCAT_COMPAT: there are 8259s */
    for (unsigned i = 0; i < topo->max_cpus; i++, e += 8) {
        e[0] = 0;                       /* Processor Local APIC */
        e[1] = 8;
        e[2] = (uint8_t)i;              /* ACPI processor UID */
        e[3] = (uint8_t)topo_apic_id(topo, i);
        fw_put32(e + 4, i < topo->cpus ? 1 : 0);      /* enabled */
    }
    e[0] = 1;                           /* I/O APIC */
    e[1] = 12;
    e[2] = 0;                           /* its ID, as QEMU's ACPI gives it */
    fw_put32(e + 4, IOAPIC_ADDR);
    fw_put32(e + 8, 0);                    /* GSI base */
    e += 12;
    for (size_t i = 0; i < G_N_ELEMENTS(iso); i++, e += 10) {
        e[0] = 2;                       /* Interrupt Source Override */
        e[1] = 10;
        e[2] = 0;                       /* ISA */
        e[3] = iso[i].irq;
        fw_put32(e + 4, iso[i].gsi);
        fw_put16(e + 8, iso[i].flags);
    }
    e[0] = 4;                           /* Local APIC NMI */
    e[1] = 6;
    e[2] = 0xff;                        /* all processors */
    fw_put16(e + 3, 0);                    /* conforming */
    e[5] = 1;                           /* LINT1 */
    table_finish(t, len);
}

static void build_fadt(uint8_t *t, uint32_t facs, uint32_t dsdt)
{
    const uint16_t pm1_evt = ACPI_PM_BASE, pm1_cnt = ACPI_PM_BASE + ACPI_PM1_CNT_OFFSET;
    const uint16_t pm_tmr = ACPI_PM_BASE + ACPI_PM_TMR_OFFSET;

    memset(t, 0, FADT_LEN);
    table_header(t, "FACP", FADT_LEN, 3);
    fw_put32(t + 36, facs);                /* FIRMWARE_CTRL */
    fw_put32(t + 40, dsdt);
    t[45] = 0;                          /* preferred PM profile: unspecified */
    fw_put16(t + 46, ACPI_SCI_IRQ);
    fw_put32(t + 48, 0);                   /* SMI_CMD 0: always in ACPI mode */
    fw_put32(t + 56, pm1_evt);             /* PM1a_EVT_BLK */
    fw_put32(t + 64, pm1_cnt);             /* PM1a_CNT_BLK */
    fw_put32(t + 76, pm_tmr);              /* PM_TMR_BLK */
    t[88] = ACPI_PM1_EVT_LEN;
    t[89] = ACPI_PM1_CNT_LEN;
    t[91] = ACPI_PM_TMR_LEN;
    fw_put16(t + 96, 101);                 /* P_LVL2_LAT > 100: no C2 */
    fw_put16(t + 98, 1001);                /* P_LVL3_LAT > 1000: no C3 */
    t[108] = 0x32;                      /* CENTURY: the CMOS century byte rtc.c keeps */
    fw_put16(t + 109, 1u << 1);            /* IAPC_BOOT_ARCH: an 8042 */
    /* Flags: WBINVD, PROC_C1, no fixed power/sleep buttons, RESET_REG_SUP. */
    fw_put32(t + 112, (1u << 0) | (1u << 2) | (1u << 4) | (1u << 5) | (1u << 10));
    put_gas_io(t + 116, 0xcf9, 8, 1);   /* RESET_REG */
    t[128] = 0x06;                      /* RESET_VALUE: full reset, as on PIIX/ICH */
    put64(t + 132, facs);               /* X_FIRMWARE_CTRL */
    put64(t + 140, dsdt);               /* X_DSDT */
    put_gas_io(t + 148, pm1_evt, ACPI_PM1_EVT_LEN * 8, 2);
    put_gas_io(t + 172, pm1_cnt, ACPI_PM1_CNT_LEN * 8, 2);
    put_gas_io(t + 208, pm_tmr, ACPI_PM_TMR_LEN * 8, 3);
    table_finish(t, FADT_LEN);
}

static void build_facs(uint8_t *t)
{
    memset(t, 0, FACS_LEN);
    memcpy(t, "FACS", 4);
    fw_put32(t + 4, FACS_LEN);
    t[32] = 1;                          /* version (ACPI 2.0+) */
}

/* RSDT (4-byte entries) or XSDT (8-byte entries) listing @addrs. */
static uint32_t build_sdt(uint8_t *t, bool xsdt, const uint64_t *addrs, int n)
{
    unsigned w = xsdt ? 8 : 4;
    uint32_t len = ACPI_HEADER_LEN + w * (uint32_t)n;

    table_header(t, xsdt ? "XSDT" : "RSDT", len, 1);
    for (int i = 0; i < n; i++) {
        if (xsdt) {
            put64(t + ACPI_HEADER_LEN + 8 * i, addrs[i]);
        } else {
            fw_put32(t + ACPI_HEADER_LEN + 4 * i, (uint32_t)addrs[i]);
        }
    }
    table_finish(t, len);
    return len;
}

static void build_rsdp(uint8_t *t, uint32_t rsdt, uint64_t xsdt)
{
    memset(t, 0, RSDP_LEN);
    memcpy(t, "RSD PTR ", 8);
    memcpy(t + 9, ACPI_OEM_ID, 6);
    t[15] = 2;                          /* ACPI 2.0+: has the XSDT */
    fw_put32(t + 16, rsdt);
    fw_put32(t + 20, RSDP_LEN);
    put64(t + 24, xsdt);
    t[8] = (uint8_t)(0x100 - acpi_checksum(t, 20));
    t[32] = (uint8_t)(0x100 - acpi_checksum(t, RSDP_LEN));
}

size_t acpi_build_tables(uint8_t *buf, size_t len, uint64_t gpa, const CpuTopology *topo)
{
    GByteArray *aml = dsdt_aml(topo);
    size_t off, need;
    uint64_t facs, dsdt, fadt, madt, rsdt, xsdt, list[2];
    uint32_t dsdt_len = ACPI_HEADER_LEN + aml->len;

#define ALIGN16(x) (((x) + 15) & ~(size_t)15)
    facs = 64;                          /* FACS must be 64-byte aligned */
    dsdt = facs + FACS_LEN;
    fadt = ALIGN16(dsdt + dsdt_len);
    madt = ALIGN16(fadt + FADT_LEN);
    rsdt = ALIGN16(madt + madt_len(topo));
    xsdt = ALIGN16(rsdt + ACPI_HEADER_LEN + 4 * 2);
    need = xsdt + ACPI_HEADER_LEN + 8 * 2;
#undef ALIGN16
    if (need > len || gpa + need > 0xffffffffull || (gpa & 63)) {
        g_byte_array_free(aml, TRUE);
        return 0;
    }
    memset(buf, 0, need);
    build_facs(buf + facs);
    table_header(buf + dsdt, "DSDT", dsdt_len, 2);
    memcpy(buf + dsdt + ACPI_HEADER_LEN, aml->data, aml->len);
    table_finish(buf + dsdt, dsdt_len);
    g_byte_array_free(aml, TRUE);
    build_fadt(buf + fadt, (uint32_t)(gpa + facs), (uint32_t)(gpa + dsdt));
    build_madt(buf + madt, topo);
    list[0] = gpa + fadt;
    list[1] = gpa + madt;
    build_sdt(buf + rsdt, false, list, 2);
    build_sdt(buf + xsdt, true, list, 2);
    build_rsdp(buf, (uint32_t)(gpa + rsdt), gpa + xsdt);
    off = need;
    return off;
}

/* ---- installing ------------------------------------------------------------ */

int firmware_tables_install(Vm *vm, const CpuTopology *topo, char *err, size_t errlen)
{
    uint8_t *acpi = vm_gpa_to_hva(vm, ACPI_TABLES_ADDR, ACPI_TABLES_SIZE);
    uint8_t *mp = vm_gpa_to_hva(vm, MPTABLE_ADDR, MPTABLE_SIZE);
    uint32_t eax = 0, ebx, ecx, edx = 0;

    if (!acpi || !mp) {
        snprintf(err, errlen, "no guest RAM at 0x%llx for the firmware tables",
                 (unsigned long long)ACPI_TABLES_ADDR);
        return -1;
    }
    if (!acpi_build_tables(acpi, ACPI_TABLES_SIZE, ACPI_TABLES_ADDR, topo)) {
        snprintf(err, errlen, "the ACPI tables for %u CPUs do not fit in %u KiB",
                 topo->max_cpus, ACPI_TABLES_SIZE >> 10);
        return -1;
    }
#if defined(__x86_64__) || defined(__i386__)
    /* The MP table's CPU signature and feature flags: the host's CPUID 1,
     * which is what the guest's CPUID 1 reports too (KVM passes it). */
    __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
    (void)ebx;
    (void)ecx;
#endif
    if (!mptable_build(mp, MPTABLE_SIZE, MPTABLE_ADDR, topo, eax, edx)) {
        snprintf(err, errlen, "the MP table for %u CPUs does not fit in %u KiB",
                 topo->cpus, MPTABLE_SIZE >> 10);
        return -1;
    }
    return 0;
}

/* ---- the PM registers -------------------------------------------------------- */

#define PM1_STS_TMR     (1u << 0)
#define PM1_CNT_SCI_EN  (1u << 0)
#define PM1_CNT_SLP_TYP_SHIFT 10
#define PM1_CNT_SLP_EN  (1u << 13)

struct AcpiPm {
    Vm *vm;
    uint16_t pm1_sts, pm1_en, pm1_cnt;
    uint64_t start_ns;
};

static uint64_t monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The PM timer: 3.579545 MHz, 24 bits (TMR_VAL_EXT is clear). */
static uint32_t acpi_pm_timer(AcpiPm *pm)
{
    uint64_t ns = monotonic_ns() - pm->start_ns;
    uint64_t ticks = (ns / 1000000000ull) * ACPI_PM_TIMER_HZ +
                     (ns % 1000000000ull) * ACPI_PM_TIMER_HZ / 1000000000ull;

    return (uint32_t)(ticks & 0xffffff);
}

/* The register file as bytes: PM1 status, enable, control, pad, timer. */
static void acpi_pm_regs(AcpiPm *pm, uint8_t regs[ACPI_PM_LEN])
{
    memset(regs, 0, ACPI_PM_LEN);
    fw_put16(regs + 0, pm->pm1_sts);
    fw_put16(regs + 2, pm->pm1_en);
    fw_put16(regs + 4, pm->pm1_cnt | PM1_CNT_SCI_EN);
    fw_put32(regs + 8, acpi_pm_timer(pm));
}

static uint64_t acpi_pm_read(void *opaque, uint64_t offset, unsigned size)
{
    uint8_t regs[ACPI_PM_LEN];
    uint64_t v = 0;

    acpi_pm_regs(opaque, regs);
    for (unsigned i = 0; i < size; i++) {
        v |= (uint64_t)(offset + i < ACPI_PM_LEN ? regs[offset + i] : 0xff) << (8 * i);
    }
    return v;
}

static void acpi_pm_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    AcpiPm *pm = opaque;

    for (unsigned i = 0; i < size; i++, offset++, value >>= 8) {
        uint8_t b = (uint8_t)value;
        unsigned shift = 8 * (offset & 1);

        switch (offset) {
        case 0: case 1:                 /* PM1 status: write 1 to clear */
            pm->pm1_sts &= (uint16_t)~(b << shift);
            break;
        case 2: case 3:
            pm->pm1_en = (uint16_t)((pm->pm1_en & ~(0xff << shift)) | (b << shift));
            break;
        case 4: case 5:
            pm->pm1_cnt = (uint16_t)((pm->pm1_cnt & ~(0xff << shift)) | (b << shift));
            if (offset == 5 && (pm->pm1_cnt & PM1_CNT_SLP_EN)) {
                unsigned typ = (pm->pm1_cnt >> PM1_CNT_SLP_TYP_SHIFT) & 7;

                pm->pm1_cnt &= (uint16_t)~PM1_CNT_SLP_EN;   /* self-clearing */
                if (typ == ACPI_S5_SLP_TYP) {
                    vm_request_stop(pm->vm, VM_STOP_POWEROFF, 0);
                }
                /* No other sleep state is declared (_S1.._S4), so no
                 * guest asks for one. */
            }
            break;
        default:                        /* the timer is read-only */
            break;
        }
    }
}

static const BusOps acpi_pm_ops = {
    .read = acpi_pm_read,
    .write = acpi_pm_write,
};

AcpiPm *acpi_pm_new(Vm *vm)
{
    AcpiPm *pm = g_new0(AcpiPm, 1);

    pm->vm = vm;
    pm->start_ns = monotonic_ns();
    if (bus_add(&vm->pio_bus, ACPI_PM_BASE, ACPI_PM_LEN, &acpi_pm_ops, pm, BUS_LOCKED,
                "acpi-pm") < 0) {
        fprintf(stderr, "keel-vmm: cannot register the ACPI PM ports at 0x%x\n", ACPI_PM_BASE);
        g_free(pm);
        return NULL;
    }
    return pm;
}

void acpi_pm_free(AcpiPm *pm)
{
    if (pm) {
        bus_remove(&pm->vm->pio_bus, ACPI_PM_BASE, pm);
        g_free(pm);
    }
}
