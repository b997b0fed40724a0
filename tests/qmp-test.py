#!/usr/bin/env python3
"""QMP tests for keel-vmm with a client built only on the standard library
(socket, json), printing TAP.

  qmp-test.py control KEEL_VMM
      keel-vmm -machine none (no KVM needed): -S, -daemonize, -pidfile,
      -name, -qmp unix:...,server=on,wait=off; every command without a
      guest, the events, the errors, bad input, a second client, a client
      leaving mid-command, the socket's mode and safe replacement, quit.
  qmp-test.py compare KEEL_VMM QEMU IMAGE
      the same queries against keel-vmm -machine none and QEMU (TCG, -S, a
      virtio drive); every reply whose shape (keys and value types, lists by
      their first element) differs is reported as a TAP comment; a test
      fails only if a reply is missing or an error where the other answered.
  qmp-test.py e2e KEEL_VMM GUEST IMAGE
      keel-vmm with the test guest (needs /dev/kvm: the KVM lab): -S
      -daemonize -pidfile -qmp -serial file:, query-status/-block/
      -blockstats counting the guest's reads, stop (counters still) / cont,
      quit; then werror=stop with inject=write:ENOSPC:once: the VM pauses
      (io-error, BLOCK_IO_ERROR), cont retries, the guest sees success.
"""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

N = 0
FAILED = 0


def ok(cond, desc):
    global N, FAILED
    N += 1
    if cond:
        print("ok %d - %s" % (N, desc))
    else:
        print("not ok %d - %s" % (N, desc))
        FAILED += 1
    sys.stdout.flush()
    return cond


def diag(text):
    for line in str(text).splitlines():
        print("# " + line)
    sys.stdout.flush()


