/*
 * block/probe.h — image format probing by magic, as QEMU's bdrv_probe_all()
 * does, for the formats keel refuses to serve as raw.
 *
 * keel serves raw images only.  An image opened without format= is probed:
 * when its first sector carries the magic of qcow, qcow2, qed, vmdk, vdi,
 * vhdx, vpc, luks or parallels it is refused, naming the format, rather
 * than handed to a guest that would write into its metadata (a truncated
 * header with the right magic is still refused: safer than QEMU, which
 * calls a qcow2 header shorter than 104 bytes raw).  Otherwise it is
 * "probed raw": QEMU's warning is printed and writes that would make sector
 * 0 probe as another format are refused (-EPERM), as QEMU does.
 *
 * Thread rules: pure functions, any thread.
 */
#ifndef KEEL_BLOCK_PROBE_H
#define KEEL_BLOCK_PROBE_H

#include <stddef.h>
#include <stdint.h>

/* Bytes the probe looks at (a 512-byte sector holds every magic it knows). */
#define BLOCK_PROBE_BYTES 512

/* The format whose magic @buf (the first @len bytes of the image) carries,
 * ("qcow2", "vmdk", ...), or NULL for raw. */
const char *block_probe_format(const uint8_t *buf, size_t len);

#endif
