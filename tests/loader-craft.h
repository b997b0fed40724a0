/*
 * tests/loader-craft.h — builders of small kernel files for the loader
 * tests (tests/vmm-loader-test.c) and the loader fuzz target's seeds and
 * regression inputs (tests/fuzz-loader.c): ELF64 headers and program
 * headers, a PVH vmlinux, a multiboot ELF64, a minimal bzImage.  Static
 * functions, header only.
 */
#ifndef KEEL_TESTS_LOADER_CRAFT_H
#define KEEL_TESTS_LOADER_CRAFT_H

#include <elf.h>
#include <stdint.h>
#include <string.h>

#define MB_MAGIC 0x1BADB002u

static inline void wr32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

/* ---- ELF64 builders ---- */

#define EH64 sizeof(Elf64_Ehdr)
#define PH64 sizeof(Elf64_Phdr)

static inline void elf64_header(uint8_t *f, uint64_t phoff, uint16_t phnum, uint64_t entry)
{
    Elf64_Ehdr eh;

    memset(&eh, 0, sizeof(eh));
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_entry = entry;
    eh.e_phoff = phoff;
    eh.e_ehsize = EH64;
    eh.e_phentsize = PH64;
    eh.e_phnum = phnum;
    memcpy(f, &eh, sizeof(eh));
}

static inline void elf64_phdr(uint8_t *f, int i, uint32_t type, uint64_t offset, uint64_t paddr,
                       uint64_t filesz, uint64_t memsz)
{
    Elf64_Phdr ph;

    memset(&ph, 0, sizeof(ph));
    ph.p_type = type;
    ph.p_offset = offset;
    ph.p_vaddr = paddr;
    ph.p_paddr = paddr;
    ph.p_filesz = filesz;
    ph.p_memsz = memsz;
    ph.p_align = 0x1000;
    memcpy(f + EH64 + i * PH64, &ph, sizeof(ph));
}

#define FILE_SIZE 0x2000
#define NOTE_OFF 0x200
#define MBH_OFF 0x400
#define CODE_OFF 0x1000

/* A vmlinux with a PVH note; phdr 1 is the PT_LOAD (@offset, @filesz). */
static inline void pvh_kernel(uint8_t *f, uint64_t offset, uint64_t filesz)
{
    memset(f, 0, FILE_SIZE);
    elf64_header(f, EH64, 2, 0x100000);
    elf64_phdr(f, 0, PT_NOTE, NOTE_OFF, 0, 20, 20);
    elf64_phdr(f, 1, PT_LOAD, offset, 0x100000, filesz, filesz);
    wr32(f + NOTE_OFF, 4);              /* namesz */
    wr32(f + NOTE_OFF + 4, 4);          /* descsz */
    wr32(f + NOTE_OFF + 8, 18);         /* XEN_ELFNOTE_PHYS32_ENTRY */
    memcpy(f + NOTE_OFF + 12, "Xen", 4);
    wr32(f + NOTE_OFF + 16, 0x100000);
    memset(f + CODE_OFF, 0xf4, FILE_SIZE - CODE_OFF);   /* hlt */
}

/* A multiboot kernel in an ELF64 container; phdr 0 is the PT_LOAD. */
static inline void mb_elf64_kernel(uint8_t *f, uint64_t offset, uint64_t filesz)
{
    memset(f, 0, FILE_SIZE);
    elf64_header(f, EH64, 1, 0x100000);
    elf64_phdr(f, 0, PT_LOAD, offset, 0x100000, filesz, filesz);
    wr32(f + MBH_OFF, MB_MAGIC);
    wr32(f + MBH_OFF + 4, 0);
    wr32(f + MBH_OFF + 8, (uint32_t)-MB_MAGIC);
    memset(f + CODE_OFF, 0xf4, FILE_SIZE - CODE_OFF);
}

/* A minimal bzImage (boot protocol 2.12, 64-bit entry) of @size bytes. */
static inline void bzimage(uint8_t *f, size_t size, uint8_t setup_sects)
{
    memset(f, 0, size);
    f[0x1f1] = setup_sects;
    f[0x1fe] = 0x55;
    f[0x1ff] = 0xaa;
    f[0x200] = 0xeb;
    f[0x201] = 0x66;                    /* header up to 0x268 */
    memcpy(f + 0x202, "HdrS", 4);
    f[0x206] = 0x0c;                    /* version 2.12 */
    f[0x207] = 0x02;
    f[0x211] = 0x01;                    /* LOADED_HIGH */
    wr32(f + 0x22c, 0x7fffffff);        /* initrd_addr_max */
    f[0x236] = 0x01;                    /* XLF_KERNEL_64 */
    wr32(f + 0x238, 255);               /* cmdline_size */
}

/* A bare multiboot header of @len bytes with @flags (no ELF around it). */
static inline void mb_bare_header(uint8_t *h, size_t len, uint32_t flags)
{
    memset(h, 0, len);
    wr32(h, MB_MAGIC);
    wr32(h + 4, flags);
    wr32(h + 8, (uint32_t)-(MB_MAGIC + flags));
}

#endif
