/*
 * Small OS helpers: close-on-exec / non-blocking flags, pipe2 with its
 * fallback, full reads and writes, threads born with async signals blocked.
 */
#include "config.h"

#include "compat/osdep.h"
#include "compat/avoid.h"
#include "compat/compat-int.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int keel_set_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);

    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
        return -errno;
    }
    return 0;
}

int keel_set_nonblock(int fd, bool nonblock)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0) {
        return -errno;
    }
    flags = nonblock ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (fcntl(fd, F_SETFL, flags) < 0) {
        return -errno;
    }
    return 0;
}

static KeelSeam pipe2_seam = KEEL_SEAM_INIT(KEEL_PATH_PIPE2, "pipe2", "pipe+fcntl");

int keel_pipe2(int fds[2], int flags)
{
    int ret;

    if ((flags & ~(O_CLOEXEC | O_NONBLOCK)) != 0) {
        return -EINVAL;
    }
#ifdef HAVE_PIPE2
    if (keel_seam_use_primary(&pipe2_seam)) {
        if (pipe2(fds, flags) == 0) {
            return 0;
        }
        if (errno != ENOSYS) {
            return -errno;
        }
        keel_seam_primary_failed(&pipe2_seam, errno);
    }
#endif
    /* Fallback: not atomic with respect to a concurrent fork+exec, which is
     * why pipe2 exists; acceptable on kernels older than 2.6.27. */
    if (pipe(fds) < 0) {
        return -errno;
    }
    for (int i = 0; i < 2; i++) {
        if ((flags & O_CLOEXEC) && (ret = keel_set_cloexec(fds[i])) < 0) {
            goto fail;
        }
        if ((flags & O_NONBLOCK) && (ret = keel_set_nonblock(fds[i], true)) < 0) {
            goto fail;
        }
    }
    return 0;

fail:
    close(fds[0]);
    close(fds[1]);
    return ret;
}

static const char *pipe2_active(const char **reason)
{
#ifdef HAVE_PIPE2
    /* Probe once so the report tells the truth on this kernel. */
    if (keel_seam_use_primary(&pipe2_seam)) {
        int fds[2];
        if (keel_pipe2(fds, O_CLOEXEC) == 0) {
            close(fds[0]);
            close(fds[1]);
        }
    }
    return keel_seam_active(&pipe2_seam, reason);
#else
    *reason = "not-compiled";
    return "pipe+fcntl";
#endif
}

const KeelFeature compat_pipe2_feature = {
    .name = "pipe2",
#ifdef HAVE_PIPE2
    .compiled = "pipe2,pipe+fcntl",
#else
    .compiled = "pipe+fcntl",
#endif
    .active = pipe2_active,
};

int keel_write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int keel_read_full(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return -EPIPE;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void keel_async_signal_set(sigset_t *set)
{
    sigfillset(set);
    /* Synchronous signals must reach the thread that caused them. */
    sigdelset(set, SIGSEGV);
    sigdelset(set, SIGBUS);
    sigdelset(set, SIGILL);
    sigdelset(set, SIGFPE);
    sigdelset(set, SIGTRAP);
    sigdelset(set, SIGSYS);
}

struct thread_start {
    void *(*start)(void *);
    void *arg;
    char name[16];
};

static void *thread_trampoline(void *opaque)
{
    struct thread_start ts = *(struct thread_start *)opaque;

    free(opaque);
#ifdef HAVE_PTHREAD_SETNAME_NP
    if (ts.name[0]) {
        pthread_setname_np(pthread_self(), ts.name);
    }
#endif
    return ts.start(ts.arg);
}

int keel_thread_create(pthread_t *thread, const char *name,
                       void *(*start)(void *), void *arg)
{
    struct thread_start *ts = malloc(sizeof(*ts));
    sigset_t all, old;
    int ret;

    if (!ts) {
        return -ENOMEM;
    }
    ts->start = start;
    ts->arg = arg;
    snprintf(ts->name, sizeof(ts->name), "%s", name ? name : "");

    /* The new thread inherits the mask in force at pthread_create, so it
     * never runs a single instruction with async signals unblocked. */
    keel_async_signal_set(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    ret = pthread_create(thread, NULL, thread_trampoline, ts);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret) {
        free(ts);
        return -ret;
    }
    return 0;
}

int64_t keel_monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t keel_realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

const char *keel_errno_name(int err)
{
    static __thread char buf[16];

    switch (err) {
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOTTY: return "ENOTTY";
    case ENOMEM: return "ENOMEM";
    case EMFILE: return "EMFILE";
    case EAGAIN: return "EAGAIN";
    case EIO: return "EIO";
    case ENOSPC: return "ENOSPC";
    case EBADF: return "EBADF";
    case ENOENT: return "ENOENT";
    case EFAULT: return "EFAULT";
    default:
        snprintf(buf, sizeof(buf), "E%d", err);
        return buf;
    }
}

void keel_log(const char *fmt, ...)
{
    char line[512] = "keel: ";
    size_t prefix = strlen(line);
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line + prefix, sizeof(line) - prefix - 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    n = (size_t)n > sizeof(line) - prefix - 2 ? (int)(sizeof(line) - prefix - 2) : n;
    line[prefix + (size_t)n] = '\n';
    /* One write(2), so lines from different threads never interleave. */
    if (write(STDERR_FILENO, line, prefix + (size_t)n + 1) < 0) {
        /* Nowhere left to report it. */
    }
}
