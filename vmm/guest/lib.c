/*
 * vmm/guest/lib.c — the few C library pieces the freestanding guest needs:
 * mem and string functions (the compiler may call memset/memcpy on its
 * own), number parsing, a printf subset on COM1, and the exit port.
 *
 * COM1 is a 16550 driven by polling; output is callable from either CPL
 * (CPL3 may do port I/O, see guest.h).  "\n" is sent as "\r\n".
 */
#include "config.h"

#include "vmm/guest/guest.h"

#define COM1 0x3f8

/* String ops as single rep instructions: fast at CPL3 (and cannot be
 * turned back into calls to themselves by the optimiser). */
void *memset(void *d, int c, size_t n)
{
    void *ret = d;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return ret;
}

void *memcpy(void *d, const void *s, size_t n)
{
    void *ret = d;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return ret;
}

void *memmove(void *d, const void *s, size_t n)
{
    void *ret = d;

    if ((uintptr_t)d <= (uintptr_t)s || (uintptr_t)d >= (uintptr_t)s + n) {
        return memcpy(d, s, n);
    }
    d = (char *)d + n - 1;
    s = (const char *)s + n - 1;
    __asm__ volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return ret;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;

    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) {
            return x[i] < y[i] ? -1 : 1;
        }
    }
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;

    while (s[n]) {
        n++;
    }
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b || !*a) {
            return (unsigned char)*a - (unsigned char)*b;
        }
    }
    return 0;
}

bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0, base = 10, mult = 1;

    if (!s || !*s) {
        return false;
    }
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
        if (!*s) {
            return false;
        }
    }
    for (; *s; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9') {
            d = *s - '0';
        } else if (base == 16 && *s >= 'a' && *s <= 'f') {
            d = *s - 'a' + 10;
        } else if (base == 16 && *s >= 'A' && *s <= 'F') {
            d = *s - 'A' + 10;
        } else {
            break;
        }
        if (v > (UINT64_MAX - d) / base) {
            return false;
        }
        v = v * base + d;
    }
    switch (*s) {
    case '\0':
        break;
    case 'k': case 'K':
        mult = 1ull << 10;
        s++;
        break;
    case 'm': case 'M':
        mult = 1ull << 20;
        s++;
        break;
    case 'g': case 'G':
        mult = 1ull << 30;
        s++;
        break;
    default:
        return false;
    }
    if (*s == 'i' || *s == 'b' || *s == 'B') {      /* "4KiB", "4kb" */
        s += (*s == 'i' && (s[1] == 'B' || s[1] == 'b')) ? 2 : 1;
    }
    if (*s || (v && mult > UINT64_MAX / v)) {
        return false;
    }
    *out = v * mult;
    return true;
}

/* ---- COM1 ------------------------------------------------------------------ */
void serial_init(void)
{
    outb(COM1 + 1, 0x00);       /* IER: no interrupts, we poll */
    outb(COM1 + 3, 0x80);       /* LCR: DLAB */
    outb(COM1 + 0, 0x01);       /* 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);       /* 8N1 */
    outb(COM1 + 2, 0xc7);       /* FIFO on, cleared */
    outb(COM1 + 4, 0x03);       /* DTR | RTS */
}

void serial_putc(char c)
{
    /* Bounded wait for THRE: a missing UART must not hang the guest. */
    for (unsigned i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++) {
        cpu_relax();
    }
    outb(COM1, (uint8_t)c);
}

/* ---- formatting ------------------------------------------------------------ */
struct out {
    char *buf;              /* NULL: to the serial port */
    size_t size, len;
};

static void out_char(struct out *o, char c)
{
    if (!o->buf) {
        if (c == '\n') {
            serial_putc('\r');
        }
        serial_putc(c);
    } else if (o->len + 1 < o->size) {
        o->buf[o->len] = c;
    }
    o->len++;
}

