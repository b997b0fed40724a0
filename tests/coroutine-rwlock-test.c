/*
 * KeelCoRwlock, tested like QEMU's test-coroutine rwlock cases: scripted
 * coroutines ("actors") take, upgrade, downgrade and drop the lock and
 * yield at chosen points; the order in which they get it is compared with
 * the expected string.  Also KEEL_AIO_WAIT_WHILE from a coroutine woken by
 * an iothread's keel_aio_wait_kick.
 */
#include "config.h"

#include "coroutine/co-lock.h"
#include "coroutine/coroutine.h"
#include "loop/aio-wait.h"
#include "loop/iothread.h"
#include "compat/atomic.h"
#include "tests/keel-test.h"
#include "tests/loop-test-util.h"

#include <string.h>

static KeelCoRwlock lock;
static char trace[256];

static void note(const char *name, const char *what)
{
    if (trace[0]) {
        g_strlcat(trace, " ", sizeof(trace));
    }
    g_strlcat(trace, name, sizeof(trace));
    g_strlcat(trace, what, sizeof(trace));
}

/* Script letters: r rdlock, w wrlock, u upgrade, d downgrade, x unlock,
 * y yield (the test enters the actor again).  Each lock step is noted as
 * +, ^ (upgraded), v (downgraded), - (unlocked). */
typedef struct Actor {
    const char *name;
    const char *script;
    KeelCoroutine *co;
    bool done;
} Actor;

static void actor_run(void *opaque)
{
    Actor *a = opaque;

    for (const char *p = a->script; *p; p++) {
        switch (*p) {
        case 'r': keel_co_rwlock_rdlock(&lock); note(a->name, "+"); break;
        case 'w': keel_co_rwlock_wrlock(&lock); note(a->name, "+"); break;
        case 'u': keel_co_rwlock_upgrade(&lock); note(a->name, "^"); break;
        case 'd': keel_co_rwlock_downgrade(&lock); note(a->name, "v"); break;
        case 'x': keel_co_rwlock_unlock(&lock); note(a->name, "-"); break;
        case 'y': keel_coroutine_yield(); break;
        }
    }
    a->done = true;
}

static void start(Actor *a)
{
    a->co = keel_coroutine_create(actor_run, a);
    keel_aio_co_enter(keel_current_aio_context(), a->co);
}

static void resume(Actor *a)
{
    keel_aio_co_enter(keel_current_aio_context(), a->co);
}

static void reset(void)
{
    keel_co_rwlock_init(&lock);
    trace[0] = 0;
}

static void test_readers_share(void)
{
    Actor r1 = { "R1", "ryx" }, r2 = { "R2", "ryx" };

    reset();
    start(&r1);
    start(&r2);
    resume(&r1);
    resume(&r2);
    KEEL_OK(!strcmp(trace, "R1+ R2+ R1- R2-"), "rwlock: readers share it (%s)", trace);
    KEEL_OK(r1.done && r2.done && lock.owners == 0, "rwlock: ...and free it");
}

static void test_writer_fairness(void)
{
    Actor r1 = { "R1", "ryx" }, w = { "W", "wyx" }, r2 = { "R2", "ryx" };

    reset();
    start(&r1);         /* holds it */
    start(&w);          /* waits for R1 */
    start(&r2);         /* would share with R1, but queues behind W */
    KEEL_OK(!strcmp(trace, "R1+"), "rwlock: a reader queues behind a waiting writer (%s)", trace);
    resume(&r1);        /* unlock: W's turn */
    resume(&w);         /* unlock: R2's turn */
    resume(&r2);
    KEEL_OK(!strcmp(trace, "R1+ R1- W+ W- R2+ R2-"), "rwlock: FIFO hand-over (%s)", trace);
    KEEL_OK(r1.done && w.done && r2.done && lock.owners == 0, "rwlock: all done, lock free");
}

static void test_upgrade(void)
{
    Actor alone = { "A", "ruyx" };
    Actor r1 = { "R1", "ryuyx" }, w = { "W", "wyx" };

    reset();
    start(&alone);
    KEEL_OK(!strcmp(trace, "A+ A^") && lock.owners == -1,
            "upgrade: the only reader with nobody waiting upgrades at once (%s)", trace);
    resume(&alone);

    reset();
    start(&r1);         /* reader */
    start(&w);          /* writer waits for it */
    resume(&r1);        /* upgrade: gives up its read lock, queues behind W */
    KEEL_OK(!strcmp(trace, "R1+ W+"), "upgrade: queues behind the waiting writer (%s)", trace);
    resume(&w);         /* W unlocks: R1 gets the write lock */
    KEEL_OK(!strcmp(trace, "R1+ W+ W- R1^"), "upgrade: ...and gets it after that writer (%s)",
            trace);
    KEEL_IS(lock.owners, -1, "upgrade: R1 holds it for writing");
    resume(&r1);
    KEEL_OK(r1.done && w.done && lock.owners == 0, "upgrade: all done, lock free");
}

