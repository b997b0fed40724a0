/*
 * vmm/kvm-internal.h — what the parts of the KVM layer share among
 * themselves and nobody else: the seams whose state one part reports
 * (kvm-caps.c) and another switches when an ioctl is refused (kvm-irq.c),
 * and the RAM set-up vm_create() calls.  Included by vmm/kvm*.c only.
 */
#ifndef KEEL_VMM_KVM_INTERNAL_H
#define KEEL_VMM_KVM_INTERNAL_H

#include "vmm/kvm.h"
#include "compat/avoid.h"

#define KVM_DEVICE "/dev/kvm"

/* Defined in kvm-caps.c (reported there), switched to their fallback by
 * kvm-irq.c when the kernel refuses the ioctl at run time. */
extern KeelSeam kvm_ioeventfd_seam;
extern KeelSeam kvm_irqfd_seam;
extern KeelSeam kvm_signal_msi_seam;
/* KVM_SET_GSI_ROUTING refused at run time (atomic, first errno wins). */
extern int kvm_gsi_routing_errno;

/* kvm-memory.c: VM_RAM_AUTO's choice and why (for the features report). */
VmRamBacking vm_ram_auto_choice(const char **reason);
/* kvm-memory.c: maps guest RAM as @backing asks and registers its slots
 * around the PCI hole; prints and returns -1 on failure.  vm_ram_release
 * unmaps it (vm_destroy). */
int vm_ram_init(Vm *vm, uint64_t ram_size, VmRamBacking backing);
void vm_ram_release(Vm *vm);

#endif
