/*
 * Kernel format detection and what the loaders share: reading files, the
 * memory map, the boot GDT, identity page tables, and the vCPU's entry
 * state.
 */
#include "config.h"

#include "vmm/loader.h"
#include "vmm/acpi.h"
#include "vmm/options.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <elf.h>


int loader_read_file(const char *path, LoaderFile *f, char *err, size_t errlen)
{
    struct stat st;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (the signals
     * may already be blocked for the signal fd); fstat then refuses it. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    size_t done = 0;

    memset(f, 0, sizeof(*f));
    f->path = path;
    if (fd < 0) {
        return vmm_fail(err, errlen, "%s: %s", path, strerror(errno));
    }
    if (fstat(fd, &st) < 0) {
        vmm_fail(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (vmm_check_file_type(NULL, path, &st, false, err, errlen) < 0) {
        close(fd);
        return -1;
    }
    /* A kernel or initrd larger than 1 GiB is a mistake, not a boot. */
    if (st.st_size > (1 << 30)) {
        close(fd);
        return vmm_fail(err, errlen, "%s: too large (%lld bytes)", path, (long long)st.st_size);
    }
    f->size = (size_t)st.st_size;
    f->data = malloc(f->size ? f->size : 1);
    if (!f->data) {
        close(fd);
        return vmm_fail(err, errlen, "%s: out of memory", path);
    }
    while (done < f->size) {
        ssize_t n = read(fd, f->data + done, f->size - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            close(fd);
            loader_free_file(f);
            return vmm_fail(err, errlen, "%s: read error: %s", path, n < 0 ? strerror(errno) : "short");
        }
        done += (size_t)n;
    }
    close(fd);
    return 0;
}

void loader_free_file(LoaderFile *f)
{
    free(f->data);
    f->data = NULL;
    f->size = 0;
}

int loader_copy_to_guest(Vm *vm, uint64_t gpa, const void *src, size_t len,
                         const char *what, char *err, size_t errlen)
{
    void *dst = vm_gpa_to_hva(vm, gpa, len);

    if (!dst) {
        return vmm_fail(err, errlen, "%s: [0x%llx, 0x%llx) is outside guest RAM (%llu MiB; try a "
                    "larger -m)", what, (unsigned long long)gpa,
                    (unsigned long long)(gpa + len), (unsigned long long)(vm->ram_size >> 20));
    }
    if (src) {
        memcpy(dst, src, len);
    } else {
        memset(dst, 0, len);
    }
    return 0;
}

int loader_e820_map(Vm *vm, E820Entry *map, int max)
{
    int n = 0;

#define ADD(a, s, t) do { if (n < max) { map[n++] = (E820Entry) { (a), (s), (t) }; } } while (0)
    /* Conventional memory, with the top KiB reserved as an "EBDA", and the
     * BIOS area reserved: the ACPI and MP tables live there (vmm/acpi.h),
     * where guests scan for them, and must not be allocated. */
    ADD(0, BOOT_LOW_END, E820_RAM);
    ADD(BOOT_LOW_END, 0xA0000 - BOOT_LOW_END, E820_RESERVED);
    ADD(FIRMWARE_AREA_START, FIRMWARE_AREA_END - FIRMWARE_AREA_START, E820_RESERVED);
    if (vm->low_ram_end > BOOT_KERNEL_ADDR) {
        ADD(BOOT_KERNEL_ADDR, vm->low_ram_end - BOOT_KERNEL_ADDR, E820_RAM);
    }
    for (int i = 0; i < vm->nr_slots; i++) {
        if (vm->slots[i].gpa >= VM_HIGH_RAM_START) {
            ADD(vm->slots[i].gpa, vm->slots[i].size, E820_RAM);
        }
    }
#undef ADD
    return n;
}

void loader_write_boot_gdt(Vm *vm, bool long_mode)
{
    uint64_t *gdt = vm_gpa_to_hva(vm, BOOT_GDT_ADDR, 4 * 8);

    /* Flat 4 GiB segments: 0x10 code (32-bit, or 64-bit with L set),
     * 0x18 data; granularity 4 KiB, present, DPL 0. */
    gdt[0] = 0;
    gdt[1] = 0;
    gdt[2] = long_mode ? 0x00AF9B000000FFFFull : 0x00CF9B000000FFFFull;
    gdt[3] = 0x00CF93000000FFFFull;
}

uint64_t loader_write_identity_page_tables(Vm *vm)
{
    uint64_t *pml4 = vm_gpa_to_hva(vm, BOOT_PAGE_TABLE_ADDR, 0x6000);
    uint64_t *pdpt = pml4 + 512;
    uint64_t *pd = pdpt + 512;

    memset(pml4, 0, 0x6000);
    /* 4 GiB with 2 MiB pages: enough for the kernel, boot_params, the
     * command line and an initrd anywhere below 4 GiB. */
    pml4[0] = (BOOT_PAGE_TABLE_ADDR + 0x1000) | 0x3;         /* present, writable */
    for (int i = 0; i < 4; i++) {
        pdpt[i] = (BOOT_PAGE_TABLE_ADDR + 0x2000 + i * 0x1000ull) | 0x3;
    }
    for (uint64_t i = 0; i < 4 * 512; i++) {
        pd[i] = (i << 21) | 0x83;                             /* present, writable, 2M */
    }
    return BOOT_PAGE_TABLE_ADDR;
}

int vcpu_set_boot_entry(Vcpu *vcpu, const BootEntry *entry)
{
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    bool lm = entry->mode == BOOT_MODE_LONG64;
    struct kvm_segment code = {
        .base = 0, .limit = 0xffffffff, .selector = BOOT_CS, .type = 0xb,
        .present = 1, .dpl = 0, .db = lm ? 0 : 1, .s = 1, .l = lm ? 1 : 0, .g = 1,
    };
    struct kvm_segment data = {
        .base = 0, .limit = 0xffffffff, .selector = BOOT_DS, .type = 0x3,
        .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
    };

    if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0) {
        return -errno;
    }
    sregs.cs = code;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    /* A 32-bit busy TSS at 0 (PVH requires TR to be valid; others ignore). */
    sregs.tr = (struct kvm_segment) {
        .base = 0, .limit = 0x67, .selector = 0, .type = 0xb, .present = 1, .s = 0,
    };
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = 4 * 8 - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = 0x11;           /* PE | ET: protected mode, paging off */
    sregs.cr4 = 0;
    sregs.efer = 0;
    if (lm) {
        sregs.cr3 = entry->cr3;
        sregs.cr4 = 0x20;       /* PAE */
        sregs.cr0 = 0x80000011; /* PG | ET | PE */
        sregs.efer = 0x500;     /* LME | LMA */
    }
    if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0) {
        return -errno;
    }
    memset(&regs, 0, sizeof(regs));
    regs.rflags = 0x2;          /* interrupts off */
    regs.rip = entry->rip;
    regs.rax = entry->rax;
    regs.rbx = entry->rbx;
    regs.rsi = entry->rsi;
    regs.rsp = entry->rsp;
    if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0) {
        return -errno;
    }
    return 0;
}

