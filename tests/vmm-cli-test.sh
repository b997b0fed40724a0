#!/bin/sh
# keel-vmm's command line as a user meets it (no /dev/kvm needed): each bad
# command line prints one line per problem naming its option and exits 1; an
# unknown kernel format is refused before KVM is touched; --version, --help,
# --features (KVM capabilities with their fallbacks; KEEL_AVOID honoured).
top_builddir=${top_builddir:-.}
vmm=${KEEL_VMM:-$top_builddir/vmm/keel-vmm}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-vmm-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0
ok() {
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}

printf 'not a kernel at all\n' >"$tmp/junk"
: >"$tmp/empty"

# bad <needle> <args...>: exit 1, one line on stderr containing needle, no stdout.
bad() {
    needle=$1
    shift
    "$vmm" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    rc=$?
    lines=$(wc -l <"$tmp/err")
    if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -qF -- "$needle" "$tmp/err" && [ ! -s "$tmp/out" ]; then
        ok 0 "keel-vmm $* → exit 1, one line naming '$needle'"
    else
        ok 1 "keel-vmm $* → exit 1, one line naming '$needle' (rc=$rc, $lines lines)"
        sed 's/^/# /' "$tmp/err"
    fi
}

bad "-frobnicate" -frobnicate -kernel "$tmp/junk"
bad "-kernel" -kernel
bad "-kernel: required" -m 64
bad "-m 12Q" -kernel "$tmp/junk" -m 12Q
bad "-smp 4" -kernel "$tmp/junk" -smp 4
bad "aio=posix" -kernel "$tmp/junk" -drive file=x,aio=posix
bad "cache=often" -kernel "$tmp/junk" -drive file=x,cache=often
bad "iothread=io7" -kernel "$tmp/junk" -drive file=x,iothread=io7
bad "-object" -kernel "$tmp/junk" -object memory-backend-ram,id=r
bad "-device e1000" -kernel "$tmp/junk" -device e1000
bad "-serial vc" -kernel "$tmp/junk" -serial vc
# Every problem of a command line in one run, one line each, in order.
"$vmm" -frobnicate -m 12Q -drive file=x,colour=red,aio=posix -smp 4 -serial vc \
    >"$tmp/out" 2>"$tmp/err" </dev/null
rc=$?
sed 's/^/# /' "$tmp/err"
ok $([ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 7 ] &&
     sed -n 1p "$tmp/err" | grep -qF -- "-frobnicate: unknown option" &&
     sed -n 2p "$tmp/err" | grep -qF -- "-m 12Q" &&
     sed -n 3p "$tmp/err" | grep -qF -- "'colour'" &&
     sed -n 4p "$tmp/err" | grep -qF -- "aio=posix" &&
     sed -n 5p "$tmp/err" | grep -qF -- "-smp 4" &&
     sed -n 6p "$tmp/err" | grep -qF -- "-serial vc" &&
     sed -n 7p "$tmp/err" | grep -qF -- "-kernel: required" &&
     [ ! -s "$tmp/out" ]; echo $?) \
    "a line with seven problems names all seven in one run, in order"

KEEL_AVOID=warp-drive "$vmm" -kernel "$tmp/junk" >"$tmp/out" 2>"$tmp/err" </dev/null
rc=$?
ok $([ $rc -eq 1 ] && grep -q "warp-drive" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ]; echo $?) \
    "an unknown KEEL_AVOID word exits 1 naming it"

bad "unknown kernel format" -kernel "$tmp/junk"
bad "unknown kernel format" -kernel "$tmp/empty"
bad "No such file" -kernel "$tmp/does-not-exist"
bad "is a directory" -kernel "$tmp"

"$vmm" --version >"$tmp/out" 2>&1
ok $([ $? -eq 0 ] && grep -q '^keel-vmm (keel) [0-9]' "$tmp/out"; echo $?) "--version"
"$vmm" --help >"$tmp/out" 2>&1
ok $([ $? -eq 0 ] && grep -q -- '-drive file=' "$tmp/out" && grep -q -- '--features' "$tmp/out"; echo $?) \
    "--help lists the options"

"$vmm" --features >"$tmp/out" 2>&1
rc=$?
sed 's/^/# /' "$tmp/out"
ok $rc "--features exits 0"
for f in event-notifier kvm kvm-ioeventfd kvm-irqfd kvm-signal-msi kvm-gsi-routing \
         kvm-immediate-exit guest-ram kvm-cpuid-quirks; do
    ok $(grep -Eq "^$f active=[^ ]+ compiled=[^ ]+ reason=[^ ]+$" "$tmp/out"; echo $?) \
        "--features has a '$f' line"
done
ok $(grep -q '^kvm-ioeventfd .*compiled=ioeventfd,exit-handler' "$tmp/out" &&
     grep -q '^kvm-irqfd .*compiled=irqfd,ioctl' "$tmp/out"; echo $?) \
    "--features names each capability's fallback"

KEEL_AVOID=ioeventfd,irqfd,signal-msi "$vmm" --features >"$tmp/out" 2>&1
ok $(grep -q '^kvm-ioeventfd active=exit-handler .*reason=' "$tmp/out" &&
     grep -q '^kvm-irqfd active=ioctl ' "$tmp/out" &&
     grep -q '^kvm-signal-msi active=intx ' "$tmp/out"; echo $?) \
    "KEEL_AVOID=ioeventfd,irqfd,signal-msi switches all three to their fallbacks"
if { [ -c /dev/kvm ] && (exec 3<>/dev/kvm); } 2>/dev/null; then
    ok $(grep -q '^kvm-ioeventfd active=exit-handler .*reason=KEEL_AVOID' "$tmp/out"; echo $?) \
        "and the reason says KEEL_AVOID"
else
    ok $(grep -q '^kvm active=none ' "$tmp/out"; echo $?) "without /dev/kvm: kvm active=none"
fi

echo "1..$n"
exit $failed
