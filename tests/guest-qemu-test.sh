#!/bin/sh
# tests/guest-qemu-test.sh — boots the freestanding test guest
# (vmm/guest/keel-guest) under qemu-system-x86_64 and checks its serial
# output and exit status, so the guest is proven against a VMM other than
# our own.  TAP; skips (exit 77) when qemu-system-x86_64 is not installed
# or cannot start here (e.g. under an old-kernel preset of keel-oldkernel).
#
# Exit status: the guest writes S to isa-debug-exit; QEMU exits (S << 1) | 1.
# A triple fault with -no-reboot makes QEMU exit 0.
#
# Firmware: the first boot uses QEMU's default SeaBIOS, exactly as the
# architecture notes run the guest.  SeaBIOS runs emulated on kvm_pvm hosts
# (~4 s per boot), so the other boots use qboot (Debian ships it with
# qemu-system-x86) when present: it starts in ~0.3 s and leaves PCI BARs
# unassigned, which also proves the guest assigns them itself.
#
# The virtio-blk part drives QEMU's virtio-blk-pci (transitional 1af4:1001
# and modern-only 1af4:1042) with the guest's workload generator: write +
# verify, after which this script checks the image from the host against
# the guest's pattern (workload.c: the 32-bit word at byte offset o is
# (o + gen * 0x9E3779B1 + seed * 0x85EBCA77) mod 2^32); a read-back in a
# second boot; interrupt mode; indirect descriptors; discard/write-zeroes;
# a read-only drive; and the malformed-chain test.
#
# Environment: QEMU (binary), KEEL_QEMU_ACCEL (e.g. "-accel tcg"),
# KEEL_GUEST_TIMEOUT (seconds per boot, default 120), KEEL_GUEST_TEST_SLOW=1
# (also run a workload under SeaBIOS when qboot is there).
: "${top_builddir:=.}"
: "${top_srcdir:=.}"

QEMU=${QEMU:-qemu-system-x86_64}
if ! command -v "$QEMU" >/dev/null 2>&1; then
    echo "1..0 # SKIP $QEMU not installed (Debian: apt-get install qemu-system-x86)"
    exit 77
fi
if ! command -v timeout >/dev/null 2>&1; then
    echo "1..0 # SKIP timeout(1) not available"
    exit 77
fi

GUEST=$top_builddir/vmm/guest/keel-guest
TIMEOUT=${KEEL_GUEST_TIMEOUT:-120}
if [ -n "${KEEL_QEMU_ACCEL:-}" ]; then
    ACCEL=$KEEL_QEMU_ACCEL
