/*
 * The io_uring engine (liburing): one ring per AioContext.
 *
 * Submission: requests queue in software and become SQEs in batches — all
 * of a plugged section, or all that the coroutines woken by one completion
 * pass submit — with one io_uring_enter; at most RING_ENTRIES are in flight
 * (so the completion queue, twice as big, never overflows even on kernels
 * without IORING_FEAT_NODROP).
 * Completion: the ring fd (readable while CQEs wait) is an fd handler of
 * the AioContext; the io_poll function looks at the CQ ring in user space
 * for adaptive polling.  -EAGAIN/-EINTR results are resubmitted.
 * Opcodes are probed once (io_uring_get_probe, kernel 5.6+); readv, writev
 * and fsync (kernel 5.1) are required, fallocate is used when present and
 * the thread pool does it otherwise.  Helpers missing from an old liburing
 * (0.7 on Debian bullseye) are replaced by io_uring_prep_rw().
 */
#include "config.h"

#include "block/block-int.h"
#include "compat/osdep.h"

#include <errno.h>
#include <glib.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RING_ENTRIES 256
#define RING_ENTRIES_SMALL 32       /* old kernels charge rings to RLIMIT_MEMLOCK */

typedef enum UringOp {
    URING_READV,
    URING_WRITEV,
    URING_FDATASYNC,
    URING_FALLOCATE,
} UringOp;

typedef struct UringState {
    struct io_uring ring;
    unsigned entries;
    KeelAioContext *ctx;
    GQueue pending;             /* UringReq, no SQE yet */
    unsigned in_flight;         /* have an SQE, not yet completed */
    bool retry_scheduled;
    bool enter_error_logged;
    KeelBH *retry_bh;
} UringState;

typedef struct UringReq {
    UringOp op;
    int fd;
    int64_t offset;
    const struct iovec *iov;
    int iovcnt;
    int mode;
    int64_t len;
    GList link;
    KeelCoroutine *co;
    int ret;                    /* -EINPROGRESS until completed */
} UringReq;

/* ---- opcode probe (once per process) ------------------------------------- */

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int probe_error;             /* -errno: a required opcode is missing */
static bool probe_has_fallocate;

#ifdef HAVE_IO_URING_GET_PROBE
/* Not const: liburing < 2.0 declares io_uring_opcode_supported without it. */
static bool op_supported(struct io_uring_probe *p, int op)
{
#if HAVE_DECL_IO_URING_OPCODE_SUPPORTED
    return io_uring_opcode_supported(p, op);
#else
    return op <= p->last_op && (p->ops[op].flags & IO_URING_OP_SUPPORTED);
#endif
}
#endif

static void probe_opcodes(void)
{
#ifdef HAVE_IO_URING_GET_PROBE
    struct io_uring_probe *p = io_uring_get_probe();

    if (p) {
        if (!op_supported(p, IORING_OP_READV) || !op_supported(p, IORING_OP_WRITEV) ||
            !op_supported(p, IORING_OP_FSYNC)) {
            probe_error = -ENOSYS;
        }
#if HAVE_DECL_IORING_OP_FALLOCATE
        probe_has_fallocate = op_supported(p, IORING_OP_FALLOCATE);
#endif
#ifdef HAVE_IO_URING_FREE_PROBE
        io_uring_free_probe(p);
#else
        free(p);
#endif
    }
    /* No probe: a kernel before 5.6 (or setup refused, which queue_init will
     * report).  Its opcodes include readv, writev and fsync; assume no
     * fallocate. */
#endif
}

static int uring_probe_opcodes(void)
{
    pthread_once(&probe_once, probe_opcodes);
    return probe_error;
}

int io_uring_probe_kernel(void)
{
    struct io_uring ring;
    int ret = uring_probe_opcodes();

    if (ret < 0) {
        return ret;
    }
    ret = io_uring_queue_init(4, &ring, 0);
    if (ret < 0) {
        return ret;
    }
    io_uring_queue_exit(&ring);
    return 0;
}

/* ---- submission ----------------------------------------------------------------- */

