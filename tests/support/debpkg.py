"""Building keylime-reboot-fix's .deb from a clean copy of the tree, and running dpkg, apt and
autopkgtest in a chroot of the cached bookworm rootfs (tests/support/rootfs.py).

Everything Debian runs under DEBIAN_ENV: Debian's interpreter and tools, not pyenv's.
"""

import os
import re
import shutil
import subprocess

from tests.support import rootfs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEBIAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
CHROOT_ENV = dict(DEBIAN_ENV, DEBIAN_FRONTEND="noninteractive")
# Packages of the chroot: the package's run-time dependency, sqlite3 for the test databases
# and systemd for systemctl/systemd-analyze (installed, never running: no PID 1 in a chroot).
ROOTFS_PACKAGES = ("python3", "sqlite3", "systemd")
PACKAGE = "keylime-reboot-fix"


def run(cmd, **kwargs):
    """subprocess.run under Debian's environment; text output captured; never raises."""
    kwargs.setdefault("env", DEBIAN_ENV)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def tree_files(root=ROOT):
    """The files of the tree as a fresh clone has them (tracked and new, not ignored)."""
    out = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], stdout=subprocess.PIPE, check=True).stdout
    return sorted(f for f in out.decode().split("\0") if f and os.path.lexists(os.path.join(root, f)))


def copy_tree(dest, root=ROOT):
    """A clean copy of the source tree at dest (no build products, no .venv, no .git)."""
    for rel in tree_files(root):
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, rel), target, follow_symlinks=False)
    return dest


def changelog_version(src):
    with open(os.path.join(src, "debian", "changelog"), encoding="utf-8") as handle:
        return re.match(r"\S+ \(([^)]+)\)", handle.readline()).group(1)


def set_changelog_version(src, version):
    """Rewrite the version of the newest changelog entry (to build a 'previous' release)."""
    path = os.path.join(src, "debian", "changelog")
    with open(path, encoding="utf-8") as handle:
        first, rest = handle.read().split("\n", 1)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(re.sub(r"\([^)]+\)", "(%s)" % version, first, count=1) + "\n" + rest)


class Build:
    """One dpkg-buildpackage -us -uc -b of a copy of the tree under workdir."""

    def __init__(self, workdir, version=None, root=ROOT, prepare=None):
        self.workdir = workdir
        self.src = copy_tree(os.path.join(workdir, PACKAGE), root)
        if prepare:
            prepare(self.src)
        if version:
            set_changelog_version(self.src, version)
        self.version = changelog_version(self.src)
        self.result = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=self.src)
        self.deb = os.path.join(workdir, "%s_%s_all.deb" % (PACKAGE, self.version))
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        self.changes = os.path.join(workdir, "%s_%s_%s.changes" % (PACKAGE, self.version, arch))

    def check(self):
        assert self.result.returncode == 0, self.result.stdout[-3000:] + self.result.stderr[-3000:]
        return self


def deb_paths(deb):
    """Entries of a .deb as dpkg-deb -c names them, without the leading '.', sorted."""
    out = run(["dpkg-deb", "-c", deb])
    assert out.returncode == 0, out.stderr
    paths = []
    for line in out.stdout.splitlines():
        name = line.split(None, 5)[5].split(" -> ")[0]
        paths.append(name[1:] if name.startswith("./") else name)
    return sorted(p for p in paths if p != "/")


def pristine_rootfs():
    return rootfs.bookworm(ROOTFS_PACKAGES)


