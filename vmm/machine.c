/*
 * The machine: its vCPUs, iothreads, devices by id, interrupt lines, run
 * state and events (contract in vmm/machine.h).
 */
#include "config.h"

#include "vmm/machine.h"
#include "vmm/kvm.h"
#include "vmm/options.h"
#include "loop/main-loop.h"

#include <glib.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct Listener {
    VmmEventListener *fn;
    void *opaque;
} Listener;

typedef struct MachineIOThread {
    KeelIOThread *thread;
    int64_t poll_max_ns, poll_grow, poll_shrink;    /* as reported (defaults filled in) */
} MachineIOThread;

typedef struct MachineDevice {
    char *id;
    char *kind;
    void *dev;
} MachineDevice;

struct VmmMachine {
    char *name;
    const VmmMachineOps *ops;
    void *opaque;
    VmmRunState state;
    bool start_paused;
    bool no_shutdown;
    bool quit;
    const char *quit_reason;    /* SHUTDOWN to emit, or NULL */
    void (*quit_notify)(void *opaque);
    void *quit_notify_opaque;
    GArray *listeners;      /* Listener */

    Vm *vm;                 /* attached, not owned; NULL: -machine none */
    Vcpu *vcpus;
    int nr_vcpus;
    GArray *iothreads;      /* MachineIOThread */
    GArray *devices;        /* MachineDevice, in registration order */
};

static const VmmMachineOps no_ops;

VmmMachine *vmm_machine_new(const char *name, const VmmMachineOps *ops, void *opaque,
                            bool start_paused, bool no_shutdown)
{
    VmmMachine *m = g_new0(VmmMachine, 1);

    m->name = g_strdup(name);
    m->ops = ops ? ops : &no_ops;
    m->opaque = opaque;
    m->state = VMM_RUN_PRELAUNCH;
    m->start_paused = start_paused;
    m->no_shutdown = no_shutdown;
    m->listeners = g_array_new(FALSE, FALSE, sizeof(Listener));
    m->iothreads = g_array_new(FALSE, FALSE, sizeof(MachineIOThread));
    m->devices = g_array_new(FALSE, FALSE, sizeof(MachineDevice));
    return m;
}

void vmm_machine_free(VmmMachine *m)
{
    if (!m) {
        return;
    }
    vmm_machine_destroy_vcpus(m);
    for (guint i = m->iothreads->len; i-- > 0;) {
        keel_iothread_free(g_array_index(m->iothreads, MachineIOThread, i).thread);
    }
    g_array_free(m->iothreads, TRUE);
    for (guint i = 0; i < m->devices->len; i++) {
        MachineDevice *d = &g_array_index(m->devices, MachineDevice, i);
        g_free(d->id);
        g_free(d->kind);
    }
    g_array_free(m->devices, TRUE);
    g_array_free(m->listeners, TRUE);
    g_free(m->name);
    g_free(m);
}

const char *vmm_machine_name(const VmmMachine *m)
{
    return m->name;
}

VmmRunState vmm_machine_state(const VmmMachine *m)
{
    return m->state;
}

bool vmm_machine_running(const VmmMachine *m)
{
    return m->state == VMM_RUN_RUNNING;
}

const VmmMachineOps *vmm_machine_ops(const VmmMachine *m, void **opaque)
{
    *opaque = m->opaque;
    return m->ops;
}

const char *vmm_run_state_name(VmmRunState s)
{
    switch (s) {
    case VMM_RUN_PRELAUNCH: return "prelaunch";
    case VMM_RUN_RUNNING: return "running";
    case VMM_RUN_PAUSED: return "paused";
    case VMM_RUN_IO_ERROR: return "io-error";
    case VMM_RUN_SHUTDOWN: return "shutdown";
    case VMM_RUN_INTERNAL_ERROR: return "internal-error";
    }
    return "?";
}

void vmm_machine_add_listener(VmmMachine *m, VmmEventListener *fn, void *opaque)
{
    Listener l = { fn, opaque };

    g_array_append_val(m->listeners, l);
}

void vmm_machine_remove_listener(VmmMachine *m, VmmEventListener *fn, void *opaque)
{
    for (guint i = 0; i < m->listeners->len; i++) {
        Listener *l = &g_array_index(m->listeners, Listener, i);
        if (l->fn == fn && l->opaque == opaque) {
            g_array_remove_index(m->listeners, i);
            return;
        }
    }
}

void vmm_machine_emit(VmmMachine *m, const char *name, const char *data_json)
{
    /* A listener may remove itself (a monitor whose client left). */
    GArray *copy = g_array_sized_new(FALSE, FALSE, sizeof(Listener), m->listeners->len);

    g_array_append_vals(copy, m->listeners->data, m->listeners->len);
    for (guint i = 0; i < copy->len; i++) {
        Listener *l = &g_array_index(copy, Listener, i);
        l->fn(l->opaque, name, data_json ? data_json : "{}");
    }
    g_array_free(copy, TRUE);
}

