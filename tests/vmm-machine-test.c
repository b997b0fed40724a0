/*
 * The machine object without KVM (vmm/machine.h): its registry of devices
 * by id, its iothreads (real threads: lookup, their AioContext runs work in
 * that thread, query-iothreads), stop/cont calling the ops in the order
 * that keeps I/O quiet, and the interrupt bookkeeping (vmm/kvm-irq.h's
 * allocator, and MSI routes on a Vm whose capabilities say GSI routing).
 */
#include "config.h"

#include "tests/keel-test.h"
#include "vmm/kvm.h"
#include "vmm/machine.h"
#include "vmm/options.h"
#include "loop/main-loop.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- devices by id --------------------------------------------------------- */

typedef struct Visit {
    char seen[256];
    int calls;
} Visit;

static void visit(void *opaque, const char *id, const char *kind, void *dev)
{
    Visit *v = opaque;

    (void)dev;
    v->calls++;
    g_strlcat(v->seen, id, sizeof(v->seen));
    g_strlcat(v->seen, ":", sizeof(v->seen));
    g_strlcat(v->seen, kind, sizeof(v->seen));
    g_strlcat(v->seen, " ", sizeof(v->seen));
}

static void test_devices(void)
{
    VmmMachine *m = vmm_machine_new("t", NULL, NULL, false, false);
    int a = 1, b = 2, c = 3;
    char id[8] = "disk0";
    Visit v = { "", 0 };

    KEEL_IS(vmm_machine_add_device(m, id, "virtio-blk-pci", &a), 0, "add disk0");
    KEEL_IS(vmm_machine_add_device(m, "serial0", "isa-serial", &b), 0, "add serial0");
    KEEL_IS(vmm_machine_add_device(m, "disk1", "virtio-blk-pci", &c), 0, "add disk1");
    strcpy(id, "XXXXX");    /* the registry keeps its own copy */
    KEEL_OK(vmm_machine_find_device(m, "disk0", NULL) == &a, "disk0 found by id (copied)");
    KEEL_OK(vmm_machine_find_device(m, "disk0", "virtio-blk-pci") == &a, "and by id + kind");
    KEEL_OK(vmm_machine_find_device(m, "disk0", "isa-serial") == NULL,
            "not when the kind differs");
    KEEL_OK(vmm_machine_find_device(m, "nope", NULL) == NULL, "unknown id: NULL");
    KEEL_IS(vmm_machine_add_device(m, "disk0", "isa-serial", &b), -EEXIST,
            "a taken id is refused, whatever the kind");
    KEEL_IS(vmm_machine_add_device(m, "", "isa-serial", &b), -EINVAL, "empty id refused");
    KEEL_IS(vmm_machine_add_device(m, "x", NULL, &b), -EINVAL, "no kind refused");
    KEEL_OK(!strcmp(vmm_machine_device_kind(m, "serial0"), "isa-serial"), "kind of serial0");

    KEEL_IS(vmm_machine_foreach_device(m, "virtio-blk-pci", visit, &v), 2, "two of a kind");
    KEEL_OK(!strcmp(v.seen, "disk0:virtio-blk-pci disk1:virtio-blk-pci "),
            "visited in registration order (%s)", v.seen);
    KEEL_IS(vmm_machine_remove_device(m, "disk0"), 0, "remove disk0");
    KEEL_IS(vmm_machine_remove_device(m, "disk0"), -ENOENT, "twice: ENOENT");
    v.seen[0] = '\0';
    KEEL_IS(vmm_machine_foreach_device(m, NULL, visit, &v), 2, "two left");
    KEEL_OK(!strcmp(v.seen, "serial0:isa-serial disk1:virtio-blk-pci "), "order kept (%s)",
            v.seen);
    KEEL_IS(vmm_machine_add_device(m, "disk0", "virtio-blk-pci", &a), 0, "its id is free again");
    vmm_machine_free(m);
}

/* ---- iothreads ---------------------------------------------------------------- */

static void tid_here(void *opaque)
{
    *(long *)opaque = (long)syscall(SYS_gettid);
}

