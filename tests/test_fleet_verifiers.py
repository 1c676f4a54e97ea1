"""Two real Keylime 7.14.3 verifiers with different uuids sharing one real PostgreSQL database.

The verifiers are the real ones from PyPI (tests/support/keylime_verifier.py, with psycopg2 in
their venv); Keylime's own migrations create the schema on the PostgreSQL server the test
started. The verifiers themselves mark their agents FAILED (the agents' ports are stand-in
listeners that drop every connection: hosts still unreachable; no quote is ever answered).
Then both verifiers are stopped and both resets start at the same moment, each as its
verifier's ExecStartPre (the verifier's own environment, Debian's /usr/bin/python3 with
python3-sqlalchemy and python3-psycopg2): each resets exactly its own agents, and each verifier,
restarted, polls exactly its own agents again.
"""

import json
import os
import threading
import time

import pytest

from tests.support import db_servers
from tests.support.real import require

# The real-verifier harness comes from the realverifier branch (issue 5), merged on main.
kv = pytest.importorskip("tests.support.keylime_verifier")

NR = "internal.verifier.not_reachable"
MAX_RETRIES = 2
WAIT = 180.0
AGENTS = {"verifier-a": ("fleet-a-1", "fleet-a-2"), "verifier-b": ("fleet-b-1", "fleet-b-2")}
ALL = AGENTS["verifier-a"] + AGENTS["verifier-b"]
PSYCOPG2 = "psycopg2-binary==2.9.13"


def not_reachable_line(agent):
    return "Agent %s was not reachable for quote in %d tries, setting state to FAILED" % (agent, MAX_RETRIES)


def test_two_real_verifiers_share_postgresql_and_each_reset_touches_only_its_agents(db_server_pool, tmp_path):
    problem = kv.missing_prerequisites()
    require(problem is None, problem or "")
    server = db_server_pool("postgresql")
    database = server.new_database(schema=False)
    url = server.url(database)
    venv = kv.keylime_venv([PSYCOPG2])
    verifiers = {uuid: kv.Verifier(str(tmp_path / uuid), uuid=uuid, database_url=url, venv=venv,
                                   max_retries=MAX_RETRIES, retry_interval=0.5) for uuid in AGENTS}
    va, vb = verifiers["verifier-a"], verifiers["verifier-b"]
    ports = {agent: kv.free_port() for agent in ALL}
    listeners = {}

    def listen():
        for listener in listeners.values():
            listener.close()
        listeners.clear()
        listeners.update({agent: kv.StandInAgent(ports[agent]) for agent in ALL})

    def wait_failed(v, agents):
        v.wait_for(lambda: all("Agent %s failed, stopping polling" % a in v.log() for a in agents)
                   and all(s == 7 for a, s in v.states().items() if a in agents), WAIT,
                   "FAILED of %s" % ", ".join(agents))

    def run_until_each_fails_its_own():
        """Fresh stand-ins, both verifiers started, each left to fail its own unreachable agents."""
        listen()
        for v in (va, vb):
            v.start(timeout=WAIT)
        for uuid, v in verifiers.items():
            wait_failed(v, AGENTS[uuid])
        for v in (va, vb):
            v.stop()

    try:
        # Keylime's migrations create the tables (first verifier), then the agents of both.
        va.start(timeout=WAIT)
        va.stop()
        assert server.execute(database, "SELECT version_num FROM alembic_version_cloud_verifier") != []
        # (accept_attestations is a real BOOLEAN on PostgreSQL, not SQLite's 1.)
        db_servers.insert_rows(server, database, [
            kv.pull_agent(agent, ports[agent], verifier_id=uuid, accept_attestations=True)
            for uuid, agents in AGENTS.items() for agent in agents])

        # 1. Both verifiers run; each fails its own unreachable agents.
        run_until_each_fails_its_own()
        for uuid, v in verifiers.items():
            log = v.log()
            assert [a for a in ALL if not_reachable_line(a) in log] == list(AGENTS[uuid])
        failed = {agent: (agent, uuid, 7, 6, NR, 0, None, "127.0.0.1", ports[agent])
                  for uuid, agents in AGENTS.items() for agent in agents}
        assert va.agents() == failed

        # 2. Both resets at the same moment, each as its verifier's ExecStartPre.
        foreign = kv.verifier_processes()
        # --force only on a shared development machine where a keylime_verifier of another test
        # runs (the reset would rightly refuse with 69); in CI none runs and no --force is given.
        extra = ["--force"] if foreign else []
        results = {}
        gate = threading.Barrier(2)

        def reset(uuid):
            gate.wait()
            results[uuid] = kv.run_reset(verifiers[uuid], "--json", "--state-file",
                                         str(tmp_path / ("state-%s.jsonl" % uuid)), *extra)
        threads = [threading.Thread(target=reset, args=(uuid,)) for uuid in AGENTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for uuid, done in results.items():
            assert done.returncode == 0, done.stderr
            doc = json.loads(done.stdout)
            assert [a["agent_id"] for a in doc["agents"] if a["verdict"] == "reset"] == list(AGENTS[uuid])
            assert doc["summary"]["reset"] == 2 and doc["summary"]["other-verifier"] in (0, 2)
            assert "keylime:***@" in doc["database"] and "Zq7" not in done.stdout + done.stderr  # no password
            with open(str(tmp_path / ("state-%s.jsonl" % uuid)), encoding="utf-8") as handle:
                assert [json.loads(line) for line in handle][1:] == [[a, 1, 0, None] for a in AGENTS[uuid]]
        assert va.states() == {agent: 3 for agent in ALL}

        # 3. Both verifiers restarted: each polls exactly its own agents again.
        restart = time.time()
        run_until_each_fails_its_own()
        seen = {agent: [t for t, line in listeners[agent].seen() if line.startswith("GET /v2.1/quotes/integrity")]
                for agent in ALL}
        assert {a: len(s) for a, s in seen.items()} == {a: MAX_RETRIES + 1 for a in ALL}
        assert all(t >= restart for s in seen.values() for t in s)
        for uuid, v in verifiers.items():
            log = v.log()
            assert [a for a in ALL if not_reachable_line(a) in log] == list(AGENTS[uuid])
        assert va.agents() == failed
    finally:
        for v in (va, vb):
            v.stop()
        for listener in listeners.values():
            listener.close()