static void vcpus_park(VmmMachine *m)
{
    for (int i = 0; i < m->nr_vcpus; i++) {
        vcpu_pause(&m->vcpus[i]);
    }
}

static void vcpus_unpark(VmmMachine *m)
{
    for (int i = 0; i < m->nr_vcpus; i++) {
        vcpu_resume(&m->vcpus[i]);
    }
}

void vmm_machine_stop(VmmMachine *m, VmmRunState why)
{
    if (m->state != VMM_RUN_RUNNING) {
        if (why != VMM_RUN_PAUSED && why != m->state &&
            (m->state == VMM_RUN_PAUSED || m->state == VMM_RUN_PRELAUNCH)) {
            m->state = why;     /* already parked: only the reason changes */
        }
        return;
    }
    vcpus_park(m);                  /* out of KVM_RUN: no new requests */
    if (m->ops->pause) {
        m->ops->pause(m->opaque);   /* queued I/O finished */
    }
    m->state = why;
    vmm_machine_emit(m, "STOP", "{}");
}

int vmm_machine_cont(VmmMachine *m, char *err, size_t errlen)
{
    switch (m->state) {
    case VMM_RUN_RUNNING:
        return 0;           /* QEMU: cont on a running VM succeeds silently */
    case VMM_RUN_SHUTDOWN:
        snprintf(err, errlen, "Resetting the Virtual Machine is required");
        return -1;
    case VMM_RUN_INTERNAL_ERROR:
        snprintf(err, errlen, "The machine cannot go on after an internal error; quit it");
        return -1;
    default:
        break;
    }
    m->state = VMM_RUN_RUNNING;
    if (m->ops->resume) {
        m->ops->resume(m->opaque);  /* held requests first, in order */
    }
    vcpus_unpark(m);
    vmm_machine_emit(m, "RESUME", "{}");
    return 0;
}

void vmm_machine_start(VmmMachine *m)
{
    if (!m->start_paused) {
        m->state = VMM_RUN_RUNNING;
        if (m->ops->resume) {
            m->ops->resume(m->opaque);
        }
        vcpus_unpark(m);
    }
}

bool vmm_machine_shutdown(VmmMachine *m, bool guest, const char *reason)
{
    char *data = g_strdup_printf("{\"guest\": %s, \"reason\": \"%s\"}", guest ? "true" : "false",
                                 reason);

    vmm_machine_emit(m, "SHUTDOWN", data);
    g_free(data);
    if (!m->no_shutdown) {
        return true;
    }
    vmm_machine_stop(m, VMM_RUN_SHUTDOWN);
    return false;
}

void vmm_machine_set_quit_notify(VmmMachine *m, void (*fn)(void *opaque), void *opaque)
{
    m->quit_notify = fn;
    m->quit_notify_opaque = opaque;
}

void vmm_machine_request_quit(VmmMachine *m, const char *shutdown_reason)
{
    m->quit = true;
    if (shutdown_reason && !m->quit_reason) {
        m->quit_reason = shutdown_reason;
    }
    if (m->quit_notify) {
        m->quit_notify(m->quit_notify_opaque);
    }
}

bool vmm_machine_quit_requested(VmmMachine *m)
{
    if (m->quit && m->quit_reason) {
        char *data = g_strdup_printf("{\"guest\": false, \"reason\": \"%s\"}", m->quit_reason);
        m->quit_reason = NULL;
        vmm_machine_emit(m, "SHUTDOWN", data);
        g_free(data);
    }
    return m->quit;
}

typedef struct IoErrorEvent {
    VmmMachine *m;
    char *device;
    bool is_write;
    int error;
    bool stopping;
} IoErrorEvent;

static void io_error_bh(void *opaque)
{
    IoErrorEvent *ev = opaque;
    char *dev = g_strescape(ev->device, NULL);
    char *data = g_strdup_printf(
        "{\"device\": \"%s\", \"node-name\": \"%s\", \"operation\": \"%s\", "
        "\"action\": \"%s\", \"nospace\": %s, \"reason\": \"%s\"}",
        dev, dev, ev->is_write ? "write" : "read", ev->stopping ? "stop" : "report",
        ev->error == ENOSPC ? "true" : "false", g_strerror(ev->error));

    vmm_machine_emit(ev->m, "BLOCK_IO_ERROR", data);
    if (ev->stopping) {
        vmm_machine_stop(ev->m, VMM_RUN_IO_ERROR);
    }
    g_free(data);
    g_free(dev);
    g_free(ev->device);
    g_free(ev);
}

