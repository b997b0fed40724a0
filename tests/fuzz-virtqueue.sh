#!/bin/sh
# tests/fuzz-virtqueue.sh — libFuzzer over the device side of the split
# virtqueue and the virtio-blk request path (tests/fuzz-virtqueue.c).  Built
# and run by tests/fuzz-lib.sh (see there for the environment); 10 s in
# make check, FUZZ_SECONDS in `make fuzz`.  Leak detection off: the device
# and loop live for the whole process on purpose.
# shellcheck source=tests/fuzz-lib.sh disable=SC2154  # top_builddir: set by fuzz-lib.sh
. "$(cd "$(dirname "$0")" && pwd)/fuzz-lib.sh"
FUZZ_PKGS=JSON_GLIB     # vmm/options.c: JSON -blockdev
fuzz_main virtqueue "vmm/virtqueue.c vmm/virtio-core.c vmm/virtio-pci.c vmm/virtio-blk.c \
    vmm/virtio-blk-req.c vmm/options.c vmm/machine.c $vmm_kvm_sources vmm/pci.c" 4096 0
