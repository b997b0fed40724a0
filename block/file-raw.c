/*
 * The raw file driver: opens the image with the flags the cache mode asks
 * for, and turns each request into engine transfers — bouncing what O_DIRECT
 * cannot take, continuing short transfers, zero-filling reads past EOF, and
 * mapping flush / discard / write-zeroes onto fdatasync and fallocate.
 */
#include "config.h"

#include "block/block-int.h"
#include "block/probe.h"
#include "compat/osdep.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/fs.h>
#ifndef FALLOC_FL_KEEP_SIZE
#include <linux/falloc.h>
#endif

#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif
#ifndef FALLOC_FL_ZERO_RANGE
#define FALLOC_FL_ZERO_RANGE 0x10
#endif
#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01
#endif

/* Bounced requests are processed in pieces of at most this size, so an
 * unaligned multi-gigabyte request does not allocate as much. */
#define BOUNCE_MAX (1 << 20)
/* Write-zeroes without fallocate writes zeros from a buffer this big. */
#define ZERO_BUF_MAX (1 << 20)

struct RawTrackedReq {
    int64_t start, end;         /* aligned byte range [start, end) */
    bool serialising;
    RawTrackedReq *next, *prev;
};

static inline int64_t align_down(int64_t v, uint32_t a)
{
    return v - (v % a);
}

static inline int64_t align_up(int64_t v, uint32_t a)
{
    return align_down(v + a - 1, a);
}

/* ---- open / close --------------------------------------------------------- */

static uint32_t sysfs_logical_block_size(dev_t dev)
{
    /* A whole disk has queue/ itself; a partition has it in its parent. */
    static const char *const paths[] = { "queue/logical_block_size",
                                         "../queue/logical_block_size" };
    for (size_t i = 0; i < G_N_ELEMENTS(paths); i++) {
        char path[128];
        char *contents = NULL;
        snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/%s", major(dev), minor(dev), paths[i]);
        if (g_file_get_contents(path, &contents, NULL, NULL)) {
            unsigned long v = strtoul(contents, NULL, 10);
            g_free(contents);
            if (v >= 512 && v <= 65536 && !(v & (v - 1))) {
                return (uint32_t)v;
            }
        }
    }
    return 0;
}

/* The O_DIRECT alignment: what the kernel says (statx STATX_DIOALIGN, 6.1+),
 * else the device's logical block size, else 4096 (a multiple of every
 * common one: correct, at worst some needless bouncing).  Probing with
 * reads is unreliable: holes and EOF skip the alignment check. */
static void raw_probe_alignment(RawFile *raw)
{
    struct stat st;
    uint32_t align = 0;

    raw->req_align = raw->mem_align = 1;
    if (!raw->direct) {
        return;
    }
#ifdef STATX_DIOALIGN
    {
        struct statx stx;
        if (statx(raw->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
            (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
            align = stx.stx_dio_offset_align;
        }
    }
#endif
    if (!align && fstat(raw->fd, &st) == 0) {
        if (S_ISBLK(st.st_mode)) {
#ifdef BLKSSZGET
            int size = 0;
            if (ioctl(raw->fd, BLKSSZGET, &size) == 0 && size > 0) {
                align = (uint32_t)size;
            }
#endif
        } else {
            align = sysfs_logical_block_size(st.st_dev);
        }
    }
    if (!align || (align & (align - 1)) || align > 65536) {
        align = 4096;
    }
    raw->req_align = align;
    /* Buffers are checked at the same alignment (base and length of every
     * iovec), which satisfies every kernel's O_DIRECT rules. */
    raw->mem_align = align;
}

/* What a non-image file is, for the refusal. */
static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode)) {
        return "Is a directory";
    }
    if (S_ISFIFO(mode)) {
        return "is a FIFO, not an image";
    }
    if (S_ISSOCK(mode)) {
        return "is a socket, not an image";
    }
    if (S_ISCHR(mode)) {
        return "is a character device, not an image";
    }
    return NULL;
}

