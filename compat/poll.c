/*
 * poll with a nanosecond timeout: ppoll, or g_poll with ms rounded up.
 */
#include "config.h"

#include "compat/poll.h"
#include "compat/avoid.h"
#include "compat/compat-int.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <time.h>

#ifdef HAVE_PPOLL
static KeelSeam ppoll_seam = KEEL_SEAM_INIT(KEEL_PATH_PPOLL, "ppoll", "g_poll");
#endif

int keel_poll_timeout_ms(int64_t timeout_ns)
{
    int64_t ms;

    if (timeout_ns < 0) {
        return -1;
    }
    /* Round up: waking before the deadline would make the caller spin. */
    ms = timeout_ns / 1000000 + (timeout_ns % 1000000 ? 1 : 0);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

int keel_poll_ns(GPollFD *fds, unsigned nfds, int64_t timeout_ns)
{
#ifdef HAVE_PPOLL
    if (keel_seam_use_primary(&ppoll_seam)) {
        struct timespec ts, *tsp = NULL;
        int ret;

        /* GPollFD and struct pollfd have the same layout on Linux (glib
         * checks this at its own build time). */
        G_STATIC_ASSERT(sizeof(GPollFD) == sizeof(struct pollfd));
        if (timeout_ns >= 0) {
            /* Clamp to a year-scale bound that cannot overflow time_t math
             * in the kernel; callers loop anyway. */
            const int64_t max_ns = (int64_t)INT_MAX * 1000000000LL;
            if (timeout_ns > max_ns) {
                timeout_ns = max_ns;
            }
            ts.tv_sec = timeout_ns / 1000000000LL;
            ts.tv_nsec = timeout_ns % 1000000000LL;
            tsp = &ts;
        }
        ret = ppoll((struct pollfd *)fds, nfds, tsp, NULL);
        if (ret >= 0 || errno != ENOSYS) {
            return ret;
        }
        keel_seam_primary_failed(&ppoll_seam, ENOSYS);
    }
#endif
    return g_poll(fds, nfds, keel_poll_timeout_ms(timeout_ns));
}

const char *keel_poll_backend(const char **reason)
{
#ifdef HAVE_PPOLL
    if (keel_seam_use_primary(&ppoll_seam)) {
        keel_poll_ns(NULL, 0, 0);   /* probe: a zero timeout never sleeps */
    }
    return keel_seam_active(&ppoll_seam, reason);
#else
    if (reason) {
        *reason = "not-compiled";
    }
    return "g_poll";
#endif
}

const KeelFeature compat_poll_feature = {
    .name = "poll",
#ifdef HAVE_PPOLL
    .compiled = "ppoll,g_poll",
#else
    .compiled = "g_poll",
#endif
    .active = keel_poll_backend,
};
