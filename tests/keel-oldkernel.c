/*
 * keel-oldkernel — run a program as if on an older kernel.
 *
 *   keel-oldkernel [--preset NAME]... [--deny SYSCALL[:ERRNO][,...]]...
 *                  [--deny-kvm IOCTL[:ERRNO][,...]]... -- PROGRAM [ARGS...]
 *   keel-oldkernel --list | --list-syscalls | --help
 *
 * It installs a seccomp-BPF filter (raw BPF, no libseccomp) that makes the
 * chosen system calls fail the way a kernel without them does (ENOSYS), then
 * execs PROGRAM, which inherits the filter.  Keel's tests run under it to
 * prove that every run-time fallback really works when the kernel says no.
 *
 * What a preset denies is derived from one table: each system call and each
 * KVM ioctl carries the mainline version that introduced it, and preset
 * "X.Y" denies everything newer than X.Y.  (Distribution kernels backport
 * features; the presets model mainline.)  Any other version number is
 * accepted as a preset too.  "docker" models Docker's default seccomp
 * profile instead: io_uring_* fail with EPERM (the profile's default action
 * since moby 25), clone3 with ENOSYS.
 *
 * The program still runs on this machine's C library, which assumes a
 * newer kernel.  Two rules keep the emulation about the kernel, not libc:
 * calls that libc needs with no fallback (openat, prlimit64; glibc 2.26+
 * requires Linux 3.2) are never denied by a preset; and a flag-taking call
 * whose flags are 0 passes when the preset's kernel had the older
 * flag-less call (glibc 2.36 implements pipe() as pipe2(fd, 0), select()
 * as pselect6 without a mask) since an old libc would have made that call.
 *
 * KVM: denied ioctls (matched on ioctl(2)'s request number, lower 32 bits,
 * because the kernel takes it as an unsigned int) fail with the errno the
 * old kernel gives for an ioctl it does not know: EINVAL for 2.6-era
 * kernels (kvm_arch_vm_ioctl began with r = -EINVAL and fell through its
 * switch), ENOTTY for current ones (the default for --deny-kvm); we switch
 * at 3.0, which only matters to versions 3.0-3.4 (no named preset).  Their
 * capabilities are hidden too: KVM_CHECK_EXTENSION for them returns 0
 * ("absent") through SECCOMP_RET_ERRNO with data 0, which makes the system
 * call return 0 without running it (kernel/seccomp.c sets the return value
 * to -data and skips the call; tests/oldkernel-test.c checks both halves).
 *
 * Other ABIs: a system call made through another ABI (i386 via int $0x80,
 * or x32 numbers with __X32_SYSCALL_BIT) fails with ENOSYS, as on a kernel
 * built without IA32_EMULATION / X86_X32, so the filter cannot be bypassed
 * by a different syscall numbering.
 *
 * Also exported to PROGRAM: KEEL_OLDKERNEL=<presets and options>, so a test
 * can say in its output that it ran under emulation.
 *
 * Exit status: 1 for a bad command line (unknown preset, system call,
 * ioctl or errno name); 77 when this machine cannot install a seccomp
 * filter (a "skip" for the test harness); 127/126 when PROGRAM cannot be
 * found/executed; otherwise PROGRAM's own status (we exec it).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/syscall.h>

#if defined(HAVE_LINUX_SECCOMP_H) && defined(HAVE_LINUX_FILTER_H) && defined(HAVE_SYS_PRCTL_H)
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#define HAVE_SECCOMP_FILTER 1
#endif

#ifdef HAVE_LINUX_KVM_H
#include <linux/kvm.h>
#endif

/* ---- the native ABI ---------------------------------------------------- */
#if defined(__x86_64__) && !defined(__ILP32__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_X86_64
#define X32_SYSCALL_BIT 0x40000000u
#elif defined(__i386__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_I386
#elif defined(__aarch64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/*
 * System calls added since Linux 5.1 have one number on every architecture
 * (except alpha); older kernel headers may not name them yet.
 */
#ifdef NATIVE_AUDIT_ARCH
#ifndef __NR_pidfd_send_signal
#define __NR_pidfd_send_signal 424
#endif
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif
#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef __NR_openat2
#define __NR_openat2 437
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif
#ifndef __NR_faccessat2
#define __NR_faccessat2 439
#endif
#ifndef __NR_process_madvise
#define __NR_process_madvise 440
#endif
#ifndef __NR_epoll_pwait2
#define __NR_epoll_pwait2 441
#endif
#ifndef __NR_futex_waitv
#define __NR_futex_waitv 449
#endif
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif
#ifndef __NR_futex_wake
#define __NR_futex_wake 454
#endif
#ifndef __NR_futex_wait
#define __NR_futex_wait 455
#endif
#ifndef __NR_futex_requeue
#define __NR_futex_requeue 456
#endif
#ifndef __NR_statmount
#define __NR_statmount 457
#endif
#ifndef __NR_listmount
#define __NR_listmount 458
#endif
#ifndef __NR_mseal
#define __NR_mseal 462
#endif
#define HAVE_UNIFIED_SYSCALL_NUMBERS 1
#endif

