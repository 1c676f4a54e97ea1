"""The .deb built from a clean copy of this tree with Debian's dpkg-buildpackage: its exact
contents, control fields, maintainer scripts, lintian, the man page, and the stdeb route.

Real tools only (dpkg-buildpackage, lintian, stdeb, man); they come from
tests/deps/apt/debian.txt.  A missing tool skips locally and fails in CI.
"""

import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

from keylime_reboot_fix import __version__
from keylime_reboot_fix.errors import EXIT_CODES
from tests.support import debpkg
from tests.support.real import require

DEB_TOOLS = ("dpkg-buildpackage", "dh", "dh_python3", "lintian", "pkg-config", "dpkg-deb")
PKG = debpkg.PACKAGE
VERSION = debpkg.changelog_version(debpkg.ROOT)

# Everything the package ships except the Python modules (one per keylime_reboot_fix/*.py):
# a file that appears or disappears here is a packaging change and must be made on purpose.
# {unitdir} and {generatordir} are the target release's systemd directories (pkg-config).
EXPECTED_FILES = [
    "/etc/keylime-reboot-fix/cert-renewal.conf",
    "{generatordir}/keylime-reboot-fix-generator",
    "{unitdir}/keylime-cert-renewal.service",
    "{unitdir}/keylime-cert-renewal.timer",
    "{unitdir}/keylime_agent.service.d/50-keylime-reboot-fix.conf",
    "{unitdir}/keylime_verifier.service.d/50-keylime-reboot-fix.conf",
    "/usr/lib/python3/dist-packages/keylime_reboot_fix-{version}.egg-info/PKG-INFO",
    "/usr/lib/python3/dist-packages/keylime_reboot_fix-{version}.egg-info/dependency_links.txt",
    "/usr/lib/python3/dist-packages/keylime_reboot_fix-{version}.egg-info/entry_points.txt",
    "/usr/lib/python3/dist-packages/keylime_reboot_fix-{version}.egg-info/top_level.txt",
    "/usr/libexec/keylime-reboot-fix/cert-renewal",
    "/usr/libexec/keylime-reboot-fix/openbao-health",
    "/usr/libexec/keylime-reboot-fix/wait-agent-port",
    "/usr/sbin/keylime-reset-failed",
    "/usr/share/doc/keylime-reboot-fix/README.md.gz",
    "/usr/share/doc/keylime-reboot-fix/changelog.gz",
    "/usr/share/doc/keylime-reboot-fix/copyright",
    "/usr/share/lintian/overrides/keylime-reboot-fix",
    "/usr/share/man/man8/keylime-reset-failed.8.gz",
]
EXPECTED_EXECUTABLES = [
    "{generatordir}/keylime-reboot-fix-generator",
    "/usr/libexec/keylime-reboot-fix/cert-renewal",
    "/usr/libexec/keylime-reboot-fix/openbao-health",
    "/usr/libexec/keylime-reboot-fix/wait-agent-port",
    "/usr/sbin/keylime-reset-failed",
]
UNIT_SUFFIXES = (".service", ".timer", ".path", ".socket", ".target")


def require_debian_tools():
    path = debpkg.DEBIAN_ENV["PATH"]
    missing = [tool for tool in DEB_TOOLS if not shutil.which(tool, path=path)]
    require(not missing, "Debian build tools missing: %s (tests/deps/apt/debian.txt)" % " ".join(missing))


@pytest.fixture(scope="module")
def built():
    require_debian_tools()
    return debpkg.build("current")


def pkg_config(variable):
    out = debpkg.run(["pkg-config", "--variable=" + variable, "systemd"])
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    return out.stdout.strip()


