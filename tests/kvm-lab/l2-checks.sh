#!/bin/sh
# l2-checks.sh TEST: the Linux-side checks of the lab, run by l2-init inside
# the guest on its first virtio disk, /dev/vda.  Prints one line per check,
#   keel-lab: ok - TEXT      keel-lab: not ok - TEXT
# which the driver in L1 (tests/kvm-lab/l2-run.sh) collects; it checks the
# image from outside afterwards.  Known content is made by `yes WORD | head
# -c N`, so the driver can make the same bytes without sharing a file.
dev=/dev/vda
ok() {  # STATUS TEXT
    if [ "$1" -eq 0 ]; then echo "keel-lab: ok - $2"; else echo "keel-lab: not ok - $2"; fi
}
pattern() { yes "keel-lab-$1-0123456789abcdef" | head -c "$2"; }
MiB=1048576
# The real programs (util-linux blkdiscard has -z, e2fsprogs mke2fs has -t):
# busybox's sh runs its own applet for a bare name.
real() {
    for d in /usr/sbin /sbin /usr/bin; do
        [ -x "$d/$1" ] && [ ! -L "$d/$1" ] && { echo "$d/$1"; return; }
    done
    echo "$1"
}
blkdiscard=$(real blkdiscard) mke2fs=$(real mke2fs) e2fsck=$(real e2fsck)

[ -b $dev ] || { ok 1 "$dev exists (virtio_blk probed our device)"; exit 0; }
echo "keel-lab: $dev: $(cat /sys/block/vda/size) sectors, ro=$(cat /sys/block/vda/ro)," \
     "discard_max=$(cat /sys/block/vda/queue/discard_max_bytes)," \
     "write_zeroes_max=$(cat /sys/block/vda/queue/write_zeroes_max_bytes)," \
     "irqs: $(grep -o 'virtio[0-9]*-[a-z.0-9]*' /proc/interrupts | tr '\n' ' ')"

# What the guest made of the PMU (kvm_amd logs "Unhandled WRMSR(0xc0010007)"
# when Linux probes the K7 performance counters).
dmesg | grep -iE 'PMU|perfctr|Performance Events' | sed 's/^/keel-lab: dmesg: /'

case $1 in
fs-write)
    # A file system written through the page cache, synced, and checked.
    $mke2fs -q -F -t ext4 $dev >/tmp/mkfs.log 2>&1
    rc=$?
    ok $rc "mkfs.ext4 on $dev"
    [ $rc -eq 0 ] || sed 's/^/keel-lab: mkfs: /' /tmp/mkfs.log
    mkdir -p /mnt && mount -t ext4 $dev /mnt
    ok $? "mount the new ext4"
    pattern small 4096 >/mnt/small
    pattern big $((8 * MiB)) >/mnt/big
    seq 1 20000 >/mnt/seq
    mkdir -p /mnt/dir && i=0
    while [ $i -lt 50 ]; do echo "file $i" >/mnt/dir/f$i; i=$((i + 1)); done
    sync
    ok $? "files written and synced"
    umount /mnt
    ok $? "umount"
    $e2fsck -fn $dev >/tmp/fsck.log 2>&1
    rc=$?
    ok $rc "e2fsck -fn clean after the writes (rc=$rc)"
    [ $rc -eq 0 ] || sed 's/^/keel-lab: fsck: /' /tmp/fsck.log
    ;;
fs-read)
    # The same files after a power cycle: a new keel-vmm on the same image.
    mkdir -p /mnt && mount -t ext4 -o ro $dev /mnt
    ok $? "mount the ext4 again after the restart"
    [ "$(pattern small 4096 | md5sum)" = "$(md5sum </mnt/small)" ] &&
        [ "$(pattern big $((8 * MiB)) | md5sum)" = "$(md5sum </mnt/big)" ] &&
        [ "$(seq 1 20000 | md5sum)" = "$(md5sum </mnt/seq)" ]
    ok $? "files read back equal what was written before the restart"
    n=0
    for f in /mnt/dir/f*; do [ "$(cat "$f")" = "file ${f#/mnt/dir/f}" ] && n=$((n + 1)); done
    ok $([ $n -eq 50 ]; echo $?) "50 small files intact ($n)"
    umount /mnt
    $e2fsck -fn $dev >/tmp/fsck.log 2>&1
    ok $? "e2fsck -fn still clean"
    ;;
