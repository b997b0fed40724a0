/*
 * The block backend: options, request accounting, drain, moving between
 * AioContexts, and the callback API over the coroutine API.
 */
#include "config.h"

#include "block/block-int.h"
#include "compat/osdep.h"
#include "loop/iothread.h"

#include <errno.h>
#include <sys/stat.h>
#include <glib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct KeelBlockBackend {
    KeelAioContext *ctx;        /* home; referenced; written only while drained */
    KeelBlkOptions opts;        /* a private copy */
    RawFile raw;
    Blkdebug *dbg;
    uint64_t requests;          /* started so far (home thread) */
    int in_flight;              /* atomic */
    KeelCoQueue drain_waiters;  /* coroutines of the home thread */
    /* Threads other than the home thread wait here for in_flight == 0. */
    int foreign_waiters;        /* atomic */
    pthread_mutex_t lock;
    pthread_cond_t idle;
};

/* ---- options ------------------------------------------------------------------ */

static const char *const aio_names[] = {
    [KEEL_BLK_AIO_IO_URING] = "io_uring",
    [KEEL_BLK_AIO_NATIVE] = "native",
    [KEEL_BLK_AIO_THREADS] = "threads",
};

static const char *const cache_names[] = {
    [KEEL_BLK_CACHE_WRITEBACK] = "writeback",
    [KEEL_BLK_CACHE_NONE] = "none",
    [KEEL_BLK_CACHE_WRITETHROUGH] = "writethrough",
    [KEEL_BLK_CACHE_DIRECTSYNC] = "directsync",
    [KEEL_BLK_CACHE_UNSAFE] = "unsafe",
};

const char *keel_blk_aio_name(KeelBlkAio aio)
{
    return (unsigned)aio < G_N_ELEMENTS(aio_names) ? aio_names[aio] : "?";
}

const char *keel_blk_cache_name(KeelBlkCache cache)
{
    return (unsigned)cache < G_N_ELEMENTS(cache_names) ? cache_names[cache] : "?";
}

int keel_blk_aio_from_name(const char *name, KeelBlkAio *aio)
{
    for (size_t i = 0; i < G_N_ELEMENTS(aio_names); i++) {
        if (!strcmp(name, aio_names[i])) {
            *aio = (KeelBlkAio)i;
            return 0;
        }
    }
    if (!strcmp(name, "linux-aio")) {
        *aio = KEEL_BLK_AIO_NATIVE;
        return 0;
    }
    return -1;
}

int keel_blk_detect_zeroes_from_name(const char *name, KeelBlkDetectZeroes *dz)
{
    if (!strcmp(name, "off")) {
        *dz = KEEL_BLK_DETECT_ZEROES_OFF;
    } else if (!strcmp(name, "on")) {
        *dz = KEEL_BLK_DETECT_ZEROES_ON;
    } else if (!strcmp(name, "unmap")) {
        *dz = KEEL_BLK_DETECT_ZEROES_UNMAP;
    } else {
        return -1;
    }
    return 0;
}

int keel_blk_locking_from_name(const char *name, KeelBlkLocking *locking)
{
    if (!strcmp(name, "on")) {
        *locking = KEEL_BLK_LOCKING_ON;
    } else if (!strcmp(name, "off")) {
        *locking = KEEL_BLK_LOCKING_OFF;
    } else if (!strcmp(name, "auto")) {
        *locking = KEEL_BLK_LOCKING_AUTO;
    } else {
        return -1;
    }
    return 0;
}

int keel_blk_cache_from_name(const char *name, KeelBlkCache *cache)
{
    for (size_t i = 0; i < G_N_ELEMENTS(cache_names); i++) {
        if (!strcmp(name, cache_names[i])) {
            *cache = (KeelBlkCache)i;
            return 0;
        }
    }
    return -1;
}

void keel_blk_options_init(KeelBlkOptions *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->aio = KEEL_BLK_AIO_IO_URING;
    opts->cache = KEEL_BLK_CACHE_WRITEBACK;
}

