/*
 * virtio-blk: requests from a virtqueue to a Keel block backend.  See
 * virtio-blk.h for the contract and the data path.
 *
 * This file holds only block semantics: the queues, their notifiers,
 * polling, interrupt decisions, stop and NEEDS_RESET are the virtio core's
 * (virtio-core.h), the registers the transport's (virtio-pci.h).
 *
 * Threads: each queue's handler pass and its completions run in the
 * queue's home thread (main loop or an iothread), so a VirtioBlkQueue
 * needs no lock.  The backend calls back in its own home (queue 0's
 * context); completions of other queues go home through a one-shot BH.
 * Device-wide state is set before the queues start (features, geometry)
 * or atomic (capacity, which block_resize changes).
 */
#include "config.h"

#include "vmm/virtio-blk.h"
#include "vmm/virtio-blk-req.h"
#include "vmm/virtio-pci.h"
#include "compat/atomic.h"
#include "compat/features.h"
#include "compat/osdep.h"
#include "loop/iothread.h"
#include "loop/main-loop.h"
#include "vmm/machine.h"

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct VirtioBlkQueue VirtioBlkQueue;

typedef struct VirtioBlkReq {
    VirtQueueElement elem;          /* first: virtio_queue_pop allocates us */
    VirtioBlk *s;
    VirtioBlkQueue *bq;             /* the queue it came from (and returns to) */
    uint8_t *status;                /* the last byte of the chain (guest RAM) */
    uint32_t type;
    uint32_t used_len;              /* bytes the device writes on success */
    int ret;                        /* the backend's result, on its way home */
    /* IN / OUT: the data, for merging */
    uint64_t offset, bytes;
    struct iovec *iov;
    unsigned iovcnt;
    unsigned order;                 /* arrival in the batch (stable sort) */
    int64_t start_ns;               /* parsed at (query-blockstats times) */
} VirtioBlkReq;

/* Adjacent reads (or writes) popped in one pass go to the backend as one
 * request, like QEMU's virtio_blk_submit_multireq: up to this many guest
 * requests, iovecs and bytes. */
#define MERGE_MAX_REQS 32
#define MERGE_MAX_IOV 1024
#define MERGE_MAX_BYTES (64u << 20)

typedef struct VirtioBlkMerged {
    unsigned n;
    int ret;
    struct iovec *iov;
    VirtioBlkReq *reqs[];
} VirtioBlkMerged;

/* One queue's block state; everything here belongs to the queue's home
 * thread (its VirtioQueue's context). */
struct VirtioBlkQueue {
    VirtioBlk *s;
    VirtioQueue *q;
    VirtioBlkReq *batch[MERGE_MAX_REQS];    /* reads or writes of this pass */
    unsigned batch_n;
    bool batch_write;
    VirtioBlkStats stats;           /* the block counters; the core keeps the rest */
    int64_t io_error_logged_us;     /* when the last host I/O error was logged */
    uint64_t io_errors_unlogged;    /* since then, held back by the rate limit */
    /* Requests held by a werror/rerror=stop policy, in the order they
     * failed, until vmm_block_devices_retry(). */
    GQueue failed;
    const char *io_status;          /* "ok", "failed", "nospace" */
};

struct VirtioBlk {
    VirtioDevice vdev;              /* the queues (virtio-core.h) */
    VirtioPci *vp;
    KeelBlockBackend *blk;
    KeelAioContext *ctx;            /* the backend's home: queue 0's context */
    char *name;
    char *iothread_id;
    char serial[VIRTIO_BLK_ID_BYTES];
    bool readonly;
    uint64_t capacity;              /* 512-byte sectors; atomic (block_resize) */
    uint32_t blk_size;              /* logical block size */
    uint8_t physical_block_exp;     /* log2(physical / logical) */
    uint32_t discard_alignment;     /* sectors */
    VirtioBlkQueue queues[VIRTIO_MAX_QUEUES];

    VmmErrorPolicy werror, rerror;
    void (*io_error)(void *opaque, const char *device, bool is_write, int error,
                     bool stopping);
    void *io_error_opaque;
    char *device;
    VmmDriveCache cache;
};

/* The options' limit is the core's. */
typedef char queue_limits_agree[VMM_MAX_QUEUES == VIRTIO_MAX_QUEUES ? 1 : -1];

/* max_discard_seg / max_write_zeroes_seg, as QEMU: one segment a request
 * (the dispatch below relies on it). */
#define DISCARD_WZ_MAX_SEGS 1

static VirtioBlkQueue *blk_queue_of(VirtioBlk *s, VirtioQueue *q)
{
    return &s->queues[q->index];
}

static uint64_t blk_capacity(VirtioBlk *s)
{
    return keel_atomic_read(&s->capacity);
}

/* ---- iovec helpers (guest buffers) ---------------------------------------------- */

static size_t iov_copy_in(const struct iovec *iov, unsigned cnt, const void *buf, size_t len)
{
    size_t done = 0;

    for (unsigned i = 0; i < cnt && done < len; i++) {
        size_t n = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
        memcpy(iov[i].iov_base, (const uint8_t *)buf + done, n);
        done += n;
    }
    return done;
}

/* ---- completion ---------------------------------------------------------------------- */

static int64_t now_ns(void)
{
    return g_get_monotonic_time() * 1000;
}

/* query-blockstats' counters for a completing read, write or flush. */
static void req_account(VirtioBlkReq *req, uint8_t status)
{
    VirtioBlkStats *st = &req->bq->stats;
    uint64_t ns = (uint64_t)(now_ns() - req->start_ns);
    bool ok = status == VIRTIO_BLK_S_OK;

    switch (req->type) {
    case VIRTIO_BLK_T_IN:
        if (ok) {
            st->rd_done++, st->rd_bytes += req->bytes, st->rd_total_ns += ns;
        } else {
            st->failed_rd++;
        }
        break;
    case VIRTIO_BLK_T_OUT:
        if (ok) {
            st->wr_done++, st->wr_bytes += req->bytes, st->wr_total_ns += ns;
        } else {
            st->failed_wr++;
        }
        break;
    case VIRTIO_BLK_T_FLUSH:
        if (ok) {
            st->flush_done++, st->flush_total_ns += ns;
        } else {
            st->failed_flush++;
        }
        break;
    default:
        break;
    }
}

/* Writes the status and the used element; @publish: make it visible to the
 * driver now (else the caller flushes a group at once).  Queue's home. */
static void req_finish(VirtioBlkReq *req, uint8_t status, bool publish)
{
    VirtioBlkQueue *bq = req->bq;

    *req->status = status;
    if (status == VIRTIO_BLK_S_IOERR) {
        bq->stats.errors++;
    }
    req_account(req, status);
    /* The used length counts the status byte; a failed read wrote nothing
     * the driver may rely on, but says the same as QEMU does. */
    virtio_queue_fill(bq->q, &req->elem, req->used_len);
    if (publish) {
        virtio_queue_flush(bq->q);
    }
    g_free(req);
}

