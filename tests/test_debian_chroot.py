"""The .deb in a clean Debian bookworm chroot: install, upgrade from the previous build,
remove and purge; apt install of the file; the installed command on a real-schema database;
upgrade from stdeb's package; autopkgtest against the same kind of chroot.

The chroot is a private copy of the cached debootstrap rootfs (tests/support/rootfs.py) with
systemd installed but not running, as in a build chroot or a container: the maintainer
scripts must succeed there.  Fake Keylime files are planted to prove nothing of Keylime's is
touched.
"""

import hashlib
import os
import re
import shutil
import tempfile

import pytest

from tests.support import debpkg, verifier_db
from tests.support.real import require
from tests.test_debian_package import require_debian_tools

PKG = debpkg.PACKAGE
VERSION = debpkg.changelog_version(debpkg.ROOT)
PREVIOUS = VERSION + debpkg.PREVIOUS_VERSION_SUFFIX
TIMER = "keylime-cert-renewal.timer"
SHADOW_LINE = ("keylime-reboot-fix: /etc/systemd/system/keylime-cert-renewal.service shadows the "
               "packaged keylime-cert-renewal.service; compare them with 'systemd-delta "
               "--type=overridden', then move yours away and run 'systemctl daemon-reload' to "
               "use the packaged one.")
# What systemctl prints when it is called where systemd is not PID 1: must never appear.
NO_SYSTEMD_ERRORS = ("System has not been booted with systemd", "Failed to connect to bus",
                     "Running in chroot, ignoring")

# Keylime's own files on a verifier host; the package must leave them exactly as they are.
KEYLIME_CONF = "/etc/keylime/verifier.conf"
KEYLIME_DB = "/var/lib/keylime/cv_data.sqlite"
KEYLIME_UNIT = "/etc/systemd/system/keylime_verifier.service"
# The write-up's hand-edited renewal unit (it shadows the packaged one).
HAND_RENEWAL_UNIT = """[Unit]
Description=Keylime agent certificate renewal (hand-written)
Wants=openbao.service
After=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/bin/renew-keylime-cert.sh
RemainAfterExit=no
"""


def require_chroot():
    require(os.geteuid() == 0, "chroot and dpkg in a chroot need root")
    require(shutil.which("debootstrap", path=debpkg.DEBIAN_ENV["PATH"]), "debootstrap not installed")
    require_debian_tools()


@pytest.fixture
def chroot():
    require_chroot()
    box = debpkg.Chroot(tempfile.mkdtemp(prefix="krf-chroot-"))
    try:
        yield box
    finally:
        box.remove()


def plant_keylime(box):
    """Fake Keylime files of a verifier host; returns their fingerprints."""
    box.write(KEYLIME_CONF, "[verifier]\nuuid = default\ndatabase_url = sqlite\n", 0o640)
    os.makedirs(box.host(os.path.dirname(KEYLIME_DB)), exist_ok=True)
    verifier_db.create(box.host(KEYLIME_DB), [
        verifier_db.agent("agent-a", 7, "internal.verifier.not_reachable"),
        verifier_db.agent("agent-b", 3)])
    box.write(KEYLIME_UNIT, "[Service]\nExecStart=/usr/local/bin/keylime_verifier\n")
    return fingerprints(box)


