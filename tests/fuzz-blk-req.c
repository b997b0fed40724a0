/*
 * tests/fuzz-blk-req.c — libFuzzer target (clang -fsanitize=fuzzer,address,
 * undefined; built and run by tests/fuzz-blk-req.sh / `make fuzz`) over
 * virtio_blk_req_parse(), the virtio-blk request parser, without a VM.
 *
 * Input layout (little endian):
 *   0     flags: bit 0 read-only, bits 1-2 logical block size (512, 1024,
 *         4096, 512), bits 3-5 FLUSH / DISCARD / WRITE_ZEROES negotiated
 *   1     capacity: one of the interesting sizes below (low 3 bits)
 *   2     max discard segments (low nibble), max write-zeroes ones (high)
 *   3     max discard / write-zeroes sectors: 2^(b % 32)
 *   4     out buffers (low nibble % 5), in buffers (high nibble % 5)
 *   5...  one 16-bit length per buffer (out first; at most 16 KiB each)
 *   rest  the buffers' contents in order (zero-filled when input runs out)
 * Each buffer is its own heap block of exactly its length, so ASan sees
 * any access outside it.
 *
 * Checked on every input: the result is OK, IOERR, UNSUPP or NO_STATUS, and
 * only failures carry a reason; NO_STATUS exactly when every writable
 * buffer is empty; the status byte is the last byte of the last non-empty
 * writable buffer; a parsed READ / WRITE lies within the capacity, whole
 * logical blocks, below 2^63 bytes; its data slice lies within the given
 * buffers (READ / GET_ID: the writable ones, never the status byte; WRITE:
 * the readable ones, never the header) and adds up to its length;
 * DISCARD / WRITE_ZEROES segments are within the limits and the disk; the
 * parser changes neither the buffers nor the iovec arrays.  The data and
 * the status byte are then written, as the device would.
 *
 * KEEL_FUZZ_SEEDS=DIR writes one well-formed request of each kind to DIR
 * and exits.
 */
#include "config.h"

#include "vmm/virtio-blk-req.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUFS 4
#define MAX_BUF_LEN 16384
#define PREFIX 5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const uint64_t capacities[8] = {
    0, 1, 8, 2048, 1u << 21, 1ull << 32, (uint64_t)INT64_MAX / 512, UINT64_MAX,
};

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "fuzz-blk-req: %s:%d: invariant broken: %s\n", __FILE__, \
                    __LINE__, #cond);                                                \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* Which buffer of @v[0..n) holds [p, p+len), or -1. */
static int find_buf(const struct iovec *v, unsigned n, const void *p, size_t len)
{
    const uint8_t *b = p;

    for (unsigned i = 0; i < n; i++) {
        const uint8_t *s = v[i].iov_base;
        if (b >= s && len <= v[i].iov_len && (size_t)(b - s) <= v[i].iov_len - len) {
            return (int)i;
        }
    }
    return -1;
}

static bool overlaps(const void *p, size_t len, const void *q, size_t qlen)
{
    const uint8_t *a = p, *b = q;
    return len && qlen && a < b + qlen && b < a + len;
}

static void check_data(const VirtioBlkParsedReq *r, const struct iovec *bufs, unsigned n,
                       const void *forbidden, size_t forbidden_len)
{
    struct iovec dst[MAX_BUFS];
    unsigned cnt;
    uint64_t total = 0;

    CHECK(r->data.iovcnt <= n);
    CHECK(r->data.bytes == r->bytes);
    cnt = virtio_blk_req_data_iov(&r->data, dst);
    CHECK(cnt == r->data.iovcnt);
    CHECK(cnt || r->bytes == 0);
    for (unsigned i = 0; i < cnt; i++) {
        CHECK(find_buf(bufs, n, dst[i].iov_base, dst[i].iov_len) >= 0);
        CHECK(!overlaps(dst[i].iov_base, dst[i].iov_len, forbidden, forbidden_len));
        memset(dst[i].iov_base, 0xd7, dst[i].iov_len);     /* as a read would */
        total += dst[i].iov_len;
    }
    CHECK(total == r->bytes);
}

static void check_range(const VirtioBlkReqLimits *l, uint64_t offset, uint64_t bytes)
{
    CHECK(offset % VIRTIO_BLK_SECTOR == 0);
    CHECK(offset % l->logical_block_size == 0 && bytes % l->logical_block_size == 0);
    CHECK(offset / VIRTIO_BLK_SECTOR <= l->capacity);
    CHECK(bytes / VIRTIO_BLK_SECTOR <= l->capacity - offset / VIRTIO_BLK_SECTOR);
    CHECK(offset <= (uint64_t)INT64_MAX && bytes <= (uint64_t)INT64_MAX - offset);
}

