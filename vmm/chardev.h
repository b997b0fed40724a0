/*
 * vmm/chardev.h — character devices in QEMU's spelling: the byte streams
 * behind COM1 and the monitors (-chardev, and the legacy -serial/-qmp/
 * -monitor specs parsed into VmmChardevSpec by vmm/options.c).
 *
 * Backends: null (discards, no input); stdio (stdin/stdout; a terminal is put
 * in raw mode and restored at exit — ISIG stays on with signal=on, so ^C
 * stops keel-vmm, and is off with signal=off, as mon:stdio sets it, so ^C
 * reaches the guest); file (output only, created with the umask, truncated
 * unless append=on); pipe (PATH.in/PATH.out when both exist, else PATH both
 * ways); socket (unix stream: server=on listens, server=off connects).
 *
 * A server socket is bound under a temporary name in the same directory and
 * renamed over PATH, so a stale socket (or anything else) at PATH is replaced
 * atomically and a client never connects to a half-made one; its mode is
 * what the umask gives.  It serves one client at a time, as QEMU does: while
 * one is connected the listening socket is not watched, so a second client's
 * connect completes in the kernel's backlog but it gets nothing (no QMP
 * greeting) until the first one leaves.  wait=on (the default for a server)
 * makes chardev_open() block until the first client connects.  The path is
 * unlinked at chardev_free() if it is still our socket.
 *
 * Front ends (COM1, a QMP or HMP monitor) attach with chardev_attach().  One
 * per chardev, or two when the chardev was made with mux=on (mon:stdio): then
 * input goes to the focused front end and Ctrl-A is an escape — Ctrl-A h
 * lists the keys, Ctrl-A x quits (the quit hook), Ctrl-A c moves the focus to
 * the other front end, Ctrl-A Ctrl-A sends one Ctrl-A — while output of both
 * front ends is interleaved.  Input is read only while the focused front
 * end's can_receive() says it has room; it calls char_fe_accept_input()
 * when room appears again.
 *
 * Events: a front end's event() hears CHR_EVENT_OPENED when a client
 * connects (at attach time for backends that are always open) and
 * CHR_EVENT_CLOSED when it goes away; on a mux, the focus change is
 * CHR_EVENT_FOCUS for the front end that gains it.
 *
 * Errors: chardev_open() returns NULL with one line in @err.  A write that
 * fails (reader gone, a socket client that stops reading for 5 s) drops the
 * output or the connection; it never blocks the VM for longer.
 *
 * Thread rules: everything under the global mutex (the main loop holds it
 * while dispatching; the vCPU takes it around COM1's registers) or from a
 * single-threaded test.  Handlers run in the main AioContext.
 */
#ifndef KEEL_VMM_CHARDEV_H
#define KEEL_VMM_CHARDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop/aio.h"
#include "vmm/options.h"

typedef struct Chardev Chardev;
typedef struct CharFe CharFe;

typedef enum ChardevEvent {
    CHR_EVENT_OPENED,       /* a peer is there: a QMP monitor sends its greeting */
    CHR_EVENT_CLOSED,       /* the peer left: drop per-session state */
    CHR_EVENT_FOCUS,        /* mux: this front end now gets the input */
} ChardevEvent;

typedef struct ChardevFrontendOps {
    /* How many bytes receive() can take now (NULL: any number). */
    size_t (*can_receive)(void *opaque);
    void (*receive)(void *opaque, const uint8_t *buf, size_t len);
    void (*event)(void *opaque, ChardevEvent event);    /* may be NULL */
} ChardevFrontendOps;

/* Opens the backend @spec describes; its fd handlers live in @ctx (the main
 * loop's).  NULL with a message in @err. */
Chardev *chardev_open(const VmmChardevSpec *spec, KeelAioContext *ctx, char *err,
                      size_t errlen);

/* Closes the backend (restoring a terminal, unlinking our socket) and frees
 * its front-end handles. */
void chardev_free(Chardev *chr);

const char *chardev_id(const Chardev *chr);

/* Attaches a front end; NULL (with a message in @err) when the chardev has
 * no room for another (one, or two with mux=on). */
CharFe *chardev_attach(Chardev *chr, const ChardevFrontendOps *ops, void *opaque,
                       char *err, size_t errlen);

/* Writes all of @buf (or drops it, see above). */
void char_fe_write(CharFe *fe, const void *buf, size_t len);
void char_fe_printf(CharFe *fe, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The front end has room for input again. */
void char_fe_accept_input(CharFe *fe);

/* Whether a peer is connected (always true except for a socket without a
 * client). */
bool char_fe_connected(CharFe *fe);

/* Drops the current client of a socket chardev (a monitor that gave up on
 * it); no-op for the other backends. */
void char_fe_disconnect(CharFe *fe);

/* Ctrl-A x on any mux: called once per key press (keel-vmm asks its main
 * loop to quit).  Process-wide, set once at start-up. */
void chardev_set_quit_hook(void (*fn)(void *opaque), void *opaque);

#endif
