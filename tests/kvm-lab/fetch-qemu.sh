#!/bin/sh
# tests/kvm-lab/fetch-qemu.sh SUITE CACHE
#
# A second QEMU for the lab's peer runs, from another Debian suite (say
# trixie's QEMU 10, which has iothread-vq-mapping, where this machine has
# bookworm's 7.2), without installing anything: qemu-system-x86 and its
# whole Depends closure are fetched with `apt-get download` (apt-suite.sh:
# the lab's own apt state under CACHE/apt/SUITE) and unpacked with
# `dpkg -x` into CACHE/qemu-SUITE/root.  The program runs from there
# through that suite's own dynamic loader and libraries, so the host's
# older C library does not matter.  Leaves in CACHE/qemu-SUITE:
#   qemu-system-x86_64   a wrapper script that runs it (firmware with -L,
#                        modules from the unpacked tree)
#   version              `qemu-system-x86_64 --version`'s first line
# A second run with everything present does nothing.  Exits 1 with a message
# when something cannot be fetched or the result does not run.
set -eu
suite=$1
mkdir -p "$2"
cache=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
out=$cache/qemu-$suite
die() { echo "fetch-qemu($suite): $*" >&2; exit 1; }

if [ -x "$out/qemu-system-x86_64" ] && [ -s "$out/version" ]; then
    exit 0
fi
mkdir -p "$out"
# shellcheck source=tests/kvm-lab/apt-suite.sh
. "$here/apt-suite.sh"
# Every package qemu-system-x86 needs to run, by Depends and Pre-Depends
# (virtual names in <> are provided by a real package that is also listed).
# shellcheck disable=SC2086
pkgs=$(apt-cache $apt_opts depends --recurse --no-recommends --no-suggests --no-conflicts \
           --no-breaks --no-replaces --no-enhances qemu-system-x86 2>/dev/null |
       grep -v -e '^ ' -e '^<' | sort -u | tr '\n' ' ')
case " $pkgs " in
*" qemu-system-x86 "*" libc6 "*|*" libc6 "*" qemu-system-x86 "*) ;;
*) die "cannot resolve qemu-system-x86 and its dependencies in $suite" ;;
esac

work=$out/download
rm -f "$out/qemu-system-x86_64" "$out/version"
# shellcheck disable=SC2086
apt_unpack "$work" "$out/root" $pkgs
root=$out/root
loader=$root/lib64/ld-linux-x86-64.so.2
[ -e "$loader" ] || loader=$root/usr/lib64/ld-linux-x86-64.so.2
[ -e "$loader" ] || die "no ld-linux-x86-64.so.2 in the unpacked libc6"
# The loader is a symlink into the unpacked tree (usrmerge); resolve it there.
case $(readlink "$loader" || true) in
/*) loader=$root$(readlink "$loader") ;;
esac
cat >"$out/qemu-system-x86_64" <<WRAPPER
#!/bin/sh
# $suite's qemu-system-x86_64, run by its own loader and libraries
# (tests/kvm-lab/fetch-qemu.sh).
QEMU_MODULE_DIR='$root/usr/lib/x86_64-linux-gnu/qemu' exec '$loader' \\
    --library-path '$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu' \\
    '$root/usr/bin/qemu-system-x86_64' -L '$root/usr/share/qemu' -L '$root/usr/share/seabios' "\$@"
WRAPPER
chmod +x "$out/qemu-system-x86_64"
"$out/qemu-system-x86_64" --version 2>"$work/version.err" | head -n 1 >"$out/version.new" ||
    true
[ -s "$out/version.new" ] ||
    die "the unpacked QEMU does not run: $(tail -n 1 "$work/version.err")"
mv "$out/version.new" "$out/version"
rm -rf "$work"
