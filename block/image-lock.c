/*
 * QEMU-compatible image locking: one-byte read locks on the permission and
 * shared-permission bytes (layout and rules in block/image-lock.h).
 */
#include "config.h"

#include "block/image-lock.h"
#include "compat/avoid.h"
#include "compat/features.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef F_OFD_GETLK
#define F_OFD_GETLK 36          /* Linux 3.15+; the kernel says EINVAL when older */
#define F_OFD_SETLK 37
#endif

static KeelSeam ofd_seam = KEEL_SEAM_INIT(KEEL_PATH_OFD_LOCKS, "ofd", "posix");

static const char *const perm_names[] = {
    "consistent read", "write", "write unchanged", "resize", "change children",
};

/* Locks this process holds, for conflicts POSIX locks cannot see (and for
 * a clearer same-process message in either mode).  Under registry_lock. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static GSList *registry;

void image_lock_perms(bool write, bool resize, bool force_share, unsigned *perm,
                      unsigned *shared)
{
    *perm = IMAGE_PERM_CONSISTENT_READ | (write ? IMAGE_PERM_WRITE : 0) |
            (resize ? IMAGE_PERM_RESIZE : 0);
    if (force_share) {
        *shared = IMAGE_PERM_ALL;
        return;
    }
    /* What QEMU's block devices share without share-rw=on: everything but
     * write (and resize while we resize). */
    *shared = IMAGE_PERM_ALL & ~IMAGE_PERM_WRITE & ~(resize ? IMAGE_PERM_RESIZE : 0);
}

static void posix_caveat_once(void)
{
    static int warned;

    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_SEQ_CST)) {
        fprintf(stderr, "keel: File lock requested but OFD locking syscall is unavailable, "
                "falling back to POSIX file locks.\n"
                "keel: Due to the implementation, locks can be lost unexpectedly.\n");
    }
}

/* One byte at @off; l_pid 0, as OFD locks require. */
static struct flock one_byte(int off, short type)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = 1;
    return fl;
}

/* Whether OFD locks work on @fd (probing once per process). */
static bool use_ofd(int fd)
{
    struct flock fl = one_byte(IMAGE_LOCK_PERM_BASE, F_RDLCK);

    if (!keel_seam_use_primary(&ofd_seam)) {
        return false;
    }
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0 && errno == EINVAL) {
        keel_seam_primary_failed(&ofd_seam, EINVAL);
        return false;
    }
    return true;
}

