/*
 * virtio-blk request parsing: a pure function from a chain's iovecs and the
 * device's limits to a typed request.  See virtio-blk-req.h for the
 * contract (what is read from guest memory, and how often).
 */
#include "config.h"

#include "vmm/virtio-blk-req.h"

#include <string.h>

/* Guest structures are little endian (virtio 1.x), as is every host this
 * VMM runs on (x86-64): they are read as they are. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "virtio-blk-req assumes a little-endian host"
#endif

struct BlkOuthdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct BlkDiscardWz {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

/* Layout checks at compile time, in C99 (no _Static_assert before C11):
 * a negative array size fails the build. */
typedef char blk_outhdr_is_16_bytes[sizeof(struct BlkOuthdr) == VIRTIO_BLK_REQ_HDR_BYTES ? 1 : -1];
typedef char blk_discard_wz_is_16_bytes[sizeof(struct BlkDiscardWz) == VIRTIO_BLK_REQ_SEG_BYTES ? 1 : -1];

/* The compiler must not turn a use of the copy into a second guest read. */
#define compiler_barrier() __asm__ __volatile__("" ::: "memory")

static uint64_t iov_bytes(const struct iovec *iov, unsigned cnt)
{
    uint64_t n = 0;

    for (unsigned i = 0; i < cnt; i++) {
        n += iov[i].iov_len;
    }
    return n;
}

/* Copies @len bytes starting @skip bytes into @iov (the caller checked they
 * are there), each guest byte read once. */
static void iov_copy_out(const struct iovec *iov, unsigned cnt, size_t skip, void *buf,
                         size_t len)
{
    size_t done = 0;

    for (unsigned i = 0; i < cnt && done < len; i++) {
        size_t avail = iov[i].iov_len, n;

        if (skip >= avail) {
            skip -= avail;
            continue;
        }
        n = avail - skip < len - done ? avail - skip : len - done;
        memcpy((uint8_t *)buf + done, (const uint8_t *)iov[i].iov_base + skip, n);
        done += n;
        skip = 0;
    }
    compiler_barrier();
}

/* The part of @iov from byte @skip on, @bytes long (both within it). */
static VirtioBlkReqData data_slice(const struct iovec *iov, unsigned cnt, uint64_t skip,
                                   uint64_t bytes)
{
    VirtioBlkReqData d = { .iov = iov, .iovcnt = cnt, .skip = 0, .bytes = bytes };

    /* Whole buffers inside the skipped part go (as QEMU's iov_discard_front). */
    while (d.iovcnt && skip && d.iov->iov_len <= skip) {
        skip -= d.iov->iov_len;
        d.iov++;
        d.iovcnt--;
    }
    d.skip = (size_t)skip;
    /* Buffers past the end of the data go (the status byte's, when it is
     * the last buffer's only byte). */
    if (d.iovcnt) {
        uint64_t seen = 0;
        unsigned n = 0;

        while (n < d.iovcnt && seen < bytes + d.skip) {
            seen += d.iov[n].iov_len;
            n++;
        }
        d.iovcnt = bytes ? n : 0;
    }
    if (!d.iovcnt) {
        d.iov = NULL;
        d.skip = 0;
    }
    return d;
}

unsigned virtio_blk_req_data_iov(const VirtioBlkReqData *data, struct iovec *dst)
{
    uint64_t left = data->bytes;

    for (unsigned i = 0; i < data->iovcnt; i++) {
        size_t skip = i == 0 ? data->skip : 0;
        uint8_t *base = (uint8_t *)data->iov[i].iov_base + skip;
        size_t len = data->iov[i].iov_len - skip;

        if (len > left) {
            len = (size_t)left;
        }
        dst[i].iov_base = base;
        dst[i].iov_len = len;
        left -= len;
    }
    return data->iovcnt;
}

