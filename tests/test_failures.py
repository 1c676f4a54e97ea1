"""Bad input and hostile conditions: each gets one clear line, its exit code, and changes nothing."""

import os
import pwd
import shutil
import tempfile
import sqlite3
import subprocess
import sys
import time

import pytest

from tests import demo_fleet
from tests.conftest import ROOT, run_reset
from tests.support.verifier_db import agent

NR = "internal.verifier.not_reachable"


def only_error(result):
    """The single error line, as it went to syslog and stderr."""
    assert [lvl for lvl, _m in result.syslog] == ["error"]
    assert result.stderr_lines == ["keylime-reset-failed: error: " + result.syslog[0][1]]
    return result.syslog[0][1]


def test_first_boot_without_database_file_is_success(tmp_path):
    path = str(tmp_path / "cv_data.sqlite")
    result = run_reset(["--db", path, "--state-file", str(tmp_path / "s")])
    assert result.code == 0
    assert result.syslog == [("info", "no verifier database at %s yet (first boot?): nothing to reset" % path)]
    assert os.listdir(tmp_path) == []


def test_first_boot_without_verifier_table_is_success(tmp_path):
    path = str(tmp_path / "cv_data.sqlite")
    sqlite3.connect(path).close()  # an empty SQLite file, as before the verifier's migrations ran
    result = run_reset(["--db", path, "--state-file", str(tmp_path / "s")])
    assert result.code == 0
    assert result.syslog == [("info", "verifier database %s has no verifiermain table yet (first boot?): "
                                      "nothing to reset" % path)]


def test_corrupt_file_is_exit_65_and_untouched(tmp_path):
    path = tmp_path / "cv_data.sqlite"
    path.write_bytes(b"this is not an SQLite database at all\n" * 100)
    result = run_reset(["--db", str(path), "--state-file", str(tmp_path / "s")])
    assert result.code == 65
    assert only_error(result) == ("database %s is corrupt or not SQLite: file is not a database" % path)
    assert path.read_bytes() == b"this is not an SQLite database at all\n" * 100


def test_table_without_keylime_columns_is_exit_65(tmp_path):
    path = str(tmp_path / "cv_data.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE verifiermain (agent_id TEXT, operational_state INTEGER)")
    conn.commit()
    conn.close()
    result = run_reset(["--db", path, "--state-file", str(tmp_path / "s")])
    assert result.code == 65
    assert only_error(result) == (
        "database %s is not a Keylime verifier database: verifiermain has no column verifier_id, severity_level, "
        "last_event_id, attestation_count, last_successful_attestation, ip, port" % path)


def test_locked_database_waits_the_busy_timeout_then_exit_75(fleet):
    db = fleet(demo_fleet.rows())
    before = db.dump()
    holder = sqlite3.connect(db.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a second writer holds the write lock
    try:
        started = time.monotonic()
        result = run_reset(db.args + ["--busy-timeout", "0.5"])
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.code == 75
    assert only_error(result) == "database %s is locked by another process (busy timeout exceeded)" % db.path
    assert 0.5 <= waited < 5
    assert db.dump() == before
    assert not os.path.exists(db.state_file)


def test_lock_released_within_the_timeout_lets_the_reset_through(fleet):
    db = fleet(demo_fleet.rows())
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, time; c = sqlite3.connect(%r, isolation_level=None); c.execute('BEGIN IMMEDIATE');"
        "print('locked', flush=True); time.sleep(1); c.execute('ROLLBACK')") % db.path],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    result = run_reset(db.args + ["--busy-timeout", "10"])
    holder.wait()
    assert result.code == 0
    assert db.states()["agent-02-unreachable"] == 3


def test_symlinked_database_is_refused_with_77(fleet, tmp_path):
    db = fleet(demo_fleet.rows())
    link = tmp_path / "link.sqlite"
    link.symlink_to(db.path)
    before = db.dump()
    result = run_reset(["--db", str(link), "--state-file", db.state_file])
    assert result.code == 77
    assert only_error(result) == "refusing database %s: it is a symbolic link" % link
    assert db.dump() == before


def test_database_writable_by_others_is_refused_with_77(fleet):
    db = fleet(demo_fleet.rows())
    os.chmod(db.path, 0o666)
    result = run_reset(db.args)
    assert result.code == 77
    assert only_error(result) == "refusing database %s: it is writable by other users (mode 0666)" % db.path
    assert db.states()["agent-02-unreachable"] == 7


