/*
 * tests/vmm-virtio-core-test.c — the device-independent virtio core
 * (vmm/virtio-core.h) with a toy device plugged in through its ops table,
 * over guest RAM in a plain allocated buffer, without KVM or PCI.
 *
 * The toy "echo" device copies each chain's device-readable bytes into its
 * device-writable buffers and returns the chain; its hooks record the
 * thread they ran in.  The test plays both the driver (rings in guest RAM)
 * and the transport (virtqueue_start, kicks through the queue's notifier,
 * an ops table that counts interrupts per queue and NEEDS_RESET).
 *
 * Covered: the interrupt decision with EVENT_IDX across the 16-bit index
 * wrap-around, and with NO_INTERRUPT; interrupts go to the queue that
 * completed; two queues in two homes (main loop, iothread) whose passes,
 * interrupt BHs and stops each run in their own home thread; a stop with a
 * request held by the device (completed by its queue_stop hook, then no
 * interrupt); a broken ring: NEEDS_RESET once, no queue of the device takes
 * requests until the reset, then both work; config reads and writes
 * through the ops table.
 */
#include "config.h"

#include "tests/keel-test.h"
#include "vmm/virtio-core.h"
#include "vmm/virtio-pci.h"
#include "loop/iothread.h"
#include "loop/main-loop.h"
#include "compat/osdep.h"

#include <glib.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define RAM_SIZE (4u << 20)
#define QSIZE 16
#define NQ 2
#define GPA_RING(q) (0x10000u * ((q) + 1))     /* desc; avail +0x1000; used +0x2000 */
#define GPA_DATA(q, i) (0x100000u + 0x10000u * (q) + 0x100u * (i))

static Vm vm;
static KvmCaps fake_caps;
static uint8_t *ram;

static void *gpa(uint64_t a)
{
    return ram + a;
}

/* ---- the fake transport ------------------------------------------------------------- */

static unsigned irqs[NQ];
static bool irq_in_home[NQ];
static unsigned needs_reset_calls, config_changed_calls;
static VirtioDevice toydev;

static void t_notify_queue(void *transport, int q)
{
    (void)transport;
    __atomic_add_fetch(&irqs[q], 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&irq_in_home[q], virtio_queue_in_home(&toydev.queues[q]), __ATOMIC_SEQ_CST);
}

static void t_set_needs_reset(void *transport)
{
    (void)transport;
    __atomic_add_fetch(&needs_reset_calls, 1, __ATOMIC_SEQ_CST);
}

static void t_config_changed(void *transport)
{
    (void)transport;
    config_changed_calls++;
}

static const VirtioTransportOps fake_transport = {
    t_notify_queue, t_set_needs_reset, t_config_changed,
};

/* ---- the toy device ------------------------------------------------------------------- */

typedef struct Toy {
    unsigned handled[NQ];
    bool handled_in_home[NQ];
    unsigned stops[NQ];
    bool stop_in_home[NQ];
    unsigned resets;
    uint64_t features;
    uint8_t config[8];
    bool hold;                      /* keep the next chain instead of completing it */
    VirtQueueElement *held[NQ];
} Toy;

static Toy toy;

static unsigned toy_handle_output(VirtioDevice *vdev, VirtioQueue *q)
{
    Toy *t = vdev->opaque;
    unsigned n = 0;

    /* Atomics: the hooks run in the queue's thread, the checks in main's. */
    __atomic_store_n(&t->handled_in_home[q->index], virtio_queue_in_home(q), __ATOMIC_SEQ_CST);
    for (;;) {
        VirtQueueElement *e;
        VirtQueuePopResult r = virtio_queue_pop(q, sizeof(*e), (void **)&e);
        size_t done = 0;

        if (r == VQ_POP_EMPTY) {
            break;
        }
        if (r != VQ_POP_OK) {
            if (r == VQ_POP_BAD_CHAIN) {
                g_free(e);
                q->inflight--;
            }
            virtio_queue_set_broken(q, "toy: bad ring");
            break;
        }
        n++;
        __atomic_add_fetch(&t->handled[q->index], 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&t->hold, __ATOMIC_SEQ_CST) && !t->held[q->index]) {
            t->held[q->index] = e;
            continue;
        }
        for (unsigned i = 0; i < e->in_num && i < e->out_num; i++) {
            size_t len = MIN(e->in_sg[i].iov_len, e->out_sg[i].iov_len);
            memcpy(e->in_sg[i].iov_base, e->out_sg[i].iov_base, len);
            done += len;
        }
        virtio_queue_push(q, e, (uint32_t)done);
        g_free(e);
    }
    return n;
}

