/*
 * vmm/guest/smp.c — the other CPUs: finding them (ACPI MADT, else the MP
 * table), starting them (INIT-SIPI-SIPI through the local APIC), and
 * handing them work.  Runs at CPL3: the firmware tables, the LAPIC page and
 * low memory are all identity-mapped and user-accessible, so only the APs'
 * first steps (boot.S's trampoline, ap_kernel_main) run at CPL0, once each.
 *
 * Bring-up is one AP at a time: the BSP writes the AP's kernel stack and
 * index into ap_boot_rsp/ap_boot_cpu, sends INIT, waits 10 ms, sends a
 * start-up IPI (a second one after 200 us if the AP has not shown up), and
 * waits for the AP to say "cpu N up" before it touches those variables
 * again.  An AP that does not come up in 10 s ends the bring-up (a late
 * one would otherwise start on the next AP's stack).
 *
 * Idle APs sleep in SYS_WAIT_IRQ (hlt) and are woken by a WAKE_VECTOR IPI;
 * smp_run_all() publishes (fn, arg) under a new generation number.
 */
#include "config.h"

#include "vmm/guest/guest.h"

#define LAPIC_BASE     0xfee00000ul
#define LAPIC_ID       0x020
#define LAPIC_SVR      0x0f0
#define LAPIC_ICR_LOW  0x300
#define LAPIC_ICR_HIGH 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV 0x3e0
#define LVT_MASKED     0x10000
#define LVT_PERIODIC   0x20000
#define ICR_FIXED      0x000
#define ICR_INIT       0x500
#define ICR_STARTUP    0x600
#define ICR_PENDING    0x1000
#define ICR_ASSERT     0x4000

#define AP_START_TIMEOUT_MS 10000

struct smp_cpu smp_cpus[GUEST_MAX_CPUS];
unsigned smp_ncpus = 1;
const char *smp_cpu_source = "none";

static struct {
    void (*volatile fn)(unsigned cpu, void *arg);
    void *volatile arg;
    volatile uint32_t generation;
    volatile uint64_t done;
} smp_work;

/* A pointer to fixed physical address @a (identity-mapped).  Laundered
 * through an asm so the compiler does not treat a constant address as an
 * out-of-bounds object (-Warray-bounds). */
static void *phys(uint64_t a)
{
    __asm__("" : "+r"(a));
    return (void *)(uintptr_t)a;
}

static volatile uint32_t *lapic_reg(unsigned off)
{
    return phys(LAPIC_BASE + off);
}

uint32_t lapic_id(void)
{
    return *lapic_reg(LAPIC_ID) >> 24;
}

/* Software-enables the LAPIC (an AP's comes out of INIT disabled, and a
 * disabled LAPIC takes no fixed interrupts: IPIs, MSIs). */
void lapic_enable(void)
{
    *lapic_reg(LAPIC_SVR) = 0x100 | SPURIOUS_VECTOR;
}

void lapic_send_ipi(uint32_t apic_id, uint32_t icr_low)
{
    for (unsigned i = 0; i < 100000 && (*lapic_reg(LAPIC_ICR_LOW) & ICR_PENDING); i++) {
        cpu_relax();
    }
    *lapic_reg(LAPIC_ICR_HIGH) = apic_id << 24;
    *lapic_reg(LAPIC_ICR_LOW) = icr_low;
}

void lapic_timer_periodic(uint32_t us)
{
    if (!us) {
        *lapic_reg(LAPIC_LVT_TIMER) = LVT_MASKED | LAPIC_TIMER_VECTOR;
        *lapic_reg(LAPIC_TIMER_INIT) = 0;
        return;
    }
    *lapic_reg(LAPIC_TIMER_DIV) = 0xb;                      /* divide by 1 */
    *lapic_reg(LAPIC_LVT_TIMER) = LVT_PERIODIC | LAPIC_TIMER_VECTOR;
    *lapic_reg(LAPIC_TIMER_INIT) = us * 1000;
}

/* ---- finding the CPUs ------------------------------------------------------- */
static bool checksum_ok(const uint8_t *p, uint32_t len)
{
    uint8_t sum = 0;

    for (uint32_t i = 0; i < len; i++) {
        sum += p[i];
    }
    return sum == 0;
}