def fingerprints(box):
    found = {}
    for path in (KEYLIME_CONF, KEYLIME_DB, KEYLIME_UNIT, os.path.dirname(KEYLIME_CONF),
                 os.path.dirname(KEYLIME_DB)):
        st = os.lstat(box.host(path))
        digest = None
        if os.path.isfile(box.host(path)):
            with open(box.host(path), "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
        found[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, digest)
    return found


def dpkg(box, *args):
    out = box.run(["dpkg"] + list(args))
    assert out.returncode == 0, out.stdout + out.stderr
    for text in NO_SYSTEMD_ERRORS:
        assert text not in out.stdout + out.stderr
    return out


def installed_version(box):
    out = box.run(["dpkg-query", "-W", "-f=${Status} ${Version}", PKG])
    return out.stdout if out.returncode == 0 else None


def shipped_files(deb):
    return [p for p in debpkg.deb_paths(deb) if not p.endswith("/")]


def ships_timer(deb):
    return any(p.endswith("/" + TIMER) for p in debpkg.deb_paths(deb))


def test_install_upgrade_remove_purge_leaves_the_system_as_it_was(chroot):
    current, previous = debpkg.build("current"), debpkg.build("previous")
    keylime = plant_keylime(chroot)
    before = chroot.snapshot()
    chroot.put(current.deb, "/tmp/current.deb")
    chroot.put(previous.deb, "/tmp/previous.deb")

    out = dpkg(chroot, "-i", "/tmp/previous.deb")
    assert installed_version(chroot) == "install ok installed " + PREVIOUS
    assert "shadows" not in out.stderr
    out = dpkg(chroot, "-i", "/tmp/current.deb")
    assert "Preparing to unpack /tmp/current.deb ...\nUnpacking keylime-reboot-fix (%s) over (%s) ..." % (
        VERSION, PREVIOUS) in out.stdout
    assert installed_version(chroot) == "install ok installed " + VERSION
    for path in shipped_files(current.deb):
        assert os.path.lexists(chroot.host(path)), path
    assert not os.path.exists(chroot.host("/usr/bin/keylime-reset-failed"))
    if ships_timer(current.deb):
        assert chroot.run(["systemctl", "is-enabled", TIMER]).stdout == "enabled\n"
    # The installed command works with Debian's python3 in the chroot.
    out = chroot.run(["keylime-reset-failed", "--version"])
    assert (out.returncode, out.stdout) == (0, "keylime-reset-failed %s\n" % VERSION)

    # What the command keeps between boots (systemd's StateDirectory= creates the directory).
    chroot.write("/var/lib/keylime-reboot-fix/reset-state.jsonl", '{"agent_id": "agent-a"}\n')

    dpkg(chroot, "-r", PKG)
    assert installed_version(chroot) == "deinstall ok config-files " + VERSION
    for path in shipped_files(current.deb):
        # Conffiles (the renewal settings in /etc) stay until purge, as dpkg does.
        assert os.path.lexists(chroot.host(path)) == path.startswith("/etc/"), path
    assert os.path.exists(chroot.host("/var/lib/keylime-reboot-fix/reset-state.jsonl"))

    dpkg(chroot, "-P", PKG)
    assert installed_version(chroot) is None
    assert not os.path.lexists(chroot.host("/var/lib/keylime-reboot-fix"))
    after = chroot.snapshot()
    assert sorted(set(after) - set(before)) == []
    assert sorted(set(before) - set(after)) == []
    assert {p: after[p] for p in after if after[p] != before[p]} == {}
    assert fingerprints(chroot) == keylime


def test_upgrade_keeps_a_timer_the_admin_disabled(chroot):
    current, previous = debpkg.build("current"), debpkg.build("previous")
    if not ships_timer(current.deb):
        pytest.skip("this tree's systemd/ has no %s yet" % TIMER)
    chroot.put(previous.deb, "/tmp/previous.deb")
    chroot.put(current.deb, "/tmp/current.deb")
    dpkg(chroot, "-i", "/tmp/previous.deb")
    assert chroot.run(["systemctl", "disable", TIMER]).returncode == 0
    dpkg(chroot, "-i", "/tmp/current.deb")
    assert chroot.run(["systemctl", "is-enabled", TIMER]).stdout == "disabled\n"


def test_hand_written_renewal_unit_is_reported_and_never_touched(chroot):
    current = debpkg.build("current")
    chroot.write("/etc/systemd/system/keylime-cert-renewal.service", HAND_RENEWAL_UNIT)
    chroot.put(current.deb, "/tmp/current.deb")
    out = dpkg(chroot, "-i", "/tmp/current.deb")
    assert [line for line in out.stderr.splitlines() if "shadows" in line] == [SHADOW_LINE]
    for action in ("-r", "-P"):
        dpkg(chroot, action, PKG)
        with open(chroot.host("/etc/systemd/system/keylime-cert-renewal.service"), encoding="utf-8") as handle:
            assert handle.read() == HAND_RENEWAL_UNIT


def test_apt_install_of_the_file_and_a_dry_run_on_a_real_schema_database(chroot):
    current = debpkg.build("current")
    name = os.path.basename(current.deb)
    assert name == "keylime-reboot-fix_%s_all.deb" % VERSION
    chroot.put(current.deb, "/tmp/" + name)
    out = chroot.run(["apt", "install", "-y", "./" + name], cwd="/tmp")
    assert out.returncode == 0, out.stdout + out.stderr
    assert installed_version(chroot) == "install ok installed " + VERSION
    assert chroot.run(["sh", "-c", "command -v keylime-reset-failed"]).stdout == "/usr/sbin/keylime-reset-failed\n"

    db = "/tmp/cv_data.sqlite"
    verifier_db.create(chroot.host(db), [
        verifier_db.agent("agent-unreachable", 7, "internal.verifier.not_reachable"),
        verifier_db.agent("agent-invalid", 9, "pcr_validation.failed"),
        verifier_db.agent("agent-no-quote", 7, "internal.verifier.no_quote"),
        verifier_db.agent("agent-healthy", 3)])
    rows = verifier_db.dump(chroot.host(db))
    out = chroot.run(["keylime-reset-failed", "--dry-run", "--db", db])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "# Dry run: agents in state FAILED (7) in %s, this verifier: 'default'" % db
    assert re.match(r"^agent-no-quote .* left alone ", lines[2]), lines
    assert re.match(r"^agent-unreachable .* would reset ", lines[3]), lines
    assert len(lines) == 4, lines
    assert verifier_db.dump(chroot.host(db)) == rows


def test_stdeb_package_is_upgraded_by_the_real_one(chroot):
    require(os.path.isdir("/usr/lib/python3/dist-packages/stdeb"), "python3-stdeb not installed")
    current = debpkg.build("current")
    deb_dist = debpkg.stdeb_build()
    stdeb_deb = [f for f in os.listdir(deb_dist) if f.endswith("_all.deb")][0]
    chroot.put(os.path.join(deb_dist, stdeb_deb), "/tmp/stdeb.deb")
    chroot.put(current.deb, "/tmp/current.deb")
    dpkg(chroot, "-i", "/tmp/stdeb.deb")
    assert os.path.exists(chroot.host("/usr/bin/keylime-reset-failed"))
    out = dpkg(chroot, "-i", "/tmp/current.deb")
    assert "over (%s-0~stdeb1)" % VERSION in out.stdout
    assert installed_version(chroot) == "install ok installed " + VERSION
    assert not os.path.exists(chroot.host("/usr/bin/keylime-reset-failed"))
    assert os.path.exists(chroot.host("/usr/sbin/keylime-reset-failed"))


def test_autopkgtest_in_the_chroot(chroot):
    require(shutil.which("autopkgtest", path=debpkg.DEBIAN_ENV["PATH"]), "autopkgtest not installed")
    current = debpkg.build("current")
    outdir = os.path.join(chroot.workdir, "autopkgtest-out")
    out = debpkg.run(["autopkgtest", "--output-dir", outdir, current.deb, current.src, "--",
                      "chroot", chroot.path])
    with open(os.path.join(outdir, "summary"), encoding="utf-8") as handle:
        summary = [line.split() for line in handle.read().splitlines()]
    units = "PASS" if ships_timer(current.deb) else "SKIP"
    assert [s[:2] for s in summary] == [["reset-database", "PASS"], ["installed-units", units]], (
        out.stdout[-4000:] + out.stderr[-4000:])
    assert out.returncode in ((0,) if units == "PASS" else (0, 2)), out.stderr[-4000:]