/* format=probe: refuse another format's magic; remember a probed raw. */
static int raw_probe_format(RawFile *raw, const char *filename, char **errmsg)
{
    size_t len = MAX(raw->req_align, 4096u);
    uint8_t *buf = block_memalign(MAX(raw->mem_align, 4096u), len);
    ssize_t n = KEEL_RETRY_EINTR(pread(raw->fd, buf, len, 0));
    const char *format;
    int ret = 0;

    if (n < 0) {
        ret = -errno;
        *errmsg = g_strdup_printf("Could not read image for determining its format: %s",
                                  g_strerror(errno));
    } else if ((format = block_probe_format(buf, (size_t)n)) != NULL) {
        *errmsg = g_strdup_printf("'%s' is a %s image; keel serves raw images only "
                                  "(convert it with qemu-img convert -O raw, or "
                                  "format=raw if you mean it)", filename, format);
        ret = -EMEDIUMTYPE;
    } else {
        raw->probed_raw = true;
    }
    free(buf);
    return ret;
}

int raw_open(RawFile *raw, const KeelBlkOptions *opts, char **errmsg)
{
    int flags = O_CLOEXEC | (opts->readonly ? O_RDONLY : O_RDWR);
    const char *kind = NULL;
    struct stat st;
    int fd, ret;

    memset(raw, 0, sizeof(*raw));
    raw->fd = -1;
    raw->lock.fd = -1;
    switch (opts->cache) {
    case KEEL_BLK_CACHE_NONE:
        raw->direct = true;
        break;
    case KEEL_BLK_CACHE_DIRECTSYNC:
        raw->direct = true;
        flags |= O_DSYNC;
        break;
    case KEEL_BLK_CACHE_WRITETHROUGH:
        flags |= O_DSYNC;
        break;
    case KEEL_BLK_CACHE_UNSAFE:
        raw->no_flush = true;
        break;
    case KEEL_BLK_CACHE_WRITEBACK:
        break;
    }
    raw->no_flush |= opts->no_flush;
    if (raw->direct) {
        flags |= O_DIRECT;
    }
    /* O_NONBLOCK until fstat says what it is: opening a FIFO must not wait
     * for a writer. */
    fd = KEEL_RETRY_EINTR(open(opts->filename, flags | O_NONBLOCK));
    if (fd < 0) {
        int err = errno;
        if (err == EINVAL && raw->direct) {
            *errmsg = g_strdup_printf("Could not open '%s': %s (the file system does not "
                                      "support O_DIRECT; try cache=writeback)",
                                      opts->filename, g_strerror(err));
        } else {
            *errmsg = g_strdup_printf("Could not open '%s': %s", opts->filename,
                                      g_strerror(err));
        }
        return -err;
    }
    if (fstat(fd, &st) < 0 || (kind = file_kind(st.st_mode)) != NULL) {
        ret = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        *errmsg = g_strdup_printf("Could not open '%s': %s", opts->filename,
                                  kind ? kind : g_strerror(errno));
        close(fd);
        return ret;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    raw->fd = fd;
    raw->is_blockdev = S_ISBLK(st.st_mode);
    raw->readonly = opts->readonly;
    raw->discard_unmap = opts->discard_unmap;
    raw->has_zero_range = true;
    raw->has_punch_hole = true;
    keel_co_mutex_init(&raw->tracked_lock);
    keel_co_queue_init(&raw->tracked_waiters);
    raw_probe_alignment(raw);
    if (opts->locking != KEEL_BLK_LOCKING_OFF) {
        unsigned perm, shared;

        image_lock_perms(!opts->readonly, false, opts->force_share, &perm, &shared);
        ret = image_lock_acquire(&raw->lock, fd, opts->filename, perm, shared, errmsg);
        if (ret < 0) {
            raw_close(raw);
            return ret;
        }
    }
    if (opts->probe_format) {
        ret = raw_probe_format(raw, opts->filename, errmsg);
        if (ret < 0) {
            raw_close(raw);
            return ret;
        }
    }
    return 0;
}

void raw_close(RawFile *raw)
{
    image_lock_release(&raw->lock);
    if (raw->fd >= 0) {
        close(raw->fd);
        raw->fd = -1;
    }
}

int64_t raw_getlength(RawFile *raw)
{
    off_t end;

#ifdef BLKGETSIZE64
    if (raw->is_blockdev) {
        uint64_t bytes;
        if (ioctl(raw->fd, BLKGETSIZE64, &bytes) == 0) {
            return (int64_t)bytes;
        }
    }
#endif
    end = lseek(raw->fd, 0, SEEK_END);

    return end < 0 ? -errno : (int64_t)end;
}

/* ---- tracking for read-modify-write (O_DIRECT only) ------------------------
 * A read-modify-write rewrites whole blocks, including bytes outside its own
 * range, so it must not overlap any other write in flight.  Every write-like
 * request registers its aligned range; an RMW ("serialising") waits until
 * nothing overlapping is in flight, and a write waits while an overlapping
 * RMW is.  Waiters are not registered, so two waiters never wait for each
 * other.  Requests of several threads (attached contexts) share the list:
 * it is only touched under tracked_lock, a coroutine mutex that
 * keel_co_queue_wait drops while waiting; a waiter woken by tracked_end
 * resumes in its own thread and takes the mutex back before re-checking.
 * The mutex's acquire/release orders each thread's list updates before the
 * next holder's reads (memory-ordering note 4 in block-backend.c). */
static bool tracked_conflict(RawFile *raw, const RawTrackedReq *req)
{
    if (!req->serialising && raw->serialising_in_flight == 0) {
        return false;
    }
    for (RawTrackedReq *r = raw->tracked; r; r = r->next) {
        if ((req->serialising || r->serialising) &&
            r->start < req->end && req->start < r->end) {
            return true;
        }
    }
    return false;
}

static void tracked_begin(RawFile *raw, RawTrackedReq *req, int64_t offset, int64_t bytes,
                          bool serialising)
{
    req->start = align_down(offset, raw->req_align);
    req->end = align_up(offset + bytes, raw->req_align);
    req->serialising = serialising;
    keel_co_mutex_lock(&raw->tracked_lock);
    while (tracked_conflict(raw, req)) {
        keel_co_queue_wait(&raw->tracked_waiters, &raw->tracked_lock);
    }
    req->prev = NULL;
    req->next = raw->tracked;
    if (raw->tracked) {
        raw->tracked->prev = req;
    }
    raw->tracked = req;
    if (serialising) {
        raw->serialising_in_flight++;
    }
    keel_co_mutex_unlock(&raw->tracked_lock);
}

static void tracked_end(RawFile *raw, RawTrackedReq *req)
{
    keel_co_mutex_lock(&raw->tracked_lock);
    if (req->prev) {
        req->prev->next = req->next;
    } else {
        raw->tracked = req->next;
    }
    if (req->next) {
        req->next->prev = req->prev;
    }
    if (req->serialising) {
        raw->serialising_in_flight--;
    }
    if (!keel_co_queue_empty(&raw->tracked_waiters)) {
        keel_co_queue_restart_all(&raw->tracked_waiters);
    }
    keel_co_mutex_unlock(&raw->tracked_lock);
}

/* ---- transfers -------------------------------------------------------------- */

/* Move @bytes between the file at @offset and @iov, through the engine,
 * until done.  Reads that hit EOF zero-fill the rest.  With O_DIRECT,
 * @offset, @bytes and @iov must be aligned. */
static int raw_co_transfer(RawFile *raw, EngineCtx *ec, bool write, int64_t offset, int64_t bytes,
                           const struct iovec *iov, int iovcnt)
{
    struct iovec stack_slice[16];
    struct iovec *slice = stack_slice;
    int slice_max = G_N_ELEMENTS(stack_slice);
    int64_t done = 0;
    int ret = 0;

    while (done < bytes) {
        const struct iovec *v;
        int64_t want;
        int cnt, n;

        if (done == 0 && iovcnt <= BLOCK_MAX_IOV && bytes <= BLOCK_MAX_OP_BYTES) {
            /* The common case: one engine call on the caller's iovec. */
            v = iov;
            cnt = iovcnt;
            want = bytes;
        } else {
            /* The rest after a short transfer, or a request too big for one
             * call.  (With O_DIRECT every piece stays aligned: the iovecs
             * are, and so are the limits.) */
            if (slice == stack_slice && iovcnt > slice_max) {
                slice_max = MIN(iovcnt, BLOCK_MAX_IOV);
                slice = g_new(struct iovec, slice_max);
            }
            cnt = iov_slice(iov, iovcnt, done, MIN(bytes - done, (int64_t)BLOCK_MAX_OP_BYTES),
                            slice, slice_max, &want);
            v = slice;
        }
        do {
            n = engine_co_rw(ec, raw->fd, write, offset + done, v, cnt);
        } while (n == -EINTR || n == -EAGAIN);
        if (n < 0) {
            ret = n;
            break;
        }
        done += n;
        if (n == want) {
            continue;
        }
        /* A short transfer: go on from where it stopped, unless... */
        if (!write && (n == 0 || (raw->direct && ((offset + done) % raw->req_align)))) {
            /* ...EOF (with O_DIRECT, EOF inside a block): zeros from here,
             * unless the disk's size is fixed and the file shrank. */
            if (offset + done < keel_atomic_read(&raw->fixed_end)) {
                ret = -EIO;
                break;
            }
            iov_memset(iov, iovcnt, done, 0, bytes - done);
            break;
        }
        if (write && n == 0) {
            ret = -ENOSPC;          /* a write that moves nothing cannot progress */
            break;
        }
        if (raw->direct && ((offset + done) % raw->req_align)) {
            ret = -EIO;             /* the kernel cut an O_DIRECT write mid-block */
            break;
        }
    }
    if (slice != stack_slice) {
        g_free(slice);
    }
    return ret;
}

static bool iov_is_aligned(const struct iovec *iov, int iovcnt, uint32_t align)
{
    for (int i = 0; i < iovcnt; i++) {
        if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & (align - 1)) {
            return false;
        }
    }
    return true;
}

