/*
 * The CPUID topology leaves without KVM: cpuid_apply_topology() rewrites an
 * Intel-shaped and an AMD-shaped "supported CPUID" list for several -smp
 * topologies, and each vCPU's leaves are decoded the way Linux decodes
 * them (leaf 0xB shifts and x2APIC ID, leaf 1, leaf 4, AMD 0x80000008 and
 * 0x8000001E), which must give back the topology and unique APIC IDs.
 * cpuid_hide_xsave() (the quirk for hosts whose KVM misses a guest's
 * XSETBV) must drop leaf 0xD and every XSAVE-dependent bit, nothing else.
 */
#include "config.h"

#include "tests/keel-test.h"
#include "vmm/kvm.h"

#include <glib.h>
#include <string.h>

#define MAX_ENT 64

static int add(struct kvm_cpuid_entry2 *e, int n, uint32_t fn, uint32_t index, uint32_t eax,
               uint32_t ebx, uint32_t ecx, uint32_t edx)
{
    e[n] = (struct kvm_cpuid_entry2) {
        .function = fn, .index = index, .eax = eax, .ebx = ebx, .ecx = ecx, .edx = edx,
    };
    return n + 1;
}

/* A host with 8 cores x 2 threads, as KVM_GET_SUPPORTED_CPUID lists it. */
static int intel_list(struct kvm_cpuid_entry2 *e)
{
    int n = 0;

    n = add(e, n, 0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69);     /* GenuineIntel */
    n = add(e, n, 1, 0, 0x000906ea, 0x05100800, 0x7ffafbff | (1u << 13), 0xbfebfbff);
    n = add(e, n, 4, 0, 0x1c004121, 0x01c0003f, 0x3f, 0);   /* L1d */
    n = add(e, n, 4, 1, 0x1c004122, 0x01c0003f, 0x3f, 0);   /* L1i */
    n = add(e, n, 4, 2, 0x1c004143, 0x00c0003f, 0x3ff, 0);  /* L2 */
    n = add(e, n, 4, 3, 0x1c03c163, 0x03c0003f, 0x3fff, 6); /* L3 */
    n = add(e, n, 4, 4, 0, 0, 0, 0);
    n = add(e, n, 0xb, 0, 1, 2, 0x100, 5);                  /* the host's own */
    n = add(e, n, 0xb, 1, 4, 16, 0x201, 5);
    n = add(e, n, 0x1f, 0, 1, 2, 0x100, 5);
    n = add(e, n, 0x1f, 1, 4, 16, 0x201, 5);
    n = add(e, n, 0x80000000, 0, 0x80000008, 0, 0, 0);
    n = add(e, n, 0x80000008, 0, 0x3027, 0, 0, 0);
    return n;
}

static int amd_list(struct kvm_cpuid_entry2 *e)
{
    int n = 0;

    n = add(e, n, 0, 0, 0x10, 0x68747541, 0x444d4163, 0x69746e65);     /* AuthenticAMD */
    n = add(e, n, 1, 0, 0x00a50f00, 0x00100800, 0x7ef8320b, 0x178bfbff);
    n = add(e, n, 0x80000000, 0, 0x80000021, 0, 0, 0);
    n = add(e, n, 0x80000001, 0, 0x00a50f00, 0, 0x75c237ff, 0x2fd3fbff);
    n = add(e, n, 0x80000008, 0, 0x3030, 0, 0x700f, 0);
    n = add(e, n, 0x8000001d, 0, 0x00004121, 0x01c0003f, 0x3f, 0);     /* L1d */
    n = add(e, n, 0x8000001d, 1, 0x00004122, 0x01c0003f, 0x3f, 0);
    n = add(e, n, 0x8000001d, 2, 0x00004143, 0x01c0003f, 0x3ff, 2);    /* L2 */
    n = add(e, n, 0x8000001d, 3, 0x0003c163, 0x03c0003f, 0x7fff, 1);   /* L3 */
    n = add(e, n, 0x8000001e, 0, 5, 0x102, 0, 0);
    return n;
}

static const struct kvm_cpuid_entry2 *get(const struct kvm_cpuid_entry2 *e, int n, uint32_t fn,
                                          uint32_t index)
{
    for (int i = 0; i < n; i++) {
        if (e[i].function == fn && e[i].index == index) {
            return &e[i];
        }
    }
    return NULL;
}

