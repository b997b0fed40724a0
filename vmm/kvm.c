/*
 * The KVM virtual machine: capability probing with fallbacks, guest RAM,
 * irqchip/PIT, vCPUs and their exit loop.
 */
#include "config.h"

#include "vmm/kvm.h"
#include "compat/avoid.h"
#include "compat/event-notifier.h"
#include "compat/features.h"
#include "compat/osdep.h"
#include "loop/main-loop.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define KVM_DEVICE "/dev/kvm"

/* ---- capabilities -------------------------------------------------------- */

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
static KeelSeam ioeventfd_seam = KEEL_SEAM_INIT(KEEL_PATH_IOEVENTFD, "ioeventfd", "exit-handler");
static KeelSeam irqfd_seam = KEEL_SEAM_INIT(KEEL_PATH_IRQFD, "irqfd", "ioctl");
static KeelSeam signal_msi_seam = KEEL_SEAM_INIT(KEEL_PATH_SIGNAL_MSI, "signal-msi", "intx");
static int gsi_routing_errno;       /* KVM_SET_GSI_ROUTING refused at run time */
/* Guest RAM: a memfd, or anonymous memory (always possible). */
static KeelSeam memfd_seam = KEEL_SEAM_INIT(KEEL_PATH_MEMFD, "memfd", "anonymous");

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
        return ioeventfd_seam.fallback;
    }
    return cap_seam_active(kvm_caps_probe()->ioeventfd, "KVM_CAP_IOEVENTFD=0",
                           &ioeventfd_seam, reason);
}

static const char *irqfd_active(const char **reason)
{
    if (!keel_avoid(KEEL_PATH_IRQFD) && notifier_lacks_eventfd(reason)) {
        return irqfd_seam.fallback;
    }
    return cap_seam_active(kvm_caps_probe()->irqfd, "KVM_CAP_IRQFD=0", &irqfd_seam, reason);
}