static int lock_byte(int fd, bool posix, int off, short type)
{
    struct flock fl = one_byte(off, type);

    return fcntl(fd, posix ? F_SETLK : F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* True when another holder has byte @off (a would-be write lock conflicts). */
static int byte_taken(int fd, bool posix, int off)
{
    struct flock fl = one_byte(off, F_WRLCK);

    if (fcntl(fd, posix ? F_GETLK : F_OFD_GETLK, &fl) < 0) {
        return -errno;
    }
    return fl.l_type != F_UNLCK;
}

static void unlock_all(int fd, bool posix)
{
    for (int i = 0; i < 5; i++) {
        lock_byte(fd, posix, IMAGE_LOCK_PERM_BASE + i, F_UNLCK);
        lock_byte(fd, posix, IMAGE_LOCK_SHARED_BASE + i, F_UNLCK);
    }
}

static char *conflict_message(const char *filename, bool shared, int bit)
{
    return g_strdup_printf("Failed to get %s\"%s\" lock\n"
                           "Is another process using the image [%s]?",
                           shared ? "shared " : "", perm_names[bit], filename);
}

/* The same rules against the locks this process holds on (dev, ino). */
static char *registry_conflict(const ImageLock *want, const char *filename)
{
    for (GSList *l = registry; l; l = l->next) {
        const ImageLock *h = l->data;
        if (h->dev != want->dev || h->ino != want->ino) {
            continue;
        }
        for (int i = 0; i < 5; i++) {
            unsigned bit = 1u << i;
            if ((want->perm & bit) && !(h->shared & bit)) {
                return conflict_message(filename, false, i);
            }
            if (!(want->shared & bit) && (h->perm & bit)) {
                return conflict_message(filename, true, i);
            }
        }
    }
    return NULL;
}

int image_lock_acquire(ImageLock *lock, int fd, const char *filename, unsigned perm,
                       unsigned shared, char **errmsg)
{
    struct stat st;
    char *msg;
    int ret = 0;

    memset(lock, 0, sizeof(*lock));
    lock->fd = -1;
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        *errmsg = g_strdup_printf("Could not stat '%s': %s", filename, g_strerror(errno));
        return ret;
    }
    lock->dev = st.st_dev;
    lock->ino = st.st_ino;
    lock->perm = perm;
    lock->shared = shared;
    lock->posix = !use_ofd(fd);
    if (lock->posix) {
        posix_caveat_once();
    }

    pthread_mutex_lock(&registry_lock);
    msg = registry_conflict(lock, filename);
    if (msg) {
        pthread_mutex_unlock(&registry_lock);
        *errmsg = msg;
        return -EAGAIN;
    }
    /* Lock first, then look: of two racing openers at least one sees the
     * other (QEMU's order, raw_handle_perm_lock). */
    for (int i = 0; i < 5 && ret == 0; i++) {
        unsigned bit = 1u << i;
        if (perm & bit) {
            ret = lock_byte(fd, lock->posix, IMAGE_LOCK_PERM_BASE + i, F_RDLCK);
        }
        if (ret == 0 && !(shared & bit)) {
            ret = lock_byte(fd, lock->posix, IMAGE_LOCK_SHARED_BASE + i, F_RDLCK);
        }
        if (ret < 0) {
            *errmsg = g_strdup_printf("Failed to lock byte %d of '%s': %s (file.locking=off "
                                      "if the file system cannot lock)",
                                      (perm & bit) ? IMAGE_LOCK_PERM_BASE + i
                                                   : IMAGE_LOCK_SHARED_BASE + i,
                                      filename, g_strerror(-ret));
        }
    }
    for (int i = 0; i < 5 && ret == 0; i++) {
        unsigned bit = 1u << i;
        int taken = 0;
        if (perm & bit) {
            taken = byte_taken(fd, lock->posix, IMAGE_LOCK_SHARED_BASE + i);
            if (taken > 0) {
                *errmsg = conflict_message(filename, false, i);
                ret = -EAGAIN;
                break;
            }
        }
        if (taken == 0 && !(shared & bit)) {
            taken = byte_taken(fd, lock->posix, IMAGE_LOCK_PERM_BASE + i);
            if (taken > 0) {
                *errmsg = conflict_message(filename, true, i);
                ret = -EAGAIN;
                break;
            }
        }
        if (taken < 0) {
            *errmsg = g_strdup_printf("Failed to check the locks of '%s': %s", filename,
                                      g_strerror(-taken));
            ret = taken;
        }
    }
    if (ret < 0) {
        unlock_all(fd, lock->posix);
        pthread_mutex_unlock(&registry_lock);
        return ret;
    }
    lock->fd = fd;
    registry = g_slist_prepend(registry, lock);
    pthread_mutex_unlock(&registry_lock);
    return 0;
}

void image_lock_release(ImageLock *lock)
{
    if (lock->fd < 0) {
        return;
    }
    pthread_mutex_lock(&registry_lock);
    registry = g_slist_remove(registry, lock);
    unlock_all(lock->fd, lock->posix);
    pthread_mutex_unlock(&registry_lock);
    lock->fd = -1;
}

const char *image_lock_mode(const char **reason)
{
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        use_ofd(fd);
        close(fd);
    }
    return keel_seam_active(&ofd_seam, reason);
}

static const KeelFeature image_lock_feature = {
    .name = "image-locks",
    /* Without HAVE_OFD_LOCKS (old headers) the Linux numbers above are
     * used, and an old kernel's EINVAL selects POSIX locks at run time. */
    .compiled = "ofd,posix",
    .active = image_lock_mode,
};

void image_lock_features_register(void)
{
    keel_feature_register(&image_lock_feature);
}
