/*
 * The thread-pool engine: blocking preadv/pwritev/fdatasync/fallocate in the
 * AioContext's worker pool; the coroutine yields until the worker is done.
 * preadv/pwritev missing at build time, refused at run time (ENOSYS) or
 * avoided (KEEL_AVOID=preadv) → a pread/pwrite loop over the iovecs.
 */
#include "config.h"

#include "block/block-int.h"
#include "compat/osdep.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

KeelSeam block_preadv_seam = KEEL_SEAM_INIT(KEEL_PATH_PREADV, "preadv", "pread");

typedef struct ThreadRw {
    int fd;
    bool write;
    int64_t offset;
    const struct iovec *iov;
    int iovcnt;
} ThreadRw;

/* One iovec at a time; stops at the first short transfer, like preadv. */
static long rw_loop(const ThreadRw *a)
{
    long total = 0;

    for (int i = 0; i < a->iovcnt; i++) {
        char *base = a->iov[i].iov_base;
        size_t len = a->iov[i].iov_len;
        ssize_t n;

        if (len == 0) {
            continue;
        }
        do {
            n = a->write ? pwrite(a->fd, base, len, a->offset + total)
                         : pread(a->fd, base, len, a->offset + total);
        } while (n < 0 && (errno == EINTR || errno == EAGAIN) && (sched_yield(), 1));
        if (n < 0) {
            return total ? total : -errno;
        }
        total += n;
        if ((size_t)n < len) {
            break;
        }
    }
    return total;
}

static int rw_worker(void *opaque)
{
    const ThreadRw *a = opaque;

#ifdef HAVE_PREADV
    if (keel_seam_use_primary(&block_preadv_seam)) {
        ssize_t n;
        do {
            n = a->write ? pwritev(a->fd, a->iov, a->iovcnt, a->offset)
                         : preadv(a->fd, a->iov, a->iovcnt, a->offset);
        } while (n < 0 && (errno == EINTR || errno == EAGAIN) && (sched_yield(), 1));
        if (n >= 0) {
            return (int)n;
        }
        if (errno != ENOSYS) {
            return -errno;
        }
        keel_seam_primary_failed(&block_preadv_seam, ENOSYS);
    }
#endif
    return (int)rw_loop(a);
}

int threads_co_rw(int fd, bool write, int64_t offset, const struct iovec *iov, int iovcnt)
{
    ThreadRw a = { .fd = fd, .write = write, .offset = offset, .iov = iov, .iovcnt = iovcnt };

    return keel_thread_pool_submit_co(rw_worker, &a);
}

static int fdatasync_worker(void *opaque)
{
    int fd = *(int *)opaque;
    int ret;

#ifdef HAVE_FDATASYNC
    ret = KEEL_RETRY_EINTR(fdatasync(fd));
#else
    ret = KEEL_RETRY_EINTR(fsync(fd));
#endif
    return ret < 0 ? -errno : 0;
}

int threads_co_fdatasync(int fd)
{
    return keel_thread_pool_submit_co(fdatasync_worker, &fd);
}

typedef struct ThreadFallocate {
    int fd;
    int mode;
    int64_t offset;
    int64_t len;
} ThreadFallocate;

static int fallocate_worker(void *opaque)
{
#ifdef HAVE_FALLOCATE
    const ThreadFallocate *a = opaque;
    int ret = KEEL_RETRY_EINTR(fallocate(a->fd, a->mode, a->offset, a->len));

    if (ret == 0) {
        return 0;
    }
    /* "This file system (or kernel) cannot": one errno for the caller. */
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == ENOTTY) {
        return -ENOTSUP;
    }
    return -errno;
#else
    (void)opaque;
    return -ENOTSUP;
#endif
}

int threads_co_fallocate(int fd, int mode, int64_t offset, int64_t len)
{
    ThreadFallocate a = { .fd = fd, .mode = mode, .offset = offset, .len = len };

    return keel_thread_pool_submit_co(fallocate_worker, &a);
}

const char *threads_preadv_active(const char **reason)
{
#ifdef HAVE_PREADV
    if (keel_seam_use_primary(&block_preadv_seam)) {
        /* On a bad fd a kernel with preadv says EBADF, one without ENOSYS. */
        if (preadv(-1, NULL, 0, 0) < 0 && errno == ENOSYS) {
            keel_seam_primary_failed(&block_preadv_seam, ENOSYS);
        }
    }
    return keel_seam_active(&block_preadv_seam, reason);
#else
    *reason = "not-compiled";
    return "pread";
#endif
}

static int threads_ctx_new(KeelAioContext *ctx, void **state)
{
    /* The loop owns one pool per context; nothing to set up here. */
    *state = ctx;
    return 0;
}

static int threads_rw(void *state, int fd, bool write, int64_t offset,
                      const struct iovec *iov, int iovcnt)
{
    return threads_co_rw(fd, write, offset, iov, iovcnt);
}

const BlockEngineOps engine_threads_ops = {
    .name = "threads",
    .ctx_new = threads_ctx_new,
    .co_rw = threads_rw,
};
