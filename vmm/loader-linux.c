/*
 * Linux loaders.
 *
 * bzImage, by the x86 boot protocol (Documentation/arch/x86/boot.rst): the
 * protected-mode kernel goes to 1 MiB, a zero page (boot_params) gets a
 * copy of the setup header plus our fields (loader type, heap, command
 * line, initrd at the top of low RAM, e820 map), and the vCPU enters
 * startup_64 (load address + 0x200) in long mode with identity page tables
 * when xloadflags says the kernel has a 64-bit entry, else the 32-bit entry
 * (code32_start) in flat protected mode.  Either way RSI/ESI = boot_params.
 *
 * vmlinux through PVH: the uncompressed ELF kernel carries a note
 * XEN_ELFNOTE_PHYS32_ENTRY; we load its segments at their physical
 * addresses and enter that address in 32-bit protected mode with EBX
 * pointing at an hvm_start_info (command line, memory map, the initrd as
 * module 0).  This skips the real-mode setup and the decompressor, which
 * matters on hosts that emulate guest kernel code.
 *
 * Offsets below are the boot protocol's; we write bytes, not the kernel's
 * struct boot_params, so old uapi headers do not matter.
 */
#include "config.h"

#include "vmm/loader.h"
#include "vmm/acpi.h"
#include "vmm/options.h"

#include <elf.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Setup header fields (offsets in the file and in boot_params). */
#define BP_E820_ENTRIES     0x1e8
#define HDR_SETUP_SECTS     0x1f1
#define HDR_BOOT_FLAG       0x1fe
#define HDR_JUMP            0x200   /* the 2-byte jump; byte 0x201 = header length - 0x202 + ... */
#define HDR_MAGIC           0x202
#define HDR_VERSION         0x206
#define HDR_TYPE_OF_LOADER  0x210
#define HDR_LOADFLAGS       0x211
#define HDR_CODE32_START    0x214
#define HDR_RAMDISK_IMAGE   0x218
#define HDR_RAMDISK_SIZE    0x21c
#define HDR_HEAP_END_PTR    0x224
#define HDR_CMD_LINE_PTR    0x228
#define HDR_INITRD_ADDR_MAX 0x22c
#define HDR_XLOADFLAGS      0x236
#define HDR_CMDLINE_SIZE    0x238
#define HDR_INIT_SIZE       0x260
#define BP_E820_TABLE       0x2d0
#define BP_ACPI_RSDP_ADDR   0x070   /* boot protocol 2.14+ */
#define BP_E820_MAX         128

#define LOADED_HIGH         0x01
#define CAN_USE_HEAP        0x80
#define XLF_KERNEL_64       0x01

/* PVH (xen/include/public/arch-x86/hvm/start_info.h, and the ELF note). */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC     0x336ec578u
#define PVH_MEMMAP_ADDR     (BOOT_PVH_INFO_ADDR + 0x40)
#define PVH_MODLIST_ADDR    (BOOT_PVH_INFO_ADDR + 0x200)


static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void wr16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static void wr32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void wr64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static int copy_cmdline(Vm *vm, const LoaderConfig *cfg, uint64_t max, char *err, size_t errlen)
{
    const char *cmd = cfg->cmdline ? cfg->cmdline : "";
    size_t len = strlen(cmd);

    if (len + 1 > max || len + 1 > BOOT_CMDLINE_MAX) {
        return vmm_fail(err, errlen, "-append: command line of %zu bytes exceeds the kernel's "
                    "limit (%llu)", len, (unsigned long long)(max - 1));
    }
    return loader_copy_to_guest(vm, BOOT_CMDLINE_ADDR, cmd, len + 1, "command line",
                                err, errlen);
}

/* Puts the initrd at the top of RAM below @limit, page-aligned, above
 * @floor.  Returns 0 with its address, or -1. */
