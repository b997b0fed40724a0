#!/bin/sh
# The coroutine test suite again, on the sigaltstack backend: adding
# "ucontext" to KEEL_AVOID makes every coroutine the binary creates
# bootstrap through sigaltstack (other avoided words, e.g. from the
# forced-fallback matrix, are kept).
KEEL_AVOID=${KEEL_AVOID:+$KEEL_AVOID,}ucontext
export KEEL_AVOID
exec "${top_builddir:-.}/tests/coroutine-test" "$@"
