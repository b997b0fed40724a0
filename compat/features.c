/*
 * The features report: a registry of seams, printed one line per seam.
 */
#include "config.h"

#include "compat/compat-int.h"

#include <pthread.h>

#define MAX_FEATURES 64

static const KeelFeature *features[MAX_FEATURES];
static int n_features;
static pthread_mutex_t features_lock = PTHREAD_MUTEX_INITIALIZER;

void keel_feature_register(const KeelFeature *feature)
{
    pthread_mutex_lock(&features_lock);
    for (int i = 0; i < n_features; i++) {
        if (features[i] == feature) {
            goto out;
        }
    }
    if (n_features < MAX_FEATURES) {
        features[n_features++] = feature;
    }
out:
    pthread_mutex_unlock(&features_lock);
}

void keel_features_print(FILE *out)
{
    pthread_mutex_lock(&features_lock);
    for (int i = 0; i < n_features; i++) {
        const char *reason = "default";
        const char *active = features[i]->active(&reason);
        fprintf(out, "%s active=%s compiled=%s reason=%s\n", features[i]->name,
                active, features[i]->compiled, reason);
    }
    pthread_mutex_unlock(&features_lock);
    fflush(out);
}

void keel_compat_features_register(void)
{
    keel_feature_register(&compat_event_notifier_feature);
    keel_feature_register(&compat_signalfd_feature);
    keel_feature_register(&compat_poll_feature);
    keel_feature_register(&compat_pipe2_feature);
}
