/*
 * One backend, several submitting contexts (keel_blk_attach_aio_context):
 * the main thread (the home) and two, then four iothreads submit
 * interleaved writes, each read back from its write's callback, all at
 * once, on every engine the machine has.  Asserted: data read back equals
 * data written (by each thread, and by the home over everyone's blocks);
 * every callback ran exactly once, in the thread that submitted it; each
 * context got the same engine as the home; a drain from the main thread
 * waits for every context; unaligned writes from two threads into the
 * same O_DIRECT blocks (read-modify-write) serialise, so both threads'
 * bytes survive; a "once" error rule fires for exactly one request of
 * all threads; the request counter counts every thread's requests;
 * after a detach the thread's requests are forwarded to the home again;
 * close works after detaching and with contexts still attached;
 * keel_blk_co_* works in an attached iothread's coroutine and sees a
 * keel_blk_grow made by the main thread meanwhile.
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

#define BLK 4096
#define PER_WORKER 48               /* blocks each submitter writes and reads back */
#define MAX_IOTHREADS 4
#define MAX_SUBMITTERS (MAX_IOTHREADS + 1)
#define RMW_ITER 300                /* unaligned writes per thread */
#define RMW_BLOCKS 4
#define RMW_BASE ((int64_t)MAX_SUBMITTERS * PER_WORKER * BLK)
#define IMG_SIZE (RMW_BASE + RMW_BLOCKS * BLK)

/* ---- interleaved writes and reads -------------------------------------------- */

typedef struct Worker Worker;

typedef struct Req {
    Worker *w;
    int idx;                        /* block index within the worker */
    bool write;
    int calls;                      /* atomic: times the callback ran */
    struct iovec iov;
} Req;

struct Worker {
    KeelBlockBackend *blk;
    KeelAioContext *ctx;            /* callbacks must run in its home thread */
    int id, stride;                 /* block i is at (i * stride + id) * BLK */
    uint8_t seed;
    uint8_t *wbuf, *rbuf;
    Req wreq[PER_WORKER], rreq[PER_WORKER];
    int started;                    /* atomic */
    int completed;                  /* atomic */
    int errors;                     /* atomic */
    int wrong_thread;               /* atomic */
    int mismatches;                 /* atomic */
};

static int64_t worker_offset(const Worker *w, int i)
{
    return ((int64_t)i * w->stride + w->id) * BLK;
}

static void fill_block(uint8_t *buf, int id, int i, uint8_t seed)
{
    for (int k = 0; k < BLK; k++) {
        buf[k] = (uint8_t)(seed * 13 + id * 31 + i * 7 + k / 64);
    }
}

static void req_cb(void *opaque, int ret)
{
    Req *r = opaque;
    Worker *w = r->w;

    __atomic_add_fetch(&r->calls, 1, __ATOMIC_SEQ_CST);
    if (!keel_aio_context_in_home_thread(w->ctx)) {
        __atomic_add_fetch(&w->wrong_thread, 1, __ATOMIC_SEQ_CST);
    }
    if (ret < 0) {
        __atomic_add_fetch(&w->errors, 1, __ATOMIC_SEQ_CST);
    } else if (r->write) {
        /* Read it back from the callback, in the same thread. */
        Req *rd = &w->rreq[r->idx];
        memset(rd->iov.iov_base, 0, BLK);
        keel_blk_aio_preadv(w->blk, worker_offset(w, r->idx), &rd->iov, 1, req_cb, rd);
    } else if (memcmp(r->iov.iov_base, w->wreq[r->idx].iov.iov_base, BLK)) {
        __atomic_add_fetch(&w->mismatches, 1, __ATOMIC_SEQ_CST);
    }
    __atomic_add_fetch(&w->completed, 1, __ATOMIC_SEQ_CST);
}

