/*
 * Safe images in the block layer: format magic (block/probe.h), format=probe
 * refusing other formats and guarding sector 0 of a probed raw image, image
 * locks within one process (the same image twice), bad input (0-byte file,
 * directory, FIFO, truncated qcow2 header) and an image shrunk under an
 * open fixed-size backend (reads past the new end fail -EIO, nothing
 * crashes), detect-zeroes and the raw offset=/size= window.
 */
#include "config.h"

#include "block/image-lock.h"
#include "block/probe.h"
#include "tests/block-test-util.h"

#include <linux/falloc.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/loop.h>
#include <unistd.h>

static KeelAioContext *ctx;

typedef struct ZeroOp {
    KeelBlockBackend *blk;
    bool discard;
    int64_t off, bytes;
    int ret;
} ZeroOp;

static void zero_co(void *opaque)
{
    ZeroOp *z = opaque;

    z->ret = z->discard ? keel_blk_co_pdiscard(z->blk, z->off, z->bytes)
                        : keel_blk_co_pwrite_zeroes(z->blk, z->off, z->bytes);
}

static int do_zero(KeelBlockBackend *blk, bool discard, int64_t off, int64_t bytes)
{
    ZeroOp z = { blk, discard, off, bytes, 0 };

    block_test_run_co(ctx, zero_co, &z);
    return z.ret;
}

typedef struct Io {
    KeelBlockBackend *blk;
    bool write;
    int64_t off;
    void *buf;
    size_t len;
    int ret;
} Io;

static void io_co(void *opaque)
{
    Io *io = opaque;

    io->ret = io->write ? keel_blk_co_pwrite(io->blk, io->off, io->buf, io->len)
                        : keel_blk_co_pread(io->blk, io->off, io->buf, io->len);
}

static int do_io(KeelBlockBackend *blk, bool write, int64_t off, void *buf, size_t len)
{
    Io io = { blk, write, off, buf, len, 0 };

    block_test_run_co(ctx, io_co, &io);
    return io.ret;
}

static KeelBlockBackend *open_str(const char *fmt, const char *file, char **msg)
{
    char *opts = g_strdup_printf(fmt, file);
    KeelBlockBackend *blk;

    g_free(*msg);
    *msg = NULL;
    blk = keel_blk_open_str(opts, ctx, msg);
    g_free(opts);
    return blk;
}

static void test_magic(void)
{
    static const struct {
        const char *magic;
        size_t len, at;
        const char *format;
    } cases[] = {
        { "QFI\xfb\0\0\0\x03", 8, 0, "qcow2" },
        { "QFI\xfb\0\0\0\x01", 8, 0, "qcow" },
        { "QFI\xfb", 4, 0, "qcow2" },           /* truncated header: still qcow2 */
        { "QED\0", 4, 0, "qed" },
        { "KDMV", 4, 0, "vmdk" },
        { "# Disk DescriptorFile", 21, 0, "vmdk" },
        { "\x7f\x10\xda\xbe", 4, 0x40, "vdi" },
        { "vhdxfile", 8, 0, "vhdx" },
        { "conectix", 8, 0, "vpc" },
        { "LUKS\xba\xbe\0\x02", 8, 0, "luks" },
        { "WithoutFreeSpace", 16, 0, "parallels" },
        { "WithouFreSpacExt", 16, 0, "parallels" },
    };
    uint8_t sector[BLOCK_PROBE_BYTES];

    memset(sector, 0, sizeof(sector));
    KEEL_OK(block_probe_format(sector, sizeof(sector)) == NULL, "zeros probe as raw");
    KEEL_OK(block_probe_format(sector, 0) == NULL, "an empty file probes as raw");
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        const char *f;
        memset(sector, 0, sizeof(sector));
        memcpy(sector + cases[i].at, cases[i].magic, cases[i].len);
        f = block_probe_format(sector, cases[i].at + cases[i].len);
        KEEL_OK(f && !strcmp(f, cases[i].format), "magic of %s found (got %s)", cases[i].format,
                f ? f : "raw");
    }
}