static const char *signal_msi_active(const char **reason)
{
    return cap_seam_active(kvm_caps_probe()->signal_msi, "KVM_CAP_SIGNAL_MSI=0",
                           &signal_msi_seam, reason);
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
    if (gsi_routing_errno) {
        *reason = keel_errno_name(gsi_routing_errno);
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

static VmRamBacking guest_ram_auto(const char **reason);

static const char *guest_ram_active(const char **reason)
{
    return guest_ram_auto(reason) == VM_RAM_MEMFD ? "memfd" : "anonymous";
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
    return vm->caps->ioeventfd && keel_seam_use_primary(&ioeventfd_seam);
}

bool vm_irqfd_usable(Vm *vm)
{
    return vm->caps->irqfd && keel_seam_use_primary(&irqfd_seam);
}

bool vm_signal_msi_usable(Vm *vm)
{
    return vm->caps->signal_msi && keel_seam_use_primary(&signal_msi_seam);
}

bool vm_gsi_routing_usable(Vm *vm)
{
    return vm->caps->irq_routing > 0 &&
           __atomic_load_n(&gsi_routing_errno, __ATOMIC_ACQUIRE) == 0;
}

/* ---- guest RAM ------------------------------------------------------------ */

static int memfd_open(const char *name)
{
#if defined(HAVE_MEMFD_CREATE)
    return memfd_create(name, MFD_CLOEXEC);
#elif defined(SYS_memfd_create)
    return (int)syscall(SYS_memfd_create, name, 1u /* MFD_CLOEXEC */);
#else
    (void)name;
    errno = ENOSYS;
    return -1;
#endif
}

/* Whether memfd_create works here: not avoided, and not refused by the
 * kernel or a seccomp filter (probed once; a refusal switches the seam). */
static bool memfd_usable(void)
{
    static bool probed;             /* atomic */

    if (keel_seam_use_primary(&memfd_seam) && !__atomic_load_n(&probed, __ATOMIC_ACQUIRE)) {
        int fd = memfd_open("keel-probe");
        if (fd >= 0) {
            close(fd);
        } else if (keel_errno_means_unsupported(errno)) {
            keel_seam_primary_failed(&memfd_seam, errno);
        }
        __atomic_store_n(&probed, true, __ATOMIC_RELEASE);
    }
    return keel_seam_use_primary(&memfd_seam);
}

/* Whether MADV_HUGEPAGE gets transparent huge pages from the kernel for
 * anonymous (@shmem false) or shmem/memfd memory: the bracketed word of
 * /sys/kernel/mm/transparent_hugepage/{enabled,shmem_enabled}.  No file
 * (a kernel without THP): no. */
static bool thp_allowed(bool shmem)
{
    static const char *const yes_anon[] = { "always", "madvise", NULL };
    static const char *const yes_shmem[] = { "always", "within_size", "advise", "force", NULL };
    const char *path = shmem ? "/sys/kernel/mm/transparent_hugepage/shmem_enabled"
                             : "/sys/kernel/mm/transparent_hugepage/enabled";
    char buf[128] = "";
    const char *open_br, *close_br;
    FILE *f = fopen(path, "re");
    bool ok = false;

    if (!f) {
        return false;
    }
    if (fgets(buf, sizeof(buf), f) && (open_br = strchr(buf, '[')) &&
        (close_br = strchr(open_br, ']'))) {
        size_t n = (size_t)(close_br - open_br - 1);
        for (const char *const *w = shmem ? yes_shmem : yes_anon; *w; w++) {
            ok |= strlen(*w) == n && !strncmp(open_br + 1, *w, n);
        }
    }
    fclose(f);
    return ok;
}

/* VM_RAM_AUTO's choice, and why. */
static VmRamBacking guest_ram_auto(const char **reason)
{
    if (!memfd_usable()) {
        keel_seam_active(&memfd_seam, reason);
        return VM_RAM_ANONYMOUS;
    }
    if (thp_allowed(false) && !thp_allowed(true)) {
        *reason = "shmem-thp-off";
        return VM_RAM_ANONYMOUS;
    }
    *reason = "default";
    return VM_RAM_MEMFD;
}

#define RAM_ALIGN (2ull << 20)      /* a huge page: THP needs aligned addresses */

/* mmap @size bytes of @fd (or anonymous memory when -1) at a 2 MiB aligned
 * address: reserve size + 2 MiB, trim, map over the aligned part. */
static void *ram_mmap_aligned(uint64_t size, int fd)
{
    uint8_t *resv = mmap(NULL, size + RAM_ALIGN, PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uint8_t *p, *end;
    void *m;

    if (resv == MAP_FAILED) {
        return MAP_FAILED;
    }
    p = (uint8_t *)(((uintptr_t)resv + RAM_ALIGN - 1) & ~(uintptr_t)(RAM_ALIGN - 1));
    end = resv + size + RAM_ALIGN;
    if (p > resv) {
        munmap(resv, (size_t)(p - resv));
    }
    if (end > p + size) {
        munmap(p + size, (size_t)(end - (p + size)));
    }
    m = fd >= 0 ? mmap(p, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd, 0)
                : mmap(p, size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        munmap(p, size);
        errno = e;
    }
    return m;
}

/* A memfd of @size bytes for guest RAM, or -1: refused by the kernel (the
 * seam falls back, logged) with *@fatal false, or another error (printed)
 * with *@fatal true. */
static int ram_memfd_create(uint64_t size, bool *fatal)
{
    int fd = memfd_open("keel-guest-ram");

    *fatal = false;
    if (fd < 0) {
        if (keel_errno_means_unsupported(errno)) {
            keel_seam_primary_failed(&memfd_seam, errno);
        } else {
            fprintf(stderr, "keel-vmm: memfd_create: %s\n", strerror(errno));
            *fatal = true;
        }
        return -1;
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        fprintf(stderr, "keel-vmm: cannot size guest RAM (%llu MiB): %s\n",
                (unsigned long long)(size >> 20), strerror(errno));
        close(fd);
        *fatal = true;
        return -1;
    }
    return fd;
}

/* Maps @size bytes of guest RAM as @backing asks (see VmRamBacking). */
static int vm_alloc_ram(Vm *vm, uint64_t size, VmRamBacking backing)
{
    const char *why = "default";
    bool thp;
    void *p;

    bool explicit_memfd = backing == VM_RAM_MEMFD;

    vm->ram_fd = -1;
    if (backing == VM_RAM_AUTO) {
        backing = guest_ram_auto(&why);
    }
    if (backing == VM_RAM_MEMFD) {
        bool fatal;

        /* Only the default may fall back: memory-backend-memfd asks for
         * shareable memory, and anonymous memory is not (QEMU fails too). */
        if (explicit_memfd && !memfd_usable()) {
            keel_seam_active(&memfd_seam, &why);
            fprintf(stderr, "keel-vmm: -object memory-backend-memfd: memfd_create is not "
                    "available (%s); use memory-backend-ram, or no -object to let "
                    "keel-vmm choose\n", strcmp(why, "KEEL_AVOID") ? why : "KEEL_AVOID=memfd");
            return -1;
        }
        if (memfd_usable() && (vm->ram_fd = ram_memfd_create(size, &fatal)) < 0 &&
            (fatal || explicit_memfd)) {
            if (!fatal) {
                fprintf(stderr, "keel-vmm: -object memory-backend-memfd: memfd_create "
                        "refused: %s\n", strerror(errno));
            }
            return -1;
        }
    }
    p = ram_mmap_aligned(size, vm->ram_fd);
    if (p == MAP_FAILED) {
        fprintf(stderr, "keel-vmm: cannot map %llu MiB of guest RAM: %s\n",
                (unsigned long long)(size >> 20), strerror(errno));
        if (vm->ram_fd >= 0) {
            close(vm->ram_fd);
            vm->ram_fd = -1;
        }
        return -1;
    }
    /* Huge pages halve TLB misses and let O_DIRECT pin one page per 2 MiB;
     * a kernel without THP (EINVAL) just keeps small pages. */
    thp = madvise(p, size, MADV_HUGEPAGE) == 0 && thp_allowed(vm->ram_fd >= 0);
    snprintf(vm->ram_desc, sizeof(vm->ram_desc), "%s%s", vm->ram_fd >= 0 ? "memfd" : "anonymous",
             thp ? "+thp" : "");
    vm->ram = p;
    vm->ram_size = size;
    return 0;
}

static int vm_add_slot(Vm *vm, uint64_t gpa, uint64_t size, uint8_t *hva)
{
    struct kvm_userspace_memory_region region = {
        .slot = (uint32_t)vm->nr_slots,
        .guest_phys_addr = gpa,
        .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)hva,
    };

    if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        fprintf(stderr, "keel-vmm: KVM_SET_USER_MEMORY_REGION (slot %d, %llu MiB at 0x%llx): %s\n",
                vm->nr_slots, (unsigned long long)(size >> 20), (unsigned long long)gpa,
                strerror(errno));
        return -1;
    }
    vm->slots[vm->nr_slots++] = (VmRamSlot) { .gpa = gpa, .size = size, .hva = hva };
    return 0;
}

void *vm_gpa_to_hva(Vm *vm, uint64_t gpa, uint64_t len)
{
    for (int i = 0; i < vm->nr_slots; i++) {
        VmRamSlot *s = &vm->slots[i];
        if (gpa >= s->gpa && gpa - s->gpa <= s->size && len <= s->size - (gpa - s->gpa)) {
            return s->hva + (gpa - s->gpa);
        }
    }
    return NULL;
}

/* ---- the VM ---------------------------------------------------------------- */

static int vm_ioctl_checked(Vm *vm, unsigned long req, void *arg, const char *name)
{
    if (ioctl(vm->vm_fd, req, arg) < 0) {
        fprintf(stderr, "keel-vmm: %s: %s\n", name, strerror(errno));
        return -1;
    }
    return 0;
}

int vm_create(Vm *vm, uint64_t ram_size, VmRamBacking backing)
{
    const KvmCaps *c = kvm_caps_probe();
    uint64_t low, high;

    memset(vm, 0, sizeof(*vm));
    vm->kvm_fd = vm->vm_fd = vm->ram_fd = -1;
    vm->caps = c;
    vm->next_msi_gsi = 24;      /* after the IOAPIC's 24 pins */
    bus_init(&vm->pio_bus, "pio");
    bus_init(&vm->mmio_bus, "mmio");

    if (c->open_errno) {
        if (c->api_version > 0 && c->api_version != KVM_API_VERSION) {
            fprintf(stderr, "keel-vmm: %s has API version %d, keel-vmm needs %d\n",
                    KVM_DEVICE, c->api_version, KVM_API_VERSION);
        } else {
            fprintf(stderr, "keel-vmm: cannot open %s: %s\n", KVM_DEVICE,
                    strerror(c->open_errno));
        }
        return -1;
    }
    if (!c->irqchip || !c->user_memory) {
        fprintf(stderr, "keel-vmm: KVM lacks %s, which keel-vmm requires\n",
                !c->irqchip ? "KVM_CAP_IRQCHIP" : "KVM_CAP_USER_MEMORY");
        return -1;
    }
    vm->kvm_fd = open(KVM_DEVICE, O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        fprintf(stderr, "keel-vmm: cannot open %s: %s\n", KVM_DEVICE, strerror(errno));
        return -1;
    }
    vm->vm_fd = KEEL_RETRY_EINTR(ioctl(vm->kvm_fd, KVM_CREATE_VM, 0));
    if (vm->vm_fd < 0) {
        fprintf(stderr, "keel-vmm: KVM_CREATE_VM: %s\n", strerror(errno));
        goto fail;
    }
    vm->vcpu_mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vm->vcpu_mmap_size < (int)sizeof(struct kvm_run)) {
        fprintf(stderr, "keel-vmm: KVM_GET_VCPU_MMAP_SIZE: %s\n", strerror(errno));
        goto fail;
    }

    /* VMX needs these in guest-physical space for real-mode emulation;
     * both sit in the PCI hole, clear of RAM and BARs. */
    if (c->tss_addr && ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)VM_TSS_ADDR) < 0) {
        fprintf(stderr, "keel-vmm: KVM_SET_TSS_ADDR: %s\n", strerror(errno));
        goto fail;
    }
    if (c->identity_map_addr) {
        uint64_t addr = VM_IDENTITY_MAP_ADDR;
        if (vm_ioctl_checked(vm, KVM_SET_IDENTITY_MAP_ADDR, &addr,
                             "KVM_SET_IDENTITY_MAP_ADDR") < 0) {
            goto fail;
        }
    }
    if (vm_ioctl_checked(vm, KVM_CREATE_IRQCHIP, NULL, "KVM_CREATE_IRQCHIP") < 0) {
        goto fail;
    }
    if (c->pit2) {
        /* SPEAKER_DUMMY makes KVM emulate port 0x61 too (PIT channel 2's
         * gate and output), which guests use to calibrate the TSC. */
        struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
        if (vm_ioctl_checked(vm, KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2") < 0) {
            goto fail;
        }
    }

    if (vm_alloc_ram(vm, ram_size, backing) < 0) {
        goto fail;
    }
    low = ram_size < VM_PCI_HOLE_START ? ram_size : VM_PCI_HOLE_START;
    high = ram_size - low;
    vm->low_ram_end = low;
    if (vm_add_slot(vm, 0, low, vm->ram) < 0) {
        goto fail;
    }
    if (high && vm_add_slot(vm, VM_HIGH_RAM_START, high, vm->ram + low) < 0) {
        goto fail;
    }
    return 0;

fail:
    vm_destroy(vm);
    return -1;
}

