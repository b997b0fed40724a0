# KEEL_CHECK_PIPE2: pipe2(2) (Linux 2.6.27); fallback pipe()+fcntl.
AC_DEFUN([KEEL_CHECK_PIPE2], [
  AC_MSG_CHECKING([for pipe2])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <unistd.h>
#include <fcntl.h>]], [[int p[2]; return pipe2(p, O_CLOEXEC | O_NONBLOCK);]])],
    [AC_MSG_RESULT([yes]); AC_DEFINE([HAVE_PIPE2], [1], [pipe2() is available])
     keel_pipe2=yes],
    [AC_MSG_RESULT([no]); keel_pipe2=no])
  KEEL_SEAM_SUMMARY_ADD([pipe2], [$keel_pipe2 (fallback: pipe+fcntl)])
])
