/*
 * vmm/kvm.h — the KVM virtual machine: /dev/kvm, capabilities with their
 * fallbacks, guest RAM, the in-kernel irqchip and PIT, vCPUs, and the exit
 * dispatch loop.
 *
 * Capabilities.  Every optional KVM feature is a seam (compat/avoid.h): it
 * is used only when KVM_CHECK_EXTENSION reports it, KEEL_AVOID does not name
 * it, and the ioctl has not failed before with an "unsupported" errno (an
 * old kernel, or a launcher that filters KVM ioctls).  The wrappers below
 * (vm_set_ioeventfd, vm_set_irqfd, vm_signal_msi, …) return -ENOTSUP when
 * the caller must take the fallback, so each user has one code path per
 * seam.  kvm_features_register() adds the seams to `--features`.
 *
 * Guest RAM is one host mapping (a memfd, so it can be shared later; an
 * anonymous mapping when memfd_create is refused), split into two KVM slots
 * around the PCI hole [3 GiB, 4 GiB) when it is larger than 3 GiB.
 *
 * Stopping.  vm_request_stop() records the first reason and exit status and
 * calls the VM's on_stop hook (main() wakes its loop there).  vcpu_kick()
 * makes a vCPU thread leave KVM_RUN promptly: SIGUSR1 by pthread_kill, with
 * immediate_exit (or, on kernels without it, KVM_SET_SIGNAL_MASK so the
 * signal is only deliverable inside KVM_RUN) closing the race between the
 * stop check and the ioctl.
 *
 * Ownership: the Vm owns its fds, RAM and buses; vm_destroy() releases them
 * after every vCPU thread has been joined.
 *
 * vCPUs.  One thread per vCPU (vcpus_start_all).  Each runs KVM_RUN and
 * dispatches its own PIO/MMIO exits; the bus takes the global mutex around
 * every BUS_LOCKED device access, so device models see one vCPU at a time
 * (as under QEMU's BQL), while LAPIC, IOAPIC, PIC and PIT traffic (IPIs,
 * INIT/SIPI, EOIs) stays in the kernel.
 *
 * Thread rules: vm_create/vm_destroy/vcpu_create from the main thread before
 * or after the vCPU threads run; vcpu_run_loop() in the vCPU's own thread;
 * vm_request_stop, vcpu_kick, vm_set_irq_line, vm_signal_msi, vm_gpa_to_hva
 * from any thread; vm_set_ioeventfd/vm_set_irqfd/vm_msi_route_* under the
 * global mutex.
 */
#ifndef KEEL_VMM_KVM_H
#define KEEL_VMM_KVM_H

#include "vmm/bus.h"
#include "vmm/topology.h"
#include "compat/avoid.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

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

/* Per-capability probe result, filled once by kvm_caps_probe(). */
typedef struct KvmCaps {
    int open_errno;         /* /dev/kvm could not be opened: positive errno */
    int api_version;
    bool ioeventfd;
    bool irqfd;
    bool signal_msi;
    int irq_routing;        /* KVM_CAP_IRQ_ROUTING: number of GSIs, 0 = none */
    bool immediate_exit;
    bool irqchip, pit2, tss_addr, identity_map_addr, ext_cpuid, user_memory;
    int nr_memslots;
    int max_vcpus;          /* KVM_CAP_MAX_VCPUS (or NR_VCPUS, or 4 as KVM documents) */
    int max_vcpu_id;        /* KVM_CAP_MAX_VCPU_ID: APIC IDs must be below it */
    bool mp_state;          /* KVM_CAP_MP_STATE */
    bool pvm_host;          /* kvm_pvm: guest CPL0 code runs in the emulator */
    bool xsetbv_missed;     /* KVM misses the guest's XSETBV: XSAVE hidden
                             * from guests (kvm_host_misses_xsetbv) */
} KvmCaps;

/* Probes /dev/kvm once per process (cached); thread-safe. */
const KvmCaps *kvm_caps_probe(void);

/* Adds the kvm-* seams to the features report. */
void kvm_features_register(void);

struct Vm;
/* One line naming the paths in use by @vm, e.g. "kvm ioeventfd=yes irqfd=yes ...". */
void kvm_describe_paths(const struct Vm *vm, char *buf, size_t len);

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

typedef struct VmRamSlot {
    uint64_t gpa;
    uint64_t size;
    uint8_t *hva;
} VmRamSlot;

