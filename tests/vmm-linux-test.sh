#!/bin/sh
# Boots Debian's cloud kernel in keel-vmm (fetched and cached by
# tests/vmm-linux-fetch.sh) with a busybox initramfs, console on ttyS0.
#
#  1. vmlinux through its PVH entry: the early log on our serial port
#     (version banner, our command line, the e820 map we gave it).
#     On a real KVM host: the initramfs shell answers a command and
#     `reboot -f` (reboot=k → i8042 reset) ends keel-vmm with status 0.
#     On a kvm_pvm host guest kernel code runs in KVM's instruction
#     emulator, and the kernel stops at its int3 self-test in
#     alternative_instructions() (KVM_EXIT_INTERNAL_ERROR): the shell
#     checks are reported as skipped, naming that reason.  With
#     KEEL_SLOW_TESTS=1 the test waits (~2 min) to see keel-vmm report
#     exactly that internal error.
#  2. The bzImage through the x86 boot protocol (64-bit entry): on a real
#     KVM host always; on kvm_pvm only with KEEL_SLOW_TESTS=1, since the
#     decompressor alone runs for minutes in the emulator.
#
# Skips when /dev/kvm cannot be opened or the kernel cannot be fetched.
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-$(dirname "$0")/..}
vmm=${KEEL_VMM:-$top_builddir/vmm/keel-vmm}

if ! { [ -c /dev/kvm ] && (exec 3<>/dev/kvm); } 2>/dev/null; then
    echo "1..0 # SKIP cannot open /dev/kvm"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-vmm-linux.XXXXXX")
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    exec 3>&- 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

cache=$(sh "$top_srcdir/tests/vmm-linux-fetch.sh" 2>"$tmp/fetch.err")
if [ -z "$cache" ]; then
    echo "1..0 # SKIP cannot fetch the Debian kernel: $(tail -n 1 "$tmp/fetch.err")"
    exit 77
fi

pvm=no
[ -d /sys/module/kvm_pvm ] && pvm=yes
slow=${KEEL_SLOW_TESTS:-0}
pvm_reason="kvm_pvm host: guest kernel code runs in KVM's emulator and Linux stops at its int3 self-test (KVM_EXIT_INTERNAL_ERROR)"
cmdline="console=ttyS0 earlyprintk=serial,ttyS0 reboot=k panic=-1 pci=conf1 noxsave keel.test=1"

n=0
failed=0
ok() {
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }

# Starts keel-vmm in the background, stdin from a fifo we hold open on fd 3.
start_vm() {  # kernel
    rm -f "$tmp/in" "$tmp/out" "$tmp/err"
    mkfifo "$tmp/in"
    "$vmm" -m 512 -kernel "$1" -initrd "$cache/initramfs.cpio" -append "$cmdline" \
        <"$tmp/in" >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    exec 3>"$tmp/in"
}

# wait_for PATTERN SECONDS: until the serial output matches, keel-vmm ends,
# or time runs out.  Returns 0 when it matched.
wait_for() {
    i=0
    while [ $i -lt $(($2 * 5)) ]; do
        grep -q -- "$1" "$tmp/out" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { grep -q -- "$1" "$tmp/out"; return $?; }
        sleep 0.2
        i=$((i + 1))
    done
    return 1
}

# wait_exit SECONDS: until keel-vmm ends; sets rc (or 124 on timeout).
wait_exit() {
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt $(($1 * 5)) ]; do
        sleep 0.2
        i=$((i + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        wait "$pid" 2>/dev/null
        rc=124
    else
        wait "$pid"
        rc=$?
    fi
    pid=
    exec 3>&-
}

stop_vm() {
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=
    exec 3>&-
}

early_log_checks() {  # label
    ok $(grep -q '^\[ *0\.000000\] Linux version [0-9]' "$tmp/out"; echo $?) \
        "$1: version banner on ttyS0"
    ok $(grep -qF "Command line: $cmdline" "$tmp/out"; echo $?) "$1: our command line"
    # "usable" up to Linux 6.x; newer kernels print "System RAM".
    ok $(grep -Eq 'BIOS-e820: \[mem 0x0000000000000000-0x000000000009fbff\] +(usable|System RAM)' "$tmp/out" &&
         grep -Eq 'BIOS-e820: \[mem 0x0000000000100000-0x000000001fffffff\] +(usable|System RAM)' "$tmp/out"
         echo $?) "$1: our e820 map (640 KiB low memory, 1 MiB-512 MiB)"
}

shell_checks() {  # label
    if wait_for 'keel-initramfs: up' 120; then
        ok 0 "$1: the initramfs /init ran"
    else
        ok 1 "$1: the initramfs /init ran"
    fi
    sleep 1
    echo 'echo keel-answer-$((6*7))' >&3
    if wait_for 'keel-answer-42' 30; then
        ok 0 "$1: the shell answered a command typed on ttyS0"
    else
        ok 1 "$1: the shell answered a command typed on ttyS0"
    fi
    echo 'reboot -f' >&3
    wait_exit 60
    ok $([ "$rc" -eq 0 ]; echo $?) "$1: reboot -f (i8042 reset) ends keel-vmm with status 0 (got $rc)"
}

show_failure() {
    [ $failed -eq 0 ] && return
    echo "# --- serial (last 30 lines)"
    tail -n 30 "$tmp/out" | sed 's/^/# /'
    echo "# --- stderr"
    sed 's/^/# /' "$tmp/err"
}

# ---- 1. vmlinux through PVH ----------------------------------------------
start_vm "$cache/vmlinux"
start_time=$(date +%s)
wait_for 'BIOS-e820: \[mem 0x0000000000100000' 120
echo "# early log after $(( $(date +%s) - start_time )) s"
ok $(grep -q 'boot=linux-pvh' "$tmp/err"; echo $?) "PVH: keel-vmm found the PVH entry note"
early_log_checks PVH
if [ $pvm = yes ]; then
    if [ "$slow" = 1 ]; then
        wait_exit 600
        ok $([ "$rc" -eq 2 ] && grep -q 'KVM internal error' "$tmp/err" &&
             grep -q 'cannot emulate that instruction' "$tmp/err"; echo $?) \
            "PVH on kvm_pvm: ends with the internal error, explained (rc=$rc)"
        grep 'keel-vmm:' "$tmp/err" | sed 's/^/# /'
    else
        stop_vm
        skip "PVH on kvm_pvm: the run up to the int3 self-test takes ~2 min (KEEL_SLOW_TESTS=1)"
    fi
    for what in "initramfs /init" "shell command" "reboot -f"; do
        skip "PVH: $what: $pvm_reason"
    done
else
    shell_checks PVH
    stop_vm
fi
show_failure

# ---- 2. bzImage through the boot protocol ----------------------------------
if [ $pvm = yes ] && [ "$slow" != 1 ]; then
    for what in "early log" "shell"; do
        skip "bzImage: $what: $pvm_reason; the decompressor alone takes minutes there (KEEL_SLOW_TESTS=1)"
    done
else
    start_vm "$cache/vmlinuz"
    start_time=$(date +%s)
    wait_for 'BIOS-e820: \[mem 0x0000000000100000' 600
    echo "# early log after $(( $(date +%s) - start_time )) s"
    ok $(grep -q 'boot=linux-bzimage-64' "$tmp/err"; echo $?) "bzImage: 64-bit entry"
    early_log_checks bzImage
    if [ $pvm = yes ]; then
        stop_vm
        skip "bzImage: shell: $pvm_reason"
    else
        shell_checks bzImage
        stop_vm
    fi
    show_failure
fi

echo "1..$n"
exit $failed
