// A C++ host of libkeel.
// Includes every public header the way an embedding program does
// (<keel/LAYER/NAME.h>, Cflags -I${includedir}), runs a BH, a coroutine that
// sleeps on a timer, a thread-pool request and an iothread round trip, and
// prints the features report.  Exit 0 only when all of it worked.
#include <keel/compat/avoid.h>
#include <keel/compat/event-notifier.h>
#include <keel/compat/features.h>
#include <keel/compat/osdep.h>
#include <keel/compat/poll.h>
#include <keel/compat/signalfd.h>
#include <keel/loop/aio.h>
#include <keel/loop/iothread.h>
#include <keel/loop/main-loop.h>
#include <keel/loop/thread-pool.h>
#include <keel/loop/timer.h>
#include <keel/coroutine/coroutine.h>
#include <keel/coroutine/co-lock.h>
#include <keel/block/block-backend.h>
#include <keel/block/features-all.h>

#include <cstdio>

namespace {

struct State {
    int bh_runs = 0;
    int co_steps = 0;
    int pool_ret = -1;
    int remote_runs = 0;
};

void on_bh(void *opaque)
{
    static_cast<State *>(opaque)->bh_runs++;
}

void co_body(void *opaque)
{
    State *s = static_cast<State *>(opaque);
    s->co_steps++;
    keel_co_sleep_ns(KEEL_CLOCK_REALTIME, 1000000);
    s->co_steps++;
}

int pool_work(void *)
{
    return 42;
}

void pool_done(void *opaque, int ret)
{
    static_cast<State *>(opaque)->pool_ret = ret;
}

void remote(void *opaque)
{
    static_cast<State *>(opaque)->remote_runs++;
}

} // namespace

int main()
{
    State s;
    KeelAioContext *ctx = keel_aio_context_new();
    KeelBH *bh = keel_aio_bh_new(ctx, on_bh, &s);

    keel_bh_schedule(bh);
    while (keel_aio_poll(ctx, false)) {
    }
    keel_bh_delete(bh);

    KeelCoroutine *co = keel_coroutine_create(co_body, &s);
    keel_aio_co_enter(ctx, co);
    keel_thread_pool_submit(ctx, pool_work, nullptr, pool_done, &s);
    while (s.co_steps < 2 || s.pool_ret < 0) {
        keel_aio_poll(ctx, true);
    }

    KeelIOThread *t = keel_iothread_new("cxx");
    keel_aio_run_in_context_wait(keel_iothread_get_aio_context(t), remote, &s);
    keel_iothread_free(t);
    keel_aio_context_unref(ctx);

    keel_all_features_register();
    keel_features_print(stdout);
    std::printf("cxx-embed: bh=%d co=%d pool=%d remote=%d\n",
                s.bh_runs, s.co_steps, s.pool_ret, s.remote_runs);
    return s.bh_runs == 1 && s.co_steps == 2 && s.pool_ret == 42 && s.remote_runs == 1 ? 0 : 1;
}
