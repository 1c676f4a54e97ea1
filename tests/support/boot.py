"""Boots a Debian bookworm root with real systemd as PID 1 in systemd-nspawn, for the unit tests.

prepare() clones the cached debootstrapped rootfs (tests/support/rootfs.py), installs the package
(units.install_package), one Keylime unit layout, the stand-in services, a verifier database and
the result collector; boot() runs the container until the collector powers it off and returns
what it wrote to /results. The container has its own network namespace (only 127.0.0.1), so its
ports never meet the host's or another test's.
"""

import json
import os
import shutil
import subprocess
import time

from . import rootfs, units, verifier_db

PACKAGES = ("python3", "sqlite3", "systemd")   # the same set as the other real-systemd tests
DB = "var/lib/keylime/cv_data.sqlite"
# The verifier database every boot starts with, and what the reset must make of it.
ROWS = (
    verifier_db.agent("agent-unreachable", 7, "internal.verifier.not_reachable"),
    verifier_db.agent("agent-bad-quote", 9, "pcr_validation.invalid_pcr_16"),
    verifier_db.agent("agent-no-quote", 7, "internal.verifier.no_quote"),
)
EXPECTED_AT_VERIFIER_START = "agent-bad-quote:9,agent-no-quote:7,agent-unreachable:3"
SITE_RENEWAL = ("CERT_RENEWAL_COMMAND=%s/renew --role agent\nBAO_ADDR=http://127.0.0.1:%d\n"
                "OPENBAO_HEALTH_TIMEOUT=3\n" % (units.STANDIN, units.OPENBAO_PORT))
SITE_HEALTH_TIMEOUT = 3


def available():
    """(True, "") when nspawn and debootstrap are installed and we are root, else (False, why)."""
    missing = [tool for tool in ("systemd-nspawn", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return False, "not installed: " + ", ".join(missing)
    if os.geteuid() != 0:
        return False, "systemd-nspawn needs root"
    return True, ""


def _chroot(root, *argv):
    subprocess.run(["chroot", root] + list(argv), check=True, stdout=subprocess.DEVNULL,
                   env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})


def prepare(layout, dest):
    """A bootable root at dest with the package, the layout and its stand-ins installed."""
    writable_copy(rootfs.bookworm(PACKAGES), dest)
    _chroot(dest, "useradd", "--system", "--user-group", "--home-dir", "/var/lib/keylime",
            "--shell", "/usr/sbin/nologin", "keylime")
    units.install_package(dest, os.environ.get("KEYLIME_REBOOT_FIX_DEB") or None)
    names = units.install_layout(dest, layout)
    units.install_standins(dest)
    with open(os.path.join(units.FIXTURES, "collect.service"), encoding="utf-8") as handle:
        units.write(dest, units.ETC_UNITS + "/krf-collect.service", handle.read())
    units.enable(dest, units.ETC_UNITS, "multi-user.target.wants", "/" + units.ETC_UNITS + "/krf-collect.service")
    units.write(dest, "etc/krf-test/units", "\n".join(units.unit_names(layout)) + "\n")
    units.write(dest, "etc/keylime/verifier.conf", "[verifier]\nuuid = default\ndatabase_url = sqlite\n")
    units.write(dest, "etc/keylime/agent.conf", '[agent]\nip = "0.0.0.0"\nport = %d\n' % units.AGENT_PORT)
    if layout == "site":
        units.write(dest, "etc/keylime-reboot-fix/cert-renewal.conf", SITE_RENEWAL)
        units.write(dest, "etc/krf-test/renew-after-boot", "")
        units.write(dest, "etc/krf-test/reload-check", "")
    db = os.path.join(dest, DB)
    os.makedirs(os.path.dirname(db), exist_ok=True)
    verifier_db.create(db, ROWS)
    # Packaged layouts run the verifier as keylime, the hand-written site as root.
    owner = _passwd(dest, "keylime") if layout != "site" else (0, 0)
    for path in (os.path.dirname(db), db):
        os.chown(path, *owner)
    os.chmod(os.path.dirname(db), 0o700)
    os.chmod(db, 0o600)
    return names


def writable_copy(base, dest):
    """dest as a writable view of the cached rootfs: an overlay mount (instant, the cache stays
    untouched in its lower layer), else a full copy (rootfs.clone, about 15 s)."""
    upper, work = dest + ".upper", dest + ".work"
    for path in (dest, upper, work):
        os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                              "lowerdir=%s,upperdir=%s,workdir=%s" % (base, upper, work), dest],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    if not mounted:
        os.rmdir(dest)
        rootfs.clone(base, dest)
    return dest


def release(dest):
    """Undo writable_copy: unmount the overlay (if it is one) and delete everything."""
    if os.path.ismount(dest):
        subprocess.run(["umount", dest], check=False)
    for path in (dest, dest + ".upper", dest + ".work"):
        shutil.rmtree(path, ignore_errors=True)


def _passwd(root, user):
    with open(os.path.join(root, "etc/passwd"), encoding="utf-8") as handle:
        for line in handle:
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[2]), int(fields[3])
    raise KeyError(user)


def boot(root, results, timeout=90):
    """Boot root until its collector powers it off; (seconds, console text). Kills it on timeout."""
    os.makedirs(results, exist_ok=True)
    cmd = ["systemd-nspawn", "-q", "-b", "-D", root, "--register=no", "--keep-unit",
           "--private-network", "--console=read-only", "--bind=%s:/results" % results]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
    return time.monotonic() - start, out.decode("utf-8", "replace")


def journal(results):
    """The container's journal of this boot, as a list of dicts in journal order."""
    entries = []
    with open(os.path.join(results, "journal.json"), encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                entries.append(json.loads(line))
    return entries


def show(results, unit):
    """`systemctl show` of a unit in the container, as {property: value}."""
    props = {}
    with open(os.path.join(results, "show-" + unit), encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.rstrip("\n").partition("=")
            props[key] = value
    return props


def read(results, name):
    with open(os.path.join(results, name), encoding="utf-8") as handle:
        return handle.read()


def usec(text):
    """Microseconds from a systemd time span as `systemctl show` prints it ("11min 3.2s", "123456")."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    factors = {"d": 86400e6, "h": 3600e6, "min": 60e6, "s": 1e6, "ms": 1e3, "us": 1}
    total = 0.0
    for part in text.split():
        for suffix in ("min", "ms", "us", "d", "h", "s"):
            if part.endswith(suffix) and part[: -len(suffix)].replace(".", "", 1).isdigit():
                total += float(part[: -len(suffix)]) * factors[suffix]
                break
        else:
            raise ValueError("not a time span: %r" % text)
    return int(total)