void vm_destroy(Vm *vm)
{
    if (vm->ram) {
        munmap(vm->ram, vm->ram_size);
        vm->ram = NULL;
    }
    if (vm->ram_fd >= 0) {
        close(vm->ram_fd);
    }
    if (vm->vm_fd >= 0) {
        close(vm->vm_fd);
    }
    if (vm->kvm_fd >= 0) {
        close(vm->kvm_fd);
    }
    vm->ram_fd = vm->vm_fd = vm->kvm_fd = -1;
    free(vm->msi_routes);
    vm->msi_routes = NULL;
    bus_destroy(&vm->pio_bus);
    bus_destroy(&vm->mmio_bus);
}

void vm_request_stop(Vm *vm, VmStopReason reason, int exit_status)
{
    int expected = VM_STOP_NONE;

    /* Only the first reason counts: a debug-exit write followed by the
     * guest's next instruction faulting must still exit with the status. */
    if (__atomic_compare_exchange_n(&vm->stop_reason, &expected, (int)reason, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        vm->exit_status = exit_status;
        __atomic_thread_fence(__ATOMIC_RELEASE);
        if (vm->on_stop) {
            vm->on_stop(vm->on_stop_opaque);
        }
    }
}

VmStopReason vm_stop_reason(Vm *vm)
{
    return (VmStopReason)__atomic_load_n(&vm->stop_reason, __ATOMIC_ACQUIRE);
}

/* ---- interrupts and notifiers ---------------------------------------------- */

int vm_set_irq_line(Vm *vm, uint32_t gsi, int level)
{
    struct kvm_irq_level irq = { .irq = gsi, .level = (uint32_t)level };

    if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq) < 0) {
        return -errno;
    }
    return 0;
}

