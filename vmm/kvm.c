/*
 * The KVM virtual machine itself: /dev/kvm and the VM fd, the in-kernel
 * irqchip and PIT, the real-mode TSS and identity map, and the stop request
 * (contract in vmm/kvm.h).  Capabilities, guest RAM, interrupt routing and
 * the vCPUs are in kvm-caps.c, kvm-memory.c, kvm-irq.c and kvm-vcpu.c.
 */
#include "config.h"

#include "vmm/kvm-internal.h"
#include "compat/osdep.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

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

    memset(vm, 0, sizeof(*vm));
    vm->kvm_fd = vm->vm_fd = vm->ram_fd = -1;
    vm->caps = c;
    kvm_irq_allocator_init(&vm->irqs, c->irq_routing);    /* MSI GSIs from 24 */
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

    if (vm_ram_init(vm, ram_size, backing) < 0) {
        goto fail;
    }
    return 0;

fail:
    vm_destroy(vm);
    return -1;
}

void vm_destroy(Vm *vm)
{
    vm_ram_release(vm);
    if (vm->vm_fd >= 0) {
        close(vm->vm_fd);
    }
    if (vm->kvm_fd >= 0) {
        close(vm->kvm_fd);
    }
    vm->vm_fd = vm->kvm_fd = -1;
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
