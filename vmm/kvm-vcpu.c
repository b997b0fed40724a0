/*
 * The vCPUs (contract in vmm/kvm-vcpu.h): creation, the kick signal, the
 * KVM_RUN loop with its exit dispatch, park/unpark, and the ExtINT
 * watchdog.
 */
#include "config.h"

#include "vmm/kvm-internal.h"
#include "compat/osdep.h"
#include "loop/main-loop.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The run area of the vCPU running in this thread, for the kick handler. */
static __thread struct kvm_run *thread_run;

static void kick_signal_handler(int signo)
{
    struct kvm_run *run = thread_run;
    (void)signo;
    if (run) {
        run->immediate_exit = 1;
    }
}

static bool vcpu_uses_immediate_exit(Vcpu *vcpu)
{
    return vcpu->vm->caps->immediate_exit;
}

int vcpu_create(Vm *vm, Vcpu *vcpu, int index)
{
    void *run;

    memset(vcpu, 0, sizeof(*vcpu));
    vcpu->vm = vm;
    vcpu->index = index;
    /* KVM makes the vCPU id the LAPIC ID: use the topology's APIC ID. */
    vcpu->id = (int)topo_apic_id(&vm->topo, (unsigned)index);
    pthread_mutex_init(&vcpu->park_lock, NULL);
    pthread_cond_init(&vcpu->park_cond, NULL);
    vcpu->fd = KEEL_RETRY_EINTR(ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)vcpu->id));
    if (vcpu->fd < 0) {
        fprintf(stderr, "keel-vmm: KVM_CREATE_VCPU (vCPU %d, APIC ID %d): %s\n", index,
                vcpu->id, strerror(errno));
        return -1;
    }
    run = mmap(NULL, (size_t)vm->vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
               vcpu->fd, 0);
    if (run == MAP_FAILED) {
        fprintf(stderr, "keel-vmm: mmap of the vCPU run area: %s\n", strerror(errno));
        close(vcpu->fd);
        vcpu->fd = -1;
        return -1;
    }
    vcpu->run = run;
    if (vcpu_setup_cpuid(vcpu) < 0) {
        vcpu_destroy(vcpu);
        return -1;
    }
    if (index != 0 && vm->caps->mp_state) {
        /* An AP: asleep until the BSP's INIT/SIPI, which the in-kernel
         * LAPIC delivers (KVM already starts non-BSP vCPUs so with an
         * in-kernel irqchip; saying it keeps that independent of the
         * kernel's choice). */
        struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_UNINITIALIZED };
        if (ioctl(vcpu->fd, KVM_SET_MP_STATE, &mp) < 0) {
            fprintf(stderr, "keel-vmm: KVM_SET_MP_STATE (vCPU %d): %s\n", index,
                    strerror(errno));
            vcpu_destroy(vcpu);
            return -1;
        }
    }
    return 0;
}

int vm_set_topology(Vm *vm, const CpuTopology *topo)
{
    const KvmCaps *c = vm->caps;

    if ((int)topo->cpus > c->max_vcpus || (int)topo_max_apic_id(topo) >= c->max_vcpu_id) {
        fprintf(stderr, "keel-vmm: -smp %u (APIC IDs up to %u): this KVM allows %d vCPUs "
                "with ids below %d\n", topo->cpus, topo_max_apic_id(topo), c->max_vcpus,
                c->max_vcpu_id);
        return -1;
    }
    vm->topo = *topo;
    return 0;
}

void vcpu_destroy(Vcpu *vcpu)
{
    if (vcpu->run) {
        munmap(vcpu->run, (size_t)vcpu->vm->vcpu_mmap_size);
        vcpu->run = NULL;
    }
    if (vcpu->fd >= 0) {
        close(vcpu->fd);
        vcpu->fd = -1;
    }
}

static void install_kick_handler(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_signal_handler;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: KVM_RUN must come back with EINTR. */
    sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
}

