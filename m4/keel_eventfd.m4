# KEEL_CHECK_EVENTFD: the event-notifier seam.  eventfd(2) with EFD_CLOEXEC
# and EFD_NONBLOCK (Linux 2.6.27); the pipe fallback is always built.
AC_DEFUN([KEEL_CHECK_EVENTFD], [
  AC_ARG_ENABLE([eventfd],
    [AS_HELP_STRING([--disable-eventfd], [do not use eventfd; event notifiers use a pipe])],
    [keel_eventfd=$enableval], [keel_eventfd=auto])
  AS_IF([test "x$keel_eventfd" != xno], [
    AC_MSG_CHECKING([for eventfd with EFD_CLOEXEC|EFD_NONBLOCK])
    AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <sys/eventfd.h>]],
        [[return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);]])],
      [AC_MSG_RESULT([yes]); keel_eventfd=yes
       AC_DEFINE([HAVE_EVENTFD], [1], [eventfd() with EFD_CLOEXEC/EFD_NONBLOCK])],
      [AC_MSG_RESULT([no])
       AS_IF([test "x$keel_eventfd" = xyes], [AC_MSG_ERROR([--enable-eventfd given but eventfd is not available])])
       keel_eventfd=no])
  ])
  AM_CONDITIONAL([HAVE_EVENTFD], [test "x$keel_eventfd" = xyes])
  KEEL_SEAM_SUMMARY_ADD([event notifier], [`test $keel_eventfd = yes && echo "eventfd, fallback pipe" || echo "pipe only"`])
])
