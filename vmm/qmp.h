/*
 * vmm/qmp.h — the QEMU Machine Protocol (QMP) and a small human monitor
 * (HMP), over the chardevs of vmm/chardev.h, driving a VmmMachine.
 *
 * QMP, as QEMU 7.2 speaks it: on connect, the greeting
 *   {"QMP": {"version": {"qemu": {"major", "minor", "micro"}, "package"},
 *            "capabilities": []}}
 * then commands are refused with CommandNotFound until qmp_capabilities
 * ("capabilities negotiation"); afterwards events are sent too.  Each reply
 * is {"return": ...} or {"error": {"class", "desc"}}, with the request's "id"
 * echoed, one JSON text per line ("\r\n" as QEMU).  Commands: qmp_capabilities,
 * query-version, query-status, query-name, query-commands, query-cpus-fast,
 * query-iothreads, query-block, query-blockstats, stop, cont, system_reset,
 * quit, block_resize, human-monitor-command.  Events: those the machine
 * emits (STOP, RESUME, SHUTDOWN, RESET, BLOCK_IO_ERROR) with QEMU's
 * timestamp.
 *
 * Input framing: a request is one JSON object; objects are split out of the
 * byte stream by counting brackets outside strings (json-glib then parses
 * each one), so requests need no newline and may arrive in pieces.  Text
 * outside an object up to a newline is parsed (and refused) as a request.
 * A request longer than QMP_MAX_REQUEST bytes gets an error and is skipped
 * up to the next newline; malformed JSON gets a GenericError "JSON parse
 * error, ..."; either way the session goes on.
 *
 * QmpSession is the protocol without a transport (tests and the fuzzer feed
 * it bytes and read its output); QmpMonitor / HmpMonitor attach a session to
 * a chardev front end.  A socket chardev serves one client at a time (see
 * chardev.h); each new client gets a fresh session.
 *
 * Thread rules: the main thread with the global mutex held (the chardev
 * handlers run there).
 */
#ifndef KEEL_VMM_QMP_H
#define KEEL_VMM_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/chardev.h"
#include "vmm/machine.h"

#define QMP_MAX_REQUEST (1u << 20)      /* bytes of one JSON request */

typedef struct QmpSession QmpSession;

/* Called with each complete output text (a reply or an event, "\r\n" ended). */
typedef void QmpOutputFn(void *opaque, const char *text, size_t len);

QmpSession *qmp_session_new(VmmMachine *m, QmpOutputFn *out, void *opaque, bool pretty);
void qmp_session_free(QmpSession *s);
/* A new client: forget the negotiation and any partial request, greet. */
void qmp_session_open(QmpSession *s);
/* The client left: forget the partial request; no output until reopened. */
void qmp_session_close(QmpSession *s);
/* Bytes from the client; replies go to the output function. */
void qmp_session_feed(QmpSession *s, const uint8_t *buf, size_t len);

/* Runs one HMP command line; returns its output (g_free it), lines ended by
 * "\r\n" as QEMU's monitor does.  Used by human-monitor-command and the
 * HMP front end. */
char *hmp_execute(VmmMachine *m, const char *line);

typedef struct QmpMonitor QmpMonitor;

/* A QMP (@control) or HMP monitor on @chr.  NULL with a message in @err
 * when the chardev has no room. */
QmpMonitor *monitor_new(VmmMachine *m, Chardev *chr, bool control, bool pretty, char *err,
                        size_t errlen);
void monitor_free(QmpMonitor *mon);

#endif
