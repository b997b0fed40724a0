#!/bin/sh
# The freestanding test guest (vmm/guest/keel-guest) under keel-vmm.  The
# same file under QEMU is tests/guest-qemu-test.sh's job (a guest that only
# worked against our own VMM would prove little).
#   test=boot exit=21   banner, PCI list, CPL3, an interrupt; debug-exit 21
#                       → exit status (21 << 1) | 1 = 43 and a RESULT line
#   test=triplefault    keel-vmm ends with "guest triple-faulted", status 2
# Skips when /dev/kvm cannot be opened or the guest was not built.
top_builddir=${top_builddir:-.}
vmm=${KEEL_VMM:-$top_builddir/vmm/keel-vmm}
guest=${KEEL_GUEST:-$top_builddir/vmm/guest/keel-guest}

if ! { [ -c /dev/kvm ] && (exec 3<>/dev/kvm); } 2>/dev/null; then
    echo "1..0 # SKIP cannot open /dev/kvm"
    exit 77
fi
if [ ! -s "$guest" ]; then
    echo "1..0 # SKIP $guest not built"
    exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-vmm-guest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0
ok() {  # condition-status description
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}
show() { sed 's/^/# /' "$1" | head -n 40; }

# A bound on each run: guest CPL0 code may be emulated on this host.
run() {  # out err cmd...
    out=$1 err=$2
    shift 2
    timeout 120 "$@" </dev/null >"$out" 2>"$err"
}

run "$tmp/boot.out" "$tmp/boot.err" "$vmm" -m 64 -kernel "$guest" -append "test=boot exit=21"
rc=$?
show "$tmp/boot.out"; show "$tmp/boot.err"
ok $([ $rc -eq 43 ]; echo $?) "keel-vmm: test=boot exits through debug-exit with (21<<1)|1 (got $rc)"
ok $(grep -q 'KEEL-GUEST: RESULT status=ok test=boot' "$tmp/boot.out"; echo $?) \
    "keel-vmm: the guest printed its passing RESULT line on COM1"
ok $(grep -Eiq 'pci.*1b36:0008|1b36.*0008' "$tmp/boot.out"; echo $?) \
    "keel-vmm: the guest enumerated PCI and found our host bridge"

run "$tmp/tf.out" "$tmp/tf.err" "$vmm" -m 64 -kernel "$guest" -append "test=triplefault"
rc=$?
show "$tmp/tf.err"
ok $([ $rc -eq 2 ]; echo $?) "keel-vmm: test=triplefault ends with status 2 (got $rc)"
ok $(grep -q 'keel-vmm: guest triple-faulted' "$tmp/tf.err"; echo $?) \
    "keel-vmm: with a clear message"

echo "1..$n"
exit $failed
