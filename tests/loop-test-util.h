/*
 * tests/loop-test-util.h — helpers shared by the loop tests (header-only).
 *
 * EINTR storm: loop_test_sigcont_start() installs a no-op SIGCONT handler
 * (without SA_RESTART, so blocking calls fail with EINTR) and starts a helper
 * thread that sends SIGCONT to the whole process every 100 µs until exit.
 * It is active when the environment has KEEL_TEST_SIGCONT=1 or when the test
 * is built with -DKEEL_TEST_SIGCONT_ALWAYS=1.  SIGCONT reaches only threads
 * that do not block it: the test's main thread and threads the test creates
 * with pthread_create (keel_thread_create() blocks every async signal).
 * loop_test_sigcont_report() stops the sender (before exit: a SIGCONT storm
 * would resume threads that LeakSanitizer stops at exit, and hang it) and
 * prints how many signals were handled.
 *
 * Pipes: loop_test_pipe() makes a non-blocking pipe; loop_test_write_byte()
 * and loop_test_drain() retry on EINTR.
 *
 * Thread rules: call start/report from the main thread.
 */
#ifndef KEEL_TESTS_LOOP_TEST_UTIL_H
#define KEEL_TESTS_LOOP_TEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "compat/atomic.h"
#include "compat/osdep.h"
#include "tests/keel-test.h"

static long loop_test_sigcont_count;
static bool loop_test_sigcont_on;
static bool loop_test_sigcont_stop;
static pthread_t loop_test_sigcont_tid;

static void loop_test_sigcont_handler(int signo)
{
    (void)signo;
    keel_atomic_fetch_add(&loop_test_sigcont_count, 1);
}

static void *loop_test_sigcont_thread(void *arg)
{
    (void)arg;
    while (!keel_atomic_load_seq_cst(&loop_test_sigcont_stop)) {
        struct timespec ts = { 0, 100 * 1000 };
        kill(getpid(), SIGCONT);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static inline bool loop_test_sigcont_wanted(void)
{
#ifdef KEEL_TEST_SIGCONT_ALWAYS
    return true;
#else
    const char *env = getenv("KEEL_TEST_SIGCONT");
    return env && strcmp(env, "1") == 0;
#endif
}

static inline void loop_test_sigcont_start(void)
{
    struct sigaction sa;

    if (!loop_test_sigcont_wanted()) {
        return;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = loop_test_sigcont_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;                    /* no SA_RESTART: we want EINTR */
    sigaction(SIGCONT, &sa, NULL);
    /* The sender blocks every async signal itself, so the signals land in
     * the test's threads. */
    if (keel_thread_create(&loop_test_sigcont_tid, "sigcont", loop_test_sigcont_thread,
                           NULL) == 0) {
        keel_atomic_store_seq_cst(&loop_test_sigcont_on, true);
        keel_test_diag("sending SIGCONT to the process every 100us");
    }
}

static inline void loop_test_sigcont_report(void)
{
    if (keel_atomic_load_seq_cst(&loop_test_sigcont_on)) {
        keel_atomic_store_seq_cst(&loop_test_sigcont_stop, true);
        pthread_join(loop_test_sigcont_tid, NULL);
        keel_atomic_store_seq_cst(&loop_test_sigcont_on, false);
        keel_test_diag("SIGCONT handled %ld times",
                       keel_atomic_load_seq_cst(&loop_test_sigcont_count));
    }
}

static inline void loop_test_pipe(int fds[2])
{
    if (keel_pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        keel_test_skip_all("cannot create a pipe");
    }
}

static inline void loop_test_write_byte(int fd)
{
    char c = 'x';
    KEEL_RETRY_EINTR(write(fd, &c, 1));
}

static inline int loop_test_drain(int fd)
{
    char buf[256];
    int total = 0;
    long n;

    while ((n = KEEL_RETRY_EINTR(read(fd, buf, sizeof(buf)))) > 0) {
        total += (int)n;
    }
    return total;
}

/* Sleep @ms milliseconds, resuming after signals. */
static inline void loop_test_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L }, rem;

    while (nanosleep(&ts, &rem) < 0 && errno == EINTR) {
        ts = rem;
    }
}

#endif
