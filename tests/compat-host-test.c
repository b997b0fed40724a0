/*
 * libkeel inside a host program that never calls keel_avoid_init(): a bad
 * KEEL_AVOID word or KEEL_COROUTINE_STACK_SIZE must not end the host.  The
 * unknown word is reported once on stderr and ignored; the known words
 * around it, with blanks around them, still apply.
 *
 * Sets its own environment before libkeel reads it, so it is not part of
 * the KEEL_AVOID matrix.
 */
#include "config.h"

#include "compat/avoid.h"
#include "compat/event-notifier.h"
#include "compat/features.h"
#include "loop/aio.h"
#include "coroutine/coroutine.h"
#include "tests/keel-test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool co_ran;

static void co_entry(void *opaque)
{
    (void)opaque;
    co_ran = true;
}

static int count_lines(const char *text, const char *needle)
{
    int n = 0;

    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) {
        n++;
    }
    return n;
}

int main(void)
{
    char path[] = "/tmp/keel-host-stderr-XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(2);
    KeelEventNotifier e;
    KeelAioContext *ctx;
    char *text = NULL;
    gsize len = 0;
    const char *error = NULL;

    if (fd < 0 || saved < 0) {
        keel_test_skip_all("cannot make a temporary file for stderr");
    }
    setenv("KEEL_AVOID", " eventfd , bogus,\tppoll ,, nosuch ", 1);
    setenv("KEEL_COROUTINE_STACK_SIZE", "lots", 1);
    dup2(fd, 2);

    /* Every seam reads the list; the host goes on. */
    ctx = keel_aio_context_new();
    keel_aio_poll(ctx, false);
    keel_event_notifier_init(&e, false);
    keel_event_notifier_set(&e);
    bool was_set = keel_event_notifier_test_and_clear(&e);
    keel_event_notifier_cleanup(&e);
    for (int i = 0; i < 3; i++) {
        (void)keel_avoid(KEEL_PATH_SIGNALFD);
    }
    KeelCoroutine *co = keel_coroutine_create(co_entry, NULL);
    keel_coroutine_enter(co);
    keel_aio_context_unref(ctx);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    g_file_get_contents(path, &text, &len, NULL);
    unlink(path);

    keel_test_plan(9);
    KEEL_OK(true, "the host is still running after libkeel read KEEL_AVOID=bogus");
    KEEL_OK(text && count_lines(text, "unknown word 'bogus'") == 1,
            "the unknown word is reported exactly once");
    KEEL_OK(text && strstr(text, "'nosuch'") && strstr(text, "ignored"),
            "the report names every unknown word and says it is ignored");
    KEEL_OK(keel_avoid(KEEL_PATH_EVENTFD) && keel_avoid(KEEL_PATH_PPOLL) &&
            !keel_avoid(KEEL_PATH_SIGNALFD),
            "the known words (blanks trimmed) still apply, and only they");
    KEEL_OK(was_set, "the event notifier (its pipe fallback) works");
    KEEL_IS(keel_avoid_init(&error), -1, "keel_avoid_init still reports the bad list");
    KEEL_OK(error && strstr(error, "'bogus'"), "...naming the word, for programs that exit 1");
    KEEL_OK(co_ran && text && strstr(text, "KEEL_COROUTINE_STACK_SIZE='lots'"),
            "a bad KEEL_COROUTINE_STACK_SIZE is reported and coroutines run");
    KEEL_IS(keel_avoid_parse_for_testing("  epoll ,\tmemfd", &error), 0,
            "blanks around words are not part of them");
    if (text) {
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            keel_test_diag("stderr: %s", line);
        }
    }
    g_free(text);
    return keel_test_done();
}
