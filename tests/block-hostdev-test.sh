#!/bin/sh
# A host block device as the image (a loop device over a test file, where
# losetup works): keel-img info sizes it as qemu-img does (BLKGETSIZE64);
# keel-vmm -blockdev driver=host_device takes it and refuses a regular
# file.  The block layer's BLKDISCARD/BLKZEROOUT paths are in
# tests/block-safe-test (host device part).
. "${top_srcdir:-.}/tests/block-qemu-lib.sh"

if ! command -v losetup > /dev/null 2>&1; then
    echo "1..0 # SKIP losetup not installed"; exit 77
fi
img="$work/backing.img"
truncate -s 32M "$img"
dev=$(losetup --find --show "$img" 2>"$work/err") || {
    echo "1..0 # SKIP losetup does not work here: $(head -1 "$work/err")"; exit 77; }
KEEL_LOOP_DEV=$dev
trap 'losetup -d "$KEEL_LOOP_DEV" 2>/dev/null; cleanup' EXIT

"$keel_img" info --output=json "$dev" > "$work/out" 2> "$work/err"; rc=$?
check "keel-img info on $dev works" test "$rc" -eq 0
check "...virtual-size 33554432 (BLKGETSIZE64)" sh -c "tr -d ' \n' < $work/out | grep -q '\"virtual-size\":33554432'"
if command -v qemu-img > /dev/null 2>&1; then
    q=$(qemu-img info --output=json -f raw "$dev" 2>/dev/null | tr -d ' \n' | grep -o '"virtual-size":[0-9]*')
    k=$(tr -d ' \n' < "$work/out" | grep -o '"virtual-size":[0-9]*')
    check "...as qemu-img info says ($q)" test "$q" = "$k"
else
    skip "qemu-img info on the device" "qemu-img not installed"
fi
"$keel_img" bench -q -w -c 8 -d 2 -s 4k --pattern=0x5e "$dev" > "$work/out" 2> "$work/err"; rc=$?
check "keel-img bench -w on the device" test "$rc" -eq 0
check "...the data is in the backing file" sh -c "od -An -tx1 -N1 $img | grep -q 5e"

if have_vmm; then
    "$keel_vmm" -kernel "$keel_guest" -serial none \
        -blockdev "driver=host_device,filename=$img,node-name=h0" \
        -device virtio-blk-pci,drive=h0 > "$work/out" 2> "$work/err"; rc=$?
    check "keel-vmm: driver=host_device on a regular file refused" sh -c "test $rc -eq 1 && grep -q 'not a block device' $work/err"
    if ! have_kvm; then
        "$keel_vmm" -kernel "$keel_guest" -serial none \
            -blockdev "{\"driver\":\"host_device\",\"filename\":\"$dev\",\"node-name\":\"h0\",\"cache\":{\"direct\":true}}" \
            -blockdev '{"driver":"raw","file":"h0","node-name":"d0"}' \
            -device virtio-blk-pci,drive=d0 > "$work/out" 2> "$work/err"; rc=$?
        check "keel-vmm: driver=host_device on $dev opens (gets as far as /dev/kvm)" grep -q "/dev/kvm" "$work/err"
    else
        skip "keel-vmm host_device open" "/dev/kvm present: keel-vmm would boot"
    fi
else
    skip "host_device refusal" "keel-vmm not built"; skip "host_device open" "keel-vmm not built"
fi
echo "1..$n"
exit $fail
