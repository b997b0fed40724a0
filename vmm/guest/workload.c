/*
 * vmm/guest/workload.c — the block workload generator (test=blk) and the
 * malformed-chain test (test=badchain).  Runs at CPL3.
 *
 * test=blk options (sizes take k/m/g suffixes):
 *   rw=read|write|randread|randwrite|randrw   (default read)
 *   bs=4096          request size, a multiple of 512
 *   iodepth=1        requests in flight (1..256)
 *   offset=0 size=S  the region used (default: the rest of the disk)
 *   runtime=MS       run for MS milliseconds instead of one pass of size
 *   verify=1         writes carry a pattern derived from (offset, generation,
 *                    seed); reads check every byte; write workloads end with
 *                    a read-back pass over every block they wrote
 *   gen=1            the generation of a block's first write (and what
 *                    read/randread verify against)
 *   flush=1          FLUSH after the writes; discard=1 / write_zeroes=1:
 *                    DISCARD / WRITE_ZEROES the region first (write_zeroes
 *                    with verify=1 reads the zeroes back)
 *   seed=1           PRNG and pattern seed
 *   mode=poll|irq    poll the used ring, or sleep on the device's interrupt
 *   dev=0            which virtio-blk function
 * Pattern: the little-endian 32-bit word at disk byte offset o (o % 4 == 0)
 *   is (o + gen * 0x9E3779B1 + seed * 0x85EBCA77) mod 2^32, so a host
 *   script can check an image with plain integer arithmetic.
 *
 * Result: KEEL-GUEST: RESULT status=ok|fail test=blk ops= iops= mibps=
 *   errors= verify_failures= elapsed_us= ... (elapsed covers the main
 *   pass only; set-up, discard and the verify pass are reported apart),
 *   and with verify=1: written_blocks= (blocks holding a known write at
 *   the end), written_verified= (of those, read back intact: must be all),
 *   main_verified_reads= (main-pass reads of a block written earlier).
 *   randrw's read/write choice has its own PRNG stream (vmm/guest/rand.h).
 */
#include "config.h"

#include "vmm/guest/blk.h"

enum rw_mode { RW_READ, RW_WRITE, RW_RANDREAD, RW_RANDWRITE, RW_RANDRW };
static const char *const rw_names[] = {
    "read", "write", "randread", "randwrite", "randrw",
};

struct workload {
    enum rw_mode rw;
    uint32_t bs;
    unsigned iodepth;
    uint64_t offset, size, runtime_ms;
    bool verify, flush, discard, write_zeroes, irq_mode;
    uint32_t gen, seed;
    uint64_t nblocks;
    uint32_t *block_gen;             /* per block: 0 = content unknown */
    uint8_t *block_busy;
    uint8_t *block_queue;            /* per block: the queue of its last write */
    void *buf[BLK_MAX_SLOTS];
    /* results (the workers' summed, plus the BSP's own set-up commands) */
    uint64_t ops, bytes, errors, verify_failures, verified_blocks;
    uint64_t unverified_reads, elapsed_us;
    uint64_t main_verified_reads;    /* main-pass reads of a block written before */
    uint64_t written_blocks;         /* blocks holding a known write at the end */
    uint64_t written_verified;       /* of those, read back intact by the verify pass */
    uint64_t cross_verified;         /* ... and again by another CPU, on its queue */
};

/* One CPU's share of test=blk: its request slots (on its queue or queues),
 * its part of the region, its random streams and its counts.  With one CPU
 * there is one worker with every slot and the whole region. */
struct worker {
    unsigned cpu;
    uint32_t queue_mask;
    uint16_t slots[BLK_MAX_SLOTS];
    unsigned nslots;
    uint64_t first_block, nblocks;
    uint64_t rng;                    /* block picks (xorshift64) */
    uint64_t rw_rng;                 /* randrw's read/write choice (its own stream) */
    uint64_t ops, bytes, errors, verify_failures, verified_blocks;
    uint64_t unverified_reads, elapsed_us, main_verified_reads;
    uint64_t written_blocks, written_verified, cross_verified;
    uint64_t queue_reads[BLK_MAX_QUEUES];    /* reads whose data checked out */
    uint64_t queue_writes[BLK_MAX_QUEUES];   /* last writes read back intact */
    bool sleeps;                     /* MSI-X: every queue of its interrupts here */
    uint64_t irq_waits;
    bool ok;
};

static struct blk_dev blk;
static struct workload wl;
static struct worker workers[GUEST_MAX_CPUS];
static unsigned nworkers = 1;

#define REPORT_LIMIT 5

/* ---- pattern ------------------------------------------------------------ */
static uint32_t pattern_word(uint64_t off, uint32_t gen, uint32_t seed)
{
    return (uint32_t)off + gen * 0x9E3779B1u + seed * 0x85EBCA77u;
}

static void pattern_fill(void *buf, uint64_t off, uint32_t len, uint32_t gen)
{
    uint32_t *p = buf, w = pattern_word(off, gen, wl.seed);

    for (uint32_t i = 0; i < len / 4; i++, w += 4) {
        p[i] = w;
    }
}

/* Index of the first bad 32-bit word, or -1. */
static long pattern_check(const void *buf, uint64_t off, uint32_t len, uint32_t gen)
{
    const uint32_t *p = buf;
    uint32_t w = pattern_word(off, gen, wl.seed);

    for (uint32_t i = 0; i < len / 4; i++, w += 4) {
        if (p[i] != w) {
            return (long)i;
        }
    }
    return -1;
}

static bool check_block(struct worker *w, const void *buf, uint64_t block, uint32_t gen)
{
    uint64_t off = wl.offset + block * wl.bs;
    long bad = pattern_check(buf, off, wl.bs, gen);

    w->verified_blocks++;
    if (bad < 0) {
        return true;
    }
    if (w->verify_failures++ < REPORT_LIMIT) {
        kprintf("KEEL-GUEST: verify failure at byte %lu (block %lu gen %u): "
                "got 0x%08x want 0x%08x\n", off + 4 * (uint64_t)bad, block, gen,
                ((const uint32_t *)buf)[bad],
                pattern_word(off + 4 * (uint64_t)bad, gen, wl.seed));
    }
    return false;
}

static void request_error(struct worker *w, unsigned s, int status)
{
    if (w->errors++ < REPORT_LIMIT) {
        kprintf("KEEL-GUEST: request type %u sector %lu failed: status %d\n",
                blk.slot[s].type, blk.slot[s].hdr->sector, status);
    }
}

static uint64_t deadline_after_ms(uint64_t ms)
{
    return rdtsc() + tsc_khz * ms;
}