/* One piece of a bounced read: [offset, offset+bytes) into @iov at @skip. */
static int raw_co_bounce_read(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes,
                              const struct iovec *iov, int iovcnt, int64_t skip)
{
    int64_t start = align_down(offset, raw->req_align);
    int64_t len = align_up(offset + bytes, raw->req_align) - start;
    char *buf = block_memalign(raw->mem_align, (size_t)len);
    struct iovec b = { buf, (size_t)len };
    int ret;

    ret = raw_co_transfer(raw, ec, false, start, len, &b, 1);
    if (ret == 0) {
        iov_from_buf(iov, iovcnt, skip, buf + (offset - start), bytes);
    }
    free(buf);
    return ret;
}

/* One piece of a bounced write.  @iov NULL writes zeros. */
static int raw_co_bounce_write(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes,
                               const struct iovec *iov, int iovcnt, int64_t skip)
{
    uint32_t a = raw->req_align;
    int64_t start = align_down(offset, a);
    int64_t end = align_up(offset + bytes, a);
    int64_t len = end - start;
    bool rmw = start != offset || end != offset + bytes;
    char *buf = block_memalign(raw->mem_align, (size_t)len);
    RawTrackedReq tr;
    int ret = 0;

    tracked_begin(raw, &tr, offset, bytes, rmw);
    if (start != offset) {
        struct iovec head = { buf, a };
        ret = raw_co_transfer(raw, ec, false, start, a, &head, 1);
    }
    if (ret == 0 && end != offset + bytes && (end - a > start || start == offset)) {
        struct iovec tail = { buf + len - a, a };
        ret = raw_co_transfer(raw, ec, false, end - a, a, &tail, 1);
    }
    if (ret == 0) {
        if (iov) {
            iov_to_buf(iov, iovcnt, skip, buf + (offset - start), bytes);
        } else {
            memset(buf + (offset - start), 0, (size_t)bytes);
        }
        struct iovec b = { buf, (size_t)len };
        ret = raw_co_transfer(raw, ec, true, start, len, &b, 1);
    }
    tracked_end(raw, &tr);
    free(buf);
    return ret;
}

