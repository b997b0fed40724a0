# KEEL_CHECK_JSON_GLIB: json-glib (1.2 API floor; RHEL 7 ships 1.2/1.4)
# builds and parses JSON for keel-vmm's QMP monitor, its JSON -blockdev and
# keel-img info --output=json.  keel-vmm requires it (QMP): when keel-vmm is
# built and json-glib is missing, configure stops with a message.  Without
# keel-vmm (--disable-vmm) it is optional (--without-json-glib turns it off)
# and keel-img says which outputs it lacks.  Defines HAVE_JSON_GLIB and
# substitutes JSON_GLIB_CFLAGS / JSON_GLIB_LIBS.  Call after KEEL_CHECK_KVM
# (which decides keel_vmm).
AC_DEFUN([KEEL_CHECK_JSON_GLIB], [
  AC_ARG_WITH([json-glib],
    [AS_HELP_STRING([--without-json-glib],
      [no JSON in keel-img (only with --disable-vmm: keel-vmm's QMP needs it)])],
    [], [with_json_glib=auto])
  AS_IF([test "x$with_json_glib" = xno && test "x$keel_vmm" = xyes],
    [AC_MSG_ERROR([--without-json-glib: keel-vmm's QMP monitor needs json-glib; add --disable-vmm])])
  keel_json_glib=no
  AS_IF([test "x$with_json_glib" != xno], [
    PKG_CHECK_MODULES([JSON_GLIB], [json-glib-1.0 >= 1.2],
      [keel_json_glib="yes, `$PKG_CONFIG --modversion json-glib-1.0` (API floor 1.2)"
       AC_DEFINE([HAVE_JSON_GLIB], [1], [json-glib is available])],
      [AS_IF([test "x$keel_vmm" = xyes || test "x$with_json_glib" = xyes],
         [AC_MSG_ERROR([json-glib-1.0 >= 1.2 not found: keel-vmm's QMP monitor needs it
           (Debian/Ubuntu: libjson-glib-dev; RHEL/Fedora: json-glib-devel), or configure with --disable-vmm])])
       AC_MSG_WARN([json-glib-1.0 >= 1.2 not found: keel-img has no --output=json (Debian: libjson-glib-dev)])])
  ])
  KEEL_SEAM_SUMMARY_ADD([json-glib (QMP, JSON -blockdev, keel-img JSON)], [$keel_json_glib])
])
