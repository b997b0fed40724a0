/*
 * The block layer's engine × cache-mode suite, checked against an in-memory
 * model of the image: hundreds of concurrent random reads and writes
 * (aligned and not, single and multi-iovec, aligned and unaligned buffers),
 * read-modify-write serialisation, reads past EOF, flush, write-zeroes,
 * discard, file extension; the engine each backend reports must be the one
 * keel_blk_probe_engine() (the features report) predicts, also with
 * io_uring / linux-aio avoided at run time.
 */
#include "config.h"

#include "block/block-backend.h"
#include "compat/avoid.h"
#include "coroutine/coroutine.h"
#include "loop/aio.h"
#include "tests/block-test-util.h"
#include "tests/keel-test.h"

#include <errno.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>

#define IMG_SIZE (8 << 20)
#define SLOT (16 << 10)
#define NSLOTS (IMG_SIZE / SLOT)
#define IN_FLIGHT 384           /* more than an io_uring ring holds */
#define ROUNDS 5

typedef struct Suite {
    KeelAioContext *ctx;
    KeelBlockBackend *blk;
    uint8_t *model;
    int64_t size;               /* model size (the file's length) */
    uint64_t rng;
    int outstanding;
    int errors;
    int mismatches;
    int first_error;
} Suite;

typedef struct Req {
    Suite *s;
    bool write;
    int64_t off;
    size_t len;
    uint8_t *buf;               /* what the iovecs cover, contiguous */
    void *alloc;
    struct iovec iov[4];
    int iovcnt;
} Req;

static uint64_t rnd(Suite *s, uint64_t n)
{
    return block_test_rand(&s->rng) % n;
}

static bool check_equal(const uint8_t *got, const uint8_t *want, size_t len, int64_t off,
                        const char *what)
{
    for (size_t i = 0; i < len; i++) {
        if (got[i] != want[i]) {
            keel_test_diag("%s: first difference at byte %" PRId64 ": got 0x%02x, want 0x%02x",
                           what, off + (int64_t)i, got[i], want[i]);
            return false;
        }
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i]) {
            return false;
        }
    }
    return true;
}

/* ---- random concurrent reads and writes -------------------------------------- */

static void req_done(void *opaque, int ret)
{
    Req *r = opaque;
    Suite *s = r->s;

    if (ret < 0) {
        s->errors++;
        if (!s->first_error) {
            s->first_error = ret;
        }
    } else if (r->write) {
        memcpy(s->model + r->off, r->buf, r->len);
    } else if (!check_equal(r->buf, s->model + r->off, r->len, r->off, "concurrent read")) {
        s->mismatches++;
    }
    free(r->alloc);
    g_free(r);
    s->outstanding--;
}

static Req *make_req(Suite *s, int slot)
{
    Req *r = g_new0(Req, 1);
    int64_t base = (int64_t)slot * SLOT;
    bool aligned = rnd(s, 10) < 7;
    size_t cut[5];
    int pieces;

    r->s = s;
    r->write = rnd(s, 2);
    if (aligned) {
        int64_t first = (int64_t)rnd(s, SLOT / 512);
        r->off = base + first * 512;
        r->len = (size_t)(1 + rnd(s, (uint64_t)(SLOT / 512 - first))) * 512;
    } else {
        r->off = base + (int64_t)rnd(s, SLOT - 1);
        r->len = 1 + (size_t)rnd(s, (uint64_t)(base + SLOT - r->off));
    }
    /* Page-aligned buffers half of the time, deliberately odd ones else. */
    if (posix_memalign(&r->alloc, 4096, r->len + 4096)) {
        abort();
    }
    r->buf = (uint8_t *)r->alloc + (rnd(s, 2) ? 0 : 1 + rnd(s, 511));
    if (r->write) {
        for (size_t i = 0; i < r->len; i++) {
            r->buf[i] = (uint8_t)block_test_rand(&s->rng);
        }
    } else {
        memset(r->buf, 0xee, r->len);
    }
    /* Split into 1..4 iovecs, at 512-byte boundaries when possible. */
    pieces = 1 + (int)rnd(s, 4);
    cut[0] = 0;
    for (int i = 1; i < pieces; i++) {
        size_t c = (size_t)rnd(s, r->len + 1);
        if (aligned && rnd(s, 2)) {
            c &= ~(size_t)511;
        }
        cut[i] = c;
    }
    cut[pieces] = r->len;
    /* Sort the cut points (tiny insertion sort). */
    for (int i = 1; i < pieces; i++) {
        for (int j = i; j > 0 && cut[j] < cut[j - 1]; j--) {
            size_t t = cut[j];
            cut[j] = cut[j - 1];
            cut[j - 1] = t;
        }
    }
    for (int i = 0; i < pieces; i++) {
        r->iov[r->iovcnt].iov_base = r->buf + cut[i];
        r->iov[r->iovcnt].iov_len = cut[i + 1] - cut[i];
        r->iovcnt++;
    }
    return r;
}

