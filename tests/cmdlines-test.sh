#!/bin/sh
# 28 realistic QEMU direct-boot command lines (QEMU's docs, libvirt's argv,
# CI scripts) through keel-vmm --check-args: each is accepted, or refused on
# purpose with a message naming why.  The table in
# docs/qemu-command-lines.md is this list: `tests/cmdlines-test.sh --table`
# prints it.  --check-args parses the whole line, checks the files and the
# kernel's format and exits, so this runs without KVM.
#   top_builddir  the build tree (keel-vmm, the test guest as the kernel)
top_builddir=${top_builddir:-.}
vmm=${KEEL_VMM:-$top_builddir/vmm/keel-vmm}
guest=${KEEL_GUEST:-$top_builddir/vmm/guest/keel-guest}

# One line each: EXPECT|NEEDLE|WHY|ARGUMENTS.  EXPECT is ok or refused;
# NEEDLE must appear in keel-vmm's messages when refused; WHY is the table's
# one-line reason.  $K kernel, $I initrd, $D raw disk, $T scratch directory.
lines() {
    cat <<'EOF'
ok|||-kernel $K -append console=ttyS0 -nographic
ok|||-enable-kvm -m 512 -kernel $K -initrd $I -append "console=ttyS0 root=/dev/vda" -drive file=$D,format=raw,if=virtio -nographic
ok|||-machine q35,accel=kvm -cpu host -smp 1 -m 1G -kernel $K -append console=ttyS0 -serial stdio -display none
ok|||-nodefaults -nographic -serial mon:stdio -no-reboot -enable-kvm -m 1G -kernel $K -append "console=ttyS0 panic=-1"
ok|||-S -daemonize -pidfile $T/vm.pid -qmp unix:$T/qmp.sock,server=on,wait=off -serial file:$T/serial.log -kernel $K -drive file=$D,format=raw,if=virtio
ok|||-enable-kvm -kernel $K -qmp unix:$T/qmp.sock,server,nowait -serial stdio -display none
ok|||-kernel $K -chardev socket,id=c0,path=$T/con.sock,server=on,wait=off -serial chardev:c0 -monitor none
ok|||-kernel $K -chardev socket,id=mon0,path=$T/mon.sock,server=on,wait=off -mon chardev=mon0,mode=control -nographic
ok|||-enable-kvm -kernel $K -drive file=$D,if=virtio,cache=none,aio=native,format=raw -nographic
ok|||-kernel $K -object iothread,id=io0 -drive file=$D,if=none,id=d0,format=raw,cache=none,aio=io_uring -device virtio-blk-pci,drive=d0,iothread=io0 -nographic
ok|||-kernel $K -display none -vga none -monitor none -serial stdio -no-user-config -nodefaults
ok|||-kernel $K -drive file=$D,format=raw,if=virtio,werror=stop,rerror=stop -qmp unix:$T/qmp.sock,server=on,wait=off -nographic
ok|||-m 2G -object memory-backend-memfd,id=mem,size=2G -machine memory-backend=mem -kernel $K -nographic
ok|||-kernel $K -device isa-debug-exit,iobase=0xf4,iosize=0x04 -no-reboot -no-shutdown -nographic
ok|||-name vm1,debug-threads=on -pidfile $T/vm.pid -daemonize -serial unix:$T/serial.sock,server=on,wait=off -kernel $K
ok|||-machine none -qmp stdio
ok|||-monitor stdio -serial none -kernel $K
refused|qcow2|only raw images (no qcow2 driver)|-kernel $K -drive file=$T/disk.qcow2,format=qcow2,if=virtio -nographic
refused|-netdev|no network devices|-kernel $K -netdev user,id=n0 -device virtio-net-pci,netdev=n0 -nographic
ok|||-enable-kvm -smp 4 -m 1G -kernel $K -nographic
refused|TCP|unix sockets only for chardevs|-kernel $K -qmp tcp:localhost:4444,server,nowait -nographic
refused|-serial pty|no pty chardev backend|-kernel $K -append console=ttyS0 -serial pty
refused|microvm|the PC machine only (no microvm)|-M microvm -kernel $K -nographic
refused|-bios|no firmware: direct kernel boot only|-bios /usr/share/qemu/qboot.rom -kernel $K -nographic
refused|-cpu Skylake-Client|the host CPU model only|-cpu Skylake-Client -kernel $K -nographic
refused|-virtfs|no 9p/virtio-fs sharing|-kernel $K -virtfs local,path=/tmp,mount_tag=host0,security_model=none -nographic
refused|-rtc|-rtc not supported (the RTC runs on host time)|-kernel $K -rtc base=utc -nographic
refused|-uuid|libvirt's full argv: -blockdev, -rtc, -boot, -uuid, -overcommit, -msg, -device bus=/addr=, -machine usb=/dump-guest-core= (all named in one run)|-name guest=vm1,debug-threads=on -S -machine pc-q35-7.2,usb=off,dump-guest-core=off -accel kvm -cpu host -m 1024 -overcommit mem-lock=off -smp 1,sockets=1,cores=1,threads=1 -uuid 0b3f6a5c-1111-2222-3333-444455556666 -no-user-config -nodefaults -chardev socket,id=charmonitor,path=$T/mon.sock,server=on,wait=off -mon chardev=charmonitor,id=monitor,mode=control -rtc base=utc -no-shutdown -boot strict=on -kernel $K -append console=ttyS0 -blockdev driver=file,filename=$D,node-name=libvirt-1-storage -device virtio-blk-pci,bus=pci.0,addr=0x4,drive=libvirt-1-storage,id=virtio-disk0 -msg timestamp=on
EOF
}

if [ "${1:-}" = "--table" ]; then
    echo "| # | QEMU command line (\$K kernel, \$D disk, \$T a directory) | keel-vmm |"
    echo "|---|---|---|"
    i=0
    lines | while IFS='|' read -r expect needle why args; do
        i=$((i + 1))
        if [ "$expect" = ok ]; then
            res="runs"
        else
            res="refused: $why"
        fi
        printf '| %d | `%s` | %s |\n' "$i" "$args" "$res"
    done
    exit 0
fi

if [ ! -x "$vmm" ] || [ ! -s "$guest" ]; then
    echo "1..0 # SKIP keel-vmm or $guest not built"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/keel-cmdlines.XXXXXX")
trap 'rm -rf "$T"' EXIT
K=$guest
I=$T/initrd.img
D=$T/disk.raw
: >"$I"
truncate -s 16M "$D"
truncate -s 16M "$T/disk.qcow2"
export K I D T

n=0
failed=0
lines >"$T/lines"
while IFS='|' read -r expect needle why args; do
    n=$((n + 1))
    # The arguments are shell words with quotes: let the shell split them.
    eval "set -- $args"
    "$vmm" --check-args "$@" </dev/null >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$expect" = ok ]; then
        if [ $rc -eq 0 ]; then
            echo "ok $n - runs: $args"
        else
            echo "not ok $n - should run: $args"
            sed 's/^/#   /' "$T/err"
            failed=1
        fi
    elif [ $rc -eq 1 ] && grep -q -e "$needle" "$T/err"; then
        echo "ok $n - refused ($why): $args"
        sed 's/^/#   /' "$T/err"
    else
        echo "not ok $n - should be refused naming '$needle' (rc $rc): $args"
        sed 's/^/#   /' "$T/err"
        failed=1
    fi
done <"$T/lines"
echo "1..$n"
exit $failed
