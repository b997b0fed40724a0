/*
 * Engine choice and run-time fallback, per-AioContext engine state,
 * plug/unplug batching, and the block layer's lines of the features report.
 */
#include "config.h"

#include "block/block-int.h"
#include "compat/features.h"
#include "compat/osdep.h"

#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

KeelSeam block_io_uring_seam =
    KEEL_SEAM_INIT(KEEL_PATH_IO_URING, "io_uring", "linux-aio (with O_DIRECT) or threads");
KeelSeam block_linux_aio_seam =
    KEEL_SEAM_INIT(KEEL_PATH_LINUX_AIO, "linux-aio", "threads");

/* ---- per-AioContext engine state ------------------------------------------
 * One ring / io_context per (engine, context), shared by every backend of
 * the context, created by the first and freed by the last (both in the
 * context's home thread, so no request is using it). */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static GSList *registry;            /* EngineCtx * */

static int engine_ctx_get(const BlockEngineOps *ops, KeelAioContext *ctx, EngineCtx **out)
{
    EngineCtx *ec = NULL;
    void *state = NULL;
    int ret;

    pthread_mutex_lock(&registry_lock);
    for (GSList *l = registry; l; l = l->next) {
        EngineCtx *e = l->data;
        if (e->ops == ops && e->ctx == ctx) {
            e->refcnt++;
            ec = e;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (ec) {
        *out = ec;
        return 0;
    }

    /* Only the home thread of @ctx creates its state, so nobody else can
     * race us to it between the unlock above and the insert below. */
    ret = ops->ctx_new(ctx, &state);
    if (ret < 0) {
        return ret;
    }
    ec = g_new0(EngineCtx, 1);
    ec->ops = ops;
    ec->ctx = ctx;
    ec->state = state;
    ec->refcnt = 1;
    pthread_mutex_lock(&registry_lock);
    registry = g_slist_prepend(registry, ec);
    pthread_mutex_unlock(&registry_lock);
    *out = ec;
    return 0;
}

void engine_detach(EngineCtx *ec)
{
    bool last;

    pthread_mutex_lock(&registry_lock);
    last = --ec->refcnt == 0;
    if (last) {
        registry = g_slist_remove(registry, ec);
    }
    pthread_mutex_unlock(&registry_lock);
    if (last) {
        if (ec->ops->ctx_free) {
            ec->ops->ctx_free(ec->state);
        }
        g_free(ec);
    }
}

EngineCtx *engine_attach(KeelBlkAio aio, bool direct, KeelAioContext *ctx)
{
    EngineCtx *ec = NULL;
    int ret;

    if (aio == KEEL_BLK_AIO_IO_URING) {
#ifdef CONFIG_LINUX_IO_URING
        if (keel_seam_use_primary(&block_io_uring_seam)) {
            ret = engine_ctx_get(&engine_io_uring_ops, ctx, &ec);
            if (ret == 0) {
                return ec;
            }
            keel_seam_primary_failed(&block_io_uring_seam, -ret);
        }
#endif
        aio = direct ? KEEL_BLK_AIO_NATIVE : KEEL_BLK_AIO_THREADS;
    }
    if (aio == KEEL_BLK_AIO_NATIVE) {
#ifdef CONFIG_LINUX_AIO
        if (keel_seam_use_primary(&block_linux_aio_seam)) {
            ret = engine_ctx_get(&engine_linux_aio_ops, ctx, &ec);
            if (ret == 0) {
                return ec;
            }
            /* No eventfd is a property of this configuration (KEEL_AVOID=
             * eventfd or an old kernel), not a refusal of io_setup. */
            if (ret != -ENODEV) {
                keel_seam_primary_failed(&block_linux_aio_seam, -ret);
            }
        }
#endif
    }
    ret = engine_ctx_get(&engine_threads_ops, ctx, &ec);
    if (ret < 0) {
        /* The thread engine has no state to set up: cannot happen. */
        abort();
    }
    return ec;
}

int engine_co_rw(EngineCtx *ec, int fd, bool write, int64_t offset,
                 const struct iovec *iov, int iovcnt)
{
    return ec->ops->co_rw(ec->state, fd, write, offset, iov, iovcnt);
}

int engine_co_fdatasync(EngineCtx *ec, int fd)
{
    if (ec->ops->co_fdatasync) {
        return ec->ops->co_fdatasync(ec->state, fd);
    }
    return threads_co_fdatasync(fd);
}

int engine_co_fallocate(EngineCtx *ec, int fd, int mode, int64_t offset, int64_t len)
{
    if (ec->ops->co_fallocate) {
        return ec->ops->co_fallocate(ec->state, fd, mode, offset, len);
    }
    return threads_co_fallocate(fd, mode, offset, len);
}

/* ---- plug / unplug ---------------------------------------------------------
 * Per thread: a depth and a short list of deferred calls.  Coroutine code
 * reaches it through the non-inlined accessors, since a coroutine must not
 * cache a thread-local's address across a yield. */
#define MAX_DEFERRED 16

typedef struct DeferredCall {
    void (*fn)(void *);
    void *opaque;
} DeferredCall;

typedef struct PlugState {
    unsigned depth;
    unsigned n;
    DeferredCall calls[MAX_DEFERRED];
} PlugState;

KEEL_DEFINE_STATIC_CO_TLS(PlugState, plug_state)

void keel_blk_io_plug(void)
{
    get_ptr_plug_state()->depth++;
}

void keel_blk_io_unplug(void)
{
    PlugState *p = get_ptr_plug_state();
    DeferredCall calls[MAX_DEFERRED];
    unsigned n;

    if (p->depth == 0) {
        keel_log("keel_blk_io_unplug() without keel_blk_io_plug()");
        abort();
    }
    if (--p->depth > 0) {
        return;
    }
    /* The calls never yield, but copy anyway: they may plug and defer
     * again (to a later unplug), which must not disturb this walk. */
    n = p->n;
    memcpy(calls, p->calls, n * sizeof(calls[0]));
    p->n = 0;
    for (unsigned i = 0; i < n; i++) {
        calls[i].fn(calls[i].opaque);
    }
}

void block_defer_call(void (*fn)(void *), void *opaque)
{
    PlugState *p = get_ptr_plug_state();

    if (p->depth == 0) {
        fn(opaque);
        return;
    }
    for (unsigned i = 0; i < p->n; i++) {
        if (p->calls[i].fn == fn && p->calls[i].opaque == opaque) {
            return;
        }
    }
    if (p->n == MAX_DEFERRED) {
        fn(opaque);
        return;
    }
    p->calls[p->n].fn = fn;
    p->calls[p->n].opaque = opaque;
    p->n++;
}

/* ---- probing and the features report ------------------------------------ */

const char *keel_blk_probe_engine(KeelBlkAio aio, bool direct, const char **reason)
{
    const char *why = "default";

    if (aio == KEEL_BLK_AIO_IO_URING) {
#ifdef CONFIG_LINUX_IO_URING
        if (keel_seam_use_primary(&block_io_uring_seam)) {
            int ret = io_uring_probe_kernel();
            if (ret == 0) {
                if (reason) {
                    *reason = why;
                }
                return "io_uring";
            }
            keel_seam_primary_failed(&block_io_uring_seam, -ret);
        }
        keel_seam_active(&block_io_uring_seam, &why);
#else
        why = "not-compiled";
#endif
        if (!direct) {
            if (reason) {
                *reason = why;
            }
            return "threads";
        }
        aio = KEEL_BLK_AIO_NATIVE;
    }
    if (aio == KEEL_BLK_AIO_NATIVE) {
        const char *aio_why = "default";
#ifdef CONFIG_LINUX_AIO
        if (keel_seam_use_primary(&block_linux_aio_seam)) {
            int ret = linux_aio_probe_kernel();
            if (ret == 0) {
                if (reason) {
                    *reason = why;
                }
                return "linux-aio";
            }
            if (ret == -ENODEV) {
                aio_why = "eventfd-unavailable";
            } else {
                keel_seam_primary_failed(&block_linux_aio_seam, -ret);
                keel_seam_active(&block_linux_aio_seam, &aio_why);
            }
        } else {
            keel_seam_active(&block_linux_aio_seam, &aio_why);
        }
#else
        aio_why = "not-compiled";
#endif
        /* Report why the preferred engine is not in use: io_uring's reason
         * when io_uring was preferred, else linux-aio's. */
        if (!strcmp(why, "default")) {
            why = aio_why;
        }
    }
    if (reason) {
        *reason = why;
    }
    return "threads";
}

static const char *block_engine_active(const char **reason)
{
    return keel_blk_probe_engine(KEEL_BLK_AIO_IO_URING, true, reason);
}

static const KeelFeature block_engine_feature = {
    .name = "block-engine",
    .compiled =
#ifdef CONFIG_LINUX_IO_URING
        "io_uring,"
#endif
#ifdef CONFIG_LINUX_AIO
        "linux-aio,"
#endif
        "threads",
    .active = block_engine_active,
};

static const KeelFeature block_preadv_feature = {
    .name = "block-preadv",
#ifdef HAVE_PREADV
    .compiled = "preadv,pread",
#else
    .compiled = "pread",
#endif
    .active = threads_preadv_active,
};

void keel_block_features_register(void)
{
    keel_feature_register(&block_engine_feature);
    keel_feature_register(&block_preadv_feature);
    image_lock_features_register();
}
