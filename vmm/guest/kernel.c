/*
 * vmm/guest/kernel.c — the guest's CPL0 half: TSS, IDT, trap/IRQ handlers,
 * system calls, and the drop to user mode.
 *
 * Everything here runs at CPL0, which kvm_pvm hosts emulate instruction by
 * instruction, so the code is kept short and loop-free where it can be: the
 * IDT gets only the vectors we use (0-0x41 and 0x80), handlers do the minimum
 * (count, ack, EOI) and the user program does the rest.
 *
 * Unexpected exceptions (either CPL) print the vector, error code, RIP and
 * a few registers on COM1, a RESULT line, and exit with EXIT_CRASH.
 *
 * What kvm_pvm hosts taught us (each is handled so the same code also runs
 * on real KVM, TCG and keel-vmm):
 *   - CPL3 gets no IOPL (RFLAGS.IOPL reads 0 there), but the TSS I/O bitmap
 *     is honoured: the TSS carries an all-zero bitmap.
 *   - a user-mode `int $0x80` arrives as #UD at the instruction, and
 *     `syscall` runs its target without leaving user mode: #UD on "cd 80"
 *     from CPL3 is treated as the system call.
 *   - `mov %cs` reads host selectors, so the trap frame's CS is the truth.
 *   - the instruction emulator cannot deliver int3 through an empty IDT
 *     (internal error): the triple fault uses ud2.
 */
#include "config.h"

#include "vmm/guest/guest.h"

struct trap_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;           /* pushed by the CPU */
};

struct tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
    uint8_t iomap[8192 + 1];     /* all zero = every port allowed; 0xff end */
} __attribute__((packed));

struct idt_gate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attr;
    uint16_t offset_mid;
    uint32_t offset_high;
    uint32_t reserved;
} __attribute__((packed));

#define GATE_INTERRUPT_DPL0 0x8e
#define GATE_INTERRUPT_DPL3 0xee

/* Written by boot.S before the BSS could be trusted, so it lives in .data. */
struct boot_state boot_state __attribute__((section(".data"))) = { 0, 0 };
struct irq_state irq_state;
volatile unsigned kernel_depth[GUEST_MAX_CPUS] = { 1 };

/* What each CPU's CPL0 side owns.  A trap's frame lies on the CPU's
 * kernel or IST stack, inside its struct, so the frame's address says
 * which CPU took it (cpu_of_frame) without a per-CPU register. */
struct cpu_kernel {
    struct tss64 tss;
    uint64_t gdt[7];                     /* a copy of boot.S's, own TSS */
    uint8_t ist_double_fault_stack[4096] __attribute__((aligned(16)));
    uint8_t ist_nmi_stack[4096] __attribute__((aligned(16)));
    uint8_t stack[16384] __attribute__((aligned(16)));
};

static struct cpu_kernel cpu_kernel[GUEST_MAX_CPUS] __attribute__((aligned(16)));
static struct idt_gate idt[256] __attribute__((aligned(16)));
static uint8_t user_stack[GUEST_MAX_CPUS][65536] __attribute__((aligned(16)));

void trap_dispatch(struct trap_frame *f);


static void set_gate(unsigned vector, const void *handler, uint8_t type_attr,
                     uint8_t ist)
{
    uint64_t a = (uint64_t)handler;
    struct idt_gate *g = &idt[vector];

    g->offset_low = (uint16_t)a;
    g->selector = KERNEL_CS;
    g->ist = ist;
    g->type_attr = type_attr;
    g->offset_mid = (uint16_t)(a >> 16);
    g->offset_high = (uint32_t)(a >> 32);
    g->reserved = 0;
}

uint64_t kernel_stack_top(unsigned cpu)
{
    return (uint64_t)(cpu_kernel[cpu].stack + sizeof(cpu_kernel[cpu].stack));
}

static unsigned cpu_of_frame(const struct trap_frame *f)
{
    uint64_t a = (uint64_t)f, base = (uint64_t)cpu_kernel;

    if (a < base || a >= base + sizeof(cpu_kernel)) {
        return 0;                        /* the BSP's boot stack */
    }
    return (unsigned)((a - base) / sizeof(struct cpu_kernel));
}

