#!/bin/bash
# Build variants of the release tarball that stand in for the machines Keel's
# users have, and the packaging checks.  As root, from a git tree or tarball:
#
#   tests/build-variants.sh [--build-dir DIR | --tarball FILE] [VARIANT...]
#
# VARIANT (default: all four, in this order):
#   no-engines   liburing-dev and libaio-dev not installed at all (a throw-away
#                overlay of the cached bullseye root, via tests/distro-check.sh
#                --without): configure must leave the thread pool as the only
#                block engine, and make check must pass.
#   gnu99-floor  the RHEL 7 stand-in, on this machine: -std=gnu99, the glib
#                2.56 API floor (GLIB_VERSION_MIN_REQUIRED/MAX_ALLOWED) with
#                -Werror=deprecated-declarations, and no C11-only syntax
#                (-Werror=c99-c11-compat, no <stdatomic.h>: gcc 4.8 has
#                neither); make check; then the installed
#                headers, keel.pc and libkeel are used from a scratch program
#                (debian/tests/build-against-libkeel).  A canary proves the
#                floor is enforced: glib API newer than 2.56 must not compile.
#   rpm          rpmbuild -tb --nodeps keel-VERSION.tar.xz: checks the spec that
#                configure generates and ships in the tarball (%build, %check
#                running make check, %install, %files, the -devel package), not
#                RHEL's dependency resolution.
#   deb          dpkg-buildpackage -us -uc -b from the tarball plus debian/
#                on this machine, then lintian (errors fail; warnings listed).
# Environment: KEEL_CACHE (default /var/cache/keel), KEEL_BUILD_DIR,
# KEEL_VARIANTS_SUITE (root for no-engines; default bullseye), CC (gnu99-floor;
# default gcc), KEEL_MATRIX_QUICK (default 1), KEEL_PACKAGE_NOCHECK=1 (rpm and
# deb skip their make check: rpmbuild --nocheck, DEB_BUILD_OPTIONS=nocheck),
# KEEL_VARIANTS_FAST=1 (for CI: gnu99-floor builds the tests but runs none,
# and rpm/deb skip their make check; no-engines always runs make check).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

die() { echo "build-variants: $*" >&2; exit 1; }
log() { echo "build-variants: $*"; }
now() { date +%s; }