void keel_blk_options_clear(KeelBlkOptions *opts)
{
    g_free(opts->filename);
    g_free(opts->inject);
    opts->filename = NULL;
    opts->inject = NULL;
}

static int parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1")) {
        *out = true;
        return 0;
    }
    if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0")) {
        *out = false;
        return 0;
    }
    return -1;
}

/* Split "a=b,c=d" honouring ",," as a literal comma. */
static GPtrArray *split_options(const char *str)
{
    GPtrArray *items = g_ptr_array_new_with_free_func(g_free);
    GString *cur = g_string_new(NULL);

    for (const char *p = str;; p++) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(cur, ',');
            p++;
        } else if (*p == ',' || *p == '\0') {
            g_ptr_array_add(items, g_string_free(cur, FALSE));
            if (*p == '\0') {
                break;
            }
            cur = g_string_new(NULL);
        } else {
            g_string_append_c(cur, *p);
        }
    }
    return items;
}

int keel_blk_options_parse(KeelBlkOptions *opts, const char *str, char **errmsg)
{
    GPtrArray *items = split_options(str);
    int ret = -1;

    for (guint i = 0; i < items->len; i++) {
        char *item = items->pdata[i];
        char *value = strchr(item, '=');

        if (!*item) {
            continue;
        }
        if (!value) {
            if (i == 0) {
                g_free(opts->filename);
                opts->filename = g_strdup(item);
                continue;
            }
            if (!strcmp(item, "readonly")) {
                opts->readonly = true;
                continue;
            }
            *errmsg = g_strdup_printf("drive option '%s' needs a value (key=value)", item);
            goto out;
        }
        *value++ = '\0';
        if (!strcmp(item, "file")) {
            if (!*value) {
                *errmsg = g_strdup("file= needs a file name");
                goto out;
            }
            g_free(opts->filename);
            opts->filename = g_strdup(value);
        } else if (!strcmp(item, "aio")) {
            if (keel_blk_aio_from_name(value, &opts->aio) < 0) {
                *errmsg = g_strdup_printf("invalid aio option '%s' (io_uring, native or threads)",
                                          value);
                goto out;
            }
        } else if (!strcmp(item, "cache")) {
            if (keel_blk_cache_from_name(value, &opts->cache) < 0) {
                *errmsg = g_strdup_printf("invalid cache option '%s' (none, writeback, "
                                          "writethrough, directsync or unsafe)", value);
                goto out;
            }
        } else if (!strcmp(item, "readonly") || !strcmp(item, "read-only")) {
            if (parse_bool(value, &opts->readonly) < 0) {
                *errmsg = g_strdup_printf("invalid readonly option '%s' (on or off)", value);
                goto out;
            }
        } else if (!strcmp(item, "discard")) {
            if (!strcmp(value, "unmap") || !strcmp(value, "on")) {
                opts->discard_unmap = true;
            } else if (!strcmp(value, "ignore") || !strcmp(value, "off")) {
                opts->discard_unmap = false;
            } else {
                *errmsg = g_strdup_printf("invalid discard option '%s' (unmap or ignore)", value);
                goto out;
            }
        } else if (!strcmp(item, "format")) {
            if (!strcmp(value, "raw")) {
                opts->probe_format = false;
            } else if (!strcmp(value, "probe")) {
                opts->probe_format = true;
            } else {
                *errmsg = g_strdup_printf("format=%s: keel serves raw images only "
                                          "(raw, or probe to check the magic)", value);
                goto out;
            }
        } else if (!strcmp(item, "locking") || !strcmp(item, "file.locking")) {
            if (keel_blk_locking_from_name(value, &opts->locking) < 0) {
                *errmsg = g_strdup_printf("invalid locking option '%s' (on, off or auto)", value);
                goto out;
            }
        } else if (!strcmp(item, "force-share") || !strcmp(item, "cache.no-flush") ||
                   !strcmp(item, "fixed-size")) {
            bool *field = !strcmp(item, "force-share") ? &opts->force_share
                          : item[0] == 'f' ? &opts->fixed_size : &opts->no_flush;
            if (parse_bool(value, field) < 0) {
                *errmsg = g_strdup_printf("invalid %s option '%s' (on or off)", item, value);
                goto out;
            }
        } else if (!strcmp(item, "detect-zeroes")) {
            if (keel_blk_detect_zeroes_from_name(value, &opts->detect_zeroes) < 0) {
                *errmsg = g_strdup_printf("invalid detect-zeroes option '%s' (off, on or unmap)",
                                          value);
                goto out;
            }
        } else if (!strcmp(item, "offset") || !strcmp(item, "size")) {
            char *end;
            guint64 v = g_ascii_strtoull(value, &end, 0);
            if (!*value || *end || v > INT64_MAX) {
                *errmsg = g_strdup_printf("invalid %s option '%s' (bytes)", item, value);
                goto out;
            }
            *(item[0] == 'o' ? &opts->offset : &opts->size) = (int64_t)v;
        } else if (!strcmp(item, "inject")) {
            Blkdebug *check = NULL;
            if (blkdebug_add_rules(&check, value, errmsg) < 0) {
                goto out;
            }
            blkdebug_free(check);
            char *joined = opts->inject ? g_strconcat(opts->inject, ";", value, NULL)
                                        : g_strdup(value);
            g_free(opts->inject);
            opts->inject = joined;
        } else {
            *errmsg = g_strdup_printf("unknown drive option '%s' (file, aio, cache, readonly, "
                                      "discard, detect-zeroes, format, locking, "
                                      "force-share, cache.no-flush, offset, size, inject)", item);
            goto out;
        }
    }
    ret = 0;
out:
    g_ptr_array_free(items, TRUE);
    return ret;
}

