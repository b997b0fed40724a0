/*
 * vmm/guest/irq.c — the legacy 8259 PIC pair and the 8254 PIT, programmed
 * from CPL3 (port I/O is open to it).  Legacy IRQ n is delivered as vector
 * 0x20 + n; the kernel's handler counts it in irq_state and sends the EOI.
 *
 * The local APIC is put in virtual-wire mode first (see lapic_virtual_wire).
 *
 * Why the PIC and not the IOAPIC: it is the one interrupt path every VMM we
 * target has (QEMU's i440fx, keel-vmm's in-kernel irqchip, whose reset
 * state routes the PIC through LAPIC LINT0), and PCI INTx lines below 16
 * reach it (virtio-pci.c works out which line).
 */
#include "config.h"

#include "vmm/guest/guest.h"

#define PIC1_CMD  0x20
#define PIC1_DATA 0x21
#define PIC2_CMD  0xa0
#define PIC2_DATA 0xa1
#define ELCR1     0x4d0
#define ELCR2     0x4d1
#define PIT_CH0   0x40
#define PIT_MODE  0x43
#define PIT_HZ    1193182u

#define LAPIC_BASE 0xfee00000ul
#define LAPIC_VER  0x030
#define LAPIC_SVR  0x0f0
#define LAPIC_LVT0 0x350
#define LAPIC_LVT1 0x360

static volatile uint32_t *lapic_reg(unsigned off)
{
    return (volatile uint32_t *)(LAPIC_BASE + off);
}

/* Virtual-wire mode: the PIC's INTR reaches the CPU through LINT0 as
 * ExtINT.  SeaBIOS leaves it so; qboot, a bare VMM or a post-reset LAPIC
 * leave the LAPIC software-disabled with LINT0 masked, and then no PIC
 * interrupt ever arrives.  A hardware-disabled LAPIC (reads all-ones)
 * passes INTR straight through and needs nothing. */
static void lapic_virtual_wire(void)
{
    uint32_t ver = *lapic_reg(LAPIC_VER);

    if (ver == 0xffffffffu || ver == 0) {
        return;
    }
    *lapic_reg(LAPIC_SVR) = 0x100 | SPURIOUS_VECTOR;   /* software-enable */
    *lapic_reg(LAPIC_LVT0) = 0x700;                     /* ExtINT, unmasked */
    *lapic_reg(LAPIC_LVT1) = 0x400;                     /* NMI */
}

void pic_init(void)
{
    lapic_virtual_wire();
    outb(PIC1_CMD, 0x11);       /* ICW1: edge, cascade, ICW4 follows */
    outb(PIC2_CMD, 0x11);
    outb(PIC1_DATA, 0x20);      /* ICW2: vector base */
    outb(PIC2_DATA, 0x28);
    outb(PIC1_DATA, 0x04);      /* ICW3: slave on IRQ2 */
    outb(PIC2_DATA, 0x02);
    outb(PIC1_DATA, 0x01);      /* ICW4: 8086 mode, normal EOI */
    outb(PIC2_DATA, 0x01);
    /* OCW2 "set priority": IRQ0 lowest on the master.  The PIT is only our
     * watchdog, and an in-kernel PIT that re-injects missed ticks can have
     * IRQ0 pending at every wait; at the default priority it would then
     * win every time and starve the device's line (seen on kvm_pvm). */
    outb(PIC1_CMD, 0xc0);
    outb(PIC1_DATA, 0xfb);      /* everything masked but the cascade */
    outb(PIC2_DATA, 0xff);
}

void pic_unmask(unsigned irq, bool level_triggered)
{
    uint16_t elcr = irq < 8 ? ELCR1 : ELCR2;
    uint16_t data = irq < 8 ? PIC1_DATA : PIC2_DATA;
    uint8_t bit = 1u << (irq & 7);

    /* IRQs 0-2, 8 and 13 are edge-only on the ELCR. */
    if (irq != 0 && irq != 1 && irq != 2 && irq != 8 && irq != 13) {
        uint8_t v = inb(elcr);
        outb(elcr, level_triggered ? (v | bit) : (v & ~bit));
    }
    outb(data, inb(data) & ~bit);
}

void pic_mask(unsigned irq)
{
    uint16_t data = irq < 8 ? PIC1_DATA : PIC2_DATA;

    outb(data, inb(data) | (1u << (irq & 7)));
}

void pit_start_periodic(unsigned hz)
{
    unsigned divisor = PIT_HZ / hz;

    outb(PIT_MODE, 0x34);       /* channel 0, lo/hi byte, mode 2 (rate) */
    outb(PIT_CH0, divisor & 0xff);
    outb(PIT_CH0, divisor >> 8);
}

void pit_stop(void)
{
    outb(PIT_MODE, 0x30);       /* channel 0, mode 0: one last (masked) edge */
    outb(PIT_CH0, 0);
    outb(PIT_CH0, 0);
}
