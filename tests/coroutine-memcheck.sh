#!/bin/sh
# The coroutine suite under valgrind memcheck, on both backends (the stacks
# are registered with valgrind, so switching between them is not reported as
# wild stack writes).  Any memcheck error or a definite leak fails; the
# "possibly lost" TLS blocks of detached helper threads are not errors.
# Skips (77) without valgrind.
test_bin=${top_builddir:-.}/tests/coroutine-test
if ! command -v valgrind >/dev/null 2>&1; then
    echo "1..0 # SKIP valgrind not installed"
    exit 77
fi
if grep -qa -e __asan_init -e __tsan_init "$test_bin"; then
    echo "1..0 # SKIP a sanitizer build: memcheck cannot run it"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-memcheck.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
echo "1..2"
n=0
for backend in ucontext sigaltstack; do
    n=$((n + 1))
    if [ $backend = sigaltstack ]; then
        avoid=${KEEL_AVOID:+$KEEL_AVOID,}ucontext
    else
        avoid=${KEEL_AVOID:-}
    fi
    KEEL_AVOID=$avoid valgrind -q --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite "$test_bin" >"$tmp/out" 2>&1
    rc=$?
    if grep -q "debuginfo reader: Possibly corrupted debuginfo" "$tmp/out"; then
        # e.g. valgrind 3.19 with clang 14's DWARF 5: it cannot run the binary
        echo "ok $n # SKIP $(valgrind --version) cannot read this compiler's debug info ($backend backend)"
        continue
    fi
    fails=$(grep -c '^not ok' "$tmp/out")
    if [ $rc -eq 0 ] && [ "$fails" -eq 0 ]; then
        echo "ok $n - coroutine-test under memcheck, $backend backend: no errors, no definite leaks"
    else
        echo "not ok $n - coroutine-test under memcheck, $backend backend (exit $rc, $fails failed)"
        grep -v '^ok' "$tmp/out" | tail -n 40 | sed 's/^/# /'
    fi
done
