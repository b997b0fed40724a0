/*
 * Headless operation without KVM: the option parser's chardev, monitor and
 * lifecycle options (good lines fill VmmOptions; a bad line names every
 * problem); a mux chardev over a real unix socket (Ctrl-A escapes, focus,
 * flow control); a QMP session fed byte by byte on the real run state.
 */
#include "config.h"

#include "tests/keel-test.h"
#include "vmm/chardev.h"
#include "vmm/machine.h"
#include "vmm/options.h"
#include "vmm/qmp.h"
#include "loop/main-loop.h"

#include <glib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char kernel_path[] = "/tmp/keel-vmm-chr-XXXXXX";
static char err[4096];

static int parse(VmmOptions *o, const char *const *args)
{
    const char *argv[64] = { "keel-vmm" };
    int argc = 1;

    for (; args[argc - 1]; argc++) {
        argv[argc] = args[argc - 1];
    }
    return vmm_options_parse(o, argc, (char **)argv, err, sizeof(err));
}

#define ARGS(...) ((const char *const[]) { __VA_ARGS__, NULL })

static void bad(const char *const *args, const char *needle, const char *what)
{
    VmmOptions o;
    int r = parse(&o, args);

    KEEL_OK(r < 0 && strstr(err, needle), "%s → error naming '%s'", what, needle);
    if (r == 0) {
        vmm_options_free(&o);
    }
}

