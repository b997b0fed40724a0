/*
 * tests/bench-block-mq — one backend, one or two submitting threads
 * (keel_blk_attach_aio_context), 4 KiB random reads at queue depth 32 per
 * thread on a file in /dev/shm (tmpfs: the block layer's own cost, not a
 * disk's).  Modes, in the same run, interleaved:
 *   1 thread            one iothread is the backend's home and submits
 *   2 attached          two iothreads, one the home, the other attached:
 *                       each submits and completes on its own engine
 *   2, one forwarding   the same two, the second not attached: its requests
 *                       go through the home thread (the single-home path)
 * Prints the median of 5 runs (total IOPS) per engine and mode.
 *
 *   make tests/bench-block-mq && ./tests/bench-block-mq [REQUESTS_PER_THREAD]
 */
#include "config.h"

#include "block/block-backend.h"
#include "loop/aio.h"
#include "loop/iothread.h"

#include <glib.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#define BLK 4096
#define DEPTH 32
#define FILE_SIZE (64 << 20)
#define RUNS 5

typedef struct Submitter Submitter;

typedef struct Slot {
    Submitter *s;
    struct iovec iov;
} Slot;

struct Submitter {
    KeelBlockBackend *blk;
    uint64_t rand;
    long left;                      /* requests still to start */
    int in_flight;
    uint8_t *bufs;
    Slot slot[DEPTH];
    int done;                       /* atomic */
};

static void sub_issue(Slot *slot);

static void sub_cb(void *opaque, int ret)
{
    Slot *slot = opaque;
    Submitter *s = slot->s;

    (void)ret;
    s->in_flight--;
    if (s->left > 0) {
        sub_issue(slot);
    } else if (s->in_flight == 0) {
        __atomic_store_n(&s->done, 1, __ATOMIC_SEQ_CST);
    }
}

static void sub_issue(Slot *slot)
{
    Submitter *s = slot->s;
    int64_t off;

    s->rand ^= s->rand << 13;
    s->rand ^= s->rand >> 7;
    s->rand ^= s->rand << 17;
    off = (int64_t)(s->rand % (FILE_SIZE / BLK)) * BLK;
    s->left--;
    s->in_flight++;
    keel_blk_aio_preadv(s->blk, off, &slot->iov, 1, sub_cb, slot);
}

/* In the submitter's thread: fill the queue in one plugged batch. */
static void sub_start(void *opaque)
{
    Submitter *s = opaque;

    keel_blk_io_plug();
    for (int i = 0; i < DEPTH && s->left > 0; i++) {
        sub_issue(&s->slot[i]);
    }
    keel_blk_io_unplug();
}

static double run_once(KeelBlockBackend *blk, KeelAioContext **ctx, int nthreads,
                       long per_thread)
{
    Submitter sub[2];
    int64_t t0, t1;

    for (int i = 0; i < nthreads; i++) {
        memset(&sub[i], 0, sizeof(sub[i]));
        sub[i].blk = blk;
        sub[i].rand = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1);
        sub[i].left = per_thread;
        if (posix_memalign((void **)&sub[i].bufs, BLK, (size_t)DEPTH * BLK)) {
            abort();
        }
        for (int k = 0; k < DEPTH; k++) {
            sub[i].slot[k].s = &sub[i];
            sub[i].slot[k].iov = (struct iovec) { sub[i].bufs + (size_t)k * BLK, BLK };
        }
    }
    t0 = g_get_monotonic_time();
    for (int i = 0; i < nthreads; i++) {
        keel_aio_bh_schedule_oneshot(ctx[i], sub_start, &sub[i]);
    }
    for (int i = 0; i < nthreads; i++) {
        while (!__atomic_load_n(&sub[i].done, __ATOMIC_SEQ_CST)) {
            g_usleep(200);
        }
    }
    t1 = g_get_monotonic_time();
    for (int i = 0; i < nthreads; i++) {
        free(sub[i].bufs);
    }
    return (double)nthreads * per_thread / ((double)(t1 - t0) / 1e6);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long per_thread = argc > 1 ? atol(argv[1]) : 50000;
    static const char *const engines[] = { "io_uring", "threads" };
    static const char *const modes[] = { "1 thread", "2 attached", "2, one forwarding" };
    char path[] = "/dev/shm/keel-bench-mq-XXXXXX";
    KeelIOThread *t[2];
    KeelAioContext *ctx[2];
    int fd = mkstemp(path);

    if (fd < 0 || ftruncate(fd, FILE_SIZE) < 0) {
        fprintf(stderr, "bench-block-mq: cannot create a file in /dev/shm\n");
        return 1;
    }
    close(fd);
    keel_aio_context_new();
    for (int i = 0; i < 2; i++) {
        t[i] = keel_iothread_new(i ? "mq-1" : "mq-0");
        ctx[i] = keel_iothread_get_aio_context(t[i]);
    }
    struct utsname u;
    if (uname(&u) < 0) {
        strcpy(u.release, "?");
    }
    printf("# bench-block-mq: 4 KiB random reads, depth %d per thread, %ld requests per "
           "thread, tmpfs, median of %d (IOPS); %ld CPUs, kernel %s\n", DEPTH, per_thread,
           RUNS, sysconf(_SC_NPROCESSORS_ONLN), u.release);
    printf("| engine | %s | %s | %s |\n|---|---:|---:|---:|\n", modes[0], modes[1], modes[2]);
    for (size_t e = 0; e < G_N_ELEMENTS(engines); e++) {
        char *opts = g_strdup_printf("file=%s,aio=%s", path, engines[e]);
        char *errmsg = NULL;
        KeelBlockBackend *blk = keel_blk_open_str(opts, ctx[0], &errmsg);
        double iops[3][RUNS];

        if (!blk) {
            fprintf(stderr, "bench-block-mq: %s\n", errmsg);
            return 1;
        }
        for (int r = 0; r < RUNS; r++) {
            iops[0][r] = run_once(blk, ctx, 1, per_thread);
            keel_blk_attach_aio_context(blk, ctx[1], &errmsg);
            iops[1][r] = run_once(blk, ctx, 2, per_thread);
            keel_blk_detach_aio_context(blk, ctx[1]);
            iops[2][r] = run_once(blk, ctx, 2, per_thread);
        }
        printf("| %s |", keel_blk_engine_name(blk));
        for (int m = 0; m < 3; m++) {
            qsort(iops[m], RUNS, sizeof(double), cmp_double);
            printf(" %.0f |", iops[m][RUNS / 2]);
        }
        printf("\n");
        keel_blk_close(blk);
        g_free(opts);
    }
    for (int i = 0; i < 2; i++) {
        keel_iothread_free(t[i]);
    }
    unlink(path);
    return 0;
}
