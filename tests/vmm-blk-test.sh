#!/bin/sh
# tests/vmm-blk-test.sh — virtio-blk in keel-vmm, end to end, with the test
# guest (vmm/guest/keel-guest) as the driver.  TAP.
#
# The matrix: engine (aio=threads | native | io_uring) × notification path
# (default: KVM ioeventfd + irqfd; KEEL_AVOID=ioeventfd,irqfd: the vCPU exit
# handler sets the queue notifier and INTx goes through KVM_IRQ_LINE) × the
# drive's context (main loop | -object iothread).  Each run writes 1 MiB
# with the guest's pattern (rw=write, verify=1, flush=1, interrupts on:
# mode=irq), reads it back in the guest, and then this script checks the
# image from the host: the pattern where the guest wrote, zeroes elsewhere.
# Each run also checks that the start-up line and the device counters
# (KEEL_VMM_STATS=1) show the expected paths: no exit-handler kicks with
# ioeventfd, interrupts through the irqfd or the ioctl as forced.
#
# Then: GET_ID (serial=), discard + write-zeroes with 200 requests in flight
# (indirect descriptors), injected write and read errors (-drive inject=,
# block/blkdebug.h) reaching the guest as IOERR while every other request
# succeeds, a read-only drive refusing writes, malformed descriptor chains
# (test=badchain) refused without a crash in both contexts, two drives,
# the old-kernel presets (tests/keel-oldkernel) running the workload on the
# fallback paths they force, and bad -drive options.
#
# Skips (77) without a usable /dev/kvm.  Aio=native needs O_DIRECT in
# TMPDIR; without it those cases are skipped by name.
: "${top_builddir:=.}"
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/vmm-blk-lib.sh
. "$here/vmm-blk-lib.sh"

vmm_test_require

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keel-vmm-blk.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM

skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
show() {        # show NAME: a failed run's output as TAP comments
    echo "#   --- $1: exit $(vmm_rc "$1"), output:"
    tr -d '\r' <"$TMP/$1.out" | grep -v '^KEEL-GUEST: mmap' | tail -n 25 | sed 's/^/#   | /'
    tail -n 15 "$TMP/$1.err" | sed 's/^/#   ! /'
}
has_out() { tr -d '\r' <"$TMP/$1.out" | grep -E -q "$2"; }
has_err() { grep -E -q "$2" "$TMP/$1.err"; }
check() {       # check STATUS NAME DESCRIPTION
    ok "$1" "$3"
    [ "$1" -eq 0 ] || show "$2"
}
is() { [ "$1" = "$2" ]; }
gt0() { [ "${1:-0}" -gt 0 ] 2>/dev/null; }

G="-m 64 -kernel $GUEST"

# ---- what this machine offers ----------------------------------------------
features=$("$VMM" --features 2>&1)
echo "$features" | sed 's/^/# /'
have() { echo "$features" | grep -q "^$1 active=$2 "; }
have kvm-ioeventfd ioeventfd && ioeventfd=yes || ioeventfd=no
have kvm-irqfd irqfd && irqfd=yes || irqfd=no
have virtio-intx irqfd-resample && resample=yes || resample=no
if direct_io_ok "$TMP"; then CACHE=none; else CACHE=writeback; fi
echo "# ioeventfd=$ioeventfd irqfd=$irqfd resample=$resample cache=$CACHE"

# Engines this build has (a --disable-linux-aio build runs aio=native on the
# thread pool, and says so).
compiled_engines=$(echo "$features" | sed -n 's/^block-engine .*compiled=\([^ ]*\).*/\1/p')
built() { case ",$compiled_engines," in *",$1,"*) return 0 ;; esac; return 1; }
engine_name() {    # the engine keel-vmm should report for aio=$1
    case $1 in
    threads) echo threads ;;
    native) built linux-aio && echo linux-aio || echo threads ;;
    io_uring) have block-engine io_uring && echo io_uring || echo '(io_uring|linux-aio|threads)' ;;
    esac
}

