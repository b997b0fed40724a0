/*
 * block/block-backend.h — a block device backed by a raw file (or block
 * device), with a coroutine API and a callback API, QEMU's vocabulary for the
 * options, and one of three I/O engines underneath.
 *
 * Options (keel_blk_options_parse() takes them as "key=value,key=value"; a
 * literal comma in a value is written ",,"):
 *   file=PATH                   the image (must exist; keel-img create makes one)
 *   aio=io_uring|native|threads the engine (default io_uring).  io_uring
 *                               refused by the kernel (ENOSYS, EPERM, a missing
 *                               opcode…) or KEEL_AVOID=io_uring → linux-aio when
 *                               O_DIRECT is on, else threads; linux-aio refused
 *                               or KEEL_AVOID=linux-aio → threads.  native needs
 *                               O_DIRECT (cache=none or directsync), as in QEMU.
 *   cache=writeback|none|writethrough|directsync|unsafe   (default writeback)
 *                               none/directsync open with O_DIRECT;
 *                               writethrough/directsync complete a write only
 *                               once it is stable (O_DSYNC); unsafe turns
 *                               flush into a no-op.
 *   readonly=on|off             writes, discards and write-zeroes fail -EPERM
 *   discard=ignore|unmap        (default ignore, as QEMU) unmap punches holes
 *   format=raw|probe            (default raw) probe: look at the first sector
 *                               and refuse the image when it carries another
 *                               format's magic (block/probe.h); a probed raw
 *                               image refuses writes that would make sector 0
 *                               probe as another format (-EPERM), as QEMU does
 *   locking=on|off|auto         (default auto = on) QEMU's image locks
 *                               (block/image-lock.h): a writer refuses, and is
 *                               refused by, any other writer of the image
 *   force-share=on|off          (qemu-img -U) share every permission; needs
 *                               readonly=on
 *   cache.no-flush=on|off       flush is a no-op (cache=unsafe's half)
 *   detect-zeroes=off|on|unmap  (default off) writes of all-zero buffers become
 *                               write-zeroes; unmap punches holes for them when
 *                               discard=unmap and the range is aligned
 *   fixed-size=on|off           (default off) the disk keeps the length it had at
 *                               open (QEMU's cached total_sectors): requests
 *                               beyond it fail -EIO, and so does a read that
 *                               meets the end of a file shrunk under us (not
 *                               zeros); keel-vmm's drives use it
 *   offset=N, size=N            QEMU's raw driver over a file: the disk is the
 *                               file's bytes [offset, offset+size) (size 0: to
 *                               the end); requests beyond size fail -EIO
 *   inject=RULE                 error injection, repeatable: see block/blkdebug.h
 *
 * Requests use byte offsets and iovecs.  Any offset/length/buffer alignment
 * is accepted: with O_DIRECT unaligned requests are bounced through aligned
 * buffers (unaligned writes become read-modify-writes of whole blocks,
 * serialised against overlapping writes; a write that ends past EOF then
 * extends the file to a block boundary).  Reads past the end of the file
 * return zeros; writes past it extend the file.  Short transfers continue
 * until done, EINTR/EAGAIN are retried.  Results are 0 or a negative errno.
 * Requests in flight together should not overlap (as with a real disk, the
 * result of overlapping writes is one of them, or a mix).
 *
 * Ownership: keel_blk_open() returns a backend owned by the caller until
 * keel_blk_close().  Callers own the iovec arrays and buffers they pass;
 * they must stay valid until the request completes.
 *
 * Threads.  A backend lives in one AioContext (its "home"; set at open, moved
 * with keel_blk_set_aio_context()).  Requests submitted in the home thread
 * run there.  More contexts may submit directly (multiqueue, like QEMU 9's
 * iothread-vq-mapping): keel_blk_attach_aio_context() lets the home thread
 * of another context run its own requests itself, on its own engine
 * instance (io_uring ring, linux-aio context or thread pool of that
 * context, set up there at its first request, with the same fallbacks and
 * KEEL_AVOID words as the home's), and call back in that thread; nothing
 * goes through the home.  A request submitted in any other thread (no
 * context, or one not attached) is forwarded to the home thread by a BH
 * and calls back there, as before.  "Own thread" below means: the home
 * thread of the backend's home context or of an attached context, for a
 * request submitted there.
 * What the contexts share is safe across them: the in-flight count (a drain
 * waits for every context), the O_DIRECT read-modify-write serialisation
 * (overlapping unaligned writes of different threads still serialise),
 * error injection (rules, once, req=N over all threads), the request
 * counter, the disk's size (keel_blk_grow), the image locks (held per
 * backend, untouched by attach).  block-backend.c lists the
 * memory-ordering points.  Per function:
 *   keel_blk_options_*, keel_blk_*_name      any thread
 *   keel_blk_open / keel_blk_open_str        any thread (the engine is set
 *                                            up in @ctx's home thread)
 *   keel_blk_close                           home thread (not from a callback
 *                                            of that backend), or any other
 *                                            thread while the home thread runs
 *                                            its loop; never while plugged.
 *                                            Contexts still attached are
 *                                            detached: each whose engine was
 *                                            set up must run its loop (or be
 *                                            the caller) and submit nothing
 *   keel_blk_co_*                            a coroutine in an own thread
 *                                            (home or attached context)
 *   keel_blk_aio_*                           any thread; in an own thread the
 *                                            request runs and calls back
 *                                            there, elsewhere in the home
 *                                            thread (forwarded by a BH)
 *   keel_blk_drain                           any thread (coroutine or not):
 *                                            waits for the requests of every
 *                                            context; in a thread with a
 *                                            context it runs that context's
 *                                            loop meanwhile, so the home and
 *                                            every attached context's thread
 *                                            must run their loops (or be the
 *                                            caller)
 *   keel_blk_attach_aio_context              any thread, any time (never
 *                                            waits for another thread)
 *   keel_blk_detach_aio_context              @ctx's home thread (not from a
 *                                            callback of that backend), or
 *                                            any thread while @ctx's thread
 *                                            runs its loop and submits
 *                                            nothing to the backend
 *   keel_blk_set_aio_context                 any thread, while the old and new
 *                                            contexts' home threads run their
 *                                            loops (or it is one of them) and
 *                                            nobody submits to the backend
 *   keel_blk_grow, keel_blk_inject           any thread, also while requests
 *                                            flow in any context
 *   keel_blk_getlength, keel_blk_engine_name(_in), keel_blk_get_*  any thread
 *   keel_blk_io_plug / unplug                any thread (per-thread state: a
 *                                            thread's plug batches what it
 *                                            submits on its own context's
 *                                            engine)
 */
