/*
 * keel-vmm: command line, start-up, the main loop, and shutdown.
 *
 * Threads: the main thread parses options, builds the VM, then runs the
 * glib-integrated main loop (serial input, signals) holding the global
 * mutex except while it sleeps; one thread per vCPU (-smp) runs KVM_RUN.
 * Any stop request (debug-exit, reset, poweroff, triple fault, fatal exit,
 * signal) wakes the main loop, which kicks and joins the vCPUs and exits
 * with the status the request recorded.
 */
#include "config.h"

#include "vmm/options.h"
#include "vmm/kvm.h"
#include "vmm/acpi.h"
#include "vmm/loader.h"
#include "vmm/devices.h"
#include "vmm/pci.h"
#include "vmm/virtio-blk.h"
#include "compat/avoid.h"
#include "compat/features.h"
#include "block/features-all.h"
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

/* Every -drive file before anything blocks the signals or opens /dev/kvm:
 * a FIFO, socket or character device is refused here (the block layer
 * would refuse it too, but only after setting up the VM).  Prints one line
 * per problem and returns how many there were. */
static int check_drive_files(const VmmOptions *opts)
{
    char err[512];
    int problems = 0;

    for (int i = 0; i < opts->nr_drives; i++) {
        if (vmm_check_user_file("-drive file=", opts->drives[i].file, true,
                                err, sizeof(err)) < 0) {
            fprintf(stderr, "keel-vmm: %s\n", err);
            problems++;
        }
    }
    return problems;
}

/* The same header and library lines as keel-features and keel-img
 * --features, then the VMM's own. */
static void print_features(void)
{
    keel_all_features_register();
    kvm_features_register();
    vmm_block_features_register();      /* block engine, virtio interrupts */
    printf("keel %s\n", PACKAGE_VERSION);
    keel_features_print(stdout);
}

int main(int argc, char **argv)
{
    VmmOptions opts;
    char err[512];
    char cmdline_err[8192];
    const char *avoid_err;
    Vm vm;
    Serial *serial = NULL;
    PciHost *pci = NULL;
    I8042 *i8042 = NULL;
    Rtc *rtc = NULL;
    AcpiPm *acpi_pm = NULL;
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
        int problems = check_drive_files(&opts);
        if (loader_probe_kernel(opts.kernel, &kind, err, sizeof(err)) < 0) {
            fprintf(stderr, "keel-vmm: %s\n", err);
            problems++;
        }
        if (problems) {
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
    if (debug_exit_init(&vm) < 0 || !(i8042 = i8042_new(&vm)) || !(rtc = rtc_new(&vm)) ||
        !(acpi_pm = acpi_pm_new(&vm))) {
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
    /* ACPI and the MP table in the BIOS area, so the guest finds every CPU. */
    if (firmware_tables_install(&vm, &opts.smp, err, sizeof(err)) < 0) {
        fprintf(stderr, "keel-vmm: %s\n", err);
        goto out_vm;
    }
    if (vcpus_create_all(&vm, &opts.smp) < 0) {
        goto out_vcpu;
    }
    r = vcpu_set_boot_entry(&vm.vcpus[0], &entry);
    if (r < 0) {
        fprintf(stderr, "keel-vmm: cannot set the vCPU's boot state: %s\n", strerror(-r));
        goto out_vcpu;
    }

    kvm_describe_paths(&vm, paths, sizeof(paths));
    fprintf(stderr, "keel-vmm: %s boot=%s mem=%lluM smp=%u\n", paths, entry.kind,
            (unsigned long long)(opts.ram_size >> 20), opts.smp.cpus);
    vmm_block_devices_print(blkdevs, stderr);

    vm.on_stop = wake_main_loop;
    keel_main_loop_set_signal_handler(on_signal, &vm);
    if (opts.serial_stdio) {
        make_terminal_raw();
        serial_attach_input(serial, keel_main_aio_context(), STDIN_FILENO);
    }
    /* SIGTERM/SIGINT that arrived during set-up waited in the signal fd
     * (nothing above blocks: user files are regular, opened O_NONBLOCK);
     * take it now, before the guest runs. */
    keel_main_loop_wait(true);
    if (vm_stop_reason(&vm) == VM_STOP_NONE && vcpus_start_all(&vm) < 0) {
        vm_request_stop(&vm, VM_STOP_ERROR, 1);     /* stop the ones that started */
    }

    while (vm_stop_reason(&vm) == VM_STOP_NONE) {
        keel_main_loop_wait(false);
    }

    /* A vCPU may be waiting for the global mutex to finish an exit. */
    keel_global_mutex_unlock();
    vcpus_stop_join_all(&vm);
    keel_global_mutex_lock();

    switch (vm_stop_reason(&vm)) {
    case VM_STOP_SIGNAL:
        fprintf(stderr, "keel-vmm: terminating on signal %d\n", stop_signal);
        break;
    case VM_STOP_RESET:
        fprintf(stderr, "keel-vmm: guest reset, exiting\n");
        break;
    case VM_STOP_POWEROFF:
        fprintf(stderr, "keel-vmm: guest powered off\n");
        break;
    default:
        break;      /* debug-exit is silent; errors printed their message */
    }
    status = vm.exit_status;

out_vcpu:
    vcpus_destroy_all(&vm);
out_vm:
    /* Drains the drives' in-flight requests; KEEL_VMM_STATS=1 prints their counters. */
    vmm_block_devices_free(blkdevs, getenv("KEEL_VMM_STATS") ? stderr : NULL);
    blkdevs = NULL;
    serial_free(serial);
    pci_host_free(pci);
    rtc_free(rtc);
    i8042_free(i8042);
    acpi_pm_free(acpi_pm);
    vm_destroy(&vm);
out_unlock:
    vmm_block_devices_free(blkdevs, NULL);     /* opened, the VM never made */
    keel_global_mutex_unlock();
    restore_terminal();
    vmm_options_free(&opts);
    fflush(stdout);
    return status;
}
