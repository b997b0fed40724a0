/*
 * The machine's run state and events (contract in vmm/machine.h).
 */
#include "config.h"

#include "vmm/machine.h"
#include "loop/main-loop.h"

#include <glib.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef struct Listener {
    VmmEventListener *fn;
    void *opaque;
} Listener;

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
    return m;
}

void vmm_machine_free(VmmMachine *m)
{
    if (!m) {
        return;
    }
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

void vmm_machine_stop(VmmMachine *m, VmmRunState why)
{
    if (m->state != VMM_RUN_RUNNING) {
        if (why != VMM_RUN_PAUSED && why != m->state &&
            (m->state == VMM_RUN_PAUSED || m->state == VMM_RUN_PRELAUNCH)) {
            m->state = why;     /* already parked: only the reason changes */
        }
        return;
    }
    if (m->ops->pause) {
        m->ops->pause(m->opaque);   /* vCPUs parked, queued I/O finished */
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
        m->ops->resume(m->opaque);
    }
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
