/*
 * libFuzzer target for the QMP monitor's input side (vmm/qmp.c): the
 * bracket-counting framing, json-glib parsing and command dispatch, fed
 * arbitrary bytes in two writes (so requests are split at every point).
 * The machine is keel-vmm's real run-state object with no guest
 * (-machine none), so stop/cont/system_reset run for real; quit only sets a
 * flag.  Checks: no crash or sanitizer report, and every output text is one
 * JSON object line ending in "\r\n".
 *
 * KEEL_FUZZ_SEEDS=DIR writes a few well-formed inputs to DIR and exits.
 * Built and run by tests/fuzz-qmp.sh (make fuzz).
 */
#include "config.h"

#include "vmm/machine.h"
#include "vmm/qmp.h"
#include "loop/main-loop.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static VmmMachine *machine;
static size_t outputs;

static void check_output(void *opaque, const char *text, size_t len)
{
    (void)opaque;
    /* One JSON object per line, as QMP clients read them. */
    if (len < 4 || text[0] != '{' || text[len - 2] != '\r' || text[len - 1] != '\n' ||
        memchr(text, '\n', len - 1)) {
        fprintf(stderr, "bad QMP output: %.*s\n", (int)len, text);
        abort();
    }
    outputs++;
}

static const char *const seeds[] = {
    "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\",\"id\":1}\n",
    "{\"execute\":\"qmp_capabilities\"}{\"execute\":\"stop\"}{\"execute\":\"cont\"}",
    "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"human-monitor-command\","
    "\"arguments\":{\"command-line\":\"info status\"}}\n",
    "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"block_resize\",\"arguments\":"
    "{\"device\":\"d\",\"size\":1024}}\n",
    "garbage\n[1,2,{\"a\":\"}\\\"\"}]\n{\"execute\":1}\n",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("KEEL_FUZZ_SEEDS");

    (void)argc, (void)argv;
    if (dir) {
        for (size_t i = 0; i < G_N_ELEMENTS(seeds); i++) {
            char *path = g_strdup_printf("%s/qmp-seed-%zu", dir, i);
            g_file_set_contents(path, seeds[i], -1, NULL);
            g_free(path);
        }
        exit(0);
    }
    if (keel_main_loop_init() < 0) {
        abort();
    }
    machine = vmm_machine_new("fuzz", NULL, NULL, false, false);
    vmm_machine_start(machine);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    QmpSession *s = qmp_session_new(machine, check_output, NULL, false);
    size_t cut = size ? data[0] % (size + 1) : 0;

    qmp_session_open(s);
    qmp_session_feed(s, data, cut);
    qmp_session_feed(s, data + cut, size - cut);
    qmp_session_close(s);
    qmp_session_free(s);
    /* Undo what the input did to the (shared) machine. */
    if (!vmm_machine_running(machine)) {
        char err[128];
        vmm_machine_cont(machine, err, sizeof(err));
    }
    return 0;
}
