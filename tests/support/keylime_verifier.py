"""The real Keylime 7.14.3 verifier, run from a cached venv with its whole configuration in a temp dir.

Why: the reset is only proven when the real verifier produces the FAILED rows, and the real
verifier, restarted after the reset, polls the agents again. Nothing here touches /etc: the
verifier, its CA, its database and its logs all live under one directory, selected by
KEYLIME_DIR, KEYLIME_VERIFIER_CONFIG, KEYLIME_CA_CONFIG and KEYLIME_LOGGING_CONFIG.

Pieces (each reusable; database_url and uuid are parameters so that two verifiers can share one
PostgreSQL database):
  keylime_venv()   build (once per machine and requirements hash) a venv with keylime==7.14.3
                   and pinned dependencies, Debian's python3-gpg linked in;
  Verifier         write the config, start/stop the verifier (as root or as a given user),
                   capture and parse its log, read and write its database (SQLite directly,
                   any other URL through the venv's SQLAlchemy), call its REST API over mTLS;
  pull_agent()     a verifiermain row the verifier polls in pull mode (facts file §5);
  StandInAgent     a listener on 127.0.0.1 that records each quote request and answers it with an
                   HTTP error, or drops the connection (an agent that is still unreachable);
  run_reset()      the in-tree keylime-reset-failed with the verifier's own environment, as the
                   unit's ExecStartPre runs it.

Stand-ins, not mocks: the stand-in agent only plays a host whose agent answers with an error or
not at all; it never answers a quote, so no attestation is faked.
"""

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIREMENTS = os.path.join(ROOT, "tests", "data", "keylime-verifier-requirements.txt")
CACHE_DIR = os.environ.get("KRF_TEST_CACHE", "/var/cache/keylime-reboot-fix-tests")
DEBIAN_GPG = "/usr/lib/python3/dist-packages/gpg"
DEBIAN_PYTHON = "/usr/bin/python3"          # what the reset runs under in the .deb
KEYLIME_VERSION = "7.14.3"

# A pull-mode tpm_policy as Keylime stores it: JSON text of a JSON string (double-encoded).
TPM_POLICY_DOUBLE_ENCODED = json.dumps(json.dumps({"mask": "0x0"}))

LOG_FORMAT = "%(created).3f %(levelname)s %(name)s %(message)s"
LOG_LINE = re.compile(r"^(\d+\.\d{3}) ([A-Z]+) (\S+) (.*)$")


# --- the venv ---------------------------------------------------------------------------------

def base_interpreter():
    """A CPython 3.11 to build the venv from: Debian's (matches python3-gpg's ABI), else pyenv's."""
    candidates = ["/usr/bin/python3.11"]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.11.*", "bin", "python3.11")),
                         reverse=True)
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return None


def missing_prerequisites():
    """Why the real verifier cannot run here, or None (for tests.support.real.require)."""
    if base_interpreter() is None:
        return "no CPython 3.11 (/usr/bin/python3.11 or pyenv 3.11.x) to build the Keylime venv"
    if not os.path.isfile(os.path.join(DEBIAN_GPG, "__init__.py")):
        return "Debian's python3-gpg is not installed (tests/deps/apt/realverifier.txt)"
    if not os.access(DEBIAN_PYTHON, os.X_OK):
        return "no %s to run the reset command under" % DEBIAN_PYTHON
    return None


def _requirements_text(extra_requirements):
    with open(REQUIREMENTS, encoding="utf-8") as handle:
        lines = [l.split("#", 1)[0].strip() for l in handle]
    lines = [l for l in lines if l] + sorted(extra_requirements)
    return "\n".join(lines) + "\n"


