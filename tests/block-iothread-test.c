/*
 * Backends in an iothread: requests submitted from the main thread run and
 * call back in the iothread; keel_blk_drain() waits for everything in
 * flight when called from the main thread, from a coroutine in the
 * iothread, and from the iothread outside a coroutine; a backend moves
 * between the main context and the iothread with I/O on both sides; close
 * from the main thread drains first.  Every engine the machine has.
 */
#include "config.h"

#include "block/block-backend.h"
#include "coroutine/coroutine.h"
#include "loop/aio.h"
#include "loop/iothread.h"
#include "tests/block-test-util.h"
#include "tests/keel-test.h"

#include <errno.h>
#include <glib.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define IMG_SIZE (4 << 20)
#define REQ_LEN 4096
#define NREQ 300

typedef struct Batch {
    KeelBlockBackend *blk;
    KeelAioContext *expect_ctx;     /* callbacks must run in its home thread */
    int completed;                  /* atomic */
    int errors;                     /* atomic */
    int wrong_thread;               /* atomic */
    uint8_t *bufs;
    struct iovec iov[NREQ];
} Batch;

static void batch_cb(void *opaque, int ret)
{
    Batch *b = opaque;

    if (ret < 0) {
        __atomic_add_fetch(&b->errors, 1, __ATOMIC_SEQ_CST);
    }
    if (!keel_aio_context_in_home_thread(b->expect_ctx)) {
        __atomic_add_fetch(&b->wrong_thread, 1, __ATOMIC_SEQ_CST);
    }
    __atomic_add_fetch(&b->completed, 1, __ATOMIC_SEQ_CST);
}

static void batch_init(Batch *b, KeelBlockBackend *blk, KeelAioContext *ctx)
{
    memset(b, 0, sizeof(*b));
    b->blk = blk;
    b->expect_ctx = ctx;
    if (posix_memalign((void **)&b->bufs, 4096, (size_t)NREQ * REQ_LEN)) {
        abort();
    }
    for (int i = 0; i < NREQ; i++) {
        b->iov[i].iov_base = b->bufs + (size_t)i * REQ_LEN;
        b->iov[i].iov_len = REQ_LEN;
    }
}

/* Writes with pattern @seed (or reads) of request i at offset i*REQ_LEN. */
static void batch_submit(Batch *b, bool write, int n, uint8_t seed)
{
    for (int i = 0; i < n; i++) {
        if (write) {
            memset(b->iov[i].iov_base, (uint8_t)(seed + i), REQ_LEN);
            keel_blk_aio_pwritev(b->blk, (int64_t)i * REQ_LEN, &b->iov[i], 1, batch_cb, b);
        } else {
            memset(b->iov[i].iov_base, 0, REQ_LEN);
            keel_blk_aio_preadv(b->blk, (int64_t)i * REQ_LEN, &b->iov[i], 1, batch_cb, b);
        }
    }
}

static bool batch_pattern_ok(Batch *b, int n, uint8_t seed)
{
    for (int i = 0; i < n; i++) {
        const uint8_t *p = b->iov[i].iov_base;
        for (int k = 0; k < REQ_LEN; k++) {
            if (p[k] != (uint8_t)(seed + i)) {
                keel_test_diag("request %d byte %d: got 0x%02x want 0x%02x", i, k, p[k],
                               (uint8_t)(seed + i));
                return false;
            }
        }
    }
    return true;
}

/* ---- drain from the iothread, in and out of a coroutine ------------------------- */

typedef struct InThread {
    Batch *b;
    int completed_after_drain;
    bool in_home;
    int done;                       /* atomic */
} InThread;

static void co_drain_in_iothread(void *opaque)
{
    InThread *it = opaque;

    batch_submit(it->b, false, 50, 0);
    keel_blk_drain(it->b->blk);     /* yields until all 50 are done */
    it->completed_after_drain = __atomic_load_n(&it->b->completed, __ATOMIC_SEQ_CST);
    it->in_home = keel_aio_context_in_home_thread(it->b->expect_ctx);
    __atomic_store_n(&it->done, 1, __ATOMIC_SEQ_CST);
}

static void start_co_in_iothread(void *opaque)
{
    keel_coroutine_enter(keel_coroutine_create(co_drain_in_iothread, opaque));
}

static void drain_in_iothread_no_co(void *opaque)
{
    InThread *it = opaque;

    batch_submit(it->b, false, 50, 0);
    keel_blk_drain(it->b->blk);     /* runs the iothread's loop meanwhile */
    it->completed_after_drain = __atomic_load_n(&it->b->completed, __ATOMIC_SEQ_CST);
    it->in_home = keel_aio_context_in_home_thread(it->b->expect_ctx);
    __atomic_store_n(&it->done, 1, __ATOMIC_SEQ_CST);
}