static void run_rounds(Suite *s)
{
    int slots[NSLOTS];
    int total = 0;

    for (int round = 0; round < ROUNDS; round++) {
        bool plug = round % 2;

        for (int i = 0; i < NSLOTS; i++) {
            slots[i] = i;
        }
        /* Distinct slots per round: requests in flight never overlap. */
        for (int i = 0; i < IN_FLIGHT; i++) {
            int j = i + (int)rnd(s, (uint64_t)(NSLOTS - i));
            int t = slots[i];
            slots[i] = slots[j];
            slots[j] = t;
        }
        if (plug) {
            keel_blk_io_plug();
        }
        for (int i = 0; i < IN_FLIGHT; i++) {
            Req *r = make_req(s, slots[i]);
            s->outstanding++;
            total++;
            if (r->write) {
                keel_blk_aio_pwritev(s->blk, r->off, r->iov, r->iovcnt, req_done, r);
            } else {
                keel_blk_aio_preadv(s->blk, r->off, r->iov, r->iovcnt, req_done, r);
            }
        }
        if (plug) {
            keel_blk_io_unplug();
        }
        while (s->outstanding) {
            keel_aio_poll(s->ctx, true);
        }
    }
    KEEL_IS(s->errors, 0, "%d concurrent random requests (%d in flight) succeed", total,
            IN_FLIGHT);
    if (s->errors) {
        keel_test_diag("first error: %s", strerror(-s->first_error));
    }
    KEEL_IS(s->mismatches, 0, "every concurrent read matches the model");
}

/* ---- coroutine-driven checks -------------------------------------------------- */

static void co_full_compare(void *opaque)
{
    Suite *s = opaque;
    uint8_t *buf = g_malloc(1 << 20);
    int64_t len = keel_blk_getlength(s->blk);
    bool ok = len == s->size;

    if (!ok) {
        keel_test_diag("file length %" PRId64 ", model %" PRId64, len, s->size);
    }
    for (int64_t off = 0; ok && off < s->size; off += 1 << 20) {
        size_t n = (size_t)MIN((int64_t)1 << 20, s->size - off);
        int ret = keel_blk_co_pread(s->blk, off, buf, n);
        ok = ret == 0 && check_equal(buf, s->model + off, n, off, "full compare");
    }
    KEEL_OK(ok, "the whole image matches the model");
    g_free(buf);
}

/* Read [off, off+len) through the coroutine API and compare with the model. */
typedef struct ReadCheck {
    Suite *s;
    int64_t off;
    size_t len;
    bool ok;
} ReadCheck;

static void co_read_check(void *opaque)
{
    ReadCheck *c = opaque;
    uint8_t *buf = g_malloc(c->len);
    int ret = keel_blk_co_pread(c->s->blk, c->off, buf, c->len);

    c->ok = ret == 0 && check_equal(buf, c->s->model + c->off, c->len, c->off, "read back");
    if (ret) {
        keel_test_diag("read at %" PRId64 ": %s", c->off, strerror(-ret));
    }
    g_free(buf);
}

static bool read_check(Suite *s, int64_t off, size_t len)
{
    ReadCheck c = { s, off, len, false };

    block_test_run_co(s->ctx, co_read_check, &c);
    return c.ok;
}

/* Concurrent unaligned writes to disjoint bytes of the same blocks: with
 * O_DIRECT they are read-modify-writes that must serialise. */
typedef struct RmwReq {
    Suite *s;
    int64_t off;
    uint8_t data[200];
    size_t len;
} RmwReq;

