#!/bin/sh
# tests/vmm-blk-mq-test.sh — multiqueue virtio-blk in keel-vmm with the test
# guest (vmm/guest/keel-guest) as the driver.  TAP.
#
# The device side of issue #14's multiqueue: num-queues=N (keyval and JSON
# -device), QEMU 9's iothread-vq-mapping (round-robin and explicit "vqs"),
# iothread= for every queue, and the default of one queue per vCPU.  Each
# run writes 1 MiB with the guest's pattern, reads it back in the guest and
# checks the image from the host; the start-up line must name the queues
# and their iothreads, and the per-queue counters (KEEL_VMM_STATS=1) must
# show queue 0's requests in queue 0's iothread.  With one vCPU the guest
# drives queue 0 only; with -smp 2 CPU i drives queue i, so both queues
# must carry requests.  A bad mapping is refused before the VM exists.
#
# Skips (77) without a usable /dev/kvm (run it in the KVM lab:
# tests/kvm-lab/lab.sh with KVM_LAB_VMMTESTS=tests/vmm-blk-mq-test.sh).
: "${top_builddir:=.}"
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vmm-blk-lib.sh
. "$here/vmm-blk-lib.sh"

vmm_test_require

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keel-vmm-mq.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM

show() {
    echo "#   --- $1: exit $(vmm_rc "$1"), output:"
    tr -d '\r' <"$TMP/$1.out" | tail -n 15 | sed 's/^/#   | /'
    tail -n 15 "$TMP/$1.err" | sed 's/^/#   ! /'
}
check() {       # check STATUS NAME DESCRIPTION
    ok "$1" "$3"
    [ "$1" -eq 0 ] || show "$2"
}
has_err() { grep -E -q "$2" "$TMP/$1.err"; }

G="-m 64 -kernel $GUEST"
IO2="-object iothread,id=io0 -object iothread,id=io1"
WORK="rw=write bs=4096 iodepth=16 offset=1M size=1M verify=1 flush=1 mode=irq"

# run NAME SEED GEN QEMU-ARGS...: the workload; checks the guest's result and
# the image.
run() {
    name=$1 seed=$2 gen=$3
    shift 3
    truncate -s 8M "$TMP/$name.img"
    vmm_run "$name" -- "$VMM" $G "$@" -append "$WORK seed=$seed gen=$gen"
    r=0
    [ "$(vmm_rc "$name")" = 1 ] || r=1
    [ "$(result_field "$name" status)" = ok ] || r=1
    # Every written block read back by its writer (with -smp 2 each CPU
    # also reads the other's, so verified_blocks doubles).
    [ "$(result_field "$name" written_verified)" = 256 ] || r=1
    check_pattern "$TMP/$name.img" 1048576 1048576 "$gen" "$seed" || r=1
    check $r "$name" "$name: 1 MiB written, read back by the guest, and in the image"
}

D="format=raw,if=none,id=d0,cache=writeback,aio=threads"

# shellcheck disable=SC2086
run json-rr 3 2 $IO2 -drive "file=$TMP/json-rr.img,$D" -device \
    '{"driver":"virtio-blk-pci","drive":"d0","num-queues":4,"iothread-vq-mapping":[{"iothread":"io0"},{"iothread":"io1"}]}'
has_err json-rr "virtio-blk0 .* vq-iothreads=io0,io1,io0,io1 .* queues=4 "
check $? json-rr "json-rr: QEMU 9's JSON mapping: 4 queues round-robin over io0, io1"
has_err json-rr "virtio-blk0 queue 0 \(io0\): requests=[1-9]" &&
    has_err json-rr "virtio-blk0 queue 1 \(io1\): requests=0 "
check $? json-rr "json-rr: queue 0's requests were taken in io0 (the guest uses queue 0)"

# shellcheck disable=SC2086
run json-vqs 5 3 $IO2 -drive "file=$TMP/json-vqs.img,$D" -device \
    '{"driver":"virtio-blk-pci","drive":"d0","num-queues":4,"iothread-vq-mapping":[{"iothread":"io0","vqs":[1,3]},{"iothread":"io1","vqs":[0,2]}]}'
has_err json-vqs "virtio-blk0 .* iothread=io1 vq-iothreads=io1,io0,io1,io0 .* queues=4 " &&
    has_err json-vqs "virtio-blk0 queue 0 \(io1\): requests=[1-9]"
check $? json-vqs "json-vqs: explicit vqs: queue 0 (and the image) in io1"

# shellcheck disable=SC2086
run keyval 7 4 -smp 2 -object iothread,id=io0 -drive "file=$TMP/keyval.img,$D" \
    -device virtio-blk-pci,drive=d0,num-queues=2,iothread=io0
has_err keyval "virtio-blk0 .* iothread=io0 .* queues=2 " &&
    has_err keyval "virtio-blk0 queue 0 \(io0\): requests=[1-9]" &&
    has_err keyval "virtio-blk0 queue 1 \(io0\): requests=[1-9]"
check $? keyval "keyval: num-queues=2,iothread=io0 with -smp 2: both queues carried requests"

# shellcheck disable=SC2086
run default 9 5 -smp 2 -drive "file=$TMP/default.img,format=raw,if=virtio"
has_err default "virtio-blk0 .* main-loop .* queues=2 "
check $? default "default: one queue per vCPU (-smp 2: 2 queues), as QEMU"

# shellcheck disable=SC2086
vmm_run badmap -- "$VMM" $G $IO2 -drive "file=$TMP/default.img,$D" -device \
    '{"driver":"virtio-blk-pci","drive":"d0","num-queues":2,"iothread-vq-mapping":[{"iothread":"io0","vqs":[0]},{"iothread":"io9","vqs":[0]}]}'
r=0
[ "$(vmm_rc badmap)" = 1 ] || r=1
has_err badmap "cannot assign vq 0 to iothread io9 because it is already assigned" || r=1
has_err badmap "missing iothread for vq 1" || r=1
has_err badmap "iothread io9: no -object iothread,id=io9" || r=1
check $r badmap "badmap: a bad mapping is refused with every problem named, exit 1"

echo "1..$n"
[ "$failed" -eq 0 ]