static void toy_get_config(VirtioDevice *vdev, uint8_t *buf, unsigned len)
{
    Toy *t = vdev->opaque;

    memcpy(buf, t->config, MIN(len, sizeof(t->config)));
}

static void toy_set_config(VirtioDevice *vdev, unsigned off, const uint8_t *buf, unsigned len)
{
    Toy *t = vdev->opaque;

    if (off < sizeof(t->config) && len <= sizeof(t->config) - off) {
        memcpy(t->config + off, buf, len);
    }
}

static void toy_start(VirtioDevice *vdev, uint64_t features)
{
    ((Toy *)vdev->opaque)->features = features;
}

static void toy_queue_stop(VirtioDevice *vdev, VirtioQueue *q)
{
    Toy *t = vdev->opaque;

    __atomic_add_fetch(&t->stops[q->index], 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&t->stop_in_home[q->index], virtio_queue_in_home(q), __ATOMIC_SEQ_CST);
    if (t->held[q->index]) {
        virtio_queue_push(q, t->held[q->index], 0);
        g_free(t->held[q->index]);
        t->held[q->index] = NULL;
    }
}

static void toy_reset(VirtioDevice *vdev)
{
    __atomic_add_fetch(&((Toy *)vdev->opaque)->resets, 1, __ATOMIC_SEQ_CST);
}

static const VirtioDeviceOps toy_ops = {
    .handle_output = toy_handle_output,
    .get_config = toy_get_config,
    .set_config = toy_set_config,
    .start = toy_start,
    .queue_stop = toy_queue_stop,
    .reset = toy_reset,
};

/* ---- the driver ------------------------------------------------------------------------- */

static uint16_t avail_idx[NQ];

static uint16_t *avail_flags(int q) { return gpa(GPA_RING(q) + 0x1000); }
static uint16_t *avail_idx_p(int q) { return gpa(GPA_RING(q) + 0x1000 + 2); }
static uint16_t *used_event(int q) { return gpa(GPA_RING(q) + 0x1000 + 4 + 2 * QSIZE); }
static uint16_t *used_idx_p(int q) { return gpa(GPA_RING(q) + 0x2000 + 2); }

static uint16_t used_idx(int q)
{
    return __atomic_load_n(used_idx_p(q), __ATOMIC_ACQUIRE);
}

static void put_desc(int q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    uint8_t *p = gpa(GPA_RING(q) + 16ull * i);

    memcpy(p, &addr, 8);
    memcpy(p + 8, &len, 4);
    memcpy(p + 12, &flags, 2);
    memcpy(p + 14, &next, 2);
}

/* A two-descriptor echo chain at slot @s (descriptors 2s, 2s+1). */
static void publish_echo(int q, unsigned s, uint8_t fill)
{
    uint16_t *ring = gpa(GPA_RING(q) + 0x1000 + 4);
    unsigned d = (2 * s) % QSIZE;

    memset(gpa(GPA_DATA(q, 2 * s)), fill, 32);
    memset(gpa(GPA_DATA(q, 2 * s + 1)), 0, 32);
    put_desc(q, d, GPA_DATA(q, 2 * s), 32, VRING_DESC_F_NEXT, (uint16_t)(d + 1));
    put_desc(q, d + 1, GPA_DATA(q, 2 * s + 1), 32, VRING_DESC_F_WRITE, 0);
    ring[avail_idx[q] % QSIZE] = (uint16_t)d;
    avail_idx[q]++;
    __atomic_store_n(avail_idx_p(q), avail_idx[q], __ATOMIC_RELEASE);
}

/* Queue @q's in-flight count and the toy's held chain, read in the
 * queue's thread (they are its own). */
typedef struct QueueState {
    VirtioQueue *q;
    unsigned inflight;
    bool held;
} QueueState;