static void run_config(KeelAioContext *main_ctx, KeelAioContext *io_ctx, const char *dir,
                       const char *config)
{
    char *path = block_test_image(dir, "iothread", IMG_SIZE, NULL);
    char *opts = g_strdup_printf("file=%s,%s", path, config);
    char *errmsg = NULL;
    KeelBlockBackend *blk;
    Batch b;

    keel_test_diag("---- %s", config);
    blk = keel_blk_open_str(opts, io_ctx, &errmsg);
    if (!KEEL_OK(blk, "open %s in the iothread", opts)) {
        keel_test_diag("%s", errmsg);
        goto out;
    }
    KEEL_OK(keel_blk_get_aio_context(blk) == io_ctx, "the backend lives in the iothread (%s)",
            keel_blk_engine_name(blk));

    /* 1. From the main thread: NREQ writes, then drain. */
    batch_init(&b, blk, io_ctx);
    batch_submit(&b, true, NREQ, 0x10);
    keel_blk_drain(blk);
    KEEL_IS(__atomic_load_n(&b.completed, __ATOMIC_SEQ_CST), NREQ,
            "drain from the main thread returns after all %d writes completed", NREQ);
    KEEL_IS(b.errors, 0, "no write failed");
    KEEL_IS(b.wrong_thread, 0, "every callback ran in the iothread");

    b.completed = 0;
    batch_submit(&b, false, NREQ, 0);
    keel_blk_drain(blk);
    KEEL_IS(b.completed, NREQ, "and all %d reads", NREQ);
    KEEL_OK(b.errors == 0 && batch_pattern_ok(&b, NREQ, 0x10), "reads return what was written");

    /* 2. Drain from a coroutine in the iothread. */
    {
        InThread it = { .b = &b };
        b.completed = 0;
        keel_aio_run_in_context_wait(io_ctx, start_co_in_iothread, &it);
        while (!__atomic_load_n(&it.done, __ATOMIC_SEQ_CST)) {
            sched_yield();
        }
        KEEL_IS(it.completed_after_drain, 50, "drain in an iothread coroutine waits for all 50");
        KEEL_OK(it.in_home, "and resumes in the iothread");
    }

    /* 3. Drain from the iothread outside a coroutine (it polls its loop). */
    {
        InThread it = { .b = &b };
        b.completed = 0;
        keel_aio_run_in_context_wait(io_ctx, drain_in_iothread_no_co, &it);
        KEEL_IS(it.completed_after_drain, 50, "drain in the iothread (no coroutine) waits for all 50");
    }

    /* 4. Move to the main context and back, with I/O on both sides. */
    KEEL_IS(keel_blk_set_aio_context(blk, main_ctx, &errmsg), 0, "move to the main context");
    KEEL_OK(keel_blk_get_aio_context(blk) == main_ctx, "now in the main context (%s)",
            keel_blk_engine_name(blk));
    b.expect_ctx = main_ctx;
    b.completed = b.errors = b.wrong_thread = 0;
    batch_submit(&b, true, 100, 0x55);
    keel_blk_drain(blk);
    KEEL_OK(b.completed == 100 && b.errors == 0 && b.wrong_thread == 0,
            "100 writes in the main context, called back in the main thread");
    KEEL_IS(keel_blk_set_aio_context(blk, io_ctx, &errmsg), 0, "move back to the iothread");
    b.expect_ctx = io_ctx;
    b.completed = 0;
    batch_submit(&b, false, 100, 0);
    keel_blk_drain(blk);
    KEEL_OK(b.completed == 100 && b.errors == 0 && b.wrong_thread == 0 &&
            batch_pattern_ok(&b, 100, 0x55), "reads in the iothread see the main thread's writes");

    /* 5. Close with requests in flight: close drains first. */
    b.completed = 0;
    batch_submit(&b, true, NREQ, 0x99);
    keel_blk_close(blk);
    KEEL_IS(__atomic_load_n(&b.completed, __ATOMIC_SEQ_CST), NREQ,
            "close from the main thread completes all %d writes first", NREQ);
    free(b.bufs);
out:
    g_free(errmsg);
    g_free(opts);
    g_free(path);
}

int main(void)
{
    const char *dir_any = block_test_dir_any();
    const char *dir_direct = block_test_dir();
    KeelAioContext *main_ctx;
    KeelIOThread *iothread;

    if (!dir_any) {
        keel_test_skip_all("no writable directory for test images (set KEEL_TEST_DIR)");
    }
    main_ctx = keel_aio_context_new();
    iothread = keel_iothread_new("blk-test");
    if (!iothread) {
        keel_test_skip_all("cannot start an iothread");
    }
    run_config(main_ctx, keel_iothread_get_aio_context(iothread), dir_any,
               "aio=threads,cache=writeback");
    run_config(main_ctx, keel_iothread_get_aio_context(iothread), dir_any,
               "aio=io_uring,cache=writeback");
    if (dir_direct) {
        run_config(main_ctx, keel_iothread_get_aio_context(iothread), dir_direct,
                   "aio=io_uring,cache=none");
        run_config(main_ctx, keel_iothread_get_aio_context(iothread), dir_direct,
                   "aio=native,cache=none");
    } else {
        keel_test_skip("O_DIRECT configurations: no directory supports O_DIRECT");
    }
    keel_iothread_free(iothread);
    keel_aio_context_unref(main_ctx);
    return keel_test_done();
}
