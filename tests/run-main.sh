#!/bin/sh
# Set everything up (tests/setup-debian.sh) and run Keel's main job:
# print the features report, then the demo (boot the test guest in keel-vmm
# and do disk I/O when the VMM and its guest are built; otherwise a short
# event-loop demo).
set -e
cd "$(dirname "$0")/.."
sh tests/setup-debian.sh
cd "${KEEL_BUILD_DIR:-build}"
echo "== keel-features"
./keel-features
if [ -x ./tests/demo.sh ] || [ -f ../tests/demo.sh ]; then
    sh ../tests/demo.sh
fi
