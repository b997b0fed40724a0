#!/bin/sh
# tests/demo.sh — the main job's demo (tests/run-main.sh runs it from the
# build directory as `sh ../tests/demo.sh`; any cwd works, see below).
#
# Creates a disk image with keel-img, boots the freestanding test guest
# (vmm/guest/keel-guest) in keel-vmm with it as a virtio-blk disk, and runs
#   1. a write + verify workload (the drive in an iothread): 8 MiB of 4 KiB
#      writes carrying a pattern, a flush, and a read-back of every block;
#   2. a random-read workload (the drive in the main loop) that checks every
#      block it reads against the same pattern;
# then checks the image from the host, and prints the guest's result lines
# and the backends in use (keel-vmm's start-up lines and --features).
#
# Exit status: 0 when both runs and the host check pass (or when KVM is not
# usable here: the demo says so and has nothing to show); 1 otherwise.
here=$(cd "$(dirname "$0")" && pwd)
# The build tree: $top_builddir, else the cwd when it is one, else ../build
# next to this script (where tests/run-main.sh builds).
if [ -z "${top_builddir:-}" ]; then
    if [ -x ./vmm/keel-vmm ]; then top_builddir=.; else top_builddir=$here/../build; fi
fi
top_builddir=$(cd "$top_builddir" 2>/dev/null && pwd) || {
    echo "demo: build directory not found (set top_builddir)"
    exit 1
}
# shellcheck source=tests/vmm-blk-lib.sh
. "$here/vmm-blk-lib.sh"

for f in "$VMM" "$KEEL_IMG"; do
    if [ ! -x "$f" ]; then
        echo "demo: $f is not built (run make in $top_builddir)"
        exit 1
    fi
done
if [ ! -s "$GUEST" ]; then
    echo "demo: $GUEST is not built (run make in $top_builddir)"
    exit 1
fi
if ! { [ -c /dev/kvm ] && (exec 3<>/dev/kvm); } 2>/dev/null; then
    echo "demo: /dev/kvm cannot be opened here, so keel-vmm cannot run a guest."
    echo "demo: (the block layer alone: $KEEL_IMG bench -c 20000 -d 32 -r FILE)"
    exit 0
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keel-demo.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
if direct_io_ok "$TMP"; then CACHE=none; else CACHE=writeback; fi
img=$TMP/disk.img
SIZE=8M
SEED=42

echo "== keel-vmm --features (KVM, virtio and block lines)"
"$VMM" --features | grep -E '^(kvm|virtio|block|guest-ram|event-notifier)'
echo
echo "== keel-img create -f raw disk.img 64M"
"$KEEL_IMG" create -f raw "$img" 64M || exit 1
"$KEEL_IMG" info "$img" 2>&1 | sed 's/^/   /'

show_run() {    # show_run NAME TITLE
    echo
    echo "== $2"
    grep -E '^keel-vmm: (kvm|virtio-blk)' "$TMP/$1.err" | grep -v ' stats: ' | sed 's/^/   /'
    tr -d '\r' <"$TMP/$1.out" |
        grep -E '^KEEL-GUEST: (blk |workload|flush|verify|RESULT|request|device|badchain)' |
        sed 's/^/   /'
    grep -E '^keel-vmm: virtio-blk0 stats' "$TMP/$1.err" |
        sed -e 's/^keel-vmm: //' -e 's/ discards=.* bad_chains=[0-9]* / /' -e 's/^/   /'
    echo "   exit status $(vmm_rc "$1") (the guest's status 0 is (0 << 1) | 1)"
}

vmm_run write -- "$VMM" -m 128 -kernel "$GUEST" -object iothread,id=io0 \
    -drive "file=$img,format=raw,if=virtio,aio=io_uring,cache=$CACHE,iothread=io0,serial=keel-demo" \
    -append "rw=write bs=4096 iodepth=16 size=$SIZE verify=1 flush=1 seed=$SEED"
show_run write "1. write + verify, $SIZE in 4 KiB writes at iodepth 16 (drive in iothread io0)"

vmm_run randread -- "$VMM" -m 128 -kernel "$GUEST" \
    -drive "file=$img,format=raw,if=virtio,aio=io_uring,cache=$CACHE" \
    -append "rw=randread bs=4096 iodepth=32 size=$SIZE runtime=1500 verify=1 seed=$SEED mode=irq"
show_run randread "2. random reads for 1.5 s at iodepth 32, every block checked (main loop, interrupts)"

echo
echo "== host check of the image"
bytes=$((8 * 1024 * 1024))
if check_pattern "$img" 0 $bytes 1 $SEED && check_zero "$img" $bytes $((56 * 1024 * 1024)); then
    echo "   the first $SIZE hold exactly the guest's pattern; the rest is untouched"
    host=ok
else
    echo "   MISMATCH between the image and what the guest wrote"
    host=fail
fi

echo
echo "== summary"
printf '   %-10s %-9s %-10s %8s %9s %8s %10s %s\n' run context engine ops iops MiB/s verified status
for r in write randread; do
    if [ $r = write ]; then ctx=iothread; else ctx=main-loop; fi
    eng=$(sed -n 's/^keel-vmm: virtio-blk0 .* engine=\([^ ]*\) .*/\1/p' "$TMP/$r.err" | head -n 1)
    printf '   %-10s %-9s %-10s %8s %9s %8s %10s %s\n' $r $ctx "$eng" \
        "$(result_field $r ops)" "$(result_field $r iops)" "$(result_field $r mibps)" \
        "$(result_field $r verified_blocks)" "$(result_field $r status)"
done
if [ "$(vmm_rc write)" = 1 ] && [ "$(vmm_rc randread)" = 1 ] &&
    [ "$(result_field write status)" = ok ] && [ "$(result_field randread status)" = ok ] &&
    [ $host = ok ]; then
    echo "   demo passed: guest I/O through virtio-blk, verified in the guest and from the host"
    exit 0
fi
echo "   demo FAILED"
exit 1
