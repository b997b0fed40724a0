#!/bin/sh
# tests/kvm-lab/inner.sh: what the lab runs inside L1 (in the chroot on this
# machine's root, with a real /dev/kvm from kvm_amd).  Started by
# OUT/job.sh, which lab.sh writes; its results go to OUT (the writable 9p
# share, the same path as on the machine):
#   OUT/tap          one "ok - TEXT" / "not ok - TEXT" / "ok - TEXT # SKIP"
#                    line per check, numbered by lab.sh
#   OUT/features-*.txt, OUT/vmmtests.log, OUT/run-*/{out,err}
#
#   inner.sh BUILD_DIR KERNEL_DIR OUT STEPS
# STEPS: words out of
#   vmmtests  keel's own tests against this kernel (vmm tests, the guest
#             tests, and every test that needs no QEMU peer with =all)
#   suite     the rest of make check against this kernel: the library's
#             loop, coroutine and block tests, the other KVM tests, ...
#             (step_suite says what is left out and why)
#   linux     a Linux guest through PVH and bzImage to a shell on ttyS0
#   blk       Linux's virtio_blk on our device (ext4, fio, discard, ro,
#             inject, fallbacks), the image checked from here afterwards
#   qemu      the linux and blk checks with QEMU (-enable-kvm) as the VMM
#   resize    block_resize over QMP while Linux runs: the kernel sees the
#             new capacity (keel-vmm, and QEMU as the peer)
#   boots     KVM_LAB_BOOTS (20) boots to the shell through PVH and bzImage
#   smp       -smp 2 and a two-queue virtio-blk, the queues on two iothreads
#             (a QEMU 7.2 peer: one iothread); fio numjobs=2 verifies
#   tsan      vmm-smp-guest-test and friends in a --enable-tsan tree
#             (KVM_LAB_TSAN_BUILD): ThreadSanitizer with SMP guests on KVM
#   bench     1 vs 2 queues, keel-vmm against QEMU, interleaved rounds
#             (KVM_LAB_BENCH_REPS, 5), image on tmpfs and on /dev/vda (a
#             disk file from lab.sh): IOPS, VMM CPU per I/O, latency
# Environment: KVM_LAB_TIMEOUT (seconds per guest run, default 300),
# KVM_LAB_VMMTESTS (make check TESTS= list; "all" = everything but the
# QEMU-peer tests).
build=$1 kdir=$2 out=$3 steps=$4
# A guest that died leaves its console pipe without a reader: typing into
# it must fail that one check (EPIPE), not kill the whole job (SIGPIPE).
trap '' PIPE
vmm=$build/vmm/keel-vmm
timeout_s=${KVM_LAB_TIMEOUT:-300}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
MiB=1048576

tap() { echo "$1" >>"$out/tap"; }
ok() {  # STATUS TEXT
    if [ "$1" -eq 0 ]; then tap "ok - $2"; else tap "not ok - $2"; fi
}
skip() { tap "ok - $1 # SKIP $2"; }
log() { echo "keel-lab: $*"; }
now() { date +%s; }
pattern() { yes "keel-lab-$1-0123456789abcdef" | head -c "$2"; }

# The QEMU peer: this machine's, or KVM_LAB_QEMU (lab.sh sets it from
# KVM_LAB_PEER_SUITE: another suite's QEMU, fetch-qemu.sh).  QEMU 9 and
# later spread one device's queues over iothreads (iothread-vq-mapping),
# and then the peer runs the same mapping as keel-vmm.
qemu_bin=${KVM_LAB_QEMU:-qemu-system-x86_64}
have_qemu() { command -v "$qemu_bin" >/dev/null; }
qemu_vq_mapping=
if have_qemu && "$qemu_bin" -device virtio-blk-pci,help 2>/dev/null | grep -q iothread-vq-mapping; then
    qemu_vq_mapping=1
fi

