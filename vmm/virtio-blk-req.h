/*
 * vmm/virtio-blk-req.h — virtio-blk request parsing (virtio 1.x 5.2.6) as a
 * pure function: from the host iovecs of one descriptor chain (what
 * virtqueue_pop produced) and the device's limits to a typed request, or to
 * the status to report at once and a reason.  The device (virtio-blk.c)
 * dispatches on the result; the fuzzer and the unit test call it with
 * hand-built iovecs, no VM.
 *
 * Contract.
 *   - Pure: no KVM, no AioContext, no allocation, no global state, no
 *     logging.  Any thread; reentrant.  Nothing is written anywhere but
 *     *@req and *@reason; the iovec arrays are not modified.
 *   - Guest memory (the iov_base areas) is read exactly twice at most, each
 *     field once: the 16-byte header, and for DISCARD / WRITE_ZEROES the
 *     segment list (at most VIRTIO_BLK_REQ_MAX_SEGS * 16 bytes), each copied
 *     into *@req in one pass before anything looks at it, so a guest
 *     changing its buffers meanwhile cannot make the checks and the use
 *     disagree.  Data buffers and the status byte are never read: the
 *     result only points at them (the caller writes the status byte and
 *     moves the data).
 *   - Layout (what the chain must look like): the status is the last byte
 *     of the device-writable buffers (empty buffers do not count); the
 *     header is the first 16 device-readable bytes; WRITE data and the
 *     DISCARD / WRITE_ZEROES segments are the device-readable bytes after
 *     it; READ data and the GET_ID answer are the device-writable bytes
 *     before the status.  Other bytes are ignored (as QEMU does).
 *   - Limits (@limits) come from the device, not the guest; they must hold
 *     logical_block_size a power of two ≥ 512 (else every data request
 *     fails with IOERR).
 *
 * Results: VIRTIO_BLK_S_OK (0) with *@req a request to carry out;
 * VIRTIO_BLK_S_IOERR or VIRTIO_BLK_S_UNSUPP: complete the request with that
 * status now (*@req->status is usable, *@reason says why);
 * VIRTIO_BLK_REQ_NO_STATUS: the chain has no device-writable byte, so no
 * status can be reported and the queue must be treated as broken.
 */
#ifndef KEEL_VMM_VIRTIO_BLK_REQ_H
#define KEEL_VMM_VIRTIO_BLK_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmm/virtio-blk.h"

#define VIRTIO_BLK_REQ_NO_STATUS (-1)
#define VIRTIO_BLK_REQ_HDR_BYTES 16
#define VIRTIO_BLK_REQ_SEG_BYTES 16
/* The most DISCARD / WRITE_ZEROES segments one request may carry, whatever
 * the limits say (the device advertises 1, as QEMU does). */
#define VIRTIO_BLK_REQ_MAX_SEGS 8
#define VIRTIO_BLK_WZ_F_UNMAP 1u

typedef struct VirtioBlkReqLimits {
    uint64_t capacity;              /* 512-byte sectors */
    uint32_t logical_block_size;    /* bytes: a power of two ≥ 512 */
    bool readonly;                  /* writes, discards, write-zeroes fail */
    /* Negotiated features; FLUSH, DISCARD and WRITE_ZEROES requests without
     * theirs are UNSUPP. */
    uint64_t features;
    uint32_t max_discard_sectors, max_discard_segs;
    uint32_t max_write_zeroes_sectors, max_write_zeroes_segs;
} VirtioBlkReqLimits;

typedef enum VirtioBlkReqKind {
    VIRTIO_BLK_REQ_BAD_HEADER,      /* no 16-byte header: the type is unknown */
    VIRTIO_BLK_REQ_READ,
    VIRTIO_BLK_REQ_WRITE,
    VIRTIO_BLK_REQ_FLUSH,
    VIRTIO_BLK_REQ_GET_ID,
    VIRTIO_BLK_REQ_DISCARD,
    VIRTIO_BLK_REQ_WRITE_ZEROES,
    VIRTIO_BLK_REQ_UNSUPPORTED,     /* a type this device does not know */
} VirtioBlkReqKind;

/* Part of the caller's out (WRITE) or in (READ, GET_ID) array: from byte
 * @skip of iov[0], @bytes bytes over iov[0 .. iovcnt).  Materialise it with
 * virtio_blk_req_data_iov. */
typedef struct VirtioBlkReqData {
    const struct iovec *iov;
    unsigned iovcnt;
    size_t skip;
    uint64_t bytes;
} VirtioBlkReqData;

/* A DISCARD / WRITE_ZEROES segment, checked: inside the disk, aligned. */
typedef struct VirtioBlkReqSeg {
    uint64_t offset, bytes;         /* on the disk */
    bool unmap;                     /* WRITE_ZEROES may unmap */
} VirtioBlkReqSeg;

typedef struct VirtioBlkParsedReq {
    VirtioBlkReqKind kind;          /* set whenever a status byte was found */
    uint32_t type;                  /* the header's type (0 for BAD_HEADER) */
    uint64_t sector;                /* the header's sector */
    uint8_t *status;                /* guest byte for the status (not read) */
    /* READ / WRITE: where on the disk (bytes; offset + bytes within the
     * capacity); GET_ID: offset 0, bytes the room for the answer. */
    uint64_t offset, bytes;
    VirtioBlkReqData data;          /* READ, WRITE, GET_ID */
    unsigned nsegs;                 /* DISCARD, WRITE_ZEROES */
    VirtioBlkReqSeg segs[VIRTIO_BLK_REQ_MAX_SEGS];
} VirtioBlkParsedReq;

/* Parses one chain: @out / @out_num the device-readable buffers, @in /
 * @in_num the device-writable ones (empty buffers allowed anywhere).  See
 * the contract above for the results; *@reason is a static string (NULL
 * for VIRTIO_BLK_S_OK). */
int virtio_blk_req_parse(const VirtioBlkReqLimits *limits, const struct iovec *out,
                         unsigned out_num, const struct iovec *in, unsigned in_num,
                         VirtioBlkParsedReq *req, const char **reason);

/* Writes @data's buffers to @dst (data->iovcnt entries) and returns their
 * number.  @dst may be the very array @data points into, at or before
 * data->iov (entries are copied forward). */
unsigned virtio_blk_req_data_iov(const VirtioBlkReqData *data, struct iovec *dst);

/* "read", "write", ... for messages. */
const char *virtio_blk_req_kind_name(VirtioBlkReqKind kind);

#endif