static void worker_init(Worker *w, KeelBlockBackend *blk, KeelAioContext *ctx, int id,
                        int stride, uint8_t seed)
{
    memset(w, 0, sizeof(*w));
    w->blk = blk;
    w->ctx = ctx;
    w->id = id;
    w->stride = stride;
    w->seed = seed;
    if (posix_memalign((void **)&w->wbuf, BLK, PER_WORKER * BLK) ||
        posix_memalign((void **)&w->rbuf, BLK, PER_WORKER * BLK)) {
        abort();
    }
    for (int i = 0; i < PER_WORKER; i++) {
        w->wreq[i] = (Req) { .w = w, .idx = i, .write = true,
                             .iov = { w->wbuf + (size_t)i * BLK, BLK } };
        w->rreq[i] = (Req) { .w = w, .idx = i, .write = false,
                             .iov = { w->rbuf + (size_t)i * BLK, BLK } };
        fill_block(w->wbuf + (size_t)i * BLK, id, i, seed);
    }
}

/* In the worker's thread: every write at once (one plugged batch). */
static void worker_start(void *opaque)
{
    Worker *w = opaque;

    keel_blk_io_plug();
    for (int i = 0; i < PER_WORKER; i++) {
        keel_blk_aio_pwritev(w->blk, worker_offset(w, i), &w->wreq[i].iov, 1, req_cb,
                             &w->wreq[i]);
    }
    keel_blk_io_unplug();
    __atomic_store_n(&w->started, 1, __ATOMIC_SEQ_CST);
}

/* The main thread (w[0]) and @n iothreads (w[1..n]) start their writes at
 * once; returns when each has submitted them all. */
static void start_all(Worker *w, KeelBlockBackend *blk, KeelAioContext *main_ctx,
                      KeelAioContext **io_ctx, int n, uint8_t seed)
{
    worker_init(&w[0], blk, main_ctx, 0, n + 1, seed);
    for (int i = 0; i < n; i++) {
        worker_init(&w[i + 1], blk, io_ctx[i], i + 1, n + 1, seed);
        keel_aio_bh_schedule_oneshot(io_ctx[i], worker_start, &w[i + 1]);
    }
    worker_start(&w[0]);
    for (int i = 0; i <= n; i++) {
        while (!__atomic_load_n(&w[i].started, __ATOMIC_SEQ_CST)) {
            sched_yield();
        }
    }
}

static void workers_free(Worker *w, int n)
{
    for (int i = 0; i < n; i++) {
        free(w[i].wbuf);
        free(w[i].rbuf);
    }
}

/* Every callback once, in the right thread, no error, data equal. */
static void check_workers(Worker *w, int n, const char *what)
{
    int completed = 0, wrong = 0, errors = 0, mismatches = 0, not_once = 0;

    for (int i = 0; i < n; i++) {
        completed += __atomic_load_n(&w[i].completed, __ATOMIC_SEQ_CST);
        wrong += w[i].wrong_thread;
        errors += w[i].errors;
        mismatches += w[i].mismatches;
        for (int k = 0; k < PER_WORKER; k++) {
            not_once += w[i].wreq[k].calls != 1;
            not_once += w[i].rreq[k].calls != 1;
        }
    }
    KEEL_IS(completed, n * 2 * PER_WORKER, "%s: drain from the main thread returned after "
            "all %d requests of %d threads", what, n * 2 * PER_WORKER, n);
    KEEL_IS(not_once, 0, "%s: every callback ran exactly once", what);
    KEEL_IS(wrong, 0, "%s: every callback ran in the thread that submitted it", what);
    KEEL_IS(errors, 0, "%s: no request failed", what);
    KEEL_IS(mismatches, 0, "%s: each thread read back what it wrote", what);
}

/* ---- read everything back from the home thread -------------------------------- */

typedef struct HomeRead {
    int done;
    int errors;
} HomeRead;

static void home_read_cb(void *opaque, int ret)
{
    HomeRead *h = opaque;

    h->done++;
    h->errors += ret < 0;
}