/* Split a bounced request into pieces that end on aligned boundaries. */
static int raw_co_bounced(RawFile *raw, EngineCtx *ec, bool write, int64_t offset, int64_t bytes,
                          const struct iovec *iov, int iovcnt)
{
    int64_t done = 0;

    while (done < bytes) {
        int64_t pos = offset + done;
        int64_t piece = MIN(bytes - done, align_down(pos + BOUNCE_MAX, raw->req_align) - pos);
        int ret;

        if (piece <= 0) {
            piece = MIN(bytes - done, (int64_t)BOUNCE_MAX);
        }
        ret = write ? raw_co_bounce_write(raw, ec, pos, piece, iov, iovcnt, done)
                    : raw_co_bounce_read(raw, ec, pos, piece, iov, iovcnt, done);
        if (ret < 0) {
            return ret;
        }
        done += piece;
    }
    return 0;
}

static bool raw_needs_bounce(RawFile *raw, int64_t offset, int64_t bytes,
                             const struct iovec *iov, int iovcnt)
{
    return raw->req_align > 1 &&
           (((offset | bytes) & (raw->req_align - 1)) ||
            !iov_is_aligned(iov, iovcnt, raw->mem_align));
}

int raw_co_preadv(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes,
                  const struct iovec *iov, int iovcnt)
{
    if (bytes == 0) {
        return 0;
    }
    if (raw_needs_bounce(raw, offset, bytes, iov, iovcnt)) {
        return raw_co_bounced(raw, ec, false, offset, bytes, iov, iovcnt);
    }
    return raw_co_transfer(raw, ec, false, offset, bytes, iov, iovcnt);
}

