"""The reset rule on a real Keylime 7.14.3-schema database: exact rows, log lines, exit codes.

Every test runs on SQLite, and on a real PostgreSQL and a real MariaDB server holding the same
rows (issue 7: a fleet's shared database gets the same rules, transaction and reporting).
"""

import json
import os
import re

import pytest

from tests import demo_fleet
from tests.conftest import run_reset
from tests.support.fleets import ServerFleet, SqliteFleet
from tests.support.verifier_db import agent

NR = "internal.verifier.not_reachable"
RESET_LINE = ("reset agent {id} ({addr}, {event}) from FAILED (7) to GET_QUOTE (3): "
              "reset {n} of {max} without attestation")


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def fleet(request, tmp_path):
    """fleet(rows) -> a database holding exactly those rows, on each engine in turn."""
    def make(rows):
        if request.param == "sqlite":
            return SqliteFleet(str(tmp_path), rows)
        return ServerFleet(request.param, request.getfixturevalue("db_server_pool")(request.param),
                           str(tmp_path), rows)
    return make


def expected_after_demo_reset(before):
    """Demo rows after a default reset: exactly agents 02 and 03 move from 7 to 3."""
    return [((r[0], r[1], 3) + r[3:]) if r[0] in ("agent-02-unreachable", "agent-03-unreachable-v") else r
            for r in before]


def test_reset_moves_only_connectivity_failures_of_this_verifier(fleet):
    db = fleet(demo_fleet.rows())
    before = db.dump()
    result = run_reset(db.args)
    assert result.code == 0
    assert db.dump() == expected_after_demo_reset(before)
    assert db.states() == {
        "agent-01-healthy": 3, "agent-02-unreachable": 3, "agent-03-unreachable-v": 3,
        "agent-04-no-quote": 7, "agent-05-no-v": 7, "agent-06-version": 7, "agent-07-exception": 7,
        "agent-08-cause-null": 7, "agent-09-invalid-quote": 9, "agent-10-tenant-failed": 10,
        "agent-11-other-verifier": 7, "agent-12-no-verifier-id": 7, "agent-13-other-verifier-healthy": 3}
    summary = ("reset 2 agent(s) of verifier 'default' from FAILED (7) to GET_QUOTE (3) in %s; left alone: "
               "5 other cause, 1 other verifier, 1 no verifier, 0 cap reached" % db.path)
    assert result.syslog == [
        ("info", RESET_LINE.format(id="agent-02-unreachable", addr="10.10.2.62:9002", event=NR, n=1, max=3)),
        ("info", RESET_LINE.format(id="agent-03-unreachable-v", addr="10.10.2.63:9002", event=NR + "_v", n=1, max=3)),
        ("info", summary),
    ]
    assert result.stderr_lines == ["keylime-reset-failed: " + m for _lvl, m in result.syslog]


def test_reset_table_lists_every_failed_row_with_its_verdict(fleet):
    db = fleet(demo_fleet.rows())
    lines = run_reset(db.args).stdout.splitlines()
    assert lines[0] == "# Reset: agents in state FAILED (7) in %s, this verifier: 'default'" % db.path
    assert lines[1].split() == ["AGENT_ID", "VERIFIER", "ADDRESS", "LAST_EVENT_ID", "ATTESTATIONS", "VERDICT", "REASON"]
    cells = [re.split(r"\s{2,}", line) for line in lines[2:]]
    verdicts = [(c[0], c[5], c[6]) for c in cells]
    assert verdicts == [
        ("agent-02-unreachable", "reset", NR + "; reset 1 of 3 without attestation"),
        ("agent-03-unreachable-v", "reset", NR + "_v; reset 1 of 3 without attestation"),
        ("agent-04-no-quote", "left alone", "cause internal.verifier.no_quote is not unreachability"),
        ("agent-05-no-v", "left alone", "cause internal.verifier.no_v is not unreachability"),
        ("agent-06-version", "left alone", "cause internal.verifier.version_not_supported is not unreachability"),
        ("agent-07-exception", "left alone", "cause internal.verifier.exception is not unreachability"),
        ("agent-08-cause-null", "left alone", "cause NULL is not unreachability"),
        ("agent-11-other-verifier", "left alone", "belongs to verifier 'verifier-b'"),
        ("agent-12-no-verifier-id", "left alone", "verifier_id is NULL: no verifier polls it"),
    ]


def test_dry_run_changes_nothing_and_says_what_it_would_do(fleet):
    db = fleet(demo_fleet.rows())
    before = db.dump()
    if db.engine == "sqlite":
        with open(db.path, "rb") as handle:
            raw_before = handle.read()
    result = run_reset(db.args + ["--dry-run"])
    assert result.code == 0
    assert db.dump() == before
    if db.engine == "sqlite":
        with open(db.path, "rb") as handle:
            assert handle.read() == raw_before
    assert "would reset" in result.stdout.splitlines()[2]
    assert result.syslog == [("info", "dry run: would reset 2 agent(s) of verifier 'default' from FAILED (7) to "
                              "GET_QUOTE (3) in %s; left alone: 5 other cause, 1 other verifier, 1 no verifier, "
                              "0 cap reached" % db.path)]
    # The state file is not created by a dry run.
    assert not os.path.exists(db.state_file)


