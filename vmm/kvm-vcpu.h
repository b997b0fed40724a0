/*
 * vmm/kvm-vcpu.h — the vCPUs (kvm-vcpu.c; CPUID in cpuid.c).  Included
 * through vmm/kvm.h.
 *
 * One thread per vCPU (vcpu_start_thread).  Each runs KVM_RUN and
 * dispatches its own PIO/MMIO exits; the bus takes the global mutex around
 * every BUS_LOCKED device access, so device models see one vCPU at a time
 * (as under QEMU's BQL), while LAPIC, IOAPIC, PIC and PIT traffic (IPIs,
 * INIT/SIPI, EOIs) stays in the kernel.  Exits that end the guest (triple
 * fault, reset, internal error, failed entry) call vm_request_stop().
 *
 * Stopping.  vcpu_kick() makes a vCPU thread leave KVM_RUN promptly:
 * SIGUSR1 by pthread_kill, with immediate_exit (or, on kernels without it,
 * KVM_SET_SIGNAL_MASK so the signal is only deliverable inside KVM_RUN)
 * closing the race between the stop check and the ioctl.  Pausing (QMP
 * stop) parks the thread outside KVM_RUN until vcpu_resume().
 *
 * Ownership: a Vcpu owns its fd, run area and threads; the array of them
 * is the machine's (vmm/machine.h: vmm_machine_create_vcpus), which joins
 * the threads before vcpu_destroy().  A Vcpu borrows its Vm.
 * Thread rules: vcpu_create/vcpu_destroy/vcpu_start_thread/vcpu_stop_join
 * and vm_set_topology from the main thread; vcpu_thread_prepare and
 * vcpu_run_loop in the vCPU's own thread; vcpu_kick from any thread;
 * vcpu_pause/vcpu_resume from the main thread (with or without the global
 * mutex).
 */
#ifndef KEEL_VMM_KVM_VCPU_H
#define KEEL_VMM_KVM_VCPU_H

#ifndef KEEL_VMM_KVM_H
#error "include vmm/kvm.h, which includes vmm/kvm-vcpu.h"
#endif

#define VCPU_KICK_SIGNAL SIGUSR1

struct Vcpu {
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
};

/* Sets vm->topo to @topo after checking it against KVM's vCPU count and
 * APIC ID limits.  Prints and returns -1 when this KVM cannot run it. */
int vm_set_topology(Vm *vm, const CpuTopology *topo);

/* The vCPU of topology index @index (vm->topo must be set), with CPUID set
 * up; every vCPU but index 0 starts in KVM_MP_STATE_UNINITIALIZED and waits
 * in KVM_RUN for the in-kernel LAPIC's INIT/SIPI.  Prints and returns -1 on
 * failure. */
int vcpu_create(Vm *vm, Vcpu *vcpu, int index);
void vcpu_destroy(Vcpu *vcpu);

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

#endif