static void uring_prep(struct io_uring_sqe *sqe, UringReq *req)
{
    switch (req->op) {
    case URING_READV:
#if HAVE_DECL_IO_URING_PREP_READV
        io_uring_prep_readv(sqe, req->fd, req->iov, (unsigned)req->iovcnt, (__u64)req->offset);
#else
        io_uring_prep_rw(IORING_OP_READV, sqe, req->fd, req->iov, (unsigned)req->iovcnt,
                         (__u64)req->offset);
#endif
        break;
    case URING_WRITEV:
#if HAVE_DECL_IO_URING_PREP_WRITEV
        io_uring_prep_writev(sqe, req->fd, req->iov, (unsigned)req->iovcnt, (__u64)req->offset);
#else
        io_uring_prep_rw(IORING_OP_WRITEV, sqe, req->fd, req->iov, (unsigned)req->iovcnt,
                         (__u64)req->offset);
#endif
        break;
    case URING_FDATASYNC:
#if HAVE_DECL_IO_URING_PREP_FSYNC
        io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
#else
        io_uring_prep_rw(IORING_OP_FSYNC, sqe, req->fd, NULL, 0, 0);
        sqe->fsync_flags = IORING_FSYNC_DATASYNC;
#endif
        break;
    case URING_FALLOCATE:
#if HAVE_DECL_IO_URING_PREP_FALLOCATE
        io_uring_prep_fallocate(sqe, req->fd, req->mode, (off_t)req->offset, (off_t)req->len);
#elif HAVE_DECL_IORING_OP_FALLOCATE
        io_uring_prep_rw(IORING_OP_FALLOCATE, sqe, req->fd, NULL, (unsigned)req->mode,
                         (__u64)req->offset);
        sqe->addr = (__u64)req->len;
#else
        abort();    /* never queued: probe_has_fallocate is false */
#endif
        break;
    }
    io_uring_sqe_set_data(sqe, req);
}

static void uring_complete(UringReq *req, int res)
{
    req->ret = res;
    /* A request failed inside its own submission is not waiting yet. */
    if (req->co != keel_coroutine_self()) {
        keel_aio_co_wake(req->co);
    }
}

static void uring_submit_pending(void *opaque)
{
    UringState *s = opaque;
    int ret;

    while (s->pending.length && s->in_flight < s->entries) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
        if (!sqe) {
            break;
        }
        uring_prep(sqe, g_queue_pop_head_link(&s->pending)->data);
        s->in_flight++;
    }
    if (io_uring_sq_ready(&s->ring) == 0) {
        return;
    }
    do {
        ret = io_uring_submit(&s->ring);
    } while (ret == -EINTR);
    /* EAGAIN (kernel out of memory for requests) or EBUSY (completions must
     * be reaped first) leave the SQEs queued in the ring, as does a partial
     * submission.  The next completion pass retries; when nothing the kernel
     * holds will complete, a bottom half must. */
    if (ret < 0 && ret != -EAGAIN && ret != -EBUSY && !s->enter_error_logged) {
        keel_log("io_uring: io_uring_enter: %s (retrying)", g_strerror(-ret));
        s->enter_error_logged = true;
    }
    unsigned unsubmitted = io_uring_sq_ready(&s->ring);
    if (unsubmitted && s->in_flight <= unsubmitted && !s->retry_scheduled) {
        s->retry_scheduled = true;
        keel_bh_schedule(s->retry_bh);
    }
}

static void uring_retry_bh(void *opaque)
{
    UringState *s = opaque;

    s->retry_scheduled = false;
    uring_submit_pending(s);
}

static int uring_co_do(UringState *s, UringReq *req)
{
    req->co = keel_coroutine_self();
    req->ret = -EINPROGRESS;
    req->link.data = req;
    req->link.prev = req->link.next = NULL;
    g_queue_push_tail_link(&s->pending, &req->link);
    block_defer_call(uring_submit_pending, s);
    while (req->ret == -EINPROGRESS) {
        keel_coroutine_yield();
    }
    return req->ret;
}