void vcpu_thread_prepare(Vcpu *vcpu)
{
    sigset_t set;
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, install_kick_handler);
    thread_run = vcpu->run;
    if (vcpu_uses_immediate_exit(vcpu)) {
        /* Threads from keel_thread_create start with async signals blocked;
         * the kick must reach this one.  The handler sets immediate_exit,
         * so a kick between our stop check and KVM_RUN is not lost. */
        sigemptyset(&set);
        sigaddset(&set, VCPU_KICK_SIGNAL);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    } else {
        /* Old kernels: keep the kick blocked in user space and let KVM
         * unblock it only while the guest runs; a pending kick then makes
         * the next KVM_RUN return EINTR at once. */
        union {
            struct kvm_signal_mask head;
            uint8_t raw[sizeof(struct kvm_signal_mask) + 8];
        } mask;
        sigset_t cur;

        pthread_sigmask(SIG_BLOCK, NULL, &cur);
        sigdelset(&cur, VCPU_KICK_SIGNAL);
        mask.head.len = 8;      /* the kernel's sigset size on x86-64 */
        memcpy(mask.raw + sizeof(struct kvm_signal_mask), &cur, 8);
        if (ioctl(vcpu->fd, KVM_SET_SIGNAL_MASK, &mask) < 0) {
            fprintf(stderr, "keel-vmm: KVM_SET_SIGNAL_MASK: %s\n", strerror(errno));
        }
        sigemptyset(&set);
        sigaddset(&set, VCPU_KICK_SIGNAL);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
    }
}

static void vcpu_send_kick(Vcpu *vcpu)
{
    if (vcpu->thread_started) {
        pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
    }
}

void vcpu_kick(Vcpu *vcpu)
{
    __atomic_store_n(&vcpu->stop, true, __ATOMIC_RELEASE);
    pthread_mutex_lock(&vcpu->park_lock);
    pthread_cond_broadcast(&vcpu->park_cond);   /* a parked vCPU sees stop */
    pthread_mutex_unlock(&vcpu->park_lock);
    vcpu_send_kick(vcpu);
}

void vcpu_pause(Vcpu *vcpu)
{
    bool held = keel_global_mutex_held();

    pthread_mutex_lock(&vcpu->park_lock);
    vcpu->park = true;
    pthread_mutex_unlock(&vcpu->park_lock);
    if (!vcpu->thread_started) {
        return;
    }
    vcpu_send_kick(vcpu);
    if (held) {
        keel_global_mutex_unlock();     /* it may need it to finish an exit */
    }
    pthread_mutex_lock(&vcpu->park_lock);
    while (vcpu->park && !vcpu->parked) {
        pthread_cond_wait(&vcpu->park_cond, &vcpu->park_lock);
    }
    pthread_mutex_unlock(&vcpu->park_lock);
    if (held) {
        keel_global_mutex_lock();
    }
}

void vcpu_resume(Vcpu *vcpu)
{
    pthread_mutex_lock(&vcpu->park_lock);
    vcpu->park = false;
    pthread_cond_broadcast(&vcpu->park_cond);
    pthread_mutex_unlock(&vcpu->park_lock);
}

/* Waits while a pause is requested (and no stop); false when the vCPU must
 * leave the run loop. */
static void vcpu_park_if_asked(Vcpu *vcpu)
{
    pthread_mutex_lock(&vcpu->park_lock);
    if (vcpu->park) {
        vcpu->parked = true;
        pthread_cond_broadcast(&vcpu->park_cond);
        while (vcpu->park && !__atomic_load_n(&vcpu->stop, __ATOMIC_ACQUIRE)) {
            pthread_cond_wait(&vcpu->park_cond, &vcpu->park_lock);
        }
        vcpu->parked = false;
    }
    pthread_mutex_unlock(&vcpu->park_lock);
}

/* Consume a pending kick (signal-mask mode), so the next KVM_RUN can run. */
static void vcpu_eat_kick(void)
{
    sigset_t set;
    struct timespec zero = { 0, 0 };

    sigemptyset(&set);
    sigaddset(&set, VCPU_KICK_SIGNAL);
    while (sigtimedwait(&set, NULL, &zero) > 0) {
    }
}

