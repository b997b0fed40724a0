#!/bin/sh
# tests/fuzz-blk-req.sh — libFuzzer over the virtio-blk request parser
# (tests/fuzz-blk-req.c): device limits and a chain's buffers, no VM.
# Built and run by tests/fuzz-lib.sh.
# shellcheck source=tests/fuzz-lib.sh disable=SC2154  # top_builddir: set by fuzz-lib.sh
. "$(cd "$(dirname "$0")" && pwd)/fuzz-lib.sh"
fuzz_main blk-req "vmm/virtio-blk-req.c" 4096 1
