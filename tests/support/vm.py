"""QEMU (TCG) virtual machines with a real disk, for tests that need a real power cut.

Killing systemd-nspawn is a crash of processes, but the host keeps the page cache; only a VM
loses what its kernel had not yet written to its (virtual) disk. So the power-cut test boots a
debootstrapped Debian bookworm (real systemd as PID 1) under QEMU with TCG and cuts the power
with SIGKILL to QEMU: the guest's page cache and in-flight writes are lost, the ext4 journal is
replayed at the next boot, exactly as after a power loss.

- The kernel is Debian's cloud kernel (linux-image-cloud-amd64): it has NVMe and ext4 built in,
  so it boots from an NVMe disk with no initramfs at all. Only its vmlinuz is taken from the
  package (apt-get download, the machine's own apt sources), cached under rootfs.CACHE_DIR.
- The disk is a raw ext4 image made from a directory tree with `mkfs.ext4 -d` (no loop mount,
  which containers often lack); files are read back from it with debugfs, after e2fsck has
  replayed the journal on a copy when the image was not shut down cleanly.
- The guest talks to the test only through its serial console (a file), where units print
  markers; there is no network device.
"""

import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time

from tests.support import rootfs

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
QEMU = "qemu-system-x86_64"
# Everything the VM tests need on the host; tests call real.require() with this.
HOST_TOOLS = (QEMU, "mkfs.ext4", "debugfs", "e2fsck", "debootstrap", "apt-get", "dpkg-deb", "journalctl")


def missing_tools():
    """Names of the host tools from HOST_TOOLS that are not on PATH (sbin included)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    return [tool for tool in HOST_TOOLS if shutil.which(tool, path=path) is None]


def _debian_env():
    # Debian's own tools under Debian's interpreter and a plain environment (pyenv is first on PATH).
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C"}


def _kernel_package():
    """The versioned kernel package the meta package points at (e.g. linux-image-6.1.0-57-cloud-amd64)."""
    for attempt in range(2):
        out = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests",
                              KERNEL_META_PACKAGE], env=_debian_env(), capture_output=True, text=True)
        found = re.findall(r"Depends:\s*(linux-image-\S+)", out.stdout)
        if found:
            return found[0]
        if attempt == 0:  # a fresh machine may not have read its package lists yet
            subprocess.run(["apt-get", "update", "-qq"], env=_debian_env(), check=True)
    raise RuntimeError("apt knows no %s on this machine" % KERNEL_META_PACKAGE)


def kernel():
    """Path of the cached vmlinuz of Debian's cloud kernel; downloaded and extracted once."""
    package = _kernel_package()
    target = os.path.join(rootfs.CACHE_DIR, "kernel-%s.vmlinuz" % package)
    if os.path.exists(target):
        return target
    os.makedirs(rootfs.CACHE_DIR, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=rootfs.CACHE_DIR) as work:
        os.chmod(work, 0o755)  # apt-get download drops privileges to _apt when it can
        subprocess.run(["apt-get", "download", "-qq", package], cwd=work, env=_debian_env(),
                       check=True, stderr=subprocess.DEVNULL)
        deb = glob.glob(os.path.join(work, "*.deb"))[0]
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", work, "--wildcards", "./boot/vmlinuz-*"],
                       stdin=tar.stdout, check=True)
        tar.stdout.close()
        tar.wait()
        vmlinuz = glob.glob(os.path.join(work, "boot", "vmlinuz-*"))[0]
        os.rename(vmlinuz, target + ".partial")
    os.rename(target + ".partial", target)
    return target