def systemd_part():
    """(files, executables) that debian/rules' convention makes of the tree's systemd/ and
    libexec/ directories (the table in docs/systemd.md)."""
    unitdir = pkg_config("systemdsystemunitdir")
    generatordir = pkg_config("systemdsystemgeneratordir")
    files, executables = [], []
    for rel in debpkg.tree_files():
        parts = rel.split("/")
        if parts[0] == "libexec" and len(parts) == 2:
            if rel.endswith("-generator"):
                dest = generatordir + "/" + parts[1]
            else:
                dest = "/usr/libexec/keylime-reboot-fix/" + parts[1]
            executables.append(dest)
        elif parts[0] != "systemd":
            continue
        elif len(parts) == 2 and rel.endswith(UNIT_SUFFIXES):
            dest = unitdir + "/" + parts[1]
        elif len(parts) == 3 and parts[1].endswith(".d") and rel.endswith(".conf"):
            dest = unitdir + "/" + parts[1] + "/" + parts[2]
        elif len(parts) == 2 and rel.endswith(".conf"):
            dest = "/etc/keylime-reboot-fix/" + parts[1]
        else:
            raise AssertionError("debian/rules has no install rule for " + rel)
        files.append(dest)
    return files, executables


def with_parents(files):
    entries = set()
    for path in files:
        entries.add(path)
        parent = os.path.dirname(path)
        while parent != "/":
            entries.add(parent + "/")
            parent = os.path.dirname(parent)
    return sorted(entries)


def expand(paths):
    dirs = {"unitdir": pkg_config("systemdsystemunitdir"),
            "generatordir": pkg_config("systemdsystemgeneratordir"), "version": __version__}
    return sorted(p.format(**dirs) for p in paths)


def expected_deb_paths():
    modules = sorted(
        "/usr/lib/python3/dist-packages/keylime_reboot_fix/" + name
        for name in os.listdir(os.path.join(debpkg.ROOT, "keylime_reboot_fix")) if name.endswith(".py"))
    return with_parents(expand(EXPECTED_FILES) + modules)


def deb_entries(deb):
    """[(permissions, owner, path)] as dpkg-deb -c lists them."""
    out = debpkg.run(["dpkg-deb", "-c", deb])
    assert out.returncode == 0, out.stderr
    entries = []
    for line in out.stdout.splitlines():
        perms, owner, _size, _date, _time, name = line.split(None, 5)
        entries.append((perms, owner, name.split(" -> ")[0][1:]))
    return [e for e in entries if e[2] != "/"]


def test_build_dependencies_are_exactly_satisfied_by_the_deps_list():
    """debian/control's Build-Depends are installed by tests/deps/apt/debian.txt: apt-get
    build-dep ./ has nothing left to install on this machine."""
    require_debian_tools()
    out = debpkg.run(["apt-get", "build-dep", "--simulate", "./"], cwd=debpkg.ROOT)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^0 upgraded, 0 newly installed, 0 to remove", out.stdout, re.M), out.stdout


def test_changelog_version_is_the_python_version():
    assert VERSION == __version__ == "0.1.0"
    with open(os.path.join(debpkg.ROOT, "debian", "source", "format"), encoding="utf-8") as handle:
        assert handle.read() == "3.0 (native)\n"


def test_build_from_clean_tree_gives_the_deb_and_changes(built):
    assert os.path.basename(built.deb) == "keylime-reboot-fix_%s_all.deb" % VERSION
    assert os.path.isfile(built.deb) and os.path.isfile(built.changes)
    # Debian's interpreter built it, not pyenv's.
    assert re.search(r"^I: pybuild \S+ /usr/bin/python3 setup.py build", built.result.stderr, re.M), \
        built.result.stderr


def test_deb_contains_exactly_the_expected_files(built):
    assert debpkg.deb_paths(built.deb) == expected_deb_paths()


def test_systemd_and_libexec_files_follow_the_rules_convention(built):
    """What debian/rules' convention makes of systemd/ and libexec/ is what the .deb has: a
    new file there is installed without a change to debian/rules (and then needs adding above)."""
    files, executables = systemd_part()
    assert files and set(files) <= set(expand(EXPECTED_FILES))
    assert set(executables) <= set(expand(EXPECTED_EXECUTABLES))
    assert set(files) <= set(debpkg.deb_paths(built.deb))


def test_deb_file_modes_and_owners(built):
    executables = set(expand(EXPECTED_EXECUTABLES))
    for perms, owner, path in deb_entries(built.deb):
        assert owner == "root/root", path
        if path.endswith("/"):
            assert perms == "drwxr-xr-x", path
        elif path in executables:
            assert perms == "-rwxr-xr-x", path
        else:
            assert perms == "-rw-r--r--", path