static void rmw_done(void *opaque, int ret)
{
    RmwReq *r = opaque;

    if (ret < 0) {
        r->s->errors++;
    } else {
        memcpy(r->s->model + r->off, r->data, r->len);
    }
    r->s->outstanding--;
}

static void test_rmw(Suite *s)
{
    enum { N = 40 };
    RmwReq reqs[N];
    struct iovec iov[N];
    int64_t base = 5 * SLOT + 3;

    s->errors = 0;
    for (int i = 0; i < N; i++) {
        reqs[i].s = s;
        reqs[i].len = 100 + (size_t)rnd(s, 100);
        reqs[i].off = base + i * 200;       /* disjoint; several share a block */
        for (size_t k = 0; k < reqs[i].len; k++) {
            reqs[i].data[k] = (uint8_t)(i * 7 + k);
        }
        iov[i].iov_base = reqs[i].data;
        iov[i].iov_len = reqs[i].len;
        s->outstanding++;
        keel_blk_aio_pwritev(s->blk, reqs[i].off, &iov[i], 1, rmw_done, &reqs[i]);
    }
    while (s->outstanding) {
        keel_aio_poll(s->ctx, true);
    }
    KEEL_IS(s->errors, 0, "%d concurrent unaligned writes into shared blocks succeed", N);
    KEEL_OK(read_check(s, 5 * SLOT, 9000),
            "concurrent read-modify-writes kept each other's bytes");
}

/* More iovecs than preadv takes at once (IOV_MAX 1024), unaligned pieces. */
typedef struct ManyIov {
    Suite *s;
    bool ok;
} ManyIov;

static void co_many_iovecs(void *opaque)
{
    ManyIov *m = opaque;
    Suite *s = m->s;
    enum { N = 1500 };
    struct iovec *iov = g_new(struct iovec, N);
    uint8_t *buf = g_malloc(N * 512);
    int64_t off = 64 * SLOT;
    int ret;

    for (int i = 0; i < N * 512; i++) {
        buf[i] = (uint8_t)(i * 13 + 5);
    }
    for (int i = 0; i < N; i++) {
        iov[i].iov_base = buf + i * 512;
        iov[i].iov_len = 512;
    }
    ret = keel_blk_co_pwritev(s->blk, off, iov, N);
    if (ret == 0) {
        memcpy(s->model + off, buf, N * 512);
    }
    memset(buf, 0, N * 512);
    /* Read back in 3 + 509-byte pieces: nothing aligned. */
    for (int i = 0; i < N; i++) {
        iov[i].iov_base = buf + i * 512 + (i % 2 ? 3 : 0);
        iov[i].iov_len = i % 2 ? 509 : 515;
    }
    iov[N - 1].iov_len = 509;
    int ret2 = keel_blk_co_preadv(s->blk, off, iov, N);
    m->ok = ret == 0 && ret2 == 0 && check_equal(buf, s->model + off, N * 512, off, "iovecs");
    g_free(iov);
    g_free(buf);
}

/* Coroutine-side checks of a range: all zeros / equal to the model. */
static bool read_co_zero(Suite *s, int64_t off, size_t len)
{
    uint8_t *buf = g_malloc(len);
    int ret;
    bool ok;

    memset(buf, 0xff, len);
    ret = keel_blk_co_pread(s->blk, off, buf, len);
    ok = ret == 0 && all_zero(buf, len);
    g_free(buf);
    return ok;
}

static bool read_co_cmp(Suite *s, int64_t off, size_t len)
{
    uint8_t *buf = g_malloc(len);
    int ret = keel_blk_co_pread(s->blk, off, buf, len);
    bool ok = ret == 0 && check_equal(buf, s->model + off, len, off, "compare");

    g_free(buf);
    return ok;
}

typedef struct Misc {
    Suite *s;
    const char *dir;
    const char *opts_tail;      /* ",aio=...,cache=..." */
} Misc;