/* Loads @gdt (with the TSS descriptor for CPU @cpu's TSS) and the TSS.
 * The TSS gives the stacks for entries from CPL3 (RSP0) and for the faults
 * that must not trust the current stack (IST).  Its I/O bitmap allows
 * every port at CPL3: IOPL=3 would do on hardware, but kvm_pvm does not
 * give CPL3 an IOPL, while it does honour the bitmap. */
static void load_cpu_tables(unsigned cpu, uint64_t *gdt_table, unsigned gdt_entries)
{
    struct cpu_kernel *ck = &cpu_kernel[cpu];
    struct tss64 *tss = &ck->tss;
    uint64_t base = (uint64_t)tss;
    uint64_t limit = sizeof(*tss) - 1;
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) gdtr = { (uint16_t)(8 * gdt_entries - 1), (uint64_t)gdt_table },
      idtr = { sizeof(idt) - 1, (uint64_t)idt };

    tss->rsp[0] = kernel_stack_top(cpu);
    tss->ist[0] = (uint64_t)(ck->ist_double_fault_stack + sizeof(ck->ist_double_fault_stack));
    tss->ist[1] = (uint64_t)(ck->ist_nmi_stack + sizeof(ck->ist_nmi_stack));
    tss->iomap_base = offsetof(struct tss64, iomap);
    tss->iomap[8192] = 0xff;
    gdt_table[TSS_SEL / 8] = (limit & 0xffff) | ((base & 0xffffff) << 16) |
                             (0x89ull << 40) | (((limit >> 16) & 0xf) << 48) |
                             (((base >> 24) & 0xff) << 56);
    gdt_table[TSS_SEL / 8 + 1] = base >> 32;
    __asm__ volatile("lgdt %0" : : "m"(gdtr));
    __asm__ volatile("ltr %w0" : : "r"(TSS_SEL));
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

void kernel_main(void)
{
    for (unsigned v = 0; v < NR_TRAP_STUBS; v++) {
        uint8_t ist = v == 8 ? 1 : (v == 2 || v == 18) ? 2 : 0;
        set_gate(v, isr_stubs + 16 * v, GATE_INTERRUPT_DPL0, ist);
    }
    set_gate(0x80, isr_syscall, GATE_INTERRUPT_DPL3, 0);
    set_gate(SPURIOUS_VECTOR, isr_spurious, GATE_INTERRUPT_DPL0, 0);
    /* The BSP keeps boot.S's GDT (7 entries: null, 4 segments, TSS). */
    load_cpu_tables(0, gdt, 7);

    serial_init();

    /* The rest runs at CPL3 (IOPL=3 where the VMM honours it), IF=0. */
    kernel_depth[0] = 0;
    enter_user(user_main, (uint64_t)(user_stack[0] + sizeof(user_stack[0])),
               RFLAGS_IOPL3 | 2, 0);
}

void ap_kernel_main(unsigned cpu)
{
    struct cpu_kernel *ck = &cpu_kernel[cpu];

    kernel_depth[cpu] = 1;
    memcpy(ck->gdt, gdt, 5 * sizeof(uint64_t));     /* the segments */
    load_cpu_tables(cpu, ck->gdt, 7);
    kernel_depth[cpu] = 0;
    enter_user(smp_ap_main, (uint64_t)(user_stack[cpu] + sizeof(user_stack[cpu])),
               RFLAGS_IOPL3 | 2, cpu);
}

static const char *const exception_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
    "#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "?15",
    "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "?22", "?23",
    "?24", "?25", "?26", "?27", "#HV", "#VC", "#SX", "?31",
};

static void __attribute__((noreturn)) fatal_exception(struct trap_frame *f)
{
    uint64_t cr2;

    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    kprintf("\nKEEL-GUEST: EXCEPTION %s vector=%lu error=0x%lx rip=0x%lx cs=0x%lx "
            "cpl=%lu rsp=0x%lx rflags=0x%lx cr2=0x%lx\n",
            exception_names[f->vector & 31], f->vector, f->error, f->rip,
            f->cs, f->cs & 3, f->rsp, f->rflags, cr2);
    kprintf("KEEL-GUEST: regs rax=0x%lx rbx=0x%lx rcx=0x%lx rdx=0x%lx rsi=0x%lx "
            "rdi=0x%lx rbp=0x%lx\n",
            f->rax, f->rbx, f->rcx, f->rdx, f->rsi, f->rdi, f->rbp);
    kprintf("KEEL-GUEST: RESULT status=fail reason=exception vector=%lu rip=0x%lx\n",
            f->vector, f->rip);
    guest_exit(EXIT_CRASH);
}

