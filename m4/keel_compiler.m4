# KEEL_COMPILER_FLAGS: -std=gnu99 and warnings always; --enable-werror,
# --enable-sanitizers (ASan+UBSan), --enable-tsan.  Results land in
# KEEL_CFLAGS / KEEL_LDFLAGS, which every target in Makefile.am uses.
AC_DEFUN([KEEL_COMPILER_FLAGS], [
  KEEL_CFLAGS="-std=gnu99 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition -Wshadow=local"
  dnl -Wshadow=local is gcc-7+; drop it where the compiler does not know it.
  keel_save_CFLAGS=$CFLAGS
  CFLAGS="$CFLAGS -Werror -Wshadow=local"
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])], [],
    [KEEL_CFLAGS=`echo "$KEEL_CFLAGS" | $SED 's/ -Wshadow=local//'`])
  CFLAGS=$keel_save_CFLAGS

  AC_ARG_ENABLE([werror],
    [AS_HELP_STRING([--enable-werror], [treat compiler warnings as errors])],
    [keel_werror=$enableval], [keel_werror=no])
  AS_IF([test "x$keel_werror" = xyes], [KEEL_CFLAGS="$KEEL_CFLAGS -Werror"])

  AC_ARG_ENABLE([sanitizers],
    [AS_HELP_STRING([--enable-sanitizers], [build with AddressSanitizer and UndefinedBehaviorSanitizer])],
    [keel_sanitizers=$enableval], [keel_sanitizers=no])
  AC_ARG_ENABLE([tsan],
    [AS_HELP_STRING([--enable-tsan], [build with ThreadSanitizer])],
    [keel_tsan=$enableval], [keel_tsan=no])
  KEEL_LDFLAGS=
  AS_IF([test "x$keel_sanitizers" = xyes], [
    KEEL_CFLAGS="$KEEL_CFLAGS -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
    KEEL_LDFLAGS="-fsanitize=address,undefined"
    AC_DEFINE([KEEL_ASAN], [1], [Built with AddressSanitizer])
  ])
  AS_IF([test "x$keel_tsan" = xyes], [
    AS_IF([test "x$keel_sanitizers" = xyes],
      [AC_MSG_ERROR([--enable-tsan cannot be combined with --enable-sanitizers])])
    KEEL_CFLAGS="$KEEL_CFLAGS -fsanitize=thread -fno-omit-frame-pointer"
    KEEL_LDFLAGS="-fsanitize=thread"
    # gcc >= 11 warns that TSan ignores atomic_thread_fence.  Our fences
    # order accesses to guest memory against the guest's vCPU (virtqueue
    # event-index protocol), which TSan cannot see anyway: not an error.
    keel_save_CFLAGS=$CFLAGS; CFLAGS="$CFLAGS -Werror -Wno-tsan"
    AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])], [KEEL_CFLAGS="$KEEL_CFLAGS -Wno-tsan"])
    CFLAGS=$keel_save_CFLAGS
    AC_DEFINE([KEEL_TSAN], [1], [Built with ThreadSanitizer])
  ])
  AS_IF([test "x$keel_sanitizers$keel_tsan" != xnono], [
    keel_save_CFLAGS=$CFLAGS; keel_save_LDFLAGS=$LDFLAGS
    CFLAGS="$CFLAGS $KEEL_CFLAGS"; LDFLAGS="$LDFLAGS $KEEL_LDFLAGS"
    AC_MSG_CHECKING([whether the compiler links sanitizer builds])
    AC_LINK_IFELSE([AC_LANG_PROGRAM([], [])], [AC_MSG_RESULT([yes])],
      [AC_MSG_RESULT([no]); AC_MSG_ERROR([sanitizers requested but $CC cannot link them])])
    CFLAGS=$keel_save_CFLAGS; LDFLAGS=$keel_save_LDFLAGS
  ])
  AC_SUBST([KEEL_CFLAGS])
  AC_SUBST([KEEL_LDFLAGS])
])

# AX_PTHREAD_KEEL: we only support toolchains that understand -pthread.
AC_DEFUN([AX_PTHREAD_KEEL], [
  AC_MSG_CHECKING([whether $CC accepts -pthread])
  keel_save_CFLAGS=$CFLAGS; CFLAGS="$CFLAGS -pthread"
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <pthread.h>]],
      [[pthread_t t; return pthread_create(&t, 0, 0, 0);]])],
    [AC_MSG_RESULT([yes])],
    [AC_MSG_RESULT([no]); AC_MSG_ERROR([POSIX threads with -pthread are required])])
  CFLAGS=$keel_save_CFLAGS
  PTHREAD_CFLAGS=-pthread
  PTHREAD_LIBS=-pthread
  AC_SUBST([PTHREAD_CFLAGS])
  AC_SUBST([PTHREAD_LIBS])
])
