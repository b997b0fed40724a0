/*
 * vmm/guest/mm.c — memory: the multiboot v1 info (command line, memory
 * map), a bump allocator for the heap, and mapping MMIO above 4 GiB.
 *
 * Runs at CPL3.  The page tables are identity maps that boot.S made
 * user-accessible, so user code extends them itself and only asks the
 * kernel to flush the TLB; that keeps the loops out of emulated CPL0.
 */
#include "config.h"

#include "vmm/guest/guest.h"

#define MB_INFO_MAGIC    0x2BADB002
#define MB_INFO_MEMORY   (1u << 0)
#define MB_INFO_CMDLINE  (1u << 2)
#define MB_INFO_MODS     (1u << 3)
#define MB_INFO_MMAP     (1u << 6)

#define STATIC_MAP_END   (3ull << 30)    /* write-back part of the static map */
#define PTE_FLAGS_TABLE  0x007ull        /* P | RW | US */
#define PTE_FLAGS_MMIO   0x09full        /* P | RW | US | PWT | PCD | PS */

struct mb_info {
    uint32_t flags;
    uint32_t mem_lower, mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr;
} __attribute__((packed));

struct mb_mmap_entry {
    uint32_t size;                       /* of the rest of the entry */
    uint64_t addr, len;
    uint32_t type;
} __attribute__((packed));

static char cmdline_copy[2048];
const char *boot_cmdline = "";
static uint64_t heap_next, heap_end;

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

void mm_init(void)
{
    const struct mb_info *mb = (const struct mb_info *)(uintptr_t)boot_state.info;
    /* Nothing the loader handed us may be overwritten by the heap. */
    uint64_t reserved_end = (uint64_t)(uintptr_t)__image_end;

    if (boot_state.magic != MB_INFO_MAGIC) {
        kprintf("KEEL-GUEST: warning: not booted by multiboot (eax=0x%x); "
                "no command line, no memory map\n", boot_state.magic);
        mb = NULL;
    }
    if (mb) {
        reserved_end = max_u64(reserved_end, (uint64_t)boot_state.info + sizeof(*mb));
    }
    if (mb && (mb->flags & MB_INFO_CMDLINE) && mb->cmdline) {
        const char *src = (const char *)(uintptr_t)mb->cmdline;
        size_t n = strlen(src);
        if (n >= sizeof(cmdline_copy)) {
            kprintf("KEEL-GUEST: warning: command line truncated to %zu bytes\n",
                    sizeof(cmdline_copy) - 1);
            n = sizeof(cmdline_copy) - 1;
        }
        memcpy(cmdline_copy, src, n);
        cmdline_copy[n] = '\0';
        boot_cmdline = cmdline_copy;
        reserved_end = max_u64(reserved_end, (uint64_t)mb->cmdline + n + 1);
    }
    if (mb && (mb->flags & MB_INFO_MEMORY)) {
        kprintf("KEEL-GUEST: memory lower=%uK upper=%uK\n", mb->mem_lower,
                mb->mem_upper);
    }
    if (mb && (mb->flags & MB_INFO_MODS) && mb->mods_count) {
        /* Module structures: start, end, string, reserved. */
        const uint32_t *mod = (const uint32_t *)(uintptr_t)mb->mods_addr;
        reserved_end = max_u64(reserved_end, (uint64_t)mb->mods_addr + 16 * mb->mods_count);
        for (uint32_t i = 0; i < mb->mods_count; i++, mod += 4) {
            reserved_end = max_u64(reserved_end, mod[1]);
        }
    }
    if (!mb || !(mb->flags & MB_INFO_MMAP)) {
        /* No map: use mem_upper if we have it, else assume 64 MiB. */
        uint64_t top = (mb && (mb->flags & MB_INFO_MEMORY)) ?
                       0x100000ull + (uint64_t)mb->mem_upper * 1024 : 64ull << 20;
        heap_next = ALIGN_UP(reserved_end, 4096);
        heap_end = top < STATIC_MAP_END ? top : STATIC_MAP_END;
        if (heap_end < heap_next) {
            heap_end = heap_next;
        }
        kprintf("KEEL-GUEST: no memory map; heap 0x%lx-0x%lx\n", heap_next, heap_end);
        return;
    }

    reserved_end = max_u64(reserved_end, (uint64_t)mb->mmap_addr + mb->mmap_length);
    uint64_t best_start = 0, best_end = 0;
    for (uint64_t off = 0; off + sizeof(struct mb_mmap_entry) <= mb->mmap_length;) {
        const struct mb_mmap_entry *e =
            (const struct mb_mmap_entry *)(uintptr_t)(mb->mmap_addr + off);
        off += e->size + 4;
        if (!e->len) {
            continue;                    /* qboot's map ends with one */
        }
        kprintf("KEEL-GUEST: mmap 0x%09lx-0x%09lx type %u\n", e->addr,
                e->addr + e->len - 1, e->type);
        if (e->type == 1) {
            uint64_t start = max_u64(e->addr, 0x100000);
            uint64_t end = e->addr + e->len;
            if (end > STATIC_MAP_END) {
                end = STATIC_MAP_END;
            }
            /* The heap starts above everything the loader handed us that
             * lies in this range. */
            if (start < reserved_end && reserved_end < end) {
                start = reserved_end;
            }
            start = ALIGN_UP(start, 4096);
            if (end > start && end - start > best_end - best_start) {
                best_start = start;
                best_end = end;
            }
        }
    }
    heap_next = best_start;
    heap_end = best_end;
    kprintf("KEEL-GUEST: heap 0x%lx-0x%lx (%lu MiB)\n", heap_next, heap_end,
            (heap_end - heap_next) >> 20);
}

void *guest_alloc(uint64_t size, uint64_t align)
{
    uint64_t p = ALIGN_UP(heap_next, align ? align : 8);

    if (p + size > heap_end || p + size < p) {
        return NULL;
    }
    heap_next = p + size;
    return (void *)(uintptr_t)p;
}

uint64_t guest_heap_free(void)
{
    return heap_end - heap_next;
}

static uint64_t *table_page(uint64_t *entry)
{
    if (!(*entry & 1)) {
        uint64_t *page = guest_alloc(4096, 4096);
        if (!page) {
            return NULL;
        }
        memset(page, 0, 4096);
        *entry = (uint64_t)(uintptr_t)page | PTE_FLAGS_TABLE;
    }
    return (uint64_t *)(uintptr_t)(*entry & 0x000ffffffffff000ull);
}

bool map_mmio(uint64_t phys, uint64_t len)
{
    uint64_t a = phys & ~0x1fffffull;
    uint64_t end = phys + len;
    bool changed = false;

    if (end > (1ull << 48) || end < phys) {
        return false;
    }
    for (; a < end; a += 0x200000) {
        if (a < (4ull << 30)) {
            continue;                    /* in the static map */
        }
        uint64_t *pdpt = table_page(&pml4[(a >> 39) & 511]);
        uint64_t *pd = pdpt ? table_page(&pdpt[(a >> 30) & 511]) : NULL;
        if (!pd) {
            return false;
        }
        pd[(a >> 21) & 511] = a | PTE_FLAGS_MMIO;
        changed = true;
    }
    if (changed) {
        syscall3(SYS_FLUSH_TLB, 0, 0, 0);
    }
    return true;
}
