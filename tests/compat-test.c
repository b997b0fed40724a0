/*
 * compat/ seams, each on both of its paths in one run: the primary path,
 * then the fallback forced through keel_avoid_parse_for_testing().  When
 * the whole binary runs under KEEL_AVOID or an old-kernel preset, both
 * rounds use the fallback, and the assertions follow what the seam reports.
 */
#include "config.h"

#include "compat/avoid.h"
#include "compat/event-notifier.h"
#include "compat/features.h"
#include "compat/osdep.h"
#include "compat/poll.h"
#include "compat/signalfd.h"
#include "tests/keel-test.h"

#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *env_avoid;

/* Force @word (plus whatever KEEL_AVOID already says) for the next round. */
static void avoid_also(const char *word)
{
    char list[256];
    const char *error;

    snprintf(list, sizeof(list), "%s%s%s", env_avoid ? env_avoid : "",
             env_avoid && *env_avoid && word ? "," : "", word ? word : "");
    if (keel_avoid_parse_for_testing(list, &error) < 0) {
        printf("Bail out! %s\n", error);
        exit(1);
    }
}

/* ---- event notifier ---------------------------------------------------- */

static void *set_later(void *opaque)
{
    usleep(20000);  /* make the poller really sleep first */
    keel_event_notifier_set(opaque);
    return NULL;
}

static void test_event_notifier(const char *round)
{
    KeelEventNotifier e;
    const char *reason;
    const char *backend = keel_event_notifier_backend(&reason);
    GPollFD pfd;
    pthread_t t;
    int fl;

    KEEL_IS(keel_event_notifier_init(&e, false), 0, "%s: notifier init", round);
    KEEL_OK(keel_event_notifier_is_eventfd(&e) == !strcmp(backend, "eventfd"),
            "%s: notifier uses the reported backend %s (%s)", round, backend, reason);
    fl = fcntl(e.rfd, F_GETFL);
    KEEL_OK(fl >= 0 && (fl & O_NONBLOCK), "%s: notifier fd is non-blocking", round);
    KEEL_OK(fcntl(e.rfd, F_GETFD) & FD_CLOEXEC, "%s: notifier fd is close-on-exec", round);
    KEEL_OK(!keel_event_notifier_test_and_clear(&e), "%s: fresh notifier is clear", round);

    pfd.fd = keel_event_notifier_get_fd(&e);
    pfd.events = G_IO_IN;
    pfd.revents = 0;
    KEEL_IS(keel_poll_ns(&pfd, 1, 0), 0, "%s: clear notifier does not poll ready", round);

    keel_thread_create(&t, "setter", set_later, &e);
    int n;
    do {
        n = keel_poll_ns(&pfd, 1, -1);
    } while (n < 0 && errno == EINTR);
    pthread_join(t, NULL);
    KEEL_IS(n, 1, "%s: set from another thread wakes an infinite poll", round);
    KEEL_OK(pfd.revents & G_IO_IN, "%s: ...with POLLIN", round);
    KEEL_OK(keel_event_notifier_test_and_clear(&e), "%s: test_and_clear sees it set", round);
    KEEL_OK(!keel_event_notifier_test_and_clear(&e), "%s: ...and clears it (exactly once)", round);

    for (int i = 0; i < 5000; i++) {  /* more than a pipe buffer would hold */
        keel_event_notifier_set(&e);
    }
    KEEL_OK(keel_event_notifier_test_and_clear(&e), "%s: set many times reads set", round);
    KEEL_OK(!keel_event_notifier_test_and_clear(&e), "%s: ...and one clear resets it", round);
    keel_event_notifier_cleanup(&e);

    KEEL_IS(keel_event_notifier_init(&e, true), 0, "%s: init active", round);
    KEEL_OK(keel_event_notifier_test_and_clear(&e), "%s: active notifier starts set", round);
    keel_event_notifier_cleanup(&e);
}

/* ---- signal fd ----------------------------------------------------------- */

static int wait_record(int fd, KeelSignalInfo *info)
{
    for (int tries = 0; tries < 500; tries++) {
        GPollFD pfd = { .fd = fd, .events = G_IO_IN };
        int r = keel_signalfd_read(fd, info);
        if (r != 0) {
            return r;
        }
        keel_poll_ns(&pfd, 1, 10 * 1000000LL);
    }
    return 0;
}

