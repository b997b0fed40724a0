# KEEL_CHECK_PPOLL: the poll_ns seam.  ppoll(2) gives nanosecond timeouts
# (Linux 2.6.16); fallback g_poll with the timeout rounded up to ms.
AC_DEFUN([KEEL_CHECK_PPOLL], [
  AC_ARG_ENABLE([ppoll],
    [AS_HELP_STRING([--disable-ppoll], [do not use ppoll; poll with millisecond timeouts via g_poll])],
    [keel_ppoll=$enableval], [keel_ppoll=auto])
  AS_IF([test "x$keel_ppoll" != xno], [
    AC_MSG_CHECKING([for ppoll])
    AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <poll.h>
#include <time.h>]],
        [[struct pollfd p; struct timespec ts = {0, 0}; return ppoll(&p, 0, &ts, 0);]])],
      [AC_MSG_RESULT([yes]); keel_ppoll=yes
       AC_DEFINE([HAVE_PPOLL], [1], [ppoll() is available])],
      [AC_MSG_RESULT([no])
       AS_IF([test "x$keel_ppoll" = xyes], [AC_MSG_ERROR([--enable-ppoll given but ppoll is not available])])
       keel_ppoll=no])
  ])
  KEEL_SEAM_SUMMARY_ADD([poll_ns], [`test $keel_ppoll = yes && echo "ppoll, fallback g_poll" || echo "g_poll only (ms timeouts)"`])
])