typedef struct Vm {
    int kvm_fd;
    int vm_fd;
    int vcpu_mmap_size;
    const KvmCaps *caps;

    /* Guest RAM: one host mapping, up to two slots. */
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

    /* MSI routes added by vm_msi_route_add (kept so the table can be rebuilt). */
    struct kvm_irq_routing_entry *msi_routes;
    int nr_msi_routes;
    uint32_t next_msi_gsi;

    /* The vCPUs: vcpus_create_all() makes topo.cpus of them, index i with
     * APIC ID topo_apic_id(&topo, i); vcpus[0] is the bootstrap CPU. */
    CpuTopology topo;
    struct Vcpu *vcpus;
    int nr_vcpus;
} Vm;

typedef struct Vcpu {
    Vm *vm;
    int id;                 /* KVM vCPU id = APIC ID */
    int index;              /* 0..topo.cpus-1, threads fastest (vmm/topology.h) */
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool thread_started;
    bool stop;              /* atomic: leave the run loop */
    /* The ExtINT watchdog (see vcpu_start_thread): its thread, its stop
     * flag under watch_lock/watch_cond, and the request it makes the vCPU
     * thread carry out (atomic). */
    pthread_t watch_thread;
    bool watch_started, watch_stop;
    pthread_mutex_t watch_lock;
    pthread_cond_t watch_cond;
    bool recheck_events;
    bool recheck_reported;
    /* Pause (QMP stop): while park is set the thread waits outside KVM_RUN;
     * parked says it is there (or has left the run loop). */
    pthread_mutex_t park_lock;
    pthread_cond_t park_cond;
    bool park, parked;
    long tid;               /* the vCPU thread's id once it runs (query-cpus-fast) */
} Vcpu;

/* Creates the VM (RAM of @ram_size bytes backed as @backing asks, irqchip,
 * PIT, TSS, identity map).  Prints one "keel-vmm: ..." line and returns -1
 * on failure. */
int vm_create(Vm *vm, uint64_t ram_size, VmRamBacking backing);
void vm_destroy(Vm *vm);

/* Host pointer for [gpa, gpa+len) if it lies inside one RAM slot, else NULL. */
void *vm_gpa_to_hva(Vm *vm, uint64_t gpa, uint64_t len);

/* Records the stop (first caller wins) and calls on_stop.  Any thread. */
void vm_request_stop(Vm *vm, VmStopReason reason, int exit_status);
VmStopReason vm_stop_reason(Vm *vm);

/* Interrupts: a GSI line level (in-kernel irqchip), one MSI. */
int vm_set_irq_line(Vm *vm, uint32_t gsi, int level);
int vm_signal_msi(Vm *vm, uint64_t addr, uint32_t data);    /* -ENOTSUP: fall back */

/* ioeventfd / irqfd, each -ENOTSUP when the fallback applies. */
int vm_set_ioeventfd(Vm *vm, uint64_t addr, unsigned len, bool is_pio,
                     bool datamatch, uint64_t data, int fd, bool assign);
int vm_set_irqfd(Vm *vm, uint32_t gsi, int fd, int resample_fd, bool assign);
bool vm_ioeventfd_usable(Vm *vm);
bool vm_irqfd_usable(Vm *vm);
bool vm_signal_msi_usable(Vm *vm);
bool vm_gsi_routing_usable(Vm *vm);

/* MSI routes for irqfd: add returns a GSI (≥ 24) or -errno; update changes
 * the message; commit installs irqchip routes + MSI routes (KVM replaces the
 * whole table, so the default irqchip pins are re-added each time). */
int vm_msi_route_add(Vm *vm, uint64_t addr, uint32_t data);
int vm_msi_route_update(Vm *vm, int gsi, uint64_t addr, uint32_t data);
int vm_msi_route_commit(Vm *vm);

/* The vCPU of topology index @index (vm->topo must be set), with CPUID set
 * up; every vCPU but index 0 starts in KVM_MP_STATE_UNINITIALIZED and waits
 * in KVM_RUN for the in-kernel LAPIC's INIT/SIPI.  Prints and returns -1 on
 * failure. */
int vcpu_create(Vm *vm, Vcpu *vcpu, int index);
void vcpu_destroy(Vcpu *vcpu);

/* All vCPUs of @topo (copied to vm->topo): vm->vcpus[0..topo->cpus-1].
 * Prints and returns -1 on failure (vcpus_destroy_all cleans up either
 * way).  Main thread, before the vCPUs run. */
