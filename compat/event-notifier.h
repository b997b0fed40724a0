/*
 * compat/event-notifier.h — a level-triggered wake-up flag behind an fd.
 *
 * Backed by an eventfd (non-blocking, close-on-exec), or by a pipe pair when
 * eventfd is not compiled in, refused by the kernel (ENOSYS/EINVAL: the seam
 * falls back once and stays there) or avoided with KEEL_AVOID=eventfd.
 *
 * Thread rules: keel_event_notifier_set() may be called from any thread and
 * from signal handlers; it never blocks (a full pipe already means "set").
 * init/cleanup/test_and_clear belong to the owner (one thread at a time).
 */
#ifndef KEEL_COMPAT_EVENT_NOTIFIER_H
#define KEEL_COMPAT_EVENT_NOTIFIER_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct KeelEventNotifier {
    int rfd;            /* poll this for POLLIN */
    int wfd;            /* == rfd for an eventfd */
    bool is_eventfd;
} KeelEventNotifier;

/* Returns 0 or -errno.  @active: start in the set state. */
int keel_event_notifier_init(KeelEventNotifier *e, bool active);
void keel_event_notifier_cleanup(KeelEventNotifier *e);

/* Set the notifier (idempotent until cleared).  Returns 0 or -errno. */
int keel_event_notifier_set(KeelEventNotifier *e);

/* Return whether it was set, and clear it. */
bool keel_event_notifier_test_and_clear(KeelEventNotifier *e);

static inline int keel_event_notifier_get_fd(const KeelEventNotifier *e)
{
    return e->rfd;
}

/* The fd that sets the notifier when written (8 bytes for an eventfd). */
static inline int keel_event_notifier_get_wfd(const KeelEventNotifier *e)
{
    return e->wfd;
}

/* KVM's ioeventfd and irqfd need a real eventfd; this says whether we have one. */
static inline bool keel_event_notifier_is_eventfd(const KeelEventNotifier *e)
{
    return e->is_eventfd;
}

/* "eventfd" or "pipe": what a notifier created now would use. */
const char *keel_event_notifier_backend(const char **reason);

#ifdef __cplusplus
}
#endif

#endif