# ---- one guest run ---------------------------------------------------------
# start_guest NAME VMM KERNEL INITRD TEST [DRIVE-OPTIONS]: a guest with
# its console on a fifo (stdin) and OUT/run-NAME/out, stderr in .../err.
run_dir= pid= t0=
start_guest() {
    name=$(echo "$1" | tr ' /=,' '----') which=$2 kernel=$3 initrd=$4 test=$5 drive=${6:-}
    run_dir=$out/run-$name
    rm -rf "$run_dir" "/tmp/in-$name"
    mkdir -p "$run_dir"
    mkfifo "/tmp/in-$name"       # FIFOs cannot live on the 9p share
    cmdline="console=ttyS0 reboot=k panic=-1 pci=conf1 quiet keellab.test=$test${KVM_LAB_APPEND:+ $KVM_LAB_APPEND}"
    set --
    [ -n "$drive" ] && set -- -drive "$drive"
    # shellcheck disable=SC2086  # words on purpose (-qmp unix:...); no globbing
    # of the JSON -device's brackets
    set -f
    [ -n "${guest_extra:-}" ] && set -- "$@" $guest_extra
    set +f
    case $which in
    keel)
        "$vmm" -m 1G -kernel "$kernel" -initrd "$initrd" -append "$cmdline" "$@" \
            <"/tmp/in-$name" >"$run_dir/out" 2>"$run_dir/err" &
        ;;
    qemu)
        "$qemu_bin" -enable-kvm -M pc -cpu host -m 1G -nodefaults -nographic \
            -no-reboot -serial stdio -kernel "$kernel" -initrd "$initrd" \
            -append "$cmdline${qemu_append:+ $qemu_append}" "$@" \
            <"/tmp/in-$name" >"$run_dir/out" 2>"$run_dir/err" &
        ;;
    esac
    pid=$!
    exec 3>"/tmp/in-$name"
    t0=$(now)
}

# wait_for PATTERN SECONDS: until the console matches, the VMM ends, or the
# time (elapsed, not polls) is up.
wait_for() {
    end=$(( $(now) + $2 ))
    while [ "$(now)" -lt $end ]; do
        grep -q -- "$1" "$run_dir/out" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { grep -q -- "$1" "$run_dir/out"; return $?; }
        sleep 0.5
    done
    return 1
}

# wait_exit SECONDS: sets rc to the VMM's status, or 124 after killing it.
wait_exit() {
    end=$(( $(now) + $1 ))
    while kill -0 "$pid" 2>/dev/null && [ "$(now)" -lt $end ]; do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"; wait "$pid" 2>/dev/null; rc=124
    else
        wait "$pid"; rc=$?
    fi
    pid=
    exec 3>&-
    rm -f "/tmp/in-$name"
}

# A hang or a failure is shown with what the guest and the VMM said last.
show_run() {  # WHY
    log "---- $name: $1 after $(( $(now) - t0 )) s; console tail:"
    tail -n 25 "$run_dir/out" | sed 's/^/keel-lab:   | /'
    log "---- $name: VMM stderr:"
    tail -n 25 "$run_dir/err" | sed 's/^/keel-lab:   ! /'
}

# run_check LABEL NAME VMM KERNEL INITRD TEST [DRIVE]: runs l2-checks.sh TEST
# in the guest and turns its lines into TAP, plus "the run ended cleanly".
run_check() {
    label=$1
    shift
    start_guest "$@"
    if wait_for "keel-lab: done $5" "$timeout_s"; then
        wait_exit 60
    else
        wait_exit 1         # status 124 if it is still running (a hang)
    fi
    took=$(( $(now) - t0 ))
    sed -n 's/^keel-lab: \(not ok\|ok\) - /\1 - /p' "$run_dir/out" | tr -d '\r' |
        while read -r line; do tap "$(echo "$line" | sed "s/ - / - $label: /")"; done
    grep -q "keel-lab: done $5" "$run_dir/out"
    st=$?
    ok $([ $st -eq 0 ] && [ $rc -eq 0 ]; echo $?) \
        "$label: guest ran '$5' to the end and reboot -f ended the VMM with 0 (rc=$rc, ${took}s)"
    { [ $st -eq 0 ] && [ $rc -eq 0 ] && ! grep -q 'keel-lab: not ok' "$run_dir/out"; } ||
        show_run "$([ $rc -eq 124 ] && echo HANG || echo failure)"
    grep 'keel-lab: [^on]' "$run_dir/out" | tr -d '\r' | head -n 20
}