static void test_probe_open(const char *dir)
{
    uint8_t qcow2[512] = "QFI\xfb\0\0\0\x03";
    uint8_t buf[4096];
    char *msg = NULL;
    char *q = block_test_image(dir, "q2", 512, qcow2);
    char *r = block_test_image(dir, "raw", 1 << 20, NULL);
    KeelBlockBackend *blk;

    blk = open_str("file=%s,format=probe", q, &msg);
    KEEL_OK(!blk && msg && strstr(msg, "qcow2") && strstr(msg, "format=raw if you mean it"),
            "format=probe refuses a qcow2 image, naming it: %s", msg ? msg : "(opened)");
    blk = open_str("file=%s,format=raw", q, &msg);
    KEEL_OK(blk != NULL, "format=raw opens it as raw (the user means it)");
    keel_blk_close(blk);

    blk = open_str("file=%s,format=probe", r, &msg);
    KEEL_OK(blk && keel_blk_is_probed_raw(blk), "a raw image probes as raw");
    memset(buf, 0x5a, sizeof(buf));
    KEEL_IS(do_io(blk, true, 0, buf, sizeof(buf)), 0, "probed raw: ordinary data at 0 is written");
    memcpy(buf, "QFI\xfb\0\0\0\x03", 8);
    KEEL_IS(do_io(blk, true, 0, buf, 512), -EPERM,
            "probed raw: a write making sector 0 a qcow2 header is refused (-EPERM)");
    KEEL_IS(do_io(blk, true, 0x40, "\x7f\x10\xda\xbe", 4), -EPERM,
            "probed raw: a 4-byte write making it vdi is refused too");
    KEEL_IS(do_io(blk, true, 4096, buf, 512), 0, "the same bytes elsewhere are fine");
    KEEL_IS(do_io(blk, false, 0, buf, 8), 0, "sector 0 reads back");
    KEEL_OK(buf[0] == 0x5a, "unchanged by the refused writes");
    keel_blk_close(blk);
    blk = open_str("file=%s,format=raw", r, &msg);
    memcpy(buf, "QFI\xfb\0\0\0\x03", 8);
    KEEL_IS(do_io(blk, true, 0, buf, 512), 0, "format=raw: the same write is allowed (as QEMU)");
    keel_blk_close(blk);
    g_free(msg);
    g_free(q);
    g_free(r);
}

static void test_bad_input(const char *dir)
{
    char *msg = NULL;
    char *empty = block_test_image(dir, "empty", 0, NULL);
    char *fifo = g_strdup_printf("%s/keel-fifo-%d", dir, (int)getpid());
    KeelBlockBackend *blk;

    blk = open_str("file=%s,format=probe", empty, &msg);
    KEEL_OK(blk && keel_blk_getlength(blk) == 0, "a 0-byte file opens as an empty raw disk");
    keel_blk_close(blk);
    blk = open_str("file=%s,format=probe", dir, &msg);
    KEEL_OK(!blk && msg && strstr(msg, "directory"), "a directory is refused: %s",
            msg ? msg : "(opened)");
    if (mkfifo(fifo, 0600) == 0) {
        blk = open_str("file=%s,format=probe", fifo, &msg);
        KEEL_OK(!blk && msg && strstr(msg, "FIFO"), "a FIFO is refused without waiting: %s",
                msg ? msg : "(opened)");
        blk = open_str("file=%s,readonly=on", fifo, &msg);
        KEEL_OK(!blk, "read-only too (open O_RDONLY would wait for a writer)");
        unlink(fifo);
    } else {
        KEEL_OK(true, "# SKIP mkfifo: %s", strerror(errno));
        KEEL_OK(true, "# SKIP mkfifo");
    }
    g_free(fifo);
    g_free(msg);
    g_free(empty);
}

