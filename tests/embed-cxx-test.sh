#!/bin/sh
# C++ embedding, in the build tree: tests/embed-program.cc includes every
# public header as <keel/...> and is built with g++ and clang++ (each one
# present) as C++11 and C++17, linked against the freshly built shared
# libkeel (its exported, versioned symbols only; libkeel.a where the build
# has no shared library), and run.  Without extern "C" in the headers the
# link fails (undefined reference to keel_aio_context_new()).
top_builddir=${top_builddir:-.}
if [ -n "${KEEL_TEST_SANITIZER_LDFLAGS:-}" ]; then
    echo "1..0 # SKIP sanitizer build: plain programs cannot link its libkeel"
    exit 77
fi
top_srcdir=${top_srcdir:-.}
compilers=
for c in g++ clang++; do
    command -v "$c" > /dev/null 2>&1 && compilers="$compilers $c"
done
if [ -z "$compilers" ]; then
    echo "1..0 # SKIP no C++ compiler (g++, clang++)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# <keel/loop/aio.h> in the source tree: a directory named keel pointing at it.
mkdir "$tmp/inc" && ln -s "$(cd "$top_srcdir" && pwd)" "$tmp/inc/keel"
if [ -f "$top_builddir/.libs/libkeel.so" ]; then
    libs="$top_builddir/.libs/libkeel.so -Wl,-rpath,$(cd "$top_builddir/.libs" && pwd) $KEEL_TEST_GLIB_LIBS"
else
    libs="$top_builddir/.libs/libkeel.a $KEEL_TEST_LIBS"
fi
set -- $compilers
echo "1..$(( $# * 2 ))"
n=0
for cxx in $compilers; do
    for std in c++11 c++17; do
        n=$((n + 1))
        # shellcheck disable=SC2086
        if ! $cxx -std=$std -Wall -Wextra -Werror -pthread -I"$tmp/inc" $KEEL_TEST_GLIB_CFLAGS \
                -DGLIB_VERSION_MIN_REQUIRED=GLIB_VERSION_2_56 -DGLIB_VERSION_MAX_ALLOWED=GLIB_VERSION_2_56 \
                "$top_srcdir/tests/embed-program.cc" -o "$tmp/prog" $libs > "$tmp/log" 2>&1; then
            echo "not ok $n - $cxx -std=$std: build"
            sed 's/^/# /' "$tmp/log" | head -20
            continue
        fi
        if "$tmp/prog" > "$tmp/out" 2>&1 && grep -q '^cxx-embed: bh=1 co=2 pool=42 remote=1$' "$tmp/out"; then
            echo "ok $n - $cxx -std=$std: built against libkeel and ran"
        else
            echo "not ok $n - $cxx -std=$std: run"
            sed 's/^/# /' "$tmp/out" | tail -20
        fi
    done
done
