#!/bin/bash
# Build and test Keel's release tarball inside minimal Debian build roots.
#
#   tests/distro-check.sh [options] SUITE...     (as root; SUITE: bullseye,
#                                                 bookworm, trixie, sid, or all)
# For each SUITE this
#   1. makes (or reuses) a debootstrap'ed minbase root in
#      ${KEEL_CACHE:-/var/cache/keel}/roots/SUITE, from the Debian mirror that
#      apt on this machine is configured with (/etc/apt/sources.list*);
#   2. installs the build dependencies inside (apt-get only runs when one is
#      missing; a package the suite does not have is skipped and reported);
#   3. makes the tarball with `make dist` in a configured build directory;
#   4. unpacks it in the root and runs `./configure --enable-werror && make
#      && make check` there, with /proc, /sys and /dev (so /dev/kvm)
#      mounted, and with autoconf/automake forbidden: a release tarball must
#      build with ./configure alone;
#   5. prints the versions it tested (gcc, autoconf, automake, libtool, glib,
#      liburing, libaio, kernel headers) and the test counts.
# Mounts are made in a private mount namespace and also removed by a trap,
# so no exit path (error, ^C, timeout) leaves them behind.
#
# Options:
#   --keep               keep the unpacked, built tree in ROOT/build afterwards
#   --build-dir DIR      configured build dir for `make dist`
#                        (default: $KEEL_BUILD_DIR, else SRC/build if it is
#                        configured, else a fresh out-of-tree configure)
#   --tarball FILE       test this tarball instead of running `make dist`
#   --without "PKG..."   run in a throw-away overlay of the root with these
#                        packages removed (e.g. "liburing-dev libaio-dev")
#   --configure-flags F  the ./configure flags (default: --enable-werror)
#   --expect-summary RE  fail unless configure's summary matches the
#                        extended regex RE (may be given more than once)
#   --deb                also run `dpkg-buildpackage -us -uc -b` in the root
#                        (with DEB_BUILD_OPTIONS=nocheck: make check already ran)
#   --no-autogen         skip the bootstrap check (by default a second copy of
#                        the tree is regenerated with this suite's autotools,
#                        which must print no warnings, and configured)
#   --refresh            apt-get update && dist-upgrade the cached root first
#   --timeout SECS       limit for the build+check of one suite (default 2400)
# Environment: KEEL_CACHE, KEEL_BUILD_DIR, KEEL_DEBIAN_MIRROR (overrides the
# mirror read from apt), KEEL_MATRIX_QUICK (passed to make check; default 1).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

die() { echo "distro-check: $*" >&2; exit 1; }
log() { echo "distro-check: $*"; }
now() { date +%s; }

# Run in a private mount namespace: every mount made below disappears with
# this process even if it is killed with SIGKILL.  The trap below removes
# them explicitly as well (and is all there is where unshare is missing).
if [ -z "${KEEL_DISTRO_CHECK_NS:-}" ] && command -v unshare >/dev/null &&
   unshare --mount --propagation private true 2>/dev/null; then
    export KEEL_DISTRO_CHECK_NS=1
    exec unshare --mount --propagation private bash "$0" "$@"
fi

srcdir=$(cd "$(dirname "$0")/.." && pwd)
cache=${KEEL_CACHE:-/var/cache/keel}
keep=no refresh=no deb=no autogen=yes build_dir=${KEEL_BUILD_DIR:-} tarball='' without=''
configure_flags=--enable-werror timeout_secs=2400
expect_summary=()
suites=()
while [ $# -gt 0 ]; do
    case $1 in
        --keep) keep=yes ;;
        --refresh) refresh=yes ;;
        --deb) deb=yes ;;
        --no-autogen) autogen=no ;;
        --build-dir) build_dir=$2; shift ;;
        --build-dir=*) build_dir=${1#*=} ;;
        --tarball) tarball=$2; shift ;;
        --tarball=*) tarball=${1#*=} ;;
        --without) without=$2; shift ;;
        --without=*) without=${1#*=} ;;
        --configure-flags) configure_flags=$2; shift ;;
        --configure-flags=*) configure_flags=${1#*=} ;;
        --expect-summary) expect_summary+=("$2"); shift ;;
        --timeout) timeout_secs=$2; shift ;;
        -h|--help) sed -n '2,/^if \[ -z/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        all) suites+=(bullseye bookworm trixie sid) ;;
        *) suites+=("$1") ;;
    esac
    shift
