/*
 * Character devices: backends (null, stdio, file, pipe, unix socket) and the
 * mux with its Ctrl-A escapes.  The contract is in vmm/chardev.h.
 */
#include "config.h"

#include "vmm/chardev.h"
#include "compat/osdep.h"

#include <glib.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#define MUX_MAX_FE 2
#define MUX_ESCAPE 0x01             /* Ctrl-A */
#define SOCKET_SEND_TIMEOUT_S 5     /* a client that stops reading is dropped */

struct CharFe {
    Chardev *chr;
    const ChardevFrontendOps *ops;
    void *opaque;
};

struct Chardev {
    char *id;
    VmmChardevBackend backend;
    KeelAioContext *ctx;
    bool mux;
    bool signal;

    int in_fd, out_fd;          /* -1: none; for a socket, the client */
    bool in_watching;
    bool in_eof;

    /* socket */
    bool server;
    int listen_fd;
    bool listen_watching;
    char *path;
    dev_t sock_dev;
    ino_t sock_ino;

    /* front ends; on a mux, fe[focus] gets the input */
    CharFe *fe[MUX_MAX_FE];
    int nr_fe;
    int focus;
    bool escape_pending;        /* mux: Ctrl-A seen, the next key is a command */
    GByteArray *pending;        /* mux: input read for a front end that lost the focus */
};

static void (*quit_hook)(void *opaque);
static void *quit_hook_opaque;

void chardev_set_quit_hook(void (*fn)(void *opaque), void *opaque)
{
    quit_hook = fn;
    quit_hook_opaque = opaque;
}

const char *chardev_id(const Chardev *chr)
{
    return chr->id;
}

/* ---- the terminal ------------------------------------------------------------------ */

static struct termios saved_termios;
static bool termios_saved;

static void restore_terminal(void)
{
    if (termios_saved) {
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
        termios_saved = false;
    }
}

/* Like QEMU's stdio chardev: raw input (every key goes to the guest, CR
 * untranslated); ISIG kept only with signal=on. */
static void make_terminal_raw(bool keep_signals)
{
    struct termios t;

    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_termios) < 0) {
        return;
    }
    if (!termios_saved) {
        atexit(restore_terminal);
    }
    termios_saved = true;
    t = saved_termios;
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_oflag |= OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | IEXTEN);
    if (!keep_signals) {
        t.c_lflag &= ~(tcflag_t)ISIG;
    }
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &t);
}

/* ---- input ----------------------------------------------------------------------- */

static void chr_update_watch(Chardev *chr);

static CharFe *focused_fe(Chardev *chr)
{
    return chr->nr_fe ? chr->fe[chr->focus] : NULL;
}

static size_t fe_room(CharFe *fe)
{
    if (!fe) {
        return 0;
    }
    return fe->ops->can_receive ? fe->ops->can_receive(fe->opaque) : 4096;
}

static void fe_event(CharFe *fe, ChardevEvent ev)
{
    if (fe && fe->ops->event) {
        fe->ops->event(fe->opaque, ev);
    }
}

static void chr_write_raw(Chardev *chr, const void *buf, size_t len);

static void mux_print_help(Chardev *chr)
{
    static const char help[] =
        "\r\nC-a h    print this help\r\n"
        "C-a x    exit keel-vmm\r\n"
        "C-a c    switch between the serial console and the monitor\r\n"
        "C-a C-a  send C-a\r\n";

    chr_write_raw(chr, help, sizeof(help) - 1);
}

/* Handles the key after Ctrl-A; returns whether it was consumed. */
static bool mux_escape(Chardev *chr, uint8_t key)
{
    switch (key) {
    case 'h': case 'H': case '?':
        mux_print_help(chr);
        return true;
    case 'x': case 'X': {
        static const char msg[] = "keel-vmm: terminating on C-a x\r\n";
        chr_write_raw(chr, msg, sizeof(msg) - 1);
        if (quit_hook) {
            quit_hook(quit_hook_opaque);
        }
        return true;
    }
    case 'c': case 'C':
        if (chr->nr_fe > 1) {
            chr->focus = (chr->focus + 1) % chr->nr_fe;
            fe_event(chr->fe[chr->focus], CHR_EVENT_FOCUS);
        }
        return true;
    case MUX_ESCAPE:
        return false;       /* a literal Ctrl-A for the focused front end */
    default:
        return true;        /* unknown escapes are swallowed, as in QEMU */
    }
}

/* Delivers @len bytes to the focused front end, interpreting escapes on a
 * mux.  The caller made sure the front end has room for @len bytes; when
 * Ctrl-A c moves the focus, the rest waits in chr->pending for the new
 * front end's room. */