static int place_initrd(Vm *vm, const LoaderConfig *cfg, uint64_t floor, uint64_t limit,
                        uint64_t *addr, uint64_t *size, char *err, size_t errlen)
{
    LoaderFile f;
    uint64_t top = vm->low_ram_end < limit ? vm->low_ram_end : limit;
    uint64_t at;

    if (loader_read_file(cfg->initrd, &f, err, errlen) < 0) {
        return -1;
    }
    at = f.size <= top ? (top - f.size) & ~0xfffull : 0;
    if (f.size > top || at < floor) {
        vmm_fail(err, errlen, "-initrd %s: %zu bytes do not fit between the kernel and 0x%llx "
                 "(try a larger -m)", cfg->initrd, f.size, (unsigned long long)top);
        loader_free_file(&f);
        return -1;
    }
    if (loader_copy_to_guest(vm, at, f.data, f.size, cfg->initrd, err, errlen) < 0) {
        loader_free_file(&f);
        return -1;
    }
    *addr = at;
    *size = f.size;
    loader_free_file(&f);
    return 0;
}

int loader_load_bzimage(Vm *vm, const LoaderFile *f, const LoaderConfig *cfg,
                        BootEntry *entry, char *err, size_t errlen)
{
    const uint8_t *d = f->data;
    uint16_t version;
    unsigned setup_sects;
    size_t setup_size, hdr_end;
    uint64_t kernel_size, kernel_end, initrd_max;
    uint8_t *zp;
    E820Entry map[LOADER_MAX_E820];
    int nmap;
    bool has64;

    if (!loader_is_bzimage(f)) {
        return vmm_fail(err, errlen, "%s: not a bzImage", f->path);
    }
    /* loader_is_bzimage() guarantees the header up to 0x250; fields past
     * that (init_size at 0x260) are read only once the file is known to
     * be longer than the setup (>= 1 KiB). */
    version = rd16(d + HDR_VERSION);
    setup_sects = d[HDR_SETUP_SECTS] ? d[HDR_SETUP_SECTS] : 4;
    setup_size = (setup_sects + 1) * 512ul;
    hdr_end = 0x202 + d[HDR_JUMP + 1];          /* the jump skips exactly the header */
    if (version < 0x206) {
        return vmm_fail(err, errlen, "%s: Linux boot protocol %u.%02u is too old (need 2.06+)",
                    f->path, version >> 8, version & 0xff);
    }
    if (!(d[HDR_LOADFLAGS] & LOADED_HIGH)) {
        return vmm_fail(err, errlen, "%s: a zImage (loaded low); only bzImage is supported", f->path);
    }
    if (setup_size >= f->size || hdr_end > setup_size || hdr_end > 0x1000) {
        return vmm_fail(err, errlen, "%s: truncated bzImage", f->path);
    }
    kernel_size = f->size - setup_size;
    kernel_end = BOOT_KERNEL_ADDR + kernel_size;
    if (version >= 0x20a && rd32(d + HDR_INIT_SIZE) > kernel_size) {
        /* The decompressor needs init_size bytes from the load address. */
        kernel_end = BOOT_KERNEL_ADDR + rd32(d + HDR_INIT_SIZE);
    }
    if (loader_copy_to_guest(vm, BOOT_KERNEL_ADDR, d + setup_size, kernel_size, f->path,
                             err, errlen) < 0) {
        return -1;
    }

    zp = vm_gpa_to_hva(vm, BOOT_ZERO_PAGE_ADDR, 0x1000);
    memset(zp, 0, 0x1000);
    memcpy(zp + HDR_SETUP_SECTS, d + HDR_SETUP_SECTS, hdr_end - HDR_SETUP_SECTS);
    zp[HDR_TYPE_OF_LOADER] = 0xff;      /* "undefined" boot loader */
    zp[HDR_LOADFLAGS] |= CAN_USE_HEAP;
    wr16(zp + HDR_HEAP_END_PTR, 0xfe00);

    if (copy_cmdline(vm, cfg, rd32(d + HDR_CMDLINE_SIZE) + 1ull, err, errlen) < 0) {
        return -1;
    }
    wr32(zp + HDR_CMD_LINE_PTR, (uint32_t)BOOT_CMDLINE_ADDR);

    initrd_max = rd32(d + HDR_INITRD_ADDR_MAX);
    if (cfg->initrd) {
        uint64_t addr, size;
        if (place_initrd(vm, cfg, kernel_end, initrd_max + 1, &addr, &size, err, errlen) < 0) {
            return -1;
        }
        wr32(zp + HDR_RAMDISK_IMAGE, (uint32_t)addr);
        wr32(zp + HDR_RAMDISK_SIZE, (uint32_t)size);
    }

    nmap = loader_e820_map(vm, map, LOADER_MAX_E820);
    for (int i = 0; i < nmap && i < BP_E820_MAX; i++) {
        uint8_t *e = zp + BP_E820_TABLE + i * 20;
        wr64(e, map[i].addr);
        wr64(e + 8, map[i].size);
        wr32(e + 16, map[i].type);
    }
    zp[BP_E820_ENTRIES] = (uint8_t)nmap;
    if (version >= 0x20e) {
        wr64(zp + BP_ACPI_RSDP_ADDR, ACPI_RSDP_ADDR);   /* saves the guest its scan */
    }

    has64 = version >= 0x20c && (rd16(d + HDR_XLOADFLAGS) & XLF_KERNEL_64);
    loader_write_boot_gdt(vm, has64);
    entry->rsi = BOOT_ZERO_PAGE_ADDR;
    entry->rsp = BOOT_STACK_TOP;
    if (has64) {
        entry->mode = BOOT_MODE_LONG64;
        entry->cr3 = loader_write_identity_page_tables(vm);
        entry->rip = BOOT_KERNEL_ADDR + 0x200;  /* startup_64 */
        entry->kind = "linux-bzimage-64";
    } else {
        entry->mode = BOOT_MODE_PROTECTED32;
        entry->rip = rd32(d + HDR_CODE32_START);
        entry->kind = "linux-bzimage-32";
    }
    return 0;
}

