"""Smoke test of the benchmark harness (bench/run.py) at tiny sizes: 10 and 100 agents, 1 run.

It runs the real harness with both real commands, A (`/usr/bin/python3 -m keylime_reboot_fix`)
and B (bench/reference-reset.sh with the real sqlite3 and logger), and checks the report's
structure and that each command reset exactly the rows it must. Timings are not asserted: the
targets are for the full benchmark (make bench), not for a test on a shared CI machine.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.real import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")


def _load(name, filename):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_run = _load("bench_run", "run.py")  # puts bench/ on sys.path for its own make_db import
make_db = sys.modules["make_db"]


def _tools():
    require(os.path.exists("/usr/bin/python3"), "Debian's /usr/bin/python3 is missing (package python3)")
    require(os.path.exists(bench_run.TIME), "GNU time is missing (package time)")
    require(shutil.which("sqlite3"), "the sqlite3 command line is missing (package sqlite3)")
    require(shutil.which("logger"), "logger is missing (package bsdutils)")
    require(os.path.exists("/usr/bin/unshare") and os.geteuid() == 0,
            "the private /dev/log needs root and unshare (package util-linux)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    _tools()
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run.py"), "--sizes", "10,100", "--reps", "1",
         "--warmup", "0", "--cache-dir", str(tmp / "cache"), "--out", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with open(out / "latest.json", encoding="utf-8") as handle:
        data = json.load(handle)
    data["_md"] = (out / "latest.md").read_text(encoding="utf-8")
    data["_stdout"] = proc.stdout
    return data


def test_class_counts_are_exact():
    assert make_db.class_counts(10) == {"unreachable": 1, "failed_other": 1, "invalid_quote": 1,
                                        "tenant_failed": 1, "stale_event": 1, "healthy": 5}
    assert make_db.class_counts(100) == {"unreachable": 3, "failed_other": 1, "invalid_quote": 1,
                                         "tenant_failed": 1, "stale_event": 1, "healthy": 93}
    assert make_db.class_counts(1000000) == {"unreachable": 30000, "failed_other": 5000,
                                             "invalid_quote": 5000, "tenant_failed": 2000,
                                             "stale_event": 10000, "healthy": 948000}
    assert make_db.expected_resets(1000000) == {"A": 30000, "B": 35000}


def test_both_commands_reset_exactly_their_rows(report):
    rows = report["rows"]
    assert [r["agents"] for r in rows] == [10, 100]
    # A: only the unreachable rows of this verifier; B: every state-7 row whatever its cause.
    assert [(r["A"]["resets"], r["B"]["resets"]) for r in rows] == [([1], [2]), ([3], [4])]
    # F, the bare UPDATE (the floor): exactly A's rows, no syslog line.
    assert [(r["F"]["resets"], r["F"]["syslog_lines"]) for r in rows] == [([1], [0]), ([3], [0])]
    assert [r["floor_ratio"] for r in rows] == [pytest.approx(r["F"]["median_s"] / r["B"]["median_s"])
                                                for r in rows]
    assert [r["reps"] for r in rows] == [1, 1]
    for r in rows:
        for which in "AB":
            assert len(r[which]["walls_s"]) == 1
            assert r[which]["median_s"] > 0
            assert 0 < r[which]["cpu_median_s"] < 60
            assert 1.0 < r[which]["peak_rss_mib"] < 200.0
        assert r["ratio"] == pytest.approx(r["A"]["median_s"] / r["B"]["median_s"])
        assert r["cpu_ratio"] == pytest.approx(r["A"]["cpu_median_s"] / r["B"]["cpu_median_s"])
    # Lines each command sent to the private /dev/log: B its one logger line; A one per reset
    # agent plus its summary line.
    assert report["syslog"].startswith("private /dev/log")
    assert [(r["A"]["syslog_lines"], r["B"]["syslog_lines"]) for r in rows] == [([2], [1]), ([4], [1])]


def test_report_structure(report):
    md = report["_md"]
    lines = md.splitlines()
    header = [l for l in lines if l.startswith("| agents |")]
    assert header == ["| agents | DB size | runs | A median | B median | A/B | A CPU | B CPU | A/B CPU "
                      "| A peak RSS | B peak RSS | A reset | B reset | syslog lines A/B |",
                      "| agents | F median | F/B | A/F | F CPU | F peak RSS | F reset |"]
    data = [l for l in lines if l.startswith("| 10 |") or l.startswith("| 100 |")]
    assert len(data) == 4 and all(l.count("|") == 15 for l in data[:2])
    assert data[0].endswith("| 1 | 2 | 2/1 |") and data[1].endswith("| 3 | 4 | 4/1 |")
    # The floor table: F's rows reset, after its exact header.
    floor_header = lines.index("| agents | F median | F/B | A/F | F CPU | F peak RSS | F reset |")
    assert lines[floor_header + 2:floor_header + 4] == data[2:]
    assert all(l.count("|") == 8 for l in data[2:])
    assert data[2].endswith("| 1 |") and data[3].endswith("| 3 |")
    verdicts = [(t, ok) for t, _m, ok in report["targets"]]
    assert verdicts[0][0] == "A/B wall time <= 3.0 at 10 agents" and verdicts[0][1] in (True, False)
    assert [ok for _t, ok in verdicts[1:]] == [None, None, None, None]  # sizes not run here
    assert len([l for l in report["_stdout"].splitlines()
                if l.startswith(("PASS: ", "FAIL: ", "n/a: "))]) == 5
    assert "ExecStartPre" not in md  # printed only when 1,000 agents were measured


def test_check_catches_a_command_that_did_nothing(tmp_path):
    pristine, manifest = make_db.pristine(10, str(tmp_path))
    work = str(tmp_path / "work.sqlite")
    bench_run.restore(pristine, work, cold=False)
    with pytest.raises(AssertionError, match="A left the database in an unexpected state"):
        bench_run.check(work, manifest, "A")