/* ---- options ----------------------------------------------------------------- */
static bool parse_options(void)
{
    const char *rw = cmdline_get("rw");
    const char *mode = cmdline_get("mode");

    wl.rw = RW_READ;
    if (rw) {
        unsigned i;
        for (i = 0; i < ARRAY_SIZE(rw_names) && strcmp(rw, rw_names[i]); i++) {
        }
        if (i == ARRAY_SIZE(rw_names)) {
            kprintf("KEEL-GUEST: bad value '%s' for rw\n", rw);
            return false;
        }
        wl.rw = i;
    }
    if (mode && strcmp(mode, "poll") && strcmp(mode, "irq")) {
        kprintf("KEEL-GUEST: bad value '%s' for mode (poll|irq)\n", mode);
        return false;
    }
    wl.irq_mode = mode && !strcmp(mode, "irq");
    uint64_t bs = cmdline_u64("bs", 4096);
    uint64_t iodepth = cmdline_u64("iodepth", 1);
    if (!bs || bs % BLK_SECTOR || bs > (4u << 20)) {
        kprintf("KEEL-GUEST: bs must be a multiple of 512 up to 4 MiB\n");
        return false;
    }
    if (!iodepth || iodepth > BLK_MAX_SLOTS) {
        kprintf("KEEL-GUEST: iodepth must be 1..%u\n", BLK_MAX_SLOTS);
        return false;
    }
    wl.bs = bs;
    wl.iodepth = iodepth;
    wl.offset = cmdline_u64("offset", 0);
    wl.size = cmdline_u64("size", 0);
    wl.runtime_ms = cmdline_u64("runtime", 0);
    wl.verify = cmdline_u64("verify", 0) != 0;
    wl.flush = cmdline_u64("flush", 0) != 0;
    wl.discard = cmdline_u64("discard", 0) != 0;
    wl.write_zeroes = cmdline_u64("write_zeroes", 0) != 0;
    wl.gen = cmdline_u64("gen", 1);
    wl.seed = cmdline_u64("seed", 1);
    if (!wl.gen) {
        kprintf("KEEL-GUEST: gen must be >= 1\n");
        return false;
    }
    if (wl.offset % wl.bs) {
        kprintf("KEEL-GUEST: offset must be a multiple of bs\n");
        return false;
    }
    return true;
}

static uint64_t wanted_features(void)
{
    return FEATURE(VIRTIO_BLK_F_SIZE_MAX) | FEATURE(VIRTIO_BLK_F_SEG_MAX) |
           FEATURE(VIRTIO_BLK_F_RO) | FEATURE(VIRTIO_BLK_F_BLK_SIZE) |
           FEATURE(VIRTIO_BLK_F_FLUSH) | FEATURE(VIRTIO_BLK_F_DISCARD) |
           FEATURE(VIRTIO_BLK_F_WRITE_ZEROES) | FEATURE(VIRTIO_F_INDIRECT_DESC) |
           (cmdline_u64("event_idx", 1) ? FEATURE(VIRTIO_F_EVENT_IDX) : 0) |
           FEATURE(VIRTIO_F_VERSION_1);
}

static bool print_device_id(void)
{
    char *id = wl.buf[0];

    memset(id, 0, VIRTIO_BLK_ID_BYTES + 1);
    int st = blk_sync(&blk, 0, VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES);
    if (st < 0) {
        kprintf("KEEL-GUEST: GET_ID timed out\n");
        return false;
    }
    for (unsigned i = 0; i < VIRTIO_BLK_ID_BYTES; i++) {
        if (id[i] && (id[i] < 0x20 || id[i] > 0x7e)) {
            id[i] = '?';
        }
    }
    kprintf("KEEL-GUEST: blk id status=%d serial='%s'\n", st, st == 0 ? id : "");
    return true;
}

/* ---- region-wide commands (discard, write-zeroes) ---------------------------- */
static bool region_command(uint32_t type, uint32_t max_sectors, const char *name)
{
    struct virtio_blk_discard_write_zeroes *seg = wl.buf[0];
    uint64_t sector = wl.offset / BLK_SECTOR, end = (wl.offset + wl.size) / BLK_SECTOR;
    uint64_t n = 0;

    if (!max_sectors) {
        max_sectors = 1u << 22;          /* 2 GiB when the device sets no limit */
    }
    for (; sector < end; n++) {
        uint64_t count = end - sector < max_sectors ? end - sector : max_sectors;
        seg->sector = sector;
        seg->num_sectors = count;
        seg->flags = 0;
        int st = blk_sync(&blk, 0, type, 0, seg, sizeof(*seg));
        if (st != VIRTIO_BLK_S_OK) {
            kprintf("KEEL-GUEST: %s of sectors %lu+%lu failed: status %d\n", name,
                    sector, count, st);
            wl.errors++;
            return false;
        }
        sector += count;
    }
    kprintf("KEEL-GUEST: %s ok (%lu requests over %lu bytes)\n", name, n, wl.size);
    return true;
}

/* A device that completes nothing for this long has failed.  Several
 * CPUs share the host's cores (in the KVM lab: emulated ones), so they
 * get longer. */
static uint64_t wl_timeout_ms(void)
{
    return nworkers > 1 ? 30000 : 10000;
}

static void kick_queues(struct worker *w)
{
    for (unsigned q = 0; q < blk.nqueues; q++) {
        if (w->queue_mask & (1u << q)) {
            blk_kick(&blk, q);
        }
    }
}

/* Until one of w's requests may have completed.  mode=irq: sleep on the
 * device's interrupt (one CPU: INTx; several: the MSI-X vectors of the
 * CPU's queues, where it is their only user; a CPU sharing a queue whose
 * interrupt goes to another CPU polls).  mode=poll: poll. */
static bool wait_slots(struct worker *w, uint64_t deadline)
{
    if (wl.irq_mode && !blk.msix) {
        return blk_wait(&blk, deadline);
    }
    return blk_wait_slots(&blk, w->queue_mask, w->slots, w->nslots, deadline, w->cpu,
                          blk.msix && w->sleeps, &w->irq_waits);
}

/* The queue of CPU i's j-th request slot (see assign_slots). */
static unsigned worker_queue(unsigned i, unsigned j, unsigned nq)
{
    if (nq <= nworkers) {
        return i % nq;
    }
    unsigned count = (nq - i + nworkers - 1) / nworkers;   /* q = i + k * nworkers */
    return i + (j % count) * nworkers;
}

/* Reads every block of [first, first + n) whose content is known and
 * checks it, on worker w's slots.  zeroes: expect zero bytes instead of
 * the pattern.  cross: another CPU's blocks (counted as cross_verified). */
