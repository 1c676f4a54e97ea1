"""A simultaneous reboot with a real power cut, in a QEMU (TCG) VM running real systemd.

The VM is a debootstrapped Debian bookworm with this package installed, the write-up's layout of
hand-written units in /etc/systemd/system (registrar; agent after the registrar; verifier after
both, no Before=) whose services are stand-ins (tests/data/powercut/usr/local/lib/krf-standin/
standin.py says why and what they keep of Keylime), and a verifier database with the real
Keylime 7.14.3 schema.

Boot 1: the other hosts are down, so the verifier fails their agents (state 7,
internal.verifier.not_reachable) while it keeps attesting the local agent and writing to the
database; the power is cut (SIGKILL to QEMU) while it writes. Boot 2: the other hosts are up;
the package's ExecStartPre resets the agents failed by unreachability before the verifier
starts; the VM powers itself off once they are attested again. The test then reads the journal
and the database from the disk image and checks them; it prints the boot timings and a report.
"""

import hashlib
import json
import os
import pathlib
import shutil
import sqlite3
import subprocess
import tempfile
import time

import pytest

from tests.support import real, rootfs, units, verifier_db, vm
from keylime_reboot_fix import constants as K
from keylime_reboot_fix import reset_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST_FILES = os.path.join(REPO, "tests", "data", "powercut")
GUEST_PACKAGES = ("systemd", "python3", "sqlite3")
ENABLED_UNITS = ("keylime_registrar.service", "keylime_agent.service", "keylime_verifier.service",
                 "krf-other-hosts.service", "krf-test-phase.service")
DB_IN_GUEST = "/var/lib/keylime/cv_data.sqlite"
AGENT_DELAY = 3  # seconds the local agent takes before it listens, like a slow host
OTHER_PORTS = (9101, 9102)
# Agents of other hosts, FAILED by unreachability as after the write-up's outage: reset at boot 1,
# failed again by the verifier (their hosts are still down), reset again at boot 2.
FAILED_BY_UNREACHABILITY = ("remote-a", "remote-b")
LAST_ATTESTATION = 1700000000
CUT_DELAY = 0.3  # seconds after KRF-CUT-READY: the verifier is writing every 0.2 s

# systemd's catalog message ids for a unit's start job: "Starting X..." and "Started X."
MSG_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"
MSG_STARTED = "39f53479d3a045ac8e11786248231fbf"
MSG_STARTUP_FINISHED = "b07a249cd024414a82dd00cd181378ff"


def initial_rows():
    """The verifier database before boot 1."""
    agent = verifier_db.agent
    return [
        agent("local-agent", K.GET_QUOTE, port=9002, attestation_count=120,
              last_successful_attestation=1700000000),
        agent("remote-a", K.FAILED, K.EVENT_NOT_REACHABLE, port=OTHER_PORTS[0], attestation_count=50,
              last_successful_attestation=LAST_ATTESTATION),
        agent("remote-b", K.FAILED, K.EVENT_NOT_REACHABLE_V, port=OTHER_PORTS[1], attestation_count=50,
              last_successful_attestation=LAST_ATTESTATION),
        # FAILED otherwise, and rows in 9 and 10: never reset.
        agent("failed-no-quote", K.FAILED, "internal.verifier.no_quote", port=9201),
        agent("failed-exception", K.FAILED, "internal.verifier.exception", port=9202),
        agent("invalid-quote", K.INVALID_QUOTE, "pcr_validation.invalid_pcr_7", port=9203),
        agent("tenant-failed", K.TENANT_FAILED, port=9204),
        # Unreachable, but another verifier's agent: not ours to reset.
        agent("other-verifier", K.FAILED, K.EVENT_NOT_REACHABLE, verifier="verifier-2", port=9205),
    ]


NEVER_RESET = {
    "failed-no-quote": (K.FAILED, "internal.verifier.no_quote"),
    "failed-exception": (K.FAILED, "internal.verifier.exception"),
    "invalid-quote": (K.INVALID_QUOTE, "pcr_validation.invalid_pcr_7"),
    "tenant-failed": (K.TENANT_FAILED, None),
    "other-verifier": (K.FAILED, K.EVENT_NOT_REACHABLE),
}


def copy_tree(source, dest):
    subprocess.run(["cp", "-a", source + "/.", dest], check=True)


# Everything the .deb is built from: the image is rebuilt when any of it changes.
PACKAGE_SOURCES = ("keylime_reboot_fix", "bin", "libexec", "systemd", "debian", "man",
                   "setup.cfg", "setup.py", "MANIFEST.in")


