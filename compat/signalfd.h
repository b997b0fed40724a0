/*
 * compat/signalfd.h — receive signals as records on a file descriptor.
 *
 * signalfd(2), or — when it is not compiled in, refused (ENOSYS/EINVAL) or
 * avoided with KEEL_AVOID=signalfd — a dedicated thread that blocks in
 * sigwaitinfo() and writes one whole KeelSignalInfo per signal into a pipe.
 * Either way the reader gets the same 128-byte record (the layout of struct
 * signalfd_siginfo): signo, code, pid, uid, status, value…
 *
 * keel_signalfd_open() blocks @mask in the calling thread.  Call it from the
 * main thread before creating other threads (they inherit the mask, and
 * keel_thread_create() blocks all async signals anyway), so that the signals
 * are blocked in every thread of the process and only the fd sees them.
 *
 * Thread rules: open/close from the owning thread; read from the thread
 * that polls the fd.
 */
#ifndef KEEL_COMPAT_SIGNALFD_H
#define KEEL_COMPAT_SIGNALFD_H

#include <signal.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct KeelSignalInfo {
    uint32_t ssi_signo;
    int32_t  ssi_errno;
    int32_t  ssi_code;
    uint32_t ssi_pid;
    uint32_t ssi_uid;
    int32_t  ssi_fd;
    uint32_t ssi_tid;
    uint32_t ssi_band;
    uint32_t ssi_overrun;
    uint32_t ssi_trapno;
    int32_t  ssi_status;
    int32_t  ssi_int;
    uint64_t ssi_ptr;
    uint64_t ssi_utime;
    uint64_t ssi_stime;
    uint64_t ssi_addr;
    uint8_t  pad[48];
} KeelSignalInfo;

/* Returns a non-blocking, close-on-exec fd to poll for POLLIN, or -errno. */
int keel_signalfd_open(const sigset_t *mask);

/* Read one record: 1 when one was read, 0 when none is pending, -errno. */
int keel_signalfd_read(int fd, KeelSignalInfo *info);

/* Close the fd (and stop the signal thread when there is one). */
void keel_signalfd_close(int fd);

/* "signalfd" or "thread": what keel_signalfd_open() would use now. */
const char *keel_signalfd_backend(const char **reason);

#ifdef __cplusplus
}
#endif

#endif
