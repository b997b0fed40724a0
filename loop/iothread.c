/*
 * iothreads: a thread that creates its own AioContext and polls it until
 * asked to stop; and running a function in another context's thread.
 */
#include "config.h"

#include "loop/iothread.h"
#include "loop/aio-int.h"
#include "compat/osdep.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

struct KeelIOThread {
    char *id;
    pthread_t thread;
    KeelAioContext *ctx;            /* set before keel_iothread_new returns */
    bool stopping;                  /* atomic */
    bool joined;
    pthread_mutex_t lock;           /* start-up hand-shake */
    pthread_cond_t cond;
    bool started;
};

static void *iothread_run(void *opaque)
{
    KeelIOThread *t = opaque;
    KeelAioContext *ctx = keel_aio_context_new();   /* home: this thread */

    keel_aio_context_set_home_thread(ctx);
    keel_aio_context_set_poll_params(ctx, KEEL_IOTHREAD_POLL_MAX_NS, 0, 0);
    pthread_mutex_lock(&t->lock);
    t->ctx = ctx;
    t->started = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);

    while (!keel_atomic_load_seq_cst(&t->stopping)) {
        keel_aio_poll(ctx, true);
    }
    return NULL;
}

KeelIOThread *keel_iothread_new(const char *id)
{
    KeelIOThread *t = g_new0(KeelIOThread, 1);
    char name[16];
    int ret;

    t->id = g_strdup(id ? id : "iothread");
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    /* Thread names are limited to 15 characters. */
    snprintf(name, sizeof(name), "io-%s", t->id);
    ret = keel_thread_create(&t->thread, name, iothread_run, t);
    if (ret < 0) {
        keel_log("cannot start iothread %s: %s", t->id, g_strerror(-ret));
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->cond);
        g_free(t->id);
        g_free(t);
        return NULL;
    }
    pthread_mutex_lock(&t->lock);
    while (!t->started) {
        pthread_cond_wait(&t->cond, &t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return t;
}

KeelAioContext *keel_iothread_get_aio_context(KeelIOThread *t)
{
    return t->ctx;
}

const char *keel_iothread_id(KeelIOThread *t)
{
    return t->id;
}

/* Runs in the iothread after every BH scheduled before the stop (BHs run in
 * scheduling order), so that work, including coroutines woken from other
 * threads (a one-shot BH each), is not dropped; as in QEMU's iothread_stop. */
static void iothread_stop_bh(void *opaque)
{
    KeelIOThread *t = opaque;

    keel_atomic_store_seq_cst(&t->stopping, true);
}

void keel_iothread_stop_join(KeelIOThread *t)
{
    if (t->joined) {
        return;
    }
    /* stopping is read after every aio_poll, and the BH that sets it is
     * progress, so the poll running it returns. */
    keel_aio_bh_schedule_oneshot(t->ctx, iothread_stop_bh, t);
    pthread_join(t->thread, NULL);
    t->joined = true;
}

void keel_iothread_free(KeelIOThread *t)
{
    if (!t) {
        return;
    }
    keel_iothread_stop_join(t);
    keel_aio_context_unref(t->ctx);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
    g_free(t->id);
    g_free(t);
}

/* ---- run in another context and wait ---- */

typedef struct RunWait {
    void (*fn)(void *);
    void *opaque;
    KeelAioContext *waiter_ctx;     /* the waiter polls this, or NULL */
    bool done;                      /* atomic */
    pthread_mutex_t lock;           /* used when waiter_ctx is NULL */
    pthread_cond_t cond;
} RunWait;

/* In the waiter's own context: no wake-up flag is left behind, and w stays
 * valid until the waiter itself sees done. */
static void run_wait_done_bh(void *opaque)
{
    RunWait *w = opaque;

    keel_atomic_store_seq_cst(&w->done, true);
}

static void run_wait_bh(void *opaque)
{
    RunWait *w = opaque;

    w->fn(w->opaque);
    if (w->waiter_ctx) {
        keel_aio_bh_schedule_oneshot(w->waiter_ctx, run_wait_done_bh, w);
    } else {
        pthread_mutex_lock(&w->lock);
        keel_atomic_store_seq_cst(&w->done, true);
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
    }
}

void keel_aio_run_in_context_wait(KeelAioContext *ctx, void (*fn)(void *), void *opaque)
{
    RunWait w = { .fn = fn, .opaque = opaque };

    if (keel_aio_context_in_home_thread(ctx)) {
        fn(opaque);
        return;
    }
    w.waiter_ctx = keel_current_aio_context();
    if (w.waiter_ctx) {
        keel_aio_bh_schedule_oneshot(ctx, run_wait_bh, &w);
        while (!keel_atomic_load_seq_cst(&w.done)) {
            keel_aio_poll(w.waiter_ctx, true);
        }
        return;
    }
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    keel_aio_bh_schedule_oneshot(ctx, run_wait_bh, &w);
    pthread_mutex_lock(&w.lock);
    while (!keel_atomic_load_seq_cst(&w.done)) {
        pthread_cond_wait(&w.cond, &w.lock);
    }
    pthread_mutex_unlock(&w.lock);
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
}