#ifndef KEEL_BLOCK_BLOCK_BACKEND_H
#define KEEL_BLOCK_BLOCK_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "image-lock.h"
#include "../loop/aio.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum KeelBlkAio {
    KEEL_BLK_AIO_IO_URING,
    KEEL_BLK_AIO_NATIVE,        /* linux-aio (libaio) */
    KEEL_BLK_AIO_THREADS,
} KeelBlkAio;

typedef enum KeelBlkCache {
    KEEL_BLK_CACHE_WRITEBACK,
    KEEL_BLK_CACHE_NONE,
    KEEL_BLK_CACHE_WRITETHROUGH,
    KEEL_BLK_CACHE_DIRECTSYNC,
    KEEL_BLK_CACHE_UNSAFE,
} KeelBlkCache;

typedef enum KeelBlkDetectZeroes {
    KEEL_BLK_DETECT_ZEROES_OFF,
    KEEL_BLK_DETECT_ZEROES_ON,
    KEEL_BLK_DETECT_ZEROES_UNMAP,
} KeelBlkDetectZeroes;

typedef struct KeelBlkOptions {
    char *filename;             /* owned (g_free) */
    KeelBlkAio aio;
    KeelBlkCache cache;
    bool readonly;
    bool discard_unmap;
    bool probe_format;          /* format=probe (keel_blk_is_probed_raw) */
    KeelBlkLocking locking;
    bool force_share;
    bool no_flush;              /* cache.no-flush=on */
    KeelBlkDetectZeroes detect_zeroes;
    int64_t offset, size;       /* raw node window; size 0 = to the end */
    bool fixed_size;
    char *inject;               /* owned; rules separated by ';' or NULL */
} KeelBlkOptions;

typedef struct KeelBlockBackend KeelBlockBackend;

/* Completion callback of the keel_blk_aio_* calls: @ret is 0 or -errno. */
typedef void KeelBlkCompletionFunc(void *opaque, int ret);

/* ---- options --------------------------------------------------------- */

/* Defaults: no file, aio=io_uring, cache=writeback, read-write, discard=ignore. */
void keel_blk_options_init(KeelBlkOptions *opts);
/* Parse "key=value,..." on top of @opts.  A first item without '=' is taken
 * as file=.  Returns 0, or -1 with a one-line message in *@errmsg (g_free). */
int keel_blk_options_parse(KeelBlkOptions *opts, const char *str, char **errmsg);
void keel_blk_options_clear(KeelBlkOptions *opts);

