/*
 * block/block-int.h — internal to block/: the engine interface, the raw file
 * driver and the helpers they share.  Not installed.
 *
 * Layering inside block/:
 *   block-backend.c  options, request accounting, drain, callback API
 *   blkdebug.c       error-injection rules checked before each request
 *   file-raw.c       the raw driver: alignment/bouncing, short transfers,
 *                    EOF, flush/discard/write-zeroes semantics
 *   engine.c         engine choice and fallback, per-AioContext engine
 *                    state, plug/unplug, the features report
 *   engine-*.c       one transfer attempt per call on one engine
 *
 * Thread rules: a request runs in one thread from start to end: the home
 * thread of the backend's AioContext, or of a context attached with
 * keel_blk_attach_aio_context() when it was submitted there (co_* functions
 * in a coroutine of that thread).  Each such context has its own engine
 * instance (EngineCtx), used only by that thread; what the requests of
 * several contexts share (RawFile, Blkdebug) is thread-safe as noted at
 * each field.  See "Multiqueue" in block-backend.c for the memory-ordering
 * points.
 */
#ifndef KEEL_BLOCK_BLOCK_INT_H
#define KEEL_BLOCK_BLOCK_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "block/block-backend.h"
#include "block/image-lock.h"
#include "compat/atomic.h"
#include "compat/avoid.h"
#include "coroutine/co-lock.h"
#include "coroutine/coroutine.h"

/* One engine call moves at most this much, so a result fits an int. */
#define BLOCK_MAX_OP_BYTES (1 << 30)
/* preadv/pwritev and the engines take at most this many iovecs at once. */
#define BLOCK_MAX_IOV 1024

/* ---- engines ------------------------------------------------------------ */

typedef struct BlockEngineOps {
    const char *name;   /* "io_uring", "linux-aio", "threads" */
    /* Per-AioContext state, created in @ctx's home thread.  Returns 0, or
     * -errno when the kernel refuses the engine (the caller falls back). */
    int (*ctx_new)(KeelAioContext *ctx, void **state);
    void (*ctx_free)(void *state);
    /* One preadv/pwritev attempt: bytes moved (maybe short) or -errno. */
    int (*co_rw)(void *state, int fd, bool write, int64_t offset,
                 const struct iovec *iov, int iovcnt);
    /* fdatasync and fallocate; NULL means "use the thread pool". */
    int (*co_fdatasync)(void *state, int fd);
    int (*co_fallocate)(void *state, int fd, int mode, int64_t offset, int64_t len);
} BlockEngineOps;

extern const BlockEngineOps engine_threads_ops;
#ifdef CONFIG_LINUX_AIO
extern const BlockEngineOps engine_linux_aio_ops;
/* Probe: 0 when io_setup works and event notifiers are eventfds, or -errno
 * (-ENODEV: no eventfd, which linux-aio needs). */
int linux_aio_probe_kernel(void);
#endif
#ifdef CONFIG_LINUX_IO_URING
extern const BlockEngineOps engine_io_uring_ops;
/* Probe: 0 when a ring can be set up and has the opcodes we need, or -errno. */
int io_uring_probe_kernel(void);
#endif

extern KeelSeam block_io_uring_seam;
extern KeelSeam block_linux_aio_seam;
extern KeelSeam block_preadv_seam;

/* Thread-pool implementations, also used by the other engines for what they
 * cannot do natively.  Coroutine in a thread with an AioContext. */
int threads_co_rw(int fd, bool write, int64_t offset, const struct iovec *iov, int iovcnt);
int threads_co_fdatasync(int fd);
/* -ENOTSUP when fallocate (or this mode) is not available. */
int threads_co_fallocate(int fd, int mode, int64_t offset, int64_t len);
/* The features report's "block-preadv" line; probes the kernel.  Any thread. */
const char *threads_preadv_active(const char **reason);

/* Engine state shared by every backend of one AioContext. */
typedef struct EngineCtx {
    const BlockEngineOps *ops;
    KeelAioContext *ctx;
    void *state;
    unsigned refcnt;            /* protected by the registry lock */
} EngineCtx;

/* Set up the engine for @aio (+O_DIRECT @direct) in @ctx, following the
 * fallback chain; never fails (threads always works).  Home thread of @ctx. */
EngineCtx *engine_attach(KeelBlkAio aio, bool direct, KeelAioContext *ctx);
/* Drop a reference; the last one frees the state.  Home thread of its ctx. */
void engine_detach(EngineCtx *ec);

int engine_co_rw(EngineCtx *ec, int fd, bool write, int64_t offset,
                 const struct iovec *iov, int iovcnt);
int engine_co_fdatasync(EngineCtx *ec, int fd);
int engine_co_fallocate(EngineCtx *ec, int fd, int mode, int64_t offset, int64_t len);

/* Run @fn(@opaque) at the calling thread's last keel_blk_io_unplug(), or now
 * when the thread is not plugged.  Calls with the same pair are merged. */