static void check(const VirtioBlkReqLimits *l, struct iovec *out, unsigned out_num,
                  struct iovec *in, unsigned in_num)
{
    struct iovec out_copy[MAX_BUFS], in_copy[MAX_BUFS];
    VirtioBlkParsedReq r;
    const char *why = "unset";
    uint8_t *status = NULL;
    uint64_t out_bytes = 0;
    int st;

    memcpy(out_copy, out, out_num * sizeof(*out));
    memcpy(in_copy, in, in_num * sizeof(*in));
    for (unsigned i = in_num; i > 0 && !status; i--) {
        if (in[i - 1].iov_len) {
            status = (uint8_t *)in[i - 1].iov_base + in[i - 1].iov_len - 1;
        }
    }
    for (unsigned i = 0; i < out_num; i++) {
        out_bytes += out[i].iov_len;
    }

    st = virtio_blk_req_parse(l, out, out_num, in, in_num, &r, &why);
    CHECK(!memcmp(out, out_copy, out_num * sizeof(*out)));
    CHECK(!memcmp(in, in_copy, in_num * sizeof(*in)));
    CHECK(st == VIRTIO_BLK_S_OK || st == VIRTIO_BLK_S_IOERR || st == VIRTIO_BLK_S_UNSUPP ||
          st == VIRTIO_BLK_REQ_NO_STATUS);
    CHECK((st == VIRTIO_BLK_S_OK) == (why == NULL));
    CHECK((st == VIRTIO_BLK_REQ_NO_STATUS) == (status == NULL));
    if (!status) {
        return;
    }
    CHECK(r.status == status);
    CHECK(virtio_blk_req_kind_name(r.kind) != NULL);
    CHECK((r.kind == VIRTIO_BLK_REQ_BAD_HEADER) == (out_bytes < VIRTIO_BLK_REQ_HDR_BYTES));
    if (st == VIRTIO_BLK_S_OK) {
        switch (r.kind) {
        case VIRTIO_BLK_REQ_READ:
            check_range(l, r.offset, r.bytes);
            check_data(&r, in, in_num, status, 1);
            break;
        case VIRTIO_BLK_REQ_WRITE:
            CHECK(!l->readonly);
            check_range(l, r.offset, r.bytes);
            CHECK(r.bytes == out_bytes - VIRTIO_BLK_REQ_HDR_BYTES);
            /* Never the header: each byte of it is in the first buffers. */
            for (unsigned i = 0, hdr_left = VIRTIO_BLK_REQ_HDR_BYTES; i < out_num && hdr_left; i++) {
                size_t n = out[i].iov_len < hdr_left ? out[i].iov_len : hdr_left;
                struct iovec dst[MAX_BUFS];
                unsigned cnt = virtio_blk_req_data_iov(&r.data, dst);
                for (unsigned k = 0; k < cnt; k++) {
                    CHECK(!overlaps(dst[k].iov_base, dst[k].iov_len, out[i].iov_base, n));
                }
                hdr_left -= (unsigned)n;
            }
            check_data(&r, out, out_num, NULL, 0);
            break;
        case VIRTIO_BLK_REQ_GET_ID:
            check_data(&r, in, in_num, status, 1);
            break;
        case VIRTIO_BLK_REQ_DISCARD:
        case VIRTIO_BLK_REQ_WRITE_ZEROES: {
            bool wz = r.kind == VIRTIO_BLK_REQ_WRITE_ZEROES;
            uint32_t max_segs = wz ? l->max_write_zeroes_segs : l->max_discard_segs;
            uint32_t max_sectors = wz ? l->max_write_zeroes_sectors : l->max_discard_sectors;

            CHECK(!l->readonly);
            CHECK(r.nsegs >= 1 && r.nsegs <= max_segs && r.nsegs <= VIRTIO_BLK_REQ_MAX_SEGS);
            CHECK(out_bytes == VIRTIO_BLK_REQ_HDR_BYTES + r.nsegs * VIRTIO_BLK_REQ_SEG_BYTES);
            for (unsigned i = 0; i < r.nsegs; i++) {
                check_range(l, r.segs[i].offset, r.segs[i].bytes);
                CHECK(r.segs[i].bytes / VIRTIO_BLK_SECTOR <= max_sectors);
                CHECK(wz || !r.segs[i].unmap);
            }
            break;
        }
        case VIRTIO_BLK_REQ_FLUSH:
            CHECK(l->features & (1ull << VIRTIO_BLK_F_FLUSH));
            break;
        case VIRTIO_BLK_REQ_BAD_HEADER:
        case VIRTIO_BLK_REQ_UNSUPPORTED:
            CHECK(!"a failed kind parsed OK");
        }
    } else if (r.kind == VIRTIO_BLK_REQ_UNSUPPORTED) {
        CHECK(st == VIRTIO_BLK_S_UNSUPP);
    }
    *status = (uint8_t)st;      /* the device writes it */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t lbs[4] = { 512, 1024, 4096, 512 };
    VirtioBlkReqLimits l;
    struct iovec bufs[2 * MAX_BUFS];
    unsigned out_num, in_num, n;
    size_t pos;