/* ---- in-flight accounting and drain --------------------------------------- */

static void blk_inc_in_flight(KeelBlockBackend *blk)
{
    __atomic_add_fetch(&blk->in_flight, 1, __ATOMIC_SEQ_CST);
}

/* Home thread. */
static void blk_dec_in_flight(KeelBlockBackend *blk)
{
    if (__atomic_sub_fetch(&blk->in_flight, 1, __ATOMIC_SEQ_CST) != 0) {
        return;
    }
    if (!keel_co_queue_empty(&blk->drain_waiters)) {
        keel_co_queue_restart_all(&blk->drain_waiters);
    }
    /* Pairs with the waiter's increment of foreign_waiters before it reads
     * in_flight: one of us sees the other. */
    if (__atomic_load_n(&blk->foreign_waiters, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&blk->lock);
        pthread_cond_broadcast(&blk->idle);
        pthread_mutex_unlock(&blk->lock);
    }
}

static bool blk_busy(KeelBlockBackend *blk)
{
    return __atomic_load_n(&blk->in_flight, __ATOMIC_SEQ_CST) != 0;
}

void keel_blk_drain(KeelBlockBackend *blk)
{
    KeelAioContext *ctx = blk->ctx;

    if (keel_aio_context_in_home_thread(ctx)) {
        if (keel_in_coroutine()) {
            while (blk_busy(blk)) {
                keel_co_queue_wait(&blk->drain_waiters, NULL);
            }
        } else {
            while (blk_busy(blk)) {
                keel_aio_poll(ctx, true);
            }
        }
        return;
    }
    __atomic_add_fetch(&blk->foreign_waiters, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&blk->lock);
    while (blk_busy(blk)) {
        pthread_cond_wait(&blk->idle, &blk->lock);
    }
    pthread_mutex_unlock(&blk->lock);
    __atomic_sub_fetch(&blk->foreign_waiters, 1, __ATOMIC_SEQ_CST);
}

/* ---- open / close / move -------------------------------------------------------- */

typedef struct AttachArgs {
    KeelBlockBackend *blk;
    KeelAioContext *ctx;
} AttachArgs;

static void attach_in_home(void *opaque)
{
    AttachArgs *a = opaque;

    a->blk->raw.engine = engine_attach(a->blk->opts.aio, a->blk->raw.direct, a->ctx);
}

