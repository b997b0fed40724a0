#!/bin/sh
# keel-features: stable report lines, KEEL_AVOID honoured, unknown words refused.
f="$top_builddir/keel-features"
echo "1..9"
out=$("$f") && echo "ok 1 - keel-features runs" || echo "not ok 1 - keel-features runs"
echo "$out" | grep -Eq '^event-notifier active=(eventfd|pipe) compiled=[a-z0-9,+_-]+ reason=' \
  && echo "ok 2 - event-notifier line has the stable form" || { echo "not ok 2 - event-notifier line"; echo "$out" | sed 's/^/# /'; }
KEEL_AVOID=eventfd,signalfd,ppoll "$f" > avoid.out 2>&1
grep -Eq '^event-notifier active=pipe .*reason=(KEEL_AVOID|not-compiled)' avoid.out && grep -q '^signal-fd active=thread' avoid.out \
  && grep -q '^poll active=g_poll' avoid.out \
  && echo "ok 3 - KEEL_AVOID selects the fallbacks" || { echo "not ok 3 - KEEL_AVOID selects the fallbacks"; sed 's/^/# /' avoid.out; }
KEEL_AVOID=eventfd,nosuchthing "$f" > bad.out 2>&1; rc=$?
test $rc -eq 1 && echo "ok 4 - unknown KEEL_AVOID word exits 1" || echo "not ok 4 - unknown KEEL_AVOID word exits 1 (got $rc)"
grep -q "unknown word 'nosuchthing'" bad.out && echo "ok 5 - ...naming the word" || { echo "not ok 5 - ...naming the word"; sed 's/^/# /' bad.out; }
"$f" --bogus > /dev/null 2>&1; rc=$?
test $rc -eq 1 && echo "ok 6 - bad argument exits 1" || echo "not ok 6 - bad argument exits 1"
v=$("$f" --version) && test "$v" = "keel-features $(sed -n 's/^keel //p' <<EOF_
$out
EOF_
)" && echo "ok 7 - --version prints the version" || echo "not ok 7 - --version prints the version (got '$v')"
vmm="$top_builddir/vmm/keel-vmm"
if [ -x "$vmm" ]; then
    "$vmm" --features > vmm.out 2>&1
    head -1 vmm.out | grep -qx "$(echo "$out" | head -1)" \
      && echo "ok 8 - keel-vmm --features has the same header line" || { echo "not ok 8 - keel-vmm --features header"; sed 's/^/# /' vmm.out; }
    grep -qx "$(echo "$out" | grep '^coroutine ')" vmm.out \
      && echo "ok 9 - ...and the same coroutine line" || { echo "not ok 9 - keel-vmm --features coroutine line"; sed 's/^/# /' vmm.out; }
else
    echo "ok 8 # SKIP keel-vmm not built"
    echo "ok 9 # SKIP keel-vmm not built"
fi
rm -f avoid.out bad.out vmm.out
