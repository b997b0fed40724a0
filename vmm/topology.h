/*
 * vmm/topology.h — the guest's CPU topology (-smp) and the APIC IDs it
 * implies.
 *
 * A CPU's index runs 0..max_cpus-1, threads fastest: thread = index %
 * threads, core = (index / threads) % cores, socket = index / (threads *
 * cores).  Its APIC ID packs the three as bit fields, the way QEMU, KVM's
 * CPUID leaves and real x86 parts do: the thread in the low
 * topo_bits(threads) bits, the core above it, the socket above that.  So
 * -smp 6,sockets=1,cores=3,threads=2 gives APIC IDs 0,1,2,3,4,5 but
 * -smp 6,sockets=2,cores=3,threads=1 gives 0,1,2,4,5,6.  The same numbers
 * go to KVM_CREATE_VCPU (KVM makes the vCPU id the LAPIC ID), CPUID, the
 * MADT and the MP table.
 *
 * The first `cpus` indexes are present at boot; the rest up to max_cpus
 * are listed disabled in the MADT (possible, not present: keel-vmm has no
 * CPU hotplug, so the guest never sees them come up).
 *
 * Pure data and pure functions: any thread.
 */
#ifndef KEEL_VMM_TOPOLOGY_H
#define KEEL_VMM_TOPOLOGY_H

#include <stdint.h>

/* xAPIC IDs are 8 bits and 0xFF is the broadcast ID; keel-vmm describes
 * CPUs with xAPIC MADT/MP entries only, so every APIC ID must be < 0xFF. */
#define VMM_MAX_APIC_ID 0xFEu
#define VMM_MAX_CPUS 128u

typedef struct CpuTopology {
    unsigned cpus;          /* present at boot (-smp N) */
    unsigned max_cpus;      /* maxcpus=: cpus ≤ max_cpus = sockets*cores*threads */
    unsigned sockets, cores, threads;
} CpuTopology;

/* Bits needed to number @count items (0 for 1, 1 for 2, 2 for 3-4, ...). */
static inline unsigned topo_bits(unsigned count)
{
    unsigned b = 0;

    while ((1u << b) < count) {
        b++;
    }
    return b;
}

/* Shift of the core field in the APIC ID (= width of the thread field). */
static inline unsigned topo_core_shift(const CpuTopology *t)
{
    return topo_bits(t->threads);
}

/* Shift of the socket ("package") field. */
static inline unsigned topo_pkg_shift(const CpuTopology *t)
{
    return topo_bits(t->threads) + topo_bits(t->cores);
}

/* Where vCPU @index sits: threads fastest, then cores, then sockets. */
static inline void topo_place(const CpuTopology *t, unsigned index, unsigned *socket,
                              unsigned *core, unsigned *thread)
{
    *thread = index % t->threads;
    *core = (index / t->threads) % t->cores;
    *socket = index / (t->threads * t->cores);
}

static inline uint32_t topo_apic_id(const CpuTopology *t, unsigned index)
{
    unsigned socket, core, thread;

    topo_place(t, index, &socket, &core, &thread);
    return (socket << topo_pkg_shift(t)) | (core << topo_core_shift(t)) | thread;
}

/* The largest APIC ID of the topology (of index max_cpus - 1). */
static inline uint32_t topo_max_apic_id(const CpuTopology *t)
{
    return topo_apic_id(t, t->max_cpus - 1);
}

#endif