def keylime_venv(extra_requirements=(), log=None):
    """Path of a venv with the pinned Keylime verifier; built on first use and cached.

    The cache key is the hash of the interpreter and the pinned requirements (plus any
    extra pinned requirement, e.g. a PostgreSQL driver), so changing a pin builds a new venv.
    A lock makes concurrent builders (parallel tests, other helpers) wait for one build.
    """
    python = base_interpreter()
    if python is None:
        raise RuntimeError(missing_prerequisites())
    reqs = _requirements_text(extra_requirements)
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    key = hashlib.sha256(("%s %s\n%s" % (python, version, reqs)).encode()).hexdigest()[:12]
    target = os.path.join(CACHE_DIR, "keylime-venv-%s-%s" % (KEYLIME_VERSION, key))
    marker = os.path.join(target, ".complete")
    if os.path.exists(marker):
        return target
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(target + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(marker):
            return target
        started = time.monotonic()
        # A venv cannot be moved after creation (absolute paths in its scripts), so it is built
        # in place and marked complete at the end; an unmarked one is a crashed build.
        subprocess.run(["rm", "-rf", target], check=True)
        subprocess.run([python, "-m", "venv", target], check=True)
        req_file = os.path.join(target, "requirements.txt")
        with open(req_file, "w", encoding="utf-8") as handle:
            handle.write(reqs)
        pip = subprocess.run([os.path.join(target, "bin", "python"), "-m", "pip", "install", "-q",
                              "--disable-pip-version-check", "--no-deps", "-r", req_file],
                             capture_output=True, text=True)
        if pip.returncode != 0:
            raise RuntimeError("pip install of the Keylime verifier failed (%d):\n%s\n%s"
                               % (pip.returncode, pip.stdout[-3000:], pip.stderr[-3000:]))
        site = subprocess.run([os.path.join(target, "bin", "python"), "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        os.symlink(DEBIAN_GPG, os.path.join(site, "gpg"))
        subprocess.run([os.path.join(target, "bin", "python"), "-c",
                        "import gpg, keylime, sqlalchemy, tornado, alembic"], check=True)
        subprocess.run(["chmod", "-R", "a+rX", target], check=True)   # a verifier may run as non-root
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write("built in %.1f s from %s %s\n" % (time.monotonic() - started, python, version))
        if log:
            log("keylime venv built in %.1f s: %s" % (time.monotonic() - started, target))
    return target


# --- small network helpers --------------------------------------------------------------------

_handed_out = set()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (a closed port).

    Taken below the kernel's ephemeral range (32768 and up), so that no outgoing connection of
    another process grabs it while the test relies on it being closed, and never the same twice.
    """
    for _ in range(1000):
        port = random.randrange(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port in 20000-32000 on 127.0.0.1")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def group_members(pgid):
    """Live (non-zombie) processes of process group pgid."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="latin-1") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _signal_mask(pid, field):
    """Signals in /proc/pid/status field (SigIgn, SigCgt) as a set of ints; empty if gone."""
    try:
        with open("/proc/%d/status" % pid, encoding="latin-1") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    mask = int(line.split()[1], 16)
                    return {n + 1 for n in range(64) if mask >> n & 1}
    except OSError:
        pass
    return set()


class StandInAgent:
    """A listener on 127.0.0.1:port that records every request to it and answers with an error.

    status=None drops the connection after reading the request (an agent that is still
    unreachable: the verifier sees a connection error); status=N answers HTTP N. Each record is
    (unix time of accept, request line).
    """

    def __init__(self, port, status=None):
        self.port = port
        self.status = status
        self.requests = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(16)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            accepted = time.time()
            threading.Thread(target=self._handle, args=(conn, accepted), daemon=True).start()

    def _handle(self, conn, accepted):
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
            with self._lock:
                self.requests.append((accepted, line))
            if self.status is not None and line:
                body = json.dumps({"code": self.status, "status": "stand-in agent error", "results": {}})
                reply = ("HTTP/1.1 %d Stand-in\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         "Connection: close\r\n\r\n%s" % (self.status, len(body), body))
                with contextlib.suppress(OSError):
                    conn.sendall(reply.encode())

    def seen(self):
        with self._lock:
            return list(self.requests)

    def close(self):
        self._stop = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)


# --- agent rows ---------------------------------------------------------------------------------

def pull_agent(agent_id, port, state=3, verifier_id="default", event=None, **extra):
    """A verifiermain row the real verifier polls in pull mode (facts file §5), as a dict."""
    row = {
        "agent_id": agent_id,
        "ip": "127.0.0.1",
        "port": port,
        "operational_state": state,
        "verifier_id": verifier_id,
        "supported_version": "2.1",
        "mtls_cert": "disabled",
        "tpm_policy": TPM_POLICY_DOUBLE_ENCODED,
        "meta_data": "{}",
        "accept_tpm_hash_algs": json.dumps(["sha256"]),
        "accept_tpm_encryption_algs": json.dumps(["rsa", "ecc"]),
        "accept_tpm_signing_algs": json.dumps(["rsassa", "ecschnorr"]),
        "hash_alg": "",
        "enc_alg": "",
        "sign_alg": "",
        "ima_pcrs": json.dumps([]),
        "learned_ima_keyrings": json.dumps({}),
        "attestation_count": 0,
        "last_event_id": event,
        "severity_level": 6 if event else None,
        "accept_attestations": 1,
    }
    row.update(extra)
    return row


# --- the verifier -------------------------------------------------------------------------------

VERIFIER_CONF = """\
[verifier]
version = 2.5
uuid = {uuid}
ip = 127.0.0.1
port = {port}
registrar_ip = 127.0.0.1
registrar_port = {registrar_port}
enable_agent_mtls = True
tls_dir = generate
server_key = default
server_key_password =
server_cert = default
trusted_client_ca = default
client_key = default
client_key_password =
client_cert = default
trusted_server_ca = default
database_url = {database_url}
database_pool_sz_ovfl = 5,10
auto_migrate_db = True
num_workers = 1
max_workers = 1
mode = pull
exponential_backoff = {exponential_backoff}
retry_interval = {retry_interval}
max_retries = {max_retries}
request_timeout = {request_timeout}
quote_interval = {quote_interval}
shutdown_drain_timeout = 1.0
max_upload_size = 104857600
measured_boot_ml_path = /sys/kernel/security/tpm0/binary_bios_measurements
measured_boot_policy_name = accept-all
measured_boot_imports = []
measured_boot_evaluate = once
severity_labels = ["info", "notice", "warning", "error", "critical", "alert", "emergency"]
severity_policy = [{{"event_id": ".*", "severity_label": "emergency"}}]
ignore_tomtou_errors = False
durable_attestation_import =
persistent_store_url =
transparency_log_url =
time_stamp_authority_url =
time_stamp_authority_certs_path =
persistent_store_format = json
persistent_store_encoding =
transparency_log_sign_algo = sha256
signed_attributes =
require_allow_list_signatures = False

[revocations]
enabled_revocation_notifications = []
zmq_ip = 127.0.0.1
zmq_port = {zmq_port}
webhook_url =
"""

CA_CONF = """\
[ca]
version = 2.5
password = default
cert_country = US
cert_ca_name = Keylime Test CA
cert_state = MA
cert_locality = Lexington
cert_organization = MITLL
cert_org_unit = 53
cert_ca_lifetime = 3650
cert_lifetime = 365
cert_bits = 2048
cert_crl_dist = http://127.0.0.1:38080/crl
"""

LOGGING_CONF = """\
[logging]
version = 2.5

[loggers]
keys = root,keylime

[handlers]
keys = consoleHandler

[formatters]
keys = formatter

[formatter_formatter]
format = {fmt}

[logger_root]
level = WARNING
handlers = consoleHandler

[handler_consoleHandler]
class = StreamHandler
level = {level}
formatter = formatter
args = (sys.stdout,)

[logger_keylime]
level = {level}
qualname = keylime
handlers =
"""

TPM2_STARTUP_STUB = """\
#!/bin/sh
# Stand-in for tpm2-tools: Keylime only asks its version at import (facts file §5).
echo 'tool="tpm2_startup" version="5.4" tctis="libtss2-tctildr"'
"""


class Verifier:
    """One real Keylime verifier configured entirely under workdir.

    database_url is Keylime's own option ('sqlite' means $KEYLIME_DIR/cv_data.sqlite); uuid is
    [verifier] uuid. Each start() writes a new log file logs/verifier-N.log; .runs keeps
    per-start facts (start time, time it answered on its port, stop time, exit code).
    user runs the verifier as that account (as a unit's User=keylime does); workdir is then
    given to it and must be reachable by it (not under a 0700 directory of root's).
    """

    def __init__(self, workdir, uuid="default", database_url="sqlite", port=None, max_retries=2,
                 retry_interval=0.5, exponential_backoff=False, request_timeout=5.0,
                 quote_interval=2.0, log_level="INFO", venv=None, extra_requirements=(), user=None):
        self.workdir = os.path.abspath(workdir)
        self.user = user
        self.uuid = uuid
        self.database_url = database_url
        self.port = port or free_port()
        self.venv = venv or keylime_venv(extra_requirements)
        self.keylime_dir = os.path.join(self.workdir, "keylime")
        self.config_path = os.path.join(self.workdir, "verifier.conf")
        self.ca_config_path = os.path.join(self.workdir, "ca.conf")
        self.logging_config_path = os.path.join(self.workdir, "logging.conf")
        self.stub_dir = os.path.join(self.workdir, "bin")
        self.log_dir = os.path.join(self.workdir, "logs")
        for path in (self.keylime_dir, self.stub_dir, self.log_dir):
            os.makedirs(path, exist_ok=True)
        self.options = dict(uuid=uuid, port=self.port, registrar_port=free_port(), zmq_port=free_port(),
                            database_url=database_url, max_retries=max_retries,
                            retry_interval=retry_interval, exponential_backoff=exponential_backoff,
                            request_timeout=request_timeout, quote_interval=quote_interval)
        self._write(self.config_path, VERIFIER_CONF.format(**self.options))
        self._write(self.ca_config_path, CA_CONF)
        self._write(self.logging_config_path, LOGGING_CONF.format(fmt=LOG_FORMAT, level=log_level))
        stub = os.path.join(self.stub_dir, "tpm2_startup")
        self._write(stub, TPM2_STARTUP_STUB)
        os.chmod(stub, 0o755)
        if user is not None:
            import pwd
            entry = pwd.getpwnam(user)
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
            os.makedirs(os.path.join(self.workdir, "run"), mode=0o700, exist_ok=True)
            subprocess.run(["chown", "-R", "%d:%d" % (self.uid, self.gid), self.workdir], check=True)
        self.proc = None
        self.runs = []

    @staticmethod
    def _write(path, text):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)

    # The environment the verifier runs with; the reset gets the very same (ExecStartPre).
    def env(self):
        env = {
            "PATH": self.stub_dir + ":" + os.path.join(self.venv, "bin") + ":/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": self.workdir,
            "LANG": "C.UTF-8",
            "KEYLIME_DIR": self.keylime_dir,
            "KEYLIME_VERIFIER_CONFIG": self.config_path,
            "KEYLIME_CA_CONFIG": self.ca_config_path,
            "KEYLIME_LOGGING_CONFIG": self.logging_config_path,
        }
        if self.user is not None:
            # Not root: Keylime's shared-memory socket goes to $XDG_RUNTIME_DIR/keylime.
            env["XDG_RUNTIME_DIR"] = os.path.join(self.workdir, "run")
        return env

    def as_user(self):
        """Popen keyword arguments that run a child as the verifier's user (none for root)."""
        if self.user is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    @property
    def db_path(self):
        """The SQLite file the verifier uses, or None for a server database."""
        url = self.database_url
        if url == "sqlite":
            return os.path.join(self.keylime_dir, "cv_data.sqlite")
        if url.startswith("sqlite:///"):
            return url[len("sqlite:///"):]
        return None

    def start(self, timeout=60.0):
        """Start the verifier and wait until it answers on its port; returns the run record."""
        assert self.proc is None, "verifier already running"
        if port_open(self.port):
            raise RuntimeError("port %d already in use before the verifier started" % self.port)
        index = len(self.runs) + 1
        log_path = os.path.join(self.log_dir, "verifier-%d.log" % index)
        log = open(log_path, "wb")
        run = {"index": index, "log": log_path, "started": time.time()}
        self.proc = subprocess.Popen([os.path.join(self.venv, "bin", "keylime_verifier")],
                                     env=self.env(), cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     **self.as_user())
        log.close()
        run["pid"] = self.proc.pid
        self.runs.append(run)
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError("verifier exited with %s before answering; log %s:\n%s"
                                   % (code, log_path, self.log(index)[-4000:]))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("verifier did not answer on port %d within %.0f s; log %s"
                                   % (self.port, timeout, log_path))
            time.sleep(0.05)
        run["ready"] = time.time()
        # Answering on the port is not yet safe to stop: the sockets are bound before the parent
        # starts ignoring SIGTERM. A SIGTERM in that window kills the parent outright and orphans
        # Keylime's shared-memory Manager, which ignores SIGTERM by design. Stoppable means: the
        # parent ignores SIGTERM and a worker has its own SIGTERM handler.
        while not self._stoppable():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("verifier never became stoppable; log %s:\n%s"
                                   % (log_path, self.log(index)[-4000:]))
            time.sleep(0.02)
        run["stoppable"] = time.time()
        return run

    def _stoppable(self):
        parent = self.proc.pid
        if not signal.SIGTERM in _signal_mask(parent, "SigIgn"):
            return False
        return any(signal.SIGTERM in _signal_mask(pid, "SigCgt")
                   for pid in group_members(parent) if pid != parent)

    def stop(self, timeout=30.0):
        """SIGTERM to the verifier's process group (the parent alone ignores it), then wait."""
        if self.proc is None:
            return None
        run = self.runs[-1]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait(10)
            run["killed"] = True
        # The workers are in the same group; wait until none is left (zombies do not count:
        # an orphan's zombie lingers until PID 1 reaps it, which a container's PID 1 may not do).
        # Once the parent is gone, what is left can only be an orphan (the Manager): 3 s grace.
        deadline = time.monotonic() + min(timeout, 3.0)
        while group_members(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = group_members(self.proc.pid)
        if left:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            run["killed"] = True
        # The Manager removes its socket when the parent exits cleanly; not after a kill.
        with contextlib.suppress(OSError):
            os.unlink("/run/keylime/shared_data.%d.sock" % self.proc.pid)
        run["stopped"] = time.time()
        run["returncode"] = code
        self.proc = None
        return run

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- the log ---
    def log(self, index=None):
        """Text of one start's log (default: the last)."""
        run = self.runs[(index or len(self.runs)) - 1]
        with open(run["log"], encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def records(self, index=None):
        """[(unix time, level, logger, message)] of one start's log; other lines are dropped."""
        out = []
        for line in self.log(index).splitlines():
            match = LOG_LINE.match(line)
            if match:
                out.append((float(match.group(1)), match.group(2), match.group(3), match.group(4)))
        return out

    def wait_for(self, predicate, timeout=60.0, what="condition"):
        """Poll predicate() until true (returns its value); fail with the log on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("verifier exited while waiting for %s:\n%s" % (what, self.log()[-4000:]))
            if time.monotonic() > deadline:
                raise RuntimeError("timed out after %.0f s waiting for %s; log:\n%s"
                                   % (timeout, what, self.log()[-4000:] if self.runs else ""))
            time.sleep(0.1)

    # --- the REST API ---
    def api(self, method, path, body=None, timeout=30):
        """(status, decoded JSON) of one request to the verifier's REST API over mTLS.

        Uses the admin client certificate the verifier generated in $KEYLIME_DIR/cv_ca (the one
        keylime_tenant would use), e.g. api("PUT", "/v2.1/agents/ID/reactivate").
        """
        import http.client
        import ssl
        ca = os.path.join(self.keylime_dir, "cv_ca")
        ctx = ssl.create_default_context(cafile=os.path.join(ca, "cacert.crt"))
        ctx.load_cert_chain(os.path.join(ca, "client-cert.crt"), os.path.join(ca, "client-private.pem"))
        ctx.check_hostname = False   # the generated server certificate names the verifier, not 127.0.0.1
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=timeout)
        try:
            if body is None:
                conn.request(method, path, body="")
            else:
                conn.request(method, path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data

    # --- the database ---
    def sql(self, statement, params=(), write=False):
        """Run one SQL statement on the verifier's database; returns the rows (list of tuples).

        SQLite through the standard library; any other URL through the venv's SQLAlchemy
        (install its driver with extra_requirements), with Keylime's own URL.
        """
        if self.db_path:
            conn = sqlite3.connect(self.db_path, timeout=30)
            try:
                cur = conn.execute(statement, params)
                rows = cur.fetchall()
                if write:
                    conn.commit()
                return rows
            finally:
                conn.close()
        return self.sql_sqlalchemy(statement, params, self.database_url)

    def sql_sqlalchemy(self, statement, params=(), url=None):
        """One statement through the venv's SQLAlchemy (any URL it has a driver for); rows.

        '?' placeholders become named bind parameters, so the same SQL serves every dialect.
        """
        parts = statement.split("?")
        named = parts[0] + "".join(":p%d%s" % (i, part) for i, part in enumerate(parts[1:]))
        script = (
            "import json, sys, sqlalchemy\n"
            "a = json.load(sys.stdin)\n"
            "e = sqlalchemy.create_engine(a['url'])\n"
            "with e.begin() as c:\n"
            "    r = c.execute(sqlalchemy.text(a['sql']), a['params'])\n"
            "    rows = [list(x) for x in r] if r.returns_rows else []\n"
            "print(json.dumps(rows, default=str))\n")
        done = subprocess.run([os.path.join(self.venv, "bin", "python"), "-c", script],
                              input=json.dumps({"url": url or self.database_url, "sql": named,
                                                "params": {"p%d" % i: v for i, v in enumerate(params)}}),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError("SQL through SQLAlchemy failed: %s" % done.stderr[-2000:])
        return [tuple(r) for r in json.loads(done.stdout)]

    def insert_agents(self, rows):
        for row in rows:
            cols = list(row)
            self.sql("INSERT INTO verifiermain (%s) VALUES (%s)" % (", ".join(cols), ", ".join("?" * len(cols))),
                     [row[c] for c in cols], write=True)

    def agents(self, columns=("agent_id", "verifier_id", "operational_state", "severity_level",
                              "last_event_id", "attestation_count", "last_successful_attestation",
                              "ip", "port")):
        """{agent_id: (columns...)} of every row: the exact picture to compare before/after."""
        rows = self.sql("SELECT %s FROM verifiermain ORDER BY agent_id" % ", ".join(columns))
        return {row[0]: tuple(row) for row in rows}

    def states(self):
        return {row[0]: row[1] for row in self.sql("SELECT agent_id, operational_state FROM verifiermain")}


def verifier_processes(exclude=()):
    """PIDs of keylime_verifier processes on this host outside the given process groups.

    The reset refuses to write (exit 69) while any verifier runs on the host; on a shared
    development machine another test's verifier would make that refusal, not ours.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                argv = [a.decode("utf-8", "replace") for a in handle.read().split(b"\0") if a]
            pgid = os.getpgid(int(entry))
        except (OSError, ProcessLookupError):
            continue
        if pgid in exclude:
            continue
        if any(os.path.basename(a) in ("keylime_verifier", "keylime-verifier", "keylime.cmd.verifier")
               for a in argv[:3]):
            found.append(int(entry))
    return found


def wait_no_verifiers(timeout=60.0, exclude=()):
    """Wait until no keylime_verifier runs on the host (outside exclude); returns those left."""
    deadline = time.monotonic() + timeout
    while True:
        left = verifier_processes(exclude)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def run_reset(verifier, *args, timeout=60, as_verifier_user=False):
    """The in-tree keylime-reset-failed exactly as the verifier unit's ExecStartPre runs it.

    Same environment as the verifier (so the same configuration search finds the same database),
    Debian's /usr/bin/python3, the package from this tree. as_verifier_user runs it as the
    verifier's user (ExecStartPre under User=); otherwise as root (an admin, or ExecStartPre=+).
    Returns CompletedProcess with .duration (seconds).
    """
    env = verifier.env()
    env["PYTHONPATH"] = ROOT
    if as_verifier_user and verifier.user is not None:
        # The account may not reach this tree: give it its own copy, as the .deb installs one.
        lib = os.path.join(verifier.workdir, "lib")
        if not os.path.isdir(os.path.join(lib, "keylime_reboot_fix")):
            os.makedirs(lib, exist_ok=True)
            subprocess.run(["cp", "-r", os.path.join(ROOT, "keylime_reboot_fix"), lib], check=True)
            subprocess.run(["rm", "-rf", os.path.join(lib, "keylime_reboot_fix", "__pycache__")], check=True)
            subprocess.run(["chmod", "-R", "a+rX", lib], check=True)
        env["PYTHONPATH"] = lib
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    env["PYTHONDONTWRITEBYTECODE"] = "1"   # no __pycache__ owned by someone else in the tree
    started = time.monotonic()
    done = subprocess.run([DEBIAN_PYTHON, "-m", "keylime_reboot_fix"] + list(args), env=env,
                          cwd=verifier.workdir, capture_output=True, text=True, timeout=timeout,
                          **(verifier.as_user() if as_verifier_user else {}))
    done.duration = time.monotonic() - started
    return done


def main(argv=None):
    """python3 -m tests.support.keylime_verifier build: build (or find) the cached venv."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build"]:
        print(keylime_venv(log=print))
        return 0
    print("usage: python3 -m tests.support.keylime_verifier build", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main())