elif [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    ACCEL="-accel kvm -accel tcg"        # falls back to TCG if KVM refuses
else
    ACCEL="-accel tcg"
fi
# Can QEMU start at all here?  Under tests/keel-oldkernel (an old kernel's
# system calls refused) QEMU itself may not: it is the peer, not what is
# tested, so that is a skip with QEMU's reason, not a failure.
probe_out=$(echo quit | timeout 30 "$QEMU" -accel tcg -machine pc -m 32 -display none \
    -nodefaults -no-user-config -monitor stdio -S 2>&1 >/dev/null)
probe_rc=$?
if [ $probe_rc -ne 0 ]; then
    [ $probe_rc -eq 124 ] && probe_out="timed out after 30 s; $probe_out"
    echo "1..0 # SKIP $QEMU cannot start here (exit $probe_rc: $(echo "$probe_out" | tr '\n' ' ' | cut -c1-160))"
    exit 77
fi
QBOOT=
for f in /usr/share/qemu/qboot.rom /usr/share/seabios/qboot.rom; do
    if [ -f "$f" ]; then QBOOT="-bios $f"; break; fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-guest-test.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

n=0
failed=0
ok() {          # ok COND-STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        failed=$((failed + 1))
    fi
}
show() {        # show NAME: the boot's output as TAP comments
    echo "#   --- $1: exit $(cat "$tmp/$1.rc" 2>/dev/null), output:"
    sed -e 's/\r$//' -e 's/^/#   | /' "$tmp/$1.out" "$tmp/$1.err" 2>/dev/null | tail -n 40
}
has() {         # has NAME REGEX: the boot printed a line matching REGEX
    tr -d '\r' < "$tmp/$1.out" | grep -E -q "$2"
}
check() {       # check NAME REGEX DESCRIPTION
    has "$1" "$2"
    r=$?
    ok $r "$3"
    [ $r -eq 0 ] || show "$1"
}
check_rc() {    # check_rc NAME EXPECTED DESCRIPTION
    got=$(cat "$tmp/$1.rc" 2>/dev/null)
    [ "$got" = "$2" ]
    r=$?
    ok $r "$3 (exit $got, want $2)"
    [ $r -eq 0 ] || show "$1"
}
# run NAME FIRMWARE APPEND [QEMU ARGS...]: one boot, in the foreground
run() {
    name=$1 fw=$2 append=$3
    shift 3
    # shellcheck disable=SC2086
    timeout "$TIMEOUT" "$QEMU" $ACCEL $fw -nodefaults -nographic \
        -serial stdio -no-reboot -device isa-debug-exit,iobase=0xf4 \
        -kernel "$GUEST" -append "$append" "$@" \
        </dev/null >"$tmp/$name.out" 2>"$tmp/$name.err"
    echo $? >"$tmp/$name.rc"
}
# field NAME KEY: the value of KEY= in the boot's RESULT line
field() {
    tr -d '\r' < "$tmp/$1.out" | sed -n "s/^KEEL-GUEST: RESULT .* $2=\([^ ]*\).*/\1/p" | tail -n 1
}
# check_pattern IMAGE OFFSET BYTES GEN SEED: the guest's write pattern is
# on the image (mawk/gawk doubles hold these sums exactly).
check_pattern() {
    od -A n -t u4 -v -j "$2" -N "$3" "$1" | awk -v o="$2" -v g="$4" -v s="$5" '
        { for (i = 1; i <= NF; i++) {
              want = (o + g * 2654435761 + s * 2246822519) % 4294967296
              if ($i != want) {
                  if (bad < 3) printf "#   byte %.0f: %.0f, want %.0f\n", o, $i, want
                  bad++
              }
              o += 4; n++
          } }
        END { exit !(n > 0 && bad == 0) }'
}
# disk NAME SIZE: a raw image; DRIVE_OPTS has the cache/aio options
disk() {
    rm -f "$tmp/$1.img"
    truncate -s "$2" "$tmp/$1.img"
}

echo "# qemu: $("$QEMU" --version | head -n 1); accel: $ACCEL; qboot: ${QBOOT:-none}"

# ---- the file itself ---------------------------------------------------------
[ -f "$GUEST" ]
ok $? "guest image exists ($GUEST)"
if [ ! -f "$GUEST" ]; then
    echo "1..$n"
    exit 1
fi
# ELF32 (class 1), i386 (machine 3): QEMU's multiboot loader refuses ELF64.
class=$(od -A n -t u1 -j 4 -N 1 "$GUEST" | tr -d ' ')
machine=$(od -A n -t u2 -j 18 -N 2 "$GUEST" | tr -d ' ')
[ "$class" = 1 ] && [ "$machine" = 3 ]
ok $? "32-bit i386 ELF container (class $class, machine $machine)"
# Multiboot v1: magic 0x1BADB002, 4-byte aligned, in the first 8 KiB.
od -A d -t x4 -N 8192 -v "$GUEST" | grep -q ' 1badb002'
ok $? "multiboot header in the first 8 KiB"

# cache=none (O_DIRECT) as the benchmarks use it, unless TMPDIR refuses it.
if dd if=/dev/zero of="$tmp/direct-probe" bs=4096 count=1 oflag=direct 2>/dev/null; then
    DRIVE_OPTS="format=raw,if=none,cache=none,aio=threads"
else
    DRIVE_OPTS="format=raw,if=none,cache=writeback,aio=threads"
fi
echo "# drive options: $DRIVE_OPTS"
for d in boot sb wv mod ro bad; do disk $d 16M || exit 1; done

# ---- boots -------------------------------------------------------------------
# One after the other: two emulated SeaBIOS runs side by side take 5x longer
# each on kvm_pvm hosts.
# (No disk here: SeaBIOS would spend seconds probing it; the qboot boots
# below list the disks.)
run seabios "" "test=boot"
# The workload under SeaBIOS too (its BAR placement and IRQ routing differ
# from qboot's) when that is cheap or asked for.
if [ -z "$QBOOT" ] || [ -n "${KEEL_GUEST_TEST_SLOW:-}" ]; then
    run sbblk "" "rw=randrw bs=4096 iodepth=16 size=1M verify=1 mode=irq seed=9" \
        -drive "file=$tmp/sb.img,$DRIVE_OPTS,id=d0" -device virtio-blk-pci,drive=d0
fi

run exitn "$QBOOT" "test=boot exit=7" \
    -drive "file=$tmp/boot.img,$DRIVE_OPTS,id=d0" -device virtio-blk-pci,drive=d0
run badopt "$QBOOT" "test=boot bogus=1"
run triple "$QBOOT" "test=triplefault"
run modern "$QBOOT" "test=boot" \
    -drive "file=$tmp/mod.img,$DRIVE_OPTS,id=d0" -device virtio-blk-pci,drive=d0,disable-legacy=on
# write + verify + flush on 1 MiB at offset 1 MiB; then read it back in a
# new boot, sleeping on interrupts.
run write "$QBOOT" "rw=write bs=4096 iodepth=8 offset=1M size=1M verify=1 flush=1 seed=7 gen=3" \
    -drive "file=$tmp/wv.img,$DRIVE_OPTS,id=d0" -device virtio-blk-pci,drive=d0,serial=keel-guest-disk
run readback "$QBOOT" "rw=randread bs=4096 iodepth=4 offset=1M size=1M verify=1 seed=7 gen=3 mode=irq" \
    -drive "file=$tmp/wv.img,$DRIVE_OPTS,id=d0" -device virtio-blk-pci,drive=d0
# modern-only device, 200 requests in flight (more than the ring holds as
# direct chains: indirect descriptors), discard and write-zeroes first.
run indirect "$QBOOT" "rw=write bs=64k iodepth=200 size=8M verify=1 discard=1 write_zeroes=1" \
    -drive "file=$tmp/mod.img,$DRIVE_OPTS,id=d0" -device virtio-blk-pci,drive=d0,disable-legacy=on
run ro "$QBOOT" "rw=write bs=4096 size=64k" \
    -drive "file=$tmp/ro.img,$DRIVE_OPTS,id=d0,readonly=on" -device virtio-blk-pci,drive=d0
run badchain "$QBOOT" "test=badchain" \
    -drive "file=$tmp/bad.img,$DRIVE_OPTS,id=d0" -device virtio-blk-pci,drive=d0
run hostile "$QBOOT" "test=hostile" \
    -drive "file=$tmp/bad.img,$DRIVE_OPTS,id=d0" -device virtio-blk-pci,drive=d0,disable-legacy=on

# test=boot under SeaBIOS, the command line of the architecture notes
check_rc seabios 1 "test=boot exits with status 0"
check seabios '^KEEL-GUEST: keel test guest ' "banner"
check seabios '^KEEL-GUEST: cmdline: .*test=boot' "command line from the multiboot info"
check seabios '^KEEL-GUEST: mmap 0x0+100000-' "multiboot memory map"
check seabios '^KEEL-GUEST: pci 00:00\.0 8086:1237 class 06\.00\.00' "PCI list has the i440fx host bridge"
check seabios '^KEEL-GUEST: cpl3 ok cpl=3' "CPL3 round trip"
check seabios '^KEEL-GUEST: irq ok ' "timer interrupt arrives (at CPL3 and waking hlt)"
check seabios '^KEEL-GUEST: RESULT status=ok test=boot ' "RESULT line"

check_rc exitn 15 "exit=7 gives QEMU status (7 << 1) | 1"
check exitn '^KEEL-GUEST: RESULT status=ok test=boot ' "exit=7 run passes"
check exitn '^KEEL-GUEST: pci [0-9a-f:.]+ 1af4:1001 class 01\.00' "PCI list has the transitional virtio-blk (1af4:1001)"

check_rc badopt 5 "unknown option: status 2"
check badopt "^KEEL-GUEST: unknown option 'bogus'" "unknown option is named"
check badopt '^KEEL-GUEST: RESULT status=fail reason=bad-cmdline' "unknown option: RESULT fail"

check_rc triple 0 "test=triplefault: QEMU stops on the triple fault"
check triple '^KEEL-GUEST: triple-faulting now' "test=triplefault announces itself"
! has triple 'RESULT status'
ok $? "test=triplefault prints no RESULT"

check_rc modern 1 "test=boot with a modern-only virtio-blk passes"
check modern '^KEEL-GUEST: pci [0-9a-f:.]+ 1af4:1042 class 01\.00' "PCI list has the modern virtio-blk (1af4:1042)"

# ---- virtio-blk -------------------------------------------------------------
check_rc write 1 "write+verify: exit status 0"
check write '^KEEL-GUEST: blk id status=0 serial=.keel-guest-disk.' "GET_ID returns the drive's serial"
check write '^KEEL-GUEST: flush status=0' "FLUSH succeeds"
check write '^KEEL-GUEST: verify pass: 256 blocks read back, 0 bad' "write+verify: every block read back intact"
check write '^KEEL-GUEST: RESULT status=ok test=blk ops=256 iops=[0-9]+ mibps=[0-9.]+ errors=0 verify_failures=0 elapsed_us=[0-9]+ ' "write+verify: RESULT line"
check_pattern "$tmp/wv.img" 1048576 1048576 3 7
ok $? "the image holds the guest's pattern (checked from the host)"
cmp -s -n 1048576 "$tmp/wv.img" /dev/zero && cmp -s -n 1048576 -i 2097152:0 "$tmp/wv.img" /dev/zero
ok $? "the image is untouched outside the workload's region"

check_rc readback 1 "read-back in a second boot (mode=irq): exit status 0"
check readback '^KEEL-GUEST: RESULT status=ok test=blk ops=256 .* verify_failures=0 .* mode=irq verified_blocks=256 ' "read-back verifies all 256 blocks"
irqs=$(field readback irqs)
[ "${irqs:-0}" -gt 0 ]
ok $? "mode=irq: completions arrived by interrupt (irqs=$irqs)"

check_rc indirect 1 "modern-only device, iodepth 200: exit status 0"
check indirect '^KEEL-GUEST: blk .*slots=200 \(indirect\).* discard write-zeroes' "indirect descriptors and discard/write-zeroes negotiated"
check indirect '^KEEL-GUEST: discard ok' "DISCARD succeeds"
check indirect '^KEEL-GUEST: verify pass \(zeroes\): 128 blocks read back, 0 bad' "WRITE_ZEROES reads back as zeroes"
check indirect '^KEEL-GUEST: RESULT status=ok test=blk ops=128 .* verify_failures=0 ' "64 KiB writes with 200 in flight verify"

check_rc ro 3 "read-only drive: writes make the run fail"
check ro '^KEEL-GUEST: blk .* ro ' "read-only drive offers VIRTIO_BLK_F_RO"
errs=$(field ro errors)
[ "${errs:-0}" -eq 16 ]
ok $? "read-only drive: all 16 writes fail (errors=$errs)"

check_rc badchain 1 "malformed chains: exit status 0"
for c in out-of-range-address loop oversized header-writable status-readonly beyond-capacity \
    next-out-of-range indirect-outside-ram indirect-bad-size indirect-nested avail-idx-far-ahead; do
    check badchain "^KEEL-GUEST: badchain $c: (failed-ioerr|failed-unsupp|needs-reset) .*device works afterwards" "malformed chain '$c' refused, device usable after"
done
check badchain '^KEEL-GUEST: RESULT status=ok test=badchain' "malformed chains: RESULT ok"
check_rc hostile 1 "hostile driver: exit status 0"
for c in reset-inflight driver-ok-without-features-ok bad-queue-size ring-outside-ram \
    config-write-live bogus-msix-entries bar-moved-live; do
    check hostile "^KEEL-GUEST: hostile $c: .*device works after a reset" "hostile driver '$c': the device survives and works after a reset"
done
check hostile '^KEEL-GUEST: RESULT status=ok test=hostile' "hostile driver: RESULT ok"

if [ -f "$tmp/sbblk.rc" ]; then
    check_rc sbblk 1 "SeaBIOS: randrw+verify in irq mode: exit status 0"
    check sbblk '^KEEL-GUEST: RESULT status=ok test=blk .* verify_failures=0 .* mode=irq ' "SeaBIOS: randrw+verify RESULT ok"
    irqs=$(field sbblk irqs)
    [ "${irqs:-0}" -gt 0 ]
    ok $? "SeaBIOS: completions arrived by interrupt (irqs=$irqs)"
else
    n=$((n + 1))
    echo "ok $n # SKIP workload under SeaBIOS (set KEEL_GUEST_TEST_SLOW=1)"
fi

echo "1..$n"
[ $failed -eq 0 ]