#define KV(a, b, c) (((unsigned)(a) << 16) | ((unsigned)(b) << 8) | (unsigned)(c))

/* ---- the system call table --------------------------------------------- */
enum {
    IN_PRESETS = 0,
    /* The build machine's C library calls it with no fallback (glibc 2.26+
     * requires Linux 3.2), so the version presets leave it alone: on such
     * an old kernel one would run an old libc as well.  --deny still can. */
    LIBC_NEEDS = 1,
};

typedef struct SyscallInfo {
    const char *name;
    long nr;
    unsigned since;          /* KV() of the mainline release that added it */
    int flags;
    /* A flag-taking call that, with its flags argument (number @flags_arg)
     * equal to 0, is exactly the older call @older: glibc 2.36 implements
     * pipe() as pipe2(fd, 0), eventfd() as eventfd2 and signalfd() as
     * signalfd4.  An old libc would have made the old call, so a version
     * preset whose kernel has @older lets the flag-less form through. */
    const char *older;
    int flags_arg;
} SyscallInfo;

#define SC(name_, since_, flags_) { #name_, __NR_##name_, since_, flags_, NULL, -1 }
#define SC_FLAGS(name_, since_, older_, arg_) { #name_, __NR_##name_, since_, IN_PRESETS, #older_, arg_ }