class QMP:
    """A QMP client: one JSON text per line each way."""

    def __init__(self, path, timeout=10.0, greet=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.greeting = self.recv() if greet else None

    def recv(self, timeout=None):
        """The next JSON text, or None on EOF / timeout."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            while b"\n" not in self.buf:
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.buf += data
        except socket.timeout:
            return None
        finally:
            if timeout is not None:
                self.sock.settimeout(10.0)
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line.decode())

    def send_raw(self, data):
        self.sock.sendall(data)

    def reply(self):
        """The next reply; events met on the way are kept in self.events."""
        while True:
            msg = self.recv()
            if msg is None or "event" not in msg:
                return msg
            self.events.append(msg)

    def cmd(self, name, args=None, **extra):
        req = {"execute": name}
        if args is not None:
            req["arguments"] = args
        req.update(extra)
        self.send_raw((json.dumps(req) + "\n").encode())
        return self.reply()

    def wait_event(self, name, timeout=10.0):
        deadline = time.time() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            left = deadline - time.time()
            if left <= 0:
                return None
            msg = self.recv(timeout=left)
            if msg is None:
                return None
            if "event" in msg:
                self.events.append(msg)

    def close(self):
        self.sock.close()


def is_error(r, cls=None):
    return r is not None and "error" in r and (cls is None or r["error"].get("class") == cls)


def wait_for(pred, timeout=10.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


# ---- control: keel-vmm -machine none ----------------------------------------------------

def control(vmm):
    tmp = tempfile.mkdtemp(prefix="keel-qmp.")
    sock = os.path.join(tmp, "qmp.sock")
    pidfile = os.path.join(tmp, "vm.pid")
    # A stale file at the socket path: replaced in one step, never refused.
    with open(sock, "w") as f:
        f.write("stale")
    old_umask = os.umask(0o077)
    args = [vmm, "-machine", "none", "-S", "-daemonize", "-pidfile", pidfile, "-name",
            "keel-test,debug-threads=on", "-qmp", "unix:%s,server=on,wait=off" % sock,
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-monitor", "none"]
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    os.umask(old_umask)
    ok(p.returncode == 0, "-daemonize: the parent exits 0 once set-up succeeded (rc %d, %s)"
       % (p.returncode, p.stderr.decode().strip()))
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        pid = -1
    ok(pid > 0 and pid_alive(pid), "-pidfile holds the daemon's pid (%d)" % pid)
    st = os.lstat(sock) if os.path.exists(sock) else None
    ok(st is not None and stat.S_ISSOCK(st.st_mode),
       "the stale file at the socket path was replaced by the socket")
    ok(st is not None and stat.S_IMODE(st.st_mode) & 0o077 == 0,
       "the socket's mode follows the umask (077 → %s)" % (oct(stat.S_IMODE(st.st_mode)) if st else "?"))

    # A second keel-vmm with the same pid file: refused, message on stderr.
    p2 = subprocess.run([vmm, "-machine", "none", "-daemonize", "-pidfile", pidfile],
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        timeout=30)
    ok(p2.returncode == 1 and b"in use" in p2.stderr,
       "a second -pidfile user fails in the parent with the daemon's message (rc %d: %s)"
       % (p2.returncode, p2.stderr.decode().strip()))
    ok(open(pidfile).read().strip() == str(pid), "and the pid file still names the first one")

    q = QMP(sock)
    g = q.greeting
    ok(g is not None and "QMP" in g and "qemu" in g["QMP"]["version"]
       and g["QMP"]["capabilities"] == [], "greeting with version and capabilities: %s" % g)
    r = q.cmd("query-status")
    ok(is_error(r, "CommandNotFound") and "qmp_capabilities" in r["error"]["desc"],
       "a command before negotiation: CommandNotFound (%s)" % r)
    r = q.cmd("qmp_capabilities", id="neg")
    ok(r == {"return": {}, "id": "neg"}, "qmp_capabilities, id echoed: %s" % r)
    r = q.cmd("qmp_capabilities")
    ok(is_error(r, "CommandNotFound"), "negotiating twice: CommandNotFound")
    r = q.cmd("query-status")
    ok(r and r["return"]["status"] == "prelaunch" and r["return"]["running"] is False,
       "-S: query-status says prelaunch, not running: %s" % r)
    r = q.cmd("query-name")
    ok(r == {"return": {"name": "keel-test"}}, "query-name: %s" % r)
    r = q.cmd("query-version")
    ok(r and set(r["return"]["qemu"]) == {"major", "minor", "micro"} and "package" in r["return"],
       "query-version: %s" % r)
    r = q.cmd("query-commands")
    names = {c["name"] for c in r["return"]} if r and "return" in r else set()
    want = {"qmp_capabilities", "query-version", "query-status", "query-name", "query-commands",
            "query-cpus-fast", "query-iothreads", "query-block", "query-blockstats", "stop",
            "cont", "system_reset", "quit", "block_resize", "human-monitor-command"}
    ok(want <= names, "query-commands lists every command (missing: %s)" % sorted(want - names))
    for c in ("query-cpus-fast", "query-iothreads", "query-block", "query-blockstats"):
        r = q.cmd(c)
        ok(r == {"return": []}, "%s without a guest: []" % c)
    r = q.cmd("human-monitor-command", {"command-line": "info status"})
    ok(r == {"return": "VM status: paused (prelaunch)\r\n"}, "HMP info status: %s" % r)

    r = q.cmd("cont")
    ev = q.wait_event("RESUME")
    ok(r == {"return": {}} and ev is not None and "timestamp" in ev,
       "cont: RESUME event with a timestamp (%s)" % ev)
    ok(q.cmd("query-status")["return"]["status"] == "running", "running after cont")
    r = q.cmd("stop")
    ev = q.wait_event("STOP")
    ok(r == {"return": {}} and ev is not None, "stop: STOP event")
    ok(q.cmd("query-status")["return"] == {"status": "paused", "singlestep": False,
                                             "running": False}, "paused after stop")
    r = q.cmd("human-monitor-command", {"command-line": "info status"})
    ok(r == {"return": "VM status: paused\r\n"}, "HMP agrees: %s" % r)
    q.cmd("cont")
    q.wait_event("RESUME")
    r = q.cmd("system_reset")
    ev = q.wait_event("RESET")
    ok(r == {"return": {}} and ev and ev["data"]["reason"] == "host-qmp-system-reset",
       "system_reset with no guest: RESET event (%s)" % ev)

    # Errors and bad input: each answered, the session goes on.
    r = q.cmd("no-such-command")
    ok(is_error(r, "CommandNotFound") and "no-such-command" in r["error"]["desc"],
       "unknown command: CommandNotFound naming it")
    r = q.cmd("query-status", {"bogus": 1})
    ok(is_error(r, "GenericError") and "bogus" in r["error"]["desc"],
       "unexpected argument: GenericError naming it (%s)" % r)
    r = q.cmd("block_resize", {"device": "nope", "size": 1 << 20})
    ok(is_error(r, "GenericError") and "nope" in r["error"]["desc"],
       "block_resize of a missing device: GenericError (%s)" % r)
    q.send_raw(b'{"execute": "query-status", \n')
    q.send_raw(b'"id": 7}\n')
    r = q.reply()
    ok(r and r.get("id") == 7 and "return" in r, "a request split across lines and writes")
    q.send_raw(b"this is not json\n")
    r = q.reply()
    ok(is_error(r, "GenericError") and "JSON" in r["error"]["desc"],
       "malformed JSON: GenericError (%s)" % r)
    q.send_raw(b'{"execute": "query-status", "id": }\n')
    r = q.reply()
    ok(is_error(r, "GenericError"), "a broken object: GenericError")
    q.send_raw(b'["query-status"]\n')
    r = q.reply()
    ok(is_error(r, "GenericError") and "object" in r["error"]["desc"],
       "a non-object: GenericError (%s)" % r)
    q.send_raw(b'{"arguments": {}}\n')
    r = q.reply()
    ok(is_error(r, "GenericError") and "execute" in r["error"]["desc"],
       "no execute: GenericError (%s)" % r)
    q.send_raw(b'{"execute": "query-status", "x": "' + b"a" * (2 << 20) + b'"}\n')
    r = q.reply()
    ok(is_error(r, "GenericError") and "longer" in r["error"]["desc"],
       "a 2 MiB request: GenericError (%s)" % (r and r.get("error")))
    r = q.cmd("query-status", id=[1, {"a": None}])
    ok(r and r.get("id") == [1, {"a": None}] and r["return"]["running"],
       "the monitor still serves after all of that; any JSON id is echoed")

    # A second client while one is connected: no greeting until the first
    # leaves (QEMU stops listening meanwhile).
    q2 = QMP(sock, greet=False)
    g2 = q2.recv(timeout=1.0)
    ok(g2 is None, "a second concurrent client gets nothing (%s)" % g2)
    q.close()
    g2 = q2.recv(timeout=10.0)
    ok(g2 is not None and "QMP" in g2, "and its greeting once the first client left")
    r = q2.cmd("query-status")
    ok(is_error(r, "CommandNotFound"), "a new client negotiates afresh")
    q2.cmd("qmp_capabilities")
    # Leave in the middle of a command.
    q2.send_raw(b'{"execute": "query-st')
    q2.close()
    q3 = QMP(sock)
    q3.cmd("qmp_capabilities")
    r = q3.cmd("query-status")
    ok(r and r["return"]["status"] == "running",
       "a client leaving mid-command leaves the VM running (%s)" % r)

    r = q3.cmd("quit")
    ev = q3.wait_event("SHUTDOWN")
    ok(r == {"return": {}} and ev and ev["data"] == {"guest": False, "reason": "host-qmp-quit"},
       "quit: reply, then SHUTDOWN host-qmp-quit (%s)" % ev)
    q3.close()
    ok(wait_for(lambda: not pid_alive(pid)), "the daemon exits")
    ok(not os.path.exists(pidfile), "the pid file is removed at exit")
    ok(not os.path.exists(sock), "the socket is removed at exit")

    # -daemonize: set-up errors reach the caller's stderr and exit status.
    bad = os.path.join(tmp, "no-such-dir", "qmp.sock")
    p = subprocess.run([vmm, "-machine", "none", "-daemonize", "-qmp",
                        "unix:%s,server=on,wait=off" % bad],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    ok(p.returncode == 1 and b"no-such-dir" in p.stderr,
       "-daemonize with a failing set-up: exit 1 and the message (%s)" % p.stderr.decode().strip())

    # -qmp stdio: the greeting on stdout, commands on stdin.
    p = subprocess.run([vmm, "-machine", "none", "-qmp", "stdio"],
                       input=b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n',
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    lines = [json.loads(x) for x in p.stdout.decode().splitlines() if x.strip()]
    ok(p.returncode == 0 and len(lines) >= 3 and "QMP" in lines[0]
       and lines[-1].get("event") == "SHUTDOWN", "-qmp stdio: greeting, replies, SHUTDOWN")

    # -chardev socket + -mon mode=control, with the old server,nowait too.
    sock2 = os.path.join(tmp, "mon.sock")
    proc = subprocess.Popen([vmm, "-machine", "none", "-chardev",
                             "socket,id=mon0,path=%s,server,nowait" % sock2,
                             "-mon", "chardev=mon0,mode=control"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    ok(wait_for(lambda: os.path.exists(sock2)), "-chardev socket,server,nowait listens")
    q = QMP(sock2)
    q.cmd("qmp_capabilities")
    ok(q.cmd("query-status")["return"]["running"], "-mon chardev=mon0,mode=control serves QMP")
    q.cmd("quit")
    q.close()
    ok(proc.wait(timeout=30) == 0, "and quits")

    # A signal ends the daemon like QEMU: SHUTDOWN host-signal, files removed.
    proc = subprocess.Popen([vmm, "-machine", "none", "-pidfile", pidfile, "-qmp",
                             "unix:%s,server=on,wait=off" % sock],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    wait_for(lambda: os.path.exists(sock))
    q = QMP(sock)
    q.cmd("qmp_capabilities")
    proc.send_signal(signal.SIGTERM)
    ev = q.wait_event("SHUTDOWN")
    ok(ev and ev["data"]["reason"] == "host-signal", "SIGTERM: SHUTDOWN host-signal")
    ok(proc.wait(timeout=30) == 0 and not os.path.exists(pidfile), "exit 0, pid file removed")
    q.close()


# ---- compare: the same queries against QEMU ------------------------------------------

def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "number"
    if v is None:
        return "null"
    return type(v).__name__


def shape_diff(a, b, path=""):
    """Differences between two shapes (a: keel-vmm, b: QEMU)."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            p = path + "." + k if path else k
            if k not in a:
                out.append("%s: only QEMU has it" % p)
            elif k not in b:
                out.append("%s: only keel-vmm has it" % p)
            else:
                out += shape_diff(a[k], b[k], p)
    elif isinstance(a, list) and isinstance(b, list):
        if a and b:
            out += shape_diff(a[0], b[0], path + "[0]")
    elif a != b:
        out.append("%s: keel-vmm %s, QEMU %s" % (path, a, b))
    return out


def start_with_socket(args, sock):
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    if not wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, 30):
        proc.kill()
        return proc, None
    if proc.poll() is not None:
        return proc, None
    q = QMP(sock)
    q.cmd("qmp_capabilities")
    return proc, q