static void queue_state_in_home(void *opaque)
{
    QueueState *st = opaque;

    st->inflight = st->q->inflight;
    st->held = toy.held[st->q->index] != NULL;
}

static QueueState queue_state(int q)
{
    QueueState st = { .q = &toydev.queues[q] };

    virtio_queue_run_in_home(st.q, queue_state_in_home, &st);
    return st;
}

static unsigned irq_count(int q)
{
    return __atomic_load_n(&irqs[q], __ATOMIC_SEQ_CST);
}

static void kick(int q)
{
    keel_event_notifier_set(&toydev.queues[q].notifier);
}

/* Run the main loop (and give the iothread time) until @cond or 5 s. */
#define WAIT_FOR(cond) __extension__ ({ \
    int64_t deadline_ = keel_monotonic_ns() + 5000000000ll; \
    while (!(cond) && keel_monotonic_ns() < deadline_) { \
        keel_aio_poll(keel_main_aio_context(), false); \
        g_usleep(200); \
    } \
    (cond); })

static void settle(void)
{
    for (int i = 0; i < 20; i++) {
        keel_aio_poll(keel_main_aio_context(), false);
        g_usleep(200);
    }
}

/* The transport's part of DRIVER_OK: map the rings, then start the core. */
static void start_device(bool event_idx)
{
    for (int q = 0; q < NQ; q++) {
        const char *why = NULL;
        memset(gpa(GPA_RING(q)), 0, 0x3000);
        avail_idx[q] = 0;
        KEEL_OK(virtqueue_start(&toydev.queues[q].vq, &vm, QSIZE, GPA_RING(q),
                                GPA_RING(q) + 0x1000, GPA_RING(q) + 0x2000, event_idx, false,
                                &why) == 0, "queue %d: rings mapped", q);
    }
    virtio_device_start(&toydev, event_idx ? 1ull << VIRTIO_F_EVENT_IDX : 0);
}