int vcpus_create_all(Vm *vm, const CpuTopology *topo);
/* One thread per vCPU ("vcpuN", N = index); -1 if one cannot start (the
 * started ones keep running: stop them with vcpus_stop_join_all). */
int vcpus_start_all(Vm *vm);
/* Kicks every vCPU thread out of KVM_RUN and joins it.  Call without the
 * global mutex: a vCPU may be waiting for it to finish an exit. */
void vcpus_stop_join_all(Vm *vm);
void vcpus_destroy_all(Vm *vm);

/* Runs the guest until a stop is requested; then returns.  Call from the
 * vCPU's thread; vcpu_thread_prepare() first in that thread (unblocks the
 * kick signal). */
void vcpu_thread_prepare(Vcpu *vcpu);
void vcpu_run_loop(Vcpu *vcpu);

/* Make the vCPU leave KVM_RUN and see vcpu->stop (any thread). */
void vcpu_kick(Vcpu *vcpu);

/* Pause: kick the vCPU out of KVM_RUN and wait until it is parked (it may
 * be finishing an exit, so the global mutex, if held, is dropped while
 * waiting).  Resume lets it run again.  Main thread.  A vCPU whose thread
 * has not started yet starts parked when paused first (-S). */
void vcpu_pause(Vcpu *vcpu);
void vcpu_resume(Vcpu *vcpu);

/* Starts vcpu_run_loop in a new thread (keel_thread_create), and the
 * ExtINT watchdog thread: KVM's in-kernel PIC requests an interrupt
 * evaluation only when its output rises while the LAPIC accepts it; if the
 * guest had LINT0 masked at that moment and unmasks it later, KVM never
 * looks again and the PIC interrupt (the PIT tick of a guest without
 * IOAPIC) stays pending forever.  The watchdog samples the master PIC
 * every 100 ms; an unmasked request pending in two samples in a row makes
 * the vCPU thread round-trip its MP state (KVM_GET/SET_MP_STATE), which
 * makes KVM evaluate pending interrupts again.  Join after a stop with
 * vcpu_stop_join(). */
int vcpu_start_thread(Vcpu *vcpu);
void vcpu_stop_join(Vcpu *vcpu);

/* The watchdog's test: PIC requests (IRR & ~IMR) pending in both of two
 * samples 100 ms apart.  Pure, for the unit tests. */
bool pic_request_stuck(uint8_t irr_before, uint8_t imr_before, uint8_t irr_now, uint8_t imr_now);

/* CPUID set-up (vmm/cpuid.c). */
int vcpu_setup_cpuid(Vcpu *vcpu);

/* Rewrites the topology leaves of KVM's supported CPUID (@n entries, room
 * for @max) for the CPU of @index in @t: leaf 1 (initial APIC ID, logical
 * count, HTT), 4 (cores and cache sharing), 0xB and 0x1F (replaced by SMT
 * and core levels, x2APIC ID), and on AMD 0x80000001 (CmpLegacy),
 * 0x80000008 (package size), 0x8000001D (cache sharing), 0x8000001E (core
 * and node IDs).  Leaves KVM does not offer are not invented.  @pvm_host
 * applies the kvm_pvm quirks.  Returns the new count, or -1 if @max is too
 * small.  Pure: any thread. */
int cpuid_apply_topology(struct kvm_cpuid_entry2 *e, int n, int max, const CpuTopology *t,
                         unsigned index, bool pvm_host);

/* Removes XSAVE and everything that depends on it (AVX and AVX-512, MPX,
 * PKU, AMX, XOP/FMA4, leaf 0xD) from @n entries; returns the new count.
 * For hosts where kvm_host_misses_xsetbv(): the guest then runs as with
 * Linux's "noxsave".  Pure: any thread. */
int cpuid_hide_xsave(struct kvm_cpuid_entry2 *e, int n);

/* Whether this host's KVM misses a guest's XSETBV (KVM's XCR0 for the vCPU
 * stays 1 after the guest writes another value): runs three instructions
 * in a throw-away VM, only when the host is itself a guest.  False when it
 * cannot tell.  Any thread; called once by kvm_caps_probe(). */
bool kvm_host_misses_xsetbv(int kvm_fd);

#define VCPU_KICK_SIGNAL SIGUSR1

#endif