static void chr_deliver(Chardev *chr, const uint8_t *buf, size_t len)
{
    CharFe *fe = focused_fe(chr);
    size_t start = 0;

    if (!chr->mux) {
        if (fe) {
            fe->ops->receive(fe->opaque, buf, len);
        }
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (chr->escape_pending) {
            chr->escape_pending = false;
            if (mux_escape(chr, buf[i])) {
                start = i + 1;
                if (fe != focused_fe(chr)) {
                    /* Ctrl-A c: the rest is for the other front end, when
                     * it has room. */
                    g_byte_array_append(chr->pending, buf + start, (guint)(len - start));
                    return;
                }
            }
            continue;   /* a literal Ctrl-A stays in the run */
        }
        if (buf[i] == MUX_ESCAPE) {
            if (fe && i > start) {
                fe->ops->receive(fe->opaque, buf + start, i - start);
            }
            chr->escape_pending = true;
            start = i + 1;
        }
    }
    if (fe && len > start) {
        fe->ops->receive(fe->opaque, buf + start, len - start);
    }
}

static void chr_client_closed(Chardev *chr);

/* Delivers held input while the focused front end has room. */
static void chr_flush_pending(Chardev *chr)
{
    while (chr->pending && chr->pending->len) {
        size_t room = fe_room(focused_fe(chr));
        GByteArray *take;

        if (!room) {
            return;
        }
        if (room > chr->pending->len) {
            room = chr->pending->len;
        }
        /* chr_deliver may add to pending again (another Ctrl-A c). */
        take = chr->pending;
        chr->pending = g_byte_array_new();
        chr_deliver(chr, take->data, room);
        g_byte_array_append(chr->pending, take->data + room, take->len - (guint)room);
        g_byte_array_free(take, TRUE);
    }
}

static void chr_readable(void *opaque)
{
    Chardev *chr = opaque;
    uint8_t buf[4096];
    size_t room;
    ssize_t n;

    chr_flush_pending(chr);
    room = chr->pending->len ? 0 : fe_room(focused_fe(chr));
    if (room == 0) {
        chr_update_watch(chr);
        return;
    }
    if (room > sizeof(buf)) {
        room = sizeof(buf);
    }
    n = read(chr->in_fd, buf, room);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return;
    }
    if (n <= 0) {
        if (chr->backend == VMM_CHR_SOCKET) {
            chr_client_closed(chr);
        } else {
            chr->in_eof = true;     /* stdin closed: no more input, output goes on */
            chr_update_watch(chr);
        }
        return;
    }
    chr_deliver(chr, buf, (size_t)n);
    chr_flush_pending(chr);     /* Ctrl-A c: the rest to the new focus */
    chr_update_watch(chr);
}

/* Watches the input fd exactly while there is one, it is not at EOF and the
 * focused front end has room. */
static void chr_update_watch(Chardev *chr)
{
    bool want = chr->in_fd >= 0 && !chr->in_eof && !chr->pending->len &&
                fe_room(focused_fe(chr)) > 0;

    if (want == chr->in_watching) {
        return;
    }
    chr->in_watching = want;
    keel_aio_set_fd_handler(chr->ctx, chr->in_fd, want ? chr_readable : NULL, NULL, NULL,
                            want ? chr : NULL);
}

void char_fe_accept_input(CharFe *fe)
{
    chr_flush_pending(fe->chr);
    chr_update_watch(fe->chr);
}

/* ---- output ------------------------------------------------------------------------ */

static void chr_write_raw(Chardev *chr, const void *buf, size_t len)
{
    if (chr->out_fd < 0 || !len) {
        return;
    }
    if (chr->backend == VMM_CHR_SOCKET) {
        const uint8_t *p = buf;
        while (len) {
            /* SO_SNDTIMEO bounds the wait for a client that stops reading. */
            ssize_t n = send(chr->out_fd, p, len, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                chr_client_closed(chr);
                return;
            }
            p += n;
            len -= (size_t)n;
        }
        return;
    }
    if (keel_write_full(chr->out_fd, buf, len) < 0) {
        /* A closed pipe or full disk is the reader's problem, not the guest's. */
        if (chr->out_fd != STDOUT_FILENO) {
            close(chr->out_fd);
        }
        chr->out_fd = -1;
    }
}

void char_fe_write(CharFe *fe, const void *buf, size_t len)
{
    chr_write_raw(fe->chr, buf, len);
}

void char_fe_printf(CharFe *fe, const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char_fe_write(fe, s, strlen(s));
    g_free(s);
}

bool char_fe_connected(CharFe *fe)
{
    return fe->chr->backend != VMM_CHR_SOCKET || fe->chr->in_fd >= 0;
}

