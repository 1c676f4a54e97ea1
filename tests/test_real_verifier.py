"""End to end against the real Keylime 7.14.3 verifier (issue 5, part 1).

The verifier is the real one from PyPI (cached venv, tests/support/keylime_verifier.py); the
reset is this tree's keylime-reset-failed run as the unit's ExecStartPre runs it. The only
stand-ins are the agents' hosts: listeners on 127.0.0.1 that record each quote request and then
drop the connection (an agent still unreachable) or answer an HTTP error (a host that is back
but whose agent refuses); no quote is ever answered, so no attestation is faked.
"""

import json
import os

from tests import real_verifier_scenario as scenario
from tests.support import keylime_verifier as kv
from tests.support.real import require


def test_real_verifier_polls_exactly_the_reset_agents_until_the_cap(tmp_path, capsys):
    problem = kv.missing_prerequisites()
    require(problem is None, problem or "")
    require(not kv.wait_no_verifiers(120), "another keylime_verifier runs on this host; the reset would refuse (69)")
    run = scenario.Scenario(str(tmp_path))
    try:
        report = run.run()
    except scenario.ForeignVerifier as exc:
        require(False, str(exc))
    with capsys.disabled():
        print("\n" + report)
    # The figures behind the report, exactly as the scenario asserted them.
    assert [r["returncode"] for r in run.resets] == [0, 0, 0, 0]
    assert len(run.figures["verifier_starts"]) == 7
    assert sorted(run.figures["start_to_first_quote"]) == list(scenario.UNREACHABLE)
    # The reset-state file: resets counted per agent with the attestation figures seen at the
    # last reset (unreachable-1 stays at 2: it now fails for another cause and is not reset).
    with open(run.state_file, encoding="utf-8") as handle:
        entries = [json.loads(line) for line in handle]
    assert entries == [
        {"format": "keylime-reboot-fix reset state", "version": 1},
        ["unreachable-1", 2, 0, None],
        ["unreachable-2", 3, 0, None],
        ["unreachable-3", 3, 12, scenario.PREVIOUSLY_ATTESTED],
    ]

def test_e2e_script_is_executable():
    path = os.path.join(scenario.ROOT, "tests", "e2e-real-verifier")
    assert os.access(path, os.X_OK)


def test_keylime_records_the_first_failure_event_of_its_worker(tmp_path):
    """A Keylime 7.14.3 fact the reset rule depends on, seen on the real verifier.

    process_agent() has a default Failure object created once (a mutable default argument), and
    the quote-retry path adds its not_reachable event to that shared object. Its
    highest_severity_event is the first event of the highest severity, so once a polling
    exception was recorded in a worker, every agent that worker later fails for unreachability is
    stored with last_event_id internal.verifier.exception, although the log says "not reachable".
    The reset then (safely) leaves such an agent alone; the operator needs --any-cause.
    """
    problem = kv.missing_prerequisites()
    require(problem is None, problem or "")
    v = kv.Verifier(str(tmp_path / "verifier"), max_retries=scenario.MAX_RETRIES,
                    retry_interval=scenario.RETRY_INTERVAL)
    v.start()
    v.stop()
    ports = {"bad-policy": kv.free_port(), "unreachable": kv.free_port()}
    v.insert_agents([kv.pull_agent("bad-policy", ports["bad-policy"], tpm_policy=json.dumps({"mask": "0x0"})),
                     kv.pull_agent("unreachable", ports["unreachable"])])
    v.start()
    try:
        v.wait_for(lambda: all("Agent %s failed, stopping polling" % a in v.log() for a in ports), 180,
                   "both agents FAILED")
    finally:
        v.stop()
    assert v.agents() == {
        "bad-policy": ("bad-policy", "default", 7, 6, scenario.EXC, 0, None, "127.0.0.1", ports["bad-policy"]),
        "unreachable": ("unreachable", "default", 7, 6, scenario.EXC, 0, None, "127.0.0.1", ports["unreachable"]),
    }
    # The harness's path for server databases (PostgreSQL) gives the same rows through SQLAlchemy.
    assert v.sql_sqlalchemy("SELECT agent_id, last_event_id FROM verifiermain WHERE operational_state = ? "
                            "ORDER BY agent_id", (7,), "sqlite:///" + v.db_path) == [
        ("bad-policy", scenario.EXC), ("unreachable", scenario.EXC)]
    log = v.log()
    assert "Polling thread error for agent ID bad-policy" in log
    assert ("Agent unreachable was not reachable for quote in %d tries, setting state to FAILED"
            % scenario.MAX_RETRIES) in log
    dry = kv.run_reset(v, "--dry-run", "--json")
    assert dry.returncode == 0
    verdicts = {a["agent_id"]: (a["verdict"], a["reason"]) for a in json.loads(dry.stdout)["agents"]}
    assert verdicts == {
        "bad-policy": ("other-cause", "cause internal.verifier.exception is not unreachability"),
        "unreachable": ("other-cause", "cause internal.verifier.exception is not unreachability"),
    }


