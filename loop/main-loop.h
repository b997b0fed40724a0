/*
 * loop/main-loop.h — the main loop: the default GMainContext with the main
 * AioContext attached, the global mutex, and process signals.
 *
 * keel_main_loop_wait() runs one iteration of the default GMainContext the
 * way QEMU's main_loop_wait() does: prepare → query (growing the GPollFD
 * array and querying again when it is too small) → keel_poll_ns() with the
 * soonest timeout (the main context's timers in nanoseconds, glib's in ms) →
 * check → dispatch.  It drops the global mutex while it sleeps (when the
 * caller holds it) so vCPU threads can take it.  Plain glib sources
 * (g_timeout_add, g_io_add_watch, g_idle_add) run in the same loop.
 *
 * Signals: keel_main_loop_init() blocks SIGTERM, SIGINT and SIGHUP and reads
 * them from the compat signal fd in the main AioContext.  Each one is handed
 * to the handler set with keel_main_loop_set_signal_handler(); without a
 * handler, SIGTERM and SIGINT terminate the process with the default action
 * and SIGHUP is ignored.
 *
 * Thread rules:
 *   keel_main_loop_init, keel_main_loop_wait,
 *   keel_main_loop_set_signal_handler       the main thread (the one that
 *                                           called init); init before any
 *                                           other thread exists
 *   keel_main_aio_context                   any thread (after init)
 *   keel_global_mutex_lock/unlock/held      any thread; not recursive
 *   keel_loop_features_register             start-up, one thread
 */
#ifndef KEEL_LOOP_MAIN_LOOP_H
#define KEEL_LOOP_MAIN_LOOP_H

#include <stdbool.h>

#include "aio.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates the main AioContext (home: the caller), attaches it to the default
 * GMainContext and opens the signal fd.  Returns 0 or -errno.  A second call
 * does nothing and returns 0. */
int keel_main_loop_init(void);

/* The main AioContext, or NULL before keel_main_loop_init(). */
KeelAioContext *keel_main_aio_context(void);

/* One iteration; @nonblocking: never sleep. */
void keel_main_loop_wait(bool nonblocking);

/* @fn(signo, @opaque) runs in the main thread for SIGTERM, SIGINT, SIGHUP. */
void keel_main_loop_set_signal_handler(void (*fn)(int signo, void *opaque), void *opaque);

/* The global mutex ("big lock") of the main loop and vCPU threads. */
void keel_global_mutex_lock(void);
void keel_global_mutex_unlock(void);
/* Whether the calling thread holds it. */
bool keel_global_mutex_held(void);

/* Registers the loop's seam for the features report: "aio-fd-monitor"
 * (epoll for contexts with many fds — epoll_create1, or epoll_create before
 * 2.6.27 — falling back to poll when the kernel refuses epoll).  The event notifier, signal fd and poll seams it
 * builds on are compat's (keel_compat_features_register()). */
void keel_loop_features_register(void);

#ifdef __cplusplus
}
#endif

#endif