void vmm_machine_io_error(VmmMachine *m, const char *device, bool is_write, int error,
                          bool stopping)
{
    IoErrorEvent *ev = g_new0(IoErrorEvent, 1);

    ev->m = m;
    ev->device = g_strdup(device);
    ev->is_write = is_write;
    ev->error = error;
    ev->stopping = stopping;
    keel_aio_bh_schedule_oneshot(keel_main_aio_context(), io_error_bh, ev);
}

/* ---- the guest: Vm and vCPUs ------------------------------------------------ */

void vmm_machine_attach_vm(VmmMachine *m, Vm *vm)
{
    m->vm = vm;
}

Vm *vmm_machine_vm(const VmmMachine *m)
{
    return m->vm;
}

int vmm_machine_create_vcpus(VmmMachine *m, const CpuTopology *topo)
{
    if (!m->vm || m->vcpus) {
        fprintf(stderr, "keel-vmm: %s\n", m->vm ? "the vCPUs exist already" : "no VM for the vCPUs");
        return -1;
    }
    if (vm_set_topology(m->vm, topo) < 0) {
        return -1;
    }
    m->vcpus = calloc(topo->cpus, sizeof(Vcpu));
    if (!m->vcpus) {
        fprintf(stderr, "keel-vmm: out of memory for %u vCPUs\n", topo->cpus);
        return -1;
    }
    for (unsigned i = 0; i < topo->cpus; i++) {
        if (vcpu_create(m->vm, &m->vcpus[i], (int)i) < 0) {
            return -1;      /* vcpu_create cleaned up vCPU i itself */
        }
        m->nr_vcpus++;
    }
    return 0;
}

int vmm_machine_nr_vcpus(const VmmMachine *m)
{
    return m->nr_vcpus;
}

Vcpu *vmm_machine_vcpu(VmmMachine *m, int index)
{
    return index >= 0 && index < m->nr_vcpus ? &m->vcpus[index] : NULL;
}