/* A probed raw image: would this write make sector 0 probe as another
 * format?  (QEMU's raw driver refuses such writes the same way.) */
static bool raw_co_write_changes_format(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes,
                                        const struct iovec *iov, int iovcnt)
{
    uint8_t sector[BLOCK_PROBE_BYTES];
    struct iovec v = { sector, sizeof(sector) };
    int64_t n;

    if (offset >= BLOCK_PROBE_BYTES) {
        return false;
    }
    if (raw_co_preadv(raw, ec, 0, sizeof(sector), &v, 1) < 0) {
        return true;                /* cannot tell: refuse rather than risk it */
    }
    n = MIN(bytes, BLOCK_PROBE_BYTES - offset);
    iov_to_buf(iov, iovcnt, 0, sector + offset, n);
    return block_probe_format(sector, sizeof(sector)) != NULL;
}

int raw_co_pwritev(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes,
                   const struct iovec *iov, int iovcnt)
{
    RawTrackedReq tr;
    int ret;

    if (bytes == 0) {
        return 0;
    }
    if (raw->probed_raw && raw_co_write_changes_format(raw, ec, offset, bytes, iov, iovcnt)) {
        return -EPERM;
    }
    if (raw_needs_bounce(raw, offset, bytes, iov, iovcnt)) {
        return raw_co_bounced(raw, ec, true, offset, bytes, iov, iovcnt);
    }
    if (raw->req_align > 1) {
        tracked_begin(raw, &tr, offset, bytes, false);
    }
    ret = raw_co_transfer(raw, ec, true, offset, bytes, iov, iovcnt);
    if (raw->req_align > 1) {
        tracked_end(raw, &tr);
    }
    return ret;
}

int raw_co_flush(RawFile *raw, EngineCtx *ec)
{
    if (raw->no_flush) {
        return 0;
    }
    return engine_co_fdatasync(ec, raw->fd);
}

/* ---- host block devices: the kernel's own discard and zero-out ---------------- */

typedef struct BlockRangeIoctl {
    int fd;
    unsigned long request;      /* BLKDISCARD or BLKZEROOUT */
    uint64_t range[2];          /* start, length: 512-byte aligned */
} BlockRangeIoctl;

static int block_range_worker(void *opaque)
{
    BlockRangeIoctl *a = opaque;

    if (KEEL_RETRY_EINTR(ioctl(a->fd, a->request, a->range)) == 0) {
        return 0;
    }
    return errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL ? -ENOTSUP : -errno;
}

/* The 512-aligned middle of [offset, offset+bytes) through @request, in the
 * thread pool (the ioctls block).  @start and @end say what it covered. */
static int raw_co_block_range(RawFile *raw, unsigned long request, int64_t offset,
                              int64_t bytes, int64_t *start, int64_t *end)
{
    BlockRangeIoctl a = { .fd = raw->fd, .request = request };

    *start = align_up(offset, 512);
    *end = align_down(offset + bytes, 512);
    if (*end <= *start) {
        *start = *end = offset;
        return 0;
    }
    a.range[0] = (uint64_t)*start;
    a.range[1] = (uint64_t)(*end - *start);
    return keel_thread_pool_submit_co(block_range_worker, &a);
}

int raw_co_pdiscard(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes)
{
    RawTrackedReq tr;
    int64_t start = offset, end = offset + bytes;
    int ret;

    if (!raw->discard_unmap) {
        return 0;
    }
    if (!keel_atomic_read(&raw->has_punch_hole)) {
        return -ENOTSUP;
    }
#ifdef BLKDISCARD
    if (raw->is_blockdev) {
        ret = raw_co_block_range(raw, BLKDISCARD, offset, bytes, &start, &end);
        if (ret == -ENOTSUP) {
            keel_atomic_set(&raw->has_punch_hole, false);
        }
        return ret;             /* advisory: unaligned ends are left alone */
    }
#endif
    if (raw->req_align > 1) {
        /* Discard is advisory: drop the unaligned head and tail rather than
         * touch the page cache of an O_DIRECT file. */
        start = align_up(offset, raw->req_align);
        end = align_down(offset + bytes, raw->req_align);
        if (end <= start) {
            return 0;
        }
        tracked_begin(raw, &tr, start, end - start, false);
    }
    ret = engine_co_fallocate(ec, raw->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              start, end - start);
    if (raw->req_align > 1) {
        tracked_end(raw, &tr);
    }
    if (ret == -ENOTSUP) {
        keel_atomic_set(&raw->has_punch_hole, false);
    }
    return ret;
}

