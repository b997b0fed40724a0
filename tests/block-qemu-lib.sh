# Shared by the shell tests that run keel beside a real QEMU (sourced).
# TAP helpers, a scratch directory, and a QEMU that holds an image.
#   ok/notok/check DESC CMD...   TAP lines (notok prints out/err)
#   skip DESC REASON             "ok N - DESC # SKIP REASON"
#   need_qemu                    skip the whole test (77) without qemu-system/qemu-img
#   qemu_hold IMG DRIVE-OPTS     start a paused TCG QEMU holding IMG; QEMU_PID
#   qemu_release                 stop it
#   wait_lock IMG BYTE           wait (5 s) until someone holds lock byte BYTE of IMG
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
notok() {
    n=$((n + 1)); fail=1; echo "not ok $n - $1"; shift
    for _f in "$@"; do test -f "$_f" && sed 's/^/#   /' "$_f"; done
}
check() { d=$1; shift; if "$@"; then ok "$d"; else notok "$d" "$work/out" "$work/err"; fi; }

top_builddir=${top_builddir:-.}
keel_img="$top_builddir/keel-img"
keel_vmm="$top_builddir/vmm/keel-vmm"
keel_guest="$top_builddir/vmm/guest/keel-guest"
work=$(mktemp -d "${KEEL_TEST_DIR:-${TMPDIR:-/tmp}}/keel-qemu.XXXXXX") || exit 1
QEMU_PID=
cleanup() {
    qemu_release
    for p in $KEEL_BG_PIDS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

need_qemu() {
    for t in qemu-system-x86_64 qemu-img qemu-io; do
        if ! command -v $t >/dev/null 2>&1; then
            echo "1..0 # SKIP $t not installed (Debian: qemu-system-x86 qemu-utils)"
            exit 77
        fi
    done
}

# keel-vmm runs here only up to /dev/kvm (the refusals come before it).
have_vmm() { test -x "$keel_vmm" && test -f "$keel_guest"; }
have_kvm() { test -c /dev/kvm && test -w /dev/kvm; }

wait_lock() { # IMG BYTE
    ino=$(stat -c %i "$1")
    i=0
    while [ $i -lt 50 ]; do
        awk -v ino="$ino" -v b="$2" '{ split($6, f, ":"); if (f[3] == ino && $7 <= b && $8 >= b) found=1 }
            END { exit !found }' /proc/locks && return 0
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

qemu_hold() { # IMG DRIVE-OPTS
    qemu_release
    qemu-system-x86_64 -accel tcg -S -nographic -display none -nodefaults -monitor none \
        -drive "file=$1,format=raw,if=virtio$2" > "$work/qemu.out" 2>&1 < /dev/null &
    QEMU_PID=$!
    wait_lock "$1" 201     # the last byte QEMU takes (at device realize)
}

qemu_release() {
    if [ -n "$QEMU_PID" ]; then
        kill "$QEMU_PID" 2>/dev/null
        wait "$QEMU_PID" 2>/dev/null
        QEMU_PID=
    fi
}