# ---- the matrix ------------------------------------------------------------------
k=0
for eng in threads native io_uring; do
    for path in default avoid; do
        for where in main iothread; do
            k=$((k + 1))
            name=m-$eng-$path-$where
            desc="$eng/$path/$where"
            if [ "$eng" = native ] && [ "$CACHE" != none ]; then
                skip "$desc: aio=native needs O_DIRECT, which ${TMPDIR:-/tmp} refuses"
                continue
            fi
            img=$TMP/$name.img
            truncate -s 8M "$img"
            seed=$((k * 3)) gen=$((k + 1))
            env=
            [ "$path" = avoid ] && env="KEEL_AVOID=ioeventfd,irqfd"
            iot=
            obj=
            if [ "$where" = iothread ]; then
                iot=",iothread=io0"
                obj="-object iothread,id=io0"
            fi
            serial=
            [ $k -eq 1 ] && serial=",serial=keel-test-disk"
            # shellcheck disable=SC2086
            vmm_run "$name" $env -- "$VMM" $G $obj \
                -drive "file=$img,format=raw,if=virtio,aio=$eng,cache=$CACHE$iot$serial" \
                -append "rw=write bs=4096 iodepth=16 offset=1M size=1M verify=1 flush=1 seed=$seed gen=$gen mode=irq"

            r=0
            is "$(vmm_rc "$name")" 1 || r=1
            is "$(result_field "$name" status)" ok || r=1
            is "$(result_field "$name" ops)" 256 || r=1
            is "$(result_field "$name" verified_blocks)" 256 || r=1
            check $r "$name" "$desc: write+flush+verify of 1 MiB passes in the guest (exit 1, 256 blocks read back)"
            if [ "$(result_field "$name" irq_waits)" = 0 ]; then
                skip "$desc: the guest never had to wait for an interrupt (the device stayed ahead)"
            else
                gt0 "$(result_field "$name" irqs)"
                check $? "$name" "$desc: completions arrived by interrupt (irqs=$(result_field "$name" irqs), waits=$(result_field "$name" irq_waits))"
            fi

            check_pattern "$img" 1048576 1048576 $gen $seed && check_zero "$img" 0 1048576 &&
                check_zero "$img" 2097152 6291456
            check $? "$name" "$desc: the image holds exactly what the guest wrote (checked from the host)"

            want_engine=$(engine_name $eng)
            if [ "$where" = iothread ]; then ctxre="iothread=io0"; else ctxre="main-loop"; fi
            has_err "$name" "virtio-blk0 .* engine=$want_engine cache=$CACHE $ctxre "
            check $? "$name" "$desc: start-up line names engine $want_engine and $ctxre"

            if [ "$path" = avoid ]; then
                has_err "$name" "virtio-blk0 .* notify=exit-handler intx=irq-line " &&
                    gt0 "$(stats_field "$name" exit_kicks)" &&
                    gt0 "$(stats_field "$name" intx_ioctl)" &&
                    is "$(stats_field "$name" intx_irqfd)" 0
                check $? "$name" "$desc: kicks through the exit handler ($(stats_field "$name" exit_kicks)), INTx through KVM_IRQ_LINE ($(stats_field "$name" intx_ioctl))"
            else
                r=0
                if [ $ioeventfd = yes ]; then
                    has_err "$name" "notify=ioeventfd " && is "$(stats_field "$name" exit_kicks)" 0 || r=1
                fi
                if [ $irqfd = yes ] && [ $resample = yes ]; then
                    has_err "$name" "intx=irqfd-resample " && gt0 "$(stats_field "$name" intx_irqfd)" || r=1
                fi
                check $r "$name" "$desc: kicks by ioeventfd=$ioeventfd (exit-handler kicks: $(stats_field "$name" exit_kicks)), INTx by irqfd=$irqfd/resample=$resample"
            fi
        done
    done
done
has_out m-threads-default-main "^KEEL-GUEST: blk id status=0 serial='keel-test-disk'"
check $? m-threads-default-main "GET_ID returns the drive's serial="

