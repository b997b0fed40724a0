/*
 * Boots tiny hand-made multiboot guests in keel-vmm and checks what they
 * print and how keel-vmm ends: the multiboot hand-off (EAX magic, EBX info
 * with the command line), the serial port both ways, PCI conf1, unclaimed
 * ports, debug-exit statuses, a triple fault, an i8042 reset, SIGTERM while
 * the vCPU sleeps in HLT, ELF32 and ELF64 containers, and the stop of a
 * guest whose format we cannot load.
 *
 * The guest code is 32-bit x86 (assembled once by hand; the listing is in
 * guest_code below).  Each test picks an entry point in it.
 *
 * Skips (77) when /dev/kvm cannot be opened.
 */
#include "config.h"

#include "tests/keel-test.h"

#include <elf.h>
#include <glib.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOAD_ADDR 0x100000u
#define CODE_OFF 0x20u          /* code follows the multiboot header */
#define IMAGE_MEMSZ 0x200u      /* 0x100100 (the zero IDT descriptor) is bss */

/*
 *  0  hello:  cmp $0x2badb002,%eax; jne bad; mov 16(%ebx),%esi  (cmdline)
 *             mov $0x3f8,%dx; 1: lodsb; test %al,%al; je 2f; out %al,(%dx); jmp 1b
 *          2: mov $0xa,%al; out %al,(%dx); mov $0x21,%al; mov $0xf4,%dx; out; hlt
 * 21  bad:    mov $7,%al; mov $0xf4,%dx; out %al,(%dx); hlt
 * 29  pci:    outl 0x80000000 → 0xcf8; inl 0xcfc == 0x00081b36 (host bridge)
 *             outl 0x80000800 → 0xcf8; inl 0xcfc == ~0 (empty slot 1)
 *             inb 0x99 == 0xff (unclaimed port); outb 0x10 → 0xf4; hlt
 * 5e  tf:     lidt 0x100100 (limit 0); ud2   → #UD, #DF, triple fault
 * 67  echo:   poll LSR.DR; inb 0x3f8; outb 0x3f8; until '\n'; outb 0x22 → 0xf4
 * 7f  reset:  outb 0xfe → 0x64; hlt
 * 84  halt:   cli; hlt; jmp halt
 */
static const uint8_t guest_code[] = {
    0x3d, 0x02, 0xb0, 0xad, 0x2b, 0x75, 0x1a, 0x8b, 0x73, 0x10, 0x66, 0xba, 0xf8, 0x03,
    0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xb0, 0x0a, 0xee, 0xb0, 0x21, 0x66,
    0xba, 0xf4, 0x00, 0xee, 0xf4,
    /* 0x21 bad */
    0xb0, 0x07, 0x66, 0xba, 0xf4, 0x00, 0xee, 0xf4,
    /* 0x29 pci */
    0x66, 0xba, 0xf8, 0x0c, 0xb8, 0x00, 0x00, 0x00, 0x80, 0xef, 0x66, 0xba, 0xfc, 0x0c,
    0xed, 0x3d, 0x36, 0x1b, 0x08, 0x00, 0x75, 0xe2, 0x66, 0xba, 0xf8, 0x0c, 0xb8, 0x00,
    0x08, 0x00, 0x80, 0xef, 0x66, 0xba, 0xfc, 0x0c, 0xed, 0x83, 0xf8, 0xff, 0x75, 0xce,
    0xe4, 0x99, 0x3c, 0xff, 0x75, 0xc8, 0xb0, 0x10, 0xe6, 0xf4, 0xf4,
    /* 0x5e tf */
    0x0f, 0x01, 0x1d, 0x00, 0x01, 0x10, 0x00, 0x0f, 0x0b,
    /* 0x67 echo */
    0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xfb, 0x66, 0xba, 0xf8, 0x03, 0xec,
    0xee, 0x3c, 0x0a, 0x75, 0xed, 0xb0, 0x22, 0xe6, 0xf4, 0xf4,
    /* 0x7f reset */
    0xb0, 0xfe, 0xe6, 0x64, 0xf4,
    /* 0x84 halt */
    0xfa, 0xf4, 0xeb, 0xfc,
};

enum {
    ENTRY_HELLO = 0x00, ENTRY_PCI = 0x29, ENTRY_TRIPLE_FAULT = 0x5e, ENTRY_ECHO = 0x67,
    ENTRY_RESET = 0x7f, ENTRY_HALT = 0x84,
};

