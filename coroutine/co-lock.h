/*
 * coroutine/co-lock.h — coroutine wait queues and mutexes.
 *
 * KeelCoQueue: a FIFO of suspended coroutines.  A coroutine waits on it;
 * someone else restarts the first one (or all).  A restarted coroutine is
 * woken with keel_aio_co_wake(): it resumes in its own home AioContext,
 * after the restarting coroutine yields when both live in the same thread,
 * through a bottom half when they do not.  The queue itself has no lock:
 * all operations on one queue must be serialised by the caller — either by
 * using it from one thread only, or by holding a KeelCoMutex, which
 * keel_co_queue_wait() drops while waiting and takes back before returning.
 *
 * KeelCoMutex: a mutex for coroutines that may run in different threads.
 * Contended lockers suspend (the thread goes on running other work) and are
 * served strictly first come, first served: unlock hands ownership directly
 * to the oldest waiter, so a newcomer can never overtake it.  The waiter
 * resumes in its own AioContext — never inline in the unlocker's thread.
 * A small internal spinlock guards the state for a few instructions; no
 * thread ever blocks while holding it.  Not recursive; unlock must come from
 * the holder.  A coroutine may yield, sleep or move to another thread while
 * holding the mutex.
 *
 * KeelCoRwlock: a readers-writer lock for coroutines (QEMU's CoRwlock).
 * Many readers or one writer.  Fair: a coroutine that has to wait queues in
 * one FIFO with every other waiter, and a reader arriving while anyone
 * waits queues behind them (so a waiting writer is not starved by a stream
 * of readers).  When the lock frees up the head of the queue gets it; a
 * reader that gets it lets the reader behind it in too, up to the next
 * writer.  upgrade turns the caller's read lock into the write lock: at
 * once if it is the only reader and nobody waits, else it gives up its read
 * lock and queues as a writer behind the waiters already there (a writer
 * waiting before the upgrade goes first).  downgrade turns the write lock
 * into a read lock and lets in the readers at the head of the queue.  A
 * woken waiter resumes in its own AioContext, as with KeelCoMutex.
 *
 * Neither type owns memory: they may be embedded anywhere and need no
 * destruction (a mutex or queue must have no waiters when its memory goes).
 *
 * Thread rules: wait/lock/unlock are coroutine-only (they abort otherwise);
 * next/restart_all/empty may be called outside coroutines too, from any
 * thread that the serialisation rule above allows.
 */
#ifndef KEEL_COROUTINE_CO_LOCK_H
#define KEEL_COROUTINE_CO_LOCK_H

#include <stdbool.h>

#include "coroutine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct KeelCoMutex {
    int spin;                           /* internal: guards the fields below */
    bool locked;
    KeelCoroutine *holder;
    KeelCoroutine *waiters_head, *waiters_tail;
} KeelCoMutex;

typedef struct KeelCoQueue {
    KeelCoroutine *head, *tail;
} KeelCoQueue;

typedef struct KeelCoRwTicket KeelCoRwTicket;
typedef struct KeelCoRwlock {
    KeelCoMutex mutex;                  /* internal: guards the fields below */
    int owners;                         /* readers holding it, -1: a writer */
    KeelCoRwTicket *tickets_head, *tickets_tail;   /* waiters, FIFO */
} KeelCoRwlock;

/* All-zero is a valid unlocked mutex / empty queue / unlocked rwlock. */
#define KEEL_CO_MUTEX_INITIALIZER { 0 }
#define KEEL_CO_QUEUE_INITIALIZER { 0 }
#define KEEL_CO_RWLOCK_INITIALIZER { KEEL_CO_MUTEX_INITIALIZER, 0, 0, 0 }

void keel_co_queue_init(KeelCoQueue *queue);

/* Suspend the current coroutine at the tail of @queue until restarted.  If
 * @mutex is not NULL it must be held; it is released while waiting and
 * re-acquired before returning.  Coroutine only. */
void keel_co_queue_wait(KeelCoQueue *queue, KeelCoMutex *mutex);

/* Wake the first waiter; false if there was none. */
bool keel_co_queue_next(KeelCoQueue *queue);

/* Wake every coroutine waiting now (not those that start waiting while
 * they are being woken). */
void keel_co_queue_restart_all(KeelCoQueue *queue);

bool keel_co_queue_empty(const KeelCoQueue *queue);

void keel_co_mutex_init(KeelCoMutex *mutex);

/* Take @mutex, suspending (FIFO) while another coroutine holds it.
 * Aborts on recursive locking.  Coroutine only. */
void keel_co_mutex_lock(KeelCoMutex *mutex);

/* Release @mutex, handing it to the oldest waiter if any.  Aborts unless
 * the calling coroutine holds it.  Coroutine only. */
void keel_co_mutex_unlock(KeelCoMutex *mutex);

void keel_co_rwlock_init(KeelCoRwlock *lock);
/* Take @lock for reading / for writing; coroutine only. */
void keel_co_rwlock_rdlock(KeelCoRwlock *lock);
void keel_co_rwlock_wrlock(KeelCoRwlock *lock);
/* The caller holds a read lock; returns holding the write lock. */
void keel_co_rwlock_upgrade(KeelCoRwlock *lock);
/* The caller holds the write lock; returns holding a read lock (no wait). */
void keel_co_rwlock_downgrade(KeelCoRwlock *lock);
/* Release a read or the write lock. */
void keel_co_rwlock_unlock(KeelCoRwlock *lock);

#ifdef __cplusplus
}
#endif

#endif