static void detach_in_home(void *opaque)
{
    KeelBlockBackend *blk = opaque;

    engine_detach(blk->raw.engine);
    blk->raw.engine = NULL;
}

KeelBlockBackend *keel_blk_open(const KeelBlkOptions *opts, KeelAioContext *ctx,
                                char **errmsg)
{
    KeelBlockBackend *blk;
    AttachArgs args;

    if (!ctx) {
        ctx = keel_current_aio_context();
        if (!ctx) {
            *errmsg = g_strdup("keel_blk_open: the calling thread has no AioContext");
            return NULL;
        }
    }
    if (!opts->filename || !*opts->filename) {
        *errmsg = g_strdup("no file name given (file=PATH)");
        return NULL;
    }
    if (opts->aio == KEEL_BLK_AIO_NATIVE && opts->cache != KEEL_BLK_CACHE_NONE &&
        opts->cache != KEEL_BLK_CACHE_DIRECTSYNC) {
        *errmsg = g_strdup("aio=native was specified, but it requires cache.direct=on, "
                           "which was not specified.");
        return NULL;
    }
    if (opts->force_share && !opts->readonly) {
        /* qemu-img's words for -U on a writer. */
        *errmsg = g_strdup("force-share=on can only be used with read-only images");
        return NULL;
    }

    blk = g_new0(KeelBlockBackend, 1);
    blk->opts = *opts;
    blk->opts.filename = g_strdup(opts->filename);
    blk->opts.inject = g_strdup(opts->inject);
    keel_co_queue_init(&blk->drain_waiters);
    pthread_mutex_init(&blk->lock, NULL);
    pthread_cond_init(&blk->idle, NULL);
    if (opts->inject && blkdebug_add_rules(&blk->dbg, opts->inject, errmsg) < 0) {
        goto fail;
    }
    if (raw_open(&blk->raw, &blk->opts, errmsg) < 0) {
        goto fail;
    }
    if (opts->fixed_size) {
        int64_t len = raw_getlength(&blk->raw);
        if (!blk->opts.size) {
            blk->opts.size = MAX(len - blk->opts.offset, 0);
        }
        blk->raw.fixed_end = blk->opts.offset + blk->opts.size;
    }
    keel_aio_context_ref(ctx);
    blk->ctx = ctx;
    args.blk = blk;
    args.ctx = ctx;
    keel_aio_run_in_context_wait(ctx, attach_in_home, &args);
    return blk;

fail:
    blkdebug_free(blk->dbg);
    keel_blk_options_clear(&blk->opts);
    pthread_mutex_destroy(&blk->lock);
    pthread_cond_destroy(&blk->idle);
    g_free(blk);
    return NULL;
}

KeelBlockBackend *keel_blk_open_str(const char *options, KeelAioContext *ctx, char **errmsg)
{
    KeelBlkOptions opts;
    KeelBlockBackend *blk = NULL;

    keel_blk_options_init(&opts);
    if (keel_blk_options_parse(&opts, options, errmsg) == 0) {
        blk = keel_blk_open(&opts, ctx, errmsg);
    }
    keel_blk_options_clear(&opts);
    return blk;
}

void keel_blk_close(KeelBlockBackend *blk)
{
    if (!blk) {
        return;
    }
    keel_blk_drain(blk);
    keel_aio_run_in_context_wait(blk->ctx, detach_in_home, blk);
    raw_close(&blk->raw);
    blkdebug_free(blk->dbg);
    keel_blk_options_clear(&blk->opts);
    keel_aio_context_unref(blk->ctx);
    pthread_mutex_destroy(&blk->lock);
    pthread_cond_destroy(&blk->idle);
    g_free(blk);
}