static bool home_reads_match(KeelBlockBackend *blk, KeelAioContext *main_ctx, Worker *w, int n)
{
    uint8_t *buf;
    struct iovec *iov = g_new(struct iovec, (size_t)n * PER_WORKER);
    HomeRead h = { 0, 0 };
    bool ok = true;

    if (posix_memalign((void **)&buf, BLK, (size_t)n * PER_WORKER * BLK)) {
        abort();
    }
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < PER_WORKER; k++) {
            struct iovec *v = &iov[i * PER_WORKER + k];
            v->iov_base = buf + ((size_t)i * PER_WORKER + k) * BLK;
            v->iov_len = BLK;
            keel_blk_aio_preadv(blk, worker_offset(&w[i], k), v, 1, home_read_cb, &h);
        }
    }
    while (h.done < n * PER_WORKER) {
        keel_aio_poll(main_ctx, true);
    }
    for (int i = 0; i < n && ok; i++) {
        for (int k = 0; k < PER_WORKER && ok; k++) {
            if (memcmp(iov[i * PER_WORKER + k].iov_base, w[i].wreq[k].iov.iov_base, BLK)) {
                keel_test_diag("thread %d block %d differs when read from the home", i, k);
                ok = false;
            }
        }
    }
    free(buf);
    g_free(iov);
    return ok && h.errors == 0;
}

/* ---- unaligned writes into the same blocks from two threads --------------------- */

typedef struct RmwWorker {
    KeelBlockBackend *blk;
    KeelAioContext *ctx;
    int id;                         /* 0 or 1: which byte range of each block */
    int iter;                       /* the write (or its read-back) in flight */
    bool reading;
    uint8_t buf[1024], rbuf[1024];
    struct iovec iov;
    int calls[RMW_ITER];            /* atomic: write callbacks per iteration */
    int wrong_thread, errors;       /* atomic */
    int lost;                       /* atomic: read-backs missing our own bytes */
    int ready, done;                /* atomic */
    struct RmwWorker *peer;
} RmwWorker;

/* Each thread's range of a block: unaligned, both inside its first 512 bytes
 * (one logical block whatever the O_DIRECT alignment). */
static const int rmw_start[2] = { 37, 250 };
static const int rmw_len[2] = { 200, 230 };

static void rmw_submit(RmwWorker *r);

static int64_t rmw_offset(const RmwWorker *r)
{
    return RMW_BASE + (int64_t)(r->iter % RMW_BLOCKS) * BLK + rmw_start[r->id];
}

static uint8_t rmw_pattern(int id, int iter)
{
    return (uint8_t)(1 + id * 100 + iter % 97);
}

/* Write, read our range back (another thread's read-modify-write that was
 * not serialised against ours would have put stale bytes there), next. */
static void rmw_cb(void *opaque, int ret)
{
    RmwWorker *r = opaque;

    if (!keel_aio_context_in_home_thread(r->ctx)) {
        __atomic_add_fetch(&r->wrong_thread, 1, __ATOMIC_SEQ_CST);
    }
    if (ret < 0) {
        __atomic_add_fetch(&r->errors, 1, __ATOMIC_SEQ_CST);
    }
    if (!r->reading) {
        __atomic_add_fetch(&r->calls[r->iter], 1, __ATOMIC_SEQ_CST);
        r->reading = true;
        r->iov.iov_base = r->rbuf;
        keel_blk_aio_preadv(r->blk, rmw_offset(r), &r->iov, 1, rmw_cb, r);
        return;
    }
    for (int k = 0; k < rmw_len[r->id]; k++) {
        if (r->rbuf[k] != rmw_pattern(r->id, r->iter)) {
            __atomic_add_fetch(&r->lost, 1, __ATOMIC_SEQ_CST);
            break;
        }
    }
    r->reading = false;
    if (++r->iter < RMW_ITER) {
        rmw_submit(r);
    } else {
        __atomic_store_n(&r->done, 1, __ATOMIC_SEQ_CST);
    }
}

/* One write at a time per thread: only the two threads overlap. */
static void rmw_submit(RmwWorker *r)
{
    memset(r->buf, rmw_pattern(r->id, r->iter), (size_t)rmw_len[r->id]);
    r->iov.iov_base = r->buf;
    r->iov.iov_len = (size_t)rmw_len[r->id];
    keel_blk_aio_pwritev(r->blk, rmw_offset(r), &r->iov, 1, rmw_cb, r);
}