# ---- discard, write-zeroes, indirect descriptors, iothread ----------------------
truncate -s 8M "$TMP/dz.img"
vmm_run dz -- "$VMM" $G -object iothread,id=io0 \
    -drive "file=$TMP/dz.img,format=raw,if=virtio,aio=io_uring,cache=$CACHE,iothread=io0" \
    -append "rw=write bs=64k iodepth=200 size=4M verify=1 discard=1 write_zeroes=1"
r=0
is "$(vmm_rc dz)" 1 || r=1
has_out dz '^KEEL-GUEST: blk .*slots=200 \(indirect\).* discard write-zeroes' || r=1
has_out dz '^KEEL-GUEST: verify pass \(zeroes\): 64 blocks read back, 0 bad' || r=1
has_out dz '^KEEL-GUEST: RESULT status=ok test=blk ops=64 .* verify_failures=0 ' || r=1
check $r dz "200 requests in flight through indirect tables; discard and write-zeroes (reads back zeroes)"
check_pattern "$TMP/dz.img" 0 4194304 1 1
check $? dz "the image holds the 64 KiB writes"
gt0 "$(stats_field dz max_batch)" && [ "$(stats_field dz max_batch)" -gt 1 ]
check $? dz "requests popped in one pass are submitted as one batch (max batch $(stats_field dz max_batch))"

# ---- guest RAM backends: virtio-blk DMA into a memfd and into anonymous RAM -------
# An explicit memory-backend-memfd cannot fall back (it asks for shareable
# memory): where memfd_create is refused (an old kernel: the guest-ram
# features line gives an errno as the reason) or avoided, keel-vmm must
# fail, naming why; only the default falls back to anonymous memory.
memfd_refused=
"$VMM" --features 2>/dev/null | grep -Eq '^guest-ram .*reason=E[A-Z]+' && memfd_refused=yes
for be in memfd ram avoid avoid-default; do
    name=ram-$be
    truncate -s 4M "$TMP/$name.img"
    env=
    case $be in
    memfd) mem="-object memory-backend-memfd,id=m0 -machine memory-backend=m0" want=memfd
           test -n "$memfd_refused" && want=refused ;;
    ram) mem="-object memory-backend-ram,id=m0 -machine memory-backend=m0" want=anonymous ;;
    avoid) mem="-object memory-backend-memfd,id=m0 -machine memory-backend=m0" want=refused
           env=KEEL_AVOID=memfd ;;
    avoid-default) mem= want=anonymous env=KEEL_AVOID=memfd ;;
    esac
    # shellcheck disable=SC2086
    vmm_run $name $env -- "$VMM" $G $mem \
        -drive "file=$TMP/$name.img,format=raw,if=virtio,aio=threads,cache=$CACHE" \
        -append "rw=write bs=64k iodepth=8 size=2M verify=1 seed=6"
    r=0
    if [ $want = refused ]; then
        is "$(vmm_rc $name)" 1 || r=1
        has_err $name "memory-backend-memfd: memfd_create is not available" || r=1
        test -z "$(result_field $name status)" || r=1
        check $r $name "guest RAM $be${env:+ ($env)}: explicit memory-backend-memfd without memfd fails, naming why"
        continue
    fi
    is "$(vmm_rc $name)" 1 || r=1
    is "$(result_field $name status)" ok || r=1
    has_err $name " ram=$want(\+thp)? " || r=1
    check_pattern "$TMP/$name.img" 0 2097152 1 6 || r=1
    check $r $name "guest RAM $be${env:+ ($env)}: start-up line says ram=$want; 64 KiB writes verify in the guest and on the image"
done

