/*
 * The guest's CPUID: what KVM_GET_SUPPORTED_CPUID offers (host features KVM
 * can virtualise, plus KVM's own paravirtual leaves at 0x40000000, which
 * give Linux kvmclock and so its TSC frequency), with the topology leaves
 * rewritten to match -smp (cpuid_apply_topology, pure so it is unit-tested
 * without KVM) and adjusted for host quirks, each documented where applied.
 */
#include "config.h"

#include "compat/osdep.h"
#include "vmm/kvm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

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

#define CPUID_SIG_AMD_EBX       0x68747541u     /* "Auth" (AuthenticAMD) */
#define CPUID_SIG_HYGON_EBX     0x6f677948u     /* "Hygo" (HygonGenuine) */
#define CPUID_80000001_ECX_CMP_LEGACY (1u << 1)

static struct kvm_cpuid_entry2 *find_entry(struct kvm_cpuid_entry2 *e, int n, uint32_t fn,
                                           uint32_t index)
{
    for (int i = 0; i < n; i++) {
        if (e[i].function == fn && e[i].index == index) {
            return &e[i];
        }
    }
    return NULL;
}

/* Replaces every sub-leaf of leaf @fn (0xB or 0x1F) with SMT, core and the
 * terminating invalid level, for @t and @apic_id.  Returns the new count,
 * or -1 if @max is too small. */
static int put_extended_topology(struct kvm_cpuid_entry2 *e, int n, int max, uint32_t fn,
                                 const CpuTopology *t, uint32_t apic_id)
{
    int w = 0;

    for (int i = 0; i < n; i++) {
        if (e[i].function != fn) {
            e[w++] = e[i];
        }
    }
    if (w + 3 > max) {
        return -1;
    }
    for (uint32_t level = 0; level < 3; level++) {
        struct kvm_cpuid_entry2 *x = &e[w++];

        memset(x, 0, sizeof(*x));
        x->function = fn;
        x->index = level;
        x->flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        x->edx = apic_id;
        x->ecx = level;
        if (level == 0) {           /* SMT: threads per core */
            x->eax = topo_core_shift(t);
            x->ebx = t->threads;
            x->ecx |= 1u << 8;
        } else if (level == 1) {    /* core: logical CPUs per package */
            x->eax = topo_pkg_shift(t);
            x->ebx = t->cores * t->threads;
            x->ecx |= 2u << 8;
        }                           /* level 2: type 0, the end of the list */
    }
    return w;
}

