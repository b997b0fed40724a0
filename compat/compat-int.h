/*
 * compat/compat-int.h — internal to compat/: the seams' feature records,
 * collected by keel_compat_features_register().  Not installed.
 */
#ifndef KEEL_COMPAT_COMPAT_INT_H
#define KEEL_COMPAT_COMPAT_INT_H

#include "compat/features.h"

extern const KeelFeature compat_event_notifier_feature;
extern const KeelFeature compat_signalfd_feature;
extern const KeelFeature compat_poll_feature;
extern const KeelFeature compat_pipe2_feature;

#endif
