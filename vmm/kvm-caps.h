/*
 * vmm/kvm-caps.h — what this KVM can do (kvm-caps.c).  Included through
 * vmm/kvm.h.
 *
 * Capabilities.  Every optional KVM feature is a seam (compat/avoid.h): it
 * is used only when KVM_CHECK_EXTENSION reports it, KEEL_AVOID does not name
 * it, and the ioctl has not failed before with an "unsupported" errno (an
 * old kernel, or a launcher that filters KVM ioctls).  The wrappers of
 * vmm/kvm-irq.h (vm_set_ioeventfd, vm_set_irqfd, vm_signal_msi, …) return
 * -ENOTSUP when the caller must take the fallback, so each user has one
 * code path per seam; the vm_*_usable() predicates below say which path a
 * caller will get.  kvm_features_register() adds the seams (kvm, kvm-ioeventfd,
 * kvm-irqfd, kvm-signal-msi, kvm-gsi-routing, kvm-immediate-exit, guest-ram,
 * kvm-cpuid-quirks) to `--features`.
 *
 * kvm_pvm.  A host whose KVM is the "pvm" backend (a VM without nested
 * VMX/SVM; /sys/module/kvm_pvm exists) runs guest CPL0 code in KVM's
 * instruction emulator: KvmCaps.pvm_host turns on the CPUID quirks
 * (vmm/cpuid.c) and the hint printed on an emulation failure.
 *
 * Ownership: the probe result is one process-wide, read-only KvmCaps.
 * Thread rules: every function here may be called from any thread;
 * kvm_features_register() once, before the features are printed.
 */
#ifndef KEEL_VMM_KVM_CAPS_H
#define KEEL_VMM_KVM_CAPS_H

#ifndef KEEL_VMM_KVM_H
#error "include vmm/kvm.h, which includes vmm/kvm-caps.h"
#endif

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

/* One line naming the paths in use by @vm, e.g. "kvm ioeventfd=yes irqfd=yes ...". */
void kvm_describe_paths(const Vm *vm, char *buf, size_t len);

/* Whether the primary path of each seam is (still) in use for @vm. */
bool vm_ioeventfd_usable(Vm *vm);
bool vm_irqfd_usable(Vm *vm);
bool vm_signal_msi_usable(Vm *vm);
bool vm_gsi_routing_usable(Vm *vm);

#endif