def test_json_report_for_scripts(fleet):
    db = fleet(demo_fleet.rows())
    doc = json.loads(run_reset(db.args + ["--dry-run", "--json"]).stdout)
    assert doc["summary"] == {"reset": 2, "other-cause": 5, "other-verifier": 1, "no-verifier": 1, "cap-reached": 0}
    assert (doc["database"], doc["verifier_uuid"], doc["dry_run"], doc["any_cause"], doc["max_resets"]) == (
        db.path, "default", True, False, 3)
    assert [(a["agent_id"], a["verdict"], a["action"]) for a in doc["agents"]][:3] == [
        ("agent-02-unreachable", "reset", "would reset"),
        ("agent-03-unreachable-v", "reset", "would reset"),
        ("agent-04-no-quote", "other-cause", "left alone")]
    assert doc["agents"][0] == {
        "agent_id": "agent-02-unreachable", "verifier_id": "default", "ip": "10.10.2.62", "port": 9002,
        "operational_state": 7, "last_event_id": NR, "severity_level": 6, "attestation_count": 17,
        "last_successful_attestation": 1764750000, "verdict": "reset", "resets": 1, "action": "would reset",
        "reason": NR + "; reset 1 of 3 without attestation"}
    assert len(doc["agents"]) == 9


def test_any_cause_widens_to_every_failed_row_of_this_verifier_but_never_9_or_10(fleet):
    db = fleet(demo_fleet.rows())
    result = run_reset(db.args + ["--any-cause"])
    assert result.code == 0
    assert db.states() == {
        "agent-01-healthy": 3, "agent-02-unreachable": 3, "agent-03-unreachable-v": 3,
        "agent-04-no-quote": 3, "agent-05-no-v": 3, "agent-06-version": 3, "agent-07-exception": 3,
        "agent-08-cause-null": 3, "agent-09-invalid-quote": 9, "agent-10-tenant-failed": 10,
        "agent-11-other-verifier": 7, "agent-12-no-verifier-id": 7, "agent-13-other-verifier-healthy": 3}
    assert result.syslog[0] == ("warning", "--any-cause: resetting FAILED agents of verifier 'default' whatever "
                                "their last_event_id (INVALID_QUOTE and TENANT_FAILED are still never touched)")
    assert result.syslog[-1][1].startswith("reset 7 agent(s) of verifier 'default'")


def test_uuid_from_environment_selects_the_other_verifiers_rows(fleet):
    db = fleet(demo_fleet.rows())
    result = run_reset(db.args, environ={"KEYLIME_VERIFIER_UUID": '"verifier-b"'})
    assert result.code == 0
    changed = {k: v for k, v in db.states().items() if v != dict((r[0], r[2]) for r in
                                                                 fleet_rows_before())[k]}
    assert changed == {"agent-11-other-verifier": 3}


def fleet_rows_before():
    from tests.support.verifier_db import ROW_COLUMNS
    return [tuple(r.get(c) for c in ROW_COLUMNS) for r in demo_fleet.rows()]


def test_cap_leaves_an_agent_failed_after_three_resets_without_attestation(fleet):
    db = fleet([agent("flaky", 7, NR, attestation_count=5, last_successful_attestation=1000)])
    for n in (1, 2, 3):
        result = run_reset(db.args)
        assert (result.code, db.states()) == (0, {"flaky": 3})
        assert result.syslog[0] == ("info", RESET_LINE.format(id="flaky", addr="127.0.0.1:9002", event=NR, n=n, max=3))
        db.fail_again("flaky")
    result = run_reset(db.args)
    assert (result.code, db.states()) == (0, {"flaky": 7})
    assert result.syslog[0] == ("warning", "agent flaky left FAILED: reset 3 times without a successful attestation "
                                "since (max 3); check the agent host, then reactivate it with "
                                "'keylime_tenant -c reactivate -u flaky'")
    assert "cap-reached" not in result.stdout and "reset 3 times without a successful attestation since (max 3)" \
        in result.stdout
    # One successful attestation starts the count again.
    db.attest("flaky")
    result = run_reset(db.args)
    assert (result.code, db.states()) == (0, {"flaky": 3})
    assert result.syslog[0] == ("info", RESET_LINE.format(id="flaky", addr="127.0.0.1:9002", event=NR, n=1, max=3))


def test_max_resets_option_sets_the_cap(fleet):
    db = fleet([agent("a1", 7, NR)])
    assert run_reset(db.args + ["--max-resets", "1"]).code == 0
    db.fail_again("a1")
    result = run_reset(db.args + ["--max-resets", "1", "--json"])
    assert (result.code, db.states()) == (0, {"a1": 7})
    assert json.loads(result.stdout)["summary"]["cap-reached"] == 1


def test_state_file_records_each_reset_agent(fleet):
    db = fleet([agent("a1", 7, NR, attestation_count=4, last_successful_attestation=99), agent("a2", 7, "x.y")])
    run_reset(db.args)
    with open(db.state_file, encoding="utf-8") as handle:
        assert handle.read() == ('{"format": "keylime-reboot-fix reset state", "version": 1}\n'
                                 '["a1", 1, 4, 99]\n')


def test_nothing_to_do_is_success_with_a_summary(fleet):
    db = fleet([agent("ok", 3), agent("bad", 9, "ima.x")])
    result = run_reset(db.args)
    assert (result.code, db.states()) == (0, {"ok": 3, "bad": 9})
    assert result.stdout.splitlines()[-1] == "(no agent in state FAILED)"
    assert result.syslog == [("info", "reset 0 agent(s) of verifier 'default' from FAILED (7) to GET_QUOTE (3) in "
                              "%s; left alone: 0 other cause, 0 other verifier, 0 no verifier, 0 cap reached" % db.path)]
