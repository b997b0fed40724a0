/*
 * vmm/devices.h — the legacy PC devices keel-vmm emulates in user space
 * (the PIC, IOAPIC, LAPIC and PIT are KVM's in-kernel ones):
 *
 *   serial.c      16550A UART (COM1 at 0x3f8, IRQ 4): output to a file
 *                 descriptor, input from one through a loop fd handler,
 *                 THRE / receive-data interrupts through KVM_IRQ_LINE
 *   i8042.c       keyboard controller, enough for a reset through 0x64 ← 0xFE
 *                 (and the self-test/command-byte dance Linux does on probe)
 *   rtc.c         MC146818 CMOS clock at 0x70/0x71 with the host's time, so
 *                 guests never wait on an "update in progress" bit of a
 *                 missing chip
 *   debug-exit.c  QEMU's isa-debug-exit at 0xf4: a write of V stops the VM
 *                 with exit status (V << 1) | 1
 *
 * Device state is protected by the global mutex: the bus takes it around
 * every access (BUS_LOCKED), and the serial input handler runs in the main
 * loop, which holds it while dispatching.  debug-exit is lock-free.
 *
 * Thread rules: *_init from the main thread before the vCPU starts;
 * serial_attach_input / serial_attach_chardev from the main thread; serial_free after the vCPU
 * thread has been joined.
 */
#ifndef KEEL_VMM_DEVICES_H
#define KEEL_VMM_DEVICES_H

#include "vmm/kvm.h"
#include "loop/aio.h"
#include "vmm/chardev.h"

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ 4
#define DEBUG_EXIT_PORT 0xf4

typedef struct Serial Serial;

/* A UART at @base raising @irq, writing transmitted bytes to @out_fd (-1:
 * discard).  Returns NULL (after a message) on failure. */
Serial *serial_new(Vm *vm, uint16_t base, unsigned irq, int out_fd);

/* Feed received bytes from @in_fd, read by an fd handler in @ctx (the
 * main loop).  Reading stops while the receive FIFO is full and at EOF. */
void serial_attach_input(Serial *s, KeelAioContext *ctx, int in_fd);

/* Use @chr (-serial / -chardev) for both directions instead of the fds:
 * input is taken while the receive FIFO has room.  -1 with a message when
 * the chardev is taken.  Main thread, before the vCPU runs. */
int serial_attach_chardev(Serial *s, Chardev *chr, char *err, size_t errlen);

/* Detaches the input handler and frees the device (vCPU stopped). */
void serial_free(Serial *s);

/* Queue bytes as if received (tests; global mutex held or vCPU stopped). */
void serial_receive(Serial *s, const uint8_t *buf, size_t len);

/* The i8042 (reset through port 0x64) and the CMOS clock at 0x70: NULL
 * when they cannot be registered; free them after the vCPU stopped. */
typedef struct I8042 I8042;
typedef struct Rtc Rtc;
I8042 *i8042_new(Vm *vm);
void i8042_free(I8042 *k);
Rtc *rtc_new(Vm *vm);
void rtc_free(Rtc *r);
int debug_exit_init(Vm *vm);

#endif