int vmm_machine_start_vcpus(VmmMachine *m)
{
    /* Parked before their threads exist, so they start parked. */
    vcpus_park(m);
    for (int i = 0; i < m->nr_vcpus; i++) {
        if (vcpu_start_thread(&m->vcpus[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

void vmm_machine_stop_vcpus(VmmMachine *m)
{
    /* Kick them all first, so they leave KVM_RUN in parallel. */
    for (int i = 0; i < m->nr_vcpus; i++) {
        vcpu_kick(&m->vcpus[i]);
    }
    for (int i = 0; i < m->nr_vcpus; i++) {
        vcpu_stop_join(&m->vcpus[i]);
    }
}

void vmm_machine_destroy_vcpus(VmmMachine *m)
{
    bool running = false;

    for (int i = 0; i < m->nr_vcpus; i++) {
        running |= m->vcpus[i].thread_started;
    }
    if (running) {
        bool held = keel_global_mutex_held();
        if (held) {
            keel_global_mutex_unlock();     /* a vCPU may need it to finish an exit */
        }
        vmm_machine_stop_vcpus(m);
        if (held) {
            keel_global_mutex_lock();
        }
    }
    for (int i = 0; i < m->nr_vcpus; i++) {
        vcpu_destroy(&m->vcpus[i]);
    }
    free(m->vcpus);
    m->vcpus = NULL;
    m->nr_vcpus = 0;
}

int vmm_machine_query_cpus(VmmMachine *m, VmmCpuInfo *out, int max)
{
    int n = 0;

    for (int i = 0; i < m->nr_vcpus && n < max; i++, n++) {
        unsigned socket, core, thread;

        topo_place(&m->vm->topo, (unsigned)m->vcpus[i].index, &socket, &core, &thread);
        out[n].index = m->vcpus[i].index;
        out[n].thread_id = __atomic_load_n(&m->vcpus[i].tid, __ATOMIC_RELAXED);
        out[n].socket_id = (int)socket;
        out[n].core_id = (int)core;
        out[n].thread_in_core = (int)thread;
    }
    return n;
}

/* ---- iothreads ----------------------------------------------------------------- */

int vmm_machine_add_iothread(VmmMachine *m, const VmmIOThread *spec, char *err, size_t errlen)
{
    MachineIOThread it;

    if (vmm_machine_iothread(m, spec->id)) {
        snprintf(err, errlen, "-object iothread,id=%s: duplicate ID '%s' for iothread",
                 spec->id, spec->id);
        return -1;
    }
    it.thread = keel_iothread_new(spec->id);
    if (!it.thread) {
        snprintf(err, errlen, "-object iothread,id=%s: cannot start the thread", spec->id);
        return -1;
    }
    it.poll_max_ns = spec->poll_max_ns >= 0 ? spec->poll_max_ns : KEEL_IOTHREAD_POLL_MAX_NS;
    it.poll_grow = spec->poll_grow >= 0 ? spec->poll_grow : 0;
    it.poll_shrink = spec->poll_shrink >= 0 ? spec->poll_shrink : 0;
    if (spec->poll_max_ns >= 0 || spec->poll_grow >= 0 || spec->poll_shrink >= 0) {
        keel_aio_context_set_poll_params(keel_iothread_get_aio_context(it.thread),
                                         it.poll_max_ns, it.poll_grow, it.poll_shrink);
    }
    g_array_append_val(m->iothreads, it);
    return 0;
}

KeelIOThread *vmm_machine_iothread(VmmMachine *m, const char *id)
{
    for (guint i = 0; id && i < m->iothreads->len; i++) {
        KeelIOThread *t = g_array_index(m->iothreads, MachineIOThread, i).thread;
        if (!strcmp(keel_iothread_id(t), id)) {
            return t;
        }
    }
    return NULL;
}

KeelAioContext *vmm_machine_iothread_context(VmmMachine *m, const char *id)
{
    KeelIOThread *t = vmm_machine_iothread(m, id);

    return t ? keel_iothread_get_aio_context(t) : NULL;
}

int vmm_machine_nr_iothreads(const VmmMachine *m)
{
    return (int)m->iothreads->len;
}

static void tid_in_home(void *opaque)
{
    *(long *)opaque = (long)syscall(SYS_gettid);
}

int vmm_machine_query_iothreads(VmmMachine *m, VmmIOThreadInfo *out, int max)
{
    int n = 0;

    for (guint i = 0; i < m->iothreads->len && n < max; i++) {
        MachineIOThread *it = &g_array_index(m->iothreads, MachineIOThread, i);
        VmmIOThreadInfo *info = &out[n++];

        info->id = keel_iothread_id(it->thread);
        info->thread_id = 0;
        keel_aio_run_in_context_wait(keel_iothread_get_aio_context(it->thread), tid_in_home,
                                     &info->thread_id);
        info->poll_max_ns = it->poll_max_ns;
        info->poll_grow = it->poll_grow;
        info->poll_shrink = it->poll_shrink;
    }
    return n;
}

/* ---- devices by id --------------------------------------------------------------- */

static MachineDevice *device_lookup(VmmMachine *m, const char *id, guint *pos)
{
    for (guint i = 0; id && i < m->devices->len; i++) {
        MachineDevice *d = &g_array_index(m->devices, MachineDevice, i);
        if (!strcmp(d->id, id)) {
            if (pos) {
                *pos = i;
            }
            return d;
        }
    }
    return NULL;
}

int vmm_machine_add_device(VmmMachine *m, const char *id, const char *kind, void *dev)
{
    MachineDevice d;

    if (!id || !*id || !kind || !*kind) {
        return -EINVAL;
    }
    if (device_lookup(m, id, NULL)) {
        return -EEXIST;
    }
    d.id = g_strdup(id);
    d.kind = g_strdup(kind);
    d.dev = dev;
    g_array_append_val(m->devices, d);
    return 0;
}

int vmm_machine_remove_device(VmmMachine *m, const char *id)
{
    guint pos;
    MachineDevice *d = device_lookup(m, id, &pos);

    if (!d) {
        return -ENOENT;
    }
    g_free(d->id);
    g_free(d->kind);
    g_array_remove_index(m->devices, pos);     /* keeps registration order */
    return 0;
}

void *vmm_machine_find_device(VmmMachine *m, const char *id, const char *kind)
{
    MachineDevice *d = device_lookup(m, id, NULL);

    return d && (!kind || !strcmp(d->kind, kind)) ? d->dev : NULL;
}

const char *vmm_machine_device_kind(VmmMachine *m, const char *id)
{
    MachineDevice *d = device_lookup(m, id, NULL);

    return d ? d->kind : NULL;
}

int vmm_machine_foreach_device(VmmMachine *m, const char *kind, VmmDeviceVisitor *fn,
                               void *opaque)
{
    int n = 0;

    for (guint i = 0; i < m->devices->len; i++) {
        MachineDevice *d = &g_array_index(m->devices, MachineDevice, i);
        if (!kind || !strcmp(d->kind, kind)) {
            fn(opaque, d->id, d->kind, d->dev);
            n++;
        }
    }
    return n;
}

/* ---- interrupt lines ------------------------------------------------------------- */

int vmm_machine_claim_irq(VmmMachine *m, unsigned gsi, const char *owner, bool shared)
{
    return m->vm ? kvm_irq_claim_line(&m->vm->irqs, gsi, owner, shared) : -ENODEV;
}

int vmm_machine_alloc_intx(VmmMachine *m, const char *owner)
{
    return m->vm ? kvm_irq_alloc_intx(&m->vm->irqs, owner) : -ENODEV;
}

int vmm_machine_alloc_msi_route(VmmMachine *m, uint64_t addr, uint32_t data)
{
    return m->vm ? vm_msi_route_add(m->vm, addr, data) : -ENODEV;
}
