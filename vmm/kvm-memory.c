/*
 * Guest RAM (contract in vmm/kvm-memory.h): the backing (memfd or anonymous
 * memory, 2 MiB aligned, transparent huge pages asked for), its KVM memory
 * slots around the PCI hole, and guest-physical to host translation.
 */
#include "config.h"

#include "vmm/kvm-internal.h"
#include "compat/osdep.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Guest RAM: a memfd, or anonymous memory (always possible). */
static KeelSeam memfd_seam = KEEL_SEAM_INIT(KEEL_PATH_MEMFD, "memfd", "anonymous");

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
VmRamBacking vm_ram_auto_choice(const char **reason)
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
static int ram_alloc(Vm *vm, uint64_t size, VmRamBacking backing)
{
    const char *why = "default";
    bool thp;
    void *p;

    bool explicit_memfd = backing == VM_RAM_MEMFD;

    vm->ram_fd = -1;
    if (backing == VM_RAM_AUTO) {
        backing = vm_ram_auto_choice(&why);
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

int vm_ram_init(Vm *vm, uint64_t ram_size, VmRamBacking backing)
{
    uint64_t low = ram_size < VM_PCI_HOLE_START ? ram_size : VM_PCI_HOLE_START;
    uint64_t high = ram_size - low;

    if (ram_alloc(vm, ram_size, backing) < 0) {
        return -1;
    }
    vm->low_ram_end = low;
    if (vm_add_slot(vm, 0, low, vm->ram) < 0) {
        return -1;
    }
    if (high && vm_add_slot(vm, VM_HIGH_RAM_START, high, vm->ram + low) < 0) {
        return -1;
    }
    return 0;
}

void vm_ram_release(Vm *vm)
{
    if (vm->ram) {
        munmap(vm->ram, vm->ram_size);
        vm->ram = NULL;
    }
    if (vm->ram_fd >= 0) {
        close(vm->ram_fd);
    }
    vm->ram_fd = -1;
    vm->nr_slots = 0;
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