static const SyscallInfo syscall_table[] = {
    /* Linux AIO: io_submit & co. are 2.5/2.6.0; eventfd completion
     * (IOCB_FLAG_RESFD) came with eventfd in 2.6.22 and cannot be told
     * apart by a filter.  Listed for --deny (e.g. a kernel built without
     * CONFIG_AIO); no version preset denies them. */
    SC(io_setup, KV(2, 6, 0), IN_PRESETS),
    SC(io_destroy, KV(2, 6, 0), IN_PRESETS),
    SC(io_submit, KV(2, 6, 0), IN_PRESETS),
    SC(io_getevents, KV(2, 6, 0), IN_PRESETS),
    SC(io_cancel, KV(2, 6, 0), IN_PRESETS),
#ifdef __NR_openat
    SC(openat, KV(2, 6, 16), LIBC_NEEDS),          /* glibc's open() */
#endif
#ifdef __NR_ppoll
    SC(ppoll, KV(2, 6, 16), IN_PRESETS),
#endif
#ifdef __NR_pselect6
    SC_FLAGS(pselect6, KV(2, 6, 16), select, 5),   /* glibc's select(): no sigmask */
#endif
#ifdef __NR_splice
    SC(splice, KV(2, 6, 17), IN_PRESETS),
    SC(tee, KV(2, 6, 17), IN_PRESETS),
    SC(vmsplice, KV(2, 6, 17), IN_PRESETS),
#endif
#ifdef __NR_sync_file_range
    SC(sync_file_range, KV(2, 6, 17), IN_PRESETS),
#endif
#ifdef __NR_epoll_pwait
    SC(epoll_pwait, KV(2, 6, 19), IN_PRESETS),
#endif
#ifdef __NR_eventfd
    SC(eventfd, KV(2, 6, 22), IN_PRESETS),
#endif
#ifdef __NR_signalfd
    SC(signalfd, KV(2, 6, 22), IN_PRESETS),
#endif
#ifdef __NR_fallocate
    SC(fallocate, KV(2, 6, 23), IN_PRESETS),
#endif
#ifdef __NR_timerfd_create
    SC(timerfd_create, KV(2, 6, 25), IN_PRESETS),
    SC(timerfd_settime, KV(2, 6, 25), IN_PRESETS),
    SC(timerfd_gettime, KV(2, 6, 25), IN_PRESETS),
#endif
    /* 2.6.27: the flag-taking variants (O_CLOEXEC/O_NONBLOCK at creation). */
    SC_FLAGS(eventfd2, KV(2, 6, 27), eventfd, 1),        /* glibc's eventfd() */
    SC_FLAGS(signalfd4, KV(2, 6, 27), signalfd, 3),      /* glibc's signalfd() */
    SC_FLAGS(pipe2, KV(2, 6, 27), pipe, 1),              /* glibc's pipe() */
    SC(dup3, KV(2, 6, 27), IN_PRESETS),
    SC_FLAGS(epoll_create1, KV(2, 6, 27), epoll_create, 0),
    SC_FLAGS(inotify_init1, KV(2, 6, 27), inotify_init, 0),
    SC_FLAGS(accept4, KV(2, 6, 28), accept, 3),
    SC(preadv, KV(2, 6, 30), IN_PRESETS),
    SC(pwritev, KV(2, 6, 30), IN_PRESETS),
    SC(recvmmsg, KV(2, 6, 33), IN_PRESETS),
    SC(prlimit64, KV(2, 6, 36), LIBC_NEEDS),       /* glibc's getrlimit() */
    SC(syncfs, KV(2, 6, 39), IN_PRESETS),
    SC(sendmmsg, KV(3, 0, 0), IN_PRESETS),
    SC(setns, KV(3, 0, 0), IN_PRESETS),
    SC(process_vm_readv, KV(3, 2, 0), IN_PRESETS),
    SC(process_vm_writev, KV(3, 2, 0), IN_PRESETS),
#ifdef __NR_renameat2
    SC(renameat2, KV(3, 15, 0), IN_PRESETS),
#endif
#ifdef __NR_seccomp
    SC(seccomp, KV(3, 17, 0), IN_PRESETS),
#endif
#ifdef __NR_getrandom
    SC(getrandom, KV(3, 17, 0), IN_PRESETS),
#endif
#ifdef __NR_memfd_create
    SC(memfd_create, KV(3, 17, 0), IN_PRESETS),
#endif
#ifdef __NR_execveat
    SC(execveat, KV(3, 19, 0), IN_PRESETS),
#endif
#ifdef __NR_userfaultfd
    SC(userfaultfd, KV(4, 3, 0), IN_PRESETS),
#endif
#ifdef __NR_membarrier
    SC(membarrier, KV(4, 3, 0), IN_PRESETS),
#endif
#ifdef __NR_mlock2
    SC(mlock2, KV(4, 4, 0), IN_PRESETS),
#endif
#ifdef __NR_copy_file_range
    SC(copy_file_range, KV(4, 5, 0), IN_PRESETS),
#endif
#ifdef __NR_preadv2
    SC(preadv2, KV(4, 6, 0), IN_PRESETS),
#endif
#ifdef __NR_pwritev2
    SC(pwritev2, KV(4, 6, 0), IN_PRESETS),
#endif
#ifdef __NR_statx
    SC(statx, KV(4, 11, 0), IN_PRESETS),
#endif
#ifdef __NR_io_pgetevents
    SC(io_pgetevents, KV(4, 18, 0), IN_PRESETS),
#endif
#ifdef __NR_rseq
    SC(rseq, KV(4, 18, 0), IN_PRESETS),            /* glibc tolerates ENOSYS */
#endif
#ifdef HAVE_UNIFIED_SYSCALL_NUMBERS
    SC(io_uring_setup, KV(5, 1, 0), IN_PRESETS),
    SC(io_uring_enter, KV(5, 1, 0), IN_PRESETS),
    SC(io_uring_register, KV(5, 1, 0), IN_PRESETS),
    SC(pidfd_send_signal, KV(5, 1, 0), IN_PRESETS),
    SC(clone3, KV(5, 3, 0), IN_PRESETS),           /* glibc falls back to clone */
    SC(pidfd_open, KV(5, 3, 0), IN_PRESETS),
    SC(openat2, KV(5, 6, 0), IN_PRESETS),
    SC(pidfd_getfd, KV(5, 6, 0), IN_PRESETS),
    SC(faccessat2, KV(5, 8, 0), IN_PRESETS),       /* glibc falls back */
    SC(close_range, KV(5, 9, 0), IN_PRESETS),      /* glib/glibc fall back */
    SC(process_madvise, KV(5, 10, 0), IN_PRESETS),
    SC(epoll_pwait2, KV(5, 11, 0), IN_PRESETS),
    SC(futex_waitv, KV(5, 16, 0), IN_PRESETS),
    SC(cachestat, KV(6, 5, 0), IN_PRESETS),
    SC(fchmodat2, KV(6, 6, 0), IN_PRESETS),
    SC(futex_wake, KV(6, 7, 0), IN_PRESETS),
    SC(futex_wait, KV(6, 7, 0), IN_PRESETS),
    SC(futex_requeue, KV(6, 7, 0), IN_PRESETS),
    SC(statmount, KV(6, 8, 0), IN_PRESETS),
    SC(listmount, KV(6, 8, 0), IN_PRESETS),
    SC(mseal, KV(6, 10, 0), IN_PRESETS),
#endif
    /* Old calls, for --deny only (since = 0: present in every preset). */
#ifdef __NR_poll
    SC(poll, 0, LIBC_NEEDS),
#endif
#ifdef __NR_pipe
    SC(pipe, 0, LIBC_NEEDS),
#endif
#ifdef __NR_select
    SC(select, 0, LIBC_NEEDS),
#endif
#ifdef __NR_epoll_create
    SC(epoll_create, 0, LIBC_NEEDS),
#endif
    SC(epoll_ctl, 0, LIBC_NEEDS),
#ifdef __NR_epoll_wait
    SC(epoll_wait, 0, LIBC_NEEDS),
#endif
#ifdef __NR_inotify_init
    SC(inotify_init, 0, LIBC_NEEDS),
#endif
#ifdef __NR_accept
    SC(accept, 0, LIBC_NEEDS),
#endif
    SC(pread64, 0, LIBC_NEEDS),
    SC(pwrite64, 0, LIBC_NEEDS),
    SC(readv, 0, LIBC_NEEDS),
    SC(writev, 0, LIBC_NEEDS),
    SC(fdatasync, 0, LIBC_NEEDS),
    SC(fsync, 0, LIBC_NEEDS),
    SC(ioctl, 0, LIBC_NEEDS),
    SC(fcntl, 0, LIBC_NEEDS),
    SC(getpid, 0, LIBC_NEEDS),
    SC(gettid, 0, LIBC_NEEDS),
#ifdef __NR_mkdir
    SC(mkdir, 0, LIBC_NEEDS),
#endif
    SC(mkdirat, 0, LIBC_NEEDS),
    SC(sigaltstack, 0, LIBC_NEEDS),
    SC(rt_sigtimedwait, 0, LIBC_NEEDS),
    SC(rt_sigqueueinfo, 0, LIBC_NEEDS),
    SC(rt_tgsigqueueinfo, KV(2, 6, 31), IN_PRESETS),   /* pthread_sigqueue() */
    SC(set_robust_list, KV(2, 6, 17), LIBC_NEEDS),
    SC(clone, 0, LIBC_NEEDS),
};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the KVM ioctl table ----------------------------------------------- */
typedef struct KvmIoctlInfo {
    const char *name;        /* "KVM_IRQFD" */
    unsigned long request;
    const char *cap_name;
    int cap;                 /* the KVM_CAP_* that advertises it */
    unsigned since;
} KvmIoctlInfo;

