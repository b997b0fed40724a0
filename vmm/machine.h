/*
 * vmm/machine.h — the machine: what keel-vmm runs and what its monitors see.
 *
 * It owns
 *   - the vCPUs (vmm_machine_create_vcpus): their threads, parking them for
 *     stop and unparking them for cont, query-cpus-fast;
 *   - the iothreads by id (-object iothread: vmm_machine_add_iothread,
 *     vmm_machine_iothread, query-iothreads);
 *   - a registry of devices by id (vmm_machine_add_device/find/foreach),
 *     QEMU's -device id namespace: each entry is an id, a kind ("isa-serial",
 *     "virtio-blk-pci", ...) and the device's own pointer, which the
 *     registry does not own;
 *   - the interrupt lines: legacy IRQ lines and PCI INTx lines are claimed
 *     through it, MSI routes allocated through it (the bookkeeping is
 *     vmm/kvm-irq.h's KvmIrqAllocator of the attached Vm, as KVM numbers
 *     GSIs per VM);
 *   - the run state (QEMU's RunState names), stop/cont with the reason, and
 *     the events a monitor broadcasts (STOP, RESUME, SHUTDOWN, RESET,
 *     BLOCK_IO_ERROR).
 * The Vm itself (RAM, irqchip: vmm/kvm.h) is attached, not owned: main()
 * creates and destroys it around the machine's vCPUs.
 *
 * keel-vmm's main() creates one VmmMachine, adds the -object iothreads,
 * then opens and realizes the drives (vmm/virtio-blk.h), which take their
 * queues' contexts, INTx lines and registry entries from it.  VmmMachineOps
 * is what the machine asks of them: draining and retrying block I/O, the
 * drives' state, block_resize.  With -machine none there is no guest: no
 * Vm, no vCPUs, and the ops are NULL (stop/cont only change the state, the
 * queries return the iothreads and nothing else).  The QMP and HMP
 * monitors (vmm/qmp.h) listen for events and call in.
 *
 * State machine (as QEMU's): prelaunch (-S) / paused / io-error / shutdown
 * (-no-shutdown) --cont--> running --stop--> paused; a drive with werror=stop
 * failing a request moves running → io-error; a guest shutdown moves to
 * shutdown.  vmm_machine_stop() parks the vCPUs and lets queued I/O finish
 * before it changes the state and emits STOP, so a client that sees STOP
 * sees a quiet machine; cont retries held I/O, then unparks the vCPUs.
 *
 * Thread rules: the main thread with the global mutex held (the main loop's
 * handlers and monitors), except
 *   - vmm_machine_io_error(), which any thread may call (a drive's
 *     iothread): it bounces into the main loop;
 *   - vmm_machine_stop_vcpus(), called WITHOUT the global mutex (a vCPU may
 *     be waiting for it to finish an exit);
 *   - vmm_machine_iothread()/vmm_machine_iothread_context() lookups, any
 *     thread once the iothreads are set up (the table does not change
 *     after start-up).
 * Listeners run in the main thread.
 */
#ifndef KEEL_VMM_MACHINE_H
#define KEEL_VMM_MACHINE_H

#include "vmm/topology.h"
#include "loop/iothread.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct Vm;
struct Vcpu;
struct VmmIOThread;

typedef enum VmmRunState {
    VMM_RUN_PRELAUNCH,      /* -S: not started yet */
    VMM_RUN_RUNNING,
    VMM_RUN_PAUSED,         /* stop */
    VMM_RUN_IO_ERROR,       /* a werror/rerror=stop drive failed a request */
    VMM_RUN_SHUTDOWN,       /* the guest shut down and -no-shutdown kept us */
    VMM_RUN_INTERNAL_ERROR, /* KVM could not go on */
} VmmRunState;

typedef struct VmmCpuInfo {
    int index;
    long thread_id;
    int socket_id, core_id, thread_in_core;     /* its place in -smp's topology */
} VmmCpuInfo;

typedef struct VmmIOThreadInfo {
    const char *id;
    long thread_id;
    int64_t poll_max_ns, poll_grow, poll_shrink;
} VmmIOThreadInfo;