done
[ ${#suites[@]} -gt 0 ] || die "usage: $0 [options] SUITE... (bullseye bookworm trixie sid all; --help)"
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount)"
for t in debootstrap chroot mount umount flock timeout; do
    command -v $t >/dev/null || die "$t not found (apt-get install debootstrap util-linux coreutils)"
done
for s in "${suites[@]}"; do
    case $s in *[!a-z0-9-]*|'') die "bad suite name '$s'" ;; esac
done

# ---- the Debian mirror apt is configured with ------------------------------
# The first enabled "deb" source whose suites include a plain Debian suite
# name (not -security/-updates); deb822 .sources and one-line .list files.
debian_mirror() {
    if [ -n "${KEEL_DEBIAN_MIRROR:-}" ]; then echo "$KEEL_DEBIAN_MIRROR"; return; fi
    local f
    local known='^(buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable)$'
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v known="$known" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && enabled != "no" && uris != "") {
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++) if (s[i] ~ known) { split(uris, u, " "); print u[1]; exit }
                }
                types = uris = suites = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"   { $1 = ""; types = $0 }
            tolower($1) == "uris:"    { $1 = ""; sub(/^ +/, ""); uris = $0 }
            tolower($1) == "suites:"  { $1 = ""; suites = $0 }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            END { flush() }' "$f"
    done | head -n1 | grep . && return
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [opts] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk -v known="$known" '$1 == "deb" && $3 ~ known { print $2; exit }'
    done | head -n1 | grep . && return
    return 1
}

# ---- mounts, cleaned up on every exit path ------------------------------------
mounted=()          # mount points, in the order they were made
overlay_dir=
cleanup() {
    local rc=$? i p root_real
    set +e
    [ -n "${build_pid:-}" ] && kill -TERM "$build_pid" 2>/dev/null
    # End any process this run left inside the root (a hung test), by pid.
    for root_real in "${cleanup_roots[@]}"; do
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/root" 2>/dev/null)" = "$root_real" ] && kill -KILL "${p#/proc/}" 2>/dev/null
        done
    done
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null ||
            echo "distro-check: WARNING: could not unmount ${mounted[i]}" >&2
    done
    mounted=()
    [ -n "$overlay_dir" ] && rm -rf "$overlay_dir"
    overlay_dir=
    [ -n "${dist_tmp:-}" ] && rm -rf "$dist_tmp"
    exit $rc
}
cleanup_roots=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

do_mount() {        # do_mount MOUNTPOINT mount-args...
    local mp=$1; shift
    mount "$@" "$mp"
    mounted+=("$mp")
}
unmount_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" || umount -l "${mounted[i]}"
    done
    mounted=()
}
# remove_tree DIR: rm -rf that never descends into a mount (a /proc or
# /dev left mounted inside a root by an interrupted debootstrap).
remove_tree() {
    local d=$1 m
    [ -e "$d" ] || return 0
    d=$(readlink -f "$d")
    awk -v d="$d/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
    rm -rf --one-file-system "$d"
}
mount_system() {    # mount_system ROOT: /proc, /sys, /dev (+pts, shm) in ROOT
    local r=$1
    mkdir -p "$r/proc" "$r/sys" "$r/dev"
    do_mount "$r/proc" -t proc proc
    do_mount "$r/sys" --bind /sys
    do_mount "$r/dev" --bind /dev
    [ -d /dev/pts ] && do_mount "$r/dev/pts" --bind /dev/pts
    [ -d /dev/shm ] && do_mount "$r/dev/shm" --bind /dev/shm
    cleanup_roots+=("$(readlink -f "$r")")
}

# in_root ROOT CMD: run a shell command in ROOT with a clean environment.
in_root() {
    local r=$1; shift
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
        KEEL_MATRIX_QUICK="${KEEL_MATRIX_QUICK:-1}" ${DEB_BUILD_OPTIONS:+DEB_BUILD_OPTIONS="$DEB_BUILD_OPTIONS"} \
        chroot "$r" /bin/sh -ec "$1"
}

