/*
 * vmm/virtio-blk.h — the virtio block device (virtio 1.x 5.2) on the
 * virtio-pci transport, backed by a Keel block backend.
 *
 * Features offered: VERSION_1, SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH, DISCARD,
 * WRITE_ZEROES, INDIRECT_DESC, EVENT_IDX, and RO for read-only drives.
 * Requests: IN, OUT, FLUSH, GET_ID (the drive's serial=, NUL-padded to 20
 * bytes), DISCARD, WRITE_ZEROES; any other type, and FLUSH, DISCARD or
 * WRITE_ZEROES whose feature the driver did not accept, completes with
 * VIRTIO_BLK_S_UNSUPP (parsing: vmm/virtio-blk-req.h).  A request outside the disk, a malformed header or
 * payload, a write to a read-only drive, or an error from the backend
 * completes with VIRTIO_BLK_S_IOERR.  A malformed descriptor chain fails
 * with IOERR when its status byte is usable, else the device sets
 * NEEDS_RESET and stops taking requests from the queue (see virtqueue.h).
 *
 * Structure: this is a device on the virtio core (vmm/virtio-core.h),
 * which owns the queues (notifiers, polling, interrupt decisions, stop in
 * each queue's home thread, NEEDS_RESET), over the virtio-pci transport.
 * What is here is block semantics: requests, merging, error policy.
 *
 * The data path: each queue's host notifier (kicked by KVM's ioeventfd or
 * by the vCPU exit handler) is watched in the queue's AioContext — the main
 * loop's, or with iothread=ID that iothread's (with iothread-vq-mapping,
 * each queue its own).  The block backend lives in queue 0's context.  One
 * handler pass pops every available chain, checks it, and starts its
 * request with keel_blk_aio_* between keel_blk_io_plug/unplug, from the
 * queue's thread, so the pass is submitted as one batch; reads (or writes)
 * of the pass that are adjacent on the disk are first merged into one
 * backend request (sorted by offset; at most 32 requests, 1024 iovecs, 64
 * MiB), as QEMU does, and complete together (a merged request that fails
 * is retried request by request, so the error reaches only the guest
 * requests it belongs to).  Completions come back to the queue's thread
 * (a one-shot BH when the backend completed elsewhere), write the status
 * byte and put the chain on the used ring; the core's per-queue bottom
 * half then decides (EVENT_IDX / NO_INTERRUPT) whether the guest wants an
 * interrupt, so interrupts are coalesced per completion pass.
 *
 * Reset and teardown: each queue is stopped in its own thread (handler
 * removed, its requests completed, werror=stop held ones failed, pending
 * interrupt decision cancelled) before the transport forgets the ring, so
 * no request completes into a reset queue.  A vCPU thread that resets a
 * main-loop drive releases the global mutex while the main loop drains it.
 * QMP stop drains every queue, cont retries each queue's held requests.
 *
 * Ownership: VmmBlockDevices owns the drives (each a VirtioPci +
 * KeelBlockBackend) it creates from the options.  The machine
 * (vmm/machine.h) owns what they run on: the -object iothreads (queues
 * find their contexts there by id), the INTx lines (one per function,
 * from vmm_machine_alloc_intx) and the device registry, where each
 * function is listed as "virtio-blkN" of kind "virtio-blk-pci" with its
 * VirtioBlk, from realize until vmm_block_devices_free.
 *
 * Thread rules: vmm_block_devices_open/_realize/_new/_free/_print from the
 * main thread
 * (free after the vCPU threads stopped, with the global mutex held, before
 * pci_host_free); vmm_block_features_register at start-up; everything else
 * runs in the hooks described above.
 */
#ifndef KEEL_VMM_VIRTIO_BLK_H
#define KEEL_VMM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "block/block-backend.h"
#include "loop/aio.h"
#include "vmm/options.h"
#include "vmm/pci.h"
#include "vmm/virtio-core.h"

