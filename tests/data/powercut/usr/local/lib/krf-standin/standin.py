"""Stand-ins for Keylime's registrar, agent and verifier inside the power-cut test VM.

A mock, because the real components cannot run in this VM: a real agent needs a TPM and the
real verifier and registrar need their Python dependencies and mTLS certificates (the real
verifier is tested in tests/test_real_verifier.py). The stand-ins keep what the power-cut test
is about: the verifier's start-up and polling behaviour on the real database (Keylime 7.14.3
facts: rows in states 1, 3, 4, 5, 6 become START at start for every verifier id; only START rows
of its own uuid are polled; while retrying the row shows 3; retries exhausted set 7 with
internal.verifier.not_reachable and severity 6), an agent that listens only after a delay, and
a registrar the agent registers with. They talk plain HTTP on 127.0.0.1 and log to the journal.

Settings come from the kernel command line (krf.NAME=VALUE) so that each boot can differ.
"""

import configparser
import http.client
import http.server
import json
import os
import sqlite3
import sys
import socket
import threading
import time

REGISTRAR_PORT = 8891
NOT_REACHABLE = "internal.verifier.not_reachable"
POLLED_STATES = (1, 3, 4, 5, 6)  # APPROVED_REACTIVATE_STATES
START, GET_QUOTE, FAILED = 1, 3, 7


def log(*words):
    print(*words, flush=True)