static uint64_t vcpu_rip(Vcpu *vcpu)
{
    struct kvm_regs regs;

    if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) < 0) {
        return ~0ull;
    }
    return regs.rip;
}

static void vcpu_handle_io(Vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    uint8_t *p = (uint8_t *)run + run->io.data_offset;
    unsigned size = run->io.size;

    for (uint32_t i = 0; i < run->io.count; i++, p += size) {
        uint64_t v = 0;
        if (run->io.direction == KVM_EXIT_IO_OUT) {
            memcpy(&v, p, size);
            bus_write(&vcpu->vm->pio_bus, run->io.port, size, v);
        } else {
            bus_read(&vcpu->vm->pio_bus, run->io.port, size, &v);
            memcpy(p, &v, size);
        }
    }
}

static void vcpu_handle_mmio(Vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    unsigned len = run->mmio.len;
    uint64_t v = 0;

    if (len > 8) {
        return;
    }
    if (run->mmio.is_write) {
        memcpy(&v, run->mmio.data, len);
        bus_write(&vcpu->vm->mmio_bus, run->mmio.phys_addr, len, v);
    } else {
        bus_read(&vcpu->vm->mmio_bus, run->mmio.phys_addr, len, &v);
        memcpy(run->mmio.data, &v, len);
    }
}

static const char *internal_suberror_name(uint32_t sub)
{
    switch (sub) {
    case KVM_INTERNAL_ERROR_EMULATION: return "emulation failure";
    case KVM_INTERNAL_ERROR_SIMUL_EX: return "exception during exception delivery";
    case KVM_INTERNAL_ERROR_DELIVERY_EV: return "event delivery failed";
#ifdef KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
    case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: return "unexpected exit reason";
#endif
    }
    return "unknown";
}

static void vcpu_report_internal_error(Vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    uint32_t sub = run->internal.suberror;
    uint32_t n = run->internal.ndata;

    fprintf(stderr, "keel-vmm: KVM internal error: suberror %u (%s), guest rip=0x%llx",
            sub, internal_suberror_name(sub), (unsigned long long)vcpu_rip(vcpu));
    if (sub == KVM_INTERNAL_ERROR_EMULATION && n >= 3 && (run->internal.data[0] & 1)) {
        /* data[0] = flags (bit 0: instruction bytes follow), then a length
         * byte and up to 15 bytes of the instruction that failed. */
        const uint8_t *bytes = (const uint8_t *)&run->internal.data[1];
        unsigned len = bytes[0] < 15 ? bytes[0] : 15;
        fprintf(stderr, ", instruction bytes:");
        for (unsigned i = 0; i < len; i++) {
            fprintf(stderr, " %02x", bytes[1 + i]);
        }
    } else {
        if (n > 16) {
            n = 16;
        }
        for (uint32_t i = 0; i < n; i++) {
            fprintf(stderr, "%s0x%llx", i ? " " : ", data: ",
                    (unsigned long long)run->internal.data[i]);
        }
    }
    fputc('\n', stderr);
    if (vcpu->vm->caps->pvm_host && sub == KVM_INTERNAL_ERROR_EMULATION) {
        fprintf(stderr, "keel-vmm: this host (kvm_pvm) cannot emulate that instruction: guest "
                "kernel-mode code runs in KVM's instruction emulator here, which does not "
                "support it (a real KVM host runs it natively)\n");
    }
}

static const char *exit_reason_name(uint32_t reason)
{
    switch (reason) {
    case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "KVM_EXIT_EXCEPTION";
    case KVM_EXIT_HYPERCALL: return "KVM_EXIT_HYPERCALL";
    case KVM_EXIT_DEBUG: return "KVM_EXIT_DEBUG";
    case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
    case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
    case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "KVM_EXIT_SYSTEM_EVENT";
    }
    return "?";
}