static bool verify_pass(struct worker *w, uint64_t first, uint64_t n, bool zeroes,
                        bool cross)
{
    uint64_t next = first, end = first + n, inflight = 0;
    uint64_t failures_before = w->verify_failures, checked = 0, written = 0;
    uint64_t deadline = deadline_after_ms(wl_timeout_ms());

    if (!zeroes) {
        for (uint64_t b = first; b < end; b++) {
            written += wl.block_gen[b] != 0;
        }
        if (!cross) {
            w->written_blocks = written;
        }
    }

    for (;;) {
        for (unsigned i = 0; i < w->nslots && next < end; i++) {
            unsigned s = w->slots[i];
            if (blk.slot[s].busy) {
                continue;
            }
            while (next < end && !zeroes && !wl.block_gen[next]) {
                next++;
            }
            if (next == end) {
                break;
            }
            blk.slot[s].block = next;
            blk_submit(&blk, s, VIRTIO_BLK_T_IN,
                       (wl.offset + next * wl.bs) / BLK_SECTOR, wl.buf[s], wl.bs);
            next++;
            inflight++;
        }
        kick_queues(w);
        if (!inflight) {
            break;
        }
        int s = blk_complete_slots(&blk, w->queue_mask, w->slots, w->nslots);
        if (s < 0) {
            if (!wait_slots(w, deadline)) {
                kprintf("KEEL-GUEST: cpu %u: verify pass: device timeout (status 0x%x)\n",
                        w->cpu, virtio_get_status(&blk.pci));
                w->errors++;
                return false;
            }
            continue;
        }
        struct blk_slot *sl = &blk.slot[s];
        inflight--;
        deadline = deadline_after_ms(wl_timeout_ms());
        if (*sl->status != VIRTIO_BLK_S_OK) {
            request_error(w, (unsigned)s, *sl->status);
            continue;
        }
        checked++;
        if (zeroes) {
            const uint8_t *p = wl.buf[s];
            w->verified_blocks++;
            for (uint32_t i = 0; i < wl.bs; i++) {
                if (p[i]) {
                    if (w->verify_failures++ < REPORT_LIMIT) {
                        kprintf("KEEL-GUEST: verify failure: byte %lu is 0x%02x "
                                "after write-zeroes\n",
                                wl.offset + sl->block * wl.bs + i, p[i]);
                    }
                    break;
                }
            }
        } else if (check_block(w, wl.buf[s], sl->block, wl.block_gen[sl->block])) {
            w->queue_reads[sl->queue]++;
            if (cross) {
                w->cross_verified++;
            } else {
                w->written_verified++;
                w->queue_writes[wl.block_queue[sl->block]]++;
            }
        }
    }
    if (nworkers > 1) {
        kprintf("KEEL-GUEST: cpu %u: verify pass%s: %lu blocks %lu-%lu read back, %lu bad\n",
                w->cpu, zeroes ? " (zeroes)" : cross ? " (another CPU's blocks)" : "",
                checked, first, end - 1, w->verify_failures - failures_before);
    } else {
        kprintf("KEEL-GUEST: verify pass%s: %lu blocks read back, %lu bad\n",
                zeroes ? " (zeroes)" : "", checked, w->verify_failures - failures_before);
    }
    return w->verify_failures == failures_before;
}

/* ---- the main pass ------------------------------------------------------------ */
static bool is_random(void)
{
    return wl.rw == RW_RANDREAD || wl.rw == RW_RANDWRITE || wl.rw == RW_RANDRW;
}

static bool does_writes(void)
{
    return wl.rw == RW_WRITE || wl.rw == RW_RANDWRITE || wl.rw == RW_RANDRW;
}

/* Picks the next block of w's part; with verify, never one that is in
 * flight (two writes racing to a block would leave it unpredictable). */
static bool pick_block(struct worker *w, uint64_t *seq_next, uint64_t *block)
{
    if (!is_random()) {
        uint64_t b = w->first_block + (*seq_next)++ % w->nblocks;
        if (wl.block_busy && wl.block_busy[b]) {
            (*seq_next)--;
            return false;
        }
        *block = b;
        return true;
    }
    for (unsigned tries = 0; tries < 8; tries++) {
        uint64_t b = w->first_block + xorshift64(&w->rng) % w->nblocks;
        if (!wl.block_busy || !wl.block_busy[b]) {
            *block = b;
            return true;
        }
    }
    return false;
}

static void finish_request(struct worker *w, unsigned s)
{
    struct blk_slot *sl = &blk.slot[s];
    uint8_t status = *sl->status;

    if (wl.block_busy) {
        wl.block_busy[sl->block] = 0;
    }
    if (status != VIRTIO_BLK_S_OK) {
        request_error(w, s, status);
        if (sl->type == VIRTIO_BLK_T_OUT && wl.block_gen) {
            wl.block_gen[sl->block] = 0;         /* content now unknown */
        }
        return;
    }
    w->ops++;
    w->bytes += sl->len;
    if (sl->type == VIRTIO_BLK_T_OUT) {
        if (wl.block_gen) {
            wl.block_gen[sl->block] = sl->gen;
            wl.block_queue[sl->block] = (uint8_t)sl->queue;
        }
    } else if (sl->verify) {
        if (check_block(w, sl->data, sl->block, sl->gen)) {
            w->queue_reads[sl->queue]++;
        }
        w->main_verified_reads++;
    } else if (wl.verify) {
        w->unverified_reads++;
    }
}

static bool main_pass(struct worker *w)
{
    uint64_t total_ops = wl.runtime_ms ? UINT64_MAX : w->nblocks;
    uint64_t issued = 0, inflight = 0, seq_next = 0;
    uint64_t t0 = rdtsc();
    uint64_t end = wl.runtime_ms ? t0 + tsc_khz * wl.runtime_ms : UINT64_MAX;
    uint64_t deadline = deadline_after_ms(wl_timeout_ms());
    bool ok = true;

    for (;;) {
        bool stop = issued >= total_ops || (wl.runtime_ms && rdtsc() >= end);
        for (unsigned i = 0; i < w->nslots && !stop; i++) {
            unsigned s = w->slots[i];
            struct blk_slot *sl = &blk.slot[s];
            uint64_t block;
            if (sl->busy) {
                continue;
            }
            if (!pick_block(w, &seq_next, &block)) {
                break;                           /* retry after a completion */
            }
            bool write = wl.rw == RW_WRITE || wl.rw == RW_RANDWRITE ||
                         (wl.rw == RW_RANDRW && rw_choose_write(&w->rw_rng));
            sl->block = block;
            sl->verify = false;
            if (write) {
                uint32_t prev = wl.block_gen ? wl.block_gen[block] : 0;
                sl->gen = prev ? prev + 1 : wl.gen;
                if (wl.verify) {
                    pattern_fill(wl.buf[s], wl.offset + block * wl.bs, wl.bs, sl->gen);
                }
            } else if (wl.block_gen && wl.block_gen[block]) {
                sl->gen = wl.block_gen[block];
                sl->verify = true;
            }
            if (wl.block_busy) {
                wl.block_busy[block] = 1;
            }
            blk_submit(&blk, s, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN,
                       (wl.offset + block * wl.bs) / BLK_SECTOR, wl.buf[s], wl.bs);
            issued++;
            inflight++;
            stop = issued >= total_ops;
        }
        kick_queues(w);
        if (!inflight) {
            break;
        }
        int s;
        bool progress = false;
        while ((s = blk_complete_slots(&blk, w->queue_mask, w->slots, w->nslots)) >= 0) {
            finish_request(w, (unsigned)s);
            inflight--;
            progress = true;
        }
        if (progress) {
            deadline = deadline_after_ms(wl_timeout_ms());
            continue;
        }
        if (!wait_slots(w, deadline)) {
            kprintf("KEEL-GUEST: cpu %u: device timeout: %lu requests in flight, "
                    "status 0x%x\n", w->cpu, inflight, virtio_get_status(&blk.pci));
            w->errors++;
            ok = false;
            break;
        }
    }
    w->elapsed_us = (rdtsc() - t0) * 1000 / tsc_khz;
    return ok;
}

