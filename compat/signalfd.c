/*
 * Signals as records on an fd: signalfd, or a sigwaitinfo thread + pipe.
 */
#include "config.h"

#include "compat/signalfd.h"
#include "compat/avoid.h"
#include "compat/compat-int.h"
#include "compat/osdep.h"

#include <fcntl.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef HAVE_SIGNALFD
#include <sys/signalfd.h>
#endif

G_STATIC_ASSERT(sizeof(KeelSignalInfo) == 128);
#ifdef HAVE_SIGNALFD
G_STATIC_ASSERT(sizeof(KeelSignalInfo) == sizeof(struct signalfd_siginfo));
G_STATIC_ASSERT(offsetof(KeelSignalInfo, ssi_pid) == offsetof(struct signalfd_siginfo, ssi_pid));
G_STATIC_ASSERT(offsetof(KeelSignalInfo, ssi_addr) == offsetof(struct signalfd_siginfo, ssi_addr));
#endif

#ifdef HAVE_SIGNALFD
static KeelSeam signalfd_seam = KEEL_SEAM_INIT(KEEL_PATH_SIGNALFD, "signalfd", "thread");
#endif

/* One per fd opened through the thread fallback. */
typedef struct SignalThread {
    struct SignalThread *next;
    int rfd, wfd;
    sigset_t mask;
    int kick_signo;         /* a signal of @mask, sent to stop the thread */
    int stop;               /* atomic */
    pthread_t thread;
} SignalThread;

static SignalThread *signal_threads;
static pthread_mutex_t signal_threads_lock = PTHREAD_MUTEX_INITIALIZER;

static void siginfo_to_record(const siginfo_t *si, KeelSignalInfo *rec)
{
    memset(rec, 0, sizeof(*rec));
    rec->ssi_signo = (uint32_t)si->si_signo;
    rec->ssi_errno = si->si_errno;
    rec->ssi_code = si->si_code;
    rec->ssi_pid = (uint32_t)si->si_pid;
    rec->ssi_uid = (uint32_t)si->si_uid;
    rec->ssi_status = si->si_status;
    rec->ssi_int = si->si_value.sival_int;
    rec->ssi_ptr = (uint64_t)(uintptr_t)si->si_value.sival_ptr;
    rec->ssi_addr = (uint64_t)(uintptr_t)si->si_addr;
    if (si->si_signo == SIGCHLD) {
        rec->ssi_utime = (uint64_t)si->si_utime;
        rec->ssi_stime = (uint64_t)si->si_stime;
    }
    if (si->si_signo == SIGIO || si->si_signo == SIGPOLL) {
        rec->ssi_fd = si->si_fd;
        rec->ssi_band = (uint32_t)si->si_band;
    }
    if (si->si_code == SI_TIMER) {
        rec->ssi_tid = (uint32_t)si->si_timerid;
        rec->ssi_overrun = (uint32_t)si->si_overrun;
    }
}

static void *signal_thread_run(void *opaque)
{
    SignalThread *st = opaque;

    for (;;) {
        siginfo_t si;
        KeelSignalInfo rec;
        int signo = sigwaitinfo(&st->mask, &si);

        if (__atomic_load_n(&st->stop, __ATOMIC_ACQUIRE)) {
            break;
        }
        if (signo < 0) {
            continue;   /* EINTR from a signal outside the mask */
        }
        siginfo_to_record(&si, &rec);
        /* 128 bytes < PIPE_BUF: the write is atomic, so the reader always
         * gets whole records.  It blocks only while the pipe holds 512
         * unread records, which merely delays the next signal. */
        if (keel_write_full(st->wfd, &rec, sizeof(rec)) < 0) {
            break;      /* reader gone */
        }
    }
    return NULL;
}

