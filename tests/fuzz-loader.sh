#!/bin/sh
# tests/fuzz-loader.sh — libFuzzer over every kernel loader entry point with
# arbitrary file bytes (tests/fuzz-loader.c); its regress-* inputs are the
# crafted kernels of issue 16 items 1-3; the built test guest (a multiboot
# ELF32) is a seed too.  Built and run by tests/fuzz-lib.sh.
# shellcheck source=tests/fuzz-lib.sh disable=SC2154  # top_builddir: set by fuzz-lib.sh
. "$(cd "$(dirname "$0")" && pwd)/fuzz-lib.sh"
FUZZ_PKGS=JSON_GLIB     # vmm/options.c: JSON -blockdev
fuzz_main loader "vmm/loader.c vmm/loader-multiboot.c vmm/loader-linux.c vmm/options.c \
    $vmm_kvm_sources" 65536 1 "$top_builddir/vmm/guest/keel-guest"
