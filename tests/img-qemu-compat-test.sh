#!/bin/sh
# keel-img beside qemu-img: the same commands on the same raw images must
# give the same exit codes, the same JSON keys and values, the same
# messages where scripts read them, and the same image contents; and every
# format qemu-img makes is named by keel-img info and refused by keel-vmm
# (with "format=raw if you mean it"), never called raw.
. "${top_srcdir:-.}/tests/block-qemu-lib.sh"
need_qemu

keys() { grep -o '"[a-z-]*" *:' "$1" | tr -d ' :' | sort -u; }
flat() { tr -d ' \n' < "$1"; }
both() { # LABEL ARGS...: run "qemu-img ARGS" and "keel-img ARGS"; q.*/k.* outputs, qrc/krc
    label=$1; shift
    qemu-img "$@" > "$work/q.out" 2> "$work/q.err"; qrc=$?
    "$keel_img" "$@" > "$work/k.out" 2> "$work/k.err"; krc=$?
}
same_rc() {
    if [ "$qrc" = "$krc" ]; then ok "$label: exit $krc as qemu-img"; else
        notok "$label: exit $krc, qemu-img $qrc" "$work/k.err" "$work/q.err"; fi
}

a="$work/a.img"; b="$work/b.img"
qemu-img create -q -f raw "$a" 64M
qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 9M 3M' -c 'write -P 0x11 63M 512' "$a" > /dev/null

# ---- info ---------------------------------------------------------------------------------
both "info --output=json" info --output=json "$a"; same_rc
qk=$(keys "$work/q.out"); kk=$(keys "$work/k.out")
check "info --output=json: the same keys ($(echo $kk))" test "$qk" = "$kk"
for k in virtual-size format actual-size dirty-flag; do
    qv=$(flat "$work/q.out" | grep -o "\"$k\":[^,}]*"); kv=$(flat "$work/k.out" | grep -o "\"$k\":[^,}]*")
    check "info --output=json: $qv" test "$qv" = "$kv"
done
both "info -U" info -U "$a"; same_rc
check "info: 'file format: raw' and the virtual size line as qemu-img" sh -c \
    "grep '^file format\|^virtual size' $work/q.out > $work/q.l; grep '^file format\|^virtual size' $work/k.out > $work/k.l; cmp -s $work/q.l $work/k.l"
: > "$work/empty.img"
both "info on a 0-byte file" info --output=json "$work/empty.img"; same_rc
check "0-byte file: virtual-size 0" sh -c "tr -d ' \n' < $work/k.out | grep -q '\"virtual-size\":0'"
mkdir "$work/dir"
both "info on a directory" info "$work/dir"; same_rc
both "info on a missing file" info "$work/missing.img"; same_rc
mkfifo "$work/fifo"
timeout 10 "$keel_img" info "$work/fifo" > "$work/k.out" 2> "$work/k.err"; rc=$?
check "info on a FIFO: refused at once, no hang (exit $rc)" sh -c "test $rc -eq 1 && grep -q FIFO $work/k.err"

# ---- check ------------------------------------------------------------------------------------
both "check" check "$a"; same_rc
check "check: qemu-img's message" grep -q "This image format does not support checks" "$work/k.err"
both "check --output=json" check --output=json -f raw "$a"; same_rc

# ---- resize -----------------------------------------------------------------------------------
for args in "32M" "+1.5M" "-- -1M" "--shrink -- -1M" "-- -1G" "--shrink 16M" "1.5G"; do
    cp --sparse=always "$a" "$work/rq.img"; cp --sparse=always "$a" "$work/rk.img"
    # shellcheck disable=SC2086
    set -- $args
    qemu-img resize -f raw "$work/rq.img" "$@" > "$work/q.out" 2> "$work/q.err"; qrc=$?
    "$keel_img" resize -f raw "$work/rk.img" "$@" > "$work/k.out" 2> "$work/k.err"; krc=$?
    label="resize $args"; same_rc
    check "resize $args: the same size ($(stat -c %s "$work/rk.img"))" \
        test "$(stat -c %s "$work/rq.img")" = "$(stat -c %s "$work/rk.img")"
done

# ---- convert ------------------------------------------------------------------------------------
for opts in "" "-S 0" "-S 64k" "-t none -T none" "-W -m 16" "-p"; do
    rm -f "$work/cq.img" "$work/ck.img"
    # shellcheck disable=SC2086
    qemu-img convert -f raw -O raw $opts "$a" "$work/cq.img" > /dev/null 2>&1; qrc=$?
    # shellcheck disable=SC2086
    "$keel_img" convert -f raw -O raw $opts "$a" "$work/ck.img" > "$work/k.out" 2> "$work/k.err"; krc=$?
    label="convert $opts"; same_rc
    check "convert $opts: the same contents" cmp -s "$work/cq.img" "$work/ck.img"
    qemu-img map --output=json -f raw "$work/cq.img" > "$work/mq" 2>/dev/null
    qemu-img map --output=json -f raw "$work/ck.img" > "$work/mk" 2>/dev/null
    check "convert $opts: as sparse as qemu-img's (the same map)" sh -c "cmp -s $work/mq $work/mk"
done