static char tmpdir[] = "/tmp/keel-vmm-boot-XXXXXX";
static const char *vmm_path;
static const char *const *wrapper;     /* argv prefix (e.g. strace), or NULL */

/* The image: multiboot header (magic, flags 0x3, checksum) then the code. */
static size_t build_image(uint8_t *img)
{
    uint32_t hdr[3] = { 0x1BADB002u, 0x3u, (uint32_t)-(0x1BADB002u + 0x3u) };

    memset(img, 0, CODE_OFF + sizeof(guest_code));
    memcpy(img, hdr, sizeof(hdr));
    memcpy(img + CODE_OFF, guest_code, sizeof(guest_code));
    return CODE_OFF + sizeof(guest_code);
}

static int write_file(const char *path, const void *a, size_t alen, const void *b, size_t blen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    bool ok;

    if (fd < 0) {
        return -1;
    }
    ok = write(fd, a, alen) == (ssize_t)alen && (!blen || write(fd, b, blen) == (ssize_t)blen);
    close(fd);
    return ok ? 0 : -1;
}

/* A multiboot ELF32 (or ELF64 container) with one PT_LOAD at 1 MiB. */
static char *make_guest(const char *name, unsigned entry_off, bool elf64)
{
    uint8_t img[CODE_OFF + sizeof(guest_code)];
    size_t len = build_image(img);
    char *path = g_strdup_printf("%s/%s", tmpdir, name);
    uint32_t entry = LOAD_ADDR + CODE_OFF + entry_off;
    int r;

    if (!elf64) {
        struct { Elf32_Ehdr eh; Elf32_Phdr ph; } h;
        memset(&h, 0, sizeof(h));
        memcpy(h.eh.e_ident, ELFMAG, SELFMAG);
        h.eh.e_ident[EI_CLASS] = ELFCLASS32;
        h.eh.e_ident[EI_DATA] = ELFDATA2LSB;
        h.eh.e_ident[EI_VERSION] = EV_CURRENT;
        h.eh.e_type = ET_EXEC;
        h.eh.e_machine = EM_386;
        h.eh.e_version = EV_CURRENT;
        h.eh.e_entry = entry;
        h.eh.e_phoff = sizeof(h.eh);
        h.eh.e_ehsize = sizeof(h.eh);
        h.eh.e_phentsize = sizeof(h.ph);
        h.eh.e_phnum = 1;
        h.ph.p_type = PT_LOAD;
        h.ph.p_offset = sizeof(h);
        h.ph.p_vaddr = h.ph.p_paddr = LOAD_ADDR;
        h.ph.p_filesz = (uint32_t)len;
        h.ph.p_memsz = IMAGE_MEMSZ;
        h.ph.p_flags = PF_R | PF_W | PF_X;
        r = write_file(path, &h, sizeof(h), img, len);
    } else {
        /* Linked high (as 64-bit kernels are): the loader must translate
         * the virtual entry point through the segment's physical address. */
        const uint64_t vbase = 0xffffffff80000000ull;
        struct { Elf64_Ehdr eh; Elf64_Phdr ph; } h;
        memset(&h, 0, sizeof(h));
        memcpy(h.eh.e_ident, ELFMAG, SELFMAG);
        h.eh.e_ident[EI_CLASS] = ELFCLASS64;
        h.eh.e_ident[EI_DATA] = ELFDATA2LSB;
        h.eh.e_ident[EI_VERSION] = EV_CURRENT;
        h.eh.e_type = ET_EXEC;
        h.eh.e_machine = EM_X86_64;
        h.eh.e_version = EV_CURRENT;
        h.eh.e_entry = vbase + entry;
        h.eh.e_phoff = sizeof(h.eh);
        h.eh.e_ehsize = sizeof(h.eh);
        h.eh.e_phentsize = sizeof(h.ph);
        h.eh.e_phnum = 1;
        h.ph.p_type = PT_LOAD;
        h.ph.p_offset = sizeof(h);
        h.ph.p_vaddr = vbase + LOAD_ADDR;
        h.ph.p_paddr = LOAD_ADDR;
        h.ph.p_filesz = len;
        h.ph.p_memsz = IMAGE_MEMSZ;
        h.ph.p_flags = PF_R | PF_W | PF_X;
        r = write_file(path, &h, sizeof(h), img, len);
    }
    if (r < 0) {
        keel_test_skip_all("cannot write %s: %s", path, strerror(errno));
    }
    return path;
}

typedef struct Run {
    int status;             /* exit status, or 128+signal */
    GString *out, *err;
    bool timed_out;
} Run;

