/*
 * vmm/bus.h — port-I/O and MMIO dispatch for vCPU exits.
 *
 * A Bus maps address ranges to device callbacks.  vCPU threads look regions
 * up (under the bus's read lock, so a BAR can move while another vCPU runs)
 * and call the device.  A region registered with BUS_LOCKED is emulated
 * under the global mutex (keel_global_mutex_lock), because it shares state
 * with the main loop (the serial port's input FIFO, PCI config); a
 * BUS_LOCKLESS region (the debug-exit port) is called without it and must
 * be thread-safe itself.  Accesses nobody claims read as all-ones and
 * writes vanish, like an ISA/PCI bus with nothing on it.
 *
 * Ownership: regions point at caller-owned ops and opaque data that must
 * outlive the registration.
 *
 * Thread rules: bus_add/bus_remove from any thread (they take the write
 * lock; PCI BAR relocation calls them from a vCPU thread under the global
 * mutex); bus_read/bus_write from vCPU threads without the global mutex held
 * (they take it for BUS_LOCKED regions).
 */
#ifndef KEEL_VMM_BUS_H
#define KEEL_VMM_BUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct BusOps {
    /* @offset is relative to the region base; @size is 1, 2, 4 or 8. */
    uint64_t (*read)(void *opaque, uint64_t offset, unsigned size);
    void (*write)(void *opaque, uint64_t offset, uint64_t value, unsigned size);
} BusOps;

enum {
    BUS_LOCKED = 0,         /* emulate under the global mutex (default) */
    BUS_LOCKLESS = 1 << 0,  /* the callbacks are thread-safe on their own */
};

typedef struct BusRegion {
    uint64_t base;
    uint64_t len;
    const BusOps *ops;
    void *opaque;
    unsigned flags;
    const char *name;
} BusRegion;

typedef struct Bus {
    pthread_rwlock_t lock;
    BusRegion *regions;     /* sorted by base, non-overlapping */
    int nr_regions;
    int capacity;
    const char *name;       /* "pio" / "mmio", for messages */
} Bus;

void bus_init(Bus *bus, const char *name);
void bus_destroy(Bus *bus);

/* Returns 0, or -EEXIST when [base, base+len) overlaps a region. */
int bus_add(Bus *bus, uint64_t base, uint64_t len, const BusOps *ops, void *opaque,
            unsigned flags, const char *name);

/* Removes the region starting at @base owned by @opaque; -ENOENT if none. */
int bus_remove(Bus *bus, uint64_t base, void *opaque);

/* Dispatch one access.  Return whether a region claimed it; an unclaimed
 * read stores all-ones of @size in *@value. */
bool bus_read(Bus *bus, uint64_t addr, unsigned size, uint64_t *value);
bool bus_write(Bus *bus, uint64_t addr, unsigned size, uint64_t value);

#endif
