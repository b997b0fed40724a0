#!/bin/sh
# tests/kvm-lab/fetch-kernel.sh SUITE CACHE
#
# Fetches Debian's generic kernel (linux-image-amd64's dependency) of SUITE
# (bullseye, bookworm, trixie, sid) with `apt-get download` and unpacks it
# with `dpkg -x`: nothing is installed and the host's apt configuration and
# state are untouched (apt runs with its own sources list, lists and cache
# under CACHE/apt/SUITE).  Leaves in CACHE/SUITE:
#   vmlinuz          the bzImage
#   vmlinux          the uncompressed ELF (PVH entry), by tests/vmm-linux-fetch.sh
#   root/            the unpacked package(s), with modules.dep made by depmod -b
#   kernel-version
# A second run with everything present does nothing.  Exits 1 with a message
# when something cannot be fetched.
# Environment: KEEL_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -eu
suite=$1
mkdir -p "$2"
cache=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
out=$cache/$suite
die() { echo "fetch-kernel($suite): $*" >&2; exit 1; }

if [ -s "$out/vmlinuz" ] && [ -s "$out/vmlinux" ] && [ -s "$out/kernel-version" ] &&
   [ -d "$out/root/lib/modules/$(cat "$out/kernel-version")" ]; then
    exit 0
fi
command -v depmod >/dev/null 2>&1 || die "depmod not found"
mkdir -p "$out"
# shellcheck source=tests/kvm-lab/apt-suite.sh
. "$here/apt-suite.sh"
depends() {  # PACKAGE PREFIX: the dependencies named PREFIX*
    # shellcheck disable=SC2086
    apt-cache $apt_opts depends "$1" 2>/dev/null | awk -v p="$2" '$1 ~ /Depends:/ && index($2, p) == 1 { print $2 }'
}
pkg=$(depends linux-image-amd64 linux-image- | head -n 1)
[ -n "$pkg" ] || die "cannot resolve linux-image-amd64 in $suite"
# From Debian 14 the image package holds only dependencies: the kernel is
# in linux-binary-VERSION, its modules in linux-modules-VERSION and
# modules.builtin & co. in linux-base-VERSION.
pkgs="$pkg $(depends "$pkg" linux-binary-) $(depends "$pkg" linux-modules-) $(depends "$pkg" linux-base-)"

work=$out/download
# shellcheck disable=SC2086
apt_unpack "$work" "$out/root" $pkgs
vmlinuz=$(ls "$out"/root/boot/vmlinuz-* "$out"/root/usr/lib/modules/*/vmlinuz 2>/dev/null | head -n 1)
[ -n "$vmlinuz" ] || die "no vmlinuz in $pkgs"
kver=$(ls "$out/root/lib/modules" 2>/dev/null | head -n 1)
[ -n "$kver" ] || kver=$(ls "$out/root/usr/lib/modules" | head -n 1)
# Usrmerged packages (14+) put modules under /usr/lib; depmod -b wants /lib.
if [ ! -d "$out/root/lib/modules/$kver" ]; then
    mkdir -p "$out/root/lib"
    ln -s ../usr/lib/modules "$out/root/lib/modules"
fi
depmod -b "$out/root" "$kver" || die "depmod -b failed for $kver"
cp "$vmlinuz" "$out/vmlinuz"
# The uncompressed ELF for the PVH entry: the extraction vmm-linux-fetch.sh does.
sh "$here/../vmm-linux-fetch.sh" --extract-vmlinux "$out/vmlinuz" "$out/vmlinux" ||
    die "cannot extract vmlinux from $vmlinuz"
rm -rf "$work"
echo "$kver" >"$out/kernel-version"