static void test_locks_in_process(const char *dir)
{
    char *img = block_test_image(dir, "lock", 1 << 20, NULL);
    char *msg = NULL;
    KeelBlockBackend *a, *b;

    a = open_str("file=%s", img, &msg);
    b = open_str("file=%s", img, &msg);
    KEEL_OK(a && !b && msg && strstr(msg, "Failed to get \"write\" lock") &&
            strstr(msg, "Is another process using the image ["),
            "the same image twice for writing is refused in QEMU's words: %s",
            msg ? msg : "(opened)");
    b = open_str("file=%s,readonly=on", img, &msg);
    KEEL_OK(!b && msg && strstr(msg, "Failed to get shared \"write\" lock"),
            "a reader is refused while a writer holds it: %s", msg ? msg : "(opened)");
    b = open_str("file=%s,readonly=on,force-share=on", img, &msg);
    KEEL_OK(b != NULL, "force-share=on (qemu-img -U) reads it anyway");
    keel_blk_close(b);
    b = open_str("file=%s,locking=off", img, &msg);
    KEEL_OK(b != NULL, "locking=off takes no locks");
    keel_blk_close(b);
    keel_blk_close(a);
    a = open_str("file=%s,readonly=on", img, &msg);
    b = open_str("file=%s,readonly=on", img, &msg);
    KEEL_OK(a && b, "two readers share");
    keel_blk_close(b);
    b = open_str("file=%s", img, &msg);
    KEEL_OK(!b && msg && strstr(msg, "Failed to get \"write\" lock"),
            "a writer is refused while a reader holds it");
    keel_blk_close(a);
    b = open_str("file=%s", img, &msg);
    KEEL_OK(b != NULL, "closing releases the locks");
    keel_blk_close(b);
    b = open_str("file=%s,force-share=on", img, &msg);
    KEEL_OK(!b && msg && strstr(msg, "read-only"), "force-share=on on a writer is refused: %s",
            msg ? msg : "(opened)");
    g_free(msg);
    g_free(img);
}

static void test_shrink(const char *dir)
{
    static uint8_t data[65536];
    char *img, *msg = NULL;
    KeelBlockBackend *blk;
    uint8_t buf[4096];

    memset(data, 0x77, sizeof(data));
    img = block_test_image(dir, "shrink", sizeof(data), data);
    blk = open_str("file=%s,fixed-size=on", img, &msg);
    KEEL_OK(blk && keel_blk_getlength(blk) == (int64_t)sizeof(data), "fixed-size open");
    KEEL_OK(truncate(img, 16384) == 0, "the image is shrunk under the open backend");
    KEEL_IS(do_io(blk, false, 0, buf, sizeof(buf)), 0, "a read before the new end works");
    KEEL_IS(do_io(blk, false, 32768, buf, sizeof(buf)), -EIO,
            "a read past the new end fails -EIO (not zeros)");
    KEEL_IS(do_io(blk, false, 12288, buf, sizeof(buf) * 2), -EIO,
            "a read across the new end fails -EIO");
    KEEL_IS(do_io(blk, false, sizeof(data), buf, 512), -EIO,
            "a read past the size at open fails -EIO");
    KEEL_IS(do_io(blk, true, sizeof(data), buf, 512), -EIO,
            "a write past the size at open fails -EIO");
    keel_blk_close(blk);
    g_free(msg);
    g_free(img);
}

/* keel_blk_grow (QMP block_resize): the file and a fixed-size backend's
 * window grow together, so the new end takes requests; before the fix the
 * file grew but writes past the size at open still failed -EIO. */