/* Write-zeroes by writing a zero buffer: the fallback that always works. */
static int raw_co_write_zero_buffer(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes)
{
    size_t buf_len = (size_t)MIN(bytes, (int64_t)ZERO_BUF_MAX);
    char *zeros;
    int ret = 0;

    buf_len = (size_t)align_up((int64_t)buf_len, raw->req_align);
    zeros = block_memalign(raw->mem_align > 1 ? raw->mem_align : 4096, buf_len);
    memset(zeros, 0, buf_len);
    for (int64_t done = 0; done < bytes && ret == 0;) {
        int64_t n = MIN(bytes - done, (int64_t)buf_len);
        struct iovec v = { zeros, (size_t)n };
        ret = raw_co_pwritev(raw, ec, offset + done, n, &v, 1);
        done += n;
    }
    free(zeros);
    return ret;
}

int raw_co_pwrite_zeroes(RawFile *raw, EngineCtx *ec, int64_t offset, int64_t bytes,
                         bool may_unmap)
{
    uint32_t a = raw->req_align;
    int64_t start = offset, end = offset + bytes;
    RawTrackedReq tr;
    int ret;

    if (bytes == 0) {
        return 0;
    }
#ifdef BLKZEROOUT
    if (raw->is_blockdev && keel_atomic_read(&raw->has_zero_range) && !may_unmap) {
        int64_t zs, ze;
        ret = raw_co_block_range(raw, BLKZEROOUT, offset, bytes, &zs, &ze);
        if (ret == -ENOTSUP) {
            keel_atomic_set(&raw->has_zero_range, false);
        }
        if (ret == 0 && zs > offset) {
            ret = raw_co_write_zero_buffer(raw, ec, offset, zs - offset);
        }
        if (ret == 0 && offset + bytes > ze && ze > zs) {
            ret = raw_co_write_zero_buffer(raw, ec, ze, offset + bytes - ze);
        }
        if (ret == 0 && ze == zs) {
            ret = raw_co_write_zero_buffer(raw, ec, offset, bytes);
        }
        if (ret != -ENOTSUP) {
            return ret;
        }
    }
#endif
    if (may_unmap && raw->discard_unmap && keel_atomic_read(&raw->has_punch_hole) &&
        !((offset | bytes) & (a - 1))) {
        /* A punched hole reads back as zeros: both at once. */
        ret = raw_co_pdiscard(raw, ec, offset, bytes);
        if (ret != -ENOTSUP) {
            return ret;
        }
    }
    if (a > 1) {
        /* Unaligned head and tail through read-modify-write. */
        int64_t astart = align_up(offset, a), aend = align_down(offset + bytes, a);
        if (aend <= astart) {
            return raw_co_bounced(raw, ec, true, offset, bytes, NULL, 0);
        }
        if (astart != offset) {
            ret = raw_co_bounced(raw, ec, true, offset, astart - offset, NULL, 0);
            if (ret < 0) {
                return ret;
            }
        }
        if (aend != end) {
            ret = raw_co_bounced(raw, ec, true, aend, end - aend, NULL, 0);
            if (ret < 0) {
                return ret;
            }
        }
        start = astart;
        end = aend;
    }
    if (!keel_atomic_read(&raw->has_zero_range)) {
        return raw_co_write_zero_buffer(raw, ec, start, end - start);
    }
    if (a > 1) {
        tracked_begin(raw, &tr, start, end - start, false);
    }
    ret = engine_co_fallocate(ec, raw->fd, FALLOC_FL_ZERO_RANGE, start, end - start);
    if (a > 1) {
        tracked_end(raw, &tr);
    }
    if (ret == -ENOTSUP || ret == -EINVAL) {
        keel_atomic_set(&raw->has_zero_range, false);
        return raw_co_write_zero_buffer(raw, ec, start, end - start);
    }
    return ret;
}