/* FLUSH on one of w's slots (all of them idle). */
static bool worker_flush(struct worker *w)
{
    unsigned s = w->slots[0];
    uint64_t deadline = deadline_after_ms(wl_timeout_ms());
    int done;

    blk_submit(&blk, s, VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
    kick_queues(w);
    while ((done = blk_complete_slots(&blk, w->queue_mask, w->slots, w->nslots)) != (int)s) {
        if (done < 0 && !wait_slots(w, deadline)) {
            kprintf("KEEL-GUEST: cpu %u: flush timed out\n", w->cpu);
            w->errors++;
            return false;
        }
    }
    int st = *blk.slot[s].status;
    if (nworkers > 1) {
        kprintf("KEEL-GUEST: cpu %u: flush status=%d\n", w->cpu, st);
    } else {
        kprintf("KEEL-GUEST: flush status=%d\n", st);
    }
    if (st != VIRTIO_BLK_S_OK) {
        w->errors++;
        return false;
    }
    return true;
}

/* Phase 1 on every CPU: the main pass over its part, then (writing with
 * verify) reading back every block it wrote. */
static void worker_run(unsigned cpu, void *arg)
{
    struct worker *w = &workers[cpu];

    (void)arg;
    if (blk.msix) {
        lapic_timer_periodic(10000);             /* the watchdog: 100 Hz */
    }
    w->ok = main_pass(w);
    if (does_writes() && wl.flush) {
        w->ok &= worker_flush(w);
    }
    if (w->ok && does_writes() && wl.verify) {
        w->ok &= verify_pass(w, w->first_block, w->nblocks, false, false);
    }
    if (blk.msix && cpu) {
        lapic_timer_periodic(0);         /* the BSP's ticks on (blk_open) */
    }
}

/* Phase 2 (several CPUs, writing with verify): every CPU reads back the
 * next CPU's blocks through its own queue, so data written on one queue
 * is checked through another. */
static void worker_cross_check(unsigned cpu, void *arg)
{
    struct worker *w = &workers[cpu];
    const struct worker *other = &workers[(cpu + 1) % nworkers];

    (void)arg;
    if (blk.msix) {
        lapic_timer_periodic(10000);
    }
    w->ok &= verify_pass(w, other->first_block, other->nblocks, false, true);
    if (blk.msix && cpu) {
        lapic_timer_periodic(0);         /* the BSP's ticks on (blk_open) */
    }
}

/* Deals the request slots out to the CPUs.  With MQ and several CPUs, CPU
 * i uses queue i % nqueues, or, with more queues than CPUs, every queue q
 * with q % ncpus == i (its slots dealt round-robin over them); without MQ
 * every CPU shares queue 0 under its lock.  One CPU gets every slot the
 * queue could hold. */
static bool assign_slots(void)
{
    unsigned nq = blk.nqueues, depth = wl.iodepth;
    unsigned want[BLK_MAX_QUEUES] = { 0 }, next[BLK_MAX_QUEUES];

    if (nworkers * depth > BLK_MAX_SLOTS) {
        depth = BLK_MAX_SLOTS / nworkers;
        kprintf("KEEL-GUEST: %u CPUs x iodepth %u > %u slots; iodepth lowered to %u\n",
                nworkers, wl.iodepth, BLK_MAX_SLOTS, depth);
    }
    for (unsigned i = 0; i < nworkers; i++) {
        for (unsigned j = 0; j < depth; j++) {
            want[worker_queue(i, j, nq)]++;
        }
    }
    if (!blk_setup_slots(&blk, want, wl.bs)) {
        return false;
    }
    for (unsigned q = 0; q < nq; q++) {
        next[q] = blk_first_slot(&blk, q);
    }
    for (unsigned i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        memset(w, 0, sizeof(*w));
        w->cpu = i;
        /* Worker 0's streams are the single-CPU guest's. */
        w->rng = (0x9E3779B97F4A7C15ull ^ wl.seed) + i * 0x632BE59BD9B4E019ull;
        w->rw_rng = rw_choice_seed(wl.seed) ^ (i * 0xA0761D6478BD642Full);
        for (unsigned j = 0; j < depth; j++) {
            unsigned q = worker_queue(i, j, nq);
            if (next[q] < blk_first_slot(&blk, q) + blk.queue_slots[q]) {
                w->slots[w->nslots++] = (uint16_t)next[q]++;
                w->queue_mask |= 1u << q;
            }
        }
        if (!w->nslots) {
            kprintf("KEEL-GUEST: cpu %u gets no request slots\n", i);
            return false;
        }
    }
    /* MSI-X: queue q interrupts the first CPU that uses it. */
    for (unsigned q = 0; q < nq && blk.msix; q++) {
        unsigned first = 0;
        while (first < nworkers && !(workers[first].queue_mask & (1u << q))) {
            first++;
        }
        if (first == nworkers) {
            first = 0;                   /* unused queue: the BSP */
        }
        blk_route_irq(&blk, q, smp_cpus[first].apic_id);
        kprintf("KEEL-GUEST: queue %u: MSI-X vector %u -> cpu %u (APIC ID %u)\n", q, q,
                first, smp_cpus[first].apic_id);
    }
    for (unsigned i = 0; i < nworkers && blk.msix; i++) {
        workers[i].sleeps = true;
        for (unsigned j = 0; j < i; j++) {
            if (workers[j].queue_mask & workers[i].queue_mask) {
                workers[i].sleeps = false;   /* its queue interrupts cpu j */
            }
        }
    }
    return true;
}

/* Splits the region over the CPUs: CPU i gets the i-th of nworkers equal
 * runs of blocks, and only ever writes there. */
static bool assign_ranges(void)
{
    for (unsigned i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        w->first_block = wl.nblocks * i / nworkers;
        w->nblocks = wl.nblocks * (i + 1) / nworkers - w->first_block;
        if (!w->nblocks) {
            kprintf("KEEL-GUEST: cpu %u gets no blocks (region too small)\n", i);
            return false;
        }
        if (nworkers > 1) {
            kprintf("KEEL-GUEST: cpu %u: queues 0x%x, %u slots, blocks %lu-%lu\n", i,
                    w->queue_mask, w->nslots, w->first_block,
                    w->first_block + w->nblocks - 1);
        }
    }
    return true;
}

static void sum_workers(void)
{
    for (unsigned i = 0; i < nworkers; i++) {
        const struct worker *w = &workers[i];
        wl.ops += w->ops;
        wl.bytes += w->bytes;
        wl.errors += w->errors;
        wl.verify_failures += w->verify_failures;
        wl.verified_blocks += w->verified_blocks;
        wl.unverified_reads += w->unverified_reads;
        wl.main_verified_reads += w->main_verified_reads;
        wl.written_blocks += w->written_blocks;
        wl.written_verified += w->written_verified;
        wl.cross_verified += w->cross_verified;
        blk.irq_waits += w->irq_waits;
        if (w->elapsed_us > wl.elapsed_us) {
            wl.elapsed_us = w->elapsed_us;
        }
    }
}

/* "KEEL-GUEST: queue q: R reads, W writes verified" for every queue set
 * up, so a test can tell that each one carried checked data. */
static void print_queue_summary(void)
{
    for (unsigned q = 0; q < blk.nqueues; q++) {
        uint64_t r = 0, wr = 0;
        for (unsigned i = 0; i < nworkers; i++) {
            r += workers[i].queue_reads[q];
            wr += workers[i].queue_writes[q];
        }
        kprintf("KEEL-GUEST: queue %u: %lu reads, %lu writes verified (kicks=%lu "
                "kicks_suppressed=%lu msix_irqs=%lu)\n", q, r, wr, blk.vqs[q].kicks,
                blk.vqs[q].kicks_suppressed, blk.msix ? irq_state.msi_count[q] : 0);
    }
}

static bool run_workload(void)
{
    uint64_t disk_bytes = blk.capacity * BLK_SECTOR;

    if (wl.offset >= disk_bytes) {
        kprintf("KEEL-GUEST: offset beyond the disk (%lu bytes)\n", disk_bytes);
        return false;
    }
    if (!wl.size || wl.size > disk_bytes - wl.offset) {
        wl.size = disk_bytes - wl.offset;
    }
    wl.nblocks = wl.size / wl.bs;
    wl.size = wl.nblocks * wl.bs;
    if (!wl.nblocks) {
        kprintf("KEEL-GUEST: region smaller than bs\n");
        return false;
    }
    if (does_writes() && blk.ro) {
        kprintf("KEEL-GUEST: note: the device is read-only (VIRTIO_BLK_F_RO); "
                "writes should fail\n");
    }
    if (wl.verify) {
        /* Block state: what each block should hold, which are in flight
         * (two writes racing to one block would leave it unpredictable)
         * and which queue wrote it last. */
        if (wl.nblocks * 6 > guest_heap_free() / 2) {
            kprintf("KEEL-GUEST: region too large to track %lu blocks\n", wl.nblocks);
            return false;
        }
        wl.block_gen = guest_alloc(wl.nblocks * 4, 8);
        wl.block_busy = guest_alloc(wl.nblocks, 8);
        wl.block_queue = guest_alloc(wl.nblocks, 8);
        memset(wl.block_busy, 0, wl.nblocks);
        memset(wl.block_queue, 0, wl.nblocks);
        for (uint64_t i = 0; i < wl.nblocks; i++) {
            /* Reads of a read workload expect the first generation. */
            wl.block_gen[i] = (wl.verify && !does_writes()) ? wl.gen : 0;
        }
    }
    if (!assign_ranges()) {
        return false;
    }

    bool ok = true;
    if (wl.discard) {
        if (!(blk.pci.features & FEATURE(VIRTIO_BLK_F_DISCARD))) {
            kprintf("KEEL-GUEST: discard=1 but the device lacks VIRTIO_BLK_F_DISCARD\n");
            ok = false;
        } else {
            ok &= region_command(VIRTIO_BLK_T_DISCARD, blk.max_discard_sectors, "discard");
        }
    }
    if (wl.write_zeroes) {
        if (!(blk.pci.features & FEATURE(VIRTIO_BLK_F_WRITE_ZEROES))) {
            kprintf("KEEL-GUEST: write_zeroes=1 but the device lacks "
                    "VIRTIO_BLK_F_WRITE_ZEROES\n");
            ok = false;
        } else {
            ok &= region_command(VIRTIO_BLK_T_WRITE_ZEROES,
                                 blk.max_write_zeroes_sectors, "write-zeroes");
            if (ok && wl.verify) {
                ok &= verify_pass(&workers[0], 0, wl.nblocks, true, false);
            }
        }
    }
    if (!ok) {
        sum_workers();
        return false;
    }
    if (wl.flush && does_writes() && !(blk.pci.features & FEATURE(VIRTIO_BLK_F_FLUSH))) {
        kprintf("KEEL-GUEST: flush=1 but the device lacks VIRTIO_BLK_F_FLUSH\n");
        return false;
    }

    kprintf("KEEL-GUEST: workload rw=%s bs=%u iodepth=%u offset=%lu size=%lu%s "
            "verify=%u mode=%s seed=%u gen=%u cpus=%u queues=%u\n", rw_names[wl.rw],
            wl.bs, workers[0].nslots, wl.offset, wl.size,
            wl.runtime_ms ? " (time-based)" : "", wl.verify, wl.irq_mode ? "irq" : "poll",
            wl.seed, wl.gen, nworkers, blk.nqueues);
    if (nworkers > 1) {
        smp_run_all(worker_run, NULL);
    } else {
        worker_run(0, NULL);
    }
    for (unsigned i = 0; i < nworkers; i++) {
        ok &= workers[i].ok;
    }
    if (ok && nworkers > 1 && does_writes() && wl.verify) {
        smp_run_all(worker_cross_check, NULL);
        for (unsigned i = 0; i < nworkers; i++) {
            ok &= workers[i].ok;
        }
    }
    sum_workers();
    if (ok && does_writes() && wl.verify) {
        /* Every block written must have been read back intact. */
        if (wl.written_verified != wl.written_blocks) {
            kprintf("KEEL-GUEST: verify pass: %lu of %lu written blocks read back intact\n",
                    wl.written_verified, wl.written_blocks);
            ok = false;
        }
        if (nworkers > 1 && wl.cross_verified != wl.written_blocks) {
            kprintf("KEEL-GUEST: cross-check: %lu of %lu written blocks read back "
                    "intact by another CPU\n", wl.cross_verified, wl.written_blocks);
            ok = false;
        }
    }
    if (nworkers > 1 || blk.nqueues > 1) {
        print_queue_summary();
    }
    return ok;
}

/* ---- test=badchain ------------------------------------------------------------- */
enum chain_fault {
    FAULT_ADDRESS,          /* every buffer far outside guest RAM */
    FAULT_LOOP,             /* the status descriptor links back to the data */
    FAULT_OVERSIZED,        /* a 2 GiB data descriptor */
    FAULT_HEADER_WRITABLE,  /* the request header marked device-writable */
    FAULT_STATUS_READONLY,  /* the status byte marked device-readable */
    FAULT_BEYOND_CAPACITY,  /* well-formed read past the end of the disk */
    FAULT_NEXT_RANGE,       /* a next index >= the queue size */
    FAULT_INDIRECT_OUTSIDE, /* an indirect table far outside guest RAM */
    FAULT_INDIRECT_SIZE,    /* an indirect table of 20 bytes (not n * 16) */
    FAULT_INDIRECT_NESTED,  /* an indirect table holding an indirect descriptor */
    FAULT_AVAIL_AHEAD,      /* avail idx a queue size and more ahead of the device */
};
static const char *const fault_names[] = {
    "out-of-range-address", "loop", "oversized", "header-writable",
    "status-readonly", "beyond-capacity", "next-out-of-range", "indirect-outside-ram",
    "indirect-bad-size", "indirect-nested", "avail-idx-far-ahead",
};

/* Builds a bad chain in slot 0's descriptors (direct layout). */
static void submit_bad_chain(enum chain_fault fault)
{
    struct blk_slot *sl = &blk.slot[0];
    struct vring_desc *d = &blk.vqs[0].desc[sl->head];
    uint16_t h = sl->head;
    uint64_t hdr = (uint64_t)(uintptr_t)sl->hdr;
    uint64_t data = (uint64_t)(uintptr_t)wl.buf[0];
    uint64_t status = (uint64_t)(uintptr_t)sl->status;

    sl->hdr->type = VIRTIO_BLK_T_IN;
    sl->hdr->reserved = 0;
    sl->hdr->sector = fault == FAULT_BEYOND_CAPACITY ? blk.capacity : 0;
    *sl->status = 0xff;
    sl->type = VIRTIO_BLK_T_IN;
    sl->busy = true;
    d[0] = (struct vring_desc){ hdr, 16, VRING_DESC_F_NEXT, (uint16_t)(h + 1) };
    d[1] = (struct vring_desc){ data, 4096, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
                                (uint16_t)(h + 2) };
    d[2] = (struct vring_desc){ status, 1, VRING_DESC_F_WRITE, 0 };
    switch (fault) {
    case FAULT_ADDRESS:
        /* All three, not just one: QEMU bounces one non-RAM mapping at a
         * time (reads as zeroes, writes dropped) and only fails the next. */
        d[0].addr = 1ull << 46;
        d[1].addr = (1ull << 46) + 0x1000;
        d[2].addr = (1ull << 46) + 0x2000;
        break;
    case FAULT_LOOP:
        d[2].flags |= VRING_DESC_F_NEXT;        /* both device-writable, so */
        d[2].next = h + 1;                      /* only the cycle is wrong */
        break;
    case FAULT_OVERSIZED:
        d[1].len = 0x80000000u;
        break;
    case FAULT_HEADER_WRITABLE:
        d[0].flags |= VRING_DESC_F_WRITE;
        break;
    case FAULT_STATUS_READONLY:
        d[2].flags &= ~VRING_DESC_F_WRITE;
        break;
    case FAULT_BEYOND_CAPACITY:
        break;
    case FAULT_NEXT_RANGE:
        d[1].next = (uint16_t)(blk.vqs[0].size + 3);
        break;
    case FAULT_INDIRECT_OUTSIDE:
        d[0] = (struct vring_desc){ 1ull << 46, 3 * 16, VRING_DESC_F_INDIRECT, 0 };
        break;
    case FAULT_INDIRECT_SIZE:
    case FAULT_INDIRECT_NESTED: {
        /* The table in the data buffer; its first entry is itself indirect. */
        struct vring_desc *t = wl.buf[0];
        t[0] = (struct vring_desc){ data + 0x100, 48, VRING_DESC_F_INDIRECT, 0 };
        t[1] = (struct vring_desc){ status, 1, VRING_DESC_F_WRITE, 0 };
        d[0] = (struct vring_desc){ data, fault == FAULT_INDIRECT_SIZE ? 20 : 32,
                                    VRING_DESC_F_INDIRECT, 0 };
        break;
    }
    case FAULT_AVAIL_AHEAD:
        /* No new chain: the index alone claims size + 7 new entries. */
        blk.vqs[0].avail_idx = (uint16_t)(blk.vqs[0].avail_idx + blk.vqs[0].size + 7);
        barrier();
        ((volatile struct vring_avail *)blk.vqs[0].avail)->idx = blk.vqs[0].avail_idx;
        *blk.vqs[0].notify = (uint16_t)blk.vqs[0].index;
        return;
    }
    vq_add(&blk.vqs[0], h);
    vq_kick(&blk.vqs[0]);
}

/* What the device did with a bad chain: "failed" (completed with an error
 * status), "needs-reset", or the unacceptable "completed-ok"/"ignored". */
static const char *await_verdict(bool *acceptable)
{
    uint64_t deadline = deadline_after_ms(3000);
    uint64_t next_status_check = 0;

    for (;;) {
        int s = blk_complete(&blk);
        if (s >= 0) {
            uint8_t st = *blk.slot[s].status;
            *acceptable = st == VIRTIO_BLK_S_IOERR || st == VIRTIO_BLK_S_UNSUPP;
            return st == VIRTIO_BLK_S_IOERR ? "failed-ioerr" :
                   st == VIRTIO_BLK_S_UNSUPP ? "failed-unsupp" :
                   st == VIRTIO_BLK_S_OK ? "completed-ok" : "completed-bad-status";
        }
        uint64_t now = rdtsc();
        if (now >= next_status_check) {       /* MMIO: not on every spin */
            if (virtio_get_status(&blk.pci) & VIRTIO_STATUS_NEEDS_RESET) {
                *acceptable = true;
                return "needs-reset";
            }
            next_status_check = now + tsc_khz;      /* 1 ms */
        }
        if (now > deadline) {
            *acceptable = false;
            return "ignored";
        }
        cpu_relax();
    }
}

static bool sanity_read(void)
{
    int st = blk_sync(&blk, 0, VIRTIO_BLK_T_IN, 0, wl.buf[0], 4096);

    if (st != VIRTIO_BLK_S_OK) {
        kprintf("KEEL-GUEST: badchain: a good read afterwards failed (status %d, "
                "device status 0x%x)\n", st, virtio_get_status(&blk.pci));
        return false;
    }
    return true;
}

static bool run_badchain(void)
{
    bool all_ok = true;
    unsigned resets = 0;

    if (blk.indirect || blk.stride < 3) {
        kprintf("KEEL-GUEST: badchain needs direct descriptors\n");
        return false;
    }
    if (!sanity_read()) {
        return false;
    }
    for (unsigned f = 0; f < ARRAY_SIZE(fault_names); f++) {
        bool acceptable = false;
        submit_bad_chain(f);
        const char *verdict = await_verdict(&acceptable);
        uint8_t status = virtio_get_status(&blk.pci);
        bool reset = !!(status & VIRTIO_STATUS_NEEDS_RESET) ||
                     !strcmp(verdict, "ignored");
        if (reset) {
            resets++;
            if (!blk_reinit(&blk)) {
                kprintf("KEEL-GUEST: badchain: re-initialising the device failed\n");
                return false;
            }
        }
        bool still_works = sanity_read();
        kprintf("KEEL-GUEST: badchain %s: %s (device status 0x%x)%s%s\n",
                fault_names[f], verdict, status, reset ? ", reset" : "",
                still_works ? ", device works afterwards" : ", DEVICE BROKEN");
        all_ok &= acceptable && still_works;
        if (!acceptable) {
            wl.errors++;
        }
        if (!still_works) {
            return false;
        }
    }
    kprintf("KEEL-GUEST: badchain: %u cases, %u resets\n",
            (unsigned)ARRAY_SIZE(fault_names), resets);
    return all_ok;
}

/* ---- test=hostile: a driver that breaks the transport's rules ------------------- */
/* Each case ends with a reset (if the device asks for one, or the case
 * leaves it unusable), a fresh set-up and a good read: the device must
 * have failed safely and still work.  The verdicts name what was seen. */

/* Waits up to 1 s for NEEDS_RESET or a completion; "needs-reset",
 * "completed" (with the status in *st) or "nothing". */
static const char *watch_device(int *st)
{
    uint64_t deadline = deadline_after_ms(1000);

    while (rdtsc() < deadline) {
        int s = blk_complete(&blk);
        if (s >= 0) {
            *st = *blk.slot[s].status;
            return "completed";
        }
        if (virtio_get_status(&blk.pci) & VIRTIO_STATUS_NEEDS_RESET) {
            return "needs-reset";
        }
        cpu_relax();
    }
    return "nothing";
}

/* Set-up by hand up to DRIVER_OK with one rule broken; then one read. */
enum setup_fault { SETUP_NO_FEATURES_OK, SETUP_QUEUE_SIZE, SETUP_RING_OUTSIDE };

static const char *hostile_setup(enum setup_fault fault, bool *acceptable)
{
    struct virtio_pci_dev *d = &blk.pci;
    volatile uint8_t *c = d->common;
    int st = -1;

    virtio_reset(d);
    virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    if (fault != SETUP_NO_FEATURES_OK) {
        *(volatile uint32_t *)(c + VCC_DRIVER_FEATURE_SELECT) = 1;
        *(volatile uint32_t *)(c + VCC_DRIVER_FEATURE) = 1;      /* VERSION_1 only */
        virtio_set_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                             VIRTIO_STATUS_FEATURES_OK);
    }
    *(volatile uint16_t *)(c + VCC_QUEUE_SELECT) = 0;
    *(volatile uint16_t *)(c + VCC_QUEUE_SIZE) =
        fault == SETUP_QUEUE_SIZE ? 3 : (uint16_t)blk.vqs[0].size;
    *(volatile uint64_t *)(c + VCC_QUEUE_DESC) =
        fault == SETUP_RING_OUTSIDE ? 1ull << 46 : (uint64_t)(uintptr_t)blk.vqs[0].desc;
    *(volatile uint64_t *)(c + VCC_QUEUE_DRIVER) = (uint64_t)(uintptr_t)blk.vqs[0].avail;
    *(volatile uint64_t *)(c + VCC_QUEUE_DEVICE) = (uint64_t)(uintptr_t)blk.vqs[0].used;
    *(volatile uint16_t *)(c + VCC_QUEUE_ENABLE) = 1;
    virtio_set_status(d, virtio_get_status(d) | VIRTIO_STATUS_DRIVER_OK);
    uint8_t status = virtio_get_status(d);
    /* The rings were zeroed by nobody: start them over, then one read. */
    memset(blk.vqs[0].avail, 0, 6 + 2ull * blk.vqs[0].size);
    memset(blk.vqs[0].used, 0, 6 + 8ull * blk.vqs[0].size);
    blk.vqs[0].avail_idx = blk.vqs[0].kicked_idx = blk.vqs[0].last_used = 0;
    blk_submit(&blk, 0, VIRTIO_BLK_T_IN, 0, wl.buf[0], 4096);
    *blk.vqs[0].notify = 0;
    const char *seen = watch_device(&st);
    /* Refusing the set-up, asking for a reset, or doing nothing are safe;
     * so is serving the read when the rings it used are real (a device may
     * accept DRIVER_OK without FEATURES_OK, as legacy did, and QEMU takes a
     * queue of 3).  Only a descriptor table outside RAM cannot serve it. */
    *acceptable = fault != SETUP_RING_OUTSIDE || strcmp(seen, "completed") ||
                  st != VIRTIO_BLK_S_OK;
    kprintf("KEEL-GUEST: hostile setup status after DRIVER_OK 0x%x\n", status);
    return seen;
}

