#!/bin/sh
# Files that are not regular files, named on keel-vmm's command line (issue
# 16 item 4): a FIFO as -kernel, -initrd, -drive file= (read-write and
# readonly=on), a socket, a character device.  Each must be refused with one
# line naming the file and what it is, exit 1, and never hang: before the
# fix, open() of a FIFO blocked with SIGTERM/SIGINT already blocked for the
# signal fd, so only SIGKILL ended it.  The checks run before /dev/kvm is
# opened, so this test needs no KVM.  keel-img must not hang on a FIFO either.
top_builddir=${top_builddir:-.}
vmm=${KEEL_VMM:-$top_builddir/vmm/keel-vmm}
img=${KEEL_IMG:-$top_builddir/keel-img}
guest=$top_builddir/vmm/guest/keel-guest

skip_all() { echo "1..0 # SKIP $1"; exit 77; }
command -v timeout >/dev/null 2>&1 || skip_all "no timeout(1)"
[ -x "$vmm" ] || skip_all "$vmm not built"
[ -f "$guest" ] || skip_all "$guest not built"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-vmm-fifo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0
ok() {
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}
mkfifo "$tmp/fifo" || skip_all "mkfifo failed"
: >"$tmp/disk"

# refused <needle> <args...>: exit 1 within 10 s (not 124: killed by
# timeout), every stderr line names the needle, nothing on stdout.
refused() {
    needle=$1
    shift
    timeout -s KILL 10 "$vmm" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    rc=$?
    if [ $rc -eq 1 ] && [ -s "$tmp/err" ] && ! grep -vqF -- "$needle" "$tmp/err" &&
        [ ! -s "$tmp/out" ]; then
        ok 0 "keel-vmm $* → exit 1 naming '$needle'"
    else
        ok 1 "keel-vmm $* → exit 1 naming '$needle' (rc=$rc; 137 = hung until SIGKILL)"
        sed 's/^/# /' "$tmp/err"
    fi
}

refused "-kernel $tmp/fifo: is a FIFO" -kernel "$tmp/fifo"
refused "-initrd $tmp/fifo: is a FIFO" -kernel "$guest" -initrd "$tmp/fifo"
refused "-drive file=$tmp/fifo: is a FIFO" -kernel "$guest" -drive file="$tmp/fifo",format=raw
refused "-drive file=$tmp/fifo: is a FIFO" -kernel "$guest" -drive file="$tmp/fifo",format=raw,readonly=on
refused "-drive file=$tmp/fifo: is a FIFO" -kernel "$guest" -drive if=none,id=d0,file="$tmp/fifo",readonly=on \
    -device virtio-blk-pci,drive=d0
refused "-kernel /dev/null: is a character device" -kernel /dev/null
refused "-initrd /dev/zero: is a character device" -kernel "$guest" -initrd /dev/zero
refused "-drive file=/dev/zero: is a character device" -kernel "$guest" -drive file=/dev/zero,format=raw

# Two bad drives: both named in one run.
timeout -s KILL 10 "$vmm" -kernel "$guest" -drive file="$tmp/fifo",format=raw \
    -drive file=/dev/zero,format=raw,readonly=on >"$tmp/out" 2>"$tmp/err" </dev/null
rc=$?
ok "$([ $rc -eq 1 ] && grep -q "fifo: is a FIFO" "$tmp/err" && grep -q "/dev/zero: is a character" "$tmp/err"
     echo $?)" "two bad drives: both named in one run (rc=$rc)"

if command -v python3 >/dev/null 2>&1 &&
    python3 -c "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$tmp/sock" 2>/dev/null; then
    refused "-kernel $tmp/sock: is a socket" -kernel "$tmp/sock"
    refused "-drive file=$tmp/sock: is a socket" -kernel "$guest" -drive file="$tmp/sock",format=raw
else
    n=$((n + 1)); echo "ok $n # SKIP no python3 to make a socket"
fi

# A regular file is still fine up to the point where KVM is needed.
timeout -s KILL 10 "$vmm" -kernel "$guest" -drive file="$tmp/disk",format=raw >"$tmp/out" 2>"$tmp/err" </dev/null
rc=$?
ok "$([ $rc -ne 137 ] && ! grep -q "FIFO\|regular file" "$tmp/err"; echo $?)" \
    "a regular drive file passes the check (rc=$rc: KVM or not)"

if [ -x "$img" ]; then
    timeout -s KILL 10 "$img" info "$tmp/fifo" >"$tmp/out" 2>"$tmp/err" </dev/null
    rc=$?
    ok "$([ $rc -ne 0 ] && [ $rc -ne 137 ] && grep -q "is a FIFO, not an image" "$tmp/err"
         echo $?)" "keel-img info on a FIFO: an error, not a hang (rc=$rc)"
fi
echo "1..$n"
exit $failed