static void test_grow(const char *dir)
{
    static uint8_t data[65536];
    char *img, *msg = NULL;
    KeelBlockBackend *blk, *ro;
    uint8_t buf[4096], back[4096];
    struct stat st;

    memset(data, 0x55, sizeof(data));
    memset(buf, 0xa7, sizeof(buf));
    img = block_test_image(dir, "grow", sizeof(data), data);
    blk = open_str("file=%s,fixed-size=on", img, &msg);
    KEEL_OK(blk != NULL, "fixed-size open for grow (%s)", msg ? msg : "ok");
    KEEL_IS(do_io(blk, true, sizeof(data), buf, sizeof(buf)), -EIO,
            "before growing, a write past the end fails -EIO");
    KEEL_IS(keel_blk_grow(blk, sizeof(data) / 2), -ENOTSUP, "shrinking is refused");
    KEEL_IS(keel_blk_grow(blk, sizeof(data) * 2), 0, "grow to twice the size");
    KEEL_OK(stat(img, &st) == 0 && st.st_size == (off_t)sizeof(data) * 2,
            "the file grew to %zu bytes", sizeof(data) * 2);
    KEEL_IS(keel_blk_getlength(blk), (int64_t)sizeof(data) * 2, "the backend's length follows");
    KEEL_IS(do_io(blk, true, sizeof(data) * 2 - sizeof(buf), buf, sizeof(buf)), 0,
            "a write into the new last 4 KiB works");
    KEEL_IS(do_io(blk, false, sizeof(data) * 2 - sizeof(back), back, sizeof(back)), 0,
            "and reads back");
    KEEL_OK(memcmp(buf, back, sizeof(buf)) == 0, "with the data written");
    KEEL_IS(do_io(blk, true, sizeof(data) * 2, buf, 512), -EIO,
            "a write past the new end still fails -EIO");
    keel_blk_close(blk);
    ro = open_str("file=%s,readonly=on,locking=off", img, &msg);
    KEEL_OK(ro && keel_blk_grow(ro, sizeof(data) * 4) == -EROFS, "a read-only backend: -EROFS");
    if (ro) {
        keel_blk_close(ro);
    }
    g_free(msg);
    g_free(img);
}

static void test_window_and_zeroes(const char *dir)
{
    static uint8_t data[1 << 20];
    uint8_t buf[4096], zeros[4096] = { 0 };
    char *img, *msg = NULL, *opts;
    KeelBlockBackend *blk;
    struct stat st0, st1;

    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)(i >> 12);
    }
    img = block_test_image(dir, "window", sizeof(data), data);
    opts = g_strdup_printf("file=%s,offset=65536,size=131072", img);
    blk = keel_blk_open_str(opts, ctx, &msg);
    g_free(opts);
    KEEL_OK(blk && keel_blk_getlength(blk) == 131072, "offset=/size= window: length is size=");
    KEEL_IS(do_io(blk, false, 0, buf, sizeof(buf)), 0, "read at 0 of the window");
    KEEL_OK(buf[0] == 16, "reads file offset 65536 (block 16)");
    KEEL_IS(do_io(blk, false, 131072 - 4096, buf, sizeof(buf) * 2), -EIO,
            "a read crossing size= fails -EIO");
    keel_blk_close(blk);

    opts = g_strdup_printf("file=%s,detect-zeroes=unmap,discard=unmap", img);
    blk = keel_blk_open_str(opts, ctx, &msg);
    g_free(opts);
    stat(img, &st0);
    for (int64_t off = 0; off < 262144; off += 4096) {
        do_io(blk, true, off, zeros, sizeof(zeros));
    }
    stat(img, &st1);
    KEEL_IS(do_io(blk, false, 8192, buf, sizeof(buf)), 0, "read after zero writes");
    KEEL_OK(!memcmp(buf, zeros, sizeof(buf)), "zero writes read back as zeros");
    {
        /* Where fallocate is refused (old kernels, seccomp) zeros are
         * written instead: right, but nothing to see in st_blocks. */
        int pfd = open(img, O_RDWR | O_CLOEXEC);
        bool punch = pfd >= 0 && fallocate(pfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                           sizeof(data) - 4096, 4096) == 0;
        if (pfd >= 0) {
            close(pfd);
        }
        if (punch) {
            KEEL_OK(st1.st_blocks < st0.st_blocks,
                    "detect-zeroes=unmap punched holes (%lld → %lld blocks)",
                    (long long)st0.st_blocks, (long long)st1.st_blocks);
        } else {
            KEEL_OK(true, "# SKIP detect-zeroes=unmap holes: fallocate refused here");
        }
    }
    keel_blk_close(blk);
    g_free(msg);
    g_free(img);
}

/* A host block device (driver=host_device): a loop device over a test
 * file, set up with the loop ioctls (needs root and /dev/loop-control). */
