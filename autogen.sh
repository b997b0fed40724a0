#!/bin/sh
# Regenerate the build system (needs autoconf >= 2.69, automake >= 1.13, libtool, pkg-config's pkg.m4).
set -e
cd "$(dirname "$0")"
autoreconf -fi