def test_command_is_in_sbin_only_and_runs_debians_python(built):
    paths = debpkg.deb_paths(built.deb)
    assert "/usr/sbin/keylime-reset-failed" in paths
    assert not [p for p in paths if p.startswith("/usr/bin/")]
    out = subprocess.run(["dpkg-deb", "--fsys-tarfile", built.deb], stdout=subprocess.PIPE, check=True)
    import io
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        script = tar.extractfile("./usr/sbin/keylime-reset-failed").read().decode()
    assert script.splitlines()[0] == "#!/usr/bin/python3"


def test_conffiles_are_the_renewal_settings_only(built, tmp_path):
    """Files under /etc are conffiles (kept on remove, removed on purge), and there are no others."""
    etc = [p for p in debpkg.deb_paths(built.deb) if p.startswith("/etc/") and not p.endswith("/")]
    debpkg.run(["dpkg-deb", "-e", built.deb, str(tmp_path / "DEBIAN")])
    conffiles = tmp_path / "DEBIAN" / "conffiles"
    listed = conffiles.read_text().split() if conffiles.exists() else []
    assert listed == etc
    assert etc in ([], ["/etc/keylime-reboot-fix/cert-renewal.conf"])


def test_control_fields(built):
    out = debpkg.run(["dpkg-deb", "-f", built.deb, "Package", "Version", "Architecture", "Depends",
                      "Pre-Depends", "Recommends", "Suggests", "Enhances", "Section", "Priority"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "Package: keylime-reboot-fix",
        "Version: " + VERSION,
        "Architecture: all",
        "Depends: python3:any",  # ${python3:Depends}: standard library only
        "Suggests: keylime, python3-psycopg2, python3-pymysql, python3-sqlalchemy, sqlite3",
        "Enhances: keylime",
        "Section: admin",
        "Priority: optional",
    ]


def control_scripts(deb, dest):
    assert debpkg.run(["dpkg-deb", "-e", deb, dest]).returncode == 0
    return {name: open(os.path.join(dest, name), encoding="utf-8").read()
            for name in os.listdir(dest) if name in ("preinst", "postinst", "prerm", "postrm")}


def test_maintainer_scripts_start_nothing_and_guard_systemctl(built, tmp_path):
    """Installing must not start a renewal: no start/restart of any unit.  Every systemctl
    call sits under the /run/systemd/system guard, so chroots and containers are fine."""
    scripts = control_scripts(built.deb, str(tmp_path / "DEBIAN"))
    assert sorted(scripts) == ["postinst", "postrm", "prerm"]
    for name, text in scripts.items():
        assert not re.search(r"deb-systemd-invoke\s+(start|restart|try-restart)", text), name
        assert "#DEBHELPER#" not in text, name
        guarded = False
        for line in text.splitlines():
            if line.lstrip().startswith("if ") and "/run/systemd/system" in line:
                guarded = True
            elif line.strip() == "fi":
                guarded = False
            if re.match(r"\s*(systemctl|deb-systemd-invoke)\s", line):
                assert guarded, "%s: unguarded: %s" % (name, line)
    assert "rm -rf /var/lib/keylime-reboot-fix /var/lib/private/keylime-reboot-fix" in scripts["postrm"]
    code = "\n".join(line for text in scripts.values() for line in text.splitlines()
                     if not line.lstrip().startswith("#"))
    assert "/var/lib/keylime/" not in code and "/etc/keylime" not in code


def test_lintian_no_errors_no_warnings(built):
    out = debpkg.run(["lintian", "--fail-on", "error,warning", "--info", "--pedantic",
                      built.deb, built.changes])
    tags = [line for line in out.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert tags == [] and out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["keylime-reboot-fix.lintian-overrides", "lintian-overrides.bookworm"])
def test_every_lintian_override_has_a_comment(name):
    with open(os.path.join(debpkg.ROOT, "debian", name), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    overrides = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
    assert overrides
    for i in overrides:
        assert i > 0 and lines[i - 1].startswith("# "), lines[i]


def test_installed_overrides_are_the_release_s_own(built):
    """bookworm (/lib/systemd/system) gets its false-positive override; later releases, whose
    lintian has no such tag, do not."""
    out = subprocess.run(["dpkg-deb", "--fsys-tarfile", built.deb], stdout=subprocess.PIPE, check=True)
    import io
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        installed = tar.extractfile("./usr/share/lintian/overrides/keylime-reboot-fix").read().decode()
    parts = ["keylime-reboot-fix.lintian-overrides"]
    if pkg_config("systemdsystemunitdir") == "/lib/systemd/system":
        parts.append("lintian-overrides.bookworm")
    expected = ""
    for name in parts:
        with open(os.path.join(debpkg.ROOT, "debian", name), encoding="utf-8") as handle:
            expected += handle.read()
    assert installed == expected


def test_man_page_renders_without_warnings_and_documents_every_option_and_exit_code():
    page = os.path.join(debpkg.ROOT, "man", "keylime-reset-failed.8")
    require(shutil.which("man", path=debpkg.DEBIAN_ENV["PATH"]), "man-db not installed")
    out = debpkg.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", page],
                     env=dict(debpkg.DEBIAN_ENV, MANWIDTH="80"))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    with open(page, encoding="utf-8") as handle:
        source = handle.read()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", '"EXIT STATUS"', "ENVIRONMENT",
                    "FILES", "EXAMPLES", '"SEE ALSO"'):
        assert re.search(r"^\.SH %s$" % section, source, re.M), section
    help_text = subprocess.run([sys.executable, "-m", "keylime_reboot_fix", "--help"], cwd=debpkg.ROOT,
                               stdout=subprocess.PIPE, text=True, check=True).stdout
    options = sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", help_text)))
    assert options == ["--any-cause", "--busy-timeout", "--config", "--db", "--dry-run", "--force",
                       "--help", "--json", "--max-resets", "--state-file", "--version"]
    roff_options = set(o.replace("\\-", "-") for o in re.findall(r"\\-\\-[a-z\\-]+[a-z]", source))
    assert set(options) <= roff_options
    status = source.split('.SH "EXIT STATUS"')[1].split(".SH ")[0]
    assert re.findall(r"^\.B (\d+)$", status, re.M) == [str(code) for code, _ in EXIT_CODES]