#ifdef HAVE_LINUX_KVM_H
#define KI(req_, cap_, since_) { #req_, req_, #cap_, cap_, since_ }
static const KvmIoctlInfo kvm_table[] = {
    KI(KVM_SET_GSI_ROUTING, KVM_CAP_IRQ_ROUTING, KV(2, 6, 30)),
    KI(KVM_IRQFD, KVM_CAP_IRQFD, KV(2, 6, 31)),
    KI(KVM_IOEVENTFD, KVM_CAP_IOEVENTFD, KV(2, 6, 32)),
    KI(KVM_SIGNAL_MSI, KVM_CAP_SIGNAL_MSI, KV(3, 5, 0)),
};
#define KVM_TABLE_SIZE N_ELEMS(kvm_table)
#else
static const KvmIoctlInfo kvm_table[1];
#define KVM_TABLE_SIZE 0
#endif

/* ---- presets ------------------------------------------------------------ */
typedef struct PresetExtra {
    const char *syscall;
    int err;
} PresetExtra;

typedef struct Preset {
    const char *name;
    const char *what;        /* which systems it stands for */
    unsigned kernel;         /* deny table entries newer than this; 0 = none */
    const PresetExtra *extra;
} Preset;

static const PresetExtra docker_extra[] = {
    /* moby's default profile: io_uring_* are not allow-listed (since moby
     * 25.0), so they hit the default action, SCMP_ACT_ERRNO with EPERM;
     * clone3 is listed explicitly with ENOSYS so that glibc uses clone. */
    { "io_uring_setup", EPERM },
    { "io_uring_enter", EPERM },
    { "io_uring_register", EPERM },
    { "clone3", ENOSYS },
    { NULL, 0 },
};

static const Preset presets[] = {
    { "2.6.9", "RHEL 4: no ppoll, and all of 2.6.18's gaps", KV(2, 6, 9), NULL },
    { "2.6.18", "RHEL/CentOS 5: no eventfd, signalfd, pipe2, preadv, KVM irqfd/ioeventfd", KV(2, 6, 18), NULL },
    { "2.6.32", "RHEL/CentOS 6: no preadv2, memfd, io_uring, KVM_SIGNAL_MSI", KV(2, 6, 32), NULL },
    { "3.10", "RHEL/CentOS 7: no memfd_create, getrandom, preadv2, io_uring", KV(3, 10, 0), NULL },
    { "4.18", "RHEL 8: no io_uring, clone3, close_range", KV(4, 18, 0), NULL },
    { "docker", "Docker's default seccomp profile: io_uring -> EPERM", 0, docker_extra },
};

/* ---- the rules we are going to install ---------------------------------- */
typedef struct SyscallRule {
    long nr;
    const char *name;
    int err;
    int allow_zero_arg;      /* >= 0: allowed when this argument is 0 */
} SyscallRule;

typedef struct KvmRule {
    const KvmIoctlInfo *info;
    int err;
} KvmRule;

static SyscallRule syscall_rules[N_ELEMS(syscall_table) + 64];
static size_t n_syscall_rules;
static KvmRule kvm_rules[KVM_TABLE_SIZE + 1];
static size_t n_kvm_rules;

static const char *progname = "keel-oldkernel";

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", progname);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry '%s --help'.\n", progname);
    va_end(ap);
    exit(1);
}

static const struct {
    const char *name;
    int value;
} errno_names[] = {
    { "ENOSYS", ENOSYS }, { "EPERM", EPERM }, { "EINVAL", EINVAL },
    { "ENOTTY", ENOTTY }, { "EOPNOTSUPP", EOPNOTSUPP }, { "ENOTSUP", ENOTSUP },
    { "EACCES", EACCES }, { "ENOMEM", ENOMEM }, { "EAGAIN", EAGAIN },
    { "EBADF", EBADF }, { "EFAULT", EFAULT }, { "EIO", EIO },
    { "ENODEV", ENODEV }, { "ENXIO", ENXIO }, { "EBUSY", EBUSY },
    { "ENOENT", ENOENT }, { "EEXIST", EEXIST }, { "EINTR", EINTR },
    { "EMFILE", EMFILE }, { "ENOSPC", ENOSPC },
};

