"""Fleets (issue 7): several verifiers sharing one real PostgreSQL or MariaDB database.

Locking between concurrent resets, lock waits bounded by the busy timeout, a URL's password
never shown, and the missing-module errors. The rule itself runs on these engines in
test_rules.py; the two real Keylime verifiers are in test_fleet_verifiers.py.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests import demo_fleet
from tests.conftest import run_reset
from tests.support import db_servers
from tests.support.fleet import ROOT, FleetDb, Holder
from tests.support.real import require
from tests.support.verifier_db import agent

NR = "internal.verifier.not_reachable"
SPELLINGS = ("Zq7", "p@ss", "p%40ss", "w/rd", "w%2Frd")  # pieces of db_servers.PASSWORD, as written and encoded


def two_verifiers(n):
    """n unreachable agents of verifier-a and of verifier-b, plus one healthy agent of each."""
    rows = [agent("a-%04d" % i, 7, NR, verifier="verifier-a") for i in range(n)]
    rows += [agent("b-%04d" % i, 7, NR, verifier="verifier-b") for i in range(n)]
    rows += [agent("a-ok", 3, verifier="verifier-a"), agent("b-ok", 3, verifier="verifier-b")]
    return rows


def states_by_verifier(db):
    out = {}
    for agent_id, _vid, state, *_rest in db.dump():
        out.setdefault((agent_id[0], state), 0)
        out[(agent_id[0], state)] += 1
    return out


def assert_no_secret(*texts):
    for text in texts:
        for piece in SPELLINGS:
            assert piece not in text, "password piece %r shown in %r" % (piece, text)


# --- two verifiers at the same moment -------------------------------------------------------

def test_two_resets_started_together_each_reset_exactly_their_own_rows(fleet_db, tmp_path):
    n = 150
    for round_ in range(3):
        db = fleet_db.create(two_verifiers(n))
        procs = {uuid: db.start(uuid, ["--json", "--busy-timeout", "20"],
                                state_file=str(tmp_path / ("state-%s-%d" % (uuid, round_))))
                 for uuid in ("verifier-a", "verifier-b")}
        results = {uuid: proc.communicate(timeout=120) + (proc.returncode,) for uuid, proc in procs.items()}
        for uuid, (out, err, code) in results.items():
            assert code == 0, err
            doc = json.loads(out)
            assert doc["summary"]["reset"] == n
            assert {a["agent_id"][0] for a in doc["agents"] if a["verdict"] == "reset"} == {uuid[-1]}
            # The other verifier's reset is seen entirely or not at all, never half done.
            assert doc["summary"]["other-verifier"] in (0, n), doc["summary"]
            with open(str(tmp_path / ("state-%s-%d" % (uuid, round_))), encoding="utf-8") as handle:
                entries = [json.loads(line) for line in handle][1:]
            assert entries == [["%s-%04d" % (uuid[-1], i), 1, 0, None] for i in range(n)]
        assert states_by_verifier(db) == {("a", 3): n + 1, ("b", 3): n + 1}


def test_another_verifiers_reset_in_progress_neither_blocks_nor_shows_half_done(fleet_db):
    """verifier-b's reset holds its rows (uncommitted UPDATE); verifier-a's reset goes through at once."""
    n = 40
    db = fleet_db.create(two_verifiers(n))
    holder = Holder(db)
    try:
        ids = {"b%d" % i: "b-%04d" % i for i in range(n)}
        changed = holder.execute("UPDATE verifiermain SET operational_state = 3 WHERE operational_state = 7 AND "
                                 "verifier_id = 'verifier-b' AND agent_id IN (%s)"
                                 % ", ".join(":" + k for k in ids), ids)
        assert changed == n
        # The holder keeps its locks for the whole run: had the reset waited for any of them, it
        # would have run into the busy timeout and exited 75.
        doc, proc = db.run_json("verifier-a", ["--busy-timeout", "5"])
        assert doc["summary"] == {"reset": n, "other-cause": 0, "other-verifier": n, "no-verifier": 0,
                                  "cap-reached": 0}
        assert states_by_verifier(db) == {("a", 3): n + 1, ("b", 7): n, ("b", 3): 1}
        holder.commit()
    finally:
        holder.close()
    assert states_by_verifier(db) == {("a", 3): n + 1, ("b", 3): n + 1}


# --- lock waits bounded by the busy timeout -------------------------------------------------

def lock_row(db, agent_id):
    holder = Holder(db)
    assert len(holder.execute("SELECT agent_id FROM verifiermain WHERE agent_id = :a FOR UPDATE",
                              {"a": agent_id})) == 1
    return holder


def test_own_row_locked_past_the_busy_timeout_is_exit_75_and_nothing_changes(fleet_db):
    db = fleet_db.create(demo_fleet.rows())
    before = db.dump()
    holder = lock_row(db, "agent-03-unreachable-v")
    try:
        proc = db.run("default", ["--busy-timeout", "2"])
    finally:
        holder.close()
    assert proc.returncode == 75, proc.stderr
    # At least the busy timeout; the 75 itself comes from the server's lock timeout (the message
    # is the driver's), so no upper bound on wall time is needed (seen: 31 s on a saturated host).
    assert proc.elapsed >= 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "keylime-reset-failed: error: database %s: rows of this verifier are locked by another session for "
        "longer than the busy timeout (2s): " % db.server.url(db.name).replace(
            db_servers.quote(db_servers.PASSWORD, safe=""), "***")), lines
    assert db.dump() == before
    assert not os.path.exists(db.state_file)


def lock_waits(db):
    """How many sessions wait for a row lock right now (seen from the server's own tables)."""
    sql = ("SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
           if db.engine == "mariadb" else "SELECT count(*) FROM pg_locks WHERE NOT granted")
    return db.server.execute(None if db.engine == "mariadb" else "postgres", sql)[0][0]


def test_own_row_lock_released_within_the_timeout_lets_the_reset_through(fleet_db):
    db = fleet_db.create(demo_fleet.rows())
    holder = lock_row(db, "agent-02-unreachable")
    proc = db.start("default", ["--busy-timeout", "60"])
    try:
        deadline = time.monotonic() + 50
        while lock_waits(db) == 0:  # the reset is blocked on the held row
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        assert db.states()["agent-02-unreachable"] == 7
        holder.commit()
    finally:
        holder.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert db.states()["agent-02-unreachable"] == 3 and db.states()["agent-03-unreachable-v"] == 3


def test_dry_run_takes_no_lock(fleet_db):
    db = fleet_db.create(demo_fleet.rows())
    holder = lock_row(db, "agent-02-unreachable")
    try:
        # Held for the whole run: a locking read would end in 75 after the busy timeout.
        doc, proc = db.run_json("default", ["--dry-run", "--busy-timeout", "3"])
    finally:
        holder.close()
    assert doc["summary"]["reset"] == 2 and doc["dry_run"] is True
    assert db.states()["agent-02-unreachable"] == 7


# --- credentials ------------------------------------------------------------------------------

def test_password_in_the_url_never_appears_in_stderr_json_or_syslog(fleet_db, tmp_path):
    db = fleet_db.create(demo_fleet.rows())
    masked = db.url.replace(db_servers.quote(db_servers.PASSWORD, safe=""), "***")
    wrong = db.server.url(db.name, password="Zq7-wrong-p@ss:w/rd")
    cases = [
        ("dry run", db.config("default"), ["--dry-run", "--json"], 0),
        ("reset", db.config("default"), ["--json"], 0),
        ("wrong password", db.config("default", url=wrong), [], 77),
        ("no such database", db.config("default", url=db.server.url("krf_missing")), [], 66),
    ]
    for what, config, args, code in cases:
        result = run_reset(["--config", config, "--state-file", db.state_file] + args)
        assert result.code == code, (what, result.stderr)
        syslog = "\n".join(message for _level, message in result.syslog)
        assert_no_secret(result.stdout, result.stderr, syslog)
        assert "***@" in result.stderr + result.stdout, what
    doc = json.loads(run_reset(["--config", db.config("default"), "--state-file", db.state_file, "--dry-run",
                                "--json"]).stdout)
    assert doc["database"] == masked
    # And through a lock timeout, whose text comes from the driver.
    holder = lock_row(db, "agent-05-no-v")
    try:
        result = run_reset(["--config", db.config("default"), "--state-file", db.state_file, "--any-cause",
                            "--busy-timeout", "1"])
    finally:
        holder.close()
    assert result.code == 75
    assert_no_secret(result.stdout, result.stderr, "\n".join(m for _l, m in result.syslog))


def test_server_down_is_exit_66_with_the_url_masked(tmp_path):
    port = db_servers.free_port()
    conf = tmp_path / "verifier.conf"
    conf.write_text("[verifier]\nuuid = v1\ndatabase_url = postgresql+psycopg2://keylime:%s@127.0.0.1:%d/keylime\n"
                    % (db_servers.quote(db_servers.PASSWORD, safe=""), port))
    result = run_reset(["--config", str(conf), "--state-file", str(tmp_path / "s"), "--busy-timeout", "2"])
    assert result.code == 66
    assert result.stderr.startswith("keylime-reset-failed: error: cannot open database "
                                    "postgresql+psycopg2://keylime:***@127.0.0.1:%d/keylime: " % port)
    assert len(result.stderr_lines) == 1
    assert_no_secret(result.stderr)


# --- first boot, and URLs without a driver --------------------------------------------------

def test_database_without_verifier_table_is_first_boot(fleet_db):
    db = fleet_db.create(schema=False)
    result = run_reset(["--config", db.config("default"), "--state-file", db.state_file])
    assert result.code == 0
    masked = db.url.replace(db_servers.quote(db_servers.PASSWORD, safe=""), "***")
    assert result.syslog == [("info", "verifier database %s has no verifiermain table yet (first boot?): "
                                      "nothing to reset" % masked)]


def test_url_without_driver_uses_an_installed_one(fleet_db):
    """SQLAlchemy 2.1 wants psycopg (3) for postgresql://, 1.4 and 2.0 psycopg2; mysql:// wants mysqldb."""
    db = fleet_db.create(demo_fleet.rows())
    plain = db.url.replace("+psycopg2", "").replace("mysql+pymysql", "mysql")
    assert "+" not in plain.split("://")[0]
    result = run_reset(["--config", db.config("default", url=plain), "--state-file", db.state_file])
    assert result.code == 0, result.stderr
    assert db.states()["agent-02-unreachable"] == 3


def test_unknown_driver_is_a_configuration_error_78(tmp_path):
    import sqlalchemy
    conf = tmp_path / "verifier.conf"
    conf.write_text("[verifier]\ndatabase_url = postgresql+nosuchdriver://k:%s@127.0.0.1/k\n"
                    % db_servers.quote(db_servers.PASSWORD, safe=""))
    result = run_reset(["--config", str(conf), "--state-file", str(tmp_path / "s")])
    assert result.code == 78
    assert result.stderr == ("keylime-reset-failed: error: database_url postgresql+nosuchdriver://k:***@127.0.0.1/k: "
                             "SQLAlchemy %s has no driver 'postgresql+nosuchdriver'\n" % sqlalchemy.__version__)


def run_module(args, python_args=(), env=None):
    return subprocess.run([sys.executable] + list(python_args) + ["-m", "keylime_reboot_fix"] + list(args),
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)


def test_without_sqlalchemy_exit_78_naming_the_module(tmp_path):
    """python -S: the interpreter without site-packages, i.e. a host where SQLAlchemy is not installed."""
    conf = tmp_path / "verifier.conf"
    conf.write_text("[verifier]\ndatabase_url = postgresql://keylime:%s@127.0.0.1:5432/keylime\n"
                    % db_servers.quote(db_servers.PASSWORD, safe=""))
    proc = run_module(["--config", str(conf), "--state-file", str(tmp_path / "s"), "--force"], ["-S"])
    assert proc.returncode == 78
    assert proc.stderr == ("keylime-reset-failed: error: database_url postgresql://keylime:***@127.0.0.1:5432/keylime "
                           "needs the Python module 'sqlalchemy', which is not installed (Debian package "
                           "python3-sqlalchemy)\n")


@pytest.mark.parametrize("url, message", [
    ("postgresql+psycopg2://k:%s@127.0.0.1/k", "needs the Python module 'psycopg2', which is not installed "
                                               "(Debian package python3-psycopg2)"),
    ("mysql+pymysql://k:%s@127.0.0.1/k", "needs the Python module 'pymysql', which is not installed "
                                         "(Debian package python3-pymysql)"),
    ("postgresql://k:%s@127.0.0.1/k", "needs the Python module 'psycopg' or 'psycopg2', which is not installed "
                                      "(Debian package python3-psycopg or python3-psycopg2)"),
])
def test_without_the_urls_driver_exit_78_naming_the_module(tmp_path, url, message):
    """SQLAlchemy importable, the drivers not: a path holding only SQLAlchemy (and what it imports)."""
    import sqlalchemy
    import typing_extensions
    only = tmp_path / "only-sqlalchemy"
    only.mkdir()
    os.symlink(os.path.dirname(sqlalchemy.__file__), str(only / "sqlalchemy"))
    os.symlink(typing_extensions.__file__, str(only / "typing_extensions.py"))
    conf = tmp_path / "verifier.conf"
    conf.write_text("[verifier]\ndatabase_url = %s\n" % (url % db_servers.quote(db_servers.PASSWORD, safe="")))
    env = dict(os.environ, PYTHONPATH="%s:%s" % (ROOT, only))
    proc = run_module(["--config", str(conf), "--state-file", str(tmp_path / "s"), "--force"], ["-S"], env=env)
    assert proc.returncode == 78, proc.stderr
    shown = url % "***"
    assert proc.stderr == "keylime-reset-failed: error: database_url %s %s\n" % (shown, message)


def test_sqlite_runs_never_import_sqlalchemy(tmp_path):
    from tests.support import verifier_db
    path = verifier_db.create(str(tmp_path / "cv_data.sqlite"), demo_fleet.rows())
    for args in (["--help"], ["--db", path, "--dry-run", "--state-file", str(tmp_path / "s")]):
        proc = run_module(args, ["-X", "importtime"])
        assert proc.returncode == 0
        assert "keylime_reboot_fix" in proc.stderr
        assert "sqlalchemy" not in proc.stderr.lower() and "psycopg" not in proc.stderr


# --- Debian's own SQLAlchemy 1.4 and drivers (what the package Suggests) --------------------

DEBIAN_PY = "/usr/bin/python3"


def debian_modules_present():
    if not os.path.exists(DEBIAN_PY):
        return False
    return subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", DEBIAN_PY, "-c", "import sqlalchemy, psycopg2, pymysql"],
                          capture_output=True).returncode == 0


