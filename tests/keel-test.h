/*
 * tests/keel-test.h — a tiny TAP producer for Keel's tests (header-only).
 *
 *   keel_test_plan(n)            "1..n" (or call keel_test_done() at the end)
 *   KEEL_OK(cond, fmt, ...)      "ok N - ..." / "not ok N - ... (file:line)"
 *   KEEL_IS(a, b, fmt, ...)      integers equal, prints both on failure
 *   keel_test_skip_all(fmt, ...) "1..0 # SKIP why" and exit 77
 *   keel_test_skip(fmt, ...)     "ok N # SKIP why"
 *   keel_test_done()             prints the plan if none was given; returns
 *                                the exit status (1 if anything failed)
 *
 * Thread rules: KEEL_OK may be called from any thread (serialised by a mutex).
 */
#ifndef KEEL_TESTS_KEEL_TEST_H
#define KEEL_TESTS_KEEL_TEST_H

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static int keel_test_count_;
static int keel_test_failed_;
static int keel_test_planned_;
static pthread_mutex_t keel_test_lock_ = PTHREAD_MUTEX_INITIALIZER;

static inline void keel_test_plan(int n)
{
    keel_test_planned_ = n;
    printf("1..%d\n", n);
    fflush(stdout);
}

static inline bool keel_test_vok_(bool ok, const char *file, int line,
                                  const char *fmt, va_list ap)
{
    pthread_mutex_lock(&keel_test_lock_);
    int n = ++keel_test_count_;
    printf("%sok %d - ", ok ? "" : "not ", n);
    vprintf(fmt, ap);
    if (!ok) {
        printf(" (%s:%d)", file, line);
        keel_test_failed_++;
    }
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&keel_test_lock_);
    return ok;
}

static inline bool keel_test_ok_(bool ok, const char *file, int line,
                                 const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline bool keel_test_ok_(bool ok, const char *file, int line,
                                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool r = keel_test_vok_(ok, file, line, fmt, ap);
    va_end(ap);
    return r;
}

#define KEEL_OK(cond, ...) keel_test_ok_(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

#define KEEL_IS(a, b, ...) __extension__ ({ \
        long long keel_a_ = (long long)(a), keel_b_ = (long long)(b); \
        bool keel_r_ = KEEL_OK(keel_a_ == keel_b_, __VA_ARGS__); \
        if (!keel_r_) printf("#   got %lld, expected %lld\n", keel_a_, keel_b_); \
        keel_r_; })

static inline void keel_test_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void keel_test_diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

static inline void keel_test_skip_all(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void keel_test_skip_all(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("1..0 # SKIP ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    exit(77);
}

static inline void keel_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void keel_test_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&keel_test_lock_);
    printf("ok %d # SKIP ", ++keel_test_count_);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&keel_test_lock_);
    va_end(ap);
}

static inline int keel_test_done(void)
{
    if (!keel_test_planned_) {
        printf("1..%d\n", keel_test_count_);
    } else if (keel_test_planned_ != keel_test_count_) {
        printf("# planned %d tests but ran %d\n", keel_test_planned_, keel_test_count_);
        return 1;
    }
    fflush(stdout);
    return keel_test_failed_ ? 1 : 0;
}

#endif