# Build dependencies (Debian names), plus what dpkg-buildpackage needs.
deps_required="build-essential autoconf automake libtool pkg-config libglib2.0-dev libjson-glib-dev"
deps_optional="liburing-dev libaio-dev linux-libc-dev xz-utils ca-certificates"
deps_deb="debhelper dh-autoreconf fakeroot"

# ---- 1+2: the cached root --------------------------------------------------------
# make_root SUITE: creates or refreshes $cache/roots/SUITE; sets root.
make_root() {
    local suite=$1 mirror t0
    root=$cache/roots/$suite
    mkdir -p "$cache/roots"
    mirror=$(debian_mirror) || die "no Debian mirror in /etc/apt/sources.list*; set KEEL_DEBIAN_MIRROR"
    if [ ! -e "$root/.keel-root-complete" ]; then
        t0=$(now)
        log "$suite: debootstrap (minbase) from $mirror into $root"
        remove_tree "$root.new"
        debootstrap --variant=minbase "$suite" "$root.new" "$mirror" > "$cache/roots/$suite.debootstrap.log" 2>&1 || {
            tail -n 30 "$cache/roots/$suite.debootstrap.log" >&2
            remove_tree "$root.new"
            die "$suite: debootstrap failed (log: $cache/roots/$suite.debootstrap.log)"
        }
        remove_tree "$root"
        mv "$root.new" "$root"
        touch "$root/.keel-root-complete"
        timing+=("$suite: debootstrap $(( $(now) - t0 ))s")
    fi
    # apt inside the root: same mirror, no recommends, no service starts.
    # Like this machine's own apt (its mirror is a dated snapshot), accept
    # Release files past their Valid-Until.
    printf 'deb %s %s main\n' "$mirror" "$suite" > "$root/etc/apt/sources.list"
    cat > "$root/etc/apt/apt.conf.d/99keel" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Check-Valid-Until "false";
Acquire::Languages "none";
Dpkg::Use-Pty "false";
EOF
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    cp -L /etc/hosts "$root/etc/hosts" 2>/dev/null || true

    t0=$(now)
    mount_system "$root"       # apt and maintainer scripts want /proc, /dev
    local want="$deps_required $deps_optional" p missing=
    [ "$deb" = yes ] && want="$want $deps_deb"
    for p in $want; do
        in_root "$root" "dpkg-query -W -f='\${Status}\n' $p 2>/dev/null | grep -q 'ok installed'" || missing="$missing $p"
    done
    if [ -n "$missing" ] || [ "$refresh" = yes ] || [ ! -e "$root/.keel-apt-updated" ]; then
        log "$suite: apt-get update${missing:+; installing$missing}"
        in_root "$root" "apt-get -q update" > "$cache/roots/$suite.apt.log" 2>&1 ||
            { tail -n 20 "$cache/roots/$suite.apt.log" >&2; die "$suite: apt-get update failed"; }
        touch "$root/.keel-apt-updated"
        [ "$refresh" = yes ] && in_root "$root" "apt-get -q -y dist-upgrade" >> "$cache/roots/$suite.apt.log" 2>&1
        local avail=
        for p in $missing; do
            if in_root "$root" "apt-cache show $p 2>/dev/null | grep -q '^Package:'"; then
                avail="$avail $p"
            else
                case " $deps_required " in
                    *" $p "*) die "$suite: required package $p does not exist in $suite" ;;
                esac
                log "$suite: package $p is not in $suite; skipping it"
                skipped_pkgs+=("$suite:$p")
            fi
        done
        if [ -n "$avail" ]; then
            in_root "$root" "apt-get -q -y install $avail" >> "$cache/roots/$suite.apt.log" 2>&1 ||
                { tail -n 30 "$cache/roots/$suite.apt.log" >&2; die "$suite: apt-get install failed"; }
        fi
        in_root "$root" "apt-get -q clean" >/dev/null 2>&1 || true
        timing+=("$suite: packages $(( $(now) - t0 ))s")
    fi
    unmount_all
}