#define VIRTIO_ID_BLOCK 2

#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_SECTOR 512

/* Limits the device advertises. */
#define VIRTIO_BLK_QUEUE_SIZE 256
#define VIRTIO_BLK_SEG_MAX (VIRTIO_BLK_QUEUE_SIZE - 2)
#define VIRTIO_BLK_SIZE_MAX (4u << 20)
#define VIRTIO_BLK_MAX_DISCARD_SECTORS (1u << 22)   /* 2 GiB per request */
#define VIRTIO_BLK_CONFIG_LEN 60

typedef struct VirtioBlk VirtioBlk;

typedef struct VirtioBlkConf {
    const char *name;               /* "virtio-blk0" (kept by pointer) */
    KeelBlkOptions blk;             /* file, aio, cache, readonly, inject */
    KeelBlockBackend *backend;      /* already open (taken over), or NULL: open blk */
    uint32_t logical_block_size;    /* 0: the backend's alignment (≥ 512) */
    uint32_t physical_block_size;   /* 0: the logical block size */
    int pci_slot;                   /* 0: the next free slot (0 is the host bridge's) */
    const char *serial;             /* GET_ID, or NULL */
    KeelAioContext *ctx;            /* where the backend (and by default every queue) lives */
    const char *iothread_id;        /* for messages; NULL: main loop */
    int num_queues;                 /* 0: 1; more offers VIRTIO_BLK_F_MQ */
    /* Queue q's context and iothread id (iothread-vq-mapping; the id is kept
     * by pointer, like @name); NULL: @ctx. */
    KeelAioContext *queue_ctx[VIRTIO_MAX_QUEUES];
    const char *queue_iothread[VIRTIO_MAX_QUEUES];
    unsigned intx_irq;
    /* werror=/rerror= (vmm/options.h) and who hears of failed requests
     * (BLOCK_IO_ERROR; @stopping: the request is held until retried). */
    VmmErrorPolicy werror, rerror;
    void (*io_error)(void *opaque, const char *device, bool is_write, int error,
                     bool stopping);
    void *io_error_opaque;
    const char *device;             /* the monitor's name: the drive id or "virtioN" */
    VmmDriveCache cache;            /* the -drive cache mode (query-block) */
} VirtioBlkConf;

typedef struct VirtioBlkStats {
    uint64_t requests, reads, writes, flushes, discards, write_zeroes, get_ids, unsupported;
    uint64_t errors;                /* requests completed with IOERR */
    uint64_t io_errors;             /* of those, failed by the host (EIO, ENOSPC, ...) */
    int last_io_errno;              /* the latest host errno, 0 if none */
    uint64_t bad_chains;            /* malformed chains failed with IOERR */
    uint64_t needs_reset;           /* times the queue was stopped as broken */
    uint64_t handler_passes, batches_max;
    uint64_t merged;                /* reads/writes sent as part of a merged request */
    uint64_t merge_retries;         /* merged requests that failed and were split */
    uint64_t poll_hits;             /* passes started by adaptive polling, not a kick */
    uint64_t irqs, irqs_suppressed;
    /* Completed reads/writes/flushes as QMP's query-blockstats counts them:
     * successful ones with their bytes and the time from parsing to
     * completion; failed ones apart (a request held by werror=stop and
     * retried counts once, when it finally completes). */
    uint64_t rd_done, wr_done, flush_done, rd_bytes, wr_bytes;
    uint64_t rd_total_ns, wr_total_ns, flush_total_ns;
    uint64_t failed_rd, failed_wr, failed_flush;
} VirtioBlkStats;

/* Opens the backend in @conf->ctx and creates the PCI function.  Main
 * thread, before the vCPUs run.  NULL with a message in @err on failure. */
VirtioBlk *virtio_blk_new(Vm *vm, PciHost *host, const VirtioBlkConf *conf, char *err,
                          size_t errlen);
