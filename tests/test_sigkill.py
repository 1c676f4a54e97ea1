"""Killed at any moment (SIGKILL), the database is either untouched or fully reset."""

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

from tests.conftest import ROOT
from tests.support import verifier_db
from tests.support.verifier_db import agent

NR = "internal.verifier.not_reachable"

PAUSE_BEFORE_COMMIT = """
import sys, time
sys.path.insert(0, %(root)r)
from keylime_reboot_fix import cli, sqlite_store
real_commit = sqlite_store.SqliteVerifierDb.commit
def paused_commit(self):
    print("update done, commit pending", flush=True)
    time.sleep(60)
    real_commit(self)
sqlite_store.SqliteVerifierDb.commit = paused_commit
sys.exit(cli.main(%(args)r))
"""


def fleet_rows(n):
    """n agents: every 33rd FAILED by unreachability, some 9 and 10, the rest healthy."""
    rows = []
    for i in range(n):
        if i % 33 == 0:
            rows.append(agent("agent-%05d" % i, 7, NR))
        elif i % 50 == 1:
            rows.append(agent("agent-%05d" % i, 9, "ima.policy_violation"))
        elif i % 50 == 2:
            rows.append(agent("agent-%05d" % i, 10))
        else:
            rows.append(agent("agent-%05d" % i, 3, meta_data="x" * 400))
    return rows


def integrity(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_sigkill_between_update_and_commit_leaves_the_database_untouched(tmp_path):
    """A deterministic kill point: the UPDATE has run, the commit has not (hot journal on disk).

    The commit is delayed by wrapping it in the child process only: the rest is the real command.
    """
    path = verifier_db.create(str(tmp_path / "cv_data.sqlite"), fleet_rows(300))
    state = str(tmp_path / "state" / "reset-state.jsonl")
    before = verifier_db.dump(path)
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSE_BEFORE_COMMIT % {"root": ROOT, "args": ["--db", path, "--state-file", state, "--force"]}],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert child.stdout.readline() == "update done, commit pending\n"
    assert os.path.exists(path + "-journal")  # mid-transaction: the rollback journal is hot
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert integrity(path) == "ok"
    assert verifier_db.dump(path) == before  # the hot journal was rolled back on the next open
    # The state file was replaced just before the commit: the lost run still counts (conservative).
    with open(state, encoding="utf-8") as handle:
        assert handle.read().splitlines()[1] == '["agent-00000", 1, 0, null]'
    # The next boot's reset then completes normally, counting the lost attempt.
    proc = subprocess.run([sys.executable, "-m", "keylime_reboot_fix", "--db", path, "--state-file", state, "--force",
                           "--json"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0
    after = verifier_db.states(path)
    assert sorted(k for k, v in after.items() if v == 3 and before[[r[0] for r in before].index(k)][2] == 7) == [
        "agent-%05d" % i for i in range(0, 300, 33)]
    assert '"resets": 2' in proc.stdout


def test_sigkill_at_random_moments_never_leaves_a_partial_reset(tmp_path):
    pristine = verifier_db.create(str(tmp_path / "pristine.sqlite"), fleet_rows(6000))
    failed = {r[0] for r in verifier_db.dump(pristine) if r[2] == 7}
    path = str(tmp_path / "cv_data.sqlite")
    cmd = [sys.executable, "-m", "keylime_reboot_fix", "--db", path, "--force"]
    # How long a whole run takes here, to spread the kills over it.
    shutil.copy(pristine, path)
    started = time.monotonic()
    subprocess.run(cmd + ["--state-file", str(tmp_path / "s0")], cwd=ROOT, capture_output=True, check=True)
    duration = time.monotonic() - started
    rng = random.Random(20261203)
    outcomes = []
    for attempt in range(12):
        shutil.copy(pristine, path)
        for suffix in ("-journal",):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        child = subprocess.Popen(cmd + ["--state-file", str(tmp_path / ("s%d" % (attempt + 1)))], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, duration * 1.1))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert integrity(path) == "ok"
        states = verifier_db.states(path)
        reset = {k for k in failed if states[k] == 3}
        assert reset in (set(), failed), "partial reset: %d of %d rows" % (len(reset), len(failed))
        untouched = {k: v for k, v in states.items() if k not in failed}
        assert untouched == {r[0]: r[2] for r in verifier_db.dump(pristine) if r[0] not in failed}
        outcomes.append("reset" if reset else "untouched")
    print("SIGKILL outcomes over %d kills in a %.2f s run: %s" % (len(outcomes), duration, outcomes))
