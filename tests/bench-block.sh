#!/bin/sh
# Block benchmark (make bench): keel-img bench beside qemu-img bench and fio,
# on the same preallocated file in the same run, for each engine at queue
# depths 1 and 32: sequential 4 KiB reads with O_DIRECT (-t none).
#   keel-img bench -t none -i ENGINE -d DEPTH -c COUNT
#   qemu-img bench -f raw -t none -i ENGINE -d DEPTH -c COUNT
#   fio --direct=1 --rw=read --bs=4k --ioengine=io_uring|libaio|posixaio --iodepth=DEPTH
#       --iodepth_batch_submit=DEPTH --iodepth_batch_complete_max=DEPTH
# (fio's posixaio is glibc's thread-based POSIX AIO: the closest peer of a
# thread-pool engine.  The batch options are fio at its best: without them
# it makes one system call per request, which on a nested-virtualisation
# host costs it half its IOPS at depth 32.)  Each figure is the best of KEEL_BENCH_REPEAT runs
# (default 2), interleaved so that drift hits every tool alike.  Peers that
# are not installed are left out.  Environment: KEEL_BENCH_DIR (where the
# 256 MiB test file goes; needs O_DIRECT), KEEL_BENCH_QUICK=1 (fewer
# requests), KEEL_BENCH_RW=write (writes instead of reads).
set -u
builddir=${top_builddir:-$(pwd)}
img="$builddir/keel-img"
repeat=${KEEL_BENCH_REPEAT:-2}
rw=${KEEL_BENCH_RW:-read}
size_mb=256
if test "${KEEL_BENCH_QUICK:-0}" = 1; then count1=4000; count32=20000; else count1=15000; count32=80000; fi

test -x "$img" || { echo "bench-block: $img not built" >&2; exit 1; }
qemu_img=$(command -v qemu-img || true)
fio=$(command -v fio || true)

dir=
for d in "${KEEL_BENCH_DIR:-}" "$builddir" /var/tmp; do
    test -n "$d" && test -w "$d" || continue
    if dd if=/dev/zero of="$d/keel-bench-probe.$$" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
        dir=$d; rm -f "$d/keel-bench-probe.$$"; break
    fi
    rm -f "$d/keel-bench-probe.$$"
done
test -n "$dir" || { echo "bench-block: no directory supports O_DIRECT (set KEEL_BENCH_DIR); skipped"; exit 0; }
file="$dir/keel-bench.$$.img"
trap 'rm -f "$file" "$file.out"' EXIT INT TERM
# Written, not sparse: reading holes would measure nothing.
dd if=/dev/zero of="$file" bs=1M count=$size_mb conv=fsync status=none

echo "machine: $(uname -srm), $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
echo "file: $file ($size_mb MiB, $(stat -f -c %T "$dir") on $(df -P "$dir" | awk 'NR==2 {print $1}'))"
qv=absent; test -n "$qemu_img" && qv=$("$qemu_img" --version | head -1 | awk '{print $3}')
fv=absent; test -n "$fio" && fv=$("$fio" --version)
echo "versions: keel-img $("$img" --version | awk '{print $2}'), qemu-img $qv, $fv"
echo "workload: sequential 4 KiB ${rw}s, O_DIRECT, best of $repeat; requests: $count1 at depth 1, $count32 at depth 32"
echo

wflag=
test "$rw" = write && wflag=-w

# run_keel ENGINE DEPTH COUNT -> IOPS
run_keel() {
    "$img" bench -q -t none -i "$1" -d "$2" -c "$3" $wflag "$file" 2> "$file.out" |
        sed -n 's/^IOPS: \([0-9]*\),.*engine: \(.*\)$/\1 \2/p'
}
run_qemu() {
    test -n "$qemu_img" || return 0
    "$qemu_img" bench -q -f raw -t none -i "$1" -d "$2" -c "$3" $wflag "$file" 2> "$file.out" |
        awk -v c="$3" '/^Run completed in/ { printf "%d\n", c / $4 }'
}
run_fio() {
    test -n "$fio" || return 0
    case $1 in io_uring) e=io_uring ;; native) e=libaio ;; threads) e=posixaio ;; esac
    # terse v3: field 8 = read IOPS, field 49 = write IOPS
    field=8; test "$rw" = write && field=49
    "$fio" --name=keel --filename="$file" --direct=1 --rw="$rw" --bs=4k --ioengine="$e" \
        --iodepth="$2" --iodepth_batch_submit="$2" --iodepth_batch_complete_max="$2" \
        --number_ios="$3" --size=${size_mb}M --thread --minimal \
        --output-format=terse 2> "$file.out" | awk -F';' -v f=$field '{ printf "%d\n", $f }'
}
best() { # best OLD NEW
    if test -z "$1"; then echo "$2"; elif test -z "$2"; then echo "$1";
    elif test "$2" -gt "$1"; then echo "$2"; else echo "$1"; fi
}
ratio() {
    if test -n "$1" && test -n "$2" && test "$2" -gt 0; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else echo "-"; fi
}

printf '%-9s %5s %-10s %12s %12s %12s %10s %10s\n' engine depth keel-engine keel-img qemu-img fio keel/qemu keel/fio
for engine in io_uring native threads; do
    for depth in 1 32; do
        count=$count1; test "$depth" = 32 && count=$count32
        k=; q=; f=; used=
        i=0
        while test $i -lt "$repeat"; do
            out=$(run_keel $engine $depth $count)
            used=${out#* }
            k=$(best "$k" "${out%% *}")
            q=$(best "$q" "$(run_qemu $engine $depth $count)")
            f=$(best "$f" "$(run_fio $engine $depth $count)")
            i=$((i + 1))
        done
        printf '%-9s %5s %-10s %12s %12s %12s %10s %10s\n' $engine $depth "${used:--}" "${k:--}" \
            "${q:--}" "${f:--}" "$(ratio "$k" "$q")" "$(ratio "$k" "$f")"
    done
done
echo "(IOPS; keel-engine is the engine keel-img reported using)"
