#!/bin/sh
# tests/matrix.sh — the forced-fallback and old-kernel matrix (TAP).
#
# Re-runs every unit test named in KEEL_MATRIX_TESTS (paths relative to
# top_builddir; each layer appends its own in its Makefile.inc) under each
# "setting":
#   avoid=WORD     KEEL_AVOID=WORD, for each word in AVOID_WORDS below
#   avoid=all      KEEL_AVOID=<every word at once>
#   kernel=PRESET  through tests/keel-oldkernel --preset PRESET, which makes
#                  the system calls that kernel lacked fail with ENOSYS
# and prints one TAP line per (setting, test): exit 0 = ok, 77 = skip (with
# the test's own reason), anything else = not ok, followed by the test's
# failing lines and the end of its output as "# " lines.  Then, per setting,
# it runs keel-features and checks that the fallback the setting should
# force is the one in use (the table EXPECTATIONS below).  Failures listed
# in KNOWN_ISSUES are reported as TODO (XFAIL) until they are fixed.
#
# Environment:
#   top_builddir, top_srcdir   exported by the test harness (default: .)
#   KEEL_MATRIX_TESTS          the test programs (space-separated)
#   KEEL_MATRIX_QUICK=1        only the settings avoid=all and kernel=2.6.18
#   KEEL_MATRIX_SETTINGS=...   exactly these settings (e.g. "avoid=ppoll kernel=3.10")
#   KEEL_MATRIX_JOBS=N         settings run in parallel (default 2; tests
#                              of one setting always run one after another)
#   KEEL_MATRIX_TIMEOUT=S      per-test time limit in seconds (default 120)

top_builddir=${top_builddir:-$(pwd)}
launcher=$top_builddir/tests/keel-oldkernel
features=$top_builddir/keel-features

# ---- the settings ----------------------------------------------------------
# Each word is one KEEL_AVOID setting; avoid=all uses all of them at once.
# Add words here as seams appear (ioeventfd, irqfd, signal-msi, msix).
AVOID_WORDS="eventfd signalfd ppoll pipe2 preadv io_uring linux-aio ucontext epoll"
# Old-kernel presets of tests/keel-oldkernel (see keel-oldkernel --list).
PRESETS="2.6.9 2.6.18 2.6.32 3.10 4.18 docker"

# ---- what keel-features must report under each setting ---------------------
# setting: avoid=WORD / avoid=all / kernel=PRESET
# feature: the first word of a keel-features line
# kind:    fallback - the setting must switch the feature to ACTIVE, for
#                     REASON (skipped if the build already uses ACTIVE
#                     without any setting, e.g. a --disable-* build);
#          primary  - the setting must leave the feature on ACTIVE (skipped
#                     if ACTIVE is not in use without the setting either)
# active, reason: extended regexps matched against the whole value.
# A feature that keel-features does not print yet is skipped ("not built").
# avoid=all checks every "fallback" line of the single avoid=WORD settings.
EXPECTATIONS='
# setting        feature         kind      active                  reason
avoid=eventfd    event-notifier  fallback  pipe                    KEEL_AVOID
avoid=signalfd   signal-fd       fallback  thread                  KEEL_AVOID
avoid=ppoll      poll            fallback  g_poll                  KEEL_AVOID
avoid=pipe2      pipe2           fallback  pipe\+fcntl             KEEL_AVOID
avoid=preadv     block-preadv    fallback  pread                   KEEL_AVOID
avoid=io_uring   block-engine    fallback  linux-aio|threads       KEEL_AVOID
avoid=linux-aio  block-engine    primary   io_uring                .*
avoid=ucontext   coroutine       fallback  sigaltstack             KEEL_AVOID
avoid=epoll      aio-fd-monitor  fallback  poll                    KEEL_AVOID

