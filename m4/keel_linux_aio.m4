# KEEL_CHECK_LINUX_AIO: libaio (no .pc file: header + link test).
AC_DEFUN([KEEL_CHECK_LINUX_AIO], [
  AC_ARG_ENABLE([linux-aio],
    [AS_HELP_STRING([--disable-linux-aio], [do not build the linux-aio (libaio) block engine])],
    [keel_linux_aio=$enableval], [keel_linux_aio=auto])
  LIBAIO_LIBS=
  AS_IF([test "x$keel_linux_aio" != xno], [
    AC_MSG_CHECKING([for libaio (libaio.h + -laio)])
    keel_save_LIBS=$LIBS; LIBS="-laio $LIBS"
    AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <libaio.h>]],
        [[io_context_t c = 0; struct iocb cb; io_set_eventfd(&cb, 0); return io_setup(1, &c);]])],
      [AC_MSG_RESULT([yes]); keel_linux_aio=yes; LIBAIO_LIBS=-laio
       AC_DEFINE([CONFIG_LINUX_AIO], [1], [Build the linux-aio block engine])],
      [AC_MSG_RESULT([no])
       AS_IF([test "x$keel_linux_aio" = xyes], [AC_MSG_ERROR([--enable-linux-aio given but libaio (libaio-dev / libaio-devel) was not found])])
       keel_linux_aio=no])
    LIBS=$keel_save_LIBS
  ])
  AC_SUBST([LIBAIO_LIBS])
  AM_CONDITIONAL([CONFIG_LINUX_AIO], [test "x$keel_linux_aio" = xyes])
  KEEL_SEAM_SUMMARY_ADD([block engine linux-aio], [$keel_linux_aio])
])
