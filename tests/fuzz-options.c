/*
 * tests/fuzz-options.c — libFuzzer target (clang -fsanitize=fuzzer,address,
 * undefined; built and run by tests/fuzz-options.sh / `make fuzz`) over
 * keel-vmm's command-line parser, vmm_options_parse().
 *
 * The input is argv after argv[0]: arguments separated by NUL bytes (at
 * most 64).  Every input must either parse (then vmm_options_free() frees
 * all of it: LeakSanitizer is on) or fail with a non-empty message in the
 * caller's buffer.  The working directory is a temporary one holding a
 * regular file "k" and "d" (a kernel and a drive the seeds name), a FIFO
 * "p" and a directory "dir", so the file checks are reached too.
 *
 * KEEL_FUZZ_SEEDS=DIR writes a few command lines to DIR and exits.
 */
#include "config.h"

#include "vmm/options.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char workdir[64];

static void write_seed(const char *dir, const char *name, const char *const *args)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f) {
        abort();
    }
    for (int i = 0; args[i]; i++) {
        fwrite(args[i], 1, strlen(args[i]) + (args[i + 1] ? 1 : 0), f);
    }
    if (fclose(f) != 0) {
        abort();
    }
}

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })

static void write_seeds(const char *dir)
{
    write_seed(dir, "seed-minimal", ARGS("-kernel", "k"));
    write_seed(dir, "seed-full", ARGS("-m", "256M", "-kernel", "k", "-initrd", "k", "-append",
                                      "console=ttyS0", "-nographic", "-serial", "stdio",
                                      "-object", "iothread,id=io0,poll-max-ns=32768",
                                      "-drive", "file=d,format=raw,if=virtio,aio=io_uring,"
                                      "cache=none,iothread=io0,serial=S1"));
    write_seed(dir, "seed-ifnone", ARGS("-kernel", "k", "-drive",
                                        "if=none,id=d0,file=d,readonly=on,aio=native,cache=directsync",
                                        "-device", "virtio-blk-pci,drive=d0"));
    write_seed(dir, "seed-memfd", ARGS("-kernel", "k", "-object",
                                       "memory-backend-memfd,id=m0,size=128M",
                                       "-machine", "memory-backend=m0", "-smp", "1"));
    write_seed(dir, "seed-bad-files", ARGS("-kernel", "p", "-initrd", "dir", "-drive", "file=p"));
    write_seed(dir, "seed-help", ARGS("--help"));
}

static void remove_workdir(void)
{
    char path[128];

    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", workdir, (const char *[]) { "k", "d", "p", "dir" }[i]);
        if (unlink(path) < 0) {
            rmdir(path);
        }
    }
    rmdir(workdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *seeds = getenv("KEEL_FUZZ_SEEDS");
    FILE *f;

    (void)argc, (void)argv;
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    snprintf(workdir, sizeof(workdir), "%s/keel-fuzz-opts.XXXXXX", g_get_tmp_dir());
    if (!mkdtemp(workdir) || chdir(workdir) < 0) {
        abort();
    }
    atexit(remove_workdir);
    f = fopen("k", "w");
    if (!f || fputs("kernel", f) < 0 || fclose(f) != 0) {
        abort();
    }
    f = fopen("d", "w");
    if (!f || fclose(f) != 0 || mkfifo("p", 0600) < 0 || mkdir("dir", 0700) < 0) {
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    char *argv[MAX_ARGS + 2] = { "keel-vmm" };
    int argc = 1;
    VmmOptions opts;
    char err[512];
    size_t start = 0;

    memcpy(buf, data, size);
    buf[size] = '\0';
    /* NUL-separated arguments; the last one ends at the input's end. */
    for (size_t i = 0; i <= size && argc <= MAX_ARGS; i++) {
        if (buf[i] == '\0') {
            argv[argc++] = buf + start;
            start = i + 1;
        }
    }
    argv[argc] = NULL;
    memset(err, 0x55, sizeof(err));
    if (vmm_options_parse(&opts, argc, argv, err, sizeof(err)) < 0) {
        if (!memchr(err, '\0', sizeof(err)) || !err[0]) {
            fprintf(stderr, "failure without a message\n");
            abort();
        }
    } else {
        vmm_options_free(&opts);
    }
    free(buf);
    return 0;
}
