# KEEL_CHECK_OFD_LOCKS: open file description locks (F_OFD_SETLK, Linux 3.15),
# which QEMU's image locking uses; fallback: POSIX F_SETLK locks (lost when
# the process closes any descriptor of the file).
AC_DEFUN([KEEL_CHECK_OFD_LOCKS], [
  AC_MSG_CHECKING([for F_OFD_SETLK])
  AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#define _GNU_SOURCE 1
#include <fcntl.h>]], [[struct flock fl = { 0 }; return fcntl(0, F_OFD_SETLK, &fl);]])],
    [AC_MSG_RESULT([yes]); AC_DEFINE([HAVE_OFD_LOCKS], [1], [F_OFD_SETLK is declared])
     keel_ofd_locks=yes],
    [AC_MSG_RESULT([no]); keel_ofd_locks=no])
  KEEL_SEAM_SUMMARY_ADD([image locks (OFD)], [$keel_ofd_locks (fallback: POSIX locks)])
])
