#!/bin/sh
# The installed tree as a user sees it: `make install DESTDIR=...` into a
# scratch directory, keel.pc from there (its paths moved under DESTDIR),
# then debian/tests/build-against-libkeel: every header as <keel/...> in C
# and C++, a C program shared and static, the C++ program of
# tests/embed-program.cc.
top_builddir=${top_builddir:-.}
if [ -n "${KEEL_TEST_SANITIZER_LDFLAGS:-}" ]; then
    echo "1..0 # SKIP sanitizer build: plain programs cannot link its libkeel"
    exit 77
fi
top_srcdir=${top_srcdir:-.}
MAKE=${MAKE:-make}
command -v pkg-config > /dev/null 2>&1 || { echo "1..0 # SKIP no pkg-config"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "1..2"
if $MAKE -C "$top_builddir" install DESTDIR="$tmp/root" > "$tmp/install.log" 2>&1; then
    echo "ok 1 - make install DESTDIR=..."
else
    echo "not ok 1 - make install DESTDIR=..."
    tail -20 "$tmp/install.log" | sed 's/^/# /'
    exit 1
fi
pc=$(find "$tmp/root" -name keel.pc | head -1)
mkdir "$tmp/pc"
# Absolute paths in keel.pc gain the DESTDIR prefix; ${prefix}-relative
# ones follow prefix.
sed -E "s#^(prefix|exec_prefix|libdir|includedir)=/#\\1=$tmp/root/#" "$pc" > "$tmp/pc/keel.pc"
libdir=$(PKG_CONFIG_PATH=$tmp/pc pkg-config --variable=libdir keel)
if PKG_CONFIG_PATH=$tmp/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH} LD_LIBRARY_PATH_FOR_TEST=$libdir \
        sh "$top_srcdir/debian/tests/build-against-libkeel" > "$tmp/build.log" 2>&1; then
    echo "ok 2 - programs including <keel/...> build against the installed tree and run"
    sed 's/^/# /' "$tmp/build.log"
else
    echo "not ok 2 - programs including <keel/...> build against the installed tree and run"
    sed 's/^/# /' "$tmp/build.log" | tail -30
fi
