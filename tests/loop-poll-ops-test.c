/*
 * The busy-poll companions of an event notifier (KeelAioPollOps): a
 * producer thread publishes work and sets the notifier only while the
 * consumer wants notifications, the way a virtio driver kicks only when the
 * device has not suppressed kicks.  The consumer turns notifications off in
 * begin and on in end.  Asserted: no item is lost or consumed twice (so the
 * recheck after end catches what was published while kicks were off);
 * begin and end alternate and run in the home thread; work found by polling
 * goes to ready, not to the notifier callback; a context that glib takes
 * over leaves busy-poll mode (end runs) and still finds work published with
 * kicks off.
 */
#include "config.h"

#include "loop/aio.h"
#include "loop/aio-int.h"
#include "compat/atomic.h"
#include "compat/event-notifier.h"
#include "tests/keel-test.h"
#include "tests/loop-test-util.h"

#define ITEMS 2000

static KeelAioContext *ctx;
static KeelEventNotifier notifier;
static pthread_t home;

static unsigned published;          /* atomic: items made available */
static bool kicks_wanted = true;    /* atomic: the consumer's "notify me" */
static unsigned consumed;           /* home thread */
static unsigned readies, callbacks, begins, ends;
static bool in_poll_mode, order_ok = true, thread_ok = true;

static void check_thread(void)
{
    if (!pthread_equal(pthread_self(), home)) {
        thread_ok = false;
    }
}

/* Take everything published so far. */
static void consume(void)
{
    consumed = keel_atomic_load_acquire(&published);
}

static bool on_poll(void *opaque)
{
    (void)opaque;
    return keel_atomic_load_acquire(&published) != consumed;
}

static void on_ready(KeelEventNotifier *e)
{
    (void)e;
    check_thread();
    readies++;
    consume();
}

static void on_notify(KeelEventNotifier *e)
{
    check_thread();
    callbacks++;
    keel_event_notifier_test_and_clear(e);
    consume();
}

static void on_begin(KeelEventNotifier *e)
{
    (void)e;
    check_thread();
    order_ok &= !in_poll_mode;
    in_poll_mode = true;
    begins++;
    keel_atomic_store_seq_cst(&kicks_wanted, false);
}

static void on_end(KeelEventNotifier *e)
{
    (void)e;
    check_thread();
    order_ok &= in_poll_mode;
    in_poll_mode = false;
    ends++;
    /* seq_cst store, then the loop's recheck loads published: pairs with
     * the producer's publish-then-load-kicks_wanted. */
    keel_atomic_store_seq_cst(&kicks_wanted, true);
}

static const KeelAioPollOps ops = {
    .poll = on_poll, .ready = on_ready, .begin = on_begin, .end = on_end,
};

/* Publish, then kick only if asked to (both seq_cst: the Dekker pair with
 * on_end's store and the recheck). */
static void publish_one(void)
{
    keel_atomic_fetch_add(&published, 1);
    if (keel_atomic_load_seq_cst(&kicks_wanted)) {
        keel_event_notifier_set(&notifier);
    }
}

/* Bursts of items 20 µs apart (well inside the 1 ms poll limit, so the
 * consumer learns to poll for them), then 3 ms of quiet (beyond it, so the
 * consumer ends busy-poll mode and sleeps). */
static void *producer(void *opaque)
{
    (void)opaque;
    for (int i = 0; i < ITEMS; i++) {
        int64_t next = keel_monotonic_ns() + 20000;

        publish_one();
        if (i % 50 == 49) {
            loop_test_sleep_ms(3);
        } else {
            while (keel_monotonic_ns() < next) {
            }
        }
    }
    return NULL;
}

int main(void)
{
    pthread_t tid;
    GMainContext *gctx;
    GSource *src;
    unsigned ends_before;

    loop_test_sigcont_start();
    home = pthread_self();
    ctx = keel_aio_context_new();
    if (keel_event_notifier_init(&notifier, false) < 0) {
        keel_test_skip_all("cannot create an event notifier");
    }
    keel_aio_set_event_notifier_poll(ctx, &notifier, on_notify, &ops);
    keel_aio_context_set_poll_params(ctx, 1000 * 1000, 0, 0);

    pthread_create(&tid, NULL, producer, NULL);
    while (consumed < ITEMS) {
        keel_aio_poll(ctx, true);
    }
    pthread_join(tid, NULL);
    KEEL_IS(consumed, ITEMS, "every item published with kicks suppressed was consumed");
    KEEL_OK(callbacks > 0, "work signalled while asleep went to the notifier callback (%u times)",
            callbacks);
    KEEL_OK(begins > 0 && (ends == begins || ends + 1 == begins),
            "begin and end are paired (%u begins, %u ends)", begins, ends);
    /* How often busy-poll mode ends depends on the scheduler (hundreds of
     * times here, once or 8 times under the KVM lab's software CPU); that
     * it ends in a quiet spell, three times the poll limit, is the
     * behaviour.  (A wake-up may still come in busy-poll mode: a kick sent
     * just before begin turned kicks off.) */
    KEEL_OK(ends >= 1, "the context left busy-poll mode before sleeping, in quiet spells (%u)",
            ends);
    KEEL_OK(order_ok, "begin and end alternate");
    KEEL_OK(thread_ok, "every callback ran in the home thread");

    /* Enter busy-poll mode (polling finds an item and the call returns with
     * the mode still on), publish with kicks off, then let glib drive. */
    readies = 0;
    for (int i = 0; i < 1000 && (i == 0 || !in_poll_mode); i++) {
        publish_one();
        keel_aio_poll(ctx, true);
    }
    /* Still in the mode after the call: polling found the item. */
    KEEL_OK(readies > 0, "work found by polling went to ready, not to the notifier callback");
    KEEL_OK(in_poll_mode && !keel_atomic_load_seq_cst(&kicks_wanted) &&
            consumed == keel_atomic_load_acquire(&published),
            "after polling found work the call returns with busy-poll mode still on");
    keel_event_notifier_test_and_clear(&notifier);     /* kicks from before */
    publish_one();
    KEEL_OK(!keel_event_notifier_test_and_clear(&notifier),
            "an item published in busy-poll mode sets no notifier");
    ends_before = ends;
    gctx = g_main_context_new();
    src = keel_aio_get_g_source(ctx);
    g_source_attach(src, gctx);
    for (int i = 0; i < 10 && consumed != keel_atomic_load_acquire(&published); i++) {
        g_main_context_iteration(gctx, FALSE);
    }
    KEEL_IS(ends, ends_before + 1, "glib's prepare ended busy-poll mode");
    KEEL_IS(consumed, keel_atomic_load_acquire(&published),
            "and its dispatch found the item published while kicks were off");
    g_source_destroy(src);
    g_source_unref(src);
    g_main_context_unref(gctx);

    keel_aio_set_event_notifier(ctx, &notifier, NULL, NULL);
    keel_event_notifier_cleanup(&notifier);
    keel_aio_context_unref(ctx);
    loop_test_sigcont_report();
    return keel_test_done();
}