bool loader_elf_phdr_offset(const LoaderFile *f, uint64_t phoff, uint64_t phentsize,
                            uint64_t i, size_t phsize, uint64_t *off)
{
    if (phentsize < phsize || phoff > f->size) {
        return false;
    }
    /* phoff <= the file size (1 GiB at most) and i * phentsize < 2^32
     * (both 16-bit): the sum cannot wrap. */
    *off = phoff + i * phentsize;
    return loader_file_has(f, *off, phsize);
}

/* Adds one PT_LOAD segment after checking it against the file. */
static int add_segment(const LoaderFile *f, LoaderSegment *segs, int *n, int max,
                       const LoaderSegment *s, char *err, size_t errlen)
{
    if (*n == max) {
        return vmm_fail(err, errlen, "%s: too many PT_LOAD segments", f->path);
    }
    if (s->filesz > s->memsz || !loader_file_has(f, s->offset, s->filesz)) {
        return vmm_fail(err, errlen, "%s: segment %d exceeds the file", f->path, *n);
    }
    if (s->memsz > UINT64_MAX - s->paddr) {
        return vmm_fail(err, errlen, "%s: segment %d at 0x%llx wraps around the address space",
                        f->path, *n, (unsigned long long)s->paddr);
    }
    segs[(*n)++] = *s;
    return 0;
}