static void req_complete(VirtioBlkReq *req, uint8_t status)
{
    req_finish(req, status, true);
}

static uint8_t status_of(VirtioBlkReq *req, int ret)
{
    if (ret == -ENOTSUP && req->type == VIRTIO_BLK_T_DISCARD) {
        ret = 0;            /* discard is advisory */
    }
    return ret == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
}

/* Host I/O errors (EIO, ENOSPC, ...) reach the guest as IOERR; the host
 * hears of them too, like QEMU's reports, but a guest retrying a full disk
 * must not flood the log: the first IO_ERROR_LOG_BURST each, then one line
 * a second counting what was held back (per queue).  Queue's home. */
#define IO_ERROR_LOG_BURST 10
#define IO_ERROR_LOG_INTERVAL_US 1000000

static const char *req_op_name(uint32_t type)
{
    switch (type) {
    case VIRTIO_BLK_T_IN: return "read";
    case VIRTIO_BLK_T_OUT: return "write";
    case VIRTIO_BLK_T_FLUSH: return "flush";
    case VIRTIO_BLK_T_DISCARD: return "discard";
    case VIRTIO_BLK_T_WRITE_ZEROES: return "write-zeroes";
    default: return "request";
    }
}

static void log_io_error(VirtioBlkQueue *bq, VirtioBlkReq *req, int ret)
{
    int64_t now = g_get_monotonic_time();
    char held[64] = "";

    bq->stats.io_errors++;
    bq->stats.last_io_errno = -ret;
    if (bq->stats.io_errors > IO_ERROR_LOG_BURST &&
        now - bq->io_error_logged_us < IO_ERROR_LOG_INTERVAL_US) {
        bq->io_errors_unlogged++;
        return;
    }
    if (bq->io_errors_unlogged) {
        snprintf(held, sizeof(held), "; %llu more since the last report",
                 (unsigned long long)bq->io_errors_unlogged);
    }
    keel_log("%s: host I/O error: %s at offset %llu (%llu bytes): %s (errno %d)%s%s",
             bq->s->name, req_op_name(req->type), (unsigned long long)req->offset,
             (unsigned long long)req->bytes, g_strerror(-ret), -ret, held,
             bq->stats.io_errors == IO_ERROR_LOG_BURST ? "; further ones at most once a second" : "");
    bq->io_error_logged_us = now;
    bq->io_errors_unlogged = 0;
}

/* werror=/rerror=: what a failed read, write or flush does.  Returns true
 * when the policy took the request (held for a retry, or completed as if it
 * worked); false: fail it to the guest. */
static bool req_error_policy(VirtioBlkReq *req, int ret)
{
    VirtioBlk *s = req->s;
    bool is_write = req->type != VIRTIO_BLK_T_IN;
    VmmErrorPolicy policy;
    bool stop;

    if (req->type != VIRTIO_BLK_T_IN && req->type != VIRTIO_BLK_T_OUT &&
        req->type != VIRTIO_BLK_T_FLUSH) {
        return false;
    }
    policy = is_write ? s->werror : s->rerror;
    if (policy == VMM_ERROR_IGNORE) {
        req_complete(req, VIRTIO_BLK_S_OK);
        return true;
    }
    stop = policy == VMM_ERROR_STOP || (policy == VMM_ERROR_ENOSPC && ret == -ENOSPC);
    if (s->io_error) {
        s->io_error(s->io_error_opaque, s->device, is_write, -ret, stop);
    }
    if (!stop) {
        return false;
    }
    req->bq->io_status = ret == -ENOSPC ? "nospace" : "failed";
    g_queue_push_tail(&req->bq->failed, req);     /* still in flight for the guest */
    return true;
}

/* In the queue's home thread, whichever thread the backend completed in. */
static void req_done_in_home(void *opaque)
{
    VirtioBlkReq *req = opaque;
    int ret = req->ret;
    uint8_t status = status_of(req, ret);

    if (status == VIRTIO_BLK_S_IOERR) {
        log_io_error(req->bq, req, ret);
    }
    if (ret < 0 && status != VIRTIO_BLK_S_OK && req_error_policy(req, ret)) {
        return;
    }
    req_complete(req, status);
}

/* The backend's callback: in the thread that submitted, which is the
 * queue's (each queue's context is attached to the backend); the bounce is
 * only for a request resubmitted from elsewhere (a QMP cont retries held
 * requests in their queue's thread too, so in practice it is direct). */
static void req_done(void *opaque, int ret)
{
    VirtioBlkReq *req = opaque;

    req->ret = ret;
    virtio_queue_call_in_home(req->bq->q, req_done_in_home, req);
}

/* ---- merging adjacent reads / writes ------------------------------------------------------- */

static void submit_one(VirtioBlkReq *req);

/* A merged request's guest requests become visible together, so a polling
 * driver resubmits them together and the next pass can merge them again.
 * If it failed, each guest request is retried on its own, so only those
 * that really fail report IOERR (QEMU fails them all). */
static void merged_done_in_home(void *opaque)
{
    VirtioBlkMerged *m = opaque;
    VirtioBlkQueue *bq = m->reqs[0]->bq;

    if (m->ret < 0) {
        bq->stats.merge_retries++;
        for (unsigned i = 0; i < m->n; i++) {
            submit_one(m->reqs[i]);
        }
    } else {
        for (unsigned i = 0; i < m->n; i++) {
            req_finish(m->reqs[i], VIRTIO_BLK_S_OK, false);
        }
        virtio_queue_flush(bq->q);
    }
    g_free(m->iov);
    g_free(m);
}

static void merged_done(void *opaque, int ret)
{
    VirtioBlkMerged *m = opaque;

    m->ret = ret;
    virtio_queue_call_in_home(m->reqs[0]->bq->q, merged_done_in_home, m);
}

static void submit_one(VirtioBlkReq *req)
{
    if (req->type == VIRTIO_BLK_T_OUT) {
        keel_blk_aio_pwritev(req->s->blk, (int64_t)req->offset, req->iov, (int)req->iovcnt,
                             req_done, req);
    } else {
        keel_blk_aio_preadv(req->s->blk, (int64_t)req->offset, req->iov, (int)req->iovcnt,
                            req_done, req);
    }
}

static void submit_merged(VirtioBlkQueue *bq, VirtioBlkReq **reqs, unsigned n,
                          unsigned iovcnt)
{
    VirtioBlkMerged *m = g_malloc(sizeof(*m) + n * sizeof(m->reqs[0]));
    KeelBlockBackend *blk = bq->s->blk;
    unsigned k = 0;

    m->n = n;
    m->iov = g_new(struct iovec, iovcnt);
    for (unsigned i = 0; i < n; i++) {
        m->reqs[i] = reqs[i];
        memcpy(&m->iov[k], reqs[i]->iov, reqs[i]->iovcnt * sizeof(struct iovec));
        k += reqs[i]->iovcnt;
    }
    bq->stats.merged += n;
    if (reqs[0]->type == VIRTIO_BLK_T_OUT) {
        keel_blk_aio_pwritev(blk, (int64_t)reqs[0]->offset, m->iov, (int)iovcnt,
                             merged_done, m);
    } else {
        keel_blk_aio_preadv(blk, (int64_t)reqs[0]->offset, m->iov, (int)iovcnt,
                            merged_done, m);
    }
}

