/*
 * tests/vmm-blk-req-test.c — virtio_blk_req_parse() on hand-built iovecs, no
 * VM: every request kind and where its data, segments and status byte end
 * up; malformed headers, missing or empty status buffers, lengths that are
 * not whole blocks, requests beyond the disk or near 2^64, read-only
 * drives, discard/write-zeroes segment limits and flags, features not
 * negotiated, unknown types, short GET_ID buffers.  Also that the parser
 * leaves the guest buffers and the iovec arrays as they were.
 */
#include "config.h"

#include "vmm/virtio-blk-req.h"
#include "tests/keel-test.h"

#include <string.h>

#define CAPACITY 2048u                  /* sectors: 1 MiB */
#define ALL_FEATURES ((1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_DISCARD) | \
                      (1ull << VIRTIO_BLK_F_WRITE_ZEROES))

/* Guest memory for one request: header, data, segments, status. */
static uint8_t hdr[16], data[8192], segs[16 * (VIRTIO_BLK_REQ_MAX_SEGS + 1)], status[4];

static VirtioBlkReqLimits limits(void)
{
    VirtioBlkReqLimits l = {
        .capacity = CAPACITY,
        .logical_block_size = 512,
        .features = ALL_FEATURES,
        .max_discard_sectors = 1u << 22, .max_discard_segs = 1,
        .max_write_zeroes_sectors = 1u << 22, .max_write_zeroes_segs = 1,
    };
    return l;
}

static void set_hdr(uint32_t type, uint64_t sector)
{
    memset(hdr, 0, sizeof(hdr));
    memcpy(hdr, &type, 4);
    memcpy(hdr + 8, &sector, 8);
}

static void set_seg(unsigned i, uint64_t sector, uint32_t num, uint32_t flags)
{
    memcpy(segs + 16 * i, &sector, 8);
    memcpy(segs + 16 * i + 8, &num, 4);
    memcpy(segs + 16 * i + 12, &flags, 4);
}

static struct iovec iov(void *base, size_t len)
{
    struct iovec v = { .iov_base = base, .iov_len = len };
    return v;
}

static int parse(const VirtioBlkReqLimits *l, struct iovec *out, unsigned out_num,
                 struct iovec *in, unsigned in_num, VirtioBlkParsedReq *r)
{
    const char *why = "unset";
    int st = virtio_blk_req_parse(l, out, out_num, in, in_num, r, &why);

    if (st != VIRTIO_BLK_S_OK) {
        keel_test_diag("status %d: %s", st, why ? why : "(no reason)");
        if (!why) {
            return 99;              /* every failure must say why */
        }
    } else if (why) {
        return 98;                  /* success has no reason */
    }
    return st;
}

/* A request of @type at @sector whose only other buffers are @len data
 * bytes (in or out) and the 1-byte status. */
static int simple(const VirtioBlkReqLimits *l, uint32_t type, uint64_t sector, size_t len,
                  bool data_in, VirtioBlkParsedReq *r)
{
    struct iovec out[2] = { iov(hdr, sizeof(hdr)), iov(data, len) };
    struct iovec in[2] = { iov(data, len), iov(status, 1) };

    set_hdr(type, sector);
    if (data_in) {
        return parse(l, out, 1, len ? in : in + 1, len ? 2 : 1, r);
    }
    return parse(l, out, len ? 2 : 1, in + 1, 1, r);
}