static void rmw_start_bh(void *opaque)
{
    RmwWorker *r = opaque;

    /* Start together, so that the two threads hit the same blocks at the
     * same time. */
    __atomic_store_n(&r->ready, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&r->peer->ready, __ATOMIC_SEQ_CST)) {
        sched_yield();
    }
    rmw_submit(r);
}

typedef struct CoRead {
    KeelBlockBackend *blk;
    int64_t offset;
    void *buf;
    size_t len;
    int ret;
} CoRead;

static void co_read(void *opaque)
{
    CoRead *c = opaque;
    c->ret = keel_blk_co_pread(c->blk, c->offset, c->buf, c->len);
}

static void run_rmw(KeelBlockBackend *blk, KeelAioContext *main_ctx, KeelAioContext *ctx[2])
{
    RmwWorker *r = g_new0(RmwWorker, 2);
    uint8_t *blocks = g_malloc(RMW_BLOCKS * BLK);
    CoRead c = { blk, RMW_BASE, blocks, RMW_BLOCKS * BLK, 0 };
    int bad_bytes = 0, not_once = 0;

    for (int i = 0; i < 2; i++) {
        r[i].blk = blk;
        r[i].ctx = ctx[i];
        r[i].id = i;
        r[i].peer = &r[1 - i];
        keel_aio_bh_schedule_oneshot(ctx[i], rmw_start_bh, &r[i]);
    }
    for (int i = 0; i < 2; i++) {
        while (!__atomic_load_n(&r[i].done, __ATOMIC_SEQ_CST)) {
            sched_yield();
        }
        for (int k = 0; k < RMW_ITER; k++) {
            not_once += r[i].calls[k] != 1;
        }
    }
    keel_blk_drain(blk);
    block_test_run_co(main_ctx, co_read, &c);
    for (int b = 0; b < RMW_BLOCKS; b++) {
        const uint8_t *p = blocks + b * BLK;
        for (int k = 0; k < BLK; k++) {
            uint8_t want = 0;
            for (int i = 0; i < 2; i++) {
                if (k >= rmw_start[i] && k < rmw_start[i] + rmw_len[i]) {
                    /* The last iteration that wrote block b. */
                    int last = RMW_ITER - 1 - ((RMW_ITER - 1 - b) % RMW_BLOCKS);
                    want = rmw_pattern(i, last);
                }
            }
            if (p[k] != want && bad_bytes++ == 0) {
                keel_test_diag("block %d byte %d: 0x%02x, want 0x%02x", b, k, p[k], want);
            }
        }
    }
    KEEL_OK(not_once == 0 && r[0].wrong_thread + r[1].wrong_thread == 0 &&
            r[0].errors + r[1].errors == 0,
            "unaligned writes from two threads: each called back once, in its thread, no error");
    KEEL_OK(r[0].lost + r[1].lost == 0, "each thread reads back its own bytes after each "
            "of its %d writes (%d lost)", RMW_ITER, r[0].lost + r[1].lost);
    KEEL_OK(c.ret == 0 && bad_bytes == 0,
            "both threads' bytes survive in the shared blocks (read-modify-writes serialised; "
            "%d bad bytes)", bad_bytes);
    g_free(blocks);
    g_free(r);
}

/* ---- error injection: "once" over every thread ----------------------------------- */

typedef struct OnceWorker {
    KeelBlockBackend *blk;
    KeelAioContext *ctx;
    uint8_t *buf;
    struct iovec iov[32];
    int completed, eio, wrong_thread;   /* atomic */
} OnceWorker;

static void once_cb(void *opaque, int ret)
{
    OnceWorker *o = opaque;

    if (ret == -EIO) {
        __atomic_add_fetch(&o->eio, 1, __ATOMIC_SEQ_CST);
    }
    if (!keel_aio_context_in_home_thread(o->ctx)) {
        __atomic_add_fetch(&o->wrong_thread, 1, __ATOMIC_SEQ_CST);
    }
    __atomic_add_fetch(&o->completed, 1, __ATOMIC_SEQ_CST);
}