/* Runs keel-vmm with @args, feeding @input on stdin; @signal_after_ms (if
 * > 0) after its start-up line, sends SIGTERM.  Kills it after 60 s. */
static void run_vmm(Run *run, const char *const *args, const char *input, int signal_after_ms)
{
    int out[2], err[2], in[2];
    pid_t pid;
    GPtrArray *argv = g_ptr_array_new();
    int64_t start = g_get_monotonic_time(), started_ms = -1;
    bool signalled = false, out_open = true, err_open = true;

    for (int i = 0; wrapper && wrapper[i]; i++) {
        g_ptr_array_add(argv, (char *)wrapper[i]);
    }
    g_ptr_array_add(argv, (char *)vmm_path);
    for (int i = 0; args[i]; i++) {
        g_ptr_array_add(argv, (char *)args[i]);
    }
    g_ptr_array_add(argv, NULL);
    memset(run, 0, sizeof(*run));
    run->out = g_string_new(NULL);
    run->err = g_string_new(NULL);
    if (pipe(out) < 0 || pipe(err) < 0 || pipe(in) < 0) {
        keel_test_skip_all("pipe: %s", strerror(errno));
    }
    pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(in[1]);
        close(out[0]);
        close(err[0]);
        execv(argv->pdata[0], (char **)argv->pdata);
        _exit(126);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    if (input && write(in[1], input, strlen(input)) < 0) {
        /* the guest may not read it; not fatal */
    }
    close(in[1]);
    while (out_open || err_open) {
        GPollFD fds[2] = { { out[0], G_IO_IN, 0 }, { err[0], G_IO_IN, 0 } };
        int64_t elapsed_ms = (g_get_monotonic_time() - start) / 1000;
        char buf[4096];

        /* The signal goes signal_after_ms after keel-vmm's start-up line,
         * which it prints once it handles signals: before that, SIGTERM's
         * default action would end it (a slow host takes seconds). */
        if (started_ms < 0 && strstr(run->err->str, " boot=") != NULL) {
            started_ms = elapsed_ms;
        }
        if (!signalled && signal_after_ms > 0 && started_ms >= 0 &&
            elapsed_ms - started_ms >= signal_after_ms) {
            kill(pid, SIGTERM);
            signalled = true;
        }
        if (elapsed_ms > 60000) {
            kill(pid, SIGKILL);
            run->timed_out = true;
            break;
        }
        fds[0].fd = out_open ? out[0] : -1;
        fds[1].fd = err_open ? err[0] : -1;
        g_poll(fds, 2, 50);
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd >= 0 && (fds[i].revents & (G_IO_IN | G_IO_HUP | G_IO_ERR))) {
                ssize_t n = read(fds[i].fd, buf, sizeof(buf));
                if (n <= 0) {
                    if (i == 0) {
                        out_open = false;
                    } else {
                        err_open = false;
                    }
                } else {
                    g_string_append_len(i == 0 ? run->out : run->err, buf, n);
                }
            }
        }
    }
    close(out[0]);
    close(err[0]);
    {
        int st;
        waitpid(pid, &st, 0);
        run->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    g_ptr_array_free(argv, TRUE);
    if (run->err->len) {
        char **lines = g_strsplit(run->err->str, "\n", -1);
        for (int i = 0; lines[i]; i++) {
            if (*lines[i]) {
                keel_test_diag("stderr: %s", lines[i]);
            }
        }
        g_strfreev(lines);
    }
}

static void run_free(Run *run)
{
    g_string_free(run->out, TRUE);
    g_string_free(run->err, TRUE);
}

/* Lines on stderr, not counting "keel: " lines: those report a run-time
 * fallback (e.g. no memfd_create under an old-kernel preset) and are wanted. */
static int count_lines(const char *s)
{
    int n = 0;
    bool at_start = true;

    for (; *s; s++) {
        if (at_start && !strncmp(s, "keel: ", 6)) {
            s = strchr(s, '\n');
            if (!s) {
                break;
            }
            continue;
        }
        at_start = *s == '\n';
        n += at_start;
    }
    return n;
}

