/*
 * The device side of a split virtqueue; see virtqueue.h for the contract.
 *
 * Guest memory is read through small helpers: descriptors are copied into
 * a local struct followed by a compiler barrier (so the compiler cannot
 * re-read a field the guest may have changed after it was checked), and the
 * indices are read with atomic loads.
 */
#include "config.h"

#include "vmm/virtqueue.h"

#include <errno.h>
#include <glib.h>
#include <string.h>

/* The rings are little endian (virtio 1.x), like every host of this VMM. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "virtqueue assumes a little-endian host"
#endif

/* Split-ring layout (virtio 1.x, 2.7). */
#define DESC_SIZE 16
#define AVAIL_FLAGS 0
#define AVAIL_IDX 2
#define AVAIL_RING 4
#define USED_FLAGS 0
#define USED_IDX 2
#define USED_RING 4
#define USED_ELEM_SIZE 8

typedef struct Desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
} Desc;

#define compiler_barrier() __asm__ __volatile__("" ::: "memory")

static void read_desc(const uint8_t *table, unsigned i, Desc *d)
{
    uint8_t raw[DESC_SIZE];

    memcpy(raw, table + (size_t)i * DESC_SIZE, DESC_SIZE);
    compiler_barrier();
    memcpy(&d->addr, raw, 8);
    memcpy(&d->len, raw + 8, 4);
    memcpy(&d->flags, raw + 12, 2);
    memcpy(&d->next, raw + 14, 2);
}

static uint16_t load16_acquire(const uint8_t *p)
{
    return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_ACQUIRE);
}

static uint16_t load16(const uint8_t *p)
{
    return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_RELAXED);
}

static void store16(uint8_t *p, uint16_t v)
{
    __atomic_store_n((uint16_t *)(void *)p, v, __ATOMIC_RELAXED);
}

static void store16_release(uint8_t *p, uint16_t v)
{
    __atomic_store_n((uint16_t *)(void *)p, v, __ATOMIC_RELEASE);
}

/* ---- start / reset --------------------------------------------------------- */

int virtqueue_start(VirtQueue *vq, Vm *vm, uint16_t size, uint64_t desc_gpa,
                    uint64_t avail_gpa, uint64_t used_gpa, bool event_idx,
                    bool indirect_allowed, const char **why)
{
    uint64_t desc_len = (uint64_t)size * DESC_SIZE;
    uint64_t avail_len = AVAIL_RING + 2ull * size + 2;          /* + used_event */
    uint64_t used_len = USED_RING + (uint64_t)USED_ELEM_SIZE * size + 2;  /* + avail_event */

    virtqueue_reset(vq);
    if (!size || (size & (size - 1)) || size > VIRTQUEUE_MAX_SIZE) {
        *why = "queue size is not a power of two up to 1024";
        return -EINVAL;
    }
    if ((desc_gpa & 15) || (avail_gpa & 1) || (used_gpa & 3)) {
        *why = "ring address misaligned (descriptors 16, driver area 2, device area 4)";
        return -EINVAL;
    }
    vq->desc = vm_gpa_to_hva(vm, desc_gpa, desc_len);
    vq->avail = vm_gpa_to_hva(vm, avail_gpa, avail_len);
    vq->used = vm_gpa_to_hva(vm, used_gpa, used_len);
    if (!vq->desc || !vq->avail || !vq->used) {
        vq->desc = vq->avail = vq->used = NULL;
        *why = "ring outside guest RAM";
        return -EINVAL;
    }
    if (!vq->scratch) {
        vq->scratch = g_new(VirtQueueDescSeg, VIRTQUEUE_MAX_SIZE);
    }
    vq->vm = vm;
    vq->size = size;
    vq->event_idx = event_idx;
    vq->indirect_allowed = indirect_allowed;
    vq->notification = true;
    /* After a reset both indices start at 0 (virtio 1.x 2.7.6); the device
     * owns the used ring's index and flags, so say so in guest memory too. */
    vq->used_idx = 0;
    vq->last_avail_idx = 0;
    vq->shadow_avail_idx = 0;
    /* Nothing used yet, nothing signalled: the first decision compares
     * used_event against 0 (a driver that starts with interrupts off says
     * used_event = 0xffff and gets none). */
    vq->signalled_used = 0;
    store16(vq->used + USED_FLAGS, 0);
    store16_release(vq->used + USED_IDX, 0);
    return 0;
}