static void once_start(void *opaque)
{
    OnceWorker *o = opaque;

    for (int i = 0; i < 32; i++) {
        keel_blk_aio_preadv(o->blk, (int64_t)i * BLK, &o->iov[i], 1, once_cb, o);
    }
}

static void run_once_rule(KeelAioContext **io_ctx, int n, const char *path, const char *config)
{
    char *opts = g_strdup_printf("file=%s,%s,inject=read:EIO:once", path, config);
    char *errmsg = NULL;
    KeelBlockBackend *blk = keel_blk_open_str(opts, NULL, &errmsg);
    OnceWorker *o = g_new0(OnceWorker, n);
    int eio = 0, completed = 0, wrong = 0;

    if (!KEEL_OK(blk, "open with inject=read:EIO:once")) {
        keel_test_diag("%s", errmsg);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        o[i].blk = blk;
        o[i].ctx = io_ctx[i];
        if (posix_memalign((void **)&o[i].buf, BLK, 32 * BLK)) {
            abort();
        }
        for (int k = 0; k < 32; k++) {
            o[i].iov[k] = (struct iovec) { o[i].buf + (size_t)k * BLK, BLK };
        }
        keel_blk_attach_aio_context(blk, io_ctx[i], &errmsg);
        keel_aio_bh_schedule_oneshot(io_ctx[i], once_start, &o[i]);
    }
    for (int i = 0; i < n; i++) {
        while (__atomic_load_n(&o[i].completed, __ATOMIC_SEQ_CST) < 32) {
            sched_yield();
        }
        eio += o[i].eio;
        completed += o[i].completed;
        wrong += o[i].wrong_thread;
    }
    KEEL_OK(eio == 1 && completed == 32 * n && wrong == 0,
            "%d threads, 32 reads each: the once rule failed exactly one (%d)", n, eio);
    KEEL_IS(keel_blk_get_request_count(blk), (uint64_t)(32 * n),
            "the request counter counts every thread's requests");
    keel_blk_close(blk);
    for (int i = 0; i < n; i++) {
        free(o[i].buf);
    }
out:
    g_free(o);
    g_free(opts);
    g_free(errmsg);
}

/* ---- coroutine API in an attached iothread, and a grow from main ------------------- */

typedef struct GrowCo {
    KeelBlockBackend *blk;
    KeelAioContext *ctx;
    int64_t old_end;
    int before, after, readback;    /* results */
    bool in_thread;
    int grown;                      /* atomic: set by main after the grow */
    int done;                       /* atomic */
} GrowCo;

static void grow_co(void *opaque)
{
    GrowCo *g = opaque;
    uint8_t *buf, *rbuf;

    if (posix_memalign((void **)&buf, BLK, BLK) || posix_memalign((void **)&rbuf, BLK, BLK)) {
        abort();
    }
    memset(buf, 0x5a, BLK);
    g->before = keel_blk_co_pwrite(g->blk, g->old_end, buf, BLK);
    __atomic_store_n(&g->done, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&g->grown, __ATOMIC_SEQ_CST)) {
        sched_yield();
    }
    g->after = keel_blk_co_pwrite(g->blk, g->old_end, buf, BLK);
    g->readback = keel_blk_co_pread(g->blk, g->old_end, rbuf, BLK);
    if (g->readback == 0 && memcmp(buf, rbuf, BLK)) {
        g->readback = -EILSEQ;
    }
    g->in_thread = keel_aio_context_in_home_thread(g->ctx);
    free(buf);
    free(rbuf);
    __atomic_store_n(&g->done, 2, __ATOMIC_SEQ_CST);
}

static void grow_co_start(void *opaque)
{
    keel_coroutine_enter(keel_coroutine_create(grow_co, opaque));
}

/* fixed-size=on: a write past the end fails -EIO in the iothread until the
 * main thread grows the disk; then it lands.  keel_blk_co_* in an attached
 * iothread's coroutine. */
