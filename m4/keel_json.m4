# KEEL_CHECK_JSON_GLIB: keel-vmm's QMP monitor parses and builds JSON with
# json-glib (1.2 API: RHEL 7 ships 1.2).  keel-vmm requires it: without it
# configure stops with a message, unless keel-vmm is not built (--disable-vmm).
AC_DEFUN([KEEL_CHECK_JSON_GLIB], [
  AS_IF([test "x$keel_vmm" = xyes], [
    PKG_CHECK_MODULES([JSON_GLIB], [json-glib-1.0 >= 1.2], [],
      [AC_MSG_ERROR([keel-vmm needs json-glib-1.0 >= 1.2 for its QMP monitor
        (Debian/Ubuntu: libjson-glib-dev; RHEL/Fedora: json-glib-devel), or configure with --disable-vmm])])
    keel_json_glib="yes, `$PKG_CONFIG --modversion json-glib-1.0` (API floor 1.2; QMP monitor)"
  ], [keel_json_glib="not needed (keel-vmm not built)"])
  KEEL_SEAM_SUMMARY_ADD([json-glib (keel-vmm QMP)], [$keel_json_glib])
])
