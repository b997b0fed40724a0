#!/bin/sh
# keel-features: stable report lines, KEEL_AVOID honoured, unknown words refused.
f="$top_builddir/keel-features"
echo "1..6"
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
rm -f avoid.out bad.out
