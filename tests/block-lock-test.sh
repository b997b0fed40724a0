#!/bin/sh
# Image locking against a real QEMU, both directions, with QEMU's words:
# a QEMU writer refuses keel-vmm's writer and reader and keel-img's writers
# (info/map/compare still work, like qemu-img's); keel holding an image for
# writing refuses QEMU's writers; readers share; -U; file.locking=off; the
# same image twice in one keel-vmm; KEEL_AVOID=ofd-locks (POSIX locks, with
# QEMU's caveat, still refuse QEMU).  keel-vmm is checked up to /dev/kvm:
# the refusals come before the VM exists.
. "${top_srcdir:-.}/tests/block-qemu-lib.sh"
need_qemu

img="$work/a.img"
qemu-img create -q -f raw "$img" 16M
lockmsg='Failed to get "write" lock'
hint="Is another process using the image \\[$img\\]?"

# keel-vmm up to the point where it opens /dev/kvm.
vmm() { "$keel_vmm" -kernel "$keel_guest" -serial none "$@" > "$work/out" 2> "$work/err"; }
refused_with() { # PATTERN: exit 1, the pattern and QEMU's hint line on stderr
    test "$rc" -eq 1 && grep -q "$1" "$work/err" && grep -q "$hint" "$work/err"
}
got_past_locks() { ! grep -qi "lock" "$work/err"; }

# ---- a QEMU writer holds the image -------------------------------------------------
if qemu_hold "$img" ""; then ok "QEMU holds the image (lock bytes 100, 101, 201)"; else
    notok "QEMU holds the image" "$work/qemu.out"; fi

if have_vmm; then
    vmm -drive "file=$img,format=raw,if=virtio"; rc=$?
    check "keel-vmm writer refused: $lockmsg + QEMU's hint" refused_with "$lockmsg"
    check "...before the VM is created (no /dev/kvm message)" sh -c "! grep -q kvm '$work/err'"
    vmm -drive "file=$img,format=raw,if=virtio,readonly=on"; rc=$?
    check "keel-vmm reader refused: shared \"write\" lock" refused_with 'Failed to get shared "write" lock'
    # A refused QEMU exits at once; one that got the locks would run until
    # the timeout (and fail the check).
    timeout 30 qemu-system-x86_64 -accel tcg -S -nographic -display none -nodefaults \
        -monitor none -drive "file=$img,format=raw,if=virtio,readonly=on" > "$work/q2" 2>&1 < /dev/null
    check "...as QEMU's own read-only -drive is" grep -q 'Failed to get shared "write" lock' "$work/q2"
    vmm -blockdev "{\"driver\":\"file\",\"filename\":\"$img\",\"node-name\":\"f0\"}" \
        -blockdev '{"driver":"raw","file":"f0","node-name":"d0"}' \
        -device virtio-blk-pci,drive=d0,bus=pci.0,addr=0x4,bootindex=1; rc=$?
    check "libvirt's -blockdev line refused the same way" refused_with "$lockmsg"
    if ! have_kvm; then
        vmm -drive "file=$img,format=raw,if=virtio,file.locking=off"; rc=$?
        check "file.locking=off: keel-vmm takes no lock (gets as far as /dev/kvm)" got_past_locks
        vmm -blockdev "driver=file,filename=$img,node-name=f0,locking=off" \
            -device virtio-blk-pci,drive=f0; rc=$?
        check "-blockdev locking=off too" got_past_locks
    else
        skip "file.locking=off" "/dev/kvm present: keel-vmm would boot"
        skip "-blockdev locking=off" "/dev/kvm present"
    fi
    KEEL_AVOID=ofd-locks vmm -drive "file=$img,format=raw,if=virtio"; rc=$?
    check "KEEL_AVOID=ofd-locks: POSIX locks still see QEMU's" refused_with "$lockmsg"
    check "...with QEMU's caveat" grep -q "falling back to POSIX file locks" "$work/err"
else
    for t in writer reader qemu-ro blockdev locking-off blockdev-locking-off avoid caveat; do
        skip "keel-vmm $t" "keel-vmm not built (no KVM headers)"; done
fi

"$keel_img" info "$img" > "$work/out" 2> "$work/err"; rc=$?
check "keel-img info works beside the writer (as qemu-img info)" test "$rc" -eq 0
"$keel_img" map --output=json "$img" > "$work/out" 2> "$work/err"; rc=$?
check "keel-img map works beside the writer" test "$rc" -eq 0
"$keel_img" convert -f raw -O raw "$img" "$work/c.img" > "$work/out" 2> "$work/err"; rc=$?
check "keel-img convert of the in-use image refused (shared \"write\" lock)" refused_with 'Failed to get shared "write" lock'
"$keel_img" convert -U -f raw -O raw "$img" "$work/c.img" > "$work/out" 2> "$work/err"; rc=$?
check "keel-img convert -U reads it anyway" test "$rc" -eq 0
"$keel_img" resize "$img" 32M > "$work/out" 2> "$work/err"; rc=$?
check "keel-img resize refused" refused_with "$lockmsg"
"$keel_img" bench -w -c 1 "$img" > "$work/out" 2> "$work/err"; rc=$?
check "keel-img bench -w refused" refused_with "$lockmsg"
qemu_release

