/*
 * compat/atomic.h — atomic operations on plain objects, for compilers
 * without C11 atomics.
 *
 * Why: RHEL 7's gcc 4.8 has no C11 atomics (neither the header nor the
 * type qualifier; both arrived in gcc 4.9), and Keel builds there with
 * -std=gnu99.  It does have the __atomic_* builtins (gcc >= 4.7, every
 * clang), which these macros wrap.  Internal: not installed.
 *
 * Contract:
 *  - Operands are ordinary objects, not C11 atomic types, of 1, 2, 4 or 8
 *    bytes: integers, bool, pointers.  Other sizes fail to compile.  8-byte
 *    objects must be 8-byte aligned: mark int64_t fields with
 *    KEEL_ATOMIC_ALIGNED (i386 aligns them to 4 inside structs).
 *  - An object that one thread writes while another reads or writes it
 *    without a lock in common is accessed only through these macros, by
 *    every such thread.  A plain access to it is a data race, as a
 *    non-atomic access to a C11 atomic object would be.  Mark such fields
 *    "atomic" in a comment, since the type no longer says so.
 *  - The memory order is part of each name:
 *      keel_atomic_read, keel_atomic_set           relaxed
 *      keel_atomic_load_acquire                    acquire
 *      keel_atomic_store_release                   release
 *      keel_atomic_load_seq_cst, _store_seq_cst    seq_cst (what C11's
 *                                                  atomic_load/atomic_store,
 *                                                  or a plain access to a
 *                                                  C11 atomic, did)
 *      read-modify-writes: fetch_add/sub/and/or,
 *      add_fetch/sub_fetch, xchg, cmpxchg          seq_cst
 *      keel_smp_mb                                 seq_cst fence
 *      keel_smp_rmb, keel_smp_wmb                  acquire, release fence
 *  - keel_atomic_cmpxchg(ptr, expected, desired) is a strong compare-and-
 *    swap (seq_cst whether or not it swaps) that returns the value it
 *    found: it swapped iff the result equals @expected.  Returning the old
 *    value lets a retry loop continue from it without another load.
 *  - Each argument is evaluated once (@ptr also appears under sizeof and
 *    __typeof__, which do not evaluate it).
 */
#ifndef KEEL_COMPAT_ATOMIC_H
#define KEEL_COMPAT_ATOMIC_H

#include <stdbool.h>

#if !defined(__ATOMIC_SEQ_CST)
#error "compat/atomic.h needs the __atomic builtins (gcc >= 4.7 or clang)"
#endif

/* Compile-time refusal of operands the hardware cannot handle in one go
 * (a negative array size is an error in every C dialect). */
#define KEEL_ATOMIC_CHECK_SIZE(ptr)                                         \
    ((void)sizeof(char[(sizeof(*(ptr)) == 1 || sizeof(*(ptr)) == 2 ||     \
                        sizeof(*(ptr)) == 4 || sizeof(*(ptr)) == 8) ? 1 : -1]))

/* @ptr itself, after the size check; the builtins take it in this form so
 * that a macro used as a statement leaves no unused value behind. */
#define KEEL_ATOMIC_PTR(ptr) (KEEL_ATOMIC_CHECK_SIZE(ptr), (ptr))

/* For 8-byte fields that i386 would otherwise place on a 4-byte boundary. */
#define KEEL_ATOMIC_ALIGNED __attribute__((aligned(8)))

/* ---- loads and stores ---- */

#define keel_atomic_read(ptr)                                               \
    __atomic_load_n(KEEL_ATOMIC_PTR(ptr), __ATOMIC_RELAXED)
#define keel_atomic_set(ptr, v)                                             \
    __atomic_store_n(KEEL_ATOMIC_PTR(ptr), (v), __ATOMIC_RELAXED)

#define keel_atomic_load_acquire(ptr)                                       \
    __atomic_load_n(KEEL_ATOMIC_PTR(ptr), __ATOMIC_ACQUIRE)
#define keel_atomic_store_release(ptr, v)                                   \
    __atomic_store_n(KEEL_ATOMIC_PTR(ptr), (v), __ATOMIC_RELEASE)

#define keel_atomic_load_seq_cst(ptr)                                       \
    __atomic_load_n(KEEL_ATOMIC_PTR(ptr), __ATOMIC_SEQ_CST)
#define keel_atomic_store_seq_cst(ptr, v)                                   \
    __atomic_store_n(KEEL_ATOMIC_PTR(ptr), (v), __ATOMIC_SEQ_CST)

/* ---- read-modify-write, seq_cst ---- */

/* These return the value before the operation... */
#define keel_atomic_fetch_add(ptr, n)                                       \
    __atomic_fetch_add(KEEL_ATOMIC_PTR(ptr), (n), __ATOMIC_SEQ_CST)
#define keel_atomic_fetch_sub(ptr, n)                                       \
    __atomic_fetch_sub(KEEL_ATOMIC_PTR(ptr), (n), __ATOMIC_SEQ_CST)
#define keel_atomic_fetch_and(ptr, n)                                       \
    __atomic_fetch_and(KEEL_ATOMIC_PTR(ptr), (n), __ATOMIC_SEQ_CST)
#define keel_atomic_fetch_or(ptr, n)                                        \
    __atomic_fetch_or(KEEL_ATOMIC_PTR(ptr), (n), __ATOMIC_SEQ_CST)

/* ... these the value after it. */
#define keel_atomic_add_fetch(ptr, n)                                       \
    __atomic_add_fetch(KEEL_ATOMIC_PTR(ptr), (n), __ATOMIC_SEQ_CST)
#define keel_atomic_sub_fetch(ptr, n)                                       \
    __atomic_sub_fetch(KEEL_ATOMIC_PTR(ptr), (n), __ATOMIC_SEQ_CST)

/* Store @v, return the previous value.  (A statement expression: gcc
 * flags an unused exchange of a bool as an unused value.) */
#define keel_atomic_xchg(ptr, v)                                            \
    __extension__ ({                                                        \
        __atomic_exchange_n(KEEL_ATOMIC_PTR(ptr), (v), __ATOMIC_SEQ_CST);   \
    })

/* Store @desired if the object holds @expected; return what it held. */
#define keel_atomic_cmpxchg(ptr, expected, desired)                         \
    __extension__ ({                                                        \
        __typeof__(*(ptr)) keel_cmpxchg_seen_ = (expected);                 \
        (void)__atomic_compare_exchange_n(KEEL_ATOMIC_PTR(ptr),             \
                                          &keel_cmpxchg_seen_, (desired),   \
                                          false, __ATOMIC_SEQ_CST,          \
                                          __ATOMIC_SEQ_CST);                \
        keel_cmpxchg_seen_;                                                 \
    })

/* ---- fences ---- */

/* Full barrier: no load or store moves across it in either direction. */
#define keel_smp_mb()   __atomic_thread_fence(__ATOMIC_SEQ_CST)
/* Loads before it are ordered before loads and stores after it. */
#define keel_smp_rmb()  __atomic_thread_fence(__ATOMIC_ACQUIRE)
/* Loads and stores before it are ordered before stores after it. */
#define keel_smp_wmb()  __atomic_thread_fence(__ATOMIC_RELEASE)

#endif
