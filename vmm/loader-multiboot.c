/*
 * Multiboot v1 loader (the GNU Multiboot Specification 0.6.96): the
 * kernel's header sits 4-byte aligned in its first 8 KiB; the image is an
 * ELF (32- or 64-bit container; segments go to their physical addresses) or
 * raw with the header's address fields.  The kernel is entered in flat
 * 32-bit protected mode with EAX = 0x2BADB002 and EBX = the info structure
 * (memory sizes, an e820-style map, the command line, modules, our name).
 */
#include "config.h"

#include "vmm/loader.h"
#include "vmm/options.h"

#include <elf.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MB_HEADER_MAGIC     0x1BADB002u
#define MB_BOOT_MAGIC       0x2BADB002u
#define MB_SEARCH_LEN       8192
#define MB_HEADER_ADDR_LEN  32      /* the header with its address fields */

/* Header flags. */
#define MB_FLAG_PAGE_ALIGN  (1u << 0)
#define MB_FLAG_MEMORY_INFO (1u << 1)
#define MB_FLAG_VIDEO_MODE  (1u << 2)
#define MB_FLAG_ADDRESSES   (1u << 16)
#define MB_FLAGS_KNOWN      (MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMORY_INFO | MB_FLAG_VIDEO_MODE)

/* Info flags. */
#define MBI_MEMORY          (1u << 0)
#define MBI_CMDLINE         (1u << 2)
#define MBI_MODULES         (1u << 3)
#define MBI_MMAP            (1u << 6)
#define MBI_LOADER_NAME     (1u << 9)

/* Where the pieces of the info go (inside the page at BOOT_MB_INFO_ADDR,
 * then the command line in the rest of conventional memory). */
#define MBI_ADDR            BOOT_MB_INFO_ADDR
#define MBI_MMAP_ADDR       (BOOT_MB_INFO_ADDR + 0x100)
#define MBI_MODS_ADDR       (BOOT_MB_INFO_ADDR + 0x300)
#define MBI_NAME_ADDR       (BOOT_MB_INFO_ADDR + 0x340)
#define MBI_MODSTR_ADDR     (BOOT_MB_INFO_ADDR + 0x380)
#define MBI_MODSTR_MAX      0x480
#define MBI_CMDLINE_ADDR    (BOOT_MB_INFO_ADDR + 0x1000)
#define MBI_CMDLINE_MAX     (BOOT_LOW_END - MBI_CMDLINE_ADDR)


static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void wr32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void wr64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

/* Offset of a valid header, or -1. */
static long find_header(const LoaderFile *f)
{
    size_t end = f->size < MB_SEARCH_LEN ? f->size : MB_SEARCH_LEN;

    for (size_t off = 0; off + 12 <= end; off += 4) {
        const uint8_t *h = f->data + off;
        if (rd32(h) == MB_HEADER_MAGIC && rd32(h) + rd32(h + 4) + rd32(h + 8) == 0) {
            return (long)off;
        }
    }
    return -1;
}

bool loader_is_multiboot(const LoaderFile *f)
{
    return find_header(f) >= 0;
}

/* Whether [addr, addr+len) stays clear of our boot structures. */
static bool clear_of_boot_area(uint64_t addr, uint64_t len)
{
    return addr >= BOOT_LOW_END || addr + len <= BOOT_GDT_ADDR;
}