static const char *hostile_reset_inflight(bool *acceptable)
{
    unsigned n = blk.nslots;

    for (unsigned s = 0; s < n; s++) {
        blk_submit(&blk, s, VIRTIO_BLK_T_IN, 8ull * s, wl.buf[s], 4096);
    }
    vq_kick(&blk.vqs[0]);
    *acceptable = virtio_reset(&blk.pci);       /* must complete, drained */
    return *acceptable ? "reset-completed" : "reset-stuck";
}

static const char *hostile_config_write(bool *acceptable)
{
    uint64_t cap = virtio_cfg64(&blk.pci, VBLK_CFG_CAPACITY);

    for (unsigned i = 0; i < 64; i++) {
        blk.pci.device_cfg[i] = 0xa5;
    }
    *acceptable = virtio_cfg64(&blk.pci, VBLK_CFG_CAPACITY) == cap;
    return *acceptable ? "ignored, capacity unchanged" : "capacity changed";
}

static const char *hostile_msix(bool *acceptable)
{
    struct pci_func *f = blk.pci.pci;
    unsigned cap = pci_read8(f, 0x34) & 0xfc;      /* capabilities pointer */

    for (unsigned n = 0; cap && pci_read8(f, cap) != 0x11 && n < 48; n++) {
        cap = pci_read8(f, cap + 1) & 0xfc;
    }
    if (!cap) {
        *acceptable = true;
        return "no MSI-X capability";
    }
    uint32_t table = pci_read32(f, cap + 4);
    uint64_t base = pci_bar_address(f, table & 7);
    volatile uint32_t *t = (volatile uint32_t *)(uintptr_t)(base + (table & ~7u));
    if (!base || !map_mmio(base + (table & ~7u), 32)) {
        *acceptable = true;
        return "MSI-X table not mappable";
    }
    /* Entries 0 and 1: an address nothing decodes, all data bits, unmasked;
     * MSI-X on, both vectors used, then a read (polled: we take no MSI). */
    for (unsigned e = 0; e < 2; e++) {
        t[4 * e] = 0xdead0000u;
        t[4 * e + 1] = 0xffffffffu;
        t[4 * e + 2] = 0xffffffffu;
        t[4 * e + 3] = 0;
    }
    pci_write16(f, cap + 2, 0x8000);
    *(volatile uint16_t *)(blk.pci.common + VCC_MSIX_CONFIG) = 1;
    *(volatile uint16_t *)(blk.pci.common + VCC_QUEUE_SELECT) = 0;
    *(volatile uint16_t *)(blk.pci.common + VCC_QUEUE_MSIX_VECTOR) = 0;
    int st = blk_sync(&blk, 0, VIRTIO_BLK_T_IN, 0, wl.buf[0], 4096);
    pci_write16(f, cap + 2, 0);
    for (unsigned e = 0; e < 2; e++) {
        t[4 * e + 3] = 1;
    }
    *acceptable = true;         /* surviving is the point; the read may go either way */
    return st == VIRTIO_BLK_S_OK ? "read completed with bogus vectors" : "read failed";
}

