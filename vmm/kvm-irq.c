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