# resize_check VMM: Linux sees block_resize (QMP) as a capacity change.
# The guest says when it waits; block_resize +1 MiB goes over the VMM's QMP
# socket from here (a stdlib-only client), then the guest checks the size.
resize_check() {
    img=$scratch/resize-$1.img
    rm -f "$img"
    truncate -s $((64 * MiB)) "$img"
    sock=/tmp/keel-lab-qmp-$1.sock
    rm -f "$sock"
    guest_extra="-qmp unix:$sock,server=on,wait=off"
    start_guest "$1 resize" "$1" "$vmlinux" "$l2" resize "file=$img,format=raw,if=virtio,id=disk0"
    guest_extra=
    if wait_for "keel-lab: resize: waiting" "$timeout_s"; then
        python3 - "$sock" $((65 * MiB)) >"$run_dir/qmp" 2>&1 <<'PYEOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
def reply():
    while True:
        m = json.loads(f.readline())
        if "event" not in m:
            return m
reply()     # the greeting
for cmd in ({"execute": "qmp_capabilities"},
            {"execute": "block_resize", "arguments": {"device": "disk0", "size": int(sys.argv[2])}}):
    f.write(json.dumps(cmd) + "\n")
    f.flush()
    r = reply()
    print(json.dumps(cmd), "->", json.dumps(r))
    if "error" in r:
        sys.exit(1)
PYEOF
        ok $? "$1 resize: block_resize over QMP ($(tail -n 1 "$run_dir/qmp"))"
        [ "$(stat -c %s "$img")" = $((65 * MiB)) ]
        ok $? "$1 resize: the image file grew to 65 MiB"
    else
        ok 1 "$1 resize: the guest got to waiting for the resize"
    fi
    if wait_for "keel-lab: done resize" 180; then wait_exit 60; else wait_exit 1; fi
    sed -n 's/^keel-lab: \(not ok\|ok\) - /\1 - /p' "$run_dir/out" | tr -d '\r' |
        while read -r line; do tap "$(echo "$line" | sed "s/ - / - $1 resize: /")"; done
    grep -q "keel-lab: done resize" "$run_dir/out" && [ $rc -eq 0 ]
    ok $? "$1 resize: the guest ran to the end, reboot -f ended the VMM with 0 (rc=$rc)"
}

# ---- steps -------------------------------------------------------------------
kver=$(cat "$kdir/kernel-version")
vmlinux=$kdir/vmlinux vmlinuz=$kdir/vmlinuz
l2=$kdir/l2.cpio l2fio=$kdir/l2-fio.cpio

# L1's KVM under QEMU's software CPU misses L2's XSETBV (docs/kvm-lab.md,
# Findings): keel-vmm detects that and hides XSAVE from its guests
# (cpuid=clear-xsave); QEMU does not, so its guests get Linux's noxsave,
# the same guest state, and the peer's checks stay comparable.
qemu_append=
if "$vmm" --features 2>/dev/null | grep -q 'clear-xsave'; then
    qemu_append=noxsave
    log "L1's KVM misses the guest's XSETBV: keel-vmm hides XSAVE; QEMU's guests get noxsave"
fi