static void co_misc(void *opaque)
{
    Misc *m = opaque;
    Suite *s = m->s;
    uint8_t *buf = g_malloc(16384);
    int ret;

    /* A read that straddles EOF, and one entirely past it. */
    memset(buf, 0xff, 4096);
    ret = keel_blk_co_pread(s->blk, s->size - 1024, buf, 4096);
    KEEL_OK(ret == 0 && check_equal(buf, s->model + s->size - 1024, 1024, s->size - 1024, "eof")
            && all_zero(buf + 1024, 3072), "a read across EOF returns the data, then zeros");
    memset(buf, 0xff, 4096);
    ret = keel_blk_co_pread(s->blk, s->size + 8192, buf, 4096);
    KEEL_OK(ret == 0 && all_zero(buf, 4096), "a read past EOF returns zeros");

    /* An image whose EOF falls inside a block. */
    {
        uint8_t data[5000];
        char *errmsg = NULL, *opts, *path;
        KeelBlockBackend *small;
        for (int i = 0; i < 5000; i++) {
            data[i] = (uint8_t)(i + 1);
        }
        path = block_test_image(m->dir, "eof", sizeof(data), data);
        opts = g_strdup_printf("file=%s%s", path, m->opts_tail);
        small = keel_blk_open_str(opts, s->ctx, &errmsg);
        KEEL_OK(small, "open a 5000-byte image (%s)", errmsg ? errmsg : "ok");
        if (small) {
            memset(buf, 0xff, 8192);
            ret = keel_blk_co_pread(small, 0, buf, 8192);
            KEEL_OK(ret == 0 && !memcmp(buf, data, sizeof(data)) && all_zero(buf + 5000, 3192),
                    "EOF inside a block: data, then zeros (ret %d)", ret);
            memset(buf, 0xff, 8192);
            ret = keel_blk_co_pread(small, 4000, buf, 1500);
            KEEL_OK(ret == 0 && !memcmp(buf, data + 4000, 1000) && all_zero(buf + 1000, 500),
                    "unaligned read across an unaligned EOF");
            keel_blk_close(small);
        }
        g_free(opts);
        g_free(errmsg);
        g_free(path);
    }

    ret = keel_blk_co_flush(s->blk);
    KEEL_IS(ret, 0, "flush");

    /* Write-zeroes, aligned and not. */
    {
        int64_t a = 10 * SLOT, u = 12 * SLOT + 100;
        int r1 = keel_blk_co_pwrite_zeroes(s->blk, a, 65536);
        int r2 = keel_blk_co_pwrite_zeroes(s->blk, u, 3000);
        KEEL_OK(r1 == 0 && r2 == 0, "write-zeroes succeeds (%d, %d)", r1, r2);
        if (r1 == 0) {
            memset(s->model + a, 0, 65536);
        }
        if (r2 == 0) {
            memset(s->model + u, 0, 3000);
        }
        KEEL_OK(read_co_zero(s, a, 65536) && read_co_zero(s, u, 3000) &&
                read_co_cmp(s, u - 100, 3200), "write-zeroes reads back as zeros, neighbours kept");
    }

    /* Discard (discard=unmap) of an aligned range reads back zeros when the
     * file system punches holes. */
    {
        int64_t d = 20 * SLOT;
        ret = keel_blk_co_pdiscard(s->blk, d, 65536);
        if (ret == -ENOTSUP) {
            keel_test_skip("discard: no hole punching here (fallocate PUNCH_HOLE unsupported)");
        } else {
            if (ret == 0) {
                memset(s->model + d, 0, 65536);
            }
            KEEL_OK(ret == 0 && read_co_zero(s, d, 65536), "discard reads back as zeros");
        }
    }

    /* A write past EOF extends the file. */
    {
        int64_t off = s->size + 8192;
        for (int i = 0; i < 4096; i++) {
            buf[i] = (uint8_t)(i ^ 0x5a);
        }
        ret = keel_blk_co_pwrite(s->blk, off, buf, 4096);
        KEEL_IS(ret, 0, "a write past EOF succeeds");
        if (ret == 0) {
            s->model = g_realloc(s->model, (size_t)(off + 4096));
            memset(s->model + s->size, 0, (size_t)(off - s->size));
            memcpy(s->model + off, buf, 4096);
            s->size = off + 4096;
        }
        KEEL_IS(keel_blk_getlength(s->blk), s->size, "and extends the file");
    }

    /* Zero-length requests are no-ops. */
    KEEL_OK(keel_blk_co_pread(s->blk, 0, buf, 0) == 0 &&
            keel_blk_co_pwrite(s->blk, 0, buf, 0) == 0, "zero-length requests succeed");
    KEEL_IS(keel_blk_co_pread(s->blk, -1, buf, 1), -EINVAL, "a negative offset is -EINVAL");
    g_free(buf);
}