void virtqueue_reset(VirtQueue *vq)
{
    VirtQueueDescSeg *scratch = vq->scratch;
    uint64_t popped = vq->nr_popped, bad = vq->nr_bad_chains;

    memset(vq, 0, sizeof(*vq));
    vq->scratch = scratch;
    vq->nr_popped = popped;
    vq->nr_bad_chains = bad;
}

void virtqueue_free(VirtQueue *vq)
{
    g_free(vq->scratch);
    memset(vq, 0, sizeof(*vq));
}

bool virtqueue_started(const VirtQueue *vq)
{
    return vq->size != 0;
}

/* ---- popping ----------------------------------------------------------------- */

/* Host address of [gpa, gpa+len) in guest RAM, or NULL.  A zero-length
 * buffer is never dereferenced; any address will do for it. */
static uint8_t *map_buffer(VirtQueue *vq, uint64_t gpa, uint32_t len)
{
    static uint8_t empty;

    if (len == 0) {
        return &empty;
    }
    return vm_gpa_to_hva(vq->vm, gpa, len);
}

typedef struct ChainWalk {
    unsigned n;             /* buffers recorded in vq->scratch */
    uint64_t out_bytes, in_bytes;
    unsigned out_num, in_num;
    const char *error;      /* the chain is malformed */
    bool complete;          /* walked to a descriptor without NEXT */
} ChainWalk;

static void chain_error(ChainWalk *w, const char *why)
{
    if (!w->error) {
        w->error = why;
    }
}

/* Records one buffer; errors that still let the walk go on (bad address,
 * direction, size) only mark the chain. */
static void walk_record(VirtQueue *vq, ChainWalk *w, const Desc *d)
{
    bool write = d->flags & VRING_DESC_F_WRITE;
    uint8_t *hva = map_buffer(vq, d->addr, d->len);
    VirtQueueDescSeg *seg = &vq->scratch[w->n++];

    seg->hva = hva;
    seg->len = d->len;
    seg->write = write;
    if (!hva) {
        chain_error(w, "buffer outside guest RAM");
    }
    if (write) {
        w->in_bytes += d->len;
        w->in_num += d->len != 0;
    } else {
        if (w->in_num || w->in_bytes) {
            chain_error(w, "device-readable buffer after a device-writable one");
        }
        w->out_bytes += d->len;
        w->out_num += d->len != 0;
    }
    if (w->out_bytes + w->in_bytes > VIRTQUEUE_MAX_CHAIN_BYTES) {
        chain_error(w, "chain larger than the limit");
    }
}

/* Walks the chain at @head; fills vq->scratch.  Stops early (complete =
 * false) only on errors that leave no way to find the chain's end. */