def test_keylime_records_a_later_exception_as_not_reachable(tmp_path):
    """The other direction of the same Keylime 7.14.3 behaviour, seen on the real verifier.

    Once an agent was FAILED for unreachability in a worker, a polling exception of another
    agent (here after the tenant's reactivate, PUT /v2.1/agents/ID/reactivate over mTLS with the
    verifier's own admin client certificate) is stored as internal.verifier.not_reachable. The
    reset cannot tell it from a real unreachability and resets it on each start until the cap.
    """
    problem = kv.missing_prerequisites()
    require(problem is None, problem or "")
    v = kv.Verifier(str(tmp_path / "verifier"), max_retries=scenario.MAX_RETRIES,
                    retry_interval=scenario.RETRY_INTERVAL)
    v.start()
    v.stop()
    ports = {"bad-policy": kv.free_port(), "unreachable": kv.free_port()}
    v.insert_agents([kv.pull_agent("unreachable", ports["unreachable"]),
                     kv.pull_agent("bad-policy", ports["bad-policy"], state=7,
                                   tpm_policy=json.dumps({"mask": "0x0"}))])
    v.start()
    try:
        v.wait_for(lambda: "Agent unreachable failed, stopping polling" in v.log(), 180, "unreachable FAILED")
        assert v.api("PUT", "/v2.1/agents/bad-policy/reactivate") == (
            200, {"code": 200, "status": "Success", "results": {}})
        v.wait_for(lambda: "Agent bad-policy failed, stopping polling" in v.log(), 180, "bad-policy FAILED")
    finally:
        v.stop()
    assert "Polling thread error for agent ID bad-policy" in v.log()
    assert v.agents() == {
        "bad-policy": ("bad-policy", "default", 7, 6, scenario.NR, 0, None, "127.0.0.1", ports["bad-policy"]),
        "unreachable": ("unreachable", "default", 7, 6, scenario.NR, 0, None, "127.0.0.1", ports["unreachable"]),
    }
    dry = kv.run_reset(v, "--dry-run", "--json")
    assert dry.returncode == 0
    assert [(a["agent_id"], a["verdict"]) for a in json.loads(dry.stdout)["agents"]] == [
        ("bad-policy", "reset"), ("unreachable", "reset")]


def test_verifier_as_its_own_user_keeps_its_database_after_resets(tmp_path):
    """The verifier runs as a non-root account (nobody here, keylime in production).

    The reset run by root (an admin, or ExecStartPre=+) acts as the database owner, so no file
    beside the database or in the state directory ends up owned by root, and the verifier can
    write its database afterwards (it fails the still-unreachable agents again). The reset run
    as the verifier's own user (ExecStartPre under User=) then continues the same count.
    """
    import pwd
    import shutil
    import tempfile

    problem = kv.missing_prerequisites()
    require(problem is None, problem or "")
    require(not kv.wait_no_verifiers(120), "another keylime_verifier runs on this host; the reset would refuse (69)")
    nobody = pwd.getpwnam("nobody")
    workdir = tempfile.mkdtemp(prefix="krf-real-verifier-user-")   # reachable by nobody, unlike tmp_path
    try:
        v = kv.Verifier(workdir, user="nobody", max_retries=scenario.MAX_RETRIES,
                        retry_interval=scenario.RETRY_INTERVAL)
        state_file = os.path.join(workdir, "state", "reset-state.jsonl")
        v.start()
        v.stop()
        ports = {"unreachable-a": kv.free_port(), "unreachable-b": kv.free_port()}
        v.insert_agents([kv.pull_agent(a, p) for a, p in sorted(ports.items())])

        def fail_them():
            listeners = [kv.StandInAgent(p) for p in ports.values()]
            try:
                v.start()
                v.wait_for(lambda: all("Agent %s failed, stopping polling" % a in v.log() for a in ports)
                           and set(v.states().values()) == {7}, 180, "both FAILED")
                v.stop()
            finally:
                for listener in listeners:
                    listener.close()
            return [len(listener.seen()) for listener in listeners]

        assert fail_them() == [scenario.MAX_RETRIES + 1] * 2
        assert os.stat(v.db_path).st_uid == nobody.pw_uid

        as_root = kv.run_reset(v, "--state-file", state_file)
        assert as_root.returncode == 0, as_root.stderr
        assert v.states() == {"unreachable-a": 3, "unreachable-b": 3}
        owners = {os.path.relpath(os.path.join(d, f), workdir): os.lstat(os.path.join(d, f)).st_uid
                  for top in ("keylime", "state") for d, _s, files in os.walk(os.path.join(workdir, top))
                  for f in files}
        assert "state/reset-state.jsonl" in owners and "keylime/cv_data.sqlite" in owners
        assert {f: uid for f, uid in owners.items() if uid != nobody.pw_uid} == {}

        assert fail_them() == [scenario.MAX_RETRIES + 1] * 2   # the verifier wrote FAILED again
        as_user = kv.run_reset(v, "--state-file", state_file, as_verifier_user=True)
        assert as_user.returncode == 0, as_user.stderr
        assert as_user.stderr.splitlines() == [
            "keylime-reset-failed: reset agent %s (127.0.0.1:%d, %s) from FAILED (7) to GET_QUOTE (3): "
            "reset 2 of 3 without attestation" % (a, ports[a], scenario.NR) for a in sorted(ports)] + [
            "keylime-reset-failed: reset 2 agent(s) of verifier 'default' from FAILED (7) to GET_QUOTE (3) in "
            "%s; left alone: 0 other cause, 0 other verifier, 0 no verifier, 0 cap reached" % v.db_path]
        assert v.states() == {"unreachable-a": 3, "unreachable-b": 3}
        assert fail_them() == [scenario.MAX_RETRIES + 1] * 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
