/*
 * compat/avoid.h — forcing fallback paths, and remembering run-time fallbacks.
 *
 * Every portability seam has a primary path and a fallback that is always
 * compiled in.  The environment variable KEEL_AVOID is a comma-separated list
 * of primary paths not to use (see keel_path_name() for the words, and the
 * README); blanks around a word are ignored.  The library never ends its
 * host over it: an unknown word is reported once on stderr (the first time
 * a seam reads the list) and ignored, the known words still apply.
 * Programs that want a typo to be fatal call keel_avoid_init() at start-up
 * (keel-features, keel-img and keel-vmm exit 1).
 *
 * A KeelSeam records, per seam, whether its primary path is still usable.
 * When the kernel refuses the primary at run time (ENOSYS, EINVAL, EPERM…)
 * the seam switches to its fallback once, logs one line saying so, and stays
 * there.
 *
 * Thread rules: every function here is thread-safe.
 */
#ifndef KEEL_COMPAT_AVOID_H
#define KEEL_COMPAT_AVOID_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum KeelPath {
    KEEL_PATH_EVENTFD,      /* "eventfd"     → pipe pair                     */
    KEEL_PATH_SIGNALFD,     /* "signalfd"    → sigwaitinfo thread + pipe     */
    KEEL_PATH_PPOLL,        /* "ppoll"       → g_poll, ms timeouts           */
    KEEL_PATH_PIPE2,        /* "pipe2"       → pipe + fcntl                  */
    KEEL_PATH_UCONTEXT,     /* "ucontext"    → sigaltstack coroutines        */
    KEEL_PATH_IO_URING,     /* "io_uring"    → linux-aio or thread pool      */
    KEEL_PATH_LINUX_AIO,    /* "linux-aio"   → thread pool                   */
    KEEL_PATH_PREADV,       /* "preadv"      → pread/pwrite loops            */
    KEEL_PATH_IOEVENTFD,    /* "ioeventfd"   → vCPU exit handler sets the notifier */
    KEEL_PATH_IRQFD,        /* "irqfd"       → KVM_IRQ_LINE / KVM_SIGNAL_MSI */
    KEEL_PATH_SIGNAL_MSI,   /* "signal-msi"  → INTx through KVM_IRQ_LINE     */
    KEEL_PATH_MSIX,         /* "msix"        → INTx                          */
    KEEL_PATH_EPOLL,        /* "epoll"       → AioContexts poll every fd     */
    KEEL_PATH_MEMFD,        /* "memfd"       → guest RAM in anonymous memory */
    KEEL_PATH_OFD_LOCKS,    /* "ofd-locks"   → POSIX image locks (block/image-lock.h) */
    KEEL_PATH__MAX
} KeelPath;

/* True when KEEL_AVOID names @path. */
bool keel_avoid(KeelPath path);

/* The KEEL_AVOID word for @path. */
const char *keel_path_name(KeelPath path);

/*
 * Parse KEEL_AVOID now (once per process).  Returns 0, or -1 with a static
 * message in *@error naming every unknown word and listing the known ones;
 * the known words are in force either way.  Programs call this at start-up
 * to fail with a clean message; keel_avoid() calls it lazily and only logs.
 */
int keel_avoid_init(const char **error);

/* Re-read KEEL_AVOID from a given string (tests only; not thread-safe
 * against concurrent keel_avoid()).  Returns 0 or -1 like keel_avoid_init(). */
int keel_avoid_parse_for_testing(const char *list, const char **error);

/* ---- run-time fallback state of one seam ------------------------------- */
typedef struct KeelSeam {
    KeelPath path;          /* which KEEL_AVOID word forces the fallback */
    const char *primary;    /* e.g. "eventfd" */
    const char *fallback;   /* e.g. "pipe" */
    int failed_errno;       /* set once the kernel refused the primary; atomic */
} KeelSeam;

#define KEEL_SEAM_INIT(path_, primary_, fallback_) \
    { (path_), (primary_), (fallback_), 0 }

/* Whether to try the primary path now: not avoided and not failed before. */
bool keel_seam_use_primary(KeelSeam *seam);

/* The primary failed with @err (positive errno).  Switches the seam to its
 * fallback for the rest of the process and logs one line on stderr. */
void keel_seam_primary_failed(KeelSeam *seam, int err);

/* The path in use now and why: "default", "KEEL_AVOID", or the errno name
 * ("ENOSYS") that forced the fallback. */
const char *keel_seam_active(KeelSeam *seam, const char **reason);

/* True for the errors that mean "the kernel does not have this" rather than
 * a transient failure: ENOSYS, EINVAL, EPERM, EOPNOTSUPP, ENOTTY. */
bool keel_errno_means_unsupported(int err);

#ifdef __cplusplus
}
#endif

#endif
