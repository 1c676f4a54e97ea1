"""Real systemd, per unit layout: systemd-analyze and systemd --test inside the root, then a boot.

For each layout ((a) site, (b) upstream, (c) debian; tests/support/units.py) a debootstrapped
bookworm root gets the package installed (units.install_package), the layout, stand-in services
and a verifier database with one agent FAILED by unreachability. First, inside the root (nspawn,
not booted): the generator runs as at boot, `systemd-analyze verify` names every unit, and
`systemd --test` (real systemd, which runs the generators itself) prints the merged dependencies.
Then the root is booted with systemd as PID 1 and the journal is checked: no ordering cycle, no job
deleted, the reset before the verifier, the start order, the agent's wait for its port, the
renewal at boot and the timer's next elapse.
"""

import os
import re
import subprocess

import pytest

from tests.support import boot, units
from tests.support.real import require

LAYOUTS = ("site", "upstream", "debian")
STARTED = "39f53479d3a045ac8e11786248231fbf"   # MESSAGE_ID of systemd's "Started <unit>"
ANALYZE = """#!/bin/bash
out=/results/analyze
mkdir -p $out
/usr/lib/systemd/system-generators/keylime-reboot-fix-generator /run/systemd/generator \
    /run/systemd/generator.early /run/systemd/generator.late; echo $? > $out/generator-rc
cp /run/keylime-reboot-fix/generator.log $out/
SYSTEMD_LOG_COLOR=0 systemd-analyze verify {units} > $out/verify 2>&1; echo $? > $out/verify-rc
setpriv --reuid=65534 --regid=65534 --clear-groups /lib/systemd/systemd --test --system --no-pager \
    --unit=multi-user.target > $out/test-dump 2>&1; echo $? > $out/test-rc
mkdir -p /etc/systemd/system/keylime_verifier.service.d
echo '[Unit]
After=keylime_agent.service' > /etc/systemd/system/keylime_verifier.service.d/zz-naive.conf
SYSTEMD_LOG_COLOR=0 systemd-analyze verify {units} > $out/verify-naive 2>&1
rm /etc/systemd/system/keylime_verifier.service.d/zz-naive.conf
"""


@pytest.fixture(scope="module", params=LAYOUTS)
def layout_root(request, tmp_path_factory):
    ok, why = boot.available()
    require(ok, why)
    base = tmp_path_factory.mktemp("nspawn-" + request.param)
    root = str(base / "root")
    boot.prepare(request.param, root)
    yield request.param, root, str(base)
    boot.release(root)