static void test_read_write(void)
{
    VirtioBlkReqLimits l = limits();
    VirtioBlkParsedReq r;
    struct iovec dst[4];

    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, 8, 4096, true, &r), VIRTIO_BLK_S_OK, "read: OK");
    KEEL_IS(r.kind, VIRTIO_BLK_REQ_READ, "read: kind");
    KEEL_IS(r.offset, 8 * 512, "read: offset in bytes");
    KEEL_IS(r.bytes, 4096, "read: bytes");
    KEEL_OK(r.status == status, "read: the status byte is the last writable byte");
    /* (r.data points into simple()'s arrays, gone now: not dereferenced) */
    KEEL_OK(r.data.iovcnt == 1 && r.data.iov && r.data.skip == 0 && r.data.bytes == 4096,
            "read: data is one whole buffer, the status's excluded");

    /* Data and status in one buffer: the data stops before the status. */
    {
        struct iovec out[1] = { iov(hdr, 16) };
        struct iovec in[1] = { iov(data, 1024 + 1) };
        set_hdr(VIRTIO_BLK_T_IN, 0);
        KEEL_IS(parse(&l, out, 1, in, 1, &r), VIRTIO_BLK_S_OK, "read, status sharing the data buffer: OK");
        KEEL_OK(r.status == data + 1024 && r.bytes == 1024, "  status is its last byte, 1024 data bytes");
        KEEL_IS(virtio_blk_req_data_iov(&r.data, dst), 1, "  one data buffer");
        KEEL_OK(dst[0].iov_base == data && dst[0].iov_len == 1024, "  trimmed to 1024 bytes");
    }

    /* Write: header and data share the first buffer, the header split. */
    {
        struct iovec out[3] = { iov(hdr, 8), iov(hdr + 8, 8), iov(data, 1024) };
        struct iovec in[1] = { iov(status, 1) };
        set_hdr(VIRTIO_BLK_T_OUT, 16);
        KEEL_IS(parse(&l, out, 3, in, 1, &r), VIRTIO_BLK_S_OK, "write, header in two buffers: OK");
        KEEL_IS(r.sector, 16, "  the sector is read across both halves");
        KEEL_IS(r.kind, VIRTIO_BLK_REQ_WRITE, "  kind write");
        KEEL_OK(r.offset == 16 * 512 && r.bytes == 1024, "  offset and bytes");
        KEEL_OK(r.data.iov == &out[2] && r.data.iovcnt == 1, "  data starts after the header buffers");
    }
    {
        static uint8_t blob[16 + 512];
        struct iovec out[2] = { iov(blob, sizeof(blob)), iov(data, 1024) };
        struct iovec in[1] = { iov(status, 1) };
        uint32_t type = VIRTIO_BLK_T_OUT;
        uint64_t sector = 2;

        memset(blob, 0, sizeof(blob));
        memcpy(blob, &type, 4);
        memcpy(blob + 8, &sector, 8);
        KEEL_IS(parse(&l, out, 2, in, 1, &r), VIRTIO_BLK_S_OK, "write, header and data in one buffer: OK");
        KEEL_IS(r.bytes, 1536, "  1536 data bytes");
        /* Materialised in place, as the device does. */
        KEEL_IS(virtio_blk_req_data_iov(&r.data, out), 2, "  two data buffers");
        KEEL_OK(out[0].iov_base == blob + 16 && out[0].iov_len == 512 &&
                out[1].iov_base == data && out[1].iov_len == 1024,
                "  the header is cut off the first one (in place)");
    }

    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, 0, 0, true, &r), VIRTIO_BLK_S_OK, "read of 0 bytes: OK");
    KEEL_OK(r.bytes == 0 && r.data.iovcnt == 0, "  nothing to move");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, CAPACITY - 2, 1024, true, &r), VIRTIO_BLK_S_OK,
            "read ending exactly at the end of the disk: OK");
}