fio)
    # Random writes at depth 32, each block checked by crc32c on read.
    fio --name=keel-lab --filename=$dev --direct=1 --ioengine=libaio --iodepth=32 \
        --rw=randwrite --bs=4k --size=32m --verify=crc32c --verify_fatal=1 \
        --do_verify=1 --output=/tmp/fio.log >/dev/null 2>&1
    rc=$?
    ok $rc "fio randwrite iodepth=32 --verify=crc32c --verify_fatal=1 (rc=$rc)"
    grep -E 'err=|WRITE:|READ:|verify' /tmp/fio.log | sed 's/^/keel-lab: fio: /'
    ;;
discard)
    # Non-zero data first; then DISCARD the first 4 MiB and WRITE_ZEROES
    # the next 4 MiB.  The driver checks the image from outside.
    pattern disc $((8 * MiB)) | dd of=$dev bs=1M oflag=direct 2>/dev/null
    ok $? "8 MiB of data written"
    [ "$(cat /sys/block/vda/queue/discard_max_bytes)" -gt 0 ]
    ok $? "the device offers DISCARD (discard_max_bytes > 0)"
    [ "$(cat /sys/block/vda/queue/write_zeroes_max_bytes)" -gt 0 ]
    ok $? "the device offers WRITE_ZEROES (write_zeroes_max_bytes > 0)"
    $blkdiscard -o 0 -l $((4 * MiB)) $dev
    ok $? "blkdiscard 0..4 MiB"
    $blkdiscard -z -o $((4 * MiB)) -l $((4 * MiB)) $dev
    ok $? "blkdiscard -z 4..8 MiB"
    echo 1 >/proc/sys/vm/drop_caches
    [ "$(dd if=$dev bs=1M skip=4 count=4 iflag=direct 2>/dev/null | md5sum)" = \
      "$(head -c $((4 * MiB)) /dev/zero | md5sum)" ]
    ok $? "the guest reads zeroes after blkdiscard -z"
    ;;
readonly)
    [ "$(cat /sys/block/vda/ro)" = 1 ]
    ok $? "the kernel sees vda read-only (VIRTIO_BLK_F_RO)"
    pattern ro 4096 | dd of=$dev bs=4k oflag=direct 2>/tmp/dd.err
    ok $([ $? -ne 0 ]; echo $?) "a direct write fails ($(grep -v records /tmp/dd.err | head -n 1))"
    blockdev --setrw $dev 2>/dev/null
    pattern ro 4096 | dd of=$dev bs=4k oflag=direct 2>/tmp/dd.err
    ok $([ $? -ne 0 ]; echo $?) "still fails after blockdev --setrw ($(grep -v records /tmp/dd.err | head -n 1))"
    mount -t ext4 $dev /mnt 2>/dev/null && umount /mnt
    ;;
inject)
    # The first write fails with EIO (inject=write:EIO:once); the kernel
    # reports it, and the writes after it land.
    pattern inj1 65536 | dd of=$dev bs=64k oflag=direct 2>/tmp/dd.err
    ok $([ $? -ne 0 ]; echo $?) "the first write fails ($(grep -v records /tmp/dd.err | head -n 1))"
    dmesg | grep -q 'I/O error, dev vda'
    ok $? "the kernel logs an I/O error on vda"
    dmesg | grep 'I/O error, dev vda' | head -n 2 | sed 's/^/keel-lab: dmesg: /'
    pattern inj2 $((4 * MiB)) | dd of=$dev bs=1M seek=1 oflag=direct 2>/dev/null
    ok $? "the next 4 MiB write succeeds"
    [ "$(dd if=$dev bs=1M skip=1 count=4 iflag=direct 2>/dev/null | md5sum)" = \
      "$(pattern inj2 $((4 * MiB)) | md5sum)" ]
    ok $? "and reads back"
    ;;
resize)
    # The driver grows the image over QMP (block_resize) once we say we
    # wait; the device raises its config-change interrupt, and the kernel
    # must see the new capacity without a rescan.
    s0=$(cat /sys/block/vda/size)
    echo "keel-lab: resize: waiting at $s0 sectors"
    i=0
    while [ $i -lt 240 ] && [ "$(cat /sys/block/vda/size)" = "$s0" ]; do sleep 0.5; i=$((i + 1)); done
    s1=$(cat /sys/block/vda/size)
    [ "$s1" -eq $((s0 + 2048)) ]
    ok $? "after block_resize (+1 MiB) the kernel sees $s1 sectors (was $s0)"
    dmesg | grep -q 'vda.*new size\|vda.*capacity change'
    ok $? "virtio_blk logged the capacity change ($(dmesg | grep -o 'vda.*new size.*' | head -n 1))"
    pattern rsz 65536 | dd of=$dev bs=64k seek=$(( (s1 * 512 - 65536) / 65536 )) oflag=direct 2>/dev/null
    ok $? "a 64 KiB write into the new last 64 KiB succeeds"
    ;;
