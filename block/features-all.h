/*
 * block/features-all.h — register the features of every library layer
 * (compat, loop, coroutine, block) in one call, for keel-features,
 * keel-img --features and keel-vmm --features.  Main thread, at start-up.
 */
#ifndef KEEL_BLOCK_FEATURES_ALL_H
#define KEEL_BLOCK_FEATURES_ALL_H

#include "../compat/features.h"
#include "../loop/main-loop.h"
#include "../coroutine/coroutine.h"
#include "block-backend.h"

#ifdef __cplusplus
extern "C" {
#endif

static inline void keel_all_features_register(void)
{
    keel_compat_features_register();
    keel_loop_features_register();
    keel_coroutine_features_register();
    keel_block_features_register();
}

#ifdef __cplusplus
}
#endif

#endif
