# KEEL_CHECK_VERSION_SCRIPT: does the linker take an ld version script
# (-Wl,--version-script)?  Then libkeel.so's symbols are versioned
# (libkeel.map, KEEL_0.1); otherwise libtool's -export-symbols-regex keeps
# the same set exported, unversioned.  --disable-symbol-versioning forces
# the fallback; forcing it on where the linker refuses is an error.
AC_DEFUN([KEEL_CHECK_VERSION_SCRIPT], [
  AC_ARG_ENABLE([symbol-versioning],
    [AS_HELP_STRING([--disable-symbol-versioning],
      [do not version libkeel's symbols (KEEL_0.1) with an ld version script])],
    [keel_symver=$enableval], [keel_symver=auto])
  keel_have_symver=no
  AS_IF([test "x$keel_symver" != xno], [
    AC_MSG_CHECKING([whether the linker accepts a version script])
    cat > conftest.map <<_KEEL_EOF
KEEL_0.1 { global: keel_conftest; local: *; };
_KEEL_EOF
    keel_save_LDFLAGS=$LDFLAGS
    LDFLAGS="$LDFLAGS -shared -fPIC -Wl,--version-script=conftest.map"
    AC_LINK_IFELSE([AC_LANG_SOURCE([[int keel_conftest(void); int keel_conftest(void) { return 0; }]])],
      [keel_have_symver=yes])
    LDFLAGS=$keel_save_LDFLAGS
    rm -f conftest.map
    AC_MSG_RESULT([$keel_have_symver])
    AS_IF([test "x$keel_symver$keel_have_symver" = xyesno],
      [AC_MSG_ERROR([--enable-symbol-versioning given but the linker refuses -Wl,--version-script])])
  ])
  AS_IF([test "x$keel_have_symver" = xyes],
    [KEEL_LIB_SYMBOLS_LDFLAGS='-Wl,--version-script=$(top_srcdir)/libkeel.map'
     KEEL_SEAM_SUMMARY_ADD([symbol versions], [KEEL_0.1 (libkeel.map)])],
    [KEEL_LIB_SYMBOLS_LDFLAGS="-export-symbols-regex '^keel_'"
     KEEL_SEAM_SUMMARY_ADD([symbol versions], [none (-export-symbols-regex)])])
  AC_SUBST([KEEL_LIB_SYMBOLS_LDFLAGS])
  AM_CONDITIONAL([KEEL_SYMBOL_VERSIONS], [test "x$keel_have_symver" = xyes])
])
