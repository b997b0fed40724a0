/*
 * vmm/guest/main.c — the user-mode (CPL3) program: command line, test
 * selection, the boot test, and the result line.
 *
 * Command line: key=value words (words without '=' are ignored: QEMU puts
 * the kernel's file name first).  Unknown keys are an error, so a typo
 * cannot silently run the wrong test.
 *   test=boot         banner, memory map, PCI list, CPL3 round trip,
 *                     interrupt, clock (the default without rw=)
 *   test=triplefault  deliberately triple-faults (tests the VMM's report)
 *   test=blk          virtio-blk workload (the default when rw= is given)
 *   test=badchain     malformed virtqueue chains, one at a time
 *   test=hostile      transport rule-breaking (reset in flight, bad set-ups,
 *                     config writes, bogus MSI-X, a BAR moved while live)
 *   exit=N            status for a passing run (default 0)
 *   cpus=N            use at most N CPUs (default: every CPU the MADT or MP
 *                     table lists; test=boot and test=blk only)
 * The workload's own keys are listed in workload.c (and vmm/guest/README).
 *
 * Output contract: every line starts with "KEEL-GUEST: "; the last one is
 *   KEEL-GUEST: RESULT status=ok|fail test=NAME key=value...
 * and the debug-exit status is exit=N on success, else EXIT_* (guest.h).
 */
#include "config.h"

#include "vmm/guest/guest.h"

static const char *const known_keys[] = {
    "test", "exit", "verbose", "cpus",
    /* workload.c */
    "rw", "bs", "iodepth", "size", "runtime", "verify", "flush", "discard",
    "seed", "mode", "offset", "dev", "write_zeroes", "gen", "event_idx",
};

#define MAX_WORDS 64
static const char *word_key[MAX_WORDS], *word_value[MAX_WORDS];
static unsigned nwords;
static char cmdline_buf[2048];

static bool cmdline_parse(void)
{
    char *p = cmdline_buf;
    bool ok = true;

    ksnprintf(cmdline_buf, sizeof(cmdline_buf), "%s", boot_cmdline);
    while (*p) {
        while (*p == ' ' || *p == '\t') {
            *p++ = '\0';
        }
        if (!*p) {
            break;
        }
        char *word = p;
        while (*p && *p != ' ' && *p != '\t') {
            p++;
        }
        if (*p) {
            *p++ = '\0';
        }
        char *eq = word;
        while (*eq && *eq != '=') {
            eq++;
        }
        if (!*eq) {
            continue;
        }
        *eq = '\0';
        bool known = false;
        for (unsigned i = 0; i < ARRAY_SIZE(known_keys); i++) {
            known |= !strcmp(word, known_keys[i]);
        }
        if (!known) {
            kprintf("KEEL-GUEST: unknown option '%s'\n", word);
            ok = false;
            continue;
        }
        if (nwords == MAX_WORDS) {
            kprintf("KEEL-GUEST: too many options\n");
            return false;
        }
        word_key[nwords] = word;
        word_value[nwords++] = eq + 1;
    }
    return ok;
}

const char *cmdline_get(const char *key)
{
    const char *v = NULL;

    for (unsigned i = 0; i < nwords; i++) {      /* the last one wins */
        if (!strcmp(word_key[i], key)) {
            v = word_value[i];
        }
    }
    return v;
}

static void __attribute__((noreturn)) bad_cmdline(const char *key, const char *value)
{
    kprintf("KEEL-GUEST: bad value '%s' for %s\n", value, key);
    kprintf("KEEL-GUEST: RESULT status=fail reason=bad-cmdline key=%s\n", key);
    guest_exit(EXIT_BAD_CMDLINE);
}

uint64_t cmdline_u64(const char *key, uint64_t dflt)
{
    const char *v = cmdline_get(key);
    uint64_t n;

    if (!v) {
        return dflt;
    }
    if (!parse_u64(v, &n)) {
        bad_cmdline(key, v);
    }
    return n;
}

/* ---- test=boot ------------------------------------------------------------- */
static bool check_cpl3(void)
{
    /* The CPL comes from the trap frame the CPU (or the VMM) built for our
     * system call: `mov %cs` reads host selectors under kvm_pvm.  IOPL is
     * informational: kvm_pvm reports 0 and port I/O works through the TSS
     * bitmap (this very line goes out through port I/O). */
    uint64_t info = syscall3(SYS_INFO, 0, 0, 0);
    uint16_t kernel_cs = info & 0xffff, caller_cs = (info >> 16) & 0xffff;
    unsigned iopl = (read_rflags() >> 12) & 3;
    bool ok = caller_cs == USER_CS && !kernel_depth[0];

    kprintf("KEEL-GUEST: cpl3 %s cpl=%u caller_cs=0x%x kernel_cs=0x%x "
            "iopl=%u\n", ok ? "ok" : "FAILED", caller_cs & 3u, caller_cs,
            kernel_cs, iopl);
    return ok;
}

/* Proves interrupts work both ways the workloads use them: arriving while
 * CPL3 code runs with IF=1 (stack switch through TSS.RSP0), and waking a
 * hlt in the kernel (SYS_WAIT_IRQ). */
