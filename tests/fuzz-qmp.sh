#!/bin/sh
# tests/fuzz-qmp.sh — libFuzzer over the QMP monitor's input (tests/fuzz-qmp.c):
# framing, json-glib parsing and command dispatch on the real run state.
# Built and run by tests/fuzz-lib.sh.  Leak detection off: the monitor and
# machine live for the whole process on purpose.
# shellcheck source=tests/fuzz-lib.sh disable=SC2154  # top_builddir: set by fuzz-lib.sh
. "$(cd "$(dirname "$0")" && pwd)/fuzz-lib.sh"
FUZZ_PKGS=JSON_GLIB
fuzz_main qmp "vmm/qmp.c vmm/machine.c vmm/chardev.c $vmm_kvm_sources" 4096 0