static void test_bad_data(void)
{
    VirtioBlkReqLimits l = limits();
    VirtioBlkParsedReq r;

    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, 0, 100, true, &r), VIRTIO_BLK_S_IOERR,
            "read of 100 bytes (not a multiple of 512): IOERR");
    KEEL_IS(r.kind, VIRTIO_BLK_REQ_READ, "  still a read (for the counters)");
    KEEL_OK(r.status == status, "  the status byte is usable");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_OUT, 0, 513, false, &r), VIRTIO_BLK_S_IOERR,
            "write of 513 bytes: IOERR");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, CAPACITY - 1, 1024, true, &r), VIRTIO_BLK_S_IOERR,
            "read crossing the end of the disk: IOERR");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, CAPACITY + 1, 0, true, &r), VIRTIO_BLK_S_IOERR,
            "empty read past the end: IOERR");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_OUT, UINT64_MAX, 512, false, &r), VIRTIO_BLK_S_IOERR,
            "write at sector 2^64-1: IOERR");

    /* A disk as big as the sector field: offsets must still fit. */
    l.capacity = UINT64_MAX;
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, UINT64_MAX - 8, 4096, true, &r), VIRTIO_BLK_S_IOERR,
            "huge disk, sector near 2^64 (byte offset overflows): IOERR");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, (uint64_t)INT64_MAX / 512 - 8, 4096, true, &r),
            VIRTIO_BLK_S_OK, "huge disk, last 4 KiB below 2^63 bytes: OK");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, (uint64_t)INT64_MAX / 512 - 7, 4096, true, &r),
            VIRTIO_BLK_S_IOERR, "huge disk, crossing 2^63 bytes: IOERR");

    l = limits();
    l.logical_block_size = 4096;
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, 8, 512, true, &r), VIRTIO_BLK_S_IOERR,
            "4K drive: 512-byte read: IOERR");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, 4, 4096, true, &r), VIRTIO_BLK_S_IOERR,
            "4K drive: read at a sector not 4K-aligned: IOERR");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, 8, 4096, true, &r), VIRTIO_BLK_S_OK,
            "4K drive: aligned 4 KiB read: OK");
    l.logical_block_size = 0;
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, 8, 4096, true, &r), VIRTIO_BLK_S_IOERR,
            "invalid limits (block size 0): IOERR, no crash");

    l = limits();
    l.readonly = true;
    KEEL_IS(simple(&l, VIRTIO_BLK_T_OUT, 0, 512, false, &r), VIRTIO_BLK_S_IOERR,
            "read-only drive: write: IOERR");
    KEEL_IS(r.kind, VIRTIO_BLK_REQ_WRITE, "  counted as a write");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_IN, 0, 512, true, &r), VIRTIO_BLK_S_OK,
            "read-only drive: read: OK");
}

static void test_layout(void)
{
    VirtioBlkReqLimits l = limits();
    VirtioBlkParsedReq r;
    const char *why = NULL;

    {
        struct iovec out[1] = { iov(hdr, 16) };
        set_hdr(VIRTIO_BLK_T_IN, 0);
        KEEL_IS(virtio_blk_req_parse(&l, out, 1, NULL, 0, &r, &why), VIRTIO_BLK_REQ_NO_STATUS,
                "no device-writable buffer: no status");
        KEEL_OK(why && strstr(why, "status"), "  the reason names the status byte");
    }
    {
        struct iovec out[1] = { iov(hdr, 16) };
        struct iovec in[2] = { iov(data, 0), iov(status, 0) };
        KEEL_IS(virtio_blk_req_parse(&l, out, 1, in, 2, &r, &why), VIRTIO_BLK_REQ_NO_STATUS,
                "only empty writable buffers: no status");
    }
    {
        struct iovec out[1] = { iov(hdr, 16) };
        struct iovec in[3] = { iov(data, 512), iov(status, 1), iov(status + 2, 0) };
        set_hdr(VIRTIO_BLK_T_IN, 0);
        KEEL_IS(parse(&l, out, 1, in, 3, &r), VIRTIO_BLK_S_OK, "a trailing empty buffer is skipped");
        KEEL_OK(r.status == status && r.bytes == 512, "  the status is the last byte before it");
    }
    {
        struct iovec out[2] = { iov(hdr, 8), iov(hdr + 8, 7) };
        struct iovec in[1] = { iov(status, 1) };
        set_hdr(VIRTIO_BLK_T_IN, 0);
        KEEL_IS(parse(&l, out, 2, in, 1, &r), VIRTIO_BLK_S_IOERR, "15-byte header: IOERR");
        KEEL_IS(r.kind, VIRTIO_BLK_REQ_BAD_HEADER, "  kind: bad header");
        KEEL_OK(r.status == status, "  the status byte is usable");
        KEEL_IS(parse(&l, NULL, 0, in, 1, &r), VIRTIO_BLK_S_IOERR, "no readable buffer: IOERR");
    }
}

