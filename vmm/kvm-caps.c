/*
 * KVM capabilities (contract in vmm/kvm-caps.h): the /dev/kvm probe, the
 * kvm_pvm host quirk, the seams of the optional features and their lines
 * in the features report.
 */
#include "config.h"

#include "vmm/kvm-internal.h"
#include "compat/event-notifier.h"
#include "compat/features.h"
#include "compat/osdep.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

static KvmCaps caps;
static bool immediate_exit_forced_off;
static pthread_once_t caps_once = PTHREAD_ONCE_INIT;
static char open_reason[48];

static int kvm_check(int fd, long cap)
{
    int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
}

/*
 * kvm_pvm is KVM's "pvm" backend (paravirtualised hardware virtualisation
 * for hosts that are themselves VMs without nested VMX/SVM).  Guest code at
 * CPL0 runs through KVM's instruction emulator there, which matters for
 * CPUID quirks and error messages.  The module shows up in sysfs.
 */
static bool detect_pvm_host(void)
{
    struct stat st;
    return stat("/sys/module/kvm_pvm", &st) == 0;
}

static void caps_probe_once(void)
{
    int fd = open(KVM_DEVICE, O_RDWR | O_CLOEXEC);

    caps.pvm_host = detect_pvm_host();
    if (fd < 0) {
        caps.open_errno = errno;
        snprintf(open_reason, sizeof(open_reason), "dev-kvm-%s", keel_errno_name(errno));
        return;
    }
    caps.api_version = ioctl(fd, KVM_GET_API_VERSION, 0);
    if (caps.api_version != KVM_API_VERSION) {
        caps.open_errno = ENOTSUP;
        snprintf(open_reason, sizeof(open_reason), "kvm-api-%d", caps.api_version);
        close(fd);
        return;
    }
    caps.ioeventfd = kvm_check(fd, KVM_CAP_IOEVENTFD) > 0;
    caps.irqfd = kvm_check(fd, KVM_CAP_IRQFD) > 0;
    caps.signal_msi = kvm_check(fd, KVM_CAP_SIGNAL_MSI) > 0;
    caps.irq_routing = kvm_check(fd, KVM_CAP_IRQ_ROUTING);
    caps.immediate_exit = kvm_check(fd, KVM_CAP_IMMEDIATE_EXIT) > 0;
    /* Tests force the KVM_SET_SIGNAL_MASK kick (the path kernels before
     * 4.11 take) with this variable; KEEL_AVOID has no word for it. */
    if (caps.immediate_exit && getenv("KEEL_VMM_NO_IMMEDIATE_EXIT")) {
        caps.immediate_exit = false;
        immediate_exit_forced_off = true;
    }
    caps.irqchip = kvm_check(fd, KVM_CAP_IRQCHIP) > 0;
    caps.pit2 = kvm_check(fd, KVM_CAP_PIT2) > 0;
    caps.tss_addr = kvm_check(fd, KVM_CAP_SET_TSS_ADDR) > 0;
    caps.identity_map_addr = kvm_check(fd, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0;
    caps.ext_cpuid = kvm_check(fd, KVM_CAP_EXT_CPUID) > 0;
    caps.user_memory = kvm_check(fd, KVM_CAP_USER_MEMORY) > 0;
    caps.nr_memslots = kvm_check(fd, KVM_CAP_NR_MEMSLOTS);
    /* KVM's API document: no MAX_VCPUS means NR_VCPUS; neither means 4. */
    caps.max_vcpus = kvm_check(fd, KVM_CAP_MAX_VCPUS);
    if (!caps.max_vcpus) {
        caps.max_vcpus = kvm_check(fd, KVM_CAP_NR_VCPUS);
    }
    if (!caps.max_vcpus) {
        caps.max_vcpus = 4;
    }
    caps.max_vcpu_id = kvm_check(fd, KVM_CAP_MAX_VCPU_ID);
    if (!caps.max_vcpu_id) {
        caps.max_vcpu_id = caps.max_vcpus;
    }
    caps.mp_state = kvm_check(fd, KVM_CAP_MP_STATE) > 0;
    /* Not on kvm_pvm (its guests have no real mode, and its quirks are
     * known); KEEL_VMM_NO_XSAVE_QUIRK=1 keeps XSAVE for an A/B run. */
    if (!caps.pvm_host && !getenv("KEEL_VMM_NO_XSAVE_QUIRK")) {
        caps.xsetbv_missed = kvm_host_misses_xsetbv(fd);
    }
    close(fd);
}

const KvmCaps *kvm_caps_probe(void)
{
    pthread_once(&caps_once, caps_probe_once);
    return &caps;
}

/* The seams.  Each fallback is always compiled: it is plain KVM ioctls or
 * exits that every KVM has. */
KeelSeam kvm_ioeventfd_seam = KEEL_SEAM_INIT(KEEL_PATH_IOEVENTFD, "ioeventfd", "exit-handler");
KeelSeam kvm_irqfd_seam = KEEL_SEAM_INIT(KEEL_PATH_IRQFD, "irqfd", "ioctl");
KeelSeam kvm_signal_msi_seam = KEEL_SEAM_INIT(KEEL_PATH_SIGNAL_MSI, "signal-msi", "intx");
int kvm_gsi_routing_errno;          /* KVM_SET_GSI_ROUTING refused at run time */
/* Common shape of a cap-backed seam's report. */
static const char *cap_seam_active(bool have_cap, const char *cap_reason, KeelSeam *seam,
                                   const char **reason)
{
    const KvmCaps *c = kvm_caps_probe();

    if (c->open_errno) {
        *reason = open_reason;
        return seam->fallback;
    }
    if (!have_cap) {
        *reason = cap_reason;
        return seam->fallback;
    }
    return keel_seam_active(seam, reason);
}

/* ioeventfd and irqfd hand KVM an eventfd: with the pipe notifier (no
 * eventfd in this build or kernel, or KEEL_AVOID=eventfd) they cannot work. */
static bool notifier_lacks_eventfd(const char **reason)
{
    const char *why;

    if (!strcmp(keel_event_notifier_backend(&why), "eventfd")) {
        return false;
    }
    *reason = "event-notifier=pipe";
    return true;
}

static const char *ioeventfd_active(const char **reason)
{
    if (!keel_avoid(KEEL_PATH_IOEVENTFD) && notifier_lacks_eventfd(reason)) {
        return kvm_ioeventfd_seam.fallback;
    }
    return cap_seam_active(kvm_caps_probe()->ioeventfd, "KVM_CAP_IOEVENTFD=0",
                           &kvm_ioeventfd_seam, reason);
}

static const char *irqfd_active(const char **reason)
{
    if (!keel_avoid(KEEL_PATH_IRQFD) && notifier_lacks_eventfd(reason)) {
        return kvm_irqfd_seam.fallback;
    }
    return cap_seam_active(kvm_caps_probe()->irqfd, "KVM_CAP_IRQFD=0", &kvm_irqfd_seam, reason);
}

static const char *signal_msi_active(const char **reason)
{
    return cap_seam_active(kvm_caps_probe()->signal_msi, "KVM_CAP_SIGNAL_MSI=0",
                           &kvm_signal_msi_seam, reason);
}

static const char *gsi_routing_active(const char **reason)
{
    const KvmCaps *c = kvm_caps_probe();

    if (c->open_errno) {
        *reason = open_reason;
        return "none";
    }
    if (!c->irq_routing) {
        *reason = "KVM_CAP_IRQ_ROUTING=0";
        return "none";
    }
    if (kvm_gsi_routing_errno) {
        *reason = keel_errno_name(kvm_gsi_routing_errno);
        return "none";
    }
    *reason = "default";
    return "gsi-routing";
}

static const char *immediate_exit_active(const char **reason)
{
    const KvmCaps *c = kvm_caps_probe();

    if (c->open_errno) {
        *reason = open_reason;
        return "signal-mask";
    }
    if (!c->immediate_exit) {
        *reason = immediate_exit_forced_off ? "KEEL_VMM_NO_IMMEDIATE_EXIT"
                                            : "KVM_CAP_IMMEDIATE_EXIT=0";
        return "signal-mask";
    }
    *reason = "default";
    return "immediate-exit";
}

static const char *kvm_active(const char **reason)
{
    const KvmCaps *c = kvm_caps_probe();

    if (c->open_errno) {
        *reason = open_reason;
        return "none";
    }
    *reason = c->pvm_host ? "kvm_pvm-host" : "default";
    return "kvm-api-12";
}

static const char *guest_ram_active(const char **reason)
{
    return vm_ram_auto_choice(reason) == VM_RAM_MEMFD ? "memfd" : "anonymous";
}

static const char *cpuid_quirks_active(const char **reason)
{
    if (kvm_caps_probe()->pvm_host) {
        *reason = "kvm_pvm-host";
        return "clear-cx16";
    }
    if (kvm_caps_probe()->xsetbv_missed) {
        *reason = "kvm-misses-xsetbv";
        return "clear-xsave";
    }
    *reason = getenv("KEEL_VMM_NO_XSAVE_QUIRK") ? "KEEL_VMM_NO_XSAVE_QUIRK" : "default";
    return "none";
}

static const KeelFeature kvm_feature = {
    "kvm", "kvm-api-12", kvm_active,
};
static const KeelFeature kvm_ioeventfd_feature = {
    "kvm-ioeventfd", "ioeventfd,exit-handler", ioeventfd_active,
};
static const KeelFeature kvm_irqfd_feature = {
    "kvm-irqfd", "irqfd,ioctl", irqfd_active,
};
static const KeelFeature kvm_signal_msi_feature = {
    "kvm-signal-msi", "signal-msi,intx", signal_msi_active,
};
static const KeelFeature kvm_gsi_routing_feature = {
    "kvm-gsi-routing", "gsi-routing,none", gsi_routing_active,
};
static const KeelFeature kvm_immediate_exit_feature = {
    "kvm-immediate-exit", "immediate-exit,signal-mask", immediate_exit_active,
};
static const KeelFeature guest_ram_feature = {
    "guest-ram", "memfd,anonymous", guest_ram_active,
};
static const KeelFeature cpuid_quirks_feature = {
    "kvm-cpuid-quirks", "none,clear-cx16,clear-xsave", cpuid_quirks_active,
};

void kvm_features_register(void)
{
    keel_feature_register(&kvm_feature);
    keel_feature_register(&kvm_ioeventfd_feature);
    keel_feature_register(&kvm_irqfd_feature);
    keel_feature_register(&kvm_signal_msi_feature);
    keel_feature_register(&kvm_gsi_routing_feature);
    keel_feature_register(&kvm_immediate_exit_feature);
    keel_feature_register(&guest_ram_feature);
    keel_feature_register(&cpuid_quirks_feature);
}

void kvm_describe_paths(const Vm *vm, char *buf, size_t len)
{
    const char *why;
    const char *ioev = ioeventfd_active(&why);
    const char *irqfd = irqfd_active(&why);
    const char *msi = signal_msi_active(&why);
    const char *gsi = gsi_routing_active(&why);
    const char *ie = immediate_exit_active(&why);
    const char *ram = vm->ram_desc;
    const KvmCaps *c = kvm_caps_probe();

    snprintf(buf, len,
             "kvm ioeventfd=%s irqfd=%s signal-msi=%s gsi-routing=%s kick=%s ram=%s host=%s%s",
             !strcmp(ioev, "ioeventfd") ? "yes" : "no(exit-handler)",
             !strcmp(irqfd, "irqfd") ? "yes" : "no(ioctl)",
             !strcmp(msi, "signal-msi") ? "yes" : "no(intx)",
             !strcmp(gsi, "gsi-routing") ? "yes" : "no",
             ie, ram, c->pvm_host ? "kvm_pvm" : "kvm",
             c->pvm_host ? " cpuid=clear-cx16" : c->xsetbv_missed ? " cpuid=clear-xsave" : "");
}

bool vm_ioeventfd_usable(Vm *vm)
{
    return vm->caps->ioeventfd && keel_seam_use_primary(&kvm_ioeventfd_seam);
}

bool vm_irqfd_usable(Vm *vm)
{
    return vm->caps->irqfd && keel_seam_use_primary(&kvm_irqfd_seam);
}

bool vm_signal_msi_usable(Vm *vm)
{
    return vm->caps->signal_msi && keel_seam_use_primary(&kvm_signal_msi_seam);
}

bool vm_gsi_routing_usable(Vm *vm)
{
    return vm->caps->irq_routing > 0 &&
           __atomic_load_n(&kvm_gsi_routing_errno, __ATOMIC_ACQUIRE) == 0;
}