def package_digest():
    """A digest of the package's source files (what install_package() puts into the image)."""
    digest = hashlib.sha256()
    for name in PACKAGE_SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            digest.update(("%s %s\0" % (name, vm.tree_digest(path, ignore=("__pycache__",)))).encode())
        elif os.path.isfile(path):
            with open(path, "rb") as handle:
                digest.update(("%s %s\0" % (name, hashlib.sha256(handle.read()).hexdigest())).encode())
    deb = package_deb()
    if deb:
        with open(deb, "rb") as handle:
            digest.update(b"deb " + hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def package_deb():
    """The .deb given in $KEYLIME_REBOOT_FIX_DEB (as for the nspawn tests), if any."""
    return os.environ.get("KEYLIME_REBOOT_FIX_DEB") or None


def package_source():
    """Where the package installed in the VM comes from: the given .deb, `make deb`, or the tree."""
    if package_deb():
        return package_deb()
    if os.path.isdir(os.path.join(REPO, "debian")):
        return "make deb"
    return "the tree"


def build_deb():
    """`make deb` (a clean copy of the tree built into dist/, then lintian); the .deb's path."""
    proc = subprocess.run(["make", "-C", REPO, "deb"], capture_output=True, text=True)
    assert proc.returncode == 0, "make deb failed:\n%s%s" % (proc.stdout[-3000:], proc.stderr[-3000:])
    debs = [line.strip() for line in proc.stdout.splitlines() if line.strip().endswith(".deb")]
    assert debs, "make deb named no .deb:\n" + proc.stdout[-2000:]
    return os.path.join(REPO, debs[-1])


def install_package(root):
    """Install keylime-reboot-fix into the guest root (a full Debian root), as an admin would.

    `dpkg -i` (in a chroot) of the .deb: the one given, else the one `make deb` builds (only
    when the image is not cached); before debian/ was on main, the in-tree files copied where
    the .deb puts them (tests/support/units.py).
    """
    source = package_source()
    if source == "the tree":
        units.install_package(root)
    else:
        units.install_package(root, build_deb() if source == "make deb" else source)


def stage_guest(stage):
    """Everything the test adds to the pristine rootfs, in a small tree (hashed for the cache key)."""
    copy_tree(GUEST_FILES, stage)
    wants = os.path.join(stage, "etc/systemd/system/multi-user.target.wants")
    os.makedirs(wants, exist_ok=True)
    for unit in ENABLED_UNITS:
        os.symlink("/etc/systemd/system/" + unit, os.path.join(wants, unit))
    # A quiet, fast guest: no getty on the serial console, no periodic jobs, persistent journal.
    for unit in ("serial-getty@ttyS0.service", "getty@tty1.service", "apt-daily.timer",
                 "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer", "dpkg-db-backup.timer",
                 "e2scrub_reap.service"):
        os.symlink("/dev/null", os.path.join(stage, "etc/systemd/system", unit))
    os.makedirs(os.path.join(stage, "var/log/journal"), exist_ok=True)
    with open(os.path.join(stage, "etc/hostname"), "w", encoding="utf-8") as handle:
        handle.write("krf-powercut\n")
    keylime_dir = os.path.join(stage, "var/lib/keylime")
    os.makedirs(keylime_dir, mode=0o700, exist_ok=True)
    verifier_db.create(os.path.join(keylime_dir, "cv_data.sqlite"), initial_rows())


def build_image(base, stage, image):
    """mkfs.ext4 -d of the pristine rootfs with the staged files on top."""
    work = image + ".tree"
    shutil.rmtree(work, ignore_errors=True)
    try:
        rootfs.clone(base, work)
        copy_tree(stage, work)
        install_package(work)
        vm.make_image(work, image, size_mb=1024)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def journal_entries(directory):
    """All journal entries under directory, as dicts, in file order per boot."""
    out = subprocess.run(["journalctl", "--directory", directory, "-o", "json", "--no-pager", "--all"],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def message(entry):
    text = entry.get("MESSAGE", "")
    return bytes(text).decode("utf-8", "replace") if isinstance(text, list) else text


def boots(entries):
    """Entries grouped by boot id, the boots in the order they began."""
    grouped = {}
    for entry in entries:
        grouped.setdefault(entry["_BOOT_ID"], []).append(entry)
    ordered = sorted(grouped.values(), key=lambda es: min(int(e["__REALTIME_TIMESTAMP"]) for e in es))
    return [sorted(es, key=lambda e: int(e["__MONOTONIC_TIMESTAMP"])) for es in ordered]


def mono(entry):
    """Seconds since the boot began."""
    return int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6


def unit_event(entries, message_id, unit):
    """The first systemd job message of message_id for unit in this boot."""
    for entry in entries:
        if entry.get("MESSAGE_ID") == message_id and entry.get("UNIT") == unit and entry.get("_PID") == "1":
            return entry
    raise AssertionError("no %s message for %s" % (message_id, unit))


def logged(entries, ident, text=""):
    return [e for e in entries if e.get("SYSLOG_IDENTIFIER") == ident and text in message(e)]


def read_db(image, dest):
    """The verifier database (and a hot rollback journal, if any) out of an image: states and integrity."""
    path = vm.extract(image, DB_IN_GUEST, os.path.join(dest, "cv_data.sqlite"))
    hot = vm.extract(image, DB_IN_GUEST + "-journal", os.path.join(dest, "cv_data.sqlite-journal"))
    conn = sqlite3.connect(path)  # opening rolls a hot journal back, as the next verifier start would
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        rows = {r[0]: r for r in conn.execute(
            "SELECT agent_id, operational_state, last_event_id, attestation_count, verifier_id "
            "FROM verifiermain")}
    finally:
        conn.close()
    return integrity, rows, hot is not None


def read_reset_state(image, dest):
    """The package's reset-state file out of an image, as parsed JSON lines (None if absent)."""
    path = vm.extract(image, K.STATE_FILE, os.path.join(dest, "reset-state.jsonl"))
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def work_directory():
    """A fresh directory for this run's disk, consoles, journal and databases, kept for reading
    a failure (pytest's own temporary directories are rotated by every other pytest run);
    only the two newest runs are kept."""
    parent = os.path.join(tempfile.gettempdir(), "krf-powercut")
    os.makedirs(parent, exist_ok=True)
    old = sorted((os.path.join(parent, d) for d in os.listdir(parent)), key=os.path.getmtime)
    for path in old[:-1]:
        shutil.rmtree(path, ignore_errors=True)
    return tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=parent)


@pytest.fixture(scope="module")
def guest():
    missing = vm.missing_tools()
    real.require(not missing, "QEMU power-cut test needs host tools: %s (tests/deps/apt/powercut.txt)"
                 % " ".join(missing))
    timings = {}
    started = time.monotonic()
    base = rootfs.bookworm(GUEST_PACKAGES)
    timings["rootfs (debootstrap or cache)"] = time.monotonic() - started
    started = time.monotonic()
    kernel = vm.kernel()
    timings["kernel (download or cache)"] = time.monotonic() - started
    work = pathlib.Path(work_directory())
    stage = str(work / "stage")
    os.makedirs(stage)
    stage_guest(stage)
    key = vm.tree_digest(stage) + package_digest() + os.path.basename(base)
    started = time.monotonic()
    image, cached = vm.cached_image("powercut", hashlib.sha256(key.encode()).hexdigest(),
                                    lambda path: build_image(base, stage, path))
    timings["disk image (%s, package from %s)" % ("cached" if cached else "built", package_source())] = \
        time.monotonic() - started
    disk = vm.copy_image(image, str(work / "disk.raw"))
    return {"kernel": kernel, "disk": disk, "work": work, "timings": timings}


@pytest.fixture(scope="module")
def scenario(guest):
    """Boot 1, power cut while the verifier writes, snapshot after the cut, boot 2, read back."""
    work, disk, timings = guest["work"], guest["disk"], guest["timings"]
    result = {"timings": timings, "work": str(work)}

    boot1 = vm.VM(guest["kernel"], disk, str(work / "console-boot1.log"),
                  "krf.phase=1 krf.agent_delay=%d krf.expect_failed=%s"
                  % (AGENT_DELAY, ",".join(FAILED_BY_UNREACHABILITY))).start()
    try:
        ready = boot1.wait_for("KRF-CUT-READY", 240)
        time.sleep(CUT_DELAY)
    finally:
        cut = boot1.power_cut()
    timings["boot 1: power on to KRF-CUT-READY"] = ready
    timings["boot 1: power on to power cut (SIGKILL)"] = cut
    console1 = boot1.console()
    marker = console1.split("KRF-CUT-READY ")[1].split()
    result["cut_attestations"] = int(marker[0].split("=")[1])
    result["cut_states"] = marker[1]  # agent:state:attestations as the guest saw them at the marker

    # What the disk holds right after the cut: replay the ext4 journal on a copy, as boot 2 will.
    snap = vm.copy_image(disk, str(work / "after-cut.raw"))
    result["fsck_after_cut"] = vm.fsck(snap)
    result["after_cut"] = read_db(snap, str(work / "after-cut"))
    result["state_after_cut"] = read_reset_state(snap, str(work / "after-cut"))
    os.unlink(snap)

    boot2 = vm.VM(guest["kernel"], disk, str(work / "console-boot2.log"),
                  "krf.phase=2 krf.agent_delay=%d krf.other_hosts=up krf.other_ports=%s krf.expect_attested=%s"
                  % (AGENT_DELAY, ",".join(map(str, OTHER_PORTS)),
                     ",".join(FAILED_BY_UNREACHABILITY + ("local-agent",)))).start()
    try:
        timings["boot 2: power on to poweroff"] = boot2.wait_poweroff(300)
    finally:
        boot2.kill()
    result["console2"] = boot2.console()
    result["fsck_after_boot2"] = vm.fsck(disk)
    result["final"] = read_db(disk, str(work / "final"))
    result["state_final"] = read_reset_state(disk, str(work / "final"))
    journal = vm.extract(disk, "/var/log/journal", str(work / "journal"))
    result["boots"] = boots(journal_entries(journal))
    os.unlink(disk)  # 1 GiB sparse; what was read back stays in the work directory
    report(result)
    return result


def report(result):
    """The short report `make e2e` prints: timings, unit order at boot 2, what was reset, the rows."""
    lines = ["", "=== power-cut test report ===", "consoles, journal and databases: %s" % result["work"],
             "host timings:"]
    lines += ["  %-44s %6.1f s" % (name, secs) for name, secs in result["timings"].items()]
    lines.append("boot 2, seconds since power on (guest monotonic clock):")
    entries = result["boots"][-1] if result["boots"] else []
    events = []
    for entry in entries:
        unit, mid, ident = entry.get("UNIT", ""), entry.get("MESSAGE_ID"), entry.get("SYSLOG_IDENTIFIER")
        if unit.startswith(("keylime", "krf-")) and mid in (MSG_STARTING, MSG_STARTED) and entry.get("_PID") == "1":
            events.append((mono(entry), "%s %s" % ("starting" if mid == MSG_STARTING else "started ", unit)))
        elif mid == MSG_STARTUP_FINISHED:
            events.append((mono(entry), "startup finished: " + message(entry)))
        elif ident == K.SYSLOG_IDENT:
            events.append((mono(entry), "reset: " + message(entry)))
        elif ident == "keylime_verifier" and ("first quote ok" in message(entry) or "starting" in message(entry)):
            events.append((mono(entry), "verifier: " + message(entry)))
        elif ident == "keylime_agent" and "listening on" in message(entry):
            events.append((mono(entry), "agent: " + message(entry)))
    lines += ["  %7.2f  %s" % event for event in sorted(events)]
    lines.append("verifier database (state, last_event_id, attestation_count):")
    initial = {r["agent_id"]: (r["operational_state"], r["last_event_id"], r["attestation_count"])
               for r in initial_rows()}
    lines.append("  %-17s %-44s %-44s %s" % ("agent", "before boot 1", "after the cut", "after boot 2"))
    for name in sorted(result["final"][1]):
        cut = result["after_cut"][1].get(name, ())[1:4]
        lines.append("  %-17s %-44s %-44s %s" % (name, initial.get(name), cut, result["final"][1][name][1:4]))
    lines.append("integrity_check after the cut: %s, after boot 2: %s; hot rollback journal after the cut: %s"
                 % (result["after_cut"][0][0][0], result["final"][0][0][0], result["after_cut"][2]))
    lines.append("e2fsck after the cut: exit %d (1 = journal replayed/repaired); after boot 2: exit %d"
                 % (result["fsck_after_cut"], result["fsck_after_boot2"]))
    if len(result["boots"]) >= 2:
        first = result["boots"][0]
        lines.append("boot 1's journal as the cut left it: %d entries, the last at %.1f s after power on "
                     "(the cut came at %.1f s; journald had not synced the rest)"
                     % (len(first), mono(first[-1]), result["timings"]["boot 1: power on to power cut (SIGKILL)"]))
    lines.append("reset-state file after the cut: %s" % (result["state_after_cut"] or [None])[1:])
    lines.append("reset-state file after boot 2:  %s" % (result["state_final"] or [None])[1:])
    print("\n".join(lines))


def test_database_survived_the_cut(scenario):
    integrity, rows, hot = scenario["after_cut"]
    assert integrity == [("ok",)]
    print("rows the guest saw at KRF-CUT-READY:", scenario["cut_states"])
    # Reset at boot 1, then failed again by the verifier before the cut (their hosts were down).
    for agent_id in FAILED_BY_UNREACHABILITY:
        assert rows[agent_id][1:4] == (K.FAILED, K.EVENT_NOT_REACHABLE, 50)
    # The verifier was attesting the local agent at the cut: what it had committed when the
    # guest said KRF-CUT-READY is on disk (SQLite's fsync reached the virtual disk).
    assert rows["local-agent"][1] == K.GET_QUOTE
    assert rows["local-agent"][3] >= scenario["cut_attestations"] > 120
    for agent_id, (state, event) in NEVER_RESET.items():
        assert rows[agent_id][1:3] == (state, event)


def test_reset_state_survived_the_cut(scenario):
    """Boot 1's reset counted one reset per agent; the cut did not lose it (fsync + rename)."""
    state = scenario["state_after_cut"]
    assert state is not None, "no reset-state file on the disk after the cut"
    assert state[0] == reset_state.HEADER
    assert sorted(state[1:]) == [[agent_id, 1, 50, LAST_ATTESTATION] for agent_id in FAILED_BY_UNREACHABILITY]
    final = scenario["state_final"]
    assert final[0] == reset_state.HEADER
    assert sorted(final[1:]) == [[agent_id, 2, 50, LAST_ATTESTATION] for agent_id in FAILED_BY_UNREACHABILITY]


def test_boot2_completed(scenario):
    assert "KRF-PHASE2-DONE" in scenario["console2"]
    assert scenario["fsck_after_boot2"] == 0  # clean poweroff: nothing to repair
    assert len(scenario["boots"]) >= 2


def test_reset_ran_before_the_verifier_and_logged_each_agent(scenario):
    entries = scenario["boots"][-1]
    starting = mono(unit_event(entries, MSG_STARTING, "keylime_verifier.service"))
    started = mono(unit_event(entries, MSG_STARTED, "keylime_verifier.service"))
    first_verifier_line = mono(logged(entries, "keylime_verifier")[0])
    reset_lines = logged(entries, K.SYSLOG_IDENT)
    assert reset_lines, "keylime-reset-failed logged nothing in boot 2"
    for line in reset_lines:
        assert starting <= mono(line) <= started < first_verifier_line
    resets = sorted(message(e) for e in logged(entries, K.SYSLOG_IDENT, "reset agent "))
    assert resets == [
        "reset agent %s (127.0.0.1:%d, %s) from FAILED (7) to GET_QUOTE (3): reset 2 of 3 without attestation"
        % (agent_id, port, K.EVENT_NOT_REACHABLE) for agent_id, port in zip(FAILED_BY_UNREACHABILITY, OTHER_PORTS)]
    summary = [message(e) for e in logged(entries, K.SYSLOG_IDENT, "reset 2 agent(s)")]
    assert summary == [
        "reset 2 agent(s) of verifier 'default' from FAILED (7) to GET_QUOTE (3) in %s; left alone: "
        "2 other cause, 1 other verifier, 0 no verifier, 0 cap reached" % DB_IN_GUEST]


def test_unit_order(scenario):
    entries = scenario["boots"][-1]
    registrar_started = mono(unit_event(entries, MSG_STARTED, "keylime_registrar.service"))
    agent_starting = mono(unit_event(entries, MSG_STARTING, "keylime_agent.service"))
    agent_started = mono(unit_event(entries, MSG_STARTED, "keylime_agent.service"))
    verifier_starting = mono(unit_event(entries, MSG_STARTING, "keylime_verifier.service"))
    agent_listening = mono(logged(entries, "keylime_agent", "listening on")[0])
    cycles = [message(e) for e in entries if "ordering cycle" in message(e)]
    assert cycles == [], "systemd broke an ordering cycle at boot: %s" % cycles
    assert registrar_started <= agent_starting
    assert agent_listening <= agent_started <= verifier_starting
    assert agent_started - agent_starting >= AGENT_DELAY


def test_database_after_boot2(scenario):
    integrity, rows, hot = scenario["final"]
    # A leftover rollback journal is possible here too (poweroff's SIGTERM can end the verifier
    # inside a transaction); opening the database rolls it back, and integrity is what counts.
    assert integrity == [("ok",)]
    for agent_id in FAILED_BY_UNREACHABILITY:
        assert rows[agent_id][1] == K.GET_QUOTE  # back to 3 ...
        assert rows[agent_id][3] > 50  # ... and attested again
    assert rows["local-agent"][1] == K.GET_QUOTE
    for agent_id, (state, event) in NEVER_RESET.items():
        assert rows[agent_id][1:3] == (state, event)