int cpuid_apply_topology(struct kvm_cpuid_entry2 *e, int n, int max, const CpuTopology *t,
                         unsigned index, bool pvm_host)
{
    uint32_t apic_id = topo_apic_id(t, index);
    unsigned per_pkg = t->cores * t->threads;
    struct kvm_cpuid_entry2 *leaf0 = find_entry(e, n, 0, 0);
    bool amd = leaf0 && (leaf0->ebx == CPUID_SIG_AMD_EBX || leaf0->ebx == CPUID_SIG_HYGON_EBX);
    bool has_0b = false, has_1f = false;

    for (int i = 0; i < n; i++) {
        struct kvm_cpuid_entry2 *x = &e[i];

        switch (x->function) {
        case 1:
            /* Initial APIC ID in EBX[31:24]; logical CPUs per package in
             * EBX[23:16] with HTT when more than one (QEMU's values). */
            x->ebx = (x->ebx & 0x0000ffffu) | (apic_id << 24) |
                     ((per_pkg > 255 ? 255 : per_pkg) << 16);
            if (per_pkg > 1) {
                x->edx |= CPUID_1_EDX_HTT;
            } else {
                x->edx &= ~CPUID_1_EDX_HTT;
            }
            /* Tell the guest it is virtualised (Linux then looks for the
             * KVM leaves and uses kvmclock). */
            x->ecx |= CPUID_1_ECX_HYPERVISOR;
            /* kvm_pvm quirk: guest CPL0 code is run by KVM's instruction
             * emulator on such hosts, and the emulator has no CMPXCHG16B.
             * A Linux guest that sees CX16 uses it (this_cpu_cmpxchg_double
             * in SLUB) and dies with KVM_EXIT_INTERNAL_ERROR; without CX16
             * it takes its fallback path. */
            if (pvm_host) {
                x->ecx &= ~CPUID_1_ECX_CX16;
            }
            break;
        case 4:
            /* Intel deterministic cache parameters: EAX[31:26] addressable
             * core IDs - 1; EAX[25:14] addressable IDs sharing the cache -
             * 1 (L1/L2: a core's threads, L3: the package). */
            if ((x->eax & 0x1f) != 0) {
                unsigned level = (x->eax >> 5) & 7;
                uint32_t sharing = level <= 2 ? (1u << topo_core_shift(t)) - 1
                                              : (1u << topo_pkg_shift(t)) - 1;
                uint32_t cores = (1u << (topo_pkg_shift(t) - topo_core_shift(t))) - 1;

                x->eax = (x->eax & 0x3fffu) | ((sharing & 0xfff) << 14) | ((cores & 0x3f) << 26);
            }
            break;
        case 0xb:
            has_0b = true;
            break;
        case 0x1f:
            has_1f = true;
            break;
        case 0x80000001:
            if (amd) {
                /* CmpLegacy: more than one logical CPU per package (the
                 * count is in 0x80000008). */
                if (per_pkg > 1) {
                    x->ecx |= CPUID_80000001_ECX_CMP_LEGACY;
                } else {
                    x->ecx &= ~CPUID_80000001_ECX_CMP_LEGACY;
                }
            }
            break;
        case 0x80000008:
            if (amd) {
                /* ECX[15:12] APIC ID bits for the package's CPUs, [7:0]
                 * their count - 1. */
                x->ecx = (x->ecx & ~0xf0ffu) | (topo_pkg_shift(t) << 12) |
                         ((per_pkg - 1) & 0xff);
            }
            break;
        case 0x8000001d:
            if (amd && (x->eax & 0x1f) != 0) {
                unsigned level = (x->eax >> 5) & 7;
                uint32_t sharing = level <= 2 ? t->threads - 1 : per_pkg - 1;

                x->eax = (x->eax & ~(0xfffu << 14)) | ((sharing & 0xfff) << 14);
            }
            break;
        case 0x8000001e:
            if (amd) {
                /* Extended APIC ID; core ID and threads per core - 1; node
                 * ID (one node per socket) and nodes per package - 1 (0). */
                x->eax = apic_id;
                x->ebx = ((apic_id >> topo_core_shift(t)) &
                          ((1u << (topo_pkg_shift(t) - topo_core_shift(t))) - 1)) |
                         ((t->threads - 1) << 8);
                x->ecx = index / per_pkg;
                x->edx = 0;
            }
            break;
        default:
            break;
        }
    }
    if (has_0b) {
        n = put_extended_topology(e, n, max, 0xb, t, apic_id);
    }
    if (has_1f && n >= 0) {
        n = put_extended_topology(e, n, max, 0x1f, t, apic_id);
    }
    return n;
}

/* Every feature that needs XSAVE-managed state or the XSAVE instructions,
 * by leaf/sub-leaf/register: what Linux's cpuid_deps drops with XSAVE, so
 * the guest's CPUID stays self-consistent for software that reads it
 * directly. */