static void check(const CpuTopology *t, const char *what, bool amd)
{
    bool ok1 = true, ok4 = true, okb = true, ok1f = true, okamd = true, unique = true;
    uint32_t seen[VMM_MAX_CPUS];

    for (unsigned i = 0; i < t->cpus; i++) {
        struct kvm_cpuid_entry2 e[MAX_ENT];
        int n = amd ? amd_list(e) : intel_list(e);
        uint32_t apic = topo_apic_id(t, i);
        const struct kvm_cpuid_entry2 *l1, *b0, *b1, *b2;
        unsigned per_pkg = t->cores * t->threads;

        n = cpuid_apply_topology(e, n, MAX_ENT, t, i, i == 1 /* pvm quirk on one */);
        if (n < 0) {
            KEEL_OK(false, "%s: room for the leaves", what);
            return;
        }
        l1 = get(e, n, 1, 0);
        ok1 &= l1 && (l1->ebx >> 24) == apic && ((l1->ebx >> 16) & 0xff) == per_pkg &&
               !!(l1->edx & (1u << 28)) == (per_pkg > 1) && (l1->ecx & (1u << 31)) &&
               (l1->ebx & 0xffff) == 0x0800 && !!(l1->ecx & (1u << 13)) == (i != 1);
        for (unsigned j = 0; j < i; j++) {
            unique &= seen[j] != apic;
        }
        seen[i] = apic;
        if (!amd) {
            struct kvm_cpuid_entry2 orig[MAX_ENT];
            int norig = intel_list(orig);

            for (uint32_t s = 0; s < 4; s++) {
                const struct kvm_cpuid_entry2 *c = get(e, n, 4, s);
                unsigned level = (c->eax >> 5) & 7;
                unsigned sharing = ((c->eax >> 14) & 0xfff) + 1;
                unsigned cores = (c->eax >> 26) + 1;
                ok4 &= cores == 1u << (topo_pkg_shift(t) - topo_core_shift(t)) &&
                       sharing == (level <= 2 ? 1u << topo_core_shift(t) : 1u << topo_pkg_shift(t)) &&
                       (c->eax & 0x3fff) == (get(orig, norig, 4, s)->eax & 0x3fff);
            }
            for (uint32_t fn = 0xb; fn <= 0x1f; fn += 0x14) {
                bool *okp = fn == 0xb ? &okb : &ok1f;
                b0 = get(e, n, fn, 0);
                b1 = get(e, n, fn, 1);
                b2 = get(e, n, fn, 2);
                /* Linux: SMT shift from level 0, package shift from the core
                 * level; the x2APIC ID in EDX of each. */
                *okp &= b0 && b1 && b2 && b0->edx == apic && b1->edx == apic && b2->edx == apic &&
                        (b0->ecx & 0xff00) == 0x100 && (b1->ecx & 0xff00) == 0x200 &&
                        (b2->ecx & 0xff00) == 0 && (b1->ecx & 0xff) == 1 &&
                        (b0->eax & 0x1f) == topo_core_shift(t) && b0->ebx == t->threads &&
                        (b1->eax & 0x1f) == topo_pkg_shift(t) && b1->ebx == per_pkg &&
                        (b0->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) &&
                        apic >> topo_pkg_shift(t) == i / per_pkg &&
                        (apic & ((1u << topo_core_shift(t)) - 1)) == i % t->threads;
            }
        } else {
            const struct kvm_cpuid_entry2 *x8 = get(e, n, 0x80000008, 0);
            const struct kvm_cpuid_entry2 *x1 = get(e, n, 0x80000001, 0);
            const struct kvm_cpuid_entry2 *x1e = get(e, n, 0x8000001e, 0);
            const struct kvm_cpuid_entry2 *l3 = get(e, n, 0x8000001d, 3);
            const struct kvm_cpuid_entry2 *l2 = get(e, n, 0x8000001d, 2);

            okamd &= ((x8->ecx >> 12) & 0xf) == topo_pkg_shift(t) &&
                     (x8->ecx & 0xff) == per_pkg - 1 && (x8->ecx & 0xffff0000u) == 0 &&
                     !!(x1->ecx & 2) == (per_pkg > 1) &&
                     x1e->eax == apic && ((x1e->ebx >> 8) & 0xff) == t->threads - 1 &&
                     (x1e->ebx & 0xff) == ((i / t->threads) % t->cores) &&
                     x1e->ecx == i / per_pkg &&
                     ((l3->eax >> 14) & 0xfff) == per_pkg - 1 &&
                     ((l2->eax >> 14) & 0xfff) == t->threads - 1 &&
                     get(e, n, 0xb, 0) == NULL;     /* not invented */
        }
    }
    KEEL_OK(ok1, "%s %s: leaf 1 APIC ID, logical count, HTT, hypervisor bit; CX16 cleared "
            "only with the kvm_pvm quirk", what, amd ? "AMD" : "Intel");
    KEEL_OK(unique, "%s: APIC IDs unique", what);
    if (!amd) {
        KEEL_OK(ok4, "%s: leaf 4 cores per package and cache sharing", what);
        KEEL_OK(okb, "%s: leaf 0xB SMT/core levels decode to the topology", what);
        KEEL_OK(ok1f, "%s: leaf 0x1F the same", what);
    } else {
        KEEL_OK(okamd, "%s: AMD 0x80000001/8/1D/1E match the topology; no leaf 0xB invented",
                what);
    }
}

