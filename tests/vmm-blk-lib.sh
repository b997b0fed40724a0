# tests/vmm-blk-lib.sh — shell helpers shared by tests/vmm-blk-test.sh,
# tests/demo.sh and tests/bench-vmm.sh (sourced, POSIX sh).
#
# Input: top_builddir (absolute, or relative to the caller's cwd), TMP (a
# scratch directory the caller owns).  Sets VMM, GUEST, KEEL_IMG,
# OLDKERNEL (paths in the build tree).
#
#   vmm_run NAME [ENV=VAL...] -- KEEL-VMM-ARGS...
#       boots keel-vmm (with KEEL_VMM_STATS=1) under a timeout; stdout in
#       $TMP/NAME.out, stderr in $TMP/NAME.err, exit status in $TMP/NAME.rc
#   result_field NAME KEY   the value of KEY= in NAME's guest RESULT line
#   stats_field NAME KEY    the value of KEY= in NAME's virtio-blk0 stats line
#   vmm_rc NAME             NAME's exit status
#   check_pattern IMAGE OFFSET BYTES GEN SEED
#       true when the image holds the guest's write pattern there
#       (vmm/guest/workload.c: the 32-bit word at byte offset o is
#       (o + gen * 0x9E3779B1 + seed * 0x85EBCA77) mod 2^32)
#   check_zero IMAGE OFFSET BYTES   true when that range is all zero bytes
#   scan_image IMAGE BS SEED GEN_MIN
#       prints "written zero bad" over the image's BS-byte blocks (written:
#       the pattern of one generation in GEN_MIN..GEN_MIN+255 throughout)
#   direct_io_ok DIR        true when O_DIRECT works for files in DIR
#   qboot_option            "-bios PATH" of qboot when installed (QEMU
#                           boots the guest in ~0.3 s), else nothing
#   skip_all REASON         "1..0 # SKIP REASON", exit 77
#   vmm_test_require_guest  skip unless the test guest and timeout(1) exist
#   vmm_test_require        that, and a usable /dev/kvm and keel-vmm

# shellcheck disable=SC2034,SC2154  # used by the scripts that source this
VMM=$top_builddir/vmm/keel-vmm
GUEST=$top_builddir/vmm/guest/keel-guest
KEEL_IMG=$top_builddir/keel-img
OLDKERNEL=$top_builddir/tests/keel-oldkernel
: "${KEEL_VMM_TIMEOUT:=60}"

vmm_run() {
    _name=$1
    shift
    _env="KEEL_VMM_STATS=1"
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        _env="$_env $1"
        shift
    done
    [ "${1:-}" = "--" ] && shift
    # shellcheck disable=SC2086
    env $_env timeout "$KEEL_VMM_TIMEOUT" "$@" </dev/null >"$TMP/$_name.out" 2>"$TMP/$_name.err"
    echo $? >"$TMP/$_name.rc"
}

vmm_rc() {
    cat "$TMP/$1.rc" 2>/dev/null
}

result_field() {
    tr -d '\r' <"$TMP/$1.out" | sed -n "s/^KEEL-GUEST: RESULT.* $2=\([^ ]*\).*/\1/p" | tail -n 1
}

stats_field() {
    sed -n "s/^keel-vmm: virtio-blk0 stats: .*[ ]$2=\([^ ]*\).*/\1/p" "$TMP/$1.err" | tail -n 1
}

check_pattern() {
    od -A n -t u4 -v -j "$2" -N "$3" "$1" | awk -v o="$2" -v g="$4" -v s="$5" '
        { for (i = 1; i <= NF; i++) {
              want = (o + g * 2654435761 + s * 2246822519) % 4294967296
              if ($i != want) {
                  if (bad < 3) printf "#   byte %.0f: %.0f, want %.0f\n", o, $i, want
                  bad++
              }
              o += 4; n++
          } }
        END { exit !(n > 0 && bad == 0) }'
}

check_zero() {
    [ "$3" -eq 0 ] && return 0
    cmp -s -n "$3" -i "$2:0" "$1" /dev/zero
}

direct_io_ok() {
    dd if=/dev/zero of="$1/.direct-probe" bs=4096 count=1 oflag=direct 2>/dev/null
    _r=$?
    rm -f "$1/.direct-probe"
    return $_r
}

qboot_option() {
    for _f in /usr/share/qemu/qboot.rom /usr/share/seabios/qboot.rom; do
        [ -f "$_f" ] && { echo "-bios $_f"; return; }
    done
}

# scan_image IMAGE BS SEED GEN_MIN: prints "written zero bad" over the
# image's BS-byte blocks (a written block holds the pattern of one
# generation in GEN_MIN..GEN_MIN+255).
scan_image() {
    od -A n -t u4 -v -w"$2" "$1" | awk -v bs="$2" -v s="$3" -v g0="$4" '
        {   o = (NR - 1) * bs
            nz = 0
            for (i = 1; i <= NF; i++) if ($i != 0) { nz = 1; break }
            if (!nz) { zero++; next }
            g = -1
            for (k = g0; k < g0 + 256; k++)
                if ((o + k * 2654435761 + s * 2246822519) % 4294967296 == $1) { g = k; break }
            good = g >= 0
            for (i = 2; good && i <= NF; i++)
                if ((o + 4 * (i - 1) + g * 2654435761 + s * 2246822519) % 4294967296 != $i) good = 0
            if (good) written++
            else { bad++; if (bad <= 3) printf "# block %d: neither zero nor one generation of the pattern\n", NR - 1 > "/dev/stderr" }
        }
        END { printf "%d %d %d\n", written, zero, bad }'
}

# A skip of the whole test (77) with REASON.
skip_all() {
    echo "1..0 # SKIP $1"
    exit 77
}

# The start of the tests that run the test guest under keel-vmm or QEMU:
# a skip unless the guest is built and timeout(1) is there.
vmm_test_require_guest() {
    [ -s "$GUEST" ] || skip_all "the test guest is not built"
    command -v timeout >/dev/null 2>&1 || skip_all "timeout(1) not available"
}

# The keel-vmm-only tests' start: also a usable /dev/kvm (checked as a
# device first: opening a missing one as root would create a file) and
# keel-vmm itself.
vmm_test_require() {
    { [ -c /dev/kvm ] && (exec 3<>/dev/kvm); } 2>/dev/null || skip_all "cannot open /dev/kvm"
    [ -x "$VMM" ] && [ -s "$GUEST" ] || skip_all "keel-vmm or the test guest is not built"
    vmm_test_require_guest
}

# TAP lines, numbered; $failed counts the failures.
n=0
failed=0
ok() {          # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        failed=$((failed + 1))
    fi
}
