#!/bin/sh
# tests/bench-vmm.sh — keel-vmm next to QEMU on the same guest (`make bench`
# runs it as ./tests/bench-vmm).  Timings only; never part of make check.
#
# The test guest (vmm/guest/keel-guest) measures the I/O itself (TSC, its
# RESULT line) with its hot loop at CPL3, polling the used ring:
#   4 KiB random read and random write at iodepth 1 and 32, and 1 MiB
#   sequential read and write at iodepth 8, over 64 MiB of a preallocated
#   256 MiB raw image, BENCH_RUNTIME_MS (default 1000) per run, each run
#   BENCH_REPEAT times (default 3, keel-vmm and QEMU alternating) and the
#   median reported (the disks of CI machines are noisy),
# for each engine (aio=threads | native | io_uring, cache=none) with the
# drive in the main loop and in an -object iothread, in
#   keel-vmm -m 128 -kernel GUEST -drive file=IMG,format=raw,if=virtio,aio=A,cache=none[,iothread=io0]
#   qemu-system-x86_64 -enable-kvm -m 128 -kernel GUEST -drive file=IMG,format=raw,if=none,id=d0,
#       aio=A,cache=none -device virtio-blk-pci,drive=d0,disable-legacy=on[,iothread=io0]
# (QEMU boots with qboot when Debian's qemu-system-x86 ships it, else
# SeaBIOS; firmware does not change what the guest measures).
#
# Then, for both VMMs: resident memory besides guest RAM (from
# /proc/PID/smaps while the guest runs a workload: every mapping but the
# guest-RAM one) and the time from exec to the first byte on the serial
# console (QEMU with its default firmware, and with qboot).
#
# Environment: top_builddir, QEMU (binary), BENCH_RUNTIME_MS, BENCH_REPEAT, BENCH_ENGINES
# ("threads native io_uring"), BENCH_DIR (where the image goes; default
# TMPDIR — O_DIRECT must work there).
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${top_builddir:-}" ]; then
    if [ -x ./vmm/keel-vmm ]; then top_builddir=.; else top_builddir=$here/../build; fi
fi
top_builddir=$(cd "$top_builddir" && pwd)
# shellcheck source=tests/vmm-blk-lib.sh
. "$here/vmm-blk-lib.sh"

QEMU=${QEMU:-qemu-system-x86_64}
RT=${BENCH_RUNTIME_MS:-1000}
REPEAT=${BENCH_REPEAT:-3}
ENGINES=${BENCH_ENGINES:-threads native io_uring}
KEEL_VMM_TIMEOUT=120

if ! { [ -c /dev/kvm ] && (exec 3<>/dev/kvm); } 2>/dev/null; then
    echo "bench-vmm: skipped: cannot open /dev/kvm"
    exit 0
fi
if [ ! -x "$VMM" ] || [ ! -s "$GUEST" ]; then
    echo "bench-vmm: skipped: keel-vmm or the test guest is not built"
    exit 0
fi
have_qemu=yes
command -v "$QEMU" >/dev/null 2>&1 || have_qemu=no
QBOOT=
for f in /usr/share/qemu/qboot.rom /usr/share/seabios/qboot.rom; do
    [ -f "$f" ] && QBOOT="-bios $f" && break
done

TMP=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/keel-bench-vmm.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
if ! direct_io_ok "$TMP"; then
    echo "bench-vmm: skipped: O_DIRECT (cache=none) does not work in $TMP (set BENCH_DIR)"
    exit 0
fi
img=$TMP/bench.img
dd if=/dev/zero of="$img" bs=1M count=256 conv=fsync 2>/dev/null

echo "# keel-vmm: $("$VMM" --version)"
[ $have_qemu = yes ] && echo "# qemu: $("$QEMU" --version | head -n 1); firmware: ${QBOOT:-SeaBIOS}"
echo "# host: $(uname -r), $(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "# guest: keel-guest, -m 128, polling (mode=poll), ${RT} ms per run, median of $REPEAT, image on $(df -T "$TMP" | awk 'NR==2 {print $2}')"
"$VMM" --features | grep -E '^(kvm-ioeventfd|kvm-irqfd|block-engine|virtio-intx) ' | sed 's/^/# /'

# run_keel NAME ENGINE CTX APPEND / run_qemu NAME ENGINE CTX APPEND
run_keel() {
    iot='' obj=''
    if [ "$3" = iothread ]; then iot=",iothread=io0"; obj="-object iothread,id=io0"; fi
    # shellcheck disable=SC2086
    vmm_run "$1" -- "$VMM" -m 128 -kernel "$GUEST" $obj \
        -drive "file=$img,format=raw,if=virtio,aio=$2,cache=none$iot" -append "$4"
}
run_qemu() {
    iot='' obj=''
    if [ "$3" = iothread ]; then iot=",iothread=io0"; obj="-object iothread,id=io0"; fi
    # shellcheck disable=SC2086
    vmm_run "$1" -- "$QEMU" -enable-kvm $QBOOT -nodefaults -nographic -serial stdio -no-reboot \
        -device isa-debug-exit,iobase=0xf4 -m 128 -kernel "$GUEST" $obj \
        -drive "file=$img,format=raw,if=none,id=d0,aio=$2,cache=none" \
        -device "virtio-blk-pci,drive=d0,disable-legacy=on$iot" -append "$4"
}
value() {       # value NAME: IOPS, or MiB/s for 1 MiB runs, or "fail"
    if [ "$(result_field "$1" status)" != ok ]; then
        echo "fail"
    elif [ "$(result_field "$1" bs)" = 1048576 ]; then
        result_field "$1" mibps
    else
        result_field "$1" iops
    fi
}
median() {      # median VALUES...: the middle one ("fail" if any failed)
    case " $* " in *" fail "*) echo fail; return ;; esac
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
ratio() {
    a=$1 b=$2
    case "$a$b" in *fail*|*-*|'') echo "-"; return ;; esac
    awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}

