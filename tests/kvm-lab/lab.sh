#!/bin/sh
# tests/kvm-lab/lab.sh: keel-vmm on real KVM, in a nested lab.
#
# This machine (and CI) has no usable /dev/kvm, so the lab makes one: for
# each Debian kernel it boots that kernel as an "L1" host under QEMU's
# software CPU with AMD SVM (-accel tcg -cpu max), loads kvm_amd there, and
# runs keel-vmm against that real KVM, with this machine's root shared
# read-only over 9p (under a tmpfs overlay) so the already-built tree runs
# as it is.  Inside L1 (tests/kvm-lab/inner.sh) it runs the steps chosen:
#   features  keel-features and keel-vmm --features on that kernel
#   vmmtests  keel's own KVM tests (make check TESTS=...) against it
#   suite     the rest of make check against it (library, other KVM tests)
#   linux     a Linux guest (the same Debian kernel) through PVH and bzImage
#             to an initramfs shell: a command on ttyS0, reboot -f → 0
#   blk       Linux's virtio_blk on our device: ext4 across a restart, fio
#             --verify at depth 32 over aio=threads|native|io_uring,
#             discard / write-zeroes, readonly=on, inject=write:EIO:once,
#             KEEL_AVOID fallbacks; the image checked from L1 afterwards
#   qemu      the linux and blk checks with QEMU -enable-kvm as the VMM
#   resize    QMP block_resize while Linux runs; the kernel sees the new
#             size (keel-vmm and QEMU)
#   boots     KVM_LAB_BOOTS (20) boots to the shell, PVH and bzImage
#   smp       -smp 2, a two-queue virtio-blk on two iothreads; fio numjobs=2
#   tsan      the SMP guest tests in a --enable-tsan tree (KVM_LAB_TSAN_BUILD,
#             default: top_builddir's sibling build-tsan)
#   bench     1 vs 2 queues, keel-vmm against QEMU, KVM_LAB_BENCH_REPS rounds,
#             the image on L1's tmpfs and on a disk file (L1's /dev/vda)
# Output is TAP: one line per check, prefixed with the kernel.
#
# Environment:
#   KERNELS          suites to run (default: bullseye bookworm trixie sid)
#   KVM_LAB_STEPS    steps (default: features vmmtests suite linux blk qemu)
#   KVM_LAB_CACHE    downloads + initramfs images (default BUILD/kvm-lab/cache)
#   KVM_LAB_OUT      results (default BUILD/kvm-lab/out); per kernel OUT/SUITE/
#                    holds the L1 console (l1-console.log), each guest run's
#                    console + VMM stderr, the features reports and the TAP
#   KVM_LAB_TIMEOUT  seconds per guest run inside L1 (default 300)
#   KVM_LAB_L1_TIMEOUT  seconds for one whole L1 run (default 3600)
#   KVM_LAB_L1_RETRIES  more runs of a kernel whose L1 died under TCG (2)
#   KVM_LAB_VMMTESTS the make check TESTS= list for vmmtests ("all": every
#                    test that needs no QEMU peer)
#   KVM_LAB_CPU      L1's -cpu (default max)
#   KVM_LAB_PEER_SUITE  the QEMU peer from that Debian suite instead of this
#                    machine's (fetch-qemu.sh; trixie has QEMU 10, with
#                    iothread-vq-mapping); or KVM_LAB_QEMU: the peer's path
#   top_builddir     the configured, built tree (default: .)
# Skips (exit 77) when qemu-system-x86_64 is missing or no kernel could be
# fetched; an L1 without /dev/kvm is a skip of that kernel, with the reason.
set -u
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
here=$srcdir/tests/kvm-lab
build=$(cd "${top_builddir:-.}" && pwd)
kernels=${KERNELS:-bullseye bookworm trixie sid}
steps=${KVM_LAB_STEPS:-features vmmtests suite linux blk qemu}
cache=${KVM_LAB_CACHE:-$build/kvm-lab/cache}
outroot=${KVM_LAB_OUT:-$build/kvm-lab/out}
l1_timeout=${KVM_LAB_L1_TIMEOUT:-3600}
l1_retries=${KVM_LAB_L1_RETRIES:-2}
cpu=${KVM_LAB_CPU:-max}

