/*
 * keel-vmm: command line, start-up, the main loop, and shutdown.
 *
 * Threads: the main thread parses options, builds the VM, then runs the
 * glib-integrated main loop (serial input, signals) holding the global
 * mutex except while it sleeps; one vCPU thread runs KVM_RUN.  Any stop
 * request (debug-exit, reset, triple fault, fatal exit, signal) wakes the
 * main loop, which kicks and joins the vCPU and exits with the status the
 * request recorded.
 */
#include "config.h"

#include "vmm/options.h"
#include "vmm/kvm.h"
#include "vmm/loader.h"
#include "vmm/devices.h"
#include "vmm/pci.h"
#include "vmm/virtio-blk.h"
#include "compat/avoid.h"
#include "compat/features.h"
#include "loop/main-loop.h"

#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static struct termios saved_termios;
static bool termios_saved;
static int stop_signal;

static void restore_terminal(void)
{
    if (termios_saved) {
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
        termios_saved = false;
    }
}

/* Like QEMU's -serial stdio: raw input (every key goes to the guest,
 * CR untranslated) but ISIG kept, so ^C still stops keel-vmm. */
static void make_terminal_raw(void)
{
    struct termios t;

    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_termios) < 0) {
        return;
    }
    termios_saved = true;
    atexit(restore_terminal);
    t = saved_termios;
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_oflag |= OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | IEXTEN);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &t);
}

static void wake_main_loop(void *opaque)
{
    (void)opaque;
    keel_aio_notify(keel_main_aio_context());
}

static void on_signal(int signo, void *opaque)
{
    Vm *vm = opaque;

    if (!stop_signal) {
        stop_signal = signo;
    }
    vm_request_stop(vm, VM_STOP_SIGNAL, 0);
}

/* A message of several lines (QEMU's lock error has a hint line): the
 * first with our prefix, the rest as they are, as QEMU prints them. */
static void print_lines(const char *msg)
{
    const char *nl = strchr(msg, '\n');

    if (!nl) {
        fprintf(stderr, "keel-vmm: %s\n", msg);
        return;
    }
    fprintf(stderr, "keel-vmm: %.*s\n%s\n", (int)(nl - msg), msg, nl + 1);
}

static void print_features(void)
{
    keel_compat_features_register();
    keel_loop_features_register();
    kvm_features_register();
    vmm_block_features_register();      /* block engine, virtio interrupts */
    keel_features_print(stdout);
}

