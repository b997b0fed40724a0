/*
 * 16550A UART.  Transmission is instantaneous (a byte written to THR goes
 * straight to the output fd), so THR is always empty and THRE/TEMT always
 * set; the THRE interrupt is raised after each write and whenever the guest
 * enables it, and cleared by reading IIR or writing THR, as on the chip.
 * Received bytes wait in a 16-byte FIFO; the interrupt line follows "some
 * interrupt pending" (level), sent to the in-kernel irqchip only on change.
 * Loopback (MCR bit 4) is emulated because Linux's 8250 probe tests it.
 */
#include "config.h"

#include "vmm/devices.h"
#include "loop/aio.h"
#include "compat/osdep.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UART_RBR 0      /* read, DLAB=0 */
#define UART_THR 0      /* write, DLAB=0 */
#define UART_DLL 0      /* DLAB=1 */
#define UART_IER 1
#define UART_DLM 1      /* DLAB=1 */
#define UART_IIR 2      /* read */
#define UART_FCR 2      /* write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7

#define IER_RDI  0x01   /* receive data available */
#define IER_THRI 0x02   /* transmitter holding register empty */
#define IER_RLSI 0x04   /* receiver line status */
#define IER_MSI  0x08   /* modem status */

#define IIR_NO_INT  0x01
#define IIR_MSI     0x00
#define IIR_THRI    0x02
#define IIR_RDI     0x04
#define IIR_RLSI    0x06
#define IIR_FIFO_ON 0xc0

#define FCR_ENABLE  0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

#define LSR_DR   0x01
#define LSR_OE   0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_CTS  0x10
#define MSR_DSR  0x20
#define MSR_RI   0x40
#define MSR_DCD  0x80

#define RX_FIFO_SIZE 16

struct Serial {
    Vm *vm;
    uint16_t base;
    unsigned irq;
    int out_fd;

    uint8_t ier, iir_fifo, lcr, mcr, lsr_extra, msr, scr, dll, dlm, fcr;
    bool thre_pending;
    bool irq_level;

    uint8_t rx[RX_FIFO_SIZE];
    unsigned rx_head, rx_count;

    CharFe *fe;             /* the chardev front end, or NULL (out_fd/in_fd) */

    KeelAioContext *in_ctx;
    int in_fd;
    bool in_watching;       /* fd handler installed */
    bool in_eof;
};

static void serial_input_watch(Serial *s);

static uint8_t serial_iir(Serial *s)
{
    uint8_t id = IIR_NO_INT;

    if ((s->ier & IER_RLSI) && (s->lsr_extra & LSR_OE)) {
        id = IIR_RLSI;
    } else if ((s->ier & IER_RDI) && s->rx_count) {
        id = IIR_RDI;
    } else if ((s->ier & IER_THRI) && s->thre_pending) {
        id = IIR_THRI;
    }
    return id | s->iir_fifo;
}

static void serial_update_irq(Serial *s)
{
    bool level = (serial_iir(s) & IIR_NO_INT) == 0;

    if (level != s->irq_level) {
        s->irq_level = level;
        vm_set_irq_line(s->vm, s->irq, level);
    }
}

static void serial_rx_push(Serial *s, uint8_t byte)
{
    if (s->rx_count == RX_FIFO_SIZE) {
        s->lsr_extra |= LSR_OE;
        return;
    }
    s->rx[(s->rx_head + s->rx_count) % RX_FIFO_SIZE] = byte;
    s->rx_count++;
}

void serial_receive(Serial *s, const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        serial_rx_push(s, buf[i]);
    }
    serial_update_irq(s);
}

static void serial_transmit(Serial *s, uint8_t byte)
{
    if (s->mcr & MCR_LOOP) {
        serial_rx_push(s, byte);
    } else if (s->fe) {
        char_fe_write(s->fe, &byte, 1);
    } else if (s->out_fd >= 0) {
        /* Errors (a closed pipe) are the reader's problem, not the guest's. */
        if (keel_write_full(s->out_fd, &byte, 1) < 0) {
            s->out_fd = -1;
        }
    }
    s->thre_pending = true;
}

static uint64_t serial_read(void *opaque, uint64_t offset, unsigned size)
{
    Serial *s = opaque;
    uint8_t v = 0;

    (void)size;
    switch (offset) {
    case UART_RBR:
        if (s->lcr & LCR_DLAB) {
            v = s->dll;
            break;
        }
        if (s->rx_count) {
            v = s->rx[s->rx_head];
            s->rx_head = (s->rx_head + 1) % RX_FIFO_SIZE;
            s->rx_count--;
            serial_input_watch(s);      /* room again: resume reading input */
            if (s->fe) {
                char_fe_accept_input(s->fe);
            }
        }
        break;
    case UART_IER:
        v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
        break;
    case UART_IIR:
        v = serial_iir(s);
        if ((v & 0x0f) == IIR_THRI) {
            s->thre_pending = false;    /* reading IIR acknowledges THRE */
        }
        break;
    case UART_LCR:
        v = s->lcr;
        break;
    case UART_MCR:
        v = s->mcr;
        break;
    case UART_LSR:
        v = LSR_THRE | LSR_TEMT | (s->rx_count ? LSR_DR : 0) | s->lsr_extra;
        s->lsr_extra = 0;               /* error bits clear on read */
        break;
    case UART_MSR:
        if (s->mcr & MCR_LOOP) {
            /* Loopback wires the modem outputs back to the inputs. */
            v = ((s->mcr & MCR_RTS) ? MSR_CTS : 0) | ((s->mcr & MCR_DTR) ? MSR_DSR : 0) |
                ((s->mcr & MCR_OUT1) ? MSR_RI : 0) | ((s->mcr & MCR_OUT2) ? MSR_DCD : 0);
        } else {
            v = MSR_DCD | MSR_DSR | MSR_CTS;
        }
        break;
    case UART_SCR:
        v = s->scr;
        break;
    }
    serial_update_irq(s);
    return v;
}

