/*
 * The block backend: options, request accounting, drain, moving between
 * AioContexts, attaching more submitting contexts (multiqueue), and the
 * callback API over the coroutine API.
 */
#include "config.h"

#include "block/block-int.h"
#include "compat/osdep.h"
#include "loop/aio-wait.h"
#include "loop/iothread.h"

#include <errno.h>
#include <sys/stat.h>
#include <glib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- multiqueue ---------------------------------------------------------------
 * A backend has a home AioContext and, optionally, more contexts attached
 * with keel_blk_attach_aio_context().  Each of them (home included) has a
 * BlkAttach in a slot of the backend: the context, its engine instance and
 * a count of its requests.  A request submitted in the home thread of one
 * of them runs there from start to end with that context's engine, and its
 * callback runs there; a request submitted anywhere else is forwarded to
 * the home context (the single-home behaviour).  The slot of the calling
 * thread is found by its current context, without a lock.
 *
 * Memory-ordering points (the numbers are cited in the code):
 *  1. Slots.  A writer (under blk->lock) stores the BlkAttach pointer, then
 *     the context pointer, both with release; a reader loads the context
 *     with acquire and, when it is its own, the pointer with acquire, so
 *     it sees a fully built BlkAttach.  A reader only ever dereferences the
 *     slot of its own current context, and that slot is emptied only while
 *     that context's thread submits nothing (the thread rules of
 *     keel_blk_detach_aio_context / set_aio_context / close), so no reader
 *     holds a BlkAttach that is being freed.
 *  2. Drain.  blk->in_flight goes up (seq_cst) before a request's coroutine
 *     is created or scheduled, and down after its callback has returned;
 *     reaching zero is followed by keel_aio_wait_kick(), whose full fence
 *     pairs with the drainer's seq_cst registration in KEEL_AIO_WAIT_WHILE:
 *     either the drainer sees zero or the kick sees the drainer.  So a
 *     drain from any thread waits for the requests of every context.
 *  3. Detach.  The same for BlkAttach.in_flight and the wait in
 *     keel_blk_detach_aio_context() (it counts only that context).
 *  4. O_DIRECT read-modify-write tracking (file-raw.c) is under a
 *     KeelCoMutex, whose lock/unlock are acquire/release.
 *  5. BlkAttach.engine is created lazily by the context's own thread at
 *     its first request and published with release; other threads
 *     (keel_blk_engine_name_in, detach, close after their wait) load it
 *     with acquire.
 *  6. The disk window (size, RawFile.fixed_end) is read relaxed by every
 *     request and changed by keel_blk_grow under blk->lock: a request
 *     racing with a grow sees the old or the new end, as a guest racing a
 *     resize does in QEMU.
 *  7. Error injection (blkdebug.c) decides under its own mutex; the rule
 *     count is published with release.  The request counter is a relaxed
 *     fetch_add: numbers are unique, nothing is ordered by them.
 *  8. RawFile.has_zero_range / has_punch_hole only go from true to false,
 *     relaxed: a request that misses the change tries once more and gets
 *     -ENOTSUP itself. */
#define BLK_MAX_CONTEXTS 64

typedef struct BlkAttach {
    KeelAioContext *ctx;        /* referenced */
    EngineCtx *engine;          /* note 5: written once by ctx's home thread */
    int in_flight;              /* atomic (note 3): requests of ctx, callbacks too */
    bool home;                  /* the backend's home (under blk->lock) */
    bool attached;              /* by keel_blk_attach_aio_context (under blk->lock) */
} BlkAttach;