# ---- keel holds the image for writing ------------------------------------------------
# keel-img bench -w with a delay per write keeps a writer open for ~10 s.
"$keel_img" bench -w -q -c 100 -d 1 -s 512 --inject=write:delay=100 "$img" > /dev/null 2>&1 &
bench=$!; KEEL_BG_PIDS=$bench
if wait_lock "$img" 101; then ok "keel-img bench -w holds the write lock byte (101)"; else
    notok "keel-img bench -w holds the write lock"; fi
qemu-io -f raw -c 'write 0 512' "$img" > "$work/out" 2> "$work/err"; rc=$?
check "qemu-io's writer refused by keel: $lockmsg" sh -c "test $rc -ne 0 && grep -q '$lockmsg' '$work/err'"
timeout 20 qemu-system-x86_64 -accel tcg -S -nographic -display none -nodefaults -monitor none \
    -drive "file=$img,format=raw,if=virtio" > "$work/out" 2> "$work/err" < /dev/null; rc=$?
check "qemu-system-x86_64's writer refused by keel" sh -c "test $rc -eq 1 && grep -q '$lockmsg' '$work/err'"
qemu-io -r -f raw -c 'read 0 512' "$img" > "$work/out" 2> "$work/err"; rc=$?
check "qemu-io -r (shares writes) still reads" test "$rc" -eq 0
qemu-img info "$img" > "$work/out" 2> "$work/err"; rc=$?
check "qemu-img info still works" test "$rc" -eq 0
if have_vmm; then
    vmm -drive "file=$img,format=raw,if=virtio"; rc=$?
    check "a second keel-vmm writer refused by keel-img's lock" refused_with "$lockmsg"
else
    skip "second keel writer" "keel-vmm not built"
fi
kill $bench 2>/dev/null; wait $bench 2>/dev/null; KEEL_BG_PIDS=

# ---- readers share ---------------------------------------------------------------------
qemu_hold "$img" ",readonly=on"
"$keel_img" convert -f raw -O raw "$img" "$work/c.img" > "$work/out" 2> "$work/err"; rc=$?
check "beside QEMU's reader, keel-img convert (a reader) works" test "$rc" -eq 0
if have_vmm && ! have_kvm; then
    vmm -drive "file=$img,format=raw,if=virtio,readonly=on"; rc=$?
    check "beside QEMU's reader, a keel-vmm reader gets past the locks" got_past_locks
else
    skip "keel-vmm reader beside QEMU's reader" "keel-vmm not built or /dev/kvm present"
fi
if have_vmm; then
    vmm -drive "file=$img,format=raw,if=virtio"; rc=$?
    check "beside QEMU's reader, a keel-vmm writer is refused" refused_with "$lockmsg"
else
    skip "keel-vmm writer beside QEMU's reader" "keel-vmm not built"
fi
qemu_release

# ---- one keel-vmm, the same image twice ----------------------------------------------------
if have_vmm; then
    for avoid in "" ofd-locks; do
        KEEL_AVOID=$avoid vmm -drive "file=$img,format=raw,if=virtio" \
            -drive "file=$work/../$(basename "$work")/a.img,format=raw,if=virtio"; rc=$?
        check "the same image twice (another path) in one keel-vmm refused${avoid:+ (KEEL_AVOID=$avoid)}" \
            sh -c "test $rc -eq 1 && grep -q '$lockmsg' '$work/err'"
    done
    if ! have_kvm; then
        vmm -drive "file=$img,format=raw,if=virtio,readonly=on" \
            -drive "file=$img,format=raw,if=virtio,readonly=on"; rc=$?
        check "...but twice read-only is fine (readers share)" got_past_locks
    else
        skip "twice read-only" "/dev/kvm present"
    fi
else
    skip "same image twice" "keel-vmm not built"; skip "same image twice (posix)" "keel-vmm not built"
    skip "twice read-only" "keel-vmm not built"
fi

# ---- the features report ----------------------------------------------------------------------
"$keel_img" --features > "$work/out" 2>&1
check "features: image-locks active=ofd here" grep -q '^image-locks active=ofd compiled=ofd,posix reason=default' "$work/out"
KEEL_AVOID=ofd-locks "$keel_img" --features > "$work/out" 2>&1
check "features: KEEL_AVOID=ofd-locks → posix" grep -q '^image-locks active=posix .*reason=KEEL_AVOID' "$work/out"

echo "1..$n"
exit $fail
