/*
 * vmm/loader.h — putting a kernel into guest RAM and describing how the
 * vCPU enters it.
 *
 * loader_load_kernel() reads the -kernel file, detects its format and hands
 * it to the right loader:
 *   - multiboot v1 (a 0x1BADB002 header in the first 8 KiB; ELF32 or ELF64
 *     container, or the header's load-address fields)   loader-multiboot.c
 *   - Linux bzImage ("HdrS" boot protocol ≥ 2.06)          loader-linux.c
 *   - an uncompressed vmlinux ELF with a PVH entry note     loader-linux.c
 * Anything else is refused with a message naming the file.
 *
 * Fixed guest-physical addresses used by the loaders live below (all inside
 * the conventional-memory RAM under 640 KiB that the e820 map reports as
 * usable, except where noted); a kernel segment that would overlap them is
 * refused.
 *
 * The result is a BootEntry, applied to vCPU 0 by vcpu_set_boot_entry():
 * flat 32-bit protected mode (multiboot, PVH, Linux 32-bit entry) or long
 * mode with identity-mapped page tables (Linux 64-bit entry).
 *
 * Ownership: nothing is kept after loading; the guest owns the RAM.
 * Thread rules: main thread, before the vCPU runs.
 */
#ifndef KEEL_VMM_LOADER_H
#define KEEL_VMM_LOADER_H

#include "vmm/kvm.h"

#include <stddef.h>
#include <stdint.h>

#define BOOT_GDT_ADDR       0x0500ull   /* boot GDT: null, null, code32/64, data */
#define BOOT_PVH_INFO_ADDR  0x6000ull   /* hvm_start_info + memmap + modlist */
#define BOOT_ZERO_PAGE_ADDR 0x7000ull   /* Linux boot_params */
#define BOOT_MB_INFO_ADDR   0x8000ull   /* multiboot info, mmap, strings */
#define BOOT_PAGE_TABLE_ADDR 0x9000ull  /* PML4, PDPT, 4 PDs: 0x9000-0xEFFF */
#define BOOT_CMDLINE_ADDR   0x20000ull  /* kernel command line (Linux) */
#define BOOT_CMDLINE_MAX    0x10000ull
#define BOOT_STACK_TOP      0x5000ull   /* a scratch stack (0x1000-0x4fff) */
#define BOOT_LOW_END        0x9FC00ull  /* top of usable conventional memory */
#define BOOT_KERNEL_ADDR    0x100000ull /* where protected-mode kernels go */

/* Code and data selectors in the boot GDT; Linux's boot protocol requires
 * __BOOT_CS = 0x10 and __BOOT_DS = 0x18. */
#define BOOT_CS 0x10
#define BOOT_DS 0x18

typedef enum BootMode {
    BOOT_MODE_PROTECTED32,  /* CR0.PE, paging off, flat 4 GiB segments */
    BOOT_MODE_LONG64,       /* EFER.LMA, paging on (identity map of 4 GiB) */
} BootMode;

typedef struct BootEntry {
    BootMode mode;
    uint64_t rip;
    uint64_t rax, rbx, rsi, rsp;
    uint64_t cr3;           /* LONG64 only */
    const char *kind;       /* "multiboot", "linux-bzimage-64", "linux-pvh", ... */
} BootEntry;

typedef struct LoaderConfig {
    const char *kernel;
    const char *initrd;     /* NULL if none */
    const char *cmdline;    /* "" if none */
} LoaderConfig;

/* Loads @cfg into @vm.  Returns 0, or -1 with a one-line message in @err. */
int loader_load_kernel(Vm *vm, const LoaderConfig *cfg, BootEntry *entry,
                       char *err, size_t errlen);

/* Reads @path and checks that it is a format we boot, without a VM (so a
 * bad -kernel fails before /dev/kvm is touched).  Returns 0 with *@kind set
 * ("multiboot", "linux-bzimage", "linux-pvh"), or -1 with a message. */
int loader_probe_kernel(const char *path, const char **kind, char *err, size_t errlen);

