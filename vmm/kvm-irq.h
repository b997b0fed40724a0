/*
 * vmm/kvm-irq.h — interrupts (kvm-irq.c).  Included through vmm/kvm.h.
 *
 * The in-kernel irqchip (two 8259 PICs and a 24-pin IOAPIC) owns GSIs
 * 0-23: GSI 0-15 reach both PICs and the IOAPIC, 16-23 the IOAPIC only.
 * Devices raise a line with vm_set_irq_line(), or hand KVM an eventfd
 * (irqfd, with a resample fd for level-triggered INTx).  MSIs go through
 * KVM_SIGNAL_MSI, or through an MSI route (a GSI ≥ 24 whose message KVM
 * sends when its irqfd fires).  KVM_SET_GSI_ROUTING replaces the whole
 * table, so vm_msi_route_commit() re-adds the irqchip pins each time.
 * vm_set_ioeventfd() is here too: the other eventfd KVM takes (a guest
 * write to an address signals it, without a vCPU exit).
 *
 * The IRQ allocator (KvmIrqAllocator) is the bookkeeping of who uses which
 * GSI: legacy lines are claimed by name (a fixed ISA line, exclusive or
 * shared; PCI INTx lines handed out round-robin and shared, as
 * level-triggered lines may be), MSI route GSIs are allocated from 24 up to
 * KVM's routing limit and freed.  It is pure (no ioctl), so the unit tests
 * check it without KVM.  One lives in each Vm (KVM's GSI numbers are per
 * VM); the machine (vmm/machine.h) is the interface devices use.
 *
 * Ownership: the Vm owns its allocator and MSI route table (freed by
 * vm_destroy); callers own the eventfds they pass.
 * Thread rules: vm_set_irq_line and vm_signal_msi from any thread;
 * vm_set_ioeventfd, vm_set_irqfd, vm_msi_route_* and the allocator under
 * the global mutex (main thread or a vCPU's exit).  kvm_irq_* functions on
 * an allocator of the caller's own: any thread.
 */
#ifndef KEEL_VMM_KVM_IRQ_H
#define KEEL_VMM_KVM_IRQ_H

#ifndef KEEL_VMM_KVM_H
#error "include vmm/kvm.h, which includes vmm/kvm-irq.h"
#endif

#define KVM_IRQ_NR_PINS     24u     /* the IOAPIC's pins: GSIs 0-23 */
#define KVM_IRQ_MAX_GSI     4096u   /* KVM_MAX_IRQ_ROUTES: the allocator's ceiling */

typedef struct KvmIrqAllocator {
    /* Legacy lines: the first claimer's name (NULL: free), how many share
     * it, and whether it may be shared (level-triggered). */
    const char *line_owner[KVM_IRQ_NR_PINS];
    uint16_t line_users[KVM_IRQ_NR_PINS];
    bool line_shared[KVM_IRQ_NR_PINS];
    unsigned next_intx;             /* round-robin position in the INTx lines */
    /* MSI route GSIs [KVM_IRQ_NR_PINS, nr_gsis): a bit per GSI. */
    unsigned nr_gsis;               /* 0 (zero-initialised): no MSI routes */
    uint64_t gsi_used[KVM_IRQ_MAX_GSI / 64];
} KvmIrqAllocator;

/* The PCI INTx lines kvm_irq_alloc_intx() hands out, in order, as a PC's
 * interrupt router would (PIRQs on 10, 11, 9, 5). */
#define KVM_IRQ_INTX_LINES { 10u, 11u, 9u, 5u }

/* @nr_gsis: KVM_CAP_IRQ_ROUTING's count (0: no MSI routes; clamped to
 * KVM_IRQ_MAX_GSI).  A zeroed allocator is a valid one with no MSI routes. */
void kvm_irq_allocator_init(KvmIrqAllocator *a, int nr_gsis);
/* Claims legacy line @gsi for @owner (a name kept by pointer: it must
 * outlive the claim).  @shared: level-triggered, may share with other
 * shared claims.  0, -EINVAL (no such pin) or -EBUSY (claimed exclusively,
 * or shared vs exclusive). */
int kvm_irq_claim_line(KvmIrqAllocator *a, unsigned gsi, const char *owner, bool shared);
/* Drops one claim of @gsi. */
void kvm_irq_release_line(KvmIrqAllocator *a, unsigned gsi);
/* The next PCI INTx line (KVM_IRQ_INTX_LINES, round-robin, skipping lines
 * claimed exclusively), claimed shared for @owner; -EBUSY if none. */
int kvm_irq_alloc_intx(KvmIrqAllocator *a, const char *owner);
/* Who claimed @gsi first, or NULL. */
const char *kvm_irq_line_owner(const KvmIrqAllocator *a, unsigned gsi);
/* The lowest free MSI route GSI (≥ 24), now used; -ENOSPC when KVM's
 * routing table is full (or there is none). */
int kvm_irq_alloc_gsi(KvmIrqAllocator *a);
void kvm_irq_free_gsi(KvmIrqAllocator *a, int gsi);

/* Interrupts: a GSI line level (in-kernel irqchip), one MSI. */
int vm_set_irq_line(Vm *vm, uint32_t gsi, int level);
int vm_signal_msi(Vm *vm, uint64_t addr, uint32_t data);    /* -ENOTSUP: fall back */

/* ioeventfd / irqfd, each -ENOTSUP when the fallback applies. */
int vm_set_ioeventfd(Vm *vm, uint64_t addr, unsigned len, bool is_pio,
                     bool datamatch, uint64_t data, int fd, bool assign);
int vm_set_irqfd(Vm *vm, uint32_t gsi, int fd, int resample_fd, bool assign);

/* MSI routes for irqfd: add returns a GSI (≥ 24, from vm->irqs) or -errno;
 * update changes the message; remove frees the GSI; commit installs
 * irqchip routes + MSI routes (KVM replaces the whole table, so the default
 * irqchip pins are re-added each time).  Add, update and remove change the
 * table only: commit makes KVM see it. */
int vm_msi_route_add(Vm *vm, uint64_t addr, uint32_t data);
int vm_msi_route_update(Vm *vm, int gsi, uint64_t addr, uint32_t data);
int vm_msi_route_remove(Vm *vm, int gsi);
int vm_msi_route_commit(Vm *vm);

#endif
