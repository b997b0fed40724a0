#!/bin/sh
# Summarise an automake TAP run in BUILD_DIR: every skip with its reason,
# every failure, and one closing line "N passed, N failed, N skipped".
# With --failed-logs: for each failed test, the end of its log (its last
# results and whatever it printed after them: a sanitizer report, a crash),
# so a CI log that keeps only its tail still says what failed and why.
if [ "${1:-}" = --failed-logs ]; then
    dir=${2:-.}
    for t in $(find "$dir" -name '*.trs' 2>/dev/null | sort); do
        grep -q '^:test-result: \(FAIL\|ERROR\|XPASS\)' "$t" || continue
        log=${t%.trs}.log
        echo "== ${log#$dir/}: $(grep -c '^:test-result: \(FAIL\|ERROR\|XPASS\)' "$t") failed result(s)"
        grep -E '^(not ok|ERROR|FAIL)' "$log" | head -n 10 | sed 's/^/  /'
        grep -m 2 -A 25 -E 'WARNING: ThreadSanitizer|ERROR: (Address|Leak|Undefined)Sanitizer|runtime error' \
            "$log" | head -n 60 | sed 's/^/  /'
        echo "  -- its last lines:"
        tail -n 15 "$log" | sed 's/^/  /'
    done
    exit 0
fi
dir=${1:-.}
trs=$(find "$dir" -name '*.trs' 2>/dev/null | sort)
[ -n "$trs" ] || { echo "summarize: no test results under $dir"; exit 0; }
echo "== skipped (test: reason)"
for t in $trs; do
    log=${t%.trs}.log
    grep -q '^:test-result: SKIP' "$t" && grep -h '# SKIP' "$log" 2>/dev/null | grep -v '^\(PASS\|SKIP\|FAIL\)' |
        sed "s|^|  ${log#$dir/}: |"
done
echo "== failed"
for t in $trs; do
    grep -q '^:test-result: \(FAIL\|ERROR\|XPASS\)' "$t" && echo "  ${t#$dir/} (see ${t%.trs}.log)"
done
p=$(cat $trs | grep -c '^:test-result: \(PASS\|XFAIL\)')
f=$(cat $trs | grep -c '^:test-result: \(FAIL\|ERROR\|XPASS\)')
s=$(cat $trs | grep -c '^:test-result: SKIP')
echo "$p passed, $f failed, $s skipped"
