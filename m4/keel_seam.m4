# KEEL_SEAM_SUMMARY_ADD(NAME, VALUE): remember a line for the summary table.
AC_DEFUN([KEEL_SEAM_SUMMARY_ADD], [
  keel_summary_lines="$keel_summary_lines
$1|$2"
])

# KEEL_SUMMARY: print what was found and chosen, like QEMU's old configure.
AC_DEFUN([KEEL_SUMMARY], [
  echo
  echo "Keel $PACKAGE_VERSION configuration summary"
  echo "-------------------------------------------"
  printf '%-28s %s\n' "host" "$host"
  printf '%-28s %s\n' "C compiler" "$CC"
  printf '%-28s %s\n' "CFLAGS" "$CFLAGS $KEEL_CFLAGS"
  printf '%-28s %s\n' "glib" "`$PKG_CONFIG --modversion glib-2.0` (API floor 2.56)"
  printf '%-28s %s\n' "-Werror" "$keel_werror"
  printf '%-28s %s\n' "ASan+UBSan / TSan" "$keel_sanitizers / $keel_tsan"
  echo "$keel_summary_lines" | while IFS='|' read keel_k keel_v; do
    test -n "$keel_k" && printf '%-28s %s\n' "$keel_k" "$keel_v"
  done
  printf '%-28s %s\n' "qemu-system-x86_64 (tests)" "${QEMU_SYSTEM_X86_64:-no}"
  printf '%-28s %s\n' "qemu-img / fio (bench)" "${QEMU_IMG:-no} / ${FIO:-no}"
  echo
  echo "Run-time fallbacks are always built; force them with KEEL_AVOID=... (see README)."
])