static const char *hostile_bar_move(bool *acceptable)
{
    int st = -1;

    if (!virtio_pci_move_bar(&blk.pci, false)) {
        *acceptable = false;
        return "could not move the BAR";
    }
    vq_refresh_notify(&blk.vqs[0]);
    st = blk_sync(&blk, 0, VIRTIO_BLK_T_IN, 0, wl.buf[0], 4096);   /* at the new place */
    bool back = virtio_pci_move_bar(&blk.pci, true);
    vq_refresh_notify(&blk.vqs[0]);
    *acceptable = back && st == VIRTIO_BLK_S_OK;
    return st == VIRTIO_BLK_S_OK ? "served at the new address" : "failed at the new address";
}

static bool run_hostile(void)
{
    static const char *const names[] = {
        "reset-inflight", "driver-ok-without-features-ok", "bad-queue-size",
        "ring-outside-ram", "config-write-live", "bogus-msix-entries", "bar-moved-live",
    };
    bool all_ok = sanity_read();

    for (unsigned i = 0; i < ARRAY_SIZE(names) && all_ok; i++) {
        bool acceptable = false;
        const char *verdict;
        switch (i) {
        case 0: verdict = hostile_reset_inflight(&acceptable); break;
        case 1: verdict = hostile_setup(SETUP_NO_FEATURES_OK, &acceptable); break;
        case 2: verdict = hostile_setup(SETUP_QUEUE_SIZE, &acceptable); break;
        case 3: verdict = hostile_setup(SETUP_RING_OUTSIDE, &acceptable); break;
        case 4: verdict = hostile_config_write(&acceptable); break;
        case 5: verdict = hostile_msix(&acceptable); break;
        default: verdict = hostile_bar_move(&acceptable); break;
        }
        uint8_t status = virtio_get_status(&blk.pci);
        bool works = blk_reinit(&blk) && sanity_read();
        kprintf("KEEL-GUEST: hostile %s: %s (device status 0x%x)%s\n", names[i], verdict,
                status, works ? ", device works after a reset" : ", DEVICE BROKEN");
        if (!acceptable || !works) {
            wl.errors++;
            all_ok = false;
        }
    }
    kprintf("KEEL-GUEST: hostile: %s\n", all_ok ? "every case failed safely" : "FAILED");
    return all_ok;
}