# ---- -object iothread,poll-max-ns= reaches the iothread's context -----------------
# A 100 ms window outlasts every request, so the iothread finds new requests
# by busy-polling the ring; with 0 it never polls.  (2 ms was not enough
# under nested emulation: in the KVM lab, poll_hits stayed 0.)
for pmax in 100000000 0; do
    name=poll$pmax
    truncate -s 4M "$TMP/$name.img"
    vmm_run $name -- "$VMM" $G -object iothread,id=io0,poll-max-ns=$pmax \
        -drive "file=$TMP/$name.img,format=raw,if=virtio,aio=threads,cache=$CACHE,iothread=io0" \
        -append "rw=randwrite bs=4096 iodepth=4 size=1M verify=1 seed=4"
    r=0
    is "$(vmm_rc $name)" 1 || r=1
    is "$(result_field $name status)" ok || r=1
    if [ $pmax = 0 ]; then
        is "$(stats_field $name poll_hits)" 0 || r=1
    else
        gt0 "$(stats_field $name poll_hits)" || r=1
    fi
    check $r $name "iothread,poll-max-ns=$pmax: the workload passes; requests found by busy-polling the ring: $(stats_field $name poll_hits)"
done

# ---- injected errors -----------------------------------------------------------------
for where in main iothread; do
    name=inj-w-$where
    iot='' obj=''
    if [ $where = iothread ]; then iot=",iothread=io0"; obj="-object iothread,id=io0"; fi
    truncate -s 4M "$TMP/$name.img"
    # shellcheck disable=SC2086
    vmm_run $name -- "$VMM" $G $obj \
        -drive "file=$TMP/$name.img,format=raw,if=virtio,aio=io_uring,cache=$CACHE$iot,inject=write:EIO:offset=64k" \
        -append "rw=write bs=4096 iodepth=8 size=1M verify=1 seed=5"
    r=0
    is "$(vmm_rc $name)" 3 || r=1                          # the guest reports the failure
    is "$(result_field $name errors)" 1 || r=1
    is "$(result_field $name ops)" 255 || r=1
    is "$(result_field $name verify_failures)" 0 || r=1
    is "$(stats_field $name errors)" 1 || r=1
    has_out $name '^KEEL-GUEST: request type 1 sector 128 failed: status 1' || r=1
    check $r $name "$where: write EIO injected at 64 KiB reaches the guest as IOERR for that request only; the other 255 writes succeed and verify (merged requests: $(stats_field $name merged), split after the error: $(stats_field $name merge_retries))"
    check_pattern "$TMP/$name.img" 0 65536 1 5 && check_zero "$TMP/$name.img" 65536 4096 &&
        check_pattern "$TMP/$name.img" 69632 978944 1 5
    check $? $name "$where: the failed write left its block untouched, the rest hold the pattern"
done
cp "$TMP/inj-w-main.img" "$TMP/inj-r.img"
vmm_run inj-r -- "$VMM" $G \
    -drive "file=$TMP/inj-r.img,format=raw,if=virtio,aio=threads,inject=read:EIO:offset=8k" \
    -append "rw=read bs=4096 iodepth=4 offset=0 size=64k verify=1 seed=5"
r=0
is "$(vmm_rc inj-r)" 3 || r=1
is "$(result_field inj-r errors)" 1 || r=1
is "$(result_field inj-r ops)" 15 || r=1
is "$(result_field inj-r verify_failures)" 0 || r=1
has_out inj-r '^KEEL-GUEST: request type 0 sector 16 failed: status 1' || r=1
check $r inj-r "a read EIO injected at 8 KiB reaches the guest as IOERR; the other 15 reads return the right data"
# A transient error (once) with one request at a time: reported once, then the
# same drive keeps serving (the guest goes on with the next blocks).
truncate -s 4M "$TMP/inj-once.img"
vmm_run inj-once -- "$VMM" $G \
    -drive "file=$TMP/inj-once.img,format=raw,if=virtio,inject=write:EIO:once" \
    -append "rw=write bs=4096 iodepth=1 size=64k verify=1 seed=5"
r=0
is "$(vmm_rc inj-once)" 3 || r=1
is "$(result_field inj-once errors)" 1 || r=1
is "$(result_field inj-once ops)" 15 || r=1
is "$(result_field inj-once verified_blocks)" 15 || r=1
check $r inj-once "a one-time write EIO fails exactly one request; the next 15 succeed and verify"

# ---- read-only drive ------------------------------------------------------------------
truncate -s 4M "$TMP/ro.img"
vmm_run ro -- "$VMM" $G -drive "file=$TMP/ro.img,format=raw,if=virtio,readonly=on" \
    -append "rw=write bs=4096 size=64k"