static const char *errno_name(int err)
{
    if (err == 0) {
        return "0";
    }
    for (size_t i = 0; i < N_ELEMS(errno_names); i++) {
        if (errno_names[i].value == err) {
            return errno_names[i].name;
        }
    }
    static char buf[16];
    snprintf(buf, sizeof(buf), "%d", err);
    return buf;
}

/* "ENOSYS", "enosys" or a number 0..4095 (the kernel caps at MAX_ERRNO). */
static int parse_errno(const char *s)
{
    for (size_t i = 0; i < N_ELEMS(errno_names); i++) {
        if (!strcasecmp(s, errno_names[i].name)) {
            return errno_names[i].value;
        }
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s && !*end && !errno && v >= 0 && v <= 4095) {
        return (int)v;
    }
    die_usage("unknown errno '%s' (use a name like ENOSYS or a number 0..4095)", s);
}

static void add_syscall_rule(long nr, const char *name, int err, int allow_zero_arg)
{
    for (size_t i = 0; i < n_syscall_rules; i++) {
        if (syscall_rules[i].nr == nr) {
            /* The later option wins. */
            syscall_rules[i].err = err;
            syscall_rules[i].allow_zero_arg = allow_zero_arg;
            return;
        }
    }
    if (n_syscall_rules == N_ELEMS(syscall_rules)) {
        die_usage("too many --deny rules");
    }
    syscall_rules[n_syscall_rules++] = (SyscallRule){ nr, name, err, allow_zero_arg };
}

static void add_kvm_rule(const KvmIoctlInfo *info, int err)
{
    for (size_t i = 0; i < n_kvm_rules; i++) {
        if (kvm_rules[i].info == info) {
            kvm_rules[i].err = err;
            return;
        }
    }
    kvm_rules[n_kvm_rules++] = (KvmRule){ info, err };
}

static const SyscallInfo *find_syscall(const char *name)
{
    for (size_t i = 0; i < N_ELEMS(syscall_table); i++) {
        if (!strcmp(syscall_table[i].name, name)) {
            return &syscall_table[i];
        }
    }
    return NULL;
}

static const KvmIoctlInfo *find_kvm_ioctl(const char *name)
{
    if (!strncasecmp(name, "KVM_", 4)) {
        name += 4;
    }
    for (size_t i = 0; i < KVM_TABLE_SIZE; i++) {
        if (!strcasecmp(kvm_table[i].name + 4, name)) {
            return &kvm_table[i];
        }
    }
    return NULL;
}

static void format_version(unsigned v, char *buf, size_t size)
{
    if ((v & 0xff) || (v >> 16) == 2) {
        snprintf(buf, size, "%u.%u.%u", v >> 16, (v >> 8) & 0xff, v & 0xff);
    } else {
        snprintf(buf, size, "%u.%u", v >> 16, (v >> 8) & 0xff);
    }
}

/* "2.6.32", "3.10", "4" → KV(); 0 if @s is not a version number. */
static unsigned parse_version(const char *s)
{
    unsigned part[3] = { 0, 0, 0 };
    int n = 0;
    const char *p = s;
    while (n < 3) {
        if (!isdigit((unsigned char)*p)) {
            return 0;
        }
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (v > 255) {
            return 0;
        }
        part[n++] = (unsigned)v;
        p = end;
        if (*p == '\0') {
            break;
        }
        if (*p != '.') {
            return 0;
        }
        p++;
    }
    if (*p != '\0' || part[0] == 0) {
        return 0;
    }
    return KV(part[0], part[1], part[2]);
}

/* The errno a kernel of version @kernel gives for a KVM ioctl it lacks. */
static int kvm_missing_errno(unsigned kernel)
{
    return kernel < KV(3, 0, 0) ? EINVAL : ENOTTY;
}

static void apply_version(unsigned kernel)
{
    for (size_t i = 0; i < N_ELEMS(syscall_table); i++) {
        const SyscallInfo *sc = &syscall_table[i];
        if (sc->flags == IN_PRESETS && sc->since > kernel) {
            int allow_zero_arg = -1;
            if (sc->older) {
                /* Not in the table (not on this architecture): no twin. */
                const SyscallInfo *older = find_syscall(sc->older);
                if (older && older->since <= kernel) {
                    allow_zero_arg = sc->flags_arg;
                }
            }
            add_syscall_rule(sc->nr, sc->name, ENOSYS, allow_zero_arg);
        }
    }
    for (size_t i = 0; i < KVM_TABLE_SIZE; i++) {
        if (kvm_table[i].since > kernel) {
            add_kvm_rule(&kvm_table[i], kvm_missing_errno(kernel));
        }
    }
}