static void check_hide_xsave(void)
{
    struct kvm_cpuid_entry2 e[MAX_ENT];
    int n = 0, m;
    const struct kvm_cpuid_entry2 *l1, *l7, *l71, *x1;
    /* The lab's L1 (QEMU TCG -cpu max) as its KVM offers it. */
    n = add(e, n, 0, 0, 0xd, 0x68747541, 0x444d4163, 0x69746e65);
    n = add(e, n, 1, 0, 0x60fb1, 0x01020800, 0xf7f83203, 0x0f8bfbfd);
    n = add(e, n, 7, 0, 0, 0x019803ab, 0x0001020c, 0x20000000);
    n = add(e, n, 7, 1, (1u << 4) | (1u << 5), 0, 0, 0);
    n = add(e, n, 0xd, 0, 0x207, 0xa88, 0xa88, 0);
    n = add(e, n, 0xd, 1, 5, 0, 0, 0);
    n = add(e, n, 0xd, 2, 0x100, 0x240, 0, 0);
    n = add(e, n, 0xd, 9, 8, 0xa80, 0, 0);
    n = add(e, n, 0x80000001, 0, 0x60fb1, 0, (1u << 11) | (1u << 16) | 1u, 0);
    m = cpuid_hide_xsave(e, n);
    l1 = get(e, m, 1, 0);
    l7 = get(e, m, 7, 0);
    l71 = get(e, m, 7, 1);
    x1 = get(e, m, 0x80000001, 0);
    KEEL_IS(m, n - 4, "hide-xsave: the four leaf 0xD entries are gone, the rest kept");
    KEEL_OK(!get(e, m, 0xd, 0) && !get(e, m, 0xd, 2), "hide-xsave: no leaf 0xD sub-leaf left");
    KEEL_OK(l1 && !(l1->ecx & ((1u << 26) | (1u << 27) | (1u << 28) | (1u << 12) | (1u << 29))),
            "hide-xsave: leaf 1 XSAVE, OSXSAVE, AVX, FMA, F16C cleared");
    KEEL_OK(l1 && (l1->ecx & (1u << 13)) && (l1->ecx & (1u << 20)) && (l1->ecx & (1u << 31)) &&
            l1->edx == 0x0f8bfbfd,
            "hide-xsave: leaf 1 CX16, SSE4.2, hypervisor and EDX untouched");
    KEEL_OK(l7 && !(l7->ebx & (1u << 5)) && (l7->ebx & (1u << 3)) && (l7->ebx & (1u << 9)) &&
            !(l7->ecx & ((1u << 3) | (1u << 4))) && (l7->ecx & (1u << 2)),
            "hide-xsave: leaf 7 AVX2, PKU, OSPKE cleared; BMI1, ERMS, UMIP kept");
    KEEL_OK(l71 && l71->eax == 0, "hide-xsave: leaf 7.1 AVX-VNNI, AVX512_BF16 cleared");
    KEEL_OK(x1 && x1->ecx == 1u, "hide-xsave: AMD XOP and FMA4 cleared, LAHF kept");
}

int main(void)
{
    static const struct { const char *what; CpuTopology t; } topos[] = {
        { "-smp 1", { 1, 1, 1, 1, 1 } },
        { "-smp 2", { 2, 2, 1, 2, 1 } },
        { "-smp 4,sockets=2,cores=1,threads=2", { 4, 4, 2, 1, 2 } },
        { "-smp sockets=2,cores=3,threads=2", { 12, 12, 2, 3, 2 } },
        { "-smp 64", { 64, 64, 1, 64, 1 } },
        { "-smp 6,sockets=3,cores=1,threads=2", { 6, 6, 3, 1, 2 } },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(topos); i++) {
        check(&topos[i].t, topos[i].what, false);
        check(&topos[i].t, topos[i].what, true);
    }
    {
        struct kvm_cpuid_entry2 e[16];
        int n = intel_list(e);
        CpuTopology t = { 2, 2, 1, 2, 1 };

        KEEL_IS(cpuid_apply_topology(e, n, n + 1, &t, 0, false), -1,
                "no room for the new sub-leaves → -1");
    }
    check_hide_xsave();
    return keel_test_done();
}