static void handle_irq(struct trap_frame *f, unsigned irq)
{
    volatile uint8_t *ack = irq_state.ack_mmio8[irq];

    if (ack) {
        irq_state.ack_value[irq] |= *ack;
    }
    if (irq >= 8) {
        outb(0xa0, 0x20);
    }
    outb(0x20, 0x20);
    atomic_inc64(&irq_state.count[irq]);
    irq_state.last_cs = f->cs;
}

/* MSI-X vectors, the wake-up IPI and the LAPIC timer: count, EOI. */
static void handle_lapic_vector(unsigned vector)
{
    if (vector >= MSI_VECTOR_BASE && vector < MSI_VECTOR_BASE + MSI_VECTORS) {
        atomic_inc64(&irq_state.msi_count[vector - MSI_VECTOR_BASE]);
    }
    *(volatile uint32_t *)0xfee000b0ul = 0;           /* LAPIC EOI */
}

static void triple_fault(void)
{
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) empty = { 0, 0 };

    /* ud2 with an empty IDT: #UD cannot be delivered → #DF cannot be
     * delivered → shutdown.  (Not int3: kvm_pvm cannot emulate a software
     * interrupt at CPL0 and stops with an internal error instead.) */
    __asm__ volatile("lidt %0; ud2" : : "m"(empty));
}

static uint64_t handle_syscall(struct trap_frame *f)
{
    switch (f->rax) {
    case SYS_INFO:
        return KERNEL_CS | (f->cs << 16);
    case SYS_WAIT_IRQ: {
        uint64_t seen = f->rdi;
        volatile uint64_t *mine = &irq_state.cpu_total[cpu_of_frame(f)];
        /* sti's one-instruction shadow means no interrupt slips in between
         * it and hlt, so this cannot sleep through a wake-up.  (CPL3 runs
         * with IF=0: what arrived since the caller read its count is
         * still pending and is taken right after sti.) */
        do {
            __asm__ volatile("sti; hlt; cli" ::: "memory");
        } while (*mine == seen);
        return *mine;
    }
    case SYS_FLUSH_TLB: {
        uint64_t cr3;
        __asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
        return 0;
    }
    case SYS_TRIPLE_FAULT:
        triple_fault();
        return ~0ull;
    case SYS_SET_IRQ_ACK:
        if (f->rdi >= 16) {
            return ~0ull;
        }
        irq_state.ack_mmio8[f->rdi] = (volatile uint8_t *)f->rsi;
        return 0;
    case SYS_SET_IF: {
        uint64_t was = !!(f->rflags & RFLAGS_IF);
        f->rflags = f->rdi ? (f->rflags | RFLAGS_IF) : (f->rflags & ~(uint64_t)RFLAGS_IF);
        return was;
    }
    case SYS_HALT:
        for (;;) {
            __asm__ volatile("cli; hlt");
        }
    default:
        return ~0ull;
    }
}

/* Did CPL3 execute `int $0x80` and get #UD for it (kvm_pvm)? */
static bool is_emulated_int80(const struct trap_frame *f)
{
    const uint8_t *insn = (const uint8_t *)f->rip;

    return f->vector == 6 && (f->cs & 3) == 3 && f->rip >= 0x100000 &&
           f->rip < (uint64_t)__image_end && insn[0] == 0xcd && insn[1] == 0x80;
}

void trap_dispatch(struct trap_frame *f)
{
    unsigned cpu = cpu_of_frame(f);

    kernel_depth[cpu]++;
    if (f->vector >= 32 && f->vector < NR_TRAP_STUBS) {
        atomic_inc64(&irq_state.total);
        atomic_inc64(&irq_state.cpu_total[cpu]);
    }
    if (f->vector == 0x80) {
        f->rax = handle_syscall(f);
    } else if (is_emulated_int80(f)) {
        f->rip += 2;
        f->rax = handle_syscall(f);
    } else if (f->vector >= 32 && f->vector < 48) {
        handle_irq(f, f->vector - 32);
    } else if (f->vector >= 48 && f->vector < NR_TRAP_STUBS) {
        handle_lapic_vector(f->vector);
    } else if (f->vector == 2) {
        kprintf("KEEL-GUEST: NMI at rip=0x%lx (ignored)\n", f->rip);
    } else {
        fatal_exception(f);
    }
    kernel_depth[cpu]--;
}
