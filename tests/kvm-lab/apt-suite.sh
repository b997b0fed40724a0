# shellcheck shell=sh disable=SC2154  # suite, cache: set by the sourcing script
# tests/kvm-lab/apt-suite.sh: sourced by fetch-kernel.sh and fetch-qemu.sh.
# With $suite and $cache set (and die() defined), sets $apt_opts so that
# apt-get and apt-cache use their own sources list, lists and archive cache
# for that Debian suite under CACHE/apt/SUITE, leaving the host's apt
# configuration and state untouched, and refreshes lists older than a day;
# apt_unpack fetches packages and unpacks them.
# Environment: KEEL_DEBIAN_MIRROR (default http://deb.debian.org/debian).
for t in apt-get apt-cache dpkg; do
    command -v $t >/dev/null 2>&1 || die "$t not found"
done
mirror=${KEEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
apt_dir=$cache/apt/$suite
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/sources.list.d"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
    >"$apt_dir/sources.list"
: >>"$apt_dir/status"
# _apt (apt's sandbox user) downloads into these.
chmod -R a+rwX "$apt_dir" 2>/dev/null || true
apt_opts="-o Dir::Etc::sourcelist=$apt_dir/sources.list -o Dir::Etc::sourceparts=$apt_dir/sources.list.d
 -o Dir::State::Lists=$apt_dir/lists -o Dir::Cache=$apt_dir -o Dir::Cache::archives=$apt_dir/archives
 -o Dir::State::status=$apt_dir/status -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1"
# Lists older than a day are refreshed (suites move; old versions vanish).
if [ -z "$(find "$apt_dir/lists" -name '*_Packages' -mmin -1440 2>/dev/null)" ]; then
    # shellcheck disable=SC2086
    apt-get $apt_opts update >"$apt_dir/update.log" 2>&1 ||
        die "apt-get update for $suite failed: $(tail -n 1 "$apt_dir/update.log")"
fi

# apt_unpack WORK ROOT PACKAGE...: downloads the packages into WORK (made
# afresh) and unpacks them all into ROOT with dpkg -x (nothing installed).
apt_unpack() {
    work=$1 root=$2
    shift 2
    rm -rf "$work" "$root"
    mkdir -p "$work"
    chmod 0777 "$work"
    # shellcheck disable=SC2086
    (cd "$work" && apt-get $apt_opts download -q "$@" >download.log 2>&1) ||
        die "apt-get download $* failed: $(tail -n 1 "$work/download.log")"
    for deb in "$work"/*.deb; do
        dpkg -x "$deb" "$root"
    done
}
