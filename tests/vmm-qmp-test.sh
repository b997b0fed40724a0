#!/bin/sh
# QMP end to end with the test guest (tests/qmp-test.py e2e): keel-vmm -S
# -daemonize -pidfile -qmp unix:...,server=on,wait=off -serial file: is
# started, queried (query-status, query-block, query-blockstats counting the
# guest's reads), stopped (counters stand still), continued, resized and
# quit; then werror=stop with inject=write:ENOSPC:once pauses the VM
# (io-error, BLOCK_IO_ERROR) and cont retries the write, so the guest's
# verified write pass ends with no error.  With qemu-system-x86_64 the
# replies' shapes are compared with QEMU's for the same drive.
# Needs /dev/kvm (the KVM lab, tests/kvm-lab/); skips here and in CI.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-$(dirname "$0")/..}
vmm=${KEEL_VMM:-$top_builddir/vmm/keel-vmm}
guest=${KEEL_GUEST:-$top_builddir/vmm/guest/keel-guest}

if ! { [ -c /dev/kvm ] && (exec 3<>/dev/kvm); } 2>/dev/null; then
    echo "1..0 # SKIP cannot open /dev/kvm"
    exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "1..0 # SKIP python3 not installed"
    exit 77
fi
if [ ! -s "$guest" ] || [ ! -x "$vmm" ]; then
    echo "1..0 # SKIP keel-vmm or $guest not built"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-vmm-qmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
truncate -s 16M "$tmp/disk.raw"
KEEL_QEMU=${KEEL_QEMU:-$(command -v qemu-system-x86_64)} \
    timeout 600 python3 "$top_srcdir/tests/qmp-test.py" e2e "$vmm" "$guest" "$tmp/disk.raw"