const char *virtio_blk_req_kind_name(VirtioBlkReqKind kind)
{
    switch (kind) {
    case VIRTIO_BLK_REQ_BAD_HEADER: return "bad header";
    case VIRTIO_BLK_REQ_READ: return "read";
    case VIRTIO_BLK_REQ_WRITE: return "write";
    case VIRTIO_BLK_REQ_FLUSH: return "flush";
    case VIRTIO_BLK_REQ_GET_ID: return "get-id";
    case VIRTIO_BLK_REQ_DISCARD: return "discard";
    case VIRTIO_BLK_REQ_WRITE_ZEROES: return "write-zeroes";
    case VIRTIO_BLK_REQ_UNSUPPORTED: break;
    }
    return "unsupported";
}

static int fail(const char **reason, const char *why, int status)
{
    *reason = why;
    return status;
}

/* Inside the disk, aligned to its logical block size (QEMU's
 * virtio_blk_sect_range_ok), and addressable as a signed 64-bit offset. */
static const char *range_check(const VirtioBlkReqLimits *l, uint64_t sector, uint64_t bytes)
{
    uint32_t lbs = l->logical_block_size;

    if (lbs < VIRTIO_BLK_SECTOR || (lbs & (lbs - 1))) {
        return "the device's logical block size is invalid";
    }
    if (bytes % lbs) {
        return "length not a multiple of the logical block size";
    }
    if (sector & (lbs / VIRTIO_BLK_SECTOR - 1)) {
        return "sector not aligned to the logical block size";
    }
    if (sector > l->capacity || bytes / VIRTIO_BLK_SECTOR > l->capacity - sector) {
        return "beyond the end of the disk";
    }
    if (sector + bytes / VIRTIO_BLK_SECTOR > (uint64_t)INT64_MAX / VIRTIO_BLK_SECTOR) {
        return "offset beyond 2^63 bytes";
    }
    return NULL;
}

static bool has_feature(const VirtioBlkReqLimits *l, unsigned bit)
{
    return (l->features >> bit) & 1;
}

/* DISCARD / WRITE_ZEROES: the segments after the header. */
static int parse_segments(const VirtioBlkReqLimits *l, const struct iovec *out,
                          unsigned out_num, uint64_t seg_bytes, VirtioBlkParsedReq *req,
                          const char **reason)
{
    bool wz = req->kind == VIRTIO_BLK_REQ_WRITE_ZEROES;
    uint32_t max_segs = wz ? l->max_write_zeroes_segs : l->max_discard_segs;
    uint32_t max_sectors = wz ? l->max_write_zeroes_sectors : l->max_discard_sectors;
    uint32_t allowed_flags = wz ? VIRTIO_BLK_WZ_F_UNMAP : 0;
    struct BlkDiscardWz segs[VIRTIO_BLK_REQ_MAX_SEGS];
    unsigned n;

    if (!has_feature(l, wz ? VIRTIO_BLK_F_WRITE_ZEROES : VIRTIO_BLK_F_DISCARD)) {
        return fail(reason, wz ? "WRITE_ZEROES not negotiated" : "DISCARD not negotiated",
                    VIRTIO_BLK_S_UNSUPP);
    }
    if (max_segs > VIRTIO_BLK_REQ_MAX_SEGS) {
        max_segs = VIRTIO_BLK_REQ_MAX_SEGS;
    }
    if (!seg_bytes || seg_bytes % sizeof(segs[0])) {
        return fail(reason, "segment list not a whole number of 16-byte segments",
                    VIRTIO_BLK_S_IOERR);
    }
    if (seg_bytes / sizeof(segs[0]) > max_segs) {
        return fail(reason, "more segments than the device allows", VIRTIO_BLK_S_UNSUPP);
    }
    n = (unsigned)(seg_bytes / sizeof(segs[0]));
    iov_copy_out(out, out_num, VIRTIO_BLK_REQ_HDR_BYTES, segs, n * sizeof(segs[0]));
    /* Unknown flags first: UNSUPP wins over IOERR (virtio 5.2.6.2). */
    for (unsigned i = 0; i < n; i++) {
        if (segs[i].flags & ~allowed_flags) {
            return fail(reason, "unknown segment flags", VIRTIO_BLK_S_UNSUPP);
        }
    }
    if (l->readonly) {
        return fail(reason, "read-only device", VIRTIO_BLK_S_IOERR);
    }
    for (unsigned i = 0; i < n; i++) {
        uint64_t bytes = (uint64_t)segs[i].num_sectors * VIRTIO_BLK_SECTOR;
        const char *why;

        if (segs[i].num_sectors > max_sectors) {
            return fail(reason, "segment larger than the device allows", VIRTIO_BLK_S_IOERR);
        }
        why = range_check(l, segs[i].sector, bytes);
        if (why) {
            return fail(reason, why, VIRTIO_BLK_S_IOERR);
        }
        req->segs[i].offset = segs[i].sector * VIRTIO_BLK_SECTOR;
        req->segs[i].bytes = bytes;
        req->segs[i].unmap = segs[i].flags & VIRTIO_BLK_WZ_F_UNMAP;
    }
    req->nsegs = n;
    return VIRTIO_BLK_S_OK;
}