/* ---- one engine x cache combination --------------------------------------------- */

static void run_suite(KeelAioContext *ctx, KeelBlkAio aio, KeelBlkCache cache)
{
    bool direct = cache == KEEL_BLK_CACHE_NONE || cache == KEEL_BLK_CACHE_DIRECTSYNC;
    const char *dir = direct ? block_test_dir() : block_test_dir_any();
    const char *expected, *reason;
    char *path, *opts, *tail, *errmsg = NULL;
    Suite s = { .ctx = ctx, .rng = 0x1234567ULL + aio * 100 + cache };
    uint64_t seed = s.rng;

    keel_test_diag("---- aio=%s cache=%s", keel_blk_aio_name(aio), keel_blk_cache_name(cache));
    if (!dir) {
        keel_test_skip("aio=%s cache=%s: no directory supports O_DIRECT (set KEEL_TEST_DIR)",
                       keel_blk_aio_name(aio), keel_blk_cache_name(cache));
        return;
    }
    s.size = IMG_SIZE;
    s.model = g_malloc(IMG_SIZE);
    for (int i = 0; i < IMG_SIZE; i++) {
        s.model[i] = (uint8_t)block_test_rand(&seed);
    }
    path = block_test_image(dir, "model", IMG_SIZE, s.model);
    tail = g_strdup_printf(",aio=%s,cache=%s,discard=unmap", keel_blk_aio_name(aio),
                           keel_blk_cache_name(cache));
    opts = g_strdup_printf("file=%s%s", path, tail);
    s.blk = keel_blk_open_str(opts, ctx, &errmsg);
    if (!KEEL_OK(s.blk, "open %s", opts)) {
        keel_test_diag("%s", errmsg);
        goto out;
    }
    expected = keel_blk_probe_engine(aio, direct, &reason);
    KEEL_OK(!strcmp(keel_blk_engine_name(s.blk), expected),
            "aio=%s cache=%s uses engine %s (expected %s, reason %s)", keel_blk_aio_name(aio),
            keel_blk_cache_name(cache), keel_blk_engine_name(s.blk), expected, reason);
    if (direct) {
        uint32_t a = keel_blk_get_request_alignment(s.blk);
        KEEL_OK(a >= 512 && !(a & (a - 1)), "O_DIRECT request alignment %u", a);
    } else {
        KEEL_IS(keel_blk_get_request_alignment(s.blk), 1, "no alignment without O_DIRECT");
    }

    run_rounds(&s);
    test_rmw(&s);
    {
        ManyIov m = { &s, false };
        block_test_run_co(ctx, co_many_iovecs, &m);
        KEEL_OK(m.ok, "1500 iovecs (more than IOV_MAX), unaligned on the way back");
    }
    {
        Misc m = { &s, dir, tail };
        block_test_run_co(ctx, co_misc, &m);
    }
    block_test_run_co(ctx, co_full_compare, &s);
    keel_blk_close(s.blk);
out:
    g_free(errmsg);
    g_free(opts);
    g_free(tail);
    g_free(path);
    g_free(s.model);
}

/* ---- option handling and forced fallbacks ------------------------------------ */

