"""Keylime unit layouts (facts §6) and the package's files, installed into a root for real systemd.

Three layouts, written for these tests from the directive lists in keylime-facts.md §6 (not copied
from any package): (a) the write-up's site, hand-written units in /etc/systemd/system, no Before=
on the verifier, SPIRE after the verifier and OpenBao after SPIRE; (b) upstream keylime's verifier
and registrar units plus rust-keylime's agent unit, packaged in /usr/lib/systemd/system; (c)
Debian's python-keylime units (verifier Before= and RequiredBy= the registrar, agent After= the
registrar). The services are small stand-ins (tests/systemd_fixtures/standin) that log what the
tests assert; the verifier stand-in records the database state it finds when it starts.

install_package() is the one place that puts keylime-reboot-fix's files into a root; it copies
the in-tree files where the .deb installs them, or, given a built .deb, installs that with dpkg
(tests/support/boot.py passes $KEYLIME_REBOOT_FIX_DEB when it is set).
"""

import os
import shutil
import subprocess

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(TOP, "tests", "systemd_fixtures")
STANDIN = "/usr/local/libexec/standin"
AGENT_PORT = 9102          # set in agent.conf, so the wait must read the configuration
AGENT_DELAY = 3            # seconds the agent stand-in takes before it listens
OPENBAO_PORT = 8200

ETC_UNITS = "etc/systemd/system"
LIB_UNITS = "usr/lib/systemd/system"
LIBEXEC = "usr/libexec/keylime-reboot-fix"
GENERATOR = "usr/lib/systemd/system-generators/keylime-reboot-fix-generator"

# Where every file of the package goes (the .deb's layout). Source paths are relative to TOP.
PACKAGE_FILES = (
    ("bin/keylime-reset-failed", "usr/sbin/keylime-reset-failed", 0o755),
    ("libexec/wait-agent-port", LIBEXEC + "/wait-agent-port", 0o755),
    ("libexec/openbao-health", LIBEXEC + "/openbao-health", 0o755),
    ("libexec/cert-renewal", LIBEXEC + "/cert-renewal", 0o755),
    ("libexec/keylime-reboot-fix-generator", GENERATOR, 0o755),
    ("systemd/keylime_verifier.service.d/50-keylime-reboot-fix.conf",
     LIB_UNITS + "/keylime_verifier.service.d/50-keylime-reboot-fix.conf", 0o644),
    ("systemd/keylime_agent.service.d/50-keylime-reboot-fix.conf",
     LIB_UNITS + "/keylime_agent.service.d/50-keylime-reboot-fix.conf", 0o644),
    ("systemd/keylime-cert-renewal.service", LIB_UNITS + "/keylime-cert-renewal.service", 0o644),
    ("systemd/keylime-cert-renewal.timer", LIB_UNITS + "/keylime-cert-renewal.timer", 0o644),
    ("systemd/cert-renewal.conf", "etc/keylime-reboot-fix/cert-renewal.conf", 0o644),
)
PYTHON_DIR = "usr/lib/python3/dist-packages/keylime_reboot_fix"
# What `deb-systemd-helper enable` does for the package's [Install] sections.
ENABLE_LINKS = (
    ("multi-user.target.wants", "keylime-cert-renewal.service"),
    ("timers.target.wants", "keylime-cert-renewal.timer"),
)


def write(root, relpath, text, mode=0o644):
    path = os.path.join(root, relpath.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)
    return path