/* ---- sockets --------------------------------------------------------------------- */

static void chr_listen_watch(Chardev *chr, bool want);

static void chr_set_client(Chardev *chr, int fd)
{
    struct timeval tv = { SOCKET_SEND_TIMEOUT_S, 0 };

    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    chr->in_fd = chr->out_fd = fd;
    chr->in_eof = false;
    chr->escape_pending = false;
    chr_update_watch(chr);
    for (int i = 0; i < chr->nr_fe; i++) {
        fe_event(chr->fe[i], CHR_EVENT_OPENED);
    }
}

static void chr_client_closed(Chardev *chr)
{
    int fd = chr->in_fd;

    if (fd < 0) {
        return;
    }
    if (chr->in_watching) {
        keel_aio_set_fd_handler(chr->ctx, fd, NULL, NULL, NULL, NULL);
        chr->in_watching = false;
    }
    close(fd);
    chr->in_fd = chr->out_fd = -1;
    g_byte_array_set_size(chr->pending, 0);
    for (int i = 0; i < chr->nr_fe; i++) {
        fe_event(chr->fe[i], CHR_EVENT_CLOSED);
    }
    if (chr->server) {
        chr_listen_watch(chr, true);    /* the next client may come */
    }
}

void char_fe_disconnect(CharFe *fe)
{
    if (fe->chr->backend == VMM_CHR_SOCKET) {
        chr_client_closed(fe->chr);
    }
}

static void chr_accept(void *opaque)
{
    Chardev *chr = opaque;
    int fd = accept(chr->listen_fd, NULL, NULL);

    if (fd < 0) {
        return;     /* EAGAIN, ECONNABORTED: wait for the next one */
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    /* One client at a time: stop accepting until this one leaves. */
    chr_listen_watch(chr, false);
    chr_set_client(chr, fd);
}

static void chr_listen_watch(Chardev *chr, bool want)
{
    if (want == chr->listen_watching || chr->listen_fd < 0) {
        return;
    }
    chr->listen_watching = want;
    keel_aio_set_fd_handler(chr->ctx, chr->listen_fd, want ? chr_accept : NULL, NULL, NULL,
                            want ? chr : NULL);
}

static int unix_addr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        snprintf(err, errlen, "socket path %s is longer than %zu bytes", path,
                 sizeof(sa->sun_path) - 1);
        return -1;
    }
    strcpy(sa->sun_path, path);
    return 0;
}

/* Binds a listening socket at @path through a temporary name and rename(),
 * so whatever was at @path is replaced in one step. */
static int socket_listen(Chardev *chr, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    struct stat st;
    char *tmp = g_strdup_printf("%s.%ld.tmp", chr->path, (long)getpid());
    int fd;

    if (unix_addr(tmp, &sa, err, errlen) < 0) {
        g_free(tmp);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        g_free(tmp);
        return -1;
    }
    unlink(tmp);    /* our own leftover from a crashed run with the same pid */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", chr->path, strerror(errno));
        close(fd);
        g_free(tmp);
        return -1;
    }
    if (rename(tmp, chr->path) < 0) {
        snprintf(err, errlen, "cannot create socket %s: %s", chr->path, strerror(errno));
        unlink(tmp);
        close(fd);
        g_free(tmp);
        return -1;
    }
    g_free(tmp);
    if (stat(chr->path, &st) == 0) {
        chr->sock_dev = st.st_dev;
        chr->sock_ino = st.st_ino;
    }
    chr->listen_fd = fd;
    return 0;
}

static int socket_open(Chardev *chr, const VmmChardevSpec *spec, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    int fd;

    chr->server = spec->server;
    if (spec->server) {
        if (socket_listen(chr, err, errlen) < 0) {
            return -1;
        }
        if (spec->wait) {
            fprintf(stderr, "keel-vmm: waiting for a connection on unix:%s,server=on\n",
                    chr->path);
            do {
                fd = accept(chr->listen_fd, NULL, NULL);
            } while (fd < 0 && errno == EINTR);
            if (fd < 0) {
                snprintf(err, errlen, "accept on %s: %s", chr->path, strerror(errno));
                return -1;
            }
            fcntl(fd, F_SETFD, FD_CLOEXEC);
            chr->in_fd = chr->out_fd = fd;
        } else {
            chr_listen_watch(chr, true);
        }
        return 0;
    }
    if (unix_addr(chr->path, &sa, err, errlen) < 0) {
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", chr->path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    chr->in_fd = chr->out_fd = fd;
    return 0;
}

/* ---- open / attach / free ---------------------------------------------------------- */

static int open_file(const char *path, int flags, char *err, size_t errlen)
{
    int fd = open(path, flags | O_CLOEXEC, 0666);

    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    }
    return fd;
}

