/*
 * vmm/guest/guest.h — the freestanding test guest's shared definitions.
 *
 * The guest is one static x86-64 program booted by a multiboot v1 loader
 * (keel-vmm or qemu-system-x86_64 -kernel).  It has two halves:
 *
 *   kernel (CPL0: boot.S, kernel.c)  long mode, GDT/TSS/IDT, trap and IRQ
 *       handlers, a handful of system calls (int 0x80).  On nested kvm_pvm
 *       hosts every CPL0 instruction is emulated (~2 us each), so the kernel
 *       does as little as it can: page tables are prebuilt at link time and
 *       the program proper runs in user mode.
 *   user (CPL3: everything else)  may do port I/O (IOPL=3 and an
 *       all-zero TSS I/O bitmap: kvm_pvm honours only the bitmap) and touch
 *       any page (all are user-accessible, MMIO included); it parses the
 *       command line, enumerates PCI, drives devices and runs the workloads.
 *
 * No preemption: the user program runs with IF=0 except inside SYS_WAIT_IRQ
 * or a SYS_SET_IF window.  With several CPUs (smp.c) every CPU runs the
 * same CPL3 program on its own stacks: the boot CPU does all set-up (PCI,
 * device, queues) before it hands work to the others, and what CPUs then
 * share (a virtqueue without VIRTIO_BLK_F_MQ, the console, the IRQ
 * counters) is locked or updated atomically.
 *
 * Functions marked "CPL0" may only be called by the kernel; everything else
 * may be called at either privilege level (the serial console and the exit
 * port only use port I/O, which CPL3 may do).
 */
#ifndef KEEL_GUEST_GUEST_H
#define KEEL_GUEST_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_VERSION "0.2"

/* Segment selectors; the order suits syscall/sysret too (see boot.S). */
#define KERNEL_CS 0x08
#define KERNEL_DS 0x10
#define USER_DS   (0x18 | 3)
#define USER_CS   (0x20 | 3)
#define TSS_SEL   0x28

#define SPURIOUS_VECTOR 0xff       /* LAPIC spurious interrupts: just iretq */

#define RFLAGS_IF   (1u << 9)
#define RFLAGS_IOPL3 (3u << 12)

/* Exit statuses written to the debug-exit port (QEMU exits (s << 1) | 1). */
enum {
    EXIT_OK = 0,
    EXIT_TEST_FAILED = 1,
    EXIT_BAD_CMDLINE = 2,
    EXIT_CRASH = 3,             /* unexpected exception or internal error */
};

#define DEBUG_EXIT_PORT 0xf4

/* ---- port I/O and CPU helpers -------------------------------------------- */
static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                     : "a"(leaf), "c"(sub));
}
static inline void cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}
static inline uint64_t read_rflags(void)
{
    uint64_t f;
    __asm__ volatile("pushfq; popq %0" : "=r"(f));
    return f;
}

/* Barriers for shared rings: x86 is TSO, so ordering against the device
 * only needs the compiler barrier, except store->load (full fence). */
#define barrier() __asm__ volatile("" ::: "memory")
#define smp_mb()  __asm__ volatile("mfence" ::: "memory")

/* Atomics for state several CPUs update (either CPL: plain instructions). */
static inline void atomic_inc64(volatile uint64_t *p)
{
    __asm__ volatile("lock incq %0" : "+m"(*p) : : "memory");
}
static inline uint32_t atomic_xchg32(volatile uint32_t *p, uint32_t v)
{
    __asm__ volatile("xchgl %0, %1" : "+r"(v), "+m"(*p) : : "memory");
    return v;
}
/* Test-and-test-and-set spinlock: 0 free, 1 held.  Held only for a few
 * ring operations, never across a system call or a wait. */
static inline void spin_lock(volatile uint32_t *l)
{
    while (atomic_xchg32(l, 1)) {
        while (*l) {
            __asm__ volatile("pause" ::: "memory");
        }
    }
}
static inline void spin_unlock(volatile uint32_t *l)
{
    barrier();                   /* x86 TSO: a plain store releases */
    *l = 0;
}

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((uint64_t)(a) - 1))

/* ---- lib.c: freestanding C library bits ---------------------------------- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
/* Parses a decimal or 0x-hex number with an optional k/m/g (x1024) suffix
 * (and an optional "iB"/"b" after it); false on junk or overflow. */
bool parse_u64(const char *s, uint64_t *out);

void serial_init(void);
void serial_putc(char c);
int kvprintf(const char *fmt, va_list ap);
int kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int ksnprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes the status to the debug-exit port; halts if nothing stops us. */
void guest_exit(int status) __attribute__((noreturn));

/* xorshift64, splitmix64, randrw's read/write choice. */
#include "vmm/guest/rand.h"

