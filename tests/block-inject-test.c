/*
 * Error injection (block/blkdebug.h): an injected EIO / ENOSPC reaches its
 * caller exactly once, the failed request has no effect, and every other
 * request — hundreds in flight at the same time — completes normally with
 * the right data.  Also req=N, flush, write-zeroes, delays, and the rule
 * parser's error messages.  Run on every engine the machine has.
 */
#include "config.h"

#include "block/block-backend.h"
#include "coroutine/coroutine.h"
#include "loop/aio.h"
#include "tests/block-test-util.h"
#include "tests/keel-test.h"

#include <errno.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>

#define IMG_SIZE (4 << 20)
#define SLOT (16 << 10)
#define NREQ 200
#define REQ_LEN 4096

typedef struct T {
    KeelAioContext *ctx;
    KeelBlockBackend *blk;
    uint8_t *model;
    int outstanding;
    int ok, failed, wrong_errno, mismatched;
    int want_errno;
} T;

typedef struct Req {
    T *t;
    bool write;
    int64_t off;
    uint8_t *buf;
    struct iovec iov;
} Req;

static void req_done(void *opaque, int ret)
{
    Req *r = opaque;
    T *t = r->t;

    if (ret == 0) {
        t->ok++;
        if (r->write) {
            memcpy(t->model + r->off, r->buf, REQ_LEN);
        } else if (memcmp(r->buf, t->model + r->off, REQ_LEN)) {
            t->mismatched++;
        }
    } else if (ret == -t->want_errno) {
        t->failed++;
    } else {
        t->wrong_errno++;
    }
    free(r->buf);
    g_free(r);
    t->outstanding--;
}

/* NREQ requests at slots 0..NREQ-1 (distinct), plus @extra more at slot 0. */
static void submit_batch(T *t, bool write, int extra)
{
    t->ok = t->failed = t->wrong_errno = t->mismatched = 0;
    for (int i = 0; i < NREQ + extra; i++) {
        Req *r = g_new0(Req, 1);
        r->t = t;
        r->write = write;
        r->off = i < NREQ ? (int64_t)i * SLOT : 0;
        if (posix_memalign((void **)&r->buf, 4096, REQ_LEN)) {
            abort();
        }
        memset(r->buf, write ? (0x40 + i) & 0xff : 0xee, REQ_LEN);
        r->iov.iov_base = r->buf;
        r->iov.iov_len = REQ_LEN;
        t->outstanding++;
        if (write) {
            keel_blk_aio_pwritev(t->blk, r->off, &r->iov, 1, req_done, r);
        } else {
            keel_blk_aio_preadv(t->blk, r->off, &r->iov, 1, req_done, r);
        }
    }
    while (t->outstanding) {
        keel_aio_poll(t->ctx, true);
    }
}

static void co_compare(void *opaque)
{
    T *t = opaque;
    uint8_t *buf = g_malloc(IMG_SIZE);
    int ret = keel_blk_co_pread(t->blk, 0, buf, IMG_SIZE);

    KEEL_OK(ret == 0 && !memcmp(buf, t->model, IMG_SIZE), "the image matches the model");
    g_free(buf);
}

typedef struct CoOps {
    T *t;
    int results[12];
    int n;
} CoOps;

static void co_req_n(void *opaque)
{
    CoOps *c = opaque;
    uint8_t buf[512];
    char *errmsg = NULL;
    uint64_t base = keel_blk_get_request_count(c->t->blk);
    char *rule = g_strdup_printf("any:EIO:req=%" PRIu64, base + 5);

    KEEL_IS(keel_blk_inject(c->t->blk, rule, &errmsg), 0, "add rule %s at run time", rule);
    for (c->n = 0; c->n < 10; c->n++) {
        c->results[c->n] = keel_blk_co_pread(c->t->blk, 0, buf, sizeof(buf));
    }
    g_free(rule);
}

