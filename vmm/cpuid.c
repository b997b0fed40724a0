/*
 * The guest's CPUID: what KVM_GET_SUPPORTED_CPUID offers (host features KVM
 * can virtualise, plus KVM's own paravirtual leaves at 0x40000000, which
 * give Linux kvmclock and so its TSC frequency), adjusted for a one-vCPU
 * machine and for host quirks.  Each quirk is documented where applied.
 */
#include "config.h"

#include "vmm/kvm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define CPUID_1_ECX_CX16        (1u << 13)
#define CPUID_1_ECX_HYPERVISOR  (1u << 31)
#define CPUID_1_EDX_HTT         (1u << 28)

static struct kvm_cpuid2 *get_supported_cpuid(int kvm_fd)
{
    int nent = 128;

    for (;;) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
        if (!c) {
            return NULL;
        }
        c->nent = (uint32_t)nent;
        if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
            return c;
        }
        free(c);
        if (errno != E2BIG || nent >= 4096) {
            return NULL;
        }
        nent *= 2;
    }
}

int vcpu_setup_cpuid(Vcpu *vcpu)
{
    Vm *vm = vcpu->vm;
    struct kvm_cpuid2 *c = get_supported_cpuid(vm->kvm_fd);
    uint32_t apic_id = (uint32_t)vcpu->id;

    if (!c) {
        fprintf(stderr, "keel-vmm: KVM_GET_SUPPORTED_CPUID: %s\n", strerror(errno));
        return -1;
    }
    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];

        switch (e->function) {
        case 1:
            /* Initial APIC ID in EBX[31:24]; one logical CPU per package
             * (EBX[23:16]) and no HTT, since we have one vCPU. */
            e->ebx = (e->ebx & 0x0000ffffu) | (apic_id << 24) | (1u << 16);
            e->edx &= ~CPUID_1_EDX_HTT;
            /* Tell the guest it is virtualised (Linux then looks for the
             * KVM leaves and uses kvmclock). */
            e->ecx |= CPUID_1_ECX_HYPERVISOR;
            /* kvm_pvm quirk: guest CPL0 code is run by KVM's instruction
             * emulator on such hosts, and the emulator has no CMPXCHG16B.
             * A Linux guest that sees CX16 uses it (this_cpu_cmpxchg_double
             * in SLUB) and dies with KVM_EXIT_INTERNAL_ERROR; without CX16
             * it takes its fallback path. */
            if (vm->caps->pvm_host) {
                e->ecx &= ~CPUID_1_ECX_CX16;
            }
            break;
        case 4:
            /* Deterministic cache parameters: one core and one thread share
             * each cache (EAX[31:26] = cores-1, EAX[25:14] = threads-1). */
            e->eax &= 0x00003fffu;
            break;
        case 0xb:
        case 0x1f:
            /* Extended topology: x2APIC ID of this vCPU in EDX; one thread
             * per core and one core per package. */
            e->edx = apic_id;
            if ((e->ecx & 0xff00) != 0) {   /* a valid level */
                e->ebx = 1;
                e->eax = 0;
            }
            break;
        default:
            break;
        }
    }
    if (ioctl(vcpu->fd, KVM_SET_CPUID2, c) < 0) {
        fprintf(stderr, "keel-vmm: KVM_SET_CPUID2: %s\n", strerror(errno));
        free(c);
        return -1;
    }
    free(c);
    return 0;
}