int vm_signal_msi(Vm *vm, uint64_t addr, uint32_t data)
{
    struct kvm_msi msi = {
        .address_lo = (uint32_t)addr,
        .address_hi = (uint32_t)(addr >> 32),
        .data = data,
    };
    int r;

    if (!vm_signal_msi_usable(vm)) {
        return -ENOTSUP;
    }
    r = ioctl(vm->vm_fd, KVM_SIGNAL_MSI, &msi);
    if (r < 0) {
        if (keel_errno_means_unsupported(errno)) {
            keel_seam_primary_failed(&signal_msi_seam, errno);
            return -ENOTSUP;
        }
        return -errno;
    }
    return 0;   /* r == 0 means the guest blocked it (masked): still delivered as far as we care */
}

int vm_set_ioeventfd(Vm *vm, uint64_t addr, unsigned len, bool is_pio,
                     bool datamatch, uint64_t data, int fd, bool assign)
{
    struct kvm_ioeventfd ioev = {
        .datamatch = data,
        .addr = addr,
        .len = len,
        .fd = fd,
        .flags = (is_pio ? KVM_IOEVENTFD_FLAG_PIO : 0) |
                 (datamatch ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0) |
                 (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
    };

    if (assign && !vm_ioeventfd_usable(vm)) {
        return -ENOTSUP;
    }
    if (ioctl(vm->vm_fd, KVM_IOEVENTFD, &ioev) < 0) {
        if (assign && keel_errno_means_unsupported(errno) && errno != EINVAL) {
            keel_seam_primary_failed(&ioeventfd_seam, errno);
            return -ENOTSUP;
        }
        return -errno;
    }
    return 0;
}

int vm_set_irqfd(Vm *vm, uint32_t gsi, int fd, int resample_fd, bool assign)
{
    struct kvm_irqfd irqfd = {
        .fd = (uint32_t)fd,
        .gsi = gsi,
        .flags = (assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN) |
                 (resample_fd >= 0 && assign ? KVM_IRQFD_FLAG_RESAMPLE : 0),
        .resamplefd = resample_fd >= 0 ? (uint32_t)resample_fd : 0,
    };

    if (assign && !vm_irqfd_usable(vm)) {
        return -ENOTSUP;
    }
    if (ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0) {
        if (assign && keel_errno_means_unsupported(errno) && errno != EINVAL) {
            keel_seam_primary_failed(&irqfd_seam, errno);
            return -ENOTSUP;
        }
        return -errno;
    }
    return 0;
}

int vm_msi_route_add(Vm *vm, uint64_t addr, uint32_t data)
{
    struct kvm_irq_routing_entry *n;
    int gsi;

    if (!vm_gsi_routing_usable(vm)) {
        return -ENOTSUP;
    }
    gsi = (int)vm->next_msi_gsi;
    if (gsi >= vm->caps->irq_routing) {
        return -ENOSPC;
    }
    n = realloc(vm->msi_routes, (vm->nr_msi_routes + 1) * sizeof(*n));
    if (!n) {
        return -ENOMEM;
    }
    vm->msi_routes = n;
    n = &vm->msi_routes[vm->nr_msi_routes++];
    memset(n, 0, sizeof(*n));
    n->gsi = (uint32_t)gsi;
    n->type = KVM_IRQ_ROUTING_MSI;
    n->u.msi.address_lo = (uint32_t)addr;
    n->u.msi.address_hi = (uint32_t)(addr >> 32);
    n->u.msi.data = data;
    vm->next_msi_gsi++;
    return gsi;
}

int vm_msi_route_update(Vm *vm, int gsi, uint64_t addr, uint32_t data)
{
    for (int i = 0; i < vm->nr_msi_routes; i++) {
        if (vm->msi_routes[i].gsi == (uint32_t)gsi) {
            vm->msi_routes[i].u.msi.address_lo = (uint32_t)addr;
            vm->msi_routes[i].u.msi.address_hi = (uint32_t)(addr >> 32);
            vm->msi_routes[i].u.msi.data = data;
            return 0;
        }
    }
    return -ENOENT;
}

int vm_msi_route_commit(Vm *vm)
{
    /* KVM_SET_GSI_ROUTING replaces the whole table, including the default
     * irqchip routes: rebuild those as KVM sets them up (GSI 0-15 to both
     * PICs and the IOAPIC, 16-23 to the IOAPIC only), then the MSIs. */
    int max = 16 + 24 + vm->nr_msi_routes, n = 0, r;
    struct kvm_irq_routing *table;

    if (!vm_gsi_routing_usable(vm)) {
        return -ENOTSUP;
    }
    table = calloc(1, sizeof(*table) + max * sizeof(table->entries[0]));
    if (!table) {
        return -ENOMEM;
    }
    for (uint32_t gsi = 0; gsi < 24; gsi++) {
        if (gsi < 16) {
            struct kvm_irq_routing_entry *e = &table->entries[n++];
            e->gsi = gsi;
            e->type = KVM_IRQ_ROUTING_IRQCHIP;
            e->u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
            e->u.irqchip.pin = gsi % 8;
        }
        struct kvm_irq_routing_entry *e = &table->entries[n++];
        e->gsi = gsi;
        e->type = KVM_IRQ_ROUTING_IRQCHIP;
        e->u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        e->u.irqchip.pin = gsi;
    }
    for (int i = 0; i < vm->nr_msi_routes; i++) {
        table->entries[n++] = vm->msi_routes[i];
    }
    table->nr = (uint32_t)n;
    r = ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, table);
    free(table);
    if (r < 0) {
        int err = errno;
        if (keel_errno_means_unsupported(err) && err != EINVAL) {
            int expected = 0;
            if (__atomic_compare_exchange_n(&gsi_routing_errno, &expected, err, false,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                keel_log("KVM_SET_GSI_ROUTING unavailable (%s): MSIs go through "
                         "KVM_SIGNAL_MSI or INTx", keel_errno_name(err));
            }
            return -ENOTSUP;
        }
        return -err;
    }
    return 0;
}

/* ---- vCPUs ------------------------------------------------------------------ */

/* The run area of the vCPU running in this thread, for the kick handler. */
static __thread struct kvm_run *thread_run;

static void kick_signal_handler(int signo)
{
    struct kvm_run *run = thread_run;
    (void)signo;
    if (run) {
        run->immediate_exit = 1;
    }
}

static bool vcpu_uses_immediate_exit(Vcpu *vcpu)
{
    return vcpu->vm->caps->immediate_exit;
}

int vcpu_create(Vm *vm, Vcpu *vcpu, int index)
{
    void *run;

    memset(vcpu, 0, sizeof(*vcpu));
    vcpu->vm = vm;
    vcpu->index = index;
    /* KVM makes the vCPU id the LAPIC ID: use the topology's APIC ID. */
    vcpu->id = (int)topo_apic_id(&vm->topo, (unsigned)index);
    pthread_mutex_init(&vcpu->park_lock, NULL);
    pthread_cond_init(&vcpu->park_cond, NULL);
    vcpu->fd = KEEL_RETRY_EINTR(ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)vcpu->id));
    if (vcpu->fd < 0) {
        fprintf(stderr, "keel-vmm: KVM_CREATE_VCPU (vCPU %d, APIC ID %d): %s\n", index,
                vcpu->id, strerror(errno));
        return -1;
    }
    run = mmap(NULL, (size_t)vm->vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
               vcpu->fd, 0);
    if (run == MAP_FAILED) {
        fprintf(stderr, "keel-vmm: mmap of the vCPU run area: %s\n", strerror(errno));
        close(vcpu->fd);
        vcpu->fd = -1;
        return -1;
    }
    vcpu->run = run;
    if (vcpu_setup_cpuid(vcpu) < 0) {
        vcpu_destroy(vcpu);
        return -1;
    }
    if (index != 0 && vm->caps->mp_state) {
        /* An AP: asleep until the BSP's INIT/SIPI, which the in-kernel
         * LAPIC delivers (KVM already starts non-BSP vCPUs so with an
         * in-kernel irqchip; saying it keeps that independent of the
         * kernel's choice). */
        struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_UNINITIALIZED };
        if (ioctl(vcpu->fd, KVM_SET_MP_STATE, &mp) < 0) {
            fprintf(stderr, "keel-vmm: KVM_SET_MP_STATE (vCPU %d): %s\n", index,
                    strerror(errno));
            vcpu_destroy(vcpu);
            return -1;
        }
    }
    return 0;
}