def install_package(root, deb=None):
    """Install keylime-reboot-fix into root: the built .deb when given (root must be a full
    Debian root), else the in-tree files copied where the .deb puts them."""
    if deb:
        shutil.copy(deb, os.path.join(root, "root", "keylime-reboot-fix.deb"))
        subprocess.run(["chroot", root, "dpkg", "-i", "/root/keylime-reboot-fix.deb"], check=True,
                       stdout=subprocess.DEVNULL, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})
        return
    for source, target, mode in PACKAGE_FILES:
        with open(os.path.join(TOP, source), encoding="utf-8") as handle:
            write(root, target, handle.read(), mode)
    package = os.path.join(TOP, "keylime_reboot_fix")
    dest = os.path.join(root, PYTHON_DIR)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(package, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for wants, unit in ENABLE_LINKS:
        enable(root, ETC_UNITS, wants, "/" + LIB_UNITS + "/" + unit)


def enable(root, unit_dir, wants_dir, target):
    directory = os.path.join(root, unit_dir, wants_dir)
    os.makedirs(directory, exist_ok=True)
    link = os.path.join(directory, os.path.basename(target))
    if not os.path.lexists(link):
        os.symlink(target, link)


def _unit(description, unit=(), service=(), install=()):
    text = "[Unit]\nDescription=%s\n%s\n[Service]\n%s\n" % (
        description, "".join(u + "\n" for u in unit), "".join(s + "\n" for s in service))
    if install:
        text += "\n[Install]\n" + "".join(i + "\n" for i in install)
    return text


def _standin(role):
    return "ExecStart=%s/%s" % (STANDIN, role)


# Each layout: {unit file name: (directory, text)}, plus the units to enable (target -> [units]).
LAYOUTS = {
    "site": {
        "dir": ETC_UNITS,
        "units": {
            "keylime_verifier.service": _unit(
                "Keylime Verifier (hand-written, as on the write-up's site)",
                ["After=network-online.target keylime_registrar.service", "Wants=network-online.target"],
                ["Type=simple", _standin("verifier"), "Restart=on-failure", "RestartSec=10s"],
                ["WantedBy=multi-user.target"]),
            "keylime_registrar.service": _unit(
                "Keylime Registrar (hand-written)",
                ["After=network-online.target", "Wants=network-online.target"],
                ["Type=simple", _standin("registrar"), "Restart=on-failure"],
                ["WantedBy=multi-user.target"]),
            "keylime_agent.service": _unit(
                "Keylime Agent (hand-written)",
                ["After=network-online.target", "Wants=network-online.target"],
                ["Type=simple", _standin("agent"), "Restart=on-failure", "RestartSec=120s"],
                ["WantedBy=multi-user.target"]),
            "spire-agent.service": _unit(
                "SPIRE agent (attests through Keylime)",
                ["After=keylime_verifier.service", "Wants=keylime_verifier.service"],
                ["Type=simple", _standin("spire-agent")],
                ["WantedBy=multi-user.target"]),
            "openbao.service": _unit(
                "OpenBao (gets its SVID from SPIRE)",
                ["After=spire-agent.service", "Requires=spire-agent.service"],
                ["Type=simple", _standin("openbao")],
                ["WantedBy=multi-user.target"]),
        },
        "enable": {"multi-user.target.wants": ["keylime_verifier.service", "keylime_registrar.service",
                                               "keylime_agent.service", "spire-agent.service",
                                               "openbao.service"]},
    },
    "upstream": {
        "dir": LIB_UNITS,
        "units": {
            "keylime_verifier.service": _unit(
                "The Keylime verifier (upstream-style)",
                ["After=network.target", "Before=keylime_registrar.service"],
                ["Group=keylime", "User=keylime", _standin("verifier"), "TimeoutSec=60s",
                 "Restart=on-failure", "RestartSec=120s"],
                ["WantedBy=default.target"]),
            "keylime_registrar.service": _unit(
                "The Keylime registrar service (upstream-style)",
                ["After=network.target"],
                ["Group=keylime", "User=keylime", _standin("registrar"), "TimeoutSec=60s",
                 "Restart=on-failure", "RestartSec=120s"],
                ["WantedBy=default.target"]),
            "keylime_agent.service": _unit(
                "The Keylime compute agent (rust-keylime-style)",
                ["Requires=var-lib-keylime-secure.mount", "After=var-lib-keylime-secure.mount",
                 "After=network-online.target", "Wants=network-online.target",
                 "After=tpm2-abrmd.service", "Wants=tpm2-abrmd.service"],
                [_standin("agent"), "Restart=on-failure", "RestartSec=120s"],
                ["WantedBy=multi-user.target"]),
            "var-lib-keylime-secure.mount": "[Unit]\nDescription=Keylime agent secure storage\n\n"
                "[Mount]\nWhat=tmpfs\nWhere=/var/lib/keylime/secure\nType=tmpfs\n"
                "Options=mode=0700,size=1m\n",
        },
        "enable": {"default.target.wants": ["keylime_verifier.service", "keylime_registrar.service"],
                   "multi-user.target.wants": ["keylime_agent.service"]},
    },
    "debian": {
        "dir": LIB_UNITS,
        "units": {
            "keylime_verifier.service": _unit(
                "Keylime verifier (Debian-style)",
                ["After=network.target", "Before=keylime_registrar.service"],
                ["User=keylime", "Group=keylime", _standin("verifier"), "Restart=on-failure"],
                ["WantedBy=multi-user.target", "RequiredBy=keylime_registrar.service"]),
            "keylime_registrar.service": _unit(
                "Keylime registrar (Debian-style)",
                ["After=network.target"],
                ["User=keylime", "Group=keylime", _standin("registrar"), "Restart=on-failure"],
                ["WantedBy=multi-user.target"]),
            "keylime_agent.service": _unit(
                "Keylime agent (Debian-style)",
                ["After=network.target keylime_registrar.service"],
                [_standin("agent"), "Restart=on-failure"],
                ["WantedBy=multi-user.target"]),
        },
        "enable": {"multi-user.target.wants": ["keylime_verifier.service", "keylime_registrar.service",
                                               "keylime_agent.service"],
                   "keylime_registrar.service.requires": ["keylime_verifier.service"]},
    },
}


def install_layout(root, name):
    """Write a layout's unit files into root and enable them as `systemctl enable` would."""
    layout = LAYOUTS[name]
    for unit, text in layout["units"].items():
        write(root, layout["dir"] + "/" + unit, text)
    for wants, units in layout["enable"].items():
        for unit in units:
            enable(root, ETC_UNITS, wants, "/" + layout["dir"] + "/" + unit)
    return sorted(layout["units"])


def install_standins(root):
    """The stand-in services (tests/systemd_fixtures/standin/*) into root's STANDIN directory."""
    source = os.path.join(FIXTURES, "standin")
    for name in sorted(os.listdir(source)):
        with open(os.path.join(source, name), encoding="utf-8") as handle:
            write(root, STANDIN + "/" + name, handle.read(), 0o755)


def unit_names(name):
    """Every unit a layout test names on systemd-analyze's command line: the layout's and ours."""
    return sorted(set(LAYOUTS[name]["units"]) | {"keylime-cert-renewal.service", "keylime-cert-renewal.timer"})

