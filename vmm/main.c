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
#include "vmm/chardev.h"
#include "vmm/machine.h"
#include "vmm/qmp.h"
#include "compat/osdep.h"
#include "compat/avoid.h"
#include "compat/features.h"
#include "block/features-all.h"
#include "loop/main-loop.h"

#include <glib.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int stop_signal;

/* ---- -daemonize and -pidfile --------------------------------------------------- */

/* The write end of the pipe the waiting parent reads (-daemonize), or -1. */
static int daemon_status_fd = -1;

/* Forks; the parent waits until the daemon finished its set-up: a byte 0
 * means it runs (exit 0); the pipe closing without it means set-up failed
 * (its messages went to our stderr, which it shares until then) and the
 * parent exits with status 1.  Called before any thread exists. */
static void daemonize_start(void)
{
    int fds[2];
    pid_t pid;

    if (pipe(fds) < 0) {
        fprintf(stderr, "keel-vmm: -daemonize: pipe: %s\n", strerror(errno));
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "keel-vmm: -daemonize: fork: %s\n", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        uint8_t status;
        ssize_t n;

        close(fds[1]);
        do {
            n = read(fds[0], &status, 1);
        } while (n < 0 && errno == EINTR);
        waitpid(pid, NULL, 0);      /* the intermediate child exits at once */
        _exit(n == 1 ? status : 1);
    }
    close(fds[0]);
    setsid();
    /* Fork again so the daemon is no session leader and never gets a
     * controlling terminal back. */
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "keel-vmm: -daemonize: fork: %s\n", strerror(errno));
        _exit(1);
    }
    if (pid > 0) {
        _exit(0);
    }
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    daemon_status_fd = fds[1];
}

/* Set-up succeeded: release the parent and leave the terminal.  The
 * working directory is kept, so relative -pidfile/socket paths still name
 * what they named (unlike QEMU, which changes to /). */
static void daemonize_finish(void)
{
    uint8_t ok = 0;
    int null_fd;

    if (daemon_status_fd < 0) {
        return;
    }
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd >= 0) {
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
        dup2(null_fd, STDERR_FILENO);
        close(null_fd);
    }
    if (write(daemon_status_fd, &ok, 1) != 1) {
        /* the parent is gone; nothing to tell */
    }
    close(daemon_status_fd);
    daemon_status_fd = -1;
}

static int pidfile_fd = -1;
static char *pidfile_path;

/* Writes our pid into @path under an exclusive lock held until exit, like
 * QEMU's qemu_write_pidfile: a second keel-vmm with the same pid file fails
 * instead of overwriting it, and a file unlinked between our open and our
 * lock is noticed (we would lock a file nobody sees) and opened again. */
static int pidfile_create(const char *path, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 10; attempt++) {
        struct stat a, b;
        char buf[32];
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

        if (fd < 0) {
            return vmm_fail(err, errlen, "-pidfile %s: %s", path, strerror(errno));
        }
        if (lockf(fd, F_TLOCK, 0) < 0) {
            int e = errno;
            ssize_t n = read(fd, buf, sizeof(buf) - 1);
            buf[n > 0 ? n : 0] = '\0';
            g_strchomp(buf);
            close(fd);
            if (e == EAGAIN || e == EACCES) {
                return vmm_fail(err, errlen, "-pidfile %s: in use by another process%s%s",
                                path, *buf ? " with pid " : "", buf);
            }
            return vmm_fail(err, errlen, "-pidfile %s: cannot lock: %s", path, strerror(e));
        }
        if (fstat(fd, &a) < 0 || stat(path, &b) < 0 || a.st_ino != b.st_ino ||
            a.st_dev != b.st_dev) {
            close(fd);      /* replaced or removed meanwhile: try again */
            continue;
        }
        snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) < 0 || keel_write_full(fd, buf, strlen(buf)) < 0) {
            int e = errno;
            close(fd);
            return vmm_fail(err, errlen, "-pidfile %s: cannot write: %s", path, strerror(e));
        }
        pidfile_fd = fd;
        pidfile_path = g_strdup(path);
        return 0;
    }
    return vmm_fail(err, errlen, "-pidfile %s: keeps being replaced by someone else", path);
}