def nspawn_run(root, results, script):
    """Run a script in the root with nspawn, not booted (systemd is not PID 1)."""
    units.write(root, "root/krf-analyze.sh", script, 0o755)
    os.makedirs(results, exist_ok=True)
    proc = subprocess.run(["systemd-nspawn", "-q", "-D", root, "--register=no", "--keep-unit",
                           "--private-network", "--bind=%s:/results" % results, "/root/krf-analyze.sh"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def unit_dump(text, unit):
    """{dependency kind: [units]} of one unit in `systemd --test` output."""
    block = text.split("-> Unit %s:\n" % unit, 1)[1].split("-> Unit ", 1)[0]
    deps = {}
    for kind, other in re.findall(r"^\s+(\w+): (\S+) \(", block, re.M):
        deps.setdefault(kind, []).append(other)
    return deps, block


def test_real_systemd_sees_the_expected_edges_and_no_cycle(layout_root):
    layout, root, base = layout_root
    results = os.path.join(base, "analyze-results")
    nspawn_run(root, results, ANALYZE.format(units=" ".join(units.unit_names(layout))))
    out = os.path.join(results, "analyze")
    read = lambda name: open(os.path.join(out, name), encoding="utf-8").read()
    assert read("generator-rc") == "0\n"
    assert read("verify-rc") == "0\n"
    assert read("verify") == ""                 # no cycle, no missing executable, no bad setting
    assert read("test-rc") == "0\n"
    dump = read("test-dump")
    assert "cycle" not in dump.lower()
    verifier, verifier_block = unit_dump(dump, "keylime_verifier.service")
    agent, agent_block = unit_dump(dump, "keylime_agent.service")
    renewal, _ = unit_dump(dump, "keylime-cert-renewal.service")
    assert ("keylime_agent.service" in verifier["After"]) == (layout == "site")
    assert ("keylime_registrar.service" in verifier["Before"]) == (layout != "site")
    assert {"network-online.target"} <= set(verifier["After"]) & set(verifier["Wants"])
    assert "ExecStartPre:" in verifier_block and "/usr/sbin/keylime-reset-failed" in verifier_block
    assert {"keylime_registrar.service", "keylime-cert-renewal.service"} <= set(agent["After"])
    assert "/usr/libexec/keylime-reboot-fix/wait-agent-port" in agent_block
    assert "openbao.service" in renewal["Wants"] and "openbao.service" not in renewal.get("After", [])
    # The negative control: the write-up's static edge cycles in the packaged layouts.
    naive = read("verify-naive")
    assert ("Found ordering cycle" in naive) == (layout != "site"), naive


def entries(journal):
    out = []
    for e in journal:
        message = e.get("MESSAGE", "")
        if isinstance(message, list):
            message = bytes(message).decode("utf-8", "replace")
        out.append((e.get("SYSLOG_IDENTIFIER", ""), message or "", e))
    return out


def first(log, predicate, what):
    for index, (ident, message, entry) in enumerate(log):
        if predicate(ident, message, entry):
            return index
    raise AssertionError("not in the journal: " + what)


def started(log, unit):
    return first(log, lambda i, m, e: e.get("MESSAGE_ID") == STARTED and e.get("UNIT") == unit, "Started " + unit)


def test_boot_in_real_systemd(layout_root):
    layout, root, base = layout_root
    results = os.path.join(base, "boot-results")
    seconds, console = boot.boot(root, results)
    assert os.path.exists(os.path.join(results, "done")), "container did not finish:\n" + console[-3000:]
    assert seconds < 60
    log = entries(boot.journal(results))
    text = "\n".join(m for _, m, _ in log)

    # No ordering cycle anywhere, no job deleted to break one; the three Keylime services run.
    assert not re.search(r"ordering cycle|break ordering|deleted to break|Job .* deleted", text, re.I)
    for unit in ("keylime_registrar.service", "keylime_agent.service", "keylime_verifier.service"):
        props = boot.show(results, unit)
        assert (props["ActiveState"], props["SubState"], props["Result"]) == ("active", "running", "success"), unit

    # The generator's decision and the verifier's real ordering after boot.
    generator_log = boot.read(results, "generator.log")
    verifier_after = boot.show(results, "keylime_verifier.service")["After"].split()
    if layout == "site":
        assert generator_log.endswith("=> emitted /run/systemd/generator/keylime_verifier.service.d/"
                                      "50-keylime-reboot-fix-after-agent.conf\n")
        assert "keylime_agent.service" in verifier_after
    else:
        assert generator_log.endswith("=> no edge emitted\n")
        assert "keylime_agent.service" not in verifier_after

    # The reset ran, in the verifier's ExecStartPre, before the verifier process started.
    verifier_starting = first(log, lambda i, m, e: m.startswith("Starting keylime_verifier.service"), "Starting verifier")
    reset = first(log, lambda i, m, e: i == "keylime-reset-failed", "keylime-reset-failed")
    verifier_ran = first(log, lambda i, m, e: m.startswith("STANDIN verifier started"), "verifier stand-in")
    assert verifier_starting < reset < verifier_ran
    reset_lines = [m for i, m, _ in log if i == "keylime-reset-failed"]
    assert "Traceback" not in "\n".join(reset_lines)
    assert [m for m in reset_lines if m.startswith("reset agent ")] == [
        "reset agent agent-unreachable (127.0.0.1:9002, internal.verifier.not_reachable) from FAILED (7) to "
        "GET_QUOTE (3): reset 1 of 3 without attestation"]
    seen = log[verifier_ran][1]
    assert seen.startswith("STANDIN verifier started: states=%s " % boot.EXPECTED_AT_VERIFIER_START), seen
    statedir = boot.read(results, "statedir").strip()
    assert statedir == ("root:root 750" if layout == "site" else "keylime:keylime 750")

    # Start order, and the agent reported started only after it listened on its configured port.
    agent_listening = first(log, lambda i, m, e: m == "STANDIN agent listening on port %d" % units.AGENT_PORT, "agent listening")
    waited = first(log, lambda i, m, e: i == "wait-agent-port", "wait-agent-port")
    match = re.fullmatch(r"wait-agent-port: agent listening on 127\.0\.0\.1 port %d \(from /etc/keylime/agent\.conf\) "
                         r"after (\d+\.\d) s" % units.AGENT_PORT, log[waited][1])
    assert match and 1.0 <= float(match.group(1)) <= units.AGENT_DELAY + 2, log[waited][1]
    assert agent_listening < started(log, "keylime_agent.service")
    assert waited < started(log, "keylime_agent.service")
    order = [started(log, u) for u in ("keylime_registrar.service", "keylime_agent.service")]
    assert order == sorted(order)
    if layout == "site":
        assert started(log, "keylime_agent.service") < verifier_starting
        assert seen.endswith("agent_listening=yes")
        assert started(log, "keylime_verifier.service") < started(log, "spire-agent.service")
        assert started(log, "spire-agent.service") < started(log, "openbao.service")
    else:
        assert started(log, "keylime_verifier.service") < started(log, "keylime_registrar.service")

    # Certificate renewal at boot, before the agent; the timer waits for its first elapse.
    agent_starting = first(log, lambda i, m, e: m.startswith("Starting keylime_agent.service"), "Starting agent")
    if layout == "site":
        health = first(log, lambda i, m, e: i == "openbao-health", "openbao-health")
        assert log[health][1].startswith("openbao-health: OpenBao at http://127.0.0.1:8200 not ready after 3.0 s: "
                                         "unreachable")
        assert health < agent_starting         # renewal (failed: OpenBao is after Keylime) before the agent
        assert boot.read(results, "renew-after-boot-rc") == "0\n"
        assert "STANDIN renewal ran with --role agent" in text
        assert "cert-renewal: renewal command succeeded (exit 0)" in text
    else:
        skip = first(log, lambda i, m, e: i == "cert-renewal", "cert-renewal")
        assert log[skip][1] == ("cert-renewal: no certificate renewal configured on this host (set "
                                "CERT_RENEWAL_COMMAND in /etc/keylime-reboot-fix/cert-renewal.conf); skipping")
        assert skip < agent_starting
        renewal = boot.show(results, "keylime-cert-renewal.service")
        assert (renewal["ActiveState"], renewal["Result"]) == ("inactive", "exec-condition")  # skipped, not failed
        assert "keylime-cert-renewal.service: Skipped due to 'exec-condition'." in text
        assert "openbao-health" not in {i for i, _, _ in log}
    if layout == "site":
        # After an admin's change and daemon-reload, the generator re-decides: the edge is gone.
        after = boot.read(results, "after-reload")
        assert after.startswith("After=") and "keylime_agent.service" not in after.split("=", 1)[1].split()
        reloaded = boot.read(results, "generator-after-reload.log")
        assert ("keylime_verifier.service -> spire-agent.service -> keylime_agent.service" in reloaded
                and reloaded.endswith("=> no edge emitted\n")), reloaded
    timer = boot.show(results, "keylime-cert-renewal.timer")
    assert (timer["ActiveState"], timer["SubState"]) == ("active", "waiting")
    userspace = boot.usec(boot.read(results, "manager").split("=", 1)[1])
    delay = boot.usec(timer["NextElapseUSecMonotonic"]) - userspace
    assert 600e6 <= delay <= 780e6, delay      # OnBootSec=10min plus up to RandomizedDelaySec=3min
