#!/bin/sh
# Regenerate the build system (needs autoconf >= 2.69, automake >= 1.13,
# libtool, and pkg-config's pkg.m4).  Plain `autoreconf -fi` does the same:
# build-aux/tap-driver.sh (automake's TAP driver, which `automake
# --add-missing` does not install) is kept in git for that reason.
set -e
cd "$(dirname "$0")"
if [ ! -f build-aux/tap-driver.sh ]; then
    mkdir -p build-aux
    cp -f "$(automake --print-libdir)/tap-driver.sh" build-aux/tap-driver.sh
    chmod +x build-aux/tap-driver.sh
fi
autoreconf -fi
