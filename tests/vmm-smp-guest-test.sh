#!/bin/sh
# The test guest on several vCPUs and queues under keel-vmm (issue 14).
#
#   boot  -smp 2 and 4, test=boot: every AP comes up ("KEEL-GUEST: cpu N
#         up"), runs work at CPL3 after the wake-up IPI, RESULT ok cpus=N.
#   blk   -smp S, virtio-blk-pci num-queues=Q over I iothreads, aio=E,
#         with or without KEEL_AVOID=ioeventfd,irqfd, the guest polling or
#         sleeping on its queues' MSI-X vectors (mode=poll|irq; each
#         queue's vector targets the CPU that uses it, and in irq mode
#         every vector must have fired): test=blk rw=randrw verify=1 from
#         every CPU at once (each on its own part of the
#         disk, on queue cpu % Q; without MQ all share queue 0), every
#         block written read back by its writer and again by another CPU
#         through that CPU's queue.  Checked: RESULT ok, RESULT-SMP cpus=S
#         queues=Q, a "queue q: R reads, W writes verified" line with R > 0
#         and W > 0 for every queue, written_verified = written_blocks =
#         cross_verified, and from the host every block of the image is
#         either zero or one generation of the guest's pattern, as many as
#         the guest says it wrote.
#         Q iothreads: one is the keyval iothread=io0; two are QEMU 9's
#         -device JSON with "iothread-vq-mapping" (queues round-robin).
#
# The default matrix is small (lab runs are slow: everything in L1 is
# emulated); KEEL_SMP_TEST_FULL=1 runs -smp 2..4 x num-queues 1..4 x
# iothreads 1..2 x aio threads|native|io_uring x default|avoid x poll|irq.  A case
# whose command line keel-vmm refuses (a keel-vmm without multiqueue says
# "keel-vmm has one queue per device for now"; one without the JSON
# -device form names that) is a TAP skip with keel-vmm's reason.
#
# Peers: keel-vmm (needs /dev/kvm).  Where keel-vmm cannot run, or with
# KEEL_SMP_TEST_QEMU=1, QEMU runs the same guest cases (QEMU_ACCEL, default
# TCG; qboot when installed) so the guest's SMP and multiqueue paths are
# checked on any host; QEMU has no KEEL_AVOID, so it runs the default
# path only, and QEMU before 9.0 refuses iothread-vq-mapping (a skip).
# Exit 77 when neither can run.  aio=native cases need O_DIRECT in TMPDIR
# and are skipped by name without it.
: "${top_builddir:=.}"
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vmm-blk-lib.sh
. "$here/vmm-blk-lib.sh"

vmm_test_require_guest
: "${KEEL_VMM_TIMEOUT:=300}"
QEMU=${QEMU:-qemu-system-x86_64}
peers=
if { [ -c /dev/kvm ] && (exec 3<>/dev/kvm); } 2>/dev/null && [ -x "$VMM" ]; then
    peers=keel-vmm
fi
if command -v "$QEMU" >/dev/null 2>&1 && { [ -z "$peers" ] || [ -n "${KEEL_SMP_TEST_QEMU:-}" ]; }; then
    peers="$peers qemu"