static void test_host_device(const char *dir)
{
    static uint8_t data[4 << 20];
    char *img, *dev = NULL, *msg = NULL;
    int ctl, n = -1, lfd = -1, ffd;
    uint8_t buf[8192];
    KeelBlockBackend *blk;
    struct stat st0, st1;

    ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl >= 0) {
        n = ioctl(ctl, LOOP_CTL_GET_FREE);
        close(ctl);
    }
    if (n >= 0) {
        dev = g_strdup_printf("/dev/loop%d", n);
        lfd = open(dev, O_RDWR | O_CLOEXEC);
    }
    if (lfd < 0) {
        KEEL_OK(true, "# SKIP host device: no loop device here (%s)",
                ctl < 0 ? "no /dev/loop-control or not root" : strerror(errno));
        g_free(dev);
        return;
    }
    memset(data, 0x3c, sizeof(data));
    img = block_test_image(dir, "loop", sizeof(data), data);
    ffd = open(img, O_RDWR | O_CLOEXEC);
    /* LOOP_SET_STATUS64 after LOOP_SET_FD, as losetup does: before 5.12 or
     * so only it set the device's discard limits, and BLKDISCARD on a loop
     * device set up by LOOP_SET_FD alone failed with EOPNOTSUPP (5.10, in
     * the KVM lab). */
    struct loop_info64 info;
    memset(&info, 0, sizeof(info));
    if (ioctl(lfd, LOOP_SET_FD, ffd) < 0 || ioctl(lfd, LOOP_SET_STATUS64, &info) < 0) {
        int err = errno;

        ioctl(lfd, LOOP_CLR_FD, 0);
        KEEL_OK(true, "# SKIP host device: LOOP_SET_FD/LOOP_SET_STATUS64: %s", strerror(err));
        close(ffd);
        close(lfd);
        g_free(dev);
        g_free(img);
        return;
    }
    blk = open_str("file=%s,discard=unmap", dev, &msg);
    KEEL_OK(blk != NULL, "open %s (a block device) %s", dev, msg ? msg : "");
    if (blk) {
        KEEL_IS(keel_blk_getlength(blk), (int64_t)sizeof(data), "BLKGETSIZE64: its size");
        KEEL_IS(do_zero(blk, false, 4096 + 100, 65536), 0, "write-zeroes (BLKZEROOUT + "
                "unaligned ends) succeeds");
        KEEL_IS(do_io(blk, false, 4096, buf, sizeof(buf)), 0, "read back");
        KEEL_OK(buf[99] == 0x3c && buf[100] == 0 && buf[8191] == 0, "zeros exactly where asked");
        fsync(ffd);
        fstat(ffd, &st0);
        KEEL_IS(do_zero(blk, true, 1 << 20, 2 << 20), 0, "discard (BLKDISCARD) succeeds");
        KEEL_IS(do_io(blk, false, (1 << 20) + 4096, buf, sizeof(buf)), 0, "read the range");
        KEEL_OK(buf[0] == 0 && buf[8191] == 0, "a discarded loop range reads zeros");
        fstat(ffd, &st1);
        KEEL_OK(st1.st_blocks < st0.st_blocks, "the backing file lost its blocks (%lld → %lld)",
                (long long)st0.st_blocks, (long long)st1.st_blocks);
        keel_blk_close(blk);
    }
    ioctl(lfd, LOOP_CLR_FD, 0);
    close(lfd);
    close(ffd);
    g_free(dev);
    g_free(msg);
    g_free(img);
}

int main(void)
{
    const char *dir = block_test_dir_any();

    if (!dir) {
        keel_test_skip_all("no writable directory for test images");
    }
    ctx = keel_aio_context_new();
    test_magic();
    test_probe_open(dir);
    test_bad_input(dir);
    test_locks_in_process(dir);
    test_shrink(dir);
    test_grow(dir);
    test_window_and_zeroes(dir);
    test_host_device(dir);
    keel_aio_context_unref(ctx);
    return keel_test_done();
}