static void apply_preset(const char *name)
{
    for (size_t i = 0; i < N_ELEMS(presets); i++) {
        const Preset *p = &presets[i];
        if (strcmp(p->name, name)) {
            continue;
        }
        if (p->kernel) {
            apply_version(p->kernel);
        }
        for (const PresetExtra *e = p->extra; e && e->syscall; e++) {
            const SyscallInfo *sc = find_syscall(e->syscall);
            if (sc) {
                add_syscall_rule(sc->nr, sc->name, e->err, -1);
            }
        }
        return;
    }
    unsigned kernel = parse_version(name);
    if (!kernel) {
        die_usage("unknown preset '%s' (see --list; a kernel version like 3.2 also works)", name);
    }
    apply_version(kernel);
}

/* Splits "a:E,b" in place and calls @fn(name, errno) for each item. */
static void parse_list(char *list, int default_err, void (*fn)(const char *name, int err))
{
    char *save = NULL;
    int any = 0;
    for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        int err = default_err;
        char *colon = strchr(item, ':');
        if (colon) {
            *colon = '\0';
            err = parse_errno(colon + 1);
        }
        if (!*item) {
            die_usage("empty name in list");
        }
        fn(item, err);
        any = 1;
    }
    if (!any) {
        die_usage("empty list");
    }
}

static void deny_syscall_by_name(const char *name, int err)
{
    const SyscallInfo *sc = find_syscall(name);
    if (sc) {
        add_syscall_rule(sc->nr, sc->name, err, -1);
        return;
    }
    /* A raw number, for calls the table does not name. */
    char *end;
    errno = 0;
    long nr = strtol(name, &end, 10);
    if (isdigit((unsigned char)*name) && !*end && !errno && nr >= 0 && nr < 4096) {
        add_syscall_rule(nr, NULL, err, -1);
        return;
    }
    die_usage("unknown system call '%s' (see --list-syscalls, or give its number)", name);
}

static void deny_kvm_by_name(const char *name, int err)
{
    const KvmIoctlInfo *info = find_kvm_ioctl(name);
    if (!info) {
        if (KVM_TABLE_SIZE == 0) {
            die_usage("KVM ioctl '%s': built without <linux/kvm.h>", name);
        }
        die_usage("unknown KVM ioctl '%s' (known: KVM_SET_GSI_ROUTING, KVM_IRQFD, "
                  "KVM_IOEVENTFD, KVM_SIGNAL_MSI)", name);
    }
    add_kvm_rule(info, err);
}

/* ---- listing ------------------------------------------------------------- */
/* Prints @word after a space, breaking the line before column 78. */
static void print_word(FILE *out, const char *indent, int *column, const char *word)
{
    int len = (int)strlen(word);
    if (*column + 1 + len > 78) {
        fprintf(out, "\n%s   ", indent);
        *column = (int)strlen(indent) * 8 + 3;
    }
    fprintf(out, " %s", word);
    *column += 1 + len;
}

static void print_rules(FILE *out, const char *indent)
{
    char word[128];
    int column = (int)strlen(indent) * 8 + 9;

    fprintf(out, "%ssyscalls:", indent);
    for (size_t i = 0; i < n_syscall_rules; i++) {
        const SyscallRule *r = &syscall_rules[i];
        char name[24];
        if (r->name) {
            snprintf(name, sizeof(name), "%s", r->name);
        } else {
            snprintf(name, sizeof(name), "#%ld", r->nr);
        }
        if (r->allow_zero_arg >= 0) {
            snprintf(word, sizeof(word), "%s=%s(unless arg%d=0)", name, errno_name(r->err),
                     r->allow_zero_arg);
        } else {
            snprintf(word, sizeof(word), "%s=%s", name, errno_name(r->err));
        }
        print_word(out, indent, &column, word);
    }
    fprintf(out, "%s\n", n_syscall_rules ? "" : " (none)");
    fprintf(out, "%skvm:", indent);
    column = (int)strlen(indent) * 8 + 4;
    for (size_t i = 0; i < n_kvm_rules; i++) {
        snprintf(word, sizeof(word), "%s=%s", kvm_rules[i].info->name, errno_name(kvm_rules[i].err));
        print_word(out, indent, &column, word);
        snprintf(word, sizeof(word), "%s=0", kvm_rules[i].info->cap_name);
        print_word(out, indent, &column, word);
    }
    fprintf(out, "%s\n", n_kvm_rules ? "" : " (none)");
}

static void list_presets(FILE *out)
{
    for (size_t i = 0; i < N_ELEMS(presets); i++) {
        n_syscall_rules = n_kvm_rules = 0;
        apply_preset(presets[i].name);
        fprintf(out, "%s\t%s\n", presets[i].name, presets[i].what);
        print_rules(out, "\t");
    }
    fprintf(out, "Any kernel version (e.g. 3.2) is a preset too: it denies every call "
            "newer than it.\nCalls through another ABI (i386 int $0x80, x32) always fail "
            "with ENOSYS.\n");
    n_syscall_rules = n_kvm_rules = 0;
}

