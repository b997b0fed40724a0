# shellcheck shell=sh
# tests/fuzz-lib.sh — shared by the libFuzzer scripts (tests/fuzz-*.sh; sourced,
# not run).  fuzz_main NAME "SOURCES" MAX_LEN LEAKS builds tests/fuzz-NAME.c
# plus SOURCES (paths under the source tree) with clang's libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer (whatever compiler the tree
# was configured with) against the built libkeel.a, writes the target's seed
# corpus (KEEL_FUZZ_SEEDS=DIR, plus SEED FILES that exist), runs its regress-* inputs once (reproducers
# of fixed crashes), then fuzzes for FUZZ_SECONDS.  TAP; exit 77 when clang
# or its libFuzzer runtime is missing or libkeel is not built yet.
#
# Environment: top_builddir / top_srcdir (default: ../build and the script's
# parent), CLANG (default clang), FUZZ_SECONDS (default 10; `make fuzz`
# passes 60), FUZZ_ARGS (extra libFuzzer flags), FUZZ_CORPUS (a directory
# to keep corpora between runs: FUZZ_CORPUS/NAME), FUZZ_COVERAGE=1 (after
# the run, count the functions the corpus reaches in each source file).
here=$(cd "$(dirname "$0")" && pwd)
: "${top_srcdir:=$(dirname "$here")}"
: "${top_builddir:=$top_srcdir/build}"
: "${FUZZ_SECONDS:=10}"
# The KVM layer (vmm/kvm.h's parts) with what it links against, for the
# targets that need a Vm.
# shellcheck disable=SC2034  # used by the fuzz-*.sh that source this file
vmm_kvm_sources="vmm/kvm.c vmm/kvm-caps.c vmm/kvm-memory.c vmm/kvm-irq.c vmm/kvm-vcpu.c \
    vmm/cpuid.c vmm/bus.c"
CLANG=${CLANG:-clang}

skip_all() { echo "1..0 # SKIP $1"; exit 77; }

n=0
failed=0
ok() {
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}

