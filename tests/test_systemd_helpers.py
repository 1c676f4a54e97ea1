"""The systemd helpers run as real processes: wait-agent-port, openbao-health, cert-renewal.

They are run from libexec/ exactly as the units run them (their own executable, Debian's
python3), against real sockets and a real HTTP server on 127.0.0.1; exit codes and time bounds
are asserted exactly.
"""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from keylime_reboot_fix import wait_port

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBEXEC = os.path.join(TOP, "libexec")


# Upper time bounds include starting a Python process, which takes seconds on a loaded 2-core
# machine; the lower bounds (the timeout really waited for) stay exact.
STARTUP_SLACK = 3.0


def run(helper, *args, env=None, timeout=30):
    environ = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": TOP}
    environ.update(env or {})
    start = time.monotonic()
    proc = subprocess.run([os.path.join(LIBEXEC, helper)] + list(args), env=environ,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- openbao-health against a real local HTTP server -----------------------------------------

class FakeOpenBao:
    """A tiny HTTP server on 127.0.0.1 answering /v1/sys/health with the code the test sets."""

    def __init__(self, code=200):
        self.code = code
        self.paths = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.paths.append(self.path)
                body = b'{"initialized":true,"sealed":%s}' % (b"true" if owner.code == 503 else b"false")
                self.send_response(owner.code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def openbao():
    server = FakeOpenBao()
    yield server
    server.close()


@pytest.mark.parametrize("code", [200, 429, 473])
def test_health_unsealed_answers_exit_0_at_once(openbao, code):
    openbao.code = code
    rc, _, err, took = run("openbao-health", "--addr", openbao.addr, "--timeout", "20")
    assert rc == 0
    assert took < 1.0 + STARTUP_SLACK
    assert "is unsealed (HTTP %d)" % code in err
    assert openbao.paths == ["/v1/sys/health"]


@pytest.mark.parametrize("code,word", [(503, "sealed (HTTP 503)"), (500, "unhealthy (HTTP 500)"),
                                       (501, "not initialised (HTTP 501)")])
def test_health_sealed_or_failing_exits_1_after_the_timeout(openbao, code, word):
    openbao.code = code
    rc, _, err, took = run("openbao-health", "--addr", openbao.addr, "--timeout", "1.5", "--interval", "0.25")
    assert rc == 1
    assert 1.5 <= took < 1.5 + STARTUP_SLACK
    assert err.count("\n") == 1 and word in err and "not ready after 1.5 s" in err
    assert len(openbao.paths) >= 4          # it polled, it did not give up after one answer


def test_health_becomes_unsealed_while_waiting(openbao):
    openbao.code = 503
    threading.Timer(0.8, lambda: setattr(openbao, "code", 200)).start()
    rc, _, err, took = run("openbao-health", "--addr", openbao.addr, "--timeout", "20", "--interval", "0.2")
    assert rc == 0
    assert 0.8 <= took < 1.5 + STARTUP_SLACK
    assert "is unsealed (HTTP 200)" in err


def test_health_nothing_listening_exits_1_within_the_bound():
    rc, _, err, took = run("openbao-health", "--addr", "http://127.0.0.1:%d" % free_port(),
                           "--timeout", "1.5", "--interval", "0.25")
    assert rc == 1
    assert 1.5 <= took < 1.5 + STARTUP_SLACK
    assert "unreachable" in err and "Connection refused" in err


def test_health_server_that_never_answers_exits_1_within_the_bound():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)                       # accepts connections (backlog), never answers
    try:
        rc, _, err, took = run("openbao-health", "--addr", "http://127.0.0.1:%d" % silent.getsockname()[1],
                               "--timeout", "1.5")
    finally:
        silent.close()
    assert rc == 1
    assert 1.5 <= took < 1.5 + STARTUP_SLACK
    assert "unreachable (timed out)" in err


def test_health_settings_from_the_environment_file_variables(openbao):
    openbao.code = 503
    rc, _, err, took = run("openbao-health", env={"BAO_ADDR": openbao.addr, "OPENBAO_HEALTH_TIMEOUT": "1"})
    assert rc == 1
    assert 1.0 <= took < 1.0 + STARTUP_SLACK
    assert "OpenBao at %s not ready after 1.0 s: sealed" % openbao.addr in err


@pytest.mark.parametrize("args,env,code,text", [
    (["--timeout", "-1"], {}, 64, "usage error: argument --timeout: must be a positive number"),
    (["--addr", "ftp://x"], {}, 64, "usage error: OpenBao address must be http(s)://host"),
    (["--bogus"], {}, 64, "usage error: unrecognized arguments: --bogus"),
    ([], {"OPENBAO_HEALTH_TIMEOUT": "soon"}, 78, "configuration error: OPENBAO_HEALTH_TIMEOUT"),
    ([], {"BAO_ADDR": "127.0.0.1:8200"}, 78, "configuration error: OpenBao address must be"),
    ([], {"BAO_CACERT": "/nonexistent/ca.pem"}, 78, "configuration error: CA file /nonexistent/ca.pem"),
])
def test_health_bad_input_is_one_line_and_its_exit_code(args, env, code, text):
    rc, out, err, took = run("openbao-health", *args, env=env)
    assert rc == code
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("openbao-health: " + text)
    assert took < 1.0 + STARTUP_SLACK


# --- wait-agent-port ---------------------------------------------------------------------------

def test_wait_returns_once_the_port_opens_later(tmp_path):
    port = free_port()
    conf = tmp_path / "agent.conf"
    conf.write_text('[agent]\nip = "0.0.0.0"\nport = %d\n' % port)
    listener = socket.socket()

    def open_later():
        listener.bind(("127.0.0.1", port))
        listener.listen(4)
    threading.Timer(1.0, open_later).start()
    try:
        rc, _, err, took = run("wait-agent-port", "--timeout", "10", env={"KEYLIME_AGENT_CONFIG": str(conf)})
    finally:
        listener.close()
    assert rc == 0
    assert 1.0 <= took < 1.5 + STARTUP_SLACK
    assert err.startswith("wait-agent-port: agent listening on 127.0.0.1 port %d (from %s) after " % (port, conf))


def test_wait_gives_up_after_the_timeout_with_exit_1():
    port = free_port()
    rc, _, err, took = run("wait-agent-port", "--port", str(port), "--timeout", "1.5")
    assert rc == 1
    assert 1.5 <= took < 1.5 + STARTUP_SLACK
    assert err == ("wait-agent-port: agent not listening on 127.0.0.1 port %d (from command line) after "
                   "1.5 s; giving up, units ordered after the agent start anyway\n" % port)


@pytest.mark.parametrize("args,env,code,text", [
    (["--port", "70000"], {}, 64, "usage error: argument --port: port out of range 1-65535: '70000'"),
    (["--timeout", "0"], {}, 64, "usage error: argument --timeout: must be a positive number of seconds: '0'"),
    ([], {"KEYLIME_AGENT_PORT": "nine"}, 78, "configuration error: invalid agent port 'nine' in KEYLIME_AGENT_PORT"),
])
def test_wait_bad_input_is_one_line_and_its_exit_code(args, env, code, text):
    rc, _, err, _ = run("wait-agent-port", *args, env=env)
    assert rc == code
    assert err == "wait-agent-port: %s\n" % text if code == 78 else err.startswith("wait-agent-port: " + text)


def test_agent_port_from_toml_ini_snippets_and_environment(fs):
    """pyfakefs: the configuration search over /etc and /usr/etc without touching the machine."""
    assert wait_port.agent_address({}) == ("127.0.0.1", 9002, "default")
    fs.create_file("/usr/etc/keylime/agent.conf", contents="[agent]\nport = 9003\n")
    assert wait_port.agent_address({}) == ("127.0.0.1", 9003, "/usr/etc/keylime/agent.conf")
    fs.create_file("/etc/keylime/agent.conf", contents=(
        '# rust-keylime TOML\n[agent]\nuuid = "d432fbb3"\nip = "192.0.2.7"  # comment\nport = 9004\n'
        '[runtime]\nport = 1\n'))
    assert wait_port.agent_address({}) == ("192.0.2.7", 9004, "/etc/keylime/agent.conf")
    fs.create_file("/usr/etc/keylime/agent.conf.d/10-port.conf", contents="[agent]\nport = 9005\n")
    fs.create_file("/etc/keylime/agent.conf.d/20-port.conf", contents="[agent]\nport = '9006'\nip = ::\n")
    assert wait_port.agent_address({}) == ("::1", 9006, "/etc/keylime/agent.conf.d/20-port.conf")
    assert wait_port.agent_address({"KEYLIME_AGENT_PORT": "9007"})[1:] == (9007, "KEYLIME_AGENT_PORT")
    fs.create_file("/srv/only.conf", contents="[agent]\nport: 9008\n")   # INI style, the only file read
    assert wait_port.agent_address({"KEYLIME_AGENT_CONFIG": "/srv/only.conf"}) == ("127.0.0.1", 9008, "/srv/only.conf")
    fs.create_file("/srv/bad.conf", contents="[agent]\nport = 0\n")
    with pytest.raises(wait_port.ConfigProblem, match="invalid agent port '0' in /srv/bad.conf"):
        wait_port.agent_address({"KEYLIME_AGENT_CONFIG": "/srv/bad.conf"})


# --- cert-renewal --------------------------------------------------------------------------

def test_renewal_check_skips_cleanly_when_nothing_is_configured():
    rc, out, err, _ = run("cert-renewal", "--check")
    assert (rc, out) == (1, "")
    assert err == ("cert-renewal: no certificate renewal configured on this host (set CERT_RENEWAL_COMMAND "
                   "in /etc/keylime-reboot-fix/cert-renewal.conf); skipping\n")
    rc, _, err2, _ = run("cert-renewal", env={"CERT_RENEWAL_COMMAND": "  "})
    assert rc == 0 and err2 == err


def test_renewal_runs_the_configured_command_and_returns_its_exit_code(tmp_path):
    marker = tmp_path / "ran"
    command = "/bin/sh -c 'echo \"$0 $1\" > %s; exit 3' renew 'the agent'" % marker
    assert run("cert-renewal", "--check", env={"CERT_RENEWAL_COMMAND": command})[0] == 0
    rc, _, err, _ = run("cert-renewal", env={"CERT_RENEWAL_COMMAND": command})
    assert rc == 3
    assert marker.read_text() == "renew the agent\n"
    assert err.splitlines()[-1] == "cert-renewal: renewal command FAILED (exit 3)"
    rc, _, err, _ = run("cert-renewal", env={"CERT_RENEWAL_COMMAND": "true"})
    assert rc == 0 and err.splitlines() == ["cert-renewal: running renewal command: true",
                                            "cert-renewal: renewal command succeeded (exit 0)"]
    rc, _, _, _ = run("cert-renewal", env={"CERT_RENEWAL_COMMAND": "/bin/sh -c 'kill -TERM $$'"})
    assert rc == 128 + 15


@pytest.mark.parametrize("command,text", [
    ("/nonexistent/renew", "renewal command /nonexistent/renew is not an executable file"),
    ("no-such-renewal-tool --now", "renewal command no-such-renewal-tool not found in PATH"),
    ("renew 'unclosed", "CERT_RENEWAL_COMMAND=\"renew 'unclosed\" cannot be parsed: No closing quotation"),
])
def test_renewal_misconfigured_fails_visibly(command, text):
    rc, _, err, _ = run("cert-renewal", "--check", env={"CERT_RENEWAL_COMMAND": command})
    assert rc == 255           # ExecCondition: 255 fails the unit instead of skipping it
    assert err == "cert-renewal: configuration error: %s (/etc/keylime-reboot-fix/cert-renewal.conf)\n" % text
    assert run("cert-renewal", env={"CERT_RENEWAL_COMMAND": command})[0] == 78


def test_helpers_are_executable_with_debian_python():
    for name in ("wait-agent-port", "openbao-health", "cert-renewal", "keylime-reboot-fix-generator"):
        path = os.path.join(LIBEXEC, name)
        assert os.access(path, os.X_OK), name
        with open(path, encoding="utf-8") as handle:
            assert handle.readline() == "#!/usr/bin/python3\n"
        rc, out, _, _ = run(name, "--help")
        assert rc == 0 and out.startswith("usage: "), name
    assert sys.version_info >= (3, 9)
