/*
 * keel-features: print, for every seam of every layer, what was compiled in
 * and what is in use on this machine now (see compat/features.h for the
 * line format).  Exits 1 when KEEL_AVOID holds an unknown word.
 */
#include "config.h"

#include "compat/avoid.h"
#include "compat/features.h"
#include "block/features-all.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    const char *error;

    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: keel-features [--help | --version]\n"
               "Prints \"keel VERSION\", then one line per portability seam:\n"
               "  <seam> active=<path> compiled=<paths> reason=<why>\n"
               "KEEL_AVOID=word,... forces fallbacks (see keel-features(1), README).\n");
        return 0;
    }
    if (argc == 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
        printf("keel-features %s\n", PACKAGE_VERSION);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "keel-features: unknown argument '%s' (try --help)\n",
                argv[argc > 2 ? 2 : 1]);
        return 1;
    }
    if (keel_avoid_init(&error) < 0) {
        fprintf(stderr, "keel-features: %s\n", error);
        return 1;
    }
    keel_all_features_register();
    printf("keel %s\n", PACKAGE_VERSION);
    keel_features_print(stdout);
    return 0;
}