def test_stdeb_build_gives_a_version_below_the_real_package():
    require_debian_tools()
    require(os.path.isdir("/usr/lib/python3/dist-packages/stdeb"), "python3-stdeb not installed")
    deb_dist = debpkg.stdeb_build()
    debs = sorted(f for f in os.listdir(deb_dist) if f.endswith(".deb"))
    assert debs == ["keylime-reboot-fix_%s-0~stdeb1_all.deb" % __version__]
    deb = os.path.join(deb_dist, debs[0])
    fields = debpkg.run(["dpkg-deb", "-f", deb, "Package", "Version"]).stdout.splitlines()
    assert fields == ["Package: keylime-reboot-fix", "Version: %s-0~stdeb1" % __version__]
    assert debpkg.run(["dpkg", "--compare-versions", "%s-0~stdeb1" % __version__, "lt", VERSION]).returncode == 0
    assert debpkg.run(["dpkg", "--compare-versions", "%s-0~stdeb1" % __version__, "ge", VERSION]).returncode == 1


def test_sdist_leaves_debian_packaging_out():
    require(os.path.isdir("/usr/lib/python3/dist-packages/stdeb"), "python3-stdeb not installed")
    deb_dist = debpkg.stdeb_build()
    orig = os.path.join(deb_dist, "keylime-reboot-fix_%s.orig.tar.gz" % __version__)
    with tarfile.open(orig) as tar:
        names = sorted(n.split("/", 1)[1] for n in tar.getnames() if "/" in n)
    top = sorted(set(n.split("/")[0] for n in names))
    assert top == ["MANIFEST.in", "PKG-INFO", "bin", "keylime_reboot_fix", "keylime_reboot_fix.egg-info",
                   "man", "setup.cfg", "setup.py"] or top == sorted(
        ["MANIFEST.in", "PKG-INFO", "README.md", "bin", "keylime_reboot_fix",
         "keylime_reboot_fix.egg-info", "man", "setup.cfg", "setup.py"])
    assert "man/keylime-reset-failed.8" in names and "bin/keylime-reset-failed" in names