def test_database_in_a_directory_writable_by_others_is_refused_with_77(tmp_path):
    from tests.support.fleets import SqliteFleet
    shared = tmp_path / "shared"
    shared.mkdir()
    db = SqliteFleet(str(shared), demo_fleet.rows())
    os.chmod(shared, 0o777)
    result = run_reset(db.args)
    assert result.code == 77
    assert only_error(result) == "refusing database %s: its directory %s is writable by other users" % (db.path, shared)


def test_directory_is_not_a_database_66(tmp_path):
    result = run_reset(["--db", str(tmp_path), "--state-file", str(tmp_path / "s")])
    assert result.code == 66
    assert only_error(result) == "database %s is not a regular file" % tmp_path


def test_corrupt_state_file_is_65_and_nothing_changes(fleet):
    db = fleet(demo_fleet.rows())
    os.makedirs(os.path.dirname(db.state_file))
    with open(db.state_file, "w", encoding="utf-8") as handle:
        handle.write('{"format": "keylime-reboot-fix reset state", "version": 1}\n["a", "x"]\n')
    result = run_reset(db.args)
    assert result.code == 65
    assert only_error(result) == "reset-state file %s: line 2 is not a valid entry" % db.state_file
    assert db.states()["agent-02-unreachable"] == 7


def test_state_path_under_a_file_is_73_and_unchanged(fleet, tmp_path):
    db = fleet(demo_fleet.rows())
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    before = db.dump()
    result = run_reset(["--db", db.path, "--state-file", str(blocker / "reset-state.jsonl")])
    assert result.code == 73
    assert only_error(result) == "cannot look up reset-state file %s/reset-state.jsonl: Not a directory" % blocker
    assert db.dump() == before


def test_state_write_failing_after_the_update_rolls_the_database_back(fleet):
    """The UPDATE has run inside the transaction when the state file cannot be written."""
    db = fleet(demo_fleet.rows())
    state_dir = os.path.dirname(db.state_file)
    os.makedirs(state_dir)
    # A directory where this process's temporary file would go: the atomic write cannot start.
    taken = os.path.join(state_dir, ".reset-state.jsonl.%d.tmp" % os.getpid())
    os.mkdir(taken)
    before = db.dump()
    result = run_reset(db.args)
    assert result.code == 73
    assert only_error(result) == "cannot write reset-state file %s: Is a directory" % db.state_file
    assert db.dump() == before
    assert sorted(os.listdir(state_dir)) == [os.path.basename(taken)]


def test_a_temporary_file_left_by_a_killed_run_does_not_block_the_next(fleet):
    """After a power cut the same pid comes back at boot: its leftover file is replaced, not an error."""
    db = fleet(demo_fleet.rows())
    state_dir = os.path.dirname(db.state_file)
    os.makedirs(state_dir)
    with open(os.path.join(state_dir, ".reset-state.jsonl.%d.tmp" % os.getpid()), "w") as handle:
        handle.write('["half-written')
    result = run_reset(db.args)
    assert result.code == 0
    assert result.syslog[-1][1].startswith("reset 2 agent(s) of verifier 'default'")
    assert sorted(os.listdir(state_dir)) == ["reset-state.jsonl"]
    with open(db.state_file) as handle:
        assert handle.read().splitlines()[1:] == ['["agent-02-unreachable", 1, 17, 1764750000]',
                                                  '["agent-03-unreachable-v", 1, 0, null]']


