/*
 * vmm/guest/boot.S — multiboot v1 header, the 32-bit entry, long-mode
 * switch, prebuilt identity page tables, GDT, and the trap stubs.
 *
 * Why the tables are data: on kvm_pvm hosts each CPL0 instruction costs
 * ~2 us, so nothing here loops.  The identity map of the first 4 GiB (2 MiB
 * pages, user-accessible so the CPL3 program can touch RAM, MMIO and even
 * these tables) is assembled at link time; the last GiB (PCI hole, LAPIC,
 * IOAPIC) is mapped uncached.
 *
 * Entry state (multiboot v1): 32-bit protected mode, paging off, EAX =
 * 0x2BADB002, EBX = physical address of the multiboot info, CS/DS flat,
 * interrupts off, no valid stack.
 */
#include "config.h"

#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003      /* bit 0: align modules, bit 1: memory map */

#define CR0_PE   0x00000001
#define CR0_PG   0x80000000
#define CR4_PAE  0x00000020
#define MSR_EFER 0xC0000080
#define EFER_LME 0x00000100

#define KERNEL_CS 0x08
#define KERNEL_DS 0x10
#define AP_TRAMPOLINE_ADDR 0x70000      /* guest.h */

#define PTE_P    0x001
#define PTE_RW   0x002
#define PTE_US   0x004
#define PTE_PWT  0x008
#define PTE_PCD  0x010
#define PTE_PS   0x080

        .section .multiboot, "a"
        .balign 4
multiboot_header:
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)

/* Long mode: flat kernel data in DS/ES/SS, null FS/GS. */
.macro KERNEL_DATA_SEGMENTS
        movl $KERNEL_DS, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        xorl %eax, %eax
        movl %eax, %fs
        movl %eax, %gs
.endm

/* ---- 32-bit entry ---------------------------------------------------------- */
        .section .text.boot, "ax"
        .code32
        .globl multiboot_entry
multiboot_entry:
        cli
        cld
        movl %eax, boot_state           /* boot_state.magic */
        movl %ebx, boot_state + 4       /* boot_state.info */
        lgdt gdt_pointer                /* reads limit + low 32 bits of base */
        movl $KERNEL_DS, %ecx
        movl %ecx, %ds
        movl %ecx, %es
        movl %ecx, %ss
        movl $boot_stack_top, %esp
        movl %cr4, %ecx
        orl $CR4_PAE, %ecx
        movl %ecx, %cr4
        movl $pml4, %ecx
        movl %ecx, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $EFER_LME, %eax
        wrmsr
        movl %cr0, %ecx
        orl $(CR0_PG | CR0_PE), %ecx
        movl %ecx, %cr0
        ljmp $KERNEL_CS, $long_mode_entry

        .code64
long_mode_entry:
        lgdt gdt_pointer                /* again, now with the 64-bit base */
        KERNEL_DATA_SEGMENTS
        movq $boot_stack_top, %rsp
        xorl %ebp, %ebp
        call kernel_main
1:      hlt
        jmp 1b

/* void enter_user(void (*fn)(unsigned), uint64_t stack_top, uint64_t rflags,
 *                 uint64_t arg): fn(arg) at CPL3 */
        .text
        .globl enter_user
enter_user:
        pushq $(0x18 | 3)               /* SS: user data */
        pushq %rsi                      /* RSP */
        pushq %rdx                      /* RFLAGS */
        pushq $(0x20 | 3)               /* CS: user code */
        pushq %rdi                      /* RIP */
        movq %rcx, %rdi                 /* fn's argument */
        iretq

/* ---- AP start-up ------------------------------------------------------------
 * The BSP copies ap_trampoline_start..ap_trampoline_end to AP_TRAMPOLINE_ADDR
 * (below 1 MiB, 4 KiB aligned: the start-up IPI's vector is its page) and
 * sends INIT-SIPI-SIPI.  The AP starts in real mode at CS = page << 8, IP 0,
 * switches to 32-bit protected mode with the trampoline's own GDT, enables
 * PAE, loads the BSP's page tables (pml4: identity map, so the jump into
 * the kernel's linked addresses just works), enables long mode and jumps to
 * ap_long_mode_entry on the kernel stack in ap_boot_rsp.  The trampoline
 * GDT puts the 64-bit code and data segments at the kernel's selectors
 * (0x08, 0x10), so nothing needs reloading when ap_kernel_main switches to
 * the CPU's own GDT.  All of it runs once per AP, loop-free: on kvm_pvm
 * hosts CPL0 (and real mode) is emulated. */