int virtio_blk_req_parse(const VirtioBlkReqLimits *l, const struct iovec *out,
                         unsigned out_num, const struct iovec *in, unsigned in_num,
                         VirtioBlkParsedReq *req, const char **reason)
{
    struct BlkOuthdr hdr;
    uint64_t out_bytes, in_bytes;
    const char *why;
    unsigned last;

    memset(req, 0, offsetof(VirtioBlkParsedReq, segs));
    *reason = NULL;

    /* The status: the last byte of the last non-empty writable buffer. */
    for (last = in_num; last && !in[last - 1].iov_len; last--) {
    }
    if (!last) {
        return fail(reason, "no device-writable status byte", VIRTIO_BLK_REQ_NO_STATUS);
    }
    req->status = (uint8_t *)in[last - 1].iov_base + in[last - 1].iov_len - 1;
    in_bytes = iov_bytes(in, last) - 1;         /* before the status */
    out_bytes = iov_bytes(out, out_num);

    if (out_bytes < sizeof(hdr)) {
        req->kind = VIRTIO_BLK_REQ_BAD_HEADER;
        return fail(reason, "header shorter than 16 bytes", VIRTIO_BLK_S_IOERR);
    }
    iov_copy_out(out, out_num, 0, &hdr, sizeof(hdr));
    req->type = hdr.type;
    req->sector = hdr.sector;

    switch (hdr.type) {
    case VIRTIO_BLK_T_IN:
        req->kind = VIRTIO_BLK_REQ_READ;
        why = range_check(l, hdr.sector, in_bytes);
        if (why) {
            return fail(reason, why, VIRTIO_BLK_S_IOERR);
        }
        req->offset = hdr.sector * VIRTIO_BLK_SECTOR;
        req->bytes = in_bytes;
        req->data = data_slice(in, last, 0, in_bytes);
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_OUT:
        req->kind = VIRTIO_BLK_REQ_WRITE;
        if (l->readonly) {
            return fail(reason, "write to a read-only device", VIRTIO_BLK_S_IOERR);
        }
        why = range_check(l, hdr.sector, out_bytes - sizeof(hdr));
        if (why) {
            return fail(reason, why, VIRTIO_BLK_S_IOERR);
        }
        req->offset = hdr.sector * VIRTIO_BLK_SECTOR;
        req->bytes = out_bytes - sizeof(hdr);
        req->data = data_slice(out, out_num, sizeof(hdr), req->bytes);
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_FLUSH:
        req->kind = VIRTIO_BLK_REQ_FLUSH;
        if (!has_feature(l, VIRTIO_BLK_F_FLUSH)) {
            return fail(reason, "FLUSH not negotiated", VIRTIO_BLK_S_UNSUPP);
        }
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_GET_ID:
        /* A buffer shorter than the 20 bytes gets what fits (as QEMU). */
        req->kind = VIRTIO_BLK_REQ_GET_ID;
        req->bytes = in_bytes;
        req->data = data_slice(in, last, 0, in_bytes);
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        req->kind = hdr.type == VIRTIO_BLK_T_DISCARD ? VIRTIO_BLK_REQ_DISCARD
                                                     : VIRTIO_BLK_REQ_WRITE_ZEROES;
        return parse_segments(l, out, out_num, out_bytes - sizeof(hdr), req, reason);
    default:
        req->kind = VIRTIO_BLK_REQ_UNSUPPORTED;
        return fail(reason, "unknown request type", VIRTIO_BLK_S_UNSUPP);
    }
}
