/*
 * Port-I/O and MMIO dispatch: a sorted array searched by bisection.  Few
 * regions exist (a dozen ports, a few BARs), so an array beats a tree.
 */
#include "config.h"

#include "vmm/bus.h"
#include "loop/main-loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bus_init(Bus *bus, const char *name)
{
    memset(bus, 0, sizeof(*bus));
    pthread_rwlock_init(&bus->lock, NULL);
    bus->name = name;
}

void bus_destroy(Bus *bus)
{
    free(bus->regions);
    pthread_rwlock_destroy(&bus->lock);
    memset(bus, 0, sizeof(*bus));
}

/* Index of the first region whose end is above @addr (caller holds the lock). */
static int bus_lower_bound(Bus *bus, uint64_t addr)
{
    int lo = 0, hi = bus->nr_regions;

    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        BusRegion *r = &bus->regions[mid];
        if (r->base + r->len <= addr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

int bus_add(Bus *bus, uint64_t base, uint64_t len, const BusOps *ops, void *opaque,
            unsigned flags, const char *name)
{
    int i, ret = 0;

    if (!len || base + len < base) {
        return -EINVAL;
    }
    pthread_rwlock_wrlock(&bus->lock);
    i = bus_lower_bound(bus, base);
    if (i < bus->nr_regions && bus->regions[i].base < base + len) {
        ret = -EEXIST;
        goto out;
    }
    if (bus->nr_regions == bus->capacity) {
        int cap = bus->capacity ? bus->capacity * 2 : 16;
        BusRegion *n = realloc(bus->regions, cap * sizeof(*n));
        if (!n) {
            ret = -ENOMEM;
            goto out;
        }
        bus->regions = n;
        bus->capacity = cap;
    }
    memmove(&bus->regions[i + 1], &bus->regions[i],
            (bus->nr_regions - i) * sizeof(BusRegion));
    bus->regions[i] = (BusRegion) {
        .base = base, .len = len, .ops = ops, .opaque = opaque, .flags = flags, .name = name,
    };
    bus->nr_regions++;
out:
    pthread_rwlock_unlock(&bus->lock);
    return ret;
}

int bus_remove(Bus *bus, uint64_t base, void *opaque)
{
    int i, ret = -ENOENT;

    pthread_rwlock_wrlock(&bus->lock);
    i = bus_lower_bound(bus, base);
    if (i < bus->nr_regions && bus->regions[i].base == base &&
        bus->regions[i].opaque == opaque) {
        memmove(&bus->regions[i], &bus->regions[i + 1],
                (bus->nr_regions - i - 1) * sizeof(BusRegion));
        bus->nr_regions--;
        ret = 0;
    }
    pthread_rwlock_unlock(&bus->lock);
    return ret;
}

/* Copies the region claiming [addr, addr+size) into *@out. */
static bool bus_find(Bus *bus, uint64_t addr, unsigned size, BusRegion *out)
{
    bool found = false;
    int i;

    pthread_rwlock_rdlock(&bus->lock);
    i = bus_lower_bound(bus, addr);
    if (i < bus->nr_regions) {
        BusRegion *r = &bus->regions[i];
        /* An access straddling the end is cut off by the device, not us:
         * require only that it starts inside. */
        if (r->base <= addr && addr < r->base + r->len) {
            *out = *r;
            found = true;
        }
    }
    pthread_rwlock_unlock(&bus->lock);
    (void)size;
    return found;
}

bool bus_read(Bus *bus, uint64_t addr, unsigned size, uint64_t *value)
{
    BusRegion r;
    bool found = bus_find(bus, addr, size, &r);

    if (!found || !r.ops->read) {
        *value = size >= 8 ? ~0ull : (1ull << (size * 8)) - 1;
        return found;
    }
    if (!(r.flags & BUS_LOCKLESS)) {
        keel_global_mutex_lock();
    }
    *value = r.ops->read(r.opaque, addr - r.base, size);
    if (!(r.flags & BUS_LOCKLESS)) {
        keel_global_mutex_unlock();
    }
    return true;
}

bool bus_write(Bus *bus, uint64_t addr, unsigned size, uint64_t value)
{
    BusRegion r;

    if (!bus_find(bus, addr, size, &r)) {
        return false;
    }
    if (!r.ops->write) {
        return true;
    }
    if (!(r.flags & BUS_LOCKLESS)) {
        keel_global_mutex_lock();
    }
    r.ops->write(r.opaque, addr - r.base, value, size);
    if (!(r.flags & BUS_LOCKLESS)) {
        keel_global_mutex_unlock();
    }
    return true;
}