def test_debian_python3_with_python3_sqlalchemy_gives_the_same_result(fleet_db, tmp_path):
    require(debian_modules_present(), "Debian's python3-sqlalchemy/psycopg2/pymysql not installed")
    results = []
    for python in (sys.executable, DEBIAN_PY):
        db = FleetDb(fleet_db.engine, fleet_db.server, tmp_path).create(demo_fleet.rows())
        env = {"PATH": "/usr/bin:/bin", "HOME": "/root"}
        proc = db.run("default", ["--json"], python=python, env=env,
                      state_file=str(tmp_path / ("state-%d" % len(results))))
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        del doc["database"], doc["configuration"]
        results.append((doc, db.dump()))
    assert results[0] == results[1]
    assert results[0][0]["summary"]["reset"] == 2


# --- root, and who the reset acts as -------------------------------------------------------------

def test_root_acts_as_the_owner_of_the_state_directory(fleet_db):
    """A shared database has no local owner: root becomes the state directory's owner (the
    verifier's User=, for whom systemd's StateDirectory= made it), so the state file stays
    readable by the verifier's own ExecStartPre runs."""
    require(os.geteuid() == 0, "needs root")
    require(debian_modules_present(), "Debian's python3-sqlalchemy/psycopg2/pymysql not installed")
    import pwd
    import tempfile
    nobody = pwd.getpwnam("nobody")
    base = tempfile.mkdtemp(prefix="krf-fleet-owner-")
    try:
        os.chmod(base, 0o755)
        state_dir = os.path.join(base, "state")
        os.mkdir(state_dir, 0o750)
        os.chown(state_dir, nobody.pw_uid, nobody.pw_gid)
        db = fleet_db.create(demo_fleet.rows())
        state_file = os.path.join(state_dir, "reset-state.jsonl")
        # Debian's interpreter, as installed: pyenv's lives under /root, which nobody cannot read.
        proc = db.run("default", [], state_file=state_file, python=DEBIAN_PY,
                      env={"PATH": "/usr/bin:/bin", "HOME": "/root"})
        assert proc.returncode == 0, proc.stderr
        st = os.stat(state_file)
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
        assert db.states()["agent-02-unreachable"] == 3
    finally:
        import shutil
        shutil.rmtree(base, ignore_errors=True)