r=0
is "$(vmm_rc ro)" 3 || r=1
has_out ro '^KEEL-GUEST: blk .* ro ' || r=1
is "$(result_field ro errors)" 16 || r=1
check $r ro "read-only drive: VIRTIO_BLK_F_RO offered, all 16 writes fail with IOERR"
check_zero "$TMP/ro.img" 0 4194304
check $? ro "read-only drive: the image is unchanged"

# ---- malformed descriptor chains, and a driver breaking the transport's rules ----------------
# test=badchain: eleven malformed chains, each refused (IOERR or NEEDS_RESET).
# test=hostile: reset with I/O in flight, DRIVER_OK without FEATURES_OK, a
# bad queue size, rings outside RAM, config writes while live, bogus MSI-X
# entries, BAR 0 moved while in use; each ends safely and the guest checks
# the device works after a reset.  keel-vmm must live through all of them.
# guest_boot NAME WHERE TEST: one boot of the guest's TEST in WHERE (main or
# iothread) on a fresh 4 MiB image; sets r=1 unless it exited 0.
guest_boot() {
    iot='' obj=''
    if [ "$2" = iothread ]; then iot=",iothread=io0"; obj="-object iothread,id=io0"; fi
    truncate -s 4M "$TMP/$1.img"
    # shellcheck disable=SC2086
    vmm_run "$1" -- "$VMM" $G $obj -drive "file=$TMP/$1.img,format=raw,if=virtio$iot" \
        -append "test=$3"
    r=0
    is "$(vmm_rc "$1")" 1 || r=1
    has_out "$1" "^KEEL-GUEST: RESULT status=ok test=$3" || r=1
}
for where in main iothread; do
    guest_boot bad-$where $where badchain
    for c in out-of-range-address loop oversized header-writable status-readonly beyond-capacity \
        next-out-of-range indirect-outside-ram indirect-bad-size indirect-nested avail-idx-far-ahead; do
        has_out bad-$where "^KEEL-GUEST: badchain $c: (failed-ioerr|failed-unsupp|needs-reset) .*device works afterwards" || r=1
    done
    gt0 "$(stats_field bad-$where needs_reset)" || r=1
    check $r bad-$where "$where: eleven kinds of malformed chain refused (IOERR or NEEDS_RESET), device usable after each, no crash"

    guest_boot hostile-$where $where hostile
    for c in reset-inflight driver-ok-without-features-ok bad-queue-size ring-outside-ram \
        config-write-live bogus-msix-entries bar-moved-live; do
        has_out hostile-$where "^KEEL-GUEST: hostile $c: .*device works after a reset" || r=1
    done
    check $r hostile-$where "$where: seven hostile-driver cases end safely, the device works after each, no crash"
done

# ---- two drives ---------------------------------------------------------------------------
truncate -s 4M "$TMP/two-a.img"
truncate -s 4M "$TMP/two-b.img"
vmm_run two -- "$VMM" $G -object iothread,id=io1 \
    -drive "file=$TMP/two-a.img,format=raw,if=virtio" \
    -drive "file=$TMP/two-b.img,format=raw,if=none,id=d1,aio=io_uring" \
    -device virtio-blk-pci,drive=d1,iothread=io1 \
    -append "dev=1 rw=write bs=4096 iodepth=4 size=256k verify=1 seed=11 mode=irq"
r=0
is "$(vmm_rc two)" 1 || r=1
has_err two 'virtio-blk1 .*iothread=io1' || r=1
check $r two "two drives (one on an iothread): the guest drives the second"
check_pattern "$TMP/two-b.img" 0 262144 1 11 && check_zero "$TMP/two-a.img" 0 4194304
check $? two "two drives: the writes landed on the second image only"

