#!/bin/sh
# The same QMP queries against keel-vmm -machine none and QEMU (TCG, -S, a
# virtio drive): both must answer alike (reply or error, error class); every
# reply whose shape differs is listed as a TAP comment.  Skips without
# python3 or qemu-system-x86_64.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-$(dirname "$0")/..}
vmm=${KEEL_VMM:-$top_builddir/vmm/keel-vmm}
qemu=${QEMU_SYSTEM_X86_64:-$(command -v qemu-system-x86_64)}

if ! command -v python3 >/dev/null 2>&1; then
    echo "1..0 # SKIP python3 not installed"
    exit 77
fi
if [ -z "$qemu" ] || [ ! -x "$qemu" ]; then
    echo "1..0 # SKIP qemu-system-x86_64 not installed"
    exit 77
fi
if [ ! -x "$vmm" ]; then
    echo "1..0 # SKIP $vmm not built"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-qmp-qemu.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
truncate -s 64M "$tmp/disk.raw"
timeout 300 python3 "$top_srcdir/tests/qmp-test.py" compare "$vmm" "$qemu" "$tmp/disk.raw"
