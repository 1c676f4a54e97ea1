"""keylime-reboot-fix-generator decides from installed unit files; systemd-analyze checks the result.

Each layout (tests/support/units.py: (a) site, (b) upstream, (c) debian, plus variants) is written
into a temporary root together with the package's units; the generator reads it through
SYSTEMD_UNIT_PATH as systemd would. Then the host's real `systemd-analyze verify` loads the layout,
the package's units and the generator's output with every unit named, and must report no ordering
cycle, while the write-up's naive static "After=keylime_agent.service" (the negative control) does.
"""

import os
import shutil
import subprocess

import pytest

from keylime_reboot_fix import generator
from tests.support import units
from tests.support.real import require

DROPIN = "keylime_verifier.service.d/" + generator.DROPIN_NAME


def make_root(tmp_path, layout):
    root = str(tmp_path / "root")
    units.install_package(root)
    units.install_layout(root, layout)
    return root


def unit_path(root):
    return ["%s/%s" % (root, units.ETC_UNITS), "%s/%s" % (root, units.LIB_UNITS)]


def generate(root, tmp_path):
    out = tmp_path / "generator"
    report = tmp_path / "generator.log"
    shutil.rmtree(out, ignore_errors=True)   # systemd empties the output directories before each run
    out.mkdir()
    env = {"SYSTEMD_UNIT_PATH": ":".join(unit_path(root)), "KEYLIME_REBOOT_FIX_GENERATOR_REPORT": str(report)}
    assert generator.main([str(out), str(tmp_path / "early"), str(tmp_path / "late")], environ=env) == 0
    dropin = out / DROPIN
    return (dropin.read_text() if dropin.exists() else None), report.read_text()


def test_site_layout_gets_the_edge(tmp_path):
    dropin, report = generate(make_root(tmp_path, "site"), tmp_path)
    assert dropin is not None and dropin.endswith("[Unit]\n# Poll the local agent only once it has started "
                                                  "(and listens: its ExecStartPost waits).\n"
                                                  "After=keylime_agent.service\n")
    assert ("ordering keylime_verifier.service after keylime_agent.service: nothing orders the verifier "
            "before the agent, so this cannot cycle") in report
    assert report.endswith("=> emitted %s/generator/%s\n" % (tmp_path, DROPIN))


@pytest.mark.parametrize("layout,edge", [
    ("upstream", "/usr/lib/systemd/system/keylime_verifier.service: Before=keylime_registrar.service"),
    ("debian", "/usr/lib/systemd/system/keylime_verifier.service: Before=keylime_registrar.service"),
])
def test_packaged_layouts_get_no_edge_and_the_report_says_why(tmp_path, layout, edge):
    root = make_root(tmp_path, layout)
    dropin, report = generate(root, tmp_path)
    assert dropin is None
    assert ("NOT ordering keylime_verifier.service after keylime_agent.service: that would close an ordering "
            "cycle, because the installed units order the verifier before the agent: keylime_verifier.service "
            "-> keylime_registrar.service -> keylime_agent.service") in report
    assert "keylime_verifier.service before keylime_registrar.service  (%s%s)" % (root, edge) in report
    agent_edge = ("keylime_registrar.service before keylime_agent.service  (%s/usr/lib/systemd/system/"
                  "keylime_agent.service.d/50-keylime-reboot-fix.conf: After=keylime_registrar.service)" % root)
    if layout == "debian":   # Debian's own agent unit orders it after the registrar, found first
        agent_edge = ("keylime_registrar.service before keylime_agent.service  (%s/usr/lib/systemd/system/"
                      "keylime_agent.service: After=keylime_registrar.service)" % root)
    assert agent_edge in report
    assert report.endswith("=> no edge emitted\n")
    assert "WARNING" not in report


def test_site_keeping_its_old_renewal_unit_ordered_after_openbao_gets_no_edge(tmp_path):
    """The write-up's own renewal unit in /etc masks ours; with After=openbao.service the edge would cycle."""
    root = make_root(tmp_path, "site")
    units.write(root, units.ETC_UNITS + "/keylime-cert-renewal.service",
                "[Unit]\nWants=openbao.service\nAfter=openbao.service\n[Service]\nType=oneshot\nExecStart=/bin/true\n")
    dropin, report = generate(root, tmp_path)
    assert dropin is None
    assert ("keylime_verifier.service -> spire-agent.service -> openbao.service -> keylime-cert-renewal.service "
            "-> keylime_agent.service") in report