int vcpus_create_all(Vm *vm, const CpuTopology *topo)
{
    const KvmCaps *c = vm->caps;

    vm->topo = *topo;
    if ((int)topo->cpus > c->max_vcpus || (int)topo_max_apic_id(topo) >= c->max_vcpu_id) {
        fprintf(stderr, "keel-vmm: -smp %u (APIC IDs up to %u): this KVM allows %d vCPUs "
                "with ids below %d\n", topo->cpus, topo_max_apic_id(topo), c->max_vcpus,
                c->max_vcpu_id);
        return -1;
    }
    vm->vcpus = calloc(topo->cpus, sizeof(Vcpu));
    if (!vm->vcpus) {
        fprintf(stderr, "keel-vmm: out of memory for %u vCPUs\n", topo->cpus);
        return -1;
    }
    for (unsigned i = 0; i < topo->cpus; i++) {
        if (vcpu_create(vm, &vm->vcpus[i], (int)i) < 0) {
            return -1;
        }
        vm->nr_vcpus++;
    }
    return 0;
}

int vcpus_start_all(Vm *vm)
{
    for (int i = 0; i < vm->nr_vcpus; i++) {
        if (vcpu_start_thread(&vm->vcpus[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

void vcpus_stop_join_all(Vm *vm)
{
    /* Kick them all first, so they leave KVM_RUN in parallel. */
    for (int i = 0; i < vm->nr_vcpus; i++) {
        vcpu_kick(&vm->vcpus[i]);
    }
    for (int i = 0; i < vm->nr_vcpus; i++) {
        vcpu_stop_join(&vm->vcpus[i]);
    }
}

void vcpus_destroy_all(Vm *vm)
{
    for (int i = 0; i < vm->nr_vcpus; i++) {
        vcpu_destroy(&vm->vcpus[i]);
    }
    free(vm->vcpus);
    vm->vcpus = NULL;
    vm->nr_vcpus = 0;
}

void vcpu_destroy(Vcpu *vcpu)
{
    if (vcpu->run) {
        munmap(vcpu->run, (size_t)vcpu->vm->vcpu_mmap_size);
        vcpu->run = NULL;
    }
    if (vcpu->fd >= 0) {
        close(vcpu->fd);
        vcpu->fd = -1;
    }
}

static void install_kick_handler(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_signal_handler;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: KVM_RUN must come back with EINTR. */
    sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
}

void vcpu_thread_prepare(Vcpu *vcpu)
{
    sigset_t set;
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, install_kick_handler);
    thread_run = vcpu->run;
    if (vcpu_uses_immediate_exit(vcpu)) {
        /* Threads from keel_thread_create start with async signals blocked;
         * the kick must reach this one.  The handler sets immediate_exit,
         * so a kick between our stop check and KVM_RUN is not lost. */
        sigemptyset(&set);
        sigaddset(&set, VCPU_KICK_SIGNAL);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    } else {
        /* Old kernels: keep the kick blocked in user space and let KVM
         * unblock it only while the guest runs; a pending kick then makes
         * the next KVM_RUN return EINTR at once. */
        union {
            struct kvm_signal_mask head;
            uint8_t raw[sizeof(struct kvm_signal_mask) + 8];
        } mask;
        sigset_t cur;

        pthread_sigmask(SIG_BLOCK, NULL, &cur);
        sigdelset(&cur, VCPU_KICK_SIGNAL);
        mask.head.len = 8;      /* the kernel's sigset size on x86-64 */
        memcpy(mask.raw + sizeof(struct kvm_signal_mask), &cur, 8);
        if (ioctl(vcpu->fd, KVM_SET_SIGNAL_MASK, &mask) < 0) {
            fprintf(stderr, "keel-vmm: KVM_SET_SIGNAL_MASK: %s\n", strerror(errno));
        }
        sigemptyset(&set);
        sigaddset(&set, VCPU_KICK_SIGNAL);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
    }
}

static void vcpu_send_kick(Vcpu *vcpu)
{
    if (vcpu->thread_started) {
        pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
    }
}

void vcpu_kick(Vcpu *vcpu)
{
    __atomic_store_n(&vcpu->stop, true, __ATOMIC_RELEASE);
    pthread_mutex_lock(&vcpu->park_lock);
    pthread_cond_broadcast(&vcpu->park_cond);   /* a parked vCPU sees stop */
    pthread_mutex_unlock(&vcpu->park_lock);
    vcpu_send_kick(vcpu);
}

void vcpu_pause(Vcpu *vcpu)
{
    bool held = keel_global_mutex_held();

    pthread_mutex_lock(&vcpu->park_lock);
    vcpu->park = true;
    pthread_mutex_unlock(&vcpu->park_lock);
    if (!vcpu->thread_started) {
        return;
    }
    vcpu_send_kick(vcpu);
    if (held) {
        keel_global_mutex_unlock();     /* it may need it to finish an exit */
    }
    pthread_mutex_lock(&vcpu->park_lock);
    while (vcpu->park && !vcpu->parked) {
        pthread_cond_wait(&vcpu->park_cond, &vcpu->park_lock);
    }
    pthread_mutex_unlock(&vcpu->park_lock);
    if (held) {
        keel_global_mutex_lock();
    }
}

void vcpu_resume(Vcpu *vcpu)
{
    pthread_mutex_lock(&vcpu->park_lock);
    vcpu->park = false;
    pthread_cond_broadcast(&vcpu->park_cond);
    pthread_mutex_unlock(&vcpu->park_lock);
}

/* Waits while a pause is requested (and no stop); false when the vCPU must
 * leave the run loop. */
static void vcpu_park_if_asked(Vcpu *vcpu)
{
    pthread_mutex_lock(&vcpu->park_lock);
    if (vcpu->park) {
        vcpu->parked = true;
        pthread_cond_broadcast(&vcpu->park_cond);
        while (vcpu->park && !__atomic_load_n(&vcpu->stop, __ATOMIC_ACQUIRE)) {
            pthread_cond_wait(&vcpu->park_cond, &vcpu->park_lock);
        }
        vcpu->parked = false;
    }
    pthread_mutex_unlock(&vcpu->park_lock);
}

/* Consume a pending kick (signal-mask mode), so the next KVM_RUN can run. */
static void vcpu_eat_kick(void)
{
    sigset_t set;
    struct timespec zero = { 0, 0 };

    sigemptyset(&set);
    sigaddset(&set, VCPU_KICK_SIGNAL);
    while (sigtimedwait(&set, NULL, &zero) > 0) {
    }
}

static uint64_t vcpu_rip(Vcpu *vcpu)
{
    struct kvm_regs regs;

    if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) < 0) {
        return ~0ull;
    }
    return regs.rip;
}

static void vcpu_handle_io(Vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    uint8_t *p = (uint8_t *)run + run->io.data_offset;
    unsigned size = run->io.size;

    for (uint32_t i = 0; i < run->io.count; i++, p += size) {
        uint64_t v = 0;
        if (run->io.direction == KVM_EXIT_IO_OUT) {
            memcpy(&v, p, size);
            bus_write(&vcpu->vm->pio_bus, run->io.port, size, v);
        } else {
            bus_read(&vcpu->vm->pio_bus, run->io.port, size, &v);
            memcpy(p, &v, size);
        }
    }
}

static void vcpu_handle_mmio(Vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    unsigned len = run->mmio.len;
    uint64_t v = 0;

    if (len > 8) {
        return;
    }
    if (run->mmio.is_write) {
        memcpy(&v, run->mmio.data, len);
        bus_write(&vcpu->vm->mmio_bus, run->mmio.phys_addr, len, v);
    } else {
        bus_read(&vcpu->vm->mmio_bus, run->mmio.phys_addr, len, &v);
        memcpy(run->mmio.data, &v, len);
    }
}

static const char *internal_suberror_name(uint32_t sub)
{
    switch (sub) {
    case KVM_INTERNAL_ERROR_EMULATION: return "emulation failure";
    case KVM_INTERNAL_ERROR_SIMUL_EX: return "exception during exception delivery";
    case KVM_INTERNAL_ERROR_DELIVERY_EV: return "event delivery failed";
#ifdef KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
    case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: return "unexpected exit reason";
#endif
    }
    return "unknown";
}

static void vcpu_report_internal_error(Vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    uint32_t sub = run->internal.suberror;
    uint32_t n = run->internal.ndata;

    fprintf(stderr, "keel-vmm: KVM internal error: suberror %u (%s), guest rip=0x%llx",
            sub, internal_suberror_name(sub), (unsigned long long)vcpu_rip(vcpu));
    if (sub == KVM_INTERNAL_ERROR_EMULATION && n >= 3 && (run->internal.data[0] & 1)) {
        /* data[0] = flags (bit 0: instruction bytes follow), then a length
         * byte and up to 15 bytes of the instruction that failed. */
        const uint8_t *bytes = (const uint8_t *)&run->internal.data[1];
        unsigned len = bytes[0] < 15 ? bytes[0] : 15;
        fprintf(stderr, ", instruction bytes:");
        for (unsigned i = 0; i < len; i++) {
            fprintf(stderr, " %02x", bytes[1 + i]);
        }
    } else {
        if (n > 16) {
            n = 16;
        }
        for (uint32_t i = 0; i < n; i++) {
            fprintf(stderr, "%s0x%llx", i ? " " : ", data: ",
                    (unsigned long long)run->internal.data[i]);
        }
    }
    fputc('\n', stderr);
    if (vcpu->vm->caps->pvm_host && sub == KVM_INTERNAL_ERROR_EMULATION) {
        fprintf(stderr, "keel-vmm: this host (kvm_pvm) cannot emulate that instruction: guest "
                "kernel-mode code runs in KVM's instruction emulator here, which does not "
                "support it (a real KVM host runs it natively)\n");
    }
}

static const char *exit_reason_name(uint32_t reason)
{
    switch (reason) {
    case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "KVM_EXIT_EXCEPTION";
    case KVM_EXIT_HYPERCALL: return "KVM_EXIT_HYPERCALL";
    case KVM_EXIT_DEBUG: return "KVM_EXIT_DEBUG";
    case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
    case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
    case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "KVM_EXIT_SYSTEM_EVENT";
    }
    return "?";
}

/* Handles one exit; returns false when the vCPU must stop. */
static bool vcpu_handle_exit(Vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    Vm *vm = vcpu->vm;

    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        vcpu_handle_io(vcpu);
        return true;
    case KVM_EXIT_MMIO:
        vcpu_handle_mmio(vcpu);
        return true;
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
        return true;
    case KVM_EXIT_SHUTDOWN:
        /* x86 shutdown = a triple fault (KVM does not emulate the reset that
         * follows on real hardware). */
        fprintf(stderr, "keel-vmm: guest triple-faulted (KVM_EXIT_SHUTDOWN) at rip=0x%llx\n",
                (unsigned long long)vcpu_rip(vcpu));
        vm_request_stop(vm, VM_STOP_TRIPLE_FAULT, 2);
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_RESET ||
            run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
            vm_request_stop(vm, VM_STOP_RESET, 0);
        } else {
            fprintf(stderr, "keel-vmm: guest crashed (KVM_EXIT_SYSTEM_EVENT type %u)\n",
                    run->system_event.type);
            vm_request_stop(vm, VM_STOP_ERROR, 2);
        }
        return false;
    case KVM_EXIT_INTERNAL_ERROR:
        vcpu_report_internal_error(vcpu);
        vm_request_stop(vm, VM_STOP_ERROR, 2);
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        fprintf(stderr, "keel-vmm: KVM_EXIT_FAIL_ENTRY: hardware entry failure reason 0x%llx, "
                "guest rip=0x%llx\n",
                (unsigned long long)run->fail_entry.hardware_entry_failure_reason,
                (unsigned long long)vcpu_rip(vcpu));
        vm_request_stop(vm, VM_STOP_ERROR, 2);
        return false;
    default:
        fprintf(stderr, "keel-vmm: unexpected KVM exit %u (%s), guest rip=0x%llx\n",
                run->exit_reason, exit_reason_name(run->exit_reason),
                (unsigned long long)vcpu_rip(vcpu));
        vm_request_stop(vm, VM_STOP_ERROR, 2);
        return false;
    }
}