int main(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    char *hello32, *hello64, *pci, *tf, *echo, *reset, *halt, *junk;
    Run run;

    if (fd < 0) {
        keel_test_skip_all("cannot open /dev/kvm: %s", strerror(errno));
    }
    close(fd);
    vmm_path = getenv("KEEL_VMM");
    if (!vmm_path) {
        const char *top = getenv("top_builddir");
        vmm_path = g_strdup_printf("%s/vmm/keel-vmm", top ? top : ".");
    }
    if (access(vmm_path, X_OK) < 0) {
        keel_test_skip_all("%s not built", vmm_path);
    }
    if (!mkdtemp(tmpdir)) {
        keel_test_skip_all("mkdtemp: %s", strerror(errno));
    }
    hello32 = make_guest("hello32.elf", ENTRY_HELLO, false);
    hello64 = make_guest("hello64.elf", ENTRY_HELLO, true);
    pci = make_guest("pci.elf", ENTRY_PCI, false);
    tf = make_guest("tf.elf", ENTRY_TRIPLE_FAULT, false);
    echo = make_guest("echo.elf", ENTRY_ECHO, false);
    reset = make_guest("reset.elf", ENTRY_RESET, false);
    halt = make_guest("halt.elf", ENTRY_HALT, false);
    junk = g_strdup_printf("%s/junk.bin", tmpdir);
    write_file(junk, "this is not a kernel\n", 21, NULL, 0);

    /* Multiboot hand-off and serial output; debug-exit 0x21 → 67. */
    run_vmm(&run, (const char *const[]) { "-kernel", hello32, "-append", "hello from multiboot",
                                          NULL }, NULL, 0);
    KEEL_IS(run.status, (0x21 << 1) | 1, "ELF32 multiboot guest exits through debug-exit");
    KEEL_OK(!strcmp(run.out->str, "hello from multiboot\n"),
            "it printed its command line on COM1");
    KEEL_OK(strstr(run.err->str, "keel-vmm: kvm ioeventfd=") != NULL &&
            strstr(run.err->str, "boot=multiboot") != NULL,
            "start-up line names the KVM paths and the boot protocol");
    KEEL_IS(count_lines(run.err->str), 1, "nothing else on stderr");
    run_free(&run);

    run_vmm(&run, (const char *const[]) { "-kernel", hello64, "-append", "sixty-four", "-m", "64",
                                          NULL }, NULL, 0);
    KEEL_IS(run.status, 67, "ELF64-container multiboot guest (high virtual entry) boots");
    KEEL_OK(!strcmp(run.out->str, "sixty-four\n"), "and prints its command line");
    run_free(&run);

    /* More than 3 GiB of RAM: split around the PCI hole; still boots. */
    run_vmm(&run, (const char *const[]) { "-kernel", hello32, "-append", "big", "-m", "4G",
                                          NULL }, NULL, 0);
    KEEL_IS(run.status, 67, "-m 4G (RAM split around the PCI hole) boots");
    run_free(&run);

    run_vmm(&run, (const char *const[]) { "-kernel", pci, NULL }, NULL, 0);
    KEEL_IS(run.status, (0x10 << 1) | 1,
            "PCI conf1: host bridge at 00:00.0, empty slot and unclaimed port read all-ones");
    run_free(&run);

    run_vmm(&run, (const char *const[]) { "-kernel", echo, NULL }, "ping\n", 0);
    KEEL_IS(run.status, (0x22 << 1) | 1, "guest read stdin through the UART");
    KEEL_OK(!strcmp(run.out->str, "ping\n"), "and echoed it");
    run_free(&run);

    run_vmm(&run, (const char *const[]) { "-kernel", tf, NULL }, NULL, 0);
    KEEL_IS(run.status, 2, "a triple fault ends keel-vmm with status 2");
    KEEL_OK(strstr(run.err->str, "keel-vmm: guest triple-faulted") != NULL,
            "with a clear message");
    run_free(&run);

    run_vmm(&run, (const char *const[]) { "-kernel", reset, NULL }, NULL, 0);
    KEEL_IS(run.status, 0, "i8042 reset (0xfe to port 0x64) exits 0");
    KEEL_OK(strstr(run.err->str, "guest reset") != NULL, "and says so");
    run_free(&run);

    run_vmm(&run, (const char *const[]) { "-kernel", halt, NULL }, NULL, 1500);
    KEEL_IS(run.status, 0, "SIGTERM stops a guest sleeping in HLT; exit 0");
    KEEL_OK(strstr(run.err->str, "terminating on signal 15") != NULL, "and names the signal");
    KEEL_OK(!run.timed_out, "without hanging");
    run_free(&run);

    /* The same with the kick of kernels before 4.11 (KVM_SET_SIGNAL_MASK:
     * the kick signal is deliverable only inside KVM_RUN). */
    setenv("KEEL_VMM_NO_IMMEDIATE_EXIT", "1", 1);
    run_vmm(&run, (const char *const[]) { "-kernel", halt, NULL }, NULL, 1500);
    KEEL_IS(run.status, 0, "SIGTERM with the signal-mask kick: exit 0");
    KEEL_OK(strstr(run.err->str, "kick=signal-mask") != NULL, "start-up line says kick=signal-mask");
    KEEL_OK(!run.timed_out, "without hanging");
    run_free(&run);
    run_vmm(&run, (const char *const[]) { "-kernel", echo, NULL }, "pong\n", 0);
    KEEL_IS(run.status, (0x22 << 1) | 1, "guest runs normally with the signal-mask kick");
    run_free(&run);
    unsetenv("KEEL_VMM_NO_IMMEDIATE_EXIT");

    /* memfd_create refused (old kernel, or a seccomp filter) when the user
     * asked for memory-backend-memfd: an explicit request that cannot be
     * met fails with a clear message (only defaults fall back). */
    if (access("/usr/bin/strace", X_OK) == 0) {
        char *asan = g_strdup(getenv("ASAN_OPTIONS"));

        /* LeakSanitizer cannot run under ptrace (--enable-sanitizers builds). */
        setenv("ASAN_OPTIONS", "detect_leaks=0", 1);
        wrapper = (const char *const[]) { "/usr/bin/strace", "-f", "-qq", "-o", "/dev/null",
                                          "-e", "inject=memfd_create:error=EPERM", NULL };
        run_vmm(&run, (const char *const[]) { "-kernel", hello32, "-append", "anon",
                                              "-object", "memory-backend-memfd,id=m0",
                                              "-machine", "memory-backend=m0", NULL },
                NULL, 0);
        wrapper = NULL;
        if (asan) {
            setenv("ASAN_OPTIONS", asan, 1);
        } else {
            unsetenv("ASAN_OPTIONS");
        }
        g_free(asan);
        KEEL_IS(run.status, 1, "memory-backend-memfd with memfd_create refused: exit 1");
        KEEL_OK(strstr(run.err->str, "-object memory-backend-memfd: memfd_create is not "
                       "available (EPERM)") != NULL && run.out->len == 0,
                "naming the object and the error, before the guest ran");
        run_free(&run);
    } else {
        keel_test_skip("strace not installed: cannot refuse memfd_create");
        keel_test_skip("strace not installed: cannot refuse memfd_create");
    }

    /* Under the old-kernel launcher (2.6.18: no KVM ioeventfd/irqfd/MSI/
     * routing, no memfd, eventfd, signalfd, pipe2): every fallback at once. */
    {
        const char *top = getenv("top_builddir");
        char *launcher = g_strdup_printf("%s/tests/keel-oldkernel", top ? top : ".");
        if (access(launcher, X_OK) == 0) {
            wrapper = (const char *const[]) { launcher, "--preset", "2.6.18", "--", NULL };
            run_vmm(&run, (const char *const[]) { "-kernel", echo, NULL }, "old\n", 0);
            KEEL_IS(run.status, (0x22 << 1) | 1, "2.6.18 preset: guest runs, serial both ways");
            KEEL_OK(strstr(run.err->str, "ioeventfd=no(exit-handler) irqfd=no(ioctl) "
                           "signal-msi=no(intx) gsi-routing=no") &&
                    strstr(run.err->str, "ram=anonymous"),
                    "2.6.18 preset: the start-up line names every fallback");
            run_free(&run);
            run_vmm(&run, (const char *const[]) { "-kernel", halt, NULL }, NULL, 1500);
            KEEL_IS(run.status, 0, "2.6.18 preset: SIGTERM (signal thread) still stops it");
            run_free(&run);
            wrapper = NULL;
        } else {
            for (int i = 0; i < 3; i++) {
                keel_test_skip("%s not built", launcher);
            }
        }
        g_free(launcher);
    }

    run_vmm(&run, (const char *const[]) { "-kernel", junk, NULL }, NULL, 0);
    KEEL_IS(run.status, 1, "an unknown kernel format exits 1");
    KEEL_OK(strstr(run.err->str, "unknown kernel format") && count_lines(run.err->str) == 1,
            "with one line naming the problem");
    run_free(&run);

    for (char **p = (char *[]) { hello32, hello64, pci, tf, echo, reset, halt, junk, NULL };
         *p; p++) {
        unlink(*p);
        g_free(*p);
    }
    rmdir(tmpdir);
    if (vmm_path != getenv("KEEL_VMM")) {
        g_free((char *)vmm_path);
    }
    return keel_test_done();
}
