"""Cached debootstrapped Debian bookworm root filesystems for the real-systemd, chroot and VM tests.

Built once per machine and package set under CACHE_DIR (a later run on the same machine reuses
it; a fresh CI machine builds it, about a minute). The mirror is read from this machine's own
apt sources, so no host name is written into the project. Callers must not modify the cached
tree: copy it first with clone().
"""

import fcntl
import hashlib
import os
import re
import shutil
import subprocess

CACHE_DIR = os.environ.get("KRF_TEST_CACHE", "/var/cache/keylime-reboot-fix-tests")
SUITE = "bookworm"


def apt_mirror():
    """The Debian archive URI this machine's apt uses (deb822 or one-line format)."""
    candidates = ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]
    candidates += sorted(
        os.path.join("/etc/apt/sources.list.d", f)
        for f in os.listdir("/etc/apt/sources.list.d") if f.endswith((".sources", ".list")))
    for path in candidates:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            continue
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    raise RuntimeError("no Debian archive found in this machine's apt sources")


def bookworm(packages=(), variant="minbase"):
    """Path of a cached pristine rootfs with the given extra packages; builds it if missing."""
    packages = sorted(set(packages))
    key = hashlib.sha256(("%s %s %s" % (SUITE, variant, " ".join(packages))).encode()).hexdigest()[:12]
    target = os.path.join(CACHE_DIR, "rootfs-%s-%s" % (SUITE, key))
    if os.path.exists(os.path.join(target, ".complete")):
        return target
    os.makedirs(CACHE_DIR, exist_ok=True)
    # One builder per key: a second test run waits for the first instead of deleting its work.
    with open(target + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(os.path.join(target, ".complete")):
            return target
        return _build(target, packages, variant)


def _build(target, packages, variant):
    work = target + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    cmd = ["debootstrap", "--variant=" + variant]
    if packages:
        cmd.append("--include=" + ",".join(packages))
    cmd += [SUITE, work, apt_mirror()]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(work, ".complete"), "w", encoding="utf-8") as handle:
        handle.write(" ".join(cmd) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.rename(work, target)
    return target


def clone(source, dest):
    """A private copy of a cached rootfs (hard links are not used: tests modify files)."""
    subprocess.run(["cp", "-a", "--reflink=auto", source, dest], check=True)
    return dest
