/*
 * CoQueue and CoMutex.  Waiters are linked through KeelCoroutine.next
 * (a coroutine waits for one thing at a time), so neither needs memory.
 */
#include "config.h"

#include "coroutine/co-lock.h"
#include "coroutine/coroutine-int.h"

#include <sched.h>

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
