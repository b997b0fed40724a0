#!/bin/sh
# Set everything up (tests/setup-debian.sh) and run Keel's main job:
# print the features report, then the demo (boot the test guest in keel-vmm
# with a virtio-blk disk and do disk I/O), then fetch Debian's kernel and
# boot it as far as this host's KVM allows (see README, "KVM hosts").
set -e
cd "$(dirname "$0")/.."
sh tests/setup-debian.sh
cd "${KEEL_BUILD_DIR:-build}"
echo "== keel-features"
./keel-features
echo "== demo: the test guest in keel-vmm, virtio-blk disk I/O"
sh ../tests/demo.sh
echo "== Debian's kernel in keel-vmm"
top_builddir=. top_srcdir=.. sh ../tests/vmm-linux-test.sh
