/*
 * CoQueue and CoMutex.  Waiters are linked through KeelCoroutine.next
 * (a coroutine waits for one thing at a time), so neither needs memory.
 */
#include "config.h"

#include "coroutine/co-lock.h"
#include "coroutine/coroutine-int.h"

#include <sched.h>
#include <string.h>

/* ---- the spinlock inside KeelCoMutex --------------------------------------
 * Held for a handful of instructions, never across a switch or a syscall.
 * Spinning gives way to sched_yield() quickly: with more threads than CPUs
 * the holder may have been preempted. */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void spin_lock(int *spin)
{
    unsigned tries = 0;

    while (__atomic_exchange_n(spin, 1, __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(spin, __ATOMIC_RELAXED)) {
            if (++tries < 64) {
                cpu_relax();
            } else {
                sched_yield();
            }
        }
    }
}

static void spin_unlock(int *spin)
{
    __atomic_store_n(spin, 0, __ATOMIC_RELEASE);
}

static KeelCoroutine *self_or_die(const char *who)
{
    KeelCoroutine *self = keel_coroutine_self();

    if (!self) {
        coroutine_fatal("%s called outside a coroutine", who);
    }
    return self;
}

/* ---- KeelCoQueue ----------------------------------------------------------- */

void keel_co_queue_init(KeelCoQueue *queue)
{
    queue->head = queue->tail = NULL;
}

void keel_co_queue_wait(KeelCoQueue *queue, KeelCoMutex *mutex)
{
    KeelCoroutine *self = self_or_die("keel_co_queue_wait");

    self->next = NULL;
    if (queue->tail) {
        queue->tail->next = self;
    } else {
        queue->head = self;
    }
    queue->tail = self;

    /* A waker in another thread may pop us as soon as the mutex is free,
     * before we have yielded: its wake-up goes through a bottom half of our
     * home context, which cannot run until we yield (we are running in
     * that thread).  In our own thread wake-ups are deferred likewise. */
    if (mutex) {
        keel_co_mutex_unlock(mutex);
    }
    keel_coroutine_yield();
    if (mutex) {
        keel_co_mutex_lock(mutex);
    }
}

bool keel_co_queue_next(KeelCoQueue *queue)
{
    KeelCoroutine *co = queue->head;

    if (!co) {
        return false;
    }
    queue->head = co->next;
    if (!queue->head) {
        queue->tail = NULL;
    }
    co->next = NULL;
    keel_aio_co_wake(co);
    return true;
}

void keel_co_queue_restart_all(KeelCoQueue *queue)
{
    /* Detach first: a waiter entered inline (caller outside a coroutine)
     * may wait on this queue again, and must not be woken twice. */
    KeelCoroutine *list = queue->head;

    queue->head = queue->tail = NULL;
    while (list) {
        KeelCoroutine *co = list;

        list = co->next;
        co->next = NULL;
        keel_aio_co_wake(co);
    }
}

bool keel_co_queue_empty(const KeelCoQueue *queue)
{
    return queue->head == NULL;
}

/* ---- KeelCoMutex ----------------------------------------------------------- */

void keel_co_mutex_init(KeelCoMutex *mutex)
{
    mutex->spin = 0;
    mutex->locked = false;
    mutex->holder = NULL;
    mutex->waiters_head = mutex->waiters_tail = NULL;
}

void keel_co_mutex_lock(KeelCoMutex *mutex)
{
    KeelCoroutine *self = self_or_die("keel_co_mutex_lock");

    spin_lock(&mutex->spin);
    if (!mutex->locked) {
        mutex->locked = true;
        mutex->holder = self;
        spin_unlock(&mutex->spin);
        return;
    }
    if (mutex->holder == self) {
        spin_unlock(&mutex->spin);
        coroutine_fatal("keel_co_mutex_lock: coroutine %p already holds mutex %p "
                        "(CoMutex is not recursive)", (void *)self, (void *)mutex);
    }
    self->next = NULL;
    if (mutex->waiters_tail) {
        mutex->waiters_tail->next = self;
    } else {
        mutex->waiters_head = self;
    }
    mutex->waiters_tail = self;
    spin_unlock(&mutex->spin);

    /* Woken only by unlock, which made us the holder first (see the
     * comment in keel_co_queue_wait on waking before we yielded). */
    keel_coroutine_yield();
}

void keel_co_mutex_unlock(KeelCoMutex *mutex)
{
    KeelCoroutine *self = self_or_die("keel_co_mutex_unlock");
    KeelCoroutine *next;

    spin_lock(&mutex->spin);
    if (!mutex->locked || mutex->holder != self) {
        bool locked = mutex->locked;
        spin_unlock(&mutex->spin);
        coroutine_fatal("keel_co_mutex_unlock: mutex %p is %s", (void *)mutex,
                        locked ? "held by another coroutine" : "not locked");
    }
    next = mutex->waiters_head;
    if (next) {
        mutex->waiters_head = next->next;
        if (!mutex->waiters_head) {
            mutex->waiters_tail = NULL;
        }
        next->next = NULL;
        mutex->holder = next;           /* hand-off: stays locked */
    } else {
        mutex->locked = false;
        mutex->holder = NULL;
    }
    spin_unlock(&mutex->spin);
    if (next) {
        keel_aio_co_wake(next);
    }
}