int keel_blk_set_aio_context(KeelBlockBackend *blk, KeelAioContext *ctx, char **errmsg)
{
    KeelAioContext *old = blk->ctx;
    AttachArgs args = { blk, ctx };

    if (!ctx) {
        *errmsg = g_strdup("keel_blk_set_aio_context: no context");
        return -EINVAL;
    }
    if (ctx == old) {
        return 0;
    }
    keel_blk_drain(blk);
    keel_aio_run_in_context_wait(old, detach_in_home, blk);
    keel_aio_context_ref(ctx);
    __atomic_store_n(&blk->ctx, ctx, __ATOMIC_RELEASE);
    keel_aio_run_in_context_wait(ctx, attach_in_home, &args);
    keel_aio_context_unref(old);
    return 0;
}

int keel_blk_inject(KeelBlockBackend *blk, const char *rules, char **errmsg)
{
    return blkdebug_add_rules(&blk->dbg, rules, errmsg);
}

/* ---- properties ------------------------------------------------------------------- */

int64_t keel_blk_getlength(KeelBlockBackend *blk)
{
    int64_t len = raw_getlength(&blk->raw);

    if (len < 0 || blk->opts.size) {
        return len < 0 ? len : blk->opts.size;
    }
    return MAX(len - blk->opts.offset, 0);
}

int keel_blk_grow(KeelBlockBackend *blk, uint64_t size)
{
    int64_t len = keel_blk_getlength(blk);
    struct stat st;

    if (blk->opts.readonly) {
        return -EROFS;
    }
    if (len < 0) {
        return (int)len;
    }
    if (size < (uint64_t)len) {
        return -ENOTSUP;
    }
    if (fstat(blk->raw.fd, &st) < 0) {
        return -errno;
    }
    if (!S_ISREG(st.st_mode)) {
        return -ENOTSUP;
    }
    if ((uint64_t)st.st_size < (uint64_t)blk->opts.offset + size &&
        ftruncate(blk->raw.fd, (off_t)(blk->opts.offset + size)) < 0) {
        return -errno;
    }
    if (blk->opts.size) {
        blk->opts.size = (int64_t)size;
    }
    if (blk->raw.fixed_end) {
        blk->raw.fixed_end = blk->opts.offset + (int64_t)size;
    }
    return 0;
}

const char *keel_blk_engine_name(KeelBlockBackend *blk)
{
    return blk->raw.engine ? blk->raw.engine->ops->name : "none";
}

uint32_t keel_blk_get_request_alignment(KeelBlockBackend *blk)
{
    return blk->raw.req_align;
}

bool keel_blk_is_read_only(KeelBlockBackend *blk)
{
    return blk->opts.readonly;
}

bool keel_blk_is_probed_raw(KeelBlockBackend *blk)
{
    return blk->raw.probed_raw;
}

char *keel_blk_probed_raw_warning(const char *filename)
{
    return g_strdup_printf("WARNING: Image format was not specified for '%s' and probing "
                           "guessed raw.\n"
                           "         Automatically detecting the format is dangerous for raw "
                           "images, write operations on block 0 will be restricted.\n"
                           "         Specify the 'raw' format explicitly to remove the "
                           "restrictions.", filename);
}

KeelBlkCache keel_blk_get_cache_mode(KeelBlockBackend *blk)
{
    return blk->opts.cache;
}

const char *keel_blk_get_filename(KeelBlockBackend *blk)
{
    return blk->opts.filename;
}

KeelAioContext *keel_blk_get_aio_context(KeelBlockBackend *blk)
{
    return __atomic_load_n(&blk->ctx, __ATOMIC_ACQUIRE);
}

uint64_t keel_blk_get_request_count(KeelBlockBackend *blk)
{
    return __atomic_load_n(&blk->requests, __ATOMIC_RELAXED);
}

/* ---- coroutine API ------------------------------------------------------------------- */

static void assert_co_in_home(KeelBlockBackend *blk, const char *fn)
{
    if (!keel_in_coroutine() || !keel_aio_context_in_home_thread(blk->ctx)) {
        keel_log("%s must be called from a coroutine in the backend's home thread", fn);
        abort();
    }
}

static bool iov_is_zero(const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t n = iov[i].iov_len;
        if (n && (p[0] || memcmp(p, p + 1, n - 1))) {
            return false;
        }
    }
    return true;
}