# RHEL 4: no ppoll (2.6.16)
kernel=2.6.9     poll            fallback  g_poll                  ENOSYS
# RHEL 5: no eventfd/signalfd (2.6.22), pipe2 (2.6.27), preadv (2.6.30);
# linux-aio without eventfd completion is no use, so block I/O uses threads
kernel=2.6.18    event-notifier  fallback  pipe                    ENOSYS
kernel=2.6.18    signal-fd       fallback  thread                  ENOSYS
kernel=2.6.18    pipe2           fallback  pipe\+fcntl             ENOSYS
kernel=2.6.18    poll            primary   ppoll                   .*
kernel=2.6.18    block-engine    fallback  threads                 ENOSYS
kernel=2.6.18    block-preadv    fallback  pread                   ENOSYS
# RHEL 6: eventfd and friends are there; no io_uring (5.1)
kernel=2.6.32    event-notifier  primary   eventfd                 .*
kernel=2.6.32    signal-fd       primary   signalfd                .*
kernel=2.6.32    pipe2           primary   pipe2                   .*
kernel=2.6.32    block-preadv    primary   preadv                  .*
kernel=2.6.32    block-engine    fallback  linux-aio               ENOSYS
kernel=3.10      block-engine    fallback  linux-aio               ENOSYS
kernel=4.18      event-notifier  primary   eventfd                 .*
kernel=4.18      block-engine    fallback  linux-aio               ENOSYS
# Docker: io_uring_setup fails with EPERM
kernel=docker    block-engine    fallback  linux-aio               EPERM
'

# ---- known issues: expected failures, reported as TAP TODO (XFAIL) ---------
# setting (a shell pattern)   test path or "keel-features:FEATURE"   why
# Once fixed, the line passes as "ok # TODO" (XPASS), which fails the run:
# then delete the line here.
KNOWN_ISSUES='
'

# ---- helpers ----------------------------------------------------------------
unset KEEL_AVOID
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-matrix.XXXXXX") || exit 99
worker_pids=
trap 'rm -rf "$tmp"' EXIT
trap 'test -z "$worker_pids" || kill $worker_pids 2>/dev/null; exit 130' INT TERM

timeout_s=${KEEL_MATRIX_TIMEOUT:-120}
if command -v timeout >/dev/null 2>&1; then
    have_timeout=yes
else
    have_timeout=no
fi

with_timeout() {
    if test $have_timeout = yes; then
        timeout -k 5 "$timeout_s" "$@"
    else
        "$@"
    fi
}

all_words=$(echo $AVOID_WORDS | tr ' ' ',')

# run_under SETTING COMMAND...: runs COMMAND under SETTING.
run_under() {
    setting=$1
    shift
    case $setting in
    avoid=all) with_timeout env KEEL_AVOID="$all_words" "$@" ;;
    avoid=*) with_timeout env KEEL_AVOID="${setting#avoid=}" "$@" ;;
    kernel=*) with_timeout "$launcher" --preset "${setting#kernel=}" -- "$@" ;;
    *) echo "matrix.sh: bad setting '$setting'" >&2; return 99 ;;
    esac
}

# Result records, one line each, fields separated by a tab and numbered
# when printed: ok DESC / not ok DESC / skip DESC REASON / diag TEXT.
tab=$(printf '\t')
record() {
    printf '%s\n' "$1" >> "$res"
}

record_tail() {
    tail -n "${2:-15}" "$1" | while IFS= read -r line; do
        record "diag$tab  $line"
    done
}

# The failing TAP lines of a test's output (with the comment lines after
# each), then the end of the output.
record_failures() {
    grep -A 3 -e '^not ok' -e '^Bail out!' "$1" | grep -v -e '^ok ' -e '^--$' | head -n 30 \
        > "$1.failures"
    if test -s "$1.failures"; then
        record_tail "$1.failures" 30
        record "diag$tab  ... last lines:"
        record_tail "$1" 5
    else
        record_tail "$1" 15
    fi
}

# Is SETTING runnable here?  Sets $unusable to the reason if not, and
# $unusable_as to "skip" (this machine cannot) or "not ok" (a broken setup).
check_setting() {
    unusable=
    unusable_as=skip
    case $1 in
    kernel=*)
        if test ! -x "$launcher"; then
            unusable="tests/keel-oldkernel not built"
            return
        fi
        "$launcher" --preset "${1#kernel=}" -- true > "$tmp/probe.$idx" 2>&1
        rc=$?
        if test $rc -eq 77; then
            unusable="cannot emulate here: $(head -n 1 "$tmp/probe.$idx")"
        elif test $rc -ne 0; then
            unusable_as="not ok"
            unusable="keel-oldkernel --preset ${1#kernel=} fails (status $rc): $(head -n 1 "$tmp/probe.$idx")"
        fi
        ;;
    esac
}