srcdir=$(cd "$(dirname "$0")/.." && pwd)
cache=${KEEL_CACHE:-/var/cache/keel}
build_dir=${KEEL_BUILD_DIR:-} tarball=
variants=()
while [ $# -gt 0 ]; do
    case $1 in
        --build-dir) build_dir=$2; shift ;;
        --build-dir=*) build_dir=${1#*=} ;;
        --tarball) tarball=$2; shift ;;
        --tarball=*) tarball=${1#*=} ;;
        -h|--help) sed -n '2,/^if \[ -z/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        no-engines|gnu99-floor|rpm|deb) variants+=("$1") ;;
        all) variants+=(no-engines gnu99-floor rpm deb) ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[ ${#variants[@]} -gt 0 ] || variants=(no-engines gnu99-floor rpm deb)
export KEEL_MATRIX_QUICK=${KEEL_MATRIX_QUICK:-1}
if [ "${KEEL_VARIANTS_FAST:-0}" = 1 ]; then
    export KEEL_PACKAGE_NOCHECK=1
fi

work=$(mktemp -d /tmp/keel-variants.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache"

# ---- the tarball, made once -------------------------------------------------------
if [ -z "$tarball" ]; then
    if [ -z "$build_dir" ]; then
        if [ -f "$srcdir/build/Makefile" ]; then
            build_dir=$srcdir/build
        else
            [ -x "$srcdir/configure" ] || (cd "$srcdir" && ./autogen.sh)
            build_dir=$work/dist-build
            mkdir -p "$build_dir"
            (cd "$build_dir" && "$srcdir/configure" -q) || die "configure for make dist failed"
        fi
    fi
    [ -f "$build_dir/Makefile" ] || die "$build_dir is not a configured build directory"
    rm -f "$build_dir"/keel-*.tar.xz
    make -C "$build_dir" -s dist > "$work/dist.log" 2>&1 || { tail -n 30 "$work/dist.log" >&2; die "make dist failed"; }
    t=$(ls "$build_dir"/keel-*.tar.xz | head -n1)
    cp "$t" "$work/"
    tarball=$work/$(basename "$t")
fi
[ -f "$tarball" ] || die "no tarball $tarball"
tarball=$(readlink -f "$tarball")
tarname=$(basename "$tarball")
version=${tarname#keel-}; version=${version%.tar.xz}
log "tarball $tarball (version $version)"

# unpack DIR: a fresh copy of the tarball's tree at $work/DIR/keel-VERSION
unpack() {
    rm -rf "${work:?}/$1"; mkdir -p "$work/$1"
    tar -xJf "$tarball" -C "$work/$1"
    echo "$work/$1/keel-$version"
}

results=()
fail=0
record() {          # record VARIANT RC SECONDS [NOTE]
    local st=PASS; [ "$2" -eq 0 ] || { st=FAIL; fail=1; }
    results+=("$st $1 ($3s)${4:+: $4}")
}

# ---- no-engines ------------------------------------------------------------------
v_no_engines() {
    local suite=${KEEL_VARIANTS_SUITE:-bullseye}
    bash "$srcdir/tests/distro-check.sh" --tarball "$tarball" \
        --without "liburing-dev libaio-dev" \
        --expect-summary '^block engine io_uring +no' \
        --expect-summary '^block engine linux-aio +no' \
        --expect-summary '^block engine thread pool +yes' \
        "$suite"
}

# ---- gnu99-floor -----------------------------------------------------------------
v_gnu99_floor() {
    local cc=${CC:-gcc} d prefix floor c11=
    floor="-DGLIB_VERSION_MIN_REQUIRED=GLIB_VERSION_2_56 -DGLIB_VERSION_MAX_ALLOWED=GLIB_VERSION_2_56"
    # The canary: with the floor, glib API from 2.58+ must be an error.
    printf '#include <glib.h>\nint main(void) { return g_strv_equal(NULL, NULL) ? 0 : 1; }\n' > "$work/canary.c"
    # shellcheck disable=SC2046
    if $cc -std=gnu99 -Werror=deprecated-declarations $floor $(pkg-config --cflags glib-2.0) \
            -c "$work/canary.c" -o "$work/canary.o" 2> "$work/canary.err"; then
        echo "the glib 2.56 floor is not enforced: g_strv_equal (2.60) compiled" >&2
        return 1
    fi
    grep -q 'g_strv_equal' "$work/canary.err" || { cat "$work/canary.err" >&2; return 1; }
    log "canary: glib 2.60 API is refused under the floor ($(grep -m1 -o 'Not available before [0-9.]*' "$work/canary.err" || echo error))"
    # C11-only syntax (_Generic, _Atomic, _Thread_local, _Noreturn ...) and
    # C11 headers are out: RHEL 7's gcc 4.8 has neither under gnu99 (no
    # <stdatomic.h> before gcc 4.9).  Atomics go through compat/atomic.h.
    if echo 'int x;' | $cc -Werror=c99-c11-compat -x c -c -o /dev/null - 2>/dev/null; then
        c11=-Werror=c99-c11-compat
    fi
    if grep -rlE '#[[:space:]]*include[[:space:]]*<(stdatomic|threads|stdalign|stdnoreturn)\.h>' \
            --include='*.c' --include='*.h' "$(unpack scan)" > "$work/c11.txt"; then
        echo "C11 headers that gcc 4.8 (RHEL 7) lacks are used in:" >&2
        sed 's|^.*/keel-[^/]*/|  |' "$work/c11.txt" >&2
        return 1
    fi
    d=$(unpack gnu99)
    prefix=$work/gnu99-prefix
    cd "$d"
    echo "=== ./configure CC=$cc CFLAGS='-O2 -g -std=gnu99 -Werror=deprecated-declarations $c11' (+ glib floor in CPPFLAGS)"
    ./configure -q --enable-werror --prefix="$prefix" CC="$cc" \
        CPPFLAGS="$floor" \
        CFLAGS="-O2 -g -std=gnu99 -Werror=deprecated-declarations $c11" > ../configure.out
    sed -n '/configuration summary/,$p' ../configure.out
    grep -q -- '-std=gnu99' Makefile || { echo "-std=gnu99 is not in the build flags" >&2; return 1; }
    make -j2 ACLOCAL=false AUTOCONF=false AUTOMAKE=false AUTOHEADER=false
    if [ "${KEEL_VARIANTS_FAST:-0}" = 1 ]; then
        echo "=== make check TESTS= (KEEL_VARIANTS_FAST: build every test program, run none)"
        make -j2 check TESTS= ACLOCAL=false AUTOCONF=false AUTOMAKE=false AUTOHEADER=false
    else
        make -j2 check ACLOCAL=false AUTOCONF=false AUTOMAKE=false AUTOHEADER=false ||
            { cat test-suite.log; return 1; }
    fi
    make install > /dev/null
    echo "=== debian/tests/build-against-libkeel against the installed tree"
    PKG_CONFIG_PATH=$prefix/lib/pkgconfig LD_LIBRARY_PATH_FOR_TEST=$prefix/lib CC=$cc \
        sh "$srcdir/debian/tests/build-against-libkeel"
    cd "$work"
}

# ---- rpm -------------------------------------------------------------------------
v_rpm() {
    command -v rpmbuild > /dev/null || die "rpmbuild not found (apt-get install rpm)"
    tar -tJf "$tarball" "keel-$version/keel.spec" > /dev/null 2>&1 ||
        { echo "keel.spec is not in $tarname: add it to EXTRA_DIST" >&2; return 1; }
    local src
    src=$(tar -xJOf "$tarball" "keel-$version/keel.spec" | sed -n 's/^Source0:[[:space:]]*//p')
    case $src in
        '%{name}-%{version}.tar.xz'|"keel-$version.tar.xz") ;;
        *) echo "keel.spec Source0 ($src) does not name $tarname" >&2; return 1 ;;
    esac
    local top=$work/rpm
    mkdir -p "$top"
    local nocheck=
    [ "${KEEL_PACKAGE_NOCHECK:-0}" = 1 ] && nocheck=--nocheck
    echo "=== rpmbuild -tb --nodeps $nocheck $tarname"
    # shellcheck disable=SC2086
    if ! rpmbuild -tb --nodeps $nocheck --define "_topdir $top" "$tarball" > "$work/rpmbuild.log" 2>&1; then
        tail -n 60 "$work/rpmbuild.log"; return 1
    fi
    grep -E '^# (TOTAL|PASS|SKIP|FAIL|ERROR):' "$work/rpmbuild.log" | sed 's/^/  %check /' || true
    local f
    for f in "$top"/RPMS/*/*.rpm; do
        echo "  built $(basename "$f"):"
        rpm -qlp "$f" | grep -v '/\.build-id' | sed 's/^/      /'
    done
    # (grep reads a file, not a pipe: grep -q closing a pipe early fails
    # the pipeline under pipefail.)
    rpm -qlp "$top"/RPMS/*/keel-devel-*.rpm > "$work/devel.files"
    for f in '/libkeel\.a$' '/libkeel\.so$' '/pkgconfig/keel\.pc$' '^/usr/include/keel/'; do
        grep -q "$f" "$work/devel.files" || { echo "keel-devel lacks $f" >&2; return 1; }
    done
}

# ---- deb -------------------------------------------------------------------------
v_deb() {
    command -v dpkg-buildpackage > /dev/null || die "dpkg-buildpackage not found (apt-get install dpkg-dev debhelper)"
    local d
    d=$(unpack deb)
    [ -d "$d/debian" ] || cp -a "$srcdir/debian" "$d/debian"
    cd "$d"
    sh debian/sync-version.sh
    if [ "${KEEL_PACKAGE_NOCHECK:-0}" = 1 ]; then
        export DEB_BUILD_OPTIONS="nocheck${DEB_BUILD_OPTIONS:+ $DEB_BUILD_OPTIONS}"
    fi
    echo "=== dpkg-buildpackage -us -uc -b${DEB_BUILD_OPTIONS:+ (DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS)}"
    if ! dpkg-buildpackage -us -uc -b > ../dpkg-buildpackage.log 2>&1; then
        tail -n 60 ../dpkg-buildpackage.log; return 1
    fi
    grep -E '^# (TOTAL|PASS|SKIP|FAIL|ERROR):' ../dpkg-buildpackage.log | sed 's/^/  dh_auto_test /' || true
    local f
    for f in ../*.deb; do
        case $f in *-dbgsym_*) continue ;; esac
        echo "  built $(basename "$f"):"
        dpkg-deb -c "$f" | awk '{print $6}' | grep -v '/$' | grep -v '^\./usr/share/doc/' | sed 's/^/      /'
    done
    if command -v lintian > /dev/null; then
        echo "=== lintian"
        lintian --allow-root -I ../*.changes > ../lintian.txt 2>&1 || true
        sed 's/^/  /' ../lintian.txt
        if grep -q '^E: ' ../lintian.txt; then echo "lintian reported errors" >&2; cd "$work"; return 1; fi
    else
        echo "(lintian not installed; skipped)"
    fi
    cd "$work"
}

start=$(now)
for v in "${variants[@]}"; do
    echo
    echo "==== variant $v"
    t0=$(now)
    # A subshell keeps the variant's cd local; it must not sit in an ||
    # list, which would switch set -e off inside it.
    set +e
    ( set -e; cd "$work"; "v_${v//-/_}" )
    rc=$?
    set -e
    record "$v" $rc $(( $(now) - t0 ))
done

echo
echo "==== build-variants summary ($(( $(now) - start ))s)"
for x in "${results[@]}"; do echo "$x"; done
exit $fail