class Chroot:
    """A private, writable view of the cached bookworm rootfs in which commands run with chroot(8).

    An overlay mount over the pristine tree (instant, and the cache stays untouched); a full
    copy where overlayfs is unavailable.  Not booted: systemd is installed but not running (no
    /run/systemd/system), as in a build chroot or a container, which is what the maintainer
    scripts must cope with.  Call remove() when done.
    """

    def __init__(self, workdir):
        pristine = pristine_rootfs()
        self.workdir = workdir
        self.path = os.path.join(workdir, "root")
        self.mounted = False
        for sub in ("upper", "work", "root"):
            os.makedirs(os.path.join(workdir, sub), exist_ok=True)
        options = "lowerdir=%s,upperdir=%s,workdir=%s" % (
            pristine, os.path.join(workdir, "upper"), os.path.join(workdir, "work"))
        if run(["mount", "-t", "overlay", "overlay", "-o", options, self.path]).returncode == 0:
            self.mounted = True
        else:
            os.rmdir(self.path)
            rootfs.clone(pristine, self.path)
        assert not os.path.exists(self.host("/run/systemd/system"))

    def host(self, path):
        return os.path.join(self.path, path.lstrip("/"))

    def run(self, cmd, cwd="/", **kwargs):
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        return run(["chroot", self.path, "sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd] + cmd,
                   env=CHROOT_ENV, **kwargs)

    def put(self, src, dest):
        shutil.copy2(src, self.host(dest))
        return dest

    def write(self, path, text, mode=0o644):
        target = self.host(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(target, mode)
        return path

    def snapshot(self, ignore=("/tmp", "/var/lib/dpkg", "/var/log", "/var/cache/debconf",
                               "/var/cache/ldconfig", "/var/cache/apt", "/var/lib/apt")):
        """{path: (mode, size, link target)} of the whole tree but the given volatile places."""
        found = {}
        for top, dirs, files in os.walk(self.path):
            rel_top = "/" + os.path.relpath(top, self.path).lstrip(".")
            rel_top = "/" if rel_top == "/" else rel_top.rstrip("/")
            dirs[:] = [d for d in dirs if os.path.join(rel_top, d) not in ignore]
            for name in dirs + files:
                full = os.path.join(top, name)
                st = os.lstat(full)
                link = os.readlink(full) if os.path.islink(full) else None
                size = st.st_size if os.path.isfile(full) and not link else None
                found[os.path.join(rel_top, name)] = (st.st_mode, size, link)
        return found

    def remove(self):
        if self.mounted:
            if run(["umount", self.path]).returncode != 0:
                run(["umount", "--lazy", self.path])
            self.mounted = False
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- builds shared by the Debian test modules of one pytest run ---------------------------
_BUILD_ROOT = None
_BUILDS = {}
PREVIOUS_VERSION_SUFFIX = "~prev1"


def _build_root():
    global _BUILD_ROOT
    if _BUILD_ROOT is None:
        import atexit
        import tempfile
        _BUILD_ROOT = tempfile.mkdtemp(prefix="krf-debian-")
        atexit.register(shutil.rmtree, _BUILD_ROOT, True)
    return _BUILD_ROOT


def build(kind="current"):
    """The .deb of this tree ('current'), or of the same tree with a lower changelog version
    ('previous', for upgrade tests), built once per pytest run with dpkg-buildpackage."""
    if kind not in _BUILDS:
        workdir = os.path.join(_build_root(), kind)
        os.makedirs(workdir)
        version = None
        if kind == "previous":
            version = changelog_version(ROOT) + PREVIOUS_VERSION_SUFFIX
        _BUILDS[kind] = Build(workdir, version=version)
    return _BUILDS[kind].check()


def stdeb_build():
    """stdeb's .deb of this tree (python3 setup.py --command-packages=stdeb.command bdist_deb)."""
    if "stdeb" not in _BUILDS:
        src = copy_tree(os.path.join(_build_root(), "stdeb"))
        result = run(["/usr/bin/python3", "setup.py", "--command-packages=stdeb.command", "bdist_deb"],
                     cwd=src)
        _BUILDS["stdeb"] = (src, result)
    src, result = _BUILDS["stdeb"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return os.path.join(src, "deb_dist")


class Booted:
    """The chroot's tree booted with real systemd as PID 1 (systemd-nspawn -b, own network
    namespace); commands run inside it through nsenter, as on a running host."""

    def __init__(self, box, timeout=60):
        self.box = box
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-q", "-b", "-D", box.path, "--register=no", "--keep-unit",
             "--private-network", "--console=read-only"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, env=DEBIAN_ENV)
        import time
        deadline = time.monotonic() + timeout
        self.pid = None
        state = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            # The container's PID 1 is nspawn's child once it has become systemd.
            children = run(["ps", "-o", "pid=,comm=", "--ppid", str(self.proc.pid)]).stdout.split()
            if children[1:2] == ["systemd"]:
                self.pid = int(children[0])
                state = self.run(["timeout", str(timeout), "systemctl", "is-system-running", "--wait"])
                if state.stdout.strip() in ("running", "degraded"):
                    return
            time.sleep(0.3)
        self.stop()
        raise AssertionError("the container did not come up: %s" % (state and state.stdout + state.stderr))

    def run(self, cmd):
        return run(["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--"] + cmd,
                   env=CHROOT_ENV)

    def show(self, unit, *props):
        out = self.run(["systemctl", "show", unit] + ["-p" + p for p in props])
        return dict(line.split("=", 1) for line in out.stdout.splitlines())

    def stop(self):
        import signal
        if self.proc.poll() is None:
            self.run(["systemctl", "poweroff", "--no-block"])
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.communicate()