int main(int argc, char **argv)
{
    VmmOptions opts;
    char err[512];
    char cmdline_err[8192];
    const char *avoid_err;
    Vm vm;
    Vcpu vcpu;
    Serial *serial = NULL;
    PciHost *pci = NULL;
    I8042 *i8042 = NULL;
    Rtc *rtc = NULL;
    VmmBlockDevices *blkdevs = NULL;
    BootEntry entry;
    LoaderConfig lcfg;
    char paths[256];
    int status = 1, r;

    if (vmm_options_parse(&opts, argc, argv, cmdline_err, sizeof(cmdline_err)) < 0) {
        /* Every problem of the command line, one "keel-vmm: " line each. */
        char **lines = g_strsplit(cmdline_err, "\n", -1);
        for (char **l = lines; *l; l++) {
            fprintf(stderr, "keel-vmm: %s\n", *l);
        }
        g_strfreev(lines);
        return 1;
    }
    if (opts.want_help) {
        vmm_options_print_help(stdout);
        vmm_options_free(&opts);
        return 0;
    }
    if (opts.want_version) {
        printf("keel-vmm (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
        vmm_options_free(&opts);
        return 0;
    }
    if (keel_avoid_init(&avoid_err) < 0) {
        fprintf(stderr, "keel-vmm: %s\n", avoid_err);
        vmm_options_free(&opts);
        return 1;
    }
    if (opts.want_features) {
        print_features();
        vmm_options_free(&opts);
        return 0;
    }

    {
        const char *kind;
        if (loader_probe_kernel(opts.kernel, &kind, err, sizeof(err)) < 0) {
            fprintf(stderr, "keel-vmm: %s\n", err);
            vmm_options_free(&opts);
            return 1;
        }
    }

    /* A guest that stops reading our stdout must not kill us mid-exit. */
    signal(SIGPIPE, SIG_IGN);
    r = keel_main_loop_init();
    if (r < 0) {
        fprintf(stderr, "keel-vmm: cannot start the main loop: %s\n", strerror(-r));
        vmm_options_free(&opts);
        return 1;
    }
    keel_global_mutex_lock();

    /* The images first, before /dev/kvm: one in use by another writer, or
     * of another format, is refused as early as QEMU refuses it. */
    blkdevs = vmm_block_devices_open(&opts, err, sizeof(err));
    if (!blkdevs) {
        print_lines(err);
        goto out_unlock;
    }
    if (vm_create(&vm, opts.ram_size, opts.ram_backing) < 0) {
        goto out_unlock;
    }
    if (debug_exit_init(&vm) < 0 || !(i8042 = i8042_new(&vm)) || !(rtc = rtc_new(&vm))) {
        fprintf(stderr, "keel-vmm: cannot set up the legacy devices\n");
        goto out_vm;
    }
    serial = serial_new(&vm, SERIAL_COM1_BASE, SERIAL_COM1_IRQ,
                        opts.serial_stdio ? STDOUT_FILENO : -1);
    pci = pci_host_new(&vm);
    if (!serial || !pci) {
        fprintf(stderr, "keel-vmm: cannot set up the serial port and PCI host\n");
        goto out_vm;
    }
    /* The virtio-blk-pci functions of the drives opened above. */
    if (vmm_block_devices_realize(blkdevs, &vm, pci, err, sizeof(err)) < 0) {
        fprintf(stderr, "keel-vmm: %s\n", err);
        goto out_vm;
    }

    lcfg.kernel = opts.kernel;
    lcfg.initrd = opts.initrd;
    lcfg.cmdline = opts.append ? opts.append : "";
    if (loader_load_kernel(&vm, &lcfg, &entry, err, sizeof(err)) < 0) {
        fprintf(stderr, "keel-vmm: %s\n", err);
        goto out_vm;
    }
    if (vcpu_create(&vm, &vcpu, 0) < 0) {
        goto out_vm;
    }
    r = vcpu_set_boot_entry(&vcpu, &entry);
    if (r < 0) {
        fprintf(stderr, "keel-vmm: cannot set the vCPU's boot state: %s\n", strerror(-r));
        goto out_vcpu;
    }

    kvm_describe_paths(&vm, paths, sizeof(paths));
    fprintf(stderr, "keel-vmm: %s boot=%s mem=%lluM\n", paths, entry.kind,
            (unsigned long long)(opts.ram_size >> 20));
    vmm_block_devices_print(blkdevs, stderr);

    vm.on_stop = wake_main_loop;
    keel_main_loop_set_signal_handler(on_signal, &vm);
    if (opts.serial_stdio) {
        make_terminal_raw();
        serial_attach_input(serial, keel_main_aio_context(), STDIN_FILENO);
    }
    if (vcpu_start_thread(&vcpu) < 0) {
        goto out_vcpu;
    }

    while (vm_stop_reason(&vm) == VM_STOP_NONE) {
        keel_main_loop_wait(false);
    }

    /* The vCPU may be waiting for the global mutex to finish an exit. */
    keel_global_mutex_unlock();
    vcpu_stop_join(&vcpu);
    keel_global_mutex_lock();

    switch (vm_stop_reason(&vm)) {
    case VM_STOP_SIGNAL:
        fprintf(stderr, "keel-vmm: terminating on signal %d\n", stop_signal);
        break;
    case VM_STOP_RESET:
        fprintf(stderr, "keel-vmm: guest reset, exiting\n");
        break;
    default:
        break;      /* debug-exit is silent; errors printed their message */
    }
    status = vm.exit_status;

out_vcpu:
    vcpu_destroy(&vcpu);
out_vm:
    /* Drains the drives' in-flight requests; KEEL_VMM_STATS=1 prints their counters. */
    vmm_block_devices_free(blkdevs, getenv("KEEL_VMM_STATS") ? stderr : NULL);
    blkdevs = NULL;
    serial_free(serial);
    pci_host_free(pci);
    rtc_free(rtc);
    i8042_free(i8042);
    vm_destroy(&vm);
out_unlock:
    vmm_block_devices_free(blkdevs, NULL);     /* opened, the VM never made */
    keel_global_mutex_unlock();
    restore_terminal();
    vmm_options_free(&opts);
    fflush(stdout);
    return status;
}
