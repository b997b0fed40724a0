/*
 * Format magic (block/probe.h).  The signatures and where they sit are
 * those the formats' specifications (and QEMU's *_probe functions) use.
 */
#include "config.h"

#include "block/probe.h"

#include <string.h>

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static int starts(const uint8_t *buf, size_t len, const char *magic, size_t mlen)
{
    return len >= mlen && !memcmp(buf, magic, mlen);
}

const char *block_probe_format(const uint8_t *buf, size_t len)
{
    if (starts(buf, len, "QFI\xfb", 4)) {
        /* version 1 is the old qcow; 2 and 3 (and a truncated header) qcow2 */
        return len >= 8 && be32(buf + 4) == 1 ? "qcow" : "qcow2";
    }
    if (starts(buf, len, "QED\0", 4)) {
        return "qed";
    }
    if (starts(buf, len, "KDMV", 4) || starts(buf, len, "COWD", 4) ||
        starts(buf, len, "# Disk DescriptorFile", 21)) {
        return "vmdk";
    }
    if (len >= 0x44 && le32(buf + 0x40) == 0xbeda107f) {
        return "vdi";
    }
    if (starts(buf, len, "vhdxfile", 8)) {
        return "vhdx";
    }
    if (starts(buf, len, "conectix", 8)) {
        return "vpc";
    }
    if (starts(buf, len, "LUKS\xba\xbe", 6)) {
        return "luks";
    }
    if (starts(buf, len, "WithoutFreeSpace", 16) || starts(buf, len, "WithouFreSpacExt", 16)) {
        return "parallels";
    }
    return NULL;
}
