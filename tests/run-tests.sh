#!/bin/sh
# Set everything up (tests/setup-debian.sh) and run the whole test suite.
# Prints which tests skipped and why, and a closing "N passed, N failed" line.
set -e
cd "$(dirname "$0")/.."
sh tests/setup-debian.sh
cd "${KEEL_BUILD_DIR:-build}"
rc=0
make -j"$(nproc)" check || rc=$?
sh ../tests/summarize.sh .
[ $rc -eq 0 ] || sh ../tests/summarize.sh --failed-logs .
exit $rc