def cmdline(name, default=None):
    """Value of krf.NAME=VALUE on the kernel command line."""
    try:
        with open("/proc/cmdline", encoding="utf-8") as handle:
            words = handle.read().split()
    except OSError:
        words = []
    for word in words:
        if word.startswith("krf.%s=" % name):
            return word.split("=", 1)[1]
    return default


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class RegistrarHandler(QuietHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        agent_id = self.path.rstrip("/").rsplit("/", 1)[-1]
        log("agent %s registered" % agent_id)
        self.reply(200, {"code": 200, "status": "Success"})


class AgentHandler(QuietHandler):
    def do_GET(self):
        if "/quotes/" in self.path:
            self.reply(200, {"code": 200, "status": "Success", "results": {"quote": "stand-in"}})
        else:
            self.reply(404, {"code": 404, "status": "Not found"})


def serve(port, handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def registrar():
    serve(REGISTRAR_PORT, RegistrarHandler)
    log("registrar listening on 127.0.0.1:%d" % REGISTRAR_PORT)
    while True:
        time.sleep(3600)


def register(agent_id, deadline=60.0):
    """POST the agent to the registrar, retrying while it is not up yet (bounded)."""
    end = time.monotonic() + deadline
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", REGISTRAR_PORT, timeout=2)
            conn.request("POST", "/v2.1/agents/%s" % agent_id, body=b"{}")
            status = conn.getresponse().status
            conn.close()
            log("registered with the registrar as %s (HTTP %d)" % (agent_id, status))
            return True
        except OSError as exc:
            if time.monotonic() > end:
                log("registration failed: %s" % exc)
                return False
            time.sleep(0.2)


def agent():
    """The local agent: a slow host; registers, then listens only after krf.agent_delay seconds."""
    agent_id = cmdline("agent_id", "local-agent")
    port = int(cmdline("agent_port", "9002"))
    delay = float(cmdline("agent_delay", os.environ.get("KRF_AGENT_DELAY", "3")))
    log("agent %s starting; listening in %.1f s" % (agent_id, delay))
    time.sleep(delay)
    register(agent_id)
    serve(port, AgentHandler)
    log("agent %s listening on 127.0.0.1:%d" % (agent_id, port))
    while True:
        time.sleep(3600)


def notify_ready():
    """sd_notify(READY=1) for Type=notify units (the protocol is one datagram)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", address)


def other_hosts():
    """Agents of the other hosts, up again (ports from krf.other_ports)."""
    ports = [int(p) for p in cmdline("other_ports", "").split(",") if p]
    for port in ports:
        serve(port, AgentHandler)
    log("other hosts' agents listening on 127.0.0.1 ports %s" % ",".join(map(str, ports)))
    notify_ready()
    while True:
        time.sleep(3600)


def verifier_config():
    parser = configparser.ConfigParser()
    parser.read("/etc/keylime/verifier.conf")
    section = parser["verifier"]
    url = section.get("database_url", "sqlite").strip('"')
    keylime_dir = os.environ.get("KEYLIME_DIR", "/var/lib/keylime")
    path = os.path.join(keylime_dir, "cv_data.sqlite") if url == "sqlite" else url[len("sqlite:///"):]
    return {
        "uuid": section.get("uuid", "default").strip('"'),
        "db": path,
        "max_retries": section.getint("max_retries", 5),
        "retry_interval": section.getfloat("retry_interval", 2.0),
        "exponential_backoff": section.getboolean("exponential_backoff", True),
        "quote_interval": section.getfloat("quote_interval", 2.0),
    }


def quote(ip, port):
    conn = http.client.HTTPConnection(ip, port, timeout=2)
    try:
        conn.request("GET", "/v2.1/quotes/integrity?nonce=standin&mask=0x0")
        return conn.getresponse().status
    finally:
        conn.close()


def verifier():
    conf = verifier_config()
    log("keylime_verifier stand-in starting: uuid=%s db=%s" % (conf["uuid"], conf["db"]))
    db = sqlite3.connect(conf["db"], timeout=10, isolation_level=None)

    def write(sql, args=()):
        db.execute("BEGIN IMMEDIATE")
        db.execute(sql, args)
        db.execute("COMMIT")

    placeholders = ",".join("?" * len(POLLED_STATES))
    write("UPDATE verifiermain SET operational_state=? WHERE operational_state IN (%s)" % placeholders,
          (START,) + POLLED_STATES)
    rows = db.execute("SELECT agent_id, verifier_id, operational_state, ip, port FROM verifiermain "
                      "ORDER BY agent_id").fetchall()
    polled = {}
    for agent_id, verifier_id, state, ip, port in rows:
        if state == START and verifier_id == conf["uuid"]:
            polled[agent_id] = {"ip": ip, "port": port, "tries": 0, "due": 0.0, "ok": 0}
        else:
            log("agent %s (verifier %s) in state %s: not polled" % (agent_id, verifier_id, state))
    log("polling %d agents: %s" % (len(polled), " ".join(sorted(polled))))
    for agent_id in polled:
        write("UPDATE verifiermain SET operational_state=? WHERE agent_id=?", (GET_QUOTE, agent_id))
    while polled:
        now = time.monotonic()
        for agent_id, st in sorted(polled.items()):
            if st["due"] > now:
                continue
            try:
                status = quote(st["ip"], st["port"])
            except OSError as exc:
                status = 599
                reason = exc.__class__.__name__
            if status == 200:
                st["tries"] = 0
                st["ok"] += 1
                write("UPDATE verifiermain SET operational_state=?, attestation_count=attestation_count+1, "
                      "last_successful_attestation=? WHERE agent_id=?", (GET_QUOTE, int(time.time()), agent_id))
                if st["ok"] == 1:
                    log("agent %s: first quote ok" % agent_id)
                st["due"] = time.monotonic() + conf["quote_interval"]
                continue
            st["tries"] += 1
            if st["tries"] > conf["max_retries"]:
                write("UPDATE verifiermain SET operational_state=?, severity_level=6, last_event_id=? "
                      "WHERE agent_id=?", (FAILED, NOT_REACHABLE, agent_id))
                log("Agent %s was not reachable for quote in %d tries, setting state to FAILED"
                    % (agent_id, conf["max_retries"]))
                del polled[agent_id]
                continue
            wait = conf["retry_interval"]
            if conf["exponential_backoff"]:
                wait = wait * 2 ** (st["tries"] - 1)
            log("agent %s: quote failed (HTTP %d, %s), retry %d/%d in %.1f s"
                % (agent_id, status, reason if status == 599 else "", st["tries"], conf["max_retries"], wait))
            st["due"] = time.monotonic() + wait
        time.sleep(0.02)
    log("no agent left to poll")
    while True:
        time.sleep(3600)


def test_phase():
    """Test harness unit: tells the host over the serial console when to cut, or powers off."""
    conf = verifier_config()
    phase = cmdline("phase", "0")
    deadline = time.monotonic() + float(cmdline("phase_timeout", "90"))
    boot_time = time.time() - float(open("/proc/uptime").read().split()[0])

    def console(text):
        with open("/dev/ttyS0", "w") as tty:
            tty.write("\r\n%s\r\n" % text)

    def states():
        try:
            db = sqlite3.connect("file:%s?mode=ro" % conf["db"], uri=True, timeout=5)
            try:
                return {r[0]: r[1:] for r in db.execute(
                    "SELECT agent_id, operational_state, attestation_count, last_successful_attestation "
                    "FROM verifiermain")}
            finally:
                db.close()
        except sqlite3.Error:
            return {}

    def show(rows):
        return ",".join("%s:%s:%s" % (a, r[0], r[1]) for a, r in sorted(rows.items()))

    if phase == "1":
        failed = [a for a in cmdline("expect_failed", "").split(",") if a]
        busy = cmdline("expect_busy", "local-agent")
        initial = None
        while time.monotonic() < deadline:
            now = states()
            if now and initial is None:
                initial = now[busy][1] or 0
            # The unreachable agents are FAILED and the verifier has attested the local agent 5
            # more times in this boot: it is in its steady state of writing every quote_interval.
            if now and all(now[a][0] == FAILED for a in failed) and (now[busy][1] or 0) >= initial + 5:
                console("KRF-CUT-READY attestations=%d states=%s" % (now[busy][1], show(now)))
                break
            time.sleep(0.1)
        else:
            console("KRF-PHASE1-TIMEOUT states=%s" % show(states()))
    elif phase == "2":
        attested = [a for a in cmdline("expect_attested", "").split(",") if a]
        while time.monotonic() < deadline:
            now = states()
            if now and all(now[a][0] == GET_QUOTE and (now[a][2] or 0) >= boot_time for a in attested):
                console("KRF-PHASE2-DONE states=%s" % show(now))
                break
            time.sleep(0.2)
        else:
            console("KRF-PHASE2-TIMEOUT states=%s" % show(states()))
        os.execv("/bin/systemctl", ["systemctl", "--no-block", "poweroff"])
    while True:
        time.sleep(3600)


def main(role):
    roles = {"registrar": registrar, "agent": agent, "verifier": verifier, "other-hosts": other_hosts,
             "test-phase": test_phase}
    sys.exit(roles[role]() or 0)