static void run_grow(KeelAioContext *io_ctx, const char *path, const char *config)
{
    char *opts = g_strdup_printf("file=%s,%s,fixed-size=on", path, config);
    char *errmsg = NULL;
    KeelBlockBackend *blk = keel_blk_open_str(opts, NULL, &errmsg);
    GrowCo g = { 0 };

    if (!KEEL_OK(blk, "open with fixed-size=on")) {
        keel_test_diag("%s", errmsg);
        g_free(errmsg);
        g_free(opts);
        return;
    }
    g.blk = blk;
    g.ctx = io_ctx;
    g.old_end = keel_blk_getlength(blk);
    keel_blk_attach_aio_context(blk, io_ctx, &errmsg);
    keel_aio_bh_schedule_oneshot(io_ctx, grow_co_start, &g);
    while (__atomic_load_n(&g.done, __ATOMIC_SEQ_CST) < 1) {
        sched_yield();
    }
    KEEL_IS(keel_blk_grow(blk, (uint64_t)g.old_end + BLK), 0,
            "grow from the main thread while the iothread's coroutine waits");
    __atomic_store_n(&g.grown, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&g.done, __ATOMIC_SEQ_CST) < 2) {
        sched_yield();
    }
    KEEL_OK(g.before == -EIO && g.after == 0 && g.readback == 0 && g.in_thread,
            "keel_blk_co_* in an attached iothread: past the end -EIO (%d), after the grow "
            "written (%d) and read back (%d) there", g.before, g.after, g.readback);
    keel_blk_close(blk);
    g_free(opts);
}

/* ---- one engine configuration, @n iothreads -------------------------------------- */

typedef struct ForwardCheck {
    KeelBlockBackend *blk;
    KeelAioContext *main_ctx;
    void *buf;
    struct iovec iov;
    int in_main;                    /* atomic: -1 until called */
} ForwardCheck;

static void forward_cb(void *opaque, int ret)
{
    ForwardCheck *f = opaque;

    __atomic_store_n(&f->in_main, ret == 0 && keel_aio_context_in_home_thread(f->main_ctx),
                     __ATOMIC_SEQ_CST);
}

static void forward_submit(void *opaque)
{
    ForwardCheck *f = opaque;

    keel_blk_aio_preadv(f->blk, 0, &f->iov, 1, forward_cb, f);
}