/* ---- completion ------------------------------------------------------------------- */

static void uring_process_completions(UringState *s)
{
    struct io_uring_cqe *cqe;

    /* Coroutines woken here run now; what they submit waits for the unplug
     * below and goes out with one io_uring_enter. */
    keel_blk_io_plug();
    while (io_uring_peek_cqe(&s->ring, &cqe) == 0 && cqe) {
        UringReq *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;

        io_uring_cqe_seen(&s->ring, cqe);
        s->in_flight--;
        if (res == -EAGAIN || res == -EINTR) {
            g_queue_push_head_link(&s->pending, &req->link);
            continue;
        }
        uring_complete(req, res);
    }
    if (s->pending.length || io_uring_sq_ready(&s->ring)) {
        block_defer_call(uring_submit_pending, s);
    }
    keel_blk_io_unplug();
}

static void uring_fd_read(void *opaque)
{
    uring_process_completions(opaque);
}

static bool uring_poll(void *opaque)
{
    UringState *s = opaque;

#if HAVE_DECL_IO_URING_CQ_READY
    return io_uring_cq_ready(&s->ring) != 0;
#else
    return __atomic_load_n(s->ring.cq.ktail, __ATOMIC_ACQUIRE) != *s->ring.cq.khead;
#endif
}

/* ---- engine ops --------------------------------------------------------------------- */

static int uring_ctx_new(KeelAioContext *ctx, void **state)
{
    UringState *s;
    int ret = uring_probe_opcodes();

    if (ret < 0) {
        return ret;
    }
    s = g_new0(UringState, 1);
    s->entries = RING_ENTRIES;
    ret = io_uring_queue_init(s->entries, &s->ring, 0);
    if (ret == -ENOMEM) {
        s->entries = RING_ENTRIES_SMALL;
        ret = io_uring_queue_init(s->entries, &s->ring, 0);
    }
    if (ret < 0) {
        g_free(s);
        return ret;
    }
    s->ctx = ctx;
    g_queue_init(&s->pending);
    s->retry_bh = keel_aio_bh_new(ctx, uring_retry_bh, s);
    keel_aio_set_fd_handler(ctx, s->ring.ring_fd, uring_fd_read, NULL, uring_poll, s);
    *state = s;
    return 0;
}

static void uring_ctx_free(void *state)
{
    UringState *s = state;

    /* Every backend using it has drained: nothing is pending or in flight. */
    keel_aio_set_fd_handler(s->ctx, s->ring.ring_fd, NULL, NULL, NULL, NULL);
    keel_bh_delete(s->retry_bh);
    io_uring_queue_exit(&s->ring);
    g_free(s);
}

static int uring_co_rw(void *state, int fd, bool write, int64_t offset,
                       const struct iovec *iov, int iovcnt)
{
    UringReq req = {
        .op = write ? URING_WRITEV : URING_READV,
        .fd = fd, .offset = offset, .iov = iov, .iovcnt = iovcnt,
    };

    return uring_co_do(state, &req);
}

static int uring_co_fdatasync(void *state, int fd)
{
    UringReq req = { .op = URING_FDATASYNC, .fd = fd };

    return uring_co_do(state, &req);
}

static int uring_co_fallocate(void *state, int fd, int mode, int64_t offset, int64_t len)
{
    UringReq req = { .op = URING_FALLOCATE, .fd = fd, .mode = mode, .offset = offset,
                     .len = len };
    int ret;

    if (!probe_has_fallocate) {
        return threads_co_fallocate(fd, mode, offset, len);
    }
    ret = uring_co_do(state, &req);
    return ret == -EOPNOTSUPP ? -ENOTSUP : ret;
}

const BlockEngineOps engine_io_uring_ops = {
    .name = "io_uring",
    .ctx_new = uring_ctx_new,
    .ctx_free = uring_ctx_free,
    .co_rw = uring_co_rw,
    .co_fdatasync = uring_co_fdatasync,
    .co_fallocate = uring_co_fallocate,
};
