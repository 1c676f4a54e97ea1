"""Logging: the real syslog socket, and one copy per line when stderr is the journal."""

import io
import os
import re
import socket
import subprocess
import sys

import pytest

from keylime_reboot_fix.event_log import EventLog, stderr_is_journal
from tests import demo_fleet
from tests.conftest import ROOT


def test_journal_stream_matching_stderr_drops_the_stderr_copy(tmp_path):
    err_file = open(tmp_path / "stderr", "w+")
    st = os.fstat(err_file.fileno())
    env = {"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)}
    assert stderr_is_journal(env, err_file) is True
    sent = []
    log = EventLog(stderr=err_file, syslog_sink=lambda lvl, msg: sent.append((lvl, msg)), environ=env)
    log.warning("once")
    err_file.seek(0)
    assert (err_file.read(), sent) == ("", [("warning", "once")])


def test_journal_stream_of_another_file_keeps_the_stderr_copy(tmp_path):
    err = io.StringIO()
    assert stderr_is_journal({"JOURNAL_STREAM": "1:2"}, err) is False
    log = EventLog(stderr=err, syslog_sink=lambda lvl, msg: None, environ={"JOURNAL_STREAM": "1:2"})
    log.error("twice")
    assert err.getvalue() == "keylime-reset-failed: error: twice\n"


def test_lines_reach_the_real_syslog_socket_with_the_identifier(fleet):
    """The stdlib syslog module writes to /dev/log; a datagram socket there receives what it sends."""
    if os.path.exists("/dev/log"):
        pytest.skip("/dev/log belongs to this machine's syslog daemon; the nspawn test reads the journal instead")
    if os.geteuid() != 0:
        pytest.skip("binding /dev/log needs root")
    db = fleet(demo_fleet.rows())
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("/dev/log")
    try:
        server.settimeout(5)
        proc = subprocess.Popen([sys.executable, "-m", "keylime_reboot_fix", "--force"] + db.args, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert proc.wait() == 0
        received = [server.recv(4096).decode() for _ in range(3)]
    finally:
        server.close()
        os.unlink("/dev/log")
    # <30> is daemon.info; the identifier and pid come first, as journalctl -t matches them.
    assert [r.startswith("<30>") for r in received] == [True] * 3
    heads = [re.match(r"<30>\w{3} [ \d]\d \d\d:\d\d:\d\d (\S+): ", r).group(1) for r in received]
    assert heads == ["keylime-reset-failed[%d]" % proc.pid] * 3
    assert [r.split("]: ", 1)[1] for r in received] == [
        "reset agent agent-02-unreachable (10.10.2.62:9002, internal.verifier.not_reachable) from FAILED (7) to "
        "GET_QUOTE (3): reset 1 of 3 without attestation",
        "reset agent agent-03-unreachable-v (10.10.2.63:9002, internal.verifier.not_reachable_v) from FAILED (7) "
        "to GET_QUOTE (3): reset 1 of 3 without attestation",
        "reset 2 agent(s) of verifier 'default' from FAILED (7) to GET_QUOTE (3) in %s; left alone: 5 other cause, "
        "1 other verifier, 1 no verifier, 0 cap reached" % db.path]