struct KeelBlockBackend {
    KeelAioContext *ctx;        /* home; referenced by its BlkAttach; atomic,
                                 * written only while drained */
    KeelBlkOptions opts;        /* a private copy; opts.size is not used
                                 * after open (see size) */
    int64_t size KEEL_ATOMIC_ALIGNED;   /* note 6: window size, 0 = to the end */
    RawFile raw;
    Blkdebug *dbg;              /* never NULL; thread-safe (note 7) */
    uint64_t requests KEEL_ATOMIC_ALIGNED;  /* atomic: started so far */
    int in_flight;              /* atomic (note 2): every context's */
    /* Serialises attach/detach/close/set_aio_context (the slot writers) and
     * keel_blk_grow. */
    pthread_mutex_t lock;
    unsigned nslots;            /* atomic: slots ever used (scan bound) */
    KeelAioContext *slot_ctx[BLK_MAX_CONTEXTS];     /* note 1; NULL: free */
    BlkAttach *slot[BLK_MAX_CONTEXTS];              /* note 1 */
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

/* ---- contexts and their slots ------------------------------------------------ */

/* The BlkAttach of @ctx, or NULL.  Lock-free (note 1): only for @ctx's own
 * thread, or under blk->lock. */
static BlkAttach *blk_attach_find(KeelBlockBackend *blk, KeelAioContext *ctx)
{
    unsigned n = keel_atomic_load_acquire(&blk->nslots);

    for (unsigned i = 0; i < n; i++) {
        if (keel_atomic_load_acquire(&blk->slot_ctx[i]) == ctx) {
            return keel_atomic_load_acquire(&blk->slot[i]);
        }
    }
    return NULL;
}

/* Under blk->lock.  Returns false when every slot is taken. */
static bool blk_slot_insert(KeelBlockBackend *blk, BlkAttach *att)
{
    for (unsigned i = 0; i < BLK_MAX_CONTEXTS; i++) {
        if (!blk->slot_ctx[i]) {
            keel_atomic_store_release(&blk->slot[i], att);      /* note 1 */
            keel_atomic_store_release(&blk->slot_ctx[i], att->ctx);
            if (i >= blk->nslots) {
                keel_atomic_store_release(&blk->nslots, i + 1);
            }
            return true;
        }
    }
    return false;
}

/* Under blk->lock. */
static void blk_slot_remove(KeelBlockBackend *blk, BlkAttach *att)
{
    for (unsigned i = 0; i < blk->nslots; i++) {
        if (blk->slot[i] == att) {
            keel_atomic_store_release(&blk->slot_ctx[i], NULL);
            keel_atomic_store_release(&blk->slot[i], NULL);
            return;
        }
    }
}

static BlkAttach *blk_attach_new(KeelAioContext *ctx)
{
    BlkAttach *att = g_new0(BlkAttach, 1);

    keel_aio_context_ref(ctx);
    att->ctx = ctx;
    return att;
}

typedef struct EngineArgs {
    KeelBlockBackend *blk;
    BlkAttach *att;
} EngineArgs;

/* In the home thread of att->ctx. */
static void blk_attach_engine(KeelBlockBackend *blk, BlkAttach *att)
{
    EngineCtx *ec = engine_attach(blk->opts.aio, blk->raw.direct, att->ctx);

    keel_atomic_store_release(&att->engine, ec);                /* note 5 */
}

static void blk_attach_engine_in_home(void *opaque)
{
    EngineArgs *a = opaque;

    blk_attach_engine(a->blk, a->att);
}

static void blk_detach_engine_in_home(void *opaque)
{
    BlkAttach *att = opaque;

    engine_detach(att->engine);
    keel_atomic_store_release(&att->engine, NULL);
}

/* @att is out of its slot and has nothing in flight: release its engine in
 * its context's thread (only when one was created: an attachment never
 * used needs nothing from that thread), then free it. */
static void blk_attach_free(BlkAttach *att)
{
    if (keel_atomic_load_acquire(&att->engine)) {
        keel_aio_run_in_context_wait(att->ctx, blk_detach_engine_in_home, att);
    }
    keel_aio_context_unref(att->ctx);
    g_free(att);
}

/* ---- in-flight accounting and drain --------------------------------------- */

/* The attachment of the calling thread's context with one more request
 * counted on it (and its engine created on first use), or NULL when the
 * caller's context is neither the home nor attached. */
static BlkAttach *blk_enter_context(KeelBlockBackend *blk)
{
    KeelAioContext *cur = keel_current_aio_context();
    BlkAttach *att;

    att = cur && keel_aio_context_in_home_thread(cur) ? blk_attach_find(blk, cur) : NULL;
    if (!att) {
        /* A thread that runs several contexts has one current context; the
         * home's thread is an own thread whichever it is (the single-home
         * rule).  The home's slot changes only while nobody submits. */
        KeelAioContext *home = keel_blk_get_aio_context(blk);
        if (!keel_aio_context_in_home_thread(home)) {
            return NULL;
        }
        att = blk_attach_find(blk, home);
    }
    keel_atomic_fetch_add(&att->in_flight, 1);
    if (!keel_atomic_read(&att->engine)) {
        /* Only this thread writes it while the slot is in use (note 5). */
        blk_attach_engine(blk, att);
    }
    return att;
}

static void blk_leave_context(BlkAttach *att)
{
    if (keel_atomic_sub_fetch(&att->in_flight, 1) == 0) {
        keel_aio_wait_kick();                                   /* note 3 */
    }
}

static void blk_inc_in_flight(KeelBlockBackend *blk)
{
    keel_atomic_fetch_add(&blk->in_flight, 1);
}

static void blk_dec_in_flight(KeelBlockBackend *blk)
{
    if (keel_atomic_sub_fetch(&blk->in_flight, 1) == 0) {
        keel_aio_wait_kick();                                   /* note 2 */
    }
}

static bool blk_busy(KeelBlockBackend *blk)
{
    return keel_atomic_load_seq_cst(&blk->in_flight) != 0;
}

void keel_blk_drain(KeelBlockBackend *blk)
{
    /* In the home thread it polls the home context (or yields in a
     * coroutine); in a thread with another context it polls that one, so
     * that context's own requests go on; elsewhere it sleeps.  Every
     * context's last completion kicks it (note 2). */
    KEEL_AIO_WAIT_WHILE(keel_blk_get_aio_context(blk), blk_busy(blk));
}

/* ---- open / close / move / attach --------------------------------------------- */

KeelBlockBackend *keel_blk_open(const KeelBlkOptions *opts, KeelAioContext *ctx,
                                char **errmsg)
{
    KeelBlockBackend *blk;
    BlkAttach *home;
    EngineArgs args;

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
    pthread_mutex_init(&blk->lock, NULL);
    blk->dbg = blkdebug_new();
    if (opts->inject && blkdebug_add_rules(&blk->dbg, opts->inject, errmsg) < 0) {
        goto fail;
    }
    if (raw_open(&blk->raw, &blk->opts, errmsg) < 0) {
        goto fail;
    }
    blk->size = blk->opts.size;
    if (opts->fixed_size) {
        int64_t len = raw_getlength(&blk->raw);
        if (!blk->size) {
            blk->size = MAX(len - blk->opts.offset, 0);
        }
        blk->raw.fixed_end = blk->opts.offset + blk->size;
    }
    home = blk_attach_new(ctx);
    home->home = true;
    blk->ctx = ctx;
    blk_slot_insert(blk, home);
    args.blk = blk;
    args.att = home;
    keel_aio_run_in_context_wait(ctx, blk_attach_engine_in_home, &args);
    return blk;

fail:
    blkdebug_free(blk->dbg);
    keel_blk_options_clear(&blk->opts);
    pthread_mutex_destroy(&blk->lock);
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
    /* Every context still attached (and the home) gives its engine back in
     * its own thread. */
    for (unsigned i = 0; i < BLK_MAX_CONTEXTS; i++) {
        BlkAttach *att;

        pthread_mutex_lock(&blk->lock);
        att = i < blk->nslots ? blk->slot[i] : NULL;
        if (att) {
            blk_slot_remove(blk, att);
        }
        pthread_mutex_unlock(&blk->lock);
        if (att) {
            blk_attach_free(att);
        }
    }
    raw_close(&blk->raw);
    blkdebug_free(blk->dbg);
    keel_blk_options_clear(&blk->opts);
    pthread_mutex_destroy(&blk->lock);
    g_free(blk);
}

int keel_blk_set_aio_context(KeelBlockBackend *blk, KeelAioContext *ctx, char **errmsg)
{
    KeelAioContext *old = blk->ctx;
    BlkAttach *old_att, *new_att;
    bool free_old;
    EngineArgs args;

    if (!ctx) {
        *errmsg = g_strdup("keel_blk_set_aio_context: no context");
        return -EINVAL;
    }
    if (ctx == old) {
        return 0;
    }
    keel_blk_drain(blk);
    pthread_mutex_lock(&blk->lock);
    old_att = blk_attach_find(blk, old);
    new_att = blk_attach_find(blk, ctx);
    if (!new_att) {
        new_att = blk_attach_new(ctx);
        if (!blk_slot_insert(blk, new_att)) {
            pthread_mutex_unlock(&blk->lock);
            keel_aio_context_unref(ctx);
            g_free(new_att);
            *errmsg = g_strdup_printf("keel_blk_set_aio_context: more than %d contexts",
                                      BLK_MAX_CONTEXTS);
            return -ENOSPC;
        }
    }
    old_att->home = false;
    new_att->home = true;
    /* An old home that is also attached stays, as an attached context. */
    free_old = !old_att->attached;
    if (free_old) {
        blk_slot_remove(blk, old_att);
    }
    keel_atomic_store_release(&blk->ctx, ctx);
    pthread_mutex_unlock(&blk->lock);
    if (free_old) {
        blk_attach_free(old_att);
    }
    if (!keel_atomic_load_acquire(&new_att->engine)) {
        args.blk = blk;
        args.att = new_att;
        keel_aio_run_in_context_wait(ctx, blk_attach_engine_in_home, &args);
    }
    return 0;
}

int keel_blk_attach_aio_context(KeelBlockBackend *blk, KeelAioContext *ctx, char **errmsg)
{
    BlkAttach *att;
    int ret = 0;

    if (!ctx) {
        *errmsg = g_strdup("keel_blk_attach_aio_context: no context");
        return -EINVAL;
    }
    pthread_mutex_lock(&blk->lock);
    att = blk_attach_find(blk, ctx);
    if (att) {
        att->attached = true;       /* the home, or attached twice: one slot */
    } else {
        att = blk_attach_new(ctx);
        att->attached = true;
        if (!blk_slot_insert(blk, att)) {
            keel_aio_context_unref(ctx);
            g_free(att);
            *errmsg = g_strdup_printf("%s: more than %d contexts submit to it",
                                      blk->opts.filename, BLK_MAX_CONTEXTS);
            ret = -ENOSPC;
        }
    }
    pthread_mutex_unlock(&blk->lock);
    return ret;
}

void keel_blk_detach_aio_context(KeelBlockBackend *blk, KeelAioContext *ctx)
{
    BlkAttach *att;
    bool remove;

    pthread_mutex_lock(&blk->lock);
    att = blk_attach_find(blk, ctx);
    if (!att || !att->attached) {
        pthread_mutex_unlock(&blk->lock);
        return;
    }
    att->attached = false;
    /* The home stays; its requests are waited for by drain, not here. */
    remove = !att->home;
    if (remove) {
        blk_slot_remove(blk, att);
    }
    pthread_mutex_unlock(&blk->lock);
    if (!remove) {
        return;
    }
    /* From now on the context's thread forwards to the home; wait for what
     * it has started on its own engine (callbacks included, note 3). */
    KEEL_AIO_WAIT_WHILE(ctx, keel_atomic_load_seq_cst(&att->in_flight) != 0);
    blk_attach_free(att);
}

int keel_blk_inject(KeelBlockBackend *blk, const char *rules, char **errmsg)
{
    return blkdebug_add_rules(&blk->dbg, rules, errmsg);
}

/* ---- properties ------------------------------------------------------------------- */

int64_t keel_blk_getlength(KeelBlockBackend *blk)
{
    int64_t len = raw_getlength(&blk->raw);
    int64_t size = keel_atomic_read(&blk->size);

    if (len < 0 || size) {
        return len < 0 ? len : size;
    }
    return MAX(len - blk->opts.offset, 0);
}

int keel_blk_grow(KeelBlockBackend *blk, uint64_t size)
{
    struct stat st;
    int64_t len;
    int ret = 0;

    if (blk->opts.readonly) {
        return -EROFS;
    }
    pthread_mutex_lock(&blk->lock);
    len = keel_blk_getlength(blk);
    if (len < 0) {
        ret = (int)len;
    } else if (size < (uint64_t)len) {
        ret = -ENOTSUP;
    } else if (fstat(blk->raw.fd, &st) < 0) {
        ret = -errno;
    } else if (!S_ISREG(st.st_mode)) {
        ret = -ENOTSUP;
    } else if ((uint64_t)st.st_size < (uint64_t)blk->opts.offset + size &&
               ftruncate(blk->raw.fd, (off_t)(blk->opts.offset + size)) < 0) {
        ret = -errno;
    } else {
        /* Note 6: requests in other threads see the new end from now on. */
        if (blk->size) {
            keel_atomic_set(&blk->size, (int64_t)size);
        }
        if (blk->raw.fixed_end) {
            keel_atomic_set(&blk->raw.fixed_end, blk->opts.offset + (int64_t)size);
        }
    }
    pthread_mutex_unlock(&blk->lock);
    return ret;
}

static const char *engine_name_of(BlkAttach *att)
{
    EngineCtx *ec = att ? keel_atomic_load_acquire(&att->engine) : NULL;

    return ec ? ec->ops->name : "none";
}

const char *keel_blk_engine_name(KeelBlockBackend *blk)
{
    return keel_blk_engine_name_in(blk, keel_blk_get_aio_context(blk));
}

const char *keel_blk_engine_name_in(KeelBlockBackend *blk, KeelAioContext *ctx)
{
    const char *name;

    pthread_mutex_lock(&blk->lock);
    name = engine_name_of(blk_attach_find(blk, ctx));
    pthread_mutex_unlock(&blk->lock);
    return name;
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
    return keel_atomic_load_acquire(&blk->ctx);
}

uint64_t keel_blk_get_request_count(KeelBlockBackend *blk)
{
    return keel_atomic_read(&blk->requests);
}

/* ---- requests --------------------------------------------------------------------- */

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

/* One request, in the thread of @att's context, on its engine. */
static int blk_co_do_request(KeelBlockBackend *blk, BlkAttach *att, BlockOp op,
                             int64_t offset, int64_t bytes, const struct iovec *iov,
                             int iovcnt)
{
    EngineCtx *ec = att->engine;
    int64_t size = keel_atomic_read(&blk->size);                /* note 6 */
    uint64_t req_no;
    int ret;

    if (offset < 0 || bytes < 0 || offset > INT64_MAX - bytes || iovcnt < 0) {
        return -EINVAL;
    }
    if (op != BLOCK_OP_READ && op != BLOCK_OP_FLUSH && blk->opts.readonly) {
        return -EPERM;
    }
    if (size && op != BLOCK_OP_FLUSH && (offset > size || bytes > size - offset)) {
        return -EIO;                /* beyond a raw node's size=, as QEMU */
    }
    if (op == BLOCK_OP_WRITE && blk->opts.detect_zeroes != KEEL_BLK_DETECT_ZEROES_OFF &&
        iov_is_zero(iov, iovcnt)) {
        op = BLOCK_OP_WRITE_ZEROES;
    }
    offset += blk->opts.offset;
    req_no = __atomic_add_fetch(&blk->requests, 1, __ATOMIC_RELAXED);   /* note 7 */
    ret = blkdebug_co_check(blk->dbg, op, offset, bytes, req_no);
    if (ret < 0) {
        return ret;
    }
    switch (op) {
    case BLOCK_OP_READ:
        return raw_co_preadv(&blk->raw, ec, offset, bytes, iov, iovcnt);
    case BLOCK_OP_WRITE:
        return raw_co_pwritev(&blk->raw, ec, offset, bytes, iov, iovcnt);
    case BLOCK_OP_FLUSH:
        return raw_co_flush(&blk->raw, ec);
    case BLOCK_OP_DISCARD:
        return raw_co_pdiscard(&blk->raw, ec, offset, bytes);
    case BLOCK_OP_WRITE_ZEROES:
        return raw_co_pwrite_zeroes(&blk->raw, ec, offset, bytes,
                                    blk->opts.detect_zeroes == KEEL_BLK_DETECT_ZEROES_UNMAP);
    }
    return -EINVAL;
}

/* ---- coroutine API ------------------------------------------------------------------- */

static int blk_co_request(KeelBlockBackend *blk, BlockOp op, int64_t offset, int64_t bytes,
                          const struct iovec *iov, int iovcnt)
{
    BlkAttach *att = keel_in_coroutine() ? blk_enter_context(blk) : NULL;
    int ret;

    if (!att) {
        keel_log("keel_blk_co_* must be called from a coroutine in the home thread of the "
                 "backend's context or of a context attached to it");
        abort();
    }
    blk_inc_in_flight(blk);
    ret = blk_co_do_request(blk, att, op, offset, bytes, iov, iovcnt);
    blk_leave_context(att);
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
    BlkAttach *att;     /* the context it runs in (NULL until it runs, forwarded) */
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

/* The callback, then the in-flight counts: a drain (and a detach) also
 * waits for the callbacks (so a callback must not close, drain or detach
 * its own backend). */
static void blk_aio_complete(BlkAioReq *r)
{
    KeelBlockBackend *blk = r->blk;
    BlkAttach *att = r->att;

    r->cb(r->opaque, r->ret);
    g_free(r);
    blk_leave_context(att);
    blk_dec_in_flight(blk);
}

static void blk_aio_complete_bh(void *opaque)
{
    blk_aio_complete(opaque);
}

static void blk_aio_entry(void *opaque)
{
    BlkAioReq *r = opaque;

    if (!r->att) {
        /* Forwarded: this is the home thread, whose context always has a
         * slot. */
        r->att = blk_enter_context(r->blk);
        if (!r->att) {
            keel_log("keel_blk_aio_*: a forwarded request did not land in the home thread");
            abort();
        }
    }
    r->ret = blk_co_do_request(r->blk, r->att, r->op, r->offset, r->bytes, r->iov, r->iovcnt);
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
    KeelCoroutine *co;

    *r = (BlkAioReq) {
        .blk = blk, .op = op, .offset = offset, .bytes = bytes, .iov = iov,
        .iovcnt = iovcnt, .cb = cb, .opaque = opaque,
    };
    /* Counted from now, so a drain from any thread sees it even before
     * the coroutine has started (note 2). */
    blk_inc_in_flight(blk);
    r->att = blk_enter_context(blk);
    co = keel_coroutine_create(blk_aio_entry, r);
    if (!r->att) {
        keel_aio_co_schedule(keel_blk_get_aio_context(blk), co);
        return;
    }
    /* The caller's own context: run here, call back here. */
    r->in_submit = true;
    keel_coroutine_enter(co);
    r->in_submit = false;
    if (r->done) {
        keel_aio_bh_schedule_oneshot(r->att->ctx, blk_aio_complete_bh, r);
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