static const struct {
    uint32_t fn, index;
    int reg;                        /* 0 eax, 1 ebx, 2 ecx, 3 edx */
    uint32_t bits;
} xsave_dependents[] = {
    /* XSAVE, OSXSAVE, AVX, FMA, F16C */
    { 1, 0, 2, (1u << 26) | (1u << 27) | (1u << 28) | (1u << 12) | (1u << 29) },
    /* AVX2, MPX, AVX512F/DQ/IFMA/PF/ER/CD/BW/VL */
    { 7, 0, 1, (1u << 5) | (1u << 14) | (1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) |
               (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31) },
    /* AVX512VBMI, PKU, OSPKE, AVX512_VBMI2, VAES, VPCLMULQDQ, AVX512_VNNI,
     * AVX512_BITALG, AVX512_VPOPCNTDQ */
    { 7, 0, 2, (1u << 1) | (1u << 3) | (1u << 4) | (1u << 6) | (1u << 9) | (1u << 10) |
               (1u << 11) | (1u << 12) | (1u << 14) },
    /* AVX512_4VNNIW/4FMAPS, VP2INTERSECT, AMX-BF16, AVX512_FP16, AMX-TILE/INT8 */
    { 7, 0, 3, (1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
               (1u << 25) },
    /* AVX-VNNI, AVX512_BF16, AVX-IFMA */
    { 7, 1, 0, (1u << 4) | (1u << 5) | (1u << 23) },
    /* AMD XOP, FMA4 */
    { 0x80000001, 0, 2, (1u << 11) | (1u << 16) },
};

int cpuid_hide_xsave(struct kvm_cpuid_entry2 *e, int n)
{
    int w = 0;

    for (int i = 0; i < n; i++) {
        struct kvm_cpuid_entry2 *x = &e[i];

        /* Leaf 0xD describes XSAVE state; without XSAVE it reads as zeros
         * (KVM answers zeros for a leaf missing under the maximum). */
        if (x->function == 0xd) {
            continue;
        }
        for (size_t k = 0; k < sizeof(xsave_dependents) / sizeof(xsave_dependents[0]); k++) {
            if (xsave_dependents[k].fn == x->function && xsave_dependents[k].index == x->index) {
                uint32_t *reg[4] = { &x->eax, &x->ebx, &x->ecx, &x->edx };
                *reg[xsave_dependents[k].reg] &= ~xsave_dependents[k].bits;
            }
        }
        e[w++] = *x;
    }
    return w;
}

/*
 * Whether this host's KVM misses a guest's XSETBV.  Seen in the project's
 * KVM lab: kvm_amd under QEMU's software CPU (-accel tcg -cpu max) never
 * gets the XSETBV intercept, so the guest's XCR0 write lands in the
 * (emulated) hardware while KVM still believes XCR0 = 1, reloads that on
 * every entry and reports CPUID 0xD.0 EBX for it.  Linux then warns "XSAVE
 * consistency problem" and oopses (7.x) or kills init with "bad frame in
 * rt_sigreturn" (5.10), under QEMU as under keel-vmm.  Three real-mode
 * instructions in a throw-away VM tell: XSETBV XCR0 = x87|SSE, HLT, then
 * KVM_GET_XCRS.  Only asked on a host that is itself a guest (the CPUID
 * hypervisor bit): bare metal has no such layer below KVM.
 */
static bool host_is_a_guest(void)
{
    uint32_t eax = 1, ebx, ecx = 0, edx;

    __asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
    return (ecx & CPUID_1_ECX_HYPERVISOR) != 0;
}

bool kvm_host_misses_xsetbv(int kvm_fd)
{
    static const unsigned char code[] = {
        0x66, 0x31, 0xc9,                       /* xor ecx, ecx   (XCR0)    */
        0x66, 0x31, 0xd2,                       /* xor edx, edx             */
        0x66, 0xb8, 0x03, 0x00, 0x00, 0x00,     /* mov eax, 3     (x87|SSE) */
        0x0f, 0x01, 0xd1,                       /* xsetbv                   */
        0xf4,                                   /* hlt                      */
    };
    enum { CODE_ADDR = 0x1000, MEM_SIZE = 0x2000 };
    bool missed = false;
    int vm = -1, vcpu = -1, run_size;
    unsigned char *mem = MAP_FAILED;
    struct kvm_run *run = MAP_FAILED;
    struct kvm_cpuid2 *c = NULL;
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    struct kvm_xcrs xcrs;
    bool has_xsave = false;

    if (!host_is_a_guest()) {
        return false;
    }
    /* Any failure below means "cannot tell": keep the guest's XSAVE. */
    c = get_supported_cpuid(kvm_fd);
    if (c) {
        struct kvm_cpuid_entry2 *leaf1 = find_entry(c->entries, (int)c->nent, 1, 0);
        has_xsave = leaf1 && (leaf1->ecx & (1u << 26));
    }
    run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    /* EINTR: a signal was pending while KVM took the mm's locks (5.10). */
    if (!has_xsave || run_size <= 0 ||
        (vm = (int)KEEL_RETRY_EINTR(ioctl(kvm_fd, KVM_CREATE_VM, 0))) < 0) {
        goto out;
    }
    mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        goto out;
    }
    memcpy(mem + CODE_ADDR, code, sizeof(code));
    {
        struct kvm_userspace_memory_region region = {
            .slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
            .userspace_addr = (uintptr_t)mem,
        };
        if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
            goto out;
        }
    }
    vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) {
        goto out;
    }
    run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    /* CR4.OSXSAVE needs XSAVE in the vCPU's CPUID first. */
    if (run == MAP_FAILED || ioctl(vcpu, KVM_SET_CPUID2, c) < 0 ||
        ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) {
        goto out;
    }
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.cr4 |= 1u << 18;                      /* OSXSAVE */
    memset(&regs, 0, sizeof(regs));
    regs.rip = CODE_ADDR;
    regs.rflags = 2;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &regs) < 0 ||
        KEEL_RETRY_EINTR(ioctl(vcpu, KVM_RUN, 0)) < 0 || run->exit_reason != KVM_EXIT_HLT) {
        goto out;
    }
    memset(&xcrs, 0, sizeof(xcrs));
    if (ioctl(vcpu, KVM_GET_XCRS, &xcrs) < 0) {
        goto out;
    }
    for (uint32_t i = 0; i < xcrs.nr_xcrs; i++) {
        if (xcrs.xcrs[i].xcr == 0) {
            missed = xcrs.xcrs[i].value != 3;
        }
    }
