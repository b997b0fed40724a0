#!/bin/sh
# Summarise an automake TAP run in BUILD_DIR: every skip with its reason,
# every failure, and one closing line "N passed, N failed, N skipped".
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