static void walk_chain(VirtQueue *vq, uint16_t head, ChainWalk *w)
{
    const uint8_t *table = vq->desc;
    unsigned table_size = vq->size;
    unsigned max = vq->size;            /* a chain never exceeds the queue size */
    unsigned i = head;
    Desc d;

    memset(w, 0, sizeof(*w));
    read_desc(table, i, &d);
    if (d.flags & VRING_DESC_F_INDIRECT) {
        if (!vq->indirect_allowed) {
            chain_error(w, "indirect descriptor without VIRTIO_F_INDIRECT_DESC");
            return;
        }
        if (d.flags & VRING_DESC_F_NEXT) {
            chain_error(w, "indirect descriptor with NEXT");
            return;
        }
        if (d.len == 0 || d.len % DESC_SIZE || d.len / DESC_SIZE > vq->size) {
            chain_error(w, "indirect table size invalid");
            return;
        }
        table = vm_gpa_to_hva(vq->vm, d.addr, d.len);
        if (!table) {
            chain_error(w, "indirect table outside guest RAM");
            return;
        }
        table_size = d.len / DESC_SIZE;
        max = table_size;
        i = 0;
        read_desc(table, i, &d);
    }
    for (;;) {
        if (w->n >= max) {
            chain_error(w, "chain longer than the queue (a loop)");
            return;
        }
        if (d.flags & VRING_DESC_F_INDIRECT) {
            chain_error(w, table == vq->desc ? "indirect descriptor inside a chain"
                                             : "nested indirect descriptor");
        }
        walk_record(vq, w, &d);
        if (!(d.flags & VRING_DESC_F_NEXT)) {
            w->complete = true;
            return;
        }
        i = d.next;
        if (i >= table_size) {
            chain_error(w, "next index out of range");
            return;
        }
        read_desc(table, i, &d);
    }
}

static void *alloc_element(size_t elem_size, unsigned nsg, VirtQueueElement **elem)
{
    size_t off = (elem_size + __alignof__(struct iovec) - 1) & ~(__alignof__(struct iovec) - 1);
    uint8_t *block = g_malloc0(off + (size_t)nsg * sizeof(struct iovec));

    *elem = (VirtQueueElement *)(void *)block;
    (*elem)->out_sg = (struct iovec *)(void *)(block + off);
    return block;
}

VirtQueuePopResult virtqueue_pop_chain(VirtQueue *vq, uint16_t head, size_t elem_size,
                                       void **out)
{
    VirtQueueElement *elem;
    ChainWalk w;
    void *block;

    if (elem_size < sizeof(VirtQueueElement)) {
        elem_size = sizeof(VirtQueueElement);
    }
    walk_chain(vq, head, &w);
    vq->nr_popped++;
    if (w.error) {
        VirtQueueDescSeg *tail = w.complete && w.n ? &vq->scratch[w.n - 1] : NULL;
        bool usable = tail && tail->write && tail->len >= 1 && tail->hva;

        vq->nr_bad_chains++;
        vq->last_error = w.error;
        block = alloc_element(elem_size, usable ? 1 : 0, &elem);
        elem->head = head;
        elem->in_sg = elem->out_sg;
        if (usable) {
            elem->in_num = 1;
            elem->in_bytes = 1;
            elem->in_sg[0].iov_base = tail->hva + tail->len - 1;
            elem->in_sg[0].iov_len = 1;
        }
        vq->inuse++;
        *out = block;
        return VQ_POP_BAD_CHAIN;
    }

    block = alloc_element(elem_size, w.out_num + w.in_num, &elem);
    elem->head = head;
    elem->out_num = w.out_num;
    elem->in_num = w.in_num;
    elem->out_bytes = w.out_bytes;
    elem->in_bytes = w.in_bytes;
    elem->in_sg = elem->out_sg + w.out_num;
    for (unsigned k = 0, o = 0, in = 0; k < w.n; k++) {
        VirtQueueDescSeg *s = &vq->scratch[k];
        struct iovec *v;
        if (!s->len) {
            continue;
        }
        v = s->write ? &elem->in_sg[in++] : &elem->out_sg[o++];
        v->iov_base = s->hva;
        v->iov_len = s->len;
    }
    vq->inuse++;
    *out = block;
    return VQ_POP_OK;
}

bool virtqueue_avail_pending(VirtQueue *vq)
{
    if (!vq->size) {
        return false;
    }
    if (vq->shadow_avail_idx != vq->last_avail_idx) {
        return true;
    }
    vq->shadow_avail_idx = load16_acquire(vq->avail + AVAIL_IDX);
    return vq->shadow_avail_idx != vq->last_avail_idx;
}

