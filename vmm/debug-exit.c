/*
 * QEMU's isa-debug-exit, always present at port 0xf4: writing V (any width)
 * stops the VM; keel-vmm then exits with status (V << 1) | 1, so a guest
 * can report pass/fail and never be mistaken for a clean exit (0).
 * Lock-free: recording the stop is atomic and touches no device state.
 */
#include "config.h"

#include "vmm/devices.h"

static void debug_exit_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    Vm *vm = opaque;

    (void)offset;
    (void)size;
    vm_request_stop(vm, VM_STOP_DEBUG_EXIT, (int)((value << 1) | 1));
}

static const BusOps debug_exit_ops = {
    .read = NULL,   /* reads float (all-ones) */
    .write = debug_exit_write,
};

int debug_exit_init(Vm *vm)
{
    /* Four ports, so an outl at 0xf4 is claimed whole. */
    return bus_add(&vm->pio_bus, DEBUG_EXIT_PORT, 4, &debug_exit_ops, vm, BUS_LOCKLESS,
                   "isa-debug-exit");
}
