#!/bin/sh
# keel-img: create (sparse), info (size, allocation, engine = the features
# report's block-engine line), bench (reads, writes, random, flush interval,
# pattern, injected error), and one-line errors with exit status 1.
img="${top_builddir:-.}/keel-img"
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); fail=1; echo "not ok $n - $1"; shift; for f in "$@"; do sed 's/^/#   /' "$f"; done; }
check() { # check DESCRIPTION COMMAND...: ok when the command succeeds
    d=$1; shift
    if "$@"; then ok "$d"; else notok "$d" out err; fi
}
# Lines that may accompany an error legitimately: sanitizer notes, and the
# library's one-time fallback notice on an old kernel ("keel: io_uring
# unavailable (ENOSYS), using ...").
NOTES='^==[0-9]*==|^keel: .* unavailable \(.*\), using '
export NOTES
one_line_error() { # exit status 1 and exactly one line on stderr (notes aside)
    test "$rc" -eq 1 && test "$(grep -vEc "$NOTES" err)" -eq 1 && grep -q '^keel-img: ' err
}

# A directory where O_DIRECT works (keel-img info defaults to cache=none).
dir=
for d in "$KEEL_TEST_DIR" "${top_builddir:-.}" /var/tmp; do
    test -n "$d" && test -w "$d" || continue
    if dd if=/dev/zero of="$d/keel-img-probe.$$" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
        dir=$d; rm -f "$d/keel-img-probe.$$"; break
    fi
    rm -f "$d/keel-img-probe.$$"
done
if test -z "$dir"; then
    echo "1..0 # SKIP no directory supports O_DIRECT (set KEEL_TEST_DIR)"
    exit 77
fi
f="$dir/keel-img-test.$$.img"
trap 'rm -f "$f" out err' EXIT

"$img" --help > out 2> err; rc=$?
check "--help exits 0 and shows the commands" sh -c 'test '$rc' -eq 0 && grep -q "bench \[-c COUNT\]" out'
"$img" > out 2> err; rc=$?
check "no command: one line, exit 1" one_line_error
"$img" frobnicate > out 2> err; rc=$?
check "unknown command: one line, exit 1" one_line_error

"$img" create "$f" 64M > out 2> err; rc=$?
check "create FILE 64M" sh -c "test $rc -eq 0 && grep -q \"^Formatting '$f', fmt=raw size=67108864\" out"
check "the image is 64 MiB" test "$(stat -c %s "$f")" -eq 67108864
check "and sparse" test "$(stat -c %b "$f")" -le 8
"$img" create -f qcow2 "$f.x" 1M > out 2> err; rc=$?
check "create -f qcow2: one line, exit 1" one_line_error
"$img" create "$f.x" 12Q > out 2> err; rc=$?
check "create with a bad size: one line, exit 1" one_line_error
rm -f "$f.x"

"$img" info "$f" > out 2> err; rc=$?
check "info exits 0" test $rc -eq 0
check "info: virtual size" grep -q '^virtual size: 64 MiB (67108864 bytes)' out
check "info: disk size" grep -q '^disk size: ' out
want=$("$img" --features | sed -n 's/^block-engine active=\([^ ]*\) .*/\1/p')
check "info: engine ($want) = the features report's block-engine" grep -q "^engine: $want (aio=io_uring cache=none)" out
"$img" info -i threads -t writeback "$f" > out 2> err; rc=$?
check "info -i threads -t writeback: engine threads" grep -q '^engine: threads (aio=threads cache=writeback)' out

"$img" bench -c 2000 -d 8 "$f" > out 2> err; rc=$?
check "bench (reads) runs" sh -c "test $rc -eq 0 && grep -q '^Sending 2000 read requests, 4096 bytes each, 8 in parallel' out && grep -q '^IOPS: [0-9]*, throughput: [0-9.]* MiB/s, engine: ' out"
"$img" bench -c 500 -d 16 -w -t none -i native -r "$f" > out 2> err; rc=$?
check "bench -w -t none -i native -r runs" sh -c "test $rc -eq 0 && grep -q 'random offsets' out"
"$img" bench -c 300 -d 4 -w --flush-interval=50 -i threads "$f" > out 2> err; rc=$?
check "bench --flush-interval runs" test $rc -eq 0
"$img" bench -c 300 -d 4 -w --flush-interval=50 --no-drain -t unsafe "$f" > out 2> err; rc=$?
check "bench --no-drain runs" test $rc -eq 0
"$img" bench -c 4 -d 1 -s 512 -o 1M -S 512 -w --pattern=171 "$f" > out 2> err; rc=$?
bench_rc=$rc
uniq=$(od -An -tx1 -v -j 1048576 -N 2048 "$f" | tr -s ' ' '\n' | grep -v '^$' | sort -u)
check "bench --pattern=171 -o 1M -S 512 writes 0xab there" test "$bench_rc.$uniq" = "0.ab"

"$img" bench -i native -t writeback "$f" > out 2> err; rc=$?
check "bench -i native -t writeback: one line, exit 1" one_line_error
check "...with QEMU's message" grep -q 'aio=native was specified, but it requires cache.direct=on' err
"$img" bench -d 0 "$f" > out 2> err; rc=$?
check "bench -d 0: one line, exit 1" one_line_error
"$img" bench -c 100 -x "$f" > out 2> err; rc=$?
check "bench -x: one line naming -x, exit 1" sh -c "test $rc -eq 1 && grep -q \"unknown option '-x'\" err && test \$(grep -vEc \"\$NOTES\" err) -eq 1"
"$img" bench -c 100 --inject=read:EIO:req=50 "$f" > out 2> err; rc=$?
check "bench with an injected EIO: one line, exit 1" one_line_error
check "...saying the request failed" grep -q 'request failed: Input/output error' err
"$img" bench -c 10 /nonexistent/keel.img > out 2> err; rc=$?
check "bench on a missing file: one line, exit 1" one_line_error

echo "1..$n"
exit $fail