typedef struct VmmBlockInfo {
    const char *device;     /* the drive's id, or "virtioN" */
    const char *qdev;       /* the PCI function's name */
    const char *file;
    bool readonly;
    uint64_t size;          /* bytes */
    const char *io_status;  /* "ok", "failed", "nospace" */
    const char *cache;      /* writeback, none, ... */
    /* query-blockstats */
    uint64_t rd_operations, wr_operations, flush_operations;
    uint64_t rd_bytes, wr_bytes;
    uint64_t rd_total_time_ns, wr_total_time_ns, flush_total_time_ns;
    uint64_t failed_rd_operations, failed_wr_operations, failed_flush_operations;
} VmmBlockInfo;

#define VMM_MACHINE_MAX_INFO 16

typedef struct VmmMachineOps {
    /* Let queued I/O finish (the vCPUs are parked already). */
    void (*pause)(void *opaque);
    /* Resubmit requests held by werror/rerror=stop (in order); the vCPUs
     * are unparked after it. */
    void (*resume)(void *opaque);
    /* system_reset: whether the machine reset itself; false means it cannot
     * (keel-vmm has no reboot, like QEMU's -no-reboot: a reset ends it). */
    bool (*reset)(void *opaque);
    int (*query_block)(void *opaque, VmmBlockInfo *out, int max);
    /* Grows @device's image to @size bytes and tells the guest. */
    int (*block_resize)(void *opaque, const char *device, uint64_t size, char *err,
                        size_t errlen);
} VmmMachineOps;

/* An event for the monitors: @name (QEMU's), @data_json: the "data" member
 * as JSON text (an object), never NULL. */
typedef void VmmEventListener(void *opaque, const char *name, const char *data_json);

typedef struct VmmMachine VmmMachine;

/* @ops may be NULL (-machine none); @name may be NULL. */
VmmMachine *vmm_machine_new(const char *name, const VmmMachineOps *ops, void *opaque,
                            bool start_paused, bool no_shutdown);
void vmm_machine_free(VmmMachine *m);

const char *vmm_machine_name(const VmmMachine *m);
VmmRunState vmm_machine_state(const VmmMachine *m);
const char *vmm_run_state_name(VmmRunState s);
bool vmm_machine_running(const VmmMachine *m);
const VmmMachineOps *vmm_machine_ops(const VmmMachine *m, void **opaque);

void vmm_machine_add_listener(VmmMachine *m, VmmEventListener *fn, void *opaque);
void vmm_machine_remove_listener(VmmMachine *m, VmmEventListener *fn, void *opaque);
/* Broadcasts an event (the QMP timestamp is added by each monitor). */
void vmm_machine_emit(VmmMachine *m, const char *name, const char *data_json);

/* stop: running → @why (paused, io-error, shutdown, internal-error): parks
 * the vCPUs, drains, emits STOP.  No-op when not running. */
void vmm_machine_stop(VmmMachine *m, VmmRunState why);
/* cont: -1 with a message (QEMU's wording) when the state forbids it. */
int vmm_machine_cont(VmmMachine *m, char *err, size_t errlen);
/* The first vCPU start: running unless -S. */
void vmm_machine_start(VmmMachine *m);

/* The guest (or a monitor) shut the machine down: emits SHUTDOWN with
 * @reason (QEMU's ShutdownCause names); returns whether the process should
 * exit (false with -no-shutdown, where the machine stops in "shutdown"). */
bool vmm_machine_shutdown(VmmMachine *m, bool guest, const char *reason);

/* quit / Ctrl-A x / a signal: the main loop ends.  With a @shutdown_reason
 * (QMP quit: "host-qmp-quit"), SHUTDOWN is emitted when the main loop
 * acts on it (vmm_machine_quit_requested), i.e. after the command's reply,
 * as in QEMU. */
void vmm_machine_request_quit(VmmMachine *m, const char *shutdown_reason);
bool vmm_machine_quit_requested(VmmMachine *m);
/* Called (main thread) when a quit is requested, so the main loop wakes. */
void vmm_machine_set_quit_notify(VmmMachine *m, void (*fn)(void *opaque), void *opaque);

/* A drive failed a request under a stop policy (any thread): in the main
 * loop, BLOCK_IO_ERROR is emitted and the machine stops in io-error. */
void vmm_machine_io_error(VmmMachine *m, const char *device, bool is_write, int error,
                          bool stopping);

/* ---- the guest: Vm and vCPUs ---------------------------------------------- */

/* Attaches the Vm the vCPUs and interrupt lines belong to (main thread,
 * after vm_create; the caller destroys it after vmm_machine_destroy_vcpus). */