out:
    if (run != MAP_FAILED) {
        munmap(run, (size_t)run_size);
    }
    if (vcpu >= 0) {
        close(vcpu);
    }
    if (vm >= 0) {
        close(vm);
    }
    if (mem != MAP_FAILED) {
        munmap(mem, MEM_SIZE);
    }
    free(c);
    return missed;
}

int vcpu_setup_cpuid(Vcpu *vcpu)
{
    Vm *vm = vcpu->vm;
    struct kvm_cpuid2 *c = get_supported_cpuid(vm->kvm_fd);
    int n;

    if (!c) {
        fprintf(stderr, "keel-vmm: KVM_GET_SUPPORTED_CPUID: %s\n", strerror(errno));
        return -1;
    }
    /* Room for the topology sub-leaves put_extended_topology adds. */
    {
        struct kvm_cpuid2 *bigger = realloc(c, sizeof(*c) + (c->nent + 8) * sizeof(c->entries[0]));
        if (!bigger) {
            free(c);
            fprintf(stderr, "keel-vmm: out of memory for the CPUID table\n");
            return -1;
        }
        c = bigger;
    }
    n = cpuid_apply_topology(c->entries, (int)c->nent, (int)c->nent + 8, &vm->topo,
                             (unsigned)vcpu->index, vm->caps->pvm_host);
    if (n < 0) {
        free(c);
        fprintf(stderr, "keel-vmm: no room for the CPUID topology leaves\n");
        return -1;
    }
    if (vm->caps->xsetbv_missed) {
        n = cpuid_hide_xsave(c->entries, n);
    }
    c->nent = (uint32_t)n;
    if (ioctl(vcpu->fd, KVM_SET_CPUID2, c) < 0) {
        fprintf(stderr, "keel-vmm: KVM_SET_CPUID2: %s\n", strerror(errno));
        free(c);
        return -1;
    }
    free(c);
    return 0;
}
