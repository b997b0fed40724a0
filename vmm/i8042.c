/*
 * i8042 keyboard controller, reduced to what a VM without a keyboard needs:
 * the CPU-reset command (0xFE on port 0x64, and output-port writes with the
 * reset bit low), and answers to the controller commands a probing Linux
 * sends (self-test, interface tests, the command byte) so it concludes
 * "controller present, no devices" quickly instead of timing out.
 */
#include "config.h"

#include "vmm/devices.h"

#include <stdlib.h>
#include <string.h>

#define I8042_DATA   0x60
#define I8042_STATUS 0x64

#define STATUS_OBF   0x01   /* output buffer full: data for the guest */
#define STATUS_SYS   0x04   /* system flag (self-test passed) */
#define STATUS_CMD   0x08   /* last write was a command */

struct I8042 {
    Vm *vm;
    uint8_t status;
    uint8_t command_byte;
    uint8_t pending_cmd;    /* command waiting for its data byte, or 0 */
    uint8_t out[4];
    unsigned out_count;
};

static void i8042_push(I8042 *k, uint8_t v)
{
    if (k->out_count < sizeof(k->out)) {
        k->out[k->out_count++] = v;
    }
}

static uint64_t i8042_read(void *opaque, uint64_t offset, unsigned size)
{
    I8042 *k = opaque;

    (void)size;
    if (offset == I8042_STATUS - I8042_DATA) {
        return k->status | (k->out_count ? STATUS_OBF : 0);
    }
    if (offset == 0 && k->out_count) {
        uint8_t v = k->out[0];
        memmove(k->out, k->out + 1, --k->out_count);
        return v;
    }
    return 0;
}

static void i8042_reset_guest(I8042 *k)
{
    vm_request_stop(k->vm, VM_STOP_RESET, 0);
}

static void i8042_command(I8042 *k, uint8_t cmd)
{
    k->status |= STATUS_CMD;
    switch (cmd) {
    case 0x20:                      /* read command byte */
        i8042_push(k, k->command_byte);
        break;
    case 0x60:                      /* write command byte: data follows */
    case 0xd1:                      /* write output port: data follows */
    case 0xd2: case 0xd3: case 0xd4: /* write to kbd/aux buffers, aux device */
        k->pending_cmd = cmd;
        break;
    case 0xa7: k->command_byte |= 0x20; break;     /* disable aux */
    case 0xa8: k->command_byte &= ~0x20; break;    /* enable aux */
    case 0xad: k->command_byte |= 0x10; break;     /* disable kbd */
    case 0xae: k->command_byte &= ~0x10; break;    /* enable kbd */
    case 0xa9:                      /* test aux interface: OK */
    case 0xab:                      /* test kbd interface: OK */
        i8042_push(k, 0x00);
        break;
    case 0xaa:                      /* controller self-test: passed */
        k->status |= STATUS_SYS;
        i8042_push(k, 0x55);
        break;
    case 0xfe:                      /* pulse the reset line */
        i8042_reset_guest(k);
        break;
    default:
        break;
    }
}

static void i8042_data(I8042 *k, uint8_t v)
{
    uint8_t cmd = k->pending_cmd;

    k->status &= ~STATUS_CMD;
    k->pending_cmd = 0;
    switch (cmd) {
    case 0x60:
        k->command_byte = v;
        break;
    case 0xd1:
        if (!(v & 0x01)) {          /* output port bit 0 is the reset line */
            i8042_reset_guest(k);
        }
        break;
    case 0xd2:                      /* echo as keyboard / aux data */
    case 0xd3:
        i8042_push(k, v);
        break;
    case 0xd4:                      /* to the aux device: there is none */
    default:                        /* to the keyboard: there is none */
        break;
    }
}

static void i8042_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    I8042 *k = opaque;

    (void)size;
    if (offset == I8042_STATUS - I8042_DATA) {
        i8042_command(k, (uint8_t)value);
    } else if (offset == 0) {
        i8042_data(k, (uint8_t)value);
    }
}

static const BusOps i8042_ops = {
    .read = i8042_read,
    .write = i8042_write,
};

I8042 *i8042_new(Vm *vm)
{
    I8042 *k = calloc(1, sizeof(*k));

    if (!k) {
        return NULL;
    }
    k->vm = vm;
    k->status = STATUS_SYS;
    k->command_byte = 0x30;         /* both interfaces disabled, no IRQs */
    /* Ports 0x60-0x64 as one region; 0x61 (PIT speaker) belongs to the
     * in-kernel PIT, which KVM handles before exiting to us. */
    if (bus_add(&vm->pio_bus, I8042_DATA, 5, &i8042_ops, k, BUS_LOCKED, "i8042") < 0) {
        free(k);
        return NULL;
    }
    return k;
}

void i8042_free(I8042 *k)
{
    if (k) {
        bus_remove(&k->vm->pio_bus, I8042_DATA, k);
        free(k);
    }
}