static void out_number(struct out *o, uint64_t v, unsigned base, bool neg,
                       unsigned width, bool zero_pad, bool left, bool upper)
{
    char tmp[24];
    unsigned n = 0;
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    unsigned len = n + (neg ? 1 : 0);
    if (neg && zero_pad) {
        out_char(o, '-');
    }
    if (!left) {
        for (; width > len; width--) {
            out_char(o, zero_pad ? '0' : ' ');
        }
    }
    if (neg && !zero_pad) {
        out_char(o, '-');
    }
    while (n) {
        out_char(o, tmp[--n]);
    }
    if (left) {
        for (; width > len; width--) {
            out_char(o, ' ');
        }
    }
}

static void format(struct out *o, const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            out_char(o, *fmt);
            continue;
        }
        fmt++;
        bool zero_pad = false, left = false;
        unsigned width = 0, lng = 0;
        for (;; fmt++) {
            if (*fmt == '0') {
                zero_pad = true;
            } else if (*fmt == '-') {
                left = true;
            } else {
                break;
            }
        }
        while (*fmt >= '0' && *fmt <= '9') {
            width = width * 10 + (*fmt++ - '0');
        }
        while (*fmt == 'l' || *fmt == 'z') {
            lng++;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
            out_number(o, v < 0 ? -(uint64_t)v : (uint64_t)v, 10, v < 0,
                       width, zero_pad, left, false);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            out_number(o, v, *fmt == 'u' ? 10 : 16, false, width, zero_pad,
                       left, *fmt == 'X');
            break;
        }
        case 'p':
            out_char(o, '0');
            out_char(o, 'x');
            out_number(o, (uintptr_t)va_arg(ap, void *), 16, false, width,
                       zero_pad, left, false);
            break;
        case 'c':
            out_char(o, (char)va_arg(ap, int));
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            size_t len = strlen(s ? s : "(null)");
            if (!left) {
                for (; width > len; width--) {
                    out_char(o, ' ');
                }
            }
            for (const char *p = s ? s : "(null)"; *p; p++) {
                out_char(o, *p);
            }
            for (; left && width > len; width--) {
                out_char(o, ' ');
            }
            break;
        }
        case '%':
            out_char(o, '%');
            break;
        case '\0':
            return;
        default:
            out_char(o, '%');
            out_char(o, *fmt);
            break;
        }
    }
}

/* One CPU's output at a time, so lines do not interleave.  The wait is
 * bounded: a CPU that faults (CPL0) while it holds the lock must still get
 * its report out. */
static volatile uint32_t console_lock;

int kvprintf(const char *fmt, va_list ap)
{
    struct out o = { 0, 0, 0 };
    bool locked = false;

    for (unsigned long i = 0; i < 100000000ul && !locked; i++) {
        locked = !atomic_xchg32(&console_lock, 1);
        if (!locked) {
            cpu_relax();
        }
    }
    format(&o, fmt, ap);
    if (locked) {
        spin_unlock(&console_lock);
    }
    return (int)o.len;
}

int kprintf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = kvprintf(fmt, ap);
    va_end(ap);
    return n;
}

int ksnprintf(char *buf, size_t size, const char *fmt, ...)
{
    struct out o = { buf, size, 0 };
    va_list ap;

    va_start(ap, fmt);
    format(&o, fmt, ap);
    va_end(ap);
    if (size) {
        buf[o.len < size ? o.len : size - 1] = '\0';
    }
    return (int)o.len;
}

void guest_exit(int status)
{
    outb(DEBUG_EXIT_PORT, (uint8_t)status);
    /* Still here: no debug-exit device.  Say so and stop for good. */
    kprintf("KEEL-GUEST: no debug-exit device at port 0x%x; halting "
            "(status %d)\n", DEBUG_EXIT_PORT, status);
    for (;;) {
        if (!kernel_depth[0]) {
            syscall3(SYS_HALT, 0, 0, 0);
        } else {
            __asm__ volatile("cli; hlt");
        }
    }
}
