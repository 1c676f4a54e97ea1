"""The maintainer scripts on a running host: the chroot tree booted with real systemd as PID 1
(systemd-nspawn), the package installed, upgraded, removed and purged with dpkg inside it.

Proves what a chroot cannot: the guarded daemon-reload really runs (systemd sees the drop-in and
runs the generator without a manual reload), installing starts nothing (no renewal during an
apt run), an upgrade neither stops nor restarts a running timer, remove stops it.
"""

import os
import shutil
import tempfile

import pytest

from tests.support import debpkg
from tests.support.real import require
from tests.test_debian_chroot import require_chroot

TIMER = "keylime-cert-renewal.timer"
SERVICE = "keylime-cert-renewal.service"
# A stand-in for Keylime's verifier unit, as on the write-up's site (hand-written in /etc).
VERIFIER_UNIT = "[Service]\nExecStart=/bin/sleep infinity\n"


@pytest.fixture
def booted():
    require_chroot()
    require(shutil.which("systemd-nspawn", path=debpkg.DEBIAN_ENV["PATH"]) and
            shutil.which("nsenter", path=debpkg.DEBIAN_ENV["PATH"]),
            "systemd-nspawn (systemd-container) and nsenter needed")
    box = debpkg.Chroot(tempfile.mkdtemp(prefix="krf-boot-"))
    try:
        box.write("/etc/systemd/system/keylime_verifier.service", VERIFIER_UNIT)
        for kind in ("previous", "current"):
            box.put(debpkg.build(kind).deb, "/root/%s.deb" % kind)
        host = debpkg.Booted(box)
        try:
            yield host
        finally:
            host.stop()
    finally:
        box.remove()


def dpkg(host, *args):
    out = host.run(["dpkg"] + list(args))
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_maintainer_scripts_on_a_running_systemd(booted):
    unitdir = debpkg.run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"]).stdout.strip()
    dropin = unitdir + "/keylime_verifier.service.d/50-keylime-reboot-fix.conf"
    assert booted.show("keylime_verifier.service", "DropInPaths") == {"DropInPaths": ""}

    dpkg(booted, "-i", "/root/previous.deb")
    # Reloaded by postinst: the drop-in is in effect and the generator ran.
    paths = booted.show("keylime_verifier.service", "DropInPaths")["DropInPaths"].split()
    assert paths in ([dropin], ["/usr" + dropin])  # /lib is /usr/lib on a merged-/usr system
    assert booted.run(["test", "-s", "/run/keylime-reboot-fix/generator.log"]).returncode == 0
    # Enabled, and nothing started: no renewal in the middle of an apt run.
    for unit in (TIMER, SERVICE):
        assert booted.show(unit, "LoadState", "UnitFileState", "ActiveState", "InactiveExitTimestampMonotonic") == {
            "LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "inactive",
            "InactiveExitTimestampMonotonic": "0"}, unit

    # The operator starts the timer; an upgrade leaves it running, not restarted.
    assert booted.run(["systemctl", "start", TIMER]).returncode == 0
    started = booted.show(TIMER, "ActiveState", "ActiveEnterTimestampMonotonic")
    assert started["ActiveState"] == "active"
    dpkg(booted, "-i", "/root/current.deb")
    assert booted.show(TIMER, "ActiveState", "ActiveEnterTimestampMonotonic") == started

    # Remove stops the timer and reloads: the units and the drop-in are gone from systemd.
    dpkg(booted, "-r", "keylime-reboot-fix")
    for unit in (TIMER, SERVICE):
        assert booted.show(unit, "LoadState", "ActiveState") == {
            "LoadState": "not-found", "ActiveState": "inactive"}, unit
    assert booted.show("keylime_verifier.service", "DropInPaths") == {"DropInPaths": ""}

    dpkg(booted, "-P", "keylime-reboot-fix")
    assert booted.run(["test", "-e", "/run/keylime-reboot-fix"]).returncode == 1
    assert booted.run(["test", "-e", "/etc/keylime-reboot-fix"]).returncode == 1
    listed = booted.run(["systemctl", "list-unit-files", "--no-legend", "keylime*"]).stdout.split()
    assert listed[0] == "keylime_verifier.service" and len(listed) == 3, listed