const char *keel_blk_aio_name(KeelBlkAio aio);          /* "io_uring", "native", "threads" */
const char *keel_blk_cache_name(KeelBlkCache cache);
int keel_blk_aio_from_name(const char *name, KeelBlkAio *aio);       /* 0 or -1 */
int keel_blk_cache_from_name(const char *name, KeelBlkCache *cache); /* 0 or -1 */
int keel_blk_locking_from_name(const char *name, KeelBlkLocking *locking); /* 0 or -1 */
int keel_blk_detect_zeroes_from_name(const char *name, KeelBlkDetectZeroes *dz); /* 0 or -1 */

/* ---- lifetime ---------------------------------------------------------- */

/* Open @opts->filename in @ctx (NULL: the caller's current context, which
 * must exist).  Returns NULL with a one-line message in *@errmsg (g_free) on
 * failure, e.g. QEMU's "aio=native was specified, but it requires
 * cache.direct=on, which was not specified". */
KeelBlockBackend *keel_blk_open(const KeelBlkOptions *opts, KeelAioContext *ctx,
                                char **errmsg);
KeelBlockBackend *keel_blk_open_str(const char *options, KeelAioContext *ctx,
                                    char **errmsg);
/* Drain, release the engine state of the home and of every context still
 * attached (each in its own thread), close the file, free. */
void keel_blk_close(KeelBlockBackend *blk);

/* ---- properties -------------------------------------------------------- */

/* Current size of the file in bytes, or -errno. */
int64_t keel_blk_getlength(KeelBlockBackend *blk);
/* Grows the disk to @size bytes (QEMU's blk_truncate for a growing raw
 * file): extends the file sparsely (ftruncate) to offset + @size, and a
 * fixed-size backend's window with it, so requests up to the new end are
 * accepted.  Shrinking is refused (-ENOTSUP: a guest may still use the
 * blocks), as is a host block device (-ENOTSUP) or a read-only backend
 * (-EROFS).  Returns 0 or -errno.  Any thread: requests in flight in any
 * context see the old or the new end. */
int keel_blk_grow(KeelBlockBackend *blk, uint64_t size);
/* The engine in use now by the home context: "io_uring", "linux-aio" or
 * "threads". */
const char *keel_blk_engine_name(KeelBlockBackend *blk);
/* The same for @ctx's engine instance: "none" while @ctx is attached but
 * has not submitted yet (or is neither attached nor the home). */
const char *keel_blk_engine_name_in(KeelBlockBackend *blk, KeelAioContext *ctx);
/* Alignment (bytes) at which requests avoid bouncing: the logical block
 * size with O_DIRECT, 1 otherwise. */
uint32_t keel_blk_get_request_alignment(KeelBlockBackend *blk);
bool keel_blk_is_read_only(KeelBlockBackend *blk);
/* Opened with format=probe and found raw: the caller prints QEMU's warning
 * (keel_blk_probed_raw_warning) and sector-0 writes are restricted. */
bool keel_blk_is_probed_raw(KeelBlockBackend *blk);
/* QEMU's three-line warning for a probed raw image (static text with the
 * file name; g_free the result). */
char *keel_blk_probed_raw_warning(const char *filename);
KeelBlkCache keel_blk_get_cache_mode(KeelBlockBackend *blk);
const char *keel_blk_get_filename(KeelBlockBackend *blk);
KeelAioContext *keel_blk_get_aio_context(KeelBlockBackend *blk);
/* Requests started on this backend so far, in every context (each type
 * counts). */
uint64_t keel_blk_get_request_count(KeelBlockBackend *blk);

/* ---- coroutine API (a coroutine in an own thread: home or attached) ------ */
int keel_blk_co_preadv(KeelBlockBackend *blk, int64_t offset,
                       const struct iovec *iov, int iovcnt);
int keel_blk_co_pwritev(KeelBlockBackend *blk, int64_t offset,
                        const struct iovec *iov, int iovcnt);
int keel_blk_co_pread(KeelBlockBackend *blk, int64_t offset, void *buf, size_t bytes);
int keel_blk_co_pwrite(KeelBlockBackend *blk, int64_t offset, const void *buf,
                       size_t bytes);
int keel_blk_co_flush(KeelBlockBackend *blk);
/* Advisory: 0 when ignored (discard=ignore, or unaligned parts with
 * O_DIRECT); -ENOTSUP when the file system cannot punch holes. */
int keel_blk_co_pdiscard(KeelBlockBackend *blk, int64_t offset, int64_t bytes);
/* The range reads back as zeros afterwards (extends the file if needed). */
int keel_blk_co_pwrite_zeroes(KeelBlockBackend *blk, int64_t offset, int64_t bytes);

/* ---- callback API -------------------------------------------------------
 * Each call starts a coroutine for the request; @cb(@opaque, ret) runs once,
 * when it is done, in the caller's thread when that is an own thread (the
 * home, or an attached context's), else in the home thread.  In the thread
 * it was called from it never runs before the call returns (called from a
 * thread that forwards, it may run in the home thread at any time after
 * the call started).  The callback may start new requests (they are
 * batched with the others of the same completion pass) but must not drain,
 * detach or close the backend. */