static void test_options(KeelAioContext *ctx)
{
    KeelBlkOptions o;
    char *errmsg = NULL;
    const char *dir = block_test_dir_any();
    char *path = block_test_image(dir, "opts", 1 << 20, NULL);
    char *str;
    KeelBlockBackend *blk;

    keel_blk_options_init(&o);
    KEEL_IS(keel_blk_options_parse(&o, "file=a,,b.img,aio=native,cache=none,readonly=on,"
                                       "discard=unmap,inject=read:EIO:once", &errmsg), 0,
            "a full option string parses");
    KEEL_OK(o.filename && !strcmp(o.filename, "a,b.img") && o.aio == KEEL_BLK_AIO_NATIVE &&
            o.cache == KEEL_BLK_CACHE_NONE && o.readonly && o.discard_unmap && o.inject,
            "every field set (\",,\" is a literal comma)");
    keel_blk_options_clear(&o);

    keel_blk_options_init(&o);
    KEEL_IS(keel_blk_options_parse(&o, "file=x,aio=posix", &errmsg), -1, "aio=posix refused");
    KEEL_OK(errmsg && strstr(errmsg, "posix"), "with a message naming it: %s", errmsg);
    g_free(errmsg);
    errmsg = NULL;
    KEEL_IS(keel_blk_options_parse(&o, "file=x,inject=read:EWHAT", &errmsg), -1,
            "a bad inject rule is refused at parse time");
    g_free(errmsg);
    errmsg = NULL;
    keel_blk_options_clear(&o);

    str = g_strdup_printf("file=%s,aio=native,cache=writeback", path);
    blk = keel_blk_open_str(str, ctx, &errmsg);
    KEEL_OK(!blk && errmsg && !strcmp(errmsg, "aio=native was specified, but it requires "
                                              "cache.direct=on, which was not specified."),
            "aio=native without O_DIRECT is refused with QEMU's message");
    g_free(errmsg);
    errmsg = NULL;
    g_free(str);

    str = g_strdup_printf("file=%s,readonly=on", path);
    blk = keel_blk_open_str(str, ctx, &errmsg);
    if (KEEL_OK(blk, "open read-only")) {
        KEEL_OK(keel_blk_is_read_only(blk), "reported read-only");
        keel_blk_close(blk);
    }
    g_free(str);

    blk = keel_blk_open_str("file=/nonexistent/keel.img", ctx, &errmsg);
    KEEL_OK(!blk && errmsg && strstr(errmsg, "/nonexistent/keel.img"),
            "a missing file is refused: %s", errmsg ? errmsg : "(no message)");
    g_free(errmsg);
    g_free(path);
}

typedef struct RoCheck {
    KeelBlockBackend *blk;
    int w, z, d, r;
} RoCheck;

static void co_readonly(void *opaque)
{
    RoCheck *c = opaque;
    char buf[512] = { 0 };

    c->w = keel_blk_co_pwrite(c->blk, 0, buf, sizeof(buf));
    c->z = keel_blk_co_pwrite_zeroes(c->blk, 0, 512);
    c->d = keel_blk_co_pdiscard(c->blk, 0, 512);
    c->r = keel_blk_co_pread(c->blk, 0, buf, sizeof(buf));
}

static void test_readonly(KeelAioContext *ctx)
{
    char *path = block_test_image(block_test_dir_any(), "ro", 1 << 20, NULL);
    char *str = g_strdup_printf("file=%s,readonly=on,discard=unmap", path);
    char *errmsg = NULL;
    RoCheck c = { keel_blk_open_str(str, ctx, &errmsg), 0, 0, 0, 0 };

    if (KEEL_OK(c.blk, "open read-only backend")) {
        block_test_run_co(ctx, co_readonly, &c);
        KEEL_OK(c.w == -EPERM && c.z == -EPERM && c.d == -EPERM && c.r == 0,
                "read-only: write/zeroes/discard -EPERM, read works");
        keel_blk_close(c.blk);
    }
    g_free(errmsg);
    g_free(str);
    g_free(path);
}

/* KEEL_AVOID set from inside the test: the chain io_uring -> linux-aio ->
 * threads, as the features report predicts. */
