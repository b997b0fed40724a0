# KEEL_CHECK_SIGNALFD: the signal-fd seam.  signalfd(2) (Linux 2.6.27 for
# the flags); fallback: a thread in sigwaitinfo writing records to a pipe.
AC_DEFUN([KEEL_CHECK_SIGNALFD], [
  AC_ARG_ENABLE([signalfd],
    [AS_HELP_STRING([--disable-signalfd], [do not use signalfd; signals go through a sigwaitinfo thread and a pipe])],
    [keel_signalfd=$enableval], [keel_signalfd=auto])
  AS_IF([test "x$keel_signalfd" != xno], [
    AC_MSG_CHECKING([for signalfd with SFD_CLOEXEC|SFD_NONBLOCK])
    AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <sys/signalfd.h>
#include <signal.h>]],
        [[sigset_t s; struct signalfd_siginfo i; sigemptyset(&s); (void)i;
          return signalfd(-1, &s, SFD_CLOEXEC | SFD_NONBLOCK);]])],
      [AC_MSG_RESULT([yes]); keel_signalfd=yes
       AC_DEFINE([HAVE_SIGNALFD], [1], [signalfd() with SFD_CLOEXEC/SFD_NONBLOCK])],
      [AC_MSG_RESULT([no])
       AS_IF([test "x$keel_signalfd" = xyes], [AC_MSG_ERROR([--enable-signalfd given but signalfd is not available])])
       keel_signalfd=no])
  ])
  KEEL_SEAM_SUMMARY_ADD([signal fd], [`test $keel_signalfd = yes && echo "signalfd, fallback sigwaitinfo thread" || echo "sigwaitinfo thread only"`])
])
