/*
 * compat/poll.h — poll with a nanosecond timeout.
 *
 * ppoll(2) with the exact timeout, or — when ppoll is not compiled in,
 * refused (ENOSYS) or avoided with KEEL_AVOID=ppoll — g_poll() with the
 * timeout rounded *up* to whole milliseconds (so a caller never wakes before
 * its deadline and spins).  A negative timeout waits forever; timeouts too
 * big for the syscall are clamped, never overflowed; 0 never sleeps.
 *
 * Thread rules: thread-safe.
 */
#ifndef KEEL_COMPAT_POLL_H
#define KEEL_COMPAT_POLL_H

#include <glib.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Returns the number of ready entries, 0 on timeout, or -1 with errno set
 * (EINTR included: callers treat it as "nothing ready" and go round). */
int keel_poll_ns(GPollFD *fds, unsigned nfds, int64_t timeout_ns);

/* @timeout_ns in ms rounded up, clamped to INT_MAX; -1 stays -1. */
int keel_poll_timeout_ms(int64_t timeout_ns);

/* "ppoll" or "g_poll". */
const char *keel_poll_backend(const char **reason);

#ifdef __cplusplus
}
#endif

#endif