static void reset_device(void)
{
    virtio_device_reset(&toydev);
    for (int q = 0; q < NQ; q++) {
        virtqueue_reset(&toydev.queues[q].vq);
    }
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_echo_and_homes(void)
{
    unsigned before[NQ];

    start_device(false);
    KEEL_OK(toy.features == 0, "start hook saw the features");
    for (int q = 0; q < NQ; q++) {
        before[q] = irq_count(q);
        publish_echo(q, 0, (uint8_t)(0x40 + q));
        kick(q);
    }
    KEEL_OK(WAIT_FOR(used_idx(0) == 1 && used_idx(1) == 1), "both queues completed their chain");
    KEEL_OK(WAIT_FOR(irq_count(0) == before[0] + 1 && irq_count(1) == before[1] + 1),
            "one interrupt each, to the queue that completed");
    for (int q = 0; q < NQ; q++) {
        uint8_t *out = gpa(GPA_DATA(q, 1));
        KEEL_OK(out[0] == 0x40 + q && out[31] == 0x40 + q, "queue %d: echoed data", q);
        KEEL_OK(__atomic_load_n(&toy.handled_in_home[q], __ATOMIC_SEQ_CST),
                "queue %d: handle_output ran in its home thread", q);
        KEEL_OK(__atomic_load_n(&irq_in_home[q], __ATOMIC_SEQ_CST),
                "queue %d: interrupt decision in its home thread", q);
        KEEL_OK(queue_state(q).inflight == 0, "queue %d: nothing in flight", q);
    }
}

static void test_stop_in_home(void)
{
    unsigned irq_before, stops0 = __atomic_load_n(&toy.stops[0], __ATOMIC_SEQ_CST),
             stops1 = __atomic_load_n(&toy.stops[1], __ATOMIC_SEQ_CST);

    /* Queue 1 (iothread) keeps its next chain in flight. */
    __atomic_store_n(&toy.hold, true, __ATOMIC_SEQ_CST);
    publish_echo(1, 1, 0x77);
    kick(1);
    KEEL_OK(WAIT_FOR(queue_state(1).held), "iothread queue: a chain held by the device");
    KEEL_OK(queue_state(1).inflight == 1, "the core counts it in flight");
    irq_before = irq_count(1);
    reset_device();
    __atomic_store_n(&toy.hold, false, __ATOMIC_SEQ_CST);
    KEEL_OK(__atomic_load_n(&toy.stops[0], __ATOMIC_SEQ_CST) == stops0 + 1 &&
            __atomic_load_n(&toy.stops[1], __ATOMIC_SEQ_CST) == stops1 + 1,
            "reset stopped each queue once");
    KEEL_OK(__atomic_load_n(&toy.stop_in_home[0], __ATOMIC_SEQ_CST) &&
            __atomic_load_n(&toy.stop_in_home[1], __ATOMIC_SEQ_CST),
            "each queue stopped in its own home thread (main loop, iothread)");
    KEEL_OK(toy.held[1] == NULL && used_idx(1) == 2,
            "the held chain completed into the old ring before the reset returned");
    KEEL_OK(queue_state(1).inflight == 0, "nothing in flight after the stop");
    settle();
    KEEL_OK(irq_count(1) == irq_before, "no interrupt after the stop (the BH was cancelled)");
    KEEL_OK(__atomic_load_n(&toy.resets, __ATOMIC_SEQ_CST) >= 1, "the device's reset hook ran");
    KEEL_OK(!toydev.queues[0].running && !toydev.queues[1].running, "no queue runs");
}

static void test_event_idx_wrap(void)
{
    VirtQueue *vq = &toydev.queues[0].vq;
    unsigned before;
    uint16_t start = 0xfffe;

    start_device(true);
    /* Both sides just before the 16-bit wrap (as after 65534 requests). */
    avail_idx[0] = start;
    __atomic_store_n(avail_idx_p(0), start, __ATOMIC_RELEASE);
    *used_idx_p(0) = start;
    vq->last_avail_idx = vq->shadow_avail_idx = vq->used_idx = vq->signalled_used = start;
    settle();

    /* used_event 5: not reached by 0xfffe -> 0x0002: no interrupt. */
    before = irq_count(0);
    *used_event(0) = 5;
    for (unsigned s = 0; s < 4; s++) {
        publish_echo(0, s, (uint8_t)s);
    }
    kick(0);
    KEEL_OK(WAIT_FOR(used_idx(0) == 2), "4 chains across the wrap (used idx 0xfffe -> 0x0002)");
    settle();
    KEEL_OK(irq_count(0) == before, "EVENT_IDX: used_event 5 not crossed: no interrupt");
    KEEL_OK(toydev.queues[0].stats.irqs_suppressed > 0, "counted as suppressed");

    /* used_event 0x0003: crossed by 0x0002 -> 0x0004. */
    *used_event(0) = 3;
    publish_echo(0, 4, 4);
    publish_echo(0, 5, 5);
    kick(0);
    KEEL_OK(WAIT_FOR(used_idx(0) == 4), "2 more chains");
    KEEL_OK(WAIT_FOR(irq_count(0) == before + 1), "EVENT_IDX: used_event 3 crossed: one interrupt");

    /* used_event 0xffff, set before the wrap: the next used idx 5 is
     * beyond it only modulo 2^16, and 0x0004 -> 0x0005 does not cross it. */
    *used_event(0) = 0xffff;
    publish_echo(0, 6, 6);
    kick(0);
    KEEL_OK(WAIT_FOR(used_idx(0) == 5), "one more chain");
    settle();
    KEEL_OK(irq_count(0) == before + 1, "EVENT_IDX: a used_event behind the wrap is not crossed again");
    reset_device();
}

static void test_no_interrupt(void)
{
    unsigned before;

    start_device(false);
    before = irq_count(0);
    *avail_flags(0) = VRING_AVAIL_F_NO_INTERRUPT;
    publish_echo(0, 0, 1);
    kick(0);
    KEEL_OK(WAIT_FOR(used_idx(0) == 1), "NO_INTERRUPT: completed");
    settle();
    KEEL_OK(irq_count(0) == before, "NO_INTERRUPT: no interrupt");
    *avail_flags(0) = 0;
    publish_echo(0, 1, 2);
    kick(0);
    KEEL_OK(WAIT_FOR(irq_count(0) == before + 1), "flag cleared: interrupt");
    reset_device();
}

static void test_broken(void)
{
    uint16_t *ring = gpa(GPA_RING(0) + 0x1000 + 4);
    unsigned handled1, nr = needs_reset_calls;

    start_device(false);
    /* A head index outside the queue: the ring itself is broken. */
    ring[0] = QSIZE + 3;
    avail_idx[0] = 1;
    __atomic_store_n(avail_idx_p(0), 1, __ATOMIC_RELEASE);
    kick(0);
    KEEL_OK(WAIT_FOR(virtio_device_broken(&toydev)), "a broken ring marks the device broken");
    KEEL_OK(WAIT_FOR(needs_reset_calls == nr + 1), "the transport was told once (NEEDS_RESET)");
    handled1 = __atomic_load_n(&toy.handled[1], __ATOMIC_SEQ_CST);
    publish_echo(1, 0, 9);
    kick(1);
    settle();
    g_usleep(20000);
    settle();
    KEEL_OK(__atomic_load_n(&toy.handled[1], __ATOMIC_SEQ_CST) == handled1 && used_idx(1) == 0,
            "the other queue takes no request while the device is broken");
    reset_device();
    KEEL_OK(!virtio_device_broken(&toydev), "reset clears it");
    start_device(false);
    publish_echo(0, 0, 1);
    publish_echo(1, 0, 2);
    kick(0);
    kick(1);
    KEEL_OK(WAIT_FOR(used_idx(0) == 1 && used_idx(1) == 1), "both queues work after the reset");
    reset_device();
}

static void test_config(void)
{
    uint8_t buf[12];
    const uint8_t w[2] = { 0xab, 0xcd };

    memset(toy.config, 0, sizeof(toy.config));
    toy.config[0] = 0x11;
    virtio_device_get_config(&toydev, buf, sizeof(buf));
    KEEL_OK(buf[0] == 0x11 && buf[8] == 0 && buf[11] == 0,
            "get_config: the device's bytes, zeros past them");
    virtio_device_set_config(&toydev, 2, w, 2);
    KEEL_OK(toy.config[2] == 0xab && toy.config[3] == 0xcd, "set_config reaches the device");
    virtio_device_config_changed(&toydev);
    KEEL_OK(config_changed_calls == 1, "config_changed reaches the transport");
}

int main(void)
{
    KeelIOThread *io;
    KeelAioContext *ctxs[NQ];
    const char *ids[NQ] = { NULL, "io1" };

    alarm(60);
    if (keel_main_loop_init() < 0) {
        keel_test_skip_all("no main loop");
    }
    ram = g_malloc0(RAM_SIZE);
    vm.kvm_fd = vm.vm_fd = vm.ram_fd = -1;
    vm.caps = &fake_caps;
    vm.ram = ram;
    vm.ram_size = RAM_SIZE;
    vm.slots[0] = (VmRamSlot) { .gpa = 0, .size = RAM_SIZE, .hva = ram };
    vm.nr_slots = 1;
    vm.low_ram_end = RAM_SIZE;
    io = keel_iothread_new("io1");
    if (!io) {
        keel_test_skip_all("cannot start an iothread");
    }
    ctxs[0] = keel_main_aio_context();
    ctxs[1] = keel_iothread_get_aio_context(io);
    KEEL_OK(virtio_device_init(&toydev, "toy", &toy_ops, &toy, 0, ctxs, ids) == -EINVAL,
            "init refuses 0 queues");
    KEEL_OK(virtio_device_init(&toydev, "toy", &toy_ops, &toy, VIRTIO_MAX_QUEUES + 1, ctxs,
                               ids) == -EINVAL, "init refuses too many queues");
    KEEL_OK(virtio_device_init(&toydev, "toy", &toy_ops, &toy, NQ, ctxs, ids) == 0,
            "init: 2 queues, main loop and iothread");
    virtio_device_bind_transport(&toydev, &fake_transport, NULL);

    test_echo_and_homes();
    test_stop_in_home();
    test_event_idx_wrap();
    test_no_interrupt();
    test_broken();
    test_config();

    virtio_device_cleanup(&toydev);
    keel_iothread_free(io);
    g_free(ram);
    return keel_test_done();
}