static bool check_irq(void)
{
    const uint64_t timeout_cycles = tsc_khz * 2000;    /* 2 s */
    bool ok = true;

    pic_init();
    pit_start_periodic(1000);
    pic_unmask(0, false);

    uint64_t start = irq_state.count[0], t0 = rdtsc();
    syscall3(SYS_SET_IF, 1, 0, 0);
    while (irq_state.count[0] < start + 2 && rdtsc() - t0 < timeout_cycles) {
        cpu_relax();
    }
    syscall3(SYS_SET_IF, 0, 0, 0);
    uint64_t at_cpl3 = irq_state.count[0] - start;
    uint64_t cs_seen = irq_state.last_cs;
    ok = at_cpl3 >= 2 && (cs_seen & 3) == 3;

    uint64_t woken = 0;
    if (ok) {                            /* only with a ticking PIT: hlt */
        uint64_t before = irq_state.count[0];
        syscall3(SYS_WAIT_IRQ, irq_state.cpu_total[0], 0, 0);
        woken = irq_state.count[0] - before;
        ok = woken >= 1;
    }
    pic_mask(0);
    pit_stop();
    kprintf("KEEL-GUEST: irq %s irq0 vector=0x20 ticks_at_cpl3=%lu "
            "interrupted_cs=0x%lx hlt_wakeups=%lu\n", ok ? "ok" : "FAILED",
            at_cpl3, cs_seen, woken);
    return ok;
}

/* Each CPU proves it runs at CPL3 and took the wake-up IPI. */
static volatile uint64_t cpu_checked[GUEST_MAX_CPUS];

static void check_cpu(unsigned cpu, void *arg)
{
    uint64_t info = syscall3(SYS_INFO, 0, 0, 0);

    (void)arg;
    if (((info >> 16) & 0xffff) == USER_CS && !kernel_depth[cpu]) {
        cpu_checked[cpu]++;
    }
}

static bool check_smp(void)
{
    unsigned good = 0;

    smp_run_all(check_cpu, NULL);
    for (unsigned cpu = 0; cpu < smp_ncpus; cpu++) {
        good += cpu_checked[cpu] == 1;
    }
    kprintf("KEEL-GUEST: smp %s: %u of %u CPUs ran work at CPL3\n",
            good == smp_ncpus ? "ok" : "FAILED", good, smp_ncpus);
    return good == smp_ncpus;
}

static int test_boot(void)
{
    unsigned n = pci_enumerate(true);
    bool pci_ok = n > 0;
    kprintf("KEEL-GUEST: pci %u functions\n", n);
    bool cpl3_ok = check_cpl3();
    bool irq_ok = check_irq();
    bool smp_ok = check_smp();
    bool ok = pci_ok && cpl3_ok && irq_ok && smp_ok;

    kprintf("KEEL-GUEST: RESULT status=%s test=boot pci_functions=%u cpl3=%s "
            "irq=%s tsc_khz=%lu cpus=%u smp=%s\n", ok ? "ok" : "fail", n,
            cpl3_ok ? "ok" : "fail", irq_ok ? "ok" : "fail", tsc_khz, smp_ncpus,
            smp_ok ? "ok" : "fail");
    return ok ? 0 : -1;
}

void user_main(unsigned cpu)
{
    (void)cpu;                  /* the BSP is cpu 0 */
    kprintf("\nKEEL-GUEST: keel test guest " GUEST_VERSION
            " (x86-64, multiboot v1)\n");
    mm_init();
    kprintf("KEEL-GUEST: cmdline: %s\n", boot_cmdline);
    if (!cmdline_parse()) {
        kprintf("KEEL-GUEST: RESULT status=fail reason=bad-cmdline\n");
        guest_exit(EXIT_BAD_CMDLINE);
    }
    uint64_t exit_status = cmdline_u64("exit", 0);
    if (exit_status > 255) {
        bad_cmdline("exit", cmdline_get("exit"));
    }
    const char *test = cmdline_get("test");
    if (!test) {
        test = cmdline_get("rw") ? "blk" : "boot";
    }

    bool calibrated = clock_init();
    kprintf("KEEL-GUEST: clock tsc_khz=%lu source=%s%s\n", tsc_khz, tsc_source,
            calibrated ? "" : " (uncalibrated)");

    if (!strcmp(test, "boot") || !strcmp(test, "blk")) {
        uint64_t max_cpus = cmdline_u64("cpus", 0);
        if (max_cpus > GUEST_MAX_CPUS) {
            bad_cmdline("cpus", cmdline_get("cpus"));
        }
        smp_init((unsigned)max_cpus);
    }

    int r;
    if (!strcmp(test, "boot")) {
        r = test_boot();
    } else if (!strcmp(test, "triplefault")) {
        kprintf("KEEL-GUEST: triple-faulting now (empty IDT + ud2)\n");
        syscall3(SYS_TRIPLE_FAULT, 0, 0, 0);
        kprintf("KEEL-GUEST: RESULT status=fail test=triplefault reason=still-running\n");
        r = -1;
    } else if (!strcmp(test, "blk") || !strcmp(test, "badchain") || !strcmp(test, "hostile")) {
        r = run_block_test(test);
    } else {
        bad_cmdline("test", test);
    }
    guest_exit(r == 0 ? (int)exit_status : EXIT_TEST_FAILED);
}