def tree_digest(tree, ignore=()):
    """A digest of a directory tree's names, modes, link targets and file contents."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if d not in ignore)
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest.update(("%s %o\0" % (os.path.relpath(path, tree), st.st_mode)).encode())
            if os.path.islink(path):
                digest.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def make_image(tree, image, size_mb=1024):
    """A raw ext4 disk image holding tree (sparse file; mkfs.ext4 -d, no mount needed)."""
    if os.path.exists(image):
        os.unlink(image)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-E", "root_owner=0:0",
                    "-d", tree, image, "%dM" % size_mb], env=_debian_env(), check=True,
                   stdout=subprocess.DEVNULL)
    return image


def cached_image(name, key, build, keep=2):
    """Path of a cached disk image for key; build(path) makes it when missing.

    Images are kept per name under CACHE_DIR/images, keyed by content, and only the newest
    `keep` of a name are kept, so a changed input costs one rebuild and no unbounded cache.
    """
    folder = os.path.join(rootfs.CACHE_DIR, "images")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "%s-%s.raw" % (name, key[:16]))
    if os.path.exists(path):
        os.utime(path)
        return path, True
    build(path + ".partial")
    os.rename(path + ".partial", path)
    others = sorted(glob.glob(os.path.join(folder, name + "-*.raw")), key=os.path.getmtime)
    for old in others[:-keep]:
        os.unlink(old)
    return path, False


def copy_image(source, dest):
    """A private, sparse copy of a disk image."""
    subprocess.run(["cp", "--sparse=always", source, dest], check=True)
    return dest


def fsck(image):
    """Replay the ext4 journal and repair, as the kernel and fsck do at the next boot.

    Returns e2fsck's exit code (0 clean, 1 errors corrected); >= 4 raises.
    """
    proc = subprocess.run(["e2fsck", "-f", "-y", image], env=_debian_env(), capture_output=True, text=True)
    if proc.returncode >= 4:
        raise RuntimeError("e2fsck %s failed (%d): %s" % (image, proc.returncode, proc.stdout + proc.stderr))
    return proc.returncode


def extract(image, source, dest):
    """Copy a file or directory tree out of an ext4 image with debugfs (dump or rdump)."""
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    probe = subprocess.run(["debugfs", "-R", "stat " + source, image], env=_debian_env(),
                           capture_output=True, text=True)
    if "Type: directory" in probe.stdout:
        os.makedirs(dest, exist_ok=True)
        cmd = "rdump %s %s" % (source, dest)
        result = os.path.join(dest, os.path.basename(source.rstrip("/")))
    elif "Type: regular" in probe.stdout:
        cmd = "dump -p %s %s" % (source, dest)
        result = dest
    else:
        return None
    subprocess.run(["debugfs", "-R", cmd, image], env=_debian_env(), check=True, capture_output=True)
    return result


class VM:
    """One QEMU TCG guest booting `kernel` with root on the NVMe disk `image`.

    The serial console goes to console_log; wait_for() watches it for a marker line.
    """

    def __init__(self, kernel_path, image, console_log, cmdline="", memory_mb=512, cpus=2):
        self.kernel_path = kernel_path
        self.image = image
        self.console_log = console_log
        self.cmdline = cmdline
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.proc = None
        self.started = None

    def command(self):
        append = ("root=/dev/nvme0n1 rw rootfstype=ext4 console=ttyS0,115200 panic=-1 "
                  "init=/lib/systemd/systemd " + self.cmdline).strip()
        return [QEMU, "-accel", "tcg", "-cpu", "max", "-smp", str(self.cpus), "-m", str(self.memory_mb),
                "-nodefaults", "-display", "none", "-no-reboot", "-nic", "none",
                "-serial", "file:" + self.console_log,
                "-kernel", self.kernel_path, "-append", append,
                "-drive", "file=%s,if=none,id=root,format=raw,cache=writeback" % self.image,
                "-device", "nvme,serial=krf-root,drive=root"]

    def start(self):
        open(self.console_log, "w").close()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return self

    def console(self):
        with open(self.console_log, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def wait_for(self, marker, timeout):
        """Seconds from start until marker appears on the console; raises on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.console():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise RuntimeError("VM exited (%s) before %r; console tail:\n%s"
                                   % (self.proc.returncode, marker, self.console()[-3000:]))
            time.sleep(0.05)
        raise TimeoutError("no %r on the console within %ss; console tail:\n%s"
                           % (marker, timeout, self.console()[-3000:]))

    def power_cut(self):
        """SIGKILL to QEMU: the guest loses power; returns seconds since start."""
        self.proc.kill()
        self.proc.wait()
        return time.monotonic() - self.started

    def wait_poweroff(self, timeout):
        """Seconds from start until the guest powered itself off (QEMU exits); raises on timeout."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.power_cut()
            raise TimeoutError("VM did not power off within %ss; console tail:\n%s"
                               % (timeout, self.console()[-3000:]))
        output = self.proc.stdout.read().decode("utf-8", "replace")
        if self.proc.returncode != 0:
            raise RuntimeError("QEMU failed (%d): %s" % (self.proc.returncode, output))
        return time.monotonic() - self.started

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