/* Handles one exit; returns false when the vCPU must stop. */
static bool vcpu_handle_exit(Vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    Vm *vm = vcpu->vm;

    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        vcpu_handle_io(vcpu);
        return true;
    case KVM_EXIT_MMIO:
        vcpu_handle_mmio(vcpu);
        return true;
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
        return true;
    case KVM_EXIT_SHUTDOWN:
        /* x86 shutdown = a triple fault (KVM does not emulate the reset that
         * follows on real hardware). */
        fprintf(stderr, "keel-vmm: guest triple-faulted (KVM_EXIT_SHUTDOWN) at rip=0x%llx\n",
                (unsigned long long)vcpu_rip(vcpu));
        vm_request_stop(vm, VM_STOP_TRIPLE_FAULT, 2);
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_RESET ||
            run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
            vm_request_stop(vm, VM_STOP_RESET, 0);
        } else {
            fprintf(stderr, "keel-vmm: guest crashed (KVM_EXIT_SYSTEM_EVENT type %u)\n",
                    run->system_event.type);
            vm_request_stop(vm, VM_STOP_ERROR, 2);
        }
        return false;
    case KVM_EXIT_INTERNAL_ERROR:
        vcpu_report_internal_error(vcpu);
        vm_request_stop(vm, VM_STOP_ERROR, 2);
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        fprintf(stderr, "keel-vmm: KVM_EXIT_FAIL_ENTRY: hardware entry failure reason 0x%llx, "
                "guest rip=0x%llx\n",
                (unsigned long long)run->fail_entry.hardware_entry_failure_reason,
                (unsigned long long)vcpu_rip(vcpu));
        vm_request_stop(vm, VM_STOP_ERROR, 2);
        return false;
    default:
        fprintf(stderr, "keel-vmm: unexpected KVM exit %u (%s), guest rip=0x%llx\n",
                run->exit_reason, exit_reason_name(run->exit_reason),
                (unsigned long long)vcpu_rip(vcpu));
        vm_request_stop(vm, VM_STOP_ERROR, 2);
        return false;
    }
}

/* ---- the ExtINT watchdog (see kvm.h, vcpu_start_thread) ---------------------- */

bool pic_request_stuck(uint8_t irr_before, uint8_t imr_before, uint8_t irr_now, uint8_t imr_now)
{
    return ((irr_before & ~imr_before) & (irr_now & ~imr_now)) != 0;
}

/* In the vCPU thread, out of KVM_RUN: KVM_SET_MP_STATE raises KVM_REQ_EVENT
 * (since Linux 2.6.3x), so the next KVM_RUN looks at the PIC again.  The
 * state written is the state read: nothing else changes. */
static void vcpu_recheck_events(Vcpu *vcpu)
{
    struct kvm_mp_state mp;

    if (ioctl(vcpu->fd, KVM_GET_MP_STATE, &mp) < 0 ||
        ioctl(vcpu->fd, KVM_SET_MP_STATE, &mp) < 0) {
        return;
    }
    if (!vcpu->recheck_reported) {
        vcpu->recheck_reported = true;
        fprintf(stderr, "keel-vmm: a PIC interrupt stayed pending for 100+ ms: asked KVM to "
                "evaluate interrupts again (it does not when the guest unmasks LINT0)\n");
    }
}

static void *extint_watch_fn(void *opaque)
{
    Vcpu *vcpu = opaque;
    struct kvm_irqchip last = { .chip_id = KVM_IRQCHIP_PIC_MASTER };
    bool have_last = false;

    pthread_mutex_lock(&vcpu->watch_lock);
    while (!vcpu->watch_stop) {
        struct kvm_irqchip now = { .chip_id = KVM_IRQCHIP_PIC_MASTER };
        struct timespec until;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&vcpu->watch_cond, &vcpu->watch_lock, &until);
        if (vcpu->watch_stop) {
            break;
        }
        if (ioctl(vcpu->vm->vm_fd, KVM_GET_IRQCHIP, &now) < 0) {
            break;      /* no in-kernel PIC: nothing to watch */
        }
        if (have_last && pic_request_stuck(last.chip.pic.irr, last.chip.pic.imr,
                                           now.chip.pic.irr, now.chip.pic.imr)) {
            __atomic_store_n(&vcpu->recheck_events, true, __ATOMIC_RELEASE);
            pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
        }
        last = now;
        have_last = true;
    }
    pthread_mutex_unlock(&vcpu->watch_lock);
    return NULL;
}