static void list_syscalls(FILE *out)
{
    char v[16];
    for (size_t i = 0; i < N_ELEMS(syscall_table); i++) {
        const SyscallInfo *sc = &syscall_table[i];
        if (sc->since) {
            format_version(sc->since, v, sizeof(v));
        } else {
            snprintf(v, sizeof(v), "old");
        }
        fprintf(out, "%-20s nr=%-4ld since=%-7s%s\n", sc->name, sc->nr, v,
                sc->flags == LIBC_NEEDS ? " (libc needs it: --deny only)" : "");
    }
    for (size_t i = 0; i < KVM_TABLE_SIZE; i++) {
        format_version(kvm_table[i].since, v, sizeof(v));
        fprintf(out, "%-20s ioctl=%#lx since=%-7s cap=%s\n", kvm_table[i].name,
                kvm_table[i].request, v, kvm_table[i].cap_name);
    }
}

static void usage(FILE *out)
{
    fprintf(out,
        "Usage: %s [OPTIONS] -- PROGRAM [ARGS...]\n"
        "Run PROGRAM with chosen system calls and KVM ioctls failing as on an older kernel.\n"
        "\n"
        "  --preset NAME         deny what kernel NAME lacked (see --list); repeatable\n"
        "  --deny SC[:ERR],...   make system calls fail (default ENOSYS; ERR may be 0,\n"
        "                        which returns 0 without running the call)\n"
        "  --deny-kvm IO[:ERR],...  make KVM ioctls fail (default ENOTTY) and report\n"
        "                        their capability as absent (KVM_CHECK_EXTENSION = 0)\n"
        "  --list                show the presets and what each denies\n"
        "  --list-syscalls       show the known system calls and KVM ioctls\n"
        "  --help                this text\n"
        "\n"
        "Exit status: 1 bad command line, 77 seccomp unavailable here,\n"
        "126/127 PROGRAM not executable/found, else PROGRAM's own status.\n",
        progname);
}

/* ---- the BPF program ------------------------------------------------------- */
#ifdef HAVE_SECCOMP_FILTER
#define MAX_INSNS 1024

typedef struct Program {
    struct sock_filter insn[MAX_INSNS];
    unsigned short len;
} Program;

static void emit(Program *p, unsigned short code, unsigned char jt, unsigned char jf, uint32_t k)
{
    if (p->len == MAX_INSNS) {
        fprintf(stderr, "%s: filter too long\n", progname);
        exit(1);
    }
    p->insn[p->len++] = (struct sock_filter)BPF_JUMP(code, k, jt, jf);
}

static void emit_load(Program *p, uint32_t offset)
{
    emit(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, offset);
}

static void emit_ret(Program *p, uint32_t action)
{
    emit(p, BPF_RET | BPF_K, 0, 0, action);
}