/* ---- entry ------------------------------------------------------------------------ */
static void print_result(const char *test, bool ok)
{
    uint64_t us = wl.elapsed_us ? wl.elapsed_us : 1;
    uint64_t iops = wl.ops * 1000000 / us;
    uint64_t bytes_per_s = wl.bytes * 1000000 / us;
    uint64_t mibps_x100 = bytes_per_s * 100 >> 20;
    uint64_t kicks = 0, kicks_suppressed = 0;

    for (unsigned q = 0; q < blk.nqueues; q++) {
        kicks += blk.vqs[q].kicks;
        kicks_suppressed += blk.vqs[q].kicks_suppressed;
    }

    /* Before RESULT, which stays the last line. */
    if (nworkers > 1 || blk.nqueues > 1) {
        kprintf("KEEL-GUEST: RESULT-SMP cpus=%u queues=%u num_queues=%u mq=%u "
                "cross_verified=%lu\n", nworkers, blk.nqueues, blk.num_queues,
                !!(blk.pci.features & FEATURE(VIRTIO_BLK_F_MQ)), wl.cross_verified);
    }
    kprintf("KEEL-GUEST: RESULT status=%s test=%s ops=%lu iops=%lu mibps=%lu.%02lu "
            "errors=%lu verify_failures=%lu elapsed_us=%lu rw=%s bs=%u iodepth=%u "
            "mode=%s verified_blocks=%lu kicks=%lu kicks_suppressed=%lu irqs=%lu "
            "irq_waits=%lu tsc_khz=%lu written_blocks=%lu written_verified=%lu "
            "main_verified_reads=%lu\n", ok ? "ok" : "fail", test, wl.ops, iops,
            mibps_x100 / 100, mibps_x100 % 100, wl.errors, wl.verify_failures,
            wl.elapsed_us, rw_names[wl.rw], wl.bs, workers[0].nslots,
            wl.irq_mode ? "irq" : "poll", wl.verified_blocks, kicks, kicks_suppressed,
            blk_device_irqs(&blk), blk.irq_waits, tsc_khz,
            wl.written_blocks, wl.written_verified, wl.main_verified_reads);
}