static int by_offset(const void *a, const void *b)
{
    const VirtioBlkReq *x = *(VirtioBlkReq *const *)a, *y = *(VirtioBlkReq *const *)b;

    if (x->offset != y->offset) {
        return x->offset < y->offset ? -1 : 1;
    }
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Submits the batch: sorted by offset, each run of contiguous requests as
 * one backend request. */
static void batch_flush(VirtioBlkQueue *bq)
{
    VirtioBlkReq *reqs[MERGE_MAX_REQS];
    unsigned n = bq->batch_n;

    if (!n) {
        return;
    }
    memcpy(reqs, bq->batch, n * sizeof(reqs[0]));
    bq->batch_n = 0;
    if (n > 1) {
        qsort(reqs, n, sizeof(reqs[0]), by_offset);
    }
    for (unsigned i = 0; i < n;) {
        unsigned j = i + 1, iovcnt = reqs[i]->iovcnt;
        uint64_t bytes = reqs[i]->bytes;

        while (j < n && reqs[j]->offset == reqs[j - 1]->offset + reqs[j - 1]->bytes &&
               iovcnt + reqs[j]->iovcnt <= MERGE_MAX_IOV &&
               bytes + reqs[j]->bytes <= MERGE_MAX_BYTES) {
            iovcnt += reqs[j]->iovcnt;
            bytes += reqs[j]->bytes;
            j++;
        }
        if (j - i == 1) {
            submit_one(reqs[i]);
        } else {
            submit_merged(bq, &reqs[i], j - i, iovcnt);
        }
        i = j;
    }
}

static void batch_add(VirtioBlkQueue *bq, VirtioBlkReq *req, bool write, uint64_t offset,
                      uint64_t bytes, struct iovec *iov, unsigned iovcnt)
{
    if (!bytes) {
        req_complete(req, VIRTIO_BLK_S_OK);     /* nothing to move (and nothing to merge) */
        return;
    }
    if (bq->batch_n && (bq->batch_write != write || bq->batch_n == MERGE_MAX_REQS)) {
        batch_flush(bq);
    }
    req->offset = offset;
    req->bytes = bytes;
    req->iov = iov;
    req->iovcnt = iovcnt;
    req->order = bq->batch_n;
    bq->batch_write = write;
    bq->batch[bq->batch_n++] = req;
}

/* ---- requests ------------------------------------------------------------------------------ */

/* What the parser checks a request against. */
static void req_limits(VirtioBlk *s, VirtioBlkReqLimits *l)
{
    l->capacity = blk_capacity(s);
    l->logical_block_size = s->blk_size;
    l->readonly = s->readonly;
    l->features = s->vdev.features;
    l->max_discard_sectors = VIRTIO_BLK_MAX_DISCARD_SECTORS;
    l->max_write_zeroes_sectors = VIRTIO_BLK_MAX_DISCARD_SECTORS;
    l->max_discard_segs = l->max_write_zeroes_segs = DISCARD_WZ_MAX_SEGS;
}

/* Counts what the guest asked for: reads, writes, flushes and GET_IDs as
 * they arrive, unknown types; discards and write-zeroes once started. */
static void req_count(VirtioBlkStats *st, const VirtioBlkParsedReq *p)
{
    switch (p->kind) {
    case VIRTIO_BLK_REQ_READ: st->reads++; break;
    case VIRTIO_BLK_REQ_WRITE: st->writes++; break;
    case VIRTIO_BLK_REQ_FLUSH: st->flushes++; break;
    case VIRTIO_BLK_REQ_GET_ID: st->get_ids++; break;
    case VIRTIO_BLK_REQ_UNSUPPORTED: st->unsupported++; break;
    case VIRTIO_BLK_REQ_BAD_HEADER:
    case VIRTIO_BLK_REQ_DISCARD:
    case VIRTIO_BLK_REQ_WRITE_ZEROES:
        break;
    }
}

/* Parses a chain (virtio-blk-req.c) and starts its request, or completes
 * it at once with the status the parser chose.  Returns false when the
 * chain has no status byte: the queue is broken. */
static bool handle_request(VirtioBlkQueue *bq, VirtioBlkReq *req)
{
    VirtioBlk *s = bq->s;
    VirtQueueElement *e = &req->elem;
    VirtioBlkReqLimits limits;
    VirtioBlkParsedReq p;
    const char *why;
    struct iovec *data;
    unsigned data_num;
    int status;

    req_limits(s, &limits);
    status = virtio_blk_req_parse(&limits, e->out_sg, e->out_num, e->in_sg, e->in_num, &p,
                                  &why);
    if (status == VIRTIO_BLK_REQ_NO_STATUS) {
        return false;
    }
    req->s = s;
    req->bq = bq;
    req->start_ns = now_ns();
    req->status = p.status;
    req->used_len = 1;
    req->offset = req->bytes = 0;   /* set for reads, writes, discards (error log) */
    if (p.kind != VIRTIO_BLK_REQ_BAD_HEADER) {
        req->type = p.type;
    }
    bq->stats.requests++;
    req_count(&bq->stats, &p);
    if (p.kind == VIRTIO_BLK_REQ_DISCARD || p.kind == VIRTIO_BLK_REQ_WRITE_ZEROES) {
        batch_flush(bq);            /* the reads and writes before it go first */
    }
    if (status != VIRTIO_BLK_S_OK) {
        req_complete(req, (uint8_t)status);
        return true;
    }

    /* The data buffers, trimmed in place: the element's arrays are ours. */
    data = p.kind == VIRTIO_BLK_REQ_WRITE ? e->out_sg : e->in_sg;
    data_num = virtio_blk_req_data_iov(&p.data, data);

    switch (p.kind) {
    case VIRTIO_BLK_REQ_READ:
        req->used_len = (uint32_t)p.bytes + 1;
        batch_add(bq, req, false, p.offset, p.bytes, data, data_num);
        return true;
    case VIRTIO_BLK_REQ_WRITE:
        batch_add(bq, req, true, p.offset, p.bytes, data, data_num);
        return true;
    case VIRTIO_BLK_REQ_FLUSH:
        batch_flush(bq);            /* the writes before it go first */
        keel_blk_aio_flush(s->blk, req_done, req);
        return true;
    case VIRTIO_BLK_REQ_GET_ID:
        req->used_len = (uint32_t)iov_copy_in(data, data_num, s->serial,
                                              VIRTIO_BLK_ID_BYTES) + 1;
        req_complete(req, VIRTIO_BLK_S_OK);
        return true;
    case VIRTIO_BLK_REQ_DISCARD:
    case VIRTIO_BLK_REQ_WRITE_ZEROES:
        /* One segment (DISCARD_WZ_MAX_SEGS). */
        req->offset = p.segs[0].offset;     /* for the error log */
        req->bytes = p.segs[0].bytes;
        if (p.kind == VIRTIO_BLK_REQ_WRITE_ZEROES) {
            bq->stats.write_zeroes++;
            keel_blk_aio_pwrite_zeroes(s->blk, (int64_t)req->offset, (int64_t)req->bytes,
                                       req_done, req);
        } else {
            bq->stats.discards++;
            keel_blk_aio_pdiscard(s->blk, (int64_t)req->offset, (int64_t)req->bytes,
                                  req_done, req);
        }
        return true;
    case VIRTIO_BLK_REQ_BAD_HEADER:
    case VIRTIO_BLK_REQ_UNSUPPORTED:
        break;                      /* the parser failed them */
    }
    req_complete(req, VIRTIO_BLK_S_IOERR);
    return true;
}

/* ---- the device's hooks (virtio-core.h) ------------------------------------------------------ */

/* Queue @q's home thread: everything the driver made available on it,
 * submitted to the backend as one batch. */
static unsigned blk_handle_output(VirtioDevice *vdev, VirtioQueue *q)
{
    VirtioBlkQueue *bq = blk_queue_of(vdev->opaque, q);
    unsigned taken = 0;

    keel_blk_io_plug();
    for (;;) {
        VirtioBlkReq *req;
        VirtQueuePopResult r = virtio_queue_pop(q, sizeof(*req), (void **)&req);

        if (r == VQ_POP_EMPTY) {
            break;
        }
        if (r == VQ_POP_BROKEN) {
            virtio_queue_set_broken(q, q->vq.last_error);
            break;
        }
        if (r == VQ_POP_BAD_CHAIN) {
            if (req->elem.in_num != 1) {
                g_free(req);
                q->inflight--;
                virtio_queue_set_broken(q, q->vq.last_error);
                break;
            }
            /* Fail just this request: the status byte is usable. */
            req->s = bq->s;
            req->bq = bq;
            req->status = req->elem.in_sg[0].iov_base;
            req->used_len = 1;
            bq->stats.requests++;
            bq->stats.bad_chains++;
            req_complete(req, VIRTIO_BLK_S_IOERR);
            continue;
        }
        if (!handle_request(bq, req)) {
            g_free(req);
            q->inflight--;
            virtio_queue_set_broken(q, "request without a device-writable status byte");
            break;
        }
        taken++;
    }
    batch_flush(bq);
    keel_blk_io_unplug();
    return taken;
}

static void put_le(uint8_t *p, uint64_t v, unsigned size)
{
    for (unsigned i = 0; i < size; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void blk_get_config(VirtioDevice *vdev, uint8_t *buf, unsigned len)
{
    VirtioBlk *s = vdev->opaque;
    uint8_t cfg[VIRTIO_BLK_CONFIG_LEN] = { 0 };

    put_le(cfg + 0, blk_capacity(s), 8);
    put_le(cfg + 8, VIRTIO_BLK_SIZE_MAX, 4);
    put_le(cfg + 12, VIRTIO_BLK_SEG_MAX, 4);
    /* geometry (16..19) left 0: guests compute their own */
    put_le(cfg + 20, s->blk_size, 4);
    put_le(cfg + 24, s->physical_block_exp, 1);
    put_le(cfg + 26, s->blk_size / VIRTIO_BLK_SECTOR, 2);     /* min_io_size */
    put_le(cfg + 34, (uint64_t)vdev->num_queues, 2);         /* num_queues */
    put_le(cfg + 36, VIRTIO_BLK_MAX_DISCARD_SECTORS, 4);
    put_le(cfg + 40, DISCARD_WZ_MAX_SEGS, 4);       /* max_discard_seg */
    put_le(cfg + 44, s->discard_alignment, 4);
    put_le(cfg + 48, VIRTIO_BLK_MAX_DISCARD_SECTORS, 4);     /* max_write_zeroes_sectors */
    put_le(cfg + 52, DISCARD_WZ_MAX_SEGS, 4);       /* max_write_zeroes_seg */
    put_le(cfg + 56, 0, 1);                         /* write_zeroes_may_unmap */
    memcpy(buf, cfg, len < sizeof(cfg) ? len : sizeof(cfg));
}

/* Queue's home thread: lets what @bq has at the backend complete (the
 * completions come back to this thread, from the backend's home when that
 * is another one); requests held by werror=stop stay held. */
static void blk_queue_settle(VirtioBlkQueue *bq)
{
    VirtioQueue *q = bq->q;

    keel_blk_drain(bq->s->blk);
    while (q->inflight > g_queue_get_length(&bq->failed)) {
        keel_aio_poll(q->ctx, true);
    }
}

/* Requests in flight complete into the ring the driver still has (it waits
 * for the reset to finish); then nothing is left to complete.  Requests
 * held by werror=stop fail: the driver gave them up. */
static void blk_queue_stop(VirtioDevice *vdev, VirtioQueue *q)
{
    VirtioBlkQueue *bq = blk_queue_of(vdev->opaque, q);
    VirtioBlkReq *held;

    blk_queue_settle(bq);
    while ((held = g_queue_pop_head(&bq->failed))) {
        req_complete(held, VIRTIO_BLK_S_IOERR);
    }
    bq->io_status = "ok";
}

static const VirtioDeviceOps virtio_blk_ops = {
    .handle_output = blk_handle_output,
    .get_config = blk_get_config,
    .queue_stop = blk_queue_stop,
};

/* ---- lifetime ---------------------------------------------------------------------------------- */

VirtioBlk *virtio_blk_new(Vm *vm, PciHost *host, const VirtioBlkConf *conf, char *err,
                          size_t errlen)
{
    VirtioBlk *s = g_new0(VirtioBlk, 1);
    KeelAioContext *ctxs[VIRTIO_MAX_QUEUES];
    const char *ids[VIRTIO_MAX_QUEUES];
    int num_queues = conf->num_queues > 0 ? conf->num_queues : 1;
    bool core = false;
    char *msg = NULL;
    uint64_t features;
    uint32_t align;
    int64_t len;
    int r;

    s->name = g_strdup(conf->name);
    s->iothread_id = g_strdup(conf->iothread_id);
    s->device = g_strdup(conf->device ? conf->device : conf->name);
    s->werror = conf->werror;
    s->cache = conf->cache;
    s->rerror = conf->rerror;
    s->io_error = conf->io_error;
    s->io_error_opaque = conf->io_error_opaque;
    s->ctx = conf->ctx;
    s->readonly = conf->blk.readonly;
    if (num_queues > VIRTIO_MAX_QUEUES) {
        snprintf(err, errlen, "%s: num-queues=%d: at most %d", conf->name, num_queues,
                 VIRTIO_MAX_QUEUES);
        goto fail;
    }
    if (conf->serial) {
        /* 20 bytes, NUL-padded, not NUL-terminated when exactly 20 long. */
        memcpy(s->serial, conf->serial, MIN(strlen(conf->serial), sizeof(s->serial)));
    }
    s->blk = conf->backend ? conf->backend : keel_blk_open(&conf->blk, s->ctx, &msg);
    if (!s->blk) {
        snprintf(err, errlen, "%s: %s: %s", conf->name, conf->blk.filename, msg);
        g_free(msg);
        goto fail;
    }
    len = keel_blk_getlength(s->blk);
    if (len < 0) {
        snprintf(err, errlen, "%s: %s: cannot get its size: %s", conf->name,
                 conf->blk.filename, strerror((int)-len));
        goto fail;
    }
    s->capacity = (uint64_t)len / VIRTIO_BLK_SECTOR;
    align = keel_blk_get_request_alignment(s->blk);
    s->blk_size = align >= VIRTIO_BLK_SECTOR && align <= 4096 && !(align & (align - 1))
                  ? align : VIRTIO_BLK_SECTOR;
    if (conf->logical_block_size) {
        /* What the user asked for; smaller than the O_DIRECT alignment
         * is fine (the backend bounces), as in QEMU. */
        s->blk_size = conf->logical_block_size;
    }
    if (conf->physical_block_size > s->blk_size) {
        for (uint32_t r2 = conf->physical_block_size / s->blk_size; r2 > 1; r2 >>= 1) {
            s->physical_block_exp++;
        }
    }
    s->discard_alignment = s->blk_size / VIRTIO_BLK_SECTOR;

    for (int q = 0; q < num_queues; q++) {
        ctxs[q] = conf->queue_ctx[q] ? conf->queue_ctx[q] : s->ctx;
        ids[q] = conf->queue_ctx[q] ? conf->queue_iothread[q] : conf->iothread_id;
    }
    r = virtio_device_init(&s->vdev, s->name, &virtio_blk_ops, s, num_queues, ctxs, ids);
    if (r < 0) {
        snprintf(err, errlen, "%s: cannot set up its queues: %s", conf->name, strerror(-r));
        goto fail;
    }
    core = true;
    /* Each queue of another iothread submits to the backend from its own
     * thread, on that context's own engine instance, and completes there:
     * no bounce through the backend's home (block/block-backend.h,
     * multiqueue). */
    for (int q = 0; q < num_queues; q++) {
        if (ctxs[q] != s->ctx && keel_blk_attach_aio_context(s->blk, ctxs[q], &msg) < 0) {
            snprintf(err, errlen, "%s: queue %d: %s", conf->name, q, msg);
            g_free(msg);
            goto fail;
        }
    }
    for (int q = 0; q < num_queues; q++) {
        VirtioBlkQueue *bq = &s->queues[q];
        bq->s = s;
        bq->q = virtio_device_queue(&s->vdev, q);
        bq->io_status = "ok";
        g_queue_init(&bq->failed);
    }

    features = (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
               (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH) |
               (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES) |
               (1ull << VIRTIO_F_INDIRECT_DESC) | (1ull << VIRTIO_F_EVENT_IDX) |
               (num_queues > 1 ? 1ull << VIRTIO_BLK_F_MQ : 0) |
               (s->readonly ? 1ull << VIRTIO_BLK_F_RO : 0);
    pci_host_want_slot(host, conf->pci_slot > 0 ? conf->pci_slot : -1);
    s->vp = virtio_pci_new(vm, host, s->name, VIRTIO_ID_BLOCK, 0x010000, features,
                           VIRTIO_BLK_QUEUE_SIZE, VIRTIO_BLK_CONFIG_LEN, conf->intx_irq,
                           &s->vdev, err, errlen);
    if (!s->vp) {
        goto fail;
    }
    return s;

fail:
    if (core) {
        virtio_device_cleanup(&s->vdev);
    }
    keel_blk_close(s->blk);
    g_free(s->name);
    g_free(s->device);
    g_free(s->iothread_id);
    g_free(s);
    return NULL;
}

void virtio_blk_free(VirtioBlk *s)
{
    if (!s) {
        return;
    }
    virtio_pci_free(s->vp);         /* stops (drains) the queues first */
    virtio_device_cleanup(&s->vdev);
    keel_blk_close(s->blk);
    /* Held requests the guest never got back (the VM ends stopped). */
    for (int q = 0; q < s->vdev.num_queues; q++) {
        for (VirtioBlkReq *req; (req = g_queue_pop_head(&s->queues[q].failed));) {
            g_free(req);
        }
    }
    g_free(s->device);
    g_free(s->name);
    g_free(s->iothread_id);
    g_free(s);
}

/* Adds queue @bq's counters (the block ones and the core's) to @st.  The
 * queue's home thread, or the queue stopped. */
static void blk_queue_stats_add(VirtioBlkQueue *bq, VirtioBlkStats *st)
{
    const VirtioBlkStats *b = &bq->stats;
    const VirtioQueueStats *c = &bq->q->stats;

#define ADD(f) st->f += b->f
    ADD(requests); ADD(reads); ADD(writes); ADD(flushes); ADD(discards);
    ADD(write_zeroes); ADD(get_ids); ADD(unsupported); ADD(errors); ADD(io_errors);
    ADD(bad_chains); ADD(merged); ADD(merge_retries);
    ADD(rd_done); ADD(wr_done); ADD(flush_done); ADD(rd_bytes); ADD(wr_bytes);
    ADD(rd_total_ns); ADD(wr_total_ns); ADD(flush_total_ns);
    ADD(failed_rd); ADD(failed_wr); ADD(failed_flush);
#undef ADD
    if (b->last_io_errno) {
        st->last_io_errno = b->last_io_errno;
    }
    st->handler_passes += c->handler_passes;
    st->poll_hits += c->poll_hits;
    st->irqs += c->irqs;
    st->irqs_suppressed += c->irqs_suppressed;
    if (c->batches_max > st->batches_max) {
        st->batches_max = c->batches_max;
    }
}

void virtio_blk_get_stats(VirtioBlk *s, VirtioBlkStats *stats)
{
    memset(stats, 0, sizeof(*stats));
    for (int q = 0; q < s->vdev.num_queues; q++) {
        blk_queue_stats_add(&s->queues[q], stats);
    }
    stats->needs_reset = keel_atomic_read(&s->vdev.needs_reset);
}

VirtioPci *virtio_blk_get_transport(VirtioBlk *s)
{
    return s->vp;
}

KeelBlockBackend *virtio_blk_get_backend(VirtioBlk *s)
{
    return s->blk;
}

VirtioDevice *virtio_blk_get_device(VirtioBlk *s)
{
    return &s->vdev;
}

void virtio_blk_describe(VirtioBlk *s, char *buf, size_t len)
{
    char paths[128], homes[VIRTIO_MAX_QUEUES * 24] = "";
    bool mapped = false;

    for (int q = 1; q < s->vdev.num_queues; q++) {
        mapped |= s->vdev.queues[q].ctx != s->ctx;
    }
    if (mapped) {
        /* iothread-vq-mapping: each queue's iothread, in queue order. */
        size_t n = (size_t)snprintf(homes, sizeof(homes), " vq-iothreads=");
        for (int q = 0; q < s->vdev.num_queues && n < sizeof(homes); q++) {
            n += (size_t)snprintf(homes + n, sizeof(homes) - n, "%s%s", q ? "," : "",
                                  s->vdev.queues[q].iothread_id);
        }
    }
    virtio_pci_describe(s->vp, paths, sizeof(paths));
    snprintf(buf, len, "%s pci=00:%02x.0 file=%s engine=%s cache=%s%s %s%s%s %s irq=%u "
             "queues=%d queue=%u capacity=%llu blk_size=%u",
             s->name, s->vp->pci->slot, keel_blk_get_filename(s->blk),
             keel_blk_engine_name(s->blk), keel_blk_cache_name(keel_blk_get_cache_mode(s->blk)),
             s->readonly ? " readonly" : "", s->iothread_id ? "iothread=" : "main-loop",
             s->iothread_id ? s->iothread_id : "", homes, paths, s->vp->intx_irq,
             s->vdev.num_queues, VIRTIO_BLK_QUEUE_SIZE, (unsigned long long)blk_capacity(s),
             s->blk_size);
}


/* ---- the drives of a command line ------------------------------------------------------------ */

struct VmmBlockDevices {
    /* The machine whose iothreads the queues run in, whose INTx lines the
     * functions take and whose registry lists them (not owned). */
    VmmMachine *machine;
    VirtioBlk *drives[VMM_MAX_DRIVES];
    int nr_drives;
    /* The functions' names ("virtio-blkN"): their ids in the machine's
     * registry and the owners of their INTx lines, kept by pointer. */
    char names[VMM_MAX_DRIVES][32];
    /* Opened, not yet realized: one per attached drive, in command-line order. */
    VirtioBlkConf pending[VMM_MAX_DRIVES];
    int nr_pending;
};

static KeelBlkAio blk_aio_of(VmmDriveAio aio)
{
    switch (aio) {
    case VMM_AIO_NATIVE: return KEEL_BLK_AIO_NATIVE;
    case VMM_AIO_IO_URING: return KEEL_BLK_AIO_IO_URING;
    case VMM_AIO_THREADS: break;
    }
    return KEEL_BLK_AIO_THREADS;
}

static KeelBlkCache blk_cache_of(VmmDriveCache cache)
{
    switch (cache) {
    case VMM_CACHE_NONE: return KEEL_BLK_CACHE_NONE;
    case VMM_CACHE_DIRECTSYNC: return KEEL_BLK_CACHE_DIRECTSYNC;
    case VMM_CACHE_UNSAFE: return KEEL_BLK_CACHE_UNSAFE;
    case VMM_CACHE_WRITETHROUGH: return KEEL_BLK_CACHE_WRITETHROUGH;
    case VMM_CACHE_WRITEBACK: break;
    }
    return KEEL_BLK_CACHE_WRITEBACK;
}

/* The block options a drive's command line asks for. */
static void drive_blk_options(const VmmDrive *d, KeelBlkOptions *o)
{
    keel_blk_options_init(o);
    o->filename = d->file;
    o->aio = blk_aio_of(d->aio);
    o->cache = blk_cache_of(d->cache);
    o->readonly = d->readonly;
    o->no_flush = d->no_flush;
    o->discard_unmap = d->discard_unmap;
    o->detect_zeroes = d->detect_zeroes;
    o->locking = d->locking;
    o->probe_format = d->probe_format;
    o->offset = d->offset;
    o->size = d->size;
    o->inject = d->inject;
    o->fixed_size = true;       /* the guest's capacity is fixed at start */
}

/* Opens @d's image in @ctx: host_device checks, auto-read-only, QEMU's
 * probed-raw warning.  NULL with the message in @err. */
static KeelBlockBackend *drive_open(const VmmDrive *d, KeelAioContext *ctx, char *err,
                                    size_t errlen)
{
    KeelBlkOptions o;
    KeelBlockBackend *blk;
    char *msg = NULL;
    struct stat st;
    const char *what = d->from_blockdev ? "-blockdev" : "-drive";

    if (d->host_device && (stat(d->file, &st) < 0 || !S_ISBLK(st.st_mode))) {
        snprintf(err, errlen, "%s node-name=%s: '%s' is not a block device (driver=host_device)",
                 what, d->id, d->file);
        return NULL;
    }
    drive_blk_options(d, &o);
    blk = keel_blk_open(&o, ctx, &msg);
    if (!blk && d->auto_read_only && !d->readonly) {
        /* auto-read-only=on: read-only when the image cannot be written
         * (permissions), as QEMU's file driver does. */
        if (access(d->file, W_OK) < 0 && errno == EACCES) {
            g_free(msg);
            msg = NULL;
            o.readonly = true;
            blk = keel_blk_open(&o, ctx, &msg);
        }
    }
    if (!blk) {
        snprintf(err, errlen, "%s file=%s: %s", what, d->file, msg);
        g_free(msg);
        return NULL;
    }
    if (keel_blk_is_probed_raw(blk)) {
        char *warning = keel_blk_probed_raw_warning(d->file);
        fprintf(stderr, "keel-vmm: %s\n", warning);
        g_free(warning);
    }
    return blk;
}

VmmBlockDevices *vmm_block_devices_open(VmmMachine *machine, const VmmOptions *opts, char *err,
                                        size_t errlen)
{
    VmmBlockDevices *devs = g_new0(VmmBlockDevices, 1);

    devs->machine = machine;
    for (int i = 0; i < opts->nr_drives; i++) {
        const VmmDrive *d = &opts->drives[i];
        VirtioBlkConf *conf = &devs->pending[devs->nr_pending];

        if (!d->attached) {
            continue;
        }
        memset(conf, 0, sizeof(*conf));
        drive_blk_options(d, &conf->blk);
        conf->serial = d->serial;
        conf->ctx = keel_main_aio_context();
        conf->logical_block_size = d->logical_block_size;
        conf->physical_block_size = d->physical_block_size;
        conf->pci_slot = d->pci_slot > 0 ? d->pci_slot : 0;
        conf->werror = d->werror;
        conf->rerror = d->rerror;
        conf->device = d->id;           /* NULL: "virtioN", QEMU's if=virtio name */
        conf->cache = d->cache;
        if (d->iothread) {
            conf->ctx = vmm_machine_iothread_context(machine, d->iothread);
            conf->iothread_id = d->iothread;
            if (!conf->ctx) {
                snprintf(err, errlen, "-drive file=%s: iothread=%s: no such -object iothread",
                         d->file, d->iothread);
                goto fail;
            }
        }
        conf->num_queues = d->num_queues > 0 ? d->num_queues : 1;
        for (int q = 0; d->nr_vq_map && q < conf->num_queues; q++) {
            /* iothread-vq-mapping (checked by the parser); the backend
             * lives with queue 0, as QEMU's first mapped iothread. */
            const char *id = d->vq_map[d->queue_map[q]].iothread;
            conf->queue_ctx[q] = vmm_machine_iothread_context(machine, id);
            conf->queue_iothread[q] = id;
            if (!conf->queue_ctx[q]) {
                snprintf(err, errlen, "-device virtio-blk-pci: iothread-vq-mapping: no "
                         "-object iothread,id=%s", id);
                goto fail;
            }
        }
        if (d->nr_vq_map) {
            conf->ctx = conf->queue_ctx[0];
            conf->iothread_id = conf->queue_iothread[0];
        }
        conf->backend = drive_open(d, conf->ctx, err, errlen);
        if (!conf->backend) {
            goto fail;
        }
        devs->nr_pending++;
    }
    return devs;

fail:
    vmm_block_devices_free(devs, NULL);
    return NULL;
}

int vmm_block_devices_realize(VmmBlockDevices *devs, PciHost *host, char *err, size_t errlen)
{
    Vm *vm = vmm_machine_vm(devs->machine);

    if (!vm) {
        snprintf(err, errlen, "virtio-blk-pci: the machine has no VM");
        return -1;
    }
    /* Drives with addr= first, so no automatic slot takes theirs. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < devs->nr_pending; i++) {
            VirtioBlkConf *conf = &devs->pending[i];
            char device[32];
            VirtioBlk *s;
            int irq, r;

            if (!conf->backend || (conf->pci_slot > 0) != (pass == 0)) {
                continue;
            }
            snprintf(devs->names[i], sizeof(devs->names[i]), "virtio-blk%d", i);
            conf->name = devs->names[i];
            snprintf(device, sizeof(device), "virtio%d", i);   /* copied by virtio_blk_new */
            if (!conf->device) {
                conf->device = device;
            }
            /* INTA#'s legacy line, as a PC's PCI interrupt routing gives
             * it (shared, level-triggered: vmm/kvm-irq.h). */
            irq = vmm_machine_alloc_intx(devs->machine, conf->name);
            if (irq < 0) {
                snprintf(err, errlen, "%s: no PCI INTx line: %s", conf->name, strerror(-irq));
                return -1;
            }
            conf->intx_irq = (unsigned)irq;
            s = virtio_blk_new(vm, host, conf, err, errlen);
            conf->backend = NULL;       /* taken over (closed on failure) */
            if (!s) {
                if (conf->pci_slot > 0 && strstr(err, "no free PCI slot")) {
                    snprintf(err, errlen, "-device virtio-blk-pci,addr=0x%x: the slot is taken",
                             conf->pci_slot);
                }
                return -1;
            }
            devs->drives[devs->nr_drives++] = s;
            r = vmm_machine_add_device(devs->machine, conf->name, "virtio-blk-pci", s);
            if (r < 0) {
                snprintf(err, errlen, "-device virtio-blk-pci: id '%s': %s", conf->name,
                         r == -EEXIST ? "duplicate ID" : strerror(-r));
                return -1;
            }
        }
    }
    return 0;
}

VmmBlockDevices *vmm_block_devices_new(VmmMachine *machine, PciHost *host,
                                       const VmmOptions *opts, char *err, size_t errlen)
{
    VmmBlockDevices *devs = vmm_block_devices_open(machine, opts, err, errlen);

    if (devs && vmm_block_devices_realize(devs, host, err, errlen) < 0) {
        vmm_block_devices_free(devs, NULL);
        return NULL;
    }
    return devs;
}

VirtioBlk *vmm_block_devices_drive(VmmBlockDevices *devs, int i)
{
    return devs && i >= 0 && i < devs->nr_drives ? devs->drives[i] : NULL;
}

void vmm_block_devices_print(VmmBlockDevices *devs, FILE *out)
{
    char line[512];

    for (int i = 0; devs && i < devs->nr_drives; i++) {
        virtio_blk_describe(devs->drives[i], line, sizeof(line));
        fprintf(out, "keel-vmm: %s\n", line);
    }
}

static void print_stats(VirtioBlk *s, FILE *out)
{
    const VirtioPciStats *p = &s->vp->stats;
    VirtioBlkStats st, *b = &st;

    virtio_blk_get_stats(s, &st);
    fprintf(out, "keel-vmm: %s stats: requests=%llu reads=%llu writes=%llu flushes=%llu "
            "discards=%llu write_zeroes=%llu get_ids=%llu unsupported=%llu errors=%llu "
            "io_errors=%llu last_io_errno=%d bad_chains=%llu needs_reset=%llu passes=%llu max_batch=%llu merged=%llu "
            "merge_retries=%llu poll_hits=%llu exit_kicks=%llu "
            "irqs=%llu suppressed=%llu intx_irqfd=%llu intx_ioctl=%llu msix_irqfd=%llu "
            "msix_ioctl=%llu msix_masked=%llu config_irqs=%llu resets=%llu\n", s->name,
            (unsigned long long)b->requests, (unsigned long long)b->reads,
            (unsigned long long)b->writes, (unsigned long long)b->flushes,
            (unsigned long long)b->discards, (unsigned long long)b->write_zeroes,
            (unsigned long long)b->get_ids, (unsigned long long)b->unsupported,
            (unsigned long long)b->errors, (unsigned long long)b->io_errors, b->last_io_errno,
            (unsigned long long)b->bad_chains,
            (unsigned long long)b->needs_reset, (unsigned long long)b->handler_passes,
            (unsigned long long)b->batches_max, (unsigned long long)b->merged,
            (unsigned long long)b->merge_retries, (unsigned long long)b->poll_hits,
            (unsigned long long)p->exit_kicks,
            (unsigned long long)b->irqs, (unsigned long long)b->irqs_suppressed,
            (unsigned long long)p->irqs_intx_irqfd, (unsigned long long)p->irqs_intx_ioctl,
            (unsigned long long)p->irqs_msix_irqfd, (unsigned long long)p->irqs_msix_ioctl,
            (unsigned long long)p->irqs_masked, (unsigned long long)p->config_irqs,
            (unsigned long long)p->resets);
    if (s->vdev.num_queues > 1) {
        for (int q = 0; q < s->vdev.num_queues; q++) {
            VirtioQueue *vq = &s->vdev.queues[q];
            fprintf(out, "keel-vmm: %s queue %d (%s): requests=%llu passes=%llu irqs=%llu\n",
                    s->name, q, vq->iothread_id ? vq->iothread_id : "main-loop",
                    (unsigned long long)s->queues[q].stats.requests,
                    (unsigned long long)vq->stats.handler_passes,
                    (unsigned long long)vq->stats.irqs);
        }
    }
}

void vmm_block_devices_free(VmmBlockDevices *devs, FILE *stats_out)
{
    if (!devs) {
        return;
    }
    for (int i = 0; stats_out && i < devs->nr_drives; i++) {
        virtio_pci_stop(devs->drives[i]->vp);   /* counters final: nothing in flight */
        print_stats(devs->drives[i], stats_out);
    }
    for (int i = devs->nr_drives - 1; i >= 0; i--) {
        if (vmm_machine_find_device(devs->machine, devs->drives[i]->name, "virtio-blk-pci") ==
            devs->drives[i]) {
            vmm_machine_remove_device(devs->machine, devs->drives[i]->name);
        }
        virtio_blk_free(devs->drives[i]);
    }
    for (int i = 0; i < devs->nr_pending; i++) {
        keel_blk_close(devs->pending[i].backend);   /* opened, never realized */
    }
    g_free(devs);
}

void vmm_block_features_register(void)
{
    keel_block_features_register();
    virtio_pci_features_register();
}

/* ---- for the monitors -------------------------------------------------------------- */

void vmm_block_devices_set_io_error_hook(VmmBlockDevices *devs,
                                         void (*fn)(void *opaque, const char *device,
                                                    bool is_write, int error, bool stopping),
                                         void *opaque)
{
    for (int i = 0; devs && i < devs->nr_drives; i++) {
        devs->drives[i]->io_error = fn;
        devs->drives[i]->io_error_opaque = opaque;
    }
}

/* Runs @fn(@bq) in each queue's home thread, one queue after the other. */
static void for_each_queue_in_home(VirtioBlk *s, void (*fn)(void *))
{
    for (int q = 0; q < s->vdev.num_queues; q++) {
        virtio_queue_run_in_home(s->queues[q].q, fn, &s->queues[q]);
    }
}

static void drain_in_home(void *opaque)
{
    blk_queue_settle(opaque);
}

void vmm_block_devices_drain(VmmBlockDevices *devs)
{
    for (int i = 0; devs && i < devs->nr_drives; i++) {
        for_each_queue_in_home(devs->drives[i], drain_in_home);
    }
}

static void retry_in_home(void *opaque)
{
    VirtioBlkQueue *bq = opaque;
    VirtioBlkReq *req;

    bq->io_status = "ok";
    while ((req = g_queue_pop_head(&bq->failed))) {
        if (req->type == VIRTIO_BLK_T_FLUSH) {
            keel_blk_aio_flush(bq->s->blk, req_done, req);
        } else {
            submit_one(req);        /* may fail and be held again */
        }
    }
}

void vmm_block_devices_retry(VmmBlockDevices *devs)
{
    for (int i = 0; devs && i < devs->nr_drives; i++) {
        for_each_queue_in_home(devs->drives[i], retry_in_home);
    }
}

typedef struct QueryCopy {
    VirtioBlkQueue *bq;
    VirtioBlkStats stats;           /* summed over the queues */
    const char *io_status;          /* the first queue's not "ok", else "ok" */
} QueryCopy;

static void query_in_home(void *opaque)
{
    QueryCopy *c = opaque;

    blk_queue_stats_add(c->bq, &c->stats);
    if (!strcmp(c->io_status, "ok")) {
        c->io_status = c->bq->io_status;
    }
}

int vmm_block_devices_query(VmmBlockDevices *devs, VmmBlockInfo *out, int max)
{
    int n = 0;

    for (int i = 0; devs && i < devs->nr_drives && n < max; i++) {
        VirtioBlk *s = devs->drives[i];
        QueryCopy c;
        VmmBlockInfo *o = &out[n++];

        memset(&c, 0, sizeof(c));
        c.io_status = "ok";
        for (int q = 0; q < s->vdev.num_queues; q++) {
            c.bq = &s->queues[q];
            virtio_queue_run_in_home(c.bq->q, query_in_home, &c);
        }
        memset(o, 0, sizeof(*o));
        o->device = s->device;
        o->qdev = s->name;
        o->file = keel_blk_get_filename(s->blk);
        o->readonly = s->readonly;
        o->size = blk_capacity(s) * VIRTIO_BLK_SECTOR;
        o->io_status = c.io_status;
        o->cache = vmm_drive_cache_name(s->cache);
        o->rd_operations = c.stats.rd_done;
        o->wr_operations = c.stats.wr_done;
        o->flush_operations = c.stats.flush_done;
        o->rd_bytes = c.stats.rd_bytes;
        o->wr_bytes = c.stats.wr_bytes;
        o->rd_total_time_ns = c.stats.rd_total_ns;
        o->wr_total_time_ns = c.stats.wr_total_ns;
        o->flush_total_time_ns = c.stats.flush_total_ns;
        o->failed_rd_operations = c.stats.failed_rd;
        o->failed_wr_operations = c.stats.failed_wr;
        o->failed_flush_operations = c.stats.failed_flush;
    }
    return n;
}

typedef struct ResizeArgs {
    VirtioBlk *s;
    uint64_t size;
    int ret;                /* keel_blk_grow's result */
} ResizeArgs;

/* The backend grows first (file and fixed-size window), then the capacity
 * the guest sees: never a capacity with blocks the backend refuses. */
static void resize_in_home(void *opaque)
{
    ResizeArgs *a = opaque;

    a->ret = keel_blk_grow(a->s->blk, a->size);
    if (a->ret == 0) {
        keel_atomic_set(&a->s->capacity, a->size / VIRTIO_BLK_SECTOR);
    }
}

int vmm_block_devices_resize(VmmBlockDevices *devs, const char *device, uint64_t size,
                             char *err, size_t errlen)
{
    VirtioBlk *s = NULL;
    ResizeArgs a;
    struct stat st;
    const char *file;

    for (int i = 0; devs && i < devs->nr_drives; i++) {
        if (!strcmp(devs->drives[i]->device, device)) {
            s = devs->drives[i];
        }
    }
    if (!s) {
        return vmm_fail(err, errlen, "Cannot find device='%s' nor node-name='%s'", device,
                        device);
    }
    file = keel_blk_get_filename(s->blk);
    if (s->readonly) {
        return vmm_fail(err, errlen, "Device '%s' is read only", device);
    }
    if (size % VIRTIO_BLK_SECTOR) {
        return vmm_fail(err, errlen, "The new size must be a multiple of %d", VIRTIO_BLK_SECTOR);
    }
    if (stat(file, &st) < 0 || !S_ISREG(st.st_mode)) {
        return vmm_fail(err, errlen, "Cannot resize %s: not a regular file", file);
    }
    if (size < (uint64_t)st.st_size) {
        return vmm_fail(err, errlen, "Shrinking images is not supported by keel-vmm "
                        "(the guest may still use the blocks)");
    }
    /* Grow the raw file (a sparse extension) and the backend's window in
     * the backend's home thread (queue 0's), then tell the guest. */
    a.s = s;
    a.size = size;
    virtio_queue_run_in_home(s->queues[0].q, resize_in_home, &a);
    if (a.ret < 0) {
        return vmm_fail(err, errlen, "Cannot grow %s: %s", file, strerror(-a.ret));
    }
    virtio_device_config_changed(&s->vdev);
    return 0;
}