static void pidfile_remove(void)
{
    if (pidfile_fd >= 0) {
        unlink(pidfile_path);   /* while we still hold the lock */
        close(pidfile_fd);
        pidfile_fd = -1;
    }
    g_free(pidfile_path);
    pidfile_path = NULL;
}

/* ---- the machine as the monitors see it ------------------------------------------ */

/* What the machine asks of the block devices through its ops: draining
 * and retrying their I/O, their state, block_resize. */
typedef struct VmmParts {
    Vm *vm;                 /* NULL with -machine none */
    VmmBlockDevices *blkdevs;
    VmmMachine *machine;
} VmmParts;

static void parts_pause(void *opaque)
{
    VmmParts *p = opaque;

    vmm_block_devices_drain(p->blkdevs);    /* queued I/O finished */
}

static void parts_resume(void *opaque)
{
    VmmParts *p = opaque;

    vmm_block_devices_retry(p->blkdevs);    /* werror=stop: in order */
}

static bool parts_reset(void *opaque)
{
    (void)opaque;
    return false;   /* no reboot: a reset ends keel-vmm (QEMU's -no-reboot) */
}

static int parts_query_block(void *opaque, VmmBlockInfo *out, int max)
{
    return vmm_block_devices_query(((VmmParts *)opaque)->blkdevs, out, max);
}

static int parts_block_resize(void *opaque, const char *device, uint64_t size, char *err,
                              size_t errlen)
{
    return vmm_block_devices_resize(((VmmParts *)opaque)->blkdevs, device, size, err, errlen);
}

static const VmmMachineOps parts_ops = {
    .pause = parts_pause,
    .resume = parts_resume,
    .reset = parts_reset,
    .query_block = parts_query_block,
    .block_resize = parts_block_resize,
};

static void on_io_error(void *opaque, const char *device, bool is_write, int error,
                        bool stopping)
{
    vmm_machine_io_error(opaque, device, is_write, error, stopping);
}

static void quit_from_mux(void *opaque)
{
    vmm_machine_request_quit(opaque, NULL);
}

static void wake_main_loop(void *opaque)
{
    (void)opaque;
    keel_aio_notify(keel_main_aio_context());
}