static void test_other_kinds(void)
{
    VirtioBlkReqLimits l = limits();
    VirtioBlkParsedReq r;
    struct iovec dst[2];

    KEEL_IS(simple(&l, VIRTIO_BLK_T_FLUSH, 0, 0, false, &r), VIRTIO_BLK_S_OK, "flush: OK");
    KEEL_IS(r.kind, VIRTIO_BLK_REQ_FLUSH, "  kind flush");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_GET_ID, 0, 20, true, &r), VIRTIO_BLK_S_OK, "GET_ID: OK");
    KEEL_OK(r.kind == VIRTIO_BLK_REQ_GET_ID && r.bytes == 20, "  20 bytes of room");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_GET_ID, 0, 8, true, &r), VIRTIO_BLK_S_OK,
            "GET_ID with an 8-byte buffer: OK (gets what fits, as in QEMU)");
    KEEL_OK(r.bytes == 8 && virtio_blk_req_data_iov(&r.data, dst) == 1 && dst[0].iov_len == 8,
            "  8 bytes of room");
    KEEL_IS(simple(&l, VIRTIO_BLK_T_GET_ID, 0, 0, true, &r), VIRTIO_BLK_S_OK,
            "GET_ID with only the status byte: OK, no room");
    KEEL_IS(r.bytes, 0, "  0 bytes of room");

    KEEL_IS(simple(&l, 99, 0, 0, false, &r), VIRTIO_BLK_S_UNSUPP, "unknown type 99: UNSUPP");
    KEEL_OK(r.kind == VIRTIO_BLK_REQ_UNSUPPORTED && r.type == 99, "  kind unsupported, type kept");
    KEEL_IS(simple(&l, 2, 0, 0, false, &r), VIRTIO_BLK_S_UNSUPP, "type 2 (SCSI, legacy): UNSUPP");

    l.features = 0;
    KEEL_IS(simple(&l, VIRTIO_BLK_T_FLUSH, 0, 0, false, &r), VIRTIO_BLK_S_UNSUPP,
            "flush without VIRTIO_BLK_F_FLUSH: UNSUPP");
}

/* A DISCARD / WRITE_ZEROES request with @seg_bytes of segments (set_seg). */
static int seg_req(const VirtioBlkReqLimits *l, uint32_t type, size_t seg_bytes,
                   VirtioBlkParsedReq *r)
{
    struct iovec out[2] = { iov(hdr, 16), iov(segs, seg_bytes) };
    struct iovec in[1] = { iov(status, 1) };

    set_hdr(type, 0);
    return parse(l, out, seg_bytes ? 2 : 1, in, 1, r);
}