@pytest.mark.parametrize("earlier_state", [False, True])
def test_commit_refused_by_a_reader_leaves_the_state_file_as_it_was(fleet, earlier_state):
    """A reader's lock makes the COMMIT wait, then fail (75): the database is unchanged, and the
    state file must not count the resets that did not happen (else a few such boots would use up
    the cap of agents that were never reset)."""
    db = fleet([agent("a1", 7, NR)])
    state_dir = os.path.dirname(db.state_file)
    os.makedirs(state_dir)
    if earlier_state:
        assert run_reset(db.args).code == 0  # reset 1 of 3
        conn = sqlite3.connect(db.path)
        conn.execute("UPDATE verifiermain SET operational_state = 7")  # unreachable again
        conn.commit()
        conn.close()
    with open(db.state_file, "rb") if earlier_state else open(os.devnull, "rb") as handle:
        state_before = handle.read() if earlier_state else None
    before = db.dump()
    reader = sqlite3.connect(db.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM verifiermain").fetchall()  # holds a shared lock
    try:
        result = run_reset(db.args + ["--busy-timeout", "0.3"])
    finally:
        reader.close()
    assert result.code == 75
    assert only_error(result) == "database %s is locked by another process (busy timeout exceeded)" % db.path
    assert db.dump() == before
    if earlier_state:
        with open(db.state_file, "rb") as handle:
            assert handle.read() == state_before
        assert sorted(os.listdir(state_dir)) == ["reset-state.jsonl"]
    else:
        assert os.listdir(state_dir) == []
    result = run_reset(db.args)  # the reader is gone: the reset counts from where it was
    assert result.code == 0
    assert result.syslog[0][1].endswith("reset %d of 3 without attestation" % (2 if earlier_state else 1))
    assert db.states() == {"a1": 3}


@pytest.mark.parametrize("argv, message", [
    (["--max-resets", "0"], "argument --max-resets: must be at least 1: '0'"),
    (["--max-resets", "x"], "argument --max-resets: not a whole number: 'x'"),
    (["--busy-timeout", "-1"], "argument --busy-timeout: must be between 0 and 300 seconds: '-1'"),
    (["--busy-timeout", "nan"], "argument --busy-timeout: must be between 0 and 300 seconds: 'nan'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_usage_errors_are_exit_64_with_one_line(argv, message):
    proc = subprocess.run([sys.executable, "-m", "keylime_reboot_fix"] + argv, cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 64
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == "keylime-reset-failed: error: %s (see --help)" % message


def test_help_describes_every_option_and_exit_code():
    proc = subprocess.run([sys.executable, "-m", "keylime_reboot_fix", "--help"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0
    for option in ("--db PATH", "--config FILE", "--dry-run", "--json", "--any-cause", "--force",
                   "--max-resets N", "--state-file PATH", "--busy-timeout SECONDS", "--version"):
        assert option in proc.stdout
    codes = [line.split()[0] for line in proc.stdout.split("exit codes:\n")[1].splitlines()]
    assert codes == ["0", "64", "65", "66", "69", "70", "73", "75", "77", "78"]


def test_unsupported_engine_url_is_a_configuration_error_78(tmp_path):
    conf = tmp_path / "verifier.conf"
    conf.write_text("[verifier]\nuuid = v1\ndatabase_url = mssql://user:secret@db.example/keylime\n")
    result = run_reset(["--state-file", str(tmp_path / "s")], environ={"KEYLIME_VERIFIER_CONFIG": str(conf)})
    assert result.code == 78
    message = only_error(result)
    assert message == ("database_url uses the 'mssql' engine; this command opens SQLite, PostgreSQL and "
                       "MySQL/MariaDB verifier databases only")
    assert "secret" not in result.stderr


# --- A running verifier: a real process named keylime_verifier -------------------------------

@pytest.fixture
def running_verifier(tmp_path):
    """Two real processes that look like a verifier: a console script and a renamed binary."""
    script = tmp_path / "keylime_verifier"
    script.write_text("#!/usr/bin/python3\nimport time\ntime.sleep(60)\n")
    script.chmod(0o755)
    binary = tmp_path / "bin" / "keylime_verifier"
    binary.parent.mkdir()
    shutil.copy("/bin/sleep", binary)
    procs = [subprocess.Popen([str(script)]), subprocess.Popen([str(binary), "60"])]
    time.sleep(0.3)  # let the interpreter replace the fork's command line
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()


def test_refuses_to_write_while_a_verifier_runs(fleet, running_verifier):
    db = fleet(demo_fleet.rows())
    result = run_reset(db.args, proc_root="/proc")
    assert result.code == 69
    message = only_error(result)
    assert message.startswith("refusing to write: keylime_verifier is running (pid ")
    pids = message.split("(pid ")[1].split(")")[0].split(", ")
    # Both stand-ins are found (a real verifier elsewhere on this machine may be listed too).
    assert set(running_verifier) <= set(map(int, pids))
    assert db.states()["agent-02-unreachable"] == 7


def test_dry_run_and_force_work_while_a_verifier_runs(fleet, running_verifier):
    db = fleet(demo_fleet.rows())
    assert run_reset(db.args + ["--dry-run"], proc_root="/proc").code == 0
    assert db.states()["agent-02-unreachable"] == 7
    assert run_reset(db.args + ["--force"], proc_root="/proc").code == 0
    assert db.states()["agent-02-unreachable"] == 3


# --- Users: acting as the database owner, and permission errors ------------------------------

def _nobody():
    return pwd.getpwnam("nobody")


@pytest.fixture
def open_tmp():
    """A temporary directory every user can traverse, holding a copy of the package.

    pytest's tmp_path lives under a root-only directory, and so may the checkout: another user
    could reach neither. The copy is run with Debian's /usr/bin/python3, as on a host.
    """
    top = tempfile.mkdtemp(prefix="krf-users-")
    os.chmod(top, 0o755)
    shutil.copytree(os.path.join(ROOT, "keylime_reboot_fix"), os.path.join(top, "code", "keylime_reboot_fix"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.chmod(os.path.join(top, "code"), 0o755)
    yield top
    shutil.rmtree(top)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files owned by another user")


def _cli(top, args, user=None, env=None):
    def demote():
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    # --force: these tests are about users and files; a verifier another test suite runs on this
    # machine must not turn them into a running-verifier refusal.
    return subprocess.run(["/usr/bin/python3", "-m", "keylime_reboot_fix", "--force"] + args, cwd="/",
                          capture_output=True, text=True,
                          env=dict(env or {}, PATH="/usr/bin:/bin", PYTHONPATH=os.path.join(top, "code")),
                          preexec_fn=demote if user else None)


@needs_root
def test_root_acts_as_the_database_owner(open_tmp):
    from tests.support.fleets import SqliteFleet
    nobody = _nobody()
    home = os.path.join(open_tmp, "keylime")
    os.mkdir(home)
    db = SqliteFleet(str(home), demo_fleet.rows())
    os.makedirs(os.path.dirname(db.state_file))
    for path in (home, db.path, os.path.dirname(db.state_file)):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    proc = _cli(open_tmp, db.args)
    assert proc.returncode == 0, proc.stderr
    assert db.states()["agent-02-unreachable"] == 3
    owners = {name: os.stat(os.path.join(root, name)).st_uid
              for root, dirs, files in os.walk(home) for name in dirs + files}
    assert owners == {"cv_data.sqlite": nobody.pw_uid, "state": nobody.pw_uid,
                      "reset-state.jsonl": nobody.pw_uid}


@needs_root
def test_root_creates_the_state_directory_for_the_owner(open_tmp):
    from tests.support.fleets import SqliteFleet
    nobody = _nobody()
    home = os.path.join(open_tmp, "keylime")
    os.mkdir(home)
    db = SqliteFleet(str(home), demo_fleet.rows())
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    os.chown(db.path, nobody.pw_uid, nobody.pw_gid)
    proc = _cli(open_tmp, db.args)
    assert proc.returncode == 0, proc.stderr
    st = os.stat(os.path.dirname(db.state_file))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody.pw_uid, nobody.pw_gid, 0o750)


@needs_root
def test_read_only_directory_is_exit_77_and_unchanged(open_tmp):
    from tests.support.fleets import SqliteFleet
    nobody = _nobody()
    home = os.path.join(open_tmp, "keylime")
    os.mkdir(home)
    db = SqliteFleet(str(home), demo_fleet.rows())
    os.chown(db.path, nobody.pw_uid, nobody.pw_gid)  # the file is nobody's, its directory root's 0755
    before = db.dump()
    proc = _cli(open_tmp, db.args, user=nobody)
    assert proc.returncode == 77
    assert proc.stderr.splitlines() == [
        "keylime-reset-failed: error: permission denied: cannot create the rollback journal in %s as uid %d"
        % (home, nobody.pw_uid)]
    assert db.dump() == before


@needs_root
def test_unreadable_database_is_exit_77(open_tmp):
    from tests.support.fleets import SqliteFleet
    home = os.path.join(open_tmp, "keylime")
    os.mkdir(home)
    db = SqliteFleet(str(home), demo_fleet.rows())
    os.chmod(db.path, 0o600)  # root's, not readable by nobody
    proc = _cli(open_tmp, db.args + ["--dry-run"], user=_nobody())
    assert proc.returncode == 77
    assert proc.stderr.splitlines() == [
        "keylime-reset-failed: error: permission denied: cannot read database %s as uid %d"
        % (db.path, _nobody().pw_uid)]


@needs_root
def test_unreadable_configuration_is_78_not_a_guess(open_tmp):
    """The verifier's user could read it; we cannot: guessing another database would be wrong."""
    conf = os.path.join(open_tmp, "verifier.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write("[verifier]\ndatabase_url = sqlite\n")
    os.chmod(conf, 0o600)
    proc = _cli(open_tmp, ["--dry-run"], user=_nobody(), env={"KEYLIME_VERIFIER_CONFIG": conf})
    assert proc.returncode == 78
    assert proc.stderr.splitlines() == [
        "keylime-reset-failed: error: cannot read verifier configuration %s: Permission denied" % conf]