void keel_blk_aio_preadv(KeelBlockBackend *blk, int64_t offset,
                         const struct iovec *iov, int iovcnt,
                         KeelBlkCompletionFunc *cb, void *opaque);
void keel_blk_aio_pwritev(KeelBlockBackend *blk, int64_t offset,
                          const struct iovec *iov, int iovcnt,
                          KeelBlkCompletionFunc *cb, void *opaque);
void keel_blk_aio_flush(KeelBlockBackend *blk, KeelBlkCompletionFunc *cb, void *opaque);
void keel_blk_aio_pdiscard(KeelBlockBackend *blk, int64_t offset, int64_t bytes,
                           KeelBlkCompletionFunc *cb, void *opaque);
void keel_blk_aio_pwrite_zeroes(KeelBlockBackend *blk, int64_t offset, int64_t bytes,
                                KeelBlkCompletionFunc *cb, void *opaque);

/* ---- quiescing and moving ------------------------------------------------ */

/* Wait until no request of @blk is in flight in any context, callbacks of
 * the callback API included (requests started meanwhile are waited for
 * too): QEMU's bdrv_drain_all for one backend.  In the home thread outside
 * a coroutine it runs the loop (keel_aio_poll); in a coroutine it yields;
 * in another thread with a context it runs that context's loop; in a
 * thread without one it sleeps until the last request's thread kicks it.
 * Never from a request's own callback (it would wait for itself) or while
 * plugged. */
void keel_blk_drain(KeelBlockBackend *blk);

/* Let @ctx's home thread submit to @blk directly (see Threads at the top):
 * from now on keel_blk_aio_* and keel_blk_co_* called there run there, on
 * @ctx's own engine instance, set up at its first request.  Attaching the
 * home, or a context twice, is allowed (one attachment).  Takes a reference
 * to @ctx until detached.  Detach (or close the backend) before stopping
 * @ctx's thread: its engine instance is released in that thread.  Returns
 * 0, or -ENOSPC (+*@errmsg) beyond 64 contexts, -EINVAL for a NULL @ctx. */
int keel_blk_attach_aio_context(KeelBlockBackend *blk, KeelAioContext *ctx, char **errmsg);
/* Undo the attach: waits for @ctx's requests (callbacks included), then
 * releases its engine instance in @ctx's thread.  Requests submitted in
 * @ctx's thread afterwards are forwarded to the home again.  Detaching the
 * home keeps it the home; a context not attached is ignored. */
void keel_blk_detach_aio_context(KeelBlockBackend *blk, KeelAioContext *ctx);

/* Move @blk's home to @ctx: drain, release the engine state in the old
 * context's thread (unless the old home is also attached: it stays so), set
 * it up in the new one's (an attached @ctx keeps its instance).  The engine
 * may change if the new context refuses the current one.  Returns 0 or
 * -errno (+*@errmsg). */
int keel_blk_set_aio_context(KeelBlockBackend *blk, KeelAioContext *ctx, char **errmsg);

/* Add error-injection rules at run time (same syntax as inject=; several
 * separated by ';').  Any thread, also while requests flow.  Returns 0 or
 * -1 with *@errmsg. */
int keel_blk_inject(KeelBlockBackend *blk, const char *rules, char **errmsg);

/* ---- batching -------------------------------------------------------------
 * Between plug and unplug (nestable, per thread) the io_uring and linux-aio
 * engines queue submissions and send them with one syscall at the last
 * unplug (each thread its own context's engine instance; requests that a
 * thread forwards to the home are not batched by its plug).  Wrap the processing of a batch of guest requests in them.  Never
 * yield (wait for a request) while plugged: the request may not be sent. */
void keel_blk_io_plug(void);
void keel_blk_io_unplug(void);

/* ---- features report ---------------------------------------------------
 * Registers "block-engine" (the engine the default configuration
 * aio=io_uring cache=none gets here, probing the kernel) and "block-preadv"
 * (preadv/pwritev or pread/pwrite loops in the thread-pool engine). */
void keel_block_features_register(void);

/* What a backend opened with @aio and O_DIRECT = @direct would use now
 * ("io_uring", "linux-aio", "threads"), probing the kernel; @reason (may be
 * NULL) says why the preferred engine is not used ("default", "KEEL_AVOID",
 * "not-compiled", "eventfd-unavailable" or an errno name). */
const char *keel_blk_probe_engine(KeelBlkAio aio, bool direct, const char **reason);

#ifdef __cplusplus
}
#endif

#endif