static void test_discard_wz(void)
{
    VirtioBlkReqLimits l = limits();
    VirtioBlkParsedReq r;

    set_seg(0, 8, 16, 0);
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 16, &r), VIRTIO_BLK_S_OK, "discard: OK");
    KEEL_OK(r.kind == VIRTIO_BLK_REQ_DISCARD && r.nsegs == 1 && r.segs[0].offset == 4096 &&
            r.segs[0].bytes == 8192 && !r.segs[0].unmap, "  one segment, in bytes");
    set_seg(0, 8, 16, VIRTIO_BLK_WZ_F_UNMAP);
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_WRITE_ZEROES, 16, &r), VIRTIO_BLK_S_OK,
            "write-zeroes with UNMAP: OK");
    KEEL_OK(r.kind == VIRTIO_BLK_REQ_WRITE_ZEROES && r.segs[0].unmap, "  may unmap");
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 16, &r), VIRTIO_BLK_S_UNSUPP,
            "discard with the UNMAP flag (write-zeroes only): UNSUPP");
    set_seg(0, 8, 16, 2);
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_WRITE_ZEROES, 16, &r), VIRTIO_BLK_S_UNSUPP,
            "write-zeroes with an unknown flag: UNSUPP");

    set_seg(0, 8, 16, 0);
    set_seg(1, 64, 8, 0);
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 32, &r), VIRTIO_BLK_S_UNSUPP,
            "two segments, max_discard_seg 1: UNSUPP");
    l.max_discard_segs = 2;
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 32, &r), VIRTIO_BLK_S_OK,
            "two segments, max_discard_seg 2: OK");
    KEEL_OK(r.nsegs == 2 && r.segs[1].offset == 64 * 512 && r.segs[1].bytes == 8 * 512,
            "  both segments copied out");
    l.max_discard_segs = 1000;
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 16 * (VIRTIO_BLK_REQ_MAX_SEGS + 1), &r),
            VIRTIO_BLK_S_UNSUPP, "more segments than the parser holds: UNSUPP, whatever the limit");
    l = limits();

    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 8, &r), VIRTIO_BLK_S_IOERR,
            "discard with a truncated segment: IOERR");
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 0, &r), VIRTIO_BLK_S_IOERR,
            "discard without a segment: IOERR");
    set_seg(0, CAPACITY - 8, 16, 0);
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_WRITE_ZEROES, 16, &r), VIRTIO_BLK_S_IOERR,
            "write-zeroes crossing the end of the disk: IOERR");
    set_seg(0, UINT64_MAX - 4, 16, 0);
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 16, &r), VIRTIO_BLK_S_IOERR,
            "discard at a sector near 2^64: IOERR");
    set_seg(0, 0, 16, 0);
    l.max_discard_sectors = 8;
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 16, &r), VIRTIO_BLK_S_IOERR,
            "discard of more sectors than max_discard_sectors: IOERR");
    l = limits();
    l.readonly = true;
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_WRITE_ZEROES, 16, &r), VIRTIO_BLK_S_IOERR,
            "read-only drive: write-zeroes: IOERR");
    set_seg(0, 0, 16, 4);
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 16, &r), VIRTIO_BLK_S_UNSUPP,
            "read-only drive, unknown flag: UNSUPP first");
    l = limits();
    set_seg(0, 0, 16, 0);
    l.features = 1ull << VIRTIO_BLK_F_FLUSH;
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_DISCARD, 16, &r), VIRTIO_BLK_S_UNSUPP,
            "discard without VIRTIO_BLK_F_DISCARD: UNSUPP");
    KEEL_IS(seg_req(&l, VIRTIO_BLK_T_WRITE_ZEROES, 16, &r), VIRTIO_BLK_S_UNSUPP,
            "write-zeroes without VIRTIO_BLK_F_WRITE_ZEROES: UNSUPP");
}

/* Pure: neither the guest buffers nor the iovec arrays change. */
static void test_pure(void)
{
    VirtioBlkReqLimits l = limits();
    VirtioBlkParsedReq r;
    uint8_t hdr_copy[16], seg_copy[sizeof(segs)];
    struct iovec out[2] = { iov(hdr, 16), iov(segs, 16) };
    struct iovec in[1] = { iov(status, 1) };
    struct iovec out_copy[2], in_copy[1];
    const char *why;

    set_hdr(VIRTIO_BLK_T_DISCARD, 0);
    set_seg(0, 8, 16, 0);
    status[0] = 0xa5;
    memcpy(hdr_copy, hdr, 16);
    memcpy(seg_copy, segs, sizeof(segs));
    memcpy(out_copy, out, sizeof(out));
    memcpy(in_copy, in, sizeof(in));
    KEEL_IS(virtio_blk_req_parse(&l, out, 2, in, 1, &r, &why), VIRTIO_BLK_S_OK, "discard parsed");
    KEEL_OK(!memcmp(hdr, hdr_copy, 16) && !memcmp(segs, seg_copy, sizeof(segs)) && status[0] == 0xa5,
            "guest memory untouched (status byte not written)");
    KEEL_OK(!memcmp(out, out_copy, sizeof(out)) && !memcmp(in, in_copy, sizeof(in)),
            "the iovec arrays untouched");
    KEEL_OK(!strcmp(virtio_blk_req_kind_name(r.kind), "discard"), "kind name");
}

int main(void)
{
    test_read_write();
    test_bad_data();
    test_layout();
    test_other_kinds();
    test_discard_wz();
    test_pure();
    return keel_test_done();
}
