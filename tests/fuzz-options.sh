#!/bin/sh
# tests/fuzz-options.sh — libFuzzer over keel-vmm's command-line parser
# (tests/fuzz-options.c): NUL-separated arguments.  Built and run by
# tests/fuzz-lib.sh.
# shellcheck source=tests/fuzz-lib.sh disable=SC2154  # top_builddir: set by fuzz-lib.sh
. "$(cd "$(dirname "$0")" && pwd)/fuzz-lib.sh"
FUZZ_PKGS=JSON_GLIB     # vmm/options.c: JSON -blockdev
fuzz_main options "vmm/options.c $vmm_kvm_sources" 2048 1