void vmm_machine_attach_vm(VmmMachine *m, struct Vm *vm);
struct Vm *vmm_machine_vm(const VmmMachine *m);     /* NULL: -machine none */

/* Makes the vCPUs of @topo in the attached Vm (KVM's limits checked, CPUID
 * set up).  Prints and returns -1 on failure; the ones made are destroyed
 * by vmm_machine_destroy_vcpus (or vmm_machine_free) either way. */
int vmm_machine_create_vcpus(VmmMachine *m, const CpuTopology *topo);
int vmm_machine_nr_vcpus(const VmmMachine *m);
/* vCPU @index (0 = the bootstrap CPU), or NULL. */
struct Vcpu *vmm_machine_vcpu(VmmMachine *m, int index);
/* One thread per vCPU, each starting parked: vmm_machine_start (or cont)
 * lets them run.  -1 if one cannot start (the started ones stay parked;
 * vmm_machine_stop_vcpus ends them). */
int vmm_machine_start_vcpus(VmmMachine *m);
/* Kicks every vCPU thread out of KVM_RUN and joins it.  Without the global
 * mutex. */
void vmm_machine_stop_vcpus(VmmMachine *m);
/* Joins (if still running) and destroys the vCPUs. */
void vmm_machine_destroy_vcpus(VmmMachine *m);
/* query-cpus-fast: index, thread id, place in -smp's topology. */
int vmm_machine_query_cpus(VmmMachine *m, VmmCpuInfo *out, int max);

/* ---- iothreads (-object iothread) ----------------------------------------- */

/* Starts the iothread @spec describes (id, poll-max-ns, poll-grow,
 * poll-shrink; negative: the default).  -1 with a message in @err (the id
 * is taken, or the thread cannot start). */
int vmm_machine_add_iothread(VmmMachine *m, const struct VmmIOThread *spec, char *err,
                             size_t errlen);
/* The iothread @id, its AioContext; NULL when there is none. */
KeelIOThread *vmm_machine_iothread(VmmMachine *m, const char *id);
KeelAioContext *vmm_machine_iothread_context(VmmMachine *m, const char *id);
int vmm_machine_nr_iothreads(const VmmMachine *m);
/* query-iothreads: the machine's iothreads, in the order they were added. */
int vmm_machine_query_iothreads(VmmMachine *m, VmmIOThreadInfo *out, int max);

/* ---- devices by id ---------------------------------------------------------- */

/* Registers @dev (not owned) as @id of @kind (both copied).  0, or -EINVAL
 * (empty id or kind) or -EEXIST (the id is taken: ids are unique across
 * kinds, as QEMU's -device ids are). */
int vmm_machine_add_device(VmmMachine *m, const char *id, const char *kind, void *dev);
/* Forgets @id (the device is freed by its owner); -ENOENT if unknown. */
int vmm_machine_remove_device(VmmMachine *m, const char *id);
/* The device @id, if it is of @kind (NULL: any kind); else NULL. */
void *vmm_machine_find_device(VmmMachine *m, const char *id, const char *kind);
/* The kind of @id, or NULL. */
const char *vmm_machine_device_kind(VmmMachine *m, const char *id);
/* Calls @fn for each device of @kind (NULL: all), in registration order;
 * @fn must not add or remove devices.  Returns how many it visited. */
typedef void VmmDeviceVisitor(void *opaque, const char *id, const char *kind, void *dev);
int vmm_machine_foreach_device(VmmMachine *m, const char *kind, VmmDeviceVisitor *fn,
                               void *opaque);

/* ---- interrupt lines (the attached Vm's allocator, vmm/kvm-irq.h) ----------- */

/* Claims legacy line @gsi for @owner (kept by pointer); @shared for a
 * level-triggered line others may share.  0, -EINVAL, -EBUSY, or -ENODEV
 * without a Vm. */
int vmm_machine_claim_irq(VmmMachine *m, unsigned gsi, const char *owner, bool shared);
/* A PCI INTx line for @owner (10, 11, 9, 5 in turn, shared); -errno. */
int vmm_machine_alloc_intx(VmmMachine *m, const char *owner);
/* An MSI route for (@addr, @data): its GSI, or -errno (-ENOTSUP: no GSI
 * routing, use KVM_SIGNAL_MSI or INTx).  vm_msi_route_update/remove/commit
 * (vmm/kvm-irq.h) work on the GSI. */
int vmm_machine_alloc_msi_route(VmmMachine *m, uint64_t addr, uint32_t data);

#endif