static int pipe_open(Chardev *chr, char *err, size_t errlen)
{
    char *in = g_strdup_printf("%s.in", chr->path);
    char *out = g_strdup_printf("%s.out", chr->path);
    int r = 0;

    if (access(in, F_OK) == 0 && access(out, F_OK) == 0) {
        /* O_RDWR on a FIFO does not wait for the other side (Linux). */
        chr->in_fd = open_file(in, O_RDWR, err, errlen);
        chr->out_fd = chr->in_fd < 0 ? -1 : open_file(out, O_RDWR, err, errlen);
    } else {
        chr->in_fd = open_file(chr->path, O_RDWR, err, errlen);
        chr->out_fd = chr->in_fd < 0 ? -1 : dup(chr->in_fd);
    }
    if (chr->in_fd < 0 || chr->out_fd < 0) {
        r = -1;
    }
    g_free(in);
    g_free(out);
    return r;
}

Chardev *chardev_open(const VmmChardevSpec *spec, KeelAioContext *ctx, char *err,
                      size_t errlen)
{
    Chardev *chr = g_new0(Chardev, 1);
    int r = 0;

    chr->id = g_strdup(spec->id);
    chr->backend = spec->backend;
    chr->ctx = ctx;
    chr->mux = spec->mux;
    chr->signal = spec->signal;
    chr->in_fd = chr->out_fd = chr->listen_fd = -1;
    chr->path = g_strdup(spec->path);
    chr->pending = g_byte_array_new();

    switch (spec->backend) {
    case VMM_CHR_NULL:
        break;
    case VMM_CHR_STDIO:
        chr->in_fd = STDIN_FILENO;
        chr->out_fd = STDOUT_FILENO;
        make_terminal_raw(spec->signal);
        break;
    case VMM_CHR_FILE:
        chr->out_fd = open_file(spec->path, O_WRONLY | O_CREAT |
                                (spec->append ? O_APPEND : O_TRUNC), err, errlen);
        r = chr->out_fd < 0 ? -1 : 0;
        break;
    case VMM_CHR_PIPE:
        r = pipe_open(chr, err, errlen);
        break;
    case VMM_CHR_SOCKET:
        r = socket_open(chr, spec, err, errlen);
        break;
    }
    if (r < 0) {
        char *msg = g_strdup_printf("chardev '%s': %s", spec->id, err);
        g_strlcpy(err, msg, errlen);
        g_free(msg);
        chardev_free(chr);
        return NULL;
    }
    return chr;
}

CharFe *chardev_attach(Chardev *chr, const ChardevFrontendOps *ops, void *opaque, char *err,
                       size_t errlen)
{
    CharFe *fe;

    if (chr->nr_fe == (chr->mux ? MUX_MAX_FE : 1)) {
        snprintf(err, errlen, "chardev '%s' is already in use%s", chr->id,
                 chr->mux ? "" : " (add mux=on to share it)");
        return NULL;
    }
    fe = g_new0(CharFe, 1);
    fe->chr = chr;
    fe->ops = ops;
    fe->opaque = opaque;
    chr->fe[chr->nr_fe++] = fe;
    if (char_fe_connected(fe)) {
        fe_event(fe, CHR_EVENT_OPENED);
    }
    chr_update_watch(chr);
    return fe;
}

void chardev_free(Chardev *chr)
{
    struct stat st;

    if (!chr) {
        return;
    }
    if (chr->in_watching) {
        keel_aio_set_fd_handler(chr->ctx, chr->in_fd, NULL, NULL, NULL, NULL);
    }
    chr_listen_watch(chr, false);
    if (chr->in_fd > STDERR_FILENO) {
        close(chr->in_fd);
    }
    if (chr->out_fd > STDERR_FILENO && chr->out_fd != chr->in_fd) {
        close(chr->out_fd);
    }
    if (chr->listen_fd >= 0) {
        close(chr->listen_fd);
        /* Remove the socket only if nobody replaced it since. */
        if (stat(chr->path, &st) == 0 && st.st_dev == chr->sock_dev &&
            st.st_ino == chr->sock_ino) {
            unlink(chr->path);
        }
    }
    if (chr->backend == VMM_CHR_STDIO) {
        restore_terminal();
    }
    for (int i = 0; i < chr->nr_fe; i++) {
        g_free(chr->fe[i]);
    }
    g_byte_array_free(chr->pending, TRUE);
    g_free(chr->path);
    g_free(chr->id);
    g_free(chr);
}