static void test_iothreads(void)
{
    VmmMachine *m = vmm_machine_new(NULL, NULL, NULL, false, false);
    VmmIOThread io0 = { (char *)"io0", -1, -1, -1 };
    VmmIOThread io1 = { (char *)"io1", 0, 4, 2 };
    VmmIOThreadInfo info[4];
    char err[256];
    long tid0 = 0, tid1 = 0;
    int n;

    n = vmm_machine_query_iothreads(m, info, 4);
    KEEL_IS(n, 0, "no iothreads yet: query-iothreads lists none");
    KEEL_IS(vmm_machine_add_iothread(m, &io0, err, sizeof(err)), 0, "iothread io0 starts");
    KEEL_IS(vmm_machine_add_iothread(m, &io1, err, sizeof(err)), 0, "iothread io1 starts");
    KEEL_IS(vmm_machine_add_iothread(m, &io0, err, sizeof(err)), -1, "a second io0 is refused");
    KEEL_OK(strstr(err, "io0") != NULL, "naming it (%s)", err);
    KEEL_IS(vmm_machine_nr_iothreads(m), 2, "two iothreads");
    KEEL_OK(vmm_machine_iothread(m, "io1") != NULL &&
            !strcmp(keel_iothread_id(vmm_machine_iothread(m, "io1")), "io1"), "io1 by id");
    KEEL_OK(vmm_machine_iothread(m, "io9") == NULL && !vmm_machine_iothread_context(m, "io9"),
            "unknown id: NULL");
    keel_aio_run_in_context_wait(vmm_machine_iothread_context(m, "io0"), tid_here, &tid0);
    keel_aio_run_in_context_wait(vmm_machine_iothread_context(m, "io1"), tid_here, &tid1);
    KEEL_OK(tid0 > 0 && tid1 > 0 && tid0 != tid1 && tid0 != (long)syscall(SYS_gettid),
            "each context runs work in its own thread (%ld, %ld)", tid0, tid1);

    n = vmm_machine_query_iothreads(m, info, 4);
    KEEL_IS(n, 2, "query-iothreads: the machine's two");
    KEEL_OK(!strcmp(info[0].id, "io0") && info[0].thread_id == tid0 &&
            info[0].poll_max_ns == KEEL_IOTHREAD_POLL_MAX_NS && info[0].poll_grow == 0,
            "io0: its thread id, default polling");
    KEEL_OK(!strcmp(info[1].id, "io1") && info[1].thread_id == tid1 &&
            info[1].poll_max_ns == 0 && info[1].poll_grow == 4 && info[1].poll_shrink == 2,
            "io1: its thread id, its poll parameters");
    vmm_machine_free(m);    /* joins both */
    KEEL_OK(true, "freed with its iothreads");
}

/* ---- stop / cont ---------------------------------------------------------------- */

static char order[64];

static void op_pause(void *opaque)
{
    (void)opaque;
    g_strlcat(order, "drain ", sizeof(order));
}

static void op_resume(void *opaque)
{
    (void)opaque;
    g_strlcat(order, "retry ", sizeof(order));
}

static void on_event(void *opaque, const char *name, const char *data)
{
    (void)opaque;
    (void)data;
    g_strlcat(order, name, sizeof(order));
    g_strlcat(order, " ", sizeof(order));
}

static void test_stop_cont(void)
{
    static const VmmMachineOps ops = { .pause = op_pause, .resume = op_resume };
    VmmMachine *m = vmm_machine_new(NULL, &ops, NULL, true, false);
    char err[128];
    CpuTopology topo;

    memset(&topo, 0, sizeof(topo));
    topo.cpus = topo.sockets = topo.cores = topo.threads = topo.max_cpus = 1;
    vmm_machine_add_listener(m, on_event, NULL);
    KEEL_IS(vmm_machine_create_vcpus(m, &topo), -1, "no Vm attached: no vCPUs");
    KEEL_IS(vmm_machine_nr_vcpus(m), 0, "and none made");
    KEEL_OK(vmm_machine_vcpu(m, 0) == NULL, "vCPU 0: NULL");
    vmm_machine_start(m);
    KEEL_IS(vmm_machine_state(m), VMM_RUN_PRELAUNCH, "-S: prelaunch after start");
    KEEL_IS(vmm_machine_cont(m, err, sizeof(err)), 0, "cont");
    vmm_machine_stop(m, VMM_RUN_PAUSED);
    KEEL_OK(!strcmp(order, "retry RESUME drain STOP "),
            "cont retries held I/O before RESUME; stop drains before STOP (%s)", order);
    KEEL_IS(vmm_machine_claim_irq(m, 4, "serial0", false), -ENODEV, "no Vm: no IRQ lines");
    vmm_machine_free(m);
}

/* ---- interrupt lines and MSI routes ------------------------------------------------ */