uint64_t loader_find_pvh_entry(const LoaderFile *f)
{
    const uint8_t *d = f->data;
    bool is64;
    uint64_t phoff, phentsize, phnum;

    if (!loader_is_elf(f)) {
        return 0;
    }
    is64 = d[EI_CLASS] == ELFCLASS64;
    if (is64) {
        Elf64_Ehdr eh;
        if (f->size < sizeof(eh)) {
            return 0;
        }
        memcpy(&eh, d, sizeof(eh));
        phoff = eh.e_phoff, phentsize = eh.e_phentsize, phnum = eh.e_phnum;
    } else {
        Elf32_Ehdr eh;
        if (f->size < sizeof(eh)) {
            return 0;
        }
        memcpy(&eh, d, sizeof(eh));
        phoff = eh.e_phoff, phentsize = eh.e_phentsize, phnum = eh.e_phnum;
    }
    for (uint64_t i = 0; i < phnum; i++) {
        uint64_t off, noff, nsize, nend;
        uint32_t type;

        if (!loader_elf_phdr_offset(f, phoff, phentsize, i, is64 ? sizeof(Elf64_Phdr) :
                                    sizeof(Elf32_Phdr), &off)) {
            return 0;
        }
        if (is64) {
            Elf64_Phdr ph;
            memcpy(&ph, d + off, sizeof(ph));
            type = ph.p_type, noff = ph.p_offset, nsize = ph.p_filesz;
        } else {
            Elf32_Phdr ph;
            memcpy(&ph, d + off, sizeof(ph));
            type = ph.p_type, noff = ph.p_offset, nsize = ph.p_filesz;
        }
        if (type != PT_NOTE || !loader_file_has(f, noff, nsize)) {
            continue;
        }
        nend = noff + nsize;        /* inside the file: no wrap */
        /* Notes: namesz, descsz, type, name (4-aligned), desc (4-aligned).
         * All sums below stay under 2^35 (32-bit sizes on a <= 1 GiB file). */
        while (nend - noff >= 12) {
            uint32_t namesz = rd32(d + noff), descsz = rd32(d + noff + 4);
            uint32_t ntype = rd32(d + noff + 8);
            uint64_t name = noff + 12;
            uint64_t desc = name + ((namesz + 3ull) & ~3ull);
            uint64_t next = desc + ((descsz + 3ull) & ~3ull);

            if (next > nend) {
                break;
            }
            if (ntype == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 &&
                !memcmp(d + name, "Xen", 4) && (descsz == 4 || descsz == 8)) {
                return rd32(d + desc);      /* a 32-bit entry either way */
            }
            noff = next;
        }
    }
    return 0;
}