#define TRAMP(sym) ((sym) - ap_trampoline_start + AP_TRAMPOLINE_ADDR)
#define TRAMP_CODE32 0x18

        .globl ap_trampoline_start, ap_trampoline_end
        .code16
ap_trampoline_start:
        cli
        cld
        movw %cs, %ax
        movw %ax, %ds
        lgdtl ap_tramp_gdtr - ap_trampoline_start
        movl %cr0, %eax
        orl $CR0_PE, %eax
        movl %eax, %cr0
        ljmpl $TRAMP_CODE32, $TRAMP(ap_tramp32)

        .code32
ap_tramp32:
        movl $KERNEL_DS, %eax
        movl %eax, %ds
        movl %eax, %es
        movl %eax, %ss
        movl %cr4, %eax
        orl $CR4_PAE, %eax
        movl %eax, %cr4
        movl $pml4, %eax
        movl %eax, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $EFER_LME, %eax
        wrmsr
        movl %cr0, %eax
        orl $(CR0_PG | CR0_PE), %eax
        movl %eax, %cr0
        ljmp $KERNEL_CS, $TRAMP(ap_tramp64)

        .code64
ap_tramp64:
        movq $ap_long_mode_entry, %rax  /* the kernel's linked address */
        jmp *%rax

        .balign 8
ap_tramp_gdt:
        .quad 0                         /* 0x00 null */
        .quad 0x00af9a000000ffff        /* 0x08 kernel code, 64-bit */
        .quad 0x00cf92000000ffff        /* 0x10 kernel data */
        .quad 0x00cf9a000000ffff        /* 0x18 code, 32-bit (the hop) */
ap_tramp_gdtr:
        .word ap_tramp_gdtr - ap_tramp_gdt - 1
        .long TRAMP(ap_tramp_gdt)
ap_trampoline_end:

ap_long_mode_entry:
        KERNEL_DATA_SEGMENTS
        movq ap_boot_rsp, %rsp
        movl ap_boot_cpu, %edi
        xorl %ebp, %ebp
        call ap_kernel_main
1:      hlt
        jmp 1b

/* ---- trap stubs -----------------------------------------------------------
 * Every stub is 16 bytes so the IDT set-up computes isr_stubs + 16 * vector
 * instead of reading a table.  Vectors whose exceptions push an error code
 * skip the dummy push so the frame always reads: vector, error, iret frame. */
#define ISR_NOERR(v) .balign 16; pushq $0; pushq $(v); jmp isr_common
#define ISR_ERR(v)   .balign 16; pushq $(v); jmp isr_common

        .balign 16
        .globl isr_stubs
isr_stubs:
        ISR_NOERR(0);  ISR_NOERR(1);  ISR_NOERR(2);  ISR_NOERR(3)
        ISR_NOERR(4);  ISR_NOERR(5);  ISR_NOERR(6);  ISR_NOERR(7)
        ISR_ERR(8);    ISR_NOERR(9);  ISR_ERR(10);   ISR_ERR(11)
        ISR_ERR(12);   ISR_ERR(13);   ISR_ERR(14);   ISR_NOERR(15)
        ISR_NOERR(16); ISR_ERR(17);   ISR_NOERR(18); ISR_NOERR(19)
        ISR_NOERR(20); ISR_ERR(21);   ISR_NOERR(22); ISR_NOERR(23)
        ISR_NOERR(24); ISR_NOERR(25); ISR_NOERR(26); ISR_NOERR(27)
        ISR_NOERR(28); ISR_ERR(29);   ISR_ERR(30);   ISR_NOERR(31)
        ISR_NOERR(32); ISR_NOERR(33); ISR_NOERR(34); ISR_NOERR(35)
        ISR_NOERR(36); ISR_NOERR(37); ISR_NOERR(38); ISR_NOERR(39)
        ISR_NOERR(40); ISR_NOERR(41); ISR_NOERR(42); ISR_NOERR(43)
        ISR_NOERR(44); ISR_NOERR(45); ISR_NOERR(46); ISR_NOERR(47)
        /* MSI-X vectors 0x30-0x3f, the wake-up IPI, the LAPIC timer */
        ISR_NOERR(48); ISR_NOERR(49); ISR_NOERR(50); ISR_NOERR(51)
        ISR_NOERR(52); ISR_NOERR(53); ISR_NOERR(54); ISR_NOERR(55)
        ISR_NOERR(56); ISR_NOERR(57); ISR_NOERR(58); ISR_NOERR(59)
        ISR_NOERR(60); ISR_NOERR(61); ISR_NOERR(62); ISR_NOERR(63)
        ISR_NOERR(64); ISR_NOERR(65)

        .balign 16
        .globl isr_syscall