static void *read_mask(void *opaque)
{
    pthread_sigmask(SIG_BLOCK, NULL, opaque);
    return NULL;
}

static void test_signalfd(const char *round)
{
    const char *reason;
    const char *backend = keel_signalfd_backend(&reason);
    KeelSignalInfo info;
    sigset_t mask, cur;
    pid_t child;
    int fd, status;
    pthread_t t;

    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGALRM);
    fd = keel_signalfd_open(&mask);
    KEEL_OK(fd >= 0, "%s: signal fd opened with %s (%s)", round, backend, reason);
    if (fd < 0) {
        return;
    }
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    KEEL_OK(sigismember(&cur, SIGUSR1) && sigismember(&cur, SIGALRM),
            "%s: the signals are blocked in the opening thread", round);

    KEEL_IS(keel_signalfd_read(fd, &info), 0, "%s: nothing pending reads 0", round);

    kill(getpid(), SIGUSR1);
    KEEL_IS(wait_record(fd, &info), 1, "%s: SIGUSR1 record arrives", round);
    KEEL_IS(info.ssi_signo, SIGUSR1, "%s: ...with signo SIGUSR1", round);
    KEEL_IS(info.ssi_pid, getpid(), "%s: ...with the sender's pid", round);
    KEEL_IS(info.ssi_uid, getuid(), "%s: ...with the sender's uid", round);
    KEEL_IS(info.ssi_code, SI_USER, "%s: ...with code SI_USER", round);

    union sigval v = { .sival_int = 4242 };
    sigqueue(getpid(), SIGUSR1, v);
    KEEL_IS(wait_record(fd, &info), 1, "%s: queued SIGUSR1 arrives", round);
    KEEL_IS(info.ssi_code, SI_QUEUE, "%s: ...with code SI_QUEUE", round);
    KEEL_IS(info.ssi_int, 4242, "%s: ...with its value", round);

    struct itimerval it = { .it_value = { 0, 5000 } };
    setitimer(ITIMER_REAL, &it, NULL);
    KEEL_IS(wait_record(fd, &info), 1, "%s: SIGALRM from a timer arrives", round);
    KEEL_IS(info.ssi_signo, SIGALRM, "%s: ...with signo SIGALRM", round);

    child = fork();
    if (child == 0) {
        kill(getppid(), SIGUSR1);
        _exit(0);
    }
    waitpid(child, &status, 0);
    KEEL_IS(wait_record(fd, &info), 1, "%s: SIGUSR1 from a child arrives", round);
    KEEL_IS(info.ssi_pid, child, "%s: ...with the child's pid", round);

    keel_signalfd_close(fd);

    /* Threads made by keel_thread_create start with async signals blocked. */
    sigset_t thread_mask;
    sigemptyset(&thread_mask);
    keel_thread_create(&t, "mask-reader", read_mask, &thread_mask);
    pthread_join(t, NULL);
    KEEL_OK(sigismember(&thread_mask, SIGTERM) && sigismember(&thread_mask, SIGINT) &&
            sigismember(&thread_mask, SIGCHLD) && sigismember(&thread_mask, SIGUSR2),
            "%s: a new thread has async signals blocked", round);
    KEEL_OK(!sigismember(&thread_mask, SIGSEGV) && !sigismember(&thread_mask, SIGBUS),
            "%s: ...but not synchronous ones", round);
}

/* ---- poll_ns ------------------------------------------------------------- */