/* ---- kernel.c: CPL0 side -------------------------------------------------- */
struct boot_state {
    uint32_t magic;              /* EAX at entry */
    uint32_t info;               /* EBX at entry: multiboot info (physical) */
};
extern struct boot_state boot_state;

/* Up to this many CPUs are brought up (smp.c); more are left in
 * wait-for-SIPI. */
#define GUEST_MAX_CPUS 16

/* Interrupt vectors besides the legacy IRQs (0x20-0x2f): */
#define MSI_VECTOR_BASE   0x30     /* 0x30 + n: MSI-X vector n (n < 16) */
#define MSI_VECTORS       16
#define WAKE_VECTOR       0x40     /* IPI that wakes an idle AP */
#define LAPIC_TIMER_VECTOR 0x41    /* per-CPU watchdog tick (mode=irq) */
#define NR_TRAP_STUBS     0x42     /* isr_stubs covers vectors 0..0x41 */

/* IRQ bookkeeping written by the kernel's handlers, read by user code. */
struct irq_state {
    volatile uint64_t count[16];          /* per legacy IRQ line */
    volatile uint64_t total;
    volatile uint64_t msi_count[MSI_VECTORS];
    /* Every interrupt taken by CPU n: what SYS_WAIT_IRQ waits on. */
    volatile uint64_t cpu_total[GUEST_MAX_CPUS];
    volatile uint64_t last_cs;            /* CS interrupted by the last IRQ */
    /* When set, the handler reads this byte register (a virtio ISR) before
     * the EOI, so a level-triggered line drops; the value is ORed here. */
    volatile uint8_t *ack_mmio8[16];
    volatile uint8_t ack_value[16];
};
extern struct irq_state irq_state;
/* Per CPU: non-zero while kernel code runs (boot, traps).  `mov %cs`
 * cannot tell: under kvm_pvm it reads the host's selectors. */
extern volatile unsigned kernel_depth[GUEST_MAX_CPUS];

/* System calls: int $0x80 with rax = number, rdi/rsi/rdx = arguments,
 * result in rax.  kvm_pvm turns a user-mode `int $0x80` into #UD at the
 * instruction (and runs `syscall` without leaving user mode), so the #UD
 * handler recognises the two bytes cd 80 and treats them the same. */
enum {
    SYS_INFO = 1,           /* returns KERNEL_CS | caller's CS << 16 (the
                               CS of the trap frame, as the VMM reports it) */
    SYS_WAIT_IRQ,           /* sti; hlt until an interrupt has arrived and
                               the calling CPU's irq_state.cpu_total !=
                               rdi; returns that count */
    SYS_FLUSH_TLB,          /* reload CR3 after user code edited page tables */
    SYS_TRIPLE_FAULT,       /* never returns */
    SYS_SET_IRQ_ACK,        /* rdi = irq, rsi = address of a byte register
                               (0 to clear) */
    SYS_HALT,               /* cli; hlt forever */
    SYS_SET_IF,             /* rdi != 0: the caller continues with IF=1;
                               returns the previous IF (0/1).  For CPL3
                               code that wants interrupts: sti/cli need
                               IOPL 3, which kvm_pvm does not give CPL3 */
};
static inline uint64_t syscall3(uint64_t nr, uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "memory");
    return ret;
}

/* Entered from boot.S at CPL0 with the boot stack; drops to user_main. */
void kernel_main(void) __attribute__((noreturn));
/* An AP's CPL0 start (boot.S's trampoline, on its kernel stack): its own
 * GDT and TSS, the shared IDT, then smp_ap_main(cpu) at CPL3. */
void ap_kernel_main(unsigned cpu) __attribute__((noreturn));
/* Top of CPU n's kernel stack (what an AP's trampoline starts on). */
uint64_t kernel_stack_top(unsigned cpu);

/* ---- boot.S ---------------------------------------------------------------- */
extern uint64_t gdt[];
extern uint64_t pml4[512];
extern uint64_t pdpt_low[512];
extern char __image_start[], __image_end[];
/* iretq to fn(arg) at CPL3 on stack with the given RFLAGS. */
void enter_user(void (*fn)(unsigned), uint64_t stack_top, uint64_t rflags,
                uint64_t arg) __attribute__((noreturn));
extern char isr_stubs[];            /* 16-byte stubs for vectors 0..NR_TRAP_STUBS-1 */
extern char isr_syscall[];
extern char isr_spurious[];
/* The AP start-up code (real mode → long mode), copied to
 * AP_TRAMPOLINE_ADDR; it reads ap_boot_rsp/ap_boot_cpu, set by the BSP
 * before each start-up IPI. */
#define AP_TRAMPOLINE_ADDR 0x70000
extern char ap_trampoline_start[], ap_trampoline_end[];
extern volatile uint64_t ap_boot_rsp;
extern volatile uint32_t ap_boot_cpu;