/* ---- the ExtINT watchdog (see kvm.h, vcpu_start_thread) ---------------------- */

bool pic_request_stuck(uint8_t irr_before, uint8_t imr_before, uint8_t irr_now, uint8_t imr_now)
{
    return ((irr_before & ~imr_before) & (irr_now & ~imr_now)) != 0;
}

/* In the vCPU thread, out of KVM_RUN: KVM_SET_MP_STATE raises KVM_REQ_EVENT
 * (since Linux 2.6.3x), so the next KVM_RUN looks at the PIC again.  The
 * state written is the state read: nothing else changes. */
static void vcpu_recheck_events(Vcpu *vcpu)
{
    struct kvm_mp_state mp;

    if (ioctl(vcpu->fd, KVM_GET_MP_STATE, &mp) < 0 ||
        ioctl(vcpu->fd, KVM_SET_MP_STATE, &mp) < 0) {
        return;
    }
    if (!vcpu->recheck_reported) {
        vcpu->recheck_reported = true;
        fprintf(stderr, "keel-vmm: a PIC interrupt stayed pending for 100+ ms: asked KVM to "
                "evaluate interrupts again (it does not when the guest unmasks LINT0)\n");
    }
}

static void *extint_watch_fn(void *opaque)
{
    Vcpu *vcpu = opaque;
    struct kvm_irqchip last = { .chip_id = KVM_IRQCHIP_PIC_MASTER };
    bool have_last = false;

    pthread_mutex_lock(&vcpu->watch_lock);
    while (!vcpu->watch_stop) {
        struct kvm_irqchip now = { .chip_id = KVM_IRQCHIP_PIC_MASTER };
        struct timespec until;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&vcpu->watch_cond, &vcpu->watch_lock, &until);
        if (vcpu->watch_stop) {
            break;
        }
        if (ioctl(vcpu->vm->vm_fd, KVM_GET_IRQCHIP, &now) < 0) {
            break;      /* no in-kernel PIC: nothing to watch */
        }
        if (have_last && pic_request_stuck(last.chip.pic.irr, last.chip.pic.imr,
                                           now.chip.pic.irr, now.chip.pic.imr)) {
            __atomic_store_n(&vcpu->recheck_events, true, __ATOMIC_RELEASE);
            pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
        }
        last = now;
        have_last = true;
    }
    pthread_mutex_unlock(&vcpu->watch_lock);
    return NULL;
}

