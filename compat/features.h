/*
 * compat/features.h — the features report: for every seam, what was compiled
 * in and what is in use now, in a stable greppable form, one line per seam:
 *
 *     <name> active=<path> compiled=<path>[,<path>...] reason=<why>
 *
 * e.g. "event-notifier active=pipe compiled=eventfd,pipe reason=KEEL_AVOID".
 * Every layer registers its seams (keel_compat_features_register(), …) and
 * `keel-features` / `--features` prints them.  The active() callback may
 * probe the kernel (e.g. open and close an eventfd) so the report tells the
 * truth on this machine.
 *
 * Thread rules: register from one thread at start-up; print from any thread.
 */
#ifndef KEEL_COMPAT_FEATURES_H
#define KEEL_COMPAT_FEATURES_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct KeelFeature {
    const char *name;                           /* "event-notifier" */
    const char *compiled;                       /* "eventfd,pipe" */
    const char *(*active)(const char **reason); /* probes; returns the path */
} KeelFeature;

/* Adds @feature (kept by pointer; registering the same one twice is a no-op). */
void keel_feature_register(const KeelFeature *feature);

/* Prints every registered feature, in registration order. */
void keel_features_print(FILE *out);

/* Registers the compat seams: event-notifier, signal-fd, poll, pipe2. */
void keel_compat_features_register(void);

#ifdef __cplusplus
}
#endif

#endif