fi
[ -n "$peers" ] || skip_all "neither /dev/kvm (for keel-vmm) nor $QEMU"
: "${QEMU_ACCEL:=-accel tcg}"
QBOOT=$(qboot_option)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keel-vmm-smp.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM
n=0
failed=0
ok() {          # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
show() {        # a failed run's output as TAP comments
    echo "#   --- $1: exit $(vmm_rc "$1"), output:"
    tr -d '\r' <"$TMP/$1.out" | grep -v '^KEEL-GUEST: mmap' | tail -n 30 | sed 's/^/#   | /'
    tail -n 15 "$TMP/$1.err" | sed 's/^/#   ! /'
}
out() { tr -d '\r' <"$TMP/$1.out"; }
gt0() { [ "${1:-0}" -gt 0 ] 2>/dev/null; }
# Did keel-vmm refuse the command line (status 1, no guest output)?  Then
# the reason is its first "keel-vmm:" error line.
refused() {
    [ "$(vmm_rc "$1")" = 1 ] && ! grep -q 'KEEL-GUEST' "$TMP/$1.out"
}
refusal() { grep -m1 -i 'keel-vmm\|qemu' "$TMP/$1.err" | cut -c1-200; }

# run PEER NAME ENV SMP APPEND [VMM-ARGS...]: the guest, output in $TMP/NAME.*
run() {
    _peer=$1 _name=$2 _env=$3 _smp=$4 _append=$5
    shift 5
    if [ "$_peer" = keel-vmm ]; then
        # shellcheck disable=SC2086  # $_env: zero or one word
        vmm_run "$_name" $_env -- "$VMM" -smp "$_smp" -m 128 -kernel "$GUEST" \
            -append "$_append" "$@"
    else
        # shellcheck disable=SC2086  # word lists
        timeout "$KEEL_VMM_TIMEOUT" "$QEMU" $QEMU_ACCEL $QBOOT -nodefaults -nographic \
            -serial stdio -no-reboot -device isa-debug-exit,iobase=0xf4 -smp "$_smp" \
            -m 128 -kernel "$GUEST" -append "$_append" "$@" \
            </dev/null >"$TMP/$_name.out" 2>"$TMP/$_name.err"
        echo $? >"$TMP/$_name.rc"
    fi
}

if direct_io_ok "$TMP"; then CACHE=none; else CACHE=writeback; fi

# ---- boot: the APs come up -----------------------------------------------------------
boot_case() {   # boot_case PEER SMP
    name=$1-boot-$2
    run "$1" "$name" "" "$2" "test=boot"
    if refused "$name"; then
        skip "$1 -smp $2: refused: $(refusal "$name")"
        return
    fi
    st=0
    out "$name" | grep -q "^KEEL-GUEST: RESULT status=ok test=boot .*cpus=$2 smp=ok" || st=1
    ok $st "$1 -smp $2 test=boot: RESULT ok with cpus=$2 smp=ok (every CPU ran work at CPL3)"
    up=$(out "$name" | grep -c '^KEEL-GUEST: cpu [0-9]* up apic_id=')
    ok "$([ "$up" = $(($2 - 1)) ]; echo $?)" "$1 -smp $2: $up of $(($2 - 1)) APs said 'cpu N up'"
    if [ $st -ne 0 ] || [ "$up" != $(($2 - 1)) ]; then show "$name"; fi
    out "$name" | grep '^KEEL-GUEST: smp cpus' | sed 's/^/# /'
}

# ---- blk: verified I/O from every CPU on every queue -------------------------------------
# blk_case PEER SMP QUEUES IOTHREADS AIO PATH(default|avoid) MODE(poll|irq)
blk_case() {
    peer=$1 smp=$2 nq=$3 nio=$4 aio=$5 path=$6 mode=$7
    [ "$peer" = qemu ] && [ "$path" = avoid ] && return    # no KEEL_AVOID in QEMU
    name=$peer-blk-s$smp-q$nq-i$nio-$aio-$path-$mode
    desc="$peer -smp $smp num-queues=$nq iothreads=$nio aio=$aio mode=$mode"
    [ "$path" = avoid ] && desc="$desc KEEL_AVOID=ioeventfd,irqfd"
    if [ "$aio" = native ] && [ "$CACHE" != none ]; then
        skip "$desc: aio=native needs O_DIRECT, which ${TMPDIR:-/tmp} refuses"
        return
    fi
    img=$TMP/$name.img
    rm -f "$TMP"/*.img
    truncate -s 8M "$img" || exit 1
    env=
    [ "$path" = avoid ] && env="KEEL_AVOID=ioeventfd,irqfd"
    objs="-object iothread,id=io0"
    if [ "$nio" = 1 ]; then
        dev="virtio-blk-pci,drive=d0,num-queues=$nq,iothread=io0"
    else
        objs="$objs -object iothread,id=io1"
        dev="{\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\",\"num-queues\":$nq,\"iothread-vq-mapping\":[{\"iothread\":\"io0\"},{\"iothread\":\"io1\"}]}"
    fi
    # shellcheck disable=SC2086  # $objs is a word list
    run "$peer" "$name" "$env" "$smp" "test=blk rw=randrw verify=1 iodepth=4 size=4m seed=5 mode=$mode" \
        $objs -drive "file=$img,format=raw,if=none,id=d0,aio=$aio,cache=$CACHE" \
        -device "$dev"
    if refused "$name"; then
        skip "$desc: refused: $(refusal "$name")"
        return
    fi
    st=$(result_field "$name" status)
    cpus=$(out "$name" | sed -n 's/^KEEL-GUEST: RESULT-SMP cpus=\([0-9]*\).*/\1/p')
    queues=$(out "$name" | sed -n 's/^KEEL-GUEST: RESULT-SMP .*queues=\([0-9]*\).*/\1/p')
    cross=$(out "$name" | sed -n 's/^KEEL-GUEST: RESULT-SMP .*cross_verified=\([0-9]*\).*/\1/p')
    wb=$(result_field "$name" written_blocks)
    wv=$(result_field "$name" written_verified)
    good=0
    [ "$st" = ok ] && [ "$(vmm_rc "$name")" = 1 ] || good=1
    ok $good "$desc: test=blk randrw verify=1 from every CPU passes (exit $(vmm_rc "$name"))"
    ok "$([ "$cpus" = "$smp" ] && [ "$queues" = "$nq" ]; echo $?)" \
        "$desc: the guest ran on $cpus CPUs over $queues queues"
    busy=0 irqs=0
    for q in $(seq 0 $((nq - 1))); do
        line=$(out "$name" | grep "^KEEL-GUEST: queue $q: [0-9]")
        r=$(echo "$line" | sed -n 's/.*: \([0-9]*\) reads, \([0-9]*\) writes verified.*/\1/p')
        w=$(echo "$line" | sed -n 's/.*: \([0-9]*\) reads, \([0-9]*\) writes verified.*/\2/p')
        i=$(echo "$line" | sed -n 's/.* msix_irqs=\([0-9]*\).*/\1/p')
        if gt0 "$r" && gt0 "$w"; then
            busy=$((busy + 1))
        fi
        if gt0 "$i"; then
            irqs=$((irqs + 1))
        fi
    done
    ok "$([ "$busy" = "$nq" ]; echo $?)" "$desc: $busy of $nq queues carried verified reads and writes"
    if [ "$mode" = irq ]; then
        # Each queue's MSI-X vector goes to the CPU that uses it; each
        # must have interrupted (a CPU sleeps until its queue's does).
        ok "$([ "$irqs" = "$nq" ]; echo $?)" "$desc: $irqs of $nq queues' MSI-X vectors interrupted the guest"
    fi
    ok "$([ -n "$wb" ] && [ "$wb" -gt 0 ] && [ "$wb" = "$wv" ] && [ "$wb" = "$cross" ]; echo $?)" \
        "$desc: all $wb written blocks read back intact by their writer ($wv) and another CPU ($cross)"
    # shellcheck disable=SC2046
    set -- $(scan_image "$img" 4096 5 1)
    ok "$([ "${3:-1}" -eq 0 ] && [ "${1:-0}" = "$wb" ]; echo $?)" \
        "$desc: from the host, $1 blocks hold the pattern (guest: $wb), ${3:-?} hold neither it nor zeroes"
    if [ $good -ne 0 ] || [ "$busy" != "$nq" ]; then show "$name"; fi
    out "$name" | grep -E '^KEEL-GUEST: (queue|smp cpus)' | sed 's/^/# /'
}

for peer in $peers; do
    boot_case "$peer" 2
    boot_case "$peer" 4
    if [ -n "${KEEL_SMP_TEST_FULL:-}" ]; then
        for smp in 2 3 4; do
            for nq in 1 2 3 4; do
                for nio in 1 2; do
                    [ "$nio" = 2 ] && [ "$nq" = 1 ] && continue    # nothing for io1 to do
                    for aio in threads native io_uring; do
                        for path in default avoid; do
                            for mode in poll irq; do
                                blk_case "$peer" "$smp" "$nq" "$nio" "$aio" "$path" "$mode"
                            done
                        done
                    done
                done
            done
        done
    else
        blk_case "$peer" 2 1 1 threads default poll
        blk_case "$peer" 4 1 1 io_uring avoid irq
        blk_case "$peer" 2 2 1 native default irq
        blk_case "$peer" 4 4 2 io_uring default poll
        blk_case "$peer" 3 2 2 threads avoid irq
        blk_case "$peer" 3 1 1 native default irq
        if [ "$peer" = qemu ]; then
            blk_case qemu 4 4 1 io_uring default irq
        fi
    fi
done

echo "1..$n"
[ "$failed" -eq 0 ]