static void test_downgrade(void)
{
    Actor w1 = { "W1", "wydyx" }, r1 = { "R1", "ryx" };
    Actor w2 = { "W2", "wyx" }, r2 = { "R2", "ryx" };

    reset();
    start(&w1);
    start(&r1);         /* queue: R1 W2 R2 */
    start(&w2);
    start(&r2);
    resume(&w1);        /* downgrade: R1 comes in, R2 stays behind W2 */
    KEEL_OK(!strcmp(trace, "W1+ W1v R1+"),
            "downgrade: lets in the reader at the head, not one behind a writer (%s)", trace);
    KEEL_IS(lock.owners, 2, "downgrade: two readers hold it");
    resume(&w1);
    resume(&r1);        /* last reader out: W2 */
    resume(&w2);        /* then R2 */
    resume(&r2);
    KEEL_OK(!strcmp(trace, "W1+ W1v R1+ W1- R1- W2+ W2- R2+ R2-"), "downgrade: order (%s)", trace);
    KEEL_OK(w1.done && r1.done && w2.done && r2.done && lock.owners == 0,
            "downgrade: all done, lock free");
}

/* Threads: readers and writers from two iothreads and the main context
 * hammer one lock; a writer sees no reader inside and vice versa. */
#define HAMMER_ROUNDS 2000
static int inside_readers, inside_writers;  /* atomic */
static bool hammer_bad;
static int hammer_done;                     /* atomic */

static void hammer(void *opaque)
{
    bool writer = opaque != NULL;

    for (int i = 0; i < HAMMER_ROUNDS; i++) {
        if (writer || i % 4 == 0) {
            keel_co_rwlock_wrlock(&lock);
            if (keel_atomic_fetch_add(&inside_writers, 1) != 0 ||
                keel_atomic_load_seq_cst(&inside_readers) != 0) {
                hammer_bad = true;
            }
            keel_atomic_fetch_sub(&inside_writers, 1);
        } else {
            keel_co_rwlock_rdlock(&lock);
            keel_atomic_fetch_add(&inside_readers, 1);
            if (keel_atomic_load_seq_cst(&inside_writers) != 0) {
                hammer_bad = true;
            }
            if (i % 8 == 1) {
                /* Not inside as a reader while upgrade may wait. */
                keel_atomic_fetch_sub(&inside_readers, 1);
                keel_co_rwlock_upgrade(&lock);
                if (keel_atomic_load_seq_cst(&inside_readers) != 0) {
                    hammer_bad = true;
                }
                keel_co_rwlock_downgrade(&lock);
                keel_atomic_fetch_add(&inside_readers, 1);
            }
            keel_atomic_fetch_sub(&inside_readers, 1);
        }
        keel_co_rwlock_unlock(&lock);
    }
    keel_atomic_fetch_add(&hammer_done, 1);
    keel_aio_wait_kick();
}

static void start_hammer(void *opaque)
{
    keel_aio_co_enter(keel_current_aio_context(), keel_coroutine_create(hammer, opaque));
}

static void test_threads(KeelAioContext *main_ctx)
{
    KeelIOThread *t1 = keel_iothread_new("rw1"), *t2 = keel_iothread_new("rw2");

    reset();
    keel_aio_bh_schedule_oneshot(keel_iothread_get_aio_context(t1), start_hammer, NULL);
    keel_aio_bh_schedule_oneshot(keel_iothread_get_aio_context(t2), start_hammer, &lock);
    start_hammer(NULL);
    KEEL_AIO_WAIT_WHILE(main_ctx, keel_atomic_load_seq_cst(&hammer_done) < 3);
    KEEL_OK(!hammer_bad, "threads: readers and writers in three threads never overlap");
    KEEL_IS(lock.owners, 0, "threads: the lock ends free");
    keel_iothread_free(t1);
    keel_iothread_free(t2);
}

/* ---- KEEL_AIO_WAIT_WHILE in a coroutine ---- */

static bool flag;                   /* atomic */
static bool co_waited, co_finished;
static int main_bh_runs;

static void set_flag_bh(void *opaque)
{
    (void)opaque;
    loop_test_sleep_ms(10);
    keel_atomic_store_seq_cst(&flag, true);
    keel_aio_wait_kick();
}

static void main_bh(void *opaque)
{
    (void)opaque;
    main_bh_runs++;
}

static void waiting_co(void *opaque)
{
    KeelAioContext *other = opaque;

    keel_aio_bh_schedule_oneshot(other, set_flag_bh, NULL);
    co_waited = KEEL_AIO_WAIT_WHILE(other, !keel_atomic_load_seq_cst(&flag));
    co_finished = true;
}

static void test_wait_in_coroutine(KeelAioContext *main_ctx)
{
    KeelIOThread *t = keel_iothread_new("kicker");
    KeelAioContext *other = keel_iothread_get_aio_context(t);

    keel_aio_co_enter(main_ctx, keel_coroutine_create(waiting_co, other));
    KEEL_OK(!co_finished, "co wait: the coroutine yielded while the condition held");
    /* The thread goes on with other work meanwhile. */
    keel_aio_bh_schedule_oneshot(main_ctx, main_bh, NULL);
    KEEL_IS(keel_aio_poll(main_ctx, false), true, "co wait: the thread runs its own BH");
    KEEL_IS(main_bh_runs, 1, "co wait: ...once");
    while (!co_finished) {
        keel_aio_poll(main_ctx, true);
    }
    KEEL_OK(co_waited && keel_atomic_load_seq_cst(&flag),
            "co wait: the kick from the iothread resumed it and the condition is false");
    keel_iothread_free(t);
}

int main(void)
{
    KeelAioContext *ctx = keel_aio_context_new();

    loop_test_sigcont_start();
    test_readers_share();
    test_writer_fairness();
    test_upgrade();
    test_downgrade();
    test_threads(ctx);
    test_wait_in_coroutine(ctx);
    keel_aio_context_unref(ctx);
    loop_test_sigcont_report();
    return keel_test_done();
}