static uint32_t get32(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A 16-byte aligned structure starting with @sig (of @siglen bytes) whose
 * first @sumlen bytes add up to 0, in [start, end); NULL if none. */
static const uint8_t *scan(uint64_t start, uint64_t end, const char *sig,
                           unsigned siglen, unsigned sumlen)
{
    for (uint64_t a = ALIGN_UP(start, 16); a + sumlen <= end; a += 16) {
        const uint8_t *p = (const uint8_t *)(uintptr_t)a;
        if (!memcmp(p, sig, siglen) && checksum_ok(p, sumlen)) {
            return p;
        }
    }
    return NULL;
}

/* The EBDA's first KiB, then the BIOS area: where firmware leaves the
 * RSDP and the MP floating pointer. */
static const uint8_t *scan_bios_areas(const char *sig, unsigned siglen, unsigned sumlen)
{
    uint64_t ebda = (uint64_t)*(const volatile uint16_t *)phys(0x40e) << 4;
    const uint8_t *p = NULL;

    if (ebda >= 0x80000 && ebda < 0xa0000) {
        p = scan(ebda, ebda + 1024, sig, siglen, sumlen);
    }
    if (!p) {
        p = scan(0x9fc00, 0xa0000, sig, siglen, sumlen);
    }
    if (!p) {
        p = scan(0xe0000, 0x100000, sig, siglen, sumlen);
    }
    return p;
}

static void add_cpu(uint32_t apic_id, uint32_t bsp_id)
{
    if (apic_id == bsp_id) {
        return;                          /* already cpu 0 */
    }
    for (unsigned i = 0; i < smp_ncpus; i++) {
        if (smp_cpus[i].apic_id == apic_id) {
            return;
        }
    }
    if (smp_ncpus < GUEST_MAX_CPUS) {
        smp_cpus[smp_ncpus++].apic_id = apic_id;
    }
}

/* ACPI 5.2.12: enabled Processor Local APIC (type 0) and, with xAPIC IDs,
 * Processor Local x2APIC (type 9) entries. */
static bool cpus_from_madt(uint32_t bsp_id)
{
    const uint8_t *rsdp = scan_bios_areas("RSD PTR ", 8, 20);

    if (!rsdp) {
        return false;
    }
    bool xsdt = rsdp[15] >= 2 && get32(rsdp + 24) && !get32(rsdp + 28);
    const uint8_t *sdt = (const uint8_t *)(uintptr_t)get32(rsdp + (xsdt ? 24 : 16));
    if (!sdt || memcmp(sdt, xsdt ? "XSDT" : "RSDT", 4) || !checksum_ok(sdt, get32(sdt + 4))) {
        return false;
    }
    unsigned width = xsdt ? 8 : 4;
    for (uint32_t off = 36; off + width <= get32(sdt + 4); off += width) {
        if (xsdt && get32(sdt + off + 4)) {
            continue;                    /* above 4 GiB: not in our map */
        }
        const uint8_t *t = (const uint8_t *)(uintptr_t)get32(sdt + off);
        if (!t || memcmp(t, "APIC", 4) || !checksum_ok(t, get32(t + 4))) {
            continue;
        }
        uint32_t len = get32(t + 4);
        for (uint32_t e = 44; e + 2 <= len && t[e + 1] >= 2; e += t[e + 1]) {
            if (t[e] == 0 && t[e + 1] >= 8 && (get32(t + e + 4) & 1)) {
                add_cpu(t[e + 3], bsp_id);
            } else if (t[e] == 9 && t[e + 1] >= 16 && (get32(t + e + 8) & 1) &&
                       get32(t + e + 4) < 0xff) {
                add_cpu(get32(t + e + 4), bsp_id);
            }
        }
        smp_cpu_source = "madt";
        return true;
    }
    return false;
}

/* MP 1.4 4.1/4.3: enabled processor entries (type 0, 20 bytes). */
static bool cpus_from_mptable(uint32_t bsp_id)
{
    const uint8_t *fp = scan_bios_areas("_MP_", 4, 16);
    const uint8_t *t = fp ? (const uint8_t *)(uintptr_t)get32(fp + 4) : NULL;

    if (!t || memcmp(t, "PCMP", 4) || !checksum_ok(t, t[4] | (uint32_t)t[5] << 8)) {
        return false;
    }
    uint32_t len = t[4] | (uint32_t)t[5] << 8;
    unsigned count = t[34] | (unsigned)t[35] << 8;
    uint32_t e = 44;
    for (unsigned i = 0; i < count && e < len; i++) {
        if (t[e] == 0) {
            if (t[e + 3] & 1) {
                add_cpu(t[e + 1], bsp_id);
            }
            e += 20;
        } else {
            e += 8;
        }
    }
    smp_cpu_source = "mptable";
    return true;
}

/* ---- starting them ---------------------------------------------------------- */
static bool wait_online(unsigned cpu, uint64_t us)
{
    uint64_t end = rdtsc() + us * tsc_khz / 1000;

    while (!smp_cpus[cpu].online) {
        if (rdtsc() > end) {
            return false;
        }
        cpu_relax();
    }
    return true;
}

static bool start_ap(unsigned cpu)
{
    uint32_t apic = smp_cpus[cpu].apic_id;
    uint32_t sipi = ICR_STARTUP | ICR_ASSERT | (AP_TRAMPOLINE_ADDR >> 12);

    ap_boot_rsp = kernel_stack_top(cpu);
    ap_boot_cpu = cpu;
    smp_mb();
    lapic_send_ipi(apic, ICR_INIT | ICR_ASSERT);
    udelay(10000);
    lapic_send_ipi(apic, sipi);
    if (!wait_online(cpu, 200)) {
        lapic_send_ipi(apic, sipi);     /* the MP spec's second SIPI */
    }
    return wait_online(cpu, AP_START_TIMEOUT_MS * 1000ull);
}

unsigned smp_init(unsigned max_cpus)
{
    uint32_t bsp_id = lapic_id();
    unsigned found;
    uint64_t t0 = rdtsc();

    smp_ncpus = 1;
    smp_cpus[0].apic_id = bsp_id;
    smp_cpus[0].online = true;
    if (!cpus_from_madt(bsp_id)) {
        cpus_from_mptable(bsp_id);
    }
    found = smp_ncpus;
    if (max_cpus && smp_ncpus > max_cpus) {
        smp_ncpus = max_cpus;
    }
    if (smp_ncpus > 1) {
        lapic_enable();
        memcpy(phys(AP_TRAMPOLINE_ADDR), ap_trampoline_start,
               (size_t)(ap_trampoline_end - ap_trampoline_start));
        smp_mb();
    }
    for (unsigned cpu = 1; cpu < smp_ncpus; cpu++) {
        if (!start_ap(cpu)) {
            kprintf("KEEL-GUEST: cpu %u (APIC ID %u) did not come up in %u ms; "
                    "going on with %u CPUs\n", cpu, smp_cpus[cpu].apic_id,
                    AP_START_TIMEOUT_MS, cpu);
            smp_ncpus = cpu;
            break;
        }
    }
    kprintf("KEEL-GUEST: smp cpus=%u found=%u source=%s bsp_apic_id=%u "
            "bringup_us=%lu\n", smp_ncpus, found, smp_cpu_source, bsp_id,
            (rdtsc() - t0) * 1000 / tsc_khz);
    return smp_ncpus;
}

/* ---- handing out work ------------------------------------------------------- */
void smp_ap_main(unsigned cpu)
{
    uint32_t generation = 0;

    lapic_enable();
    kprintf("KEEL-GUEST: cpu %u up apic_id=%u\n", cpu, lapic_id());
    smp_cpus[cpu].online = true;
    for (;;) {
        uint64_t seen = irq_state.cpu_total[cpu];
        barrier();
        if (smp_work.generation == generation) {
            syscall3(SYS_WAIT_IRQ, seen, 0, 0);
            continue;
        }
        generation = smp_work.generation;
        barrier();
        smp_work.fn(cpu, smp_work.arg);
        atomic_inc64(&smp_work.done);
    }
}

void smp_run_all(void (*fn)(unsigned cpu, void *arg), void *arg)
{
    smp_work.fn = fn;
    smp_work.arg = arg;
    smp_work.done = 0;
    smp_mb();
    smp_work.generation++;
    smp_mb();
    for (unsigned cpu = 1; cpu < smp_ncpus; cpu++) {
        lapic_send_ipi(smp_cpus[cpu].apic_id, ICR_FIXED | ICR_ASSERT | WAKE_VECTOR);
    }
    fn(0, arg);
    while (smp_work.done < smp_ncpus - 1) {
        cpu_relax();
    }
}
