/*
 * tests/fuzz-loader.c — libFuzzer target (clang -fsanitize=fuzzer,address,
 * undefined; built and run by tests/fuzz-loader.sh / `make fuzz`) over every
 * kernel loader entry point with arbitrary file bytes.
 *
 * The input is the -kernel file, in a heap block of exactly its size (so
 * ASan sees any read outside it).  Each input goes through the format
 * probes, loader_elf_segments, loader_find_pvh_entry, and all three
 * loaders whatever the probes say (each must check its own format), each
 * once without and once with an initrd.  Guest RAM is a fake VM without
 * KVM: 16 MiB at 0 and 1 MiB at 4 GiB, separate heap blocks.
 *
 * KEEL_FUZZ_SEEDS=DIR writes well-formed kernels (seed-*) and the crafted
 * files of issue 16 items 1-3 (regress-*: wrapping segments and e_phoff,
 * short multiboot headers) to DIR and exits; the script runs the regress-*
 * inputs once before fuzzing.
 */
#include "config.h"

#include "vmm/loader.h"
#include "tests/loader-craft.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOW_RAM (16u << 20)
#define HIGH_RAM (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static KvmCaps caps;
static Vm vm;
static char initrd_path[64];

static void write_seed(const char *dir, const char *name, const void *data, size_t len)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        abort();
    }
}

static void write_seeds(const char *dir)
{
    uint8_t *f = calloc(1, FILE_SIZE);
    uint8_t h[32];

    pvh_kernel(f, CODE_OFF, FILE_SIZE - CODE_OFF);
    write_seed(dir, "seed-pvh", f, FILE_SIZE);
    mb_elf64_kernel(f, CODE_OFF, FILE_SIZE - CODE_OFF);
    write_seed(dir, "seed-mb64", f, FILE_SIZE);
    bzimage(f, FILE_SIZE, 4);
    write_seed(dir, "seed-bzimage", f, FILE_SIZE);
    memset(f, 0, FILE_SIZE);
    mb_bare_header(f, 32, 1u << 16);
    wr32(f + 12, 0x100000);             /* header_addr */
    wr32(f + 16, 0x100000);             /* load_addr */
    wr32(f + 28, 0x100020);             /* entry */
    write_seed(dir, "seed-mb-aout", f, 0x100);

    /* Issue 16 items 1-3: each crashed or read out of bounds before. */
    pvh_kernel(f, 0x100 - (64ull << 20), 64ull << 20);
    write_seed(dir, "regress-pvh-far-wrap", f, FILE_SIZE);
    mb_elf64_kernel(f, 0x100 - (64ull << 20), 64ull << 20);
    write_seed(dir, "regress-mb64-far-wrap", f, FILE_SIZE);
    pvh_kernel(f, (uint64_t)-0x100, 0x200);
    write_seed(dir, "regress-pvh-near-wrap", f, FILE_SIZE);
    mb_elf64_kernel(f, (uint64_t)-0x100, 0x200);
    write_seed(dir, "regress-mb64-near-wrap", f, FILE_SIZE);
    pvh_kernel(f, CODE_OFF, FILE_SIZE - CODE_OFF);
    elf64_header(f, (uint64_t)-8, 2, 0x100000);
    write_seed(dir, "regress-pvh-phoff-wrap", f, FILE_SIZE);
    mb_elf64_kernel(f, CODE_OFF, FILE_SIZE - CODE_OFF);
    elf64_header(f, (uint64_t)-8, 1, 0x100000);
    write_seed(dir, "regress-mb64-phoff-wrap", f, FILE_SIZE);
    mb_bare_header(h, sizeof(h), 1u << 16);
    write_seed(dir, "regress-mb-short-12", h, 12);
    write_seed(dir, "regress-mb-short-20", h, 20);
    mb_bare_header(h, sizeof(h), 0);
    write_seed(dir, "regress-mb-noaddr", h, 12);
    free(f);
}

static void remove_initrd(void)
{
    unlink(initrd_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *seeds = getenv("KEEL_FUZZ_SEEDS");
    static const uint8_t initrd[3000] = { 1, 2, 3 };
    int fd;

    (void)argc, (void)argv;
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    vm.kvm_fd = vm.vm_fd = vm.ram_fd = -1;
    vm.caps = &caps;
    vm.ram_size = LOW_RAM + HIGH_RAM;
    vm.slots[0] = (VmRamSlot) { .gpa = 0, .size = LOW_RAM, .hva = calloc(1, LOW_RAM) };
    vm.slots[1] = (VmRamSlot) { .gpa = VM_HIGH_RAM_START, .size = HIGH_RAM,
                                .hva = calloc(1, HIGH_RAM) };
    vm.nr_slots = 2;
    vm.low_ram_end = LOW_RAM;
    vm.ram = vm.slots[0].hva;

    snprintf(initrd_path, sizeof(initrd_path), "%s/keel-fuzz-initrd.XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : g_get_tmp_dir());
    fd = mkstemp(initrd_path);
    if (fd < 0 || write(fd, initrd, sizeof(initrd)) != (ssize_t)sizeof(initrd)) {
        abort();
    }
    close(fd);
    atexit(remove_initrd);
    return 0;
}

static void check_err(int r, const char *err)
{
    /* Every refusal is one non-empty line. */
    if (r < 0 && (!err[0] || strchr(err, '\n'))) {
        fprintf(stderr, "bad error message: '%s'\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    LoaderFile f = { .path = "fuzz-kernel", .size = size };
    LoaderSegment segs[16];
    uint64_t e_entry;
    char err[512];
    int r;

    f.data = malloc(size ? size : 1);
    memcpy(f.data, data, size);

    (void)loader_is_multiboot(&f);
    (void)loader_is_bzimage(&f);
    (void)loader_is_elf(&f);
    (void)loader_find_pvh_entry(&f);
    err[0] = '\0';
    r = loader_elf_segments(&f, segs, 16, &e_entry, err, sizeof(err));
    check_err(r, err);
    for (int with_initrd = 0; with_initrd < 2; with_initrd++) {
        LoaderConfig cfg = { .kernel = f.path, .initrd = with_initrd ? initrd_path : NULL,
                             .cmdline = "console=ttyS0" };
        BootEntry entry;

        err[0] = '\0';
        check_err(loader_load_multiboot(&vm, &f, &cfg, &entry, err, sizeof(err)), err);
        err[0] = '\0';
        check_err(loader_load_bzimage(&vm, &f, &cfg, &entry, err, sizeof(err)), err);
        err[0] = '\0';
        check_err(loader_load_pvh(&vm, &f, &cfg, &entry, err, sizeof(err)), err);
    }
    free(f.data);
    return 0;
}
