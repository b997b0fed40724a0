# KEEL_CHECK_KVM: keel-vmm needs <linux/kvm.h> on x86-64.  Capabilities are
# probed at run time (KVM_CHECK_EXTENSION), never at build time.
AC_DEFUN([KEEL_CHECK_KVM], [
  AC_ARG_ENABLE([vmm],
    [AS_HELP_STRING([--disable-vmm], [do not build keel-vmm and its test guest])],
    [keel_vmm=$enableval], [keel_vmm=auto])
  AS_IF([test "x$keel_vmm" != xno], [
    AS_CASE([$host_cpu], [x86_64],
      [AS_IF([test "x$ac_cv_header_linux_kvm_h" = xyes], [keel_vmm=yes],
         [AS_IF([test "x$keel_vmm" = xyes], [AC_MSG_ERROR([--enable-vmm needs <linux/kvm.h> (linux-libc-dev / kernel-headers)])])
          keel_vmm=no])],
      [AS_IF([test "x$keel_vmm" = xyes], [AC_MSG_ERROR([--enable-vmm: keel-vmm supports x86_64 hosts only])])
       keel_vmm=no])
  ])
  AM_CONDITIONAL([CONFIG_VMM], [test "x$keel_vmm" = xyes])
  KEEL_SEAM_SUMMARY_ADD([keel-vmm (KVM)], [$keel_vmm (ioeventfd/irqfd probed at run time)])
])
