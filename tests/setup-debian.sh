#!/bin/sh
# Install Keel's build and test dependencies on Debian (as root), then
# bootstrap and build in ./build.  Used by tests/run-main.sh and
# tests/run-tests.sh; safe to run again (apt-get and configure are idempotent).
#   KEEL_CONFIGURE_FLAGS  extra flags for configure (default: --enable-werror)
#   KEEL_BUILD_DIR        build directory (default: build)
set -e
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    pkgs="build-essential autoconf automake libtool pkg-config libglib2.0-dev
          liburing-dev libaio-dev libjson-glib-dev linux-libc-dev clang valgrind libuv1-dev
          qemu-system-x86 qemu-utils fio busybox-static cpio zstd xz-utils
          debootstrap rpm debhelper dh-autoreconf devscripts lintian"
    missing=
    for p in $pkgs; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "setup-debian: installing$missing"
        apt-get update -q
        apt-get install -y -q --no-install-recommends $missing
    fi
else
    echo "setup-debian: not root or no apt-get; assuming the dependencies are installed" >&2
fi

./autogen.sh
build=${KEEL_BUILD_DIR:-build}
mkdir -p "$build"
cd "$build"
../configure ${KEEL_CONFIGURE_FLAGS:---enable-werror}
make -j"$(nproc)"