static void test_forced_fallbacks(KeelAioContext *ctx)
{
    static const struct {
        const char *avoid;
        KeelBlkAio aio;
        const char *not_engine;
        const char *must_engine;    /* NULL: whatever the probe says */
        bool compiled;              /* the avoided engine is built in */
    } cases[] = {
#ifdef CONFIG_LINUX_IO_URING
        { "io_uring", KEEL_BLK_AIO_IO_URING, "io_uring", NULL, true },
        { "io_uring,linux-aio", KEEL_BLK_AIO_IO_URING, "io_uring", "threads", true },
#else
        { "io_uring", KEEL_BLK_AIO_IO_URING, "io_uring", NULL, false },
        { "io_uring,linux-aio", KEEL_BLK_AIO_IO_URING, "io_uring", "threads", false },
#endif
#ifdef CONFIG_LINUX_AIO
        { "linux-aio", KEEL_BLK_AIO_NATIVE, "linux-aio", "threads", true },
#else
        { "linux-aio", KEEL_BLK_AIO_NATIVE, "linux-aio", "threads", false },
#endif
    };
    const char *dir = block_test_dir();
    const char *orig = getenv("KEEL_AVOID");
    const char *error;
    char *path;

    if (!dir) {
        keel_test_skip("forced fallbacks: no directory supports O_DIRECT");
        return;
    }
    path = block_test_image(dir, "fallback", 1 << 20, NULL);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *list = orig && *orig ? g_strdup_printf("%s,%s", orig, cases[i].avoid)
                                   : g_strdup(cases[i].avoid);
        char *str = g_strdup_printf("file=%s,aio=%s,cache=none", path,
                                    keel_blk_aio_name(cases[i].aio));
        char *errmsg = NULL;
        KeelBlockBackend *blk;
        const char *expected, *reason;

        KEEL_IS(keel_avoid_parse_for_testing(list, &error), 0, "KEEL_AVOID=%s", list);
        expected = keel_blk_probe_engine(cases[i].aio, true, &reason);
        blk = keel_blk_open_str(str, ctx, &errmsg);
        if (KEEL_OK(blk, "open aio=%s cache=none with KEEL_AVOID=%s",
                    keel_blk_aio_name(cases[i].aio), list)) {
            const char *got = keel_blk_engine_name(blk);
            KEEL_OK(!strcmp(got, expected) && strcmp(got, cases[i].not_engine) &&
                    (!cases[i].must_engine || !strcmp(got, cases[i].must_engine)),
                    "KEEL_AVOID=%s: engine %s, the features report says %s (reason %s)",
                    list, got, expected, reason);
            const char *want = cases[i].compiled ? "KEEL_AVOID" : "not-compiled";
            KEEL_OK(!strcmp(reason, want), "reason %s (got %s)", want, reason);
            keel_blk_close(blk);
        }
        g_free(errmsg);
        g_free(str);
        g_free(list);
    }
    KEEL_IS(keel_avoid_parse_for_testing(orig ? orig : "", &error), 0, "KEEL_AVOID restored");
    g_free(path);
}

int main(int argc, char **argv)
{
    static const KeelBlkAio aios[] = { KEEL_BLK_AIO_IO_URING, KEEL_BLK_AIO_NATIVE,
                                       KEEL_BLK_AIO_THREADS };
    static const KeelBlkCache caches[] = { KEEL_BLK_CACHE_WRITEBACK, KEEL_BLK_CACHE_NONE,
                                           KEEL_BLK_CACHE_WRITETHROUGH,
                                           KEEL_BLK_CACHE_DIRECTSYNC, KEEL_BLK_CACHE_UNSAFE };
    KeelAioContext *ctx;
    const char *reason;

    if (!block_test_dir_any()) {
        keel_test_skip_all("no writable directory for test images (set KEEL_TEST_DIR)");
    }
    ctx = keel_aio_context_new();
    keel_test_diag("test images in %s (O_DIRECT: %s)", block_test_dir_any(),
                   block_test_dir() ? "yes" : "no");
    {
        const char *engine = keel_blk_probe_engine(KEEL_BLK_AIO_IO_URING, true, &reason);
        keel_test_diag("block-engine for aio=io_uring cache=none: %s (reason %s)", engine,
                       reason);
    }

    test_options(ctx);
    test_readonly(ctx);
    for (size_t a = 0; a < G_N_ELEMENTS(aios); a++) {
        for (size_t c = 0; c < G_N_ELEMENTS(caches); c++) {
            bool direct = caches[c] == KEEL_BLK_CACHE_NONE ||
                          caches[c] == KEEL_BLK_CACHE_DIRECTSYNC;
            if (aios[a] == KEEL_BLK_AIO_NATIVE && !direct) {
                continue;   /* refused by design (test_options checks it) */
            }
            /* Only the main modes, unless asked for all of them. */
            if ((caches[c] == KEEL_BLK_CACHE_WRITETHROUGH || caches[c] == KEEL_BLK_CACHE_UNSAFE) &&
                aios[a] != KEEL_BLK_AIO_THREADS && !(argc > 1 && !strcmp(argv[1], "--all"))) {
                continue;
            }
            run_suite(ctx, aios[a], caches[c]);
        }
    }
    test_forced_fallbacks(ctx);
    keel_aio_context_unref(ctx);
    return keel_test_done();
}