echo
echo "| workload | engine | context | keel-vmm | QEMU | keel/QEMU |"
echo "|---|---|---|---:|---:|---:|"
for w in "randread 4096 1" "randread 4096 32" "randwrite 4096 1" "randwrite 4096 32" \
         "read 1048576 8" "write 1048576 8"; do
    set -- $w
    rw=$1 bs=$2 qd=$3
    label="$rw $(if [ "$bs" = 4096 ]; then echo 4k; else echo 1M; fi) qd$qd"
    for eng in $ENGINES; do
        for ctx in main iothread; do
            append="rw=$rw bs=$bs iodepth=$qd size=64M runtime=$RT"
            n=k-$rw-$bs-$qd-$eng-$ctx
            kvs='' qvs=''
            i=0
            while [ $i -lt "$REPEAT" ]; do
                run_keel "$n" "$eng" "$ctx" "$append"
                kvs="$kvs $(value "$n")"
                if [ $have_qemu = yes ]; then
                    run_qemu "q$n" "$eng" "$ctx" "$append"
                    qvs="$qvs $(value "q$n")"
                fi
                i=$((i + 1))
            done
            # shellcheck disable=SC2086
            kv=$(median $kvs)
            qv=-
            # shellcheck disable=SC2086
            [ $have_qemu = yes ] && qv=$(median $qvs)
            unit=
            [ "$bs" = 1048576 ] && unit=" MiB/s"
            echo "| $label | $eng | $ctx | $kv$unit | $qv$unit | $(ratio "$kv" "$qv") |"
        done
    done
done

# ---- memory and start-up -------------------------------------------------------------
# Resident memory outside the guest-RAM mapping, sampled mid-run.
rss_beyond_ram() {     # rss_beyond_ram PID: "other_kB guest_kB"
    awk -v ram=$((128 * 1024)) '
        /^[0-9a-f]+-[0-9a-f]+ / { guest = 0; next }
        /^Size:/ { guest = ($2 >= ram && $2 <= ram + 4096) }
        /^Rss:/ { if (guest) g += $2; else other += $2 }
        END { printf "%d %d\n", other, g }' "/proc/$1/smaps" 2>/dev/null
}
measure_rss() {        # measure_rss NAME CMD...: prints "other_kB guest_kB"
    name=$1
    shift
    "$@" </dev/null >"$TMP/$name.out" 2>"$TMP/$name.err" &
    pid=$!
    sleep 1.5
    # the VMM itself, not timeout(1) or a wrapper
    r=$(rss_beyond_ram $pid)
    wait $pid 2>/dev/null
    echo "$r"
}
first_byte_ms() {      # first_byte_ms CMD...: ms from exec to the first serial byte
    t0=$(date +%s%N)
    "$@" </dev/null 2>/dev/null | { dd bs=1 count=1 of=/dev/null 2>/dev/null; date +%s%N >"$TMP/t1"; cat >/dev/null; }
    echo $(( ($(cat "$TMP/t1") - t0) / 1000000 ))
}

append="rw=randread bs=4096 iodepth=32 size=64M runtime=3000"
k_rss=$(measure_rss rssk "$VMM" -m 128 -kernel "$GUEST" -object iothread,id=io0 \
    -drive "file=$img,format=raw,if=virtio,aio=io_uring,cache=none,iothread=io0" -append "$append")
k_boot=$(first_byte_ms "$VMM" -m 128 -kernel "$GUEST" -append "test=boot")
q_rss="- -" q_boot=- q_boot_qboot=-
if [ $have_qemu = yes ]; then
    q_rss=$(measure_rss rssq "$QEMU" -enable-kvm $QBOOT -nodefaults -nographic -serial stdio \
        -no-reboot -device isa-debug-exit,iobase=0xf4 -m 128 -kernel "$GUEST" \
        -object iothread,id=io0 -drive "file=$img,format=raw,if=none,id=d0,aio=io_uring,cache=none" \
        -device virtio-blk-pci,drive=d0,disable-legacy=on,iothread=io0 -append "$append")
    q_boot=$(first_byte_ms "$QEMU" -enable-kvm -nodefaults -nographic -serial stdio -no-reboot \
        -device isa-debug-exit,iobase=0xf4 -m 128 -kernel "$GUEST" -append "test=boot")
    if [ -n "$QBOOT" ]; then
        # shellcheck disable=SC2086
        q_boot_qboot=$(first_byte_ms "$QEMU" -enable-kvm $QBOOT -nodefaults -nographic -serial stdio \
            -no-reboot -device isa-debug-exit,iobase=0xf4 -m 128 -kernel "$GUEST" -append "test=boot")
    fi
fi
echo
echo "| measure | keel-vmm | QEMU |"
echo "|---|---:|---:|"
echo "| resident memory besides guest RAM (randread qd32, iothread, io_uring) | $(echo "$k_rss" | awk '{printf "%.1f MiB", $1 / 1024}') | $(echo "$q_rss" | awk '$1 != "-" {printf "%.1f MiB", $1 / 1024} $1 == "-" {print "-"}') |"
echo "| guest RAM resident at that point | $(echo "$k_rss" | awk '{printf "%.1f MiB", $2 / 1024}') | $(echo "$q_rss" | awk '$2 != "-" {printf "%.1f MiB", $2 / 1024} $2 == "-" {print "-"}') |"
echo "| exec → first serial byte (QEMU: default firmware) | $k_boot ms | $q_boot ms |"
[ -n "$QBOOT" ] && echo "| exec → first serial byte (QEMU: qboot) | $k_boot ms | $q_boot_qboot ms |"
exit 0
