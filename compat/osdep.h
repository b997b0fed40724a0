/*
 * compat/osdep.h — small OS helpers every layer uses.
 *
 * Thread rules: all functions are thread-safe.
 */
#ifndef KEEL_COMPAT_OSDEP_H
#define KEEL_COMPAT_OSDEP_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Evaluate @expr (a syscall returning -1/errno) again while it fails with EINTR. */
#define KEEL_RETRY_EINTR(expr) \
    __extension__ ({ long keel_r_; \
       do { keel_r_ = (long)(expr); } while (keel_r_ == -1 && errno == EINTR); \
       keel_r_; })

#define KEEL_CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Set or clear FD_CLOEXEC / O_NONBLOCK.  Return 0 or -errno. */
int keel_set_cloexec(int fd);
int keel_set_nonblock(int fd, bool nonblock);

/* pipe2() with O_CLOEXEC and/or O_NONBLOCK; falls back to pipe()+fcntl when
 * pipe2 is missing at build time, refused at run time (ENOSYS), or avoided
 * (KEEL_AVOID=pipe2).  Returns 0 or -errno. */
int keel_pipe2(int fds[2], int flags);

/* Write/read exactly @len bytes, retrying on EINTR and short transfers.
 * Return 0, or -errno (-EPIPE for EOF on read). */
int keel_write_full(int fd, const void *buf, size_t len);
int keel_read_full(int fd, void *buf, size_t len);

/* Fill @set with every asynchronous signal (all but SIGSEGV, SIGBUS, SIGILL,
 * SIGFPE, SIGTRAP, SIGSYS, which must reach the faulting thread). */
void keel_async_signal_set(sigset_t *set);

/* Start a thread with every asynchronous signal blocked (so signals reach the
 * main loop's signal fd, never a worker), named @name (≤15 chars shown).
 * Returns 0 or -errno. */
int keel_thread_create(pthread_t *thread, const char *name,
                       void *(*start)(void *), void *arg);

/* Nanoseconds on CLOCK_MONOTONIC / CLOCK_REALTIME. */
int64_t keel_monotonic_ns(void);
int64_t keel_realtime_ns(void);

/* The symbolic name of a positive errno value ("ENOSYS"), or "E<number>". */
const char *keel_errno_name(int err);

/* Log one line to stderr prefixed "keel: " (fallbacks, start-up lines). */
void keel_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#ifdef __cplusplus
}
#endif

#endif