int loader_load_pvh(Vm *vm, const LoaderFile *f, const LoaderConfig *cfg,
                    BootEntry *entry, char *err, size_t errlen)
{
    uint64_t pvh_entry = loader_find_pvh_entry(f), e_entry, kernel_end = 0;
    LoaderSegment segs[16];
    uint8_t *si;
    E820Entry map[LOADER_MAX_E820];
    int n, nmap;

    if (!pvh_entry) {
        return 0;
    }
    n = loader_elf_segments(f, segs, 16, &e_entry, err, errlen);
    if (n < 0) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        LoaderSegment *s = &segs[i];    /* checked against the file by loader_elf_segments */
        if (s->paddr < BOOT_KERNEL_ADDR) {
            return vmm_fail(err, errlen, "%s: segment at 0x%llx is below 1 MiB", f->path,
                        (unsigned long long)s->paddr);
        }
        if (loader_copy_to_guest(vm, s->paddr, f->data + s->offset, s->filesz, f->path,
                                 err, errlen) < 0 ||
            loader_copy_to_guest(vm, s->paddr + s->filesz, NULL, s->memsz - s->filesz,
                                 f->path, err, errlen) < 0) {
            return -1;
        }
        if (s->paddr + s->memsz > kernel_end) {
            kernel_end = s->paddr + s->memsz;
        }
    }

    si = vm_gpa_to_hva(vm, BOOT_PVH_INFO_ADDR, 0x1000);
    memset(si, 0, 0x1000);
    wr32(si, HVM_START_MAGIC);
    wr32(si + 4, 1);                            /* version 1: has the memmap */
    if (copy_cmdline(vm, cfg, BOOT_CMDLINE_MAX, err, errlen) < 0) {
        return -1;
    }
    wr64(si + 24, BOOT_CMDLINE_ADDR);           /* cmdline_paddr */
    if (cfg->initrd) {
        uint64_t addr, size;
        uint8_t *mod = si + (PVH_MODLIST_ADDR - BOOT_PVH_INFO_ADDR);
        /* Linux's own default initrd_addr_max is 2 GiB - 1. */
        if (place_initrd(vm, cfg, kernel_end, 0x80000000ull, &addr, &size, err, errlen) < 0) {
            return -1;
        }
        wr64(mod, addr);
        wr64(mod + 8, size);
        wr32(si + 12, 1);                       /* nr_modules */
        wr64(si + 16, PVH_MODLIST_ADDR);
    }
    nmap = loader_e820_map(vm, map, LOADER_MAX_E820);
    for (int i = 0; i < nmap; i++) {
        uint8_t *e = si + (PVH_MEMMAP_ADDR - BOOT_PVH_INFO_ADDR) + i * 24;
        wr64(e, map[i].addr);
        wr64(e + 8, map[i].size);
        wr32(e + 16, map[i].type);
    }
    wr64(si + 32, ACPI_RSDP_ADDR);              /* rsdp_paddr */
    wr64(si + 40, PVH_MEMMAP_ADDR);             /* memmap_paddr */
    wr32(si + 48, (uint32_t)nmap);              /* memmap_entries */

    loader_write_boot_gdt(vm, false);
    entry->mode = BOOT_MODE_PROTECTED32;
    entry->rip = pvh_entry & 0xffffffffull;
    entry->rbx = BOOT_PVH_INFO_ADDR;
    entry->rsp = BOOT_STACK_TOP;
    entry->kind = "linux-pvh";
    return 1;
}