void block_defer_call(void (*fn)(void *), void *opaque);

/* ---- raw file driver ----------------------------------------------------- */

typedef struct RawTrackedReq RawTrackedReq;

typedef struct RawFile {
    int fd;
    bool direct;                /* O_DIRECT */
    bool readonly;
    bool no_flush;              /* cache=unsafe */
    bool discard_unmap;
    bool has_zero_range;        /* atomic; cleared once FALLOC_FL_ZERO_RANGE fails */
    bool has_punch_hole;        /* atomic; cleared once punching holes fails */
    bool probed_raw;            /* format=probe found raw: guard sector 0 */
    /* fixed-size: EOF before this is -EIO (0: none); atomic (keel_blk_grow) */
    int64_t fixed_end KEEL_ATOMIC_ALIGNED;
    bool is_blockdev;           /* a host block device: BLKGETSIZE64, BLKDISCARD,
                                 * BLKZEROOUT instead of lseek and fallocate */
    ImageLock lock;             /* QEMU's lock bytes (unless locking=off) */
    uint32_t req_align;         /* offsets/lengths; 1 without O_DIRECT */
    uint32_t mem_align;         /* buffer addresses; 1 without O_DIRECT */
    /* With O_DIRECT, writes in flight by aligned range; read-modify-write
     * requests serialise against overlapping ones, whichever thread runs
     * them: the three fields below are only touched under tracked_lock. */
    KeelCoMutex tracked_lock;
    RawTrackedReq *tracked;
    unsigned serialising_in_flight;
    KeelCoQueue tracked_waiters;
} RawFile;

/* Open the file (not the engine).  Returns 0 or -errno with *@errmsg. */
int raw_open(RawFile *raw, const KeelBlkOptions *opts, char **errmsg);
void raw_close(RawFile *raw);
int64_t raw_getlength(RawFile *raw);

/* The requests.  @ec is the engine instance of the calling thread's context
 * (the one the request was submitted in). */
int raw_co_preadv(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes,
                  const struct iovec *iov, int iovcnt);
int raw_co_pwritev(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes,
                   const struct iovec *iov, int iovcnt);
int raw_co_flush(RawFile *raw, EngineCtx *ec);
int raw_co_pdiscard(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes);
/* @may_unmap: punch a hole instead when discard=unmap and it is aligned. */
int raw_co_pwrite_zeroes(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes,
                         bool may_unmap);

/* ---- error injection (blkdebug.c; syntax in block/blkdebug.h) ------------- */

typedef enum BlockOp {
    BLOCK_OP_READ,
    BLOCK_OP_WRITE,
    BLOCK_OP_FLUSH,
    BLOCK_OP_DISCARD,
    BLOCK_OP_WRITE_ZEROES,
} BlockOp;

typedef struct Blkdebug Blkdebug;

/* An empty rule set (a backend always has one, so that rules added at run
 * time never race with readers of the pointer). */
Blkdebug *blkdebug_new(void);
/* Add rules ("RULE;RULE...") to *@dbg (created when NULL and a rule was
 * given).  Returns 0 or -1 with *@errmsg (g_free).  Any thread. */
int blkdebug_add_rules(Blkdebug **dbg, const char *rules, char **errmsg);
void blkdebug_free(Blkdebug *dbg);
/* Apply the rules to request number @req_no (1-based): may sleep (delay=),
 * returns 0 or the injected -errno.  A coroutine in any thread; rules may
 * be added (blkdebug_add_rules on an existing Blkdebug) meanwhile, and a
 * "once" rule fires for exactly one request even when several threads
 * check at the same time. */
int blkdebug_co_check(Blkdebug *dbg, BlockOp op, int64_t offset, int64_t bytes,
                      uint64_t req_no);

/* ---- iovec helpers -------------------------------------------------------- */

static inline int64_t iov_total(const struct iovec *iov, int iovcnt)
{
    int64_t n = 0;
    for (int i = 0; i < iovcnt; i++) {
        n += iov[i].iov_len;
    }
    return n;
}

/* Copy between an iovec (from byte @skip on) and a flat buffer. */
void iov_to_buf(const struct iovec *iov, int iovcnt, int64_t skip, void *buf, int64_t bytes);
void iov_from_buf(const struct iovec *iov, int iovcnt, int64_t skip, const void *buf,
                  int64_t bytes);
void iov_memset(const struct iovec *iov, int iovcnt, int64_t skip, int c, int64_t bytes);
/* Fill @out (room for @max entries) with the part of @iov starting at byte
 * @skip, at most @bytes long.  Returns the number of entries and sets
 * *@taken to the bytes they cover. */
int iov_slice(const struct iovec *iov, int iovcnt, int64_t skip, int64_t bytes,
              struct iovec *out, int max, int64_t *taken);

/* Aligned allocation for bounce buffers; aborts on failure; free with free(). */
void *block_memalign(size_t align, size_t size);

#endif