# ---- 3: the tarball ----------------------------------------------------------------
make_tarball() {
    [ -n "$tarball" ] && { [ -f "$tarball" ] || die "no tarball $tarball"; tarball=$(readlink -f "$tarball"); return; }
    local t0; t0=$(now)
    if [ -z "$build_dir" ]; then
        if [ -f "$srcdir/build/Makefile" ]; then
            build_dir=$srcdir/build
        else
            [ -x "$srcdir/configure" ] || (cd "$srcdir" && ./autogen.sh)
            dist_tmp=$(mktemp -d /tmp/keel-dist.XXXXXX)
            build_dir=$dist_tmp
            log "configuring a build dir for make dist in $build_dir"
            (cd "$build_dir" && "$srcdir/configure" -q) || die "configure for make dist failed"
        fi
    fi
    [ -f "$build_dir/Makefile" ] || die "$build_dir is not a configured build directory"
    log "make dist in $build_dir"
    rm -f "$build_dir"/keel-*.tar.xz
    make -C "$build_dir" -s dist > "$cache/dist.log" 2>&1 || { tail -n 30 "$cache/dist.log" >&2; die "make dist failed"; }
    tarball=$(ls "$build_dir"/keel-*.tar.xz | head -n1)
    [ -f "$tarball" ] || die "make dist made no keel-*.tar.xz"
    # Keep a copy: the build dir may be reused (distcheck) while we run.
    cp "$tarball" "$cache/"
    tarball=$cache/$(basename "$tarball")
    timing+=("make dist $(( $(now) - t0 ))s")
}

# ---- 4+5: build and test in one root -----------------------------------------------
# Inside the root; $1 = tarball name, $2 = configure flags, $3 = yes to
# build the Debian package too.  Writes /build/versions.txt.
build_script='
tb=$1 flags=$2 deb=$3 without=$4 autogen=$5
cd /build
tar -xJf "$tb"
dir=$(tar -tJf "$tb" | head -n1 | cut -d/ -f1)
cd "$dir"
for p in $without; do
    if dpkg-query -W -f="\${Status}\n" "$p" 2>/dev/null | grep -q "ok installed"; then
        echo "distro-check: $p is still installed" >&2; exit 1
    fi
    case $p in
        liburing-dev) h=/usr/include/liburing.h ;;
        libaio-dev) h=/usr/include/libaio.h ;;
        *) h= ;;
    esac
    if [ -n "$h" ] && [ -e "$h" ]; then echo "distro-check: $h is still there" >&2; exit 1; fi
done
t=$(date +%s)
# Regenerating the build system from a release tarball is a bug: make
# every autotool fail if make tries to run one.
noauto="ACLOCAL=false AUTOCONF=false AUTOMAKE=false AUTOHEADER=false LIBTOOLIZE=false"
echo "=== ./configure $flags"
if ! ./configure $flags > ../configure.out 2>&1; then
    cat ../configure.out; tail -n 60 config.log; exit 1
fi
sed -n "/configuration summary/,\$p" ../configure.out
echo "configure $(( $(date +%s) - t ))s" >> /build/timing; t=$(date +%s)
echo "=== make -j2"
make -j2 $noauto
echo "make $(( $(date +%s) - t ))s" >> /build/timing; t=$(date +%s)
echo "=== make check"
rc=0
make -j2 check $noauto || rc=$?
echo "check $(( $(date +%s) - t ))s" >> /build/timing
# Which tests skipped and why; failures; counts.
trs=$(find . -name "*.trs" | sort)
echo "== skipped (test: reason)"
for f in $trs; do
    if grep -q "^:test-result: SKIP" "$f"; then
        grep -h "# SKIP" "${f%.trs}.log" | grep -v "^\(PASS\|SKIP\|FAIL\)" | sed "s|^|  ${f%.trs}: |" || true
    fi
done
echo "== failed"
for f in $trs; do
    if grep -q "^:test-result: \(FAIL\|ERROR\|XPASS\)" "$f"; then
        echo "  ${f%.trs}:"; tail -n 30 "${f%.trs}.log" | sed "s/^/    /"
    fi