static int blk_co_request(KeelBlockBackend *blk, BlockOp op, int64_t offset, int64_t bytes,
                          const struct iovec *iov, int iovcnt)
{
    uint64_t req_no;
    int ret;

    assert_co_in_home(blk, "keel_blk_co_*");
    if (offset < 0 || bytes < 0 || offset > INT64_MAX - bytes || iovcnt < 0) {
        return -EINVAL;
    }
    if (op != BLOCK_OP_READ && op != BLOCK_OP_FLUSH && blk->opts.readonly) {
        return -EPERM;
    }
    if (blk->opts.size && op != BLOCK_OP_FLUSH &&
        (offset > blk->opts.size || bytes > blk->opts.size - offset)) {
        return -EIO;                /* beyond a raw node's size=, as QEMU */
    }
    if (op == BLOCK_OP_WRITE && blk->opts.detect_zeroes != KEEL_BLK_DETECT_ZEROES_OFF &&
        iov_is_zero(iov, iovcnt)) {
        op = BLOCK_OP_WRITE_ZEROES;
    }
    offset += blk->opts.offset;
    blk_inc_in_flight(blk);
    req_no = __atomic_add_fetch(&blk->requests, 1, __ATOMIC_RELAXED);
    ret = blkdebug_co_check(blk->dbg, op, offset, bytes, req_no);
    if (ret == 0) {
        switch (op) {
        case BLOCK_OP_READ:
            ret = raw_co_preadv(&blk->raw, offset, bytes, iov, iovcnt);
            break;
        case BLOCK_OP_WRITE:
            ret = raw_co_pwritev(&blk->raw, offset, bytes, iov, iovcnt);
            break;
        case BLOCK_OP_FLUSH:
            ret = raw_co_flush(&blk->raw);
            break;
        case BLOCK_OP_DISCARD:
            ret = raw_co_pdiscard(&blk->raw, offset, bytes);
            break;
        case BLOCK_OP_WRITE_ZEROES:
            ret = raw_co_pwrite_zeroes(&blk->raw, offset, bytes,
                                       blk->opts.detect_zeroes == KEEL_BLK_DETECT_ZEROES_UNMAP);
            break;
        }
    }
    blk_dec_in_flight(blk);
    return ret;
}

int keel_blk_co_preadv(KeelBlockBackend *blk, int64_t offset, const struct iovec *iov,
                       int iovcnt)
{
    return blk_co_request(blk, BLOCK_OP_READ, offset, iov_total(iov, iovcnt), iov, iovcnt);
}

int keel_blk_co_pwritev(KeelBlockBackend *blk, int64_t offset, const struct iovec *iov,
                        int iovcnt)
{
    return blk_co_request(blk, BLOCK_OP_WRITE, offset, iov_total(iov, iovcnt), iov, iovcnt);
}

int keel_blk_co_pread(KeelBlockBackend *blk, int64_t offset, void *buf, size_t bytes)
{
    struct iovec v = { buf, bytes };
    return keel_blk_co_preadv(blk, offset, &v, 1);
}

int keel_blk_co_pwrite(KeelBlockBackend *blk, int64_t offset, const void *buf, size_t bytes)
{
    struct iovec v = { (void *)buf, bytes };
    return keel_blk_co_pwritev(blk, offset, &v, 1);
}

int keel_blk_co_flush(KeelBlockBackend *blk)
{
    return blk_co_request(blk, BLOCK_OP_FLUSH, 0, 0, NULL, 0);
}

int keel_blk_co_pdiscard(KeelBlockBackend *blk, int64_t offset, int64_t bytes)
{
    return blk_co_request(blk, BLOCK_OP_DISCARD, offset, bytes, NULL, 0);
}

int keel_blk_co_pwrite_zeroes(KeelBlockBackend *blk, int64_t offset, int64_t bytes)
{
    return blk_co_request(blk, BLOCK_OP_WRITE_ZEROES, offset, bytes, NULL, 0);
}

/* ---- callback API ----------------------------------------------------------------------- */