int loader_load_multiboot(Vm *vm, const LoaderFile *f, const LoaderConfig *cfg,
                          BootEntry *entry, char *err, size_t errlen)
{
    long hoff = find_header(f);
    const uint8_t *h;
    uint32_t flags;
    uint64_t kernel_end = 0, entry_addr;
    uint8_t *info;
    E820Entry map[LOADER_MAX_E820];
    int nmap;
    uint32_t info_flags = MBI_MEMORY | MBI_MMAP | MBI_LOADER_NAME | MBI_CMDLINE;
    size_t cmdlen = strlen(cfg->cmdline ? cfg->cmdline : "");

    if (hoff < 0) {
        return vmm_fail(err, errlen, "%s: no multiboot header", f->path);
    }
    h = f->data + hoff;
    flags = rd32(h + 4);
    if (flags & 0xffff & ~MB_FLAGS_KNOWN) {
        return vmm_fail(err, errlen, "%s: the multiboot header requires features keel-vmm does "
                    "not have (flags 0x%x)", f->path, flags);
    }

    if ((flags & MB_FLAG_ADDRESSES) || !loader_is_elf(f)) {
        /* a.out kludge: the header says where the image goes. */
        uint32_t header_addr, load_addr, load_end, bss_end;
        uint64_t file_off, load_len;

        if (!(flags & MB_FLAG_ADDRESSES)) {
            return vmm_fail(err, errlen, "%s: multiboot header without address fields, and not "
                        "an ELF file", f->path);
        }
        /* The search needed 12 bytes; the address fields are bytes 12..31. */
        if (!loader_file_has(f, (uint64_t)hoff, MB_HEADER_ADDR_LEN)) {
            return vmm_fail(err, errlen, "%s: truncated multiboot header (flag 16 needs %d bytes, "
                            "the file ends after %llu)", f->path, MB_HEADER_ADDR_LEN,
                            (unsigned long long)(f->size - (size_t)hoff));
        }
        header_addr = rd32(h + 12), load_addr = rd32(h + 16);
        load_end = rd32(h + 20), bss_end = rd32(h + 24);
        if (header_addr < load_addr || header_addr - load_addr > (uint64_t)hoff) {
            return vmm_fail(err, errlen, "%s: inconsistent multiboot load addresses", f->path);
        }
        file_off = (uint64_t)hoff - (header_addr - load_addr);
        load_len = load_end ? (uint64_t)load_end - load_addr : f->size - file_off;
        if (load_end && load_end < load_addr) {
            return vmm_fail(err, errlen, "%s: load_end_addr below load_addr", f->path);
        }
        if (!loader_file_has(f, file_off, load_len)) {
            return vmm_fail(err, errlen, "%s: multiboot load range exceeds the file", f->path);
        }
        kernel_end = (uint64_t)load_addr + load_len;
        if (bss_end && bss_end > kernel_end) {
            kernel_end = bss_end;
        }
        if (!clear_of_boot_area(load_addr, kernel_end - load_addr)) {
            return vmm_fail(err, errlen, "%s: loads at 0x%x, over keel-vmm's boot structures "
                        "(0x%llx-0x%llx)", f->path, load_addr,
                        (unsigned long long)BOOT_GDT_ADDR, (unsigned long long)BOOT_LOW_END);
        }
        if (loader_copy_to_guest(vm, load_addr, f->data + file_off, load_len, f->path,
                                 err, errlen) < 0 ||
            loader_copy_to_guest(vm, load_addr + load_len, NULL,
                                 kernel_end - load_addr - load_len, f->path, err, errlen) < 0) {
            return -1;
        }
        entry_addr = rd32(h + 28);
    } else {
        LoaderSegment segs[16];
        uint64_t e_entry;
        int n = loader_elf_segments(f, segs, 16, &e_entry, err, errlen);
        bool entry_found = false;

        if (n < 0) {
            return -1;
        }
        entry_addr = e_entry;
        for (int i = 0; i < n; i++) {
            LoaderSegment *s = &segs[i];    /* checked against the file by loader_elf_segments */
            if (s->paddr + s->memsz > 0x100000000ull) {
                return vmm_fail(err, errlen, "%s: segment at 0x%llx is above 4 GiB, out of reach "
                            "of a 32-bit multiboot entry", f->path, (unsigned long long)s->paddr);
            }
            if (!clear_of_boot_area(s->paddr, s->memsz)) {
                return vmm_fail(err, errlen, "%s: segment at 0x%llx overlaps keel-vmm's boot "
                            "structures (0x%llx-0x%llx)", f->path, (unsigned long long)s->paddr,
                            (unsigned long long)BOOT_GDT_ADDR, (unsigned long long)BOOT_LOW_END);
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
            /* A 64-bit container may link the entry at a virtual address:
             * translate it through the segment that holds it. */
            if (!entry_found && e_entry >= s->vaddr && e_entry - s->vaddr < s->memsz) {
                entry_addr = e_entry - s->vaddr + s->paddr;
                entry_found = true;
            }
        }
    }
    if (entry_addr >= 0x100000000ull) {
        return vmm_fail(err, errlen, "%s: entry point 0x%llx is not reachable from 32-bit mode",
                    f->path, (unsigned long long)entry_addr);
    }

    /* The info structure. */
    info = vm_gpa_to_hva(vm, MBI_ADDR, 0x1000);
    memset(info, 0, 0x1000);
    wr32(info + 4, (uint32_t)(BOOT_LOW_END >> 10));                         /* mem_lower KiB */
    wr32(info + 8, (uint32_t)((vm->low_ram_end - BOOT_KERNEL_ADDR) >> 10)); /* mem_upper KiB */

    if (cmdlen >= MBI_CMDLINE_MAX) {
        return vmm_fail(err, errlen, "-append: command line too long (%zu bytes)", cmdlen);
    }
    if (loader_copy_to_guest(vm, MBI_CMDLINE_ADDR, cfg->cmdline ? cfg->cmdline : "",
                             cmdlen + 1, "command line", err, errlen) < 0) {
        return -1;
    }
    wr32(info + 16, (uint32_t)MBI_CMDLINE_ADDR);

    nmap = loader_e820_map(vm, map, LOADER_MAX_E820);
    for (int i = 0; i < nmap; i++) {
        uint8_t *e = info + (MBI_MMAP_ADDR - MBI_ADDR) + i * 24;
        wr32(e, 20);                        /* size of the entry after this field */
        wr64(e + 4, map[i].addr);
        wr64(e + 12, map[i].size);
        wr32(e + 20, map[i].type);
    }
    wr32(info + 44, (uint32_t)(nmap * 24));
    wr32(info + 48, (uint32_t)MBI_MMAP_ADDR);

    memcpy(info + (MBI_NAME_ADDR - MBI_ADDR), "keel-vmm", 9);
    wr32(info + 64, (uint32_t)MBI_NAME_ADDR);

    if (cfg->initrd) {
        /* -initrd becomes module 0, page-aligned after the kernel (like QEMU). */
        LoaderFile m;
        uint64_t mod_start = (kernel_end + 0xfff) & ~0xfffull;
        uint8_t *mod = info + (MBI_MODS_ADDR - MBI_ADDR);
        size_t namelen = strlen(cfg->initrd);

        if (loader_read_file(cfg->initrd, &m, err, errlen) < 0) {
            return -1;
        }
        if (mod_start + m.size > vm->low_ram_end) {
            loader_free_file(&m);
            return vmm_fail(err, errlen, "-initrd %s: does not fit in guest RAM below %llu MiB "
                        "(try a larger -m)", cfg->initrd,
                        (unsigned long long)(vm->low_ram_end >> 20));
        }
        if (loader_copy_to_guest(vm, mod_start, m.data, m.size, cfg->initrd, err, errlen) < 0) {
            loader_free_file(&m);
            return -1;
        }
        if (namelen >= MBI_MODSTR_MAX) {
            namelen = MBI_MODSTR_MAX - 1;
        }
        memcpy(info + (MBI_MODSTR_ADDR - MBI_ADDR), cfg->initrd, namelen);
        wr32(mod, (uint32_t)mod_start);
        wr32(mod + 4, (uint32_t)(mod_start + m.size));
        wr32(mod + 8, (uint32_t)MBI_MODSTR_ADDR);
        wr32(info + 20, 1);
        wr32(info + 24, (uint32_t)MBI_MODS_ADDR);
        info_flags |= MBI_MODULES;
        loader_free_file(&m);
    }
    wr32(info, info_flags);

    loader_write_boot_gdt(vm, false);
    entry->mode = BOOT_MODE_PROTECTED32;
    entry->rip = entry_addr;
    entry->rax = MB_BOOT_MAGIC;
    entry->rbx = MBI_ADDR;
    entry->rsp = BOOT_STACK_TOP;
    entry->kind = "multiboot";
    return 0;
}
