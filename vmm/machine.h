/*
 * vmm/machine.h — the machine as its monitors see it: the run state (QEMU's
 * RunState names), stop/cont with the reason, the events a monitor
 * broadcasts (STOP, RESUME, SHUTDOWN, RESET, BLOCK_IO_ERROR), and the
 * queries (vCPUs, iothreads, drives) answered by whoever owns those parts.
 *
 * keel-vmm's main() creates one VmmMachine with VmmMachineOps that park and
 * unpark the vCPUs, drain and retry block I/O, and read the drives' and
 * threads' state; with -machine none there is no guest and the ops are NULL
 * (stop/cont only change the state, the queries return nothing).  The QMP
 * and HMP monitors (vmm/qmp.h) listen for events and call in.
 *
 * State machine (as QEMU's): prelaunch (-S) / paused / io-error / shutdown
 * (-no-shutdown) --cont--> running --stop--> paused; a drive with werror=stop
 * failing a request moves running → io-error; a guest shutdown moves to
 * shutdown.  vmm_machine_stop() parks the vCPUs and lets queued I/O finish
 * before it changes the state and emits STOP, so a client that sees STOP
 * sees a quiet machine.
 *
 * Thread rules: the main thread with the global mutex held (the main loop's
 * handlers and monitors), except vmm_machine_io_error(), which any thread may
 * call (a drive's iothread): it bounces into the main loop.  Listeners run in
 * the main thread.
 */
#ifndef KEEL_VMM_MACHINE_H
#define KEEL_VMM_MACHINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    /* Park every vCPU out of KVM_RUN and let queued I/O finish. */
    void (*pause)(void *opaque);
    /* Resubmit requests held by werror/rerror=stop (in order), unpark. */
    void (*resume)(void *opaque);
    /* system_reset: whether the machine reset itself; false means it cannot
     * (keel-vmm has no reboot, like QEMU's -no-reboot: a reset ends it). */
    bool (*reset)(void *opaque);
    int (*query_cpus)(void *opaque, VmmCpuInfo *out, int max);
    int (*query_iothreads)(void *opaque, VmmIOThreadInfo *out, int max);
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

#endif