static void serial_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    Serial *s = opaque;
    uint8_t v = (uint8_t)value;

    (void)size;
    switch (offset) {
    case UART_THR:
        if (s->lcr & LCR_DLAB) {
            s->dll = v;
        } else {
            serial_transmit(s, v);
        }
        break;
    case UART_IER:
        if (s->lcr & LCR_DLAB) {
            s->dlm = v;
        } else {
            bool thri_enabled = !(s->ier & IER_THRI) && (v & IER_THRI);
            s->ier = v & 0x0f;
            if (thri_enabled) {
                /* Enabling THRE with an empty THR interrupts at once. */
                s->thre_pending = true;
            }
        }
        break;
    case UART_FCR:
        s->fcr = v;
        s->iir_fifo = (v & FCR_ENABLE) ? IIR_FIFO_ON : 0;
        if (v & FCR_CLEAR_RX) {
            s->rx_head = s->rx_count = 0;
            serial_input_watch(s);
        }
        break;
    case UART_LCR:
        s->lcr = v;
        break;
    case UART_MCR:
        s->mcr = v & 0x1f;
        break;
    case UART_SCR:
        s->scr = v;
        break;
    default:
        break;  /* LSR and MSR are read-only */
    }
    serial_update_irq(s);
}

static const BusOps serial_ops = {
    .read = serial_read,
    .write = serial_write,
};

/* ---- input from the host ---------------------------------------------- */

static void serial_input_readable(void *opaque)
{
    Serial *s = opaque;
    uint8_t buf[RX_FIFO_SIZE];
    size_t room = RX_FIFO_SIZE - s->rx_count;
    ssize_t n;

    if (!room) {
        serial_input_watch(s);
        return;
    }
    n = read(s->in_fd, buf, room);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            return;
        }
        n = 0;      /* treat errors like EOF: stop watching */
    }
    if (n == 0) {
        s->in_eof = true;
        serial_input_watch(s);
        return;
    }
    serial_receive(s, buf, (size_t)n);
    serial_input_watch(s);
}

/* Watch the input fd exactly when there is room for more and no EOF. */
static void serial_input_watch(Serial *s)
{
    bool want = s->in_ctx && !s->in_eof && s->rx_count < RX_FIFO_SIZE;

    if (want == s->in_watching) {
        return;
    }
    s->in_watching = want;
    keel_aio_set_fd_handler(s->in_ctx, s->in_fd, want ? serial_input_readable : NULL,
                            NULL, NULL, want ? s : NULL);
}

void serial_attach_input(Serial *s, KeelAioContext *ctx, int in_fd)
{
    s->in_ctx = ctx;
    s->in_fd = in_fd;
    s->in_eof = false;
    serial_input_watch(s);
}

static size_t serial_can_receive(void *opaque)
{
    Serial *s = opaque;

    return RX_FIFO_SIZE - s->rx_count;
}

static void serial_chr_receive(void *opaque, const uint8_t *buf, size_t len)
{
    serial_receive(opaque, buf, len);
}

static const ChardevFrontendOps serial_fe_ops = {
    .can_receive = serial_can_receive,
    .receive = serial_chr_receive,
};

int serial_attach_chardev(Serial *s, Chardev *chr, char *err, size_t errlen)
{
    s->fe = chardev_attach(chr, &serial_fe_ops, s, err, errlen);
    return s->fe ? 0 : -1;
}

Serial *serial_new(Vm *vm, uint16_t base, unsigned irq, int out_fd)
{
    Serial *s = calloc(1, sizeof(*s));

    if (!s) {
        return NULL;
    }
    s->vm = vm;
    s->base = base;
    s->irq = irq;
    s->out_fd = out_fd;
    s->in_fd = -1;
    s->mcr = MCR_OUT2;
    s->lcr = 0x03;          /* 8N1, as firmware would leave it */
    if (bus_add(&vm->pio_bus, base, 8, &serial_ops, s, BUS_LOCKED, "serial") < 0) {
        fprintf(stderr, "keel-vmm: serial port 0x%x: I/O range busy\n", base);
        free(s);
        return NULL;
    }
    return s;
}

void serial_free(Serial *s)
{
    if (!s) {
        return;
    }
    if (s->in_watching) {
        keel_aio_set_fd_handler(s->in_ctx, s->in_fd, NULL, NULL, NULL, NULL);
    }
    bus_remove(&s->vm->pio_bus, s->base, s);
    free(s);
}