/* ---- main.c: user program ------------------------------------------------ */
void user_main(unsigned cpu) __attribute__((noreturn));

/* Command line (key=value words; words without '=' are ignored). */
const char *cmdline_get(const char *key);
uint64_t cmdline_u64(const char *key, uint64_t dflt);

/* ---- mm.c: memory ---------------------------------------------------------- */
/* Reads the multiboot info (command line copied, memory map kept) and picks
 * the heap: the largest RAM range of the map above the image and the boot
 * structures, below 3 GiB (the write-back part of the static map). */
void mm_init(void);
/* Bump allocator over that heap.  Memory is identity-mapped and
 * user-accessible; it is NOT zeroed.  NULL when exhausted. */
void *guest_alloc(uint64_t size, uint64_t align);
uint64_t guest_heap_free(void);
extern const char *boot_cmdline;     /* "" when the loader gave none */
/* Ensures [phys, phys+len) is identity-mapped (uncached); for BARs above
 * 4 GiB. */
bool map_mmio(uint64_t phys, uint64_t len);

/* ---- clock.c ----------------------------------------------------------------- */
extern uint64_t tsc_khz;
extern const char *tsc_source;       /* how tsc_khz was found */
/* Calibrates the TSC (KVM/hypervisor CPUID leaf, else PIT channel 2). */
bool clock_init(void);
uint64_t clock_us(void);             /* microseconds since clock_init() */
void udelay(uint64_t us);

/* ---- irq.c: legacy PIC and PIT ------------------------------------------- */
void pic_init(void);                  /* remap to vectors 0x20-0x2f, mask all */
void pic_unmask(unsigned irq, bool level_triggered);
void pic_mask(unsigned irq);
void pit_start_periodic(unsigned hz); /* channel 0, IRQ0 */
void pit_stop(void);

/* ---- pci.c ------------------------------------------------------------------ */
struct pci_func {
    uint8_t bus, dev, fn;
    uint16_t vendor, device;
    uint8_t class_code, subclass, prog_if, header_type;
    uint8_t irq_line, irq_pin;
};
#define PCI_MAX_FUNCS 64
extern struct pci_func pci_funcs[PCI_MAX_FUNCS];
extern unsigned pci_nfuncs;

uint32_t pci_read32(const struct pci_func *f, unsigned off);
uint16_t pci_read16(const struct pci_func *f, unsigned off);
uint8_t pci_read8(const struct pci_func *f, unsigned off);
void pci_write32(const struct pci_func *f, unsigned off, uint32_t v);
void pci_write16(const struct pci_func *f, unsigned off, uint16_t v);
void pci_write8(const struct pci_func *f, unsigned off, uint8_t v);
/* Scans bus 0 and every bus behind a bridge; prints each function when
 * verbose. Returns the number found. */
unsigned pci_enumerate(bool verbose);
/* Address of memory BAR n (64-bit BARs combined); 0 if it is not memory. */
uint64_t pci_bar_address(const struct pci_func *f, unsigned bar);

/* ---- smp.c: the other CPUs -------------------------------------------------- */
struct smp_cpu {
    uint32_t apic_id;
    volatile bool online;
};
extern struct smp_cpu smp_cpus[GUEST_MAX_CPUS];
extern unsigned smp_ncpus;             /* CPUs running (1 until smp_init) */
extern const char *smp_cpu_source;     /* "madt", "mptable" or "none" */
/* Finds the CPUs (ACPI MADT, else the MP table) and starts up to
 * `max_cpus` (0: all) of them with INIT-SIPI-SIPI, one at a time; each
 * prints "KEEL-GUEST: cpu N up" and waits for work.  Returns the number
 * of CPUs running.  BSP only, before the workload. */
unsigned smp_init(unsigned max_cpus);
/* Runs fn(cpu, arg) on every running CPU (the BSP included, as cpu 0)
 * and returns when all have finished. */
void smp_run_all(void (*fn)(unsigned cpu, void *arg), void *arg);
/* The AP's CPL3 life: announce, then run what smp_run_all hands it. */
void smp_ap_main(unsigned cpu) __attribute__((noreturn));
uint32_t lapic_id(void);
void lapic_enable(void);
void lapic_send_ipi(uint32_t apic_id, uint32_t icr_low);
/* This CPU's LAPIC timer: LAPIC_TIMER_VECTOR every `us` microseconds
 * (taking the timer's input as 1 GHz, as KVM's and QEMU's are), a
 * watchdog tick that bounds each sleep; 0 stops it. */
void lapic_timer_periodic(uint32_t us);

/* ---- virtio-blk.c / workload.c (the block workload) ------------------------ */
int run_block_test(const char *test);

#endif