static void co_flush_zeroes(void *opaque)
{
    CoOps *c = opaque;
    T *t = c->t;
    char *errmsg = NULL;
    uint8_t *buf = g_malloc(65536);

    keel_blk_inject(t->blk, "flush:EIO:once;zeroes:ENOSPC:once", &errmsg);
    c->results[0] = keel_blk_co_flush(t->blk);
    c->results[1] = keel_blk_co_flush(t->blk);
    c->results[2] = keel_blk_co_pwrite_zeroes(t->blk, 2 * SLOT, 65536);
    c->results[3] = keel_blk_co_pread(t->blk, 2 * SLOT, buf, 65536);
    c->results[4] = memcmp(buf, t->model + 2 * SLOT, 65536) == 0;
    c->results[5] = keel_blk_co_pwrite_zeroes(t->blk, 2 * SLOT, 65536);
    if (c->results[5] == 0) {
        memset(t->model + 2 * SLOT, 0, 65536);
    }
    /* A delayed request still completes, with its data. */
    keel_blk_inject(t->blk, "write:delay=20:offset=0-512;read:delay=5:EIO:sector=1:once", &errmsg);
    memset(buf, 0x77, 4096);
    c->results[6] = keel_blk_co_pwrite(t->blk, 0, buf, 4096);
    if (c->results[6] == 0) {
        memcpy(t->model, buf, 4096);
    }
    c->results[7] = keel_blk_co_pread(t->blk, 0, buf, 4096);
    c->results[8] = keel_blk_co_pread(t->blk, 0, buf, 4096);
    c->results[9] = memcmp(buf, t->model, 4096) == 0;
    g_free(errmsg);
    g_free(buf);
}

static void run_config(KeelAioContext *ctx, const char *dir, const char *config)
{
    T t = { .ctx = ctx };
    uint64_t seed = 42;
    char *path, *opts, *errmsg = NULL;

    keel_test_diag("---- %s", config);
    t.model = g_malloc(IMG_SIZE);
    for (int i = 0; i < IMG_SIZE; i++) {
        t.model[i] = (uint8_t)block_test_rand(&seed);
    }
    path = block_test_image(dir, "inject", IMG_SIZE, t.model);
    /* The first rule comes with the options; the others are added later. */
    opts = g_strdup_printf("file=%s,%s,inject=read:EIO:offset=0-4096:once", path, config);
    t.blk = keel_blk_open_str(opts, ctx, &errmsg);
    if (!KEEL_OK(t.blk, "open %s", opts)) {
        keel_test_diag("%s", errmsg);
        goto out;
    }
    keel_test_diag("engine %s", keel_blk_engine_name(t.blk));

    /* EIO on the first read touching [0, 4096): 200 reads at distinct
     * offsets plus 9 more at offset 0, all in flight together. */
    t.want_errno = EIO;
    submit_batch(&t, false, 9);
    KEEL_IS(t.failed, 1, "%s: one read of %d got the injected EIO", config, NREQ + 9);
    KEEL_IS(t.ok, NREQ + 8, "every other read succeeded");
    KEEL_IS(t.wrong_errno + t.mismatched, 0, "with the right data and no other error");
    submit_batch(&t, false, 0);
    KEEL_IS(t.ok, NREQ, "once: the rule is spent, all reads succeed again");

    /* ENOSPC on one write of 200 in flight: nothing else is lost. */
    KEEL_IS(keel_blk_inject(t.blk, "write:ENOSPC:offset=1M-1M:once", &errmsg), -1,
            "an empty range is refused");
    g_free(errmsg);
    errmsg = NULL;
    KEEL_IS(keel_blk_inject(t.blk, "write:ENOSPC:offset=1M:once", &errmsg), 0,
            "add write:ENOSPC:offset=1M:once");
    t.want_errno = ENOSPC;
    submit_batch(&t, true, 0);
    KEEL_IS(t.failed, 1, "one write of %d got the injected ENOSPC", NREQ);
    KEEL_IS(t.ok, NREQ - 1, "every other write succeeded");
    KEEL_IS(t.wrong_errno, 0, "no other error");
    block_test_run_co(ctx, co_compare, &t);

    {
        CoOps c = { .t = &t };
        block_test_run_co(ctx, co_req_n, &c);
        bool only_fifth = true;
        for (int i = 0; i < 10; i++) {
            only_fifth &= c.results[i] == (i == 4 ? -EIO : 0);
        }
        KEEL_OK(only_fifth, "req=N fails exactly the N-th request");
    }
    {
        CoOps c = { .t = &t };
        block_test_run_co(ctx, co_flush_zeroes, &c);
        KEEL_OK(c.results[0] == -EIO && c.results[1] == 0, "flush:EIO:once: -EIO, then 0");
        KEEL_OK(c.results[2] == -ENOSPC && c.results[3] == 0 && c.results[4],
                "zeroes:ENOSPC: -ENOSPC and the data is untouched");
        KEEL_IS(c.results[5], 0, "the next write-zeroes works");
        KEEL_IS(c.results[6], 0, "a delayed write completes");
        KEEL_OK(c.results[7] == -EIO && c.results[8] == 0 && c.results[9],
                "delay + EIO on sector 1: fails once after the delay, then reads the data");
    }
    block_test_run_co(ctx, co_compare, &t);
    keel_blk_close(t.blk);
out:
    g_free(errmsg);
    g_free(opts);
    g_free(path);
    g_free(t.model);
}

