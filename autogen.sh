#!/bin/sh
# Regenerate the build system (needs autoconf >= 2.69, automake >= 1.13,
# libtool, and pkg-config's pkg.m4).
set -e
cd "$(dirname "$0")"
mkdir -p build-aux
# The TAP driver ships with automake but `automake --add-missing` does not
# install it; take the one from the automake doing this build.
cp -f "$(automake --print-libdir)/tap-driver.sh" build-aux/tap-driver.sh
chmod +x build-aux/tap-driver.sh
autoreconf -fi
