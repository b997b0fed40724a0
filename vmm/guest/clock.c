/*
 * vmm/guest/clock.c — time from the TSC.
 *
 * The frequency comes from the hypervisor's TSC leaf (CPUID 0x40000010,
 * kHz) when offered, else CPUID 0x15 when it names the crystal, else it is
 * measured against PIT channel 2 over 20 ms (the gate/OUT bits in port
 * 0x61, which QEMU emulates), else by reading PIT channel 0's count for
 * 20 ms (a VMM with a PIT but no port 0x61).  Runs at CPL3.
 */
#include "config.h"

#include "vmm/guest/guest.h"

uint64_t tsc_khz;
const char *tsc_source = "none";
static uint64_t tsc_base;

static uint64_t tsc_khz_from_cpuid(void)
{
    uint32_t r[4];

    cpuid(1, 0, r);
    if (r[2] & (1u << 31)) {                    /* running under a hypervisor */
        cpuid(0x40000000, 0, r);
        if (r[0] >= 0x40000010) {
            cpuid(0x40000010, 0, r);
            if (r[0]) {
                tsc_source = "cpuid-0x40000010";
                return r[0];
            }
        }
    }
    cpuid(0, 0, r);
    if (r[0] >= 0x15) {
        cpuid(0x15, 0, r);
        if (r[0] && r[1] && r[2]) {
            tsc_source = "cpuid-0x15";
            return (uint64_t)r[2] * r[1] / r[0] / 1000;
        }
    }
    return 0;
}

static uint64_t tsc_khz_from_pit(void)
{
    const unsigned ms = 20;
    const unsigned count = 1193182u * ms / 1000;
    uint8_t p61 = inb(0x61);

    outb(0x61, (p61 & ~0x02) | 0x01);   /* speaker off, channel 2 gate on */
    if ((inb(0x61) & 0x03) != 0x01) {
        return 0;                       /* not a speaker/gate port: no PIT ch2 */
    }
    outb(0x43, 0xb0);                   /* channel 2, lo/hi, mode 0 */
    outb(0x42, count & 0xff);
    outb(0x42, count >> 8);
    uint64_t t0 = rdtsc();
    /* OUT2 rises at terminal count.  Give up after ~2^32 cycles (1-4 s at
     * any plausible TSC rate) or 10^6 reads: a VMM without a PIT. */
    for (unsigned long reads = 0; !(inb(0x61) & 0x20); reads++) {
        if (rdtsc() - t0 > (1ull << 32) || reads > 1000000) {
            outb(0x61, p61);
            return 0;
        }
    }
    uint64_t t1 = rdtsc();
    outb(0x61, p61);
    if (t1 - t0 < 1000000) {
        return 0;                       /* < 50 MHz: OUT2 was not a real PIT */
    }
    tsc_source = "pit";
    return (t1 - t0) / ms;
}

static unsigned pit_ch0_count(void)
{
    outb(0x43, 0x00);                   /* latch channel 0 */
    unsigned lo = inb(0x40);
    return lo | (unsigned)inb(0x40) << 8;
}

/* Counts PIT channel 0 down (mode 2, reload 65535: one wrap per 55 ms)
 * for 20 ms worth of input clocks, reading the latched count. */
static uint64_t tsc_khz_from_pit_counter(void)
{
    const uint64_t want = 1193182u / 50;  /* 20 ms */
    uint64_t elapsed = 0;

    outb(0x43, 0x34);
    outb(0x40, 0xff);
    outb(0x40, 0xff);
    unsigned prev = pit_ch0_count();
    uint64_t t0 = rdtsc();
    for (unsigned long reads = 0; elapsed < want; reads++) {
        unsigned c = pit_ch0_count();
        elapsed += prev >= c ? prev - c : prev + 0xffff - c;
        prev = c;
        if (rdtsc() - t0 > (1ull << 33) || reads > 1000000) {
            return 0;
        }
    }
    uint64_t t1 = rdtsc();
    if (t1 - t0 < 1000000) {
        return 0;
    }
    tsc_source = "pit-ch0-count";
    return (t1 - t0) * 1193182 / elapsed / 1000;
}

bool clock_init(void)
{
    tsc_khz = tsc_khz_from_cpuid();
    if (!tsc_khz) {
        tsc_khz = tsc_khz_from_pit();
    }
    if (!tsc_khz) {
        tsc_khz = tsc_khz_from_pit_counter();
    }
    tsc_base = rdtsc();
    if (!tsc_khz) {
        tsc_khz = 1000000;              /* keep going; results say "assumed" */
        tsc_source = "assumed-1GHz";
        return false;
    }
    return true;
}

uint64_t clock_us(void)
{
    return (rdtsc() - tsc_base) * 1000 / tsc_khz;
}

void udelay(uint64_t us)
{
    uint64_t end = rdtsc() + us * tsc_khz / 1000;

    while (rdtsc() < end) {
        cpu_relax();
    }
}
