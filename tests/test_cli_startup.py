"""The boot-time command line is read without argparse; the state file is written without json.

Both exist to keep the ExecStartPre's start-up small (see README, benchmark); these tests pin that
the fast paths give exactly what argparse and json.dumps give.
"""

import json
import random
import subprocess
import sys

import pytest

from keylime_reboot_fix import cli, reset_state
from tests.conftest import ROOT
from tests.support.verifier_db import agent

FIELDS = ("db", "config", "dry_run", "json", "any_cause", "force", "max_resets", "state_file", "busy_timeout")


@pytest.mark.parametrize("argv", [
    [],
    ["--dry-run"],
    ["--db", "/x/cv.sqlite", "--state-file=/s", "--force", "--json", "--any-cause"],
    ["--max-resets", "5", "--busy-timeout", "2.5", "--config", "/etc/v.conf"],
    ["--dry", "--max-r=2", "--busy-timeout=0"],         # unique abbreviations, as argparse allows
    ["--db", "a", "--db", "b"],                           # the last value wins in both
])
def test_fast_parse_agrees_with_argparse(argv):
    fast = cli.fast_parse(argv)
    slow = cli.build_parser().parse_args(argv)
    assert fast is not None
    assert {f: getattr(fast, f) for f in FIELDS} == {f: getattr(slow, f) for f in FIELDS}


@pytest.mark.parametrize("argv", [
    ["--help"], ["-h"], ["--version"], ["--frobnicate"], ["--d"], ["positional"],
    ["--max-resets", "0"], ["--busy-timeout", "nan"], ["--busy-timeout", "-1"],
    ["--state-file", "--dry-run"],   # getopt would take "--dry-run" as the file; argparse refuses
    ["--db"], ["--db="], ["--state-file", ""], ["--config="],   # an empty path is a usage error
])
def test_everything_else_goes_to_argparse(argv):
    assert cli.fast_parse(argv) is None


def test_option_value_that_looks_like_an_option_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "keylime_reboot_fix", "--state-file", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 64
    assert proc.stderr.splitlines()[-1] == ("keylime-reset-failed: error: argument --state-file: expected one "
                                            "argument (see --help)")


@pytest.mark.parametrize("with_database", [False, True])
def test_boot_run_imports_neither_argparse_nor_json_nor_re(fleet, tmp_path, with_database):
    """What the ExecStartPre pays for at start-up: first boot, and a real reset with a new state file."""
    db = fleet([agent("a1", 7, "internal.verifier.not_reachable")]) if with_database else None
    args = db.args + ["--force"] if db else ["--db", str(tmp_path / "none.sqlite")]
    code = ("import sys; from keylime_reboot_fix import cli; "
            "rc = cli.main(%r, syslog_sink=lambda l, m: None); "
            "print(rc, sorted(m for m in ('argparse', 'json', 're', 'configparser', 'urllib.parse', 'enum') "
            "if m in sys.modules))" % args)
    proc = subprocess.run(["/usr/bin/python3", "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT})
    assert proc.stdout.splitlines()[-1] == "0 []", proc.stderr
    if db:
        assert db.states() == {"a1": 3}


def test_state_lines_are_exactly_what_json_dumps_writes():
    rng = random.Random(20261203)
    names = ["agent-1", 'q"uote\\back', "ctl\x00\x1f\x7f\n\t\r\b\f", "é€😀", "\ud800lone"]
    names += ["".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(64)) for _ in range(200)]
    # Printable ASCII (the fast path) with quotes and backslashes mixed in, and the same plus DEL.
    names += ["".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(40)) for _ in range(200)]
    names += ["".join(chr(rng.randrange(0x20, 0x80)) for _ in range(40)) for _ in range(200)]
    for name in names:
        for entry in ((name, 1, None, None), (name, 3, 17, 1764750000)):
            assert reset_state.format_entry(entry) == json.dumps(list(entry)) + "\n"
    assert reset_state.HEADER_LINE == json.dumps(reset_state.HEADER, sort_keys=True) + "\n"
