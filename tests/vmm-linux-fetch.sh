#!/bin/sh
# Fetches what the Linux boot test needs, without installing anything on the
# system: Debian's cloud kernel (linux-image-cloud-amd64's dependency) and
# busybox-static, by `apt-get download` + `dpkg -x`; extracts the
# uncompressed vmlinux from the bzImage (as the kernel's
# scripts/extract-vmlinux does: find the compressed payload by its magic and
# decompress it with the system tool); builds a tiny initramfs (newc cpio
# written by this script, so it needs neither cpio nor root for the
# /dev/console node).
#
# Results are cached in ${KEEL_CACHE:-$HOME/.cache/keel}/linux:
#   vmlinuz  vmlinux  initramfs.cpio  kernel-version
# On success prints the cache directory and exits 0; exits 1 with a message
# when something cannot be fetched (the caller skips).
set -eu

die() { echo "vmm-linux-fetch: $*" >&2; exit 1; }

# ---- extract-vmlinux --------------------------------------------------------
# extract_vmlinux: $vmlinuz -> ./vmlinux (in the current directory).
extract_vmlinux() {
    # The setup header says where the compressed payload is (payload_offset at
    # 0x248, payload_length at 0x24c, relative to the protected-mode part that
    # starts after (setup_sects + 1) * 512 bytes); its magic says how it is
    # compressed.  A missing decompressor is fetched like the rest (dpkg -x).
    u8() { od -An -tu1 -j "$1" -N 1 "$vmlinuz" | tr -d ' '; }
    u32() { od -An -tu4 -j "$1" -N 4 "$vmlinuz" | tr -d ' '; }
    setup_sects=$(u8 $((0x1f1)))
    [ "$setup_sects" -eq 0 ] && setup_sects=4
    payload_off=$(( (setup_sects + 1) * 512 + $(u32 $((0x248))) ))
    payload_len=$(u32 $((0x24c)))
    tail -c +$((payload_off + 1)) "$vmlinuz" | head -c "$payload_len" >payload
    magic=$(od -An -tx1 -N 6 payload | tr -d ' \n')
    case $magic in
    1f8b*)         tool=gzip deb=gzip        cmd="gzip -dc" ;;
    fd377a585a00*) tool=xz   deb=xz-utils    cmd="xz -dc" ;;
    28b52ffd*)     tool=zstd deb=zstd        cmd="zstd -dc" ;;
    02214c18*)     tool=lz4  deb=lz4         cmd="lz4 -dc" ;;
    425a68*)       tool=bzip2 deb=bzip2      cmd="bzip2 -dc" ;;
    5d0000*)       tool=lzma deb=xz-utils    cmd="xz --format=lzma -dc" ;;
    *) die "unknown compression of the kernel payload (magic $magic)" ;;
    esac
    if ! command -v "$tool" >/dev/null 2>&1; then
        apt-get download -q "$deb" >>download.log 2>&1 || die "$tool is missing and apt-get download $deb failed"
        dpkg -x ./"$deb"_*.deb tools
        PATH=$work/tools/usr/bin:$work/tools/bin:$PATH
        export PATH
    fi
    # Trailing bytes after the stream are fine; only the ELF header counts.
    $cmd <payload >vmlinux 2>decompress.log || true
    [ "$(head -c 4 vmlinux | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] ||
        die "decompressing the kernel payload with $tool did not give an ELF file: $(head -c 200 decompress.log)"
}

# --extract-vmlinux BZIMAGE OUT: only that step (tests/kvm-lab uses it for
# the generic kernels it fetches).
if [ "${1:-}" = --extract-vmlinux ]; then
    vmlinuz=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
    out=$3
    work=$(mktemp -d "${TMPDIR:-/tmp}/keel-linux-fetch.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && extract_vmlinux) || exit 1
    cp "$work/vmlinux" "$out.tmp" && mv "$out.tmp" "$out"
    exit 0
fi

cache=${KEEL_CACHE:-${HOME:-/tmp}/.cache/keel}/linux
if [ -s "$cache/vmlinux" ] && [ -s "$cache/vmlinuz" ] && [ -s "$cache/initramfs.cpio" ]; then
    echo "$cache"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found (needs a Debian-like host)"
command -v dpkg >/dev/null 2>&1 || die "dpkg not found"

work=$(mktemp -d "${TMPDIR:-/tmp}/keel-linux-fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# The metapackage depends on the versioned image package.
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
      awk '/Depends: linux-image-/ { print $2; exit }')
if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
          awk '/Depends: linux-image-/ { print $2; exit }')