static void test_parser(KeelAioContext *ctx, const char *dir)
{
    static const char *const bad[] = {
        "foo:EIO", "read", "read:EWHAT", "read:EIO:offset=5-3", "read:EIO:req=0",
        "read:delay=abc", "read:EIO:bogus=1", "read:once", "write:EIO:offset=",
    };
    static const char *const good[] = {
        "read:EIO", "write:ENOSPC:offset=0-4k:once", "any:delay=1", "flush:5",
        "event=read:errno=EIO:once=on", "discard:EIO;zeroes:EIO:sector=7", "any:EIO:req=3",
    };
    char *path = block_test_image(dir, "parse", 65536, NULL);
    char *opts = g_strdup_printf("file=%s,aio=threads", path);
    char *errmsg = NULL;
    KeelBlockBackend *blk = keel_blk_open_str(opts, ctx, &errmsg);

    if (!KEEL_OK(blk, "open for the parser tests")) {
        goto out;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        int ret = keel_blk_inject(blk, bad[i], &errmsg);
        KEEL_OK(ret == -1 && errmsg && *errmsg, "rule '%s' refused: %s", bad[i],
                errmsg ? errmsg : "(no message)");
        g_free(errmsg);
        errmsg = NULL;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
        KEEL_IS(keel_blk_inject(blk, good[i], &errmsg), 0, "rule '%s' accepted", good[i]);
        g_free(errmsg);
        errmsg = NULL;
    }
    keel_blk_close(blk);
out:
    g_free(errmsg);
    g_free(opts);
    g_free(path);
}

int main(void)
{
    const char *dir_any = block_test_dir_any();
    const char *dir_direct = block_test_dir();
    KeelAioContext *ctx;

    if (!dir_any) {
        keel_test_skip_all("no writable directory for test images (set KEEL_TEST_DIR)");
    }
    ctx = keel_aio_context_new();
    test_parser(ctx, dir_any);
    run_config(ctx, dir_any, "aio=threads,cache=writeback");
    run_config(ctx, dir_any, "aio=io_uring,cache=writeback");
    if (dir_direct) {
        run_config(ctx, dir_direct, "aio=io_uring,cache=none");
        run_config(ctx, dir_direct, "aio=native,cache=none");
    } else {
        keel_test_skip("O_DIRECT configurations: no directory supports O_DIRECT");
    }
    keel_aio_context_unref(ctx);
    return keel_test_done();
}
