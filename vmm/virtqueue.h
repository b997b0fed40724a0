/*
 * vmm/virtqueue.h — the device side of a virtio split virtqueue (virtio 1.x,
 * 2.7): popping descriptor chains from the available ring and returning
 * them on the used ring, with notification suppression (EVENT_IDX or the
 * NO_NOTIFY / NO_INTERRUPT flags).
 *
 * Trust.  Everything in guest memory is hostile.  virtqueue_start() checks
 * that the three rings lie wholly inside guest RAM (vm_gpa_to_hva) and are
 * aligned, so later ring accesses need no checks.  virtqueue_pop() reads
 * every descriptor exactly once into host memory before looking at it, and
 * accepts a chain only when
 *   - every buffer lies inside one guest RAM slot (never host memory),
 *   - it ends within the queue size (no loops; a chain longer than the queue
 *     is a loop or a lie), every `next` index is in range,
 *   - its buffers total at most VIRTQUEUE_MAX_CHAIN_BYTES,
 *   - device-readable buffers all come before device-writable ones,
 *   - an indirect table is allowed (VIRTIO_F_INDIRECT_DESC), is the chain's
 *     only descriptor, lies in RAM, holds whole descriptors, is not longer
 *     than the queue, and contains no indirect descriptor itself; its chain
 *     is checked like a direct one.
 * A malformed chain is returned as VQ_POP_BAD_CHAIN: the device can fail
 * that request when the chain's last buffer is a usable device-writable
 * byte (elem->in_num == 1, the "status" location), and must set NEEDS_RESET
 * otherwise.  A broken ring (a head index out of range, or the driver
 * claiming more new entries than the queue holds) is VQ_POP_BROKEN.
 *
 * Ordering (x86 and the virtio spec): the avail index is read with acquire
 * before the ring entries it covers; used entries are written before the
 * used index is published with release; a full barrier separates
 * publishing the used index from reading used_event (and writing
 * avail_event from re-reading the avail index), because those are
 * store → load orders.
 *
 * Ownership: a VirtQueue is embedded in its transport; its state belongs to
 * the thread that processes the queue (the queue's AioContext home thread)
 * between virtqueue_start() and virtqueue_reset(), which the transport calls
 * while nothing processes the queue.  Popped elements are owned by the
 * caller until virtqueue_push() (which does not free them: g_free after).
 *
 * Thread rules: every function here is called by the single thread that
 * currently owns the queue; virtqueue_avail_pending() may also be called by
 * the adaptive-polling function of that thread.
 */
#ifndef KEEL_VMM_VIRTQUEUE_H
#define KEEL_VMM_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmm/kvm.h"

#define VIRTQUEUE_MAX_SIZE 1024
/* The most bytes one chain may describe: more than any sane request. */
#define VIRTQUEUE_MAX_CHAIN_BYTES (1ull << 30)

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4
#define VRING_USED_F_NO_NOTIFY 1
#define VRING_AVAIL_F_NO_INTERRUPT 1

/* A popped chain.  Embed it first in a larger request struct: virtqueue_pop
 * allocates the caller's struct and the iovec arrays in one block. */
typedef struct VirtQueueElement {
    uint16_t head;              /* id returned on the used ring */
    unsigned out_num;           /* device-readable buffers */
    unsigned in_num;            /* device-writable buffers */
    uint64_t out_bytes, in_bytes;
    struct iovec *out_sg;       /* host addresses inside guest RAM */
    struct iovec *in_sg;
} VirtQueueElement;

typedef enum VirtQueuePopResult {
    VQ_POP_EMPTY,       /* nothing new on the avail ring */
    VQ_POP_OK,          /* a valid chain */
    VQ_POP_BAD_CHAIN,   /* malformed; out_num == 0, in_num is 1 when the last
                           buffer is a writable byte the device may use */
    VQ_POP_BROKEN,      /* the ring itself is corrupt: stop using it */
} VirtQueuePopResult;

typedef struct VirtQueueDescSeg {
    uint8_t *hva;
    uint32_t len;
    bool write;
} VirtQueueDescSeg;

typedef struct VirtQueue {
    Vm *vm;
    uint16_t size;              /* 0: not started */
    bool event_idx;
    bool indirect_allowed;
    uint8_t *desc;              /* host addresses of the rings */
    uint8_t *avail;
    uint8_t *used;
    uint16_t last_avail_idx;    /* next avail entry to pop */
    uint16_t shadow_avail_idx;  /* the last avail->idx read */
    uint16_t used_idx;          /* shadow of used->idx */
    uint16_t signalled_used;    /* used idx at the last interrupt decision */
    bool notification;          /* kicks wanted (see set_notification) */
    unsigned inuse;             /* popped, not yet pushed */
    VirtQueueDescSeg *scratch;  /* one chain's buffers while popping */
    const char *last_error;     /* why the last bad chain was refused */
    uint64_t nr_popped, nr_bad_chains;
} VirtQueue;

/* Maps and checks the rings; @size must be a power of two ≤ VIRTQUEUE_MAX_SIZE.
 * Returns 0, or -EINVAL with a reason in *@why.  Indices start at 0. */
int virtqueue_start(VirtQueue *vq, Vm *vm, uint16_t size, uint64_t desc_gpa,
                    uint64_t avail_gpa, uint64_t used_gpa, bool event_idx,
                    bool indirect_allowed, const char **why);

/* Forgets the rings (device reset).  Elements still out are the caller's. */
void virtqueue_reset(VirtQueue *vq);
void virtqueue_free(VirtQueue *vq);

bool virtqueue_started(const VirtQueue *vq);

/* Pops the next chain into a new block of @elem_size bytes (≥ sizeof
 * VirtQueueElement, which it starts with) plus the iovecs; *@out gets it
 * for VQ_POP_OK and VQ_POP_BAD_CHAIN (free with g_free after pushing it).
 * A bad chain is consumed from the avail ring like a good one. */
VirtQueuePopResult virtqueue_pop(VirtQueue *vq, size_t elem_size, void **out);

/* Puts @elem on the used ring with @len bytes written and publishes the
 * used index (release). */
void virtqueue_push(VirtQueue *vq, const VirtQueueElement *elem, uint32_t len);
/* The same in two steps, so a group of completions becomes visible to the
 * driver at once: fill writes the element, flush publishes the index. */
void virtqueue_fill(VirtQueue *vq, const VirtQueueElement *elem, uint32_t len);
void virtqueue_flush(VirtQueue *vq);

/* Whether the driver wants an interrupt for what was pushed since the last
 * call (EVENT_IDX's used_event, else the NO_INTERRUPT flag).  Also records
 * the current used index as signalled. */
bool virtqueue_should_notify(VirtQueue *vq);

/* Ask for kicks (true) or not (false).  With EVENT_IDX enabling writes
 * avail_event = the next entry to pop; without, it clears/sets NO_NOTIFY.
 * Enabling ends with a full barrier so the caller's following
 * virtqueue_avail_pending() check cannot miss a kick-less addition. */
void virtqueue_set_notification(VirtQueue *vq, bool enable);

/* Whether the driver has published entries not popped yet (acquire). */
bool virtqueue_avail_pending(VirtQueue *vq);

/* Checks one descriptor chain without a ring (the fuzzer's entry point):
 * like virtqueue_pop for the chain starting at descriptor @head.  Exposed
 * for tests only. */
VirtQueuePopResult virtqueue_pop_chain(VirtQueue *vq, uint16_t head, size_t elem_size,
                                       void **out);

#endif
