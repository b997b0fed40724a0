#!/bin/sh
# tests/fuzz-virtqueue.sh — builds the libFuzzer targets with clang's
# libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer (whatever
# compiler the tree was configured with), seeds a corpus for each, and
# fuzzes each for FUZZ_SECONDS (default 10 here; `make fuzz` passes 60):
# tests/fuzz-virtqueue.c (the virtqueue + virtio-blk request path) and
# tests/fuzz-qmp.c (the QMP monitor's input).  TAP; exit 77 when clang or its libFuzzer runtime
# is missing or libkeel is not built yet.
#
# Environment: top_builddir / top_srcdir (default: ../build and the
# script's parent), CLANG (default clang), FUZZ_SECONDS, FUZZ_ARGS (extra
# libFuzzer flags), FUZZ_CORPUS (a corpus directory to keep between runs).
here=$(cd "$(dirname "$0")" && pwd)
: "${top_srcdir:=$(dirname "$here")}"
: "${top_builddir:=$top_srcdir/build}"
: "${FUZZ_SECONDS:=10}"
CLANG=${CLANG:-clang}

skip_all() { echo "1..0 # SKIP $1"; exit 77; }

command -v "$CLANG" >/dev/null 2>&1 || skip_all "$CLANG not installed (Debian: apt-get install clang)"
lib=$top_builddir/.libs/libkeel.a
[ -f "$lib" ] || skip_all "$lib not built (run make first)"
[ -f "$top_builddir/config.h" ] || skip_all "no config.h in $top_builddir"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
    >"$tmp/probe.c"
"$CLANG" -fsanitize=fuzzer,address,undefined "$tmp/probe.c" -o "$tmp/probe" 2>"$tmp/probe.err" ||
    skip_all "$CLANG cannot link -fsanitize=fuzzer (libFuzzer runtime missing: $(head -n 1 "$tmp/probe.err"))"

# The libraries libkeel needs, as configure found them.
mkvar() { sed -n "s/^$1 = //p" "$top_builddir/Makefile" | head -n 1; }
LIBS="$(mkvar LIBURING_LIBS) $(mkvar LIBAIO_LIBS) $(mkvar GLIB_LIBS) $(mkvar PTHREAD_LIBS) $(mkvar LIBS)"
CFLAGS_GLIB="$(mkvar GLIB_CFLAGS) $(mkvar LIBURING_CFLAGS)"

n=0
failed=0
ok() {
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}

# fuzz_one NAME EXTRA_CFLAGS EXTRA_LIBS SOURCES...: build tests/NAME from
# tests/NAME.c and SOURCES, seed its corpus, fuzz it for FUZZ_SECONDS.
fuzz_one() {
name=$1 extra_cflags=$2 extra_libs=$3
shift 3
bin=$top_builddir/tests/$name
mkdir -p "$top_builddir/tests"
s=$top_srcdir
srcs=
for f in "$@"; do srcs="$srcs $s/$f"; done
# shellcheck disable=SC2086
"$CLANG" -std=gnu99 -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
    -I"$s" -I"$top_builddir" -DGLIB_VERSION_MIN_REQUIRED=GLIB_VERSION_2_56 \
    -DGLIB_VERSION_MAX_ALLOWED=GLIB_VERSION_2_56 $CFLAGS_GLIB $extra_cflags \
    "$s/tests/$name.c" $srcs "$lib" $LIBS $extra_libs -o "$bin" 2>"$tmp/build.err"
r=$?
ok $r "$name builds with $CLANG -fsanitize=fuzzer,address,undefined"
if [ $r -ne 0 ]; then
    sed 's/^/# /' "$tmp/build.err" | head -n 40
    return
fi

corpus=${FUZZ_CORPUS:-$tmp/corpus}/$name
mkdir -p "$corpus"
KEEL_FUZZ_SEEDS=$corpus "$bin" >/dev/null 2>&1
[ -n "$(ls "$corpus")" ]
ok $? "$name: seed corpus written ($(ls "$corpus" | wc -l) inputs)"

# detect_leaks=0: the device and loop live for the whole process on purpose.
# shellcheck disable=SC2086
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$bin" "$corpus" -max_total_time="$FUZZ_SECONDS" -max_len=4096 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$tmp/" ${FUZZ_ARGS:-} \
    >"$tmp/fuzz.log" 2>&1
r=$?
grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$tmp/fuzz.log" |
    sed 's/^/# /'
ok $r "$name: fuzzed for ${FUZZ_SECONDS}s without a crash, leak or sanitizer report"
if [ $r -ne 0 ]; then
    grep -v '^#[0-9]' "$tmp/fuzz.log" | tail -n 60 | sed 's/^/# /'
    for a in "$tmp"/crash-* "$tmp"/timeout-* "$tmp"/oom-*; do
        [ -f "$a" ] || continue
        cp "$a" "$top_builddir/tests/" && echo "# reproducer kept: $top_builddir/tests/$(basename "$a")"
    done
fi
}

# The virtqueue and virtio-blk request parser.
fuzz_one fuzz-virtqueue "" "" vmm/virtqueue.c vmm/virtio-pci.c vmm/virtio-blk.c vmm/kvm.c \
    vmm/cpuid.c vmm/bus.c vmm/pci.c vmm/options.c
# The QMP monitor's input (framing, json-glib, dispatch) on the real run state.
fuzz_one fuzz-qmp "$(mkvar JSON_GLIB_CFLAGS)" "$(mkvar JSON_GLIB_LIBS)" vmm/qmp.c \
    vmm/machine.c vmm/chardev.c
echo "1..$n"
exit $failed