run_test() {
    setting=$1 t=$2
    case $t in
    /*) path=$t ;;
    *) path=$top_builddir/$t ;;
    esac
    desc="$setting: $t"
    if test ! -f "$path"; then
        record "not ok${tab}$desc (not found: $path)"
        return
    fi
    log=$tmp/log.$idx
    case $t in
    *.sh) (cd "$top_builddir" && run_under "$setting" "${SHELL:-/bin/sh}" "$path") > "$log" 2>&1 ;;
    *) (cd "$top_builddir" && run_under "$setting" "$path") > "$log" 2>&1 ;;
    esac
    rc=$?
    if test $rc -eq 77; then
        reason=$(sed -n 's/^1\.\.0 *# *[Ss][Kk][Ii][Pp] *//p' "$log" | head -n 1)
        record "skip${tab}$desc${tab}${reason:-exit status 77}"
    elif test $rc -eq 0 && ! grep -q -e '^not ok' -e '^Bail out!' "$log"; then
        record_result ok "$setting" "$t" "$desc"
    else
        case $rc in
        0) why="reported a failure" ;;
        124|137) why="timed out after ${timeout_s}s" ;;
        *) why="exit status $rc" ;;
        esac
        record_result "not ok" "$setting" "$t" "$desc ($why)"
        record_failures "$log"
    fi
}

# value_of FEATURE FIELD FILE: the FIELD= value on FEATURE's line.
value_of() {
    sed -n "s/^$1 .*$2=\([^ ]*\).*/\1/p" "$3" | head -n 1
}

matches() {
    printf '%s\n' "$1" | grep -Eq "^($2)\$"
}

# known_issue SETTING WHAT: prints the reason if KNOWN_ISSUES lists it.
known_issue() {
    printf '%s\n' "$KNOWN_ISSUES" | while read -r pattern what why; do
        case $pattern in '' | '#'*) continue ;; esac
        test "$what" = "$2" || continue
        eval "case \$1 in $pattern) printf '%s\\n' \"\$why\" ;; esac"
    done | head -n 1
}

# record_result ok|"not ok" SETTING WHAT DESC: a test or check result,
# turned into a TODO when KNOWN_ISSUES expects this one to fail.
record_result() {
    todo=$(known_issue "$2" "$3")
    if test -n "$todo"; then
        record "todo ${1}${tab}$4${tab}$todo"
    else
        record "${1}${tab}$4"
    fi
}

check_expectation() {
    setting=$1 feature=$2 kind=$3 want_active=$4 want_reason=$5 out=$6
    desc="$setting: keel-features: $feature active=$(printf '%s' "$want_active" | tr -d '\\')"
    if ! grep -q "^$feature " "$out"; then
        record "skip${tab}$desc${tab}keel-features has no $feature line (not built yet)"
        return
    fi
    compiled=$(value_of "$feature" compiled "$out")
    if ! printf '%s\n' "$compiled" | tr ',' '\n' | grep -Eq "^($want_active)\$"; then
        record "skip${tab}$desc${tab}this build has no $(printf '%s' "$want_active" | tr -d '\\') (compiled=$compiled)"
        return
    fi
    base_active=$(value_of "$feature" active "$tmp/features.base")
    active=$(value_of "$feature" active "$out")
    reason=$(value_of "$feature" reason "$out")
    if test $kind = fallback && matches "$base_active" "$want_active"; then
        record "skip${tab}$desc${tab}already $base_active without the setting (this build has no primary)"
        return
    fi
    if test $kind = primary && ! matches "$base_active" "$want_active"; then
        record "skip${tab}$desc${tab}$base_active is in use even without the setting"
        return
    fi
    if matches "$active" "$want_active" && matches "$reason" "$want_reason"; then
        record_result ok "$setting" "keel-features:$feature" "$desc (reason=$reason)"
    else
        record_result "not ok" "$setting" "keel-features:$feature" \
            "$desc: got active=$active reason=$reason, want active ($want_active) reason ($want_reason)"
        record "diag$tab  $(grep "^$feature " "$out")"
    fi
}

check_features() {
    setting=$1
    printf '%s\n' "$EXPECTATIONS" | grep -v -e '^#' -e '^[[:space:]]*$' > "$tmp/expect.$idx"
    if test "$setting" = avoid=all; then
        # Every single-word fallback holds when all words are avoided.
        awk '$1 ~ /^avoid=/ && $3 == "fallback" { $1 = "avoid=all"; print }' \
            "$tmp/expect.$idx" > "$tmp/expect.$idx.all"
        mv "$tmp/expect.$idx.all" "$tmp/expect.$idx"
    fi
    grep "^$setting " "$tmp/expect.$idx" > "$tmp/expect.$idx.mine"
    test -s "$tmp/expect.$idx.mine" || return 0
    out=$tmp/features.$idx
    if test ! -x "$features"; then
        while read -r _ feature _ active _; do
            record "skip${tab}$setting: keel-features: $feature${tab}""keel-features not built"
        done < "$tmp/expect.$idx.mine"
        return
    fi
    (cd "$top_builddir" && run_under "$setting" "$features") > "$out" 2>"$out.err"
    rc=$?
    if test $rc -ne 0; then
        record "not ok${tab}$setting: keel-features runs (exit status $rc)"
        record_tail "$out.err"
        return
    fi
    while read -r s feature kind active reason; do
        check_expectation "$s" "$feature" "$kind" "$active" "$reason" "$out"
    done < "$tmp/expect.$idx.mine"
}