def compare(vmm, qemu, image):
    tmp = tempfile.mkdtemp(prefix="keel-qmp-cmp.")
    ksock, qsock = os.path.join(tmp, "keel.sock"), os.path.join(tmp, "qemu.sock")
    kproc, kq = start_with_socket([vmm, "-machine", "none", "-S", "-name", "cmp",
                                   "-object", "iothread,id=io0", "-qmp",
                                   "unix:%s,server=on,wait=off" % ksock], ksock)
    qproc, qq = start_with_socket([qemu, "-machine", "pc", "-accel", "tcg", "-S", "-nodefaults",
                                   "-display", "none", "-name", "cmp", "-drive",
                                   "file=%s,format=raw,if=virtio,id=drive0" % image,
                                   "-object", "iothread,id=io0", "-qmp",
                                   "unix:%s,server=on,wait=off" % qsock], qsock)
    if not ok(kq is not None, "keel-vmm -machine none serves QMP") or \
       not ok(qq is not None, "QEMU serves QMP"):
        diag(qproc.stderr.read().decode() if qproc.poll() is not None else "")
        for p in (kproc, qproc):
            if p.poll() is None:
                p.kill()
        return
    d = shape_diff(shape(kq.greeting), shape(qq.greeting))
    ok(not d, "greeting shape alike %s" % d)
    if kq.greeting["QMP"]["capabilities"] != qq.greeting["QMP"]["capabilities"]:
        diag("greeting capabilities: keel-vmm %s, QEMU %s (keel-vmm has no out-of-band "
             "execution)" % (kq.greeting["QMP"]["capabilities"],
                             qq.greeting["QMP"]["capabilities"]))
    cmds = [("query-version", None), ("query-status", None), ("query-name", None),
            ("query-commands", None), ("query-cpus-fast", None), ("query-iothreads", None),
            ("query-block", None), ("query-blockstats", None),
            ("human-monitor-command", {"command-line": "info status"}),
            ("no-such-command", None), ("query-status", {"bogus": 1}),
            ("block_resize", {"device": "nope", "size": 1048576}),
            ("cont", None), ("stop", None), ("cont", None)]
    for name, args in cmds:
        kr, qr = kq.cmd(name, args), qq.cmd(name, args)
        label = name + (" " + json.dumps(args) if args else "")
        ok(kr is not None and qr is not None and ("error" in kr) == ("error" in qr),
           "%s: both answer alike (keel %s, QEMU %s)" % (label, list(kr or {}), list(qr or {})))
        if kr is None or qr is None:
            continue
        d = shape_diff(shape(kr), shape(qr))
        if name == "query-iothreads":
            # The machine starts -object iothreads with or without a guest, as QEMU does.
            ids = [(t.get("id"), t.get("thread-id", 0) > 0) for t in kr.get("return", [])]
            ok(ids == [("io0", True)] and ids == [(t.get("id"), t.get("thread-id", 0) > 0)
                                                 for t in qr.get("return", [])],
               "query-iothreads: io0 with its thread id on both (keel %s)" % ids)
        if kr.get("return") == [] and qr.get("return"):
            diag("%s: not compared: keel-vmm -machine none has none, QEMU: %s" % (
                label, json.dumps(shape(qr["return"][0]))[:600]))
        if "error" in kr and "error" in qr and kr["error"]["desc"] != qr["error"]["desc"]:
            diag("%s: error text: keel-vmm %r, QEMU %r" % (label, kr["error"]["desc"],
                                                          qr["error"]["desc"]))
        if name == "human-monitor-command":
            if kr != qr:
                diag("%s: text differs: keel %r, QEMU %r" % (label, kr.get("return"),
                                                            qr.get("return")))
        elif d:
            diag("%s: reply shape differs (lists compared by their first element; keel-vmm "
                 "has no guest here):" % label)
            for line in d[:40]:
                diag("  " + line)
        if "error" in kr and "error" in qr and kr["error"]["class"] != qr["error"]["class"]:
            ok(False, "%s: error class keel %s, QEMU %s" % (label, kr["error"]["class"],
                                                           qr["error"]["class"]))
    for label, q in (("keel-vmm", kq), ("QEMU", qq)):
        ev2 = q.wait_event("RESUME", 5)
        ev = q.wait_event("STOP", 5)
        ok(ev is not None and ev2 is not None and shape(ev)["timestamp"] == {
           "seconds": "int", "microseconds": "int"}, "%s: STOP and RESUME events" % label)
    kq.cmd("quit")
    qq.cmd("quit")
    for label, q in (("keel-vmm", kq), ("QEMU", qq)):
        ev = q.wait_event("SHUTDOWN", 10)
        ok(ev is not None and ev.get("data", {}).get("reason") == "host-qmp-quit",
           "%s: quit → SHUTDOWN host-qmp-quit (%s)" % (label, ev))
    ok(kproc.wait(timeout=30) == 0, "keel-vmm exits 0")
    ok(qproc.wait(timeout=30) == 0, "QEMU exits 0")


