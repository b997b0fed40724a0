/*
 * Interrupts and the eventfds KVM signals or watches (contract in
 * vmm/kvm-irq.h): IRQ lines, MSIs, ioeventfd, irqfd and the GSI routing
 * table with its MSI routes.
 */
#include "config.h"

#include "vmm/kvm-internal.h"
#include "compat/osdep.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

/* ---- the IRQ allocator (pure bookkeeping) ------------------------------------ */

void kvm_irq_allocator_init(KvmIrqAllocator *a, int nr_gsis)
{
    memset(a, 0, sizeof(*a));
    a->nr_gsis = nr_gsis < 0 ? 0 : (unsigned)nr_gsis > KVM_IRQ_MAX_GSI ? KVM_IRQ_MAX_GSI
                                                                     : (unsigned)nr_gsis;
}

int kvm_irq_claim_line(KvmIrqAllocator *a, unsigned gsi, const char *owner, bool shared)
{
    if (gsi >= KVM_IRQ_NR_PINS) {
        return -EINVAL;
    }
    if (a->line_users[gsi]) {
        /* Edge-triggered ISA lines are one device's; level-triggered ones
         * (PCI INTx, the SCI) are wire-ORed by the irqchip. */
        if (!shared || !a->line_shared[gsi]) {
            return -EBUSY;
        }
        a->line_users[gsi]++;
        return 0;
    }
    a->line_owner[gsi] = owner;
    a->line_users[gsi] = 1;
    a->line_shared[gsi] = shared;
    return 0;
}

void kvm_irq_release_line(KvmIrqAllocator *a, unsigned gsi)
{
    if (gsi < KVM_IRQ_NR_PINS && a->line_users[gsi] && --a->line_users[gsi] == 0) {
        a->line_owner[gsi] = NULL;
        a->line_shared[gsi] = false;
    }
}

const char *kvm_irq_line_owner(const KvmIrqAllocator *a, unsigned gsi)
{
    return gsi < KVM_IRQ_NR_PINS ? a->line_owner[gsi] : NULL;
}

int kvm_irq_alloc_intx(KvmIrqAllocator *a, const char *owner)
{
    static const unsigned lines[] = KVM_IRQ_INTX_LINES;
    const unsigned n = sizeof(lines) / sizeof(lines[0]);

    for (unsigned tries = 0; tries < n; tries++) {
        unsigned gsi = lines[a->next_intx++ % n];
        if (kvm_irq_claim_line(a, gsi, owner, true) == 0) {
            return (int)gsi;
        }
    }
    return -EBUSY;
}

int kvm_irq_alloc_gsi(KvmIrqAllocator *a)
{
    for (unsigned gsi = KVM_IRQ_NR_PINS; gsi < a->nr_gsis; gsi++) {
        uint64_t bit = 1ull << (gsi % 64);
        if (!(a->gsi_used[gsi / 64] & bit)) {
            a->gsi_used[gsi / 64] |= bit;
            return (int)gsi;
        }
    }
    return -ENOSPC;
}

void kvm_irq_free_gsi(KvmIrqAllocator *a, int gsi)
{
    if (gsi >= (int)KVM_IRQ_NR_PINS && (unsigned)gsi < KVM_IRQ_MAX_GSI) {
        a->gsi_used[gsi / 64] &= ~(1ull << (gsi % 64));
    }
}

/* ---- the irqchip, MSIs and eventfds ------------------------------------------ */

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
            keel_seam_primary_failed(&kvm_signal_msi_seam, errno);
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
            keel_seam_primary_failed(&kvm_ioeventfd_seam, errno);
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
            keel_seam_primary_failed(&kvm_irqfd_seam, errno);
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
    gsi = kvm_irq_alloc_gsi(&vm->irqs);
    if (gsi < 0) {
        return gsi;
    }
    n = realloc(vm->msi_routes, (vm->nr_msi_routes + 1) * sizeof(*n));
    if (!n) {
        kvm_irq_free_gsi(&vm->irqs, gsi);
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

int vm_msi_route_remove(Vm *vm, int gsi)
{
    for (int i = 0; i < vm->nr_msi_routes; i++) {
        if (vm->msi_routes[i].gsi == (uint32_t)gsi) {
            vm->msi_routes[i] = vm->msi_routes[--vm->nr_msi_routes];
            kvm_irq_free_gsi(&vm->irqs, gsi);
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
            if (__atomic_compare_exchange_n(&kvm_gsi_routing_errno, &expected, err, false,
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