n=0 failed=0 ran=0
tap_line() {  # "ok - ..." / "not ok - ..." (TEXT may end in "# SKIP ...")
    n=$((n + 1))
    case $1 in
    "not ok"*) failed=1; echo "not ok $n ${1#not ok }" ;;
    *) echo "ok $n ${1#ok }" ;;
    esac
}
note() { echo "# $*"; }

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    echo "1..0 # SKIP qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
    exit 77
fi
[ -x "$build/vmm/keel-vmm" ] || { echo "1..0 # SKIP $build/vmm/keel-vmm not built"; exit 77; }
mkdir -p "$cache" "$outroot"
if [ -n "${KVM_LAB_PEER_SUITE:-}" ]; then
    if ! sh "$here/fetch-qemu.sh" "$KVM_LAB_PEER_SUITE" "$cache" 2>"$cache/fetch-qemu.err"; then
        echo "1..0 # SKIP no QEMU peer from $KVM_LAB_PEER_SUITE: $(tail -n 1 "$cache/fetch-qemu.err")"
        exit 77
    fi
    KVM_LAB_QEMU=$cache/qemu-$KVM_LAB_PEER_SUITE/qemu-system-x86_64
    export KVM_LAB_QEMU
fi
note "QEMU peer inside L1: ${KVM_LAB_QEMU:-qemu-system-x86_64} ($("${KVM_LAB_QEMU:-qemu-system-x86_64}" --version | head -n 1))"

qemu_pid=
trap '[ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null' EXIT
trap 'exit 1' INT TERM