def test_edge_blocked_through_a_target_the_verifier_is_wanted_by(tmp_path):
    """Implicit ordering: a target is ordered after the units it wants (unless DefaultDependencies=no)."""
    root = make_root(tmp_path, "site")
    units.write(root, units.ETC_UNITS + "/keylime.target", "[Unit]\nDescription=Keylime control plane\n")
    units.enable(root, units.ETC_UNITS, "keylime.target.wants", "/%s/keylime_verifier.service" % units.ETC_UNITS)
    units.write(root, units.ETC_UNITS + "/keylime_agent.service.d/site.conf", "[Unit]\nAfter=keylime.target\n")
    dropin, report = generate(root, tmp_path)
    assert dropin is None
    assert "keylime_verifier.service -> keylime.target -> keylime_agent.service" in report
    assert "a target is ordered after what it wants" in report
    units.write(root, units.ETC_UNITS + "/keylime.target", "[Unit]\nDefaultDependencies=no\n")
    assert generate(root, tmp_path)[0] is not None


def test_an_empty_before_in_an_admin_dropin_does_not_remove_the_packaged_one(tmp_path):
    root = make_root(tmp_path, "upstream")
    units.write(root, units.ETC_UNITS + "/keylime_verifier.service.d/override.conf", "[Unit]\nBefore=\n")
    assert generate(root, tmp_path)[0] is None


def test_same_named_dropin_in_etc_replaces_the_packaged_agent_dropin(tmp_path):
    """An admin who replaces our agent drop-in (same file name in /etc) without After=registrar gets the edge."""
    root = make_root(tmp_path, "upstream")
    units.write(root, units.ETC_UNITS + "/keylime_agent.service.d/50-keylime-reboot-fix.conf", "[Unit]\n")
    dropin, report = generate(root, tmp_path)
    assert dropin is not None


@pytest.mark.parametrize("how", ["masked", "absent"])
def test_no_local_agent_no_edge(tmp_path, how):
    root = make_root(tmp_path, "site")
    agent = os.path.join(root, units.ETC_UNITS, "keylime_agent.service")
    os.remove(agent)
    if how == "masked":
        os.symlink("/dev/null", agent)
    dropin, report = generate(root, tmp_path)
    assert dropin is None
    assert ("keylime_agent.service is not installed here (no local agent): keylime_verifier.service is not "
            "ordered after it") in report


def test_verifier_already_after_the_agent_needs_nothing(tmp_path):
    root = make_root(tmp_path, "site")
    units.write(root, units.ETC_UNITS + "/keylime_verifier.service.d/site.conf", "[Unit]\nAfter=keylime_agent.service\n")
    dropin, report = generate(root, tmp_path)
    assert dropin is None
    assert "already ordered after keylime_agent.service by the installed units: nothing to add" in report


def test_alias_names_are_followed(tmp_path):
    """spire-agent.service as an alias (symlink) of spire.service: both names are one unit."""
    root = make_root(tmp_path, "site")
    etc = os.path.join(root, units.ETC_UNITS)
    os.rename(os.path.join(etc, "spire-agent.service"), os.path.join(etc, "spire.service"))
    os.symlink("spire.service", os.path.join(etc, "spire-agent.service"))
    assert generate(root, tmp_path)[0] is not None
    units.write(root, units.ETC_UNITS + "/keylime_agent.service.d/x.conf", "[Unit]\nAfter=spire-agent.service\n")
    dropin, report = generate(root, tmp_path)
    assert dropin is None
    assert "keylime_verifier.service -> spire.service -> keylime_agent.service" in report


def test_static_agent_edge_that_cycles_is_reported(tmp_path):
    root = make_root(tmp_path, "site")
    units.write(root, units.ETC_UNITS + "/keylime_registrar.service.d/odd.conf", "[Unit]\nAfter=keylime_agent.service\n")
    _, report = generate(root, tmp_path)
    assert ("WARNING: ordering cycle through keylime_registrar.service and keylime_agent.service in the "
            "installed units: keylime_agent.service -> keylime_registrar.service") in report


