/*
 * tests/block-test-util.h — helpers shared by the block tests (header-only).
 *
 * block_test_dir(): a directory for test images where O_DIRECT works:
 * $KEEL_TEST_DIR, then the build directory ($top_builddir or "."), then
 * /var/tmp; NULL when none does (tests that need O_DIRECT then skip).
 * block_test_dir_any(): the same, but any writable directory will do.
 * block_test_image(): a fresh sparse image (or one filled with a pattern)
 * in that directory; unlinked at exit.
 * block_test_run_co(): run a coroutine in @ctx (whose home thread is the
 * caller) and poll until it has finished.
 *
 * Thread rules: main thread of the test.
 */
#ifndef KEEL_TESTS_BLOCK_TEST_UTIL_H
#define KEEL_TESTS_BLOCK_TEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block-backend.h"
#include "coroutine/coroutine.h"
#include "loop/aio.h"
#include "tests/keel-test.h"

#define BLOCK_TEST_MAX_FILES 64
static char *block_test_files[BLOCK_TEST_MAX_FILES];
static int block_test_n_files;

static void block_test_cleanup(void)
{
    for (int i = 0; i < block_test_n_files; i++) {
        unlink(block_test_files[i]);
        g_free(block_test_files[i]);
    }
    block_test_n_files = 0;
}

/* Whether O_DIRECT aligned I/O works on a file in @dir (4 KiB covers every
 * logical block size we meet). */
static inline bool block_test_dir_has_odirect(const char *dir)
{
    char *path = g_strdup_printf("%s/keel-odirect-probe-%d", dir, (int)getpid());
    bool ok = false;
    void *buf = NULL;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);

    if (fd >= 0) {
        if (posix_memalign(&buf, 4096, 4096) == 0) {
            memset(buf, 0xa5, 4096);
            ok = pwrite(fd, buf, 4096, 0) == 4096 && pread(fd, buf, 4096, 0) == 4096;
            free(buf);
        }
        close(fd);
    }
    unlink(path);
    g_free(path);
    return ok;
}

static inline bool block_test_dir_writable(const char *dir)
{
    return dir && *dir && access(dir, W_OK | X_OK) == 0;
}

static inline const char *block_test_pick_dir(bool need_odirect)
{
    const char *candidates[3] = {
        getenv("KEEL_TEST_DIR"),
        getenv("top_builddir") ? getenv("top_builddir") : ".",
        "/var/tmp",
    };
    for (int i = 0; i < 3; i++) {
        if (!block_test_dir_writable(candidates[i])) {
            continue;
        }
        if (!need_odirect || block_test_dir_has_odirect(candidates[i])) {
            return candidates[i];
        }
    }
    return NULL;
}

static inline const char *block_test_dir(void)
{
    static const char *dir;
    static bool probed;

    if (!probed) {
        dir = block_test_pick_dir(true);
        probed = true;
    }
    return dir;
}

static inline const char *block_test_dir_any(void)
{
    const char *dir = block_test_dir();
    return dir ? dir : block_test_pick_dir(false);
}

/* A new image of @size bytes: sparse when @fill is NULL, else @fill's
 * contents (@size bytes). */
static inline char *block_test_image(const char *dir, const char *tag, int64_t size,
                                     const uint8_t *fill)
{
    static int serial;
    char *path = g_strdup_printf("%s/keel-%s-%d-%d.img", dir, tag, (int)getpid(), serial++);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    if (fd < 0 || ftruncate(fd, size) < 0) {
        printf("Bail out! cannot create %s: %s\n", path, strerror(errno));
        exit(1);
    }
    if (fill) {
        for (int64_t done = 0; done < size;) {
            ssize_t n = pwrite(fd, fill + done, (size_t)(size - done), done);
            if (n <= 0) {
                printf("Bail out! cannot write %s: %s\n", path, strerror(errno));
                exit(1);
            }
            done += n;
        }
    }
    close(fd);
    if (block_test_n_files == 0) {
        atexit(block_test_cleanup);
    }
    if (block_test_n_files < BLOCK_TEST_MAX_FILES) {
        block_test_files[block_test_n_files++] = g_strdup(path);
    }
    return path;
}

typedef struct BlockTestCo {
    KeelCoroutineEntry *fn;
    void *opaque;
    bool done;
} BlockTestCo;

static void block_test_co_entry(void *opaque)
{
    BlockTestCo *c = opaque;
    c->fn(c->opaque);
    c->done = true;
}

static inline void block_test_run_co(KeelAioContext *ctx, KeelCoroutineEntry *fn, void *opaque)
{
    BlockTestCo c = { fn, opaque, false };

    keel_coroutine_enter(keel_coroutine_create(block_test_co_entry, &c));
    while (!c.done) {
        keel_aio_poll(ctx, true);
    }
}

/* A small deterministic PRNG (xorshift64*), so failures reproduce. */
static inline uint64_t block_test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

#endif