for suite in $kernels; do
    t0=$(date +%s)
    if ! sh "$here/fetch-kernel.sh" "$suite" "$cache" 2>"$cache/fetch-$suite.err"; then
        tap_line "ok - $suite: L1 kernel # SKIP cannot fetch: $(tail -n 1 "$cache/fetch-$suite.err")"
        continue
    fi
    kdir=$cache/$suite
    kver=$(cat "$kdir/kernel-version")
    for kind in l1 l2 l2-fio; do
        if ! sh "$here/build-initramfs.sh" "$kind" "$suite" "$cache" 2>"$cache/initramfs-$suite.err"; then
            tap_line "not ok - $suite $kver: build the $kind initramfs: $(tail -n 1 "$cache/initramfs-$suite.err")"
            continue 2
        fi
    done
    note "$suite: kernel $kver fetched and initramfs built in $(( $(date +%s) - t0 )) s"

    # An L1 kernel that panics under TCG (seen twice on a loaded machine,
    # while an L2 VM ran: docs/kvm-lab.md) is the lab platform, not keel:
    # that L1 run is said and kept, and the kernel runs again (up to
    # KVM_LAB_L1_RETRIES more times, default 2).
    attempt=1
    while :; do
        out=$outroot/$suite
        rm -rf "$out"
        mkdir -p "$out"
        {
            # The lab's and keel's settings, as given here, reach L1.
            env | grep -E '^(KVM_LAB_|KEEL_)[A-Z0-9_]*=' |
                sed "s/'/'\\\\''/g; s/=/='/; s/\$/'/; s/^/export /"
            # tests/vmm-linux-test.sh's kernel cache, as on this machine (L1 has
            # no network).
            echo "export HOME='${HOME:-/root}' KEEL_CACHE='${KEEL_CACHE:-${HOME:-/root}/.cache/keel}'"
            echo "exec sh '$out/inner.sh' '$build' '$kdir' '$out' '$steps' >'$out/inner.log' 2>&1"
        } >"$out/job.sh"
        # A copy: sh reads a script as it runs it, so editing the tree's copy
        # during a run would change what L1 runs.
        cp "$here/inner.sh" "$out/inner.sh"
        # The bench step's disk: a raw file on this machine's disk, L1's
        # /dev/vda (cache=none: the host's page cache is not the disk).
        l1_disk=
        case " $steps " in
        *" bench "*)
            truncate -s 1G "$out/bench-disk.img" &&
                l1_disk="-drive file=$out/bench-disk.img,format=raw,if=virtio,cache=none,aio=native"
            ;;
        esac
        console=$out/l1-console.log
        t1=$(date +%s)
        nice -n 5 qemu-system-x86_64 -accel tcg,thread=multi -cpu "$cpu" -smp 2 -m 4G \
            -nodefaults -nographic -no-reboot -serial "file:$console" -monitor none \
            -kernel "$kdir/vmlinuz" -initrd "$kdir/l1.cpio" \
            -append "console=ttyS0 panic=-1 quiet keellab.out=$out" \
            -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
            -virtfs "local,path=$out,mount_tag=results,security_model=none,multidevs=remap" \
            $l1_disk </dev/null >"$out/qemu.log" 2>&1 &
        qemu_pid=$!
        # Elapsed time, not a count of polls; on a hang say where it hung.
        deadline=$((t1 + l1_timeout))
        while kill -0 "$qemu_pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
            sleep 2
        done
        if kill -0 "$qemu_pid" 2>/dev/null; then
            kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null
            hung=yes
        else
            wait "$qemu_pid"
            hung=no
        fi
        qemu_pid=
        rm -f "$out/bench-disk.img"
        took=$(( $(date +%s) - t1 ))
        # No job status and no hang: L1 itself died (l1-init writes the
        # status whatever the job did), by a panic or, silently, by a reset
        # (a triple fault ends QEMU under -no-reboot): the platform's fault
        # (docs/kvm-lab.md), so that kernel runs again.
        if [ $hung = no ] && [ ! -f "$out/job.rc" ] && [ $attempt -le "$l1_retries" ] &&
           grep -q 'keel-lab-l1: up' "$console"; then
            cp "$console" "$outroot/$suite-l1-panic-$attempt.log"
            why=$(grep -m 1 -o "Kernel panic.*" "$console" | tr -d '\r')
            if [ -n "$why" ]; then
                what="panicked under TCG after ${took}s ($why)"
            else
                what="reset without a message (a triple fault under TCG) after ${took}s"
            fi
            note "$suite: the L1 kernel $what; L1 console kept in $outroot/$suite-l1-panic-$attempt.log; running this kernel again"
            attempt=$((attempt + 1))
            continue
        fi
        break
    done

    if ! grep -q 'keel-lab-l1: up' "$console"; then
        tap_line "not ok - $suite $kver: L1 booted to its /init (${took}s)"
        note "L1 console tail:"; tail -n 20 "$console" | sed 's/^/#   /'
        note "qemu:"; tail -n 5 "$out/qemu.log" | sed 's/^/#   /'
        continue
    fi
    tap_line "ok - $suite $kver: L1 booted to its /init under TCG -cpu $cpu"
    if ! grep -q 'keel-lab-l1: /dev/kvm present' "$console"; then
        tap_line "ok - $suite $kver: L1 /dev/kvm # SKIP L1 shows no /dev/kvm: $(grep -m 3 -iE 'kvm|svm' "$console" | tr '\n' ' ')"
        continue
    fi
    tap_line "ok - $suite $kver: kvm_amd loaded, /dev/kvm present ($(grep -m 1 -o 'Nested Paging enabled' "$console" || echo 'no NPT message'))"
    ran=1
    if [ -s "$out/tap" ]; then
        while read -r line; do
            tap_line "$(echo "$line" | sed "s/^\(not ok\|ok\) - /\1 - $suite $kver: /")"
        done <"$out/tap"
    fi
    grep '^keel-lab: ' "$out/inner.log" 2>/dev/null | sed 's/^/# /'
    if [ $hung = yes ]; then
        tap_line "not ok - $suite $kver: L1 run finished within ${l1_timeout}s (HANG)"
        note "L1 console tail:"; tail -n 30 "$console" | sed 's/^/#   /'
        last=$(ls -td "$out"/run-* 2>/dev/null | head -n 1)
        if [ -n "$last" ]; then
            note "last guest run ($last) console tail:"; tail -n 25 "$last/out" | sed 's/^/#   /'
            note "its VMM stderr:"; tail -n 25 "$last/err" | sed 's/^/#   /'
        fi
    else
        rc=$(cat "$out/job.rc" 2>/dev/null)
        tap_line "$([ "$rc" = 0 ] && echo ok || echo not ok) - $suite $kver: the L1 job ended (status ${rc:-none}, ${took}s)"
    fi
    note "$suite: L1 run took ${took}s"
done

echo "1..$n"
if [ $ran = 0 ] && [ $failed = 0 ]; then
    exit 77
fi
exit $failed