mq)
    # Two vCPUs and a two-queue virtio-blk (issue 14): the kernel brings up
    # both CPUs, the driver makes one hardware queue per virtqueue, fio with
    # one job pinned per CPU verifies, and each queue's MSI-X vector fired.
    ncpu=$(grep -c '^processor' /proc/cpuinfo)
    ok $([ "$ncpu" -eq 2 ]; echo $?) "the kernel sees 2 CPUs ($ncpu; $(dmesg | grep -o 'Brought up.*' | head -n 1))"
    nq=$(ls /sys/block/vda/mq 2>/dev/null | wc -l)
    ok $([ "$nq" -eq 2 ]; echo $?) "virtio_blk made 2 hardware queues (/sys/block/vda/mq: $nq)"
    # Printed by virtio_blk since 5.18; older kernels say nothing.
    if dmesg | grep -q 'default/read/poll queues'; then
        dmesg | grep -q '2/0/0 default/read/poll queues'
        ok $? "virtio_blk: $(dmesg | grep -o '[0-9]*/[0-9]*/[0-9]* default/read/poll queues' | head -n 1)"
    fi
    fio --name=keel-lab-mq --filename=$dev --direct=1 --ioengine=libaio --iodepth=16 \
        --rw=randwrite --bs=4k --size=16m --offset_increment=16m --numjobs=2 \
        --cpus_allowed=0-1 --cpus_allowed_policy=split \
        --verify=crc32c --verify_fatal=1 --do_verify=1 --output=/tmp/fio.log >/dev/null 2>&1
    rc=$?
    ok $rc "fio numjobs=2 (one per CPU) randwrite iodepth=16 --verify=crc32c (rc=$rc)"
    grep -E 'err=|WRITE:|READ:|verify' /tmp/fio.log | sed 's/^/keel-lab: fio: /'
    # The per-queue vectors are named virtioN-req.Q in /proc/interrupts.
    busy=0
    for q in 0 1; do
        line=$(grep "virtio[0-9]*-req\.$q\$" /proc/interrupts | head -n 1)
        n=$(echo "$line" | awk '{ s = 0; for (i = 2; i <= 3; i++) s += $i; print s }')
        echo "keel-lab: queue $q interrupts: ${n:-none} ($line)"
        [ "${n:-0}" -gt 0 ] && busy=$((busy + 1))
    done
    ok $([ $busy -eq 2 ]; echo $?) "both queues' MSI-X vectors fired ($busy of 2)"
    ;;
bench-*)
    # One benchmark sample (the driver's bench step): 4 KiB random reads,
    # O_DIRECT, depth 16 per job, one job per queue pinned one per CPU.
    # The driver samples the VMM's CPU time at the two marker lines.
    jobs=${1#bench-}
    fio --name=warm --filename=$dev --direct=1 --ioengine=libaio --rw=randread --bs=4k \
        --iodepth=16 --runtime=2 --time_based --output=/dev/null >/dev/null 2>&1
    echo "keel-lab: bench: start"
    fio --name=bench --filename=$dev --direct=1 --ioengine=libaio --rw=randread --bs=4k \
        --iodepth=16 --numjobs=$jobs --cpus_allowed=0-1 --cpus_allowed_policy=split \
        --runtime=10 --time_based --group_reporting --output-format=terse \
        --output=/tmp/fio.terse >/dev/null 2>&1
    rc=$?
    echo "keel-lab: bench: end"
    # The driver samples the VMM's CPU time when it sees the marker (it
    # polls every 0.5 s): stay up until it has.
    sleep 2
    ok $rc "fio randread numjobs=$jobs (rc=$rc)"
    # terse v3 (fio 3.x): field 8 read IOPS, 16 completion latency mean
    # (us), 18-37 its percentiles as "P%=us": 24 is p50, 30 p99.
    awk -F';' '{ split($24, a, "="); split($30, b, "=");
                 print "keel-lab: bench: iops=" $8 " clat_mean_us=" $16 " p50_us=" a[2] " p99_us=" b[2] }' \
        /tmp/fio.terse
    ;;
pattern)
    # Plain O_DIRECT write + read-back (for the fallback paths).
    pattern pat $((4 * MiB)) | dd of=$dev bs=64k oflag=direct 2>/dev/null
    ok $? "4 MiB written (O_DIRECT, 64 KiB requests)"
    [ "$(dd if=$dev bs=64k count=64 iflag=direct 2>/dev/null | md5sum)" = \
      "$(pattern pat $((4 * MiB)) | md5sum)" ]
    ok $? "read back equal"
    ;;
*)
    ok 1 "unknown test $1"
    ;;
esac
