/*
 * block/image-lock.h — image locking that interoperates with QEMU.
 *
 * QEMU's file-posix driver (block/file-posix.c: RAW_LOCK_PERM_BASE 100,
 * RAW_LOCK_SHARED_BASE 200, raw_apply_lock_bytes / raw_check_lock_bytes)
 * describes what an open image does with one-byte read locks:
 *
 *   byte 100 + i   held: "I use permission i"
 *   byte 200 + i   held: "I do not let others use permission i"
 *
 * with i the bit number of the permission (include/block/block-common.h):
 *   0 consistent-read   1 write   2 write-unchanged   3 resize
 *   4 graph-mod (gone from QEMU 6.2+, still honoured when someone holds it)
 *
 * Every lock is a shared (F_RDLCK) lock; a conflict is found with a
 * would-be exclusive lock test (F_OFD_GETLK with F_WRLCK).  Opening with
 * permissions PERM sharing SHARED is: lock the bytes (100 + each bit of
 * PERM, 200 + each bit not in SHARED), then check that nobody else holds
 * 200 + a bit of PERM ("Failed to get \"write\" lock") or 100 + a bit
 * outside SHARED ("Failed to get shared \"write\" lock"), the message
 * followed, as in QEMU, by "Is another process using the image [FILE]?".
 * Locking before checking means two racing openers cannot both succeed.
 *
 * What QEMU itself takes (seen in /proc/locks, QEMU 7.2): a read-write
 * -drive holds 100, 101 and 201 (uses read+write, shares everything but
 * write); readonly=on holds 100 and 201; qemu-io -r holds 100 only.
 * image_lock_perms() gives keel the same sets.
 *
 * The locks are open-file-description (OFD) locks, so they belong to the
 * descriptor, are dropped when it is closed, and conflict between two
 * opens of one image in the same process too (one image twice in one
 * keel-vmm is refused like QEMU refuses it).  Without OFD locks (kernels
 * before 3.15, or KEEL_AVOID=ofd-locks) POSIX locks (F_SETLK) are used, with
 * QEMU's caveat printed once: they are per process and dropped when the
 * process closes *any* descriptor of the file.  A process-wide registry of
 * what this process holds covers the same-process case in both modes.
 * The "image-locks" features line reports which is in use.
 *
 * Thread rules: every function is thread-safe (the registry has a mutex).
 */
#ifndef KEEL_BLOCK_IMAGE_LOCK_H
#define KEEL_BLOCK_IMAGE_LOCK_H

#include <stdbool.h>
#include <stdint.h>

#define IMAGE_LOCK_PERM_BASE 100
#define IMAGE_LOCK_SHARED_BASE 200

#define IMAGE_PERM_CONSISTENT_READ 0x01u
#define IMAGE_PERM_WRITE 0x02u
#define IMAGE_PERM_WRITE_UNCHANGED 0x04u
#define IMAGE_PERM_RESIZE 0x08u
#define IMAGE_PERM_GRAPH_MOD 0x10u
#define IMAGE_PERM_ALL 0x1fu

typedef enum KeelBlkLocking {
    KEEL_BLK_LOCKING_AUTO,  /* lock (OFD, else POSIX with a warning) */
    KEEL_BLK_LOCKING_ON,    /* the same; named explicitly */
    KEEL_BLK_LOCKING_OFF,   /* no locks at all */
} KeelBlkLocking;

/* A held lock set: keep it while the descriptor is open. */
typedef struct ImageLock {
    int fd;                 /* not owned; -1 when nothing is held */
    uint64_t dev, ino;
    unsigned perm, shared;
    bool posix;             /* POSIX locks (fallback), not OFD */
} ImageLock;

/* The permissions an open takes: @write (read-write), @resize (keel-img
 * resize), @force_share (qemu-img -U: share everything, read-only).  A
 * reader shares reading and unchanged writes; like QEMU's devices it does
 * not let others write (readers share with readers, not with writers). */
void image_lock_perms(bool write, bool resize, bool force_share, unsigned *perm,
                      unsigned *shared);

/* Lock @fd (the image @filename, for messages) for @perm sharing @shared.
 * Returns 0 (filled @lock), or -errno with a message in *@errmsg (g_free):
 * -EAGAIN for a conflict, in QEMU's words. */
int image_lock_acquire(ImageLock *lock, int fd, const char *filename, unsigned perm,
                       unsigned shared, char **errmsg);
/* Drop what image_lock_acquire took (before closing the descriptor). */
void image_lock_release(ImageLock *lock);

/* "ofd" or "posix", probing the kernel; @reason as keel_seam_active(). */
const char *image_lock_mode(const char **reason);
/* Registers the "image-locks" features line. */
void image_lock_features_register(void);

#endif