/* Stops the queue (drains), closes the backend, frees. */
void virtio_blk_free(VirtioBlk *s);
/* One start-up line: file, engine, cache, context, notification paths. */
void virtio_blk_describe(VirtioBlk *s, char *buf, size_t len);
void virtio_blk_get_stats(VirtioBlk *s, VirtioBlkStats *stats);
/* The transport (tests look at its registers and counters). */
struct VirtioPci *virtio_blk_get_transport(VirtioBlk *s);
/* The device's virtio core (its queues: contexts, counters). */
VirtioDevice *virtio_blk_get_device(VirtioBlk *s);
/* The block backend (tests ask which engine each context used). */
KeelBlockBackend *virtio_blk_get_backend(VirtioBlk *s);

/* ---- the drives of a command line ------------------------------------------- */
typedef struct VmmBlockDevices VmmBlockDevices;
struct VmmMachine;

/* Opens every attached drive's image (locking it QEMU's way and probing
 * its format when format= was not given) in the AioContext its queue 0
 * runs in: the main loop's, or the @machine's iothread named by
 * iothread= / iothread-vq-mapping (those must have been added with
 * vmm_machine_add_iothread).  This comes before the VM exists, so an
 * image in use or of another format is refused as early as QEMU refuses
 * it.  Prints QEMU's warning for probed raw images to stderr.  NULL with
 * a message in @err on failure. */
VmmBlockDevices *vmm_block_devices_open(struct VmmMachine *machine, const VmmOptions *opts,
                                        char *err, size_t errlen);
/* Creates the virtio-blk-pci functions (drives with addr= first, in their
 * slots) in the machine's attached Vm, each with an INTx line from the
 * machine, and lists them in its registry.  Returns 0, or -1 with a
 * message in @err. */
int vmm_block_devices_realize(VmmBlockDevices *devs, PciHost *host, char *err, size_t errlen);
/* open + realize. */
VmmBlockDevices *vmm_block_devices_new(struct VmmMachine *machine, PciHost *host,
                                       const VmmOptions *opts, char *err, size_t errlen);
/* The @i-th realized drive (in PCI creation order), or NULL. */
VirtioBlk *vmm_block_devices_drive(VmmBlockDevices *devs, int i);
/* "keel-vmm: virtio-blk0 ..." start-up lines. */
void vmm_block_devices_print(VmmBlockDevices *devs, FILE *out);
/* Stops every drive (draining it), prints its counters to @stats_out
 * (NULL: don't; keel-vmm passes stderr when KEEL_VMM_STATS is set),
 * takes them out of the machine's registry and frees them.  Before
 * vmm_machine_free, whose iothreads they run in. */
void vmm_block_devices_free(VmmBlockDevices *devs, FILE *stats_out);

/* ---- for the monitors (vmm/machine.h); main thread, global mutex held ---- */
struct VmmBlockInfo;
/* Lets every drive's queued requests finish (QMP stop). */
void vmm_block_devices_drain(VmmBlockDevices *devs);
/* Resubmits, in order, the requests werror/rerror=stop held (QMP cont). */
void vmm_block_devices_retry(VmmBlockDevices *devs);
int vmm_block_devices_query(VmmBlockDevices *devs, struct VmmBlockInfo *out, int max);
/* block_resize: grows @device's image file to @size bytes (a multiple of
 * 512) and raises the configuration-change interrupt. */
int vmm_block_devices_resize(VmmBlockDevices *devs, const char *device, uint64_t size,
                             char *err, size_t errlen);
/* The error-report hook and the names of every drive (before the vCPU runs). */
void vmm_block_devices_set_io_error_hook(VmmBlockDevices *devs,
                                         void (*fn)(void *opaque, const char *device,
                                                    bool is_write, int error, bool stopping),
                                         void *opaque);

/* The block engine and virtio notification seams for `--features`. */
void vmm_block_features_register(void);

#endif