static void on_signal(int signo, void *opaque)
{
    VmmParts *p = opaque;

    if (!stop_signal) {
        stop_signal = signo;
    }
    if (p->vm) {
        vm_request_stop(p->vm, VM_STOP_SIGNAL, 0);
    } else {
        vmm_machine_request_quit(p->machine, "host-signal");
    }
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

/* Attaches every monitor to its chardev; -1 after a message. */
static int open_monitors(VmmOptions *opts, Chardev **chardevs, VmmMachine *machine,
                         QmpMonitor **monitors, char *err, size_t errlen)
{
    for (int i = 0; i < opts->nr_monitors; i++) {
        const VmmMonitorSpec *m = &opts->monitors[i];
        Chardev *chr = NULL;

        for (int j = 0; j < opts->nr_chardevs; j++) {
            if (!strcmp(opts->chardevs[j].id, m->chardev)) {
                chr = chardevs[j];
            }
        }
        monitors[i] = monitor_new(machine, chr, m->control, m->pretty, err, errlen);
        if (!monitors[i]) {
            return -1;
        }
    }
    return 0;
}

static Chardev *find_chardev(VmmOptions *opts, Chardev **chardevs, const char *id)
{
    for (int j = 0; id && j < opts->nr_chardevs; j++) {
        if (!strcmp(opts->chardevs[j].id, id)) {
            return chardevs[j];
        }
    }
    return NULL;
}

/* The board's fixed devices in the machine's registry, and the ISA lines
 * the firmware tables promise them (vmm/acpi.c): the PIT on IRQ 0 (IOAPIC
 * pin 2), the keyboard on 1, COM1 on 4, the RTC on 8, the SCI on 9
 * (level-triggered, shared with PCI INTx).  -1 after a message. */
static int register_board(VmmMachine *m, Serial *serial, PciHost *pci, I8042 *i8042, Rtc *rtc,
                          AcpiPm *acpi_pm)
{
    static const struct {
        const char *id, *kind;
        int irq[2];             /* -1: none */
        bool shared;
    } board[] = {
        { "pit", "kvm-pit", { 0, 2 }, false },     /* in the kernel */
        { "i8042", "i8042", { 1, -1 }, false },
        { "serial0", "isa-serial", { SERIAL_COM1_IRQ, -1 }, false },
        { "rtc", "mc146818rtc", { 8, -1 }, false },
        { "acpi-pm", "acpi-pm", { ACPI_SCI_IRQ, -1 }, true },
        { "pci", "pci-host", { -1, -1 }, false },
    };
    void *devs[] = { NULL, i8042, serial, rtc, acpi_pm, pci };

    for (size_t i = 0; i < G_N_ELEMENTS(board); i++) {
        int r = vmm_machine_add_device(m, board[i].id, board[i].kind, devs[i]);

        for (int j = 0; j < 2 && r == 0 && board[i].irq[j] >= 0; j++) {
            r = vmm_machine_claim_irq(m, (unsigned)board[i].irq[j], board[i].id,
                                      board[i].shared);
        }
        if (r < 0) {
            fprintf(stderr, "keel-vmm: %s: %s\n", board[i].id, strerror(-r));
            return -1;
        }
    }
    return 0;
}

/* Runs the main loop until the VM ends (or, with -no-shutdown, until quit).
 * Returns the exit status. */
static int run_main_loop(VmmParts *parts, VmmMachine *machine)
{
    bool handled = false;

    for (;;) {
        if (vmm_machine_quit_requested(machine)) {
            if (stop_signal) {
                fprintf(stderr, "keel-vmm: terminating on signal %d\n", stop_signal);
            }
            return parts->vm ? parts->vm->exit_status : 0;
        }
        if (parts->vm && !handled && vm_stop_reason(parts->vm) != VM_STOP_NONE) {
            handled = true;
            switch (vm_stop_reason(parts->vm)) {
            case VM_STOP_SIGNAL:
                vmm_machine_emit(machine, "SHUTDOWN",
                                 "{\"guest\": false, \"reason\": \"host-signal\"}");
                fprintf(stderr, "keel-vmm: terminating on signal %d\n", stop_signal);
                return parts->vm->exit_status;
            case VM_STOP_RESET:
                /* keel-vmm never reboots: a guest reset is its shutdown. */
                if (vmm_machine_shutdown(machine, true, "guest-reset")) {
                    fprintf(stderr, "keel-vmm: guest reset, exiting\n");
                    return parts->vm->exit_status;
                }
                fprintf(stderr, "keel-vmm: guest reset; -no-shutdown: staying (quit to end)\n");
                break;
            case VM_STOP_POWEROFF:
                /* ACPI S5 (poweroff in the guest). */
                if (vmm_machine_shutdown(machine, true, "guest-shutdown")) {
                    fprintf(stderr, "keel-vmm: guest powered off\n");
                    return parts->vm->exit_status;
                }
                fprintf(stderr, "keel-vmm: guest powered off; -no-shutdown: staying (quit to end)\n");
                break;
            case VM_STOP_TRIPLE_FAULT:
                /* On a PC a triple fault resets; without reboot that is a
                 * shutdown (QEMU -no-reboot says guest-reset too). */
                if (vmm_machine_shutdown(machine, true, "guest-reset")) {
                    return parts->vm->exit_status;
                }
                break;
            default:
                return parts->vm->exit_status;  /* debug-exit ends at once, as in QEMU */
            }
        }
        keel_main_loop_wait(false);
    }
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
    Chardev *chardevs[VMM_MAX_CHARDEVS] = { NULL };
    QmpMonitor *monitors[VMM_MAX_MONITORS] = { NULL };
    VmmMachine *machine = NULL;
    VmmParts parts = { NULL, NULL, NULL };
    BootEntry entry;
    LoaderConfig lcfg;
    char paths[256];
    int status = 1, r;
    bool vm_made = false;

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

    if (!opts.machine_none) {
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
    if (opts.check_args) {
        /* Parsed, files found, kernel format known: what QEMU would start. */
        printf("keel-vmm: command line OK\n");
        vmm_options_free(&opts);
        return 0;
    }
    if (opts.daemonize) {
        daemonize_start();      /* before any thread exists */
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

    machine = vmm_machine_new(opts.name, opts.machine_none ? NULL : &parts_ops, &parts,
                              opts.start_paused, opts.no_shutdown);
    parts.machine = machine;
    /* The machine's iothreads (QEMU starts them with -machine none too). */
    for (int i = 0; i < opts.nr_iothreads; i++) {
        if (vmm_machine_add_iothread(machine, &opts.iothreads[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "keel-vmm: %s\n", err);
            goto out_machine;
        }
    }
    /* The images next, before /dev/kvm: one in use by another writer, or
     * of another format, is refused as early as QEMU refuses it. */
    if (!opts.machine_none) {
        blkdevs = vmm_block_devices_open(machine, &opts, err, sizeof(err));
        if (!blkdevs) {
            print_lines(err);
            goto out_machine;
        }
    }
    if (opts.pidfile && pidfile_create(opts.pidfile, err, sizeof(err)) < 0) {
        fprintf(stderr, "keel-vmm: %s\n", err);
        goto out_machine;
    }
    vmm_machine_set_quit_notify(machine, wake_main_loop, NULL);
    chardev_set_quit_hook(quit_from_mux, machine);
    keel_main_loop_set_signal_handler(on_signal, &parts);
    /* Chardevs first (a wait=on server blocks here until its client comes),
     * then the serial port, so the mux's first front end is COM1. */
    for (int i = 0; i < opts.nr_chardevs; i++) {
        chardevs[i] = chardev_open(&opts.chardevs[i], keel_main_aio_context(), err, sizeof(err));
        if (!chardevs[i]) {
            fprintf(stderr, "keel-vmm: %s\n", err);
            goto out_chardevs;
        }
    }

    if (opts.machine_none) {
        if (open_monitors(&opts, chardevs, machine, monitors, err, sizeof(err)) < 0) {
            fprintf(stderr, "keel-vmm: %s\n", err);
            goto out_chardevs;
        }
        fprintf(stderr, "keel-vmm: -machine none: no guest, monitors only\n");
        daemonize_finish();
        vmm_machine_start(machine);
        status = run_main_loop(&parts, machine);
        goto out_chardevs;
    }

    if (vm_create(&vm, opts.ram_size, opts.ram_backing) < 0) {
        goto out_chardevs;
    }
    vm_made = true;
    parts.vm = &vm;
    vmm_machine_attach_vm(machine, &vm);
    if (debug_exit_init(&vm) < 0 || !(i8042 = i8042_new(&vm)) || !(rtc = rtc_new(&vm)) ||
        !(acpi_pm = acpi_pm_new(&vm))) {
        fprintf(stderr, "keel-vmm: cannot set up the legacy devices\n");
        goto out_vm;
    }
    serial = serial_new(&vm, SERIAL_COM1_BASE, SERIAL_COM1_IRQ, -1);
    pci = pci_host_new(&vm);
    if (!serial || !pci) {
        fprintf(stderr, "keel-vmm: cannot set up the serial port and PCI host\n");
        goto out_vm;
    }
    if (register_board(machine, serial, pci, i8042, rtc, acpi_pm) < 0) {
        goto out_vm;
    }
    if (opts.serial_chardev &&
        serial_attach_chardev(serial, find_chardev(&opts, chardevs, opts.serial_chardev), err,
                              sizeof(err)) < 0) {
        fprintf(stderr, "keel-vmm: -serial: %s\n", err);
        goto out_vm;
    }
    if (open_monitors(&opts, chardevs, machine, monitors, err, sizeof(err)) < 0) {
        fprintf(stderr, "keel-vmm: %s\n", err);
        goto out_vm;
    }
    /* The virtio-blk-pci functions of the drives opened above. */
    if (vmm_block_devices_realize(blkdevs, pci, err, sizeof(err)) < 0) {
        fprintf(stderr, "keel-vmm: %s\n", err);
        goto out_vm;
    }
    parts.blkdevs = blkdevs;
    vmm_block_devices_set_io_error_hook(blkdevs, on_io_error, machine);

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
    if (vmm_machine_create_vcpus(machine, &opts.smp) < 0) {
        goto out_vcpu;
    }
    r = vcpu_set_boot_entry(vmm_machine_vcpu(machine, 0), &entry);
    if (r < 0) {
        fprintf(stderr, "keel-vmm: cannot set the vCPU's boot state: %s\n", strerror(-r));
        goto out_vcpu;
    }

    kvm_describe_paths(&vm, paths, sizeof(paths));
    fprintf(stderr, "keel-vmm: %s boot=%s mem=%lluM smp=%u%s\n", paths, entry.kind,
            (unsigned long long)(opts.ram_size >> 20), opts.smp.cpus,
            opts.start_paused ? " (paused: -S)" : "");
    vmm_block_devices_print(blkdevs, stderr);

    vm.on_stop = wake_main_loop;
    /* SIGTERM/SIGINT that arrived during set-up waited in the signal fd
     * (nothing above blocks: user files are regular, opened O_NONBLOCK);
     * take it now, before the guest runs. */
    keel_main_loop_wait(true);
    /* The vCPU threads start parked; vmm_machine_start lets them run unless -S. */
    if (vm_stop_reason(&vm) == VM_STOP_NONE && vmm_machine_start_vcpus(machine) < 0) {
        vm_request_stop(&vm, VM_STOP_ERROR, 1);     /* stop the ones that started */
    }
    if (opts.debug_threads) {
#ifdef HAVE_PTHREAD_SETNAME_NP
        for (int i = 0; i < vmm_machine_nr_vcpus(machine); i++) {
            Vcpu *vcpu = vmm_machine_vcpu(machine, i);
            char name[32];      /* pthread_setname_np takes 15 characters */
            snprintf(name, sizeof(name), "CPU %d/KVM", i % 1000);     /* QEMU's names */
            if (vcpu->thread_started) {
                pthread_setname_np(vcpu->thread, name);
            }
        }
#endif
    }
    daemonize_finish();
    vmm_machine_start(machine);

    status = run_main_loop(&parts, machine);

    /* A vCPU may be waiting for the global mutex to finish an exit. */
    keel_global_mutex_unlock();
    vmm_machine_stop_vcpus(machine);
    keel_global_mutex_lock();

out_vcpu:
    vmm_machine_destroy_vcpus(machine);
out_vm:
    for (int i = 0; i < opts.nr_monitors; i++) {
        monitor_free(monitors[i]);
        monitors[i] = NULL;
    }
    /* Drains the drives' in-flight requests; KEEL_VMM_STATS=1 prints their counters. */
    vmm_block_devices_free(blkdevs, getenv("KEEL_VMM_STATS") ? stderr : NULL);
    blkdevs = NULL;
    serial_free(serial);
    pci_host_free(pci);
    rtc_free(rtc);
    i8042_free(i8042);
    acpi_pm_free(acpi_pm);
    if (vm_made) {
        vmm_machine_attach_vm(machine, NULL);
        vm_destroy(&vm);
    }
out_chardevs:
    for (int i = 0; i < opts.nr_monitors; i++) {
        monitor_free(monitors[i]);
    }
    for (int i = 0; i < opts.nr_chardevs; i++) {
        chardev_free(chardevs[i]);
    }
out_machine:
    /* Opened, the VM never made: closed before the iothreads they run in end. */
    vmm_block_devices_free(blkdevs, NULL);
    vmm_machine_free(machine);
    pidfile_remove();
    keel_global_mutex_unlock();
    vmm_options_free(&opts);
    fflush(stdout);
    return status;
}