static void test_options(void)
{
    VmmOptions o;
    VmmChardevSpec *c;
    const char *k = kernel_path;

    KEEL_IS(parse(&o, ARGS("-kernel", k)), 0, "default: parses");
    c = vmm_options_find_chardev(&o, o.serial_chardev);
    KEEL_OK(c && c->backend == VMM_CHR_STDIO && c->signal && !c->mux,
            "default serial: stdio, ^C stops keel-vmm");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-kernel", k, "-nographic")), 0, "-nographic parses");
    c = vmm_options_find_chardev(&o, o.serial_chardev);
    KEEL_OK(c && c->backend == VMM_CHR_STDIO && c->mux && !c->signal && o.nr_monitors == 1 &&
            !o.monitors[0].control, "-nographic: mon:stdio (mux, HMP, ^C to the guest)");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-kernel", k, "-serial", "file:/tmp/x.log", "-S", "-no-shutdown",
                           "-name", "vm1,debug-threads=on", "-pidfile", "/tmp/p",
                           "-daemonize", "-qmp", "unix:/tmp/q.sock,server=on,wait=off",
                           "-display", "none", "-vga", "none", "-nodefaults",
                           "-no-user-config", "-monitor", "none")), 0,
            "the service line parses (%s)", err);
    c = vmm_options_find_chardev(&o, o.serial_chardev);
    KEEL_OK(c && c->backend == VMM_CHR_FILE && !strcmp(c->path, "/tmp/x.log"),
            "-serial file:PATH");
    KEEL_OK(o.start_paused && o.no_shutdown && o.daemonize && o.debug_threads &&
            !strcmp(o.name, "vm1") && !strcmp(o.pidfile, "/tmp/p"), "-S -no-shutdown "
            "-daemonize -name vm1,debug-threads=on -pidfile");
    KEEL_IS(o.nr_monitors, 1, "one monitor (-monitor none adds none)");
    c = vmm_options_find_chardev(&o, o.monitors[0].chardev);
    KEEL_OK(o.monitors[0].control && c && c->backend == VMM_CHR_SOCKET && c->server &&
            !c->wait && !strcmp(c->path, "/tmp/q.sock"), "-qmp unix:...,server=on,wait=off");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-kernel", k, "-serial", "none", "-qmp",
                           "unix:/tmp/q.sock,server,nowait")), 0, "old server,nowait spelling");
    c = vmm_options_find_chardev(&o, o.monitors[0].chardev);
    KEEL_OK(c && c->server && !c->wait && !o.serial_chardev, "server, nowait; -serial none");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-kernel", k, "-chardev", "socket,id=mon0,path=/tmp/m,server=on,"
                           "wait=off", "-mon", "chardev=mon0,mode=control,pretty=on",
                           "-chardev", "pipe,id=p0,path=/tmp/pp", "-serial", "chardev:p0")),
            0, "-chardev socket/pipe, -mon, -serial chardev:ID (%s)", err);
    KEEL_OK(o.nr_monitors == 1 && o.monitors[0].control && o.monitors[0].pretty &&
            !strcmp(o.monitors[0].chardev, "mon0") && !strcmp(o.serial_chardev, "p0"),
            "the front ends name their chardevs");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-kernel", k, "-chardev", "stdio,id=s0,mux=on,signal=off",
                           "-serial", "chardev:s0", "-mon", "chardev=s0,mode=readline")), 0,
            "a shared stdio chardev with mux=on");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-machine", "none", "-qmp", "stdio")), 0,
            "-machine none needs no -kernel; -qmp stdio takes stdio from the serial port");
    KEEL_OK(o.machine_none && !o.serial_chardev, "no default serial when stdio is taken");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-kernel", k, "-drive", "file=/tmp/d,werror=stop,rerror=ignore")), 0,
            "werror=stop,rerror=ignore");
    KEEL_OK(o.drives[0].werror == VMM_ERROR_STOP && o.drives[0].rerror == VMM_ERROR_IGNORE,
            "policies kept");
    vmm_options_free(&o);
    KEEL_IS(parse(&o, ARGS("-kernel", k, "-drive", "file=/tmp/d")), 0, "default policies");
    KEEL_OK(o.drives[0].werror == VMM_ERROR_ENOSPC && o.drives[0].rerror == VMM_ERROR_REPORT,
            "QEMU's defaults: werror=enospc, rerror=report");
    vmm_options_free(&o);

    KEEL_IS(parse(&o, ARGS("-kernel", k, "--check-args")), 0, "--check-args parses");
    KEEL_OK(o.check_args, "check_args set");
    vmm_options_free(&o);

    bad(ARGS("-kernel", k, "-drive", "file=/tmp/d,werror=sometimes"), "werror=sometimes",
        "a bad werror");
    bad(ARGS("-kernel", k, "-serial", "tcp:localhost:4444"), "TCP", "-serial tcp:");
    bad(ARGS("-kernel", k, "-chardev", "socket,id=c,host=localhost,port=4"), "TCP",
        "-chardev socket,host=");
    bad(ARGS("-kernel", k, "-chardev", "file,id=f"), "path= is required", "file without path");
    bad(ARGS("-kernel", k, "-chardev", "spice,id=f"), "'spice'", "unknown backend");
    bad(ARGS("-kernel", k, "-mon", "chardev=nope"), "chardev=nope", "-mon naming no chardev");
    bad(ARGS("-kernel", k, "-serial", "chardev:nope"), "nope", "-serial chardev:unknown");
    bad(ARGS("-kernel", k, "-chardev", "null,id=n", "-serial", "chardev:n", "-mon",
             "chardev=n"), "mux=on", "a chardev shared without mux");
    bad(ARGS("-kernel", k, "-serial", "stdio", "-qmp", "stdio"), "stdio is used by 2",
        "stdio twice");
    bad(ARGS("-kernel", k, "-daemonize", "-serial", "stdio"), "-daemonize", "daemon on stdio");
    bad(ARGS("-kernel", k, "-name", "x,colour=red"), "colour", "-name unknown key");
    bad(ARGS("-kernel", k, "-vga", "std"), "-vga std", "-vga std");
    bad(ARGS("-machine", "none", "-drive", "file=/tmp/d"), "-machine none", "-M none + -drive");
    bad(ARGS("-kernel", k, "-chardev", "socket,id=s,path=/tmp/s,wait=off"), "server=on",
        "wait=off without server");

    /* Every problem in one run: four refusals of a libvirt-like line. */
    {
        int r = parse(&o, ARGS("-kernel", k, "-serial", "pty", "-chardev", "spice,id=a",
                               "-mon", "chardev=zz", "-drive", "file=/tmp/d,werror=x"));
        char **lines = r < 0 ? g_strsplit(err, "\n", -1) : NULL;
        KEEL_OK(r < 0 && g_strv_length(lines) == 4, "four problems, four lines (%u)",
                lines ? g_strv_length(lines) : 0);
        g_strfreev(lines);
    }
}