static void test_irq_allocator(void)
{
    KvmIrqAllocator a;
    int got[6];

    kvm_irq_allocator_init(&a, 27);
    KEEL_IS(kvm_irq_claim_line(&a, 4, "serial0", false), 0, "COM1 claims IRQ 4");
    KEEL_IS(kvm_irq_claim_line(&a, 4, "serial1", false), -EBUSY, "a second claim of 4: EBUSY");
    KEEL_IS(kvm_irq_claim_line(&a, 4, "pci", true), -EBUSY,
            "a shared claim of an exclusive line: EBUSY");
    KEEL_OK(!strcmp(kvm_irq_line_owner(&a, 4), "serial0"), "4 is serial0's");
    KEEL_IS(kvm_irq_claim_line(&a, 24, "x", false), -EINVAL, "no pin 24");
    KEEL_IS(kvm_irq_claim_line(&a, 9, "acpi-pm", true), 0, "the SCI claims 9 shared");
    KEEL_IS(kvm_irq_claim_line(&a, 11, "hpet", false), 0, "something claims 11 exclusively");
    for (int i = 0; i < 4; i++) {
        got[i] = kvm_irq_alloc_intx(&a, "virtio");
    }
    KEEL_OK(got[0] == 10 && got[1] == 9 && got[2] == 5 && got[3] == 10,
            "INTx lines round-robin over 10, 11, 9, 5, skipping the exclusive 11, sharing 9 "
            "with the SCI (%d %d %d %d)", got[0], got[1], got[2], got[3]);
    KEEL_IS(a.line_users[9], 2, "9 has two users");
    kvm_irq_release_line(&a, 9);
    kvm_irq_release_line(&a, 9);
    KEEL_OK(kvm_irq_line_owner(&a, 9) == NULL, "released twice: free");
    KEEL_IS(kvm_irq_claim_line(&a, 9, "rtc", false), 0, "and claimable exclusively");

    got[0] = kvm_irq_alloc_gsi(&a);
    got[1] = kvm_irq_alloc_gsi(&a);
    got[2] = kvm_irq_alloc_gsi(&a);
    got[3] = kvm_irq_alloc_gsi(&a);
    KEEL_OK(got[0] == 24 && got[1] == 25 && got[2] == 26 && got[3] == -ENOSPC,
            "MSI GSIs from 24 up to KVM's 27 routes, then ENOSPC (%d %d %d %d)",
            got[0], got[1], got[2], got[3]);
    kvm_irq_free_gsi(&a, 25);
    KEEL_IS(kvm_irq_alloc_gsi(&a), 25, "a freed GSI is reused");

    memset(&a, 0, sizeof(a));
    KEEL_IS(kvm_irq_alloc_gsi(&a), -ENOSPC, "a zeroed allocator has no MSI GSIs");
    kvm_irq_allocator_init(&a, 1 << 20);
    KEEL_IS(a.nr_gsis, KVM_IRQ_MAX_GSI, "a huge routing count is clamped");
}

static void test_msi_routes(void)
{
    static KvmCaps caps;
    static Vm vm;
    VmmMachine *m = vmm_machine_new(NULL, NULL, NULL, false, false);
    int g0, g1, g2;

    memset(&vm, 0, sizeof(vm));
    caps.irq_routing = 26;
    vm.caps = &caps;
    vm.kvm_fd = vm.vm_fd = vm.ram_fd = -1;
    kvm_irq_allocator_init(&vm.irqs, caps.irq_routing);
    vmm_machine_attach_vm(m, &vm);
    KEEL_OK(vmm_machine_vm(m) == &vm, "the Vm is attached");

    g0 = vmm_machine_alloc_msi_route(m, 0xfee00000, 0x4021);
    g1 = vmm_machine_alloc_msi_route(m, 0xfee01000, 0x4022);
    g2 = vmm_machine_alloc_msi_route(m, 0xfee02000, 0x4023);
    KEEL_OK(g0 == 24 && g1 == 25 && g2 == -ENOSPC, "two routes fit in 26 GSIs (%d %d %d)",
            g0, g1, g2);
    KEEL_OK(vm.nr_msi_routes == 2 && vm.msi_routes[1].u.msi.address_lo == 0xfee01000 &&
            vm.msi_routes[1].u.msi.data == 0x4022, "the table holds their messages");
    KEEL_IS(vm_msi_route_update(&vm, g1, 0xfee03000, 0x4031), 0, "update route 25");
    KEEL_OK(vm.msi_routes[1].u.msi.address_lo == 0xfee03000 &&
            vm.msi_routes[1].u.msi.data == 0x4031, "its message changed");
    KEEL_IS(vm_msi_route_remove(&vm, g0), 0, "remove route 24");
    KEEL_IS(vm_msi_route_remove(&vm, g0), -ENOENT, "twice: ENOENT");
    KEEL_OK(vm.nr_msi_routes == 1 && vm.msi_routes[0].gsi == 25, "route 25 is left");
    KEEL_IS(vmm_machine_alloc_msi_route(m, 0xfee00000, 0x4041), 24, "GSI 24 is reused");
    KEEL_IS(vmm_machine_claim_irq(m, 4, "serial0", false), 0, "IRQ 4 through the machine");
    KEEL_IS(vmm_machine_claim_irq(m, 4, "serial1", false), -EBUSY, "and not twice");
    KEEL_IS(vmm_machine_alloc_intx(m, "virtio-blk0"), 10, "first INTx line: 10");

    caps.irq_routing = 0;
    KEEL_IS(vmm_machine_alloc_msi_route(m, 0xfee00000, 0x4051), -ENOTSUP,
            "no GSI routing: ENOTSUP (the caller falls back to SIGNAL_MSI or INTx)");
    free(vm.msi_routes);
    vmm_machine_free(m);
}

int main(void)
{
    if (keel_main_loop_init() < 0) {
        keel_test_skip_all("cannot start the main loop");
    }
    keel_global_mutex_lock();
    test_devices();
    test_iothreads();
    test_stop_cont();
    test_irq_allocator();
    test_msi_routes();
    keel_global_mutex_unlock();
    return keel_test_done();
}
