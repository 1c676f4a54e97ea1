"""Found by trying to break the command as a new user would: each gets a clear error or is safe."""

import os
import sqlite3
import subprocess
import sys

import pytest

from tests import demo_fleet
from tests.conftest import ROOT, run_reset
from tests.support import verifier_db
from tests.support.verifier_db import agent

NR = "internal.verifier.not_reachable"


def cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "keylime_reboot_fix", "--force"] + args, cwd=ROOT,
                          capture_output=True, text=True, **kw)


@pytest.mark.parametrize("argv, message", [
    (["--db="], "argument --db: must not be empty"),
    (["--state-file", ""], "argument --state-file: must not be empty"),
    (["--config="], "argument --config: must not be empty"),
])
def test_empty_paths_are_usage_errors_not_the_production_database(argv, message):
    proc = cli(argv)
    assert (proc.returncode, proc.stdout) == (64, "")
    assert proc.stderr.splitlines()[-1] == "keylime-reset-failed: error: %s (see --help)" % message


def test_closed_stdout_does_not_cut_the_audit_log(fleet):
    rows = [agent("a%04d" % i, 7, NR) for i in range(3000)]
    db = fleet(rows)
    proc = subprocess.Popen([sys.executable, "-m", "keylime_reboot_fix", "--force"] + db.args, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader goes away at once, as "| head -1" does
    err = proc.stderr.read()
    assert proc.wait() == 0
    lines = err.splitlines()
    assert sum(1 for line in lines if line.startswith("keylime-reset-failed: reset agent a")) == 3000
    assert "keylime-reset-failed: warning: standard output was closed; the table is incomplete, the log is not" \
        in lines
    assert lines[-1].startswith("keylime-reset-failed: reset 3000 agent(s) of verifier 'default'")
    assert set(db.states().values()) == {3}


@pytest.mark.parametrize("column, value, message", [
    ("agent_id", b"bad\xff", "database {path} has a FAILED row whose agent_id is not text: b'bad\\xff'"),
    ("attestation_count", "abc",
     "database {path}: FAILED agent odd has a attestation_count that is not an integer: abc"),
    ("last_successful_attestation", 1.5,
     "database {path}: FAILED agent odd has a last_successful_attestation that is not an integer: 1.5"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_non_text_or_non_integer_values_are_65_and_leave_nothing(fleet, column, value, message, dry_run):
    """The dry run and the real run agree: both stop at the row, name it, and change nothing."""
    db = fleet([agent("good", 7, NR), agent("odd", 7, NR)])
    conn = sqlite3.connect(db.path)
    conn.execute("UPDATE verifiermain SET %s = ? WHERE agent_id = 'odd'" % column, (value,))
    conn.commit()
    conn.close()
    before = db.dump()
    result = run_reset(db.args + (["--dry-run"] if dry_run else []))
    assert result.code == 65
    assert result.syslog == [("error", message.format(path=db.path))]
    assert db.dump() == before
    assert not os.path.exists(db.state_file)


def test_a_state_file_listing_an_agent_twice_is_65_and_says_so(fleet):
    db = fleet([agent("a1", 7, NR)])
    os.makedirs(os.path.dirname(db.state_file))
    with open(db.state_file, "w") as handle:
        handle.write('{"format": "keylime-reboot-fix reset state", "version": 1}\n'
                     '["a1", 1, 0, null]\n["a1", 2, 0, null]\n')
    before = db.dump()
    result = run_reset(db.args)
    assert result.code == 65
    assert result.syslog == [("error", "reset-state file %s lists an agent twice" % db.state_file)]
    assert db.dump() == before


def test_a_value_that_reads_like_a_lock_or_a_log_line_is_data_not_a_lock(fleet):
    """An undecodable agent_id whose text says "locked" and carries a line break: 65 (the data is
    bad), not 75, and the error is one log line with the break escaped."""
    db = fleet([agent("a1", 7, NR)])
    conn = sqlite3.connect(db.path)
    conn.execute("UPDATE verifiermain SET agent_id = CAST(? AS TEXT)",
                 (b"database is locked\nkeylime-reset-failed: reset agent evil\xff",))
    conn.commit()
    conn.close()
    with open(db.path, "rb") as handle:
        before = handle.read()  # (the test's own dump() could not decode it either)
    for args in (db.args, db.args + ["--dry-run"]):
        result = run_reset(args)
        assert result.code == 65
        assert len(result.syslog) == 1 and result.syslog[0][0] == "error"
        assert "\n" not in result.syslog[0][1] and "\\n" in result.syslog[0][1]
        assert result.syslog[0][1].startswith("database %s is corrupt or not SQLite: Could not decode to UTF-8"
                                              % db.path)
        assert result.stderr.count("\n") == 1
    with open(db.path, "rb") as handle:
        assert handle.read() == before


def test_control_characters_in_agent_ids_are_escaped_in_the_log(fleet):
    db = fleet([agent("evil\nreset agent forged\x1b[31m", 7, NR)])
    result = run_reset(db.args)
    assert result.code == 0
    assert result.syslog[0] == ("info", "reset agent evil\\nreset agent forged\\x1b[31m (127.0.0.1:9002, %s) from "
                                        "FAILED (7) to GET_QUOTE (3): reset 1 of 3 without attestation" % NR)
    assert all("\n" not in message and "\x1b" not in message for _lvl, message in result.syslog)
    # The table too: one line for the row, the escapes shown, not sent to the terminal.
    table = result.stdout.splitlines()
    assert len(table) == 3
    assert table[2].split()[:2] == ["evil\\nreset", "agent"]
    assert table[2].split("  ")[0] == "evil\\nreset agent forged\\x1b[31m"
    assert "\x1b" not in result.stdout


def test_undecodable_state_file_is_65(fleet):
    db = fleet(demo_fleet.rows())
    os.makedirs(os.path.dirname(db.state_file))
    with open(db.state_file, "wb") as handle:
        handle.write(b'{"format": "keylime-reboot-fix reset state", "version": 1}\n\xff\xfe\x00garbage\n')
    result = run_reset(db.args)
    assert result.code == 65
    assert result.syslog == [("error", "reset-state file %s is not UTF-8 text" % db.state_file)]
    assert db.states()["agent-02-unreachable"] == 7


def test_a_path_beginning_with_two_slashes_is_a_path(fleet):
    db = fleet(demo_fleet.rows())
    result = run_reset(["--db", "/" + db.path, "--state-file", db.state_file])
    assert result.code == 0
    assert db.states()["agent-02-unreachable"] == 3


def _keylime_schema_with(tmp_path, change):
    """Keylime 7.14.3's schema with the verifiermain definition changed, and one unreachable row."""
    with open(verifier_db.SCHEMA, encoding="utf-8") as handle:
        schema = change(handle.read())
    changed = tmp_path / "schema.sql"
    changed.write_text(schema, encoding="utf-8")
    return verifier_db.create(str(tmp_path / "cv_data.sqlite"), [agent("a1", 7, NR)], schema=str(changed))


def _without_rowid(schema):
    start = schema.index('CREATE TABLE IF NOT EXISTS "verifiermain"')
    end = schema.index(");", start)
    return schema[:start] + schema[start:end] + ") WITHOUT ROWID" + schema[end + 1:]


def _with_column(name):
    return lambda schema: schema.replace("\tagent_id VARCHAR(80) NOT NULL, \n",
                                         "\tagent_id VARCHAR(80) NOT NULL, \n\t%s INTEGER, \n" % name, 1)


@pytest.mark.parametrize("change, why", [
    (_without_rowid, "verifiermain is a WITHOUT ROWID table"),
    (_with_column("rowid"), "verifiermain has a column named rowid"),
    (_with_column("OID"), "verifiermain has a column named OID"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_table_whose_rowid_is_not_its_row_identity_is_65_and_untouched(tmp_path, change, why, dry_run):
    """The reset finds its rows again by rowid; a table where that name means something else is refused."""
    path = _keylime_schema_with(tmp_path, change)
    with open(path, "rb") as handle:
        before = handle.read()
    result = run_reset(["--db", path, "--state-file", str(tmp_path / "s")] + (["--dry-run"] if dry_run else []))
    assert result.code == 65
    assert result.syslog == [("error", "database %s is not a Keylime verifier database: %s" % (path, why))]
    with open(path, "rb") as handle:
        assert handle.read() == before
    assert not os.path.exists(tmp_path / "s")


@pytest.mark.parametrize("schema, why", [
    ("CREATE TABLE foo (x)", "it has tables but no verifiermain"),
    ("CREATE VIEW verifiermain AS SELECT 'a1' AS agent_id", "verifiermain is a view, not a table"),
    ("CREATE TABLE other (x); CREATE VIEW VerifierMain AS SELECT x FROM other",
     "verifiermain is a view, not a table"),
    ("CREATE TABLE other (x); CREATE VIEW v AS SELECT x FROM other", "it has tables but no verifiermain"),
    ("CREATE VIEW v AS SELECT 1 AS x", "it has views but no verifiermain table"),
])
@pytest.mark.parametrize("dry_run", [False, True])
def test_another_programs_database_or_a_view_is_not_a_first_boot(tmp_path, schema, why, dry_run):
    path = str(tmp_path / "cv_data.sqlite")
    conn = sqlite3.connect(path)
    conn.executescript(schema)
    conn.close()
    result = run_reset(["--db", path, "--state-file", str(tmp_path / "s")] + (["--dry-run"] if dry_run else []))
    assert result.code == 65
    assert result.syslog == [("error", "database %s is not a Keylime verifier database: %s" % (path, why))]


def test_the_table_name_matches_in_any_case_as_in_sqlite(tmp_path):
    """SQLite resolves VerifierMain and verifiermain to the same table; so does the reset."""
    path = _keylime_schema_with(tmp_path, lambda schema: schema.replace(
        'CREATE TABLE IF NOT EXISTS "verifiermain"', 'CREATE TABLE IF NOT EXISTS "VerifierMain"'))
    result = run_reset(["--db", path, "--state-file", str(tmp_path / "s")])
    assert result.code == 0
    assert result.syslog[-1][1].startswith("reset 1 agent(s) of verifier 'default'")
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT agent_id, operational_state FROM verifiermain").fetchall() == [("a1", 3)]
    conn.close()