static void run_config(KeelAioContext *main_ctx, KeelAioContext **io_ctx, int n,
                       const char *dir, const char *config)
{
    char *path = block_test_image(dir, "mq", IMG_SIZE, NULL);
    char *opts = g_strdup_printf("file=%s,%s", path, config);
    char *errmsg = NULL;
    Worker *w = g_new0(Worker, n + 1);
    KeelBlockBackend *blk;
    char what[96];
    int attach_fail = 0, same_engine = 0;

    keel_test_diag("---- %s, %d iothreads", config, n);
    blk = keel_blk_open_str(opts, main_ctx, &errmsg);
    if (!KEEL_OK(blk, "open %s (home: the main thread)", config)) {
        keel_test_diag("%s", errmsg);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        attach_fail += keel_blk_attach_aio_context(blk, io_ctx[i], &errmsg) != 0;
        attach_fail += strcmp(keel_blk_engine_name_in(blk, io_ctx[i]), "none") != 0;
    }
    KEEL_IS(attach_fail, 0, "%d iothreads attached; no engine set up before their first "
            "request", n);

    /* 1. The main thread and every iothread at once; drain from main. */
    snprintf(what, sizeof(what), "%s, main + %d iothreads", config, n);
    start_all(w, blk, main_ctx, io_ctx, n, 0x11);
    keel_blk_drain(blk);
    check_workers(w, n + 1, what);
    KEEL_IS(keel_blk_get_request_count(blk), (uint64_t)((n + 1) * 2 * PER_WORKER),
            "%s: the request counter counts every context's requests", what);
    for (int i = 0; i < n; i++) {
        same_engine += !strcmp(keel_blk_engine_name_in(blk, io_ctx[i]),
                               keel_blk_engine_name(blk));
        keel_test_diag("iothread %d: engine %s (home: %s)", i,
                       keel_blk_engine_name_in(blk, io_ctx[i]), keel_blk_engine_name(blk));
    }
    KEEL_IS(same_engine, n, "each iothread has its own instance of the home's engine (%s)",
            keel_blk_engine_name(blk));
    KEEL_OK(home_reads_match(blk, main_ctx, w, n + 1),
            "%s: the home reads every thread's blocks as written", what);

    /* 2. Unaligned writes into the same blocks from two iothreads. */
    run_rmw(blk, main_ctx, io_ctx);

    if (n == 2) {
        /* 3. Detach, then requests from the iothread go to the home again. */
        ForwardCheck f = { blk, main_ctx, NULL, { NULL, BLK }, -1 };
        for (int i = 0; i < n; i++) {
            keel_blk_detach_aio_context(blk, io_ctx[i]);
        }
        KEEL_OK(!strcmp(keel_blk_engine_name_in(blk, io_ctx[0]), "none") &&
                !strcmp(keel_blk_engine_name_in(blk, io_ctx[1]), "none"),
                "detached: the iothreads' engine instances are gone");
        if (posix_memalign(&f.buf, BLK, BLK)) {
            abort();
        }
        f.iov.iov_base = f.buf;
        keel_aio_bh_schedule_oneshot(io_ctx[0], forward_submit, &f);
        while (__atomic_load_n(&f.in_main, __ATOMIC_SEQ_CST) < 0) {
            keel_aio_poll(main_ctx, true);
        }
        KEEL_IS(f.in_main, 1, "after the detach, an iothread's request calls back in the home");
        free(f.buf);
        keel_blk_close(blk);
        KEEL_OK(1, "close after detaching");
    } else {
        /* 3. Close with every context attached and requests in flight. */
        workers_free(w, n + 1);
        start_all(w, blk, main_ctx, io_ctx, n, 0x77);
        keel_blk_close(blk);
        snprintf(what, sizeof(what), "%s, close while attached", config);
        check_workers(w, n + 1, what);
    }
    workers_free(w, n + 1);
    run_once_rule(io_ctx, n, path, config);
    run_grow(io_ctx[n - 1], path, config);
out:
    g_free(w);
    g_free(errmsg);
    g_free(opts);
    g_free(path);
}

int main(void)
{
    const char *dir_any = block_test_dir_any();
    const char *dir_direct = block_test_dir();
    KeelIOThread *iothread[MAX_IOTHREADS];
    KeelAioContext *io_ctx[MAX_IOTHREADS];
    KeelAioContext *main_ctx;
    static const char *const buffered[] = { "aio=threads,cache=writeback",
                                            "aio=io_uring,cache=writeback" };
    static const char *const direct[] = { "aio=io_uring,cache=none", "aio=native,cache=none",
                                          "aio=threads,cache=none" };

    if (!dir_any) {
        keel_test_skip_all("no writable directory for test images (set KEEL_TEST_DIR)");
    }
    main_ctx = keel_aio_context_new();
    for (int i = 0; i < MAX_IOTHREADS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "mq-%d", i);
        iothread[i] = keel_iothread_new(name);
        if (!iothread[i]) {
            keel_test_skip_all("cannot start an iothread");
        }
        io_ctx[i] = keel_iothread_get_aio_context(iothread[i]);
    }
    for (int n = 2; n <= MAX_IOTHREADS; n += 2) {
        for (size_t c = 0; c < G_N_ELEMENTS(buffered); c++) {
            run_config(main_ctx, io_ctx, n, dir_any, buffered[c]);
        }
        if (dir_direct) {
            for (size_t c = 0; c < G_N_ELEMENTS(direct); c++) {
                run_config(main_ctx, io_ctx, n, dir_direct, direct[c]);
            }
        } else {
            keel_test_skip("O_DIRECT configurations: no directory supports O_DIRECT");
        }
    }
    for (int i = 0; i < MAX_IOTHREADS; i++) {
        keel_iothread_free(iothread[i]);
    }
    keel_aio_context_unref(main_ctx);
    return keel_test_done();
}