def test_usage_internal_error_and_explain(tmp_path, monkeypatch, capsys):
    assert generator.main([]) == 64
    assert capsys.readouterr().err == ("keylime-reboot-fix-generator: usage error: expected NORMAL_DIR "
                                       "[EARLY_DIR LATE_DIR] or --explain\n")
    root = make_root(tmp_path, "debian")
    env = {"SYSTEMD_UNIT_PATH": ":".join(unit_path(root))}
    assert generator.main(["--explain"], environ=env) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "=> no edge emitted"

    def broken(_units):
        raise RuntimeError("boom")
    monkeypatch.setattr(generator, "decide", broken)
    monkeypatch.setattr(generator, "REPORT_FILE", str(tmp_path / "report"))
    out = tmp_path / "out"
    out.mkdir()
    assert generator.main([str(out)], environ=env) == 70
    assert os.listdir(out) == []
    assert capsys.readouterr().err == ("keylime-reboot-fix-generator: internal error, no edge emitted: "
                                       "RuntimeError: boom\n")


def test_unit_path_follows_systemd_unit_path():
    assert generator.unit_path({}) == list(generator.DEFAULT_UNIT_PATH)
    assert generator.unit_path({"SYSTEMD_UNIT_PATH": "/a:/b"}) == ["/a", "/b"]
    assert generator.unit_path({"SYSTEMD_UNIT_PATH": "/a:"}) == ["/a"] + list(generator.DEFAULT_UNIT_PATH)


# --- the host's real systemd-analyze ------------------------------------------------------------

NOT_HERE = ("/usr/libexec/keylime-reboot-fix/", "/usr/sbin/keylime-reset-failed", units.STANDIN + "/")


def analyze(root, tmp_path, layout):
    """`systemd-analyze verify` of every unit of the layout and ours; the lines it printed."""
    path = [str(tmp_path / "generator")] + unit_path(root) + [""]   # trailing "": the host's own units
    proc = subprocess.run(["systemd-analyze", "verify"] + units.unit_names(layout),
                          env={"SYSTEMD_UNIT_PATH": ":".join(path), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                               "SYSTEMD_LOG_COLOR": "0"}, capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    # The package's and the stand-ins' executables live in the container root, not on this host:
    # those complaints are expected here (the nspawn tests verify inside the root, where they exist).
    return proc.returncode, [l for l in lines if not ("is not executable" in l and any(p in l for p in NOT_HERE))]


@pytest.mark.parametrize("layout", ["site", "upstream", "debian"])
def test_systemd_analyze_finds_no_cycle_and_the_naive_edge_would_cycle(tmp_path, layout):
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze not installed")
    root = make_root(tmp_path, layout)
    dropin, _ = generate(root, tmp_path)
    assert (dropin is not None) == (layout == "site")
    _, lines = analyze(root, tmp_path, layout)
    assert not [l for l in lines if "cycle" in l.lower()], lines
    assert not [l for l in lines if "keylime" in l or "openbao" in l or "spire" in l], lines
    # Negative control: the write-up's static edge, as a plain drop-in, next to ours.
    units.write(root, units.LIB_UNITS + "/keylime_verifier.service.d/60-naive.conf", "[Unit]\nAfter=keylime_agent.service\n")
    _, lines = analyze(root, tmp_path, layout)
    cycles = [l for l in lines if "Found ordering cycle" in l]
    assert bool(cycles) == (layout != "site"), lines


def test_dropin_directories_in_systemd_order():
    assert generator.dropin_dirs("keylime_verifier.service") == ["keylime_verifier.service.d", "service.d"]
    assert generator.dropin_dirs("keylime-cert-renewal.service") == [
        "keylime-cert-renewal.service.d", "keylime-cert-.service.d", "keylime-.service.d", "service.d"]


def test_prefix_and_type_wide_dropins_count(tmp_path):
    """An admin's keylime-.service.d or service.d drop-in orders units just as a unit's own one does."""
    root = make_root(tmp_path, "site")
    units.write(root, units.ETC_UNITS + "/keylime-.service.d/site.conf", "[Unit]\nAfter=openbao.service\n")
    dropin, report = generate(root, tmp_path)
    assert dropin is None   # keylime-cert-renewal.service now after openbao: the chain would cycle
    assert "openbao.service -> keylime-cert-renewal.service -> keylime_agent.service" in report


def test_target_with_explicit_before_gets_no_implicit_after(tmp_path):
    """systemd skips a target's implicit After= on a unit the target is explicitly ordered before."""
    root = make_root(tmp_path, "site")
    units.write(root, units.ETC_UNITS + "/keylime.target", "[Unit]\nBefore=keylime_verifier.service\n")
    units.enable(root, units.ETC_UNITS, "keylime.target.wants", "/%s/keylime_verifier.service" % units.ETC_UNITS)
    units.write(root, units.ETC_UNITS + "/keylime_agent.service.d/site.conf", "[Unit]\nAfter=keylime.target\n")
    assert generate(root, tmp_path)[0] is not None