# run_setting INDEX SETTING: all tests and checks of one setting into res.INDEX.
run_setting() {
    idx=$1 setting=$2
    res=$tmp/res.$idx
    : > "$res"
    check_setting "$setting"
    if test -n "$unusable" && test "$unusable_as" = skip; then
        for t in $KEEL_MATRIX_TESTS; do
            record "skip${tab}$setting: $t${tab}$unusable"
        done
        record "skip${tab}$setting: keel-features checks${tab}$unusable"
        return
    fi
    if test -n "$unusable"; then
        record "not ok${tab}$setting: $unusable"
        return
    fi
    started=$(date +%s)
    for t in $KEEL_MATRIX_TESTS; do
        run_test "$setting" "$t"
    done
    check_features "$setting"
    # Not a check: so whoever adds a slow test sees what the matrix pays.
    record "diag$tab $setting: $(( $(date +%s) - started ))s"
}

# ---- which settings ---------------------------------------------------------
if test -n "$KEEL_MATRIX_SETTINGS"; then
    settings=$KEEL_MATRIX_SETTINGS
elif test "${KEEL_MATRIX_QUICK:-0}" != 0; then
    settings="avoid=all kernel=2.6.18"
else
    settings=
    for w in $AVOID_WORDS; do
        settings="$settings avoid=$w"
    done
    settings="$settings avoid=all"
    for p in $PRESETS; do
        settings="$settings kernel=$p"
    done
fi

if test -z "$KEEL_MATRIX_TESTS" && test ! -x "$features"; then
    echo "1..0 # SKIP no tests in KEEL_MATRIX_TESTS and no keel-features"
    exit 77
fi

if test -x "$features"; then
    (cd "$top_builddir" && with_timeout "$features") > "$tmp/features.base" 2>&1
fi
: >> "$tmp/features.base"

echo "# matrix: settings:$(echo " $settings" | tr -s ' ')"
echo "# matrix: tests: ${KEEL_MATRIX_TESTS:-(none)}"

# ---- run: JOBS workers take settings from a queue; print them in order ----
jobs=${KEEL_MATRIX_JOBS:-2}
n=0
failed=0

print_results() {
    while IFS= read -r line; do
        status=${line%%"${tab}"*}
        rest=${line#*"${tab}"}
        case $status in
        ok) n=$((n + 1)); echo "ok $n - $rest" ;;
        "not ok") n=$((n + 1)); failed=1; echo "not ok $n - $rest" ;;
        skip) n=$((n + 1)); echo "ok $n - ${rest%%"${tab}"*} # SKIP ${rest#*"${tab}"}" ;;
        "todo ok") n=$((n + 1)); failed=1; echo "ok $n - ${rest%%"${tab}"*} # TODO ${rest#*"${tab}"}" ;;
        "todo not ok") n=$((n + 1)); echo "not ok $n - ${rest%%"${tab}"*} # TODO ${rest#*"${tab}"}" ;;
        diag) echo "#$rest" ;;
        esac
    done < "$1"
}

# A worker claims the next unclaimed setting (mkdir is atomic), runs it,
# and marks it done; so a slow setting never holds the others up.
worker() {
    i=0
    for setting in $settings; do
        i=$((i + 1))
        mkdir "$tmp/claim.$i" 2>/dev/null || continue
        run_setting $i "$setting"
        : > "$tmp/done.$i"
    done
}

w=0
while test $w -lt "$jobs"; do
    worker &
    worker_pids="$worker_pids $!"
    w=$((w + 1))
done

i=0
for setting in $settings; do
    i=$((i + 1))
    while test ! -e "$tmp/done.$i"; do
        sleep 1
    done
    print_results "$tmp/res.$i"
done
wait

echo "1..$n"
exit $failed
