"""A real /dev/log for the benchmark, private to it.

Without a syslog socket, glibc's syslog() tries socket()+connect() again on every call and
fails; for A, which logs one line per reset agent, that costs about as much as really sending
(30,000 lines: ~0.8 s here) but is not what a host does. This machine has no syslog daemon (no
/dev/log); a host's journald would receive (and rate-limit) the lines, and a benchmark must not
flood a real journal either. So the harness re-executes itself in a private mount namespace
(unshare -m) with a tmpfs on /dev holding the usual device nodes and a datagram socket at
/dev/log that a thread of the harness drains and counts, as a syslog daemon would: both commands
then really send their lines, and the number of lines each sent is measured. Nothing outside the
namespace sees the socket.
"""

import os
import select
import socket
import subprocess
import sys
import tempfile
import threading

MARKER = "KRF_BENCH_PRIVATE_DEV"
NODES = ("null", "zero", "full", "random", "urandom", "tty")


def possible():
    return os.geteuid() == 0 and os.path.exists("/usr/bin/unshare")


def inside():
    return os.environ.get(MARKER) == "1"


def reexec(script, argv):
    """Replace this process with itself in a private mount namespace (returns only on failure)."""
    env = dict(os.environ)
    env[MARKER] = "1"
    os.execve("/usr/bin/unshare", ["unshare", "-m", "--propagation", "private",
                                   sys.executable, script] + list(argv), env)


def private_dev():
    """Inside the namespace: a tmpfs /dev with the usual nodes, and no /dev/log yet.

    Returns where the machine's own /dev is still visible (inside this namespace only)."""
    old = tempfile.mkdtemp(prefix="krf-bench-olddev-")
    steps = [["mount", "--rbind", "/dev", old], ["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/dev"]]
    for step in steps:
        subprocess.run(step, check=True)
    for node in NODES:
        target = os.path.join("/dev", node)
        open(target, "w").close()
        subprocess.run(["mount", "--bind", os.path.join(old, node), target], check=True)
    os.mkdir("/dev/shm", 0o1777)
    os.mkdir("/dev/pts")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join("/dev", name))
    return old


class Listener:
    """Receives and counts the datagrams sent to /dev/log, from a thread, like a syslog daemon."""

    def __init__(self, path="/dev/log"):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.lock = threading.Lock()
        self.count = 0
        self.last = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _receive_all(self):
        # Called with the lock held: everything queued now is received and counted.
        while True:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            self.count += 1
            self.last.append(data.decode("utf-8", "replace"))
            del self.last[:-20]

    def _loop(self):
        while True:
            select.select([self.sock], [], [], 0.05)
            with self.lock:
                self._receive_all()

    def take(self):
        """(lines received since the last take, the last few of them). Call after the sender
        exited: its datagrams are all queued by then, and are drained here under the lock."""
        with self.lock:
            self._receive_all()
            count, last = self.count, self.last
            self.count, self.last = 0, []
        return count, last