done
p=$(cat $trs /dev/null | grep -c "^:test-result: \(PASS\|XFAIL\)" || true)
f=$(cat $trs /dev/null | grep -c "^:test-result: \(FAIL\|ERROR\|XPASS\)" || true)
s=$(cat $trs /dev/null | grep -c "^:test-result: SKIP" || true)
echo "$p passed, $f failed, $s skipped"
echo "tests: $p passed, $f failed, $s skipped" >> /build/timing
if [ $rc -ne 0 ]; then echo "make check failed (rc $rc)"; exit 1; fi
if [ "$p" -eq 0 ]; then echo "make check ran no test"; exit 1; fi
if [ -x ./keel-features ]; then
    echo "=== ./keel-features"
    ./keel-features
fi
# The generated build-system files must be the ones from the tarball.
for g in configure Makefile.in aclocal.m4 config.h.in; do
    if [ -n "$(find . -maxdepth 1 -name "$g" -newer ../configure.out)" ]; then
        echo "$g was regenerated during the build" >&2; exit 1
    fi
done
if [ "$autogen" = yes ]; then
    # Bootstrapping from git with the autotools of this suite must work, and
    # without warnings (autoconf 2.69 .. 2.73, automake 1.16 .. 1.19).
    t=$(date +%s)
    echo "=== ./autogen.sh with $(autoconf --version | head -n1), then configure"
    rm -rf /build/autogen && mkdir /build/autogen && cd /build/autogen
    tar -xJf "/build/$tb"
    cd "$dir"
    rm -f configure Makefile.in aclocal.m4 config.h.in
    if ! WARNINGS=all ./autogen.sh > ../autogen.log 2>&1; then
        cat ../autogen.log; echo "autogen.sh failed"; exit 1
    fi
    if grep -i "warning" ../autogen.log; then
        echo "autogen.sh printed warnings (above)"; exit 1
    fi
    ./configure -q $flags > ../autogen-configure.log 2>&1 || { tail -n 40 ../autogen-configure.log; exit 1; }
    echo "autogen+configure $(( $(date +%s) - t ))s" >> /build/timing