void vcpu_run_loop(Vcpu *vcpu)
{
    bool immediate_exit = vcpu_uses_immediate_exit(vcpu);

    for (;;) {
        vcpu_park_if_asked(vcpu);
        if (__atomic_load_n(&vcpu->stop, __ATOMIC_ACQUIRE) ||
            vm_stop_reason(vcpu->vm) != VM_STOP_NONE) {
            break;
        }
        if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                if (immediate_exit) {
                    vcpu->run->immediate_exit = 0;
                } else {
                    vcpu_eat_kick();
                }
                if (__atomic_exchange_n(&vcpu->recheck_events, false, __ATOMIC_ACQ_REL)) {
                    vcpu_recheck_events(vcpu);
                }
                continue;
            }
            fprintf(stderr, "keel-vmm: KVM_RUN: %s\n", strerror(errno));
            vm_request_stop(vcpu->vm, VM_STOP_ERROR, 2);
            break;
        }
        if (!vcpu_handle_exit(vcpu)) {
            break;
        }
    }
}

static void *vcpu_thread_fn(void *opaque)
{
    Vcpu *vcpu = opaque;

    __atomic_store_n(&vcpu->tid, (long)syscall(SYS_gettid), __ATOMIC_RELAXED);
    vcpu_thread_prepare(vcpu);
    vcpu_run_loop(vcpu);
    thread_run = NULL;
    /* Out of the run loop counts as parked: a pause must not wait for us. */
    pthread_mutex_lock(&vcpu->park_lock);
    vcpu->parked = true;
    pthread_cond_broadcast(&vcpu->park_cond);
    pthread_mutex_unlock(&vcpu->park_lock);
    return NULL;
}

