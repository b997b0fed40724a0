/*
 * MC146818 CMOS RTC at 0x70 (index) / 0x71 (data), reading the host's UTC
 * time in BCD, 24-hour mode, never "update in progress".  Writes to the
 * clock registers are accepted and forgotten (the guest's clock is the
 * host's); the rest of the 128 bytes of CMOS RAM is plain storage, with
 * the memory-size bytes firmware would leave.
 */
#include "config.h"

#include "vmm/devices.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RTC_SECONDS 0x00
#define RTC_MINUTES 0x02
#define RTC_HOURS   0x04
#define RTC_WEEKDAY 0x06
#define RTC_DAY     0x07
#define RTC_MONTH   0x08
#define RTC_YEAR    0x09
#define RTC_REG_A   0x0a
#define RTC_REG_B   0x0b
#define RTC_REG_C   0x0c
#define RTC_REG_D   0x0d
#define RTC_CENTURY 0x32

#define RTC_PORT    0x70            /* index; 0x71 data */

struct Rtc {
    Vm *vm;
    uint8_t index;
    uint8_t cmos[128];
};

static uint8_t bcd(int v)
{
    return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static uint8_t rtc_clock_reg(Rtc *r, uint8_t reg)
{
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    switch (reg) {
    case RTC_SECONDS: return bcd(tm.tm_sec);
    case RTC_MINUTES: return bcd(tm.tm_min);
    case RTC_HOURS: return bcd(tm.tm_hour);
    case RTC_WEEKDAY: return bcd(tm.tm_wday + 1);
    case RTC_DAY: return bcd(tm.tm_mday);
    case RTC_MONTH: return bcd(tm.tm_mon + 1);
    case RTC_YEAR: return bcd(tm.tm_year % 100);
    case RTC_CENTURY: return bcd((tm.tm_year + 1900) / 100);
    case RTC_REG_A: return 0x26;            /* 32.768 kHz, 1024 Hz; UIP clear */
    case RTC_REG_B: return 0x02;            /* 24-hour, BCD, no interrupts */
    case RTC_REG_C: return 0x00;
    case RTC_REG_D: return 0x80;            /* valid RAM and time */
    }
    return r->cmos[reg];
}

static uint64_t rtc_read(void *opaque, uint64_t offset, unsigned size)
{
    Rtc *r = opaque;

    (void)size;
    if (offset == 1) {
        return rtc_clock_reg(r, r->index);
    }
    return 0xff;
}

static void rtc_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    Rtc *r = opaque;

    (void)size;
    if (offset == 0) {
        r->index = value & 0x7f;            /* bit 7 is the NMI mask */
    } else if (r->index > RTC_REG_D && r->index != RTC_CENTURY) {
        r->cmos[r->index] = (uint8_t)value;
    }
}

static const BusOps rtc_ops = {
    .read = rtc_read,
    .write = rtc_write,
};

Rtc *rtc_new(Vm *vm)
{
    Rtc *r = calloc(1, sizeof(*r));
    uint64_t ext_kib, high64k;

    if (!r) {
        return NULL;
    }
    /* Memory sizes as a PC BIOS stores them: 0x30/0x31 extended memory
     * (KiB above 1 MiB, max 64 MiB), 0x34/0x35 memory above 16 MiB in
     * 64 KiB units, 0x5b-0x5d memory above 4 GiB in 64 KiB units. */
    ext_kib = vm->low_ram_end > 0x100000 ? (vm->low_ram_end - 0x100000) >> 10 : 0;
    if (ext_kib > 0xfc00) {
        ext_kib = 0xfc00;
    }
    r->cmos[0x30] = r->cmos[0x17] = (uint8_t)ext_kib;
    r->cmos[0x31] = r->cmos[0x18] = (uint8_t)(ext_kib >> 8);
    high64k = vm->low_ram_end > 0x1000000 ? (vm->low_ram_end - 0x1000000) >> 16 : 0;
    if (high64k > 0xffff) {
        high64k = 0xffff;
    }
    r->cmos[0x34] = (uint8_t)high64k;
    r->cmos[0x35] = (uint8_t)(high64k >> 8);
    if (vm->ram_size > vm->low_ram_end) {
        uint64_t above = (vm->ram_size - vm->low_ram_end) >> 16;
        r->cmos[0x5b] = (uint8_t)above;
        r->cmos[0x5c] = (uint8_t)(above >> 8);
        r->cmos[0x5d] = (uint8_t)(above >> 16);
    }
    r->vm = vm;
    if (bus_add(&vm->pio_bus, RTC_PORT, 2, &rtc_ops, r, BUS_LOCKED, "rtc") < 0) {
        free(r);
        return NULL;
    }
    return r;
}

void rtc_free(Rtc *r)
{
    if (r) {
        bus_remove(&r->vm->pio_bus, RTC_PORT, r);
        free(r);
    }
}
