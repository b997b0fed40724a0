/*
 * vmm/kvm.h — the KVM virtual machine, in five parts, each with its own
 * header (included here) stating its contract:
 *
 *   vmm/kvm-caps.h    capabilities, their seams and fallbacks, the kvm_pvm
 *                     quirk, the features report            (kvm-caps.c)
 *   vmm/kvm-memory.h  guest RAM: backing, slots, gpa → hva   (kvm-memory.c)
 *   vmm/kvm-irq.h     IRQ lines, MSIs, irqfd/ioeventfd, GSI routing, the
 *                     IRQ allocator                          (kvm-irq.c)
 *   vmm/kvm-vcpu.h    vCPUs: creation, KVM_RUN and exit dispatch,
 *                     kick, park/unpark                      (kvm-vcpu.c)
 *   this file         the Vm: /dev/kvm and the VM fd, the in-kernel
 *                     irqchip and PIT, the stop request       (kvm.c)
 *
 * Stopping.  vm_request_stop() records the first reason and exit status and
 * calls the VM's on_stop hook (main() wakes its loop there); every vCPU
 * leaves its run loop once a stop is recorded.
 *
 * Ownership: the Vm owns its fds, RAM, buses and IRQ allocator;
 * vm_destroy() releases them after every vCPU thread has been joined.  The
 * machine (vmm/machine.h) owns the vCPUs and hands out IRQ lines.
 *
 * Thread rules: vm_create/vm_destroy from the main thread before or after
 * the vCPU threads run; vm_request_stop and vm_stop_reason from any thread.
 * Each part header says the rest.
 */
#ifndef KEEL_VMM_KVM_H
#define KEEL_VMM_KVM_H

#include "vmm/bus.h"
#include "vmm/topology.h"
#include "compat/avoid.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

typedef struct Vm Vm;
typedef struct Vcpu Vcpu;

#include "vmm/kvm-caps.h"
#include "vmm/kvm-memory.h"
#include "vmm/kvm-irq.h"
#include "vmm/kvm-vcpu.h"

/* Guest-physical layout (the PC shape Linux and multiboot guests expect). */
#define VM_PCI_HOLE_START   0xC0000000ull   /* 3 GiB: RAM above goes to 4 GiB+ */
#define VM_PCI_MMIO_START   0xC0000000ull   /* BARs are assigned from here ... */
#define VM_PCI_MMIO_END     0xFEC00000ull   /* ... up to the IOAPIC */
#define VM_HIGH_RAM_START   0x100000000ull
#define VM_IDENTITY_MAP_ADDR 0xFFFBC000ull  /* one page, for VMX real mode */
#define VM_TSS_ADDR         0xFFFBD000ull   /* three pages */

/* Why the VM stopped; the first request wins. */
typedef enum VmStopReason {
    VM_STOP_NONE,
    VM_STOP_DEBUG_EXIT,     /* guest wrote port 0xf4 */
    VM_STOP_RESET,          /* guest reset (i8042 0xFE, 0xCF9) */
    VM_STOP_POWEROFF,       /* ACPI S5 (PM1a control SLP_EN) */
    VM_STOP_SIGNAL,         /* SIGTERM/SIGINT/SIGHUP */
    VM_STOP_TRIPLE_FAULT,   /* KVM_EXIT_SHUTDOWN */
    VM_STOP_ERROR,          /* internal error, failed entry, unexpected exit */
} VmStopReason;

struct Vm {
    int kvm_fd;
    int vm_fd;
    int vcpu_mmap_size;
    const KvmCaps *caps;

    /* Guest RAM (kvm-memory.h): one host mapping, up to two slots. */
    int ram_fd;             /* memfd, or -1 for anonymous memory */
    char ram_desc[32];      /* "memfd", "anonymous+thp", ...: the start-up line */
    uint8_t *ram;
    uint64_t ram_size;
    VmRamSlot slots[2];
    int nr_slots;
    uint64_t low_ram_end;   /* end of RAM below 4 GiB */

    Bus pio_bus;
    Bus mmio_bus;

    /* Stop request: written once (the first caller wins), read anywhere. */
    int stop_reason;        /* VmStopReason, atomic */
    int exit_status;
    void (*on_stop)(void *opaque);
    void *on_stop_opaque;

    /* Interrupts (kvm-irq.h): who uses which GSI, and the MSI routes added
     * by vm_msi_route_add (kept so the table can be rebuilt). */
    KvmIrqAllocator irqs;
    struct kvm_irq_routing_entry *msi_routes;
    int nr_msi_routes;

    /* The CPU topology (-smp) the vCPUs are made for: vCPU index i has
     * APIC ID topo_apic_id(&topo, i); set by vm_set_topology. */
    CpuTopology topo;
};

/* Creates the VM (RAM of @ram_size bytes backed as @backing asks, irqchip,
 * PIT, TSS, identity map).  Prints one "keel-vmm: ..." line and returns -1
 * on failure. */
int vm_create(Vm *vm, uint64_t ram_size, VmRamBacking backing);
void vm_destroy(Vm *vm);

/* Records the stop (first caller wins) and calls on_stop.  Any thread. */
void vm_request_stop(Vm *vm, VmStopReason reason, int exit_status);
VmStopReason vm_stop_reason(Vm *vm);

#endif