static void test_poll(const char *round)
{
    const char *reason;
    const char *backend = keel_poll_backend(&reason);
    int fds[2];
    GPollFD pfd;
    int64_t t0, waited;

    KEEL_OK(pipe(fds) == 0, "%s: pipe for poll (%s, %s)", round, backend, reason);
    pfd.fd = fds[0];
    pfd.events = G_IO_IN;

    t0 = keel_monotonic_ns();
    KEEL_IS(keel_poll_ns(&pfd, 1, 0), 0, "%s: zero timeout, nothing ready → 0", round);

    for (int64_t ns = 1000; ns <= 300000; ns *= 17) {
        int r;
        t0 = keel_monotonic_ns();
        do {
            r = keel_poll_ns(&pfd, 1, ns);
        } while (r < 0 && errno == EINTR);
        waited = keel_monotonic_ns() - t0;
        KEEL_IS(r, 0, "%s: %lld ns timeout expires with 0", round, (long long)ns);
        KEEL_OK(waited >= ns, "%s: ...not before its deadline", round);
    }

    KEEL_IS(write(fds[1], "x", 1), 1, "%s: make the pipe readable", round);
    pfd.revents = 0;
    KEEL_IS(keel_poll_ns(&pfd, 1, 0), 1, "%s: readiness reported with zero timeout", round);
    KEEL_OK(pfd.revents & G_IO_IN, "%s: ...as POLLIN", round);
    pfd.revents = 0;
    KEEL_IS(keel_poll_ns(&pfd, 1, INT64_MAX), 1, "%s: huge timeout clamps, does not fail", round);
    pfd.revents = 0;
    KEEL_IS(keel_poll_ns(&pfd, 1, -1), 1, "%s: negative (infinite) timeout with data ready", round);
    close(fds[0]);
    close(fds[1]);
}

/* ---- pipe2 ----------------------------------------------------------- */

static void test_pipe2(const char *round)
{
    int fds[2];

    KEEL_IS(keel_pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0, "%s: keel_pipe2", round);
    KEEL_OK((fcntl(fds[0], F_GETFD) & FD_CLOEXEC) && (fcntl(fds[1], F_GETFD) & FD_CLOEXEC),
            "%s: both ends close-on-exec", round);
    KEEL_OK((fcntl(fds[0], F_GETFL) & O_NONBLOCK) && (fcntl(fds[1], F_GETFL) & O_NONBLOCK),
            "%s: both ends non-blocking", round);
    close(fds[0]);
    close(fds[1]);
    KEEL_IS(keel_pipe2(fds, O_APPEND), -EINVAL, "%s: unsupported flags refused", round);
}

static void test_avoid_words(void)
{
    const char *error = NULL;

    KEEL_IS(keel_avoid_parse_for_testing("eventfd,ppoll", &error), 0, "avoid list parses");
    KEEL_OK(keel_avoid(KEEL_PATH_EVENTFD) && keel_avoid(KEEL_PATH_PPOLL) &&
            !keel_avoid(KEEL_PATH_SIGNALFD), "avoid list sets exactly its words");
    KEEL_IS(keel_avoid_parse_for_testing("eventfd,bogus", &error), -1, "unknown word refused");
    KEEL_OK(error && strstr(error, "'bogus'"), "...and the message names it");
    for (int p = 0; p < KEEL_PATH__MAX; p++) {
        KEEL_IS(keel_avoid_parse_for_testing(keel_path_name(p), &error), 0,
                "word '%s' is known", keel_path_name(p));
    }
    avoid_also(NULL);
}

int main(void)
{
    char *buf;
    size_t len;
    FILE *mem;

    env_avoid = getenv("KEEL_AVOID");
    /* Both rounds: first what the environment says, then every fallback. */
    test_avoid_words();
    for (int round = 0; round < 2; round++) {
        const char *name = round ? "fallback" : "default";
        avoid_also(round ? "eventfd,signalfd,ppoll,pipe2" : NULL);
        if (round) {
            KEEL_OK(!strcmp(keel_event_notifier_backend(NULL), "pipe") &&
                    !strcmp(keel_signalfd_backend(NULL), "thread") &&
                    !strcmp(keel_poll_backend(NULL), "g_poll"),
                    "forcing selects every fallback");
        }
        test_pipe2(name);
        test_event_notifier(name);
        test_signalfd(name);
        test_poll(name);
    }

    keel_compat_features_register();
    mem = open_memstream(&buf, &len);
    keel_features_print(mem);
    fclose(mem);
    KEEL_OK(strstr(buf, "event-notifier active=pipe") && strstr(buf, "signal-fd active=thread") &&
            strstr(buf, "poll active=g_poll") && strstr(buf, "pipe2 active=pipe+fcntl"),
            "features report shows the forced paths");
    printf("# features:\n# %s", buf);
    free(buf);
    return keel_test_done();
}