# ---- compare ------------------------------------------------------------------------------------
cp --sparse=always "$a" "$b"
both "compare identical" compare "$a" "$b"; same_rc
check "compare: 'Images are identical.'" cmp -s "$work/q.out" "$work/k.out"
qemu-io -f raw -c 'write -P 0x22 5000 100' "$b" > /dev/null
both "compare different" compare -f raw -F raw "$a" "$b"; same_rc
check "compare: the same 'Content mismatch at offset' line" cmp -s "$work/q.out" "$work/k.out"
cp --sparse=always "$a" "$b"; truncate -s +1M "$b"
both "compare, size mismatch" compare "$a" "$b"; same_rc
check "compare: the same warning" cmp -s "$work/q.out" "$work/k.out"
both "compare -s, size mismatch" compare -s "$a" "$b"; same_rc
both "compare with a missing file" compare "$a" "$work/missing.img"; same_rc

# ---- map ----------------------------------------------------------------------------------------
both "map --output=json" map --output=json -f raw "$a"; same_rc
check "map --output=json: the same extents (SEEK_DATA/HOLE)" sh -c "test \"\$(tr -d ' \n' < $work/q.out)\" = \"\$(tr -d ' \n' < $work/k.out)\""
both "map" map -f raw "$a"; same_rc
check "map (human): the same table" cmp -s "$work/q.out" "$work/k.out"

# ---- create, bench -------------------------------------------------------------------------------
both "create 1.5M (a fraction)" create -f raw "$work/f.img" 1.5M; same_rc
check "create 1.5M: $(stat -c %s "$work/f.img") bytes" test "$(stat -c %s "$work/f.img")" = 1572864
qemu-img create -q -f raw "$work/pq.img" 1M; qemu-img create -q -f raw "$work/pk.img" 1M
qemu-img bench -w -c 4 -d 1 -s 4k --pattern=0xab -f raw "$work/pq.img" > /dev/null 2>&1; qrc=$?
"$keel_img" bench -q -w -c 4 -d 1 -s 4k --pattern=0xab -f raw "$work/pk.img" > /dev/null 2>&1; krc=$?
label="bench --pattern=0xab"; same_rc
check "bench --pattern=0xab writes what qemu-img bench writes" cmp -s "$work/pq.img" "$work/pk.img"
# qemu-img 7.2 waits forever on -d 0; keel-img refuses it (the issue's point).
timeout 10 "$keel_img" bench -d 0 -c 1 -f raw "$work/pk.img" > /dev/null 2> "$work/k.err"; krc=$?
check "bench -d 0: refused at once with one line (exit $krc)" sh -c "test $krc -eq 1 && grep -q depth $work/k.err"

# ---- other formats: named, never raw; keel-vmm refuses them -------------------------------------------
for fmt in qcow2 qed vmdk vdi vhdx vpc parallels luks; do
    f="$work/x.$fmt"
    case $fmt in
    luks) qemu-img create -q -f luks --object secret,id=s0,data=keel -o key-secret=s0,iter-time=10 "$f" 1M ;;
    *) qemu-img create -q -f $fmt "$f" 1M ;;
    esac || { skip "$fmt" "qemu-img cannot create it here"; continue; }
    both "info $fmt" info --output=json "$f"
    qf=$(flat "$work/q.out" | grep -o '"format":"[a-z0-9]*"' | head -1)
    kf=$(flat "$work/k.out" | grep -o '"format":"[a-z0-9]*"' | head -1)
    check "info names $fmt as qemu-img does ($kf)" test "$qf" = "$kf" -a "$krc" = 0
    if have_vmm; then
        "$keel_vmm" -kernel "$keel_guest" -serial none -drive "file=$f,if=virtio" > "$work/out" 2> "$work/err"; rc=$?
        check "keel-vmm refuses a $fmt image, naming it, with the hint" sh -c \
            "test $rc -eq 1 && grep -q 'is a $fmt image' $work/err && grep -q 'format=raw if you mean it' $work/err && test \$(wc -l < $work/err) -eq 1"
    else
        skip "keel-vmm refuses $fmt" "keel-vmm not built"
    fi
done
printf 'QFI\373\0\0\0\3' > "$work/trunc.qcow2"
"$keel_img" info "$work/trunc.qcow2" > "$work/k.out" 2> "$work/k.err"
check "a truncated qcow2 header is still called qcow2 (qemu-img says raw)" grep -q '^file format: qcow2' "$work/k.out"
if have_vmm; then
    "$keel_vmm" -kernel "$keel_guest" -serial none -drive "file=$work/trunc.qcow2,if=virtio" > "$work/out" 2> "$work/err"; rc=$?
    check "keel-vmm refuses the truncated qcow2 header" sh -c "test $rc -eq 1 && grep -q 'qcow2' $work/err"
    "$keel_vmm" -kernel "$keel_guest" -serial none -drive "file=$a,if=virtio" > "$work/out" 2> "$work/err"
    check "a probed raw image gets QEMU's warning" grep -q "probing guessed raw" "$work/err"
    "$keel_vmm" -kernel "$keel_guest" -serial none -drive "file=$a,format=raw,if=virtio" > "$work/out" 2> "$work/err"
    check "format=raw: no warning" sh -c "! grep -q 'probing guessed raw' $work/err"
else
    skip "truncated qcow2 in keel-vmm" "keel-vmm not built"; skip "probed raw warning" "keel-vmm not built"
    skip "format=raw no warning" "keel-vmm not built"
fi

echo "1..$n"
exit $fail
