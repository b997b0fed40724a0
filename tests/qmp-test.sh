#!/bin/sh
# QMP without a guest: tests/qmp-test.py control runs keel-vmm -machine none
# (-S, -daemonize, -pidfile, -qmp unix:...) through every command, event and
# kind of bad input with a stdlib-only Python client.  Runs without KVM.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-$(dirname "$0")/..}
vmm=${KEEL_VMM:-$top_builddir/vmm/keel-vmm}

if ! command -v python3 >/dev/null 2>&1; then
    echo "1..0 # SKIP python3 not installed"
    exit 77
fi
if [ ! -x "$vmm" ]; then
    echo "1..0 # SKIP $vmm not built"
    exit 77
fi
exec timeout 300 python3 "$top_srcdir/tests/qmp-test.py" control "$vmm"