int vcpu_start_thread(Vcpu *vcpu)
{
    const char *no_watch;
    char name[16];
    int r;

    snprintf(name, sizeof(name), "vcpu%d", vcpu->id);
    r = keel_thread_create(&vcpu->thread, name, vcpu_thread_fn, vcpu);
    if (r < 0) {
        fprintf(stderr, "keel-vmm: cannot start the vCPU thread: %s\n", strerror(-r));
        return -1;
    }
    vcpu->thread_started = true;
    pthread_mutex_init(&vcpu->watch_lock, NULL);
    pthread_cond_init(&vcpu->watch_cond, NULL);
    snprintf(name, sizeof(name), "extint%d", vcpu->id);
    /* Without it the guest still runs; only the rare lost tick is not
     * recovered.  The lab turns it off to show the hang it prevents
     * (tests/kvm-lab, KEEL_VMM_NO_EXTINT_WATCH=1). */
    no_watch = getenv("KEEL_VMM_NO_EXTINT_WATCH");
    vcpu->watch_started = !(no_watch && *no_watch) &&
        keel_thread_create(&vcpu->watch_thread, name, extint_watch_fn, vcpu) == 0;
    return 0;
}

void vcpu_stop_join(Vcpu *vcpu)
{
    if (!vcpu->thread_started) {
        return;
    }
    if (vcpu->watch_started) {
        pthread_mutex_lock(&vcpu->watch_lock);
        vcpu->watch_stop = true;
        pthread_cond_signal(&vcpu->watch_cond);
        pthread_mutex_unlock(&vcpu->watch_lock);
        pthread_join(vcpu->watch_thread, NULL);
        vcpu->watch_started = false;
    }
    vcpu_kick(vcpu);
    pthread_join(vcpu->thread, NULL);
    vcpu->thread_started = false;
    pthread_cond_destroy(&vcpu->watch_cond);
    pthread_mutex_destroy(&vcpu->watch_lock);
}