isr_syscall:
        pushq $0
        pushq $0x80
        jmp isr_common

/* LAPIC spurious interrupts need no EOI and change nothing. */
        .balign 16
        .globl isr_spurious
isr_spurious:
        iretq

/* Saves the general registers (struct trap_frame in kernel.c), calls
 * trap_dispatch(frame), restores and returns.  The interrupted context's
 * RAX is in the frame, so a system call's result is written there. */
isr_common:
        pushq %rax
        pushq %rbx
        pushq %rcx
        pushq %rdx
        pushq %rsi
        pushq %rdi
        pushq %rbp
        pushq %r8
        pushq %r9
        pushq %r10
        pushq %r11
        pushq %r12
        pushq %r13
        pushq %r14
        pushq %r15
        cld
        movq %rsp, %rdi
        call trap_dispatch
        popq %r15
        popq %r14
        popq %r13
        popq %r12
        popq %r11
        popq %r10
        popq %r9
        popq %r8
        popq %rbp
        popq %rdi
        popq %rsi
        popq %rdx
        popq %rcx
        popq %rbx
        popq %rax
        addq $16, %rsp                  /* vector and error code */
        iretq

/* ---- data: GDT and page tables ------------------------------------------- */
        .data
        .balign 16
        .globl gdt
gdt:
        .quad 0                         /* 0x00 null */
        .quad 0x00af9a000000ffff        /* 0x08 kernel code, 64-bit */
        .quad 0x00cf92000000ffff        /* 0x10 kernel data */
        .quad 0x00cff2000000ffff        /* 0x18 user data (DPL 3) */
        .quad 0x00affa000000ffff        /* 0x20 user code, 64-bit (DPL 3) */
        .quad 0, 0                      /* 0x28 TSS, filled by kernel_main */
gdt_end:
        .balign 8
        .word 0                         /* so the base below is 8-aligned */
gdt_pointer:
        .word gdt_end - gdt - 1
        .quad gdt

        .balign 8
        .globl ap_boot_rsp, ap_boot_cpu
ap_boot_rsp:                            /* set by the BSP before each SIPI */
        .quad 0
ap_boot_cpu:
        .long 0

        .section .data.pagetables, "aw"
        .balign 4096
        .globl pml4
pml4:
        .quad pdpt_low + (PTE_P | PTE_RW | PTE_US)
        .fill 511, 8, 0
        .globl pdpt_low
pdpt_low:
        .quad pd_identity + 0x0000 + (PTE_P | PTE_RW | PTE_US)
        .quad pd_identity + 0x1000 + (PTE_P | PTE_RW | PTE_US)
        .quad pd_identity + 0x2000 + (PTE_P | PTE_RW | PTE_US)
        .quad pd_identity + 0x3000 + (PTE_P | PTE_RW | PTE_US)
        .fill 508, 8, 0
pd_identity:
        i = 0
        .rept 1536                      /* 0 .. 3 GiB: RAM, write-back */
        .quad (i << 21) + (PTE_P | PTE_RW | PTE_US | PTE_PS)
        i = i + 1
        .endr
        .rept 512                       /* 3 .. 4 GiB: PCI hole, uncached */
        .quad (i << 21) + (PTE_P | PTE_RW | PTE_US | PTE_PS | PTE_PCD | PTE_PWT)
        i = i + 1
        .endr

        .bss
        .balign 4096
boot_stack:
        .skip 16384
        .globl boot_stack_top           /* also the TSS's RSP0 */
boot_stack_top:

        .section .note.GNU-stack, "", @progbits