typedef struct BlkAioReq {
    KeelBlockBackend *blk;
    BlockOp op;
    int64_t offset, bytes;
    const struct iovec *iov;
    int iovcnt;
    KeelBlkCompletionFunc *cb;
    void *opaque;
    int ret;
    bool in_submit;     /* keel_blk_aio_*() has not returned yet */
    bool done;
} BlkAioReq;

/* The callback, then the in-flight count: a drain also waits for the
 * callbacks (so a callback must not close or drain its own backend). */
static void blk_aio_complete(BlkAioReq *r)
{
    KeelBlockBackend *blk = r->blk;

    r->cb(r->opaque, r->ret);
    g_free(r);
    blk_dec_in_flight(blk);
}

static void blk_aio_complete_bh(void *opaque)
{
    blk_aio_complete(opaque);
}

static void blk_aio_entry(void *opaque)
{
    BlkAioReq *r = opaque;

    r->ret = blk_co_request(r->blk, r->op, r->offset, r->bytes, r->iov, r->iovcnt);
    if (r->in_submit) {
        /* Finished before keel_blk_aio_*() returned: the caller may not be
         * ready for the callback yet (QEMU's rule too). */
        r->done = true;
        return;
    }
    blk_aio_complete(r);
}

static void blk_aio_start(KeelBlockBackend *blk, BlockOp op, int64_t offset, int64_t bytes,
                          const struct iovec *iov, int iovcnt, KeelBlkCompletionFunc *cb,
                          void *opaque)
{
    BlkAioReq *r = g_new(BlkAioReq, 1);
    KeelAioContext *ctx = keel_blk_get_aio_context(blk);
    KeelCoroutine *co;

    *r = (BlkAioReq) {
        .blk = blk, .op = op, .offset = offset, .bytes = bytes, .iov = iov,
        .iovcnt = iovcnt, .cb = cb, .opaque = opaque,
    };
    /* Counted from now, so a drain from any thread sees it even before
     * the coroutine has started in the home thread. */
    blk_inc_in_flight(blk);
    co = keel_coroutine_create(blk_aio_entry, r);
    if (!keel_aio_context_in_home_thread(ctx)) {
        keel_aio_co_schedule(ctx, co);
        return;
    }
    r->in_submit = true;
    keel_coroutine_enter(co);
    r->in_submit = false;
    if (r->done) {
        keel_aio_bh_schedule_oneshot(ctx, blk_aio_complete_bh, r);
    }
}

void keel_blk_aio_preadv(KeelBlockBackend *blk, int64_t offset, const struct iovec *iov,
                         int iovcnt, KeelBlkCompletionFunc *cb, void *opaque)
{
    blk_aio_start(blk, BLOCK_OP_READ, offset, iov_total(iov, iovcnt), iov, iovcnt, cb, opaque);
}

void keel_blk_aio_pwritev(KeelBlockBackend *blk, int64_t offset, const struct iovec *iov,
                          int iovcnt, KeelBlkCompletionFunc *cb, void *opaque)
{
    blk_aio_start(blk, BLOCK_OP_WRITE, offset, iov_total(iov, iovcnt), iov, iovcnt, cb, opaque);
}

void keel_blk_aio_flush(KeelBlockBackend *blk, KeelBlkCompletionFunc *cb, void *opaque)
{
    blk_aio_start(blk, BLOCK_OP_FLUSH, 0, 0, NULL, 0, cb, opaque);
}

void keel_blk_aio_pdiscard(KeelBlockBackend *blk, int64_t offset, int64_t bytes,
                           KeelBlkCompletionFunc *cb, void *opaque)
{
    blk_aio_start(blk, BLOCK_OP_DISCARD, offset, bytes, NULL, 0, cb, opaque);
}

void keel_blk_aio_pwrite_zeroes(KeelBlockBackend *blk, int64_t offset, int64_t bytes,
                                KeelBlkCompletionFunc *cb, void *opaque)
{
    blk_aio_start(blk, BLOCK_OP_WRITE_ZEROES, offset, bytes, NULL, 0, cb, opaque);
}