# ---- libvirt's -blockdev line, unchanged -------------------------------------------------------
truncate -s 4M "$TMP/libvirt.img"
vmm_run libvirt -- "$VMM" $G \
    -blockdev "{\"driver\":\"file\",\"filename\":\"$TMP/libvirt.img\",\"node-name\":\"libvirt-1-storage\",\"auto-read-only\":true,\"discard\":\"unmap\"}" \
    -blockdev '{"node-name":"libvirt-1-format","read-only":false,"driver":"raw","file":"libvirt-1-storage"}' \
    -device virtio-blk-pci,bus=pci.0,addr=0x4,drive=libvirt-1-format,id=virtio-disk0,bootindex=1 \
    -append "rw=write bs=4096 iodepth=4 size=256k verify=1 seed=17 mode=irq"
r=0
is "$(vmm_rc libvirt)" 1 || r=1
is "$(result_field libvirt status)" ok || r=1
check $r libvirt "libvirt's JSON -blockdev pair + -device virtio-blk-pci,bus=pci.0,addr=0x4,bootindex=1: the guest's write+verify passes"
check_pattern "$TMP/libvirt.img" 0 262144 1 17
check $? libvirt "libvirt's line: the writes are in the image"

# ---- old kernels: the fallbacks run the workload ---------------------------------------------
for preset in 2.6.18 2.6.32; do
    name=old-$preset
    if [ ! -x "$OLDKERNEL" ]; then
        skip "preset $preset: tests/keel-oldkernel not built"
        continue
    fi
    truncate -s 4M "$TMP/$name.img"
    vmm_run $name -- "$OLDKERNEL" --preset $preset -- "$VMM" $G -object iothread,id=io0 \
        -drive "file=$TMP/$name.img,format=raw,if=virtio,aio=io_uring,cache=$CACHE,iothread=io0" \
        -append "rw=write bs=4096 iodepth=8 size=512k verify=1 seed=13 mode=irq"
    if [ "$(vmm_rc $name)" = 77 ]; then
        skip "preset $preset: this machine cannot install a seccomp filter"
        continue
    fi
    r=0
    is "$(vmm_rc $name)" 1 || r=1
    is "$(result_field $name status)" ok || r=1
    check_pattern "$TMP/$name.img" 0 524288 1 13 || r=1
    check $r $name "preset $preset: write+verify passes and the image holds the pattern"
    case $preset in
    2.6.18)
        has_err $name 'virtio-blk0 .*engine=threads .*notify=exit-handler intx=irq-line msix=off'
        check $? $name "preset 2.6.18: reported fallbacks: threads engine, exit-handler kicks, KVM_IRQ_LINE, no MSI-X" ;;
    2.6.32)
        if [ "$CACHE" = none ] && built linux-aio; then want=linux-aio; else want=threads; fi
        has_err $name "virtio-blk0 .*engine=$want "
        check $? $name "preset 2.6.32: io_uring refused, the drive runs on $want" ;;
    esac
done

# ---- features and bad options -------------------------------------------------------------------
echo "$features" | grep -q '^virtio-msix active=' && echo "$features" | grep -q '^virtio-intx active=' &&
    echo "$features" | grep -q '^block-engine active='
ok $? "--features lists virtio-msix, virtio-intx and block-engine"
KEEL_AVOID=msix "$VMM" --features 2>&1 | grep -q '^virtio-msix active=intx .*reason=KEEL_AVOID'
ok $? "KEEL_AVOID=msix: --features reports INTx"

vmm_run badinject -- "$VMM" $G -drive "file=$TMP/ro.img,format=raw,if=virtio,inject=write:EBOGUS"
is "$(vmm_rc badinject)" 1 && has_err badinject "^keel-vmm: -drive file=.*ro.img: inject rule 'write:EBOGUS': unknown item 'EBOGUS'" &&
    [ "$(grep -c '^keel-vmm: ' "$TMP/badinject.err")" = 1 ]
check $? badinject "-drive inject= with a bad rule: one clear line, exit 1"
vmm_run nofile -- "$VMM" $G -drive "file=$TMP/does-not-exist.img,format=raw,if=virtio"
is "$(vmm_rc nofile)" 1 && has_err nofile 'does-not-exist'
check $? nofile "-drive with a missing file: one clear line naming it, exit 1"

echo "1..$n"
[ $failed -eq 0 ]
