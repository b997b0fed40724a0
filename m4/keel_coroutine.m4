# KEEL_CHECK_COROUTINE: --with-coroutine=auto|ucontext|sigaltstack.
# auto builds every backend the system supports and prefers ucontext;
# KEEL_AVOID=ucontext then selects sigaltstack at run time.  Forcing an
# unavailable backend is an error.
AC_DEFUN([KEEL_CHECK_COROUTINE], [
  AC_ARG_WITH([coroutine],
    [AS_HELP_STRING([--with-coroutine=auto|ucontext|sigaltstack],
      [coroutine backend(s) to build (default: auto = every available one, ucontext preferred)])],
    [keel_coroutine=$withval], [keel_coroutine=auto])
  case $keel_coroutine in
    auto|ucontext|sigaltstack) ;;
    *) AC_MSG_ERROR([--with-coroutine: unknown backend '$keel_coroutine' (auto, ucontext, sigaltstack)]) ;;
  esac

  AC_MSG_CHECKING([for makecontext/getcontext (ucontext coroutines)])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <ucontext.h>
#include <setjmp.h>
static void f(void) {}]],
      [[ucontext_t u; sigjmp_buf j; if (getcontext(&u)) return 1;
        makecontext(&u, f, 0); if (!sigsetjmp(j, 0)) siglongjmp(j, 1); return 0;]])],
    [keel_have_ucontext=yes], [keel_have_ucontext=no])
  AC_MSG_RESULT([$keel_have_ucontext])
  AC_MSG_CHECKING([for sigaltstack/sigsetjmp (sigaltstack coroutines)])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <signal.h>
#include <setjmp.h>]],
      [[stack_t s = {0}; sigjmp_buf j; if (sigaltstack(&s, 0)) return 1;
        if (!sigsetjmp(j, 0)) siglongjmp(j, 1); return 0;]])],
    [keel_have_sigaltstack=yes], [keel_have_sigaltstack=no])
  AC_MSG_RESULT([$keel_have_sigaltstack])

  keel_co_ucontext=no; keel_co_sigaltstack=no
  case $keel_coroutine in
    ucontext)
      AS_IF([test $keel_have_ucontext = yes], [keel_co_ucontext=yes],
        [AC_MSG_ERROR([--with-coroutine=ucontext given but makecontext is not available])]) ;;
    sigaltstack)
      AS_IF([test $keel_have_sigaltstack = yes], [keel_co_sigaltstack=yes],
        [AC_MSG_ERROR([--with-coroutine=sigaltstack given but sigaltstack is not available])]) ;;
    auto)
      keel_co_ucontext=$keel_have_ucontext
      keel_co_sigaltstack=$keel_have_sigaltstack
      AS_IF([test $keel_co_ucontext$keel_co_sigaltstack = nono],
        [AC_MSG_ERROR([no coroutine backend can be built (need makecontext or sigaltstack)])]) ;;
  esac
  AS_IF([test $keel_co_ucontext = yes],
    [AC_DEFINE([CONFIG_COROUTINE_UCONTEXT], [1], [Build the ucontext coroutine backend])])
  AS_IF([test $keel_co_sigaltstack = yes],
    [AC_DEFINE([CONFIG_COROUTINE_SIGALTSTACK], [1], [Build the sigaltstack coroutine backend])])
  AM_CONDITIONAL([COROUTINE_UCONTEXT], [test $keel_co_ucontext = yes])
  AM_CONDITIONAL([COROUTINE_SIGALTSTACK], [test $keel_co_sigaltstack = yes])

  AC_ARG_ENABLE([valgrind],
    [AS_HELP_STRING([--enable-valgrind], [register coroutine stacks with valgrind (default: when valgrind/valgrind.h exists)])],
    [keel_valgrind=$enableval], [keel_valgrind=auto])
  AS_IF([test "x$keel_valgrind" != xno], [
    AS_IF([test "x$ac_cv_header_valgrind_valgrind_h" = xyes],
      [keel_valgrind=yes; AC_DEFINE([CONFIG_VALGRIND], [1], [Register coroutine stacks with valgrind])],
      [AS_IF([test "x$keel_valgrind" = xyes], [AC_MSG_ERROR([--enable-valgrind given but valgrind/valgrind.h is missing])])
       keel_valgrind=no])
  ])
  keel_co_list=
  test $keel_co_ucontext = yes && keel_co_list="ucontext"
  test $keel_co_sigaltstack = yes && keel_co_list="${keel_co_list:+$keel_co_list, }sigaltstack"
  KEEL_SEAM_SUMMARY_ADD([coroutine backends], [$keel_co_list (valgrind stacks: $keel_valgrind)])
])