/* if (A == k) return action; — two instructions, local jumps only. */
static void emit_match_ret(Program *p, uint32_t k, uint32_t action)
{
    emit(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, k);
    emit_ret(p, action);
}

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LO(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#define ARG_HI(n) (offsetof(struct seccomp_data, args) + 8 * (n) + 4)
#else
#define ARG_LO(n) (offsetof(struct seccomp_data, args) + 8 * (n) + 4)
#define ARG_HI(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#endif

static void build_program(Program *p)
{
    const uint32_t enosys = SECCOMP_RET_ERRNO | ENOSYS;

    p->len = 0;
    /* Another ABI numbers its calls differently: refuse them all. */
    emit_load(p, offsetof(struct seccomp_data, arch));
    emit(p, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, NATIVE_AUDIT_ARCH);
    emit_ret(p, enosys);
    emit_load(p, offsetof(struct seccomp_data, nr));
#ifdef X32_SYSCALL_BIT
    emit(p, BPF_JMP | BPF_JGE | BPF_K, 0, 1, X32_SYSCALL_BIT);
    emit_ret(p, enosys);
#endif
    for (size_t i = 0; i < n_syscall_rules; i++) {
        const SyscallRule *r = &syscall_rules[i];
        uint32_t action = SECCOMP_RET_ERRNO | (uint32_t)r->err;
        if (r->allow_zero_arg < 0) {
            emit_match_ret(p, (uint32_t)r->nr, action);
            continue;
        }
        /* Flags are an int in the kernel: only the low half counts.  The
         * argument is loaded only on the matching path, which returns, so
         * A still holds the number for the rules that follow. */
        emit(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 4, (uint32_t)r->nr);
        emit_load(p, ARG_LO(r->allow_zero_arg));
        emit(p, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0);
        emit_ret(p, action);
        emit_ret(p, SECCOMP_RET_ALLOW);
    }
#ifdef HAVE_LINUX_KVM_H
    if (n_kvm_rules) {
        emit(p, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, __NR_ioctl);
        emit_ret(p, SECCOMP_RET_ALLOW);
        /* The kernel takes the request as an unsigned int. */
        emit_load(p, ARG_LO(1));
        for (size_t i = 0; i < n_kvm_rules; i++) {
            emit_match_ret(p, (uint32_t)kvm_rules[i].info->request,
                           SECCOMP_RET_ERRNO | (uint32_t)kvm_rules[i].err);
        }
        emit(p, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, KVM_CHECK_EXTENSION);
        emit_ret(p, SECCOMP_RET_ALLOW);
        emit_load(p, ARG_HI(2));
        emit(p, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0);
        emit_ret(p, SECCOMP_RET_ALLOW);
        emit_load(p, ARG_LO(2));
        for (size_t i = 0; i < n_kvm_rules; i++) {
            /* ERRNO with data 0: the call returns 0 = "capability absent". */
            emit_match_ret(p, (uint32_t)kvm_rules[i].info->cap, SECCOMP_RET_ERRNO | 0);
        }
    }
#endif
    emit_ret(p, SECCOMP_RET_ALLOW);
}

static int install_filter(void)
{
    static Program prog;
    build_program(&prog);
    struct sock_fprog fprog = { .len = prog.len, .filter = prog.insn };

    /* Without it an unprivileged process may not install a filter; it also
     * keeps a set-uid PROGRAM from escaping the emulation. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        return -errno;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) < 0) {
        return -errno;
    }
    return 0;
}
#endif /* HAVE_SECCOMP_FILTER */

/* ---- main ---------------------------------------------------------------- */
static const char *option_value(int argc, char **argv, int *i, const char *opt)
{
    size_t len = strlen(opt);
    const char *arg = argv[*i];
    if (arg[len] == '=') {
        return arg + len + 1;
    }
    if (*i + 1 >= argc) {
        die_usage("%s needs a value", opt);
    }
    return argv[++*i];
}

static int is_option(const char *arg, const char *opt)
{
    size_t len = strlen(opt);
    return !strncmp(arg, opt, len) && (arg[len] == '\0' || arg[len] == '=');
}

int main(int argc, char **argv)
{
    char description[1024] = "";
    int want_list = 0, want_syscalls = 0, i;

    for (i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--")) {
            i++;
            break;
        }
        if (arg[0] != '-') {
            break;
        }
        if (is_option(arg, "--preset")) {
            const char *v = option_value(argc, argv, &i, "--preset");
            apply_preset(v);
            snprintf(description + strlen(description), sizeof(description) - strlen(description),
                     "%s%s", description[0] ? " " : "", v);
        } else if (is_option(arg, "--deny")) {
            const char *v = option_value(argc, argv, &i, "--deny");
            char *copy = strdup(v);
            parse_list(copy, ENOSYS, deny_syscall_by_name);
            free(copy);
            snprintf(description + strlen(description), sizeof(description) - strlen(description),
                     "%sdeny=%s", description[0] ? " " : "", v);
        } else if (is_option(arg, "--deny-kvm")) {
            const char *v = option_value(argc, argv, &i, "--deny-kvm");
            char *copy = strdup(v);
            parse_list(copy, ENOTTY, deny_kvm_by_name);
            free(copy);
            snprintf(description + strlen(description), sizeof(description) - strlen(description),
                     "%sdeny-kvm=%s", description[0] ? " " : "", v);
        } else if (!strcmp(arg, "--list")) {
            want_list = 1;
        } else if (!strcmp(arg, "--list-syscalls")) {
            want_syscalls = 1;
        } else if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout);
            return 0;
        } else {
            die_usage("unknown option '%s'", arg);
        }
    }

    if (want_list || want_syscalls) {
        if (want_list) {
            list_presets(stdout);
        }
        if (want_syscalls) {
            list_syscalls(stdout);
        }
        return 0;
    }
    if (i >= argc) {
        die_usage("no PROGRAM given");
    }
    if (!n_syscall_rules && !n_kvm_rules) {
        die_usage("nothing to deny: give --preset, --deny or --deny-kvm");
    }

#ifdef HAVE_SECCOMP_FILTER
#ifndef NATIVE_AUDIT_ARCH
    fprintf(stderr, "%s: seccomp emulation is not implemented for this architecture\n", progname);
    return 77;
#else
    if (getenv("KEEL_OLDKERNEL_VERBOSE")) {
        fprintf(stderr, "%s: %s\n", progname, description);
        print_rules(stderr, "  ");
    }
    if (setenv("KEEL_OLDKERNEL", description, 1) < 0) {
        perror("setenv");
        return 1;
    }
    int ret = install_filter();
    if (ret < 0) {
        fprintf(stderr, "%s: cannot install a seccomp filter: %s\n", progname, strerror(-ret));
        return 77;
    }
    execvp(argv[i], &argv[i]);
    int err = errno;
    /* The filter may be what refused exec (a user --deny); say so. */
    fprintf(stderr, "%s: cannot run '%s': %s\n", progname, argv[i], strerror(err));
    return err == ENOENT ? 127 : 126;
#endif
#else
    (void)description;
    fprintf(stderr, "%s: built without seccomp headers; cannot emulate\n", progname);
    return 77;
#endif
}
