/*
 * vmm/pci.h — a PCI host bridge on configuration mechanism #1 (ports
 * 0xCF8 address / 0xCFC-0xCFF data), bus 0 only, and the API devices use
 * to appear on it.
 *
 * A device registers a function with its IDs, adds BARs (I/O, 32- or 64-bit
 * memory, power-of-two sizes) and capabilities, and is realized: the host
 * assigns BAR addresses as firmware would (I/O from 0xC000, memory from
 * VM_PCI_MMIO_START), enables decoding and bus mastering, and maps each BAR
 * on the vCPU buses.  The guest may then size and move BARs: the usual
 * "write all-ones, read back the mask" works, and whenever the effective
 * mapping of a BAR changes (address written, or decoding toggled in the
 * command register) the host remaps it on the bus and calls the device's
 * bar_remap hook so it can move what it registered with KVM itself (an
 * ioeventfd on a notify address, say).
 *
 * Config space is 256 bytes with a per-byte write mask (read-only bytes
 * ignore writes; a device widens the mask for registers it owns, like an
 * MSI-X control word, and sees the writes in config_write).  Port 0xCF9
 * (reset control) resets the machine when bit 2 is written.
 *
 * Ownership: the PciHost owns its PciDevices; they live until pci_host_free.
 * Thread rules: registration and realize from the main thread before the
 * vCPUs run; config and BAR accesses arrive from vCPU threads under the
 * global mutex (the bus takes it), and so do the device hooks;
 * pci_device_set_irq from any thread holding the global mutex.
 */
#ifndef KEEL_VMM_PCI_H
#define KEEL_VMM_PCI_H

#include "vmm/kvm.h"

#include <stdbool.h>
#include <stdint.h>

#define PCI_CONFIG_SIZE 256
#define PCI_MAX_DEVICES 32      /* one function per slot, bus 0 */
#define PCI_NUM_BARS 6
#define PCI_BAR_UNMAPPED UINT64_MAX

/* Standard config-space offsets used by devices. */
#define PCI_VENDOR_ID       0x00
#define PCI_DEVICE_ID       0x02
#define PCI_COMMAND         0x04
#define PCI_STATUS          0x06
#define PCI_REVISION_ID     0x08
#define PCI_CLASS_PROG      0x09
#define PCI_HEADER_TYPE     0x0e
#define PCI_BAR0            0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID    0x2e
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE  0x3c
#define PCI_INTERRUPT_PIN   0x3d

#define PCI_COMMAND_IO      0x1
#define PCI_COMMAND_MEMORY  0x2
#define PCI_COMMAND_MASTER  0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_STATUS_INTERRUPT 0x08

typedef enum PciBarType {
    PCI_BAR_NONE,
    PCI_BAR_IO,
    PCI_BAR_MEM32,
    PCI_BAR_MEM64,          /* takes two BAR slots */
} PciBarType;

typedef struct PciDevice PciDevice;

typedef struct PciDeviceOps {
    /* BAR accesses; @offset from the BAR start.  Required for each BAR. */
    uint64_t (*bar_read)(PciDevice *dev, int bar, uint64_t offset, unsigned size);
    void (*bar_write)(PciDevice *dev, int bar, uint64_t offset, uint64_t value, unsigned size);
    /* The BAR moved (either address may be PCI_BAR_UNMAPPED).  Optional. */
    void (*bar_remap)(PciDevice *dev, int bar, uint64_t old_addr, uint64_t new_addr);
    /* After the host applied a config write (masked).  Optional. */
    void (*config_write)(PciDevice *dev, unsigned offset, uint32_t value, unsigned size);
} PciDeviceOps;

typedef struct PciBar {
    PciBarType type;
    uint64_t size;
    bool prefetchable;
    uint64_t mapped_addr;   /* PCI_BAR_UNMAPPED when not on the bus */
} PciBar;

struct PciDevice {
    struct PciHost *host;
    uint8_t slot;
    uint8_t config[PCI_CONFIG_SIZE];
    uint8_t wmask[PCI_CONFIG_SIZE];
    PciBar bars[PCI_NUM_BARS];
    struct PciBarHandle {
        PciDevice *dev;
        int bar;
    } bar_handles[PCI_NUM_BARS];
    const PciDeviceOps *ops;
    void *opaque;
    uint8_t next_cap_offset;    /* where the next capability goes */
    unsigned irq;               /* GSI of INTA# (0: none) */
    bool irq_level;
    const char *name;
};

typedef struct PciHost PciHost;

/* Creates the host bridge (00:00.0) and claims 0xCF8-0xCFF. */
PciHost *pci_host_new(Vm *vm);
void pci_host_free(PciHost *host);

/* The next pci_device_new() goes into @slot (QEMU's addr=), failing when it
 * is taken; -1: the next free slot (the default).  Main thread. */
void pci_host_want_slot(PciHost *host, int slot);

/* Adds a function in the next free slot.  @class_code is the 24-bit
 * class/subclass/prog-if.  Returns NULL if the bus is full. */
PciDevice *pci_device_new(PciHost *host, const char *name, uint16_t vendor, uint16_t device,
                          uint32_t class_code, uint8_t revision, uint16_t subsys_vendor,
                          uint16_t subsys_id, const PciDeviceOps *ops, void *opaque);

/* Declares BAR @bar (a MEM64 BAR also uses @bar + 1).  @size is a power of
 * two (≥ 16 for memory, ≥ 4 for I/O).  Returns 0 or -EINVAL. */
int pci_device_add_bar(PciDevice *dev, int bar, PciBarType type, uint64_t size,
                       bool prefetchable);

/* Appends a capability with @len bytes of @body (the 2-byte ID/next header
 * is written by the host; @body starts after it).  Returns its offset in
 * config space, or -ENOSPC. */
int pci_device_add_capability(PciDevice *dev, uint8_t cap_id, const void *body, size_t len);

/* Makes config bytes [off, off+len) writable by the guest with @mask. */
void pci_device_set_wmask(PciDevice *dev, unsigned off, unsigned len, uint8_t mask);

/* Routes INTA# to a legacy IRQ (≤ 15, level) and assigns BARs, maps them
 * and enables decoding.  Returns 0 or -ENOSPC (no room in the windows). */
int pci_device_realize(PciDevice *dev, unsigned intx_irq);

/* Drives INTA#: the line level, honouring INTX_DISABLE; sets the status bit. */
void pci_device_set_irq(PciDevice *dev, bool level);

/* Config-space helpers for devices (little endian). */
uint32_t pci_config_read(PciDevice *dev, unsigned off, unsigned size);
void pci_config_set(PciDevice *dev, unsigned off, uint32_t value, unsigned size);

#endif