step_features() {
    uname -a >"$out/features-l1.txt"
    grep . /sys/module/kvm_amd/parameters/* >>"$out/features-l1.txt" 2>/dev/null
    "$build/keel-features" >"$out/features-keel.txt" 2>&1
    ok $? "keel-features runs on $kver"
    "$vmm" --features >"$out/features-vmm.txt" 2>&1
    ok $? "keel-vmm --features runs on $kver"
    grep -q 'kvm' "$out/features-vmm.txt" && ! grep -qi 'kvm_pvm' "$out/features-vmm.txt"
    ok $? "keel-vmm --features: plain KVM (no kvm_pvm quirks)"
    tap "ok - keel-vmm's CPUID quirks on $kver: $(grep -o 'kvm-cpuid-quirks.*' "$out/features-vmm.txt" | tr -s ' ')"
    sed 's/^/keel-lab: features: /' "$out/features-vmm.txt"
}

# make check TESTS=LIST in the tree BUILD, one TAP line per test (LABEL
# prefixed).
make_check_tests() {  # BUILD LABEL LIST
    tree=$1 label=$2 list=$3
    make_t0=$(now)
    # aio=native and cache=none need O_DIRECT in TMPDIR (KEEL_TEST_DIR
    # for the tests that look for such a directory themselves).
    scratch_fs && export TMPDIR=$scratch KEEL_TEST_DIR=$scratch
    make -C "$tree" -k check TESTS="$list" >"$out/$label.log" 2>&1
    unset TMPDIR KEEL_TEST_DIR
    log "$label: make check TESTS=... took $(( $(now) - make_t0 )) s"
    for test_path in $list; do
        res=$tree/$test_path.trs
        res=${res%.sh.trs}.trs
        [ -f "$res" ] || res=$tree/${test_path%.sh}.trs
        [ -f "$tree/${test_path%.sh}.log" ] && cp "$tree/${test_path%.sh}.log" "$out/$label-$(basename "${test_path%.sh}").log"
        r=$(sed -n 's/^:global-test-result: //p' "$res" 2>/dev/null)
        case $r in
        PASS) ok 0 "$label: make check $test_path" ;;
        SKIP) skip "$label: make check $test_path" "$(grep -m1 'SKIP' "$tree/${test_path%.sh}.log" | sed 's/.*# SKIP//')" ;;
        *) ok 1 "$label: make check $test_path (${r:-no result})"
           grep -E '^(not ok|#)' "$tree/${test_path%.sh}.log" 2>/dev/null | tail -n 15 | sed 's/^/keel-lab:   /'
           grep -m 3 -A 12 'WARNING: ThreadSanitizer' "$tree/${test_path%.sh}.log" 2>/dev/null | sed 's/^/keel-lab:   /' ;;
        esac
    done
}

# Every test `make check` runs, by name.
all_tests() {
    # Only the test names: a make that regenerates its Makefile first
    # prints that on stdout too.
    make -s -C "$build" -f Makefile -f - print-tests <<'EOF' 2>/dev/null | tr ' ' '\n' | grep -e '^tests/'
print-tests:
	@echo $(TESTS)
EOF
}
vmmtests_default="tests/vmm-guest-test.sh tests/vmm-blk-test.sh tests/vmm-linux-test.sh tests/vmm-blk-mq-test.sh tests/vmm-smp-guest-test.sh"
step_vmmtests() {
    list=${KVM_LAB_VMMTESTS:-$vmmtests_default}
    if [ "$list" = all ]; then
        # Everything but the tests that need QEMU as a peer.
        list=$(all_tests | grep -v -e guest-qemu-test | tr '\n' ' ')
    fi
    make_check_tests "$build" vmmtests "$list"
}

# The rest of the suite on this kernel: every test of `make check` but
# vmmtests' (run there), those that need QEMU as a peer (guest-qemu-test,
# qmp-qemu-test, img-qemu-compat-test), and those whose outcome cannot
# depend on the kernel: the fuzzers (pure functions over bytes),
# cmdlines-test (parsing), matrix.sh (these same tests again with each
# fallback forced and older kernels emulated by seccomp, which a real
# kernel makes redundant) and embed-cxx-test / install-test (a compiler
# and an install: minutes under TCG, and no kernel in them).
suite_excluded='guest-qemu-test qmp-qemu-test img-qemu-compat-test fuzz- cmdlines-test matrix.sh embed-cxx-test install-test'
step_suite() {
    # shellcheck disable=SC2046,SC2086  # one -e per word
    list=$(all_tests | grep -v -x -F $(printf -- '-e %s ' $vmmtests_default) |
           grep -v -F $(printf -- '-e %s ' $suite_excluded) | tr '\n' ' ')
    make_check_tests "$build" suite "$list"
}

# ThreadSanitizer over keel-vmm with an SMP guest on real KVM: the vCPU
# threads, iothreads and main loop of -smp 2..4 with 1..4 queues, in a
# --enable-tsan tree (KVM_LAB_TSAN_BUILD, default BUILD's sibling
# build-tsan, as .ci/run makes it).
step_tsan() {
    tsan_build=${KVM_LAB_TSAN_BUILD:-$(dirname "$build")/build-tsan}
    if [ ! -x "$tsan_build/vmm/keel-vmm" ] ||
       ! grep -q -e '-fsanitize=thread' "$tsan_build/Makefile" 2>/dev/null; then
        skip "tsan: keel-vmm under ThreadSanitizer with an SMP guest" \
            "no --enable-tsan build at $tsan_build (set KVM_LAB_TSAN_BUILD)"
        return
    fi
    make_check_tests "$tsan_build" tsan \
        "${KVM_LAB_TSAN_TESTS:-tests/vmm-smp-guest-test.sh tests/vmm-blk-mq-test.sh tests/vmm-guest-test.sh}"
}

# The interactive check: boot to the shell, type a command, reboot -f.
shell_check() {  # LABEL VMM KERNEL
    start_guest "$1" "$2" "$3" "$l2" shell
    if wait_for 'keel-initramfs: up' "$timeout_s"; then
        ok 0 "$1: the initramfs /init ran ($(( $(now) - t0 )) s)"
    else
        ok 1 "$1: the initramfs /init ran"
    fi
    echo 'echo keel-answer-$((6*7))' >&3
    wait_for 'keel-answer-42' 60
    ok $? "$1: the shell answered a command typed on ttyS0"
    echo 'reboot -f' >&3
    wait_exit 60
    ok $([ "$rc" -eq 0 ]; echo $?) "$1: reboot -f ends the VMM with status 0 (rc=$rc, $(( $(now) - t0 )) s)"
    grep -q 'keel-answer-42' "$run_dir/out" && [ "$rc" -eq 0 ] ||
        show_run "$([ $rc -eq 124 ] && echo HANG || echo failure)"
}

step_linux() {  # VMM
    shell_check "$1 PVH" "$1" "$vmlinux"
    [ "$1" = keel ] && { grep -q 'boot=linux-pvh' "$run_dir/err"; ok $? "keel PVH: keel-vmm entered through the PVH note"; }
    shell_check "$1 bzImage" "$1" "$vmlinuz"
    [ "$1" = keel ] && { grep -q 'boot=linux-bzimage-64' "$run_dir/err"; ok $? "keel bzImage: 64-bit entry"; }
}

# Repeated boots to the shell (issue 16 item 7: hangs after "Run /init"):
# KVM_LAB_BOOTS boots (default 20) through each entry, with KVM_LAB_APPEND
# added to the guest's command line (e.g. noxsave).
step_boots() {  # VMM
    nboots=${KVM_LAB_BOOTS:-20}
    for entry in PVH bzImage; do
        [ $entry = PVH ] && k=$vmlinux || k=$vmlinuz
        good=0 i=0
        while [ $i -lt "$nboots" ]; do
            i=$((i + 1))
            start_guest "$1 boots $entry $i" "$1" "$k" "$l2" shell
            if wait_for 'keel-initramfs: up' "${KVM_LAB_BOOT_TIMEOUT:-90}"; then
                echo 'reboot -f' >&3
                wait_exit 60
                [ "$rc" -eq 0 ] && good=$((good + 1))
            else
                wait_exit 1
                if [ "$rc" -eq 124 ]; then
                    show_run "boot $i of $nboots: no shell (HANG)"
                else
                    show_run "boot $i of $nboots: no shell, the VMM ended with status $rc"
                fi
            fi
        done
        ok $([ $good -eq "$nboots" ]; echo $?) \
            "$1 $entry: $good of $nboots boots${KVM_LAB_APPEND:+ with '$KVM_LAB_APPEND'} reached the shell and reboot -f gave 0"
    done
}

image_is() {  # IMAGE OFFSET LEN PATTERN-WORD|zero: the bytes there, from L1
    if [ "$4" = zero ]; then
        want=$(head -c "$3" /dev/zero | md5sum)
    else
        want=$(pattern "$4" "$3" | md5sum)
    fi
    [ "$(dd if="$1" bs=65536 skip=$(($2 / 65536)) count=$(($3 / 65536)) 2>/dev/null | md5sum)" = "$want" ]
}

# The images live on ext4 (a loop device over a file in L1's RAM): tmpfs
# and 9p have no O_DIRECT, which cache=none and aio=native need.
scratch=
scratch_fs() {
    [ -n "$scratch" ] && return 0
    scratch=/var/tmp/keel-lab
    mkdir -p $scratch
    truncate -s 1200M /tmp/scratch.ext4
    loopdev=$(losetup -f --show /tmp/scratch.ext4) &&
        mke2fs -q -F -t ext4 "$loopdev" && mount "$loopdev" $scratch ||
        { log "no ext4 scratch (loop device): images go to tmpfs (no O_DIRECT)"; return 1; }
}

step_blk() {  # VMM
    v=$1
    scratch_fs
    img=$scratch/lab-$v.img
    aio=threads
    [ "$v" = qemu ] && cache=",cache=none" || cache=
    rm -f "$img"; truncate -s 256M "$img"

    # ext4 across a power cycle, read back by a new VMM; then from here.
    run_check "$v ext4" "$v-fs-write" "$v" "$vmlinux" "$l2" fs-write "file=$img,format=raw,if=virtio"
    run_check "$v ext4" "$v-fs-read" "$v" "$vmlinux" "$l2" fs-read "file=$img,format=raw,if=virtio"
    e2fsck -fn "$img" >"$out/e2fsck-$v.log" 2>&1
    ok $? "$v ext4: e2fsck -fn of the image from L1 (the host side) is clean"
    [ "$(debugfs -R 'cat /big' "$img" 2>/dev/null | md5sum)" = "$(pattern big $((8 * MiB)) | md5sum)" ]
    ok $? "$v ext4: /big read from the image by debugfs in L1 equals the pattern"

    for aio in threads native io_uring; do
        case $aio in native) c=",cache=none" ;; *) c=$cache ;; esac
        run_check "$v fio aio=$aio" "$v-fio-$aio" "$v" "$vmlinux" "$l2fio" fio \
            "file=$img,format=raw,if=virtio,aio=$aio$c"
    done

    blocks_before=$(stat -c %b "$img")
    # Both drop guest discards unless told discard=unmap (QEMU's default,
    # keel-vmm's too since the safe-images work); with it, each punches holes.
    run_check "$v discard" "$v-discard" "$v" "$vmlinux" "$l2" discard \
        "file=$img,format=raw,if=virtio$cache,discard=unmap"
    image_is "$img" $((4 * MiB)) $((4 * MiB)) zero
    ok $? "$v discard: L1 sees zeroes in the image where the guest wrote zeroes (blkdiscard -z)"
    # DISCARD does not promise zeroes; report what the image got.
    image_is "$img" 0 $((4 * MiB)) zero && d="zeroes" || d="the old data"
    blocks_after=$(stat -c %b "$img")
    log "$v discard: the discarded 4 MiB hold $d in the image; image blocks $blocks_before -> $blocks_after (512 B units)"
    [ "$blocks_after" -lt "$blocks_before" ]
    ok $? "$v discard=unmap: the guest's discards freed image blocks ($blocks_before -> $blocks_after)"

    pattern ro $((1 * MiB)) | dd of="$img" bs=1M conv=notrunc 2>/dev/null
    sum_before=$(md5sum <"$img")
    run_check "$v readonly" "$v-readonly" "$v" "$vmlinux" "$l2" readonly "file=$img,format=raw,if=virtio,readonly=on"
    [ "$(md5sum <"$img")" = "$sum_before" ]
    ok $? "$v readonly: the image is unchanged"

    if [ "$v" = keel ]; then
        run_check "$v inject" "$v-inject" "$v" "$vmlinux" "$l2" inject "file=$img,format=raw,if=virtio,inject=write:EIO:once"
        image_is "$img" $((1 * MiB)) $((4 * MiB)) inj2
        ok $? "$v inject: the writes after the error are in the image"
        for avoid in ioeventfd,irqfd,msix signal-msi; do
            export KEEL_AVOID=$avoid
            run_check "$v KEEL_AVOID=$avoid" "$v-avoid-$avoid" "$v" "$vmlinux" "$l2" pattern \
                "file=$img,format=raw,if=virtio"
            unset KEEL_AVOID
            image_is "$img" 0 $((4 * MiB)) pat
            ok $? "$v KEEL_AVOID=$avoid: the data is in the image"
            case $avoid in
            signal-msi) grep -q 'signal-msi=no' "$run_dir/err" ;;
            *) grep -q 'notify=exit-handler' "$run_dir/err" && grep -q 'msix=off' "$run_dir/err" ;;
            esac
            ok $? "$v KEEL_AVOID=$avoid: keel-vmm says it took the fallback ($(grep -o 'notify=[^ ]*\|msix=[^ ]*\|signal-msi=[^ ]*' "$run_dir/err" | tr '\n' ' '))"
        done
    else
        # QEMU's error injection is blkdebug's, with a rules file.
        cat >/tmp/blkdebug.conf <<'EOF'
[inject-error]
event = "write_aio"
errno = "5"
once = "on"
EOF
        run_check "$v inject" "$v-inject" "$v" "$vmlinux" "$l2" inject \
            "file=blkdebug:/tmp/blkdebug.conf:$img,format=raw,if=virtio"
        image_is "$img" $((1 * MiB)) $((4 * MiB)) inj2
        ok $? "$v inject: the writes after the error are in the image"
    fi
    rm -f "$img"
}

# SMP + multiqueue (issue 14): Linux on 2 vCPUs with a two-queue virtio-blk,
# keel-vmm with the QEMU line as a user writes it (-accel kvm -cpu host).
# keel-vmm takes QEMU 9's spelling (iothread-vq-mapping over two iothreads),
# and so does a QEMU peer of 9 or later; this machine's QEMU (7.2) predates
# it, so that peer runs both queues in one iothread.
step_smp() {  # VMM
    scratch_fs
    img=$scratch/lab-smp-$1.img
    rm -f "$img"; truncate -s 64M "$img"
    mq='-object iothread,id=io0 -object iothread,id=io1 -device {"driver":"virtio-blk-pci","drive":"d0","num-queues":2,"iothread-vq-mapping":[{"iothread":"io0"},{"iothread":"io1"}]}'
    if [ "$1" = keel ]; then
        guest_extra="-accel kvm -cpu host -smp 2 $mq"
    elif [ -n "$qemu_vq_mapping" ]; then
        guest_extra="-smp 2 $mq"
    else
        guest_extra='-smp 2 -object iothread,id=io0 -device virtio-blk-pci,drive=d0,num-queues=2,iothread=io0'
    fi
    run_check "$1 smp" "$1-smp" "$1" "$vmlinux" "$l2fio" mq "file=$img,format=raw,if=none,id=d0,cache=none,aio=io_uring"
    guest_extra=
    grep 'smp=\|queues\|iothread' "$run_dir/err" | head -n 5 | sed 's/^/keel-lab:   ! /'
    rm -f "$img"
}

# The benchmark (docs/benchmarks.md): 4 KiB random reads at depth 16 per
# queue from a -smp 2 guest, at 1 and 2 queues, with the image in two
# places: L1's tmpfs, so the VMM's own cost is what shows, and an ext4 file
# system on L1's /dev/vda, which lab.sh backs with a raw file on this
# machine's disk (cache=none), so the I/O goes to a disk.  The set-ups:
#   keel q=1      one queue on iothread io0
#   qemu q=1      the same
#   keel q=2      two queues on two iothreads (iothread-vq-mapping)
#   keel-nopoll q=2  the same, the iothreads with poll-max-ns=0
#   keel-1io q=2  two queues on one iothread: QEMU 7.2's mapping, like for like
#   qemu q=2      a peer with iothread-vq-mapping (QEMU 9+): as keel q=2;
#                 else (7.2) two queues on one iothread, as keel-1io q=2
#   qemu-1io q=2  two queues on one iothread (for a QEMU 9+ peer)
# Rounds interleave every set-up and place; the VMM's CPU time (utime +
# stime of the whole process, its vCPU threads included, in ticks of 10 ms)
# is sampled at the guest's start/end markers of the 10 s window.
vmm_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
bench_setup() {  # SET-UP QUEUES → the VMM (keel or qemu) in $bench_vmm, guest_extra
    [ "$1" = qemu ] && [ -z "$qemu_vq_mapping" ] && set -- qemu-1io "$2"
    case $1 in
    keel|keel-nopoll|qemu)
        # keel-nopoll: iothreads that never busy-poll (poll-max-ns=0), to
        # see whether polling iothreads take the CPUs the vCPUs need (L1
        # has two).
        bench_vmm=${1%-nopoll} poll=
        [ "$1" = keel-nopoll ] && poll=,poll-max-ns=0
        map='{"iothread":"io0"}' objs="-object iothread,id=io0$poll"
        [ "$2" = 2 ] && map='{"iothread":"io0"},{"iothread":"io1"}' objs="$objs -object iothread,id=io1$poll"
        guest_extra="-smp 2 $objs -device {\"driver\":\"virtio-blk-pci\",\"drive\":\"d0\",\"num-queues\":$2,\"iothread-vq-mapping\":[$map]}"
        ;;
    keel-1io|qemu-1io)
        # Every queue on one iothread: QEMU 7.2's only mapping.
        bench_vmm=${1%-1io}
        guest_extra="-smp 2 -object iothread,id=io0 -device virtio-blk-pci,drive=d0,num-queues=$2,iothread=io0"
        ;;
    esac
}
# KVM_LAB_BENCH_SETUPS picks some (SET-UP:QUEUES words), e.g. more
# rounds of the ones whose runs an L1 fault cut short.
if [ -n "$qemu_vq_mapping" ]; then
    bench_setups=${KVM_LAB_BENCH_SETUPS:-'keel:1 qemu:1 keel:2 qemu:2 keel-1io:2 qemu-1io:2'}
else
    bench_setups=${KVM_LAB_BENCH_SETUPS:-'keel:1 qemu:1 keel:2 keel-nopoll:2 keel-1io:2 qemu:2'}
fi
step_bench() {
    reps=${KVM_LAB_BENCH_REPS:-5}
    places=tmpfs
    mkdir -p /tmp/bench-tmpfs
    if [ -b /dev/vda ] && mkfs.ext4 -q -F /dev/vda && mkdir -p /tmp/bench-disk &&
       mount /dev/vda /tmp/bench-disk; then
        places="tmpfs disk"
    else
        skip "bench on disk" "L1 has no /dev/vda to put an ext4 file system on (lab.sh gives one with the bench step)"
    fi
    for place in $places; do
        pattern bench $((64 * MiB)) >"/tmp/bench-$place/bench.img"
    done
    sync
    : >"$out/bench.txt"
    r=0
    while [ $r -lt "$reps" ]; do
        r=$((r + 1))
        for place in $places; do
            img=/tmp/bench-$place/bench.img
            # tmpfs takes no O_DIRECT on older kernels; on disk, cache=none
            # keeps L1's page cache out of the way, as a user would.
            bench_cache=; [ $place = disk ] && bench_cache=cache=none,
            for su in $bench_setups; do
                v=${su%:*} q=${su#*:}
                bench_setup $v $q
                start_guest "bench $place $v q$q r$r" $bench_vmm "$vmlinux" "$l2fio" bench-$q \
                    "file=$img,format=raw,if=none,id=d0,${bench_cache}aio=io_uring"
                guest_extra=
                c0=0 c1=0
                wait_for 'keel-lab: bench: start' "$timeout_s" && c0=$(vmm_ticks $pid)
                wait_for 'keel-lab: bench: end' 60 && c1=$(vmm_ticks $pid)
                if wait_for "keel-lab: done bench-$q" 60; then wait_exit 60; else wait_exit 1; fi
                res=$(grep -o 'iops=.*' "$run_dir/out" | tr -d '\r' | head -n 1)
                [ -n "$res" ] || show_run "bench $place $v q=$q round $r: no result"
                # A sample missed (the VMM gone before the poll saw the end
                # marker) leaves the round's CPU out, not its IOPS.
                ticks=$((c1 - c0))
                { [ "$c0" -gt 0 ] && [ "$c1" -gt 0 ]; } || ticks=-1
                echo "$place $v q=$q round=$r vmm_ticks=$ticks $res" >>"$out/bench.txt"
            done
        done
    done
    sed 's/^/keel-lab: bench: /' "$out/bench.txt"
    for place in $places; do
        for su in $bench_setups; do
            v=${su%:*} q=${su#*:}
            # Medians over the rounds; CPU per I/O = ticks * 10 ms / (IOPS * 10 s).
            m=$(grep "^$place $v q=$q " "$out/bench.txt" | grep 'iops=' | awk '
                { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                  n++; iops[n] = v["iops"]; p50[n] = v["p50_us"]; p99[n] = v["p99_us"]
                  if (v["vmm_ticks"] > 0 && v["iops"] > 0)
                      cpu[++nc] = v["vmm_ticks"] * 10000 / (v["iops"] * 10) }
                function med(a, n,   i, j, t) {
                    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
                        if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
                    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
                END { if (n) printf "n=%d iops=%d vmm_cpu_us_per_io=%.1f (of %d) p50_us=%d p99_us=%d",
                                    n, med(iops, n), nc ? med(cpu, nc) : -1, nc, med(p50, n), med(p99, n) }')
            ok $([ -n "$m" ]; echo $?) "bench $place $v num-queues=$q: median of the rounds: ${m:-no result}"
        done
    done
    rm -f /tmp/bench-tmpfs/bench.img
    if [ -d /tmp/bench-disk ] && mountpoint -q /tmp/bench-disk; then
        rm -f /tmp/bench-disk/bench.img
        umount /tmp/bench-disk
    fi
}

# L1's kernel rewrites __schedule (the preempt_notifier_key jump label:
# kvm_create_vm increments it, kvm_destroy_vm decrements it) whenever its
# first VM is made and after its last one ends.  Under QEMU's
# multi-threaded TCG that live patching is the suspected cause of L1's
# panics ("int3" in __schedule, docs/kvm-lab.md): another vCPU ran the
# patch site's int3 after the patch was done.  One paused VM held for the
# whole job keeps the key on, so the L2 VMs of the steps patch nothing.
hold_kvm_key() {
    holder=
    if have_qemu; then
        "$qemu_bin" -enable-kvm -S -nodefaults -display none -m 16 \
            </dev/null >"$out/key-holder.log" 2>&1 &
    else
        "$vmm" -S -m 16 -kernel "$build/vmm/guest/keel-guest" </dev/null >"$out/key-holder.log" 2>&1 &
    fi
    holder=$!
    sleep 3
    if kill -0 "$holder" 2>/dev/null; then
        log "holding a paused VM (pid $holder) so L1's preempt-notifier jump label stays on"
    else
        log "could not hold a paused VM: $(tail -n 2 "$out/key-holder.log" | tr '\n' ' ')"
        holder=
    fi
}
if have_qemu; then
    log "QEMU peer: $qemu_bin: $("$qemu_bin" --version | head -n 1)${qemu_vq_mapping:+ (has iothread-vq-mapping)}"
fi
hold_kvm_key
trap '[ -n "$holder" ] && kill "$holder" 2>/dev/null' EXIT

: >"$out/tap"
for s in $steps; do
    step_t0=$(now)
    log "step $s"
    case $s in
    features) step_features ;;
    vmmtests) step_vmmtests ;;
    suite) step_suite ;;
    tsan) step_tsan ;;
    linux) step_linux keel ;;
    boots) step_boots keel ;;
    bench) step_bench ;;
    smp)
        step_smp keel
        if have_qemu; then step_smp qemu; fi
        ;;
    blk) step_blk keel ;;
    resize)
        scratch_fs
        resize_check keel
        if have_qemu; then resize_check qemu; fi
        ;;
    qemu)
        if have_qemu; then
            step_linux qemu
            step_blk qemu
        else
            skip "qemu as peer" "$qemu_bin not found"
        fi
        ;;
    *) ok 1 "unknown step $s" ;;
    esac
    log "step $s took $(( $(now) - step_t0 )) s; L1 kernel log: $(dmesg | grep -ci 'unhandled wrmsr') 'Unhandled WRMSR' lines so far: $(dmesg | grep -oi 'unhandled wrmsr[^=]*' | sort | uniq -c | tr '\n' ' ')"
done