/* Sets vCPU registers for @entry.  Returns 0 or -errno. */
int vcpu_set_boot_entry(Vcpu *vcpu, const BootEntry *entry);

/* ---- internals shared by the loaders (vmm/loader*.c) ------------------ */

typedef struct LoaderFile {
    const char *path;
    uint8_t *data;
    size_t size;
} LoaderFile;

/* One e820-style range; type 1 = RAM, 2 = reserved. */
typedef struct E820Entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} E820Entry;

#define E820_RAM 1
#define E820_RESERVED 2
#define LOADER_MAX_E820 8

/* The guest's memory map; returns the number of entries. */
int loader_e820_map(Vm *vm, E820Entry *map, int max);

/* Copies @len bytes to guest-physical @gpa; -1 (and a message) if outside RAM. */
int loader_copy_to_guest(Vm *vm, uint64_t gpa, const void *src, size_t len,
                         const char *what, char *err, size_t errlen);

/* Whether [@off, @off + @len) lies inside @f.  Offsets and sizes read from
 * a file may be anything: this compares against the remaining size and
 * never computes off + len, which could wrap around 2^64. */
static inline bool loader_file_has(const LoaderFile *f, uint64_t off, uint64_t len)
{
    return off <= f->size && len <= f->size - off;
}

/* Reads a whole file.  Returns 0, or -1 with a message. */
int loader_read_file(const char *path, LoaderFile *f, char *err, size_t errlen);
void loader_free_file(LoaderFile *f);

/* Writes the boot GDT at BOOT_GDT_ADDR (64-bit code segment if @long_mode). */
void loader_write_boot_gdt(Vm *vm, bool long_mode);

/* Writes identity-mapped page tables for the first 4 GiB (2 MiB pages) at
 * BOOT_PAGE_TABLE_ADDR; returns the CR3 value. */
uint64_t loader_write_identity_page_tables(Vm *vm);

/* PT_LOAD segments of a 32- or 64-bit ELF (type 0 entries skipped). */
typedef struct LoaderSegment {
    uint64_t paddr, vaddr, filesz, memsz, offset;
} LoaderSegment;

/* Fills @segs with the PT_LOAD segments and *@entry with e_entry.  Every
 * segment returned has filesz <= memsz, its bytes inside the file, and
 * paddr + memsz below 2^64.  Returns the count, or -1 with a message. */
int loader_elf_segments(const LoaderFile *f, LoaderSegment *segs, int max, uint64_t *entry,
                        char *err, size_t errlen);

/* The file offset of program header @i (of @phsize bytes) of an ELF with
 * @phoff and @phentsize from its header; false if it is not wholly inside
 * the file. */
bool loader_elf_phdr_offset(const LoaderFile *f, uint64_t phoff, uint64_t phentsize,
                            uint64_t i, size_t phsize, uint64_t *off);

/* Format probes and loaders.  Each loader checks its own format again, so
 * any file's bytes may be handed to any of them (tests/fuzz-loader.c). */
bool loader_is_multiboot(const LoaderFile *f);
bool loader_is_bzimage(const LoaderFile *f);
bool loader_is_elf(const LoaderFile *f);
int loader_load_multiboot(Vm *vm, const LoaderFile *f, const LoaderConfig *cfg,
                          BootEntry *entry, char *err, size_t errlen);
int loader_load_bzimage(Vm *vm, const LoaderFile *f, const LoaderConfig *cfg,
                        BootEntry *entry, char *err, size_t errlen);
/* The PVH entry (XEN_ELFNOTE_PHYS32_ENTRY in a PT_NOTE) of an ELF, or 0. */
uint64_t loader_find_pvh_entry(const LoaderFile *f);
/* Returns 1 if loaded, 0 if the ELF has no PVH note (not an error yet), -1. */
int loader_load_pvh(Vm *vm, const LoaderFile *f, const LoaderConfig *cfg,
                    BootEntry *entry, char *err, size_t errlen);

#endif