    if (size < PREFIX) {
        return 0;
    }
    memset(&l, 0, sizeof(l));
    l.readonly = data[0] & 1;
    l.logical_block_size = lbs[(data[0] >> 1) & 3];
    l.features = (data[0] & 0x08 ? 1ull << VIRTIO_BLK_F_FLUSH : 0) |
                 (data[0] & 0x10 ? 1ull << VIRTIO_BLK_F_DISCARD : 0) |
                 (data[0] & 0x20 ? 1ull << VIRTIO_BLK_F_WRITE_ZEROES : 0);
    l.capacity = capacities[data[1] & 7];
    l.max_discard_segs = data[2] & 15;
    l.max_write_zeroes_segs = data[2] >> 4;
    l.max_discard_sectors = l.max_write_zeroes_sectors = 1u << (data[3] % 32);
    out_num = (data[4] & 15) % (MAX_BUFS + 1);
    in_num = (data[4] >> 4) % (MAX_BUFS + 1);
    n = out_num + in_num;
    pos = PREFIX + 2 * n;
    for (unsigned i = 0; i < n; i++) {
        size_t at = PREFIX + 2 * i;
        size_t len = at + 1 < size ? (size_t)(data[at] | data[at + 1] << 8) % (MAX_BUF_LEN + 1) : 0;
        uint8_t *b = calloc(1, len ? len : 1);
        size_t take = 0;

        if (pos < size) {
            take = size - pos < len ? size - pos : len;
            memcpy(b, data + pos, take);
            pos += take;
        }
        bufs[i].iov_base = b;
        bufs[i].iov_len = len;
    }
    check(&l, bufs, out_num, bufs + out_num, in_num);
    for (unsigned i = 0; i < n; i++) {
        free(bufs[i].iov_base);
    }
    return 0;
}

/* ---- seeds ------------------------------------------------------------------ */

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* A request: @hdr_type at @sector, with @out_data readable bytes after the
 * header (@payload, if any), @in_data writable bytes before a separate
 * 1-byte status buffer. */
static void write_seed(const char *dir, const char *name, uint32_t type, uint64_t sector,
                       const void *payload, unsigned out_data, unsigned in_data)
{
    uint8_t buf[PREFIX + 8 + 16 + 64];
    unsigned out_num = out_data ? 2 : 1, in_num = in_data ? 2 : 1, k = PREFIX;
    char path[512];
    FILE *f;

    buf[0] = 0x38;                      /* writable, 512-byte blocks, all features */
    buf[1] = 3;                         /* 2048 sectors */
    buf[2] = 0x11;                      /* one segment each */
    buf[3] = 22;                        /* 2^22 sectors */
    buf[4] = (uint8_t)(out_num | in_num << 4);
    put16(buf + k, 16), k += 2;
    if (out_data) {
        put16(buf + k, out_data), k += 2;
    }
    if (in_data) {
        put16(buf + k, in_data), k += 2;
    }
    put16(buf + k, 1), k += 2;
    memcpy(buf + k, &type, 4);
    memset(buf + k + 4, 0, 4);
    memcpy(buf + k + 8, &sector, 8);
    k += 16;
    if (payload && out_data <= 64) {
        memcpy(buf + k, payload, out_data);
        k += out_data;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, k, f) != k || fclose(f) != 0) {
        abort();
    }
}

static void write_seeds(const char *dir)
{
    uint8_t seg[16] = { 8, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0 };
    uint8_t seg_unmap[16] = { 8, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0 };

    write_seed(dir, "seed-read", VIRTIO_BLK_T_IN, 8, NULL, 0, 4096);
    write_seed(dir, "seed-write", VIRTIO_BLK_T_OUT, 16, NULL, 1024, 0);
    write_seed(dir, "seed-flush", VIRTIO_BLK_T_FLUSH, 0, NULL, 0, 0);
    write_seed(dir, "seed-get-id", VIRTIO_BLK_T_GET_ID, 0, NULL, 0, 20);
    write_seed(dir, "seed-discard", VIRTIO_BLK_T_DISCARD, 0, seg, 16, 0);
    write_seed(dir, "seed-write-zeroes", VIRTIO_BLK_T_WRITE_ZEROES, 0, seg_unmap, 16, 0);
    write_seed(dir, "seed-unknown", 99, 0, NULL, 0, 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *seeds = getenv("KEEL_FUZZ_SEEDS");

    (void)argc, (void)argv;
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    return 0;
}