int run_block_test(const char *test)
{
    bool badchain = !strcmp(test, "badchain"), hostile = !strcmp(test, "hostile");
    bool ok = true;

    if (!parse_options()) {
        kprintf("KEEL-GUEST: RESULT status=fail test=%s reason=bad-cmdline\n", test);
        guest_exit(EXIT_BAD_CMDLINE);
    }
    if (badchain || hostile) {
        wl.bs = 4096;
        wl.iodepth = hostile ? 8 : 1;
    }
    nworkers = badchain || hostile ? 1 : smp_ncpus;
    if (ok) {
        /* Several CPUs ask for a queue per request slot at most (so each
         * queue gets one), up to BLK_MAX_QUEUES. */
        unsigned want_queues = nworkers > 1 ? nworkers * wl.iodepth : 1;
        /* mode=irq: INTx through the PIC reaches the BSP only, so
         * several CPUs take MSI-X, a vector per queue. */
        ok = blk_open(&blk, cmdline_u64("dev", 0), wanted_features(),
                      want_queues < BLK_MAX_QUEUES ? want_queues : BLK_MAX_QUEUES,
                      wl.irq_mode, nworkers > 1) && assign_slots();
    }
    if (ok) {
        blk_print_info(&blk);
        for (unsigned s = 0; s < blk.nslots && ok; s++) {
            wl.buf[s] = guest_alloc(wl.bs, 4096);
            ok = wl.buf[s] != NULL;
        }
        if (!ok) {
            kprintf("KEEL-GUEST: out of memory for %u buffers of %u bytes\n",
                    blk.nslots, wl.bs);
        }
    }
    if (ok) {
        ok = print_device_id();
    }
    if (ok) {
        ok = badchain ? run_badchain() : hostile ? run_hostile() : run_workload();
    }
    ok &= !wl.errors && !wl.verify_failures;
    /* Only a failure if we slept waiting for one: a device that is always
     * ahead of the guest legitimately never needs to interrupt it.  An
     * INTx interrupt still pending (raised after a watchdog tick woke us)
     * is taken first: it was delivered late, not lost. */
    if (ok && wl.irq_mode && wl.ops && blk.irq_waits && !blk_settle_irqs(&blk, 3)) {
        kprintf("KEEL-GUEST: mode=irq but no device interrupt arrived in %lu waits (only "
                "the watchdog tick woke us)\n", (unsigned long)blk.irq_waits);
        ok = false;
    }
    print_result(test, ok);
    return ok ? 0 : -1;
}