VirtQueuePopResult virtqueue_pop(VirtQueue *vq, size_t elem_size, void **out)
{
    uint16_t head;

    *out = NULL;
    if (!vq->size) {
        return VQ_POP_EMPTY;
    }
    if (vq->shadow_avail_idx == vq->last_avail_idx) {
        /* Acquire: the ring entries below are read after the index. */
        vq->shadow_avail_idx = load16_acquire(vq->avail + AVAIL_IDX);
        if (vq->shadow_avail_idx == vq->last_avail_idx) {
            return VQ_POP_EMPTY;
        }
    }
    if ((uint16_t)(vq->shadow_avail_idx - vq->last_avail_idx) > vq->size) {
        vq->last_error = "driver published more entries than the queue holds";
        return VQ_POP_BROKEN;
    }
    head = load16(vq->avail + AVAIL_RING + 2u * (vq->last_avail_idx & (vq->size - 1)));
    if (head >= vq->size) {
        vq->last_error = "avail ring entry out of range";
        return VQ_POP_BROKEN;
    }
    vq->last_avail_idx++;
    if (vq->event_idx && vq->notification) {
        /* Keep avail_event at the next entry while we are taking them, so
         * a kick arrives for anything added after we stop (set again, with
         * the barrier, by set_notification(true) at the end of a pass). */
        store16(vq->used + USED_RING + (size_t)USED_ELEM_SIZE * vq->size, vq->last_avail_idx);
    }
    return virtqueue_pop_chain(vq, head, elem_size, out);
}

/* ---- completing --------------------------------------------------------------- */

void virtqueue_fill(VirtQueue *vq, const VirtQueueElement *elem, uint32_t len)
{
    uint8_t *e;
    uint32_t id = elem->head;

    if (!vq->size) {
        return;         /* reset meanwhile: the driver no longer has this ring */
    }
    e = vq->used + USED_RING + (size_t)USED_ELEM_SIZE * (vq->used_idx & (vq->size - 1));
    memcpy(e, &id, 4);
    memcpy(e + 4, &len, 4);
    vq->used_idx++;
    if (vq->inuse) {
        vq->inuse--;
    }
}

void virtqueue_flush(VirtQueue *vq)
{
    if (!vq->size) {
        return;
    }
    /* Release: the elements (and the data the requests wrote) before the index. */
    store16_release(vq->used + USED_IDX, vq->used_idx);
}

void virtqueue_push(VirtQueue *vq, const VirtQueueElement *elem, uint32_t len)
{
    virtqueue_fill(vq, elem, len);
    virtqueue_flush(vq);
}

/* virtio 1.x 2.7.10: true when @event_idx lies in (old, new]. */
static bool vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx)
{
    return (uint16_t)(new_idx - event_idx - 1) < (uint16_t)(new_idx - old_idx);
}

bool virtqueue_should_notify(VirtQueue *vq)
{
    uint16_t old, now;

    if (!vq->size) {
        return false;
    }
    /* Store (used->idx) → load (used_event / flags): a full barrier. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    now = vq->used_idx;
    old = vq->signalled_used;
    vq->signalled_used = now;
    if (old == now) {
        return false;           /* nothing new since the last decision */
    }
    if (!vq->event_idx) {
        return !(load16(vq->avail + AVAIL_FLAGS) & VRING_AVAIL_F_NO_INTERRUPT);
    }
    return vring_need_event(load16(vq->avail + AVAIL_RING + 2u * vq->size), now, old);
}

void virtqueue_set_notification(VirtQueue *vq, bool enable)
{
    if (!vq->size) {
        return;
    }
    vq->notification = enable;
    if (vq->event_idx) {
        if (enable) {
            store16(vq->used + USED_RING + (size_t)USED_ELEM_SIZE * vq->size,
                    vq->last_avail_idx);
        }
    } else {
        uint16_t flags = load16(vq->used + USED_FLAGS);
        flags = enable ? (flags & ~VRING_USED_F_NO_NOTIFY) : (flags | VRING_USED_F_NO_NOTIFY);
        store16(vq->used + USED_FLAGS, flags);
    }
    if (enable) {
        /* Store (avail_event / flags) → load (avail->idx) in the caller's
         * re-check. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }
}
