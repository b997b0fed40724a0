/*
 * Event notifier: eventfd, or a non-blocking pipe pair.
 */
#include "config.h"

#include "compat/event-notifier.h"
#include "compat/avoid.h"
#include "compat/compat-int.h"
#include "compat/osdep.h"

#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#ifdef HAVE_EVENTFD
#include <sys/eventfd.h>
#endif

#ifdef HAVE_EVENTFD
static KeelSeam eventfd_seam = KEEL_SEAM_INIT(KEEL_PATH_EVENTFD, "eventfd", "pipe");
#endif

int keel_event_notifier_init(KeelEventNotifier *e, bool active)
{
    int fds[2];
    int ret;

    e->rfd = e->wfd = -1;
    e->is_eventfd = false;
#ifdef HAVE_EVENTFD
    if (keel_seam_use_primary(&eventfd_seam)) {
        int fd = eventfd(active ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (fd >= 0) {
            e->rfd = e->wfd = fd;
            e->is_eventfd = true;
            return 0;
        }
        /* ENOSYS: no eventfd2 (< 2.6.27) or seccomp; EINVAL: flags unknown. */
        if (errno != ENOSYS && errno != EINVAL) {
            return -errno;
        }
        keel_seam_primary_failed(&eventfd_seam, errno);
    }
#endif
    ret = keel_pipe2(fds, O_CLOEXEC | O_NONBLOCK);
    if (ret < 0) {
        return ret;
    }
    e->rfd = fds[0];
    e->wfd = fds[1];
    if (active) {
        keel_event_notifier_set(e);
    }
    return 0;
}

void keel_event_notifier_cleanup(KeelEventNotifier *e)
{
    if (e->rfd >= 0) {
        close(e->rfd);
    }
    if (e->wfd >= 0 && e->wfd != e->rfd) {
        close(e->wfd);
    }
    e->rfd = e->wfd = -1;
}

int keel_event_notifier_set(KeelEventNotifier *e)
{
    static const uint64_t one = 1;
    ssize_t n;

    /* An eventfd takes an 8-byte add; a pipe takes any byte.  EAGAIN means
     * the counter or the pipe is full, which already reads as "set". */
    do {
        n = write(e->wfd, &one, e->is_eventfd ? sizeof(one) : 1);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN) {
        return -errno;
    }
    return 0;
}

bool keel_event_notifier_test_and_clear(KeelEventNotifier *e)
{
    char buf[512];
    bool was_set = false;
    ssize_t n;

    if (e->is_eventfd) {
        uint64_t value;
        n = KEEL_RETRY_EINTR(read(e->rfd, &value, sizeof(value)));
        return n == (ssize_t)sizeof(value);
    }
    /* Drain the pipe: several setters may each have written a byte. */
    for (;;) {
        n = read(e->rfd, buf, sizeof(buf));
        if (n > 0) {
            was_set = true;
            if ((size_t)n < sizeof(buf)) {
                break;
            }
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            break;
        }
    }
    return was_set;
}

const char *keel_event_notifier_backend(const char **reason)
{
#ifdef HAVE_EVENTFD
    if (keel_seam_use_primary(&eventfd_seam)) {
        KeelEventNotifier probe;
        if (keel_event_notifier_init(&probe, false) == 0) {
            keel_event_notifier_cleanup(&probe);
        }
    }
    return keel_seam_active(&eventfd_seam, reason);
#else
    if (reason) {
        *reason = "not-compiled";
    }
    return "pipe";
#endif
}

const KeelFeature compat_event_notifier_feature = {
    .name = "event-notifier",
#ifdef HAVE_EVENTFD
    .compiled = "eventfd,pipe",
#else
    .compiled = "pipe",
#endif
    .active = keel_event_notifier_backend,
};
