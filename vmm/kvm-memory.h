/*
 * vmm/kvm-memory.h — guest RAM (kvm-memory.c).  Included through
 * vmm/kvm.h.
 *
 * Guest RAM is one host mapping (a memfd, so it can be shared later; an
 * anonymous mapping when memfd_create is refused), 2 MiB aligned with
 * transparent huge pages asked for, split into two KVM slots around the PCI
 * hole [3 GiB, 4 GiB) when it is larger than 3 GiB.  vm_create() maps it
 * (the choice is the "guest-ram" feature and the ram= word of the start-up
 * line); vm_destroy() unmaps it.
 *
 * Ownership: the Vm owns the mapping, its fd and the slot table
 * (Vm.ram, Vm.ram_fd, Vm.slots).  Host pointers from vm_gpa_to_hva() stay
 * valid until vm_destroy().
 * Thread rules: vm_gpa_to_hva() from any thread (the slots never change
 * after vm_create); the rest is vm_create/vm_destroy's (main thread).
 */
#ifndef KEEL_VMM_KVM_MEMORY_H
#define KEEL_VMM_KVM_MEMORY_H

#ifndef KEEL_VMM_KVM_H
#error "include vmm/kvm.h, which includes vmm/kvm-memory.h"
#endif

/* What backs guest RAM.  VM_RAM_AUTO: a memfd, unless this kernel gives
 * transparent huge pages to anonymous memory but not to shmem (Debian's
 * default), where the memfd would cost large I/O a third of its speed (each
 * 1 MiB O_DIRECT request pins 256 small pages instead of one huge one).
 * Either way the mapping is 2 MiB aligned and asks for huge pages. */
typedef enum VmRamBacking {
    VM_RAM_AUTO,
    VM_RAM_ANONYMOUS,       /* -object memory-backend-ram */
    VM_RAM_MEMFD,           /* -object memory-backend-memfd: shareable; fails with a
                               message where memfd_create is refused or avoided
                               (only VM_RAM_AUTO falls back to anonymous) */
} VmRamBacking;

/* One KVM memory slot: guest-physical [gpa, gpa+size) at host hva. */
typedef struct VmRamSlot {
    uint64_t gpa;
    uint64_t size;
    uint8_t *hva;
} VmRamSlot;

/* Host pointer for [gpa, gpa+len) if it lies inside one RAM slot, else NULL. */
void *vm_gpa_to_hva(Vm *vm, uint64_t gpa, uint64_t len);

#endif
