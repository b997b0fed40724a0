/*
 * The 16550A without KVM: registers, THRE and receive interrupt
 * identification, FIFO mode, loopback (as Linux's probe checks it),
 * overrun, and input from an fd through the main loop with flow control
 * (the handler stops reading while the 16-byte FIFO is full).
 */
#include "config.h"

#include "tests/keel-test.h"
#include "vmm/devices.h"
#include "loop/main-loop.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define BASE 0x3f8

static Vm vm;

static uint8_t rd(unsigned reg)
{
    uint64_t v;
    bus_read(&vm.pio_bus, BASE + reg, 1, &v);
    return (uint8_t)v;
}

static void wr(unsigned reg, uint8_t v)
{
    bus_write(&vm.pio_bus, BASE + reg, 1, v);
}

/* Runs the main loop until it has nothing to do. */
static void spin_loop(void)
{
    keel_global_mutex_lock();
    for (int i = 0; i < 20; i++) {
        keel_main_loop_wait(true);
    }
    keel_global_mutex_unlock();
}

int main(void)
{
    int out[2], in[2];
    Serial *s;
    char buf[64];
    ssize_t n;
    GString *got = g_string_new(NULL);

    memset(&vm, 0, sizeof(vm));
    vm.vm_fd = vm.kvm_fd = vm.ram_fd = -1;
    bus_init(&vm.pio_bus, "pio");
    bus_init(&vm.mmio_bus, "mmio");
    if (pipe(out) < 0 || pipe(in) < 0 || keel_main_loop_init() < 0) {
        keel_test_skip_all("cannot set up pipes or the main loop");
    }
    fcntl(out[0], F_SETFL, O_NONBLOCK);

    s = serial_new(&vm, BASE, 4, out[1]);
    KEEL_OK(s != NULL, "UART created");

    wr(7, 0x5a);
    KEEL_IS(rd(7), 0x5a, "scratch register");
    KEEL_IS(rd(5), 0x60, "LSR: THR empty, transmitter empty, no data");
    KEEL_IS(rd(2), 0x01, "IIR: no interrupt pending");
    wr(3, 0x83);
    wr(0, 0x01);
    wr(1, 0x00);
    KEEL_IS(rd(0), 0x01, "DLAB: divisor latch low");
    wr(3, 0x03);

    wr(0, 'H');
    wr(0, 'i');
    n = read(out[0], buf, sizeof(buf));
    KEEL_OK(n == 2 && !memcmp(buf, "Hi", 2), "THR writes reach the output fd");

    /* THRE interrupt. */
    wr(1, 0x02);
    KEEL_IS(rd(2), 0x02, "enabling ETBEI with THR empty raises THRE");
    KEEL_IS(rd(2), 0x01, "reading IIR acknowledged it");
    wr(0, '!');
    KEEL_IS(rd(2), 0x02, "THRE again after a transmit");
    n = read(out[0], buf, sizeof(buf));
    KEEL_OK(n == 1 && buf[0] == '!', "that byte went out too");
    wr(1, 0x00);
    KEEL_IS(rd(2), 0x01, "disabled: nothing pending");

    /* Receive. */
    serial_receive(s, (const uint8_t *)"ab", 2);
    KEEL_IS(rd(5) & 0x01, 0x01, "LSR.DR with data");
    KEEL_IS(rd(2), 0x01, "no RDI while IER.ERBFI is off");
    wr(1, 0x01);
    KEEL_IS(rd(2), 0x04, "IIR: received data available");
    KEEL_IS(rd(0), 'a', "RBR 'a'");
    KEEL_IS(rd(0), 'b', "RBR 'b'");
    KEEL_IS(rd(2), 0x01, "drained: no interrupt");
    KEEL_IS(rd(5) & 0x01, 0, "LSR.DR clear");

    wr(2, 0x07);
    KEEL_IS(rd(2), 0xc1, "FCR enables the FIFO (IIR bits 7:6)");

    /* Loopback as Linux's 8250 probe checks it. */
    wr(4, 0x10 | 0x0a);
    KEEL_IS(rd(6) & 0xf0, 0x90, "loopback: MSR mirrors RTS/OUT2 as CTS/DCD");
    wr(0, 'L');
    KEEL_IS(rd(0), 'L', "loopback: THR comes back on RBR");
    n = read(out[0], buf, sizeof(buf));
    KEEL_OK(n < 0, "and nothing went to the output");
    wr(4, 0x0b);
    KEEL_IS(rd(6) & 0xf0, 0xb0, "out of loopback: DCD, DSR, CTS");

    /* Overrun. */
    for (int i = 0; i < 17; i++) {
        serial_receive(s, (const uint8_t *)"x", 1);
    }
    KEEL_IS(rd(5) & 0x03, 0x03, "17 bytes into 16: overrun");
    KEEL_IS(rd(5) & 0x02, 0, "OE clears on read");
    for (int i = 0; i < 16; i++) {
        rd(0);
    }

    /* Input from an fd through the main loop, 40 bytes through a 16-byte FIFO. */
    serial_attach_input(s, keel_main_aio_context(), in[0]);
    KEEL_IS(write(in[1], "0123456789abcdefghijklmnopqrstuvwxyzABCD", 40), 40, "40 bytes queued");
    for (int round = 0; round < 10 && got->len < 40; round++) {
        spin_loop();
        while (rd(5) & 0x01) {
            g_string_append_c(got, (char)rd(0));
        }
    }
    KEEL_OK(got->len == 40 && !memcmp(got->str, "0123456789abcdefghijklmnopqrstuvwxyzABCD", 40),
            "all 40 bytes arrived in order (got %zu)", got->len);
    spin_loop();
    KEEL_IS(rd(5) & 0x01, 0, "nothing more");

    close(in[1]);
    spin_loop();    /* EOF: the handler goes away (no busy loop) */
    KEEL_IS(rd(5) & 0x01, 0, "EOF delivers no bytes");

    serial_free(s);
    KEEL_IS(vm.pio_bus.nr_regions, 0, "freed UART leaves the bus");
    g_string_free(got, TRUE);
    bus_destroy(&vm.pio_bus);
    bus_destroy(&vm.mmio_bus);
    return keel_test_done();
}