void vcpu_run_loop(Vcpu *vcpu)
{
    bool immediate_exit = vcpu_uses_immediate_exit(vcpu);

    for (;;) {
        vcpu_park_if_asked(vcpu);
        if (__atomic_load_n(&vcpu->stop, __ATOMIC_ACQUIRE) ||
            vm_stop_reason(vcpu->vm) != VM_STOP_NONE) {
            break;
        }
        if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                if (immediate_exit) {
                    vcpu->run->immediate_exit = 0;
                } else {
                    vcpu_eat_kick();
                }
                if (__atomic_exchange_n(&vcpu->recheck_events, false, __ATOMIC_ACQ_REL)) {
                    vcpu_recheck_events(vcpu);
                }
                continue;
            }
            fprintf(stderr, "keel-vmm: KVM_RUN: %s\n", strerror(errno));
            vm_request_stop(vcpu->vm, VM_STOP_ERROR, 2);
            break;
        }
        if (!vcpu_handle_exit(vcpu)) {
            break;
        }
    }
}

static void *vcpu_thread_fn(void *opaque)
{
    Vcpu *vcpu = opaque;

    __atomic_store_n(&vcpu->tid, (long)syscall(SYS_gettid), __ATOMIC_RELAXED);
    vcpu_thread_prepare(vcpu);
    vcpu_run_loop(vcpu);
    thread_run = NULL;
    /* Out of the run loop counts as parked: a pause must not wait for us. */
    pthread_mutex_lock(&vcpu->park_lock);
    vcpu->parked = true;
    pthread_cond_broadcast(&vcpu->park_cond);
    pthread_mutex_unlock(&vcpu->park_lock);
    return NULL;
}

int vcpu_start_thread(Vcpu *vcpu)
{
    const char *no_watch;
    char name[16];
    int r;

    snprintf(name, sizeof(name), "vcpu%d", vcpu->id);
    r = keel_thread_create(&vcpu->thread, name, vcpu_thread_fn, vcpu);
    if (r < 0) {
        fprintf(stderr, "keel-vmm: cannot start the vCPU thread: %s\n", strerror(-r));
        return -1;
    }
    vcpu->thread_started = true;
    pthread_mutex_init(&vcpu->watch_lock, NULL);
    pthread_cond_init(&vcpu->watch_cond, NULL);
    snprintf(name, sizeof(name), "extint%d", vcpu->id);
    /* Without it the guest still runs; only the rare lost tick is not
     * recovered.  The lab turns it off to show the hang it prevents
     * (tests/kvm-lab, KEEL_VMM_NO_EXTINT_WATCH=1). */
    no_watch = getenv("KEEL_VMM_NO_EXTINT_WATCH");
    vcpu->watch_started = !(no_watch && *no_watch) &&
        keel_thread_create(&vcpu->watch_thread, name, extint_watch_fn, vcpu) == 0;
    return 0;
}

void vcpu_stop_join(Vcpu *vcpu)
{
    if (!vcpu->thread_started) {
        return;
    }
    if (vcpu->watch_started) {
        pthread_mutex_lock(&vcpu->watch_lock);
        vcpu->watch_stop = true;
        pthread_cond_signal(&vcpu->watch_cond);
        pthread_mutex_unlock(&vcpu->watch_lock);
        pthread_join(vcpu->watch_thread, NULL);
        vcpu->watch_started = false;
    }
    vcpu_kick(vcpu);
    pthread_join(vcpu->thread, NULL);
    vcpu->thread_started = false;
    pthread_cond_destroy(&vcpu->watch_cond);
    pthread_mutex_destroy(&vcpu->watch_lock);
}