/* ---- a mux chardev over a unix socket ------------------------------------------- */

typedef struct Recorder {
    GString *got;
    int events[3];
    size_t room;
} Recorder;

static size_t rec_can_receive(void *opaque)
{
    return ((Recorder *)opaque)->room;
}

static void rec_receive(void *opaque, const uint8_t *buf, size_t len)
{
    Recorder *r = opaque;

    g_string_append_len(r->got, (const char *)buf, (gssize)len);
    r->room -= len < r->room ? len : r->room;
}

static void rec_event(void *opaque, ChardevEvent ev)
{
    ((Recorder *)opaque)->events[ev]++;
}

static const ChardevFrontendOps rec_ops = { rec_can_receive, rec_receive, rec_event };

static int quits;

static void on_quit(void *opaque)
{
    (void)opaque;
    quits++;
}

static void spin(void)
{
    for (int i = 0; i < 20; i++) {
        keel_main_loop_wait(true);
        g_usleep(1000);
    }
}

static void test_mux(const char *dir)
{
    VmmChardevSpec spec = { 0 };
    char *path = g_strdup_printf("%s/mux.sock", dir);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    Recorder serial = { g_string_new(NULL), { 0 }, 1 << 20 };
    Recorder mon = { g_string_new(NULL), { 0 }, 1 << 20 };
    Chardev *chr;
    CharFe *fe0, *fe1;
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0), peer;
    char buf[512];
    ssize_t n;

    g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
    bind(lfd, (struct sockaddr *)&sa, sizeof(sa));
    listen(lfd, 1);
    spec.id = (char *)"m";
    spec.backend = VMM_CHR_SOCKET;
    spec.path = path;
    spec.server = false;
    spec.mux = true;
    chr = chardev_open(&spec, keel_main_aio_context(), err, sizeof(err));
    peer = accept(lfd, NULL, NULL);
    KEEL_OK(chr && peer >= 0, "socket chardev connects as a client (%s)", chr ? "" : err);
    chardev_set_quit_hook(on_quit, NULL);
    fe0 = chardev_attach(chr, &rec_ops, &serial, err, sizeof(err));
    fe1 = chardev_attach(chr, &rec_ops, &mon, err, sizeof(err));
    KEEL_OK(fe0 && fe1, "two front ends on a mux");
    KEEL_OK(!chardev_attach(chr, &rec_ops, &mon, err, sizeof(err)) && strstr(err, "in use"),
            "a third is refused (%s)", err);
    KEEL_OK(serial.events[CHR_EVENT_OPENED] == 1, "OPENED at attach");

    write(peer, "ab\001cde\001\001f", 9);
    spin();
    KEEL_OK(!strcmp(serial.got->str, "ab") && !strcmp(mon.got->str, "de\001f"),
            "Ctrl-A c moves the input to the monitor; Ctrl-A Ctrl-A is one Ctrl-A ('%s' '%s')",
            serial.got->str, mon.got->str);
    KEEL_IS(mon.events[CHR_EVENT_FOCUS], 1, "the monitor heard FOCUS");
    write(peer, "\001h", 2);
    spin();
    n = read(peer, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    KEEL_OK(n > 0 && strstr(buf, "C-a x") && strstr(buf, "C-a c"), "Ctrl-A h lists the keys");
    write(peer, "\001x", 2);
    spin();
    KEEL_IS(quits, 1, "Ctrl-A x calls the quit hook");

    /* Flow control: nothing is read while the front end has no room. */
    write(peer, "\001c", 2);
    serial.room = 2;
    g_string_truncate(serial.got, 0);
    write(peer, "12345", 5);
    spin();
    KEEL_OK(!strcmp(serial.got->str, "12"), "only what fits is taken ('%s')", serial.got->str);
    serial.room = 100;
    char_fe_accept_input(fe0);
    spin();
    KEEL_OK(!strcmp(serial.got->str, "12345"), "the rest once there is room ('%s')",
            serial.got->str);

    while (recv(peer, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
        /* the help and quit messages */
    }
    char_fe_write(fe1, "out", 3);
    n = read(peer, buf, sizeof(buf) - 1);
    KEEL_OK(n == 3 && !memcmp(buf, "out", 3), "either front end's output reaches the peer");
    close(peer);
    spin();
    KEEL_OK(serial.events[CHR_EVENT_CLOSED] == 1 && mon.events[CHR_EVENT_CLOSED] == 1,
            "the peer leaving: CLOSED for both");
    chardev_free(chr);
    close(lfd);
    g_string_free(serial.got, TRUE);
    g_string_free(mon.got, TRUE);
    g_free(path);
}

/* ---- a QMP session on the real run state --------------------------------------- */

static void collect(void *opaque, const char *text, size_t len)
{
    g_string_append_len(opaque, text, (gssize)len);
}

static void test_session(void)
{
    VmmMachine *m = vmm_machine_new("unit", NULL, NULL, true, false);
    GString *out = g_string_new(NULL);
    QmpSession *s = qmp_session_new(m, collect, out, false);
    const char *in = "{\"execute\":\"qmp_capabilities\"}{\"execute\": \"cont\", \"id\": \"c\"}"
                     "\n{\"execute\":\"query-status\"}";

    qmp_session_open(s);
    KEEL_OK(g_str_has_prefix(out->str, "{\"QMP\":{\"version\":") &&
            g_str_has_suffix(out->str, "\r\n"), "greeting, \\r\\n ended");
    g_string_truncate(out, 0);
    for (const char *p = in; *p; p++) {
        qmp_session_feed(s, (const uint8_t *)p, 1);     /* one byte at a time */
    }
    KEEL_OK(strstr(out->str, "{\"return\":{}}\r\n") &&
            strstr(out->str, "\"event\":\"RESUME\"") &&
            strstr(out->str, "{\"return\":{},\"id\":\"c\"}") &&
            strstr(out->str, "\"status\":\"running\""),
            "three requests fed byte by byte, without newlines between two");
    KEEL_OK(vmm_machine_running(m), "cont started the machine");
    g_string_truncate(out, 0);
    qmp_session_feed(s, (const uint8_t *)"{\"execute\":\"quit\"}", 18);
    KEEL_OK(vmm_machine_quit_requested(m) && strstr(out->str, "host-qmp-quit"),
            "quit: requested, SHUTDOWN after the reply");
    qmp_session_close(s);
    g_string_truncate(out, 0);
    vmm_machine_emit(m, "STOP", "{}");
    KEEL_IS(out->len, 0, "a closed session sends nothing");
    qmp_session_free(s);
    vmm_machine_free(m);
    g_string_free(out, TRUE);
}

int main(void)
{
    int fd = mkstemp(kernel_path);
    char *dir;

    if (fd < 0) {
        keel_test_skip_all("mkstemp failed");
    }
    close(fd);
    test_options();
    if (keel_main_loop_init() < 0) {
        keel_test_skip_all("no main loop");
    }
    keel_global_mutex_lock();
    dir = g_dir_make_tmp("keel-chr-XXXXXX", NULL);
    test_mux(dir);
    test_session();
    keel_global_mutex_unlock();
    rmdir(dir);
    g_free(dir);
    unlink(kernel_path);
    return keel_test_done();
}