fuzz_main() {
    name=$1 sources=$2 max_len=$3 leaks=$4 extra_seeds=${5:-}
    command -v "$CLANG" >/dev/null 2>&1 || skip_all "$CLANG not installed (Debian: apt-get install clang)"
    lib=$top_builddir/.libs/libkeel.a
    [ -f "$lib" ] || skip_all "$lib not built (run make first)"
    [ -f "$top_builddir/config.h" ] || skip_all "no config.h in $top_builddir"

    tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-fuzz-$name.XXXXXX") || exit 1
    trap 'rm -rf "$tmp"' EXIT INT TERM

    printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
        >"$tmp/probe.c"
    "$CLANG" -fsanitize=fuzzer,address,undefined "$tmp/probe.c" -o "$tmp/probe" 2>"$tmp/probe.err" ||
        skip_all "$CLANG cannot link -fsanitize=fuzzer (libFuzzer runtime missing: $(head -n 1 "$tmp/probe.err"))"

    # The libraries libkeel needs, as configure found them.
    mkvar() { sed -n "s/^$1 = //p" "$top_builddir/Makefile" | head -n 1; }
    LIBS="$(mkvar LIBURING_LIBS) $(mkvar LIBAIO_LIBS) $(mkvar GLIB_LIBS) $(mkvar PTHREAD_LIBS) $(mkvar LIBS)"
    CFLAGS_GLIB="$(mkvar GLIB_CFLAGS) $(mkvar LIBURING_CFLAGS)"
    # A target's own libraries: FUZZ_PKGS names configure's PKG_CHECK_MODULES
    # prefixes (e.g. JSON_GLIB), whose _CFLAGS/_LIBS it adds.
    for pkg in ${FUZZ_PKGS:-}; do
        CFLAGS_GLIB="$CFLAGS_GLIB $(mkvar "${pkg}_CFLAGS")"
        LIBS="$LIBS $(mkvar "${pkg}_LIBS")"
    done

    bin=$top_builddir/tests/fuzz-$name
    mkdir -p "$top_builddir/tests"
    s=$top_srcdir
    srcs=
    for f in $sources; do srcs="$srcs $s/$f"; done
    # shellcheck disable=SC2086
    "$CLANG" -std=gnu99 -g -O1 -fno-omit-frame-pointer \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
        -I"$s" -I"$top_builddir" -DGLIB_VERSION_MIN_REQUIRED=GLIB_VERSION_2_56 \
        -DGLIB_VERSION_MAX_ALLOWED=GLIB_VERSION_2_56 $CFLAGS_GLIB \
        "$s/tests/fuzz-$name.c" $srcs "$lib" $LIBS -o "$bin" 2>"$tmp/build.err"
    r=$?
    ok $r "fuzz-$name builds with $CLANG -fsanitize=fuzzer,address,undefined"
    if [ $r -ne 0 ]; then
        sed 's/^/# /' "$tmp/build.err" | head -n 40
        echo "1..$n"
        exit 1
    fi

    corpus=$tmp/corpus
    [ -n "${FUZZ_CORPUS:-}" ] && corpus=$FUZZ_CORPUS/$name
    mkdir -p "$corpus"
    KEEL_FUZZ_SEEDS=$corpus "$bin" >/dev/null 2>&1
    for f in $extra_seeds; do
        [ -f "$f" ] && cp "$f" "$corpus/seed-$(basename "$f")"
    done
    [ -n "$(ls "$corpus")" ]
    ok $? "seed corpus written ($(ls "$corpus" | wc -l) inputs)"

    opts="detect_leaks=$leaks:abort_on_error=1"
    if ls "$corpus"/regress-* >/dev/null 2>&1; then
        ASAN_OPTIONS=$opts UBSAN_OPTIONS=print_stacktrace=1 "$bin" "$corpus"/regress-* \
            >"$tmp/regress.log" 2>&1
        r=$?
        ok $r "regression inputs run clean ($(ls "$corpus"/regress-* | wc -l) reproducers of fixed crashes)"
        [ $r -eq 0 ] || grep -v '^#[0-9]' "$tmp/regress.log" | tail -n 40 | sed 's/^/# /'
    fi

    # shellcheck disable=SC2086
    ASAN_OPTIONS=$opts UBSAN_OPTIONS=print_stacktrace=1 \
        "$bin" "$corpus" -max_total_time="$FUZZ_SECONDS" -max_len="$max_len" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$tmp/" ${FUZZ_ARGS:-} \
        >"$tmp/fuzz.log" 2>&1
    r=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE)' "$tmp/fuzz.log" |
        sed 's/^/# /'
    ok $r "fuzzed for ${FUZZ_SECONDS}s without a crash, leak or sanitizer report"
    if [ $r -ne 0 ]; then
        grep -v '^#[0-9]' "$tmp/fuzz.log" | tail -n 60 | sed 's/^/# /'
        for a in "$tmp"/crash-* "$tmp"/timeout-* "$tmp"/oom-* "$tmp"/leak-*; do
            [ -f "$a" ] || continue
            cp "$a" "$top_builddir/tests/" && echo "# reproducer kept: $top_builddir/tests/$(basename "$a")"
        done
    fi
    if [ "${FUZZ_COVERAGE:-0}" = 1 ]; then
        # Functions reached by the corpus, per source file.
        ASAN_OPTIONS=$opts "$bin" "$corpus" -runs=0 -print_coverage=1 >"$tmp/cov.log" 2>&1
        for f in $sources; do
            case $f in *.c) ;; *) continue ;; esac
            b=$(basename "$f")
            c=$(grep -c "^COVERED_FUNC:.* $s/$f:\|^COVERED_FUNC:.*/$b:" "$tmp/cov.log")
            u=$(grep -c "^UNCOVERED_FUNC:.* $s/$f:\|^UNCOVERED_FUNC:.*/$b:" "$tmp/cov.log")
            echo "# coverage: $f: $c of $((c + u)) functions reached"
        done
    fi
    echo "1..$n"
    exit $failed
}
