# KEEL_CHECK_IO_URING: liburing through pkg-config (falls back to a plain
# header + link test for distributions without liburing.pc).  liburing 0.7
# (Debian bullseye) lacks many 2.x helpers, so the ones we use are probed
# one by one; block/ falls back where a helper is missing.
AC_DEFUN([KEEL_CHECK_IO_URING], [
  AC_ARG_ENABLE([linux-io-uring],
    [AS_HELP_STRING([--disable-linux-io-uring], [do not build the io_uring (liburing) block engine])],
    [keel_io_uring=$enableval], [keel_io_uring=auto])
  AS_IF([test "x$keel_io_uring" != xno], [
    PKG_CHECK_MODULES([LIBURING], [liburing], [keel_io_uring_found=yes], [
      AC_MSG_CHECKING([for liburing without pkg-config])
      keel_save_LIBS=$LIBS; LIBS="-luring $LIBS"
      AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <liburing.h>]],
          [[struct io_uring r; return io_uring_queue_init(8, &r, 0);]])],
        [keel_io_uring_found=yes; LIBURING_CFLAGS=; LIBURING_LIBS=-luring],
        [keel_io_uring_found=no])
      LIBS=$keel_save_LIBS
      AC_MSG_RESULT([$keel_io_uring_found])
    ])
    AS_IF([test "x$keel_io_uring_found" = xyes], [
      keel_io_uring=yes
      AC_DEFINE([CONFIG_LINUX_IO_URING], [1], [Build the io_uring block engine])
      keel_save_CFLAGS=$CFLAGS; keel_save_LIBS=$LIBS
      CFLAGS="$CFLAGS $LIBURING_CFLAGS"; LIBS="$LIBURING_LIBS $LIBS"
      AC_CHECK_FUNCS([io_uring_get_probe io_uring_free_probe io_uring_register_eventfd io_uring_submit_and_wait])
      AC_CHECK_DECLS([io_uring_prep_fallocate, io_uring_prep_fsync, io_uring_prep_readv, io_uring_prep_writev, io_uring_opcode_supported, io_uring_cq_ready, IORING_OP_FALLOCATE], [], [], [[#include <liburing.h>]])
      CFLAGS=$keel_save_CFLAGS; LIBS=$keel_save_LIBS
    ], [
      AS_IF([test "x$keel_io_uring" = xyes], [AC_MSG_ERROR([--enable-linux-io-uring given but liburing (liburing-dev / liburing-devel) was not found])])
      keel_io_uring=no
    ])
  ])
  AC_SUBST([LIBURING_CFLAGS])
  AC_SUBST([LIBURING_LIBS])
  AM_CONDITIONAL([CONFIG_LINUX_IO_URING], [test "x$keel_io_uring" = xyes])
  KEEL_SEAM_SUMMARY_ADD([block engine io_uring], [$keel_io_uring])
  KEEL_SEAM_SUMMARY_ADD([block engine thread pool], [yes (always)])
])