int loader_elf_segments(const LoaderFile *f, LoaderSegment *segs, int max, uint64_t *entry,
                        char *err, size_t errlen)
{
    const uint8_t *d = f->data;
    uint64_t phoff, phentsize, phnum;
    bool is64;
    int n = 0;

    if (!loader_is_elf(f)) {
        return vmm_fail(err, errlen, "%s: not an ELF file", f->path);
    }
    is64 = d[EI_CLASS] == ELFCLASS64;
    if (d[EI_CLASS] != ELFCLASS32 && !is64) {
        return vmm_fail(err, errlen, "%s: unknown ELF class %d", f->path, d[EI_CLASS]);
    }
    if (f->size < (is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr))) {
        return vmm_fail(err, errlen, "%s: truncated ELF header", f->path);
    }
    if (is64) {
        Elf64_Ehdr eh;
        memcpy(&eh, d, sizeof(eh));
        *entry = eh.e_entry;
        phoff = eh.e_phoff, phentsize = eh.e_phentsize, phnum = eh.e_phnum;
    } else {
        Elf32_Ehdr eh;
        memcpy(&eh, d, sizeof(eh));
        *entry = eh.e_entry;
        phoff = eh.e_phoff, phentsize = eh.e_phentsize, phnum = eh.e_phnum;
    }
    for (uint64_t i = 0; i < phnum; i++) {
        LoaderSegment s;
        uint64_t off;
        uint32_t type;

        if (!loader_elf_phdr_offset(f, phoff, phentsize, i, is64 ? sizeof(Elf64_Phdr) :
                                    sizeof(Elf32_Phdr), &off)) {
            return vmm_fail(err, errlen, "%s: program header %d outside the file", f->path, (int)i);
        }
        if (is64) {
            Elf64_Phdr ph;
            memcpy(&ph, d + off, sizeof(ph));
            type = ph.p_type;
            s = (LoaderSegment) { ph.p_paddr, ph.p_vaddr, ph.p_filesz, ph.p_memsz, ph.p_offset };
        } else {
            Elf32_Phdr ph;
            memcpy(&ph, d + off, sizeof(ph));
            type = ph.p_type;
            s = (LoaderSegment) { ph.p_paddr, ph.p_vaddr, ph.p_filesz, ph.p_memsz, ph.p_offset };
        }
        if (type != PT_LOAD || !s.memsz) {
            continue;
        }
        if (add_segment(f, segs, &n, max, &s, err, errlen) < 0) {
            return -1;
        }
    }
    if (!n) {
        return vmm_fail(err, errlen, "%s: no loadable segments", f->path);
    }
    return n;
}

bool loader_is_elf(const LoaderFile *f)
{
    return f->size >= EI_NIDENT && !memcmp(f->data, ELFMAG, SELFMAG);
}

bool loader_is_bzimage(const LoaderFile *f)
{
    return f->size >= 0x250 && f->data[0x1fe] == 0x55 && f->data[0x1ff] == 0xaa &&
           !memcmp(f->data + 0x202, "HdrS", 4);
}

int loader_probe_kernel(const char *path, const char **kind, char *err, size_t errlen)
{
    LoaderFile f;
    int r = 0;

    if (loader_read_file(path, &f, err, errlen) < 0) {
        return -1;
    }
    if (loader_is_multiboot(&f)) {
        *kind = "multiboot";
    } else if (loader_is_bzimage(&f)) {
        *kind = "linux-bzimage";
    } else if (loader_is_elf(&f) && loader_find_pvh_entry(&f)) {
        *kind = "linux-pvh";
    } else if (loader_is_elf(&f)) {
        r = vmm_fail(err, errlen, "%s: an ELF file without a multiboot header or a PVH entry "
                 "note (XEN_ELFNOTE_PHYS32_ENTRY): cannot boot it", path);
    } else {
        r = vmm_fail(err, errlen, "%s: unknown kernel format (expected a multiboot ELF, a Linux "
                 "bzImage, or a vmlinux with a PVH entry)", path);
    }
    loader_free_file(&f);
    return r;
}

int loader_load_kernel(Vm *vm, const LoaderConfig *cfg, BootEntry *entry,
                       char *err, size_t errlen)
{
    LoaderFile f;
    int r;

    memset(entry, 0, sizeof(*entry));
    if (loader_read_file(cfg->kernel, &f, err, errlen) < 0) {
        return -1;
    }
    if (loader_is_multiboot(&f)) {
        r = loader_load_multiboot(vm, &f, cfg, entry, err, errlen);
    } else if (loader_is_bzimage(&f)) {
        r = loader_load_bzimage(vm, &f, cfg, entry, err, errlen);
    } else if (loader_is_elf(&f)) {
        r = loader_load_pvh(vm, &f, cfg, entry, err, errlen);
        if (r == 0) {
            r = vmm_fail(err, errlen, "%s: an ELF file without a multiboot header or a PVH entry "
                     "note (XEN_ELFNOTE_PHYS32_ENTRY): cannot boot it", cfg->kernel);
        } else if (r > 0) {
            r = 0;
        }
    } else {
        r = vmm_fail(err, errlen, "%s: unknown kernel format (expected a multiboot ELF, a Linux "
                 "bzImage, or a vmlinux with a PVH entry)", cfg->kernel);
    }
    loader_free_file(&f);
    return r;
}