# ---- e2e: keel-vmm with the test guest (KVM) ---------------------------------------

def e2e(vmm, guest, image):
    tmp = tempfile.mkdtemp(prefix="keel-qmp-e2e.")
    sock, pidfile, log = (os.path.join(tmp, n) for n in ("qmp.sock", "vm.pid", "serial.log"))
    size = os.path.getsize(image)
    # The guest reads for ten minutes (its clock runs while the VM is
    # stopped): longer than any step here, the QEMU comparison under a
    # software CPU included (seconds in the KVM lab); `quit` ends it.
    args = [vmm, "-S", "-daemonize", "-pidfile", pidfile, "-qmp",
            "unix:%s,server=on,wait=off" % sock, "-serial", "file:%s" % log, "-m", "64",
            "-kernel", guest, "-append", "rw=randread bs=4096 iodepth=1 runtime=600000",
            "-drive", "file=%s,format=raw,if=virtio,id=disk0" % image]
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if not ok(p.returncode == 0, "-S -daemonize -pidfile -qmp -serial file: starts (rc %d %s)"
              % (p.returncode, p.stderr.decode().strip())):
        return
    pid = int(open(pidfile).read())
    q = QMP(sock)
    q.cmd("qmp_capabilities")
    ok(q.cmd("query-status")["return"]["status"] == "prelaunch", "-S: prelaunch")
    r = q.cmd("query-block")["return"]
    ok(len(r) == 1 and r[0]["device"] == "disk0" and r[0]["inserted"]["image"]["virtual-size"]
       == size, "query-block: disk0 of %d bytes (%s)" % (size, r))
    r = q.cmd("query-cpus-fast")["return"]
    ok(len(r) == 1 and r[0]["thread-id"] > 0, "query-cpus-fast: one vCPU with its thread id")
    st0 = q.cmd("query-blockstats")["return"][0]["stats"]["rd_operations"]
    ok(st0 == 0, "nothing read before cont")
    q.cmd("cont")
    ok(q.wait_event("RESUME") is not None, "cont: RESUME")
    time.sleep(1.5)
    st1 = q.cmd("query-blockstats")["return"][0]["stats"]
    ok(st1["rd_operations"] > 0 and st1["rd_bytes"] == 4096 * st1["rd_operations"]
       and st1["rd_total_time_ns"] > 0, "query-blockstats counts the guest's reads (%s)" % st1)
    q.cmd("stop")
    ok(q.wait_event("STOP") is not None, "stop: STOP")
    a = q.cmd("query-blockstats")["return"][0]["stats"]["rd_operations"]
    time.sleep(0.5)
    b = q.cmd("query-blockstats")["return"][0]["stats"]["rd_operations"]
    ok(a == b, "while stopped the vCPU is parked and no I/O moves (%d, %d)" % (a, b))
    qemu = os.environ.get("KEEL_QEMU")
    if qemu:
        # The replies with a guest, shape against QEMU's for the same drive.
        qsock = os.path.join(tmp, "qemu.sock")
        qproc, qq = start_with_socket([qemu, "-machine", "pc", "-accel", "tcg", "-S",
                                       "-nodefaults", "-display", "none", "-drive",
                                       # keel-vmm holds the image's write lock:
                                       # QEMU would refuse even a reader.
                                       "file=%s,format=raw,if=virtio,id=disk0,readonly=on,"
                                       "file.locking=off" % image, "-qmp", "unix:%s,server=on,wait=off" % qsock],
                                      qsock)
        for name in ("query-block", "query-blockstats", "query-cpus-fast", "query-status"):
            kr, qr = q.cmd(name), qq.cmd(name) if qq else None
            d = shape_diff(shape(kr), shape(qr)) if qr else ["QEMU did not answer"]
            if d:
                diag("%s: reply shape differs from QEMU's:" % name)
                for line in d[:40]:
                    diag("  " + line)
        if qq:
            qq.cmd("quit")
        qproc.wait(timeout=30)
    q.cmd("cont")
    time.sleep(0.5)
    c = q.cmd("query-blockstats")["return"][0]["stats"]["rd_operations"]
    ok(c > b, "after cont the guest reads again (%d → %d)" % (b, c))
    r = q.cmd("block_resize", {"device": "disk0", "size": size + (1 << 20)})
    ok(r == {"return": {}} and os.path.getsize(image) == size + (1 << 20) and
       q.cmd("query-block")["return"][0]["inserted"]["image"]["virtual-size"] == size + (1 << 20),
       "block_resize grows the image and the device")
    q.cmd("quit")
    ok(wait_for(lambda: not pid_alive(pid)), "quit ends the daemon")
    ok(not os.path.exists(pidfile) and not os.path.exists(sock), "pid file and socket removed")
    q.close()

    # werror=stop: an ENOSPC write pauses the VM; cont retries it.
    with open(image, "r+b") as f:
        f.truncate(size)
    args = [vmm, "-qmp", "unix:%s,server=on,wait=on" % sock, "-serial", "file:%s" % log,
            "-m", "64", "-kernel", guest, "-append", "rw=write bs=4096 size=1m verify=1",
            "-drive", "file=%s,format=raw,if=virtio,id=disk0,werror=stop,"
            "inject=write:ENOSPC:once" % image]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    wait_for(lambda: os.path.exists(sock))
    q = QMP(sock)
    q.cmd("qmp_capabilities")
    ev = q.wait_event("BLOCK_IO_ERROR", 30)
    ok(ev and ev["data"]["device"] == "disk0" and ev["data"]["action"] == "stop" and
       ev["data"]["nospace"] is True, "BLOCK_IO_ERROR: disk0, stop, nospace (%s)" % ev)
    ok(q.wait_event("STOP", 10) is not None, "STOP follows")
    r = q.cmd("query-status")["return"]
    ok(r["status"] == "io-error" and not r["running"], "status io-error (%s)" % r)
    ok(q.cmd("query-block")["return"][0]["io-status"] == "nospace", "io-status nospace")
    q.cmd("cont")
    rc = proc.wait(timeout=60)
    out = open(log, errors="replace").read()
    ok(rc == 1 and "RESULT status=ok" in out and "errors=0" in out,
       "after cont the guest finished with no error (rc %d)" % rc)
    q.close()


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    mode = sys.argv[1]
    if mode == "control":
        control(sys.argv[2])
    elif mode == "compare":
        compare(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "e2e":
        e2e(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print(__doc__)
        return 2
    print("1..%d" % N)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