fi
if [ "$deb" = yes ]; then
    t=$(date +%s)
    echo "=== dpkg-buildpackage -us -uc -b (DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS)"
    rm -rf /build/deb && mkdir /build/deb && cd /build/deb
    tar -xJf "/build/$tb"
    cd "$dir"
    [ -d debian ] || cp -a /build/debian.src debian
    sh debian/sync-version.sh
    if ! dpkg-buildpackage -us -uc -b > ../dpkg-buildpackage.log 2>&1; then
        tail -n 60 ../dpkg-buildpackage.log; exit 1
    fi
    ls ../*.deb | sed "s|^../|  built |"
    echo "dpkg-buildpackage $(( $(date +%s) - t ))s" >> /build/timing
fi
'

versions_script='
v() { printf "  %-16s %s\n" "$1" "$2"; }
pkgv() { dpkg-query -W -f="\${Version}" "$1" 2>/dev/null || echo "not installed"; }
v debian "$(cat /etc/debian_version)"
v gcc "$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)"
v autoconf "$(autoconf --version | sed -n "1s/.* //p")"
v automake "$(automake --version | sed -n "1s/.* //p")"
v libtool "$(libtoolize --version | sed -n "1s/.* //p")"
v pkg-config "$(pkg-config --version)"
v glib "$(pkg-config --modversion glib-2.0)"
v liburing "$(pkg-config --modversion liburing 2>/dev/null || echo "none") (liburing-dev $(pkgv liburing-dev))"
v libaio "libaio-dev $(pkgv libaio-dev)"
v kernel-headers "$(sed -n "s/#define LINUX_VERSION_CODE //p" /usr/include/linux/version.h | awk "{printf \"%d.%d.%d\", \$1/65536, (\$1/256)%256, \$1%256}") (linux-libc-dev $(pkgv linux-libc-dev))"
v glibc "$(pkgv libc6)"
v running-kernel "$(uname -r)"
'

run_suite() {
    local suite=$1 t0 rc=0 r
    t0=$(now)
    mkdir -p "$cache/roots"
    exec 9> "$cache/roots/.$suite.lock"
    flock 9
    make_root "$suite"
    r=$root
    if [ -n "$without" ]; then
        # A throw-away overlay of the cached root, with the packages removed.
        overlay_dir=$(mktemp -d "$cache/overlay.XXXXXX")
        mkdir -p "$overlay_dir/upper" "$overlay_dir/work" "$overlay_dir/root"
        do_mount "$overlay_dir/root" -t overlay overlay \
            -o "lowerdir=$root,upperdir=$overlay_dir/upper,workdir=$overlay_dir/work"
        r=$overlay_dir/root
    fi
    mount_system "$r"
    if [ -n "$without" ]; then
        log "$suite: removing $without (overlay only)"
        in_root "$r" "dpkg --purge --force-depends $without" > /dev/null 2>&1 ||
            in_root "$r" "apt-get -q -y remove $without" > /dev/null ||
            die "$suite: could not remove $without"
    fi
    rm -rf --one-file-system "$r/build"
    mkdir -p "$r/build"
    cp "$tarball" "$r/build/"
    log "$suite: building $(basename "$tarball") (configure $configure_flags)"
    local debopts=
    [ "$deb" = yes ] && debopts=${DEB_BUILD_OPTIONS:-nocheck}
    [ "$deb" = yes ] && cp -a "$srcdir/debian" "$r/build/debian.src"
    # In the background, so that a signal reaches our trap at once.
    timeout --kill-after=30 "$timeout_secs" \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
        KEEL_MATRIX_QUICK="${KEEL_MATRIX_QUICK:-1}" DEB_BUILD_OPTIONS="$debopts" \
        chroot "$r" /bin/sh -ec "$build_script" build "$(basename "$tarball")" "$configure_flags" "$deb" "$without" "$autogen" &
    build_pid=$!
    wait $build_pid || rc=$?
    build_pid=
    [ $rc -eq 124 ] && log "$suite: TIMEOUT after ${timeout_secs}s"
    if [ $rc -eq 0 ] && [ ${#expect_summary[@]} -gt 0 ]; then
        local re
        for re in "${expect_summary[@]}"; do
            grep -Eq "$re" "$r/build/configure.out" ||
                { log "$suite: configure summary does not match /$re/"; rc=1; }
        done
    fi
    versions=$(in_root "$r" "$versions_script" 2>&1 || true)
    local tm; tm=$(paste -s -d ';' "$r/build/timing" 2>/dev/null | sed 's/;/; /g' || true)
    if [ $rc -eq 0 ]; then results+=("PASS $suite${without:+ (without $without)}: $tm")
    else results+=("FAIL $suite${without:+ (without $without)} (rc $rc): $tm"); fi
    summaries+=("$suite${without:+ (without $without)}:
$versions")
    if [ "$keep" = yes ]; then
        if [ -n "$without" ]; then
            rm -rf "$root/build.without" && cp -a "$r/build" "$root/build.without" || true
            log "$suite: kept the build tree in $root/build.without"
        else
            log "$suite: kept the build tree in $root/build"
        fi
    else
        rm -rf "$r/build"
    fi
    unmount_all
    [ -n "$overlay_dir" ] && { rm -rf "$overlay_dir"; overlay_dir=; }
    timing+=("$suite: total $(( $(now) - t0 ))s")
    flock -u 9
    [ $rc -eq 0 ] || fail=1
}

timing=() results=() summaries=() skipped_pkgs=()
start=$(now)
mkdir -p "$cache"
make_tarball
log "tarball $tarball"
fail=0
for s in "${suites[@]}"; do
    run_suite "$s"     # not in an || list: that would switch off set -e inside
done

echo
echo "==== distro-check summary ($(( $(now) - start ))s)"
for x in "${results[@]}"; do echo "$x"; done
echo "-- versions tested"
for x in "${summaries[@]}"; do echo "$x"; done
echo "-- timings"
for x in "${timing[@]}"; do echo "  $x"; done
[ ${#skipped_pkgs[@]} -eq 0 ] || echo "-- packages not in the suite (skipped): ${skipped_pkgs[*]}"
exit $fail