/* ---- readers-writer lock ---------------------------------------------------- */

/* One waiter, on its own stack while it waits. */
struct KeelCoRwTicket {
    bool want_write;
    KeelCoroutine *co;
    KeelCoRwTicket *next;
};

void keel_co_rwlock_init(KeelCoRwlock *lock)
{
    memset(lock, 0, sizeof(*lock));
}

static void rw_enqueue(KeelCoRwlock *lock, KeelCoRwTicket *t)
{
    t->next = NULL;
    if (lock->tickets_tail) {
        lock->tickets_tail->next = t;
    } else {
        lock->tickets_head = t;
    }
    lock->tickets_tail = t;
}

/* Called with lock->mutex held; releases it.  Hands the lock to the head
 * waiter if it can have it now; ownership is taken on its behalf here, so
 * nobody can slip in between this unlock and its wake-up. */
static void rw_wake_head_and_unlock(KeelCoRwlock *lock)
{
    KeelCoRwTicket *t = lock->tickets_head;
    KeelCoroutine *co = NULL;

    if (t && !t->want_write && lock->owners >= 0) {
        lock->owners++;
        co = t->co;
    } else if (t && t->want_write && lock->owners == 0) {
        lock->owners = -1;
        co = t->co;
    }
    if (co) {
        lock->tickets_head = t->next;
        if (!lock->tickets_head) {
            lock->tickets_tail = NULL;
        }
    }
    keel_co_mutex_unlock(&lock->mutex);
    if (co) {
        keel_aio_co_wake(co);
    }
}

/* Queue the caller (lock->mutex held), release the mutex and wait until a
 * waker has given it the lock. */
static void rw_wait(KeelCoRwlock *lock, bool want_write, bool wake_head_first)
{
    KeelCoRwTicket t = { .want_write = want_write, .co = keel_coroutine_self() };

    rw_enqueue(lock, &t);
    if (wake_head_first) {
        rw_wake_head_and_unlock(lock);
    } else {
        keel_co_mutex_unlock(&lock->mutex);
    }
    keel_coroutine_yield();
}

void keel_co_rwlock_rdlock(KeelCoRwlock *lock)
{
    keel_co_mutex_lock(&lock->mutex);
    /* Readers share, but never overtake a waiter (writers would starve). */
    if (lock->owners >= 0 && !lock->tickets_head) {
        lock->owners++;
        keel_co_mutex_unlock(&lock->mutex);
        return;
    }
    rw_wait(lock, false, false);
    /* A reader was let in: the next reader in line may come too. */
    keel_co_mutex_lock(&lock->mutex);
    rw_wake_head_and_unlock(lock);
}

void keel_co_rwlock_wrlock(KeelCoRwlock *lock)
{
    keel_co_mutex_lock(&lock->mutex);
    if (lock->owners == 0 && !lock->tickets_head) {
        lock->owners = -1;
        keel_co_mutex_unlock(&lock->mutex);
        return;
    }
    rw_wait(lock, true, false);
}

void keel_co_rwlock_upgrade(KeelCoRwlock *lock)
{
    keel_co_mutex_lock(&lock->mutex);
    if (lock->owners <= 0) {
        coroutine_fatal("keel_co_rwlock_upgrade: the caller holds no read lock");
    }
    if (lock->owners == 1 && !lock->tickets_head) {
        lock->owners = -1;
        keel_co_mutex_unlock(&lock->mutex);
        return;
    }
    /* Give up the read lock and queue as a writer; the head of the queue
     * (maybe a writer that was waiting for us) may go now. */
    lock->owners--;
    rw_wait(lock, true, true);
}

void keel_co_rwlock_downgrade(KeelCoRwlock *lock)
{
    keel_co_mutex_lock(&lock->mutex);
    if (lock->owners != -1) {
        coroutine_fatal("keel_co_rwlock_downgrade: the caller holds no write lock");
    }
    lock->owners = 1;
    rw_wake_head_and_unlock(lock);
}

void keel_co_rwlock_unlock(KeelCoRwlock *lock)
{
    keel_co_mutex_lock(&lock->mutex);
    if (lock->owners > 0) {
        lock->owners--;
    } else if (lock->owners == -1) {
        lock->owners = 0;
    } else {
        coroutine_fatal("keel_co_rwlock_unlock: the lock is not held");
    }
    rw_wake_head_and_unlock(lock);
}