static int signal_thread_open(const sigset_t *mask)
{
    SignalThread *st = calloc(1, sizeof(*st));
    int fds[2];
    int ret;

    if (!st) {
        return -ENOMEM;
    }
    st->mask = *mask;
    for (int s = 1; s < NSIG; s++) {
        if (sigismember(mask, s) == 1) {
            st->kick_signo = s;
            break;
        }
    }
    if (!st->kick_signo) {
        free(st);
        return -EINVAL;
    }
    ret = keel_pipe2(fds, O_CLOEXEC);
    if (ret < 0) {
        free(st);
        return ret;
    }
    st->rfd = fds[0];
    st->wfd = fds[1];
    /* Only the reader is non-blocking; the thread's writes may wait. */
    keel_set_nonblock(st->rfd, true);
    ret = keel_thread_create(&st->thread, "keel-signal", signal_thread_run, st);
    if (ret < 0) {
        close(st->rfd);
        close(st->wfd);
        free(st);
        return ret;
    }
    pthread_mutex_lock(&signal_threads_lock);
    st->next = signal_threads;
    signal_threads = st;
    pthread_mutex_unlock(&signal_threads_lock);
    return st->rfd;
}

int keel_signalfd_open(const sigset_t *mask)
{
    /* Block first, so nothing is delivered to a handler in between. */
    pthread_sigmask(SIG_BLOCK, mask, NULL);
#ifdef HAVE_SIGNALFD
    if (keel_seam_use_primary(&signalfd_seam)) {
        int fd = signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (fd >= 0) {
            return fd;
        }
        /* ENOSYS: no signalfd4 (< 2.6.27) or seccomp; EINVAL: flags unknown. */
        if (errno != ENOSYS && errno != EINVAL) {
            return -errno;
        }
        keel_seam_primary_failed(&signalfd_seam, errno);
    }
#endif
    return signal_thread_open(mask);
}

int keel_signalfd_read(int fd, KeelSignalInfo *info)
{
    ssize_t n = KEEL_RETRY_EINTR(read(fd, info, sizeof(*info)));

    if (n < 0) {
        return errno == EAGAIN ? 0 : -errno;
    }
    return n == (ssize_t)sizeof(*info) ? 1 : -EIO;
}

void keel_signalfd_close(int fd)
{
    SignalThread **pp, *st = NULL;

    pthread_mutex_lock(&signal_threads_lock);
    for (pp = &signal_threads; *pp; pp = &(*pp)->next) {
        if ((*pp)->rfd == fd) {
            st = *pp;
            *pp = st->next;
            break;
        }
    }
    pthread_mutex_unlock(&signal_threads_lock);

    if (st) {
        /* Thread-directed, so it is the signal thread's sigwaitinfo that
         * takes it; the stop flag tells it apart from a real one. */
        __atomic_store_n(&st->stop, 1, __ATOMIC_RELEASE);
        pthread_kill(st->thread, st->kick_signo);
        pthread_join(st->thread, NULL);
        close(st->wfd);
        close(st->rfd);
        free(st);
        return;
    }
    close(fd);
}

const char *keel_signalfd_backend(const char **reason)
{
#ifdef HAVE_SIGNALFD
    if (keel_seam_use_primary(&signalfd_seam)) {
        sigset_t none;
        int fd;
        sigemptyset(&none);
        fd = signalfd(-1, &none, SFD_CLOEXEC | SFD_NONBLOCK);
        if (fd >= 0) {
            close(fd);
        } else if (errno == ENOSYS || errno == EINVAL) {
            keel_seam_primary_failed(&signalfd_seam, errno);
        }
    }
    return keel_seam_active(&signalfd_seam, reason);
#else
    if (reason) {
        *reason = "not-compiled";
    }
    return "thread";
#endif
}

const KeelFeature compat_signalfd_feature = {
    .name = "signal-fd",
#ifdef HAVE_SIGNALFD
    .compiled = "signalfd,thread",
#else
    .compiled = "thread",
#endif
    .active = keel_signalfd_backend,
};
