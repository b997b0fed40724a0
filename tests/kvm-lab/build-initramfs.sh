#!/bin/sh
# tests/kvm-lab/build-initramfs.sh KIND SUITE CACHE
#
# Builds an initramfs (uncompressed newc cpio) for the kernel that
# fetch-kernel.sh left in CACHE/SUITE, and caches it there:
#   l1      CACHE/SUITE/l1.cpio: busybox-static, kvm + kvm_amd + irqbypass,
#           9p over virtio and overlayfs, loop + ext4; its /init is tests/kvm-lab/l1-init
#   l2      CACHE/SUITE/l2.cpio: busybox-static, virtio_blk + ext4,
#           mke2fs/e2fsck and util-linux's blkdiscard with their libraries;
#           its /init is tests/kvm-lab/l2-init
#   l2-fio  CACHE/SUITE/l2-fio.cpio: l2.cpio followed by a second archive
#           with Debian's fio and its library closure (the kernel unpacks
#           concatenated archives; fio's ~80 MB only where it is used).
#           The libraries are stripped (--strip-unneeded) to keep it small.
# Modules come in dependency order from `modprobe -d ROOT --show-depends`
# (decompressed: busybox insmod reads plain .ko) and are listed in
# /modules.load for the init script.  The image is rebuilt when this
# script, the init scripts or the kernel change (a stamp of their checksums).
set -eu
kind=$1 suite=$2 cache=$3
here=$(cd "$(dirname "$0")" && pwd)
dir=$cache/$suite
kver=$(cat "$dir/kernel-version")
root=$dir/root
die() { echo "build-initramfs($kind $suite): $*" >&2; exit 1; }

case $kind in
l1) init=$here/l1-init ;;
l2|l2-fio) init=$here/l2-init ;;
*) die "unknown kind (l1, l2, l2-fio)" ;;
esac
out=$dir/$kind.cpio
stamp=$( (cat "$0" "$init" "$here/l2-checks.sh"; echo "$kver") | cksum | cut -d' ' -f1)
if [ -s "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi
for t in cpio modprobe busybox; do
    command -v $t >/dev/null 2>&1 || die "$t not found (tests/setup-debian.sh installs it)"
done

stage=$(mktemp -d "${TMPDIR:-/tmp}/keel-kvm-lab-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# add_modules MODULE...: each with its dependencies, in load order.
add_modules() {
    mkdir -p "$stage/modules"
    for m in "$@"; do
        modprobe -d "$root" -S "$kver" --show-depends "$m" 2>/dev/null |
            awk '$1 == "insmod" { print $2 }' || true
    done | while read -r ko; do
        name=$(basename "$ko")
        name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
        [ -e "$stage/modules/$name" ] && continue
        case $ko in
        *.xz) xz -dc "$ko" >"$stage/modules/$name" ;;
        *.zst) zstd -qdc "$ko" >"$stage/modules/$name" ;;
        *.gz) gzip -dc "$ko" >"$stage/modules/$name" ;;
        *) cp "$ko" "$stage/modules/$name" ;;
        esac
        echo "$name" >>"$stage/modules.load"
    done
}

# add_binary FILE...: the program and the shared libraries it loads, at
# their own paths (so the dynamic loader finds them), libraries stripped.
add_binary() {
    for f in "$@"; do
        echo "$f"
        ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^\t\// { print $1 }'
    done | sort -u | while read -r f; do
        [ -e "$stage$f" ] && continue
        mkdir -p "$stage$(dirname "$f")"
        cp -L "$f" "$stage$f"
        case $f in *.so*) strip --strip-unneeded "$stage$f" 2>/dev/null || true ;; esac
    done
}

pack() {  # OUT
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$1.tmp"
}

mkdir -p "$stage/bin" "$stage/dev" "$stage/proc" "$stage/sys" "$stage/tmp" "$stage/mnt"
cp /bin/busybox "$stage/bin/busybox" 2>/dev/null || cp /usr/bin/busybox "$stage/bin/busybox"
cp "$init" "$stage/init"
chmod 0755 "$stage/init"
case $kind in
l1)
    # loop + ext4: a scratch file system with O_DIRECT for the images;
    # virtio_blk: the bench step's disk (lab.sh's -drive)
    add_modules kvm_amd 9pnet_virtio 9p overlay virtio_pci virtio_blk loop ext4 crc32c_generic
    ;;
l2|l2-fio)
    add_modules virtio_pci virtio_blk ext4 crc32c_generic
    cp "$here/l2-checks.sh" "$stage/l2-checks.sh"
    add_binary "$(command -v mke2fs)" "$(command -v e2fsck)" "$(command -v blkdiscard)"
    mkdir -p "$stage/etc"
    cp /etc/mke2fs.conf "$stage/etc/"     # -t ext4 is defined there
    ;;
esac
[ -s "$stage/modules.load" ] || die "no modules found for $kver (depmod -b ran?)"
pack "$out"
if [ "$kind" = l2-fio ]; then
    command -v fio >/dev/null 2>&1 || die "fio not found"
    rm -rf "$stage"
    stage=$(mktemp -d "${TMPDIR:-/tmp}/keel-kvm-lab-initramfs.XXXXXX")
    add_binary "$(command -v fio)"
    pack "$out.fio"
    cat "$out.fio.tmp" >>"$out.tmp"
    rm -f "$out.fio.tmp"
fi
mv "$out.tmp" "$out"
echo "$stamp" >"$out.stamp"
