/*
 * KEEL_AVOID parsing and the per-seam run-time fallback state.
 */
#include "config.h"

#include "compat/avoid.h"
#include "compat/osdep.h"

#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const path_names[KEEL_PATH__MAX] = {
    [KEEL_PATH_EVENTFD] = "eventfd",
    [KEEL_PATH_SIGNALFD] = "signalfd",
    [KEEL_PATH_PPOLL] = "ppoll",
    [KEEL_PATH_PIPE2] = "pipe2",
    [KEEL_PATH_UCONTEXT] = "ucontext",
    [KEEL_PATH_IO_URING] = "io_uring",
    [KEEL_PATH_LINUX_AIO] = "linux-aio",
    [KEEL_PATH_PREADV] = "preadv",
    [KEEL_PATH_IOEVENTFD] = "ioeventfd",
    [KEEL_PATH_IRQFD] = "irqfd",
    [KEEL_PATH_SIGNAL_MSI] = "signal-msi",
    [KEEL_PATH_MSIX] = "msix",
    [KEEL_PATH_EPOLL] = "epoll",
    [KEEL_PATH_MEMFD] = "memfd",
    [KEEL_PATH_OFD_LOCKS] = "ofd-locks",
};

/* Bit i set = path i avoided.  Written once under avoid_once (or by the
 * test-only reparse), read lock-free afterwards. */
static unsigned avoid_mask;
static const char *avoid_error;
static pthread_once_t avoid_once = PTHREAD_ONCE_INIT;
static bool avoid_reported;         /* the unknown words were logged */

const char *keel_path_name(KeelPath path)
{
    return (unsigned)path < KEEL_PATH__MAX ? path_names[path] : "?";
}

/* Words are separated by commas; blanks around a word are ignored.  Every
 * known word goes into *@mask even when others are unknown, so a caller that
 * goes on (the library) honours what it understood. */
static int parse_list(const char *list, unsigned *mask, const char **error)
{
    static char msg[512];
    const char *p = list;
    int n = 0, unknown = 0;

    *mask = 0;
    while (p && *p) {
        const char *end = strchr(p, ',');
        const char *word_end = end ? end : p + strlen(p);
        size_t len;
        int found = -1;

        while (p < word_end && g_ascii_isspace(*p)) {
            p++;
        }
        while (word_end > p && g_ascii_isspace(word_end[-1])) {
            word_end--;
        }
        len = (size_t)(word_end - p);
        for (int i = 0; i < KEEL_PATH__MAX && len; i++) {
            if (strlen(path_names[i]) == len && !strncmp(p, path_names[i], len)) {
                found = i;
                break;
            }
        }
        if (found >= 0) {
            *mask |= 1u << found;
        } else if (len && n >= 0 && (size_t)n < sizeof(msg)) {
            n += snprintf(msg + n, sizeof(msg) - n, "%s'%.*s'",
                          unknown ? ", " : "KEEL_AVOID: unknown word ",
                          (int)(len > 64 ? 64 : len), p);
            unknown++;
        }
        p = end ? end + 1 : NULL;
    }
    if (!unknown) {
        return 0;
    }
    if (n > 0 && (size_t)n < sizeof(msg)) {
        n += snprintf(msg + n, sizeof(msg) - n, " (known:");
    }
    for (int i = 0; i < KEEL_PATH__MAX && n > 0 && (size_t)n < sizeof(msg); i++) {
        n += snprintf(msg + n, sizeof(msg) - n, " %s", path_names[i]);
    }
    if (n > 0 && (size_t)n < sizeof(msg) - 1) {
        snprintf(msg + n, sizeof(msg) - n, ")");
    }
    *error = msg;
    return -1;
}

static void avoid_parse_env(void)
{
    unsigned mask;

    /* The known words count even when another is unknown. */
    parse_list(getenv("KEEL_AVOID"), &mask, &avoid_error);
    __atomic_store_n(&avoid_mask, mask, __ATOMIC_RELEASE);
}

int keel_avoid_init(const char **error)
{
    pthread_once(&avoid_once, avoid_parse_env);
    if (avoid_error) {
        if (error) {
            *error = avoid_error;
        }
        return -1;
    }
    return 0;
}

int keel_avoid_parse_for_testing(const char *list, const char **error)
{
    unsigned mask;
    int ret;

    pthread_once(&avoid_once, avoid_parse_env);
    ret = parse_list(list, &mask, error);
    avoid_error = ret < 0 ? *error : NULL;
    __atomic_store_n(&avoid_mask, mask, __ATOMIC_RELEASE);
    __atomic_store_n(&avoid_reported, false, __ATOMIC_RELEASE);
    return ret;
}

bool keel_avoid(KeelPath path)
{
    const char *error;

    if (keel_avoid_init(&error) < 0 &&
        !__atomic_exchange_n(&avoid_reported, true, __ATOMIC_ACQ_REL)) {
        /* A library must not end its host over a setting: say it once and
         * go on with the words it knows.  Programs call keel_avoid_init()
         * first and exit 1 instead. */
        keel_log("%s; ignored", error);
    }
    return __atomic_load_n(&avoid_mask, __ATOMIC_ACQUIRE) & (1u << path);
}

bool keel_errno_means_unsupported(int err)
{
    return err == ENOSYS || err == EINVAL || err == EPERM || err == EOPNOTSUPP ||
           err == ENOTTY || err == EACCES;
}

bool keel_seam_use_primary(KeelSeam *seam)
{
    return !keel_avoid(seam->path) &&
           __atomic_load_n(&seam->failed_errno, __ATOMIC_ACQUIRE) == 0;
}

void keel_seam_primary_failed(KeelSeam *seam, int err)
{
    int expected = 0;

    if (err <= 0) {
        err = EINVAL;
    }
    /* Only the first failure logs, so a busy path does not spam stderr. */
    if (__atomic_compare_exchange_n(&seam->failed_errno, &expected, err, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        keel_log("%s unavailable (%s), using %s", seam->primary,
                 keel_errno_name(err), seam->fallback);
    }
}

const char *keel_seam_active(KeelSeam *seam, const char **reason)
{
    int err = __atomic_load_n(&seam->failed_errno, __ATOMIC_ACQUIRE);
    const char *why = "default";
    const char *active = seam->primary;

    if (keel_avoid(seam->path)) {
        why = "KEEL_AVOID";
        active = seam->fallback;
    } else if (err) {
        why = keel_errno_name(err);
        active = seam->fallback;
    }
    if (reason) {
        *reason = why;
    }
    return active;
}