fi
[ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64 (apt-get update needed?)"

# apt-get download writes into the current directory; as root it drops
# privileges to _apt, which must be able to write there.
chmod 0777 "$work"
apt-get download -q "$pkg" busybox-static >download.log 2>&1 ||
    die "apt-get download $pkg busybox-static failed: $(tail -n 1 download.log)"
for deb in ./*.deb; do
    dpkg -x "$deb" root
done

# Up to Debian 13 the image package holds /boot/vmlinuz-VERSION; from 14
# (forky) it only depends on linux-binary-VERSION, which holds
# /usr/lib/modules/VERSION/vmlinuz.
find_vmlinuz() {
    ls root/boot/vmlinuz-* root/usr/lib/modules/*/vmlinuz 2>/dev/null | head -n 1
}
bin=
vmlinuz=$(find_vmlinuz)
if [ -z "$vmlinuz" ]; then
    bin=$(apt-cache depends "$pkg" 2>/dev/null | awk '/Depends: linux-binary-/ { print $2; exit }')
    if [ -n "$bin" ] && apt-get download -q "$bin" >>download.log 2>&1; then
        dpkg -x ./"$bin"_*.deb root
        vmlinuz=$(find_vmlinuz)
    fi
fi
[ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* or /usr/lib/modules/*/vmlinuz in $pkg${bin:+ or $bin}"
case $vmlinuz in
*/modules/*) kversion=$(basename "$(dirname "$vmlinuz")") ;;
*) kversion=$(basename "$vmlinuz" | sed 's/^vmlinuz-//') ;;
esac
# /bin/busybox, or /usr/bin/busybox where the package follows usrmerge (14).
busybox=root/bin/busybox
[ -x "$busybox" ] || busybox=root/usr/bin/busybox
[ -x "$busybox" ] || die "no /bin/busybox or /usr/bin/busybox in busybox-static"

extract_vmlinux

# ---- initramfs (newc) -------------------------------------------------------
ino=1000
cpio_entry() {  # name mode(octal) [file|dev-major:minor]
    name=$1 mode=$2 src=${3:-}
    size=0 major=0 minor=0
    case $src in
    dev:*) major=${src#dev:}; minor=${major#*:}; major=${major%:*} ;;
    ?*) size=$(wc -c <"$src") ;;
    esac
    namesize=$(( ${#name} + 1 ))
    ino=$((ino + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
        "$ino" "$((0$mode))" 0 0 1 0 "$size" 0 0 "$major" "$minor" "$namesize" 0 "$name"
    # header (110) + name + NUL, padded to 4
    pad=$(( (4 - (110 + namesize) % 4) % 4 ))
    [ $pad -gt 0 ] && head -c $pad /dev/zero
    if [ "$size" -gt 0 ]; then
        cat "$src"
        pad=$(( (4 - size % 4) % 4 ))
        [ $pad -gt 0 ] && head -c $pad /dev/zero
    fi
    return 0
}

cat >init <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
echo "keel-initramfs: up ($(uname -r))"
exec /bin/sh
EOF

printf busybox >sh-link     # a symlink's data is its target
{
    cpio_entry dev 040755
    cpio_entry dev/console 020600 dev:5:1
    cpio_entry dev/ttyS0 020600 dev:4:64
    cpio_entry bin 040755
    cpio_entry bin/busybox 0100755 "$busybox"
    cpio_entry bin/sh 0120777 sh-link
    cpio_entry proc 040755
    cpio_entry sys 040755
    cpio_entry init 0100755 init
    cpio_entry TRAILER!!! 0
} >initramfs.cpio

mkdir -p "$cache"
cp "$vmlinuz" "$cache/vmlinuz.tmp" && mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
cp vmlinux "$cache/vmlinux.tmp" && mv "$cache/vmlinux.tmp" "$cache/vmlinux"
cp initramfs.cpio "$cache/initramfs.cpio.tmp" && mv "$cache/initramfs.cpio.tmp" "$cache/initramfs.cpio"
echo "$kversion" >"$cache/kernel-version"
echo "$cache"
